/* SPDX-License-Identifier: MIT */
/*
 * lease.c - attachments (leases): which connection holds which generation.
 * This is the broker's own per-worker state that decides when a drain or
 * an unload may finish: a generation is free when its count of leases
 * reaches zero, whatever the semaphore says.  Each connection holding
 * leases has a holder record that also counts what it holds per model
 * slot, so that the registry mirror and the pids holding a model cost one
 * look per holding connection, not one per lease or per connection.
 */
#include <stdlib.h>

#include "mbrokerd.h"
#include "bundle.h"
#include "conn.h"
#include "lease.h"
#include "registry.h"
#include "segment.h"

struct lease {
	TAILQ_ENTRY(lease) entry;
	uint64_t id;
	struct lease_holder *holder;
	struct generation *generation;
	/* Its own reference to each member's segment, in member order. */
	struct segment **segments;
	unsigned nsegments;
};

struct lease_holder {
	TAILQ_ENTRY(lease_holder) entry;
	struct conn *conn;
	TAILQ_HEAD(, lease) leases;
	unsigned nleases;
	unsigned mirror_record;            /* its worker record + 1, or 0 */
	uint16_t held[BROKER_MAX_MODELS]; /* leases per model slot */
};

static TAILQ_HEAD(, lease_holder) lease_holders_list =
	TAILQ_HEAD_INITIALIZER(lease_holders_list);
static unsigned lease_nholders;
static uint64_t lease_last_id;
static void (*lease_release_hook)(struct generation *g);

void
lease_set_release_hook(void (*hook)(struct generation *g))
{
	lease_release_hook = hook;
}

/* c's holder record, created with its first lease; NULL out of memory. */
static struct lease_holder *
lease_holder_of(struct conn *c)
{
	struct lease_holder *h = c->holder;

	if (h != NULL)
		return h;
	if ((h = calloc(1, sizeof *h)) == NULL)
		return NULL;
	h->conn = c;
	TAILQ_INIT(&h->leases);
	TAILQ_INSERT_TAIL(&lease_holders_list, h, entry);
	lease_nholders++;
	c->holder = h;
	return h;
}

struct lease *
lease_add(struct conn *c, struct generation *g)
{
	struct lease_holder *h = lease_holder_of(c);
	unsigned slot = model_slot(g->model);
	struct lease *l;

	if (h == NULL)
		return NULL;
	if ((l = calloc(1, sizeof *l)) == NULL ||
	    (l->segments = calloc(g->nmembers, sizeof *l->segments)) == NULL) {
		free(l);
		if (h->nleases == 0) {
			TAILQ_REMOVE(&lease_holders_list, h, entry);
			lease_nholders--;
			c->holder = NULL;
			free(h);
		}
		return NULL;
	}
	l->id = ++lease_last_id;
	l->holder = h;
	l->generation = g;
	for (unsigned i = 0; i < g->nmembers; i++)
		l->segments[i] = segment_hold(g->members[i].segment);
	l->nsegments = g->nmembers;
	TAILQ_INSERT_TAIL(&h->leases, l, entry);
	h->nleases++;
	registry_generation_leased(g, 1);
	if (h->held[slot]++ == 0)
		mirror_worker_changed(&h->mirror_record, c->pid, h->held);
	return l;
}

void
lease_release(struct lease *l)
{
	struct lease_holder *h = l->holder;
	struct generation *g = l->generation;
	struct conn *c = h->conn;
	unsigned slot = model_slot(g->model);

	TAILQ_REMOVE(&h->leases, l, entry);
	h->nleases--;
	registry_generation_leased(g, -1);
	for (unsigned i = 0; i < l->nsegments; i++)
		segment_put(l->segments[i]);
	free(l->segments);
	if (--h->held[slot] == 0)
		mirror_worker_changed(&h->mirror_record, c->pid,
				      h->nleases > 0 ? h->held : NULL);
	log_debug("model %s: released by pid %ld (attachment %llu), %u left",
		  model_name(g->model), (long)c->pid,
		  (unsigned long long)l->id, model_leases(g->model));
	free(l);
	if (h->nleases == 0) {
		TAILQ_REMOVE(&lease_holders_list, h, entry);
		lease_nholders--;
		c->holder = NULL;
		free(h);
	}
	if (lease_release_hook != NULL)
		lease_release_hook(g);
}

unsigned
lease_release_all(struct conn *c)
{
	unsigned n = 0;

	while (c->holder != NULL) {
		lease_release(TAILQ_FIRST(&c->holder->leases));
		n++;
	}
	return n;
}

struct lease *
lease_find(struct conn *c, uint64_t id)
{
	struct lease *l;

	if (c->holder == NULL)
		return NULL;
	TAILQ_FOREACH(l, &c->holder->leases, entry)
		if (l->id == id)
			return l;
	return NULL;
}

struct lease *
lease_next(const struct conn *c, const struct lease *l)
{
	if (l != NULL)
		return TAILQ_NEXT(l, entry);
	return c->holder != NULL ? TAILQ_FIRST(&c->holder->leases) : NULL;
}

uint64_t
lease_id(const struct lease *l)
{
	return l->id;
}

struct generation *
lease_generation(const struct lease *l)
{
	return l->generation;
}

unsigned
lease_members(const struct lease *l)
{
	return l->nsegments;
}

unsigned
lease_descriptors(const struct lease *l, unsigned from, int *fds)
{
	unsigned n = 0;

	while (n < MB_FDS_PER_MESSAGE && from + n < l->nsegments) {
		fds[n] = segment_fd(l->segments[from + n]);
		n++;
	}
	return n;
}

unsigned
lease_count(const struct conn *c)
{
	return c->holder != NULL ? c->holder->nleases : 0;
}

unsigned
lease_holders_count(void)
{
	return lease_nholders;
}

/* Whether h holds g, or any generation of m when g is NULL. */
static bool
lease_holds(const struct lease_holder *h, const struct model *m,
	    const struct generation *g)
{
	const struct lease *l;

	if (g == NULL)
		return h->held[model_slot(m)] > 0;
	if (h->held[model_slot(g->model)] == 0)
		return false;
	TAILQ_FOREACH(l, &h->leases, entry)
		if (l->generation == g)
			return true;
	return false;
}

void
lease_holders(const struct model *m, const struct generation *g,
	      void (*fn)(struct conn *c, void *arg), void *arg)
{
	struct lease_holder *h;

	TAILQ_FOREACH(h, &lease_holders_list, entry)
		if (lease_holds(h, m, g))
			fn(h->conn, arg);
}

struct generation *
lease_newest(const struct conn *c, const struct model *m)
{
	struct generation *newest = NULL;
	const struct lease *l = NULL;

	while ((l = lease_next(c, l)) != NULL)
		if (l->generation->model == m &&
		    (newest == NULL || l->generation->number > newest->number))
			newest = l->generation;
	return newest;
}

void
lease_each_holder(void (*fn)(struct conn *c, void *arg), void *arg)
{
	struct lease_holder *h;

	TAILQ_FOREACH(h, &lease_holders_list, entry)
		fn(h->conn, arg);
}

static void
lease_append_pid(struct conn *c, void *arg)
{
	json_array_append_new(arg, json_integer(c->pid));
}

void
lease_pids(const struct generation *g, json_t *array)
{
	lease_holders(g->model, g, lease_append_pid, array);
}

void
lease_model_pids(const struct model *m, json_t *array)
{
	lease_holders(m, NULL, lease_append_pid, array);
}

json_t *
lease_model_json(const struct model *m)
{
	json_t *o = registry_model_json(m);
	json_t *gens = json_object_get(o, "generations");
	const struct generation *g = NULL;
	size_t i = 0;

	if (o == NULL)
		return NULL;
	json_object_set_new(o, "pids", json_array());
	lease_model_pids(m, json_object_get(o, "pids"));
	if (model_state(m) == MODEL_READY)
		json_object_set_new(o, "idle_ms", json_integer(
			model_leases(m) > 0 ? 0
			: clock_monotonic_ms() - model_last_used(m)));
	while ((g = model_generations(m, g)) != NULL) {
		json_t *item = json_array_get(gens, i++);

		json_object_set_new(item, "pids", json_array());
		lease_pids(g, json_object_get(item, "pids"));
	}
	return o;
}

static void
lease_count_orphan(struct conn *c, void *arg)
{
	unsigned *n = arg;

	*n += c->pid_exited;
}

unsigned
lease_orphans(const struct model *m, const struct generation *g)
{
	unsigned n = 0;

	lease_holders(m, g, lease_count_orphan, &n);
	return n;
}
