/* Waiting for a Consul KV key to change: a blocking query on the key's index,
 * degrading to a plain sleep while Consul is unknown or down. Used by spare
 * scrapers and endpoints to claim a configuration within milliseconds of the
 * revision bump config-discovery makes on every change.
 *
 * Not thread-safe: one watch per thread. A blocking query cannot be
 * interrupted, so a stop request waits for it (at most wait_s plus Consul's
 * jitter of wait_s/16). */
#ifndef SHARED_KV_WATCH_H
#define SHARED_KV_WATCH_H

#include <stdint.h>

struct sh_consul;

struct sh_kv_watch {
    struct sh_consul *consul; /* borrowed, may be NULL (then waits are sleeps) */
    const char *key;          /* borrowed */
    long wait_s;              /* blocking-query wait = fallback re-try period */
    uint64_t index;           /* last index seen; 0 = unknown */
    int consul_down;          /* logged once per outage */
};

/* wait_s <= 0 means 3 s. A NULL or empty key watches nothing (consul is
 * then left unset: waits are sleeps). */
void sh_kv_watch_init(struct sh_kv_watch *w, struct sh_consul *consul, const char *key,
                      long wait_s);
/* Learns the current index without blocking. Call it before looking at the
 * state the key guards, so a change after that look wakes the next wait. */
void sh_kv_watch_prime(struct sh_kv_watch *w);
/* 1 as soon as the key's index moves past the one last seen (or back: a
 * Consul restart resets indexes), 0 after wait_s without a change (or when
 * Consul is down: then it sleeps wait_s), -1 when sleep_ms reported a stop. */
int sh_kv_watch_wait(struct sh_kv_watch *w, int (*sleep_ms)(long));

#endif
