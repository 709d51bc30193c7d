/* SPDX-License-Identifier: MIT */
/*
 * req_model.c - the requests that change which models exist: load (starts
 * a loader thread; the reply comes once the file's size is known, or with
 * "wait" when the model is READY or failed) and unload (the reply comes
 * when the workers let go or the timeout passed).  Both replies are
 * deferred (pending.c).  Load and unload of one name are serialised by its
 * state: a second load is refused, a second unload joins the first.
 */
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "mbrokerd.h"

/* Refuses a load when name is taken; returns the model to reuse, if any. */
static int
req_load_check(struct request *req, const char *name, struct model **reuse)
{
	struct model *m = registry_find(name);

	*reuse = NULL;
	if (m == NULL)
		return 0;
	switch (m->state) {
	case MODEL_LOADING:
		reply_error(req->conn, req->id, MB_ELOADING, NULL,
			    "model %s is already loading", name);
		return -1;
	case MODEL_UNLOADING:
		reply_error(req->conn, req->id, MB_EUNLOADING, NULL,
			    "model %s is unloading; load it again when that "
			    "ends", name);
		return -1;
	case MODEL_ERROR:
		if (m->nattached == 0) {
			*reuse = m;
			return 0;
		}
		reply_error(req->conn, req->id, MB_EEXISTS, NULL,
			    "model %s is in ERROR with %u worker(s) still "
			    "attached; unload it first", name, m->nattached);
		return -1;
	default:
		reply_error(req->conn, req->id, MB_EEXISTS, NULL,
			    "model %s is already loaded (generation %llu)",
			    name, (unsigned long long)m->generation);
		return -1;
	}
}

static const struct provider *
req_load_provider(struct request *req, const char *path)
{
	const json_t *format = json_object_get(req->msg, "format");
	const struct provider *p;

	if (format == NULL || (json_is_string(format) &&
			       strcmp(json_string_value(format), "auto") == 0))
		return provider_for_path(path);
	if (json_is_string(format) &&
	    (p = provider_find(json_string_value(format))) != NULL)
		return p;
	reply_error(req->conn, req->id, MB_EBADREQ, NULL,
		    "\"format\" must be \"raw\", \"safetensors\" or \"auto\"");
	return NULL;
}

static void
req_load(struct request *req)
{
	const json_t *wait = json_object_get(req->msg, "wait");
	const struct provider *provider;
	struct pending_list *waiters;
	const char *name, *path;
	char message[128];
	struct model *m;
	int r;

	if ((name = request_string(req, "name")) == NULL ||
	    (path = request_string(req, "path")) == NULL)
		return;
	if (!names_model_valid(name)) {
		reply_error(req->conn, req->id, MB_ENAME, NULL,
			    "invalid model name (1 to %d of A-Z a-z 0-9 . _ -,"
			    " not . or ..)", MB_NAME_MAX);
		return;
	}
	if (path[0] != '/' || strlen(path) >= PATH_MAX) {
		reply_error(req->conn, req->id, MB_EBADREQ, NULL,
			    "\"path\" must be an absolute path");
		return;
	}
	if (wait != NULL && !json_is_boolean(wait)) {
		reply_error(req->conn, req->id, MB_EBADREQ, NULL,
			    "\"wait\" must be true or false");
		return;
	}
	if ((provider = req_load_provider(req, path)) == NULL)
		return;
	if (!modeldir_allows(path)) {
		conn_log_refusal(req->conn, "refused load of %s from uid %ld "
				 "pid %ld: not under any --model-dir", path,
				 (long)req->conn->uid, (long)req->conn->pid);
		reply_error(req->conn, req->id, MB_EDENIED, NULL,
			    "%s is not under any --model-dir", path);
		return;
	}
	if (broker.shutting_down) {
		reply_error(req->conn, req->id, MB_ESHUTDOWN, NULL,
			    "broker is shutting down");
		return;
	}
	if (req_load_check(req, name, &m) < 0)
		return;
	if (m == NULL && (m = registry_add(name)) == NULL) {
		reply_error(req->conn, req->id, MB_ELIMIT, NULL,
			    "registry full (%d models)", BROKER_MAX_MODELS);
		return;
	}
	waiters = json_is_true(wait) ? &m->load_waiters : &m->start_waiters;
	if (!pending_add(waiters, req->conn, req->id)) {
		if (m->state == MODEL_UNINITIALIZED)
			registry_remove(m);
		return;
	}
	m->provider = provider;
	if ((r = loader_start(m, path)) < 0) {
		snprintf(message, sizeof message, "cannot start the load: %s",
			 mb_strerror(r));
		pending_reply_error(waiters, MB_EINTERNAL, NULL, message);
		if (m->state == MODEL_UNINITIALIZED)
			registry_remove(m);
	}
}

static void
req_unload(struct request *req)
{
	int64_t timeout = request_timeout(req, broker.cfg.shutdown_timeout_ms);
	const char *name;
	struct model *m;

	if (timeout < 0 || (name = request_string(req, "name")) == NULL)
		return;
	if ((m = registry_find(name)) == NULL) {
		reply_error(req->conn, req->id, MB_ENOMODEL, NULL,
			    "no model called %.64s", name);
		return;
	}
	/* The shutdown unloads every model: one may join it, none start. */
	if (broker.shutting_down && m->state != MODEL_UNLOADING) {
		reply_error(req->conn, req->id, MB_ESHUTDOWN, NULL,
			    "broker is shutting down");
		return;
	}
	unload_begin(m, timeout, req->conn, req->id, false);
}

const struct request_entry req_model_entries[] = {
	{"load", req_load, RIGHT_ADMIN},
	{"unload", req_unload, RIGHT_ADMIN},
	{NULL, NULL, RIGHT_NONE},
};
