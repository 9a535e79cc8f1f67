/* Swarm driver: one Swarm-mode service per unit on an attachable overlay
 * network. Swarm itself restarts failed tasks (restart policy `any`) and
 * spreads them over nodes (placement preference spread on node.id); a changed
 * spec is applied with `service update` (rolling, start-first, rollback on
 * failure). Endpoints publish their port through the routing mesh (ingress),
 * so every node answers on it, or (SCRAPR_PUBLISH_MODE=host, the default) on
 * the node running the task only: list() then reports that node's address so
 * the recorded URL follows the task. Called from the reconcile thread only. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "orchestrator.h"
#include "shared/service.h"
#include "shared/xalloc.h"

/* Address users reach a node on: Status.Addr; a manager may report 0.0.0.0
 * there, then the host part of ManagerStatus.Addr ("ip:2377"). New string or NULL. */
static char *node_address(const json_t *node)
{
    const char *a = json_string_value(json_object_get(json_object_get(node, "Status"), "Addr"));
    const char *m =
        json_string_value(json_object_get(json_object_get(node, "ManagerStatus"), "Addr"));

    if (a && *a && strcmp(a, "0.0.0.0") != 0)
        return sh_xstrdup(a);
    if (m && *m) {
        const char *colon = strrchr(m, ':');
        size_t n = colon ? (size_t)(colon - m) : strlen(m);
        if (n > 0 && !(n == 7 && strncmp(m, "0.0.0.0", 7) == 0))
            return sh_xstrndup(m, n);
    }
    return NULL;
}

/* The node object of id when that node is ready (borrowed), else NULL. */
static const json_t *ready_node(const json_t *nodes, const char *id)
{
    size_t i;
    const json_t *n;

    json_array_foreach(nodes, i, n)
    {
        const char *nid = json_string_value(json_object_get(n, "ID"));
        const char *st = json_string_value(json_object_get(json_object_get(n, "Status"), "State"));
        if (nid && strcmp(nid, id) == 0)
            return st && strcmp(st, "ready") == 0 ? n : NULL;
    }
    return NULL;
}

static int swarm_list(struct sh_docker *d, const struct orch_config *cfg, struct orch_units *ret,
                      struct sh_err *err)
{
    json_t *f = orch_owner_filter(cfg), *list = NULL, *tasks = NULL, *nodes = NULL, *s, *t;
    json_t *tf = json_pack("{s:[s]}", "desired-state", "running");
    size_t i, k;
    int rc = sh_docker_services_list(d, f, &list, err);
    int host_mode = cfg->publish_mode && strcmp(cfg->publish_mode, "host") == 0;

    json_decref(f);
    if (rc == 0 && sh_docker_tasks_list(d, tf, &tasks, err) < 0) {
        json_decref(list);
        rc = -1;
    }
    json_decref(tf);
    if (rc < 0)
        return -1;
    /* Host-mode ports answer only on the node running the task: find it. Not
     * fatal: without it the endpoint's URL is left as recorded. */
    if (host_mode) {
        struct sh_err nerr;
        sh_err_clear(&nerr);
        if (sh_docker_nodes_list(d, NULL, &nodes, &nerr) < 0)
            nodes = NULL;
    }
    orch_units_init(ret);
    json_array_foreach(list, i, s)
    {
        json_t *spec = json_object_get(s, "Spec");
        const char *name = json_string_value(json_object_get(spec, "Name"));
        const char *id = json_string_value(json_object_get(s, "ID"));
        json_t *ports = json_object_get(json_object_get(s, "Endpoint"), "Ports");
        struct orch_unit *a;

        if (!name || !id)
            continue;
        a = orch_units_add(ret);
        orch_unit_from_labels(a, name, json_object_get(spec, "Labels"));
        a->id = sh_xstrdup(id);
        a->swarm_version =
            (uint64_t)json_integer_value(json_object_get(json_object_get(s, "Version"), "Index"));
        a->state = sh_xstrdup("service");
        if (!json_array_size(ports))
            ports = json_object_get(json_object_get(spec, "EndpointSpec"), "Ports");
        if (json_array_size(ports))
            a->port = (long)json_integer_value(
                json_object_get(json_array_get(ports, 0), "PublishedPort"));
        json_array_foreach(tasks, k, t)
        {
            const char *sid = json_string_value(json_object_get(t, "ServiceID"));
            const char *st =
                json_string_value(json_object_get(json_object_get(t, "Status"), "State"));
            const char *nid = json_string_value(json_object_get(t, "NodeID"));
            const json_t *node;
            if (!sid || !st || strcmp(sid, id) != 0 || strcmp(st, "running") != 0)
                continue;
            a->running_tasks++;
            /* A task still "running" on a node that is down is not reachable. */
            if (!a->node_id && nid && nodes && (node = ready_node(nodes, nid)) != NULL) {
                a->node_addr = node_address(node);
                if (a->node_addr)
                    a->node_id = sh_xstrdup(nid);
            }
        }
    }
    json_decref(list);
    json_decref(tasks);
    json_decref(nodes);
    return 0;
}

static json_t *swarm_spec(const struct orch_config *cfg, const struct orch_unit *u)
{
    json_t *labels = orch_unit_labels(cfg, u);
    json_t *cmd = orch_unit_command(cfg, u);
    json_t *cs, *tt, *spec, *limits;
    long mem = u->role == ORCH_ROLE_REDIS ? cfg->redis_memory_mb : cfg->limit_memory_mb;
    long target = strcmp(u->type, "endpoint") == 0 ? cfg->endpoint_port : cfg->scraper_port;
    int dnsrr = cfg->publish_mode && strcmp(cfg->publish_mode, "host") == 0;
    /* A host-mode port cannot be held by an old and a new task at once. */
    int host_ports = u->port > 0 && dnsrr;

    /* Service labels follow an adopting configuration; the task's container
     * labels do not, so adoption updates the service without a restart. */
    cs = json_pack("{s:s, s:s, s:o}", "Image", orch_unit_image(cfg, u), "Hostname", u->name,
                   "Labels", orch_unit_container_labels(cfg, u));
    if (cmd)
        (void)json_object_set_new(cs, "Args", cmd);
    if (u->env)
        (void)json_object_set(cs, "Env", u->env);
    limits = json_object();
    if (cfg->limit_cpus > 0 && u->role == ORCH_ROLE_APP)
        (void)json_object_set_new(limits, "NanoCPUs",
                                  json_integer((json_int_t)(cfg->limit_cpus * 1e9)));
    if (mem > 0)
        (void)json_object_set_new(limits, "MemoryBytes", json_integer((json_int_t)mem << 20));
    tt = json_pack("{s:o, s:{s:s, s:I, s:I}, s:{s:[{s:{s:s}}]}, s:{s:o}, s:[{s:s, s:[s]}]}",
                   "ContainerSpec", cs, "RestartPolicy", "Condition", "any", "Delay",
                   (json_int_t)1000000000, "MaxAttempts", (json_int_t)0, "Placement", "Preferences",
                   "Spread", "SpreadDescriptor", "node.id", "Resources", "Limits", limits,
                   "Networks", "Target", cfg->network, "Aliases", u->name);
    spec = json_pack("{s:s, s:o, s:o, s:{s:{s:I}}, s:{s:I, s:s, s:s}}", "Name", u->name, "Labels",
                     labels, "TaskTemplate", tt, "Mode", "Replicated", "Replicas",
                     (json_int_t)u->replicas, "UpdateConfig", "Parallelism", (json_int_t)1, "Order",
                     u->role == ORCH_ROLE_REDIS || host_ports ? "stop-first" : "start-first",
                     "FailureAction", "rollback");
    /* Host publishing goes with DNS round robin for every unit: both work without
     * the kernel's IPVS, which Swarm's VIPs and ingress routing mesh need. */
    if (u->port > 0)
        (void)json_object_set_new(
            spec, "EndpointSpec",
            json_pack("{s:s, s:[{s:s, s:I, s:I, s:s}]}", "Mode", dnsrr ? "dnsrr" : "vip", "Ports",
                      "Protocol", "tcp", "TargetPort", (json_int_t)target, "PublishedPort",
                      (json_int_t)u->port, "PublishMode", dnsrr ? "host" : "ingress"));
    else if (dnsrr)
        (void)json_object_set_new(spec, "EndpointSpec", json_pack("{s:s}", "Mode", "dnsrr"));
    return spec;
}

static int swarm_create(struct sh_docker *d, const struct orch_config *cfg,
                        const struct orch_unit *u, struct sh_err *err)
{
    json_t *spec = swarm_spec(cfg, u);
    int rc = sh_docker_service_create(d, spec, NULL, err);

    json_decref(spec);
    return rc;
}

static int swarm_update(struct sh_docker *d, const struct orch_config *cfg,
                        const struct orch_unit *u, const struct orch_unit *a, struct sh_err *err)
{
    json_t *spec = swarm_spec(cfg, u);
    int rc = sh_docker_service_update(d, a->id, a->swarm_version, spec, err);

    json_decref(spec);
    return rc;
}

static int swarm_remove(struct sh_docker *d, const struct orch_config *cfg,
                        const struct orch_unit *a, struct sh_err *err)
{
    (void)cfg;
    if (sh_docker_service_remove(d, a->id ? a->id : a->name, err) < 0) {
        if (err && err->code == SH_ENOTFOUND)
            return 0;
        return -1;
    }
    return 0;
}

/* Service create returns before Swarm has scheduled and started the task.
 * Polls the service's tasks (100 ms) until one runs, one failed, or
 * timeout_ms passed (SH_ETIMEOUT). */
static int swarm_wait_running(struct sh_docker *d, const struct orch_config *cfg,
                              const struct orch_unit *u, long timeout_ms, struct sh_err *err)
{
    json_t *f = json_pack("{s:[s], s:[s]}", "service", u->name, "desired-state", "running");
    double end = orch_now_mono() + (double)timeout_ms / 1000.0;
    int rc = 1;

    (void)cfg;
    while (rc > 0) {
        json_t *tasks = NULL, *t;
        size_t i;
        struct timespec ts = {0, 100 * 1000000L};

        if (sh_docker_tasks_list(d, f, &tasks, err) < 0) {
            rc = -1;
            break;
        }
        json_array_foreach(tasks, i, t)
        {
            const char *st =
                json_string_value(json_object_get(json_object_get(t, "Status"), "State"));
            if (st && strcmp(st, "running") == 0)
                rc = 0;
            else if (st && rc > 0 && (strcmp(st, "failed") == 0 || strcmp(st, "rejected") == 0)) {
                sh_err_set(err, SH_EUPSTREAM, "task of %s is %s", u->name, st);
                rc = -1;
            }
        }
        json_decref(tasks);
        if (rc <= 0)
            break;
        if (orch_now_mono() >= end || sh_service_stopping()) {
            sh_err_set(err, SH_ETIMEOUT, "no running task of %s after %ld ms", u->name, timeout_ms);
            rc = -1;
            break;
        }
        (void)nanosleep(&ts, NULL);
    }
    json_decref(f);
    return rc;
}

static int swarm_broken(const struct orch_unit *a)
{
    (void)a;
    return 0; /* Swarm reschedules failed tasks itself */
}

static int swarm_network(struct sh_docker *d, const struct orch_config *cfg, struct sh_err *err)
{
    json_t *labels = json_pack("{s:s}", ORCH_LABEL_OWNER, cfg->owner);
    int rc = sh_docker_network_ensure(d, cfg->network, "overlay", 1, labels, err);

    json_decref(labels);
    return rc < 0 ? -1 : 0;
}

const struct orch_driver orch_driver_swarm = {
    .name = "swarm",
    .list = swarm_list,
    .create = swarm_create,
    .update = swarm_update,
    .remove = swarm_remove,
    .broken = swarm_broken,
    .ensure_network = swarm_network,
    .wait_running = swarm_wait_running,
};
