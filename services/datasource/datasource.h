/* scrapr-datasource internals: configuration, runtime context and the
 * functions the modules call on each other.
 *
 *   validate.c  pure logic: batch validation, collection names, item keys
 *   store.c     MongoDB layout: collection names, set-up, small helpers
 *   ingest.c    POST /items: dedupe, sequence (blocks), durable capped insert, back-pressure
 *   tailer.c    the tailer thread: capped_datasources -> reduce, resume state, lock
 *   reduce.c    one batch -> monotonic upserts into items_<name> + collections_meta
 *   feed.c      in-process change feed (revision per collection + condition variable)
 *   handoff.c   ingest -> tailer queue of just-stored capped documents (poll mode)
 *   claimed.c   the tailing process's set of claimed batch_ids (replay check without a find)
 *   api.c       HTTP handlers
 *
 * See docs/datasource.md for the storage layout and the exactly-once argument. */
#ifndef DATASOURCE_H
#define DATASOURCE_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <mongoc/mongoc.h>

#include "shared/err.h"
#include "shared/http_server.h"
#include "shared/metrics.h"
#include "shared/mongo.h"

/* Storage names (database from MONGO_URL, default "scrapr"). */
#define DS_CAPPED "capped_datasources"
#define DS_BATCHES "batches"
#define DS_META "collections_meta"
#define DS_STATE "tailer_state"
#define DS_COUNTERS "datasource_counters"
#define DS_JOURNAL "reduce_journal"
#define DS_ITEMS_PREFIX "items_"
#define DS_STATE_ID "datasource"
#define DS_COUNTER_ID "capped_datasources"
#define DS_LOCK_KEY "scrapr/locks/datasource-tailer"

#define DS_BATCH_ID_MAX 128
#define DS_KEY_FIELDS_MAX 32
#define DS_KEY_FIELD_MAX 256

struct ds_config {
    char *mongo_url;
    long capped_bytes;      /* DS_CAPPED_BYTES */
    long backlog_max_bytes; /* DS_BACKLOG_MAX_BYTES (0 = capped_bytes / 4) */
    long max_batch_bytes;   /* DS_MAX_BATCH_BYTES: request body limit */
    long max_items;         /* DS_MAX_ITEMS per batch */
    long max_item_bytes;    /* DS_MAX_ITEM_BYTES (compact JSON of one item) */
    int tailer;             /* DS_TAILER: 0 disables reducing (tests, read-only replicas) */
    int tailer_lock;        /* DS_TAILER_LOCK: hold the Consul lock while tailing */
    long resume_window;     /* DS_RESUME_WINDOW: batches re-reduced after a restart */
    long poll_ms;           /* DS_POLL_MS: tailer re-poll when idle */
    long meta_poll_ms;      /* DS_META_POLL_MS: long-poll fallback poll of collections_meta */
    char *tail_mode;        /* DS_TAIL_MODE: auto, cursor or poll (see tailer.c) */
    long round_batches;     /* DS_ROUND_BATCHES: most batches reduced together in one round */
    long cache_bytes;       /* DS_REDUCE_CACHE_BYTES: reducer's item cache (0 = off) */
    long round_wait_ms;     /* DS_ROUND_WAIT_MS: gather batches under sustained ingest */
    long batch_retention_s; /* DS_BATCH_RETENTION_S: replay detection window for `batches` */
    long claims_cache_max;  /* DS_CLAIMS_CACHE_MAX: claimed batch_ids kept in memory (0 = off) */
};

/* Limits validation needs (a subset of the config, so unit tests need no Mongo). */
struct ds_limits {
    size_t max_items;
    size_t max_item_bytes;
};

/* A validated POST /items batch. Strings are owned by the struct. */
struct ds_batch {
    char *collection;
    char *config_id; /* may be NULL */
    char *batch_id;
    json_t *key;     /* array of strings (new reference), possibly empty */
    json_t *data;    /* array of objects (new reference) */
    char *data_json; /* compact JSON of data, as stored */
    size_t data_len;
    char **item_json; /* each item's compact JSON (n_items, owned) */
    size_t n_items;
};

/* --- validate.c (pure) --- */

/* 1 when name matches ^[a-z0-9][a-z0-9_-]{0,63}$, else 0. */
int ds_collection_name_ok(const char *name);
/* Validates a parsed POST /items body. Returns 0 and fills *ret (caller
 * ds_batch_done()s it), or the HTTP status (400 or 413) with *ret_problems a
 * new array of {"path","message"} (caller decrefs). */
int ds_batch_parse(const json_t *body, const struct ds_limits *lim, struct ds_batch *ret,
                   json_t **ret_problems);
void ds_batch_done(struct ds_batch *b);
/* The item identity (brief: one key field with a string value -> that string;
 * else the compact JSON array of the key fields' values, missing -> null; no
 * key fields -> "h:" + 16-hex FNV-1a-64 of the item's compact JSON with sorted
 * keys). Caller frees. */
char *ds_item_key(const json_t *item, const json_t *key_fields);
/* The batch's items by key -> compact JSON text (a new object); within a
 * batch the last item with a key wins. texts: the items' compact texts when
 * known (ds_batch.item_json), else NULL (each item is dumped). */
json_t *ds_batch_map(const json_t *items, const json_t *key_fields, char *const *texts);
uint64_t ds_fnv1a64(const void *data, size_t len);
/* Parses an If-None-Match / ETag value ("\"12\"", "W/\"12\"", "12"); 1 ok, 0 not a revision. */
int ds_etag_parse(const char *s, int64_t *ret_rev);

/* --- feed.c --- */

struct ds_feed;
struct ds_feed *ds_feed_new(void);
void ds_feed_free(struct ds_feed *f);
/* Records that collection name is at revision rev (moves only forward) and wakes waiters. */
void ds_feed_publish(struct ds_feed *f, const char *name, int64_t rev);
/* Wakes waiters without a revision change (tailer kick, shutdown). */
void ds_feed_kick(struct ds_feed *f);
/* Known revision of name, or -1. */
int64_t ds_feed_revision(struct ds_feed *f, const char *name);
/* Blocks until name's revision differs from rev, a kick, or timeout_ms passes.
 * Returns the revision known at return (-1 unknown). */
int64_t ds_feed_wait(struct ds_feed *f, const char *name, int64_t rev, long timeout_ms);
/* Tailer wake-up: ingest calls ds_feed_ingested() after each stored batch; the
 * tailer sleeps in ds_feed_wait_ingest() between polls. */
void ds_feed_ingested(struct ds_feed *f);
void ds_feed_wait_ingest(struct ds_feed *f, uint64_t *seen, long timeout_ms);
/* Number of ds_feed_ingested() calls so far. */
uint64_t ds_feed_ingest_count(struct ds_feed *f);

/* --- handoff.c --- */

/* Capped documents stored by this process, for the local tailer to reduce
 * without reading them back (a shortcut: the capped collection stays the
 * source of truth). Thread-safe. */
struct ds_handoff;
struct ds_handoff *ds_handoff_new(size_t max_docs, size_t max_bytes);
void ds_handoff_free(struct ds_handoff *h);
/* on: accept pushes (the local tailer is tailing); off: drop everything held. */
void ds_handoff_enable(struct ds_handoff *h, int on);
/* Takes ownership of doc and map (its items by key, ds_batch_map; may be
 * NULL); keeps them when enabled and there is room (1), else frees them (0).
 * Callers push in seq order. */
int ds_handoff_push(struct ds_handoff *h, bson_t *doc, json_t *map);
/* Moves up to max of the oldest documents and their maps into docs/maps (at
 * least one, then while their total stays within max_bytes); the caller
 * owns them. */
size_t ds_handoff_take(struct ds_handoff *h, bson_t **docs, json_t **maps, size_t max,
                       size_t max_bytes);
/* Forgets the documents whose _id is in ids (a JSON array of strings): the
 * tailer read them from the capped collection. */
void ds_handoff_drop_ids(struct ds_handoff *h, json_t *ids);
/* 1 when a push was refused (full) while enabled since the last call: the
 * hand-off lacks a batch, read the capped collection until caught up. */
int ds_handoff_dropped(struct ds_handoff *h);

/* --- claimed.c --- */

/* batch_ids claimed in `batches`, complete only in the process that tails
 * (see claimed.c). Thread-safe. */
struct ds_claimed;
/* db: the ctx's database name (outlives the set). */
struct ds_claimed *ds_claimed_new(size_t max, mongoc_client_pool_t *pool, const char *db);
void ds_claimed_free(struct ds_claimed *c);
/* Starts reading every claim in the background (the tailer, on taking the
 * lock); complete when done unless there are more than max claims. */
void ds_claimed_load(struct ds_claimed *c);
/* Forgets everything and stops a load: incomplete until the next load (the
 * tailer stopped tailing). */
void ds_claimed_reset(struct ds_claimed *c);
/* Records a claim the tailer is about to write (before it writes it). */
void ds_claimed_add(struct ds_claimed *c, const char *batch_id, int64_t at);
/* Forgets claims with at < before_ms (pruned from `batches` too). */
void ds_claimed_prune(struct ds_claimed *c, int64_t before_ms);
/* 1 claimed, 0 not claimed, -1 the set cannot tell (ask `batches`). */
int ds_claimed_has(struct ds_claimed *c, const char *batch_id);
/* 1 when the set is on but neither complete nor loading (a load may help). */
int ds_claimed_wanted(struct ds_claimed *c);

/* --- runtime context --- */

struct ds_reducer; /* reduce.c: the tailer's item cache and per-collection facts */

struct ds_metrics {
    struct sh_metric *batches;        /* scrapr_datasource_ingest_batches_total */
    struct sh_metric *items;          /* scrapr_datasource_ingest_items_total */
    struct sh_metric *duplicates;     /* scrapr_datasource_ingest_duplicate_batches_total */
    struct sh_metric *rejected;       /* scrapr_datasource_ingest_backpressure_total */
    struct sh_metric *reduced;        /* scrapr_datasource_reduced_batches_total */
    struct sh_metric *reduced_items;  /* scrapr_datasource_reduced_items_total */
    struct sh_metric *reduce_seconds; /* histogram: ingest -> reduced */
    struct sh_metric *backlog;        /* gauge: unreduced bytes */
    struct sh_metric *overruns;       /* scrapr_datasource_tailer_overruns_total */
    struct sh_metric *errors;         /* scrapr_datasource_tailer_errors_total */
};

struct ds_ctx {
    const struct ds_config *cfg;
    mongoc_client_pool_t *pool;
    char *db;
    struct ds_feed *feed;
    struct ds_handoff *handoff; /* ingest -> local tailer (poll mode) */
    struct ds_claimed *claimed; /* claimed batch_ids while this process tails */
    struct ds_metrics m;
    struct sh_consul *consul;    /* may be NULL */
    pthread_mutex_t ingest_lock; /* serialises sequence + capped insert (see ingest.c) */
    /* every write command is wrapped in sh_mongo_write_begin/end: ingest and
     * the tailer hand FerretDB's single writer slot over at once; commands
     * are kept short (inserts of at most 100 documents) so neither waits long */
    struct sh_mongo_write_gate writes;
    pthread_t tailer_thread;
    int tailer_running;
    volatile int stop;
    int ready;    /* metrics and consul wired (atomic); handlers answer 503 before */
    int ferretdb; /* the server announced itself as FerretDB (buildInfo) */
    int poll;     /* poll mode (DS_TAIL_MODE, FerretDB under auto): see tailer.c */
    int tailing;  /* atomic: this process holds the tailer lock and reduces */
    /* The local tailer's saved position (atomics): lets ingest skip re-reading
     * tailer_state for back-pressure while it is fresh (a stale value only
     * over-estimates the backlog). pos_at_ms = 0: unknown. */
    int64_t pos_bytes;
    int64_t pos_at_ms;
    /* atomic: the last POST saw a backlog over half the limit, so ingest
     * checks back-pressure before taking a seq (a refusal then writes nothing) */
    int bp_near;
    /* ingest's reserved range of seqs and counter bytes (under ingest_lock, poll
     * mode only; see ingest.c): next/last seq, bytes used/reserved, the
     * counter's total as of the reservation, and when it was taken */
    int64_t blk_seq, blk_seq_first, blk_seq_end, blk_bytes, blk_bytes_end, blk_counter, blk_at_ms;
};

/* --- store.c --- */

/* Creates the capped collection and indexes when missing. */
int ds_store_setup(struct ds_ctx *ctx, struct sh_err *err);
/* "items_<name>"; caller frees. */
char *ds_items_collection(const char *name);
/* Write concern options {writeConcern: {w: "majority", j: true}} for durable writes. */
void ds_store_durable_opts(bson_t *opts);
/* Reads tailer_state: *ret_seq, *ret_bytes (0 when absent). 0 / -1. */
int ds_store_read_state(mongoc_client_t *c, const char *db, int64_t *ret_seq, int64_t *ret_bytes,
                        struct sh_err *err);
/* Reads the counter: last assigned seq and cumulative bytes (0 when absent). */
int ds_store_read_counter(mongoc_client_t *c, const char *db, int64_t *ret_seq, int64_t *ret_bytes,
                          struct sh_err *err);
/* 1 when an {_id: <string>} filter on coll is answered through an index
 * (always on MongoDB; on FerretDB only with the wrapper's _id path index,
 * checked with explain), 0 when it scans, -1 on error. */
int ds_store_id_indexed(mongoc_client_t *c, const struct ds_ctx *ctx, const char *coll,
                        struct sh_err *err);
/* Deletes the documents whose _id (a string) is in ids from coll: one
 * {_id: {$in}} delete (one scan on FerretDB) or, when per_id, one statement per
 * _id (index searches). 0 / -1. */
int ds_store_delete_ids(mongoc_collection_t *col, json_t *ids, int per_id, struct sh_err *err);
/* ISO-8601 UTC with milliseconds into buf (>= 32 bytes). */
void ds_format_time(int64_t ms, char *buf, size_t len);
/* Parses ISO-8601 UTC ("2026-01-02T03:04:05Z" or with .mmm); 1 ok, 0 not a time. */
int ds_parse_time(const char *s, int64_t *ret_ms);
int64_t ds_now_ms(void);

/* --- ingest.c --- */

struct ds_ingest_result {
    int status;       /* 202, or 503 under back-pressure */
    int duplicate;    /* 1 when batch_id was seen before */
    int64_t seq;      /* assigned sequence (0 for duplicates) */
    long retry_after; /* seconds, with 503 */
};
/* Stores a validated batch durably. 0 with *ret filled, or -1 (err: Mongo failure -> 503/500). */
int ds_ingest(struct ds_ctx *ctx, const struct ds_batch *b, struct ds_ingest_result *ret,
              struct sh_err *err);

/* --- reduce.c --- */

/* The reducer belongs to the tailer thread. It caches the stored state of
 * every item of the collections it reduces (up to DS_REDUCE_CACHE_BYTES), so
 * a round needs no lookup; the cache is valid only while this process is the
 * single tailer and is dropped (ds_reducer_forget) whenever that may not hold. */
struct ds_reducer *ds_reducer_new(struct ds_ctx *ctx);
void ds_reducer_free(struct ds_reducer *r);
void ds_reducer_forget(struct ds_reducer *r);
/* Completes replacements interrupted by a crash (reduce_journal). 0 / -1. */
int ds_reducer_redo(struct ds_reducer *r, mongoc_client_t *c, struct sh_err *err);
/* Reduces n capped documents (batches and gap markers, any order) in one
 * round: batches in seq order, the writes of all of them to one collection
 * together. Idempotent and order-independent (see docs/datasource.md).
 * maps (NULL, or one per document, entries may be NULL): the batch's items
 * by key as ingest computed them (hand-off), so they are not parsed again.
 * *ret_replays = batches skipped as replays of another seq. 0 / -1 (nothing
 * is known to be done: the caller retries the round). */
int ds_reduce_round(struct ds_reducer *r, mongoc_client_t *c, const bson_t *const *docs,
                    json_t *const *maps, size_t n, size_t *ret_replays, struct sh_err *err);

/* --- tailer.c --- */

int ds_tailer_start(struct ds_ctx *ctx, struct sh_err *err);
void ds_tailer_stop(struct ds_ctx *ctx);

/* --- api.c --- */

/* The service's routes ({NULL}-terminated), handler arg = struct ds_ctx *. */
const struct sh_http_route *ds_api_routes(void);
int ds_api_health(json_t *checks, void *arg);
void ds_metrics_init(struct ds_ctx *ctx, struct sh_metrics *m);

#endif
