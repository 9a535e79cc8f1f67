/* The extraction engine: runs a compiled configuration (shared/dsl.h) over
 * one fetched page and yields items, follow requests and next-page URLs.
 * No I/O: the caller (the scraper service) fetches, the engine extracts.
 *
 * How a scraper drives it:
 *
 *   struct sh_extract *x = sh_extract_page(dsl, body, len, url, ctype, &err);
 *   // follow requests appear as items need linked pages ("born" in the
 *   // DESIGN example); filling one may add more (nested follows, depth <= 3)
 *   for (size_t i = 0; i < sh_extract_follow_count(x); i++) {
 *       const char *u = sh_extract_follow_url(x, i);
 *       ... fetch u (may be done concurrently for all pending i) ...
 *       sh_extract_fill(x, i, body, len, final_url, ctype, &err);  // or
 *       sh_extract_fail(x, i, "HTTP 404");
 *   }
 *   json_t *items = sh_extract_items(x);       // complete once all filled
 *   json_t *next  = sh_extract_next_urls(x);   // absolute URLs to paginate
 *   sh_extract_stats_merge(run_stats, x);      // per-field diagnostics
 *   sh_extract_free(x);
 *
 * An unfilled or failed follow leaves null in its slot. A follow slot's
 * page is parsed as the follow's "type" (default: the type of the page the
 * link was on). A struct sh_extract is not thread-safe (fill slots from one
 * thread); several may run in parallel over one shared struct sh_dsl. Call
 * sh_extract_global_init() once from the main thread before using the
 * engine from threads. Each thread keeps one reusable libxml2 parser
 * context (freed at thread exit). */
#ifndef SHARED_EXTRACT_H
#define SHARED_EXTRACT_H

#include <jansson.h>
#include <stddef.h>

#include "shared/dsl.h"
#include "shared/err.h"

#define SH_EXTRACT_MAX_ITEMS 100000  /* per page; more → SH_ELIMIT */
#define SH_EXTRACT_MAX_FOLLOWS 10000 /* pending follows per page; more are dropped + counted */

struct sh_extract;

/* Initialises libxml2's parser globals (idempotent; call before threads). */
void sh_extract_global_init(void);

/* Extracts one page of the configuration's source. The configured source
 * type (html / json) picks the parser; content_type (may be NULL) only
 * supplies the charset ("text/html; charset=ISO-8859-1"), else the page's
 * <meta> or UTF-8 applies. url is the page's final URL (for "absolute",
 * follow links and relative next links; may be NULL). Returns a new result
 * (free with sh_extract_free) or NULL with err: SH_EPROTO when a JSON page
 * does not parse, SH_ELIMIT past SH_EXTRACT_MAX_ITEMS or a body over 2 GiB.
 * Broken or empty HTML always parses. */
struct sh_extract *sh_extract_page(const struct sh_dsl *dsl, const char *body, size_t len,
                                   const char *url, const char *content_type, struct sh_err *err);
void sh_extract_free(struct sh_extract *x);

/* Pending and done follow requests, index 0..count-1; count grows when a
 * fill adds nested follows. The URL is absolute, borrowed until x is freed. */
size_t sh_extract_follow_count(const struct sh_extract *x);
const char *sh_extract_follow_url(const struct sh_extract *x, size_t i);
/* Depth of the follow (1 = linked from the listing page). */
int sh_extract_follow_depth(const struct sh_extract *x, size_t i);
/* 1 if slot i still waits for fill/fail, else 0. */
int sh_extract_follow_pending(const struct sh_extract *x, size_t i);

/* Fills slot i from the fetched linked page. Returns 0, or -1 with err
 * (SH_ENOTFOUND bad/done slot, SH_EPROTO unparsable JSON: the slot then
 * holds null and counts as an error). */
int sh_extract_fill(struct sh_extract *x, size_t i, const char *body, size_t len, const char *url,
                    const char *content_type, struct sh_err *err);
/* Marks slot i as failed (value stays null); reason is recorded in stats. */
void sh_extract_fail(struct sh_extract *x, size_t i, const char *reason);

/* Borrowed results, valid until sh_extract_free(); json_incref to keep.
 * items: array of objects in page order. next_urls: array of absolute URL
 * strings (usually 0 or 1) for pagination, in document order. */
json_t *sh_extract_items(const struct sh_extract *x);
json_t *sh_extract_next_urls(const struct sh_extract *x);

/* Per-field diagnostics of this page (borrowed):
 * {"items": n, "fields": {"<dotted.path>": {"matches": m, "filled": f,
 *  "errors": e, "first_errors": ["..."]}}, "follows": {"requested", "filled", "failed"}}
 * sh_extract_stats_merge() adds them into acc (an object, initially {}),
 * recomputing "fill_rate" = filled / items per field. */
json_t *sh_extract_stats(const struct sh_extract *x);
void sh_extract_stats_merge(json_t *acc, const struct sh_extract *x);

#endif
