/* Environment configuration tables (see shared/envconf.h). Called once at start. */
#include "shared/envconf.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "shared/xalloc.h"

static int parse_entry(const struct sh_envconf *e, const char *val, struct sh_err *err)
{
    char *end;

    switch (e->type) {
    case SH_ENV_STRING:
        free(*(char **)e->target);
        *(char **)e->target = val ? sh_xstrdup(val) : NULL;
        return 0;
    case SH_ENV_INT: {
        long v;
        if (!val) {
            *(long *)e->target = 0;
            return 0;
        }
        errno = 0;
        v = strtol(val, &end, 10);
        if (errno || end == val || *end) {
            sh_err_set(err, SH_ECONFIG, "%s: '%s' is not an integer", e->name, val);
            return -1;
        }
        if ((double)v < e->min || (double)v > e->max) {
            sh_err_set(err, SH_ECONFIG, "%s: %ld is out of range [%.0f, %.0f]", e->name, v, e->min,
                       e->max);
            return -1;
        }
        *(long *)e->target = v;
        return 0;
    }
    case SH_ENV_DOUBLE: {
        double v;
        if (!val) {
            *(double *)e->target = 0;
            return 0;
        }
        errno = 0;
        v = strtod(val, &end);
        if (errno || end == val || *end || !isfinite(v)) {
            sh_err_set(err, SH_ECONFIG, "%s: '%s' is not a number", e->name, val);
            return -1;
        }
        if (v < e->min || v > e->max) {
            sh_err_set(err, SH_ECONFIG, "%s: %g is out of range [%g, %g]", e->name, v, e->min,
                       e->max);
            return -1;
        }
        *(double *)e->target = v;
        return 0;
    }
    case SH_ENV_BOOL:
        if (!val) {
            *(int *)e->target = 0;
            return 0;
        }
        if (!strcasecmp(val, "1") || !strcasecmp(val, "true") || !strcasecmp(val, "yes") ||
            !strcasecmp(val, "on")) {
            *(int *)e->target = 1;
            return 0;
        }
        if (!strcasecmp(val, "0") || !strcasecmp(val, "false") || !strcasecmp(val, "no") ||
            !strcasecmp(val, "off") || !*val) {
            *(int *)e->target = 0;
            return 0;
        }
        sh_err_set(err, SH_ECONFIG, "%s: '%s' is not a boolean (use 1/0, true/false)", e->name,
                   val);
        return -1;
    default:
        sh_err_set(err, SH_ECONFIG, "%s: unknown type", e->name);
        return -1;
    }
}

int sh_envconf_load(const struct sh_envconf *table, struct sh_err *err)
{
    for (const struct sh_envconf *e = table; e->name; e++) {
        const char *val = getenv(e->name);
        if (!val || (!*val && e->type != SH_ENV_STRING))
            val = e->def;
        if (parse_entry(e, val, err) < 0)
            return -1;
    }
    return 0;
}

void sh_envconf_load_or_exit(const struct sh_envconf *table)
{
    struct sh_err err;
    if (sh_envconf_load(table, &err) < 0) {
        (void)fprintf(stderr, "%s\n", err.msg);
        exit(1);
    }
}

void sh_envconf_done(const struct sh_envconf *table)
{
    for (const struct sh_envconf *e = table; e->name; e++) {
        if (e->type == SH_ENV_STRING) {
            free(*(char **)e->target);
            *(char **)e->target = NULL;
        }
    }
}

static int is_secret(const char *name)
{
    return strstr(name, "TOKEN") || strstr(name, "PASSWORD") || strstr(name, "SECRET");
}

void sh_envconf_print(const struct sh_envconf *table)
{
    for (const struct sh_envconf *e = table; e->name; e++) {
        switch (e->type) {
        case SH_ENV_STRING: {
            const char *v = *(char **)e->target;
            printf("%s=%s\n", e->name, !v ? "" : is_secret(e->name) ? "***" : v);
            break;
        }
        case SH_ENV_INT:
            printf("%s=%ld\n", e->name, *(long *)e->target);
            break;
        case SH_ENV_DOUBLE:
            printf("%s=%g\n", e->name, *(double *)e->target);
            break;
        case SH_ENV_BOOL:
            printf("%s=%d\n", e->name, *(int *)e->target);
            break;
        default:
            break;
        }
    }
}
