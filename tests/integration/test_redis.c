/* Integration tests for shared/redis.h. Most run against redis-server
 * processes of our own (so we can kill, restart and password-protect them);
 * one checks the test bed's REDIS_URL. */
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "harness.h"
#include "shared/redis.h"
#include "shared/xalloc.h"

static char tmpdir[] = "/tmp/t_redis_XXXXXX";

/* Starts redis-server on port (extra args NULL-terminated) and waits until it answers. */
static pid_t start_redis(unsigned port, const char *const *extra)
{
    char p[16];
    const char *argv[24] = {
        "redis-server", "--port", p,       "--bind", "127.0.0.1",   "--save", "",
        "--appendonly", "no",     "--dir", tmpdir,   "--daemonize", "no"};
    int n = 13;
    pid_t pid;
    int64_t deadline = th_now_ms() + 10000;

    (void)snprintf(p, sizeof(p), "%u", port);
    for (size_t i = 0; extra && extra[i] && n < 23; i++)
        argv[n++] = extra[i];
    argv[n] = NULL;
    pid = th_spawn(argv, NULL);
    for (;;) {
        redisContext *c = redisConnect("127.0.0.1", (int)port);
        int up = c && !c->err;
        if (c)
            redisFree(c);
        if (up)
            return pid;
        if (th_now_ms() > deadline)
            CHECK_FAIL("redis-server on %u did not come up: %s", port, th_log_read(pid));
        usleep(50 * 1000);
    }
}

static redisReply *cmd_ok(struct sh_redis *r, const char *what, redisReply *rep,
                          const struct sh_err *err)
{
    (void)r;
    if (!rep)
        CHECK_FAIL("%s: %s", what, err->msg);
    return rep;
}

static void test_url_parsing(void)
{
    struct sh_err err = {0};
    const char *bad[] = {"",
                         "http://127.0.0.1:6379",
                         "redis://127.0.0.1:99999",
                         "redis://127.0.0.1:6379/abc",
                         "redis://127.0.0.1:6379/-1",
                         "not a url",
                         NULL};
    struct sh_redis *r;

    for (int i = 0; bad[i]; i++) {
        err.code = SH_OK;
        ASSERT_NULL(sh_redis_new(bad[i], &err));
        ASSERT_EQ(err.code, SH_ECONFIG);
        ASSERT_STR_CONTAINS(err.msg, "REDIS_URL");
    }
    /* Lazy: a URL to a closed port is fine until the first command. */
    r = sh_redis_new("redis://127.0.0.1:1/2", &err);
    ASSERT_NOT_NULL(r);
    ASSERT_NULL(sh_redis_command(r, &err, "PING"));
    ASSERT_EQ(err.code, SH_EUPSTREAM);
    ASSERT_STR_CONTAINS(err.msg, "127.0.0.1:1");
    sh_redis_free(r);
    sh_redis_free(NULL);
}

static void test_testbed_redis_answers(void)
{
    struct sh_err err = {0};
    const char *url = REQUIRE_ENV("REDIS_URL");
    struct sh_redis *r;

    r = sh_redis_new(url, &err);
    ASSERT_NOT_NULL(r);
    ASSERT_EQ(sh_redis_ping(r, &err), 0);
    sh_redis_free(r);
}

static void test_set_get_select_and_binary_values(unsigned port)
{
    struct sh_err err = {0};
    char *url = sh_xasprintf("redis://127.0.0.1:%u/3", port);
    struct sh_redis *r = sh_redis_new(url, &err);
    const char *argv[3] = {"SET", "scrapr:bin", "a\0b\xff"};
    const size_t lens[3] = {3, 10, 4};
    redisReply *rep;
    redisContext *raw;

    ASSERT_NOT_NULL(r);
    rep = cmd_ok(r, "SET", sh_redis_command(r, &err, "SET %s %s", "scrapr:k", "v 1"), &err);
    ASSERT_EQ(rep->type, REDIS_REPLY_STATUS);
    freeReplyObject(rep);
    rep = cmd_ok(r, "GET", sh_redis_command(r, &err, "GET %s", "scrapr:k"), &err);
    ASSERT_EQ(rep->type, REDIS_REPLY_STRING);
    ASSERT_STR_EQ(rep->str, "v 1");
    freeReplyObject(rep);
    rep = cmd_ok(r, "SET bin", sh_redis_commandargv(r, 3, argv, lens, &err), &err);
    freeReplyObject(rep);
    rep = cmd_ok(r, "GET bin", sh_redis_command(r, &err, "GET scrapr:bin"), &err);
    ASSERT_EQ(rep->len, 4);
    ASSERT_EQ(memcmp(rep->str, "a\0b\xff", 4), 0);
    freeReplyObject(rep);
    /* A Redis error reply is a reply, not a failure. */
    rep = cmd_ok(r, "INCR", sh_redis_command(r, &err, "INCR scrapr:k"), &err);
    ASSERT_EQ(rep->type, REDIS_REPLY_ERROR);
    freeReplyObject(rep);

    /* The key went to database 3, as the URL said. */
    raw = redisConnect("127.0.0.1", (int)port);
    ASSERT(raw && !raw->err);
    rep = redisCommand(raw, "GET scrapr:k");
    ASSERT_EQ(rep->type, REDIS_REPLY_NIL);
    freeReplyObject(rep);
    freeReplyObject(redisCommand(raw, "SELECT 3"));
    rep = redisCommand(raw, "GET scrapr:k");
    ASSERT_STR_EQ(rep->str, "v 1");
    freeReplyObject(rep);
    redisFree(raw);
    sh_redis_free(r);
    free(url);
}

static void test_reconnects_after_restart_and_fails_cleanly_while_down(unsigned port, pid_t *server)
{
    struct sh_err err = {0};
    char *url = sh_xasprintf("redis://127.0.0.1:%u", port);
    struct sh_redis *r = sh_redis_new(url, &err);
    redisReply *rep;
    int64_t t0, took;

    ASSERT_NOT_NULL(r);
    ASSERT_EQ(sh_redis_ping(r, &err), 0);

    /* Restart: the held connection is dead; the next command reconnects and succeeds. */
    ASSERT_EQ(th_kill(*server, SIGKILL), 128 + SIGKILL);
    *server = start_redis(port, NULL);
    rep = cmd_ok(r, "SET after restart", sh_redis_command(r, &err, "SET scrapr:x 1"), &err);
    ASSERT_EQ(rep->type, REDIS_REPLY_STATUS);
    freeReplyObject(rep);
    ASSERT_EQ(sh_redis_ping(r, &err), 0);

    /* Down: commands fail with SH_EUPSTREAM, quickly, without crashing. */
    ASSERT_EQ(th_kill(*server, SIGTERM), 0);
    for (int i = 0; i < 3; i++) {
        t0 = th_now_ms();
        err.code = SH_OK;
        ASSERT_NULL(sh_redis_command(r, &err, "GET scrapr:x"));
        took = th_now_ms() - t0;
        ASSERT_EQ(err.code, SH_EUPSTREAM);
        ASSERT_LT(took, 3000);
    }
    ASSERT_EQ(sh_redis_ping(r, &err), -1);

    /* Back: works again without recreating the handle. */
    *server = start_redis(port, NULL);
    ASSERT_EQ(sh_redis_ping(r, &err), 0);
    rep = cmd_ok(r, "GET", sh_redis_command(r, &err, "GET scrapr:x"), &err);
    ASSERT_EQ(rep->type, REDIS_REPLY_NIL); /* --save '': the restart lost the data */
    freeReplyObject(rep);
    sh_redis_free(r);
    free(url);
}

static void test_command_timeout_then_recovery(unsigned port)
{
    struct sh_err err = {0};
    char *url = sh_xasprintf("redis://127.0.0.1:%u", port);
    struct sh_redis *r = sh_redis_new(url, &err);
    int64_t t0, took;

    ASSERT_NOT_NULL(r);
    sh_redis_set_timeouts(r, 1000, 200);
    t0 = th_now_ms();
    ASSERT_NULL(sh_redis_command(r, &err, "BLPOP scrapr:never 3"));
    took = th_now_ms() - t0;
    ASSERT_EQ(err.code, SH_ETIMEOUT);
    ASSERT_LT(took, 1500); /* not retried: one timeout, not two */
    ASSERT_EQ(sh_redis_ping(r, &err), 0);
    sh_redis_free(r);
    free(url);
}

static void test_password_auth(void)
{
    unsigned port = th_free_port();
    const char *extra[] = {"--requirepass", "s3cret", NULL};
    pid_t srv = start_redis(port, extra);
    struct sh_err err = {0};
    char *good = sh_xasprintf("redis://:s3cret@127.0.0.1:%u/1", port);
    char *bad = sh_xasprintf("redis://:wrong-pass@127.0.0.1:%u", port);
    char *none = sh_xasprintf("redis://127.0.0.1:%u", port);
    struct sh_redis *r = sh_redis_new(good, &err);
    redisReply *rep;

    ASSERT_NOT_NULL(r);
    ASSERT_EQ(sh_redis_ping(r, &err), 0);
    sh_redis_free(r);

    r = sh_redis_new(bad, &err);
    ASSERT_EQ(sh_redis_ping(r, &err), -1);
    ASSERT_EQ(err.code, SH_EUPSTREAM);
    ASSERT(strstr(err.msg, "wrong-pass") == NULL); /* never echo the secret */
    sh_redis_free(r);

    r = sh_redis_new(none, &err);
    rep = cmd_ok(r, "GET", sh_redis_command(r, &err, "GET x"), &err);
    ASSERT_EQ(rep->type, REDIS_REPLY_ERROR); /* NOAUTH is the server's answer */
    freeReplyObject(rep);
    sh_redis_free(r);
    ASSERT_EQ(th_kill(srv, SIGTERM), 0);
    free(good);
    free(bad);
    free(none);
}

static void test_acl_user_auth(void)
{
    unsigned port = th_free_port();
    const char *extra[] = {"--user", "alice", "on", ">pw:with@signs", "~*", "&*", "+@all", NULL};
    pid_t srv = start_redis(port, extra);
    struct sh_err err = {0};
    /* '@' and ':' in the password are percent-encoded in the URL. */
    char *good = sh_xasprintf("redis://alice:pw%%3Awith%%40signs@127.0.0.1:%u", port);
    char *bad = sh_xasprintf("redis://bob:pw@127.0.0.1:%u", port);
    struct sh_redis *r = sh_redis_new(good, &err);

    ASSERT_NOT_NULL(r);
    ASSERT_EQ(sh_redis_ping(r, &err), 0);
    sh_redis_free(r);
    r = sh_redis_new(bad, &err);
    ASSERT_EQ(sh_redis_ping(r, &err), -1);
    ASSERT_EQ(err.code, SH_EUPSTREAM);
    ASSERT_STR_CONTAINS(err.msg, "AUTH");
    sh_redis_free(r);
    ASSERT_EQ(th_kill(srv, SIGTERM), 0);
    free(good);
    free(bad);
}

#define THREADS 4
#define INCRS 200
static void *incr_many(void *arg)
{
    struct sh_redis *r = arg;
    struct sh_err err = {0};

    for (int i = 0; i < INCRS; i++) {
        redisReply *rep = sh_redis_command(r, &err, "INCR scrapr:counter");
        if (!rep || rep->type != REDIS_REPLY_INTEGER)
            CHECK_FAIL("INCR: %s", rep ? rep->str : err.msg);
        freeReplyObject(rep);
    }
    return NULL;
}

static void test_threads_share_one_handle(unsigned port)
{
    struct sh_err err = {0};
    char *url = sh_xasprintf("redis://127.0.0.1:%u/5", port);
    struct sh_redis *r = sh_redis_new(url, &err);
    pthread_t t[THREADS];
    redisReply *rep;

    ASSERT_NOT_NULL(r);
    for (int i = 0; i < THREADS; i++)
        ASSERT_EQ(pthread_create(&t[i], NULL, incr_many, r), 0);
    for (int i = 0; i < THREADS; i++)
        ASSERT_EQ(pthread_join(t[i], NULL), 0);
    rep = cmd_ok(r, "GET", sh_redis_command(r, &err, "GET scrapr:counter"), &err);
    ASSERT_STR_EQ(rep->str, "800");
    freeReplyObject(rep);
    sh_redis_free(r);
    free(url);
}

int main(void)
{
    unsigned port;
    pid_t server;
    char *cmd;

    (void)REQUIRE_ENV("REDIS_URL");
    ASSERT_NOT_NULL(mkdtemp(tmpdir));
    port = th_free_port();
    server = start_redis(port, NULL);
    RUN(test_url_parsing);
    RUN(test_testbed_redis_answers);
    test_set_get_select_and_binary_values(port);
    fprintf(stderr, "ok test_set_get_select_and_binary_values\n");
    test_reconnects_after_restart_and_fails_cleanly_while_down(port, &server);
    fprintf(stderr, "ok test_reconnects_after_restart_and_fails_cleanly_while_down\n");
    test_command_timeout_then_recovery(port);
    fprintf(stderr, "ok test_command_timeout_then_recovery\n");
    test_threads_share_one_handle(port);
    fprintf(stderr, "ok test_threads_share_one_handle\n");
    RUN(test_password_auth);
    RUN(test_acl_user_auth);
    ASSERT_EQ(th_kill(server, SIGTERM), 0);
    cmd = sh_xasprintf("rm -rf '%s'", tmpdir);
    ASSERT_EQ(system(cmd), 0);
    free(cmd);
    return 0;
}
