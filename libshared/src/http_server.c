/* HTTP server on libmicrohttpd (see shared/http_server.h): daemon set-up,
 * routing, the body limit, the token check, /health, /metrics and request
 * metrics. Request/response helpers live in http_message.c.
 *
 * Request life: MHD's URI-log callback allocates a struct sh_http_req with
 * the raw (still percent-encoded) URI, so captures are split before decoding
 * and "%2F" stays inside a capture. The first access-handler call routes and
 * checks (404/405/401/413/OPTIONS are decided before any body byte is read);
 * later calls collect the body into a bounded buffer; the last call runs the
 * handler and queues the response. An error decided early is sent at once
 * when no body follows (or the client waits for 100-continue); otherwise the
 * body is read and discarded first, so the client sees the answer instead of
 * a connection reset. The completion callback records metrics and frees.
 *
 * Threading: handlers run on MHD threads (one per connection when threads ==
 * 0, a pool otherwise). The server struct is read-only after start except
 * the in-flight counter (atomic) and the metrics registry (thread-safe). */
#include "shared/http_server.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "http_internal.h"
#include "shared/log.h"
#include "shared/xalloc.h"

#define DEFAULT_MAX_BODY (1024 * 1024)
/* Bytes we read and throw away to deliver an early error politely. */
#define DRAIN_MAX (16u * 1024 * 1024)
#define CONNECTION_LIMIT 1000u
/* Idle seconds before MHD closes a connection. Time spent inside a handler
 * (a long-poll) does not count: MHD checks it only around I/O. */
#define CONNECTION_TIMEOUT 60u
#define CONNECTION_MEMORY (64u * 1024)

enum { R_USER, R_HEALTH, R_METRICS };

struct http_route {
    const char *method;
    const char *pattern;
    sh_http_handler fn;
    int flags;
    int kind;
    char **segs; /* literal text, or NULL for a {capture} */
    size_t nsegs;
};

struct sh_http_server {
    struct MHD_Daemon *daemon;
    unsigned port;
    size_t max_body;
    char *token;
    size_t token_len;
    void *arg;
    struct http_route *routes;
    size_t nroutes;
    struct sh_metrics *metrics;
    int own_metrics;
    sh_http_health_fn health;
    void *health_arg;
    int in_flight; /* atomic */
};

static int64_t now_ns(void)
{
    struct timespec ts;
    (void)clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* ---- routing ---- */

static void route_compile(struct http_route *r)
{
    const char *p = r->pattern + 1;
    while (*p) {
        size_t n = strcspn(p, "/");
        r->segs = sh_xrealloc(r->segs, (r->nsegs + 1) * sizeof(*r->segs));
        r->segs[r->nsegs++] = (n >= 2 && p[0] == '{' && p[n - 1] == '}') ? NULL : sh_xstrndup(p, n);
        p += n;
        if (*p == '/')
            p++;
    }
}

/* Splits the raw path into decoded segments; -1 on invalid percent-encoding
 * or a segment that is not UTF-8 (handlers may put captures into JSON). */
static int split_path(const char *raw, char ***ret_segs, size_t *ret_n)
{
    const char *p = raw, *end;
    char **segs = NULL;
    size_t n = 0;

    /* absolute-form request target: "http://host/path" */
    if (*p != '/' && (end = strstr(p, "://")) != NULL)
        p = end + 3 + strcspn(end + 3, "/");
    end = p + strcspn(p, "?#");
    if (p < end && *p == '/')
        p++;
    if (end > p && end[-1] == '/')
        end--; /* "/items/" is "/items" */
    while (p < end) {
        size_t len = strcspn(p, "/?#");
        char *seg;
        if (p + len > end)
            len = (size_t)(end - p);
        seg = http_pct_decode(p, len);
        if (seg && !http_utf8_valid(seg)) {
            free(seg);
            seg = NULL;
        }
        if (!seg) {
            for (size_t i = 0; i < n; i++)
                free(segs[i]);
            free(segs);
            return -1;
        }
        segs = sh_xrealloc(segs, (n + 1) * sizeof(*segs));
        segs[n++] = seg;
        p += len;
        if (p < end)
            p++;
    }
    *ret_segs = segs;
    *ret_n = n;
    return 0;
}

static int route_matches_path(const struct http_route *r, char **segs, size_t n)
{
    if (r->nsegs != n)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (r->segs[i] && strcmp(r->segs[i], segs[i]) != 0)
            return 0;
    return 1;
}

static int method_matches(const char *route_method, const char *method)
{
    return !strcmp(route_method, method) ||
           (!strcmp(route_method, "GET") && !strcmp(method, "HEAD"));
}

/* Allow header for a path: its routes' methods (+ HEAD for GET) and OPTIONS. */
static char *allow_for(const struct sh_http_server *s, char **segs, size_t n)
{
    struct sh_buf b;
    int has_head = 0, has_options = 0;
    sh_buf_init(&b, 0);
    for (size_t i = 0; i < s->nroutes; i++) {
        const struct http_route *r = &s->routes[i];
        int dup = 0;
        if (!route_matches_path(r, segs, n))
            continue;
        for (size_t j = 0; j < i && !dup; j++)
            dup = route_matches_path(&s->routes[j], segs, n) &&
                  !strcmp(s->routes[j].method, r->method);
        if (dup)
            continue;
        (void)sh_buf_appendf(&b, NULL, "%s%s", b.len ? ", " : "", r->method);
        has_head |= !strcmp(r->method, "GET") || !strcmp(r->method, "HEAD");
        has_options |= !strcmp(r->method, "OPTIONS");
    }
    /* HEAD comes with GET; add it only once even if declared. */
    if (has_head && !strstr(b.data, "HEAD"))
        (void)sh_buf_appends(&b, ", HEAD", NULL);
    if (!has_options)
        (void)sh_buf_appends(&b, ", OPTIONS", NULL);
    return sh_buf_steal(&b, NULL);
}

/* ---- auth ---- */

/* Constant-time in the token's content (the length may leak; it is not secret). */
static int token_ok(const struct sh_http_server *s, const char *auth)
{
    const char *given;
    size_t glen;
    unsigned char diff;
    if (!auth || strncasecmp(auth, "Bearer ", 7) != 0)
        return 0;
    given = auth + 7;
    while (*given == ' ')
        given++;
    glen = strlen(given);
    diff = glen != s->token_len;
    for (size_t i = 0; i < s->token_len; i++)
        diff |= (unsigned char)(s->token[i] ^ (i < glen ? given[i] : 0));
    return diff == 0;
}

/* ---- built-in routes ---- */

static void health_handler(struct sh_http_req *req, struct sh_http_resp *resp, void *arg)
{
    struct sh_http_server *s = req->srv;
    json_t *checks = json_object();
    int rc = s->health ? s->health(checks, s->health_arg) : 0;
    (void)arg;
    if (rc == 0)
        sh_http_resp_json(resp, 200, json_pack("{s:s, s:o}", "status", "ok", "checks", checks));
    else
        sh_http_resp_json(resp, 503,
                          json_pack("{s:s, s:o}", "status", "unavailable", "checks", checks));
}

static void metrics_handler(struct sh_http_req *req, struct sh_http_resp *resp, void *arg)
{
    size_t len;
    char *text = sh_metrics_render(req->srv->metrics, &len);
    (void)arg;
    sh_http_resp_body(resp, 200, "text/plain; version=0.0.4; charset=utf-8", text, len);
}

/* ---- MHD callbacks ---- */

static void *on_uri(void *cls, const char *uri, struct MHD_Connection *conn)
{
    struct sh_http_server *s = cls;
    struct sh_http_req *req = sh_xcalloc(1, sizeof(*req));
    (void)conn;
    req->srv = s;
    req->raw_uri = sh_xstrdup(uri ? uri : "/");
    req->t0_ns = now_ns();
    req->route_label = "unmatched";
    sh_buf_init(&req->body, s->max_body);
    (void)__atomic_add_fetch(&s->in_flight, 1, __ATOMIC_RELAXED);
    return req;
}

static void blob_free_cb(void *cls)
{
    sh_blob_unref(cls);
}

static enum MHD_Result send_response(struct sh_http_req *req)
{
    struct sh_http_resp *r = &req->resp;
    struct MHD_Response *mr;
    enum MHD_Result ret;

    if (r->status < 100 || r->status > 599) {
        if (r->status != 0)
            sh_log_error("http handler set invalid status=%d route=%s", r->status,
                         req->route_label);
        sh_http_resp_error(r, 500, NULL, "the handler produced no response");
    }
    if (r->blob) {
        mr = MHD_create_response_from_buffer_with_free_callback_cls(
            r->blob->len, (void *)r->blob->data, blob_free_cb, r->blob);
        if (mr)
            r->blob = NULL; /* the response owns the reference now */
    } else if (r->body) {
        mr = MHD_create_response_from_buffer_with_free_callback_cls(r->len, r->body, free, r->body);
        if (mr)
            r->body = NULL;
    } else {
        mr = MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
    }
    if (!mr)
        return MHD_NO;
    if (r->content_type &&
        MHD_add_response_header(mr, MHD_HTTP_HEADER_CONTENT_TYPE, r->content_type) != MHD_YES)
        sh_log_warn("http could not set content-type route=%s", req->route_label);
    for (size_t i = 0; i < r->nheaders; i++)
        if (MHD_add_response_header(mr, r->headers[i].name, r->headers[i].value) != MHD_YES)
            sh_log_warn("http could not set header=%s route=%s", r->headers[i].name,
                        req->route_label);
    ret = MHD_queue_response(req->conn, (unsigned)r->status, mr);
    MHD_destroy_response(mr);
    req->answered = 1;
    req->status = r->status;
    return ret;
}

static int body_pending(struct MHD_Connection *conn, uint64_t *ret_len)
{
    const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Length");
    *ret_len = 0;
    if (cl) {
        char *end;
        unsigned long long v;
        errno = 0;
        v = strtoull(cl, &end, 10);
        *ret_len = (errno || end == cl) ? UINT64_MAX : v;
        return *ret_len > 0;
    }
    return MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Transfer-Encoding") != NULL;
}

static int expects_continue(struct MHD_Connection *conn)
{
    const char *e = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Expect");
    return e && strcasestr(e, "100-continue") != NULL;
}

static enum MHD_Result query_utf8_cb(void *cls, enum MHD_ValueKind kind, const char *key,
                                     const char *value)
{
    int *bad = cls;
    (void)kind;
    if (!http_utf8_valid(key) || (value && !http_utf8_valid(value))) {
        *bad = 1;
        return MHD_NO;
    }
    return MHD_YES;
}

/* First call: route, authorise and check the declared size. Returns 1 when
 * req->resp already holds the answer (an error or the OPTIONS reply). */
static int route_request(struct sh_http_req *req)
{
    struct sh_http_server *s = req->srv;
    char **segs = NULL;
    size_t n = 0;
    int path_known = 0, decided = 1, bad = 0;
    uint64_t clen;

    (void)MHD_get_connection_values(req->conn, MHD_GET_ARGUMENT_KIND, query_utf8_cb, &bad);
    if (bad) {
        sh_http_resp_error(&req->resp, 400, NULL, "a query parameter is not valid UTF-8");
        return 1;
    }
    if (split_path(req->raw_uri, &segs, &n) < 0) {
        sh_http_resp_error(&req->resp, 400, NULL,
                           "invalid percent-encoding (or not UTF-8) in the path");
        return 1;
    }
    for (size_t i = 0; i < s->nroutes && !req->route; i++) {
        const struct http_route *r = &s->routes[i];
        if (!route_matches_path(r, segs, n))
            continue;
        if (!path_known)
            req->route_label = r->pattern;
        path_known = 1;
        if (method_matches(r->method, req->method))
            req->route = r;
    }
    if (!path_known) {
        sh_http_resp_error(&req->resp, 404, NULL, "no such path");
    } else if (!req->route) {
        char *allow = allow_for(s, segs, n);
        if (!strcmp(req->method, "OPTIONS")) {
            sh_http_resp_status(&req->resp, 204);
        } else {
            sh_http_resp_error(&req->resp, 405, NULL, "method %s is not allowed here; use %s",
                               req->method, allow);
        }
        sh_http_resp_header(&req->resp, "Allow", allow);
        free(allow);
    } else if ((req->route->flags & SH_HTTP_WRITE) && s->token_len &&
               !token_ok(
                   s, MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, "Authorization"))) {
        sh_http_resp_error(&req->resp, 401, NULL,
                           "this API needs the header Authorization: Bearer <SCRAPR_API_TOKEN>");
        sh_http_resp_header(&req->resp, "WWW-Authenticate", "Bearer");
    } else if (body_pending(req->conn, &clen) && clen != UINT64_MAX && clen > s->max_body) {
        sh_http_resp_error(&req->resp, 413, NULL, "request body of %llu bytes exceeds %zu bytes",
                           (unsigned long long)clen, s->max_body);
    } else {
        decided = 0;
        if (req->route)
            req->route_label = req->route->pattern;
        req->params = sh_xcalloc(n ? n : 1, sizeof(*req->params));
        for (size_t i = 0; i < n; i++) {
            if (!req->route->segs[i]) {
                req->params[req->nparams++] = segs[i];
                segs[i] = NULL;
            }
        }
    }
    for (size_t i = 0; i < n; i++)
        free(segs[i]);
    free(segs);
    return decided;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
    struct sh_http_req *req = *con_cls;
    struct sh_http_server *s = cls;
    (void)version;

    if (!req) /* only without the URI-log callback; never in practice */
        *con_cls = req = on_uri(s, url, conn);
    if (!req->started) {
        uint64_t clen;
        req->started = 1;
        req->conn = conn;
        req->method = method;
        req->path = url;
        req->rejected = route_request(req);
        if (!req->rejected)
            return MHD_YES;
        /* Answer now unless a body follows that we can drain politely. */
        if (!body_pending(conn, &clen) || expects_continue(conn) || clen > DRAIN_MAX)
            return send_response(req);
        return MHD_YES;
    }
    if (*upload_data_size) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        req->received += n;
        if (req->rejected)
            return req->received > DRAIN_MAX ? MHD_NO : MHD_YES;
        if (sh_buf_append(&req->body, upload_data, n, NULL) < 0) {
            /* Over the limit: stop buffering, keep reading to answer 413. */
            sh_buf_done(&req->body);
            sh_buf_init(&req->body, s->max_body);
            sh_http_resp_error(&req->resp, 413, NULL, "request body exceeds %zu bytes",
                               s->max_body);
            req->rejected = 1;
        }
        return MHD_YES;
    }
    if (req->answered)
        return MHD_YES;
    if (!req->rejected) {
        const struct http_route *r = req->route;
        r->fn(req, &req->resp, r->kind == R_USER ? s->arg : NULL);
    }
    return send_response(req);
}

static const char *method_label(const char *m)
{
    static const char *const known[] = {"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"};
    for (size_t i = 0; m && i < sizeof(known) / sizeof(known[0]); i++)
        if (!strcmp(m, known[i]))
            return known[i];
    return "other";
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    struct sh_http_server *s = cls;
    struct sh_http_req *req = *con_cls;
    (void)conn;
    (void)toe;
    if (!req)
        return;
    *con_cls = NULL;
    if (req->answered) {
        const char *m = method_label(req->method);
        char *name = sh_xasprintf("scrapr_http_requests_total{route=\"%s\",method=\"%s\","
                                  "code=\"%d\"}",
                                  req->route_label, m, req->status);
        sh_metric_inc(sh_metrics_counter(s->metrics, name, "HTTP requests answered."));
        free(name);
        name = sh_xasprintf("scrapr_http_request_duration_seconds{route=\"%s\",method=\"%s\"}",
                            req->route_label, m);
        sh_metric_observe(sh_metrics_histogram(s->metrics, name,
                                               "Time from request line to response completion.",
                                               NULL, 0),
                          (double)(now_ns() - req->t0_ns) / 1e9);
        free(name);
    }
    for (size_t i = 0; i < req->nparams; i++)
        free(req->params[i]);
    free(req->params);
    sh_buf_done(&req->body);
    http_resp_done(&req->resp);
    free(req->raw_uri);
    free(req);
    (void)__atomic_sub_fetch(&s->in_flight, 1, __ATOMIC_RELEASE);
}

/* ---- start / stop ---- */

static int open_listener(const char *addr, unsigned port, unsigned *ret_port, struct sh_err *err)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    struct sockaddr_storage ss;
    socklen_t sslen = sizeof(ss);
    char portstr[16];
    int fd, rc, one = 1;

    (void)snprintf(portstr, sizeof(portstr), "%u", port);
    rc = getaddrinfo(addr && *addr ? addr : "0.0.0.0", portstr, &hints, &res);
    if (rc != 0) {
        sh_err_set(err, SH_ECONFIG, "listen address '%s': %s", addr, gai_strerror(rc));
        return -1;
    }
    fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        sh_err_set(err, SH_EIO, "socket: %s", strerror(errno));
        freeaddrinfo(res);
        return -1;
    }
    (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, res->ai_addr, res->ai_addrlen) < 0 || listen(fd, 1024) < 0 ||
        getsockname(fd, (struct sockaddr *)&ss, &sslen) < 0) {
        sh_err_set(err, SH_EIO, "listen on %s:%u: %s", addr && *addr ? addr : "0.0.0.0", port,
                   strerror(errno));
        (void)close(fd);
        freeaddrinfo(res);
        return -1;
    }
    freeaddrinfo(res);
    *ret_port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                               : ((struct sockaddr_in *)&ss)->sin_port);
    return fd;
}

static void server_free(struct sh_http_server *s)
{
    for (size_t i = 0; i < s->nroutes; i++) {
        for (size_t j = 0; j < s->routes[i].nsegs; j++)
            free(s->routes[i].segs[j]);
        free(s->routes[i].segs);
    }
    free(s->routes);
    if (s->own_metrics)
        sh_metrics_free(s->metrics);
    free(s->token);
    free(s);
}

static void add_route(struct sh_http_server *s, const char *method, const char *pattern,
                      sh_http_handler fn, int flags, int kind)
{
    struct http_route *r;
    s->routes = sh_xrealloc(s->routes, (s->nroutes + 1) * sizeof(*s->routes));
    r = &s->routes[s->nroutes++];
    *r = (struct http_route){
        .method = method, .pattern = pattern, .fn = fn, .flags = flags, .kind = kind};
    route_compile(r);
}

struct sh_http_server *sh_http_server_start(const struct sh_http_server_opts *opts,
                                            struct sh_err *err)
{
    struct sh_http_server *s = sh_xcalloc(1, sizeof(*s));
    unsigned flags = MHD_USE_AUTO | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ITC;
    int fd;

    s->max_body = opts->max_body ? opts->max_body : DEFAULT_MAX_BODY;
    s->arg = opts->arg;
    s->health = opts->health;
    s->health_arg = opts->health_arg;
    if (opts->api_token && *opts->api_token) {
        s->token = sh_xstrdup(opts->api_token);
        s->token_len = strlen(s->token);
    }
    s->metrics = opts->metrics;
    if (!s->metrics) {
        s->metrics = sh_metrics_new();
        s->own_metrics = 1;
    }
    for (const struct sh_http_route *r = opts->routes; r && r->method; r++) {
        if (!r->pattern || r->pattern[0] != '/' || !r->fn) {
            sh_err_set(err, SH_ECONFIG, "route %s %s: pattern must start with '/' and fn be set",
                       r->method, r->pattern ? r->pattern : "(null)");
            server_free(s);
            return NULL;
        }
        add_route(s, r->method, r->pattern, r->fn, r->flags, R_USER);
    }
    /* After the user's routes, so a service may replace them. */
    add_route(s, "GET", "/health", health_handler, 0, R_HEALTH);
    add_route(s, "GET", "/metrics", metrics_handler, 0, R_METRICS);

    fd = open_listener(opts->bind_addr, opts->port, &s->port, err);
    if (fd < 0) {
        server_free(s);
        return NULL;
    }
    if (opts->threads == 0)
        flags |= MHD_USE_THREAD_PER_CONNECTION;
    s->daemon = MHD_start_daemon(
        flags, 0, NULL, NULL, on_request, s, MHD_OPTION_LISTEN_SOCKET, fd,
        MHD_OPTION_URI_LOG_CALLBACK, on_uri, s, MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
        MHD_OPTION_CONNECTION_LIMIT, CONNECTION_LIMIT, MHD_OPTION_CONNECTION_TIMEOUT,
        CONNECTION_TIMEOUT, MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)CONNECTION_MEMORY,
        MHD_OPTION_THREAD_POOL_SIZE, opts->threads, MHD_OPTION_END);
    if (!s->daemon) {
        sh_err_set(err, SH_EIO, "libmicrohttpd could not start on port %u", s->port);
        (void)close(fd);
        server_free(s);
        return NULL;
    }
    return s;
}

unsigned sh_http_server_port(const struct sh_http_server *s)
{
    return s->port;
}

void sh_http_server_stop(struct sh_http_server *s)
{
    MHD_socket fd;
    if (!s)
        return;
    /* Stop accepting, then give requests already running a moment to finish. */
    fd = MHD_quiesce_daemon(s->daemon);
    for (int i = 0; i < 500 && __atomic_load_n(&s->in_flight, __ATOMIC_ACQUIRE) > 0; i++)
        (void)usleep(10000);
    MHD_stop_daemon(s->daemon);
    if (fd != MHD_INVALID_SOCKET)
        (void)close(fd);
    server_free(s);
}
