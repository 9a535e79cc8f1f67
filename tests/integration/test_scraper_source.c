/* The scraper's configuration source against a real scrapr-config-discovery:
 * a scraper started without CONFIG_ID claims the free configuration, scrapes
 * it, registers in Consul with collection/config tags, picks up a new version
 * on its next run, and releases its claim and exits when it is deleted. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <jansson.h>

#include "check.h"
#include "harness.h"
#include "shared/redis.h"
#include "shared/xalloc.h"

#define TOKEN "t0ken-scraper-source"

static json_t *http_json(const char *method, const char *url, const char *body, long *ret_status)
{
    const char *hdrs[] = {"Content-Type: application/json", "Authorization: Bearer " TOKEN, NULL};
    char *resp = NULL;
    long st = 0;
    ASSERT_EQ(th_http(method, url, hdrs, body, &st, &resp, NULL), 0);
    json_t *j = resp && *resp ? json_loads(resp, 0, NULL) : NULL;
    free(resp);
    if (ret_status)
        *ret_status = st;
    return j;
}

static json_t *status_when(unsigned port, const char *key, json_int_t atleast, long timeout_ms)
{
    char *u = sh_xasprintf("http://127.0.0.1:%u/status", port);
    int64_t end = th_now_ms() + timeout_ms;
    for (;;) {
        long st = 0;
        json_t *s = http_json("GET", u, NULL, &st);
        if (st == 200 && json_integer_value(json_object_get(s, key)) >= atleast) {
            free(u);
            return s;
        }
        json_decref(s);
        if (th_now_ms() > end)
            CHECK_FAIL("status %s did not reach %lld", key, (long long)atleast);
        (void)usleep(100000);
    }
}

static char *config_text(const char *coll, const char *site, int limit)
{
    json_t *c =
        json_pack("{s:s, s:s, s:i, s:{s:s}, s:s, s:{s:s, s:s}, s:s, s:i, s:{s:i, s:i}}",
                  "collection", coll, "type", "scraper", "ttl", 1, "source", "url", site, "scope",
                  "div.quote", "fields", "text", "span.text", "author", "small.author", "paginate",
                  "li.next a@href", "limit", limit, "politeness", "rate", 50, "burst", 10);
    char *s = json_dumps(c, JSON_COMPACT);
    json_decref(c);
    return s;
}

int main(void)
{
    const char *redis_url = REQUIRE_ENV("REDIS_URL");
    (void)REQUIRE_ENV("MONGO_URL");
    const char *consul = REQUIRE_ENV("CONSUL_HTTP_ADDR");
    const char *srcdir = getenv("SCRAPR_SOURCE_DIR");

    /* fixture site */
    char *script = sh_xasprintf("%s/tests/fixtures/site/server.py", srcdir ? srcdir : ".");
    unsigned sport = th_free_port();
    char ports[16];
    snprintf(ports, sizeof(ports), "%u", sport);
    const char *sargv[] = {"python3", script, ports, NULL};
    pid_t site_pid = th_spawn(sargv, NULL);
    char *site = sh_xasprintf("http://127.0.0.1:%u/quotes/page1.html", sport);
    if (th_wait_http(site, 10000) < 0)
        CHECK_FAIL("fixture site did not start");

    /* config-discovery on its own database */
    char *db = th_unique("t_scraper_source");
    char *mongo = th_mongo_url(db);
    char *revkey = th_unique("t_scraper_source/rev");
    unsigned cd_port = th_free_port();
    char *e_mongo = sh_xasprintf("MONGO_URL=%s", mongo);
    char *e_port = sh_xasprintf("PORT=%u", cd_port);
    char *e_key = sh_xasprintf("SCRAPR_CD_REVISION_KEY=%s", revkey);
    char *cd_bin = th_bin("scrapr-config-discovery");
    const char *cargv[] = {cd_bin, NULL};
    const char *cenv[] = {
        e_mongo, e_port, e_key, "SCRAPR_API_TOKEN=" TOKEN, "SERVICE_ADDRESS=127.0.0.1", NULL};
    pid_t cd_pid = th_spawn(cargv, cenv);
    char *cd = sh_xasprintf("http://127.0.0.1:%u", cd_port);
    char *cd_health = sh_xasprintf("%s/health", cd);
    if (th_wait_http(cd_health, 20000) < 0)
        CHECK_FAIL("config-discovery did not start: %s", th_log_read(cd_pid));

    char *coll = th_unique("src");
    for (char *p = coll; *p; p++)
        if (*p == '_')
            *p = '-';
    char *body = config_text(coll, site, 1);
    char *u = sh_xasprintf("%s/configurations", cd);
    long st = 0;
    json_t *doc = http_json("POST", u, body, &st);
    ASSERT_EQ(st, 201);
    char *id = sh_xstrdup(json_string_value(json_object_get(doc, "_id")));
    json_decref(doc);
    free(body);
    free(u);

    /* the scraper's Redis (a db of its own: the claim key is per Redis) */
    char *rurl = sh_xasprintf("%s/9", redis_url);
    struct sh_err err = {0};
    struct sh_redis *r = sh_redis_new(rurl, &err);
    ASSERT_NOT_NULL(r);
    redisReply *rep = sh_redis_command(r, &err, "DEL scrapr:config:claimed");
    ASSERT_NOT_NULL(rep);
    freeReplyObject(rep);

    unsigned port = th_free_port(), ds_port = th_free_port();
    char *bin = th_bin("scrapr-scraper");
    char *e_sport = sh_xasprintf("PORT=%u", port);
    char *e_redis = sh_xasprintf("REDIS_URL=%s", rurl);
    char *e_cd = sh_xasprintf("SCRAPR_CONFIG_DISCOVERY_URL=%s", cd);
    char *e_ds = sh_xasprintf("SCRAPR_DATASOURCE_URL=http://127.0.0.1:%u", ds_port);
    char *e_host = sh_xasprintf("HOSTNAME=%s", coll);
    const char *argv[] = {bin, NULL};
    const char *env[] = {e_sport,
                         e_redis,
                         e_cd,
                         e_ds,
                         e_host,
                         "CONFIG_ID",
                         "SCRAPR_API_TOKEN=" TOKEN,
                         "SERVICE_ADDRESS=127.0.0.1",
                         "SCRAPR_ALLOW_PRIVATE_TARGETS=1",
                         NULL};
    pid_t pid = th_spawn(argv, env);
    char *health = sh_xasprintf("http://127.0.0.1:%u/health", port);
    if (th_wait_http(health, 30000) < 0)
        CHECK_FAIL("scraper did not start: %s", th_log_read(pid));

    /* 1. claimed and scraped: one page (limit 1) */
    json_t *s = status_when(port, "runs", 1, 30000);
    ASSERT_STR_EQ(json_string_value(json_object_get(s, "config_id")), id);
    ASSERT_STR_EQ(json_string_value(json_object_get(s, "collection")), coll);
    ASSERT(json_is_false(json_object_get(s, "config_cached")));
    json_t *lr = json_object_get(s, "last_run");
    ASSERT_EQ(json_integer_value(json_object_get(lr, "items")), 3);
    json_decref(s);
    u = sh_xasprintf("%s/configurations/%s", cd, id);
    doc = http_json("GET", u, NULL, &st);
    ASSERT_EQ(st, 200);
    ASSERT_STR_EQ(json_string_value(json_object_get(doc, "container")), coll);
    json_decref(doc);

    /* Prometheus metrics of the run */
    char *mu = sh_xasprintf("http://127.0.0.1:%u/metrics", port);
    char *metrics = NULL;
    ASSERT_EQ(th_http("GET", mu, NULL, NULL, &st, &metrics, NULL), 0);
    ASSERT_EQ(st, 200);
    ASSERT_STR_CONTAINS(metrics, "scrapr_scraper_runs_total");
    ASSERT_STR_CONTAINS(metrics, "scrapr_scraper_pages_total{outcome=\"fetched\"}");
    ASSERT_STR_CONTAINS(metrics, "scrapr_scraper_outbox_batches");
    free(metrics);
    free(mu);

    /* registered in Consul with its tags */
    char *cu = sh_xasprintf("http://%s/v1/catalog/service/scraper?tag=config=%s", consul, id);
    int64_t end = th_now_ms() + 10000;
    json_t *cat = NULL;
    for (;;) {
        cat = http_json("GET", cu, NULL, &st);
        if (json_array_size(cat) == 1 || th_now_ms() > end)
            break;
        json_decref(cat);
        (void)usleep(100000);
    }
    ASSERT_EQ(json_array_size(cat), 1);
    json_t *tags = json_object_get(json_array_get(cat, 0), "ServiceTags");
    char *want = sh_xasprintf("collection=%s", coll);
    int found = 0;
    size_t i;
    json_t *t;
    json_array_foreach(tags, i, t)
    {
        found |= strcmp(json_string_value(t), want) == 0;
    }
    ASSERT(found);
    json_decref(cat);
    free(want);
    free(cu);

    /* 2. a new version is picked up by the next run: three pages now */
    body = config_text(coll, site, 3);
    doc = http_json("PUT", u, body, &st);
    ASSERT_EQ(st, 200);
    json_int_t v2 = json_integer_value(json_object_get(doc, "version"));
    ASSERT_GE(v2, 2);
    json_decref(doc);
    free(body);
    s = status_when(port, "version", v2, 20000);
    json_decref(s);
    end = th_now_ms() + 20000;
    for (;;) {
        s = status_when(port, "runs", 1, 1000);
        lr = json_object_get(s, "last_run");
        if (json_integer_value(json_object_get(lr, "items")) == 7)
            break;
        json_decref(s);
        if (th_now_ms() > end)
            CHECK_FAIL("new version (limit 3) not applied");
        (void)usleep(200000);
    }
    json_decref(s);

    /* 3. deleted: the claimed configuration is released (gone from the
     * scraper's Redis) and the scraper exits 0, so that its restart (Docker's
     * restart policy) waits for a new claim as a spare */
    doc = http_json("DELETE", u, NULL, &st);
    ASSERT(st == 200 || st == 204);
    json_decref(doc);
    int rc = th_wait_exit(pid, 20000);
    if (rc != 0)
        CHECK_FAIL("scraper did not exit 0 after its configuration was deleted (%d)", rc);
    redisReply *claimed = sh_redis_command(r, NULL, "EXISTS scrapr:config:claimed");
    ASSERT_NOT_NULL(claimed);
    ASSERT_EQ(claimed->integer, 0);
    freeReplyObject(claimed);

    (void)th_kill(cd_pid, SIGTERM);
    (void)th_kill(site_pid, SIGTERM);
    sh_redis_free(r);
    free(health);
    free(u);
    free(id);
    free(coll);
    free(bin);
    free(e_sport);
    free(e_redis);
    free(e_cd);
    free(e_ds);
    free(e_host);
    free(rurl);
    free(cd);
    free(cd_health);
    free(cd_bin);
    free(e_mongo);
    free(e_port);
    free(e_key);
    free(revkey);
    free(mongo);
    free(db);
    free(site);
    free(script);
    return 0;
}
