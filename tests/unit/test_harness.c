/* The test harness itself: MONGO_URL rewriting, header lookup, unique names,
 * spawning a child with extra env and collecting its exit code and log. */
#include "check.h"
#include "harness.h"

#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

static void check_mongo(const char *in, const char *db, const char *want)
{
    char *got;
    ASSERT_EQ(setenv("MONGO_URL", in, 1), 0);
    got = th_mongo_url(db);
    ASSERT_STR_EQ(got, want);
    free(got);
}

static void test_mongo_url_appends_or_replaces_the_database(void)
{
    check_mongo("mongodb://127.0.0.1:27017", "t1", "mongodb://127.0.0.1:27017/t1");
    check_mongo("mongodb://127.0.0.1:27017/", "t1", "mongodb://127.0.0.1:27017/t1");
    check_mongo("mongodb://h:1/?w=1", "t1", "mongodb://h:1/t1?w=1");
    check_mongo("mongodb://h:1?w=1", "t1", "mongodb://h:1/t1?w=1");
    check_mongo("mongodb://h:1/old?w=1&x=/y", "t1", "mongodb://h:1/t1?w=1&x=/y");
    check_mongo("mongodb://u:p@h:1,h:2/old", "t1", "mongodb://u:p@h:1,h:2/t1");
}

static void test_header_lookup_is_case_insensitive_and_trimmed(void)
{
    const char *raw = "HTTP/1.1 200 OK\r\nContent-Type:  text/plain \r\nX-A: 1\r\n\r\n";
    char *v = th_header(raw, "content-type");
    ASSERT_STR_EQ(v, "text/plain");
    free(v);
    v = th_header(raw, "x-a");
    ASSERT_STR_EQ(v, "1");
    free(v);
    ASSERT_NULL(th_header(raw, "X-Missing"));
    ASSERT_NULL(th_header(raw, "X"));
}

static void test_unique_names_differ(void)
{
    char *a = th_unique("t"), *b = th_unique("t");
    ASSERT(strcmp(a, b) != 0);
    ASSERT(strncmp(a, "t_", 2) == 0);
    free(a);
    free(b);
}

static void test_spawn_passes_env_and_reports_exit_code(void)
{
    const char *argv[] = {"sh", "-c", "echo \"v=$TH_X u=${HOME:-unset}\"; exit 3", NULL};
    const char *env[] = {"TH_X=42", "HOME", NULL};
    pid_t pid = th_spawn(argv, env);
    char *log;
    ASSERT_EQ(th_wait_exit(pid, 10000), 3);
    log = th_log_read(pid);
    ASSERT_STR_CONTAINS(log, "v=42 u=unset");
    free(log);
}

static void test_kill_reports_the_signal(void)
{
    const char *argv[] = {"sleep", "30", NULL};
    pid_t pid = th_spawn(argv, NULL);
    int64_t t0 = th_now_ms();
    ASSERT_EQ(th_kill(pid, SIGTERM), 128 + SIGTERM);
    ASSERT_LT(th_now_ms() - t0, 5000);
}

static void test_free_port_is_bindable_range(void)
{
    unsigned p = th_free_port();
    ASSERT_GT(p, 1024);
    ASSERT_LE(p, 65535);
}

int main(void)
{
    RUN(test_mongo_url_appends_or_replaces_the_database);
    RUN(test_header_lookup_is_case_insensitive_and_trimmed);
    RUN(test_unique_names_differ);
    RUN(test_spawn_passes_env_and_reports_exit_code);
    RUN(test_kill_reports_the_signal);
    RUN(test_free_port_is_bindable_range);
    return 0;
}
