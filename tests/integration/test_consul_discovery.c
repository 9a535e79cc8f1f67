/* Integration tests for the Consul discovery cache (sh_discovery_* in
 * shared/consul.h): against the test bed's agent (prompt shutdown mid blocking
 * query) and against a dev agent of our own that the test kills, to prove the
 * cache keeps answering from its last known list while Consul is down. */
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "harness.h"
#include "shared/consul.h"
#include "shared/xalloc.h"

static struct sh_consul *consul;

/* Starts a Consul dev agent of our own on free ports; waits until it is leader. */
static pid_t start_agent(unsigned *ret_port, char **ret_dir)
{
    const char *src = REQUIRE_ENV("SCRAPR_SOURCE_DIR");
    char *bin = sh_xasprintf("%s/tools/bin/consul", src);
    char *dir = sh_xstrdup("/tmp/t_consul_agent_XXXXXX");
    unsigned http = th_free_port();
    char ports[5][16], *url;
    const char *argv[24];
    int n = 0;
    pid_t pid;
    int64_t deadline;

    ASSERT_NOT_NULL(mkdtemp(dir));
    (void)snprintf(ports[0], sizeof(ports[0]), "%u", http);
    (void)snprintf(ports[1], sizeof(ports[1]), "%u", th_free_port());
    (void)snprintf(ports[2], sizeof(ports[2]), "%u", th_free_port());
    (void)snprintf(ports[3], sizeof(ports[3]), "%u", th_free_port());
    argv[n++] = bin;
    argv[n++] = "agent";
    argv[n++] = "-dev";
    argv[n++] = "-bind=127.0.0.1";
    argv[n++] = "-client=127.0.0.1";
    argv[n++] = "-http-port";
    argv[n++] = ports[0];
    argv[n++] = "-serf-lan-port";
    argv[n++] = ports[1];
    argv[n++] = "-serf-wan-port";
    argv[n++] = ports[2];
    argv[n++] = "-server-port";
    argv[n++] = ports[3];
    argv[n++] = "-dns-port=-1";
    argv[n++] = "-grpc-port=-1";
    argv[n++] = "-log-level=warn";
    argv[n++] = "-node=t-consul-own";
    argv[n++] = NULL;
    pid = th_spawn(argv, NULL);
    url = sh_xasprintf("http://127.0.0.1:%u/v1/status/leader", http);
    deadline = th_now_ms() + 30000;
    for (;;) {
        long st = 0;
        char *body = NULL;
        if (th_http("GET", url, NULL, NULL, &st, &body, NULL) == 0 && st == 200 && body &&
            strstr(body, "\"127.0.0.1")) {
            free(body);
            break;
        }
        free(body);
        if (th_now_ms() > deadline)
            CHECK_FAIL("own consul agent did not elect itself: %s", th_log_read(pid));
        usleep(100 * 1000);
    }
    free(url);
    free(bin);
    *ret_port = http;
    *ret_dir = dir;
    return pid;
}

static void test_discovery_keeps_answering_after_consul_stops(void)
{
    unsigned port;
    char *dir, *addr, *url = NULL, *name = th_unique("t_disc");
    pid_t agent = start_agent(&port, &dir);
    struct sh_err err = {0};
    struct sh_consul *c;
    struct sh_discovery *d, *none, *dead;
    struct sh_consul *dead_c;
    struct sh_consul_service s = {.name = name, .address = "10.0.0.1", .port = 1000};
    int seen[3] = {0};
    int64_t t0, took;

    addr = sh_xasprintf("127.0.0.1:%u", port);
    c = sh_consul_new(addr, NULL, &err);
    ASSERT_NOT_NULL(c);
    s.id = "a";
    ASSERT_EQ(sh_consul_register(c, &s, &err), 0);
    s.id = "b";
    s.port = 1001;
    ASSERT_EQ(sh_consul_register(c, &s, &err), 0);

    d = sh_discovery_new(c, name, NULL);
    ASSERT_NOT_NULL(d);
    ASSERT_EQ(sh_discovery_pick(d, 5000, &url, &err), 0);
    free(url);
    /* Round robin over both instances. */
    for (int i = 0; i < 4; i++) {
        ASSERT_EQ(sh_discovery_pick(d, 0, &url, &err), 0);
        if (strcmp(url, "http://10.0.0.1:1000") == 0)
            seen[0]++;
        else if (strcmp(url, "http://10.0.0.1:1001") == 0)
            seen[1]++;
        else
            CHECK_FAIL("unexpected url %s", url);
        free(url);
    }
    ASSERT_EQ(seen[0], 2);
    ASSERT_EQ(seen[1], 2);

    /* A new instance shows up through the blocking query, no polling delay. */
    s.id = "c";
    s.port = 1002;
    t0 = th_now_ms();
    ASSERT_EQ(sh_consul_register(c, &s, &err), 0);
    for (int found = 0; !found;) {
        for (int i = 0; i < 3 && !found; i++) {
            ASSERT_EQ(sh_discovery_pick(d, 0, &url, &err), 0);
            found = strcmp(url, "http://10.0.0.1:1002") == 0;
            free(url);
        }
        if (!found) {
            ASSERT_LT(th_now_ms() - t0, 3000);
            usleep(5 * 1000);
        }
    }
    fprintf(stderr, "   discovery saw a new instance %" PRId64 " ms after register\n",
            th_now_ms() - t0);

    /* Unknown service: empty answer → ENOTFOUND without waiting long. */
    none = sh_discovery_new(c, "no-such-service", NULL);
    ASSERT_EQ(sh_discovery_pick(none, 3000, &url, &err), -1);
    ASSERT_EQ(err.code, SH_ENOTFOUND);
    sh_discovery_free(none);

    /* Stop the agent: the cache keeps answering from the last known list. */
    ASSERT_EQ(th_kill(agent, SIGKILL), 128 + SIGKILL);
    for (int i = 0; i < 30; i++) {
        ASSERT_EQ(sh_discovery_pick(d, 0, &url, &err), 0);
        ASSERT_STR_CONTAINS(url, "http://10.0.0.1:100");
        free(url);
        usleep(100 * 1000);
    }
    /* And stops promptly even while backing off / blocked. */
    t0 = th_now_ms();
    sh_discovery_free(d);
    took = th_now_ms() - t0;
    fprintf(stderr, "   sh_discovery_free took %" PRId64 " ms with consul down\n", took);
    ASSERT_LT(took, 600);

    /* A cache that never got an answer: pick waits wait_ms, then ENOTFOUND. */
    dead_c = sh_consul_new(addr, "some-token", &err);
    dead = sh_discovery_new(dead_c, name, "x");
    t0 = th_now_ms();
    ASSERT_EQ(sh_discovery_pick(dead, 400, &url, &err), -1);
    ASSERT_EQ(err.code, SH_ENOTFOUND);
    ASSERT_GE(th_now_ms() - t0, 380);
    sh_discovery_free(dead);
    sh_consul_free(dead_c);

    sh_consul_free(c);
    free(addr);
    free(name);
    {
        char *cmd = sh_xasprintf("rm -rf '%s'", dir);
        ASSERT_EQ(system(cmd), 0);
        free(cmd);
    }
    free(dir);
}

static void test_discovery_free_is_prompt_during_blocking_query(void)
{
    struct sh_err err = {0};
    struct sh_discovery *d = sh_discovery_new(consul, "consul", NULL);
    char *url = NULL;
    int64_t t0, took;

    ASSERT_NOT_NULL(d);
    ASSERT_EQ(sh_discovery_pick(d, 5000, &url, &err), 0); /* the agent itself */
    ASSERT_STR_CONTAINS(url, "http://127.0.0.1:");
    free(url);
    usleep(300 * 1000); /* now parked in a 30 s blocking query */
    t0 = th_now_ms();
    sh_discovery_free(d);
    took = th_now_ms() - t0;
    fprintf(stderr, "   sh_discovery_free took %" PRId64 " ms during a blocking query\n", took);
    ASSERT_LT(took, 600);
}

int main(void)
{
    struct sh_err err = {0};

    consul = sh_consul_new(REQUIRE_ENV("CONSUL_HTTP_ADDR"), NULL, &err);
    ASSERT_NOT_NULL(consul);
    RUN(test_discovery_free_is_prompt_during_blocking_query);
    RUN(test_discovery_keeps_answering_after_consul_stops);
    sh_consul_free(consul);
    return 0;
}
