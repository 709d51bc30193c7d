/* SPDX-License-Identifier: MIT */
/*
 * req_attach.c - the worker's requests: attach (a lease of the model's
 * current generation; the reply carries a read-only descriptor of its
 * segment with SCM_RIGHTS, or for a bundle its members and the first
 * page of their descriptors), members (a further page of a bundle's
 * descriptors), detach (one attachment) and ack (everything this
 * connection holds, as after an unload or shutdown event).
 */
#include <inttypes.h>
#include <stdio.h>

#include "mbrokerd.h"
#include "bundle.h"
#include "ops.h"
#include "catalog.h"
#include "conn.h"
#include "lease.h"
#include "loader.h"
#include "registry.h"
#include "reply.h"
#include "request.h"
#include "segment.h"

/* Refuses an attach of m unless it is READY; 0 when it may go on. */
static int
req_attach_check(struct request *req, const char *name, struct model *m)
{
	if (broker.shutting_down) {
		reply_error(req->conn, req->id, MB_ESHUTDOWN, NULL,
			    "broker is shutting down");
		return -1;
	}
	if (m == NULL) {
		reply_error(req->conn, req->id, MB_ENOMODEL, NULL,
			    "no model called %.64s", name);
		return -1;
	}
	switch (model_state(m)) {
	case MODEL_READY:
		break;
	case MODEL_LOADING:
		reply_error(req->conn, req->id, MB_ENOTREADY, NULL,
			    "model %s is LOADING (%" PRIu64 " bytes so far)",
			    name, loader_progress(model_next_generation(m)->job));
		return -1;
	case MODEL_UNLOADING:
		reply_error(req->conn, req->id, MB_EUNLOADING, NULL,
			    "model %s is unloading", name);
		return -1;
	default:
		reply_error(req->conn, req->id, MB_ENOTREADY, NULL,
			    "model %s is %s: %s", name,
			    registry_state_name(model_state(m)), model_error(m));
		return -1;
	}
	return 0;
}

/* A bundle's members as the attach reply lists them, in member order. */
static json_t *
req_attach_members(const struct generation *g)
{
	json_t *list = json_array();
	char sum[17];

	for (unsigned i = 0; i < g->nmembers; i++) {
		const struct member *x = &g->members[i];

		snprintf(sum, sizeof sum, "%016" PRIx64, x->checksum);
		json_array_append_new(list, json_pack(
			"{s:s, s:s, s:I, s:s}", "name", x->name, "format",
			x->provider->name, "size", (json_int_t)x->size,
			"checksum", sum));
	}
	return list;
}

/* Grants c an attachment of m's current generation: the reply carries
 * its descriptor (a bundle's: its members, and the first page of their
 * descriptors).  Also how an attach that waited for an autoload is
 * answered (load_attach_fn). */
static void
req_attach_grant(struct conn *c, json_t *id, void *model)
{
	struct model *m = model;
	struct generation *g = model_current(m);
	const char *name = model_name(m);
	int fds[MB_FDS_PER_MESSAGE];
	unsigned nfds;
	struct lease *l;
	json_t *body;
	char sum[17];

	if (lease_count(c) >= MB_MAX_ATTACHMENTS) {
		reply_error(c, id, MB_ELIMIT, NULL, "at most %d attachments per "
			    "connection", MB_MAX_ATTACHMENTS);
		return;
	}
	if ((l = lease_add(c, g)) == NULL) {
		reply_error(c, id, MB_EINTERNAL, NULL, "out of memory");
		return;
	}
	broker.counters.attaches++;
	snprintf(sum, sizeof sum, "%016" PRIx64, g->checksum);
	log_info("model %s: attached by pid %ld (attachment %" PRIu64
		 ", generation %" PRIu64 ", %u attached)", name, (long)c->pid,
		 lease_id(l), g->number, model_leases(m));
	body = json_pack("{s:I, s:s, s:s, s:I, s:I, s:s}", "attachment",
			 (json_int_t)lease_id(l), "name", name, "format",
			 g->provider->name, "generation", (json_int_t)g->number,
			 "size", (json_int_t)g->size, "checksum", sum);
	nfds = lease_descriptors(l, 0, fds);
	if (generation_is_bundle(g)) {
		json_object_set_new(body, "members", req_attach_members(g));
		json_object_set_new(body, "descriptors",
				    json_pack("{s:i, s:i}", "from", 0, "count",
					      (int)nfds));
	}
	reply_ok_fds(c, id, body, fds, nfds);
}

/* With --autoload: an attach of a catalog model that is not loaded loads
 * it, and one of a model loading waits for it; the reply comes once it is
 * READY.  True when the attach was taken over (or answered). */
static bool
req_attach_autoload(struct request *req, const char *name, struct model *m)
{
	struct load_request lr = {
		.reason = REASON_AUTOLOAD,
		.attach = true,
		.keep_alive_ms = LOAD_KEEP_ALIVE_DEFAULT,
	};
	char path[PATH_MAX];
	uint64_t size;

	if (!broker.cfg.autoload || broker.shutting_down)
		return false;
	if (m != NULL && model_state(m) == MODEL_LOADING)
		return load_join_attach(m, req->conn, req->id);
	if ((m != NULL && (model_state(m) != MODEL_ERROR ||
			   model_leases(m) > 0)) ||
	    !catalog_find(name, path, &lr.provider, &size))
		return false;
	lr.path = path;
	log_info("model %s: attached by pid %ld while not loaded; loading it "
		 "(--autoload)", name, (long)req->conn->pid);
	load_begin(name, &lr, req->conn, req->id);
	return true;
}

static void
req_attach(struct request *req)
{
	const char *name = request_string(req, "name");
	struct model *m;

	if (name == NULL)
		return;
	m = registry_find(name);
	if (req_attach_autoload(req, name, m) ||
	    req_attach_check(req, name, m) < 0)
		return;
	req_attach_grant(req->conn, req->id, m);
}

void
req_attach_init(void)
{
	load_set_attach_answer(req_attach_grant);
}

static void
req_detach(struct request *req)
{
	const json_t *id = json_object_get(req->msg, "attachment");
	struct lease *l;

	if (!json_is_integer(id)) {
		reply_error(req->conn, req->id, MB_EBADREQ, NULL,
			    "\"attachment\" must be an integer");
		return;
	}
	l = lease_find(req->conn, (uint64_t)json_integer_value(id));
	if (l == NULL) {
		reply_error(req->conn, req->id, MB_ENOTATTACHED, NULL,
			    "no attachment %lld on this connection",
			    (long long)json_integer_value(id));
		return;
	}
	broker.counters.detaches++;
	log_info("model %s: detached by pid %ld (generation %" PRIu64 ")",
		 model_name(lease_generation(l)->model), (long)req->conn->pid,
		 lease_generation(l)->number);
	lease_release(l);
	reply_ok(req->conn, req->id, NULL, -1);
}

/* A further page of a bundle attachment's descriptors, from member
 * "from" on. */
static void
req_members(struct request *req)
{
	const json_t *id = json_object_get(req->msg, "attachment");
	const json_t *from = json_object_get(req->msg, "from");
	int fds[MB_FDS_PER_MESSAGE];
	struct lease *l;
	unsigned nfds;

	if (!json_is_integer(id)) {
		reply_error(req->conn, req->id, MB_EBADREQ, NULL,
			    "\"attachment\" must be an integer");
		return;
	}
	if ((l = lease_find(req->conn, (uint64_t)json_integer_value(id))) ==
	    NULL) {
		reply_error(req->conn, req->id, MB_ENOTATTACHED, NULL,
			    "no attachment %lld on this connection",
			    (long long)json_integer_value(id));
		return;
	}
	if (!generation_is_bundle(lease_generation(l))) {
		reply_error(req->conn, req->id, MB_EBADREQ, NULL,
			    "attachment %lld is of a single file: its "
			    "descriptor came with the attach reply",
			    (long long)json_integer_value(id));
		return;
	}
	if (!json_is_integer(from) || json_integer_value(from) < 0 ||
	    json_integer_value(from) >= (json_int_t)lease_members(l)) {
		reply_error(req->conn, req->id, MB_EBADREQ, NULL,
			    "\"from\" must be an integer from 0 to %u",
			    lease_members(l) - 1);
		return;
	}
	nfds = lease_descriptors(l, (unsigned)json_integer_value(from), fds);
	reply_ok_fds(req->conn, req->id,
		     json_pack("{s:O, s:O, s:i}", "attachment", id, "from",
			       from, "count", (int)nfds),
		     fds, nfds);
}

static void
req_ack(struct request *req)
{
	unsigned n = lease_count(req->conn);

	broker.counters.acks++;
	if (n > 0)
		log_info("pid %ld acknowledged, releasing %u attachment(s)",
			 (long)req->conn->pid, n);
	lease_release_all(req->conn);
	reply_ok(req->conn, req->id, json_pack("{s:i}", "released", (int)n),
		 -1);
}

const struct request_entry req_attach_entries[] = {
	{"attach", req_attach, RIGHT_USE},
	{"members", req_members, RIGHT_USE},
	{"detach", req_detach, RIGHT_USE},
	{"ack", req_ack, RIGHT_USE},
	{NULL, NULL, RIGHT_NONE},
};
