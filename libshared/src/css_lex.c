/* Lexer and XPath expression builders of the CSS compiler (see css.c):
 * cssselect's tokenizer (whitespace, ident, hash, string, number, delim with
 * CSS escapes) and its XPathExpr operations. Pure, thread-safe. */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "css_int.h"
#include "shared/buf.h"
#include "shared/xalloc.h"

/* ---- tokenizer --------------------------------------------------------- */

static bool is_nmstart(unsigned char c)
{
    return c == '_' || isalpha(c) || c >= 0x80;
}

static bool is_nmchar(unsigned char c)
{
    return is_nmstart(c) || isdigit(c) || c == '-';
}

static void put_utf8(struct sh_buf *b, unsigned long cp)
{
    char u[4];
    size_t n;

    if (cp == 0 || cp > 0x10FFFF)
        cp = 0xFFFD;
    if (cp < 0x80) {
        u[0] = (char)cp;
        n = 1;
    } else if (cp < 0x800) {
        u[0] = (char)(0xC0 | (cp >> 6));
        u[1] = (char)(0x80 | (cp & 0x3F));
        n = 2;
    } else if (cp < 0x10000) {
        u[0] = (char)(0xE0 | (cp >> 12));
        u[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        u[2] = (char)(0x80 | (cp & 0x3F));
        n = 3;
    } else {
        u[0] = (char)(0xF0 | (cp >> 18));
        u[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        u[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
        u[3] = (char)(0x80 | (cp & 0x3F));
        n = 4;
    }
    (void)sh_buf_append(b, u, n, NULL); /* unlimited buffer: cannot fail */
}

/* Is s[p] the start of an escape usable in a name (backslash + not newline)? */
static bool is_escape(const char *s, size_t p)
{
    return s[p] == '\\' && s[p + 1] && s[p + 1] != '\n' && s[p + 1] != '\r' && s[p + 1] != '\f';
}

/* Consumes the escape at s[*p] (a backslash) into b. */
static void take_escape(const char *s, size_t *p, struct sh_buf *b)
{
    size_t q = *p + 1, k = 0;
    unsigned long cp = 0;

    while (k < 6 && isxdigit((unsigned char)s[q + k])) {
        cp = cp * 16 + (unsigned long)(isdigit((unsigned char)s[q + k])
                                           ? s[q + k] - '0'
                                           : tolower((unsigned char)s[q + k]) - 'a' + 10);
        k++;
    }
    if (k > 0) {
        q += k;
        if (s[q] == '\r' && s[q + 1] == '\n')
            q += 2;
        else if (s[q] == ' ' || s[q] == '\n' || s[q] == '\r' || s[q] == '\t' || s[q] == '\f')
            q++;
        put_utf8(b, cp);
        *p = q;
        return;
    }
    (void)sh_buf_append(b, &s[q], 1, NULL);
    *p = q + 1;
}

static void push(struct toks *t, enum tok_type type, char *value, size_t pos)
{
    if (t->n == t->cap) {
        t->cap = t->cap ? t->cap * 2 : 16;
        t->v = sh_xrealloc(t->v, t->cap * sizeof(*t->v));
    }
    t->v[t->n].type = type;
    t->v[t->n].value = value;
    t->v[t->n].pos = pos;
    t->n++;
}

void css_fail(struct parser *p, size_t pos, const char *what)
{
    if (p->failed)
        return;
    p->failed = true;
    p->err_pos = pos;
    sh_err_set(p->err, SH_ECONFIG, "%s at position %zu in '%s'", what, pos + 1, p->css);
}

/* Reads a name (nmchar+) at s[*q] into a new string; NULL when none. */
static char *take_name(const char *s, size_t *q)
{
    struct sh_buf b;

    sh_buf_init(&b, 0);
    for (;;) {
        if (is_escape(s, *q))
            take_escape(s, q, &b);
        else if (is_nmchar((unsigned char)s[*q]))
            (void)sh_buf_append(&b, &s[(*q)++], 1, NULL);
        else
            break;
    }
    if (b.len == 0) {
        sh_buf_done(&b);
        return NULL;
    }
    return sh_buf_steal(&b, NULL);
}

int css_tokenize(struct parser *p)
{
    const char *s = p->css;
    size_t i = 0;

    while (s[i]) {
        unsigned char c = (unsigned char)s[i];
        size_t start = i;
        if (c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\f') {
            while (s[i] == ' ' || s[i] == '\t' || s[i] == '\r' || s[i] == '\n' || s[i] == '\f')
                i++;
            push(&p->t, T_S, sh_xstrdup(" "), start);
            continue;
        }
        /* ident: -?nmstart nmchar* */
        size_t q = i + (c == '-');
        if (is_nmstart((unsigned char)s[q]) || is_escape(s, q)) {
            char *name = take_name(s, &q);
            char *v = c == '-' ? sh_xasprintf("-%s", name) : sh_xstrdup(name);
            free(name);
            push(&p->t, T_IDENT, v, start);
            i = q;
            continue;
        }
        if (c == '#') {
            q = i + 1;
            char *name = take_name(s, &q);
            if (name) {
                push(&p->t, T_HASH, name, start);
                i = q;
                continue;
            }
        }
        if (c == '"' || c == '\'') {
            struct sh_buf b;
            sh_buf_init(&b, 0);
            q = i + 1;
            while (s[q] && s[q] != (char)c && s[q] != '\n' && s[q] != '\r' && s[q] != '\f') {
                if (s[q] == '\\' && (s[q + 1] == '\n' || s[q + 1] == '\f' || s[q + 1] == '\r')) {
                    q += (s[q + 1] == '\r' && s[q + 2] == '\n') ? 3 : 2;
                } else if (s[q] == '\\' && s[q + 1]) {
                    take_escape(s, &q, &b);
                } else if (s[q] == '\\') {
                    break;
                } else {
                    (void)sh_buf_append(&b, &s[q++], 1, NULL);
                }
            }
            if (s[q] != (char)c) {
                sh_buf_done(&b);
                css_fail(p, i, "unclosed string");
                return -1;
            }
            push(&p->t, T_STRING, sh_buf_steal(&b, NULL), start);
            i = q + 1;
            continue;
        }
        /* number: [+-]?([0-9]*\.[0-9]+|[0-9]+) */
        q = i + (c == '+' || c == '-');
        size_t d = q;
        while (isdigit((unsigned char)s[d]))
            d++;
        if (s[d] == '.' && isdigit((unsigned char)s[d + 1])) {
            d++;
            while (isdigit((unsigned char)s[d]))
                d++;
        }
        if (d > q && !(d == q + 1 && s[q] == '.')) {
            push(&p->t, T_NUMBER, sh_xstrndup(s + i, d - i), start);
            i = d;
            continue;
        }
        if (c == '\\') {
            css_fail(p, i, "invalid escape");
            return -1;
        }
        push(&p->t, T_DELIM, sh_xstrndup(s + i, 1), start);
        i++;
    }
    push(&p->t, T_EOF, NULL, i);
    return 0;
}

/* ---- XPathExpr --------------------------------------------------------- */

void css_x_init(struct xexpr *x, const char *element)
{
    x->path = sh_xstrdup("");
    x->element = sh_xstrdup(element);
    x->cond = sh_xstrdup("");
}

void css_x_done(struct xexpr *x)
{
    free(x->path);
    free(x->element);
    free(x->cond);
}

char *css_x_str(const struct xexpr *x)
{
    if (*x->cond)
        return sh_xasprintf("%s%s[%s]", x->path, x->element, x->cond);
    return sh_xasprintf("%s%s", x->path, x->element);
}

void css_x_cond(struct xexpr *x, const char *cond, const char *conj)
{
    char *c = *x->cond ? sh_xasprintf("(%s) %s (%s)", x->cond, conj, cond) : sh_xstrdup(cond);
    free(x->cond);
    x->cond = c;
}

void css_x_condf_take(struct xexpr *x, char *cond)
{
    css_x_cond(x, cond, "and");
    free(cond);
}

/* cssselect's xpath_literal: quote s for XPath, concat() when it has both quotes. */
char *css_literal(const char *s)
{
    if (!strchr(s, '\''))
        return sh_xasprintf("'%s'", s);
    if (!strchr(s, '"'))
        return sh_xasprintf("\"%s\"", s);
    struct sh_buf b;
    sh_buf_init(&b, 0);
    (void)sh_buf_appends(&b, "concat(", NULL);
    bool first = true;
    for (const char *q = s; *q;) {
        size_t n = 0;
        bool quotes = *q == '\'';
        while (q[n] && (q[n] == '\'') == quotes)
            n++;
        (void)sh_buf_appendf(&b, NULL, "%s%c%.*s%c", first ? "" : ",", quotes ? '"' : '\'', (int)n,
                             q, quotes ? '"' : '\'');
        first = false;
        q += n;
    }
    (void)sh_buf_appends(&b, ")", NULL);
    return sh_buf_steal(&b, NULL);
}

void css_x_name_test(struct xexpr *x)
{
    if (strcmp(x->element, "*") == 0)
        return;
    char *lit = css_literal(x->element);
    css_x_condf_take(x, sh_xasprintf("name() = %s", lit));
    free(lit);
    free(x->element);
    x->element = sh_xstrdup("*");
}

/* left.join(combiner, right); right is consumed. */
void css_x_join(struct xexpr *left, const char *combiner, struct xexpr *right)
{
    char *s = css_x_str(left);
    char *path = sh_xasprintf("%s%s%s", s, combiner, strcmp(right->path, "*/") ? right->path : "");
    free(s);
    free(left->path);
    free(left->element);
    free(left->cond);
    left->path = path;
    left->element = right->element;
    left->cond = right->cond;
    free(right->path);
}

bool css_is_safe_name(const char *s)
{
    if (!(isalpha((unsigned char)*s) || *s == '_'))
        return false;
    for (s++; *s; s++)
        if (!(isalnum((unsigned char)*s) || *s == '_' || *s == '.' || *s == '-'))
            return false;
    return true;
}

void css_ascii_lower(char *s)
{
    for (; *s; s++)
        *s = (char)tolower((unsigned char)*s);
}
