/* The Redis copy of the collection.
 *
 * Persister (one thread): writes the newest snapshot to Redis as
 * scrapr:endpoint:<collection> (+ :revision, one MSET) at most every
 * persist_ms, coalescing intermediate ones; the follower never waits for
 * Redis. ep_tick (main thread, once a second) refreshes the gauges, stamps
 * :confirmed while in sync and re-requests a write when Redis missed one or
 * came back empty. ep_sync_load_redis loads the copy at start. */
#include "endpoint.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "shared/log.h"
#include "shared/xalloc.h"

/* ---- Redis persistence ------------------------------------------------------------- */

static char *snap_key(const struct ep_ctx *ctx, const char *suffix)
{
    return sh_xasprintf("scrapr:endpoint:%s%s", ctx->conf.collection, suffix);
}

static int persist(struct ep_ctx *ctx, struct ep_snapshot *s)
{
    struct sh_err err;
    size_t len;
    char *dump = ep_snapshot_dump(s, &len);
    char *key = snap_key(ctx, ""), *rkey = snap_key(ctx, ":revision"), rev[24];
    const char *argv[5] = {"MSET", key, dump, rkey, rev};
    size_t argvlen[5];
    redisReply *r;
    int ok = 0, i;

    (void)snprintf(rev, sizeof(rev), "%llu", (unsigned long long)s->revision);
    for (i = 0; i < 5; i++)
        argvlen[i] = i == 2 ? len : strlen(argv[i]);
    r = sh_redis_commandargv(ctx->redis, 5, argv, argvlen, &err);
    if (!r)
        sh_log_warn("redis_persist_failed key=%s error=\"%s\"", key, err.msg);
    else if (r->type == REDIS_REPLY_ERROR)
        sh_log_warn("redis_persist_failed key=%s error=\"%s\"", key, r->str);
    else
        ok = 1;
    if (r)
        freeReplyObject(r);
    if (ok) {
        __atomic_store_n(&ctx->persisted_revision, (int64_t)s->revision, __ATOMIC_RELAXED);
        sh_log_debug("redis_persisted key=%s revision=%llu bytes=%zu", key,
                     (unsigned long long)s->revision, len);
    }
    __atomic_store_n(&ctx->redis_ok, ok, __ATOMIC_RELAXED);
    if (ctx->metrics)
        sh_metric_inc(
            sh_metrics_counter(ctx->metrics,
                               ok ? "scrapr_endpoint_redis_writes_total{result=\"ok\"}"
                                  : "scrapr_endpoint_redis_writes_total{result=\"error\"}",
                               "Snapshot writes to Redis"));
    free(dump);
    free(key);
    free(rkey);
    return ok ? 0 : -1;
}

void *ep_persister_main(void *arg)
{
    struct ep_ctx *ctx = arg;
    for (;;) {
        struct ep_snapshot *s;
        (void)pthread_mutex_lock(&ctx->persist_mu);
        while (!ctx->persist_stop && !ctx->persist_pending)
            (void)pthread_cond_wait(&ctx->persist_cv, &ctx->persist_mu);
        s = ctx->persist_pending;
        ctx->persist_pending = NULL;
        (void)pthread_mutex_unlock(&ctx->persist_mu);
        if (!s)
            break; /* stopping with nothing left to write */
        (void)persist(ctx, s);
        ep_snapshot_unref(s);
        /* Rate limit: snapshots arriving meanwhile coalesce into the newest. */
        if (!__atomic_load_n(&ctx->persist_stop, __ATOMIC_RELAXED))
            (void)usleep((useconds_t)ctx->cfg->persist_ms * 1000);
    }
    return NULL;
}

void ep_persist_request(struct ep_ctx *ctx, struct ep_snapshot *s)
{
    struct ep_snapshot *old;
    (void)pthread_mutex_lock(&ctx->persist_mu);
    old = ctx->persist_pending;
    ctx->persist_pending = ep_snapshot_ref(s);
    (void)pthread_cond_signal(&ctx->persist_cv);
    (void)pthread_mutex_unlock(&ctx->persist_mu);
    ep_snapshot_unref(old);
}

int ep_sync_load_redis(struct ep_ctx *ctx)
{
    struct sh_err err;
    char *key = snap_key(ctx, ""), *ckey = snap_key(ctx, ":confirmed");
    redisReply *r = sh_redis_command(ctx->redis, &err, "GET %s", key);
    struct ep_snapshot *s = NULL;
    int rc = -1;

    if (!r) {
        sh_log_warn("redis_load_failed key=%s error=\"%s\"", key, err.msg);
        goto out;
    }
    __atomic_store_n(&ctx->redis_ok, 1, __ATOMIC_RELAXED);
    if (r->type == REDIS_REPLY_STRING) {
        s = ep_snapshot_load(r->str, r->len, (size_t)ctx->cfg->max_limit, &err);
        if (!s)
            sh_log_warn("redis_snapshot_invalid key=%s error=\"%s\"", key, err.msg);
    } else {
        sh_log_info("redis_snapshot_absent key=%s", key);
    }
    freeReplyObject(r);
    if (!s)
        goto out;
    /* The age of a Redis copy: when it was last confirmed current, else (no
     * stamp) when the datasource last changed it — never "0, fresh". */
    __atomic_store_n(&ctx->store.confirmed_s, (int64_t)s->modified, __ATOMIC_RELAXED);
    r = sh_redis_command(ctx->redis, &err, "GET %s", ckey);
    if (r && r->type == REDIS_REPLY_STRING) {
        long long t = strtoll(r->str, NULL, 10);
        if (t > 0)
            __atomic_store_n(&ctx->store.confirmed_s, (int64_t)t, __ATOMIC_RELAXED);
    }
    if (r)
        freeReplyObject(r);
    __atomic_store_n(&ctx->persisted_revision, (int64_t)s->revision, __ATOMIC_RELAXED);
    sh_log_info("redis_snapshot_loaded key=%s revision=%llu items=%zu", key,
                (unsigned long long)s->revision, s->n);
    ep_store_swap(&ctx->store, s, EP_SRC_REDIS);
    rc = 0;
out:
    free(key);
    free(ckey);
    return rc;
}

/* Once a second from the main thread: metrics gauges; every 5 s, while in
 * sync, records in Redis when the data was last confirmed current (so a
 * restart from Redis reports an honest age) and re-writes the snapshot when
 * Redis lost it or missed a write. */
void ep_tick(struct ep_ctx *ctx)
{
    time_t now = time(NULL);
    struct ep_snapshot *s = ep_store_get(&ctx->store);
    int src = ep_store_source(&ctx->store);

    if (ctx->metrics) {
        struct sh_metrics *m = ctx->metrics;
        sh_metric_set(sh_metrics_gauge(m, "scrapr_endpoint_data_revision",
                                       "Datasource revision of the data served"),
                      s ? (double)s->revision : 0);
        sh_metric_set(sh_metrics_gauge(m, "scrapr_endpoint_data_items", "Items served"),
                      s ? (double)s->n : 0);
        sh_metric_set(sh_metrics_gauge(m, "scrapr_endpoint_data_age_seconds",
                                       "Seconds the data may lag the datasource (0 in sync)"),
                      (double)ep_store_age(&ctx->store, now));
        sh_metric_set(sh_metrics_gauge(m, "scrapr_endpoint_datasource_up",
                                       "1 when the last datasource request succeeded"),
                      __atomic_load_n(&ctx->datasource_ok, __ATOMIC_RELAXED));
        sh_metric_set(sh_metrics_gauge(m, "scrapr_endpoint_redis_up",
                                       "1 when the last Redis operation succeeded"),
                      __atomic_load_n(&ctx->redis_ok, __ATOMIC_RELAXED));
    }
    if (now - ctx->last_confirm_s >= 5) {
        int was_ok = __atomic_load_n(&ctx->redis_ok, __ATOMIC_RELAXED), ok = 0;
        struct sh_err err;
        redisReply *r;
        char *ckey = snap_key(ctx, ":confirmed");
        ctx->last_confirm_s = now;
        if (__atomic_load_n(&ctx->store.in_sync, __ATOMIC_RELAXED))
            r = sh_redis_command(ctx->redis, &err, "SET %s %lld", ckey, (long long)now);
        else
            r = sh_redis_command(ctx->redis, &err, "PING");
        ok = r && r->type != REDIS_REPLY_ERROR;
        if (r)
            freeReplyObject(r);
        free(ckey);
        __atomic_store_n(&ctx->redis_ok, ok, __ATOMIC_RELAXED);
        if (ok && !was_ok)
            sh_log_info("redis_available");
        else if (!ok && was_ok)
            sh_log_warn("redis_unavailable (serving from memory)");
        if (ok && s && src == EP_SRC_DATASOURCE &&
            (!was_ok ||
             __atomic_load_n(&ctx->persisted_revision, __ATOMIC_RELAXED) != (int64_t)s->revision))
            ep_persist_request(ctx, s);
    }
    ep_snapshot_unref(s);
}
