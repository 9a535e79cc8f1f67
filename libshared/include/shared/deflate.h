/* One-shot deflate with a per-thread, reused zlib stream.
 *
 * Why not compress2()/deflateInit() per call: a deflate state at the default
 * memLevel is ~270 KiB, above glibc's mmap threshold, so every call maps,
 * zero-faults and unmaps it (madvise/munmap shoot down TLBs on every core),
 * which cost a POST /items more than the compression itself. The stream is
 * reset, not re-created, between calls and freed when its thread exits. */
#ifndef SHARED_DEFLATE_H
#define SHARED_DEFLATE_H

#include <stddef.h>

enum sh_deflate_format {
    SH_DEFLATE_ZLIB, /* RFC 1950 (what uncompress() reads) */
    SH_DEFLATE_GZIP, /* RFC 1952 (Content-Encoding: gzip) */
};

/* Compresses data[0..len) at level (0..9); returns a malloc'd buffer and its
 * length in *ret_len, or NULL when zlib fails or, with max_out > 0, when the
 * result would be longer than max_out bytes (not worth keeping). */
char *sh_deflate(const void *data, size_t len, int level, enum sh_deflate_format fmt,
                 size_t max_out, size_t *ret_len);

#endif
