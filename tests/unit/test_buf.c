/* sh_buf: bounded growth and clean failure at the limit. */
#include "check.h"
#include "shared/buf.h"
#include "shared/envconf.h"

#include <stdlib.h>

static void test_buf_grows_and_stays_terminated(void)
{
    struct sh_buf b;
    sh_buf_init(&b, 0);
    for (int i = 0; i < 1000; i++)
        ASSERT_EQ(sh_buf_appendf(&b, NULL, "%d,", i), 0);
    ASSERT_EQ(b.len, strlen(b.data));
    ASSERT(strncmp(b.data, "0,1,2,", 6) == 0);
    sh_buf_done(&b);
    sh_buf_done(NULL);
}

static void test_buf_refuses_past_limit_and_keeps_content(void)
{
    struct sh_buf b;
    struct sh_err err;
    sh_buf_init(&b, 8);
    ASSERT_EQ(sh_buf_appends(&b, "12345678", &err), 0);
    ASSERT_EQ(sh_buf_appends(&b, "9", &err), -1);
    ASSERT_EQ(err.code, SH_ELIMIT);
    ASSERT_STR_EQ(b.data, "12345678");
    sh_buf_done(&b);
}

static void test_envconf_rejects_out_of_range_with_key_name(void)
{
    long port = 0;
    struct sh_envconf table[] = {
        {"TEST_PORT", SH_ENV_INT, &port, "3000", 1, 65535, "port"},
        {NULL, 0, NULL, NULL, 0, 0, NULL},
    };
    struct sh_err err;
    unsetenv("TEST_PORT");
    ASSERT_EQ(sh_envconf_load(table, &err), 0);
    ASSERT_EQ(port, 3000);
    setenv("TEST_PORT", "70000", 1);
    ASSERT_EQ(sh_envconf_load(table, &err), -1);
    ASSERT_STR_CONTAINS(err.msg, "TEST_PORT: 70000 is out of range");
    setenv("TEST_PORT", "12x", 1);
    ASSERT_EQ(sh_envconf_load(table, &err), -1);
    ASSERT_STR_CONTAINS(err.msg, "TEST_PORT: '12x' is not an integer");
}

int main(void)
{
    RUN(test_buf_grows_and_stays_terminated);
    RUN(test_buf_refuses_past_limit_and_keeps_content);
    RUN(test_envconf_rejects_out_of_range_with_key_name);
    return 0;
}
