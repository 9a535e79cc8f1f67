/* The common service life (shared/service.h) in a real child process: this
 * test binary re-executes itself as a tiny service (`serve` mode) and checks
 * --check-config/--help, bad env values, registration in the test bed's
 * Consul (visible in /v1/health/service), a prompt and clean SIGTERM with
 * deregistration, and background retries while Consul is down. */
#include "check.h"
#include "harness.h"
#include "shared/service.h"
#include "shared/log.h"
#include "shared/xalloc.h"

#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- the child: a minimal service ---- */

static void h_hello(struct sh_http_req *req, struct sh_http_resp *resp, void *arg)
{
    (void)req;
    sh_http_resp_json(resp, 200, json_pack("{s:s}", "hello", (const char *)arg));
}

static int serve(int argc, char **argv)
{
    static const struct sh_http_route routes[] = {{"GET", "/hello", h_hello, 0},
                                                  {NULL, NULL, NULL, 0}};
    const char *tags[] = {"collection=quotes", "config=abc", NULL};
    const char *name = getenv("T_SVC_NAME") ? getenv("T_SVC_NAME") : "t-svc";
    struct sh_service_config cfg;
    struct sh_service_opts o = {0};
    struct sh_service *s;
    struct sh_err err;

    long extra_n = 0;
    const struct sh_envconf extra[] = {
        {"T_EXTRA", SH_ENV_INT, &extra_n, "5", 1, 10, "a service's own setting"},
        {NULL, 0, NULL, NULL, 0, 0, NULL},
    };

    sh_service_config_load_ex(&cfg, name, 3999, extra, argc, argv);
    o.name = name;
    o.cfg = &cfg;
    o.routes = routes;
    o.arg = (void *)"world";
    o.tags = tags;
    s = sh_service_start(&o, &err);
    if (!s)
        sh_fatal("start failed: %s", err.msg);
    sh_service_wait(s);
    sh_service_stop(s);
    sh_service_config_done(&cfg);
    return 0;
}

/* ---- the tests ---- */

/* check.h's REQUIRE_ENV does not compile as an expression; same rule here:
 * a missing test-bed variable is a failure, never a skip. */
static const char *self;

static pid_t spawn_self(const char *arg, const char *const env[])
{
    const char *argv[] = {self, "serve", arg, NULL};
    return th_spawn(argv, env);
}

static void test_check_config_prints_config_and_ok(void)
{
    const char *env[] = {"PORT=1234", "SCRAPR_API_TOKEN=hunter2", "LOG_FORMAT=json", NULL};
    pid_t pid = spawn_self("--check-config", env);
    char *log;
    ASSERT_EQ(th_wait_exit(pid, 10000), 0);
    log = th_log_read(pid);
    ASSERT_STR_CONTAINS(log, "PORT=1234\n");
    ASSERT_STR_CONTAINS(log, "SCRAPR_API_TOKEN=***\n");
    ASSERT_STR_CONTAINS(log, "LOG_FORMAT=json\n");
    ASSERT_STR_CONTAINS(log, "T_EXTRA=5\n");
    ASSERT_STR_CONTAINS(log, "configuration OK\n");
    ASSERT(strstr(log, "hunter2") == NULL);
    free(log);
}

static void test_default_port_and_help(void)
{
    const char *env[] = {"PORT", "CONSUL_HTTP_ADDR", NULL};
    pid_t pid = spawn_self("--check-config", env);
    char *log;
    ASSERT_EQ(th_wait_exit(pid, 10000), 0);
    log = th_log_read(pid);
    ASSERT_STR_CONTAINS(log, "PORT=3999\n");
    ASSERT_STR_CONTAINS(log, "CONSUL_HTTP_ADDR=127.0.0.1:8500\n");
    ASSERT_STR_CONTAINS(log, "LOG_LEVEL=info\n");
    free(log);
    pid = spawn_self("--help", NULL);
    ASSERT_EQ(th_wait_exit(pid, 10000), 0);
    log = th_log_read(pid);
    ASSERT_STR_CONTAINS(log, "--check-config");
    ASSERT_STR_CONTAINS(log, "SCRAPR_API_TOKEN");
    ASSERT_STR_CONTAINS(log, "T_EXTRA");
    free(log);
}

static void expect_config_error(const char *env_kv, const char *want)
{
    const char *env[] = {env_kv, NULL};
    pid_t pid = spawn_self("--check-config", env);
    char *log;
    ASSERT_EQ(th_wait_exit(pid, 10000), 1);
    log = th_log_read(pid);
    ASSERT_STR_CONTAINS(log, want);
    ASSERT(strstr(log, "configuration OK") == NULL);
    free(log);
}

static void test_bad_values_exit_1_naming_the_key(void)
{
    expect_config_error("PORT=abc", "PORT: 'abc' is not an integer");
    expect_config_error("PORT=70000", "PORT: 70000 is out of range");
    expect_config_error("LOG_LEVEL=loud", "LOG_LEVEL: 'loud'");
    expect_config_error("LOG_FORMAT=xml", "LOG_FORMAT: 'xml'");
    expect_config_error("CONSUL_HTTP_ADDR=a b", "CONSUL_HTTP_ADDR:");
    expect_config_error("T_EXTRA=11", "T_EXTRA: 11 is out of range");
    {
        const char *argv[] = {self, "serve", "--bogus", NULL};
        pid_t pid = th_spawn(argv, NULL);
        ASSERT_EQ(th_wait_exit(pid, 10000), 1);
    }
}

/* Number of passing instances of `name` with id `id` in Consul at addr; -1 if it does not answer.
 */
static int consul_passing(const char *addr, const char *name, const char *id)
{
    char *url = sh_xasprintf("http://%s/v1/health/service/%s?passing", addr, name);
    char *body = NULL;
    long st = 0;
    int n = 0;
    json_t *j;
    /* -1 while the agent is not up yet or has no leader */
    if (th_http("GET", url, NULL, NULL, &st, &body, NULL) < 0 || st != 200) {
        free(body);
        free(url);
        return -1;
    }
    j = json_loads(body, 0, NULL);
    ASSERT_NOT_NULL(j);
    for (size_t i = 0; i < json_array_size(j); i++) {
        json_t *svc = json_object_get(json_array_get(j, i), "Service");
        const char *sid = json_string_value(json_object_get(svc, "ID"));
        if (sid && !strcmp(sid, id))
            n++;
    }
    json_decref(j);
    free(body);
    free(url);
    return n;
}

/* The id sh_service_start registers: name, address, hostname (replicas may
 * share an address), port. */
static char *expected_id(const char *name, unsigned port)
{
    char host[256] = "";
    ASSERT_EQ(gethostname(host, sizeof(host) - 1), 0);
    return sh_xasprintf("%s-127.0.0.1-%s-%u", name, host, port);
}

/* Any registration (passing or not) of id in the agent's catalog. */
static int consul_known(const char *addr, const char *id)
{
    char *url = sh_xasprintf("http://%s/v1/agent/services", addr);
    char *body = NULL;
    long st = 0;
    int known;
    json_t *j;
    ASSERT_EQ(th_http("GET", url, NULL, NULL, &st, &body, NULL), 0);
    ASSERT_EQ(st, 200);
    j = json_loads(body, 0, NULL);
    ASSERT_NOT_NULL(j);
    known = json_object_get(j, id) != NULL;
    json_decref(j);
    free(body);
    free(url);
    return known;
}

static void wait_passing(const char *addr, const char *name, const char *id, long ms)
{
    int64_t deadline = th_now_ms() + ms;
    while (consul_passing(addr, name, id) != 1) {
        if (th_now_ms() > deadline)
            CHECK_FAIL("%s never became passing in Consul %s", id, addr);
        (void)usleep(100000);
    }
}

static void test_registers_in_consul_and_deregisters_on_sigterm(void)
{
    const char *consul = REQUIRE_ENV("CONSUL_HTTP_ADDR");
    char *name = th_unique("t-svc-life");
    unsigned port = th_free_port();
    char *env_port = sh_xasprintf("PORT=%u", port), *env_name = sh_xasprintf("T_SVC_NAME=%s", name);
    char *id = expected_id(name, port);
    char *hello = sh_xasprintf("http://127.0.0.1:%u/hello", port);
    const char *env[] = {env_port, env_name, "SERVICE_ADDRESS=127.0.0.1", "SCRAPR_API_TOKEN", NULL};
    pid_t pid = spawn_self(NULL, env);
    char *log, *body = NULL;
    long st = 0;
    int64_t t0;

    ASSERT_EQ(th_wait_http(hello, 15000), 0);
    ASSERT_EQ(th_http("GET", hello, NULL, NULL, &st, &body, NULL), 0);
    ASSERT_EQ(st, 200);
    ASSERT_STR_EQ(body, "{\"hello\":\"world\"}");
    free(body);
    wait_passing(consul, name, id, 15000);

    t0 = th_now_ms();
    ASSERT_EQ(th_kill(pid, SIGTERM), 0);
    ASSERT_LT(th_now_ms() - t0, 3000);
    ASSERT_EQ(consul_known(consul, id), 0);
    ASSERT_EQ(consul_passing(consul, name, id), 0); /* gone at once, not after the 1m reaper */
    log = th_log_read(pid);
    ASSERT_STR_CONTAINS(log, "write APIs are open");
    ASSERT_STR_CONTAINS(log, "consul registered");
    ASSERT_STR_CONTAINS(log, "consul deregistered");
    free(log);
    free(name);
    free(env_port);
    free(env_name);
    free(id);
    free(hello);
}

static void test_registration_retries_until_consul_comes_up(void)
{
    unsigned cport = th_free_port(), port = th_free_port();
    char *caddr = sh_xasprintf("127.0.0.1:%u", cport);
    char *name = th_unique("t-svc-retry");
    char *env_consul = sh_xasprintf("CONSUL_HTTP_ADDR=%s", caddr);
    char *env_port = sh_xasprintf("PORT=%u", port), *env_name = sh_xasprintf("T_SVC_NAME=%s", name);
    char *id = expected_id(name, port);
    char *health = sh_xasprintf("http://127.0.0.1:%u/health", port);
    const char *env[] = {env_consul, env_port, env_name, "SERVICE_ADDRESS=127.0.0.1", NULL};
    pid_t svc = spawn_self(NULL, env), agent;
    char *log;
    long st = 0;

    /* Consul is down: the service serves anyway */
    ASSERT_EQ(th_wait_http(health, 15000), 0);
    ASSERT_EQ(th_http("GET", health, NULL, NULL, &st, NULL, NULL), 0);
    ASSERT_EQ(st, 200);
    (void)usleep(2500000); /* at least one retry happens while it is down */

    agent = th_consul_start(&cport);
    wait_passing(caddr, name, id, 30000);
    ASSERT_EQ(th_kill(svc, SIGINT), 0);
    ASSERT_EQ(consul_known(caddr, id), 0);
    log = th_log_read(svc);
    ASSERT_STR_CONTAINS(log, "consul registration failed, retrying");
    ASSERT_STR_CONTAINS(log, "consul registered");
    free(log);

    /* stopping while Consul is unreachable is still prompt */
    ASSERT_NE(th_kill(agent, SIGTERM), -1); /* consul exits 1 after a leave */
    svc = spawn_self(NULL, env);
    ASSERT_EQ(th_wait_http(health, 15000), 0);
    {
        int64_t t0 = th_now_ms();
        ASSERT_EQ(th_kill(svc, SIGTERM), 0);
        ASSERT_LT(th_now_ms() - t0, 3000);
    }
    free(caddr);
    free(name);
    free(env_consul);
    free(env_port);
    free(env_name);
    free(id);
    free(health);
}

/* A Consul agent that restarts empty (a dev agent, or lost state) forgets its
 * services; ours must notice and register again on its own. */
static void test_registers_again_after_consul_agent_restart(void)
{
    unsigned cport = 0, port = th_free_port();
    pid_t agent = th_consul_start(&cport), svc;
    char *caddr = sh_xasprintf("127.0.0.1:%u", cport);
    char *name = th_unique("t-svc-again");
    char *env_consul = sh_xasprintf("CONSUL_HTTP_ADDR=%s", caddr);
    char *env_port = sh_xasprintf("PORT=%u", port), *env_name = sh_xasprintf("T_SVC_NAME=%s", name);
    char *id = expected_id(name, port);
    const char *env[] = {env_consul, env_port, env_name, "SERVICE_ADDRESS=127.0.0.1", NULL};
    char *log;

    svc = spawn_self(NULL, env);
    wait_passing(caddr, name, id, 30000);
    (void)th_kill(agent, SIGKILL);
    agent = th_consul_start(&cport); /* same port, empty state */
    ASSERT_EQ(consul_known(caddr, id), 0);
    wait_passing(caddr, name, id, 30000);
    log = th_log_read(svc);
    ASSERT_STR_CONTAINS(log, "consul agent forgot this service, registering again");
    free(log);
    ASSERT_EQ(th_kill(svc, SIGTERM), 0);
    ASSERT_EQ(consul_known(caddr, id), 0);
    (void)th_kill(agent, SIGTERM);
    free(caddr);
    free(name);
    free(env_consul);
    free(env_port);
    free(env_name);
    free(id);
}

static void *stopper(void *arg)
{
    (void)arg;
    (void)usleep(100000);
    sh_service_request_stop();
    return NULL;
}

static void test_sleep_returns_promptly_on_stop(void)
{
    pthread_t t;
    int64_t t0 = th_now_ms();
    ASSERT_EQ(sh_service_stopping(), 0);
    ASSERT_EQ(sh_service_sleep(30), 0);
    ASSERT_EQ(pthread_create(&t, NULL, stopper, NULL), 0);
    ASSERT_NE(sh_service_sleep(10000), 0);
    ASSERT_LT(th_now_ms() - t0, 1000);
    ASSERT_EQ(pthread_join(t, NULL), 0);
    ASSERT_NE(sh_service_stopping(), 0);
}

int main(int argc, char **argv)
{
    if (argc >= 2 && !strcmp(argv[1], "serve"))
        return serve(argc - 1, argv + 1);
    self = "/proc/self/exe";
    {
        static char path[4096];
        ssize_t n = readlink("/proc/self/exe", path, sizeof(path) - 1);
        ASSERT_GT(n, 0);
        path[n] = '\0';
        self = path;
    }
    RUN(test_check_config_prints_config_and_ok);
    RUN(test_default_port_and_help);
    RUN(test_bad_values_exit_1_naming_the_key);
    RUN(test_registers_in_consul_and_deregisters_on_sigterm);
    RUN(test_registration_retries_until_consul_comes_up);
    RUN(test_registers_again_after_consul_agent_restart);
    RUN(test_sleep_returns_promptly_on_stop); /* last: the stop flag is sticky */
    return 0;
}
