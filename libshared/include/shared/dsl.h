/* The scraper configuration DSL (docs/config.md is the user reference):
 * validation of a configuration document and its compilation into an
 * immutable struct sh_dsl that shared/extract.h runs over pages.
 *
 * sh_dsl_validate() is the one validator config-discovery (400 + details)
 * and the scraper use. It reports every problem, each with the JSON path of
 * the offending value ("$.fields.born.follow") and a message. Stored-document
 * fields (_id, type, container, version, created_at, updated_at, url) are
 * accepted; type "endpoint" documents are checked against the smaller
 * endpoint schema.
 *
 * Pure (no I/O, no logging) and thread-safe; a compiled struct sh_dsl is
 * read-only and may be shared between threads. */
#ifndef SHARED_DSL_H
#define SHARED_DSL_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "shared/err.h"

/* Defaults and limits (also in docs/config.md). */
#define SH_DSL_TTL_DEFAULT 300
#define SH_DSL_TTL_MAX 86400
#define SH_DSL_LIMIT_DEFAULT 10 /* pages per run when paginating */
#define SH_DSL_LIMIT_MAX 1000
#define SH_DSL_FOLLOW_DEPTH_MAX 3
#define SH_DSL_REPLICAS_MAX 20

/* Validates config. Returns the number of problems (0 = valid) and sets
 * *ret_problems to a new array (caller decrefs, also when empty) of
 * {"path": "$.fields.born.follow", "message": "..."}. */
int sh_dsl_validate(const json_t *config, json_t **ret_problems);

enum sh_dsl_source_type {
    SH_DSL_SOURCE_HTML = 0,
    SH_DSL_SOURCE_JSON = 1,
};

enum sh_dsl_paginate_kind {
    SH_DSL_PAGINATE_NONE = 0,
    SH_DSL_PAGINATE_NEXT,  /* selector / path yielding the next page's URL */
    SH_DSL_PAGINATE_PARAM, /* query parameter counter: start, start+step, ... */
};

struct sh_dsl_politeness {
    double rate;     /* requests per second per host, (0, 100]; default 1 */
    int burst;       /* token bucket size, 1..100; default 5 */
    bool robots;     /* honour robots.txt; default true */
    int concurrency; /* parallel requests per scraper, 1..64; default 4 */
};

struct sh_dsl_node; /* compiled field tree, private to the engine */

/* A compiled scraper configuration. Public fields are read-only; strings
 * and json_t values are owned by the struct. */
struct sh_dsl {
    char *id;         /* "_id" or NULL */
    char *collection; /* never NULL */
    int ttl;          /* seconds */
    int replicas;
    enum sh_dsl_source_type source_type;
    char *url;        /* source.url */
    char *method;     /* "GET" (default) or "POST" */
    char *body;       /* POST body or NULL */
    json_t *headers;  /* object name → string value (never NULL; may be empty) */
    char *cookies;    /* "a=1; b=2" or NULL */
    char *user_agent; /* NULL = the scraper's default */
    int timeout;      /* seconds per request, default 30 */
    int limit;        /* maximum pages per run (1 when there is no pagination) */
    enum sh_dsl_paginate_kind paginate;
    json_t *key; /* array of field names (never NULL; may be empty) */
    struct sh_dsl_politeness politeness;
    struct sh_dsl_node *root; /* private */
};

/* Validates and compiles config. Returns a new struct sh_dsl (free with
 * sh_dsl_free) or NULL with err = SH_ECONFIG whose message is the first
 * problem ("$.scope: expected ']' ..."), plus the count of the others.
 * Endpoint configurations are refused (they have nothing to scrape). */
struct sh_dsl *sh_dsl_compile(const json_t *config, struct sh_err *err);
void sh_dsl_free(struct sh_dsl *dsl);

/* Levenshtein-based suggestion: the candidate (NULL-terminated list) within
 * edit distance 2 of word, or NULL. Exposed for the CLI's messages. */
const char *sh_dsl_suggest(const char *word, const char *const *candidates);

#endif
