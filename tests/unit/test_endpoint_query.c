/* Unit tests of the endpoint's pure parts: items, snapshots, query parsing,
 * selection (filters, sort, paging), rendering (JSON, NDJSON, CSV,
 * projection), gzip and the conditional-request helpers. */
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "check.h"
#include "endpoint.h"
#include "shared/xalloc.h"

static struct ep_item *mk(const char *json)
{
    json_error_t jerr;
    json_t *v = json_loads(json, 0, &jerr);
    struct sh_err err;
    struct ep_item *it;
    if (!v)
        CHECK_FAIL("bad test JSON: %s: %s", json, jerr.text);
    it = ep_item_from_json(v, &err);
    json_decref(v);
    if (!it)
        CHECK_FAIL("ep_item_from_json: %s", err.msg);
    return it;
}

/* Five quotes with mixed types, nested objects and arrays. */
static struct ep_snapshot *fixture(size_t max_limit)
{
    struct ep_item **items = sh_xcalloc(5, sizeof(*items));
    items[0] = mk("{\"key\":\"c\",\"first_seen\":\"2026-01-03T00:00:00Z\",\"last_seen\":"
                  "\"2026-01-05T00:00:00Z\",\"revision\":3,\"data\":{\"text\":\"Third, "
                  "\\\"quoted\\\"\",\"author\":{\"name\":\"Ann\",\"born\":1900},\"n\":3,"
                  "\"tags\":[\"x\",\"y\"],\"ok\":true}}");
    items[1] = mk("{\"key\":\"a\",\"first_seen\":\"2026-01-01T00:00:00Z\",\"last_seen\":"
                  "\"2026-01-01T00:00:00Z\",\"revision\":1,\"data\":{\"text\":\"First\","
                  "\"author\":{\"name\":\"Bob\",\"born\":1850},\"n\":10,\"tags\":[\"y\"]}}");
    items[2] = mk("{\"key\":\"b\",\"first_seen\":\"2026-01-02T00:00:00Z\",\"revision\":2,"
                  "\"data\":{\"text\":\"Second\\nline\",\"author\":{\"name\":\"Ann\"},\"n\":2.5,"
                  "\"ok\":false,\"extra\":null}}");
    items[3] = mk("{\"key\":\"[\\\"d\\\",1]\",\"first_seen\":\"2026-01-04T00:00:00Z\","
                  "\"revision\":\"7\",\"data\":{\"text\":\"Fourth\",\"n\":-1,\"_key\":\"evil\"}}");
    items[4] = mk("{\"key\":\"e\",\"first_seen\":\"2026-01-04T00:00:00Z\",\"revision\":8,"
                  "\"data\":{\"text\":\"Fifth\",\"author\":{\"name\":\"Cy\"}}}");
    return ep_snapshot_new("quotes", 8, "2026-01-05T10:20:30.123Z", items, 5, max_limit);
}

static char *select_render(struct ep_snapshot *s, const char *qs, size_t *ret_total)
{
    struct ep_query q;
    struct sh_err err;
    size_t *sel, n, total, i, len;
    const struct ep_item **items;
    char *copy = sh_xstrdup(qs), *save = NULL, *tok, *out;

    ep_query_init(&q);
    for (tok = strtok_r(copy, "&", &save); tok; tok = strtok_r(NULL, "&", &save)) {
        char *eq = strchr(tok, '=');
        if (eq)
            *eq = '\0';
        if (ep_query_add(&q, tok, eq ? eq + 1 : NULL, 1000, &err) < 0)
            CHECK_FAIL("query %s: %s", qs, err.msg);
    }
    free(copy);
    ep_query_select(&q, s, 1000, &sel, &n, &total);
    items = sh_xcalloc(n + 1, sizeof(*items));
    for (i = 0; i < n; i++)
        items[i] = s->items[sel[i]];
    out = ep_render(&q, q.format, items, n, &len);
    ASSERT_EQ(strlen(out), len);
    free(items);
    free(sel);
    ep_query_done(&q);
    if (ret_total)
        *ret_total = total;
    return out;
}

static void expect(struct ep_snapshot *s, const char *qs, const char *want, size_t want_total)
{
    size_t total;
    char *got = select_render(s, qs, &total);
    if (strcmp(got, want) != 0)
        CHECK_FAIL("query '%s':\n got: %s\nwant: %s", qs, got, want);
    ASSERT_EQ(total, want_total);
    free(got);
}

/* Keys only, to keep expectations short. */
static void expect_keys(struct ep_snapshot *s, const char *qs, const char *want, size_t want_total)
{
    char *q = sh_xasprintf("%s%sfields=_key&format=csv", qs, *qs ? "&" : "");
    size_t total;
    char *got = select_render(s, q, &total), *p;
    /* CSV of one column: turn "_key\r\na\r\nb\r\n" into "a b" */
    struct sh_buf_lite {
        char s[512];
        size_t n;
    } out = {{0}, 0};
    p = strstr(got, "\r\n");
    p = p ? p + 2 : got + strlen(got);
    while (*p) {
        char *e = strstr(p, "\r\n");
        if (out.n)
            out.s[out.n++] = ' ';
        memcpy(out.s + out.n, p, (size_t)(e - p));
        out.n += (size_t)(e - p);
        p = e + 2;
    }
    if (strcmp(out.s, want) != 0)
        CHECK_FAIL("query '%s': keys '%s', want '%s'", qs, out.s, want);
    ASSERT_EQ(total, want_total);
    free(got);
    free(q);
}

static void test_item_public_shape_adds_key_and_timestamps(void)
{
    struct ep_item *it =
        mk("{\"key\":\"k1\",\"first_seen\":\"F\",\"last_seen\":\"L\","
           "\"revision\":5,\"data\":{\"a\":1,\"_key\":\"spoof\",\"b\":{\"c\":2}}}");
    json_t *back;
    ASSERT_STR_EQ(it->json, "{\"_key\":\"k1\",\"a\":1,\"b\":{\"c\":2},\"_first_seen\":\"F\","
                            "\"_last_seen\":\"L\"}");
    ASSERT_EQ(it->revision, 5);
    back = ep_item_to_json(it);
    ASSERT_STR_EQ(json_string_value(json_object_get(back, "key")), "k1");
    ASSERT_EQ(json_integer_value(json_object_get(back, "revision")), 5);
    ASSERT_STR_EQ(json_string_value(json_object_get(json_object_get(back, "data"), "_key")),
                  "spoof");
    json_decref(back);
    ep_item_unref(it);
}

static void test_item_rejects_malformed(void)
{
    const char *bad[] = {"[]", "{\"data\":{}}", "{\"key\":1,\"data\":{}}", "{\"key\":\"x\"}",
                         "{\"key\":\"x\",\"data\":[1]}"};
    size_t i;
    for (i = 0; i < sizeof(bad) / sizeof(*bad); i++) {
        json_t *v = json_loads(bad[i], 0, NULL);
        struct sh_err err;
        ASSERT_NULL(ep_item_from_json(v, &err));
        ASSERT_EQ(err.code, SH_EPROTO);
        json_decref(v);
    }
}

static void test_snapshot_orders_by_first_seen_then_key_and_indexes(void)
{
    struct ep_snapshot *s = fixture(1000);
    ASSERT_EQ(s->n, 5);
    ASSERT_STR_EQ(s->items[0]->key, "a");
    ASSERT_STR_EQ(s->items[1]->key, "b");
    ASSERT_STR_EQ(s->items[2]->key, "c");
    ASSERT_STR_EQ(s->items[3]->key, "[\"d\",1]");
    ASSERT_STR_EQ(s->items[4]->key, "e");
    ASSERT_STR_EQ(ep_snapshot_find(s, "c")->key, "c");
    ASSERT_STR_EQ(ep_snapshot_find(s, "[\"d\",1]")->key, "[\"d\",1]");
    ASSERT_NULL(ep_snapshot_find(s, "zz"));
    ASSERT_STR_EQ(s->etag, "\"8\"");
    ASSERT_STR_EQ(s->last_modified, "Mon, 05 Jan 2026 10:20:30 GMT");
    ep_snapshot_unref(s);
}

static void test_prebuilt_blobs_match_rendering_and_gunzip(void)
{
    struct ep_snapshot *s = fixture(3);
    struct sh_blob *plain = ep_snapshot_blob(s, EP_FMT_JSON, 0);
    struct sh_blob *gz = ep_snapshot_blob(s, EP_FMT_JSON, 1);
    char *want = select_render(s, "limit=3", NULL);
    char out[8192];
    uLongf outlen = sizeof(out);
    z_stream zs;

    ASSERT_EQ(s->prebuilt_n, 3);
    ASSERT_EQ(plain->len, strlen(want));
    ASSERT(!memcmp(plain->data, want, plain->len));
    memset(&zs, 0, sizeof(zs));
    ASSERT_EQ(inflateInit2(&zs, 15 + 16), Z_OK);
    zs.next_in = (Bytef *)(uintptr_t)gz->data;
    zs.avail_in = (uInt)gz->len;
    zs.next_out = (Bytef *)out;
    zs.avail_out = (uInt)outlen;
    ASSERT_EQ(inflate(&zs, Z_FINISH), Z_STREAM_END);
    ASSERT_EQ(zs.total_out, plain->len);
    ASSERT(!memcmp(out, plain->data, plain->len));
    (void)inflateEnd(&zs);
    /* lazily built formats are cached: same pointer twice */
    ASSERT(ep_snapshot_blob(s, EP_FMT_CSV, 0) == ep_snapshot_blob(s, EP_FMT_CSV, 0));
    ASSERT(ep_snapshot_blob(s, EP_FMT_NDJSON, 1) == ep_snapshot_blob(s, EP_FMT_NDJSON, 1));
    free(want);
    ep_snapshot_unref(s);
}

static void test_snapshot_dump_load_round_trip(void)
{
    struct ep_snapshot *s = fixture(1000), *t;
    struct sh_err err;
    size_t len, i;
    char *d = ep_snapshot_dump(s, &len);
    t = ep_snapshot_load(d, len, 1000, &err);
    if (!t)
        CHECK_FAIL("load: %s", err.msg);
    ASSERT_EQ(t->revision, 8);
    ASSERT_EQ(t->n, 5);
    ASSERT_STR_EQ(t->collection, "quotes");
    for (i = 0; i < 5; i++)
        ASSERT_STR_EQ(t->items[i]->json, s->items[i]->json);
    ASSERT_EQ(t->blobs[EP_FMT_JSON][0]->len, s->blobs[EP_FMT_JSON][0]->len);
    ASSERT_NULL(ep_snapshot_load("{\"items\":3}", 11, 1000, &err));
    ASSERT_NULL(ep_snapshot_load("nope", 4, 1000, &err));
    free(d);
    ep_snapshot_unref(s);
    ep_snapshot_unref(t);
}

static void test_filters_exact_and_nested_and_arrays(void)
{
    struct ep_snapshot *s = fixture(1000);
    expect_keys(s, "", "a b c \"[\"\"d\"\",1]\" e", 5);
    expect_keys(s, "author.name=Ann", "b c", 2);
    expect_keys(s, "author.name=Ann&n=3", "c", 1);  /* AND */
    expect_keys(s, "author.name=ann", "", 0);       /* exact, case-sensitive */
    expect_keys(s, "n=2.5", "b", 1);                /* real's string form */
    expect_keys(s, "n=-1", "\"[\"\"d\"\",1]\"", 1); /* integer */
    expect_keys(s, "ok=false", "b", 1);             /* boolean */
    expect_keys(s, "extra=null", "b", 1);           /* null */
    expect_keys(s, "tags=y", "a c", 2);             /* array contains */
    expect_keys(s, "tags.0=x", "c", 1);             /* array index */
    expect_keys(s, "author.born=1900", "c", 1);     /* nested number */
    expect_keys(s, "_key=[\"d\",1]", "\"[\"\"d\"\",1]\"", 1);
    expect_keys(s, "text=Fourth", "\"[\"\"d\"\",1]\"", 1);
    expect_keys(s, "missing=x", "", 0);
    expect_keys(s, "text=", "", 0);
    ep_snapshot_unref(s);
}

static void test_sort_numeric_string_desc_missing_last_stable(void)
{
    struct ep_snapshot *s = fixture(1000);
    expect_keys(s, "sort=n", "\"[\"\"d\"\",1]\" b c a e", 5);
    expect_keys(s, "sort=-n", "a c b \"[\"\"d\"\",1]\" e", 5);
    expect_keys(s, "sort=author.name", "b c a e \"[\"\"d\"\",1]\"", 5);
    expect_keys(s, "sort=-author.name", "e a b c \"[\"\"d\"\",1]\"", 5);
    expect_keys(s, "sort=+text", "e a \"[\"\"d\"\",1]\" b c", 5);
    expect_keys(s, "sort=-_key", "e c b a \"[\"\"d\"\",1]\"", 5);
    ep_snapshot_unref(s);
}

static void test_paging_limit_offset_total(void)
{
    struct ep_snapshot *s = fixture(1000);
    expect_keys(s, "limit=2", "a b", 5);
    expect_keys(s, "limit=2&offset=2", "c \"[\"\"d\"\",1]\"", 5);
    expect_keys(s, "offset=4", "e", 5);
    expect_keys(s, "offset=99", "", 5);
    expect_keys(s, "limit=0", "", 5);
    expect_keys(s, "sort=-n&limit=1&offset=1", "c", 5);
    expect_keys(s, "author.name=Ann&limit=1&offset=1", "c", 2);
    ep_snapshot_unref(s);
}

static void test_projection_json_ndjson(void)
{
    struct ep_snapshot *s = fixture(1000);
    expect(s, "fields=text,author.name&author.name=Ann",
           "[{\"text\":\"Second\\nline\",\"author\":{\"name\":\"Ann\"}},"
           "{\"text\":\"Third, \\\"quoted\\\"\",\"author\":{\"name\":\"Ann\"}}]\n",
           2);
    expect(s, "format=ndjson&fields=_key,n&limit=2",
           "{\"_key\":\"a\",\"n\":10}\n"
           "{\"_key\":\"b\",\"n\":2.5}\n",
           5);
    expect(s, "format=ndjson&n=3",
           "{\"_key\":\"c\",\"text\":\"Third, \\\"quoted\\\"\",\"author\":{\"name\":\"Ann\","
           "\"born\":1900},\"n\":3,\"tags\":[\"x\",\"y\"],\"ok\":true,\"_first_seen\":"
           "\"2026-01-03T00:00:00Z\",\"_last_seen\":\"2026-01-05T00:00:00Z\"}\n",
           1);
    expect(s, "fields=nope&limit=1", "[{}]\n", 5);
    expect(s, "n=12345", "[]\n", 0);
    expect(s, "format=ndjson&n=12345", "", 0);
    ep_snapshot_unref(s);
}

static void test_csv_rfc4180_union_header_and_nested_json(void)
{
    struct ep_snapshot *s = fixture(1000);
    expect(s, "format=csv&limit=3",
           "_key,text,author,n,tags,_first_seen,_last_seen,ok,extra\r\n"
           "a,First,\"{\"\"name\"\":\"\"Bob\"\",\"\"born\"\":1850}\",10,\"[\"\"y\"\"]\","
           "2026-01-01T00:00:00Z,2026-01-01T00:00:00Z,,\r\n"
           "b,\"Second\nline\",\"{\"\"name\"\":\"\"Ann\"\"}\",2.5,,2026-01-02T00:00:00Z,,false,\r\n"
           "c,\"Third, \"\"quoted\"\"\",\"{\"\"name\"\":\"\"Ann\"\",\"\"born\"\":1900}\",3,"
           "\"[\"\"x\"\",\"\"y\"\"]\",2026-01-03T00:00:00Z,2026-01-05T00:00:00Z,true,\r\n",
           5);
    expect(s, "format=csv&fields=author.name,_key&sort=-_key&limit=2",
           "author.name,_key\r\nCy,e\r\nAnn,c\r\n", 5);
    expect(s, "format=csv&n=12345", "", 0);
    expect(s, "format=csv&fields=a,b&n=12345", "a,b\r\n", 0);
    ep_snapshot_unref(s);
}

static void expect_bad(const char *name, const char *value, const char *msg_part)
{
    struct ep_query q;
    struct sh_err err;
    ep_query_init(&q);
    sh_err_clear(&err);
    if (ep_query_add(&q, name, value, 10000, &err) == 0)
        CHECK_FAIL("%s=%s accepted", name, value ? value : "(null)");
    ASSERT_EQ(err.code, SH_ECONFIG);
    ASSERT_STR_CONTAINS(err.msg, msg_part);
    ep_query_done(&q);
}

static void test_bad_parameters_rejected_with_clear_messages(void)
{
    struct ep_query q;
    struct sh_err err;
    char *big = sh_xmalloc(EP_MAX_PARAM_LEN + 2);
    int i;

    expect_bad("limit", "-1", "limit must be an integer from 0 to 10000");
    expect_bad("limit", "10001", "limit must be");
    expect_bad("limit", "abc", "limit must be");
    expect_bad("limit", "1e3", "limit must be");
    expect_bad("limit", NULL, "limit must be");
    expect_bad("offset", "-5", "offset must be a non-negative integer");
    expect_bad("format", "xml", "format must be json, ndjson or csv");
    expect_bad("fields", "", "fields:");
    expect_bad("fields", "a,,b", "fields: '' is not a field name");
    expect_bad("fields", "a b", "not a field name");
    expect_bad("sort", "", "sort must be a field name");
    expect_bad("sort", "a..b", "sort must be");
    expect_bad("na$me", "1", "unknown parameter 'na$me'");
    expect_bad("a[b]", "1", "unknown parameter");
    expect_bad(".a", "1", "unknown parameter");
    expect_bad("a", NULL, "filter 'a' needs a value");
    expect_bad("", "1", "empty query parameter name");
    memset(big, 'x', EP_MAX_PARAM_LEN + 1);
    big[EP_MAX_PARAM_LEN + 1] = '\0';
    expect_bad("a", big, "longer than");
    free(big);

    /* duplicates of reserved parameters; too many filters */
    ep_query_init(&q);
    ASSERT_EQ(ep_query_add(&q, "limit", "1", 10, &err), 0);
    ASSERT_EQ(ep_query_add(&q, "limit", "2", 10, &err), -1);
    ASSERT_STR_CONTAINS(err.msg, "more than once");
    ASSERT_EQ(ep_query_add(&q, "sort", "a", 10, &err), 0);
    ASSERT_EQ(ep_query_add(&q, "sort", "b", 10, &err), -1);
    for (i = 0; i < EP_MAX_FILTERS; i++)
        ASSERT_EQ(ep_query_add(&q, "f", "v", 10, &err), 0);
    ASSERT_EQ(ep_query_add(&q, "f", "v", 10, &err), -1);
    ASSERT_STR_CONTAINS(err.msg, "at most");
    ep_query_done(&q);

    /* accepted forms */
    ep_query_init(&q);
    ASSERT_EQ(ep_query_add(&q, "format", "CSV", 10, &err), 0);
    ASSERT_EQ(q.format, EP_FMT_CSV);
    ASSERT_EQ(ep_query_add(&q, "a.b-c:d_e", "", 10, &err), 0);
    ASSERT_EQ(ep_query_add(&q, "pr\xc3\xa9nom", "x", 10, &err), 0); /* UTF-8 name */
    ep_query_done(&q);
}

static void test_plain_detection(void)
{
    struct ep_snapshot *s = fixture(3);
    struct ep_query q;
    struct sh_err err;
    ep_query_init(&q);
    ASSERT(ep_query_is_plain(&q, s));
    ASSERT_EQ(ep_query_add(&q, "format", "csv", 10, &err), 0);
    ASSERT(ep_query_is_plain(&q, s));
    ASSERT_EQ(ep_query_add(&q, "limit", "3", 10, &err), 0);
    ASSERT(ep_query_is_plain(&q, s)); /* limit covers the prebuilt page */
    ep_query_done(&q);
    ASSERT_EQ(ep_query_add(&q, "limit", "2", 10, &err), 0);
    ASSERT(!ep_query_is_plain(&q, s));
    ep_query_done(&q);
    ASSERT_EQ(ep_query_add(&q, "offset", "0", 10, &err), 0);
    ASSERT(ep_query_is_plain(&q, s));
    ASSERT_EQ(ep_query_add(&q, "a", "b", 10, &err), 0);
    ASSERT(!ep_query_is_plain(&q, s));
    ep_query_done(&q);
    ep_snapshot_unref(s);
}

static void test_accept_encoding_parsing(void)
{
    ASSERT(ep_accepts_gzip("gzip"));
    ASSERT(ep_accepts_gzip("gzip, deflate, br"));
    ASSERT(ep_accepts_gzip("deflate, gzip;q=0.5"));
    ASSERT(ep_accepts_gzip("br;q=1.0, GZIP ; q=0.1"));
    ASSERT(ep_accepts_gzip("*"));
    ASSERT(ep_accepts_gzip("x-gzip"));
    ASSERT(!ep_accepts_gzip(NULL));
    ASSERT(!ep_accepts_gzip(""));
    ASSERT(!ep_accepts_gzip("identity"));
    ASSERT(!ep_accepts_gzip("gzip;q=0"));
    ASSERT(!ep_accepts_gzip("gzip;q=0.000, *"));
    ASSERT(!ep_accepts_gzip("gzipx, deflate"));
    ASSERT(!ep_accepts_gzip("br, *;q=0"));
}

static void test_etag_matching(void)
{
    ASSERT(ep_etag_matches("\"8\"", "\"8\""));
    ASSERT(ep_etag_matches("W/\"8\"", "\"8\""));
    ASSERT(ep_etag_matches("\"1\", \"8\"", "\"8\""));
    ASSERT(ep_etag_matches("*", "\"8\""));
    ASSERT(ep_etag_matches("8", "\"8\""));
    ASSERT(!ep_etag_matches("\"80\"", "\"8\""));
    ASSERT(!ep_etag_matches("\"7\", W/\"9\"", "\"8\""));
    ASSERT(!ep_etag_matches("", "\"8\""));
    ASSERT(!ep_etag_matches(NULL, "\"8\""));
    ASSERT(!ep_etag_matches("\"", "\"8\""));
}

static void test_store_swap_and_age(void)
{
    struct ep_store st;
    struct ep_snapshot *s;
    ep_store_init(&st);
    ASSERT_NULL(ep_store_get(&st));
    ep_store_swap(&st, fixture(10), EP_SRC_REDIS);
    s = ep_store_get(&st);
    ASSERT_NOT_NULL(s);
    ASSERT_EQ(ep_store_source(&st), EP_SRC_REDIS);
    ep_store_swap(&st, fixture(10), EP_SRC_DATASOURCE);
    ASSERT_EQ(s->n, 5); /* still valid: we hold a reference */
    ep_snapshot_unref(s);
    ep_store_mark(&st, 1, 1000);
    ASSERT_EQ(ep_store_age(&st, 1010), 0);
    ep_store_mark(&st, 0, 1012);
    ASSERT_EQ(ep_store_age(&st, 1015), 15);
    ep_store_done(&st);
}

int main(void)
{
    RUN(test_item_public_shape_adds_key_and_timestamps);
    RUN(test_item_rejects_malformed);
    RUN(test_snapshot_orders_by_first_seen_then_key_and_indexes);
    RUN(test_prebuilt_blobs_match_rendering_and_gunzip);
    RUN(test_snapshot_dump_load_round_trip);
    RUN(test_filters_exact_and_nested_and_arrays);
    RUN(test_sort_numeric_string_desc_missing_last_stable);
    RUN(test_paging_limit_offset_total);
    RUN(test_projection_json_ndjson);
    RUN(test_csv_rfc4180_union_header_and_nested_json);
    RUN(test_bad_parameters_rejected_with_clear_messages);
    RUN(test_plain_detection);
    RUN(test_accept_encoding_parsing);
    RUN(test_etag_matching);
    RUN(test_store_swap_and_age);
    return 0;
}
