/* Docker Engine API client (libcurl), API version pinned to v1.41.
 *
 * Endpoint as the docker CLI reads it: DOCKER_HOST `unix:///path` (default
 * unix:///var/run/docker.sock) or `tcp://host:port`; with DOCKER_TLS_VERIFY
 * set (non-empty, not "0") the tcp endpoint is spoken as https with
 * DOCKER_CERT_PATH/{ca.pem,cert.pem,key.pem} (default ~/.docker).
 *
 * Every call is one blocking request. A non-2xx answer is an error: the
 * engine's {"message": ...} is put into err with the code SH_ENOTFOUND (404),
 * SH_ECONFLICT (409) or SH_EUPSTREAM (anything else); transport failures are
 * SH_EUPSTREAM / SH_ETIMEOUT. Responses are capped (SH_ELIMIT). JSON results
 * are new references the caller decrefs; they are untouched on failure.
 *
 * Thread-safe: plain requests use pooled curl handles (kept-alive connections)
 * and may run in parallel; sh_docker_events() uses its own handle, so a stream
 * may run in one thread while others issue requests. */
#ifndef SHARED_DOCKER_H
#define SHARED_DOCKER_H

#include <stdint.h>
#include <jansson.h>

#include "shared/err.h"

#define SH_DOCKER_API_VERSION "v1.41"

struct sh_docker;

/* host: DOCKER_HOST syntax; NULL = the environment (DOCKER_HOST, DOCKER_TLS_VERIFY,
 * DOCKER_CERT_PATH). Returns NULL with SH_ECONFIG for an unsupported host. */
struct sh_docker *sh_docker_new(const char *host, struct sh_err *err);
void sh_docker_free(struct sh_docker *d); /* NULL is a no-op */
/* Human-readable endpoint ("unix:///var/run/docker.sock", "https://h:2376"); borrowed. */
const char *sh_docker_endpoint(const struct sh_docker *d);

/* Generic request: path relative to the versioned root ("/containers/json?all=1").
 * body may be NULL (not stolen). *ret_body (may be NULL to ignore) receives the
 * decoded JSON answer or NULL for an empty one; *ret_status (may be NULL) the
 * HTTP status, also on failure when the engine answered. 304 counts as success. */
int sh_docker_request(struct sh_docker *d, const char *method, const char *path, const json_t *body,
                      long timeout_ms, json_t **ret_body, long *ret_status, struct sh_err *err);

/* GET /_ping. */
int sh_docker_ping(struct sh_docker *d, struct sh_err *err);
/* GET /info (Swarm.LocalNodeState, Swarm.NodeAddr, ...). */
int sh_docker_info(struct sh_docker *d, json_t **ret, struct sh_err *err);

/* Filters: a JSON object like {"label": ["scrapr.owner=x"]} (borrowed, may be NULL),
 * sent URL-encoded as the `filters` query argument. */

/* GET /containers/json?all=1&filters=... → array of container summaries. */
int sh_docker_containers_list(struct sh_docker *d, const json_t *filters, json_t **ret,
                              struct sh_err *err);
/* POST /containers/create?name=...; spec is the create body. *ret_id owned by caller. */
int sh_docker_container_create(struct sh_docker *d, const char *name, const json_t *spec,
                               char **ret_id, struct sh_err *err);
int sh_docker_container_start(struct sh_docker *d, const char *id, struct sh_err *err);
/* Stops with a grace period of timeout_s seconds (then SIGKILL). Already stopped is success. */
int sh_docker_container_stop(struct sh_docker *d, const char *id, int timeout_s,
                             struct sh_err *err);
/* DELETE /containers/{id}?force=&v=1 (anonymous volumes go too). */
int sh_docker_container_remove(struct sh_docker *d, const char *id, int force, struct sh_err *err);
int sh_docker_container_inspect(struct sh_docker *d, const char *id, json_t **ret,
                                struct sh_err *err);

/* GET /networks/{name}; SH_ENOTFOUND when absent. */
int sh_docker_network_inspect(struct sh_docker *d, const char *name, json_t **ret,
                              struct sh_err *err);
/* Creates the network unless one of that name exists. driver "bridge" or "overlay";
 * attachable for overlay; labels (borrowed, may be NULL) a JSON object.
 * Returns 1 created, 0 already there, -1 error. */
int sh_docker_network_ensure(struct sh_docker *d, const char *name, const char *driver,
                             int attachable, const json_t *labels, struct sh_err *err);
int sh_docker_network_remove(struct sh_docker *d, const char *name, struct sh_err *err);

/* Swarm services. */
int sh_docker_services_list(struct sh_docker *d, const json_t *filters, json_t **ret,
                            struct sh_err *err);
int sh_docker_service_inspect(struct sh_docker *d, const char *id, json_t **ret,
                              struct sh_err *err);
int sh_docker_service_create(struct sh_docker *d, const json_t *spec, char **ret_id,
                             struct sh_err *err);
/* version: the service's Version.Index as read (optimistic concurrency; a stale
 * one fails with SH_EUPSTREAM "update out of sequence"). */
int sh_docker_service_update(struct sh_docker *d, const char *id, uint64_t version,
                             const json_t *spec, struct sh_err *err);
int sh_docker_service_remove(struct sh_docker *d, const char *id, struct sh_err *err);
/* GET /tasks?filters=... */
int sh_docker_tasks_list(struct sh_docker *d, const json_t *filters, json_t **ret,
                         struct sh_err *err);
/* Swarm nodes (managers only): GET /nodes?filters=... → array; GET /nodes/{id}
 * (Status.State "ready"|"down", Status.Addr, ManagerStatus.Addr "ip:2377"). */
int sh_docker_nodes_list(struct sh_docker *d, const json_t *filters, json_t **ret,
                         struct sh_err *err);
int sh_docker_node_inspect(struct sh_docker *d, const char *id, json_t **ret, struct sh_err *err);

/* Event callback: ev is one decoded event (borrowed, valid during the call), or
 * NULL for a periodic tick (about once a second, also while no event arrives) so
 * the caller can decide to stop. Return non-zero to end the stream. */
typedef int (*sh_docker_event_fn)(const json_t *ev, void *arg);

/* Streams GET /events?filters=...[&since=] (since: unix seconds, 0 = now) and calls
 * fn per event until fn returns non-zero (→ 0) or the stream fails (→ -1).
 * Each event is capped at 1 MiB. Uses its own connection. */
int sh_docker_events(struct sh_docker *d, const json_t *filters, long long since,
                     sh_docker_event_fn fn, void *arg, struct sh_err *err);

#endif
