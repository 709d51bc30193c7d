/* SPDX-License-Identifier: MIT */
/*
 * pending.c - requests whose reply waits for a load, an unload or the
 * shutdown to finish.  Each gets exactly one reply: the request handler
 * queues it before starting the work (out of memory, it answers `internal`
 * and starts nothing), whoever ends the work replies to the whole list, and
 * a connection that goes away drops its entries (conn.c calls
 * pending_drop_conn).  One connection may have CONN_MAX_QUEUED waiting;
 * more are refused with `limit`, so a client cannot pile them up.  A pending reply names its connection by id, so a
 * client lost between the two is simply skipped.
 */
#include <stdlib.h>

#include "mbrokerd.h"

bool
pending_add(struct pending_list *list, struct conn *c, json_t *id)
{
	struct pending *p;

	if (c->npending >= CONN_MAX_QUEUED) {
		reply_error(c, id, MB_ELIMIT, NULL, "%u requests of this "
			    "connection already wait for their reply",
			    c->npending);
		return false;
	}
	if ((p = calloc(1, sizeof *p)) == NULL) {
		log_warnx("conn %llu: out of memory for a deferred reply",
			  (unsigned long long)c->id);
		reply_error(c, id, MB_EINTERNAL, NULL, "out of memory");
		return false;
	}
	p->conn_id = c->id;
	p->id = json_incref(id);
	c->npending++;
	TAILQ_INSERT_TAIL(list, p, entry);
	return true;
}

/* Frees an entry already taken off its list. */
static void
pending_free(struct pending *p)
{
	json_decref(p->id);
	free(p);
}

/* Sends to each pending request and empties the list. */
static void
pending_reply(struct pending_list *list, bool ok, int code, json_t *body,
	      const char *message)
{
	struct pending *p;

	while ((p = TAILQ_FIRST(list)) != NULL) {
		struct conn *c = conn_find(p->conn_id);

		/* Off the list first: a reply that finds its client gone
		 * loses the connection, which drops the client's entries. */
		TAILQ_REMOVE(list, p, entry);
		if (c != NULL)
			c->npending--;
		if (c != NULL && ok)
			reply_ok(c, p->id, json_incref(body), -1);
		else if (c != NULL)
			reply_error(c, p->id, code, json_incref(body), "%s",
				    message);
		pending_free(p);
	}
	json_decref(body);
}

void
pending_reply_ok(struct pending_list *list, json_t *body)
{
	pending_reply(list, true, 0, body, NULL);
}

void
pending_reply_error(struct pending_list *list, int code, json_t *extra,
		    const char *message)
{
	pending_reply(list, false, code, extra, message);
}

/* Frees the entries of list that wait on connection conn_id. */
static void
pending_drop(struct pending_list *list, uint64_t conn_id)
{
	struct pending *p, *next;

	for (p = TAILQ_FIRST(list); p != NULL; p = next) {
		next = TAILQ_NEXT(p, entry);
		if (p->conn_id == conn_id) {
			TAILQ_REMOVE(list, p, entry);
			pending_free(p);
		}
	}
}

void
pending_drop_conn(uint64_t conn_id)
{
	struct model *m;

	TAILQ_FOREACH(m, &broker.models, entry) {
		pending_drop(&m->start_waiters, conn_id);
		pending_drop(&m->load_waiters, conn_id);
		pending_drop(&m->unload_waiters, conn_id);
	}
	pending_drop(&broker.shutdown_waiters, conn_id);
}

bool
pending_none(const struct model *m)
{
	return TAILQ_EMPTY(&m->start_waiters) &&
	       TAILQ_EMPTY(&m->load_waiters) && TAILQ_EMPTY(&m->unload_waiters);
}
