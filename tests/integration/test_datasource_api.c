/* scrapr-datasource against real FerretDB + Consul: de-duplication across
 * batches with first/last seen, replayed batch_ids, paging/since/ETag/304,
 * the long-poll waking within 100 ms of a write, every bad-input class, and
 * back-pressure engaging before the capped collection could overwrite
 * unread batches. Each test uses its own database and port. */
#include <pthread.h>

#include "test_datasource_util.h"

static json_t *item_by_key(json_t *page, const char *key)
{
    size_t i;
    json_t *it;

    json_array_foreach(json_object_get(page, "items"), i, it)
    {
        if (strcmp(json_string_value(json_object_get(it, "key")), key) == 0)
            return it;
    }
    return NULL;
}

static const char *sget(json_t *o, const char *k)
{
    return json_string_value(json_object_get(o, k));
}

static void test_duplicates_across_batches_collapse_with_first_and_last_seen(void)
{
    struct ds_proc p = {0};
    char *db = th_unique("t_ds_dedupe");
    char *body = NULL;
    json_t *page, *a, *b, *c;

    ds_start(&p, db, NULL);
    ASSERT_EQ(ds_post(&p,
                      "{\"collection\":\"quotes\",\"config_id\":\"c\",\"batch_id\":\"b1\","
                      "\"key\":[\"t\"],\"data\":[{\"t\":\"a\",\"v\":1},{\"t\":\"b\",\"v\":1}]}",
                      &body),
              202);
    ASSERT_STR_CONTAINS(body, "\"duplicate\":false");
    ASSERT_STR_CONTAINS(body, "\"accepted\":2");
    free(body);
    page = ds_wait_revision(&p, "quotes", 1, NULL);
    json_decref(page);
    (void)usleep(20000); /* distinct batch times */
    ASSERT_EQ(
        ds_post(&p,
                "{\"collection\":\"quotes\",\"batch_id\":\"b2\",\"key\":[\"t\"],"
                "\"data\":[{\"t\":\"a\",\"v\":2},{\"t\":\"c\",\"v\":2},{\"t\":\"c\",\"v\":3}]}",
                NULL),
        202);
    page = ds_wait_revision(&p, "quotes", 2, NULL);
    ASSERT_EQ(json_integer_value(json_object_get(page, "count")), 3);
    ASSERT_EQ(json_array_size(json_object_get(page, "items")), 3);
    a = item_by_key(page, "a");
    b = item_by_key(page, "b");
    c = item_by_key(page, "c");
    ASSERT_NOT_NULL(a);
    ASSERT_NOT_NULL(b);
    ASSERT_NOT_NULL(c);
    /* a: seen in both batches: first_seen from b1, last_seen and data from b2 */
    ASSERT(strcmp(sget(a, "first_seen"), sget(a, "last_seen")) < 0);
    ASSERT_STR_EQ(sget(a, "first_seen"), sget(b, "first_seen"));
    ASSERT_STR_EQ(sget(a, "last_seen"), sget(c, "last_seen"));
    ASSERT_EQ(json_integer_value(json_object_get(json_object_get(a, "data"), "v")), 2);
    /* b: only in b1 */
    ASSERT_STR_EQ(sget(b, "first_seen"), sget(b, "last_seen"));
    ASSERT_EQ(json_integer_value(json_object_get(json_object_get(b, "data"), "v")), 1);
    /* c: twice in b2, the later item wins */
    ASSERT_EQ(json_integer_value(json_object_get(json_object_get(c, "data"), "v")), 3);
    ASSERT_EQ(json_integer_value(json_object_get(a, "revision")),
              json_integer_value(json_object_get(page, "revision")));
    ASSERT_LT(json_integer_value(json_object_get(b, "revision")),
              json_integer_value(json_object_get(a, "revision")));
    json_decref(page);

    /* since=<revision of b1> returns only what b2 changed, ordered by revision */
    {
        char q[64];
        json_t *pb;
        page = ds_get_json(&p, "/collections/quotes", 200);
        (void)snprintf(
            q, sizeof(q), "/collections/quotes?since=%lld",
            (long long)json_integer_value(json_object_get(item_by_key(page, "b"), "revision")));
        pb = ds_get_json(&p, q, 200);
        ASSERT_EQ(json_array_size(json_object_get(pb, "items")), 2);
        ASSERT_NULL(item_by_key(pb, "b"));
        json_decref(pb);
        json_decref(page);
    }

    /* no key fields: identical content collapses to one "h:" item */
    ASSERT_EQ(ds_post(&p,
                      "{\"collection\":\"nokey\",\"batch_id\":\"n1\",\"data\":[{\"x\":1,\"y\":2}]}",
                      NULL),
              202);
    ASSERT_EQ(ds_post(&p,
                      "{\"collection\":\"nokey\",\"batch_id\":\"n2\",\"data\":[{\"y\":2,\"x\":1},"
                      "{\"x\":5}]}",
                      NULL),
              202);
    page = ds_wait_revision(&p, "nokey", 1, NULL);
    json_decref(page);
    {
        int64_t deadline = th_now_ms() + 10000;
        for (;;) {
            page = ds_get_json(&p, "/collections/nokey", 200);
            if (json_integer_value(json_object_get(page, "count")) == 2)
                break;
            json_decref(page);
            ASSERT_LT(th_now_ms(), deadline);
            (void)usleep(20000);
        }
        ASSERT_EQ(json_array_size(json_object_get(page, "items")), 2);
        ASSERT_EQ(strncmp(sget(json_array_get(json_object_get(page, "items"), 0), "key"), "h:", 2),
                  0);
        json_decref(page);
    }

    /* GET /collections lists both */
    page = ds_get_json(&p, "/collections", 200);
    ASSERT_EQ(json_array_size(json_object_get(page, "collections")), 2);
    ASSERT_STR_EQ(sget(json_array_get(json_object_get(page, "collections"), 1), "name"), "quotes");
    ASSERT_EQ(json_integer_value(json_object_get(
                  json_array_get(json_object_get(page, "collections"), 1), "count")),
              3);
    json_decref(page);
    ds_stop(&p, SIGTERM);
    free(p.db);
    free(db);
}

static void test_replayed_batch_id_stores_nothing(void)
{
    struct ds_proc p = {0};
    char *db = th_unique("t_ds_replay");
    const char *batch = "{\"collection\":\"r\",\"batch_id\":\"same\",\"key\":[\"k\"],"
                        "\"data\":[{\"k\":\"x\",\"v\":1}]}";
    char *body = NULL;
    json_t *page, *again;
    mongoc_client_t *mc;
    bson_t *f;

    ds_start(&p, db, NULL);
    ASSERT_EQ(ds_post(&p, batch, NULL), 202);
    /* replay before the reduce may have run, and after it */
    ASSERT_EQ(ds_post(&p, batch, &body), 202);
    ASSERT_STR_CONTAINS(body, "\"duplicate\":true");
    free(body);
    page = ds_wait_revision(&p, "r", 1, NULL);
    (void)usleep(100000);
    json_decref(page);
    page = ds_get_json(&p, "/collections/r", 200);
    ASSERT_EQ(ds_post(&p,
                      "{\"collection\":\"r\",\"batch_id\":\"same\",\"key\":[\"k\"],"
                      "\"data\":[{\"k\":\"x\",\"v\":999}]}",
                      &body),
              202);
    ASSERT_STR_CONTAINS(body, "\"duplicate\":true");
    free(body);
    (void)usleep(300000);
    again = ds_get_json(&p, "/collections/r", 200);
    ASSERT_EQ(json_integer_value(json_object_get(again, "count")), 1);
    ASSERT_EQ(json_integer_value(json_object_get(again, "revision")),
              json_integer_value(json_object_get(page, "revision")));
    ASSERT_EQ(
        json_integer_value(json_object_get(
            json_object_get(json_array_get(json_object_get(again, "items"), 0), "data"), "v")),
        1);
    ASSERT_STR_EQ(sget(json_array_get(json_object_get(again, "items"), 0), "last_seen"),
                  sget(json_array_get(json_object_get(page, "items"), 0), "last_seen"));
    json_decref(page);
    json_decref(again);
    /* storage: stored and reduced once (on FerretDB the tailer deletes reduced
     * batches from the capped collection, on MongoDB it stays until trimmed) */
    mc = ds_mongo(db);
    f = BCON_NEW("_id", "same");
    ASSERT_LE(ds_count(mc, db, "capped_datasources", f), 1);
    bson_destroy(f);
    ASSERT_EQ(ds_count(mc, db, "batches", NULL), 1);
    ASSERT_EQ(ds_count(mc, db, "items_r", NULL), 1);
    ds_drop_db(mc, db);
    mongoc_client_destroy(mc);
    ds_stop(&p, SIGTERM);
    free(p.db);
    free(db);
}

/* Two configurations may feed one collection with different fields: a later
 * batch sets its fields and keeps the others, like MongoDB's $set. */
static void test_later_batch_sets_its_fields_and_keeps_others(void)
{
    struct ds_proc p = {0};
    char *db = th_unique("t_ds_merge");
    json_t *page, *data;

    ds_start(&p, db, NULL);
    ASSERT_EQ(ds_post(&p,
                      "{\"collection\":\"m\",\"batch_id\":\"m1\",\"key\":[\"k\"],"
                      "\"data\":[{\"k\":\"x\",\"born\":\"1879\",\"v\":1}]}",
                      NULL),
              202);
    page = ds_wait_revision(&p, "m", 1, NULL);
    json_decref(page);
    ASSERT_EQ(ds_post(&p,
                      "{\"collection\":\"m\",\"batch_id\":\"m2\",\"key\":[\"k\"],"
                      "\"data\":[{\"k\":\"x\",\"v\":2}]}",
                      NULL),
              202);
    page = ds_wait_revision(&p, "m", 2, NULL);
    ASSERT_EQ(json_integer_value(json_object_get(page, "count")), 1);
    data = json_object_get(json_array_get(json_object_get(page, "items"), 0), "data");
    ASSERT_EQ(json_integer_value(json_object_get(data, "v")), 2);
    ASSERT_STR_EQ(json_string_value(json_object_get(data, "born")), "1879");
    json_decref(page);
    ds_stop(&p, SIGTERM);
    free(p.db);
    free(db);
}

/* Batches stored while no reducer runs are reduced later in one round (on
 * FerretDB): the result must equal reducing them one by one - per key the
 * newest batch wins, fields merge like $set across batches of the round,
 * first_seen/last_seen span the batches, each collection gets its own
 * revision - and on FerretDB the round leaves the capped collection empty. */
static void test_one_round_of_many_batches_equals_one_by_one(void)
{
    struct ds_proc p = {0};
    char *db = th_unique("t_ds_round");
    const char *off[] = {"DS_TAILER=0", NULL};
    const char *on[] = {"DS_TAILER_LOCK=0", "DS_ROUND_BATCHES=32", NULL};
    const char *bodies[] = {
        "{\"collection\":\"ra\",\"batch_id\":\"r1\",\"key\":[\"k\"],"
        "\"data\":[{\"k\":\"a\",\"v\":1,\"x\":\"kept\"},{\"k\":\"b\",\"v\":1}]}",
        "{\"collection\":\"rb\",\"batch_id\":\"r2\",\"key\":[\"k\"],"
        "\"data\":[{\"k\":\"a\",\"v\":10}]}",
        "{\"collection\":\"ra\",\"batch_id\":\"r3\",\"key\":[\"k\"],"
        "\"data\":[{\"k\":\"a\",\"v\":2},{\"k\":\"c\",\"v\":2},{\"k\":\"c\",\"v\":3}]}",
    };
    json_t *page, *a, *b, *c;
    mongoc_client_t *mc;
    bson_t *f;
    int is_ferretdb;
    json_int_t rev_r1, rev_r3;

    ds_start(&p, db, off);
    for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
        ASSERT_EQ(ds_post(&p, bodies[i], NULL), 202);
        (void)usleep(20000); /* distinct "at" times */
    }
    ds_stop(&p, SIGTERM);
    ds_start(&p, db, on);
    page = ds_wait_revision(&p, "ra", 3, NULL);
    ASSERT_EQ(json_integer_value(json_object_get(page, "count")), 3);
    a = item_by_key(page, "a");
    b = item_by_key(page, "b");
    c = item_by_key(page, "c");
    ASSERT_NOT_NULL(a);
    ASSERT_NOT_NULL(b);
    ASSERT_NOT_NULL(c);
    /* revisions are the batches' seqs: increasing, not necessarily dense */
    rev_r3 = json_integer_value(json_object_get(page, "revision"));
    ASSERT_EQ(json_integer_value(json_object_get(a, "revision")), rev_r3);
    ASSERT_EQ(json_integer_value(json_object_get(json_object_get(a, "data"), "v")), 2);
    ASSERT_STR_EQ(json_string_value(json_object_get(json_object_get(a, "data"), "x")), "kept");
    ASSERT(strcmp(sget(a, "first_seen"), sget(a, "last_seen")) < 0);
    ASSERT_STR_EQ(sget(a, "first_seen"), sget(b, "first_seen"));
    ASSERT_STR_EQ(sget(a, "last_seen"), sget(c, "last_seen"));
    rev_r1 = json_integer_value(json_object_get(b, "revision"));
    ASSERT_LT(rev_r1, rev_r3);
    ASSERT_EQ(json_integer_value(json_object_get(json_object_get(c, "data"), "v")), 3);
    json_decref(page);
    page = ds_wait_revision(&p, "rb", 2, NULL);
    ASSERT_EQ(json_integer_value(json_object_get(page, "count")), 1);
    ASSERT_LT(rev_r1, json_integer_value(json_object_get(page, "revision")));
    ASSERT_LT(json_integer_value(json_object_get(page, "revision")), rev_r3);
    json_decref(page);

    mc = ds_mongo(db);
    {
        bson_t *cmd = BCON_NEW("buildInfo", BCON_INT32(1)), reply;
        bson_iter_t it;
        ASSERT(mongoc_client_command_simple(mc, "admin", cmd, NULL, &reply, NULL));
        is_ferretdb = bson_iter_init_find(&it, &reply, "ferretdbVersion");
        bson_destroy(&reply);
        bson_destroy(cmd);
    }
    ASSERT_EQ(ds_count(mc, db, "batches", NULL), 3);
    ASSERT_EQ(ds_count(mc, db, "reduce_journal", NULL), 0);
    if (is_ferretdb) {
        int64_t deadline = th_now_ms() + 5000;
        while (ds_count(mc, db, "capped_datasources", NULL) != 0) {
            ASSERT_LT(th_now_ms(), deadline);
            (void)usleep(20000);
        }
    }
    /* a replay after the batch left the capped collection: acknowledged, not applied */
    {
        char *resp = NULL;
        ASSERT_EQ(ds_post(&p,
                          "{\"collection\":\"ra\",\"batch_id\":\"r1\",\"key\":[\"k\"],"
                          "\"data\":[{\"k\":\"a\",\"v\":99}]}",
                          &resp),
                  202);
        ASSERT_STR_CONTAINS(resp, "\"duplicate\":true");
        free(resp);
    }
    f = BCON_NEW("_id", "r1");
    ASSERT_EQ(ds_count(mc, db, "batches", f), 1);
    bson_destroy(f);
    ds_drop_db(mc, db);
    mongoc_client_destroy(mc);
    ds_stop(&p, SIGTERM);
    free(p.db);
    free(db);
}

static void test_etag_304_and_paging(void)
{
    struct ds_proc p = {0};
    char *db = th_unique("t_ds_page");
    json_t *page;
    char *hdrs = NULL, *etag, *inm, *body = NULL;
    long st;
    struct sh_buf b;

    ds_start(&p, db, NULL);
    sh_buf_init(&b, 0);
    (void)sh_buf_appends(&b, "{\"collection\":\"p\",\"batch_id\":\"p1\",\"key\":[\"i\"],\"data\":[",
                         NULL);
    for (int i = 0; i < 25; i++)
        (void)sh_buf_appendf(&b, NULL, "%s{\"i\":\"%03d\"}", i ? "," : "", i);
    (void)sh_buf_appends(&b, "]}", NULL);
    ASSERT_EQ(ds_post(&p, b.data, NULL), 202);
    sh_buf_done(&b);
    page = ds_wait_revision(&p, "p", 1, "?limit=10&skip=20");
    ASSERT_EQ(json_array_size(json_object_get(page, "items")), 5);
    ASSERT(json_is_false(json_object_get(page, "more")));
    ASSERT_STR_EQ(sget(json_array_get(json_object_get(page, "items"), 0), "key"), "020");
    json_decref(page);
    page = ds_get_json(&p, "/collections/p?limit=10", 200);
    ASSERT_EQ(json_array_size(json_object_get(page, "items")), 10);
    ASSERT(json_is_true(json_object_get(page, "more")));
    ASSERT_EQ(json_integer_value(json_object_get(page, "limit")), 10);
    json_decref(page);

    st = ds_get(&p, "/collections/p", NULL, NULL, &hdrs);
    ASSERT_EQ(st, 200);
    etag = th_header(hdrs, "ETag");
    ASSERT_NOT_NULL(etag);
    ASSERT_EQ(etag[0], '"');
    inm = sh_xasprintf("If-None-Match: %s", etag);
    {
        const char *h[] = {inm, NULL};
        ASSERT_EQ(ds_get(&p, "/collections/p", h, NULL, NULL), 304);
        /* wait=1 with no change: 304 after about a second */
        int64_t t0 = th_now_ms();
        ASSERT_EQ(ds_get(&p, "/collections/p?wait=1", h, NULL, NULL), 304);
        ASSERT_GE(th_now_ms() - t0, 900);
        ASSERT_LT(th_now_ms() - t0, 3000);
    }
    {
        const char *h[] = {"If-None-Match: \"999999\"", NULL};
        ASSERT_EQ(ds_get(&p, "/collections/p", h, NULL, NULL), 200);
    }
    ASSERT_EQ(ds_get(&p, "/collections/nope", NULL, &body, NULL), 404);
    ASSERT_STR_CONTAINS(body, "unknown collection");
    free(body);
    free(inm);
    free(etag);
    free(hdrs);
    ds_stop(&p, SIGTERM);
    free(p.db);
    free(db);
}

struct poller {
    const struct ds_proc *p;
    const char *inm;
    long status;
    int64_t returned_at;
    char *body;
};

static void *poll_thread(void *arg)
{
    struct poller *w = arg;
    const char *h[] = {w->inm, NULL};

    w->status = ds_get(w->p, "/collections/lp?wait=20", h, &w->body, NULL);
    w->returned_at = th_now_ms();
    return NULL;
}

static void test_long_poll_wakes_within_100ms_of_a_write(void)
{
    struct ds_proc p = {0};
    char *db = th_unique("t_ds_longpoll");
    json_t *page;
    int64_t worst = 0, woke[5];

    ds_start(&p, db, NULL);
    ASSERT_EQ(ds_post(&p, "{\"collection\":\"lp\",\"batch_id\":\"l0\",\"data\":[{\"n\":0}]}", NULL),
              202);
    page = ds_wait_revision(&p, "lp", 1, NULL);
    for (int round = 1; round <= 5; round++) {
        char *inm = sh_xasprintf("If-None-Match: \"%lld\"",
                                 (long long)json_integer_value(json_object_get(page, "revision")));
        struct poller w = {&p, inm, 0, 0, NULL};
        pthread_t th;
        char body[128];
        int64_t wrote_at;

        ASSERT_EQ(pthread_create(&th, NULL, poll_thread, &w), 0);
        (void)usleep(300000); /* the poller is blocked in the server by now */
        ASSERT_EQ(w.returned_at, 0);
        (void)snprintf(body, sizeof(body),
                       "{\"collection\":\"lp\",\"batch_id\":\"l%d\",\"data\":[{\"n\":%d}]}", round,
                       round);
        ASSERT_EQ(ds_post(&p, body, NULL), 202);
        wrote_at = th_now_ms();
        ASSERT_EQ(pthread_join(th, NULL), 0);
        ASSERT_EQ(w.status, 200);
        fprintf(stderr, "long-poll round %d: woke %lld ms after the 202\n", round,
                (long long)(w.returned_at - wrote_at));
        woke[round - 1] = w.returned_at - wrote_at;
        /* a single round may hit a scheduling hiccup on a loaded box; the
         * median below must stay under 100 ms, every round under 1 s */
        ASSERT_LT(w.returned_at - wrote_at, 1000);
        if (w.returned_at - wrote_at > worst)
            worst = w.returned_at - wrote_at;
        json_decref(page);
        page = json_loads(w.body, 0, NULL);
        ASSERT_NOT_NULL(page);
        ASSERT_EQ(json_integer_value(json_object_get(page, "count")), round + 1);
        free(w.body);
        free(inm);
    }
    for (int i = 0; i < 5; i++) /* sort the five samples */
        for (int j = i + 1; j < 5; j++)
            if (woke[j] < woke[i]) {
                int64_t tmp = woke[i];
                woke[i] = woke[j];
                woke[j] = tmp;
            }
    fprintf(stderr, "long-poll wake-up after the write: median %lld ms, worst %lld ms\n",
            (long long)woke[2], (long long)worst);
    ASSERT_LT(woke[2], 100);
    json_decref(page);
    ds_stop(&p, SIGTERM);
    free(p.db);
    free(db);
}

static void expect_400(const struct ds_proc *p, const char *body, long status, const char *path)
{
    char *resp = NULL;
    long st = ds_post(p, body, &resp);
    json_t *j;

    if (st != status)
        CHECK_FAIL("POST %s: status %ld, expected %ld (%s)", body, st, status, resp);
    j = json_loads(resp, 0, NULL);
    ASSERT_NOT_NULL(j);
    ASSERT(json_is_string(json_object_get(j, "error")));
    ASSERT(json_is_array(json_object_get(j, "details")));
    if (path)
        ASSERT_STR_EQ(sget(json_array_get(json_object_get(j, "details"), 0), "path"), path);
    json_decref(j);
    free(resp);
}

static void test_every_bad_input_class_is_answered_with_details(void)
{
    struct ds_proc p = {0};
    char *db = th_unique("t_ds_bad");
    const char *extra[] = {"DS_MAX_BATCH_BYTES=65536", "DS_MAX_ITEMS=5", NULL};
    struct sh_buf b;
    char *body = NULL;

    ds_start(&p, db, extra);
    expect_400(&p, "{\"collection\":", 400, NULL); /* bad JSON */
    expect_400(&p, "", 400, NULL);                 /* empty body */
    expect_400(&p, "[1,2]", 400, "$");             /* not an object */
    expect_400(&p, "{\"collection\":\"q\",\"batch_id\":7,\"data\":[]}", 400, "$.batch_id");
    expect_400(&p, "{\"collection\":\"q\",\"batch_id\":\"b\",\"data\":\"x\"}", 400, "$.data");
    expect_400(&p, "{\"collection\":\"q\",\"batch_id\":\"b\",\"data\":[{},[]]}", 400, "$.data[1]");
    expect_400(&p, "{\"collection\":\"q\",\"batch_id\":\"b\",\"key\":[1],\"data\":[]}", 400,
               "$.key[0]");
    expect_400(&p, "{\"collection\":\"Bad/Name\",\"batch_id\":\"b\",\"data\":[]}", 400,
               "$.collection");
    expect_400(&p, "{\"collection\":\"system.users\",\"batch_id\":\"b\",\"data\":[]}", 400,
               "$.collection");
    expect_400(&p, "{\"collection\":\"q\",\"data\":[{}]}", 400, "$.batch_id"); /* missing */
    expect_400(&p, "{\"collection\":\"q\",\"batch_id\":\"b\",\"data\":[{},{},{},{},{},{}]}", 413,
               "$.data"); /* too many items */
    /* body over DS_MAX_BATCH_BYTES: 413 before parsing */
    sh_buf_init(&b, 0);
    (void)sh_buf_appends(&b, "{\"collection\":\"q\",\"batch_id\":\"b\",\"data\":[{\"s\":\"", NULL);
    for (int i = 0; i < 70000; i++)
        (void)sh_buf_append(&b, "x", 1, NULL);
    (void)sh_buf_appends(&b, "\"}]}", NULL);
    ASSERT_EQ(ds_post(&p, b.data, &body), 413);
    free(body);
    body = NULL;
    sh_buf_done(&b);
    /* GET parameter checks */
    ASSERT_EQ(ds_get(&p, "/collections/q?limit=0", NULL, &body, NULL), 400);
    ASSERT_STR_CONTAINS(body, "limit");
    free(body);
    ASSERT_EQ(ds_get(&p, "/collections/q?limit=10001", NULL, NULL, NULL), 400);
    ASSERT_EQ(ds_get(&p, "/collections/q?skip=-1", NULL, NULL, NULL), 400);
    ASSERT_EQ(ds_get(&p, "/collections/q?wait=61", NULL, NULL, NULL), 400);
    ASSERT_EQ(ds_get(&p, "/collections/q?since=yesterday", NULL, NULL, NULL), 400);
    ASSERT_EQ(ds_get(&p, "/collections/Q", NULL, NULL, NULL), 400);
    /* still healthy and working after all that */
    ASSERT_EQ(ds_post(&p, "{\"collection\":\"q\",\"batch_id\":\"ok\",\"data\":[{}]}", NULL), 202);
    ASSERT_EQ(ds_get(&p, "/health", NULL, NULL, NULL), 200);
    ds_stop(&p, SIGTERM);
    free(p.db);
    free(db);
}

static void test_backpressure_engages_before_capped_overwrite(void)
{
    struct ds_proc p = {0};
    char *db = th_unique("t_ds_bp");
    /* 1 MiB capped collection, back-pressure at the default capped/4, no reducer. */
    const char *off[] = {"DS_CAPPED_BYTES=1048576", "DS_TAILER=0", NULL};
    const char *on[] = {"DS_CAPPED_BYTES=1048576", "DS_TAILER=1", NULL};
    struct sh_buf b;
    char pad[2001];
    int accepted = 0, got503 = 0;
    char *hdrs = NULL;
    mongoc_client_t *mc;
    json_t *page;

    memset(pad, 'p', 2000);
    pad[2000] = 0;
    ds_start(&p, db, off);
    for (int i = 0; i < 200 && !got503; i++) {
        long st;
        char *url;
        const char *h[] = {"Content-Type: application/json", NULL};
        sh_buf_init(&b, 0);
        (void)sh_buf_appendf(&b, NULL,
                             "{\"collection\":\"bp\",\"batch_id\":\"bp%d\",\"key\":[\"k\"],"
                             "\"data\":[",
                             i);
        for (int j = 0; j < 10; j++)
            (void)sh_buf_appendf(&b, NULL, "%s{\"k\":\"%d-%d\",\"pad\":\"%s\"}", j ? "," : "", i, j,
                                 pad);
        (void)sh_buf_appends(&b, "]}", NULL);
        url = sh_xasprintf("%s/items", p.base);
        ASSERT_EQ(th_http("POST", url, h, b.data, &st, NULL, &hdrs), 0);
        free(url);
        sh_buf_done(&b);
        if (st == 202) {
            accepted++;
        } else {
            char *ra = th_header(hdrs, "Retry-After");
            ASSERT_EQ(st, 503);
            ASSERT_NOT_NULL(ra);
            free(ra);
            got503 = 1;
        }
        free(hdrs);
        hdrs = NULL;
    }
    fprintf(stderr, "back-pressure after %d batches of ~20 KB (capped 1 MiB)\n", accepted);
    ASSERT(got503);
    ASSERT_GE(accepted, 5);
    /* engaged at no more than half the capped size, so nothing unread can be trimmed */
    ASSERT_LE(accepted * 20100, 1048576 / 2);
    mc = ds_mongo(db);
    ASSERT_EQ(ds_count(mc, db, "capped_datasources", NULL), accepted);
    /* a replay of a stored batch is still acknowledged under back-pressure */
    {
        char *resp = NULL;
        sh_buf_init(&b, 0);
        (void)sh_buf_appends(&b, "{\"collection\":\"bp\",\"batch_id\":\"bp0\",\"data\":[{}]}",
                             NULL);
        ASSERT_EQ(ds_post(&p, b.data, &resp), 202);
        ASSERT_STR_CONTAINS(resp, "\"duplicate\":true");
        free(resp);
        sh_buf_done(&b);
    }
    ds_stop(&p, SIGTERM);

    /* the reducer drains the backlog and ingest accepts again */
    ds_start(&p, db, on);
    page = ds_wait_revision(&p, "bp", 1, NULL);
    json_decref(page);
    {
        int64_t deadline = th_now_ms() + 20000;
        for (;;) {
            page = ds_get_json(&p, "/collections/bp?limit=1", 200);
            if (json_integer_value(json_object_get(page, "count")) == accepted * 10)
                break;
            json_decref(page);
            ASSERT_LT(th_now_ms(), deadline);
            (void)usleep(50000);
        }
        json_decref(page);
    }
    ASSERT_EQ(
        ds_post(&p, "{\"collection\":\"bp\",\"batch_id\":\"after\",\"data\":[{\"x\":1}]}", NULL),
        202);
    {
        char *m = NULL;
        ASSERT_EQ(ds_get(&p, "/metrics", NULL, &m, NULL), 200);
        ASSERT_STR_CONTAINS(m, "scrapr_datasource_tailer_overruns_total 0");
        free(m);
    }
    ds_drop_db(mc, db);
    mongoc_client_destroy(mc);
    ds_stop(&p, SIGTERM);
    free(p.db);
    free(db);
}

/* `batches` remembers reduced batch_ids for DS_BATCH_RETENTION_S only: older
 * claims are pruned (it would grow forever), a replay within the window is a
 * duplicate, one after it is stored as a new batch. */
static void test_batch_ids_are_forgotten_after_the_retention_window(void)
{
    struct ds_proc p = {0};
    char *db = th_unique("t_ds_retain");
    const char *env[] = {"DS_BATCH_RETENTION_S=1", "DS_TAILER_LOCK=0", NULL};
    const char *batch = "{\"collection\":\"ret\",\"batch_id\":\"old\",\"key\":[\"k\"],"
                        "\"data\":[{\"k\":\"x\",\"v\":1}]}";
    char *body = NULL;
    mongoc_client_t *mc;
    json_t *page;
    int64_t deadline;

    ds_start(&p, db, env);
    mc = ds_mongo(db);
    ASSERT_EQ(ds_post(&p, batch, NULL), 202);
    page = ds_wait_revision(&p, "ret", 1, NULL);
    json_decref(page);
    /* within the window: a duplicate */
    ASSERT_EQ(ds_post(&p, batch, &body), 202);
    ASSERT_STR_CONTAINS(body, "\"duplicate\":true");
    free(body);
    body = NULL;
    ASSERT_EQ(ds_count(mc, db, "batches", NULL), 1);
    /* pruned once older than the window */
    deadline = th_now_ms() + 10000;
    while (ds_count(mc, db, "batches", NULL) != 0) {
        ASSERT_LT(th_now_ms(), deadline);
        (void)usleep(50000);
    }
    /* after the window the same batch_id is a new batch */
    ASSERT_EQ(ds_post(&p, batch, &body), 202);
    ASSERT_STR_CONTAINS(body, "\"duplicate\":false");
    free(body);
    ds_drop_db(mc, db);
    mongoc_client_destroy(mc);
    ds_stop(&p, SIGTERM);
    free(p.db);
    free(db);
}

/* Replays of reduced batches are answered from the claims the tailing
 * process keeps in memory (claimed.c). The set must hold the claims of the
 * replica that tailed before (loaded when the lock is taken), and a process
 * whose set overflowed must fall back to asking `batches`: either way a
 * replay is acknowledged as a duplicate and changes nothing. */
static void replay_is_a_duplicate(const struct ds_proc *p, const char *coll, const char *id)
{
    char body[200], *resp = NULL;

    (void)snprintf(body, sizeof(body),
                   "{\"collection\":\"%s\",\"batch_id\":\"%s\",\"key\":[\"k\"],"
                   "\"data\":[{\"k\":\"%s\",\"v\":999}]}",
                   coll, id, id);
    ASSERT_EQ(ds_post(p, body, &resp), 202);
    ASSERT_STR_CONTAINS(resp, "\"duplicate\":true");
    free(resp);
}

/* Waits until coll holds n items (revisions are seqs, which may skip). */
static void wait_count(const struct ds_proc *p, const char *coll, int n)
{
    char path[80];
    int64_t deadline = th_now_ms() + 15000;

    (void)snprintf(path, sizeof(path), "/collections/%s?limit=1", coll);
    for (;;) {
        char *body = NULL;
        json_t *j = NULL;
        if (ds_get(p, path, NULL, &body, NULL) == 200)
            j = json_loads(body, 0, NULL);
        free(body);
        if (j && json_integer_value(json_object_get(j, "count")) == n) {
            json_decref(j);
            return;
        }
        json_decref(j);
        if (th_now_ms() > deadline)
            CHECK_FAIL("collection %s never held %d items", coll, n);
        (void)usleep(20000);
    }
}

static void drop_db(const char *db)
{
    mongoc_client_t *mc = ds_mongo(db);
    ds_drop_db(mc, db);
    mongoc_client_destroy(mc);
}

/* Waits until the reduced batches left the capped collection, so that only
 * the claims (not the capped _id) can recognise a replay. */
static void wait_capped_empty(const char *db)
{
    mongoc_client_t *mc = ds_mongo(db);
    int64_t deadline = th_now_ms() + 10000;

    while (ds_count(mc, db, "capped_datasources", NULL) != 0) {
        ASSERT_LT(th_now_ms(), deadline);
        (void)usleep(20000);
    }
    mongoc_client_destroy(mc);
}

static void post_item(const struct ds_proc *p, const char *coll, const char *id)
{
    char body[200];

    (void)snprintf(body, sizeof(body),
                   "{\"collection\":\"%s\",\"batch_id\":\"%s\",\"key\":[\"k\"],"
                   "\"data\":[{\"k\":\"%s\",\"v\":1}]}",
                   coll, id, id);
    ASSERT_EQ(ds_post(p, body, NULL), 202);
}

/* every item of coll still has v == 1 and there are n of them */
static void items_untouched(const struct ds_proc *p, const char *coll, int n)
{
    char path[80];
    json_t *page, *it;
    size_t i;

    (void)usleep(300000); /* a wrongly stored replay would be reduced by now */
    (void)snprintf(path, sizeof(path), "/collections/%s", coll);
    page = ds_get_json(p, path, 200);
    ASSERT_EQ(json_integer_value(json_object_get(page, "count")), n);
    json_array_foreach(json_object_get(page, "items"), i, it)
        ASSERT_EQ(json_integer_value(json_object_get(json_object_get(it, "data"), "v")), 1);
    json_decref(page);
}

static void test_a_new_tailer_answers_replays_of_the_last_ones_batches(void)
{
    struct ds_proc a = {0}, b = {0};
    char *db = th_unique("t_ds_claims");

    ds_start(&a, db, NULL);
    post_item(&a, "cl", "first");
    post_item(&a, "cl", "second");
    wait_count(&a, "cl", 2);
    ds_stop(&a, SIGTERM); /* releases the tailer lock */
    ds_start(&b, db, NULL);
    post_item(&b, "cl", "third");
    wait_count(&b, "cl", 3); /* reduced: b tails, its set is loaded */
    wait_capped_empty(db);
    replay_is_a_duplicate(&b, "cl", "first");
    replay_is_a_duplicate(&b, "cl", "second");
    replay_is_a_duplicate(&b, "cl", "third");
    items_untouched(&b, "cl", 3);
    ds_stop(&b, SIGTERM);
    drop_db(db);
    free(a.db);
    free(b.db);
    free(db);
}

static void test_replays_are_caught_past_the_claims_cache_limit(void)
{
    struct ds_proc p = {0};
    char *db = th_unique("t_ds_claimsmax");
    const char *env[] = {"DS_CLAIMS_CACHE_MAX=2", NULL};
    const char *ids[] = {"b1", "b2", "b3", "b4"};

    ds_start(&p, db, env);
    for (size_t i = 0; i < 4; i++) {
        post_item(&p, "cm", ids[i]);
        wait_count(&p, "cm", (int)i + 1);
    }
    wait_capped_empty(db);
    for (size_t i = 0; i < 4; i++)
        replay_is_a_duplicate(&p, "cm", ids[i]);
    items_untouched(&p, "cm", 4);
    ds_stop(&p, SIGTERM);
    drop_db(db);
    free(p.db);
    free(db);
}

/* Two replicas on one database: the tailing one reduces its own batches from
 * the in-process hand-off and must still pick up the batches the other
 * replica (DS_TAILER=0) stores, from the capped collection, while its own
 * stream keeps the hand-off busy. Every batch of both ends up reduced once
 * and the capped collection is left empty (FerretDB: poll mode). */
static void test_other_replicas_batches_are_reduced_beside_the_handoff(void)
{
    struct ds_proc tail = {0}, other = {0};
    char *db = th_unique("t_ds_replicas");
    const char *on[] = {"DS_TAILER_LOCK=0", NULL};
    const char *off[] = {"DS_TAILER=0", NULL};
    int64_t posted_at = 0, seen_at = 0;
    json_t *page;
    mongoc_client_t *mc;

    ds_start(&tail, db, on);
    ds_start(&other, db, off);
    for (int i = 0; i < 40; i++) {
        char body[160];
        (void)snprintf(body, sizeof(body),
                       "{\"collection\":\"rep\",\"batch_id\":\"own-%d\",\"key\":[\"k\"],"
                       "\"data\":[{\"k\":\"own%d\"}]}",
                       i, i);
        ASSERT_EQ(ds_post(&tail, body, NULL), 202);
        if (i == 10) {
            ASSERT_EQ(ds_post(&other,
                              "{\"collection\":\"rep2\",\"batch_id\":\"theirs\","
                              "\"data\":[{\"k\":\"theirs\"}]}",
                              NULL),
                      202);
            posted_at = th_now_ms();
        }
        if (i > 10 && !seen_at && ds_get(&tail, "/collections/rep2", NULL, NULL, NULL) == 200)
            seen_at = th_now_ms();
    }
    page = ds_wait_revision(&tail, "rep2", 1, NULL);
    if (!seen_at)
        seen_at = th_now_ms();
    fprintf(stderr, "other replica's batch reduced %lld ms after its 202\n",
            (long long)(seen_at - posted_at));
    ASSERT_EQ(json_integer_value(json_object_get(page, "count")), 1);
    json_decref(page);
    mc = ds_mongo(db);
    {
        int64_t deadline = th_now_ms() + 5000;
        for (;;) {
            json_t *own = ds_get_json(&tail, "/collections/rep?limit=1", 200);
            json_int_t n = json_integer_value(json_object_get(own, "count"));
            json_decref(own);
            if (n == 40 && ds_count(mc, db, "capped_datasources", NULL) == 0)
                break;
            ASSERT_LT(th_now_ms(), deadline);
            (void)usleep(20000);
        }
    }
    ASSERT_EQ(ds_count(mc, db, "batches", NULL), 41);
    mongoc_client_destroy(mc);
    ds_stop(&other, SIGTERM);
    ds_stop(&tail, SIGTERM);
    free(other.db);
    free(tail.db);
    free(db);
}

/* The revision is a cursor readers follow (endpoints ask since=<rev>): once
 * a collection is at revision R, no item with a revision <= R may appear
 * later. Batches posted from the tailer's very start (hand-off enabling,
 * first reads of the capped collection) and while readers sample: every
 * sample's items up to its revision must equal the final ones up to it. */
static void test_no_item_appears_behind_the_revision(void)
{
    struct ds_proc p = {0};
    char *db = th_unique("t_ds_order");
    const char *on[] = {"DS_TAILER_LOCK=0", NULL};
    json_t *samples = json_array(), *final, *s;
    size_t i;

    ds_start(&p, db, on);
    for (int b = 0; b < 60; b++) {
        char body[160];
        (void)snprintf(body, sizeof(body),
                       "{\"collection\":\"ord\",\"batch_id\":\"o%d\",\"key\":[\"k\"],"
                       "\"data\":[{\"k\":\"k%d\"}]}",
                       b, b);
        ASSERT_EQ(ds_post(&p, body, NULL), 202);
        if (b % 3 == 0) {
            char *resp = NULL;
            if (ds_get(&p, "/collections/ord?since=0&limit=10000", NULL, &resp, NULL) == 200)
                (void)json_array_append_new(samples, json_loads(resp, 0, NULL));
            free(resp);
        }
    }
    final = ds_wait_revision(&p, "ord", 1, NULL);
    json_decref(final);
    {
        int64_t deadline = th_now_ms() + 15000;
        for (;;) {
            final = ds_get_json(&p, "/collections/ord?since=0&limit=10000", 200);
            if (json_integer_value(json_object_get(final, "count")) == 60)
                break;
            json_decref(final);
            ASSERT_LT(th_now_ms(), deadline);
            (void)usleep(20000);
        }
    }
    ASSERT(json_array_size(samples) > 5);
    json_array_foreach(samples, i, s)
    {
        json_int_t rev = json_integer_value(json_object_get(s, "revision"));
        size_t n_then = 0, n_final = 0, j;
        json_t *it;
        json_array_foreach(json_object_get(s, "items"), j, it)
        {
            if (json_integer_value(json_object_get(it, "revision")) <= rev)
                n_then++;
        }
        json_array_foreach(json_object_get(final, "items"), j, it)
        {
            if (json_integer_value(json_object_get(it, "revision")) <= rev)
                n_final++;
        }
        if (n_then != n_final)
            CHECK_FAIL("at revision %lld a reader saw %zu items, later %zu had revisions <= it",
                       (long long)rev, n_then, n_final);
    }
    json_decref(final);
    json_decref(samples);
    ds_stop(&p, SIGTERM);
    free(p.db);
    free(db);
}

int main(void)
{
    /* A missing test bed is a failure, never a skip. */
    if (!getenv("MONGO_URL") || !getenv("CONSUL_HTTP_ADDR"))
        CHECK_FAIL("MONGO_URL / CONSUL_HTTP_ADDR not set: run under tests/lib/testbed.sh");
    RUN(test_duplicates_across_batches_collapse_with_first_and_last_seen);
    RUN(test_replayed_batch_id_stores_nothing);
    RUN(test_later_batch_sets_its_fields_and_keeps_others);
    RUN(test_etag_304_and_paging);
    RUN(test_long_poll_wakes_within_100ms_of_a_write);
    RUN(test_every_bad_input_class_is_answered_with_details);
    RUN(test_backpressure_engages_before_capped_overwrite);
    RUN(test_one_round_of_many_batches_equals_one_by_one);
    RUN(test_batch_ids_are_forgotten_after_the_retention_window);
    RUN(test_other_replicas_batches_are_reduced_beside_the_handoff);
    RUN(test_no_item_appears_behind_the_revision);
    RUN(test_a_new_tailer_answers_replays_of_the_last_ones_batches);
    RUN(test_replays_are_caught_past_the_claims_cache_limit);
    return 0;
}
