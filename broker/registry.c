/* SPDX-License-Identifier: MIT */
/*
 * registry.c - the broker's private registry of models, the truth about
 * what is loaded (registry.h): each model's state machine, its
 * generations, lookup, and the JSON form the control requests report.
 * Shared memory mirrors it (mirror.c); nothing a worker can write is ever
 * read back into it.
 *
 *   UNINITIALIZED -> LOADING -> READY -> UNLOADING -> UNINITIALIZED
 *   LOADING -> ERROR (load failed), LOADING -> UNLOADING (cancelled)
 *   UNLOADING -> ERROR (timed out), ERROR -> LOADING | UNLOADING (retry)
 *
 * A replace does not move the model: it stays READY while its next
 * generation loads, and the switch to it is one assignment.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "loader.h"
#include "mbrokerd.h"
#include "registry.h"
#include "bundle.h"
#include "segment.h"

struct model {
	TAILQ_ENTRY(model) entry;
	char name[MB_NAME_MAX + 1];
	unsigned slot;
	enum model_state state;
	enum load_reason reason;
	int64_t keep_alive_ms;
	int64_t last_used_ms;
	bool held; /* attached at least once since it was loaded */
	char error[PATH_MAX + 512];
	/* Newest first: the next (if any), the current, then draining. */
	TAILQ_HEAD(, generation) generations;
};

static TAILQ_HEAD(, model) registry_models =
	TAILQ_HEAD_INITIALIZER(registry_models);
static unsigned registry_nmodels;
/* Each model's slot, its index in the registry mirror. */
static struct model *registry_slots[BROKER_MAX_MODELS];
/* Generation numbers are never reused within one broker. */
static uint64_t registry_last_generation;
/* Pinned names, loaded or not. */
static char (*registry_pins)[MB_NAME_MAX + 1];
static size_t registry_npins;

static const char *const registry_reason_names[] = {
	[REASON_PRELOAD] = "preload",
	[REASON_EXPLICIT] = "explicit",
	[REASON_AUTOLOAD] = "autoload",
};

static const char *const registry_state_names[] = {
	[MODEL_UNINITIALIZED] = "UNINITIALIZED",
	[MODEL_LOADING] = "LOADING",
	[MODEL_READY] = "READY",
	[MODEL_UNLOADING] = "UNLOADING",
	[MODEL_ERROR] = "ERROR",
};

static const char *const registry_role_names[] = {
	[GENERATION_NEXT] = "next",
	[GENERATION_CURRENT] = "current",
	[GENERATION_DRAINING] = "draining",
};

const char *
registry_state_name(enum model_state state)
{
	if ((unsigned)state >= sizeof registry_state_names /
				       sizeof registry_state_names[0])
		return "?";
	return registry_state_names[state];
}

bool
registry_transition_valid(enum model_state from, enum model_state to)
{
	switch (from) {
	case MODEL_UNINITIALIZED:
		return to == MODEL_LOADING;
	case MODEL_LOADING:
		return to == MODEL_READY || to == MODEL_ERROR ||
		       to == MODEL_UNLOADING;
	case MODEL_READY:
		return to == MODEL_UNLOADING;
	case MODEL_UNLOADING:
		return to == MODEL_UNINITIALIZED || to == MODEL_ERROR;
	case MODEL_ERROR:
		return to == MODEL_LOADING || to == MODEL_UNLOADING;
	}
	return false;
}

void
registry_set_state(struct model *m, enum model_state to)
{
	if (!registry_transition_valid(m->state, to))
		fatalx("model %s: invalid transition %s -> %s", m->name,
		       registry_state_name(m->state), registry_state_name(to));
	log_debug("model %s: %s -> %s", m->name, registry_state_name(m->state),
		  registry_state_name(to));
	m->state = to;
	if (to != MODEL_ERROR)
		m->error[0] = '\0';
	mirror_model_changed(m->slot);
}

struct model *
registry_find(const char *name)
{
	struct model *m;

	TAILQ_FOREACH(m, &registry_models, entry)
		if (strcmp(m->name, name) == 0)
			return m;
	return NULL;
}

struct model *
registry_at(unsigned slot)
{
	return slot < BROKER_MAX_MODELS ? registry_slots[slot] : NULL;
}

struct model *
registry_add(const char *name)
{
	unsigned slot = 0;
	struct model *m;

	if (registry_nmodels >= BROKER_MAX_MODELS ||
	    (m = calloc(1, sizeof *m)) == NULL)
		return NULL;
	while (registry_slots[slot] != NULL)
		slot++;
	registry_slots[slot] = m;
	m->slot = slot;
	snprintf(m->name, sizeof m->name, "%s", name);
	m->state = MODEL_UNINITIALIZED;
	m->keep_alive_ms = broker.cfg.keep_alive_ms;
	m->last_used_ms = clock_monotonic_ms();
	TAILQ_INIT(&m->generations);
	TAILQ_INSERT_TAIL(&registry_models, m, entry);
	registry_nmodels++;
	mirror_model_changed(m->slot);
	return m;
}

void
registry_remove(struct model *m)
{
	if (!TAILQ_EMPTY(&m->generations))
		fatalx("model %s removed while it still has generations",
		       m->name);
	TAILQ_REMOVE(&registry_models, m, entry);
	registry_nmodels--;
	registry_slots[m->slot] = NULL;
	mirror_model_changed(m->slot);
	free(m);
}

unsigned
registry_count(void)
{
	return registry_nmodels;
}

struct model *
registry_next(const struct model *m)
{
	return m == NULL ? TAILQ_FIRST(&registry_models)
			 : TAILQ_NEXT(m, entry);
}

const char *
model_name(const struct model *m)
{
	return m->name;
}

unsigned
model_slot(const struct model *m)
{
	return m->slot;
}

enum model_state
model_state(const struct model *m)
{
	return m->state;
}

const char *
model_error(const struct model *m)
{
	return m->error;
}

void
model_set_error(struct model *m, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(m->error, sizeof m->error, fmt, ap);
	va_end(ap);
	mirror_model_changed(m->slot);
}

enum load_reason
model_reason(const struct model *m)
{
	return m->reason;
}

void
model_set_reason(struct model *m, enum load_reason reason)
{
	m->reason = reason;
	mirror_model_changed(m->slot);
}

int64_t
model_keep_alive(const struct model *m)
{
	return m->keep_alive_ms;
}

void
model_set_keep_alive(struct model *m, int64_t ms)
{
	m->keep_alive_ms = ms;
	mirror_model_changed(m->slot);
}

int64_t
model_last_used(const struct model *m)
{
	return m->last_used_ms;
}

void
model_touch(struct model *m)
{
	m->last_used_ms = clock_monotonic_ms();
}

bool
model_was_held(const struct model *m)
{
	return m->held;
}

/* The index of name among the pins, or -1. */
static ssize_t
registry_pin_index(const char *name)
{
	for (size_t i = 0; i < registry_npins; i++)
		if (strcmp(registry_pins[i], name) == 0)
			return (ssize_t)i;
	return -1;
}

bool
registry_pinned(const char *name)
{
	return registry_pin_index(name) >= 0;
}

bool
model_pinned(const struct model *m)
{
	return registry_pinned(m->name);
}

bool
registry_pin(const char *name, bool pin)
{
	ssize_t i = registry_pin_index(name);
	struct model *m = registry_find(name);

	if (pin && i < 0) {
		if (registry_npins == REGISTRY_MAX_PINS)
			return false;
		if (registry_pins == NULL &&
		    (registry_pins = calloc(REGISTRY_MAX_PINS,
					    sizeof *registry_pins)) == NULL)
			return false;
		snprintf(registry_pins[registry_npins++], MB_NAME_MAX + 1, "%s",
			 name);
	} else if (!pin && i >= 0) {
		memcpy(registry_pins[i], registry_pins[--registry_npins],
		       sizeof registry_pins[i]);
	}
	if (m != NULL)
		mirror_model_changed(m->slot);
	return true;
}

/* The generation of m in role, or NULL. */
static struct generation *
model_role(const struct model *m, enum generation_role role)
{
	struct generation *g;

	TAILQ_FOREACH(g, &m->generations, entry)
		if (g->role == role)
			return g;
	return NULL;
}

struct generation *
model_current(const struct model *m)
{
	return model_role(m, GENERATION_CURRENT);
}

struct generation *
model_next_generation(const struct model *m)
{
	return model_role(m, GENERATION_NEXT);
}

struct generation *
model_generations(const struct model *m, const struct generation *g)
{
	return g == NULL ? TAILQ_FIRST(&m->generations)
			 : TAILQ_NEXT(g, entry);
}

unsigned
model_leases(const struct model *m)
{
	const struct generation *g;
	unsigned n = 0;

	TAILQ_FOREACH(g, &m->generations, entry)
		n += g->nleases;
	return n;
}

struct generation *
registry_generation_new(struct model *m, const struct provider *provider,
			const char *path)
{
	struct generation *g = calloc(1, sizeof *g);

	if (g == NULL)
		return NULL;
	g->model = m;
	g->number = ++registry_last_generation;
	g->role = GENERATION_NEXT;
	g->provider = provider;
	snprintf(g->path, sizeof g->path, "%s", path);
	g->load_started_ms = clock_monotonic_ms();
	TAILQ_INSERT_HEAD(&m->generations, g, entry);
	mirror_model_changed(m->slot);
	return g;
}

struct generation *
registry_generation_promote(struct model *m)
{
	struct generation *next = model_next_generation(m);
	struct generation *old = model_current(m);

	if (next == NULL || next->members == NULL)
		fatalx("model %s: promoting a generation that is not loaded",
		       m->name);
	if (old != NULL)
		old->role = GENERATION_DRAINING;
	next->role = GENERATION_CURRENT;
	mirror_model_changed(m->slot);
	return old;
}

/* Lets go of what member x holds; counts a name removed in *unlinked and
 * its bytes in *freed when nobody holds it. */
static void
registry_member_release(const struct generation *g, struct member *x,
			uint64_t *freed, unsigned *unlinked)
{
	int r;

	if (x->provider_state != NULL &&
	    x->provider->unload(x->provider_state) < 0)
		log_warnx("model %s: the %s provider's unload hook failed; "
			  "going on", g->model->name, x->provider->name);
	x->provider_state = NULL;
	if ((r = segment_unlink(x->segment)) < 0) {
		log_warn("model %s: cannot unlink %s; going on", g->model->name,
			 segment_name(x->segment));
	} else if (r > 0) {
		(*unlinked)++;
		if (g->nleases == 0)
			*freed += x->size;
	}
	/* Its holders keep their own references: the bytes stay counted
	 * until the last of them lets go. */
	segment_put(x->segment);
	x->segment = NULL;
}

void
registry_generation_release(struct generation *g, uint64_t *freed,
			    unsigned *unlinked)
{
	if (g->members == NULL)
		return;
	for (unsigned i = 0; i < g->nmembers; i++)
		registry_member_release(g, &g->members[i], freed, unlinked);
	free(g->members);
	g->members = NULL;
	g->nmembers = 0;
	mirror_model_changed(g->model->slot);
}

bool
generation_is_bundle(const struct generation *g)
{
	return g->provider == &provider_bundle;
}

const char *
generation_segment_name(const struct generation *g)
{
	return g->members != NULL ? segment_name(g->members[0].segment) : "";
}

void
registry_generation_remove(struct generation *g)
{
	struct model *m = g->model;

	if (g->members != NULL || g->job != NULL || g->nleases > 0)
		fatalx("model %s: generation %" PRIu64 " removed while it "
		       "still holds resources", m->name, g->number);
	TAILQ_REMOVE(&m->generations, g, entry);
	free(g);
	mirror_model_changed(m->slot);
}

void
registry_generation_leased(struct generation *g, int delta)
{
	g->nleases = (unsigned)((int)g->nleases + delta);
	g->model->last_used_ms = clock_monotonic_ms();
	g->model->held |= delta > 0;
	mirror_model_changed(g->model->slot);
}

/* One generation's JSON object for "generations". */
static json_t *
registry_generation_json(const struct generation *g)
{
	char sum[17];
	json_t *o;

	o = json_pack("{s:I, s:s, s:I, s:i}", "generation",
		      (json_int_t)g->number, "role",
		      registry_role_names[g->role], "size",
		      (json_int_t)(g->job != NULL ? loader_total(g->job)
						  : g->size),
		      "attached", (int)g->nleases);
	if (o == NULL)
		return NULL;
	json_object_set_new(o, "path", json_string(g->path));
	if (g->job != NULL)
		json_object_set_new(o, "bytes_done",
				    json_integer((json_int_t)loader_progress(
					    g->job)));
	if (g->members != NULL) {
		snprintf(sum, sizeof sum, "%016" PRIx64, g->checksum);
		json_object_set_new(o, "checksum", json_string(sum));
		if (generation_segment_name(g)[0] != '\0')
			json_object_set_new(o, "segment", json_string(
				generation_segment_name(g)));
	}
	if (g->role == GENERATION_DRAINING) {
		int64_t left = g->drain_deadline_ms - clock_monotonic_ms();

		json_object_set_new(o, "drain_deadline_ms",
				    json_integer(left > 0 ? left : 0));
		if (g->abandoned)
			json_object_set_new(o, "state", json_string("ERROR"));
	}
	return o;
}

json_t *
registry_model_json(const struct model *m)
{
	const struct generation *cur = model_current(m);
	const struct generation *g = cur != NULL ? cur
						 : model_next_generation(m);
	json_t *o, *gens;
	char sum[17];

	if (g == NULL)
		g = TAILQ_FIRST(&m->generations);
	o = json_pack("{s:s, s:s, s:s, s:I, s:I, s:i}", "name", m->name,
		      "format", g != NULL ? g->provider->name : "", "state",
		      registry_state_name(m->state), "generation",
		      (json_int_t)(g != NULL ? g->number : 0), "size",
		      (json_int_t)(g == NULL ? 0 : g->job != NULL
				   ? loader_total(g->job) : g->size),
		      "attached", (int)model_leases(m));
	if (o == NULL)
		return NULL;
	json_object_set_new(o, "path", json_string(g != NULL ? g->path : ""));
	if (m->state == MODEL_LOADING && g != NULL && g->job != NULL)
		json_object_set_new(o, "bytes_done", json_integer(
			(json_int_t)loader_progress(g->job)));
	if ((m->state == MODEL_READY || m->state == MODEL_UNLOADING) &&
	    g != NULL && g->role == GENERATION_CURRENT) {
		snprintf(sum, sizeof sum, "%016" PRIx64, g->checksum);
		json_object_set_new(o, "checksum", json_string(sum));
		json_object_set_new(o, "tensors",
				    json_integer((json_int_t)g->ntensors));
		json_object_set_new(o, "load_ms", json_integer(g->load_ms));
	}
	if (g != NULL && generation_segment_name(g)[0] != '\0')
		json_object_set_new(o, "segment",
				    json_string(generation_segment_name(g)));
	if (g != NULL && generation_is_bundle(g) && g->members != NULL)
		json_object_set_new(o, "members",
				    json_integer((json_int_t)g->nmembers));
	if (m->state == MODEL_ERROR)
		json_object_set_new(o, "error", json_string(m->error));
	json_object_set_new(o, "pinned", json_boolean(model_pinned(m)));
	json_object_set_new(o, "keep_alive_ms", json_integer(m->keep_alive_ms));
	json_object_set_new(o, "reason",
			    json_string(registry_reason_names[m->reason]));
	gens = json_array();
	TAILQ_FOREACH(g, &m->generations, entry)
		json_array_append_new(gens, registry_generation_json(g));
	json_object_set_new(o, "generations", gens);
	return o;
}

void
registry_clear(void)
{
	struct model *m;
	struct generation *g;

	free(registry_pins);
	registry_pins = NULL;
	registry_npins = 0;
	while ((m = TAILQ_FIRST(&registry_models)) != NULL) {
		while ((g = TAILQ_FIRST(&m->generations)) != NULL) {
			uint64_t freed = 0;
			unsigned unlinked = 0;

			if (generation_segment_name(g)[0] != '\0')
				log_warnx("model %s: unlinking %s%s at exit",
					  m->name, generation_segment_name(g),
					  g->nmembers > 1 ? " and the other "
					  "segments of its bundle" : "");
			registry_generation_release(g, &freed, &unlinked);
			TAILQ_REMOVE(&m->generations, g, entry);
			free(g);
		}
		registry_slots[m->slot] = NULL;
		TAILQ_REMOVE(&registry_models, m, entry);
		registry_nmodels--;
		free(m);
	}
}
