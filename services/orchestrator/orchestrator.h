/* scrapr-orchestrator, private interfaces between its modules.
 *
 * desired.c  — configurations from config-discovery → desired units (pure
 *              builder + the HTTP fetch/PUT-back)
 * actual.c   — units read back from the engine by label (via a driver)
 * reconcile.c — the pure diff (desired vs actual → actions) and one pass
 * apply.c    — runs a pass's actions on worker threads (busy units, backoff)
 * driver_engine.c / driver_swarm.c — plain containers / Swarm services
 * leader.c   — Consul session + lock; standby waits on the lock key
 * watch.c    — Consul blocking query, Docker events, periodic resync
 * api.c      — GET /status, metrics, health
 *
 * A "unit" is one container (engine) or one service (swarm): a configuration's
 * scraper replica, an endpoint, or the Redis of either. Its name is
 * deterministic (<prefix>-<type>-<config id>[-<replica>][-redis]), so a
 * restarted orchestrator finds what it made and never duplicates it.
 *
 * Spares (<prefix>-spare-<type>-<k>[-redis]) are started without CONFIG_ID:
 * they claim a new configuration themselves, within milliseconds, and the
 * orchestrator adopts the spare a configuration's `container` names. */
#ifndef ORCHESTRATOR_H
#define ORCHESTRATOR_H

#include <pthread.h>
#include <stdint.h>
#include <jansson.h>

#include "shared/consul.h"
#include "shared/docker.h"
#include "shared/err.h"
#include "shared/http_server.h"
#include "shared/metrics.h"

#define ORCH_LABEL_OWNER "scrapr.owner"
#define ORCH_LABEL_CONFIG_ID "scrapr.config-id"
#define ORCH_LABEL_TYPE "scrapr.type"
#define ORCH_LABEL_COLLECTION "scrapr.collection"
#define ORCH_LABEL_VERSION "scrapr.version"
#define ORCH_LABEL_ROLE "scrapr.role"
#define ORCH_LABEL_REPLICA "scrapr.replica"
#define ORCH_LABEL_CONFIG_HASH "scrapr.config-hash"
#define ORCH_LABEL_SPEC_HASH "scrapr.spec-hash"
#define ORCH_LABEL_SPARE "scrapr.spare"

/* Everything read from the environment at start; const afterwards. */
struct orch_config {
    char *driver; /* "swarm" | "engine" */
    char *image_scraper, *image_endpoint, *image_redis;
    char *cmd_scraper, *cmd_endpoint, *cmd_redis; /* command overrides; NULL = image's */
    char *network;
    char *owner;          /* value of scrapr.owner on everything we make */
    char *prefix;         /* unit name prefix */
    char *endpoint_ports; /* "8100-8199" */
    char *publish_mode;   /* swarm: "ingress" (routing mesh) or "host" */
    long port_lo, port_hi;
    char *public_host;      /* host in recorded endpoint URLs; NULL = node address */
    long public_host_fixed; /* 1: public_host for every endpoint, wherever its task runs */
    char *spawn_consul;     /* CONSUL_HTTP_ADDR given to spawned units; NULL = ours */
    char *spawn_env;        /* extra "K=V;K=V" for spawned scrapers/endpoints */
    char *config_discovery_url;
    char *lock_key, *revision_key;
    char *instance; /* this orchestrator's id in the lock value */
    double limit_cpus;
    long limit_memory_mb, redis_memory_mb;
    long resync_s, stop_timeout_s, scraper_port, endpoint_port;
    long session_ttl_s;
    long spares;       /* free spare scrapers and endpoints kept started (each) */
    long spare_wait_s; /* how long a new configuration is left for a spare to claim */
    /* from the common service config (borrowed) */
    const char *consul_addr, *api_token, *log_level, *log_format;
};

enum orch_role { ORCH_ROLE_APP = 0, ORCH_ROLE_REDIS = 1 };

struct orch_unit {
    char *name;
    char *config_id;
    char *type; /* "scraper" | "endpoint" */
    char *collection;
    int role;
    int replica;
    long version;
    char *config_hash;
    char *spec_hash;
    /* desired side */
    json_t *env;   /* array of "K=V" */
    long replicas; /* swarm service replicas (endpoint app); 1 otherwise */
    long port;     /* published port (endpoint app), 0 = none */
    int spare;     /* a pre-started unit without CONFIG_ID (see desired.c) */
    int relabel;   /* swarm spare: service labels follow the adopting configuration */
    /* actual side */
    char *id;
    uint64_t swarm_version;
    char *state; /* engine: container State; swarm: "running" */
    long running_tasks;
    /* swarm: node of a running task on a ready node, and that node's address
     * (Status.Addr); NULL when no task runs on a live node (or unknown). */
    char *node_id, *node_addr;
};

struct orch_units {
    struct orch_unit *v;
    size_t n, cap;
};

void orch_units_init(struct orch_units *u);
void orch_units_done(struct orch_units *u);
struct orch_unit *orch_units_add(struct orch_units *u); /* zeroed slot */
const struct orch_unit *orch_units_find(const struct orch_units *u, const char *name);
/* Deep copy (dst is overwritten; free with orch_unit_done). */
void orch_unit_copy(struct orch_unit *dst, const struct orch_unit *src);
void orch_unit_done(struct orch_unit *x);

/* ---- desired.c ---- */

/* Hash of the user-visible part of a configuration (everything but _id,
 * container, url, version, created_at, updated_at), 16 hex chars in ret (17 bytes). */
void orch_config_hash(const json_t *config, char ret[17]);
/* 16-hex FNV-1a-64 of a string. */
void orch_hash_str(const char *s, char ret[17]);
/* Builds the desired units of every configuration. actual (may be NULL)
 * supplies ports already published so endpoints keep theirs. Configurations
 * that cannot be placed are reported in *ret_problems (new array of
 * {"config_id","error"}), never silently dropped. */
void orch_desired_build(const struct orch_config *cfg, const json_t *configs,
                        const struct orch_units *actual, struct orch_units *ret,
                        json_t **ret_problems);
/* Unit name helpers (caller frees). */
char *orch_unit_name(const struct orch_config *cfg, const char *type, const char *config_id,
                     int replica, int role);
/* Comma-separated names of a configuration's desired app units (its
 * `container`), NULL when it has none. */
char *orch_assigned_container(const struct orch_units *desired, const char *config_id);
/* Spare index k when name is <prefix>-spare-<type>-<k> (the app), else -1. */
long orch_spare_index(const struct orch_config *cfg, const char *type, const char *name);

/* Fetches every configuration ({"configurations": [...]} paged). Returns 0 and a new array. */
int orch_desired_fetch(const struct orch_config *cfg, struct sh_discovery *disc, json_t **ret,
                       struct sh_err *err);
/* PUTs config back with container (and url) set; config is not modified. */
int orch_desired_record(const struct orch_config *cfg, struct sh_discovery *disc,
                        const json_t *config, const char *container, const char *url,
                        struct sh_err *err);

/* ---- drivers ---- */
struct orch_driver {
    const char *name;
    /* Reads every unit carrying our owner label. */
    int (*list)(struct sh_docker *d, const struct orch_config *cfg, struct orch_units *ret,
                struct sh_err *err);
    int (*create)(struct sh_docker *d, const struct orch_config *cfg, const struct orch_unit *u,
                  struct sh_err *err);
    /* Brings actual `a` to desired `u` (swarm: service update; engine: replace). */
    int (*update)(struct sh_docker *d, const struct orch_config *cfg, const struct orch_unit *u,
                  const struct orch_unit *a, struct sh_err *err);
    int (*remove)(struct sh_docker *d, const struct orch_config *cfg, const struct orch_unit *a,
                  struct sh_err *err);
    /* 1 when the actual unit is broken and must be replaced (engine: exited container). */
    int (*broken)(const struct orch_unit *a);
    int (*ensure_network)(struct sh_docker *d, const struct orch_config *cfg, struct sh_err *err);
    /* Waits until a created/updated unit runs (swarm: its task started); NULL
     * when create already returns a running unit (engine). */
    int (*wait_running)(struct sh_docker *d, const struct orch_config *cfg,
                        const struct orch_unit *u, long timeout_ms, struct sh_err *err);
};
extern const struct orch_driver orch_driver_engine;
extern const struct orch_driver orch_driver_swarm;

/* Shared by both drivers: labels object and command array of a unit (new refs).
 * Container labels are the unit labels, except that a spare's stay those of a
 * free spare, so that adopting it never restarts it. */
json_t *orch_unit_labels(const struct orch_config *cfg, const struct orch_unit *u);
json_t *orch_unit_container_labels(const struct orch_config *cfg, const struct orch_unit *u);
json_t *orch_unit_command(const struct orch_config *cfg, const struct orch_unit *u);
const char *orch_unit_image(const struct orch_config *cfg, const struct orch_unit *u);
/* Fills the label-derived fields of an actual unit from a labels object. */
void orch_unit_from_labels(struct orch_unit *a, const char *name, const json_t *labels);
/* {"label": ["scrapr.owner=<owner>"]} (new ref). */
json_t *orch_owner_filter(const struct orch_config *cfg);

/* ---- reconcile.c ---- */
enum orch_action_kind { ORCH_CREATE, ORCH_UPDATE, ORCH_REPLACE, ORCH_REMOVE };
struct orch_action {
    int kind;
    const struct orch_unit *desired; /* NULL for REMOVE */
    const struct orch_unit *actual;  /* NULL for CREATE */
};
struct orch_actions {
    struct orch_action *v;
    size_t n, cap;
};
void orch_actions_done(struct orch_actions *a);
/* Pure diff: removals first (they free ports and names), then creates/updates,
 * Redis units before their apps. broken (may be NULL) flags actual units to replace. */
void orch_diff(const struct orch_units *desired, const struct orch_units *actual,
               int (*broken)(const struct orch_unit *), struct orch_actions *ret);
const char *orch_action_name(int kind);

struct orch_ctx;
/* One reconcile pass (leader only): reads both sides, diffs, hands the
 * actions to ctx->applier (it does not wait for them) and records
 * assignments. Returns 0, or -1 when the pass could not run (config-discovery
 * or engine unreachable); per-unit failures are kept as recent errors, retried
 * with backoff, and do not fail the pass. */
int orch_reconcile_once(struct orch_ctx *ctx, struct sh_err *err);

/* ---- runtime context ---- */
struct orch_ctx {
    const struct orch_config *cfg;
    const struct orch_driver *driver;
    struct sh_docker *docker;
    struct sh_consul *consul;
    struct sh_discovery *cd_disc; /* config-discovery lookup; NULL with an explicit URL */
    struct sh_metrics *metrics;

    pthread_mutex_t lock; /* guards everything below */
    pthread_cond_t cond;
    int leader;
    int dirty;                        /* a trigger arrived since the last pass */
    double trigger_at;                /* monotonic seconds of the first pending trigger */
    char trigger[32];                 /* what triggered it */
    double last_start, last_duration; /* wall clock seconds */
    double last_trigger_at;           /* wall clock of the trigger the last pass served */
    char last_trigger[32];
    long passes;
    json_t *status;               /* last pass: per-configuration desired vs actual */
    json_t *errors;               /* ring of recent errors [{"time","error"}] */
    json_t *held_ports;           /* {"<port>": monotonic time} an endpoint found taken */
    char *node_addr;              /* engine/swarm node address for URLs */
    char *node_id;                /* swarm: our own node's ID (Swarm.NodeID), or NULL */
    int url_pending;              /* reconcile thread only: an endpoint's node is not known yet */
    int network_ready;            /* reconcile thread only: SCRAPR_NETWORK known to exist */
    int spare_pending;            /* reconcile thread only: a configuration waits for a spare */
    json_t *unassigned_since;     /* reconcile thread only: {config id: monotonic first seen} */
    struct orch_applier *applier; /* owned by orch_reconcile_loop */
};

void orch_ctx_error(struct orch_ctx *ctx, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Remembers that the engine refused port as taken by someone else (apply.c):
 * for a while, endpoints are placed on other ports (reconcile.c). */
void orch_port_held(struct orch_ctx *ctx, long port);
/* Marks the state dirty and wakes the reconcile loop. */
void orch_trigger(struct orch_ctx *ctx, const char *why);
int orch_is_leader(struct orch_ctx *ctx);
double orch_now_mono(void);
double orch_now_wall(void);

/* ---- apply.c ---- */
/* Runs a pass's actions on worker threads (see apply.c for the rules). */
struct orch_applier;
struct orch_applier *orch_applier_start(struct orch_ctx *ctx);
/* Drops queued jobs, waits for running ones; NULL is a no-op. */
void orch_applier_stop(struct orch_applier *a);
/* Reconcile thread, at the start of a pass: snapshots the busy units and arms
 * due retries. Returns the number of failed steps since the previous call. */
int orch_applier_pass_begin(struct orch_applier *a);
/* 1 when the unit must be left alone by this pass (action in flight, or
 * backing off after a failure). */
int orch_applier_blocked(struct orch_applier *a, const char *name);
/* Queues first, then (may be NULL) on the same worker; copies the units. */
void orch_applier_submit(struct orch_applier *a, const struct orch_action *first,
                         const struct orch_action *then);
/* Monotonic time of the earliest failed unit's retry, 0 for none. */
double orch_applier_next_retry(struct orch_applier *a);
/* Forgets backoffs (leadership lost: the next leader starts afresh). */
void orch_applier_forget_failures(struct orch_applier *a);
/* Names of the units with an action queued or running (new array). */
json_t *orch_applier_in_flight(struct orch_applier *a);

/* ---- leader.c ---- */
struct orch_leader;
struct orch_leader *orch_leader_start(struct orch_ctx *ctx, const char *service_id);
void orch_leader_stop(struct orch_leader *l); /* releases the lock; NULL is a no-op */

/* ---- watch.c ---- */
struct orch_watch;
struct orch_watch *orch_watch_start(struct orch_ctx *ctx);
void orch_watch_stop(struct orch_watch *w);
/* The reconcile loop: runs passes while leader on triggers or every resync_s. */
void orch_reconcile_loop(struct orch_ctx *ctx);

/* ---- api.c ---- */
extern const struct sh_http_route orch_routes[];
int orch_health(json_t *checks, void *arg);

#endif
