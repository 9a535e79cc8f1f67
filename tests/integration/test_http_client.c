/* Integration tests for shared/http_client.h against a real local HTTP server:
 * a libmicrohttpd daemon in this process (thread per connection) listening on
 * a loopback TCP port and, for the Docker-style transport, on a unix socket.
 *
 * Routes: /status/N, /echo (method, body and request headers as JSON),
 * /big?n=N, /slow?ms=N, /flaky/<id>?fail=N&code=C&retry_after=S (fails N
 * times, then 200 with the hit count), /headers, /redirect, /gzip.
 * Keep-alive tests start daemons of their own that count the TCP connections
 * they accept, and a python3 server that closes connections on purpose. */
#include <arpa/inet.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <microhttpd.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <zlib.h>

#include "check.h"
#include "harness.h"
#include "shared/http_client.h"
#include "shared/xalloc.h"

static char base[64];

/* ---- server ---- */

#define MAX_FLAKY 32
static struct {
    char id[32];
    int hits;
} flaky[MAX_FLAKY];
static pthread_mutex_t flaky_mu = PTHREAD_MUTEX_INITIALIZER;

static int flaky_hit(const char *id)
{
    int hits = -1;

    (void)pthread_mutex_lock(&flaky_mu);
    for (int i = 0; i < MAX_FLAKY; i++) {
        if (flaky[i].id[0] == '\0')
            (void)snprintf(flaky[i].id, sizeof(flaky[i].id), "%s", id);
        if (strcmp(flaky[i].id, id) == 0) {
            hits = ++flaky[i].hits;
            break;
        }
    }
    (void)pthread_mutex_unlock(&flaky_mu);
    return hits;
}

static int flaky_hits(const char *id)
{
    int hits = 0;

    (void)pthread_mutex_lock(&flaky_mu);
    for (int i = 0; i < MAX_FLAKY; i++)
        if (strcmp(flaky[i].id, id) == 0)
            hits = flaky[i].hits;
    (void)pthread_mutex_unlock(&flaky_mu);
    return hits;
}

struct req {
    char *body;
    size_t len;
};

static long qnum(struct MHD_Connection *conn, const char *name, long dflt)
{
    const char *v = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, name);
    return v ? strtol(v, NULL, 10) : dflt;
}

static enum MHD_Result reply(struct MHD_Connection *conn, unsigned status, const char *body,
                             size_t len, const char *const *hdrs)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
    enum MHD_Result rc;

    for (size_t i = 0; hdrs && hdrs[i]; i += 2)
        (void)MHD_add_response_header(r, hdrs[i], hdrs[i + 1]);
    rc = MHD_queue_response(conn, status, r);
    MHD_destroy_response(r);
    return rc;
}

static enum MHD_Result echo(struct MHD_Connection *conn, const char *method, struct req *q)
{
    json_t *o = json_object();
    const char *names[] = {"Authorization", "User-Agent", "Content-Type", "Content-Length",
                           "X-Extra"};
    enum MHD_Result rc;
    char *s;

    json_object_set_new(o, "method", json_string(method));
    json_object_set_new(o, "body", json_stringn(q->body ? q->body : "", q->len));
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        const char *v = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, names[i]);
        if (v)
            json_object_set_new(o, names[i], json_string(v));
    }
    s = json_dumps(o, JSON_COMPACT);
    rc = reply(conn, 200, s, strlen(s),
               (const char *const[]){"Content-Type", "application/json", NULL});
    free(s);
    json_decref(o);
    return rc;
}

static enum MHD_Result gzip_reply(struct MHD_Connection *conn)
{
    const char *text = "hello compressed world hello compressed world";
    unsigned char out[256];
    z_stream z;
    enum MHD_Result rc;

    memset(&z, 0, sizeof(z));
    ASSERT_EQ(deflateInit2(&z, 6, Z_DEFLATED, 16 + 15, 8, Z_DEFAULT_STRATEGY), Z_OK);
    z.next_in = (unsigned char *)text;
    z.avail_in = (unsigned)strlen(text);
    z.next_out = out;
    z.avail_out = sizeof(out);
    ASSERT_EQ(deflate(&z, Z_FINISH), Z_STREAM_END);
    rc = reply(conn, 200, (const char *)out, sizeof(out) - z.avail_out,
               (const char *const[]){"Content-Encoding", "gzip", NULL});
    (void)deflateEnd(&z);
    return rc;
}

static enum MHD_Result route(struct MHD_Connection *conn, const char *url, const char *method,
                             struct req *q)
{
    char msg[64];

    if (strncmp(url, "/status/", 8) == 0) {
        unsigned st = (unsigned)strtoul(url + 8, NULL, 10);
        (void)snprintf(msg, sizeof(msg), "status %u", st);
        return reply(conn, st, msg, strlen(msg), NULL);
    }
    if (strcmp(url, "/echo") == 0)
        return echo(conn, method, q);
    if (strcmp(url, "/big") == 0) {
        size_t n = (size_t)qnum(conn, "n", 0);
        char *b = sh_xmalloc(n + 1);
        enum MHD_Result rc;
        memset(b, 'x', n);
        rc = reply(conn, 200, b, n, NULL);
        free(b);
        return rc;
    }
    if (strcmp(url, "/slow") == 0) {
        usleep((useconds_t)qnum(conn, "ms", 0) * 1000);
        return reply(conn, 200, "slow", 4, NULL);
    }
    if (strncmp(url, "/flaky/", 7) == 0) {
        int hits = flaky_hit(url + 7);
        const char *ra = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "retry_after");
        if (hits <= qnum(conn, "fail", 0)) {
            const char *hdrs[] = {"Retry-After", ra, NULL};
            return reply(conn, (unsigned)qnum(conn, "code", 503), "busy", 4, ra ? hdrs : NULL);
        }
        (void)snprintf(msg, sizeof(msg), "ok after %d", hits);
        return reply(conn, 200, msg, strlen(msg), NULL);
    }
    if (strcmp(url, "/headers") == 0)
        return reply(conn, 201, "{}", 2,
                     (const char *const[]){"Content-Type", "application/json", "ETag", "\"42\"",
                                           "Location", "/things/7", "X-Custom", "  spaced  ",
                                           NULL});
    if (strcmp(url, "/redirect") == 0)
        return reply(conn, 302, "", 0, (const char *const[]){"Location", "/status/200", NULL});
    if (strcmp(url, "/gzip") == 0)
        return gzip_reply(conn);
    return reply(conn, 404, "not found", 9, NULL);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_len, void **req_cls)
{
    struct req *q = *req_cls;

    (void)cls, (void)version;
    if (!q) {
        *req_cls = sh_xcalloc(1, sizeof(*q));
        return MHD_YES;
    }
    if (*upload_len) {
        q->body = sh_xrealloc(q->body, q->len + *upload_len + 1);
        memcpy(q->body + q->len, upload, *upload_len);
        q->len += *upload_len;
        *upload_len = 0;
        return MHD_YES;
    }
    return route(conn, url, method, q);
}

static void on_done(void *cls, struct MHD_Connection *conn, void **req_cls,
                    enum MHD_RequestTerminationCode toe)
{
    struct req *q = *req_cls;

    (void)cls, (void)conn, (void)toe;
    if (q)
        free(q->body);
    free(q);
    *req_cls = NULL;
}

static struct MHD_Daemon *start_server(int listen_fd, unsigned *ret_port)
{
    unsigned flags =
        MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG;
    struct MHD_Daemon *d;

    if (listen_fd >= 0)
        d = MHD_start_daemon(flags, 0, NULL, NULL, on_request, NULL, MHD_OPTION_LISTEN_SOCKET,
                             listen_fd, MHD_OPTION_NOTIFY_COMPLETED, on_done, NULL, MHD_OPTION_END);
    else
        d = MHD_start_daemon(flags, 0, NULL, NULL, on_request, NULL, MHD_OPTION_NOTIFY_COMPLETED,
                             on_done, NULL, MHD_OPTION_END);
    ASSERT_NOT_NULL(d);
    if (ret_port) {
        const union MHD_DaemonInfo *info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
        ASSERT_NOT_NULL(info);
        *ret_port = info->port;
    }
    return d;
}

/* ---- tests ---- */

static char *url_of(const char *path)
{
    return sh_xasprintf("%s%s", base, path);
}

static int get(const struct sh_http_client_opts *o, const char *path, struct sh_http_response *r,
               struct sh_err *err)
{
    char *url = url_of(path);
    int rc = sh_http_request(o, "GET", url, NULL, NULL, 0, r, err);
    free(url);
    return rc;
}

static void test_status_and_body_non2xx_is_not_an_error(void)
{
    struct sh_http_response r = {0};
    struct sh_err err = {0};
    char *v;

    ASSERT_EQ(get(NULL, "/status/200", &r, &err), 0);
    ASSERT_EQ(r.status, 200);
    ASSERT_STR_EQ(r.body, "status 200");
    ASSERT_EQ(r.body_len, 10);
    ASSERT_EQ(r.attempts, 1);
    ASSERT(r.seconds > 0);
    sh_http_response_done(&r);
    ASSERT_EQ(get(NULL, "/status/404", &r, &err), 0);
    ASSERT_EQ(r.status, 404);
    ASSERT_STR_EQ(r.body, "status 404");
    sh_http_response_done(&r);
    ASSERT_EQ(get(NULL, "/status/500", &r, &err), 0);
    ASSERT_EQ(r.status, 500);
    sh_http_response_done(&r);

    ASSERT_EQ(get(NULL, "/headers", &r, &err), 0);
    ASSERT_EQ(r.status, 201);
    ASSERT_STR_EQ(r.content_type, "application/json");
    ASSERT_STR_EQ(r.etag, "\"42\"");
    ASSERT_STR_EQ(r.location, "/things/7");
    ASSERT_NULL(r.retry_after);
    v = sh_http_response_header(&r, "x-custom");
    ASSERT_STR_EQ(v, "spaced");
    free(v);
    ASSERT_NULL(sh_http_response_header(&r, "X-Missing"));
    sh_http_response_done(&r);
    {
        struct sh_http_client_opts small = {.max_headers = 40};
        ASSERT_EQ(get(&small, "/headers", &r, &err), -1);
        ASSERT_EQ(err.code, SH_ELIMIT);
        ASSERT_STR_CONTAINS(err.msg, "headers larger than 40");
    }
    sh_http_response_done(NULL);
}

static void test_body_headers_token_and_user_agent_are_sent(void)
{
    struct sh_http_client_opts o = {.bearer_token = "s3cret", .user_agent = "tester/1"};
    const char *hdrs[] = {"X-Extra: yes", NULL};
    struct sh_http_response r = {0};
    struct sh_err err = {0};
    char *url = url_of("/echo");
    json_t *body = json_pack("{s:s, s:i}", "hello", "w\xc3\xb6rld", "n", 3), *got;

    ASSERT_EQ(sh_http_request_json(&o, "POST", url, body, &r, &err), 0);
    ASSERT_EQ(r.status, 200);
    got = json_loads(r.body, 0, NULL);
    ASSERT_STR_EQ(json_string_value(json_object_get(got, "method")), "POST");
    ASSERT_STR_EQ(json_string_value(json_object_get(got, "body")),
                  "{\"hello\":\"w\xc3\xb6rld\",\"n\":3}");
    ASSERT_STR_EQ(json_string_value(json_object_get(got, "Authorization")), "Bearer s3cret");
    ASSERT_STR_EQ(json_string_value(json_object_get(got, "User-Agent")), "tester/1");
    ASSERT_STR_EQ(json_string_value(json_object_get(got, "Content-Type")), "application/json");
    json_decref(got);
    sh_http_response_done(&r);

    /* PUT without a body still sends Content-Length: 0; default UA; extra headers. */
    ASSERT_EQ(sh_http_request(NULL, "PUT", url, hdrs, NULL, 0, &r, &err), 0);
    got = json_loads(r.body, 0, NULL);
    ASSERT_STR_EQ(json_string_value(json_object_get(got, "method")), "PUT");
    ASSERT_STR_EQ(json_string_value(json_object_get(got, "Content-Length")), "0");
    ASSERT_STR_EQ(json_string_value(json_object_get(got, "X-Extra")), "yes");
    ASSERT_STR_CONTAINS(json_string_value(json_object_get(got, "User-Agent")), "scrapr/");
    ASSERT_NULL(json_object_get(got, "Authorization"));
    json_decref(got);
    sh_http_response_done(&r);

    ASSERT_EQ(sh_http_request(NULL, "DELETE", url, NULL, NULL, 0, &r, &err), 0);
    got = json_loads(r.body, 0, NULL);
    ASSERT_STR_EQ(json_string_value(json_object_get(got, "method")), "DELETE");
    json_decref(got);
    sh_http_response_done(&r);
    json_decref(body);
    free(url);
}

static void test_response_over_cap_is_elimit(void)
{
    struct sh_http_client_opts o = {.max_response = 1000};
    struct sh_http_response r = {0};
    struct sh_err err = {0};

    ASSERT_EQ(get(&o, "/big?n=1000", &r, &err), 0);
    ASSERT_EQ(r.body_len, 1000);
    sh_http_response_done(&r);
    ASSERT_EQ(get(&o, "/big?n=1001", &r, &err), -1);
    ASSERT_EQ(err.code, SH_ELIMIT);
    ASSERT_STR_CONTAINS(err.msg, "larger than 1000");
    ASSERT_NULL(r.body);
    o.max_response = 0; /* default 16 MiB */
    ASSERT_EQ(get(&o, "/big?n=3000000", &r, &err), 0);
    ASSERT_EQ(r.body_len, 3000000);
    sh_http_response_done(&r);
}

static void test_slow_server_times_out(void)
{
    struct sh_http_client_opts o = {.timeout_ms = 300, .retries = 0};
    struct sh_http_response r = {0};
    struct sh_err err = {0};
    int64_t t0 = th_now_ms();

    ASSERT_EQ(get(&o, "/slow?ms=3000", &r, &err), -1);
    ASSERT_EQ(err.code, SH_ETIMEOUT);
    ASSERT_LT(th_now_ms() - t0, 1500);
    o.timeout_ms = 2000;
    ASSERT_EQ(get(&o, "/slow?ms=100", &r, &err), 0);
    ASSERT_EQ(r.status, 200);
    sh_http_response_done(&r);
}

static void test_unreachable_and_bad_urls(void)
{
    struct sh_http_response r = {0};
    struct sh_err err = {0};
    char *url = sh_xasprintf("http://127.0.0.1:%u/", th_free_port());

    ASSERT_EQ(sh_http_request(NULL, "GET", url, NULL, NULL, 0, &r, &err), -1);
    ASSERT_EQ(err.code, SH_EUPSTREAM);
    ASSERT_STR_CONTAINS(err.msg, url);
    ASSERT_EQ(sh_http_request(NULL, "GET", "ftp://127.0.0.1/x", NULL, NULL, 0, &r, &err), -1);
    ASSERT_EQ(err.code, SH_ECONFIG);
    ASSERT_EQ(sh_http_request(NULL, "GET", "http://[::1", NULL, NULL, 0, &r, &err), -1);
    ASSERT_EQ(err.code, SH_ECONFIG);
    {
        const char *evil[] = {"X-A: 1\r\nX-Injected: 1", NULL};
        struct sh_http_client_opts o = {.bearer_token = "t\r\nX-Injected: 1"};
        char *ok_url = url_of("/echo");
        ASSERT_EQ(sh_http_request(NULL, "GET", ok_url, evil, NULL, 0, &r, &err), -1);
        ASSERT_EQ(err.code, SH_ECONFIG);
        ASSERT_EQ(sh_http_request(&o, "GET", ok_url, NULL, NULL, 0, &r, &err), -1);
        ASSERT_EQ(err.code, SH_ECONFIG);
        free(ok_url);
    }
    free(url);
}

static void test_retry_on_503_then_success(void)
{
    struct sh_http_client_opts o = {.retries = 3, .backoff_ms = 20};
    struct sh_http_response r = {0};
    struct sh_err err = {0};

    ASSERT_EQ(get(&o, "/flaky/a?fail=2", &r, &err), 0);
    ASSERT_EQ(r.status, 200);
    ASSERT_STR_EQ(r.body, "ok after 3");
    ASSERT_EQ(r.attempts, 3);
    ASSERT_EQ(flaky_hits("a"), 3);
    sh_http_response_done(&r);

    /* 429, 502 and 504 are retried too; 500 is not. */
    ASSERT_EQ(get(&o, "/flaky/b?fail=1&code=429", &r, &err), 0);
    ASSERT_EQ(r.status, 200);
    sh_http_response_done(&r);
    ASSERT_EQ(get(&o, "/flaky/c?fail=1&code=504", &r, &err), 0);
    ASSERT_EQ(r.status, 200);
    sh_http_response_done(&r);
    ASSERT_EQ(get(&o, "/flaky/d?fail=1&code=500", &r, &err), 0);
    ASSERT_EQ(r.status, 500);
    ASSERT_EQ(r.attempts, 1);
    sh_http_response_done(&r);

    /* Exhausted retries hand back the last answer, not an error. */
    o.retries = 2;
    ASSERT_EQ(get(&o, "/flaky/e?fail=10", &r, &err), 0);
    ASSERT_EQ(r.status, 503);
    ASSERT_EQ(r.attempts, 3);
    ASSERT_EQ(flaky_hits("e"), 3);
    sh_http_response_done(&r);
}

static void test_unsafe_methods_retry_only_when_allowed(void)
{
    struct sh_http_client_opts o = {.retries = 3, .backoff_ms = 20};
    struct sh_http_response r = {0};
    struct sh_err err = {0};
    char *u1 = url_of("/flaky/p1?fail=1"), *u2 = url_of("/flaky/p2?fail=1");

    ASSERT_EQ(sh_http_request(&o, "POST", u1, NULL, "x", 1, &r, &err), 0);
    ASSERT_EQ(r.status, 503);
    ASSERT_EQ(flaky_hits("p1"), 1);
    sh_http_response_done(&r);
    o.retry_unsafe = 1;
    ASSERT_EQ(sh_http_request(&o, "POST", u2, NULL, "x", 1, &r, &err), 0);
    ASSERT_EQ(r.status, 200);
    ASSERT_EQ(flaky_hits("p2"), 2);
    sh_http_response_done(&r);
    free(u1);
    free(u2);
}

static void test_retry_after_is_honoured(void)
{
    struct sh_http_client_opts o = {.retries = 1, .backoff_ms = 10};
    struct sh_http_response r = {0};
    struct sh_err err = {0};
    int64_t t0 = th_now_ms(), took;

    ASSERT_EQ(get(&o, "/flaky/ra?fail=1&retry_after=1", &r, &err), 0);
    took = th_now_ms() - t0;
    ASSERT_EQ(r.status, 200);
    ASSERT_EQ(r.attempts, 2);
    ASSERT_GE(took, 950);
    ASSERT_LT(took, 3000);
    fprintf(stderr, "   Retry-After: 1 → retried after %" PRId64 " ms\n", took);
    sh_http_response_done(&r);

    /* Without Retry-After the jittered backoff is short (base 10 ms). */
    t0 = th_now_ms();
    ASSERT_EQ(get(&o, "/flaky/nr?fail=1", &r, &err), 0);
    ASSERT_EQ(r.status, 200);
    ASSERT_LT(th_now_ms() - t0, 500);
    sh_http_response_done(&r);
}

struct late_server {
    unsigned port;
    struct MHD_Daemon *d;
};

static void *start_late(void *arg)
{
    struct late_server *s = arg;

    usleep(400 * 1000);
    s->d =
        MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD, (uint16_t)s->port, NULL, NULL, on_request,
                         NULL, MHD_OPTION_NOTIFY_COMPLETED, on_done, NULL, MHD_OPTION_END);
    return NULL;
}

static void test_connection_refused_is_retried_until_server_is_up(void)
{
    struct late_server s = {.port = th_free_port()};
    struct sh_http_client_opts o = {.retries = 8, .backoff_ms = 200};
    struct sh_http_response r = {0};
    struct sh_err err = {0};
    char *url = sh_xasprintf("http://127.0.0.1:%u/status/204", s.port);
    pthread_t t;

    ASSERT_EQ(pthread_create(&t, NULL, start_late, &s), 0);
    ASSERT_EQ(sh_http_request(&o, "GET", url, NULL, NULL, 0, &r, &err), 0);
    ASSERT_EQ(r.status, 204);
    ASSERT_GT(r.attempts, 1);
    fprintf(stderr, "   connected on attempt %d\n", r.attempts);
    sh_http_response_done(&r);
    ASSERT_EQ(pthread_join(t, NULL), 0);
    ASSERT_NOT_NULL(s.d);
    MHD_stop_daemon(s.d);
    free(url);
}

static void test_unix_socket_transport(void)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    char *dir = sh_xstrdup("/tmp/t_http_unix_XXXXXX");
    struct sh_http_client_opts o = {0};
    struct sh_http_response r = {0};
    struct sh_err err = {0};
    struct MHD_Daemon *d;
    int fd;

    ASSERT_NOT_NULL(mkdtemp(dir));
    (void)snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/api.sock", dir);
    fd = socket(AF_UNIX, SOCK_STREAM, 0);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    ASSERT_EQ(listen(fd, 16), 0);
    d = start_server(fd, NULL);

    o.unix_socket = sa.sun_path;
    ASSERT_EQ(
        sh_http_request(&o, "GET", "http://localhost/v1.41/status/200", NULL, NULL, 0, &r, &err),
        0);
    ASSERT_EQ(r.status, 404); /* the path is routed, so the server really answered */
    sh_http_response_done(&r);
    ASSERT_EQ(sh_http_request(&o, "GET", "http://docker/status/200", NULL, NULL, 0, &r, &err), 0);
    ASSERT_EQ(r.status, 200);
    ASSERT_STR_EQ(r.body, "status 200");
    sh_http_response_done(&r);

    MHD_stop_daemon(d);
    (void)unlink(sa.sun_path);
    o.unix_socket = sa.sun_path;
    ASSERT_EQ(sh_http_request(&o, "GET", "http://docker/status/200", NULL, NULL, 0, &r, &err), -1);
    ASSERT_EQ(err.code, SH_EUPSTREAM);
    (void)rmdir(dir);
    free(dir);
}

static void test_gzip_and_redirects(void)
{
    struct sh_http_client_opts o = {0};
    struct sh_http_response r = {0};
    struct sh_err err = {0};

    ASSERT_EQ(get(&o, "/gzip", &r, &err), 0);
    ASSERT_STR_EQ(r.body, "hello compressed world hello compressed world");
    sh_http_response_done(&r);

    ASSERT_EQ(get(&o, "/redirect", &r, &err), 0);
    ASSERT_EQ(r.status, 302);
    ASSERT_STR_EQ(r.location, "/status/200");
    sh_http_response_done(&r);
    o.max_redirects = 3;
    ASSERT_EQ(get(&o, "/redirect", &r, &err), 0);
    ASSERT_EQ(r.status, 200);
    ASSERT_NULL(r.location); /* headers are the final response's */
    ASSERT_STR_CONTAINS(r.url, "/status/200");
    sh_http_response_done(&r);
}

struct canceller {
    int flag;
};

static void *cancel_soon(void *arg)
{
    struct canceller *c = arg;

    usleep(200 * 1000);
    __atomic_store_n(&c->flag, 1, __ATOMIC_SEQ_CST);
    return NULL;
}

static void test_cancel_flag_aborts_a_transfer(void)
{
    struct canceller c = {0};
    struct sh_http_client_opts o = {.cancel = &c.flag, .timeout_ms = 10000};
    struct sh_http_response r = {0};
    struct sh_err err = {0};
    pthread_t t;
    int64_t t0 = th_now_ms(), took;

    ASSERT_EQ(pthread_create(&t, NULL, cancel_soon, &c), 0);
    ASSERT_EQ(get(&o, "/slow?ms=4000", &r, &err), -1);
    took = th_now_ms() - t0;
    ASSERT_EQ(err.code, SH_EIO);
    ASSERT_STR_CONTAINS(err.msg, "cancelled");
    ASSERT_LT(took, 800);
    fprintf(stderr, "   cancelled transfer returned after %" PRId64 " ms\n", took);
    ASSERT_EQ(pthread_join(t, NULL), 0);
}

/* ---- keep-alive: connection reuse, against servers that count connections ---- */

struct counted {
    struct MHD_Daemon *d;
    int opened, closed; /* TCP connections accepted / closed by the server (atomic) */
    char base[64];
};

static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_ctx,
                          enum MHD_ConnectionNotificationCode code)
{
    struct counted *c = cls;

    (void)conn, (void)socket_ctx;
    (void)__atomic_add_fetch(code == MHD_CONNECTION_NOTIFY_STARTED ? &c->opened : &c->closed, 1,
                             __ATOMIC_SEQ_CST);
}

/* A thread-per-connection daemon of its own with the routes above; idle_s > 0
 * closes connections idle that long (MHD's connection timeout). */
static void counted_start(struct counted *c, unsigned idle_s)
{
    unsigned flags =
        MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG;
    const union MHD_DaemonInfo *info;

    memset(c, 0, sizeof(*c));
    c->d = MHD_start_daemon(flags, 0, NULL, NULL, on_request, NULL, MHD_OPTION_NOTIFY_COMPLETED,
                            on_done, NULL, MHD_OPTION_NOTIFY_CONNECTION, on_connection, c,
                            MHD_OPTION_CONNECTION_TIMEOUT, idle_s, MHD_OPTION_END);
    ASSERT_NOT_NULL(c->d);
    info = MHD_get_daemon_info(c->d, MHD_DAEMON_INFO_BIND_PORT);
    ASSERT_NOT_NULL(info);
    (void)snprintf(c->base, sizeof(c->base), "http://127.0.0.1:%u", info->port);
}

static int load(int *counter)
{
    return __atomic_load_n(counter, __ATOMIC_SEQ_CST);
}

/* Waits up to 5 s for *counter to reach n. */
static void wait_count(int *counter, int n)
{
    int64_t deadline = th_now_ms() + 5000;

    while (load(counter) < n && th_now_ms() < deadline)
        usleep(10 * 1000);
    ASSERT_EQ(load(counter), n);
}

/* One request to base_url+path that must succeed with `status` and, when
 * `want` is non-NULL, exactly that body. */
static void expect(const struct sh_http_client_opts *o, const char *method, const char *base_url,
                   const char *path, const char *body, long status, const char *want)
{
    struct sh_http_response r = {0};
    struct sh_err err = {0};
    char *url = sh_xasprintf("%s%s", base_url, path);

    if (sh_http_request(o, method, url, NULL, body, body ? strlen(body) : 0, &r, &err) < 0)
        CHECK_FAIL("%s %s failed: %s", method, url, err.msg);
    ASSERT_EQ(r.status, status);
    if (want)
        ASSERT_STR_EQ(r.body, want);
    sh_http_response_done(&r);
    free(url);
}

/* A request to /echo whose answer must name this method and body. */
static void expect_echo(const struct sh_http_client_opts *o, const char *method,
                        const char *base_url, const char *body)
{
    struct sh_http_response r = {0};
    struct sh_err err = {0};
    char *url = sh_xasprintf("%s/echo", base_url);
    json_t *got;

    if (sh_http_request(o, method, url, NULL, body, body ? strlen(body) : 0, &r, &err) < 0)
        CHECK_FAIL("%s %s failed: %s", method, url, err.msg);
    ASSERT_EQ(r.status, 200);
    got = json_loads(r.body, 0, NULL);
    ASSERT_NOT_NULL(got);
    ASSERT_STR_EQ(json_string_value(json_object_get(got, "method")), method);
    ASSERT_STR_EQ(json_string_value(json_object_get(got, "body")), body ? body : "");
    json_decref(got);
    sh_http_response_done(&r);
    free(url);
}

/* Our sockets connected to `port`: how many, and whether all are close-on-exec. */
static int client_sockets(unsigned port, int *all_cloexec)
{
    int n = 0;

    *all_cloexec = 1;
    for (int fd = 0; fd < 4096; fd++) {
        struct sockaddr_in peer;
        socklen_t len = sizeof(peer);
        int flags = fcntl(fd, F_GETFD);

        if (flags < 0 || getpeername(fd, (struct sockaddr *)&peer, &len) < 0 ||
            peer.sin_family != AF_INET || ntohs(peer.sin_port) != port)
            continue;
        n++;
        if (!(flags & FD_CLOEXEC))
            *all_cloexec = 0;
    }
    return n;
}

static void test_sequential_calls_reuse_one_connection(void)
{
    struct counted c;
    int never = 0;
    struct sh_http_client_opts plain = {0};
    struct sh_http_client_opts other = {.bearer_token = "t",
                                        .timeout_ms = 5000,
                                        .retries = 2,
                                        .backoff_ms = 10,
                                        .max_redirects = 2};
    struct sh_http_client_opts cancellable = {.cancel = &never}; /* the multi-handle path */
    char body[32], path[64];
    int cloexec;

    counted_start(&c, 0);
    for (int i = 0; i < 10; i++) {
        (void)snprintf(body, sizeof(body), "item %d", i);
        expect(&plain, "GET", c.base, "/status/200", NULL, 200, "status 200");
        expect_echo(&other, "POST", c.base, body);
        expect_echo(&cancellable, "PUT", c.base, body);
        expect(&cancellable, "GET", c.base, "/big?n=5000", NULL, 200, NULL);
        expect(&plain, "HEAD", c.base, "/status/204", NULL, 204, "");
        expect(&plain, "GET", c.base, "/status/404", NULL, 404, "status 404");
        expect(&other, "GET", c.base, "/redirect", NULL, 200, "status 200");
        expect(&plain, "GET", c.base, "/gzip", NULL, 200,
               "hello compressed world hello compressed world");
        /* A retried 503 goes over the same connection too. */
        (void)snprintf(path, sizeof(path), "/flaky/keep%d?fail=1", i);
        expect(&other, "GET", c.base, path, NULL, 200, "ok after 2");
    }
    fprintf(stderr, "   100 calls, %d connection(s) accepted by the server\n", load(&c.opened));
    ASSERT_EQ(load(&c.opened), 1);
    ASSERT_EQ(load(&c.closed), 0);
    /* That connection stays open between calls, not inherited by exec'd children. */
    ASSERT_EQ(client_sockets((unsigned)strtoul(strrchr(c.base, ':') + 1, NULL, 10), &cloexec), 1);
    ASSERT_EQ(cloexec, 1);
    MHD_stop_daemon(c.d);
}

#define KA_THREADS 8
#define KA_CALLS 40

struct ka_worker {
    struct counted *c;
    int id;
};

static void *ka_work(void *arg)
{
    const struct ka_worker *w = arg;
    int never = 0;
    struct sh_http_client_opts o = {.timeout_ms = 10000};
    char body[64];

    for (int i = 0; i < KA_CALLS; i++) {
        /* Distinct bodies: an answer delivered to the wrong caller would show. */
        (void)snprintf(body, sizeof(body), "thread %d call %d", w->id, i);
        o.cancel = i % 2 ? &never : NULL;
        expect_echo(&o, i % 3 ? "POST" : "PUT", w->c->base, body);
        expect(&o, "GET", w->c->base, "/status/200", NULL, 200, "status 200");
    }
    return NULL;
}

static void test_concurrent_threads_each_keep_their_own_connection(void)
{
    struct counted c;
    struct ka_worker w[KA_THREADS];
    pthread_t t[KA_THREADS];

    counted_start(&c, 0);
    for (int i = 0; i < KA_THREADS; i++) {
        w[i].c = &c;
        w[i].id = i;
        ASSERT_EQ(pthread_create(&t[i], NULL, ka_work, &w[i]), 0);
    }
    for (int i = 0; i < KA_THREADS; i++)
        ASSERT_EQ(pthread_join(t[i], NULL), 0);
    fprintf(stderr, "   %d threads x %d calls, %d connection(s)\n", KA_THREADS, KA_CALLS * 2,
            load(&c.opened));
    /* One connection per thread, never one thread's connection in another's
     * hands; each is closed when its thread exits. */
    ASSERT_EQ(load(&c.opened), KA_THREADS);
    wait_count(&c.closed, KA_THREADS);
    MHD_stop_daemon(c.d);
}

/* GET server+path must fail with error code `code`. */
static void expect_fail(const struct sh_http_client_opts *o, const char *server, const char *path,
                        int code)
{
    struct sh_http_response r = {0};
    struct sh_err err = {0};
    char *url = sh_xasprintf("%s%s", server, path);

    ASSERT_EQ(sh_http_request(o, "GET", url, NULL, NULL, 0, &r, &err), -1);
    ASSERT_EQ(err.code, code);
    free(url);
}

static void test_failed_transfers_do_not_poison_the_next_call(void)
{
    struct canceller cancel = {0};
    struct counted c;
    struct sh_http_client_opts o = {0};
    pthread_t t;

    counted_start(&c, 0);
    expect(&o, "GET", c.base, "/status/200", NULL, 200, "status 200");

    /* Body over the cap: curl stops reading mid-body... */
    o.max_response = 1000;
    expect_fail(&o, c.base, "/big?n=300000", SH_ELIMIT);
    /* ...and the rest of that body must not be read as the next answer. */
    o.max_response = 0;
    expect_echo(&o, "POST", c.base, "after the limit");

    o.timeout_ms = 300;
    expect_fail(&o, c.base, "/slow?ms=1500", SH_ETIMEOUT);
    o.timeout_ms = 0;
    expect(&o, "GET", c.base, "/status/201", NULL, 201, "status 201");

    o.cancel = &cancel.flag;
    ASSERT_EQ(pthread_create(&t, NULL, cancel_soon, &cancel), 0);
    expect_fail(&o, c.base, "/slow?ms=1500", SH_EIO);
    ASSERT_EQ(pthread_join(t, NULL), 0);
    o.cancel = NULL;
    expect(&o, "GET", c.base, "/status/202", NULL, 202, "status 202");

    o.max_headers = 40;
    expect_fail(&o, c.base, "/headers", SH_ELIMIT);
    o.max_headers = 0;
    expect(&o, "GET", c.base, "/status/203", NULL, 203, "status 203");
    expect_echo(&o, "PUT", c.base, "still fine");

    /* Each failed transfer closed its connection (1 + 4 opened), the good
     * calls after it reused the new one. */
    ASSERT_EQ(load(&c.opened), 5);
    MHD_stop_daemon(c.d);
}

static void test_server_closing_idle_connections(void)
{
    struct counted c;
    struct sh_http_client_opts o = {0};

    counted_start(&c, 1); /* closes a connection idle for 1 s */
    expect(&o, "GET", c.base, "/status/200", NULL, 200, "status 200");
    wait_count(&c.closed, 1); /* the server dropped our idle connection */
    expect(&o, "GET", c.base, "/status/200", NULL, 200, "status 200");
    wait_count(&c.closed, 2);
    expect_echo(&o, "POST", c.base, "two"); /* not retried by us: opts.retries is 0 */
    ASSERT_EQ(load(&c.opened), 3);
    MHD_stop_daemon(c.d);
}

/* A raw HTTP/1.1 server that numbers its connections and answers
 * "conn N req K METHOD BODYLEN", keep-alive, except: /close answers and then
 * closes without saying so; /drop closes without answering when it is not the
 * first request on the connection (the race where a server's idle close
 * crosses our request on a reused connection). */
static const char dropper_py[] =
    "import socketserver, sys, threading\n"
    "lock, conns = threading.Lock(), 0\n"
    "class H(socketserver.StreamRequestHandler):\n"
    "    def handle(self):\n"
    "        global conns\n"
    "        with lock:\n"
    "            conns += 1\n"
    "            n = conns\n"
    "        k = 0\n"
    "        while True:\n"
    "            line = self.rfile.readline()\n"
    "            if not line:\n"
    "                return\n"
    "            method, path = line.decode().split(' ')[:2]\n"
    "            length = 0\n"
    "            while True:\n"
    "                h = self.rfile.readline()\n"
    "                if h in (b'\\r\\n', b'\\n', b''):\n"
    "                    break\n"
    "                name, _, value = h.decode().partition(':')\n"
    "                if name.strip().lower() == 'content-length':\n"
    "                    length = int(value)\n"
    "            body = self.rfile.read(length)\n"
    "            k += 1\n"
    "            if path == '/drop' and k > 1:\n"
    "                return\n"
    "            out = ('conn %d req %d %s %d' % (n, k, method, len(body))).encode()\n"
    "            self.wfile.write(b'HTTP/1.1 200 OK\\r\\nContent-Length: %d\\r\\n\\r\\n' % "
    "len(out) + out)\n"
    "            self.wfile.flush()\n"
    "            if path == '/close':\n"
    "                return\n"
    "socketserver.ThreadingTCPServer.allow_reuse_address = True\n"
    "srv = socketserver.ThreadingTCPServer(('127.0.0.1', int(sys.argv[1])), H)\n"
    "print('ready', flush=True)\n"
    "srv.serve_forever()\n";

static void test_server_dropping_reused_connections(void)
{
    char *py = sh_xstrdup("/tmp/t_http_drop_XXXXXX"), *log, *base_url;
    unsigned port = th_free_port();
    char portstr[16];
    const char *argv[4];
    struct sh_http_client_opts o = {0}; /* retries 0: any resend is libcurl's */
    int64_t deadline = th_now_ms() + 15000;
    pid_t srv;
    int fd;
    FILE *f;

    fd = mkstemp(py);
    ASSERT_GE(fd, 0);
    f = fdopen(fd, "w");
    ASSERT_NOT_NULL(f);
    ASSERT_EQ(fputs(dropper_py, f) >= 0, 1);
    ASSERT_EQ(fclose(f), 0);
    (void)snprintf(portstr, sizeof(portstr), "%u", port);
    argv[0] = "python3";
    argv[1] = py;
    argv[2] = portstr;
    argv[3] = NULL;
    srv = th_spawn(argv, NULL);
    for (;;) {
        log = th_log_read(srv);
        if (strstr(log, "ready"))
            break;
        if (th_now_ms() > deadline)
            CHECK_FAIL("python server did not start: %s", log);
        free(log);
        usleep(50 * 1000);
    }
    free(log);
    base_url = sh_xasprintf("http://127.0.0.1:%u", port);

    expect(&o, "GET", base_url, "/keep", NULL, 200, "conn 1 req 1 GET 0");
    expect(&o, "GET", base_url, "/keep", NULL, 200, "conn 1 req 2 GET 0");
    /* Dropped on the reused connection: libcurl sends it again on a new one. */
    expect(&o, "GET", base_url, "/drop", NULL, 200, "conn 2 req 1 GET 0");
    /* A POST too (so a non-idempotent request may reach a server twice when
     * the server acted on it and then closed without a byte of answer). */
    expect(&o, "POST", base_url, "/drop", "abc", 200, "conn 3 req 1 POST 3");
    /* Closed after answering, without "Connection: close". */
    expect(&o, "GET", base_url, "/close", NULL, 200, "conn 3 req 2 GET 0");
    expect(&o, "GET", base_url, "/close", NULL, 200, "conn 4 req 1 GET 0");
    expect(&o, "POST", base_url, "/keep", "xy", 200, "conn 5 req 1 POST 2");
    expect(&o, "GET", base_url, "/keep", NULL, 200, "conn 5 req 2 GET 0");

    (void)th_kill(srv, SIGTERM);
    (void)unlink(py);
    free(py);
    free(base_url);
}

/* ---- TLS with client certificates (the Docker tcp+TLS setup), python3 ssl server ---- */

static const char tls_server_py[] =
    "import http.server, ssl, sys\n"
    "port, d = int(sys.argv[1]), sys.argv[2]\n"
    "class H(http.server.BaseHTTPRequestHandler):\n"
    "    def do_GET(self):\n"
    "        cert = self.connection.getpeercert()\n"
    "        cn = dict(x[0] for x in cert['subject'])['commonName'] if cert else ''\n"
    "        body = ('hello ' + cn).encode()\n"
    "        self.send_response(200)\n"
    "        self.send_header('Content-Length', str(len(body)))\n"
    "        self.end_headers()\n"
    "        self.wfile.write(body)\n"
    "    def log_message(self, *a):\n"
    "        pass\n"
    "ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)\n"
    "ctx.load_cert_chain(d + '/srv.pem', d + '/srv.key')\n"
    "ctx.load_verify_locations(d + '/ca.pem')\n"
    "ctx.verify_mode = ssl.CERT_REQUIRED\n"
    /* TLS 1.2: a missing client certificate fails the handshake itself; with
     * 1.3 the refusal only shows when the server closes the socket, whose
     * timing depends on Python's garbage collector. */
    "ctx.maximum_version = ssl.TLSVersion.TLSv1_2\n"
    "srv = http.server.ThreadingHTTPServer(('127.0.0.1', port), H)\n"
    "srv.socket = ctx.wrap_socket(srv.socket, server_side=True)\n"
    "srv.serve_forever()\n";

static void make_certs(const char *dir)
{
    char *cmd = sh_xasprintf(
        "set -e; cd '%s'; k='-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes';"
        "openssl req -x509 $k -keyout ca.key -out ca.pem -days 1 -subj /CN=test-ca 2>/dev/null;"
        "printf 'subjectAltName=IP:127.0.0.1\\n' > srv.ext;"
        "openssl req $k -keyout srv.key -out srv.csr -subj /CN=127.0.0.1 2>/dev/null;"
        "openssl x509 -req -in srv.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 "
        "-extfile srv.ext -out srv.pem 2>/dev/null;"
        "openssl req $k -keyout cli.key -out cli.csr -subj /CN=client 2>/dev/null;"
        "openssl x509 -req -in cli.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 "
        "-out cli.pem 2>/dev/null",
        dir);
    ASSERT_EQ(system(cmd), 0);
    free(cmd);
}

static void test_tls_with_ca_and_client_certificate(void)
{
    char *dir = sh_xstrdup("/tmp/t_http_tls_XXXXXX"), *py, *url, *ca, *cert, *key, *cmd;
    unsigned port = th_free_port();
    char portstr[16];
    const char *argv[5];
    struct sh_http_client_opts o = {.timeout_ms = 5000};
    struct sh_http_response r = {0};
    struct sh_err err = {0};
    int64_t deadline = th_now_ms() + 15000;
    pid_t srv;
    FILE *f;

    ASSERT_NOT_NULL(mkdtemp(dir));
    make_certs(dir);
    py = sh_xasprintf("%s/server.py", dir);
    f = fopen(py, "w");
    ASSERT_NOT_NULL(f);
    ASSERT_EQ(fputs(tls_server_py, f) >= 0, 1);
    ASSERT_EQ(fclose(f), 0);
    (void)snprintf(portstr, sizeof(portstr), "%u", port);
    argv[0] = "python3";
    argv[1] = py;
    argv[2] = portstr;
    argv[3] = dir;
    argv[4] = NULL;
    srv = th_spawn(argv, NULL);
    url = sh_xasprintf("https://127.0.0.1:%u/info", port);
    ca = sh_xasprintf("%s/ca.pem", dir);
    cert = sh_xasprintf("%s/cli.pem", dir);
    key = sh_xasprintf("%s/cli.key", dir);

    o.ca_file = ca;
    o.cert_file = cert;
    o.key_file = key;
    while (sh_http_request(&o, "GET", url, NULL, NULL, 0, &r, &err) < 0) {
        if (th_now_ms() > deadline)
            CHECK_FAIL("TLS server did not answer: %s / %s", err.msg, th_log_read(srv));
        usleep(100 * 1000);
    }
    ASSERT_EQ(r.status, 200);
    ASSERT_STR_EQ(r.body, "hello client");
    sh_http_response_done(&r);

    /* Without a client certificate the server refuses the handshake (the
     * connection made with the certificate must not be reused for this). */
    o.cert_file = o.key_file = NULL;
    ASSERT_EQ(sh_http_request(&o, "GET", url, NULL, NULL, 0, &r, &err), -1);
    ASSERT_EQ(err.code, SH_EUPSTREAM);
    /* Without our CA the server certificate does not verify. */
    o.ca_file = NULL;
    o.cert_file = cert;
    o.key_file = key;
    ASSERT_EQ(sh_http_request(&o, "GET", url, NULL, NULL, 0, &r, &err), -1);
    ASSERT_EQ(err.code, SH_EUPSTREAM);

    (void)th_kill(srv, SIGTERM);
    cmd = sh_xasprintf("rm -rf '%s'", dir);
    ASSERT_EQ(system(cmd), 0);
    free(cmd);
    free(py);
    free(url);
    free(ca);
    free(cert);
    free(key);
    free(dir);
}

static void test_url_escape(void)
{
    char *e = sh_url_escape("a b/\xc3\xbc&=~-._");

    ASSERT_STR_EQ(e, "a%20b%2F%C3%BC%26%3D~-._");
    free(e);
    e = sh_url_escape("");
    ASSERT_STR_EQ(e, "");
    free(e);
}

int main(void)
{
    unsigned port;
    struct MHD_Daemon *d = start_server(-1, &port);

    (void)snprintf(base, sizeof(base), "http://127.0.0.1:%u", port);
    RUN(test_status_and_body_non2xx_is_not_an_error);
    RUN(test_body_headers_token_and_user_agent_are_sent);
    RUN(test_response_over_cap_is_elimit);
    RUN(test_slow_server_times_out);
    RUN(test_unreachable_and_bad_urls);
    RUN(test_retry_on_503_then_success);
    RUN(test_unsafe_methods_retry_only_when_allowed);
    RUN(test_retry_after_is_honoured);
    RUN(test_connection_refused_is_retried_until_server_is_up);
    RUN(test_unix_socket_transport);
    RUN(test_gzip_and_redirects);
    RUN(test_cancel_flag_aborts_a_transfer);
    RUN(test_sequential_calls_reuse_one_connection);
    RUN(test_concurrent_threads_each_keep_their_own_connection);
    RUN(test_failed_transfers_do_not_poison_the_next_call);
    RUN(test_server_closing_idle_connections);
    RUN(test_server_dropping_reused_connections);
    RUN(test_tls_with_ca_and_client_certificate);
    RUN(test_url_escape);
    MHD_stop_daemon(d);
    return 0;
}
