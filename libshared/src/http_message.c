/* Request accessors and response builders of the HTTP server (see
 * shared/http_server.h). Everything here runs on the MHD thread serving the
 * request; nothing is shared between requests. Strings returned by the
 * accessors belong to MHD or to the request and live until the handler
 * returns. */
#include "http_internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "shared/xalloc.h"

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

char *http_pct_decode(const char *s, size_t n)
{
    char *out = sh_xmalloc(n + 1), *o = out;
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '%') {
            *o++ = s[i];
            continue;
        }
        int hi = i + 2 < n ? hexval(s[i + 1]) : -1;
        int lo = i + 2 < n ? hexval(s[i + 2]) : -1;
        if (hi < 0 || lo < 0 || (hi | lo) == 0) {
            free(out);
            return NULL;
        }
        *o++ = (char)(hi << 4 | lo);
        i += 2;
    }
    *o = '\0';
    return out;
}

int http_utf8_valid(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        size_t n;
        unsigned cp;
        if (*p < 0x80) {
            p++;
            continue;
        }
        if ((*p & 0xE0) == 0xC0) {
            n = 1;
            cp = *p & 0x1F;
        } else if ((*p & 0xF0) == 0xE0) {
            n = 2;
            cp = *p & 0x0F;
        } else if ((*p & 0xF8) == 0xF0) {
            n = 3;
            cp = *p & 0x07;
        } else {
            return 0;
        }
        for (size_t i = 1; i <= n; i++) {
            if ((p[i] & 0xC0) != 0x80)
                return 0;
            cp = cp << 6 | (p[i] & 0x3F);
        }
        /* overlong forms, surrogates, beyond U+10FFFF */
        if ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) ||
            (cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF)
            return 0;
        p += n + 1;
    }
    return 1;
}

const char *sh_http_req_method(const struct sh_http_req *req)
{
    return req->method;
}

const char *sh_http_req_path(const struct sh_http_req *req)
{
    return req->path;
}

const char *sh_http_req_param(const struct sh_http_req *req, size_t i)
{
    return i < req->nparams ? req->params[i] : NULL;
}

const char *sh_http_req_query(const struct sh_http_req *req, const char *name)
{
    return MHD_lookup_connection_value(req->conn, MHD_GET_ARGUMENT_KIND, name);
}

const char *sh_http_req_header(const struct sh_http_req *req, const char *name)
{
    return MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, name);
}

const char *sh_http_req_body(const struct sh_http_req *req, size_t *ret_len)
{
    if (ret_len)
        *ret_len = req->body.len;
    return req->body.data ? req->body.data : "";
}

struct query_iter {
    int (*fn)(const char *key, const char *value, void *arg);
    void *arg;
    int rc;
};

static enum MHD_Result query_iter_cb(void *cls, enum MHD_ValueKind kind, const char *key,
                                     const char *value)
{
    struct query_iter *it = cls;
    (void)kind;
    it->rc = it->fn(key, value ? value : "", it->arg);
    return it->rc ? MHD_NO : MHD_YES;
}

int sh_http_req_query_each(const struct sh_http_req *req,
                           int (*fn)(const char *key, const char *value, void *arg), void *arg)
{
    struct query_iter it = {fn, arg, 0};
    (void)MHD_get_connection_values(req->conn, MHD_GET_ARGUMENT_KIND, query_iter_cb, &it);
    return it.rc;
}

json_t *sh_http_req_json(const struct sh_http_req *req, struct sh_http_resp *resp)
{
    json_error_t jerr;
    json_t *j;
    if (!req->body.len) {
        sh_http_resp_error(resp, 400, NULL, "body is empty: a JSON document is required");
        return NULL;
    }
    j = json_loadb(req->body.data, req->body.len, JSON_DECODE_ANY, &jerr);
    if (!j) {
        json_t *d = json_pack("[{s:i, s:i, s:i, s:s}]", "line", jerr.line, "column", jerr.column,
                              "position", jerr.position, "message", jerr.text);
        sh_http_resp_error(resp, 400, d, "malformed JSON: line %d, column %d: %s", jerr.line,
                           jerr.column, jerr.text);
    }
    return j;
}

static void resp_clear_body(struct sh_http_resp *r)
{
    free(r->body);
    r->body = NULL;
    r->len = 0;
    sh_blob_unref(r->blob);
    r->blob = NULL;
    free(r->content_type);
    r->content_type = NULL;
}

void http_resp_done(struct sh_http_resp *r)
{
    resp_clear_body(r);
    for (size_t i = 0; i < r->nheaders; i++) {
        free(r->headers[i].name);
        free(r->headers[i].value);
    }
    free(r->headers);
    r->headers = NULL;
    r->nheaders = 0;
}

void sh_http_resp_body(struct sh_http_resp *resp, int status, const char *content_type, char *body,
                       size_t len)
{
    resp_clear_body(resp);
    resp->status = status;
    resp->content_type = content_type ? sh_xstrdup(content_type) : NULL;
    resp->body = body;
    resp->len = body ? len : 0;
}

void sh_http_resp_json(struct sh_http_resp *resp, int status, json_t *body)
{
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    if (!text) {
        sh_http_resp_error(resp, 500, NULL, "response could not be encoded as JSON");
        return;
    }
    sh_http_resp_body(resp, status, "application/json", text, strlen(text));
}

void sh_http_resp_error(struct sh_http_resp *resp, int status, json_t *details, const char *fmt,
                        ...)
{
    va_list ap;
    char *msg;
    json_t *j;
    char *text;

    va_start(ap, fmt);
    if (vasprintf(&msg, fmt, ap) < 0)
        msg = NULL;
    va_end(ap);
    if (!details || !json_is_array(details)) {
        json_t *arr = json_array();
        if (details)
            (void)json_array_append_new(arr, details);
        details = arr;
    }
    /* "s?" tolerates a message that is not valid UTF-8: jansson refuses it, we send "". */
    j = json_pack("{s:s?, s:o}", "error", msg ? msg : "error", "details", details);
    if (!j)
        j = json_pack("{s:s, s:[]}", "error", "error (message was not valid UTF-8)", "details");
    free(msg);
    text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (!text)
        text = sh_xstrdup("{\"error\":\"internal error\",\"details\":[]}");
    sh_http_resp_body(resp, status, "application/json", text, strlen(text));
}

void sh_http_resp_blob(struct sh_http_resp *resp, int status, const char *content_type,
                       struct sh_blob *blob)
{
    resp_clear_body(resp);
    resp->status = status;
    resp->content_type = content_type ? sh_xstrdup(content_type) : NULL;
    resp->blob = sh_blob_ref(blob);
}

void sh_http_resp_status(struct sh_http_resp *resp, int status)
{
    resp_clear_body(resp);
    resp->status = status;
}

void sh_http_resp_header(struct sh_http_resp *resp, const char *name, const char *value)
{
    /* A CR or LF would let a handler echoing client text split the response. */
    if (!name || !value || strpbrk(name, "\r\n:") || strpbrk(value, "\r\n") || !*name)
        return;
    for (size_t i = 0; i < resp->nheaders; i++) {
        if (!strcasecmp(resp->headers[i].name, name)) {
            free(resp->headers[i].value);
            resp->headers[i].value = sh_xstrdup(value);
            return;
        }
    }
    resp->headers = sh_xrealloc(resp->headers, (resp->nheaders + 1) * sizeof(*resp->headers));
    resp->headers[resp->nheaders].name = sh_xstrdup(name);
    resp->headers[resp->nheaders].value = sh_xstrdup(value);
    resp->nheaders++;
}
