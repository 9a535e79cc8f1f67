/* HTTP API of the orchestrator: GET /status (role, desired vs actual per
 * configuration, last reconcile, recent errors); /health and /metrics come
 * from shared/http_server. Handlers run on server threads and only read
 * ctx under ctx->lock. */
#include <string.h>

#include "orchestrator.h"
#include "shared/log.h"

static void status_handler(struct sh_http_req *req, struct sh_http_resp *resp, void *arg)
{
    struct orch_ctx *ctx = arg;
    json_t *body, *errors;

    (void)req;
    (void)pthread_mutex_lock(&ctx->lock);
    /* errors is appended to in place: copy it; status is replaced, never mutated. */
    errors = ctx->errors ? json_deep_copy(ctx->errors) : json_array();
    body = json_pack("{s:s, s:s, s:s, s:s, s:s, s:{s:f, s:f, s:f, s:s, s:I}, s:O, s:o}", "role",
                     ctx->leader ? "leader" : "standby", "instance", ctx->cfg->instance, "driver",
                     ctx->cfg->driver, "owner", ctx->cfg->owner, "network", ctx->cfg->network,
                     "reconcile", "last_start", ctx->last_start, "last_duration_seconds",
                     ctx->last_duration, "last_trigger_at", ctx->last_trigger_at, "last_trigger",
                     ctx->last_trigger, "passes", (json_int_t)ctx->passes, "state",
                     ctx->status ? ctx->status : json_null(), "errors", errors);
    (void)pthread_mutex_unlock(&ctx->lock);
    if (!body) {
        sh_http_resp_error(resp, 500, NULL, "status could not be rendered");
        return;
    }
    sh_http_resp_json(resp, 200, body);
}

const struct sh_http_route orch_routes[] = {
    {"GET", "/status", status_handler, 0},
    {NULL, NULL, NULL, 0},
};

int orch_health(json_t *checks, void *arg)
{
    struct orch_ctx *ctx = arg;
    struct sh_err err;

    if (sh_docker_ping(ctx->docker, &err) < 0) {
        (void)json_object_set_new(checks, "docker", json_string(err.msg));
        return -1;
    }
    (void)json_object_set_new(checks, "docker", json_string("ok"));
    return 0;
}
