/* SPDX-License-Identifier: MIT */
/*
 * wakeup.h - a pipe from helper threads (loader, ack waiter) to the main
 * loop.  wakeup_post may be called from any thread.
 */
#ifndef MB_BROKER_WAKEUP_H
#define MB_BROKER_WAKEUP_H

struct wakeup;

/* A channel whose posts run cb(ptr) in the main loop; NULL on failure. */
struct wakeup *wakeup_new(void (*cb)(void *ptr));
void wakeup_post(struct wakeup *w, void *ptr);
/* Accepts NULL. */
void wakeup_free(struct wakeup *w);

#endif
