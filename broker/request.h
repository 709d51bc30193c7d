/* SPDX-License-Identifier: MIT */
/*
 * request.h - control requests: decoding and dispatch (request.c) and the
 * handlers' tables (req_*.c), the top layer: handlers call operations
 * (ops.h) and read the registry and leases; nothing below calls them.
 */
#ifndef MBROKER_REQUEST_H
#define MBROKER_REQUEST_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

struct conn;

struct request {
	struct conn *conn;
	json_t *msg;
	json_t *id;
};
typedef void request_fn(struct request *req);
struct request_entry {
	const char *op;
	request_fn *fn;
	unsigned right; /* what the peer needs (enum right) */
};
/* Hooks the request layer into the connection layer.  Call once. */
void request_init(void);
void request_dispatch(struct conn *c, const char *buf, size_t len);
/* Replies with the items (taken) of a list under key, from the request's
 * "offset" on, as many as fit in one message; "total" counts them all and
 * "next" is the offset of the next page when there is one. */
void reply_paged(struct request *req, const char *key, json_t *items);
/* A required string field, or NULL after an error reply. */
const char *request_string(struct request *req, const char *key);
/* An optional timeout in seconds, in ms; def when absent, -1 after an
 * error reply. */
int64_t request_timeout(struct request *req, int64_t def);

extern const struct request_entry req_session_entries[];
extern const struct request_entry req_model_entries[];
extern const struct request_entry req_attach_entries[];
/* Lets loads grant the attaches that waited for them (req_attach.c). */
void req_attach_init(void);
extern const struct request_entry req_query_entries[];
extern const struct request_entry req_shutdown_entries[];

#endif /* MBROKER_REQUEST_H */
