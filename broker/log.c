/* SPDX-License-Identifier: MIT */
/*
 * log.c - the broker's log: one line per event on stderr, as systemd and
 * supervisord expect, as text or (--log-format json) one JSON object per
 * line, with a level filter; control characters a client slipped into a
 * name or path are shown as '?'.  log_warn appends strerror(errno)
 * like err(3); fatalx is for startup failures and broken invariants only.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "mbrokerd.h"
#include "utf8.h"

static enum log_level log_threshold = LOG_LEVEL_INFO;
static bool log_json;

static const char *const log_names[] = {"error", "warn", "info", "debug"};

void
log_init(enum log_level level)
{
	log_threshold = level;
}

void
log_set_json(bool json)
{
	log_json = json;
}

/*
 * The line as one JSON object: {"time", "level", "pid", "message"}.  The
 * message (control characters already '?') is escaped here, a byte that
 * is not UTF-8 shown as '?', and only whole characters are written: when
 * len is short the message ends early, the object never does.
 */
static int
log_json_line(char *line, size_t len, const char *time, enum log_level level,
	      const char *message)
{
	static const char tail[] = "\"}";
	const unsigned char *p = (const unsigned char *)message;
	const unsigned char *end = p + strlen(message);
	int n = snprintf(line, len, "{\"time\":\"%s\",\"level\":\"%s\","
			 "\"pid\":%ld,\"message\":\"", time, log_names[level],
			 (long)getpid());
	size_t off;

	if (n < 0 || (size_t)n + sizeof tail > len)
		return 0;
	off = (size_t)n;
	while (p < end) {
		size_t seq = utf8_len(p, (size_t)(end - p));
		bool escape = *p == '"' || *p == '\\';
		size_t width = seq == 0 ? 1 : seq + escape;

		if (off + width + sizeof tail > len)
			break;
		if (seq == 0) {
			line[off++] = '?';
			p++;
			continue;
		}
		if (escape)
			line[off++] = '\\';
		memcpy(line + off, p, seq);
		off += seq;
		p += seq;
	}
	memcpy(line + off, tail, sizeof tail);
	return (int)(off + sizeof tail - 1);
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
	/* Escaped, a message at most doubles: a JSON line is never cut. */
	char message[1536], line[2 * sizeof message + 256], time[96];
	struct timespec ts;
	struct tm tm;
	int n;

	if (level > log_threshold)
		return;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	snprintf(time, sizeof time, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ",
		 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
		 tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000);
	n = vsnprintf(message, sizeof message, fmt, ap);
	if (n >= 0 && suffix != NULL && (size_t)n < sizeof message) {
		int more = snprintf(message + n, sizeof message - (size_t)n,
				    ": %s", suffix);

		n += more > 0 ? more : 0;
	}
	/* A cut message says so. */
	if (n >= (int)sizeof message)
		memcpy(message + sizeof message - 4, "...", 4);
	/* Client strings appear in lines: none may forge another line. */
	for (char *p = message; *p != '\0'; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			*p = '?';
	if (log_json)
		n = log_json_line(line, sizeof line - 1, time, level, message);
	else
		n = snprintf(line, sizeof line - 1, "%s mbrokerd[%ld] %s: %s",
			     time, (long)getpid(), log_names[level], message);
	if (n < 0)
		return;
	if (n > (int)sizeof line - 2)
		n = (int)sizeof line - 2;
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
