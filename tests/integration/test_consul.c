/* Integration tests for shared/consul.h against the test bed's Consul agent
 * (CONSUL_HTTP_ADDR): registration with a real HTTP check, health lookups,
 * blocking KV reads, CAS, counters, sessions and locks. A tiny libmicrohttpd
 * listener plays the service whose check Consul runs (/health → 200,
 * /bad → 500). Discovery-cache tests are in test_consul_discovery.c. */
#include <inttypes.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "harness.h"
#include "shared/consul.h"
#include "shared/xalloc.h"

static struct sh_consul *consul;

/* ---- tiny health-check target (also a fake agent that records X-Consul-Token) ---- */

static char seen_token[64];
static pthread_mutex_t seen_mu = PTHREAD_MUTEX_INITIALIZER;

static enum MHD_Result on_check(void *cls, struct MHD_Connection *conn, const char *url,
                                const char *method, const char *version, const char *upload,
                                size_t *upload_len, void **req_cls)
{
    struct MHD_Response *resp;
    enum MHD_Result rc;
    int bad = strcmp(url, "/bad") == 0;

    const char *tok = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "X-Consul-Token");

    (void)cls, (void)method, (void)version, (void)upload, (void)upload_len, (void)req_cls;
    if (tok) {
        (void)pthread_mutex_lock(&seen_mu);
        (void)snprintf(seen_token, sizeof(seen_token), "%s", tok);
        (void)pthread_mutex_unlock(&seen_mu);
    }
    resp = MHD_create_response_from_buffer(2, (void *)(bad ? "no" : "ok"), MHD_RESPMEM_PERSISTENT);
    rc = MHD_queue_response(conn, bad ? 500 : 200, resp);
    MHD_destroy_response(resp);
    return rc;
}

static struct MHD_Daemon *check_target(unsigned *ret_port)
{
    struct MHD_Daemon *d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG, 0,
                                            NULL, NULL, on_check, NULL, MHD_OPTION_END);
    const union MHD_DaemonInfo *info;

    ASSERT_NOT_NULL(d);
    info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
    ASSERT_NOT_NULL(info);
    *ret_port = info->port;
    return d;
}

/* Polls health/service until `want` passing instances are listed (or 15 s pass). */
static size_t wait_passing(const char *name, const char *tag, size_t want,
                           struct sh_consul_instances *ret)
{
    int64_t deadline = th_now_ms() + 15000;
    struct sh_err err = {0};

    for (;;) {
        struct sh_consul_instances in = {0};
        ASSERT_EQ(sh_consul_health_service(consul, name, tag, 0, 0, &in, &err), 0);
        if (in.n == want || th_now_ms() > deadline) {
            *ret = in;
            return in.n;
        }
        sh_consul_instances_done(&in);
        usleep(100 * 1000);
    }
}

static void test_register_passing_check_then_deregister(void)
{
    unsigned port;
    struct MHD_Daemon *d = check_target(&port);
    char *name = th_unique("t_consul_svc"), *id1 = th_unique("i1"), *id2 = th_unique("i2");
    const char *tags[] = {"collection=quotes", "config=abc", NULL};
    struct sh_consul_service s = {.name = name,
                                  .id = id1,
                                  .address = "127.0.0.1",
                                  .port = port,
                                  .tags = tags,
                                  .check_path = "/health",
                                  .check_interval = "1s",
                                  .deregister_after = "1m"};
    struct sh_consul_instances in = {0};
    struct sh_err err = {0};
    int64_t t0 = th_now_ms();

    ASSERT_EQ(sh_consul_register(consul, &s, &err), 0);
    /* A second instance whose check fails must never be listed as passing. */
    s.id = id2;
    s.check_path = "/bad";
    ASSERT_EQ(sh_consul_register(consul, &s, &err), 0);

    ASSERT_EQ(wait_passing(name, NULL, 1, &in), 1);
    fprintf(stderr, "   passing after %" PRId64 " ms\n", th_now_ms() - t0);
    ASSERT_STR_EQ(in.v[0].id, id1);
    ASSERT_STR_EQ(in.v[0].address, "127.0.0.1");
    ASSERT_EQ(in.v[0].port, port);
    ASSERT_STR_EQ(in.v[0].tags[0], "collection=quotes");
    ASSERT_STR_EQ(in.v[0].tags[1], "config=abc");
    ASSERT_NULL(in.v[0].tags[2]);
    ASSERT_GT(in.index, 0);
    sh_consul_instances_done(&in);

    /* Give the failing check time to run several times: still only one passing. */
    usleep(2500 * 1000);
    ASSERT_EQ(sh_consul_health_service(consul, name, NULL, 0, 0, &in, &err), 0);
    ASSERT_EQ(in.n, 1);
    ASSERT_STR_EQ(in.v[0].id, id1);
    sh_consul_instances_done(&in);

    /* Tag filter. */
    ASSERT_EQ(sh_consul_health_service(consul, name, "config=abc", 0, 0, &in, &err), 0);
    ASSERT_EQ(in.n, 1);
    sh_consul_instances_done(&in);
    ASSERT_EQ(sh_consul_health_service(consul, name, "config=zzz", 0, 0, &in, &err), 0);
    ASSERT_EQ(in.n, 0);
    sh_consul_instances_done(&in);

    /* The service dies: its check fails and the discovery cache drops it. */
    {
        struct sh_discovery *disc = sh_discovery_new(consul, name, NULL);
        char *url = NULL, *want = sh_xasprintf("http://127.0.0.1:%u", port);
        int64_t t_stop;
        ASSERT_EQ(sh_discovery_pick(disc, 5000, &url, &err), 0);
        ASSERT_STR_EQ(url, want);
        free(url);
        MHD_stop_daemon(d);
        d = NULL;
        t_stop = th_now_ms();
        while (sh_discovery_pick(disc, 0, &url, &err) == 0) {
            free(url);
            ASSERT_LT(th_now_ms() - t_stop, 10000);
            usleep(20 * 1000);
        }
        ASSERT_EQ(err.code, SH_ENOTFOUND);
        fprintf(stderr, "   discovery dropped the dead instance %" PRId64 " ms after it stopped\n",
                th_now_ms() - t_stop);
        sh_discovery_free(disc);
        free(want);
    }

    ASSERT_EQ(sh_consul_deregister(consul, id1, &err), 0);
    ASSERT_EQ(sh_consul_deregister(consul, id2, &err), 0);
    ASSERT_EQ(wait_passing(name, NULL, 0, &in), 0);
    sh_consul_instances_done(&in);

    /* Bad input is refused before any request. */
    s.port = 0;
    ASSERT_EQ(sh_consul_register(consul, &s, &err), -1);
    ASSERT_EQ(err.code, SH_ECONFIG);
    free(name);
    free(id1);
    free(id2);
}

struct waiter {
    const char *key;
    uint64_t index;
    char *value;
    int rc;
    int64_t woke_ms;
};

static void *blocking_get(void *arg)
{
    struct waiter *w = arg;
    uint64_t idx = 0;
    struct sh_err err = {0};
    uint64_t wait_index = w->index;

    /* Consul may answer a blocking query early without a change (for an absent key, any
     * KV write in the agent wakes it; parallel tests write KV): block again, as a real
     * client does, until the key exists with a new index. */
    do {
        free(w->value);
        w->value = NULL;
        w->rc = sh_consul_kv_get(consul, w->key, wait_index, 10, &w->value, &idx, &err);
        if (idx > wait_index)
            wait_index = idx;
    } while (w->rc == 0 || (w->rc == 1 && idx == w->index));
    w->woke_ms = th_now_ms();
    if (w->rc < 0)
        fprintf(stderr, "blocking get: %s\n", err.msg);
    return NULL;
}

static void test_blocking_kv_get_wakes_on_put(void)
{
    char *key = th_unique("scrapr/test/blocking");
    struct sh_err err = {0};
    int64_t worst = 0, sum = 0;
    const int rounds = 5;

    ASSERT_EQ(sh_consul_kv_put(consul, key, "v0", &err), 0);
    for (int i = 0; i < rounds; i++) {
        struct waiter w = {.key = key};
        char *v = NULL, next[16];
        pthread_t t;
        int64_t put_ms, lat;

        ASSERT_EQ(sh_consul_kv_get(consul, key, 0, 0, &v, &w.index, &err), 1);
        free(v);
        ASSERT_GT(w.index, 0);
        ASSERT_EQ(pthread_create(&t, NULL, blocking_get, &w), 0);
        usleep(300 * 1000); /* the query is parked in Consul by now */
        ASSERT_EQ(w.woke_ms, 0);
        (void)snprintf(next, sizeof(next), "v%d", i + 1);
        put_ms = th_now_ms();
        ASSERT_EQ(sh_consul_kv_put(consul, key, next, &err), 0);
        ASSERT_EQ(pthread_join(t, NULL), 0);
        ASSERT_EQ(w.rc, 1);
        ASSERT_STR_EQ(w.value, next);
        lat = w.woke_ms - put_ms;
        ASSERT_LT(lat, 1000);
        worst = lat > worst ? lat : worst;
        sum += lat;
        free(w.value);
    }
    fprintf(stderr,
            "   blocking KV get woke %.1f ms avg, %" PRId64 " ms worst after the put (%d rounds)\n",
            (double)sum / rounds, worst, rounds);

    /* Without a change the blocking query returns after `wait` with the same value. */
    {
        struct waiter w = {.key = key};
        char *v = NULL;
        int64_t t0;
        ASSERT_EQ(sh_consul_kv_get(consul, key, 0, 0, &v, &w.index, &err), 1);
        free(v);
        t0 = th_now_ms();
        ASSERT_EQ(sh_consul_kv_get(consul, key, w.index, 1, &v, NULL, &err), 1);
        ASSERT_GE(th_now_ms() - t0, 900);
        ASSERT_STR_EQ(v, "v5");
        free(v);
    }
    /* An absent key: block on its index, wake when another thread creates it. */
    ASSERT_EQ(sh_consul_kv_delete(consul, key, &err), 0);
    {
        struct waiter w = {.key = key};
        char *v = (char *)"x";
        pthread_t t;
        int64_t put_ms;
        ASSERT_EQ(sh_consul_kv_get(consul, key, 0, 0, &v, &w.index, &err), 0);
        ASSERT_NULL(v);
        ASSERT_GT(w.index, 0);
        ASSERT_EQ(pthread_create(&t, NULL, blocking_get, &w), 0);
        usleep(300 * 1000);
        ASSERT_EQ(w.woke_ms, 0);
        put_ms = th_now_ms();
        ASSERT_EQ(sh_consul_kv_put(consul, key, "born", &err), 0);
        ASSERT_EQ(pthread_join(t, NULL), 0);
        ASSERT_EQ(w.rc, 1);
        ASSERT_STR_EQ(w.value, "born");
        ASSERT_LT(w.woke_ms - put_ms, 1000);
        free(w.value);
    }
    ASSERT_EQ(sh_consul_kv_delete(consul, key, &err), 0);
    free(key);
}

static void test_kv_values_absent_empty_binary(void)
{
    char *key = th_unique("scrapr/test/kv"), *v = (char *)"x";
    const char *utf8 = "caf\xc3\xa9 / ?&= %20 \xe2\x9c\x93";
    struct sh_err err = {0};
    uint64_t idx = 0;

    ASSERT_EQ(sh_consul_kv_get(consul, key, 0, 0, &v, &idx, &err), 0);
    ASSERT_NULL(v);
    ASSERT_EQ(sh_consul_kv_put(consul, key, "", &err), 0);
    ASSERT_EQ(sh_consul_kv_get(consul, key, 0, 0, &v, &idx, &err), 1);
    ASSERT_STR_EQ(v, "");
    free(v);
    ASSERT_EQ(sh_consul_kv_put(consul, key, utf8, &err), 0);
    ASSERT_EQ(sh_consul_kv_get(consul, key, 0, 0, &v, &idx, &err), 1);
    ASSERT_STR_EQ(v, utf8);
    free(v);
    for (int len = 0; len < 8; len++) { /* every base64 padding case */
        char val[9] = "abcdefgh";
        val[len] = '\0';
        ASSERT_EQ(sh_consul_kv_put(consul, key, val, &err), 0);
        ASSERT_EQ(sh_consul_kv_get(consul, key, 0, 0, &v, NULL, &err), 1);
        ASSERT_STR_EQ(v, val);
        free(v);
    }
    ASSERT_EQ(sh_consul_kv_delete(consul, key, &err), 0);
    ASSERT_EQ(sh_consul_kv_get(consul, key, 0, 0, &v, &idx, &err), 0);
    free(key);
}

static void test_cas_conflict_returns_zero(void)
{
    char *key = th_unique("scrapr/test/cas"), *v = NULL;
    struct sh_err err = {0};
    uint64_t idx = 0;

    ASSERT_EQ(sh_consul_kv_cas(consul, key, "a", 0, &err), 1); /* absent → created */
    ASSERT_EQ(sh_consul_kv_cas(consul, key, "b", 0, &err), 0); /* exists → lost */
    ASSERT_EQ(sh_consul_kv_get(consul, key, 0, 0, &v, &idx, &err), 1);
    ASSERT_STR_EQ(v, "a");
    free(v);
    ASSERT_EQ(sh_consul_kv_cas(consul, key, "c", idx, &err), 1);
    ASSERT_EQ(sh_consul_kv_cas(consul, key, "d", idx, &err), 0); /* stale index */
    ASSERT_EQ(sh_consul_kv_get(consul, key, 0, 0, &v, NULL, &err), 1);
    ASSERT_STR_EQ(v, "c");
    free(v);
    ASSERT_EQ(sh_consul_kv_delete(consul, key, &err), 0);
    free(key);
}

#define INCRS 25
struct incr_arg {
    const char *key;
    uint64_t got[INCRS];
};

static void *incr_many(void *arg)
{
    struct incr_arg *a = arg;
    struct sh_err err = {0};

    for (int i = 0; i < INCRS; i++) {
        if (sh_consul_kv_incr(consul, a->key, &a->got[i], &err) < 0)
            CHECK_FAIL("incr: %s", err.msg);
    }
    return NULL;
}

static void test_incr_from_two_threads_gives_distinct_values(void)
{
    char *key = th_unique("scrapr/test/incr"), *v = NULL;
    struct incr_arg a = {.key = key}, b = {.key = key};
    char seen[2 * INCRS + 1] = {0};
    pthread_t ta, tb;
    struct sh_err err = {0};
    uint64_t x;

    ASSERT_EQ(pthread_create(&ta, NULL, incr_many, &a), 0);
    ASSERT_EQ(pthread_create(&tb, NULL, incr_many, &b), 0);
    ASSERT_EQ(pthread_join(ta, NULL), 0);
    ASSERT_EQ(pthread_join(tb, NULL), 0);
    for (int i = 0; i < INCRS; i++) {
        ASSERT_GE(a.got[i], 1);
        ASSERT_LE(a.got[i], 2 * INCRS);
        ASSERT_GE(b.got[i], 1);
        ASSERT_LE(b.got[i], 2 * INCRS);
        ASSERT_EQ(seen[a.got[i]], 0);
        seen[a.got[i]] = 1;
        ASSERT_EQ(seen[b.got[i]], 0);
        seen[b.got[i]] = 1;
        if (i > 0) { /* each thread sees its own values increase */
            ASSERT_GT(a.got[i], a.got[i - 1]);
            ASSERT_GT(b.got[i], b.got[i - 1]);
        }
    }
    ASSERT_EQ(sh_consul_kv_get(consul, key, 0, 0, &v, NULL, &err), 1);
    ASSERT_EQ(strtoull(v, NULL, 10), 2 * INCRS);
    free(v);
    /* A non-counter value is refused, not overwritten. */
    ASSERT_EQ(sh_consul_kv_put(consul, key, "hello", &err), 0);
    ASSERT_EQ(sh_consul_kv_incr(consul, key, &x, &err), -1);
    ASSERT_EQ(err.code, SH_EPROTO);
    ASSERT_EQ(sh_consul_kv_delete(consul, key, &err), 0);
    free(key);
}

struct contender {
    const char *key;
    const char *session;
    int rc;
};

static void *contend(void *arg)
{
    struct contender *c = arg;
    struct sh_err err = {0};

    c->rc = sh_consul_lock_acquire(consul, c->key, c->session, c->session, &err);
    return NULL;
}

static void test_lock_held_by_exactly_one_of_two(void)
{
    char *key = th_unique("scrapr/test/leader"), *s1 = NULL, *s2 = NULL, *v = NULL;
    struct sh_err err = {0};

    ASSERT_EQ(sh_consul_session_create(consul, "t1", "15s", "0s", "release", &s1, &err), 0);
    ASSERT_EQ(sh_consul_session_create(consul, "t2", "15s", "0s", "delete", &s2, &err), 0);
    ASSERT_STR_EQ(s1 == NULL || s2 == NULL ? "" : "ok", "ok");
    ASSERT(strcmp(s1, s2) != 0);
    for (int round = 0; round < 3; round++) {
        struct contender a = {key, s1, -2}, b = {key, s2, -2};
        pthread_t ta, tb;
        struct contender *won, *lost;

        ASSERT_EQ(pthread_create(&ta, NULL, contend, &a), 0);
        ASSERT_EQ(pthread_create(&tb, NULL, contend, &b), 0);
        ASSERT_EQ(pthread_join(ta, NULL), 0);
        ASSERT_EQ(pthread_join(tb, NULL), 0);
        ASSERT_EQ(a.rc + b.rc, 1); /* one 1, one 0 */
        ASSERT(a.rc >= 0 && b.rc >= 0);
        won = a.rc == 1 ? &a : &b;
        lost = a.rc == 1 ? &b : &a;
        ASSERT_EQ(sh_consul_kv_get(consul, key, 0, 0, &v, NULL, &err), 1);
        ASSERT_STR_EQ(v, won->session);
        free(v);
        /* Re-acquiring by the holder succeeds, the loser still cannot. */
        ASSERT_EQ(sh_consul_lock_acquire(consul, key, won->session, won->session, &err), 1);
        ASSERT_EQ(sh_consul_lock_acquire(consul, key, lost->session, lost->session, &err), 0);
        /* Only the holder can release. */
        ASSERT_EQ(sh_consul_lock_release(consul, key, lost->session, &err), -1);
        ASSERT_EQ(err.code, SH_ECONFLICT);
        ASSERT_EQ(sh_consul_lock_release(consul, key, won->session, &err), 0);
        ASSERT_EQ(sh_consul_lock_acquire(consul, key, lost->session, lost->session, &err), 1);
        ASSERT_EQ(sh_consul_lock_release(consul, key, lost->session, &err), 0);
    }
    /* Sessions: renew works while alive; destroying the holder frees the lock. */
    ASSERT_EQ(sh_consul_session_renew(consul, s1, &err), 0);
    ASSERT_EQ(sh_consul_lock_acquire(consul, key, s1, "x", &err), 1);
    ASSERT_EQ(sh_consul_session_destroy(consul, s1, &err), 0);
    ASSERT_EQ(sh_consul_session_renew(consul, s1, &err), -1);
    ASSERT_EQ(err.code, SH_ENOTFOUND);
    ASSERT_EQ(sh_consul_lock_acquire(consul, key, s2, "y", &err), 1);
    ASSERT_EQ(sh_consul_session_destroy(consul, s2, &err), 0);
    /* Behavior "delete": destroying s2 removed the key. */
    ASSERT_EQ(sh_consul_kv_get(consul, key, 0, 0, &v, NULL, &err), 0);
    /* An unknown session cannot lock. */
    ASSERT_EQ(sh_consul_lock_acquire(consul, key, s1, "z", &err), -1);
    free(s1);
    free(s2);
    free(key);
}

static void test_token_is_sent_and_garbage_answers_are_eproto(void)
{
    unsigned port;
    struct MHD_Daemon *d = check_target(&port);
    char *addr = sh_xasprintf("http://127.0.0.1:%u/", port), *v = NULL;
    struct sh_err err = {0};
    struct sh_consul *c = sh_consul_new(addr, "t0ken-123", &err);
    struct sh_consul_instances in = {0};

    ASSERT_NOT_NULL(c);
    /* The fake agent answers "ok" to everything: not what Consul would say. */
    ASSERT_EQ(sh_consul_kv_put(c, "scrapr/x", "1", &err), -1);
    ASSERT_EQ(err.code, SH_EPROTO);
    (void)pthread_mutex_lock(&seen_mu);
    ASSERT_STR_EQ(seen_token, "t0ken-123");
    (void)pthread_mutex_unlock(&seen_mu);
    ASSERT_EQ(sh_consul_kv_get(c, "scrapr/x", 0, 0, &v, NULL, &err), -1);
    ASSERT_EQ(err.code, SH_EPROTO);
    ASSERT_EQ(sh_consul_health_service(c, "x", NULL, 0, 0, &in, &err), -1);
    ASSERT_EQ(err.code, SH_EPROTO);
    sh_consul_free(c);
    MHD_stop_daemon(d);
    free(addr);
}

static void test_unreachable_agent_is_an_error(void)
{
    struct sh_err err = {0};
    char *addr = sh_xasprintf("127.0.0.1:%u", th_free_port()), *v = NULL;
    struct sh_consul *c = sh_consul_new(addr, NULL, &err);

    ASSERT_NOT_NULL(c);
    ASSERT_EQ(sh_consul_kv_get(c, "scrapr/x", 0, 0, &v, NULL, &err), -1);
    ASSERT_EQ(err.code, SH_EUPSTREAM);
    ASSERT_STR_CONTAINS(err.msg, "consul");
    ASSERT_NULL(sh_consul_new("", NULL, &err));
    ASSERT_EQ(err.code, SH_ECONFIG);
    ASSERT_NULL(sh_consul_new("127.0.0.1:8500", "tok\nX: y", &err));
    ASSERT_EQ(err.code, SH_ECONFIG);
    ASSERT_NULL(sh_consul_new("unix:///run/consul.sock", NULL, &err));
    ASSERT_EQ(err.code, SH_ECONFIG);
    ASSERT_NULL(sh_consul_new("127.0.0.1:8500\r\nX-Evil: 1", NULL, &err));
    ASSERT_EQ(err.code, SH_ECONFIG);
    /* Missing names are SH_ECONFIG, not a crash. */
    {
        struct sh_consul_instances in = {0};
        uint64_t x;
        char *id = NULL;
        ASSERT_EQ(sh_consul_kv_get(consul, NULL, 0, 0, &v, NULL, &err), -1);
        ASSERT_EQ(err.code, SH_ECONFIG);
        ASSERT_EQ(sh_consul_kv_put(consul, "", "x", &err), -1);
        ASSERT_EQ(err.code, SH_ECONFIG);
        ASSERT_EQ(sh_consul_kv_incr(consul, NULL, &x, &err), -1);
        ASSERT_EQ(sh_consul_kv_delete(consul, NULL, &err), -1);
        ASSERT_EQ(sh_consul_health_service(consul, NULL, NULL, 0, 0, &in, &err), -1);
        ASSERT_EQ(err.code, SH_ECONFIG);
        ASSERT_EQ(sh_consul_lock_acquire(consul, "scrapr/x", NULL, "v", &err), -1);
        ASSERT_EQ(sh_consul_lock_release(consul, "scrapr/x", "", &err), -1);
        ASSERT_EQ(sh_consul_session_renew(consul, NULL, &err), -1);
        ASSERT_EQ(sh_consul_deregister(consul, NULL, &err), -1);
        ASSERT_EQ(err.code, SH_ECONFIG);
        /* Consul refuses a session TTL over 24 h: its answer becomes SH_EUPSTREAM. */
        ASSERT_EQ(sh_consul_session_create(consul, NULL, "100000s", NULL, NULL, &id, &err), -1);
        ASSERT_EQ(err.code, SH_EUPSTREAM);
        ASSERT_STR_CONTAINS(err.msg, "HTTP");
        ASSERT_NULL(id);
    }
    sh_consul_free(c);
    sh_consul_free(NULL);
    sh_discovery_free(NULL);
    free(addr);
}

int main(void)
{
    struct sh_err err = {0};

    consul = sh_consul_new(REQUIRE_ENV("CONSUL_HTTP_ADDR"), NULL, &err);
    ASSERT_NOT_NULL(consul);
    RUN(test_register_passing_check_then_deregister);
    RUN(test_blocking_kv_get_wakes_on_put);
    RUN(test_kv_values_absent_empty_binary);
    RUN(test_cas_conflict_returns_zero);
    RUN(test_incr_from_two_threads_gives_distinct_values);
    RUN(test_lock_held_by_exactly_one_of_two);
    RUN(test_token_is_sent_and_garbage_answers_are_eproto);
    RUN(test_unreachable_agent_is_an_error);
    sh_consul_free(consul);
    return 0;
}
