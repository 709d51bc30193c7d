/* SPDX-License-Identifier: MIT */
/*
 * client.c - libmbroker's connection to the broker: connect and hello,
 * the request/reply round trip, and the events (unload, shutdown, broker
 * lost) that arrive between replies and wait in a queue for
 * mb_next_event.  Never prints, never raises SIGPIPE (MSG_NOSIGNAL).
 */
#include <errno.h>
#include <fcntl.h>
#include <semaphore.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "client.h"
#include "errors.h"

static void
client_queue(struct mb_client *c, const struct mb_event *ev)
{
	struct client_event *e = calloc(1, sizeof *e);

	if (e == NULL)
		return;
	e->ev = *ev;
	if (c->events_tail != NULL)
		c->events_tail->next = e;
	else
		c->events = e;
	c->events_tail = e;
}

static void
client_mark_lost(struct mb_client *c)
{
	struct mb_event ev = {.type = MB_EVENT_BROKER_LOST};

	if (c->lost)
		return;
	c->lost = true;
	client_queue(c, &ev);
}

/* Queues msg if it is an event; returns whether it was one. */
static bool
client_take_event(struct mb_client *c, const json_t *msg)
{
	const json_t *kind = json_object_get(msg, "event");
	const json_t *model = json_object_get(msg, "model");
	struct mb_event ev = {.type = MB_EVENT_NONE};

	if (!json_is_string(kind))
		return false;
	if (strcmp(json_string_value(kind), "unload") == 0)
		ev.type = MB_EVENT_UNLOAD;
	else if (strcmp(json_string_value(kind), "shutdown") == 0)
		ev.type = MB_EVENT_SHUTDOWN;
	else
		return true; /* an event this version does not know: skip */
	if (json_is_string(model))
		snprintf(ev.model, sizeof ev.model, "%s",
			 json_string_value(model));
	ev.generation = (uint64_t)json_integer_value(
		json_object_get(msg, "generation"));
	ev.timeout_ms = json_integer_value(json_object_get(msg, "timeout_ms"));
	client_queue(c, &ev);
	return true;
}

/*
 * Reads one message (blocking unless flags has MSG_DONTWAIT).  Returns a
 * new object, or NULL with *err set: -EAGAIN, MB_ELOST or MB_EPROTOCOL.
 */
static json_t *
client_read(struct mb_client *c, int flags, int *fd, int *err)
{
	char reason[128];
	json_t *msg;
	ssize_t n;

	n = wire_recv(c->fd, c->buf, WIRE_MAX_REPLY, fd, flags);
	/* The broker closed with our request unread (it refused us): the
	 * kernel reports the reset first, then still delivers what it said
	 * before closing. */
	if (n == -ECONNRESET)
		n = wire_recv(c->fd, c->buf, WIRE_MAX_REPLY, fd, MSG_DONTWAIT);
	if (n == -EAGAIN && !(flags & MSG_DONTWAIT))
		n = 0;
	if (n == -EAGAIN) {
		*err = -EAGAIN;
		return NULL;
	}
	if (n <= 0) {
		client_mark_lost(c);
		*err = MB_ELOST;
		return NULL;
	}
	if ((msg = wire_decode(c->buf, (size_t)n, reason, sizeof reason)) ==
	    NULL) {
		if (*fd >= 0)
			close(*fd);
		*fd = -1;
		*err = MB_EPROTOCOL;
	}
	return msg;
}

/* The error code of a failed reply, with its message kept. */
static int
client_reply_error(struct mb_client *c, const json_t *reply)
{
	const json_t *err = json_object_get(reply, "error");
	const json_t *code = json_object_get(err, "code");
	const json_t *message = json_object_get(err, "message");

	snprintf(c->last_error, sizeof c->last_error, "%s",
		 json_is_string(message) ? json_string_value(message) : "");
	return json_is_string(code) ? errors_from_wire(json_string_value(code))
				    : MB_EPROTOCOL;
}

/*
 * The broker closed before reading our request: it may have said why
 * first (too many connections).  Returns that error, or MB_ELOST.
 */
static int
client_refused(struct mb_client *c)
{
	int fd, err = 0, r = MB_ELOST;
	json_t *msg = client_read(c, MSG_DONTWAIT, &fd, &err);

	if (fd >= 0)
		close(fd);
	if (msg != NULL && json_is_false(json_object_get(msg, "ok")))
		r = client_reply_error(c, msg);
	json_decref(msg);
	client_mark_lost(c);
	return r;
}

int
client_call(struct mb_client *c, json_t *req, json_t **reply, int *fd_out)
{
	int64_t id = ++c->next_id;
	char *text;
	size_t len;
	int r;

	if (reply != NULL)
		*reply = NULL;
	if (fd_out != NULL)
		*fd_out = -1;
	c->last_error[0] = '\0';
	if (c->lost)
		return MB_ELOST;
	json_object_set_new(req, "id", json_integer(id));
	text = wire_encode(req, &len);
	if (text == NULL)
		return -ENOMEM;
	if (len > WIRE_MAX_REPLY) {
		/* More than any broker accepts: never send it. */
		free(text);
		snprintf(c->last_error, sizeof c->last_error,
			 "request of %zu bytes is over the %d-byte limit", len,
			 WIRE_MAX_REPLY);
		return MB_ELIMIT;
	}
	r = wire_send(c->fd, text, len, -1, 0);
	free(text);
	if (r == -EPIPE || r == -ECONNRESET)
		return client_refused(c);
	if (r < 0)
		return r;
	for (;;) {
		int fd, err = 0;
		json_t *msg = client_read(c, 0, &fd, &err);
		const json_t *rid;

		if (msg == NULL) {
			if (err == MB_EPROTOCOL)
				continue;
			return err;
		}
		rid = json_object_get(msg, "id");
		/* An error with no id answers the one request in flight: the
		 * broker could not read it (too large, or no hello in time). */
		if (client_take_event(c, msg) ||
		    (json_is_integer(rid) && json_integer_value(rid) != id) ||
		    (!json_is_integer(rid) &&
		     !json_is_false(json_object_get(msg, "ok")))) {
			/* An event, or the reply to an mb_ack. */
			if (fd >= 0)
				close(fd);
			json_decref(msg);
			continue;
		}
		r = json_is_true(json_object_get(msg, "ok"))
			    ? 0 : client_reply_error(c, msg);
		if (fd_out != NULL)
			*fd_out = fd;
		else if (fd >= 0)
			close(fd);
		if (reply != NULL)
			*reply = msg;
		else
			json_decref(msg);
		return r;
	}
}

/* Says hello; on success opens the ack semaphore the broker named. */
static int
client_hello(struct mb_client *c, const char *role)
{
	json_t *req = json_pack("{s:s, s:i, s:s}", "op", "hello", "version",
				MB_PROTOCOL_VERSION, "role", role);
	json_t *reply = NULL;
	const json_t *sem;
	int r;

	if (req == NULL)
		return -ENOMEM;
	r = client_call(c, req, &reply, NULL);
	json_decref(req);
	if (r == 0) {
		sem = json_object_get(reply, "ack_semaphore");
		/* Without it the ack message alone still counts. */
		if (json_is_string(sem))
			c->sem = sem_open(json_string_value(sem), 0);
	}
	json_decref(reply);
	return r;
}

int
client_connect(const char *path, const char *role, struct mb_client **out,
	       char *why, size_t whylen)
{
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	char def[sizeof sun.sun_path];
	struct mb_client *c;
	int r;

	*out = NULL;
	if (path == NULL) {
		if ((r = mb_default_socket_path(def, sizeof def)) < 0)
			return r;
		path = def;
	}
	if (strlen(path) >= sizeof sun.sun_path)
		return -ENAMETOOLONG;
	strcpy(sun.sun_path, path);
	if ((c = calloc(1, sizeof *c)) == NULL)
		return -ENOMEM;
	c->sem = SEM_FAILED;
	c->ack_len = (size_t)snprintf(c->ack_msg, sizeof c->ack_msg,
				      "{\"id\":%d,\"op\":\"ack\"}",
				      CLIENT_ACK_ID);
	c->fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (c->fd < 0) {
		r = -errno;
		free(c);
		return r;
	}
	if (connect(c->fd, (struct sockaddr *)&sun, sizeof sun) < 0) {
		r = -errno;
		mb_close(c);
		return r;
	}
	if ((r = client_hello(c, role)) < 0) {
		if (why != NULL)
			snprintf(why, whylen, "%s", c->last_error);
		mb_close(c);
		return r;
	}
	*out = c;
	return 0;
}

int
mb_connect(const char *socket_path, struct mb_client **out)
{
	return client_connect(socket_path, "worker", out, NULL, 0);
}

void
mb_close(struct mb_client *c)
{
	struct client_event *e;

	if (c == NULL)
		return;
	for (int i = 0; i < MB_MAX_ATTACHMENTS; i++) {
		void *p = atomic_exchange(&c->slots[i].addr, NULL);

		atomic_store(&c->slots[i].released, false);
		if (p != NULL)
			munmap(p, atomic_load(&c->slots[i].len));
		if (c->atts[i] != NULL)
			attach_forget(c->atts[i]);
	}
	while ((e = c->events) != NULL) {
		c->events = e->next;
		free(e);
	}
	if (c->sem != SEM_FAILED)
		sem_close(c->sem);
	if (c->fd >= 0)
		close(c->fd);
	free(c);
}

const char *
mb_last_error(const struct mb_client *c)
{
	return c->last_error;
}

int
mb_event_fd(const struct mb_client *c)
{
	return c->fd;
}

int
mb_next_event(struct mb_client *c, struct mb_event *out)
{
	struct client_event *e;

	while (c->events == NULL && !c->lost) {
		int fd, err = 0;
		json_t *msg = client_read(c, MSG_DONTWAIT, &fd, &err);

		if (fd >= 0)
			close(fd);
		if (msg == NULL) {
			if (err == MB_EPROTOCOL)
				continue;
			break;
		}
		client_take_event(c, msg); /* anything else: a stale reply */
		json_decref(msg);
	}
	if ((e = c->events) == NULL)
		return 0;
	c->events = e->next;
	if (c->events == NULL)
		c->events_tail = NULL;
	*out = e->ev;
	free(e);
	return 1;
}

int
mb_request(struct mb_client *c, const char *request_json, char **reply)
{
	json_error_t jerr;
	json_t *req, *msg = NULL;
	int r;

	*reply = NULL;
	req = json_loads(request_json, JSON_REJECT_DUPLICATES, &jerr);
	if (!json_is_object(req)) {
		json_decref(req);
		snprintf(c->last_error, sizeof c->last_error,
			 "request is not a JSON object");
		return MB_EBADREQ;
	}
	r = client_call(c, req, &msg, NULL);
	json_decref(req);
	if (msg != NULL) {
		*reply = json_dumps(msg, JSON_COMPACT);
		json_decref(msg);
	}
	return r;
}
