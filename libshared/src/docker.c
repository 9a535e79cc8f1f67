/* Docker Engine API client (see shared/docker.h).
 *
 * Hand-written over libcurl rather than over shared/http_client.h because the
 * engine needs two things that client does not give: a response streamed
 * object by object (GET /events never ends) and one kept-alive connection
 * reused across the many small calls of a reconcile pass.
 *
 * Threading: plain requests borrow a curl handle from a small pool under
 * `d->lock` (a returned handle keeps its connection for the next call), so
 * calls from several threads run in parallel; sh_docker_events() owns a
 * separate handle for the duration of the stream. Nothing here logs: errors
 * go to sh_err. */
#include "shared/docker.h"

#include <curl/curl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "shared/buf.h"
#include "shared/xalloc.h"

#define DOCKER_MAX_RESPONSE (64u << 20)
#define DOCKER_MAX_EVENT (1u << 20)
#define DOCKER_CONNECT_TIMEOUT_MS 5000L
#define DOCKER_DEFAULT_TIMEOUT_MS 60000L
#define DOCKER_POOL 8

struct sh_docker {
    char *socket_path; /* unix transport, or NULL */
    char *base;        /* "http://localhost/v1.41" or "https://host:port/v1.41" */
    char *endpoint;    /* for messages */
    char *ca, *cert, *key;
    pthread_mutex_t lock;
    CURL *pool[DOCKER_POOL]; /* idle handles */
    int npool;
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc = CURLE_OK;

static void curl_init_once(void)
{
    curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

struct sh_docker *sh_docker_new(const char *host, struct sh_err *err)
{
    struct sh_docker *d;
    const char *tls = NULL, *certs = NULL;

    (void)pthread_once(&curl_once, curl_init_once);
    if (curl_init_rc != CURLE_OK) {
        sh_err_set(err, SH_EIO, "curl_global_init: %s", curl_easy_strerror(curl_init_rc));
        return NULL;
    }
    if (!host) {
        host = getenv("DOCKER_HOST");
        tls = getenv("DOCKER_TLS_VERIFY");
        certs = getenv("DOCKER_CERT_PATH");
    }
    if (!host || !*host)
        host = "unix:///var/run/docker.sock";

    d = sh_xcalloc(1, sizeof(*d));
    if (strncmp(host, "unix://", 7) == 0) {
        if (host[7] != '/') {
            sh_err_set(err, SH_ECONFIG, "DOCKER_HOST: unix socket path must be absolute: %s", host);
            free(d);
            return NULL;
        }
        d->socket_path = sh_xstrdup(host + 7);
        d->base = sh_xstrdup("http://localhost/" SH_DOCKER_API_VERSION);
        d->endpoint = sh_xstrdup(host);
    } else if (strncmp(host, "tcp://", 6) == 0 && host[6]) {
        const char *hp = host + 6;
        size_t n = strcspn(hp, "/");
        int use_tls = tls && *tls && strcmp(tls, "0") != 0;

        if (use_tls) {
            const char *home = getenv("HOME");
            char *dir =
                certs && *certs ? sh_xstrdup(certs) : sh_xasprintf("%s/.docker", home ? home : ".");
            d->ca = sh_xasprintf("%s/ca.pem", dir);
            d->cert = sh_xasprintf("%s/cert.pem", dir);
            d->key = sh_xasprintf("%s/key.pem", dir);
            free(dir);
        }
        d->endpoint = sh_xasprintf("%s://%.*s", use_tls ? "https" : "http", (int)n, hp);
        d->base = sh_xasprintf("%s/" SH_DOCKER_API_VERSION, d->endpoint);
    } else {
        sh_err_set(err, SH_ECONFIG, "DOCKER_HOST: want unix:///path or tcp://host:port, got %s",
                   host);
        free(d);
        return NULL;
    }
    (void)pthread_mutex_init(&d->lock, NULL);
    return d;
}

void sh_docker_free(struct sh_docker *d)
{
    int i;

    if (!d)
        return;
    for (i = 0; i < d->npool; i++)
        curl_easy_cleanup(d->pool[i]);
    if (d->base)
        (void)pthread_mutex_destroy(&d->lock);
    free(d->socket_path);
    free(d->base);
    free(d->endpoint);
    free(d->ca);
    free(d->cert);
    free(d->key);
    free(d);
}

const char *sh_docker_endpoint(const struct sh_docker *d)
{
    return d->endpoint;
}

static CURL *take_handle(struct sh_docker *d)
{
    CURL *e = NULL;

    (void)pthread_mutex_lock(&d->lock);
    if (d->npool > 0)
        e = d->pool[--d->npool];
    (void)pthread_mutex_unlock(&d->lock);
    if (!e)
        e = curl_easy_init();
    else
        curl_easy_reset(e);
    return e;
}

static void give_handle(struct sh_docker *d, CURL *e)
{
    (void)pthread_mutex_lock(&d->lock);
    if (d->npool < DOCKER_POOL) {
        d->pool[d->npool++] = e;
        e = NULL;
    }
    (void)pthread_mutex_unlock(&d->lock);
    if (e)
        curl_easy_cleanup(e);
}

struct sink {
    struct sh_buf buf;
    struct sh_err lerr;
    int overflow;
};

static size_t sink_write(char *ptr, size_t size, size_t nmemb, void *arg)
{
    struct sink *s = arg;
    size_t n = size * nmemb;

    if (sh_buf_append(&s->buf, ptr, n, &s->lerr) < 0) {
        s->overflow = 1;
        return 0; /* aborts the transfer */
    }
    return n;
}

/* Transport options common to both handles. */
static void setup_easy(struct sh_docker *d, CURL *e, char *errbuf)
{
    (void)curl_easy_setopt(e, CURLOPT_ERRORBUFFER, errbuf);
    (void)curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    (void)curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, DOCKER_CONNECT_TIMEOUT_MS);
    (void)curl_easy_setopt(e, CURLOPT_USERAGENT, "scrapr-orchestrator");
    if (d->socket_path)
        (void)curl_easy_setopt(e, CURLOPT_UNIX_SOCKET_PATH, d->socket_path);
    if (d->ca) {
        (void)curl_easy_setopt(e, CURLOPT_CAINFO, d->ca);
        (void)curl_easy_setopt(e, CURLOPT_SSLCERT, d->cert);
        (void)curl_easy_setopt(e, CURLOPT_SSLKEY, d->key);
        (void)curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
        (void)curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
    }
}

/* Turns an error answer into err: the engine's {"message"} when present. */
static void set_http_error(struct sh_err *err, const char *method, const char *path, long status,
                           const char *body, size_t len)
{
    json_t *j = len ? json_loadb(body, len, 0, NULL) : NULL;
    const char *msg = json_string_value(json_object_get(j, "message"));
    int code = status == 404 ? SH_ENOTFOUND : status == 409 ? SH_ECONFLICT : SH_EUPSTREAM;

    if (msg)
        sh_err_set(err, code, "docker %s %s: %ld: %s", method, path, status, msg);
    else
        sh_err_set(err, code, "docker %s %s: HTTP %ld: %.200s", method, path, status,
                   len ? body : "(empty body)");
    json_decref(j);
}

int sh_docker_request(struct sh_docker *d, const char *method, const char *path, const json_t *body,
                      long timeout_ms, json_t **ret_body, long *ret_status, struct sh_err *err)
{
    char errbuf[CURL_ERROR_SIZE] = "";
    struct curl_slist *hdrs = NULL;
    struct sink s;
    char *url = NULL, *payload = NULL;
    long status = 0;
    CURLcode rc;
    CURL *e;
    int ret = -1;

    sh_buf_init(&s.buf, DOCKER_MAX_RESPONSE);
    sh_err_clear(&s.lerr);
    s.overflow = 0;
    url = sh_xasprintf("%s%s", d->base, path);
    if (body) {
        payload = json_dumps(body, JSON_COMPACT);
        if (!payload) {
            sh_err_set(err, SH_ECONFIG, "docker %s %s: request body is not serialisable", method,
                       path);
            goto out;
        }
    }

    e = take_handle(d);
    if (!e) {
        sh_err_set(err, SH_EIO, "curl_easy_init failed");
        goto out;
    }
    setup_easy(d, e, errbuf);
    (void)curl_easy_setopt(e, CURLOPT_URL, url);
    (void)curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
    (void)curl_easy_setopt(e, CURLOPT_TIMEOUT_MS,
                           timeout_ms > 0 ? timeout_ms : DOCKER_DEFAULT_TIMEOUT_MS);
    (void)curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, sink_write);
    (void)curl_easy_setopt(e, CURLOPT_WRITEDATA, &s);
    if (payload) {
        hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
        (void)curl_easy_setopt(e, CURLOPT_POSTFIELDS, payload);
        (void)curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, (long)strlen(payload));
    } else if (strcmp(method, "POST") == 0) {
        (void)curl_easy_setopt(e, CURLOPT_POSTFIELDS, "");
        (void)curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, 0L);
    }
    (void)curl_easy_setopt(e, CURLOPT_HTTPHEADER, hdrs);
    rc = curl_easy_perform(e);
    if (rc == CURLE_OK)
        (void)curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
    /* The pooled handle must not keep pointers into this frame. */
    (void)curl_easy_setopt(e, CURLOPT_HTTPHEADER, NULL);
    (void)curl_easy_setopt(e, CURLOPT_ERRORBUFFER, NULL);
    (void)curl_easy_setopt(e, CURLOPT_POSTFIELDS, NULL);
    give_handle(d, e);

    if (s.overflow) {
        sh_err_set(err, SH_ELIMIT, "docker %s %s: response larger than %u bytes", method, path,
                   DOCKER_MAX_RESPONSE);
        goto out;
    }
    if (rc != CURLE_OK) {
        sh_err_set(err, rc == CURLE_OPERATION_TIMEDOUT ? SH_ETIMEOUT : SH_EUPSTREAM,
                   "docker %s %s (%s): %s", method, path, d->endpoint,
                   errbuf[0] ? errbuf : curl_easy_strerror(rc));
        goto out;
    }
    if (ret_status)
        *ret_status = status;
    if (status < 200 || (status >= 300 && status != 304)) {
        set_http_error(err, method, path, status, s.buf.data ? s.buf.data : "", s.buf.len);
        goto out;
    }
    if (ret_body) {
        json_t *j = NULL;
        if (s.buf.len) {
            json_error_t jerr;
            j = json_loadb(s.buf.data, s.buf.len, 0, &jerr);
            if (!j) {
                sh_err_set(err, SH_EPROTO, "docker %s %s: bad JSON answer: %s", method, path,
                           jerr.text);
                goto out;
            }
        }
        *ret_body = j;
    }
    ret = 0;
out:
    curl_slist_free_all(hdrs);
    free(payload);
    free(url);
    sh_buf_done(&s.buf);
    return ret;
}

/* "?filters=<urlencoded json>" or "" ; caller frees. */
static char *filters_query(const json_t *filters, char sep)
{
    char *dump, *esc, *q;

    if (!filters)
        return sh_xstrdup("");
    dump = json_dumps(filters, JSON_COMPACT);
    if (!dump)
        return sh_xstrdup("");
    esc = curl_escape(dump, 0);
    q = sh_xasprintf("%cfilters=%s", sep, esc ? esc : "");
    curl_free(esc);
    free(dump);
    return q;
}

/* Escapes an id/name for a path segment; caller frees with free(). */
static char *seg(const char *s)
{
    char *e = curl_escape(s, 0);
    char *r = sh_xstrdup(e ? e : "");
    curl_free(e);
    return r;
}

int sh_docker_ping(struct sh_docker *d, struct sh_err *err)
{
    char errbuf[CURL_ERROR_SIZE] = "";
    struct sink s;
    char *url = sh_xasprintf("%s/_ping", d->base);
    long status = 0;
    CURL *e = curl_easy_init();
    CURLcode rc;
    int ret = -1;

    /* /_ping answers text/plain "OK", so it does not go through the JSON path. */
    sh_buf_init(&s.buf, 4096);
    s.overflow = 0;
    if (!e) {
        sh_err_set(err, SH_EIO, "curl_easy_init failed");
        goto out;
    }
    setup_easy(d, e, errbuf);
    (void)curl_easy_setopt(e, CURLOPT_URL, url);
    (void)curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, 5000L);
    (void)curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, sink_write);
    (void)curl_easy_setopt(e, CURLOPT_WRITEDATA, &s);
    rc = curl_easy_perform(e);
    if (rc != CURLE_OK) {
        sh_err_set(err, rc == CURLE_OPERATION_TIMEDOUT ? SH_ETIMEOUT : SH_EUPSTREAM,
                   "docker ping (%s): %s", d->endpoint,
                   errbuf[0] ? errbuf : curl_easy_strerror(rc));
        goto out;
    }
    (void)curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
    if (status != 200) {
        sh_err_set(err, SH_EUPSTREAM, "docker ping (%s): HTTP %ld", d->endpoint, status);
        goto out;
    }
    ret = 0;
out:
    if (e)
        curl_easy_cleanup(e);
    free(url);
    sh_buf_done(&s.buf);
    return ret;
}

int sh_docker_info(struct sh_docker *d, json_t **ret, struct sh_err *err)
{
    return sh_docker_request(d, "GET", "/info", NULL, 0, ret, NULL, err);
}

static int list_call(struct sh_docker *d, const char *path, char sep, const json_t *filters,
                     json_t **ret, struct sh_err *err)
{
    char *q = filters_query(filters, sep);
    char *full = sh_xasprintf("%s%s", path, q);
    json_t *j = NULL;
    int rc = sh_docker_request(d, "GET", full, NULL, 0, &j, NULL, err);

    free(q);
    free(full);
    if (rc < 0)
        return -1;
    if (!json_is_array(j)) {
        json_decref(j);
        sh_err_set(err, SH_EPROTO, "docker GET %s: expected an array", path);
        return -1;
    }
    *ret = j;
    return 0;
}

int sh_docker_containers_list(struct sh_docker *d, const json_t *filters, json_t **ret,
                              struct sh_err *err)
{
    return list_call(d, "/containers/json?all=1", '&', filters, ret, err);
}

/* Pulls "ID"/"Id" out of a create answer. */
static int take_id(json_t *j, const char *what, char **ret_id, struct sh_err *err)
{
    const char *id = json_string_value(json_object_get(j, "Id"));

    if (!id)
        id = json_string_value(json_object_get(j, "ID"));
    if (!id) {
        sh_err_set(err, SH_EPROTO, "docker %s: answer has no Id", what);
        return -1;
    }
    if (ret_id)
        *ret_id = sh_xstrdup(id);
    return 0;
}

int sh_docker_container_create(struct sh_docker *d, const char *name, const json_t *spec,
                               char **ret_id, struct sh_err *err)
{
    char *n = name ? seg(name) : NULL;
    char *path =
        n ? sh_xasprintf("/containers/create?name=%s", n) : sh_xstrdup("/containers/create");
    json_t *j = NULL;
    int rc = sh_docker_request(d, "POST", path, spec, 0, &j, NULL, err);

    if (rc == 0)
        rc = take_id(j, "container create", ret_id, err);
    json_decref(j);
    free(path);
    free(n);
    return rc;
}

static int simple_call(struct sh_docker *d, const char *method, const char *fmt_prefix,
                       const char *id, const char *suffix, long timeout_ms, struct sh_err *err)
{
    char *s = seg(id);
    char *path = sh_xasprintf("%s%s%s", fmt_prefix, s, suffix);
    int rc = sh_docker_request(d, method, path, NULL, timeout_ms, NULL, NULL, err);

    free(path);
    free(s);
    return rc;
}

int sh_docker_container_start(struct sh_docker *d, const char *id, struct sh_err *err)
{
    return simple_call(d, "POST", "/containers/", id, "/start", 0, err);
}

int sh_docker_container_stop(struct sh_docker *d, const char *id, int timeout_s, struct sh_err *err)
{
    char suffix[64];

    if (timeout_s < 0)
        timeout_s = 0;
    (void)snprintf(suffix, sizeof(suffix), "/stop?t=%d", timeout_s);
    return simple_call(d, "POST", "/containers/", id, suffix, (timeout_s + 30) * 1000L, err);
}

int sh_docker_container_remove(struct sh_docker *d, const char *id, int force, struct sh_err *err)
{
    return simple_call(d, "DELETE", "/containers/", id, force ? "?force=1&v=1" : "?v=1", 0, err);
}

int sh_docker_container_inspect(struct sh_docker *d, const char *id, json_t **ret,
                                struct sh_err *err)
{
    char *s = seg(id);
    char *path = sh_xasprintf("/containers/%s/json", s);
    int rc = sh_docker_request(d, "GET", path, NULL, 0, ret, NULL, err);

    free(path);
    free(s);
    return rc;
}

int sh_docker_network_inspect(struct sh_docker *d, const char *name, json_t **ret,
                              struct sh_err *err)
{
    char *s = seg(name);
    char *path = sh_xasprintf("/networks/%s", s);
    int rc = sh_docker_request(d, "GET", path, NULL, 0, ret, NULL, err);

    free(path);
    free(s);
    return rc;
}

int sh_docker_network_ensure(struct sh_docker *d, const char *name, const char *driver,
                             int attachable, const json_t *labels, struct sh_err *err)
{
    struct sh_err lerr;
    json_t *spec, *j = NULL;
    int rc;

    sh_err_clear(&lerr);
    if (sh_docker_network_inspect(d, name, &j, &lerr) == 0) {
        json_decref(j);
        return 0;
    }
    if (lerr.code != SH_ENOTFOUND) {
        if (err)
            *err = lerr;
        return -1;
    }
    spec = json_pack("{s:s, s:s, s:b, s:b}", "Name", name, "Driver", driver, "Attachable",
                     attachable, "CheckDuplicate", 1);
    if (labels)
        (void)json_object_set(spec, "Labels", (json_t *)labels);
    rc = sh_docker_request(d, "POST", "/networks/create", spec, 0, NULL, NULL, err);
    json_decref(spec);
    if (rc < 0) {
        /* Lost a race with another creator: that is fine. */
        if (err && err->code == SH_ECONFLICT)
            return 0;
        return -1;
    }
    return 1;
}

int sh_docker_network_remove(struct sh_docker *d, const char *name, struct sh_err *err)
{
    return simple_call(d, "DELETE", "/networks/", name, "", 0, err);
}

int sh_docker_services_list(struct sh_docker *d, const json_t *filters, json_t **ret,
                            struct sh_err *err)
{
    return list_call(d, "/services", '?', filters, ret, err);
}

int sh_docker_service_inspect(struct sh_docker *d, const char *id, json_t **ret, struct sh_err *err)
{
    char *s = seg(id);
    char *path = sh_xasprintf("/services/%s", s);
    int rc = sh_docker_request(d, "GET", path, NULL, 0, ret, NULL, err);

    free(path);
    free(s);
    return rc;
}

int sh_docker_service_create(struct sh_docker *d, const json_t *spec, char **ret_id,
                             struct sh_err *err)
{
    json_t *j = NULL;
    int rc = sh_docker_request(d, "POST", "/services/create", spec, 0, &j, NULL, err);

    if (rc == 0)
        rc = take_id(j, "service create", ret_id, err);
    json_decref(j);
    return rc;
}

int sh_docker_service_update(struct sh_docker *d, const char *id, uint64_t version,
                             const json_t *spec, struct sh_err *err)
{
    char *s = seg(id);
    char *path = sh_xasprintf("/services/%s/update?version=%llu", s, (unsigned long long)version);
    int rc = sh_docker_request(d, "POST", path, spec, 0, NULL, NULL, err);

    free(path);
    free(s);
    return rc;
}

int sh_docker_service_remove(struct sh_docker *d, const char *id, struct sh_err *err)
{
    return simple_call(d, "DELETE", "/services/", id, "", 0, err);
}

int sh_docker_tasks_list(struct sh_docker *d, const json_t *filters, json_t **ret,
                         struct sh_err *err)
{
    return list_call(d, "/tasks", '?', filters, ret, err);
}

int sh_docker_nodes_list(struct sh_docker *d, const json_t *filters, json_t **ret,
                         struct sh_err *err)
{
    return list_call(d, "/nodes", '?', filters, ret, err);
}

int sh_docker_node_inspect(struct sh_docker *d, const char *id, json_t **ret, struct sh_err *err)
{
    char *s = seg(id);
    char *path = sh_xasprintf("/nodes/%s", s);
    int rc = sh_docker_request(d, "GET", path, NULL, 0, ret, NULL, err);

    free(path);
    free(s);
    return rc;
}

/* ---- events stream ---- */

struct evstream {
    struct sh_buf buf;
    sh_docker_event_fn fn;
    void *arg;
    int stopped;  /* fn asked to stop */
    int overflow; /* one event was larger than the cap */
    int bad;      /* undecodable event */
    char badmsg[160];
    CURL *easy;
};

/* Splits complete lines out of the buffer and hands each decoded object to fn. */
static int ev_drain(struct evstream *es)
{
    size_t start = 0;

    while (start < es->buf.len) {
        char *nl = memchr(es->buf.data + start, '\n', es->buf.len - start);
        size_t n;
        json_t *ev;
        json_error_t jerr;

        if (!nl)
            break;
        n = (size_t)(nl - (es->buf.data + start));
        if (n > 0) {
            ev = json_loadb(es->buf.data + start, n, 0, &jerr);
            if (!ev) {
                es->bad = 1;
                (void)snprintf(es->badmsg, sizeof(es->badmsg), "%s", jerr.text);
                return -1;
            }
            if (es->fn(ev, es->arg) != 0)
                es->stopped = 1;
            json_decref(ev);
            if (es->stopped)
                return -1;
        }
        start += n + 1;
    }
    if (start > 0) {
        memmove(es->buf.data, es->buf.data + start, es->buf.len - start);
        es->buf.len -= start;
        es->buf.data[es->buf.len] = '\0';
    }
    return 0;
}

static size_t ev_write(char *ptr, size_t size, size_t nmemb, void *arg)
{
    struct evstream *es = arg;
    size_t n = size * nmemb;

    long status = 0;

    if (sh_buf_append(&es->buf, ptr, n, NULL) < 0) {
        es->overflow = 1;
        return 0;
    }
    /* An error answer is kept whole for the message, not parsed as events. */
    (void)curl_easy_getinfo(es->easy, CURLINFO_RESPONSE_CODE, &status);
    if (status != 200)
        return n;
    if (ev_drain(es) < 0)
        return 0;
    return n;
}

static int ev_progress(void *arg, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                       curl_off_t ulnow)
{
    struct evstream *es = arg;

    (void)dltotal;
    (void)dlnow;
    (void)ultotal;
    (void)ulnow;
    if (es->fn(NULL, es->arg) != 0) {
        es->stopped = 1;
        return 1;
    }
    return 0;
}

int sh_docker_events(struct sh_docker *d, const json_t *filters, long long since,
                     sh_docker_event_fn fn, void *arg, struct sh_err *err)
{
    char errbuf[CURL_ERROR_SIZE] = "";
    struct evstream es;
    char *q = filters_query(filters, '?');
    char *url;
    long status = 0;
    CURL *e = curl_easy_init();
    CURLcode rc;
    int ret = -1;

    memset(&es, 0, sizeof(es));
    sh_buf_init(&es.buf, DOCKER_MAX_EVENT);
    es.fn = fn;
    es.arg = arg;
    es.easy = e;
    if (since > 0)
        url = sh_xasprintf("%s/events%s%csince=%lld", d->base, q, *q ? '&' : '?', since);
    else
        url = sh_xasprintf("%s/events%s", d->base, q);
    if (!e) {
        sh_err_set(err, SH_EIO, "curl_easy_init failed");
        goto out;
    }
    setup_easy(d, e, errbuf);
    (void)curl_easy_setopt(e, CURLOPT_URL, url);
    (void)curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, ev_write);
    (void)curl_easy_setopt(e, CURLOPT_WRITEDATA, &es);
    (void)curl_easy_setopt(e, CURLOPT_NOPROGRESS, 0L);
    (void)curl_easy_setopt(e, CURLOPT_XFERINFOFUNCTION, ev_progress);
    (void)curl_easy_setopt(e, CURLOPT_XFERINFODATA, &es);
    /* No total timeout (the stream is endless); a dead peer is caught by TCP keepalive. */
    (void)curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    rc = curl_easy_perform(e);
    if (es.stopped) {
        ret = 0;
        goto out;
    }
    if (es.overflow) {
        sh_err_set(err, SH_ELIMIT, "docker events: one event larger than %u bytes",
                   DOCKER_MAX_EVENT);
        goto out;
    }
    if (es.bad) {
        sh_err_set(err, SH_EPROTO, "docker events: bad JSON event: %s", es.badmsg);
        goto out;
    }
    (void)curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
    if (rc != CURLE_OK) {
        sh_err_set(err, SH_EUPSTREAM, "docker events (%s): %s", d->endpoint,
                   errbuf[0] ? errbuf : curl_easy_strerror(rc));
        goto out;
    }
    if (status != 200) {
        set_http_error(err, "GET", "/events", status, es.buf.data ? es.buf.data : "", es.buf.len);
        goto out;
    }
    sh_err_set(err, SH_EUPSTREAM, "docker events: stream ended");
out:
    if (e)
        curl_easy_cleanup(e);
    free(url);
    free(q);
    sh_buf_done(&es.buf);
    return ret;
}
