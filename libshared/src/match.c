/* Native matching of simple CSS selectors, the engine's fast path.
 *
 * Most scraping selectors are one compound selector: a type and/or classes,
 * an id and attribute presence/equality tests ("span.text", "a.tag",
 * "article[data-sku]", "#main"). For those the engine walks the context
 * node's subtree in document order and tests elements in C, with no XPath
 * node sets and no string allocations, instead of evaluating cssselect's
 * XPath (whose class test builds three strings per element). The semantics
 * are exactly those of the XPath it replaces: descendant-or-self, element
 * names compared as parsed (lower case), class tokens split on XPath
 * whitespace (space, tab, CR, LF), attribute values compared exactly.
 * Anything else (combinators, pseudo-classes, escapes, groups, other
 * operators) returns "not simple" and keeps the XPath path. Pure,
 * thread-safe; a struct simple_sel is immutable once parsed. */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "match.h"
#include "shared/xalloc.h"

static bool ident_start(char c)
{
    return isalpha((unsigned char)c) || c == '_';
}

static bool ident_char(char c)
{
    return isalnum((unsigned char)c) || c == '_' || c == '-';
}

/* -?[A-Za-z_][A-Za-z0-9_-]* at s; returns its length or 0. */
static size_t ident_len(const char *s)
{
    size_t i = s[0] == '-';
    if (!ident_start(s[i]))
        return 0;
    for (i++; ident_char(s[i]); i++)
        ;
    return i;
}

static char *lower_dup(const char *s, size_t n)
{
    char *d = sh_xstrndup(s, n);
    for (char *p = d; *p; p++)
        *p = (char)tolower((unsigned char)*p);
    return d;
}

static void add_test(struct simple_compound *s, enum simple_kind k, char *name, char *value)
{
    s->tests = sh_xrealloc(s->tests, (s->ntests + 1) * sizeof(*s->tests));
    s->tests[s->ntests].kind = k;
    s->tests[s->ntests].name = name;
    s->tests[s->ntests].value = value;
    s->ntests++;
}

/* One compound at *pp; false when it is not simple. */
static bool parse_compound(const char **pp, struct simple_compound *s)
{
    const char *p = *pp;
    size_t n;
    bool any = false;

    if (*p == '*') {
        p++;
        any = true;
    } else if ((n = ident_len(p)) > 0) {
        s->tag = lower_dup(p, n);
        p += n;
        any = true;
    }
    while (*p && *p != ' ' && *p != '>') {
        any = true;
        if (*p == '.' && (n = ident_len(p + 1)) > 0) {
            add_test(s, SIMPLE_CLASS, NULL, sh_xstrndup(p + 1, n));
            p += n + 1;
        } else if (*p == '#' && ident_char(p[1])) {
            for (n = 1; ident_char(p[n]); n++)
                ;
            add_test(s, SIMPLE_ATTR_EQ, sh_xstrdup("id"), sh_xstrndup(p + 1, n - 1));
            p += n;
        } else if (*p == '[' && (n = ident_len(p + 1)) > 0) {
            const char *name = p + 1;
            size_t nlen = n;
            p += n + 1;
            if (*p == ']') {
                add_test(s, SIMPLE_ATTR, lower_dup(name, nlen), NULL);
                p++;
                continue;
            }
            if (*p != '=')
                return false;
            p++;
            char q = (*p == '"' || *p == '\'') ? *p : 0;
            const char *v = q ? p + 1 : p;
            const char *end = v;
            if (q) {
                while (*end && *end != q && *end != '\\' && *end != '\n' && *end != '\r' &&
                       *end != '\f')
                    end++;
                if (*end != q)
                    return false;
                p = end + 1;
            } else {
                end = v + ident_len(v);
                if (end == v)
                    return false;
                p = end;
            }
            if (*p != ']')
                return false;
            p++;
            add_test(s, SIMPLE_ATTR_EQ, lower_dup(name, nlen), sh_xstrndup(v, (size_t)(end - v)));
        } else {
            return false;
        }
    }
    *pp = p;
    return any;
}

struct simple_sel *simple_parse(const char *css)
{
    struct simple_sel *s = sh_xcalloc(1, sizeof(*s));
    const char *p = css;
    char comb = ' ';

    while (*p == ' ')
        p++;
    for (;;) {
        s->c = sh_xrealloc(s->c, (s->n + 1) * sizeof(*s->c));
        memset(&s->c[s->n], 0, sizeof(*s->c));
        s->c[s->n].comb = comb;
        s->n++;
        if (!parse_compound(&p, &s->c[s->n - 1]))
            goto not_simple;
        while (*p == ' ')
            p++;
        if (*p == '\0')
            return s;
        comb = ' ';
        if (*p == '>') {
            comb = '>';
            p++;
            while (*p == ' ')
                p++;
        }
        if (s->n >= 16)
            goto not_simple;
    }
not_simple:
    simple_free(s);
    return NULL;
}

void simple_free(struct simple_sel *s)
{
    if (!s)
        return;
    for (size_t k = 0; k < s->n; k++) {
        for (size_t i = 0; i < s->c[k].ntests; i++) {
            free(s->c[k].tests[i].name);
            free(s->c[k].tests[i].value);
        }
        free(s->c[k].tests);
        free(s->c[k].tag);
    }
    free(s->c);
    free(s);
}

/* The attribute's value without copying when it is one text node; else a
 * copy in *ret_copy (caller xmlFree()s). NULL when absent. */
const char *simple_attr_value(xmlNodePtr node, const char *name, xmlChar **ret_copy)
{
    *ret_copy = NULL;
    for (xmlAttrPtr a = node->properties; a; a = a->next) {
        if (a->name[0] != (xmlChar)name[0] || a->ns || strcmp((const char *)a->name, name) != 0)
            continue;
        if (!a->children)
            return "";
        if (a->children->type == XML_TEXT_NODE && !a->children->next && a->children->content)
            return (const char *)a->children->content;
        *ret_copy = xmlNodeGetContent((xmlNodePtr)a);
        return *ret_copy ? (const char *)*ret_copy : "";
    }
    return NULL;
}

static bool xpath_blank(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static bool has_token(const char *list, const char *tok)
{
    size_t n = strlen(tok);
    for (const char *p = list; *p;) {
        while (xpath_blank(*p))
            p++;
        const char *start = p;
        while (*p && !xpath_blank(*p))
            p++;
        if ((size_t)(p - start) == n && memcmp(start, tok, n) == 0)
            return true;
    }
    return false;
}

static bool matches(const struct simple_compound *s, xmlNodePtr node)
{
    if (node->type != XML_ELEMENT_NODE)
        return false;
    if (s->tag &&
        (node->name[0] != (xmlChar)s->tag[0] || strcmp((const char *)node->name, s->tag) != 0))
        return false;
    for (size_t i = 0; i < s->ntests; i++) {
        const struct simple_test *t = &s->tests[i];
        xmlChar *copy;
        const char *v = simple_attr_value(node, t->kind == SIMPLE_CLASS ? "class" : t->name, &copy);
        bool ok =
            v && (t->kind == SIMPLE_ATTR ||
                  (t->kind == SIMPLE_CLASS ? has_token(v, t->value) : strcmp(v, t->value) == 0));
        xmlFree(copy);
        if (!ok)
            return false;
    }
    return true;
}

/* Do compounds 0..k-1 match above node (compound k), with every matched
 * ancestor inside ctx's descendant-or-self? Greedy nearest-ancestor
 * matching with backtracking, as browsers do for these two combinators. */
static bool left_matches(const struct simple_sel *s, size_t k, xmlNodePtr node, xmlNodePtr ctx)
{
    if (k == 0)
        return true;
    const struct simple_compound *left = &s->c[k - 1];
    for (xmlNodePtr cur = node; cur != ctx && cur->parent;) {
        xmlNodePtr a = cur->parent;
        if (a->type != XML_ELEMENT_NODE)
            return false;
        if (matches(left, a) && left_matches(s, k - 1, a, ctx))
            return true;
        if (s->c[k].comb == '>')
            return false;
        cur = a;
    }
    return false;
}

static bool full_match(const struct simple_sel *s, xmlNodePtr node, xmlNodePtr ctx)
{
    return matches(&s->c[s->n - 1], node) && left_matches(s, s->n - 1, node, ctx);
}

void simple_match(const struct simple_sel *s, xmlNodePtr ctx, void (*emit)(void *, xmlNodePtr),
                  void *data)
{
    xmlNodePtr n = ctx;
    if (!n)
        return;
    if (full_match(s, n, ctx))
        emit(data, n);
    /* pre-order walk of ctx's descendants, without recursion */
    n = ctx->children;
    while (n && n != ctx) {
        if (full_match(s, n, ctx))
            emit(data, n);
        if (n->children && n->type == XML_ELEMENT_NODE) {
            n = n->children;
            continue;
        }
        while (n != ctx && !n->next)
            n = n->parent;
        if (n == ctx)
            break;
        n = n->next;
    }
}
