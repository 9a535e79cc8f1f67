/* scrapr-endpoint: the public API of one collection.
 * Parses the environment, obtains the configuration, loads the Redis copy,
 * starts the HTTP server (epoll thread pool) and the sync threads, ticks once
 * a second until SIGTERM/SIGINT, then shuts down in reverse order. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "endpoint.h"
#include "shared/envconf.h"
#include "shared/log.h"
#include "shared/service.h"
#include "shared/xalloc.h"

int main(int argc, char **argv)
{
    struct ep_config cfg;
    struct sh_service_config scfg;
    struct sh_service_opts so;
    struct sh_service *svc;
    struct sh_err err;
    struct ep_ctx ctx;
    char *tags[3] = {NULL, NULL, NULL};
    long cores;
    int rc = 1;
    const struct sh_envconf table[] = {
        {"CONFIG_ID", SH_ENV_STRING, &cfg.config_id, "", 0, 0,
         "configuration to serve (empty: claim a free endpoint configuration)"},
        {"REDIS_URL", SH_ENV_STRING, &cfg.redis_url, "redis://127.0.0.1:6379", 0, 0,
         "this endpoint's Redis (config cache and data copy)"},
        {"SCRAPR_CONFIG_DISCOVERY_URL", SH_ENV_STRING, &cfg.config_discovery, "", 0, 0,
         "config-discovery base URL (empty: find it in Consul)"},
        {"SCRAPR_DATASOURCE_URL", SH_ENV_STRING, &cfg.datasource, "", 0, 0,
         "datasource base URL (empty: find it in Consul)"},
        {"EP_THREADS", SH_ENV_INT, &cfg.threads, "0", 0, 256,
         "HTTP worker threads, epoll mode (0: one per core)"},
        {"EP_MAX_LIMIT", SH_ENV_INT, &cfg.max_limit, "10000", 1, 1000000,
         "largest page (and the default limit)"},
        {"EP_MAX_ITEMS", SH_ENV_INT, &cfg.max_items, "1000000", 1, 100000000,
         "most items kept in memory"},
        {"EP_WAIT", SH_ENV_INT, &cfg.wait_s, "25", 1, 60, "datasource long-poll wait (s)"},
        {"EP_GZIP_MIN", SH_ENV_INT, &cfg.gzip_min, "1024", 0, 1 << 30,
         "gzip filtered responses from this size (bytes)"},
        {"EP_PERSIST_MS", SH_ENV_INT, &cfg.persist_ms, "200", 0, 60000,
         "minimum gap between snapshot writes to Redis (ms)"},
        {"EP_PAGE_LIMIT", SH_ENV_INT, &cfg.page_limit, "10000", 1, 10000,
         "items per page asked of the datasource"},
        {"HOSTNAME", SH_ENV_STRING, &cfg.hostname, "", 0, 0,
         "container name a claim records (empty: SERVICE_ADDRESS, else the host name)"},
        {"SCRAPR_REVISION_KEY", SH_ENV_STRING, &cfg.revision_key, "scrapr/revisions/configurations",
         0, 0, "Consul KV counter a spare watches to claim as soon as a configuration appears"},
        {"SCRAPR_CLAIM_WAIT", SH_ENV_INT, &cfg.claim_wait_s, "3", 1, 60,
         "seconds a spare waits on Consul before it re-tries a claim anyway"},
        {NULL, 0, NULL, NULL, 0, 0, NULL},
    };

    memset(&cfg, 0, sizeof(cfg));
    memset(&ctx, 0, sizeof(ctx));
    sh_envconf_load_or_exit(table);
    if (argc > 1 && !strcmp(argv[1], "--check-config"))
        sh_envconf_print(table); /* the common part and "configuration OK" follow */
    sh_service_config_load(&scfg, "endpoint", 3000, argc, argv);
    cores = sysconf(_SC_NPROCESSORS_ONLN);
    if (cfg.threads == 0)
        cfg.threads = cores > 0 ? cores : 2;

    ctx.cfg = &cfg;
    ctx.service_address = scfg.address;
    ctx.api_token = scfg.api_token;
    ep_store_init(&ctx.store);
    (void)pthread_mutex_init(&ctx.persist_mu, NULL);
    (void)pthread_cond_init(&ctx.persist_cv, NULL);
    ctx.redis = sh_redis_new(cfg.redis_url, &err);
    if (!ctx.redis)
        sh_fatal("REDIS_URL: %s", err.msg);
    /* Consul also carries the revision a spare watches for its claim. */
    ctx.consul = sh_consul_new(scfg.consul_addr, NULL, &err);
    if (!ctx.consul)
        sh_fatal("CONSUL_HTTP_ADDR: %s", err.msg);
    if (!*cfg.datasource)
        ctx.ds_discovery = sh_discovery_new(ctx.consul, "datasource", NULL);
    if (!*cfg.config_discovery)
        ctx.cd_discovery = sh_discovery_new(ctx.consul, "config-discovery", NULL);

    switch (ep_config_acquire(&ctx)) {
    case 0:
        break;
    case 1: /* a spare: wait for a claim, then start as the claimed endpoint */
        if (ep_spare_wait(&ctx, &scfg) == 0)
            break;
        /* fall through */
    default:
        rc = sh_service_stopping() ? 0 : 1; /* stopped before a configuration was found */
        goto out;
    }
    (void)ep_sync_load_redis(&ctx);

    tags[0] = sh_xasprintf("collection=%s", ctx.conf.collection);
    tags[1] = sh_xasprintf("config=%s", ctx.conf.id);
    memset(&so, 0, sizeof(so));
    so.name = "endpoint";
    so.cfg = &scfg;
    so.routes = ep_routes;
    so.arg = &ctx;
    so.threads = (unsigned)cfg.threads;
    so.max_body = 4096; /* read-only API: no bodies */
    so.health = ep_health;
    so.health_arg = &ctx;
    so.tags = (const char *const *)tags;
    svc = sh_service_start(&so, &err);
    if (!svc) {
        sh_log_error("http_start_failed error=\"%s\"", err.msg);
        goto out;
    }
    ctx.metrics = sh_service_metrics(svc);
    sh_log_info("endpoint_started collection=%s config=%s port=%u threads=%ld mode=epoll",
                ctx.conf.collection, ctx.conf.id, sh_service_port(svc), cfg.threads);
    if (ep_sync_start(&ctx, &err) < 0) {
        sh_log_error("sync_start_failed error=\"%s\"", err.msg);
        ep_sync_stop(&ctx);
        sh_service_stop(svc);
        goto out;
    }
    while (!sh_service_stopping()) {
        ep_tick(&ctx);
        (void)sh_service_sleep(1000);
    }
    sh_log_info("endpoint_stopping");
    ep_sync_stop(&ctx);
    sh_service_stop(svc);
    rc = 0;
out:
    free(tags[0]);
    free(tags[1]);
    sh_discovery_free(ctx.ds_discovery);
    sh_discovery_free(ctx.cd_discovery);
    sh_consul_free(ctx.consul);
    sh_redis_free(ctx.redis);
    ep_snapshot_unref(ctx.persist_pending);
    ep_store_done(&ctx.store);
    ep_conf_doc_done(&ctx.conf);
    (void)pthread_mutex_destroy(&ctx.persist_mu);
    (void)pthread_cond_destroy(&ctx.persist_cv);
    sh_service_config_done(&scfg);
    sh_envconf_done(table);
    return rc;
}
