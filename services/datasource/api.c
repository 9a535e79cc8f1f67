/* HTTP API of the datasource (docs/api/datasource.yaml):
 *   POST /items                 validate, store durably, 202 (503 + Retry-After under
 * back-pressure) GET  /collections           every collection's name, count, revision, updated_at
 *   GET  /collections/{name}    items with limit/skip/since, ETag = revision,
 *                               If-None-Match -> 304, long-poll wait=S
 * Handlers run on libmicrohttpd's thread-per-connection threads (threads = 0),
 * so a long-poll simply blocks its own thread in ds_feed_wait(). Each handler
 * pops its own mongoc client from the pool. */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "datasource.h"
#include "shared/buf.h"
#include "shared/log.h"
#include "shared/mongo.h"
#include "shared/xalloc.h"

#define LIMIT_DEFAULT 1000
#define LIMIT_MAX 10000
#define SKIP_MAX 100000000L
#define WAIT_MAX_S 60.0
/* A page stops growing past this many bytes ("more": true tells the caller to page on). */
#define PAGE_BYTES_MAX (64L * 1024 * 1024)

/* Answers 503 while main() is still wiring metrics (a request can arrive
 * between the server's start and that). 1 = ready. */
static int ready(struct ds_ctx *ctx, struct sh_http_resp *resp)
{
    if (__atomic_load_n(&ctx->ready, __ATOMIC_ACQUIRE))
        return 1;
    sh_http_resp_header(resp, "Retry-After", "1");
    sh_http_resp_error(resp, 503, NULL, "starting");
    return 0;
}

/* ---------- POST /items ---------- */

static void post_items(struct sh_http_req *req, struct sh_http_resp *resp, void *arg)
{
    struct ds_ctx *ctx = arg;
    struct ds_limits lim = {(size_t)ctx->cfg->max_items, (size_t)ctx->cfg->max_item_bytes};
    struct ds_batch b;
    struct ds_ingest_result r;
    struct sh_err err;
    json_t *body, *problems = NULL;
    int st;

    if (!ready(ctx, resp))
        return;
    body = sh_http_req_json(req, resp);
    if (!body)
        return;
    st = ds_batch_parse(body, &lim, &b, &problems);
    json_decref(body);
    if (st != 0) {
        sh_http_resp_error(resp, st, problems, "invalid batch");
        return;
    }
    if (ds_ingest(ctx, &b, &r, &err) < 0) {
        sh_log_error("ingest_failed collection=%s batch_id=%s error=\"%s\"", b.collection,
                     b.batch_id, err.msg);
        sh_http_resp_header(resp, "Retry-After", "1");
        sh_http_resp_error(resp, 503, NULL, "storage unavailable: %s", err.msg);
        ds_batch_done(&b);
        return;
    }
    if (r.status == 503) {
        sh_metric_inc(ctx->m.rejected);
        sh_http_resp_header(resp, "Retry-After", "1");
        sh_http_resp_error(resp, 503, NULL,
                           "back-pressure: the reducer is behind; retry the same batch later");
        ds_batch_done(&b);
        return;
    }
    if (r.duplicate) {
        sh_metric_inc(ctx->m.duplicates);
    } else {
        sh_metric_inc(ctx->m.batches);
        sh_metric_add(ctx->m.items, (double)json_array_size(b.data));
    }
    sh_http_resp_json(resp, 202,
                      json_pack("{s:I,s:b}", "accepted", (json_int_t)json_array_size(b.data),
                                "duplicate", r.duplicate));
    ds_batch_done(&b);
}

/* ---------- collections_meta ---------- */

struct meta {
    int found;
    int64_t revision;
    int64_t count;
    int64_t updated_at;
};

static void meta_from_doc(const bson_t *doc, struct meta *m)
{
    bson_iter_t it;

    m->found = 1;
    m->revision = bson_iter_init_find(&it, doc, "revision") ? bson_iter_as_int64(&it) : 0;
    m->count = bson_iter_init_find(&it, doc, "count") ? bson_iter_as_int64(&it) : 0;
    m->updated_at = bson_iter_init_find(&it, doc, "updated_at") && BSON_ITER_HOLDS_DATE_TIME(&it)
                        ? bson_iter_date_time(&it)
                        : 0;
}

static int read_meta(mongoc_client_t *c, const char *db, const char *name, struct meta *m,
                     struct sh_err *err)
{
    mongoc_collection_t *col = mongoc_client_get_collection(c, db, DS_META);
    bson_t *filter = BCON_NEW("_id", BCON_UTF8(name));
    mongoc_cursor_t *cur = mongoc_collection_find_with_opts(col, filter, NULL, NULL);
    const bson_t *doc;
    bson_error_t berr;
    int rc = 0;

    memset(m, 0, sizeof(*m));
    if (mongoc_cursor_next(cur, &doc))
        meta_from_doc(doc, m);
    if (mongoc_cursor_error(cur, &berr)) {
        sh_mongo_err(err, &berr, "collections_meta");
        rc = -1;
    }
    mongoc_cursor_destroy(cur);
    bson_destroy(filter);
    mongoc_collection_destroy(col);
    return rc;
}

static void append_json_string(struct sh_buf *b, const char *s)
{
    json_t *j = json_string(s);
    char *d = j ? json_dumps(j, JSON_ENCODE_ANY) : NULL;

    (void)sh_buf_appends(b, d ? d : "\"\"", NULL);
    free(d);
    json_decref(j);
}

/* ---------- GET /collections ---------- */

static void list_collections(struct ds_ctx *ctx, struct sh_http_resp *resp)
{
    mongoc_client_t *c = mongoc_client_pool_pop(ctx->pool);
    mongoc_collection_t *col = mongoc_client_get_collection(c, ctx->db, DS_META);
    bson_t *filter = bson_new();
    bson_t *opts = BCON_NEW("sort", "{", "_id", BCON_INT32(1), "}");
    mongoc_cursor_t *cur = mongoc_collection_find_with_opts(col, filter, opts, NULL);
    json_t *list = json_array();
    const bson_t *doc;
    bson_error_t berr;
    bson_iter_t it;

    while (mongoc_cursor_next(cur, &doc)) {
        struct meta m;
        char ts[40];
        if (!bson_iter_init_find(&it, doc, "_id") || !BSON_ITER_HOLDS_UTF8(&it))
            continue;
        meta_from_doc(doc, &m);
        ds_format_time(m.updated_at, ts, sizeof(ts));
        (void)json_array_append_new(list, json_pack("{s:s,s:I,s:I,s:s}", "name",
                                                    bson_iter_utf8(&it, NULL), "count",
                                                    (json_int_t)m.count, "revision",
                                                    (json_int_t)m.revision, "updated_at", ts));
    }
    if (mongoc_cursor_error(cur, &berr)) {
        json_decref(list);
        sh_http_resp_error(resp, 503, NULL, "storage unavailable: %s", berr.message);
    } else {
        sh_http_resp_json(resp, 200, json_pack("{s:o}", "collections", list));
    }
    mongoc_cursor_destroy(cur);
    bson_destroy(opts);
    bson_destroy(filter);
    mongoc_collection_destroy(col);
    mongoc_client_pool_push(ctx->pool, c);
}

static void get_collections(struct sh_http_req *req, struct sh_http_resp *resp, void *arg)
{
    (void)req;
    if (ready(arg, resp))
        list_collections(arg, resp);
}

/* ---------- GET /collections/{name} ---------- */

struct page_req {
    long limit;
    long skip;
    int since_kind; /* 0 none, 1 revision, 2 time */
    int64_t since;
    double wait_s;
    int has_inm;
    int64_t inm;
};

static int parse_long(const char *s, long min, long max, long *ret)
{
    char *end;
    long v;

    if (!s || !*s)
        return 0;
    errno = 0;
    v = strtol(s, &end, 10);
    if (errno || *end || v < min || v > max)
        return 0;
    *ret = v;
    return 1;
}

/* Fills p from the query; on a bad value returns a new problems array. */
static json_t *parse_page(struct sh_http_req *req, struct page_req *p)
{
    json_t *problems = json_array();
    const char *s;

    memset(p, 0, sizeof(*p));
    p->limit = LIMIT_DEFAULT;
    if ((s = sh_http_req_query(req, "limit")) && !parse_long(s, 1, LIMIT_MAX, &p->limit))
        (void)json_array_append_new(problems, json_pack("{s:s,s:s}", "path", "limit", "message",
                                                        "must be an integer 1..10000"));
    if ((s = sh_http_req_query(req, "skip")) && !parse_long(s, 0, SKIP_MAX, &p->skip))
        (void)json_array_append_new(problems, json_pack("{s:s,s:s}", "path", "skip", "message",
                                                        "must be an integer 0..100000000"));
    if ((s = sh_http_req_query(req, "since"))) {
        long v;
        if (parse_long(s, 0, LONG_MAX, &v)) {
            p->since_kind = 1;
            p->since = v;
        } else if (ds_parse_time(s, &p->since)) {
            p->since_kind = 2;
        } else {
            (void)json_array_append_new(
                problems, json_pack("{s:s,s:s}", "path", "since", "message",
                                    "must be a revision (integer) or an ISO-8601 UTC time"));
        }
    }
    if ((s = sh_http_req_query(req, "wait"))) {
        char *end;
        errno = 0;
        p->wait_s = strtod(s, &end);
        if (errno || *end || !*s || !isfinite(p->wait_s) || p->wait_s < 0 || p->wait_s > WAIT_MAX_S)
            (void)json_array_append_new(problems, json_pack("{s:s,s:s}", "path", "wait", "message",
                                                            "must be a number of seconds 0..60"));
    }
    if ((s = sh_http_req_header(req, "If-None-Match")))
        p->has_inm = ds_etag_parse(s, &p->inm);
    if (json_array_size(problems) == 0) {
        json_decref(problems);
        return NULL;
    }
    return problems;
}

/* Blocks until name's revision differs from p->inm (or it appears), or the
 * wait passes. The in-process feed wakes us within microseconds of a local
 * reduce; collections_meta is re-read every DS_META_POLL_MS for reduces done
 * by another replica. Returns 0 with *m fresh, -1 on a storage error. */
static int long_poll(struct ds_ctx *ctx, mongoc_client_t *c, const char *name,
                     const struct page_req *p, struct meta *m, struct sh_err *err)
{
    int64_t deadline = ds_now_ms() + (int64_t)(p->wait_s * 1000.0);
    int64_t want = m->found ? p->inm : -1;

    for (;;) {
        int64_t left = deadline - ds_now_ms();
        int64_t rev;
        if (left <= 0 || ctx->stop)
            return 0;
        /* While this process is the tailer the feed sees every reduce: the
         * collections_meta re-read is only a safety net then. */
        long poll = __atomic_load_n(&ctx->tailing, __ATOMIC_RELAXED) ? ctx->cfg->meta_poll_ms * 10
                                                                     : ctx->cfg->meta_poll_ms;
        rev = ds_feed_wait(ctx->feed, name, want, left < poll ? (long)left : poll);
        (void)rev;
        if (read_meta(c, ctx->db, name, m, err) < 0)
            return -1;
        if (m->found && (!p->has_inm || m->revision != p->inm))
            return 0;
    }
}

static void append_item(struct sh_buf *b, const bson_t *doc, int first)
{
    bson_iter_t it;
    const char *key = "", *data = "{}";
    uint32_t dlen = 2;
    int64_t fs = 0, ls = 0, rev = 0;
    char t1[40], t2[40];

    if (bson_iter_init_find(&it, doc, "_id") && BSON_ITER_HOLDS_UTF8(&it))
        key = bson_iter_utf8(&it, NULL);
    if (bson_iter_init_find(&it, doc, "data") && BSON_ITER_HOLDS_UTF8(&it))
        data = bson_iter_utf8(&it, &dlen);
    if (bson_iter_init_find(&it, doc, "first_seen") && BSON_ITER_HOLDS_DATE_TIME(&it))
        fs = bson_iter_date_time(&it);
    if (bson_iter_init_find(&it, doc, "last_seen") && BSON_ITER_HOLDS_DATE_TIME(&it))
        ls = bson_iter_date_time(&it);
    if (bson_iter_init_find(&it, doc, "revision"))
        rev = bson_iter_as_int64(&it);
    ds_format_time(fs, t1, sizeof(t1));
    ds_format_time(ls, t2, sizeof(t2));
    (void)sh_buf_appends(b, first ? "{\"key\":" : ",{\"key\":", NULL);
    append_json_string(b, key);
    (void)sh_buf_appendf(
        b, NULL,
        ",\"first_seen\":\"%s\",\"last_seen\":\"%s\",\"revision\":%" PRId64 ",\"data\":", t1, t2,
        rev);
    (void)sh_buf_append(b, data, dlen, NULL);
    (void)sh_buf_appends(b, "}", NULL);
}

static void get_collection(struct sh_http_req *req, struct sh_http_resp *resp, void *arg)
{
    struct ds_ctx *ctx = arg;
    const char *name = sh_http_req_param(req, 0);
    struct page_req p;
    struct meta m;
    struct sh_err err;
    json_t *problems;
    mongoc_client_t *c = NULL;
    mongoc_collection_t *col = NULL;
    mongoc_cursor_t *cur = NULL;
    bson_t *filter = NULL, *opts = NULL;
    struct sh_buf b;
    char etag[40], ts[40], *coll = NULL;
    const bson_t *doc;
    bson_error_t berr;
    long n = 0;
    int more = 0;

    sh_buf_init(&b, 0);
    if (!ready(ctx, resp))
        return;
    if (!ds_collection_name_ok(name)) {
        sh_http_resp_error(resp, 400,
                           json_pack("[{s:s,s:s}]", "path", "name", "message",
                                     "must match ^[a-z0-9][a-z0-9_-]{0,63}$"),
                           "invalid collection name");
        return;
    }
    if ((problems = parse_page(req, &p))) {
        sh_http_resp_error(resp, 400, problems, "invalid query");
        return;
    }
    c = mongoc_client_pool_pop(ctx->pool);
    if (read_meta(c, ctx->db, name, &m, &err) < 0)
        goto storage_error;
    if (p.wait_s > 0 && (!m.found || (p.has_inm && m.revision == p.inm)) &&
        long_poll(ctx, c, name, &p, &m, &err) < 0)
        goto storage_error;
    if (!m.found) {
        sh_http_resp_error(resp, 404, NULL, "unknown collection '%s'", name);
        goto out;
    }
    (void)snprintf(etag, sizeof(etag), "\"%" PRId64 "\"", m.revision);
    sh_http_resp_header(resp, "ETag", etag);
    sh_http_resp_header(resp, "Cache-Control", "no-cache");
    if (p.has_inm && m.revision == p.inm) {
        sh_http_resp_status(resp, 304);
        goto out;
    }

    coll = ds_items_collection(name);
    col = mongoc_client_get_collection(c, ctx->db, coll);
    if (p.since_kind == 1) {
        filter = BCON_NEW("revision", "{", "$gt", BCON_INT64(p.since), "}");
        opts = BCON_NEW("sort", "{", "revision", BCON_INT32(1), "_id", BCON_INT32(1), "}");
    } else if (p.since_kind == 2) {
        filter = BCON_NEW("last_seen", "{", "$gt", BCON_DATE_TIME(p.since), "}");
        opts = BCON_NEW("sort", "{", "last_seen", BCON_INT32(1), "_id", BCON_INT32(1), "}");
    } else {
        filter = bson_new();
        opts = BCON_NEW("sort", "{", "_id", BCON_INT32(1), "}");
    }
    BSON_APPEND_INT64(opts, "skip", p.skip);
    BSON_APPEND_INT64(opts, "limit", p.limit + 1);
    cur = mongoc_collection_find_with_opts(col, filter, opts, NULL);

    ds_format_time(m.updated_at, ts, sizeof(ts));
    (void)sh_buf_appends(&b, "{\"collection\":", NULL);
    append_json_string(&b, name);
    (void)sh_buf_appendf(&b, NULL,
                         ",\"revision\":%" PRId64 ",\"count\":%" PRId64
                         ",\"updated_at\":\"%s\",\"items\":[",
                         m.revision, m.count, ts);
    while (mongoc_cursor_next(cur, &doc)) {
        if (n == p.limit || b.len > PAGE_BYTES_MAX) {
            more = 1;
            break;
        }
        append_item(&b, doc, n == 0);
        n++;
    }
    if (mongoc_cursor_error(cur, &berr)) {
        sh_mongo_err(&err, &berr, "items");
        goto storage_error;
    }
    (void)sh_buf_appendf(&b, NULL, "],\"skip\":%ld,\"limit\":%ld,\"more\":%s}", p.skip, p.limit,
                         more ? "true" : "false");
    {
        size_t len;
        char *body = sh_buf_steal(&b, &len);
        sh_http_resp_body(resp, 200, "application/json", body, len);
    }
    goto out;

storage_error:
    sh_log_error("collection_read_failed collection=%s error=\"%s\"", name, err.msg);
    sh_http_resp_header(resp, "Retry-After", "1");
    sh_http_resp_error(resp, 503, NULL, "storage unavailable: %s", err.msg);
out:
    if (cur)
        mongoc_cursor_destroy(cur);
    if (opts)
        bson_destroy(opts);
    if (filter)
        bson_destroy(filter);
    if (col)
        mongoc_collection_destroy(col);
    free(coll);
    sh_buf_done(&b);
    if (c)
        mongoc_client_pool_push(ctx->pool, c);
}

static const struct sh_http_route routes[] = {
    {"POST", "/items", post_items, SH_HTTP_WRITE},
    {"GET", "/collections", get_collections, 0},
    {"GET", "/collections/{name}", get_collection, 0},
    {NULL, NULL, NULL, 0},
};

const struct sh_http_route *ds_api_routes(void)
{
    return routes;
}

int ds_api_health(json_t *checks, void *arg)
{
    struct ds_ctx *ctx = arg;
    struct sh_err err;

    if (!__atomic_load_n(&ctx->ready, __ATOMIC_ACQUIRE)) {
        (void)json_object_set_new(checks, "datasource", json_string("starting"));
        return -1;
    }
    if (sh_mongo_ping(ctx->pool, &err) < 0) {
        (void)json_object_set_new(checks, "mongo", json_string(err.msg));
        return -1;
    }
    (void)json_object_set_new(checks, "mongo", json_string("ok"));
    return 0;
}

void ds_metrics_init(struct ds_ctx *ctx, struct sh_metrics *m)
{
    static const double lat[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                 0.1,   0.25,   0.5,   1,    2.5,   10};

    ctx->m.batches = sh_metrics_counter(m, "scrapr_datasource_ingest_batches_total",
                                        "Batches stored by POST /items");
    ctx->m.items = sh_metrics_counter(m, "scrapr_datasource_ingest_items_total",
                                      "Items in batches stored by POST /items");
    ctx->m.duplicates = sh_metrics_counter(m, "scrapr_datasource_ingest_duplicate_batches_total",
                                           "Replayed batch_ids acknowledged without storing");
    ctx->m.rejected = sh_metrics_counter(m, "scrapr_datasource_ingest_backpressure_total",
                                         "POST /items answered 503 because of back-pressure");
    ctx->m.reduced = sh_metrics_counter(m, "scrapr_datasource_reduced_batches_total",
                                        "Batches reduced into their collection");
    ctx->m.reduced_items = sh_metrics_counter(m, "scrapr_datasource_reduced_items_total",
                                              "Items reduced into their collection");
    ctx->m.reduce_seconds = sh_metrics_histogram(m, "scrapr_datasource_reduce_latency_seconds",
                                                 "Time from a batch's ingest to its reduce", lat,
                                                 sizeof(lat) / sizeof(lat[0]));
    ctx->m.backlog = sh_metrics_gauge(m, "scrapr_datasource_backlog_bytes",
                                      "Stored but not yet reduced bytes (as of the last ingest)");
    ctx->m.overruns = sh_metrics_counter(m, "scrapr_datasource_tailer_overruns_total",
                                         "Times unread batches were overwritten in the capped "
                                         "collection");
    ctx->m.errors = sh_metrics_counter(m, "scrapr_datasource_tailer_errors_total",
                                       "Reduce or state write failures (retried)");
}
