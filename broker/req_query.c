/* SPDX-License-Identifier: MIT */
/*
 * req_query.c - the read-only requests: list (every model and its state),
 * catalog (the models --model-dir offers by name), memory (each model's
 * bytes once and its Pss in each holder),
 * stats (counters and memory) and workers (who holds what).  The two lists
 * come in pages when they do not fit in one message.
 */
#include <string.h>
#include <unistd.h>

#include "mbrokerd.h"
#include "pss.h"
#include "catalog.h"
#include "conn.h"
#include "lease.h"
#include "loader.h"
#include "registry.h"
#include "reply.h"
#include "request.h"
#include "segment.h"

static void
req_list(struct request *req)
{
	json_t *models = json_array();
	struct model *m;

	for (m = registry_next(NULL); m != NULL; m = registry_next(m))
		json_array_append_new(models, lease_model_json(m));
	reply_paged(req, "models", models);
}

static void
req_stats(struct request *req)
{
	const struct counters *n = &broker.counters;
	const struct generation *g;
	uint64_t shared = 0;
	struct model *m;

	for (m = registry_next(NULL); m != NULL; m = registry_next(m))
		for (g = NULL; (g = model_generations(m, g)) != NULL;)
			if (g->members != NULL)
				shared += g->size;
	reply_ok(req->conn, req->id,
		 json_pack("{s:I, s:s, s:s, s:I, s:i, s:i, s:i, s:i, s:I, s:I,"
			   " s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I,"
			   " s:I, s:I, s:I, s:I, s:I, s:b}",
			   "pid", (json_int_t)getpid(), "instance",
			   broker.cfg.instance, "version", MB_VERSION_STRING,
			   "uptime_ms",
			   (json_int_t)(clock_monotonic_ms() - broker.started_ms),
			   "models", (int)registry_count(), "workers",
			   (int)lease_holders_count(), "connections",
			   (int)conn_count(),
			   "abandoned_loads", (int)loader_abandoned_count(),
			   "bytes_shared", (json_int_t)shared, "bytes_reserved",
			   (json_int_t)segment_bytes_held(), "max_shm_bytes",
			   (json_int_t)broker.cfg.max_shm_bytes, "shmem_kb",
			   (json_int_t)meminfo_shmem_kb(), "loads",
			   (json_int_t)n->loads, "load_failures",
			   (json_int_t)n->load_failures, "unloads",
			   (json_int_t)n->unloads, "unload_timeouts",
			   (json_int_t)n->unload_timeouts, "replaces",
			   (json_int_t)n->replaces, "replace_failures",
			   (json_int_t)n->replace_failures, "drain_timeouts",
			   (json_int_t)n->drain_timeouts, "evictions",
			   (json_int_t)n->evictions, "idle_unloads",
			   (json_int_t)n->idle_unloads, "autoloads",
			   (json_int_t)n->autoloads, "attaches",
			   (json_int_t)n->attaches, "detaches",
			   (json_int_t)n->detaches, "acks",
			   (json_int_t)n->acks, "shutting_down",
			   broker.shutting_down),
		 -1);
}

static json_t *
req_worker_json(const struct conn *c)
{
	json_t *atts = json_array();
	const struct lease *l = NULL;

	while ((l = lease_next(c, l)) != NULL)
		json_array_append_new(atts, json_pack(
			"{s:I, s:s, s:I}", "attachment", (json_int_t)lease_id(l),
			"model", model_name(lease_generation(l)->model),
			"generation", (json_int_t)lease_generation(l)->number));
	return json_pack("{s:I, s:b, s:I, s:I, s:I, s:s, s:o}", "pid",
			 (json_int_t)c->pid, "exited", c->pid_exited, "uid",
			 (json_int_t)c->uid, "gid", (json_int_t)c->gid, "conn",
			 (json_int_t)c->id, "role", c->role, "attachments",
			 atts);
}

static void
req_workers(struct request *req)
{
	json_t *workers = json_array();
	struct conn *c = NULL;

	while ((c = conn_next(c)) != NULL)
		if (lease_count(c) > 0 || strcmp(c->role, "worker") == 0)
			json_array_append_new(workers, req_worker_json(c));
	reply_paged(req, "workers", workers);
}

/* One holder's Pss of a model's pages, added to that model's object
 * (objs is indexed by model slot). */
static void
req_memory_holder(const struct model *m, pid_t pid, int64_t kb, void *arg)
{
	json_t *o = ((json_t **)arg)[model_slot(m)];

	json_array_append_new(json_object_get(o, "holders"), kb < 0
		? json_pack("{s:I, s:n}", "pid", (json_int_t)pid, "pss_kb")
		: json_pack("{s:I, s:I}", "pid", (json_int_t)pid, "pss_kb",
			    (json_int_t)kb));
	if (kb > 0)
		json_object_set_new(o, "holders_pss_kb", json_integer(
			json_integer_value(json_object_get(o, "holders_pss_kb")) +
			kb));
}

/* Each model's bytes once, and what its pages cost in each holder (Pss
 * from /proc/PID/smaps, each holder's read once; null where the broker
 * may not read it). */
static void
req_memory(struct request *req)
{
	json_t *objs[BROKER_MAX_MODELS] = {NULL};
	json_t *models = json_array();
	const struct generation *g;
	struct model *m;

	for (m = registry_next(NULL); m != NULL; m = registry_next(m)) {
		uint64_t bytes = 0;

		for (g = NULL; (g = model_generations(m, g)) != NULL;)
			if (g->members != NULL)
				bytes += g->size;
		objs[model_slot(m)] = json_pack("{s:s, s:I, s:i, s:[]}", "name",
						model_name(m), "bytes",
						(json_int_t)bytes,
						"holders_pss_kb", 0, "holders");
		json_array_append_new(models, objs[model_slot(m)]);
	}
	pss_of_holders(req_memory_holder, objs);
	reply_paged(req, "models", models);
}

static void
req_catalog(struct request *req)
{
	reply_paged(req, "models", catalog_list());
}

const struct request_entry req_query_entries[] = {
	{"list", req_list, RIGHT_USE},
	{"catalog", req_catalog, RIGHT_USE},
	{"memory", req_memory, RIGHT_USE},
	{"stats", req_stats, RIGHT_USE},
	{"workers", req_workers, RIGHT_USE},
	{NULL, NULL, RIGHT_NONE},
};
