/* Desired state: configurations (from config-discovery) → units.
 *
 * orch_desired_build() is pure (unit-tested): per scraper configuration ×
 * `replicas` one scraper with its own Redis; per endpoint configuration one
 * endpoint (swarm: a service with `replicas` tasks behind one published port)
 * with its own Redis. Each unit's spec is hashed into the scrapr.spec-hash
 * label; the diff compares that hash, never `version`, because our own PUT of
 * `container`/`url` bumps `version` and must not cause a redeploy. Redis
 * units hash only their own spec (image, command, limits), so a configuration
 * change never replaces the Redis that holds a scraper's outbox.
 *
 * Spares: SCRAPR_SPARES scrapers and as many endpoints, each with its Redis,
 * run without CONFIG_ID and claim a new configuration themselves (POST
 * /configurations/claim as their own name), long before Docker could start
 * a unit for it. A configuration whose `container` names a spare adopts it:
 * the spare's units become that configuration's, with the same spec (so
 * nothing restarts; on Swarm only the service labels follow), and a new free
 * spare is started in its place.
 *
 * orch_desired_fetch()/orch_desired_record() talk to config-discovery over
 * shared/http_client.h. Called from the reconcile thread only. */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "orchestrator.h"
#include "shared/http_client.h"
#include "shared/xalloc.h"

#define MAX_REPLICAS 50
#define MAX_SPARE_INDEX 10000
#define PAGE 500

void orch_hash_str(const char *s, char ret[17])
{
    uint64_t h = 1469598103934665603ULL;

    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ULL;
    }
    (void)snprintf(ret, 17, "%016llx", (unsigned long long)h);
}

static void hash_json(const json_t *j, char ret[17])
{
    char *dump = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);

    orch_hash_str(dump ? dump : "", ret);
    free(dump);
}

void orch_config_hash(const json_t *config, char ret[17])
{
    /* replicas is left out too: scaling adds/removes units, it does not
     * restart the ones that stay. */
    static const char *const volatile_fields[] = {"_id",        "container",  "url",      "version",
                                                  "created_at", "updated_at", "replicas", NULL};
    json_t *c = json_deep_copy(config);
    size_t i;

    for (i = 0; volatile_fields[i]; i++)
        (void)json_object_del(c, volatile_fields[i]);
    hash_json(c, ret);
    json_decref(c);
}

char *orch_unit_name(const struct orch_config *cfg, const char *type, const char *config_id,
                     int replica, int role)
{
    const char *r = role == ORCH_ROLE_REDIS ? "-redis" : "";

    if (strcmp(type, "endpoint") == 0)
        return sh_xasprintf("%s-endpoint-%s%s", cfg->prefix, config_id, r);
    return sh_xasprintf("%s-scraper-%s-%d%s", cfg->prefix, config_id, replica, r);
}

static char *spare_name(const struct orch_config *cfg, const char *type, long k, int role)
{
    return sh_xasprintf("%s-spare-%s-%ld%s", cfg->prefix, type, k,
                        role == ORCH_ROLE_REDIS ? "-redis" : "");
}

long orch_spare_index(const struct orch_config *cfg, const char *type, const char *name)
{
    char *prefix = sh_xasprintf("%s-spare-%s-", cfg->prefix, type);
    size_t n = strlen(prefix);
    long k = -1;

    if (name && strncmp(name, prefix, n) == 0) {
        const char *d = name + n;
        char *end = NULL;
        long v;
        /* canonical decimal only: "7", never "07" or "7-redis" */
        if (isdigit((unsigned char)d[0]) && (d[0] != '0' || d[1] == '\0')) {
            v = strtol(d, &end, 10);
            if (end && *end == '\0' && v >= 0 && v < MAX_SPARE_INDEX)
                k = v;
        }
    }
    free(prefix);
    return k;
}

void orch_units_init(struct orch_units *u)
{
    memset(u, 0, sizeof(*u));
}

void orch_unit_done(struct orch_unit *x)
{
    free(x->name);
    free(x->config_id);
    free(x->type);
    free(x->collection);
    free(x->config_hash);
    free(x->spec_hash);
    json_decref(x->env);
    free(x->id);
    free(x->state);
    free(x->node_id);
    free(x->node_addr);
}

static char *dup_or_null(const char *s)
{
    return s ? sh_xstrdup(s) : NULL;
}

void orch_unit_copy(struct orch_unit *dst, const struct orch_unit *src)
{
    *dst = *src;
    dst->name = dup_or_null(src->name);
    dst->config_id = dup_or_null(src->config_id);
    dst->type = dup_or_null(src->type);
    dst->collection = dup_or_null(src->collection);
    dst->config_hash = dup_or_null(src->config_hash);
    dst->spec_hash = dup_or_null(src->spec_hash);
    dst->env = src->env ? json_deep_copy(src->env) : NULL;
    dst->id = dup_or_null(src->id);
    dst->state = dup_or_null(src->state);
    dst->node_id = dup_or_null(src->node_id);
    dst->node_addr = dup_or_null(src->node_addr);
}

void orch_units_done(struct orch_units *u)
{
    size_t i;

    if (!u)
        return;
    for (i = 0; i < u->n; i++)
        orch_unit_done(&u->v[i]);
    free(u->v);
    memset(u, 0, sizeof(*u));
}

struct orch_unit *orch_units_add(struct orch_units *u)
{
    if (u->n == u->cap) {
        u->cap = u->cap ? u->cap * 2 : 16;
        u->v = sh_xrealloc(u->v, u->cap * sizeof(*u->v));
    }
    memset(&u->v[u->n], 0, sizeof(u->v[0]));
    return &u->v[u->n++];
}

const struct orch_unit *orch_units_find(const struct orch_units *u, const char *name)
{
    size_t i;

    for (i = 0; u && i < u->n; i++)
        if (u->v[i].name && strcmp(u->v[i].name, name) == 0)
            return &u->v[i];
    return NULL;
}

/* Ids become parts of Docker names and DNS labels: keep them to [0-9A-Za-z]. */
static int id_ok(const char *id)
{
    size_t n = 0;

    if (!id)
        return 0;
    for (; id[n]; n++)
        if (!isalnum((unsigned char)id[n]))
            return 0;
    return n > 0 && n <= 32;
}

static void add_env(json_t *env, const char *k, const char *v)
{
    char *s = sh_xasprintf("%s=%s", k, v);

    (void)json_array_append_new(env, json_string(s));
    free(s);
}

/* Extra env for spawned apps: "K=V;K=V" (empty parts ignored). */
static void add_spawn_env(json_t *env, const char *spec)
{
    const char *p = spec;

    while (p && *p) {
        size_t n = strcspn(p, ";");
        if (n > 0 && memchr(p, '=', n))
            (void)json_array_append_new(env, json_stringn(p, n));
        p += n;
        if (*p == ';')
            p++;
    }
}

json_t *orch_unit_labels(const struct orch_config *cfg, const struct orch_unit *u)
{
    char ver[32], rep[16];
    json_t *l;

    (void)snprintf(ver, sizeof(ver), "%ld", u->version);
    (void)snprintf(rep, sizeof(rep), "%d", u->replica);
    l = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s}", ORCH_LABEL_OWNER, cfg->owner,
                  ORCH_LABEL_CONFIG_ID, u->config_id, ORCH_LABEL_TYPE, u->type,
                  ORCH_LABEL_COLLECTION, u->collection ? u->collection : "", ORCH_LABEL_VERSION,
                  ver, ORCH_LABEL_ROLE, u->role == ORCH_ROLE_REDIS ? "redis" : "app",
                  ORCH_LABEL_REPLICA, rep);
    if (u->config_hash)
        (void)json_object_set_new(l, ORCH_LABEL_CONFIG_HASH, json_string(u->config_hash));
    if (u->spec_hash)
        (void)json_object_set_new(l, ORCH_LABEL_SPEC_HASH, json_string(u->spec_hash));
    if (u->spare)
        (void)json_object_set_new(l, ORCH_LABEL_SPARE, json_string("1"));
    return l;
}

json_t *orch_unit_container_labels(const struct orch_config *cfg, const struct orch_unit *u)
{
    struct orch_unit free_spare;
    char none[1] = "";

    if (!u->spare)
        return orch_unit_labels(cfg, u);
    free_spare = *u; /* shallow: only read, with the adoption left out */
    free_spare.config_id = none;
    free_spare.collection = none;
    free_spare.version = 0;
    free_spare.config_hash = NULL;
    return orch_unit_labels(cfg, &free_spare);
}

const char *orch_unit_image(const struct orch_config *cfg, const struct orch_unit *u)
{
    if (u->role == ORCH_ROLE_REDIS)
        return cfg->image_redis;
    return strcmp(u->type, "endpoint") == 0 ? cfg->image_endpoint : cfg->image_scraper;
}

/* Command override: a JSON array, or words split on blanks. NULL = the image's. */
json_t *orch_unit_command(const struct orch_config *cfg, const struct orch_unit *u)
{
    const char *spec = u->role == ORCH_ROLE_REDIS         ? cfg->cmd_redis
                       : strcmp(u->type, "endpoint") == 0 ? cfg->cmd_endpoint
                                                          : cfg->cmd_scraper;
    json_t *a;
    const char *p;

    if (!spec || !*spec)
        return NULL;
    if (spec[0] == '[') {
        a = json_loads(spec, 0, NULL);
        if (json_is_array(a))
            return a;
        json_decref(a);
    }
    a = json_array();
    for (p = spec; *p;) {
        size_t n;
        while (*p == ' ' || *p == '\t')
            p++;
        n = strcspn(p, " \t");
        if (n)
            (void)json_array_append_new(a, json_stringn(p, n));
        p += n;
    }
    return a;
}

static void unit_hash(const struct orch_config *cfg, struct orch_unit *u)
{
    json_t *labels = orch_unit_container_labels(cfg, u);
    json_t *cmd = orch_unit_command(cfg, u);
    json_t *h;
    char hex[17];

    /* version moves with every PUT (ours included): it is recorded, not compared.
     * The config hash is what marks a user-visible change. */
    (void)json_object_del(labels, ORCH_LABEL_VERSION);
    if (u->role == ORCH_ROLE_REDIS)
        (void)json_object_del(labels, ORCH_LABEL_CONFIG_HASH);
    h = json_pack(
        "{s:s, s:o, s:o, s:O, s:s, s:f, s:I, s:I, s:I, s:s}", "image", orch_unit_image(cfg, u),
        "labels", labels, "cmd", cmd ? cmd : json_null(), "env", u->env ? u->env : json_null(),
        "network", cfg->network, "cpus", cfg->limit_cpus, "mem",
        (json_int_t)(u->role == ORCH_ROLE_REDIS ? cfg->redis_memory_mb : cfg->limit_memory_mb),
        "replicas", (json_int_t)u->replicas, "target",
        (json_int_t)(strcmp(u->type, "endpoint") == 0 ? cfg->endpoint_port : cfg->scraper_port),
        "driver", cfg->driver);
    hash_json(h, hex);
    json_decref(h);
    u->spec_hash = sh_xstrdup(hex);
}

static struct orch_unit *add_unit(struct orch_units *ret, const struct orch_config *cfg,
                                  const json_t *c, const char *type, int replica, int role,
                                  const char *chash)
{
    struct orch_unit *u = orch_units_add(ret);
    const char *id = json_string_value(json_object_get(c, "_id"));

    u->config_id = sh_xstrdup(id);
    u->type = sh_xstrdup(type);
    u->collection = sh_xstrdup(json_string_value(json_object_get(c, "collection"))
                                   ? json_string_value(json_object_get(c, "collection"))
                                   : "");
    u->role = role;
    u->replica = replica;
    u->version = (long)json_integer_value(json_object_get(c, "version"));
    u->config_hash = sh_xstrdup(chash);
    u->name = orch_unit_name(cfg, type, id, replica, role);
    u->replicas = 1;
    return u;
}

static void app_env(const struct orch_config *cfg, struct orch_unit *u, const char *redis_name)
{
    char *v;
    char port[16];

    u->env = json_array();
    if (!u->spare)
        add_env(u->env, "CONFIG_ID", u->config_id);
    v = sh_xasprintf("redis://%s:6379", redis_name);
    add_env(u->env, "REDIS_URL", v);
    free(v);
    add_env(u->env, "CONSUL_HTTP_ADDR", cfg->spawn_consul ? cfg->spawn_consul : cfg->consul_addr);
    if (cfg->api_token && *cfg->api_token)
        add_env(u->env, "SCRAPR_API_TOKEN", cfg->api_token);
    add_env(u->env, "LOG_LEVEL", cfg->log_level ? cfg->log_level : "info");
    add_env(u->env, "LOG_FORMAT", cfg->log_format ? cfg->log_format : "text");
    add_env(u->env, "SERVICE_ADDRESS", u->name);
    if (u->spare && cfg->revision_key) /* a spare claims as soon as this key moves */
        add_env(u->env, "SCRAPR_REVISION_KEY", cfg->revision_key);
    (void)snprintf(port, sizeof(port), "%ld",
                   strcmp(u->type, "endpoint") == 0 ? cfg->endpoint_port : cfg->scraper_port);
    add_env(u->env, "PORT", port);
    add_spawn_env(u->env, cfg->spawn_env);
}

/* Spare k of type (app + Redis); c is the configuration adopting it, or NULL
 * for a free spare. The spec (and so the hash) is the same either way. */
static void add_spare(struct orch_units *ret, const struct orch_config *cfg, const char *type,
                      long k, const json_t *c, const char *chash)
{
    struct orch_unit *pair[2];
    int i;

    for (i = 0; i < 2; i++) {
        struct orch_unit *u = pair[i] = orch_units_add(ret);
        const char *coll = c ? json_string_value(json_object_get(c, "collection")) : NULL;
        u->config_id = sh_xstrdup(c ? json_string_value(json_object_get(c, "_id")) : "");
        u->type = sh_xstrdup(type);
        u->collection = sh_xstrdup(coll ? coll : "");
        u->role = i == 0 ? ORCH_ROLE_REDIS : ORCH_ROLE_APP;
        u->version = c ? (long)json_integer_value(json_object_get(c, "version")) : 0;
        u->config_hash = c ? sh_xstrdup(chash) : NULL;
        u->name = spare_name(cfg, type, k, u->role);
        u->replicas = 1;
        u->spare = 1;
        u->relabel = strcmp(cfg->driver, "swarm") == 0;
    }
    app_env(cfg, pair[1], pair[0]->name);
    unit_hash(cfg, pair[0]);
    unit_hash(cfg, pair[1]);
}

/* Keeps cfg->spares free spares of type: the free ones already running
 * (lowest index first: a free spare is a spare app not adopted, whose labels
 * name no configuration — an adopted one whose configuration went is removed,
 * not reused), then new ones at the lowest unused index. used[] marks the
 * indexes taken (adopted, or kept here). */
static void add_free_spares(struct orch_units *ret, const struct orch_config *cfg,
                            const struct orch_units *actual, const char *type, char *used)
{
    /* per index of an actual spare app: 1 free (labels name no configuration),
     * 2 not free (an adopted-and-released spare still being removed keeps
     * its index) */
    char *seen = sh_xcalloc(MAX_SPARE_INDEX, 1);
    long k, kept = 0;
    size_t i;

    for (i = 0; actual && i < actual->n; i++) {
        const struct orch_unit *a = &actual->v[i];
        if (a->role != ORCH_ROLE_APP || (k = orch_spare_index(cfg, type, a->name)) < 0)
            continue;
        seen[k] = !a->config_id || !*a->config_id ? 1 : 2;
    }
    for (k = 0; k < MAX_SPARE_INDEX && kept < cfg->spares; k++)
        if (!used[k] && seen[k] == 1) {
            add_spare(ret, cfg, type, k, NULL, NULL);
            used[k] = 1;
            kept++;
        }
    for (k = 0; k < MAX_SPARE_INDEX && kept < cfg->spares; k++)
        if (!used[k] && !seen[k]) {
            add_spare(ret, cfg, type, k, NULL, NULL);
            used[k] = 1;
            kept++;
        }
    free(seen);
}

static void problem(json_t *problems, const char *id, const char *msg)
{
    (void)json_array_append_new(problems, json_pack("{s:s?, s:s}", "config_id", id, "error", msg));
}

static int port_taken(const struct orch_units *u, long port)
{
    size_t i;

    for (i = 0; u && i < u->n; i++)
        if (u->v[i].port == port)
            return 1;
    return 0;
}

void orch_desired_build(const struct orch_config *cfg, const json_t *configs,
                        const struct orch_units *actual, struct orch_units *ret,
                        json_t **ret_problems)
{
    json_t *problems = json_array();
    char *used_scraper = sh_xcalloc(MAX_SPARE_INDEX, 1);
    char *used_endpoint = sh_xcalloc(MAX_SPARE_INDEX, 1);
    size_t i;
    const json_t *c;

    orch_units_init(ret);
    json_array_foreach(configs, i, c)
    {
        const char *id = json_string_value(json_object_get(c, "_id"));
        const char *type = json_string_value(json_object_get(c, "type"));
        const json_t *jr = json_object_get(c, "replicas");
        json_int_t replicas = jr ? json_integer_value(jr) : 1;
        char chash[17];
        char *used;
        long k;
        int r;

        if (!id_ok(id)) {
            problem(problems, id, "configuration has no usable _id");
            continue;
        }
        if (!type || (strcmp(type, "scraper") != 0 && strcmp(type, "endpoint") != 0)) {
            problem(problems, id, "configuration type is neither scraper nor endpoint");
            continue;
        }
        if (jr && (!json_is_integer(jr) || replicas < 0 || replicas > MAX_REPLICAS)) {
            problem(problems, id, "replicas must be an integer 0..50");
            continue;
        }
        orch_config_hash(c, chash);
        /* Adopted spare: one replica only (claims skip the others). */
        used = strcmp(type, "endpoint") == 0 ? used_endpoint : used_scraper;
        k = orch_spare_index(cfg, type, json_string_value(json_object_get(c, "container")));
        if (k >= 0 && !used[k] &&
            (replicas == 1 || (replicas == 0 && strcmp(type, "endpoint") == 0))) {
            used[k] = 1;
            add_spare(ret, cfg, type, k, c, chash);
            continue;
        }
        if (strcmp(type, "endpoint") == 0) {
            struct orch_unit *redis, *app;
            if (replicas < 1)
                replicas = 1;
            redis = add_unit(ret, cfg, c, type, 0, ORCH_ROLE_REDIS, chash);
            app = add_unit(ret, cfg, c, type, 0, ORCH_ROLE_APP, chash);
            /* A single engine cannot put several containers behind one host port. */
            app->replicas = strcmp(cfg->driver, "swarm") == 0 ? replicas : 1;
            app_env(cfg, app, redis->name);
            unit_hash(cfg, redis);
            unit_hash(cfg, app);
            continue;
        }
        for (r = 0; r < replicas; r++) {
            struct orch_unit *redis = add_unit(ret, cfg, c, type, r, ORCH_ROLE_REDIS, chash);
            struct orch_unit *app = add_unit(ret, cfg, c, type, r, ORCH_ROLE_APP, chash);
            app_env(cfg, app, redis->name);
            unit_hash(cfg, redis);
            unit_hash(cfg, app);
        }
    }

    add_free_spares(ret, cfg, actual, "scraper", used_scraper);
    add_free_spares(ret, cfg, actual, "endpoint", used_endpoint);
    free(used_scraper);
    free(used_endpoint);

    /* Ports: an endpoint keeps the port it already publishes; new ones take the
     * lowest free port of the range. Out of ports → a problem, and no unit. */
    for (i = 0; i < ret->n; i++) {
        struct orch_unit *u = &ret->v[i];
        const struct orch_unit *a;
        if (u->role != ORCH_ROLE_APP || strcmp(u->type, "endpoint") != 0)
            continue;
        a = orch_units_find(actual, u->name);
        if (a && a->port >= cfg->port_lo && a->port <= cfg->port_hi)
            u->port = a->port;
    }
    for (i = 0; i < ret->n; i++) {
        struct orch_unit *u = &ret->v[i];
        long p;
        if (u->role != ORCH_ROLE_APP || strcmp(u->type, "endpoint") != 0 || u->port)
            continue;
        for (p = cfg->port_lo; p <= cfg->port_hi; p++)
            if (!port_taken(actual, p) && !port_taken(ret, p))
                break;
        if (p > cfg->port_hi) {
            problem(problems, u->config_id, "no free endpoint port left in SCRAPR_ENDPOINT_PORTS");
            u->port = -1;
            continue;
        }
        u->port = p;
    }
    /* Drop endpoints that got no port (and keep their Redis: harmless, and it
     * carries the cache for when a port frees up). */
    for (i = 0; i < ret->n; i++) {
        if (ret->v[i].port == -1) {
            orch_unit_done(&ret->v[i]);
            memmove(&ret->v[i], &ret->v[i + 1], (ret->n - i - 1) * sizeof(ret->v[0]));
            ret->n--;
            i--;
        }
    }
    *ret_problems = problems;
}

char *orch_assigned_container(const struct orch_units *desired, const char *config_id)
{
    char *out = NULL;
    size_t i;

    for (i = 0; i < desired->n; i++) {
        const struct orch_unit *u = &desired->v[i];
        char *joined;
        if (u->role != ORCH_ROLE_APP || strcmp(u->config_id, config_id) != 0)
            continue;
        joined = out ? sh_xasprintf("%s,%s", out, u->name) : sh_xstrdup(u->name);
        free(out);
        out = joined;
    }
    return out;
}

/* ---- HTTP side ---- */

static char *cd_base(const struct orch_config *cfg, struct sh_discovery *disc, struct sh_err *err)
{
    char *url = NULL;

    if (cfg->config_discovery_url && *cfg->config_discovery_url) {
        size_t n = strlen(cfg->config_discovery_url);
        while (n > 0 && cfg->config_discovery_url[n - 1] == '/')
            n--;
        return sh_xstrndup(cfg->config_discovery_url, n);
    }
    if (!disc) {
        sh_err_set(err, SH_ECONFIG, "no config-discovery URL and no Consul discovery");
        return NULL;
    }
    if (sh_discovery_pick(disc, 2000, &url, err) < 0)
        return NULL;
    return url;
}

static void client_opts(const struct orch_config *cfg, struct sh_http_client_opts *o)
{
    memset(o, 0, sizeof(*o));
    o->connect_timeout_ms = 2000;
    o->timeout_ms = 10000;
    o->retries = 2;
    o->backoff_ms = 100;
    o->bearer_token = cfg->api_token && *cfg->api_token ? cfg->api_token : NULL;
}

int orch_desired_fetch(const struct orch_config *cfg, struct sh_discovery *disc, json_t **ret,
                       struct sh_err *err)
{
    struct sh_http_client_opts o;
    char *base = cd_base(cfg, disc, err);
    json_t *all;
    long skip = 0;

    if (!base)
        return -1;
    client_opts(cfg, &o);
    all = json_array();
    for (;;) {
        struct sh_http_response r;
        char *url = sh_xasprintf("%s/configurations?limit=%d&skip=%ld", base, PAGE, skip);
        json_t *doc, *list;
        json_error_t jerr;
        int rc = sh_http_request(&o, "GET", url, NULL, NULL, 0, &r, err);
        size_t got;

        free(url);
        if (rc < 0) {
            sh_err_prefix(err, "config-discovery %s", base);
            goto fail;
        }
        if (r.status != 200) {
            sh_err_set(err, SH_EUPSTREAM,
                       "config-discovery %s: GET /configurations: HTTP %ld: %.200s", base, r.status,
                       r.body ? r.body : "");
            sh_http_response_done(&r);
            goto fail;
        }
        doc = json_loadb(r.body, r.body_len, 0, &jerr);
        sh_http_response_done(&r);
        list = json_object_get(doc, "configurations");
        if (!json_is_array(list)) {
            sh_err_set(err, SH_EPROTO, "config-discovery %s: no configurations array", base);
            json_decref(doc);
            goto fail;
        }
        got = json_array_size(list);
        (void)json_array_extend(all, list);
        skip += (long)got;
        {
            json_int_t total = json_integer_value(json_object_get(doc, "total"));
            json_decref(doc);
            if (got == 0 || skip >= total)
                break;
        }
    }
    free(base);
    *ret = all;
    return 0;
fail:
    free(base);
    json_decref(all);
    return -1;
}

int orch_desired_record(const struct orch_config *cfg, struct sh_discovery *disc,
                        const json_t *config, const char *container, const char *url,
                        struct sh_err *err)
{
    struct sh_http_client_opts o;
    struct sh_http_response r;
    const char *id = json_string_value(json_object_get(config, "_id"));
    char *base = cd_base(cfg, disc, err);
    char *full, *esc;
    json_t *body;
    int rc;

    if (!base)
        return -1;
    client_opts(cfg, &o);
    o.retry_unsafe = 1; /* PUT of the same fields is idempotent */
    body = json_deep_copy(config);
    (void)json_object_set_new(body, "container", container ? json_string(container) : json_null());
    if (url)
        (void)json_object_set_new(body, "url", json_string(url));
    esc = sh_url_escape(id ? id : "");
    full = sh_xasprintf("%s/configurations/%s", base, esc);
    rc = sh_http_request_json(&o, "PUT", full, body, &r, err);
    json_decref(body);
    free(esc);
    if (rc == 0) {
        if (r.status < 200 || r.status >= 300) {
            sh_err_set(err, r.status == 404 ? SH_ENOTFOUND : SH_EUPSTREAM,
                       "config-discovery PUT %s: HTTP %ld: %.200s", full, r.status,
                       r.body ? r.body : "");
            rc = -1;
        }
        sh_http_response_done(&r);
    }
    free(full);
    free(base);
    return rc;
}
