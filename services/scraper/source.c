/* Where the scraper's configuration comes from: config-discovery by id, or a
 * claim when no CONFIG_ID was given, with a Redis copy so a restarted scraper
 * keeps scraping while config-discovery is down.
 *
 * Redis keys: scrapr:config:<id> (the last document seen, JSON) and
 * scrapr:config:claimed (the id this scraper's Redis claimed). Single-threaded. */
#include <stdlib.h>
#include <string.h>

#include "shared/http_client.h"
#include "shared/redis.h"
#include "shared/xalloc.h"
#include "scraper.h"

struct scr_source {
    struct sh_redis *redis;
    struct scr_source_opts o;
    char *id;
    char *container, *token;
};

struct scr_source *scr_source_new(struct sh_redis *r, const struct scr_source_opts *opts)
{
    struct scr_source *s = sh_xcalloc(1, sizeof(*s));
    s->redis = r;
    s->o = *opts;
    if (opts->config_id && *opts->config_id)
        s->id = sh_xstrdup(opts->config_id);
    s->container = sh_xstrdup(opts->container ? opts->container : "scraper");
    s->token = opts->api_token && *opts->api_token ? sh_xstrdup(opts->api_token) : NULL;
    if (s->o.timeout_ms <= 0)
        s->o.timeout_ms = 5000;
    return s;
}

void scr_source_free(struct scr_source *s)
{
    if (!s)
        return;
    free(s->id);
    free(s->container);
    free(s->token);
    free(s);
}

const char *scr_source_id(const struct scr_source *s)
{
    return s->id;
}

int scr_source_release(struct scr_source *s)
{
    if ((s->o.config_id && *s->o.config_id) || !s->id)
        return 0;
    if (s->redis) {
        redisReply *r = sh_redis_command(s->redis, NULL, "DEL scrapr:config:claimed");
        if (r)
            freeReplyObject(r); /* unreachable Redis: the next claim's 404 releases again */
    }
    free(s->id);
    s->id = NULL;
    return 1;
}

static char *redis_get(struct scr_source *s, const char *key)
{
    if (!s->redis)
        return NULL;
    redisReply *r = sh_redis_command(s->redis, NULL, "GET %s", key);
    char *v = NULL;
    if (r && r->type == REDIS_REPLY_STRING)
        v = sh_xstrndup(r->str, r->len);
    if (r)
        freeReplyObject(r);
    return v;
}

static void redis_set(struct scr_source *s, const char *key, const char *val)
{
    if (!s->redis)
        return;
    redisReply *r = sh_redis_command(s->redis, NULL, "SET %s %s", key, val);
    if (r)
        freeReplyObject(r); /* a failed cache write only costs us the fallback */
}

static json_t *cached(struct scr_source *s)
{
    if (!s->id)
        return NULL;
    char *key = sh_xasprintf("scrapr:config:%s", s->id);
    char *v = redis_get(s, key);
    free(key);
    json_t *doc = v ? json_loads(v, 0, NULL) : NULL;
    free(v);
    return json_is_object(doc) ? doc : (json_decref(doc), NULL);
}

static void remember(struct scr_source *s, const json_t *doc)
{
    char *txt = json_dumps(doc, JSON_COMPACT);
    if (!txt)
        return;
    char *key = sh_xasprintf("scrapr:config:%s", s->id);
    redis_set(s, key, txt);
    free(key);
    free(txt);
}

/* POST /configurations/claim. 1 claimed (s->id set), 0 nothing free, -1 error. */
static int claim(struct scr_source *s, const char *base, json_t **ret_doc, struct sh_err *err)
{
    char *url = sh_xasprintf("%s/configurations/claim", base);
    json_t *body = json_pack("{s:s, s:s}", "type", "scraper", "container", s->container);
    struct sh_http_client_opts co = {0};
    co.timeout_ms = s->o.timeout_ms;
    co.bearer_token = s->token;
    co.retries = 1;
    co.retry_unsafe = 1; /* a claim by the same container is idempotent */
    struct sh_http_response resp = {0};
    int rc = sh_http_request_json(&co, "POST", url, body, &resp, err);
    json_decref(body);
    free(url);
    if (rc < 0)
        return -1;
    int out = -1;
    if (resp.status == 204) {
        sh_err_set(err, SH_ENOTFOUND, "no free scraper configuration to claim");
        out = 0;
    } else if (resp.status == 200) {
        json_t *doc = json_loads(resp.body ? resp.body : "", 0, NULL);
        const char *id = json_string_value(json_object_get(doc, "_id"));
        if (json_is_object(doc) && id) {
            s->id = sh_xstrdup(id);
            redis_set(s, "scrapr:config:claimed", id);
            *ret_doc = doc;
            out = 1;
        } else {
            json_decref(doc);
            sh_err_set(err, SH_EPROTO, "claim answered 200 without a document _id");
        }
    } else {
        sh_err_set(err, SH_EUPSTREAM, "claim: HTTP %ld %.200s", resp.status,
                   resp.body ? resp.body : "");
    }
    sh_http_response_done(&resp);
    return out;
}

json_t *scr_source_load(struct scr_source *s, int *ret_cached, struct sh_err *err)
{
    *ret_cached = 0;
    if (!s->id) {
        char *prev = redis_get(s, "scrapr:config:claimed");
        if (prev && *prev)
            s->id = prev;
        else
            free(prev);
    }
    char *base = s->o.configd(s->o.configd_arg, err);
    if (!base)
        goto fallback;
    json_t *doc = NULL;
    if (!s->id) {
        int c = claim(s, base, &doc, err);
        free(base);
        if (c == 1) {
            remember(s, doc);
            return doc;
        }
        return NULL; /* nothing to fall back to without an id */
    }
    char *esc = sh_url_escape(s->id);
    char *url = sh_xasprintf("%s/configurations/%s", base, esc);
    free(esc);
    free(base);
    struct sh_http_client_opts co = {0};
    co.timeout_ms = s->o.timeout_ms;
    co.retries = 1;
    struct sh_http_response resp = {0};
    int rc = sh_http_request(&co, "GET", url, NULL, NULL, 0, &resp, err);
    free(url);
    if (rc < 0)
        goto fallback;
    if (resp.status == 404) {
        sh_err_set(err, SH_ENOTFOUND, "configuration %s does not exist", s->id);
        sh_http_response_done(&resp);
        return NULL;
    }
    if (resp.status != 200) {
        sh_err_set(err, SH_EUPSTREAM, "GET configuration %s: HTTP %ld", s->id, resp.status);
        sh_http_response_done(&resp);
        goto fallback;
    }
    doc = json_loads(resp.body ? resp.body : "", 0, NULL);
    sh_http_response_done(&resp);
    if (!json_is_object(doc)) {
        json_decref(doc);
        sh_err_set(err, SH_EPROTO, "configuration %s: not a JSON object", s->id);
        goto fallback;
    }
    remember(s, doc);
    return doc;
fallback:;
    json_t *c = cached(s);
    if (c) {
        *ret_cached = 1;
        return c;
    }
    sh_err_prefix(err, "configuration %s (no cached copy)", s->id ? s->id : "(unclaimed)");
    return NULL;
}
