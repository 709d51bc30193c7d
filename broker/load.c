/* SPDX-License-Identifier: MIT */
/*
 * load.c - the load operation: a new generation of a model, copied by the
 * loader (loader.c) and made current when it is ready.  For a new model
 * (or one in ERROR that nobody holds) the model goes LOADING, then READY
 * or ERROR.  A replace loads the new generation beside the serving one:
 * the model stays READY and every attach gets the old generation until the
 * new one is loaded; then the switch is one step, and the old generation
 * drains (unload.c).  A replace that fails leaves the old generation as it
 * was.  Policy when two copies do not fit: `availability` refuses with
 * no_space; `resource` unloads first (a stated gap), then loads.
 *
 * The replies a load owes are its own: once the file's size is known (a
 * load without wait) and when it ended (with wait).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bundle.h"
#include "lease.h"
#include "loader.h"
#include "mbrokerd.h"
#include "ops.h"
#include "registry.h"
#include "reply.h"
#include "segment.h"

struct load_op {
	TAILQ_ENTRY(load_op) entry;
	struct model *model;
	struct generation *gen;
	bool replace;
	bool gap; /* a resource replace: the model was unloaded first */
	bool cancelled;
	int64_t drain_ms;
	void (*stopped)(struct model *m, uint64_t freed, unsigned unlinked);
	struct pending_list start_waiters; /* load without wait: the size */
	struct pending_list load_waiters;  /* load with wait: the outcome */
	struct pending_list attach_waiters; /* attaches that loaded it */
};

/* Grants an attach that waited for a load (the request layer's). */
static load_attach_fn *load_attach_answer;

static TAILQ_HEAD(, load_op) load_ops = TAILQ_HEAD_INITIALIZER(load_ops);

/* A resource replace waiting for its unload to end. */
struct load_after_unload {
	char name[MB_NAME_MAX + 1];
	char path[PATH_MAX];
	const struct provider *provider;
	bool wait;
	int64_t keep_alive_ms;
	struct pending_list waiters;
};

static struct load_op *
load_find(const struct model *m)
{
	struct load_op *op;

	TAILQ_FOREACH(op, &load_ops, entry)
		if (op->model == m)
			return op;
	return NULL;
}

bool
load_running(const struct model *m)
{
	return load_find(m) != NULL;
}

void
load_set_attach_answer(load_attach_fn *answer)
{
	load_attach_answer = answer;
}

bool
load_join_attach(struct model *m, struct conn *c, json_t *id)
{
	struct load_op *op = load_find(m);

	if (op == NULL || op->replace)
		return false;
	pending_add(&op->attach_waiters, c, id);
	return true;
}

/* The model object a reply of op carries. */
static json_t *
load_model_json(const struct load_op *op)
{
	json_t *o = lease_model_json(op->model);

	if (op->gap)
		json_object_set_new(o, "gap", json_true());
	return o;
}

/* Answers whoever waits on op: success with the model, or the failure
 * (also to a load without wait still owed its first reply). */
static void
load_reply(struct load_op *op, int result, const char *error)
{
	struct model *m = op->model;
	const struct generation *cur = model_current(m);
	json_t *extra;

	if (result == 0) {
		pending_reply_ok(&op->load_waiters, load_model_json(op));
		pending_answer(&op->attach_waiters, load_attach_answer, m);
		return;
	}
	/* A failed replace names the generation that serves on. */
	extra = json_pack("{s:s}", "model", model_name(m));
	if (op->replace && cur != NULL)
		json_object_set_new(extra, "generation",
				    json_integer((json_int_t)cur->number));
	pending_reply_error(&op->start_waiters, result, json_incref(extra),
			    error);
	pending_reply_error(&op->attach_waiters, result, json_incref(extra),
			    error);
	pending_reply_error(&op->load_waiters, result, extra, error);
}

static void
load_free(struct load_op *op)
{
	TAILQ_REMOVE(&load_ops, op, entry);
	free(op);
}

/* The size of the file is known: a load without wait gets its reply. */
static void
load_sized(void *ctx, uint64_t size)
{
	struct load_op *op = ctx;

	(void)size;
	pending_reply_ok(&op->start_waiters, load_model_json(op));
	mirror_model_changed(model_slot(op->model));
}

/* A new model's first generation is loaded, or failed. */
static void
load_first_done(struct load_op *op, const struct load_result *r)
{
	struct model *m = op->model;
	struct generation *g = op->gen;

	if (r->result == 0) {
		broker.counters.loads++;
		registry_generation_promote(m);
		registry_set_state(m, MODEL_READY);
		model_touch(m);
		residency_schedule();
		log_info("model %s: READY, %" PRIu64 " bytes in %" PRId64
			 " ms (%.0f MB/s), xxh3 %016" PRIx64 ", %zu tensors, "
			 "segment %s (%u in all)", model_name(m), g->size,
			 g->load_ms, g->load_ms > 0 ? g->size / 1e3 /
			 (double)g->load_ms : 0.0, g->checksum, g->ntensors,
			 generation_segment_name(g), g->nmembers);
		load_reply(op, 0, NULL);
		return;
	}
	broker.counters.load_failures++;
	model_set_error(m, "%s", r->error);
	registry_set_state(m, MODEL_ERROR);
	log_warnx("model %s: load failed: %s", model_name(m), r->error);
	load_reply(op, r->result, r->error);
}

/* A replace's new generation is loaded (it becomes current and the old
 * one drains), or failed (the old one serves on, untouched). */
static void
load_replace_done(struct load_op *op, const struct load_result *r)
{
	struct model *m = op->model;
	struct generation *g = op->gen, *old;

	if (r->result != 0) {
		broker.counters.replace_failures++;
		registry_generation_remove(g);
		log_warnx("model %s: replace failed, generation %" PRIu64
			  " serves on: %s", model_name(m),
			  model_current(m)->number, r->error);
		load_reply(op, r->result, r->error);
		return;
	}
	broker.counters.replaces++;
	old = registry_generation_promote(m);
	log_info("model %s: generation %" PRIu64 " replaces %" PRIu64 " (%"
		 PRIu64 " bytes in %" PRId64 " ms, xxh3 %016" PRIx64 ", segment "
		 "%s); %u holder(s) of the old one have %.1f s to move",
		 model_name(m), g->number, old->number, g->size, g->load_ms,
		 g->checksum, generation_segment_name(g), old->nleases,
		 op->drain_ms / 1000.0);
	load_reply(op, 0, NULL);
	unload_drain(old, op->drain_ms);
}

/* The loader finished: applies the result, on the main loop. */
static void
load_done(void *ctx, const struct load_result *r)
{
	struct load_op *op = ctx;
	struct model *m = op->model;
	struct generation *g = op->gen;
	uint64_t freed = r->reclaimed;
	unsigned unlinked = r->removed;

	g->job = NULL;
	g->load_ms = clock_monotonic_ms() - g->load_started_ms;
	if (r->result == 0) {
		g->size = r->size;
		g->members = r->members;
		g->nmembers = r->nmembers;
		g->checksum = r->checksum;
		g->ntensors = r->ntensors;
	}
	if (op->cancelled) {
		log_info("model %s: load ended by an unload (%s)", model_name(m),
			 r->result == 0 ? "it had finished" : r->error);
		registry_generation_release(g, &freed, &unlinked);
		registry_generation_remove(g);
		load_reply(op, MB_ECANCELLED, "model unloaded while loading");
		op->stopped(m, freed, unlinked);
	} else if (op->replace) {
		load_replace_done(op, r);
	} else {
		load_first_done(op, r);
	}
	load_free(op);
	notify_ready_check();
}

static const struct loader_calls load_calls = {
	.sized = load_sized,
	.done = load_done,
};
/* A replace: one copying thread, so the workers keep the other cores. */
static const struct loader_calls load_calls_beside = {
	.background = true,
	.sized = load_sized,
	.done = load_done,
};

/* Starts the loader for a new generation of m; the reply to (c, id) is
 * owed by it.  m is removed again when nothing started and it was new. */
static int
load_start(struct model *m, const struct load_request *lr, struct conn *c,
	   json_t *id, struct pending_list *owed, uint64_t promise)
{
	struct load_op *op = calloc(1, sizeof *op);
	char name[NAMES_SHM_MAX], message[128];
	struct generation *g = NULL;
	int r = -ENOMEM;

	if (op != NULL) {
		TAILQ_INIT(&op->start_waiters);
		TAILQ_INIT(&op->load_waiters);
		TAILQ_INIT(&op->attach_waiters);
		TAILQ_INSERT_TAIL(&load_ops, op, entry);
	}
	if (op == NULL) {
		if (c != NULL)
			reply_error(c, id, MB_EINTERNAL, NULL, "out of memory");
		goto undo;
	}
	if (c != NULL && !pending_add(lr->attach ? &op->attach_waiters
				       : lr->wait ? &op->load_waiters
						  : &op->start_waiters, c, id))
		goto undo;
	if (owed != NULL)
		pending_move(owed, lr->wait ? &op->load_waiters
					    : &op->start_waiters);
	op->gap = owed != NULL;
	op->model = m;
	op->replace = model_state(m) == MODEL_READY;
	op->drain_ms = lr->drain_ms;
	if ((g = registry_generation_new(m, lr->provider, lr->path)) == NULL ||
	    (r = segment_name_for(name, sizeof name, model_name(m),
				  g->number)) < 0)
		goto fail;
	/* The room it was checked for is its own until its segment exists. */
	segment_promise(promise);
	if ((g->job = loader_start(name, lr->path, lr->provider, promise,
				   op->replace ? &load_calls_beside
					       : &load_calls,
				   op, &r)) == NULL) {
		segment_unpromise(promise);
		goto fail;
	}
	op->gen = g;
	if (lr->keep_alive_ms != LOAD_KEEP_ALIVE_DEFAULT)
		model_set_keep_alive(m, lr->keep_alive_ms);
	if (!op->replace) {
		model_set_reason(m, lr->reason);
		registry_set_state(m, MODEL_LOADING);
	}
	if (lr->reason == REASON_AUTOLOAD)
		broker.counters.autoloads++;
	log_info("model %s: loading %s as %s (generation %" PRIu64 ")%s",
		 model_name(m), lr->path, lr->provider->name, g->number,
		 op->replace ? ", beside the one serving" : "");
	notify_send("STATUS=loading %s", model_name(m));
	return 0;
fail:
	if (g != NULL)
		registry_generation_remove(g);
	snprintf(message, sizeof message, "cannot start the load: %s",
		 mb_strerror(r));
	pending_reply_error(&op->start_waiters, MB_EINTERNAL, NULL, message);
	pending_reply_error(&op->attach_waiters, MB_EINTERNAL, NULL, message);
	pending_reply_error(&op->load_waiters, MB_EINTERNAL, NULL, message);
undo:
	if (op != NULL)
		load_free(op);
	if (owed != NULL)
		pending_reply_error(owed, MB_EINTERNAL, NULL, "out of memory");
	if (model_state(m) == MODEL_UNINITIALIZED)
		registry_remove(m);
	return -1;
}

/*
 * The bytes a load of lr->path needs in *size (0 when they cannot be
 * known here: the load itself will say why), after the checks that can
 * be made before it starts: a bundle's walk (its files, their names and
 * their count) and the segments the load adds to those the broker holds.
 * False after replying why (or logging it, without c).
 */
static bool
load_measure(const char *name, const struct load_request *lr,
	     struct conn *c, json_t *id, uint64_t *size)
{
	char why[PATH_MAX + BUNDLE_NAME_MAX + 512];
	unsigned n = 1;
	int64_t file;
	int r = 0;

	*size = 0;
	if (lr->provider == &provider_bundle) {
		r = bundle_measure(lr->path, &n, size, why, sizeof why);
	} else if ((file = modeldir_file_size(lr->path)) > 0) {
		*size = (uint64_t)file;
	}
	if (r == 0 && segment_count() + n > BROKER_MAX_SEGMENTS) {
		snprintf(why, sizeof why, "loading %s needs %u segment(s); "
			 "the broker holds %u of its most %d", name, n,
			 segment_count(), BROKER_MAX_SEGMENTS);
		r = MB_ELIMIT;
	}
	if (r == 0)
		return true;
	if (c != NULL)
		reply_error(c, id, r, json_pack("{s:s}", "model", name), "%s",
			    why);
	else
		log_error("%s: %s", name, why);
	return false;
}

/* A resource replace: the unload ended; loads the model anew. */
static void
load_after_unload(void *ctx, const struct unload_report *r)
{
	struct load_after_unload *lau = ctx;
	struct load_request lr = {
		.path = lau->path,
		.provider = lau->provider,
		.wait = lau->wait,
		.reason = REASON_EXPLICIT,
		.keep_alive_ms = lau->keep_alive_ms,
	};
	struct model *m;

	if (r->timed_out || broker.shutting_down || r->asked) {
		pending_reply_error(&lau->waiters, r->timed_out ? MB_ETIMEOUT
				    : broker.shutting_down ? MB_ESHUTDOWN
							   : MB_ECANCELLED,
				    json_pack("{s:s, s:b}", "model", lau->name,
					      "gap", 1),
				    r->timed_out ? "the unload before the load "
				    "timed out; the model is in ERROR"
				    : broker.shutting_down
					    ? "broker is shutting down"
					    : "an unload request ended the "
					      "replace; the model stays unloaded");
	} else if ((m = registry_add(lau->name)) == NULL) {
		pending_reply_error(&lau->waiters, MB_ELIMIT, NULL,
				    "registry full");
	} else {
		log_info("model %s: unloaded to make room (--replace-policy "
			 "resource); loading %s", lau->name, lau->path);
		load_start(m, &lr, NULL, NULL, &lau->waiters, 0);
	}
	free(lau);
}

/* A replace under the resource policy when two copies do not fit: unload
 * first, then load. */
static void
load_resource_replace(struct model *m, const struct load_request *lr,
		      struct conn *c, json_t *id)
{
	struct load_after_unload *lau = calloc(1, sizeof *lau);

	if (lau == NULL) {
		reply_error(c, id, MB_EINTERNAL, NULL, "out of memory");
		return;
	}
	snprintf(lau->name, sizeof lau->name, "%s", model_name(m));
	snprintf(lau->path, sizeof lau->path, "%s", lr->path);
	lau->provider = lr->provider;
	lau->wait = lr->wait;
	lau->keep_alive_ms = lr->keep_alive_ms;
	TAILQ_INIT(&lau->waiters);
	if (!pending_add(&lau->waiters, c, id)) {
		free(lau);
		return;
	}
	log_warnx("model %s: two generations do not fit; unloading it before "
		  "loading %s (--replace-policy resource: a gap in service)",
		  model_name(m), lr->path);
	if (unload_begin(m, lr->drain_ms, NULL, NULL, true, load_after_unload,
			 lau) < 0) {
		pending_reply_error(&lau->waiters, MB_EINTERNAL, NULL,
				    "out of memory");
		free(lau);
	}
}

/* Whether a replace of m may start; else replies why. */
static bool
load_replace_allowed(struct model *m, const struct load_request *lr,
		     struct conn *c, json_t *id, bool *resource,
		     uint64_t *promise)
{
	const struct load_op *op = load_find(m);
	uint64_t size;
	char why[2048];

	*resource = false;
	if (op != NULL) {
		reply_error(c, id, MB_ELOADING, NULL, "model %s: a replace is "
			    "already loading generation %" PRIu64,
			    model_name(m), op->gen->number);
		return false;
	}
	if (!load_measure(model_name(m), lr, c, id, &size))
		return false;
	if (size == 0 ||
	    segment_room(size, why, sizeof why) ||
	    residency_make_room(size, model_name(m), why, sizeof why) == 0) {
		*promise = size;
		return true;
	}
	if (lr->policy == REPLACE_RESOURCE) {
		*resource = true;
		return true;
	}
	reply_error(c, id, MB_ENOSPACE, json_pack("{s:s, s:I, s:I}", "model",
						  model_name(m), "generation",
						  (json_int_t)model_current(
							  m)->number,
						  "needed",
						  (json_int_t)size),
		    "replacing %s needs %" PRIu64 " bytes beside the generation "
		    "serving: %s (--replace-policy resource would unload it "
		    "first)", model_name(m), size, why);
	return false;
}

/* Refuses a load of m in its state; true when it may go on. */
static bool
load_allowed(struct model *m, const struct load_request *lr, struct conn *c,
	     json_t *id, bool *resource, uint64_t *promise)
{
	const char *name = model_name(m);
	struct generation *g;

	*resource = false;
	switch (model_state(m)) {
	case MODEL_LOADING:
		reply_error(c, id, MB_ELOADING, NULL,
			    "model %s is already loading", name);
		return false;
	case MODEL_UNLOADING:
		reply_error(c, id, MB_EUNLOADING, NULL, "model %s is "
			    "unloading; load it again when that ends", name);
		return false;
	case MODEL_ERROR:
		if (model_leases(m) > 0) {
			reply_error(c, id, MB_EEXISTS, NULL, "model %s is in "
				    "ERROR with %u worker(s) still attached; "
				    "unload it first", name, model_leases(m));
			return false;
		}
		/* What the failed load or unload left goes. */
		while ((g = model_generations(m, NULL)) != NULL)
			registry_generation_remove(g);
		return true;
	case MODEL_READY:
		if (lr->replace)
			return load_replace_allowed(m, lr, c, id, resource,
						    promise);
		reply_error(c, id, MB_EEXISTS, NULL, "model %s is already "
			    "loaded (generation %" PRIu64 ")", name,
			    model_current(m)->number);
		return false;
	default:
		return true;
	}
}

/* Makes room for a new model's first load by evicting what nobody holds;
 * false after replying no_space. */
static bool
load_room(const char *name, const struct load_request *lr, struct conn *c,
	  json_t *id, uint64_t *promise)
{
	uint64_t size;
	char why[2048];

	if (!load_measure(name, lr, c, id, &size))
		return false;
	if (size == 0 || segment_room(size, why, sizeof why) ||
	    residency_make_room(size, name, why, sizeof why) == 0) {
		*promise = size;
		return true;
	}
	if (c != NULL)
		reply_error(c, id, MB_ENOSPACE, json_pack("{s:s, s:I}", "model",
							  name, "needed",
							  (json_int_t)size),
			    "loading %s: %s", name, why);
	else
		log_error("%s: %s", name, why);
	return false;
}

int
load_begin(const char *name, const struct load_request *lr, struct conn *c,
	   json_t *id)
{
	struct model *m = registry_find(name);
	bool resource = false;
	uint64_t promise = 0;

	if (m != NULL && !load_allowed(m, lr, c, id, &resource, &promise))
		return -1;
	if ((m == NULL || model_state(m) != MODEL_READY) &&
	    !load_room(name, lr, c, id, &promise))
		return -1;
	if (m == NULL && (m = registry_add(name)) == NULL) {
		if (c != NULL)
			reply_error(c, id, MB_ELIMIT, NULL, "registry full (%d "
				    "models)", BROKER_MAX_MODELS);
		else
			log_error("%s: registry full (%d models)", name,
				  BROKER_MAX_MODELS);
		return -1;
	}
	if (!resource)
		return load_start(m, lr, c, id, NULL, promise);
	load_resource_replace(m, lr, c, id);
	return 0;
}

void
load_cancel(struct model *m,
	    void (*stopped)(struct model *m, uint64_t freed, unsigned unlinked))
{
	struct load_op *op = load_find(m);

	if (op == NULL)
		return;
	op->cancelled = true;
	op->stopped = stopped;
	loader_cancel(op->gen->job);
}

unsigned
load_abandon(struct model *m)
{
	struct load_op *op = load_find(m);
	unsigned unlinked;

	if (op == NULL)
		return 0;
	unlinked = (unsigned)loader_abandon(op->gen->job);
	op->gen->job = NULL;
	registry_generation_remove(op->gen);
	load_reply(op, MB_ECANCELLED, "model unloaded while loading; the load "
		   "did not stop in time and was abandoned");
	load_free(op);
	return unlinked;
}
