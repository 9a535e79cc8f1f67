/* The configuration store on MongoDB. Every function pops a client from the
 * pool for its own duration, so all of them are safe to call from any thread.
 *
 * Exactly-once rules (why each write looks the way it does):
 *  - a scraper configuration's _id is its capped document's _id, so
 *    materialising the same capped document twice (a restart, a second
 *    replica) hits the unique _id index instead of creating a copy;
 *  - an endpoint configuration's _id is derived from its collection name
 *    (cd_endpoint_oid), so two replicas creating it at once collide on _id;
 *  - a deleted scraper configuration leaves a tombstone in
 *    deleted_configurations, checked before materialising, so replaying the
 *    capped collection never resurrects it;
 *  - claims and replaces are single-document atomic operations guarded by
 *    their filter (container: null / version: N). */
#include "config_discovery.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shared/mongo.h"
#include "shared/xalloc.h"

#define DUP_KEY 11000
#define NS_EXISTS 48

void cd_seq_id(int64_t seq, char buf[CD_SEQ_ID_LEN])
{
    (void)snprintf(buf, CD_SEQ_ID_LEN, "%0*lld", CD_SEQ_DIGITS, (long long)(seq < 0 ? 0 : seq));
}

int64_t cd_doc_seq(const bson_t *doc)
{
    bson_iter_t it;
    const char *s, *end;
    long long v;

    if (!bson_iter_init_find(&it, doc, "_id"))
        return -1;
    if (BSON_ITER_HOLDS_INT64(&it) || BSON_ITER_HOLDS_INT32(&it))
        return bson_iter_as_int64(&it);
    if (!BSON_ITER_HOLDS_UTF8(&it))
        return -1;
    s = bson_iter_utf8(&it, NULL);
    if (strlen(s) != CD_SEQ_DIGITS)
        return -1;
    errno = 0;
    v = strtoll(s, (char **)&end, 10);
    return errno == 0 && *end == '\0' && v >= 0 ? (int64_t)v : -1;
}

void cd_conn_open(struct cd_ctx *ctx, struct cd_conn *c, const char *name)
{
    c->client = mongoc_client_pool_pop(ctx->pool);
    c->coll = mongoc_client_get_collection(c->client, ctx->db, name);
}

bool cd_insert_one(struct cd_ctx *ctx, mongoc_collection_t *coll, const bson_t *doc,
                   const bson_t *opts, bson_t *reply, bson_error_t *error)
{
    bool ok;

    sh_mongo_write_begin(&ctx->writes);
    ok = mongoc_collection_insert_one(coll, doc, opts, reply, error);
    sh_mongo_write_end(&ctx->writes);
    return ok;
}

bool cd_delete_one(struct cd_ctx *ctx, mongoc_collection_t *coll, const bson_t *filter,
                   const bson_t *opts, bson_t *reply, bson_error_t *error)
{
    bool ok;

    sh_mongo_write_begin(&ctx->writes);
    ok = mongoc_collection_delete_one(coll, filter, opts, reply, error);
    sh_mongo_write_end(&ctx->writes);
    return ok;
}

bool cd_replace_one(struct cd_ctx *ctx, mongoc_collection_t *coll, const bson_t *filter,
                    const bson_t *doc, const bson_t *opts, bson_t *reply, bson_error_t *error)
{
    bool ok;

    sh_mongo_write_begin(&ctx->writes);
    ok = mongoc_collection_replace_one(coll, filter, doc, opts, reply, error);
    sh_mongo_write_end(&ctx->writes);
    return ok;
}

bool cd_update_one(struct cd_ctx *ctx, mongoc_collection_t *coll, const bson_t *filter,
                   const bson_t *update, const bson_t *opts, bson_t *reply, bson_error_t *error)
{
    bool ok;

    sh_mongo_write_begin(&ctx->writes);
    ok = mongoc_collection_update_one(coll, filter, update, opts, reply, error);
    sh_mongo_write_end(&ctx->writes);
    return ok;
}

void cd_conn_close(struct cd_ctx *ctx, struct cd_conn *c)
{
    if (c->coll)
        mongoc_collection_destroy(c->coll);
    if (c->client)
        mongoc_client_pool_push(ctx->pool, c->client);
    c->coll = NULL;
    c->client = NULL;
}

int cd_is_dup(const bson_error_t *e)
{
    return e->code == DUP_KEY;
}

/* Runs a command on the database; 0, or -1 with err. ok_code: an error code
 * that counts as success (0 = none). */
static int db_command(struct cd_ctx *ctx, const bson_t *cmd, int ok_code, const char *what,
                      struct sh_err *err)
{
    mongoc_client_t *client = mongoc_client_pool_pop(ctx->pool);
    mongoc_database_t *db = mongoc_client_get_database(client, ctx->db);
    bson_error_t e;
    bson_t reply;
    int rc = 0;

    if (!mongoc_database_write_command_with_opts(db, cmd, NULL, &reply, &e) &&
        !(ok_code && (int)e.code == ok_code)) {
        sh_mongo_err(err, &e, what);
        rc = -1;
    }
    bson_destroy(&reply);
    mongoc_database_destroy(db);
    mongoc_client_pool_push(ctx->pool, client);
    return rc;
}

static int create_index(struct cd_ctx *ctx, const char *coll, const char *name, const bson_t *keys,
                        int unique, struct sh_err *err)
{
    bson_t *cmd =
        BCON_NEW("createIndexes", BCON_UTF8(coll), "indexes", "[", "{", "key", BCON_DOCUMENT(keys),
                 "name", BCON_UTF8(name), "unique", BCON_BOOL(unique), "}", "]");
    int rc = db_command(ctx, cmd, 0, "createIndexes", err);
    bson_destroy(cmd);
    return rc;
}

int cd_store_init(struct cd_ctx *ctx, struct sh_err *err)
{
    bson_t *cmd, *k1, *k2;
    struct cd_conn c;
    bson_error_t e;
    int64_t n;
    int rc;

    {
        mongoc_client_t *client = mongoc_client_pool_pop(ctx->pool);
        rc = sh_mongo_is_ferretdb(client, err);
        mongoc_client_pool_push(ctx->pool, client);
        if (rc < 0)
            return -1;
        ctx->ferretdb = rc;
        ctx->writes.on = rc;
    }
    cmd = BCON_NEW("create", BCON_UTF8(CD_COLL_CAPPED), "capped", BCON_BOOL(true), "size",
                   BCON_INT64(ctx->cfg->capped_size));
    rc = db_command(ctx, cmd, NS_EXISTS, "create " CD_COLL_CAPPED, err);
    bson_destroy(cmd);
    if (rc != 0)
        return -1;

    /* A tailable cursor on an empty capped collection dies at once (MongoDB
     * and FerretDB alike); the marker {_id: 0} keeps the watcher's cursor
     * alive. Every replica tries to add it; the _id index keeps one. */
    cd_conn_open(ctx, &c, CD_COLL_CAPPED);
    {
        char id[CD_SEQ_ID_LEN];
        bson_t *marker;
        cd_seq_id(0, id);
        marker = BCON_NEW("_id", BCON_UTF8(id), "marker", BCON_BOOL(true));
        n = cd_insert_one(ctx, c.coll, marker, NULL, NULL, &e) || cd_is_dup(&e) ? 0 : -1;
        bson_destroy(marker);
    }
    cd_conn_close(ctx, &c);
    if (n < 0) {
        sh_mongo_err(err, &e, CD_COLL_CAPPED);
        return -1;
    }

    k1 = BCON_NEW("type", BCON_INT32(1), "container", BCON_INT32(1));
    k2 = BCON_NEW("collection", BCON_INT32(1), "type", BCON_INT32(1));
    rc = create_index(ctx, CD_COLL_CONFIGS, "type_container", k1, 0, err);
    if (rc == 0)
        rc = create_index(ctx, CD_COLL_CONFIGS, "collection_type", k2, 0, err);
    bson_destroy(k1);
    bson_destroy(k2);
    return rc;
}

int cd_store_fetch(struct cd_ctx *ctx, int64_t from_seq, long limit, bson_t ***ret_docs,
                   size_t *ret_n, struct sh_err *err)
{
    bson_t **docs = sh_xcalloc((size_t)limit, sizeof(*docs));
    size_t n = 0;

    /* Point lookups by _id: the one query FerretDB v1 answers from an index
     * (a range on any field scans the whole collection). Sequence numbers
     * have no holes, so the run stops at the first one not there yet. */
    for (int64_t s = from_seq; s < from_seq + limit; s++) {
        char id[CD_SEQ_ID_LEN];
        bson_t *filter;
        int rc;
        cd_seq_id(s, id);
        filter = BCON_NEW("_id", BCON_UTF8(id));
        rc = cd_find_one(ctx, CD_COLL_CAPPED, filter, NULL, &docs[n], err);
        bson_destroy(filter);
        if (rc < 0) {
            cd_docs_free(docs, n);
            return -1;
        }
        if (rc == 0)
            break;
        n++;
    }
    *ret_docs = docs;
    *ret_n = n;
    return 0;
}

int cd_store_seq_after(struct cd_ctx *ctx, int64_t seq, int64_t *ret_next, struct sh_err *err)
{
    char id[CD_SEQ_ID_LEN];
    bson_t *filter;
    bson_t *opts = BCON_NEW("sort", "{", "_id", BCON_INT32(1), "}", "projection", "{", "_id",
                            BCON_INT32(1), "}");
    bson_t *doc = NULL;
    int rc;

    cd_seq_id(seq, id);
    filter = BCON_NEW("_id", "{", "$gt", BCON_UTF8(id), "}");
    rc = cd_find_one(ctx, CD_COLL_CAPPED, filter, opts, &doc, err);
    if (rc == 1) {
        int64_t next = cd_doc_seq(doc);
        if (next > seq)
            *ret_next = next;
        else
            rc = 0;
    }
    bson_destroy(doc);
    bson_destroy(filter);
    bson_destroy(opts);
    return rc;
}

void cd_docs_free(bson_t **docs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        bson_destroy(docs[i]);
    free(docs);
}

int cd_store_submit(struct cd_ctx *ctx, const bson_oid_t *id, const char *collection,
                    const json_t *user, int64_t *ret_seq, struct sh_err *err)
{
    char *spec = json_dumps(user, JSON_COMPACT);
    int64_t created = cd_now_ms(), seq, tail_next;
    struct cd_conn c;
    bson_error_t e;
    int rc = -1;

    /* _id = seq (cd_seq_id) = the next free number, inserted under the _id index: a
     * racing writer (another replica) makes us take the next one. A number is
     * only tried once the one below it is visible, so sequence order is
     * commit order and there are no holes. The first guess is one past what
     * this process inserted last or the tailer has processed (all below its
     * position exist), so probing stays short; the local lock keeps this
     * process's own writers from racing each other. */
    sh_err_clear(err);
    (void)pthread_mutex_lock(&ctx->mu);
    tail_next = ctx->next_seq;
    (void)pthread_mutex_unlock(&ctx->mu);
    (void)pthread_mutex_lock(&ctx->seq_mu);
    seq = (ctx->last_seq > tail_next - 1 ? ctx->last_seq : tail_next - 1) + 1;
    cd_conn_open(ctx, &c, CD_COLL_CAPPED);
    for (int attempt = 0; attempt < 100000; attempt++) {
        char sid[CD_SEQ_ID_LEN];
        bson_t *doc;
        int ok;
        cd_seq_id(seq, sid);
        doc = BCON_NEW("_id", BCON_UTF8(sid), "config_id", BCON_OID(id), "type",
                       BCON_UTF8("scraper"), "collection", BCON_UTF8(collection), "created_at",
                       BCON_DATE_TIME(created), "spec", BCON_UTF8(spec));
        ok = cd_insert_one(ctx, c.coll, doc, NULL, NULL, &e);
        bson_destroy(doc);
        if (ok) {
            rc = 0;
            break;
        }
        if (!cd_is_dup(&e)) {
            sh_mongo_err(err, &e, "insert " CD_COLL_CAPPED);
            break;
        }
        /* Taken: far behind (a fresh process) jumps to the highest number. */
        if (attempt == 8) {
            bson_t *all = bson_new(), *doc_max = NULL;
            bson_t *opts = BCON_NEW("sort", "{", "_id", BCON_INT32(-1), "}", "projection", "{",
                                    "_id", BCON_INT32(1), "}");
            int found = cd_find_one(ctx, CD_COLL_CAPPED, all, opts, &doc_max, err);
            if (found == 1 && cd_doc_seq(doc_max) > seq)
                seq = cd_doc_seq(doc_max);
            bson_destroy(doc_max);
            bson_destroy(all);
            bson_destroy(opts);
            if (found < 0)
                break;
        }
        seq++;
    }
    cd_conn_close(ctx, &c);
    if (rc == 0) {
        ctx->last_seq = seq;
        *ret_seq = seq;
    } else if (err && err->code == SH_OK) {
        sh_err_set(err, SH_ECONFLICT, "could not take a sequence number (contention)");
    }
    (void)pthread_mutex_unlock(&ctx->seq_mu);
    free(spec);
    return rc;
}

int cd_find_one(struct cd_ctx *ctx, const char *coll, const bson_t *filter, const bson_t *opts,
                bson_t **ret, struct sh_err *err)
{
    struct cd_conn c;
    mongoc_cursor_t *cur;
    const bson_t *doc;
    bson_error_t e;
    bson_t *o = opts ? bson_copy(opts) : bson_new();
    int rc = 0;

    BSON_APPEND_INT64(o, "limit", 1);
    cd_conn_open(ctx, &c, coll);
    cur = mongoc_collection_find_with_opts(c.coll, filter, o, NULL);
    if (mongoc_cursor_next(cur, &doc)) {
        if (ret)
            *ret = bson_copy(doc);
        rc = 1;
    } else if (mongoc_cursor_error(cur, &e)) {
        sh_mongo_err(err, &e, coll);
        rc = -1;
    }
    mongoc_cursor_destroy(cur);
    cd_conn_close(ctx, &c);
    bson_destroy(o);
    return rc;
}

int cd_find_by_id(struct cd_ctx *ctx, const char *coll, const bson_oid_t *id, bson_t **ret,
                  struct sh_err *err)
{
    bson_t *filter = BCON_NEW("_id", BCON_OID(id));
    int rc = cd_find_one(ctx, coll, filter, NULL, ret, err);
    bson_destroy(filter);
    return rc;
}

const char *cd_doc_str(const bson_t *doc, const char *key)
{
    bson_iter_t it;
    if (bson_iter_init_find(&it, doc, key) && BSON_ITER_HOLDS_UTF8(&it))
        return bson_iter_utf8(&it, NULL);
    return NULL;
}

/* ttl of a stored scraper document's spec, or dflt. */
static json_int_t spec_ttl(const bson_t *doc, json_int_t dflt)
{
    const char *spec = cd_doc_str(doc, "spec");
    json_t *j = spec ? json_loads(spec, 0, NULL) : NULL;
    json_t *ttl = json_object_get(j, "ttl");
    json_int_t v =
        json_is_integer(ttl) && json_integer_value(ttl) > 0 ? json_integer_value(ttl) : dflt;
    json_decref(j);
    return v;
}

/* Inserts collection's endpoint configuration under its deterministic id.
 * 1 created, 0 it existed (duplicate _id), -1 error. */
static int insert_endpoint(struct cd_ctx *ctx, const char *collection, json_int_t ttl,
                           struct sh_err *err)
{
    json_t *user;
    char *spec;
    int64_t now = cd_now_ms();
    bson_oid_t eid;
    bson_t *doc;
    struct cd_conn c;
    bson_error_t e;
    int rc;

    cd_endpoint_oid(collection, &eid);
    /* Usually it exists (one per collection, many scrapers): a lookup is a
     * read, a refused insert a failed write (FerretDB then retries the batch
     * document by document: two SQLite write transactions). */
    rc = cd_find_by_id(ctx, CD_COLL_CONFIGS, &eid, NULL, err);
    if (rc != 0)
        return rc < 0 ? -1 : 0;
    rc = 1;
    user = json_pack("{s:s, s:I}", "collection", collection, "ttl", ttl);
    spec = json_dumps(user, JSON_COMPACT);
    doc = BCON_NEW("_id", BCON_OID(&eid), "type", BCON_UTF8("endpoint"), "collection",
                   BCON_UTF8(collection), "container", BCON_NULL, "version", BCON_INT64(1),
                   "created_at", BCON_DATE_TIME(now), "updated_at", BCON_DATE_TIME(now), "spec",
                   BCON_UTF8(spec ? spec : "{}"));
    cd_conn_open(ctx, &c, CD_COLL_CONFIGS);
    if (!cd_insert_one(ctx, c.coll, doc, NULL, NULL, &e)) {
        rc = cd_is_dup(&e) ? 0 : -1;
        if (rc < 0)
            sh_mongo_err(err, &e, "insert endpoint configuration");
    }
    cd_conn_close(ctx, &c);
    bson_destroy(doc);
    free(spec);
    json_decref(user);
    return rc;
}

int cd_store_sync_endpoint(struct cd_ctx *ctx, const char *collection, int *ret_change,
                           struct sh_err *err)
{
    bson_oid_t eid;
    int change = 0;

    cd_endpoint_oid(collection, &eid);
    for (int round = 0; round < 5; round++) {
        bson_t *filter =
            BCON_NEW("collection", BCON_UTF8(collection), "type", BCON_UTF8("scraper"));
        bson_t *opts = BCON_NEW("projection", "{", "spec", BCON_INT32(1), "}");
        bson_t *scraper = NULL;
        int has = cd_find_one(ctx, CD_COLL_CONFIGS, filter, opts, &scraper, err);
        int changed = 0;

        bson_destroy(filter);
        bson_destroy(opts);
        if (has < 0)
            return -1;
        if (has) {
            changed =
                insert_endpoint(ctx, collection, spec_ttl(scraper, ctx->cfg->endpoint_ttl), err);
            bson_destroy(scraper);
            if (changed < 0)
                return -1;
            if (changed)
                change = 1;
        } else {
            bson_t *del = BCON_NEW("_id", BCON_OID(&eid), "type", BCON_UTF8("endpoint"));
            struct cd_conn c;
            bson_error_t e;
            bson_t reply;
            int ok;
            cd_conn_open(ctx, &c, CD_COLL_CONFIGS);
            ok = cd_delete_one(ctx, c.coll, del, NULL, &reply, &e);
            cd_conn_close(ctx, &c);
            bson_destroy(del);
            if (!ok) {
                sh_mongo_err(err, &e, "delete endpoint configuration");
                bson_destroy(&reply);
                return -1;
            } else {
                bson_iter_t it;
                if (bson_iter_init_find(&it, &reply, "deletedCount") &&
                    bson_iter_as_int64(&it) > 0) {
                    changed = 1;
                    change = -1;
                }
            }
            bson_destroy(&reply);
        }
        if (!changed)
            break;
        /* Changed: look again, a concurrent create/delete may have raced us. */
    }
    if (ret_change)
        *ret_change = change;
    return 0;
}

int cd_store_materialise(struct cd_ctx *ctx, const bson_t *capped, int *ret_changed,
                         struct sh_err *err)
{
    const char *spec = cd_doc_str(capped, "spec");
    const char *collection = cd_doc_str(capped, "collection");
    bson_iter_t it;
    const bson_oid_t *id;
    int64_t created;
    bson_t *doc, *current = NULL;
    struct cd_conn c;
    bson_error_t e;
    int rc, change = 0, inserted = 0;
    char *sync_coll = NULL;

    *ret_changed = 0;
    if (!spec || !collection || !bson_iter_init_find(&it, capped, "config_id") ||
        !BSON_ITER_HOLDS_OID(&it))
        return 0; /* a marker, or not ours */
    id = bson_iter_oid(&it);
    created = bson_iter_init_find(&it, capped, "created_at") && BSON_ITER_HOLDS_DATE_TIME(&it)
                  ? bson_iter_date_time(&it)
                  : cd_now_ms();

    rc = cd_find_by_id(ctx, CD_COLL_DELETED, id, NULL, err);
    if (rc != 0)
        return rc < 0 ? -1 : 0; /* tombstoned: deleted after an earlier materialisation */

    doc = BCON_NEW("_id", BCON_OID(id), "type", BCON_UTF8("scraper"), "collection",
                   BCON_UTF8(collection), "container", BCON_NULL, "version", BCON_INT64(1),
                   "created_at", BCON_DATE_TIME(created), "updated_at", BCON_DATE_TIME(created),
                   "spec", BCON_UTF8(spec));
    cd_conn_open(ctx, &c, CD_COLL_CONFIGS);
    if (cd_insert_one(ctx, c.coll, doc, NULL, NULL, &e))
        inserted = 1;
    else if (!cd_is_dup(&e))
        rc = -1;
    cd_conn_close(ctx, &c);
    bson_destroy(doc);
    if (rc < 0) {
        sh_mongo_err(err, &e, "insert configuration");
        return -1;
    }
    if (inserted) {
        /* Fresh: the collection has a scraper, so just insert-if-absent its
         * endpoint configuration; only a creation needs the full re-check. */
        json_t *j = json_loads(spec, 0, NULL);
        json_t *ttl = json_object_get(j, "ttl");
        rc = insert_endpoint(ctx, collection,
                             json_is_integer(ttl) && json_integer_value(ttl) > 0
                                 ? json_integer_value(ttl)
                                 : ctx->cfg->endpoint_ttl,
                             err);
        json_decref(j);
        if (rc < 0)
            return -1;
        if (rc == 1)
            sync_coll = sh_xstrdup(collection);
        change = rc;
    } else {
        /* Replayed: it may have moved to another collection (PUT) or gone since. */
        rc = cd_find_by_id(ctx, CD_COLL_CONFIGS, id, &current, err);
        if (rc < 0)
            return -1;
        if (rc == 1 && cd_doc_str(current, "collection"))
            sync_coll = sh_xstrdup(cd_doc_str(current, "collection"));
        bson_destroy(current);
    }
    rc = sync_coll ? cd_store_sync_endpoint(ctx, sync_coll, &change, err) : 0;
    free(sync_coll);
    if (rc < 0)
        return -1;
    *ret_changed = inserted || change != 0;
    return 0;
}

#define STATE_ID "capped_configurations"

int cd_store_state_load(struct cd_ctx *ctx, int64_t *ret_next, struct sh_err *err)
{
    bson_t *filter = BCON_NEW("_id", BCON_UTF8(STATE_ID)), *doc = NULL;
    bson_iter_t it;
    int rc = cd_find_one(ctx, CD_COLL_STATE, filter, NULL, &doc, err);

    bson_destroy(filter);
    if (rc == 1) {
        if (bson_iter_init_find(&it, doc, "next_seq") &&
            (BSON_ITER_HOLDS_INT64(&it) || BSON_ITER_HOLDS_INT32(&it)))
            *ret_next = bson_iter_as_int64(&it);
        else
            rc = 0;
        bson_destroy(doc);
    }
    return rc;
}

int cd_store_state_save(struct cd_ctx *ctx, int64_t next, struct sh_err *err)
{
    bson_t *filter = BCON_NEW("_id", BCON_UTF8(STATE_ID));
    /* $max: the shared position only moves forward, whichever replica saves. */
    bson_t *update = BCON_NEW("$max", "{", "next_seq", BCON_INT64(next), "}", "$set", "{",
                              "updated_at", BCON_DATE_TIME(cd_now_ms()), "}");
    bson_t *opts = BCON_NEW("upsert", BCON_BOOL(true));
    struct cd_conn c;
    bson_error_t e;
    int rc = -1;

    cd_conn_open(ctx, &c, CD_COLL_STATE);
    /* Two replicas upserting the same _id at once: the loser sees a duplicate
     * key error and simply updates on the second try. */
    for (int i = 0; i < 3 && rc < 0; i++) {
        if (cd_update_one(ctx, c.coll, filter, update, opts, NULL, &e))
            rc = 0;
        else if (!cd_is_dup(&e))
            break;
    }
    cd_conn_close(ctx, &c);
    if (rc < 0)
        sh_mongo_err(err, &e, "save tailer state");
    bson_destroy(filter);
    bson_destroy(update);
    bson_destroy(opts);
    return rc;
}
