/* SPDX-License-Identifier: MIT */
/*
 * log.c - the broker's log: one line per event on stderr, as systemd and
 * supervisord expect, with a level filter; control characters a client
 * slipped into a name or path are shown as '?'.  log_warn appends strerror(errno)
 * like err(3); fatalx is for startup failures and broken invariants only.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "mbrokerd.h"

static enum log_level log_threshold = LOG_LEVEL_INFO;

static const char *const log_names[] = {"error", "warn", "info", "debug"};

void
log_init(enum log_level level)
{
	log_threshold = level;
}

int
log_level_parse(const char *name, enum log_level *out)
{
	for (size_t i = 0; i < sizeof log_names / sizeof log_names[0]; i++) {
		if (strcmp(name, log_names[i]) == 0) {
			*out = (enum log_level)i;
			return 0;
		}
	}
	return -1;
}

/* Writes one line; the whole line goes out in a single write. */
static void __attribute__((format(printf, 3, 0)))
log_emit(enum log_level level, const char *suffix, const char *fmt,
	 va_list ap)
{
	char line[2048];
	struct timespec ts;
	struct tm tm;
	int n, m;

	if (level > log_threshold)
		return;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	n = snprintf(line, sizeof line,
		     "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ mbrokerd[%ld] %s: ",
		     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
		     tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000, (long)getpid(),
		     log_names[level]);
	m = vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
	if (m < 0)
		m = 0;
	n = n + m >= (int)sizeof line - 1 ? (int)sizeof line - 2 : n + m;
	if (suffix != NULL)
		n += snprintf(line + n, sizeof line - (size_t)n - 1, ": %s",
			      suffix);
	if (n > (int)sizeof line - 2)
		n = (int)sizeof line - 2;
	/* Client strings appear in lines: none may forge another line. */
	for (int i = 0; i < n; i++)
		if ((unsigned char)line[i] < 0x20 || line[i] == 0x7f)
			line[i] = '?';
	line[n++] = '\n';
	if (write(STDERR_FILENO, line, (size_t)n) < 0) {
		/* Nowhere left to report it. */
	}
}

#define LOG_DEFINE(fn, level, with_errno)                                     \
	void fn(const char *fmt, ...)                                         \
	{                                                                     \
		int saved = errno;                                            \
		va_list ap;                                                   \
		va_start(ap, fmt);                                            \
		log_emit(level, with_errno ? strerror(saved) : NULL, fmt, ap); \
		va_end(ap);                                                   \
		errno = saved;                                                \
	}

LOG_DEFINE(log_debug, LOG_LEVEL_DEBUG, 0)
LOG_DEFINE(log_info, LOG_LEVEL_INFO, 0)
LOG_DEFINE(log_warn, LOG_LEVEL_WARN, 1)
LOG_DEFINE(log_warnx, LOG_LEVEL_WARN, 0)
LOG_DEFINE(log_error, LOG_LEVEL_ERROR, 0)

void
fatalx(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_emit(LOG_LEVEL_ERROR, NULL, fmt, ap);
	va_end(ap);
	exit(2);
}
