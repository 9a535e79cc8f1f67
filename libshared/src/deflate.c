/* sh_deflate: see shared/deflate.h. */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <zlib.h>

#include "shared/deflate.h"
#include "shared/xalloc.h"

struct deflate_slot {
    z_stream zs;
    int ready; /* zs initialised with level and fmt */
    int level;
    enum sh_deflate_format fmt;
};

static pthread_key_t slot_key;
static pthread_once_t slot_once = PTHREAD_ONCE_INIT;
static int slot_key_ok;

static void slot_free(void *p)
{
    struct deflate_slot *s = p;
    if (s && s->ready)
        (void)deflateEnd(&s->zs);
    free(s);
}

static void slot_key_make(void)
{
    slot_key_ok = pthread_key_create(&slot_key, slot_free) == 0;
}

/* This thread's stream, ready for level and fmt; NULL when zlib refuses. */
static struct deflate_slot *slot_get(int level, enum sh_deflate_format fmt, int *ret_owned)
{
    struct deflate_slot *s = NULL;
    int window = fmt == SH_DEFLATE_GZIP ? 15 + 16 : 15;

    *ret_owned = 0;
    if (pthread_once(&slot_once, slot_key_make) == 0 && slot_key_ok)
        s = pthread_getspecific(slot_key);
    if (!s) {
        s = sh_xcalloc(1, sizeof(*s));
        if (!slot_key_ok || pthread_setspecific(slot_key, s) != 0)
            *ret_owned = 1; /* no thread slot: a stream for this call only */
    }
    if (s->ready && (s->level != level || s->fmt != fmt)) {
        (void)deflateEnd(&s->zs);
        s->ready = 0;
    }
    if (!s->ready) {
        memset(&s->zs, 0, sizeof(s->zs));
        if (deflateInit2(&s->zs, level, Z_DEFLATED, window, 8, Z_DEFAULT_STRATEGY) != Z_OK) {
            if (*ret_owned)
                free(s);
            return NULL;
        }
        s->ready = 1;
        s->level = level;
        s->fmt = fmt;
    } else if (deflateReset(&s->zs) != Z_OK) {
        return NULL;
    }
    return s;
}

char *sh_deflate(const void *data, size_t len, int level, enum sh_deflate_format fmt,
                 size_t max_out, size_t *ret_len)
{
    struct deflate_slot *s;
    size_t bound;
    char *out = NULL;
    int owned, rc;

    if (len > UINT32_MAX || !(s = slot_get(level, fmt, &owned)))
        return NULL;
    bound = deflateBound(&s->zs, (uLong)len);
    if (max_out > 0 && bound > max_out)
        bound = max_out; /* deflate stops short (Z_OK, not Z_STREAM_END) if it needs more */
    out = sh_xmalloc(bound > 0 ? bound : 1);
    s->zs.next_in = (Bytef *)(uintptr_t)data;
    s->zs.avail_in = (uInt)len;
    s->zs.next_out = (Bytef *)out;
    s->zs.avail_out = (uInt)bound;
    rc = deflate(&s->zs, Z_FINISH);
    *ret_len = s->zs.total_out;
    if (rc != Z_STREAM_END) {
        free(out);
        out = NULL;
    }
    if (owned) {
        (void)deflateEnd(&s->zs);
        free(s);
    }
    return out;
}
