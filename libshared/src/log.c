/* Logging (see shared/log.h). The level/format/service are written once at
 * start-up before threads exist and only read afterwards. */
#include "shared/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "shared/buf.h"

static int log_level = SH_LOG_INFO;
static int log_json;
static char log_service[64] = "scrapr";

static const char *const level_names[] = {"debug", "info", "warn", "error"};

int sh_log_setup(const char *service, const char *level, const char *format)
{
    int lvl = log_level, json = log_json;

    if (level) {
        lvl = -1;
        for (int i = 0; i < 4; i++)
            if (strcasecmp(level, level_names[i]) == 0)
                lvl = i;
        if (strcasecmp(level, "warning") == 0)
            lvl = SH_LOG_WARN;
        if (lvl < 0)
            return -1;
    }
    if (format) {
        if (strcmp(format, "text") == 0)
            json = 0;
        else if (strcmp(format, "json") == 0)
            json = 1;
        else
            return -1;
    }
    log_level = lvl;
    log_json = json;
    if (service)
        (void)snprintf(log_service, sizeof(log_service), "%s", service);
    return 0;
}

int sh_log_enabled(int level)
{
    return level >= log_level;
}

static void json_escape(struct sh_buf *b, const char *s)
{
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            (void)sh_buf_appendf(b, NULL, "\\%c", c);
        else if (c < 0x20)
            (void)sh_buf_appendf(b, NULL, "\\u%04x", c);
        else
            (void)sh_buf_append(b, s, 1, NULL);
    }
}

static void log_vwrite(int level, const char *fmt, va_list ap)
{
    char ts[64], *msg = NULL;
    struct timespec now;
    struct tm tm;
    struct sh_buf line;

    if (vasprintf(&msg, fmt, ap) < 0)
        return;
    (void)clock_gettime(CLOCK_REALTIME, &now);
    (void)gmtime_r(&now.tv_sec, &tm);
    (void)snprintf(ts, sizeof(ts), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900,
                   tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                   (long)(now.tv_nsec / 1000000) % 1000);
    sh_buf_init(&line, 0);
    if (log_json) {
        (void)sh_buf_appendf(&line, NULL, "{\"time\":\"%s\",\"level\":\"%s\",\"service\":\"", ts,
                             level_names[level]);
        json_escape(&line, log_service);
        (void)sh_buf_appends(&line, "\",\"msg\":\"", NULL);
        json_escape(&line, msg);
        (void)sh_buf_appends(&line, "\"}\n", NULL);
    } else {
        (void)sh_buf_appendf(&line, NULL, "%s %-5s %s %s\n", ts, level_names[level], log_service,
                             msg);
    }
    /* One write per line keeps lines whole across threads. */
    (void)!write(STDERR_FILENO, line.data, line.len);
    sh_buf_done(&line);
    free(msg);
}

void sh_log_write(int level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_vwrite(level, fmt, ap);
    va_end(ap);
}

void sh_fatal(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_vwrite(SH_LOG_ERROR, fmt, ap);
    va_end(ap);
    exit(1);
}
