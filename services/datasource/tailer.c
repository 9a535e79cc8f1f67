/* The tailer thread: reads capped_datasources in insertion order and
 * reduces it in rounds (reduce.c), persisting its position in tailer_state
 * {_id: "datasource", seq, bytes} after the writes it covers.
 *
 * Two ways to follow the capped collection (DS_TAIL_MODE):
 *
 * cursor (MongoDB; auto when the server is not FerretDB): a tailable awaitData
 *   cursor on {seq: {$gte: position - 1}}, one round per document. After a
 *   (re)start the last DS_RESUME_WINDOW batches before the saved position are
 *   re-reduced (idempotent): covers a crash between a reduce and the state
 *   write, and late out-of-order inserts from another replica.
 *
 * poll (FerretDB; auto when the server is FerretDB): no server-side cursor at
 *   all. Each round is one find({}, limit DS_ROUND_BATCHES) - FerretDB turns it
 *   into "ORDER BY record_id LIMIT n", the oldest documents - then the round
 *   is reduced, the position saved, and the documents of the round deleted
 *   from the capped collection. Whatever is still in the collection is
 *   therefore unreduced (or reduced but not yet deleted: re-reduced
 *   harmlessly after a crash), and a poll costs O(round), not O(collection).
 *   Under sustained ingest rounds are gathered (gather()); reduced batch_ids
 *   older than DS_BATCH_RETENTION_S are pruned from `batches`.
 *   Why not tailable cursors on FerretDB v1.24.2: (1) every getMore re-runs the
 *   query from the start of the capped collection and decodes every document
 *   up to the cursor's position (FerretDB's Cursor.Reset), so a tail costs
 *   O(collection) per batch and FerretDB never trims capped collections (its
 *   embedded cleanup is disabled); (2) awaitData gives the SQLite query a
 *   deadline context (maxTimeMS), and modernc.org/sqlite v1.32.0 leaks the
 *   statement of a query whose context ends just as its first step
 *   succeeds (stmt.query drops the rows without closing them). The pooled
 *   connection then keeps a read transaction open forever: it serves stale
 *   snapshots (our sequence counter read back old values: "seq already
 *   taken"), its writes fail with SQLITE_BUSY_SNAPSHOT ("database is locked
 *   (517)"), and the late sqlite3_interrupt stays armed, so every later
 *   statement on it fails with "interrupted (9)" - FerretDB-wide, until a
 *   restart. Poll mode never hands FerretDB a cancellable context.
 *
 * Overruns (cursor mode): if the oldest batch still in the capped collection is
 * newer than position + 1, unread batches were overwritten: logged as an error
 * and counted in scrapr_datasource_tailer_overruns_total (back-pressure in
 * ingest.c exists so that this cannot happen with a sane DS_BACKLOG_MAX_BYTES).
 * Poll mode deletes only what it reduced and FerretDB never trims, so there is
 * nothing to overrun.
 *
 * Single tailer: the thread takes the Consul lock DS_LOCK_KEY/<db> before tailing
 * when DS_TAILER_LOCK=1 and stands by while it cannot hold it (another replica
 * has it, or Consul is unreachable: reduce.c's item cache and replace step rely
 * on a single tailer). DS_TAILER_LOCK=0 is for a single replica.
 *
 * Threading: one thread, one pooled client, the reducer; publishes through the feed. */
#include <inttypes.h>
#include <string.h>
#include <unistd.h>

#include "datasource.h"
#include "shared/consul.h"
#include "shared/log.h"
#include "shared/mongo.h"
#include "shared/xalloc.h"

#define ROUND_BYTES_MAX (16 * 1024 * 1024) /* a poll round stops adding batches past this */
#define STATE_EVERY_MS 250                 /* poll mode: position write interval under load */
/* Poll mode deletes a round's batches with one {_id: {$in}} statement, which
 * FerretDB answers by decoding every document of the capped collection (one
 * SQLite transaction); per-_id statements are index searches but one
 * transaction (~2 ms) each. Batches are stored deflated, so a scan is cheap
 * until the backlog is long: after this many full rounds in a row, per _id. */
#define SCAN_ROUNDS 16
/* Poll mode with the hand-off feeding rounds: read the capped collection at
 * least this often anyway (batches of other replicas, see poll_round). */
#define DB_POLL_MS 250
/* Poll mode: reduced batches are deleted from the capped collection just
 * before it is read next (every DB_POLL_MS, or at once after a full read),
 * or once this many wait, rather than after every round: each delete is a
 * scan of the collection on FerretDB, and the hand-off's rounds do not need
 * the collection trimmed. So it holds reduced batches for up to DB_POLL_MS
 * (a crash then re-reduces them: harmless). */
#define DELETE_DEFER_MAX 256

struct tailer {
    struct ds_ctx *ctx;
    mongoc_client_t *c;
    struct ds_reducer *red;
    int poll;               /* poll mode (FerretDB) rather than a tailable cursor */
    int need_redo;          /* finish reduce_journal records before the next round */
    int capped_indexed;     /* poll mode: -1 unknown, else whether {_id} deletes search an index */
    int64_t capped_checked; /* when capped_indexed was learnt */
    long round;             /* poll mode: batches per round now (1 after a failed round) */
    int full_streak;        /* poll mode: consecutive full rounds (a long backlog) */
    size_t last_n;          /* poll mode: batches in the last round */
    int64_t seq;            /* last reduced seq */
    int64_t bytes;          /* cumulative bytes at seq */
    int dirty;              /* seq/bytes moved since the last tailer_state write */
    int64_t saved_at;       /* when tailer_state was last written */
    char *session;          /* Consul session holding the lock, or NULL */
    char *lock_key;         /* DS_LOCK_KEY "/" database: one tailer per database */
    int busy_logged;
    int64_t renew_at;
    uint64_t ingest_seen;
    int64_t pruned_at; /* when `batches` was last pruned (poll and cursor mode) */
    int64_t db_due;    /* poll mode: next read of the capped collection (0: at once) */
    int db_behind;     /* poll mode: the last read was full, more may wait there */
    int handoff_on;    /* the hand-off is enabled (this process tails in poll mode) */
    int acquired;      /* hold_lock took the lock afresh: start over (another may have tailed) */
    json_t *reduced;   /* poll mode: _ids reduced but not yet deleted from the capped collection */
};

static int hold_lock(struct tailer *t);

/* Forgets reduced batch_ids older than DS_BATCH_RETENTION_S: `batches` would
 * otherwise grow by one document per batch forever. A filter on `at` makes
 * FerretDB decode every claim, so this runs rarely: every retention/24,
 * between 1 s and 1 h. A replay older than the window is stored as new. */
static void prune_batches(struct tailer *t)
{
    long keep_s = t->ctx->cfg->batch_retention_s;
    int64_t every = (int64_t)keep_s * 1000 / 24, now = ds_now_ms();
    mongoc_collection_t *col;
    bson_t *filter;
    bson_t reply;
    bson_error_t berr;
    bson_iter_t it;

    if (every < 1000)
        every = 1000;
    if (every > 3600 * 1000)
        every = 3600 * 1000;
    if (now - t->pruned_at < every)
        return;
    t->pruned_at = now;
    col = mongoc_client_get_collection(t->c, t->ctx->db, DS_BATCHES);
    filter = BCON_NEW("at", "{", "$lt", BCON_DATE_TIME(now - (int64_t)keep_s * 1000), "}");
    /* the set first: a replay is never called a duplicate once its claim is gone */
    ds_claimed_prune(t->ctx->claimed, now - (int64_t)keep_s * 1000);
    if (!mongoc_collection_delete_many(col, filter, NULL, &reply, &berr)) {
        sh_log_warn("batches_prune_failed error=\"%s\"", berr.message);
    } else {
        if (bson_iter_init_find(&it, &reply, "deletedCount") && bson_iter_as_int64(&it) > 0)
            sh_log_info("batches_pruned count=%" PRId64 " retention_s=%ld", bson_iter_as_int64(&it),
                        keep_s);
        /* a set that overflowed (or failed to load) may fit now */
        if (ds_claimed_wanted(t->ctx->claimed) && hold_lock(t))
            ds_claimed_load(t->ctx->claimed);
    }
    bson_destroy(&reply);
    bson_destroy(filter);
    mongoc_collection_destroy(col);
}

static int save_state(struct tailer *t, struct sh_err *err)
{
    mongoc_collection_t *col = mongoc_client_get_collection(t->c, t->ctx->db, DS_STATE);
    bson_t *q = BCON_NEW("_id", BCON_UTF8(DS_STATE_ID));
    bson_t *u = BCON_NEW("$max", "{", "seq", BCON_INT64(t->seq), "bytes", BCON_INT64(t->bytes), "}",
                         "$set", "{", "updated_at", BCON_DATE_TIME(ds_now_ms()), "}");
    bson_t opts = BSON_INITIALIZER;
    bson_error_t berr;
    int rc = 0;

    BSON_APPEND_BOOL(&opts, "upsert", true);
    ds_store_durable_opts(&opts);
    sh_mongo_write_begin(&t->ctx->writes);
    int ok = mongoc_collection_update_one(col, q, u, &opts, NULL, &berr);
    sh_mongo_write_end(&t->ctx->writes);
    if (!ok) {
        sh_mongo_err(err, &berr, "tailer_state update");
        rc = -1;
    } else {
        __atomic_store_n(&t->ctx->pos_bytes, t->bytes, __ATOMIC_RELAXED);
        __atomic_store_n(&t->ctx->pos_at_ms, ds_now_ms(), __ATOMIC_RELEASE);
    }
    bson_destroy(&opts);
    bson_destroy(u);
    bson_destroy(q);
    mongoc_collection_destroy(col);
    return rc;
}

/* Oldest batch in the capped collection (natural order). 1 found, 0 empty, -1 error. */
static int oldest(struct tailer *t, int64_t *ret_seq)
{
    mongoc_collection_t *col = mongoc_client_get_collection(t->c, t->ctx->db, DS_CAPPED);
    bson_t *filter = bson_new();
    bson_t *opts = BCON_NEW("sort", "{", "$natural", BCON_INT32(1), "}", "limit", BCON_INT64(1),
                            "projection", "{", "seq", BCON_INT32(1), "}");
    mongoc_cursor_t *cur = mongoc_collection_find_with_opts(col, filter, opts, NULL);
    const bson_t *doc;
    bson_error_t berr;
    bson_iter_t it;
    int rc = 0;

    if (mongoc_cursor_next(cur, &doc) && bson_iter_init_find(&it, doc, "seq")) {
        *ret_seq = bson_iter_as_int64(&it);
        rc = 1;
    }
    if (mongoc_cursor_error(cur, &berr)) {
        sh_log_warn("tailer_oldest_failed error=\"%s\"", berr.message);
        rc = -1;
    }
    mongoc_cursor_destroy(cur);
    bson_destroy(opts);
    bson_destroy(filter);
    mongoc_collection_destroy(col);
    return rc;
}

static void check_overrun(struct tailer *t)
{
    int64_t first = 0;

    if (oldest(t, &first) == 1 && first > t->seq + 1) {
        sh_metric_inc(t->ctx->m.overruns);
        sh_log_error("tailer_overrun position=%" PRId64 " oldest=%" PRId64 " lost_batches<=%" PRId64
                     " hint=\"raise DS_CAPPED_BYTES or lower DS_BACKLOG_MAX_BYTES\"",
                     t->seq, first, first - t->seq - 1);
    }
}

/* Holds (or tries to take) the Consul lock. 1 = may tail, 0 = another replica tails. */
static int hold_lock(struct tailer *t)
{
    struct ds_ctx *ctx = t->ctx;
    struct sh_err err;
    int64_t now = ds_now_ms();
    int r;

    if (!ctx->consul || !ctx->cfg->tailer_lock)
        return 1;
    if (t->session && now < t->renew_at)
        return 1;
    if (t->session) {
        if (sh_consul_session_renew(ctx->consul, t->session, &err) == 0) {
            t->renew_at = now + 5000;
            return 1;
        }
        sh_log_warn("tailer_lock_renew_failed error=\"%s\"", err.msg);
        free(t->session);
        t->session = NULL;
    }
    if (sh_consul_session_create(ctx->consul, "datasource-tailer", "15s", "1s", "release",
                                 &t->session, &err) < 0) {
        sh_log_warn("tailer_lock_unavailable error=\"%s\" action=standby", err.msg);
        t->session = NULL;
        return 0; /* reduce's replace step relies on a single tailer */
    }
    r = sh_consul_lock_acquire(ctx->consul, t->lock_key, t->session, "datasource", &err);
    if (r == 1) {
        sh_log_info("tailer_lock_acquired key=%s", t->lock_key);
        t->acquired = 1;
        t->busy_logged = 0;
        t->renew_at = now + 5000;
        return 1;
    }
    (void)sh_consul_session_destroy(ctx->consul, t->session, NULL);
    free(t->session);
    t->session = NULL;
    if (r < 0) {
        sh_log_warn("tailer_lock_unavailable error=\"%s\" action=standby", err.msg);
        return 0;
    }
    if (!t->busy_logged)
        sh_log_info("tailer_lock_busy key=%s action=standby", t->lock_key);
    t->busy_logged = 1;
    return 0;
}

static void release_lock(struct tailer *t)
{
    if (!t->session)
        return;
    (void)sh_consul_lock_release(t->ctx->consul, t->lock_key, t->session, NULL);
    (void)sh_consul_session_destroy(t->ctx->consul, t->session, NULL);
    free(t->session);
    t->session = NULL;
}

static int64_t doc_int(const bson_t *doc, const char *name)
{
    bson_iter_t it;

    if (bson_iter_init_find(&it, doc, name) && BSON_ITER_HOLDS_NUMBER(&it))
        return bson_iter_as_int64(&it);
    return 0;
}

static int64_t doc_int_date(const bson_t *doc, const char *name)
{
    bson_iter_t it;

    if (bson_iter_init_find(&it, doc, name) && BSON_ITER_HOLDS_DATE_TIME(&it))
        return bson_iter_date_time(&it);
    return 0;
}

/* Brings the reducer back to a known state after a failure or a lock
 * handover: drops its cache and finishes journal records. 0 / -1. */
static int recover(struct tailer *t)
{
    struct sh_err err;

    if (!t->need_redo)
        return 0;
    ds_reducer_forget(t->red);
    if (ds_reducer_redo(t->red, t->c, &err) < 0) {
        sh_metric_inc(t->ctx->m.errors);
        sh_log_error("reduce_journal_redo_failed error=\"%s\"", err.msg);
        return -1;
    }
    t->need_redo = 0;
    return 0;
}

static int flush_state(struct tailer *t);

/* Reduces the round docs[0..n) (maps: from the hand-off, or NULL) and saves the position (lazy:
 * only moves it in memory; flush_state() writes it). 0 ok, -1 retry later (position not saved). */
static int reduce_round(struct tailer *t, const bson_t *const *docs, json_t *const *maps, size_t n,
                        int lazy)
{
    struct sh_err err;
    size_t replays = 0, i;
    int64_t t0 = ds_now_ms(), seq = t->seq, bytes = t->bytes;

    if (recover(t) < 0)
        return -1;
    if (ds_reduce_round(t->red, t->c, docs, maps, n, &replays, &err) < 0) {
        sh_metric_inc(t->ctx->m.errors);
        sh_log_error("reduce_failed batches=%zu first_seq=%" PRId64 " error=\"%s\"", n,
                     doc_int(docs[0], "seq"), err.msg);
        t->need_redo = 1;
        return -1;
    }
    if (replays)
        sh_log_info("reduce_skipped_replays count=%zu", replays);
    for (i = 0; i < n; i++) {
        if (doc_int(docs[i], "seq") > seq) {
            seq = doc_int(docs[i], "seq");
            bytes = doc_int(docs[i], "bytes");
        }
    }
    sh_log_debug("reduced batches=%zu last_seq=%" PRId64 " waited_ms=%" PRId64
                 " reduce_ms=%" PRId64,
                 n, seq, t0 - doc_int_date(docs[0], "at"), ds_now_ms() - t0);
    if (seq > t->seq) {
        t->seq = seq;
        t->bytes = bytes;
        t->dirty = 1;
    }
    return lazy ? 0 : flush_state(t);
}

/* Writes the position when it moved since the last write. 0 / -1. */
static int flush_state(struct tailer *t)
{
    struct sh_err err;

    if (t->dirty) {
        if (save_state(t, &err) < 0) {
            sh_metric_inc(t->ctx->m.errors);
            sh_log_error("tailer_state_failed seq=%" PRId64 " error=\"%s\"", t->seq, err.msg);
            return -1;
        }
        t->dirty = 0;
        t->saved_at = ds_now_ms();
    }
    return 0;
}

/* Cursor mode: processes one capped document; documents at or below
 * skip_upto were reduced before. 0 ok, -1 retry later. */
static int process(struct tailer *t, const bson_t *doc, int64_t skip_upto)
{
    int64_t seq = doc_int(doc, "seq");

    if (seq <= 0 || seq <= skip_upto)
        return 0;
    return reduce_round(t, &doc, NULL, 1, 0);
}

/* Opens the cursor on {seq >= min(skip_upto, position - 1)} and drains it
 * until it closes, fails, or the lock is lost. */
static void tail_once(struct tailer *t, int64_t skip_upto)
{
    struct ds_ctx *ctx = t->ctx;
    mongoc_collection_t *col = mongoc_client_get_collection(t->c, ctx->db, DS_CAPPED);
    int64_t from = skip_upto < t->seq - 1 ? skip_upto : t->seq - 1;
    bson_t *filter = BCON_NEW("seq", "{", "$gte", BCON_INT64(from), "}");
    bson_t *opts = BCON_NEW("tailable", BCON_BOOL(true), "awaitData", BCON_BOOL(true),
                            "maxAwaitTimeMS", BCON_INT64(500), "batchSize", BCON_INT32(1));
    mongoc_cursor_t *cur = mongoc_collection_find_with_opts(col, filter, opts, NULL);
    const bson_t *doc;
    bson_error_t berr;
    int first = 1;
    int64_t done = skip_upto; /* highest seq handled through this cursor */

    while (!ctx->stop) {
        if (mongoc_cursor_next(cur, &doc)) {
            int64_t seq = doc_int(doc, "seq");
            if (seq <= done)
                continue; /* FerretDB may deliver a document again */
            if (first && t->seq > 0 && seq > t->seq + 1)
                check_overrun(t);
            first = 0;
            if (!hold_lock(t))
                break; /* renews while busy; stop if the lock is gone */
            if (process(t, doc, skip_upto) < 0) {
                ds_feed_wait_ingest(ctx->feed, &t->ingest_seen, 1000);
                break;
            }
            done = seq;
            continue;
        }
        if (mongoc_cursor_error(cur, &berr)) {
            if (!strstr(berr.message, "completed or failed"))
                sh_log_warn("tailer_cursor_error error=\"%s\"", berr.message);
            break;
        }
        if (!mongoc_cursor_more(cur))
            break;
        if (!hold_lock(t))
            break; /* another replica holds the lock now */
    }
    mongoc_cursor_destroy(cur);
    bson_destroy(opts);
    bson_destroy(filter);
    mongoc_collection_destroy(col);
}

static void append_id(json_t *ids, const bson_t *doc)
{
    bson_iter_t it;

    if (bson_iter_init_find(&it, doc, "_id") && BSON_ITER_HOLDS_UTF8(&it))
        (void)json_array_append_new(ids, json_string(bson_iter_utf8(&it, NULL)));
}

/* Poll mode: the oldest documents of the capped collection (at most limit,
 * ROUND_BYTES_MAX) into docs/ids. Count, or -1. */
static long read_capped(struct tailer *t, mongoc_collection_t *col, bson_t **docs, size_t limit,
                        json_t *ids)
{
    bson_t filter = BSON_INITIALIZER;
    /* no filter, no sort: FerretDB answers with ORDER BY record_id LIMIT n */
    bson_t *opts = BCON_NEW("limit", BCON_INT64((int64_t)limit));
    mongoc_cursor_t *cur = mongoc_collection_find_with_opts(col, &filter, opts, NULL);
    const bson_t *doc;
    bson_error_t berr;
    size_t n = 0, bytes = 0;
    long rc;

    while (n < limit && bytes < ROUND_BYTES_MAX && mongoc_cursor_next(cur, &doc)) {
        docs[n++] = bson_copy(doc);
        bytes += doc->len;
        append_id(ids, doc);
    }
    rc = (long)n;
    if (mongoc_cursor_error(cur, &berr)) {
        sh_metric_inc(t->ctx->m.errors);
        sh_log_warn("tailer_poll_failed error=\"%s\"", berr.message);
        rc = -1;
    }
    /* the cursor is closed before any write (no open cursor on FerretDB) */
    mongoc_cursor_destroy(cur);
    bson_destroy(opts);
    bson_destroy(&filter);
    return rc;
}

/* Poll mode: deletes the batches reduced so far (t->reduced) from the capped
 * collection. 0 / -1 (they stay listed; re-reading them is harmless). */
static int delete_reduced(struct tailer *t, mongoc_collection_t *col)
{
    struct ds_ctx *ctx = t->ctx;
    struct sh_err err;
    size_t n = json_array_size(t->reduced);
    int64_t now = ds_now_ms();
    int rc;

    if (n == 0)
        return 0;
    if (t->capped_indexed < 0 || (t->capped_indexed == 0 && now - t->capped_checked > 30000)) {
        int ix = ds_store_id_indexed(t->c, ctx, DS_CAPPED, &err);
        if (ix >= 0)
            t->capped_indexed = ix;
        t->capped_checked = now;
    }
    sh_mongo_write_begin(&ctx->writes);
    rc = ds_store_delete_ids(col, t->reduced,
                             t->capped_indexed > 0 && n > 1 && t->full_streak > SCAN_ROUNDS, &err);
    sh_mongo_write_end(&ctx->writes);
    if (rc < 0) {
        sh_log_warn("tailer_trim_failed error=\"%s\"", err.msg);
        return -1;
    }
    json_array_clear(t->reduced);
    return 0;
}

/* Poll mode, one round: the oldest t->round documents of the capped
 * collection (or of the hand-off), reduced, position saved, then deleted.
 * 2 = did a full round (more may wait), 1 = did a round, 0 = nothing to do,
 * -1 = error (retried after a pause). */
static int poll_round(struct tailer *t)
{
    struct ds_ctx *ctx = t->ctx;
    mongoc_collection_t *col = mongoc_client_get_collection(t->c, ctx->db, DS_CAPPED);
    size_t limit = (size_t)(t->round > 0 ? t->round : 1);
    bson_t **docs = sh_xcalloc(limit, sizeof(*docs));
    json_t **maps = sh_xcalloc(limit, sizeof(*maps)); /* hand-off only */
    json_t *ids = json_array();
    size_t n = 0, i;
    int64_t now = ds_now_ms();
    int rc = 1, lazy, from_db = 1;

    /* While the hand-off is on, this process's own batches come through it;
     * the capped collection is read every DB_POLL_MS (other replicas'
     * batches, and anything the hand-off dropped) and, after a read came back
     * full (a backlog), until one comes back short. An empty hand-off between
     * reads is "nothing to do": no empty find after every round. */
    if (t->handoff_on && ds_handoff_dropped(ctx->handoff))
        t->db_behind = 1; /* it lacks a batch: catch up from the collection, oldest first */
    if (t->handoff_on && !t->db_behind && now < t->db_due) {
        n = ds_handoff_take(ctx->handoff, docs, maps, limit, ROUND_BYTES_MAX);
        for (i = 0; i < n; i++)
            append_id(ids, docs[i]);
        from_db = 0;
    }
    if (from_db) {
        long got;
        /* what was reduced must be gone before the collection is read */
        if (delete_reduced(t, col) < 0) {
            rc = -1;
            goto out;
        }
        got = read_capped(t, col, docs, limit, ids);
        if (got < 0) {
            rc = -1;
            goto out;
        }
        n = (size_t)got;
        t->db_due = now + DB_POLL_MS;
        t->db_behind = n == limit;
        if (n > 0) /* read here: the hand-off must not bring them again */
            ds_handoff_drop_ids(ctx->handoff, ids);
    }
    if (n == 0) {
        rc = flush_state(t) < 0 ? -1 : 0;
        goto out;
    }
    if (!hold_lock(t)) {
        rc = 0;
        goto out;
    }
    /* Poll mode does not need the position to resume (whatever is still in
     * the capped collection is re-read), only for back-pressure, where an
     * older value is safe: while more batches wait it is written at most
     * every STATE_EVERY_MS instead of once per round. */
    lazy = n == limit && ds_now_ms() - t->saved_at < STATE_EVERY_MS;
    if (reduce_round(t, (const bson_t *const *)docs, maps, n, lazy) < 0) {
        /* A round that cannot be written as a whole (e.g. over the journal
         * limit) must not block the batches behind it: retry one by one,
         * from the capped collection (the hand-off gave these up). */
        t->round = 1;
        t->db_due = 0;
        rc = -1;
        goto out;
    }
    if (t->round < ctx->cfg->round_batches)
        t->round = t->round * 2 < ctx->cfg->round_batches ? t->round * 2 : ctx->cfg->round_batches;
    /* What this round covered is deleted later (DELETE_DEFER_MAX): the
     * capped collection then holds only unreduced batches when it is read
     * (see SCAN_ROUNDS for how). */
    t->full_streak = n == limit ? t->full_streak + 1 : 0;
    t->last_n = n;
    (void)json_array_extend(t->reduced, ids);
    if (json_array_size(t->reduced) >= DELETE_DEFER_MAX && delete_reduced(t, col) < 0)
        rc = -1; /* the next round re-reads these batches: harmless, but pause first */
    if (rc == 1 && n == limit)
        rc = 2;
out:
    for (i = 0; i < n; i++) {
        bson_destroy(docs[i]);
        json_decref(maps[i]);
    }
    free(docs);
    free(maps);
    json_decref(ids);
    mongoc_collection_destroy(col);
    return rc;
}

/* Under sustained ingest (the last round had several batches and more
 * arrived while it ran) waits up to DS_ROUND_WAIT_MS for a few more before
 * the next round: a round costs about five statements whatever its size, so
 * fewer, larger rounds leave FerretDB more time for ingest. A lone batch (a
 * client waiting for its write to show) is reduced at once. */
static void gather(struct tailer *t, uint64_t round_start)
{
    struct ds_feed *f = t->ctx->feed;
    uint64_t target, now_count = ds_feed_ingest_count(f);
    int64_t deadline = ds_now_ms() + t->ctx->cfg->round_wait_ms;
    long want = t->ctx->cfg->round_batches / 4 > 1 ? t->ctx->cfg->round_batches / 4 : 1;

    if (t->ctx->cfg->round_wait_ms <= 0 || now_count == round_start || t->last_n < 2)
        return;
    target = now_count + (uint64_t)want;
    t->ingest_seen = now_count;
    while (!t->ctx->stop && t->ingest_seen < target) {
        int64_t left = deadline - ds_now_ms();
        if (left <= 0)
            break;
        ds_feed_wait_ingest(f, &t->ingest_seen, left);
    }
}

/* The hand-off is on only while this process tails in poll mode; off drops
 * what it holds (the capped collection still has it). */
static void set_handoff(struct tailer *t, int on)
{
    if (on == t->handoff_on)
        return;
    ds_handoff_enable(t->ctx->handoff, on);
    t->handoff_on = on;
}

static void *tailer_main(void *arg)
{
    struct tailer t;
    struct sh_err err;
    int started = 0;

    memset(&t, 0, sizeof(t));
    t.ctx = arg;
    t.c = mongoc_client_pool_pop(t.ctx->pool);
    t.red = ds_reducer_new(t.ctx);
    t.capped_indexed = -1;
    t.round = t.ctx->cfg->round_batches;
    t.poll = t.ctx->poll;
    t.lock_key = sh_xasprintf("%s/%s", DS_LOCK_KEY, t.ctx->db);
    t.reduced = json_array();
    sh_log_info("tailer_mode mode=%s ferretdb=%d round_batches=%ld cache_bytes=%ld",
                t.poll ? "poll" : "cursor", t.ctx->ferretdb, t.ctx->cfg->round_batches,
                t.ctx->cfg->cache_bytes);
    while (!t.ctx->stop) {
        int held = hold_lock(&t);
        if (t.acquired) {
            /* taken afresh (also after a lost session): another replica may
             * have tailed meanwhile, so start over as below */
            t.acquired = 0;
            started = 0;
        }
        __atomic_store_n(&t.ctx->tailing, held && started, __ATOMIC_RELAXED);
        set_handoff(&t, held && started && t.poll);
        if (!held || !started) {
            /* another replica may claim: the set must not answer from here on */
            ds_claimed_reset(t.ctx->claimed);
            json_array_clear(t.reduced); /* whoever tails re-reads them harmlessly */
        }
        if (!held) {
            ds_feed_wait_ingest(t.ctx->feed, &t.ingest_seen, 1000);
            started = 0; /* re-read the position the other replica left */
            continue;
        }
        if (!started) {
            /* another replica may have written items: forget the cache, redo journals */
            t.need_redo = 1;
            if (ds_store_read_state(t.c, t.ctx->db, &t.seq, &t.bytes, &err) < 0) {
                sh_log_error("tailer_state_read_failed error=\"%s\"", err.msg);
                ds_feed_wait_ingest(t.ctx->feed, &t.ingest_seen, 1000);
                continue;
            }
            if (recover(&t) < 0) {
                ds_feed_wait_ingest(t.ctx->feed, &t.ingest_seen, 1000);
                continue;
            }
            /* every claim, so replays are answered without a find (until it
             * is loaded, or if it fails, ingest asks `batches`) */
            ds_claimed_load(t.ctx->claimed);
            __atomic_store_n(&t.ctx->pos_bytes, t.bytes, __ATOMIC_RELAXED);
            __atomic_store_n(&t.ctx->pos_at_ms, ds_now_ms(), __ATOMIC_RELEASE);
            sh_log_info("tailer_start position=%" PRId64 " replay_window=%ld", t.seq,
                        t.poll ? 0L : t.ctx->cfg->resume_window);
            started = 1;
            t.db_due = 0; /* first read the capped collection: it holds the backlog */
            set_handoff(&t, t.poll);
            if (!t.poll) {
                check_overrun(&t);
                tail_once(&t, t.seq - t.ctx->cfg->resume_window);
                continue;
            }
        }
        if (t.poll) {
            uint64_t before = ds_feed_ingest_count(t.ctx->feed);
            int r = poll_round(&t);
            prune_batches(&t);
            if (r > 0) {
                if (r == 1) /* after a full round (2) more are waiting: no pause */
                    gather(&t, before);
                continue;
            }
            if (t.ctx->stop)
                continue;
            ds_feed_wait_ingest(t.ctx->feed, &t.ingest_seen, r < 0 ? 1000 : t.ctx->cfg->poll_ms);
            continue;
        }
        tail_once(&t, t.seq);
        prune_batches(&t);
        if (!t.ctx->stop)
            ds_feed_wait_ingest(t.ctx->feed, &t.ingest_seen, t.ctx->cfg->poll_ms);
    }
    __atomic_store_n(&t.ctx->tailing, 0, __ATOMIC_RELAXED);
    set_handoff(&t, 0);
    ds_claimed_reset(t.ctx->claimed);
    if (t.session || !t.ctx->consul || !t.ctx->cfg->tailer_lock) {
        /* still the tailer: leave the position current and the collection trimmed */
        mongoc_collection_t *col = mongoc_client_get_collection(t.c, t.ctx->db, DS_CAPPED);
        (void)flush_state(&t);
        (void)delete_reduced(&t, col);
        mongoc_collection_destroy(col);
    }
    release_lock(&t);
    json_decref(t.reduced);
    ds_reducer_free(t.red);
    free(t.lock_key);
    mongoc_client_pool_push(t.ctx->pool, t.c);
    return NULL;
}

int ds_tailer_start(struct ds_ctx *ctx, struct sh_err *err)
{
    int e = pthread_create(&ctx->tailer_thread, NULL, tailer_main, ctx);

    if (e != 0) {
        sh_err_set(err, SH_EIO, "tailer thread: %s", strerror(e));
        return -1;
    }
    ctx->tailer_running = 1;
    return 0;
}

void ds_tailer_stop(struct ds_ctx *ctx)
{
    if (!ctx->tailer_running)
        return;
    ctx->stop = 1;
    ds_feed_kick(ctx->feed);
    (void)pthread_join(ctx->tailer_thread, NULL);
    ctx->tailer_running = 0;
}
