/* SPDX-License-Identifier: MIT */
/*
 * req_session.c - the requests that open and probe a session: hello (the
 * protocol version check every client must pass first) and ping.
 */
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include "mbrokerd.h"
#include "conn.h"
#include "reply.h"
#include "request.h"

static void
req_hello(struct request *req)
{
	const json_t *version = json_object_get(req->msg, "version");
	const json_t *role = json_object_get(req->msg, "role");

	if (!json_is_integer(version)) {
		reply_error(req->conn, req->id, MB_EBADREQ, NULL,
			    "\"version\" must be an integer");
		return;
	}
	if (json_integer_value(version) != MB_PROTOCOL_VERSION) {
		reply_error(req->conn, req->id, MB_EVERSION, NULL,
			    "broker speaks protocol version %d, client %lld",
			    MB_PROTOCOL_VERSION,
			    (long long)json_integer_value(version));
		return;
	}
	if (role != NULL && (!json_is_string(role) ||
			     json_string_length(role) == 0 ||
			     json_string_length(role) >= sizeof req->conn->role ||
			     strspn(json_string_value(role),
				    "abcdefghijklmnopqrstuvwxyz") !=
				     json_string_length(role))) {
		reply_error(req->conn, req->id, MB_EBADREQ, NULL,
			    "\"role\" must be 1 to %d lowercase letters a-z",
			    (int)sizeof req->conn->role - 1);
		return;
	}
	if (role != NULL)
		strcpy(req->conn->role, json_string_value(role));
	conn_said_hello(req->conn);
	reply_ok(req->conn, req->id,
		 json_pack("{s:i, s:s, s:s, s:I, s:s, s:i, s:b, s:s, s:I}",
			   "version",
			   MB_PROTOCOL_VERSION, "broker",
			   "mbrokerd " MB_VERSION_STRING, "instance",
			   broker.cfg.instance, "pid", (json_int_t)getpid(),
			   "ack_semaphore", ackwait_name(), "signal",
			   broker.cfg.unload_signal, "shutting_down",
			   broker.shutting_down, "rights",
			   req->conn->rights & RIGHT_ADMIN ? "admin"
			   : req->conn->rights & RIGHT_USE ? "use" : "none",
			   "max_message", (json_int_t)broker.cfg.max_message),
		 -1);
}

static void
req_ping(struct request *req)
{
	reply_ok(req->conn, req->id, NULL, -1);
}

const struct request_entry req_session_entries[] = {
	{"hello", req_hello, RIGHT_NONE},
	{"ping", req_ping, RIGHT_NONE},
	{NULL, NULL, RIGHT_NONE},
};
