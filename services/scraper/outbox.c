/* The outbox: every batch of items goes to a Redis list first and leaves it
 * only after the datasource accepted it (2xx), so neither a datasource outage
 * nor a kill -9 of the scraper loses an item; the datasource's batch_id dedup
 * makes the resulting at-least-once delivery exactly once.
 *
 *   enqueue: RPUSH scrapr:outbox:<config_id> batch1 batch2 ...   (one command)
 *   drain:   LINDEX 0 -> POST /items -> 2xx -> LPOP   (in order, one at a time)
 *
 * Why one batch at a time: order matters to the datasource (a later batch may
 * hold a newer value of the same key), and LPOP must remove exactly the batch
 * that was acknowledged. One drainer per outbox (drain_mu), so the head cannot
 * change between LINDEX and LPOP; enqueue only appends at the tail.
 *
 * Threading: enqueue from the scrape thread, drain on the drainer thread (or
 * a caller); sh_redis serialises commands; mu guards stats and the wake-up. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "shared/http_client.h"
#include "shared/log.h"
#include "shared/metrics.h"
#include "shared/redis.h"
#include "shared/xalloc.h"
#include "scraper.h"

struct scr_outbox {
    struct sh_redis *redis;
    struct scr_outbox_opts o;
    char *config_id;
    char *list, *dead;
    char *token;
    pthread_mutex_t drain_mu;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int kicked, stopping, started;
    pthread_t thread;
    struct scr_outbox_stats st;
    struct sh_metric *m_pending, *m_delivered, *m_refused, *m_dead, *m_dup;
};

struct scr_outbox *scr_outbox_new(struct sh_redis *r, const struct scr_outbox_opts *opts)
{
    struct scr_outbox *o = sh_xcalloc(1, sizeof(*o));
    o->redis = r;
    o->o = *opts;
    o->config_id = sh_xstrdup(opts->config_id);
    o->o.config_id = o->config_id;
    o->token = opts->api_token && *opts->api_token ? sh_xstrdup(opts->api_token) : NULL;
    o->o.api_token = o->token;
    if (o->o.batch_items == 0)
        o->o.batch_items = 500;
    if (o->o.max_batches <= 0)
        o->o.max_batches = 10000;
    if (o->o.timeout_ms <= 0)
        o->o.timeout_ms = 15000;
    o->list = sh_xasprintf("scrapr:outbox:%s", o->config_id);
    o->dead = sh_xasprintf("scrapr:outbox:%s:dead", o->config_id);
    (void)pthread_mutex_init(&o->drain_mu, NULL);
    (void)pthread_mutex_init(&o->mu, NULL);
    (void)pthread_cond_init(&o->cv, NULL);
    if (o->o.metrics) {
        struct sh_metrics *m = o->o.metrics;
        o->m_pending = sh_metrics_gauge(m, "scrapr_scraper_outbox_batches",
                                        "Batches waiting in the Redis outbox");
        o->m_delivered = sh_metrics_counter(m, "scrapr_scraper_batches_delivered_total",
                                            "Batches accepted by the datasource");
        o->m_dup = sh_metrics_counter(m, "scrapr_scraper_batches_duplicate_total",
                                      "Batches the datasource had already stored (replays)");
        o->m_refused = sh_metrics_counter(m, "scrapr_scraper_batches_refused_total",
                                          "Batches refused because the outbox was full");
        o->m_dead = sh_metrics_counter(m, "scrapr_scraper_batches_dead_total",
                                       "Batches the datasource rejected (moved to :dead)");
    }
    return o;
}

void scr_outbox_stop(struct scr_outbox *o)
{
    if (!o || !o->started)
        return;
    (void)pthread_mutex_lock(&o->mu);
    o->stopping = 1;
    (void)pthread_cond_signal(&o->cv);
    (void)pthread_mutex_unlock(&o->mu);
    (void)pthread_join(o->thread, NULL);
    o->started = 0;
}

void scr_outbox_free(struct scr_outbox *o)
{
    if (!o)
        return;
    scr_outbox_stop(o);
    (void)pthread_cond_destroy(&o->cv);
    (void)pthread_mutex_destroy(&o->mu);
    (void)pthread_mutex_destroy(&o->drain_mu);
    free(o->list);
    free(o->dead);
    free(o->token);
    free(o->config_id);
    free(o);
}

static void random_hex(char out[33])
{
    unsigned char b[16];
    size_t got = 0;
    while (got < sizeof(b)) {
        ssize_t n = getrandom(b + got, sizeof(b) - got, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            abort(); /* no entropy source: cannot make unique batch ids */
        }
        got += (size_t)n;
    }
    static const char hx[] = "0123456789abcdef";
    for (size_t i = 0; i < sizeof(b); i++) {
        out[2 * i] = hx[b[i] >> 4];
        out[2 * i + 1] = hx[b[i] & 15];
    }
    out[32] = '\0';
}

static void set_error(struct scr_outbox *o, const char *msg)
{
    (void)pthread_mutex_lock(&o->mu);
    snprintf(o->st.last_error, sizeof(o->st.last_error), "%s", msg);
    (void)pthread_mutex_unlock(&o->mu);
}

static void set_pending(struct scr_outbox *o, long n)
{
    (void)pthread_mutex_lock(&o->mu);
    o->st.pending = n;
    (void)pthread_mutex_unlock(&o->mu);
    if (o->m_pending)
        sh_metric_set(o->m_pending, (double)n);
}

long scr_outbox_len(struct scr_outbox *o, struct sh_err *err)
{
    redisReply *r = sh_redis_command(o->redis, err, "LLEN %s", o->list);
    if (!r)
        return -1;
    long n = -1;
    if (r->type == REDIS_REPLY_INTEGER)
        n = (long)r->integer;
    else
        sh_err_set(err, SH_EUPSTREAM, "LLEN %s: %s", o->list, r->str ? r->str : "bad reply");
    freeReplyObject(r);
    if (n >= 0)
        set_pending(o, n);
    return n;
}

long scr_outbox_enqueue(struct scr_outbox *o, const char *collection, const json_t *key,
                        const json_t *items, struct sh_err *err)
{
    size_t n = json_array_size(items);
    if (n == 0)
        return 0;
    size_t nb = (n + o->o.batch_items - 1) / o->o.batch_items;
    long len = scr_outbox_len(o, err);
    if (len < 0)
        return -1;
    if (len + (long)nb > o->o.max_batches) {
        sh_err_set(err, SH_ELIMIT,
                   "outbox full: %ld batches waiting, %zu more would pass the limit of %ld", len,
                   nb, o->o.max_batches);
        (void)pthread_mutex_lock(&o->mu);
        o->st.refused += nb;
        (void)pthread_mutex_unlock(&o->mu);
        if (o->m_refused)
            sh_metric_add(o->m_refused, (double)nb);
        return -1;
    }
    const char **argv = sh_xcalloc(nb + 2, sizeof(char *));
    size_t *argl = sh_xcalloc(nb + 2, sizeof(size_t));
    argv[0] = "RPUSH";
    argv[1] = o->list;
    argl[0] = 5;
    argl[1] = strlen(o->list);
    for (size_t b = 0; b < nb; b++) {
        json_t *data = json_array();
        for (size_t i = b * o->o.batch_items; i < n && i < (b + 1) * o->o.batch_items; i++)
            (void)json_array_append(data, json_array_get(items, i));
        char id[33];
        random_hex(id);
        json_t *k = key ? json_deep_copy(key) : json_array();
        json_t *batch =
            json_pack("{s:s, s:s, s:s, s:o, s:o}", "collection", collection, "config_id",
                      o->config_id, "batch_id", id, "key", k, "data", data);
        if (!batch)
            abort();
        char *s = json_dumps(batch, JSON_COMPACT);
        json_decref(batch);
        if (!s)
            abort();
        argv[b + 2] = s;
        argl[b + 2] = strlen(s);
    }
    redisReply *r = sh_redis_commandargv(o->redis, (int)nb + 2, argv, argl, err);
    for (size_t b = 0; b < nb; b++)
        free((char *)argv[b + 2]);
    free(argv);
    free(argl);
    if (!r)
        return -1;
    long ok = r->type == REDIS_REPLY_INTEGER;
    if (!ok)
        sh_err_set(err, SH_EUPSTREAM, "RPUSH %s: %s", o->list, r->str ? r->str : "bad reply");
    else
        set_pending(o, (long)r->integer);
    freeReplyObject(r);
    if (!ok)
        return -1;
    (void)pthread_mutex_lock(&o->mu);
    o->st.enqueued += nb;
    (void)pthread_mutex_unlock(&o->mu);
    return (long)nb;
}

static long retry_after_ms(const char *v)
{
    if (!v)
        return 0;
    char *end;
    long s = strtol(v, &end, 10);
    if (end == v || s < 0)
        return 0;
    return s > 300 ? 300000 : s * 1000;
}

/* LPOPs the head: the batch just acknowledged (one drainer; enqueue appends at the tail). */
static int pop_head(struct scr_outbox *o, const char *list, struct sh_err *err)
{
    redisReply *r = sh_redis_command(o->redis, err, "LPOP %s", list);
    if (!r)
        return -1;
    int ok = r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_NIL;
    if (!ok)
        sh_err_set(err, SH_EUPSTREAM, "LPOP %s: %s", list, r->str ? r->str : "bad reply");
    freeReplyObject(r);
    return ok ? 0 : -1;
}

long scr_outbox_drain(struct scr_outbox *o, long *ret_retry_ms, struct sh_err *err)
{
    long sent = 0;
    if (ret_retry_ms)
        *ret_retry_ms = 0;
    (void)pthread_mutex_lock(&o->drain_mu);
    for (;;) {
        redisReply *head = sh_redis_command(o->redis, err, "LINDEX %s 0", o->list);
        if (!head) {
            sent = -1;
            break;
        }
        if (head->type == REDIS_REPLY_NIL) {
            freeReplyObject(head);
            set_pending(o, 0);
            break;
        }
        if (head->type != REDIS_REPLY_STRING) {
            sh_err_set(err, SH_EUPSTREAM, "LINDEX %s: %s", o->list,
                       head->str ? head->str : "bad reply");
            freeReplyObject(head);
            sent = -1;
            break;
        }
        char *base = o->o.datasource(o->o.datasource_arg, err);
        if (!base) {
            freeReplyObject(head);
            sent = -1;
            break;
        }
        char *url = sh_xasprintf("%s/items", base);
        free(base);
        struct sh_http_client_opts co = {0};
        co.timeout_ms = o->o.timeout_ms;
        co.bearer_token = o->token;
        const char *hdrs[] = {"Content-Type: application/json", NULL};
        struct sh_http_response resp = {0};
        int rc = sh_http_request(&co, "POST", url, hdrs, head->str, head->len, &resp, err);
        free(url);
        if (rc < 0) {
            sh_err_prefix(err, "POST /items");
            freeReplyObject(head);
            sent = -1;
            break;
        }
        long status = resp.status;
        if (status >= 200 && status < 300) {
            json_t *j = json_loads(resp.body ? resp.body : "", 0, NULL);
            int dup = json_is_true(json_object_get(j, "duplicate"));
            json_decref(j);
            sh_http_response_done(&resp);
            freeReplyObject(head);
            if (pop_head(o, o->list, err) < 0) {
                sent = -1;
                break;
            }
            sent++;
            (void)pthread_mutex_lock(&o->mu);
            o->st.delivered++;
            if (dup)
                o->st.duplicates++;
            (void)pthread_mutex_unlock(&o->mu);
            if (o->m_delivered)
                sh_metric_inc(o->m_delivered);
            if (dup && o->m_dup)
                sh_metric_inc(o->m_dup);
            continue;
        }
        if (status >= 400 && status < 500 && status != 408 && status != 429 && status != 401 &&
            status != 403) {
            /* The datasource will never take this batch: park it, visibly. */
            sh_log_error("outbox_batch_rejected status=%ld list=%s body=%.200s", status, o->list,
                         resp.body ? resp.body : "");
            redisReply *mv =
                sh_redis_command(o->redis, err, "RPUSH %s %b", o->dead, head->str, head->len);
            freeReplyObject(head);
            sh_http_response_done(&resp);
            if (!mv) {
                sent = -1;
                break;
            }
            freeReplyObject(mv);
            if (pop_head(o, o->list, err) < 0) {
                sent = -1;
                break;
            }
            (void)pthread_mutex_lock(&o->mu);
            o->st.dead++;
            (void)pthread_mutex_unlock(&o->mu);
            if (o->m_dead)
                sh_metric_inc(o->m_dead);
            continue;
        }
        sh_err_set(err, SH_EUPSTREAM, "POST /items: HTTP %ld %.200s", status,
                   resp.body ? resp.body : "");
        if (ret_retry_ms)
            *ret_retry_ms = retry_after_ms(resp.retry_after);
        sh_http_response_done(&resp);
        freeReplyObject(head);
        sent = -1;
        break;
    }
    (void)pthread_mutex_unlock(&o->drain_mu);
    if (sent < 0)
        set_error(o, err ? err->msg : "drain failed");
    else
        (void)scr_outbox_len(o, NULL);
    return sent;
}

static void *drainer(void *arg)
{
    struct scr_outbox *o = arg;
    long backoff = 0;
    for (;;) {
        struct sh_err err = {0};
        long retry = 0;
        long n = scr_outbox_drain(o, &retry, &err);
        long wait_ms;
        if (n < 0) {
            backoff = backoff ? backoff * 2 : 1000;
            if (backoff > 30000)
                backoff = 30000;
            wait_ms = retry > 0 ? retry : backoff;
            sh_log_warn("outbox_drain_failed error=\"%s\" retry_ms=%ld", err.msg, wait_ms);
        } else {
            if (n > 0)
                sh_log_info("outbox_drained batches=%ld", n);
            backoff = 0;
            wait_ms = 1000;
        }
        struct timespec ts;
        (void)clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += wait_ms / 1000;
        ts.tv_nsec += (wait_ms % 1000) * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        (void)pthread_mutex_lock(&o->mu);
        while (!o->stopping && !o->kicked) {
            if (pthread_cond_timedwait(&o->cv, &o->mu, &ts) == ETIMEDOUT)
                break;
        }
        int stop = o->stopping;
        int kicked = o->kicked;
        o->kicked = 0;
        (void)pthread_mutex_unlock(&o->mu);
        if (stop)
            break;
        if (kicked && n < 0)
            backoff = 0; /* new work: try again now, the datasource may be back */
    }
    return NULL;
}

int scr_outbox_start(struct scr_outbox *o, struct sh_err *err)
{
    int rc = pthread_create(&o->thread, NULL, drainer, o);
    if (rc != 0) {
        sh_err_set(err, SH_EIO, "pthread_create: %s", strerror(rc));
        return -1;
    }
    o->started = 1;
    return 0;
}

void scr_outbox_kick(struct scr_outbox *o)
{
    (void)pthread_mutex_lock(&o->mu);
    o->kicked = 1;
    (void)pthread_cond_signal(&o->cv);
    (void)pthread_mutex_unlock(&o->mu);
}

void scr_outbox_stats(struct scr_outbox *o, struct scr_outbox_stats *ret)
{
    (void)pthread_mutex_lock(&o->mu);
    *ret = o->st;
    (void)pthread_mutex_unlock(&o->mu);
}
