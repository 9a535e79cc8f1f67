/* Value filters of selector pipelines ("a@href | absolute", "span | number").
 *
 * One table row per filter: name, argument rule, function. Filters take a
 * JSON value and return a new one; null passes through everything but
 * "default". Numbers and booleans are turned into text by the text filters.
 * Regular expressions are POSIX EREs (regcomp at compile time; regexec on a
 * shared regex_t is thread-safe in glibc). Pure, thread-safe. */
#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "extract_int.h"
#include "shared/buf.h"
#include "shared/xalloc.h"

enum arg_rule { ARG_NONE, ARG_REQUIRED };

struct filter_def {
    const char *name;
    enum arg_rule arg;
    json_t *(*apply)(const struct filter *f, const char *s, json_t *v, struct fctx *c);
};

static void set_err(struct fctx *c, char *msg)
{
    if (c->err)
        free(msg);
    else
        c->err = msg;
}

static json_t *f_trim(const struct filter *f, const char *s, json_t *v, struct fctx *c)
{
    (void)f, (void)v, (void)c;
    while (isspace((unsigned char)*s))
        s++;
    size_t n = strlen(s);
    while (n > 0 && isspace((unsigned char)s[n - 1]))
        n--;
    return json_stringn(s, n);
}

static json_t *f_case(const char *s, int upper)
{
    char *d = sh_xstrdup(s);
    for (char *q = d; *q; q++)
        *q = (char)(upper ? toupper((unsigned char)*q) : tolower((unsigned char)*q));
    json_t *r = json_string(d);
    free(d);
    return r ? r : json_null();
}

static json_t *f_lower(const struct filter *f, const char *s, json_t *v, struct fctx *c)
{
    (void)f, (void)v, (void)c;
    return f_case(s, 0);
}

static json_t *f_upper(const struct filter *f, const char *s, json_t *v, struct fctx *c)
{
    (void)f, (void)v, (void)c;
    return f_case(s, 1);
}

/* First number in s: optional sign, digits with optional ',' thousands
 * groups, optional fraction ("$1,234.50" → 1234.5, "born 1879" → 1879). */
static json_t *number_of(const char *s, int as_int, struct fctx *c)
{
    const char *p = s;
    while (*p && !isdigit((unsigned char)*p) && !(*p == '.' && isdigit((unsigned char)p[1])))
        p++;
    if (!*p) {
        set_err(c, sh_xasprintf("number: no number in '%.60s'", s));
        return json_null();
    }
    bool neg = p > s && p[-1] == '-';
    struct sh_buf b;
    sh_buf_init(&b, 64);
    bool frac = false;
    for (; *p; p++) {
        if (isdigit((unsigned char)*p)) {
            if (sh_buf_append(&b, p, 1, NULL) < 0)
                break;
        } else if (*p == ',' && !frac && isdigit((unsigned char)p[1]) &&
                   isdigit((unsigned char)p[2]) && isdigit((unsigned char)p[3]) &&
                   !isdigit((unsigned char)p[4])) {
            continue;
        } else if (*p == '.' && !frac && isdigit((unsigned char)p[1])) {
            frac = true;
            (void)sh_buf_append(&b, p, 1, NULL);
        } else {
            break;
        }
    }
    double d = strtod(b.data ? b.data : "0", NULL);
    sh_buf_done(&b);
    if (neg)
        d = -d;
    if (as_int || !frac) {
        if (fabs(d) < 9.0e15)
            return json_integer((json_int_t)d);
        return json_real(trunc(d));
    }
    return json_real(d);
}

static json_t *f_number(const struct filter *f, const char *s, json_t *v, struct fctx *c)
{
    (void)f;
    if (json_is_number(v))
        return json_incref(v);
    return number_of(s, 0, c);
}

static json_t *f_int(const struct filter *f, const char *s, json_t *v, struct fctx *c)
{
    (void)f;
    if (json_is_integer(v))
        return json_incref(v);
    if (json_is_real(v))
        return json_integer((json_int_t)json_real_value(v));
    return number_of(s, 1, c);
}

static json_t *f_regex(const struct filter *f, const char *s, json_t *v, struct fctx *c)
{
    regmatch_t m[2];
    (void)v, (void)c;
    if (regexec(&f->re, s, 2, m, 0) != 0)
        return json_null();
    int g = (f->re.re_nsub >= 1 && m[1].rm_so >= 0) ? 1 : 0;
    return json_stringn(s + m[g].rm_so, (size_t)(m[g].rm_eo - m[g].rm_so));
}

/* replace:/ERE/replacement/ (any delimiter; \1..\9 in the replacement). */
static json_t *f_replace(const struct filter *f, const char *s, json_t *v, struct fctx *c)
{
    regmatch_t m[10];
    struct sh_buf b;
    const char *rep = f->arg + strlen(f->arg) + 1; /* stored after the pattern */
    (void)v, (void)c;
    sh_buf_init(&b, 1 << 20);
    int flags = 0;
    while (*s && regexec(&f->re, s, 10, m, flags) == 0) {
        (void)sh_buf_append(&b, s, (size_t)m[0].rm_so, NULL);
        for (const char *r = rep; *r; r++) {
            if (*r == '\\' && r[1] >= '0' && r[1] <= '9') {
                int g = r[1] - '0';
                if ((size_t)g <= f->re.re_nsub && m[g].rm_so >= 0)
                    (void)sh_buf_append(&b, s + m[g].rm_so, (size_t)(m[g].rm_eo - m[g].rm_so),
                                        NULL);
                r++;
            } else {
                (void)sh_buf_append(&b, r, 1, NULL);
            }
        }
        if (m[0].rm_eo == 0) { /* empty match: copy one char to make progress */
            (void)sh_buf_append(&b, s, 1, NULL);
            s++;
        } else {
            s += m[0].rm_eo;
        }
        flags = REG_NOTBOL;
    }
    (void)sh_buf_appends(&b, s, NULL);
    json_t *r = json_stringn(b.data ? b.data : "", b.len);
    sh_buf_done(&b);
    return r ? r : json_null();
}

static json_t *f_absolute(const struct filter *f, const char *s, json_t *v, struct fctx *c)
{
    (void)f, (void)v;
    char *u = url_resolve_cached(c->base_cache, c->base_url, s, true);
    if (!u) {
        set_err(c, sh_xasprintf("absolute: cannot resolve '%.60s'", s));
        return json_null();
    }
    json_t *r = json_string(u);
    free(u);
    return r ? r : json_null();
}

static json_t *f_default(const struct filter *f, const char *s, json_t *v, struct fctx *c)
{
    (void)f, (void)s, (void)c;
    return json_incref(v); /* only reached for non-empty values */
}

static const struct filter_def defs[] = {
    {"trim", ARG_NONE, f_trim},
    {"number", ARG_NONE, f_number},
    {"int", ARG_NONE, f_int},
    {"lower", ARG_NONE, f_lower},
    {"upper", ARG_NONE, f_upper},
    {"regex", ARG_REQUIRED, f_regex},
    {"replace", ARG_REQUIRED, f_replace},
    {"absolute", ARG_NONE, f_absolute},
    {"default", ARG_REQUIRED, f_default},
};
#define NDEFS (sizeof(defs) / sizeof(defs[0]))

const char *const *sh_selector_filter_names(void)
{
    static const char *const names[] = {"trim",  "number",  "int",      "lower",   "upper",
                                        "regex", "replace", "absolute", "default", NULL};
    return names;
}

const char *filter_name(const struct filter *f)
{
    return f->def->name;
}

static int compile_re(struct filter *f, const char *pattern, struct sh_err *err)
{
    int rc = regcomp(&f->re, pattern, REG_EXTENDED);
    if (rc != 0) {
        char msg[160];
        (void)regerror(rc, &f->re, msg, sizeof(msg));
        sh_err_set(err, SH_ECONFIG, "%s: invalid regular expression '%s': %s", f->def->name,
                   pattern, msg);
        return -1;
    }
    f->has_re = true;
    return 0;
}

/* Splits "/pat/rep/" (delimiter = first char) into "pat\0rep\0". */
static char *split_replace(const char *arg)
{
    char d = arg[0];
    char *out = sh_xmalloc(strlen(arg) + 2);
    size_t w = 0, parts = 0;
    for (const char *p = arg + 1; *p && parts < 2; p++) {
        if (*p == '\\' && p[1] == d) {
            out[w++] = d;
            p++;
        } else if (*p == d) {
            out[w++] = '\0';
            parts++;
        } else {
            out[w++] = *p;
        }
    }
    if (parts < 1) {
        free(out);
        return NULL;
    }
    if (parts == 1)
        out[w++] = '\0';
    out[w] = '\0';
    return out;
}

int filter_compile(struct filter *f, const char *text, struct sh_err *err)
{
    const char *colon = strchr(text, ':');
    size_t n = colon ? (size_t)(colon - text) : strlen(text);
    while (n > 0 && isspace((unsigned char)text[n - 1]))
        n--;
    memset(f, 0, sizeof(*f));
    for (size_t i = 0; i < NDEFS; i++)
        if (strlen(defs[i].name) == n && strncmp(defs[i].name, text, n) == 0)
            f->def = &defs[i];
    if (!f->def) {
        char *name = sh_xstrndup(text, n);
        const char *hint = sh_dsl_suggest(name, sh_selector_filter_names());
        sh_err_set(err, SH_ECONFIG, "unknown filter '%s'%s%s%s", name,
                   hint ? " (did you mean '" : "", hint ? hint : "", hint ? "'?)" : "");
        free(name);
        return -1;
    }
    const char *arg = colon ? colon + 1 : NULL;
    if (f->def->arg == ARG_NONE && arg) {
        sh_err_set(err, SH_ECONFIG, "filter '%s' takes no argument", f->def->name);
        return -1;
    }
    if (f->def->arg == ARG_REQUIRED && !arg) {
        sh_err_set(err, SH_ECONFIG, "filter '%s' needs an argument ('%s:...')", f->def->name,
                   f->def->name);
        return -1;
    }
    if (!arg)
        return 0;
    if (f->def->apply == f_replace) {
        f->arg = arg[0] ? split_replace(arg) : NULL;
        if (!f->arg) {
            sh_err_set(err, SH_ECONFIG, "replace: expected 'replace:/pattern/replacement/'");
            return -1;
        }
        return compile_re(f, f->arg, err);
    }
    f->arg = sh_xstrdup(arg);
    if (f->def->apply == f_regex)
        return compile_re(f, f->arg, err);
    return 0;
}

void filter_done(struct filter *f)
{
    if (f->has_re)
        regfree(&f->re);
    free(f->arg);
    f->has_re = false;
    f->arg = NULL;
}

json_t *filter_apply(const struct filter *f, json_t *v, struct fctx *c)
{
    json_t *r;
    char tmp[64];
    const char *s;

    if (f->def->apply == f_default) {
        if (json_is_null(v) || (json_is_string(v) && json_string_length(v) == 0)) {
            json_decref(v);
            r = json_string(f->arg);
            return r ? r : json_null();
        }
        return v;
    }
    if (json_is_string(v)) {
        s = json_string_value(v);
    } else if (json_is_integer(v)) {
        (void)snprintf(tmp, sizeof(tmp), "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        s = tmp;
    } else if (json_is_real(v)) {
        (void)snprintf(tmp, sizeof(tmp), "%.17g", json_real_value(v));
        s = tmp;
    } else if (json_is_boolean(v)) {
        s = json_is_true(v) ? "true" : "false";
    } else {
        return v; /* null, arrays and objects pass through */
    }
    r = f->def->apply(f, s, v, c);
    json_decref(v);
    return r ? r : json_null();
}
