/* Test harness (see harness.h): process spawning, HTTP via libcurl, small
 * utilities. The table of spawned children is test-process-global and touched
 * only from the test's main thread. */
#include "harness.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "shared/xalloc.h"

extern char **environ;

#define TH_MAX_CHILDREN 128

static struct {
    pid_t pid;
    char *log;
    int exited; /* reaped by th_wait_exit */
} children[TH_MAX_CHILDREN];

/* A failing ASSERT exits the test at once: every child still running is
 * killed then, so no server outlives its test. */
static void kill_live_children(void)
{
    for (size_t i = 0; i < TH_MAX_CHILDREN; i++)
        if (children[i].pid > 0 && !children[i].exited)
            (void)kill(children[i].pid, SIGKILL);
}

static void th_die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

static void th_die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    (void)fprintf(stderr, "harness: ");
    (void)vfprintf(stderr, fmt, ap);
    (void)fprintf(stderr, "\n");
    va_end(ap);
    exit(1);
}

/* A TCP socket bound to a free loopback port (not listening); *ret_port its port. */
static int bound_loopback(unsigned *ret_port)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        th_die("socket: %s", strerror(errno));
    if (bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) < 0)
        th_die("bind: %s", strerror(errno));
    *ret_port = ntohs(a.sin_port);
    return fd;
}

unsigned th_free_port(void)
{
    unsigned port;
    (void)close(bound_loopback(&port));
    return port;
}

unsigned th_dead_port(void)
{
    /* Bound, never listening, never closed: a connect is refused, and no
     * server of a test running beside this one can take the port (a port
     * from th_free_port() can be, and then answers 404s). Released at exit. */
    unsigned port;
    (void)bound_loopback(&port);
    return port;
}

int64_t th_now_ms(void)
{
    struct timespec ts;
    (void)clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

char *th_unique(const char *prefix)
{
    static atomic_uint counter;
    return sh_xasprintf("%s_%ld_%u", prefix, (long)getpid(), atomic_fetch_add(&counter, 1));
}

char *th_bin(const char *name)
{
    const char *dir = getenv("SCRAPR_BIN_DIR");
    if (!dir || !*dir)
        th_die("%s is not set (run through ctest)", "SCRAPR_BIN_DIR");
    return sh_xasprintf("%s/%s", dir, name);
}

char *th_mongo_url(const char *dbname)
{
    const char *url = getenv("MONGO_URL");
    const char *hosts, *slash, *query;
    if (!url || !*url)
        th_die("%s is not set: run under tests/lib/testbed.sh", "MONGO_URL");
    hosts = strstr(url, "://");
    hosts = hosts ? hosts + 3 : url;
    query = strchr(hosts, '?');
    slash = strchr(hosts, '/');
    if (slash && query && slash > query)
        slash = NULL;
    if (!slash)
        slash = query ? query : hosts + strlen(hosts);
    return sh_xasprintf("%.*s/%s%s", (int)(slash - url), url, dbname, query ? query : "");
}

/* Builds the child's environment: environ minus overridden/removed keys, plus extras. */
static char **build_env(const char *const extra[])
{
    size_t n = 0, ne = 0, k = 0;
    char **env;
    while (environ[n])
        n++;
    while (extra && extra[ne])
        ne++;
    env = sh_xcalloc(n + ne + 1, sizeof(*env));
    for (size_t i = 0; i < n; i++) {
        size_t klen = strcspn(environ[i], "=");
        int drop = 0;
        for (size_t j = 0; j < ne && !drop; j++) {
            size_t xlen = strcspn(extra[j], "=");
            drop = xlen == klen && !strncmp(environ[i], extra[j], klen);
        }
        if (!drop)
            env[k++] = environ[i];
    }
    for (size_t j = 0; j < ne; j++)
        if (strchr(extra[j], '='))
            env[k++] = (char *)extra[j];
    env[k] = NULL;
    return env;
}

pid_t th_spawn_log(const char *const argv[], const char *const env_extra[], const char *log_path)
{
    char **env = build_env(env_extra);
    int fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    pid_t pid;
    size_t slot;
    if (fd < 0)
        th_die("cannot open log %s", log_path);
    (void)fflush(NULL);
    pid = fork();
    if (pid < 0)
        th_die("fork: %s", strerror(errno));
    if (pid == 0) {
        (void)dup2(fd, 1);
        (void)dup2(fd, 2);
        execvpe(argv[0], (char *const *)argv, env);
        (void)dprintf(2, "harness: exec %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    (void)close(fd);
    free(env);
    for (slot = 0; slot < TH_MAX_CHILDREN && children[slot].pid; slot++)
        ;
    if (slot == TH_MAX_CHILDREN)
        th_die("more than %d live children", TH_MAX_CHILDREN);
    children[slot].pid = pid;
    children[slot].log = sh_xstrdup(log_path);
    children[slot].exited = 0;
    {
        static int registered;
        if (!registered && atexit(kill_live_children) == 0)
            registered = 1;
    }
    (void)fprintf(stderr, "harness: started %s pid %ld, log %s\n", argv[0], (long)pid, log_path);
    return pid;
}

pid_t th_spawn(const char *const argv[], const char *const env_extra[])
{
    static unsigned n;
    const char *base = strrchr(argv[0], '/');
    char *log =
        sh_xasprintf("/tmp/th_%s_%ld_%u.log", base ? base + 1 : argv[0], (long)getpid(), n++);
    pid_t pid = th_spawn_log(argv, env_extra, log);
    free(log);
    return pid;
}

const char *th_log_path(pid_t pid)
{
    for (size_t i = 0; i < TH_MAX_CHILDREN; i++)
        if (children[i].pid == pid)
            return children[i].log;
    return NULL;
}

char *th_log_read(pid_t pid)
{
    const char *path = th_log_path(pid);
    FILE *f = path ? fopen(path, "rb") : NULL;
    char *data = NULL;
    size_t cap = 0, len = 0, got;
    if (!f)
        return sh_xstrdup("");
    do {
        if (cap - len < 4096) {
            cap = cap ? cap * 2 : 8192;
            data = sh_xrealloc(data, cap);
        }
        got = fread(data + len, 1, cap - len - 1, f);
        len += got;
    } while (got > 0);
    (void)fclose(f);
    data[len] = '\0';
    return data;
}

static int decode_status(int st)
{
    if (WIFEXITED(st))
        return WEXITSTATUS(st);
    if (WIFSIGNALED(st))
        return 128 + WTERMSIG(st);
    return -1;
}

int th_wait_exit(pid_t pid, long timeout_ms)
{
    int64_t deadline = th_now_ms() + timeout_ms;
    int st;
    for (;;) {
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid) {
            /* The slot is kept so th_log_read() still works after exit. */
            for (size_t i = 0; i < TH_MAX_CHILDREN; i++)
                if (children[i].pid == pid)
                    children[i].exited = 1;
            return decode_status(st);
        }
        if (r < 0 && errno != EINTR) {
            (void)fprintf(stderr, "harness: waitpid %ld: %s\n", (long)pid, strerror(errno));
            return -1;
        }
        if (th_now_ms() >= deadline)
            return -2;
        (void)usleep(10000);
    }
}

int th_kill(pid_t pid, int sig)
{
    int rc;
    if (sig && kill(pid, sig) < 0 && errno != ESRCH)
        (void)fprintf(stderr, "harness: kill %ld: %s\n", (long)pid, strerror(errno));
    rc = th_wait_exit(pid, 10000);
    if (rc == -2) {
        (void)fprintf(stderr, "harness: pid %ld ignored signal %d for 10 s, SIGKILL\n", (long)pid,
                      sig);
        (void)kill(pid, SIGKILL);
        (void)th_wait_exit(pid, 10000);
        rc = -1;
    }
    return rc;
}

struct th_mem {
    char *data;
    size_t len;
};

static size_t mem_write(char *ptr, size_t size, size_t nmemb, void *arg)
{
    struct th_mem *m = arg;
    size_t n = size * nmemb;
    m->data = sh_xrealloc(m->data, m->len + n + 1);
    memcpy(m->data + m->len, ptr, n);
    m->len += n;
    m->data[m->len] = '\0';
    return n;
}

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;

static void curl_init_once(void)
{
    if (curl_global_init(CURL_GLOBAL_ALL) != CURLE_OK)
        th_die("%s failed", "curl_global_init");
}

int th_http_len(const char *method, const char *url, const char *const headers[], const char *body,
                size_t body_len, long *ret_status, char **ret_body, size_t *ret_len,
                char **ret_headers)
{
    char errbuf[CURL_ERROR_SIZE] = "";
    struct th_mem b = {0}, h = {0};
    struct curl_slist *hl = NULL;
    CURL *c;
    CURLcode rc;
    long status = 0;

    (void)pthread_once(&curl_once, curl_init_once);
    c = curl_easy_init();
    if (!c)
        th_die("%s failed", "curl_easy_init");
    for (size_t i = 0; headers && headers[i]; i++) {
        struct curl_slist *n = curl_slist_append(hl, headers[i]);
        if (!n)
            th_die("%s failed", "curl_slist_append");
        hl = n;
    }
    /* Expect: 100-continue would delay small POSTs; tests want plain requests. */
    {
        struct curl_slist *n = curl_slist_append(hl, "Expect:");
        if (!n)
            th_die("%s failed", "curl_slist_append");
        hl = n;
    }
    (void)curl_easy_setopt(c, CURLOPT_URL, url);
    (void)curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
    (void)curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    (void)curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 30000L);
    (void)curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
    (void)curl_easy_setopt(c, CURLOPT_HTTPHEADER, hl);
    (void)curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, mem_write);
    (void)curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    (void)curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, mem_write);
    (void)curl_easy_setopt(c, CURLOPT_HEADERDATA, &h);
    if (!strcmp(method, "HEAD")) {
        (void)curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    } else {
        (void)curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
        if (body) {
            (void)curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
            (void)curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
        }
    }
    rc = curl_easy_perform(c);
    if (rc == CURLE_OK)
        (void)curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(c);
    curl_slist_free_all(hl);
    if (rc != CURLE_OK) {
        (void)fprintf(stderr, "harness: %s %s: %s\n", method, url,
                      errbuf[0] ? errbuf : curl_easy_strerror(rc));
        free(b.data);
        free(h.data);
        return -1;
    }
    if (ret_status)
        *ret_status = status;
    if (ret_len)
        *ret_len = b.len;
    if (ret_body)
        *ret_body = b.data ? b.data : sh_xstrdup("");
    else
        free(b.data);
    if (ret_headers)
        *ret_headers = h.data ? h.data : sh_xstrdup("");
    else
        free(h.data);
    return 0;
}

int th_http(const char *method, const char *url, const char *const headers[], const char *body,
            long *ret_status, char **ret_body, char **ret_headers)
{
    return th_http_len(method, url, headers, body, body ? strlen(body) : 0, ret_status, ret_body,
                       NULL, ret_headers);
}

int th_wait_http(const char *url, long timeout_ms)
{
    int64_t deadline = th_now_ms() + timeout_ms;
    (void)pthread_once(&curl_once, curl_init_once);
    for (;;) {
        CURL *c = curl_easy_init();
        CURLcode rc;
        if (!c)
            th_die("%s failed", "curl_easy_init");
        (void)curl_easy_setopt(c, CURLOPT_URL, url);
        (void)curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
        (void)curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
        (void)curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 2000L);
        rc = curl_easy_perform(c);
        curl_easy_cleanup(c);
        if (rc == CURLE_OK)
            return 0;
        if (th_now_ms() >= deadline)
            return -1;
        (void)usleep(50000);
    }
}

char *th_header(const char *raw, const char *name)
{
    size_t nlen = strlen(name);
    const char *line = raw;
    char *found = NULL;
    /* Later header blocks (after a redirect or 100-continue) override earlier ones. */
    while (line && *line) {
        const char *eol = strpbrk(line, "\r\n");
        size_t llen = eol ? (size_t)(eol - line) : strlen(line);
        if (llen > nlen && line[nlen] == ':' && !strncasecmp(line, name, nlen)) {
            const char *v = line + nlen + 1;
            const char *e = line + llen;
            while (v < e && (*v == ' ' || *v == '\t'))
                v++;
            while (e > v && (e[-1] == ' ' || e[-1] == '\t'))
                e--;
            free(found);
            found = sh_xstrndup(v, (size_t)(e - v));
        }
        if (!eol)
            break;
        line = eol + strspn(eol, "\r\n");
    }
    return found;
}

static int redis_pings(unsigned port)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    struct timeval tv = {1, 0};
    char buf[16] = "";
    ssize_t n;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), ok = 0;
    if (fd < 0)
        return 0;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    (void)setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
        send(fd, "PING\r\n", 6, MSG_NOSIGNAL) == 6) {
        n = recv(fd, buf, sizeof(buf) - 1, 0);
        ok = n >= 5 && !strncmp(buf, "+PONG", 5);
    }
    (void)close(fd);
    return ok;
}

static char *make_tmpdir(const char *what)
{
    char *dir = sh_xasprintf("/tmp/th_%s_%ld_XXXXXX", what, (long)getpid());
    if (!mkdtemp(dir))
        th_die("mkdtemp %s: %s", dir, strerror(errno));
    return dir;
}

pid_t th_redis_start(unsigned *port)
{
    char *dir = make_tmpdir("redis"), portstr[16];
    int64_t deadline = th_now_ms() + 30000;
    pid_t pid;
    if (!*port)
        *port = th_free_port();
    (void)snprintf(portstr, sizeof(portstr), "%u", *port);
    {
        const char *argv[] = {"redis-server", "--port", portstr,  "--bind", "127.0.0.1",
                              "--dir",        dir,      "--save", "",       "--appendonly",
                              "no",           NULL};
        pid = th_spawn(argv, NULL);
    }
    free(dir);
    while (!redis_pings(*port)) {
        if (th_wait_exit(pid, 0) != -2 || th_now_ms() > deadline)
            th_die("redis-server on port %u did not come up (log %s)", *port, th_log_path(pid));
        (void)usleep(20000);
    }
    return pid;
}

pid_t th_consul_start(unsigned *port)
{
    const char *src = getenv("SCRAPR_SOURCE_DIR");
    char *bin = src && *src ? sh_xasprintf("%s/tools/bin/consul", src) : sh_xstrdup("consul");
    char *url;
    char ports[5][40];
    int64_t deadline = th_now_ms() + 30000;
    pid_t pid;
    if (!*port)
        *port = th_free_port();
    (void)snprintf(ports[0], sizeof(ports[0]), "-http-port=%u", *port);
    (void)snprintf(ports[1], sizeof(ports[1]), "-serf-lan-port=%u", th_free_port());
    (void)snprintf(ports[2], sizeof(ports[2]), "-serf-wan-port=%u", th_free_port());
    (void)snprintf(ports[3], sizeof(ports[3]), "-server-port=%u", th_free_port());
    (void)snprintf(ports[4], sizeof(ports[4]), "-node=th-%ld-%u", (long)getpid(), *port);
    {
        const char *argv[] = {bin,
                              "agent",
                              "-dev",
                              "-bind=127.0.0.1",
                              "-client=127.0.0.1",
                              ports[0],
                              ports[1],
                              ports[2],
                              ports[3],
                              ports[4],
                              "-dns-port=-1",
                              "-grpc-port=-1",
                              "-log-level=warn",
                              NULL};
        pid = th_spawn(argv, NULL);
    }
    url = sh_xasprintf("http://127.0.0.1:%u/v1/status/leader", *port);
    for (;;) {
        long st = 0;
        char *body = NULL;
        CURL *c;
        struct th_mem b = {0};
        (void)pthread_once(&curl_once, curl_init_once);
        c = curl_easy_init();
        if (!c)
            th_die("%s failed", "curl_easy_init");
        (void)curl_easy_setopt(c, CURLOPT_URL, url);
        (void)curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
        (void)curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 2000L);
        (void)curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, mem_write);
        (void)curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
        if (curl_easy_perform(c) == CURLE_OK)
            (void)curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &st);
        curl_easy_cleanup(c);
        body = b.data;
        /* a leader is elected once the answer is a non-empty "ip:port" string */
        if (st == 200 && body && strchr(body, ':')) {
            free(body);
            break;
        }
        free(body);
        if (th_wait_exit(pid, 0) != -2 || th_now_ms() > deadline)
            th_die("consul on port %u did not elect a leader (log %s)", *port, th_log_path(pid));
        (void)usleep(100000);
    }
    free(url);
    free(bin);
    return pid;
}
