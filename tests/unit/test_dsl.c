/* Configuration validator and compiler: the DESIGN.md example is valid as
 * written; each class of problem is reported with its JSON path; several
 * problems are reported together; the compiled struct carries defaults. */
#include "check.h"
#include "shared/buf.h"
#include "shared/dsl.h"
#include "shared/extract.h"

#include <stdlib.h>

#define DESIGN_EXAMPLE                                                                             \
    "{\"collection\": \"quotes\", \"ttl\": 60,"                                                    \
    " \"source\": {\"url\": \"http://quotes.example/\", \"type\": \"html\"},"                      \
    " \"scope\": \"div.quote\","                                                                   \
    " \"fields\": {\"text\": \"span.text\", \"author\": \"small.author\", \"tags\": [\"a.tag\"],"  \
    "   \"author_url\": \"a@href | absolute\","                                                    \
    "   \"born\": {\"follow\": \"a@href\", \"field\": \"span.author-born-date\"}},"                \
    " \"paginate\": \"li.next a@href\", \"limit\": 10, \"key\": [\"text\"]}"

static json_t *load(const char *s)
{
    json_error_t je;
    json_t *j = json_loads(s, 0, &je);
    if (!j)
        CHECK_FAIL("bad test JSON: %s: %s", je.text, s);
    return j;
}

/* The problems of config s, as a new array. */
static json_t *problems_of(const char *s, int *ret_n)
{
    json_t *c = load(s), *p = NULL;
    *ret_n = sh_dsl_validate(c, &p);
    ASSERT_NOT_NULL(p);
    ASSERT_EQ(*ret_n, json_array_size(p));
    json_decref(c);
    return p;
}

/* Asserts that config s has a problem at path whose message contains msg. */
static void expect_problem(const char *s, const char *path, const char *msg)
{
    int n;
    json_t *p = problems_of(s, &n);
    size_t i;
    json_t *e;
    json_array_foreach(p, i, e)
    {
        if (strcmp(json_string_value(json_object_get(e, "path")), path) == 0 &&
            strstr(json_string_value(json_object_get(e, "message")), msg)) {
            json_decref(p);
            return;
        }
    }
    char *d = json_dumps(p, 0);
    CHECK_FAIL("no problem at %s containing \"%s\" in %s", path, msg, d);
}

static void test_dsl_design_example_is_valid_and_compiles(void)
{
    int n;
    json_t *p = problems_of(DESIGN_EXAMPLE, &n);
    if (n)
        CHECK_FAIL("unexpected problems: %s", json_dumps(p, 0));
    json_decref(p);
    json_t *c = load(DESIGN_EXAMPLE);
    struct sh_err err;
    struct sh_dsl *d = sh_dsl_compile(c, &err);
    ASSERT_NOT_NULL(d);
    ASSERT_STR_EQ(d->collection, "quotes");
    ASSERT_EQ(d->ttl, 60);
    ASSERT_EQ(d->limit, 10);
    ASSERT_EQ(d->paginate, SH_DSL_PAGINATE_NEXT);
    ASSERT_EQ(d->source_type, SH_DSL_SOURCE_HTML);
    ASSERT_STR_EQ(d->url, "http://quotes.example/");
    ASSERT_STR_EQ(d->method, "GET");
    ASSERT_EQ(json_array_size(d->key), 1);
    ASSERT_EQ(d->replicas, 1);
    ASSERT(d->politeness.robots);
    ASSERT_EQ(d->politeness.burst, 5);
    sh_dsl_free(d);
    sh_dsl_free(NULL);
    json_decref(c);
}

static void test_dsl_defaults_without_pagination(void)
{
    json_t *c = load("{\"collection\": \"c1\", \"source\": {\"url\": \"https://x.example/a\","
                     " \"cookies\": {\"a\": \"1\", \"b\": \"2\"}, \"headers\": {\"X-Y\": \"z\"}},"
                     " \"fields\": {\"t\": \"title\"}, \"key\": \"t\","
                     " \"politeness\": {\"rate\": 2.5, \"robots\": false}}");
    struct sh_err err;
    struct sh_dsl *d = sh_dsl_compile(c, &err);
    if (!d)
        CHECK_FAIL("compile: %s", err.msg);
    ASSERT_EQ(d->ttl, SH_DSL_TTL_DEFAULT);
    ASSERT_EQ(d->limit, 1);
    ASSERT_EQ(d->paginate, SH_DSL_PAGINATE_NONE);
    ASSERT_STR_EQ(d->cookies, "a=1; b=2");
    ASSERT_STR_EQ(json_string_value(json_object_get(d->headers, "X-Y")), "z");
    ASSERT_STR_EQ(json_string_value(json_array_get(d->key, 0)), "t");
    ASSERT(!d->politeness.robots);
    ASSERT(d->politeness.rate > 2.4 && d->politeness.rate < 2.6);
    sh_dsl_free(d);
    json_decref(c);
}

#define BASE(extra)                                                                                \
    "{\"collection\": \"quotes\", \"source\": {\"url\": \"http://q.example/\"},"                   \
    " \"fields\": {\"text\": \"span.text\"}" extra "}"

static void test_dsl_reports_unknown_keys_with_suggestion(void)
{
    expect_problem("{\"collection\": \"q\", \"source\": {\"url\": \"http://q.example/\"},"
                   " \"feilds\": {\"a\": \"b\"}}",
                   "$.feilds", "unknown key 'feilds' (did you mean 'fields'?)");
    expect_problem(BASE(", \"foo\": 1"), "$.foo", "unknown key 'foo'");
    expect_problem("{\"collection\": \"q\", \"source\": {\"url\": \"http://q.example/\","
                   " \"tpye\": \"html\"}, \"fields\": {\"a\": \"b\"}}",
                   "$.source.tpye", "did you mean 'type'?");
    expect_problem(BASE(", \"politeness\": {\"rat\": 1}"), "$.politeness.rat",
                   "did you mean 'rate'?");
}

static void test_dsl_reports_bad_selectors_with_position(void)
{
    expect_problem("{\"collection\": \"q\", \"source\": {\"url\": \"http://q.example/\"},"
                   " \"fields\": {\"a\": \"a[href\"}}",
                   "$.fields.a", "expected ']' at position 7 in 'a[href'");
    expect_problem(BASE(", \"scope\": \"div..x\""), "$.scope", "expected a class name");
    expect_problem(BASE(", \"scope\": \"a@href\""), "$.scope", "'@...' and filters are not");
    expect_problem("{\"collection\": \"q\", \"source\": {\"url\": \"http://q.example/\"},"
                   " \"fields\": {\"born\": {\"follow\": \"a[x=\", \"field\": \"span\"}}}",
                   "$.fields.born.follow", "at position 5");
    expect_problem("{\"collection\": \"q\", \"source\": {\"url\": \"http://q.example/\"},"
                   " \"fields\": {\"a\": \"span | trimm\"}}",
                   "$.fields.a", "unknown filter 'trimm' (did you mean 'trim'?)");
    expect_problem("{\"collection\": \"q\", \"source\": {\"url\": \"http://q.example/\"},"
                   " \"fields\": {\"a\": \"span | regex:([a-\"}}",
                   "$.fields.a", "invalid regular expression");
    expect_problem("{\"collection\": \"q\", \"source\": {\"url\": \"http://q.example/\"},"
                   " \"fields\": {\"a\": \"xpath://a[\"}}",
                   "$.fields.a", "invalid XPath");
    expect_problem("{\"collection\": \"q\", \"source\": {\"url\": \"http://q.example/\","
                   " \"type\": \"json\"}, \"fields\": {\"a\": \"items[x]\"}}",
                   "$.fields.a", "at position 7");
}

static void test_dsl_reports_types_ranges_and_urls(void)
{
    expect_problem(BASE(", \"ttl\": 0"), "$.ttl", "must be from 1 to 86400, got 0");
    expect_problem(BASE(", \"ttl\": \"60\""), "$.ttl", "must be an integer");
    expect_problem(BASE(", \"limit\": 5000"), "$.limit", "from 1 to 1000");
    expect_problem(BASE(", \"replicas\": 21"), "$.replicas", "from 1 to 20");
    expect_problem(BASE(", \"politeness\": {\"rate\": 0}"), "$.politeness.rate", "(0, 100]");
    expect_problem(BASE(", \"politeness\": {\"robots\": \"yes\"}"), "$.politeness.robots",
                   "true or false");
    expect_problem("{\"collection\": \"Quotes!\", \"source\": {\"url\": \"http://q.example/\"},"
                   " \"fields\": {\"a\": \"b\"}}",
                   "$.collection", "is not a collection name");
    expect_problem("{\"collection\": \"q\", \"source\": {\"url\": \"ftp://q.example/\"},"
                   " \"fields\": {\"a\": \"b\"}}",
                   "$.source.url", "http or https");
    expect_problem("{\"collection\": \"q\", \"source\": {\"url\": \"not a url\"},"
                   " \"fields\": {\"a\": \"b\"}}",
                   "$.source.url", "not a valid absolute URL");
    expect_problem("{\"collection\": \"q\", \"source\": {}, \"fields\": {\"a\": \"b\"}}",
                   "$.source.url", "is required");
    expect_problem("{\"source\": {\"url\": \"http://q.example/\"}, \"fields\": {\"a\": \"b\"}}",
                   "$.collection", "is required");
    expect_problem(BASE(", \"key\": [\"txt\"]"), "$.key[0]",
                   "'txt' is not a field (did you mean 'text'?)");
    expect_problem(BASE(", \"paginate\": {\"param\": \"page\", \"step\": 0}"), "$.paginate.step",
                   "from 1 to");
    expect_problem(BASE(", \"paginate\": {\"next\": \"a\", \"param\": \"p\"}"), "$.paginate",
                   "exactly one of");
    expect_problem(BASE(", \"_id\": \"xyz\""), "$._id", "24-hex-digit");
    expect_problem(BASE(", \"type\": \"robot\""), "$.type", "\"scraper\" or \"endpoint\"");
    expect_problem("{\"collection\": \"q\", \"source\": {\"url\": \"http://q.example/\","
                   " \"headers\": {\"Bad Header\": \"x\", \"Ok\": 1}}, \"fields\": {\"a\": \"b\"}}",
                   "$.source.headers[\"Bad Header\"]", "not a valid header name");
    expect_problem("[1, 2]", "$", "must be a JSON object");
}

#define FIELDS(f)                                                                                  \
    "{\"collection\": \"q\", \"source\": {\"url\": \"http://q.example/\"}, \"fields\": " f "}"

static void test_dsl_reports_field_shapes_and_follow_depth(void)
{
    expect_problem(FIELDS("{\"a\": [\"b\", \"c\"]}"), "$.fields.a", "exactly one selector");
    expect_problem(FIELDS("{\"a\": 42}"), "$.fields.a", "a field is a selector string");
    expect_problem(FIELDS("{\"a\": {}}"), "$.fields.a", "must not be empty");
    expect_problem(FIELDS("{}"), "$.fields", "non-empty object");
    expect_problem(FIELDS("{\"born\": {\"follow\": \"a\"}}"), "$.fields.born",
                   "exactly one of 'field'");
    expect_problem(FIELDS("{\"born\": {\"follow\": \"a\", \"field\": \"b\", \"fild\": 1}}"),
                   "$.fields.born.fild", "did you mean 'field'?");
    expect_problem(FIELDS("{\"a\": [{\"fields\": {\"x\": \"y\"}}]}"), "$.fields.a[0]",
                   "needs 'scope'");
    expect_problem(FIELDS("{\"a\": [{\"scope\": \"li\", \"fields\": {\"x\": \"y[\"}}]}"),
                   "$.fields.a[0].fields.x", "expected");
    expect_problem(FIELDS("{\"a\": {\"follow\": \"a\", \"fields\": {\"b\": {\"follow\": \"a\","
                          " \"fields\": {\"c\": {\"follow\": \"a\", \"fields\": {\"d\":"
                          " {\"follow\": \"a\", \"field\": \"p\"}}}}}}}}"),
                   "$.fields.a.fields.b.fields.c.fields.d", "deeper than 3");
    struct sh_buf deep;
    sh_buf_init(&deep, 0);
    for (int i = 0; i < 20; i++)
        ASSERT_EQ(sh_buf_appends(&deep, "{\"a\": ", NULL), 0);
    ASSERT_EQ(sh_buf_appends(&deep, "\"p\"", NULL), 0);
    for (int i = 0; i < 20; i++)
        ASSERT_EQ(sh_buf_appends(&deep, "}", NULL), 0);
    char *cfg = NULL;
    ASSERT_GT(asprintf(&cfg, FIELDS("%s"), deep.data), 0);
    sh_buf_done(&deep);
    expect_problem(cfg, "$.fields.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a", "nest deeper than 16");
    free(cfg);
    expect_problem(FIELDS("{\"bad name\": \"p\"}"), "$.fields[\"bad name\"]", "field names");
}

static void test_dsl_reports_every_problem_at_once(void)
{
    int n;
    json_t *p = problems_of("{\"collection\": \"Q Q\", \"ttl\": -1, \"source\": {\"url\": 5},"
                            " \"fields\": {\"a\": \"a[\", \"b\": \"p | nope\"}, \"limit\": 0,"
                            " \"key\": [\"zzz\"], \"extra\": true}",
                            &n);
    ASSERT_EQ(n, 8);
    json_decref(p);
}

static void test_dsl_accepts_stored_fields_and_endpoint_schema(void)
{
    int n;
    json_t *p =
        problems_of(BASE(", \"_id\": \"65a1b2c3d4e5f60718293a4b\", \"type\": \"scraper\","
                         " \"container\": null, \"version\": 3, \"created_at\":"
                         " \"2026-11-22T21:00:00Z\", \"updated_at\": \"2026-11-22T21:00:00Z\","
                         " \"url\": \"http://x/\", \"replicas\": 2"),
                    &n);
    if (n)
        CHECK_FAIL("unexpected problems: %s", json_dumps(p, 0));
    json_decref(p);
    p = problems_of("{\"_id\": \"65a1b2c3d4e5f60718293a4b\", \"type\": \"endpoint\","
                    " \"collection\": \"quotes\", \"ttl\": 60, \"container\": \"ep-1\","
                    " \"version\": 1}",
                    &n);
    if (n)
        CHECK_FAIL("unexpected problems: %s", json_dumps(p, 0));
    json_decref(p);
    expect_problem("{\"type\": \"endpoint\", \"collection\": \"quotes\", \"fields\": {}}",
                   "$.fields", "unknown key 'fields'");
    json_t *c = load("{\"type\": \"endpoint\", \"collection\": \"quotes\"}");
    struct sh_err err;
    ASSERT_NULL(sh_dsl_compile(c, &err));
    ASSERT_STR_CONTAINS(err.msg, "endpoint");
    json_decref(c);
}

static void test_dsl_suggest_finds_near_names_only(void)
{
    static const char *const names[] = {"fields", "scope", "source", NULL};
    ASSERT_STR_EQ(sh_dsl_suggest("feilds", names), "fields");
    ASSERT_STR_EQ(sh_dsl_suggest("scop", names), "scope");
    ASSERT_NULL(sh_dsl_suggest("zzzzzz", names));
}

/* Mutation test: every value of the DESIGN example replaced by values of
 * other types. The validator must never crash, and whatever it accepts must
 * compile and extract (the compiler trusts the validator). */
static int mutants, accepted;

static void try_config(json_t *root)
{
    json_t *p = NULL;
    int n = sh_dsl_validate(root, &p);
    ASSERT_GE(n, 0);
    ASSERT_EQ((size_t)n, json_array_size(p));
    json_decref(p);
    mutants++;
    if (n > 0)
        return;
    accepted++;
    struct sh_err err;
    struct sh_dsl *d = sh_dsl_compile(root, &err);
    const json_t *type = json_object_get(root, "type");
    if (type && json_is_string(type) && strcmp(json_string_value(type), "endpoint") == 0) {
        ASSERT_NULL(d);
        return;
    }
    if (!d)
        CHECK_FAIL("validated but did not compile: %s: %s", err.msg, json_dumps(root, 0));
    static const char page[] = "<div class=quote><span class=text>t</span><a href=/x>a</a>"
                               "<li class=next><a href=/p2>n</a></li></div>";
    struct sh_extract *x =
        sh_extract_page(d, page, sizeof(page) - 1, "http://q.example/", NULL, &err);
    if (d->source_type == SH_DSL_SOURCE_HTML)
        ASSERT_NOT_NULL(x);
    sh_extract_free(x);
    sh_dsl_free(d);
}

static void mutate(json_t *root, json_t *node)
{
    static const char *const repl[] = {
        "null", "1",    "-5",  "\"\"",    "\"a[\"",         "[]",
        "{}",   "true", "1.5", "[\"p\"]", "{\"x\": \"p\"}", "\"p | nope\""};
    if (json_is_object(node)) {
        /* snapshot the keys: members are deleted and re-added below */
        size_t nk = json_object_size(node), i = 0;
        char **keys = calloc(nk, sizeof(*keys));
        ASSERT_NOT_NULL(keys);
        const char *key;
        json_t *val;
        json_object_foreach(node, key, val)
        {
            keys[i++] = strdup(key);
        }
        for (i = 0; i < nk; i++) {
            const char *k = keys[i];
            json_t *v = json_incref(json_object_get(node, k));
            for (size_t r = 0; r < sizeof(repl) / sizeof(repl[0]); r++) {
                ASSERT_EQ(json_object_set_new(node, k, json_loads(repl[r], JSON_DECODE_ANY, NULL)),
                          0);
                try_config(root);
            }
            ASSERT_EQ(json_object_del(node, k), 0);
            try_config(root);
            ASSERT_EQ(json_object_set_new(node, k, v), 0);
            mutate(root, v);
            free(keys[i]);
        }
        free(keys);
    } else if (json_is_array(node)) {
        for (size_t i = 0; i < json_array_size(node); i++) {
            json_t *v = json_incref(json_array_get(node, i));
            for (size_t r = 0; r < sizeof(repl) / sizeof(repl[0]); r++) {
                ASSERT_EQ(json_array_set_new(node, i, json_loads(repl[r], JSON_DECODE_ANY, NULL)),
                          0);
                try_config(root);
            }
            ASSERT_EQ(json_array_set_new(node, i, v), 0);
            mutate(root, v);
        }
    }
}

static void test_dsl_mutations_never_crash_and_accepted_ones_compile(void)
{
    json_t *c = load(DESIGN_EXAMPLE);
    mutate(c, c);
    ASSERT_GT(mutants, 200);
    ASSERT_GT(accepted, 10);
    json_decref(c);
    json_t *e = load("{\"type\": \"endpoint\", \"collection\": \"q\", \"ttl\": 5}");
    mutate(e, e);
    json_decref(e);
}

int main(void)
{
    RUN(test_dsl_design_example_is_valid_and_compiles);
    RUN(test_dsl_defaults_without_pagination);
    RUN(test_dsl_reports_unknown_keys_with_suggestion);
    RUN(test_dsl_reports_bad_selectors_with_position);
    RUN(test_dsl_reports_types_ranges_and_urls);
    RUN(test_dsl_reports_field_shapes_and_follow_depth);
    RUN(test_dsl_reports_every_problem_at_once);
    RUN(test_dsl_accepts_stored_fields_and_endpoint_schema);
    RUN(test_dsl_suggest_finds_near_names_only);
    RUN(test_dsl_mutations_never_crash_and_accepted_ones_compile);
    return 0;
}
