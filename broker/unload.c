/* SPDX-License-Identifier: MIT */
/*
 * unload.c - letting go of generations: the unload of a model, which the
 * shutdown runs for all of them, and the drain of a generation a replace
 * made old.  Both wait the same way: holders are told (an `unload` event
 * and a signal, or a `replaced` event), then the broker waits until each
 * has acked, detached or died, or the deadline passes (with --kill-after
 * S, holders still there S after the wait began, if that is before the
 * deadline, get SIGKILL through their pidfd).  An unload also cancels a
 * running load, which is abandoned if it has not stopped by the deadline
 * and at least UNLOAD_CANCEL_GRACE_MS after its cancel.  Then the provider
 * hooks run (a failure is logged and the rest goes on), segments are
 * unlinked, what was freed is reported, and the model leaves the registry
 * (UNINITIALIZED) or stays in ERROR naming the pids that held on.  A
 * drained generation that timed out is unlinked anyway and listed as
 * ERROR until its last holder lets go; its model serves on.
 */
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mbrokerd.h"
#include "conn.h"
#include "lease.h"
#include "ops.h"
#include "registry.h"
#include "reply.h"

/* One wait for holders: a model's unload (gen NULL) or a drain. */
struct unload {
	TAILQ_ENTRY(unload) entry;
	struct model *model;
	struct generation *gen;
	int64_t started_ms;
	int64_t deadline_ms;
	int64_t kill_at_ms; /* --kill-after: when holders get SIGKILL; -1 */
	int64_t shmem_before_kb;
	json_t *killed;
	uint64_t freed;        /* bytes given back */
	unsigned unlinked;     /* segment names removed */
	bool interrupted;      /* its deadline was cut by a SIGINT */
	bool load_stopping;    /* its model's load was cancelled */
	bool load_abandoned;   /* ... and did not stop in time */
	bool asked;            /* an unload request started or joined it */
	struct pending_list waiters;
	/* Who else hears when it ends: the shutdown, a resource replace. */
	struct {
		unload_done_fn *fn;
		void *ctx;
	} done[2];
	unsigned ndone;
};

static TAILQ_HEAD(, unload) unloads = TAILQ_HEAD_INITIALIZER(unloads);
static struct event *unload_ev;

static void unload_finish(struct unload *u, bool timed_out);

static void
unload_schedule(void)
{
	event_active(unload_ev, EV_TIMEOUT, 0);
}

/* The unload of m running, or NULL. */
static struct unload *
unload_find(const struct model *m)
{
	struct unload *u;

	TAILQ_FOREACH(u, &unloads, entry)
		if (u->model == m && u->gen == NULL)
			return u;
	return NULL;
}

/* A new wait for holders of m (or of gen alone) until timeout_ms. */
static struct unload *
unload_new(struct model *m, struct generation *gen, int64_t timeout_ms)
{
	int64_t now = clock_monotonic_ms();
	struct unload *u = calloc(1, sizeof *u);

	if (u == NULL)
		return NULL;
	u->model = m;
	u->gen = gen;
	u->started_ms = now;
	u->deadline_ms = now + timeout_ms;
	u->kill_at_ms = broker.cfg.kill_after_ms > 0 &&
				now + broker.cfg.kill_after_ms < u->deadline_ms
			? now + broker.cfg.kill_after_ms : -1;
	TAILQ_INIT(&u->waiters);
	TAILQ_INSERT_TAIL(&unloads, u, entry);
	return u;
}

static void
unload_free(struct unload *u)
{
	TAILQ_REMOVE(&unloads, u, entry);
	json_decref(u->killed);
	free(u);
}

/* Adds a callback for the end of u; one from each kind of caller fits. */
static void
unload_on_done(struct unload *u, unload_done_fn *fn, void *ctx)
{
	if (u->ndone == sizeof u->done / sizeof u->done[0])
		fatalx("model %s: more callers wait on its unload than it "
		       "can tell", model_name(u->model));
	u->done[u->ndone].fn = fn;
	u->done[u->ndone++].ctx = ctx;
}

/* Sets u's deadline; a --kill-after moment not before it is dropped: the
 * deadline ends the wait first, naming the holders. */
static void
unload_set_deadline(struct unload *u, int64_t deadline_ms)
{
	u->deadline_ms = deadline_ms;
	if (u->kill_at_ms >= deadline_ms)
		u->kill_at_ms = -1;
	if (u->gen != NULL)
		u->gen->drain_deadline_ms = deadline_ms;
}

/* Sends one event to a holder, and the unload signal when it says so. */
struct unload_notice {
	const char *model;
	json_t *event;
	int signal; /* 0: none */
};

static void
unload_tell(struct conn *c, void *arg)
{
	struct unload_notice *n = arg;

	conn_send(c, n->event, NULL, 0);
	if (n->signal != 0 && conn_signal(c, n->signal) < 0)
		log_warn("model %s: cannot signal pid %ld", n->model,
			 (long)c->pid);
}

/* The unload event and signal to one holder of u's model; the event
 * names the newest generation of it that this holder has. */
static void
unload_tell_unload(struct conn *c, void *arg)
{
	const struct unload *u = arg;
	const struct generation *g = lease_newest(c, u->model);
	struct unload_notice n = {
		.model = model_name(u->model),
		.signal = broker.cfg.unload_signal,
	};

	n.event = json_pack("{s:s, s:s, s:I, s:I}", "event", "unload", "model",
			    n.model, "generation",
			    (json_int_t)(g != NULL ? g->number : 0), "timeout_ms",
			    (json_int_t)(u->deadline_ms - u->started_ms));
	unload_tell(c, &n);
	json_decref(n.event);
}

/* --kill-after: SIGKILL to a process that still holds what u waits for,
 * through the pidfd of its connection (never a pid a client named). */
static void
unload_kill_one(struct conn *c, void *arg)
{
	struct unload *u = arg;
	const char *name = model_name(u->model);

	if (c->pid_exited)
		return;
	if (conn_signal(c, SIGKILL) < 0) {
		log_warn("model %s: cannot kill pid %ld", name, (long)c->pid);
		return;
	}
	log_warnx("model %s: killed pid %ld, which still held it %.1f s after "
		  "the %s began (--kill-after)", name, (long)c->pid,
		  broker.cfg.kill_after_ms / 1000.0,
		  u->gen != NULL ? "drain" : "unload");
	json_array_append_new(u->killed, json_integer(c->pid));
}

static void
unload_kill(struct unload *u)
{
	u->kill_at_ms = -1;
	if (u->killed == NULL)
		u->killed = json_array();
	lease_holders(u->model, u->gen, unload_kill_one, u);
}

/* m's cancelled load ended: what it made and removed counts as freed. */
static void
unload_load_stopped(struct model *m, uint64_t freed, unsigned unlinked)
{
	struct unload *u = unload_find(m);

	if (u != NULL) {
		u->freed += freed;
		u->unlinked += unlinked;
		u->load_stopping = false;
	}
	unload_schedule();
}

int
unload_begin(struct model *m, int64_t timeout_ms, struct conn *c, json_t *id,
	     bool notify, unload_done_fn *done, void *ctx)
{
	struct unload *u = unload_find(m), *d, *tmp;
	enum model_state was = model_state(m);
	int64_t now = clock_monotonic_ms();

	if (u != NULL) {
		if (c != NULL && !pending_add(&u->waiters, c, id))
			return 0;
		u->asked |= c != NULL;
		/* A joined unload never moves the deadline of the one that
		 * runs; the shutdown bounds every unload by its own. */
		if (done != NULL) {
			unload_on_done(u, done, ctx);
			if (now + timeout_ms < u->deadline_ms)
				unload_set_deadline(u, now + timeout_ms);
		}
		log_info("model %s: already unloading; joined", model_name(m));
		unload_schedule();
		return 0;
	}
	if ((u = unload_new(m, NULL, timeout_ms)) == NULL) {
		if (c != NULL)
			reply_error(c, id, MB_EINTERNAL, NULL, "out of memory");
		return -1;
	}
	if (c != NULL && !pending_add(&u->waiters, c, id)) {
		unload_free(u);
		return -1;
	}
	u->asked = c != NULL;
	if (done != NULL)
		unload_on_done(u, done, ctx);
	u->shmem_before_kb = meminfo_shmem_kb();
	/* The unload takes over the drains of m's older generations. */
	for (d = TAILQ_FIRST(&unloads); d != NULL; d = tmp) {
		tmp = TAILQ_NEXT(d, entry);
		if (d->model == m && d->gen != NULL)
			unload_free(d);
	}
	registry_set_state(m, MODEL_UNLOADING);
	log_info("model %s: unloading from %s, %u worker(s) attached, timeout "
		 "%.1f s, Shmem %" PRId64 " kB", model_name(m),
		 registry_state_name(was), model_leases(m), timeout_ms / 1000.0,
		 u->shmem_before_kb);
	if (load_running(m)) {
		u->load_stopping = true;
		load_cancel(m, unload_load_stopped);
	}
	if (notify)
		lease_holders(m, NULL, unload_tell_unload, u);
	unload_schedule();
	return 0;
}

int
unload_idle(struct model *m)
{
	struct unload *u;

	if (model_leases(m) > 0 || load_running(m) || unload_find(m) != NULL ||
	    unload_begin(m, 0, NULL, NULL, false, NULL, NULL) < 0 ||
	    (u = unload_find(m)) == NULL)
		return -1;
	unload_finish(u, false);
	return 0;
}

void
unload_drain(struct generation *old, int64_t timeout_ms)
{
	struct model *m = old->model;
	const struct generation *cur = model_current(m);
	struct unload *u = unload_new(m, old, timeout_ms);
	struct generation *g = NULL;

	old->drain_deadline_ms = clock_monotonic_ms() + timeout_ms;
	if (u == NULL)
		log_warnx("model %s: out of memory; generation %" PRIu64
			  " is freed when its holders let go, without a "
			  "deadline", model_name(m), old->number);
	/* Everyone on an older generation hears of the newest. */
	while ((g = model_generations(m, g)) != NULL) {
		struct unload_notice n = {.model = model_name(m)};

		if (g->role != GENERATION_DRAINING || g->nleases == 0)
			continue;
		int64_t left = g->drain_deadline_ms - clock_monotonic_ms();

		n.event = json_pack("{s:s, s:s, s:I, s:I, s:I}", "event",
				    "replaced", "model", model_name(m),
				    "old_generation", (json_int_t)g->number,
				    "generation", (json_int_t)cur->number,
				    "timeout_ms", (json_int_t)(left > 0 ? left : 0));
		lease_holders(m, g, unload_tell, &n);
		json_decref(n.event);
	}
	unload_schedule();
}

/* Ends the unload u of a model; timed_out when workers still hold it. */
static void
unload_finish(struct unload *u, bool timed_out)
{
	struct model *m = u->model;
	int64_t waited = clock_monotonic_ms() - u->started_ms;
	int64_t release_start = clock_monotonic_us();
	const char *ended = u->interrupted ? "interrupted" : "timed out";
	const struct generation *cur = model_current(m);
	struct unload_report rep = {.timed_out = timed_out};
	char name[MB_NAME_MAX + 1];
	struct generation *g = NULL;
	json_t *report;
	int64_t after;

	while ((g = model_generations(m, g)) != NULL)
		registry_generation_release(g, &u->freed, &u->unlinked);
	after = meminfo_shmem_kb();
	rep.pids = json_array();
	lease_model_pids(m, rep.pids);
	report = json_pack("{s:s, s:I, s:I, s:I, s:I, s:I, s:i}", "model",
			   model_name(m), "generation",
			   (json_int_t)(cur != NULL ? cur->number : 0),
			   "freed_bytes", (json_int_t)u->freed,
			   "shmem_before_kb", (json_int_t)u->shmem_before_kb,
			   "shmem_after_kb", (json_int_t)after, "waited_ms",
			   (json_int_t)waited, "segments_unlinked",
			   (int)u->unlinked);
	if (u->killed != NULL)
		json_object_set(report, "killed", u->killed);
	snprintf(name, sizeof name, "%s", model_name(m));
	rep.model = name;
	rep.asked = u->asked;
	rep.freed = u->freed;
	rep.drained_us = release_start;
	if (timed_out) {
		char *list = json_dumps(rep.pids, JSON_COMPACT);
		unsigned orphans = lease_orphans(m, NULL);

		broker.counters.unload_timeouts++;
		if (model_leases(m) == 0)
			model_set_error(m, "unload %s after %.1f s: its load did "
					"not stop", ended, waited / 1000.0);
		else
			model_set_error(m, "unload %s after %.1f s; still "
					"attached: pids %s%s", ended,
					waited / 1000.0, list != NULL ? list : "?",
					orphans > 0 ? " (some exited; their "
					"connection is held by a process they "
					"forked)" : "");
		free(list);
		registry_set_state(m, MODEL_ERROR);
		log_error("model %s: %s; %u segment(s) unlinked anyway%s", name,
			  model_error(m), u->unlinked, model_leases(m) > 0 ?
			  ", their memory returns when those workers unmap" : "");
		json_object_set(report, "pids", rep.pids);
		json_object_set_new(report, "state", json_string("ERROR"));
		pending_reply_error(&u->waiters, MB_ETIMEOUT, report,
				    model_error(m));
	} else {
		broker.counters.unloads++;
		registry_set_state(m, MODEL_UNINITIALIZED);
		log_info("model %s: unloaded in %" PRId64 " ms, %" PRIu64
			 " bytes freed, %u segment(s) unlinked, Shmem %" PRId64
			 " kB -> %" PRId64 " kB", name, waited, u->freed,
			 u->unlinked, u->shmem_before_kb, after);
		json_object_set_new(report, "state",
				    json_string("UNINITIALIZED"));
		pending_reply_ok(&u->waiters, report);
		while ((g = model_generations(m, NULL)) != NULL)
			registry_generation_remove(g);
		registry_remove(m);
	}
	rep.release_us = clock_monotonic_us() - release_start;
	for (unsigned i = 0; i < u->ndone; i++)
		u->done[i].fn(u->done[i].ctx, &rep);
	json_decref(rep.pids);
	unload_free(u);
}

/* Ends the drain u of a replaced generation. */
static void
unload_drain_finish(struct unload *u, bool timed_out)
{
	struct generation *g = u->gen;
	const char *name = model_name(u->model);
	int64_t waited = clock_monotonic_ms() - u->started_ms;

	broker.counters.drains++;
	broker.counters.drain_ms_sum += (uint64_t)waited;
	if (timed_out) {
		json_t *pids = json_array();
		char *list;

		lease_pids(g, pids);
		list = json_dumps(pids, JSON_COMPACT);
		broker.counters.drain_timeouts++;
		g->abandoned = true;
		log_error("model %s: generation %" PRIu64 " still held %.1f s "
			  "after it was replaced, by pids %s; unlinked anyway, "
			  "its memory returns when they unmap", name, g->number,
			  waited / 1000.0, list != NULL ? list : "?");
		free(list);
		json_decref(pids);
	} else {
		log_info("model %s: generation %" PRIu64 " drained in %" PRId64
			 " ms", name, g->number, waited);
	}
	registry_generation_release(g, &u->freed, &u->unlinked);
	if (g->nleases == 0)
		registry_generation_remove(g);
	unload_free(u);
}

/* How many holders u waits for. */
static unsigned
unload_holders(const struct unload *u)
{
	return u->gen != NULL ? u->gen->nleases : model_leases(u->model);
}

/* Looks at u: finishes it when it can; else returns when to look again
 * (-1: only when something happens). */
static int64_t
unload_look(struct unload *u, int64_t now)
{
	if (u->load_stopping) {
		int64_t abandon = u->started_ms + UNLOAD_CANCEL_GRACE_MS;

		if (abandon < u->deadline_ms)
			abandon = u->deadline_ms;
		if (now < abandon)
			return abandon;
		u->unlinked += load_abandon(u->model);
		u->load_stopping = false;
		u->load_abandoned = true;
	}
	if (unload_holders(u) > 0 && u->kill_at_ms >= 0 &&
	    now >= u->kill_at_ms && now < u->deadline_ms)
		unload_kill(u);
	if ((unload_holders(u) == 0 && !u->load_abandoned) ||
	    now >= u->deadline_ms) {
		bool timed_out = unload_holders(u) > 0 || u->load_abandoned;

		if (u->gen != NULL)
			unload_drain_finish(u, timed_out);
		else
			unload_finish(u, timed_out);
		return -1;
	}
	return u->kill_at_ms >= 0 ? u->kill_at_ms : u->deadline_ms;
}

/* Looks at every wait in progress and arms the ack waiter for the
 * nearest deadline. */
static void
unload_evaluate(evutil_socket_t fd, short what, void *arg)
{
	int64_t now = clock_monotonic_ms(), next = -1;
	struct unload *u, *tmp;

	(void)fd;
	(void)what;
	(void)arg;
	for (u = TAILQ_FIRST(&unloads); u != NULL; u = tmp) {
		int64_t due;

		tmp = TAILQ_NEXT(u, entry);
		due = unload_look(u, now);
		if (due >= 0 && (next < 0 || due < next))
			next = due;
	}
	ackwait_arm(next);
}

void
unload_expire_all(void)
{
	int64_t now = clock_monotonic_ms();
	struct unload *u;

	TAILQ_FOREACH(u, &unloads, entry) {
		unload_set_deadline(u, now);
		u->interrupted = true;
	}
	unload_schedule();
}

/* A lease of g was released: a drained generation nobody holds any more
 * goes, and the waits have a look. */
static void
unload_released(struct generation *g)
{
	uint64_t freed = 0;
	unsigned unlinked = 0;
	struct unload *u;

	TAILQ_FOREACH(u, &unloads, entry)
		if (u->gen == g || (u->gen == NULL && u->model == g->model))
			break;
	/* A drain without a record (out of memory when it began) ends
	 * here. */
	if (u == NULL && g->role == GENERATION_DRAINING && g->nleases == 0)
		registry_generation_release(g, &freed, &unlinked);
	if (g->role == GENERATION_DRAINING && g->members == NULL &&
	    g->nleases == 0) {
		log_info("model %s: the last holder of generation %" PRIu64
			 " let go", model_name(g->model), g->number);
		registry_generation_remove(g);
	}
	if (!TAILQ_EMPTY(&unloads))
		unload_schedule();
	residency_schedule();
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
	lease_set_release_hook(unload_released);
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
