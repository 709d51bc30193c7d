/* SPDX-License-Identifier: MIT */
/*
 * notify.c - the sd_notify protocol, spoken directly: one datagram per
 * message to the AF_UNIX socket named by $NOTIFY_SOCKET (a path, or an
 * abstract name after '@').  READY=1 once the broker listens and its
 * preloads are over, STATUS= lines as models load, STOPPING=1 when the
 * shutdown starts, WATCHDOG=1 every half of $WATCHDOG_USEC.  The protocol
 * is a few lines; linking libsystemd for it would add a dependency to
 * every install, systemd or not.  Without $NOTIFY_SOCKET every call is a
 * no-op.
 */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "mbrokerd.h"
#include "registry.h"

static struct {
	int fd;
	struct sockaddr_un addr;
	socklen_t len;
	bool ready;
	struct event *watchdog;
} notify = {.fd = -1};

void
notify_send(const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	int n;

	if (notify.fd < 0)
		return;
	va_start(ap, fmt);
	n = vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if (sendto(notify.fd, msg, (size_t)n < sizeof msg ? (size_t)n
							  : sizeof msg - 1,
		   MSG_NOSIGNAL | MSG_DONTWAIT,
		   (const struct sockaddr *)&notify.addr, notify.len) < 0)
		log_debug("sd_notify: %s", strerror(errno));
}

static void
notify_watchdog(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	notify_send("WATCHDOG=1");
}

/* The watchdog interval systemd asked of this process, or 0. */
static uint64_t
notify_watchdog_usec(void)
{
	const char *usec = getenv("WATCHDOG_USEC");
	const char *pid = getenv("WATCHDOG_PID");

	if (usec == NULL || (pid != NULL && strtol(pid, NULL, 10) != getpid()))
		return 0;
	return strtoull(usec, NULL, 10);
}

int
notify_init(void)
{
	const char *path = getenv("NOTIFY_SOCKET");
	uint64_t usec;
	size_t len;

	if (path == NULL || path[0] == '\0')
		return 0;
	len = strlen(path);
	if ((path[0] != '/' && path[0] != '@') ||
	    len >= sizeof notify.addr.sun_path) {
		log_warnx("NOTIFY_SOCKET %s is not a socket path; ignored", path);
		return 0;
	}
	notify.addr.sun_family = AF_UNIX;
	memcpy(notify.addr.sun_path, path, len);
	if (path[0] == '@')
		notify.addr.sun_path[0] = '\0';
	notify.len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len +
				 (path[0] == '/'));
	notify.fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (notify.fd < 0) {
		log_warn("sd_notify socket");
		return -1;
	}
	if ((usec = notify_watchdog_usec()) > 0) {
		struct timeval tv = {(time_t)(usec / 2 / 1000000),
				     (suseconds_t)(usec / 2 % 1000000)};

		notify.watchdog = event_new(broker.base, -1, EV_PERSIST,
					    notify_watchdog, NULL);
		if (notify.watchdog == NULL ||
		    event_add(notify.watchdog, &tv) < 0)
			return -1;
	}
	return 0;
}

void
notify_ready_check(void)
{
	struct model *m;
	unsigned ready = 0;

	if (notify.ready || broker.shutting_down)
		return;
	for (m = registry_next(NULL); m != NULL; m = registry_next(m)) {
		if (model_state(m) == MODEL_LOADING)
			return;
		ready += model_state(m) == MODEL_READY;
	}
	notify.ready = true;
	notify_send("READY=1\nSTATUS=serving %u model(s)\nMAINPID=%ld", ready,
		    (long)getpid());
}

void
notify_shutdown(void)
{
	if (notify.watchdog != NULL)
		event_free(notify.watchdog);
	notify.watchdog = NULL;
	if (notify.fd >= 0)
		close(notify.fd);
	notify.fd = -1;
}
