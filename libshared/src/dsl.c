/* Compiles a validated configuration into struct sh_dsl (see shared/dsl.h):
 * top-level settings with their defaults, plus the field tree with every
 * selector precompiled (XPath via xmlXPathCtxtCompile, regexes via
 * regcomp), so extraction does no parsing per page. The result is
 * immutable and may be shared by threads. */
#include <stdlib.h>
#include <string.h>

#include "extract_int.h"
#include "shared/xalloc.h"

struct build {
    struct dsl_root *root;
    struct sh_dsl_node **nodes;
    int n;
};

static struct sh_dsl_node *new_node(struct build *b, enum node_kind kind, const char *name,
                                    const char *parent_path, int depth)
{
    struct sh_dsl_node *n = sh_xcalloc(1, sizeof(*n));
    n->kind = kind;
    n->name = sh_xstrdup(name);
    n->path = *parent_path ? sh_xasprintf("%s.%s", parent_path, name) : sh_xstrdup(name);
    n->depth = depth;
    n->id = b->n;
    b->nodes = sh_xrealloc(b->nodes, (size_t)(b->n + 1) * sizeof(*b->nodes));
    b->nodes[b->n++] = n;
    return n;
}

/* Selectors were validated: compilation cannot fail here but for OOM in
 * libxml2, which is fatal like every other allocation failure. */
static struct sh_selector *sel(const json_t *j, enum sh_sel_lang lang, const char *link)
{
    struct sh_err err;
    struct sh_selector *s = selector_new_link(json_string_value(j), lang, link, &err);
    if (!s)
        abort();
    return s;
}

static struct sh_dsl_node *build_field(struct build *b, const char *name, const char *parent,
                                       const json_t *j, enum sh_sel_lang lang, int depth);

static void add_kids(struct build *b, struct sh_dsl_node *n, const json_t *fields,
                     enum sh_sel_lang lang, int depth)
{
    const char *key;
    json_t *val;
    n->kids = sh_xcalloc(json_object_size(fields), sizeof(*n->kids));
    json_object_foreach((json_t *)fields, key, val)
    {
        n->kids[n->nkids++] = build_field(b, key, n->path, val, lang, depth);
    }
}

static struct sh_dsl_node *build_follow(struct build *b, const char *name, const char *parent,
                                        const json_t *j, enum sh_sel_lang lang, int depth, bool all)
{
    struct sh_dsl_node *n = new_node(b, NODE_FOLLOW, name, parent, depth);
    n->follow_all = all;
    n->sel = sel(json_object_get(j, "follow"), lang, "href");
    const json_t *t = json_object_get(j, "type");
    enum sh_sel_lang sub = lang;
    if (t)
        sub = strcmp(json_string_value(t), "json") == 0 ? SH_SEL_JSON : SH_SEL_HTML;
    n->follow_type = sub == SH_SEL_JSON ? SH_DSL_SOURCE_JSON : SH_DSL_SOURCE_HTML;
    if (json_object_get(j, "scope"))
        n->follow_scope = sel(json_object_get(j, "scope"), sub, NULL);
    if (json_object_get(j, "field"))
        n->follow_field =
            build_field(b, "field", n->path, json_object_get(j, "field"), sub, depth + 1);
    else
        add_kids(b, n, json_object_get(j, "fields"), sub, depth + 1);
    return n;
}

static struct sh_dsl_node *build_field(struct build *b, const char *name, const char *parent,
                                       const json_t *j, enum sh_sel_lang lang, int depth)
{
    struct sh_dsl_node *n;
    if (json_is_string(j)) {
        n = new_node(b, NODE_VALUE, name, parent, depth);
        n->sel = sel(j, lang, NULL);
    } else if (json_is_array(j)) {
        const json_t *e = json_array_get(j, 0);
        if (json_is_string(e)) {
            n = new_node(b, NODE_LIST, name, parent, depth);
            n->sel = sel(e, lang, NULL);
        } else if (json_object_get(e, "follow")) {
            n = build_follow(b, name, parent, e, lang, depth, true);
        } else {
            n = new_node(b, NODE_OBJECT_LIST, name, parent, depth);
            n->sel = sel(json_object_get(e, "scope"), lang, NULL);
            add_kids(b, n, json_object_get(e, "fields"), lang, depth);
        }
    } else if (json_object_get(j, "follow")) {
        n = build_follow(b, name, parent, j, lang, depth, false);
    } else if (json_is_object(json_object_get(j, "fields")) && json_object_size(j) <= 2 &&
               (json_object_size(j) == 1 || json_object_get(j, "scope"))) {
        n = new_node(b, NODE_OBJECT, name, parent, depth);
        if (json_object_get(j, "scope"))
            n->sel = sel(json_object_get(j, "scope"), lang, NULL);
        add_kids(b, n, json_object_get(j, "fields"), lang, depth);
    } else {
        n = new_node(b, NODE_OBJECT, name, parent, depth);
        add_kids(b, n, j, lang, depth);
    }
    return n;
}

static char *opt_str(const json_t *obj, const char *key)
{
    const json_t *j = json_object_get(obj, key);
    return json_is_string(j) ? sh_xstrdup(json_string_value(j)) : NULL;
}

static long opt_int(const json_t *obj, const char *key, long def)
{
    const json_t *j = json_object_get(obj, key);
    return json_is_integer(j) ? (long)json_integer_value(j) : def;
}

static char *cookie_string(const json_t *c)
{
    if (json_is_string(c))
        return sh_xstrdup(json_string_value(c));
    if (!json_is_object(c) || json_object_size(c) == 0)
        return NULL;
    char *s = sh_xstrdup("");
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)c, k, v)
    {
        char *t = sh_xasprintf("%s%s%s=%s", s, *s ? "; " : "", k, json_string_value(v));
        free(s);
        s = t;
    }
    return s;
}

struct sh_dsl *sh_dsl_compile(const json_t *config, struct sh_err *err)
{
    json_t *problems;
    int n = sh_dsl_validate(config, &problems);
    if (n > 0) {
        json_t *p = json_array_get(problems, 0);
        sh_err_set(err, SH_ECONFIG, "%s: %s%s", json_string_value(json_object_get(p, "path")),
                   json_string_value(json_object_get(p, "message")),
                   n > 1 ? " (and more problems)" : "");
        json_decref(problems);
        return NULL;
    }
    json_decref(problems);
    const json_t *type = json_object_get(config, "type");
    if (type && strcmp(json_string_value(type), "endpoint") == 0) {
        sh_err_set(err, SH_ECONFIG, "an endpoint configuration has nothing to scrape");
        return NULL;
    }

    struct sh_dsl *d = sh_xcalloc(1, sizeof(*d));
    const json_t *src = json_object_get(config, "source");
    d->id = opt_str(config, "_id");
    d->collection = opt_str(config, "collection");
    d->ttl = (int)opt_int(config, "ttl", SH_DSL_TTL_DEFAULT);
    d->replicas = (int)opt_int(config, "replicas", 1);
    d->url = opt_str(src, "url");
    d->source_type = (json_is_string(json_object_get(src, "type")) &&
                      strcmp(json_string_value(json_object_get(src, "type")), "json") == 0)
                         ? SH_DSL_SOURCE_JSON
                         : SH_DSL_SOURCE_HTML;
    d->method = opt_str(src, "method");
    if (!d->method)
        d->method = sh_xstrdup("GET");
    d->body = opt_str(src, "body");
    d->headers = json_is_object(json_object_get(src, "headers"))
                     ? json_deep_copy(json_object_get(src, "headers"))
                     : json_object();
    d->cookies = cookie_string(json_object_get(src, "cookies"));
    d->user_agent = opt_str(src, "user_agent");
    d->timeout = (int)opt_int(src, "timeout", 30);
    const json_t *key = json_object_get(config, "key");
    d->key = json_is_string(key)  ? json_pack("[O]", key)
             : json_is_array(key) ? json_deep_copy(key)
                                  : json_array();
    const json_t *pol = json_object_get(config, "politeness");
    const json_t *rate = json_object_get(pol, "rate");
    d->politeness.rate = json_is_number(rate) ? json_number_value(rate) : 1.0;
    d->politeness.burst = (int)opt_int(pol, "burst", 5);
    d->politeness.robots = !json_is_false(json_object_get(pol, "robots"));
    d->politeness.concurrency = (int)opt_int(pol, "concurrency", 4);

    enum sh_sel_lang lang = d->source_type == SH_DSL_SOURCE_JSON ? SH_SEL_JSON : SH_SEL_HTML;
    struct build b = {0};
    struct dsl_root *r = sh_xcalloc(1, sizeof(*r));
    b.root = r;
    r->node.kind = NODE_OBJECT;
    r->node.name = sh_xstrdup("");
    r->node.path = sh_xstrdup("");
    r->node.id = -1;
    if (json_object_get(config, "scope"))
        r->scope = sel(json_object_get(config, "scope"), lang, NULL);
    add_kids(&b, &r->node, json_object_get(config, "fields"), lang, 0);
    const json_t *pg = json_object_get(config, "paginate");
    if (json_is_string(pg)) {
        d->paginate = SH_DSL_PAGINATE_NEXT;
        r->next = sel(pg, lang, "href");
    } else if (json_object_get(pg, "next")) {
        d->paginate = SH_DSL_PAGINATE_NEXT;
        r->next = sel(json_object_get(pg, "next"), lang, "href");
    } else if (json_object_get(pg, "param")) {
        d->paginate = SH_DSL_PAGINATE_PARAM;
        r->param = opt_str(pg, "param");
        r->param_start = opt_int(pg, "start", 1);
        r->param_step = opt_int(pg, "step", 1);
    }
    d->limit = (int)opt_int(config, "limit",
                            d->paginate == SH_DSL_PAGINATE_NONE ? 1 : SH_DSL_LIMIT_DEFAULT);
    r->nnodes = b.n;
    r->by_id = b.nodes;
    d->root = &r->node;
    return d;
}

static void node_free(struct sh_dsl_node *n)
{
    if (!n)
        return;
    for (size_t i = 0; i < n->nkids; i++)
        node_free(n->kids[i]);
    free(n->kids);
    node_free(n->follow_field);
    sh_selector_free(n->sel);
    sh_selector_free(n->follow_scope);
    free(n->name);
    free(n->path);
    free(n);
}

void sh_dsl_free(struct sh_dsl *d)
{
    if (!d)
        return;
    struct dsl_root *r = (struct dsl_root *)d->root;
    if (r) {
        for (size_t i = 0; i < r->node.nkids; i++)
            node_free(r->node.kids[i]);
        free(r->node.kids);
        free(r->node.name);
        free(r->node.path);
        sh_selector_free(r->scope);
        sh_selector_free(r->next);
        free(r->param);
        free(r->by_id);
        free(r);
    }
    free(d->id);
    free(d->collection);
    free(d->url);
    free(d->method);
    free(d->body);
    json_decref(d->headers);
    free(d->cookies);
    free(d->user_agent);
    json_decref(d->key);
    free(d);
}

static size_t lev(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > 64 || lb > 64)
        return 99;
    size_t prev[65], cur[65];
    for (size_t j = 0; j <= lb; j++)
        prev[j] = j;
    for (size_t i = 1; i <= la; i++) {
        cur[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
            size_t m = prev[j] + 1;
            if (cur[j - 1] + 1 < m)
                m = cur[j - 1] + 1;
            if (prev[j - 1] + cost < m)
                m = prev[j - 1] + cost;
            cur[j] = m;
        }
        memcpy(prev, cur, sizeof(prev));
    }
    return prev[lb];
}

const char *sh_dsl_suggest(const char *word, const char *const *candidates)
{
    const char *best = NULL;
    size_t bd = 3;
    for (size_t i = 0; candidates && candidates[i]; i++) {
        size_t d = lev(word, candidates[i]);
        if (d < bd && d < strlen(candidates[i])) {
            bd = d;
            best = candidates[i];
        }
    }
    return best;
}
