/* Error records (see shared/err.h). Pure functions, thread-safe. */
#include "shared/err.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

void sh_err_set(struct sh_err *err, int code, const char *fmt, ...)
{
    va_list ap;

    if (!err)
        return;
    err->code = code;
    va_start(ap, fmt);
    (void)vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
    va_end(ap);
}

void sh_err_prefix(struct sh_err *err, const char *fmt, ...)
{
    char old[SH_ERR_MSG_MAX];
    va_list ap;
    int n;

    if (!err)
        return;
    memcpy(old, err->msg, sizeof(old));
    va_start(ap, fmt);
    n = vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(err->msg) - 2)
        return;
    (void)snprintf(err->msg + n, sizeof(err->msg) - (size_t)n, ": %.*s",
                   (int)(sizeof(err->msg) - (size_t)n - 3), old);
}

void sh_err_clear(struct sh_err *err)
{
    if (!err)
        return;
    err->code = SH_OK;
    err->msg[0] = '\0';
}

const char *sh_err_code_name(int code)
{
    switch (code) {
    case SH_OK:
        return "ok";
    case SH_EIO:
        return "io";
    case SH_ETIMEOUT:
        return "timeout";
    case SH_EPROTO:
        return "protocol";
    case SH_ENOTFOUND:
        return "not_found";
    case SH_ELIMIT:
        return "limit";
    case SH_ECONFIG:
        return "config";
    case SH_EUPSTREAM:
        return "upstream";
    case SH_ECONFLICT:
        return "conflict";
    default:
        return "unknown";
    }
}
