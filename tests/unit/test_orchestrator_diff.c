/* Pure orchestrator logic: configuration hashing, desired units (names, env,
 * Redis per unit, ports) and the diff that turns desired vs actual into
 * create/update/replace/remove actions. */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "orchestrator.h"
#include "shared/xalloc.h"

static struct orch_config cfg;

static void setup(void)
{
    memset(&cfg, 0, sizeof(cfg));
    cfg.driver = (char *)"engine";
    cfg.image_scraper = (char *)"img/scraper";
    cfg.image_endpoint = (char *)"img/endpoint";
    cfg.image_redis = (char *)"img/redis";
    cfg.network = (char *)"net";
    cfg.owner = (char *)"own";
    cfg.prefix = (char *)"sc";
    cfg.port_lo = 8100;
    cfg.port_hi = 8101;
    cfg.scraper_port = 3002;
    cfg.endpoint_port = 3000;
    cfg.consul_addr = (char *)"consul:8500";
    cfg.log_level = (char *)"info";
    cfg.log_format = (char *)"text";
    cfg.api_token = (char *)"tok";
}

static json_t *scraper(const char *id, int replicas, long version, long ttl)
{
    return json_pack("{s:s, s:s, s:s, s:i, s:I, s:I, s:n, s:{s:s}}", "_id", id, "type", "scraper",
                     "collection", "quotes", "replicas", replicas, "version", (json_int_t)version,
                     "ttl", (json_int_t)ttl, "container", "source", "url", "http://x/");
}

static json_t *endpoint(const char *id, long version)
{
    return json_pack("{s:s, s:s, s:s, s:I, s:I}", "_id", id, "type", "endpoint", "collection",
                     "quotes", "version", (json_int_t)version, "ttl", (json_int_t)60);
}

static int has_env(const struct orch_unit *u, const char *kv)
{
    size_t i;
    json_t *e;

    json_array_foreach(u->env, i, e) if (strcmp(json_string_value(e), kv) == 0) return 1;
    return 0;
}

/* What the engine would report after creating every desired unit. */
static void as_actual(const struct orch_units *d, struct orch_units *ret)
{
    size_t i;

    orch_units_init(ret);
    for (i = 0; i < d->n; i++) {
        struct orch_unit *a = orch_units_add(ret);
        a->name = sh_xstrdup(d->v[i].name);
        a->config_id = sh_xstrdup(d->v[i].config_id);
        a->type = sh_xstrdup(d->v[i].type);
        a->collection = sh_xstrdup(d->v[i].collection);
        a->role = d->v[i].role;
        a->running_tasks = 1;
        a->spec_hash = sh_xstrdup(d->v[i].spec_hash);
        a->port = d->v[i].port;
        a->state = sh_xstrdup("running");
    }
}

static int broken_if_exited(const struct orch_unit *a)
{
    return a->state && strcmp(a->state, "exited") == 0;
}

static void test_config_hash_ignores_assignment_fields(void)
{
    json_t *a = scraper("aaaaaaaaaaaaaaaaaaaaaaaa", 1, 1, 60);
    json_t *b = json_deep_copy(a);
    char ha[17], hb[17];

    (void)json_object_set_new(b, "container", json_string("sc-scraper-x-0"));
    (void)json_object_set_new(b, "version", json_integer(7));
    (void)json_object_set_new(b, "updated_at", json_string("2026-01-01T00:00:00Z"));
    (void)json_object_set_new(b, "url", json_string("http://h:8100/items"));
    orch_config_hash(a, ha);
    orch_config_hash(b, hb);
    ASSERT_STR_EQ(ha, hb);
    (void)json_object_set_new(b, "ttl", json_integer(61));
    orch_config_hash(b, hb);
    ASSERT(strcmp(ha, hb) != 0);
    json_decref(a);
    json_decref(b);
}

static void test_scraper_replicas_each_get_their_own_redis(void)
{
    json_t *configs = json_pack("[o]", scraper("abc123", 2, 3, 60)), *problems = NULL;
    struct orch_units d;
    const struct orch_unit *app1, *redis1;

    orch_desired_build(&cfg, configs, NULL, &d, &problems);
    ASSERT_EQ(json_array_size(problems), 0);
    ASSERT_EQ(d.n, 4);
    app1 = orch_units_find(&d, "sc-scraper-abc123-1");
    redis1 = orch_units_find(&d, "sc-scraper-abc123-1-redis");
    ASSERT_NOT_NULL(app1);
    ASSERT_NOT_NULL(redis1);
    ASSERT_EQ(redis1->role, ORCH_ROLE_REDIS);
    ASSERT(has_env(app1, "CONFIG_ID=abc123"));
    ASSERT(has_env(app1, "REDIS_URL=redis://sc-scraper-abc123-1-redis:6379"));
    ASSERT(has_env(app1, "SERVICE_ADDRESS=sc-scraper-abc123-1"));
    ASSERT(has_env(app1, "CONSUL_HTTP_ADDR=consul:8500"));
    ASSERT(has_env(app1, "SCRAPR_API_TOKEN=tok"));
    ASSERT(has_env(app1, "PORT=3002"));
    ASSERT(has_env(app1, "LOG_LEVEL=info"));
    ASSERT_EQ(app1->version, 3);
    ASSERT_EQ(app1->port, 0);
    {
        char *c = orch_assigned_container(&d, "abc123");
        ASSERT_STR_EQ(c, "sc-scraper-abc123-0,sc-scraper-abc123-1");
        free(c);
    }
    orch_units_done(&d);
    json_decref(problems);
    json_decref(configs);
}

static void test_spawn_consul_and_extra_env_are_passed(void)
{
    json_t *configs = json_pack("[o]", scraper("abc123", 1, 1, 60)), *problems = NULL;
    struct orch_units d;

    cfg.spawn_consul = (char *)"consul.internal:8500";
    cfg.spawn_env = (char *)"A=1;;B=two words;bad";
    orch_desired_build(&cfg, configs, NULL, &d, &problems);
    ASSERT(has_env(orch_units_find(&d, "sc-scraper-abc123-0"),
                   "CONSUL_HTTP_ADDR=consul.internal:8500"));
    ASSERT(has_env(orch_units_find(&d, "sc-scraper-abc123-0"), "A=1"));
    ASSERT(has_env(orch_units_find(&d, "sc-scraper-abc123-0"), "B=two words"));
    ASSERT(!has_env(orch_units_find(&d, "sc-scraper-abc123-0"), "bad"));
    orch_units_done(&d);
    json_decref(problems);
    json_decref(configs);
}

static void test_endpoints_get_ports_and_keep_them(void)
{
    json_t *configs = json_pack("[o,o]", endpoint("e1", 1), endpoint("e2", 1)), *problems = NULL;
    struct orch_units d, a, d2;
    struct orch_unit *e1;

    orch_desired_build(&cfg, configs, NULL, &d, &problems);
    ASSERT_EQ(json_array_size(problems), 0);
    ASSERT_EQ(orch_units_find(&d, "sc-endpoint-e1")->port, 8100);
    ASSERT_EQ(orch_units_find(&d, "sc-endpoint-e2")->port, 8101);
    ASSERT_EQ(orch_units_find(&d, "sc-endpoint-e1-redis")->port, 0);
    ASSERT(has_env(orch_units_find(&d, "sc-endpoint-e1"), "PORT=3000"));
    json_decref(problems);

    /* e1 actually runs on 8101 and e2 is gone: e1 keeps 8101, a new e3 takes 8100. */
    as_actual(&d, &a);
    e1 = (struct orch_unit *)orch_units_find(&a, "sc-endpoint-e1");
    e1->port = 8101;
    ((struct orch_unit *)orch_units_find(&a, "sc-endpoint-e2"))->port = 0;
    json_decref(configs);
    configs = json_pack("[o,o]", endpoint("e1", 1), endpoint("e3", 1));
    orch_desired_build(&cfg, configs, &a, &d2, &problems);
    ASSERT_EQ(orch_units_find(&d2, "sc-endpoint-e1")->port, 8101);
    ASSERT_EQ(orch_units_find(&d2, "sc-endpoint-e3")->port, 8100);
    orch_units_done(&d2);
    json_decref(problems);

    /* A third endpoint does not fit into a 2-port range: reported, not placed. */
    json_decref(configs);
    configs = json_pack("[o,o,o]", endpoint("e1", 1), endpoint("e3", 1), endpoint("e4", 1));
    orch_desired_build(&cfg, configs, &a, &d2, &problems);
    ASSERT_EQ(json_array_size(problems), 1);
    ASSERT_STR_EQ(json_string_value(json_object_get(json_array_get(problems, 0), "config_id")),
                  "e4");
    ASSERT_NULL(orch_units_find(&d2, "sc-endpoint-e4"));
    ASSERT_NOT_NULL(orch_units_find(&d2, "sc-endpoint-e4-redis"));
    orch_units_done(&d2);
    orch_units_done(&a);
    orch_units_done(&d);
    json_decref(problems);
    json_decref(configs);
}

static void test_bad_configurations_are_reported(void)
{
    json_t *configs = json_pack("[{s:s,s:s}, {s:s,s:s}, {s:s,s:s,s:i}, {s:s}]", "_id", "bad id!",
                                "type", "scraper", "_id", "ok1", "type", "crawler", "_id", "ok2",
                                "type", "scraper", "replicas", -1, "type", "scraper");
    json_t *problems = NULL;
    struct orch_units d;

    orch_desired_build(&cfg, configs, NULL, &d, &problems);
    ASSERT_EQ(d.n, 0);
    ASSERT_EQ(json_array_size(problems), 4);
    orch_units_done(&d);
    json_decref(problems);
    json_decref(configs);
}

static void test_diff_creates_redis_before_app(void)
{
    json_t *configs = json_pack("[o]", scraper("abc", 1, 1, 60)), *problems = NULL;
    struct orch_units d, a;
    struct orch_actions acts;

    orch_desired_build(&cfg, configs, NULL, &d, &problems);
    orch_units_init(&a);
    orch_diff(&d, &a, broken_if_exited, &acts);
    ASSERT_EQ(acts.n, 2);
    ASSERT_EQ(acts.v[0].kind, ORCH_CREATE);
    ASSERT_STR_EQ(acts.v[0].desired->name, "sc-scraper-abc-0-redis");
    ASSERT_STR_EQ(acts.v[1].desired->name, "sc-scraper-abc-0");
    orch_actions_done(&acts);
    orch_units_done(&d);
    json_decref(problems);
    json_decref(configs);
}

static void test_diff_in_sync_and_version_only_change_do_nothing(void)
{
    json_t *configs = json_pack("[o,o]", scraper("abc", 1, 1, 60), endpoint("e1", 1));
    json_t *problems = NULL;
    struct orch_units d, a, d2;
    struct orch_actions acts;

    orch_desired_build(&cfg, configs, NULL, &d, &problems);
    as_actual(&d, &a);
    orch_diff(&d, &a, broken_if_exited, &acts);
    ASSERT_EQ(acts.n, 0);
    orch_actions_done(&acts);
    json_decref(problems);

    /* Our own PUT bumps version and sets container/url: no redeploy. */
    (void)json_object_set_new(json_array_get(configs, 0), "version", json_integer(2));
    (void)json_object_set_new(json_array_get(configs, 0), "container",
                              json_string("sc-scraper-abc-0"));
    (void)json_object_set_new(json_array_get(configs, 1), "url",
                              json_string("http://h:8100/items"));
    orch_desired_build(&cfg, configs, &a, &d2, &problems);
    orch_diff(&d2, &a, broken_if_exited, &acts);
    ASSERT_EQ(acts.n, 0);
    orch_actions_done(&acts);
    orch_units_done(&d2);
    orch_units_done(&a);
    orch_units_done(&d);
    json_decref(problems);
    json_decref(configs);
}

static void test_diff_config_change_updates_app_not_redis(void)
{
    json_t *configs = json_pack("[o]", scraper("abc", 1, 1, 60)), *problems = NULL;
    struct orch_units d, a, d2;
    struct orch_actions acts;

    orch_desired_build(&cfg, configs, NULL, &d, &problems);
    as_actual(&d, &a);
    json_decref(problems);
    (void)json_object_set_new(json_array_get(configs, 0), "ttl", json_integer(30));
    (void)json_object_set_new(json_array_get(configs, 0), "version", json_integer(2));
    orch_desired_build(&cfg, configs, &a, &d2, &problems);
    orch_diff(&d2, &a, broken_if_exited, &acts);
    ASSERT_EQ(acts.n, 1);
    ASSERT_EQ(acts.v[0].kind, ORCH_UPDATE);
    ASSERT_STR_EQ(acts.v[0].desired->name, "sc-scraper-abc-0");
    ASSERT_STR_EQ(acts.v[0].actual->name, "sc-scraper-abc-0");
    orch_actions_done(&acts);
    orch_units_done(&d2);
    orch_units_done(&a);
    orch_units_done(&d);
    json_decref(problems);
    json_decref(configs);
}

static void test_diff_removes_apps_before_redis_and_replaces_broken(void)
{
    json_t *configs = json_pack("[o,o]", scraper("abc", 1, 1, 60), scraper("def", 1, 1, 60));
    json_t *problems = NULL, *one;
    struct orch_units d, a, d2;
    struct orch_actions acts;

    orch_desired_build(&cfg, configs, NULL, &d, &problems);
    as_actual(&d, &a);
    json_decref(problems);
    free(((struct orch_unit *)orch_units_find(&a, "sc-scraper-abc-0"))->state);
    ((struct orch_unit *)orch_units_find(&a, "sc-scraper-abc-0"))->state = sh_xstrdup("exited");
    one = json_pack("[O]", json_array_get(configs, 0));
    orch_desired_build(&cfg, one, &a, &d2, &problems);
    orch_diff(&d2, &a, broken_if_exited, &acts);
    ASSERT_EQ(acts.n, 3);
    ASSERT_EQ(acts.v[0].kind, ORCH_REMOVE);
    ASSERT_STR_EQ(acts.v[0].actual->name, "sc-scraper-def-0");
    ASSERT_EQ(acts.v[1].kind, ORCH_REMOVE);
    ASSERT_STR_EQ(acts.v[1].actual->name, "sc-scraper-def-0-redis");
    ASSERT_EQ(acts.v[2].kind, ORCH_REPLACE);
    ASSERT_STR_EQ(acts.v[2].desired->name, "sc-scraper-abc-0");
    orch_actions_done(&acts);
    orch_units_done(&d2);
    orch_units_done(&a);
    orch_units_done(&d);
    json_decref(problems);
    json_decref(one);
    json_decref(configs);
}

static void test_image_change_updates_everything(void)
{
    json_t *configs = json_pack("[o]", scraper("abc", 1, 1, 60)), *problems = NULL;
    struct orch_units d, a, d2;
    struct orch_actions acts;

    orch_desired_build(&cfg, configs, NULL, &d, &problems);
    as_actual(&d, &a);
    json_decref(problems);
    cfg.image_redis = (char *)"img/redis:2";
    orch_desired_build(&cfg, configs, &a, &d2, &problems);
    orch_diff(&d2, &a, broken_if_exited, &acts);
    ASSERT_EQ(acts.n, 1);
    ASSERT_EQ(acts.v[0].kind, ORCH_UPDATE);
    ASSERT_STR_EQ(acts.v[0].desired->name, "sc-scraper-abc-0-redis");
    orch_actions_done(&acts);
    orch_units_done(&d2);
    orch_units_done(&a);
    orch_units_done(&d);
    json_decref(problems);
    json_decref(configs);
}

static size_t count_kind(const struct orch_actions *acts, int kind)
{
    size_t i, n = 0;

    for (i = 0; i < acts->n; i++)
        n += acts->v[i].kind == kind;
    return n;
}

static void test_spares_kept_free_then_adopted_without_restart(void)
{
    json_t *none = json_array(), *configs, *problems = NULL, *sc, *ep;
    struct orch_units d, a, d2;
    struct orch_actions acts;
    const struct orch_unit *u;
    size_t i;

    cfg.spares = 1;
    cfg.driver = (char *)"swarm";
    cfg.revision_key = (char *)"scrapr/revisions/configurations";
    orch_desired_build(&cfg, none, NULL, &d, &problems);
    json_decref(problems);
    ASSERT_EQ(d.n, 4);
    u = orch_units_find(&d, "sc-spare-scraper-0");
    ASSERT_NOT_NULL(u);
    ASSERT(u->spare);
    ASSERT_STR_EQ(u->config_id, "");
    ASSERT(has_env(u, "REDIS_URL=redis://sc-spare-scraper-0-redis:6379"));
    ASSERT(has_env(u, "SCRAPR_REVISION_KEY=scrapr/revisions/configurations"));
    for (i = 0; i < json_array_size(u->env); i++)
        ASSERT(strncmp(json_string_value(json_array_get(u->env, i)), "CONFIG_ID=", 10) != 0);
    ASSERT_NOT_NULL(orch_units_find(&d, "sc-spare-scraper-0-redis"));
    u = orch_units_find(&d, "sc-spare-endpoint-0");
    ASSERT_NOT_NULL(u);
    ASSERT_EQ(u->port, 8100);
    ASSERT_EQ(orch_spare_index(&cfg, "endpoint", "sc-spare-endpoint-0"), 0);
    ASSERT_EQ(orch_spare_index(&cfg, "scraper", "sc-spare-endpoint-0"), -1);
    ASSERT_EQ(orch_spare_index(&cfg, "scraper", "sc-spare-scraper-0-redis"), -1);
    ASSERT_EQ(orch_spare_index(&cfg, "scraper", "sc-spare-scraper-07"), -1);
    ASSERT_EQ(orch_spare_index(&cfg, "scraper", "sc-spare-scraper-12"), 12);

    /* Both spares claim a configuration: same specs (no restart), service
     * labels follow (update in place), and a new free spare of each type. */
    as_actual(&d, &a);
    sc = scraper("abc", 1, 2, 60);
    (void)json_object_set_new(sc, "container", json_string("sc-spare-scraper-0"));
    ep = endpoint("def", 2);
    (void)json_object_set_new(ep, "container", json_string("sc-spare-endpoint-0"));
    configs = json_pack("[o,o]", sc, ep);
    orch_desired_build(&cfg, configs, &a, &d2, &problems);
    ASSERT_EQ(json_array_size(problems), 0);
    json_decref(problems);
    ASSERT_EQ(d2.n, 8);
    u = orch_units_find(&d2, "sc-spare-scraper-0");
    ASSERT_NOT_NULL(u);
    ASSERT_STR_EQ(u->config_id, "abc");
    ASSERT_STR_EQ(u->spec_hash, orch_units_find(&a, "sc-spare-scraper-0")->spec_hash);
    ASSERT_EQ(orch_units_find(&d2, "sc-spare-endpoint-0")->port, 8100);
    ASSERT_EQ(orch_units_find(&d2, "sc-spare-endpoint-1")->port, 8101);
    ASSERT_NOT_NULL(orch_units_find(&d2, "sc-spare-scraper-1-redis"));
    {
        char *c = orch_assigned_container(&d2, "abc");
        ASSERT_STR_EQ(c, "sc-spare-scraper-0");
        free(c);
    }
    orch_diff(&d2, &a, broken_if_exited, &acts);
    ASSERT_EQ(count_kind(&acts, ORCH_REMOVE), 0);
    ASSERT_EQ(count_kind(&acts, ORCH_REPLACE), 0);
    ASSERT_EQ(count_kind(&acts, ORCH_CREATE), 4);
    ASSERT_EQ(count_kind(&acts, ORCH_UPDATE), 4); /* labels of the two adopted pairs */
    for (i = 0; i < acts.n; i++)
        if (acts.v[i].kind == ORCH_UPDATE)
            ASSERT_STR_EQ(acts.v[i].desired->spec_hash, acts.v[i].actual->spec_hash);
    orch_actions_done(&acts);

    /* Engine containers cannot be relabelled: adoption is then no action. */
    cfg.driver = (char *)"engine";
    orch_units_done(&d2);
    orch_units_done(&a);
    orch_units_done(&d);
    orch_desired_build(&cfg, none, NULL, &d, &problems);
    json_decref(problems);
    as_actual(&d, &a);
    orch_desired_build(&cfg, configs, &a, &d2, &problems);
    json_decref(problems);
    orch_diff(&d2, &a, broken_if_exited, &acts);
    ASSERT_EQ(count_kind(&acts, ORCH_UPDATE), 0);
    ASSERT_EQ(count_kind(&acts, ORCH_CREATE), 4);
    orch_actions_done(&acts);
    orch_units_done(&d2);
    orch_units_done(&a);
    orch_units_done(&d);
    json_decref(configs);
    json_decref(none);
}

static void test_spare_of_a_deleted_configuration_is_removed_not_reused(void)
{
    json_t *none = json_array(), *problems = NULL;
    struct orch_units d, a, d2;
    struct orch_actions acts;
    size_t i;

    cfg.spares = 1;
    cfg.driver = (char *)"swarm";
    orch_desired_build(&cfg, none, NULL, &d, &problems);
    json_decref(problems);
    as_actual(&d, &a);
    /* spare 0 served configuration "gone", now deleted */
    for (i = 0; i < a.n; i++)
        if (strncmp(a.v[i].name, "sc-spare-scraper-0", 18) == 0) {
            free(a.v[i].config_id);
            a.v[i].config_id = sh_xstrdup("gone");
        }
    orch_desired_build(&cfg, none, &a, &d2, &problems);
    json_decref(problems);
    ASSERT_NULL(orch_units_find(&d2, "sc-spare-scraper-0"));
    ASSERT_NOT_NULL(orch_units_find(&d2, "sc-spare-scraper-1"));
    ASSERT_NOT_NULL(orch_units_find(&d2, "sc-spare-endpoint-0"));
    orch_diff(&d2, &a, broken_if_exited, &acts);
    ASSERT_EQ(count_kind(&acts, ORCH_REMOVE), 2);
    ASSERT_EQ(count_kind(&acts, ORCH_CREATE), 2);
    orch_actions_done(&acts);
    orch_units_done(&d2);
    orch_units_done(&a);
    orch_units_done(&d);
    json_decref(none);
}

int main(void)
{
    setup();
    RUN(test_config_hash_ignores_assignment_fields);
    RUN(test_scraper_replicas_each_get_their_own_redis);
    RUN(test_spawn_consul_and_extra_env_are_passed);
    setup();
    RUN(test_endpoints_get_ports_and_keep_them);
    RUN(test_bad_configurations_are_reported);
    RUN(test_diff_creates_redis_before_app);
    RUN(test_diff_in_sync_and_version_only_change_do_nothing);
    RUN(test_diff_config_change_updates_app_not_redis);
    RUN(test_diff_removes_apps_before_redis_and_replaces_broken);
    RUN(test_image_change_updates_everything);
    setup();
    RUN(test_spares_kept_free_then_adopted_without_restart);
    setup();
    RUN(test_spare_of_a_deleted_configuration_is_removed_not_reused);
    return 0;
}
