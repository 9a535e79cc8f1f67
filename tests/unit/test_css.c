/* CSS → XPath compiler: exact translations (cssselect HTMLTranslator output)
 * and syntax errors with their positions. Matching behaviour against lxml
 * is covered by test_css_lxml.sh. */
#include "check.h"
#include "shared/css.h"
#include "shared/selector.h"

#include <stdlib.h>

static void expect(const char *css, const char *xpath)
{
    struct sh_err err;
    char *got = sh_css_to_xpath(css, NULL, &err);
    if (!got)
        CHECK_FAIL("'%s' did not compile: %s", css, err.msg);
    if (strcmp(got, xpath) != 0)
        CHECK_FAIL("'%s'\n  got:      %s\n  expected: %s", css, got, xpath);
    free(got);
}

static void expect_error(const char *css, const char *msg, size_t pos)
{
    struct sh_err err;
    size_t got_pos = 12345;
    char *got = sh_css_to_xpath(css, &got_pos, &err);
    if (got)
        CHECK_FAIL("'%s' compiled to %s but should fail", css, got);
    ASSERT_EQ(err.code, SH_ECONFIG);
    ASSERT_STR_CONTAINS(err.msg, msg);
    ASSERT_EQ(got_pos, pos);
}

static void test_css_type_class_id_universal(void)
{
    expect("div", "descendant-or-self::div");
    expect("DIV", "descendant-or-self::div");
    expect("*", "descendant-or-self::*");
    expect(".quote", "descendant-or-self::*[@class and contains(concat(' ', "
                     "normalize-space(@class), ' '), ' quote ')]");
    expect("#main", "descendant-or-self::*[@id = 'main']");
    expect("p#a.b", "descendant-or-self::p[(@id = 'a') and (@class and contains(concat(' ', "
                    "normalize-space(@class), ' '), ' b '))]");
}

static void test_css_attribute_operators(void)
{
    expect("a[href]", "descendant-or-self::a[@href]");
    expect("a[HREF='x']", "descendant-or-self::a[@href = 'x']");
    expect("a[rel~=nofollow]", "descendant-or-self::a[@rel and contains(concat(' ', "
                               "normalize-space(@rel), ' '), ' nofollow ')]");
    expect("p[lang|=en]",
           "descendant-or-self::p[@lang and (@lang = 'en' or starts-with(@lang, 'en-'))]");
    expect("a[href^=\"/author/\"]",
           "descendant-or-self::a[@href and starts-with(@href, '/author/')]");
    expect("a[href$='.html']", "descendant-or-self::a[@href and substring(@href, "
                               "string-length(@href)-4) = '.html']");
    expect("a[href*=tag]", "descendant-or-self::a[@href and contains(@href, 'tag')]");
    expect("a[href^='']", "descendant-or-self::a[0]");
    expect("a[title=\"it's \\\"q\\\"\"]",
           "descendant-or-self::a[@title = concat('it',\"'\",'s \"q\"')]");
    expect("a[data-x = 'y' ]", "descendant-or-self::a[@data-x = 'y']");
}

static void test_css_combinators_and_groups(void)
{
    expect("div span", "descendant-or-self::div/descendant-or-self::*/span");
    expect("ul > li", "descendant-or-self::ul/li");
    expect("h3 + div", "descendant-or-self::h3/following-sibling::*[(name() = 'div') and "
                       "(position() = 1)]");
    expect("dt ~ dd", "descendant-or-self::dt/following-sibling::dd");
    expect("a, b", "descendant-or-self::a | descendant-or-self::b");
}

static void test_css_structural_pseudo_classes(void)
{
    expect("li:first-child", "descendant-or-self::li[count(preceding-sibling::*) = 0]");
    expect("li:last-child", "descendant-or-self::li[count(following-sibling::*) = 0]");
    expect("li:only-child", "descendant-or-self::li[count(parent::*/child::*) = 1]");
    expect("p:empty", "descendant-or-self::p[not(*) and not(string-length())]");
    expect("dd:first-of-type", "descendant-or-self::dd[count(preceding-sibling::dd) = 0]");
    expect("dd:last-of-type", "descendant-or-self::dd[count(following-sibling::dd) = 0]");
    expect("li:nth-child(2)", "descendant-or-self::li[count(preceding-sibling::*) = 1]");
    expect("li:nth-child(odd)", "descendant-or-self::li[count(preceding-sibling::*) mod 2 = 0]");
    expect("li:nth-child(even)",
           "descendant-or-self::li[(count(preceding-sibling::*) +1) mod 2 = 0]");
    expect("li:nth-child(3n+2)", "descendant-or-self::li[(count(preceding-sibling::*) >= 1) "
                                 "and ((count(preceding-sibling::*) +2) mod 3 = 0)]");
    expect("li:nth-child(-n+3)", "descendant-or-self::li[count(preceding-sibling::*) <= 2]");
    expect("li:nth-child(n)", "descendant-or-self::li");
    expect("li:nth-last-child(1)", "descendant-or-self::li[count(following-sibling::*) = 0]");
    expect("dd:nth-of-type(2)", "descendant-or-self::dd[count(preceding-sibling::dd) = 1]");
    expect("p:not(.x)", "descendant-or-self::p[not(@class and contains(concat(' ', "
                        "normalize-space(@class), ' '), ' x '))]");
    expect("p:not(span)", "descendant-or-self::p[not(name() = 'span')]");
    expect("span:contains(\"Ein\")", "descendant-or-self::span[contains(., 'Ein')]");
}

static void test_css_errors_name_their_position(void)
{
    expect_error("a[href", "expected ']' at position 7 in 'a[href'", 6);
    expect_error("div >", "expected selector at position 6", 5);
    expect_error("", "empty selector", 0);
    expect_error("a[href=]", "expected a string or identifier, got ']' at position 8", 7);
    expect_error("p:bogus", "unknown pseudo-class ':bogus' at position 2", 1);
    expect_error("li:nth-child(x2)", "invalid an+b series 'x2'", 2);
    expect_error("*:first-of-type", "not implemented", 1);
    expect_error("a::before", "pseudo-elements are not supported", 1);
    expect_error("a[title='x]", "unclosed string at position 9", 8);
    expect_error("p:not(p:not(a))", "nested :not()", 7);
    expect_error("ns|a", "namespaces are not supported", 2);
    expect_error("a $ b", "expected selector, got '$' at position 3", 2);
}

/* Random selector soup must compile or fail cleanly (never crash, leak or
 * read out of bounds under ASan), through the CSS compiler and the full
 * selector parser (filters, targets, XPath compilation). */
static void test_css_random_input_never_crashes(void)
{
    static const char *const atoms[] = {"a",
                                        "div",
                                        "*",
                                        ".",
                                        "#",
                                        "[",
                                        "]",
                                        "=",
                                        "~",
                                        "|",
                                        "^",
                                        "$",
                                        "(",
                                        ")",
                                        ">",
                                        "+",
                                        ",",
                                        ":",
                                        "'",
                                        "\"",
                                        " ",
                                        "\\",
                                        "-",
                                        "n",
                                        "2",
                                        "odd",
                                        ":not(",
                                        ":nth-child(",
                                        ":first-child",
                                        "@",
                                        "@href",
                                        "@html",
                                        " | trim",
                                        " | regex:(",
                                        " | number",
                                        "xpath:",
                                        "//",
                                        "\xc3\xa9",
                                        "\n",
                                        "::",
                                        "x",
                                        "0",
                                        "[a=b]",
                                        ".c",
                                        "#d"};
    unsigned seed = 12345;
    int ok = 0;
    for (int i = 0; i < 20000; i++) {
        char buf[256];
        size_t len = 0;
        seed = seed * 1103515245u + 12345u;
        int parts = (int)(seed >> 16) % 12 + 1;
        for (int k = 0; k < parts; k++) {
            seed = seed * 1103515245u + 12345u;
            const char *a = atoms[(seed >> 16) % (sizeof(atoms) / sizeof(atoms[0]))];
            size_t n = strlen(a);
            if (len + n >= sizeof(buf))
                break;
            memcpy(buf + len, a, n);
            len += n;
        }
        buf[len] = '\0';
        struct sh_err err;
        char *x = sh_css_to_xpath(buf, NULL, &err);
        if (!x)
            ASSERT_EQ(err.code, SH_ECONFIG);
        free(x);
        struct sh_selector *s = sh_selector_new(buf, i % 7 ? SH_SEL_HTML : SH_SEL_JSON, &err);
        ok += s != NULL;
        if (!s)
            ASSERT(err.msg[0] != '\0');
        sh_selector_free(s);
    }
    ASSERT_GT(ok, 100); /* the generator does produce valid selectors too */
}

int main(void)
{
    RUN(test_css_type_class_id_universal);
    RUN(test_css_attribute_operators);
    RUN(test_css_combinators_and_groups);
    RUN(test_css_structural_pseudo_classes);
    RUN(test_css_errors_name_their_position);
    RUN(test_css_random_input_never_crashes);
    return 0;
}
