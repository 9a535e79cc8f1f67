/* Engine driver: one plain container per unit on a single Docker host.
 *
 * Containers get restart policy unless-stopped (the daemon restarts a crashed
 * one by itself; the reconciler replaces one that is gone or stopped), join
 * the user-defined bridge network SCRAPR_NETWORK (so a scraper reaches its
 * Redis by container name), and an endpoint publishes its port with a host
 * port binding. An update is a replace (containers are immutable). Called
 * from the reconcile thread only. */
#include <stdlib.h>
#include <string.h>

#include "orchestrator.h"
#include "shared/xalloc.h"

static long unit_target_port(const struct orch_config *cfg, const struct orch_unit *u)
{
    return strcmp(u->type, "endpoint") == 0 ? cfg->endpoint_port : cfg->scraper_port;
}

static int engine_list(struct sh_docker *d, const struct orch_config *cfg, struct orch_units *ret,
                       struct sh_err *err)
{
    json_t *f = orch_owner_filter(cfg), *list = NULL, *c;
    size_t i;
    int rc = sh_docker_containers_list(d, f, &list, err);

    json_decref(f);
    if (rc < 0)
        return -1;
    orch_units_init(ret);
    json_array_foreach(list, i, c)
    {
        const char *name = json_string_value(json_array_get(json_object_get(c, "Names"), 0));
        struct orch_unit *a;
        json_t *p;
        size_t k;

        if (!name)
            continue;
        a = orch_units_add(ret);
        orch_unit_from_labels(a, name, json_object_get(c, "Labels"));
        a->id = sh_xstrdup(json_string_value(json_object_get(c, "Id")));
        a->state = sh_xstrdup(json_string_value(json_object_get(c, "State"))
                                  ? json_string_value(json_object_get(c, "State"))
                                  : "unknown");
        a->running_tasks = strcmp(a->state, "running") == 0;
        json_array_foreach(json_object_get(c, "Ports"), k, p)
        {
            json_int_t pub = json_integer_value(json_object_get(p, "PublicPort"));
            if (pub > 0 && a->role == ORCH_ROLE_APP) {
                a->port = (long)pub;
                break;
            }
        }
    }
    json_decref(list);
    return 0;
}

static json_t *engine_spec(const struct orch_config *cfg, const struct orch_unit *u)
{
    json_t *labels = orch_unit_container_labels(cfg, u);
    json_t *cmd = orch_unit_command(cfg, u);
    json_t *host, *spec, *ep;
    char pk[32];
    long mem = u->role == ORCH_ROLE_REDIS ? cfg->redis_memory_mb : cfg->limit_memory_mb;

    (void)snprintf(pk, sizeof(pk), "%ld/tcp", unit_target_port(cfg, u));
    host = json_pack("{s:{s:s}, s:s}", "RestartPolicy", "Name", "unless-stopped", "NetworkMode",
                     cfg->network);
    if (cfg->limit_cpus > 0 && u->role == ORCH_ROLE_APP)
        (void)json_object_set_new(host, "NanoCpus",
                                  json_integer((json_int_t)(cfg->limit_cpus * 1e9)));
    if (mem > 0)
        (void)json_object_set_new(host, "Memory", json_integer((json_int_t)mem << 20));
    spec = json_pack("{s:s, s:s, s:o, s:o}", "Image", orch_unit_image(cfg, u), "Hostname", u->name,
                     "Labels", labels, "HostConfig", host);
    if (cmd)
        (void)json_object_set_new(spec, "Cmd", cmd);
    if (u->env)
        (void)json_object_set(spec, "Env", u->env);
    if (u->port > 0) {
        char hp[24];
        (void)snprintf(hp, sizeof(hp), "%ld", u->port);
        (void)json_object_set_new(spec, "ExposedPorts", json_pack("{s:{}}", pk));
        (void)json_object_set_new(host, "PortBindings",
                                  json_pack("{s:[{s:s}]}", pk, "HostPort", hp));
    }
    ep = json_pack("{s:{s:{s:[s]}}}", "EndpointsConfig", cfg->network, "Aliases", u->name);
    (void)json_object_set_new(spec, "NetworkingConfig", ep);
    return spec;
}

static int engine_remove(struct sh_docker *d, const struct orch_config *cfg,
                         const struct orch_unit *a, struct sh_err *err)
{
    const char *ref = a->id ? a->id : a->name;
    struct sh_err lerr;

    sh_err_clear(&lerr);
    if (sh_docker_container_stop(d, ref, (int)cfg->stop_timeout_s, &lerr) < 0 &&
        lerr.code == SH_ENOTFOUND)
        return 0;
    if (sh_docker_container_remove(d, ref, 1, err) < 0) {
        if (err && err->code == SH_ENOTFOUND)
            return 0;
        return -1;
    }
    return 0;
}

static int engine_create(struct sh_docker *d, const struct orch_config *cfg,
                         const struct orch_unit *u, struct sh_err *err)
{
    json_t *spec = engine_spec(cfg, u);
    char *id = NULL;
    int rc = sh_docker_container_create(d, u->name, spec, &id, err);

    json_decref(spec);
    if (rc < 0)
        return -1;
    if (sh_docker_container_start(d, id, err) < 0) {
        /* Leave nothing half-made (e.g. the host port is taken): the next pass retries. */
        (void)sh_docker_container_remove(d, id, 1, NULL);
        free(id);
        return -1;
    }
    free(id);
    return 0;
}

static int engine_update(struct sh_docker *d, const struct orch_config *cfg,
                         const struct orch_unit *u, const struct orch_unit *a, struct sh_err *err)
{
    if (engine_remove(d, cfg, a, err) < 0)
        return -1;
    return engine_create(d, cfg, u, err);
}

static int engine_broken(const struct orch_unit *a)
{
    return !a->state || (strcmp(a->state, "running") != 0 && strcmp(a->state, "restarting") != 0);
}

static int engine_network(struct sh_docker *d, const struct orch_config *cfg, struct sh_err *err)
{
    json_t *labels = json_pack("{s:s}", ORCH_LABEL_OWNER, cfg->owner);
    int rc = sh_docker_network_ensure(d, cfg->network, "bridge", 0, labels, err);

    json_decref(labels);
    return rc < 0 ? -1 : 0;
}

const struct orch_driver orch_driver_engine = {
    .name = "engine",
    .list = engine_list,
    .create = engine_create,
    .update = engine_update,
    .remove = engine_remove,
    .broken = engine_broken,
    .ensure_network = engine_network,
};
