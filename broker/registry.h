/* SPDX-License-Identifier: MIT */
/*
 * registry.h - the models the broker knows and their state machine, owned
 * by registry.c.  A model is opaque: other files use these functions.  A
 * model has generations, one per load: the current one (served to new
 * attaches), the next one (being loaded, for a first load or a replace)
 * and older ones draining after a replace.  A generation is a record the
 * registry creates, fills from a finished load and frees; others read its
 * fields and change them only through the registry's functions.
 */
#ifndef MBROKER_REGISTRY_H
#define MBROKER_REGISTRY_H

#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/queue.h>

#include <jansson.h>

#include "mbroker.h"

struct provider;
struct member;
struct load_job;

enum model_state {
	MODEL_UNINITIALIZED,
	MODEL_LOADING,
	MODEL_READY,
	MODEL_UNLOADING,
	MODEL_ERROR,
};

enum generation_role {
	GENERATION_NEXT,     /* being loaded */
	GENERATION_CURRENT,  /* what attaches get */
	GENERATION_DRAINING, /* replaced; freed when its holders let go */
};

/* Why a model is loaded. */
enum load_reason {
	REASON_PRELOAD,  /* --model at start */
	REASON_EXPLICIT, /* a load request */
	REASON_AUTOLOAD, /* an attach of a catalog model (--autoload) */
};

struct model;

struct generation {
	TAILQ_ENTRY(generation) entry;
	struct model *model;
	uint64_t number;
	enum generation_role role;
	const struct provider *provider; /* provider_bundle for a bundle */
	char path[PATH_MAX];
	struct load_job *job;      /* the loader's, while it copies */
	/* Its files (bundle.h), each with a segment, in name order; one for
	 * a single file.  Set once loaded, until released (then NULL). */
	struct member *members;
	unsigned nmembers;
	size_t ntensors;
	uint64_t size;     /* of every member */
	uint64_t checksum; /* the file's, or the bundle's */
	int64_t load_started_ms;
	int64_t load_ms;
	unsigned nleases;          /* attachments of it (lease.c) */
	int64_t drain_deadline_ms; /* draining: when it is let go anyway */
	bool abandoned;            /* its drain timed out, holders remain */
};

const char *registry_state_name(enum model_state state);
/* Whether the state machine allows from -> to. */
bool registry_transition_valid(enum model_state from, enum model_state to);
/* Moves m to state to; a transition the machine forbids is a bug (fatal). */
void registry_set_state(struct model *m, enum model_state to);

struct model *registry_find(const char *name);
/* The model in slot (below BROKER_MAX_MODELS), or NULL. */
struct model *registry_at(unsigned slot);
/* A new UNINITIALIZED model in the registry, or NULL when it is full. */
struct model *registry_add(const char *name);
/* Removes m and frees it; it must hold no generation. */
void registry_remove(struct model *m);
unsigned registry_count(void);
/* Iteration in load order: registry_next(NULL) is the first model. */
struct model *registry_next(const struct model *m);
/* Frees every model at exit, unlinking any name still held. */
void registry_clear(void);

const char *model_name(const struct model *m);
/* Its index in registry_at and the mirror. */
unsigned model_slot(const struct model *m);
enum model_state model_state(const struct model *m);
/* Why it is in ERROR ("" otherwise). */
const char *model_error(const struct model *m);
void model_set_error(struct model *m, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
struct generation *model_current(const struct model *m);
enum load_reason model_reason(const struct model *m);
void model_set_reason(struct model *m, enum load_reason reason);
/* Its keep-alive in ms: unloaded when nobody has attached it for that
 * long; -1: never. */
int64_t model_keep_alive(const struct model *m);
void model_set_keep_alive(struct model *m, int64_t ms);
/* When it was last attached, let go of, or loaded (monotonic ms). */
int64_t model_last_used(const struct model *m);
void model_touch(struct model *m);
/* Whether it has been attached since it was loaded. */
bool model_was_held(const struct model *m);
/* Whether its name is pinned: never evicted or idle-unloaded. */
bool model_pinned(const struct model *m);

/* Pins or unpins a name, loaded or not; false when MAX_PINS are set. */
#define REGISTRY_MAX_PINS 1024
bool registry_pin(const char *name, bool pin);
bool registry_pinned(const char *name);
struct generation *model_next_generation(const struct model *m);
/* Iteration over every generation of m, newest first: NULL gives the
 * first. */
struct generation *model_generations(const struct model *m,
				     const struct generation *g);
/* Attachments of every generation of m. */
unsigned model_leases(const struct model *m);

/* A new generation of m being loaded from path by provider (the next). */
struct generation *registry_generation_new(struct model *m,
					   const struct provider *provider,
					   const char *path);
/* The next generation is loaded (its members set): it becomes current; the one it replaces, if any, is returned, draining. */
struct generation *registry_generation_promote(struct model *m);
/* Frees what g holds: for each member the provider's unload hook (a
 * failure is logged and the rest goes on), its segment's name and its
 * reference.  Bytes whose name it removed while nobody held them are
 * added to *freed, names removed to *unlinked.  g stays listed while
 * leases hold it. */
void registry_generation_release(struct generation *g, uint64_t *freed,
				 unsigned *unlinked);
/* Drops g from its model once it holds nothing (released, unleased). */
void registry_generation_remove(struct generation *g);
/* Whether g is a bundle (a model made of many files). */
bool generation_is_bundle(const struct generation *g);
/* The shm name of g's first segment, or "" (not loaded, or unlinked). */
const char *generation_segment_name(const struct generation *g);
/* A lease of g was taken (+1) or given back (-1). */
void registry_generation_leased(struct generation *g, int delta);

/* The model as a JSON object (new reference), as the mirror shows it;
 * lease_model_json adds who holds it for list and replies. */
json_t *registry_model_json(const struct model *m);

#endif /* MBROKER_REGISTRY_H */
