/* Redis connection from REDIS_URL (redis://host:port[/db]) over hiredis that
 * reconnects transparently: a command that fails on a broken connection
 * reconnects once and retries. Timeouts on connect and commands.
 * Thread-safe: calls are serialised by an internal mutex. */
#ifndef SHARED_REDIS_H
#define SHARED_REDIS_H

#include <stddef.h>
#include <hiredis/hiredis.h>

#include "shared/err.h"

struct sh_redis;

/* Does not connect yet (first command does), so a service starts while Redis is down.
 * Returns NULL with SH_ECONFIG for a malformed URL. */
struct sh_redis *sh_redis_new(const char *url, struct sh_err *err);
void sh_redis_free(struct sh_redis *r);
/* Returns a reply (caller frees with freeReplyObject) or NULL (SH_EUPSTREAM).
 * A REDIS_REPLY_ERROR reply is returned as is, not as a failure. */
redisReply *sh_redis_command(struct sh_redis *r, struct sh_err *err, const char *fmt, ...);
redisReply *sh_redis_commandargv(struct sh_redis *r, int argc, const char **argv,
                                 const size_t *argvlen, struct sh_err *err);
int sh_redis_ping(struct sh_redis *r, struct sh_err *err);
/* Additive (clients helper): connect and per-command timeouts in ms (0 = the
 * defaults, 2000 and 5000). Raise command_ms before blocking commands (BLPOP...). */
void sh_redis_set_timeouts(struct sh_redis *r, long connect_ms, long command_ms);

#endif
