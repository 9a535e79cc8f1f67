/* Prometheus metrics: counters, gauges and histograms in a registry rendered
 * in the text exposition format at GET /metrics. A series is named with its
 * labels, e.g. `scrapr_http_requests_total{route="/items",code="200"}`;
 * sh_metrics_* return the same series for the same full name (get-or-create),
 * so callers may look series up per event. Thread-safe; series live as long
 * as the registry. */
#ifndef SHARED_METRICS_H
#define SHARED_METRICS_H

#include <stddef.h>

struct sh_metrics;
struct sh_metric;

struct sh_metrics *sh_metrics_new(void);
void sh_metrics_free(struct sh_metrics *m); /* NULL is a no-op */

/* name: metric name with optional {labels}; help: HELP text (first one wins). */
struct sh_metric *sh_metrics_counter(struct sh_metrics *m, const char *name, const char *help);
struct sh_metric *sh_metrics_gauge(struct sh_metrics *m, const char *name, const char *help);
/* bounds: ascending upper bounds (copied); NULL = default latency buckets in seconds. */
struct sh_metric *sh_metrics_histogram(struct sh_metrics *m, const char *name, const char *help,
                                       const double *bounds, size_t nbounds);

void sh_metric_inc(struct sh_metric *c);
void sh_metric_add(struct sh_metric *c, double v);
void sh_metric_set(struct sh_metric *g, double v);
void sh_metric_observe(struct sh_metric *h, double v);
double sh_metric_value(const struct sh_metric *c); /* counters and gauges */

/* Renders the registry; caller frees the returned string. */
char *sh_metrics_render(struct sh_metrics *m, size_t *ret_len);

#endif
