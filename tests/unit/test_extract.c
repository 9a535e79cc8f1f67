/* Extraction engine over the fixture pages: the DESIGN.md example end to
 * end (items, follow slots filled from author pages, pagination URLs),
 * filters, targets (@attr, @html, own attribute, XPath values), broken
 * markup, nested objects and follows, JSON sources, and diagnostics. */
#include "check.h"
#include "shared/extract.h"
/* private URL helpers, to check the fast path against plain curl */
#include "../../libshared/src/extract_int.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#define PAGES "tests/fixtures/pages/"

static char *slurp(const char *path, size_t *ret_len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        CHECK_FAIL("cannot open %s", path);
    ASSERT_EQ(fseek(f, 0, SEEK_END), 0);
    long n = ftell(f);
    ASSERT_GE(n, 0);
    rewind(f);
    char *b = malloc((size_t)n + 1);
    ASSERT_NOT_NULL(b);
    ASSERT_EQ(fread(b, 1, (size_t)n, f), (size_t)n);
    b[n] = '\0';
    fclose(f);
    *ret_len = (size_t)n;
    return b;
}

static struct sh_dsl *compile(const char *config)
{
    json_error_t je;
    struct sh_err err;
    json_t *c = json_loads(config, 0, &je);
    if (!c)
        CHECK_FAIL("bad JSON %s: %s", je.text, config);
    struct sh_dsl *d = sh_dsl_compile(c, &err);
    if (!d)
        CHECK_FAIL("compile: %s", err.msg);
    json_decref(c);
    return d;
}

static struct sh_extract *run_file(const struct sh_dsl *d, const char *file, const char *url)
{
    size_t len;
    struct sh_err err;
    char *body = slurp(file, &len);
    struct sh_extract *x = sh_extract_page(d, body, len, url, "text/html; charset=utf-8", &err);
    if (!x)
        CHECK_FAIL("extract %s: %s", file, err.msg);
    free(body);
    return x;
}

static const char *str_at(json_t *items, size_t i, const char *key)
{
    return json_string_value(json_object_get(json_array_get(items, i), key));
}

/* Fills slots 0..upto-1 from tests/fixtures/pages/author-<last segment>.html. */
static void fill_from_fixtures(struct sh_extract *x, size_t upto)
{
    for (size_t i = 0; i < upto; i++) {
        const char *u = sh_extract_follow_url(x, i);
        char path[512];
        size_t len;
        struct sh_err err;
        (void)snprintf(path, sizeof(path), PAGES "author-%s.html", strrchr(u, '/') + 1);
        char *body = slurp(path, &len);
        ASSERT_EQ(sh_extract_fill(x, i, body, len, u, "text/html", &err), 0);
        free(body);
        ASSERT_EQ(sh_extract_follow_pending(x, i), 0);
    }
}

#define DESIGN_EXAMPLE                                                                             \
    "{\"collection\": \"quotes\", \"ttl\": 60,"                                                    \
    " \"source\": {\"url\": \"http://quotes.example/\", \"type\": \"html\"},"                      \
    " \"scope\": \"div.quote\","                                                                   \
    " \"fields\": {\"text\": \"span.text\", \"author\": \"small.author\", \"tags\": [\"a.tag\"],"  \
    "   \"author_url\": \"a@href | absolute\","                                                    \
    "   \"born\": {\"follow\": \"a@href\", \"field\": \"span.author-born-date\"}},"                \
    " \"paginate\": \"li.next a@href\", \"limit\": 10, \"key\": [\"text\"]}"

static void test_extract_design_example_end_to_end(void)
{
    struct sh_dsl *d = compile(DESIGN_EXAMPLE);
    struct sh_extract *x = run_file(d, PAGES "quotes-1.html", "http://quotes.example/");
    json_t *items = sh_extract_items(x);
    ASSERT_EQ(json_array_size(items), 6);
    ASSERT_STR_EQ(str_at(items, 0, "author"), "Albert Einstein");
    ASSERT_STR_CONTAINS(str_at(items, 0, "text"), "The world as we have created it");
    ASSERT_STR_EQ(str_at(items, 5, "author"), "André Gide");
    ASSERT_STR_EQ(str_at(items, 1, "author_url"), "http://quotes.example/author/J-K-Rowling");
    json_t *tags = json_object_get(json_array_get(items, 0), "tags");
    ASSERT_EQ(json_array_size(tags), 4);
    ASSERT_STR_EQ(json_string_value(json_array_get(tags, 1)), "deep-thoughts");
    /* one follow slot per quote, null until filled */
    ASSERT_EQ(sh_extract_follow_count(x), 6);
    ASSERT_STR_EQ(sh_extract_follow_url(x, 3), "http://quotes.example/author/Jane-Austen");
    ASSERT_EQ(sh_extract_follow_depth(x, 3), 1);
    ASSERT(json_is_null(json_object_get(json_array_get(items, 0), "born")));
    fill_from_fixtures(x, sh_extract_follow_count(x));
    ASSERT_STR_EQ(str_at(items, 0, "born"), "March 14, 1879");
    ASSERT_STR_EQ(str_at(items, 3, "born"), "December 16, 1775");
    ASSERT_STR_EQ(str_at(items, 5, "born"), "November 22, 1869");
    struct sh_err err;
    ASSERT_EQ(sh_extract_fill(x, 0, "x", 1, NULL, NULL, &err), -1); /* already filled */
    ASSERT_EQ(err.code, SH_ENOTFOUND);
    json_t *next = sh_extract_next_urls(x);
    ASSERT_EQ(json_array_size(next), 1);
    ASSERT_STR_EQ(json_string_value(json_array_get(next, 0)), "http://quotes.example/page/2/");

    json_t *acc = json_object();
    sh_extract_stats_merge(acc, x);
    sh_extract_free(x);
    x = run_file(d, PAGES "quotes-2.html", "http://quotes.example/page/2/");
    items = sh_extract_items(x);
    ASSERT_EQ(json_array_size(items), 3);
    ASSERT_EQ(json_array_size(json_object_get(json_array_get(items, 2), "tags")), 0);
    ASSERT_EQ(json_array_size(sh_extract_next_urls(x)), 0); /* last page */
    for (size_t i = 0; i < sh_extract_follow_count(x); i++)
        sh_extract_fail(x, i, "HTTP 404");
    ASSERT(json_is_null(json_object_get(json_array_get(items, 0), "born")));
    sh_extract_stats_merge(acc, x);
    ASSERT_EQ(json_integer_value(json_object_get(acc, "items")), 9);
    ASSERT_EQ(json_integer_value(json_object_get(acc, "pages")), 2);
    json_t *tstats = json_object_get(json_object_get(acc, "fields"), "tags");
    ASSERT_EQ(json_integer_value(json_object_get(tstats, "evaluated")), 9);
    ASSERT_EQ(json_integer_value(json_object_get(tstats, "filled")), 8);
    double rate = json_real_value(json_object_get(tstats, "fill_rate"));
    ASSERT(rate > 0.88 && rate < 0.89);
    json_t *born = json_object_get(json_object_get(acc, "fields"), "born");
    ASSERT_EQ(json_integer_value(json_object_get(born, "errors")), 3);
    ASSERT_STR_CONTAINS(json_string_value(json_array_get(json_object_get(born, "first_errors"), 0)),
                        "HTTP 404");
    json_t *fol = json_object_get(acc, "follows");
    ASSERT_EQ(json_integer_value(json_object_get(fol, "requested")), 9);
    ASSERT_EQ(json_integer_value(json_object_get(fol, "filled")), 6);
    ASSERT_EQ(json_integer_value(json_object_get(fol, "failed")), 3);
    json_decref(acc);
    sh_extract_free(x);
    sh_dsl_free(d);
}

#define HTML_CFG(scope, fields)                                                                    \
    "{\"collection\": \"p\", \"source\": {\"url\": \"http://shop.example/c/\"}, \"scope\": "       \
    "\"" scope "\", \"fields\": " fields "}"

static void test_extract_filters_and_targets(void)
{
    struct sh_dsl *d = compile(HTML_CFG(
        "article.product_pod",
        "{\"sku\": \"@data-sku\", \"stock\": \"@data-stock-level | int\","
        " \"price\": \"p.price_color | number\", \"title\": \"h3 a@title | upper\","
        " \"slug\": \"h3 a@href | regex:catalogue/([a-z-]+)_[0-9]+\","
        " \"url\": \"h3 a@href | absolute\", \"img\": \"img@SRC\","
        " \"rating\": \"p.star-rating@class | replace:/star-rating //| lower\","
        " \"avail\": \"p.availability | trim | lower\", \"missing\": \"span.nope | default:n/a\","
        " \"stars\": \"xpath:count(.//i[@class='icon-star'])\","
        " \"xtitle\": \"xpath:.//h3/a/@title\", \"price_html\": \"div.product_price@html\","
        " \"classes\": [\"xpath:.//p/@class\"]}"));
    struct sh_extract *x = run_file(d, PAGES "products.html", "http://shop.example/c/index.html");
    json_t *items = sh_extract_items(x);
    ASSERT_EQ(json_array_size(items), 4);
    json_t *a = json_array_get(items, 0), *c = json_array_get(items, 2),
           *last = json_array_get(items, 3);
    ASSERT_STR_EQ(str_at(items, 0, "sku"), "A-1001");
    ASSERT_EQ(json_integer_value(json_object_get(a, "stock")), 22);
    ASSERT(json_is_null(json_object_get(last, "stock"))); /* no attribute */
    ASSERT(json_is_real(json_object_get(c, "price")));
    double p = json_real_value(json_object_get(c, "price"));
    ASSERT(p > 1050.09 && p < 1050.11); /* "£1,050.10" */
    ASSERT_STR_EQ(str_at(items, 0, "title"), "A LIGHT IN THE ATTIC");
    ASSERT_STR_EQ(str_at(items, 1, "slug"), "tipping-the-velvet");
    ASSERT_STR_EQ(str_at(items, 0, "url"),
                  "http://shop.example/c/catalogue/a-light-in-the-attic_1000/index.html");
    ASSERT_STR_EQ(str_at(items, 0, "img"), "media/cache/2c/da/2cdad67c.jpg");
    ASSERT_STR_EQ(str_at(items, 0, "rating"), "three");
    ASSERT_STR_EQ(str_at(items, 1, "avail"), "out of stock");
    ASSERT_STR_EQ(str_at(items, 0, "missing"), "n/a");
    ASSERT_EQ(json_integer_value(json_object_get(last, "stars")), 4);
    ASSERT_STR_EQ(str_at(items, 3, "xtitle"), "Sharp Objects");
    ASSERT_STR_CONTAINS(str_at(items, 0, "price_html"), "<p class=\"price_color\">£51.77</p>");
    ASSERT_EQ(json_array_size(json_object_get(a, "classes")), 3);
    ASSERT_NULL(strchr(str_at(items, 1, "avail"), '\n'));
    sh_extract_free(x);
    sh_dsl_free(d);
}

static void test_extract_number_filter_reports_failures(void)
{
    struct sh_dsl *d =
        compile(HTML_CFG("article.product_pod", "{\"n\": \"h3 a | number\", \"i\": \"p | int\"}"));
    struct sh_extract *x = run_file(d, PAGES "products.html", "http://shop.example/");
    ASSERT(json_is_null(json_object_get(json_array_get(sh_extract_items(x), 0), "n")));
    json_t *s = json_object_get(json_object_get(sh_extract_stats(x), "fields"), "n");
    ASSERT_EQ(json_integer_value(json_object_get(s, "errors")), 4);
    ASSERT_STR_CONTAINS(json_string_value(json_array_get(json_object_get(s, "first_errors"), 0)),
                        "number: no number in");
    sh_extract_free(x);
    sh_dsl_free(d);
}

static void test_extract_broken_markup_still_yields_items(void)
{
    struct sh_dsl *d = compile(
        HTML_CFG("div.quote",
                 "{\"text\": \"span.text\", \"author\": \"span.author\", \"link\": \"a@href\"}"));
    struct sh_extract *x = run_file(d, PAGES "broken.html", "http://b.example/x/");
    json_t *items = sh_extract_items(x);
    ASSERT_GE(json_array_size(items), 3);
    ASSERT_STR_CONTAINS(str_at(items, 0, "text"), "First bold");
    ASSERT_STR_EQ(str_at(items, 0, "author"), "Anon");
    ASSERT_STR_EQ(str_at(items, 0, "link"), "/a/1");
    ASSERT_STR_EQ(str_at(items, 1, "author"), "Someone & Co");
    ASSERT_STR_EQ(str_at(items, 1, "link"), "/a/2?x=1&y=2");
    ASSERT_STR_CONTAINS(str_at(items, 2, "text"), "Third");
    sh_extract_free(x);
    /* garbage and empty input parse too */
    struct sh_err err;
    x = sh_extract_page(d, "\x01\x02<<<>>>", 8, NULL, NULL, &err);
    ASSERT_NOT_NULL(x);
    ASSERT_EQ(json_array_size(sh_extract_items(x)), 0);
    sh_extract_free(x);
    x = sh_extract_page(d, "", 0, NULL, NULL, &err);
    ASSERT_NOT_NULL(x);
    sh_extract_free(x);
    sh_dsl_free(d);
}

static void test_extract_nested_objects_lists_and_follows(void)
{
    struct sh_dsl *d =
        compile("{\"collection\": \"q\", \"source\": {\"url\": \"http://quotes.example/\"},"
                " \"fields\": {\"title\": \"title\","
                "  \"header\": {\"login\": \"a[href='/login']@href\", \"home\": \"h1 a\"},"
                "  \"quotes\": [{\"scope\": \"div.quote\", \"fields\": {\"by\": \"small.author\","
                "     \"tags\": [\"a.tag\"]}}],"
                "  \"first\": {\"scope\": \"div.quote\", \"fields\": {\"by\": \"small.author\"}},"
                "  \"authors\": [{\"follow\": \"div.quote span a\", \"fields\": {"
                "     \"name\": \"h3.author-title\", \"home\": {\"follow\": \"h1 a\", \"field\": "
                "\"title\"}}}]},"
                " \"paginate\": {\"next\": \"li.next a\"}}");
    struct sh_extract *x = run_file(d, PAGES "quotes-1.html", "http://quotes.example/");
    json_t *items = sh_extract_items(x);
    ASSERT_EQ(json_array_size(items), 1); /* no scope: the page is one item */
    json_t *it = json_array_get(items, 0);
    ASSERT_STR_EQ(str_at(items, 0, "title"), "Quotes to Scrape");
    ASSERT_STR_EQ(json_string_value(json_object_get(json_object_get(it, "header"), "login")),
                  "/login");
    json_t *qs = json_object_get(it, "quotes");
    ASSERT_EQ(json_array_size(qs), 6);
    ASSERT_STR_EQ(json_string_value(json_object_get(json_array_get(qs, 3), "by")), "Jane Austen");
    ASSERT_STR_EQ(json_string_value(json_object_get(json_object_get(it, "first"), "by")),
                  "Albert Einstein");
    /* "follow all": six links, six slots; default link attribute is href */
    ASSERT_EQ(sh_extract_follow_count(x), 6);
    ASSERT_EQ(json_array_size(json_object_get(it, "authors")), 6);
    fill_from_fixtures(x, 6);
    /* each author page adds a depth-2 follow to "/" */
    ASSERT_EQ(sh_extract_follow_count(x), 12);
    ASSERT_EQ(sh_extract_follow_depth(x, 6), 2);
    ASSERT_STR_EQ(sh_extract_follow_url(x, 6), "http://quotes.example/");
    size_t len;
    char *home = slurp(PAGES "quotes-2.html", &len);
    struct sh_err err;
    for (size_t i = 6; i < 12; i++)
        ASSERT_EQ(sh_extract_fill(x, i, home, len, NULL, NULL, &err), 0);
    free(home);
    json_t *a2 = json_array_get(json_object_get(it, "authors"), 2);
    ASSERT_STR_EQ(json_string_value(json_object_get(a2, "name")), "Albert Einstein");
    ASSERT_STR_EQ(json_string_value(json_object_get(a2, "home")), "Quotes to Scrape");
    ASSERT_STR_EQ(json_string_value(json_array_get(sh_extract_next_urls(x), 0)),
                  "http://quotes.example/page/2/");
    sh_extract_free(x);
    sh_dsl_free(d);
}

#define JSON_CFG(paginate)                                                                         \
    "{\"collection\": \"api\", \"source\": {\"url\": \"http://api.example/api/quotes\","           \
    " \"type\": \"json\"}, \"scope\": \"quotes[*]\", \"fields\": {\"text\": \"text\","             \
    " \"author\": \"author.name\", \"tags\": [\"tags[*]\"], \"first_tag\": \"tags[0]\","           \
    " \"likes\": \"likes | number\", \"rating\": \"rating | default:0\","                          \
    " \"link\": \"author.goodreads_link | absolute\"}, " paginate "}"

static struct sh_extract *run_json(const struct sh_dsl *d, const char *url)
{
    size_t len;
    struct sh_err err;
    char *body = slurp(PAGES "api-quotes-1.json", &len);
    struct sh_extract *x = sh_extract_page(d, body, len, url, "application/json", &err);
    if (!x)
        CHECK_FAIL("extract: %s", err.msg);
    free(body);
    return x;
}

static void test_extract_json_source_with_paths(void)
{
    struct sh_dsl *d = compile(JSON_CFG("\"paginate\": {\"next\": \"links.next\"}"));
    struct sh_extract *x = run_json(d, "http://api.example/api/quotes?page=1");
    json_t *items = sh_extract_items(x);
    ASSERT_EQ(json_array_size(items), 3);
    json_t *a = json_array_get(items, 0), *c = json_array_get(items, 2);
    ASSERT_STR_EQ(str_at(items, 1, "author"), "J.K. Rowling");
    ASSERT_EQ(json_array_size(json_object_get(a, "tags")), 4);
    ASSERT_STR_EQ(str_at(items, 0, "first_tag"), "change");
    ASSERT(json_is_null(json_object_get(c, "first_tag")));
    ASSERT_EQ(json_integer_value(json_object_get(a, "likes")), 1204);
    ASSERT(json_is_real(json_object_get(a, "rating"))); /* numbers stay numbers */
    ASSERT_STR_EQ(str_at(items, 2, "rating"), "0");
    ASSERT_STR_EQ(str_at(items, 0, "link"), "http://api.example/author/show/9810.Albert_Einstein");
    ASSERT_STR_EQ(json_string_value(json_array_get(sh_extract_next_urls(x), 0)),
                  "http://api.example/api/quotes?page=2");
    sh_extract_free(x);
    sh_dsl_free(d);

    d = compile(JSON_CFG("\"paginate\": {\"param\": \"page\", \"start\": 1, \"step\": 1}"));
    x = run_json(d, "http://api.example/api/quotes?q=x&page=4");
    ASSERT_STR_EQ(json_string_value(json_array_get(sh_extract_next_urls(x), 0)),
                  "http://api.example/api/quotes?q=x&page=5");
    sh_extract_free(x);
    x = run_json(d, "http://api.example/api/quotes");
    ASSERT_STR_EQ(json_string_value(json_array_get(sh_extract_next_urls(x), 0)),
                  "http://api.example/api/quotes?page=2");
    sh_extract_free(x);
    struct sh_err err;
    ASSERT_NULL(sh_extract_page(d, "{\"quotes\": [", 12, NULL, NULL, &err));
    ASSERT_EQ(err.code, SH_EPROTO);
    /* an empty page ends parameter pagination */
    x = sh_extract_page(d, "{\"quotes\": []}", 14, "http://api.example/?page=9", NULL, &err);
    ASSERT_NOT_NULL(x);
    ASSERT_EQ(json_array_size(sh_extract_items(x)), 0);
    ASSERT_EQ(json_array_size(sh_extract_next_urls(x)), 0);
    sh_extract_free(x);
    sh_dsl_free(d);
}

static void test_extract_json_scope_array_and_top_level_array(void)
{
    struct sh_dsl *d =
        compile("{\"collection\": \"a\", \"source\": {\"url\": \"http://a.example/\","
                " \"type\": \"json\"}, \"fields\": {\"n\": \"name\", \"v\": \"$\"}}");
    struct sh_err err;
    const char *doc = "[{\"name\": \"x\"}, {\"name\": \"y\"}]";
    struct sh_extract *x = sh_extract_page(d, doc, strlen(doc), NULL, NULL, &err);
    ASSERT_NOT_NULL(x);
    ASSERT_EQ(json_array_size(sh_extract_items(x)), 2);
    ASSERT_STR_EQ(str_at(sh_extract_items(x), 1, "n"), "y");
    sh_extract_free(x);
    sh_dsl_free(d);
}

static void test_extract_charset_from_content_type(void)
{
    struct sh_dsl *d =
        compile("{\"collection\": \"l\", \"source\": {\"url\": \"http://l.example/\"},"
                " \"fields\": {\"t\": \"p\"}}");
    struct sh_err err;
    const char *latin1 = "<html><body><p>caf\xe9</p></body></html>";
    struct sh_extract *x =
        sh_extract_page(d, latin1, strlen(latin1), NULL, "text/html; charset=ISO-8859-1", &err);
    ASSERT_NOT_NULL(x);
    ASSERT_STR_EQ(str_at(sh_extract_items(x), 0, "t"), "café");
    sh_extract_free(x);
    sh_dsl_free(d);
}

/* Several threads extracting with one shared compiled configuration get
 * the same items as a single thread (the struct sh_dsl is read-only). */
struct par {
    const struct sh_dsl *d;
    const char *body;
    size_t len;
    const char *expect;
    int mismatches;
};

static void *par_run(void *arg)
{
    struct par *p = arg;
    for (int i = 0; i < 25; i++) {
        struct sh_err err;
        struct sh_extract *x =
            sh_extract_page(p->d, p->body, p->len, "http://quotes.example/", NULL, &err);
        char *got = x ? json_dumps(sh_extract_items(x), JSON_COMPACT) : NULL;
        p->mismatches += !got || strcmp(got, p->expect) != 0;
        free(got);
        sh_extract_free(x);
    }
    return NULL;
}

static void test_extract_parallel_threads_share_a_config(void)
{
    struct sh_dsl *d =
        compile("{\"collection\": \"q\", \"source\": {\"url\": \"http://quotes.example/\"},"
                " \"scope\": \"div.quote\", \"fields\": {\"text\": \"span.text\","
                " \"first\": \"div.tags a.tag:nth-of-type(1)\", \"n\": \"xpath:count(.//a)\","
                " \"by\": \"xpath:.//small[@class='author']\", \"url\": \"a@href | absolute\","
                " \"tags\": [\"a.tag:not(:last-child) | upper\"]}}");
    size_t len;
    char *body = slurp(PAGES "quotes-1.html", &len);
    struct sh_err err;
    struct sh_extract *x = sh_extract_page(d, body, len, "http://quotes.example/", NULL, &err);
    ASSERT_NOT_NULL(x);
    char *expect = json_dumps(sh_extract_items(x), JSON_COMPACT);
    ASSERT_STR_CONTAINS(expect, "\"first\":\"change\"");
    ASSERT_STR_CONTAINS(expect, "\"tags\":[\"CHANGE\",\"DEEP-THOUGHTS\",\"THINKING\"]");
    sh_extract_free(x);
    pthread_t t[4];
    struct par p[4];
    for (int i = 0; i < 4; i++) {
        p[i] = (struct par){d, body, len, expect, 0};
        ASSERT_EQ(pthread_create(&t[i], NULL, par_run, &p[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        ASSERT_EQ(pthread_join(t[i], NULL), 0);
        ASSERT_EQ(p[i].mismatches, 0);
    }
    free(expect);
    free(body);
    sh_dsl_free(d);
}

/* {"follow": a, "field": {"follow": b, "field": ...}}: two hops, one value. */
static void test_extract_follow_of_a_follow_fills_the_outer_field(void)
{
    struct sh_dsl *d =
        compile("{\"collection\": \"q\", \"source\": {\"url\": \"http://quotes.example/\"},"
                " \"scope\": \"div.quote\", \"fields\": {\"home\": {\"follow\": \"span a\","
                " \"field\": {\"follow\": \"h1 a\", \"field\": \"title\"}}}}");
    struct sh_extract *x = run_file(d, PAGES "quotes-1.html", "http://quotes.example/");
    ASSERT_EQ(sh_extract_follow_count(x), 6);
    fill_from_fixtures(x, 1);
    ASSERT_EQ(sh_extract_follow_count(x), 7);
    ASSERT_EQ(sh_extract_follow_depth(x, 6), 2);
    size_t len;
    struct sh_err err;
    char *home = slurp(PAGES "quotes-2.html", &len);
    ASSERT_EQ(sh_extract_fill(x, 6, home, len, NULL, NULL, &err), 0);
    free(home);
    ASSERT_STR_EQ(str_at(sh_extract_items(x), 0, "home"), "Quotes to Scrape");
    ASSERT(json_is_null(json_object_get(json_array_get(sh_extract_items(x), 1), "home")));
    sh_extract_free(x);
    sh_dsl_free(d);
}

/* A follow from a JSON listing to JSON detail documents. */
static void test_extract_json_follow(void)
{
    struct sh_dsl *d = compile(
        "{\"collection\": \"j\", \"source\": {\"url\": \"http://api.example/list\","
        " \"type\": \"json\"}, \"scope\": \"items\", \"fields\": {\"id\": \"id\","
        " \"detail\": {\"follow\": \"href\", \"fields\": {\"price\": \"price | number\"}}}}");
    const char *list = "{\"items\": [{\"id\": 1, \"href\": \"/d/1\"}, {\"id\": 2}]}";
    struct sh_err err;
    struct sh_extract *x =
        sh_extract_page(d, list, strlen(list), "http://api.example/list", NULL, &err);
    ASSERT_NOT_NULL(x);
    ASSERT_EQ(sh_extract_follow_count(x), 1);
    ASSERT_STR_EQ(sh_extract_follow_url(x, 0), "http://api.example/d/1");
    ASSERT_EQ(sh_extract_fill(x, 0, "{\"price\": \"$12.50\"}", 19, NULL, NULL, &err), 0);
    json_t *it = json_array_get(sh_extract_items(x), 0);
    double price = json_real_value(json_object_get(json_object_get(it, "detail"), "price"));
    ASSERT(price > 12.49 && price < 12.51);
    ASSERT(json_is_null(json_object_get(json_array_get(sh_extract_items(x), 1), "detail")));
    sh_extract_free(x);
    sh_dsl_free(d);
}

/* The per-page URL cache joins simple references itself: it must give
 * exactly what curl's resolution gives, for simple and tricky references. */
static void test_extract_url_fast_path_equals_curl(void)
{
    static const char *const bases[] = {"http://books.example/products-001.html",
                                        "https://Q.example:8080/a/b/c?x=1#f", "http://h.example",
                                        "http://h.example/dir/", NULL};
    static const char *const refs[] = {"catalogue/x_1/index.html",
                                       "/author/Albert-Einstein",
                                       "a?b=1&c=2",
                                       "x/./y",
                                       "../up",
                                       "//other/x",
                                       "?q=1",
                                       "#frag",
                                       "http://abs.example/z",
                                       "a b",
                                       "caf\xc3\xa9",
                                       "a#f",
                                       "/",
                                       "a//b",
                                       "x.html?u=/a/b",
                                       "  lead",
                                       "%41",
                                       "a:b",
                                       "mailto:x@y",
                                       ".",
                                       "..",
                                       "a/..",
                                       NULL};
    for (int i = 0; bases[i]; i++) {
        for (int keep = 0; keep < 2; keep++) {
            void *cache = NULL;
            for (int j = 0; refs[j]; j++) {
                char *a = url_resolve(bases[i], refs[j], keep);
                char *b = url_resolve_cached(&cache, bases[i], refs[j], keep);
                if ((a == NULL) != (b == NULL) || (a && strcmp(a, b) != 0))
                    CHECK_FAIL("base %s ref '%s': curl %s, cached %s", bases[i], refs[j],
                               a ? a : "(null)", b ? b : "(null)");
                free(a);
                free(b);
            }
            url_cache_free(cache);
        }
    }
}

static void test_extract_base_href_sets_the_link_base(void)
{
    static const char page[] =
        "<html><head><base href='/shop/v2/'><title>t</title></head><body>"
        "<div class=i><a href='item/1?x=1'>one</a><a class=who href='../people/ann'>a</a></div>"
        "<a class=next href='page/2'>next</a></body></html>";
    static const char cfg[] =
        "{\"collection\": \"p\", \"source\": {\"url\": \"http://shop.example/c/\"},"
        " \"scope\": \"div.i\", \"fields\": {\"u\": \"a@href | absolute\","
        " \"who\": {\"follow\": \"a.who@href\", \"field\": \"h1\"}},"
        " \"paginate\": \"a.next@href\"}";
    struct sh_dsl *d = compile(cfg);
    struct sh_err err;
    struct sh_extract *x =
        sh_extract_page(d, page, sizeof(page) - 1, "http://shop.example/c/index.html", NULL, &err);
    ASSERT_NOT_NULL(x);
    /* every relative link resolves against <base href>, itself relative to the page */
    ASSERT_STR_EQ(str_at(sh_extract_items(x), 0, "u"), "http://shop.example/shop/v2/item/1?x=1");
    ASSERT_EQ(sh_extract_follow_count(x), 1);
    ASSERT_STR_EQ(sh_extract_follow_url(x, 0), "http://shop.example/shop/people/ann");
    ASSERT_STR_EQ(json_string_value(json_array_get(sh_extract_next_urls(x), 0)),
                  "http://shop.example/shop/v2/page/2");
    sh_extract_free(x);
    /* without <base>, the page URL is the base */
    static const char plain[] = "<div class=i><a href='item/1'>one</a></div>";
    x = sh_extract_page(d, plain, sizeof(plain) - 1, "http://shop.example/c/index.html", NULL,
                        &err);
    ASSERT_NOT_NULL(x);
    ASSERT_STR_EQ(str_at(sh_extract_items(x), 0, "u"), "http://shop.example/c/item/1");
    sh_extract_free(x);
    sh_dsl_free(d);
}

int main(void)
{
    sh_extract_global_init();
    RUN(test_extract_design_example_end_to_end);
    RUN(test_extract_filters_and_targets);
    RUN(test_extract_number_filter_reports_failures);
    RUN(test_extract_broken_markup_still_yields_items);
    RUN(test_extract_nested_objects_lists_and_follows);
    RUN(test_extract_json_source_with_paths);
    RUN(test_extract_json_scope_array_and_top_level_array);
    RUN(test_extract_charset_from_content_type);
    RUN(test_extract_parallel_threads_share_a_config);
    RUN(test_extract_json_follow);
    RUN(test_extract_follow_of_a_follow_fills_the_outer_field);
    RUN(test_extract_url_fast_path_equals_curl);
    RUN(test_extract_base_href_sets_the_link_base);
    return 0;
}
