/* scraprctl: command-line client of config-discovery (private header).
 * main.c parses argv and finds the service; commands.c runs one command.
 * Every command prints what it did to stdout, problems to stderr, and
 * returns the process exit status (0 ok, 1 failed, 2 usage). */
#ifndef SCRAPRCTL_H
#define SCRAPRCTL_H

#include <stdio.h>

enum { CTL_OK = 0, CTL_FAIL = 1, CTL_USAGE = 2 };

struct ctl {
    const char *url;   /* config-discovery base URL, no trailing slash */
    const char *token; /* SCRAPR_API_TOKEN or NULL */
    int json;          /* --json: machine-readable output */
};

/* apply FILE|-: a configuration object (POST, or PUT when it has _id) or an
 * array of them. */
int ctl_apply(const struct ctl *c, const char *file);
/* get [--type T] [--collection C] [ID] */
int ctl_get(const struct ctl *c, const char *type, const char *collection, const char *id);
int ctl_delete(const struct ctl *c, const char *id);
/* endpoints: collection -> public URL of each endpoint configuration. */
int ctl_endpoints(const struct ctl *c);

#endif
