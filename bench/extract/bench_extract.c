/* Extraction benchmark driver: runs the engine (libshared extract) over a
 * corpus of saved pages, ROUNDS times, with the configuration chosen by the
 * file name prefix (quotes-*.html → quotes.json, products-*.html →
 * products.json). Pages are read into memory first; the timed loop is
 * parse + scope + fields + filters + pagination per page. Mode "parse" times
 * libxml2's HTML parse alone (the floor). Prints one JSON line.
 *   bench_extract full|parse ROUNDS BENCH_DIR CORPUS_DIR */
#include <dirent.h>
#include <libxml/HTMLparser.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "shared/extract.h"

struct page {
    char *name, *body, *url;
    size_t len;
    int kind; /* 0 quotes, 1 products */
};

static double now(clockid_t c)
{
    struct timespec ts;
    if (clock_gettime(c, &ts) != 0)
        return 0;
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static char *slurp(const char *path, size_t *ret_len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *b = NULL;
    long n = -1;
    if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0) {
        b = malloc((size_t)n + 1);
        if (b && fread(b, 1, (size_t)n, f) != (size_t)n) {
            free(b);
            b = NULL;
        }
    }
    fclose(f);
    if (b) {
        b[n] = '\0';
        *ret_len = (size_t)n;
    }
    return b;
}

static struct sh_dsl *load_config(const char *dir, const char *file)
{
    char path[4096];
    json_error_t je;
    struct sh_err err;
    (void)snprintf(path, sizeof(path), "%s/%s", dir, file);
    json_t *j = json_load_file(path, 0, &je);
    if (!j) {
        fprintf(stderr, "%s: %s\n", path, je.text);
        exit(2);
    }
    struct sh_dsl *d = sh_dsl_compile(j, &err);
    json_decref(j);
    if (!d) {
        fprintf(stderr, "%s: %s\n", path, err.msg);
        exit(2);
    }
    return d;
}

static int cmp_page(const void *a, const void *b)
{
    return strcmp(((const struct page *)a)->name, ((const struct page *)b)->name);
}

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: %s full|parse ROUNDS BENCH_DIR CORPUS_DIR\n", argv[0]);
        return 2;
    }
    int parse_only = strcmp(argv[1], "parse") == 0, rounds = (int)strtol(argv[2], NULL, 10);
    sh_extract_global_init();
    struct sh_dsl *cfg[2] = {load_config(argv[3], "quotes.json"),
                             load_config(argv[3], "products.json")};
    DIR *dir = opendir(argv[4]);
    if (!dir) {
        perror(argv[4]);
        return 2;
    }
    struct page *pages = NULL;
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(dir))) {
        int kind = strncmp(e->d_name, "quotes-", 7) == 0     ? 0
                   : strncmp(e->d_name, "products-", 9) == 0 ? 1
                                                             : -1;
        if (kind < 0)
            continue;
        char path[4096];
        (void)snprintf(path, sizeof(path), "%s/%s", argv[4], e->d_name);
        pages = realloc(pages, (n + 1) * sizeof(*pages));
        if (!pages)
            abort();
        pages[n].name = strdup(e->d_name);
        pages[n].body = slurp(path, &pages[n].len);
        pages[n].kind = kind;
        if (!pages[n].body || !pages[n].name ||
            asprintf(&pages[n].url, "http://%s.example/%s", kind ? "books" : "quotes", e->d_name) <
                0) {
            fprintf(stderr, "cannot read %s\n", path);
            return 2;
        }
        n++;
    }
    closedir(dir);
    qsort(pages, n, sizeof(*pages), cmp_page);
    htmlParserCtxtPtr pctxt = htmlNewParserCtxt(); /* reused, as lxml and the engine do */
    if (!pctxt)
        abort();
    long items = 0, values = 0, nexts = 0;
    size_t bytes = 0;
    double w0 = now(CLOCK_MONOTONIC), c0 = now(CLOCK_PROCESS_CPUTIME_ID);
    for (int r = 0; r < rounds; r++) {
        for (size_t i = 0; i < n; i++) {
            bytes += pages[i].len;
            if (parse_only) {
                htmlDocPtr doc =
                    htmlReadMemory(pages[i].body, (int)pages[i].len, pages[i].url, NULL,
                                   HTML_PARSE_RECOVER | HTML_PARSE_NOERROR | HTML_PARSE_NOWARNING |
                                       HTML_PARSE_NONET | HTML_PARSE_COMPACT);
                items += doc != NULL;
                xmlFreeDoc(doc);
                continue;
            }
            struct sh_err err;
            struct sh_extract *x = sh_extract_page(cfg[pages[i].kind], pages[i].body, pages[i].len,
                                                   pages[i].url, NULL, &err);
            if (!x) {
                fprintf(stderr, "%s: %s\n", pages[i].name, err.msg);
                return 1;
            }
            json_t *its = sh_extract_items(x), *it, *v;
            size_t k;
            const char *key;
            json_array_foreach(its, k, it)
            {
                json_object_foreach(it, key, v)
                {
                    values += !json_is_null(v) && !(json_is_array(v) && json_array_size(v) == 0);
                }
            }
            items += (long)json_array_size(its);
            nexts += (long)json_array_size(sh_extract_next_urls(x));
            sh_extract_free(x);
        }
    }
    double wall = now(CLOCK_MONOTONIC) - w0, cpu = now(CLOCK_PROCESS_CPUTIME_ID) - c0;
    struct rusage ru;
    (void)getrusage(RUSAGE_SELF, &ru);
    long total = (long)n * rounds;
    printf("{\"engine\": \"scrapr-%s\", \"pages\": %ld, \"distinct_pages\": %zu, \"mb\": %.1f, "
           "\"items\": %ld, \"values\": %ld, \"next_urls\": %ld, \"wall_s\": %.3f, "
           "\"cpu_s\": %.3f, \"pages_per_s\": %.1f, \"cpu_ms_per_page\": %.4f, "
           "\"max_rss_mb\": %.1f}\n",
           parse_only ? "parse" : "extract", total, n, (double)bytes / 1e6,
           items / (rounds ? rounds : 1), values / (rounds ? rounds : 1),
           nexts / (rounds ? rounds : 1), wall, cpu, total / wall, 1000.0 * cpu / total,
           (double)ru.ru_maxrss / 1024.0);
    for (size_t i = 0; i < n; i++) {
        free(pages[i].name);
        free(pages[i].body);
        free(pages[i].url);
    }
    free(pages);
    htmlFreeParserCtxt(pctxt);
    sh_dsl_free(cfg[0]);
    sh_dsl_free(cfg[1]);
    return 0;
}
