/* What makes the reconciler run: a Consul blocking query on the revision key
 * (config-discovery bumps it on every change — no fixed polling), a Docker
 * events stream filtered to our units (a container died, a service was
 * removed), with the swarm driver a stream of node events (a node went down
 * or came back: its tasks move, and with host-mode ports their URLs), and a
 * periodic resync (SCRAPR_RESYNC_SECONDS) as a safety net.
 *
 * Threading: the watcher threads (and the applier's workers, when a job ends)
 * call orch_trigger(); the reconcile loop runs on the caller's thread (main)
 * and sleeps on ctx->cond. Triggers arriving during a pass set `dirty` again,
 * so nothing is lost; bursts coalesce. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "orchestrator.h"
#include "shared/log.h"
#include "shared/service.h"
#include "shared/xalloc.h"

struct orch_watch {
    struct orch_ctx *ctx;
    pthread_t consul_thread, events_thread, nodes_thread;
    int nodes_started;
    volatile int stop;
};

/* Seconds between passes while an endpoint's task has no live node yet. */
#define URL_PENDING_RECHECK_S 2.0
/* ...for at most this long; then the normal resync. */
#define URL_PENDING_MAX_S 120.0
#define SPARE_RECHECK_S 0.5

static void nap_ms(struct orch_watch *w, long ms)
{
    while (ms > 0 && !w->stop) {
        long step = ms < 100 ? ms : 100;
        struct timespec ts = {0, step * 1000000L};
        (void)nanosleep(&ts, NULL);
        ms -= step;
    }
}

static void *consul_main(void *arg)
{
    struct orch_watch *w = arg;
    struct orch_ctx *ctx = w->ctx;
    uint64_t index = 0;
    int failures = 0;

    while (!w->stop) {
        struct sh_err err;
        char *v = NULL;
        uint64_t ni = 0;

        /* Short waits so a stop is noticed within seconds. */
        if (sh_consul_kv_get(ctx->consul, ctx->cfg->revision_key, index, 2, &v, &ni, &err) < 0) {
            if (failures++ % 30 == 0)
                sh_log_warn("watch consul key=%s: %s", ctx->cfg->revision_key, err.msg);
            index = 0;
            nap_ms(w, 1000);
            continue;
        }
        free(v);
        if (failures > 0) {
            /* Changes during the outage were not seen: look once. */
            failures = 0;
            orch_trigger(ctx, "consul-reconnect");
        } else if (index != 0 && ni != index) {
            sh_log_debug("watch consul revision index=%llu", (unsigned long long)ni);
            orch_trigger(ctx, "consul");
        }
        /* A reset index (smaller) restarts the watch (Consul docs). */
        index = ni;
    }
    return NULL;
}

static int on_event(const json_t *ev, void *arg)
{
    struct orch_watch *w = arg;

    if (ev) {
        const char *action = json_string_value(json_object_get(ev, "Action"));
        sh_log_debug("watch docker event action=%s", action ? action : "?");
        orch_trigger(w->ctx, "docker");
    }
    return w->stop;
}

static void *events_main(void *arg)
{
    struct orch_watch *w = arg;
    struct orch_ctx *ctx = w->ctx;
    char *owner = sh_xasprintf("%s=%s", ORCH_LABEL_OWNER, ctx->cfg->owner);
    /* "die" may arrive before the engine reports the container as exited;
     * "stop" follows once it does. */
    json_t *f = json_pack("{s:[s], s:[s,s], s:[s,s,s,s,s]}", "label", owner, "type", "container",
                          "service", "event", "die", "stop", "destroy", "oom", "remove");
    int first = 1;

    while (!w->stop) {
        struct sh_err err;

        sh_err_clear(&err);
        if (!first)
            orch_trigger(ctx, "docker-reconnect"); /* events may have been missed */
        first = 0;
        if (sh_docker_events(ctx->docker, f, 0, on_event, w, &err) < 0 && !w->stop) {
            sh_log_warn("watch docker events: %s", err.msg);
            nap_ms(w, 1000);
        }
    }
    json_decref(f);
    free(owner);
    return NULL;
}

static int on_node_event(const json_t *ev, void *arg)
{
    struct orch_watch *w = arg;

    if (ev) {
        const char *action = json_string_value(json_object_get(ev, "Action"));
        sh_log_debug("watch node event action=%s", action ? action : "?");
        orch_trigger(w->ctx, "node");
    }
    return w->stop;
}

/* Swarm node events (managers emit them): a separate stream, since event
 * filters of different keys are ANDed and nodes carry none of our labels. */
static void *nodes_main(void *arg)
{
    struct orch_watch *w = arg;
    json_t *f = json_pack("{s:[s]}", "type", "node");

    while (!w->stop) {
        struct sh_err err;

        sh_err_clear(&err);
        if (sh_docker_events(w->ctx->docker, f, 0, on_node_event, w, &err) < 0 && !w->stop) {
            sh_log_debug("watch node events: %s", err.msg);
            nap_ms(w, 2000);
        }
    }
    json_decref(f);
    return NULL;
}

struct orch_watch *orch_watch_start(struct orch_ctx *ctx)
{
    struct orch_watch *w = sh_xcalloc(1, sizeof(*w));

    w->ctx = ctx;
    if (pthread_create(&w->consul_thread, NULL, consul_main, w) != 0 ||
        pthread_create(&w->events_thread, NULL, events_main, w) != 0)
        sh_fatal("watch: pthread_create failed");
    if (strcmp(ctx->cfg->driver, "swarm") == 0) {
        if (pthread_create(&w->nodes_thread, NULL, nodes_main, w) != 0)
            sh_fatal("watch: pthread_create failed");
        w->nodes_started = 1;
    }
    return w;
}

void orch_watch_stop(struct orch_watch *w)
{
    if (!w)
        return;
    w->stop = 1;
    (void)pthread_join(w->consul_thread, NULL);
    (void)pthread_join(w->events_thread, NULL);
    if (w->nodes_started)
        (void)pthread_join(w->nodes_thread, NULL);
    free(w);
}

void orch_reconcile_loop(struct orch_ctx *ctx)
{
    double next_resync = orch_now_mono() + (double)ctx->cfg->resync_s;
    long backoff_ms = 0;
    double pending_since = 0;

    ctx->applier = orch_applier_start(ctx);
    while (!sh_service_stopping()) {
        struct timespec until;
        int run = 0;
        char why[32] = "";
        struct sh_err err;
        double now, retry_at;

        (void)clock_gettime(CLOCK_REALTIME, &until);
        until.tv_nsec += 250 * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        /* A unit whose action failed is retried when its backoff runs out
         * (apply.c); until then passes leave it alone. */
        retry_at = orch_applier_next_retry(ctx->applier);
        (void)pthread_mutex_lock(&ctx->lock);
        if (!ctx->dirty)
            (void)pthread_cond_timedwait(&ctx->cond, &ctx->lock, &until);
        now = orch_now_mono();
        if (ctx->leader &&
            (ctx->dirty || now >= next_resync || (retry_at > 0 && now >= retry_at))) {
            run = 1;
            (void)snprintf(why, sizeof(why), "%s",
                           ctx->dirty           ? ctx->trigger
                           : now >= next_resync ? "resync"
                                                : "retry");
            (void)snprintf(ctx->last_trigger, sizeof(ctx->last_trigger), "%s", why);
            ctx->last_trigger_at = ctx->dirty ? ctx->trigger_at : orch_now_wall();
            ctx->dirty = 0;
        } else if (!ctx->leader) {
            ctx->dirty = 0; /* a standby never acts; the new leader starts with a full pass */
        }
        (void)pthread_mutex_unlock(&ctx->lock);
        if (!run) {
            if (!orch_is_leader(ctx) && retry_at > 0)
                orch_applier_forget_failures(ctx->applier);
            continue;
        }
        sh_log_debug("reconcile start trigger=%s", why);
        sh_err_clear(&err);
        if (orch_reconcile_once(ctx, &err) < 0) {
            orch_ctx_error(ctx, "reconcile: %s", err.msg);
            backoff_ms = backoff_ms ? backoff_ms * 2 : 500;
            if (backoff_ms > 30000)
                backoff_ms = 30000;
            (void)sh_service_sleep(backoff_ms);
            orch_trigger(ctx, "retry");
        } else {
            backoff_ms = 0;
        }
        next_resync = orch_now_mono() + (double)ctx->cfg->resync_s;
        /* An endpoint whose task is being (re)scheduled: record its node's
         * address as soon as the task runs, not at the next resync. A task
         * that never starts (e.g. its port is taken) falls back to the normal
         * resync after URL_PENDING_MAX_S. */
        if (!ctx->url_pending)
            pending_since = 0;
        else if (pending_since == 0)
            pending_since = orch_now_mono();
        if (ctx->url_pending && orch_now_mono() - pending_since < URL_PENDING_MAX_S)
            next_resync = orch_now_mono() + URL_PENDING_RECHECK_S;
        /* A configuration left to a spare: adopt it (or place it ourselves
         * once the wait is over) without waiting for the resync. */
        if (ctx->spare_pending)
            next_resync = orch_now_mono() + SPARE_RECHECK_S;
    }
    orch_applier_stop(ctx->applier);
    ctx->applier = NULL;
}
