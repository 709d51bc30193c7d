/* SPDX-License-Identifier: MIT */
/*
 * mbctl.h - what mbctl.c (the commands) and mbctl_watch.c (the live views:
 * load progress, top) share.
 */
#ifndef MB_WORKER_MBCTL_H
#define MB_WORKER_MBCTL_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

struct mbctl {
	const char *socket;
	bool json;
	int timeout_ms;     /* --timeout: how long the broker may be silent */
	int64_t broker_uid; /* --broker-uid, -1 when not given */
	struct mb_client *client;
};

/* Connects to the broker m names with role "admin", bounded by
 * --timeout; 0 or an error, with the reason in why. */
int mbctl_connect(const struct mbctl *m, struct mb_client **out, char *why,
		  size_t whylen);

/* Formatting of reply fields for people. */
void mbctl_size(char *buf, size_t len, json_int_t bytes);
json_int_t mbctl_int(const json_t *o, const char *key);
const char *mbctl_str(const json_t *o, const char *key);
/* The list, memory and workers tables; return the exit status. */
int mbctl_list(struct mbctl *m);
int mbctl_memory(struct mbctl *m);
int mbctl_workers(struct mbctl *m);

/* Shows a load's progress on stderr (a bar on a terminal, a line each
 * tenth otherwise) from a thread of its own until mbctl_progress_stop. */
struct mbctl_progress;
struct mbctl_progress *mbctl_progress_start(const struct mbctl *m,
					    const char *name);
void mbctl_progress_stop(struct mbctl_progress *p);

/* A live view of models, workers and memory; iterations 0: until
 * interrupted.  Returns the exit status. */
int mbctl_top(struct mbctl *m, long iterations);

#endif
