/* The Consul revision bumper: a thread that increments the KV counter
 * scrapr/revisions/configurations whenever cd_revision_bump() asked for it,
 * so watchers (the orchestrator) wake through a blocking query instead of
 * polling. Requests made while an increment is in flight are covered by the
 * next increment (watchers re-read everything anyway, so one bump for
 * several changes loses nothing); while Consul is down it retries every
 * bump_retry_ms, so a change is never left without a bump. Handlers only
 * touch counters under ctx->mu and never wait for the network. */
#include "config_discovery.h"

#include "shared/log.h"

void cd_revision_bump(struct cd_ctx *ctx)
{
    (void)pthread_mutex_lock(&ctx->mu);
    ctx->bump_wanted++;
    (void)pthread_cond_signal(&ctx->bump_cv);
    (void)pthread_mutex_unlock(&ctx->mu);
}

void *cd_bumper_main(void *arg)
{
    struct cd_ctx *ctx = arg;
    int failing = 0;

    (void)pthread_mutex_lock(&ctx->mu);
    for (;;) {
        uint64_t target, value = 0;
        struct sh_err err;
        int rc, stop;

        while (!ctx->stop && ctx->bump_done >= ctx->bump_wanted)
            (void)pthread_cond_wait(&ctx->bump_cv, &ctx->mu);
        if (ctx->bump_done >= ctx->bump_wanted)
            break; /* stopping with nothing pending */
        stop = ctx->stop;
        target = ctx->bump_wanted;
        (void)pthread_mutex_unlock(&ctx->mu);

        rc = sh_consul_kv_incr(ctx->consul, ctx->cfg->revision_key, &value, &err);
        if (rc == 0) {
            if (failing)
                sh_log_info("revision_bump_recovered revision=%llu", (unsigned long long)value);
            failing = 0;
            cd_count(ctx, "scrapr_cd_revision_bumps_total", "Consul revision increments");
        } else {
            if (!failing)
                sh_log_warn("revision_bump_failed key=%s error=\"%s\" retry_ms=%ld",
                            ctx->cfg->revision_key, err.msg, ctx->cfg->bump_retry_ms);
            failing = 1;
            cd_count(ctx, "scrapr_cd_revision_bump_failures_total", "Failed Consul increments");
            /* After a stop request one attempt is made, then we give up. */
            if (!stop)
                (void)cd_nap(ctx, ctx->cfg->bump_retry_ms);
        }
        (void)pthread_mutex_lock(&ctx->mu);
        if (rc == 0 && target > ctx->bump_done)
            ctx->bump_done = target;
        if (rc != 0 && stop)
            break;
    }
    if (ctx->bump_done < ctx->bump_wanted)
        sh_log_warn("revision_bump_lost_at_exit pending=%llu",
                    (unsigned long long)(ctx->bump_wanted - ctx->bump_done));
    (void)pthread_mutex_unlock(&ctx->mu);
    return NULL;
}
