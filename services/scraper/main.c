/* scrapr-scraper: scrapes one configuration every ttl and delivers the items
 * to the datasource through a Redis outbox. `--once CONFIG.json` is the dry
 * run. main() only parses, wires and runs (see loop.c for the service). */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "shared/consul.h"
#include "shared/envconf.h"
#include "shared/log.h"
#include "shared/service.h"
#include "shared/xalloc.h"
#include "scraper.h"

static volatile sig_atomic_t early_stop; /* before sh_service_start installs its handlers */

static void on_early_signal(int sig)
{
    (void)sig;
    early_stop = 1;
}

static int early_stopping(void)
{
    return early_stop;
}

/* The scraper's own variables (the common ones come from service.h). */
static void env_table(struct scr_config *c, struct sh_envconf *table, size_t cap)
{
    const struct sh_envconf t[] = {
        {"SCRAPR_ALLOW_PRIVATE_TARGETS", SH_ENV_BOOL, &c->allow_private, "0", 0, 0,
         "fetch loopback/private/link-local targets (tests, demo)"},
        {"CONFIG_ID", SH_ENV_STRING, &c->config_id, NULL, 0, 0,
         "configuration to scrape; unset = claim a free one"},
        {"REDIS_URL", SH_ENV_STRING, &c->redis_url, "redis://127.0.0.1:6379", 0, 0,
         "Redis for the config cache and the outbox"},
        {"SCRAPR_DATASOURCE_URL", SH_ENV_STRING, &c->datasource_url, NULL, 0, 0,
         "datasource base URL; unset = Consul service datasource"},
        {"SCRAPR_CONFIG_DISCOVERY_URL", SH_ENV_STRING, &c->configd_url, NULL, 0, 0,
         "config-discovery base URL; unset = Consul service config-discovery"},
        {"HOSTNAME", SH_ENV_STRING, &c->container, "scraper", 0, 0, "container name for claims"},
        {"SCRAPR_MAX_BODY", SH_ENV_INT, &c->max_body, "8388608", 1024, 1073741824.0,
         "largest page body in bytes"},
        {"SCRAPR_FETCH_RETRIES", SH_ENV_INT, &c->retries, "3", 0, 10,
         "retries on 429/5xx/transport errors"},
        {"SCRAPR_OUTBOX_MAX_BATCHES", SH_ENV_INT, &c->outbox_max, "10000", 1, 10000000,
         "outbox bound; runs past it are refused"},
        {"SCRAPR_BATCH_ITEMS", SH_ENV_INT, &c->batch_items, "500", 1, 100000, "items per batch"},
        {"SCRAPR_MAX_FOLLOWS", SH_ENV_INT, &c->max_follows, "2000", 1, 1000000,
         "linked pages fetched per run"},
        {"SCRAPR_MIN_INTERVAL", SH_ENV_INT, &c->min_interval_s, "1", 0, 86400,
         "minimum seconds between runs"},
        {"SCRAPR_REVISION_KEY", SH_ENV_STRING, &c->revision_key, "scrapr/revisions/configurations",
         0, 0, "Consul KV counter a spare watches to claim as soon as a configuration appears"},
        {"SCRAPR_CLAIM_WAIT", SH_ENV_INT, &c->claim_wait_s, "3", 1, 60,
         "seconds a spare waits on Consul before it re-tries a claim anyway"},
        {NULL, 0, NULL, NULL, 0, 0, NULL},
    };
    if (sizeof(t) / sizeof(t[0]) > cap)
        abort();
    memcpy(table, t, sizeof(t));
}

int main(int argc, char **argv)
{
    struct scr_config cfg = {0};
    struct sh_envconf table[20];
    env_table(&cfg, table, sizeof(table) / sizeof(table[0]));
    if (argc == 3 && strcmp(argv[1], "--once") == 0) {
        (void)sh_log_setup("scraper", getenv("LOG_LEVEL"), NULL);
        sh_envconf_load_or_exit(table);
        struct scr_fetch_opts base = {0};
        base.allow_private = cfg.allow_private;
        base.max_body = (size_t)cfg.max_body;
        base.retries = (int)cfg.retries;
        base.max_redirects = -1;
        int rc = scr_once_main(argv[2], &base);
        sh_envconf_done(table);
        return rc;
    }
    struct sh_service_config svc;
    sh_service_config_load_ex(&svc, "scraper", 3002, table, argc, argv);

    struct sh_err err = {0};
    struct sh_consul *consul = sh_consul_new(svc.consul_addr, NULL, &err);
    if (!consul)
        sh_fatal("consul: %s", err.msg);
    struct scr_ctx *ctx = scr_ctx_new(&cfg, consul, svc.api_token, &err);
    if (!ctx)
        sh_fatal("REDIS_URL: %s", err.msg);

    /* The Consul tags name the collection, so the configuration comes first.
     * A scraper with nothing to load (no CONFIG_ID, no claim remembered, none
     * free) is a spare: it serves /status and /health while it waits for a
     * claim, then starts again under its tags. */
    (void)signal(SIGTERM, on_early_signal);
    (void)signal(SIGINT, on_early_signal);
    struct sh_service *s = NULL;
    static const struct sh_http_route routes[] = {
        {"GET", "/status", scr_status_handler, 0},
        {NULL, NULL, NULL, 0},
    };
    struct sh_service_opts so = {
        .name = "scraper",
        .cfg = &svc,
        .routes = routes,
        .arg = ctx,
        .threads = 2,
        .health = scr_health,
        .health_arg = ctx,
    };
    if (scr_ctx_load_config(ctx, &err) < 0 && scr_ctx_unclaimed(ctx)) {
        s = sh_service_start(&so, &err);
        if (!s)
            sh_fatal("service: %s", err.msg);
        if (early_stopping())
            sh_service_request_stop();
        int claimed = scr_ctx_wait_claim(ctx, sh_service_stopping, sh_service_sleep) == 0;
        /* Restarted so that Consul carries the collection/config tags. */
        sh_service_stop(s);
        s = NULL;
        if (!claimed) {
            scr_ctx_free(ctx);
            sh_consul_free(consul);
            sh_envconf_done(table);
            sh_service_config_done(&svc);
            return 0;
        }
    } else if (!scr_ctx_collection(ctx)) {
        while (scr_ctx_load_config(ctx, &err) < 0) {
            sh_log_warn("config_wait error=\"%s\"", err.msg);
            for (int i = 0; i < 20 && !early_stopping(); i++)
                (void)usleep(100000);
            if (early_stopping()) {
                scr_ctx_free(ctx);
                sh_consul_free(consul);
                return 0;
            }
        }
    }
    char *tag_coll = sh_xasprintf("collection=%s", scr_ctx_collection(ctx));
    char *tag_cfg = sh_xasprintf("config=%s", scr_ctx_config_id(ctx));
    const char *tags[] = {tag_coll, tag_cfg, NULL};
    so.tags = tags;
    s = sh_service_start(&so, &err);
    if (!s)
        sh_fatal("service: %s", err.msg);
    if (early_stopping())
        sh_service_request_stop();
    if (scr_ctx_attach(ctx, sh_service_metrics(s), &err) < 0)
        sh_fatal("outbox: %s", err.msg);
    scr_ctx_loop(ctx, sh_service_stopping, sh_service_sleep);
    sh_log_info("stopping");
    scr_ctx_detach(ctx);
    sh_service_stop(s);
    scr_ctx_free(ctx);
    sh_consul_free(consul);
    free(tag_coll);
    free(tag_cfg);
    sh_envconf_done(table);
    sh_service_config_done(&svc);
    return 0;
}
