/* HTTP handlers of config-discovery. Each handler checks its input fully
 * (every problem reported with its JSON path, 400), then calls one store
 * function and maps its result: not found 404, SH_ECONFLICT 409, any other
 * store failure 503 (MongoDB unreachable; the client may retry).
 * Handlers run concurrently on the HTTP server's threads; all state is in the
 * struct cd_ctx passed as the route argument. */
#include "config_discovery.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "shared/log.h"
#include "shared/mongo.h"
#include "shared/xalloc.h"

static void store_error(struct sh_http_resp *resp, const struct sh_err *err, const char *what)
{
    if (err->code == SH_ECONFLICT) {
        sh_http_resp_error(resp, 409, NULL, "%s", err->msg);
        return;
    }
    sh_log_error("store_error op=%s error=\"%s\"", what, err->msg);
    sh_http_resp_header(resp, "Retry-After", "1");
    sh_http_resp_error(resp, 503, NULL, "configuration store unavailable: %s", err->msg);
}

/* Parses the {id} capture; on failure answers 400 and returns 0. */
static int path_id(struct sh_http_req *req, struct sh_http_resp *resp, bson_oid_t *id)
{
    const char *s = sh_http_req_param(req, 0);
    if (cd_oid_parse(s, id))
        return 1;
    sh_http_resp_error(resp, 400, NULL,
                       "invalid configuration id '%.64s': an id is 24 hexadecimal digits",
                       s ? s : "");
    return 0;
}

static int has_problem_at(const json_t *problems, const char *path)
{
    size_t i;
    json_t *p;
    json_array_foreach(problems, i, p)
    {
        const char *pp = json_string_value(json_object_get(p, "path"));
        if (pp && strcmp(pp, path) == 0)
            return 1;
    }
    return 0;
}

/* Runs the one DSL validator (it knows both the scraper and the endpoint
 * schema, chosen by "type") and the store's own needs (a usable collection
 * name); appends to problems. */
static void check_config(const json_t *config, const char *type, json_t *problems)
{
    json_t *copy = json_copy((json_t *)config), *dsl = NULL, *coll;
    int n;

    /* The stored type decides the schema, whatever the body says. */
    (void)json_object_set_new(copy, "type", json_string(type));
    n = sh_dsl_validate(copy, &dsl);
    json_decref(copy);

    if (n > 0 && json_is_array(dsl))
        (void)json_array_extend(problems, dsl);
    else if (n > 0)
        cd_problem(problems, "$", "invalid configuration (%d problems)", n);
    json_decref(dsl);
    if (has_problem_at(problems, "$.collection"))
        return;
    coll = json_object_get(config, "collection");
    if (!json_is_string(coll) || json_string_length(coll) == 0)
        cd_problem(problems, "$.collection", "is required: a non-empty string");
    else if (json_string_length(coll) > CD_COLLECTION_MAX)
        cd_problem(problems, "$.collection", "is longer than %d characters", CD_COLLECTION_MAX);
}

static int reject_problems(struct sh_http_resp *resp, json_t *problems)
{
    size_t n = json_array_size(problems);
    if (n == 0) {
        json_decref(problems);
        return 0;
    }
    sh_http_resp_error(resp, 400, problems, "invalid configuration: %zu problem%s", n,
                       n == 1 ? "" : "s");
    return 1;
}

static void respond_doc(struct sh_http_resp *resp, int status, json_t *doc)
{
    const char *id = json_string_value(json_object_get(doc, "_id"));
    json_t *version = json_object_get(doc, "version");
    if (id) {
        char *loc = sh_xasprintf("/configurations/%s", id);
        sh_http_resp_header(resp, "Location", loc);
        free(loc);
    }
    if (json_is_integer(version)) {
        char *etag = sh_xasprintf("\"%lld\"", (long long)json_integer_value(version));
        sh_http_resp_header(resp, "ETag", etag);
        free(etag);
    }
    sh_http_resp_json(resp, status, doc);
}

/* The tailer did not get to our document in time (it is waiting for an
 * earlier sequence hole, or it is down): materialise it here. Idempotent,
 * so racing the tailer or another replica is harmless. */
static int materialise_own(struct cd_ctx *ctx, int64_t seq, struct sh_err *err)
{
    bson_t **docs = NULL;
    size_t n = 0;
    int changed = 0, rc;

    if (cd_store_fetch(ctx, seq, 1, &docs, &n, err) != 0)
        return -1;
    rc = n == 1 ? cd_store_materialise(ctx, docs[0], &changed, err) : 0;
    cd_docs_free(docs, n);
    if (rc == 0 && changed)
        cd_revision_bump(ctx);
    return rc;
}

static void post_configurations(struct sh_http_req *req, struct sh_http_resp *resp, void *arg)
{
    struct cd_ctx *ctx = arg;
    json_t *config = sh_http_req_json(req, resp), *problems, *user, *doc = NULL, *type;
    struct cd_waiter w;
    struct sh_err err;
    int64_t seq = 0;
    char hex[25];
    int done, rc;

    if (!config)
        return;
    if (!json_is_object(config)) {
        sh_http_resp_error(resp, 400, NULL, "a configuration is a JSON object");
        json_decref(config);
        return;
    }
    problems = json_array();
    if (json_object_get(config, "_id"))
        cd_problem(problems, "$._id",
                   "not allowed when creating; to change a configuration use PUT "
                   "/configurations/{id}");
    type = json_object_get(config, "type");
    if (type && !(json_is_string(type) && strcmp(json_string_value(type), "scraper") == 0))
        cd_problem(problems, "$.type",
                   "must be \"scraper\" (endpoint configurations are created automatically)");
    check_config(config, "scraper", problems);
    if (reject_problems(resp, problems)) {
        json_decref(config);
        return;
    }

    user = cd_user_fields(config);
    bson_oid_init(&w.id, NULL);
    bson_oid_to_string(&w.id, hex);
    cd_wait_register(ctx, &w);
    rc = cd_store_submit(ctx, &w.id, json_string_value(json_object_get(config, "collection")), user,
                         &seq, &err);
    json_decref(user);
    json_decref(config);
    if (rc != 0) {
        (void)cd_wait_done(ctx, &w, 0);
        store_error(resp, &err, "submit");
        return;
    }
    cd_tailer_wake(ctx);
    done = cd_wait_done(ctx, &w, ctx->cfg->post_wait_ms);
    if (!done && materialise_own(ctx, seq, &err) != 0)
        sh_log_warn("post_materialise_failed id=%s error=\"%s\"", hex, err.msg);
    rc = cd_store_get(ctx, &w.id, &doc, &err);
    if (rc == 1) {
        respond_doc(resp, 201, doc);
        return;
    }
    if (rc < 0)
        sh_log_warn("post_lookup_failed id=%s error=\"%s\"", hex, err.msg);
    sh_log_info("post_accepted_pending id=%s materialised_here=%d", hex, done);
    {
        char *loc = sh_xasprintf("/configurations/%s", hex);
        sh_http_resp_header(resp, "Location", loc);
        free(loc);
    }
    sh_http_resp_json(resp, 202, json_pack("{s:s, s:s}", "_id", hex, "status", "pending"));
}

/* Strict decimal parse into [min, max]; 0 ok, -1 bad. */
static int parse_long(const char *s, long min, long max, long *ret)
{
    char *end;
    long v;
    if (!s || !*s || *s == '+' || *s == ' ')
        return -1;
    errno = 0;
    v = strtol(s, &end, 10);
    if (errno || *end || v < min || v > max)
        return -1;
    *ret = v;
    return 0;
}

struct query_check {
    const char *unknown;
};

static int query_known(const char *key, const char *value, void *arg)
{
    static const char *const known[] = {"type", "collection", "container", "limit", "skip", NULL};
    struct query_check *q = arg;
    (void)value;
    for (size_t i = 0; known[i]; i++)
        if (strcmp(key, known[i]) == 0)
            return 0;
    q->unknown = key;
    return 1;
}

static void get_configurations(struct sh_http_req *req, struct sh_http_resp *resp, void *arg)
{
    struct cd_ctx *ctx = arg;
    struct cd_list_query q = {.limit = CD_LIST_LIMIT_DEFAULT, .skip = 0};
    struct query_check qc = {NULL};
    const char *limit = sh_http_req_query(req, "limit"), *skip = sh_http_req_query(req, "skip");
    json_t *problems = json_array(), *out = NULL;
    struct sh_err err;

    (void)sh_http_req_query_each(req, query_known, &qc);
    if (qc.unknown)
        cd_problem(problems, qc.unknown,
                   "unknown query parameter (known: type, collection, container, limit, skip)");
    q.type = sh_http_req_query(req, "type");
    if (q.type && strcmp(q.type, "scraper") != 0 && strcmp(q.type, "endpoint") != 0)
        cd_problem(problems, "type", "must be scraper or endpoint");
    q.collection = sh_http_req_query(req, "collection");
    if (q.collection && !*q.collection)
        cd_problem(problems, "collection", "must not be empty");
    q.container = sh_http_req_query(req, "container");
    if (q.container && strcmp(q.container, "null") == 0) {
        q.container_null = 1;
        q.container = NULL;
    } else if (q.container && !*q.container) {
        cd_problem(problems, "container", "must be a container name, or null for free ones");
    }
    if (limit && parse_long(limit, 1, CD_LIST_LIMIT_MAX, &q.limit) != 0)
        cd_problem(problems, "limit", "must be an integer from 1 to %d", CD_LIST_LIMIT_MAX);
    if (skip && parse_long(skip, 0, 1000000000L, &q.skip) != 0)
        cd_problem(problems, "skip", "must be an integer >= 0");
    if (json_array_size(problems) > 0) {
        sh_http_resp_error(resp, 400, problems, "invalid query");
        return;
    }
    json_decref(problems);
    if (cd_store_list(ctx, &q, &out, &err) != 0) {
        store_error(resp, &err, "list");
        return;
    }
    sh_http_resp_json(resp, 200, out);
}

static void get_configuration(struct sh_http_req *req, struct sh_http_resp *resp, void *arg)
{
    struct cd_ctx *ctx = arg;
    struct sh_err err;
    bson_oid_t id;
    json_t *doc = NULL;
    int rc;

    if (!path_id(req, resp, &id))
        return;
    rc = cd_store_get(ctx, &id, &doc, &err);
    if (rc < 0)
        store_error(resp, &err, "get");
    else if (rc == 0)
        sh_http_resp_error(resp, 404, NULL, "no configuration with id %s",
                           sh_http_req_param(req, 0));
    else
        respond_doc(resp, 200, doc);
}

/* Expected version from If-Match ("3" or "\"3\"") or the body's version;
 * -1 = none. Returns 0, or -1 with a problem added. */
static int expected_version(struct sh_http_req *req, const json_t *body, json_t *problems,
                            int64_t *ret)
{
    const char *im = sh_http_req_header(req, "If-Match");
    json_t *v = json_object_get(body, "version");

    *ret = -1;
    if (im) {
        char buf[32];
        size_t len = strlen(im);
        long n;
        if (len >= 2 && im[0] == '"' && im[len - 1] == '"' && len - 2 < sizeof(buf)) {
            memcpy(buf, im + 1, len - 2);
            buf[len - 2] = '\0';
            im = buf;
        }
        if (parse_long(im, 0, 0x7fffffffL, &n) != 0) {
            cd_problem(problems, "If-Match", "must be a configuration version like \"3\"");
            return -1;
        }
        *ret = n;
    } else if (v) {
        if (!json_is_integer(v) || json_integer_value(v) < 0) {
            cd_problem(problems, "$.version", "must be the integer version you read");
            return -1;
        }
        *ret = json_integer_value(v);
    }
    return 0;
}

static void put_configuration(struct sh_http_req *req, struct sh_http_resp *resp, void *arg)
{
    struct cd_ctx *ctx = arg;
    json_t *body, *stored = NULL, *problems, *user, *doc = NULL, *v;
    const char *stype, *scoll, *container = NULL;
    int container_mode = 0, rc;
    int64_t expect;
    struct sh_err err;
    bson_oid_t id;
    char *type = NULL;

    if (!path_id(req, resp, &id))
        return;
    body = sh_http_req_json(req, resp);
    if (!body)
        return;
    if (!json_is_object(body)) {
        sh_http_resp_error(resp, 400, NULL, "a configuration is a JSON object");
        json_decref(body);
        return;
    }
    rc = cd_store_get(ctx, &id, &stored, &err);
    if (rc <= 0) {
        if (rc < 0)
            store_error(resp, &err, "get");
        else
            sh_http_resp_error(resp, 404, NULL, "no configuration with id %s",
                               sh_http_req_param(req, 0));
        json_decref(body);
        return;
    }
    stype = json_string_value(json_object_get(stored, "type"));
    scoll = json_string_value(json_object_get(stored, "collection"));
    type = sh_xstrdup(stype ? stype : "");
    problems = json_array();
    v = json_object_get(body, "_id");
    if (v &&
        !(json_is_string(v) && strcasecmp(json_string_value(v), sh_http_req_param(req, 0)) == 0))
        cd_problem(problems, "$._id", "does not match the id in the URL");
    v = json_object_get(body, "type");
    if (v && !(json_is_string(v) && strcmp(json_string_value(v), type) == 0))
        cd_problem(problems, "$.type", "cannot change (this configuration is a %s)", type);
    v = json_object_get(body, "container");
    if (v) {
        container_mode = 1;
        if (json_is_string(v) && json_string_length(v) > 0 &&
            json_string_length(v) <= CD_CONTAINER_MAX)
            container = json_string_value(v);
        else if (!json_is_null(v))
            cd_problem(problems, "$.container",
                       "must be a container name (1..%d characters) or null", CD_CONTAINER_MAX);
    }
    (void)expected_version(req, body, problems, &expect);
    check_config(body, type, problems);
    v = json_object_get(body, "collection");
    if (strcmp(type, "endpoint") == 0 && json_is_string(v) && scoll &&
        strcmp(json_string_value(v), scoll) != 0)
        cd_problem(problems, "$.collection",
                   "an endpoint configuration cannot move to another collection");
    json_decref(stored);
    if (reject_problems(resp, problems)) {
        json_decref(body);
        free(type);
        return;
    }
    user = cd_user_fields(body);
    rc = cd_store_replace(ctx, &id, type, user, expect, container_mode, container, &doc, &err);
    json_decref(user);
    json_decref(body);
    free(type);
    if (rc < 0) {
        store_error(resp, &err, "replace");
        return;
    }
    if (rc == 0) {
        sh_http_resp_error(resp, 404, NULL, "no configuration with id %s",
                           sh_http_req_param(req, 0));
        return;
    }
    cd_revision_bump(ctx);
    respond_doc(resp, 200, doc);
}

static void delete_configuration(struct sh_http_req *req, struct sh_http_resp *resp, void *arg)
{
    struct cd_ctx *ctx = arg;
    struct sh_err err;
    bson_oid_t id;
    int rc, endpoint_deleted = 0;

    if (!path_id(req, resp, &id))
        return;
    rc = cd_store_delete(ctx, &id, &endpoint_deleted, &err);
    if (rc < 0) {
        store_error(resp, &err, "delete");
        return;
    }
    if (rc == 0) {
        sh_http_resp_error(resp, 404, NULL, "no configuration with id %s",
                           sh_http_req_param(req, 0));
        return;
    }
    cd_revision_bump(ctx);
    sh_log_info("configuration_deleted id=%s endpoint_deleted=%d", sh_http_req_param(req, 0),
                endpoint_deleted);
    sh_http_resp_status(resp, 204);
}

static void post_claim(struct sh_http_req *req, struct sh_http_resp *resp, void *arg)
{
    struct cd_ctx *ctx = arg;
    json_t *body = sh_http_req_json(req, resp), *problems, *type, *container, *doc = NULL;
    const char *key;
    json_t *v;
    struct sh_err err;
    int rc;

    if (!body)
        return;
    problems = json_array();
    if (!json_is_object(body)) {
        cd_problem(problems, "$", "must be an object {\"type\": ..., \"container\": ...}");
    } else {
        json_object_foreach(body, key, v)
        {
            if (strcmp(key, "type") != 0 && strcmp(key, "container") != 0)
                cd_problem(problems, "$", "unknown field '%.64s' (known: type, container)", key);
        }
    }
    type = json_object_get(body, "type");
    container = json_object_get(body, "container");
    if (!json_is_string(type) || (strcmp(json_string_value(type), "scraper") != 0 &&
                                  strcmp(json_string_value(type), "endpoint") != 0))
        cd_problem(problems, "$.type", "must be \"scraper\" or \"endpoint\"");
    if (!json_is_string(container) || json_string_length(container) == 0 ||
        json_string_length(container) > CD_CONTAINER_MAX)
        cd_problem(problems, "$.container", "must be the claimer's name (1..%d characters)",
                   CD_CONTAINER_MAX);
    if (json_array_size(problems) > 0) {
        sh_http_resp_error(resp, 400, problems, "invalid claim");
        json_decref(body);
        return;
    }
    json_decref(problems);
    rc = cd_store_claim(ctx, json_string_value(type), json_string_value(container), &doc, &err);
    json_decref(body);
    if (rc < 0) {
        store_error(resp, &err, "claim");
        return;
    }
    if (rc == 0) {
        sh_http_resp_status(resp, 204);
        return;
    }
    cd_revision_bump(ctx);
    respond_doc(resp, 200, doc);
}

int cd_health(json_t *checks, void *arg)
{
    struct cd_ctx *ctx = arg;
    struct sh_err err;

    if (sh_mongo_ping(ctx->pool, &err) != 0) {
        (void)json_object_set_new(checks, "mongo", json_string(err.msg));
        return -1;
    }
    (void)json_object_set_new(checks, "mongo", json_string("ok"));
    return 0;
}

const struct sh_http_route cd_routes[] = {
    {"POST", "/configurations/claim", post_claim, SH_HTTP_WRITE},
    {"POST", "/configurations", post_configurations, SH_HTTP_WRITE},
    {"GET", "/configurations", get_configurations, 0},
    {"GET", "/configurations/{id}", get_configuration, 0},
    {"PUT", "/configurations/{id}", put_configuration, SH_HTTP_WRITE},
    {"DELETE", "/configurations/{id}", delete_configuration, SH_HTTP_WRITE},
    {NULL, NULL, NULL, 0},
};
