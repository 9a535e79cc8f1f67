/* robots.txt parsing and matching (RFC 9309) and the SSRF address guard. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

#include "check.h"
#include "scraper.h"

static struct scr_robots *parse(const char *txt, const char *agent)
{
    return scr_robots_parse(txt, strlen(txt), agent);
}

static void test_robots_longest_match_wins_and_allow_breaks_ties(void)
{
    struct scr_robots *r = parse("User-agent: *\n"
                                 "Disallow: /private/\n"
                                 "Allow: /private/open\n"
                                 "Disallow: /*.pdf$\n"
                                 "Disallow: /tmp # comment\n"
                                 "Allow: /same\nDisallow: /same\n",
                                 "scrapr");
    ASSERT_EQ(scr_robots_allowed(r, "/"), 1);
    ASSERT_EQ(scr_robots_allowed(r, "/private/x"), 0);
    ASSERT_EQ(scr_robots_allowed(r, "/private/open/doc"), 1);
    ASSERT_EQ(scr_robots_allowed(r, "/files/a.pdf"), 0);
    ASSERT_EQ(scr_robots_allowed(r, "/files/a.pdf?x=1"), 1);
    ASSERT_EQ(scr_robots_allowed(r, "/tmpfile"), 0);
    ASSERT_EQ(scr_robots_allowed(r, "/same"), 1);
    ASSERT_EQ(scr_robots_allowed(r, "/robots.txt"), 1);
    scr_robots_free(r);
}

static void test_robots_own_group_replaces_star_group(void)
{
    const char *txt = "User-agent: *\nDisallow: /\n\n"
                      "User-agent: other\nUser-agent: SCRAPR\nDisallow: /only-this\n"
                      "Crawl-delay: 2\n";
    struct scr_robots *r = parse(txt, "scrapr");
    ASSERT_EQ(scr_robots_allowed(r, "/anything"), 1);
    ASSERT_EQ(scr_robots_allowed(r, "/only-this/x"), 0);
    ASSERT(scr_robots_crawl_delay(r) > 1.9 && scr_robots_crawl_delay(r) < 2.1);
    scr_robots_free(r);
    r = parse(txt, "somebot");
    ASSERT_EQ(scr_robots_allowed(r, "/anything"), 0);
    scr_robots_free(r);
}

static void test_robots_empty_disallow_and_no_groups_allow_all(void)
{
    struct scr_robots *r = parse("User-agent: *\nDisallow:\n", "scrapr");
    ASSERT_EQ(scr_robots_allowed(r, "/x"), 1);
    scr_robots_free(r);
    r = parse("garbage\n\x01\x02 no colon\n", "scrapr");
    ASSERT_EQ(scr_robots_allowed(r, "/x"), 1);
    scr_robots_free(r);
    r = scr_robots_all(0);
    ASSERT_EQ(scr_robots_allowed(r, "/x"), 0);
    scr_robots_free(r);
}

static void test_robots_hostile_wildcards_stay_fast(void)
{
    char pat[2100], path[4100];
    strcpy(pat, "User-agent: *\nDisallow: /");
    for (int i = 0; i < 1000; i++)
        strcat(pat, "*a");
    strcat(pat, "b\n");
    memset(path, 'a', sizeof(path) - 1);
    path[0] = '/';
    path[sizeof(path) - 1] = '\0';
    struct scr_robots *r = parse(pat, "scrapr");
    ASSERT_EQ(scr_robots_allowed(r, path), 1);
    scr_robots_free(r);
}

static int forbidden(const char *ip)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    if (strchr(ip, ':')) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
        s6->sin6_family = AF_INET6;
        ASSERT_EQ(inet_pton(AF_INET6, ip, &s6->sin6_addr), 1);
    } else {
        struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
        s4->sin_family = AF_INET;
        ASSERT_EQ(inet_pton(AF_INET, ip, &s4->sin_addr), 1);
    }
    return scr_addr_forbidden((struct sockaddr *)&ss);
}

static void test_ssrf_guard_classifies_addresses(void)
{
    const char *bad[] = {"127.0.0.1",
                         "127.9.9.9",
                         "10.1.2.3",
                         "172.16.0.1",
                         "172.31.255.255",
                         "192.168.1.1",
                         "169.254.169.254",
                         "169.254.1.1",
                         "0.0.0.0",
                         "100.64.0.1",
                         "224.0.0.1",
                         "255.255.255.255",
                         "::1",
                         "::",
                         "fe80::1",
                         "fc00::1",
                         "fd12:3456::1",
                         "::ffff:127.0.0.1",
                         "::ffff:10.0.0.1",
                         "ff02::1",
                         "64:ff9b::a9fe:a9fe",
                         NULL};
    const char *good[] = {"8.8.8.8",     "172.32.0.1",           "172.15.255.255", "1.1.1.1",
                          "192.169.0.1", "2001:4860:4860::8888", "::ffff:8.8.8.8", NULL};
    for (int i = 0; bad[i]; i++)
        if (!forbidden(bad[i]))
            CHECK_FAIL("%s should be forbidden", bad[i]);
    for (int i = 0; good[i]; i++)
        if (forbidden(good[i]))
            CHECK_FAIL("%s should be allowed", good[i]);
}

int main(void)
{
    RUN(test_robots_longest_match_wins_and_allow_breaks_ties);
    RUN(test_robots_own_group_replaces_star_group);
    RUN(test_robots_empty_disallow_and_no_groups_allow_all);
    RUN(test_robots_hostile_wildcards_stay_fast);
    RUN(test_ssrf_guard_classifies_addresses);
    return 0;
}
