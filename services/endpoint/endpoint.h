/* scrapr-endpoint private interfaces.
 *
 * The endpoint serves one collection. Its modules:
 *   store.c   immutable, reference-counted items and snapshots (sorted items,
 *             key index, prebuilt response blobs) and the current-snapshot slot
 *             that HTTP threads read and the sync thread swaps;
 *   query.c   query-string parsing, filtering/sorting/paging;
 *   render.c  projection, JSON / NDJSON / CSV rendering, gzip, negotiation;
 *   sync.c    the datasource long-poll follower;
 *   persist.c the Redis snapshot persister/loader and the once-a-second tick;
 *   config.c  configuration by CONFIG_ID or claim, cached in Redis;
 *   api.c     HTTP handlers, health and metrics.
 * Threads: libmicrohttpd worker threads only read snapshots; one sync thread
 * builds new ones; one persister thread writes them to Redis; main ticks. */
#ifndef ENDPOINT_ENDPOINT_H
#define ENDPOINT_ENDPOINT_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>
#include <jansson.h>

#include "shared/blob.h"
#include "shared/consul.h"
#include "shared/err.h"
#include "shared/http_server.h"
#include "shared/metrics.h"
#include "shared/redis.h"

/* ---- items and snapshots (store.c) ---------------------------------------- */

/* One item as served: the datasource item's data plus _key, _first_seen and
 * _last_seen. Immutable after ep_item_new; shared between snapshots. */
struct ep_item {
    int refs; /* atomic */
    char *key;
    uint64_t revision;
    char *first_seen; /* as the datasource sent it ("" when absent) */
    char *last_seen;
    json_t *data; /* the datasource's data object (owned reference) */
    json_t *obj;  /* public object (owned reference); read-only */
    char *json;   /* compact JSON of obj */
    size_t json_len;
};

/* Builds an item from one datasource item object
 * {"key","first_seen","last_seen","revision","data"}. Returns NULL with
 * SH_EPROTO when it is malformed. One reference. */
struct ep_item *ep_item_from_json(const json_t *ds_item, struct sh_err *err);
struct ep_item *ep_item_ref(struct ep_item *it);
void ep_item_unref(struct ep_item *it); /* NULL is a no-op */
/* The datasource form again (for the Redis snapshot); new reference. */
json_t *ep_item_to_json(const struct ep_item *it);

enum ep_format { EP_FMT_JSON = 0, EP_FMT_NDJSON, EP_FMT_CSV, EP_FMT_N };

/* A consistent view of the collection at one revision. Immutable except for
 * the lazily built format blobs (set once with an atomic compare-and-swap). */
struct ep_snapshot {
    int refs; /* atomic */
    char *collection;
    uint64_t revision;
    char *updated_at; /* datasource's updated_at ("" when unknown) */
    time_t modified;  /* updated_at parsed, or the time the snapshot was built */
    char etag[32];    /* "\"<revision>\"" */
    char last_modified[40];
    size_t n;
    struct ep_item **items; /* default order: (_first_seen, _key) ascending */
    size_t index_cap;       /* power of two */
    uint32_t *index;        /* open addressing: item position + 1, 0 = empty */
    size_t prebuilt_n;      /* items in the prebuilt blobs: min(n, max_limit) */
    /* [format][0 plain, 1 gzip]; JSON is built eagerly, the others on first use */
    struct sh_blob *blobs[EP_FMT_N][2];
};

/* Takes ownership of items (an array of n references, any order); sorts them
 * into the default order, indexes keys and prebuilds the JSON blobs (plain +
 * gzip) of the first max_limit items. updated_at may be NULL. One reference. */
struct ep_snapshot *ep_snapshot_new(const char *collection, uint64_t revision,
                                    const char *updated_at, struct ep_item **items, size_t n,
                                    size_t max_limit);
struct ep_snapshot *ep_snapshot_ref(struct ep_snapshot *s);
void ep_snapshot_unref(struct ep_snapshot *s); /* NULL is a no-op */
/* Item with that key, borrowed from s, or NULL. */
const struct ep_item *ep_snapshot_find(const struct ep_snapshot *s, const char *key);
/* The unfiltered response in fmt, plain (gz = 0) or gzip (gz = 1): borrowed
 * from s (valid while the caller holds s). Built on first use for NDJSON/CSV. */
struct sh_blob *ep_snapshot_blob(struct ep_snapshot *s, int fmt, int gz);
/* The datasource-shaped document stored in Redis; caller frees. */
char *ep_snapshot_dump(const struct ep_snapshot *s, size_t *ret_len);
/* Parses ep_snapshot_dump's output. Returns NULL with SH_EPROTO when malformed. */
struct ep_snapshot *ep_snapshot_load(const char *json, size_t len, size_t max_limit,
                                     struct sh_err *err);

/* Where the data being served came from. */
enum ep_source { EP_SRC_NONE = 0, EP_SRC_REDIS, EP_SRC_DATASOURCE };

/* The slot HTTP threads read: a mutex-guarded pointer swapped by the sync
 * thread (readers hold it only to take a reference), plus sync state. */
struct ep_store {
    pthread_mutex_t mu;
    struct ep_snapshot *cur; /* NULL until data is known */
    int source;              /* enum ep_source, under mu */
    /* Freshness, read without the lock (atomics): */
    int in_sync;         /* the last datasource poll succeeded */
    int64_t confirmed_s; /* when the data was last confirmed current (unix s) */
};

void ep_store_init(struct ep_store *st);
void ep_store_done(struct ep_store *st);
/* Current snapshot with a new reference (caller unrefs), or NULL. */
struct ep_snapshot *ep_store_get(struct ep_store *st);
/* Takes ownership of s and makes it current. */
void ep_store_swap(struct ep_store *st, struct ep_snapshot *s, int source);
int ep_store_source(struct ep_store *st);
/* Seconds the served data may lag the datasource: 0 while in sync. */
long ep_store_age(struct ep_store *st, time_t now);
void ep_store_mark(struct ep_store *st, int in_sync, time_t now);

/* ---- queries (query.c, render.c) ------------------------------------------------------ */

#define EP_MAX_FILTERS 32
#define EP_MAX_FIELDS 64
#define EP_MAX_PARAM_LEN 2048

struct ep_filter {
    char *path; /* dotted */
    char *value;
};

struct ep_query {
    long limit; /* -1 = not given */
    long offset;
    int format;
    int limit_set, offset_set, format_set;
    char **fields; /* projection paths, NULL = whole items */
    size_t nfields;
    char *sort; /* path, NULL = default order */
    int sort_desc;
    struct ep_filter *filters;
    size_t nfilters;
};

void ep_query_init(struct ep_query *q);
void ep_query_done(struct ep_query *q);
/* Adds one query-string argument (value may be NULL for "?x"). Returns 0, or
 * -1 with SH_ECONFIG and a message fit for a 400 response. */
int ep_query_add(struct ep_query *q, const char *name, const char *value, long max_limit,
                 struct sh_err *err);
/* Non-zero when the query asks for the unfiltered first page in default order
 * (so a prebuilt blob answers it). */
int ep_query_is_plain(const struct ep_query *q, const struct ep_snapshot *s);

/* Selects items: *ret_sel (caller frees) gets the positions in s of the page,
 * *ret_total the number of matching items before paging. */
void ep_query_select(const struct ep_query *q, const struct ep_snapshot *s, long max_limit,
                     size_t **ret_sel, size_t *ret_n, size_t *ret_total);
/* Renders items (n borrowed pointers) in q's format with q's projection;
 * returns a malloc'd body (never NULL) with *ret_len. */
char *ep_render(const struct ep_query *q, int fmt, const struct ep_item *const *items, size_t n,
                size_t *ret_len);
/* Renders one item as a JSON object with q's projection; caller frees. */
char *ep_render_one(const struct ep_query *q, const struct ep_item *it, size_t *ret_len);
/* Values at a dotted path, for filters and sort: fills out with up to max
 * borrowed values (arrays on the way fan out). Returns the count. */
size_t ep_path_values(const json_t *obj, const char *path, const json_t **out, size_t max);
/* Value at a dotted path without fan-out (numeric segments index arrays):
 * borrowed from v, or NULL. Used by sort, projection and CSV columns. */
const json_t *ep_path_get(const json_t *v, const char *path);
/* Scalar's string form for comparisons: a new string, or NULL for objects/arrays. */
char *ep_scalar_string(const json_t *v);

/* Non-zero when an Accept-Encoding header value accepts gzip (q > 0). */
int ep_accepts_gzip(const char *accept_encoding);
/* Non-zero when an If-None-Match header value matches etag ("*", lists, W/). */
int ep_etag_matches(const char *if_none_match, const char *etag);

/* ---- configuration (config.c) ------------------------------------------------ */

struct ep_config {
    char *config_id;        /* CONFIG_ID ("" = claim) */
    char *redis_url;        /* REDIS_URL */
    char *config_discovery; /* SCRAPR_CONFIG_DISCOVERY_URL ("" = Consul) */
    char *datasource;       /* SCRAPR_DATASOURCE_URL ("" = Consul) */
    long threads;           /* EP_THREADS (0 = number of cores) */
    long max_limit;         /* EP_MAX_LIMIT */
    long max_items;         /* EP_MAX_ITEMS */
    long wait_s;            /* EP_WAIT: long-poll wait sent to the datasource */
    long gzip_min;          /* EP_GZIP_MIN: on-the-fly gzip above this size */
    long persist_ms;        /* EP_PERSIST_MS: minimum gap between Redis writes */
    long page_limit;        /* EP_PAGE_LIMIT: items per datasource page */
    char *hostname;         /* HOSTNAME: the container name a claim records */
    char *revision_key;     /* SCRAPR_REVISION_KEY: Consul counter of configuration changes */
    long claim_wait_s;      /* SCRAPR_CLAIM_WAIT: blocking wait = fallback re-try of a claim */
};

/* The endpoint configuration document fields it uses. */
struct ep_conf_doc {
    char *id;
    char *collection;
    long ttl;    /* seconds; fallback full refresh period */
    json_t *doc; /* whole document (owned) */
};

void ep_conf_doc_done(struct ep_conf_doc *d);
/* Fills d from a configuration document. Returns 0, or -1 with SH_EPROTO. */
int ep_conf_doc_parse(const json_t *doc, struct ep_conf_doc *d, struct sh_err *err);

/* ---- runtime (sync.c, config.c, api.c) -------------------------------------- */

struct ep_ctx {
    const struct ep_config *cfg;
    const char *service_address;
    struct sh_consul *consul;          /* may be NULL */
    struct sh_discovery *ds_discovery; /* NULL when cfg->datasource is set */
    struct sh_discovery *cd_discovery; /* NULL when cfg->config_discovery is set */
    struct sh_redis *redis;
    const char *api_token;
    struct ep_conf_doc conf;
    struct ep_store store;
    struct sh_metrics *metrics; /* NULL until the service started */

    /* sync thread */
    pthread_t sync_thread;
    int sync_started;
    /* persister: the latest snapshot waiting to be written */
    pthread_t persist_thread;
    int persist_started;
    pthread_mutex_t persist_mu;
    pthread_cond_t persist_cv;
    struct ep_snapshot *persist_pending;
    int persist_stop;
    int redis_ok;      /* atomic: last Redis operation succeeded */
    int datasource_ok; /* atomic: last datasource request succeeded */
    int64_t persisted_revision;
    int sync_stop;         /* atomic: asks the follower to stop (also cancels its request) */
    time_t last_confirm_s; /* main thread: last ep_tick Redis check */
    /* spare (spare.c): atomics read by the waiting service's handlers */
    int waiting;      /* no configuration yet: waiting for a claim */
    long claim_tries; /* claims tried while waiting */
};

/* config.c: obtains the configuration (CONFIG_ID: config-discovery, else the
 * Redis cache; no CONFIG_ID: the id remembered in Redis, else a claim). With an
 * id it retries until the document is found or a stop is requested. Returns
 * 0 loaded, 1 no id and nothing claimed (a spare: see ep_spare_wait), -1
 * stopping. */
int ep_config_acquire(struct ep_ctx *ctx);
/* POST /configurations/claim as HOSTNAME (else SERVICE_ADDRESS, else the host
 * name); adopts and remembers what it got. 1 claimed, 0 none free, -1 failed
 * (logged). */
int ep_config_claim(struct ep_ctx *ctx);

struct sh_service_config;

/* spare.c: a spare endpoint's wait. Serves GET /status and /health (healthy
 * while its Redis answers; "/" and /items answer 503) and claims as soon as
 * the configuration revision moves in Consul (and every claim_wait_s
 * regardless). Returns 0 once a configuration is adopted (the waiting server
 * is stopped again, so the caller starts the real one under its tags), -1
 * when stopping or the server could not start (logged). */
int ep_spare_wait(struct ep_ctx *ctx, const struct sh_service_config *scfg);
/* URL of a peer ("http://h:p", no trailing slash); caller frees; NULL if unknown. */
char *ep_peer_url(struct sh_discovery *d, const char *fixed, struct sh_err *err);

/* sync.c */
int ep_sync_load_redis(struct ep_ctx *ctx);
int ep_sync_start(struct ep_ctx *ctx, struct sh_err *err);
void ep_sync_stop(struct ep_ctx *ctx);
/* persist.c: the persister thread's body (started by ep_sync_start). */
void *ep_persister_main(void *arg);
/* Queues the snapshot for the persister (takes a new reference). */
void ep_persist_request(struct ep_ctx *ctx, struct ep_snapshot *s);

/* Once a second from the main thread: gauges, Redis confirmation/re-persist. */
void ep_tick(struct ep_ctx *ctx);

/* api.c: the public routes (handler arg: struct ep_ctx *) and the health check. */
extern const struct sh_http_route ep_routes[];
int ep_health(json_t *checks, void *arg);

#endif
