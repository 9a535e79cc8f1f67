/* A spare endpoint: started without CONFIG_ID and with nothing to claim, it
 * waits for a configuration and takes it within milliseconds of its POST.
 *
 * The wait is a Consul blocking query on the KV counter config-discovery bumps
 * on every change (SCRAPR_REVISION_KEY); each move triggers a claim, and a
 * claim is re-tried every claim_wait_s regardless (Consul down, a missed
 * bump). Meanwhile a small server answers /status ("waiting_for_claim") and
 * /health (200 while Redis answers: the spare is ready), and the data routes
 * answer 503. After the claim that server is stopped so main.c starts the
 * real one, registered in Consul with the collection/config tags.
 *
 * Threads: the wait runs on the main thread; the handlers on the server's
 * threads read only ctx->waiting/claim_tries (atomics), cfg and redis
 * (thread-safe). A blocking query cannot be interrupted, so a stop request
 * waits for it (at most claim_wait_s plus Consul's jitter of 1/16). */
#include "endpoint.h"

#include <string.h>
#include <time.h>

#include "shared/kv_watch.h"
#include "shared/log.h"
#include "shared/service.h"

/* ---- the waiting server ---- */

static void spare_status(struct sh_http_req *req, struct sh_http_resp *resp, void *arg)
{
    struct ep_ctx *ctx = arg;
    (void)req;
    sh_http_resp_json(resp, 200,
                      json_pack("{s:s, s:s, s:I}", "state", "waiting_for_claim", "container",
                                ctx->cfg->hostname && *ctx->cfg->hostname ? ctx->cfg->hostname : "",
                                "claim_tries",
                                (json_int_t)__atomic_load_n(&ctx->claim_tries, __ATOMIC_RELAXED)));
}

static void spare_no_data(struct sh_http_req *req, struct sh_http_resp *resp, void *arg)
{
    (void)req;
    (void)arg;
    sh_http_resp_error(resp, 503, NULL, "no collection yet: this endpoint waits for a claim");
    sh_http_resp_header(resp, "Retry-After", "1");
}

static const struct sh_http_route spare_routes[] = {
    {"GET", "/status", spare_status, 0},
    {"GET", "/", spare_no_data, 0},
    {"GET", "/items", spare_no_data, 0},
    {"GET", "/items/{key}", spare_no_data, 0},
    {NULL, NULL, NULL, 0},
};

/* Ready to take a configuration while its Redis answers. */
static int spare_health(json_t *checks, void *arg)
{
    struct ep_ctx *ctx = arg;
    struct sh_err err;
    int ok = sh_redis_ping(ctx->redis, &err) == 0;

    (void)json_object_set_new(checks, "configuration", json_string("waiting for a claim"));
    (void)json_object_set_new(checks, "redis", json_string(ok ? "ok" : err.msg));
    return ok ? 0 : -1;
}

int ep_spare_wait(struct ep_ctx *ctx, const struct sh_service_config *scfg)
{
    struct sh_kv_watch w;
    struct sh_service_opts so;
    struct sh_service *svc;
    struct sh_err err;
    long tries = 0;
    int claimed = 0;

    sh_kv_watch_init(&w, ctx->consul, ctx->cfg->revision_key, ctx->cfg->claim_wait_s);
    memset(&so, 0, sizeof(so));
    so.name = "endpoint";
    so.cfg = scfg;
    so.routes = spare_routes;
    so.arg = ctx;
    so.threads = 1;
    so.max_body = 4096;
    so.health = spare_health;
    so.health_arg = ctx;
    __atomic_store_n(&ctx->waiting, 1, __ATOMIC_RELAXED);
    svc = sh_service_start(&so, &err);
    if (!svc) {
        sh_log_error("http_start_failed error=\"%s\"", err.msg);
        return -1;
    }
    sh_log_info("waiting_for_claim container=%s revision_key=%s", ctx->cfg->hostname,
                ctx->cfg->revision_key);
    sh_kv_watch_prime(&w);
    while (!sh_service_stopping()) {
        tries++;
        __atomic_store_n(&ctx->claim_tries, tries, __ATOMIC_RELAXED);
        if (ep_config_claim(ctx) == 1) {
            claimed = 1;
            break;
        }
        if (sh_kv_watch_wait(&w, sh_service_sleep) < 0)
            break;
    }
    __atomic_store_n(&ctx->waiting, 0, __ATOMIC_RELAXED);
    sh_service_stop(svc);
    if (claimed)
        sh_log_info("claimed id=%s collection=%s container=%s tries=%ld", ctx->conf.id,
                    ctx->conf.collection, ctx->cfg->hostname, tries);
    return claimed ? 0 : -1;
}
