/* Allocation wrappers that abort on out-of-memory, so callers need no OOM
 * branches (house rule). Everything returned is freed with free(). */
#ifndef SHARED_XALLOC_H
#define SHARED_XALLOC_H

#include <stddef.h>

void *sh_xmalloc(size_t size);
void *sh_xcalloc(size_t n, size_t size);
void *sh_xrealloc(void *ptr, size_t size);
char *sh_xstrdup(const char *s);
char *sh_xstrndup(const char *s, size_t n);
/* printf into a new string; caller frees. */
char *sh_xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
