/* Growable byte buffer with a hard size limit, after curl's dynbuf: every
 * buffer fed by the network is a sh_buf with a limit, and appending past the
 * limit fails with SH_ELIMIT instead of growing without bound.
 * Caller-allocated: sh_buf_init() / sh_buf_done(). Not thread-safe. */
#ifndef SHARED_BUF_H
#define SHARED_BUF_H

#include <stddef.h>

#include "shared/err.h"

struct sh_buf {
    char *data; /* always NUL-terminated when non-NULL */
    size_t len;
    size_t cap;
    size_t limit; /* maximum len; 0 = SIZE_MAX */
};

void sh_buf_init(struct sh_buf *b, size_t limit);
void sh_buf_done(struct sh_buf *b);  /* frees data; NULL is a no-op */
void sh_buf_reset(struct sh_buf *b); /* len = 0, keeps memory */
/* 0, or -1 with SH_ELIMIT when len would pass the limit (b is unchanged). */
int sh_buf_append(struct sh_buf *b, const void *data, size_t len, struct sh_err *err);
int sh_buf_appends(struct sh_buf *b, const char *s, struct sh_err *err);
int sh_buf_appendf(struct sh_buf *b, struct sh_err *err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Gives up ownership of the data (never NULL; "" when empty); b is reset. */
char *sh_buf_steal(struct sh_buf *b, size_t *ret_len);

#endif
