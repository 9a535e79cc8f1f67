/* Differential-test driver for the CSS compiler (tests/unit/test_css_lxml.sh).
 *
 *   test_css_dump PAGE.html SELECTORS.txt
 * parses PAGE with the engine's HTML parser options, compiles every line of
 * SELECTORS.txt (blank and '#' lines skipped) and prints, per selector, a
 * header "== <selector>" then one line per matched node: its node path,
 * normalised text and sorted attributes — or "ERROR" when the selector does
 * not compile. The shell test prints the same through lxml + cssselect and
 * diffs the two.
 *
 * Without arguments it checks itself on the quotes fixture (so ctest runs it
 * as a unit test that can fail). */
#include "check.h"
#include "shared/css.h"
/* the engine's private native matcher, tested here against lxml too */
#include "../../libshared/src/match.h"

#include <libxml/HTMLparser.h>
#include <libxml/xpath.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void print_text(const char *s)
{
    int space = 0, any = 0;
    for (; *s; s++) {
        if (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r' || *s == '\f') {
            space = any;
        } else {
            if (space)
                putchar(' ');
            space = 0;
            any = 1;
            putchar(*s);
        }
    }
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void print_node(xmlNodePtr n)
{
    xmlChar *path = xmlGetNodePath(n);
    xmlChar *text = xmlNodeGetContent(n);
    printf("%s\t", path ? (char *)path : "?");
    print_text(text ? (char *)text : "");
    putchar('\t');
    char *attrs[64];
    size_t na = 0;
    if (n->type == XML_ELEMENT_NODE)
        for (xmlAttrPtr a = n->properties; a && na < 64; a = a->next) {
            xmlChar *v = xmlNodeGetContent((xmlNodePtr)a);
            if (asprintf(&attrs[na], "%s=%s", (const char *)a->name, v ? (char *)v : "") >= 0)
                na++;
            xmlFree(v);
        }
    qsort(attrs, na, sizeof(*attrs), cmp_str);
    for (size_t i = 0; i < na; i++) {
        printf("%s%s", i ? ";" : "", attrs[i]);
        free(attrs[i]);
    }
    putchar('\n');
    xmlFree(path);
    xmlFree(text);
}

static htmlDocPtr load(const char *file)
{
    return htmlReadFile(file, NULL,
                        HTML_PARSE_RECOVER | HTML_PARSE_NOERROR | HTML_PARSE_NOWARNING |
                            HTML_PARSE_NONET | HTML_PARSE_COMPACT);
}

static int native_count;

static void print_match(void *data, xmlNodePtr n)
{
    int *count = data;
    (*count)++;
    if (count != &native_count)
        print_node(n);
}

/* Matches of css on doc, as the engine finds them (native matcher for
 * simple selectors, else the fast XPath); -1 when it does not compile. */
static int run(htmlDocPtr doc, const char *css, int print)
{
    struct sh_err err;
    char *xp = sh_css_to_xpath_fast(css, NULL, &err);
    if (!xp)
        return -1;
    struct simple_sel *simple = simple_parse(css);
    if (simple) {
        int count = 0;
        simple_match(simple, (xmlNodePtr)doc, print_match, print ? (void *)&count : &native_count);
        simple_free(simple);
        free(xp);
        if (!print) {
            count = native_count;
            native_count = 0;
        }
        return count;
    }
    xmlXPathContextPtr ctx = xmlXPathNewContext(doc);
    ctx->node = (xmlNodePtr)doc;
    xmlXPathObjectPtr r = xmlXPathEvalExpression((const xmlChar *)xp, ctx);
    int n = -1;
    if (r && r->type == XPATH_NODESET) {
        n = r->nodesetval ? r->nodesetval->nodeNr : 0;
        for (int i = 0; print && i < n; i++)
            print_node(r->nodesetval->nodeTab[i]);
    }
    xmlXPathFreeObject(r);
    xmlXPathFreeContext(ctx);
    free(xp);
    return n;
}

static void test_dump_counts_quotes_fixture(void)
{
    htmlDocPtr doc = load("tests/fixtures/pages/quotes-1.html");
    ASSERT_NOT_NULL(doc);
    ASSERT_EQ(run(doc, "div.quote", 0), 6);
    ASSERT_EQ(run(doc, "div.quote:first-child small.author", 0), 1);
    ASSERT_EQ(run(doc, "li.next a", 0), 1);
    ASSERT_EQ(run(doc, "a[href^='/author/']", 0), 6);
    ASSERT_EQ(run(doc, "a[href", 0), -1);
    xmlFreeDoc(doc);
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        RUN(test_dump_counts_quotes_fixture);
        return 0;
    }
    htmlDocPtr doc = load(argv[1]);
    FILE *f = fopen(argv[2], "r");
    if (!doc || !f) {
        fprintf(stderr, "cannot read %s or %s\n", argv[1], argv[2]);
        return 2;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    while ((len = getline(&line, &cap, f)) >= 0) {
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
            line[--len] = '\0';
        if (len == 0 || line[0] == '#')
            continue;
        printf("== %s\n", line);
        if (run(doc, line, 1) < 0)
            printf("ERROR\n");
    }
    free(line);
    fclose(f);
    xmlFreeDoc(doc);
    return 0;
}
