/* scrapr-config-discovery: the configuration store. Thin: env, wiring,
 * threads, shutdown. See config_discovery.h for the modules. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config_discovery.h"
#include "shared/extract.h"
#include "shared/log.h"
#include "shared/service.h"

int main(int argc, char **argv)
{
    struct cd_config cfg = {0};
    const struct sh_envconf table[] = {
        {"MONGO_URL", SH_ENV_STRING, &cfg.mongo_url, "mongodb://127.0.0.1:27017", 0, 0,
         "MongoDB URI (database scrapr unless the URI names one)"},
        {"SCRAPR_CD_REVISION_KEY", SH_ENV_STRING, &cfg.revision_key,
         "scrapr/revisions/configurations", 0, 0,
         "Consul KV counter incremented on every change (watchers block on it)"},
        {"SCRAPR_CD_POST_WAIT_MS", SH_ENV_INT, &cfg.post_wait_ms, "5000", 0, 60000,
         "how long POST /configurations waits for materialisation before answering 202"},
        {"SCRAPR_CD_CAPPED_SIZE", SH_ENV_INT, &cfg.capped_size, "67108864", 4096, 1e12,
         "size in bytes of capped_configurations when it is created"},
        {"SCRAPR_CD_MAX_BODY", SH_ENV_INT, &cfg.max_body, "1048576", 1024, 16777216,
         "largest accepted request body in bytes (413 above)"},
        {"SCRAPR_CD_ENDPOINT_TTL", SH_ENV_INT, &cfg.endpoint_ttl, "300", 1, 31536000,
         "ttl of an endpoint configuration whose scraper configuration has none"},
        {"SCRAPR_CD_AWAIT_MS", SH_ENV_INT, &cfg.await_ms, "1000", 10, 60000,
         "maxAwaitTimeMS of the tailable cursor (bounds shutdown latency)"},
        {"SCRAPR_CD_BUMP_RETRY_MS", SH_ENV_INT, &cfg.bump_retry_ms, "1000", 10, 600000,
         "retry period of the Consul revision bump while Consul is down"},
        {"SCRAPR_CD_POLL_MS", SH_ENV_INT, &cfg.poll_ms, "1000", 10, 60000,
         "safety-net poll of capped_configurations (the tailable cursor wakes the tailer)"},
        {"SCRAPR_CD_GAP_GRACE_MS", SH_ENV_INT, &cfg.gap_grace_ms, "3000", 100, 600000,
         "how long the tailer waits for a sequence number whose insert has not committed"},
        {"SCRAPR_CD_WATCH", SH_ENV_STRING, &cfg.watch_mode, "auto", 0, 0,
         "wake the tailer with a tailable awaitData cursor: on, off, or auto (off on FerretDB)"},
        {NULL, 0, NULL, NULL, 0, 0, NULL},
    };
    struct sh_service_config scfg = {0};
    struct sh_service *svc;
    struct cd_ctx ctx;
    struct sh_err err;
    static const char *const tags[] = {"api", NULL};

    sh_envconf_load_or_exit(table);
    if (strcmp(cfg.watch_mode, "auto") == 0)
        cfg.watch = -1;
    else if (strcmp(cfg.watch_mode, "on") == 0)
        cfg.watch = 1;
    else if (strcmp(cfg.watch_mode, "off") == 0)
        cfg.watch = 0;
    else {
        fprintf(stderr, "SCRAPR_CD_WATCH: '%s' is not auto, on or off\n", cfg.watch_mode);
        sh_envconf_done(table);
        return 1;
    }
    sh_service_config_load(&scfg, "config-discovery", 3003, argc, argv);
    /* The DSL validator compiles selectors with libxml2 on handler threads:
     * its globals must be set up once, here, before any thread exists. */
    sh_extract_global_init();
    if (cd_ctx_init(&ctx, &cfg, &err) != 0)
        sh_fatal("mongo_setup_failed error=\"%s\"", err.msg);
    /* Collections may not be creatable yet (Mongo still starting): retry. */
    while (cd_store_init(&ctx, &err) != 0) {
        sh_log_warn("store_init_failed error=\"%s\" retry_ms=1000", err.msg);
        if (sh_service_sleep(1000))
            return 0;
    }
    struct sh_service_opts opts = {
        .name = "config-discovery",
        .cfg = &scfg,
        .routes = cd_routes,
        .arg = &ctx,
        .threads = 0,
        .max_body = (size_t)cfg.max_body,
        .health = cd_health,
        .health_arg = &ctx,
        .tags = tags,
    };
    svc = sh_service_start(&opts, &err);
    if (!svc)
        sh_fatal("service_start_failed error=\"%s\"", err.msg);
    ctx.consul = sh_service_consul(svc);
    ctx.metrics = sh_service_metrics(svc);
    if (cd_threads_start(&ctx, &err) != 0)
        sh_fatal("threads_start_failed error=\"%s\"", err.msg);
    sh_log_info("started port=%u db=%s post_wait_ms=%ld", sh_service_port(svc), ctx.db,
                cfg.post_wait_ms);
    sh_service_wait(svc);
    sh_log_info("stopping");
    /* Our threads use the service's metrics and Consul client, which
     * sh_service_stop frees: stop them first. POSTs still in flight then
     * materialise their own documents (see api.c). */
    cd_threads_stop(&ctx);
    sh_service_stop(svc);
    cd_ctx_done(&ctx);
    sh_service_config_done(&scfg);
    sh_envconf_done(table);
    return 0;
}
