/* SPDX-License-Identifier: MIT */
/*
 * registry.c - the broker's private registry of models, the truth about
 * what is loaded: the state machine each model follows, lookup, and the
 * JSON form the control requests report.  Shared memory mirrors it
 * (mirror.c); nothing a worker can write is ever read back into it.
 *
 *   UNINITIALIZED -> LOADING -> READY -> UNLOADING -> UNINITIALIZED
 *   LOADING -> ERROR (load failed), LOADING -> UNLOADING (cancelled)
 *   UNLOADING -> ERROR (timed out), ERROR -> LOADING | UNLOADING (retry)
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mbrokerd.h"

/* Each model's slot, its index in the registry mirror. */
static struct model *registry_slots[BROKER_MAX_MODELS];

static const char *const registry_state_names[] = {
	[MODEL_UNINITIALIZED] = "UNINITIALIZED",
	[MODEL_LOADING] = "LOADING",
	[MODEL_READY] = "READY",
	[MODEL_UNLOADING] = "UNLOADING",
	[MODEL_ERROR] = "ERROR",
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
	mirror_model_changed(m);
}

struct model *
registry_find(const char *name)
{
	struct model *m;

	TAILQ_FOREACH(m, &broker.models, entry)
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

	if (broker.nmodels >= BROKER_MAX_MODELS ||
	    (m = calloc(1, sizeof *m)) == NULL)
		return NULL;
	while (registry_slots[slot] != NULL)
		slot++;
	registry_slots[slot] = m;
	m->slot = slot;
	snprintf(m->name, sizeof m->name, "%s", name);
	m->state = MODEL_UNINITIALIZED;
	m->ro_fd = -1;
	TAILQ_INIT(&m->start_waiters);
	TAILQ_INIT(&m->load_waiters);
	TAILQ_INIT(&m->unload_waiters);
	TAILQ_INSERT_TAIL(&broker.models, m, entry);
	broker.nmodels++;
	mirror_model_changed(m);
	return m;
}

void
registry_remove(struct model *m)
{
	if (m->job != NULL || m->ro_fd >= 0 || m->nattached > 0 ||
	    m->segment[0] != '\0' || !pending_none(m))
		fatalx("model %s removed while it still holds resources or "
		       "owes replies", m->name);
	TAILQ_REMOVE(&broker.models, m, entry);
	broker.nmodels--;
	registry_slots[m->slot] = NULL;
	mirror_model_changed(m);
	free(m);
}

unsigned
registry_count(void)
{
	return broker.nmodels;
}

/* The model's JSON object, with its "pids" or without. */
static json_t *
registry_model_build(const struct model *m, bool pids)
{
	char sum[17];
	json_t *o;

	snprintf(sum, sizeof sum, "%016" PRIx64, m->checksum);
	o = json_pack("{s:s, s:s, s:s, s:I, s:I, s:i}", "name", m->name,
		      "format", m->provider != NULL ? m->provider->name : "",
		      "state", registry_state_name(m->state), "generation",
		      (json_int_t)m->generation, "size",
		      (json_int_t)loader_total(m), "attached", (int)m->nattached);
	if (o == NULL)
		return NULL;
	json_object_set_new(o, "path", json_string(m->path));
	if (pids) {
		json_object_set_new(o, "pids", json_array());
		attach_pids(m, json_object_get(o, "pids"));
	}
	if (m->state == MODEL_LOADING)
		json_object_set_new(o, "bytes_done",
				    json_integer((json_int_t)loader_progress(m)));
	if (m->state == MODEL_READY || m->state == MODEL_UNLOADING) {
		json_object_set_new(o, "checksum", json_string(sum));
		json_object_set_new(o, "tensors",
				    json_integer((json_int_t)m->ntensors));
		json_object_set_new(o, "load_ms", json_integer(m->load_ms));
	}
	if (m->segment[0] != '\0')
		json_object_set_new(o, "segment", json_string(m->segment));
	if (m->state == MODEL_ERROR)
		json_object_set_new(o, "error", json_string(m->error));
	return o;
}

json_t *
registry_model_json(const struct model *m)
{
	return registry_model_build(m, true);
}

json_t *
registry_model_fields(const struct model *m)
{
	return registry_model_build(m, false);
}

void
registry_clear(void)
{
	struct model *m;

	while ((m = TAILQ_FIRST(&broker.models)) != NULL) {
		if (m->segment[0] != '\0') {
			log_warnx("model %s: unlinking %s at exit", m->name,
				  m->segment);
			segment_unlink(m->segment);
			segment_unreserve(m->size);
		}
		if (m->provider != NULL && m->provider_state != NULL)
			m->provider->unload(m->provider_state);
		if (m->ro_fd >= 0)
			close(m->ro_fd);
		json_decref(m->killed_pids);
		registry_slots[m->slot] = NULL;
		TAILQ_REMOVE(&broker.models, m, entry);
		broker.nmodels--;
		free(m);
	}
}
