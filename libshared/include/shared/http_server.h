/* HTTP server on libmicrohttpd with routing by method + path pattern.
 *
 * Patterns are literal segments and `{name}` captures ("/configurations/{id}");
 * captures are available in order via sh_http_req_param(). A GET route also
 * answers HEAD. An unknown path gives 404, a known path with another method
 * 405 + Allow. Bodies over max_body give 413 before the handler runs. Routes
 * flagged SH_HTTP_WRITE require `Authorization: Bearer <api_token>` when
 * api_token is set (401 otherwise). GET /health and GET /metrics are built in.
 * Every error body is {"error": "...", "details": [...]}.
 *
 * Threading: threads == 0 runs one thread per connection (handlers may block,
 * e.g. long-polls); threads > 0 runs an epoll thread pool of that size (handlers
 * must not block long). Handlers run on MHD threads, concurrently. */
#ifndef SHARED_HTTP_SERVER_H
#define SHARED_HTTP_SERVER_H

#include <stddef.h>
#include <jansson.h>

#include "shared/blob.h"
#include "shared/err.h"
#include "shared/metrics.h"

struct sh_http_req;  /* borrowed by the handler, valid during the call */
struct sh_http_resp; /* filled by the handler */
struct sh_http_server;

/* Returns nothing: the handler fills resp (default 500 if it sets nothing). */
typedef void (*sh_http_handler)(struct sh_http_req *req, struct sh_http_resp *resp, void *arg);
/* Fills checks (an object, e.g. {"mongo":"ok"}); returns 0 healthy, -1 not. */
typedef int (*sh_http_health_fn)(json_t *checks, void *arg);

enum { SH_HTTP_WRITE = 1 << 0 };

struct sh_http_route {
    const char *method; /* "GET", "POST", "PUT", "DELETE", ... */
    const char *pattern;
    sh_http_handler fn;
    int flags;
};

struct sh_http_server_opts {
    const char *service;                /* for logs and metrics */
    const char *bind_addr;              /* NULL = all interfaces */
    unsigned port;                      /* 0 = any free port (see sh_http_server_port) */
    unsigned threads;                   /* 0 = thread per connection */
    size_t max_body;                    /* 0 = 1 MiB */
    const char *api_token;              /* NULL/"" = write routes open */
    const struct sh_http_route *routes; /* terminated by {NULL} */
    void *arg;                          /* passed to handlers */
    struct sh_metrics *metrics;         /* may be NULL; request count + latency recorded */
    sh_http_health_fn health;           /* may be NULL = always healthy */
    void *health_arg;
};

struct sh_http_server *sh_http_server_start(const struct sh_http_server_opts *opts,
                                            struct sh_err *err);
/* Stops accepting, finishes in-flight requests, frees. NULL is a no-op. */
void sh_http_server_stop(struct sh_http_server *s);
unsigned sh_http_server_port(const struct sh_http_server *s);

/* Request accessors; returned strings are borrowed for the handler's duration. */
const char *sh_http_req_method(const struct sh_http_req *req);
const char *sh_http_req_path(const struct sh_http_req *req);
const char *sh_http_req_param(const struct sh_http_req *req, size_t i); /* NULL past the end */
const char *sh_http_req_query(const struct sh_http_req *req, const char *name);
const char *sh_http_req_header(const struct sh_http_req *req, const char *name);
const char *sh_http_req_body(const struct sh_http_req *req, size_t *ret_len);
/* Calls fn for every query argument in order; stops early when fn returns non-zero. */
int sh_http_req_query_each(const struct sh_http_req *req,
                           int (*fn)(const char *key, const char *value, void *arg), void *arg);
/* Parses the body as JSON. On failure fills resp with 400 naming line/column
 * (or "body is empty") and returns NULL. Caller owns the result. */
json_t *sh_http_req_json(const struct sh_http_req *req, struct sh_http_resp *resp);

/* Response builders. Each replaces any body set before. */
void sh_http_resp_json(struct sh_http_resp *resp, int status, json_t *body); /* steals body */
/* details: stolen, may be NULL (sent as []). */
void sh_http_resp_error(struct sh_http_resp *resp, int status, json_t *details, const char *fmt,
                        ...) __attribute__((format(printf, 4, 5)));
/* Takes ownership of body (malloc'd). */
void sh_http_resp_body(struct sh_http_resp *resp, int status, const char *content_type, char *body,
                       size_t len);
/* Takes a new reference to blob (the caller keeps its own). */
void sh_http_resp_blob(struct sh_http_resp *resp, int status, const char *content_type,
                       struct sh_blob *blob);
void sh_http_resp_status(struct sh_http_resp *resp, int status); /* empty body */
void sh_http_resp_header(struct sh_http_resp *resp, const char *name, const char *value);

#endif
