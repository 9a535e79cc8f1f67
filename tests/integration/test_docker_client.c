/* shared/docker.h against the real Docker engine: ping/info, network ensure,
 * container life cycle by label, engine error messages, and the events
 * stream. Uses the local image built by orchestrator_image.sh; removes every
 * object it creates (all carry the label scrapr.test=<pid>). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "shared/docker.h"
#include "shared/xalloc.h"

static const char *image;
static char label[64];
static char prefix[64];

static void ensure_image(void)
{
    const char *src = getenv("SCRAPR_SOURCE_DIR");
    char *cmd;

    if (!src)
        CHECK_FAIL("SCRAPR_SOURCE_DIR is not set: run through ctest");
    cmd = sh_xasprintf("%s/tests/integration/orchestrator_image.sh >/dev/null", src);
    ASSERT_EQ(system(cmd), 0);
    free(cmd);
    image = "scrapr-test/busybox:latest";
}

static json_t *label_filter(void)
{
    return json_pack("{s:[s]}", "label", label);
}

static void test_bad_docker_host_is_a_config_error(void)
{
    struct sh_err err;
    struct sh_docker *d = sh_docker_new("ssh://example", &err);

    ASSERT_NULL(d);
    ASSERT_EQ(err.code, SH_ECONFIG);
    ASSERT_STR_CONTAINS(err.msg, "DOCKER_HOST");
    d = sh_docker_new("unix://relative.sock", &err);
    ASSERT_NULL(d);
    ASSERT_EQ(err.code, SH_ECONFIG);
}

static void test_env_tcp_tls_endpoint(void)
{
    struct sh_err err;
    struct sh_docker *d;

    /* Port 1: nothing listens; the client must fail cleanly, not hang. */
    ASSERT_EQ(setenv("DOCKER_HOST", "tcp://127.0.0.1:1", 1), 0);
    ASSERT_EQ(setenv("DOCKER_TLS_VERIFY", "1", 1), 0);
    ASSERT_EQ(setenv("DOCKER_CERT_PATH", "/nonexistent-certs", 1), 0);
    d = sh_docker_new(NULL, &err);
    ASSERT_NOT_NULL(d);
    ASSERT_STR_EQ(sh_docker_endpoint(d), "https://127.0.0.1:1");
    ASSERT_EQ(sh_docker_ping(d, &err), -1);
    ASSERT_EQ(err.code, SH_EUPSTREAM);
    sh_docker_free(d);
    ASSERT_EQ(setenv("DOCKER_TLS_VERIFY", "0", 1), 0);
    d = sh_docker_new(NULL, &err);
    ASSERT_STR_EQ(sh_docker_endpoint(d), "http://127.0.0.1:1");
    sh_docker_free(d);
    ASSERT_EQ(unsetenv("DOCKER_HOST"), 0);
    ASSERT_EQ(unsetenv("DOCKER_TLS_VERIFY"), 0);
    ASSERT_EQ(unsetenv("DOCKER_CERT_PATH"), 0);
}

static void test_ping_and_info_answer(void)
{
    struct sh_err err;
    struct sh_docker *d = sh_docker_new(NULL, &err);
    json_t *info = NULL;

    ASSERT_NOT_NULL(d);
    ASSERT_EQ(sh_docker_ping(d, &err), 0);
    ASSERT_EQ(sh_docker_info(d, &info, &err), 0);
    ASSERT_NOT_NULL(json_object_get(info, "Swarm"));
    json_decref(info);
    sh_docker_free(d);
}

static void test_missing_socket_fails_cleanly(void)
{
    struct sh_err err;
    struct sh_docker *d = sh_docker_new("unix:///nonexistent/docker.sock", &err);

    ASSERT_NOT_NULL(d);
    ASSERT_EQ(sh_docker_ping(d, &err), -1);
    ASSERT_EQ(err.code, SH_EUPSTREAM);
    sh_docker_free(d);
}

static void test_engine_error_message_is_surfaced(void)
{
    struct sh_err err;
    struct sh_docker *d = sh_docker_new(NULL, &err);
    json_t *spec = json_pack("{s:s}", "Image", "scrapr-test/no-such-image:never");
    char *id = NULL;
    json_t *j = NULL;

    ASSERT_EQ(sh_docker_container_create(d, NULL, spec, &id, &err), -1);
    ASSERT_EQ(err.code, SH_ENOTFOUND);
    ASSERT_STR_CONTAINS(err.msg, "No such image");
    ASSERT_NULL(id);
    ASSERT_EQ(sh_docker_container_inspect(d, "scrapr-no-such-container", &j, &err), -1);
    ASSERT_EQ(err.code, SH_ENOTFOUND);
    ASSERT_STR_CONTAINS(err.msg, "No such container");
    ASSERT_NULL(j);
    json_decref(spec);
    sh_docker_free(d);
}

static void test_network_ensure_is_idempotent(void)
{
    struct sh_err err;
    struct sh_docker *d = sh_docker_new(NULL, &err);
    char *name = sh_xasprintf("%s-net", prefix);
    json_t *labels = json_pack("{s:s}", "scrapr.test", label + strlen("scrapr.test="));
    json_t *j = NULL;

    ASSERT_EQ(sh_docker_network_ensure(d, name, "bridge", 0, labels, &err), 1);
    ASSERT_EQ(sh_docker_network_ensure(d, name, "bridge", 0, labels, &err), 0);
    ASSERT_EQ(sh_docker_network_inspect(d, name, &j, &err), 0);
    ASSERT_STR_EQ(json_string_value(json_object_get(j, "Driver")), "bridge");
    json_decref(j);
    ASSERT_EQ(sh_docker_network_remove(d, name, &err), 0);
    ASSERT_EQ(sh_docker_network_inspect(d, name, &j, &err), -1);
    ASSERT_EQ(err.code, SH_ENOTFOUND);
    json_decref(labels);
    free(name);
    sh_docker_free(d);
}

struct evwatch {
    struct sh_docker *d;
    char name[128];
    int saw_start;
    int ready;
    int rc;
    struct sh_err err;
};

static int on_event(const json_t *ev, void *arg)
{
    struct evwatch *w = arg;
    const char *action, *name;

    w->ready = 1;
    if (!ev)
        return 0;
    action = json_string_value(json_object_get(ev, "Action"));
    name = json_string_value(
        json_object_get(json_object_get(json_object_get(ev, "Actor"), "Attributes"), "name"));
    if (action && name && strcmp(action, "start") == 0 && strcmp(name, w->name) == 0) {
        w->saw_start = 1;
        return 1;
    }
    return 0;
}

static void *events_thread(void *arg)
{
    struct evwatch *w = arg;
    json_t *f = json_pack("{s:[s], s:[s]}", "type", "container", "label", label);

    w->rc = sh_docker_events(w->d, f, 0, on_event, w, &w->err);
    json_decref(f);
    return NULL;
}

static void test_container_life_cycle_by_label_with_events(void)
{
    struct sh_err err;
    struct sh_docker *d = sh_docker_new(NULL, &err);
    struct evwatch w;
    pthread_t th;
    char *name = sh_xasprintf("%s-c1", prefix);
    json_t *spec, *list = NULL, *j = NULL;
    char *id = NULL;
    int i;

    memset(&w, 0, sizeof(w));
    w.d = d;
    (void)snprintf(w.name, sizeof(w.name), "%s", name);
    ASSERT_EQ(pthread_create(&th, NULL, events_thread, &w), 0);
    for (i = 0; i < 100 && !w.ready; i++)
        usleep(50000);
    ASSERT(w.ready);

    spec = json_pack("{s:s, s:[s,s], s:{s:s}, s:[s]}", "Image", image, "Cmd", "sleep", "600",
                     "Labels", "scrapr.test", label + strlen("scrapr.test="), "Env", "A=b c");
    ASSERT_EQ(sh_docker_container_create(d, name, spec, &id, &err), 0);
    ASSERT_NOT_NULL(id);
    /* The same name again is a conflict the caller can recognise. */
    ASSERT_EQ(sh_docker_container_create(d, name, spec, NULL, &err), -1);
    ASSERT_EQ(err.code, SH_ECONFLICT);
    ASSERT_EQ(sh_docker_container_start(d, id, &err), 0);
    ASSERT_EQ(sh_docker_container_start(d, id, &err), 0); /* 304: already running */

    {
        json_t *f = label_filter();
        ASSERT_EQ(sh_docker_containers_list(d, f, &list, &err), 0);
        json_decref(f);
    }
    ASSERT_EQ(json_array_size(list), 1);
    ASSERT_STR_EQ(json_string_value(json_object_get(json_array_get(list, 0), "Id")), id);
    ASSERT_STR_EQ(json_string_value(json_object_get(json_array_get(list, 0), "State")), "running");
    json_decref(list);

    ASSERT_EQ(sh_docker_container_inspect(d, name, &j, &err), 0);
    ASSERT_STR_EQ(
        json_string_value(json_array_get(json_object_get(json_object_get(j, "Config"), "Env"), 0)),
        "A=b c");
    json_decref(j);

    ASSERT_EQ(pthread_join(th, NULL), 0);
    ASSERT_EQ(w.rc, 0);
    ASSERT(w.saw_start);

    ASSERT_EQ(sh_docker_container_stop(d, id, 0, &err), 0);
    ASSERT_EQ(sh_docker_container_stop(d, id, 0, &err), 0); /* already stopped */
    ASSERT_EQ(sh_docker_container_remove(d, id, 0, &err), 0);
    ASSERT_EQ(sh_docker_container_remove(d, id, 0, &err), -1);
    ASSERT_EQ(err.code, SH_ENOTFOUND);
    json_decref(spec);
    free(id);
    free(name);
    sh_docker_free(d);
}

static int stop_after_ticks(const json_t *ev, void *arg)
{
    int *ticks = arg;

    if (!ev)
        (*ticks)++;
    return *ticks >= 2;
}

static void test_events_stream_stops_on_tick_without_events(void)
{
    struct sh_err err;
    struct sh_docker *d = sh_docker_new(NULL, &err);
    json_t *f = json_pack("{s:[s]}", "label", "scrapr.test=never-matches");
    int ticks = 0;

    ASSERT_EQ(sh_docker_events(d, f, 0, stop_after_ticks, &ticks, &err), 0);
    ASSERT_GE(ticks, 2);
    json_decref(f);
    sh_docker_free(d);
}

/* The client is shared by the reconciler's worker threads: pooled handles must
 * never be handed to two threads at once (a stray unlock of the pool mutex once
 * allowed exactly that). */
struct par {
    struct sh_docker *d;
    int ok;
};

static void *par_worker(void *arg)
{
    struct par *p = arg;
    int i;

    for (i = 0; i < 40; i++) {
        struct sh_err err;
        json_t *v = NULL;
        if (sh_docker_request(p->d, "GET", "/version", NULL, 0, &v, NULL, &err) == 0 &&
            json_string_value(json_object_get(v, "ApiVersion")))
            p->ok++;
        json_decref(v);
    }
    return NULL;
}

static void test_parallel_requests_share_one_client(void)
{
    struct sh_err err;
    struct sh_docker *d = sh_docker_new(NULL, &err);
    struct par p[8];
    pthread_t th[8];
    int i;

    ASSERT_NOT_NULL(d);
    for (i = 0; i < 8; i++) {
        p[i].d = d;
        p[i].ok = 0;
        ASSERT_EQ(pthread_create(&th[i], NULL, par_worker, &p[i]), 0);
    }
    for (i = 0; i < 8; i++) {
        ASSERT_EQ(pthread_join(th[i], NULL), 0);
        ASSERT_EQ(p[i].ok, 40);
    }
    sh_docker_free(d);
}

static void cleanup(void)
{
    char *cmd = sh_xasprintf("docker ps -aq --filter label=%s | xargs -r docker rm -f >/dev/null; "
                             "docker network ls -q --filter label=%s | xargs -r docker network rm "
                             ">/dev/null",
                             label, label);
    (void)!system(cmd);
    free(cmd);
}

int main(void)
{
    (void)snprintf(label, sizeof(label), "scrapr.test=docker-%ld", (long)getpid());
    (void)snprintf(prefix, sizeof(prefix), "scrapr-test-docker-%ld", (long)getpid());
    ensure_image();
    atexit(cleanup);
    RUN(test_bad_docker_host_is_a_config_error);
    RUN(test_env_tcp_tls_endpoint);
    RUN(test_ping_and_info_answer);
    RUN(test_missing_socket_fails_cleanly);
    RUN(test_engine_error_message_is_surfaced);
    RUN(test_network_ensure_is_idempotent);
    RUN(test_container_life_cycle_by_label_with_events);
    RUN(test_events_stream_stops_on_tick_without_events);
    RUN(test_parallel_requests_share_one_client);
    return 0;
}
