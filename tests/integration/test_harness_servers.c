/* The harness's private servers: redis-server restarts on the same port,
 * a consul dev agent elects itself and stops on SIGTERM. */
#include "check.h"
#include "harness.h"

#include <signal.h>
#include <stdlib.h>

static void test_redis_starts_and_restarts_on_the_same_port(void)
{
    unsigned port = 0, first;
    pid_t pid = th_redis_start(&port);
    const char *argv[4] = {"redis-cli", "-p", NULL, NULL};
    char portstr[16];
    char *log;
    pid_t cli;
    ASSERT_GT(port, 0);
    first = port;
    ASSERT_EQ(th_kill(pid, SIGTERM), 0);
    pid = th_redis_start(&port);
    ASSERT_EQ(port, first);
    (void)snprintf(portstr, sizeof(portstr), "%u", port);
    argv[2] = portstr;
    {
        const char *full[] = {argv[0], argv[1], argv[2], "ping", NULL};
        cli = th_spawn(full, NULL);
    }
    ASSERT_EQ(th_wait_exit(cli, 10000), 0);
    log = th_log_read(cli);
    ASSERT_STR_CONTAINS(log, "PONG");
    free(log);
    ASSERT_EQ(th_kill(pid, SIGTERM), 0);
}

static void test_consul_agent_answers_with_a_leader(void)
{
    unsigned port = 0;
    pid_t pid = th_consul_start(&port);
    char *url = NULL, *body = NULL;
    long st = 0;
    ASSERT_GT(port, 0);
    url = malloc(64);
    ASSERT_NOT_NULL(url);
    (void)snprintf(url, 64, "http://127.0.0.1:%u/v1/status/leader", port);
    ASSERT_EQ(th_http("GET", url, NULL, NULL, &st, &body, NULL), 0);
    ASSERT_EQ(st, 200);
    ASSERT_STR_CONTAINS(body, "\"127.0.0.1:");
    free(body);
    ASSERT_NE(th_kill(pid, SIGTERM), -1);
    ASSERT_EQ(th_http("GET", url, NULL, NULL, &st, NULL, NULL), -1); /* it is gone */
    free(url);
}

int main(void)
{
    RUN(test_redis_starts_and_restarts_on_the_same_port);
    RUN(test_consul_agent_answers_with_a_leader);
    return 0;
}
