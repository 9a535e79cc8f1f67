/* See shared/kv_watch.h. */
#include "shared/kv_watch.h"

#include <time.h>

#include "shared/consul.h"
#include "shared/log.h"

static long mono_ms(void)
{
    struct timespec ts;
    (void)clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void sh_kv_watch_init(struct sh_kv_watch *w, struct sh_consul *consul, const char *key, long wait_s)
{
    w->consul = key && *key ? consul : NULL; /* no key to watch: waits are sleeps */
    w->key = key;
    w->wait_s = wait_s > 0 ? wait_s : 3;
    w->index = 0;
    w->consul_down = 0;
}

static void note_consul(struct sh_kv_watch *w, int ok, const struct sh_err *err)
{
    if (!ok && !w->consul_down)
        sh_log_warn("kv_watch_degraded key=%s error=\"%s\" (re-trying every %lds)", w->key,
                    err->msg, w->wait_s);
    else if (ok && w->consul_down)
        sh_log_info("kv_watch_recovered key=%s", w->key);
    w->consul_down = !ok;
}

void sh_kv_watch_prime(struct sh_kv_watch *w)
{
    struct sh_err err = {0};
    uint64_t index = 0;
    int rc;

    if (!w->consul)
        return;
    rc = sh_consul_kv_get(w->consul, w->key, 0, 0, NULL, &index, &err);
    note_consul(w, rc >= 0, &err);
    w->index = rc >= 0 ? index : 0;
}

/* Sleeps what is left of wait_s after `spent` ms; -1 when stopping. */
static int sleep_rest(const struct sh_kv_watch *w, long spent, int (*sleep_ms)(long))
{
    long rest = w->wait_s * 1000 - spent;
    return rest > 0 && sleep_ms(rest) ? -1 : 0;
}

int sh_kv_watch_wait(struct sh_kv_watch *w, int (*sleep_ms)(long))
{
    struct sh_err err = {0};
    uint64_t index = 0;
    long t0 = mono_ms(), spent;
    int rc;

    if (!w->index) {
        /* Consul unknown or down: prime for the next round, sleep now. */
        sh_kv_watch_prime(w);
        return sleep_rest(w, mono_ms() - t0, sleep_ms);
    }
    rc = sh_consul_kv_get(w->consul, w->key, w->index, (unsigned)w->wait_s, NULL, &index, &err);
    note_consul(w, rc >= 0, &err);
    if (rc < 0) {
        w->index = 0;
        return sleep_rest(w, mono_ms() - t0, sleep_ms);
    }
    if (index && index != w->index) {
        w->index = index;
        return 1;
    }
    /* Timed out. An answer far quicker than asked for is not a wait: sleep the
     * rest rather than spin on a misbehaving agent. */
    spent = mono_ms() - t0;
    return spent < 100 ? sleep_rest(w, spent, sleep_ms) : 0;
}
