/* CSS selector → XPath compiler (see shared/css.h).
 *
 * A hand-written port of Python cssselect 1.2's tokenizer, parser and
 * HTMLTranslator: Debian has no C library that compiles CSS to XPath, and the
 * scraper issue requires cssselect's exact semantics, so the translation
 * mirrors cssselect's XPathExpr (path, element, condition) operation for
 * operation; tests/unit/test_css_lxml.sh checks the result against lxml.
 * The parser translates while it parses (the selector tree is left-nested,
 * so no AST is needed). Pure, no globals, thread-safe. */
#include "shared/css.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "css_int.h"
#include "shared/buf.h"
#include "shared/xalloc.h"

/* ---- stream helpers ---------------------------------------------------- */

static struct tok *peek(struct parser *p)
{
    return &p->t.v[p->i];
}

static struct tok *next(struct parser *p)
{
    struct tok *t = &p->t.v[p->i];
    if (t->type != T_EOF)
        p->i++;
    return t;
}

static bool is_delim(const struct tok *t, char c)
{
    return t->type == T_DELIM && t->value[0] == c;
}

static void skip_ws(struct parser *p)
{
    while (peek(p)->type == T_S)
        p->i++;
}

static void fail_tok(struct parser *p, const struct tok *t, const char *expected)
{
    char *m;
    if (t->type == T_EOF)
        m = sh_xstrdup(expected);
    else if (t->type == T_S)
        m = sh_xasprintf("%s, got whitespace", expected);
    else
        m = sh_xasprintf("%s, got '%s'", expected, t->value);
    css_fail(p, t->pos, m);
    free(m);
}

/* ---- attribute operators ---------------------------------------------- */

static void attrib_cond(struct xexpr *x, const char *name, const char *op, const char *value)
{
    char *lit = value ? css_literal(value) : NULL;
    if (strcmp(op, "exists") == 0) {
        css_x_cond(x, name, "and");
    } else if (strcmp(op, "=") == 0) {
        css_x_condf_take(x, sh_xasprintf("%s = %s", name, lit));
    } else if (strcmp(op, "!=") == 0) {
        if (*value)
            css_x_condf_take(x, sh_xasprintf("not(%s) or %s != %s", name, name, lit));
        else
            css_x_condf_take(x, sh_xasprintf("%s != %s", name, lit));
    } else if (strcmp(op, "~=") == 0) {
        bool ok = *value && !strpbrk(value, " \t\r\n\f");
        if (ok) {
            char *spaced = sh_xasprintf(" %s ", value), *l2 = css_literal(spaced);
            css_x_condf_take(
                x, sh_xasprintf("%s and contains(concat(' ', normalize-space(%s), ' '), %s)", name,
                                name, l2));
            free(spaced);
            free(l2);
        } else {
            css_x_cond(x, "0", "and");
        }
    } else if (strcmp(op, "|=") == 0) {
        char *dash = sh_xasprintf("%s-", value), *l2 = css_literal(dash);
        css_x_condf_take(
            x, sh_xasprintf("%s and (%s = %s or starts-with(%s, %s))", name, name, lit, name, l2));
        free(dash);
        free(l2);
    } else if (!*value) {
        css_x_cond(x, "0", "and"); /* ^= $= *= with an empty value never match */
    } else if (strcmp(op, "^=") == 0) {
        css_x_condf_take(x, sh_xasprintf("%s and starts-with(%s, %s)", name, name, lit));
    } else if (strcmp(op, "$=") == 0) {
        /* cssselect counts code points; so does XPath's string-length */
        size_t cps = 0;
        for (const unsigned char *q = (const unsigned char *)value; *q; q++)
            cps += (*q & 0xC0) != 0x80;
        css_x_condf_take(x, sh_xasprintf("%s and substring(%s, string-length(%s)-%zu) = %s", name,
                                         name, name, cps - 1, lit));
    } else { /* *= */
        css_x_condf_take(x, sh_xasprintf("%s and contains(%s, %s)", name, name, lit));
    }
    free(lit);
}

static int parse_attrib(struct parser *p, struct xexpr *x)
{
    skip_ws(p);
    struct tok *t = next(p);
    if (t->type != T_IDENT) {
        fail_tok(p, t, "expected attribute name");
        return -1;
    }
    char *name = sh_xstrdup(t->value);
    char op[8] = "exists";
    const char *value = NULL;
    css_ascii_lower(name);
    skip_ws(p);
    t = next(p);
    if (!is_delim(t, ']')) {
        if (is_delim(t, '=')) {
            op[0] = '=';
            op[1] = '\0';
        } else if (t->type == T_DELIM && strchr("^$*~|!", t->value[0]) && is_delim(peek(p), '=')) {
            op[0] = t->value[0];
            op[1] = '=';
            op[2] = '\0';
            next(p);
        } else {
            free(name);
            fail_tok(p, t,
                     t->type == T_EOF ? "expected ']'" : "expected ']' or an attribute operator");
            return -1;
        }
        skip_ws(p);
        t = next(p);
        if (t->type != T_IDENT && t->type != T_STRING) {
            free(name);
            fail_tok(p, t, "expected a string or identifier");
            return -1;
        }
        value = t->value;
        skip_ws(p);
        t = next(p);
        if (!is_delim(t, ']')) {
            free(name);
            fail_tok(p, t, "expected ']'");
            return -1;
        }
    }
    char *attr;
    if (css_is_safe_name(name)) {
        attr = sh_xasprintf("@%s", name);
    } else {
        char *lit = css_literal(name);
        attr = sh_xasprintf("attribute::*[name() = %s]", lit);
        free(lit);
    }
    attrib_cond(x, attr, op, value);
    free(attr);
    free(name);
    return 0;
}

/* ---- structural pseudo-classes ----------------------------------------- */

/* Python's int(): optional sign and digits only (after strip). */
static bool parse_int(const char *s, long *ret)
{
    char *end;
    if (!*s || isspace((unsigned char)*s))
        return false;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (*end || errno || v > INT_MAX / 4 || v < INT_MIN / 4)
        return false;
    *ret = v;
    return true;
}

static bool parse_series(const char *s, long *a, long *b)
{
    if (strcmp(s, "odd") == 0) {
        *a = 2, *b = 1;
        return true;
    }
    if (strcmp(s, "even") == 0) {
        *a = 2, *b = 0;
        return true;
    }
    if (strcmp(s, "n") == 0) {
        *a = 1, *b = 0;
        return true;
    }
    const char *n = strchr(s, 'n');
    if (!n) {
        *a = 0;
        return parse_int(s, b);
    }
    char *as = sh_xstrndup(s, (size_t)(n - s));
    bool ok = true;
    if (!*as)
        *a = 1;
    else if (strcmp(as, "-") == 0 || strcmp(as, "+") == 0)
        *a = *as == '-' ? -1 : 1;
    else
        ok = parse_int(as, a);
    free(as);
    if (!ok)
        return false;
    if (!n[1]) {
        *b = 0;
        return true;
    }
    return parse_int(n + 1, b);
}

static int nth(struct parser *p, struct xexpr *x, const char *args, size_t pos, bool last,
               bool of_type)
{
    long a, b;
    if (!parse_series(args, &a, &b)) {
        char *m = sh_xasprintf("invalid an+b series '%s'", args);
        css_fail(p, pos, m);
        free(m);
        return -1;
    }
    long b1 = b - 1;
    if (a == 1 && b1 <= 0)
        return 0;
    if (a < 0 && b1 < 0) {
        css_x_cond(x, "0", "and");
        return 0;
    }
    char *count = sh_xasprintf("count(%s-sibling::%s)", last ? "following" : "preceding",
                               of_type ? x->element : "*");
    if (a == 0) {
        css_x_condf_take(x, sh_xasprintf("%s = %ld", count, b1));
        free(count);
        return 0;
    }
    char *e1 = NULL, *e2 = NULL;
    if (a > 0) {
        if (b1 > 0)
            e1 = sh_xasprintf("%s >= %ld", count, b1);
    } else {
        e1 = sh_xasprintf("%s <= %ld", count, b1);
    }
    if (labs(a) != 1) {
        long bneg = ((-b1) % labs(a) + labs(a)) % labs(a);
        if (bneg)
            e2 = sh_xasprintf("(%s +%ld) mod %ld = 0", count, bneg, a);
        else
            e2 = sh_xasprintf("%s mod %ld = 0", count, a);
    }
    if (e1 && e2)
        css_x_condf_take(x, sh_xasprintf("(%s) and (%s)", e1, e2));
    else if (e1 || e2)
        css_x_cond(x, e1 ? e1 : e2, "and");
    free(e1);
    free(e2);
    free(count);
    return 0;
}

static int pseudo(struct parser *p, struct xexpr *x, const char *ident, size_t pos)
{
    bool star = strcmp(x->element, "*") == 0;
    if (strcmp(ident, "first-child") == 0) {
        css_x_cond(x, "count(preceding-sibling::*) = 0", "and");
    } else if (strcmp(ident, "last-child") == 0) {
        css_x_cond(x, "count(following-sibling::*) = 0", "and");
    } else if (strcmp(ident, "only-child") == 0) {
        css_x_cond(x, "count(parent::*/child::*) = 1", "and");
    } else if (strcmp(ident, "empty") == 0) {
        css_x_cond(x, "not(*) and not(string-length())", "and");
    } else if (strcmp(ident, "root") == 0) {
        css_x_cond(x, "not(parent::*)", "and");
    } else if (strcmp(ident, "link") == 0) {
        css_x_cond(x, "@href and (name(.) = 'a' or name(.) = 'link' or name(.) = 'area')", "and");
    } else if (strcmp(ident, "checked") == 0) {
        css_x_cond(x,
                   "(@selected and name(.) = 'option') or (@checked and (name(.) = 'input' or "
                   "name(.) = 'command')and (@type = 'checkbox' or @type = 'radio'))",
                   "and");
    } else if (strcmp(ident, "visited") == 0 || strcmp(ident, "hover") == 0 ||
               strcmp(ident, "active") == 0 || strcmp(ident, "focus") == 0 ||
               strcmp(ident, "target") == 0) {
        css_x_cond(x, "0", "and");
    } else if (strcmp(ident, "first-of-type") == 0 || strcmp(ident, "last-of-type") == 0 ||
               strcmp(ident, "only-of-type") == 0) {
        if (star) {
            char *m = sh_xasprintf("*:%s is not implemented (name an element)", ident);
            css_fail(p, pos, m);
            free(m);
            return -1;
        }
        if (ident[1] == 'n')
            css_x_condf_take(x, sh_xasprintf("count(parent::*/child::%s) = 1", x->element));
        else
            css_x_condf_take(x,
                             sh_xasprintf("count(%s-sibling::%s) = 0",
                                          ident[0] == 'f' ? "preceding" : "following", x->element));
    } else {
        char *m = sh_xasprintf("unknown pseudo-class ':%s'", ident);
        css_fail(p, pos, m);
        free(m);
        return -1;
    }
    return 0;
}

/* Collects the arguments of a functional pseudo-class up to ')'. */
static char *parse_arguments(struct parser *p, bool *ret_string)
{
    struct sh_buf b;
    sh_buf_init(&b, 0);
    *ret_string = false;
    for (;;) {
        skip_ws(p);
        struct tok *t = next(p);
        if (t->type == T_IDENT || t->type == T_STRING || t->type == T_NUMBER || is_delim(t, '+') ||
            is_delim(t, '-')) {
            *ret_string |= t->type == T_STRING;
            (void)sh_buf_appends(&b, t->value, NULL);
            (void)sh_buf_append(&b, "\x1f", 1, NULL); /* token separator */
        } else if (is_delim(t, ')')) {
            return sh_buf_steal(&b, NULL);
        } else {
            sh_buf_done(&b);
            fail_tok(p, t, "expected an argument or ')'");
            return NULL;
        }
    }
}

static int function(struct parser *p, struct xexpr *x, char *name, size_t pos)
{
    bool is_string;
    char *raw = parse_arguments(p, &is_string);
    if (!raw)
        return -1;
    size_t ntok = 0;
    char *joined = sh_xstrdup(raw);
    size_t w = 0;
    for (size_t r = 0; raw[r]; r++) {
        if (raw[r] == '\x1f')
            ntok++;
        else
            joined[w++] = raw[r];
    }
    joined[w] = '\0';
    int rc = 0;
    css_ascii_lower(name);
    bool last = strncmp(name, "nth-last-", 9) == 0;
    bool of_type = strcmp(name, "nth-of-type") == 0 || strcmp(name, "nth-last-of-type") == 0;
    if (strcmp(name, "nth-child") == 0 || strcmp(name, "nth-last-child") == 0 || of_type) {
        if (of_type && strcmp(x->element, "*") == 0) {
            css_fail(p, pos, "*:nth-of-type() is not implemented (name an element)");
            rc = -1;
        } else if (is_string) {
            css_fail(p, pos, "strings are not allowed in an an+b series");
            rc = -1;
        } else {
            rc = nth(p, x, joined, pos, last, of_type);
        }
    } else if (strcmp(name, "contains") == 0) {
        if (ntok != 1) {
            css_fail(p, pos, ":contains() takes a single string");
            rc = -1;
        } else {
            char *lit = css_literal(joined);
            css_x_condf_take(x, sh_xasprintf("contains(., %s)", lit));
            free(lit);
        }
    } else {
        char *m = sh_xasprintf("unknown pseudo-class ':%s()'", name);
        css_fail(p, pos, m);
        free(m);
        rc = -1;
    }
    free(raw);
    free(joined);
    return rc;
}

/* ---- selectors --------------------------------------------------------- */

static int parse_simple(struct parser *p, struct xexpr *x, bool in_not);

static int negation(struct parser *p, struct xexpr *x)
{
    struct xexpr sub;
    if (parse_simple(p, &sub, true) < 0)
        return -1;
    struct tok *t = next(p);
    if (!is_delim(t, ')')) {
        css_x_done(&sub);
        fail_tok(p, t, "expected ')'");
        return -1;
    }
    css_x_name_test(&sub);
    if (*sub.cond)
        css_x_condf_take(x, sh_xasprintf("not(%s)", sub.cond));
    else
        css_x_cond(x, "0", "and");
    css_x_done(&sub);
    return 0;
}

/* One compound selector (type/universal then .class #id [attr] :pseudo). */
static int parse_simple(struct parser *p, struct xexpr *x, bool in_not)
{
    skip_ws(p);
    size_t start = p->i;
    struct tok *t = peek(p);
    if (t->type == T_IDENT || is_delim(t, '*')) {
        next(p);
        if (is_delim(peek(p), '|')) {
            css_fail(p, peek(p)->pos, "namespaces are not supported");
            return -1;
        }
        char *el = sh_xstrdup(t->type == T_IDENT ? t->value : "*");
        bool safe = t->type != T_IDENT || css_is_safe_name(el);
        css_ascii_lower(el);
        css_x_init(x, el);
        free(el);
        if (!safe)
            css_x_name_test(x);
    } else {
        css_x_init(x, "*");
    }
    for (;;) {
        t = peek(p);
        if (t->type == T_S || t->type == T_EOF || is_delim(t, ',') || is_delim(t, '+') ||
            is_delim(t, '>') || is_delim(t, '~') || (in_not && is_delim(t, ')')))
            break;
        int rc = 0;
        if (t->type == T_HASH) {
            next(p);
            attrib_cond(x, "@id", "=", t->value);
        } else if (is_delim(t, '.')) {
            next(p);
            struct tok *c = next(p);
            if (c->type != T_IDENT) {
                fail_tok(p, c, "expected a class name");
                rc = -1;
            } else {
                attrib_cond(x, "@class", "~=", c->value);
            }
        } else if (is_delim(t, '[')) {
            next(p);
            rc = parse_attrib(p, x);
        } else if (is_delim(t, ':')) {
            next(p);
            if (is_delim(peek(p), ':')) {
                css_fail(p, t->pos, "pseudo-elements are not supported");
                rc = -1;
            } else {
                struct tok *id = next(p);
                if (id->type != T_IDENT) {
                    fail_tok(p, id, "expected a pseudo-class name");
                    rc = -1;
                } else if (!is_delim(peek(p), '(')) {
                    char *name = sh_xstrdup(id->value);
                    css_ascii_lower(name);
                    if (!strcmp(name, "first-line") || !strcmp(name, "first-letter") ||
                        !strcmp(name, "before") || !strcmp(name, "after")) {
                        css_fail(p, t->pos, "pseudo-elements are not supported");
                        rc = -1;
                    } else {
                        rc = pseudo(p, x, name, t->pos);
                    }
                    free(name);
                } else {
                    next(p);
                    skip_ws(p);
                    char *name = sh_xstrdup(id->value);
                    css_ascii_lower(name);
                    if (strcmp(name, "not") == 0) {
                        if (in_not) {
                            css_fail(p, t->pos, "nested :not() is not allowed");
                            rc = -1;
                        } else {
                            rc = negation(p, x);
                        }
                    } else {
                        rc = function(p, x, name, t->pos);
                    }
                    free(name);
                }
            }
        } else {
            fail_tok(p, t, "expected selector");
            rc = -1;
        }
        if (rc < 0) {
            css_x_done(x);
            return -1;
        }
    }
    if (p->i == start) {
        css_x_done(x);
        fail_tok(p, peek(p), "expected selector");
        return -1;
    }
    return 0;
}

/* A complex selector: compounds joined by combinators. */
static char *parse_selector(struct parser *p)
{
    struct xexpr x, right;
    if (parse_simple(p, &x, false) < 0)
        return NULL;
    for (;;) {
        skip_ws(p);
        struct tok *t = peek(p);
        if (t->type == T_EOF || is_delim(t, ','))
            break;
        char comb = ' ';
        if (is_delim(t, '+') || is_delim(t, '>') || is_delim(t, '~')) {
            comb = next(p)->value[0];
            skip_ws(p);
        }
        if (parse_simple(p, &right, false) < 0) {
            css_x_done(&x);
            return NULL;
        }
        if (comb == ' ') {
            css_x_join(&x, p->fast ? "/descendant::" : "/descendant-or-self::*/", &right);
        } else if (comb == '>') {
            css_x_join(&x, "/", &right);
        } else if (comb == '+') {
            css_x_join(&x, "/following-sibling::", &right);
            css_x_name_test(&x);
            css_x_cond(&x, "position() = 1", "and");
        } else {
            css_x_join(&x, "/following-sibling::", &right);
        }
    }
    char *s = css_x_str(&x);
    css_x_done(&x);
    return s;
}

static char *compile(const char *css, bool fast, size_t *ret_pos, struct sh_err *err)
{
    struct parser p = {.css = css, .err = err, .fast = fast};
    struct sh_buf out;
    char *result = NULL;

    sh_buf_init(&out, 0);
    if (css_tokenize(&p) < 0)
        goto out;
    skip_ws(&p);
    if (peek(&p)->type == T_EOF) {
        css_fail(&p, 0, "empty selector");
        goto out;
    }
    for (;;) {
        char *one = parse_selector(&p);
        if (!one)
            goto out;
        (void)sh_buf_appendf(&out, NULL, "%sdescendant-or-self::%s", out.len ? " | " : "", one);
        free(one);
        if (!is_delim(peek(&p), ','))
            break;
        next(&p);
    }
    result = sh_buf_steal(&out, NULL);
out:
    for (size_t i = 0; i < p.t.n; i++)
        free(p.t.v[i].value);
    free(p.t.v);
    sh_buf_done(&out);
    if (!result && ret_pos)
        *ret_pos = p.err_pos;
    return result;
}

char *sh_css_to_xpath(const char *css, size_t *ret_pos, struct sh_err *err)
{
    return compile(css, false, ret_pos, err);
}

char *sh_css_to_xpath_fast(const char *css, size_t *ret_pos, struct sh_err *err)
{
    return compile(css, true, ret_pos, err);
}
