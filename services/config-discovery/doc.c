/* Configuration documents: ids, timestamps, BSON -> API JSON, the split of
 * stored fields from user fields. Pure functions, thread-safe. */
#include "config_discovery.h"

#include <stdarg.h>
#include <string.h>
#include <time.h>

#include "shared/xalloc.h"

/* Fields the store owns; the client may send them back (GET -> edit -> PUT)
 * but they are never part of `spec`. */
static const char *const stored_fields[] = {"_id",        "type",       "container", "version",
                                            "created_at", "updated_at", NULL};

static int is_stored_field(const char *key)
{
    for (size_t i = 0; stored_fields[i]; i++)
        if (strcmp(key, stored_fields[i]) == 0)
            return 1;
    return 0;
}

int cd_oid_parse(const char *s, bson_oid_t *ret)
{
    if (!s || strlen(s) != 24)
        return 0;
    for (size_t i = 0; i < 24; i++) {
        char c = s[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')))
            return 0;
    }
    bson_oid_init_from_string(ret, s);
    return 1;
}

static uint64_t fnv1a64(uint64_t h, const void *data, size_t len)
{
    const unsigned char *p = data;
    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

void cd_endpoint_oid(const char *collection, bson_oid_t *ret)
{
    /* 96 bits from two FNV-1a-64 passes with different prefixes. */
    uint64_t a = fnv1a64(0xcbf29ce484222325ULL, "endpoint\x01", 9);
    uint64_t b = fnv1a64(0xcbf29ce484222325ULL, "endpoint\x02", 9);
    a = fnv1a64(a, collection, strlen(collection));
    b = fnv1a64(b, collection, strlen(collection));
    for (int i = 0; i < 8; i++)
        ret->bytes[i] = (uint8_t)(a >> (56 - 8 * i));
    for (int i = 0; i < 4; i++)
        ret->bytes[8 + i] = (uint8_t)(b >> (56 - 8 * i));
}

int64_t cd_now_ms(void)
{
    struct timespec ts;
    (void)clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

char *cd_iso8601(int64_t ms)
{
    time_t secs = (time_t)(ms / 1000);
    int frac = (int)(ms % 1000);
    struct tm tm;
    char date[32];

    if (frac < 0) {
        frac += 1000;
        secs -= 1;
    }
    if (!gmtime_r(&secs, &tm) || strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%S", &tm) == 0)
        return sh_xstrdup("1970-01-01T00:00:00.000Z");
    return sh_xasprintf("%s.%03dZ", date, frac);
}

void cd_problem(json_t *problems, const char *path, const char *fmt, ...)
{
    va_list ap;
    char msg[512];

    va_start(ap, fmt);
    (void)vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    (void)json_array_append_new(problems, json_pack("{s:s, s:s}", "path", path, "message", msg));
}

json_t *cd_user_fields(const json_t *config)
{
    json_t *out = json_object();
    const char *key;
    json_t *v;

    json_object_foreach((json_t *)config, key, v)
    {
        if (!is_stored_field(key))
            (void)json_object_set(out, key, v);
    }
    return out;
}

/* Reads one BSON field into the output object under the API's types. */
static int put_field(json_t *out, const char *key, const bson_iter_t *it)
{
    switch (bson_iter_type(it)) {
    case BSON_TYPE_OID: {
        char hex[25];
        bson_oid_to_string(bson_iter_oid(it), hex);
        return json_object_set_new(out, key, json_string(hex));
    }
    case BSON_TYPE_UTF8:
        return json_object_set_new(out, key, json_string(bson_iter_utf8(it, NULL)));
    case BSON_TYPE_NULL:
        return json_object_set_new(out, key, json_null());
    case BSON_TYPE_INT32:
    case BSON_TYPE_INT64:
        return json_object_set_new(out, key, json_integer(bson_iter_as_int64(it)));
    case BSON_TYPE_DATE_TIME: {
        char *s = cd_iso8601(bson_iter_date_time(it));
        int rc = json_object_set_new(out, key, json_string(s));
        free(s);
        return rc;
    }
    default:
        return -1;
    }
}

json_t *cd_doc_to_json(const bson_t *doc, struct sh_err *err)
{
    static const char *const order[] = {"_id",     "type",       "collection", "container",
                                        "version", "created_at", "updated_at", NULL};
    json_t *out = json_object(), *spec = NULL;
    bson_iter_t it;
    const char *key;
    json_t *v;

    for (size_t i = 0; order[i]; i++) {
        if (!bson_iter_init_find(&it, doc, order[i]))
            continue;
        if (put_field(out, order[i], &it) != 0) {
            sh_err_set(err, SH_EPROTO, "stored configuration: field %s has BSON type %d", order[i],
                       (int)bson_iter_type(&it));
            goto fail;
        }
    }
    if (!json_object_get(out, "_id") || !json_object_get(out, "type")) {
        sh_err_set(err, SH_EPROTO, "stored configuration without _id or type");
        goto fail;
    }
    if (bson_iter_init_find(&it, doc, "spec") && BSON_ITER_HOLDS_UTF8(&it)) {
        json_error_t jerr;
        spec = json_loads(bson_iter_utf8(&it, NULL), 0, &jerr);
        if (!json_is_object(spec)) {
            sh_err_set(err, SH_EPROTO, "stored configuration: spec is not a JSON object: %s",
                       jerr.text);
            goto fail;
        }
        json_object_foreach(spec, key, v)
        {
            if (!json_object_get(out, key))
                (void)json_object_set(out, key, v);
        }
        json_decref(spec);
    }
    return out;
fail:
    json_decref(spec);
    json_decref(out);
    return NULL;
}
