/* Configuration acquisition: which collection this endpoint serves.
 *
 * With CONFIG_ID the document comes from config-discovery
 * (GET /configurations/{id}); without it the endpoint claims a free endpoint
 * configuration (POST /configurations/claim) and remembers the id in its own
 * Redis (scrapr:endpoint:config_id) so a restart serves the same one (and the
 * claim itself is idempotent per container, so one whose Redis was lost gets
 * the same one back). Every
 * document fetched is cached in Redis (scrapr:config:<id>) and that cache is
 * used when config-discovery is unreachable, so an endpoint restarts while the
 * control plane is down. Runs on the main thread before the endpoint's HTTP
 * server starts; with an id it blocks (with backoff) until the configuration
 * is known or a stop is requested; without one a failed claim makes it a
 * spare (spare.c). */
#include "endpoint.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "shared/http_client.h"
#include "shared/log.h"
#include "shared/service.h"
#include "shared/xalloc.h"

#define CLAIMED_ID_KEY "scrapr:endpoint:config_id"

void ep_conf_doc_done(struct ep_conf_doc *d)
{
    if (!d)
        return;
    free(d->id);
    free(d->collection);
    json_decref(d->doc);
    memset(d, 0, sizeof(*d));
}

int ep_conf_doc_parse(const json_t *doc, struct ep_conf_doc *d, struct sh_err *err)
{
    const json_t *id = json_object_get(doc, "_id");
    const json_t *coll = json_object_get(doc, "collection");
    const json_t *ttl = json_object_get(doc, "ttl");

    if (!json_is_object(doc)) {
        sh_err_set(err, SH_EPROTO, "configuration is not a JSON object");
        return -1;
    }
    if (!json_is_string(id) || !json_string_length(id)) {
        sh_err_set(err, SH_EPROTO, "configuration has no string \"_id\"");
        return -1;
    }
    if (!json_is_string(coll) || !json_string_length(coll)) {
        sh_err_set(err, SH_EPROTO, "configuration %s has no \"collection\"", json_string_value(id));
        return -1;
    }
    if (ttl && !json_is_null(ttl) && (!json_is_number(ttl) || json_number_value(ttl) <= 0)) {
        sh_err_set(err, SH_EPROTO, "configuration %s: \"ttl\" must be a positive number",
                   json_string_value(id));
        return -1;
    }
    ep_conf_doc_done(d);
    d->id = sh_xstrdup(json_string_value(id));
    d->collection = sh_xstrdup(json_string_value(coll));
    d->ttl = json_is_number(ttl) ? (long)json_number_value(ttl) : 60;
    if (d->ttl < 1)
        d->ttl = 1;
    d->doc = json_incref((json_t *)doc);
    return 0;
}

char *ep_peer_url(struct sh_discovery *d, const char *fixed, struct sh_err *err)
{
    char *url = NULL;
    size_t len;

    if (fixed && *fixed) {
        url = sh_xstrdup(fixed);
    } else if (d) {
        if (sh_discovery_pick(d, 2000, &url, err) < 0)
            return NULL;
    } else {
        sh_err_set(err, SH_ECONFIG, "no peer URL and no Consul");
        return NULL;
    }
    len = strlen(url);
    while (len && url[len - 1] == '/')
        url[--len] = '\0';
    return url;
}

static void client_opts(const struct ep_ctx *ctx, struct sh_http_client_opts *o)
{
    memset(o, 0, sizeof(*o));
    o->connect_timeout_ms = 2000;
    o->timeout_ms = 10000;
    o->max_response = 4 * 1024 * 1024;
    o->bearer_token = ctx->api_token && *ctx->api_token ? ctx->api_token : NULL;
}

static char *redis_get(struct ep_ctx *ctx, const char *key)
{
    struct sh_err err;
    redisReply *r = sh_redis_command(ctx->redis, &err, "GET %s", key);
    char *v = NULL;
    if (!r) {
        sh_log_warn("redis_get_failed key=%s error=\"%s\"", key, err.msg);
        return NULL;
    }
    if (r->type == REDIS_REPLY_STRING)
        v = sh_xstrndup(r->str, r->len);
    else if (r->type == REDIS_REPLY_ERROR)
        sh_log_warn("redis_get_failed key=%s error=\"%s\"", key, r->str);
    freeReplyObject(r);
    return v;
}

static void redis_set(struct ep_ctx *ctx, const char *key, const char *value)
{
    struct sh_err err;
    redisReply *r = sh_redis_command(ctx->redis, &err, "SET %s %s", key, value);
    if (!r) {
        sh_log_warn("redis_set_failed key=%s error=\"%s\"", key, err.msg);
        return;
    }
    if (r->type == REDIS_REPLY_ERROR)
        sh_log_warn("redis_set_failed key=%s error=\"%s\"", key, r->str);
    freeReplyObject(r);
}

/* Adopts doc as the configuration and caches it. Returns 0 or -1 (logged). */
static int adopt(struct ep_ctx *ctx, json_t *doc, const char *from)
{
    struct sh_err err;
    const json_t *type = json_object_get(doc, "type");
    char *key, *text;

    if (ep_conf_doc_parse(doc, &ctx->conf, &err) < 0) {
        sh_log_error("config_invalid from=%s error=\"%s\"", from, err.msg);
        return -1;
    }
    if (json_is_string(type) && strcmp(json_string_value(type), "endpoint") != 0)
        sh_log_warn("config_type_unexpected id=%s type=%s (serving its collection anyway)",
                    ctx->conf.id, json_string_value(type));
    sh_log_info("config_loaded id=%s collection=%s ttl=%ld from=%s", ctx->conf.id,
                ctx->conf.collection, ctx->conf.ttl, from);
    if (strcmp(from, "redis") != 0) {
        key = sh_xasprintf("scrapr:config:%s", ctx->conf.id);
        text = json_dumps(doc, JSON_COMPACT | JSON_PRESERVE_ORDER);
        if (text)
            redis_set(ctx, key, text);
        free(text);
        free(key);
    }
    return 0;
}

/* 1 adopted, 0 definitely absent (404), -1 unreachable/failed. */
static int fetch_by_id(struct ep_ctx *ctx, const char *id)
{
    struct sh_http_client_opts o;
    struct sh_http_response resp;
    struct sh_err err;
    char *base, *esc, *url;
    json_t *doc;
    int rc = -1;

    base = ep_peer_url(ctx->cd_discovery, ctx->cfg->config_discovery, &err);
    if (!base) {
        sh_log_warn("config_discovery_unknown error=\"%s\"", err.msg);
        return -1;
    }
    esc = sh_url_escape(id);
    url = sh_xasprintf("%s/configurations/%s", base, esc);
    client_opts(ctx, &o);
    o.retries = 1;
    if (sh_http_request(&o, "GET", url, NULL, NULL, 0, &resp, &err) < 0) {
        sh_log_warn("config_fetch_failed url=%s error=\"%s\"", url, err.msg);
    } else {
        if (resp.status == 200 && (doc = json_loads(resp.body, 0, NULL)) != NULL) {
            rc = adopt(ctx, doc, "config-discovery") == 0 ? 1 : -1;
            json_decref(doc);
        } else if (resp.status == 404) {
            rc = 0;
        } else {
            sh_log_warn("config_fetch_failed url=%s status=%ld", url, resp.status);
        }
        sh_http_response_done(&resp);
    }
    free(url);
    free(esc);
    free(base);
    return rc;
}

static int load_cached(struct ep_ctx *ctx, const char *id)
{
    char *key = sh_xasprintf("scrapr:config:%s", id);
    char *text = redis_get(ctx, key);
    json_t *doc = text ? json_loads(text, 0, NULL) : NULL;
    int rc = doc && adopt(ctx, doc, "redis") == 0 ? 1 : -1;
    json_decref(doc);
    free(text);
    free(key);
    return rc;
}

/* The name a claim records in `container`: HOSTNAME (what the orchestrator
 * sets to a spare's unit name and adopts it by), else SERVICE_ADDRESS, else
 * the kernel's host name. */
static char *container_name(const struct ep_ctx *ctx)
{
    char host[256];
    if (ctx->cfg->hostname && *ctx->cfg->hostname)
        return sh_xstrdup(ctx->cfg->hostname);
    if (ctx->service_address && *ctx->service_address)
        return sh_xstrdup(ctx->service_address);
    if (gethostname(host, sizeof(host)) == 0) {
        host[sizeof(host) - 1] = '\0';
        return sh_xstrdup(host);
    }
    return sh_xstrdup("endpoint");
}

int ep_config_claim(struct ep_ctx *ctx)
{
    struct sh_http_client_opts o;
    struct sh_http_response resp;
    struct sh_err err;
    char *base, *url, *container = container_name(ctx);
    json_t *body, *doc;
    int rc = -1;

    base = ep_peer_url(ctx->cd_discovery, ctx->cfg->config_discovery, &err);
    if (!base) {
        sh_log_warn("config_discovery_unknown error=\"%s\"", err.msg);
        free(container);
        return -1;
    }
    url = sh_xasprintf("%s/configurations/claim", base);
    body = json_pack("{s:s, s:s}", "type", "endpoint", "container", container);
    client_opts(ctx, &o);
    /* A claim is idempotent for one container, so a retry cannot take two. */
    o.retries = 1;
    o.retry_unsafe = 1;
    if (sh_http_request_json(&o, "POST", url, body, &resp, &err) < 0) {
        sh_log_warn("config_claim_failed url=%s error=\"%s\"", url, err.msg);
    } else {
        if (resp.status == 200 && (doc = json_loads(resp.body, 0, NULL)) != NULL) {
            if (adopt(ctx, doc, "claim") == 0) {
                redis_set(ctx, CLAIMED_ID_KEY, ctx->conf.id);
                rc = 1;
            }
            json_decref(doc);
        } else if (resp.status == 204) {
            sh_log_debug("config_claim_none_free type=endpoint container=%s", container);
            rc = 0;
        } else {
            sh_log_warn("config_claim_failed url=%s status=%ld body=%.200s", url, resp.status,
                        resp.body ? resp.body : "");
        }
        sh_http_response_done(&resp);
    }
    json_decref(body);
    free(url);
    free(base);
    free(container);
    return rc;
}

int ep_config_acquire(struct ep_ctx *ctx)
{
    long backoff = 250;
    const char *fixed = ctx->cfg->config_id;

    while (!sh_service_stopping()) {
        char *id = fixed && *fixed ? sh_xstrdup(fixed) : redis_get(ctx, CLAIMED_ID_KEY);
        int rc;

        if (!id) /* nothing to serve yet: claim now, or wait as a spare (spare.c) */
            return ep_config_claim(ctx) == 1 ? 0 : 1;
        rc = fetch_by_id(ctx, id);
        if (rc == 1) {
            free(id);
            return 0;
        }
        if (rc == 0) {
            sh_log_error("config_not_found id=%s", id);
            if (!(fixed && *fixed)) {
                /* the remembered claim is gone: claim another one */
                struct sh_err err;
                redisReply *r = sh_redis_command(ctx->redis, &err, "DEL %s", CLAIMED_ID_KEY);
                if (r)
                    freeReplyObject(r);
            }
        } else if (load_cached(ctx, id) == 1) {
            free(id);
            return 0;
        }
        free(id);
        if (sh_service_sleep(backoff))
            break;
        backoff = backoff * 2 > 5000 ? 5000 : backoff * 2;
    }
    return -1;
}
