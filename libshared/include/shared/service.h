/* The common life of a scrapr service, so each main.c stays thin:
 * common env (PORT, SERVICE_ADDRESS, CONSUL_HTTP_ADDR, SCRAPR_API_TOKEN,
 * LOG_LEVEL, LOG_FORMAT), logging set-up, HTTP server start, Consul
 * registration (retried in the background while Consul is down), SIGTERM/SIGINT
 * handling, deregistration and shutdown. */
#ifndef SHARED_SERVICE_H
#define SHARED_SERVICE_H

#include "shared/consul.h"
#include "shared/envconf.h"
#include "shared/http_server.h"
#include "shared/metrics.h"

struct sh_service_config {
    char *consul_addr; /* CONSUL_HTTP_ADDR */
    char *api_token;   /* SCRAPR_API_TOKEN */
    char *log_level;   /* LOG_LEVEL */
    char *log_format;  /* LOG_FORMAT */
    char *address;     /* SERVICE_ADDRESS ("" = first non-loopback address) */
    long port;         /* PORT */
};

/* Loads the common env for `name` with its default port; exits 1 on a bad value.
 * Also handles argv: --check-config prints the config and "configuration OK"
 * and exits 0; --help prints the variables. */
void sh_service_config_load(struct sh_service_config *cfg, const char *name, long default_port,
                            int argc, char **argv);
/* As above, also loading the service's own table `extra` (may be NULL) with
 * the same rules: listed by --help, printed by --check-config, a bad value
 * exits 1 with "NAME: reason". Free its strings with sh_envconf_done(extra). */
void sh_service_config_load_ex(struct sh_service_config *cfg, const char *name, long default_port,
                               const struct sh_envconf *extra, int argc, char **argv);
void sh_service_config_done(struct sh_service_config *cfg);

struct sh_service;

struct sh_service_opts {
    const char *name; /* Consul service name */
    const struct sh_service_config *cfg;
    const struct sh_http_route *routes; /* service routes ({NULL}-terminated) */
    void *arg;                          /* handler argument */
    unsigned threads;                   /* see sh_http_server_opts */
    size_t max_body;
    sh_http_health_fn health;
    void *health_arg;
    const char *const *tags; /* Consul tags, NULL-terminated, may be NULL */
};

/* Installs SIGTERM/SIGINT handlers, creates metrics + Consul client, starts the
 * HTTP server and registers. Returns NULL (err filled) if the server cannot start. */
struct sh_service *sh_service_start(const struct sh_service_opts *opts, struct sh_err *err);
struct sh_metrics *sh_service_metrics(struct sh_service *s);
struct sh_consul *sh_service_consul(struct sh_service *s);
unsigned sh_service_port(const struct sh_service *s);
/* The instance's Consul service id ("<name>-<address>[-<hostname>]-<port>"); valid until stop. */
const char *sh_service_id(const struct sh_service *s);
/* Non-zero once SIGTERM/SIGINT arrived (or sh_service_request_stop was called). */
int sh_service_stopping(void);
void sh_service_request_stop(void);
/* Sleeps up to ms, returning early (non-zero) when a stop was requested. */
int sh_service_sleep(long ms);
/* Blocks until a stop is requested. */
void sh_service_wait(struct sh_service *s);
/* Deregisters from Consul, stops the HTTP server, frees. NULL is a no-op. */
void sh_service_stop(struct sh_service *s);

#endif
