/* The tailer: materialises capped_configurations into configurations, in
 * sequence order, exactly once in effect.
 *
 * Why sequence numbers and not the capped collection's natural order: real
 * MongoDB serialises capped inserts so natural order is commit order, but
 * FerretDB v1 assigns a document's position before its transaction commits,
 * so with concurrent writers a document can appear *behind* one a tailable
 * cursor already returned, and a cursor resuming by position skips it
 * (tests/integration/test_config_discovery_store.c, two writers). Each
 * submitted document therefore carries `seq` (store.c: highest + 1 under a
 * unique index, so there are no holes and seq order is commit order), and the
 * tailer processes seq = next, next+1, ... Should a hole appear anyway (a
 * trimmed capped collection, a hand-inserted document) it is waited for up
 * to gap_grace_ms, then skipped and re-checked for ten minutes (late list).
 * A POST never depends on the tailer: if its document is not materialised in
 * time, the handler materialises it itself (idempotent).
 *
 * Threads:
 *  - tailer: drains documents with seq >= next (a plain indexed query),
 *    saves next after each document (tailer_state, moved forward only with
 *    $max), then sleeps until woken or poll_ms passes;
 *  - watcher: holds a tailable awaitData cursor on the capped collection and
 *    wakes the tailer for every new document, so documents POSTed to another
 *    replica are picked up at once; a dead cursor (FerretDB ends them often,
 *    MongoDB when the query matches nothing) is reopened.
 * A restart resumes at the saved next: it never skips. The crash window
 * between a run's effects and the save (once per run of documents) replays
 * that run, which is idempotent (store.c), as is a second replica.
 *
 * Locking: ctx->mu guards the waiter list, wake/stop flags and counters. */
#include "config_discovery.h"

#include <errno.h>
#include <string.h>
#include <time.h>

#include "shared/log.h"
#include "shared/mongo.h"
#include "shared/xalloc.h"

#define BATCH 256
#define LATE_MAX 1024
#define LATE_KEEP_MS (10 * 60 * 1000)

int cd_ctx_init(struct cd_ctx *ctx, const struct cd_config *cfg, struct sh_err *err)
{
    pthread_condattr_t attr;

    memset(ctx, 0, sizeof(*ctx));
    ctx->cfg = cfg;
    ctx->next_seq = 1;
    ctx->pool = sh_mongo_pool_new(cfg->mongo_url, &ctx->db, err);
    if (!ctx->pool)
        return -1;
    (void)pthread_mutex_init(&ctx->mu, NULL);
    (void)pthread_mutex_init(&ctx->seq_mu, NULL);
    sh_mongo_write_gate_init(&ctx->writes);
    (void)pthread_condattr_init(&attr);
    (void)pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    (void)pthread_cond_init(&ctx->cv, &attr);
    (void)pthread_cond_init(&ctx->wake_cv, &attr);
    (void)pthread_cond_init(&ctx->bump_cv, &attr);
    (void)pthread_condattr_destroy(&attr);
    return 0;
}

void cd_ctx_done(struct cd_ctx *ctx)
{
    if (!ctx || !ctx->pool)
        return;
    mongoc_client_pool_destroy(ctx->pool);
    ctx->pool = NULL;
    free(ctx->db);
    ctx->db = NULL;
    (void)pthread_cond_destroy(&ctx->cv);
    (void)pthread_cond_destroy(&ctx->wake_cv);
    (void)pthread_cond_destroy(&ctx->bump_cv);
    (void)pthread_mutex_destroy(&ctx->mu);
    (void)pthread_mutex_destroy(&ctx->seq_mu);
    sh_mongo_write_gate_destroy(&ctx->writes);
}

static void deadline_after(struct timespec *ts, long ms)
{
    (void)clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    (void)clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int cd_nap(struct cd_ctx *ctx, long ms)
{
    struct timespec until;
    int stop;

    deadline_after(&until, ms);
    (void)pthread_mutex_lock(&ctx->mu);
    while (!ctx->stop && pthread_cond_timedwait(&ctx->cv, &ctx->mu, &until) != ETIMEDOUT)
        ;
    stop = ctx->stop;
    (void)pthread_mutex_unlock(&ctx->mu);
    return stop;
}

static int stopping(struct cd_ctx *ctx)
{
    int stop;
    (void)pthread_mutex_lock(&ctx->mu);
    stop = ctx->stop;
    (void)pthread_mutex_unlock(&ctx->mu);
    return stop;
}

void cd_count(struct cd_ctx *ctx, const char *name, const char *help)
{
    if (ctx->metrics)
        sh_metric_inc(sh_metrics_counter(ctx->metrics, name, help));
}

void cd_tailer_wake(struct cd_ctx *ctx)
{
    (void)pthread_mutex_lock(&ctx->mu);
    ctx->wakes++;
    (void)pthread_cond_signal(&ctx->wake_cv);
    (void)pthread_mutex_unlock(&ctx->mu);
}

/* Waits until woken (wakes moved past *seen), stopped, or ms passed. */
static int wait_wake(struct cd_ctx *ctx, uint64_t *seen, long ms)
{
    struct timespec until;
    int stop;

    deadline_after(&until, ms);
    (void)pthread_mutex_lock(&ctx->mu);
    while (!ctx->stop && ctx->wakes == *seen &&
           pthread_cond_timedwait(&ctx->wake_cv, &ctx->mu, &until) != ETIMEDOUT)
        ;
    *seen = ctx->wakes;
    stop = ctx->stop;
    (void)pthread_mutex_unlock(&ctx->mu);
    return stop;
}

void cd_wait_register(struct cd_ctx *ctx, struct cd_waiter *w)
{
    w->done = 0;
    (void)pthread_mutex_lock(&ctx->mu);
    w->next = ctx->waiters;
    ctx->waiters = w;
    (void)pthread_mutex_unlock(&ctx->mu);
}

int cd_wait_done(struct cd_ctx *ctx, struct cd_waiter *w, long timeout_ms)
{
    struct timespec until;
    int done;

    deadline_after(&until, timeout_ms);
    (void)pthread_mutex_lock(&ctx->mu);
    while (!w->done && !ctx->stop &&
           pthread_cond_timedwait(&ctx->cv, &ctx->mu, &until) != ETIMEDOUT)
        ;
    done = w->done;
    for (struct cd_waiter **p = &ctx->waiters; *p; p = &(*p)->next) {
        if (*p == w) {
            *p = w->next;
            break;
        }
    }
    (void)pthread_mutex_unlock(&ctx->mu);
    return done;
}

static void notify(struct cd_ctx *ctx, const bson_t *doc)
{
    bson_iter_t it;
    int any = 0;

    (void)pthread_mutex_lock(&ctx->mu);
    ctx->processed++;
    if (bson_iter_init_find(&it, doc, "config_id") && BSON_ITER_HOLDS_OID(&it)) {
        for (struct cd_waiter *w = ctx->waiters; w; w = w->next) {
            if (bson_oid_equal(&w->id, bson_iter_oid(&it))) {
                w->done = 1;
                any = 1;
            }
        }
    }
    if (any)
        (void)pthread_cond_broadcast(&ctx->cv);
    (void)pthread_mutex_unlock(&ctx->mu);
}

/* Materialises one document, retrying transient errors until it succeeds or
 * the service stops: a document is never skipped because Mongo blinked.
 * Returns 0 done, -1 stopping. */
static int process(struct cd_ctx *ctx, const bson_t *doc)
{
    struct sh_err err;
    long backoff = 50;
    int changed = 0;

    while (cd_store_materialise(ctx, doc, &changed, &err) != 0) {
        sh_log_warn("materialise_failed seq=%lld error=\"%s\" retry_ms=%ld",
                    (long long)cd_doc_seq(doc), err.msg, backoff);
        cd_count(ctx, "scrapr_cd_materialise_errors_total", "Failed materialisation attempts");
        if (cd_nap(ctx, backoff))
            return -1;
        backoff = backoff < 2000 ? backoff * 2 : 2000;
    }
    if (changed) {
        cd_revision_bump(ctx);
        cd_count(ctx, "scrapr_cd_materialised_total",
                 "Capped documents that created configurations");
    }
    notify(ctx, doc);
    return 0;
}

/* The tailer's private state. */
struct tailer {
    int64_t next;
    int64_t gap_seq, gap_since; /* the hole being waited for (gap_since 0 = none) */
    struct {
        int64_t seq, until;
    } late[LATE_MAX];
    size_t nlate;
    int64_t late_checked;
    int64_t probed; /* last hole probe without a watcher */
};

static void late_add(struct tailer *t, int64_t from, int64_t to)
{
    int64_t until = mono_ms() + LATE_KEEP_MS;
    for (int64_t s = from; s < to && t->nlate < LATE_MAX; s++) {
        t->late[t->nlate].seq = s;
        t->late[t->nlate].until = until;
        t->nlate++;
    }
}

/* Processes documents that arrived after their hole was given up on. */
static int late_check(struct cd_ctx *ctx, struct tailer *t)
{
    int64_t now = mono_ms();
    size_t keep = 0;

    if (t->nlate == 0 || now - t->late_checked < 1000)
        return 0;
    t->late_checked = now;
    for (size_t i = 0; i < t->nlate; i++) {
        bson_t **docs = NULL;
        size_t n = 0;
        struct sh_err err;
        if (cd_store_fetch(ctx, t->late[i].seq, 1, &docs, &n, &err) != 0) {
            sh_log_warn("late_check_failed error=\"%s\"", err.msg);
            n = 0;
        }
        if (n == 1) {
            sh_log_warn("late_document seq=%lld action=materialise", (long long)t->late[i].seq);
            if (process(ctx, docs[0]) != 0) {
                cd_docs_free(docs, n);
                return -1;
            }
        } else if (t->late[i].until > now) {
            t->late[keep++] = t->late[i];
        }
        cd_docs_free(docs, n);
    }
    t->nlate = keep;
    return 0;
}

/* Nothing at t->next although the watcher saw a newer document: a hole
 * (e.g. the capped collection trimmed past us while we were down). Waited
 * for gap_grace_ms, then skipped to the next existing document; a small
 * hole is re-checked for a while (late list). */
static int check_gap(struct cd_ctx *ctx, struct tailer *t, long *ret_wait_ms, struct sh_err *err)
{
    int64_t now = mono_ms(), seen, after = 0;
    int rc;

    (void)pthread_mutex_lock(&ctx->mu);
    seen = ctx->watch_max;
    (void)pthread_mutex_unlock(&ctx->mu);
    if (!ctx->watcher_running && seen < t->next && now - t->probed >= 3 * ctx->cfg->gap_grace_ms) {
        /* No watcher to tell us about newer documents: look ourselves, rarely
         * (a range query, i.e. a scan on FerretDB). */
        t->probed = now;
        rc = cd_store_seq_after(ctx, t->next, &after, err);
        if (rc < 0)
            return -2;
        if (rc == 1) {
            seen = after;
            (void)pthread_mutex_lock(&ctx->mu);
            if (after > ctx->watch_max)
                ctx->watch_max = after;
            (void)pthread_mutex_unlock(&ctx->mu);
        }
    }
    if (seen < t->next) {
        t->gap_since = 0;
        return 0;
    }
    if (t->gap_since == 0 || t->gap_seq != t->next) {
        t->gap_seq = t->next;
        t->gap_since = now;
    }
    if (now - t->gap_since < ctx->cfg->gap_grace_ms) {
        long left = (long)(ctx->cfg->gap_grace_ms - (now - t->gap_since));
        *ret_wait_ms = left < *ret_wait_ms ? left : *ret_wait_ms;
        return 0;
    }
    rc = cd_store_seq_after(ctx, t->next, &after, err);
    if (rc <= 0)
        return rc < 0 ? -2 : 0;
    sh_log_warn("sequence_gap_skipped from=%lld to=%lld waited_ms=%lld", (long long)t->next,
                (long long)(after - 1), (long long)(now - t->gap_since));
    if (after - t->next <= 64)
        late_add(t, t->next, after);
    (void)pthread_mutex_lock(&ctx->mu);
    ctx->skipped_gaps += (uint64_t)(after - t->next);
    (void)pthread_mutex_unlock(&ctx->mu);
    t->next = after;
    t->gap_since = 0;
    return 1;
}

/* Processes the run of documents from t->next on. Returns 1 progressed (call
 * again), 0 nothing to do now (*ret_wait_ms: when to look again at the
 * latest), -1 stopping, -2 store error (err). */
static int drain(struct cd_ctx *ctx, struct tailer *t, long *ret_wait_ms, struct sh_err *err)
{
    bson_t **docs = NULL;
    size_t n = 0;
    int rc = 0;

    *ret_wait_ms = ctx->cfg->poll_ms;
    if (cd_store_fetch(ctx, t->next, BATCH, &docs, &n, err) != 0)
        return -2;
    if (n == 0) {
        cd_docs_free(docs, n);
        return check_gap(ctx, t, ret_wait_ms, err);
    }
    for (size_t i = 0; i < n; i++) {
        if (process(ctx, docs[i]) != 0) {
            rc = -1;
            break;
        }
        t->next++;
        t->gap_since = 0;
        (void)pthread_mutex_lock(&ctx->mu);
        ctx->next_seq = t->next;
        (void)pthread_mutex_unlock(&ctx->mu);
    }
    /* Once per run rather than per document (one write each): a crash
     * before it replays the run, which is idempotent. */
    if (cd_store_state_save(ctx, t->next, err) != 0)
        sh_log_warn("tailer_state_save_failed error=\"%s\"", err->msg);
    cd_docs_free(docs, n);
    return rc < 0 ? -1 : 1;
}

static void *tailer_main(void *arg)
{
    struct cd_ctx *ctx = arg;
    struct tailer *t = sh_xcalloc(1, sizeof(*t));
    uint64_t seen = 0;
    long backoff = 100;
    struct sh_err err;
    int rc;

    t->next = 1;
    while ((rc = cd_store_state_load(ctx, &t->next, &err)) < 0) {
        sh_log_warn("tailer_state_load_failed error=\"%s\" retry_ms=%ld", err.msg, backoff);
        if (cd_nap(ctx, backoff))
            goto out;
        backoff = backoff < 5000 ? backoff * 2 : 5000;
    }
    (void)pthread_mutex_lock(&ctx->mu);
    ctx->next_seq = t->next;
    (void)pthread_mutex_unlock(&ctx->mu);
    sh_log_info("tailer_started next_seq=%lld resumed=%d", (long long)t->next, rc);
    backoff = 100;
    while (!stopping(ctx)) {
        long wait_ms;
        rc = drain(ctx, t, &wait_ms, &err);
        if (rc == -1)
            break;
        if (rc == -2) {
            sh_log_warn("tailer_error error=\"%s\" retry_ms=%ld", err.msg, backoff);
            if (cd_nap(ctx, backoff))
                break;
            backoff = backoff < 5000 ? backoff * 2 : 5000;
            continue;
        }
        backoff = 100;
        if (late_check(ctx, t) != 0)
            break;
        if (rc == 1)
            continue;
        if (t->nlate && wait_ms > 1000)
            wait_ms = 1000;
        if (wait_wake(ctx, &seen, wait_ms))
            break;
    }
out:
    sh_log_info("tailer_stopped next_seq=%lld", (long long)t->next);
    free(t);
    return NULL;
}

/* The watcher: a tailable awaitData cursor used as a doorbell. It starts at
 * the last processed document ($gte keeps at least one match, so MongoDB
 * does not end the cursor at once) and rings for every newer one. */
static void *watcher_main(void *arg)
{
    struct cd_ctx *ctx = arg;
    int64_t last = -1;
    int no_filter = 0;

    while (!stopping(ctx)) {
        mongoc_client_t *client = mongoc_client_pool_pop(ctx->pool);
        mongoc_collection_t *coll = mongoc_client_get_collection(client, ctx->db, CD_COLL_CAPPED);
        bson_t *filter = bson_new(), *opts;
        mongoc_cursor_t *cur;
        const bson_t *doc;
        bson_error_t e;
        int got = 0, fresh = 0;

        if (last < 0) {
            (void)pthread_mutex_lock(&ctx->mu);
            last = ctx->next_seq - 1;
            (void)pthread_mutex_unlock(&ctx->mu);
        }
        if (last > 0 && !no_filter) {
            bson_t child;
            char id[CD_SEQ_ID_LEN];
            cd_seq_id(last, id);
            BSON_APPEND_DOCUMENT_BEGIN(filter, "_id", &child);
            BSON_APPEND_UTF8(&child, "$gte", id);
            bson_append_document_end(filter, &child);
        }
        opts =
            BCON_NEW("tailable", BCON_BOOL(true), "awaitData", BCON_BOOL(true), "maxAwaitTimeMS",
                     BCON_INT64(ctx->cfg->await_ms), "sort", "{", "$natural", BCON_INT32(1), "}");
        cur = mongoc_collection_find_with_opts(coll, filter, opts, NULL);
        while (!stopping(ctx)) {
            if (mongoc_cursor_next(cur, &doc)) {
                int64_t s = cd_doc_seq(doc);
                got++;
                if (s > last) {
                    last = s;
                    fresh++;
                    (void)pthread_mutex_lock(&ctx->mu);
                    if (s > ctx->watch_max)
                        ctx->watch_max = s;
                    (void)pthread_mutex_unlock(&ctx->mu);
                    cd_tailer_wake(ctx);
                }
            } else if (mongoc_cursor_error(cur, &e)) {
                sh_log_debug("watcher_cursor_error error=\"%s\"", e.message);
                break;
            } else if (!mongoc_cursor_more(cur)) {
                break;
            }
        }
        mongoc_cursor_destroy(cur);
        bson_destroy(filter);
        bson_destroy(opts);
        mongoc_collection_destroy(coll);
        mongoc_client_pool_push(ctx->pool, client);
        /* Nothing matched: the position was trimmed away; watch everything. */
        no_filter = got == 0 && last > 0 && !no_filter;
        if (cd_nap(ctx, fresh ? 5 : 100))
            break;
    }
    return NULL;
}

int cd_threads_start(struct cd_ctx *ctx, struct sh_err *err)
{
    int rc = pthread_create(&ctx->tailer, NULL, tailer_main, ctx);
    if (rc == 0) {
        ctx->tailer_running = 1;
        /* Never on FerretDB, even when asked: its awaitData getMores run SQLite
         * queries under a deadline, and a deadline that fires at the wrong moment
         * poisons a pooled connection of its SQLite driver until FerretDB restarts
         * (docs/datasource.md, "The FerretDB stall"). auto = on for MongoDB. */
        int watch = ctx->ferretdb ? 0 : ctx->cfg->watch < 0 ? 1 : ctx->cfg->watch;
        if (ctx->ferretdb && ctx->cfg->watch > 0)
            sh_log_warn("SCRAPR_CD_WATCH=on ignored: no tailable cursors on FerretDB");
        if (watch) {
            rc = pthread_create(&ctx->watcher, NULL, watcher_main, ctx);
            ctx->watcher_running = rc == 0;
        }
        sh_log_info("tailer_watcher enabled=%d ferretdb=%d", watch, ctx->ferretdb);
    }
    if (rc == 0 && ctx->consul) {
        rc = pthread_create(&ctx->bumper, NULL, cd_bumper_main, ctx);
        ctx->bumper_running = rc == 0;
    }
    if (rc != 0) {
        sh_err_set(err, SH_EIO, "pthread_create: %s", strerror(rc));
        cd_threads_stop(ctx);
        return -1;
    }
    return 0;
}

void cd_threads_stop(struct cd_ctx *ctx)
{
    (void)pthread_mutex_lock(&ctx->mu);
    ctx->stop = 1;
    (void)pthread_cond_broadcast(&ctx->cv);
    (void)pthread_cond_broadcast(&ctx->wake_cv);
    (void)pthread_cond_broadcast(&ctx->bump_cv);
    (void)pthread_mutex_unlock(&ctx->mu);
    if (ctx->tailer_running)
        (void)pthread_join(ctx->tailer, NULL);
    if (ctx->watcher_running)
        (void)pthread_join(ctx->watcher, NULL);
    if (ctx->bumper_running)
        (void)pthread_join(ctx->bumper, NULL);
    ctx->tailer_running = ctx->watcher_running = ctx->bumper_running = 0;
}
