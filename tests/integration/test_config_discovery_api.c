/* scrapr-config-discovery over HTTP against the test bed's FerretDB and
 * Consul: CRUD and filters, PUT/DELETE rules, every bad-input class with its
 * status and message, the claim race (20 claimers, 10 configurations), the
 * Consul revision bump seen by a blocking query, endpoint auto-creation
 * exactly once across kill -9 + restart and with two replicas, and /health
 * following a private FerretDB that goes down and comes back.
 * Each test has its own database and its own revision key. */
#include "check.h"
#include "harness.h"

#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "shared/xalloc.h"

#define TOKEN "t0ken-for-tests"

struct svc {
    pid_t pid;
    unsigned port;
    char base[64];
};

/* Every process this test started, killed at exit so that a failed assert
 * (exit(1)) leaves no service behind. */
static pid_t started[64];
static size_t nstarted;

static void kill_started(void)
{
    for (size_t i = 0; i < nstarted; i++)
        (void)kill(started[i], SIGKILL);
}

static pid_t track(pid_t pid)
{
    if (nstarted < sizeof(started) / sizeof(started[0]))
        started[nstarted++] = pid;
    return pid;
}

/* Starts the service on db (port 0 = a free one); extra: more env or NULL. */
static void svc_start(struct svc *s, const char *db, const char *revkey, unsigned port,
                      const char *extra)
{
    char *bin = th_bin("scrapr-config-discovery");
    char *mongo = th_mongo_url(db);
    char env_mongo[512], env_port[32], env_key[256];
    const char *argv[] = {bin, NULL};
    const char *env[] = {env_mongo,
                         env_port,
                         "SCRAPR_API_TOKEN=" TOKEN,
                         "SERVICE_ADDRESS=127.0.0.1",
                         env_key,
                         "SCRAPR_CD_GAP_GRACE_MS=500",
                         "LOG_LEVEL=debug",
                         extra,
                         NULL};
    char *health;

    s->port = port ? port : th_free_port();
    (void)snprintf(env_mongo, sizeof(env_mongo), "MONGO_URL=%s", mongo);
    (void)snprintf(env_port, sizeof(env_port), "PORT=%u", s->port);
    (void)snprintf(env_key, sizeof(env_key), "SCRAPR_CD_REVISION_KEY=%s", revkey);
    (void)snprintf(s->base, sizeof(s->base), "http://127.0.0.1:%u", s->port);
    s->pid = track(th_spawn(argv, env));
    health = sh_xasprintf("%s/health", s->base);
    if (th_wait_http(health, 20000) != 0)
        CHECK_FAIL("config-discovery did not answer on %s; log:\n%s", s->base, th_log_read(s->pid));
    free(health);
    free(mongo);
    free(bin);
}

struct reply {
    long status;
    char *body;
    char *headers;
    json_t *json;
};

static void reply_done(struct reply *r)
{
    free(r->body);
    free(r->headers);
    json_decref(r->json);
    memset(r, 0, sizeof(*r));
}

/* token: NULL = none. Returns -1 on a transport error (r untouched). */
static int call(const struct svc *s, const char *method, const char *path, const char *body,
                const char *token, struct reply *r)
{
    char auth[128];
    const char *headers[3] = {"Content-Type: application/json", NULL, NULL};
    char *url = sh_xasprintf("%s%s", s->base, path);
    int rc;

    memset(r, 0, sizeof(*r));
    if (token) {
        (void)snprintf(auth, sizeof(auth), "Authorization: Bearer %s", token);
        headers[1] = auth;
    }
    rc = th_http(method, url, headers, body, &r->status, &r->body, &r->headers);
    free(url);
    if (rc == 0 && r->body && *r->body)
        r->json = json_loads(r->body, 0, NULL);
    return rc;
}

static void must(const struct svc *s, const char *method, const char *path, const char *body,
                 long want, struct reply *r)
{
    if (call(s, method, path, body, TOKEN, r) != 0)
        CHECK_FAIL("%s %s: transport error", method, path);
    if (r->status != want)
        CHECK_FAIL("%s %s: status %ld, want %ld; body %s", method, path, r->status, want,
                   r->body ? r->body : "");
}

static const char *jstr(const json_t *j, const char *key)
{
    return json_string_value(json_object_get(j, key));
}

static char *post_config(const struct svc *s, const char *collection, int ttl)
{
    struct reply r;
    char *body = sh_xasprintf("{\"collection\":\"%s\",\"ttl\":%d,\"source\":{\"url\":"
                              "\"http://127.0.0.1:9/\"},\"fields\":{\"title\":\"h1\"}}",
                              collection, ttl);
    char *id;
    must(s, "POST", "/configurations", body, 201, &r);
    id = sh_xstrdup(jstr(r.json, "_id"));
    reply_done(&r);
    free(body);
    return id;
}

static long total(const struct svc *s, const char *query)
{
    struct reply r;
    char *path = sh_xasprintf("/configurations?%s", query);
    long n;
    must(s, "GET", path, NULL, 200, &r);
    n = (long)json_integer_value(json_object_get(r.json, "total"));
    reply_done(&r);
    free(path);
    return n;
}

static void test_crud_filters_and_endpoint_lifecycle(void)
{
    char *db = th_unique("t_cda_crud"), *key = th_unique("t/rev"), *a, *b, *c, *path;
    struct svc s;
    struct reply r;
    json_t *list, *item;
    size_t i;

    svc_start(&s, db, key, 0, NULL);
    a = post_config(&s, "quotes", 30);
    b = post_config(&s, "quotes", 60);
    c = post_config(&s, "books", 45);

    /* GET by id */
    path = sh_xasprintf("/configurations/%s", a);
    must(&s, "GET", path, NULL, 200, &r);
    ASSERT_STR_EQ(jstr(r.json, "_id"), a);
    ASSERT_STR_EQ(jstr(r.json, "type"), "scraper");
    ASSERT_STR_EQ(jstr(r.json, "collection"), "quotes");
    ASSERT(json_is_null(json_object_get(r.json, "container")));
    ASSERT_EQ(json_integer_value(json_object_get(r.json, "version")), 1);
    ASSERT_EQ(json_integer_value(json_object_get(r.json, "ttl")), 30);
    ASSERT_STR_EQ(jstr(json_object_get(r.json, "fields"), "title"), "h1");
    reply_done(&r);

    /* filters */
    ASSERT_EQ(total(&s, "type=scraper"), 3);
    ASSERT_EQ(total(&s, "type=endpoint"), 2);
    ASSERT_EQ(total(&s, "collection=quotes"), 3);
    ASSERT_EQ(total(&s, "type=endpoint&collection=books"), 1);
    ASSERT_EQ(total(&s, "container=null"), 5);
    must(&s, "GET", "/configurations?type=scraper&limit=2&skip=1", NULL, 200, &r);
    ASSERT_EQ(json_integer_value(json_object_get(r.json, "total")), 3);
    list = json_object_get(r.json, "configurations");
    ASSERT_EQ(json_array_size(list), 2);
    ASSERT_STR_EQ(jstr(json_array_get(list, 0), "_id"), b);
    ASSERT_STR_EQ(jstr(json_array_get(list, 1), "_id"), c);
    reply_done(&r);
    must(&s, "GET", "/configurations?type=endpoint", NULL, 200, &r);
    json_array_foreach(json_object_get(r.json, "configurations"), i, item)
    {
        ASSERT_STR_EQ(jstr(item, "type"), "endpoint");
        if (strcmp(jstr(item, "collection"), "quotes") == 0)
            ASSERT_EQ(json_integer_value(json_object_get(item, "ttl")), 30);
    }
    reply_done(&r);

    /* PUT: full replace, version bump, container recorded, _id/created_at kept */
    must(&s, "GET", path, NULL, 200, &r);
    char *created = sh_xstrdup(jstr(r.json, "created_at"));
    reply_done(&r);
    must(&s, "PUT", path,
         "{\"collection\":\"quotes\",\"ttl\":90,\"source\":{\"url\":\"http://127.0.0.1:9/q\"},"
         "\"fields\":{\"name\":\"h2\"},\"container\":\"scraper-1\"}",
         200, &r);
    ASSERT_EQ(json_integer_value(json_object_get(r.json, "version")), 2);
    ASSERT_EQ(json_integer_value(json_object_get(r.json, "ttl")), 90);
    ASSERT_STR_EQ(jstr(r.json, "container"), "scraper-1");
    ASSERT_STR_EQ(jstr(r.json, "_id"), a);
    ASSERT_STR_EQ(jstr(r.json, "created_at"), created);
    /* full replace */
    ASSERT_NULL(json_object_get(json_object_get(r.json, "fields"), "title"));
    ASSERT_STR_EQ(jstr(json_object_get(r.json, "fields"), "name"), "h2");
    reply_done(&r);
    ASSERT_EQ(total(&s, "container=scraper-1"), 1);
    ASSERT_EQ(total(&s, "container=null"), 4);
    /* without "container" the assignment stays; with If-Match a stale version is 409 */
    must(&s, "PUT", path,
         "{\"collection\":\"quotes\",\"ttl\":91,\"source\":{\"url\":\"http://x/"
         "\"},\"fields\":{\"a\":\"b\"}}",
         200, &r);
    ASSERT_STR_EQ(jstr(r.json, "container"), "scraper-1");
    ASSERT_EQ(json_integer_value(json_object_get(r.json, "version")), 3);
    reply_done(&r);
    must(&s, "PUT", path,
         "{\"collection\":\"quotes\",\"ttl\":92,\"version\":2,\"source\":{\"url\":\"http://x/"
         "\"},\"fields\":{\"a\":\"b\"}}",
         409, &r);
    ASSERT_STR_CONTAINS(jstr(r.json, "error"), "version");
    reply_done(&r);

    /* DELETE: the endpoint config stays while quotes has a scraper config,
     * and cannot be deleted by itself; it goes with the last one. */
    must(&s, "DELETE", path, NULL, 204, &r);
    reply_done(&r);
    must(&s, "GET", path, NULL, 404, &r);
    reply_done(&r);
    ASSERT_EQ(total(&s, "type=endpoint&collection=quotes"), 1);
    must(&s, "GET", "/configurations?type=endpoint&collection=quotes", NULL, 200, &r);
    char *ep =
        sh_xasprintf("/configurations/%s",
                     jstr(json_array_get(json_object_get(r.json, "configurations"), 0), "_id"));
    reply_done(&r);
    must(&s, "DELETE", ep, NULL, 409, &r);
    ASSERT_STR_CONTAINS(jstr(r.json, "error"), "still has scraper configurations");
    reply_done(&r);
    /* the orchestrator records the endpoint's public URL */
    must(&s, "PUT", ep, "{\"collection\":\"quotes\",\"ttl\":30,\"url\":\"http://quotes.local/\"}",
         200, &r);
    ASSERT_STR_EQ(jstr(r.json, "url"), "http://quotes.local/");
    ASSERT_STR_EQ(jstr(r.json, "type"), "endpoint");
    reply_done(&r);
    free(path);
    path = sh_xasprintf("/configurations/%s", b);
    must(&s, "DELETE", path, NULL, 204, &r);
    reply_done(&r);
    ASSERT_EQ(total(&s, "collection=quotes"), 0);
    ASSERT_EQ(total(&s, "collection=books"), 2);
    must(&s, "DELETE", path, NULL, 404, &r);
    reply_done(&r);

    ASSERT_EQ(th_kill(s.pid, SIGTERM), 0);
    free(ep);
    free(created);
    free(path);
    free(a);
    free(b);
    free(c);
    free(db);
    free(key);
}

static void expect_error(const struct svc *s, const char *method, const char *path,
                         const char *body, const char *token, long status, const char *in_error,
                         const char *in_details)
{
    struct reply r;
    char *details;
    if (call(s, method, path, body, token, &r) != 0)
        CHECK_FAIL("%s %s: transport error", method, path);
    if (r.status != status)
        CHECK_FAIL("%s %s: status %ld, want %ld; body %s", method, path, r.status, status,
                   r.body ? r.body : "");
    ASSERT_NOT_NULL(r.json);
    ASSERT_STR_CONTAINS(jstr(r.json, "error"), in_error);
    ASSERT(json_is_array(json_object_get(r.json, "details")));
    if (in_details) {
        details = json_dumps(json_object_get(r.json, "details"), JSON_COMPACT);
        ASSERT_STR_CONTAINS(details, in_details);
        free(details);
    }
    reply_done(&r);
}

static void test_bad_input_gets_a_clear_4xx(void)
{
    char *db = th_unique("t_cda_bad"), *key = th_unique("t/rev"), *id, *path, *big;
    struct svc s;
    size_t n = 8192;

    svc_start(&s, db, key, 0, "SCRAPR_CD_MAX_BODY=4096");
    id = post_config(&s, "bad", 30);
    path = sh_xasprintf("/configurations/%s", id);

    /* invalid configuration: every problem with its JSON path */
    expect_error(&s, "POST", "/configurations", "{\"ttl\":5}", TOKEN, 400, "invalid configuration",
                 "\"path\":\"$.collection\"");
    expect_error(&s, "POST", "/configurations",
                 "{\"collection\":\"x\",\"_id\":\"abc\",\"type\":\"endpoint\"}", TOKEN, 400,
                 "invalid configuration", "\"path\":\"$.type\"");
    expect_error(&s, "POST", "/configurations", "[1,2]", TOKEN, 400, "JSON object", NULL);
    /* malformed JSON: line and column */
    expect_error(&s, "POST", "/configurations", "{\n  \"collection\": \"x\",\n  oops\n}", TOKEN,
                 400, "line 3", NULL);
    expect_error(&s, "PUT", path, "{\"collection\":", TOKEN, 400, "column", NULL);
    expect_error(&s, "POST", "/configurations", "", TOKEN, 400, "empty", NULL);
    /* too big */
    big = sh_xmalloc(n + 1);
    memset(big, ' ', n);
    big[0] = '{';
    memcpy(big + n - 20, "\"collection\":\"x\"}  ", 19);
    big[n - 1] = '\0';
    expect_error(&s, "POST", "/configurations", big, TOKEN, 413, "", NULL);
    free(big);
    /* token */
    expect_error(&s, "POST", "/configurations", "{\"collection\":\"x\"}", NULL, 401, "Bearer",
                 NULL);
    expect_error(&s, "POST", "/configurations", "{\"collection\":\"x\"}", "wrong", 401, "", NULL);
    expect_error(&s, "DELETE", path, NULL, NULL, 401, "", NULL);
    expect_error(&s, "POST", "/configurations/claim", "{\"type\":\"scraper\",\"container\":\"c\"}",
                 "wrong", 401, "", NULL);
    /* bad ids */
    expect_error(&s, "GET", "/configurations/not-an-id", NULL, TOKEN, 400, "24 hexadecimal", NULL);
    expect_error(&s, "PUT", "/configurations/123", "{\"collection\":\"x\"}", TOKEN, 400,
                 "24 hexadecimal", NULL);
    expect_error(&s, "DELETE", "/configurations/zzzzzzzzzzzzzzzzzzzzzzzz", NULL, TOKEN, 400,
                 "24 hexadecimal", NULL);
    expect_error(&s, "GET", "/configurations/00000000000000000000000a", NULL, TOKEN, 404,
                 "no configuration", NULL);
    expect_error(&s, "PUT", "/configurations/00000000000000000000000a", "{\"collection\":\"x\"}",
                 TOKEN, 404, "no configuration", NULL);
    expect_error(&s, "DELETE", "/configurations/00000000000000000000000a", NULL, TOKEN, 404,
                 "no configuration", NULL);
    /* PUT rules */
    expect_error(&s, "PUT", path, "{\"collection\":\"bad\",\"type\":\"endpoint\"}", TOKEN, 400,
                 "invalid configuration", "cannot change");
    expect_error(&s, "PUT", path, "{\"collection\":\"bad\",\"_id\":\"00000000000000000000000a\"}",
                 TOKEN, 400, "invalid configuration", "does not match");
    expect_error(&s, "PUT", path, "{\"collection\":\"bad\",\"container\":5}", TOKEN, 400,
                 "invalid configuration", "$.container");
    /* list query */
    expect_error(&s, "GET", "/configurations?limit=5000", NULL, NULL, 400, "invalid query",
                 "\"path\":\"limit\"");
    expect_error(&s, "GET", "/configurations?limit=abc&skip=-1&type=robot&colection=x", NULL, NULL,
                 400, "invalid query", "colection");
    /* claim body */
    expect_error(&s, "POST", "/configurations/claim", "{\"type\":\"robot\"}", TOKEN, 400,
                 "invalid claim", "$.container");
    expect_error(&s, "POST", "/configurations/claim", "{\"type\":", TOKEN, 400, "line 1", NULL);

    ASSERT_EQ(th_kill(s.pid, SIGTERM), 0);
    free(path);
    free(id);
    free(db);
    free(key);
}

struct claimer {
    const struct svc *s;
    int idx;
    long status;
    char id[25];
};

static void *claim_thread(void *arg)
{
    struct claimer *c = arg;
    struct reply r;
    char body[128];
    (void)snprintf(body, sizeof(body), "{\"type\":\"scraper\",\"container\":\"runner-%d\"}",
                   c->idx);
    if (call(c->s, "POST", "/configurations/claim", body, TOKEN, &r) != 0)
        CHECK_FAIL("claim: transport error");
    c->status = r.status;
    if (r.status == 200)
        (void)snprintf(c->id, sizeof(c->id), "%s", jstr(r.json, "_id"));
    reply_done(&r);
    return NULL;
}

static void test_claim_assigns_each_config_once(void)
{
    char *db = th_unique("t_cda_claim"), *key = th_unique("t/rev");
    struct svc s;
    struct claimer cl[20];
    pthread_t th[20];
    int winners = 0, empty = 0;

    svc_start(&s, db, key, 0, NULL);
    for (int i = 0; i < 10; i++)
        free(post_config(&s, "claims", 60));
    for (int i = 0; i < 20; i++) {
        cl[i] = (struct claimer){.s = &s, .idx = i};
        ASSERT_EQ(pthread_create(&th[i], NULL, claim_thread, &cl[i]), 0);
    }
    for (int i = 0; i < 20; i++)
        ASSERT_EQ(pthread_join(th[i], NULL), 0);
    for (int i = 0; i < 20; i++) {
        if (cl[i].status == 204) {
            empty++;
            continue;
        }
        ASSERT_EQ(cl[i].status, 200);
        winners++;
        for (int j = 0; j < i; j++)
            if (cl[j].status == 200 && strcmp(cl[i].id, cl[j].id) == 0)
                CHECK_FAIL("configuration %s claimed by runner-%d and runner-%d", cl[i].id, j, i);
    }
    ASSERT_EQ(winners, 10);
    ASSERT_EQ(empty, 10);
    ASSERT_EQ(total(&s, "type=scraper&container=null"), 0);
    for (int i = 0; i < 20; i++) {
        if (cl[i].status == 200) {
            char q[64];
            (void)snprintf(q, sizeof(q), "container=runner-%d", i);
            ASSERT_EQ(total(&s, q), 1);
        }
    }
    /* the endpoint configuration is claimable by its own type */
    {
        struct reply r;
        must(&s, "POST", "/configurations/claim", "{\"type\":\"endpoint\",\"container\":\"ep-1\"}",
             200, &r);
        ASSERT_STR_EQ(jstr(r.json, "type"), "endpoint");
        ASSERT_STR_EQ(jstr(r.json, "container"), "ep-1");
        reply_done(&r);
        must(&s, "POST", "/configurations/claim", "{\"type\":\"endpoint\",\"container\":\"ep-2\"}",
             204, &r);
        reply_done(&r);
    }
    ASSERT_EQ(th_kill(s.pid, SIGTERM), 0);
    free(db);
    free(key);
}

/* Current value and X-Consul-Index of key; value 0 when absent. */
static long long kv_get(const char *consul, const char *key, unsigned long long wait_index,
                        unsigned long long *ret_index)
{
    char *url = wait_index ? sh_xasprintf("http://%s/v1/kv/%s?raw&index=%llu&wait=10s", consul, key,
                                          wait_index)
                           : sh_xasprintf("http://%s/v1/kv/%s?raw", consul, key);
    long status = 0;
    char *body = NULL, *headers = NULL, *idx;
    long long v = 0;

    if (th_http("GET", url, NULL, NULL, &status, &body, &headers) != 0)
        CHECK_FAIL("consul GET %s failed", url);
    if (status == 200)
        v = strtoll(body, NULL, 10);
    else if (status != 404)
        CHECK_FAIL("consul GET %s: %ld %s", url, status, body);
    idx = th_header(headers, "X-Consul-Index");
    ASSERT_NOT_NULL(idx);
    *ret_index = strtoull(idx, NULL, 10);
    free(idx);
    free(body);
    free(headers);
    free(url);
    return v;
}

static void test_every_change_bumps_the_consul_revision(void)
{
    const char *consul = getenv("CONSUL_HTTP_ADDR");
    char *db = th_unique("t_cda_rev"), *key = th_unique("t/rev"), *id, *path;
    struct svc s;
    struct reply r;
    unsigned long long idx;
    long long before, v;
    int64_t t0;

    svc_start(&s, db, key, 0, NULL);
    before = kv_get(consul, key, 0, &idx);
    id = post_config(&s, "rev", 30);
    /* a blocking query wakes up with the new revision (no polling) */
    t0 = th_now_ms();
    v = kv_get(consul, key, idx, &idx);
    while (v <= before && th_now_ms() - t0 < 10000)
        v = kv_get(consul, key, idx, &idx);
    ASSERT_GT(v, before);
    ASSERT_LT(th_now_ms() - t0, 5000);

    /* PUT, claim and DELETE each bump it again */
    path = sh_xasprintf("/configurations/%s", id);
    const char *changes[][3] = {
        {"PUT", "x",
         "{\"collection\":\"rev\",\"ttl\":5,\"source\":{\"url\":\"http://x/"
         "\"},\"fields\":{\"a\":\"b\"}}"},
        {"POST", "/configurations/claim", "{\"type\":\"scraper\",\"container\":\"c\"}"},
        {"DELETE", "x", NULL},
    };
    for (size_t i = 0; i < 3; i++) {
        long long prev = v;
        const char *p = strcmp(changes[i][1], "x") == 0 ? path : changes[i][1];
        must(&s, changes[i][0], p, changes[i][2], strcmp(changes[i][0], "DELETE") == 0 ? 204 : 200,
             &r);
        reply_done(&r);
        t0 = th_now_ms();
        while (v <= prev && th_now_ms() - t0 < 10000)
            v = kv_get(consul, key, idx, &idx);
        if (v <= prev)
            CHECK_FAIL("%s did not bump the revision (still %lld)", changes[i][0], v);
    }
    ASSERT_EQ(th_kill(s.pid, SIGTERM), 0);
    free(path);
    free(id);
    free(db);
    free(key);
}

static void test_consul_down_is_survived_and_the_bump_retried(void)
{
    unsigned cport = 0;
    pid_t consul = track(th_consul_start(&cport));
    char *db = th_unique("t_cda_cdown"), *key = th_unique("t/rev"), *id, caddr[64], env[128];
    struct svc s;
    unsigned long long idx;
    long long v = 0;
    int64_t t0;

    (void)snprintf(caddr, sizeof(caddr), "127.0.0.1:%u", cport);
    (void)snprintf(env, sizeof(env), "CONSUL_HTTP_ADDR=%s", caddr);
    svc_start(&s, db, key, 0, env);
    ASSERT_EQ(th_kill(consul, SIGKILL), 128 + SIGKILL);
    /* writes keep working while Consul is down */
    id = post_config(&s, "cdown", 30);
    free(id);
    consul = track(th_consul_start(&cport));
    /* the pending bump arrives once Consul is back (dev agent: empty KV) */
    t0 = th_now_ms();
    while (v < 1 && th_now_ms() - t0 < 15000) {
        v = kv_get(caddr, key, 0, &idx);
        if (v < 1)
            usleep(200000);
    }
    ASSERT_GE(v, 1);
    ASSERT_EQ(th_kill(s.pid, SIGTERM), 0);
    (void)th_kill(consul, SIGTERM);
    free(db);
    free(key);
}

struct poster {
    const struct svc *s;
    int n, offset;
    char **ids; /* accepted ids (201) */
    volatile int accepted, failed;
    volatile int *stop;
};

static void *post_thread(void *arg)
{
    struct poster *p = arg;
    for (int i = 0; i < p->n && !*p->stop; i++) {
        struct reply r;
        char body[256];
        (void)snprintf(body, sizeof(body),
                       "{\"collection\":\"mid%d\",\"ttl\":30,\"source\":{\"url\":\"http://x/"
                       "\"},\"fields\":{\"a\":\"b\"}}",
                       (p->offset + i) % 5);
        if (call(p->s, "POST", "/configurations", body, TOKEN, &r) != 0) {
            p->failed++;
            usleep(50000);
            continue;
        }
        if (r.status == 201 || r.status == 202) {
            p->ids[p->accepted++] = sh_xstrdup(jstr(r.json, "_id"));
        } else {
            /* 503 = the shared FerretDB was busy: a real client retries
             * (nothing was accepted); anything else is a bug. */
            if (r.status != 503)
                CHECK_FAIL("POST: unexpected %ld %s", r.status, r.body ? r.body : "");
            fprintf(stderr, "POST: 503 %s\n", r.body ? r.body : "");
            p->failed++;
            usleep(100000);
        }
        reply_done(&r);
    }
    return NULL;
}

/* Every accepted id is there once, each of the 5 collections has exactly one
 * endpoint configuration, and only failed (unacknowledged) POSTs may have
 * added extra scraper configurations. */
static void check_exactly_once(const struct svc *s, struct poster *p, int np)
{
    int accepted = 0, failed = 0;
    int64_t t0 = th_now_ms();
    long scrapers = 0;

    for (int k = 0; k < np; k++) {
        accepted += p[k].accepted;
        failed += p[k].failed;
        for (int i = 0; i < p[k].accepted; i++) {
            char *path = sh_xasprintf("/configurations/%s", p[k].ids[i]);
            struct reply r;
            /* a 202 is materialised shortly */
            do {
                if (call(s, "GET", path, NULL, NULL, &r) != 0)
                    CHECK_FAIL("GET %s: transport error", path);
                if (r.status == 200)
                    break;
                reply_done(&r);
                usleep(50000);
            } while (th_now_ms() - t0 < 15000);
            ASSERT_EQ(r.status, 200);
            reply_done(&r);
            free(path);
        }
    }
    /* let late (in-flight at the kill) documents settle */
    usleep(1500000);
    scrapers = total(s, "type=scraper");
    fprintf(stderr, "accepted=%d failed=%d scrapers=%ld\n", accepted, failed, scrapers);
    ASSERT_GE(scrapers, accepted);
    ASSERT_LE(scrapers, accepted + failed);
    ASSERT_EQ(total(s, "type=endpoint"), 5);
    for (int c = 0; c < 5; c++) {
        char q[64];
        (void)snprintf(q, sizeof(q), "type=endpoint&collection=mid%d", c);
        ASSERT_EQ(total(s, q), 1);
    }
}

static void test_kill_9_mid_stream_creates_everything_once(void)
{
    char *db = th_unique("t_cda_kill"), *key = th_unique("t/rev");
    struct svc s;
    volatile int stop = 0;
    struct poster p[2];
    pthread_t th[2];

    svc_start(&s, db, key, 0, NULL);
    for (int k = 0; k < 2; k++) {
        p[k] = (struct poster){.s = &s, .n = 40, .offset = k, .stop = &stop};
        p[k].ids = sh_xcalloc(40, sizeof(char *));
        ASSERT_EQ(pthread_create(&th[k], NULL, post_thread, &p[k]), 0);
    }
    for (int64_t t0 = th_now_ms(); p[0].accepted + p[1].accepted < 15; usleep(10000))
        if (th_now_ms() - t0 > 60000)
            CHECK_FAIL("only %d POSTs accepted in 60 s", p[0].accepted + p[1].accepted);
    ASSERT_EQ(th_kill(s.pid, SIGKILL), 128 + SIGKILL);
    usleep(300000);
    svc_start(&s, db, key, s.port, NULL);
    for (int k = 0; k < 2; k++)
        ASSERT_EQ(pthread_join(th[k], NULL), 0);
    check_exactly_once(&s, p, 2);
    ASSERT_EQ(th_kill(s.pid, SIGTERM), 0);
    for (int k = 0; k < 2; k++) {
        for (int i = 0; i < p[k].accepted; i++)
            free(p[k].ids[i]);
        free(p[k].ids);
    }
    free(db);
    free(key);
}

static void test_two_replicas_create_everything_once(void)
{
    char *db = th_unique("t_cda_two"), *key = th_unique("t/rev");
    struct svc s[2];
    volatile int stop = 0;
    struct poster p[4];
    pthread_t th[4];

    svc_start(&s[0], db, key, 0, NULL);
    svc_start(&s[1], db, key, 0, NULL);
    for (int k = 0; k < 4; k++) {
        p[k] = (struct poster){.s = &s[k % 2], .n = 20, .offset = k, .stop = &stop};
        p[k].ids = sh_xcalloc(20, sizeof(char *));
        ASSERT_EQ(pthread_create(&th[k], NULL, post_thread, &p[k]), 0);
    }
    for (int k = 0; k < 4; k++)
        ASSERT_EQ(pthread_join(th[k], NULL), 0);
    check_exactly_once(&s[0], p, 4);
    ASSERT_EQ(total(&s[1], "type=scraper"), total(&s[0], "type=scraper"));
    ASSERT_EQ(total(&s[1], "type=endpoint"), 5);
    for (int k = 0; k < 2; k++)
        ASSERT_EQ(th_kill(s[k].pid, SIGTERM), 0);
    for (int k = 0; k < 4; k++) {
        for (int i = 0; i < p[k].accepted; i++)
            free(p[k].ids[i]);
        free(p[k].ids);
    }
    free(db);
    free(key);
}

static long health(const struct svc *s)
{
    struct reply r;
    long st;
    if (call(s, "GET", "/health", NULL, NULL, &r) != 0)
        CHECK_FAIL("GET /health: transport error");
    st = r.status;
    reply_done(&r);
    return st;
}

static void test_health_follows_mongo(void)
{
    const char *src = getenv("SCRAPR_SOURCE_DIR");
    char *ferret = sh_xasprintf("%s/tools/bin/ferretdb", src ? src : ".");
    char dir[] = "/tmp/t_cda_ferret_XXXXXX";
    unsigned mport = th_free_port();
    char listen[64], dirarg[128], *key = th_unique("t/rev");
    const char *argv[] = {ferret, "-listen", listen, "-dir", dirarg, NULL};
    struct svc s;
    pid_t fp;
    int64_t t0;

    ASSERT_NOT_NULL(mkdtemp(dir));
    (void)snprintf(listen, sizeof(listen), "127.0.0.1:%u", mport);
    (void)snprintf(dirarg, sizeof(dirarg), "%s", dir);
    fp = track(th_spawn(argv, NULL));
    usleep(500000);
    {
        /* MONGO_URL in svc_start comes from the env: point it at ours */
        char *saved = sh_xstrdup(getenv("MONGO_URL"));
        char url[64];
        (void)snprintf(url, sizeof(url), "mongodb://127.0.0.1:%u", mport);
        ASSERT_EQ(setenv("MONGO_URL", url, 1), 0);
        svc_start(&s, "h", key, 0, NULL);
        ASSERT_EQ(setenv("MONGO_URL", saved, 1), 0);
        free(saved);
    }
    ASSERT_EQ(health(&s), 200);
    (void)th_kill(fp, SIGKILL);
    t0 = th_now_ms();
    while (health(&s) != 503 && th_now_ms() - t0 < 15000)
        usleep(200000);
    ASSERT_EQ(health(&s), 503);
    fp = track(th_spawn(argv, NULL));
    t0 = th_now_ms();
    while (health(&s) != 200 && th_now_ms() - t0 < 20000)
        usleep(200000);
    ASSERT_EQ(health(&s), 200);
    /* and it works again */
    free(post_config(&s, "back", 30));
    ASSERT_EQ(th_kill(s.pid, SIGTERM), 0);
    (void)th_kill(fp, SIGTERM);
    free(ferret);
    free(key);
}

int main(void)
{
    if (!getenv("MONGO_URL") || !getenv("CONSUL_HTTP_ADDR"))
        CHECK_FAIL("MONGO_URL/CONSUL_HTTP_ADDR not set: run under tests/lib/testbed.sh");
    (void)atexit(kill_started);
    RUN(test_crud_filters_and_endpoint_lifecycle);
    RUN(test_bad_input_gets_a_clear_4xx);
    RUN(test_claim_assigns_each_config_once);
    RUN(test_every_change_bumps_the_consul_revision);
    RUN(test_consul_down_is_survived_and_the_bump_retried);
    RUN(test_kill_9_mid_stream_creates_everything_once);
    RUN(test_two_replicas_create_everything_once);
    RUN(test_health_follows_mongo);
    return 0;
}
