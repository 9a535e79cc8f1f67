/* Exactly-once under kill -9: a client streams 10,000 items (100 batches of
 * 100, keys overlapping across batches) and retries every batch with the same
 * batch_id until it gets a 202, while another thread kills the datasource
 * with SIGKILL at random moments and restarts it. At the end the collection
 * must hold exactly the expected items: right count, each key once, each with
 * the data of the last batch that carried it, first_seen <= last_seen. */
#include <pthread.h>

#include "test_datasource_util.h"

#define BATCHES 100
#define PER_BATCH 100
#define KEYS 6000 /* item n has key n % KEYS: the last 4000 items revisit keys 0..3999 */

static struct ds_proc proc;
static volatile int producing = 1;
static int kills;
static const char *const env[] = {"DS_TAILER_LOCK=0", "LOG_LEVEL=warn", NULL};

static void *killer(void *arg)
{
    unsigned seed = (unsigned)getpid();

    (void)arg;
    while (producing) {
        /* ingest takes ~5-15 ms per batch: kill often enough for >= 3 kills */
        (void)usleep(50000 + (useconds_t)(rand_r(&seed) % 300) * 1000);
        if (!producing)
            break;
        ds_stop(&proc, SIGKILL);
        kills++;
        ds_start(&proc, proc.db, env);
    }
    return NULL;
}

static char *batch_body(int b)
{
    struct sh_buf buf;

    sh_buf_init(&buf, 0);
    (void)sh_buf_appendf(&buf, NULL,
                         "{\"collection\":\"crash\",\"config_id\":\"c\",\"batch_id\":\"crash-%d\","
                         "\"key\":[\"k\"],\"data\":[",
                         b);
    for (int i = 0; i < PER_BATCH; i++) {
        int n = b * PER_BATCH + i;
        (void)sh_buf_appendf(&buf, NULL, "%s{\"k\":\"k%d\",\"n\":%d,\"b\":%d}", i ? "," : "",
                             n % KEYS, n, b);
    }
    (void)sh_buf_appends(&buf, "]}", NULL);
    return sh_buf_steal(&buf, NULL);
}

static void test_kill9_during_10000_items_neither_loses_nor_duplicates(void)
{
    char *db = th_unique("t_ds_crash");
    pthread_t th;
    int retries = 0, duplicates = 0;
    mongoc_client_t *mc;
    json_t *page, *items, *it;
    int *seen;
    size_t i;
    char base[64];

    ds_start(&proc, db, env);
    (void)snprintf(base, sizeof(base), "%s", proc.base);
    ASSERT_EQ(pthread_create(&th, NULL, killer, NULL), 0);
    for (int b = 0; b < BATCHES; b++) {
        char *body = batch_body(b);
        char *url = sh_xasprintf("%s/items", base);
        const char *h[] = {"Content-Type: application/json", NULL};
        int64_t deadline = th_now_ms() + 60000;
        for (;;) {
            long st = -1;
            char *resp = NULL;
            if (th_http("POST", url, h, body, &st, &resp, NULL) == 0 && st == 202) {
                if (strstr(resp, "\"duplicate\":true"))
                    duplicates++;
                free(resp);
                break;
            }
            free(resp);
            retries++;
            ASSERT_LT(th_now_ms(), deadline);
            (void)usleep(50000);
        }
        free(url);
        free(body);
    }
    producing = 0;
    ASSERT_EQ(pthread_join(th, NULL), 0);
    fprintf(stderr, "stream done: %d kills, %d retried requests, %d acknowledged as duplicates\n",
            kills, retries, duplicates);
    ASSERT_GE(kills, 3);
    /* one more crash while the reducer may still be catching up */
    ds_stop(&proc, SIGKILL);
    ds_start(&proc, db, env);

    /* wait until the tailer has reduced everything: position == last sequence */
    mc = ds_mongo(db);
    {
        int64_t deadline = th_now_ms() + 400000; /* FerretDB on a busy 2-core box is slow */
        for (;;) {
            mongoc_collection_t *col;
            bson_t *f = BCON_NEW("_id", "datasource");
            const bson_t *d;
            int64_t state = -1, counter = -2;
            bson_iter_t iter;
            mongoc_cursor_t *cur;
            col = mongoc_client_get_collection(mc, db, "tailer_state");
            cur = mongoc_collection_find_with_opts(col, f, NULL, NULL);
            if (mongoc_cursor_next(cur, &d) && bson_iter_init_find(&iter, d, "seq"))
                state = bson_iter_as_int64(&iter);
            mongoc_cursor_destroy(cur);
            mongoc_collection_destroy(col);
            bson_destroy(f);
            /* the highest sequence actually stored */
            {
                bson_t *opts =
                    BCON_NEW("sort", "{", "seq", BCON_INT32(-1), "}", "limit", BCON_INT64(1),
                             "projection", "{", "seq", BCON_INT32(1), "}");
                bson_t empty = BSON_INITIALIZER;
                col = mongoc_client_get_collection(mc, db, "capped_datasources");
                cur = mongoc_collection_find_with_opts(col, &empty, opts, NULL);
                if (mongoc_cursor_next(cur, &d) && bson_iter_init_find(&iter, d, "seq"))
                    counter = bson_iter_as_int64(&iter);
                mongoc_cursor_destroy(cur);
                mongoc_collection_destroy(col);
                bson_destroy(opts);
            }
            if (state >= counter && state > 0)
                break;
            ASSERT_LT(th_now_ms(), deadline);
            (void)usleep(100000);
        }
    }

    page = ds_get_json(&proc, "/collections/crash?limit=10000", 200);
    items = json_object_get(page, "items");
    fprintf(stderr, "final: count=%lld items=%zu revision=%lld\n",
            (long long)json_integer_value(json_object_get(page, "count")), json_array_size(items),
            (long long)json_integer_value(json_object_get(page, "revision")));
    ASSERT_EQ(json_integer_value(json_object_get(page, "count")), KEYS);
    ASSERT_EQ(json_array_size(items), KEYS);
    ASSERT_EQ(ds_count(mc, db, "items_crash", NULL), KEYS);
    ASSERT_EQ(ds_count(mc, db, "batches", NULL), BATCHES);
    seen = sh_xcalloc(KEYS, sizeof(int));
    json_array_foreach(items, i, it)
    {
        const char *key = json_string_value(json_object_get(it, "key"));
        json_t *data = json_object_get(it, "data");
        int k, n, expect_n;
        ASSERT_NOT_NULL(key);
        ASSERT_EQ(key[0], 'k');
        k = atoi(key + 1);
        ASSERT(k >= 0 && k < KEYS);
        ASSERT_EQ(seen[k], 0);
        seen[k] = 1;
        n = (int)json_integer_value(json_object_get(data, "n"));
        /* the last item carrying key k */
        expect_n = k + KEYS < BATCHES * PER_BATCH ? k + KEYS : k;
        ASSERT_EQ(n, expect_n);
        ASSERT_STR_EQ(json_string_value(json_object_get(data, "k")), key);
        ASSERT(strcmp(json_string_value(json_object_get(it, "first_seen")),
                      json_string_value(json_object_get(it, "last_seen"))) <= 0);
        if (expect_n != k) /* seen in two batches */
            ASSERT(strcmp(json_string_value(json_object_get(it, "first_seen")),
                          json_string_value(json_object_get(it, "last_seen"))) < 0);
    }
    free(seen);
    json_decref(page);
    ds_drop_db(mc, db);
    mongoc_client_destroy(mc);
    ds_stop(&proc, SIGTERM);
    free(proc.db);
    free(db);
}

int main(void)
{
    if (!getenv("MONGO_URL") || !getenv("CONSUL_HTTP_ADDR"))
        CHECK_FAIL("MONGO_URL / CONSUL_HTTP_ADDR not set: run under tests/lib/testbed.sh");
    RUN(test_kill9_during_10000_items_neither_loses_nor_duplicates);
    return 0;
}
