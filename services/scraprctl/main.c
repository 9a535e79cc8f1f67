/* scraprctl: command-line client of config-discovery. Thin: argv, finding
 * the service (--url, SCRAPR_CONFIG_DISCOVERY_URL, Consul, default), then
 * one command from commands.c. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "scraprctl.h"
#include "shared/consul.h"
#include "shared/xalloc.h"

#define DEFAULT_URL "http://127.0.0.1:3003"

static void usage(FILE *to)
{
    fprintf(to,
            "usage: scraprctl [--url URL] [--json] COMMAND [ARGS]\n"
            "\n"
            "commands:\n"
            "  apply FILE.json|-     create a configuration (POST), or replace it (PUT) when it\n"
            "                        has an _id; FILE may hold an array of configurations\n"
            "  get [--type T] [--collection C] [ID]\n"
            "                        list configurations (a table; --json for JSON) or show one\n"
            "  delete ID             delete a configuration\n"
            "  endpoints             collection -> public URL of each endpoint\n"
            "\n"
            "config-discovery is found at --url, else $SCRAPR_CONFIG_DISCOVERY_URL, else through\n"
            "Consul ($CONSUL_HTTP_ADDR), else at " DEFAULT_URL ".\n"
            "Write commands send $SCRAPR_API_TOKEN as a bearer token.\n"
            "Exit status: 0 done, 1 failed, 2 usage.\n");
}

/* Base URL of config-discovery (caller frees). */
static char *find_service(const char *flag_url)
{
    const char *env = getenv("SCRAPR_CONFIG_DISCOVERY_URL");
    const char *consul_addr = getenv("CONSUL_HTTP_ADDR");
    char *url = NULL;

    if (flag_url && *flag_url)
        url = sh_xstrdup(flag_url);
    else if (env && *env)
        url = sh_xstrdup(env);
    else if (consul_addr && *consul_addr) {
        struct sh_err err;
        struct sh_consul *c = sh_consul_new(consul_addr, getenv("CONSUL_HTTP_TOKEN"), &err);
        struct sh_consul_instances inst = {0};
        if (c && sh_consul_health_service(c, "config-discovery", NULL, 0, 0, &inst, &err) == 0 &&
            inst.n > 0)
            url = sh_xasprintf("http://%s:%u", inst.v[0].address, inst.v[0].port);
        else
            fprintf(stderr,
                    "scraprctl: no healthy config-discovery in Consul at %s (%s); trying %s\n",
                    consul_addr, inst.n == 0 && c ? "none registered" : err.msg, DEFAULT_URL);
        sh_consul_instances_done(&inst);
        sh_consul_free(c);
    }
    if (!url)
        url = sh_xstrdup(DEFAULT_URL);
    for (size_t n = strlen(url); n > 0 && url[n - 1] == '/'; n--)
        url[n - 1] = '\0';
    return url;
}

int main(int argc, char **argv)
{
    const char *flag_url = NULL, *type = NULL, *collection = NULL, *id = NULL, *cmd;
    struct ctl c = {0};
    int i = 1, rc;
    char *url;

    for (; i < argc && argv[i][0] == '-' && argv[i][1] == '-'; i++) {
        if (strcmp(argv[i], "--url") == 0 && i + 1 < argc) {
            flag_url = argv[++i];
        } else if (strncmp(argv[i], "--url=", 6) == 0) {
            flag_url = argv[i] + 6;
        } else if (strcmp(argv[i], "--json") == 0) {
            c.json = 1;
        } else if (strcmp(argv[i], "--help") == 0) {
            usage(stdout);
            return CTL_OK;
        } else {
            fprintf(stderr, "scraprctl: unknown option %s\n", argv[i]);
            usage(stderr);
            return CTL_USAGE;
        }
    }
    if (i >= argc) {
        usage(stderr);
        return CTL_USAGE;
    }
    cmd = argv[i++];
    if (strcmp(cmd, "apply") == 0) {
        if (argc - i != 1) {
            fprintf(stderr, "scraprctl: usage: apply FILE.json|-\n");
            return CTL_USAGE;
        }
    } else if (strcmp(cmd, "get") == 0) {
        for (; i < argc; i++) {
            if (strcmp(argv[i], "--type") == 0 && i + 1 < argc)
                type = argv[++i];
            else if (strcmp(argv[i], "--collection") == 0 && i + 1 < argc)
                collection = argv[++i];
            else if (strcmp(argv[i], "--json") == 0)
                c.json = 1;
            else if (argv[i][0] != '-' && !id)
                id = argv[i];
            else {
                fprintf(stderr, "scraprctl: usage: get [--type T] [--collection C] [ID]\n");
                return CTL_USAGE;
            }
        }
    } else if (strcmp(cmd, "delete") == 0) {
        if (argc - i != 1) {
            fprintf(stderr, "scraprctl: usage: delete ID\n");
            return CTL_USAGE;
        }
    } else if (strcmp(cmd, "endpoints") == 0) {
        if (argc - i != 0) {
            fprintf(stderr, "scraprctl: usage: endpoints\n");
            return CTL_USAGE;
        }
    } else {
        fprintf(stderr, "scraprctl: unknown command %s\n", cmd);
        usage(stderr);
        return CTL_USAGE;
    }

    url = find_service(flag_url);
    c.url = url;
    c.token = getenv("SCRAPR_API_TOKEN");
    if (c.token && !*c.token)
        c.token = NULL;
    if (strcmp(cmd, "apply") == 0)
        rc = ctl_apply(&c, argv[i]);
    else if (strcmp(cmd, "get") == 0)
        rc = ctl_get(&c, type, collection, id);
    else if (strcmp(cmd, "delete") == 0)
        rc = ctl_delete(&c, argv[i]);
    else
        rc = ctl_endpoints(&c);
    free(url);
    return rc;
}
