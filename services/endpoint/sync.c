/* Keeping the collection current: the datasource follower (this file) and
 * the thread start/stop; the Redis copy lives in persist.c.
 *
 * Follower (one thread): a full load at start and every ttl seconds
 * (reconciles anything an incremental step cannot see), and in between a
 * long-poll GET /collections/{name}?since=R&wait=W with If-None-Match "R":
 * the datasource answers as soon as the revision moves, with only the items
 * changed since R, which are merged into a key map owned by this thread; a new
 * snapshot is then built and swapped in. Errors back off (100 ms doubling, at
 * most 5 s or ttl) and never drop the data being served.
 *
 * Pages are walked by revision, not by offset: the next page asks for
 * since = last revision - 1 and skips the items of that revision already seen,
 * so an item updated during the walk (it moves to the end) cannot shift
 * another one out of view. */
#include "endpoint.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "shared/http_client.h"
#include "shared/log.h"
#include "shared/xalloc.h"

/* ---- key map (follower thread only) --------------------------------------- */

struct kmap {
    size_t cap, n;
    struct ep_item **slots;
};

static uint64_t hash_key(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ULL;
    }
    return h;
}

static void kmap_init(struct kmap *m)
{
    m->cap = 64;
    m->n = 0;
    m->slots = sh_xcalloc(m->cap, sizeof(*m->slots));
}

static void kmap_done(struct kmap *m)
{
    size_t i;
    for (i = 0; i < m->cap; i++)
        ep_item_unref(m->slots[i]);
    free(m->slots);
    memset(m, 0, sizeof(*m));
}

static void kmap_insert_slot(struct ep_item **slots, size_t cap, struct ep_item *it)
{
    size_t i = hash_key(it->key) & (cap - 1);
    while (slots[i])
        i = (i + 1) & (cap - 1);
    slots[i] = it;
}

/* Takes ownership of it; replaces an item with the same key. */
static void kmap_put(struct kmap *m, struct ep_item *it)
{
    size_t i = hash_key(it->key) & (m->cap - 1);
    while (m->slots[i]) {
        if (!strcmp(m->slots[i]->key, it->key)) {
            ep_item_unref(m->slots[i]);
            m->slots[i] = it;
            return;
        }
        i = (i + 1) & (m->cap - 1);
    }
    m->slots[i] = it;
    m->n++;
    if (m->n * 2 > m->cap) {
        size_t cap = m->cap * 2, j;
        struct ep_item **slots = sh_xcalloc(cap, sizeof(*slots));
        for (j = 0; j < m->cap; j++)
            if (m->slots[j])
                kmap_insert_slot(slots, cap, m->slots[j]);
        free(m->slots);
        m->slots = slots;
        m->cap = cap;
    }
}

static int kmap_has(const struct kmap *m, const char *key)
{
    size_t i = hash_key(key) & (m->cap - 1);
    while (m->slots[i]) {
        if (!strcmp(m->slots[i]->key, key))
            return 1;
        i = (i + 1) & (m->cap - 1);
    }
    return 0;
}

/* New references to every item. */
static struct ep_item **kmap_items(const struct kmap *m)
{
    struct ep_item **arr = sh_xcalloc(m->n + 1, sizeof(*arr));
    size_t i, n = 0;
    for (i = 0; i < m->cap; i++)
        if (m->slots[i])
            arr[n++] = ep_item_ref(m->slots[i]);
    return arr;
}

/* ---- datasource requests ------------------------------------------------------ */

struct follower {
    struct ep_ctx *ctx;
    struct kmap map;
    uint64_t revision;
    char *updated_at;
    int have; /* map reflects the datasource at revision */
    time_t last_full;
};

struct page {
    long status;
    json_t *doc; /* 200 only */
    uint64_t revision;
    const json_t *items;
    int more;
};

static int parse_u64(const json_t *v, uint64_t *ret)
{
    if (json_is_integer(v) && json_integer_value(v) >= 0) {
        *ret = (uint64_t)json_integer_value(v);
        return 0;
    }
    if (json_is_string(v) && *json_string_value(v)) {
        char *end;
        unsigned long long x = strtoull(json_string_value(v), &end, 10);
        if (!*end) {
            *ret = x;
            return 0;
        }
    }
    return -1;
}

static int stopping(const struct ep_ctx *ctx)
{
    return __atomic_load_n(&ctx->sync_stop, __ATOMIC_RELAXED);
}

static int nap(struct ep_ctx *ctx, long ms)
{
    while (ms > 0 && !stopping(ctx)) {
        long step = ms > 50 ? 50 : ms;
        (void)usleep((useconds_t)step * 1000);
        ms -= step;
    }
    return stopping(ctx);
}

/* One GET of the collection. Returns 0 with p filled (any HTTP status), or -1
 * on a transport or protocol failure (logged by the caller from err). */
static int fetch_page(struct ep_ctx *ctx, const char *base, uint64_t since, size_t skip,
                      long wait_s, const char *inm, struct page *p, struct sh_err *err)
{
    struct sh_http_client_opts o;
    struct sh_http_response resp;
    char *esc = sh_url_escape(ctx->conf.collection), *url, *hdr = NULL;
    const char *headers[2] = {NULL, NULL};
    json_error_t jerr;
    int rc = -1;

    memset(p, 0, sizeof(*p));
    if (wait_s > 0)
        url = sh_xasprintf("%s/collections/%s?since=%llu&skip=%zu&limit=%ld&wait=%ld", base, esc,
                           (unsigned long long)since, skip, ctx->cfg->page_limit, wait_s);
    else
        url = sh_xasprintf("%s/collections/%s?since=%llu&skip=%zu&limit=%ld", base, esc,
                           (unsigned long long)since, skip, ctx->cfg->page_limit);
    if (inm) {
        hdr = sh_xasprintf("If-None-Match: %s", inm);
        headers[0] = hdr;
    }
    memset(&o, 0, sizeof(o));
    o.connect_timeout_ms = 2000;
    o.timeout_ms = (wait_s > 0 ? wait_s * 1000 : 0) + 15000;
    o.max_response = 256 * 1024 * 1024;
    o.cancel = &ctx->sync_stop;
    if (sh_http_request(&o, "GET", url, headers, NULL, 0, &resp, err) < 0)
        goto out; /* err names the URL */
    p->status = resp.status;
    if (resp.status == 200) {
        p->doc = json_loadb(resp.body, resp.body_len, 0, &jerr);
        p->items = json_object_get(p->doc, "items");
        if (!p->doc || !json_is_array(p->items) ||
            parse_u64(json_object_get(p->doc, "revision"), &p->revision) < 0) {
            sh_err_set(err, SH_EPROTO, "GET %s: not a collection page (%s)", url,
                       p->doc ? "no items/revision" : jerr.text);
            json_decref(p->doc);
            p->doc = NULL;
            sh_http_response_done(&resp);
            goto out;
        }
        p->more = json_is_true(json_object_get(p->doc, "more"));
    }
    sh_http_response_done(&resp);
    rc = 0;
out:
    free(hdr);
    free(url);
    free(esc);
    return rc;
}

/* Merges a page's items into m; advances the revision cursor. Returns the
 * number of items merged. */
static size_t merge_page(struct ep_ctx *ctx, struct kmap *m, const json_t *items, uint64_t *cur_rev,
                         size_t *cur_same)
{
    size_t i, n = 0;
    const json_t *v;
    json_array_foreach(items, i, v)
    {
        struct sh_err err;
        struct ep_item *it = ep_item_from_json(v, &err);
        uint64_t r = 0;
        (void)parse_u64(json_object_get(v, "revision"), &r);
        if (r == *cur_rev) {
            (*cur_same)++;
        } else {
            *cur_rev = r;
            *cur_same = 1;
        }
        if (!it) {
            sh_log_warn("item_skipped collection=%s error=\"%s\"", ctx->conf.collection, err.msg);
            continue;
        }
        if (m->n >= (size_t)ctx->cfg->max_items && !kmap_has(m, it->key)) {
            sh_log_error("collection_too_large collection=%s max_items=%ld", ctx->conf.collection,
                         ctx->cfg->max_items);
            ep_item_unref(it);
            continue;
        }
        kmap_put(m, it);
        n++;
    }
    return n;
}

/* Follows "more" pages after a first page from `since`. Returns 0 or -1. */
static int fetch_rest(struct ep_ctx *ctx, const char *base, struct kmap *m, uint64_t since,
                      struct page *first, size_t *ret_merged, struct sh_err *err)
{
    uint64_t cur_rev = since;
    size_t cur_same = 0, seen = 0, merged;
    struct page p = *first;
    int owned = 0, rc = 0;

    for (;;) {
        seen += json_array_size(p.items);
        merged = merge_page(ctx, m, p.items, &cur_rev, &cur_same);
        *ret_merged += merged;
        if (!p.more || json_array_size(p.items) == 0)
            break;
        if (owned)
            json_decref(p.doc);
        owned = 1;
        /* by revision when items carry one, else by offset */
        if (cur_rev > 0 ? fetch_page(ctx, base, cur_rev - 1, cur_same, 0, NULL, &p, err)
                        : fetch_page(ctx, base, since, seen, 0, NULL, &p, err)) {
            owned = 0;
            rc = -1;
            break;
        }
        if (p.status != 200) {
            sh_err_set(err, SH_EUPSTREAM, "collection page answered %ld", p.status);
            json_decref(p.doc);
            owned = 0;
            rc = -1;
            break;
        }
    }
    if (owned)
        json_decref(p.doc);
    return rc;
}

static void publish(struct follower *f)
{
    struct ep_ctx *ctx = f->ctx;
    struct ep_snapshot *s =
        ep_snapshot_new(ctx->conf.collection, f->revision, f->updated_at, kmap_items(&f->map),
                        f->map.n, (size_t)ctx->cfg->max_limit);
    ep_persist_request(ctx, s);
    ep_store_swap(&ctx->store, s, EP_SRC_DATASOURCE);
    if (ctx->metrics)
        sh_metric_inc(sh_metrics_counter(ctx->metrics, "scrapr_endpoint_data_updates_total",
                                         "Snapshots built from datasource changes"));
    sh_log_debug("data_updated collection=%s revision=%llu items=%zu", ctx->conf.collection,
                 (unsigned long long)f->revision, f->map.n);
}

static void set_updated_at(struct follower *f, const json_t *doc)
{
    const json_t *u = json_object_get(doc, "updated_at");
    free(f->updated_at);
    f->updated_at = sh_xstrdup(json_is_string(u) ? json_string_value(u) : "");
}

/* Full load into a fresh map. Returns 0 or -1. */
static int full_load(struct follower *f, const char *base, struct sh_err *err)
{
    struct ep_ctx *ctx = f->ctx;
    struct page p;
    struct kmap m;
    size_t merged = 0;
    uint64_t count = 0;

    if (fetch_page(ctx, base, 0, 0, 0, NULL, &p, err) < 0)
        return -1;
    if (p.status == 404) {
        /* Not created yet (no item posted): an empty collection at revision 0. */
        if (!f->have || f->revision != 0 || f->map.n) {
            kmap_done(&f->map);
            kmap_init(&f->map);
            f->revision = 0;
            free(f->updated_at);
            f->updated_at = sh_xstrdup("");
            f->have = 1;
            publish(f);
        }
        return 0;
    }
    if (p.status != 200) {
        sh_err_set(err, SH_EUPSTREAM, "datasource answered %ld", p.status);
        return -1;
    }
    if (f->have && p.revision == f->revision) {
        json_decref(p.doc); /* unchanged: keep the current items and blobs */
        return 0;
    }
    kmap_init(&m);
    if (fetch_rest(ctx, base, &m, 0, &p, &merged, err) < 0) {
        json_decref(p.doc);
        kmap_done(&m);
        return -1;
    }
    if (parse_u64(json_object_get(p.doc, "count"), &count) == 0 && m.n < count &&
        m.n < (size_t)ctx->cfg->max_items)
        sh_log_warn("full_load_short collection=%s loaded=%zu count=%llu", ctx->conf.collection,
                    m.n, (unsigned long long)count);
    kmap_done(&f->map);
    f->map = m;
    f->revision = p.revision;
    set_updated_at(f, p.doc);
    f->have = 1;
    json_decref(p.doc);
    publish(f);
    sh_log_info("full_load collection=%s revision=%llu items=%zu", ctx->conf.collection,
                (unsigned long long)f->revision, f->map.n);
    return 0;
}

/* One long-poll step. Returns 1 changed/unchanged ok, 0 collection absent, -1 error. */
static int poll_once(struct follower *f, const char *base, long wait_s, struct sh_err *err)
{
    struct ep_ctx *ctx = f->ctx;
    struct page p;
    char inm[32];
    size_t merged = 0;
    uint64_t since = f->revision;

    (void)snprintf(inm, sizeof(inm), "\"%llu\"", (unsigned long long)f->revision);
    if (fetch_page(ctx, base, since, 0, wait_s, inm, &p, err) < 0)
        return -1;
    if (p.status == 304)
        return 1;
    if (p.status == 404)
        return 0;
    if (p.status != 200) {
        sh_err_set(err, SH_EUPSTREAM, "datasource answered %ld", p.status);
        return -1;
    }
    if (p.revision < f->revision) {
        /* The datasource went back in time (restored, reset): reload it all. */
        sh_log_warn("revision_went_back collection=%s ours=%llu theirs=%llu", ctx->conf.collection,
                    (unsigned long long)f->revision, (unsigned long long)p.revision);
        f->last_full = 0;
        json_decref(p.doc);
        return 1;
    }
    if (fetch_rest(ctx, base, &f->map, since, &p, &merged, err) < 0) {
        json_decref(p.doc);
        return -1; /* merged items stay; the retry asks from the old revision again */
    }
    if (merged || p.revision != f->revision) {
        f->revision = p.revision;
        set_updated_at(f, p.doc);
        publish(f);
    }
    json_decref(p.doc);
    return 1;
}

static void mark(struct ep_ctx *ctx, int ok)
{
    ep_store_mark(&ctx->store, ok, time(NULL));
    __atomic_store_n(&ctx->datasource_ok, ok, __ATOMIC_RELAXED);
}

static void *follower_main(void *arg)
{
    struct follower f;
    struct ep_ctx *ctx = arg;
    long backoff = 100, max_backoff = ctx->conf.ttl * 1000 < 5000 ? ctx->conf.ttl * 1000 : 5000;
    long ttl = ctx->conf.ttl < 5 ? 5 : ctx->conf.ttl;
    time_t last_warn = 0;

    memset(&f, 0, sizeof(f));
    f.ctx = ctx;
    f.updated_at = sh_xstrdup("");
    kmap_init(&f.map);

    while (!stopping(ctx)) {
        struct sh_err err;
        time_t now = time(NULL);
        char *base = ep_peer_url(ctx->ds_discovery, ctx->cfg->datasource, &err);
        int rc;

        if (!base) {
            rc = -1;
        } else if (!f.have || now - f.last_full >= ttl) {
            rc = full_load(&f, base, &err) == 0 ? 1 : -1;
            if (rc == 1)
                f.last_full = now;
        } else {
            long wait_s = ttl - (long)(now - f.last_full);
            if (wait_s > ctx->cfg->wait_s)
                wait_s = ctx->cfg->wait_s;
            if (wait_s < 1)
                wait_s = 1;
            rc = poll_once(&f, base, wait_s, &err);
        }
        free(base);
        if (stopping(ctx))
            break;
        if (rc < 0) {
            /* Once when it goes away, then once a minute while it stays away. */
            if (__atomic_load_n(&ctx->datasource_ok, __ATOMIC_RELAXED) || now - last_warn >= 60) {
                sh_log_warn("datasource_unavailable collection=%s error=\"%s\" retry_ms=%ld "
                            "(serving revision %llu)",
                            ctx->conf.collection, err.msg, backoff, (unsigned long long)f.revision);
                last_warn = now;
            } else {
                sh_log_debug("datasource_unavailable collection=%s error=\"%s\"",
                             ctx->conf.collection, err.msg);
            }
            mark(ctx, 0);
            if (ctx->metrics)
                sh_metric_inc(sh_metrics_counter(ctx->metrics, "scrapr_endpoint_sync_errors_total",
                                                 "Failed datasource requests"));
            (void)nap(ctx, backoff);
            backoff = backoff * 2 > max_backoff ? max_backoff : backoff * 2;
            continue;
        }
        if (!__atomic_load_n(&ctx->datasource_ok, __ATOMIC_RELAXED))
            sh_log_info("datasource_available collection=%s revision=%llu", ctx->conf.collection,
                        (unsigned long long)f.revision);
        mark(ctx, 1);
        backoff = 100;
        if (rc == 0) /* collection not created yet: a 404 does not block, so pace */
            (void)nap(ctx, 250);
    }
    kmap_done(&f.map);
    free(f.updated_at);
    return NULL;
}

int ep_sync_start(struct ep_ctx *ctx, struct sh_err *err)
{
    ctx->sync_stop = 0;
    ctx->persist_stop = 0;
    if (pthread_create(&ctx->persist_thread, NULL, ep_persister_main, ctx) != 0) {
        sh_err_set(err, SH_EIO, "cannot start the persister thread");
        return -1;
    }
    ctx->persist_started = 1;
    if (pthread_create(&ctx->sync_thread, NULL, follower_main, ctx) != 0) {
        sh_err_set(err, SH_EIO, "cannot start the sync thread");
        return -1;
    }
    ctx->sync_started = 1;
    return 0;
}

void ep_sync_stop(struct ep_ctx *ctx)
{
    __atomic_store_n(&ctx->sync_stop, 1, __ATOMIC_RELAXED);
    if (ctx->sync_started)
        (void)pthread_join(ctx->sync_thread, NULL);
    ctx->sync_started = 0;
    (void)pthread_mutex_lock(&ctx->persist_mu);
    ctx->persist_stop = 1;
    (void)pthread_cond_signal(&ctx->persist_cv);
    (void)pthread_mutex_unlock(&ctx->persist_mu);
    if (ctx->persist_started)
        (void)pthread_join(ctx->persist_thread, NULL);
    ctx->persist_started = 0;
}
