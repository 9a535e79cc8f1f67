/* Reconciliation: the pure diff (desired units vs actual units → actions) and
 * one pass that reads both sides, hands the actions to the applier (apply.c,
 * which runs them on worker threads and re-checks leadership before every
 * engine call) and records assignments back in config-discovery.
 *
 * Threading: orch_reconcile_once() runs on the reconcile thread only.
 * Status/errors are published under ctx->lock for api.c. The diff is pure and
 * unit-tested. */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "orchestrator.h"
#include "shared/log.h"
#include "shared/xalloc.h"

#define MAX_ERRORS 20
#define HELD_PORT_S 300.0 /* how long a port found held is avoided */

double orch_now_mono(void)
{
    struct timespec ts;

    (void)clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

double orch_now_wall(void)
{
    struct timespec ts;

    (void)clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

const char *orch_action_name(int kind)
{
    switch (kind) {
    case ORCH_CREATE:
        return "create";
    case ORCH_UPDATE:
        return "update";
    case ORCH_REPLACE:
        return "replace";
    default:
        return "remove";
    }
}

static void push(struct orch_actions *r, int kind, const struct orch_unit *d,
                 const struct orch_unit *a)
{
    if (r->n == r->cap) {
        r->cap = r->cap ? r->cap * 2 : 16;
        r->v = sh_xrealloc(r->v, r->cap * sizeof(*r->v));
    }
    r->v[r->n].kind = kind;
    r->v[r->n].desired = d;
    r->v[r->n].actual = a;
    r->n++;
}

void orch_actions_done(struct orch_actions *a)
{
    if (!a)
        return;
    free(a->v);
    memset(a, 0, sizeof(*a));
}

void orch_diff(const struct orch_units *desired, const struct orch_units *actual,
               int (*broken)(const struct orch_unit *), struct orch_actions *ret)
{
    size_t i;
    int role;

    memset(ret, 0, sizeof(*ret));
    /* Apps go before their Redis when removing. */
    for (role = ORCH_ROLE_APP; role <= ORCH_ROLE_REDIS; role++)
        for (i = 0; i < actual->n; i++)
            if (actual->v[i].role == role && !orch_units_find(desired, actual->v[i].name))
                push(ret, ORCH_REMOVE, NULL, &actual->v[i]);
    /* Redis before the app that uses it when creating. */
    for (role = ORCH_ROLE_REDIS; role >= ORCH_ROLE_APP; role--)
        for (i = 0; i < desired->n; i++) {
            const struct orch_unit *u = &desired->v[i];
            const struct orch_unit *a;
            if (u->role != role)
                continue;
            a = orch_units_find(actual, u->name);
            if (!a)
                push(ret, ORCH_CREATE, u, NULL);
            else if (broken && broken(a))
                push(ret, ORCH_REPLACE, u, a);
            else if (!a->spec_hash || strcmp(a->spec_hash, u->spec_hash) != 0 ||
                     (u->port > 0 && a->port != u->port) ||
                     (u->relabel && (strcmp(a->config_id, u->config_id) != 0 || !a->collection ||
                                     strcmp(a->collection, u->collection) != 0)))
                push(ret, ORCH_UPDATE, u, a);
        }
}

void orch_ctx_error(struct orch_ctx *ctx, const char *fmt, ...)
{
    char msg[600];
    va_list ap;

    va_start(ap, fmt);
    (void)vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    sh_log_warn("%s", msg);
    (void)pthread_mutex_lock(&ctx->lock);
    if (!ctx->errors)
        ctx->errors = json_array();
    (void)json_array_append_new(ctx->errors,
                                json_pack("{s:f, s:s}", "time", orch_now_wall(), "error", msg));
    while (json_array_size(ctx->errors) > MAX_ERRORS)
        (void)json_array_remove(ctx->errors, 0);
    (void)pthread_mutex_unlock(&ctx->lock);
    if (ctx->metrics)
        sh_metric_inc(sh_metrics_counter(ctx->metrics, "scrapr_orchestrator_failures_total",
                                         "Failed reconcile steps"));
}

void orch_port_held(struct orch_ctx *ctx, long port)
{
    char key[24];

    (void)snprintf(key, sizeof(key), "%ld", port);
    sh_log_warn("endpoint port %ld is taken outside scrapr: moving its endpoint", port);
    (void)pthread_mutex_lock(&ctx->lock);
    if (!ctx->held_ports)
        ctx->held_ports = json_object();
    (void)json_object_set_new(ctx->held_ports, key, json_real(orch_now_mono()));
    (void)pthread_mutex_unlock(&ctx->lock);
}

/* The actual state as the desired build should see it: a unit on a port
 * found held (within HELD_PORT_S) does not keep that port, and the port
 * shows as taken (a placeholder unit), so endpoints go to other free ports.
 * The diff still compares against the real actual state. Returns actual
 * itself when no port is held, else view (a deep copy; the caller frees it
 * either way). */
static const struct orch_units *
placement_view(struct orch_ctx *ctx, const struct orch_units *actual, struct orch_units *view)
{
    const char *key;
    json_t *t, *held = NULL;
    void *tmp;
    size_t i;
    double now = orch_now_mono();

    orch_units_init(view);
    (void)pthread_mutex_lock(&ctx->lock);
    json_object_foreach_safe(ctx->held_ports, tmp, key, t)
    {
        if (now - json_real_value(t) > HELD_PORT_S)
            (void)json_object_del(ctx->held_ports, key);
    }
    if (json_object_size(ctx->held_ports) > 0)
        held = json_deep_copy(ctx->held_ports);
    (void)pthread_mutex_unlock(&ctx->lock);
    if (!held)
        return actual;
    for (i = 0; i < actual->n; i++)
        orch_unit_copy(orch_units_add(view), &actual->v[i]);
    json_object_foreach(held, key, t)
    {
        long port = strtol(key, NULL, 10);
        struct orch_unit *ph;
        for (i = 0; i < view->n; i++)
            if (view->v[i].port == port)
                view->v[i].port = 0;
        ph = orch_units_add(view);
        ph->name = sh_xasprintf("(port %ld held outside scrapr)", port);
        ph->config_id = sh_xstrdup("");
        ph->type = sh_xstrdup("endpoint");
        ph->port = port;
    }
    json_decref(held);
    return view;
}

void orch_trigger(struct orch_ctx *ctx, const char *why)
{
    (void)pthread_mutex_lock(&ctx->lock);
    if (!ctx->dirty) {
        ctx->dirty = 1;
        ctx->trigger_at = orch_now_wall();
        (void)snprintf(ctx->trigger, sizeof(ctx->trigger), "%s", why);
    }
    (void)pthread_cond_broadcast(&ctx->cond);
    (void)pthread_mutex_unlock(&ctx->lock);
}

int orch_is_leader(struct orch_ctx *ctx)
{
    int l;

    (void)pthread_mutex_lock(&ctx->lock);
    l = ctx->leader;
    (void)pthread_mutex_unlock(&ctx->lock);
    return l;
}

/* The action creating the Redis of app action act's unit, or SIZE_MAX. */
static size_t redis_create_of(const struct orch_actions *acts, const struct orch_action *act)
{
    const char *app = act->desired ? act->desired->name : NULL;
    size_t i, len;

    if (!app || act->desired->role != ORCH_ROLE_APP)
        return SIZE_MAX;
    len = strlen(app);
    for (i = 0; i < acts->n; i++) {
        const struct orch_unit *u = acts->v[i].desired;
        if (acts->v[i].kind == ORCH_CREATE && u && u->role == ORCH_ROLE_REDIS &&
            strncmp(u->name, app, len) == 0 && strcmp(u->name + len, "-redis") == 0)
            return i;
    }
    return SIZE_MAX;
}

/* Hands the actions to the applier, leaving busy units alone: removals first
 * (they free names and ports), then the rest, each app's new Redis chained
 * behind the app (apply.c says why). Returns the number of actions handed over. */
static size_t dispatch(struct orch_ctx *ctx, const struct orch_actions *acts)
{
    size_t *then = sh_xcalloc(acts->n ? acts->n : 1, sizeof(*then));
    char *blocked = sh_xcalloc(acts->n ? acts->n : 1, 1);
    char *chained = sh_xcalloc(acts->n ? acts->n : 1, 1);
    size_t i, n = 0;
    int pass;

    for (i = 0; i < acts->n; i++) {
        const struct orch_action *act = &acts->v[i];
        const char *name = act->desired ? act->desired->name : act->actual->name;
        blocked[i] = (char)orch_applier_blocked(ctx->applier, name);
        if (blocked[i])
            sh_log_debug("%s unit=%s deferred: busy", orch_action_name(act->kind), name);
    }
    for (i = 0; i < acts->n; i++) {
        then[i] = blocked[i] ? SIZE_MAX : redis_create_of(acts, &acts->v[i]);
        if (then[i] != SIZE_MAX && (blocked[then[i]] || chained[then[i]]))
            then[i] = SIZE_MAX;
        if (then[i] != SIZE_MAX)
            chained[then[i]] = 1;
    }
    for (pass = 0; pass < 2; pass++)
        for (i = 0; i < acts->n; i++) {
            const struct orch_action *act = &acts->v[i];
            if ((act->kind == ORCH_REMOVE) != (pass == 0) || blocked[i] || chained[i])
                continue;
            orch_applier_submit(ctx->applier, act, then[i] != SIZE_MAX ? &acts->v[then[i]] : NULL);
            n += then[i] != SIZE_MAX ? 2 : 1;
        }
    free(then);
    free(blocked);
    free(chained);
    return n;
}

/* Public URL of an endpoint publishing port; a is its actual unit (may be NULL).
 * Engine driver, ingress mode or SCRAPR_PUBLIC_HOST_FIXED=1: one host for all
 * (SCRAPR_PUBLIC_HOST, else our node's address). Swarm host mode: the port
 * answers only on the node running the task, so that node's address, except
 * that SCRAPR_PUBLIC_HOST names our own node (the manager: `make up` keeps
 * printing 127.0.0.1). *unknown is set when no task runs on a live node. */
static char *endpoint_url(struct orch_ctx *ctx, long port, const struct orch_unit *a, int *unknown)
{
    const struct orch_config *cfg = ctx->cfg;
    const char *fixed = cfg->public_host && *cfg->public_host ? cfg->public_host : NULL;
    const char *fallback = fixed ? fixed : ctx->node_addr ? ctx->node_addr : "127.0.0.1";
    const char *host = fallback;
    int per_node = strcmp(cfg->driver, "swarm") == 0 && cfg->publish_mode &&
                   strcmp(cfg->publish_mode, "host") == 0 && !cfg->public_host_fixed;

    *unknown = 0;
    if (per_node) {
        if (a && a->node_addr)
            host = fixed && ctx->node_id && a->node_id && strcmp(a->node_id, ctx->node_id) == 0
                       ? fixed
                       : a->node_addr;
        else
            *unknown = 1;
    }
    return sh_xasprintf("http://%s:%ld/items", host, port);
}

/* PUTs container/url back for configurations whose units all exist. */
static void record_assignments(struct orch_ctx *ctx, const json_t *configs,
                               const struct orch_units *desired, const struct orch_units *actual)
{
    size_t i, k;
    const json_t *c;

    json_array_foreach(configs, i, c)
    {
        const char *id = json_string_value(json_object_get(c, "_id"));
        const char *type = json_string_value(json_object_get(c, "type"));
        const char *have = json_string_value(json_object_get(c, "container"));
        const char *have_url = json_string_value(json_object_get(c, "url"));
        char *want = id ? orch_assigned_container(desired, id) : NULL;
        char *url = NULL;
        int all_there = 1, any = 0, unknown = 0;
        struct sh_err err;

        if (!want || !id)
            goto next;
        for (k = 0; k < desired->n; k++) {
            const struct orch_unit *u = &desired->v[k];
            if (strcmp(u->config_id, id) != 0)
                continue;
            any = 1;
            if (!orch_units_find(actual, u->name))
                all_there = 0;
            if (u->role == ORCH_ROLE_APP && u->port > 0 && !url)
                url = endpoint_url(ctx, u->port, orch_units_find(actual, u->name), &unknown);
        }
        if (!any || !all_there)
            goto next;
        if (type && strcmp(type, "endpoint") != 0) {
            free(url);
            url = NULL;
            unknown = 0;
        }
        if (unknown) {
            /* No task on a live node yet (starting, or rescheduled after a node
             * failure): keep the recorded URL rather than record a guess, and
             * look again shortly (orch_reconcile_loop). */
            ctx->url_pending = 1;
            if (have_url) {
                free(url);
                url = sh_xstrdup(have_url);
            }
        }
        if (have && strcmp(have, want) == 0 && (!url || (have_url && strcmp(have_url, url) == 0)))
            goto next;
        if (!orch_is_leader(ctx))
            goto next;
        sh_err_clear(&err);
        if (orch_desired_record(ctx->cfg, ctx->cd_disc, c, want, url, &err) < 0)
            orch_ctx_error(ctx, "record config=%s: %s", id, err.msg);
        else
            sh_log_info("assigned config=%s container=%s%s%s", id, want, url ? " url=" : "",
                        url ? url : "");
    next:
        free(want);
        free(url);
    }
}

/* {"scraper": {"free": n, "running": m}, "endpoint": {...}}: desired free spares. */
static json_t *spares_status(const struct orch_units *desired, const struct orch_units *actual)
{
    json_t *out = json_object();
    static const char *const types[] = {"scraper", "endpoint"};
    size_t i, t;

    for (t = 0; t < 2; t++) {
        json_int_t n = 0, running = 0;
        for (i = 0; i < desired->n; i++) {
            const struct orch_unit *u = &desired->v[i], *a;
            if (!u->spare || u->role != ORCH_ROLE_APP || *u->config_id ||
                strcmp(u->type, types[t]) != 0)
                continue;
            n++;
            a = orch_units_find(actual, u->name);
            running += a && a->running_tasks > 0;
        }
        (void)json_object_set_new(out, types[t],
                                  json_pack("{s:I, s:I}", "free", n, "running", running));
    }
    return out;
}

static json_t *build_status(const json_t *configs, const struct orch_units *desired,
                            const struct orch_units *actual, json_t *problems)
{
    json_t *out = json_array(), *orphans = json_array();
    size_t i, k;
    const json_t *c;

    json_array_foreach(configs, i, c)
    {
        const char *id = json_string_value(json_object_get(c, "_id"));
        json_t *d = json_array(), *a = json_array();
        int in_sync = 1;

        if (!id)
            continue;
        for (k = 0; k < desired->n; k++) {
            const struct orch_unit *u = &desired->v[k];
            const struct orch_unit *x;
            if (strcmp(u->config_id, id) != 0)
                continue;
            (void)json_array_append_new(d, json_string(u->name));
            x = orch_units_find(actual, u->name);
            if (!x || !x->spec_hash || strcmp(x->spec_hash, u->spec_hash) != 0)
                in_sync = 0;
        }
        for (k = 0; k < actual->n; k++) {
            const struct orch_unit *x = &actual->v[k];
            /* by name too: an adopted spare may still carry a free spare's labels */
            const struct orch_unit *du = orch_units_find(desired, x->name);
            if (!(du && strcmp(du->config_id, id) == 0) && strcmp(x->config_id, id) != 0)
                continue;
            (void)json_array_append_new(
                a, json_pack("{s:s, s:s, s:s, s:I, s:I}", "name", x->name, "role",
                             x->role == ORCH_ROLE_REDIS ? "redis" : "app", "state",
                             x->state ? x->state : "", "running", (json_int_t)x->running_tasks,
                             "port", (json_int_t)x->port));
        }
        (void)json_array_append_new(out,
                                    json_pack("{s:s, s:O?, s:O?, s:O?, s:o, s:o, s:b}", "id", id,
                                              "type", json_object_get(c, "type"), "collection",
                                              json_object_get(c, "collection"), "version",
                                              json_object_get(c, "version"), "desired", d, "actual",
                                              a, "in_sync", in_sync && json_array_size(d) > 0));
    }
    for (k = 0; k < actual->n; k++)
        if (!orch_units_find(desired, actual->v[k].name))
            (void)json_array_append_new(orphans, json_string(actual->v[k].name));
    return json_pack("{s:o, s:o, s:O, s:o}", "configurations", out, "orphans", orphans, "problems",
                     problems, "spares", spares_status(desired, actual));
}

/* 1 when config c may be claimed by a spare: unassigned, one replica. */
static int claimable(const json_t *c, const char *type)
{
    const char *have = json_string_value(json_object_get(c, "container"));
    const json_t *jr = json_object_get(c, "replicas");
    json_int_t r = jr ? json_integer_value(jr) : 1;

    if ((have && *have) || !json_string_value(json_object_get(c, "_id")))
        return 0;
    if (strcmp(type, "endpoint") == 0)
        return r <= 1;
    return r == 1;
}

/* Free spare apps of type that run and that no configuration names yet. */
static long ready_spares(const struct orch_config *cfg, const json_t *configs,
                         const struct orch_units *actual, const char *type)
{
    long n = 0;
    size_t i, k;
    const json_t *c;

    for (i = 0; i < actual->n; i++) {
        const struct orch_unit *a = &actual->v[i];
        int named = 0;
        if (a->role != ORCH_ROLE_APP || (a->config_id && *a->config_id) || a->running_tasks < 1 ||
            orch_spare_index(cfg, type, a->name) < 0)
            continue;
        json_array_foreach(configs, k, c)
        {
            const char *have = json_string_value(json_object_get(c, "container"));
            named = named || (have && strcmp(have, a->name) == 0);
        }
        n += !named;
    }
    return n;
}

/* The configurations to build units for: all but those left for a running
 * free spare to claim — oldest first, at most one per such spare, and each
 * for at most SCRAPR_SPARE_WAIT_SECONDS after this orchestrator first saw it
 * unassigned; then it gets units of its own like any other (a spare that
 * never claims cannot hold a configuration back). New array. */
static json_t *leave_to_spares(struct orch_ctx *ctx, const json_t *configs,
                               const struct orch_units *actual)
{
    static const char *const types[] = {"scraper", "endpoint"};
    json_t *seen = json_object(), *keep = json_array();
    long ready[2];
    double now = orch_now_mono();
    size_t i, t;
    const json_t *c;

    for (t = 0; t < 2; t++)
        ready[t] = ctx->cfg->spares > 0 ? ready_spares(ctx->cfg, configs, actual, types[t]) : 0;
    ctx->spare_pending = 0;
    json_array_foreach(configs, i, c)
    {
        const char *type = json_string_value(json_object_get(c, "type"));
        const char *id = json_string_value(json_object_get(c, "_id"));
        double since;
        t = type && strcmp(type, "endpoint") == 0;
        if (!type || !claimable(c, type)) {
            (void)json_array_append(keep, (json_t *)c);
            continue;
        }
        since = json_real_value(json_object_get(ctx->unassigned_since, id));
        if (since <= 0)
            since = now;
        (void)json_object_set_new(seen, id, json_real(since));
        if (ready[t] > 0 && now - since < (double)ctx->cfg->spare_wait_s) {
            ready[t]--;
            ctx->spare_pending = 1;
            sh_log_debug("config=%s left to a spare waited_s=%.3f", id, now - since);
            continue;
        }
        (void)json_array_append(keep, (json_t *)c);
    }
    json_decref(ctx->unassigned_since);
    ctx->unassigned_since = seen;
    return keep;
}

struct list_job {
    struct orch_ctx *ctx;
    struct orch_units *out;
    struct sh_err err;
    int rc;
};

static void *list_main(void *arg)
{
    struct list_job *j = arg;

    j->rc = j->ctx->driver->list(j->ctx->docker, j->ctx->cfg, j->out, &j->err);
    return NULL;
}

int orch_reconcile_once(struct orch_ctx *ctx, struct sh_err *err)
{
    struct orch_units actual, desired;
    struct orch_actions acts;
    json_t *configs = NULL, *problems = NULL, *status;
    double t0 = orch_now_wall(), m0 = orch_now_mono(), m_read;
    size_t i, handed;

    orch_units_init(&actual);
    orch_units_init(&desired);
    memset(&acts, 0, sizeof(acts));
    (void)pthread_mutex_lock(&ctx->lock);
    ctx->last_start = t0;
    (void)pthread_mutex_unlock(&ctx->lock);
    ctx->url_pending = 0;
    /* Before the engine is read: see apply.c on busy units. A failed step may
     * be a network removed behind our back: look at the network again. */
    if (orch_applier_pass_begin(ctx->applier) > 0)
        ctx->network_ready = 0;

    /* Both sides are read at once: they are independent round trips, and
     * this is on the path from a POST to a running scraper. Without the
     * desired state we must not act: an unreachable config-discovery would
     * otherwise look like "no configurations" and remove everything. */
    {
        struct list_job lj;
        pthread_t th;
        int threaded, frc;

        lj.ctx = ctx;
        lj.out = &actual;
        sh_err_clear(&lj.err);
        threaded = pthread_create(&th, NULL, list_main, &lj) == 0;
        if (!threaded)
            (void)list_main(&lj);
        frc = orch_desired_fetch(ctx->cfg, ctx->cd_disc, &configs, err);
        if (threaded)
            (void)pthread_join(th, NULL);
        if (frc < 0)
            goto fail;
        if (lj.rc < 0) {
            if (err)
                *err = lj.err;
            goto fail;
        }
    }
    m_read = orch_now_mono();
    {
        json_t *placed = leave_to_spares(ctx, configs, &actual);
        struct orch_units view;
        orch_desired_build(ctx->cfg, placed, placement_view(ctx, &actual, &view), &desired,
                           &problems);
        orch_units_done(&view);
        json_decref(placed);
    }
    for (i = 0; i < json_array_size(problems); i++)
        orch_ctx_error(ctx, "config=%s: %s",
                       json_string_value(json_object_get(json_array_get(problems, i), "config_id"))
                           ?: "?",
                       json_string_value(json_object_get(json_array_get(problems, i), "error")));
    orch_diff(&desired, &actual, ctx->driver->broken, &acts);

    /* The network must exist before anything joins it (checked once, and
     * again after a failed step). */
    if (acts.n > 0 && acts.v[acts.n - 1].kind != ORCH_REMOVE && !ctx->network_ready) {
        struct sh_err nerr;
        sh_err_clear(&nerr);
        if (ctx->driver->ensure_network(ctx->docker, ctx->cfg, &nerr) < 0)
            orch_ctx_error(ctx, "network %s: %s", ctx->cfg->network, nerr.msg);
        else
            ctx->network_ready = 1;
    }
    handed = dispatch(ctx, &acts);
    if (handed > 0)
        sh_log_info("reconcile dispatched actions=%zu configs=%zu read_s=%.3f", handed,
                    json_array_size(configs), m_read - m0);
    /* Units being created show up here once a later pass (triggered when
     * their job ends) reads them back. */
    record_assignments(ctx, configs, &desired, &actual);
    status = build_status(configs, &desired, &actual, problems);
    (void)json_object_set_new(status, "in_flight", orch_applier_in_flight(ctx->applier));
    (void)pthread_mutex_lock(&ctx->lock);
    json_decref(ctx->status);
    ctx->status = status;
    ctx->last_duration = orch_now_mono() - m0;
    ctx->passes++;
    (void)pthread_mutex_unlock(&ctx->lock);
    sh_log_debug("reconcile pass done seconds=%.3f read_s=%.3f actions=%zu dispatched=%zu",
                 orch_now_mono() - m0, m_read - m0, acts.n, handed);
    if (ctx->metrics) {
        sh_metric_inc(sh_metrics_counter(ctx->metrics, "scrapr_orchestrator_reconciles_total",
                                         "Reconcile passes"));
        sh_metric_observe(sh_metrics_histogram(ctx->metrics,
                                               "scrapr_orchestrator_reconcile_seconds",
                                               "Duration of a reconcile pass", NULL, 0),
                          orch_now_mono() - m0);
    }
    orch_actions_done(&acts);
    orch_units_done(&actual);
    orch_units_done(&desired);
    json_decref(configs);
    json_decref(problems);
    return 0;
fail:
    (void)pthread_mutex_lock(&ctx->lock);
    ctx->last_duration = orch_now_mono() - m0;
    (void)pthread_mutex_unlock(&ctx->lock);
    orch_units_done(&actual);
    json_decref(configs);
    return -1;
}
