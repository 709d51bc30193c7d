/* SPDX-License-Identifier: MIT */
/*
 * listener.h - accepting on a listening socket, for the control socket
 * (control.c), the metrics endpoint (metrics.c) and the instance lock
 * (instance.c).  A listener owns the accept event of a non-blocking
 * listening descriptor (its owner keeps the descriptor): it accepts in a
 * loop and hands each connection to a callback, and when the broker is
 * short of descriptors or memory it pauses accepting for a back-off
 * interval at a time instead of spinning, logging the first pause, the
 * later ones at debug level, and the recovery.  Its owner can also pause
 * and resume it (metrics.c at its connection cap).
 */
#ifndef MBROKER_LISTENER_H
#define MBROKER_LISTENER_H

struct listener;

/*
 * Accepts on fd, calling accepted(c, arg) with each connection c
 * (non-blocking, close-on-exec; the callback owns it).  name prefixes its
 * log lines ("name: accept: ..."), or none when NULL; backoff_ms is how
 * long a pause for descriptors lasts.  Returns the listener, accepting,
 * or NULL out of memory (not logged: the caller says what fails).
 */
struct listener *listener_new(int fd, const char *name, int backoff_ms,
			      void (*accepted)(int c, void *arg), void *arg);
/* Stops accepting until listener_resume; callable from accepted (which
 * must not free the listener). */
void listener_pause(struct listener *l);
/* Accepts again after listener_pause (after the back-off, if one runs). */
void listener_resume(struct listener *l);
/* Stops accepting and frees l, not its descriptor; accepts NULL. */
void listener_free(struct listener *l);

#endif
