/* Waiting for configuration changes while this scraper holds none (a spare):
 * a Consul blocking query on the KV counter config-discovery bumps on every
 * change (scrapr/revisions/configurations), so a claim is tried within
 * milliseconds of a POST instead of on a timer. Without Consul, or while it is
 * down, the wait degrades to a plain sleep of wait_s (the fallback re-try).
 *
 * Single-threaded: used by the main thread only. A blocking query cannot be
 * interrupted, so a stop request waits for it (at most wait_s + Consul's
 * jitter of wait_s/16). */
#include <time.h>

#include "shared/consul.h"
#include "shared/log.h"
#include "scraper.h"

static long mono_ms(void)
{
    struct timespec ts;
    (void)clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void scr_revision_init(struct scr_revision *r, struct sh_consul *consul, const char *key,
                       long wait_s)
{
    r->consul = consul;
    r->key = key;
    r->wait_s = wait_s > 0 ? wait_s : 3;
    r->index = 0;
    r->consul_down = 0;
}

static void note_consul(struct scr_revision *r, int ok, const struct sh_err *err)
{
    if (!ok && !r->consul_down)
        sh_log_warn("claim_watch_degraded key=%s error=\"%s\" (re-trying claims every %lds)",
                    r->key, err->msg, r->wait_s);
    else if (ok && r->consul_down)
        sh_log_info("claim_watch_recovered key=%s", r->key);
    r->consul_down = !ok;
}

void scr_revision_prime(struct scr_revision *r)
{
    struct sh_err err = {0};
    uint64_t index = 0;

    if (!r->consul)
        return;
    int rc = sh_consul_kv_get(r->consul, r->key, 0, 0, NULL, &index, &err);
    note_consul(r, rc >= 0, &err);
    r->index = rc >= 0 ? index : 0;
}

/* Sleeps what is left of wait_s after `spent` ms; -1 when stopping. */
static int sleep_rest(struct scr_revision *r, long spent, int (*sleep_ms)(long))
{
    long rest = r->wait_s * 1000 - spent;
    return rest > 0 && sleep_ms(rest) ? -1 : 0;
}

int scr_revision_wait(struct scr_revision *r, int (*sleep_ms)(long))
{
    struct sh_err err = {0};
    uint64_t index = 0;
    long t0 = mono_ms();

    if (!r->index) {
        /* Consul unknown or down: prime for the next round, sleep now. */
        scr_revision_prime(r);
        return sleep_rest(r, mono_ms() - t0, sleep_ms);
    }
    int rc = sh_consul_kv_get(r->consul, r->key, r->index, (unsigned)r->wait_s, NULL, &index, &err);
    note_consul(r, rc >= 0, &err);
    if (rc < 0) {
        r->index = 0;
        return sleep_rest(r, mono_ms() - t0, sleep_ms);
    }
    if (index && index != r->index) {
        /* Moved on (or went back: a Consul restart resets indexes). */
        r->index = index;
        return 1;
    }
    /* Timed out. An answer far quicker than asked for is not a wait: sleep
     * the rest rather than spin on a misbehaving agent. */
    long spent = mono_ms() - t0;
    return spent < 100 ? sleep_rest(r, spent, sleep_ms) : 0;
}
