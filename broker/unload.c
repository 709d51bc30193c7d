/* SPDX-License-Identifier: MIT */
/*
 * unload.c - the unload sequence of one model, which shutdown runs for all
 * of them: the model goes UNLOADING (no new attaches; a running load is
 * cancelled), every attached worker gets an event and a signal, then the
 * broker waits until each has acked, detached or died, or the deadline
 * passes (with --kill-after S, holders still there S after the unload
 * began, if that is before the deadline, get SIGKILL through their pidfd;
 * a cancelled load that has not stopped by the deadline, and at least
 * UNLOAD_CANCEL_GRACE_MS after its cancel, is abandoned); then the
 * provider's unload hook runs (a failure is logged and the rest goes on),
 * the segment is unlinked and its descriptor closed, what was freed is
 * reported, and the model leaves the registry (UNINITIALIZED) or stays in
 * ERROR naming the pids that held on.
 */
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "mbrokerd.h"

static struct event *unload_ev;

void
unload_schedule(void)
{
	event_active(unload_ev, EV_TIMEOUT, 0);
}

/* Tells each worker attached to m to let go: an event, then a signal. */
static void
unload_notify(struct model *m, int64_t timeout_ms)
{
	json_t *ev = json_pack("{s:s, s:s, s:I, s:I}", "event", "unload",
			       "model", m->name, "generation",
			       (json_int_t)m->generation, "timeout_ms",
			       (json_int_t)timeout_ms);
	struct conn *c;
	struct attachment *a;

	TAILQ_FOREACH(c, &broker.conns, entry) {
		TAILQ_FOREACH(a, &c->attachments, entry)
			if (a->model == m)
				break;
		if (a == NULL)
			continue;
		conn_send(c, ev, -1);
		if (conn_signal(c, broker.cfg.unload_signal) < 0)
			log_warn("model %s: cannot signal pid %ld", m->name,
				 (long)c->pid);
	}
	json_decref(ev);
}

/* Sets m's deadline; a --kill-after moment not before it is dropped: the
 * deadline ends the unload first, naming the holders. */
static void
unload_set_deadline(struct model *m, int64_t deadline_ms)
{
	m->unload_deadline_ms = deadline_ms;
	if (m->kill_at_ms >= deadline_ms)
		m->kill_at_ms = -1;
}

void
unload_begin(struct model *m, int64_t timeout_ms, struct conn *c, json_t *id,
	     bool for_shutdown)
{
	int64_t now = clock_monotonic_ms();
	enum model_state was = m->state;

	if (c != NULL && !pending_add(&m->unload_waiters, c, id))
		return;
	if (for_shutdown)
		m->unload_for_shutdown = true;
	if (was == MODEL_UNLOADING) {
		/* A joined unload never moves the deadline of the one that
		 * runs; the shutdown bounds every unload by its own. */
		if (for_shutdown && now + timeout_ms < m->unload_deadline_ms)
			unload_set_deadline(m, now + timeout_ms);
		log_info("model %s: already unloading; joined", m->name);
		unload_schedule();
		return;
	}
	m->unload_started_ms = now;
	m->unload_freed = 0;
	m->unload_unlinked = 0;
	m->unload_interrupted = false;
	m->kill_at_ms = broker.cfg.kill_after_ms > 0
				? now + broker.cfg.kill_after_ms : -1;
	unload_set_deadline(m, now + timeout_ms);
	m->shmem_before_kb = meminfo_shmem_kb();
	registry_set_state(m, MODEL_UNLOADING);
	log_info("model %s: unloading from %s, %u worker(s) attached, timeout "
		 "%.1f s, Shmem %" PRId64 " kB", m->name,
		 registry_state_name(was), m->nattached, timeout_ms / 1000.0,
		 m->shmem_before_kb);
	if (was == MODEL_LOADING)
		loader_cancel(m);
	else if (!for_shutdown)
		unload_notify(m, timeout_ms);
	unload_schedule();
}

/* --kill-after: SIGKILL to every process that still holds m, through the
 * pidfd of its connection (never a pid a client named). */
static void
unload_kill(struct model *m)
{
	struct conn *c;
	struct attachment *a;

	m->kill_at_ms = -1;
	if (m->killed_pids == NULL)
		m->killed_pids = json_array();
	TAILQ_FOREACH(c, &broker.conns, entry) {
		TAILQ_FOREACH(a, &c->attachments, entry)
			if (a->model == m)
				break;
		if (a == NULL || c->pid_exited)
			continue;
		if (conn_signal(c, SIGKILL) < 0) {
			log_warn("model %s: cannot kill pid %ld", m->name,
				 (long)c->pid);
			continue;
		}
		log_warnx("model %s: killed pid %ld, which still held it %.1f s "
			  "after the unload began (--kill-after)", m->name,
			  (long)c->pid, broker.cfg.kill_after_ms / 1000.0);
		json_array_append_new(m->killed_pids, json_integer(c->pid));
	}
}

/* Frees what m holds: provider state, segment name and descriptor.  Its
 * bytes count as freed when no worker maps them any more. */
static void
unload_release(struct model *m)
{
	if (m->provider != NULL && m->provider_state != NULL &&
	    m->provider->unload(m->provider_state) < 0)
		log_warnx("model %s: the %s provider's unload hook failed; "
			  "going on", m->name, m->provider->name);
	m->provider_state = NULL;
	if (m->segment[0] != '\0') {
		if (segment_unlink(m->segment) < 0) {
			log_warn("model %s: cannot unlink %s; going on",
				 m->name, m->segment);
		} else {
			m->unload_unlinked++;
			if (m->nattached == 0)
				m->unload_freed += m->size;
		}
		/* Its holders still map it: the bytes stay counted. */
		if (!attach_strand(m, m->size))
			segment_unreserve(m->size);
		m->segment[0] = '\0';
	}
	if (m->ro_fd >= 0) {
		close(m->ro_fd);
		m->ro_fd = -1;
	}
}

/* Ends the unload of m; timed_out when workers still hold it. */
static void
unload_finish(struct model *m, bool timed_out)
{
	int64_t waited = clock_monotonic_ms() - m->unload_started_ms;
	int64_t release_start = clock_monotonic_us();
	const char *ended = m->unload_interrupted ? "interrupted"
						  : "timed out";
	uint64_t freed;
	unsigned evicted;
	int64_t after;
	json_t *pids = json_array();
	json_t *report;

	unload_release(m);
	freed = m->unload_freed;
	evicted = m->unload_unlinked;
	after = meminfo_shmem_kb();
	attach_pids(m, pids);
	report = json_pack("{s:s, s:I, s:I, s:I, s:I, s:I, s:i}", "model",
			   m->name, "generation", (json_int_t)m->generation,
			   "freed_bytes", (json_int_t)freed, "shmem_before_kb",
			   (json_int_t)m->shmem_before_kb, "shmem_after_kb",
			   (json_int_t)after, "waited_ms", (json_int_t)waited,
			   "segments_unlinked", (int)evicted);
	if (m->killed_pids != NULL) {
		json_object_set_new(report, "killed", m->killed_pids);
		m->killed_pids = NULL;
	}
	if (m->unload_for_shutdown) {
		broker.shutdown_drained_us = release_start;
		broker.shutdown_release_us += clock_monotonic_us() - release_start;
		broker.shutdown_models++;
		broker.shutdown_freed_bytes += freed;
		broker.shutdown_timeouts += timed_out;
		json_array_extend(broker.shutdown_stuck_pids, pids);
	}
	m->load_abandoned = false;
	if (timed_out) {
		char *list = json_dumps(pids, JSON_COMPACT);
		unsigned orphans = attach_orphans(m);

		broker.unload_timeouts++;
		if (m->nattached == 0)
			snprintf(m->error, sizeof m->error, "unload %s after "
				 "%.1f s: its load did not stop", ended,
				 waited / 1000.0);
		else
			snprintf(m->error, sizeof m->error,
				 "unload %s after %.1f s; still attached: "
				 "pids %s%s", ended, waited / 1000.0,
				 list != NULL ? list : "?",
				 orphans > 0 ? " (some exited; their connection "
					       "is held by a process they "
					       "forked)" : "");
		free(list);
		registry_set_state(m, MODEL_ERROR);
		log_error("model %s: %s; %u segment(s) unlinked anyway%s",
			  m->name, m->error, evicted, m->nattached > 0 ?
			  ", their memory returns when those workers unmap" : "");
		json_object_set_new(report, "pids", pids);
		json_object_set_new(report, "state", json_string("ERROR"));
		pending_reply_error(&m->unload_waiters, MB_ETIMEOUT, report,
				    m->error);
		m->unload_for_shutdown = false;
		return;
	}
	json_decref(pids);
	broker.unloads++;
	registry_set_state(m, MODEL_UNINITIALIZED);
	log_info("model %s: unloaded in %" PRId64 " ms, %" PRIu64 " bytes freed, "
		 "%u segment(s) unlinked, Shmem %" PRId64 " kB -> %" PRId64
		 " kB", m->name, waited, freed, evicted, m->shmem_before_kb,
		 after);
	json_object_set_new(report, "state", json_string("UNINITIALIZED"));
	pending_reply_ok(&m->unload_waiters, report);
	registry_remove(m);
}

/* Looks at every unload in progress: finishes what can be finished and
 * arms the ack waiter for the nearest deadline. */
static void
unload_evaluate(evutil_socket_t fd, short what, void *arg)
{
	int64_t now = clock_monotonic_ms(), next = -1;
	struct model *m, *tmp;

	(void)fd;
	(void)what;
	(void)arg;
	for (m = TAILQ_FIRST(&broker.models); m != NULL; m = tmp) {
		tmp = TAILQ_NEXT(m, entry);
		if (m->state != MODEL_UNLOADING)
			continue;
		if (m->job != NULL) {
			int64_t abandon = m->unload_started_ms +
					  UNLOAD_CANCEL_GRACE_MS;

			if (abandon < m->unload_deadline_ms)
				abandon = m->unload_deadline_ms;
			if (now >= abandon)
				loader_abandon(m);
			else if (next < 0 || abandon < next)
				next = abandon;
			if (m->job != NULL)
				continue;
		}
		if (m->nattached > 0 && m->kill_at_ms >= 0 &&
		    now >= m->kill_at_ms && now < m->unload_deadline_ms)
			unload_kill(m);
		if (m->nattached == 0 && !m->load_abandoned)
			unload_finish(m, false);
		else if (now >= m->unload_deadline_ms)
			unload_finish(m, true);
		else {
			int64_t due = m->kill_at_ms >= 0 ? m->kill_at_ms
							 : m->unload_deadline_ms;

			if (next < 0 || due < next)
				next = due;
		}
	}
	ackwait_arm(next);
	shutdown_check();
}

void
unload_expire_all(void)
{
	int64_t now = clock_monotonic_ms();
	struct model *m;

	TAILQ_FOREACH(m, &broker.models, entry) {
		if (m->state != MODEL_UNLOADING)
			continue;
		unload_set_deadline(m, now);
		m->unload_interrupted = true;
	}
	unload_schedule();
}

int
unload_init(void)
{
	if (broker.cfg.kill_after_ms >= broker.cfg.shutdown_timeout_ms &&
	    broker.cfg.kill_after_ms > 0)
		log_warnx("--kill-after %.1f s is not below --shutdown-timeout "
			  "%.1f s: a shutdown ends at its deadline before "
			  "killing anyone", broker.cfg.kill_after_ms / 1000.0,
			  broker.cfg.shutdown_timeout_ms / 1000.0);
	unload_ev = event_new(broker.base, -1, 0, unload_evaluate, NULL);
	if (unload_ev == NULL)
		return -1;
	return ackwait_init(unload_schedule);
}

void
unload_shutdown(void)
{
	ackwait_shutdown();
	if (unload_ev != NULL)
		event_free(unload_ev);
	unload_ev = NULL;
}
