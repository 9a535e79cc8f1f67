/* The scraper service's life after start: keep the configuration current,
 * scrape at start and every ttl, hand items to the outbox, and publish the
 * last run for GET /status.
 *
 * Threading: scr_ctx_loop runs on the main thread; the status and health
 * handlers run on HTTP server threads and read the shared state under mu;
 * the outbox drainer has its own thread. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "shared/consul.h"
#include "shared/dsl.h"
#include "shared/extract.h"
#include "shared/http_server.h"
#include "shared/kv_watch.h"
#include "shared/log.h"
#include "shared/metrics.h"
#include "shared/redis.h"
#include "shared/xalloc.h"
#include "scraper.h"

struct peer {
    const char *fixed; /* explicit URL from env, or NULL */
    struct sh_discovery *d;
    const char *name;
};

struct scr_ctx {
    const struct scr_config *cfg;
    struct sh_redis *redis;
    struct sh_consul *consul;
    struct peer ds, cd;
    struct scr_source *source;
    struct scr_outbox *outbox;
    struct sh_metrics *metrics;
    /* configuration (main thread) */
    json_t *doc;
    struct sh_dsl *dsl;
    long version;
    struct scr_fetcher *fetcher;
    struct scr_validators *validators;
    char *id, *collection; /* also read by handlers under mu */
    /* status (under mu) */
    pthread_mutex_t mu;
    json_t *last_run;
    int running, config_cached;
    int waiting;      /* a spare waiting for a claim */
    int just_loaded;  /* main thread: the loop's first round need not reload */
    long claim_tries; /* claims tried while waiting */
    long runs;
    double next_run;
    char last_config_error[512];
    struct sh_metric *m_runs, *m_items, *m_pages_ok, *m_pages_nm, *m_pages_fail, *m_dur;
};

static char *peer_url(void *arg, struct sh_err *err)
{
    struct peer *p = arg;
    if (p->fixed)
        return sh_xstrdup(p->fixed);
    if (!p->d) {
        sh_err_set(err, SH_ENOTFOUND, "%s: no URL and no Consul", p->name);
        return NULL;
    }
    char *u = NULL;
    if (sh_discovery_pick(p->d, 2000, &u, err) < 0)
        return NULL;
    return u;
}

struct scr_ctx *scr_ctx_new(const struct scr_config *cfg, struct sh_consul *consul,
                            const char *api_token, struct sh_err *err)
{
    struct sh_redis *r = sh_redis_new(cfg->redis_url, err);
    if (!r)
        return NULL;
    struct scr_ctx *c = sh_xcalloc(1, sizeof(*c));
    c->cfg = cfg;
    c->redis = r;
    c->consul = consul;
    (void)pthread_mutex_init(&c->mu, NULL);
    c->ds.name = "datasource";
    c->cd.name = "config-discovery";
    c->ds.fixed = cfg->datasource_url && *cfg->datasource_url ? cfg->datasource_url : NULL;
    c->cd.fixed = cfg->configd_url && *cfg->configd_url ? cfg->configd_url : NULL;
    if (consul && !c->ds.fixed)
        c->ds.d = sh_discovery_new(consul, "datasource", NULL);
    if (consul && !c->cd.fixed)
        c->cd.d = sh_discovery_new(consul, "config-discovery", NULL);
    struct scr_source_opts so = {
        .config_id = cfg->config_id,
        .container = cfg->container,
        .api_token = api_token,
        .configd = peer_url,
        .configd_arg = &c->cd,
    };
    c->source = scr_source_new(r, &so);
    c->version = -1;
    return c;
}

void scr_ctx_free(struct scr_ctx *c)
{
    if (!c)
        return;
    scr_outbox_free(c->outbox);
    sh_discovery_free(c->ds.d);
    sh_discovery_free(c->cd.d);
    scr_source_free(c->source);
    scr_fetcher_free(c->fetcher);
    scr_validators_free(c->validators);
    sh_dsl_free(c->dsl);
    json_decref(c->doc);
    json_decref(c->last_run);
    free(c->id);
    free(c->collection);
    sh_redis_free(c->redis);
    (void)pthread_mutex_destroy(&c->mu);
    free(c);
}

const char *scr_ctx_config_id(const struct scr_ctx *c)
{
    return c->id;
}

const char *scr_ctx_collection(const struct scr_ctx *c)
{
    return c->collection;
}

static void config_error(struct scr_ctx *c, const char *msg)
{
    (void)pthread_mutex_lock(&c->mu);
    snprintf(c->last_config_error, sizeof(c->last_config_error), "%s", msg);
    (void)pthread_mutex_unlock(&c->mu);
}

/* Compiles doc when its version is new; keeps the previous one when invalid. */
static int install(struct scr_ctx *c, json_t *doc, int cached, struct sh_err *err)
{
    json_t *v = json_object_get(doc, "version");
    long version = json_is_integer(v) ? (long)json_integer_value(v) : 0;
    if (c->dsl && version == c->version) {
        json_decref(doc);
        (void)pthread_mutex_lock(&c->mu);
        c->config_cached = cached;
        (void)pthread_mutex_unlock(&c->mu);
        return 0;
    }
    json_t *problems = NULL;
    int np = sh_dsl_validate(doc, &problems);
    if (np > 0) {
        json_t *first = json_array_get(problems, 0);
        sh_err_set(err, SH_ECONFIG, "configuration invalid (%d problems): %s: %s", np,
                   json_string_value(json_object_get(first, "path")),
                   json_string_value(json_object_get(first, "message")));
        json_decref(problems);
        json_decref(doc);
        return -1;
    }
    json_decref(problems);
    struct sh_dsl *dsl = sh_dsl_compile(doc, err);
    if (!dsl) {
        json_decref(doc);
        return -1;
    }
    struct scr_fetch_opts base = {0};
    base.allow_private = c->cfg->allow_private;
    base.max_body = (size_t)c->cfg->max_body;
    base.retries = (int)c->cfg->retries;
    base.max_redirects = -1;
    struct scr_fetcher *f = scr_fetcher_for_dsl(dsl, &base, err);
    if (!f) {
        sh_dsl_free(dsl);
        json_decref(doc);
        return -1;
    }
    const char *id = scr_source_id(c->source);
    scr_fetcher_free(c->fetcher);
    scr_validators_free(c->validators);
    sh_dsl_free(c->dsl);
    json_decref(c->doc);
    c->fetcher = f;
    c->dsl = dsl;
    c->doc = doc;
    c->version = version;
    c->validators = scr_validators_new(c->redis, id, version);
    (void)pthread_mutex_lock(&c->mu);
    free(c->id);
    free(c->collection);
    c->id = sh_xstrdup(id ? id : "");
    c->collection = sh_xstrdup(dsl->collection);
    c->config_cached = cached;
    c->last_config_error[0] = '\0';
    (void)pthread_mutex_unlock(&c->mu);
    sh_log_info("config_loaded id=%s collection=%s version=%ld cached=%d", c->id, c->collection,
                version, cached);
    return 0;
}

int scr_ctx_load_config(struct scr_ctx *c, struct sh_err *err)
{
    int cached = 0;
    json_t *doc = scr_source_load(c->source, &cached, err);
    if (!doc) {
        config_error(c, err ? err->msg : "load failed");
        return -1;
    }
    if (install(c, doc, cached, err) < 0) {
        config_error(c, err ? err->msg : "invalid");
        return -1;
    }
    c->just_loaded = 1;
    return 0;
}

int scr_ctx_unclaimed(const struct scr_ctx *c)
{
    return scr_source_id(c->source) == NULL;
}

static void set_waiting(struct scr_ctx *c, int waiting, long tries)
{
    (void)pthread_mutex_lock(&c->mu);
    c->waiting = waiting;
    c->claim_tries = tries;
    (void)pthread_mutex_unlock(&c->mu);
}

int scr_ctx_wait_claim(struct scr_ctx *c, int (*stopping)(void), int (*sleep_ms)(long))
{
    struct sh_kv_watch rev;
    char last[SH_ERR_MSG_MAX] = "";
    long tries = 0;

    sh_kv_watch_init(&rev, c->consul, c->cfg->revision_key, c->cfg->claim_wait_s);
    set_waiting(c, 1, 0);
    sh_log_info("waiting_for_claim container=%s revision_key=%s", c->cfg->container,
                c->cfg->revision_key);
    /* The index first: a configuration posted after this look still wakes us. */
    sh_kv_watch_prime(&rev);
    while (!stopping()) {
        struct sh_err err = {0};
        tries++;
        if (scr_ctx_load_config(c, &err) == 0) {
            set_waiting(c, 0, tries);
            sh_log_info("claimed id=%s collection=%s container=%s tries=%ld", c->id, c->collection,
                        c->cfg->container, tries);
            return 0;
        }
        set_waiting(c, 1, tries);
        if (err.code == SH_ENOTFOUND) {
            sh_log_debug("claim_none_free container=%s", c->cfg->container);
            last[0] = '\0';
        } else if (strcmp(last, err.msg) != 0) {
            sh_log_warn("claim_failed container=%s error=\"%s\"", c->cfg->container, err.msg);
            snprintf(last, sizeof(last), "%s", err.msg);
        }
        if (sh_kv_watch_wait(&rev, sleep_ms) < 0)
            break;
    }
    return -1;
}

int scr_ctx_attach(struct scr_ctx *c, struct sh_metrics *m, struct sh_err *err)
{
    c->metrics = m;
    struct scr_outbox_opts oo = {
        .config_id = c->id,
        .batch_items = (size_t)c->cfg->batch_items,
        .max_batches = c->cfg->outbox_max,
        .datasource = peer_url,
        .datasource_arg = &c->ds,
        .metrics = m,
    };
    c->outbox = scr_outbox_new(c->redis, &oo);
    if (m) {
        c->m_runs = sh_metrics_counter(m, "scrapr_scraper_runs_total", "Scrape runs");
        c->m_items = sh_metrics_counter(m, "scrapr_scraper_items_total", "Items scraped");
        c->m_pages_ok = sh_metrics_counter(m, "scrapr_scraper_pages_total{outcome=\"fetched\"}",
                                           "Pages by outcome");
        c->m_pages_nm =
            sh_metrics_counter(m, "scrapr_scraper_pages_total{outcome=\"not_modified\"}", NULL);
        c->m_pages_fail =
            sh_metrics_counter(m, "scrapr_scraper_pages_total{outcome=\"failed\"}", NULL);
        c->m_dur = sh_metrics_histogram(m, "scrapr_scraper_run_seconds", "Run duration", NULL, 0);
    }
    return scr_outbox_start(c->outbox, err);
}

void scr_ctx_detach(struct scr_ctx *c)
{
    scr_outbox_stop(c->outbox);
}

static double wall_now(void)
{
    struct timespec ts;
    (void)clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* One scrape; returns -1 when its items could not be queued (Redis unreachable). */
static int run_once(struct scr_ctx *c, int (*stop)(void))
{
    (void)pthread_mutex_lock(&c->mu);
    c->running = 1;
    (void)pthread_mutex_unlock(&c->mu);
    struct scr_run_limits lim = {.max_follows = (int)c->cfg->max_follows};
    struct scr_run_result res;
    scr_run(c->dsl, c->fetcher, c->validators, &lim, stop, &res);
    struct sh_err err = {0};
    long nb = scr_outbox_enqueue(c->outbox, c->dsl->collection, c->dsl->key, res.items, &err);
    json_t *delivery;
    if (nb < 0) {
        /* Not committed: the next run fetches these pages in full again. */
        sh_log_error("outbox_enqueue_failed collection=%s items=%zu error=\"%s\"",
                     c->dsl->collection, json_array_size(res.items), err.msg);
        delivery = json_pack("{s:b, s:s}", "queued", 0, "error", err.msg);
    } else {
        scr_validators_commit(c->validators, res.validators);
        scr_outbox_kick(c->outbox);
        delivery = json_pack("{s:b, s:I}", "queued", 1, "batches", (json_int_t)nb);
    }
    (void)json_object_set_new(res.stats, "delivery", delivery);
    json_t *p = json_object_get(res.stats, "pages");
    if (c->m_runs) {
        sh_metric_inc(c->m_runs);
        sh_metric_add(c->m_items, (double)json_array_size(res.items));
        sh_metric_add(c->m_pages_ok, (double)json_integer_value(json_object_get(p, "fetched")));
        sh_metric_add(c->m_pages_nm,
                      (double)json_integer_value(json_object_get(p, "not_modified")));
        sh_metric_add(c->m_pages_fail, (double)json_integer_value(json_object_get(p, "failed")));
        sh_metric_observe(c->m_dur, json_real_value(json_object_get(res.stats, "duration_s")));
    }
    sh_log_info("run_done collection=%s items=%zu pages=%lld not_modified=%lld failed=%lld "
                "batches=%ld",
                c->dsl->collection, json_array_size(res.items),
                (long long)json_integer_value(json_object_get(p, "fetched")),
                (long long)json_integer_value(json_object_get(p, "not_modified")),
                (long long)json_integer_value(json_object_get(p, "failed")), nb);
    (void)pthread_mutex_lock(&c->mu);
    json_decref(c->last_run);
    c->last_run = json_incref(res.stats);
    c->running = 0;
    c->runs++;
    (void)pthread_mutex_unlock(&c->mu);
    scr_run_result_done(&res);
    return nb < 0 ? -1 : 0;
}

/* Waits until the scraper's Redis answers a PING (asked every 250 ms) or max_ms
 * passed; -1 when the service is stopping. */
static int wait_for_redis(struct scr_ctx *c, long max_ms, int (*sleep_ms)(long))
{
    for (long waited = 0; waited < max_ms; waited += 250) {
        struct sh_err err = {0};
        if (sh_redis_ping(c->redis, &err) == 0)
            return 0;
        if (sleep_ms(250))
            return -1;
    }
    return 0;
}

/* A failed (re)load. Returns 1 when the scraper must end: its claimed
 * configuration was deleted, so it releases the claim and exits, and its
 * restart (Docker's restart policy) waits as a spare again. */
static int load_failed(struct scr_ctx *c, const struct sh_err *err)
{
    if (err->code != SH_ENOTFOUND) {
        sh_log_warn("config_reload_failed error=\"%s\" keeping_version=%ld", err->msg, c->version);
        return 0;
    }
    if (scr_source_release(c->source)) {
        sh_log_info("claimed_config_deleted error=\"%s\": released, exiting to start again as "
                    "a spare",
                    err->msg);
        return 1;
    }
    /* deleted (CONFIG_ID fixed): stop scraping, turn unhealthy */
    sh_log_warn("config_unavailable error=\"%s\"", err->msg);
    sh_dsl_free(c->dsl);
    c->dsl = NULL;
    c->version = -1;
    (void)pthread_mutex_lock(&c->mu);
    free(c->collection);
    c->collection = NULL;
    (void)pthread_mutex_unlock(&c->mu);
    return 0;
}

static double mono_now(void)
{
    struct timespec ts;
    (void)clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Sleeps until the next run, wait_ms from now. Meanwhile each move of the
 * configuration revision (Consul; waits of at most SCRAPR_CLAIM_WAIT so a
 * stop is not held up) re-reads this scraper's configuration: a new version
 * runs at once, a deletion ends a claimed scraper, and other configurations'
 * changes leave the schedule alone. 0 = run now, -1 = stop. */
static int wait_next_run(struct scr_ctx *c, struct sh_kv_watch *w, long wait_ms,
                         int (*stopping)(void), int (*sleep_ms)(long))
{
    double deadline = mono_now() + (double)wait_ms / 1000.0;

    for (;;) {
        double left = deadline - mono_now();
        if (stopping())
            return -1;
        if (left <= 0)
            return 0;
        /* (without a known index the watch re-learns it and sleeps one chunk) */
        if (!w->consul || left < 1.0)
            return sleep_ms((long)(left * 1000.0)) ? -1 : 0;
        w->wait_s = (long)left < c->cfg->claim_wait_s ? (long)left : c->cfg->claim_wait_s;
        int rc = sh_kv_watch_wait(w, sleep_ms);
        if (rc < 0)
            return -1;
        if (rc == 0)
            continue;
        long before = c->version;
        struct sh_err err = {0};
        if (scr_ctx_load_config(c, &err) < 0) {
            if (load_failed(c, &err))
                return -1;
            continue;
        }
        if (c->version != before) {
            sh_log_info("config_changed id=%s version=%ld (was %ld): running now", c->id,
                        c->version, before);
            return 0;
        }
    }
}

void scr_ctx_loop(struct scr_ctx *c, int (*stopping)(void), int (*sleep_ms)(long))
{
    struct sh_kv_watch rev;

    sh_kv_watch_init(&rev, c->consul, c->cfg->revision_key, c->cfg->claim_wait_s);
    sh_kv_watch_prime(&rev);
    while (!stopping()) {
        struct sh_err err = {0};
        /* Right after a load (start, claim, change) scrape at once: no second fetch. */
        if (c->just_loaded)
            c->just_loaded = 0;
        else if (scr_ctx_load_config(c, &err) < 0 && load_failed(c, &err))
            break;
        long wait_ms = 5000;
        if (c->dsl) {
            long interval =
                c->dsl->ttl > c->cfg->min_interval_s ? c->dsl->ttl : c->cfg->min_interval_s;
            wait_ms = interval * 1000;
            /* Items not queued are not lost (validators were not committed, so the
             * pages are fetched in full again) but they must not wait a whole ttl:
             * a freshly spawned scraper often finishes before its Redis answers.
             * Run again as soon as Redis does (asked every 250 ms), at most a ttl on. */
            if (run_once(c, stopping) < 0) {
                if (wait_for_redis(c, wait_ms, sleep_ms) < 0)
                    break;
                wait_ms = 0;
            }
        }
        (void)pthread_mutex_lock(&c->mu);
        c->next_run = wall_now() + (double)wait_ms / 1000.0;
        (void)pthread_mutex_unlock(&c->mu);
        if (wait_next_run(c, &rev, wait_ms, stopping, sleep_ms) < 0)
            break;
    }
}

void scr_status_handler(struct sh_http_req *req, struct sh_http_resp *resp, void *arg)
{
    (void)req;
    struct scr_ctx *c = arg;
    struct scr_outbox_stats os = {0};
    if (c->outbox)
        scr_outbox_stats(c->outbox, &os);
    (void)pthread_mutex_lock(&c->mu);
    char next[40] = "";
    if (c->next_run > 0)
        scr_iso_time(c->next_run, next, sizeof(next));
    json_t *body = json_pack(
        "{s:s?, s:I, s:s?, s:s?, s:I, s:b, s:s, s:I, s:O?, s:s?, s:s?, s:{s:I, s:I, s:I, s:I, "
        "s:I, s:I, s:s?}}",
        "container", c->cfg->container, "claim_tries", (json_int_t)c->claim_tries, "config_id",
        c->id, "collection", c->collection, "version", (json_int_t)c->version, "config_cached",
        c->config_cached, "state",
        c->waiting   ? "waiting_for_claim"
        : c->running ? "running"
                     : "idle",
        "runs", (json_int_t)c->runs, "last_run", c->last_run, "next_run", next[0] ? next : NULL,
        "config_error", c->last_config_error[0] ? c->last_config_error : NULL, "outbox", "pending",
        (json_int_t)os.pending, "enqueued", (json_int_t)os.enqueued, "delivered",
        (json_int_t)os.delivered, "duplicates", (json_int_t)os.duplicates, "dead",
        (json_int_t)os.dead, "refused", (json_int_t)os.refused, "last_error",
        os.last_error[0] ? os.last_error : NULL);
    (void)pthread_mutex_unlock(&c->mu);
    if (!body) {
        sh_http_resp_error(resp, 500, NULL, "status unavailable");
        return;
    }
    sh_http_resp_json(resp, 200, body);
}

int scr_health(json_t *checks, void *arg)
{
    struct scr_ctx *c = arg;
    struct sh_err err = {0};
    int ok = 1;
    if (sh_redis_ping(c->redis, &err) < 0) {
        (void)json_object_set_new(checks, "redis", json_string(err.msg));
        ok = 0;
    } else {
        (void)json_object_set_new(checks, "redis", json_string("ok"));
    }
    (void)pthread_mutex_lock(&c->mu);
    int loaded = c->collection != NULL, waiting = c->waiting;
    (void)pthread_mutex_unlock(&c->mu);
    /* A spare is healthy while it waits: it is ready to take a configuration. */
    (void)json_object_set_new(checks, "config",
                              json_string(waiting  ? "waiting for a claim"
                                          : loaded ? "ok"
                                                   : "not loaded"));
    return ok && (loaded || waiting) ? 0 : -1;
}
