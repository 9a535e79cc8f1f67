/* Selector expressions of the scraper DSL:
 *
 *   <css selector | xpath:<expr> | json path>[@attr|@html|@text] | filter | filter:arg ...
 *
 * The selector part is CSS (compiled by shared/css.h) or raw XPath after the
 * prefix "xpath:" for HTML sources, or a path ("a.b[0].c", "items[*].name")
 * for JSON sources. An empty selector with "@attr" means the scope node's
 * own attribute (x-ray semantics). Filters (see docs/config.md) form a
 * pipeline applied to each extracted value.
 *
 * A compiled selector is immutable and may be used by several threads at
 * once (glibc's regexec is thread-safe; libxml2 only caches the resolved
 * function pointer inside a compiled XPath on its first evaluation, the same
 * value from every thread, a benign race). */
#ifndef SHARED_SELECTOR_H
#define SHARED_SELECTOR_H

#include <jansson.h>
#include <stddef.h>

#include "shared/err.h"

enum sh_sel_lang {
    SH_SEL_HTML = 0, /* CSS or xpath: over an HTML document */
    SH_SEL_JSON = 1, /* path over a JSON document */
};

enum sh_sel_target {
    SH_SEL_TEXT = 0, /* normalised whitespace text content (default) */
    SH_SEL_HTML_INNER,
    SH_SEL_ATTR,
};

struct sh_selector;

/* Parses and compiles expr. Returns a new selector (free with
 * sh_selector_free) or NULL with err = SH_ECONFIG and a message naming the
 * position ("expected ']' at position 7 in 'a[href'"). */
struct sh_selector *sh_selector_new(const char *expr, enum sh_sel_lang lang, struct sh_err *err);
void sh_selector_free(struct sh_selector *sel);

/* Borrowed views, valid while sel lives. */
const char *sh_selector_source(const struct sh_selector *sel); /* the expression as given */
const char *sh_selector_xpath(const struct sh_selector *sel);  /* NULL for JSON / empty */
enum sh_sel_target sh_selector_target(const struct sh_selector *sel);
const char *sh_selector_attr(const struct sh_selector *sel); /* NULL unless SH_SEL_ATTR */
size_t sh_selector_filter_count(const struct sh_selector *sel);
/* 1 when the selector has the given attribute / filter, else 0. */
int sh_selector_has_filter(const struct sh_selector *sel, const char *name);

/* Names of the known filters, NULL-terminated (for docs and suggestions). */
const char *const *sh_selector_filter_names(void);

#endif
