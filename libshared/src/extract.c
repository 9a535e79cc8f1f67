/* The extraction engine (see shared/extract.h): parses one page (libxml2's
 * HTML parser in recover mode, or jansson), walks the compiled field tree
 * per item node, records follow slots for linked pages and the next-page
 * URLs, and counts per-field diagnostics.
 *
 * Ownership: a struct sh_extract owns its items, next URLs and slots; the
 * parsed document lives only during sh_extract_page / sh_extract_fill.
 * Values are evaluated through source-neutral "pages" (struct page) so the
 * HTML and JSON paths share the tree walk. Not thread-safe per result;
 * results over one shared struct sh_dsl may run in parallel. */
#include "shared/extract.h"

#include <libxml/HTMLparser.h>
#include <libxml/HTMLtree.h>
#include <libxml/parser.h>
#include <limits.h>
#include <string.h>

#include "extract_int.h"
#include "extract_page.h"
#include "shared/xalloc.h"

struct slot {
    char *url;
    int depth;
    const struct sh_dsl_node *node; /* the FOLLOW node */
    json_t *container;              /* object or array holding the value (a reference) */
    char *key;                      /* object key, or NULL: array index */
    size_t index;
    bool pending;
};

struct sh_extract {
    const struct sh_dsl *dsl;
    json_t *items, *next_urls, *stats;
    struct slot *slots;
    size_t nslots, cap;
    struct counter *ctr; /* one per node id, then scope and paginate */
    long nitems, follows_failed, follows_filled, follows_dropped;
};

#define CTR_SCOPE(x) (&(x)->ctr[((struct dsl_root *)(x)->dsl->root)->nnodes])
#define CTR_PAGINATE(x) (&(x)->ctr[((struct dsl_root *)(x)->dsl->root)->nnodes + 1])

static void add_slot(struct sh_extract *x, char *url, const struct sh_dsl_node *n,
                     json_t *container, const char *key, size_t index)
{
    if (x->nslots >= SH_EXTRACT_MAX_FOLLOWS) {
        free(url);
        x->follows_dropped++;
        return;
    }
    if (x->nslots == x->cap) {
        x->cap = x->cap ? x->cap * 2 : 16;
        x->slots = sh_xrealloc(x->slots, x->cap * sizeof(*x->slots));
    }
    struct slot *s = &x->slots[x->nslots++];
    s->url = url;
    s->depth = n->depth + 1;
    s->node = n;
    s->container = json_incref(container);
    s->key = key ? sh_xstrdup(key) : NULL;
    s->index = index;
    s->pending = true;
}

static json_t *eval_node(struct sh_extract *x, struct page *pg, const struct sh_dsl_node *n,
                         void *item, json_t *parent);

/* Object of n's kids at item. */
static json_t *eval_object(struct sh_extract *x, struct page *pg, const struct sh_dsl_node *n,
                           void *item)
{
    json_t *obj = json_object();
    for (size_t i = 0; i < n->nkids; i++) {
        json_t *v = eval_node(x, pg, n->kids[i], item, obj);
        if (json_object_set_new(obj, n->kids[i]->name, v) < 0)
            abort();
    }
    return obj;
}

/* Where a follow's value goes: an object member or an array element. */
struct target {
    json_t *container;
    const char *key; /* NULL: array index */
    size_t index;
};

/* Records follow slots for n's links at item; returns the placeholder
 * (null, or an array of nulls for "follow all") that the fills replace. */
static json_t *eval_follow(struct sh_extract *x, struct page *pg, const struct sh_dsl_node *n,
                           void *item, struct target t)
{
    struct counter *c = &x->ctr[n->id];
    json_t *links = page_values(pg, n->sel, item, true, c);
    json_t *result = n->follow_all ? json_array() : json_null();
    size_t i;
    json_t *l;
    json_array_foreach(links, i, l)
    {
        char *url = json_is_string(l)
                        ? url_resolve_cached(&pg->base_cache, pg->base, json_string_value(l), false)
                        : NULL;
        if (!url) {
            counter_error(c, sh_xasprintf("follow: '%.80s' is not a URL",
                                          json_is_string(l) ? json_string_value(l) : "?"));
            continue;
        }
        if (n->follow_all) {
            (void)json_array_append_new(result, json_null());
            add_slot(x, url, n, result, NULL, json_array_size(result) - 1);
        } else {
            add_slot(x, url, n, t.container, t.key, t.index);
            break;
        }
    }
    json_decref(links);
    return result;
}

/* Value of field n at item. Counters: page_values / page_nodes count the
 * selector's evaluations, matches and fills; a plain nested object counts
 * itself. A follow's own counter is about its links; the values found on
 * the linked pages count under its "field" / sub-field paths. */
static json_t *eval_node(struct sh_extract *x, struct page *pg, const struct sh_dsl_node *n,
                         void *item, json_t *parent)
{
    struct counter *c = &x->ctr[n->id];
    void **nodes = NULL;
    size_t k;
    json_t *v;

    switch (n->kind) {
    case NODE_VALUE:
    case NODE_LIST:
        return page_values(pg, n->sel, item, n->kind == NODE_LIST, c);
    case NODE_OBJECT:
        if (!n->sel) {
            c->evals++;
            c->filled++;
            return eval_object(x, pg, n, item);
        }
        k = page_nodes(pg, n->sel, item, &nodes, c);
        v = k ? eval_object(x, pg, n, nodes[0]) : json_null();
        free(nodes);
        return v;
    case NODE_OBJECT_LIST:
        k = page_nodes(pg, n->sel, item, &nodes, c);
        v = json_array();
        for (size_t i = 0; i < k; i++)
            (void)json_array_append_new(v, eval_object(x, pg, n, nodes[i]));
        free(nodes);
        return v;
    case NODE_FOLLOW:
        return eval_follow(x, pg, n, item, (struct target){parent, n->name, 0});
    }
    return json_null();
}

/* The value a follow slot gets from its page. */
static json_t *eval_followed(struct sh_extract *x, struct page *pg, const struct slot *s)
{
    const struct sh_dsl_node *n = s->node, *f = n->follow_field;
    void *root = page_root(pg);
    void **items = NULL;
    size_t k = 1;
    json_t *out;
    /* copy: add_slot may move x->slots */
    struct target outer = {s->container, s->key, s->index};

    if (n->follow_scope)
        k = page_nodes(pg, n->follow_scope, root, &items, &x->ctr[n->id]);
    out = n->follow_scope ? json_array() : NULL;
    for (size_t i = 0; i < k; i++) {
        void *item = items ? items[i] : root;
        json_t *v;
        if (f && f->kind == NODE_FOLLOW) {
            /* {"follow": a, "field": {"follow": b, ...}}: the inner follow's
             * value replaces this slot's value (or its scope entry) */
            if (out)
                (void)json_array_append_new(out, json_null());
            struct target t = out ? (struct target){out, NULL, i} : outer;
            v = eval_follow(x, pg, f, item, t);
            if (out) {
                (void)json_array_set_new(out, i, v);
                continue;
            }
        } else {
            v = f ? eval_node(x, pg, f, item, NULL) : eval_object(x, pg, n, item);
        }
        if (!out)
            out = v;
        else
            (void)json_array_append_new(out, v);
    }
    free(items);
    return out;
}

struct sh_extract *sh_extract_page(const struct sh_dsl *dsl, const char *body, size_t len,
                                   const char *url, const char *content_type, struct sh_err *err)
{
    struct dsl_root *r = (struct dsl_root *)dsl->root;
    struct page pg;

    if (page_open(&pg, dsl->source_type, body, len, url, content_type, err) < 0)
        return NULL;
    struct sh_extract *x = sh_xcalloc(1, sizeof(*x));
    x->dsl = dsl;
    x->items = json_array();
    x->next_urls = json_array();
    x->ctr = sh_xcalloc((size_t)r->nnodes + 2, sizeof(*x->ctr));

    void *root = page_root(&pg);
    void **items = NULL;
    size_t k = 1;
    if (r->scope) {
        k = page_nodes(&pg, r->scope, root, &items, CTR_SCOPE(x));
    } else if (pg.json && json_is_array(pg.json)) {
        k = page_nodes(&pg, NULL, root, &items, CTR_SCOPE(x));
    }
    if (k > SH_EXTRACT_MAX_ITEMS) {
        sh_err_set(err, SH_ELIMIT, "page has %zu items, more than %d", k, SH_EXTRACT_MAX_ITEMS);
        free(items);
        page_close(&pg);
        sh_extract_free(x);
        return NULL;
    }
    for (size_t i = 0; i < k; i++)
        (void)json_array_append_new(x->items,
                                    eval_object(x, &pg, dsl->root, items ? items[i] : root));
    x->nitems = (long)k;
    free(items);

    if (r->next) {
        json_t *links = page_values(&pg, r->next, root, true, CTR_PAGINATE(x));
        size_t i;
        json_t *l;
        json_array_foreach(links, i, l)
        {
            char *u = json_is_string(l) ? url_resolve(pg.base, json_string_value(l), false) : NULL;
            bool dup = false;
            size_t j;
            json_t *e;
            json_array_foreach(x->next_urls, j, e) dup |= u && strcmp(json_string_value(e), u) == 0;
            if (u && !dup && (!pg.url || strcmp(u, pg.url) != 0))
                (void)json_array_append_new(x->next_urls, json_string(u));
            free(u);
        }
        json_decref(links);
    } else if (r->param && k > 0 && pg.url) {
        char *u = page_param_next(pg.url, r->param, r->param_start, r->param_step);
        if (u)
            (void)json_array_append_new(x->next_urls, json_string(u));
        free(u);
    }
    page_close(&pg);
    return x;
}

void sh_extract_free(struct sh_extract *x)
{
    if (!x)
        return;
    for (size_t i = 0; i < x->nslots; i++) {
        free(x->slots[i].url);
        free(x->slots[i].key);
        json_decref(x->slots[i].container);
    }
    free(x->slots);
    if (x->ctr) {
        int n = ((struct dsl_root *)x->dsl->root)->nnodes + 2;
        for (int i = 0; i < n; i++)
            json_decref(x->ctr[i].first_errors);
        free(x->ctr);
    }
    json_decref(x->items);
    json_decref(x->next_urls);
    json_decref(x->stats);
    free(x);
}

size_t sh_extract_follow_count(const struct sh_extract *x)
{
    return x->nslots;
}

const char *sh_extract_follow_url(const struct sh_extract *x, size_t i)
{
    return i < x->nslots ? x->slots[i].url : NULL;
}

int sh_extract_follow_depth(const struct sh_extract *x, size_t i)
{
    return i < x->nslots ? x->slots[i].depth : 0;
}

int sh_extract_follow_pending(const struct sh_extract *x, size_t i)
{
    return i < x->nslots && x->slots[i].pending;
}

static void put(struct slot *s, json_t *v)
{
    int rc = s->key ? json_object_set_new(s->container, s->key, v)
                    : json_array_set_new(s->container, s->index, v);
    if (rc < 0)
        abort();
}

int sh_extract_fill(struct sh_extract *x, size_t i, const char *body, size_t len, const char *url,
                    const char *content_type, struct sh_err *err)
{
    struct page pg;
    if (i >= x->nslots || !x->slots[i].pending) {
        sh_err_set(err, SH_ENOTFOUND, "follow slot %zu is not pending", i);
        return -1;
    }
    const struct sh_dsl_node *n = x->slots[i].node;
    if (page_open(&pg, n->follow_type, body, len, url ? url : x->slots[i].url, content_type, err) <
        0) {
        sh_extract_fail(x, i, err ? err->msg : "unparsable page");
        return -1;
    }
    json_t *v = eval_followed(x, &pg, &x->slots[i]);
    page_close(&pg);
    /* x->slots may have moved while nested follows were added */
    struct slot *s = &x->slots[i];
    s->pending = false;
    put(s, v);
    x->follows_filled++;
    return 0;
}

void sh_extract_fail(struct sh_extract *x, size_t i, const char *reason)
{
    if (i >= x->nslots || !x->slots[i].pending)
        return;
    x->slots[i].pending = false;
    x->follows_failed++;
    counter_error(&x->ctr[x->slots[i].node->id],
                  sh_xasprintf("follow %s: %s", x->slots[i].url, reason ? reason : "failed"));
}

json_t *sh_extract_items(const struct sh_extract *x)
{
    return x->items;
}

json_t *sh_extract_next_urls(const struct sh_extract *x)
{
    return x->next_urls;
}

static json_t *counter_json(const struct counter *c)
{
    json_t *o = json_pack("{s:I, s:I, s:I, s:I}", "evaluated", (json_int_t)c->evals, "matches",
                          (json_int_t)c->matches, "filled", (json_int_t)c->filled, "errors",
                          (json_int_t)c->errors);
    (void)json_object_set_new(o, "first_errors",
                              c->first_errors ? json_deep_copy(c->first_errors) : json_array());
    return o;
}

json_t *sh_extract_stats(const struct sh_extract *x)
{
    struct dsl_root *r = (struct dsl_root *)x->dsl->root;
    json_t *fields = json_object();
    for (int i = 0; i < r->nnodes; i++)
        (void)json_object_set_new(fields, r->by_id[i]->path, counter_json(&x->ctr[i]));
    if (r->scope)
        (void)json_object_set_new(fields, "$scope", counter_json(CTR_SCOPE(x)));
    if (r->next)
        (void)json_object_set_new(fields, "$paginate", counter_json(CTR_PAGINATE(x)));
    json_t *s = json_pack("{s:I, s:I, s:o, s:{s:I, s:I, s:I, s:I}}", "pages", (json_int_t)1,
                          "items", (json_int_t)x->nitems, "fields", fields, "follows", "requested",
                          (json_int_t)x->nslots, "filled", (json_int_t)x->follows_filled, "failed",
                          (json_int_t)x->follows_failed, "dropped", (json_int_t)x->follows_dropped);
    json_decref(((struct sh_extract *)x)->stats);
    ((struct sh_extract *)x)->stats = s;
    return s;
}

static void add_int(json_t *acc, json_t *from, const char *key)
{
    json_int_t a = json_integer_value(json_object_get(acc, key));
    (void)json_object_set_new(acc, key,
                              json_integer(a + json_integer_value(json_object_get(from, key))));
}

void sh_extract_stats_merge(json_t *acc, const struct sh_extract *x)
{
    json_t *s = sh_extract_stats(x);
    add_int(acc, s, "pages");
    add_int(acc, s, "items");
    json_t *af = json_object_get(acc, "fields"), *ff = json_object_get(acc, "follows");
    if (!af)
        (void)json_object_set_new(acc, "fields", af = json_object());
    if (!ff)
        (void)json_object_set_new(acc, "follows", ff = json_object());
    const char *k;
    json_t *v;
    json_object_foreach(json_object_get(s, "follows"), k, v)
        add_int(ff, json_object_get(s, "follows"), k);
    json_object_foreach(json_object_get(s, "fields"), k, v)
    {
        json_t *a = json_object_get(af, k);
        if (!a) {
            a = json_pack("{s:I, s:I, s:I, s:I, s:[]}", "evaluated", (json_int_t)0, "matches",
                          (json_int_t)0, "filled", (json_int_t)0, "errors", (json_int_t)0,
                          "first_errors");
            (void)json_object_set_new(af, k, a);
        }
        add_int(a, v, "evaluated");
        add_int(a, v, "matches");
        add_int(a, v, "filled");
        add_int(a, v, "errors");
        json_t *fe = json_object_get(a, "first_errors");
        size_t i;
        json_t *e;
        json_array_foreach(json_object_get(v, "first_errors"), i, e)
        {
            if (json_array_size(fe) < 3)
                (void)json_array_append(fe, e);
        }
        json_int_t ev = json_integer_value(json_object_get(a, "evaluated"));
        (void)json_object_set_new(
            a, "fill_rate",
            json_real(ev ? (double)json_integer_value(json_object_get(a, "filled")) / (double)ev
                         : 0.0));
    }
}

void sh_extract_global_init(void)
{
    xmlInitParser();
}
