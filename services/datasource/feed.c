/* In-process change feed: the revision of every collection this process has
 * seen move, behind one mutex and one condition variable. The tailer publishes
 * after each reduce; long-polling GET /collections/{name}?wait= handlers block
 * in ds_feed_wait(). One broadcast per publish wakes every waiter, each checks
 * its own collection (waiters are few: one per endpoint replica).
 *
 * The same object carries the ingest -> tailer wake-up counter so a batch
 * stored by this process is reduced without waiting for the next poll.
 * Thread-safe; the table grows without bound only with the number of
 * collections, which is bounded by the collection-name rule and by real use. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "datasource.h"
#include "shared/xalloc.h"

struct feed_entry {
    char *name;
    int64_t rev;
};

struct ds_feed {
    pthread_mutex_t mu;
    pthread_cond_t cond;
    struct feed_entry *v;
    size_t n, cap;
    uint64_t kicks;
    uint64_t ingested;
    pthread_cond_t ingest_cond;
};

struct ds_feed *ds_feed_new(void)
{
    struct ds_feed *f = sh_xcalloc(1, sizeof(*f));
    pthread_condattr_t ca;

    (void)pthread_mutex_init(&f->mu, NULL);
    (void)pthread_condattr_init(&ca);
    (void)pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    (void)pthread_cond_init(&f->cond, &ca);
    (void)pthread_cond_init(&f->ingest_cond, &ca);
    (void)pthread_condattr_destroy(&ca);
    return f;
}

void ds_feed_free(struct ds_feed *f)
{
    size_t i;

    if (!f)
        return;
    for (i = 0; i < f->n; i++)
        free(f->v[i].name);
    free(f->v);
    (void)pthread_cond_destroy(&f->cond);
    (void)pthread_cond_destroy(&f->ingest_cond);
    (void)pthread_mutex_destroy(&f->mu);
    free(f);
}

static struct feed_entry *find(struct ds_feed *f, const char *name)
{
    size_t i;

    for (i = 0; i < f->n; i++)
        if (strcmp(f->v[i].name, name) == 0)
            return &f->v[i];
    return NULL;
}

void ds_feed_publish(struct ds_feed *f, const char *name, int64_t rev)
{
    struct feed_entry *e;

    (void)pthread_mutex_lock(&f->mu);
    e = find(f, name);
    if (!e) {
        if (f->n == f->cap) {
            f->cap = f->cap ? f->cap * 2 : 16;
            f->v = sh_xrealloc(f->v, f->cap * sizeof(*f->v));
        }
        e = &f->v[f->n++];
        e->name = sh_xstrdup(name);
        e->rev = -1;
    }
    if (rev > e->rev) {
        e->rev = rev;
        (void)pthread_cond_broadcast(&f->cond);
    }
    (void)pthread_mutex_unlock(&f->mu);
}

void ds_feed_kick(struct ds_feed *f)
{
    (void)pthread_mutex_lock(&f->mu);
    f->kicks++;
    (void)pthread_cond_broadcast(&f->cond);
    (void)pthread_cond_broadcast(&f->ingest_cond);
    (void)pthread_mutex_unlock(&f->mu);
}

int64_t ds_feed_revision(struct ds_feed *f, const char *name)
{
    struct feed_entry *e;
    int64_t rev;

    (void)pthread_mutex_lock(&f->mu);
    e = find(f, name);
    rev = e ? e->rev : -1;
    (void)pthread_mutex_unlock(&f->mu);
    return rev;
}

static void deadline_in(struct timespec *ts, long ms)
{
    (void)clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

int64_t ds_feed_wait(struct ds_feed *f, const char *name, int64_t rev, long timeout_ms)
{
    struct timespec ts;
    struct feed_entry *e;
    int64_t cur = -1;
    uint64_t kicks;

    deadline_in(&ts, timeout_ms);
    (void)pthread_mutex_lock(&f->mu);
    kicks = f->kicks;
    for (;;) {
        e = find(f, name);
        cur = e ? e->rev : -1;
        if (cur != rev && cur >= 0)
            break;
        if (f->kicks != kicks)
            break;
        if (pthread_cond_timedwait(&f->cond, &f->mu, &ts) == ETIMEDOUT) {
            e = find(f, name);
            cur = e ? e->rev : -1;
            break;
        }
    }
    (void)pthread_mutex_unlock(&f->mu);
    return cur;
}

void ds_feed_ingested(struct ds_feed *f)
{
    (void)pthread_mutex_lock(&f->mu);
    f->ingested++;
    (void)pthread_cond_broadcast(&f->ingest_cond);
    (void)pthread_mutex_unlock(&f->mu);
}

uint64_t ds_feed_ingest_count(struct ds_feed *f)
{
    uint64_t n;

    (void)pthread_mutex_lock(&f->mu);
    n = f->ingested;
    (void)pthread_mutex_unlock(&f->mu);
    return n;
}

void ds_feed_wait_ingest(struct ds_feed *f, uint64_t *seen, long timeout_ms)
{
    struct timespec ts;
    uint64_t kicks;

    deadline_in(&ts, timeout_ms);
    (void)pthread_mutex_lock(&f->mu);
    kicks = f->kicks;
    while (f->ingested == *seen && f->kicks == kicks)
        if (pthread_cond_timedwait(&f->ingest_cond, &f->mu, &ts) == ETIMEDOUT)
            break;
    *seen = f->ingested;
    (void)pthread_mutex_unlock(&f->mu);
}
