/* Consul KV, sessions and locks (see shared/consul.h): get (plain or
 * blocking), put, CAS, counter increment, delete; sessions with TTL; locks by
 * ?acquire= / ?release=. Stateless: each call is one request (plus a CAS loop
 * for incr), safe from any thread. Request plumbing lives in consul.c. */
#include "shared/consul.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "consul_internal.h"
#include "shared/http_client.h"
#include "shared/xalloc.h"

#define INCR_MAX_ATTEMPTS 64

/* Standard base64 (Consul's KV Value); returns the decoded bytes NUL-terminated or NULL. */
static char *base64_decode(const char *in, size_t *ret_len)
{
    size_t n = strlen(in), o = 0;
    unsigned acc = 0;
    int bits = 0;
    char *out = sh_xmalloc(n / 4 * 3 + 4);

    for (size_t i = 0; i < n; i++) {
        int c = (unsigned char)in[i], v;
        if (c >= 'A' && c <= 'Z')
            v = c - 'A';
        else if (c >= 'a' && c <= 'z')
            v = c - 'a' + 26;
        else if (c >= '0' && c <= '9')
            v = c - '0' + 52;
        else if (c == '+')
            v = 62;
        else if (c == '/')
            v = 63;
        else if (c == '=')
            break;
        else {
            free(out);
            return NULL;
        }
        acc = (acc << 6) | (unsigned)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (char)((acc >> bits) & 0xff);
        }
    }
    out[o] = '\0';
    if (ret_len)
        *ret_len = o;
    return out;
}

int sh_consul_kv_get(struct sh_consul *c, const char *key, uint64_t wait_index, unsigned wait_s,
                     char **ret_value, uint64_t *ret_index, struct sh_err *err)
{
    struct sh_http_response r = {0};
    char *ekey, *bp, *path, *value = NULL;
    json_t *root = NULL, *ent, *v;
    json_error_t jerr;
    long timeout;
    int rc = -1;

    if (sh_consul_bad_arg(key, "key", err))
        return -1;
    ekey = sh_consul_escape_key(key);
    bp = sh_consul_blocking_params(wait_index, wait_s, '?', &timeout);
    path = sh_xasprintf("/v1/kv/%s%s", ekey, bp);
    if (sh_consul_call(c, "GET", path, NULL, timeout, NULL, &r, err) < 0)
        goto out;
    if (r.status == 404) {
        if (ret_value)
            *ret_value = NULL;
        if (ret_index)
            *ret_index = sh_consul_index_header(&r);
        rc = 0;
        goto out;
    }
    if (sh_consul_check_status(&r, "kv get", err) < 0)
        goto out;
    root = json_loadb(r.body, r.body_len, 0, &jerr);
    ent = json_array_get(root, 0);
    v = json_object_get(ent, "Value");
    if (!json_is_object(ent) || !(json_is_null(v) || json_is_string(v))) {
        sh_err_set(err, SH_EPROTO, "consul kv get %s: unexpected answer", key);
        goto out;
    }
    if (json_is_null(v))
        value = sh_xstrdup("");
    else if (!(value = base64_decode(json_string_value(v), NULL))) {
        sh_err_set(err, SH_EPROTO, "consul kv get %s: Value is not base64", key);
        goto out;
    }
    if (ret_index) {
        json_t *mi = json_object_get(ent, "ModifyIndex");
        *ret_index =
            json_is_integer(mi) ? (uint64_t)json_integer_value(mi) : sh_consul_index_header(&r);
    }
    if (ret_value) {
        *ret_value = value;
        value = NULL;
    }
    rc = 1;
out:
    json_decref(root);
    sh_http_response_done(&r);
    free(value);
    free(ekey);
    free(bp);
    free(path);
    return rc;
}

/* PUT /v1/kv/<key><query> with value as body; returns 1 (true), 0 (false) or -1. */
static int kv_put_query(struct sh_consul *c, const char *key, const char *query, const char *value,
                        const char *what, struct sh_err *err)
{
    struct sh_http_response r = {0};
    struct sh_http_client_opts o = {0};
    const char *hdrs[2] = {c->token_header, NULL};
    char *ekey, *path, *url;
    int rc = -1;

    if (sh_consul_bad_arg(key, "key", err))
        return -1;
    ekey = sh_consul_escape_key(key);
    path = sh_xasprintf("/v1/kv/%s%s", ekey, query);
    url = sh_xasprintf("%s%s", c->base, path);

    /* Not sh_consul_call(): the value is opaque bytes, not JSON. */
    o.connect_timeout_ms = CONSUL_CONNECT_MS;
    o.timeout_ms = CONSUL_TIMEOUT_MS;
    o.max_response = CONSUL_MAX_RESPONSE;
    o.user_agent = "scrapr-consul";
    value = value ? value : "";
    if (sh_http_request(&o, "PUT", url, hdrs, value, strlen(value), &r, err) < 0)
        sh_err_prefix(err, "consul %s %s", what, key);
    else if (sh_consul_check_status(&r, what, err) == 0)
        rc = sh_consul_bool_body(&r, what, err);
    sh_http_response_done(&r);
    free(ekey);
    free(path);
    free(url);
    return rc;
}

int sh_consul_kv_put(struct sh_consul *c, const char *key, const char *value, struct sh_err *err)
{
    int rc = kv_put_query(c, key, "", value, "kv put", err);

    if (rc == 0)
        sh_err_set(err, SH_EUPSTREAM, "consul kv put %s: refused", key);
    return rc == 1 ? 0 : -1;
}

int sh_consul_kv_cas(struct sh_consul *c, const char *key, const char *value, uint64_t cas_index,
                     struct sh_err *err)
{
    char q[32];

    (void)snprintf(q, sizeof(q), "?cas=%" PRIu64, cas_index);
    return kv_put_query(c, key, q, value, "kv cas", err);
}

int sh_consul_kv_incr(struct sh_consul *c, const char *key, uint64_t *ret_value, struct sh_err *err)
{
    for (int i = 0; i < INCR_MAX_ATTEMPTS; i++) {
        char *v = NULL, *end, next[24];
        uint64_t idx = 0;
        unsigned long long cur = 0;
        int found = sh_consul_kv_get(c, key, 0, 0, &v, &idx, err), rc;

        if (found < 0)
            return -1;
        if (found == 1 && *v) {
            errno = 0;
            cur = strtoull(v, &end, 10);
            if (errno || *end || v[0] == '-') {
                sh_err_set(err, SH_EPROTO, "consul kv incr %s: \"%.40s\" is not a counter", key, v);
                free(v);
                return -1;
            }
        }
        free(v);
        (void)snprintf(next, sizeof(next), "%llu", cur + 1);
        rc = sh_consul_kv_cas(c, key, next, found == 1 ? idx : 0, err);
        if (rc < 0)
            return -1;
        if (rc == 1) {
            if (ret_value)
                *ret_value = (uint64_t)cur + 1;
            return 0;
        }
    }
    sh_err_set(err, SH_ECONFLICT, "consul kv incr %s: lost %d CAS races", key, INCR_MAX_ATTEMPTS);
    return -1;
}

int sh_consul_kv_delete(struct sh_consul *c, const char *key, struct sh_err *err)
{
    struct sh_http_response r = {0};
    char *ekey, *path;
    int rc = -1;

    if (sh_consul_bad_arg(key, "key", err))
        return -1;
    ekey = sh_consul_escape_key(key);
    path = sh_xasprintf("/v1/kv/%s", ekey);
    if (sh_consul_call(c, "DELETE", path, NULL, 0, NULL, &r, err) == 0)
        rc = sh_consul_check_status(&r, "kv delete", err);
    sh_http_response_done(&r);
    free(ekey);
    free(path);
    return rc;
}

int sh_consul_session_create(struct sh_consul *c, const char *name, const char *ttl,
                             const char *lock_delay, const char *behavior, char **ret_id,
                             struct sh_err *err)
{
    struct sh_http_response r = {0};
    json_t *body = json_object(), *root = NULL;
    const char *id;
    char *js;
    int rc = -1;

    if (name)
        json_object_set_new(body, "Name", json_string(name));
    if (ttl)
        json_object_set_new(body, "TTL", json_string(ttl));
    if (lock_delay)
        json_object_set_new(body, "LockDelay", json_string(lock_delay));
    if (behavior)
        json_object_set_new(body, "Behavior", json_string(behavior));
    js = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    if (!js) {
        sh_err_set(err, SH_ECONFIG, "consul session create: fields are not valid UTF-8");
        return -1;
    }
    if (sh_consul_call(c, "PUT", "/v1/session/create", js, 0, NULL, &r, err) < 0 ||
        sh_consul_check_status(&r, "session create", err) < 0)
        goto out;
    root = json_loadb(r.body, r.body_len, 0, NULL);
    if (!(id = json_string_value(json_object_get(root, "ID")))) {
        sh_err_set(err, SH_EPROTO, "consul session create: no ID in answer");
        goto out;
    }
    *ret_id = sh_xstrdup(id);
    rc = 0;
out:
    json_decref(root);
    sh_http_response_done(&r);
    free(js);
    return rc;
}

static int session_op(struct sh_consul *c, const char *op, const char *id, struct sh_err *err)
{
    struct sh_http_response r = {0};
    char *eid, *path;
    int rc = -1;

    if (sh_consul_bad_arg(id, "session id", err))
        return -1;
    eid = sh_url_escape(id);
    path = sh_xasprintf("/v1/session/%s/%s", op, eid);
    if (sh_consul_call(c, "PUT", path, NULL, 0, NULL, &r, err) == 0 &&
        sh_consul_check_status(&r, op, err) == 0) {
        /* Renewing an expired session answers 404 (handled above) or an empty array. */
        if (strcmp(op, "renew") == 0 && r.body && strncmp(r.body, "[]", 2) == 0)
            sh_err_set(err, SH_ENOTFOUND, "consul session renew: session %s is gone", id);
        else
            rc = 0;
    }
    sh_http_response_done(&r);
    free(eid);
    free(path);
    return rc;
}

int sh_consul_session_renew(struct sh_consul *c, const char *id, struct sh_err *err)
{
    return session_op(c, "renew", id, err);
}

int sh_consul_session_destroy(struct sh_consul *c, const char *id, struct sh_err *err)
{
    return session_op(c, "destroy", id, err);
}

int sh_consul_lock_acquire(struct sh_consul *c, const char *key, const char *session,
                           const char *value, struct sh_err *err)
{
    char *es, *q;
    int rc;

    if (sh_consul_bad_arg(session, "session", err))
        return -1;
    es = sh_url_escape(session);
    q = sh_xasprintf("?acquire=%s", es);
    rc = kv_put_query(c, key, q, value, "lock acquire", err);
    free(es);
    free(q);
    return rc;
}

int sh_consul_lock_release(struct sh_consul *c, const char *key, const char *session,
                           struct sh_err *err)
{
    char *es, *q;
    int rc;

    if (sh_consul_bad_arg(session, "session", err))
        return -1;
    es = sh_url_escape(session);
    q = sh_xasprintf("?release=%s", es);
    rc = kv_put_query(c, key, q, NULL, "lock release", err);
    free(es);
    free(q);
    if (rc == 0)
        sh_err_set(err, SH_ECONFLICT, "consul lock release %s: not held by this session", key);
    return rc == 1 ? 0 : -1;
}
