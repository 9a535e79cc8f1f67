/* The common life of a scrapr service (see shared/service.h): env + argv,
 * logging, signals, HTTP server, Consul registration and shutdown.
 *
 * Process-wide state is only the stop flag (volatile sig_atomic_t, set by the
 * SIGTERM/SIGINT handler or sh_service_request_stop). Registration runs on a
 * background thread that retries every 2 s while Consul is down, so a service
 * comes up and serves even before Consul does; it waits on a condition
 * variable so sh_service_stop() interrupts it at once. Everything else is
 * owned by struct sh_service and freed by sh_service_stop(). */
#include "shared/service.h"

#include <arpa/inet.h>
#include <errno.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "shared/log.h"
#include "shared/xalloc.h"

#define REGISTER_RETRY_MS 2000
#define REWATCH_MS 5000 /* how often a registered service checks the agent still knows it */
#define SLEEP_SLICE_MS 20

static volatile sig_atomic_t stop_flag;

struct sh_service {
    char *name;
    char *address;
    char *id;
    unsigned port;
    const char *const *tags;
    struct sh_metrics *metrics;
    struct sh_consul *consul;
    struct sh_http_server *http;
    pthread_t reg_thread;
    int reg_started;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int stopping;   /* guarded by lock */
    int registered; /* guarded by lock */
};

/* ---- configuration ---- */

static void table_init(struct sh_envconf *t, struct sh_service_config *cfg, const char *port_def)
{
    const struct sh_envconf entries[] = {
        {"PORT", SH_ENV_INT, &cfg->port, port_def, 0, 65535, "listen port (0 = any free port)"},
        {"SERVICE_ADDRESS", SH_ENV_STRING, &cfg->address, "", 0, 0,
         "address advertised in Consul (empty = first non-loopback IPv4)"},
        {"CONSUL_HTTP_ADDR", SH_ENV_STRING, &cfg->consul_addr, "127.0.0.1:8500", 0, 0,
         "Consul agent HTTP address"},
        {"SCRAPR_API_TOKEN", SH_ENV_STRING, &cfg->api_token, NULL, 0, 0,
         "bearer token required by write APIs (unset = open)"},
        {"LOG_LEVEL", SH_ENV_STRING, &cfg->log_level, "info", 0, 0, "debug, info, warn or error"},
        {"LOG_FORMAT", SH_ENV_STRING, &cfg->log_format, "text", 0, 0, "text or json"},
        {NULL, 0, NULL, NULL, 0, 0, NULL},
    };
    memcpy(t, entries, sizeof(entries));
}

enum { TABLE_LEN = 7 };

static void usage_vars(const struct sh_envconf *t)
{
    for (; t->name; t++)
        printf("  %-18s %s (default: %s)\n", t->name, t->help ? t->help : "",
               t->def ? (*t->def ? t->def : "\"\"") : "unset");
}

static void usage(const char *name, const struct sh_envconf *t)
{
    printf("usage: scrapr-%s [--check-config | --help]\n\n"
           "  --check-config  print the configuration, check it and exit\n"
           "  --help          print this help\n\n"
           "Environment:\n",
           name);
    usage_vars(t);
}

void sh_service_config_load(struct sh_service_config *cfg, const char *name, long default_port,
                            int argc, char **argv)
{
    sh_service_config_load_ex(cfg, name, default_port, NULL, argc, argv);
}

void sh_service_config_load_ex(struct sh_service_config *cfg, const char *name, long default_port,
                               const struct sh_envconf *extra, int argc, char **argv)
{
    struct sh_envconf t[TABLE_LEN];
    char port_def[24];
    int check = 0;

    memset(cfg, 0, sizeof(*cfg));
    (void)snprintf(port_def, sizeof(port_def), "%ld", default_port);
    table_init(t, cfg, port_def);
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(name, t);
            if (extra)
                usage_vars(extra);
            exit(0);
        } else if (!strcmp(argv[i], "--check-config") || !strcmp(argv[i], "-n")) {
            check = 1;
        } else {
            (void)fprintf(stderr, "%s: unknown argument '%s' (try --help)\n", name, argv[i]);
            exit(1);
        }
    }
    sh_envconf_load_or_exit(t);
    if (extra)
        sh_envconf_load_or_exit(extra);
    if (sh_log_setup(name, cfg->log_level, NULL) < 0) {
        (void)fprintf(stderr, "LOG_LEVEL: '%s' is not one of debug, info, warn, error\n",
                      cfg->log_level);
        exit(1);
    }
    if (sh_log_setup(name, NULL, cfg->log_format) < 0) {
        (void)fprintf(stderr, "LOG_FORMAT: '%s' is not one of text, json\n", cfg->log_format);
        exit(1);
    }
    if (!cfg->consul_addr || !*cfg->consul_addr || strpbrk(cfg->consul_addr, " \t\r\n")) {
        (void)fprintf(stderr, "CONSUL_HTTP_ADDR: '%s' is not a host:port address\n",
                      cfg->consul_addr ? cfg->consul_addr : "");
        exit(1);
    }
    if (check) {
        sh_envconf_print(t);
        if (extra)
            sh_envconf_print(extra);
        printf("configuration OK\n");
        (void)fflush(stdout);
        exit(0);
    }
}

void sh_service_config_done(struct sh_service_config *cfg)
{
    struct sh_envconf t[TABLE_LEN];
    if (!cfg)
        return;
    table_init(t, cfg, "0");
    sh_envconf_done(t);
}

/* ---- stop flag ---- */

static void on_signal(int sig)
{
    (void)sig;
    stop_flag = 1;
}

int sh_service_stopping(void)
{
    return stop_flag != 0;
}

void sh_service_request_stop(void)
{
    stop_flag = 1;
}

int sh_service_sleep(long ms)
{
    while (ms > 0 && !stop_flag) {
        long slice = ms < SLEEP_SLICE_MS ? ms : SLEEP_SLICE_MS;
        struct timespec ts = {0, slice * 1000000L};
        /* EINTR (a signal arrived) just ends the slice early; the flag decides. */
        (void)nanosleep(&ts, NULL);
        ms -= slice;
    }
    return stop_flag != 0;
}

static int install_signals(struct sh_err *err)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    (void)sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0; /* no SA_RESTART: blocking calls return EINTR and see the flag */
    if (sigaction(SIGTERM, &sa, NULL) < 0 || sigaction(SIGINT, &sa, NULL) < 0) {
        sh_err_set(err, SH_EIO, "sigaction: %s", strerror(errno));
        return -1;
    }
    /* A peer closing a socket must be an error return, not a dead process. */
    sa.sa_handler = SIG_IGN;
    if (sigaction(SIGPIPE, &sa, NULL) < 0) {
        sh_err_set(err, SH_EIO, "sigaction: %s", strerror(errno));
        return -1;
    }
    return 0;
}

/* ---- registration ---- */

static char *first_ipv4(void)
{
    struct ifaddrs *ifs = NULL;
    char buf[INET_ADDRSTRLEN];
    char *found = NULL;
    if (getifaddrs(&ifs) < 0)
        return sh_xstrdup("127.0.0.1");
    for (struct ifaddrs *i = ifs; i && !found; i = i->ifa_next) {
        if (!i->ifa_addr || i->ifa_addr->sa_family != AF_INET)
            continue;
        if ((i->ifa_flags & IFF_LOOPBACK) || !(i->ifa_flags & IFF_UP))
            continue;
        if (inet_ntop(AF_INET, &((struct sockaddr_in *)i->ifa_addr)->sin_addr, buf, sizeof(buf)))
            found = sh_xstrdup(buf);
    }
    freeifaddrs(ifs);
    return found ? found : sh_xstrdup("127.0.0.1");
}

/* Called with s->lock held once registered: checks every REWATCH_MS that the
 * agent still knows us. Returns 0 when it forgot us (register again), -1 on stop. */
static int watch_registration(struct sh_service *s)
{
    while (!s->stopping) {
        struct timespec until;
        struct sh_err err;
        int known;
        (void)clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += REWATCH_MS / 1000;
        while (!s->stopping) {
            if (pthread_cond_timedwait(&s->cond, &s->lock, &until) == ETIMEDOUT)
                break;
        }
        if (s->stopping)
            break;
        (void)pthread_mutex_unlock(&s->lock);
        known = sh_consul_service_registered(s->consul, s->id, &err);
        (void)pthread_mutex_lock(&s->lock);
        if (known == 0) {
            sh_log_warn("consul agent forgot this service, registering again id=%s", s->id);
            return 0;
        }
        /* known < 0: the agent is unreachable; keep watching until it answers. */
    }
    return -1;
}

static void *register_loop(void *arg)
{
    struct sh_service *s = arg;
    struct sh_consul_service def = {
        .name = s->name,
        .id = s->id,
        .address = s->address,
        .port = s->port,
        .tags = s->tags,
        .check_path = "/health",
        .check_interval = "2s",
        .deregister_after = "1m",
    };
    unsigned attempts = 0;

    (void)pthread_mutex_lock(&s->lock);
    while (!s->stopping) {
        struct sh_err err;
        struct timespec until;
        int rc;
        (void)pthread_mutex_unlock(&s->lock);
        rc = sh_consul_register(s->consul, &def, &err);
        (void)pthread_mutex_lock(&s->lock);
        attempts++;
        if (rc == 0) {
            s->registered = 1;
            sh_log_info("consul registered id=%s address=%s port=%u attempts=%u", s->id, s->address,
                        s->port, attempts);
            /* Keep watching: an agent that restarts (or a dev agent) forgets
             * us, and we must come back without a restart of our own. */
            if (watch_registration(s) < 0)
                break;
            attempts = 0;
            continue;
        }
        /* Once, then every ~minute, so a long outage does not flood the log. */
        if (attempts == 1 || attempts % 30 == 0)
            sh_log_warn("consul registration failed, retrying every 2 s id=%s attempts=%u: %s",
                        s->id, attempts, err.msg);
        (void)clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += REGISTER_RETRY_MS / 1000;
        while (!s->stopping) {
            if (pthread_cond_timedwait(&s->cond, &s->lock, &until) == ETIMEDOUT)
                break;
        }
    }
    (void)pthread_mutex_unlock(&s->lock);
    return NULL;
}

/* ---- life cycle ---- */

static void service_free(struct sh_service *s)
{
    sh_http_server_stop(s->http);
    sh_consul_free(s->consul);
    sh_metrics_free(s->metrics);
    (void)pthread_cond_destroy(&s->cond);
    (void)pthread_mutex_destroy(&s->lock);
    free(s->name);
    free(s->address);
    free(s->id);
    free(s);
}

struct sh_service *sh_service_start(const struct sh_service_opts *opts, struct sh_err *err)
{
    const struct sh_service_config *cfg = opts->cfg;
    struct sh_service *s;
    struct sh_http_server_opts ho = {0};

    if (install_signals(err) < 0)
        return NULL;
    s = sh_xcalloc(1, sizeof(*s));
    if (pthread_mutex_init(&s->lock, NULL) != 0 || pthread_cond_init(&s->cond, NULL) != 0)
        abort();
    s->name = sh_xstrdup(opts->name);
    s->tags = opts->tags;
    s->metrics = sh_metrics_new();
    s->consul = sh_consul_new(cfg->consul_addr, getenv("CONSUL_HTTP_TOKEN"), err);
    if (!s->consul) {
        sh_err_prefix(err, "CONSUL_HTTP_ADDR: ");
        service_free(s);
        return NULL;
    }
    ho.service = opts->name;
    ho.port = (unsigned)cfg->port;
    ho.threads = opts->threads;
    ho.max_body = opts->max_body;
    ho.api_token = cfg->api_token;
    ho.routes = opts->routes;
    ho.arg = opts->arg;
    ho.metrics = s->metrics;
    ho.health = opts->health;
    ho.health_arg = opts->health_arg;
    s->http = sh_http_server_start(&ho, err);
    if (!s->http) {
        service_free(s);
        return NULL;
    }
    s->port = sh_http_server_port(s->http);
    s->address = cfg->address && *cfg->address ? sh_xstrdup(cfg->address) : first_ipv4();
    /* The hostname keeps ids unique when replicas share SERVICE_ADDRESS (a Swarm
     * service name) and port; otherwise they would overwrite each other in Consul. */
    {
        char host[256] = "";
        if (gethostname(host, sizeof(host) - 1) != 0 || !host[0])
            (void)snprintf(host, sizeof(host), "%s", s->address);
        s->id = strcmp(host, s->address) == 0
                    ? sh_xasprintf("%s-%s-%u", s->name, s->address, s->port)
                    : sh_xasprintf("%s-%s-%s-%u", s->name, s->address, host, s->port);
    }
    sh_metric_set(
        sh_metrics_gauge(s->metrics, "scrapr_start_time_seconds", "Unix time the service started."),
        (double)time(NULL));
    if (!cfg->api_token || !*cfg->api_token)
        sh_log_warn("SCRAPR_API_TOKEN is unset: write APIs are open to anyone who can reach "
                    "port %u",
                    s->port);
    if (pthread_create(&s->reg_thread, NULL, register_loop, s) != 0) {
        sh_err_set(err, SH_EIO, "cannot start the Consul registration thread");
        service_free(s);
        return NULL;
    }
    s->reg_started = 1;
    sh_log_info("service started name=%s port=%u address=%s consul=%s", s->name, s->port,
                s->address, cfg->consul_addr);
    return s;
}

struct sh_metrics *sh_service_metrics(struct sh_service *s)
{
    return s->metrics;
}

struct sh_consul *sh_service_consul(struct sh_service *s)
{
    return s->consul;
}

const char *sh_service_id(const struct sh_service *s)
{
    return s->id;
}

unsigned sh_service_port(const struct sh_service *s)
{
    return s->port;
}

void sh_service_wait(struct sh_service *s)
{
    (void)s;
    while (!sh_service_sleep(1000))
        ;
}

void sh_service_stop(struct sh_service *s)
{
    struct sh_err err;
    if (!s)
        return;
    sh_log_info("service stopping name=%s", s->name);
    (void)pthread_mutex_lock(&s->lock);
    s->stopping = 1;
    (void)pthread_cond_broadcast(&s->cond);
    (void)pthread_mutex_unlock(&s->lock);
    if (s->reg_started)
        (void)pthread_join(s->reg_thread, NULL);
    /* Leave Consul first so peers stop sending, then drain the server. */
    if (s->registered && sh_consul_deregister(s->consul, s->id, &err) < 0)
        sh_log_warn("consul deregistration failed id=%s: %s", s->id, err.msg);
    else if (s->registered)
        sh_log_info("consul deregistered id=%s", s->id);
    service_free(s);
    sh_log_info("service stopped");
}
