/* SPDX-License-Identifier: MIT */
/*
 * reply.c - replies, sent now or owed.  A reply is {"id": .., "ok": true,
 * ...} or {"id": .., "ok": false, "error": {"code": "..", "message":
 * ".."}}.  A request whose reply waits for something to finish (a load,
 * an unload, the shutdown) is owed one reply exactly: its handler puts it
 * on the waiting operation's list before starting the work (out of memory,
 * it answers `internal` and starts nothing), whoever ends the work replies
 * to the whole list, and a connection that goes away drops what it is
 * owed.  One connection may have CONN_MAX_QUEUED replies owed; more are
 * refused with `limit`, so a client cannot pile them up.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mbrokerd.h"
#include "conn.h"
#include "errors.h"
#include "reply.h"
#include "utf8.h"
#include "wire.h"

struct pending {
	TAILQ_ENTRY(pending) entry;   /* on its list */
	TAILQ_ENTRY(pending) by_conn; /* on its connection's owed list */
	struct pending_list *list;
	struct conn *conn;
	json_t *id;
};

void
reply_ok(struct conn *c, json_t *id, json_t *body, int pass_fd)
{
	reply_ok_fds(c, id, body, &pass_fd, pass_fd >= 0);
}

void
reply_ok_fds(struct conn *c, json_t *id, json_t *body, const int *fds,
	     unsigned nfds)
{
	json_t *o = body != NULL ? json_copy(body) : json_object();

	json_decref(body);
	if (o == NULL)
		return;
	json_object_set(o, "id", id != NULL ? id : json_null());
	json_object_set_new(o, "ok", json_true());
	if (conn_send(c, o, fds, nfds) == -EMSGSIZE)
		reply_error(c, id, MB_EINTERNAL, NULL, "the reply is over the "
			    "%d-byte message limit", WIRE_MAX_REPLY);
	json_decref(o);
}

/*
 * The message as a JSON string, which must be valid UTF-8: a "%.64s" or
 * the end of the buffer may have cut a character in two, and text from
 * outside the protocol (a preload's path) may be no UTF-8 at all.  Each
 * byte that starts no whole character becomes '?'.
 */
static json_t *
reply_message(char *message)
{
	unsigned char *p = (unsigned char *)message;
	size_t left = strlen(message);

	while (left > 0) {
		size_t n = utf8_len(p, left);

		if (n == 0) {
			*p++ = '?';
			left--;
		} else {
			p += n;
			left -= n;
		}
	}
	return json_string(message);
}

void
reply_error(struct conn *c, json_t *id, int code, json_t *extra,
	    const char *fmt, ...)
{
	char message[1024];
	json_t *err = extra != NULL ? json_copy(extra) : json_object();
	json_t *o;
	va_list ap;

	json_decref(extra);
	va_start(ap, fmt);
	vsnprintf(message, sizeof message, fmt, ap);
	va_end(ap);
	if (err == NULL)
		return;
	json_object_set_new(err, "code", json_string(errors_wire_name(code)));
	json_object_set_new(err, "message", reply_message(message));
	o = json_pack("{s:O, s:b, s:o}", "id", id != NULL ? id : json_null(),
		      "ok", 0, "error", err);
	if (o != NULL) {
		conn_send(c, o, NULL, 0);
		json_decref(o);
	}
}

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
	p->list = list;
	p->conn = c;
	p->id = json_incref(id);
	c->npending++;
	TAILQ_INSERT_TAIL(list, p, entry);
	TAILQ_INSERT_TAIL(&c->owed, p, by_conn);
	return true;
}

/* Takes p off both its lists and frees it; returns its connection. */
static struct conn *
pending_take(struct pending *p)
{
	struct conn *c = p->conn;

	TAILQ_REMOVE(p->list, p, entry);
	TAILQ_REMOVE(&c->owed, p, by_conn);
	c->npending--;
	json_decref(p->id);
	free(p);
	return c;
}

/* Sends to each pending request and empties the list. */
static void
pending_reply(struct pending_list *list, bool ok, int code, json_t *body,
	      const char *message)
{
	struct pending *p;

	while ((p = TAILQ_FIRST(list)) != NULL) {
		json_t *id = json_incref(p->id);
		/* Off the lists first: a reply that finds its client gone
		 * loses the connection, which drops the client's entries. */
		struct conn *c = pending_take(p);

		if (ok)
			reply_ok(c, id, json_incref(body), -1);
		else
			reply_error(c, id, code, json_incref(body), "%s",
				    message);
		json_decref(id);
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

void
pending_answer(struct pending_list *list,
	       void (*answer)(struct conn *c, json_t *id, void *arg), void *arg)
{
	struct pending *p;

	while ((p = TAILQ_FIRST(list)) != NULL) {
		json_t *id = json_incref(p->id);
		struct conn *c = pending_take(p);

		answer(c, id, arg);
		json_decref(id);
	}
}

void
pending_move(struct pending_list *from, struct pending_list *to)
{
	struct pending *p;

	while ((p = TAILQ_FIRST(from)) != NULL) {
		TAILQ_REMOVE(from, p, entry);
		TAILQ_INSERT_TAIL(to, p, entry);
		p->list = to;
	}
}

void
pending_drop_conn(struct conn *c)
{
	struct pending *p;

	while ((p = TAILQ_FIRST(&c->owed)) != NULL)
		pending_take(p);
}
