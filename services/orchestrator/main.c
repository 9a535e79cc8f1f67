/* scrapr-orchestrator: reads its configuration, wires the Docker client,
 * Consul, leader election, watchers and the HTTP API, and runs the reconcile
 * loop until SIGTERM. Everything else lives in the modules (orchestrator.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "orchestrator.h"
#include "shared/log.h"
#include "shared/service.h"
#include "shared/xalloc.h"

static struct orch_config cfg;

static const struct sh_envconf table[] = {
    {"SCRAPR_DRIVER", SH_ENV_STRING, &cfg.driver, "swarm", 0, 0,
     "swarm (services) or engine (containers)"},
    {"SCRAPR_IMAGE_SCRAPER", SH_ENV_STRING, &cfg.image_scraper, "scrapr/scraper:latest", 0, 0,
     "scraper image"},
    {"SCRAPR_IMAGE_ENDPOINT", SH_ENV_STRING, &cfg.image_endpoint, "scrapr/endpoint:latest", 0, 0,
     "endpoint image"},
    {"SCRAPR_IMAGE_REDIS", SH_ENV_STRING, &cfg.image_redis, "scrapr/redis:latest", 0, 0,
     "redis image"},
    {"SCRAPR_CMD_SCRAPER", SH_ENV_STRING, &cfg.cmd_scraper, NULL, 0, 0,
     "command override (JSON array or words)"},
    {"SCRAPR_CMD_ENDPOINT", SH_ENV_STRING, &cfg.cmd_endpoint, NULL, 0, 0, "command override"},
    {"SCRAPR_CMD_REDIS", SH_ENV_STRING, &cfg.cmd_redis, NULL, 0, 0, "command override"},
    {"SCRAPR_NETWORK", SH_ENV_STRING, &cfg.network, "scrapr", 0, 0, "network for spawned units"},
    {"SCRAPR_OWNER", SH_ENV_STRING, &cfg.owner, "scrapr", 0, 0, "scrapr.owner label value"},
    {"SCRAPR_NAME_PREFIX", SH_ENV_STRING, &cfg.prefix, "scrapr", 0, 0, "unit name prefix"},
    {"SCRAPR_ENDPOINT_PORTS", SH_ENV_STRING, &cfg.endpoint_ports, "8100-8199", 0, 0,
     "published port range LO-HI"},
    {"SCRAPR_PUBLISH_MODE", SH_ENV_STRING, &cfg.publish_mode, "host", 0, 0,
     "host: host-mode ports + DNS round robin (no IPVS needed); ingress: routing mesh + VIPs"},
    {"SCRAPR_PUBLIC_HOST", SH_ENV_STRING, &cfg.public_host, NULL, 0, 0,
     "host in endpoint URLs (swarm host mode: for tasks on the orchestrator's own node)"},
    {"SCRAPR_PUBLIC_HOST_FIXED", SH_ENV_INT, &cfg.public_host_fixed, "0", 0, 1,
     "1: SCRAPR_PUBLIC_HOST for every endpoint, whichever node runs it"},
    {"SCRAPR_SPAWN_CONSUL_ADDR", SH_ENV_STRING, &cfg.spawn_consul, NULL, 0, 0,
     "CONSUL_HTTP_ADDR for spawned units"},
    {"SCRAPR_SPAWN_ENV", SH_ENV_STRING, &cfg.spawn_env, NULL, 0, 0,
     "extra K=V;K=V env for spawned apps"},
    {"SCRAPR_CONFIG_DISCOVERY_URL", SH_ENV_STRING, &cfg.config_discovery_url, NULL, 0, 0,
     "config-discovery URL (skips Consul lookup)"},
    {"SCRAPR_LOCK_KEY", SH_ENV_STRING, &cfg.lock_key, "scrapr/locks/orchestrator", 0, 0,
     "Consul lock key"},
    {"SCRAPR_REVISION_KEY", SH_ENV_STRING, &cfg.revision_key, "scrapr/revisions/configurations", 0,
     0, "Consul key watched"},
    {"SCRAPR_INSTANCE_ID", SH_ENV_STRING, &cfg.instance, NULL, 0, 0,
     "instance id (default hostname-port)"},
    {"SCRAPR_LIMIT_CPUS", SH_ENV_DOUBLE, &cfg.limit_cpus, "0", 0, 64,
     "CPU limit per scraper/endpoint (0 = none)"},
    {"SCRAPR_LIMIT_MEMORY_MB", SH_ENV_INT, &cfg.limit_memory_mb, "0", 0, 1048576,
     "memory limit per scraper/endpoint"},
    {"SCRAPR_REDIS_MEMORY_MB", SH_ENV_INT, &cfg.redis_memory_mb, "0", 0, 1048576,
     "memory limit per Redis"},
    {"SCRAPR_RESYNC_SECONDS", SH_ENV_INT, &cfg.resync_s, "30", 1, 86400, "periodic full reconcile"},
    {"SCRAPR_STOP_TIMEOUT", SH_ENV_INT, &cfg.stop_timeout_s, "10", 0, 600,
     "grace period when stopping containers"},
    {"SCRAPR_SESSION_TTL", SH_ENV_INT, &cfg.session_ttl_s, "10", 10, 86400,
     "Consul session TTL seconds"},
    {"SCRAPR_SPARES", SH_ENV_INT, &cfg.spares, "1", 0, 100,
     "free spare scrapers and endpoints kept started (each), to claim new configurations"},
    {"SCRAPR_SPARE_WAIT_SECONDS", SH_ENV_INT, &cfg.spare_wait_s, "5", 0, 3600,
     "how long a new configuration is left for a running spare to claim"},
    {"SCRAPR_SCRAPER_PORT", SH_ENV_INT, &cfg.scraper_port, "3002", 1, 65535, "scraper PORT"},
    {"SCRAPR_ENDPOINT_PORT", SH_ENV_INT, &cfg.endpoint_port, "3000", 1, 65535, "endpoint PORT"},
    {NULL, 0, NULL, NULL, 0, 0, NULL},
};

static void check_config_or_exit(void)
{
    char *end;

    if (strcmp(cfg.driver, "swarm") != 0 && strcmp(cfg.driver, "engine") != 0) {
        fprintf(stderr, "SCRAPR_DRIVER: must be swarm or engine, got %s\n", cfg.driver);
        exit(1);
    }
    if (strcmp(cfg.publish_mode, "ingress") != 0 && strcmp(cfg.publish_mode, "host") != 0) {
        fprintf(stderr, "SCRAPR_PUBLISH_MODE: must be ingress or host, got %s\n", cfg.publish_mode);
        exit(1);
    }
    cfg.port_lo = strtol(cfg.endpoint_ports, &end, 10);
    cfg.port_hi = *end == '-' ? strtol(end + 1, &end, 10) : cfg.port_lo;
    if (*end || cfg.port_lo < 1 || cfg.port_hi > 65535 || cfg.port_lo > cfg.port_hi) {
        fprintf(stderr, "SCRAPR_ENDPOINT_PORTS: want LO-HI within 1-65535, got %s\n",
                cfg.endpoint_ports);
        exit(1);
    }
    if (strlen(cfg.prefix) > 20 || !*cfg.prefix) {
        fprintf(stderr, "SCRAPR_NAME_PREFIX: 1..20 characters\n");
        exit(1);
    }
}

int main(int argc, char **argv)
{
    struct sh_service_config scfg;
    struct sh_service_opts sopts;
    struct sh_service *svc;
    struct orch_ctx ctx;
    struct orch_leader *leader;
    struct orch_watch *watch;
    struct sh_err err;
    json_t *info = NULL;

    sh_service_config_load_ex(&scfg, "orchestrator", 3004, table, argc, argv);
    check_config_or_exit();
    cfg.consul_addr = scfg.consul_addr;
    cfg.api_token = scfg.api_token;
    cfg.log_level = scfg.log_level;
    cfg.log_format = scfg.log_format;
    if (!cfg.instance || !*cfg.instance) {
        char host[256] = "orchestrator";
        (void)gethostname(host, sizeof(host) - 1);
        free(cfg.instance);
        cfg.instance = sh_xasprintf("%s-%ld", host, scfg.port);
    }

    memset(&ctx, 0, sizeof(ctx));
    ctx.cfg = &cfg;
    ctx.driver = strcmp(cfg.driver, "swarm") == 0 ? &orch_driver_swarm : &orch_driver_engine;
    (void)pthread_mutex_init(&ctx.lock, NULL);
    (void)pthread_cond_init(&ctx.cond, NULL);
    ctx.docker = sh_docker_new(NULL, &err);
    if (!ctx.docker)
        sh_fatal("docker: %s", err.msg);
    if (sh_docker_info(ctx.docker, &info, &err) == 0) {
        const char *addr =
            json_string_value(json_object_get(json_object_get(info, "Swarm"), "NodeAddr"));
        const char *name = json_string_value(json_object_get(info, "Name"));
        const char *nid =
            json_string_value(json_object_get(json_object_get(info, "Swarm"), "NodeID"));
        if (nid && *nid)
            ctx.node_id = sh_xstrdup(nid);
        if (addr && *addr)
            ctx.node_addr = sh_xstrdup(addr);
        else if (name)
            ctx.node_addr = sh_xstrdup(name);
        json_decref(info);
    } else {
        sh_log_warn("docker info (%s): %s", sh_docker_endpoint(ctx.docker), err.msg);
    }

    memset(&sopts, 0, sizeof(sopts));
    sopts.name = "orchestrator";
    sopts.cfg = &scfg;
    sopts.routes = orch_routes;
    sopts.arg = &ctx;
    sopts.threads = 2;
    sopts.health = orch_health;
    sopts.health_arg = &ctx;
    svc = sh_service_start(&sopts, &err);
    if (!svc)
        sh_fatal("start: %s", err.msg);
    ctx.consul = sh_service_consul(svc);
    ctx.metrics = sh_service_metrics(svc);
    if (!cfg.config_discovery_url || !*cfg.config_discovery_url)
        ctx.cd_disc = sh_discovery_new(ctx.consul, "config-discovery", NULL);
    sh_log_info("orchestrator starting driver=%s docker=%s owner=%s network=%s instance=%s",
                cfg.driver, sh_docker_endpoint(ctx.docker), cfg.owner, cfg.network, cfg.instance);

    leader = orch_leader_start(&ctx, sh_service_id(svc));
    watch = orch_watch_start(&ctx);
    orch_reconcile_loop(&ctx);

    sh_log_info("orchestrator stopping");
    orch_watch_stop(watch);
    orch_leader_stop(leader);
    sh_service_stop(svc);
    sh_discovery_free(ctx.cd_disc);
    sh_docker_free(ctx.docker);
    json_decref(ctx.status);
    json_decref(ctx.errors);
    json_decref(ctx.unassigned_since);
    json_decref(ctx.held_ports);
    free(ctx.node_addr);
    free(ctx.node_id);
    (void)pthread_cond_destroy(&ctx.cond);
    (void)pthread_mutex_destroy(&ctx.lock);
    sh_envconf_done(table);
    sh_service_config_done(&scfg);
    return 0;
}
