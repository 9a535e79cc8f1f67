/* Items, snapshots and the current-snapshot slot.
 *
 * Why snapshots: HTTP worker threads must never see a half-applied change and
 * must not wait for the sync thread. The sync thread therefore builds a whole
 * new immutable snapshot (sorted item pointers, key index, prebuilt JSON blob
 * plain + gzip) and swaps it into the slot under a mutex held only for the
 * pointer swap; readers take a reference under the same mutex and drop it
 * when their response is queued. Items are immutable and shared between
 * consecutive snapshots, so a change re-serialises only the changed items.
 *
 * Ownership: a snapshot owns one reference to each item and to each blob.
 * Blobs handed to the HTTP server get their own references (sh_blob), so a
 * snapshot may die while its bytes are still being sent. */
#include "endpoint.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shared/deflate.h"
#include "shared/xalloc.h"

#define GZIP_LEVEL_PREBUILT 6

/* ---- items ---------------------------------------------------------------- */

static int parse_revision(const json_t *v, uint64_t *ret)
{
    if (json_is_integer(v) && json_integer_value(v) >= 0) {
        *ret = (uint64_t)json_integer_value(v);
        return 0;
    }
    if (json_is_string(v)) {
        const char *s = json_string_value(v);
        char *end;
        unsigned long long r;
        if (!*s || *s < '0' || *s > '9')
            return -1;
        r = strtoull(s, &end, 10);
        if (*end)
            return -1;
        *ret = r;
        return 0;
    }
    return -1;
}

static char *opt_string(const json_t *obj, const char *name)
{
    const json_t *v = json_object_get(obj, name);
    return sh_xstrdup(json_is_string(v) ? json_string_value(v) : "");
}

struct ep_item *ep_item_from_json(const json_t *ds_item, struct sh_err *err)
{
    const json_t *key = json_object_get(ds_item, "key");
    const json_t *data = json_object_get(ds_item, "data");
    const json_t *rev = json_object_get(ds_item, "revision");
    struct ep_item *it;
    const char *name;
    json_t *v;

    if (!json_is_object(ds_item)) {
        sh_err_set(err, SH_EPROTO, "item is not an object");
        return NULL;
    }
    if (!json_is_string(key)) {
        sh_err_set(err, SH_EPROTO, "item has no string \"key\"");
        return NULL;
    }
    if (!json_is_object(data)) {
        sh_err_set(err, SH_EPROTO, "item %s has no \"data\" object", json_string_value(key));
        return NULL;
    }
    it = sh_xcalloc(1, sizeof(*it));
    it->refs = 1;
    it->key = sh_xstrdup(json_string_value(key));
    if (!rev || parse_revision(rev, &it->revision) < 0)
        it->revision = 0;
    it->first_seen = opt_string(ds_item, "first_seen");
    it->last_seen = opt_string(ds_item, "last_seen");
    it->data = json_incref((json_t *)data);

    /* Public shape: _key first, the data's fields, then the timestamps; the
     * underscore names are ours and win over same-named data fields. */
    it->obj = json_object();
    (void)json_object_set_new(it->obj, "_key", json_string(it->key));
    json_object_foreach((json_t *)data, name, v)
    {
        if (strcmp(name, "_key") && strcmp(name, "_first_seen") && strcmp(name, "_last_seen"))
            (void)json_object_set(it->obj, name, v);
    }
    if (*it->first_seen)
        (void)json_object_set_new(it->obj, "_first_seen", json_string(it->first_seen));
    if (*it->last_seen)
        (void)json_object_set_new(it->obj, "_last_seen", json_string(it->last_seen));
    it->json = json_dumps(it->obj, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (!it->json) /* only on OOM or invalid UTF-8 keys, which jansson rejects on load */
        it->json = sh_xstrdup("{}");
    it->json_len = strlen(it->json);
    return it;
}

struct ep_item *ep_item_ref(struct ep_item *it)
{
    __atomic_add_fetch(&it->refs, 1, __ATOMIC_RELAXED);
    return it;
}

void ep_item_unref(struct ep_item *it)
{
    if (!it || __atomic_sub_fetch(&it->refs, 1, __ATOMIC_ACQ_REL) > 0)
        return;
    free(it->key);
    free(it->first_seen);
    free(it->last_seen);
    json_decref(it->data);
    json_decref(it->obj);
    free(it->json);
    free(it);
}

json_t *ep_item_to_json(const struct ep_item *it)
{
    json_t *o = json_object();
    (void)json_object_set_new(o, "key", json_string(it->key));
    if (*it->first_seen)
        (void)json_object_set_new(o, "first_seen", json_string(it->first_seen));
    if (*it->last_seen)
        (void)json_object_set_new(o, "last_seen", json_string(it->last_seen));
    (void)json_object_set_new(o, "revision", json_integer((json_int_t)it->revision));
    (void)json_object_set(o, "data", it->data);
    return o;
}

/* ---- snapshots -------------------------------------------------------------- */

static uint64_t fnv1a(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ULL;
    }
    return h;
}

static int item_cmp(const void *a, const void *b)
{
    const struct ep_item *x = *(const struct ep_item *const *)a;
    const struct ep_item *y = *(const struct ep_item *const *)b;
    int c = strcmp(x->first_seen, y->first_seen);
    return c ? c : strcmp(x->key, y->key);
}

static time_t parse_iso8601(const char *s)
{
    struct tm tm;
    const char *rest;

    if (!s || !*s)
        return (time_t)-1;
    memset(&tm, 0, sizeof(tm));
    rest = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
    if (!rest)
        return (time_t)-1;
    return timegm(&tm); /* fraction and zone ignored: the datasource writes UTC */
}

static struct sh_blob *blob_gzip(const struct sh_blob *plain)
{
    size_t len;
    char *gz = sh_deflate(plain->data, plain->len, GZIP_LEVEL_PREBUILT, SH_DEFLATE_GZIP, 0, &len);
    return gz ? sh_blob_new(gz, len) : NULL;
}

static struct sh_blob *build_blob(struct ep_snapshot *s, int fmt)
{
    struct ep_query q;
    size_t len;
    char *body;

    ep_query_init(&q);
    body = ep_render(&q, fmt, (const struct ep_item *const *)s->items, s->prebuilt_n, &len);
    ep_query_done(&q);
    return sh_blob_new(body, len);
}

struct ep_snapshot *ep_snapshot_new(const char *collection, uint64_t revision,
                                    const char *updated_at, struct ep_item **items, size_t n,
                                    size_t max_limit)
{
    struct ep_snapshot *s = sh_xcalloc(1, sizeof(*s));
    struct tm tm;
    size_t i;

    s->refs = 1;
    s->collection = sh_xstrdup(collection ? collection : "");
    s->revision = revision;
    s->updated_at = sh_xstrdup(updated_at ? updated_at : "");
    s->modified = parse_iso8601(updated_at);
    if (s->modified == (time_t)-1)
        s->modified = time(NULL);
    (void)snprintf(s->etag, sizeof(s->etag), "\"%llu\"", (unsigned long long)revision);
    if (gmtime_r(&s->modified, &tm))
        (void)strftime(s->last_modified, sizeof(s->last_modified), "%a, %d %b %Y %H:%M:%S GMT",
                       &tm);
    s->n = n;
    s->items = items ? items : sh_xcalloc(1, sizeof(*s->items));
    if (n > 1)
        qsort(s->items, n, sizeof(*s->items), item_cmp);

    s->index_cap = 16;
    while (s->index_cap < n * 2)
        s->index_cap *= 2;
    s->index = sh_xcalloc(s->index_cap, sizeof(*s->index));
    for (i = 0; i < n; i++) {
        size_t slot = fnv1a(s->items[i]->key) & (s->index_cap - 1);
        while (s->index[slot]) {
            /* A duplicate key (the caller merges by key, so only from a
             * malformed Redis snapshot): the first one stays findable. */
            if (!strcmp(s->items[s->index[slot] - 1]->key, s->items[i]->key))
                break;
            slot = (slot + 1) & (s->index_cap - 1);
        }
        if (!s->index[slot])
            s->index[slot] = (uint32_t)(i + 1);
    }

    s->prebuilt_n = n < max_limit ? n : max_limit;
    s->blobs[EP_FMT_JSON][0] = build_blob(s, EP_FMT_JSON);
    s->blobs[EP_FMT_JSON][1] = blob_gzip(s->blobs[EP_FMT_JSON][0]);
    return s;
}

struct ep_snapshot *ep_snapshot_ref(struct ep_snapshot *s)
{
    __atomic_add_fetch(&s->refs, 1, __ATOMIC_RELAXED);
    return s;
}

void ep_snapshot_unref(struct ep_snapshot *s)
{
    size_t i;
    int f;

    if (!s || __atomic_sub_fetch(&s->refs, 1, __ATOMIC_ACQ_REL) > 0)
        return;
    for (i = 0; i < s->n; i++)
        ep_item_unref(s->items[i]);
    for (f = 0; f < EP_FMT_N; f++) {
        sh_blob_unref(s->blobs[f][0]);
        sh_blob_unref(s->blobs[f][1]);
    }
    free(s->items);
    free(s->index);
    free(s->collection);
    free(s->updated_at);
    free(s);
}

const struct ep_item *ep_snapshot_find(const struct ep_snapshot *s, const char *key)
{
    size_t slot = fnv1a(key) & (s->index_cap - 1);
    while (s->index[slot]) {
        const struct ep_item *it = s->items[s->index[slot] - 1];
        if (!strcmp(it->key, key))
            return it;
        slot = (slot + 1) & (s->index_cap - 1);
    }
    return NULL;
}

struct sh_blob *ep_snapshot_blob(struct ep_snapshot *s, int fmt, int gz)
{
    struct sh_blob *b = __atomic_load_n(&s->blobs[fmt][gz], __ATOMIC_ACQUIRE);
    struct sh_blob *expected = NULL;

    if (b)
        return b;
    if (gz) {
        struct sh_blob *plain = ep_snapshot_blob(s, fmt, 0);
        b = plain ? blob_gzip(plain) : NULL;
    } else {
        b = build_blob(s, fmt);
    }
    if (!b)
        return NULL;
    /* Two threads may build the same blob; the first one stored wins. */
    if (!__atomic_compare_exchange_n(&s->blobs[fmt][gz], &expected, b, 0, __ATOMIC_ACQ_REL,
                                     __ATOMIC_ACQUIRE)) {
        sh_blob_unref(b);
        return expected;
    }
    return b;
}

char *ep_snapshot_dump(const struct ep_snapshot *s, size_t *ret_len)
{
    json_t *doc = json_object(), *arr = json_array();
    char *out;
    size_t i;

    (void)json_object_set_new(doc, "collection", json_string(s->collection));
    (void)json_object_set_new(doc, "revision", json_integer((json_int_t)s->revision));
    (void)json_object_set_new(doc, "updated_at", json_string(s->updated_at));
    (void)json_object_set_new(doc, "count", json_integer((json_int_t)s->n));
    for (i = 0; i < s->n; i++)
        (void)json_array_append_new(arr, ep_item_to_json(s->items[i]));
    (void)json_object_set_new(doc, "items", arr);
    out = json_dumps(doc, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(doc);
    if (!out)
        out = sh_xstrdup("{}");
    *ret_len = strlen(out);
    return out;
}

struct ep_snapshot *ep_snapshot_load(const char *json, size_t len, size_t max_limit,
                                     struct sh_err *err)
{
    json_error_t jerr;
    json_t *doc = json_loadb(json, len, 0, &jerr), *v;
    const json_t *items;
    struct ep_item **arr;
    struct ep_snapshot *s;
    uint64_t revision = 0;
    size_t i, n = 0;

    if (!doc) {
        sh_err_set(err, SH_EPROTO, "snapshot is not JSON: %s (line %d)", jerr.text, jerr.line);
        return NULL;
    }
    items = json_object_get(doc, "items");
    if (!json_is_array(items) || parse_revision(json_object_get(doc, "revision"), &revision) < 0) {
        sh_err_set(err, SH_EPROTO, "snapshot lacks \"items\" or \"revision\"");
        json_decref(doc);
        return NULL;
    }
    arr = sh_xcalloc(json_array_size(items) + 1, sizeof(*arr));
    json_array_foreach(items, i, v)
    {
        struct ep_item *it = ep_item_from_json(v, err);
        if (!it) {
            for (i = 0; i < n; i++)
                ep_item_unref(arr[i]);
            free(arr);
            json_decref(doc);
            sh_err_prefix(err, "snapshot item");
            return NULL;
        }
        arr[n++] = it;
    }
    v = json_object_get(doc, "updated_at");
    s = ep_snapshot_new(json_string_value(json_object_get(doc, "collection")), revision,
                        json_is_string(v) ? json_string_value(v) : NULL, arr, n, max_limit);
    json_decref(doc);
    return s;
}

/* ---- the slot ----------------------------------------------------------------- */

void ep_store_init(struct ep_store *st)
{
    memset(st, 0, sizeof(*st));
    (void)pthread_mutex_init(&st->mu, NULL);
}

void ep_store_done(struct ep_store *st)
{
    if (!st)
        return;
    ep_snapshot_unref(st->cur);
    st->cur = NULL;
    (void)pthread_mutex_destroy(&st->mu);
}

struct ep_snapshot *ep_store_get(struct ep_store *st)
{
    struct ep_snapshot *s;
    (void)pthread_mutex_lock(&st->mu);
    s = st->cur ? ep_snapshot_ref(st->cur) : NULL;
    (void)pthread_mutex_unlock(&st->mu);
    return s;
}

void ep_store_swap(struct ep_store *st, struct ep_snapshot *s, int source)
{
    struct ep_snapshot *old;
    (void)pthread_mutex_lock(&st->mu);
    old = st->cur;
    st->cur = s;
    st->source = source;
    (void)pthread_mutex_unlock(&st->mu);
    ep_snapshot_unref(old); /* outside the lock: may free a large snapshot */
}

int ep_store_source(struct ep_store *st)
{
    int src;
    (void)pthread_mutex_lock(&st->mu);
    src = st->source;
    (void)pthread_mutex_unlock(&st->mu);
    return src;
}

long ep_store_age(struct ep_store *st, time_t now)
{
    int64_t confirmed = __atomic_load_n(&st->confirmed_s, __ATOMIC_RELAXED);
    if (__atomic_load_n(&st->in_sync, __ATOMIC_RELAXED))
        return 0;
    if (!confirmed || now < confirmed)
        return 0;
    return (long)(now - confirmed);
}

void ep_store_mark(struct ep_store *st, int in_sync, time_t now)
{
    if (in_sync)
        __atomic_store_n(&st->confirmed_s, (int64_t)now, __ATOMIC_RELAXED);
    __atomic_store_n(&st->in_sync, in_sync, __ATOMIC_RELAXED);
}
