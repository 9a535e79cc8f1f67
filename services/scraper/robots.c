/* robots.txt (RFC 9309): groups of User-agent lines followed by Allow/Disallow
 * rules. We pick the group whose product token matches ours (case-insensitive),
 * else the "*" group; within it the longest matching rule wins and Allow wins
 * a tie. Patterns support '*' (any run) and a trailing '$' (end anchor).
 * Immutable after parsing, so a parsed set may be shared read-only. */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "shared/xalloc.h"
#include "scraper.h"

struct robots_rule {
    char *pattern;
    int allow;
};

struct scr_robots {
    struct robots_rule *rules;
    size_t n, cap;
    double crawl_delay;
};

struct group {
    int ours;     /* a User-agent line named our token */
    int wildcard; /* a User-agent line was "*" */
};

static void add_rule(struct scr_robots *r, const char *pat, size_t len, int allow)
{
    if (r->n == r->cap) {
        r->cap = r->cap ? r->cap * 2 : 8;
        r->rules = sh_xrealloc(r->rules, r->cap * sizeof(*r->rules));
    }
    r->rules[r->n].pattern = sh_xstrndup(pat, len);
    r->rules[r->n].allow = allow;
    r->n++;
}

static void trim(const char **s, const char **e)
{
    while (*s < *e && isspace((unsigned char)**s))
        (*s)++;
    while (*e > *s && isspace((unsigned char)(*e)[-1]))
        (*e)--;
}

/* Why two sets: the rules of our own group replace the "*" group entirely when
 * present (RFC 9309 2.2.1), and we only know which applies after the whole
 * file is read. */
struct scr_robots *scr_robots_parse(const char *body, size_t len, const char *agent)
{
    struct scr_robots *mine = sh_xcalloc(1, sizeof(*mine));
    struct scr_robots *star = sh_xcalloc(1, sizeof(*star));
    int have_mine = 0, have_star = 0;
    struct group g = {0, 0};
    int in_rules = 0; /* a rule line was seen since the last User-agent line */
    size_t alen = agent ? strlen(agent) : 0;
    const char *p = body, *end = body + len;

    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        const char *le = eol ? eol : end;
        const char *hash = memchr(p, '#', (size_t)(le - p));
        const char *ls = p, *lend = hash ? hash : le;
        p = eol ? eol + 1 : end;
        trim(&ls, &lend);
        const char *colon = memchr(ls, ':', (size_t)(lend - ls));
        if (!colon)
            continue;
        const char *ks = ls, *ke = colon, *vs = colon + 1, *ve = lend;
        trim(&ks, &ke);
        trim(&vs, &ve);
        size_t klen = (size_t)(ke - ks);
        if (klen == 10 && strncasecmp(ks, "user-agent", 10) == 0) {
            if (in_rules) {
                g.ours = g.wildcard = 0;
                in_rules = 0;
            }
            if (ve - vs == 1 && *vs == '*') {
                g.wildcard = 1;
                have_star = 1;
            } else if (alen > 0 && (size_t)(ve - vs) == alen && strncasecmp(vs, agent, alen) == 0) {
                g.ours = 1;
                have_mine = 1;
            }
            continue;
        }
        int allow = klen == 5 && strncasecmp(ks, "allow", 5) == 0;
        int disallow = klen == 8 && strncasecmp(ks, "disallow", 8) == 0;
        int delay = klen == 11 && strncasecmp(ks, "crawl-delay", 11) == 0;
        if (!allow && !disallow && !delay)
            continue; /* sitemap and unknown keys do not end a group */
        in_rules = 1;
        if (delay) {
            char tmp[32];
            size_t n = (size_t)(ve - vs) < sizeof(tmp) - 1 ? (size_t)(ve - vs) : sizeof(tmp) - 1;
            memcpy(tmp, vs, n);
            tmp[n] = '\0';
            char *ep;
            double d = strtod(tmp, &ep);
            if (ep != tmp && d > 0 && d < 86400) {
                if (g.ours)
                    mine->crawl_delay = d;
                if (g.wildcard)
                    star->crawl_delay = d;
            }
            continue;
        }
        if (vs == ve)
            continue; /* "Disallow:" with no path allows everything: no rule */
        if (g.ours)
            add_rule(mine, vs, (size_t)(ve - vs), allow);
        if (g.wildcard)
            add_rule(star, vs, (size_t)(ve - vs), allow);
    }
    if (have_mine) {
        scr_robots_free(star);
        return mine;
    }
    scr_robots_free(mine);
    if (!have_star) {
        scr_robots_free(star);
        return scr_robots_all(1);
    }
    return star;
}

struct scr_robots *scr_robots_all(int allow)
{
    struct scr_robots *r = sh_xcalloc(1, sizeof(*r));
    if (!allow)
        add_rule(r, "/", 1, 0);
    return r;
}

void scr_robots_free(struct scr_robots *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->n; i++)
        free(r->rules[i].pattern);
    free(r->rules);
    free(r);
}

/* Glob match of pattern (with '*' and a final '$') against the start of path.
 * Iterative with one backtrack point, so hostile patterns stay O(n*m). */
static int pat_match(const char *pat, const char *path)
{
    const char *star = NULL, *ss = NULL;
    for (;;) {
        if (pat[0] == '$' && pat[1] == '\0') {
            if (*path == '\0')
                return 1;
        } else if (*pat == '\0') {
            return 1; /* prefix match: the rest of the path is free */
        } else if (*pat == '*') {
            star = ++pat;
            ss = path;
            continue;
        } else if (*path != '\0' && *path == *pat) {
            pat++;
            path++;
            continue;
        }
        if (!star || *ss == '\0')
            return 0;
        pat = star;
        path = ++ss;
    }
}

int scr_robots_allowed(const struct scr_robots *r, const char *path)
{
    if (!r || !path)
        return 1;
    if (strcmp(path, "/robots.txt") == 0)
        return 1;
    size_t best = 0;
    int verdict = 1, found = 0;
    for (size_t i = 0; i < r->n; i++) {
        const struct robots_rule *rule = &r->rules[i];
        if (!pat_match(rule->pattern, path))
            continue;
        size_t l = strlen(rule->pattern);
        if (!found || l > best || (l == best && rule->allow)) {
            best = l;
            verdict = rule->allow;
            found = 1;
        }
    }
    return verdict;
}

double scr_robots_crawl_delay(const struct scr_robots *r)
{
    return r ? r->crawl_delay : 0;
}
