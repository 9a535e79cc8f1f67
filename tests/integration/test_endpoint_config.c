/* How an endpoint gets its configuration, against the real config-discovery
 * (FerretDB, Consul) and its own redis-server:
 *  - without CONFIG_ID it claims the endpoint configuration config-discovery
 *    created for a new scraper configuration, and caches it in Redis;
 *  - restarted while config-discovery is down, it serves the same
 *    configuration from the Redis cache (remembered claim);
 *  - with CONFIG_ID it fetches that document;
 *  - with no datasource and no Redis copy it answers 503 (health and /items)
 *    rather than an empty collection. */
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

#define TOKEN "ep-config-test-token"

static struct {
    pid_t redis, cd, ep;
    unsigned redis_port, cd_port, ep_port, dead_port;
    char *redis_url, *cd_url, *ep_url, *collection;
} T;

static void cleanup(void)
{
    if (T.ep)
        (void)th_kill(T.ep, SIGKILL);
    if (T.cd)
        (void)th_kill(T.cd, SIGKILL);
    if (T.redis)
        (void)th_kill(T.redis, SIGKILL);
    T.ep = T.cd = T.redis = 0;
}

static void start_redis(void)
{
    T.redis = th_redis_start(&T.redis_port);
}

static char *redis_get(const char *key)
{
    struct sh_redis *r = sh_redis_new(T.redis_url, NULL);
    redisReply *rep = sh_redis_command(r, NULL, "GET %s", key);
    char *v = NULL;
    ASSERT_NOT_NULL(rep);
    if (rep->type == REDIS_REPLY_STRING)
        v = sh_xstrndup(rep->str, rep->len);
    freeReplyObject(rep);
    sh_redis_free(r);
    return v;
}

static void start_cd(const char *db)
{
    char *bin = th_bin("scrapr-config-discovery"), *mongo = th_mongo_url(db), *health;
    char env_mongo[512], env_port[32], env_key[256], env_consul[256];
    const char *argv[] = {bin, NULL};
    const char *env[] = {
        env_mongo, env_port,   "SCRAPR_API_TOKEN=" TOKEN, "SERVICE_ADDRESS=127.0.0.1",
        env_key,   env_consul, "LOG_LEVEL=info",          NULL};
    (void)snprintf(env_mongo, sizeof(env_mongo), "MONGO_URL=%s", mongo);
    (void)snprintf(env_port, sizeof(env_port), "PORT=%u", T.cd_port);
    (void)snprintf(env_key, sizeof(env_key), "SCRAPR_CD_REVISION_KEY=scrapr/test/%s", db);
    (void)snprintf(env_consul, sizeof(env_consul), "CONSUL_HTTP_ADDR=%s",
                   REQUIRE_ENV("CONSUL_HTTP_ADDR"));
    T.cd = th_spawn(argv, env);
    health = sh_xasprintf("%s/health", T.cd_url);
    if (th_wait_http(health, 20000) != 0)
        CHECK_FAIL("config-discovery did not answer; log:\n%s", th_log_read(T.cd));
    free(health);
    free(mongo);
    free(bin);
}

/* config_id NULL = claim. */
static void start_endpoint(const char *config_id)
{
    char port[32], redis[128], cid[128], cd[128], ds[128], consul[256], *url;
    char *bin = th_bin("scrapr-endpoint");
    const char *argv[] = {bin, NULL};
    const char *env[] = {port,
                         redis,
                         cid,
                         cd,
                         ds,
                         consul,
                         "SERVICE_ADDRESS=127.0.0.1",
                         "HOSTNAME=ep-config-claimer",
                         "SCRAPR_API_TOKEN=" TOKEN,
                         "EP_THREADS=1",
                         "LOG_LEVEL=debug",
                         NULL};
    (void)snprintf(port, sizeof(port), "PORT=%u", T.ep_port);
    (void)snprintf(redis, sizeof(redis), "REDIS_URL=%s", T.redis_url);
    (void)snprintf(cid, sizeof(cid), "CONFIG_ID=%s", config_id ? config_id : "");
    (void)snprintf(cd, sizeof(cd), "SCRAPR_CONFIG_DISCOVERY_URL=%s", T.cd_url);
    /* no datasource in this test: a dead port */
    (void)snprintf(ds, sizeof(ds), "SCRAPR_DATASOURCE_URL=http://127.0.0.1:%u", T.dead_port);
    (void)snprintf(consul, sizeof(consul), "CONSUL_HTTP_ADDR=%s", REQUIRE_ENV("CONSUL_HTTP_ADDR"));
    T.ep = th_spawn(argv, env);
    url = sh_xasprintf("%s/health", T.ep_url);
    if (th_wait_http(url, 30000) < 0)
        CHECK_FAIL("endpoint did not answer; log:\n%s", th_log_read(T.ep));
    free(url);
    free(bin);
}

static json_t *http_json(const char *method, const char *url, const char *body, long *status)
{
    const char *hdr[] = {"Content-Type: application/json", "Authorization: Bearer " TOKEN, NULL};
    char *resp = NULL;
    json_t *v;
    if (th_http(method, url, hdr, body, status, &resp, NULL) < 0)
        CHECK_FAIL("%s %s: transport error", method, url);
    v = json_loads(resp, 0, NULL);
    free(resp);
    return v;
}

static const char *health_check(json_t *h, const char *name)
{
    return json_string_value(json_object_get(json_object_get(h, "checks"), name));
}

/* The endpoint configuration config-discovery creates for a new collection. */
static char *endpoint_config_id(void)
{
    char *url =
             sh_xasprintf("%s/configurations?type=endpoint&collection=%s", T.cd_url, T.collection),
         *id = NULL;
    int64_t deadline = th_now_ms() + 20000;
    while (!id) {
        long st;
        json_t *v = http_json("GET", url, NULL, &st);
        json_t *list = json_object_get(v, "configurations");
        if (st == 200 && json_array_size(list) == 1)
            id = sh_xstrdup(json_string_value(json_object_get(json_array_get(list, 0), "_id")));
        json_decref(v);
        if (!id && th_now_ms() > deadline)
            CHECK_FAIL("no endpoint configuration for %s", T.collection);
        if (!id)
            (void)usleep(100000);
    }
    free(url);
    return id;
}

static void test_claims_the_auto_created_endpoint_configuration(void)
{
    char *url = sh_xasprintf("%s/configurations", T.cd_url), *body, *eid, *cached, *remembered;
    json_t *v;
    long st;

    body = sh_xasprintf("{\"collection\":\"%s\",\"ttl\":30,\"source\":{\"url\":"
                        "\"http://127.0.0.1:9/\"},\"fields\":{\"title\":\"h1\"}}",
                        T.collection);
    v = http_json("POST", url, body, &st);
    if (st != 201)
        CHECK_FAIL("POST /configurations: %ld", st);
    json_decref(v);
    free(body);
    eid = endpoint_config_id();

    start_endpoint(NULL);
    {
        char *hurl = sh_xasprintf("%s/health", T.ep_url);
        v = http_json("GET", hurl, NULL, &st);
        free(hurl);
    }
    /* no datasource, no Redis copy: unhealthy, but the configuration is known */
    ASSERT_EQ(st, 503);
    ASSERT_STR_EQ(health_check(v, "configuration"), eid);
    ASSERT_STR_EQ(health_check(v, "collection"), T.collection);
    ASSERT_STR_EQ(health_check(v, "data"), "none");
    json_decref(v);

    /* config-discovery recorded the claim */
    {
        char *curl = sh_xasprintf("%s/configurations/%s", T.cd_url, eid);
        v = http_json("GET", curl, NULL, &st);
        ASSERT_EQ(st, 200);
        /* the claim records HOSTNAME (a spare's unit name), not SERVICE_ADDRESS */
        ASSERT_STR_EQ(json_string_value(json_object_get(v, "container")), "ep-config-claimer");
        json_decref(v);
        free(curl);
    }
    /* cached document and remembered claim */
    body = sh_xasprintf("scrapr:config:%s", eid);
    cached = redis_get(body);
    ASSERT_NOT_NULL(cached);
    ASSERT_STR_CONTAINS(cached, T.collection);
    remembered = redis_get("scrapr:endpoint:config_id");
    ASSERT_STR_EQ(remembered, eid);

    /* /items without any data: 503 with Retry-After, never an empty array */
    {
        char *iurl = sh_xasprintf("%s/items", T.ep_url), *raw = NULL, *resp = NULL, *ra;
        ASSERT_EQ(th_http("GET", iurl, NULL, NULL, &st, &resp, &raw), 0);
        ASSERT_EQ(st, 503);
        ra = th_header(raw, "Retry-After");
        ASSERT_STR_EQ(ra, "1");
        free(ra);
        free(raw);
        free(resp);
        free(iurl);
    }
    free(cached);
    free(remembered);
    free(body);
    free(eid);
    free(url);
}

static void test_restart_with_config_discovery_down_uses_cache(void)
{
    char *eid = redis_get("scrapr:endpoint:config_id"), *hurl;
    json_t *v;
    long st;
    ASSERT_EQ(th_kill(T.ep, SIGTERM), 0);
    T.ep = 0;
    ASSERT_GE(th_kill(T.cd, SIGTERM), 0);
    T.cd = 0;
    start_endpoint(NULL);
    hurl = sh_xasprintf("%s/health", T.ep_url);
    v = http_json("GET", hurl, NULL, &st);
    ASSERT_STR_EQ(health_check(v, "configuration"), eid);
    json_decref(v);
    ASSERT_EQ(th_kill(T.ep, SIGTERM), 0);
    T.ep = 0;
    free(hurl);
    free(eid);
}

static void test_config_id_is_fetched(void)
{
    char *eid = redis_get("scrapr:endpoint:config_id"), *hurl, *log;
    json_t *v;
    long st;
    start_cd(getenv("EP_TEST_DB"));
    start_endpoint(eid);
    hurl = sh_xasprintf("%s/health", T.ep_url);
    v = http_json("GET", hurl, NULL, &st);
    ASSERT_STR_EQ(health_check(v, "configuration"), eid);
    json_decref(v);
    log = th_log_read(T.ep);
    ASSERT_STR_CONTAINS(log, "from=config-discovery");
    free(log);
    ASSERT_EQ(th_kill(T.ep, SIGTERM), 0);
    T.ep = 0;
    free(hurl);
    free(eid);
}

int main(void)
{
    char *db;
    (void)REQUIRE_ENV("MONGO_URL");
    (void)REQUIRE_ENV("CONSUL_HTTP_ADDR");
    if (atexit(cleanup) != 0)
        CHECK_FAIL("atexit");
    T.redis_port = th_free_port();
    T.cd_port = th_free_port();
    T.ep_port = th_free_port();
    T.dead_port = th_dead_port();
    T.redis_url = sh_xasprintf("redis://127.0.0.1:%u", T.redis_port);
    T.cd_url = sh_xasprintf("http://127.0.0.1:%u", T.cd_port);
    T.ep_url = sh_xasprintf("http://127.0.0.1:%u", T.ep_port);
    T.collection = th_unique("epcfg");
    db = th_unique("t_endpoint_config");
    if (setenv("EP_TEST_DB", db, 1) != 0)
        CHECK_FAIL("setenv");
    start_redis();
    start_cd(db);
    RUN(test_claims_the_auto_created_endpoint_configuration);
    RUN(test_restart_with_config_discovery_down_uses_cache);
    RUN(test_config_id_is_fetched);
    cleanup();
    free(db);
    return 0;
}
