/* sh_deflate: output inflates back to the input in both formats, a reused
 * per-thread stream gives the same bytes as a fresh one whatever came before
 * (another level, another format, a refused call), max_out refuses output
 * that would not fit, and many threads compress at once (ASan reports a
 * leak of a thread's stream). */
#include "check.h"
#include "shared/deflate.h"
#include "shared/xalloc.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

/* Inflates a zlib (window 15) or gzip (15 + 16) stream; returns a malloc'd copy. */
static char *inflate_all(const char *z, size_t zlen, int window, size_t want)
{
    z_stream s;
    char *out = sh_xmalloc(want + 1);

    memset(&s, 0, sizeof(s));
    ASSERT_EQ(inflateInit2(&s, window), Z_OK);
    s.next_in = (Bytef *)(uintptr_t)z;
    s.avail_in = (uInt)zlen;
    s.next_out = (Bytef *)out;
    s.avail_out = (uInt)want + 1;
    ASSERT_EQ(inflate(&s, Z_FINISH), Z_STREAM_END);
    ASSERT_EQ(s.total_out, want);
    (void)inflateEnd(&s);
    return out;
}

static char *sample(size_t n, unsigned seed)
{
    char *s = sh_xmalloc(n);
    for (size_t i = 0; i < n; i++) /* compressible, but not trivially */
        s[i] = (char)("{\"id\":\"item-\",\"price\":12.5}"[(i * 7 + seed) % 27] + (char)(i % 3));
    return s;
}

static void round_trip(const char *data, size_t n, int level, enum sh_deflate_format fmt)
{
    size_t zlen = 0;
    char *z = sh_deflate(data, n, level, fmt, 0, &zlen), *back;

    ASSERT(z != NULL);
    if (fmt == SH_DEFLATE_GZIP)
        ASSERT(zlen >= 2 && (unsigned char)z[0] == 0x1f && (unsigned char)z[1] == 0x8b);
    back = inflate_all(z, zlen, fmt == SH_DEFLATE_GZIP ? 15 + 16 : 15, n);
    ASSERT(memcmp(back, data, n) == 0);
    free(back);
    free(z);
}

static void test_both_formats_round_trip_on_a_reused_stream(void)
{
    char *d = sample(100000, 1);
    for (int pass = 0; pass < 3; pass++) {
        round_trip(d, 100000, 1, SH_DEFLATE_ZLIB);
        round_trip(d, 100000, 6, SH_DEFLATE_GZIP);
        round_trip(d, 1000, 1, SH_DEFLATE_ZLIB);
        round_trip(d, 0, 6, SH_DEFLATE_GZIP);
    }
    free(d);
}

static void test_reused_stream_gives_the_bytes_of_a_fresh_one(void)
{
    char *d = sample(50000, 2);
    size_t zlen = 0;
    uLongf flen = compressBound(50000);
    Bytef *fresh = sh_xmalloc(flen);
    char *z;

    ASSERT_EQ(compress2(fresh, &flen, (const Bytef *)d, 50000, 1), Z_OK);
    /* dirty the thread's stream first: other data, a refused call */
    free(sh_deflate("abcabcabc", 9, 1, SH_DEFLATE_ZLIB, 0, &zlen));
    ASSERT(sh_deflate(d, 50000, 1, SH_DEFLATE_ZLIB, 10, &zlen) == NULL);
    z = sh_deflate(d, 50000, 1, SH_DEFLATE_ZLIB, 0, &zlen);
    ASSERT(z != NULL);
    ASSERT_EQ(zlen, flen);
    ASSERT(memcmp(z, fresh, flen) == 0);
    free(z);
    free(fresh);
    free(d);
}

static void test_max_out_refuses_output_that_does_not_fit(void)
{
    char rnd[4096];
    size_t zlen = 0;
    unsigned x = 12345;
    char *z;

    for (size_t i = 0; i < sizeof(rnd); i++) { /* incompressible */
        x = x * 1103515245u + 12345u;
        rnd[i] = (char)(x >> 16);
    }
    ASSERT(sh_deflate(rnd, sizeof(rnd), 1, SH_DEFLATE_ZLIB, sizeof(rnd) - 1, &zlen) == NULL);
    z = sh_deflate(rnd, sizeof(rnd), 1, SH_DEFLATE_ZLIB, 0, &zlen);
    ASSERT(z != NULL && zlen >= sizeof(rnd));
    free(z);
}

static void *worker(void *arg)
{
    unsigned seed = (unsigned)(uintptr_t)arg;
    char *d = sample(20000, seed);
    for (int i = 0; i < 50; i++)
        round_trip(d, 20000 - (size_t)i * 100, 1 + (int)(seed % 9),
                   i % 2 ? SH_DEFLATE_GZIP : SH_DEFLATE_ZLIB);
    free(d);
    return NULL;
}

static void test_threads_compress_at_once(void)
{
    pthread_t t[4];
    for (uintptr_t i = 0; i < 4; i++)
        ASSERT_EQ(pthread_create(&t[i], NULL, worker, (void *)i), 0);
    for (int i = 0; i < 4; i++)
        ASSERT_EQ(pthread_join(t[i], NULL), 0);
}

int main(void)
{
    RUN(test_both_formats_round_trip_on_a_reused_stream);
    RUN(test_reused_stream_gives_the_bytes_of_a_fresh_one);
    RUN(test_max_out_refuses_output_that_does_not_fit);
    RUN(test_threads_compress_at_once);
    return 0;
}
