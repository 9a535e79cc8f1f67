/* config-discovery's store and tailer against the real FerretDB of the test
 * bed (no HTTP): materialisation with exactly one endpoint configuration per
 * collection, restart resume without resurrection, two tailers on one
 * database, the claim race, claims skipping replicas other than 1,
 * replace/delete rules. Each test uses its own
 * database. */
#include "check.h"
#include "harness.h"

#include <pthread.h>
#include <string.h>
#include <unistd.h>

#include "config_discovery.h"
#include "shared/log.h"
#include "shared/xalloc.h"

static struct cd_config cfg = {
    .post_wait_ms = 5000,
    .capped_size = 1 << 22,
    .max_body = 1 << 20,
    .endpoint_ttl = 300,
    .await_ms = 200,
    .bump_retry_ms = 100,
    .poll_ms = 1000,
    .gap_grace_ms = 1000,
    .watch = 1, /* exercise the watcher here, even on FerretDB */
};

static void ctx_open(struct cd_ctx *ctx, const char *db)
{
    struct sh_err err;
    char *url = th_mongo_url(db);
    cfg.mongo_url = url;
    if (cd_ctx_init(ctx, &cfg, &err) != 0)
        CHECK_FAIL("cd_ctx_init: %s", err.msg);
    if (cd_store_init(ctx, &err) != 0)
        CHECK_FAIL("cd_store_init: %s", err.msg);
    free(url);
    cfg.mongo_url = NULL;
}

static void ctx_close(struct cd_ctx *ctx)
{
    cd_threads_stop(ctx);
    cd_ctx_done(ctx);
}

static void start_tailer(struct cd_ctx *ctx)
{
    struct sh_err err;
    if (cd_threads_start(ctx, &err) != 0)
        CHECK_FAIL("cd_threads_start: %s", err.msg);
}

static void submit(struct cd_ctx *ctx, const char *collection, int ttl, bson_oid_t *ret_id)
{
    struct sh_err err;
    json_t *user = json_pack("{s:s, s:i, s:{s:s}}", "collection", collection, "ttl", ttl, "source",
                             "url", "http://127.0.0.1:1/");
    int64_t seq;
    bson_oid_init(ret_id, NULL);
    if (cd_store_submit(ctx, ret_id, collection, user, &seq, &err) != 0)
        CHECK_FAIL("submit: %s", err.msg);
    json_decref(user);
}

static long count(struct cd_ctx *ctx, const char *type, const char *collection)
{
    struct cd_list_query q = {.type = type, .collection = collection, .limit = 1000};
    struct sh_err err;
    json_t *out = NULL;
    long n;
    if (cd_store_list(ctx, &q, &out, &err) != 0)
        CHECK_FAIL("list: %s", err.msg);
    n = (long)json_integer_value(json_object_get(out, "total"));
    json_decref(out);
    return n;
}

/* Waits until the list of type (in collection) has n entries. */
static void wait_count(struct cd_ctx *ctx, const char *type, const char *collection, long n)
{
    int64_t until = th_now_ms() + 20000;
    long got = -1;
    while (th_now_ms() < until) {
        got = count(ctx, type, collection);
        if (got == n)
            return;
        usleep(20000);
    }
    CHECK_FAIL("waited for %ld %s configurations in %s, have %ld", n, type,
               collection ? collection : "*", got);
}

/* Capped documents are keyed by cd_seq_id(seq), a fixed-width digit string:
 * FerretDB answers only string/ObjectId _id equality from an index (a number
 * _id scanned the whole, never trimmed, capped collection on every lookup),
 * and string order must equal number order for the $gt/$gte lookups. */
static void test_capped_documents_are_keyed_by_a_sortable_string(void)
{
    struct cd_ctx ctx;
    struct sh_err err;
    json_t *user =
        json_pack("{s:s, s:{s:s}}", "collection", "keys", "source", "url", "http://127.0.0.1:1/");
    bson_oid_t id;
    int64_t seq = 0, next = 0;
    char sid[CD_SEQ_ID_LEN], a[CD_SEQ_ID_LEN], b[CD_SEQ_ID_LEN];
    bson_t **docs = NULL;
    size_t n = 0;
    char *db = th_unique("t_cds_keys");

    cd_seq_id(9, a);
    cd_seq_id(10, b);
    ASSERT_STR_EQ(a, "0000000000000000009");
    ASSERT_LT(strcmp(a, b), 0);
    ctx_open(&ctx, db);
    bson_oid_init(&id, NULL);
    ASSERT_EQ(cd_store_submit(&ctx, &id, "keys", user, &seq, &err), 0);
    ASSERT_EQ(cd_store_submit(&ctx, &id, "keys", user, &next, &err), 0);
    ASSERT_EQ(next, seq + 1);
    cd_seq_id(seq, sid);
    ASSERT_EQ(cd_store_fetch(&ctx, seq, 5, &docs, &n, &err), 0);
    ASSERT_EQ(n, 2); /* the run stops at the first seq not there */
    ASSERT_EQ(cd_doc_seq(docs[0]), seq);
    ASSERT_EQ(cd_doc_seq(docs[1]), seq + 1);
    {
        bson_iter_t it;
        ASSERT(bson_iter_init_find(&it, docs[0], "_id") && BSON_ITER_HOLDS_UTF8(&it));
        ASSERT_STR_EQ(bson_iter_utf8(&it, NULL), sid);
    }
    cd_docs_free(docs, n);
    ASSERT_EQ(cd_store_seq_after(&ctx, seq, &next, &err), 1);
    ASSERT_EQ(next, seq + 1);
    ASSERT_EQ(cd_store_seq_after(&ctx, seq + 1, &next, &err), 0);
    json_decref(user);
    ctx_close(&ctx);
    free(db);
}

static void test_materialise_creates_one_endpoint_per_collection(void)
{
    struct cd_ctx ctx;
    bson_oid_t ids[5];
    struct sh_err err;
    json_t *doc = NULL, *ep = NULL;
    bson_oid_t eid;
    char *db = th_unique("t_cds_mat");

    ctx_open(&ctx, db);
    start_tailer(&ctx);
    submit(&ctx, "quotes", 30, &ids[0]);
    submit(&ctx, "quotes", 60, &ids[1]);
    submit(&ctx, "quotes", 90, &ids[2]);
    submit(&ctx, "books", 45, &ids[3]);
    submit(&ctx, "books", 45, &ids[4]);
    wait_count(&ctx, "scraper", NULL, 5);
    wait_count(&ctx, "endpoint", NULL, 2);
    ASSERT_EQ(count(&ctx, "endpoint", "quotes"), 1);
    ASSERT_EQ(count(&ctx, "endpoint", "books"), 1);

    ASSERT_EQ(cd_store_get(&ctx, &ids[0], &doc, &err), 1);
    ASSERT_STR_EQ(json_string_value(json_object_get(doc, "type")), "scraper");
    ASSERT(json_is_null(json_object_get(doc, "container")));
    ASSERT_EQ(json_integer_value(json_object_get(doc, "version")), 1);
    ASSERT_EQ(json_integer_value(json_object_get(doc, "ttl")), 30);
    ASSERT_STR_EQ(json_string_value(json_object_get(json_object_get(doc, "source"), "url")),
                  "http://127.0.0.1:1/");
    ASSERT_STR_CONTAINS(json_string_value(json_object_get(doc, "created_at")), "Z");

    /* The endpoint config takes the first scraper config's ttl and the
     * deterministic id. */
    cd_endpoint_oid("quotes", &eid);
    ASSERT_EQ(cd_store_get(&ctx, &eid, &ep, &err), 1);
    ASSERT_STR_EQ(json_string_value(json_object_get(ep, "type")), "endpoint");
    ASSERT_STR_EQ(json_string_value(json_object_get(ep, "collection")), "quotes");
    ASSERT_EQ(json_integer_value(json_object_get(ep, "ttl")), 30);
    json_decref(doc);
    json_decref(ep);
    ctx_close(&ctx);
    free(db);
}

static void test_restart_neither_skips_nor_resurrects(void)
{
    struct cd_ctx ctx;
    bson_oid_t ids[20], gone;
    struct sh_err err;
    int ep_deleted = 0;
    json_t *doc = NULL;
    char *db = th_unique("t_cds_restart");

    ctx_open(&ctx, db);
    start_tailer(&ctx);
    for (int i = 0; i < 10; i++)
        submit(&ctx, i % 2 ? "odd" : "even", 60, &ids[i]);
    wait_count(&ctx, "scraper", NULL, 10);
    gone = ids[3];
    ASSERT_EQ(cd_store_delete(&ctx, &gone, &ep_deleted, &err), 1);
    ASSERT_EQ(ep_deleted, 0);
    ctx_close(&ctx);

    /* While down, more arrive; after the restart those are materialised and
     * the deleted one stays deleted. */
    ctx_open(&ctx, db);
    for (int i = 10; i < 20; i++)
        submit(&ctx, i % 2 ? "odd" : "even", 60, &ids[i]);
    start_tailer(&ctx);
    wait_count(&ctx, "scraper", NULL, 19);
    usleep(500000);
    ASSERT_EQ(count(&ctx, "scraper", NULL), 19);
    ASSERT_EQ(cd_store_get(&ctx, &gone, &doc, &err), 0);
    ASSERT_EQ(count(&ctx, "endpoint", NULL), 2);
    /* The resumed tailer went on from where it stopped: 10 more documents. */
    (void)pthread_mutex_lock(&ctx.mu);
    ASSERT_EQ(ctx.processed, 10);
    (void)pthread_mutex_unlock(&ctx.mu);
    ctx_close(&ctx);
    free(db);
}

static void test_replay_from_scratch_is_idempotent(void)
{
    struct cd_ctx ctx;
    bson_oid_t ids[6], gone;
    struct sh_err err;
    int ep_deleted = 0;
    mongoc_client_t *c;
    mongoc_collection_t *st;
    bson_error_t e;
    char *db = th_unique("t_cds_replay");

    ctx_open(&ctx, db);
    start_tailer(&ctx);
    for (int i = 0; i < 6; i++)
        submit(&ctx, "solo", 60, &ids[i]);
    wait_count(&ctx, "scraper", NULL, 6);
    gone = ids[0];
    ASSERT_EQ(cd_store_delete(&ctx, &gone, &ep_deleted, &err), 1);
    ctx_close(&ctx);

    /* Lose the resume position: everything is replayed, nothing doubles and
     * the deleted configuration is not resurrected. */
    ctx_open(&ctx, db);
    c = mongoc_client_pool_pop(ctx.pool);
    st = mongoc_client_get_collection(c, ctx.db, CD_COLL_STATE);
    ASSERT(mongoc_collection_drop(st, &e));
    mongoc_collection_destroy(st);
    mongoc_client_pool_push(ctx.pool, c);
    start_tailer(&ctx);
    for (int i = 0; i < 100; i++) {
        (void)pthread_mutex_lock(&ctx.mu);
        uint64_t n = ctx.processed;
        (void)pthread_mutex_unlock(&ctx.mu);
        if (n >= 6)
            break;
        usleep(20000);
    }
    ASSERT_EQ(count(&ctx, "scraper", NULL), 5);
    ASSERT_EQ(count(&ctx, "endpoint", NULL), 1);
    ctx_close(&ctx);
    free(db);
}

struct submitter {
    struct cd_ctx *ctx;
    int from, n;
};

static void *submit_many(void *arg)
{
    struct submitter *s = arg;
    for (int i = s->from; i < s->from + s->n; i++) {
        char coll[32];
        bson_oid_t id;
        (void)snprintf(coll, sizeof(coll), "c%d", i % 7);
        submit(s->ctx, coll, 60, &id);
    }
    return NULL;
}

static void test_two_tailers_create_everything_exactly_once(void)
{
    struct cd_ctx a, b;
    pthread_t th[2];
    struct submitter s[2];
    char *db = th_unique("t_cds_two");

    ctx_open(&a, db);
    ctx_open(&b, db);
    start_tailer(&a);
    start_tailer(&b);
    s[0] = (struct submitter){&a, 0, 40};
    s[1] = (struct submitter){&b, 40, 40};
    for (int i = 0; i < 2; i++)
        ASSERT_EQ(pthread_create(&th[i], NULL, submit_many, &s[i]), 0);
    for (int i = 0; i < 2; i++)
        ASSERT_EQ(pthread_join(th[i], NULL), 0);
    wait_count(&a, "scraper", NULL, 80);
    wait_count(&a, "endpoint", NULL, 7);
    usleep(500000);
    ASSERT_EQ(count(&b, "scraper", NULL), 80);
    {
        struct cd_list_query q = {.type = "scraper", .limit = 1000};
        struct sh_err err;
        json_t *out = NULL;
        ASSERT_EQ(cd_store_list(&b, &q, &out, &err), 0);
        ASSERT_EQ(json_array_size(json_object_get(out, "configurations")), 80);
        json_decref(out);
    }
    for (int i = 0; i < 7; i++) {
        char coll[32];
        (void)snprintf(coll, sizeof(coll), "c%d", i);
        ASSERT_EQ(count(&b, "endpoint", coll), 1);
    }
    ctx_close(&a);
    ctx_close(&b);
    free(db);
}

struct claimer {
    struct cd_ctx *ctx;
    int idx;
    char id[25];
    int won;
};

static void *claim_one(void *arg)
{
    struct claimer *c = arg;
    char name[32];
    struct sh_err err;
    json_t *doc = NULL;
    int rc;

    (void)snprintf(name, sizeof(name), "runner-%d", c->idx);
    rc = cd_store_claim(c->ctx, "scraper", name, &doc, &err);
    if (rc < 0)
        CHECK_FAIL("claim: %s", err.msg);
    if (rc == 1) {
        c->won = 1;
        (void)snprintf(c->id, sizeof(c->id), "%s", json_string_value(json_object_get(doc, "_id")));
        ASSERT_STR_EQ(json_string_value(json_object_get(doc, "container")), name);
        ASSERT_EQ(json_integer_value(json_object_get(doc, "version")), 2);
        json_decref(doc);
    }
    return NULL;
}

static void test_claim_assigns_each_config_once(void)
{
    struct cd_ctx ctx;
    struct claimer cl[20];
    pthread_t th[20];
    bson_oid_t id;
    int winners = 0;
    char *db = th_unique("t_cds_claim");

    ctx_open(&ctx, db);
    start_tailer(&ctx);
    for (int i = 0; i < 10; i++)
        submit(&ctx, "race", 60, &id);
    wait_count(&ctx, "scraper", NULL, 10);
    for (int i = 0; i < 20; i++) {
        cl[i] = (struct claimer){.ctx = &ctx, .idx = i};
        ASSERT_EQ(pthread_create(&th[i], NULL, claim_one, &cl[i]), 0);
    }
    for (int i = 0; i < 20; i++)
        ASSERT_EQ(pthread_join(th[i], NULL), 0);
    for (int i = 0; i < 20; i++) {
        if (!cl[i].won)
            continue;
        winners++;
        for (int j = 0; j < i; j++)
            if (cl[j].won && strcmp(cl[i].id, cl[j].id) == 0)
                CHECK_FAIL("configuration %s claimed by runner-%d and runner-%d", cl[i].id, j, i);
    }
    ASSERT_EQ(winners, 10);
    {
        struct cd_list_query q = {.type = "scraper", .container_null = 1, .limit = 10};
        struct sh_err err;
        json_t *out = NULL;
        ASSERT_EQ(cd_store_list(&ctx, &q, &out, &err), 0);
        ASSERT_EQ(json_integer_value(json_object_get(out, "total")), 0);
        json_decref(out);
    }
    /* A claimer asking again gets the configuration it holds, not another. */
    for (int i = 0; i < 20; i++) {
        if (cl[i].won) {
            char name[32];
            json_t *doc = NULL;
            struct sh_err err;
            (void)snprintf(name, sizeof(name), "runner-%d", i);
            ASSERT_EQ(cd_store_claim(&ctx, "scraper", name, &doc, &err), 1);
            ASSERT_STR_EQ(json_string_value(json_object_get(doc, "_id")), cl[i].id);
            json_decref(doc);
            break;
        }
    }
    ctx_close(&ctx);
    free(db);
}

/* Submits a scraper configuration of collection whose replicas is r (-1 = absent). */
static void submit_replicas(struct cd_ctx *ctx, const char *collection, int r, bson_oid_t *ret_id)
{
    struct sh_err err;
    json_t *user = json_pack("{s:s, s:i, s:{s:s}}", "collection", collection, "ttl", 60, "source",
                             "url", "http://127.0.0.1:1/");
    int64_t seq;
    if (r >= 0)
        (void)json_object_set_new(user, "replicas", json_integer(r));
    bson_oid_init(ret_id, NULL);
    if (cd_store_submit(ctx, ret_id, collection, user, &seq, &err) != 0)
        CHECK_FAIL("submit: %s", err.msg);
    json_decref(user);
}

static void test_claim_skips_replicas_other_than_one(void)
{
    struct cd_ctx ctx;
    struct sh_err err;
    bson_oid_t id, want_absent, want_one;
    char hex_absent[25], hex_one[25], *got[2];
    json_t *doc = NULL;
    char *db = th_unique("t_cds_replicas");

    ctx_open(&ctx, db);
    start_tailer(&ctx);
    /* More parked (0) and orchestrator-placed (3) ones than a claim reads at
     * once, all older (smaller _id) than the two a claim may take. */
    for (int i = 0; i < 40; i++)
        submit_replicas(&ctx, "parked", i % 2 ? 3 : 0, &id);
    submit_replicas(&ctx, "parked", -1, &want_absent);
    submit_replicas(&ctx, "parked", 1, &want_one);
    wait_count(&ctx, "scraper", NULL, 42);
    bson_oid_to_string(&want_absent, hex_absent);
    bson_oid_to_string(&want_one, hex_one);
    for (int i = 0; i < 2; i++) {
        char name[32];
        (void)snprintf(name, sizeof(name), "spare-%d", i);
        ASSERT_EQ(cd_store_claim(&ctx, "scraper", name, &doc, &err), 1);
        got[i] = sh_xstrdup(json_string_value(json_object_get(doc, "_id")));
        ASSERT_STR_EQ(json_string_value(json_object_get(doc, "container")), name);
        json_decref(doc);
        doc = NULL;
    }
    ASSERT(strcmp(got[0], got[1]) != 0);
    ASSERT(strcmp(got[0], hex_absent) == 0 || strcmp(got[0], hex_one) == 0);
    ASSERT(strcmp(got[1], hex_absent) == 0 || strcmp(got[1], hex_one) == 0);
    /* Nothing claimable is left: the 40 others stay free. */
    ASSERT_EQ(cd_store_claim(&ctx, "scraper", "spare-2", &doc, &err), 0);
    {
        struct cd_list_query q = {.type = "scraper", .container_null = 1, .limit = 100};
        json_t *out = NULL;
        ASSERT_EQ(cd_store_list(&ctx, &q, &out, &err), 0);
        ASSERT_EQ(json_integer_value(json_object_get(out, "total")), 40);
        json_decref(out);
    }
    /* Idempotent per container: spare-0 asking again (a restart) gets its own. */
    ASSERT_EQ(cd_store_claim(&ctx, "scraper", "spare-0", &doc, &err), 1);
    ASSERT_STR_EQ(json_string_value(json_object_get(doc, "_id")), got[0]);
    json_decref(doc);
    free(got[0]);
    free(got[1]);
    ctx_close(&ctx);
    free(db);
}

static void test_replace_moves_endpoint_and_delete_removes_it(void)
{
    struct cd_ctx ctx;
    bson_oid_t a, b, eid;
    struct sh_err err;
    json_t *user, *doc = NULL;
    int ep_deleted = -1;
    char *db = th_unique("t_cds_replace");

    ctx_open(&ctx, db);
    start_tailer(&ctx);
    submit(&ctx, "first", 60, &a);
    submit(&ctx, "first", 60, &b);
    wait_count(&ctx, "endpoint", "first", 1);
    wait_count(&ctx, "scraper", NULL, 2);

    /* Move b to another collection: both collections keep an endpoint. */
    user = json_pack("{s:s, s:i}", "collection", "second", "ttl", 10);
    ASSERT_EQ(cd_store_replace(&ctx, &b, "scraper", user, -1, 1, "box-1", &doc, &err), 1);
    ASSERT_EQ(json_integer_value(json_object_get(doc, "version")), 2);
    ASSERT_STR_EQ(json_string_value(json_object_get(doc, "container")), "box-1");
    json_decref(doc);
    ASSERT_EQ(count(&ctx, "endpoint", "first"), 1);
    ASSERT_EQ(count(&ctx, "endpoint", "second"), 1);

    /* Stale expected version: conflict. */
    ASSERT_EQ(cd_store_replace(&ctx, &b, "scraper", user, 1, 0, NULL, &doc, &err), -1);
    ASSERT_EQ(err.code, SH_ECONFLICT);
    /* Keep mode keeps the container. */
    ASSERT_EQ(cd_store_replace(&ctx, &b, "scraper", user, 2, 0, NULL, &doc, &err), 1);
    ASSERT_STR_EQ(json_string_value(json_object_get(doc, "container")), "box-1");
    ASSERT_EQ(json_integer_value(json_object_get(doc, "version")), 3);
    json_decref(doc);
    json_decref(user);

    /* The endpoint config cannot go while its collection has scrapers. */
    cd_endpoint_oid("first", &eid);
    ASSERT_EQ(cd_store_delete(&ctx, &eid, &ep_deleted, &err), -1);
    ASSERT_EQ(err.code, SH_ECONFLICT);
    /* Deleting the last scraper of "first" takes its endpoint config along. */
    ASSERT_EQ(cd_store_delete(&ctx, &a, &ep_deleted, &err), 1);
    ASSERT_EQ(ep_deleted, 1);
    ASSERT_EQ(count(&ctx, "endpoint", "first"), 0);
    ASSERT_EQ(count(&ctx, "endpoint", "second"), 1);
    ASSERT_EQ(cd_store_delete(&ctx, &a, &ep_deleted, &err), 0);
    ctx_close(&ctx);
    free(db);
}

struct putter {
    struct cd_ctx *ctx;
    bson_oid_t id;
    int idx;
};

static void *put_many(void *arg)
{
    struct putter *p = arg;
    for (int i = 0; i < 10; i++) {
        struct sh_err err;
        json_t *doc = NULL;
        json_t *user =
            json_pack("{s:s, s:i, s:i}", "collection", "puts", "ttl", 60, "writer", p->idx);
        if (cd_store_replace(p->ctx, &p->id, "scraper", user, -1, 0, NULL, &doc, &err) != 1)
            CHECK_FAIL("replace: %s", err.msg);
        json_decref(doc);
        json_decref(user);
    }
    return NULL;
}

/* FerretDB v1 updates are read-then-write without isolation; the version
 * locks must make concurrent replaces serial: 8 writers x 10 replaces = 80
 * version steps, none lost. */
static void test_concurrent_replaces_lose_no_version(void)
{
    struct cd_ctx ctx;
    struct putter p[8];
    pthread_t th[8];
    bson_oid_t id;
    struct sh_err err;
    json_t *doc = NULL;
    char *db = th_unique("t_cds_puts");

    ctx_open(&ctx, db);
    start_tailer(&ctx);
    submit(&ctx, "puts", 60, &id);
    wait_count(&ctx, "scraper", NULL, 1);
    for (int i = 0; i < 8; i++) {
        p[i] = (struct putter){.ctx = &ctx, .id = id, .idx = i};
        ASSERT_EQ(pthread_create(&th[i], NULL, put_many, &p[i]), 0);
    }
    for (int i = 0; i < 8; i++)
        ASSERT_EQ(pthread_join(th[i], NULL), 0);
    ASSERT_EQ(cd_store_get(&ctx, &id, &doc, &err), 1);
    ASSERT_EQ(json_integer_value(json_object_get(doc, "version")), 81);
    json_decref(doc);
    ctx_close(&ctx);
    free(db);
}

/* Inserts a capped document by hand under seq (as a lagging or foreign
 * writer would), for the hole tests. */
static void put_capped(struct cd_ctx *ctx, int64_t seq, const char *collection, bson_oid_t *ret_id)
{
    mongoc_client_t *c = mongoc_client_pool_pop(ctx->pool);
    mongoc_collection_t *coll = mongoc_client_get_collection(c, ctx->db, CD_COLL_CAPPED);
    bson_error_t e;
    char spec[128], sid[CD_SEQ_ID_LEN];
    bson_t *doc;

    bson_oid_init(ret_id, NULL);
    (void)snprintf(spec, sizeof(spec), "{\"collection\":\"%s\",\"ttl\":60}", collection);
    cd_seq_id(seq, sid);
    doc = BCON_NEW("_id", BCON_UTF8(sid), "config_id", BCON_OID(ret_id), "type",
                   BCON_UTF8("scraper"), "collection", BCON_UTF8(collection), "created_at",
                   BCON_DATE_TIME(cd_now_ms()), "spec", BCON_UTF8(spec));
    if (!mongoc_collection_insert_one(coll, doc, NULL, NULL, &e))
        CHECK_FAIL("insert capped: %s", e.message);
    bson_destroy(doc);
    mongoc_collection_destroy(coll);
    mongoc_client_pool_push(ctx->pool, c);
}

/* A hole in the sequence (a trimmed or foreign capped collection) is waited
 * for gap_grace_ms, then skipped; a document filling it later is still
 * materialised (late list). */
static void hole_case(int watch)
{
    struct cd_ctx ctx;
    bson_oid_t first, after_hole, late;
    struct sh_err err;
    json_t *doc = NULL;
    int64_t t0;
    char *db = th_unique("t_cds_hole");

    cfg.watch = watch;
    ctx_open(&ctx, db);
    start_tailer(&ctx);
    submit(&ctx, "holes", 60, &first);
    wait_count(&ctx, "scraper", NULL, 1);
    put_capped(&ctx, 5, "holes", &after_hole); /* 2..4 missing */
    t0 = th_now_ms();
    wait_count(&ctx, "scraper", NULL, 2);
    ASSERT_GE(th_now_ms() - t0, cfg.gap_grace_ms - 100); /* it waited for the hole */
    ASSERT_EQ(cd_store_get(&ctx, &after_hole, &doc, &err), 1);
    json_decref(doc);
    put_capped(&ctx, 3, "holes", &late);
    wait_count(&ctx, "scraper", NULL, 3);
    ASSERT_EQ(cd_store_get(&ctx, &late, &doc, &err), 1);
    json_decref(doc);
    (void)pthread_mutex_lock(&ctx.mu);
    ASSERT_EQ(ctx.skipped_gaps, 3);
    ASSERT_EQ(ctx.next_seq, 6);
    (void)pthread_mutex_unlock(&ctx.mu);
    ASSERT_EQ(count(&ctx, "endpoint", "holes"), 1);
    ctx_close(&ctx);
    cfg.watch = 1;
    free(db);
}

/* With the watcher (it reports the newer document) and without it (the
 * tailer probes by itself every 3 x gap_grace_ms). */
static void test_sequence_hole_is_skipped_and_late_fill_materialised(void)
{
    hole_case(1);
    hole_case(0);
}

int main(void)
{
    /* (REQUIRE_ENV in check.h does not compile as an expression.) */
    if (!getenv("MONGO_URL"))
        CHECK_FAIL("MONGO_URL is not set: run under tests/lib/testbed.sh");
    (void)sh_log_setup("test", "warn", NULL);
    RUN(test_capped_documents_are_keyed_by_a_sortable_string);
    RUN(test_materialise_creates_one_endpoint_per_collection);
    RUN(test_restart_neither_skips_nor_resurrects);
    RUN(test_replay_from_scratch_is_idempotent);
    RUN(test_two_tailers_create_everything_exactly_once);
    RUN(test_claim_assigns_each_config_once);
    RUN(test_claim_skips_replicas_other_than_one);
    RUN(test_replace_moves_endpoint_and_delete_removes_it);
    RUN(test_concurrent_replaces_lose_no_version);
    RUN(test_sequence_hole_is_skipped_and_late_fill_materialised);
    return 0;
}
