/* MongoDB helpers over mongo-c-driver: a client pool from MONGO_URL and the
 * database name (the URI's, else "scrapr"). mongoc_init() is done once here. */
#ifndef SHARED_MONGO_H
#define SHARED_MONGO_H

#include <pthread.h>

#include <mongoc/mongoc.h>

#include "shared/err.h"

/* Returns a pool (free with mongoc_client_pool_destroy) and *ret_db (caller frees). */
mongoc_client_pool_t *sh_mongo_pool_new(const char *url, char **ret_db, struct sh_err *err);
/* Runs {ping: 1} on a pooled client; 0 or -1 (SH_EUPSTREAM). */
int sh_mongo_ping(mongoc_client_pool_t *pool, struct sh_err *err);
/* Converts a bson_error_t into err with a prefix ("insert: ..."). */
void sh_mongo_err(struct sh_err *err, const bson_error_t *berr, const char *what);
/* 1 when the server is FerretDB (it announces ferretdbVersion in buildInfo;
 * some fallbacks depend on it), 0 when not, -1 on error. */
int sh_mongo_is_ferretdb(mongoc_client_t *c, struct sh_err *err);

/* One write command at a time in this process, when on (FerretDB). Why:
 * FerretDB on SQLite has a single writer; concurrent write commands back
 * off in SQLite's busy handler (sleeps of 1, 2, 5, 10 ms...) instead of
 * handing the slot over at once. Set `on` before the gate is shared. */
struct sh_mongo_write_gate {
    pthread_mutex_t mu;
    int on;
};
void sh_mongo_write_gate_init(struct sh_mongo_write_gate *g);
void sh_mongo_write_gate_destroy(struct sh_mongo_write_gate *g);
void sh_mongo_write_begin(struct sh_mongo_write_gate *g);
void sh_mongo_write_end(struct sh_mongo_write_gate *g);

#endif
