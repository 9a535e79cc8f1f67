/* Datasource benchmark (run by bench/datasource/run.sh; never fails on slowness).
 *
 *   ingest: N items in batches of B, POST /items -> visible in the final
 *           collection (collections_meta count == N), items/s, against a raw
 *           mongoc bulk insert of the same documents into the same server
 *   latency: write -> reduced, one small batch at a time: time from sending
 *           POST /items to the return of a long-poll GET that was waiting for
 *           the revision to move; p50/p95/p99
 *
 * With SERVER_PID set (run.sh sets it when the server runs on this machine),
 * the server's CPU time per phase is printed too: on a single-writer server
 * (FerretDB on SQLite) the ratio of server CPU is what the two sides cost it.
 *
 * usage: bench_datasource BASE_URL MONGO_URL DB [N] [B] [LATENCY_SAMPLES] */
#define _GNU_SOURCE
#include <curl/curl.h>
#include <mongoc/mongoc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

struct mem {
    char *p;
    size_t n;
};

static size_t sink(char *d, size_t s, size_t n, void *arg)
{
    struct mem *m = arg;
    m->p = realloc(m->p, m->n + s * n + 1);
    memcpy(m->p + m->n, d, s * n);
    m->n += s * n;
    m->p[m->n] = 0;
    return s * n;
}

/* One HTTP request; returns status or -1; *body malloc'd (may be NULL).
 * One easy handle for the whole run, so requests reuse their connection
 * (keep-alive) the way scrapr's services do (libshared http_client) and the
 * way the peer's mongoc client keeps its connection. */
static CURL *c;

static long http(const char *method, const char *url, const char *hdr, const char *body,
                 char **ret_body)
{
    struct curl_slist *h = NULL;
    struct mem m = {NULL, 0};
    long st = -1;

    if (!c && !(c = curl_easy_init()))
        return -1;
    curl_easy_reset(c);
    h = curl_slist_append(h, "Content-Type: application/json");
    if (hdr)
        h = curl_slist_append(h, hdr);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 120L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, sink);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &m);
    if (body)
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    if (curl_easy_perform(c) == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &st);
    curl_slist_free_all(h);
    if (ret_body)
        *ret_body = m.p;
    else
        free(m.p);
    return st;
}

static long json_int(const char *body, const char *field)
{
    char pat[64];
    const char *p;
    snprintf(pat, sizeof(pat), "\"%s\":", field);
    p = body ? strstr(body, pat) : NULL;
    return p ? strtol(p + strlen(pat), NULL, 10) : -1;
}

static char *item_json(int i)
{
    char *s = NULL;
    if (asprintf(&s,
                 "{\"id\":\"item-%d\",\"title\":\"Item number %d\",\"price\":%d.5,"
                 "\"tags\":[\"a\",\"b\"],\"url\":\"http://example.test/items/%d\"}",
                 i, i, i % 1000, i) < 0)
        abort();
    return s;
}

/* utime + stime of SERVER_PID in seconds, or -1 when unknown. */
static double server_cpu_s(void)
{
    const char *pid = getenv("SERVER_PID");
    char path[64], buf[1024], *p;
    unsigned long ut = 0, st = 0;
    FILE *f;
    size_t n;

    if (!pid || !*pid)
        return -1;
    snprintf(path, sizeof(path), "/proc/%s/stat", pid);
    if (!(f = fopen(path, "r")))
        return -1;
    n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = 0;
    /* fields after the command name, which is in parentheses */
    if (!(p = strrchr(buf, ')')) ||
        sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
        return -1;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    const char *base, *murl, *db;
    int n, bsz, samples;
    char url[256], coll[64];
    double t0, ours_s, peer_s, posted_s, cpu0, ours_cpu, peer_cpu;
    mongoc_client_t *mc;
    bson_error_t e;

    if (argc < 4) {
        fprintf(stderr, "usage: %s BASE_URL MONGO_URL DB [N] [B] [SAMPLES]\n", argv[0]);
        return 2;
    }
    base = argv[1];
    murl = argv[2];
    db = argv[3];
    n = argc > 4 ? atoi(argv[4]) : 10000;
    bsz = argc > 5 ? atoi(argv[5]) : 100;
    samples = argc > 6 ? atoi(argv[6]) : 50;
    curl_global_init(CURL_GLOBAL_ALL);
    mongoc_init();
    mc = mongoc_client_new(murl);

    /* ---- ours: POST /items -> visible ---- */
    snprintf(coll, sizeof(coll), "bench%ld", (long)getpid());
    snprintf(url, sizeof(url), "%s/items", base);
    cpu0 = server_cpu_s();
    t0 = now_ms();
    for (int b = 0; b * bsz < n; b++) {
        size_t cap = 256 + (size_t)bsz * 200, len = 0;
        char *body = malloc(cap);
        len += snprintf(body, cap,
                        "{\"collection\":\"%s\",\"batch_id\":\"%s-%d\",\"key\":[\"id\"],\"data\":[",
                        coll, coll, b);
        for (int i = b * bsz; i < (b + 1) * bsz && i < n; i++) {
            char *it = item_json(i);
            len += snprintf(body + len, cap - len, "%s%s", i == b * bsz ? "" : ",", it);
            free(it);
        }
        snprintf(body + len, cap - len, "]}");
        for (;;) {
            long st = http("POST", url, NULL, body, NULL);
            if (st == 202)
                break;
            usleep(st == 503 ? 100000 : 10000);
        }
        free(body);
    }
    posted_s = (now_ms() - t0) / 1e3;
    {
        /* visible = the datasource reports all n items of the collection
         * (collections_meta is written after the items). GET /collections is
         * used rather than GET /collections/{name}?limit=1 because on FerretDB
         * the latter sorts the whole collection by key in memory on every
         * poll, which would load the server the reducer is writing to. */
        char gurl[256], pat[128];
        snprintf(gurl, sizeof(gurl), "%s/collections", base);
        snprintf(pat, sizeof(pat), "\"name\":\"%s\"", coll);
        for (;;) {
            char *resp = NULL;
            long st = http("GET", gurl, NULL, NULL, &resp);
            const char *at = st == 200 && resp ? strstr(resp, pat) : NULL;
            long cnt = at ? json_int(at, "count") : -1;
            free(resp);
            if (cnt >= n)
                break;
            usleep(5000);
        }
    }
    ours_s = (now_ms() - t0) / 1e3;
    ours_cpu = server_cpu_s() - cpu0;

    /* ---- peer: raw mongoc bulk insert of the same documents ---- */
    {
        mongoc_collection_t *col = mongoc_client_get_collection(mc, db, "peer_raw");
        mongoc_collection_drop(col, NULL);
        cpu0 = server_cpu_s();
        t0 = now_ms();
        for (int b = 0; b * bsz < n; b++) {
            mongoc_bulk_operation_t *bulk =
                mongoc_collection_create_bulk_operation_with_opts(col, NULL);
            for (int i = b * bsz; i < (b + 1) * bsz && i < n; i++) {
                char *it = item_json(i);
                bson_t *doc = bson_new_from_json((const uint8_t *)it, -1, &e);
                mongoc_bulk_operation_insert(bulk, doc);
                bson_destroy(doc);
                free(it);
            }
            if (!mongoc_bulk_operation_execute(bulk, NULL, &e))
                fprintf(stderr, "peer insert: %s\n", e.message);
            mongoc_bulk_operation_destroy(bulk);
        }
        peer_s = (now_ms() - t0) / 1e3;
        peer_cpu = server_cpu_s() - cpu0;
        mongoc_collection_destroy(col);
    }

    /* ---- latency: write -> reduced (visible to a long-poll) ---- */
    double *lat = calloc((size_t)samples, sizeof(double));
    int got = 0;
    {
        char lcoll[80], gurl[256];
        long rev = -1;
        snprintf(lcoll, sizeof(lcoll), "%slat", coll);
        snprintf(gurl, sizeof(gurl), "%s/collections/%s?limit=1&wait=10", base, lcoll);
        for (int s = -1; s < samples; s++) {
            char body[256], inm[64], *resp = NULL;
            double w0;
            snprintf(body, sizeof(body),
                     "{\"collection\":\"%s\",\"batch_id\":\"%s-%d\",\"data\":[{\"n\":%d}]}", lcoll,
                     lcoll, s + 1, s);
            w0 = now_ms();
            if (http("POST", url, NULL, body, NULL) != 202)
                continue;
            snprintf(inm, sizeof(inm), "If-None-Match: \"%ld\"", rev);
            if (http("GET", gurl, inm, NULL, &resp) == 200) {
                rev = json_int(resp, "revision");
                if (s >= 0)
                    lat[got++] = now_ms() - w0;
            }
            free(resp);
        }
    }
    qsort(lat, (size_t)got, sizeof(double), cmp);

    printf("datasource ingest, %d items in batches of %d, %ld cores\n", n, bsz,
           sysconf(_SC_NPROCESSORS_ONLN));
    printf("  %-44s %10.0f items/s  (%.2f s; last 202 after %.2f s)\n",
           "scrapr POST /items -> visible in collection", n / ours_s, ours_s, posted_s);
    printf("  %-44s %10.0f items/s  (%.2f s)\n", "peer: raw mongoc bulk insert, same server",
           n / peer_s, peer_s);
    printf("  ratio ours/peer: %.2f (goal >= 0.7)\n", peer_s / ours_s);
    if (cpu0 >= 0)
        printf("  server CPU: ours %.2f s, peer %.2f s (ratio peer/ours %.2f)\n", ours_cpu,
               peer_cpu, peer_cpu / ours_cpu);
    if (got > 0)
        printf("write -> reduced (POST sent -> long-poll returned), %d samples: p50 %.1f ms, "
               "p95 %.1f ms, p99 %.1f ms (goal p95 <= 50 ms)\n",
               got, lat[got / 2], lat[(int)(got * 0.95)], lat[(int)(got * 0.99)]);
    free(lat);
    mongoc_client_destroy(mc);
    mongoc_cleanup();
    if (c)
        curl_easy_cleanup(c);
    curl_global_cleanup();
    return 0;
}
