/* The set of batch_ids claimed in `batches`, kept by the process that tails.
 *
 * Why: POST /items must answer a replay of an already reduced batch with
 * duplicate:true, and asking `batches` costs a find per POST (about 0.5 ms
 * of FerretDB's single core each, a tenth of what the batch's own item
 * inserts cost it). Only the tailer writes claims, and only one process
 * tails (the Consul lock), so that process can know every claim: it loads
 * them all when it starts tailing and adds each one before it writes it.
 *
 * The set answers only while it is complete; otherwise (not tailing, still
 * loading, over DS_CLAIMS_CACHE_MAX entries, disabled) ingest asks
 * `batches` as before. Entries carry the batch's `at` and are pruned with
 * the claims (DS_BATCH_RETENTION_S). Thread-safe. */
#include <string.h>

#include "datasource.h"
#include "shared/log.h"
#include "shared/mongo.h"
#include "shared/xalloc.h"

struct ds_claimed {
    pthread_mutex_t mu;
    json_t *ids;  /* batch_id -> at (ms); NULL while not complete */
    size_t max;   /* most entries (0 = the set is off) */
};

struct ds_claimed *ds_claimed_new(size_t max)
{
    struct ds_claimed *c = sh_xcalloc(1, sizeof(*c));
    (void)pthread_mutex_init(&c->mu, NULL);
    c->max = max;
    return c;
}

void ds_claimed_free(struct ds_claimed *c)
{
    if (!c)
        return;
    json_decref(c->ids);
    (void)pthread_mutex_destroy(&c->mu);
    free(c);
}

/* Swaps in ids (NULL: incomplete) and frees what was there, outside the lock. */
static void swap_ids(struct ds_claimed *c, json_t *ids)
{
    json_t *old;
    (void)pthread_mutex_lock(&c->mu);
    old = c->ids;
    c->ids = ids;
    (void)pthread_mutex_unlock(&c->mu);
    json_decref(old);
}

void ds_claimed_reset(struct ds_claimed *c)
{
    swap_ids(c, NULL);
}

int ds_claimed_load(struct ds_claimed *c, mongoc_client_t *client, const char *db,
                    struct sh_err *err)
{
    mongoc_collection_t *col;
    mongoc_cursor_t *cur;
    bson_t filter = BSON_INITIALIZER;
    bson_t *opts;
    const bson_t *doc;
    bson_error_t berr;
    json_t *ids;
    int rc = 0;

    ds_claimed_reset(c);
    if (c->max == 0)
        return 0;
    col = mongoc_client_get_collection(client, db, DS_BATCHES);
    opts = BCON_NEW("projection", "{", "_id", BCON_INT32(1), "at", BCON_INT32(1), "}");
    cur = mongoc_collection_find_with_opts(col, &filter, opts, NULL);
    ids = json_object();
    while (mongoc_cursor_next(cur, &doc)) {
        bson_iter_t it;
        const char *id;
        uint32_t len;
        int64_t at = 0;
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
        sh_mongo_err(err, &berr, "batches load");
        json_decref(ids);
        ids = NULL;
        rc = -1;
    }
    mongoc_cursor_destroy(cur);
    bson_destroy(opts);
    bson_destroy(&filter);
    mongoc_collection_destroy(col);
    if (ids)
        sh_log_info("claims_cache_loaded claims=%zu", json_object_size(ids));
    swap_ids(c, ids);
    return rc;
}

void ds_claimed_add(struct ds_claimed *c, const char *batch_id, int64_t at)
{
    json_t *dropped = NULL;

    (void)pthread_mutex_lock(&c->mu);
    if (c->ids) {
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

int ds_claimed_complete(struct ds_claimed *c)
{
    int rc;

    (void)pthread_mutex_lock(&c->mu);
    rc = c->ids != NULL;
    (void)pthread_mutex_unlock(&c->mu);
    return rc;
}
