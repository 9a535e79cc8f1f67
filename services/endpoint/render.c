/* Rendering of selected items (JSON array, NDJSON, CSV; optional
 * projection) and the HTTP negotiation helpers (gzip, Accept-Encoding,
 * If-None-Match).
 *
 * Pure functions of their arguments, called concurrently by HTTP worker
 * threads on shared read-only snapshots; results are malloc'd and owned by
 * the caller. */
#include "endpoint.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "shared/buf.h"
#include "shared/xalloc.h"

/* ---- rendering ---------------------------------------------------------------------- */

/* Sets value at a dotted path inside out, creating objects on the way. */
static void set_path(json_t *out, const char *path, const json_t *value)
{
    const char *dot;
    while ((dot = strchr(path, '.')) != NULL) {
        json_t *next = json_object_getn(out, path, (size_t)(dot - path));
        if (!json_is_object(next)) {
            next = json_object();
            (void)json_object_setn_new(out, path, (size_t)(dot - path), next);
        }
        out = next;
        path = dot + 1;
    }
    (void)json_object_set(out, path, (json_t *)value);
}

static json_t *project(const struct ep_query *q, const struct ep_item *it)
{
    json_t *out = json_object();
    size_t i;
    for (i = 0; i < q->nfields; i++) {
        const json_t *v = ep_path_get(it->obj, q->fields[i]);
        if (v)
            set_path(out, q->fields[i], v);
    }
    return out;
}

static void append_item_json(struct sh_buf *b, const struct ep_query *q, const struct ep_item *it)
{
    if (!q->fields) {
        (void)sh_buf_append(b, it->json, it->json_len, NULL);
    } else {
        json_t *o = project(q, it);
        char *s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
        (void)sh_buf_appends(b, s ? s : "{}", NULL);
        free(s);
        json_decref(o);
    }
}

static void csv_cell(struct sh_buf *b, const char *s, size_t len)
{
    size_t i;
    if (!memchr(s, ',', len) && !memchr(s, '"', len) && !memchr(s, '\n', len) &&
        !memchr(s, '\r', len)) {
        (void)sh_buf_append(b, s, len, NULL);
        return;
    }
    (void)sh_buf_append(b, "\"", 1, NULL);
    for (i = 0; i < len; i++) {
        if (s[i] == '"')
            (void)sh_buf_append(b, "\"\"", 2, NULL);
        else
            (void)sh_buf_append(b, &s[i], 1, NULL);
    }
    (void)sh_buf_append(b, "\"", 1, NULL);
}

static void csv_value(struct sh_buf *b, const json_t *v)
{
    char *s;
    if (!v || json_is_null(v))
        return;
    if (json_is_string(v)) {
        csv_cell(b, json_string_value(v), json_string_length(v));
        return;
    }
    s = json_is_object(v) || json_is_array(v) ? json_dumps(v, JSON_COMPACT | JSON_PRESERVE_ORDER)
                                              : ep_scalar_string(v);
    if (s)
        csv_cell(b, s, strlen(s));
    free(s);
}

/* RFC 4180: header row, CRLF line ends, quoting only where needed. Without a
 * projection the columns are the union of the items' top-level fields in
 * first-seen order; nested values are written as compact JSON text. */
static void render_csv(struct sh_buf *b, const struct ep_query *q,
                       const struct ep_item *const *items, size_t n)
{
    const char **cols;
    size_t ncols = 0, i, c;
    json_t *seen = NULL;

    if (q->fields) {
        cols = sh_xmalloc(q->nfields * sizeof(*cols));
        for (i = 0; i < q->nfields; i++)
            cols[ncols++] = q->fields[i];
    } else {
        size_t cap = 16;
        cols = sh_xmalloc(cap * sizeof(*cols));
        seen = json_object();
        for (i = 0; i < n; i++) {
            const char *k;
            json_t *v;
            json_object_foreach(items[i]->obj, k, v)
            {
                (void)v;
                if (json_object_get(seen, k))
                    continue;
                (void)json_object_set_new(seen, k, json_true());
                if (ncols == cap) {
                    cap *= 2;
                    cols = sh_xrealloc(cols, cap * sizeof(*cols));
                }
                cols[ncols++] = k; /* borrowed from the item, alive for this call */
            }
        }
    }
    if (ncols) {
        for (c = 0; c < ncols; c++) {
            if (c)
                (void)sh_buf_append(b, ",", 1, NULL);
            csv_cell(b, cols[c], strlen(cols[c]));
        }
        (void)sh_buf_append(b, "\r\n", 2, NULL);
        for (i = 0; i < n; i++) {
            for (c = 0; c < ncols; c++) {
                if (c)
                    (void)sh_buf_append(b, ",", 1, NULL);
                csv_value(b, q->fields ? ep_path_get(items[i]->obj, cols[c])
                                       : json_object_get(items[i]->obj, cols[c]));
            }
            (void)sh_buf_append(b, "\r\n", 2, NULL);
        }
    }
    json_decref(seen);
    free(cols);
}

char *ep_render(const struct ep_query *q, int fmt, const struct ep_item *const *items, size_t n,
                size_t *ret_len)
{
    struct sh_buf b;
    size_t i, guess = 2;

    for (i = 0; i < n; i++)
        guess += items[i]->json_len + 1;
    sh_buf_init(&b, 0);
    (void)sh_buf_append(&b, "", 0, NULL); /* allocate, even when empty */
    if (guess > 256) {
        b.data = sh_xrealloc(b.data, guess + 1);
        b.cap = guess + 1;
    }
    switch (fmt) {
    case EP_FMT_NDJSON:
        for (i = 0; i < n; i++) {
            append_item_json(&b, q, items[i]);
            (void)sh_buf_append(&b, "\n", 1, NULL);
        }
        break;
    case EP_FMT_CSV:
        render_csv(&b, q, items, n);
        break;
    default:
        (void)sh_buf_append(&b, "[", 1, NULL);
        for (i = 0; i < n; i++) {
            if (i)
                (void)sh_buf_append(&b, ",", 1, NULL);
            append_item_json(&b, q, items[i]);
        }
        (void)sh_buf_append(&b, "]\n", 2, NULL);
        break;
    }
    return sh_buf_steal(&b, ret_len);
}

char *ep_render_one(const struct ep_query *q, const struct ep_item *it, size_t *ret_len)
{
    struct sh_buf b;
    sh_buf_init(&b, 0);
    append_item_json(&b, q, it);
    (void)sh_buf_append(&b, "\n", 1, NULL);
    return sh_buf_steal(&b, ret_len);
}

/* ---- HTTP helpers ---------------------------------------------------------------------- */

/* q-value of a coding in an Accept-Encoding list: -1 absent, else 0..1000. */
static int coding_q(const char *h, const char *coding)
{
    size_t clen = strlen(coding);
    const char *p = h;

    while (*p) {
        const char *end = strchr(p, ','), *semi;
        size_t len;
        while (*p == ' ' || *p == '\t')
            p++;
        if (!end)
            end = p + strlen(p);
        semi = memchr(p, ';', (size_t)(end - p));
        len = (size_t)((semi ? semi : end) - p);
        while (len && (p[len - 1] == ' ' || p[len - 1] == '\t'))
            len--;
        if (len == clen && !strncasecmp(p, coding, clen)) {
            const char *qp = semi;
            while (qp && qp < end) {
                qp++;
                while (*qp == ' ')
                    qp++;
                if ((qp[0] == 'q' || qp[0] == 'Q') && qp[1] == '=') {
                    double qv = strtod(qp + 2, NULL);
                    return qv <= 0 ? 0 : (int)(qv * 1000 + 0.5);
                }
                qp = memchr(qp, ';', (size_t)(end - qp));
            }
            return 1000;
        }
        p = *end ? end + 1 : end;
    }
    return -1;
}

int ep_accepts_gzip(const char *ae)
{
    int q;
    if (!ae)
        return 0;
    q = coding_q(ae, "gzip");
    if (q < 0)
        q = coding_q(ae, "x-gzip");
    if (q < 0)
        q = coding_q(ae, "*");
    return q > 0;
}

int ep_etag_matches(const char *inm, const char *etag)
{
    size_t elen = strlen(etag);
    const char *p = inm;

    if (!inm)
        return 0;
    while (*p) {
        const char *end;
        size_t len;
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        if (!*p)
            break;
        if (*p == '*')
            return 1;
        if (p[0] == 'W' && p[1] == '/')
            p += 2;
        if (*p == '"') {
            end = strchr(p + 1, '"');
            end = end ? end + 1 : p + strlen(p);
        } else {
            end = p + strcspn(p, ", \t");
        }
        len = (size_t)(end - p);
        if (len == elen && !memcmp(p, etag, elen))
            return 1;
        /* be lenient with an unquoted tag ("42" sent as 42) */
        if (*p != '"' && elen >= 2 && len == elen - 2 && !memcmp(p, etag + 1, len))
            return 1;
        p = end;
    }
    return 0;
}
