/* Private to the HTTP server (http_server.c + http_message.c): the request
 * and response structures behind the opaque types of shared/http_server.h.
 * A request lives from MHD's URI-log callback to its completion callback and
 * is touched only by the MHD thread serving its connection. */
#ifndef SHARED_HTTP_INTERNAL_H
#define SHARED_HTTP_INTERNAL_H

#include <microhttpd.h>
#include <stdint.h>

#include "shared/buf.h"
#include "shared/http_server.h"

struct http_header {
    char *name, *value;
};

struct sh_http_resp {
    int status; /* 0 = nothing set yet */
    char *content_type;
    char *body; /* owned, or NULL */
    size_t len;
    struct sh_blob *blob; /* one reference, or NULL */
    struct http_header *headers;
    size_t nheaders;
};

struct http_route;
struct sh_http_server;

struct sh_http_req {
    struct sh_http_server *srv;
    struct MHD_Connection *conn;
    char *raw_uri;      /* as received, percent-encoded, with query */
    const char *method; /* MHD's, valid for the request */
    const char *path;   /* MHD's decoded path, valid for the request */
    const struct http_route *route;
    const char *route_label; /* pattern for metrics, never client text */
    char **params;
    size_t nparams;
    struct sh_buf body;
    uint64_t received; /* body bytes seen, including discarded ones */
    int started;       /* first access-handler call done */
    int rejected;      /* resp holds an error decided before the body */
    int answered;      /* a response was queued */
    int status;        /* status queued, for metrics */
    int64_t t0_ns;
    struct sh_http_resp resp;
};

void http_resp_done(struct sh_http_resp *r);
/* Percent-decodes [s, s+n) into a new string; NULL on a bad escape or %00. */
char *http_pct_decode(const char *s, size_t n);
/* 1 if s is valid UTF-8 (no overlongs or surrogates), else 0. */
int http_utf8_valid(const char *s);

#endif
