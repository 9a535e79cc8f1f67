/* Prometheus metrics registry and text exposition format 0.0.4 (see
 * shared/metrics.h).
 *
 * A series is identified by its full name ("family{labels}"); series of one
 * family are rendered together under one `# HELP` / `# TYPE` pair, families in
 * order of first registration, series in order of creation. Threading: the
 * registry mutex guards lookup/creation and rendering; counter and gauge
 * values are lock-free (CAS on the double's bits); a histogram has its own
 * mutex so sum, count and buckets move together. The registry owns every
 * series; pointers stay valid until sh_metrics_free(). */
#include "shared/metrics.h"

#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shared/buf.h"
#include "shared/xalloc.h"

enum { M_COUNTER, M_GAUGE, M_HISTOGRAM };

static const char *const type_names[] = {"counter", "gauge", "histogram"};

/* Prometheus client defaults, in seconds. */
static const double default_bounds[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};

struct sh_metric {
    int type;
    char *name;   /* full name as given */
    char *labels; /* text between the braces, "" when none */
    struct family *fam;
    struct sh_metric *next_in_family;
    struct sh_metric *next_in_hash;
    uint64_t bits; /* counter/gauge value as double bits, atomic */
    /* histogram */
    pthread_mutex_t lock;
    double *bounds;
    uint64_t *buckets; /* per bound, non-cumulative; rendered cumulative */
    size_t nbounds;
    double sum;
    uint64_t count;
};

struct family {
    char *name;
    char *help;
    int type;
    struct sh_metric *first, *last;
    struct family *next;
};

struct sh_metrics {
    pthread_mutex_t lock;
    struct family *families, *last_family;
    struct sh_metric **hash;
    size_t nhash, nseries;
    /* Series asked for with a type that conflicts with their family: kept
     * (so callers never get NULL) but not rendered. */
    struct sh_metric *orphans;
};

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

struct sh_metrics *sh_metrics_new(void)
{
    struct sh_metrics *m = sh_xcalloc(1, sizeof(*m));
    if (pthread_mutex_init(&m->lock, NULL) != 0)
        abort();
    m->nhash = 64;
    m->hash = sh_xcalloc(m->nhash, sizeof(*m->hash));
    return m;
}

static void metric_free(struct sh_metric *s)
{
    if (s->type == M_HISTOGRAM)
        (void)pthread_mutex_destroy(&s->lock);
    free(s->name);
    free(s->labels);
    free(s->bounds);
    free(s->buckets);
    free(s);
}

void sh_metrics_free(struct sh_metrics *m)
{
    if (!m)
        return;
    for (struct family *f = m->families, *fn; f; f = fn) {
        fn = f->next;
        for (struct sh_metric *s = f->first, *sn; s; s = sn) {
            sn = s->next_in_family;
            metric_free(s);
        }
        free(f->name);
        free(f->help);
        free(f);
    }
    for (struct sh_metric *s = m->orphans, *sn; s; s = sn) {
        sn = s->next_in_family;
        metric_free(s);
    }
    free(m->hash);
    (void)pthread_mutex_destroy(&m->lock);
    free(m);
}

static void rehash(struct sh_metrics *m)
{
    size_t n = m->nhash * 2;
    struct sh_metric **h = sh_xcalloc(n, sizeof(*h));
    for (size_t i = 0; i < m->nhash; i++) {
        for (struct sh_metric *s = m->hash[i], *sn; s; s = sn) {
            sn = s->next_in_hash;
            size_t b = hash_str(s->name) & (n - 1);
            s->next_in_hash = h[b];
            h[b] = s;
        }
    }
    free(m->hash);
    m->hash = h;
    m->nhash = n;
}

static struct family *find_family(struct sh_metrics *m, const char *name, size_t len)
{
    for (struct family *f = m->families; f; f = f->next)
        if (strlen(f->name) == len && !memcmp(f->name, name, len))
            return f;
    return NULL;
}

static struct sh_metric *get_or_create(struct sh_metrics *m, int type, const char *name,
                                       const char *help, const double *bounds, size_t nbounds)
{
    size_t b, famlen = strcspn(name, "{");
    struct sh_metric *s;
    struct family *f;
    int conflict;

    (void)pthread_mutex_lock(&m->lock);
    b = hash_str(name) & (m->nhash - 1);
    for (s = m->hash[b]; s; s = s->next_in_hash)
        if (!strcmp(s->name, name))
            break;
    if (s && s->type == type)
        goto out;
    conflict = s != NULL;
    for (s = m->orphans; s; s = s->next_in_family)
        if (s->type == type && !strcmp(s->name, name))
            goto out;

    s = sh_xcalloc(1, sizeof(*s));
    s->type = type;
    s->name = sh_xstrdup(name);
    if (name[famlen] == '{') {
        const char *lab = name + famlen + 1;
        size_t llen = strlen(lab);
        if (llen && lab[llen - 1] == '}')
            llen--;
        s->labels = sh_xstrndup(lab, llen);
    } else {
        s->labels = sh_xstrdup("");
    }
    if (type == M_HISTOGRAM) {
        if (!bounds) {
            bounds = default_bounds;
            nbounds = sizeof(default_bounds) / sizeof(default_bounds[0]);
        }
        if (pthread_mutex_init(&s->lock, NULL) != 0)
            abort();
        s->nbounds = nbounds;
        s->bounds = sh_xcalloc(nbounds, sizeof(double));
        if (nbounds)
            memcpy(s->bounds, bounds, nbounds * sizeof(double));
        s->buckets = sh_xcalloc(nbounds, sizeof(uint64_t));
    }

    f = find_family(m, name, famlen);
    if (conflict || (f && f->type != type)) {
        /* Same name or family with another type: usable, never rendered. */
        s->next_in_family = m->orphans;
        m->orphans = s;
        goto out;
    }
    if (!f) {
        f = sh_xcalloc(1, sizeof(*f));
        f->name = sh_xstrndup(name, famlen);
        f->type = type;
        if (m->last_family)
            m->last_family->next = f;
        else
            m->families = f;
        m->last_family = f;
    }
    if (!f->help && help)
        f->help = sh_xstrdup(help);
    s->fam = f;
    if (f->last)
        f->last->next_in_family = s;
    else
        f->first = s;
    f->last = s;
    s->next_in_hash = m->hash[b];
    m->hash[b] = s;
    if (++m->nseries > m->nhash * 2)
        rehash(m);
out:
    (void)pthread_mutex_unlock(&m->lock);
    return s;
}

struct sh_metric *sh_metrics_counter(struct sh_metrics *m, const char *name, const char *help)
{
    return get_or_create(m, M_COUNTER, name, help, NULL, 0);
}

struct sh_metric *sh_metrics_gauge(struct sh_metrics *m, const char *name, const char *help)
{
    return get_or_create(m, M_GAUGE, name, help, NULL, 0);
}

struct sh_metric *sh_metrics_histogram(struct sh_metrics *m, const char *name, const char *help,
                                       const double *bounds, size_t nbounds)
{
    return get_or_create(m, M_HISTOGRAM, name, help, bounds, nbounds);
}

static double bits_to_double(uint64_t u)
{
    double d;
    memcpy(&d, &u, sizeof(d));
    return d;
}

static uint64_t double_to_bits(double d)
{
    uint64_t u;
    memcpy(&u, &d, sizeof(u));
    return u;
}

void sh_metric_add(struct sh_metric *c, double v)
{
    uint64_t old, new;
    if (!c || c->type == M_HISTOGRAM)
        return;
    old = __atomic_load_n(&c->bits, __ATOMIC_RELAXED);
    do {
        new = double_to_bits(bits_to_double(old) + v);
    } while (
        !__atomic_compare_exchange_n(&c->bits, &old, new, 1, __ATOMIC_RELAXED, __ATOMIC_RELAXED));
}

void sh_metric_inc(struct sh_metric *c)
{
    sh_metric_add(c, 1);
}

void sh_metric_set(struct sh_metric *g, double v)
{
    if (g && g->type != M_HISTOGRAM)
        __atomic_store_n(&g->bits, double_to_bits(v), __ATOMIC_RELAXED);
}

void sh_metric_observe(struct sh_metric *h, double v)
{
    if (!h || h->type != M_HISTOGRAM)
        return;
    (void)pthread_mutex_lock(&h->lock);
    for (size_t i = 0; i < h->nbounds; i++) {
        if (v <= h->bounds[i]) {
            h->buckets[i]++;
            break;
        }
    }
    h->sum += v;
    h->count++;
    (void)pthread_mutex_unlock(&h->lock);
}

double sh_metric_value(const struct sh_metric *c)
{
    if (!c)
        return 0;
    if (c->type == M_HISTOGRAM) {
        /* The count; the lock is not needed for a single aligned 64-bit read. */
        return (double)__atomic_load_n(&c->count, __ATOMIC_RELAXED);
    }
    return bits_to_double(__atomic_load_n(&c->bits, __ATOMIC_RELAXED));
}

/* Shortest text that reads back as the same double; Prometheus spellings for
 * the special values. */
static void fmt_double(char *out, size_t n, double v)
{
    if (isnan(v)) {
        (void)snprintf(out, n, "NaN");
        return;
    }
    if (isinf(v)) {
        (void)snprintf(out, n, v > 0 ? "+Inf" : "-Inf");
        return;
    }
    for (int prec = 6; prec <= 17; prec++) {
        (void)snprintf(out, n, "%.*g", prec, v);
        if (strtod(out, NULL) == v)
            return;
    }
}

static void append_help(struct sh_buf *b, const char *help)
{
    for (; *help; help++) {
        if (*help == '\\')
            (void)sh_buf_appends(b, "\\\\", NULL);
        else if (*help == '\n')
            (void)sh_buf_appends(b, "\\n", NULL);
        else
            (void)sh_buf_append(b, help, 1, NULL);
    }
}

static void render_histogram(struct sh_buf *b, const char *fam, struct sh_metric *s)
{
    const char *sep = *s->labels ? "," : "";
    uint64_t cum = 0, count;
    double sum;
    char num[64];

    (void)pthread_mutex_lock(&s->lock);
    for (size_t i = 0; i < s->nbounds; i++) {
        cum += s->buckets[i];
        fmt_double(num, sizeof(num), s->bounds[i]);
        (void)sh_buf_appendf(b, NULL, "%s_bucket{%s%sle=\"%s\"} %llu\n", fam, s->labels, sep, num,
                             (unsigned long long)cum);
    }
    count = s->count;
    sum = s->sum;
    (void)pthread_mutex_unlock(&s->lock);
    (void)sh_buf_appendf(b, NULL, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", fam, s->labels, sep,
                         (unsigned long long)count);
    fmt_double(num, sizeof(num), sum);
    if (*s->labels) {
        (void)sh_buf_appendf(b, NULL, "%s_sum{%s} %s\n", fam, s->labels, num);
        (void)sh_buf_appendf(b, NULL, "%s_count{%s} %llu\n", fam, s->labels,
                             (unsigned long long)count);
    } else {
        (void)sh_buf_appendf(b, NULL, "%s_sum %s\n%s_count %llu\n", fam, num, fam,
                             (unsigned long long)count);
    }
}

char *sh_metrics_render(struct sh_metrics *m, size_t *ret_len)
{
    struct sh_buf b;
    char num[64];

    sh_buf_init(&b, 0);
    (void)pthread_mutex_lock(&m->lock);
    for (struct family *f = m->families; f; f = f->next) {
        if (!f->first)
            continue;
        (void)sh_buf_appendf(&b, NULL, "# HELP %s ", f->name);
        append_help(&b, f->help ? f->help : f->name);
        (void)sh_buf_appendf(&b, NULL, "\n# TYPE %s %s\n", f->name, type_names[f->type]);
        for (struct sh_metric *s = f->first; s; s = s->next_in_family) {
            if (s->type == M_HISTOGRAM) {
                render_histogram(&b, f->name, s);
                continue;
            }
            fmt_double(num, sizeof(num), sh_metric_value(s));
            if (*s->labels)
                (void)sh_buf_appendf(&b, NULL, "%s{%s} %s\n", f->name, s->labels, num);
            else
                (void)sh_buf_appendf(&b, NULL, "%s %s\n", f->name, num);
        }
    }
    (void)pthread_mutex_unlock(&m->lock);
    return sh_buf_steal(&b, ret_len);
}
