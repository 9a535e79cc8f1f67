/* The configuration validator, sh_dsl_validate() (see shared/dsl.h and
 * docs/config.md). Walks the whole document and records every problem with
 * the JSON path of the offending value; selectors are compiled to find
 * their syntax errors. Pure, thread-safe; the problems array is the
 * caller's. */
#include <ctype.h>
#include <curl/curl.h>
#include <regex.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "extract_int.h"
#include "shared/xalloc.h"

struct vctx {
    json_t *problems;
    int nest; /* current nesting of field specifications */
};

#define FIELD_NEST_MAX 16

static void problem(struct vctx *v, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void problem(struct vctx *v, const char *path, const char *fmt, ...)
{
    va_list ap;
    char *msg;
    va_start(ap, fmt);
    if (vasprintf(&msg, fmt, ap) < 0)
        msg = NULL;
    va_end(ap);
    (void)json_array_append_new(v->problems,
                                json_pack("{s:s, s:s}", "path", path, "message", msg ? msg : fmt));
    free(msg);
}

/* path + ".key" (or ["key"] when key is not a plain name). */
static char *sub(const char *path, const char *key)
{
    bool plain = isalpha((unsigned char)*key) || *key == '_';
    for (const char *k = key; *k && plain; k++)
        plain = isalnum((unsigned char)*k) || *k == '_' || *k == '-';
    if (plain)
        return sh_xasprintf("%s.%s", path, key);
    json_t *s = json_string(key);
    char *q = s ? json_dumps(s, JSON_ENCODE_ANY) : NULL;
    char *r = sh_xasprintf("%s[%s]", path, q ? q : "\"?\"");
    free(q);
    json_decref(s);
    return r;
}

static const char *type_name(const json_t *j)
{
    switch (json_typeof(j)) {
    case JSON_OBJECT:
        return "an object";
    case JSON_ARRAY:
        return "an array";
    case JSON_STRING:
        return "a string";
    case JSON_INTEGER:
        return "an integer";
    case JSON_REAL:
        return "a number";
    case JSON_TRUE:
    case JSON_FALSE:
        return "a boolean";
    default:
        return "null";
    }
}

static void unknown_keys(struct vctx *v, const char *path, const json_t *obj,
                         const char *const *allowed)
{
    const char *key;
    json_t *val;
    json_object_foreach((json_t *)obj, key, val)
    {
        bool ok = false;
        for (size_t i = 0; allowed[i] && !ok; i++)
            ok = strcmp(allowed[i], key) == 0;
        if (ok)
            continue;
        char *p = sub(path, key);
        const char *hint = sh_dsl_suggest(key, allowed);
        if (hint)
            problem(v, p, "unknown key '%s' (did you mean '%s'?)", key, hint);
        else
            problem(v, p, "unknown key '%s'", key);
        free(p);
    }
}

static void check_int(struct vctx *v, const char *path, const json_t *j, long min, long max)
{
    if (!json_is_integer(j))
        problem(v, path, "must be an integer from %ld to %ld, got %s", min, max, type_name(j));
    else if (json_integer_value(j) < min || json_integer_value(j) > max)
        problem(v, path, "must be from %ld to %ld, got %" JSON_INTEGER_FORMAT, min, max,
                json_integer_value(j));
}

static void check_string(struct vctx *v, const char *path, const json_t *j, size_t max)
{
    if (!json_is_string(j))
        problem(v, path, "must be a string, got %s", type_name(j));
    else if (json_string_length(j) > max)
        problem(v, path, "is longer than %zu characters", max);
}

/* Compiles a selector to report its errors; mode: 0 value, 1 link, 2 nodes. */
static void check_selector(struct vctx *v, const char *path, const json_t *j, enum sh_sel_lang lang,
                           int mode)
{
    struct sh_err err;
    if (!json_is_string(j)) {
        problem(v, path, "must be a selector string, got %s", type_name(j));
        return;
    }
    if (json_string_length(j) > 4096) {
        problem(v, path, "selector is longer than 4096 characters");
        return;
    }
    struct sh_selector *s =
        selector_new_link(json_string_value(j), lang, mode == 1 ? "href" : NULL, &err);
    if (!s) {
        problem(v, path, "%s", err.msg);
        return;
    }
    if (mode == 2 && (s->nfilters > 0 || s->attr || s->target != SH_SEL_TEXT))
        problem(v, path, "a scope selects nodes: '@...' and filters are not allowed here");
    else if (mode == 2 && lang == SH_SEL_HTML && !s->xpath)
        problem(v, path, "empty scope selector");
    sh_selector_free(s);
}

static void check_url(struct vctx *v, const char *path, const json_t *j)
{
    if (!json_is_string(j)) {
        problem(v, path, "must be an http(s) URL string, got %s", type_name(j));
        return;
    }
    CURLU *h = curl_url();
    char *scheme = NULL, *host = NULL;
    if (!h || curl_url_set(h, CURLUPART_URL, json_string_value(j), 0) != CURLUE_OK) {
        problem(v, path, "'%s' is not a valid absolute URL", json_string_value(j));
    } else if (curl_url_get(h, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
               (strcmp(scheme, "http") != 0 && strcmp(scheme, "https") != 0)) {
        problem(v, path, "URL scheme must be http or https");
    } else if (curl_url_get(h, CURLUPART_HOST, &host, 0) != CURLUE_OK || !*host) {
        problem(v, path, "URL has no host");
    }
    curl_free(scheme);
    curl_free(host);
    curl_url_cleanup(h);
}

static void check_string_map(struct vctx *v, const char *path, const json_t *j, bool names)
{
    const char *key;
    json_t *val;
    if (!json_is_object(j)) {
        problem(v, path, "must be an object of strings, got %s", type_name(j));
        return;
    }
    if (json_object_size(j) > 64)
        problem(v, path, "more than 64 entries");
    json_object_foreach((json_t *)j, key, val)
    {
        char *p = sub(path, key);
        bool token = *key != '\0';
        for (const char *k = key; *k && names; k++)
            token = token && (isalnum((unsigned char)*k) || strchr("!#$%&'*+-.^_`|~", *k));
        if (names && !token)
            problem(v, p, "'%s' is not a valid header name", key);
        if (!json_is_string(val))
            problem(v, p, "must be a string, got %s", type_name(val));
        else if (strpbrk(json_string_value(val), "\r\n"))
            problem(v, p, "must not contain line breaks");
        free(p);
    }
}

static void check_fields(struct vctx *v, const char *path, const json_t *j, enum sh_sel_lang lang,
                         int depth);

static bool valid_field_name(const char *k)
{
    if (!(isalpha((unsigned char)*k) || *k == '_') || strlen(k) > 64)
        return false;
    for (; *k; k++)
        if (!(isalnum((unsigned char)*k) || *k == '_' || *k == '-'))
            return false;
    return true;
}

static void check_follow(struct vctx *v, const char *path, const json_t *j, enum sh_sel_lang lang,
                         int depth)
{
    static const char *const keys[] = {"follow", "field", "fields", "scope", "type", NULL};
    unknown_keys(v, path, j, keys);
    char *p = sub(path, "follow");
    check_selector(v, p, json_object_get(j, "follow"), lang, 1);
    free(p);
    if (depth + 1 > SH_DSL_FOLLOW_DEPTH_MAX) {
        problem(v, path, "follow nesting is deeper than %d", SH_DSL_FOLLOW_DEPTH_MAX);
        return;
    }
    const json_t *t = json_object_get(j, "type");
    enum sh_sel_lang sublang = lang;
    if (t) {
        p = sub(path, "type");
        if (!json_is_string(t) || (strcmp(json_string_value(t), "html") != 0 &&
                                   strcmp(json_string_value(t), "json") != 0))
            problem(v, p, "must be \"html\" or \"json\"");
        else
            sublang = strcmp(json_string_value(t), "json") == 0 ? SH_SEL_JSON : SH_SEL_HTML;
        free(p);
    }
    const json_t *field = json_object_get(j, "field"), *fields = json_object_get(j, "fields");
    if (!field == !fields) {
        problem(v, path,
                "a follow needs exactly one of 'field' (one value) or 'fields' (an "
                "object of fields)");
    } else if (field) {
        p = sub(path, "field");
        check_fields(v, p, field, sublang, depth + 1);
        free(p);
    } else if (!json_is_object(fields) || json_object_size(fields) == 0) {
        p = sub(path, "fields");
        problem(v, p, "must be a non-empty object of fields");
        free(p);
    } else {
        p = sub(path, "fields");
        const char *key;
        json_t *val;
        json_object_foreach((json_t *)fields, key, val)
        {
            char *q = sub(p, key);
            if (!valid_field_name(key))
                problem(v, q, "field names are letters, digits, '_' and '-' (at most 64)");
            check_fields(v, q, val, sublang, depth + 1);
            free(q);
        }
        free(p);
    }
    const json_t *scope = json_object_get(j, "scope");
    if (scope) {
        p = sub(path, "scope");
        check_selector(v, p, scope, sublang, 2);
        free(p);
    }
}

/* One field specification (string, [..], {...}); path is its JSON path. */
static void check_fields_in(struct vctx *v, const char *path, const json_t *j,
                            enum sh_sel_lang lang, int depth);

/* Bounds the nesting of objects of fields (the compiler and the engine
 * recurse over it). */
static void check_fields(struct vctx *v, const char *path, const json_t *j, enum sh_sel_lang lang,
                         int depth)
{
    if (v->nest >= FIELD_NEST_MAX) {
        problem(v, path, "fields nest deeper than %d levels", FIELD_NEST_MAX);
        return;
    }
    v->nest++;
    check_fields_in(v, path, j, lang, depth);
    v->nest--;
}

static void check_fields_in(struct vctx *v, const char *path, const json_t *j,
                            enum sh_sel_lang lang, int depth)
{
    if (json_is_string(j)) {
        check_selector(v, path, j, lang, 0);
    } else if (json_is_array(j)) {
        if (json_array_size(j) != 1) {
            problem(v, path, "an array field holds exactly one selector or object, got %zu",
                    json_array_size(j));
            return;
        }
        char *p = sh_xasprintf("%s[0]", path);
        const json_t *e = json_array_get(j, 0);
        if (json_is_string(e)) {
            check_selector(v, p, e, lang, 0);
        } else if (json_is_object(e) && json_object_get(e, "follow")) {
            check_follow(v, p, e, lang, depth);
        } else if (json_is_object(e)) {
            static const char *const keys[] = {"scope", "fields", NULL};
            unknown_keys(v, p, e, keys);
            char *q = sub(p, "scope");
            if (!json_object_get(e, "scope"))
                problem(v, p, "a list of objects needs 'scope' (one object per match)");
            else
                check_selector(v, q, json_object_get(e, "scope"), lang, 2);
            free(q);
            q = sub(p, "fields");
            if (!json_is_object(json_object_get(e, "fields")))
                problem(v, q, "must be an object of fields");
            else
                check_fields(v, q, json_object_get(e, "fields"), lang, depth);
            free(q);
        } else {
            problem(v, p, "must be a selector string or an object, got %s", type_name(e));
        }
        free(p);
    } else if (json_is_object(j) && json_object_get(j, "follow")) {
        check_follow(v, path, j, lang, depth);
    } else if (json_is_object(j) && json_is_object(json_object_get(j, "fields")) &&
               json_object_size(j) <= 2 &&
               (json_object_size(j) == 1 || json_object_get(j, "scope"))) {
        char *q = sub(path, "scope");
        if (json_object_get(j, "scope"))
            check_selector(v, q, json_object_get(j, "scope"), lang, 2);
        free(q);
        q = sub(path, "fields");
        check_fields(v, q, json_object_get(j, "fields"), lang, depth);
        free(q);
    } else if (json_is_object(j)) {
        const char *key;
        json_t *val;
        if (json_object_size(j) == 0)
            problem(v, path, "an object of fields must not be empty");
        if (json_object_size(j) > 256)
            problem(v, path, "more than 256 fields");
        json_object_foreach((json_t *)j, key, val)
        {
            char *p = sub(path, key);
            if (!valid_field_name(key))
                problem(v, p, "field names are letters, digits, '_' and '-' (at most 64)");
            check_fields(v, p, val, lang, depth);
            free(p);
        }
    } else {
        problem(v, path,
                "a field is a selector string, [selector], an object of fields or "
                "{\"follow\": ...}, got %s",
                type_name(j));
    }
}

static void check_source(struct vctx *v, const json_t *src, enum sh_sel_lang *ret_lang)
{
    static const char *const keys[] = {"url",     "type",       "method",  "body", "headers",
                                       "cookies", "user_agent", "timeout", NULL};
    if (!src) {
        problem(v, "$.source", "is required (an object with at least 'url')");
        return;
    }
    if (!json_is_object(src)) {
        problem(v, "$.source", "must be an object, got %s", type_name(src));
        return;
    }
    unknown_keys(v, "$.source", src, keys);
    const json_t *j;
    if (!(j = json_object_get(src, "url")))
        problem(v, "$.source.url", "is required");
    else
        check_url(v, "$.source.url", j);
    if ((j = json_object_get(src, "type"))) {
        if (!json_is_string(j) || (strcmp(json_string_value(j), "html") != 0 &&
                                   strcmp(json_string_value(j), "json") != 0))
            problem(v, "$.source.type", "must be \"html\" or \"json\"");
        else if (strcmp(json_string_value(j), "json") == 0)
            *ret_lang = SH_SEL_JSON;
    }
    const json_t *m = json_object_get(src, "method");
    if (m && (!json_is_string(m) || (strcmp(json_string_value(m), "GET") != 0 &&
                                     strcmp(json_string_value(m), "POST") != 0)))
        problem(v, "$.source.method", "must be \"GET\" or \"POST\"");
    if ((j = json_object_get(src, "body"))) {
        check_string(v, "$.source.body", j, 65536);
        if (!m || !json_is_string(m) || strcmp(json_string_value(m), "POST") != 0)
            problem(v, "$.source.body", "a body needs \"method\": \"POST\"");
    }
    if ((j = json_object_get(src, "headers")))
        check_string_map(v, "$.source.headers", j, true);
    if ((j = json_object_get(src, "cookies"))) {
        if (json_is_string(j))
            check_string(v, "$.source.cookies", j, 8192);
        else
            check_string_map(v, "$.source.cookies", j, false);
    }
    if ((j = json_object_get(src, "user_agent")))
        check_string(v, "$.source.user_agent", j, 512);
    if ((j = json_object_get(src, "timeout")))
        check_int(v, "$.source.timeout", j, 1, 300);
}

static void check_paginate(struct vctx *v, const json_t *j, enum sh_sel_lang lang)
{
    static const char *const keys[] = {"next", "param", "start", "step", NULL};
    if (json_is_string(j)) {
        check_selector(v, "$.paginate", j, lang, 1);
        return;
    }
    if (!json_is_object(j)) {
        problem(v, "$.paginate", "must be a selector string or an object, got %s", type_name(j));
        return;
    }
    unknown_keys(v, "$.paginate", j, keys);
    const json_t *next = json_object_get(j, "next"), *param = json_object_get(j, "param");
    if (!next == !param) {
        problem(v, "$.paginate", "needs exactly one of 'next' (selector) or 'param' (name)");
        return;
    }
    if (next) {
        check_selector(v, "$.paginate.next", next, lang, 1);
        if (json_object_get(j, "start") || json_object_get(j, "step"))
            problem(v, "$.paginate", "'start' and 'step' go with 'param'");
        return;
    }
    if (!json_is_string(param) || json_string_length(param) == 0 || json_string_length(param) > 64)
        problem(v, "$.paginate.param", "must be a query parameter name (1 to 64 characters)");
    const json_t *x;
    if ((x = json_object_get(j, "start")))
        check_int(v, "$.paginate.start", x, 0, 1000000);
    if ((x = json_object_get(j, "step")))
        check_int(v, "$.paginate.step", x, 1, 1000000);
}

static void check_key(struct vctx *v, const json_t *key, const json_t *fields)
{
    json_t *arr = json_is_string(key) ? json_pack("[O]", key) : json_incref((json_t *)key);
    if (!json_is_array(arr) || json_array_size(arr) == 0) {
        problem(v, "$.key", "must be a field name or a non-empty array of field names");
        json_decref(arr);
        return;
    }
    size_t i;
    json_t *e;
    const char **names = sh_xcalloc(json_object_size(fields) + 1, sizeof(*names));
    size_t n = 0;
    const char *k;
    json_t *val;
    if (json_is_object(fields))
        json_object_foreach((json_t *)fields, k, val)
        {
            names[n++] = k;
        }
    json_array_foreach(arr, i, e)
    {
        char *p = json_is_array(key) ? sh_xasprintf("$.key[%zu]", i) : sh_xstrdup("$.key");
        if (!json_is_string(e)) {
            problem(v, p, "must be a field name, got %s", type_name(e));
        } else if (json_is_object(fields) && !json_object_get(fields, json_string_value(e))) {
            const char *hint = sh_dsl_suggest(json_string_value(e), names);
            problem(v, p, "'%s' is not a field%s%s%s", json_string_value(e),
                    hint ? " (did you mean '" : "", hint ? hint : "", hint ? "'?)" : "");
        }
        for (size_t d = 0; d < i && json_is_string(e); d++)
            if (json_equal(json_array_get(arr, d), e))
                problem(v, p, "'%s' is listed twice", json_string_value(e));
        free(p);
    }
    free(names);
    json_decref(arr);
}

static void check_politeness(struct vctx *v, const json_t *j)
{
    static const char *const keys[] = {"rate", "burst", "robots", "concurrency", NULL};
    if (!json_is_object(j)) {
        problem(v, "$.politeness", "must be an object, got %s", type_name(j));
        return;
    }
    unknown_keys(v, "$.politeness", j, keys);
    const json_t *x;
    if ((x = json_object_get(j, "rate")) &&
        (!json_is_number(x) || json_number_value(x) <= 0 || json_number_value(x) > 100))
        problem(v, "$.politeness.rate", "must be a number of requests per second in (0, 100]");
    if ((x = json_object_get(j, "burst")))
        check_int(v, "$.politeness.burst", x, 1, 100);
    if ((x = json_object_get(j, "robots")) && !json_is_boolean(x))
        problem(v, "$.politeness.robots", "must be true or false");
    if ((x = json_object_get(j, "concurrency")))
        check_int(v, "$.politeness.concurrency", x, 1, 64);
}

/* Fields every stored document may carry, for both types. */
static void check_stored(struct vctx *v, const json_t *c)
{
    const json_t *j;
    if ((j = json_object_get(c, "_id"))) {
        bool ok = json_is_string(j) && json_string_length(j) == 24;
        for (const char *s = ok ? json_string_value(j) : ""; *s && ok; s++)
            ok = isxdigit((unsigned char)*s);
        if (!ok)
            problem(v, "$._id", "must be a 24-hex-digit ObjectId string");
    }
    if ((j = json_object_get(c, "container")) && !json_is_null(j))
        check_string(v, "$.container", j, 256);
    if ((j = json_object_get(c, "version")))
        check_int(v, "$.version", j, 0, 2147483647L);
    if ((j = json_object_get(c, "created_at")))
        check_string(v, "$.created_at", j, 64);
    if ((j = json_object_get(c, "updated_at")))
        check_string(v, "$.updated_at", j, 64);
    if ((j = json_object_get(c, "url")))
        check_string(v, "$.url", j, 2048);
    if ((j = json_object_get(c, "description")))
        check_string(v, "$.description", j, 1000);
    j = json_object_get(c, "collection");
    if (!j) {
        problem(v, "$.collection", "is required");
    } else if (!json_is_string(j)) {
        problem(v, "$.collection", "must be a string, got %s", type_name(j));
    } else {
        regex_t re;
        if (regcomp(&re, "^[a-z0-9][a-z0-9_-]{0,63}$", REG_EXTENDED | REG_NOSUB) == 0) {
            if (regexec(&re, json_string_value(j), 0, NULL, 0) != 0)
                problem(v, "$.collection",
                        "'%s' is not a collection name (lower-case letters, digits, '_', '-'; "
                        "1 to 64, starting with a letter or digit)",
                        json_string_value(j));
            regfree(&re);
        }
    }
    if ((j = json_object_get(c, "ttl")))
        check_int(v, "$.ttl", j, 1, SH_DSL_TTL_MAX);
    if ((j = json_object_get(c, "replicas")))
        check_int(v, "$.replicas", j, 1, SH_DSL_REPLICAS_MAX);
}

int sh_dsl_validate(const json_t *c, json_t **ret_problems)
{
    static const char *const scraper_keys[] = {
        "collection", "ttl",        "source",     "scope",       "fields", "paginate", "limit",
        "key",        "politeness", "replicas",   "description", "_id",    "type",     "container",
        "version",    "created_at", "updated_at", "url",         NULL};
    static const char *const endpoint_keys[] = {
        "collection", "ttl",       "replicas", "url",        "description", "_id",
        "type",       "container", "version",  "created_at", "updated_at",  NULL};
    struct vctx v = {.problems = json_array()};
    enum sh_sel_lang lang = SH_SEL_HTML;
    const json_t *j;

    if (!v.problems)
        abort();
    if (!json_is_object(c)) {
        problem(&v, "$", "a configuration must be a JSON object, got %s",
                c ? type_name(c) : "nothing");
        goto out;
    }
    j = json_object_get(c, "type");
    if (j && (!json_is_string(j) || (strcmp(json_string_value(j), "scraper") != 0 &&
                                     strcmp(json_string_value(j), "endpoint") != 0))) {
        problem(&v, "$.type", "must be \"scraper\" or \"endpoint\"");
        goto out;
    }
    check_stored(&v, c);
    if (j && strcmp(json_string_value(j), "endpoint") == 0) {
        unknown_keys(&v, "$", c, endpoint_keys);
        goto out;
    }
    unknown_keys(&v, "$", c, scraper_keys);
    check_source(&v, json_object_get(c, "source"), &lang);
    if ((j = json_object_get(c, "scope")))
        check_selector(&v, "$.scope", j, lang, 2);
    j = json_object_get(c, "fields");
    if (!j)
        problem(&v, "$.fields", "is required (an object of fields)");
    else if (!json_is_object(j) || json_object_size(j) == 0)
        problem(&v, "$.fields", "must be a non-empty object of fields");
    else
        check_fields(&v, "$.fields", j, lang, 0);
    if ((j = json_object_get(c, "paginate")))
        check_paginate(&v, j, lang);
    if ((j = json_object_get(c, "limit")))
        check_int(&v, "$.limit", j, 1, SH_DSL_LIMIT_MAX);
    if ((j = json_object_get(c, "key")))
        check_key(&v, j, json_object_get(c, "fields"));
    if ((j = json_object_get(c, "politeness")))
        check_politeness(&v, j);
out:
    *ret_problems = v.problems;
    return (int)json_array_size(v.problems);
}
