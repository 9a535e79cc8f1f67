/* HTTP client on libcurl (easy interface; one call = one request, blocking;
 * successive calls on one thread reuse a keep-alive connection per server).
 *
 * Timeouts always set; response bodies capped at max_response (SH_ELIMIT);
 * bounded retries with exponential backoff + jitter on transport errors and on
 * 429/502/503/504 (Retry-After honoured, capped) — only for idempotent methods
 * unless retry_unsafe is set. Unix-socket transport for the Docker API; TLS
 * client certificates for Docker's tcp+TLS. A returned non-2xx status is NOT an
 * error: the call returns 0 and the caller checks ret->status.
 * Thread-safe: each thread has its own connection and DNS cache (freed when
 * the thread exits); nothing else is shared beyond curl's global init. */
#ifndef SHARED_HTTP_CLIENT_H
#define SHARED_HTTP_CLIENT_H

#include <stddef.h>
#include <jansson.h>

#include "shared/err.h"

struct sh_http_client_opts {
    long connect_timeout_ms;  /* 0 = 2000 */
    long timeout_ms;          /* 0 = 10000; total per attempt */
    size_t max_response;      /* 0 = 16 MiB */
    int retries;              /* extra attempts; 0 = none */
    long backoff_ms;          /* first backoff; 0 = 100 */
    int retry_unsafe;         /* retry POST/PUT/DELETE too (idempotent by design, e.g. batch_id) */
    const char *unix_socket;  /* connect through this socket (Docker); NULL = TCP */
    const char *bearer_token; /* Authorization: Bearer ...; NULL = none */
    const char *user_agent;   /* NULL = "scrapr/<version>" */
    const char *ca_file, *cert_file, *key_file; /* TLS (Docker tcp+TLS); NULL = defaults */
    /* Additive (clients helper): */
    long max_redirects; /* follow up to this many redirects; 0 = don't follow */
    const int *cancel;  /* when non-NULL and *cancel becomes nonzero (read atomically), the
                           transfer aborts within ~0.1 s with SH_EIO and is not retried */
    size_t max_headers; /* cap on the response header block; 0 = 64 KiB (SH_ELIMIT) */
};

struct sh_http_response {
    long status;
    char *body; /* NUL-terminated; owned */
    size_t body_len;
    char *content_type; /* owned, may be NULL */
    char *etag;         /* owned, may be NULL */
    char *location;     /* owned, may be NULL */
    char *retry_after;  /* owned, may be NULL */
    double seconds;     /* total time of the last attempt */
    /* Additive (clients helper): */
    char *headers; /* raw header lines of the final response ("Name: value\r\n"...), owned */
    char *url;     /* effective URL (after redirects), owned */
    int attempts;  /* attempts made (1 + retries used) */
};

/* headers: NULL-terminated array of "Name: value", may be NULL. body may be NULL.
 * Returns 0 with *ret filled (free with sh_http_response_done), or -1:
 * SH_ETIMEOUT, SH_EUPSTREAM (connect/transport), SH_ELIMIT (too big), SH_ECONFIG (bad
 * URL/scheme, CR/LF in a header or token), SH_EIO (cancelled via opts->cancel). */
int sh_http_request(const struct sh_http_client_opts *opts, const char *method, const char *url,
                    const char *const *headers, const char *body, size_t body_len,
                    struct sh_http_response *ret, struct sh_err *err);
/* Convenience: JSON body (not stolen) + "Content-Type: application/json". */
int sh_http_request_json(const struct sh_http_client_opts *opts, const char *method,
                         const char *url, const json_t *body, struct sh_http_response *ret,
                         struct sh_err *err);
void sh_http_response_done(struct sh_http_response *r); /* NULL is a no-op */
/* Value of response header `name` (case-insensitive, first match, trimmed) as a
 * new string (caller frees), or NULL when absent. */
char *sh_http_response_header(const struct sh_http_response *r, const char *name);

/* Percent-encodes s for a URL query or path segment; caller frees. */
char *sh_url_escape(const char *s);

#endif
