/* Native matcher for simple compound CSS selectors (match.c), the
 * extraction engine's fast path next to XPath. Private to libshared. */
#ifndef SHARED_MATCH_H
#define SHARED_MATCH_H

#include <libxml/tree.h>
#include <stdbool.h>
#include <stddef.h>

enum simple_kind { SIMPLE_CLASS, SIMPLE_ATTR, SIMPLE_ATTR_EQ };

struct simple_test {
    enum simple_kind kind;
    char *name;  /* attribute (lower case); NULL for a class */
    char *value; /* class token or attribute value; NULL for presence */
};

struct simple_compound {
    char *tag; /* lower case; NULL = any element */
    struct simple_test *tests;
    size_t ntests;
    char comb; /* combinator to the previous compound: ' ' or '>' (unused for the first) */
};

struct simple_sel {
    struct simple_compound *c;
    size_t n;
};

/* Parses css when it is compounds of type / * / .class / #id / [a] / [a=v]
 * joined by descendant (space) or child (>) combinators; NULL otherwise
 * (the caller then uses XPath). */
struct simple_sel *simple_parse(const char *css);
void simple_free(struct simple_sel *s);
/* Calls emit for every element of ctx's descendant-or-self axis that
 * matches, in document order. */
void simple_match(const struct simple_sel *s, xmlNodePtr ctx, void (*emit)(void *, xmlNodePtr),
                  void *data);

/* node's attribute name (no namespace): borrowed when it is one text node,
 * else a copy in *ret_copy (xmlFree it); NULL when absent. */
const char *simple_attr_value(xmlNodePtr node, const char *name, xmlChar **ret_copy);

#endif
