/* scraprctl commands: one HTTP exchange (or a few, for paging) with
 * config-discovery each, readable output, exit status. Single-threaded. */
#include "scraprctl.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "shared/buf.h"
#include "shared/http_client.h"
#include "shared/xalloc.h"

#define FILE_MAX ((size_t)16 << 20)
#define PAGE 1000

/* One request; 0 with *r filled (any status), -1 after printing why the
 * service could not be reached. */
static int request(const struct ctl *c, const char *method, const char *path, const char *body,
                   struct sh_http_response *r)
{
    struct sh_http_client_opts opts = {
        .timeout_ms = 30000,
        .retries = strcmp(method, "GET") == 0 ? 2 : 0,
        .bearer_token = c->token,
        .user_agent = "scraprctl",
    };
    const char *headers[] = {"Content-Type: application/json", "Accept: application/json", NULL};
    char *url = sh_xasprintf("%s%s", c->url, path);
    struct sh_err err;
    int rc = sh_http_request(&opts, method, url, body ? headers : headers + 1, body,
                             body ? strlen(body) : 0, r, &err);
    if (rc != 0)
        fprintf(stderr, "scraprctl: cannot reach config-discovery at %s: %s\n", c->url, err.msg);
    free(url);
    return rc;
}

/* Prints an error answer: the message, then each problem as "path: message". */
static void print_error(const char *what, const struct sh_http_response *r)
{
    json_t *j = r->body ? json_loads(r->body, 0, NULL) : NULL;
    const char *msg = json_string_value(json_object_get(j, "error"));
    json_t *details = json_object_get(j, "details"), *d;
    size_t i;

    if (msg)
        fprintf(stderr, "scraprctl: %s: %s (HTTP %ld)\n", what, msg, r->status);
    else
        fprintf(stderr, "scraprctl: %s: HTTP %ld %.300s\n", what, r->status,
                r->body ? r->body : "");
    json_array_foreach(details, i, d)
    {
        const char *path = json_string_value(json_object_get(d, "path"));
        const char *m = json_string_value(json_object_get(d, "message"));
        if (path && m) {
            fprintf(stderr, "  %s: %s\n", path, m);
        } else {
            char *s = json_dumps(d, JSON_COMPACT);
            fprintf(stderr, "  %s\n", s ? s : "?");
            free(s);
        }
    }
    if (r->status == 401)
        fprintf(stderr, "  (set SCRAPR_API_TOKEN to the service's token)\n");
    json_decref(j);
}

static json_t *parse_reply(const struct sh_http_response *r)
{
    json_t *j = r->body ? json_loads(r->body, 0, NULL) : NULL;
    if (!j)
        fprintf(stderr, "scraprctl: config-discovery answered something that is not JSON\n");
    return j;
}

/* Reads a whole file ("-" = stdin) up to FILE_MAX; NULL after printing why. */
static char *read_file(const char *file, size_t *ret_len)
{
    FILE *f = strcmp(file, "-") == 0 ? stdin : fopen(file, "rb");
    struct sh_buf b;
    struct sh_err err;
    char chunk[65536];
    size_t n;

    if (!f) {
        fprintf(stderr, "scraprctl: %s: %s\n", file, strerror(errno));
        return NULL;
    }
    sh_buf_init(&b, FILE_MAX);
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
        if (sh_buf_append(&b, chunk, n, &err) != 0) {
            fprintf(stderr, "scraprctl: %s: larger than %zu bytes\n", file, FILE_MAX);
            sh_buf_done(&b);
            if (f != stdin)
                (void)fclose(f);
            return NULL;
        }
    }
    if (ferror(f)) {
        fprintf(stderr, "scraprctl: %s: read error\n", file);
        sh_buf_done(&b);
        if (f != stdin)
            (void)fclose(f);
        return NULL;
    }
    if (f != stdin)
        (void)fclose(f);
    return sh_buf_steal(&b, ret_len);
}

static int apply_one(const struct ctl *c, json_t *config, const char *label)
{
    const char *id = json_string_value(json_object_get(config, "_id"));
    const char *coll = json_string_value(json_object_get(config, "collection"));
    json_t *body = json_deep_copy(config), *out;
    struct sh_http_response r = {0};
    char *path, *text, *what;
    int rc = CTL_FAIL;

    if (id) {
        /* apply changes the configuration, not its bookkeeping: the
         * assignment (container) and version stay as the service has them. */
        (void)json_object_del(body, "version");
        (void)json_object_del(body, "container");
        (void)json_object_del(body, "created_at");
        (void)json_object_del(body, "updated_at");
        char *esc = sh_url_escape(id);
        path = sh_xasprintf("/configurations/%s", esc);
        free(esc);
    } else {
        path = sh_xstrdup("/configurations");
    }
    text = json_dumps(body, JSON_COMPACT);
    what = sh_xasprintf("apply %s", label);
    if (request(c, id ? "PUT" : "POST", path, text, &r) != 0)
        goto out;
    if (r.status != 200 && r.status != 201 && r.status != 202) {
        print_error(what, &r);
        goto out;
    }
    out = parse_reply(&r);
    if (!out)
        goto out;
    id = json_string_value(json_object_get(out, "_id"));
    if (c->json) {
        char *s = json_dumps(out, JSON_INDENT(2));
        printf("%s\n", s);
        free(s);
    } else if (r.status == 200) {
        printf("updated %s (collection %s, version %lld)\n", id ? id : "?", coll ? coll : "?",
               (long long)json_integer_value(json_object_get(out, "version")));
    } else if (r.status == 201) {
        printf("created %s (collection %s)\n", id ? id : "?", coll ? coll : "?");
    } else {
        printf("accepted %s (collection %s; not materialised yet)\n", id ? id : "?",
               coll ? coll : "?");
    }
    json_decref(out);
    rc = CTL_OK;
out:
    sh_http_response_done(&r);
    free(what);
    free(text);
    free(path);
    json_decref(body);
    return rc;
}

int ctl_apply(const struct ctl *c, const char *file)
{
    size_t len = 0, i;
    char *text = read_file(file, &len), label[64];
    json_error_t jerr;
    json_t *doc, *item;
    int rc = CTL_OK;

    if (!text)
        return CTL_FAIL;
    doc = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    free(text);
    if (!doc) {
        fprintf(stderr, "scraprctl: %s:%d:%d: %s\n", strcmp(file, "-") ? file : "<stdin>",
                jerr.line, jerr.column, jerr.text);
        return CTL_FAIL;
    }
    if (json_is_object(doc)) {
        rc = apply_one(c, doc, strcmp(file, "-") ? file : "<stdin>");
    } else if (json_is_array(doc)) {
        json_array_foreach(doc, i, item)
        {
            (void)snprintf(label, sizeof(label), "[%zu]", i);
            if (!json_is_object(item)) {
                fprintf(stderr, "scraprctl: apply %s: not a configuration object\n", label);
                rc = CTL_FAIL;
            } else if (apply_one(c, item, label) != CTL_OK) {
                rc = CTL_FAIL;
            }
        }
    } else {
        fprintf(stderr, "scraprctl: %s: expected a configuration object or an array of them\n",
                file);
        rc = CTL_FAIL;
    }
    json_decref(doc);
    return rc;
}

/* All configurations matching the filters (pages of PAGE), or NULL. */
static json_t *list_all(const struct ctl *c, const char *type, const char *collection)
{
    json_t *all = json_array();
    long skip = 0;

    for (;;) {
        struct sh_buf q;
        struct sh_http_response r = {0};
        json_t *page, *items;
        long total;
        char *esc;

        sh_buf_init(&q, 0);
        (void)sh_buf_appendf(&q, NULL, "/configurations?limit=%d&skip=%ld", PAGE, skip);
        if (type) {
            esc = sh_url_escape(type);
            (void)sh_buf_appendf(&q, NULL, "&type=%s", esc);
            free(esc);
        }
        if (collection) {
            esc = sh_url_escape(collection);
            (void)sh_buf_appendf(&q, NULL, "&collection=%s", esc);
            free(esc);
        }
        if (request(c, "GET", q.data, NULL, &r) != 0) {
            sh_buf_done(&q);
            json_decref(all);
            return NULL;
        }
        sh_buf_done(&q);
        if (r.status != 200) {
            print_error("get", &r);
            sh_http_response_done(&r);
            json_decref(all);
            return NULL;
        }
        page = parse_reply(&r);
        sh_http_response_done(&r);
        items = json_object_get(page, "configurations");
        if (!json_is_array(items)) {
            json_decref(page);
            json_decref(all);
            return NULL;
        }
        (void)json_array_extend(all, items);
        total = (long)json_integer_value(json_object_get(page, "total"));
        skip += (long)json_array_size(items);
        json_decref(page);
        if (json_array_size(items) == 0 || skip >= total)
            return all;
    }
}

static const char *str_or(const json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s ? s : "?";
}

int ctl_get(const struct ctl *c, const char *type, const char *collection, const char *id)
{
    json_t *all, *item;
    size_t i;

    if (id) {
        struct sh_http_response r = {0};
        char *esc = sh_url_escape(id), *path = sh_xasprintf("/configurations/%s", esc);
        json_t *doc;
        int rc = CTL_FAIL;
        free(esc);
        if (request(c, "GET", path, NULL, &r) == 0) {
            if (r.status != 200) {
                print_error("get", &r);
            } else if ((doc = parse_reply(&r)) != NULL) {
                char *s = json_dumps(doc, JSON_INDENT(2));
                printf("%s\n", s);
                free(s);
                json_decref(doc);
                rc = CTL_OK;
            }
        }
        sh_http_response_done(&r);
        free(path);
        return rc;
    }
    all = list_all(c, type, collection);
    if (!all)
        return CTL_FAIL;
    if (c->json) {
        json_t *out = json_pack("{s:O, s:I}", "configurations", all, "total",
                                (json_int_t)json_array_size(all));
        char *s = json_dumps(out, JSON_INDENT(2));
        printf("%s\n", s);
        free(s);
        json_decref(out);
    } else {
        printf("%-24s  %-8s  %-20s  %-20s  %s\n", "ID", "TYPE", "COLLECTION", "CONTAINER",
               "VERSION");
        json_array_foreach(all, i, item)
        {
            const char *cont = json_string_value(json_object_get(item, "container"));
            printf("%-24s  %-8s  %-20s  %-20s  %lld\n", str_or(item, "_id"), str_or(item, "type"),
                   str_or(item, "collection"), cont ? cont : "-",
                   (long long)json_integer_value(json_object_get(item, "version")));
        }
    }
    json_decref(all);
    return CTL_OK;
}

int ctl_delete(const struct ctl *c, const char *id)
{
    struct sh_http_response r = {0};
    char *esc = sh_url_escape(id), *path = sh_xasprintf("/configurations/%s", esc);
    int rc = CTL_FAIL;

    free(esc);
    if (request(c, "DELETE", path, NULL, &r) == 0) {
        if (r.status == 204 || r.status == 200) {
            printf("deleted %s\n", id);
            rc = CTL_OK;
        } else {
            char *what = sh_xasprintf("delete %s", id);
            print_error(what, &r);
            free(what);
        }
    }
    sh_http_response_done(&r);
    free(path);
    return rc;
}

int ctl_endpoints(const struct ctl *c)
{
    json_t *all = list_all(c, "endpoint", NULL), *item, *out;
    size_t i;

    if (!all)
        return CTL_FAIL;
    out = json_object();
    json_array_foreach(all, i, item)
    {
        const char *coll = json_string_value(json_object_get(item, "collection"));
        json_t *url = json_object_get(item, "url");
        if (coll)
            (void)json_object_set_new(out, coll,
                                      json_is_string(url) ? json_copy(url) : json_null());
    }
    if (c->json) {
        char *s = json_dumps(out, JSON_INDENT(2) | JSON_SORT_KEYS);
        printf("%s\n", s);
        free(s);
    } else {
        const char *coll;
        json_t *url;
        printf("%-20s  %s\n", "COLLECTION", "URL");
        json_object_foreach(out, coll, url)
        {
            printf("%-20s  %s\n", coll,
                   json_is_string(url) ? json_string_value(url) : "(not deployed yet)");
        }
    }
    json_decref(out);
    json_decref(all);
    return CTL_OK;
}
