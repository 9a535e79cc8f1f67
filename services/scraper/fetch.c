/* Fetching on libcurl's multi interface: many transfers in flight on one
 * thread, each a small state machine:
 *
 *   WAIT --robots unknown--> ROBOTS (a robots.txt job for the host runs first)
 *   WAIT --robots deny-----> done (ROBOTS_DENIED)
 *   WAIT --no token--------> WAIT until the host's bucket refills
 *   WAIT --resolve+guard---> ACTIVE (address pinned with CURLOPT_RESOLVE) or REFUSED
 *   ACTIVE --3xx-----------> WAIT with the Location URL (every hop re-checked)
 *   ACTIVE --429/5xx/error-> WAIT after backoff / Retry-After, while retries last
 *   ACTIVE --else----------> done
 *
 * Why manual redirects: curl's automatic following would connect to whatever a
 * hop names without our SSRF check or robots.txt. Why our own resolution: the
 * address we check must be the address curl connects to (no DNS rebinding).
 * getaddrinfo() blocks the loop briefly; acceptable for a scraper whose hosts
 * are few and cached by the system resolver.
 *
 * Threading: a fetcher is used by one thread at a time. Host state (robots.txt
 * cache, token buckets) lives as long as the fetcher, across calls. */
#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "shared/buf.h"
#include "shared/xalloc.h"
#include "scraper.h"

#define ROBOTS_MAX_BODY (512 * 1024)
#define ROBOTS_MAX_REDIRECTS 5

enum { J_WAIT, J_ROBOTS, J_ACTIVE, J_DONE };
enum { K_PAGE, K_ROBOTS };

struct host {
    char *key; /* "scheme://host:port" */
    struct scr_robots *robots;
    int64_t robots_expires;
    int robots_pending; /* a robots job for this host is running */
    double tokens;
    int64_t refill_ms;
};

struct job {
    int kind, state;
    char *url;
    const struct scr_fetch_req *req; /* page jobs only */
    struct scr_fetch_result *res;
    size_t host;
    int64_t ready_at, started_ms;
    int tries, hops;
    CURL *easy;
    struct curl_slist *hdrs, *resolve;
    struct sh_buf body;
    int toobig;
    char errbuf[CURL_ERROR_SIZE];
};

struct scr_fetcher {
    struct scr_fetch_opts o;
    char *agent_token; /* product token for robots.txt groups */
    char **headers;
    char **allow; /* allow_targets copy */
    CURLM *multi;
    struct host *hosts;
    size_t nhosts;
    struct job **jobs;
    size_t njobs, cap_jobs;
    int active;
    CURL **pool; /* reset easy handles for reuse (saves an allocation per transfer) */
    size_t npool;
    size_t pending_pages; /* page jobs of the current scr_fetch_many not done */
    uint64_t rng;
    struct scr_fetch_stats stats;
};

static int64_t now_ms(void)
{
    struct timespec ts;
    (void)clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static uint64_t rnd(struct scr_fetcher *f)
{
    /* xorshift64*: jitter only, not security */
    f->rng ^= f->rng >> 12;
    f->rng ^= f->rng << 25;
    f->rng ^= f->rng >> 27;
    return f->rng * 2685821657736338717ULL;
}

struct scr_fetcher *scr_fetcher_new(const struct scr_fetch_opts *opts, struct sh_err *err)
{
    static int curl_ready;
    if (!curl_ready) {
        CURLcode rc = curl_global_init(CURL_GLOBAL_DEFAULT);
        if (rc != CURLE_OK) {
            sh_err_set(err, SH_EIO, "curl_global_init: %s", curl_easy_strerror(rc));
            return NULL;
        }
        curl_ready = 1;
    }
    struct scr_fetcher *f = sh_xcalloc(1, sizeof(*f));
    f->o = *opts;
    if (f->o.connect_timeout_ms <= 0)
        f->o.connect_timeout_ms = 5000;
    if (f->o.timeout_ms <= 0)
        f->o.timeout_ms = 30000;
    if (f->o.max_body == 0)
        f->o.max_body = 8u << 20;
    if (f->o.max_redirects < 0)
        f->o.max_redirects = 5;
    if (f->o.retries < 0)
        f->o.retries = 0;
    if (f->o.backoff_ms <= 0)
        f->o.backoff_ms = 500;
    if (f->o.max_retry_after_ms <= 0)
        f->o.max_retry_after_ms = 60000;
    if (f->o.robots_ttl_s <= 0)
        f->o.robots_ttl_s = 3600;
    if (f->o.burst < 1)
        f->o.burst = 1;
    if (f->o.max_concurrency <= 0)
        f->o.max_concurrency = 16;
    f->o.user_agent =
        sh_xstrdup(opts->user_agent ? opts->user_agent : "scrapr/0.1 (+https://github.com/scrapr)");
    f->o.cookies = opts->cookies ? sh_xstrdup(opts->cookies) : NULL;
    size_t nh = 0;
    while (opts->headers && opts->headers[nh])
        nh++;
    f->headers = sh_xcalloc(nh + 1, sizeof(char *));
    for (size_t i = 0; i < nh; i++)
        f->headers[i] = sh_xstrdup(opts->headers[i]);
    f->o.headers = (const char *const *)f->headers;
    size_t na = 0;
    while (opts->allow_targets && opts->allow_targets[na])
        na++;
    f->allow = sh_xcalloc(na + 1, sizeof(char *));
    for (size_t i = 0; i < na; i++)
        f->allow[i] = sh_xstrdup(opts->allow_targets[i]);
    f->o.allow_targets = (const char *const *)f->allow;
    size_t tl = strcspn(f->o.user_agent, "/ ");
    f->agent_token = sh_xstrndup(f->o.user_agent, tl);
    f->rng = (uint64_t)now_ms() ^ ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)f;
    if (f->rng == 0)
        f->rng = 88172645463325252ULL;
    f->multi = curl_multi_init();
    if (!f->multi) {
        sh_err_set(err, SH_EIO, "curl_multi_init failed");
        scr_fetcher_free(f);
        return NULL;
    }
    /* one connection per transfer in flight; politeness is the token bucket's job */
    (void)curl_multi_setopt(f->multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)f->o.max_concurrency);
    (void)curl_multi_setopt(f->multi, CURLMOPT_MAXCONNECTS, (long)f->o.max_concurrency * 2);
    return f;
}

void scr_fetcher_free(struct scr_fetcher *f)
{
    if (!f)
        return;
    for (size_t i = 0; i < f->nhosts; i++) {
        free(f->hosts[i].key);
        scr_robots_free(f->hosts[i].robots);
    }
    free(f->hosts);
    for (size_t i = 0; f->headers && f->headers[i]; i++)
        free(f->headers[i]);
    free(f->headers);
    for (size_t i = 0; f->allow && f->allow[i]; i++)
        free(f->allow[i]);
    free(f->allow);
    free((char *)f->o.user_agent);
    free((char *)f->o.cookies);
    free(f->agent_token);
    free(f->jobs);
    for (size_t i = 0; i < f->npool; i++)
        curl_easy_cleanup(f->pool[i]);
    free(f->pool);
    if (f->multi)
        (void)curl_multi_cleanup(f->multi);
    free(f);
}

const struct scr_fetch_stats *scr_fetcher_stats(const struct scr_fetcher *f)
{
    return &f->stats;
}

void scr_fetcher_forget_robots(struct scr_fetcher *f)
{
    for (size_t i = 0; i < f->nhosts; i++) {
        scr_robots_free(f->hosts[i].robots);
        f->hosts[i].robots = NULL;
    }
}

const char *scr_fetch_outcome_name(int outcome)
{
    switch (outcome) {
    case SCR_FETCH_OK:
        return "ok";
    case SCR_FETCH_NOT_MODIFIED:
        return "not_modified";
    case SCR_FETCH_ROBOTS_DENIED:
        return "robots_denied";
    case SCR_FETCH_REFUSED:
        return "refused";
    default:
        return "error";
    }
}

void scr_fetch_result_done(struct scr_fetch_result *r)
{
    if (!r)
        return;
    free(r->url);
    free(r->body);
    free(r->content_type);
    free(r->etag);
    free(r->last_modified);
    memset(r, 0, sizeof(*r));
}

/* ---- hosts: robots.txt cache and token buckets --------------------------- */

static size_t host_get(struct scr_fetcher *f, const struct scr_url *u)
{
    char *key = sh_xasprintf("%s://%s:%s", u->scheme, u->host, u->port);
    for (size_t i = 0; i < f->nhosts; i++) {
        if (strcasecmp(f->hosts[i].key, key) == 0) {
            free(key);
            return i;
        }
    }
    f->hosts = sh_xrealloc(f->hosts, (f->nhosts + 1) * sizeof(*f->hosts));
    struct host *h = &f->hosts[f->nhosts];
    memset(h, 0, sizeof(*h));
    h->key = key;
    h->tokens = f->o.burst;
    h->refill_ms = now_ms();
    return f->nhosts++;
}

/* Takes a token; returns 0, or the ms to wait for the next one. Robots'
 * Crawl-delay lowers the rate when it is stricter than the configured one. */
static int64_t bucket_take(struct scr_fetcher *f, struct host *h, int64_t now)
{
    double rate = f->o.rate;
    double cd = h->robots ? scr_robots_crawl_delay(h->robots) : 0;
    if (cd > 0 && (rate <= 0 || 1.0 / cd < rate))
        rate = 1.0 / cd;
    if (rate <= 0)
        return 0;
    double burst = cd > 0 ? 1 : f->o.burst;
    h->tokens += (double)(now - h->refill_ms) * rate / 1000.0;
    if (h->tokens > burst)
        h->tokens = burst;
    h->refill_ms = now;
    if (h->tokens >= 1) {
        h->tokens -= 1;
        return 0;
    }
    int64_t w = (int64_t)((1 - h->tokens) * 1000.0 / rate) + 1;
    return w > 0 ? w : 1;
}

/* ---- jobs ---------------------------------------------------------------- */

static struct job *job_add(struct scr_fetcher *f, int kind, const char *url)
{
    if (f->njobs == f->cap_jobs) {
        f->cap_jobs = f->cap_jobs ? f->cap_jobs * 2 : 16;
        f->jobs = sh_xrealloc(f->jobs, f->cap_jobs * sizeof(*f->jobs));
    }
    struct job *j = sh_xcalloc(1, sizeof(*j));
    j->kind = kind;
    j->state = J_WAIT;
    j->url = sh_xstrdup(url);
    j->ready_at = now_ms();
    j->started_ms = j->ready_at;
    sh_buf_init(&j->body, kind == K_ROBOTS ? ROBOTS_MAX_BODY : f->o.max_body);
    if (kind == K_ROBOTS)
        j->res = sh_xcalloc(1, sizeof(*j->res));
    f->jobs[f->njobs++] = j;
    return j;
}

#define POOL_MAX 256

static void job_release_transfer(struct scr_fetcher *f, struct job *j)
{
    if (j->easy) {
        (void)curl_multi_remove_handle(f->multi, j->easy);
        if (f->npool < POOL_MAX) {
            curl_easy_reset(j->easy);
            if (!f->pool)
                f->pool = sh_xcalloc(POOL_MAX, sizeof(*f->pool));
            f->pool[f->npool++] = j->easy;
        } else {
            curl_easy_cleanup(j->easy);
        }
        j->easy = NULL;
        f->active--;
    }
    curl_slist_free_all(j->hdrs);
    curl_slist_free_all(j->resolve);
    j->hdrs = j->resolve = NULL;
}

static void robots_complete(struct scr_fetcher *f, struct job *j);

/* Ends a job with an outcome; err may be NULL. */
static void job_finish(struct scr_fetcher *f, struct job *j, int outcome, const struct sh_err *err)
{
    struct scr_fetch_result *r = j->res;
    r->outcome = outcome;
    free(r->url);
    r->url = sh_xstrdup(j->url);
    r->redirects = j->hops;
    r->seconds = (double)(now_ms() - j->started_ms) / 1000.0;
    if (err)
        r->err = *err;
    if (outcome == SCR_FETCH_OK) {
        r->body = sh_buf_steal(&j->body, &r->body_len);
    }
    j->state = J_DONE;
    if (j->kind == K_PAGE && f->pending_pages > 0)
        f->pending_pages--;
    job_release_transfer(f, j);
    sh_buf_done(&j->body);
    if (j->kind == K_ROBOTS)
        robots_complete(f, j);
}

static void robots_complete(struct scr_fetcher *f, struct job *j)
{
    struct host *h = &f->hosts[j->host];
    struct scr_robots *rb;
    struct scr_fetch_result *r = j->res;
    /* RFC 9309 2.3.1: 4xx = no rules; 5xx or unreachable = complete disallow.
     * A refused host gets no rules here: its pages are refused on their own. */
    if (r->outcome == SCR_FETCH_OK && r->status >= 200 && r->status < 300)
        rb = scr_robots_parse(r->body ? r->body : "", r->body_len, f->agent_token);
    else if (r->outcome == SCR_FETCH_REFUSED ||
             (r->outcome == SCR_FETCH_OK && r->status >= 400 && r->status < 500))
        rb = scr_robots_all(1);
    else
        rb = scr_robots_all(0);
    scr_robots_free(h->robots);
    h->robots = rb;
    h->robots_expires = now_ms() + f->o.robots_ttl_s * 1000;
    h->robots_pending = 0;
    f->stats.robots_fetched++;
    scr_fetch_result_done(r);
    free(r);
    j->res = NULL;
}

static size_t on_write(char *p, size_t sz, size_t nm, void *ud)
{
    struct job *j = ud;
    size_t n = sz * nm;
    if (sh_buf_append(&j->body, p, n, NULL) < 0) {
        j->toobig = 1;
        return 0;
    }
    return n;
}

#define SETOPT(e, o, v)                                                                            \
    do {                                                                                           \
        if (curl_easy_setopt(e, o, v) != CURLE_OK) {                                               \
            sh_err_set(&err, SH_EIO, "curl_easy_setopt(%s) failed", #o);                           \
            goto fail;                                                                             \
        }                                                                                          \
    } while (0)

static void add_header(struct curl_slist **l, const char *h)
{
    struct curl_slist *n = curl_slist_append(*l, h);
    if (!n)
        abort();
    *l = n;
}

/* Resolves, guards and starts the transfer for j's current URL. */
static void job_start(struct scr_fetcher *f, struct job *j, const struct scr_url *u)
{
    struct sh_err err = {0};
    int g = scr_resolve_guard(f->o.allow_private, f->o.allow_targets, u, &j->resolve, &err);
    if (g == -2) {
        if (j->kind == K_PAGE)
            f->stats.refused++;
        job_finish(f, j, SCR_FETCH_REFUSED, &err);
        return;
    }
    if (g < 0) {
        job_finish(f, j, SCR_FETCH_ERROR, &err);
        return;
    }
    sh_buf_reset(&j->body);
    j->toobig = 0;
    j->errbuf[0] = '\0';
    CURL *e = f->npool > 0 ? f->pool[--f->npool] : curl_easy_init();
    if (!e) {
        sh_err_set(&err, SH_EIO, "curl_easy_init failed");
        job_finish(f, j, SCR_FETCH_ERROR, &err);
        return;
    }
    j->easy = e;
    f->active++;
    for (size_t i = 0; f->o.headers[i]; i++)
        add_header(&j->hdrs, f->o.headers[i]);
    if (j->kind == K_PAGE && j->hops == 0 && j->req) {
        if (j->req->etag && *j->req->etag) {
            char *h = sh_xasprintf("If-None-Match: %s", j->req->etag);
            add_header(&j->hdrs, h);
            free(h);
        }
        if (j->req->last_modified && *j->req->last_modified) {
            char *h = sh_xasprintf("If-Modified-Since: %s", j->req->last_modified);
            add_header(&j->hdrs, h);
            free(h);
        }
    }
    SETOPT(e, CURLOPT_URL, j->url);
    SETOPT(e, CURLOPT_PRIVATE, (void *)j);
    SETOPT(e, CURLOPT_ERRORBUFFER, j->errbuf);
    SETOPT(e, CURLOPT_NOSIGNAL, 1L);
    SETOPT(e, CURLOPT_CONNECTTIMEOUT_MS, f->o.connect_timeout_ms);
    SETOPT(e, CURLOPT_TIMEOUT_MS, f->o.timeout_ms);
    SETOPT(e, CURLOPT_ACCEPT_ENCODING, "");
    SETOPT(e, CURLOPT_USERAGENT, f->o.user_agent);
    SETOPT(e, CURLOPT_FOLLOWLOCATION, 0L);
    SETOPT(e, CURLOPT_PROTOCOLS_STR, "http,https");
    SETOPT(e, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    SETOPT(e, CURLOPT_PROXY, ""); /* a proxy would connect to the name, not our pinned address */
    SETOPT(e, CURLOPT_WRITEFUNCTION, on_write);
    SETOPT(e, CURLOPT_WRITEDATA, (void *)j);
    SETOPT(e, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)j->body.limit);
    if (j->hdrs)
        SETOPT(e, CURLOPT_HTTPHEADER, j->hdrs);
    if (j->resolve)
        SETOPT(e, CURLOPT_RESOLVE, j->resolve);
    if (j->kind == K_PAGE && j->hops == 0 && j->req && j->req->method &&
        strcmp(j->req->method, "GET") != 0) {
        SETOPT(e, CURLOPT_CUSTOMREQUEST, j->req->method);
        if (j->req->body)
            SETOPT(e, CURLOPT_POSTFIELDS, j->req->body);
    }
    if (f->o.cookies && j->kind == K_PAGE)
        SETOPT(e, CURLOPT_COOKIE, f->o.cookies);
    CURLMcode mc = curl_multi_add_handle(f->multi, e);
    if (mc != CURLM_OK) {
        sh_err_set(&err, SH_EIO, "curl_multi_add_handle: %s", curl_multi_strerror(mc));
        goto fail;
    }
    j->state = J_ACTIVE;
    j->res->attempts++;
    f->stats.requests++;
    return;
fail:
    curl_easy_cleanup(j->easy);
    j->easy = NULL;
    f->active--;
    job_finish(f, j, SCR_FETCH_ERROR, &err);
}

/* Moves a waiting job forward as far as it can go now. */
static void job_advance(struct scr_fetcher *f, struct job *j, int64_t now)
{
    struct scr_url u;
    struct sh_err err = {0};
    if (scr_url_split(j->url, &u, &err) < 0) {
        job_finish(f, j, SCR_FETCH_ERROR, &err);
        return;
    }
    j->host = host_get(f, &u);
    struct host *h = &f->hosts[j->host];
    if (j->kind == K_PAGE && !f->o.ignore_robots) {
        if (h->robots && now < h->robots_expires) {
            if (!scr_robots_allowed(h->robots, u.path)) {
                sh_err_set(&err, SH_ECONFIG, "robots.txt disallows %s", u.path);
                f->stats.robots_denied++;
                job_finish(f, j, SCR_FETCH_ROBOTS_DENIED, &err);
                goto out;
            }
        } else {
            if (!h->robots_pending) {
                char *rurl = sh_xasprintf("%s://%s:%s/robots.txt", u.scheme, u.host, u.port);
                h->robots_pending = 1;
                (void)job_add(f, K_ROBOTS, rurl); /* may move f->hosts: reload h below */
                free(rurl);
            }
            j->state = J_ROBOTS;
            goto out;
        }
    }
    j->state = J_WAIT;
    if (f->active >= f->o.max_concurrency)
        goto out;
    int64_t w = bucket_take(f, h, now);
    if (w > 0) {
        j->ready_at = now + w;
        goto out;
    }
    job_start(f, j, &u);
out:
    scr_url_done(&u);
}

static int64_t parse_retry_after(CURL *e)
{
    struct curl_header *hd;
    if (curl_easy_header(e, "Retry-After", 0, CURLH_HEADER, -1, &hd) != CURLHE_OK)
        return -1;
    const char *v = hd->value;
    char *end;
    errno = 0;
    long long s = strtoll(v, &end, 10);
    if (end != v && *end == '\0' && errno == 0 && s >= 0)
        return s > 86400 ? 86400000 : (int64_t)s * 1000;
    time_t t = curl_getdate(v, NULL);
    if (t < 0)
        return -1;
    time_t nw = time(NULL);
    return t > nw ? (int64_t)(t - nw) * 1000 : 0;
}

static char *header_dup(CURL *e, const char *name)
{
    struct curl_header *hd;
    if (curl_easy_header(e, name, 0, CURLH_HEADER, -1, &hd) != CURLHE_OK)
        return NULL;
    return sh_xstrdup(hd->value);
}

/* Schedules another attempt, or returns 0 when retries are exhausted. */
static int job_retry(struct scr_fetcher *f, struct job *j, int64_t retry_after_ms)
{
    if (j->tries >= f->o.retries)
        return 0;
    int64_t base = f->o.backoff_ms << (j->tries < 20 ? j->tries : 20);
    int64_t delay = base / 2 + (int64_t)(rnd(f) % (uint64_t)(base / 2 + 1));
    if (retry_after_ms >= 0)
        delay = retry_after_ms;
    if (delay > f->o.max_retry_after_ms)
        delay = f->o.max_retry_after_ms;
    j->tries++;
    f->stats.retries++;
    job_release_transfer(f, j);
    j->state = J_WAIT;
    j->ready_at = now_ms() + delay;
    return 1;
}

static void job_done(struct scr_fetcher *f, struct job *j, CURLcode rc)
{
    struct sh_err err = {0};
    CURL *e = j->easy;
    long status = 0;
    (void)curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
    struct scr_fetch_result *r = j->res;
    r->status = status;
    f->stats.bytes += j->body.len;
    if (rc != CURLE_OK) {
        if (j->toobig || rc == CURLE_FILESIZE_EXCEEDED) {
            sh_err_set(&err, SH_ELIMIT, "%s: body exceeds %zu bytes", j->url, j->body.limit);
            job_finish(f, j, SCR_FETCH_ERROR, &err);
            return;
        }
        int code = rc == CURLE_OPERATION_TIMEDOUT ? SH_ETIMEOUT : SH_EUPSTREAM;
        sh_err_set(&err, code, "%s: %s", j->url, j->errbuf[0] ? j->errbuf : curl_easy_strerror(rc));
        if (!job_retry(f, j, -1))
            job_finish(f, j, SCR_FETCH_ERROR, &err);
        return;
    }
    if (status == 301 || status == 302 || status == 303 || status == 307 || status == 308) {
        char *loc = NULL;
        (void)curl_easy_getinfo(e, CURLINFO_REDIRECT_URL, &loc);
        int max = j->kind == K_ROBOTS ? ROBOTS_MAX_REDIRECTS : f->o.max_redirects;
        if (loc && *loc) {
            if (j->hops >= max) {
                sh_err_set(&err, SH_ELIMIT, "%s: more than %d redirects", j->url, max);
                job_finish(f, j, SCR_FETCH_ERROR, &err);
                return;
            }
            free(j->url);
            j->url = sh_xstrdup(loc);
            j->hops++;
            job_release_transfer(f, j);
            j->state = J_WAIT;
            j->ready_at = now_ms();
            return;
        }
    }
    if (status == 429 || status == 502 || status == 503 || status == 504) {
        if (job_retry(f, j, parse_retry_after(e)))
            return;
    }
    free(r->content_type);
    free(r->etag);
    free(r->last_modified);
    char *ct = NULL;
    (void)curl_easy_getinfo(e, CURLINFO_CONTENT_TYPE, &ct);
    r->content_type = ct ? sh_xstrdup(ct) : NULL;
    r->etag = header_dup(e, "ETag");
    r->last_modified = header_dup(e, "Last-Modified");
    if (status == 304 && j->kind == K_PAGE && j->hops == 0 && j->req &&
        ((j->req->etag && *j->req->etag) || (j->req->last_modified && *j->req->last_modified)))
        job_finish(f, j, SCR_FETCH_NOT_MODIFIED, NULL);
    else
        job_finish(f, j, SCR_FETCH_OK, NULL);
}

/* Returns how many transfers completed. */
static int drain_messages(struct scr_fetcher *f)
{
    CURLMsg *m;
    int left, done = 0;
    while ((m = curl_multi_info_read(f->multi, &left))) {
        if (m->msg != CURLMSG_DONE)
            continue;
        struct job *j = NULL;
        (void)curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&j);
        if (j) {
            job_done(f, j, m->data.result);
            done++;
        }
    }
    return done;
}

static void jobs_clear(struct scr_fetcher *f)
{
    for (size_t i = 0; i < f->njobs; i++) {
        struct job *j = f->jobs[i];
        job_release_transfer(f, j);
        sh_buf_done(&j->body);
        if (j->kind == K_ROBOTS && j->res) {
            f->hosts[j->host].robots_pending = 0;
            scr_fetch_result_done(j->res);
            free(j->res);
        }
        free(j->url);
        free(j);
    }
    f->njobs = 0;
}

void scr_fetch_many(struct scr_fetcher *f, const struct scr_fetch_req *reqs, size_t n,
                    struct scr_fetch_result *res, int (*stop)(void))
{
    for (size_t i = 0; i < n; i++) {
        memset(&res[i], 0, sizeof(res[i]));
        struct job *j = job_add(f, K_PAGE, reqs[i].url ? reqs[i].url : "");
        j->req = &reqs[i];
        j->res = &res[i];
    }
    f->pending_pages = n;
    size_t lo = 0; /* jobs below lo are done */
    for (;;) {
        int64_t now = now_ms();
        int64_t next = now + 200; /* also bounds how late we notice stop() */
        if (f->pending_pages == 0 || (stop && stop()))
            break;
        while (lo < f->njobs && f->jobs[lo]->state == J_DONE)
            lo++;
        /* Why the early break: once every slot is busy, waiting jobs can only
         * move when a transfer ends, which wakes curl_multi_poll anyway; so
         * each pass costs O(transfers in flight), not O(jobs). */
        for (size_t i = lo; i < f->njobs; i++) {
            struct job *j = f->jobs[i];
            if (j->state == J_DONE || j->state == J_ACTIVE)
                continue;
            if (j->state == J_WAIT && j->ready_at > now) {
                if (j->ready_at < next)
                    next = j->ready_at;
                continue;
            }
            if (f->active >= f->o.max_concurrency)
                break;
            job_advance(f, f->jobs[i], now);
            j = f->jobs[i];
            if (j->state == J_WAIT && j->ready_at > now && j->ready_at < next)
                next = j->ready_at;
        }
        int running = 0;
        CURLMcode mc = curl_multi_perform(f->multi, &running);
        if (mc != CURLM_OK)
            break;
        if (drain_messages(f) > 0)
            continue; /* finished or redirected jobs may move on at once */
        if (f->pending_pages == 0)
            break;
        int64_t t = next - now_ms();
        if (t < 0)
            t = 0;
        mc = curl_multi_poll(f->multi, NULL, 0, (int)t, NULL);
        if (mc != CURLM_OK)
            break;
    }
    for (size_t i = 0; i < n; i++) {
        struct job *j = f->jobs[i];
        if (j->state != J_DONE) {
            struct sh_err err;
            sh_err_set(&err, SH_EIO, "%s: stopped before completion", j->url);
            job_finish(f, j, SCR_FETCH_ERROR, &err);
        }
    }
    jobs_clear(f);
}

int scr_fetch_one(struct scr_fetcher *f, const struct scr_fetch_req *req,
                  struct scr_fetch_result *res, int (*stop)(void))
{
    scr_fetch_many(f, req, 1, res, stop);
    return res->outcome;
}
