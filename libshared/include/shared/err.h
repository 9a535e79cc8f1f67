/* Error reporting for libshared and the services.
 *
 * A function that can fail returns int 0 / -1 (or a pointer / NULL) and takes a
 * `struct sh_err *err` last, which may be NULL. On failure it fills a code and a
 * readable message, like mongoc's bson_error_t. Library code never logs: the
 * caller decides whether to log, retry or answer with an HTTP status. */
#ifndef SHARED_ERR_H
#define SHARED_ERR_H

enum sh_err_code {
    SH_OK = 0,
    SH_EIO,       /* local I/O or system call failure */
    SH_ETIMEOUT,  /* an operation ran out of time */
    SH_EPROTO,    /* a peer answered something we could not understand */
    SH_ENOTFOUND, /* the thing asked for does not exist */
    SH_ELIMIT,    /* a hard limit (size, count, queue) was reached */
    SH_ECONFIG,   /* bad configuration or user input */
    SH_EUPSTREAM, /* a dependency answered with an error or is unreachable */
    SH_ECONFLICT, /* a compare-and-set or uniqueness condition failed */
};

#define SH_ERR_MSG_MAX 512

struct sh_err {
    int code;
    char msg[SH_ERR_MSG_MAX]; /* truncated, always NUL-terminated */
};

/* Fills err (when non-NULL) with code and a printf-formatted message. */
void sh_err_set(struct sh_err *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Prefixes err's message with printf-formatted context ("mongo insert: ..."). */
void sh_err_prefix(struct sh_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Resets err to SH_OK with an empty message; NULL is a no-op. */
void sh_err_clear(struct sh_err *err);

/* Short stable name of a code ("io", "timeout", ...), for logs and metrics. */
const char *sh_err_code_name(int code);

#endif
