/* The dry run users develop configurations with: one scrape, no Redis, no
 * datasource, no Consul. Items go to stdout (one JSON object per line), the
 * per-selector diagnostics to stderr. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shared/dsl.h"
#include "shared/extract.h"
#include "scraper.h"

static void print_diagnostics(const json_t *stats)
{
    const json_t *p = json_object_get(stats, "pages");
    const json_t *fo = json_object_get(stats, "follows");
    fprintf(stderr,
            "run: %s -> %s (%.2fs): pages fetched=%lld not_modified=%lld failed=%lld, "
            "follows fetched=%lld failed=%lld, cycles=%lld, items=%lld\n",
            json_string_value(json_object_get(stats, "started_at")),
            json_string_value(json_object_get(stats, "ended_at")),
            json_real_value(json_object_get(stats, "duration_s")),
            (long long)json_integer_value(json_object_get(p, "fetched")),
            (long long)json_integer_value(json_object_get(p, "not_modified")),
            (long long)json_integer_value(json_object_get(p, "failed")),
            (long long)json_integer_value(json_object_get(fo, "fetched")),
            (long long)json_integer_value(json_object_get(fo, "failed")),
            (long long)json_integer_value(json_object_get(stats, "cycles")),
            (long long)json_integer_value(json_object_get(stats, "items")));
    const char *name;
    json_t *f;
    json_object_foreach((json_t *)json_object_get(stats, "fields"), name, f)
    {
        json_t *fr = json_object_get(f, "fill_rate");
        fprintf(stderr, "field %-24s matches=%-6lld filled=%-6lld fill_rate=%5.1f%% errors=%lld\n",
                name, (long long)json_integer_value(json_object_get(f, "matches")),
                (long long)json_integer_value(json_object_get(f, "filled")),
                fr ? json_number_value(fr) * 100.0 : 0.0,
                (long long)json_integer_value(json_object_get(f, "errors")));
        size_t i;
        json_t *e;
        json_array_foreach(json_object_get(f, "first_errors"), i, e)
        {
            fprintf(stderr, "  error: %s\n", json_string_value(e));
        }
    }
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(stats, "errors"), i, e)
    {
        fprintf(stderr, "error: %s: %s\n", json_string_value(json_object_get(e, "url")),
                json_string_value(json_object_get(e, "error")));
    }
}

int scr_once_main(const char *path, const struct scr_fetch_opts *base)
{
    json_error_t jerr;
    json_t *doc = json_load_file(path, 0, &jerr);
    if (!doc) {
        fprintf(stderr, "%s:%d:%d: %s\n", path, jerr.line, jerr.column, jerr.text);
        return 1;
    }
    json_t *problems = NULL;
    int np = sh_dsl_validate(doc, &problems);
    if (np > 0) {
        size_t i;
        json_t *pr;
        fprintf(stderr, "%s: %d problem%s\n", path, np, np == 1 ? "" : "s");
        json_array_foreach(problems, i, pr)
        {
            fprintf(stderr, "%s: %s\n", json_string_value(json_object_get(pr, "path")),
                    json_string_value(json_object_get(pr, "message")));
        }
        json_decref(problems);
        json_decref(doc);
        return 1;
    }
    json_decref(problems);
    struct sh_err err = {0};
    struct sh_dsl *dsl = sh_dsl_compile(doc, &err);
    json_decref(doc);
    if (!dsl) {
        fprintf(stderr, "%s: %s\n", path, err.msg);
        return 1;
    }
    sh_extract_global_init();
    struct scr_fetcher *f = scr_fetcher_for_dsl(dsl, base, &err);
    if (!f) {
        fprintf(stderr, "fetcher: %s\n", err.msg);
        sh_dsl_free(dsl);
        return 1;
    }
    struct scr_run_result res;
    scr_run(dsl, f, NULL, NULL, NULL, &res);
    size_t i;
    json_t *it;
    json_array_foreach(res.items, i, it)
    {
        char *line = json_dumps(it, JSON_COMPACT | JSON_PRESERVE_ORDER);
        if (line) {
            fputs(line, stdout);
            fputc('\n', stdout);
            free(line);
        }
    }
    if (fflush(stdout) != 0)
        res.failed = 1;
    print_diagnostics(res.stats);
    int rc = res.failed ? 1 : 0;
    scr_run_result_done(&res);
    scr_fetcher_free(f);
    sh_dsl_free(dsl);
    return rc;
}
