/* Reconciliation: the pure diff (desired units vs actual units → actions) and
 * one pass that fetches both sides, applies the actions through the driver
 * and records assignments back in config-discovery.
 *
 * Threading: orch_reconcile_once() runs on the reconcile thread only; it reads
 * ctx->leader under ctx->lock before every action so a demoted orchestrator
 * stops acting mid-pass. Status/errors are published under ctx->lock for
 * api.c. The diff is pure and unit-tested. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "orchestrator.h"
#include "shared/log.h"
#include "shared/xalloc.h"

#define MAX_ERRORS 20

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
                     (u->port > 0 && a->port != u->port))
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

static void count(struct orch_ctx *ctx, int kind)
{
    static const char *const names[] = {
        "scrapr_orchestrator_units_created_total", "scrapr_orchestrator_units_updated_total",
        "scrapr_orchestrator_units_replaced_total", "scrapr_orchestrator_units_removed_total"};

    if (ctx->metrics)
        sh_metric_inc(sh_metrics_counter(ctx->metrics, names[kind], "Units changed, by kind"));
}

static int apply(struct orch_ctx *ctx, const struct orch_action *act, struct sh_err *err)
{
    const struct orch_driver *drv = ctx->driver;

    switch (act->kind) {
    case ORCH_CREATE:
        return drv->create(ctx->docker, ctx->cfg, act->desired, err);
    case ORCH_UPDATE:
        return drv->update(ctx->docker, ctx->cfg, act->desired, act->actual, err);
    case ORCH_REPLACE:
        if (drv->remove(ctx->docker, ctx->cfg, act->actual, err) < 0)
            return -1;
        return drv->create(ctx->docker, ctx->cfg, act->desired, err);
    default:
        return drv->remove(ctx->docker, ctx->cfg, act->actual, err);
    }
}

#define MAX_PARALLEL 8

struct phase {
    struct orch_ctx *ctx;
    const struct orch_action *v;
    size_t n;
    size_t next; /* under ctx->lock */
    int *rc;
    struct sh_err *errs;
};

static void *phase_worker(void *arg)
{
    struct phase *p = arg;

    for (;;) {
        size_t i;
        (void)pthread_mutex_lock(&p->ctx->lock);
        i = p->next++;
        (void)pthread_mutex_unlock(&p->ctx->lock);
        if (i >= p->n)
            break;
        sh_err_clear(&p->errs[i]);
        if (!orch_is_leader(p->ctx)) {
            sh_err_set(&p->errs[i], SH_ECONFLICT, "leadership lost");
            p->rc[i] = -1;
            continue;
        }
        p->rc[i] = apply(p->ctx, &p->v[i], &p->errs[i]);
    }
    return NULL;
}

/* Applies n actions with up to MAX_PARALLEL threads; logs and counts in order. */
static void run_phase(struct orch_ctx *ctx, const struct orch_action *v, size_t n, int *done,
                      int *failed)
{
    struct phase p;
    pthread_t th[MAX_PARALLEL];
    size_t i, nth = n < MAX_PARALLEL ? n : MAX_PARALLEL, started = 0;

    if (n == 0)
        return;
    p.ctx = ctx;
    p.v = v;
    p.n = n;
    p.next = 0;
    p.rc = sh_xcalloc(n, sizeof(*p.rc));
    p.errs = sh_xcalloc(n, sizeof(*p.errs));
    for (i = 0; i + 1 < nth; i++)
        if (pthread_create(&th[i], NULL, phase_worker, &p) == 0)
            started++;
    (void)phase_worker(&p); /* this thread works too */
    for (i = 0; i < started; i++)
        (void)pthread_join(th[i], NULL);
    for (i = 0; i < n; i++) {
        const char *name = v[i].desired ? v[i].desired->name : v[i].actual->name;
        if (p.rc[i] < 0) {
            orch_ctx_error(ctx, "%s %s: %s", orch_action_name(v[i].kind), name, p.errs[i].msg);
            (*failed)++;
            continue;
        }
        count(ctx, v[i].kind);
        (*done)++;
        sh_log_info("%s unit=%s", orch_action_name(v[i].kind), name);
    }
    free(p.rc);
    free(p.errs);
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
        char *want = orch_assigned_container(ctx->cfg, c);
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
            if (strcmp(x->config_id, id) != 0)
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
    return json_pack("{s:o, s:o, s:O}", "configurations", out, "orphans", orphans, "problems",
                     problems);
}

int orch_reconcile_once(struct orch_ctx *ctx, struct sh_err *err)
{
    struct orch_units actual, desired, after;
    struct orch_actions acts;
    json_t *configs = NULL, *problems = NULL, *status;
    double t0 = orch_now_wall(), m0 = orch_now_mono();
    size_t i;
    int done = 0, failed = 0;

    orch_units_init(&actual);
    orch_units_init(&desired);
    orch_units_init(&after);
    memset(&acts, 0, sizeof(acts));
    (void)pthread_mutex_lock(&ctx->lock);
    ctx->last_start = t0;
    (void)pthread_mutex_unlock(&ctx->lock);
    ctx->url_pending = 0;

    /* Without the desired state we must not act: an unreachable config-discovery
     * would otherwise look like "no configurations" and remove everything. */
    if (orch_desired_fetch(ctx->cfg, ctx->cd_disc, &configs, err) < 0)
        goto fail;
    if (ctx->driver->list(ctx->docker, ctx->cfg, &actual, err) < 0)
        goto fail;
    orch_desired_build(ctx->cfg, configs, &actual, &desired, &problems);
    for (i = 0; i < json_array_size(problems); i++)
        orch_ctx_error(ctx, "config=%s: %s",
                       json_string_value(json_object_get(json_array_get(problems, i), "config_id"))
                           ?: "?",
                       json_string_value(json_object_get(json_array_get(problems, i), "error")));
    orch_diff(&desired, &actual, ctx->driver->broken, &acts);

    /* Network first (once), then removals (they free names and ports), then
     * creates/updates; within a phase the engine calls run in parallel, since
     * one container start costs seconds on a busy engine. */
    if (acts.n > 0 && acts.v[acts.n - 1].kind != ORCH_REMOVE) {
        struct sh_err nerr;
        sh_err_clear(&nerr);
        if (ctx->driver->ensure_network(ctx->docker, ctx->cfg, &nerr) < 0)
            orch_ctx_error(ctx, "network %s: %s", ctx->cfg->network, nerr.msg);
    }
    {
        size_t nrm = 0;
        while (nrm < acts.n && acts.v[nrm].kind == ORCH_REMOVE)
            nrm++;
        run_phase(ctx, acts.v, nrm, &done, &failed);
        run_phase(ctx, acts.v + nrm, acts.n - nrm, &done, &failed);
    }

    if (done > 0 || failed > 0) {
        struct sh_err lerr;
        if (ctx->driver->list(ctx->docker, ctx->cfg, &after, &lerr) < 0) {
            orch_ctx_error(ctx, "re-read actual state: %s", lerr.msg);
            orch_units_done(&after);
            orch_units_init(&after);
        }
    }
    {
        const struct orch_units *now = (done > 0 || failed > 0) ? &after : &actual;
        record_assignments(ctx, configs, &desired, now);
        status = build_status(configs, &desired, now, problems);
    }
    (void)pthread_mutex_lock(&ctx->lock);
    json_decref(ctx->status);
    ctx->status = status;
    ctx->last_duration = orch_now_mono() - m0;
    ctx->passes++;
    (void)pthread_mutex_unlock(&ctx->lock);
    if (ctx->metrics) {
        sh_metric_inc(sh_metrics_counter(ctx->metrics, "scrapr_orchestrator_reconciles_total",
                                         "Reconcile passes"));
        sh_metric_observe(sh_metrics_histogram(ctx->metrics,
                                               "scrapr_orchestrator_reconcile_seconds",
                                               "Duration of a reconcile pass", NULL, 0),
                          orch_now_mono() - m0);
    }
    if (done || failed)
        sh_log_info("reconcile done actions=%d failed=%d configs=%zu seconds=%.3f", done, failed,
                    json_array_size(configs), orch_now_mono() - m0);
    orch_actions_done(&acts);
    orch_units_done(&actual);
    orch_units_done(&desired);
    orch_units_done(&after);
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
