/* scrapr-scraper private interfaces.
 *
 * fetch.c   concurrent, polite, SSRF-guarded HTTP fetching on libcurl's multi
 *           interface (robots.txt, per-host token buckets, retries, manual
 *           redirects, conditional GET).
 * robots.c  robots.txt parsing and matching (RFC 9309).
 * run.c     one scrape run: fetch -> extract -> follow -> paginate -> items + stats.
 * outbox.c  batches of items to the datasource through a Redis outbox.
 * source.c  the configuration: by CONFIG_ID or claimed, cached in Redis.
 *
 * Everything here is single-threaded unless a comment says otherwise. */
#ifndef SCRAPER_SCRAPER_H
#define SCRAPER_SCRAPER_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <jansson.h>

#include "shared/err.h"

/* ---- robots.c ---------------------------------------------------------- */

struct scr_robots;

/* Parses a robots.txt body for the product token `agent` (e.g. "scrapr").
 * Never fails: unknown lines are ignored. Caller frees with scr_robots_free. */
struct scr_robots *scr_robots_parse(const char *body, size_t len, const char *agent);
/* A rule set that allows (allow=1) or disallows (allow=0) everything. */
struct scr_robots *scr_robots_all(int allow);
void scr_robots_free(struct scr_robots *r);
/* 1 when path (with query, "/a?b") may be fetched, 0 when disallowed. */
int scr_robots_allowed(const struct scr_robots *r, const char *path);
/* Crawl-delay in seconds for our group, or 0 when none was given. */
double scr_robots_crawl_delay(const struct scr_robots *r);

/* ---- fetch.c ----------------------------------------------------------- */

struct scr_fetch_opts {
    long connect_timeout_ms;          /* 0 = 5000 */
    long timeout_ms;                  /* total per attempt; 0 = 30000 */
    size_t max_body;                  /* decoded body cap; 0 = 8 MiB */
    int max_redirects;                /* hops followed (each re-checked); < 0 = 5 */
    int retries;                      /* extra attempts on 429/502/503/504/transport errors */
    long backoff_ms;                  /* first backoff; 0 = 500 */
    long max_retry_after_ms;          /* cap on Retry-After / backoff waits; 0 = 60000 */
    const char *user_agent;           /* NULL = "scrapr/0.1 (+https://github.com/scrapr)" */
    int allow_private;                /* SCRAPR_ALLOW_PRIVATE_TARGETS: lift the SSRF guard */
    const char *const *allow_targets; /* "host:port" exceptions to the guard, may be NULL */
    int ignore_robots;                /* do not fetch/honour robots.txt */
    long robots_ttl_s;                /* robots.txt cache lifetime; 0 = 3600 */
    double rate;                      /* requests per second per host; 0 = unlimited */
    double burst;                     /* token bucket size; < 1 = 1 */
    int max_concurrency;              /* transfers in flight; 0 = 16 */
    const char *const *headers;       /* extra "Name: value" headers for every request */
    const char *cookies;              /* Cookie header value ("a=1; b=2"), may be NULL */
};

enum scr_fetch_outcome {
    SCR_FETCH_OK = 0,        /* a final response (any status; check status) */
    SCR_FETCH_NOT_MODIFIED,  /* 304 to a conditional request */
    SCR_FETCH_ERROR,         /* see err */
    SCR_FETCH_ROBOTS_DENIED, /* robots.txt disallows the URL */
    SCR_FETCH_REFUSED,       /* SSRF guard: private/loopback/... target */
};

struct scr_fetch_req {
    const char *url;
    const char *method;        /* NULL = GET; "POST" sends body (first hop only) */
    const char *body;          /* request body, may be NULL */
    const char *etag;          /* If-None-Match, may be NULL */
    const char *last_modified; /* If-Modified-Since, may be NULL */
};

struct scr_fetch_result {
    int outcome; /* enum scr_fetch_outcome */
    long status;
    char *url;  /* final URL after redirects (owned) */
    char *body; /* NUL-terminated, owned; NULL unless outcome OK */
    size_t body_len;
    char *content_type;  /* owned, may be NULL */
    char *etag;          /* owned, may be NULL */
    char *last_modified; /* owned, may be NULL */
    int attempts;        /* transfers made for this URL (retries and hops included) */
    int redirects;
    double seconds; /* wall time from first attempt to completion */
    struct sh_err err;
};

struct scr_fetch_stats {
    uint64_t requests; /* transfers started (robots.txt included) */
    uint64_t retries;  /* attempts scheduled after 429/5xx/transport errors */
    uint64_t refused;  /* SSRF guard refusals */
    uint64_t robots_denied;
    uint64_t robots_fetched;
    uint64_t bytes; /* decoded body bytes received */
};

struct scr_fetcher;

/* Copies opts (strings included). Returns NULL with err on a curl init failure. */
struct scr_fetcher *scr_fetcher_new(const struct scr_fetch_opts *opts, struct sh_err *err);
void scr_fetcher_free(struct scr_fetcher *f);
/* Fetches n URLs concurrently and fills res[i] for reqs[i] (release each with
 * scr_fetch_result_done). Returns when all are complete or `stop` (may be NULL)
 * becomes non-zero (remaining results: SCR_FETCH_ERROR, "stopped"). */
void scr_fetch_many(struct scr_fetcher *f, const struct scr_fetch_req *reqs, size_t n,
                    struct scr_fetch_result *res, int (*stop)(void));
/* One URL (stop as for scr_fetch_many, may be NULL); returns the result's outcome. */
int scr_fetch_one(struct scr_fetcher *f, const struct scr_fetch_req *req,
                  struct scr_fetch_result *res, int (*stop)(void));
void scr_fetch_result_done(struct scr_fetch_result *r);
const struct scr_fetch_stats *scr_fetcher_stats(const struct scr_fetcher *f);
/* Forgets cached robots.txt files (a new run fetches them again). */
void scr_fetcher_forget_robots(struct scr_fetcher *f);
const char *scr_fetch_outcome_name(int outcome);

/* ---- guard.c ----------------------------------------------------------- */

/* 1 when the address is one we refuse by default (loopback, private,
 * link-local, unspecified, multicast, CGNAT, metadata, mapped forms). */
int scr_addr_forbidden(const struct sockaddr *sa);

/* A URL split for the fetcher; strings owned (free with scr_url_done). */
struct scr_url {
    char *scheme, *host, *port, *path; /* host as curl gives it ("[::1]"); path with query */
};
/* 0, or -1 with SH_ECONFIG (not a URL, scheme other than http/https, no host). */
int scr_url_split(const char *url, struct scr_url *u, struct sh_err *err);
void scr_url_done(struct scr_url *u);
struct curl_slist;
/* Resolves u->host, refuses a forbidden address unless allow_private or
 * "host:port" is in allow_targets (may be NULL), and builds the
 * CURLOPT_RESOLVE entry pinning the checked addresses (*ret_resolve stays
 * NULL for IP literals; caller frees with curl_slist_free_all). Returns 0,
 * -1 (resolution failed) or -2 (refused), err filled on failure. */
int scr_resolve_guard(int allow_private, const char *const *allow_targets, const struct scr_url *u,
                      struct curl_slist **ret_resolve, struct sh_err *err);

/* ---- outbox.c ---------------------------------------------------------- */

struct sh_redis;
struct sh_metrics;

/* Returns the datasource base URL ("http://h:p", caller frees) or NULL with err. */
typedef char *(*scr_url_fn)(void *arg, struct sh_err *err);

struct scr_outbox_opts {
    const char *config_id; /* names the Redis list scrapr:outbox:<config_id> */
    size_t batch_items;    /* items per batch; 0 = 500 */
    long max_batches;      /* outbox bound; 0 = 10000 */
    long timeout_ms;       /* per POST; 0 = 15000 */
    const char *api_token; /* bearer token for POST /items, may be NULL */
    scr_url_fn datasource; /* where to POST */
    void *datasource_arg;
    struct sh_metrics *metrics; /* may be NULL */
};

struct scr_outbox;

/* Borrows r and metrics (they must outlive the outbox). */
struct scr_outbox *scr_outbox_new(struct sh_redis *r, const struct scr_outbox_opts *opts);
void scr_outbox_free(struct scr_outbox *o); /* stops the drainer; NULL is a no-op */
/* Stops and joins the drainer (it touches the metrics, so this comes before
 * they are freed); the outbox stays readable. NULL or stopped: a no-op. */
void scr_outbox_stop(struct scr_outbox *o);
/* Splits items (array, borrowed) into batches {"collection","config_id",
 * "batch_id","key","data"} with a fresh random 128-bit batch_id each, and
 * appends them all to the Redis outbox in one RPUSH (all or none). Returns the
 * number of batches, or -1: SH_ELIMIT when the outbox would pass max_batches
 * (nothing written), SH_EUPSTREAM when Redis fails. */
long scr_outbox_enqueue(struct scr_outbox *o, const char *collection, const json_t *key,
                        const json_t *items, struct sh_err *err);
/* Sends batches from the head in order until the outbox is empty or a POST
 * fails. A batch leaves the list only after a 2xx (LINDEX 0, POST, LPOP), so a
 * crash re-sends it and the datasource's batch_id dedup keeps it once. A 4xx
 * other than 408/429 moves the batch to scrapr:outbox:<id>:dead (logged by the
 * caller via the return). Returns batches delivered (>= 0) with err cleared, or
 * -1 with err and *ret_retry_ms (a Retry-After or 0) when it had to stop. */
long scr_outbox_drain(struct scr_outbox *o, long *ret_retry_ms, struct sh_err *err);
/* Batches waiting (LLEN), or -1 when Redis fails. */
long scr_outbox_len(struct scr_outbox *o, struct sh_err *err);
/* Starts a background thread that drains whenever batches are waiting, with
 * backoff (1 s doubling to 30 s, or Retry-After) while the datasource is down.
 * Returns 0 or -1 (thread creation failed). */
int scr_outbox_start(struct scr_outbox *o, struct sh_err *err);
/* Wakes the drainer (after an enqueue). */
void scr_outbox_kick(struct scr_outbox *o);
/* Counters for /status. */
struct scr_outbox_stats {
    uint64_t enqueued, delivered, duplicates, dead, refused;
    long pending; /* last known LLEN */
    char last_error[SH_ERR_MSG_MAX];
};
void scr_outbox_stats(struct scr_outbox *o, struct scr_outbox_stats *ret);

/* ---- source.c ---------------------------------------------------------- */

struct scr_source_opts {
    const char *config_id; /* CONFIG_ID; NULL/"" = claim one */
    const char *container; /* our hostname, for claims */
    const char *api_token; /* bearer token for the claim (a write), may be NULL */
    scr_url_fn configd;    /* config-discovery base URL */
    void *configd_arg;
    long timeout_ms; /* 0 = 5000 */
};

struct scr_source;

/* Borrows r (may be NULL: no cache). */
struct scr_source *scr_source_new(struct sh_redis *r, const struct scr_source_opts *opts);
void scr_source_free(struct scr_source *s);
/* The current configuration document (new reference), fetched from
 * config-discovery and cached in Redis (scrapr:config:<id>); when
 * config-discovery is unreachable the cached copy is returned and
 * *ret_cached = 1. Without a CONFIG_ID, claims one first (and remembers the
 * claimed id in scrapr:config:claimed so a restart keeps it). Returns NULL
 * with err: SH_ENOTFOUND (deleted, or nothing to claim), SH_EUPSTREAM (down
 * and no cache). */
json_t *scr_source_load(struct scr_source *s, int *ret_cached, struct sh_err *err);
/* The configuration id in use, or NULL before the first successful load.
 * Borrowed until the source is freed. */
const char *scr_source_id(const struct scr_source *s);
/* After its claimed configuration was deleted: forgets the claim (here and in
 * Redis) so the next start waits for a new one. 1 released, 0 when the id was
 * fixed by CONFIG_ID (nothing to release). */
int scr_source_release(struct scr_source *s);

/* ---- run.c ------------------------------------------------------------- */

struct sh_dsl;

/* Conditional-GET memory: per source/next-page URL the validators of the last
 * delivered response and the next-page URLs it yielded, so a 304 can skip the
 * parse and still paginate. In memory, mirrored to the Redis hash
 * scrapr:validators:<config_id>:<version> when r is non-NULL. */
struct scr_validators;
struct scr_validators *scr_validators_new(struct sh_redis *r, const char *config_id, long version);
void scr_validators_free(struct scr_validators *v);
/* Merges a run's `validators` (scr_run_result) once its items are safely in
 * the outbox; before that a 304 could hide items that were never delivered. */
void scr_validators_commit(struct scr_validators *v, const json_t *updates);

struct scr_run_limits {
    int max_follows; /* linked pages fetched per run; 0 = 2000 */
    int max_errors;  /* errors kept for /status; 0 = 20 */
};

struct scr_run_result {
    json_t *items;      /* array of item objects */
    json_t *stats;      /* see scr_run() */
    json_t *validators; /* {url: {"etag","last_modified","next":[...]}} to commit */
    int failed;         /* the source page itself could not be fetched/extracted */
};

/* One scrape: fetch the source URL, extract, fill follows (deduplicated and
 * fetched concurrently), then paginate up to dsl->limit pages, never visiting
 * a URL twice. v may be NULL (no conditional requests). stats is
 * {"started_at","ended_at","duration_s","pages":{"fetched","not_modified",
 * "failed"},"follows":{"fetched","failed","cached"},"cycles","items",
 * "fields":{<path>:{"matches","filled","fill_rate","errors","first_errors"}},
 * "errors":[{"url","error"}...]}. Release with scr_run_result_done. */
void scr_run(const struct sh_dsl *dsl, struct scr_fetcher *f, struct scr_validators *v,
             const struct scr_run_limits *lim, int (*stop)(void), struct scr_run_result *ret);
void scr_run_result_done(struct scr_run_result *r);
/* A fetcher for a configuration: base (service-level limits, SSRF setting)
 * plus the configuration's headers, cookies, user agent, timeout and
 * politeness (rate, burst, robots, concurrency). */
struct scr_fetcher *scr_fetcher_for_dsl(const struct sh_dsl *dsl, const struct scr_fetch_opts *base,
                                        struct sh_err *err);
/* ISO-8601 UTC of a wall-clock time (buffer >= 32). */
void scr_iso_time(double t, char *buf, size_t len);

/* ---- once.c ------------------------------------------------------------ */

/* `scrapr-scraper --once CONFIG.json`: validates, runs one scrape with no other
 * service, prints items as JSON lines on stdout and diagnostics on stderr.
 * Returns the process exit status (0 ok, 1 invalid config or failed source). */
int scr_once_main(const char *path, const struct scr_fetch_opts *base);

/* ---- loop.c ------------------------------------------------------------ */

struct sh_http_req;
struct sh_http_resp;

/* Service-level settings (env), filled by main.c and then const. */
struct scr_config {
    int allow_private;    /* SCRAPR_ALLOW_PRIVATE_TARGETS */
    char *config_id;      /* CONFIG_ID */
    char *redis_url;      /* REDIS_URL */
    char *datasource_url; /* SCRAPR_DATASOURCE_URL (else Consul "datasource") */
    char *configd_url;    /* SCRAPR_CONFIG_DISCOVERY_URL (else Consul "config-discovery") */
    char *container;      /* HOSTNAME, for claims */
    long max_body;        /* SCRAPR_MAX_BODY bytes */
    long retries;         /* SCRAPR_FETCH_RETRIES */
    long outbox_max;      /* SCRAPR_OUTBOX_MAX_BATCHES */
    long batch_items;     /* SCRAPR_BATCH_ITEMS */
    long max_follows;     /* SCRAPR_MAX_FOLLOWS per run */
    long min_interval_s;  /* SCRAPR_MIN_INTERVAL: floor under ttl between runs */
    char *revision_key;   /* SCRAPR_REVISION_KEY: Consul counter of configuration changes */
    long claim_wait_s;    /* SCRAPR_CLAIM_WAIT: blocking wait = fallback re-try of a claim */
};

struct scr_ctx;
struct sh_consul;

/* consul may be NULL (explicit peer URLs only); api_token may be NULL. */
struct scr_ctx *scr_ctx_new(const struct scr_config *cfg, struct sh_consul *consul,
                            const char *api_token, struct sh_err *err);
void scr_ctx_free(struct scr_ctx *c);
/* Loads and compiles the configuration (claiming one when needed). 0 or -1. */
int scr_ctx_load_config(struct scr_ctx *c, struct sh_err *err);
/* 1 when this scraper has no configuration id yet (no CONFIG_ID, no claim
 * remembered in Redis and none made): it is a spare that waits for a claim. */
int scr_ctx_unclaimed(const struct scr_ctx *c);
/* A spare's wait: claims as soon as the configuration revision moves in
 * Consul (and every claim_wait_s regardless), reporting "waiting_for_claim"
 * on /status and staying healthy meanwhile. Returns 0 once a configuration
 * is loaded, -1 when stopping() became non-zero. */
int scr_ctx_wait_claim(struct scr_ctx *c, int (*stopping)(void), int (*sleep_ms)(long));
/* Borrowed until the next load: the configuration's id and collection. */
const char *scr_ctx_config_id(const struct scr_ctx *c);
const char *scr_ctx_collection(const struct scr_ctx *c);
/* Creates the outbox (metrics may be NULL) and starts its drainer. */
int scr_ctx_attach(struct scr_ctx *c, struct sh_metrics *metrics, struct sh_err *err);
/* Stops the outbox drainer: call before the service (and its metrics) stops. */
void scr_ctx_detach(struct scr_ctx *c);
/* Scrapes now and every ttl until stopping() returns non-zero. */
void scr_ctx_loop(struct scr_ctx *c, int (*stopping)(void), int (*sleep_ms)(long));
/* GET /status handler (arg = ctx) and the /health check. */
void scr_status_handler(struct sh_http_req *req, struct sh_http_resp *resp, void *arg);
int scr_health(json_t *checks, void *arg);

#endif
