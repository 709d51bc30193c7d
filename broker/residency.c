/* SPDX-License-Identifier: MIT */
/*
 * residency.c - which models stay loaded when nobody asks for them: the
 * keep-alive, which unloads a model nobody has attached for its time
 * (--keep-alive, or load's keep_alive; 0: as soon as the last holder lets
 * go), and eviction, which makes room for a load by unloading the models
 * nobody holds and nobody pinned, least recently used first, one at a
 * time, and only while the load does not fit.  A pinned model is never
 * touched by either.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lease.h"
#include "mbrokerd.h"
#include "ops.h"
#include "registry.h"
#include "segment.h"

static struct event *residency_ev;

/* Whether m may be unloaded without anyone asking: loaded, held by
 * nobody, not pinned, nothing running on it. */
static bool
residency_idle(const struct model *m)
{
	return model_state(m) == MODEL_READY && model_leases(m) == 0 &&
	       !model_pinned(m) && !load_running(m);
}

/* Unloads every model idle past its keep-alive; arms the timer for the
 * next one due. */
static void
residency_sweep(evutil_socket_t fd, short what, void *arg)
{
	int64_t now = clock_monotonic_ms(), next = -1;
	struct model *m, *after;

	(void)fd;
	(void)what;
	(void)arg;
	if (broker.shutting_down)
		return;
	/* An idle unload removes m at once, never another model. */
	for (m = registry_next(NULL); m != NULL; m = after) {
		int64_t keep = model_keep_alive(m), due;

		after = registry_next(m);
		/* 0: as soon as the last holder lets go, so not before a
		 * first one came. */
		if (keep < 0 || !residency_idle(m) ||
		    (keep == 0 && !model_was_held(m)))
			continue;
		due = model_last_used(m) + keep;
		if (now < due) {
			if (next < 0 || due < next)
				next = due;
			continue;
		}
		broker.counters.idle_unloads++;
		log_info("model %s: idle for %.1f s (keep-alive %.1f s); "
			 "unloading", model_name(m),
			 (now - model_last_used(m)) / 1000.0, keep / 1000.0);
		unload_idle(m);
	}
	if (next >= 0) {
		struct timeval tv = {(next - now) / 1000,
				     (next - now) % 1000 * 1000};

		evtimer_add(residency_ev, &tv);
	}
}

void
residency_schedule(void)
{
	if (residency_ev != NULL)
		event_active(residency_ev, EV_TIMEOUT, 0);
}

/* The least recently used model that may be evicted, never the one
 * called name, or NULL. */
static struct model *
residency_victim(const char *name)
{
	struct model *m, *oldest = NULL;

	for (m = registry_next(NULL); m != NULL; m = registry_next(m))
		if (residency_idle(m) && strcmp(model_name(m), name) != 0 &&
		    (oldest == NULL ||
		     model_last_used(m) < model_last_used(oldest)))
			oldest = m;
	return oldest;
}

/* Says what holds the memory when no model can be evicted. */
static void
residency_holders(char *buf, size_t len)
{
	size_t used = 0;
	struct model *m;

	buf[0] = '\0';
	for (m = registry_next(NULL); m != NULL && used < len;
	     m = registry_next(m)) {
		const struct generation *g = model_current(m);
		json_t *pids;
		char *list;
		int n;

		if (g == NULL || g->members == NULL)
			continue;
		pids = json_array();
		lease_model_pids(m, pids);
		list = json_dumps(pids, JSON_COMPACT);
		n = snprintf(buf + used, len - used, "%s%s %" PRIu64
			     " bytes%s%s%s%s", used > 0 ? "; " : "",
			     model_name(m), g->size,
			     model_leases(m) > 0 ? " held by pids " : "",
			     model_leases(m) > 0 && list != NULL ? list : "",
			     model_pinned(m) ? " pinned" : "",
			     model_state(m) != MODEL_READY ? " (busy)" : "");
		free(list);
		json_decref(pids);
		if (n < 0)
			break;
		used += (size_t)n;
	}
}

/* The bytes every model that may be evicted for name holds. */
static uint64_t
residency_evictable(const char *name)
{
	uint64_t bytes = 0;
	struct model *m;

	for (m = registry_next(NULL); m != NULL; m = registry_next(m))
		if (residency_idle(m) && strcmp(model_name(m), name) != 0)
			bytes += model_current(m)->size;
	return bytes;
}

int
residency_make_room(uint64_t size, const char *name, char *why, size_t len)
{
	char reason[512], holders[1024];
	struct model *victim;

	if (segment_room(size, reason, sizeof reason))
		return 0;
	/* Evict only when it makes the room: never for nothing. */
	if (!segment_room_freeing(size, residency_evictable(name), why, len)) {
		residency_holders(holders, sizeof holders);
		snprintf(why, len, "%s; evicting every model nobody holds "
			 "would not make room (held: %s)", reason,
			 holders[0] != '\0' ? holders : "none");
		return MB_ENOSPACE;
	}
	while (!segment_room(size, reason, sizeof reason)) {
		if ((victim = residency_victim(name)) == NULL) {
			snprintf(why, len, "%s; no model left to evict", reason);
			return MB_ENOSPACE;
		}
		broker.counters.evictions++;
		log_info("model %s: evicted to make room for %s (%s; last used "
			 "%.1f s ago)", model_name(victim), name, reason,
			 (clock_monotonic_ms() - model_last_used(victim)) /
				 1000.0);
		if (unload_idle(victim) < 0) {
			snprintf(why, len, "%s; evicting %s failed", reason,
				 model_name(victim));
			return MB_ENOSPACE;
		}
	}
	return 0;
}

int
residency_init(void)
{
	for (size_t i = 0; i < broker.cfg.npins; i++)
		if (!registry_pin(broker.cfg.pins[i], true))
			return -1;
	residency_ev = evtimer_new(broker.base, residency_sweep, NULL);
	return residency_ev != NULL ? 0 : -1;
}

void
residency_shutdown(void)
{
	if (residency_ev != NULL)
		event_free(residency_ev);
	residency_ev = NULL;
}
