/* A parsed page as the engine sees it (extract_page.c): an HTML document
 * with its XPath context, or a JSON value, plus per-field counters.
 * Private to libshared's extraction engine. */
#ifndef SHARED_EXTRACT_PAGE_H
#define SHARED_EXTRACT_PAGE_H

#include <jansson.h>
#include <libxml/HTMLparser.h>
#include <libxml/xpath.h>
#include <stdbool.h>

#include "extract_int.h"
#include "shared/buf.h"

struct counter {
    long evals, matches, filled, errors;
    json_t *first_errors; /* up to 3 strings, NULL until the first */
};

/* Counts an error; takes ownership of msg. */
void counter_error(struct counter *c, char *msg);

struct page {
    char *url;  /* where the page was fetched from */
    char *base; /* what its links are relative to: <base href> resolved, else url */
    htmlDocPtr doc;
    xmlXPathContextPtr xctx;
    json_t *json;
    char xerr[256];      /* last XPath runtime error ("" = none) */
    void *base_cache;    /* parsed url for "absolute" (CURLU *) */
    xmlNodePtr *scratch; /* match buffer of page_values */
    size_t nscratch, capscratch;
    struct sh_buf text; /* text extraction buffer */
};

/* Parses body as type (HTML always succeeds; JSON may fail: SH_EPROTO). */
int page_open(struct page *pg, enum sh_dsl_source_type type, const char *body, size_t len,
              const char *url, const char *content_type, struct sh_err *err);
void page_close(struct page *pg);
/* The document node (HTML) or root value (JSON). */
void *page_root(struct page *pg);
/* Nodes selected by sel at ctx (sel NULL: the elements of a JSON array
 * ctx). *ret_nodes is a new array (caller frees, NULL when 0). */
size_t page_nodes(struct page *pg, const struct sh_selector *sel, void *ctx, void ***ret_nodes,
                  struct counter *c);
/* Filtered values of sel at ctx: all → array of non-null values, else the
 * first non-null value or null. Updates c (evals, matches, filled, errors). */
json_t *page_values(struct page *pg, const struct sh_selector *sel, void *ctx, bool all,
                    struct counter *c);
/* url with query parameter param advanced by step (absent → start + step). */
char *page_param_next(const char *url, const char *param, long start, long step);

#endif
