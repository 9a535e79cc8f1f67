/* The applier: carries out the actions a reconcile pass decided on, on a pool
 * of worker threads, so that a pass never waits for the engine.
 *
 * Why: starting a container costs seconds on a busy engine. When a pass
 * waited for its actions, a configuration POSTed meanwhile waited behind the
 * previous one's container starts (head-of-line blocking: seconds of extra
 * latency at p95 in bench/orchestrator). Now a pass reads both sides, diffs,
 * hands the actions over and is done in milliseconds; the next trigger gets
 * the next pass at once.
 *
 * Rules that keep this as safe as one pass at a time:
 * - A unit with an action in flight is left alone by every other pass (its
 *   name is "busy"), so two actions never race on one unit. A pass takes a
 *   snapshot of the busy names before it reads the engine and skips a unit
 *   busy then or now: an action finishing between the read and the diff would
 *   otherwise look like a missing unit and be created twice.
 * - When a job ends it triggers a pass, which sees the result, records the
 *   assignment in config-discovery and retries what failed when due.
 * - A failed action backs off per unit (0.5 s doubling to 30 s, cleared by a
 *   success): the unit is "busy" until then, without slowing down any other
 *   unit, and a failure that causes engine events (a half-made container is
 *   removed) cannot spin.
 * - Every action re-checks leadership right before it calls the engine.
 * - An app's action and the creation of its Redis form one job, app first
 *   (Swarm: once the app's task runs, since service create returns before
 *   the task starts): what a user waits for after a POST is the scraper
 *   process, and on a loaded engine two container starts at once each take
 *   longer than one. The app copes with a Redis that comes a moment later
 *   (connections are lazy and retried; its /health turns 200 once Redis
 *   answers).
 *
 * Threading: orch_applier_* are called by the reconcile thread, the jobs run
 * on APPLY_WORKERS threads; everything shared is under a->lock. A job owns
 * deep copies of its units. */
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include "orchestrator.h"
#include "shared/log.h"
#include "shared/xalloc.h"

#define APPLY_WORKERS 8
#define RETRY_FIRST_MS 500
#define RETRY_MAX_MS 30000
/* How long an app's Redis waits for the app to run (swarm: task scheduling). */
#define WAIT_RUNNING_MS 15000

struct step {
    int kind;
    int has_desired, has_actual;
    struct orch_unit desired, actual;
};

struct job {
    struct job *next;
    struct step steps[2];
    int n;
};

struct backoff {
    char *name;
    long ms;
    double not_before; /* monotonic */
    int armed;         /* a pass is still to retry it */
};

struct orch_applier {
    struct orch_ctx *ctx;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    pthread_t th[APPLY_WORKERS];
    int nth;
    int stop;
    struct job *head, *tail;
    char **busy; /* names with an action queued or running */
    size_t nbusy, capbusy;
    char **snap; /* busy names when the current pass began (reconcile thread) */
    size_t nsnap;
    struct backoff *bo;
    size_t nbo, capbo;
    int failures; /* since the last pass began */
};

static const char *step_name(const struct step *s)
{
    return s->has_desired ? s->desired.name : s->actual.name;
}

static ssize_t find_name(char *const *v, size_t n, const char *name)
{
    size_t i;

    for (i = 0; i < n; i++)
        if (strcmp(v[i], name) == 0)
            return (ssize_t)i;
    return -1;
}

static ssize_t find_backoff(const struct orch_applier *a, const char *name)
{
    size_t i;

    for (i = 0; i < a->nbo; i++)
        if (strcmp(a->bo[i].name, name) == 0)
            return (ssize_t)i;
    return -1;
}

/* Under a->lock. */
static void busy_remove(struct orch_applier *a, const char *name)
{
    ssize_t i = find_name(a->busy, a->nbusy, name);

    if (i < 0)
        return;
    free(a->busy[i]);
    a->busy[i] = a->busy[--a->nbusy];
}

/* Under a->lock: a failure doubles the unit's backoff, a success clears it. */
static void backoff_note(struct orch_applier *a, const char *name, int ok)
{
    ssize_t i = find_backoff(a, name);

    if (ok) {
        if (i >= 0) {
            free(a->bo[i].name);
            a->bo[i] = a->bo[--a->nbo];
        }
        return;
    }
    if (i < 0) {
        if (a->nbo == a->capbo) {
            a->capbo = a->capbo ? a->capbo * 2 : 8;
            a->bo = sh_xrealloc(a->bo, a->capbo * sizeof(*a->bo));
        }
        i = (ssize_t)a->nbo++;
        a->bo[i].name = sh_xstrdup(name);
        a->bo[i].ms = 0;
    }
    a->bo[i].ms = a->bo[i].ms ? a->bo[i].ms * 2 : RETRY_FIRST_MS;
    if (a->bo[i].ms > RETRY_MAX_MS)
        a->bo[i].ms = RETRY_MAX_MS;
    a->bo[i].not_before = orch_now_mono() + (double)a->bo[i].ms / 1000.0;
    a->bo[i].armed = 1;
}

static void count(struct orch_ctx *ctx, int kind)
{
    static const char *const names[] = {
        "scrapr_orchestrator_units_created_total", "scrapr_orchestrator_units_updated_total",
        "scrapr_orchestrator_units_replaced_total", "scrapr_orchestrator_units_removed_total"};

    if (ctx->metrics)
        sh_metric_inc(sh_metrics_counter(ctx->metrics, names[kind], "Units changed, by kind"));
}

static int apply_step(struct orch_ctx *ctx, const struct step *s, struct sh_err *err)
{
    const struct orch_driver *drv = ctx->driver;

    switch (s->kind) {
    case ORCH_CREATE:
        return drv->create(ctx->docker, ctx->cfg, &s->desired, err);
    case ORCH_UPDATE:
        return drv->update(ctx->docker, ctx->cfg, &s->desired, &s->actual, err);
    case ORCH_REPLACE:
        if (drv->remove(ctx->docker, ctx->cfg, &s->actual, err) < 0)
            return -1;
        return drv->create(ctx->docker, ctx->cfg, &s->desired, err);
    default:
        return drv->remove(ctx->docker, ctx->cfg, &s->actual, err);
    }
}

static void run_job(struct orch_applier *a, struct job *j)
{
    struct orch_ctx *ctx = a->ctx;
    int k;

    for (k = 0; k < j->n; k++) {
        const struct step *s = &j->steps[k];
        struct sh_err err;
        double t0 = orch_now_mono();
        int rc;

        if (!orch_is_leader(ctx)) {
            sh_log_debug("skip %s unit=%s: not leader", orch_action_name(s->kind), step_name(s));
            continue;
        }
        sh_err_clear(&err);
        rc = apply_step(ctx, s, &err);
        if (rc < 0) {
            orch_ctx_error(ctx, "%s %s: %s", orch_action_name(s->kind), step_name(s), err.msg);
            /* A port someone outside scrapr holds: move, rather than retry it. */
            if (s->kind != ORCH_REMOVE && s->desired.port > 0 &&
                (strstr(err.msg, "address already in use") ||
                 strstr(err.msg, "port is already allocated")))
                orch_port_held(ctx, s->desired.port);
        } else {
            count(ctx, s->kind);
            sh_log_info("%s unit=%s seconds=%.3f", orch_action_name(s->kind), step_name(s),
                        orch_now_mono() - t0);
        }
        (void)pthread_mutex_lock(&a->lock);
        backoff_note(a, step_name(s), rc == 0);
        if (rc < 0)
            a->failures++;
        (void)pthread_mutex_unlock(&a->lock);
        /* The Redis follows once the app runs, not merely once it exists. */
        if (rc == 0 && k + 1 < j->n && s->kind != ORCH_REMOVE && ctx->driver->wait_running) {
            sh_err_clear(&err);
            if (ctx->driver->wait_running(ctx->docker, ctx->cfg, &s->desired, WAIT_RUNNING_MS,
                                          &err) < 0)
                sh_log_debug("wait unit=%s: %s", step_name(s), err.msg);
        }
    }
}

static void job_free(struct job *j)
{
    int k;

    for (k = 0; k < j->n; k++) {
        if (j->steps[k].has_desired)
            orch_unit_done(&j->steps[k].desired);
        if (j->steps[k].has_actual)
            orch_unit_done(&j->steps[k].actual);
    }
    free(j);
}

static void *worker_main(void *arg)
{
    struct orch_applier *a = arg;

    for (;;) {
        struct job *j;
        int k;

        (void)pthread_mutex_lock(&a->lock);
        while (!a->stop && !a->head)
            (void)pthread_cond_wait(&a->cond, &a->lock);
        if (a->stop) {
            (void)pthread_mutex_unlock(&a->lock);
            break;
        }
        j = a->head;
        a->head = j->next;
        if (!a->head)
            a->tail = NULL;
        (void)pthread_mutex_unlock(&a->lock);

        run_job(a, j);

        (void)pthread_mutex_lock(&a->lock);
        for (k = 0; k < j->n; k++)
            busy_remove(a, step_name(&j->steps[k]));
        (void)pthread_mutex_unlock(&a->lock);
        job_free(j);
        /* See the result, record the assignment, retry what failed. */
        orch_trigger(a->ctx, "applied");
    }
    return NULL;
}

struct orch_applier *orch_applier_start(struct orch_ctx *ctx)
{
    struct orch_applier *a = sh_xcalloc(1, sizeof(*a));
    int i;

    a->ctx = ctx;
    (void)pthread_mutex_init(&a->lock, NULL);
    (void)pthread_cond_init(&a->cond, NULL);
    for (i = 0; i < APPLY_WORKERS; i++)
        if (pthread_create(&a->th[a->nth], NULL, worker_main, a) == 0)
            a->nth++;
    if (a->nth == 0)
        sh_fatal("applier: pthread_create failed");
    return a;
}

static void free_names(char **v, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

void orch_applier_stop(struct orch_applier *a)
{
    struct job *j;
    size_t i;
    int t;

    if (!a)
        return;
    /* Queued jobs are dropped (the next leader's first pass redoes what is
     * missing); running ones finish their current engine call. */
    (void)pthread_mutex_lock(&a->lock);
    a->stop = 1;
    (void)pthread_cond_broadcast(&a->cond);
    (void)pthread_mutex_unlock(&a->lock);
    for (t = 0; t < a->nth; t++)
        (void)pthread_join(a->th[t], NULL);
    while ((j = a->head) != NULL) {
        a->head = j->next;
        job_free(j);
    }
    free_names(a->busy, a->nbusy);
    free_names(a->snap, a->nsnap);
    for (i = 0; i < a->nbo; i++)
        free(a->bo[i].name);
    free(a->bo);
    (void)pthread_cond_destroy(&a->cond);
    (void)pthread_mutex_destroy(&a->lock);
    free(a);
}

int orch_applier_pass_begin(struct orch_applier *a)
{
    double now = orch_now_mono();
    size_t i;
    int failures;

    free_names(a->snap, a->nsnap);
    (void)pthread_mutex_lock(&a->lock);
    a->snap = sh_xcalloc(a->nbusy ? a->nbusy : 1, sizeof(*a->snap));
    for (i = 0; i < a->nbusy; i++)
        a->snap[i] = sh_xstrdup(a->busy[i]);
    a->nsnap = a->nbusy;
    /* This pass retries every unit whose backoff has run out. */
    for (i = 0; i < a->nbo; i++)
        if (a->bo[i].not_before <= now)
            a->bo[i].armed = 0;
    failures = a->failures;
    a->failures = 0;
    (void)pthread_mutex_unlock(&a->lock);
    return failures;
}

int orch_applier_blocked(struct orch_applier *a, const char *name)
{
    ssize_t b;
    int blocked;

    if (find_name(a->snap, a->nsnap, name) >= 0)
        return 1;
    (void)pthread_mutex_lock(&a->lock);
    b = find_backoff(a, name);
    blocked = find_name(a->busy, a->nbusy, name) >= 0 ||
              (b >= 0 && a->bo[b].not_before > orch_now_mono());
    (void)pthread_mutex_unlock(&a->lock);
    return blocked;
}

static void copy_step(struct step *s, const struct orch_action *act)
{
    s->kind = act->kind;
    s->has_desired = act->desired != NULL;
    s->has_actual = act->actual != NULL;
    if (act->desired)
        orch_unit_copy(&s->desired, act->desired);
    if (act->actual)
        orch_unit_copy(&s->actual, act->actual);
}

void orch_applier_submit(struct orch_applier *a, const struct orch_action *first,
                         const struct orch_action *then)
{
    struct job *j = sh_xcalloc(1, sizeof(*j));
    int k;

    copy_step(&j->steps[j->n++], first);
    if (then)
        copy_step(&j->steps[j->n++], then);
    (void)pthread_mutex_lock(&a->lock);
    for (k = 0; k < j->n; k++) {
        if (a->nbusy == a->capbusy) {
            a->capbusy = a->capbusy ? a->capbusy * 2 : 16;
            a->busy = sh_xrealloc(a->busy, a->capbusy * sizeof(*a->busy));
        }
        a->busy[a->nbusy++] = sh_xstrdup(step_name(&j->steps[k]));
    }
    if (a->tail)
        a->tail->next = j;
    else
        a->head = j;
    a->tail = j;
    (void)pthread_cond_signal(&a->cond);
    (void)pthread_mutex_unlock(&a->lock);
}

double orch_applier_next_retry(struct orch_applier *a)
{
    double next = 0;
    size_t i;

    (void)pthread_mutex_lock(&a->lock);
    for (i = 0; i < a->nbo; i++)
        if (a->bo[i].armed && (next == 0 || a->bo[i].not_before < next))
            next = a->bo[i].not_before;
    (void)pthread_mutex_unlock(&a->lock);
    return next;
}

void orch_applier_forget_failures(struct orch_applier *a)
{
    size_t i;

    (void)pthread_mutex_lock(&a->lock);
    for (i = 0; i < a->nbo; i++)
        free(a->bo[i].name);
    a->nbo = 0;
    a->failures = 0;
    (void)pthread_mutex_unlock(&a->lock);
}

json_t *orch_applier_in_flight(struct orch_applier *a)
{
    json_t *out = json_array();
    size_t i;

    (void)pthread_mutex_lock(&a->lock);
    for (i = 0; i < a->nbusy; i++)
        (void)json_array_append_new(out, json_string(a->busy[i]));
    (void)pthread_mutex_unlock(&a->lock);
    return out;
}
