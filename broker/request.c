/* SPDX-License-Identifier: MIT */
/*
 * request.c - decoding and dispatch of control requests and the shape of
 * every reply.  A request is {"id": <integer>, "op": "<name>", ...}; the
 * reply is {"id": .., "ok": true, ...} or {"id": .., "ok": false, "error":
 * {"code": "..", "message": ".."}}.  Bad input always gets an error reply,
 * never a dead broker.  The handlers live in req_*.c, one table each.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mbrokerd.h"
#include "conn.h"
#include "lease.h"
#include "reply.h"
#include "request.h"
#include "wire.h"

static const struct request_entry *const request_tables[] = {
	req_session_entries, req_model_entries, req_attach_entries,
	req_query_entries,   req_shutdown_entries,
};

static const struct request_entry *
request_find(const char *op)
{
	for (size_t t = 0; t < sizeof request_tables / sizeof request_tables[0];
	     t++)
		for (const struct request_entry *e = request_tables[t];
		     e->op != NULL; e++)
			if (strcmp(e->op, op) == 0)
				return e;
	return NULL;
}

void
reply_paged(struct request *req, const char *key, json_t *items)
{
	const json_t *from = json_object_get(req->msg, "offset");
	size_t total = json_array_size(items), used = 256, i = 0;
	json_t *page, *body;

	if (from != NULL && (!json_is_integer(from) ||
			     json_integer_value(from) < 0)) {
		reply_error(req->conn, req->id, MB_EBADREQ, NULL,
			    "\"offset\" must be an integer >= 0");
		json_decref(items);
		return;
	}
	if (from != NULL)
		i = (size_t)json_integer_value(from);
	page = json_array();
	for (; i < total; i++) {
		json_t *item = json_array_get(items, i);
		char *text = json_dumps(item, JSON_COMPACT);
		size_t len = text != NULL ? strlen(text) + 1 : 0;

		free(text);
		if (used + len > WIRE_MAX_REPLY - 1024 && json_array_size(page) > 0)
			break;
		used += len;
		json_array_append(page, item);
	}
	body = json_pack("{s:o, s:I}", key, page, "total", (json_int_t)total);
	if (i < total)
		json_object_set_new(body, "next", json_integer((json_int_t)i));
	json_decref(items);
	reply_ok(req->conn, req->id, body, -1);
}

const char *
request_string(struct request *req, const char *key)
{
	const json_t *v = json_object_get(req->msg, key);

	if (!json_is_string(v)) {
		reply_error(req->conn, req->id, MB_EBADREQ, NULL,
			    "\"%s\" must be a string", key);
		return NULL;
	}
	return json_string_value(v);
}

int64_t
request_timeout(struct request *req, int64_t def)
{
	const json_t *v = json_object_get(req->msg, "timeout");

	if (v == NULL)
		return def;
	if (!json_is_number(v) || json_number_value(v) < 0 ||
	    json_number_value(v) > 86400) {
		reply_error(req->conn, req->id, MB_EBADREQ, NULL,
			    "\"timeout\" must be seconds from 0 to 86400");
		return -1;
	}
	return (int64_t)(json_number_value(v) * 1000.0 + 0.5);
}

/* A connection ended: what it held and what it was owed go.  At exit
 * (why is NULL) nothing is logged. */
static void
request_conn_lost(struct conn *c, const char *why)
{
	unsigned n = lease_count(c);

	if (why != NULL && (n > 0 || strcmp(c->role, "worker") == 0))
		log_info("client pid %ld (conn %llu, %s) gone: %s, releasing "
			 "%u attachment(s)", (long)c->pid,
			 (unsigned long long)c->id, c->role, why, n);
	else if (why != NULL)
		log_debug("client pid %ld (conn %llu) gone: %s", (long)c->pid,
			  (unsigned long long)c->id, why);
	lease_release_all(c);
	pending_drop_conn(c);
}

void
request_init(void)
{
	static const struct conn_handlers handlers = {
		.message = request_dispatch,
		.lost = request_conn_lost,
	};

	conn_set_handlers(&handlers);
	req_attach_init();
}

void
request_dispatch(struct conn *c, const char *buf, size_t len)
{
	struct request req = {.conn = c};
	const struct request_entry *e;
	const json_t *op;
	char err[256];

	if (wire_check_shape(buf, len, WIRE_MAX_DEPTH, WIRE_MAX_STRING, err,
			     sizeof err) < 0 ||
	    (req.msg = wire_decode(buf, len, err, sizeof err)) == NULL) {
		conn_bad_request(c, err);
		reply_error(c, NULL, MB_EBADREQ, NULL, "%s", err);
		return;
	}
	req.id = json_object_get(req.msg, "id");
	op = json_object_get(req.msg, "op");
	if (!json_is_integer(req.id)) {
		req.id = NULL;
		reply_error(c, NULL, MB_EBADREQ, NULL,
			    "\"id\" must be an integer");
	} else if (!json_is_string(op)) {
		reply_error(c, req.id, MB_EBADREQ, NULL,
			    "\"op\" must be a string");
	} else if ((e = request_find(json_string_value(op))) == NULL) {
		reply_error(c, req.id, MB_EBADREQ, NULL, "unknown op \"%.64s\"",
			    json_string_value(op));
	} else if (!c->hello && strcmp(e->op, "hello") != 0) {
		reply_error(c, req.id, MB_EBADREQ, NULL,
			    "say hello first (protocol version %d)",
			    MB_PROTOCOL_VERSION);
	} else if ((e->right & c->rights) != e->right) {
		conn_log_refusal(c, "refused %s from uid %ld pid %ld: it may "
				 "not %s", e->op, (long)c->uid, (long)c->pid,
				 rights_name(e->right));
		reply_error(c, req.id, MB_EDENIED, NULL,
			    "uid %ld may not %s (%s)", (long)c->uid,
			    rights_name(e->right), e->op);
	} else {
		e->fn(&req);
	}
	json_decref(req.msg);
}
