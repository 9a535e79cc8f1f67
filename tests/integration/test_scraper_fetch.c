/* The scraper's fetcher against the fixture site (tests/fixtures/site/server.py
 * on a free loopback port): SSRF guard, robots.txt, Retry-After, backoff, body
 * cap, timeout, redirect bounds, conditional GET, gzip, headers, concurrency
 * and per-host rate limiting. */
#include <curl/curl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jansson.h>

#include "check.h"
#include "harness.h"
#include "shared/xalloc.h"
#include "scraper.h"

static char base[64];

static char *url(const char *path)
{
    size_t n = strlen(base) + strlen(path) + 1;
    char *u = malloc(n);
    ASSERT_NOT_NULL(u);
    snprintf(u, n, "%s%s", base, path);
    return u;
}

/* Requests the fixture server saw for path (exact, with query). */
static long hits(const char *path)
{
    char *esc = curl_easy_escape(NULL, path, 0);
    ASSERT_NOT_NULL(esc);
    char *q = malloc(strlen(esc) + 16);
    ASSERT_NOT_NULL(q);
    sprintf(q, "/hits?path=%s", esc);
    curl_free(esc);
    char *u = url(q);
    long status = 0;
    char *body = NULL;
    ASSERT_EQ(th_http("GET", u, NULL, NULL, &status, &body, NULL), 0);
    ASSERT_EQ(status, 200);
    json_t *j = json_loads(body, 0, NULL);
    ASSERT_NOT_NULL(j);
    long n = (long)json_integer_value(json_object_get(j, "hits"));
    json_decref(j);
    free(body);
    free(u);
    free(q);
    return n;
}

static struct scr_fetcher *fetcher(struct scr_fetch_opts o)
{
    struct sh_err err = {0};
    struct scr_fetcher *f = scr_fetcher_new(&o, &err);
    if (!f)
        CHECK_FAIL("scr_fetcher_new: %s", err.msg);
    return f;
}

static struct scr_fetch_opts open_opts(void)
{
    struct scr_fetch_opts o = {0};
    o.allow_private = 1;
    o.timeout_ms = 10000;
    o.max_redirects = -1;
    return o;
}

static int fetch(struct scr_fetcher *f, const char *path, struct scr_fetch_result *r)
{
    char *u = url(path);
    struct scr_fetch_req req = {.url = u};
    int out = scr_fetch_one(f, &req, r, NULL);
    free(u);
    return out;
}

static void test_ssrf_guard_refuses_loopback_without_env(void)
{
    struct scr_fetch_opts o = open_opts();
    o.allow_private = 0;
    struct scr_fetcher *f = fetcher(o);
    struct scr_fetch_result r;
    ASSERT_EQ(fetch(f, "/quotes/page1.html?ssrf=1", &r), SCR_FETCH_REFUSED);
    ASSERT_STR_CONTAINS(r.err.msg, "non-public address 127.0.0.1");
    scr_fetch_result_done(&r);
    /* a name that resolves to loopback is refused as well */
    const char *p = strrchr(base, ':');
    char *u = sh_xasprintf("http://localhost%s/quotes/page1.html?ssrf=2", p);
    struct scr_fetch_req req = {.url = u};
    ASSERT_EQ(scr_fetch_one(f, &req, &r, NULL), SCR_FETCH_REFUSED);
    scr_fetch_result_done(&r);
    free(u);
    /* the link-local metadata address is refused before any connection */
    struct scr_fetch_req md = {.url = "http://169.254.169.254/latest/meta-data/"};
    ASSERT_EQ(scr_fetch_one(f, &md, &r, NULL), SCR_FETCH_REFUSED);
    scr_fetch_result_done(&r);
    struct scr_fetch_req bad = {.url = "file:///etc/passwd"};
    ASSERT_EQ(scr_fetch_one(f, &bad, &r, NULL), SCR_FETCH_ERROR);
    ASSERT_STR_CONTAINS(r.err.msg, "scheme");
    scr_fetch_result_done(&r);
    ASSERT_EQ(hits("/quotes/page1.html?ssrf=1"), 0);
    ASSERT_EQ(hits("/quotes/page1.html?ssrf=2"), 0);
    ASSERT_EQ(scr_fetcher_stats(f)->refused, 3);
    scr_fetcher_free(f);
}

static void test_robots_txt_fetched_once_and_honoured(void)
{
    long before = hits("/robots.txt");
    struct scr_fetcher *f = fetcher(open_opts());
    char *u1 = url("/private/secret"), *u2 = url("/private/open/x"),
         *u3 = url("/quotes/page1.html");
    struct scr_fetch_req reqs[3] = {{.url = u1}, {.url = u2}, {.url = u3}};
    struct scr_fetch_result res[3];
    scr_fetch_many(f, reqs, 3, res, NULL);
    ASSERT_EQ(res[0].outcome, SCR_FETCH_ROBOTS_DENIED);
    ASSERT_EQ(res[1].outcome, SCR_FETCH_OK);
    ASSERT_EQ(res[1].status, 200);
    ASSERT_EQ(res[2].outcome, SCR_FETCH_OK);
    for (int i = 0; i < 3; i++)
        scr_fetch_result_done(&res[i]);
    /* a second batch uses the cached rules */
    ASSERT_EQ(scr_fetch_one(f, &reqs[0], &res[0], NULL), SCR_FETCH_ROBOTS_DENIED);
    scr_fetch_result_done(&res[0]);
    ASSERT_EQ(hits("/robots.txt") - before, 1);
    ASSERT_EQ(hits("/private/secret"), 0);
    scr_fetcher_free(f);
    /* robots can be switched off by configuration */
    struct scr_fetch_opts o = open_opts();
    o.ignore_robots = 1;
    f = fetcher(o);
    ASSERT_EQ(scr_fetch_one(f, &reqs[0], &res[0], NULL), SCR_FETCH_OK);
    ASSERT_EQ(res[0].status, 200);
    scr_fetch_result_done(&res[0]);
    scr_fetcher_free(f);
    free(u1);
    free(u2);
    free(u3);
}

static void test_429_retried_after_retry_after(void)
{
    struct scr_fetch_opts o = open_opts();
    o.retries = 2;
    o.backoff_ms = 10;
    struct scr_fetcher *f = fetcher(o);
    struct scr_fetch_result r;
    int64_t t0 = th_now_ms();
    ASSERT_EQ(fetch(f, "/ratelimited?k=ra1&n=1&ra=1", &r), SCR_FETCH_OK);
    int64_t el = th_now_ms() - t0;
    ASSERT_EQ(r.status, 200);
    ASSERT_EQ(r.attempts, 2);
    ASSERT_GE(el, 950); /* waited the server's Retry-After, not our 10 ms backoff */
    ASSERT_STR_CONTAINS(r.body, "after 2");
    scr_fetch_result_done(&r);
    scr_fetcher_free(f);
    /* without retries the 429 is the final answer */
    o.retries = 0;
    f = fetcher(o);
    ASSERT_EQ(fetch(f, "/ratelimited?k=ra2&n=1&ra=1", &r), SCR_FETCH_OK);
    ASSERT_EQ(r.status, 429);
    ASSERT_EQ(r.attempts, 1);
    scr_fetch_result_done(&r);
    scr_fetcher_free(f);
}

static void test_503_retried_with_backoff(void)
{
    struct scr_fetch_opts o = open_opts();
    o.retries = 3;
    o.backoff_ms = 40;
    struct scr_fetcher *f = fetcher(o);
    struct scr_fetch_result r;
    int64_t t0 = th_now_ms();
    ASSERT_EQ(fetch(f, "/unavailable?k=b1&n=2", &r), SCR_FETCH_OK);
    int64_t el = th_now_ms() - t0;
    ASSERT_EQ(r.status, 200);
    ASSERT_EQ(r.attempts, 3);
    ASSERT_GE(el, 20 + 40); /* at least half of 40 then half of 80 */
    scr_fetch_result_done(&r);
    scr_fetcher_free(f);
}

static void test_body_cap_aborts_huge_page(void)
{
    struct scr_fetch_opts o = open_opts();
    o.max_body = 1 << 20;
    struct scr_fetcher *f = fetcher(o);
    struct scr_fetch_result r;
    int64_t t0 = th_now_ms();
    ASSERT_EQ(fetch(f, "/huge?mb=50", &r), SCR_FETCH_ERROR);
    ASSERT_EQ(r.err.code, SH_ELIMIT);
    ASSERT_STR_CONTAINS(r.err.msg, "exceeds");
    ASSERT_NULL(r.body);
    ASSERT_LT(th_now_ms() - t0, 5000);
    scr_fetch_result_done(&r);
    ASSERT_LE(scr_fetcher_stats(f)->bytes, 1 << 20);
    scr_fetcher_free(f);
}

static void test_timeout_ends_slow_request(void)
{
    struct scr_fetch_opts o = open_opts();
    o.timeout_ms = 500;
    struct scr_fetcher *f = fetcher(o);
    struct scr_fetch_result r;
    int64_t t0 = th_now_ms();
    ASSERT_EQ(fetch(f, "/slow?s=5", &r), SCR_FETCH_ERROR);
    ASSERT_EQ(r.err.code, SH_ETIMEOUT);
    ASSERT_LT(th_now_ms() - t0, 2500);
    scr_fetch_result_done(&r);
    scr_fetcher_free(f);
}

static void test_redirect_loop_bounded_and_chain_followed(void)
{
    long a0 = hits("/loop/a"), b0 = hits("/loop/b");
    struct scr_fetch_opts o = open_opts();
    o.max_redirects = 5;
    struct scr_fetcher *f = fetcher(o);
    struct scr_fetch_result r;
    ASSERT_EQ(fetch(f, "/loop/a", &r), SCR_FETCH_ERROR);
    ASSERT_EQ(r.err.code, SH_ELIMIT);
    ASSERT_STR_CONTAINS(r.err.msg, "more than 5 redirects");
    ASSERT_EQ(r.redirects, 5);
    scr_fetch_result_done(&r);
    ASSERT_EQ((hits("/loop/a") - a0) + (hits("/loop/b") - b0), 6);
    ASSERT_EQ(fetch(f, "/redirect-chain?n=3", &r), SCR_FETCH_OK);
    ASSERT_EQ(r.status, 200);
    ASSERT_EQ(r.redirects, 3);
    ASSERT_STR_CONTAINS(r.url, "/redirect-chain?n=0");
    ASSERT_STR_CONTAINS(r.body, "end of chain");
    scr_fetch_result_done(&r);
    scr_fetcher_free(f);
}

static void test_redirect_to_private_target_is_rechecked(void)
{
    /* The guard is on, with one exception: this fixture site's exact
     * host:port. Redirect hops to other private targets are each checked and
     * refused before any connection. */
    char self[32];
    snprintf(self, sizeof(self), "127.0.0.1:%s", strrchr(base, ':') + 1);
    const char *allow[] = {self, NULL};
    struct scr_fetch_opts o = open_opts();
    o.allow_private = 0;
    o.allow_targets = allow;
    struct scr_fetcher *f = fetcher(o);
    struct scr_fetch_result r;
    ASSERT_EQ(fetch(f, "/quotes/page1.html?exempt=1", &r), SCR_FETCH_OK);
    ASSERT_EQ(r.status, 200);
    scr_fetch_result_done(&r);
    ASSERT_EQ(fetch(f, "/redirect?to=http://169.254.169.254/latest/meta-data/", &r),
              SCR_FETCH_REFUSED);
    ASSERT_EQ(r.redirects, 1);
    ASSERT_STR_CONTAINS(r.err.msg, "169.254.169.254");
    scr_fetch_result_done(&r);
    char *to = sh_xasprintf("/redirect?to=http://localhost:%s/quotes/page1.html?hop=1",
                            strrchr(base, ':') + 1);
    ASSERT_EQ(fetch(f, to, &r), SCR_FETCH_REFUSED);
    scr_fetch_result_done(&r);
    free(to);
    ASSERT_EQ(hits("/quotes/page1.html?hop=1"), 0);
    scr_fetcher_free(f);
}

static void test_conditional_get_gives_not_modified(void)
{
    struct scr_fetcher *f = fetcher(open_opts());
    struct scr_fetch_result r;
    ASSERT_EQ(fetch(f, "/etag?k=c1", &r), SCR_FETCH_OK);
    ASSERT_EQ(r.status, 200);
    ASSERT_STR_EQ(r.etag, "\"v1\"");
    ASSERT_STR_EQ(r.last_modified, "Sun, 01 Nov 2026 10:00:00 GMT");
    char *etag = strdup(r.etag);
    scr_fetch_result_done(&r);
    char *u = url("/etag?k=c1");
    struct scr_fetch_req req = {.url = u, .etag = etag};
    ASSERT_EQ(scr_fetch_one(f, &req, &r, NULL), SCR_FETCH_NOT_MODIFIED);
    ASSERT_EQ(r.status, 304);
    ASSERT_NULL(r.body);
    scr_fetch_result_done(&r);
    free(u);
    free(etag);
    scr_fetcher_free(f);
}

static void test_gzip_decoded_and_headers_sent(void)
{
    const char *hdrs[] = {"X-Scrapr-Test: yes", NULL};
    struct scr_fetch_opts o = open_opts();
    o.headers = hdrs;
    o.cookies = "session=abc; lang=en";
    o.user_agent = "scrapr-test/1.0";
    struct scr_fetcher *f = fetcher(o);
    struct scr_fetch_result r;
    ASSERT_EQ(fetch(f, "/gzip", &r), SCR_FETCH_OK);
    ASSERT_STR_CONTAINS(r.body, "zipped");
    ASSERT_GT(r.body_len, 200 * 20);
    scr_fetch_result_done(&r);
    ASSERT_EQ(fetch(f, "/echo", &r), SCR_FETCH_OK);
    json_t *j = json_loads(r.body, 0, NULL);
    ASSERT_NOT_NULL(j);
    ASSERT_STR_EQ(json_string_value(json_object_get(j, "user-agent")), "scrapr-test/1.0");
    ASSERT_STR_EQ(json_string_value(json_object_get(j, "cookie")), "session=abc; lang=en");
    ASSERT_STR_EQ(json_string_value(json_object_get(j, "x-scrapr-test")), "yes");
    ASSERT_STR_CONTAINS(json_string_value(json_object_get(j, "accept-encoding")), "gzip");
    json_decref(j);
    scr_fetch_result_done(&r);
    scr_fetcher_free(f);
}

static void test_many_in_parallel_and_rate_limited(void)
{
    struct scr_fetch_opts o = open_opts();
    o.max_concurrency = 10;
    struct scr_fetcher *f = fetcher(o);
    enum { N = 10 };
    char *urls[N];
    struct scr_fetch_req reqs[N];
    struct scr_fetch_result res[N];
    for (int i = 0; i < N; i++) {
        char p[64];
        snprintf(p, sizeof(p), "/slow?s=0.6&i=%d", i);
        urls[i] = url(p);
        reqs[i] = (struct scr_fetch_req){.url = urls[i]};
    }
    int64_t t0 = th_now_ms();
    scr_fetch_many(f, reqs, N, res, NULL);
    int64_t el = th_now_ms() - t0;
    for (int i = 0; i < N; i++) {
        ASSERT_EQ(res[i].outcome, SCR_FETCH_OK);
        ASSERT_EQ(res[i].status, 200);
        scr_fetch_result_done(&res[i]);
    }
    ASSERT_LT(el, 3000); /* serial would take 6 s */
    scr_fetcher_free(f);

    /* 5 requests/s with a burst of 2: 6 requests need >= (6-2)/5 s */
    o = open_opts();
    o.rate = 5;
    o.burst = 2;
    for (int i = 0; i < 6; i++) {
        free(urls[i]);
        char p[64];
        snprintf(p, sizeof(p), "/quotes/page1.html?rate=%d", i);
        urls[i] = url(p);
        reqs[i] = (struct scr_fetch_req){.url = urls[i]};
    }
    o.ignore_robots = 1; /* so robots.txt takes no token */
    f = fetcher(o);
    t0 = th_now_ms();
    scr_fetch_many(f, reqs, 6, res, NULL);
    el = th_now_ms() - t0;
    for (int i = 0; i < 6; i++) {
        ASSERT_EQ(res[i].outcome, SCR_FETCH_OK);
        scr_fetch_result_done(&res[i]);
    }
    ASSERT_GE(el, 750);
    ASSERT_LT(el, 3000);
    for (int i = 0; i < N; i++)
        free(urls[i]);
    scr_fetcher_free(f);
}

static int always_stop(void)
{
    return 1;
}

static void test_stop_flag_ends_batch(void)
{
    struct scr_fetcher *f = fetcher(open_opts());

    char *u = url("/slow?s=3&stop=1");
    struct scr_fetch_req req = {.url = u};
    struct scr_fetch_result r;
    int64_t t0 = th_now_ms();
    scr_fetch_many(f, &req, 1, &r, always_stop);
    ASSERT_EQ(r.outcome, SCR_FETCH_ERROR);
    ASSERT_STR_CONTAINS(r.err.msg, "stopped");
    ASSERT_LT(th_now_ms() - t0, 1000);
    scr_fetch_result_done(&r);
    free(u);
    scr_fetcher_free(f);
}

int main(void)
{
    const char *src = getenv("SCRAPR_SOURCE_DIR");
    char *script = sh_xasprintf("%s/tests/fixtures/site/server.py", src ? src : ".");
    unsigned port = th_free_port();
    char ports[16];
    snprintf(ports, sizeof(ports), "%u", port);
    const char *argv[] = {"python3", script, ports, NULL};
    pid_t pid = th_spawn(argv, NULL);
    snprintf(base, sizeof(base), "http://127.0.0.1:%u", port);
    char *probe = url("/robots.txt?probe");
    if (th_wait_http(probe, 10000) < 0)
        CHECK_FAIL("fixture site did not start: %s", th_log_read(pid));
    free(probe);

    RUN(test_ssrf_guard_refuses_loopback_without_env);
    RUN(test_robots_txt_fetched_once_and_honoured);
    RUN(test_429_retried_after_retry_after);
    RUN(test_503_retried_with_backoff);
    RUN(test_body_cap_aborts_huge_page);
    RUN(test_timeout_ends_slow_request);
    RUN(test_redirect_loop_bounded_and_chain_followed);
    RUN(test_redirect_to_private_target_is_rechecked);
    RUN(test_conditional_get_gives_not_modified);
    RUN(test_gzip_decoded_and_headers_sent);
    RUN(test_many_in_parallel_and_rate_limited);
    RUN(test_stop_flag_ends_batch);

    (void)th_kill(pid, SIGTERM);
    free(script);
    curl_global_cleanup();
    return 0;
}
