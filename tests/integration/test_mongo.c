/* Integration tests for shared/mongo.h against the test bed's MongoDB-protocol
 * server (MONGO_URL; FerretDB or a real MongoDB), in a database of our own. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "harness.h"
#include "shared/mongo.h"
#include "shared/xalloc.h"

static void test_pool_database_from_url_or_default(void)
{
    struct sh_err err = {0};
    char *db = NULL, *url = th_mongo_url("t_named");
    mongoc_client_pool_t *pool = sh_mongo_pool_new(url, &db, &err);

    ASSERT_NOT_NULL(pool);
    ASSERT_STR_EQ(db, "t_named");
    free(db);
    mongoc_client_pool_destroy(pool);
    free(url);

    pool = sh_mongo_pool_new("mongodb://127.0.0.1:1", &db, &err);
    ASSERT_NOT_NULL(pool); /* no connection yet: building a pool does not connect */
    ASSERT_STR_EQ(db, "scrapr");
    free(db);
    mongoc_client_pool_destroy(pool);

    db = NULL;
    ASSERT_NULL(sh_mongo_pool_new("http://nope", &db, &err));
    ASSERT_EQ(err.code, SH_ECONFIG);
    ASSERT_NULL(db);
    ASSERT_NULL(sh_mongo_pool_new("", &db, &err));
    ASSERT_EQ(err.code, SH_ECONFIG);
}

static void test_insert_find_round_trip_and_ping(void)
{
    struct sh_err err = {0};
    char *dbname = th_unique("t_mongo"), *url = th_mongo_url(dbname), *db = NULL;
    mongoc_client_pool_t *pool = sh_mongo_pool_new(url, &db, &err);
    mongoc_client_t *client;
    mongoc_collection_t *coll;
    mongoc_cursor_t *cur;
    const bson_t *doc;
    bson_t *ins, *filter;
    bson_error_t berr;
    bson_iter_t it;
    int found = 0;

    ASSERT_NOT_NULL(pool);
    ASSERT_STR_EQ(db, dbname);
    ASSERT_EQ(sh_mongo_ping(pool, &err), 0);

    client = mongoc_client_pool_pop(pool);
    coll = mongoc_client_get_collection(client, db, "items");
    ins = BCON_NEW("_id", "k1", "text", "h\xc3\xa9llo", "n", BCON_INT32(42));
    ASSERT(mongoc_collection_insert_one(coll, ins, NULL, NULL, &berr));
    /* A duplicate _id becomes SH_ECONFLICT through sh_mongo_err. */
    ASSERT(!mongoc_collection_insert_one(coll, ins, NULL, NULL, &berr));
    sh_mongo_err(&err, &berr, "insert");
    ASSERT_EQ(err.code, SH_ECONFLICT);
    ASSERT_STR_CONTAINS(err.msg, "insert: ");
    filter = BCON_NEW("_id", "k1");
    cur = mongoc_collection_find_with_opts(coll, filter, NULL, NULL);
    while (mongoc_cursor_next(cur, &doc)) {
        found++;
        ASSERT(bson_iter_init_find(&it, doc, "text"));
        ASSERT_STR_EQ(bson_iter_utf8(&it, NULL), "h\xc3\xa9llo");
        ASSERT(bson_iter_init_find(&it, doc, "n"));
        ASSERT_EQ(bson_iter_int32(&it), 42);
    }
    ASSERT(!mongoc_cursor_error(cur, &berr));
    ASSERT_EQ(found, 1);
    mongoc_cursor_destroy(cur);
    ASSERT(mongoc_collection_drop(coll, &berr));
    mongoc_collection_destroy(coll);
    mongoc_client_pool_push(pool, client);
    bson_destroy(ins);
    bson_destroy(filter);

    /* Dropping the database keeps the shared server clean. */
    client = mongoc_client_pool_pop(pool);
    {
        mongoc_database_t *d = mongoc_client_get_database(client, db);
        ASSERT(mongoc_database_drop(d, &berr));
        mongoc_database_destroy(d);
    }
    mongoc_client_pool_push(pool, client);
    mongoc_client_pool_destroy(pool);
    free(db);
    free(url);
    free(dbname);
}

static void test_ping_to_closed_port_fails_fast(void)
{
    struct sh_err err = {0};
    char *url = sh_xasprintf("mongodb://127.0.0.1:%u/t_down", th_free_port()), *db = NULL;
    mongoc_client_pool_t *pool = sh_mongo_pool_new(url, &db, &err);
    int64_t t0, took;

    ASSERT_NOT_NULL(pool);
    t0 = th_now_ms();
    ASSERT_EQ(sh_mongo_ping(pool, &err), -1);
    took = th_now_ms() - t0;
    fprintf(stderr, "   ping to a closed port failed after %" PRId64 " ms: %s\n", took, err.msg);
    ASSERT_EQ(err.code, SH_EUPSTREAM);
    ASSERT_STR_CONTAINS(err.msg, "mongo ping");
    ASSERT_LT(took, 6000);
    mongoc_client_pool_destroy(pool);
    free(db);
    free(url);

    /* The URL's own serverSelectionTimeoutMS wins over our default. */
    url = sh_xasprintf("mongodb://127.0.0.1:%u/?serverSelectionTimeoutMS=500", th_free_port());
    pool = sh_mongo_pool_new(url, &db, &err);
    ASSERT_NOT_NULL(pool);
    t0 = th_now_ms();
    ASSERT_EQ(sh_mongo_ping(pool, &err), -1);
    ASSERT_LT(th_now_ms() - t0, 2000);
    mongoc_client_pool_destroy(pool);
    free(db);
    free(url);
    ASSERT_EQ(sh_mongo_ping(NULL, &err), -1);
}

int main(void)
{
    (void)REQUIRE_ENV("MONGO_URL");
    RUN(test_pool_database_from_url_or_default);
    RUN(test_insert_find_round_trip_and_ping);
    RUN(test_ping_to_closed_port_fails_fast);
    return 0;
}
