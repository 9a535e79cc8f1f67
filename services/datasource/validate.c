/* Pure logic of the datasource: POST /items validation, collection names,
 * item identity and ETag parsing. No I/O, no globals: unit-tested directly
 * (tests/unit/test_datasource_validate.c). Thread-safe. */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "datasource.h"
#include "shared/xalloc.h"

int ds_collection_name_ok(const char *name)
{
    size_t n;

    if (!name || !name[0])
        return 0;
    if (!(islower((unsigned char)name[0]) || isdigit((unsigned char)name[0])))
        return 0;
    for (n = 0; name[n]; n++) {
        unsigned char ch = (unsigned char)name[n];
        if (n >= 64)
            return 0;
        if (!((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '_' || ch == '-'))
            return 0;
    }
    return 1;
}

static void problem(json_t *problems, const char *path, const char *msg)
{
    (void)json_array_append_new(problems, json_pack("{s:s,s:s}", "path", path, "message", msg));
}

/* A problem at "<base>[i]". */
static void problemf(json_t *problems, const char *msg, const char *base, size_t i)
{
    char *path = sh_xasprintf("%s[%zu]", base, i);
    problem(problems, path, msg);
    free(path);
}

void ds_batch_done(struct ds_batch *b)
{
    if (!b)
        return;
    free(b->collection);
    free(b->config_id);
    free(b->batch_id);
    json_decref(b->key);
    json_decref(b->data);
    free(b->data_json);
    for (size_t i = 0; i < b->n_items; i++)
        free(b->item_json[i]);
    free(b->item_json);
    memset(b, 0, sizeof(*b));
}

/* Checks `key`: absent/null = [], else an array of distinct non-empty strings. */
static void check_key(const json_t *key, json_t *problems)
{
    size_t i;
    json_t *v;

    if (!key || json_is_null(key))
        return;
    if (!json_is_array(key)) {
        problem(problems, "$.key", "must be an array of field names");
        return;
    }
    if (json_array_size(key) > DS_KEY_FIELDS_MAX)
        problem(problems, "$.key", "too many key fields (at most 32)");
    json_array_foreach(key, i, v)
    {
        if (!json_is_string(v) || json_string_length(v) == 0 ||
            json_string_length(v) > DS_KEY_FIELD_MAX)
            problemf(problems, "must be a non-empty string of at most 256 bytes", "$.key", i);
    }
}

int ds_batch_parse(const json_t *body, const struct ds_limits *lim, struct ds_batch *ret,
                   json_t **ret_problems)
{
    json_t *problems = json_array();
    const json_t *coll, *cid, *bid, *key, *data, *item;
    int too_big = 0;
    size_t i, total = 0;
    char **texts = NULL; /* each item's compact JSON, kept for data_json and the hand-off */

    if (!json_is_object(body)) {
        problem(problems, "$", "body must be a JSON object");
        *ret_problems = problems;
        return 400;
    }
    coll = json_object_get(body, "collection");
    cid = json_object_get(body, "config_id");
    bid = json_object_get(body, "batch_id");
    key = json_object_get(body, "key");
    data = json_object_get(body, "data");

    if (!coll)
        problem(problems, "$.collection", "is required");
    else if (!json_is_string(coll))
        problem(problems, "$.collection", "must be a string");
    else if (!ds_collection_name_ok(json_string_value(coll)))
        problem(problems, "$.collection", "must match ^[a-z0-9][a-z0-9_-]{0,63}$");

    if (cid && !json_is_null(cid) && (!json_is_string(cid) || json_string_length(cid) > 128))
        problem(problems, "$.config_id", "must be a string of at most 128 bytes");

    if (!bid)
        problem(problems, "$.batch_id", "is required");
    else if (!json_is_string(bid) || json_string_length(bid) == 0 ||
             json_string_length(bid) > DS_BATCH_ID_MAX)
        problem(problems, "$.batch_id", "must be a non-empty string of at most 128 bytes");
    else if (strlen(json_string_value(bid)) != json_string_length(bid))
        problem(problems, "$.batch_id", "must not contain NUL");
    else if (json_string_value(bid)[0] == '~')
        problem(problems, "$.batch_id", "must not start with '~' (reserved)");

    check_key(key, problems);

    if (!data) {
        problem(problems, "$.data", "is required");
    } else if (!json_is_array(data)) {
        problem(problems, "$.data", "must be an array of objects");
    } else {
        if (json_array_size(data) > lim->max_items) {
            char *msg = sh_xasprintf("too many items: %zu (at most %zu)", json_array_size(data),
                                     lim->max_items);
            problem(problems, "$.data", msg);
            free(msg);
            too_big = 1;
        }
        texts = sh_xcalloc(json_array_size(data) + 1, sizeof(*texts));
        json_array_foreach(data, i, item)
        {
            char *s;
            size_t n;

            if (json_array_size(problems) >= 100)
                break; /* enough to fix the input; keep the answer bounded */
            if (!json_is_object(item)) {
                problemf(problems, "must be an object", "$.data", i);
                continue;
            }
            s = json_dumps(item, JSON_COMPACT);
            n = s ? strlen(s) : 0;
            texts[i] = s ? s : sh_xstrdup("{}");
            total += n + 1;
            if (n > lim->max_item_bytes) {
                char *msg = sh_xasprintf("item is %zu bytes (at most %zu)", n, lim->max_item_bytes);
                problemf(problems, msg, "$.data", i);
                free(msg);
                too_big = 1;
            }
        }
    }

    if (json_array_size(problems) > 0) {
        for (i = 0; texts && i < json_array_size(data); i++)
            free(texts[i]);
        free(texts);
        *ret_problems = problems;
        return too_big ? 413 : 400;
    }
    json_decref(problems);

    memset(ret, 0, sizeof(*ret));
    ret->collection = sh_xstrdup(json_string_value(coll));
    ret->config_id = json_is_string(cid) ? sh_xstrdup(json_string_value(cid)) : NULL;
    ret->batch_id = sh_xstrdup(json_string_value(bid));
    ret->key = json_is_array(key) ? json_incref((json_t *)key) : json_array();
    ret->data = json_incref((json_t *)data);
    /* the compact array is its items' compact texts joined: exactly what
     * json_dumps(data, JSON_COMPACT) gives, without dumping every item twice */
    ret->item_json = texts;
    ret->n_items = json_array_size(data);
    ret->data_json = sh_xmalloc(total + 3); /* total counts a comma per item; [ ] NUL */
    {
        size_t at = 0;
        ret->data_json[at++] = '[';
        for (i = 0; i < ret->n_items; i++) {
            size_t n = strlen(texts[i]);
            if (i > 0)
                ret->data_json[at++] = ',';
            memcpy(ret->data_json + at, texts[i], n);
            at += n;
        }
        ret->data_json[at++] = ']';
        ret->data_json[at] = '\0';
        ret->data_len = at;
    }
    return 0;
}

uint64_t ds_fnv1a64(const void *data, size_t len)
{
    const unsigned char *p = data;
    uint64_t h = 0xcbf29ce484222325ULL;
    size_t i;

    for (i = 0; i < len; i++) {
        h ^= p[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

json_t *ds_batch_map(const json_t *items, const json_t *key_fields, char *const *texts)
{
    json_t *map = json_object(), *item;
    size_t i;

    json_array_foreach(items, i, item)
    {
        char *key = ds_item_key(item, key_fields);
        char *js = texts ? NULL : json_dumps(item, JSON_COMPACT);
        const char *text = texts ? texts[i] : js;
        (void)json_object_set_new(map, key, json_string(text ? text : "{}"));
        free(js);
        free(key);
    }
    return map;
}

char *ds_item_key(const json_t *item, const json_t *key_fields)
{
    size_t n = key_fields ? json_array_size(key_fields) : 0;
    size_t i;
    json_t *arr, *f;
    char *s;

    if (n == 0) {
        char *dump = json_dumps(item, JSON_COMPACT | JSON_SORT_KEYS);
        uint64_t h = ds_fnv1a64(dump ? dump : "", dump ? strlen(dump) : 0);
        free(dump);
        return sh_xasprintf("h:%016" PRIx64, h);
    }
    if (n == 1) {
        const json_t *v = json_object_get(item, json_string_value(json_array_get(key_fields, 0)));
        if (json_is_string(v))
            return sh_xstrndup(json_string_value(v), json_string_length(v));
    }
    arr = json_array();
    json_array_foreach(key_fields, i, f)
    {
        json_t *v = json_object_get(item, json_string_value(f));
        (void)json_array_append(arr, v ? v : json_null());
    }
    s = json_dumps(arr, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(arr);
    return s ? s : sh_xstrdup("[]");
}

int ds_etag_parse(const char *s, int64_t *ret_rev)
{
    char *end;
    long long v;

    if (!s)
        return 0;
    while (*s == ' ')
        s++;
    if (strncmp(s, "W/", 2) == 0)
        s += 2;
    if (*s == '"')
        s++;
    if (!isdigit((unsigned char)*s))
        return 0;
    errno = 0;
    v = strtoll(s, &end, 10);
    if (errno || v < 0)
        return 0;
    if (*end == '"')
        end++;
    while (*end == ' ')
        end++;
    if (*end)
        return 0;
    *ret_rev = v;
    return 1;
}
