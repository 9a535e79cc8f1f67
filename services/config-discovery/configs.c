/* Reads and guarded changes of materialised configurations: get, list,
 * replace (PUT), delete and claim. Safe from any thread (each call pops its
 * own pooled client).
 *
 * Why version locks: FerretDB v1 (SQLite backend) runs update and
 * findAndModify as read-then-write without isolation. Probes against it
 * showed 800 concurrent {$inc: 1} ending at 102, and twenty conditional
 * updates of one {container: null} document all reporting a match. The one
 * write it does make atomic is an insert under a unique index. So every
 * change of a configuration from version v to v+1 (PUT, claim, DELETE)
 * first inserts {_id: "<id>:<v>"} into config_locks: whoever inserts it owns
 * that transition; everyone else re-reads, or reports a conflict. The write
 * itself still filters on {_id, version: v}, which alone is the guard on
 * real MongoDB (where the lock is merely redundant). The lock is removed
 * after the write: the document has moved past v, so a stale reader that
 * re-takes "<id>:<v>" matches nothing. A lock left behind by a crash is
 * taken over after LOCK_STALE_MS. */
#include "config_discovery.h"

#include <string.h>
#include <unistd.h>

#include "shared/mongo.h"
#include "shared/xalloc.h"

#define LOCK_STALE_MS 30000
#define MAX_ATTEMPTS 50

static int64_t doc_int(const bson_t *doc, const char *key)
{
    bson_iter_t it;
    if (bson_iter_init_find(&it, doc, key) &&
        (BSON_ITER_HOLDS_INT64(&it) || BSON_ITER_HOLDS_INT32(&it)))
        return bson_iter_as_int64(&it);
    return 0;
}

static int64_t doc_date(const bson_t *doc, const char *key)
{
    bson_iter_t it;
    if (bson_iter_init_find(&it, doc, key) && BSON_ITER_HOLDS_DATE_TIME(&it))
        return bson_iter_date_time(&it);
    return cd_now_ms();
}

static int64_t reply_count(const bson_t *reply, const char *key)
{
    bson_iter_t it;
    if (bson_iter_init_find(&it, reply, key))
        return bson_iter_as_int64(&it);
    return 0;
}

static void lock_key(const bson_oid_t *id, int64_t version, char *buf, size_t size)
{
    char hex[25];
    bson_oid_to_string(id, hex);
    (void)snprintf(buf, size, "%s:%lld", hex, (long long)version);
}

/* Takes the v -> v+1 transition of id. 1 taken, 0 someone else holds it, -1. */
static int lock_take(struct cd_ctx *ctx, const bson_oid_t *id, int64_t version, struct sh_err *err)
{
    char key[64];
    struct cd_conn c;
    bson_error_t e;
    int rc = 0;

    lock_key(id, version, key, sizeof(key));
    cd_conn_open(ctx, &c, CD_COLL_LOCKS);
    for (int attempt = 0; attempt < 2; attempt++) {
        int64_t now = cd_now_ms();
        bson_t *doc = BCON_NEW("_id", BCON_UTF8(key), "at", BCON_DATE_TIME(now));
        bson_t *filter, *held = NULL;
        int found;

        if (cd_insert_one(ctx, c.coll, doc, NULL, NULL, &e))
            rc = 1;
        else if (!cd_is_dup(&e)) {
            sh_mongo_err(err, &e, "take configuration lock");
            rc = -1;
        }
        bson_destroy(doc);
        if (rc != 0)
            break;
        /* Held: by a live writer (give up) or by a crashed one (take over). */
        filter = BCON_NEW("_id", BCON_UTF8(key));
        found = cd_find_one(ctx, CD_COLL_LOCKS, filter, NULL, &held, err);
        bson_destroy(filter);
        if (found < 0) {
            rc = -1;
            break;
        }
        if (found == 1) {
            int64_t at = doc_date(held, "at");
            bson_destroy(held);
            if (now - at < LOCK_STALE_MS)
                break;
            filter = BCON_NEW("_id", BCON_UTF8(key), "at", BCON_DATE_TIME(at));
            (void)cd_delete_one(ctx, c.coll, filter, NULL, NULL, &e);
            bson_destroy(filter);
        }
    }
    cd_conn_close(ctx, &c);
    return rc;
}

static void lock_drop(struct cd_ctx *ctx, const bson_oid_t *id, int64_t version)
{
    char key[64];
    struct cd_conn c;
    bson_t *filter;

    lock_key(id, version, key, sizeof(key));
    filter = BCON_NEW("_id", BCON_UTF8(key));
    cd_conn_open(ctx, &c, CD_COLL_LOCKS);
    /* A failure leaves a lock on a version the document has left: harmless. */
    (void)cd_delete_one(ctx, c.coll, filter, NULL, NULL, NULL);
    cd_conn_close(ctx, &c);
    bson_destroy(filter);
}

static void backoff(int attempt)
{
    (void)usleep((useconds_t)(1000 * (1 + attempt % 8) + (rand() % 1000)));
}

int cd_store_get(struct cd_ctx *ctx, const bson_oid_t *id, json_t **ret_doc, struct sh_err *err)
{
    bson_t *doc = NULL;
    int rc = cd_find_by_id(ctx, CD_COLL_CONFIGS, id, &doc, err);
    if (rc == 1) {
        json_t *j = cd_doc_to_json(doc, err);
        bson_destroy(doc);
        if (!j)
            return -1;
        *ret_doc = j;
    }
    return rc;
}

static bson_t *list_filter(const struct cd_list_query *q)
{
    bson_t *f = bson_new();
    if (q->type)
        BSON_APPEND_UTF8(f, "type", q->type);
    if (q->collection)
        BSON_APPEND_UTF8(f, "collection", q->collection);
    if (q->container_null)
        BSON_APPEND_NULL(f, "container");
    else if (q->container)
        BSON_APPEND_UTF8(f, "container", q->container);
    return f;
}

int cd_store_list(struct cd_ctx *ctx, const struct cd_list_query *q, json_t **ret,
                  struct sh_err *err)
{
    bson_t *filter = list_filter(q);
    /* By _id: stable pages, creation order for scraper configurations, and
     * 2-3x cheaper than a created_at sort on FerretDB (which sorts in memory). */
    bson_t *opts = BCON_NEW("sort", "{", "_id", BCON_INT32(1), "}", "limit", BCON_INT64(q->limit),
                            "skip", BCON_INT64(q->skip));
    json_t *arr = json_array();
    struct cd_conn c;
    mongoc_cursor_t *cur;
    const bson_t *doc;
    bson_error_t e;
    int64_t total = -1;
    int rc = 0;

    cd_conn_open(ctx, &c, CD_COLL_CONFIGS);
    cur = mongoc_collection_find_with_opts(c.coll, filter, opts, NULL);
    while (mongoc_cursor_next(cur, &doc)) {
        json_t *j = cd_doc_to_json(doc, err);
        if (!j) {
            rc = -1;
            break;
        }
        (void)json_array_append_new(arr, j);
    }
    if (rc == 0 && mongoc_cursor_error(cur, &e)) {
        sh_mongo_err(err, &e, "find configurations");
        rc = -1;
    }
    mongoc_cursor_destroy(cur);
    if (rc == 0) {
        total = mongoc_collection_count_documents(c.coll, filter, NULL, NULL, NULL, &e);
        if (total < 0) {
            sh_mongo_err(err, &e, "count configurations");
            rc = -1;
        }
    }
    cd_conn_close(ctx, &c);
    bson_destroy(filter);
    bson_destroy(opts);
    if (rc < 0) {
        json_decref(arr);
        return -1;
    }
    *ret = json_pack("{s:o, s:I}", "configurations", arr, "total", (json_int_t)total);
    return 0;
}

/* Replaces id at version with doc under the version lock. 1 written, 0 the
 * document moved on (re-read), -1 error. */
static int guarded_replace(struct cd_ctx *ctx, const bson_oid_t *id, int64_t version,
                           const bson_t *doc, struct sh_err *err)
{
    bson_t *filter, reply;
    struct cd_conn c;
    bson_error_t e;
    int rc = lock_take(ctx, id, version, err);

    if (rc <= 0)
        return rc;
    filter = BCON_NEW("_id", BCON_OID(id), "version", BCON_INT64(version));
    cd_conn_open(ctx, &c, CD_COLL_CONFIGS);
    if (cd_replace_one(ctx, c.coll, filter, doc, NULL, &reply, &e))
        rc = reply_count(&reply, "matchedCount") > 0;
    else {
        sh_mongo_err(err, &e, "replace configuration");
        rc = -1;
    }
    cd_conn_close(ctx, &c);
    bson_destroy(&reply);
    bson_destroy(filter);
    lock_drop(ctx, id, version);
    return rc;
}

int cd_store_replace(struct cd_ctx *ctx, const bson_oid_t *id, const char *expect_type,
                     const json_t *user, int64_t expect_version, int container_mode,
                     const char *container, json_t **ret_doc, struct sh_err *err)
{
    char *spec = json_dumps(user, JSON_COMPACT);
    const char *new_coll = json_string_value(json_object_get(user, "collection"));
    char *old_coll = NULL;
    int rc = -1, attempt;

    for (attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
        bson_t *cur = NULL, *doc;
        const char *type, *cur_coll, *cur_container;
        int64_t version;
        int found = cd_find_by_id(ctx, CD_COLL_CONFIGS, id, &cur, err);

        if (found <= 0) {
            rc = found;
            goto out;
        }
        type = cd_doc_str(cur, "type");
        cur_coll = cd_doc_str(cur, "collection");
        cur_container = cd_doc_str(cur, "container");
        version = doc_int(cur, "version");
        if (!type || !cur_coll || strcmp(type, expect_type) != 0) {
            sh_err_set(err, SH_ECONFLICT, "the configuration's type is %s, not %s",
                       type ? type : "unknown", expect_type);
            bson_destroy(cur);
            goto out;
        }
        if (expect_version >= 0 && version != expect_version) {
            sh_err_set(err, SH_ECONFLICT, "version conflict: stored version is %lld, not %lld",
                       (long long)version, (long long)expect_version);
            bson_destroy(cur);
            goto out;
        }
        doc = BCON_NEW("_id", BCON_OID(id), "type", BCON_UTF8(type), "collection",
                       BCON_UTF8(new_coll ? new_coll : cur_coll));
        if (container_mode ? container != NULL : cur_container != NULL)
            BSON_APPEND_UTF8(doc, "container", container_mode ? container : cur_container);
        else
            BSON_APPEND_NULL(doc, "container");
        BSON_APPEND_INT64(doc, "version", version + 1);
        BSON_APPEND_DATE_TIME(doc, "created_at", doc_date(cur, "created_at"));
        BSON_APPEND_DATE_TIME(doc, "updated_at", cd_now_ms());
        BSON_APPEND_UTF8(doc, "spec", spec);
        free(old_coll);
        old_coll = sh_xstrdup(cur_coll);
        bson_destroy(cur);

        found = guarded_replace(ctx, id, version, doc, err);
        if (found == 1) {
            *ret_doc = cd_doc_to_json(doc, err);
            bson_destroy(doc);
            if (!*ret_doc)
                goto out;
            rc = 1;
            break;
        }
        bson_destroy(doc);
        if (found < 0)
            goto out;
        if (expect_version >= 0) {
            sh_err_set(err, SH_ECONFLICT, "version conflict: changed concurrently");
            goto out;
        }
        backoff(attempt);
    }
    if (rc != 1) {
        sh_err_set(err, SH_ECONFLICT, "too many concurrent changes, try again");
        goto out;
    }
    if (strcmp(expect_type, "scraper") == 0 && new_coll && strcmp(new_coll, old_coll) != 0) {
        if (cd_store_sync_endpoint(ctx, old_coll, NULL, err) < 0 ||
            cd_store_sync_endpoint(ctx, new_coll, NULL, err) < 0) {
            /* The replace stands; the next change of either collection
             * syncs its endpoint configuration again. */
            sh_err_prefix(err, "replaced, but the endpoint sync failed: ");
            json_decref(*ret_doc);
            *ret_doc = NULL;
            rc = -1;
        }
    }
out:
    free(old_coll);
    free(spec);
    return rc;
}

/* Is there a scraper configuration for collection? 1/0/-1. */
static int has_scrapers(struct cd_ctx *ctx, const char *collection, struct sh_err *err)
{
    bson_t *f = BCON_NEW("collection", BCON_UTF8(collection), "type", BCON_UTF8("scraper"));
    int rc = cd_find_one(ctx, CD_COLL_CONFIGS, f, NULL, NULL, err);
    bson_destroy(f);
    return rc;
}

int cd_store_delete(struct cd_ctx *ctx, const bson_oid_t *id, int *ret_endpoint_deleted,
                    struct sh_err *err)
{
    char *collection = NULL;
    int rc = -1, scraper = 0, change = 0;

    *ret_endpoint_deleted = 0;
    for (int attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
        bson_t *cur = NULL, *filter, reply;
        const char *type, *coll;
        struct cd_conn c;
        bson_error_t e;
        int64_t version;
        int found = cd_find_by_id(ctx, CD_COLL_CONFIGS, id, &cur, err);

        if (found <= 0) {
            free(collection);
            return found;
        }
        type = cd_doc_str(cur, "type");
        coll = cd_doc_str(cur, "collection");
        version = doc_int(cur, "version");
        scraper = type && strcmp(type, "scraper") == 0;
        free(collection);
        collection = sh_xstrdup(coll ? coll : "");
        bson_destroy(cur);

        if (!scraper) {
            found = has_scrapers(ctx, collection, err);
            if (found != 0) {
                if (found > 0)
                    sh_err_set(err, SH_ECONFLICT,
                               "collection %s still has scraper configurations; delete those "
                               "(its endpoint configuration goes with the last one)",
                               collection);
                break;
            }
        }
        found = lock_take(ctx, id, version, err);
        if (found < 0)
            break;
        if (found == 0) {
            backoff(attempt);
            continue;
        }
        if (scraper) {
            /* Tombstone first: a replayed capped document must never
             * resurrect what was deleted. */
            bson_t *tomb = BCON_NEW("_id", BCON_OID(id), "deleted_at", BCON_DATE_TIME(cd_now_ms()));
            cd_conn_open(ctx, &c, CD_COLL_DELETED);
            found = cd_insert_one(ctx, c.coll, tomb, NULL, NULL, &e) || cd_is_dup(&e);
            cd_conn_close(ctx, &c);
            bson_destroy(tomb);
            if (!found) {
                sh_mongo_err(err, &e, "insert tombstone");
                lock_drop(ctx, id, version);
                break;
            }
        }
        filter = BCON_NEW("_id", BCON_OID(id), "version", BCON_INT64(version));
        cd_conn_open(ctx, &c, CD_COLL_CONFIGS);
        found = cd_delete_one(ctx, c.coll, filter, NULL, &reply, &e)
                    ? reply_count(&reply, "deletedCount") > 0
                    : -1;
        if (found < 0)
            sh_mongo_err(err, &e, "delete configuration");
        cd_conn_close(ctx, &c);
        bson_destroy(&reply);
        bson_destroy(filter);
        lock_drop(ctx, id, version);
        if (found < 0)
            break;
        if (found == 0) {
            backoff(attempt); /* changed under us: look again */
            continue;
        }
        rc = 1;
        break;
    }
    if (rc == 1 && scraper) {
        if (cd_store_sync_endpoint(ctx, collection, &change, err) < 0) {
            sh_err_prefix(err, "deleted, but the endpoint sync failed: ");
            rc = -1;
        }
        *ret_endpoint_deleted = change < 0;
    } else if (rc != 1 && err && err->code == SH_OK) {
        sh_err_set(err, SH_ECONFLICT, "too many concurrent changes, try again");
    }
    free(collection);
    return rc;
}

/* Tries to move candidate (at version) from free to container. 1 won, 0 lost, -1. */
static int claim_one(struct cd_ctx *ctx, const bson_oid_t *id, int64_t version,
                     const char *container, struct sh_err *err)
{
    bson_t *filter, *update, reply;
    struct cd_conn c;
    bson_error_t e;
    int rc = lock_take(ctx, id, version, err);

    if (rc <= 0)
        return rc;
    filter = BCON_NEW("_id", BCON_OID(id), "version", BCON_INT64(version), "container", BCON_NULL);
    update = BCON_NEW("$set", "{", "container", BCON_UTF8(container), "updated_at",
                      BCON_DATE_TIME(cd_now_ms()), "version", BCON_INT64(version + 1), "}");
    cd_conn_open(ctx, &c, CD_COLL_CONFIGS);
    if (cd_update_one(ctx, c.coll, filter, update, NULL, &reply, &e))
        rc = reply_count(&reply, "matchedCount") > 0;
    else {
        sh_mongo_err(err, &e, "claim");
        rc = -1;
    }
    cd_conn_close(ctx, &c);
    bson_destroy(&reply);
    bson_destroy(filter);
    bson_destroy(update);
    lock_drop(ctx, id, version);
    return rc;
}

/* May a claim take this free configuration? Not when its user fields name
 * `replicas` other than 1: 0 parks it, and more than one are placed by the
 * orchestrator itself (a claimer is a single runner). The user fields are the
 * JSON string `spec`, so this is decided here in C rather than in the query
 * (FerretDB v1 cannot filter inside it either). */
static int claimable(const bson_t *doc)
{
    const char *spec = cd_doc_str(doc, "spec");
    json_t *user, *r;
    int ok;

    if (!spec)
        return 1;
    user = json_loads(spec, 0, NULL);
    r = json_object_get(user, "replicas");
    ok = !r || json_is_null(r) || (json_is_integer(r) && json_integer_value(r) == 1);
    json_decref(user);
    return ok;
}

#define CLAIM_PAGE 32

/* One page of free configurations of type after *after (NULL = from the
 * start), by _id. Fills ids/versions with the claimable ones (*ret_n) and
 * *after with the page's last _id. Returns the page's size (claimable or not)
 * or -1. */
static int claim_page(struct cd_ctx *ctx, const char *type, bson_oid_t *after, int paging,
                      bson_oid_t *ids, int64_t *versions, size_t *ret_n, struct sh_err *err)
{
    bson_t *filter = BCON_NEW("type", BCON_UTF8(type), "container", BCON_NULL);
    bson_t *opts =
        BCON_NEW("sort", "{", "_id", BCON_INT32(1), "}", "limit", BCON_INT64(CLAIM_PAGE),
                 "projection", "{", "version", BCON_INT32(1), "spec", BCON_INT32(1), "}");
    struct cd_conn c;
    mongoc_cursor_t *cur;
    const bson_t *doc;
    bson_error_t e;
    int seen = 0;

    if (paging)
        BCON_APPEND(filter, "_id", "{", "$gt", BCON_OID(after), "}");
    *ret_n = 0;
    cd_conn_open(ctx, &c, CD_COLL_CONFIGS);
    cur = mongoc_collection_find_with_opts(c.coll, filter, opts, NULL);
    while (seen < CLAIM_PAGE && mongoc_cursor_next(cur, &doc)) {
        bson_iter_t it;
        if (!bson_iter_init_find(&it, doc, "_id") || !BSON_ITER_HOLDS_OID(&it))
            continue;
        seen++;
        bson_oid_copy(bson_iter_oid(&it), after);
        if (!claimable(doc))
            continue;
        bson_oid_copy(bson_iter_oid(&it), &ids[*ret_n]);
        versions[(*ret_n)++] = doc_int(doc, "version");
    }
    if (mongoc_cursor_error(cur, &e)) {
        sh_mongo_err(err, &e, "find free configurations");
        seen = -1;
    }
    mongoc_cursor_destroy(cur);
    cd_conn_close(ctx, &c);
    bson_destroy(opts);
    bson_destroy(filter);
    return seen;
}

int cd_store_claim(struct cd_ctx *ctx, const char *type, const char *container, json_t **ret_doc,
                   struct sh_err *err)
{
    bson_t *held = NULL, *filter;
    bson_oid_t after;
    int rc, paging = 0;

    sh_err_clear(err);
    /* Idempotent: a claimer retrying after a lost answer, or restarted under
     * the same name, gets its own back (whatever its replicas say now). */
    filter = BCON_NEW("type", BCON_UTF8(type), "container", BCON_UTF8(container));
    rc = cd_find_one(ctx, CD_COLL_CONFIGS, filter, NULL, &held, err);
    bson_destroy(filter);
    if (rc < 0)
        return -1;
    if (rc == 1) {
        *ret_doc = cd_doc_to_json(held, err);
        bson_destroy(held);
        return *ret_doc ? 1 : -1;
    }

    memset(&after, 0, sizeof(after));
    for (int round = 0; round < MAX_ATTEMPTS; round++) {
        bson_oid_t ids[CLAIM_PAGE];
        int64_t versions[CLAIM_PAGE];
        size_t n = 0;
        int seen = claim_page(ctx, type, &after, paging, ids, versions, &n, err);

        if (seen < 0)
            return -1;
        if (n == 0) {
            if (seen < CLAIM_PAGE)
                return 0; /* nothing (claimable) is free */
            paging = 1;   /* a full page of parked/multi-replica ones: look further */
            continue;
        }
        /* Start at a random candidate so that concurrent claimers spread. */
        size_t start = (size_t)rand() % n;
        rc = 0;
        for (size_t k = 0; k < n && rc == 0; k++) {
            size_t i = (start + k) % n;
            rc = claim_one(ctx, &ids[i], versions[i], container, err);
            if (rc == 1) {
                bson_t *won = NULL;
                rc = cd_find_by_id(ctx, CD_COLL_CONFIGS, &ids[i], &won, err);
                if (rc == 1) {
                    *ret_doc = cd_doc_to_json(won, err);
                    rc = *ret_doc ? 1 : -1;
                } else if (rc == 0) {
                    sh_err_set(err, SH_ECONFLICT, "claimed configuration deleted meanwhile");
                    rc = -1;
                }
                bson_destroy(won);
            }
        }
        if (rc != 0)
            return rc;
        paging = 0; /* lost every candidate to other claimers: look again from the start */
    }
    return 0;
}
