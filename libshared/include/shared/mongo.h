/* MongoDB helpers over mongo-c-driver: a client pool from MONGO_URL and the
 * database name (the URI's, else "scrapr"). mongoc_init() is done once here. */
#ifndef SHARED_MONGO_H
#define SHARED_MONGO_H

#include <mongoc/mongoc.h>

#include "shared/err.h"

/* Returns a pool (free with mongoc_client_pool_destroy) and *ret_db (caller frees). */
mongoc_client_pool_t *sh_mongo_pool_new(const char *url, char **ret_db, struct sh_err *err);
/* Runs {ping: 1} on a pooled client; 0 or -1 (SH_EUPSTREAM). */
int sh_mongo_ping(mongoc_client_pool_t *pool, struct sh_err *err);
/* Converts a bson_error_t into err with a prefix ("insert: ..."). */
void sh_mongo_err(struct sh_err *err, const bson_error_t *berr, const char *what);

#endif
