/* Consul HTTP API client: service registration with an HTTP health check,
 * health lookups, blocking queries, KV (get/put/CAS), sessions and locks, and
 * a discovery cache that keeps the last known healthy instances while Consul is
 * down. Thread-safe (each call is an independent HTTP request). */
#ifndef SHARED_CONSUL_H
#define SHARED_CONSUL_H

#include <stddef.h>
#include <stdint.h>

#include "shared/err.h"

struct sh_consul;

/* addr: "host:port" or "http://host:port" (CONSUL_HTTP_ADDR); token may be NULL. */
struct sh_consul *sh_consul_new(const char *addr, const char *token, struct sh_err *err);
void sh_consul_free(struct sh_consul *c);

struct sh_consul_service {
    const char *name;    /* "datasource" */
    const char *id;      /* unique instance id */
    const char *address; /* advertised address */
    unsigned port;
    const char *const *tags;      /* NULL-terminated, may be NULL */
    const char *check_path;       /* "/health"; NULL = no check */
    const char *check_interval;   /* NULL = "2s" */
    const char *deregister_after; /* DeregisterCriticalServiceAfter; NULL = "1m" */
};
int sh_consul_register(struct sh_consul *c, const struct sh_consul_service *s, struct sh_err *err);
int sh_consul_deregister(struct sh_consul *c, const char *service_id, struct sh_err *err);
/* 1 when the local agent has the service registered, 0 when not, -1 on error. */
int sh_consul_service_registered(struct sh_consul *c, const char *service_id, struct sh_err *err);

struct sh_consul_instance {
    char *id;
    char *address;
    unsigned port;
    char **tags; /* NULL-terminated */
};
struct sh_consul_instances {
    struct sh_consul_instance *v;
    size_t n;
    uint64_t index; /* X-Consul-Index, for the next blocking query */
};
/* /v1/health/service/<name>?passing[&tag=][&index=&wait=]. wait_index 0 = no blocking. */
int sh_consul_health_service(struct sh_consul *c, const char *name, const char *tag,
                             uint64_t wait_index, unsigned wait_s, struct sh_consul_instances *ret,
                             struct sh_err *err);
void sh_consul_instances_done(struct sh_consul_instances *r);

/* KV. get returns 1 found (value owned by caller, NUL-terminated), 0 absent, -1 error.
 * wait_index > 0 makes it a blocking query (returns when the index moves or wait_s passes). */
int sh_consul_kv_get(struct sh_consul *c, const char *key, uint64_t wait_index, unsigned wait_s,
                     char **ret_value, uint64_t *ret_index, struct sh_err *err);
int sh_consul_kv_put(struct sh_consul *c, const char *key, const char *value, struct sh_err *err);
/* 1 written, 0 the index moved (CAS lost), -1 error. cas_index 0 = only if absent. */
int sh_consul_kv_cas(struct sh_consul *c, const char *key, const char *value, uint64_t cas_index,
                     struct sh_err *err);
/* Atomically increments a decimal counter (CAS loop); *ret_value = the new value. */
int sh_consul_kv_incr(struct sh_consul *c, const char *key, uint64_t *ret_value,
                      struct sh_err *err);
int sh_consul_kv_delete(struct sh_consul *c, const char *key, struct sh_err *err);

/* Sessions: ttl like "10s", lock_delay like "1s", behavior "release" or "delete". */
int sh_consul_session_create(struct sh_consul *c, const char *name, const char *ttl,
                             const char *lock_delay, const char *behavior, char **ret_id,
                             struct sh_err *err);
int sh_consul_session_renew(struct sh_consul *c, const char *id, struct sh_err *err);
int sh_consul_session_destroy(struct sh_consul *c, const char *id, struct sh_err *err);
/* 1 acquired (or already held by this session), 0 held by another, -1 error. */
int sh_consul_lock_acquire(struct sh_consul *c, const char *key, const char *session,
                           const char *value, struct sh_err *err);
int sh_consul_lock_release(struct sh_consul *c, const char *key, const char *session,
                           struct sh_err *err);

/* Discovery cache for one service name (+ optional tag): a background thread
 * follows /v1/health/service with blocking queries and keeps the last known
 * passing instances, so lookups keep working while Consul is down. */
struct sh_discovery;
struct sh_discovery *sh_discovery_new(struct sh_consul *c, const char *service, const char *tag);
void sh_discovery_free(struct sh_discovery *d); /* stops the thread; NULL is a no-op */
/* Picks an instance round-robin as "http://addr:port" (caller frees).
 * Returns 0, or -1 with SH_ENOTFOUND when none is known (after waiting up to
 * wait_ms for the first answer). */
int sh_discovery_pick(struct sh_discovery *d, long wait_ms, char **ret_url, struct sh_err *err);

#endif
