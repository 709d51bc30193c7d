/* SPDX-License-Identifier: MIT */
/*
 * listener.c - the accept loop of every listening socket of the broker
 * (control.c, metrics.c, instance.c): accepts until the backlog is empty,
 * hands each connection to its owner, and on EMFILE, ENFILE, ENOBUFS or
 * ENOMEM takes the accept event away for a back-off interval at a time, so
 * a broker short of descriptors sleeps instead of spinning and serves again
 * once they free up.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>

#include "listener.h"
#include "mbrokerd.h"

struct listener {
	struct event *ev_accept;
	struct event *ev_backoff;
	char prefix[32]; /* "name: " that starts its log lines, or "" */
	int backoff_ms;
	unsigned pauses; /* back-offs in the current shortage */
	bool paused; /* by its owner, until listener_resume */
	void (*accepted)(int c, void *arg);
	void *arg;
};

/* Short of descriptors: accepting stops for one back-off interval. */
static void
listener_back_off(struct listener *l)
{
	struct timeval tv = {l->backoff_ms / 1000, l->backoff_ms % 1000 * 1000};

	if (l->pauses++ == 0)
		log_warn("%saccept: pausing accepts %d ms at a time until "
			 "descriptors free up", l->prefix, l->backoff_ms);
	else
		log_debug("%saccept: still short (pause %u)", l->prefix,
			  l->pauses);
	event_del(l->ev_accept);
	if (evtimer_add(l->ev_backoff, &tv) < 0)
		log_warnx("%saccept: cannot time the pause; accepting stops",
			  l->prefix);
}

/* Accepts until the backlog is empty, the owner pauses or descriptors run
 * short. */
static void
listener_accept(evutil_socket_t fd, short what, void *arg)
{
	struct listener *l = arg;
	int c;

	(void)what;
	while (!l->paused) {
		if ((c = accept4(fd, NULL, NULL,
				 SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
			if (l->pauses > 0)
				log_info("%saccepting again after %u pause(s)",
					 l->prefix, l->pauses);
			l->pauses = 0;
			l->accepted(c, l->arg);
			continue;
		}
		if (errno == EINTR || errno == ECONNABORTED)
			continue;
		if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS ||
		    errno == ENOMEM)
			listener_back_off(l);
		else if (errno != EAGAIN)
			log_warn("%saccept", l->prefix);
		return;
	}
}

/* The back-off is over: accepting again, unless the owner paused it. */
static void
listener_backoff_done(evutil_socket_t fd, short what, void *arg)
{
	struct listener *l = arg;

	(void)fd;
	(void)what;
	if (!l->paused)
		event_add(l->ev_accept, NULL);
}

struct listener *
listener_new(int fd, const char *name, int backoff_ms,
	     void (*accepted)(int c, void *arg), void *arg)
{
	struct listener *l = calloc(1, sizeof *l);

	if (l == NULL)
		return NULL;
	if (name != NULL)
		snprintf(l->prefix, sizeof l->prefix, "%s: ", name);
	l->backoff_ms = backoff_ms;
	l->accepted = accepted;
	l->arg = arg;
	if ((l->ev_accept = event_new(broker.base, fd, EV_READ | EV_PERSIST,
				      listener_accept, l)) == NULL ||
	    (l->ev_backoff = evtimer_new(broker.base, listener_backoff_done,
					 l)) == NULL ||
	    event_add(l->ev_accept, NULL) < 0) {
		listener_free(l);
		return NULL;
	}
	return l;
}

void
listener_pause(struct listener *l)
{
	l->paused = true;
	event_del(l->ev_accept);
}

void
listener_resume(struct listener *l)
{
	if (!l->paused)
		return;
	l->paused = false;
	if (!evtimer_pending(l->ev_backoff, NULL))
		event_add(l->ev_accept, NULL);
}

void
listener_free(struct listener *l)
{
	if (l == NULL)
		return;
	if (l->ev_accept != NULL)
		event_free(l->ev_accept);
	if (l->ev_backoff != NULL)
		event_free(l->ev_backoff);
	free(l);
}
