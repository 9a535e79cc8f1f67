/* Private structures shared by the DSL compiler (dsl.c), the selector
 * module (selector.c, jpath.c, filters.c) and the engine (extract*.c).
 * Nothing here is part of libshared's public API. */
#ifndef SHARED_EXTRACT_INT_H
#define SHARED_EXTRACT_INT_H

#include <jansson.h>
#include <libxml/xpath.h>
#include <regex.h>
#include <stdbool.h>

#include "shared/dsl.h"
#include "match.h"
#include "shared/selector.h"

/* ---- JSON paths (jpath.c) ---- */
enum jseg_kind { JSEG_KEY, JSEG_INDEX, JSEG_ALL };

struct jseg {
    enum jseg_kind kind;
    char *key;
    long index; /* negative counts from the end */
};

struct jpath {
    struct jseg *segs;
    size_t n;
};

/* Parses "a.b[0].c", "items[*].name", "$", "" (the value itself). NULL with
 * err (position in message) on a syntax error. */
struct jpath *jpath_parse(const char *s, struct sh_err *err);
void jpath_free(struct jpath *p);

/* Borrowed matches, in document order. */
struct jmatches {
    json_t **v;
    size_t n, cap;
};
void jpath_eval(const struct jpath *p, json_t *root, struct jmatches *out);

/* ---- filters (filters.c) ---- */
struct filter {
    const struct filter_def *def;
    char *arg;  /* NULL when none */
    regex_t re; /* regex */
    bool has_re;
};

/* Context a filter runs in: the page URL for "absolute"; *ret_err gets a
 * new message (caller frees) when a filter fails on a value. */
struct fctx {
    const char *base_url;
    void **base_cache; /* CURLU * of base_url, parsed once per page (may be NULL) */
    char *err;
};

/* Compiles "name" / "name:arg" (text between pipes, trimmed). */
int filter_compile(struct filter *f, const char *text, struct sh_err *err);
void filter_done(struct filter *f);
const char *filter_name(const struct filter *f);
/* Applies f to v (consumed); returns the new value (never NULL: json_null). */
json_t *filter_apply(const struct filter *f, json_t *v, struct fctx *c);

/* ---- selectors (selector.c) ---- */
struct sh_selector {
    char *source;
    enum sh_sel_lang lang;
    enum sh_sel_target target;
    char *attr;  /* lower-cased attribute for SH_SEL_ATTR */
    char *xpath; /* NULL: empty selector = the context node itself */
    xmlXPathCompExprPtr comp;
    struct simple_sel *simple; /* native fast path (match.c) or NULL */
    struct jpath *jpath;       /* JSON */
    struct filter *filters;
    size_t nfilters;
};

/* Like sh_selector_new, but when the expression names no @target the link
 * attribute default_attr (e.g. "href") is taken (follow and paginate). */
struct sh_selector *selector_new_link(const char *expr, enum sh_sel_lang lang,
                                      const char *default_attr, struct sh_err *err);

/* Runs the filter pipeline over v (consumed). */
json_t *selector_filter(const struct sh_selector *sel, json_t *v, struct fctx *c);

/* Resolves ref against base (may be NULL) with CURLU; new string or NULL
 * when either is not a URL. Trailing "#fragment" dropped unless kept. */
char *url_resolve(const char *base, const char *ref, bool keep_fragment);
/* Same, reusing the parsed base kept in *cache (created on first use; the
 * owner frees it with url_cache_free); simple relative references are
 * joined without re-parsing (same result as curl, see selector.c). */
char *url_resolve_cached(void **cache, const char *base, const char *ref, bool keep_fragment);
void url_cache_free(void *cache);

/* ---- compiled configuration tree (dsl.c) ---- */
enum node_kind {
    NODE_VALUE,       /* "sel" */
    NODE_LIST,        /* ["sel"] */
    NODE_OBJECT,      /* {"a": ..., "b": ...} on the same item node */
    NODE_OBJECT_LIST, /* [{"scope": sel, "fields": {...}}] */
    NODE_FOLLOW,      /* {"follow": sel, "field"|"fields": ..., "scope"?} */
};

struct sh_dsl_node {
    enum node_kind kind;
    char *name;                /* field name ("" for the root) */
    char *path;                /* dotted path used in diagnostics */
    int id;                    /* index into per-node counters */
    struct sh_selector *sel;   /* VALUE, LIST: value; FOLLOW: link; OBJECT_LIST: scope */
    struct sh_dsl_node **kids; /* OBJECT, OBJECT_LIST, FOLLOW with fields */
    size_t nkids;
    /* FOLLOW */
    bool follow_all;                  /* [{"follow": ...}]: follow every link */
    struct sh_dsl_node *follow_field; /* "field" form */
    struct sh_selector *follow_scope; /* optional scope on the linked page */
    enum sh_dsl_source_type follow_type;
    int depth; /* follow depth of the node (0 on the listing page) */
};

/* Root-level data hung off struct sh_dsl.root (kind NODE_OBJECT). */
struct dsl_root {
    struct sh_dsl_node node; /* must be first */
    struct sh_selector *scope;
    struct sh_selector *next; /* PAGINATE_NEXT */
    char *param;              /* PAGINATE_PARAM */
    long param_start, param_step;
    int nnodes; /* counter slots: ids 0..nnodes-1 */
    struct sh_dsl_node **by_id;
};

#endif
