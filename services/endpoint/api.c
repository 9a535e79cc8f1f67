/* The public, read-only HTTP API of one collection.
 *
 *   GET|HEAD /, /items        the collection (JSON array; format=ndjson|csv;
 *                             filters, sort, paging, projection)
 *   GET|HEAD /items/{key}     one item by its datasource key
 *   GET      /status          state (serving), container, configuration, data
 *   OPTIONS  (those paths)    CORS preflight
 * Other methods get 405 from the router.
 *
 * Hot path: a request without filters/sort/projection/offset is answered with
 * the snapshot's prebuilt blob (plain or gzip), by reference, with headers
 * precomputed in the snapshot; only X-Data-Age is formatted per request.
 * Handlers run concurrently on libmicrohttpd's worker threads, never block
 * (the snapshot slot's mutex is held for a pointer copy) and only read
 * shared state. */
#include "endpoint.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shared/deflate.h"
#include "shared/xalloc.h"

#define CT_JSON "application/json"
#define CT_NDJSON "application/x-ndjson"
#define CT_CSV "text/csv; charset=utf-8; header=present"
#define GZIP_LEVEL_DYNAMIC 1

static const char *const content_types[EP_FMT_N] = {CT_JSON, CT_NDJSON, CT_CSV};

static void cors_headers(struct sh_http_resp *resp)
{
    sh_http_resp_header(resp, "Access-Control-Allow-Origin", "*");
    sh_http_resp_header(resp, "Access-Control-Expose-Headers",
                        "ETag, Last-Modified, X-Data-Age, X-Data-Revision, X-Total-Count");
}

static void data_headers(struct sh_http_resp *resp, struct ep_ctx *ctx, const struct ep_snapshot *s)
{
    char buf[32];

    cors_headers(resp);
    sh_http_resp_header(resp, "ETag", s->etag);
    sh_http_resp_header(resp, "Last-Modified", s->last_modified);
    sh_http_resp_header(resp, "Cache-Control", "no-cache");
    sh_http_resp_header(resp, "Vary", "Accept-Encoding");
    (void)snprintf(buf, sizeof(buf), "%ld", ep_store_age(&ctx->store, time(NULL)));
    sh_http_resp_header(resp, "X-Data-Age", buf);
    (void)snprintf(buf, sizeof(buf), "%llu", (unsigned long long)s->revision);
    sh_http_resp_header(resp, "X-Data-Revision", buf);
}

/* 503 while nothing is known yet (no datasource answer and nothing in Redis). */
static struct ep_snapshot *current_or_503(struct ep_ctx *ctx, struct sh_http_resp *resp)
{
    struct ep_snapshot *s = ep_store_get(&ctx->store);
    if (!s) {
        sh_http_resp_error(resp, 503, NULL,
                           "no data yet: the datasource has not answered and Redis holds no copy");
        sh_http_resp_header(resp, "Retry-After", "1");
        cors_headers(resp);
    }
    return s;
}

struct parse_arg {
    struct ep_query *q;
    long max_limit;
    int single; /* /items/{key}: only fields and format=json apply */
    struct sh_err err;
    char *bad; /* parameter name of the first error */
};

static int on_param(const char *key, const char *value, void *arg)
{
    struct parse_arg *pa = arg;
    if (pa->single && strcmp(key, "fields") != 0 && strcmp(key, "format") != 0) {
        sh_err_set(&pa->err, SH_ECONFIG,
                   "'%.64s' does not apply to /items/{key}: only fields and format=json do", key);
        pa->bad = sh_xstrdup(key);
        return 1;
    }
    if (ep_query_add(pa->q, key, value, pa->max_limit, &pa->err) < 0) {
        pa->bad = sh_xstrdup(key);
        return 1;
    }
    return 0;
}

/* Parses the query string into q; on a bad one fills resp with 400 and
 * returns -1. */
static int parse_query(struct sh_http_req *req, struct sh_http_resp *resp, struct ep_query *q,
                       long max_limit, int single)
{
    struct parse_arg pa;

    memset(&pa, 0, sizeof(pa));
    pa.q = q;
    pa.max_limit = max_limit;
    pa.single = single;
    (void)sh_http_req_query_each(req, on_param, &pa);
    if (!pa.bad && single && q->format != EP_FMT_JSON) {
        sh_err_set(&pa.err, SH_ECONFIG, "/items/{key} is JSON only (format=json)");
        pa.bad = sh_xstrdup("format");
    }
    if (!pa.bad)
        return 0;
    sh_http_resp_error(resp, 400,
                       json_pack("[{s:s, s:s}]", "parameter", pa.bad, "message", pa.err.msg),
                       "bad query parameter '%.64s': %s", pa.bad, pa.err.msg);
    cors_headers(resp);
    free(pa.bad);
    return -1;
}

static int not_modified(struct sh_http_req *req, struct sh_http_resp *resp, struct ep_ctx *ctx,
                        const struct ep_snapshot *s)
{
    if (!ep_etag_matches(sh_http_req_header(req, "If-None-Match"), s->etag))
        return 0;
    sh_http_resp_status(resp, 304);
    data_headers(resp, ctx, s);
    return 1;
}

static void h_items(struct sh_http_req *req, struct sh_http_resp *resp, void *arg)
{
    struct ep_ctx *ctx = arg;
    struct ep_snapshot *s;
    struct ep_query q;
    char total[32];
    int gz;

    if (!(s = current_or_503(ctx, resp)))
        return;
    ep_query_init(&q);
    if (parse_query(req, resp, &q, ctx->cfg->max_limit, 0) < 0)
        goto out;
    if (not_modified(req, resp, ctx, s))
        goto out;
    gz = ep_accepts_gzip(sh_http_req_header(req, "Accept-Encoding"));

    if (ep_query_is_plain(&q, s)) {
        struct sh_blob *b = ep_snapshot_blob(s, q.format, gz);
        if (!b && gz) { /* zlib failed: plain is always fine */
            gz = 0;
            b = ep_snapshot_blob(s, q.format, 0);
        }
        sh_http_resp_blob(resp, 200, content_types[q.format], b);
        (void)snprintf(total, sizeof(total), "%zu", s->n);
    } else {
        size_t *sel, n, ntotal, i, len;
        const struct ep_item **items;
        char *body;

        ep_query_select(&q, s, ctx->cfg->max_limit, &sel, &n, &ntotal);
        items = sh_xmalloc((n + 1) * sizeof(*items));
        for (i = 0; i < n; i++)
            items[i] = s->items[sel[i]];
        body = ep_render(&q, q.format, items, n, &len);
        free(items);
        free(sel);
        if (gz && len >= (size_t)ctx->cfg->gzip_min) {
            size_t zlen;
            char *z = sh_deflate(body, len, GZIP_LEVEL_DYNAMIC, SH_DEFLATE_GZIP, 0, &zlen);
            if (z) {
                free(body);
                body = z;
                len = zlen;
            } else {
                gz = 0;
            }
        } else {
            gz = 0;
        }
        sh_http_resp_body(resp, 200, content_types[q.format], body, len);
        (void)snprintf(total, sizeof(total), "%zu", ntotal);
    }
    data_headers(resp, ctx, s);
    sh_http_resp_header(resp, "X-Total-Count", total);
    if (gz)
        sh_http_resp_header(resp, "Content-Encoding", "gzip");
out:
    ep_query_done(&q);
    ep_snapshot_unref(s);
}

static void h_item(struct sh_http_req *req, struct sh_http_resp *resp, void *arg)
{
    struct ep_ctx *ctx = arg;
    const char *key = sh_http_req_param(req, 0);
    const struct ep_item *it;
    struct ep_snapshot *s;
    struct ep_query q;
    size_t len;
    char *body;

    if (!(s = current_or_503(ctx, resp)))
        return;
    ep_query_init(&q);
    if (parse_query(req, resp, &q, ctx->cfg->max_limit, 1) < 0)
        goto out;
    it = key ? ep_snapshot_find(s, key) : NULL;
    if (!it) {
        sh_http_resp_error(resp, 404, NULL, "no item with key '%.200s' in collection %s",
                           key ? key : "", s->collection);
        data_headers(resp, ctx, s);
        goto out;
    }
    if (not_modified(req, resp, ctx, s))
        goto out;
    body = ep_render_one(&q, it, &len);
    sh_http_resp_body(resp, 200, CT_JSON, body, len);
    data_headers(resp, ctx, s);
out:
    ep_query_done(&q);
    ep_snapshot_unref(s);
}

static void h_options(struct sh_http_req *req, struct sh_http_resp *resp, void *arg)
{
    const char *want = sh_http_req_header(req, "Access-Control-Request-Headers");
    (void)arg;
    sh_http_resp_status(resp, 204);
    sh_http_resp_header(resp, "Allow", "GET, HEAD, OPTIONS");
    sh_http_resp_header(resp, "Access-Control-Allow-Origin", "*");
    sh_http_resp_header(resp, "Access-Control-Allow-Methods", "GET, HEAD, OPTIONS");
    /* Only safe request headers are of interest to a read-only API; echo a
     * sane request so browsers proceed, else name the ones we honour. */
    sh_http_resp_header(resp, "Access-Control-Allow-Headers",
                        want && *want && strlen(want) < 512 &&
                                strspn(want,
                                       "abcdefghijklmnopqrstuvwxyz"
                                       "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-, ") == strlen(want)
                            ? want
                            : "Accept, Accept-Encoding, If-None-Match");
    sh_http_resp_header(resp, "Access-Control-Max-Age", "86400");
}

/* GET /status: which configuration this endpoint serves, and its data. */
static void h_status(struct sh_http_req *req, struct sh_http_resp *resp, void *arg)
{
    struct ep_ctx *ctx = arg;
    struct ep_snapshot *s = ep_store_get(&ctx->store);
    json_t *body;

    (void)req;
    body = json_pack("{s:s, s:s, s:s, s:s}", "state", "serving", "container",
                     ctx->cfg->hostname ? ctx->cfg->hostname : "", "config_id", ctx->conf.id,
                     "collection", ctx->conf.collection);
    if (s) {
        (void)json_object_set_new(body, "revision", json_integer((json_int_t)s->revision));
        (void)json_object_set_new(body, "items", json_integer((json_int_t)s->n));
    }
    ep_snapshot_unref(s);
    sh_http_resp_json(resp, 200, body);
}

const struct sh_http_route ep_routes[] = {
    {"GET", "/status", h_status, 0},
    {"GET", "/", h_items, 0},
    {"GET", "/items", h_items, 0},
    {"GET", "/items/{key}", h_item, 0},
    {"OPTIONS", "/", h_options, 0},
    {"OPTIONS", "/items", h_options, 0},
    {"OPTIONS", "/items/{key}", h_options, 0},
    {NULL, NULL, NULL, 0},
};

/* Healthy once a configuration is loaded (always, when the server runs) and
 * data is known: from the datasource, or from Redis while it is down. A
 * datasource outage alone never makes the endpoint unhealthy: it keeps
 * serving, and X-Data-Age shows the staleness. */
int ep_health(json_t *checks, void *arg)
{
    static const char *const sources[] = {"none", "redis", "datasource"};
    struct ep_ctx *ctx = arg;
    struct ep_snapshot *s = ep_store_get(&ctx->store);
    int src = ep_store_source(&ctx->store), healthy = s != NULL;

    (void)json_object_set_new(checks, "configuration", json_string(ctx->conf.id));
    (void)json_object_set_new(checks, "collection", json_string(ctx->conf.collection));
    (void)json_object_set_new(checks, "data", json_string(s ? sources[src] : "none"));
    (void)json_object_set_new(
        checks, "datasource",
        json_string(__atomic_load_n(&ctx->datasource_ok, __ATOMIC_RELAXED) ? "ok" : "unreachable"));
    (void)json_object_set_new(
        checks, "redis",
        json_string(__atomic_load_n(&ctx->redis_ok, __ATOMIC_RELAXED) ? "ok" : "unreachable"));
    if (s) {
        (void)json_object_set_new(checks, "revision", json_integer((json_int_t)s->revision));
        (void)json_object_set_new(checks, "items", json_integer((json_int_t)s->n));
        (void)json_object_set_new(checks, "age_seconds",
                                  json_integer(ep_store_age(&ctx->store, time(NULL))));
    }
    ep_snapshot_unref(s);
    return healthy ? 0 : -1;
}
