/* SSRF guard and URL splitting for the fetcher: which addresses a scraper may
 * connect to, resolved once and pinned (CURLOPT_RESOLVE) so DNS rebinding
 * cannot swap the target after the check. Stateless and thread-safe. */
#include <arpa/inet.h>
#include <curl/curl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "shared/buf.h"
#include "shared/xalloc.h"
#include "scraper.h"

#define MAX_PINNED_ADDRS 8

static int v4_forbidden(uint32_t a)
{
    return (a >> 24) == 0                 /* 0.0.0.0/8 */
           || (a >> 24) == 10             /* 10/8 */
           || (a >> 24) == 127            /* loopback */
           || (a >> 16) == 0xA9FE         /* 169.254/16 link-local + metadata */
           || (a >> 20) == 0xAC1          /* 172.16/12 */
           || (a >> 16) == 0xC0A8         /* 192.168/16 */
           || (a >> 22) == (100 << 2 | 1) /* 100.64/10 CGNAT */
           || (a >> 8) == 0xC00000        /* 192.0.0/24 IETF protocol assignments */
           || (a >> 28) >= 0xE;           /* multicast, reserved, broadcast */
}

int scr_addr_forbidden(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)(const void *)sa;
        return v4_forbidden(ntohl(s4->sin_addr.s_addr));
    }
    if (sa->sa_family != AF_INET6)
        return 1;
    const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)(const void *)sa;
    const uint8_t *b = s6->sin6_addr.s6_addr;
    static const uint8_t zero[16];
    if (memcmp(b, zero, 15) == 0 && (b[15] == 0 || b[15] == 1))
        return 1; /* :: and ::1 */
    if ((b[0] & 0xFE) == 0xFC)
        return 1; /* fc00::/7 unique local */
    if (b[0] == 0xFE && (b[1] & 0xC0) == 0x80)
        return 1; /* fe80::/10 link-local */
    if (b[0] == 0xFE && (b[1] & 0xC0) == 0xC0)
        return 1; /* fec0::/10 site-local (deprecated) */
    if (b[0] == 0xFF)
        return 1; /* multicast */
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF};
    static const uint8_t nat64[12] = {0x00, 0x64, 0xFF, 0x9B, 0, 0, 0, 0, 0, 0, 0, 0};
    if (memcmp(b, mapped, 12) == 0 || memcmp(b, nat64, 12) == 0 || memcmp(b, zero, 12) == 0) {
        uint32_t a = (uint32_t)b[12] << 24 | (uint32_t)b[13] << 16 | (uint32_t)b[14] << 8 | b[15];
        return v4_forbidden(a); /* IPv4-mapped / NAT64 / IPv4-compatible */
    }
    return 0;
}

void scr_url_done(struct scr_url *u)
{
    curl_free(u->scheme);
    curl_free(u->host);
    curl_free(u->port);
    free(u->path);
    memset(u, 0, sizeof(*u));
}

int scr_url_split(const char *url, struct scr_url *u, struct sh_err *err)
{
    memset(u, 0, sizeof(*u));
    CURLU *h = curl_url();
    char *path = NULL, *query = NULL;
    int rc = -1;
    CURLUcode uc = curl_url_set(h, CURLUPART_URL, url, 0);
    if (uc != CURLUE_OK) {
        sh_err_set(err, SH_ECONFIG, "bad URL \"%s\": %s", url, curl_url_strerror(uc));
        goto out;
    }
    if (curl_url_get(h, CURLUPART_SCHEME, &u->scheme, 0) != CURLUE_OK ||
        (strcasecmp(u->scheme, "http") != 0 && strcasecmp(u->scheme, "https") != 0)) {
        sh_err_set(err, SH_ECONFIG, "URL scheme \"%s\" not allowed (http, https)",
                   u->scheme ? u->scheme : "");
        goto out;
    }
    if (curl_url_get(h, CURLUPART_HOST, &u->host, 0) != CURLUE_OK ||
        curl_url_get(h, CURLUPART_PORT, &u->port, CURLU_DEFAULT_PORT) != CURLUE_OK ||
        curl_url_get(h, CURLUPART_PATH, &path, 0) != CURLUE_OK) {
        sh_err_set(err, SH_ECONFIG, "bad URL \"%s\": no host", url);
        goto out;
    }
    if (curl_url_get(h, CURLUPART_QUERY, &query, 0) == CURLUE_OK && query)
        u->path = sh_xasprintf("%s?%s", path, query);
    else
        u->path = sh_xstrdup(path);
    rc = 0;
out:
    curl_free(path);
    curl_free(query);
    curl_url_cleanup(h);
    if (rc < 0)
        scr_url_done(u);
    return rc;
}

/* Resolves u->host, refuses forbidden addresses unless allowed, and builds the
 * CURLOPT_RESOLVE entry pinning what we checked. Returns 0, -1 (error), or -2
 * (refused by the guard). *ret_resolve is NULL for IP literals (nothing to pin). */
int scr_resolve_guard(int allow_private, const char *const *allow_targets, const struct scr_url *u,
                      struct curl_slist **ret_resolve, struct sh_err *err)
{
    char host[256];
    size_t hl = strlen(u->host);
    if (hl >= sizeof(host)) {
        sh_err_set(err, SH_ECONFIG, "host name too long");
        return -1;
    }
    memcpy(host, u->host, hl + 1);
    int literal = 0;
    if (host[0] == '[') { /* IPv6 literal, maybe with a zone id */
        char *e = strchr(host, ']');
        if (e)
            *e = '\0';
        memmove(host, host + 1, strlen(host));
        literal = 1;
    } else {
        struct in_addr tmp;
        literal = inet_pton(AF_INET, host, &tmp) == 1;
    }
    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    if (literal)
        hints.ai_flags = AI_NUMERICHOST;
    int gr = getaddrinfo(host, u->port, &hints, &res);
    if (gr != 0) {
        sh_err_set(err, SH_EUPSTREAM, "resolve %s: %s", host, gai_strerror(gr));
        return -1;
    }
    struct sh_buf b;
    sh_buf_init(&b, 0);
    (void)sh_buf_appendf(&b, NULL, "%s:%s:", u->host, u->port);
    int n = 0, rc = 0, exempt = allow_private;
    for (size_t i = 0; !exempt && allow_targets && allow_targets[i]; i++) {
        char *hp = sh_xasprintf("%s:%s", u->host, u->port);
        exempt = strcasecmp(hp, allow_targets[i]) == 0;
        free(hp);
    }
    for (struct addrinfo *ai = res; ai && n < MAX_PINNED_ADDRS; ai = ai->ai_next) {
        char txt[INET6_ADDRSTRLEN];
        const void *src =
            ai->ai_family == AF_INET
                ? (const void *)&((struct sockaddr_in *)(void *)ai->ai_addr)->sin_addr
                : (const void *)&((struct sockaddr_in6 *)(void *)ai->ai_addr)->sin6_addr;
        if (!inet_ntop(ai->ai_family, src, txt, sizeof(txt)))
            continue;
        if (!exempt && scr_addr_forbidden(ai->ai_addr)) {
            sh_err_set(err, SH_ECONFIG,
                       "refusing %s: resolves to non-public address %s "
                       "(set SCRAPR_ALLOW_PRIVATE_TARGETS=1 to allow)",
                       u->host, txt);
            rc = -2;
            break;
        }
        if (ai->ai_family == AF_INET6)
            (void)sh_buf_appendf(&b, NULL, "%s[%s]", n ? "," : "", txt);
        else
            (void)sh_buf_appendf(&b, NULL, "%s%s", n ? "," : "", txt);
        n++;
    }
    freeaddrinfo(res);
    if (rc == 0 && n == 0) {
        sh_err_set(err, SH_EUPSTREAM, "resolve %s: no usable address", host);
        rc = -1;
    }
    if (rc == 0 && !literal) {
        *ret_resolve = curl_slist_append(NULL, b.data);
        if (!*ret_resolve)
            abort();
    }
    sh_buf_done(&b);
    return rc;
}
