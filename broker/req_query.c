/* SPDX-License-Identifier: MIT */
/*
 * req_query.c - the read-only requests: list (every model and its state),
 * stats (counters and memory) and workers (who holds what).  The two lists
 * come in pages when they do not fit in one message.
 */
#include <string.h>
#include <unistd.h>

#include "mbrokerd.h"

static void
req_list(struct request *req)
{
	json_t *models = json_array();
	struct model *m;

	TAILQ_FOREACH(m, &broker.models, entry)
		json_array_append_new(models, registry_model_json(m));
	reply_paged(req, "models", models);
}

static void
req_stats(struct request *req)
{
	uint64_t shared = 0;
	unsigned workers = 0;
	struct model *m;
	struct conn *c;

	TAILQ_FOREACH(m, &broker.models, entry)
		if (m->state == MODEL_READY || m->state == MODEL_UNLOADING)
			shared += m->size;
	TAILQ_FOREACH(c, &broker.conns, entry)
		if (c->nattachments > 0)
			workers++;
	reply_ok(req->conn, req->id,
		 json_pack("{s:I, s:s, s:s, s:I, s:i, s:i, s:i, s:i, s:I, s:I,"
			   " s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:b}",
			   "pid", (json_int_t)getpid(), "instance",
			   broker.cfg.instance, "version", MB_VERSION_STRING,
			   "uptime_ms",
			   (json_int_t)(clock_monotonic_ms() - broker.started_ms),
			   "models", (int)registry_count(), "workers",
			   (int)workers, "connections", (int)broker.nconns,
			   "abandoned_loads", (int)loader_abandoned_count(),
			   "bytes_shared", (json_int_t)shared, "bytes_reserved",
			   (json_int_t)segment_bytes_held(), "max_shm_bytes",
			   (json_int_t)broker.cfg.max_shm_bytes, "shmem_kb",
			   (json_int_t)meminfo_shmem_kb(), "loads",
			   (json_int_t)broker.loads, "load_failures",
			   (json_int_t)broker.load_failures, "unloads",
			   (json_int_t)broker.unloads, "unload_timeouts",
			   (json_int_t)broker.unload_timeouts, "attaches",
			   (json_int_t)broker.attaches, "detaches",
			   (json_int_t)broker.detaches, "acks",
			   (json_int_t)broker.acks, "shutting_down",
			   broker.shutting_down),
		 -1);
}

static json_t *
req_worker_json(const struct conn *c)
{
	json_t *atts = json_array();
	struct attachment *a;

	TAILQ_FOREACH(a, &c->attachments, entry)
		json_array_append_new(atts,
				      json_pack("{s:I, s:s, s:I}", "attachment",
						(json_int_t)a->id, "model",
						a->model->name, "generation",
						(json_int_t)a->model->generation));
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
	struct conn *c;

	TAILQ_FOREACH(c, &broker.conns, entry)
		if (c->nattachments > 0 || strcmp(c->role, "worker") == 0)
			json_array_append_new(workers, req_worker_json(c));
	reply_paged(req, "workers", workers);
}

const struct request_entry req_query_entries[] = {
	{"list", req_list, RIGHT_USE},
	{"stats", req_stats, RIGHT_USE},
	{"workers", req_workers, RIGHT_USE},
	{NULL, NULL, RIGHT_NONE},
};
