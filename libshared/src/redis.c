/* Reconnecting Redis connection over hiredis (see shared/redis.h).
 *
 * One blocking redisContext per struct sh_redis, created lazily and guarded by
 * a mutex, so calls from several threads are serialised. Each command is
 * formatted once; if the context breaks (EOF, I/O error) the context is
 * dropped, a new one is connected (SELECT db, AUTH as the URL says) and the
 * command is sent once more. A timed-out command is not retried (the server
 * may still run it) but the context is dropped, since hiredis cannot resync
 * it. Replies belong to the caller (freeReplyObject). */
#include "shared/redis.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include <curl/curl.h>

#include "shared/xalloc.h"

#define DEFAULT_PORT 6379
#define DEFAULT_CONNECT_MS 2000L
#define DEFAULT_COMMAND_MS 5000L

struct sh_redis {
    char *host;
    int port;
    long db;
    char *user;     /* NULL = default user */
    char *password; /* NULL = no AUTH */
    long connect_ms;
    long command_ms;
    pthread_mutex_t mu;
    redisContext *ctx; /* NULL = not connected (under mu) */
};

static struct timeval tv_ms(long ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    return tv;
}

/* Parses redis://[[user]:password@]host[:port][/db] with CURLU. */
static int parse_url(struct sh_redis *r, const char *url, struct sh_err *err)
{
    CURLU *u = curl_url();
    char *scheme = NULL, *host = NULL, *port = NULL, *path = NULL, *user = NULL, *pass = NULL;
    int rc = -1;

    if (!u) {
        sh_err_set(err, SH_EIO, "REDIS_URL: curl_url failed");
        return -1;
    }
    if (curl_url_set(u, CURLUPART_URL, url, CURLU_NON_SUPPORT_SCHEME) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK) {
        sh_err_set(err, SH_ECONFIG, "REDIS_URL: not a URL (want redis://host:port[/db])");
        goto out;
    }
    if (strcmp(scheme, "redis") != 0) {
        sh_err_set(err, SH_ECONFIG, "REDIS_URL: scheme must be redis://, got %s://", scheme);
        goto out;
    }
    r->port = DEFAULT_PORT;
    if (curl_url_get(u, CURLUPART_PORT, &port, 0) == CURLUE_OK) {
        char *end;
        long p = strtol(port, &end, 10);
        if (*end || p < 1 || p > 65535) {
            sh_err_set(err, SH_ECONFIG, "REDIS_URL: bad port %s", port);
            goto out;
        }
        r->port = (int)p;
    }
    r->db = 0;
    if (curl_url_get(u, CURLUPART_PATH, &path, 0) == CURLUE_OK && path[0] && strcmp(path, "/")) {
        char *end;
        errno = 0;
        r->db = strtol(path + 1, &end, 10);
        if (errno || end == path + 1 || (*end && strcmp(end, "/")) || r->db < 0 || r->db > 1024) {
            sh_err_set(err, SH_ECONFIG, "REDIS_URL: database \"%s\" is not a number 0..1024",
                       path + 1);
            goto out;
        }
    }
    if (curl_url_get(u, CURLUPART_USER, &user, CURLU_URLDECODE) == CURLUE_OK && *user)
        r->user = sh_xstrdup(user);
    if (curl_url_get(u, CURLUPART_PASSWORD, &pass, CURLU_URLDECODE) == CURLUE_OK && *pass)
        r->password = sh_xstrdup(pass);
    if (r->user && !r->password) {
        /* redis://secret@host: a lone userinfo is the password (as redis-cli reads it). */
        r->password = r->user;
        r->user = NULL;
    }
    /* IPv6 literals come back bracketed. */
    if (host[0] == '[' && host[strlen(host) - 1] == ']')
        r->host = sh_xstrndup(host + 1, strlen(host) - 2);
    else
        r->host = sh_xstrdup(host);
    rc = 0;
out:
    curl_free(scheme);
    curl_free(host);
    curl_free(port);
    curl_free(path);
    curl_free(user);
    curl_free(pass);
    curl_url_cleanup(u);
    return rc;
}

struct sh_redis *sh_redis_new(const char *url, struct sh_err *err)
{
    struct sh_redis *r;

    if (!url || !*url) {
        sh_err_set(err, SH_ECONFIG, "REDIS_URL is empty");
        return NULL;
    }
    r = sh_xcalloc(1, sizeof(*r));
    r->connect_ms = DEFAULT_CONNECT_MS;
    r->command_ms = DEFAULT_COMMAND_MS;
    if (parse_url(r, url, err) < 0 || pthread_mutex_init(&r->mu, NULL) != 0) {
        if (err && err->code == SH_OK)
            sh_err_set(err, SH_EIO, "redis: mutex init failed");
        free(r->host);
        free(r->user);
        free(r->password);
        free(r);
        return NULL;
    }
    return r;
}

void sh_redis_free(struct sh_redis *r)
{
    if (!r)
        return;
    if (r->ctx)
        redisFree(r->ctx);
    (void)pthread_mutex_destroy(&r->mu);
    free(r->host);
    free(r->user);
    free(r->password);
    free(r);
}

void sh_redis_set_timeouts(struct sh_redis *r, long connect_ms, long command_ms)
{
    (void)pthread_mutex_lock(&r->mu);
    r->connect_ms = connect_ms > 0 ? connect_ms : DEFAULT_CONNECT_MS;
    r->command_ms = command_ms > 0 ? command_ms : DEFAULT_COMMAND_MS;
    if (r->ctx && redisSetTimeout(r->ctx, tv_ms(r->command_ms)) != REDIS_OK) {
        redisFree(r->ctx);
        r->ctx = NULL;
    }
    (void)pthread_mutex_unlock(&r->mu);
}

static void drop(struct sh_redis *r)
{
    if (r->ctx) {
        redisFree(r->ctx);
        r->ctx = NULL;
    }
}

/* Runs a setup command on a fresh context; 0, or -1 when it fails or answers an error. */
static int setup_command(struct sh_redis *r, int argc, const char **argv, struct sh_err *err)
{
    redisReply *rep = redisCommandArgv(r->ctx, argc, argv, NULL);
    int rc = 0;

    if (!rep) {
        sh_err_set(err, SH_EUPSTREAM, "redis %s:%d %s: %s", r->host, r->port, argv[0],
                   r->ctx->errstr);
        return -1;
    }
    if (rep->type == REDIS_REPLY_ERROR) {
        /* AUTH errors must not echo the password; the server's message does not. */
        sh_err_set(err, SH_EUPSTREAM, "redis %s:%d %s: %s", r->host, r->port, argv[0], rep->str);
        rc = -1;
    }
    freeReplyObject(rep);
    return rc;
}

/* Connects when there is no context; 0 or -1 (SH_EUPSTREAM), mu held. */
static int ensure(struct sh_redis *r, struct sh_err *err)
{
    if (r->ctx)
        return 0;
    r->ctx = redisConnectWithTimeout(r->host, r->port, tv_ms(r->connect_ms));
    if (!r->ctx) {
        sh_err_set(err, SH_EUPSTREAM, "redis %s:%d: cannot allocate a context", r->host, r->port);
        return -1;
    }
    if (r->ctx->err) {
        sh_err_set(err, SH_EUPSTREAM, "redis %s:%d: connect: %s", r->host, r->port, r->ctx->errstr);
        goto fail;
    }
    if (redisSetTimeout(r->ctx, tv_ms(r->command_ms)) != REDIS_OK) {
        sh_err_set(err, SH_EUPSTREAM, "redis %s:%d: setting timeout: %s", r->host, r->port,
                   r->ctx->errstr);
        goto fail;
    }
    if (r->password) {
        const char *a3[3] = {"AUTH", r->user, r->password};
        const char *a2[2] = {"AUTH", r->password};
        if (r->user ? setup_command(r, 3, a3, err) : setup_command(r, 2, a2, err))
            goto fail;
    }
    if (r->db) {
        char db[24];
        const char *argv[2] = {"SELECT", db};
        (void)snprintf(db, sizeof(db), "%ld", r->db);
        if (setup_command(r, 2, argv, err) < 0)
            goto fail;
    }
    return 0;
fail:
    drop(r);
    return -1;
}

/* A broken connection (not a timeout) is worth one reconnect + retry. */
static int is_retryable(const redisContext *c)
{
    if (c->err == REDIS_ERR_EOF)
        return 1;
    if (c->err == REDIS_ERR_IO)
        return strstr(c->errstr, "temporarily unavailable") == NULL &&
               strstr(c->errstr, "timed out") == NULL;
    return 0;
}

static int is_timeout(const redisContext *c)
{
    return c->err == REDIS_ERR_IO &&
           (strstr(c->errstr, "temporarily unavailable") || strstr(c->errstr, "timed out"));
}

/* hiredis writes with write(2): a peer that went away would raise SIGPIPE and
 * kill the process. Block it in this thread for the call and swallow one that
 * we caused (the usual technique; the process-wide disposition is not ours). */
struct pipe_guard {
    sigset_t old;
    int was_pending;
};

static void pipe_block(struct pipe_guard *g)
{
    sigset_t set, pend;

    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    sigemptyset(&pend);
    (void)sigpending(&pend);
    g->was_pending = sigismember(&pend, SIGPIPE) == 1;
    (void)pthread_sigmask(SIG_BLOCK, &set, &g->old);
}

static void pipe_restore(struct pipe_guard *g)
{
    sigset_t set, pend;
    struct timespec zero = {0, 0};

    sigemptyset(&pend);
    (void)sigpending(&pend);
    if (!g->was_pending && sigismember(&pend, SIGPIPE) == 1) {
        sigemptyset(&set);
        sigaddset(&set, SIGPIPE);
        while (sigtimedwait(&set, NULL, &zero) < 0 && errno == EINTR)
            ;
    }
    (void)pthread_sigmask(SIG_SETMASK, &g->old, NULL);
}

/* Sends a formatted command, reconnecting once on a broken connection. */
static redisReply *run(struct sh_redis *r, const char *cmd, size_t len, struct sh_err *err)
{
    redisReply *rep = NULL;
    struct pipe_guard g;

    (void)pthread_mutex_lock(&r->mu);
    pipe_block(&g);
    for (int attempt = 0; attempt < 2; attempt++) {
        int fresh = r->ctx == NULL;
        void *out = NULL;

        if (ensure(r, err) < 0)
            break;
        if (redisAppendFormattedCommand(r->ctx, cmd, len) == REDIS_OK &&
            redisGetReply(r->ctx, &out) == REDIS_OK) {
            rep = out;
            break;
        }
        if (out)
            freeReplyObject(out);
        sh_err_set(err, is_timeout(r->ctx) ? SH_ETIMEOUT : SH_EUPSTREAM, "redis %s:%d: %s", r->host,
                   r->port, r->ctx->errstr[0] ? r->ctx->errstr : "connection failed");
        {
            int retry = !fresh && is_retryable(r->ctx);
            drop(r);
            if (!retry)
                break;
        }
    }
    pipe_restore(&g);
    (void)pthread_mutex_unlock(&r->mu);
    return rep;
}

redisReply *sh_redis_command(struct sh_redis *r, struct sh_err *err, const char *fmt, ...)
{
    va_list ap;
    char *cmd = NULL;
    int len;
    redisReply *rep;

    va_start(ap, fmt);
    len = redisvFormatCommand(&cmd, fmt, ap);
    va_end(ap);
    if (len < 0) {
        sh_err_set(err, SH_ECONFIG, "redis: bad command format \"%s\"", fmt);
        return NULL;
    }
    rep = run(r, cmd, (size_t)len, err);
    redisFreeCommand(cmd);
    return rep;
}

redisReply *sh_redis_commandargv(struct sh_redis *r, int argc, const char **argv,
                                 const size_t *argvlen, struct sh_err *err)
{
    char *cmd = NULL;
    int len = redisFormatCommandArgv(&cmd, argc, argv, argvlen);
    redisReply *rep;

    if (len < 0) {
        sh_err_set(err, SH_ECONFIG, "redis: cannot format command");
        return NULL;
    }
    rep = run(r, cmd, (size_t)len, err);
    redisFreeCommand(cmd);
    return rep;
}

int sh_redis_ping(struct sh_redis *r, struct sh_err *err)
{
    redisReply *rep = sh_redis_command(r, err, "PING");
    int rc = 0;

    if (!rep)
        return -1;
    if (rep->type != REDIS_REPLY_STATUS || strcmp(rep->str, "PONG") != 0) {
        sh_err_set(err, SH_EUPSTREAM, "redis ping: unexpected answer \"%.80s\"",
                   rep->str ? rep->str : "");
        rc = -1;
    }
    freeReplyObject(rep);
    return rc;
}
