/* datasource pure logic: batch validation (every bad-input class with its
 * JSON path and status), collection names, item identity, ETag parsing. */
#include "check.h"
#include "datasource.h"
#include "shared/xalloc.h"

static const struct ds_limits lim = {10, 200};

/* Parses text, validates, returns the status; *ret_problems (may be NULL). */
static int check_body(const char *text, json_t **ret_problems)
{
    json_error_t jerr;
    json_t *body = json_loads(text, 0, &jerr);
    struct ds_batch b;
    json_t *problems = NULL;
    int st;

    ASSERT_NOT_NULL(body);
    st = ds_batch_parse(body, &lim, &b, &problems);
    json_decref(body);
    if (st == 0)
        ds_batch_done(&b);
    if (ret_problems)
        *ret_problems = problems;
    else
        json_decref(problems);
    return st;
}

/* The first problem's path. */
static const char *first_path(json_t *problems)
{
    return json_string_value(json_object_get(json_array_get(problems, 0), "path"));
}

static void test_collection_names_follow_the_rule(void)
{
    ASSERT_EQ(ds_collection_name_ok("quotes"), 1);
    ASSERT_EQ(ds_collection_name_ok("0a_b-c"), 1);
    ASSERT_EQ(
        ds_collection_name_ok("a123456789012345678901234567890123456789012345678901234567890123"),
        1); /* 64 chars */
    ASSERT_EQ(
        ds_collection_name_ok("a1234567890123456789012345678901234567890123456789012345678901234"),
        0); /* 65 chars */
    ASSERT_EQ(ds_collection_name_ok(""), 0);
    ASSERT_EQ(ds_collection_name_ok("_x"), 0);
    ASSERT_EQ(ds_collection_name_ok("-x"), 0);
    ASSERT_EQ(ds_collection_name_ok("Quotes"), 0);
    ASSERT_EQ(ds_collection_name_ok("a.b"), 0);
    ASSERT_EQ(ds_collection_name_ok("a/b"), 0);
    ASSERT_EQ(ds_collection_name_ok("a$"), 0);
    ASSERT_EQ(ds_collection_name_ok(NULL), 0);
}

static void test_valid_batch_is_parsed_with_compact_data(void)
{
    json_t *body = json_loads("{\"collection\":\"q\",\"config_id\":\"c1\",\"batch_id\":\"b1\","
                              "\"key\":[\"t\"],\"data\":[{\"t\": \"x\", \"n\": 1}],\"extra\":1}",
                              0, NULL);
    struct ds_batch b;
    json_t *problems = NULL;

    ASSERT_EQ(ds_batch_parse(body, &lim, &b, &problems), 0);
    ASSERT_NULL(problems);
    ASSERT_STR_EQ(b.collection, "q");
    ASSERT_STR_EQ(b.config_id, "c1");
    ASSERT_STR_EQ(b.batch_id, "b1");
    ASSERT_EQ(json_array_size(b.key), 1);
    ASSERT_STR_EQ(b.data_json, "[{\"t\":\"x\",\"n\":1}]");
    ASSERT_EQ(b.data_len, strlen(b.data_json));
    ds_batch_done(&b);
    ds_batch_done(NULL);
    json_decref(body);
    /* key and config_id are optional; an empty data array is fine */
    ASSERT_EQ(check_body("{\"collection\":\"q\",\"batch_id\":\"b\",\"data\":[]}", NULL), 0);
    ASSERT_EQ(check_body("{\"collection\":\"q\",\"batch_id\":\"b\",\"key\":null,\"config_id\":"
                         "null,\"data\":[{}]}",
                         NULL),
              0);
}

static void test_each_bad_input_class_names_its_path(void)
{
    json_t *p;

    ASSERT_EQ(check_body("[1]", &p), 400);
    ASSERT_STR_EQ(first_path(p), "$");
    json_decref(p);

    ASSERT_EQ(check_body("{\"batch_id\":\"b\",\"data\":[]}", &p), 400);
    ASSERT_STR_EQ(first_path(p), "$.collection");
    json_decref(p);

    ASSERT_EQ(check_body("{\"collection\":7,\"batch_id\":\"b\",\"data\":[]}", &p), 400);
    ASSERT_STR_EQ(first_path(p), "$.collection");
    json_decref(p);

    ASSERT_EQ(check_body("{\"collection\":\"Bad Name\",\"batch_id\":\"b\",\"data\":[]}", &p), 400);
    ASSERT_STR_EQ(first_path(p), "$.collection");
    ASSERT_STR_CONTAINS(json_string_value(json_object_get(json_array_get(p, 0), "message")),
                        "^[a-z0-9]");
    json_decref(p);

    ASSERT_EQ(check_body("{\"collection\":\"q\",\"data\":[]}", &p), 400);
    ASSERT_STR_EQ(first_path(p), "$.batch_id");
    json_decref(p);

    ASSERT_EQ(check_body("{\"collection\":\"q\",\"batch_id\":5,\"data\":[]}", &p), 400);
    ASSERT_STR_EQ(first_path(p), "$.batch_id");
    json_decref(p);

    ASSERT_EQ(check_body("{\"collection\":\"q\",\"batch_id\":\"\",\"data\":[]}", &p), 400);
    ASSERT_STR_EQ(first_path(p), "$.batch_id");
    json_decref(p);

    ASSERT_EQ(check_body("{\"collection\":\"q\",\"batch_id\":\"~gap:1\",\"data\":[]}", &p), 400);
    ASSERT_STR_EQ(first_path(p), "$.batch_id");
    json_decref(p);

    {
        char long_id[200];
        char *body;
        memset(long_id, 'x', 129);
        long_id[129] = 0;
        body = sh_xasprintf("{\"collection\":\"q\",\"batch_id\":\"%s\",\"data\":[]}", long_id);
        ASSERT_EQ(check_body(body, &p), 400);
        ASSERT_STR_EQ(first_path(p), "$.batch_id");
        json_decref(p);
        free(body);
    }

    ASSERT_EQ(check_body("{\"collection\":\"q\",\"batch_id\":\"b\"}", &p), 400);
    ASSERT_STR_EQ(first_path(p), "$.data");
    json_decref(p);

    ASSERT_EQ(check_body("{\"collection\":\"q\",\"batch_id\":\"b\",\"data\":{}}", &p), 400);
    ASSERT_STR_EQ(first_path(p), "$.data");
    json_decref(p);

    ASSERT_EQ(check_body("{\"collection\":\"q\",\"batch_id\":\"b\",\"data\":[{},3,{}]}", &p), 400);
    ASSERT_STR_EQ(first_path(p), "$.data[1]");
    json_decref(p);

    ASSERT_EQ(check_body("{\"collection\":\"q\",\"batch_id\":\"b\",\"key\":\"t\",\"data\":[]}", &p),
              400);
    ASSERT_STR_EQ(first_path(p), "$.key");
    json_decref(p);

    ASSERT_EQ(
        check_body("{\"collection\":\"q\",\"batch_id\":\"b\",\"key\":[\"a\",2],\"data\":[]}", &p),
        400);
    ASSERT_STR_EQ(first_path(p), "$.key[1]");
    json_decref(p);

    ASSERT_EQ(
        check_body("{\"collection\":\"q\",\"batch_id\":\"b\",\"config_id\":[],\"data\":[]}", &p),
        400);
    ASSERT_STR_EQ(first_path(p), "$.config_id");
    json_decref(p);

    /* several problems are all listed */
    ASSERT_EQ(check_body("{\"collection\":\"A\",\"batch_id\":1,\"data\":[1]}", &p), 400);
    ASSERT_EQ(json_array_size(p), 3);
    json_decref(p);
}

static void test_size_limits_give_413(void)
{
    json_t *p;

    /* 11 items > max 10 */
    ASSERT_EQ(check_body("{\"collection\":\"q\",\"batch_id\":\"b\",\"data\":[{},{},{},{},{},{},{},"
                         "{},{},{},{}]}",
                         &p),
              413);
    ASSERT_STR_EQ(first_path(p), "$.data");
    json_decref(p);
    {
        char big[300];
        char *body;
        memset(big, 'y', 250);
        big[250] = 0;
        body = sh_xasprintf("{\"collection\":\"q\",\"batch_id\":\"b\",\"data\":[{\"a\":1},"
                            "{\"s\":\"%s\"}]}",
                            big);
        ASSERT_EQ(check_body(body, &p), 413);
        ASSERT_STR_EQ(first_path(p), "$.data[1]");
        json_decref(p);
        free(body);
    }
}

static void test_item_key_follows_the_brief(void)
{
    json_t *item = json_loads("{\"t\":\"hello\",\"n\":3,\"o\":{\"b\":1,\"a\":2}}", 0, NULL);
    json_t *k1 = json_loads("[\"t\"]", 0, NULL);
    json_t *k2 = json_loads("[\"t\",\"n\",\"missing\"]", 0, NULL);
    json_t *k3 = json_loads("[\"n\"]", 0, NULL);
    json_t *none = json_array();
    json_t *same = json_loads("{\"o\":{\"a\":2,\"b\":1},\"n\":3,\"t\":\"hello\"}", 0, NULL);
    char *s;
    char expect[40];

    s = ds_item_key(item, k1);
    ASSERT_STR_EQ(s, "hello");
    free(s);
    s = ds_item_key(item, k2);
    ASSERT_STR_EQ(s, "[\"hello\",3,null]");
    free(s);
    s = ds_item_key(item, k3); /* one key field, not a string: JSON array */
    ASSERT_STR_EQ(s, "[3]");
    free(s);
    /* hash of the sorted compact JSON: key order does not matter */
    {
        const char *canon = "{\"n\":3,\"o\":{\"a\":2,\"b\":1},\"t\":\"hello\"}";
        (void)snprintf(expect, sizeof(expect), "h:%016" PRIx64, ds_fnv1a64(canon, strlen(canon)));
    }
    s = ds_item_key(item, none);
    ASSERT_STR_EQ(s, expect);
    free(s);
    s = ds_item_key(same, NULL);
    ASSERT_STR_EQ(s, expect);
    free(s);
    /* FNV-1a 64 reference values */
    ASSERT(ds_fnv1a64("", 0) == 0xcbf29ce484222325ULL);
    ASSERT(ds_fnv1a64("a", 1) == 0xaf63dc4c8601ec8cULL);
    json_decref(item);
    json_decref(same);
    json_decref(k1);
    json_decref(k2);
    json_decref(k3);
    json_decref(none);
}

static void test_etag_parsing(void)
{
    int64_t r = -1;

    ASSERT_EQ(ds_etag_parse("\"12\"", &r), 1);
    ASSERT_EQ(r, 12);
    ASSERT_EQ(ds_etag_parse("W/\"7\"", &r), 1);
    ASSERT_EQ(r, 7);
    ASSERT_EQ(ds_etag_parse("0", &r), 1);
    ASSERT_EQ(r, 0);
    ASSERT_EQ(ds_etag_parse("*", &r), 0);
    ASSERT_EQ(ds_etag_parse("\"abc\"", &r), 0);
    ASSERT_EQ(ds_etag_parse("\"1\", \"2\"", &r), 0);
    ASSERT_EQ(ds_etag_parse(NULL, &r), 0);
}

static void test_time_round_trip(void)
{
    char buf[40];
    int64_t ms = 0;

    ds_format_time(1700000000123LL, buf, sizeof(buf));
    ASSERT_STR_EQ(buf, "2023-11-14T22:13:20.123Z");
    ASSERT_EQ(ds_parse_time(buf, &ms), 1);
    ASSERT_EQ(ms, 1700000000123LL);
    ASSERT_EQ(ds_parse_time("2023-11-14T22:13:20Z", &ms), 1);
    ASSERT_EQ(ms, 1700000000000LL);
    ASSERT_EQ(ds_parse_time("2023-11-14", &ms), 0);
    ASSERT_EQ(ds_parse_time("2023-11-14T22:13:20+02:00", &ms), 0);
}

static void test_feed_wakes_waiter_and_times_out(void)
{
    struct ds_feed *f = ds_feed_new();

    ASSERT_EQ(ds_feed_revision(f, "q"), -1);
    ds_feed_publish(f, "q", 5);
    ASSERT_EQ(ds_feed_revision(f, "q"), 5);
    ds_feed_publish(f, "q", 3); /* never backwards */
    ASSERT_EQ(ds_feed_revision(f, "q"), 5);
    /* different revision known: returns at once */
    ASSERT_EQ(ds_feed_wait(f, "q", 4, 1000), 5);
    /* same revision: times out */
    {
        int64_t t0 = ds_now_ms();
        ASSERT_EQ(ds_feed_wait(f, "q", 5, 50), 5);
        ASSERT_GE(ds_now_ms() - t0, 45);
    }
    ds_feed_free(f);
    ds_feed_free(NULL);
}

/* The hand-off's item map (made at ingest from validation's texts) must equal
 * the one the reducer makes from the stored text: same keys, same item
 * texts, byte for byte; and data_json must be json_dumps(data) exactly. */
static void test_ingest_item_map_equals_the_stored_texts_map(void)
{
    json_t *body = json_loads(
        "{\"collection\":\"q\",\"batch_id\":\"b\",\"key\":[\"id\"],\"data\":["
        "{\"id\":\"a\",\"n\":1.50,\"big\":12345678901234567,\"s\":\"\\u00e9\\n\\\"\\/\"},"
        "{\"id\":\"b\",\"nested\":{\"z\":[1,{\"y\":null}],\"a\":true},\"e\":1e300},"
        "{\"id\":\"a\",\"n\":2},{\"other\":\"no id\"},{}]}",
        0, NULL);
    struct ds_batch b;
    json_t *problems = NULL, *stored, *from_ingest, *from_stored, *v;
    char *dump;
    const char *k;

    ASSERT_NOT_NULL(body);
    ASSERT_EQ(ds_batch_parse(body, &lim, &b, &problems), 0);
    dump = json_dumps(b.data, JSON_COMPACT);
    ASSERT_STR_EQ(b.data_json, dump);
    free(dump);
    ASSERT_EQ(b.n_items, 5);
    stored = json_loadb(b.data_json, b.data_len, 0, NULL);
    ASSERT_NOT_NULL(stored);
    from_ingest = ds_batch_map(b.data, b.key, b.item_json);
    from_stored = ds_batch_map(stored, b.key, NULL);
    ASSERT_EQ(json_object_size(from_ingest), 3); /* "a" twice: the last wins */
    ASSERT_EQ(json_object_size(from_stored), json_object_size(from_ingest));
    json_object_foreach(from_ingest, k, v)
    {
        json_t *w = json_object_get(from_stored, k);
        ASSERT_NOT_NULL(w);
        ASSERT_STR_EQ(json_string_value(v), json_string_value(w));
    }
    ASSERT_STR_EQ(json_string_value(json_object_get(from_ingest, "a")), "{\"id\":\"a\",\"n\":2}");
    json_decref(from_ingest);
    json_decref(from_stored);
    json_decref(stored);
    ds_batch_done(&b);
    json_decref(body);
}

int main(void)
{
    RUN(test_collection_names_follow_the_rule);
    RUN(test_valid_batch_is_parsed_with_compact_data);
    RUN(test_ingest_item_map_equals_the_stored_texts_map);
    RUN(test_each_bad_input_class_names_its_path);
    RUN(test_size_limits_give_413);
    RUN(test_item_key_follows_the_brief);
    RUN(test_etag_parsing);
    RUN(test_time_round_trip);
    RUN(test_feed_wakes_waiter_and_times_out);
    return 0;
}
