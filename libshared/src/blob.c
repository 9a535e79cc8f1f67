/* Immutable reference-counted blobs (see shared/blob.h). The refcount is
 * atomic so any thread may take or drop a reference; the data itself never
 * changes after creation, so readers need no lock. */
#include "shared/blob.h"

#include <stdlib.h>
#include <string.h>

#include "shared/xalloc.h"

struct sh_blob *sh_blob_new(char *data, size_t len)
{
    struct sh_blob *b = sh_xcalloc(1, sizeof(*b));
    b->owned = data ? data : sh_xstrdup("");
    b->data = b->owned;
    b->len = data ? len : 0;
    __atomic_store_n(&b->refs, 1, __ATOMIC_RELEASE);
    return b;
}

struct sh_blob *sh_blob_copy(const void *data, size_t len)
{
    /* One spare NUL byte so text blobs can be used as C strings. */
    char *p = sh_xmalloc(len + 1);
    if (len)
        memcpy(p, data, len);
    p[len] = '\0';
    return sh_blob_new(p, len);
}

struct sh_blob *sh_blob_ref(struct sh_blob *b)
{
    if (b)
        (void)__atomic_add_fetch(&b->refs, 1, __ATOMIC_RELAXED);
    return b;
}

void sh_blob_unref(struct sh_blob *b)
{
    if (!b)
        return;
    /* acq_rel: the last owner must see every other owner's reads finished. */
    if (__atomic_sub_fetch(&b->refs, 1, __ATOMIC_ACQ_REL) == 0) {
        free(b->owned);
        free(b);
    }
}
