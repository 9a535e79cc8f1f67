/* scrapr-datasource: argv + env config, logging, MongoDB pool, wiring of the
 * HTTP API (api.c) and the tailer thread (tailer.c), signals. Nothing else. */
#include <stdlib.h>
#include <string.h>

#include "datasource.h"
#include "shared/log.h"
#include "shared/mongo.h"
#include "shared/service.h"

static struct ds_config cfg;

/* ingest -> tailer hand-off bounds (handoff.c): a few rounds' worth */
#define HANDOFF_DOCS 256
#define HANDOFF_BYTES ((size_t)32 << 20)

static const struct sh_envconf table[] = {
    {"MONGO_URL", SH_ENV_STRING, &cfg.mongo_url, "mongodb://127.0.0.1:27017", 0, 0,
     "MongoDB URI (database scrapr unless the URI names one)"},
    {"DS_CAPPED_BYTES", SH_ENV_INT, &cfg.capped_bytes, "268435456", 4096, 1e15,
     "size of capped_datasources when it is created"},
    {"DS_BACKLOG_MAX_BYTES", SH_ENV_INT, &cfg.backlog_max_bytes, "0", 0, 1e15,
     "unreduced bytes above which POST /items answers 503 (0 = DS_CAPPED_BYTES/4)"},
    {"DS_MAX_BATCH_BYTES", SH_ENV_INT, &cfg.max_batch_bytes, "8388608", 1024, 15e6,
     "largest POST /items body (413 above)"},
    {"DS_MAX_ITEMS", SH_ENV_INT, &cfg.max_items, "10000", 1, 1e6, "most items per batch"},
    {"DS_MAX_ITEM_BYTES", SH_ENV_INT, &cfg.max_item_bytes, "262144", 64, 15e6,
     "largest item (compact JSON)"},
    {"DS_TAILER", SH_ENV_BOOL, &cfg.tailer, "1", 0, 0, "run the tailer/reducer in this process"},
    {"DS_TAILER_LOCK", SH_ENV_BOOL, &cfg.tailer_lock, "1", 0, 0,
     "hold the Consul lock scrapr/locks/datasource-tailer while tailing"},
    {"DS_RESUME_WINDOW", SH_ENV_INT, &cfg.resume_window, "4", 1, 1e6,
     "batches re-reduced (idempotently) after a restart"},
    {"DS_POLL_MS", SH_ENV_INT, &cfg.poll_ms, "50", 1, 10000,
     "tailer re-poll interval when idle (without an ingest wake-up)"},
    {"DS_TAIL_MODE", SH_ENV_STRING, &cfg.tail_mode, "auto", 0, 0,
     "cursor (tailable cursor), poll (find + delete, for FerretDB) or auto"},
    {"DS_ROUND_BATCHES", SH_ENV_INT, &cfg.round_batches, "32", 1, 10000,
     "most batches reduced together in one round"},
    {"DS_REDUCE_CACHE_BYTES", SH_ENV_INT, &cfg.cache_bytes, "268435456", 0, 1e15,
     "memory for the reducer's copy of stored items (0 = look them up every round)"},
    {"DS_ROUND_WAIT_MS", SH_ENV_INT, &cfg.round_wait_ms, "10", 0, 10000,
     "under sustained ingest, wait this long for more batches before the next round"},
    {"DS_BATCH_RETENTION_S", SH_ENV_INT, &cfg.batch_retention_s, "86400", 1, 1e9,
     "how long reduced batch_ids are remembered for replay detection"},
    {"DS_CLAIMS_CACHE_MAX", SH_ENV_INT, &cfg.claims_cache_max, "200000", 0, 1e8,
     "reduced batch_ids the tailing process keeps in memory to answer replays (0 = ask MongoDB)"},
    {"DS_META_POLL_MS", SH_ENV_INT, &cfg.meta_poll_ms, "100", 5, 10000,
     "long-poll re-read of collections_meta (changes reduced by other replicas)"},
    {NULL, 0, NULL, NULL, 0, 0, NULL},
};

int main(int argc, char **argv)
{
    struct sh_service_config scfg;
    struct sh_service_opts opts;
    struct sh_service *svc;
    struct ds_ctx ctx;
    struct sh_err err;
    static const char *const tags[] = {"datasource", NULL};

    sh_service_config_load_ex(&scfg, "datasource", 3001, table, argc, argv);
    if (strcmp(cfg.tail_mode, "auto") != 0 && strcmp(cfg.tail_mode, "cursor") != 0 &&
        strcmp(cfg.tail_mode, "poll") != 0)
        sh_fatal("config_invalid DS_TAIL_MODE=\"%s\" expected=auto|cursor|poll", cfg.tail_mode);

    memset(&ctx, 0, sizeof(ctx));
    ctx.cfg = &cfg;
    ctx.feed = ds_feed_new();
    ctx.handoff = ds_handoff_new(HANDOFF_DOCS, HANDOFF_BYTES);
    (void)pthread_mutex_init(&ctx.ingest_lock, NULL);
    sh_mongo_write_gate_init(&ctx.writes);
    ctx.pool = sh_mongo_pool_new(cfg.mongo_url, &ctx.db, &err);
    if (!ctx.pool)
        sh_fatal("mongo_pool_failed error=\"%s\"", err.msg);
    ctx.claimed = ds_claimed_new((size_t)cfg.claims_cache_max, ctx.pool, ctx.db);

    /* Wait for MongoDB rather than crash-loop: the set-up is idempotent. */
    while (ds_store_setup(&ctx, &err) < 0) {
        sh_log_warn("mongo_setup_failed error=\"%s\" action=retry", err.msg);
        if (sh_service_sleep(1000))
            return 0;
    }

    memset(&opts, 0, sizeof(opts));
    opts.name = "datasource";
    opts.cfg = &scfg;
    opts.routes = ds_api_routes();
    opts.arg = &ctx;
    opts.threads = 0; /* thread per connection: long-polls block */
    opts.max_body = (size_t)cfg.max_batch_bytes;
    opts.health = ds_api_health;
    opts.health_arg = &ctx;
    opts.tags = tags;
    svc = sh_service_start(&opts, &err);
    if (!svc)
        sh_fatal("service_start_failed error=\"%s\"", err.msg);
    ds_metrics_init(&ctx, sh_service_metrics(svc));
    ctx.consul = sh_service_consul(svc);
    __atomic_store_n(&ctx.ready, 1, __ATOMIC_RELEASE);
    sh_log_info("datasource_started port=%u db=%s tailer=%d capped_bytes=%ld ferretdb=%d",
                sh_service_port(svc), ctx.db, cfg.tailer, cfg.capped_bytes, ctx.ferretdb);
    if (cfg.tailer && ds_tailer_start(&ctx, &err) < 0)
        sh_fatal("tailer_start_failed error=\"%s\"", err.msg);

    sh_service_wait(svc);
    sh_log_info("datasource_stopping");
    ds_tailer_stop(&ctx);
    ctx.stop = 1;
    ds_feed_kick(ctx.feed);
    sh_service_stop(svc);
    ds_claimed_free(ctx.claimed); /* joins its loader, which uses the pool */
    mongoc_client_pool_destroy(ctx.pool);
    free(ctx.db);
    ds_feed_free(ctx.feed);
    ds_handoff_free(ctx.handoff);
    (void)pthread_mutex_destroy(&ctx.ingest_lock);
    sh_mongo_write_gate_destroy(&ctx.writes);
    sh_envconf_done(table);
    sh_service_config_done(&scfg);
    return 0;
}
