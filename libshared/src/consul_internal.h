/* Private glue between consul.c (request plumbing, registration, health),
 * consul_kv.c (KV, sessions, locks) and consul_discovery.c (the background
 * discovery cache). Not part of the public libshared API. */
#ifndef SHARED_CONSUL_INTERNAL_H
#define SHARED_CONSUL_INTERNAL_H

#include <stdint.h>

#include "shared/consul.h"
#include "shared/http_client.h"

#define CONSUL_CONNECT_MS 2000L
#define CONSUL_TIMEOUT_MS 10000L
#define CONSUL_MAX_RESPONSE ((size_t)32 << 20)

struct sh_consul {
    char *base;         /* "http://host:port", no trailing slash */
    char *token_header; /* "X-Consul-Token: ..." or NULL */
};

/* Helpers shared by consul.c and consul_kv.c (defined in consul.c). */

/* One request to the agent; path starts with "/v1/". 0 with *ret filled (any status), or -1. */
int sh_consul_call(struct sh_consul *c, const char *method, const char *path, const char *body,
                   long timeout_ms, const int *cancel, struct sh_http_response *ret,
                   struct sh_err *err);
/* 0 for 2xx; else -1 with SH_EUPSTREAM (SH_ENOTFOUND for 404). */
int sh_consul_check_status(const struct sh_http_response *r, const char *what, struct sh_err *err);
/* Body "true" → 1, "false" → 0, else -1 (SH_EPROTO). */
int sh_consul_bool_body(const struct sh_http_response *r, const char *what, struct sh_err *err);
/* X-Consul-Index, 0 when absent or malformed. */
uint64_t sh_consul_index_header(const struct sh_http_response *r);
/* 1 (with SH_ECONFIG) when v is NULL or empty. */
int sh_consul_bad_arg(const char *v, const char *what, struct sh_err *err);
/* KV key with each segment percent-escaped, '/' kept; caller frees. */
char *sh_consul_escape_key(const char *key);
/* "<sep>index=N&wait=Ws" (or "" without an index) and the matching client timeout. */
char *sh_consul_blocking_params(uint64_t wait_index, unsigned wait_s, char sep, long *ret_timeout);

/* sh_consul_health_service with a cancel flag: when *cancel becomes nonzero an
 * in-flight blocking query is aborted within about 0.1 s (SH_EIO). */
int sh_consul_health_service_cancellable(struct sh_consul *c, const char *name, const char *tag,
                                         uint64_t wait_index, unsigned wait_s, const int *cancel,
                                         struct sh_consul_instances *ret, struct sh_err *err);

#endif
