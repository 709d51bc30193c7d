/* SPDX-License-Identifier: MIT */
/*
 * shutdown.c - the orderly shutdown (SIGTERM, SIGINT or the shutdown
 * request): stop granting attaches, tell every client and signal every
 * attached worker once, unload every model against one deadline (each
 * unload reports back here), then report what was freed and leave the
 * event loop with the exit status: 0 when every worker let go and every
 * load stopped, 1 when some did not (named) by the deadline or by a second
 * SIGINT, which ends the wait early (shutdown_force).
 */
#include <inttypes.h>
#include <stdlib.h>

#include "mbrokerd.h"
#include "conn.h"
#include "lease.h"
#include "ops.h"
#include "registry.h"
#include "reply.h"

/* The shutdown's own account, filled as each unload reports. */
static struct {
	bool done;
	bool interrupted; /* a second SIGINT cut the wait short */
	unsigned unloading; /* unloads not yet reported */
	int64_t shmem_before_kb;
	uint64_t freed_bytes;
	unsigned models;
	unsigned timeouts;
	/* Where the time went, in microseconds. */
	int64_t started_us;
	int64_t notify_us;  /* events and signals sent */
	int64_t drained_us; /* when the last model was let go */
	int64_t release_us; /* hooks, unlinks, closes */
	json_t *stuck_pids;
	struct pending_list waiters;
} stopping = {.waiters = TAILQ_HEAD_INITIALIZER(stopping.waiters)};

bool
shutdown_done(void)
{
	return stopping.done;
}

void
shutdown_free(void)
{
	json_decref(stopping.stuck_pids);
	stopping.stuck_pids = NULL;
}

/* Sends the shutdown event to every client, the signal to every worker. */
static unsigned
shutdown_notify(int64_t timeout_ms)
{
	json_t *ev = json_pack("{s:s, s:I}", "event", "shutdown", "timeout_ms",
			       (json_int_t)timeout_ms);
	unsigned signalled = 0;
	struct conn *c = NULL;

	while ((c = conn_next(c)) != NULL) {
		if (!c->hello)
			continue;
		conn_send(c, ev, NULL, 0);
		if (lease_count(c) == 0)
			continue;
		if (conn_signal(c, broker.cfg.unload_signal) < 0)
			log_warn("cannot signal pid %ld", (long)c->pid);
		else
			signalled++;
	}
	json_decref(ev);
	return signalled;
}

/* Every model is unloaded (or timed out): the report, and the exit. */
static void
shutdown_finish(void)
{
	int64_t elapsed, after;
	json_t *report;

	stopping.done = true;
	elapsed = (clock_monotonic_us() - stopping.started_us) / 1000;
	after = meminfo_shmem_kb();
	report = json_pack("{s:I, s:i, s:I, s:I, s:I, s:I, s:I, s:I, s:I}",
			   "elapsed_ms", (json_int_t)elapsed, "models_unloaded",
			   (int)stopping.models, "freed_bytes",
			   (json_int_t)stopping.freed_bytes, "shmem_before_kb",
			   (json_int_t)stopping.shmem_before_kb,
			   "shmem_after_kb", (json_int_t)after, "elapsed_us",
			   (json_int_t)(clock_monotonic_us() -
					stopping.started_us),
			   "notify_us", (json_int_t)stopping.notify_us,
			   "wait_us",
			   (json_int_t)(stopping.drained_us -
					stopping.started_us -
					stopping.notify_us),
			   "release_us", (json_int_t)stopping.release_us);
	if (stopping.timeouts > 0) {
		size_t stuck = json_array_size(stopping.stuck_pids);
		char *pids = json_dumps(stopping.stuck_pids, JSON_COMPACT);
		char message[512];

		broker.exit_code = 1;
		snprintf(message, sizeof message, "shutdown %s after %" PRId64
			 " ms; %s%s%s; every name was unlinked anyway",
			 stopping.interrupted ? "interrupted" : "timed out",
			 elapsed, stuck > 0 ? "pids " : "a load did not stop",
			 stuck > 0 && pids ? pids : "",
			 stuck > 0 ? " did not release" : "");
		free(pids);
		log_error("%s; Shmem %" PRId64 " kB -> %" PRId64 " kB", message,
			  stopping.shmem_before_kb, after);
		json_object_set(report, "pids", stopping.stuck_pids);
		pending_reply_error(&stopping.waiters, MB_ETIMEOUT, report,
				    message);
	} else {
		log_info("shutdown complete in %" PRId64 " ms%s: %u model(s), "
			 "%" PRIu64 " bytes freed, Shmem %" PRId64 " kB -> %"
			 PRId64 " kB", elapsed, stopping.interrupted ?
			 " (interrupted, yet everything let go)" : "",
			 stopping.models, stopping.freed_bytes,
			 stopping.shmem_before_kb, after);
		pending_reply_ok(&stopping.waiters, report);
	}
	event_base_loopexit(broker.base, NULL);
}

/* One model's unload ended. */
static void
shutdown_unloaded(void *ctx, const struct unload_report *r)
{
	(void)ctx;
	stopping.drained_us = r->drained_us;
	stopping.release_us += r->release_us;
	stopping.models++;
	stopping.freed_bytes += r->freed;
	stopping.timeouts += r->timed_out;
	json_array_extend(stopping.stuck_pids, r->pids);
	if (--stopping.unloading == 0)
		shutdown_finish();
}

void
shutdown_begin(int64_t timeout_ms, struct conn *c, json_t *id,
	       const char *why)
{
	struct model *m, *next;
	unsigned signalled;

	if (stopping.done) {
		if (c != NULL)
			reply_error(c, id, MB_ESHUTDOWN, NULL, "the shutdown "
				    "has ended; the broker is exiting");
		return;
	}
	if (c != NULL && !pending_add(&stopping.waiters, c, id))
		return;
	if (broker.shutting_down) {
		log_info("shutdown already in progress (%s)", why);
		return;
	}
	broker.shutting_down = true;
	notify_send("STOPPING=1\nSTATUS=shutting down (%s)", why);
	stopping.started_us = clock_monotonic_us();
	stopping.shmem_before_kb = meminfo_shmem_kb();
	stopping.stuck_pids = json_array();
	signalled = shutdown_notify(timeout_ms);
	stopping.notify_us = clock_monotonic_us() - stopping.started_us;
	stopping.drained_us = stopping.started_us + stopping.notify_us;
	log_info("shutdown %s: %u model(s), %u worker(s) signalled, timeout "
		 "%.1f s, Shmem %" PRId64 " kB", why, registry_count(),
		 signalled, timeout_ms / 1000.0, stopping.shmem_before_kb);
	/* Counted first: an unload may end (and report) at once. */
	stopping.unloading = registry_count() + 1;
	for (m = registry_next(NULL); m != NULL; m = next) {
		next = registry_next(m);
		if (unload_begin(m, timeout_ms, NULL, NULL, false,
				 shutdown_unloaded, NULL) < 0) {
			/* Out of memory: its names go at exit. */
			stopping.unloading--;
			stopping.timeouts++;
		}
	}
	if (--stopping.unloading == 0)
		shutdown_finish();
}

void
shutdown_force(void)
{
	log_warnx("second interrupt: no longer waiting for workers (a load "
		  "being cancelled gets %d ms to stop)", UNLOAD_CANCEL_GRACE_MS);
	stopping.interrupted = true;
	unload_expire_all();
}
