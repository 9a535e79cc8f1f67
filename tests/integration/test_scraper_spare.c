/* Spare scrapers and endpoints against the real test bed (FerretDB, Consul,
 * redis) with real config-discovery and datasource processes:
 *  - a spare scraper and a spare endpoint started before any configuration
 *    are healthy and say they wait; a configuration POSTed afterwards is
 *    claimed by both within 2 s (woken by the Consul revision, not by their
 *    re-try, which is set to 5 s here), scraped at once, and served; both
 *    re-register in Consul with collection/config tags. The figures are
 *    printed (grep "measured:");
 *  - a spare skips a configuration whose replicas is not 1, and claims the
 *    next one;
 *  - a spare that claimed X and restarts under the same HOSTNAME gets X back,
 *    with its Redis kept or lost, even while another configuration is free. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <jansson.h>

#include "check.h"
#include "harness.h"
#include "test_datasource_util.h"
#include "shared/redis.h"
#include "shared/xalloc.h"

#define TOKEN "t0ken-spare"
#define CLAIM_BOUND_MS 2000

static struct {
    const char *redis_base, *consul;
    char *site, *cd, *revkey, *tag;
    unsigned cd_port;
    pid_t site_pid, cd_pid;
    struct ds_proc ds;
} T;

static json_t *http_json(const char *method, const char *url, const char *body, long *ret_status)
{
    const char *hdrs[] = {"Content-Type: application/json", "Authorization: Bearer " TOKEN, NULL};
    char *resp = NULL;
    long st = 0;
    json_t *j = NULL;
    if (th_http(method, url, hdrs, body, &st, &resp, NULL) == 0)
        j = resp && *resp ? json_loads(resp, 0, NULL) : NULL;
    else
        st = -1; /* a service restarting between its spare and claimed life */
    free(resp);
    if (ret_status)
        *ret_status = st;
    return j;
}

static char *redis_url(int db)
{
    return sh_xasprintf("%s/%d", T.redis_base, db);
}

static void redis_flush(int db)
{
    char *u = redis_url(db);
    struct sh_err err = {0};
    struct sh_redis *r = sh_redis_new(u, &err);
    ASSERT_NOT_NULL(r);
    redisReply *rep = sh_redis_command(r, &err, "FLUSHDB");
    ASSERT_NOT_NULL(rep);
    freeReplyObject(rep);
    sh_redis_free(r);
    free(u);
}

struct unit {
    const char *kind; /* "scraper" or "endpoint" */
    char name[64];    /* HOSTNAME */
    int db;           /* its Redis database */
    unsigned port;
    pid_t pid;
};

static void unit_start(struct unit *u)
{
    char *bin = sh_xasprintf("scrapr-%s", u->kind), *path = th_bin(bin);
    char *r = redis_url(u->db);
    char *e_port = sh_xasprintf("PORT=%u", u->port), *e_redis = sh_xasprintf("REDIS_URL=%s", r);
    char *e_cd = sh_xasprintf("SCRAPR_CONFIG_DISCOVERY_URL=%s", T.cd);
    char *e_ds = sh_xasprintf("SCRAPR_DATASOURCE_URL=%s", T.ds.base);
    char *e_host = sh_xasprintf("HOSTNAME=%s", u->name);
    char *e_key = sh_xasprintf("SCRAPR_REVISION_KEY=%s", T.revkey);
    const char *argv[] = {path, NULL};
    const char *env[] = {e_port,
                         e_redis,
                         e_cd,
                         e_ds,
                         e_host,
                         e_key,
                         "CONFIG_ID",
                         "SCRAPR_CLAIM_WAIT=5",
                         "SCRAPR_API_TOKEN=" TOKEN,
                         "SERVICE_ADDRESS=127.0.0.1",
                         "SCRAPR_ALLOW_PRIVATE_TARGETS=1",
                         "EP_THREADS=1",
                         "LOG_LEVEL=debug",
                         NULL};
    u->pid = th_spawn(argv, env);
    char *health = sh_xasprintf("http://127.0.0.1:%u/health", u->port);
    if (th_wait_http(health, 30000) < 0)
        CHECK_FAIL("%s %s did not start: %s", u->kind, u->name, th_log_read(u->pid));
    free(health);
    free(e_port);
    free(e_redis);
    free(e_cd);
    free(e_ds);
    free(e_host);
    free(e_key);
    free(r);
    free(path);
    free(bin);
}

static void unit_stop(struct unit *u)
{
    int rc = th_kill(u->pid, SIGTERM);
    if (rc != 0)
        CHECK_FAIL("%s %s exited with %d: %s", u->kind, u->name, rc, th_log_read(u->pid));
    u->pid = 0;
}

/* GET /status (NULL while the service restarts). */
static json_t *unit_status(const struct unit *u)
{
    char *url = sh_xasprintf("http://127.0.0.1:%u/status", u->port);
    long st = 0;
    json_t *s = http_json("GET", url, NULL, &st);
    free(url);
    if (st != 200) {
        json_decref(s);
        return NULL;
    }
    return s;
}

static const char *jstr(const json_t *o, const char *key)
{
    return json_string_value(json_object_get(o, key));
}

/* Waits until the unit says it waits for a claim and /health is 200. */
static void wait_spare(const struct unit *u)
{
    int64_t end = th_now_ms() + 20000;
    for (;;) {
        json_t *s = unit_status(u);
        int waiting = s && jstr(s, "state") && strcmp(jstr(s, "state"), "waiting_for_claim") == 0;
        json_decref(s);
        if (waiting) {
            char *url = sh_xasprintf("http://127.0.0.1:%u/health", u->port);
            long st = 0;
            json_t *h = http_json("GET", url, NULL, &st);
            free(url);
            if (st == 200) {
                ASSERT_STR_EQ(jstr(json_object_get(h, "checks"),
                                   strcmp(u->kind, "scraper") == 0 ? "config" : "configuration"),
                              "waiting for a claim");
                json_decref(h);
                return;
            }
            json_decref(h);
        }
        if (th_now_ms() > end)
            CHECK_FAIL("%s %s never reported a healthy wait: %s", u->kind, u->name,
                       th_log_read(u->pid));
        (void)usleep(50000);
    }
}

static char *config_text(const char *coll, int replicas)
{
    json_t *c = json_pack("{s:s, s:i, s:{s:s}, s:s, s:{s:s, s:s}, s:i}", "collection", coll, "ttl",
                          60, "source", "url", T.site, "scope", "div.quote", "fields", "text",
                          "span.text", "author", "small.author", "limit", 1);
    if (replicas > 0)
        (void)json_object_set_new(c, "replicas", json_integer(replicas));
    char *s = json_dumps(c, JSON_COMPACT);
    json_decref(c);
    return s;
}

/* POSTs a configuration; returns its _id (caller frees). */
static char *post_config(const char *coll, int replicas)
{
    char *body = config_text(coll, replicas), *u = sh_xasprintf("%s/configurations", T.cd);
    long st = 0;
    json_t *doc = http_json("POST", u, body, &st);
    if (st != 201)
        CHECK_FAIL("POST %s: %ld", body, st);
    char *id = sh_xstrdup(jstr(doc, "_id"));
    json_decref(doc);
    free(body);
    free(u);
    return id;
}

/* The configuration's `container` (caller frees; NULL when free). */
static char *container_of(const char *id)
{
    char *u = sh_xasprintf("%s/configurations/%s", T.cd, id);
    long st = 0;
    json_t *doc = http_json("GET", u, NULL, &st);
    ASSERT_EQ(st, 200);
    const char *c = jstr(doc, "container");
    char *out = c ? sh_xstrdup(c) : NULL;
    json_decref(doc);
    free(u);
    return out;
}

static char *endpoint_config_of(const char *coll)
{
    char *u = sh_xasprintf("%s/configurations?type=endpoint&collection=%s", T.cd, coll);
    long st = 0;
    json_t *v = http_json("GET", u, NULL, &st);
    json_t *list = json_object_get(v, "configurations");
    ASSERT_EQ(json_array_size(list), 1);
    char *id = sh_xstrdup(jstr(json_array_get(list, 0), "_id"));
    json_decref(v);
    free(u);
    return id;
}

static char *collection_name(const char *what)
{
    char *c = th_unique(what);
    for (char *p = c; *p; p++)
        if (*p == '_')
            *p = '-';
    return c;
}

/* Number of instances of service in the Consul catalog carrying tag. */
static size_t catalog_count(const char *service, const char *tag)
{
    char *u = sh_xasprintf("http://%s/v1/catalog/service/%s?tag=%s", T.consul, service, tag);
    long st = 0;
    json_t *cat = http_json("GET", u, NULL, &st);
    size_t n = json_array_size(cat);
    json_decref(cat);
    free(u);
    return n;
}

static void wait_catalog(const char *service, const char *tag)
{
    int64_t end = th_now_ms() + 10000;
    while (catalog_count(service, tag) != 1) {
        if (th_now_ms() > end)
            CHECK_FAIL("%s not registered in Consul with tag %s", service, tag);
        (void)usleep(50000);
    }
}

static int items_served(const struct unit *ep)
{
    char *u = sh_xasprintf("http://127.0.0.1:%u/items", ep->port);
    long st = 0;
    json_t *v = http_json("GET", u, NULL, &st);
    int n = st == 200 && json_is_array(v) ? (int)json_array_size(v) : 0;
    json_decref(v);
    free(u);
    return n;
}

static struct unit scr_a = {.kind = "scraper", .db = 11};
static struct unit ep_a = {.kind = "endpoint", .db = 12};
static struct unit scr_b = {.kind = "scraper", .db = 13};
static char *x_id, *x_eid, *x_coll;

static void test_spares_claim_within_2s_of_a_post_and_serve_items(void)
{
    wait_spare(&scr_a);
    wait_spare(&ep_a);
    /* nothing to claim yet: still waiting after their first tries */
    x_coll = collection_name("spare");
    int64_t t0 = th_now_ms();
    x_id = post_config(x_coll, 0);
    int64_t t_posted = th_now_ms();
    int64_t t_scr = 0, t_ep = 0, t_run = 0, t_items = 0;
    int64_t end = t_posted + 20000;
    while (!(t_scr && t_ep && t_run && t_items) && th_now_ms() < end) {
        json_t *s = unit_status(&scr_a);
        int64_t now = th_now_ms();
        if (s && !t_scr && jstr(s, "config_id") && strcmp(jstr(s, "config_id"), x_id) == 0)
            t_scr = now;
        if (s && !t_run && json_integer_value(json_object_get(s, "runs")) >= 1) {
            json_t *d = json_object_get(json_object_get(s, "last_run"), "delivery");
            ASSERT(json_is_true(json_object_get(d, "queued")));
            t_run = now;
        }
        json_decref(s);
        s = unit_status(&ep_a);
        now = th_now_ms();
        if (s && !t_ep && jstr(s, "state") && strcmp(jstr(s, "state"), "serving") == 0)
            t_ep = now;
        json_decref(s);
        if (t_ep && !t_items && items_served(&ep_a) > 0)
            t_items = th_now_ms();
        (void)usleep(5000);
    }
    printf("measured: POST /configurations took %lld ms; after it returned: scraper claimed "
           "within %lld ms, first run queued within %lld ms, endpoint claimed within %lld ms, "
           "first items served within %lld ms (polled every ~5-10 ms)\n",
           (long long)(t_posted - t0), (long long)(t_scr - t_posted), (long long)(t_run - t_posted),
           (long long)(t_ep - t_posted), (long long)(t_items - t_posted));
    fflush(stdout);
    if (!t_scr || !t_ep || !t_run || !t_items)
        CHECK_FAIL("not claimed/served in 20 s (scraper %lld, run %lld, endpoint %lld, items %lld)",
                   (long long)t_scr, (long long)t_run, (long long)t_ep, (long long)t_items);
    ASSERT_LT(t_scr - t_posted, CLAIM_BOUND_MS);
    ASSERT_LT(t_ep - t_posted, CLAIM_BOUND_MS);
    ASSERT_LT(t_run - t_posted, CLAIM_BOUND_MS);
    ASSERT_LT(t_items - t_posted, 5000);

    /* the claim recorded the HOSTNAME, exactly */
    char *c = container_of(x_id);
    ASSERT_STR_EQ(c, scr_a.name);
    free(c);
    x_eid = endpoint_config_of(x_coll);
    c = container_of(x_eid);
    ASSERT_STR_EQ(c, ep_a.name);
    free(c);
    /* re-registered under the tags of what they claimed */
    char *tag = sh_xasprintf("config=%s", x_id);
    wait_catalog("scraper", tag);
    free(tag);
    tag = sh_xasprintf("collection=%s", x_coll);
    wait_catalog("scraper", tag);
    wait_catalog("endpoint", tag);
    free(tag);
    tag = sh_xasprintf("config=%s", x_eid);
    wait_catalog("endpoint", tag);
    free(tag);
}

static void test_spare_skips_replicas_other_than_one(void)
{
    scr_b.port = th_free_port();
    unit_start(&scr_b);
    wait_spare(&scr_b);
    json_t *s = unit_status(&scr_b);
    json_int_t tries = json_integer_value(json_object_get(s, "claim_tries"));
    json_decref(s);
    char *coll = collection_name("multi");
    char *z = post_config(coll, 3);
    /* woken by the revision bump (well before its 5 s re-try), it looked and passed */
    int64_t end = th_now_ms() + 2000;
    for (;;) {
        s = unit_status(&scr_b);
        ASSERT_NOT_NULL(s);
        ASSERT_STR_EQ(jstr(s, "state"), "waiting_for_claim");
        json_int_t now_tries = json_integer_value(json_object_get(s, "claim_tries"));
        json_decref(s);
        if (now_tries > tries)
            break;
        if (th_now_ms() > end)
            CHECK_FAIL("the spare did not try a claim after the POST");
        (void)usleep(20000);
    }
    (void)usleep(300000);
    ASSERT_NULL(container_of(z));
    s = unit_status(&scr_b);
    ASSERT_STR_EQ(jstr(s, "state"), "waiting_for_claim");
    json_decref(s);
    /* a configuration without replicas is taken by the same spare at once */
    char *coll2 = collection_name("single");
    char *y = post_config(coll2, 0);
    int64_t t = th_now_ms();
    char *c = NULL;
    while (!(c = container_of(y)) && th_now_ms() - t < CLAIM_BOUND_MS)
        (void)usleep(10000);
    printf("measured: second spare claimed %lld ms after POST returned\n",
           (long long)(th_now_ms() - t));
    ASSERT_NOT_NULL(c);
    ASSERT_STR_EQ(c, scr_b.name);
    ASSERT_NULL(container_of(z));
    free(c);
    unit_stop(&scr_b);
    free(y);
    free(z);
    free(coll);
    free(coll2);
}

/* Restarts u with its Redis kept (flush = 0) or lost (1) and waits until it
 * serves again; returns its /status. */
static json_t *restart(struct unit *u, int flush)
{
    unit_stop(u);
    if (flush)
        redis_flush(u->db);
    unit_start(u);
    int64_t end = th_now_ms() + 20000;
    for (;;) {
        json_t *s = unit_status(u);
        if (s && jstr(s, "config_id") && strcmp(jstr(s, "state"), "waiting_for_claim") != 0)
            return s;
        json_decref(s);
        if (th_now_ms() > end)
            CHECK_FAIL("%s %s did not come back: %s", u->kind, u->name, th_log_read(u->pid));
        (void)usleep(50000);
    }
}

static void test_restarted_spare_gets_the_same_configuration(void)
{
    /* a free configuration that a wrong (second) claim would take */
    char *coll = collection_name("free");
    char *w = post_config(coll, 0);
    char *w_eid = endpoint_config_of(coll);
    for (int flush = 0; flush <= 1; flush++) {
        json_t *s = restart(&scr_a, flush);
        ASSERT_STR_EQ(jstr(s, "config_id"), x_id);
        json_decref(s);
        s = restart(&ep_a, flush);
        ASSERT_STR_EQ(jstr(s, "config_id"), x_eid);
        ASSERT_STR_EQ(jstr(s, "collection"), x_coll);
        json_decref(s);
    }
    ASSERT_NULL(container_of(w));
    ASSERT_NULL(container_of(w_eid));
    char *c = container_of(x_id);
    ASSERT_STR_EQ(c, scr_a.name);
    free(c);
    /* and the restarted (Redis-less) endpoint serves the collection again */
    int64_t end = th_now_ms() + 10000;
    while (items_served(&ep_a) == 0) {
        if (th_now_ms() > end)
            CHECK_FAIL("restarted endpoint serves no items");
        (void)usleep(50000);
    }
    free(w);
    free(w_eid);
    free(coll);
}

/* The claimed configuration changes: the scraper runs the new version at once
 * (woken by the revision, not its 60 s ttl); then it is deleted: the scraper
 * releases its claim (gone from its Redis) and exits 0, so that its restart
 * waits as a spare again. */
static void test_claimed_configuration_change_runs_at_once_and_delete_releases(void)
{
    char *u = sh_xasprintf("%s/configurations/%s", T.cd, x_id);
    long st = 0;
    json_t *doc = http_json("GET", u, NULL, &st), *s;
    ASSERT_EQ(st, 200);
    s = unit_status(&scr_a);
    ASSERT_NOT_NULL(s);
    json_int_t runs = json_integer_value(json_object_get(s, "runs"));
    json_int_t version = json_integer_value(json_object_get(s, "version"));
    json_decref(s);
    (void)json_object_set_new(doc, "limit", json_integer(2));
    char *body = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    int64_t t0 = th_now_ms();
    json_decref(http_json("PUT", u, body, &st));
    ASSERT_EQ(st, 200);
    for (;;) {
        s = unit_status(&scr_a);
        if (s && json_integer_value(json_object_get(s, "version")) > version &&
            json_integer_value(json_object_get(s, "runs")) > runs) {
            json_decref(s);
            break;
        }
        json_decref(s);
        if (th_now_ms() - t0 > 10000)
            CHECK_FAIL("changed configuration not run within 10 s: %s", th_log_read(scr_a.pid));
        (void)usleep(50000);
    }
    printf("measured: changed configuration run after %lld ms\n", (long long)(th_now_ms() - t0));

    t0 = th_now_ms();
    json_decref(http_json("DELETE", u, NULL, &st));
    ASSERT(st == 200 || st == 204);
    int rc = th_wait_exit(scr_a.pid, 15000);
    if (rc != 0)
        CHECK_FAIL("scraper did not exit 0 after its configuration was deleted (%d): %s", rc,
                   th_log_read(scr_a.pid));
    printf("measured: released and exited %lld ms after the DELETE\n",
           (long long)(th_now_ms() - t0));
    scr_a.pid = 0;
    char *r = redis_url(scr_a.db);
    struct sh_err err = {0};
    struct sh_redis *redis = sh_redis_new(r, &err);
    ASSERT_NOT_NULL(redis);
    redisReply *rep = sh_redis_command(redis, &err, "EXISTS scrapr:config:claimed");
    ASSERT_NOT_NULL(rep);
    ASSERT_EQ(rep->integer, 0);
    freeReplyObject(rep);
    sh_redis_free(redis);
    free(r);
    free(body);
    free(u);
}

int main(void)
{
    T.redis_base = REQUIRE_ENV("REDIS_URL");
    (void)REQUIRE_ENV("MONGO_URL");
    T.consul = REQUIRE_ENV("CONSUL_HTTP_ADDR");
    const char *srcdir = getenv("SCRAPR_SOURCE_DIR");

    char *script = sh_xasprintf("%s/tests/fixtures/site/server.py", srcdir ? srcdir : ".");
    unsigned sport = th_free_port();
    char ports[16];
    (void)snprintf(ports, sizeof(ports), "%u", sport);
    const char *sargv[] = {"python3", script, ports, NULL};
    T.site_pid = th_spawn(sargv, NULL);
    T.site = sh_xasprintf("http://127.0.0.1:%u/quotes/page1.html", sport);
    if (th_wait_http(T.site, 10000) < 0)
        CHECK_FAIL("fixture site did not start");

    char *db = th_unique("t_spare");
    char *mongo = th_mongo_url(db);
    T.revkey = th_unique("t_spare/rev");
    T.cd_port = th_free_port();
    char *e_mongo = sh_xasprintf("MONGO_URL=%s", mongo);
    char *e_port = sh_xasprintf("PORT=%u", T.cd_port);
    char *e_key = sh_xasprintf("SCRAPR_CD_REVISION_KEY=%s", T.revkey);
    char *cd_bin = th_bin("scrapr-config-discovery");
    const char *cargv[] = {cd_bin, NULL};
    const char *cenv[] = {
        e_mongo, e_port, e_key, "SCRAPR_API_TOKEN=" TOKEN, "SERVICE_ADDRESS=127.0.0.1", NULL};
    T.cd_pid = th_spawn(cargv, cenv);
    T.cd = sh_xasprintf("http://127.0.0.1:%u", T.cd_port);
    char *cd_health = sh_xasprintf("%s/health", T.cd);
    if (th_wait_http(cd_health, 20000) < 0)
        CHECK_FAIL("config-discovery did not start: %s", th_log_read(T.cd_pid));

    char *ds_db = th_unique("t_spare_ds");
    ds_start(&T.ds, ds_db, NULL);

    for (int i = 11; i <= 13; i++)
        redis_flush(i);
    char *n = th_unique("spare-scraper");
    (void)snprintf(scr_a.name, sizeof(scr_a.name), "%s", n);
    free(n);
    n = th_unique("spare-endpoint");
    (void)snprintf(ep_a.name, sizeof(ep_a.name), "%s", n);
    free(n);
    n = th_unique("spare-scraper-b");
    (void)snprintf(scr_b.name, sizeof(scr_b.name), "%s", n);
    free(n);
    scr_a.port = th_free_port();
    ep_a.port = th_free_port();
    unit_start(&scr_a);
    unit_start(&ep_a);

    RUN(test_spares_claim_within_2s_of_a_post_and_serve_items);
    RUN(test_spare_skips_replicas_other_than_one);
    RUN(test_restarted_spare_gets_the_same_configuration);
    RUN(test_claimed_configuration_change_runs_at_once_and_delete_releases);

    if (scr_a.pid)
        unit_stop(&scr_a);
    unit_stop(&ep_a);
    ds_stop(&T.ds, SIGTERM);
    (void)th_kill(T.cd_pid, SIGTERM);
    (void)th_kill(T.site_pid, SIGTERM);
    free(x_id);
    free(x_eid);
    free(x_coll);
    free(ds_db);
    free(T.ds.db);
    free(cd_health);
    free(T.cd);
    free(cd_bin);
    free(e_mongo);
    free(e_port);
    free(e_key);
    free(T.revkey);
    free(mongo);
    free(db);
    free(T.site);
    free(script);
    return 0;
}
