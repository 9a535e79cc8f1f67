/* The libshared HTTP server on a real socket, driven through libcurl (the
 * harness) and raw TCP: routing, captures, 404/405/413/400/401 answers,
 * HEAD/OPTIONS, /health, /metrics, blobs, concurrency, hostile input and a
 * graceful stop. Every check runs against both threading models. */
#include "check.h"
#include "harness.h"
#include "shared/http_server.h"
#include "shared/xalloc.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

static int healthy = 1;
static struct sh_blob *shared_blob;
static char base[64];

static void h_items(struct sh_http_req *req, struct sh_http_resp *resp, void *arg)
{
    ASSERT_STR_EQ(arg, "ctx");
    (void)req;
    sh_http_resp_json(resp, 200, json_pack("{s:b}", "ok", 1));
}

static void h_item(struct sh_http_req *req, struct sh_http_resp *resp, void *arg)
{
    (void)arg;
    ASSERT_NULL(sh_http_req_param(req, 1));
    sh_http_resp_json(resp, 200,
                      json_pack("{s:s, s:s}", "key", sh_http_req_param(req, 0), "method",
                                sh_http_req_method(req)));
}

static void h_post(struct sh_http_req *req, struct sh_http_resp *resp, void *arg)
{
    json_t *j = sh_http_req_json(req, resp);
    (void)arg;
    if (!j)
        return;
    sh_http_resp_json(resp, 201, json_pack("{s:o}", "got", j));
}

static void h_two(struct sh_http_req *req, struct sh_http_resp *resp, void *arg)
{
    (void)arg;
    sh_http_resp_json(
        resp, 200,
        json_pack("{s:s, s:s}", "a", sh_http_req_param(req, 0), "b", sh_http_req_param(req, 1)));
}

static void h_slow(struct sh_http_req *req, struct sh_http_resp *resp, void *arg)
{
    (void)req;
    (void)arg;
    (void)usleep(300000);
    sh_http_resp_body(resp, 200, "text/plain", sh_xstrdup("slept"), 5);
}

static void h_blob(struct sh_http_req *req, struct sh_http_resp *resp, void *arg)
{
    (void)req;
    (void)arg;
    sh_http_resp_blob(resp, 200, "application/json", shared_blob);
}

static int count_arg(const char *key, const char *value, void *arg)
{
    json_t *o = arg;
    (void)json_object_set_new(o, key, json_string(value));
    return 0;
}

static void h_query(struct sh_http_req *req, struct sh_http_resp *resp, void *arg)
{
    json_t *all = json_object();
    const char *q = sh_http_req_query(req, "q");
    (void)arg;
    ASSERT_EQ(sh_http_req_query_each(req, count_arg, all), 0);
    sh_http_resp_json(resp, 200, json_pack("{s:s?, s:o}", "q", q, "all", all));
}

static void h_nothing(struct sh_http_req *req, struct sh_http_resp *resp, void *arg)
{
    (void)req;
    (void)resp;
    (void)arg;
}

static void h_header(struct sh_http_req *req, struct sh_http_resp *resp, void *arg)
{
    const char *in = sh_http_req_header(req, "x-in");
    (void)arg;
    sh_http_resp_status(resp, 204);
    sh_http_resp_header(resp, "X-Out", in ? in : "none");
    sh_http_resp_header(resp, "X-Bad", "a\r\nInjected: yes");
    sh_http_resp_header(resp, "Access-Control-Allow-Origin", "*");
}

static int health_fn(json_t *checks, void *arg)
{
    ASSERT_STR_EQ(arg, "hctx");
    (void)json_object_set_new(checks, "db", json_string(healthy ? "ok" : "down"));
    return healthy ? 0 : -1;
}

static const struct sh_http_route routes[] = {
    {"GET", "/items", h_items, 0},      {"POST", "/items", h_post, SH_HTTP_WRITE},
    {"GET", "/items/{key}", h_item, 0}, {"PUT", "/things/{a}/sub/{b}", h_two, SH_HTTP_WRITE},
    {"GET", "/slow", h_slow, 0},        {"GET", "/blob", h_blob, 0},
    {"GET", "/query", h_query, 0},      {"GET", "/nothing", h_nothing, 0},
    {"GET", "/header", h_header, 0},    {NULL, NULL, NULL, 0},
};

static const char *const auth_ok[] = {"Authorization: Bearer s3cret", NULL};

static char *url(const char *path)
{
    return sh_xasprintf("%s%s", base, path);
}

/* GET/POST path; returns the status and (optionally) the body. */
static long req(const char *method, const char *path, const char *const *hdrs, const char *body,
                char **ret_body, char **ret_headers)
{
    char *u = url(path);
    long status = 0;
    ASSERT_EQ(th_http(method, u, hdrs, body, &status, ret_body, ret_headers), 0);
    free(u);
    return status;
}

static void expect(const char *method, const char *path, const char *const *hdrs, const char *body,
                   long want_status, const char *want_in_body)
{
    char *b = NULL;
    long st = req(method, path, hdrs, body, &b, NULL);
    if (st != want_status)
        CHECK_FAIL("%s %s: status %ld, want %ld (body %s)", method, path, st, want_status, b);
    if (want_in_body)
        ASSERT_STR_CONTAINS(b, want_in_body);
    free(b);
}

static void check_routing_and_errors(void)
{
    char *hdrs = NULL, *b = NULL, *v;

    expect("GET", "/items", NULL, NULL, 200, "{\"ok\":true}");
    expect("GET", "/items/", NULL, NULL, 200, "{\"ok\":true}");
    expect("GET", "/items/abc", NULL, NULL, 200, "{\"key\":\"abc\",\"method\":\"GET\"}");
    /* percent-encoded slash and space stay inside the capture */
    expect("GET", "/items/http%3A%2F%2Fx.example%2Fa%20b", NULL, NULL, 200,
           "\"key\":\"http://x.example/a b\"");
    expect("PUT", "/things/x%2Fy/sub/2", auth_ok, "", 200, "{\"a\":\"x/y\",\"b\":\"2\"}");
    expect("GET", "/nope", NULL, NULL, 404, "\"error\":\"no such path\",\"details\":[]");
    expect("GET", "/items/a/b", NULL, NULL, 404, NULL);
    expect("GET", "/items/%zz", NULL, NULL, 400, "percent-encoding");
    expect("GET", "/items/a%00b", NULL, NULL, 400, "percent-encoding");
    expect("GET", "/items/a%00b", NULL, NULL, 400, "percent-encoding");
    expect("GET", "/items/%C3%A9t%C3%A9", NULL, NULL, 200, "\"key\":\"\u00e9t\u00e9\"");
    expect("GET", "/items/%C3", NULL, NULL, 400, "not UTF-8");
    expect("GET", "/items/%C0%AF", NULL, NULL, 400, "not UTF-8");    /* overlong "/" */
    expect("GET", "/items/%ED%A0%80", NULL, NULL, 400, "not UTF-8"); /* surrogate */
    expect("GET", "/query?q=%FF", NULL, NULL, 400, "query parameter is not valid UTF-8");
    expect("GET", "/nothing", NULL, NULL, 500, "no response");

    /* 405 + Allow */
    ASSERT_EQ(req("DELETE", "/items", NULL, NULL, &b, &hdrs), 405);
    ASSERT_STR_CONTAINS(b, "\"error\":\"method DELETE is not allowed here");
    v = th_header(hdrs, "Allow");
    ASSERT_STR_EQ(v, "GET, POST, HEAD, OPTIONS");
    free(v);
    free(b);
    free(hdrs);
    expect("FOO", "/items", NULL, NULL, 405, NULL);

    /* OPTIONS on a known path: 204 + Allow; unknown path: 404 */
    ASSERT_EQ(req("OPTIONS", "/items/1", NULL, NULL, NULL, &hdrs), 204);
    v = th_header(hdrs, "Allow");
    ASSERT_STR_EQ(v, "GET, HEAD, OPTIONS");
    free(v);
    free(hdrs);
    expect("OPTIONS", "/nope", NULL, NULL, 404, NULL);

    /* HEAD answers like GET without a body */
    ASSERT_EQ(req("HEAD", "/items/k", NULL, NULL, &b, &hdrs), 200);
    ASSERT_STR_EQ(b, "");
    v = th_header(hdrs, "Content-Length");
    ASSERT_EQ(atoi(v), (int)strlen("{\"key\":\"k\",\"method\":\"HEAD\"}"));
    free(v);
    free(b);
    free(hdrs);

    /* query decoding by MHD, handler headers, CR/LF in header values dropped */
    expect("GET", "/query?q=a%20b%26c&x=1&empty", NULL, NULL, 200,
           "{\"q\":\"a b&c\",\"all\":{\"q\":\"a b&c\",\"x\":\"1\",\"empty\":\"\"}}");
    expect("GET", "/query?q=%zz", NULL, NULL, 200, NULL);
    {
        const char *in[] = {"X-In: hello", NULL};
        ASSERT_EQ(req("GET", "/header", in, NULL, NULL, &hdrs), 204);
        v = th_header(hdrs, "X-Out");
        ASSERT_STR_EQ(v, "hello");
        free(v);
        ASSERT_NULL(th_header(hdrs, "X-Bad"));
        ASSERT_NULL(th_header(hdrs, "Injected"));
        v = th_header(hdrs, "Access-Control-Allow-Origin");
        ASSERT_STR_EQ(v, "*");
        free(v);
        free(hdrs);
    }
}

static void check_bodies_and_auth(void)
{
    const char *wrong[] = {"Authorization: Bearer s3creX", NULL};
    const char *prefix[] = {"Authorization: Bearer s3cre", NULL};
    const char *longer[] = {"Authorization: Bearer s3cret2", NULL};
    const char *basic[] = {"Authorization: Basic s3cret", NULL};
    char *big = sh_xmalloc(4097);
    char *b = NULL, *hdrs = NULL, *v;

    expect("POST", "/items", NULL, "{\"a\":1}", 401, "Authorization: Bearer");
    expect("POST", "/items", wrong, "{\"a\":1}", 401, NULL);
    expect("POST", "/items", prefix, "{\"a\":1}", 401, NULL);
    expect("POST", "/items", longer, "{\"a\":1}", 401, NULL);
    expect("POST", "/items", basic, "{\"a\":1}", 401, NULL);
    ASSERT_EQ(req("POST", "/items", NULL, "{}", NULL, &hdrs), 401);
    v = th_header(hdrs, "WWW-Authenticate");
    ASSERT_STR_EQ(v, "Bearer");
    free(v);
    free(hdrs);
    /* reads stay open */
    expect("GET", "/items", NULL, NULL, 200, NULL);

    expect("POST", "/items", auth_ok, "{\"a\":[1,2]}", 201, "{\"got\":{\"a\":[1,2]}}");
    expect("POST", "/items", auth_ok, "", 400, "body is empty");
    expect("POST", "/items", auth_ok, "{\"a\":\n  [1,}", 400,
           "\"error\":\"malformed JSON: line 2, column 6: ");
    expect("POST", "/items", auth_ok, "{\"a\":1} x", 400, "malformed JSON: line 1");

    /* body limit 1024: exactly at the limit passes, one more byte is 413 */
    memset(big, ' ', 4096);
    big[0] = '1';
    big[1024] = '\0';
    expect("POST", "/items", auth_ok, big, 201, "{\"got\":1}");
    big[1024] = ' ';
    big[1025] = '\0';
    expect("POST", "/items", auth_ok, big, 413, "exceeds 1024 bytes");
    big[4096] = '\0';
    {
        const char *chunked[] = {"Authorization: Bearer s3cret", "Transfer-Encoding: chunked",
                                 NULL};
        const char *cont[] = {"Authorization: Bearer s3cret", "Expect: 100-continue", NULL};
        expect("POST", "/items", chunked, big, 413, "exceeds 1024 bytes");
        expect("POST", "/items", cont, big, 413, "exceeds 1024 bytes");
        /* chunked within the limit is collected whole */
        expect("POST", "/items", chunked, "[1,2,3]", 201, "{\"got\":[1,2,3]}");
    }
    /* a large body beyond the drain limit still gets an answer or a clean close */
    {
        size_t n = 20u * 1024 * 1024;
        char *huge = sh_xmalloc(n);
        char *u = url("/items");
        long st = 0;
        memset(huge, 'x', n);
        if (th_http_len("POST", u, auth_ok, huge, n, &st, &b, NULL, NULL) == 0) {
            ASSERT_EQ(st, 413);
            free(b);
        }
        free(u);
        free(huge);
    }
    /* the server still works */
    expect("GET", "/items", NULL, NULL, 200, NULL);
    free(big);
}

static void check_health_metrics_blob(void)
{
    char *b = NULL, *hdrs = NULL, *v;

    healthy = 1;
    expect("GET", "/health", NULL, NULL, 200, "{\"status\":\"ok\",\"checks\":{\"db\":\"ok\"}}");
    healthy = 0;
    expect("GET", "/health", NULL, NULL, 503,
           "{\"status\":\"unavailable\",\"checks\":{\"db\":\"down\"}}");
    expect("HEAD", "/health", NULL, NULL, 503, NULL);
    healthy = 1;

    for (int i = 0; i < 3; i++)
        expect("GET", "/blob", NULL, NULL, 200, "{\"blob\":true}");
    /* every response drops its reference (MHD frees it just after the last byte) */
    for (int i = 0; i < 200 && __atomic_load_n(&shared_blob->refs, __ATOMIC_ACQUIRE) != 1; i++)
        (void)usleep(10000);
    ASSERT_EQ(__atomic_load_n(&shared_blob->refs, __ATOMIC_ACQUIRE), 1);

    ASSERT_EQ(req("GET", "/metrics", NULL, NULL, &b, &hdrs), 200);
    v = th_header(hdrs, "Content-Type");
    ASSERT_STR_EQ(v, "text/plain; version=0.0.4; charset=utf-8");
    free(v);
    ASSERT_STR_CONTAINS(b, "# TYPE scrapr_http_requests_total counter\n");
    ASSERT_STR_CONTAINS(
        b, "scrapr_http_requests_total{route=\"/blob\",method=\"GET\",code=\"200\"} 3\n");
    ASSERT_STR_CONTAINS(
        b, "scrapr_http_requests_total{route=\"/health\",method=\"GET\",code=\"503\"} 1\n");
    ASSERT_STR_CONTAINS(
        b, "scrapr_http_requests_total{route=\"unmatched\",method=\"GET\",code=\"404\"}");
    ASSERT_STR_CONTAINS(
        b, "scrapr_http_requests_total{route=\"/items\",method=\"other\",code=\"405\"} 1\n");
    ASSERT_STR_CONTAINS(b, "# TYPE scrapr_http_request_duration_seconds histogram\n");
    ASSERT_STR_CONTAINS(
        b, "scrapr_http_request_duration_seconds_count{route=\"/blob\",method=\"GET\"} 3\n");
    ASSERT_STR_CONTAINS(b, "scrapr_http_request_duration_seconds_bucket{route=\"/blob\",method="
                           "\"GET\",le=\"+Inf\"} 3\n");
    ASSERT_STR_CONTAINS(b, "# TYPE app_custom gauge\napp_custom 7\n");
    free(b);
    free(hdrs);
}

struct conc_arg {
    int id;
    int ok;
};

static void *conc_worker(void *p)
{
    struct conc_arg *a = p;
    for (int i = 0; i < 25; i++) {
        char path[64], want[64];
        char *b = NULL;
        (void)snprintf(path, sizeof(path), "/items/w%d-%d", a->id, i);
        (void)snprintf(want, sizeof(want), "\"key\":\"w%d-%d\"", a->id, i);
        if (req("GET", path, NULL, NULL, &b, NULL) == 200 && strstr(b, want))
            a->ok++;
        free(b);
    }
    return NULL;
}

static void *slow_worker(void *p)
{
    struct conc_arg *a = p;
    char *b = NULL;
    a->ok = req("GET", "/slow", NULL, NULL, &b, NULL) == 200 && !strcmp(b, "slept");
    free(b);
    return NULL;
}

static void check_concurrency(unsigned threads)
{
    pthread_t t[8];
    struct conc_arg a[8];
    int64_t t0;
    for (int i = 0; i < 8; i++) {
        a[i] = (struct conc_arg){i, 0};
        ASSERT_EQ(pthread_create(&t[i], NULL, conc_worker, &a[i]), 0);
    }
    for (int i = 0; i < 8; i++) {
        ASSERT_EQ(pthread_join(t[i], NULL), 0);
        ASSERT_EQ(a[i].ok, 25);
    }
    /* 8 handlers sleeping 300 ms at once */
    t0 = th_now_ms();
    for (int i = 0; i < 8; i++) {
        a[i] = (struct conc_arg){i, 0};
        ASSERT_EQ(pthread_create(&t[i], NULL, slow_worker, &a[i]), 0);
    }
    for (int i = 0; i < 8; i++) {
        ASSERT_EQ(pthread_join(t[i], NULL), 0);
        ASSERT_EQ(a[i].ok, 1);
    }
    /* Only the thread-per-connection mode promises overlap; a pool worker
     * serves its connections one after another, and MHD spreads them unevenly. */
    if (threads == 0)
        ASSERT_LT(th_now_ms() - t0, 1500);
}

/* Sends raw bytes and returns what came back (caller frees). */
static char *raw_exchange(unsigned port, const char *data, size_t len)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    char *out = sh_xcalloc(1, 65536);
    size_t got = 0;
    struct timeval tv = {5, 0};
    ASSERT(fd >= 0);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    ASSERT_EQ(setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)), 0);
    for (size_t off = 0; off < len;) {
        ssize_t w = send(fd, data + off, len - off, MSG_NOSIGNAL);
        if (w <= 0)
            break; /* the server may close early on garbage */
        off += (size_t)w;
    }
    (void)shutdown(fd, SHUT_WR);
    for (;;) {
        ssize_t r = recv(fd, out + got, 65535 - got, 0);
        if (r <= 0 || got + (size_t)r >= 65535)
            break;
        got += (size_t)r;
    }
    (void)close(fd);
    return out;
}

#define RAW(port, lit) raw_exchange(port, lit, sizeof(lit) - 1)

static void check_hostile_input(unsigned port)
{
    size_t n = 200 * 1024;
    char *huge = sh_xmalloc(n + 64);
    char *out;
    int off = snprintf(huge, 64, "GET /items HTTP/1.1\r\nHost: x\r\nX-Big: ");
    memset(huge + off, 'a', n - (size_t)off - 4);
    memcpy(huge + n - 4, "\r\n\r\n", 4);
    out = raw_exchange(port, huge, n);
    /* MHD refuses the oversized header block itself (431 or 413) */
    ASSERT(strncmp(out, "HTTP/1.1 4", 10) == 0 || out[0] == '\0');
    free(out);
    free(huge);

    out = RAW(port, "\x01\x02\x03 \xff\xfe garbage\r\n\r\n");
    ASSERT(out[0] == '\0' || strncmp(out, "HTTP/1.1 4", 10) == 0);
    free(out);
    out = RAW(port, "GET /items/%%%%%%%% HTTP/1.1\r\nHost: x\r\n\r\n");
    ASSERT_STR_CONTAINS(out, "HTTP/1.1 400");
    free(out);
    out = RAW(port, "GET http://x/items/q HTTP/1.1\r\nHost: x\r\n\r\n");
    ASSERT_STR_CONTAINS(out, "\"key\":\"q\"");
    free(out);
    out = RAW(port, "POST /items HTTP/1.1\r\nHost: x\r\nContent-Length: zz\r\n\r\n");
    ASSERT(strncmp(out, "HTTP/1.1 4", 10) == 0 || out[0] == '\0');
    free(out);
    /* a non-UTF-8 method name in the 405 message does not break the JSON error */
    out = RAW(port, "G\xc3(T /items HTTP/1.1\r\nHost: x\r\n\r\n");
    ASSERT(strncmp(out, "HTTP/1.1 4", 10) == 0 || out[0] == '\0');
    free(out);
    expect("GET", "/items", NULL, NULL, 200, NULL);
}

struct stop_arg {
    long status;
    char *body;
};

static void *inflight_worker(void *p)
{
    struct stop_arg *a = p;
    (void)th_http("GET", base, NULL, NULL, &a->status, &a->body, NULL);
    return NULL;
}

static void run_suite(unsigned threads)
{
    struct sh_metrics *m = sh_metrics_new();
    struct sh_http_server_opts o = {
        .service = "test",
        .bind_addr = "127.0.0.1",
        .port = 0,
        .threads = threads,
        .max_body = 1024,
        .api_token = "s3cret",
        .routes = routes,
        .arg = (void *)"ctx",
        .metrics = m,
        .health = health_fn,
        .health_arg = (void *)"hctx",
    };
    struct sh_err err;
    struct sh_http_server *s = sh_http_server_start(&o, &err);
    struct stop_arg sa = {0};
    pthread_t t;
    if (!s)
        CHECK_FAIL("server start: %s", err.msg);
    fprintf(stderr, "   threads=%u port=%u\n", threads, sh_http_server_port(s));
    sh_metric_set(sh_metrics_gauge(m, "app_custom", "Custom."), 7);
    ASSERT_GT(sh_http_server_port(s), 0);
    (void)snprintf(base, sizeof(base), "http://127.0.0.1:%u", sh_http_server_port(s));

    check_routing_and_errors();
    check_bodies_and_auth();
    check_health_metrics_blob();
    check_concurrency(threads);
    check_hostile_input(sh_http_server_port(s));

    /* stop lets a running request finish */
    (void)snprintf(base, sizeof(base), "http://127.0.0.1:%u/slow", sh_http_server_port(s));
    ASSERT_EQ(pthread_create(&t, NULL, inflight_worker, &sa), 0);
    (void)usleep(100000);
    sh_http_server_stop(s);
    ASSERT_EQ(pthread_join(t, NULL), 0);
    ASSERT_EQ(sa.status, 200);
    ASSERT_STR_EQ(sa.body, "slept");
    free(sa.body);
    sh_http_server_stop(NULL);
    sh_metrics_free(m);
}

static void test_server_thread_per_connection(void)
{
    run_suite(0);
}

static void test_server_thread_pool(void)
{
    run_suite(4);
}

static void test_open_write_routes_without_token_and_port_in_use(void)
{
    struct sh_http_server_opts o = {
        .bind_addr = "127.0.0.1", .routes = routes, .arg = (void *)"ctx"};
    struct sh_err err;
    struct sh_http_server *s = sh_http_server_start(&o, &err), *s2;
    ASSERT_NOT_NULL(s);
    (void)snprintf(base, sizeof(base), "http://127.0.0.1:%u", sh_http_server_port(s));
    expect("POST", "/items", NULL, "{}", 201, "{\"got\":{}}");
    /* /health without a health fn is healthy; /metrics works without a registry */
    expect("GET", "/health", NULL, NULL, 200, "{\"status\":\"ok\",\"checks\":{}}");
    expect("GET", "/metrics", NULL, NULL, 200, "scrapr_http_requests_total{route=\"/health\"");
    o.port = sh_http_server_port(s);
    s2 = sh_http_server_start(&o, &err);
    ASSERT_NULL(s2);
    ASSERT_EQ(err.code, SH_EIO);
    ASSERT_STR_CONTAINS(err.msg, "Address already in use");
    sh_http_server_stop(s);
}

static void test_bad_route_pattern_is_refused(void)
{
    const struct sh_http_route bad[] = {{"GET", "items", h_items, 0}, {NULL, NULL, NULL, 0}};
    struct sh_http_server_opts o = {.bind_addr = "127.0.0.1", .routes = bad};
    struct sh_err err;
    ASSERT_NULL(sh_http_server_start(&o, &err));
    ASSERT_EQ(err.code, SH_ECONFIG);
}

int main(void)
{
    shared_blob = sh_blob_copy("{\"blob\":true}", 13);
    RUN(test_server_thread_per_connection);
    RUN(test_server_thread_pool);
    RUN(test_open_write_routes_without_token_and_port_in_use);
    RUN(test_bad_route_pattern_is_refused);
    sh_blob_unref(shared_blob);
    return 0;
}
