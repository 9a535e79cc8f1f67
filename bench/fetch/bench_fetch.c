/* Fetch-rate benchmark for the scraper's fetcher (libcurl multi interface):
 * fetches the URLs listed in a file round-robin, in batches handed to
 * scr_fetch_many, until the duration has passed; prints requests/s.
 *
 *   bench_fetch URLS_FILE CONCURRENCY SECONDS
 *
 * robots.txt off, no rate limit, SSRF guard lifted (loopback nginx). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "shared/xalloc.h"
#include "scraper.h"

static double now(void)
{
    struct timespec ts;
    (void)clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: %s URLS_FILE CONCURRENCY SECONDS\n", argv[0]);
        return 2;
    }
    FILE *fp = fopen(argv[1], "r");
    if (!fp) {
        perror(argv[1]);
        return 1;
    }
    char **urls = NULL;
    size_t n = 0, cap = 0;
    char line[4096];
    while (fgets(line, sizeof(line), fp)) {
        line[strcspn(line, "\r\n")] = '\0';
        if (!*line)
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 256;
            urls = sh_xrealloc(urls, cap * sizeof(*urls));
        }
        urls[n++] = sh_xstrdup(line);
    }
    (void)fclose(fp);
    if (n == 0) {
        fprintf(stderr, "no URLs in %s\n", argv[1]);
        return 1;
    }
    int conc = atoi(argv[2]);
    double secs = atof(argv[3]);
    struct scr_fetch_opts o = {0};
    o.allow_private = 1;
    o.ignore_robots = 1;
    o.max_concurrency = conc;
    o.max_redirects = -1;
    struct sh_err err = {0};
    struct scr_fetcher *f = scr_fetcher_new(&o, &err);
    if (!f) {
        fprintf(stderr, "fetcher: %s\n", err.msg);
        return 1;
    }
    size_t batch = (size_t)conc * 20;
    struct scr_fetch_req *reqs = sh_xcalloc(batch, sizeof(*reqs));
    struct scr_fetch_result *res = sh_xcalloc(batch, sizeof(*res));
    size_t next = 0;
    unsigned long long ok = 0, bad = 0, bytes = 0;
    double t0 = now(), t;
    struct rusage ru0, ru1;
    (void)getrusage(RUSAGE_SELF, &ru0);
    do {
        for (size_t i = 0; i < batch; i++)
            reqs[i].url = urls[next++ % n];
        scr_fetch_many(f, reqs, batch, res, NULL);
        for (size_t i = 0; i < batch; i++) {
            if (res[i].outcome == SCR_FETCH_OK && res[i].status == 200) {
                ok++;
                bytes += res[i].body_len;
            } else {
                bad++;
            }
            scr_fetch_result_done(&res[i]);
        }
        t = now();
    } while (t - t0 < secs);
    (void)getrusage(RUSAGE_SELF, &ru1);
    double cpu = (double)(ru1.ru_utime.tv_sec - ru0.ru_utime.tv_sec) +
                 (double)(ru1.ru_utime.tv_usec - ru0.ru_utime.tv_usec) / 1e6 +
                 (double)(ru1.ru_stime.tv_sec - ru0.ru_stime.tv_sec) +
                 (double)(ru1.ru_stime.tv_usec - ru0.ru_stime.tv_usec) / 1e6;
    printf("requests=%llu errors=%llu seconds=%.2f rate=%.0f req/s MB/s=%.1f cpu_s=%.2f "
           "cpu_us_per_req=%.1f peak_rss_kb=%ld\n",
           ok, bad, t - t0, (double)ok / (t - t0), (double)bytes / (t - t0) / 1e6, cpu,
           ok ? cpu / (double)ok * 1e6 : 0.0, ru1.ru_maxrss);
    scr_fetcher_free(f);
    for (size_t i = 0; i < n; i++)
        free(urls[i]);
    free(urls);
    free(reqs);
    free(res);
    return bad ? 1 : 0;
}
