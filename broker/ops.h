/* SPDX-License-Identifier: MIT */
/*
 * ops.h - the operations on models: load and replace (load.c), unload and
 * the drain of replaced generations (unload.c), and the shutdown
 * (shutdown.c).  Request handlers start them; each reports back to whoever
 * started it, through the replies it owes (reply.h) or a callback, and
 * changes models only through the registry and leases.
 */
#ifndef MBROKER_OPS_H
#define MBROKER_OPS_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "registry.h"

struct conn;
struct model;
struct generation;
struct provider;

/* load.c */
/* load_request.keep_alive_ms when the request names none. */
#define LOAD_KEEP_ALIVE_DEFAULT (-2)
struct load_request {
	const char *path;
	const struct provider *provider;
	enum load_reason reason;
	bool attach;         /* (c, id) is an attach, answered once loaded */
	int64_t keep_alive_ms; /* -1 forever, or LOAD_KEEP_ALIVE_DEFAULT */
	bool wait;           /* reply when loaded instead of once sized */
	bool replace;        /* a READY model gets a new generation */
	enum replace_policy policy;
	int64_t drain_ms;    /* how long replaced generations may drain */
};
/* Loads a new generation of the model called name (a new model, one in
 * ERROR that nobody holds, or with replace a READY one, which keeps
 * serving meanwhile).
 * Owes (c, id) its reply (c may be NULL: a preload); refusals are
 * replied at once.  0 when it started, -1 when it did not. */
int load_begin(const char *name, const struct load_request *lr,
	       struct conn *c, json_t *id);
/* Whether a load of m is running (a first load or a replace). */
bool load_running(const struct model *m);
/* How an attach that waited for a load is granted (request layer). */
typedef void load_attach_fn(struct conn *c, json_t *id, void *model);
void load_set_attach_answer(load_attach_fn *answer);
/* Lets (c, id), an attach, wait for m's first load; false when m has
 * none running (a reply was sent when true and it could not wait). */
bool load_join_attach(struct model *m, struct conn *c, json_t *id);
/* Cancels m's running load; stopped() runs once it has ended (its
 * waiters got `cancelled`), with what it had made and removed. */
void load_cancel(struct model *m,
		 void (*stopped)(struct model *m, uint64_t freed,
				 unsigned unlinked));
/* Gives up on m's cancelled load that did not stop: its waiters get
 * `cancelled` and stopped() will not run.  Returns segment names
 * removed. */
unsigned load_abandon(struct model *m);

/* unload.c */
/* How long a cancelled load may take to stop before it is abandoned, even
 * when the deadline is sooner (a SIGINT, a timeout of 0): a load notices a
 * cancel within one chunk (1 MiB; 8 MiB in a --shm-dir), one 50 ms
 * --load-rate step or one 64 MiB hash slice, so one that has not stopped
 * by then is blocked. */
#define UNLOAD_CANCEL_GRACE_MS 250
/* What an unload reports to the one that started or joined it with a
 * callback (the shutdown). */
struct unload_report {
	const char *model;
	bool timed_out;
	bool asked;         /* an unload request started or joined it */
	uint64_t freed;
	json_t *pids;       /* still attached at the end (borrowed) */
	int64_t drained_us; /* when the wait ended */
	int64_t release_us; /* time spent releasing */
};
typedef void unload_done_fn(void *ctx, const struct unload_report *r);
/* Starts unloading m (READY, LOADING, ERROR, or joins one running); the
 * reply to (c, id), when c is not NULL, is owed until it ends; done(ctx)
 * (may be NULL) is called then too, once m is gone from the registry (or
 * in ERROR).  With notify, m's holders get the unload event and signal
 * (the shutdown tells everyone itself).  0, or -1 when it could not
 * start (the request, if any, was answered; done will not be called). */
int unload_begin(struct model *m, int64_t timeout_ms, struct conn *c,
		 json_t *id, bool notify, unload_done_fn *done, void *ctx);
/* Unloads m at once, which nobody holds and nothing loads (an eviction
 * or an idle unload); m is gone when it returns 0.  -1: it could not. */
int unload_idle(struct model *m);
/* Starts draining old, replaced by m's current generation: its holders
 * get a `replaced` event; it is freed when they let go, or at the
 * deadline anyway (--kill-after applies). */
void unload_drain(struct generation *old, int64_t timeout_ms);
/* Ends every unload and drain now, as if its deadline had passed. */
void unload_expire_all(void);
/* Sets up the evaluation event and the ack waiter.  0 or -1. */
int unload_init(void);
void unload_shutdown(void);

/* residency.c */
/* Evicts models nobody holds or pinned, least recently used first, until
 * size bytes fit, never the model called name.  0 when they fit, or
 * MB_ENOSPACE with why naming what holds the memory. */
int residency_make_room(uint64_t size, const char *name, char *why,
			size_t len);
/* Looks at keep-alives soon: a model was let go of or loaded. */
void residency_schedule(void);
/* Applies --pin and sets up the keep-alive timer.  0 or -1. */
int residency_init(void);
void residency_shutdown(void);

/* shutdown.c */
void shutdown_begin(int64_t timeout_ms, struct conn *c, json_t *id,
		    const char *why);
/* Second SIGINT: stop waiting for workers. */
void shutdown_force(void);
/* Whether the shutdown has ended (the broker is exiting). */
bool shutdown_done(void);
/* The shutdown's stuck pids, freed at exit. */
void shutdown_free(void);

#endif /* MBROKER_OPS_H */
