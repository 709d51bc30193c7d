/* SPDX-License-Identifier: MIT */
/*
 * wakeup.c - the one way a helper thread talks to the main loop: it posts a
 * pointer into a pipe, and the main loop's callback receives it.  Writes of
 * a pointer are atomic on a pipe, so posts are never torn or lost.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include "mbrokerd.h"
#include "wakeup.h"

struct wakeup {
	int fds[2];
	struct event *ev;
	void (*cb)(void *);
};

static void
wakeup_read(evutil_socket_t fd, short what, void *arg)
{
	struct wakeup *w = arg;
	void *ptr;

	(void)what;
	while (read(fd, &ptr, sizeof ptr) == (ssize_t)sizeof ptr)
		w->cb(ptr);
}

struct wakeup *
wakeup_new(void (*cb)(void *))
{
	struct wakeup *w = calloc(1, sizeof *w);

	if (w == NULL)
		return NULL;
	if (pipe2(w->fds, O_CLOEXEC) < 0) {
		free(w);
		return NULL;
	}
	if (fcntl(w->fds[0], F_SETFL, O_NONBLOCK) < 0 ||
	    (w->ev = event_new(broker.base, w->fds[0], EV_READ | EV_PERSIST,
			       wakeup_read, w)) == NULL ||
	    event_add(w->ev, NULL) < 0) {
		wakeup_free(w);
		return NULL;
	}
	w->cb = cb;
	return w;
}

void
wakeup_post(struct wakeup *w, void *ptr)
{
	ssize_t n;

	do
		n = write(w->fds[1], &ptr, sizeof ptr);
	while (n < 0 && errno == EINTR);
}

void
wakeup_free(struct wakeup *w)
{
	if (w == NULL)
		return;
	if (w->ev != NULL)
		event_free(w->ev);
	close(w->fds[0]);
	close(w->fds[1]);
	free(w);
}
