/* One scrape run over a compiled configuration:
 *
 *   queue = [source.url]; visited = {}
 *   while queue and pages < limit:
 *       fetch (conditional when we know validators) -> 304: reuse stored next links
 *       extract (shared/extract.h) -> fill follow slots: unique URLs fetched
 *       concurrently, each linked page fetched once per run (follow cache)
 *       items += page items; queue += next links not yet visited (else: a cycle)
 *
 * Items are not sent from here: the caller enqueues them in the outbox and
 * then commits the validators, so a 304 never hides undelivered items.
 * Single-threaded; the fetcher does the concurrency. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "shared/dsl.h"
#include "shared/extract.h"
#include "shared/redis.h"
#include "shared/xalloc.h"
#include "scraper.h"

/* ---- validators ---------------------------------------------------------- */

struct scr_validators {
    json_t *mem;
    struct sh_redis *redis;
    char *key;
};

struct scr_validators *scr_validators_new(struct sh_redis *r, const char *config_id, long version)
{
    struct scr_validators *v = sh_xcalloc(1, sizeof(*v));
    v->mem = json_object();
    v->redis = r;
    v->key = sh_xasprintf("scrapr:validators:%s:%ld", config_id ? config_id : "once", version);
    return v;
}

void scr_validators_free(struct scr_validators *v)
{
    if (!v)
        return;
    json_decref(v->mem);
    free(v->key);
    free(v);
}

/* Borrowed record for url, or NULL. Reads through to Redis after a restart. */
static json_t *validators_get(struct scr_validators *v, const char *url)
{
    if (!v)
        return NULL;
    json_t *rec = json_object_get(v->mem, url);
    if (rec || !v->redis)
        return rec;
    redisReply *r = sh_redis_command(v->redis, NULL, "HGET %s %s", v->key, url);
    if (r && r->type == REDIS_REPLY_STRING) {
        json_t *j = json_loadb(r->str, r->len, 0, NULL);
        if (json_is_object(j))
            (void)json_object_set_new(v->mem, url, j);
        else
            json_decref(j);
    }
    if (r)
        freeReplyObject(r);
    return json_object_get(v->mem, url);
}

void scr_validators_commit(struct scr_validators *v, const json_t *updates)
{
    const char *url;
    json_t *rec;
    if (!v)
        return;
    json_object_foreach((json_t *)updates, url, rec)
    {
        (void)json_object_set(v->mem, url, rec);
        if (!v->redis)
            continue;
        char *txt = json_dumps(rec, JSON_COMPACT);
        if (!txt)
            continue;
        redisReply *r = sh_redis_command(v->redis, NULL, "HSET %s %s %s", v->key, url, txt);
        if (r)
            freeReplyObject(r); /* losing one only costs a re-parse later */
        free(txt);
    }
}

/* ---- fetcher from a configuration ---------------------------------------- */

struct scr_fetcher *scr_fetcher_for_dsl(const struct sh_dsl *dsl, const struct scr_fetch_opts *base,
                                        struct sh_err *err)
{
    struct scr_fetch_opts o = *base;
    size_t nh = json_object_size(dsl->headers), i = 0;
    char **hdrs = sh_xcalloc(nh + 1, sizeof(char *));
    const char *name;
    json_t *val;
    json_object_foreach(dsl->headers, name, val)
    {
        hdrs[i++] =
            sh_xasprintf("%s: %s", name, json_string_value(val) ? json_string_value(val) : "");
    }
    o.headers = (const char *const *)hdrs;
    if (dsl->cookies)
        o.cookies = dsl->cookies;
    if (dsl->user_agent)
        o.user_agent = dsl->user_agent;
    if (dsl->timeout > 0)
        o.timeout_ms = (long)dsl->timeout * 1000;
    o.rate = dsl->politeness.rate;
    o.burst = dsl->politeness.burst;
    o.ignore_robots = base->ignore_robots || !dsl->politeness.robots;
    if (dsl->politeness.concurrency > 0)
        o.max_concurrency = dsl->politeness.concurrency;
    struct scr_fetcher *f = scr_fetcher_new(&o, err);
    for (i = 0; i < nh; i++)
        free(hdrs[i]);
    free(hdrs);
    return f;
}

void scr_iso_time(double t, char *buf, size_t len)
{
    time_t s = (time_t)t;
    struct tm tm;
    if (!gmtime_r(&s, &tm) || strftime(buf, len, "%Y-%m-%dT%H:%M:%S", &tm) == 0) {
        snprintf(buf, len, "1970-01-01T00:00:00Z");
        return;
    }
    size_t n = strlen(buf);
    snprintf(buf + n, len - n, ".%03dZ", (int)((t - floor(t)) * 1000));
}

static double wall_now(void)
{
    struct timespec ts;
    (void)clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- the run ------------------------------------------------------------- */

/* A linked page fetched during this run (raw bytes: any charset). */
struct follow_page {
    char *body; /* NULL when error is set */
    size_t len;
    char *ctype, *url, *error;
};

struct run {
    const struct sh_dsl *dsl;
    struct scr_fetcher *f;
    const struct scr_run_limits *lim;
    int (*stop)(void);
    json_t *errors;
    json_t *follow_index; /* url -> index into follows */
    struct follow_page *follows;
    size_t nfollows, cap_follows;
    long pages, not_modified, failed, follows_fetched, follows_failed, follows_cached, cycles;
};

static void add_error(struct run *r, const char *url, const char *msg)
{
    if (json_array_size(r->errors) >= (size_t)r->lim->max_errors)
        (void)json_array_remove(r->errors, 0); /* keep the last N */
    (void)json_array_append_new(
        r->errors, json_pack("{s:s, s:s}", "url", url ? url : "", "error", msg ? msg : ""));
}

static const char *fetch_failure(const struct scr_fetch_result *res, char *buf, size_t len)
{
    if (res->outcome == SCR_FETCH_OK) {
        snprintf(buf, len, "HTTP %ld", res->status);
        return buf;
    }
    snprintf(buf, len, "%s: %s", scr_fetch_outcome_name(res->outcome), res->err.msg);
    return buf;
}

/* Fills every pending follow slot of x, fetching each distinct URL once per run. */
static void fill_follows(struct run *r, struct sh_extract *x)
{
    for (;;) {
        size_t n = sh_extract_follow_count(x);
        /* distinct uncached URLs among pending slots */
        json_t *want = json_object();
        for (size_t i = 0; i < n; i++) {
            if (!sh_extract_follow_pending(x, i))
                continue;
            const char *u = sh_extract_follow_url(x, i);
            if (!json_object_get(r->follow_index, u))
                (void)json_object_set_new(want, u, json_true());
        }
        size_t nw = json_object_size(want);
        long budget = r->lim->max_follows - r->follows_fetched - r->follows_failed;
        if (nw > 0 && budget > 0) {
            if ((long)nw > budget)
                nw = (size_t)budget;
            struct scr_fetch_req *reqs = sh_xcalloc(nw, sizeof(*reqs));
            struct scr_fetch_result *res = sh_xcalloc(nw, sizeof(*res));
            size_t k = 0;
            const char *u;
            json_t *dummy;
            json_object_foreach(want, u, dummy)
            {
                if (k == nw)
                    break;
                reqs[k++].url = u;
            }
            scr_fetch_many(r->f, reqs, nw, res, r->stop);
            for (k = 0; k < nw; k++) {
                if (r->nfollows == r->cap_follows) {
                    r->cap_follows = r->cap_follows ? 2 * r->cap_follows : 64;
                    r->follows = sh_xrealloc(r->follows, r->cap_follows * sizeof(*r->follows));
                }
                struct follow_page *fp = &r->follows[r->nfollows];
                memset(fp, 0, sizeof(*fp));
                char eb[600];
                if (res[k].outcome == SCR_FETCH_OK && res[k].status >= 200 && res[k].status < 300) {
                    fp->body = res[k].body;
                    fp->len = res[k].body_len;
                    fp->ctype = res[k].content_type;
                    fp->url = res[k].url;
                    res[k].body = res[k].content_type = res[k].url = NULL;
                    r->follows_fetched++;
                } else {
                    fp->error = sh_xstrdup(fetch_failure(&res[k], eb, sizeof(eb)));
                    r->follows_failed++;
                    add_error(r, reqs[k].url, fp->error);
                }
                (void)json_object_set_new(r->follow_index, reqs[k].url,
                                          json_integer((json_int_t)r->nfollows++));
                scr_fetch_result_done(&res[k]);
            }
            free(reqs);
            free(res);
        }
        json_decref(want);
        /* fill from the cache; what is still missing is over budget */
        int progressed = 0;
        n = sh_extract_follow_count(x);
        for (size_t i = 0; i < n; i++) {
            if (!sh_extract_follow_pending(x, i))
                continue;
            const char *u = sh_extract_follow_url(x, i);
            json_t *e = json_object_get(r->follow_index, u);
            if (!e) {
                sh_extract_fail(x, i, "follow limit reached");
                continue;
            }
            const struct follow_page *fp = &r->follows[json_integer_value(e)];
            if (fp->error) {
                sh_extract_fail(x, i, fp->error);
                continue;
            }
            struct sh_err err = {0};
            if (sh_extract_fill(x, i, fp->body, fp->len, fp->url, fp->ctype, &err) < 0)
                add_error(r, u, err.msg);
            r->follows_cached++;
            progressed = 1;
        }
        if (!progressed || (r->stop && r->stop()))
            break;
        /* a fill may have added nested follows: go round again */
        int more = 0;
        n = sh_extract_follow_count(x);
        for (size_t i = 0; i < n && !more; i++)
            more = sh_extract_follow_pending(x, i);
        if (!more)
            break;
    }
}

void scr_run(const struct sh_dsl *dsl, struct scr_fetcher *f, struct scr_validators *v,
             const struct scr_run_limits *lim_in, int (*stop)(void), struct scr_run_result *ret)
{
    struct scr_run_limits lim = lim_in ? *lim_in : (struct scr_run_limits){0};
    if (lim.max_follows <= 0)
        lim.max_follows = 2000;
    if (lim.max_errors <= 0)
        lim.max_errors = 20;
    struct run r = {.dsl = dsl, .f = f, .lim = &lim, .stop = stop};
    r.errors = json_array();
    r.follow_index = json_object();
    memset(ret, 0, sizeof(*ret));
    ret->items = json_array();
    ret->validators = json_object();
    json_t *fields = json_object();
    json_t *visited = json_object();
    json_t *queue = json_array();
    double t0 = wall_now();
    (void)json_array_append_new(queue, json_string(dsl->url));
    scr_fetcher_forget_robots(f); /* robots.txt once per host per run */
    int limit = dsl->limit > 0 ? dsl->limit : 1;

    while (json_array_size(queue) > 0 && r.pages < limit && !(stop && stop())) {
        char *url = sh_xstrdup(json_string_value(json_array_get(queue, 0)));
        (void)json_array_remove(queue, 0);
        if (json_object_get(visited, url)) {
            r.cycles++;
            free(url);
            continue;
        }
        (void)json_object_set_new(visited, url, json_true());
        int first = r.pages == 0;
        r.pages++;
        json_t *rec = validators_get(v, url);
        struct scr_fetch_req req = {.url = url};
        if (first && dsl->method && strcmp(dsl->method, "GET") != 0) {
            req.method = dsl->method;
            req.body = dsl->body;
        } else if (rec) {
            req.etag = json_string_value(json_object_get(rec, "etag"));
            req.last_modified = json_string_value(json_object_get(rec, "last_modified"));
        }
        struct scr_fetch_result res;
        scr_fetch_one(f, &req, &res, stop);
        json_t *next = NULL;
        if (res.outcome == SCR_FETCH_NOT_MODIFIED) {
            r.not_modified++;
            next = json_incref(json_object_get(rec, "next"));
        } else if (res.outcome != SCR_FETCH_OK || res.status < 200 || res.status >= 300) {
            char eb[600];
            r.failed++;
            add_error(&r, url, fetch_failure(&res, eb, sizeof(eb)));
            if (first)
                ret->failed = 1;
        } else {
            struct sh_err err = {0};
            struct sh_extract *x =
                sh_extract_page(dsl, res.body, res.body_len, res.url, res.content_type, &err);
            if (!x) {
                r.failed++;
                add_error(&r, url, err.msg);
                if (first)
                    ret->failed = 1;
            } else {
                fill_follows(&r, x);
                json_t *items = sh_extract_items(x);
                (void)json_array_extend(ret->items, items);
                next = json_incref(sh_extract_next_urls(x));
                sh_extract_stats_merge(fields, x);
                if (res.etag || res.last_modified) {
                    json_t *nrec = json_pack("{s:s?, s:s?, s:O?}", "etag", res.etag,
                                             "last_modified", res.last_modified, "next", next);
                    if (nrec)
                        (void)json_object_set_new(ret->validators, url, nrec);
                }
                sh_extract_free(x);
            }
        }
        size_t i;
        json_t *nu;
        json_array_foreach(next, i, nu)
        {
            const char *s = json_string_value(nu);
            if (!s)
                continue;
            if (json_object_get(visited, s))
                r.cycles++; /* a next link back to a page we saw: the cycle ends here */
            else
                (void)json_array_append(queue, nu);
        }
        json_decref(next);
        scr_fetch_result_done(&res);
        free(url);
    }
    double t1 = wall_now();
    char s0[40], s1[40];
    scr_iso_time(t0, s0, sizeof(s0));
    scr_iso_time(t1, s1, sizeof(s1));
    json_t *fstats = json_object_get(fields, "fields");
    ret->stats =
        json_pack("{s:s, s:s, s:f, s:{s:I, s:I, s:I}, s:{s:I, s:I, s:I}, s:I, s:I, s:O, s:o}",
                  "started_at", s0, "ended_at", s1, "duration_s", t1 - t0, "pages", "fetched",
                  (json_int_t)(r.pages - r.failed - r.not_modified), "not_modified",
                  (json_int_t)r.not_modified, "failed", (json_int_t)r.failed, "follows", "fetched",
                  (json_int_t)r.follows_fetched, "failed", (json_int_t)r.follows_failed, "cached",
                  (json_int_t)r.follows_cached, "cycles", (json_int_t)r.cycles, "items",
                  (json_int_t)json_array_size(ret->items), "fields",
                  fstats ? fstats : json_object(), "errors", r.errors);
    if (!fstats)
        json_decref(json_object_get(ret->stats, "fields"));
    json_decref(fields);
    json_decref(visited);
    json_decref(queue);
    json_decref(r.follow_index);
    for (size_t i = 0; i < r.nfollows; i++) {
        free(r.follows[i].body);
        free(r.follows[i].ctype);
        free(r.follows[i].url);
        free(r.follows[i].error);
    }
    free(r.follows);
}

void scr_run_result_done(struct scr_run_result *r)
{
    if (!r)
        return;
    json_decref(r->items);
    json_decref(r->stats);
    json_decref(r->validators);
    memset(r, 0, sizeof(*r));
}
