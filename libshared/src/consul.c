/* Consul HTTP API client (see shared/consul.h): the request plumbing shared
 * with consul_kv.c, agent service registration and health lookups.
 *
 * Every call is one independent HTTP request through sh_http_request, so a
 * struct sh_consul is immutable after sh_consul_new and may be shared by any
 * number of threads. Non-2xx answers become SH_EUPSTREAM (404 on KV = absent).
 * KV/sessions/locks live in consul_kv.c, the discovery cache in
 * consul_discovery.c. */
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

#define CONSUL_MAX_WAIT_S 600u

struct sh_consul *sh_consul_new(const char *addr, const char *token, struct sh_err *err)
{
    struct sh_consul *c;
    size_t n;

    if (!addr || !*addr) {
        sh_err_set(err, SH_ECONFIG, "consul address is empty");
        return NULL;
    }
    if (strncmp(addr, "unix://", 7) == 0) {
        sh_err_set(err, SH_ECONFIG, "consul address %s: unix sockets are not supported", addr);
        return NULL;
    }
    if (token && strpbrk(token, "\r\n")) {
        sh_err_set(err, SH_ECONFIG, "consul token contains CR/LF");
        return NULL;
    }
    if (strchr(addr, ' ') || strchr(addr, '\n') || strchr(addr, '\r')) {
        sh_err_set(err, SH_ECONFIG, "consul address \"%s\" is malformed", addr);
        return NULL;
    }
    c = sh_xcalloc(1, sizeof(*c));
    if (strncmp(addr, "http://", 7) == 0 || strncmp(addr, "https://", 8) == 0)
        c->base = sh_xstrdup(addr);
    else
        c->base = sh_xasprintf("http://%s", addr);
    n = strlen(c->base);
    while (n > 0 && c->base[n - 1] == '/')
        c->base[--n] = '\0';
    if (token && *token)
        c->token_header = sh_xasprintf("X-Consul-Token: %s", token);
    return c;
}

void sh_consul_free(struct sh_consul *c)
{
    if (!c)
        return;
    free(c->base);
    free(c->token_header);
    free(c);
}

/* One request to the agent. path starts with "/v1/". Returns 0 with *ret filled
 * (any status), -1 on transport failure. */
int sh_consul_call(struct sh_consul *c, const char *method, const char *path, const char *body,
                   long timeout_ms, const int *cancel, struct sh_http_response *ret,
                   struct sh_err *err)
{
    const char *hdrs[3] = {NULL, NULL, NULL};
    struct sh_http_client_opts o = {0};
    char *url = sh_xasprintf("%s%s", c->base, path);
    int rc, n = 0;

    if (c->token_header)
        hdrs[n++] = c->token_header;
    if (body)
        hdrs[n++] = "Content-Type: application/json";
    o.connect_timeout_ms = CONSUL_CONNECT_MS;
    o.timeout_ms = timeout_ms > 0 ? timeout_ms : CONSUL_TIMEOUT_MS;
    o.max_response = CONSUL_MAX_RESPONSE;
    o.cancel = cancel;
    o.user_agent = "scrapr-consul";
    rc = sh_http_request(&o, method, url, hdrs, body, body ? strlen(body) : 0, ret, err);
    free(url);
    if (rc < 0)
        sh_err_prefix(err, "consul");
    return rc;
}

/* Turns a non-2xx answer into SH_EUPSTREAM (or SH_ENOTFOUND for 404); 0 for 2xx. */
int sh_consul_check_status(const struct sh_http_response *r, const char *what, struct sh_err *err)
{
    int len;

    if (r->status >= 200 && r->status < 300)
        return 0;
    len = r->body_len > 200 ? 200 : (int)r->body_len;
    sh_err_set(err, r->status == 404 ? SH_ENOTFOUND : SH_EUPSTREAM, "consul %s: HTTP %ld: %.*s",
               what, r->status, len, r->body ? r->body : "");
    return -1;
}

/* Checks the body is the JSON literal true/false; returns 1, 0, or -1. */
int sh_consul_bool_body(const struct sh_http_response *r, const char *what, struct sh_err *err)
{
    const char *b = r->body ? r->body : "";

    while (*b == ' ' || *b == '\n' || *b == '\r' || *b == '\t')
        b++;
    if (strncmp(b, "true", 4) == 0)
        return 1;
    if (strncmp(b, "false", 5) == 0)
        return 0;
    sh_err_set(err, SH_EPROTO, "consul %s: expected true/false, got \"%.40s\"", what, b);
    return -1;
}

uint64_t sh_consul_index_header(const struct sh_http_response *r)
{
    char *v = sh_http_response_header(r, "X-Consul-Index"), *end;
    unsigned long long x = 0;

    if (v) {
        errno = 0;
        x = strtoull(v, &end, 10);
        if (errno || end == v || *end)
            x = 0;
        free(v);
    }
    return (uint64_t)x;
}

/* Guards against NULL/empty names: a clear SH_ECONFIG instead of a crash. */
int sh_consul_bad_arg(const char *v, const char *what, struct sh_err *err)
{
    if (v && *v)
        return 0;
    sh_err_set(err, SH_ECONFIG, "consul: %s is required", what);
    return 1;
}

/* Escapes each path segment of a KV key, keeping the '/' separators. */
char *sh_consul_escape_key(const char *key)
{
    char *out = sh_xstrdup(""), *seg, *esc, *tmp;
    const char *p = key;

    for (;;) {
        const char *slash = strchr(p, '/');
        size_t n = slash ? (size_t)(slash - p) : strlen(p);
        seg = sh_xstrndup(p, n);
        esc = sh_url_escape(seg);
        tmp = sh_xasprintf("%s%s%s", out, esc, slash ? "/" : "");
        free(out);
        free(seg);
        free(esc);
        out = tmp;
        if (!slash)
            break;
        p = slash + 1;
    }
    return out;
}

/* Blocking query parameters and the matching client timeout (Consul adds up to wait/16 jitter). */
char *sh_consul_blocking_params(uint64_t wait_index, unsigned wait_s, char sep, long *ret_timeout)
{
    unsigned w = wait_s ? wait_s : 300;

    if (w > CONSUL_MAX_WAIT_S)
        w = CONSUL_MAX_WAIT_S;
    if (!wait_index) {
        *ret_timeout = CONSUL_TIMEOUT_MS;
        return sh_xstrdup("");
    }
    *ret_timeout = ((long)w + (long)w / 16 + 5) * 1000L;
    return sh_xasprintf("%cindex=%" PRIu64 "&wait=%us", sep, wait_index, w);
}

int sh_consul_register(struct sh_consul *c, const struct sh_consul_service *s, struct sh_err *err)
{
    struct sh_http_response r = {0};
    json_t *body, *tags;
    char *js;
    int rc = -1;

    if (!s || !s->name || !s->id || s->port == 0 || s->port > 65535) {
        sh_err_set(err, SH_ECONFIG, "consul register: name, id and a port 1..65535 are required");
        return -1;
    }
    body = json_object();
    json_object_set_new(body, "ID", json_string(s->id));
    json_object_set_new(body, "Name", json_string(s->name));
    if (s->address && *s->address)
        json_object_set_new(body, "Address", json_string(s->address));
    json_object_set_new(body, "Port", json_integer(s->port));
    tags = json_array();
    for (size_t i = 0; s->tags && s->tags[i]; i++)
        json_array_append_new(tags, json_string(s->tags[i]));
    json_object_set_new(body, "Tags", tags);
    if (s->check_path) {
        const char *interval = s->check_interval ? s->check_interval : "2s";
        const char *addr = s->address && *s->address ? s->address : "127.0.0.1";
        int v6 = strchr(addr, ':') != NULL;
        char *url = sh_xasprintf("http://%s%s%s:%u%s%s", v6 ? "[" : "", addr, v6 ? "]" : "",
                                 s->port, s->check_path[0] == '/' ? "" : "/", s->check_path);
        json_t *chk = json_object();
        json_object_set_new(chk, "HTTP", json_string(url));
        json_object_set_new(chk, "Interval", json_string(interval));
        json_object_set_new(chk, "Timeout", json_string(interval));
        json_object_set_new(chk, "DeregisterCriticalServiceAfter",
                            json_string(s->deregister_after ? s->deregister_after : "1m"));
        json_object_set_new(body, "Check", chk);
        free(url);
    }
    js = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    if (!js) {
        sh_err_set(err, SH_ECONFIG, "consul register: service fields are not valid UTF-8");
        return -1;
    }
    if (sh_consul_call(c, "PUT", "/v1/agent/service/register", js, 0, NULL, &r, err) == 0)
        rc = sh_consul_check_status(&r, "register", err);
    free(js);
    sh_http_response_done(&r);
    return rc;
}

int sh_consul_deregister(struct sh_consul *c, const char *service_id, struct sh_err *err)
{
    struct sh_http_response r = {0};
    char *id, *path;
    int rc = -1;

    if (sh_consul_bad_arg(service_id, "service id", err))
        return -1;
    id = sh_url_escape(service_id);
    path = sh_xasprintf("/v1/agent/service/deregister/%s", id);
    if (sh_consul_call(c, "PUT", path, NULL, 0, NULL, &r, err) == 0)
        rc = sh_consul_check_status(&r, "deregister", err);
    free(id);
    free(path);
    sh_http_response_done(&r);
    return rc;
}

int sh_consul_service_registered(struct sh_consul *c, const char *service_id, struct sh_err *err)
{
    struct sh_http_response r = {0};
    char *id, *path;
    int rc = -1;

    if (sh_consul_bad_arg(service_id, "service id", err))
        return -1;
    id = sh_url_escape(service_id);
    path = sh_xasprintf("/v1/agent/service/%s", id);
    if (sh_consul_call(c, "GET", path, NULL, 0, NULL, &r, err) == 0) {
        if (r.status == 404)
            rc = 0;
        else if (sh_consul_check_status(&r, "service lookup", err) == 0)
            rc = 1;
    }
    free(id);
    free(path);
    sh_http_response_done(&r);
    return rc;
}

void sh_consul_instances_done(struct sh_consul_instances *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->n; i++) {
        free(r->v[i].id);
        free(r->v[i].address);
        for (size_t k = 0; r->v[i].tags && r->v[i].tags[k]; k++)
            free(r->v[i].tags[k]);
        free(r->v[i].tags);
    }
    free(r->v);
    memset(r, 0, sizeof(*r));
}

/* Fills one instance from a /v1/health/service entry; 0 or -1 when malformed. */
static int parse_instance(json_t *entry, struct sh_consul_instance *in)
{
    json_t *svc = json_object_get(entry, "Service"), *node = json_object_get(entry, "Node");
    const char *id = json_string_value(json_object_get(svc, "ID"));
    const char *addr = json_string_value(json_object_get(svc, "Address"));
    json_t *port = json_object_get(svc, "Port"), *tags = json_object_get(svc, "Tags"), *t;
    size_t i, k = 0;

    if (!addr || !*addr)
        addr = json_string_value(json_object_get(node, "Address"));
    if (!id || !addr || !json_is_integer(port) || json_integer_value(port) < 0 ||
        json_integer_value(port) > 65535)
        return -1;
    in->id = sh_xstrdup(id);
    in->address = sh_xstrdup(addr);
    in->port = (unsigned)json_integer_value(port);
    in->tags = sh_xcalloc(json_array_size(tags) + 1, sizeof(char *));
    json_array_foreach(tags, i, t)
    {
        if (json_is_string(t))
            in->tags[k++] = sh_xstrdup(json_string_value(t));
    }
    return 0;
}

int sh_consul_health_service_cancellable(struct sh_consul *c, const char *name, const char *tag,
                                         uint64_t wait_index, unsigned wait_s, const int *cancel,
                                         struct sh_consul_instances *ret, struct sh_err *err)
{
    struct sh_http_response r = {0};
    struct sh_consul_instances out = {0};
    char *ename, *etag, *bp, *path;
    json_t *root = NULL, *e;
    json_error_t jerr;
    long timeout;
    size_t i;
    int rc = -1;

    if (sh_consul_bad_arg(name, "service name", err))
        return -1;
    ename = sh_url_escape(name);
    etag = tag && *tag ? sh_url_escape(tag) : NULL;
    bp = sh_consul_blocking_params(wait_index, wait_s, '&', &timeout);
    path = sh_xasprintf("/v1/health/service/%s?passing=1%s%s%s", ename, etag ? "&tag=" : "",
                        etag ? etag : "", bp);
    if (sh_consul_call(c, "GET", path, NULL, timeout, cancel, &r, err) < 0 ||
        sh_consul_check_status(&r, "health/service", err) < 0)
        goto out;
    root = json_loadb(r.body, r.body_len, 0, &jerr);
    if (!json_is_array(root)) {
        sh_err_set(err, SH_EPROTO, "consul health/service: not a JSON array: %s", jerr.text);
        goto out;
    }
    out.v = sh_xcalloc(json_array_size(root) + 1, sizeof(*out.v));
    json_array_foreach(root, i, e)
    {
        if (parse_instance(e, &out.v[out.n]) == 0)
            out.n++;
    }
    out.index = sh_consul_index_header(&r);
    *ret = out;
    rc = 0;
out:
    json_decref(root);
    sh_http_response_done(&r);
    free(ename);
    free(etag);
    free(bp);
    free(path);
    return rc;
}

int sh_consul_health_service(struct sh_consul *c, const char *name, const char *tag,
                             uint64_t wait_index, unsigned wait_s, struct sh_consul_instances *ret,
                             struct sh_err *err)
{
    return sh_consul_health_service_cancellable(c, name, tag, wait_index, wait_s, NULL, ret, err);
}
