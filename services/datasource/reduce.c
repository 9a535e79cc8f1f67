/* Reduce one batch (a capped_datasources document) into items_<collection>.
 *
 * Rule ("newest seq wins"): an item is brought to revision = the batch's seq
 * unless it is already at that revision or newer; first_seen = min, last_seen
 * = max of the stored and the batch time; data is merged like $set (the
 * batch's fields win, others are kept). Applying a batch twice, or after a
 * crash half-way, converges to the same state: a re-delivery never
 * duplicates or rolls back an item. How: see upsert_items() (three scans per
 * batch with a redo journal, because FerretDB v1 scans on every query).
 *
 * `batches` gets {_id: batch_id, seq} first: the first seq to claim a
 * batch_id wins, a later capped copy of the same batch_id (a replay that
 * arrived after the original left the capped collection) is skipped.
 *
 * Threading: tailer thread only (ctx->counted is not locked); one tailer per
 * database (Consul lock, tailer.c). */
#include <inttypes.h>
#include <string.h>

#include "datasource.h"
#include "shared/log.h"
#include "shared/mongo.h"
#include "shared/xalloc.h"

struct batch_view {
    const char *batch_id;
    const char *collection;
    const char *data;
    uint32_t data_len;
    int64_t seq;
    int64_t at;
    json_t *key; /* owned */
};

static int view_parse(const bson_t *doc, struct batch_view *v, struct sh_err *err)
{
    bson_iter_t it, a;
    uint32_t len;

    memset(v, 0, sizeof(*v));
    if (bson_iter_init_find(&it, doc, "_id") && BSON_ITER_HOLDS_UTF8(&it))
        v->batch_id = bson_iter_utf8(&it, &len);
    if (bson_iter_init_find(&it, doc, "collection") && BSON_ITER_HOLDS_UTF8(&it))
        v->collection = bson_iter_utf8(&it, &len);
    if (bson_iter_init_find(&it, doc, "data") && BSON_ITER_HOLDS_UTF8(&it))
        v->data = bson_iter_utf8(&it, &v->data_len);
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
    if (!v->batch_id || !v->collection || !v->data || v->seq <= 0 ||
        !ds_collection_name_ok(v->collection)) {
        sh_err_set(err, SH_EPROTO, "capped document is malformed");
        return -1;
    }
    return 0;
}

/* Claims batch_id for seq in `batches`. 1 = newly claimed, 2 = claimed before
 * by this seq (a re-run after a restart), 0 = a replay of another seq, -1 error. */
static int claim_batch(mongoc_client_t *c, const char *db, const struct batch_view *v, size_t n,
                       struct sh_err *err)
{
    mongoc_collection_t *col = mongoc_client_get_collection(c, db, DS_BATCHES);
    bson_t *doc = BCON_NEW("_id", BCON_UTF8(v->batch_id), "seq", BCON_INT64(v->seq), "collection",
                           BCON_UTF8(v->collection), "n", BCON_INT64((int64_t)n), "at",
                           BCON_DATE_TIME(v->at));
    bson_error_t berr;
    int rc = 1;

    if (!mongoc_collection_insert_one(col, doc, NULL, NULL, &berr)) {
        if (berr.code == 11000) {
            bson_t *filter = BCON_NEW("_id", BCON_UTF8(v->batch_id));
            mongoc_cursor_t *cur = mongoc_collection_find_with_opts(col, filter, NULL, NULL);
            const bson_t *d;
            bson_iter_t it;
            int64_t seq = -1;
            if (mongoc_cursor_next(cur, &d) && bson_iter_init_find(&it, d, "seq"))
                seq = bson_iter_as_int64(&it);
            if (mongoc_cursor_error(cur, &berr)) {
                sh_mongo_err(err, &berr, "batches find");
                rc = -1;
            } else {
                rc = seq == v->seq ? 2 : 0;
            }
            mongoc_cursor_destroy(cur);
            bson_destroy(filter);
        } else {
            sh_mongo_err(err, &berr, "batches insert");
            rc = -1;
        }
    }
    bson_destroy(doc);
    mongoc_collection_destroy(col);
    return rc;
}

/* Stored state of the batch's keys with one query per LOOKUP_CHUNK keys
 * ({_id: {$in: [...]}}) instead of one per key. Returns a new object
 * key -> [revision, first_seen, last_seen, data] for the keys that exist, or NULL. */
#define LOOKUP_CHUNK 500
static json_t *lookup_items(mongoc_collection_t *col, json_t *keys, struct sh_err *err)
{
    json_t *found = json_object();
    size_t start = 0, n = json_array_size(keys);

    while (start < n) {
        bson_t filter = BSON_INITIALIZER, idf, in;
        bson_t *opts =
            BCON_NEW("projection", "{", "revision", BCON_INT32(1), "first_seen", BCON_INT32(1),
                     "last_seen", BCON_INT32(1), "data", BCON_INT32(1), "}");
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
            bson_iter_t it;
            const char *id;
            int64_t rev = 0, fs = 0, ls = 0;
            const char *data = "{}";
            if (!bson_iter_init_find(&it, doc, "_id") || !BSON_ITER_HOLDS_UTF8(&it))
                continue;
            id = bson_iter_utf8(&it, NULL);
            if (bson_iter_init_find(&it, doc, "revision"))
                rev = bson_iter_as_int64(&it);
            if (bson_iter_init_find(&it, doc, "first_seen") && BSON_ITER_HOLDS_DATE_TIME(&it))
                fs = bson_iter_date_time(&it);
            if (bson_iter_init_find(&it, doc, "last_seen") && BSON_ITER_HOLDS_DATE_TIME(&it))
                ls = bson_iter_date_time(&it);
            if (bson_iter_init_find(&it, doc, "data") && BSON_ITER_HOLDS_UTF8(&it))
                data = bson_iter_utf8(&it, NULL);
            (void)json_object_set_new(
                found, id,
                json_pack("[I,I,I,s]", (json_int_t)rev, (json_int_t)fs, (json_int_t)ls, data));
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

/* delete_many {_id: {$in: keys}} (+ extra condition), in chunks. */
static int delete_keys(mongoc_collection_t *col, json_t *keys, int64_t below_rev,
                       struct sh_err *err)
{
    size_t start = 0, n = json_array_size(keys);

    while (start < n) {
        bson_t filter = BSON_INITIALIZER, idf, in, lt;
        bson_error_t berr;
        uint32_t i;
        int ok;

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
        if (below_rev > 0) {
            BSON_APPEND_DOCUMENT_BEGIN(&filter, "revision", &lt);
            BSON_APPEND_INT64(&lt, "$lt", below_rev);
            bson_append_document_end(&filter, &lt);
        }
        ok = mongoc_collection_delete_many(col, &filter, NULL, NULL, &berr);
        bson_destroy(&filter);
        if (!ok) {
            sh_mongo_err(err, &berr, "reduce delete");
            return -1;
        }
    }
    return 0;
}

/* Only duplicate-key errors in a bulk reply? */
static int only_dup_errors(const bson_t *reply)
{
    bson_iter_t it, a, e;

    if (!bson_iter_init_find(&it, reply, "writeErrors") || !bson_iter_recurse(&it, &a))
        return 0;
    while (bson_iter_next(&a)) {
        if (!bson_iter_recurse(&a, &e) || !bson_iter_find(&e, "code") ||
            bson_iter_as_int64(&e) != 11000)
            return 0;
    }
    return 1;
}

/* insert_many of docs (a BSON array); duplicate keys are ignored (already
 * written by a previous run). 1 = all inserted, 0 = some existed, -1 error. */
static int insert_docs(mongoc_collection_t *col, const bson_t *docs, struct sh_err *err)
{
    bson_t *bopts = BCON_NEW("ordered", BCON_BOOL(false));
    mongoc_bulk_operation_t *bulk = mongoc_collection_create_bulk_operation_with_opts(col, bopts);
    bson_iter_t it;
    bson_t reply;
    bson_error_t berr;
    int n = 0, rc = 1;

    if (bson_iter_init(&it, docs)) {
        while (bson_iter_next(&it)) {
            const uint8_t *data;
            uint32_t len;
            bson_t d;
            if (!BSON_ITER_HOLDS_DOCUMENT(&it))
                continue;
            bson_iter_document(&it, &len, &data);
            if (bson_init_static(&d, data, len)) {
                mongoc_bulk_operation_insert(bulk, &d);
                n++;
            }
        }
    }
    if (n > 0) {
        if (!mongoc_bulk_operation_execute(bulk, &reply, &berr)) {
            if (only_dup_errors(&reply)) {
                rc = 0;
            } else {
                sh_mongo_err(err, &berr, "reduce insert");
                rc = -1;
            }
        }
        bson_destroy(&reply);
    }
    mongoc_bulk_operation_destroy(bulk);
    bson_destroy(bopts);
    return rc;
}

/* The redo journal: {_id: "<collection>:<seq>", keys: [...], docs: [...]}
 * written before replacing existing items, removed after. */
static char *journal_id(const struct batch_view *v)
{
    return sh_xasprintf("%s:%" PRId64, v->collection, v->seq);
}

/* Finishes an interrupted replacement from the journal. 1 done, 0 no journal, -1 error. */
static int journal_redo(mongoc_collection_t *jcol, mongoc_collection_t *col,
                        const struct batch_view *v, struct sh_err *err)
{
    char *id = journal_id(v);
    bson_t *filter = BCON_NEW("_id", BCON_UTF8(id));
    mongoc_cursor_t *cur = mongoc_collection_find_with_opts(jcol, filter, NULL, NULL);
    const bson_t *doc;
    bson_error_t berr;
    int rc = 0;

    if (mongoc_cursor_next(cur, &doc)) {
        bson_iter_t it;
        bson_t docs;
        json_t *keys = json_array();
        rc = 1;
        if (bson_iter_init_find(&it, doc, "keys") && BSON_ITER_HOLDS_ARRAY(&it)) {
            bson_iter_t a;
            if (bson_iter_recurse(&it, &a))
                while (bson_iter_next(&a))
                    if (BSON_ITER_HOLDS_UTF8(&a))
                        (void)json_array_append_new(keys, json_string(bson_iter_utf8(&a, NULL)));
        }
        if (delete_keys(col, keys, v->seq, err) < 0)
            rc = -1;
        if (rc > 0 && bson_iter_init_find(&it, doc, "docs") && BSON_ITER_HOLDS_ARRAY(&it)) {
            const uint8_t *data;
            uint32_t len;
            bson_iter_array(&it, &len, &data);
            if (bson_init_static(&docs, data, len) && insert_docs(col, &docs, err) < 0)
                rc = -1;
        }
        json_decref(keys);
        if (rc > 0 && !mongoc_collection_delete_one(jcol, filter, NULL, NULL, &berr)) {
            sh_mongo_err(err, &berr, "journal delete");
            rc = -1;
        }
    }
    if (mongoc_cursor_error(cur, &berr)) {
        sh_mongo_err(err, &berr, "journal read");
        rc = -1;
    }
    mongoc_cursor_destroy(cur);
    bson_destroy(filter);
    free(id);
    return rc;
}

/* Applies the unique items (map key -> compact item JSON) of a batch.
 *
 * FerretDB v1 (SQLite) scans the whole collection for every query, update
 * or delete, even on _id (measured ~50 us per stored document: 300 ms per
 * update at 6000 items), while a bulk insert is cheap. Per-item updates would
 * make a batch cost O(items x collection). So a batch costs three scans:
 * one $in lookup of its keys, one delete_many of the keys it replaces, one
 * insert_many of the new versions (first_seen = min, last_seen = max, data and
 * revision of this batch; keys already at >= seq are left alone). The journal
 * document written before the delete makes the pair crash-safe: a re-run
 * finds it and completes the replacement with the saved versions, so no
 * first_seen is lost. This relies on one tailer at a time (the Consul lock);
 * on MongoDB a conditional upsert per item would need neither.
 * *ret_upserted = items created, or -1 when unknown (the caller recounts). */
#define JOURNAL_MAX (12 * 1024 * 1024)

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
static int upsert_items(mongoc_client_t *c, const char *db, mongoc_collection_t *col, json_t *map,
                        const struct batch_view *v, int64_t *ret_upserted, struct sh_err *err)
{
    mongoc_collection_t *jcol = mongoc_client_get_collection(c, db, DS_JOURNAL);
    json_t *keys = json_array(), *replace = json_array(), *known = NULL;
    bson_t docs = BSON_INITIALIZER;
    const char *key;
    json_t *val;
    uint32_t ndocs = 0;
    int64_t fresh = 0;
    int r, rc = -1;

    *ret_upserted = 0;
    r = journal_redo(jcol, col, v, err);
    if (r < 0)
        goto out;
    if (r > 0)
        *ret_upserted = -1; /* counts unknown after a redo */
    json_object_foreach(map, key, val)
    {
        (void)json_array_append_new(keys, json_string(key));
    }
    known = lookup_items(col, keys, err);
    if (!known)
        goto out;
    json_object_foreach(map, key, val)
    {
        json_t *k = json_object_get(known, key);
        int64_t fs = v->at, ls = v->at;
        char *merged = NULL;
        char idx[16];
        const char *ik;
        bson_t d;
        if (k) {
            if (json_integer_value(json_array_get(k, 0)) >= v->seq)
                continue; /* already at this or a newer revision */
            if (json_integer_value(json_array_get(k, 1)) < fs)
                fs = json_integer_value(json_array_get(k, 1));
            if (json_integer_value(json_array_get(k, 2)) > ls)
                ls = json_integer_value(json_array_get(k, 2));
            (void)json_array_append_new(replace, json_string(key));
            merged = merge_data(json_string_value(json_array_get(k, 3)), json_string_value(val));
        } else {
            fresh++;
        }
        (void)bson_uint32_to_string(ndocs++, &ik, idx, sizeof(idx));
        BSON_APPEND_DOCUMENT_BEGIN(&docs, ik, &d);
        BSON_APPEND_UTF8(&d, "_id", key);
        BSON_APPEND_UTF8(&d, "data", merged ? merged : json_string_value(val));
        free(merged);
        BSON_APPEND_INT64(&d, "revision", v->seq);
        BSON_APPEND_DATE_TIME(&d, "first_seen", fs);
        BSON_APPEND_DATE_TIME(&d, "last_seen", ls);
        bson_append_document_end(&docs, &d);
    }
    if (json_array_size(replace) > 0) {
        char *id = journal_id(v);
        bson_t j = BSON_INITIALIZER, ka;
        bson_error_t berr;
        size_t i;
        int ok;
        if (docs.len > JOURNAL_MAX) {
            sh_err_set(err, SH_ELIMIT, "batch too large for the reduce journal");
            free(id);
            goto out;
        }
        BSON_APPEND_UTF8(&j, "_id", id);
        BSON_APPEND_ARRAY_BEGIN(&j, "keys", &ka);
        json_array_foreach(replace, i, val)
        {
            char idx[16];
            const char *ik;
            (void)bson_uint32_to_string((uint32_t)i, &ik, idx, sizeof(idx));
            BSON_APPEND_UTF8(&ka, ik, json_string_value(val));
        }
        bson_append_array_end(&j, &ka);
        BSON_APPEND_ARRAY(&j, "docs", &docs);
        ok = mongoc_collection_insert_one(jcol, &j, NULL, NULL, &berr);
        bson_destroy(&j);
        if (!ok && berr.code != 11000) {
            sh_mongo_err(err, &berr, "journal insert");
            free(id);
            goto out;
        }
        if (delete_keys(col, replace, v->seq, err) < 0 || insert_docs(col, &docs, err) < 0) {
            free(id);
            goto out;
        }
        {
            bson_t *f = BCON_NEW("_id", BCON_UTF8(id));
            ok = mongoc_collection_delete_one(jcol, f, NULL, NULL, &berr);
            bson_destroy(f);
            free(id);
            if (!ok) {
                sh_mongo_err(err, &berr, "journal delete");
                goto out;
            }
        }
    } else if (ndocs > 0 && insert_docs(col, &docs, err) < 0) {
        goto out;
    }
    if (*ret_upserted >= 0)
        *ret_upserted = fresh;
    rc = 0;
out:
    bson_destroy(&docs);
    json_decref(known);
    json_decref(keys);
    json_decref(replace);
    mongoc_collection_destroy(jcol);
    return rc;
}

static int update_meta(struct ds_ctx *ctx, mongoc_client_t *c, mongoc_collection_t *items,
                       const struct batch_view *v, int64_t upserted, struct sh_err *err)
{
    mongoc_collection_t *meta = mongoc_client_get_collection(c, ctx->db, DS_META);
    bson_t *q = BCON_NEW("_id", BCON_UTF8(v->collection));
    bson_t u = BSON_INITIALIZER, sub, *uopts = BCON_NEW("upsert", BCON_BOOL(true));
    bson_error_t berr;
    int recount = upserted < 0 || !json_object_get(ctx->counted, v->collection);
    int64_t count = 0;
    int rc = 0;

    if (recount) {
        bson_t all = BSON_INITIALIZER;
        count = mongoc_collection_count_documents(items, &all, NULL, NULL, NULL, &berr);
        if (count < 0) {
            sh_mongo_err(err, &berr, "count items");
            rc = -1;
            goto out;
        }
    }
    BSON_APPEND_DOCUMENT_BEGIN(&u, "$max", &sub);
    BSON_APPEND_INT64(&sub, "revision", v->seq);
    BSON_APPEND_DATE_TIME(&sub, "updated_at", ds_now_ms());
    bson_append_document_end(&u, &sub);
    if (recount) {
        BSON_APPEND_DOCUMENT_BEGIN(&u, "$set", &sub);
        BSON_APPEND_INT64(&sub, "count", count);
        bson_append_document_end(&u, &sub);
    } else {
        BSON_APPEND_DOCUMENT_BEGIN(&u, "$inc", &sub);
        BSON_APPEND_INT64(&sub, "count", upserted);
        bson_append_document_end(&u, &sub);
    }
    if (!mongoc_collection_update_one(meta, q, &u, uopts, NULL, &berr)) {
        sh_mongo_err(err, &berr, "collections_meta update");
        rc = -1;
        goto out;
    }
    if (recount)
        (void)json_object_set_new(ctx->counted, v->collection, json_true());
out:
    bson_destroy(&u);
    bson_destroy(uopts);
    bson_destroy(q);
    mongoc_collection_destroy(meta);
    return rc;
}

int ds_reduce_batch(struct ds_ctx *ctx, mongoc_client_t *c, const bson_t *doc, int *ret_skipped,
                    struct sh_err *err)
{
    struct batch_view v;
    json_t *data = NULL, *map = NULL, *item;
    json_error_t jerr;
    mongoc_collection_t *items = NULL;
    char *coll = NULL;
    int64_t upserted = 0;
    size_t i;
    int claim, rc = -1;

    *ret_skipped = 0;
    if (view_parse(doc, &v, err) < 0)
        goto out;
    data = json_loadb(v.data, v.data_len, 0, &jerr);
    if (!json_is_array(data)) {
        sh_err_set(err, SH_EPROTO, "batch %s: data is not a JSON array", v.batch_id);
        goto out;
    }
    claim = claim_batch(c, ctx->db, &v, json_array_size(data), err);
    if (claim < 0)
        goto out;
    if (claim == 0) {
        *ret_skipped = 1;
        rc = 0;
        goto out;
    }
    /* Within one batch the last item with a key wins. */
    map = json_object();
    json_array_foreach(data, i, item)
    {
        char *key = ds_item_key(item, v.key);
        char *js = json_dumps(item, JSON_COMPACT);
        (void)json_object_set_new(map, key, json_string(js ? js : "{}"));
        free(js);
        free(key);
    }
    coll = ds_items_collection(v.collection);
    items = mongoc_client_get_collection(c, ctx->db, coll);
    if (upsert_items(c, ctx->db, items, map, &v, &upserted, err) < 0)
        goto out;
    if (update_meta(ctx, c, items, &v, upserted, err) < 0)
        goto out;
    ds_feed_publish(ctx->feed, v.collection, v.seq);
    sh_metric_inc(ctx->m.reduced);
    sh_metric_add(ctx->m.reduced_items, (double)json_array_size(data));
    sh_metric_observe(ctx->m.reduce_seconds, (double)(ds_now_ms() - v.at) / 1000.0);
    rc = 0;
out:
    if (items)
        mongoc_collection_destroy(items);
    free(coll);
    json_decref(map);
    json_decref(data);
    json_decref(v.key);
    return rc;
}
