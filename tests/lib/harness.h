/* Test harness shared by every helper's C tests: free ports, spawning and
 * stopping service binaries with extra env, waiting for a server to answer,
 * and a tiny HTTP client on libcurl (independent of the code under test).
 *
 * Conventions: every returned `char *` is malloc'd and freed by the caller
 * with free(). Functions that cannot sensibly continue (no SCRAPR_BIN_DIR, no
 * MONGO_URL, fork failure) print the reason and exit(1), like check.h
 * asserts, so a broken test bed is a failure, never a skip. Not thread-safe
 * except th_http(), th_free_port(), th_now_ms() and th_unique(), which may be
 * called from several threads at once. */
#ifndef TESTS_HARNESS_H
#define TESTS_HARNESS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* A currently free TCP port on 127.0.0.1 (bound, read back, closed). */
unsigned th_free_port(void);
/* A loopback port where connections are refused for the whole run. */
unsigned th_dead_port(void);

/* Starts argv[0] (a path, or a name searched in PATH) with the current
 * environment plus env_extra ("KEY=VALUE" entries replace inherited ones; a
 * bare "KEY" removes KEY), NULL-terminated; env_extra may be NULL. stdout and
 * stderr go to a log file /tmp/th_<basename>_<pid>.log (th_log_path()).
 * Returns the child's pid; exits the test on failure. */
pid_t th_spawn(const char *const argv[], const char *const env_extra[]);
/* As th_spawn, with stdout+stderr written to log_path (created/truncated). */
pid_t th_spawn_log(const char *const argv[], const char *const env_extra[], const char *log_path);
/* Log file of a child started by th_spawn*(); borrowed, NULL if unknown. */
const char *th_log_path(pid_t pid);
/* The child's log file contents (caller frees; "" if missing). */
char *th_log_read(pid_t pid);

/* Sends sig (0 = just wait) and waits up to 10 s for the child to exit, then
 * SIGKILLs it. Returns its exit code, 128+signal if it died by a signal, or
 * -1 if it had to be SIGKILLed after the grace period. */
int th_kill(pid_t pid, int sig);
/* Waits up to timeout_ms for the child to exit by itself; same return as
 * th_kill, or -2 on timeout (the child keeps running). */
int th_wait_exit(pid_t pid, long timeout_ms);

/* Polls url until the server gives any HTTP answer (any status). Returns 0,
 * or -1 after timeout_ms. */
int th_wait_http(const char *url, long timeout_ms);

/* One HTTP request through libcurl with a 30 s timeout.
 *   method:  "GET", "POST", "HEAD", ...
 *   headers: NULL-terminated "Name: value" lines, may be NULL
 *   body:    NUL-terminated request body, may be NULL
 *   ret_status:  HTTP status (may be NULL)
 *   ret_body:    response body, NUL-terminated, caller frees (may be NULL)
 *   ret_headers: raw response header block ("HTTP/1.1 200 OK\r\nName: v\r\n..."),
 *                caller frees (may be NULL)
 * Returns 0 when an HTTP answer arrived, -1 on a transport error (outputs
 * untouched; the libcurl message is printed to stderr). */
int th_http(const char *method, const char *url, const char *const headers[], const char *body,
            long *ret_status, char **ret_body, char **ret_headers);
/* As th_http with an explicit body length (binary or large bodies) and the
 * response body length in *ret_len (may be NULL). */
int th_http_len(const char *method, const char *url, const char *const headers[], const char *body,
                size_t body_len, long *ret_status, char **ret_body, size_t *ret_len,
                char **ret_headers);
/* Value of header `name` (case-insensitive) in a raw header block from
 * th_http, whitespace-trimmed; caller frees; NULL if absent. */
char *th_header(const char *raw_headers, const char *name);

/* Private servers for tests that must kill/restart them (the shared test bed
 * ones must stay up). *port == 0 picks a free port and stores it; a non-zero
 * *port (re)starts on that port. Both wait until the server answers (redis:
 * PING; consul: a leader is elected) and exit the test after 30 s. Stop them
 * with th_kill(pid, SIGTERM). Redis keeps no data on disk (--save ''), the
 * consul dev agent keeps its state in memory.
 * redis-server is found in PATH; consul at $SCRAPR_SOURCE_DIR/tools/bin. */
pid_t th_redis_start(unsigned *port);
pid_t th_consul_start(unsigned *port);

/* $MONGO_URL with database dbname: "mongodb://h:p" -> "mongodb://h:p/dbname",
 * keeping a query string ("mongodb://h:p/?x=1" -> "mongodb://h:p/dbname?x=1")
 * and replacing a database already named. Exits if MONGO_URL is unset. */
char *th_mongo_url(const char *dbname);
/* "<prefix>_<pid>_<counter>": unique within the machine for this run. */
char *th_unique(const char *prefix);
/* Monotonic milliseconds. */
int64_t th_now_ms(void);
/* "$SCRAPR_BIN_DIR/<name>" (exits if SCRAPR_BIN_DIR is unset). */
char *th_bin(const char *name);

#endif
