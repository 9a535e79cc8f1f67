/* Leader election on a Consul session lock (key SCRAPR_LOCK_KEY, default
 * scrapr/locks/orchestrator).
 *
 * Why a check on the session: a session TTL alone is invalidated lazily (up
 * to 2×TTL, Consul's minimum TTL being 10 s), so a leader killed with -9
 * would block a standby for up to 20 s. Each orchestrator therefore registers
 * an agent TTL check (4 s) that it passes every second, and creates its
 * session with Checks = [serfHealth, that check], TTL 10 s, LockDelay 1 s,
 * behavior release. A dead leader's check turns critical within 4 s, which
 * invalidates the session and releases the lock; the standby, blocked on the
 * lock key, wakes and acquires it once the 1 s lock delay has passed.
 *
 * Never two acting at once: the leader flag is only trusted while the last
 * successful session renewal is younger than the check TTL (orch_is_leader is
 * cleared by this thread otherwise), the check TTL is shorter than the time a
 * standby needs (check TTL + lock delay), and the reconciler re-reads the flag
 * before every action.
 *
 * Threading: one thread; it writes ctx->leader under ctx->lock. */
#include <stdlib.h>
#include <string.h>

#include "orchestrator.h"
#include "shared/http_client.h"
#include "shared/log.h"
#include "shared/xalloc.h"

#define CHECK_TTL "4s"
#define CHECK_TTL_S 4.0
#define BEAT_MS 1000

struct orch_leader {
    struct orch_ctx *ctx;
    pthread_t thread;
    volatile int stop;
    char *base;       /* http://consul */
    char *check_id;   /* agent TTL check tied to our session */
    char *service_id; /* our Consul service registration, which owns the check */
    char *session;
};

static int consul_put(struct orch_leader *l, const char *path, const json_t *body,
                      json_t **ret_json, struct sh_err *err)
{
    struct sh_http_client_opts o;
    struct sh_http_response r;
    char *url = sh_xasprintf("%s%s", l->base, path);
    const char *const hdrs[] = {"Content-Type: application/json", NULL};
    char *payload = body ? json_dumps(body, JSON_COMPACT) : NULL;
    int rc;

    memset(&o, 0, sizeof(o));
    o.connect_timeout_ms = 1000;
    o.timeout_ms = 3000;
    rc = sh_http_request(&o, "PUT", url, hdrs, payload, payload ? strlen(payload) : 0, &r, err);
    free(payload);
    if (rc == 0) {
        if (r.status != 200) {
            sh_err_set(err, SH_EUPSTREAM, "consul PUT %s: HTTP %ld: %.200s", path, r.status,
                       r.body ? r.body : "");
            rc = -1;
        } else if (ret_json) {
            *ret_json = json_loadb(r.body, r.body_len, 0, NULL);
        }
        sh_http_response_done(&r);
    }
    free(url);
    return rc;
}

static int check_register(struct orch_leader *l, struct sh_err *err)
{
    /* Bound to our own service: a node-level check would turn the whole node
     * critical when we die, hiding every service on it from ?passing lookups;
     * bound, it also goes away with our registration. */
    json_t *b = json_pack("{s:s, s:s, s:s, s:s, s:s}", "ID", l->check_id, "Name",
                          "scrapr orchestrator leader liveness", "TTL", CHECK_TTL, "ServiceID",
                          l->service_id, "Notes",
                          "passed every second by a live orchestrator; its lock session "
                          "depends on it");
    int rc = consul_put(l, "/v1/agent/check/register", b, NULL, err);

    json_decref(b);
    return rc;
}

static int check_pass(struct orch_leader *l, struct sh_err *err)
{
    char *p = sh_xasprintf("/v1/agent/check/pass/%s", l->check_id);
    int rc = consul_put(l, p, NULL, NULL, err);

    free(p);
    return rc;
}

static int session_create(struct orch_leader *l, struct sh_err *err)
{
    char ttl[32];
    json_t *b, *ans = NULL;
    const char *id;
    int rc;

    (void)snprintf(ttl, sizeof(ttl), "%lds", l->ctx->cfg->session_ttl_s);
    b = json_pack("{s:s, s:s, s:s, s:s, s:[s,s]}", "Name", "scrapr-orchestrator", "TTL", ttl,
                  "LockDelay", "1s", "Behavior", "release", "Checks", "serfHealth", l->check_id);
    rc = consul_put(l, "/v1/session/create", b, &ans, err);
    json_decref(b);
    if (rc < 0)
        return -1;
    id = json_string_value(json_object_get(ans, "ID"));
    if (!id) {
        sh_err_set(err, SH_EPROTO, "consul session create: no ID");
        json_decref(ans);
        return -1;
    }
    l->session = sh_xstrdup(id);
    json_decref(ans);
    return 0;
}

static void set_leader(struct orch_ctx *ctx, int on)
{
    int was;

    (void)pthread_mutex_lock(&ctx->lock);
    was = ctx->leader;
    ctx->leader = on;
    (void)pthread_mutex_unlock(&ctx->lock);
    if (ctx->metrics)
        sh_metric_set(sh_metrics_gauge(ctx->metrics, "scrapr_orchestrator_leader",
                                       "1 while this instance holds the lock"),
                      on);
    if (on && !was) {
        sh_log_info("leadership acquired instance=%s", ctx->cfg->instance);
        orch_trigger(ctx, "leader");
    } else if (!on && was) {
        sh_log_warn("leadership lost instance=%s", ctx->cfg->instance);
    }
}

static void drop_session(struct orch_leader *l)
{
    if (l->session) {
        (void)sh_consul_session_destroy(l->ctx->consul, l->session, NULL);
        free(l->session);
        l->session = NULL;
    }
}

static void sleep_ms(struct orch_leader *l, long ms)
{
    while (ms > 0 && !l->stop) {
        long step = ms < 100 ? ms : 100;
        struct timespec ts = {0, step * 1000000L};
        (void)nanosleep(&ts, NULL);
        ms -= step;
    }
}

/* Holds the lock: pass + renew every second until either fails. */
static void lead(struct orch_leader *l)
{
    struct orch_ctx *ctx = l->ctx;
    double confirmed = orch_now_mono();

    set_leader(ctx, 1);
    while (!l->stop) {
        struct sh_err err;
        sleep_ms(l, BEAT_MS);
        if (l->stop)
            break;
        sh_err_clear(&err);
        if (check_pass(l, &err) == 0 &&
            sh_consul_session_renew(ctx->consul, l->session, &err) == 0) {
            confirmed = orch_now_mono();
            continue;
        }
        if (err.code == SH_ENOTFOUND || orch_now_mono() - confirmed >= CHECK_TTL_S - 0.5) {
            orch_ctx_error(ctx, "leader: %s", err.msg);
            break;
        }
    }
    set_leader(ctx, 0);
}

static void *leader_main(void *arg)
{
    struct orch_leader *l = arg;
    struct orch_ctx *ctx = l->ctx;
    uint64_t index = 0;
    int registered = 0, fast = 0;

    while (!l->stop) {
        struct sh_err err;
        int got;

        sh_err_clear(&err);
        if (!registered) {
            if (check_register(l, &err) < 0) {
                orch_ctx_error(ctx, "leader: register check: %s", err.msg);
                sleep_ms(l, 1000);
                continue;
            }
            registered = 1;
        }
        if (check_pass(l, &err) < 0) {
            orch_ctx_error(ctx, "leader: pass check: %s", err.msg);
            registered = 0;
            sleep_ms(l, 1000);
            continue;
        }
        if (!l->session && session_create(l, &err) < 0) {
            orch_ctx_error(ctx, "leader: session: %s", err.msg);
            sleep_ms(l, 1000);
            continue;
        }
        got = sh_consul_lock_acquire(ctx->consul, ctx->cfg->lock_key, l->session,
                                     ctx->cfg->instance, &err);
        if (got == 1) {
            lead(l);
            drop_session(l);
            continue;
        }
        if (got < 0) {
            /* The session may be gone (invalidated): make a new one. */
            orch_ctx_error(ctx, "leader: acquire: %s", err.msg);
            drop_session(l);
            sleep_ms(l, 1000);
            continue;
        }
        /* Standby. Right after the key changed (a release), the 1 s lock delay
         * refuses us: retry every 250 ms for a while instead of blocking. */
        if (fast > 0) {
            fast--;
            sleep_ms(l, 250);
            continue;
        }
        {
            char *v = NULL;
            uint64_t ni = 0;
            if (sh_consul_kv_get(ctx->consul, ctx->cfg->lock_key, index, 1, &v, &ni, &err) < 0) {
                sleep_ms(l, 500);
                index = 0;
            } else {
                free(v);
                if (index != 0 && ni != index)
                    fast = 8;
                index = ni;
            }
            if (sh_consul_session_renew(ctx->consul, l->session, NULL) < 0)
                drop_session(l);
        }
    }
    drop_session(l);
    if (registered) {
        char *p = sh_xasprintf("/v1/agent/check/deregister/%s", l->check_id);
        (void)consul_put(l, p, NULL, NULL, NULL);
        free(p);
    }
    return NULL;
}

struct orch_leader *orch_leader_start(struct orch_ctx *ctx, const char *service_id)
{
    struct orch_leader *l = sh_xcalloc(1, sizeof(*l));
    const char *a = ctx->cfg->consul_addr;

    l->ctx = ctx;
    l->base = strncmp(a, "http://", 7) == 0 || strncmp(a, "https://", 8) == 0
                  ? sh_xstrdup(a)
                  : sh_xasprintf("http://%s", a);
    l->check_id = sh_xasprintf("scrapr-orchestrator-leader-%s", ctx->cfg->instance);
    l->service_id = sh_xstrdup(service_id);
    if (pthread_create(&l->thread, NULL, leader_main, l) != 0)
        sh_fatal("leader: pthread_create failed");
    return l;
}

void orch_leader_stop(struct orch_leader *l)
{
    if (!l)
        return;
    l->stop = 1;
    (void)pthread_join(l->thread, NULL);
    free(l->base);
    free(l->check_id);
    free(l->service_id);
    free(l->session);
    free(l);
}
