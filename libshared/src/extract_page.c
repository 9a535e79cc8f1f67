/* Page access for the extraction engine: parsing (libxml2 HTML parser with
 * RECOVER|NOERROR|NOWARNING|NONET|COMPACT, or jansson), node selection and
 * value extraction (normalised text, inner HTML, attributes, JSON values),
 * with the selector's filter pipeline applied. One page per thread; the
 * XPath context is private to the page; the parser context is per thread
 * (thread-specific data, freed at thread exit). */
#include "extract_page.h"

#include <ctype.h>
#include <curl/curl.h>
#include <libxml/HTMLtree.h>
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "shared/buf.h"
#include "shared/xalloc.h"

void counter_error(struct counter *c, char *msg)
{
    c->errors++;
    if (!c->first_errors)
        c->first_errors = json_array();
    if (json_array_size(c->first_errors) < 3)
        (void)json_array_append_new(c->first_errors, json_string(msg));
    free(msg);
}

static void xpath_runtime_error(void *data, const xmlError *e)
{
    struct page *pg = data;
    if (!pg->xerr[0])
        (void)snprintf(pg->xerr, sizeof(pg->xerr), "XPath: %s",
                       e->message ? e->message : "evaluation error");
}

/* charset=... of a Content-Type, copied into out (empty when none). */
static void charset_of(const char *ct, char *out, size_t size)
{
    out[0] = '\0';
    const char *p = ct ? strcasestr(ct, "charset=") : NULL;
    if (!p)
        return;
    p += 8;
    if (*p == '"')
        p++;
    size_t n = 0;
    while (p[n] && (isalnum((unsigned char)p[n]) || strchr("-_.:", p[n])) && n + 1 < size) {
        out[n] = p[n];
        n++;
    }
    out[n] = '\0';
}

/* One HTML parser context per thread, reused across pages as lxml does: a
 * fresh context costs a dictionary and buffers per page. The context's
 * dictionary keeps element names and short strings of every page parsed, so
 * it is renewed after PARSER_REUSE_MAX pages or PARSER_DICT_MAX entries. */
#define PARSER_REUSE_MAX 500
#define PARSER_DICT_MAX 50000

struct parser_slot {
    htmlParserCtxtPtr ctxt;
    int uses;
};

static pthread_key_t parser_key;
static pthread_once_t parser_once = PTHREAD_ONCE_INIT;
static bool parser_key_ok;

static void parser_slot_free(void *p)
{
    struct parser_slot *slot = p;
    if (slot && slot->ctxt)
        htmlFreeParserCtxt(slot->ctxt);
    free(slot);
}

static void parser_key_make(void)
{
    parser_key_ok = pthread_key_create(&parser_key, parser_slot_free) == 0;
}

static htmlDocPtr parse_html(const char *body, int len, const char *url, const char *enc, int opts)
{
    struct parser_slot *slot = NULL;
    if (pthread_once(&parser_once, parser_key_make) == 0 && parser_key_ok) {
        slot = pthread_getspecific(parser_key);
        if (!slot) {
            slot = sh_xcalloc(1, sizeof(*slot));
            if (pthread_setspecific(parser_key, slot) != 0) {
                free(slot);
                slot = NULL;
            }
        }
    }
    if (!slot)
        return htmlReadMemory(body, len, url, enc, opts);
    if (slot->ctxt && (slot->uses >= PARSER_REUSE_MAX ||
                       (slot->ctxt->dict && xmlDictSize(slot->ctxt->dict) > PARSER_DICT_MAX))) {
        htmlFreeParserCtxt(slot->ctxt);
        slot->ctxt = NULL;
    }
    if (!slot->ctxt) {
        slot->ctxt = htmlNewParserCtxt();
        slot->uses = 0;
        if (!slot->ctxt)
            return htmlReadMemory(body, len, url, enc, opts);
    }
    slot->uses++;
    return htmlCtxtReadMemory(slot->ctxt, body, len, url, enc, opts);
}

/* The element child of parent named name (HTML names are lower case), or NULL. */
static xmlNodePtr child_element(xmlNodePtr parent, const char *name)
{
    for (xmlNodePtr n = parent ? parent->children : NULL; n; n = n->next)
        if (n->type == XML_ELEMENT_NODE && xmlStrcmp(n->name, BAD_CAST name) == 0)
            return n;
    return NULL;
}

/* What relative links of the page resolve against: the first <head><base href>
 * resolved against the page URL, as browsers do, else the page URL itself. */
static char *document_base(htmlDocPtr doc, const char *url)
{
    xmlNodePtr head = child_element(child_element((xmlNodePtr)doc, "html"), "head");
    for (xmlNodePtr n = head ? head->children : NULL; n; n = n->next) {
        xmlChar *href;
        char *base;
        if (n->type != XML_ELEMENT_NODE || xmlStrcmp(n->name, BAD_CAST "base") != 0)
            continue;
        href = xmlGetProp(n, BAD_CAST "href");
        if (!href)
            continue;
        base = url_resolve(url, (const char *)href, false);
        xmlFree(href);
        if (base)
            return base;
        break; /* an unusable base is ignored, as browsers do */
    }
    return url ? sh_xstrdup(url) : NULL;
}

int page_open(struct page *pg, enum sh_dsl_source_type type, const char *body, size_t len,
              const char *url, const char *content_type, struct sh_err *err)
{
    memset(pg, 0, sizeof(*pg));
    if (len > INT_MAX) {
        sh_err_set(err, SH_ELIMIT, "page of %zu bytes is too large to parse", len);
        return -1;
    }
    if (type == SH_DSL_SOURCE_JSON) {
        json_error_t je;
        pg->json = json_loadb(body ? body : "", len, JSON_DECODE_ANY, &je);
        if (!pg->json) {
            sh_err_set(err, SH_EPROTO, "JSON page does not parse: %s at line %d column %d", je.text,
                       je.line, je.column);
            return -1;
        }
    } else {
        char cs[64];
        int opts = HTML_PARSE_RECOVER | HTML_PARSE_NOERROR | HTML_PARSE_NOWARNING |
                   HTML_PARSE_NONET | HTML_PARSE_COMPACT;
        charset_of(content_type, cs, sizeof(cs));
        if (len > 0)
            pg->doc = parse_html(body, (int)len, url, cs[0] ? cs : NULL, opts);
        if (!pg->doc && len > 0 && cs[0])
            pg->doc = parse_html(body, (int)len, url, NULL, opts); /* unknown charset */
        if (!pg->doc)
            pg->doc = htmlNewDocNoDtD(NULL, NULL);
        if (!pg->doc) {
            sh_err_set(err, SH_EIO, "libxml2 could not allocate a document");
            return -1;
        }
    }
    pg->url = url ? sh_xstrdup(url) : NULL;
    pg->base = document_base(pg->doc, pg->url);
    sh_buf_init(&pg->text, 0);
    return 0;
}

void page_close(struct page *pg)
{
    url_cache_free(pg->base_cache);
    free(pg->scratch);
    sh_buf_done(&pg->text);
    if (pg->xctx)
        xmlXPathFreeContext(pg->xctx);
    if (pg->doc)
        xmlFreeDoc(pg->doc);
    json_decref(pg->json);
    free(pg->base);
    free(pg->url);
    memset(pg, 0, sizeof(*pg));
}

void *page_root(struct page *pg)
{
    return pg->json ? (void *)pg->json : (void *)pg->doc;
}

static void push(void ***v, size_t *n, size_t *cap, void *p)
{
    if (*n == *cap) {
        *cap = *cap ? *cap * 2 : 16;
        *v = sh_xrealloc(*v, *cap * sizeof(**v));
    }
    (*v)[(*n)++] = p;
}

struct collect {
    void ***v;
    size_t *n, *cap;
};

static void collect_node(void *data, xmlNodePtr node)
{
    struct collect *c = data;
    push(c->v, c->n, c->cap, node);
}

/* Evaluates sel at node; NULL (error counted) or an XPath object. The XPath
 * context is made on first use: pages whose selectors all take the native
 * path never need one. */
static xmlXPathObjectPtr xeval(struct page *pg, const struct sh_selector *sel, xmlNodePtr node,
                               struct counter *c)
{
    if (!pg->xctx) {
        pg->xctx = xmlXPathNewContext(pg->doc);
        if (!pg->xctx) {
            counter_error(c, sh_xstrdup("libxml2 could not allocate an XPath context"));
            return NULL;
        }
        pg->xctx->userData = pg;
        pg->xctx->error = (xmlStructuredErrorFunc)xpath_runtime_error;
    }
    pg->xctx->node = node;
    pg->xctx->contextSize = -1;
    pg->xctx->proximityPosition = -1;
    pg->xerr[0] = '\0';
    xmlXPathObjectPtr r = xmlXPathCompiledEval(sel->comp, pg->xctx);
    if (!r)
        counter_error(c, sh_xasprintf("%s", pg->xerr[0] ? pg->xerr : "XPath evaluation failed"));
    return r;
}

size_t page_nodes(struct page *pg, const struct sh_selector *sel, void *ctx, void ***ret_nodes,
                  struct counter *c)
{
    size_t n = 0, cap = 0;
    void **v = NULL;

    c->evals++;
    if (pg->json) {
        struct jmatches m = {0};
        if (sel)
            jpath_eval(sel->jpath, ctx, &m);
        else
            m.v = sh_xmalloc(sizeof(*m.v)), m.v[0] = ctx, m.n = 1;
        if (m.n == 1 && json_is_array(m.v[0])) {
            for (size_t i = 0; i < json_array_size(m.v[0]); i++)
                push(&v, &n, &cap, json_array_get(m.v[0], i));
        } else {
            for (size_t i = 0; i < m.n; i++)
                push(&v, &n, &cap, m.v[i]);
        }
        free(m.v);
    } else if (!sel->comp) {
        push(&v, &n, &cap, ctx);
    } else if (sel->simple) {
        struct collect col = {&v, &n, &cap};
        simple_match(sel->simple, ctx, collect_node, &col);
    } else {
        xmlXPathObjectPtr r = xeval(pg, sel, ctx, c);
        if (r && r->type == XPATH_NODESET && r->nodesetval)
            for (int i = 0; i < r->nodesetval->nodeNr; i++)
                push(&v, &n, &cap, r->nodesetval->nodeTab[i]);
        xmlXPathFreeObject(r);
    }
    c->matches += (long)n;
    c->filled += n > 0;
    *ret_nodes = v;
    return n;
}

/* Collapses runs of ASCII whitespace to one space and trims. */
static json_t *normalised(const char *s)
{
    size_t len = strlen(s);
    char *d = sh_xmalloc(len + 1);
    size_t w = 0;
    bool space = false;
    for (const char *p = s; *p; p++) {
        if (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r' || *p == '\f') {
            space = w > 0;
        } else {
            if (space)
                d[w++] = ' ';
            space = false;
            d[w++] = *p;
        }
    }
    json_t *r = json_stringn(d, w);
    free(d);
    return r ? r : json_string("");
}

static json_t *inner_html(xmlDocPtr doc, xmlNodePtr node)
{
    xmlOutputBufferPtr out = xmlAllocOutputBuffer(NULL);
    if (!out)
        return json_null();
    for (xmlNodePtr ch = node->children; ch; ch = ch->next)
        htmlNodeDumpFormatOutput(out, doc, ch, NULL, 0);
    json_t *r = NULL;
    if (xmlOutputBufferGetContent(out))
        r = json_stringn((const char *)xmlOutputBufferGetContent(out), xmlOutputBufferGetSize(out));
    (void)xmlOutputBufferClose(out);
    return r ? r : json_string("");
}

/* Appends s to b collapsing whitespace runs; *space / *any carry state. */
static void append_norm(struct sh_buf *b, const char *s, bool *space)
{
    const char *run = s;
    for (const char *p = s;; p++) {
        char c = *p;
        if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\0') {
            if (p > run) {
                if (*space && b->len > 0)
                    (void)sh_buf_append(b, " ", 1, NULL);
                (void)sh_buf_append(b, run, (size_t)(p - run), NULL);
                *space = false;
            }
            if (c == '\0')
                return;
            *space = true;
            run = p + 1;
        }
    }
}

/* Normalised text content of an element (like xmlNodeGetContent: text and
 * CDATA of all descendants, comments excluded) built in pg->text. */
static json_t *element_text(struct page *pg, xmlNodePtr el)
{
    bool space = false;
    sh_buf_reset(&pg->text);
    xmlNodePtr n = el->children;
    while (n && n != el) {
        if ((n->type == XML_TEXT_NODE || n->type == XML_CDATA_SECTION_NODE) && n->content)
            append_norm(&pg->text, (const char *)n->content, &space);
        if (n->children && n->type == XML_ELEMENT_NODE) {
            n = n->children;
            continue;
        }
        while (n != el && !n->next)
            n = n->parent;
        if (n == el)
            break;
        n = n->next;
    }
    json_t *r = json_stringn(pg->text.data ? pg->text.data : "", pg->text.len);
    return r ? r : json_string("");
}

/* Raw value of one node for the selector's target; NULL when it has none. */
static json_t *node_value(struct page *pg, const struct sh_selector *sel, xmlNodePtr node)
{
    json_t *r = NULL;
    xmlChar *s;
    if (sel->target == SH_SEL_ATTR) {
        if (node->type != XML_ELEMENT_NODE)
            return NULL;
        const char *v = simple_attr_value(node, sel->attr, &s);
        if (v)
            r = json_string(v);
        xmlFree(s);
        return v && !r ? json_string("") : r;
    }
    if (sel->target == SH_SEL_HTML_INNER && node->type == XML_ELEMENT_NODE)
        return inner_html(pg->doc, node);
    if (node->type == XML_ELEMENT_NODE)
        return element_text(pg, node);
    s = xmlNodeGetContent(node);
    if (!s)
        return json_string("");
    r = node->type == XML_ATTRIBUTE_NODE ? json_string((const char *)s)
                                         : normalised((const char *)s);
    xmlFree(s);
    return r;
}

static void scratch_node(void *data, xmlNodePtr node)
{
    struct page *pg = data;
    if (pg->nscratch == pg->capscratch) {
        pg->capscratch = pg->capscratch ? pg->capscratch * 2 : 64;
        pg->scratch = sh_xrealloc(pg->scratch, pg->capscratch * sizeof(*pg->scratch));
    }
    pg->scratch[pg->nscratch++] = node;
}

static bool has_value(const json_t *v)
{
    return v && !json_is_null(v);
}

json_t *page_values(struct page *pg, const struct sh_selector *sel, void *ctx, bool all,
                    struct counter *c)
{
    struct fctx f = {.base_url = pg->base, .base_cache = &pg->base_cache, .err = NULL};
    json_t *out = all ? json_array() : NULL;
    long matches = 0;

    c->evals++;
    if (pg->json) {
        struct jmatches m = {0};
        jpath_eval(sel->jpath, ctx, &m);
        matches = (long)m.n;
        for (size_t i = 0; i < m.n && (all || !out); i++) {
            json_t *v = selector_filter(sel, json_incref(m.v[i]), &f);
            if (!has_value(v))
                json_decref(v);
            else if (all)
                (void)json_array_append_new(out, v);
            else
                out = v;
        }
        free(m.v);
    } else {
        xmlXPathObjectPtr r = NULL;
        xmlNodePtr self[1] = {ctx};
        xmlNodePtr *nodes = self;
        int n = 1;
        if (sel->simple) {
            pg->nscratch = 0;
            simple_match(sel->simple, ctx, scratch_node, pg);
            nodes = pg->scratch;
            n = (int)pg->nscratch;
        } else if (sel->comp) {
            r = xeval(pg, sel, ctx, c);
            n = 0;
            if (r && r->type == XPATH_NODESET && r->nodesetval) {
                nodes = r->nodesetval->nodeTab;
                n = r->nodesetval->nodeNr;
            } else if (r && r->type != XPATH_NODESET) {
                /* string(), count(), boolean() expressions */
                json_t *v = r->type == XPATH_STRING ? normalised((const char *)r->stringval)
                            : r->type == XPATH_NUMBER
                                ? (r->floatval == (double)(json_int_t)r->floatval
                                       ? json_integer((json_int_t)r->floatval)
                                       : json_real(r->floatval))
                            : r->type == XPATH_BOOLEAN ? json_boolean(r->boolval)
                                                       : json_null();
                v = selector_filter(sel, v, &f);
                matches = 1;
                if (all && has_value(v))
                    (void)json_array_append_new(out, v);
                else if (!all)
                    out = v;
                else
                    json_decref(v);
            }
        }
        if (!r || r->type == XPATH_NODESET)
            matches = n;
        for (int i = 0; i < n && (all || !out); i++) {
            json_t *v = node_value(pg, sel, nodes[i]);
            if (!v)
                continue;
            v = selector_filter(sel, v, &f);
            if (!has_value(v))
                json_decref(v);
            else if (all)
                (void)json_array_append_new(out, v);
            else
                out = v;
        }
        xmlXPathFreeObject(r);
    }
    if (!out && sel->nfilters > 0) /* "default:" may turn nothing into a value */
        out = selector_filter(sel, json_null(), &f);
    if (!out)
        out = json_null();
    c->matches += matches;
    if (all ? json_array_size(out) > 0 : !json_is_null(out))
        c->filled++;
    if (f.err)
        counter_error(c, f.err);
    return out;
}

char *page_param_next(const char *url, const char *param, long start, long step)
{
    CURLU *h = curl_url();
    char *q = NULL, *out = NULL, *res = NULL;
    struct sh_buf b;
    long cur = start;
    size_t plen = strlen(param);

    sh_buf_init(&b, 0);
    if (!h || curl_url_set(h, CURLUPART_URL, url, 0) != CURLUE_OK)
        goto out;
    if (curl_url_get(h, CURLUPART_QUERY, &q, 0) != CURLUE_OK)
        q = NULL;
    for (const char *p = q; p && *p;) {
        const char *amp = strchr(p, '&');
        size_t n = amp ? (size_t)(amp - p) : strlen(p);
        if (n > plen && strncmp(p, param, plen) == 0 && p[plen] == '=')
            cur = strtol(p + plen + 1, NULL, 10);
        else
            (void)sh_buf_appendf(&b, NULL, "%s%.*s", b.len ? "&" : "", (int)n, p);
        p = amp ? amp + 1 : p + n;
    }
    (void)sh_buf_appendf(&b, NULL, "%s%s=%ld", b.len ? "&" : "", param, cur + step);
    if (curl_url_set(h, CURLUPART_QUERY, b.data, 0) != CURLUE_OK ||
        curl_url_get(h, CURLUPART_URL, &out, 0) != CURLUE_OK)
        goto out;
    res = sh_xstrdup(out);
out:
    curl_free(q);
    curl_free(out);
    curl_url_cleanup(h);
    sh_buf_done(&b);
    return res;
}
