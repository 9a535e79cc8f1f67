/* Helpers shared by the datasource integration tests: start/stop a real
 * scrapr-datasource on its own Mongo database and port, POST/GET through the
 * harness' libcurl client, and read MongoDB directly to check storage. */
#ifndef TEST_DATASOURCE_UTIL_H
#define TEST_DATASOURCE_UTIL_H

#include <jansson.h>
#include <mongoc/mongoc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "harness.h"
#include "shared/buf.h"
#include "shared/xalloc.h"

struct ds_proc {
    pid_t pid;
    unsigned port;
    char base[64];
    char *db;
};

/* Children still running when a test fails (CHECK_FAIL exits) are killed at exit. */
static pid_t ds_live[8];

static inline void ds_kill_live(void)
{
    for (size_t i = 0; i < sizeof(ds_live) / sizeof(ds_live[0]); i++)
        if (ds_live[i] > 0)
            (void)kill(ds_live[i], SIGKILL);
}

static inline void ds_track(pid_t old, pid_t pid)
{
    static int registered;
    if (!registered) {
        registered = 1;
        (void)atexit(ds_kill_live);
    }
    for (size_t i = 0; i < sizeof(ds_live) / sizeof(ds_live[0]); i++)
        if (ds_live[i] == old) {
            ds_live[i] = pid;
            return;
        }
}

/* Starts scrapr-datasource on db with extra env ("K=V", NULL-terminated, may be NULL). */
static inline void ds_start(struct ds_proc *p, const char *db, const char *const *extra)
{
    char *bin = th_bin("scrapr-datasource");
    char *url = th_mongo_url(db);
    char *env[32];
    char *murl = sh_xasprintf("MONGO_URL=%s", url);
    char *port;
    char *health;
    size_t n = 0;
    const char *argv[] = {bin, NULL};

    if (!p->port)
        p->port = th_free_port();
    port = sh_xasprintf("PORT=%u", p->port);
    env[n++] = murl;
    env[n++] = port;
    env[n++] = (char *)"SERVICE_ADDRESS=127.0.0.1";
    env[n++] = (char *)"LOG_LEVEL=info";
    while (extra && *extra && n < 30)
        env[n++] = (char *)*extra++;
    env[n] = NULL;
    p->pid = th_spawn(argv, (const char *const *)env);
    ds_track(0, p->pid);
    (void)snprintf(p->base, sizeof(p->base), "http://127.0.0.1:%u", p->port);
    health = sh_xasprintf("%s/health", p->base);
    /* any answer first, then 200 (the service says 503 "starting" until wired) */
    if (th_wait_http(health, 20000) == 0) {
        int64_t deadline = th_now_ms() + 20000;
        long st = 0;
        while (th_now_ms() < deadline &&
               (th_http("GET", health, NULL, NULL, &st, NULL, NULL) < 0 || st != 200))
            (void)usleep(20000);
    }
    if (th_wait_http(health, 20000) < 0) {
        char *log = th_log_read(p->pid);
        fprintf(stderr, "datasource did not start:\n%s\n", log);
        free(log);
        CHECK_FAIL("datasource did not answer on %s", health);
    }
    if (!p->db)
        p->db = sh_xstrdup(db);
    free(health);
    free(port);
    free(murl);
    free(url);
    free(bin);
}

static inline void ds_stop(struct ds_proc *p, int sig)
{
    if (p->pid > 0) {
        (void)th_kill(p->pid, sig);
        ds_track(p->pid, 0);
    }
    p->pid = 0;
}

/* POST /items; returns the status, *ret_body (may be NULL, caller frees). */
static inline long ds_post(const struct ds_proc *p, const char *body, char **ret_body)
{
    char *url = sh_xasprintf("%s/items", p->base);
    const char *hdr[] = {"Content-Type: application/json", NULL};
    long st = -1;

    if (th_http("POST", url, hdr, body, &st, ret_body, NULL) < 0)
        st = -1;
    free(url);
    return st;
}

/* GET path (e.g. "/collections/q?limit=5"); returns status, body and headers (may be NULL). */
static inline long ds_get(const struct ds_proc *p, const char *path, const char *const *hdrs,
                          char **ret_body, char **ret_headers)
{
    char *url = sh_xasprintf("%s%s", p->base, path);
    long st = -1;

    if (th_http("GET", url, hdrs, NULL, &st, ret_body, ret_headers) < 0)
        st = -1;
    free(url);
    return st;
}

static inline json_t *ds_get_json(const struct ds_proc *p, const char *path, long expect)
{
    char *body = NULL;
    long st = ds_get(p, path, NULL, &body, NULL);
    json_t *j;

    if (st != expect)
        CHECK_FAIL("GET %s: status %ld (expected %ld): %s", path, st, expect, body ? body : "");
    j = json_loads(body ? body : "", 0, NULL);
    free(body);
    ASSERT_NOT_NULL(j);
    return j;
}

/* Waits until the collection's revision is >= rev (or 15 s), returns the page JSON. */
static inline json_t *ds_wait_revision(const struct ds_proc *p, const char *coll, int64_t rev,
                                       const char *query)
{
    int64_t deadline = th_now_ms() + 15000;
    char *path = sh_xasprintf("/collections/%s%s", coll, query ? query : "");

    for (;;) {
        char *body = NULL;
        long st = ds_get(p, path, NULL, &body, NULL);
        if (st == 200) {
            json_t *j = json_loads(body, 0, NULL);
            free(body);
            if (j && json_integer_value(json_object_get(j, "revision")) >= rev) {
                free(path);
                return j;
            }
            json_decref(j);
        } else {
            free(body);
        }
        if (th_now_ms() > deadline)
            CHECK_FAIL("collection %s never reached revision %lld", coll, (long long)rev);
        (void)usleep(20000);
    }
}

/* Direct MongoDB access for storage checks. */
static inline mongoc_client_t *ds_mongo(const char *db)
{
    char *url = th_mongo_url(db);
    mongoc_client_t *c;

    mongoc_init();
    c = mongoc_client_new(url);
    ASSERT_NOT_NULL(c);
    free(url);
    return c;
}

static inline int64_t ds_count(mongoc_client_t *c, const char *db, const char *coll,
                               const bson_t *filter)
{
    mongoc_collection_t *col = mongoc_client_get_collection(c, db, coll);
    bson_t empty = BSON_INITIALIZER;
    bson_error_t e;
    int64_t n =
        mongoc_collection_count_documents(col, filter ? filter : &empty, NULL, NULL, NULL, &e);
    if (n < 0)
        CHECK_FAIL("count %s: %s", coll, e.message);
    mongoc_collection_destroy(col);
    return n;
}

static inline void ds_drop_db(mongoc_client_t *c, const char *db)
{
    mongoc_database_t *d = mongoc_client_get_database(c, db);
    (void)mongoc_database_drop(d, NULL);
    mongoc_database_destroy(d);
}

#endif
