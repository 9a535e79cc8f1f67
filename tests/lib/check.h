/* Minimal test helpers after libuv's test/task.h: ASSERT_* print the
 * expression and both values on failure and abort the test binary (exit 1).
 * A test file defines its tests as `static void test_x(void)` and lists them
 * in main() with RUN(test_x). */
#ifndef TESTS_CHECK_H
#define TESTS_CHECK_H

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK_FAIL(...)                                                                            \
    do {                                                                                           \
        fprintf(stderr, "%s:%d: ", __FILE__, __LINE__);                                            \
        fprintf(stderr, __VA_ARGS__);                                                              \
        fprintf(stderr, "\n");                                                                     \
        exit(1);                                                                                   \
    } while (0)

#define ASSERT(expr)                                                                               \
    do {                                                                                           \
        if (!(expr))                                                                               \
            CHECK_FAIL("assertion failed: %s", #expr);                                             \
    } while (0)

#define ASSERT_INT_OP(a, op, b)                                                                    \
    do {                                                                                           \
        intmax_t a_ = (intmax_t)(a), b_ = (intmax_t)(b);                                           \
        if (!(a_ op b_))                                                                           \
            CHECK_FAIL("assertion failed: %s %s %s (%jd %s %jd)", #a, #op, #b, a_, #op, b_);       \
    } while (0)
#define ASSERT_EQ(a, b) ASSERT_INT_OP(a, ==, b)
#define ASSERT_NE(a, b) ASSERT_INT_OP(a, !=, b)
#define ASSERT_LT(a, b) ASSERT_INT_OP(a, <, b)
#define ASSERT_LE(a, b) ASSERT_INT_OP(a, <=, b)
#define ASSERT_GT(a, b) ASSERT_INT_OP(a, >, b)
#define ASSERT_GE(a, b) ASSERT_INT_OP(a, >=, b)

#define ASSERT_STR_EQ(a, b)                                                                        \
    do {                                                                                           \
        const char *a_ = (a), *b_ = (b);                                                           \
        if (!a_ || !b_ || strcmp(a_, b_) != 0)                                                     \
            CHECK_FAIL("assertion failed: %s == %s (\"%s\" vs \"%s\")", #a, #b,                    \
                       a_ ? a_ : "(null)", b_ ? b_ : "(null)");                                    \
    } while (0)

#define ASSERT_STR_CONTAINS(hay, needle)                                                           \
    do {                                                                                           \
        const char *h_ = (hay), *n_ = (needle);                                                    \
        if (!h_ || !strstr(h_, n_))                                                                \
            CHECK_FAIL("assertion failed: %s contains \"%s\" (got \"%s\")", #hay, n_,              \
                       h_ ? h_ : "(null)");                                                        \
    } while (0)

#define ASSERT_NULL(p) ASSERT((p) == NULL)
#define ASSERT_NOT_NULL(p) ASSERT((p) != NULL)

#define RUN(fn)                                                                                    \
    do {                                                                                           \
        fprintf(stderr, "-- %s\n", #fn);                                                           \
        fn();                                                                                      \
        fprintf(stderr, "ok %s\n", #fn);                                                           \
    } while (0)

/* Integration tests need the test bed's env; a missing one is a failure, never a skip. */
static inline const char *check_require_env(const char *name, const char *file, int line)
{
    const char *v = getenv(name);
    if (!v || !*v) {
        fprintf(stderr, "%s:%d: %s is not set: run under tests/lib/testbed.sh\n", file, line, name);
        exit(1);
    }
    return v;
}
#define REQUIRE_ENV(name) check_require_env(name, __FILE__, __LINE__)

#endif
