/* Prometheus text rendering: exact HELP/TYPE lines once per family,
 * cumulative histogram buckets with `le` merged into existing labels,
 * get-or-create semantics and thread-safe updates. */
#include "check.h"
#include "shared/metrics.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>

static char *render(struct sh_metrics *m)
{
    size_t len;
    char *s = sh_metrics_render(m, &len);
    ASSERT_EQ(len, strlen(s));
    return s;
}

static void test_counters_share_one_help_and_type_per_family(void)
{
    struct sh_metrics *m = sh_metrics_new();
    struct sh_metric *a = sh_metrics_counter(m, "req_total{code=\"200\"}", "Requests.");
    struct sh_metric *b = sh_metrics_counter(m, "req_total{code=\"500\"}", "ignored help");
    struct sh_metric *g = sh_metrics_gauge(m, "queue_len", "Queue\\length\nnow.");
    char *out;
    ASSERT(sh_metrics_counter(m, "req_total{code=\"200\"}", NULL) == a);
    sh_metric_inc(a);
    sh_metric_inc(a);
    sh_metric_add(b, 0.5);
    sh_metric_set(g, -3);
    ASSERT(sh_metric_value(a) == 2);
    out = render(m);
    ASSERT_STR_EQ(out, "# HELP req_total Requests.\n"
                       "# TYPE req_total counter\n"
                       "req_total{code=\"200\"} 2\n"
                       "req_total{code=\"500\"} 0.5\n"
                       "# HELP queue_len Queue\\\\length\\nnow.\n"
                       "# TYPE queue_len gauge\n"
                       "queue_len -3\n");
    free(out);
    sh_metrics_free(m);
    sh_metrics_free(NULL);
}

static void test_histogram_buckets_are_cumulative_with_merged_labels(void)
{
    struct sh_metrics *m = sh_metrics_new();
    const double bounds[] = {0.1, 1, 5};
    struct sh_metric *h =
        sh_metrics_histogram(m, "lat_seconds{route=\"/x\"}", "Latency.", bounds, 3);
    struct sh_metric *p = sh_metrics_histogram(m, "plain_seconds", "Plain.", bounds, 3);
    char *out;
    sh_metric_observe(h, 0.05);
    sh_metric_observe(h, 0.1); /* le is inclusive */
    sh_metric_observe(h, 2);
    sh_metric_observe(h, 7);
    sh_metric_observe(p, 1);
    out = render(m);
    ASSERT_STR_EQ(out, "# HELP lat_seconds Latency.\n"
                       "# TYPE lat_seconds histogram\n"
                       "lat_seconds_bucket{route=\"/x\",le=\"0.1\"} 2\n"
                       "lat_seconds_bucket{route=\"/x\",le=\"1\"} 2\n"
                       "lat_seconds_bucket{route=\"/x\",le=\"5\"} 3\n"
                       "lat_seconds_bucket{route=\"/x\",le=\"+Inf\"} 4\n"
                       "lat_seconds_sum{route=\"/x\"} 9.15\n"
                       "lat_seconds_count{route=\"/x\"} 4\n"
                       "# HELP plain_seconds Plain.\n"
                       "# TYPE plain_seconds histogram\n"
                       "plain_seconds_bucket{le=\"0.1\"} 0\n"
                       "plain_seconds_bucket{le=\"1\"} 1\n"
                       "plain_seconds_bucket{le=\"5\"} 1\n"
                       "plain_seconds_bucket{le=\"+Inf\"} 1\n"
                       "plain_seconds_sum 1\n"
                       "plain_seconds_count 1\n");
    free(out);
    sh_metrics_free(m);
}

static void test_default_buckets_are_latency_seconds(void)
{
    struct sh_metrics *m = sh_metrics_new();
    struct sh_metric *h = sh_metrics_histogram(m, "d_seconds", "D.", NULL, 0);
    char *out;
    sh_metric_observe(h, 0.003);
    out = render(m);
    ASSERT_STR_CONTAINS(out, "d_seconds_bucket{le=\"0.005\"} 1\n");
    ASSERT_STR_CONTAINS(out, "d_seconds_bucket{le=\"10\"} 1\n");
    ASSERT_STR_CONTAINS(out, "d_seconds_sum 0.003\n");
    free(out);
    sh_metrics_free(m);
}

static void test_type_conflict_is_usable_but_not_rendered(void)
{
    struct sh_metrics *m = sh_metrics_new();
    struct sh_metric *c = sh_metrics_counter(m, "x_total", "X.");
    struct sh_metric *g = sh_metrics_gauge(m, "x_total", "X.");
    struct sh_metric *g2 = sh_metrics_gauge(m, "x_total{a=\"1\"}", "X.");
    char *out;
    ASSERT_NOT_NULL(g);
    ASSERT(g != c);
    ASSERT(sh_metrics_gauge(m, "x_total", NULL) == g);
    sh_metric_set(g, 9);
    sh_metric_set(g2, 9);
    sh_metric_inc(c);
    out = render(m);
    ASSERT_STR_EQ(out, "# HELP x_total X.\n# TYPE x_total counter\nx_total 1\n");
    free(out);
    sh_metrics_free(m);
}

static void test_special_values_use_prometheus_spelling(void)
{
    struct sh_metrics *m = sh_metrics_new();
    sh_metric_set(sh_metrics_gauge(m, "a", "a"), INFINITY);
    sh_metric_set(sh_metrics_gauge(m, "b", "b"), NAN);
    sh_metric_set(sh_metrics_gauge(m, "c", "c"), 1e21);
    char *out = render(m);
    ASSERT_STR_CONTAINS(out, "\na +Inf\n");
    ASSERT_STR_CONTAINS(out, "\nb NaN\n");
    ASSERT_STR_CONTAINS(out, "\nc 1e+21\n");
    free(out);
    sh_metrics_free(m);
}

struct worker_arg {
    struct sh_metrics *m;
    int id;
};

static void *worker(void *p)
{
    struct worker_arg *a = p;
    for (int i = 0; i < 20000; i++) {
        char name[64];
        (void)snprintf(name, sizeof(name), "w_total{k=\"%d\"}", i % 50);
        sh_metric_inc(sh_metrics_counter(a->m, "all_total", "All."));
        sh_metric_inc(sh_metrics_counter(a->m, name, "W."));
        sh_metric_observe(sh_metrics_histogram(a->m, "h_seconds", "H.", NULL, 0), 0.01);
    }
    return NULL;
}

static void test_concurrent_updates_are_not_lost(void)
{
    struct sh_metrics *m = sh_metrics_new();
    pthread_t t[4];
    struct worker_arg args[4];
    char *out;
    for (int i = 0; i < 4; i++) {
        args[i] = (struct worker_arg){m, i};
        ASSERT_EQ(pthread_create(&t[i], NULL, worker, &args[i]), 0);
    }
    for (int i = 0; i < 4; i++)
        ASSERT_EQ(pthread_join(t[i], NULL), 0);
    ASSERT(sh_metric_value(sh_metrics_counter(m, "all_total", NULL)) == 80000);
    ASSERT(sh_metric_value(sh_metrics_counter(m, "w_total{k=\"7\"}", NULL)) == 1600);
    out = render(m);
    ASSERT_STR_CONTAINS(out, "h_seconds_count 80000\n");
    ASSERT_STR_CONTAINS(out, "h_seconds_bucket{le=\"0.005\"} 0\n");
    ASSERT_STR_CONTAINS(out, "h_seconds_bucket{le=\"0.01\"} 80000\n");
    free(out);
    sh_metrics_free(m);
}

int main(void)
{
    RUN(test_counters_share_one_help_and_type_per_family);
    RUN(test_histogram_buckets_are_cumulative_with_merged_labels);
    RUN(test_default_buckets_are_latency_seconds);
    RUN(test_type_conflict_is_usable_but_not_rendered);
    RUN(test_special_values_use_prometheus_spelling);
    RUN(test_concurrent_updates_are_not_lost);
    return 0;
}
