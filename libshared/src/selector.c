/* Selector expressions: "<selector>[@attr|@html|@text] | filter | filter:arg".
 *
 * Splitting rule: a '|' outside quotes, brackets and parentheses separates
 * filters only when a known filter name follows it (so XPath unions
 * "xpath://a | //b" and regex alternations "regex:(a|b)" stay intact).
 * The CSS part is compiled by css.c, "xpath:" expressions and CSS output
 * by libxml2 (xmlXPathCtxtCompile with a private error handler, so nothing
 * is printed and no global state is touched). Thread-safe; a compiled
 * selector is immutable. */
#include "shared/selector.h"

#include <ctype.h>
#include <curl/curl.h>
#include <stdlib.h>
#include <string.h>

#include "extract_int.h"
#include "shared/css.h"
#include "shared/xalloc.h"

#define MAX_FILTERS 16

static bool is_filter_name(const char *s, size_t n)
{
    const char *const *names = sh_selector_filter_names();
    for (size_t i = 0; names[i]; i++)
        if (strlen(names[i]) == n && strncmp(names[i], s, n) == 0)
            return true;
    return false;
}

/* Does a filter start at s (just after a '|')? */
static bool filter_follows(const char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    size_t n = 0;
    while (isalpha((unsigned char)s[n]) || s[n] == '-' || s[n] == '_')
        n++;
    if (n == 0 || !is_filter_name(s, n))
        return false;
    const char *q = s + n;
    while (*q == ' ' || *q == '\t')
        q++;
    return *q == '\0' || *q == '|' || s[n] == ':';
}

/* Splits expr into segments at filter pipes; returns the count. A CSS
 * selector or JSON path has no use for a top-level '|', so there any pipe
 * ends the selector (an unknown filter name then gets its own error). */
static size_t split_pipes(const char *expr, char **seg, size_t max)
{
    bool xpath = strncmp(expr, "xpath:", 6) == 0;
    size_t n = 0, start = 0, depth = 0;
    char quote = 0;
    bool in_class = false, first = true;

    for (size_t i = 0;; i++) {
        char c = expr[i];
        if (c == '\0' || (c == '|' && !quote && depth == 0 && !in_class &&
                          ((first && !xpath) || filter_follows(expr + i + 1)))) {
            if (n < max)
                seg[n] = sh_xstrndup(expr + start, i - start);
            n++;
            if (c == '\0')
                break;
            start = i + 1;
            first = false;
            continue;
        }
        if (quote) {
            if (c == '\\' && expr[i + 1])
                i++;
            else if (c == quote)
                quote = 0;
        } else if (c == '\\' && expr[i + 1]) {
            i++;
        } else if (in_class) {
            in_class = c != ']';
        } else if (first && (c == '"' || c == '\'')) {
            quote = c;
        } else if (c == '[') {
            if (first)
                depth++;
            else
                in_class = true;
        } else if (c == '(') {
            depth++;
        } else if ((c == ']' || c == ')') && depth > 0) {
            depth--;
        }
    }
    return n;
}

static char *trim_dup(const char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    size_t n = strlen(s);
    while (n > 0 && isspace((unsigned char)s[n - 1]))
        n--;
    return sh_xstrndup(s, n);
}

static bool is_attr_name(const char *s)
{
    if (!(isalpha((unsigned char)*s) || *s == '_' || *s == ':'))
        return false;
    for (s++; *s; s++)
        if (!(isalnum((unsigned char)*s) || strchr("_:.-", *s)))
            return false;
    return true;
}

/* Finds the "@target" suffix of an HTML selector part; returns its offset
 * (the '@') or -1. For XPath, an '@' right after '/', ':', '(', '[', ',',
 * '|', '@' or at the start belongs to the expression itself. */
static long find_target(const char *part, bool xpath)
{
    long at = -1;
    int depth = 0;
    char quote = 0;
    for (long i = 0; part[i]; i++) {
        char c = part[i];
        if (quote) {
            if (c == quote)
                quote = 0;
        } else if (c == '"' || c == '\'') {
            quote = c;
        } else if (c == '[' || c == '(') {
            depth++;
        } else if ((c == ']' || c == ')') && depth > 0) {
            depth--;
        } else if (c == '@' && depth == 0) {
            at = i;
        }
    }
    if (at < 0 || !is_attr_name(part + at + 1))
        return -1;
    if (xpath) {
        long j = at - 1;
        while (j >= 0 && part[j] == ' ')
            j--;
        if (j < 0 || strchr("/:([,|@", part[j]) || j < at - 1)
            return -1;
    }
    return at;
}

/* Compiles an XPath expression; errors land in err without printing. */
struct xerr {
    char msg[256];
    bool set;
};

static void xpath_error(void *data, const xmlError *e)
{
    struct xerr *x = data;
    if (x->set)
        return;
    x->set = true;
    const char *m = e && e->message ? e->message : "syntax error";
    size_t n = strlen(m);
    if (n > 0 && m[n - 1] == '\n')
        n--;
    if (e && e->str1 && e->int1 >= 0)
        (void)snprintf(x->msg, sizeof(x->msg), "%.*s at position %d", (int)n, m, e->int1 + 1);
    else
        (void)snprintf(x->msg, sizeof(x->msg), "%.*s", (int)n, m);
}

static xmlXPathCompExprPtr compile_xpath(const char *xp, struct sh_err *err)
{
    struct xerr xe = {.set = false};
    xmlXPathContextPtr ctx = xmlXPathNewContext(NULL);
    if (!ctx) {
        sh_err_set(err, SH_ECONFIG, "cannot create an XPath context");
        return NULL;
    }
    ctx->userData = &xe;
    ctx->error = (xmlStructuredErrorFunc)xpath_error;
    xmlXPathCompExprPtr comp = xmlXPathCtxtCompile(ctx, (const xmlChar *)xp);
    xmlXPathFreeContext(ctx);
    if (!comp)
        sh_err_set(err, SH_ECONFIG, "invalid XPath '%s': %s", xp, xe.set ? xe.msg : "syntax error");
    return comp;
}

static int compile_html(struct sh_selector *s, char *raw, const char *default_attr,
                        struct sh_err *err)
{
    char *part = trim_dup(raw);
    bool xpath = strncmp(part, "xpath:", 6) == 0;
    long at = find_target(part, xpath);
    if (at >= 0) {
        const char *t = part + at + 1;
        if (strcmp(t, "html") == 0) {
            s->target = SH_SEL_HTML_INNER;
        } else if (strcmp(t, "text") == 0) {
            s->target = SH_SEL_TEXT;
        } else {
            s->target = SH_SEL_ATTR;
            s->attr = sh_xstrdup(t);
            for (char *q = s->attr; *q; q++)
                *q = (char)tolower((unsigned char)*q);
        }
        part[at] = '\0';
    } else if (default_attr) {
        s->target = SH_SEL_ATTR;
        s->attr = sh_xstrdup(default_attr);
    }
    char *body = trim_dup(xpath ? part + 6 : part);
    int rc = 0;
    if (*body == '\0') {
        if (xpath) {
            sh_err_set(err, SH_ECONFIG, "empty XPath expression in '%s'", s->source);
            rc = -1;
        }
    } else if (xpath) {
        s->xpath = sh_xstrdup(body);
    } else {
        size_t pos;
        s->xpath = sh_css_to_xpath_fast(body, &pos, err);
        rc = s->xpath ? 0 : -1;
    }
    if (rc == 0 && s->xpath) {
        s->comp = compile_xpath(s->xpath, err);
        rc = s->comp ? 0 : -1;
    }
    if (rc == 0 && s->xpath && !xpath)
        s->simple = simple_parse(body);
    free(body);
    free(part);
    return rc;
}

struct sh_selector *selector_new_link(const char *expr, enum sh_sel_lang lang,
                                      const char *default_attr, struct sh_err *err)
{
    char *seg[MAX_FILTERS + 1];
    struct sh_selector *s = sh_xcalloc(1, sizeof(*s));
    s->source = sh_xstrdup(expr);
    s->lang = lang;
    size_t n = split_pipes(expr, seg, MAX_FILTERS + 1);
    int rc = 0;
    if (n > MAX_FILTERS + 1) {
        sh_err_set(err, SH_ECONFIG, "more than %d filters in '%s'", MAX_FILTERS, expr);
        rc = -1;
        n = MAX_FILTERS + 1;
    }
    if (rc == 0) {
        if (lang == SH_SEL_HTML) {
            rc = compile_html(s, seg[0], default_attr, err);
        } else {
            char *body = trim_dup(seg[0]);
            s->jpath = jpath_parse(body, err);
            rc = s->jpath ? 0 : -1;
            free(body);
        }
    }
    s->filters = sh_xcalloc(n, sizeof(*s->filters));
    for (size_t i = 1; rc == 0 && i < n; i++) {
        char *f = trim_dup(seg[i]);
        rc = filter_compile(&s->filters[s->nfilters], f, err);
        if (rc == 0)
            s->nfilters++;
        else
            filter_done(&s->filters[s->nfilters]);
        free(f);
    }
    for (size_t i = 0; i < n; i++)
        free(seg[i]);
    if (rc < 0) {
        sh_selector_free(s);
        return NULL;
    }
    return s;
}

struct sh_selector *sh_selector_new(const char *expr, enum sh_sel_lang lang, struct sh_err *err)
{
    return selector_new_link(expr, lang, NULL, err);
}

void sh_selector_free(struct sh_selector *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->nfilters; i++)
        filter_done(&s->filters[i]);
    free(s->filters);
    if (s->comp)
        xmlXPathFreeCompExpr(s->comp);
    simple_free(s->simple);
    jpath_free(s->jpath);
    free(s->xpath);
    free(s->attr);
    free(s->source);
    free(s);
}

const char *sh_selector_source(const struct sh_selector *s)
{
    return s->source;
}

const char *sh_selector_xpath(const struct sh_selector *s)
{
    return s->xpath;
}

enum sh_sel_target sh_selector_target(const struct sh_selector *s)
{
    return s->target;
}

const char *sh_selector_attr(const struct sh_selector *s)
{
    return s->attr;
}

size_t sh_selector_filter_count(const struct sh_selector *s)
{
    return s->nfilters;
}

json_t *selector_filter(const struct sh_selector *s, json_t *v, struct fctx *c)
{
    for (size_t i = 0; i < s->nfilters; i++)
        v = filter_apply(&s->filters[i], v, c);
    return v;
}

int sh_selector_has_filter(const struct sh_selector *s, const char *name)
{
    for (size_t i = 0; i < s->nfilters; i++)
        if (strcmp(filter_name(&s->filters[i]), name) == 0)
            return 1;
    return 0;
}

char *url_resolve(const char *base, const char *ref, bool keep_fragment)
{
    CURLU *h;
    char *out = NULL, *res = NULL;

    while (isspace((unsigned char)*ref))
        ref++;
    if (*ref == '\0')
        return base ? url_resolve(base, base, keep_fragment) : NULL;
    h = curl_url();
    if (!h)
        return NULL;
    if (base && curl_url_set(h, CURLUPART_URL, base, CURLU_NON_SUPPORT_SCHEME) != CURLUE_OK)
        goto out;
    if (curl_url_set(h, CURLUPART_URL, ref, CURLU_NON_SUPPORT_SCHEME) != CURLUE_OK)
        goto out;
    if (!keep_fragment && curl_url_set(h, CURLUPART_FRAGMENT, NULL, 0) != CURLUE_OK)
        goto out;
    if (curl_url_get(h, CURLUPART_URL, &out, 0) != CURLUE_OK)
        goto out;
    res = sh_xstrdup(out);
    curl_free(out);
out:
    curl_url_cleanup(h);
    return res;
}

/* Per-page base URL cache of url_resolve_cached: the parsed base, plus its
 * normalised origin ("http://h:p") and directory ("http://h:p/a/b/") for
 * the fast path. */
struct url_cache {
    CURLU *h;
    char *origin, *dir;
};

/* A relative reference simple enough to resolve by concatenation with the
 * same result as RFC 3986 (and curl): unreserved/sub-delim characters only
 * (no ':', '%', '#', '\\', blanks, non-ASCII), no "//", no "." or ".."
 * segments, not starting with '?'. */
static bool simple_ref(const char *r)
{
    if (*r == '?' || (r[0] == '/' && r[1] == '/'))
        return false;
    const char *seg = r;
    bool in_query = false;
    for (const char *p = r;; p++) {
        char c = *p;
        if (!in_query && (c == '/' || c == '?' || c == '\0')) {
            size_t n = (size_t)(p - seg);
            if ((n == 1 && seg[0] == '.') || (n == 2 && seg[0] == '.' && seg[1] == '.'))
                return false;
            if (c == '/' && p > r && p[-1] == '/')
                return false;
            seg = p + 1;
        }
        if (c == '\0')
            return true;
        if (c == '?')
            in_query = true;
        else if (!(isalnum((unsigned char)c) || strchr("-._~/!$&'()*+,;=@", c)))
            return false;
    }
}

static struct url_cache *cache_make(const char *base)
{
    struct url_cache *c = sh_xcalloc(1, sizeof(*c));
    char *full = NULL;
    c->h = curl_url();
    if (!c->h || curl_url_set(c->h, CURLUPART_URL, base, CURLU_NON_SUPPORT_SCHEME) != CURLUE_OK) {
        url_cache_free(c);
        return NULL;
    }
    CURLU *d = curl_url_dup(c->h);
    if (d && curl_url_set(d, CURLUPART_QUERY, NULL, 0) == CURLUE_OK &&
        curl_url_set(d, CURLUPART_FRAGMENT, NULL, 0) == CURLUE_OK &&
        curl_url_get(d, CURLUPART_URL, &full, 0) == CURLUE_OK) {
        const char *auth = strstr(full, "://");
        const char *path = auth ? strchr(auth + 3, '/') : NULL;
        const char *last = strrchr(full, '/');
        if (path && last >= path && !strpbrk(full, "?#")) {
            c->origin = sh_xstrndup(full, (size_t)(path - full));
            c->dir = sh_xstrndup(full, (size_t)(last - full) + 1);
        }
    }
    curl_free(full);
    curl_url_cleanup(d);
    return c;
}

char *url_resolve_cached(void **cache, const char *base, const char *ref, bool keep_fragment)
{
    CURLU *h;
    char *out = NULL, *res = NULL;

    if (!cache || !base)
        return url_resolve(base, ref, keep_fragment);
    while (isspace((unsigned char)*ref))
        ref++;
    if (*ref == '\0')
        return url_resolve(base, base, keep_fragment);
    if (!*cache && !(*cache = cache_make(base)))
        return NULL;
    struct url_cache *c = *cache;
    if (c->dir && simple_ref(ref))
        return sh_xasprintf("%s%s", *ref == '/' ? c->origin : c->dir, ref);
    h = curl_url_dup(c->h);
    if (!h)
        return NULL;
    if (curl_url_set(h, CURLUPART_URL, ref, CURLU_NON_SUPPORT_SCHEME) == CURLUE_OK &&
        (keep_fragment || curl_url_set(h, CURLUPART_FRAGMENT, NULL, 0) == CURLUE_OK) &&
        curl_url_get(h, CURLUPART_URL, &out, 0) == CURLUE_OK) {
        res = sh_xstrdup(out);
        curl_free(out);
    }
    curl_url_cleanup(h);
    return res;
}

void url_cache_free(void *cache)
{
    struct url_cache *c = cache;
    if (!c)
        return;
    curl_url_cleanup(c->h);
    free(c->origin);
    free(c->dir);
    free(c);
}
