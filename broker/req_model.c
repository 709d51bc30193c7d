/* SPDX-License-Identifier: MIT */
/*
 * req_model.c - the requests that change which models exist: load (and
 * replace, a load of a READY model with "replace": true, or a reload of
 * its file without "path"; the reply comes once the file's size is known,
 * or with "wait" when the load ended) and unload (the reply comes when the
 * workers let go or the timeout passed).  Both replies are owed by the
 * operation (load.c, unload.c).  Load and unload of one name are
 * serialised by its state: a second load is refused, a second unload joins
 * the first.
 */
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "mbrokerd.h"
#include "catalog.h"
#include "conn.h"
#include "ops.h"
#include "registry.h"
#include "reply.h"
#include "request.h"

static const struct provider *
req_load_provider(struct request *req, const char *path)
{
	const json_t *format = json_object_get(req->msg, "format");
	const struct provider *p;

	if (format == NULL || (json_is_string(format) &&
			       strcmp(json_string_value(format), "auto") == 0))
		return provider_auto(path);
	if (json_is_string(format) &&
	    (p = provider_find(json_string_value(format))) != NULL)
		return p;
	reply_error(req->conn, req->id, MB_EBADREQ, NULL,
		    "\"format\" must be \"raw\", \"safetensors\", \"bundle\" "
		    "or \"auto\"");
	return NULL;
}

/* The policy of a replace: the request's "policy", or the broker's. */
static int
req_load_policy(struct request *req, enum replace_policy *policy)
{
	const json_t *v = json_object_get(req->msg, "policy");

	*policy = broker.cfg.replace_policy;
	if (v == NULL)
		return 0;
	if (json_is_string(v) && options_replace_policy(json_string_value(v),
							 policy) == 0)
		return 0;
	reply_error(req->conn, req->id, MB_EBADREQ, NULL, "\"policy\" must "
		    "be \"availability\" or \"resource\"");
	return -1;
}

/* The file to load: "path", or without it the catalog's file of that
 * name, or for a replace the file the model came from, as the format it
 * was loaded as unless "format" says otherwise. */
static const char *
req_load_path(struct request *req, bool replace, const char *name,
	      const struct provider **provider)
{
	static char catalog_path[PATH_MAX];
	const struct model *m;
	const struct generation *g;
	uint64_t size;

	*provider = NULL;
	if (json_object_get(req->msg, "path") == NULL &&
	    catalog_find(name, catalog_path, provider, &size)) {
		if (json_object_get(req->msg, "format") != NULL)
			*provider = NULL;
		return catalog_path;
	}
	if (json_object_get(req->msg, "path") == NULL && !replace &&
	    broker.cfg.nmodel_dirs > 0) {
		reply_error(req->conn, req->id, MB_ENOMODEL, NULL, "no \"path\" "
			    "and no model called %.64s in the catalog", name);
		return NULL;
	}
	if (json_object_get(req->msg, "path") != NULL || !replace)
		return request_string(req, "path");
	if ((m = registry_find(name)) == NULL ||
	    (g = model_current(m)) == NULL) {
		reply_error(req->conn, req->id, MB_ENOMODEL, NULL, "no model "
			    "called %.64s is loaded to reload its file", name);
		return NULL;
	}
	if (json_object_get(req->msg, "format") == NULL)
		*provider = g->provider;
	return g->path;
}

/* Whether the optional boolean field key is absent or a boolean. */
static bool
req_load_flag(struct request *req, const char *key, bool *out)
{
	const json_t *v = json_object_get(req->msg, key);

	*out = json_is_true(v);
	if (v == NULL || json_is_boolean(v))
		return true;
	reply_error(req->conn, req->id, MB_EBADREQ, NULL,
		    "\"%s\" must be true or false", key);
	return false;
}

/* The optional "keep_alive" in ms (-1 forever), LOAD_KEEP_ALIVE_DEFAULT
 * when absent; false after an error reply. */
static bool
req_load_keep_alive(struct request *req, int64_t *ms)
{
	const json_t *v = json_object_get(req->msg, "keep_alive");

	*ms = LOAD_KEEP_ALIVE_DEFAULT;
	if (v == NULL)
		return true;
	if (json_is_number(v) && json_number_value(v) >= 0 &&
	    json_number_value(v) <= 86400) {
		*ms = (int64_t)(json_number_value(v) * 1000.0 + 0.5);
		return true;
	}
	if (json_is_integer(v) && json_integer_value(v) == -1) {
		*ms = -1;
		return true;
	}
	reply_error(req->conn, req->id, MB_EBADREQ, NULL, "\"keep_alive\" "
		    "must be seconds from 0 to 86400, or -1 for ever");
	return false;
}

static void
req_load(struct request *req)
{
	struct load_request lr;
	const char *name;
	char path[PATH_MAX];

	memset(&lr, 0, sizeof lr);
	lr.reason = REASON_EXPLICIT;
	if ((name = request_string(req, "name")) == NULL ||
	    !req_load_keep_alive(req, &lr.keep_alive_ms) ||
	    !req_load_flag(req, "replace", &lr.replace) ||
	    !req_load_flag(req, "wait", &lr.wait) ||
	    req_load_policy(req, &lr.policy) < 0 ||
	    (lr.drain_ms = request_timeout(
		     req, broker.cfg.shutdown_timeout_ms)) < 0)
		return;
	if (!names_model_valid(name)) {
		reply_error(req->conn, req->id, MB_ENAME, NULL,
			    "invalid model name (1 to %d of A-Z a-z 0-9 . _ -,"
			    " not . or ..)", MB_NAME_MAX);
		return;
	}
	if ((lr.path = req_load_path(req, lr.replace, name, &lr.provider)) ==
	    NULL)
		return;
	if (lr.path[0] != '/' || strlen(lr.path) >= PATH_MAX) {
		reply_error(req->conn, req->id, MB_EBADREQ, NULL,
			    "\"path\" must be an absolute path");
		return;
	}
	/* Kept apart: a reload's path belongs to a generation that may go. */
	snprintf(path, sizeof path, "%s", lr.path);
	lr.path = path;
	if (lr.provider == NULL &&
	    (lr.provider = req_load_provider(req, path)) == NULL)
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
	load_begin(name, &lr, req->conn, req->id);
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
	if (broker.shutting_down && model_state(m) != MODEL_UNLOADING) {
		reply_error(req->conn, req->id, MB_ESHUTDOWN, NULL,
			    "broker is shutting down");
		return;
	}
	unload_begin(m, timeout, req->conn, req->id, true, NULL, NULL);
}

/* pin and unpin: a name, loaded or not, kept from eviction and idle
 * unloads. */
static void
req_pin_set(struct request *req, bool pin)
{
	const char *name = request_string(req, "name");
	const struct model *m;

	if (name == NULL)
		return;
	if (!names_model_valid(name)) {
		reply_error(req->conn, req->id, MB_ENAME, NULL,
			    "invalid model name");
		return;
	}
	if (!registry_pin(name, pin)) {
		reply_error(req->conn, req->id, MB_ELIMIT, NULL, "at most %d "
			    "names are pinned", REGISTRY_MAX_PINS);
		return;
	}
	log_info("model %s: %s by pid %ld", name, pin ? "pinned" : "unpinned",
		 (long)req->conn->pid);
	if (!pin)
		residency_schedule();
	m = registry_find(name);
	reply_ok(req->conn, req->id, json_pack("{s:s, s:b, s:b}", "name", name,
					       "pinned", pin, "loaded",
					       m != NULL && model_state(m) ==
								    MODEL_READY),
		 -1);
}

static void
req_pin(struct request *req)
{
	req_pin_set(req, true);
}

static void
req_unpin(struct request *req)
{
	req_pin_set(req, false);
}

const struct request_entry req_model_entries[] = {
	{"load", req_load, RIGHT_ADMIN},
	{"unload", req_unload, RIGHT_ADMIN},
	{"pin", req_pin, RIGHT_ADMIN},
	{"unpin", req_unpin, RIGHT_ADMIN},
	{NULL, NULL, RIGHT_NONE},
};
