/* MongoDB helpers (see shared/mongo.h).
 *
 * mongoc_init runs once per process (pthread_once); mongoc_cleanup is left to
 * process exit, since pools may live until then. A pool is built from the URL
 * with a short server selection timeout unless the URL sets one, so a service
 * whose MongoDB is down fails a request in seconds instead of hanging for the
 * driver's default 30 s. The pool itself is thread-safe (mongoc's contract).
 * mongoc's own log lines go to shared/log.h (warnings up; the rest at debug). */
#include "shared/mongo.h"

#include <pthread.h>
#include <string.h>

#include "shared/log.h"
#include "shared/xalloc.h"

#define DEFAULT_DB "scrapr"
#define SERVER_SELECTION_MS 3000
#define CONNECT_MS 2000

static pthread_once_t init_once = PTHREAD_ONCE_INIT;

/* mongoc logs on its own (even DEBUG lines in some builds): route its warnings
 * and errors into our log sink and keep the chatter at debug level. */
static void on_mongoc_log(mongoc_log_level_t level, const char *domain, const char *message,
                          void *data)
{
    int lvl = level <= MONGOC_LOG_LEVEL_ERROR     ? SH_LOG_ERROR
              : level == MONGOC_LOG_LEVEL_WARNING ? SH_LOG_WARN
                                                  : SH_LOG_DEBUG;

    (void)data;
    if (level == MONGOC_LOG_LEVEL_TRACE)
        return;
    /* FerretDB lacks endSessions; the driver warns about it at every pool shutdown. */
    if (message && strstr(message, "endSessions"))
        lvl = SH_LOG_DEBUG;
    sh_log_at(lvl, "mongoc domain=%s message=\"%s\"", domain ? domain : "", message);
}

static void init(void)
{
    mongoc_log_trace_disable();
    mongoc_log_set_handler(on_mongoc_log, NULL);
    mongoc_init();
}

mongoc_client_pool_t *sh_mongo_pool_new(const char *url, char **ret_db, struct sh_err *err)
{
    mongoc_client_pool_t *pool = NULL;
    mongoc_uri_t *uri;
    bson_error_t berr;
    const char *db;

    (void)pthread_once(&init_once, init);
    if (!url || !*url) {
        sh_err_set(err, SH_ECONFIG, "MONGO_URL is empty");
        return NULL;
    }
    if (!(uri = mongoc_uri_new_with_error(url, &berr))) {
        /* Do not echo the URL: it may carry a password. */
        sh_err_set(err, SH_ECONFIG, "MONGO_URL is not a valid MongoDB URI: %s", berr.message);
        return NULL;
    }
    if (!mongoc_uri_has_option(uri, MONGOC_URI_SERVERSELECTIONTIMEOUTMS) &&
        !mongoc_uri_set_option_as_int32(uri, MONGOC_URI_SERVERSELECTIONTIMEOUTMS,
                                        SERVER_SELECTION_MS)) {
        sh_err_set(err, SH_ECONFIG, "MONGO_URL: cannot set serverSelectionTimeoutMS");
        goto out;
    }
    if (!mongoc_uri_has_option(uri, MONGOC_URI_CONNECTTIMEOUTMS) &&
        !mongoc_uri_set_option_as_int32(uri, MONGOC_URI_CONNECTTIMEOUTMS, CONNECT_MS)) {
        sh_err_set(err, SH_ECONFIG, "MONGO_URL: cannot set connectTimeoutMS");
        goto out;
    }
    if (!mongoc_uri_has_option(uri, MONGOC_URI_APPNAME) && !mongoc_uri_set_appname(uri, "scrapr")) {
        sh_err_set(err, SH_ECONFIG, "MONGO_URL: cannot set appname");
        goto out;
    }
    if (!(pool = mongoc_client_pool_new_with_error(uri, &berr))) {
        sh_mongo_err(err, &berr, "mongo pool");
        if (err)
            err->code = SH_ECONFIG;
        goto out;
    }
    if (!mongoc_client_pool_set_error_api(pool, MONGOC_ERROR_API_VERSION_2)) {
        sh_err_set(err, SH_EIO, "mongo pool: cannot select error API v2");
        mongoc_client_pool_destroy(pool);
        pool = NULL;
        goto out;
    }
    db = mongoc_uri_get_database(uri);
    if (ret_db)
        *ret_db = sh_xstrdup(db && *db ? db : DEFAULT_DB);
out:
    mongoc_uri_destroy(uri);
    return pool;
}

int sh_mongo_ping(mongoc_client_pool_t *pool, struct sh_err *err)
{
    mongoc_client_t *client;
    bson_error_t berr;
    bson_t cmd = BSON_INITIALIZER;
    int rc = 0;

    if (!pool) {
        sh_err_set(err, SH_ECONFIG, "mongo ping: no pool");
        return -1;
    }
    BSON_APPEND_INT32(&cmd, "ping", 1);
    client = mongoc_client_pool_pop(pool);
    if (!mongoc_client_command_simple(client, "admin", &cmd, NULL, NULL, &berr)) {
        sh_mongo_err(err, &berr, "mongo ping");
        if (err)
            err->code = SH_EUPSTREAM;
        rc = -1;
    }
    mongoc_client_pool_push(pool, client);
    bson_destroy(&cmd);
    return rc;
}

/* Server error codes meaning "the document already exists". */
static int is_duplicate_key(uint32_t code)
{
    return code == 11000 || code == 11001 || code == 12582;
}

void sh_mongo_err(struct sh_err *err, const bson_error_t *berr, const char *what)
{
    int code;

    if (!err)
        return;
    if (!berr) {
        sh_err_set(err, SH_EUPSTREAM, "%s: unknown error", what ? what : "mongo");
        return;
    }
    switch (berr->domain) {
    case MONGOC_ERROR_SERVER_SELECTION:
    case MONGOC_ERROR_STREAM:
    case MONGOC_ERROR_CLIENT:
        code = SH_EUPSTREAM;
        break;
    case MONGOC_ERROR_BSON:
    case MONGOC_ERROR_PROTOCOL:
        code = SH_EPROTO;
        break;
    case MONGOC_ERROR_COMMAND:
        code = berr->code == MONGOC_ERROR_COMMAND_INVALID_ARG ? SH_ECONFIG : SH_EUPSTREAM;
        break;
    default:
        code = is_duplicate_key(berr->code) ? SH_ECONFLICT : SH_EUPSTREAM;
        break;
    }
    if (is_duplicate_key(berr->code))
        code = SH_ECONFLICT;
    sh_err_set(err, code, "%s: %s (domain %u, code %u)", what ? what : "mongo", berr->message,
               berr->domain, berr->code);
}

int sh_mongo_is_ferretdb(mongoc_client_t *c, struct sh_err *err)
{
    bson_t *cmd = BCON_NEW("buildInfo", BCON_INT32(1)), reply;
    bson_error_t berr;
    bson_iter_t it;
    int rc;

    if (!mongoc_client_command_simple(c, "admin", cmd, NULL, &reply, &berr)) {
        sh_mongo_err(err, &berr, "buildInfo");
        rc = -1;
    } else {
        rc = bson_iter_init_find(&it, &reply, "ferretdbVersion") ? 1 : 0;
    }
    bson_destroy(&reply);
    bson_destroy(cmd);
    return rc;
}

void sh_mongo_write_gate_init(struct sh_mongo_write_gate *g)
{
    (void)pthread_mutex_init(&g->mu, NULL);
    g->on = 0;
}

void sh_mongo_write_gate_destroy(struct sh_mongo_write_gate *g)
{
    (void)pthread_mutex_destroy(&g->mu);
}

void sh_mongo_write_begin(struct sh_mongo_write_gate *g)
{
    if (g->on)
        (void)pthread_mutex_lock(&g->mu);
}

void sh_mongo_write_end(struct sh_mongo_write_gate *g)
{
    if (g->on)
        (void)pthread_mutex_unlock(&g->mu);
}
