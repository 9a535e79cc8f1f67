/* Ingest -> tailer hand-off (poll mode): the capped documents this process
 * has just stored, in seq order, so the tailer can reduce them without
 * reading them back. Why: on FerretDB a find of the capped collection decodes
 * every returned document from its JSON text (the batch, base64) in Go, about
 * a seventh of FerretDB's CPU under sustained ingest, for data the process
 * already holds.
 *
 * Each document travels with its items by key (ds_batch_map over the texts
 * validation already made), so the tailer neither inflates nor parses it:
 * that work is done on the POST's thread, beside the tailer's writes.
 *
 * Only a shortcut: every document here is also durable in the capped
 * collection, which stays the source of truth (the tailer still polls it for
 * other replicas' batches, after a restart, and after a failed round). So a
 * push that does not fit is dropped, a disabled hand-off (the tailer is not
 * tailing) keeps nothing, and a crash loses nothing.
 *
 * Order: a round taken from here must not pass an older batch of this
 * process that only the capped collection holds, or the collection's
 * revision would move past that batch's seq and readers following by
 * revision (endpoints: since=<rev>) would never see its items. Every push of
 * the process goes through here in seq order, and a refused one is reported
 * (ds_handoff_dropped) so the tailer reads the capped collection, oldest
 * first, until it has caught up.
 *
 * Thread-safe: ingest pushes under its ingest_lock (so pushes are in seq
 * order), the tailer takes and filters. */
#include <string.h>

#include "datasource.h"
#include "shared/xalloc.h"

struct handoff_entry {
    bson_t *doc;
    json_t *map; /* may be NULL */
};

struct ds_handoff {
    pthread_mutex_t mu;
    struct handoff_entry *v; /* ring of owned entries, oldest at head */
    size_t cap, head, n;
    size_t bytes, max_bytes;
    int enabled;
    int dropped; /* a push was refused while enabled (full) since the last ds_handoff_dropped() */
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
        bson_destroy(h->v[h->head].doc);
        json_decref(h->v[h->head].map);
        memset(&h->v[h->head], 0, sizeof(h->v[h->head]));
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

int ds_handoff_push(struct ds_handoff *h, bson_t *doc, json_t *map)
{
    int kept = 0;

    (void)pthread_mutex_lock(&h->mu);
    if (h->enabled && h->n < h->cap && h->bytes + doc->len <= h->max_bytes) {
        struct handoff_entry *e = &h->v[(h->head + h->n) % h->cap];
        e->doc = doc;
        e->map = map;
        h->n++;
        h->bytes += doc->len;
        kept = 1;
    } else if (h->enabled) {
        h->dropped = 1;
    }
    (void)pthread_mutex_unlock(&h->mu);
    if (!kept) {
        bson_destroy(doc);
        json_decref(map);
    }
    return kept;
}

size_t ds_handoff_take(struct ds_handoff *h, bson_t **docs, json_t **maps, size_t max,
                       size_t max_bytes)
{
    size_t got = 0, bytes = 0;

    (void)pthread_mutex_lock(&h->mu);
    while (h->n > 0 && got < max) {
        struct handoff_entry *e = &h->v[h->head];
        if (got > 0 && bytes + e->doc->len > max_bytes)
            break;
        docs[got] = e->doc;
        maps[got] = e->map;
        got++;
        bytes += e->doc->len;
        h->bytes -= e->doc->len;
        memset(e, 0, sizeof(*e));
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
        struct handoff_entry e = h->v[(h->head + i) % h->cap];
        if (id_listed(e.doc, ids)) {
            h->bytes -= e.doc->len;
            bson_destroy(e.doc);
            json_decref(e.map);
        } else {
            h->v[(h->head + kept++) % h->cap] = e;
        }
    }
    for (i = kept; i < h->n; i++)
        memset(&h->v[(h->head + i) % h->cap], 0, sizeof(h->v[0]));
    h->n = kept;
    (void)pthread_mutex_unlock(&h->mu);
}

int ds_handoff_dropped(struct ds_handoff *h)
{
    int d;

    (void)pthread_mutex_lock(&h->mu);
    d = h->dropped;
    h->dropped = 0;
    (void)pthread_mutex_unlock(&h->mu);
    return d;
}
