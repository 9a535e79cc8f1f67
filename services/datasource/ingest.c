/* POST /items storage path: replay check, back-pressure, sequence number and
 * the durable insert into capped_datasources.
 *
 * One capped document per batch: {_id: batch_id, seq, bytes (cumulative),
 * collection, config_id, key, data_z + data_len (the compact JSON text,
 * deflated) or data (binary), n, at}. _id = batch_id makes a replay of a
 * batch that is still in the capped collection fail with a duplicate key;
 * `batches` (written by the reducer) answers replays of older batches. The
 * sequence comes from a counter document ($inc through findAndModify; in poll
 * mode a block of seqs at a time, see take_block) and the capped insert
 * follows under ingest_lock, so within a process the capped collection's
 * natural order equals seq order (the tailer resumes by seq). Crash windows
 * are discussed in docs/datasource.md.
 *
 * Threading: called from HTTP worker threads; serialised by ctx->ingest_lock. */
#include <stdio.h>
#include <string.h>

#include "datasource.h"
#include "shared/deflate.h"
#include "shared/log.h"
#include "shared/mongo.h"
#include "shared/xalloc.h"

/* 1 when batches or the capped collection already holds batch_id, 0 not, -1 error. */
static int batch_known(mongoc_client_t *c, const char *db, const char *coll, const char *batch_id,
                       struct sh_err *err)
{
    mongoc_collection_t *col = mongoc_client_get_collection(c, db, coll);
    bson_t *filter = BCON_NEW("_id", BCON_UTF8(batch_id));
    bson_t *opts = BCON_NEW("limit", BCON_INT64(1), "projection", "{", "_id", BCON_INT32(1), "}");
    mongoc_cursor_t *cur = mongoc_collection_find_with_opts(col, filter, opts, NULL);
    const bson_t *doc;
    bson_error_t berr;
    int rc = mongoc_cursor_next(cur, &doc) ? 1 : 0;

    if (mongoc_cursor_error(cur, &berr)) {
        sh_mongo_err(err, &berr, coll);
        rc = -1;
    }
    mongoc_cursor_destroy(cur);
    bson_destroy(opts);
    bson_destroy(filter);
    mongoc_collection_destroy(col);
    return rc;
}

/* $inc the counter by nseq seqs and nbytes bytes; returns the new totals. */
static int reserve(struct ds_ctx *ctx, mongoc_client_t *c, int64_t nseq, int64_t nbytes,
                   int64_t *ret_seq, int64_t *ret_bytes, struct sh_err *err)
{
    mongoc_collection_t *col = mongoc_client_get_collection(c, ctx->db, DS_COUNTERS);
    mongoc_find_and_modify_opts_t *fam = mongoc_find_and_modify_opts_new();
    bson_t *query = BCON_NEW("_id", BCON_UTF8(DS_COUNTER_ID));
    bson_t *update =
        BCON_NEW("$inc", "{", "seq", BCON_INT64(nseq), "bytes", BCON_INT64(nbytes), "}");
    bson_t reply, value;
    bson_error_t berr;
    bson_iter_t it;
    int rc = -1;

    (void)mongoc_find_and_modify_opts_set_update(fam, update);
    (void)mongoc_find_and_modify_opts_set_flags(fam, MONGOC_FIND_AND_MODIFY_UPSERT |
                                                         MONGOC_FIND_AND_MODIFY_RETURN_NEW);
    sh_mongo_write_begin(&ctx->writes);
    int ok = mongoc_collection_find_and_modify_with_opts(col, query, fam, &reply, &berr);
    sh_mongo_write_end(&ctx->writes);
    if (!ok) {
        sh_mongo_err(err, &berr, "counter $inc");
        goto out;
    }
    if (!bson_iter_init_find(&it, &reply, "value") || !BSON_ITER_HOLDS_DOCUMENT(&it)) {
        sh_err_set(err, SH_EPROTO, "counter $inc: no value in reply");
        goto out_reply;
    }
    {
        const uint8_t *data;
        uint32_t dlen;
        bson_iter_t f;
        bson_iter_document(&it, &dlen, &data);
        if (!bson_init_static(&value, data, dlen)) {
            sh_err_set(err, SH_EPROTO, "counter $inc: bad value");
            goto out_reply;
        }
        *ret_seq = bson_iter_init_find(&f, &value, "seq") ? bson_iter_as_int64(&f) : 0;
        *ret_bytes = bson_iter_init_find(&f, &value, "bytes") ? bson_iter_as_int64(&f) : 0;
        if (*ret_seq <= 0) {
            sh_err_set(err, SH_EPROTO, "counter $inc: no seq");
            goto out_reply;
        }
    }
    rc = 0;
out_reply:
    bson_destroy(&reply);
out:
    bson_destroy(update);
    bson_destroy(query);
    mongoc_find_and_modify_opts_destroy(fam);
    mongoc_collection_destroy(col);
    return rc;
}

/* The batch's JSON text, deflated into binary "data_z" (+ "data_len") when
 * that is smaller, else as binary "data". Why: FerretDB handles a document as
 * JSON text (SJSON) and spends CPU per byte on every insert, find and delete
 * of it (escaping, index expressions, logging the statement's arguments),
 * and the capped copy passes through three of those; scraped JSON deflates
 * ~4x at level 1 for tens of microseconds here. */
static void append_data(bson_t *doc, const struct ds_batch *b)
{
    size_t zlen = 0;
    char *z = b->data_len > 1 ? sh_deflate(b->data_json, b->data_len, 1, SH_DEFLATE_ZLIB,
                                           b->data_len - 1, &zlen)
                              : NULL;

    if (z) {
        bson_append_binary(doc, "data_z", 6, BSON_SUBTYPE_BINARY, (const uint8_t *)z,
                           (uint32_t)zlen);
        BSON_APPEND_INT64(doc, "data_len", (int64_t)b->data_len);
    } else {
        bson_append_binary(doc, "data", 4, BSON_SUBTYPE_BINARY, (const uint8_t *)b->data_json,
                           (uint32_t)b->data_len);
    }
    free(z);
}

/* Builds the capped document. */
static bson_t *capped_doc(const struct ds_batch *b, int64_t seq, int64_t cum_bytes)
{
    bson_t *doc = bson_new();
    bson_t keys;
    size_t i;
    json_t *f;

    BSON_APPEND_UTF8(doc, "_id", b->batch_id);
    BSON_APPEND_INT64(doc, "seq", seq);
    BSON_APPEND_INT64(doc, "bytes", cum_bytes);
    BSON_APPEND_UTF8(doc, "collection", b->collection);
    if (b->config_id)
        BSON_APPEND_UTF8(doc, "config_id", b->config_id);
    else
        BSON_APPEND_NULL(doc, "config_id");
    BSON_APPEND_ARRAY_BEGIN(doc, "key", &keys);
    json_array_foreach(b->key, i, f)
    {
        char idx[16];
        const char *k;
        (void)bson_uint32_to_string((uint32_t)i, &k, idx, sizeof(idx));
        BSON_APPEND_UTF8(&keys, k, json_string_value(f));
    }
    bson_append_array_end(doc, &keys);
    append_data(doc, b);
    BSON_APPEND_INT64(doc, "n", (int64_t)json_array_size(b->data));
    BSON_APPEND_DATE_TIME(doc, "at", ds_now_ms());
    return doc;
}

/* A gap marker {_id: "~gap:<seq>", seq, bytes, gap: true}: the tailer
 * advances over it without reducing anything. */
static int fill_gap(mongoc_collection_t *capped, int64_t seq, int64_t cum, struct sh_err *err)
{
    char id[48];
    bson_t *doc;
    bson_error_t berr;
    int rc = 0;

    (void)snprintf(id, sizeof(id), "~gap:%lld", (long long)seq);
    doc = BCON_NEW("_id", BCON_UTF8(id), "seq", BCON_INT64(seq), "bytes", BCON_INT64(cum), "gap",
                   BCON_BOOL(true), "at", BCON_DATE_TIME(ds_now_ms()));
    if (!mongoc_collection_insert_one(capped, doc, NULL, NULL, &berr) && berr.code != 11000) {
        sh_mongo_err(err, &berr, "gap marker insert");
        rc = -1;
    }
    bson_destroy(doc);
    return rc;
}

#define POS_FRESH_MS 1000

static long backlog_limit(const struct ds_config *cfg)
{
    return cfg->backlog_max_bytes > 0 ? cfg->backlog_max_bytes : cfg->capped_bytes / 4;
}

/* The tailer's position in bytes: the local tailer's when fresh (it only
 * moves forward, so a stale value over-estimates the backlog: safe), else
 * read from tailer_state. 0 / -1. */
static int position_bytes(struct ds_ctx *ctx, mongoc_client_t *c, int64_t *ret, struct sh_err *err)
{
    int64_t seq;

    if (ds_now_ms() - __atomic_load_n(&ctx->pos_at_ms, __ATOMIC_ACQUIRE) < POS_FRESH_MS) {
        *ret = __atomic_load_n(&ctx->pos_bytes, __ATOMIC_RELAXED);
        return 0;
    }
    return ds_store_read_state(c, ctx->db, &seq, ret, err);
}

/* Records the backlog (metric, bp_near) and says whether it passes the limit. */
static int over_limit(struct ds_ctx *ctx, int64_t backlog)
{
    long limit = backlog_limit(ctx->cfg);

    sh_metric_set(ctx->m.backlog, (double)backlog);
    __atomic_store_n(&ctx->bp_near, backlog > limit / 2, __ATOMIC_RELAXED);
    return backlog > limit;
}

/* Seq blocks (poll mode): a POST would cost a counter $inc (one SQLite
 * transaction, ~2 ms) besides its capped insert. Instead ingest reserves up
 * to BLOCK_SEQS seqs and up to a BLOCK_BYTES_DIV-th of the back-pressure
 * limit in bytes at once and hands them out under ingest_lock, so seqs stay
 * in insertion order within the process. A block is used for at most
 * BLOCK_MS: with several ingesting replicas seqs interleave, and a batch
 * reduced after a newer seq of another replica loses to it per key, so the
 * window for that stays short. Unused seqs are gaps (harmless in poll mode:
 * it reads whatever the capped collection holds). Cursor mode (MongoDB)
 * takes one seq per batch as before: its cursor skips seqs below the last
 * one it handled. */
#define BLOCK_SEQS 64
#define BLOCK_BYTES_DIV 64
#define BLOCK_MS 100

static int block_fits(const struct ds_ctx *ctx, int64_t len)
{
    return ctx->blk_seq > 0 && ctx->blk_seq <= ctx->blk_seq_end &&
           ctx->blk_bytes + len <= ctx->blk_bytes_end && ds_now_ms() - ctx->blk_at_ms < BLOCK_MS;
}

static int take_block(struct ds_ctx *ctx, mongoc_client_t *c, int64_t len, struct sh_err *err)
{
    int64_t nseq = 1, nbytes = len, seq_hi, bytes_hi;

    /* Size: twice the last block when it ran out, as many as it served when
     * it expired, so a slow stream burns no seqs (revisions stay dense) and a
     * fast one soon takes BLOCK_SEQS at a time. */
    if (ctx->poll && ctx->blk_seq > 0) {
        int64_t size = ctx->blk_seq_end - ctx->blk_seq_first + 1;
        int64_t used = ctx->blk_seq - ctx->blk_seq_first;
        nseq = ds_now_ms() - ctx->blk_at_ms >= BLOCK_MS ? used : size * 2;
        if (nseq < 1)
            nseq = 1;
        if (nseq > BLOCK_SEQS)
            nseq = BLOCK_SEQS;
    }

    /* bytes: a share of the limit in proportion to the seqs (all of them
     * may be refused if this share is passed; the next block takes more) */
    if (ctx->poll && backlog_limit(ctx->cfg) / BLOCK_BYTES_DIV * nseq / BLOCK_SEQS > nbytes)
        nbytes = backlog_limit(ctx->cfg) / BLOCK_BYTES_DIV * nseq / BLOCK_SEQS;
    if (reserve(ctx, c, nseq, nbytes, &seq_hi, &bytes_hi, err) < 0)
        return -1;
    ctx->blk_seq = seq_hi - nseq + 1;
    ctx->blk_seq_first = ctx->blk_seq;
    ctx->blk_seq_end = seq_hi;
    ctx->blk_bytes = bytes_hi - nbytes;
    ctx->blk_bytes_end = bytes_hi;
    ctx->blk_counter = bytes_hi;
    ctx->blk_at_ms = ds_now_ms();
    return 0;
}

int ds_ingest(struct ds_ctx *ctx, const struct ds_batch *b, struct ds_ingest_result *ret,
              struct sh_err *err)
{
    mongoc_client_t *c = mongoc_client_pool_pop(ctx->pool);
    mongoc_collection_t *capped = NULL;
    bson_t *doc = NULL, opts = BSON_INITIALIZER, reply;
    json_t *map = NULL;
    bson_error_t berr;
    int64_t cseq, cbytes, sbytes, seq, cum, len;
    int known, rc = -1;

    memset(ret, 0, sizeof(*ret));
    ret->status = 202;
    /* For the local tailer's hand-off, keyed here, outside the lock: this
     * thread runs beside the tailer's writes, the tailer would do it inline
     * (and does, for a batch pushed without a map). */
    if (ctx->poll && __atomic_load_n(&ctx->tailing, __ATOMIC_RELAXED))
        map = ds_batch_map(b->data, b->key, b->item_json);
    (void)pthread_mutex_lock(&ctx->ingest_lock);

    /* A replay is acknowledged even under back-pressure: it needs no space.
     * `batches` knows every reduced batch (the tailing process knows them
     * without asking: claimed.c); a replay of a batch still waiting in the
     * capped collection is caught by the _id unique index below. */
    known = ds_claimed_has(ctx->claimed, b->batch_id);
    if (known < 0)
        known = batch_known(c, ctx->db, DS_BATCHES, b->batch_id, err);
    if (known < 0)
        goto out;
    if (known) {
        ret->duplicate = 1;
        rc = 0;
        goto out;
    }

    /* Back-pressure: unreduced bytes = counter total - tailer position, kept
     * far below the capped size so trimming can never reach unread batches.
     * Near the limit (the last POST saw more than half of it) the counter is
     * read first, so refusals under sustained back-pressure write nothing. */
    if (position_bytes(ctx, c, &sbytes, err) < 0)
        goto out;
    len = (int64_t)b->data_len;
    if (__atomic_load_n(&ctx->bp_near, __ATOMIC_RELAXED)) {
        if (ds_store_read_counter(c, ctx->db, &cseq, &cbytes, err) < 0)
            goto out;
        if (cbytes > ctx->blk_counter)
            ctx->blk_counter = cbytes;
        if (over_limit(ctx, cbytes + len - sbytes))
            goto refuse;
    }
    if (!block_fits(ctx, len) && take_block(ctx, c, len, err) < 0)
        goto out;
    /* the counter total includes this batch (reserved) and the unused rest of
     * the block: an over-estimate by at most one block */
    if (over_limit(ctx, ctx->blk_counter - sbytes)) {
        if (!ctx->poll) {
            /* cursor mode: a seq is used right after it is taken or never (the
             * cursor skips a seq that arrives after a higher one) */
            struct sh_err gerr;
            capped = mongoc_client_get_collection(c, ctx->db, DS_CAPPED);
            (void)fill_gap(capped, ctx->blk_seq, ctx->blk_bytes_end, &gerr);
            ctx->blk_seq = 0;
        }
        goto refuse;
    }
    seq = ctx->blk_seq++;
    ctx->blk_bytes += len;
    cum = ctx->blk_bytes;
    capped = mongoc_client_get_collection(c, ctx->db, DS_CAPPED);
    doc = capped_doc(b, seq, cum);
    ds_store_durable_opts(&opts);
    sh_mongo_write_begin(&ctx->writes);
    int ok = mongoc_collection_insert_one(capped, doc, &opts, &reply, &berr);
    sh_mongo_write_end(&ctx->writes);
    if (!ok) {
        bson_destroy(&reply);
        if (berr.code == 11000) {
            /* A replay of a batch still waiting in the capped collection
             * (_id = batch_id): stored once already. Cursor mode: fill the
             * burned seq with a gap marker so the tailer sees a contiguous
             * sequence (poll mode does not care about gaps). */
            known = batch_known(c, ctx->db, DS_CAPPED, b->batch_id, err);
            if (known == 1) {
                ret->duplicate = 1;
                rc = ctx->poll ? 0 : fill_gap(capped, seq, cum, err);
            } else if (known == 0) {
                sh_err_set(err, SH_ECONFLICT, "capped insert: seq %lld already taken",
                           (long long)seq);
            }
            goto out;
        }
        sh_mongo_err(err, &berr, "capped insert");
        goto out;
    }
    bson_destroy(&reply);
    ret->seq = seq;
    rc = 0;
    /* still under ingest_lock: the hand-off stays in seq order. Every batch
     * goes there (map or not) so it never lacks one the tailer would pass. */
    if (ctx->poll) {
        (void)ds_handoff_push(ctx->handoff, doc, map);
        doc = NULL;
        map = NULL;
    }
    goto out;
refuse:
    ret->status = 503;
    ret->retry_after = 1;
    rc = 0;
out:
    (void)pthread_mutex_unlock(&ctx->ingest_lock);
    if (rc == 0 && ret->seq > 0)
        ds_feed_ingested(ctx->feed);
    bson_destroy(&opts);
    if (doc)
        bson_destroy(doc);
    json_decref(map);
    if (capped)
        mongoc_collection_destroy(capped);
    mongoc_client_pool_push(ctx->pool, c);
    return rc;
}
