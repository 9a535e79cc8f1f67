/* The tailer thread: follows capped_datasources with a tailable awaitData
 * cursor and reduces each batch (reduce.c), persisting its position in
 * tailer_state {_id: "datasource", seq, bytes} after the writes it covers.
 *
 * Resume: after a (re)start the tailer re-reduces the last DS_RESUME_WINDOW
 * batches before its saved position. Reducing is idempotent, so the
 * re-run costs a little time and covers the crash window between a reduce and
 * the state write (and any late, out-of-order insert from another replica).
 *
 * FerretDB v1 closes a tailable cursor whose first batch exhausts the result
 * (MongoDB keeps it open), and every re-open re-reads the whole capped
 * collection. So the cursor is opened with batchSize 1 on {seq: {$gte: last-1}}:
 * it matches at least two documents once two exist, stays open, and getMore
 * follows new inserts cheaply. When it closes anyway the tailer waits for an
 * ingest wake-up or DS_POLL_MS and re-opens.
 *
 * Overruns: if the oldest batch still in the capped collection is newer than
 * position + 1, unread batches were overwritten: logged as an error and
 * counted in scrapr_datasource_tailer_overruns_total (back-pressure in
 * ingest.c exists so that this cannot happen with a sane DS_BACKLOG_MAX_BYTES).
 *
 * Single tailer: the thread takes the Consul lock DS_LOCK_KEY/<db> before tailing
 * when DS_TAILER_LOCK=1 and stands by while it cannot hold it (another replica
 * has it, or Consul is unreachable: reduce.c's replace step relies on a single
 * tailer). DS_TAILER_LOCK=0 is for a single replica.
 *
 * Threading: one thread, one pooled client; publishes through the feed. */
#include <inttypes.h>
#include <string.h>
#include <unistd.h>

#include "datasource.h"
#include "shared/consul.h"
#include "shared/log.h"
#include "shared/mongo.h"
#include "shared/xalloc.h"

struct tailer {
    struct ds_ctx *ctx;
    mongoc_client_t *c;
    int64_t seq;    /* last reduced seq */
    int64_t bytes;  /* cumulative bytes at seq */
    char *session;  /* Consul session holding the lock, or NULL */
    char *lock_key; /* DS_LOCK_KEY "/" database: one tailer per database */
    int busy_logged;
    int64_t renew_at;
    uint64_t ingest_seen;
};

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
    if (!mongoc_collection_update_one(col, q, u, &opts, NULL, &berr)) {
        sh_mongo_err(err, &berr, "tailer_state update");
        rc = -1;
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

/* Processes one capped document: documents at or below skip_upto were
 * reduced before; the others are reduced (again, harmlessly, inside the
 * resume window). 0 ok, -1 retry later (position not advanced). */
static int process(struct tailer *t, const bson_t *doc, int64_t skip_upto)
{
    struct sh_err err;
    int64_t seq = doc_int(doc, "seq");
    int skipped = 0;
    bson_iter_t it;

    if (seq <= 0 || seq <= skip_upto)
        return 0;
    /* Gap markers fill sequence numbers that ingest burned (see ingest.c). */
    if (!(bson_iter_init_find(&it, doc, "gap") && bson_iter_as_bool(&it))) {
        int64_t t0 = ds_now_ms();
        int r = ds_reduce_batch(t->ctx, t->c, doc, &skipped, &err);
        sh_log_debug("reduced seq=%" PRId64 " waited_ms=%" PRId64 " reduce_ms=%" PRId64, seq,
                     t0 - doc_int_date(doc, "at"), ds_now_ms() - t0);
        if (r < 0) {
            sh_metric_inc(t->ctx->m.errors);
            sh_log_error("reduce_failed seq=%" PRId64 " error=\"%s\"", seq, err.msg);
            return -1;
        }
        if (skipped)
            sh_log_info("reduce_skipped_replay seq=%" PRId64, seq);
    }
    if (seq > t->seq) {
        t->seq = seq;
        t->bytes = doc_int(doc, "bytes");
        if (save_state(t, &err) < 0) {
            sh_metric_inc(t->ctx->m.errors);
            sh_log_error("tailer_state_failed seq=%" PRId64 " error=\"%s\"", seq, err.msg);
            return -1;
        }
    }
    return 0;
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

static void *tailer_main(void *arg)
{
    struct tailer t;
    struct sh_err err;
    int started = 0;

    memset(&t, 0, sizeof(t));
    t.ctx = arg;
    t.c = mongoc_client_pool_pop(t.ctx->pool);
    t.lock_key = sh_xasprintf("%s/%s", DS_LOCK_KEY, t.ctx->db);
    while (!t.ctx->stop) {
        if (!hold_lock(&t)) {
            ds_feed_wait_ingest(t.ctx->feed, &t.ingest_seen, 1000);
            started = 0; /* re-read the position the other replica left */
            continue;
        }
        if (!started) {
            if (ds_store_read_state(t.c, t.ctx->db, &t.seq, &t.bytes, &err) < 0) {
                sh_log_error("tailer_state_read_failed error=\"%s\"", err.msg);
                ds_feed_wait_ingest(t.ctx->feed, &t.ingest_seen, 1000);
                continue;
            }
            sh_log_info("tailer_start position=%" PRId64 " replay_window=%ld", t.seq,
                        t.ctx->cfg->resume_window);
            check_overrun(&t);
            started = 1;
            tail_once(&t, t.seq - t.ctx->cfg->resume_window);
            continue;
        }
        tail_once(&t, t.seq);
        if (!t.ctx->stop)
            ds_feed_wait_ingest(t.ctx->feed, &t.ingest_seen, t.ctx->cfg->poll_ms);
    }
    release_lock(&t);
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
