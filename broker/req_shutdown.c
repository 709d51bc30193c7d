/* SPDX-License-Identifier: MIT */
/*
 * req_shutdown.c - the shutdown request: the same orderly shutdown as
 * SIGTERM, with an optional timeout; the reply comes when it is over, just
 * before the broker exits.
 */
#include <stdio.h>

#include "mbrokerd.h"
#include "conn.h"
#include "ops.h"
#include "request.h"

static void
req_shutdown(struct request *req)
{
	int64_t timeout = request_timeout(req, broker.cfg.shutdown_timeout_ms);
	char why[64];

	if (timeout < 0)
		return;
	snprintf(why, sizeof why, "requested by pid %ld",
		 (long)req->conn->pid);
	shutdown_begin(timeout, req->conn, req->id, why);
}

const struct request_entry req_shutdown_entries[] = {
	{"shutdown", req_shutdown, RIGHT_ADMIN},
	{NULL, NULL, RIGHT_NONE},
};
