/* Table-driven configuration from environment variables (12-factor), after
 * redis' config.c: each entry names the variable, its type, bounds and default,
 * and where to store the value. A bad value is reported as "KEY: reason" and
 * the service exits 1 (sh_envconf_load_or_exit).
 *
 * Strings are stored as `char *` owned by the table's target (free them with
 * sh_envconf_done). */
#ifndef SHARED_ENVCONF_H
#define SHARED_ENVCONF_H

#include <stddef.h>

#include "shared/err.h"

enum sh_envconf_type {
    SH_ENV_STRING, /* target: char ** */
    SH_ENV_INT,    /* target: long * ; min/max inclusive */
    SH_ENV_BOOL,   /* target: int * ; 1/0/true/false/yes/no/on/off */
    SH_ENV_DOUBLE, /* target: double * ; min/max inclusive */
};

struct sh_envconf {
    const char *name; /* environment variable */
    int type;
    void *target;
    const char *def; /* default as text; NULL = no value (string stays NULL) */
    double min, max; /* for INT and DOUBLE */
    const char *help;
};

/* Loads every entry of the table (terminated by an entry with name == NULL).
 * Returns 0, or -1 with SH_ECONFIG and "NAME: reason" for the first bad value. */
int sh_envconf_load(const struct sh_envconf *table, struct sh_err *err);
/* As above, printing "NAME: reason" to stderr and exiting 1 on a bad value. */
void sh_envconf_load_or_exit(const struct sh_envconf *table);
/* Frees the strings the table's targets hold. */
void sh_envconf_done(const struct sh_envconf *table);
/* Prints NAME=value lines (values of names containing TOKEN/PASSWORD/SECRET masked). */
void sh_envconf_print(const struct sh_envconf *table);

#endif
