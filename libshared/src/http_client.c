/* HTTP client on the libcurl easy interface (see shared/http_client.h).
 *
 * One call = one blocking request on a fresh easy handle. Keep-alive: the
 * handle takes its connection and DNS caches from a curl share object private
 * to the calling thread, so a thread's successive calls reuse one connection
 * per server. Not one process-wide share: libcurl documents a connection cache
 * used by concurrent threads as unsupported (known bug), and per thread no
 * locking is needed. A thread's share and idle connections are freed when it
 * exits; curl_global_init and the thread key are made once (pthread_once).
 * libcurl closes, never reuses, a connection whose transfer failed (timeout,
 * cancel, body or header limit); a cached connection found dead is replaced,
 * and a request on a reused connection that the server closes before any
 * answer is sent once more on a new connection by libcurl, whatever the method.
 *
 * The response body goes into a bounded sh_buf (SH_ELIMIT past max_response), the
 * header block into another; Content-Type/ETag/Location/Retry-After are picked
 * from the final response's headers. Retries: transport errors and
 * 429/502/503/504 are retried with exponential backoff and full jitter
 * (Retry-After wins when given, both capped at 10 s), only for safe methods
 * unless opts->retry_unsafe. A non-2xx status is a successful call. */
#include "shared/http_client.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <curl/curl.h>

#include "shared/buf.h"
#include "shared/xalloc.h"

#ifndef SCRAPR_VERSION
#define SCRAPR_VERSION "0.1.0"
#endif

#define DEFAULT_CONNECT_MS 2000L
#define DEFAULT_TIMEOUT_MS 10000L
#define DEFAULT_MAX_RESPONSE ((size_t)16 << 20)
#define DEFAULT_MAX_HEADERS ((size_t)64 << 10)
#define DEFAULT_BACKOFF_MS 100L
#define MAX_BACKOFF_MS 10000L
#define MAX_RETRIES 10

static pthread_once_t global_once = PTHREAD_ONCE_INIT;
static CURLcode global_rc = CURLE_OK;
static int share_key_rc = -1;   /* pthread_key_create's result */
static pthread_key_t share_key; /* this thread's CURLSH *, freed at thread exit */

static void share_free(void *sh)
{
    /* No easy handle outlives its call, so the share is never in use here. */
    (void)curl_share_cleanup(sh);
}

static void global_init(void)
{
    global_rc = curl_global_init(CURL_GLOBAL_ALL);
    share_key_rc = pthread_key_create(&share_key, share_free);
}

/* The calling thread's share object (connection + DNS cache), made on first
 * use. Used by this thread only, so it needs no lock callbacks. NULL on
 * allocation failure. */
static CURLSH *thread_share(void)
{
    CURLSH *sh = pthread_getspecific(share_key);

    if (sh)
        return sh;
    if (!(sh = curl_share_init()))
        return NULL;
    if (curl_share_setopt(sh, CURLSHOPT_SHARE, CURL_LOCK_DATA_CONNECT) != CURLSHE_OK ||
        curl_share_setopt(sh, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS) != CURLSHE_OK ||
        pthread_setspecific(share_key, sh) != 0) {
        (void)curl_share_cleanup(sh);
        return NULL;
    }
    return sh;
}

/* Per-attempt transfer state shared with the callbacks. */
struct xfer {
    struct sh_buf body;
    struct sh_buf hdrs;
    int body_toobig;
    int hdrs_toobig;
    const int *cancel;
};

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    struct xfer *x = userdata;
    size_t n = size * nmemb;

    if (sh_buf_append(&x->body, ptr, n, NULL) < 0) {
        x->body_toobig = 1;
        return 0; /* CURLE_WRITE_ERROR */
    }
    return n;
}

static size_t on_header(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    struct xfer *x = userdata;
    size_t n = size * nmemb;

    /* A new status line starts a new response (redirect, 100 Continue): keep only the last. */
    if (n >= 5 && strncmp(ptr, "HTTP/", 5) == 0)
        sh_buf_reset(&x->hdrs);
    if (sh_buf_append(&x->hdrs, ptr, n, NULL) < 0) {
        x->hdrs_toobig = 1;
        return 0;
    }
    return n;
}

static int on_progress(void *userdata, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                       curl_off_t ulnow)
{
    const struct xfer *x = userdata;

    (void)dltotal, (void)dlnow, (void)ultotal, (void)ulnow;
    return x->cancel && __atomic_load_n(x->cancel, __ATOMIC_SEQ_CST) ? 1 : 0;
}

/* Idle keep-alive sockets outlive the call: keep them out of exec'd children. */
static int on_socket(void *userdata, curl_socket_t fd, curlsocktype purpose)
{
    int flags = fcntl(fd, F_GETFD);

    (void)userdata, (void)purpose;
    if (flags < 0 || fcntl(fd, F_SETFD, flags | FD_CLOEXEC) < 0)
        return CURL_SOCKOPT_ERROR;
    return CURL_SOCKOPT_OK;
}

/* Finds header `name` in a raw header block; returns a new trimmed string or NULL. */
static char *header_find(const char *block, const char *name)
{
    size_t nlen = strlen(name);
    const char *line = block;

    while (line && *line) {
        const char *eol = strchr(line, '\n');
        size_t llen = eol ? (size_t)(eol - line) : strlen(line);

        if (llen > nlen && strncasecmp(line, name, nlen) == 0 && line[nlen] == ':') {
            const char *v = line + nlen + 1, *end = line + llen;
            while (v < end && (*v == ' ' || *v == '\t'))
                v++;
            while (end > v && isspace((unsigned char)end[-1]))
                end--;
            return sh_xstrndup(v, (size_t)(end - v));
        }
        line = eol ? eol + 1 : NULL;
    }
    return NULL;
}

char *sh_http_response_header(const struct sh_http_response *r, const char *name)
{
    if (!r || !r->headers || !name)
        return NULL;
    return header_find(r->headers, name);
}

void sh_http_response_done(struct sh_http_response *r)
{
    if (!r)
        return;
    free(r->body);
    free(r->content_type);
    free(r->etag);
    free(r->location);
    free(r->retry_after);
    free(r->headers);
    free(r->url);
    memset(r, 0, sizeof(*r));
}

static int method_is_safe(const char *m)
{
    return strcmp(m, "GET") == 0 || strcmp(m, "HEAD") == 0 || strcmp(m, "OPTIONS") == 0;
}

static int status_is_retryable(long s)
{
    return s == 429 || s == 502 || s == 503 || s == 504;
}

/* Transport failures worth another attempt (the server may be back next time). */
static int curl_is_retryable(CURLcode rc)
{
    switch (rc) {
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_CONNECT:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
        return 1;
    default:
        return 0;
    }
}

static int curl_code_to_err(CURLcode rc)
{
    switch (rc) {
    case CURLE_OPERATION_TIMEDOUT:
        return SH_ETIMEOUT;
    case CURLE_URL_MALFORMAT:
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_BAD_FUNCTION_ARGUMENT:
        return SH_ECONFIG;
    case CURLE_TOO_MANY_REDIRECTS:
        return SH_ELIMIT;
    case CURLE_ABORTED_BY_CALLBACK:
        return SH_EIO;
    default:
        return SH_EUPSTREAM;
    }
}

/* Small per-call PRNG for jitter (xorshift64*); seeded from the clock and the thread. */
static uint64_t jitter_next(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 2685821657736338717ULL;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};

    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

/* Sleeps in 50 ms slices so a cancel flag cuts a backoff short; returns 1 when cancelled. */
static int backoff_sleep(long ms, const int *cancel)
{
    while (ms > 0) {
        long step = ms < 50 ? ms : 50;
        if (cancel && __atomic_load_n(cancel, __ATOMIC_SEQ_CST))
            return 1;
        sleep_ms(step);
        ms -= step;
    }
    return cancel && __atomic_load_n(cancel, __ATOMIC_SEQ_CST);
}

/* Retry-After: delta-seconds or an HTTP date; -1 when unusable. */
static long retry_after_ms(const char *v)
{
    char *end;
    long long secs;
    time_t when;

    if (!v || !*v)
        return -1;
    errno = 0;
    secs = strtoll(v, &end, 10);
    if (end != v && *end == '\0' && errno == 0 && secs >= 0)
        return secs > MAX_BACKOFF_MS / 1000 ? MAX_BACKOFF_MS : (long)secs * 1000;
    when = curl_getdate(v, NULL);
    if (when < 0)
        return -1;
    secs = (long long)(when - time(NULL));
    if (secs <= 0)
        return 0;
    return secs > MAX_BACKOFF_MS / 1000 ? MAX_BACKOFF_MS : (long)secs * 1000;
}

static struct curl_slist *build_headers(const struct sh_http_client_opts *o,
                                        const char *const *headers, int *ok)
{
    struct curl_slist *l = NULL, *t;

    *ok = 1;
    /* No "Expect: 100-continue" round trip on large bodies. */
    if (!(t = curl_slist_append(l, "Expect:")))
        goto fail;
    l = t;
    if (o->bearer_token) {
        char *h = sh_xasprintf("Authorization: Bearer %s", o->bearer_token);
        t = curl_slist_append(l, h);
        free(h);
        if (!t)
            goto fail;
        l = t;
    }
    for (size_t i = 0; headers && headers[i]; i++) {
        if (!(t = curl_slist_append(l, headers[i])))
            goto fail;
        l = t;
    }
    return l;
fail:
    *ok = 0;
    return l;
}

/* Sets every option of one attempt; returns the first failing CURLcode or CURLE_OK. */
static CURLcode setup(CURL *h, CURLSH *share, const struct sh_http_client_opts *o,
                      const char *method, const char *url, struct curl_slist *hl, const char *body,
                      size_t body_len, struct xfer *x, char *errbuf)
{
    CURLcode rc = CURLE_OK;
    const char *ua = o->user_agent ? o->user_agent : "scrapr/" SCRAPR_VERSION;

#define SET(opt, val)                                                                              \
    do {                                                                                           \
        if (rc == CURLE_OK)                                                                        \
            rc = curl_easy_setopt(h, opt, val);                                                    \
    } while (0)
    SET(CURLOPT_ERRORBUFFER, errbuf);
    SET(CURLOPT_SHARE, share); /* keep-alive: connections outlive the handle */
    SET(CURLOPT_SOCKOPTFUNCTION, on_socket);
    SET(CURLOPT_NOSIGNAL, 1L);
    SET(CURLOPT_URL, url);
    SET(CURLOPT_CONNECTTIMEOUT_MS,
        o->connect_timeout_ms > 0 ? o->connect_timeout_ms : DEFAULT_CONNECT_MS);
    SET(CURLOPT_TIMEOUT_MS, o->timeout_ms > 0 ? o->timeout_ms : DEFAULT_TIMEOUT_MS);
    SET(CURLOPT_WRITEFUNCTION, on_body);
    SET(CURLOPT_WRITEDATA, x);
    SET(CURLOPT_HEADERFUNCTION, on_header);
    SET(CURLOPT_HEADERDATA, x);
    SET(CURLOPT_XFERINFOFUNCTION, on_progress);
    SET(CURLOPT_XFERINFODATA, x);
    SET(CURLOPT_NOPROGRESS, o->cancel ? 0L : 1L); /* cancel also checked while sending */
    SET(CURLOPT_USERAGENT, ua);
    SET(CURLOPT_ACCEPT_ENCODING, "");
    SET(CURLOPT_HTTPHEADER, hl);
    SET(CURLOPT_PROTOCOLS_STR, "http,https");
    if (o->max_redirects > 0) {
        SET(CURLOPT_FOLLOWLOCATION, 1L);
        SET(CURLOPT_MAXREDIRS, o->max_redirects);
        SET(CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    }
    if (o->unix_socket)
        SET(CURLOPT_UNIX_SOCKET_PATH, o->unix_socket);
    if (o->ca_file)
        SET(CURLOPT_CAINFO, o->ca_file);
    if (o->cert_file)
        SET(CURLOPT_SSLCERT, o->cert_file);
    if (o->key_file)
        SET(CURLOPT_SSLKEY, o->key_file);

    if (strcmp(method, "GET") == 0 && !body) {
        SET(CURLOPT_HTTPGET, 1L);
    } else if (strcmp(method, "HEAD") == 0) {
        SET(CURLOPT_NOBODY, 1L);
    } else {
        if (strcmp(method, "POST") != 0)
            SET(CURLOPT_CUSTOMREQUEST, method);
        /* POST/PUT/PATCH always carry a (possibly empty) body so Content-Length is sent. */
        if (body || strcmp(method, "POST") == 0 || strcmp(method, "PUT") == 0 ||
            strcmp(method, "PATCH") == 0) {
            SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)(body ? body_len : 0));
            SET(CURLOPT_POSTFIELDS, body ? body : "");
        }
    }
#undef SET
    return rc;
}

/* curl_easy_perform on a private multi handle, polling in 100 ms slices so a
 * raised cancel flag ends the transfer within ~0.1 s (the easy progress callback
 * alone runs only about once a second while a connection is idle). */
static CURLcode perform_cancellable(CURL *h, const int *cancel)
{
    CURLM *m = curl_multi_init();
    CURLcode rc = CURLE_ABORTED_BY_CALLBACK;
    CURLMsg *msg;
    int running = 1, left;

    if (!m)
        return CURLE_OUT_OF_MEMORY;
    if (curl_multi_add_handle(m, h) != CURLM_OK) {
        (void)curl_multi_cleanup(m);
        return CURLE_OUT_OF_MEMORY;
    }
    while (running) {
        if (__atomic_load_n(cancel, __ATOMIC_SEQ_CST))
            goto out;
        if (curl_multi_perform(m, &running) != CURLM_OK) {
            rc = CURLE_RECV_ERROR;
            goto out;
        }
        if (running && curl_multi_poll(m, NULL, 0, 100, NULL) != CURLM_OK) {
            rc = CURLE_RECV_ERROR;
            goto out;
        }
    }
    rc = CURLE_RECV_ERROR;
    while ((msg = curl_multi_info_read(m, &left)))
        if (msg->msg == CURLMSG_DONE && msg->easy_handle == h)
            rc = msg->data.result;
out:
    (void)curl_multi_remove_handle(m, h);
    (void)curl_multi_cleanup(m);
    return rc;
}

/* One attempt. Returns 0 with ret filled, or -1 with err (and *ret_rc the curl code). */
static int attempt(const struct sh_http_client_opts *o, const char *method, const char *url,
                   struct curl_slist *hl, const char *body, size_t body_len,
                   struct sh_http_response *ret, CURLcode *ret_rc, struct sh_err *err)
{
    char errbuf[CURL_ERROR_SIZE];
    struct xfer x;
    CURLSH *share;
    CURL *h = NULL;
    CURLcode rc;
    char *eff = NULL;
    int r = -1;

    memset(&x, 0, sizeof(x));
    sh_buf_init(&x.body, o->max_response ? o->max_response : DEFAULT_MAX_RESPONSE);
    sh_buf_init(&x.hdrs, o->max_headers ? o->max_headers : DEFAULT_MAX_HEADERS);
    x.cancel = o->cancel;
    errbuf[0] = '\0';
    *ret_rc = CURLE_OK;

    if (!(share = thread_share())) {
        sh_err_set(err, SH_EIO, "%s %s: creating the thread's connection cache failed", method,
                   url);
        goto out;
    }
    if (!(h = curl_easy_init())) {
        sh_err_set(err, SH_EIO, "%s %s: curl_easy_init failed", method, url);
        goto out;
    }
    rc = setup(h, share, o, method, url, hl, body, body_len, &x, errbuf);
    if (rc != CURLE_OK) {
        *ret_rc = rc;
        sh_err_set(err, rc == CURLE_UNSUPPORTED_PROTOCOL ? SH_ECONFIG : SH_EIO,
                   "%s %s: setting up the request: %s", method, url, curl_easy_strerror(rc));
        goto out;
    }
    rc = o->cancel ? perform_cancellable(h, o->cancel) : curl_easy_perform(h);
    *ret_rc = rc;
    if (rc != CURLE_OK) {
        const char *why = errbuf[0] ? errbuf : curl_easy_strerror(rc);
        if (x.body_toobig)
            sh_err_set(err, SH_ELIMIT, "%s %s: response larger than %zu bytes", method, url,
                       x.body.limit);
        else if (x.hdrs_toobig)
            sh_err_set(err, SH_ELIMIT, "%s %s: response headers larger than %zu bytes", method, url,
                       x.hdrs.limit);
        else if (rc == CURLE_ABORTED_BY_CALLBACK)
            sh_err_set(err, SH_EIO, "%s %s: cancelled", method, url);
        else
            sh_err_set(err, curl_code_to_err(rc), "%s %s: %s", method, url, why);
        goto out;
    }
    memset(ret, 0, sizeof(*ret));
    if (curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &ret->status) != CURLE_OK)
        ret->status = 0;
    if (curl_easy_getinfo(h, CURLINFO_TOTAL_TIME, &ret->seconds) != CURLE_OK)
        ret->seconds = 0;
    if (curl_easy_getinfo(h, CURLINFO_EFFECTIVE_URL, &eff) == CURLE_OK && eff)
        ret->url = sh_xstrdup(eff);
    ret->body = sh_buf_steal(&x.body, &ret->body_len);
    ret->headers = sh_buf_steal(&x.hdrs, NULL);
    ret->content_type = header_find(ret->headers, "Content-Type");
    ret->etag = header_find(ret->headers, "ETag");
    ret->location = header_find(ret->headers, "Location");
    ret->retry_after = header_find(ret->headers, "Retry-After");
    r = 0;
out:
    curl_easy_cleanup(h);
    sh_buf_done(&x.body);
    sh_buf_done(&x.hdrs);
    return r;
}

int sh_http_request(const struct sh_http_client_opts *opts, const char *method, const char *url,
                    const char *const *headers, const char *body, size_t body_len,
                    struct sh_http_response *ret, struct sh_err *err)
{
    static const struct sh_http_client_opts defaults;
    const struct sh_http_client_opts *o = opts ? opts : &defaults;
    struct curl_slist *hl;
    struct timespec now;
    uint64_t seed;
    int retries, ok, rc = -1;
    long base;

    if (!method || !url || !ret) {
        sh_err_set(err, SH_ECONFIG, "http request: method, url and ret are required");
        return -1;
    }
    (void)pthread_once(&global_once, global_init);
    if (global_rc != CURLE_OK) {
        sh_err_set(err, SH_EIO, "curl_global_init: %s", curl_easy_strerror(global_rc));
        return -1;
    }
    if (share_key_rc != 0) {
        sh_err_set(err, SH_EIO, "pthread_key_create: %s", strerror(share_key_rc));
        return -1;
    }
    /* CR/LF in a header or the token would smuggle extra headers: refuse. */
    for (size_t i = 0; headers && headers[i]; i++) {
        if (strpbrk(headers[i], "\r\n")) {
            sh_err_set(err, SH_ECONFIG, "%s %s: header %zu contains CR/LF", method, url, i);
            return -1;
        }
    }
    if ((o->bearer_token && strpbrk(o->bearer_token, "\r\n")) ||
        (o->user_agent && strpbrk(o->user_agent, "\r\n"))) {
        sh_err_set(err, SH_ECONFIG, "%s %s: token or user agent contains CR/LF", method, url);
        return -1;
    }
    hl = build_headers(o, headers, &ok);
    if (!ok) {
        curl_slist_free_all(hl);
        sh_err_set(err, SH_EIO, "%s %s: building the header list failed", method, url);
        return -1;
    }
    retries = o->retries < 0 ? 0 : o->retries > MAX_RETRIES ? MAX_RETRIES : o->retries;
    if (!o->retry_unsafe && !method_is_safe(method))
        retries = 0;
    base = o->backoff_ms > 0 ? o->backoff_ms : DEFAULT_BACKOFF_MS;
    (void)clock_gettime(CLOCK_MONOTONIC, &now);
    seed = ((uint64_t)now.tv_nsec << 20) ^ (uint64_t)now.tv_sec ^ (uint64_t)(uintptr_t)&now;
    seed = seed ? seed : 88172645463325252ULL;

    for (int i = 0;; i++) {
        struct sh_http_response r;
        CURLcode crc;
        long wait = -1, cap;
        int last = i >= retries;

        memset(&r, 0, sizeof(r));
        if (attempt(o, method, url, hl, body, body_len, &r, &crc, err) == 0) {
            r.attempts = i + 1;
            if (last || !status_is_retryable(r.status)) {
                *ret = r;
                rc = 0;
                break;
            }
            wait = retry_after_ms(r.retry_after);
            sh_http_response_done(&r);
        } else if (last || !curl_is_retryable(crc)) {
            break;
        }
        if (wait < 0) {
            /* Full jitter: uniform in [0, min(cap, base * 2^i)]. */
            cap = base;
            for (int k = 0; k < i && cap < MAX_BACKOFF_MS; k++)
                cap *= 2;
            if (cap > MAX_BACKOFF_MS)
                cap = MAX_BACKOFF_MS;
            wait = (long)(jitter_next(&seed) % (uint64_t)(cap + 1));
        }
        if (backoff_sleep(wait, o->cancel)) {
            sh_err_set(err, SH_EIO, "%s %s: cancelled", method, url);
            break;
        }
    }
    curl_slist_free_all(hl);
    return rc;
}

int sh_http_request_json(const struct sh_http_client_opts *opts, const char *method,
                         const char *url, const json_t *body, struct sh_http_response *ret,
                         struct sh_err *err)
{
    static const char *const hdrs[] = {"Content-Type: application/json", NULL};
    char *s = NULL;
    int rc;

    if (body && !(s = json_dumps(body, JSON_COMPACT))) {
        sh_err_set(err, SH_ECONFIG, "%s %s: body is not serialisable JSON", method, url);
        return -1;
    }
    rc = sh_http_request(opts, method, url, body ? hdrs : NULL, s, s ? strlen(s) : 0, ret, err);
    free(s);
    return rc;
}

char *sh_url_escape(const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n = strlen(s);
    char *out = sh_xmalloc(n * 3 + 1), *p = out;

    /* RFC 3986 unreserved characters stay; everything else is %XX. */
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
            c == '-' || c == '.' || c == '_' || c == '~') {
            *p++ = (char)c;
        } else {
            *p++ = '%';
            *p++ = hex[c >> 4];
            *p++ = hex[c & 15];
        }
    }
    *p = '\0';
    return out;
}
