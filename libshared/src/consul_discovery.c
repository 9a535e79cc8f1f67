/* Discovery cache (see sh_discovery in shared/consul.h).
 *
 * One background thread per cache follows /v1/health/service/<name>?passing
 * with blocking queries (wait 30 s) and swaps in the new list of
 * "http://addr:port" URLs under a mutex. When Consul fails the old list stays
 * and the thread backs off 1 s → 10 s, so callers keep using the last known
 * peers while Consul is down. sh_discovery_free raises a stop flag that the
 * HTTP transfer polls (every 100 ms) and wakes the
 * backoff wait, then joins. The cache borrows the struct sh_consul: it must
 * outlive the cache. */
#include "shared/consul.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "consul_internal.h"
#include "shared/xalloc.h"

#define DISCOVERY_WAIT_S 30u
#define BACKOFF_MIN_MS 1000L
#define BACKOFF_MAX_MS 10000L

struct sh_discovery {
    struct sh_consul *c; /* borrowed */
    char *service;
    char *tag;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv; /* CLOCK_MONOTONIC; signalled on new list and on stop */
    int stop;          /* atomic; also the HTTP cancel flag */
    int have;          /* a first successful answer arrived (under mu) */
    char **urls;       /* under mu */
    size_t n;
    size_t next; /* round-robin cursor (under mu) */
};

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

static int stopping(struct sh_discovery *d)
{
    return __atomic_load_n(&d->stop, __ATOMIC_SEQ_CST);
}

static char **urls_from(const struct sh_consul_instances *in)
{
    char **v = sh_xcalloc(in->n + 1, sizeof(char *));

    for (size_t i = 0; i < in->n; i++) {
        const char *a = in->v[i].address;
        int v6 = strchr(a, ':') != NULL;
        v[i] = sh_xasprintf("http://%s%s%s:%u", v6 ? "[" : "", a, v6 ? "]" : "", in->v[i].port);
    }
    return v;
}

static void urls_free(char **v, size_t n)
{
    for (size_t i = 0; v && i < n; i++)
        free(v[i]);
    free(v);
}

static void *run(void *arg)
{
    struct sh_discovery *d = arg;
    uint64_t index = 0;
    long backoff = BACKOFF_MIN_MS;

    while (!stopping(d)) {
        struct sh_consul_instances in = {0};
        struct sh_err err = {0};
        char **urls, **old;
        size_t old_n;

        if (sh_consul_health_service_cancellable(d->c, d->service, d->tag, index, DISCOVERY_WAIT_S,
                                                 &d->stop, &in, &err) < 0) {
            struct timespec ts;

            /* Keep the old list; retry later (or at once when told to stop). */
            deadline_after(&ts, backoff);
            (void)pthread_mutex_lock(&d->mu);
            while (!stopping(d) && pthread_cond_timedwait(&d->cv, &d->mu, &ts) == 0)
                ;
            (void)pthread_mutex_unlock(&d->mu);
            backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
            index = 0; /* the agent may have restarted with a fresh index */
            continue;
        }
        backoff = BACKOFF_MIN_MS;
        urls = urls_from(&in);
        (void)pthread_mutex_lock(&d->mu);
        old = d->urls;
        old_n = d->n;
        d->urls = urls;
        d->n = in.n;
        d->have = 1;
        (void)pthread_cond_broadcast(&d->cv);
        (void)pthread_mutex_unlock(&d->mu);
        urls_free(old, old_n);
        /* Consul: an index that goes backwards (or 0) means start over. */
        index = in.index > index ? in.index : 0;
        if (in.index == 0) {
            struct timespec ts;
            deadline_after(&ts, BACKOFF_MIN_MS);
            (void)pthread_mutex_lock(&d->mu);
            while (!stopping(d) && pthread_cond_timedwait(&d->cv, &d->mu, &ts) == 0)
                ;
            (void)pthread_mutex_unlock(&d->mu);
        }
        sh_consul_instances_done(&in);
    }
    return NULL;
}

struct sh_discovery *sh_discovery_new(struct sh_consul *c, const char *service, const char *tag)
{
    struct sh_discovery *d;
    pthread_condattr_t ca;

    if (!c || !service || !*service)
        return NULL;
    d = sh_xcalloc(1, sizeof(*d));
    d->c = c;
    d->service = sh_xstrdup(service);
    d->tag = tag && *tag ? sh_xstrdup(tag) : NULL;
    if (pthread_mutex_init(&d->mu, NULL) != 0)
        goto fail_mu;
    if (pthread_condattr_init(&ca) != 0)
        goto fail_cv;
    if (pthread_condattr_setclock(&ca, CLOCK_MONOTONIC) != 0 || pthread_cond_init(&d->cv, &ca)) {
        (void)pthread_condattr_destroy(&ca);
        goto fail_cv;
    }
    (void)pthread_condattr_destroy(&ca);
    if (pthread_create(&d->thread, NULL, run, d) != 0)
        goto fail_thread;
    return d;
fail_thread:
    (void)pthread_cond_destroy(&d->cv);
fail_cv:
    (void)pthread_mutex_destroy(&d->mu);
fail_mu:
    free(d->service);
    free(d->tag);
    free(d);
    return NULL;
}

void sh_discovery_free(struct sh_discovery *d)
{
    if (!d)
        return;
    __atomic_store_n(&d->stop, 1, __ATOMIC_SEQ_CST);
    (void)pthread_mutex_lock(&d->mu);
    (void)pthread_cond_broadcast(&d->cv);
    (void)pthread_mutex_unlock(&d->mu);
    (void)pthread_join(d->thread, NULL);
    (void)pthread_cond_destroy(&d->cv);
    (void)pthread_mutex_destroy(&d->mu);
    urls_free(d->urls, d->n);
    free(d->service);
    free(d->tag);
    free(d);
}

int sh_discovery_pick(struct sh_discovery *d, long wait_ms, char **ret_url, struct sh_err *err)
{
    struct timespec ts;
    int rc = -1;

    if (!d) {
        sh_err_set(err, SH_ECONFIG, "discovery: no cache");
        return -1;
    }
    deadline_after(&ts, wait_ms > 0 ? wait_ms : 0);
    (void)pthread_mutex_lock(&d->mu);
    while (!d->have && !stopping(d) && wait_ms > 0) {
        int w = pthread_cond_timedwait(&d->cv, &d->mu, &ts);
        if (w == ETIMEDOUT)
            break;
    }
    if (d->n == 0) {
        sh_err_set(err, SH_ENOTFOUND, "discovery: no passing instance of %s%s%s %s", d->service,
                   d->tag ? " tagged " : "", d->tag ? d->tag : "",
                   d->have ? "is registered" : "known yet (consul has not answered)");
    } else {
        *ret_url = sh_xstrdup(d->urls[d->next++ % d->n]);
        rc = 0;
    }
    (void)pthread_mutex_unlock(&d->mu);
    return rc;
}
