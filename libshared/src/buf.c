/* Bounded growable buffer (see shared/buf.h). */
#include "shared/buf.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shared/xalloc.h"

void sh_buf_init(struct sh_buf *b, size_t limit)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    b->limit = limit ? limit : SIZE_MAX - 1;
}

void sh_buf_done(struct sh_buf *b)
{
    if (!b)
        return;
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

void sh_buf_reset(struct sh_buf *b)
{
    b->len = 0;
    if (b->data)
        b->data[0] = '\0';
}

int sh_buf_append(struct sh_buf *b, const void *data, size_t len, struct sh_err *err)
{
    if (len > b->limit - b->len) {
        sh_err_set(err, SH_ELIMIT, "size limit of %zu bytes exceeded", b->limit);
        return -1;
    }
    if (b->len + len + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + len + 1)
            cap *= 2;
        b->data = sh_xrealloc(b->data, cap);
        b->cap = cap;
    }
    if (len)
        memcpy(b->data + b->len, data, len);
    b->len += len;
    b->data[b->len] = '\0';
    return 0;
}

int sh_buf_appends(struct sh_buf *b, const char *s, struct sh_err *err)
{
    return sh_buf_append(b, s, strlen(s), err);
}

int sh_buf_appendf(struct sh_buf *b, struct sh_err *err, const char *fmt, ...)
{
    va_list ap;
    char *s = NULL;
    int n, rc;

    va_start(ap, fmt);
    n = vasprintf(&s, fmt, ap);
    va_end(ap);
    if (n < 0) {
        sh_err_set(err, SH_EIO, "formatting failed");
        return -1;
    }
    rc = sh_buf_append(b, s, (size_t)n, err);
    free(s);
    return rc;
}

char *sh_buf_steal(struct sh_buf *b, size_t *ret_len)
{
    char *d = b->data ? b->data : sh_xstrdup("");
    if (ret_len)
        *ret_len = b->len;
    b->data = NULL;
    b->len = b->cap = 0;
    return d;
}
