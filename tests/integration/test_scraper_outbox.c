/* Delivery through the Redis outbox to a real scrapr-datasource (real Redis,
 * real MongoDB via the test bed):
 *  - module: batches wait in Redis while the datasource is down, drain in
 *    order when it is back, a replayed batch_id is stored once, the outbox
 *    bound refuses (never drops) a run's batches;
 *  - process: scrapr-scraper scrapes the fixture site while the datasource is
 *    down, is killed with SIGKILL, restarts from its Redis config cache while
 *    config-discovery is down, and once the datasource is up every item
 *    arrives exactly once. */
#include <inttypes.h>
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
#include "scraper.h"

static struct sh_redis *redis;
static char site[64];
static pid_t site_pid;

static long llen(const char *key)
{
    redisReply *r = sh_redis_command(redis, NULL, "LLEN %s", key);
    ASSERT_NOT_NULL(r);
    ASSERT_EQ(r->type, REDIS_REPLY_INTEGER);
    long n = (long)r->integer;
    freeReplyObject(r);
    return n;
}

static char *fixed_url(void *arg, struct sh_err *err)
{
    (void)err;
    return sh_xstrdup(arg);
}

/* A 24-hex id unique to this process and call. */
static char *object_id(void)
{
    static unsigned n;
    return sh_xasprintf("%08x%08x%08x", (unsigned)getpid(), (unsigned)time(NULL), ++n);
}

static json_t *items_n(int from, int n)
{
    json_t *a = json_array();
    for (int i = from; i < from + n; i++)
        (void)json_array_append_new(a, json_pack("{s:s, s:i}", "name", "item", "n", i));
    return a;
}

/* count of the collection at the datasource, waiting for the reducer. */
static long wait_count(const struct ds_proc *ds, const char *coll, long want, long timeout_ms)
{
    int64_t end = th_now_ms() + timeout_ms;
    long count = -1;
    char *path = sh_xasprintf("/collections/%s?limit=10000", coll);
    do {
        long st = 0;
        char *body = NULL;
        char *url = sh_xasprintf("%s%s", ds->base, path);
        if (th_http("GET", url, NULL, NULL, &st, &body, NULL) == 0 && st == 200) {
            json_t *j = json_loads(body, 0, NULL);
            count = (long)json_integer_value(json_object_get(j, "count"));
            json_decref(j);
        }
        free(body);
        free(url);
        if (count == want)
            break;
        (void)usleep(100000);
    } while (th_now_ms() < end);
    free(path);
    return count;
}

static void test_outbox_holds_batches_until_datasource_returns(void)
{
    struct ds_proc ds = {0};
    ds.port = th_free_port();
    char *base = sh_xasprintf("http://127.0.0.1:%u", ds.port);
    char *id = object_id();
    char *coll = th_unique("outbox");
    for (char *p = coll; *p; p++)
        if (*p == '_')
            *p = '-';
    struct scr_outbox_opts oo = {.config_id = id,
                                 .batch_items = 10,
                                 .max_batches = 6,
                                 .timeout_ms = 3000,
                                 .datasource = fixed_url,
                                 .datasource_arg = base};
    struct scr_outbox *o = scr_outbox_new(redis, &oo);
    char *list = sh_xasprintf("scrapr:outbox:%s", id);
    json_t *key = json_pack("[s]", "n");

    /* datasource down: 25 items -> 3 batches kept in Redis */
    struct sh_err err = {0};
    json_t *items = items_n(0, 25);
    ASSERT_EQ(scr_outbox_enqueue(o, coll, key, items, &err), 3);
    json_decref(items);
    ASSERT_EQ(llen(list), 3);
    long retry = -1;
    ASSERT_EQ(scr_outbox_drain(o, &retry, &err), -1);
    ASSERT_EQ(err.code, SH_EUPSTREAM);
    ASSERT_EQ(llen(list), 3);

    /* the bound refuses a whole run's batches, writing none of them */
    items = items_n(100, 40); /* 4 batches: 3 + 4 > 6 */
    ASSERT_EQ(scr_outbox_enqueue(o, coll, key, items, &err), -1);
    ASSERT_EQ(err.code, SH_ELIMIT);
    ASSERT_STR_CONTAINS(err.msg, "outbox full");
    json_decref(items);
    ASSERT_EQ(llen(list), 3);
    struct scr_outbox_stats st;
    scr_outbox_stats(o, &st);
    ASSERT_EQ(st.refused, 4);

    /* keep a copy of the head to replay it later */
    redisReply *head = sh_redis_command(redis, NULL, "LINDEX %s 0", list);
    ASSERT_NOT_NULL(head);
    ASSERT_EQ(head->type, REDIS_REPLY_STRING);
    json_t *hb = json_loads(head->str, 0, NULL);
    ASSERT_EQ(strlen(json_string_value(json_object_get(hb, "batch_id"))), 32);
    ASSERT_STR_EQ(json_string_value(json_object_get(hb, "config_id")), id);
    ASSERT_STR_EQ(json_string_value(json_object_get(hb, "collection")), coll);
    ASSERT_EQ(json_array_size(json_object_get(hb, "data")), 10);
    json_decref(hb);

    /* datasource back: drained in order, all 25 items stored */
    char *db = th_unique("t_scraper_outbox");
    ds_start(&ds, db, NULL);
    ASSERT_EQ(scr_outbox_drain(o, &retry, &err), 3);
    ASSERT_EQ(llen(list), 0);
    ASSERT_EQ(wait_count(&ds, coll, 25, 15000), 25);

    /* a replay of an already delivered batch is acknowledged as a duplicate */
    redisReply *r = sh_redis_command(redis, NULL, "RPUSH %s %b", list, head->str, head->len);
    ASSERT_NOT_NULL(r);
    freeReplyObject(r);
    ASSERT_EQ(scr_outbox_drain(o, &retry, &err), 1);
    scr_outbox_stats(o, &st);
    ASSERT_EQ(st.delivered, 4);
    ASSERT_EQ(st.duplicates, 1);
    ASSERT_EQ(wait_count(&ds, coll, 25, 3000), 25);
    freeReplyObject(head);

    /* a batch the datasource rejects (400) is parked in :dead, not dropped */
    r = sh_redis_command(redis, NULL, "RPUSH %s %s", list, "{\"collection\":\"BAD NAME\"}");
    ASSERT_NOT_NULL(r);
    freeReplyObject(r);
    ASSERT_EQ(scr_outbox_drain(o, &retry, &err), 0);
    char *dead = sh_xasprintf("%s:dead", list);
    ASSERT_EQ(llen(list), 0);
    ASSERT_EQ(llen(dead), 1);

    (void)th_kill(ds.pid, SIGTERM);
    ds.pid = 0;
    scr_outbox_free(o);
    json_decref(key);
    free(dead);
    free(db);
    free(list);
    free(coll);
    free(id);
    free(base);
    free(ds.db);
}

/* Starts scrapr-scraper for config id with the datasource at ds_port and its
 * Redis at redis_url (NULL: the test bed's). */
static pid_t scraper_start_redis(const char *id, unsigned port, unsigned ds_port, unsigned cd_port,
                                 const char *redis_url)
{
    char *bin = th_bin("scrapr-scraper");
    const char *argv[] = {bin, NULL};
    char *e_port = sh_xasprintf("PORT=%u", port);
    char *e_id = sh_xasprintf("CONFIG_ID=%s", id);
    char *e_ds = sh_xasprintf("SCRAPR_DATASOURCE_URL=http://127.0.0.1:%u", ds_port);
    char *e_cd = sh_xasprintf("SCRAPR_CONFIG_DISCOVERY_URL=http://127.0.0.1:%u", cd_port);
    char *e_redis = redis_url ? sh_xasprintf("REDIS_URL=%s", redis_url) : NULL;
    const char *env[] = {e_port,
                         e_id,
                         e_ds,
                         e_cd,
                         "SERVICE_ADDRESS=127.0.0.1",
                         "SCRAPR_ALLOW_PRIVATE_TARGETS=1",
                         "LOG_LEVEL=debug",
                         e_redis, /* last: NULL ends the list early */
                         NULL};
    pid_t pid = th_spawn(argv, env);
    char *health = sh_xasprintf("http://127.0.0.1:%u/health", port);
    if (th_wait_http(health, 20000) < 0)
        CHECK_FAIL("scraper did not start: %s", th_log_read(pid));
    free(health);
    free(e_port);
    free(e_id);
    free(e_ds);
    free(e_cd);
    free(e_redis);
    free(bin);
    return pid;
}

static pid_t scraper_start(const char *id, unsigned port, unsigned ds_port, unsigned cd_port)
{
    return scraper_start_redis(id, port, ds_port, cd_port, NULL);
}

static json_t *status(unsigned port)
{
    char *u = sh_xasprintf("http://127.0.0.1:%u/status", port);
    long st = 0;
    char *body = NULL;
    ASSERT_EQ(th_http("GET", u, NULL, NULL, &st, &body, NULL), 0);
    ASSERT_EQ(st, 200);
    json_t *j = json_loads(body, 0, NULL);
    ASSERT_NOT_NULL(j);
    free(body);
    free(u);
    return j;
}

/* Polls GET /status until ok(status, arg) holds and returns that status (the
 * caller frees it); fails the test with `what` after timeout_ms. */
static json_t *wait_status(unsigned port, int (*ok)(json_t *, long), long arg, long timeout_ms,
                           const char *what)
{
    int64_t end = th_now_ms() + timeout_ms;
    for (;;) {
        json_t *s = status(port);
        if (ok(s, arg))
            return s;
        json_decref(s);
        if (th_now_ms() > end)
            CHECK_FAIL("scraper: %s (not within %ld ms)", what, timeout_ms);
        (void)usleep(20000);
    }
}

static int runs_at_least(json_t *s, long n)
{
    return json_integer_value(json_object_get(s, "runs")) >= n;
}

static int run_in_progress(json_t *s, long unused)
{
    (void)unused;
    return strcmp(json_string_value(json_object_get(s, "state")), "running") == 0;
}

static int config_loaded(json_t *s, long unused)
{
    (void)unused;
    return json_string_value(json_object_get(s, "collection")) != NULL;
}

static int enqueued_at_least(json_t *s, long n)
{
    return json_integer_value(json_object_get(json_object_get(s, "outbox"), "enqueued")) >= n;
}

static json_t *wait_runs(unsigned port, long runs, long timeout_ms)
{
    return wait_status(port, runs_at_least, runs, timeout_ms, "runs not finished");
}

static void test_scraper_killed_and_restarted_delivers_every_item_once(void)
{
    char *id = object_id();
    char *coll = th_unique("quotes");
    for (char *p = coll; *p; p++)
        if (*p == '_')
            *p = '-';
    /* config-discovery is down for this whole test: the scraper starts from
     * the copy in its Redis, as after an earlier successful fetch */
    char *src = sh_xasprintf("%s/quotes/page1.html", site);
    json_t *doc =
        json_pack("{s:s, s:s, s:s, s:i, s:i, s:{s:s, s:s}, s:s, s:{s:s, s:s, s:[s], s:{s:s, s:s}}, "
                  "s:s, s:i, s:[s], s:{s:i, s:i}}",
                  "_id", id, "type", "scraper", "collection", coll, "version", 1, "ttl", 3600,
                  "source", "url", src, "type", "html", "scope", "div.quote", "fields", "text",
                  "span.text", "author", "small.author", "tags", "a.tag", "born", "follow",
                  "a@href", "field", "span.author-born-date", "paginate", "li.next a@href", "limit",
                  10, "key", "text", "politeness", "rate", 50, "burst", 10);
    ASSERT_NOT_NULL(doc);
    char *txt = json_dumps(doc, JSON_COMPACT);
    redisReply *r = sh_redis_command(redis, NULL, "SET scrapr:config:%s %s", id, txt);
    ASSERT_NOT_NULL(r);
    freeReplyObject(r);
    free(txt);
    json_decref(doc);
    free(src);

    unsigned port = th_free_port(), ds_port = th_free_port(), cd_port = th_free_port();
    char *list = sh_xasprintf("scrapr:outbox:%s", id);

    /* 1. datasource down: the run's batch waits in Redis */
    pid_t pid = scraper_start(id, port, ds_port, cd_port);
    json_t *s = wait_runs(port, 1, 30000);
    ASSERT_EQ(json_integer_value(json_object_get(json_object_get(s, "last_run"), "items")), 7);
    ASSERT(json_is_true(json_object_get(s, "config_cached")));
    ASSERT_STR_EQ(json_string_value(json_object_get(s, "collection")), coll);
    json_t *fr = json_object_get(
        json_object_get(json_object_get(json_object_get(s, "last_run"), "fields"), "born"),
        "fill_rate");
    ASSERT(json_number_value(fr) > 0.99);
    json_decref(s);
    ASSERT_EQ(llen(list), 1);

    /* 2. kill -9 and restart: nothing lost; the unchanged pages answer 304 and
     * are not re-parsed, so no second copy is queued */
    ASSERT_EQ(th_kill(pid, SIGKILL), 128 + SIGKILL);
    pid = scraper_start(id, port, ds_port, cd_port);
    s = wait_runs(port, 1, 30000);
    json_t *pages = json_object_get(json_object_get(s, "last_run"), "pages");
    ASSERT_EQ(json_integer_value(json_object_get(pages, "not_modified")), 3);
    ASSERT_EQ(json_integer_value(json_object_get(pages, "fetched")), 0);
    ASSERT_EQ(json_integer_value(json_object_get(json_object_get(s, "last_run"), "items")), 0);
    json_decref(s);
    ASSERT_EQ(llen(list), 1);

    /* 3. datasource back: the outbox drains and every item is stored once */
    struct ds_proc ds = {0};
    ds.port = ds_port;
    char *db = th_unique("t_scraper_outbox_proc");
    ds_start(&ds, db, NULL);
    int64_t end = th_now_ms() + 40000;
    while (llen(list) > 0 && th_now_ms() < end)
        (void)usleep(100000);
    ASSERT_EQ(llen(list), 0);
    ASSERT_EQ(wait_count(&ds, coll, 7, 15000), 7);
    char *path = sh_xasprintf("/collections/%s?limit=100", coll);
    json_t *got = ds_get_json(&ds, path, 200);
    json_t *its = json_object_get(got, "items");
    ASSERT_EQ(json_array_size(its), 7);
    size_t i, k;
    json_t *a, *b;
    json_array_foreach(its, i, a)
    {
        ASSERT_NOT_NULL(json_string_value(json_object_get(json_object_get(a, "data"), "born")));
        json_array_foreach(its, k, b)
        {
            if (k != i)
                ASSERT(!json_equal(json_object_get(a, "key"), json_object_get(b, "key")));
        }
    }
    json_decref(got);
    s = status(port);
    json_t *ob = json_object_get(s, "outbox");
    ASSERT_EQ(json_integer_value(json_object_get(ob, "delivered")), 1);
    ASSERT_EQ(json_integer_value(json_object_get(ob, "duplicates")), 0);
    ASSERT_EQ(json_integer_value(json_object_get(ob, "pending")), 0);
    json_decref(s);

    /* SIGTERM stops the scraper promptly */
    int64_t t0 = th_now_ms();
    ASSERT_EQ(th_kill(pid, SIGTERM), 0);
    ASSERT_LT(th_now_ms() - t0, 5000);
    (void)th_kill(ds.pid, SIGTERM);
    ds.pid = 0;
    free(path);
    free(db);
    free(ds.db);
    free(list);
    free(coll);
    free(id);
}

/* Caches in rd, as config-discovery's copy, configuration id: one item from a
 * fixture page that takes `seconds` to answer, ttl one hour. */
static void cache_slow_config(struct sh_redis *rd, const char *id, const char *collection,
                              int seconds)
{
    char *src = sh_xasprintf("%s/slow?s=%d", site, seconds);
    json_t *doc =
        json_pack("{s:s, s:s, s:s, s:i, s:i, s:{s:s, s:i}, s:s, s:{s:s}}", "_id", id, "type",
                  "scraper", "collection", collection, "version", 1, "ttl", 3600, "source", "url",
                  src, "timeout", 2 * seconds, "scope", "body", "fields", "text", "body");
    ASSERT_NOT_NULL(doc);
    char *txt = json_dumps(doc, JSON_COMPACT);
    redisReply *r = sh_redis_command(rd, NULL, "SET scrapr:config:%s %s", id, txt);
    ASSERT_NOT_NULL(r);
    freeReplyObject(r);
    json_decref(doc);
    free(txt);
    free(src);
}

static void test_sigterm_stops_a_running_scrape_promptly(void)
{
    char *id = object_id();
    cache_slow_config(redis, id, "slowpoke", 30);
    unsigned port = th_free_port();
    pid_t pid = scraper_start(id, port, th_free_port(), th_free_port());
    json_decref(wait_status(port, run_in_progress, 0, 10000, "never started its run"));
    int64_t t0 = th_now_ms();
    ASSERT_EQ(th_kill(pid, SIGTERM), 0);
    ASSERT_LT(th_now_ms() - t0, 3000); /* not the 30 s the page takes */
    free(id);
}

/* A run that ends while the scraper's Redis is down cannot queue its items; the
 * scrape is repeated within seconds once Redis is back, not a whole ttl later. */
static void test_run_retried_soon_when_redis_was_down(void)
{
    unsigned rport = 0;
    pid_t rpid = th_redis_start(&rport);
    char *rurl = sh_xasprintf("redis://127.0.0.1:%u", rport);
    char *id = object_id();
    struct sh_err err = {0};
    json_t *s;
    struct sh_redis *own = sh_redis_new(rurl, &err);
    ASSERT_NOT_NULL(own);
    cache_slow_config(own, id, "late-redis", 2);
    sh_redis_free(own);

    /* the scraper loads its configuration from Redis, then Redis dies mid-run */
    unsigned port = th_free_port();
    pid_t pid = scraper_start_redis(id, port, th_free_port(), th_free_port(), rurl);
    /* the 2 s page keeps the run going */
    json_decref(wait_status(port, config_loaded, 0, 10000, "configuration not loaded from Redis"));
    ASSERT_EQ(th_kill(rpid, SIGKILL), 128 + SIGKILL);
    s = wait_runs(port, 1, 15000);
    ASSERT(json_is_false(
        json_object_get(json_object_get(json_object_get(s, "last_run"), "delivery"), "queued")));
    json_decref(s);
    /* Redis back (empty) on the same port: the next run queues the item */
    rpid = th_redis_start(&rport);
    int64_t t0 = th_now_ms();
    json_decref(wait_status(port, enqueued_at_least, 1, 15000,
                            "items not queued after Redis came back (ttl is 3600 s)"));
    fprintf(stderr, "   queued %" PRId64 " ms after Redis came back\n", th_now_ms() - t0);
    ASSERT_EQ(th_kill(pid, SIGTERM), 0);
    ASSERT_EQ(th_kill(rpid, SIGTERM), 0);
    free(id);
    free(rurl);
}

int main(void)
{
    /* check.h's REQUIRE_ENV does not compile (a statement in an expression) */
    const char *rurl = getenv("REDIS_URL");
    if (!rurl || !getenv("MONGO_URL") || !getenv("CONSUL_HTTP_ADDR"))
        CHECK_FAIL(
            "REDIS_URL / MONGO_URL / CONSUL_HTTP_ADDR not set: run under tests/lib/testbed.sh");
    struct sh_err err = {0};
    redis = sh_redis_new(rurl, &err);
    if (!redis)
        CHECK_FAIL("redis: %s", err.msg);
    const char *srcdir = getenv("SCRAPR_SOURCE_DIR");
    char *script = sh_xasprintf("%s/tests/fixtures/site/server.py", srcdir ? srcdir : ".");
    unsigned sport = th_free_port();
    char ports[16];
    snprintf(ports, sizeof(ports), "%u", sport);
    const char *argv[] = {"python3", script, ports, NULL};
    site_pid = th_spawn(argv, NULL);
    snprintf(site, sizeof(site), "http://127.0.0.1:%u", sport);
    char *probe = sh_xasprintf("%s/hits", site);
    if (th_wait_http(probe, 10000) < 0)
        CHECK_FAIL("fixture site did not start");
    free(probe);

    RUN(test_outbox_holds_batches_until_datasource_returns);
    RUN(test_scraper_killed_and_restarted_delivers_every_item_once);
    RUN(test_sigterm_stops_a_running_scrape_promptly);
    RUN(test_run_retried_soon_when_redis_was_down);

    (void)th_kill(site_pid, SIGTERM);
    sh_redis_free(redis);
    free(script);
    return 0;
}
