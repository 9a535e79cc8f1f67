/* sh_blob: copies are NUL-terminated, references from many threads balance
 * and the last unref frees (ASan reports a leak or double free otherwise). */
#include "check.h"
#include "shared/blob.h"
#include "shared/xalloc.h"

#include <pthread.h>

static void test_copy_is_independent_and_terminated(void)
{
    char src[] = "hello";
    struct sh_blob *b = sh_blob_copy(src, 5);
    src[0] = 'X';
    ASSERT_EQ(b->len, 5);
    ASSERT_STR_EQ(b->data, "hello");
    sh_blob_unref(b);
    sh_blob_unref(NULL);
}

static void test_new_takes_ownership(void)
{
    struct sh_blob *b = sh_blob_new(sh_xstrdup("abc"), 3);
    ASSERT(sh_blob_ref(b) == b);
    sh_blob_unref(b);
    ASSERT_STR_EQ(b->data, "abc"); /* still alive: one reference left */
    sh_blob_unref(b);
}

static void *hammer(void *p)
{
    struct sh_blob *b = p;
    for (int i = 0; i < 100000; i++) {
        struct sh_blob *r = sh_blob_ref(b);
        ASSERT_EQ(r->data[0], 'x');
        sh_blob_unref(r);
    }
    sh_blob_unref(b); /* the reference main took for this thread */
    return NULL;
}

static void test_refs_from_many_threads_balance(void)
{
    struct sh_blob *b = sh_blob_copy("x", 1);
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        ASSERT_EQ(pthread_create(&t[i], NULL, hammer, sh_blob_ref(b)), 0);
    sh_blob_unref(b);
    for (int i = 0; i < 4; i++)
        ASSERT_EQ(pthread_join(t[i], NULL), 0);
}

int main(void)
{
    RUN(test_copy_is_independent_and_terminated);
    RUN(test_new_takes_ownership);
    RUN(test_refs_from_many_threads_balance);
    return 0;
}
