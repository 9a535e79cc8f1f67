/* Logging: one line per event to stderr, `text` or `json` (LOG_FORMAT), with a
 * level filter (LOG_LEVEL) checked before any formatting. Messages are
 * "event key=value key=value". The sink and level are the only process-wide
 * mutable state (set once at start). Thread-safe: each line is one write(2). */
#ifndef SHARED_LOG_H
#define SHARED_LOG_H

enum sh_log_level { SH_LOG_DEBUG = 0, SH_LOG_INFO, SH_LOG_WARN, SH_LOG_ERROR };

/* Sets the service name, level and format. Returns 0, or -1 for an unknown
 * level/format name (nothing changed). NULL keeps the current value. */
int sh_log_setup(const char *service, const char *level, const char *format);
int sh_log_enabled(int level);
void sh_log_write(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define sh_log_at(lvl, ...)                                                                        \
    do {                                                                                           \
        if (sh_log_enabled(lvl))                                                                   \
            sh_log_write(lvl, __VA_ARGS__);                                                        \
    } while (0)
#define sh_log_debug(...) sh_log_at(SH_LOG_DEBUG, __VA_ARGS__)
#define sh_log_info(...) sh_log_at(SH_LOG_INFO, __VA_ARGS__)
#define sh_log_warn(...) sh_log_at(SH_LOG_WARN, __VA_ARGS__)
#define sh_log_error(...) sh_log_at(SH_LOG_ERROR, __VA_ARGS__)

/* Logs at error level and exits with status 1. */
void sh_fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

#endif
