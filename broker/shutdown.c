/* SPDX-License-Identifier: MIT */
/*
 * shutdown.c - the orderly shutdown (SIGTERM, SIGINT or the shutdown
 * request): stop granting attaches, tell every client and signal every
 * attached worker once, unload every model against one deadline, then
 * report what was freed and leave the event loop with the exit status:
 * 0 when every worker let go and every load stopped, 1 when some did not
 * (named) by the deadline or by a second SIGINT, which ends the wait
 * early (shutdown_force).
 */
#include <inttypes.h>
#include <stdlib.h>

#include "mbrokerd.h"

/* A second SIGINT cut the wait short. */
static bool shutdown_interrupted;

/* Sends the shutdown event to every client, the signal to every worker. */
static unsigned
shutdown_notify(int64_t timeout_ms)
{
	json_t *ev = json_pack("{s:s, s:I}", "event", "shutdown", "timeout_ms",
			       (json_int_t)timeout_ms);
	unsigned signalled = 0;
	struct conn *c;

	TAILQ_FOREACH(c, &broker.conns, entry) {
		if (!c->hello)
			continue;
		conn_send(c, ev, -1);
		if (c->nattachments == 0)
			continue;
		if (conn_signal(c, broker.cfg.unload_signal) < 0)
			log_warn("cannot signal pid %ld", (long)c->pid);
		else
			signalled++;
	}
	json_decref(ev);
	return signalled;
}

void
shutdown_begin(int64_t timeout_ms, struct conn *c, json_t *id,
	       const char *why)
{
	struct model *m, *tmp;
	unsigned signalled;

	if (broker.shutdown_done) {
		if (c != NULL)
			reply_error(c, id, MB_ESHUTDOWN, NULL, "the shutdown "
				    "has ended; the broker is exiting");
		return;
	}
	if (c != NULL && !pending_add(&broker.shutdown_waiters, c, id))
		return;
	if (broker.shutting_down) {
		log_info("shutdown already in progress (%s)", why);
		return;
	}
	broker.shutting_down = true;
	notify_send("STOPPING=1\nSTATUS=shutting down (%s)", why);
	broker.shutdown_started_us = clock_monotonic_us();
	broker.shutdown_shmem_before_kb = meminfo_shmem_kb();
	broker.shutdown_stuck_pids = json_array();
	signalled = shutdown_notify(timeout_ms);
	broker.shutdown_notify_us = clock_monotonic_us() -
				    broker.shutdown_started_us;
	broker.shutdown_drained_us = broker.shutdown_started_us +
				     broker.shutdown_notify_us;
	log_info("shutdown %s: %u model(s), %u worker(s) signalled, timeout "
		 "%.1f s, Shmem %" PRId64 " kB", why, registry_count(),
		 signalled, timeout_ms / 1000.0,
		 broker.shutdown_shmem_before_kb);
	for (m = TAILQ_FIRST(&broker.models); m != NULL; m = tmp) {
		tmp = TAILQ_NEXT(m, entry);
		unload_begin(m, timeout_ms, NULL, NULL, true);
	}
	unload_schedule();
}

void
shutdown_force(void)
{
	log_warnx("second interrupt: no longer waiting for workers (a load "
		  "being cancelled gets %d ms to stop)", UNLOAD_CANCEL_GRACE_MS);
	shutdown_interrupted = true;
	unload_expire_all();
}

void
shutdown_check(void)
{
	int64_t elapsed, after;
	struct model *m;
	json_t *report;

	if (!broker.shutting_down || broker.shutdown_done)
		return;
	TAILQ_FOREACH(m, &broker.models, entry)
		if (m->state == MODEL_UNLOADING || m->job != NULL)
			return;
	broker.shutdown_done = true;
	elapsed = (clock_monotonic_us() - broker.shutdown_started_us) / 1000;
	after = meminfo_shmem_kb();
	report = json_pack("{s:I, s:i, s:I, s:I, s:I, s:I, s:I, s:I, s:I}",
			   "elapsed_ms", (json_int_t)elapsed, "models_unloaded",
			   (int)broker.shutdown_models, "freed_bytes",
			   (json_int_t)broker.shutdown_freed_bytes,
			   "shmem_before_kb",
			   (json_int_t)broker.shutdown_shmem_before_kb,
			   "shmem_after_kb", (json_int_t)after, "elapsed_us",
			   (json_int_t)(clock_monotonic_us() -
					broker.shutdown_started_us),
			   "notify_us", (json_int_t)broker.shutdown_notify_us,
			   "wait_us",
			   (json_int_t)(broker.shutdown_drained_us -
					broker.shutdown_started_us -
					broker.shutdown_notify_us),
			   "release_us", (json_int_t)broker.shutdown_release_us);
	if (broker.shutdown_timeouts > 0) {
		char *pids = json_dumps(broker.shutdown_stuck_pids, JSON_COMPACT);
		char message[512];

		broker.exit_code = 1;
		snprintf(message, sizeof message, "shutdown %s after %" PRId64
			 " ms; %s%s%s; every name was unlinked anyway",
			 shutdown_interrupted ? "interrupted" : "timed out",
			 elapsed, json_array_size(broker.shutdown_stuck_pids) > 0
			 ? "pids " : "a load did not stop",
			 json_array_size(broker.shutdown_stuck_pids) > 0 && pids
			 ? pids : "",
			 json_array_size(broker.shutdown_stuck_pids) > 0
			 ? " did not release" : "");
		free(pids);
		log_error("%s; Shmem %" PRId64 " kB -> %" PRId64 " kB", message,
			  broker.shutdown_shmem_before_kb, after);
		json_object_set(report, "pids", broker.shutdown_stuck_pids);
		pending_reply_error(&broker.shutdown_waiters, MB_ETIMEOUT,
				    report, message);
	} else {
		log_info("shutdown complete in %" PRId64 " ms%s: %u model(s), "
			 "%" PRIu64 " bytes freed, Shmem %" PRId64 " kB -> %"
			 PRId64 " kB", elapsed, shutdown_interrupted ?
			 " (interrupted, yet everything let go)" : "",
			 broker.shutdown_models,
			 broker.shutdown_freed_bytes,
			 broker.shutdown_shmem_before_kb, after);
		pending_reply_ok(&broker.shutdown_waiters, report);
	}
	event_base_loopexit(broker.base, NULL);
}
