/* Immutable, reference-counted byte blobs. The endpoint's prebuilt responses
 * and similar data shared between an updater thread and HTTP worker threads
 * are blobs: readers take a reference, the writer swaps in a new blob, the old
 * one is freed when its last reader is done. Thread-safe (atomic refcount). */
#ifndef SHARED_BLOB_H
#define SHARED_BLOB_H

#include <stddef.h>

struct sh_blob {
    const char *data;
    size_t len;
    /* private */
    int refs;
    char *owned;
};

/* Takes ownership of data (malloc'd); returns a blob with one reference. */
struct sh_blob *sh_blob_new(char *data, size_t len);
/* Copies len bytes; returns a blob with one reference. */
struct sh_blob *sh_blob_copy(const void *data, size_t len);
struct sh_blob *sh_blob_ref(struct sh_blob *b);
void sh_blob_unref(struct sh_blob *b); /* NULL is a no-op */

#endif
