/* JSON path selectors for JSON sources, over jansson values.
 *
 * Grammar (docs/config.md): an optional leading "$", then segments
 *   name | .name | [N] | [-N] | [*] | .* | ["quoted key"] | ['quoted key']
 * e.g. "quotes[*]", "author.name", "items[0].tags[*]", "data['x-y']".
 * An empty path (or "$") selects the value itself. "*" fans out over array
 * elements or object values; matches come back in document order.
 * Pure, thread-safe; evaluation borrows from the document. */
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "extract_int.h"
#include "shared/buf.h"
#include "shared/xalloc.h"

#define JPATH_MAX_SEGS 64

static void add_seg(struct jpath *p, enum jseg_kind k, char *key, long index)
{
    p->segs = sh_xrealloc(p->segs, (p->n + 1) * sizeof(*p->segs));
    p->segs[p->n].kind = k;
    p->segs[p->n].key = key;
    p->segs[p->n].index = index;
    p->n++;
}

static bool is_name_char(unsigned char c)
{
    return isalnum(c) || c == '_' || c == '-' || c == '$' || c == '@' || c >= 0x80;
}

static struct jpath *jfail(struct jpath *p, const char *s, size_t pos, const char *what,
                           struct sh_err *err)
{
    sh_err_set(err, SH_ECONFIG, "%s at position %zu in '%s'", what, pos + 1, s);
    jpath_free(p);
    return NULL;
}

struct jpath *jpath_parse(const char *s, struct sh_err *err)
{
    struct jpath *p = sh_xcalloc(1, sizeof(*p));
    size_t i = 0;
    bool first = true;

    if (s[0] == '$')
        i = 1, first = false;
    while (s[i]) {
        if (p->n >= JPATH_MAX_SEGS)
            return jfail(p, s, i, "path too long", err);
        if (s[i] == '[') {
            size_t j = i + 1;
            if (s[j] == '*' && s[j + 1] == ']') {
                add_seg(p, JSEG_ALL, NULL, 0);
                i = j + 2;
            } else if (s[j] == '"' || s[j] == '\'') {
                char q = s[j];
                struct sh_buf b;
                sh_buf_init(&b, 0);
                for (j++; s[j] && s[j] != q; j++) {
                    if (s[j] == '\\' && s[j + 1])
                        j++;
                    (void)sh_buf_append(&b, &s[j], 1, NULL);
                }
                if (s[j] != q || s[j + 1] != ']') {
                    sh_buf_done(&b);
                    return jfail(p, s, j, s[j] ? "expected ']'" : "unclosed string", err);
                }
                add_seg(p, JSEG_KEY, sh_buf_steal(&b, NULL), 0);
                i = j + 2;
            } else {
                char *end;
                errno = 0;
                long v = strtol(s + j, &end, 10);
                if (end == s + j || errno || *end != ']')
                    return jfail(p, s, (size_t)(end - s),
                                 "expected an index, '*' or a quoted key followed by ']'", err);
                add_seg(p, JSEG_INDEX, NULL, v);
                i = (size_t)(end - s) + 1;
            }
        } else {
            if (s[i] == '.') {
                i++;
            } else if (!first) {
                return jfail(p, s, i, "expected '.' or '['", err);
            }
            if (s[i] == '*') {
                add_seg(p, JSEG_ALL, NULL, 0);
                i++;
            } else {
                size_t j = i;
                while (s[j] && is_name_char((unsigned char)s[j]))
                    j++;
                if (j == i)
                    return jfail(p, s, i, "expected a key name", err);
                add_seg(p, JSEG_KEY, sh_xstrndup(s + i, j - i), 0);
                i = j;
            }
        }
        first = false;
    }
    return p;
}

void jpath_free(struct jpath *p)
{
    if (!p)
        return;
    for (size_t i = 0; i < p->n; i++)
        free(p->segs[i].key);
    free(p->segs);
    free(p);
}

static void push(struct jmatches *m, json_t *v)
{
    if (m->n == m->cap) {
        m->cap = m->cap ? m->cap * 2 : 8;
        m->v = sh_xrealloc(m->v, m->cap * sizeof(*m->v));
    }
    m->v[m->n++] = v;
}

static void eval(const struct jpath *p, size_t k, json_t *v, struct jmatches *out)
{
    if (!v)
        return;
    if (k == p->n) {
        push(out, v);
        return;
    }
    const struct jseg *s = &p->segs[k];
    switch (s->kind) {
    case JSEG_KEY:
        if (json_is_object(v))
            eval(p, k + 1, json_object_get(v, s->key), out);
        break;
    case JSEG_INDEX:
        if (json_is_array(v)) {
            long n = (long)json_array_size(v);
            long i = s->index < 0 ? n + s->index : s->index;
            if (i >= 0 && i < n)
                eval(p, k + 1, json_array_get(v, (size_t)i), out);
        }
        break;
    case JSEG_ALL:
        if (json_is_array(v)) {
            for (size_t i = 0; i < json_array_size(v); i++)
                eval(p, k + 1, json_array_get(v, i), out);
        } else if (json_is_object(v)) {
            const char *key;
            json_t *val;
            json_object_foreach(v, key, val)
            {
                eval(p, k + 1, val, out);
            }
        }
        break;
    }
}

void jpath_eval(const struct jpath *p, json_t *root, struct jmatches *out)
{
    eval(p, 0, root, out);
}
