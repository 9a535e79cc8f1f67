/* Ingest -> tailer hand-off (poll mode): the capped documents this process
 * has just stored, in seq order, so the tailer can reduce them without
 * reading them back. Why: on FerretDB a find of the capped collection decodes
 * every returned document from its JSON text (the batch, base64) in Go, about
 * a seventh of FerretDB's CPU under sustained ingest, for data the process
 * already holds.
 *
 * Only a shortcut: every document here is also durable in the capped
 * collection, which stays the source of truth (the tailer still polls it for
 * other replicas' batches, after a restart, and after a failed round). So a
 * push that does not fit is dropped, a disabled hand-off (the tailer is not
 * tailing) keeps nothing, and a crash loses nothing.
 *
 * Thread-safe: ingest pushes under its ingest_lock (so pushes are in seq
 * order), the tailer takes and filters. */
#include <string.h>

#include "datasource.h"
#include "shared/xalloc.h"

struct ds_handoff {
    pthread_mutex_t mu;
    bson_t **v; /* ring of owned documents, oldest at head */
    size_t cap, head, n;
    size_t bytes, max_bytes;
    int enabled;
};

struct ds_handoff *ds_handoff_new(size_t max_docs, size_t max_bytes)
{
    struct ds_handoff *h = sh_xcalloc(1, sizeof(*h));

    (void)pthread_mutex_init(&h->mu, NULL);
    h->cap = max_docs > 0 ? max_docs : 1;
    h->v = sh_xcalloc(h->cap, sizeof(*h->v));
    h->max_bytes = max_bytes;
    return h;
}

static void clear_locked(struct ds_handoff *h)
{
    while (h->n > 0) {
        bson_destroy(h->v[h->head]);
        h->v[h->head] = NULL;
        h->head = (h->head + 1) % h->cap;
        h->n--;
    }
    h->head = 0;
    h->bytes = 0;
}

void ds_handoff_free(struct ds_handoff *h)
{
    if (!h)
        return;
    clear_locked(h);
    free(h->v);
    (void)pthread_mutex_destroy(&h->mu);
    free(h);
}

void ds_handoff_enable(struct ds_handoff *h, int on)
{
    (void)pthread_mutex_lock(&h->mu);
    h->enabled = on;
    if (!on)
        clear_locked(h);
    (void)pthread_mutex_unlock(&h->mu);
}

int ds_handoff_push(struct ds_handoff *h, bson_t *doc)
{
    int kept = 0;

    (void)pthread_mutex_lock(&h->mu);
    if (h->enabled && h->n < h->cap && h->bytes + doc->len <= h->max_bytes) {
        h->v[(h->head + h->n) % h->cap] = doc;
        h->n++;
        h->bytes += doc->len;
        kept = 1;
    }
    (void)pthread_mutex_unlock(&h->mu);
    if (!kept)
        bson_destroy(doc);
    return kept;
}

size_t ds_handoff_take(struct ds_handoff *h, bson_t **docs, size_t max, size_t max_bytes)
{
    size_t got = 0, bytes = 0;

    (void)pthread_mutex_lock(&h->mu);
    while (h->n > 0 && got < max) {
        bson_t *d = h->v[h->head];
        if (got > 0 && bytes + d->len > max_bytes)
            break;
        docs[got++] = d;
        bytes += d->len;
        h->bytes -= d->len;
        h->v[h->head] = NULL;
        h->head = (h->head + 1) % h->cap;
        h->n--;
    }
    (void)pthread_mutex_unlock(&h->mu);
    return got;
}

/* 1 when doc's string _id is in ids (a JSON array of strings). */
static int id_listed(const bson_t *doc, json_t *ids)
{
    bson_iter_t it;
    const char *id;
    size_t i;
    json_t *v;

    if (!bson_iter_init_find(&it, doc, "_id") || !BSON_ITER_HOLDS_UTF8(&it))
        return 0;
    id = bson_iter_utf8(&it, NULL);
    json_array_foreach(ids, i, v)
    {
        if (strcmp(json_string_value(v), id) == 0)
            return 1;
    }
    return 0;
}

void ds_handoff_drop_ids(struct ds_handoff *h, json_t *ids)
{
    size_t i, kept = 0;

    (void)pthread_mutex_lock(&h->mu);
    /* compact in place, keeping order */
    for (i = 0; i < h->n; i++) {
        bson_t *d = h->v[(h->head + i) % h->cap];
        if (id_listed(d, ids)) {
            h->bytes -= d->len;
            bson_destroy(d);
        } else {
            h->v[(h->head + kept++) % h->cap] = d;
        }
    }
    for (i = kept; i < h->n; i++)
        h->v[(h->head + i) % h->cap] = NULL;
    h->n = kept;
    (void)pthread_mutex_unlock(&h->mu);
}

size_t ds_handoff_count(struct ds_handoff *h)
{
    size_t n;

    (void)pthread_mutex_lock(&h->mu);
    n = h->n;
    (void)pthread_mutex_unlock(&h->mu);
    return n;
}
