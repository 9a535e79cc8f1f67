/* Query engine: parses the public query string and selects items from a
 * snapshot (filters, sort, paging). Rendering lives in render.c.
 *
 * Everything here is a pure function of its arguments: HTTP worker threads
 * call it concurrently on shared, read-only snapshots (jansson values are only
 * read; jansson 2.14's refcounts are atomic and its encoder keeps no state in
 * the values). Results are malloc'd and owned by the caller. */
#include "endpoint.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "shared/xalloc.h"

#define MAX_PATH_LEN 256
#define MAX_FANOUT 256

void ep_query_init(struct ep_query *q)
{
    memset(q, 0, sizeof(*q));
    q->limit = -1;
    q->format = EP_FMT_JSON;
}

void ep_query_done(struct ep_query *q)
{
    size_t i;
    if (!q)
        return;
    for (i = 0; i < q->nfields; i++)
        free(q->fields[i]);
    free(q->fields);
    for (i = 0; i < q->nfilters; i++) {
        free(q->filters[i].path);
        free(q->filters[i].value);
    }
    free(q->filters);
    free(q->sort);
    ep_query_init(q);
}

/* A field path: segments of [A-Za-z0-9_:-] or non-ASCII (UTF-8) bytes,
 * separated by single dots. Anything else (spaces, brackets, quotes, '$', ...)
 * is rejected so a typo or an injection attempt gets a clear 400. */
static int valid_path(const char *p, size_t len)
{
    size_t i;
    if (len == 0 || len > MAX_PATH_LEN || p[0] == '.' || p[len - 1] == '.')
        return 0;
    for (i = 0; i < len; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c == '.') {
            if (p[i + 1] == '.')
                return 0;
            continue;
        }
        if (!(isalnum(c) || c == '_' || c == '-' || c == ':' || c >= 0x80))
            return 0;
    }
    return 1;
}

static int parse_long(const char *v, long min, long max, long *ret)
{
    char *end;
    long x;
    if (!v || !*v || !(isdigit((unsigned char)*v) || *v == '-'))
        return -1;
    errno = 0;
    x = strtol(v, &end, 10);
    if (errno || *end || x < min || x > max)
        return -1;
    *ret = x;
    return 0;
}

static int add_fields(struct ep_query *q, const char *v, struct sh_err *err)
{
    const char *p = v;
    if (!*v) {
        sh_err_set(err, SH_ECONFIG, "fields: give a comma-separated list of field names");
        return -1;
    }
    for (;;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        if (!valid_path(p, len)) {
            sh_err_set(err, SH_ECONFIG,
                       "fields: '%.*s' is not a field name (letters, digits, _ - : and dots "
                       "between nested names)",
                       (int)(len > 64 ? 64 : len), p);
            return -1;
        }
        if (q->nfields == EP_MAX_FIELDS) {
            sh_err_set(err, SH_ECONFIG, "fields: at most %d fields", EP_MAX_FIELDS);
            return -1;
        }
        q->fields = sh_xrealloc(q->fields, (q->nfields + 1) * sizeof(*q->fields));
        q->fields[q->nfields++] = sh_xstrndup(p, len);
        if (!comma)
            return 0;
        p = comma + 1;
    }
}

int ep_query_add(struct ep_query *q, const char *name, const char *value, long max_limit,
                 struct sh_err *err)
{
    if (!name || !*name) {
        sh_err_set(err, SH_ECONFIG, "empty query parameter name");
        return -1;
    }
    if (value && strlen(value) > EP_MAX_PARAM_LEN) {
        sh_err_set(err, SH_ECONFIG, "%.64s: value longer than %d bytes", name, EP_MAX_PARAM_LEN);
        return -1;
    }
    if (!strcmp(name, "limit")) {
        if (q->limit_set) {
            sh_err_set(err, SH_ECONFIG, "limit given more than once");
            return -1;
        }
        if (parse_long(value, 0, max_limit, &q->limit) < 0) {
            sh_err_set(err, SH_ECONFIG, "limit must be an integer from 0 to %ld, got '%.64s'",
                       max_limit, value ? value : "");
            return -1;
        }
        q->limit_set = 1;
        return 0;
    }
    if (!strcmp(name, "offset")) {
        if (q->offset_set) {
            sh_err_set(err, SH_ECONFIG, "offset given more than once");
            return -1;
        }
        if (parse_long(value, 0, 1000000000L, &q->offset) < 0) {
            sh_err_set(err, SH_ECONFIG, "offset must be a non-negative integer, got '%.64s'",
                       value ? value : "");
            return -1;
        }
        q->offset_set = 1;
        return 0;
    }
    if (!strcmp(name, "format")) {
        if (q->format_set) {
            sh_err_set(err, SH_ECONFIG, "format given more than once");
            return -1;
        }
        if (value && !strcasecmp(value, "json"))
            q->format = EP_FMT_JSON;
        else if (value && !strcasecmp(value, "ndjson"))
            q->format = EP_FMT_NDJSON;
        else if (value && !strcasecmp(value, "csv"))
            q->format = EP_FMT_CSV;
        else {
            sh_err_set(err, SH_ECONFIG, "format must be json, ndjson or csv, got '%.64s'",
                       value ? value : "");
            return -1;
        }
        q->format_set = 1;
        return 0;
    }
    if (!strcmp(name, "fields")) {
        if (q->fields) {
            sh_err_set(err, SH_ECONFIG, "fields given more than once");
            return -1;
        }
        return add_fields(q, value ? value : "", err);
    }
    if (!strcmp(name, "sort")) {
        const char *p = value ? value : "";
        int desc = 0;
        if (q->sort) {
            sh_err_set(err, SH_ECONFIG, "sort given more than once (one sort field)");
            return -1;
        }
        if (*p == '-' || *p == '+') {
            desc = *p == '-';
            p++;
        }
        if (!valid_path(p, strlen(p))) {
            sh_err_set(err, SH_ECONFIG,
                       "sort must be a field name, optionally prefixed with '-' for descending; "
                       "got '%.64s'",
                       value ? value : "");
            return -1;
        }
        q->sort = sh_xstrdup(p);
        q->sort_desc = desc;
        return 0;
    }
    /* Anything else filters on a field. */
    if (!valid_path(name, strlen(name))) {
        sh_err_set(err, SH_ECONFIG,
                   "unknown parameter '%.64s': parameters are limit, offset, fields, sort, "
                   "format, or a field name (letters, digits, _ - : and dots) to filter on",
                   name);
        return -1;
    }
    if (!value) {
        sh_err_set(err, SH_ECONFIG, "filter '%.64s' needs a value (%.64s=...)", name, name);
        return -1;
    }
    if (q->nfilters == EP_MAX_FILTERS) {
        sh_err_set(err, SH_ECONFIG, "at most %d filters", EP_MAX_FILTERS);
        return -1;
    }
    q->filters = sh_xrealloc(q->filters, (q->nfilters + 1) * sizeof(*q->filters));
    q->filters[q->nfilters].path = sh_xstrdup(name);
    q->filters[q->nfilters].value = sh_xstrdup(value);
    q->nfilters++;
    return 0;
}

int ep_query_is_plain(const struct ep_query *q, const struct ep_snapshot *s)
{
    return !q->nfilters && !q->sort && !q->fields && q->offset == 0 &&
           (q->limit < 0 || (size_t)q->limit >= s->prebuilt_n);
}

/* ---- paths ------------------------------------------------------------------ */

static int is_index(const char *seg, size_t len, size_t *ret)
{
    size_t i, x = 0;
    if (len == 0 || len > 9)
        return 0;
    for (i = 0; i < len; i++) {
        if (!isdigit((unsigned char)seg[i]))
            return 0;
        x = x * 10 + (size_t)(seg[i] - '0');
    }
    *ret = x;
    return 1;
}

static const json_t *get_segment(const json_t *v, const char *seg, size_t len)
{
    size_t idx;
    if (json_is_object(v))
        return json_object_getn(v, seg, len);
    if (json_is_array(v) && is_index(seg, len, &idx))
        return json_array_get(v, idx);
    return NULL;
}

/* Fan-out walk: an array met on the way whose next segment is not an index
 * applies the rest of the path to each element; an array at the end yields
 * its elements (so tags=x matches an item whose tags contain "x"). */
static void walk(const json_t *v, const char *path, const json_t **out, size_t max, size_t *n)
{
    const char *dot;
    size_t len, i, idx;

    if (*n >= max || !v)
        return;
    if (!*path) {
        if (json_is_array(v)) {
            for (i = 0; i < json_array_size(v) && *n < max; i++)
                out[(*n)++] = json_array_get(v, i);
        } else {
            out[(*n)++] = v;
        }
        return;
    }
    dot = strchr(path, '.');
    len = dot ? (size_t)(dot - path) : strlen(path);
    if (json_is_array(v) && !is_index(path, len, &idx)) {
        for (i = 0; i < json_array_size(v) && *n < max; i++)
            walk(json_array_get(v, i), path, out, max, n);
        return;
    }
    walk(get_segment(v, path, len), dot ? dot + 1 : "", out, max, n);
}

size_t ep_path_values(const json_t *obj, const char *path, const json_t **out, size_t max)
{
    size_t n = 0;
    walk(obj, path, out, max, &n);
    return n;
}

const json_t *ep_path_get(const json_t *v, const char *path)
{
    while (v && *path) {
        const char *dot = strchr(path, '.');
        size_t len = dot ? (size_t)(dot - path) : strlen(path);
        v = get_segment(v, path, len);
        path = dot ? dot + 1 : "";
    }
    return v;
}

char *ep_scalar_string(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_STRING:
        return sh_xstrndup(json_string_value(v), json_string_length(v));
    case JSON_INTEGER:
        return sh_xasprintf("%" JSON_INTEGER_FORMAT, json_integer_value(v));
    case JSON_REAL:
    case JSON_TRUE:
    case JSON_FALSE:
    case JSON_NULL: {
        /* jansson's own encoding, so 2.5 == "2.5" and 1e300 == "1e+300" */
        char *s = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
        return s ? s : sh_xstrdup("");
    }
    default:
        return NULL;
    }
}

static int value_equals(const json_t *v, const char *want)
{
    if (json_is_string(v))
        return strlen(want) == json_string_length(v) && !strcmp(json_string_value(v), want);
    {
        char *s = ep_scalar_string(v);
        int eq = s && !strcmp(s, want);
        free(s);
        return eq;
    }
}

static int item_matches(const struct ep_query *q, const struct ep_item *it)
{
    const json_t *vals[MAX_FANOUT];
    size_t f, i, n;

    for (f = 0; f < q->nfilters; f++) {
        int hit = 0;
        n = ep_path_values(it->obj, q->filters[f].path, vals, MAX_FANOUT);
        for (i = 0; i < n && !hit; i++)
            hit = value_equals(vals[i], q->filters[f].value);
        if (!hit)
            return 0;
    }
    return 1;
}

/* ---- sort ---------------------------------------------------------------------- */

struct sort_ent {
    size_t pos;
    const json_t *v; /* NULL = missing */
};

static int type_rank(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_NULL:
        return 0;
    case JSON_FALSE:
    case JSON_TRUE:
        return 1;
    case JSON_INTEGER:
    case JSON_REAL:
        return 2;
    case JSON_STRING:
        return 3;
    default:
        return 4;
    }
}

static int value_cmp(const json_t *a, const json_t *b)
{
    int ra = type_rank(a), rb = type_rank(b);
    if (ra != rb)
        return ra < rb ? -1 : 1;
    switch (ra) {
    case 1:
        return (int)json_is_true(a) - (int)json_is_true(b);
    case 2:
        if (json_is_integer(a) && json_is_integer(b)) {
            json_int_t x = json_integer_value(a), y = json_integer_value(b);
            return x < y ? -1 : x > y;
        } else {
            double x = json_number_value(a), y = json_number_value(b);
            return x < y ? -1 : x > y;
        }
    case 3:
        return strcmp(json_string_value(a), json_string_value(b));
    default:
        return 0;
    }
}

static int sort_cmp(const void *pa, const void *pb, void *arg)
{
    const struct sort_ent *a = pa, *b = pb;
    int desc = *(const int *)arg, c;

    /* Missing values go last in both directions; ties keep the default order. */
    if (!a->v || !b->v) {
        if (a->v != b->v)
            return a->v ? -1 : 1;
    } else {
        c = value_cmp(a->v, b->v);
        if (c)
            return desc ? -c : c;
    }
    return a->pos < b->pos ? -1 : a->pos > b->pos;
}

void ep_query_select(const struct ep_query *q, const struct ep_snapshot *s, long max_limit,
                     size_t **ret_sel, size_t *ret_n, size_t *ret_total)
{
    size_t *match = sh_xmalloc((s->n + 1) * sizeof(*match));
    size_t nmatch = 0, i, off, lim, n;

    for (i = 0; i < s->n; i++)
        if (!q->nfilters || item_matches(q, s->items[i]))
            match[nmatch++] = i;

    if (q->sort && nmatch > 1) {
        struct sort_ent *ents = sh_xmalloc(nmatch * sizeof(*ents));
        int desc = q->sort_desc;
        for (i = 0; i < nmatch; i++) {
            ents[i].pos = match[i];
            ents[i].v = ep_path_get(s->items[match[i]]->obj, q->sort);
        }
        qsort_r(ents, nmatch, sizeof(*ents), sort_cmp, &desc);
        for (i = 0; i < nmatch; i++)
            match[i] = ents[i].pos;
        free(ents);
    }

    off = (size_t)q->offset < nmatch ? (size_t)q->offset : nmatch;
    lim = q->limit >= 0 ? (size_t)q->limit : (size_t)max_limit;
    n = nmatch - off < lim ? nmatch - off : lim;
    if (off)
        memmove(match, match + off, n * sizeof(*match));
    *ret_sel = match;
    *ret_n = n;
    *ret_total = nmatch;
}
