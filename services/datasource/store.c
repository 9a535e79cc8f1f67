/* MongoDB layout of the datasource (see docs/datasource.md): creates the
 * capped collection and indexes at start, and small helpers shared by ingest,
 * tailer, reduce and api. Every function takes a client popped from the pool
 * by its caller (mongoc clients are not thread-safe; the pool is). */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "datasource.h"
#include "shared/mongo.h"
#include "shared/xalloc.h"

int64_t ds_now_ms(void)
{
    struct timespec ts;

    (void)clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void ds_format_time(int64_t ms, char *buf, size_t len)
{
    time_t secs = (time_t)(ms / 1000);
    struct tm tm;

    if (!gmtime_r(&secs, &tm)) {
        (void)snprintf(buf, len, "1970-01-01T00:00:00.000Z");
        return;
    }
    (void)snprintf(buf, len, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                   tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(ms % 1000));
}

int ds_parse_time(const char *s, int64_t *ret_ms)
{
    struct tm tm;
    const char *p;
    int ms = 0;

    memset(&tm, 0, sizeof(tm));
    p = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
    if (!p)
        return 0;
    if (*p == '.') {
        int digits = 0;
        p++;
        while (*p >= '0' && *p <= '9') {
            if (digits < 3)
                ms = ms * 10 + (*p - '0');
            digits++;
            p++;
        }
        if (digits == 0)
            return 0;
        while (digits < 3) {
            ms *= 10;
            digits++;
        }
    }
    if (strcmp(p, "Z") != 0 && strcmp(p, "+00:00") != 0)
        return 0;
    *ret_ms = (int64_t)timegm(&tm) * 1000 + ms;
    return 1;
}

char *ds_items_collection(const char *name)
{
    return sh_xasprintf(DS_ITEMS_PREFIX "%s", name);
}

void ds_store_durable_opts(bson_t *opts)
{
    mongoc_write_concern_t *wc = mongoc_write_concern_new();

    mongoc_write_concern_set_w(wc, MONGOC_WRITE_CONCERN_W_MAJORITY);
    mongoc_write_concern_set_journal(wc, true);
    (void)mongoc_write_concern_append(wc, opts);
    mongoc_write_concern_destroy(wc);
}

/* Reads a document by _id from coll; fills the int64 fields a and b (0 when absent). */
static int read_pair(mongoc_client_t *c, const char *db, const char *coll, const char *id,
                     const char *fa, int64_t *a, const char *fb, int64_t *b, struct sh_err *err)
{
    mongoc_collection_t *col = mongoc_client_get_collection(c, db, coll);
    bson_t *filter = BCON_NEW("_id", BCON_UTF8(id));
    bson_t *opts = BCON_NEW("limit", BCON_INT64(1));
    mongoc_cursor_t *cur = mongoc_collection_find_with_opts(col, filter, opts, NULL);
    const bson_t *doc;
    bson_error_t berr;
    bson_iter_t it;
    int rc = 0;

    *a = 0;
    *b = 0;
    if (mongoc_cursor_next(cur, &doc)) {
        if (bson_iter_init_find(&it, doc, fa) && BSON_ITER_HOLDS_NUMBER(&it))
            *a = bson_iter_as_int64(&it);
        if (bson_iter_init_find(&it, doc, fb) && BSON_ITER_HOLDS_NUMBER(&it))
            *b = bson_iter_as_int64(&it);
    }
    if (mongoc_cursor_error(cur, &berr)) {
        sh_mongo_err(err, &berr, coll);
        rc = -1;
    }
    mongoc_cursor_destroy(cur);
    bson_destroy(opts);
    bson_destroy(filter);
    mongoc_collection_destroy(col);
    return rc;
}

int ds_store_read_state(mongoc_client_t *c, const char *db, int64_t *ret_seq, int64_t *ret_bytes,
                        struct sh_err *err)
{
    return read_pair(c, db, DS_STATE, DS_STATE_ID, "seq", ret_seq, "bytes", ret_bytes, err);
}

int ds_store_read_counter(mongoc_client_t *c, const char *db, int64_t *ret_seq, int64_t *ret_bytes,
                          struct sh_err *err)
{
    return read_pair(c, db, DS_COUNTERS, DS_COUNTER_ID, "seq", ret_seq, "bytes", ret_bytes, err);
}

/* Code 48 = NamespaceExists: a second replica (or a restart) created it first. */
static int create_capped(mongoc_database_t *dbh, long bytes, struct sh_err *err)
{
    bson_t *opts = BCON_NEW("capped", BCON_BOOL(true), "size", BCON_INT64(bytes));
    bson_error_t berr;
    mongoc_collection_t *col = mongoc_database_create_collection(dbh, DS_CAPPED, opts, &berr);
    int rc = 0;

    if (col)
        mongoc_collection_destroy(col);
    else if (berr.code != 48 && !strstr(berr.message, "already exists")) {
        sh_mongo_err(err, &berr, "create " DS_CAPPED);
        rc = -1;
    }
    bson_destroy(opts);
    return rc;
}

/* Explain's SQLite plan mentions "USING INDEX" when FerretDB searches an index. */
static int plan_uses_index(const bson_t *reply)
{
    bson_iter_t it;
    uint32_t len;

    if (!bson_iter_init(&it, reply))
        return 0;
    while (bson_iter_next(&it)) {
        if (BSON_ITER_HOLDS_UTF8(&it) && strstr(bson_iter_utf8(&it, &len), "USING INDEX"))
            return 1;
        if (BSON_ITER_HOLDS_DOCUMENT(&it) || BSON_ITER_HOLDS_ARRAY(&it)) {
            const uint8_t *data;
            bson_t sub;
            if (BSON_ITER_HOLDS_DOCUMENT(&it))
                bson_iter_document(&it, &len, &data);
            else
                bson_iter_array(&it, &len, &data);
            if (bson_init_static(&sub, data, len) && plan_uses_index(&sub))
                return 1;
        }
    }
    return 0;
}

int ds_store_id_indexed(mongoc_client_t *c, const struct ds_ctx *ctx, const char *coll,
                        struct sh_err *err)
{
    mongoc_database_t *dbh;
    bson_t *cmd, reply;
    bson_error_t berr;
    int rc;

    if (!ctx->ferretdb)
        return 1;
    dbh = mongoc_client_get_database(c, ctx->db);
    cmd = BCON_NEW("explain", "{", "find", BCON_UTF8(coll), "filter", "{", "_id",
                   BCON_UTF8("~probe"), "}", "}");
    if (!mongoc_database_command_simple(dbh, cmd, NULL, &reply, &berr)) {
        sh_mongo_err(err, &berr, "explain");
        rc = -1;
    } else {
        rc = plan_uses_index(&reply);
    }
    bson_destroy(&reply);
    bson_destroy(cmd);
    mongoc_database_destroy(dbh);
    return rc;
}

static void append_ids(bson_t *arr, json_t *ids, size_t start, size_t end)
{
    for (size_t i = start; i < end; i++) {
        char idx[16];
        const char *k;
        (void)bson_uint32_to_string((uint32_t)(i - start), &k, idx, sizeof(idx));
        BSON_APPEND_UTF8(arr, k, json_string_value(json_array_get(ids, i)));
    }
}

#define DELETE_CHUNK 500
int ds_store_delete_ids(mongoc_collection_t *col, json_t *ids, int per_id, struct sh_err *err)
{
    size_t start = 0, n = json_array_size(ids);
    bson_error_t berr;

    while (start < n) {
        size_t end = n - start > DELETE_CHUNK ? start + DELETE_CHUNK : n;
        int ok;
        if (per_id) {
            /* One delete command, one {_id} statement per id: each is an index
             * search on FerretDB (and one SQLite transaction). */
            bson_t *bopts = BCON_NEW("ordered", BCON_BOOL(false));
            mongoc_bulk_operation_t *bulk =
                mongoc_collection_create_bulk_operation_with_opts(col, bopts);
            bson_t reply;
            for (size_t i = start; i < end; i++) {
                bson_t *f = BCON_NEW("_id", BCON_UTF8(json_string_value(json_array_get(ids, i))));
                (void)mongoc_bulk_operation_remove_one_with_opts(bulk, f, NULL, NULL);
                bson_destroy(f);
            }
            ok = (int)mongoc_bulk_operation_execute(bulk, &reply, &berr);
            bson_destroy(&reply);
            mongoc_bulk_operation_destroy(bulk);
            bson_destroy(bopts);
        } else {
            bson_t filter = BSON_INITIALIZER, idf, in;
            BSON_APPEND_DOCUMENT_BEGIN(&filter, "_id", &idf);
            BSON_APPEND_ARRAY_BEGIN(&idf, "$in", &in);
            append_ids(&in, ids, start, end);
            bson_append_array_end(&idf, &in);
            bson_append_document_end(&filter, &idf);
            ok = (int)mongoc_collection_delete_many(col, &filter, NULL, NULL, &berr);
            bson_destroy(&filter);
        }
        if (!ok) {
            sh_mongo_err(err, &berr, "delete by _id");
            return -1;
        }
        start = end;
    }
    return 0;
}

int ds_store_setup(struct ds_ctx *ctx, struct sh_err *err)
{
    mongoc_client_t *c = mongoc_client_pool_pop(ctx->pool);
    mongoc_database_t *dbh = mongoc_client_get_database(c, ctx->db);
    bson_t *cmd;
    bson_error_t berr;
    int rc = 0;

    ctx->ferretdb = sh_mongo_is_ferretdb(c, err);
    if (ctx->ferretdb < 0) {
        ctx->ferretdb = 0;
        rc = -1;
        goto out;
    }
    ctx->writes.on = ctx->ferretdb;
    ctx->poll = strcmp(ctx->cfg->tail_mode, "poll") == 0 ||
                (strcmp(ctx->cfg->tail_mode, "auto") == 0 && ctx->ferretdb);
    if (create_capped(dbh, ctx->cfg->capped_bytes, err) < 0) {
        rc = -1;
        goto out;
    }
    /* The tailer resumes by seq ({seq: {$gt: last}}); unique so that two
     * batches can never share a position. */
    cmd = BCON_NEW("createIndexes", BCON_UTF8(DS_CAPPED), "indexes", "[", "{", "key", "{", "seq",
                   BCON_INT32(1), "}", "name", BCON_UTF8("seq_1"), "unique", BCON_BOOL(true), "}",
                   "]");
    if (!mongoc_database_command_simple(dbh, cmd, NULL, NULL, &berr)) {
        sh_mongo_err(err, &berr, "create index " DS_CAPPED ".seq");
        rc = -1;
    }
    bson_destroy(cmd);
out:
    mongoc_database_destroy(dbh);
    mongoc_client_pool_push(ctx->pool, c);
    return rc;
}
