/* Reduce rounds of batches (capped_datasources documents) into items_<collection>.
 *
 * Rule ("newest seq wins"): an item is brought to revision = the batch's seq
 * unless it is already at that revision or newer; first_seen = min, last_seen
 * = max of the stored and the batch time; data is merged like $set (the
 * batch's fields win, others are kept). Applying a batch twice, or after a
 * crash half-way, converges to the same state: a re-delivery never
 * duplicates or rolls back an item. A round applies its batches in seq order
 * and writes the end state of each touched key once.
 *
 * `batches` gets {_id: batch_id, seq} first: the first seq to claim a
 * batch_id wins, a later capped copy of the same batch_id (a replay that
 * arrived after the original left the capped collection) is skipped.
 *
 * Cost model (FerretDB v1 on SQLite, see docs/datasource.md): any filter other
 * than {_id: <string>} makes FerretDB decode every document of the collection
 * in Go (~0.1 ms each on the test box), an {_id} filter is an index search
 * with the wrapper's _id path index, every write statement is one SQLite
 * transaction (one fsync), and an insert of many documents is cheap. So:
 *  - the reducer keeps the stored state of every item of the collections it
 *    reduces in memory (DS_REDUCE_CACHE_BYTES); a round needs no lookup. The
 *    cache is filled once per collection (one scan) and then follows our own
 *    writes; it is valid because only the single tailer writes items (Consul
 *    lock) and is dropped whenever that may not hold or a write failed.
 *    Collections that do not fit are looked up per round ({_id: {$in}}).
 *  - new keys: one insert of all of them;
 *  - keys that exist: a redo record in reduce_journal, a delete of those
 *    keys (one {_id} statement each when indexed and few, else one $in
 *    delete), the insert, then the record is removed. A crash in between is
 *    completed from the record (ds_reducer_redo) before anything else.
 *
 * Threading: tailer thread only; one tailer per database (Consul lock, tailer.c). */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include <zlib.h>

#include "datasource.h"
#include "shared/log.h"
#include "shared/mongo.h"
#include "shared/xalloc.h"

#define LOOKUP_CHUNK 500
#define JOURNAL_MAX (12 * 1024 * 1024)
#define ENTRY_OVERHEAD 200     /* bytes per cached item beyond its key and data (estimate) */
#define INDEX_RECHECK_MS 30000 /* re-ask explain this long after "not indexed" */

struct batch_view {
    const char *batch_id;
    const char *collection;
    const char *data;
    uint32_t data_len;
    int64_t seq;
    int64_t at;
    json_t *key;    /* owned: key field names */
    json_t *map;    /* owned: the items by key -> text (ds_batch_map: ingest's, or built here) */
    int64_t n;      /* items in the batch */
    char *inflated; /* owned: data when the capped document carries it deflated */
    int skip;       /* a replay of another seq */
};

struct coll_state {
    char *name;
    json_t *items;      /* key -> [revision, first_seen, last_seen, data]; NULL when not cached */
    size_t bytes;       /* estimated memory of items */
    int uncached;       /* does not fit the budget: look items up every round */
    int counted;        /* uncached: collections_meta count is known to be right */
    int indexed;        /* -1 unknown, 0 _id filters scan, 1 they search an index */
    int64_t indexed_at; /* when indexed was learnt */
};

struct ds_reducer {
    struct ds_ctx *ctx;
    struct coll_state *v;
    size_t n, cap;
    size_t bytes; /* all cached items */
};

struct ds_reducer *ds_reducer_new(struct ds_ctx *ctx)
{
    struct ds_reducer *r = sh_xcalloc(1, sizeof(*r));

    r->ctx = ctx;
    return r;
}

static void coll_uncache(struct ds_reducer *r, struct coll_state *cs)
{
    if (cs->items) {
        json_decref(cs->items);
        cs->items = NULL;
        r->bytes -= cs->bytes;
        cs->bytes = 0;
    }
    cs->counted = 0;
}

void ds_reducer_forget(struct ds_reducer *r)
{
    for (size_t i = 0; i < r->n; i++) {
        coll_uncache(r, &r->v[i]);
        r->v[i].uncached = 0;
        r->v[i].indexed = -1;
    }
}

void ds_reducer_free(struct ds_reducer *r)
{
    if (!r)
        return;
    ds_reducer_forget(r);
    for (size_t i = 0; i < r->n; i++)
        free(r->v[i].name);
    free(r->v);
    free(r);
}

static struct coll_state *coll_get(struct ds_reducer *r, const char *name)
{
    struct coll_state *cs;

    for (size_t i = 0; i < r->n; i++)
        if (strcmp(r->v[i].name, name) == 0)
            return &r->v[i];
    if (r->n == r->cap) {
        r->cap = r->cap ? r->cap * 2 : 8;
        r->v = sh_xrealloc(r->v, r->cap * sizeof(*r->v));
    }
    cs = &r->v[r->n++];
    memset(cs, 0, sizeof(*cs));
    cs->name = sh_xstrdup(name);
    cs->indexed = -1;
    return cs;
}

static size_t entry_bytes(const char *key, const char *data)
{
    return strlen(key) + strlen(data) + ENTRY_OVERHEAD;
}

/* Stored item -> [revision, first_seen, last_seen, data]; NULL without an _id string. */
static json_t *entry_from_doc(const bson_t *doc, const char **ret_id)
{
    bson_iter_t it;
    int64_t rev = 0, fs = 0, ls = 0;
    const char *data = "{}";

    if (!bson_iter_init_find(&it, doc, "_id") || !BSON_ITER_HOLDS_UTF8(&it))
        return NULL;
    *ret_id = bson_iter_utf8(&it, NULL);
    if (bson_iter_init_find(&it, doc, "revision") && BSON_ITER_HOLDS_NUMBER(&it))
        rev = bson_iter_as_int64(&it);
    if (bson_iter_init_find(&it, doc, "first_seen") && BSON_ITER_HOLDS_DATE_TIME(&it))
        fs = bson_iter_date_time(&it);
    if (bson_iter_init_find(&it, doc, "last_seen") && BSON_ITER_HOLDS_DATE_TIME(&it))
        ls = bson_iter_date_time(&it);
    if (bson_iter_init_find(&it, doc, "data") && BSON_ITER_HOLDS_UTF8(&it))
        data = bson_iter_utf8(&it, NULL);
    return json_pack("[I,I,I,s]", (json_int_t)rev, (json_int_t)fs, (json_int_t)ls, data);
}

static bson_t *item_projection(void)
{
    return BCON_NEW("projection", "{", "revision", BCON_INT32(1), "first_seen", BCON_INT32(1),
                    "last_seen", BCON_INT32(1), "data", BCON_INT32(1), "}");
}

/* Fills cs->items from the collection (one scan). Over the budget: marks the
 * collection uncached. 0 / -1. */
static int cache_load(struct ds_reducer *r, mongoc_collection_t *col, struct coll_state *cs,
                      struct sh_err *err)
{
    bson_t filter = BSON_INITIALIZER;
    bson_t *opts = item_projection();
    mongoc_cursor_t *cur = mongoc_collection_find_with_opts(col, &filter, opts, NULL);
    size_t budget = (size_t)r->ctx->cfg->cache_bytes, bytes = 0;
    json_t *items = json_object();
    const bson_t *doc;
    bson_error_t berr;
    int rc = 0, over = 0;
    int64_t t0 = ds_now_ms();

    while (!over && mongoc_cursor_next(cur, &doc)) {
        const char *id = NULL;
        json_t *e = entry_from_doc(doc, &id);
        if (!e)
            continue;
        bytes += entry_bytes(id, json_string_value(json_array_get(e, 3)));
        (void)json_object_set_new(items, id, e);
        over = r->bytes + bytes > budget;
    }
    if (mongoc_cursor_error(cur, &berr)) {
        sh_mongo_err(err, &berr, "item cache load");
        rc = -1;
        json_decref(items);
    } else if (over) {
        cs->uncached = 1;
        json_decref(items);
        sh_log_info("reduce_cache_skipped collection=%s reason=\"over DS_REDUCE_CACHE_BYTES\"",
                    cs->name);
    } else {
        cs->items = items;
        cs->bytes = bytes;
        r->bytes += bytes;
        sh_log_debug("reduce_cache_loaded collection=%s items=%zu bytes=%zu ms=%" PRId64, cs->name,
                     json_object_size(items), bytes, ds_now_ms() - t0);
    }
    mongoc_cursor_destroy(cur);
    bson_destroy(opts);
    bson_destroy(&filter);
    return rc;
}

/* Stored state of keys ({_id: {$in}} in chunks: one scan each on FerretDB).
 * Returns a new object key -> entry for the keys that exist, or NULL. */
static json_t *lookup_items(mongoc_collection_t *col, json_t *keys, struct sh_err *err)
{
    json_t *found = json_object();
    size_t start = 0, n = json_array_size(keys);

    while (start < n) {
        bson_t filter = BSON_INITIALIZER, idf, in;
        bson_t *opts = item_projection();
        mongoc_cursor_t *cur;
        const bson_t *doc;
        bson_error_t berr;
        uint32_t i;

        BSON_APPEND_DOCUMENT_BEGIN(&filter, "_id", &idf);
        BSON_APPEND_ARRAY_BEGIN(&idf, "$in", &in);
        for (i = 0; start < n && i < LOOKUP_CHUNK; i++, start++) {
            char idx[16];
            const char *k;
            (void)bson_uint32_to_string(i, &k, idx, sizeof(idx));
            BSON_APPEND_UTF8(&in, k, json_string_value(json_array_get(keys, start)));
        }
        bson_append_array_end(&idf, &in);
        bson_append_document_end(&filter, &idf);
        cur = mongoc_collection_find_with_opts(col, &filter, opts, NULL);
        while (mongoc_cursor_next(cur, &doc)) {
            const char *id = NULL;
            json_t *e = entry_from_doc(doc, &id);
            if (e)
                (void)json_object_set_new(found, id, e);
        }
        if (mongoc_cursor_error(cur, &berr)) {
            sh_mongo_err(err, &berr, "item lookup");
            mongoc_cursor_destroy(cur);
            bson_destroy(opts);
            bson_destroy(&filter);
            json_decref(found);
            return NULL;
        }
        mongoc_cursor_destroy(cur);
        bson_destroy(opts);
        bson_destroy(&filter);
    }
    return found;
}

/* Points v->data at the batch's JSON text: "data_z" (deflated, ingest.c),
 * or "data" as binary or, in documents written before, as a string. Leaves
 * it NULL when there is none or it does not inflate. */
static void view_data(const bson_t *doc, struct batch_view *v)
{
    bson_iter_t it, nit;
    bson_subtype_t st;
    const uint8_t *bin;
    uint32_t zlen;
    int64_t n = 0;

    if (bson_iter_init_find(&it, doc, "data") && BSON_ITER_HOLDS_UTF8(&it)) {
        v->data = bson_iter_utf8(&it, &v->data_len);
    } else if (bson_iter_init_find(&it, doc, "data") && BSON_ITER_HOLDS_BINARY(&it)) {
        bson_iter_binary(&it, &st, &v->data_len, &bin);
        v->data = (const char *)bin;
    } else if (bson_iter_init_find(&it, doc, "data_z") && BSON_ITER_HOLDS_BINARY(&it)) {
        bson_iter_binary(&it, &st, &zlen, &bin);
        if (bson_iter_init_find(&nit, doc, "data_len") && BSON_ITER_HOLDS_NUMBER(&nit))
            n = bson_iter_as_int64(&nit);
        if (n > 0 && n < INT32_MAX) {
            uLongf out = (uLongf)n;
            v->inflated = sh_xmalloc((size_t)n);
            if (uncompress((Bytef *)v->inflated, &out, bin, zlen) == Z_OK && out == (uLongf)n) {
                v->data = v->inflated;
                v->data_len = (uint32_t)n;
            }
        }
    }
}

/* Fills v from a capped document; map (may be NULL): the batch's items by
 * key as ingest computed them (hand-off), so data is neither inflated nor
 * parsed again. Without it the map is built here, once per batch. */
static int view_parse(const bson_t *doc, json_t *map, struct batch_view *v, struct sh_err *err)
{
    json_t *items;
    bson_iter_t it, a;
    uint32_t len;
    json_error_t jerr;

    memset(v, 0, sizeof(*v));
    if (bson_iter_init_find(&it, doc, "_id") && BSON_ITER_HOLDS_UTF8(&it))
        v->batch_id = bson_iter_utf8(&it, &len);
    if (bson_iter_init_find(&it, doc, "collection") && BSON_ITER_HOLDS_UTF8(&it))
        v->collection = bson_iter_utf8(&it, &len);
    if (!map)
        view_data(doc, v);
    if (bson_iter_init_find(&it, doc, "seq") && BSON_ITER_HOLDS_NUMBER(&it))
        v->seq = bson_iter_as_int64(&it);
    if (bson_iter_init_find(&it, doc, "at") && BSON_ITER_HOLDS_DATE_TIME(&it))
        v->at = bson_iter_date_time(&it);
    v->key = json_array();
    if (bson_iter_init_find(&it, doc, "key") && BSON_ITER_HOLDS_ARRAY(&it) &&
        bson_iter_recurse(&it, &a)) {
        while (bson_iter_next(&a))
            if (BSON_ITER_HOLDS_UTF8(&a))
                (void)json_array_append_new(v->key, json_string(bson_iter_utf8(&a, &len)));
    }
    if (!v->batch_id || !v->collection || (!v->data && !map) || v->seq <= 0 ||
        !ds_collection_name_ok(v->collection)) {
        sh_err_set(err, SH_EPROTO, "capped document is malformed");
        return -1;
    }
    if (map) { /* ingest parsed and keyed the items already */
        v->map = json_incref(map);
        v->n = bson_iter_init_find(&it, doc, "n") && BSON_ITER_HOLDS_NUMBER(&it)
                   ? bson_iter_as_int64(&it)
                   : (int64_t)json_object_size(map);
        return 0;
    }
    items = json_loadb(v->data, v->data_len, 0, &jerr);
    if (!json_is_array(items)) {
        json_decref(items);
        sh_err_set(err, SH_EPROTO, "batch %s: data is not a JSON array", v->batch_id);
        return -1;
    }
    v->n = (int64_t)json_array_size(items);
    v->map = ds_batch_map(items, v->key, NULL);
    json_decref(items);
    return 0;
}

static int view_cmp(const void *a, const void *b)
{
    const struct batch_view *x = a, *y = b;

    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* Indexes of the failed operations of a bulk reply when all of them are
 * duplicate keys (a new array), else NULL. */
static json_t *dup_indexes(const bson_t *reply)
{
    bson_iter_t it, a, e;
    json_t *out = json_array();

    if (!bson_iter_init_find(&it, reply, "writeErrors") || !bson_iter_recurse(&it, &a)) {
        json_decref(out);
        return NULL;
    }
    while (bson_iter_next(&a)) {
        int64_t code = -1, index = -1;
        if (!bson_iter_recurse(&a, &e)) {
            json_decref(out);
            return NULL;
        }
        while (bson_iter_next(&e)) {
            if (strcmp(bson_iter_key(&e), "code") == 0)
                code = bson_iter_as_int64(&e);
            else if (strcmp(bson_iter_key(&e), "index") == 0)
                index = bson_iter_as_int64(&e);
        }
        if (code != 11000 || index < 0) {
            json_decref(out);
            return NULL;
        }
        (void)json_array_append_new(out, json_integer(index));
    }
    return out;
}

/* Seq of the claim of batch_id in `batches`, -1 when absent; -2 on error. */
static int64_t claim_seq(mongoc_collection_t *col, const char *batch_id, struct sh_err *err)
{
    bson_t *filter = BCON_NEW("_id", BCON_UTF8(batch_id));
    mongoc_cursor_t *cur = mongoc_collection_find_with_opts(col, filter, NULL, NULL);
    const bson_t *d;
    bson_error_t berr;
    bson_iter_t it;
    int64_t seq = -1;

    if (mongoc_cursor_next(cur, &d) && bson_iter_init_find(&it, d, "seq"))
        seq = bson_iter_as_int64(&it);
    if (mongoc_cursor_error(cur, &berr)) {
        sh_mongo_err(err, &berr, "batches find");
        seq = -2;
    }
    mongoc_cursor_destroy(cur);
    bson_destroy(filter);
    return seq;
}

/* Claims every batch_id for its seq in `batches` (one insert). An existing
 * claim with the same seq is a re-run after a crash (reduced again,
 * harmlessly); with another seq the batch is a replay: v->skip = 1. 0 / -1. */
static int claim_batches(struct ds_ctx *ctx, mongoc_client_t *c, struct batch_view *v, size_t nv,
                         struct sh_err *err)
{
    mongoc_collection_t *col = mongoc_client_get_collection(c, ctx->db, DS_BATCHES);
    bson_t *bopts = BCON_NEW("ordered", BCON_BOOL(false));
    mongoc_bulk_operation_t *bulk = mongoc_collection_create_bulk_operation_with_opts(col, bopts);
    bson_t reply;
    bson_error_t berr;
    json_t *dups = NULL, *ix;
    size_t i;
    int rc = 0;

    for (i = 0; i < nv; i++) {
        /* known before it is written: a replay arriving meanwhile is still
         * caught (the batch is in the capped collection until reduced) */
        ds_claimed_add(ctx->claimed, v[i].batch_id, v[i].at);
        bson_t *doc = BCON_NEW("_id", BCON_UTF8(v[i].batch_id), "seq", BCON_INT64(v[i].seq),
                               "collection", BCON_UTF8(v[i].collection), "n", BCON_INT64(v[i].n),
                               "at", BCON_DATE_TIME(v[i].at));
        mongoc_bulk_operation_insert(bulk, doc);
        bson_destroy(doc);
    }
    sh_mongo_write_begin(&ctx->writes);
    int ok = mongoc_bulk_operation_execute(bulk, &reply, &berr);
    sh_mongo_write_end(&ctx->writes);
    if (!ok) {
        dups = dup_indexes(&reply);
        if (!dups) {
            sh_mongo_err(err, &berr, "batches insert");
            rc = -1;
        }
    }
    bson_destroy(&reply);
    json_array_foreach(dups, i, ix)
    {
        size_t k = (size_t)json_integer_value(ix);
        int64_t seq;
        if (k >= nv)
            continue;
        seq = claim_seq(col, v[k].batch_id, err);
        if (seq == -2) {
            rc = -1;
            break;
        }
        /* absent (-1) cannot happen after a duplicate key; treat it as a re-run */
        v[k].skip = seq >= 0 && seq != v[k].seq;
    }
    json_decref(dups);
    mongoc_bulk_operation_destroy(bulk);
    bson_destroy(bopts);
    mongoc_collection_destroy(col);
    return rc;
}

/* Executes one unordered insert of n documents. 1 / 0 (some existed) / -1. */
static int insert_chunk(struct ds_ctx *ctx, mongoc_collection_t *col, bson_t *const *d, size_t n,
                        struct sh_err *err)
{
    bson_t *bopts = BCON_NEW("ordered", BCON_BOOL(false));
    mongoc_bulk_operation_t *bulk = mongoc_collection_create_bulk_operation_with_opts(col, bopts);
    bson_t reply;
    bson_error_t berr;
    int rc = 1;

    for (size_t i = 0; i < n; i++)
        mongoc_bulk_operation_insert(bulk, d[i]);
    sh_mongo_write_begin(&ctx->writes);
    if (!mongoc_bulk_operation_execute(bulk, &reply, &berr)) {
        json_t *dups = dup_indexes(&reply);
        if (dups) {
            rc = 0;
            json_decref(dups);
        } else {
            sh_mongo_err(err, &berr, "reduce insert");
            rc = -1;
        }
    }
    sh_mongo_write_end(&ctx->writes);
    bson_destroy(&reply);
    mongoc_bulk_operation_destroy(bulk);
    bson_destroy(bopts);
    return rc;
}

#define INSERT_CHUNK 100
/* insert_many of docs (a BSON array of documents) in commands of
 * INSERT_CHUNK; duplicate keys are ignored. 1 = all inserted, 0 = some
 * existed, -1 error. */
static int insert_docs(struct ds_ctx *ctx, mongoc_collection_t *col, const bson_t *docs,
                       struct sh_err *err)
{
    bson_t chunk[INSERT_CHUNK];
    bson_t *ptr[INSERT_CHUNK];
    bson_iter_t it;
    size_t n = 0;
    int rc = 1, r;

    if (!bson_iter_init(&it, docs))
        return 1;
    while (rc >= 0 && bson_iter_next(&it)) {
        const uint8_t *data;
        uint32_t len;
        if (!BSON_ITER_HOLDS_DOCUMENT(&it))
            continue;
        bson_iter_document(&it, &len, &data);
        if (!bson_init_static(&chunk[n], data, len))
            continue;
        ptr[n] = &chunk[n];
        if (++n == INSERT_CHUNK) {
            r = insert_chunk(ctx, col, ptr, n, err);
            rc = r < rc ? r : rc;
            n = 0;
        }
    }
    if (rc >= 0 && n > 0) {
        r = insert_chunk(ctx, col, ptr, n, err);
        rc = r < rc ? r : rc;
    }
    return rc;
}

static void append_item_doc(bson_t *arr, uint32_t i, const char *key, json_t *e)
{
    char idx[16];
    const char *ik;
    bson_t d;

    (void)bson_uint32_to_string(i, &ik, idx, sizeof(idx));
    BSON_APPEND_DOCUMENT_BEGIN(arr, ik, &d);
    BSON_APPEND_UTF8(&d, "_id", key);
    BSON_APPEND_UTF8(&d, "data", json_string_value(json_array_get(e, 3)));
    BSON_APPEND_INT64(&d, "revision", (int64_t)json_integer_value(json_array_get(e, 0)));
    BSON_APPEND_DATE_TIME(&d, "first_seen", (int64_t)json_integer_value(json_array_get(e, 1)));
    BSON_APPEND_DATE_TIME(&d, "last_seen", (int64_t)json_integer_value(json_array_get(e, 2)));
    bson_append_document_end(arr, &d);
}

/* $set semantics: the batch's fields replace the stored ones, fields it does
 * not carry are kept (two configurations may feed one collection with
 * different fields). Returns the merged compact JSON (caller frees), or NULL
 * to store the new data as is. */
static char *merge_data(const char *stored, const char *incoming)
{
    json_t *old = json_loads(stored, 0, NULL), *add = json_loads(incoming, 0, NULL);
    char *out = NULL;

    if (json_is_object(old) && json_is_object(add) && json_object_update(old, add) == 0)
        out = json_dumps(old, JSON_COMPACT);
    json_decref(old);
    json_decref(add);
    return out;
}

/* Whether to delete n_keys keys of a collection of about size items with one
 * {_id} statement each (index searches, one SQLite transaction each) rather
 * than one {_id: {$in}} delete (one scan of the collection). */
static int delete_per_id(struct ds_reducer *r, mongoc_client_t *c, struct coll_state *cs,
                         const char *coll, size_t n_keys, size_t size)
{
    struct sh_err err;
    int64_t now = ds_now_ms();

    if (cs->indexed < 0 || (cs->indexed == 0 && now - cs->indexed_at > INDEX_RECHECK_MS)) {
        int ix = ds_store_id_indexed(c, r->ctx, coll, &err);
        if (ix < 0)
            sh_log_warn("reduce_explain_failed collection=%s error=\"%s\"", cs->name, err.msg);
        cs->indexed = ix > 0;
        cs->indexed_at = now;
    }
    /* a statement costs about a transaction (~1 ms); a scan ~0.1 ms per document */
    return cs->indexed && n_keys * 16 < size;
}

/* Writes the journal record, replaces, inserts. 1 all inserted as expected, 0
 * some documents already existed (counts unknown), -1 error. */
static int write_items(struct ds_reducer *r, mongoc_client_t *c, mongoc_collection_t *col,
                       struct coll_state *cs, const char *coll, json_t *pending, int64_t maxseq,
                       size_t size, struct sh_err *err)
{
    mongoc_collection_t *jcol = mongoc_client_get_collection(c, r->ctx->db, DS_JOURNAL);
    bson_t docs = BSON_INITIALIZER, rdocs = BSON_INITIALIZER, j = BSON_INITIALIZER, ka;
    json_t *replace = json_array(), *e;
    const char *key;
    uint32_t nd = 0, nr = 0;
    char *jid = NULL;
    bson_error_t berr;
    int rc = -1, ins;

    json_object_foreach(pending, key, e)
    {
        append_item_doc(&docs, nd++, key, e);
        if (json_integer_value(json_array_get(e, 4))) {
            append_item_doc(&rdocs, nr++, key, e);
            (void)json_array_append_new(replace, json_string(key));
        }
    }
    if (nr > 0) {
        if (rdocs.len > JOURNAL_MAX) {
            sh_err_set(err, SH_ELIMIT, "round too large for the reduce journal");
            goto out;
        }
        jid = sh_xasprintf("%s:%" PRId64, cs->name, maxseq);
        BSON_APPEND_UTF8(&j, "_id", jid);
        BSON_APPEND_UTF8(&j, "collection", cs->name);
        BSON_APPEND_ARRAY_BEGIN(&j, "keys", &ka);
        {
            size_t i;
            json_t *k;
            json_array_foreach(replace, i, k)
            {
                char idx[16];
                const char *ik;
                (void)bson_uint32_to_string((uint32_t)i, &ik, idx, sizeof(idx));
                BSON_APPEND_UTF8(&ka, ik, json_string_value(k));
            }
        }
        bson_append_array_end(&j, &ka);
        BSON_APPEND_ARRAY(&j, "docs", &rdocs);
        if (!mongoc_collection_insert_one(jcol, &j, NULL, NULL, &berr)) {
            bson_t *f = BCON_NEW("_id", BCON_UTF8(jid));
            int ok = berr.code == 11000 &&
                     mongoc_collection_delete_one(jcol, f, NULL, NULL, &berr) &&
                     mongoc_collection_insert_one(jcol, &j, NULL, NULL, &berr);
            bson_destroy(f);
            if (!ok) {
                sh_mongo_err(err, &berr, "journal insert");
                goto out;
            }
        }
        if (ds_store_delete_ids(col, replace,
                                delete_per_id(r, c, cs, coll, json_array_size(replace), size),
                                err) < 0)
            goto out;
    }
    ins = insert_docs(r->ctx, col, &docs, err);
    if (ins < 0)
        goto out;
    if (jid) {
        bson_t *f = BCON_NEW("_id", BCON_UTF8(jid));
        int ok = mongoc_collection_delete_one(jcol, f, NULL, NULL, &berr);
        bson_destroy(f);
        if (!ok) {
            sh_mongo_err(err, &berr, "journal delete");
            goto out;
        }
    }
    rc = ins;
out:
    free(jid);
    json_decref(replace);
    bson_destroy(&j);
    bson_destroy(&rdocs);
    bson_destroy(&docs);
    mongoc_collection_destroy(jcol);
    return rc;
}

static int update_meta(struct ds_reducer *r, mongoc_client_t *c, mongoc_collection_t *items,
                       struct coll_state *cs, int64_t maxseq, int64_t fresh, int exact,
                       struct sh_err *err)
{
    mongoc_collection_t *meta = mongoc_client_get_collection(c, r->ctx->db, DS_META);
    bson_t *q = BCON_NEW("_id", BCON_UTF8(cs->name));
    bson_t u = BSON_INITIALIZER, sub, *uopts = BCON_NEW("upsert", BCON_BOOL(true));
    bson_error_t berr;
    int64_t count = -1;
    int rc = 0;

    if (cs->items) {
        count = (int64_t)json_object_size(cs->items);
    } else if (!cs->counted || !exact) {
        bson_t all = BSON_INITIALIZER;
        count = mongoc_collection_count_documents(items, &all, NULL, NULL, NULL, &berr);
        if (count < 0) {
            sh_mongo_err(err, &berr, "count items");
            rc = -1;
            goto out;
        }
        cs->counted = 1;
    }
    BSON_APPEND_DOCUMENT_BEGIN(&u, "$max", &sub);
    BSON_APPEND_INT64(&sub, "revision", maxseq);
    BSON_APPEND_DATE_TIME(&sub, "updated_at", ds_now_ms());
    bson_append_document_end(&u, &sub);
    if (count >= 0) {
        BSON_APPEND_DOCUMENT_BEGIN(&u, "$set", &sub);
        BSON_APPEND_INT64(&sub, "count", count);
    } else {
        BSON_APPEND_DOCUMENT_BEGIN(&u, "$inc", &sub);
        BSON_APPEND_INT64(&sub, "count", fresh);
    }
    bson_append_document_end(&u, &sub);
    sh_mongo_write_begin(&r->ctx->writes);
    int ok = mongoc_collection_update_one(meta, q, &u, uopts, NULL, &berr);
    sh_mongo_write_end(&r->ctx->writes);
    if (!ok) {
        sh_mongo_err(err, &berr, "collections_meta update");
        cs->counted = 0;
        rc = -1;
    }
out:
    bson_destroy(&u);
    bson_destroy(uopts);
    bson_destroy(q);
    mongoc_collection_destroy(meta);
    return rc;
}

/* Reduces the round's batches of one collection. 0 / -1. */
static int reduce_collection(struct ds_reducer *r, mongoc_client_t *c, struct batch_view *v,
                             size_t nv, const char *name, struct sh_err *err)
{
    struct ds_ctx *ctx = r->ctx;
    struct coll_state *cs = coll_get(r, name);
    char *coll = ds_items_collection(name);
    mongoc_collection_t *col = mongoc_client_get_collection(c, ctx->db, coll);
    json_t *known = NULL, *pending = json_object(), *e;
    const char *key;
    int64_t maxseq = 0, fresh = 0;
    size_t i, batches = 0, n_items = 0;
    int w, rc = -1;

    if (!cs->items && !cs->uncached && ctx->cfg->cache_bytes > 0 && cache_load(r, col, cs, err) < 0)
        goto out;
    if (!cs->items) {
        json_t *keys = json_array(), *seen = json_object();
        for (i = 0; i < nv; i++) {
            json_t *val;
            if (v[i].skip || strcmp(v[i].collection, name) != 0)
                continue;
            json_object_foreach(v[i].map, key, val)
            {
                if (!json_object_get(seen, key)) {
                    (void)json_object_set_new(seen, key, json_true());
                    (void)json_array_append_new(keys, json_string(key));
                }
            }
        }
        known = lookup_items(col, keys, err);
        json_decref(keys);
        json_decref(seen);
        if (!known)
            goto out;
    }
    for (i = 0; i < nv; i++) {
        json_t *val;
        if (v[i].skip || strcmp(v[i].collection, name) != 0)
            continue;
        batches++;
        n_items += (size_t)v[i].n;
        if (v[i].seq > maxseq)
            maxseq = v[i].seq;
        json_object_foreach(v[i].map, key, val)
        {
            json_t *cur = json_object_get(pending, key);
            int existed;
            int64_t fs = v[i].at, ls = v[i].at;
            char *merged = NULL;
            if (cur) {
                existed = (int)json_integer_value(json_array_get(cur, 4));
            } else {
                cur = cs->items ? json_object_get(cs->items, key) : json_object_get(known, key);
                existed = cur != NULL;
            }
            if (cur) {
                if (json_integer_value(json_array_get(cur, 0)) >= v[i].seq)
                    continue; /* already at this or a newer revision */
                if (json_integer_value(json_array_get(cur, 1)) < fs)
                    fs = json_integer_value(json_array_get(cur, 1));
                if (json_integer_value(json_array_get(cur, 2)) > ls)
                    ls = json_integer_value(json_array_get(cur, 2));
                merged =
                    merge_data(json_string_value(json_array_get(cur, 3)), json_string_value(val));
            }
            (void)json_object_set_new(pending, key,
                                      json_pack("[I,I,I,s,i]", (json_int_t)v[i].seq, (json_int_t)fs,
                                                (json_int_t)ls,
                                                merged ? merged : json_string_value(val), existed));
            free(merged);
        }
    }
    if (batches == 0) {
        rc = 0;
        goto out;
    }
    json_object_foreach(pending, key, e)
    {
        if (!json_integer_value(json_array_get(e, 4)))
            fresh++;
    }
    w = json_object_size(pending) == 0
            ? 1
            : write_items(r, c, col, cs, coll, pending, maxseq,
                          cs->items ? json_object_size(cs->items) : (size_t)1 << 30, err);
    if (w < 0) {
        coll_uncache(r, cs); /* the stored state is uncertain now */
        goto out;
    }
    if (cs->items) {
        if (w == 0) {
            coll_uncache(r, cs); /* the cache missed a key: reload next round */
        } else {
            json_object_foreach(pending, key, e)
            {
                json_t *old = json_object_get(cs->items, key);
                const char *data = json_string_value(json_array_get(e, 3));
                if (old)
                    cs->bytes -= entry_bytes(key, json_string_value(json_array_get(old, 3)));
                cs->bytes += entry_bytes(key, data);
                (void)json_object_set_new(cs->items, key,
                                          json_pack("[O,O,O,s]", json_array_get(e, 0),
                                                    json_array_get(e, 1), json_array_get(e, 2),
                                                    data));
            }
            r->bytes = 0;
            for (size_t k = 0; k < r->n; k++)
                r->bytes += r->v[k].bytes;
        }
    }
    if (update_meta(r, c, col, cs, maxseq, fresh, w == 1, err) < 0)
        goto out;
    if (cs->items && r->bytes > (size_t)ctx->cfg->cache_bytes) {
        coll_uncache(r, cs);
        cs->uncached = 1;
        cs->counted = 1; /* the count was just set exactly */
        sh_log_info("reduce_cache_dropped collection=%s reason=\"over DS_REDUCE_CACHE_BYTES\"",
                    name);
    }
    ds_feed_publish(ctx->feed, name, maxseq);
    {
        int64_t now = ds_now_ms();
        for (i = 0; i < nv; i++) {
            if (v[i].skip || strcmp(v[i].collection, name) != 0)
                continue;
            sh_metric_inc(ctx->m.reduced);
            sh_metric_observe(ctx->m.reduce_seconds, (double)(now - v[i].at) / 1000.0);
        }
        sh_metric_add(ctx->m.reduced_items, (double)n_items);
    }
    rc = 0;
out:
    json_decref(known);
    json_decref(pending);
    mongoc_collection_destroy(col);
    free(coll);
    return rc;
}

int ds_reduce_round(struct ds_reducer *r, mongoc_client_t *c, const bson_t *const *docs,
                    json_t *const *maps, size_t n, size_t *ret_replays, struct sh_err *err)
{
    struct batch_view *v = sh_xcalloc(n ? n : 1, sizeof(*v));
    size_t nv = 0, i, j;
    int rc = -1;

    *ret_replays = 0;
    for (i = 0; i < n; i++) {
        bson_iter_t it;
        if (bson_iter_init_find(&it, docs[i], "gap") && bson_iter_as_bool(&it))
            continue; /* gap markers fill sequence numbers that ingest burned */
        if (view_parse(docs[i], maps ? maps[i] : NULL, &v[nv], err) < 0) {
            /* not something ingest wrote; retrying cannot help */
            sh_metric_inc(r->ctx->m.errors);
            sh_log_error("reduce_skipped_malformed error=\"%s\"", err->msg);
            json_decref(v[nv].key);
            json_decref(v[nv].map);
            free(v[nv].inflated);
            memset(&v[nv], 0, sizeof(v[nv]));
            continue;
        }
        nv++;
    }
    if (nv == 0) {
        rc = 0;
        goto out;
    }
    qsort(v, nv, sizeof(*v), view_cmp);
    if (claim_batches(r->ctx, c, v, nv, err) < 0)
        goto out;
    for (i = 0; i < nv; i++) {
        int first = 1;
        if (v[i].skip) {
            (*ret_replays)++;
            continue;
        }
        for (j = 0; j < i && first; j++)
            if (!v[j].skip && strcmp(v[j].collection, v[i].collection) == 0)
                first = 0;
        if (first && reduce_collection(r, c, v, nv, v[i].collection, err) < 0)
            goto out;
    }
    rc = 0;
out:
    for (i = 0; i < nv; i++) {
        json_decref(v[i].key);
        json_decref(v[i].map);
        free(v[i].inflated);
    }
    free(v);
    return rc;
}

/* Finishes one journal record: every saved version whose key is missing or
 * older in the collection is (re)written. 0 / -1. */
static int redo_one(struct ds_reducer *r, mongoc_client_t *c, const bson_t *jdoc,
                    struct sh_err *err)
{
    struct ds_ctx *ctx = r->ctx;
    bson_iter_t it, a;
    const char *jid = NULL, *name = NULL;
    char *name_buf = NULL, *coll;
    mongoc_collection_t *col;
    json_t *keys = json_array(), *saved = json_object(), *known = NULL, *stale = json_array();
    bson_t docs = BSON_INITIALIZER;
    uint32_t nd = 0;
    int rc = -1;

    if (bson_iter_init_find(&it, jdoc, "_id") && BSON_ITER_HOLDS_UTF8(&it))
        jid = bson_iter_utf8(&it, NULL);
    if (bson_iter_init_find(&it, jdoc, "collection") && BSON_ITER_HOLDS_UTF8(&it))
        name = bson_iter_utf8(&it, NULL);
    if (!name && jid && strrchr(jid, ':')) { /* records written before "collection" existed */
        name_buf = sh_xstrndup(jid, (size_t)(strrchr(jid, ':') - jid));
        name = name_buf;
    }
    if (!jid || !name || !ds_collection_name_ok(name)) {
        sh_err_set(err, SH_EPROTO, "malformed reduce_journal record");
        free(name_buf);
        json_decref(keys);
        json_decref(saved);
        json_decref(stale);
        return -1;
    }
    coll = ds_items_collection(name);
    col = mongoc_client_get_collection(c, ctx->db, coll);
    if (bson_iter_init_find(&it, jdoc, "docs") && BSON_ITER_HOLDS_ARRAY(&it) &&
        bson_iter_recurse(&it, &a)) {
        while (bson_iter_next(&a)) {
            const uint8_t *data;
            uint32_t len;
            bson_t d;
            const char *id = NULL;
            json_t *e;
            if (!BSON_ITER_HOLDS_DOCUMENT(&a))
                continue;
            bson_iter_document(&a, &len, &data);
            if (!bson_init_static(&d, data, len) || !(e = entry_from_doc(&d, &id)))
                continue;
            (void)json_array_append_new(keys, json_string(id));
            (void)json_object_set_new(saved, id, e);
        }
    }
    known = lookup_items(col, keys, err);
    if (!known)
        goto out;
    {
        const char *key;
        json_t *e;
        json_object_foreach(saved, key, e)
        {
            json_t *k = json_object_get(known, key);
            if (k && json_integer_value(json_array_get(k, 0)) >=
                         json_integer_value(json_array_get(e, 0)))
                continue;
            if (k)
                (void)json_array_append_new(stale, json_string(key));
            append_item_doc(&docs, nd++, key, e);
        }
    }
    if (json_array_size(stale) > 0 && ds_store_delete_ids(col, stale, 0, err) < 0)
        goto out;
    if (nd > 0 && insert_docs(ctx, col, &docs, err) < 0)
        goto out;
    {
        mongoc_collection_t *jcol = mongoc_client_get_collection(c, ctx->db, DS_JOURNAL);
        bson_t *f = BCON_NEW("_id", BCON_UTF8(jid));
        bson_error_t berr;
        int ok = mongoc_collection_delete_one(jcol, f, NULL, NULL, &berr);
        bson_destroy(f);
        mongoc_collection_destroy(jcol);
        if (!ok) {
            sh_mongo_err(err, &berr, "journal delete");
            goto out;
        }
    }
    sh_log_info("reduce_journal_redone collection=%s record=%s rewritten=%u", name, jid, nd);
    coll_uncache(r, coll_get(r, name));
    rc = 0;
out:
    bson_destroy(&docs);
    json_decref(keys);
    json_decref(saved);
    json_decref(known);
    json_decref(stale);
    mongoc_collection_destroy(col);
    free(coll);
    free(name_buf);
    return rc;
}

int ds_reducer_redo(struct ds_reducer *r, mongoc_client_t *c, struct sh_err *err)
{
    mongoc_collection_t *jcol = mongoc_client_get_collection(c, r->ctx->db, DS_JOURNAL);
    bson_t filter = BSON_INITIALIZER;
    mongoc_cursor_t *cur = mongoc_collection_find_with_opts(jcol, &filter, NULL, NULL);
    const bson_t *doc;
    bson_error_t berr;
    bson_t **todo = NULL;
    size_t n = 0, i;
    int rc = 0;

    /* read first, then rewrite: no cursor stays open across the writes */
    while (mongoc_cursor_next(cur, &doc)) {
        todo = sh_xrealloc(todo, (n + 1) * sizeof(*todo));
        todo[n++] = bson_copy(doc);
    }
    if (mongoc_cursor_error(cur, &berr)) {
        sh_mongo_err(err, &berr, "journal read");
        rc = -1;
    }
    mongoc_cursor_destroy(cur);
    for (i = 0; i < n; i++) {
        if (rc == 0 && redo_one(r, c, todo[i], err) < 0)
            rc = -1;
        bson_destroy(todo[i]);
    }
    free(todo);
    bson_destroy(&filter);
    mongoc_collection_destroy(jcol);
    return rc;
}
