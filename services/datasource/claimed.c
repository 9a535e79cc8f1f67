/* The set of batch_ids claimed in `batches`, kept by the process that tails.
 *
 * Why: POST /items must answer a replay of an already reduced batch with
 * duplicate:true, and asking `batches` costs a find per POST (about 0.5 ms
 * of FerretDB's single core each, a tenth of what the batch's own item
 * inserts cost it). Only the tailer writes claims, and only one process
 * tails (the Consul lock), so that process can know every claim: it loads
 * them all when it starts tailing and adds each one before it writes it.
 *
 * The load runs on its own thread: on FerretDB it decodes every claim
 * (100,000 took 4.9 s here), and the tailer must not wait for it. Claims the
 * tailer adds meanwhile are kept aside and merged when the load is done.
 * The set answers only while it is complete; otherwise (not tailing, still
 * loading, over DS_CLAIMS_CACHE_MAX entries, disabled) ingest asks
 * `batches` as before. Entries carry the batch's `at` and are pruned with
 * the claims (DS_BATCH_RETENTION_S). Thread-safe. */
#include <inttypes.h>
#include <string.h>

#include "datasource.h"
#include "shared/log.h"
#include "shared/mongo.h"
#include "shared/xalloc.h"

struct ds_claimed {
    pthread_mutex_t mu;
    json_t *ids;     /* batch_id -> at (ms); NULL while not complete */
    json_t *pending; /* non-NULL while a load runs: claims added since it began */
    size_t max;      /* most entries (0 = the set is off) */
    mongoc_client_pool_t *pool;
    const char *db;
    pthread_t loader;
    int loader_joinable; /* a loader thread was started and not joined */
    int abort;           /* the loader should give up */
};

struct ds_claimed *ds_claimed_new(size_t max, mongoc_client_pool_t *pool, const char *db)
{
    struct ds_claimed *c = sh_xcalloc(1, sizeof(*c));
    (void)pthread_mutex_init(&c->mu, NULL);
    c->max = max;
    c->pool = pool;
    c->db = db;
    return c;
}

/* Stops a running load (it checks abort between documents) and joins it. */
static void stop_loader(struct ds_claimed *c)
{
    if (!c->loader_joinable)
        return;
    __atomic_store_n(&c->abort, 1, __ATOMIC_RELAXED);
    (void)pthread_join(c->loader, NULL);
    c->loader_joinable = 0;
    __atomic_store_n(&c->abort, 0, __ATOMIC_RELAXED);
}

void ds_claimed_reset(struct ds_claimed *c)
{
    json_t *ids, *pending;

    stop_loader(c);
    (void)pthread_mutex_lock(&c->mu);
    ids = c->ids;
    pending = c->pending;
    c->ids = NULL;
    c->pending = NULL;
    (void)pthread_mutex_unlock(&c->mu);
    json_decref(ids);
    json_decref(pending);
}

void ds_claimed_free(struct ds_claimed *c)
{
    if (!c)
        return;
    ds_claimed_reset(c);
    (void)pthread_mutex_destroy(&c->mu);
    free(c);
}

/* Every claim in `batches` (a new object), or NULL on error, abort or more than max. */
static json_t *read_claims(struct ds_claimed *c, mongoc_client_t *client)
{
    mongoc_collection_t *col = mongoc_client_get_collection(client, c->db, DS_BATCHES);
    bson_t filter = BSON_INITIALIZER;
    bson_t *opts = BCON_NEW("projection", "{", "_id", BCON_INT32(1), "at", BCON_INT32(1), "}");
    mongoc_cursor_t *cur = mongoc_collection_find_with_opts(col, &filter, opts, NULL);
    json_t *ids = json_object();
    const bson_t *doc;
    bson_error_t berr;

    while (ids && mongoc_cursor_next(cur, &doc)) {
        bson_iter_t it;
        const char *id;
        uint32_t len;
        int64_t at = 0;
        if (__atomic_load_n(&c->abort, __ATOMIC_RELAXED)) {
            json_decref(ids);
            ids = NULL;
            break;
        }
        if (!bson_iter_init_find(&it, doc, "_id") || !BSON_ITER_HOLDS_UTF8(&it))
            continue; /* not ours: claims are keyed by the batch_id string */
        id = bson_iter_utf8(&it, &len);
        if (bson_iter_init_find(&it, doc, "at") && BSON_ITER_HOLDS_DATE_TIME(&it))
            at = bson_iter_date_time(&it);
        if (json_object_size(ids) >= c->max) {
            sh_log_warn("claims_cache_off claims>%zu hint=\"raise DS_CLAIMS_CACHE_MAX; "
                        "replays are checked in batches meanwhile\"",
                        c->max);
            json_decref(ids);
            ids = NULL;
            break;
        }
        (void)json_object_setn_new_nocheck(ids, id, len, json_integer(at));
    }
    if (mongoc_cursor_error(cur, &berr)) {
        sh_log_warn("claims_cache_load_failed error=\"%s\"", berr.message);
        json_decref(ids);
        ids = NULL;
    }
    mongoc_cursor_destroy(cur);
    bson_destroy(opts);
    bson_destroy(&filter);
    mongoc_collection_destroy(col);
    return ids;
}

static void *loader_main(void *arg)
{
    struct ds_claimed *c = arg;
    mongoc_client_t *client = mongoc_client_pool_pop(c->pool);
    int64_t t0 = ds_now_ms();
    json_t *ids = read_claims(c, client), *drop = NULL;

    mongoc_client_pool_push(c->pool, client);
    (void)pthread_mutex_lock(&c->mu);
    if (ids && c->pending && !__atomic_load_n(&c->abort, __ATOMIC_RELAXED) &&
        json_object_size(ids) + json_object_size(c->pending) <= c->max) {
        (void)json_object_update(ids, c->pending);
        c->ids = ids;
        sh_log_info("claims_cache_loaded claims=%zu load_ms=%" PRId64, json_object_size(ids),
                    ds_now_ms() - t0);
    } else {
        drop = ids; /* aborted, failed or too many: ingest keeps asking `batches` */
    }
    json_decref(c->pending);
    c->pending = NULL;
    (void)pthread_mutex_unlock(&c->mu);
    json_decref(drop);
    return NULL;
}

void ds_claimed_load(struct ds_claimed *c)
{
    int e;

    ds_claimed_reset(c);
    if (c->max == 0)
        return;
    (void)pthread_mutex_lock(&c->mu);
    c->pending = json_object();
    (void)pthread_mutex_unlock(&c->mu);
    e = pthread_create(&c->loader, NULL, loader_main, c);
    if (e != 0) {
        sh_log_warn("claims_cache_load_failed error=\"thread: %s\"", strerror(e));
        ds_claimed_reset(c);
        return;
    }
    c->loader_joinable = 1;
}

void ds_claimed_add(struct ds_claimed *c, const char *batch_id, int64_t at)
{
    json_t *dropped = NULL;

    (void)pthread_mutex_lock(&c->mu);
    if (c->pending) {
        (void)json_object_set_new_nocheck(c->pending, batch_id, json_integer(at));
    } else if (c->ids) {
        if (json_object_size(c->ids) >= c->max && !json_object_get(c->ids, batch_id)) {
            dropped = c->ids; /* incomplete from here on: ingest asks `batches` */
            c->ids = NULL;
        } else {
            (void)json_object_set_new_nocheck(c->ids, batch_id, json_integer(at));
        }
    }
    (void)pthread_mutex_unlock(&c->mu);
    if (dropped) {
        sh_log_warn("claims_cache_off claims>%zu hint=\"raise DS_CLAIMS_CACHE_MAX\"", c->max);
        json_decref(dropped);
    }
}

void ds_claimed_prune(struct ds_claimed *c, int64_t before_ms)
{
    const char *id;
    json_t *at;
    void *tmp;

    (void)pthread_mutex_lock(&c->mu);
    if (c->ids) {
        json_object_foreach_safe(c->ids, tmp, id, at)
        {
            if (json_integer_value(at) < before_ms)
                (void)json_object_del(c->ids, id);
        }
    }
    (void)pthread_mutex_unlock(&c->mu);
}

int ds_claimed_has(struct ds_claimed *c, const char *batch_id)
{
    int rc;

    (void)pthread_mutex_lock(&c->mu);
    rc = c->ids ? json_object_get(c->ids, batch_id) != NULL : -1;
    (void)pthread_mutex_unlock(&c->mu);
    return rc;
}

int ds_claimed_wanted(struct ds_claimed *c)
{
    int rc;

    (void)pthread_mutex_lock(&c->mu);
    rc = c->max > 0 && !c->ids && !c->pending;
    (void)pthread_mutex_unlock(&c->mu);
    return rc;
}
