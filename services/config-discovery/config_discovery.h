/* config-discovery: the configuration store (private header of the service).
 *
 * Modules:
 *   doc.c     configuration documents: JSON <-> BSON, ids, field checks
 *   store.c   MongoDB collections (capped_configurations, configurations,
 *             deleted_configurations, tailer_state) and every query on them
 *   tailer.c  materialises capped_configurations in sequence order, woken by
 *             a tailable awaitData cursor; POST waiters
 *   revision.c the Consul revision bumper
 *   api.c     HTTP handlers
 * main.c wires them (env, logging, service start, threads, shutdown).
 *
 * Storage shape (why the user's fields are kept as a JSON string `spec`:
 * MongoDB-protocol servers reject keys containing '.' or starting with '$',
 * which are legal in a configuration (field names, header names); a string
 * round-trips any JSON exactly, numbers and key order included):
 *   {_id: ObjectId, type, collection, container: string|null, version: int64,
 *    created_at: date, updated_at: date, spec: "<compact JSON of user fields>"} */
#ifndef CONFIG_DISCOVERY_H
#define CONFIG_DISCOVERY_H

#include <pthread.h>
#include <stdint.h>
#include <jansson.h>
#include <mongoc/mongoc.h>

#include "shared/consul.h"
#include "shared/err.h"
#include "shared/http_server.h"
#include "shared/metrics.h"
#include "shared/mongo.h"

#define CD_COLL_CAPPED "capped_configurations"
#define CD_COLL_CONFIGS "configurations"
#define CD_COLL_DELETED "deleted_configurations"
#define CD_COLL_STATE "tailer_state"
#define CD_COLL_LOCKS "config_locks"
#define CD_LIST_LIMIT_DEFAULT 100
#define CD_LIST_LIMIT_MAX 1000
#define CD_CONTAINER_MAX 256
#define CD_COLLECTION_MAX 120

/* Service-specific settings, filled once from the env table in main.c. */
struct cd_config {
    char *mongo_url;
    char *revision_key;
    /* SCRAPR_CD_REVISION_KEY: the Consul KV counter bumped on changes */ /* MONGO_URL */
    long post_wait_ms;  /* SCRAPR_CD_POST_WAIT_MS: how long POST waits for the tailer */
    long capped_size;   /* SCRAPR_CD_CAPPED_SIZE: bytes of capped_configurations */
    long max_body;      /* SCRAPR_CD_MAX_BODY: request body limit */
    long endpoint_ttl;  /* SCRAPR_CD_ENDPOINT_TTL: ttl of an endpoint config without one */
    long await_ms;      /* SCRAPR_CD_AWAIT_MS: tailable cursor maxAwaitTimeMS */
    long bump_retry_ms; /* SCRAPR_CD_BUMP_RETRY_MS: retry period while Consul is down */
    long poll_ms;       /* SCRAPR_CD_POLL_MS: safety-net poll of the capped collection */
    long gap_grace_ms;  /* SCRAPR_CD_GAP_GRACE_MS: how long a sequence hole is waited for */
    int watch;          /* from SCRAPR_CD_WATCH: 1 on, 0 off, -1 auto (off on FerretDB) */
    char *watch_mode;   /* SCRAPR_CD_WATCH as given: auto, on or off */
};

/* A POST waiting for the tailer to materialise its configuration. */
struct cd_waiter {
    bson_oid_t id;
    int done;
    struct cd_waiter *next;
};

/* Runtime state shared by the handlers and the threads. */
struct cd_ctx {
    const struct cd_config *cfg;
    mongoc_client_pool_t *pool;
    char *db;                   /* database name (owned) */
    struct sh_consul *consul;   /* borrowed from the service; may be NULL */
    struct sh_metrics *metrics; /* borrowed; may be NULL */

    pthread_mutex_t mu;     /* guards everything below */
    pthread_cond_t cv;      /* waiters: signalled when the tailer processed a document */
    pthread_cond_t wake_cv; /* the tailer: new capped documents may be there */
    pthread_cond_t bump_cv; /* the bumper: a change happened */
    struct cd_waiter *waiters;
    uint64_t wakes;
    uint64_t bump_wanted, bump_done;
    int stop;
    int tailer_running, watcher_running, bumper_running;
    pthread_t tailer, watcher, bumper;
    uint64_t processed;     /* capped documents the tailer processed since start */
    uint64_t skipped_gaps;  /* sequence numbers given up on after gap_grace_ms */
    int64_t next_seq;       /* the tailer's position: next sequence number to process */
    int ferretdb;           /* the server is FerretDB (buildInfo.ferretdbVersion) */
    int64_t watch_max;      /* the highest seq the watcher saw */
    pthread_mutex_t seq_mu; /* serialises this process's capped inserts */
    int64_t last_seq;       /* under seq_mu: the last seq this process inserted */
    /* FerretDB: one write command at a time (cd_insert_one...) */
    struct sh_mongo_write_gate writes;
};

/* ---- doc.c ---- */

/* 1 and *ret filled when s is 24 hex digits, else 0. */
int cd_oid_parse(const char *s, bson_oid_t *ret);
/* The endpoint configuration's id for a collection: deterministic (FNV-1a over
 * the name), so every replica computes the same _id and the unique _id index
 * makes creation happen exactly once. */
void cd_endpoint_oid(const char *collection, bson_oid_t *ret);
/* "2026-11-22T21:14:12.345Z" for a BSON date (ms since the epoch); caller frees. */
char *cd_iso8601(int64_t ms);
int64_t cd_now_ms(void);
/* Renders a stored document as the API's JSON object (new reference), or NULL
 * (err filled) when the document is damaged. */
json_t *cd_doc_to_json(const bson_t *doc, struct sh_err *err);
/* The user fields of a configuration object: a copy without the stored fields
 * (_id, type, container, version, created_at, updated_at). New reference. */
json_t *cd_user_fields(const json_t *config);
/* Appends {"path","message"} to problems. */
void cd_problem(json_t *problems, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ---- store.c ---- */

/* A pooled client and one collection, for one operation. */
struct cd_conn {
    mongoc_client_t *client;
    mongoc_collection_t *coll;
};
void cd_conn_open(struct cd_ctx *ctx, struct cd_conn *c, const char *name);
void cd_conn_close(struct cd_ctx *ctx, struct cd_conn *c);
int cd_is_dup(const bson_error_t *e); /* duplicate key (11000) */
/* A capped document's _id for seq: 19 zero-padded digits, so string order is
 * number order. Why a string: FerretDB v1 answers only string and ObjectId
 * _id equality from an index; a number _id made every lookup scan the whole
 * capped collection, which embedded FerretDB never trims, so each POST got
 * slower with the history of changes. */
#define CD_SEQ_DIGITS 19 /* INT64_MAX has 19 digits */
#define CD_SEQ_ID_LEN (CD_SEQ_DIGITS + 1)
void cd_seq_id(int64_t seq, char buf[CD_SEQ_ID_LEN]);
/* The seq of a capped document: its _id (a string, or a number as older
 * versions wrote it); -1 when it has none. */
int64_t cd_doc_seq(const bson_t *doc);
/* mongoc's write calls, one at a time per process on FerretDB: SQLite has a
 * single writer, and a blocked writer backs off in sleeps of 1, 2, 5, 10,
 * ... ms, so concurrent POSTs (each a capped insert, and the tailer's
 * materialisation) spent most of their time asleep. A mutex hands the
 * writer's turn over at once. Same arguments as mongoc's after ctx. */
bool cd_insert_one(struct cd_ctx *ctx, mongoc_collection_t *coll, const bson_t *doc,
                   const bson_t *opts, bson_t *reply, bson_error_t *error);
bool cd_delete_one(struct cd_ctx *ctx, mongoc_collection_t *coll, const bson_t *filter,
                   const bson_t *opts, bson_t *reply, bson_error_t *error);
bool cd_replace_one(struct cd_ctx *ctx, mongoc_collection_t *coll, const bson_t *filter,
                    const bson_t *doc, const bson_t *opts, bson_t *reply, bson_error_t *error);
bool cd_update_one(struct cd_ctx *ctx, mongoc_collection_t *coll, const bson_t *filter,
                   const bson_t *update, const bson_t *opts, bson_t *reply, bson_error_t *error);
/* Finds one document; 1 found (*ret = copy, caller destroys; ret may be
 * NULL), 0 none, -1 error. */
int cd_find_one(struct cd_ctx *ctx, const char *coll, const bson_t *filter, const bson_t *opts,
                bson_t **ret, struct sh_err *err);
int cd_find_by_id(struct cd_ctx *ctx, const char *coll, const bson_oid_t *id, bson_t **ret,
                  struct sh_err *err);
/* Borrowed string field of doc, or NULL. */
const char *cd_doc_str(const bson_t *doc, const char *key);

/* Creates the collections and indexes when missing (idempotent, safe to run
 * from several replicas at once). */
int cd_store_init(struct cd_ctx *ctx, struct sh_err *err);
/* Inserts a new scraper configuration into the capped collection under id,
 * numbered with the next sequence number (*ret_seq). */
int cd_store_submit(struct cd_ctx *ctx, const bson_oid_t *id, const char *collection,
                    const json_t *user, int64_t *ret_seq, struct sh_err *err);
/* The run of capped documents with _id (= seq) from_seq, from_seq+1, ... up
 * to the first one missing, at most limit, by point lookups. *ret_docs:
 * array of copies, free with cd_docs_free. */
int cd_store_fetch(struct cd_ctx *ctx, int64_t from_seq, long limit, bson_t ***ret_docs,
                   size_t *ret_n, struct sh_err *err);
/* The smallest capped seq > seq: 1 found (*ret_next), 0 none, -1 error.
 * A range query: a full scan on FerretDB, so only for the rare gap path. */
int cd_store_seq_after(struct cd_ctx *ctx, int64_t seq, int64_t *ret_next, struct sh_err *err);
void cd_docs_free(bson_t **docs, size_t n);
/* Materialises one capped document: inserts the scraper configuration (unless
 * already there or deleted) and makes sure its collection has an endpoint
 * configuration. *ret_changed = 1 when something was created. 0 or -1. */
int cd_store_materialise(struct cd_ctx *ctx, const bson_t *capped_doc, int *ret_changed,
                         struct sh_err *err);
/* Makes collection's endpoint configuration exist exactly when the collection
 * has a scraper configuration (insert-if-absent under the deterministic id, or
 * delete), re-checking after each change so that concurrent creates and
 * deletes converge. *ret_change: +1 created, -1 deleted, 0 none (may be NULL). */
int cd_store_sync_endpoint(struct cd_ctx *ctx, const char *collection, int *ret_change,
                           struct sh_err *err);
/* ---- configs.c (reads and guarded changes of materialised documents) ---- */

/* 1 found (*ret_doc = new JSON object), 0 absent, -1 error. */
int cd_store_get(struct cd_ctx *ctx, const bson_oid_t *id, json_t **ret_doc, struct sh_err *err);

struct cd_list_query {
    const char *type;       /* NULL = any */
    const char *collection; /* NULL = any */
    const char *container;  /* NULL = any */
    int container_null;     /* 1: only free configurations */
    long limit, skip;
};
/* *ret = {"configurations": [...], "total": N}. */
int cd_store_list(struct cd_ctx *ctx, const struct cd_list_query *q, json_t **ret,
                  struct sh_err *err);

/* Full replace of id's user fields (api.c checks them first). expect_version
 * < 0 retries on a concurrent change; >= 0 fails with SH_ECONFLICT when the
 * stored version differs. container_mode: 0 keep, 1 set to container (NULL =
 * free). A scraper configuration moved to another collection syncs both
 * collections' endpoint configurations. expect_type: the type the caller
 * checked the body against (SH_ECONFLICT if the stored one differs).
 * Returns 1 replaced (*ret_doc = new document), 0 not found, -1 error. */
int cd_store_replace(struct cd_ctx *ctx, const bson_oid_t *id, const char *expect_type,
                     const json_t *user, int64_t expect_version, int container_mode,
                     const char *container, json_t **ret_doc, struct sh_err *err);
/* Deletes id. A scraper configuration is tombstoned first (so a replayed
 * capped document never resurrects it) and its collection's endpoint
 * configuration goes with the last scraper configuration. An endpoint
 * configuration whose collection still has scrapers is refused (SH_ECONFLICT).
 * Returns 1 deleted (*ret_endpoint_deleted set), 0 not found, -1 error. */
int cd_store_delete(struct cd_ctx *ctx, const bson_oid_t *id, int *ret_endpoint_deleted,
                    struct sh_err *err);
/* Atomically assigns a free configuration of type to container (or returns
 * the one container already holds, so a claim is idempotent per container).
 * Free configurations whose `replicas` is present and not 1 are skipped: 0
 * parks one, more than 1 are placed by the orchestrator. 1 claimed (*ret_doc),
 * 0 none free, -1. */
int cd_store_claim(struct cd_ctx *ctx, const char *type, const char *container, json_t **ret_doc,
                   struct sh_err *err);
/* Loads/saves the tailer's resume position (the next sequence number to
 * process; saving only ever moves it forward). load: 1 found, 0 none, -1. */
int cd_store_state_load(struct cd_ctx *ctx, int64_t *ret_next, struct sh_err *err);
int cd_store_state_save(struct cd_ctx *ctx, int64_t next, struct sh_err *err);

/* ---- tailer.c ---- */

int cd_ctx_init(struct cd_ctx *ctx, const struct cd_config *cfg, struct sh_err *err);
void cd_ctx_done(struct cd_ctx *ctx);
/* Starts the tailer, its watcher and (with ctx->consul) the revision bumper. */
int cd_threads_start(struct cd_ctx *ctx, struct sh_err *err);
/* Stops and joins them; safe to call when not started. */
void cd_threads_stop(struct cd_ctx *ctx);
/* Tells the tailer that new capped documents may be there. */
void cd_tailer_wake(struct cd_ctx *ctx);
/* Sleeps up to ms on ctx->cv; returns non-zero when a stop was requested. */
int cd_nap(struct cd_ctx *ctx, long ms);
void cd_count(struct cd_ctx *ctx, const char *name, const char *help);

/* ---- revision.c ---- */

/* Asks the bumper to increment the Consul revision (coalesces; retries while
 * Consul is down). Never blocks on the network. */
void cd_revision_bump(struct cd_ctx *ctx);
void *cd_bumper_main(void *arg);
/* Registers w (with w->id set) before the capped insert; cd_wait_done waits up
 * to timeout_ms and unregisters. Returns 1 materialised here, 0 timed out. */
void cd_wait_register(struct cd_ctx *ctx, struct cd_waiter *w);
int cd_wait_done(struct cd_ctx *ctx, struct cd_waiter *w, long timeout_ms);

/* ---- the DSL validator: libshared (shared/dsl.h) ---- */
#include "shared/dsl.h"

/* ---- api.c ---- */

/* The routes ({NULL}-terminated); handlers take a struct cd_ctx * arg. */
extern const struct sh_http_route cd_routes[];
/* /health callback: {"mongo": "ok"|message}. */
int cd_health(json_t *checks, void *arg);

#endif
