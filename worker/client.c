/* SPDX-License-Identifier: MIT */
/*
 * client.c - libmbroker's connection to the broker: connect, the check of
 * who serves the socket, hello, the request/reply round trip with its
 * deadline, and the events (unload, replaced, shutdown, broker lost)
 * that arrive between replies and wait in a queue for mb_next_event.  The
 * queue is mirrored by an eventfd so that mb_event_fd polls readable while
 * it holds an event.  Never prints, never raises SIGPIPE (MSG_NOSIGNAL).
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <semaphore.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "client.h"
#include "errors.h"

/* How often a connect is retried while the broker's backlog is full. */
#define CLIENT_CONNECT_RETRY_MS 10

int64_t
client_deadline(int timeout_ms)
{
	return timeout_ms < 0 ? -1 : clock_monotonic_ms() + timeout_ms;
}

/* Polls the connection for events until deadline (-1: forever, a past
 * one: just looks).  Returns 0 when ready, -ETIMEDOUT or -errno. */
static int
client_poll(struct mb_client *c, short events, int64_t deadline)
{
	struct pollfd p = {.fd = c->fd, .events = events};

	for (;;) {
		int64_t left = deadline < 0 ? -1 : deadline - clock_monotonic_ms();
		int n;

		if (deadline >= 0 && left < 0)
			left = 0;
		n = poll(&p, 1, left > INT32_MAX ? INT32_MAX : (int)left);
		if (n > 0)
			return 0;
		if (n < 0 && errno != EINTR)
			return -errno;
		if (n == 0 && deadline >= 0 && clock_monotonic_ms() >= deadline)
			return -ETIMEDOUT;
	}
}

/* Makes the eventfd say whether the queue holds an event. */
static void
client_pending_sync(struct mb_client *c)
{
	uint64_t v = 1;

	if (c->events != NULL)
		(void)!write(c->pending, &v, sizeof v);
	else
		(void)!read(c->pending, &v, sizeof v);
}

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
	if (c->events == e)
		client_pending_sync(c);
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
	else if (strcmp(json_string_value(kind), "replaced") == 0)
		ev.type = MB_EVENT_REPLACED;
	else
		return true; /* an event this version does not know: skip */
	if (json_is_string(model))
		snprintf(ev.model, sizeof ev.model, "%s",
			 json_string_value(model));
	ev.generation = (uint64_t)json_integer_value(
		json_object_get(msg, "generation"));
	ev.timeout_ms = json_integer_value(json_object_get(msg, "timeout_ms"));
	ev.old_generation = (uint64_t)json_integer_value(
		json_object_get(msg, "old_generation"));
	client_queue(c, &ev);
	return true;
}

/*
 * A reply nobody waits for any more (its request timed out, or an ack's):
 * dropped, but an attachment it granted is handed back at once, so that
 * the broker does not wait for a worker that never mapped it.
 */
static void
client_drop_stale(struct mb_client *c, const json_t *msg)
{
	const json_t *att = json_object_get(msg, "attachment");
	char text[96];
	int len;

	if (!json_is_true(json_object_get(msg, "ok")) || !json_is_integer(att))
		return;
	len = snprintf(text, sizeof text,
		       "{\"id\":%lld,\"op\":\"detach\",\"attachment\":%lld}",
		       (long long)++c->next_id,
		       (long long)json_integer_value(att));
	(void)wire_send(c->fd, text, (size_t)len, -1, MSG_DONTWAIT);
}

/*
 * Reads one message, waiting until deadline (a past one: only what is
 * there).  Returns a new object, or NULL with *err set: -ETIMEDOUT,
 * MB_ELOST, MB_EPROTOCOL or -errno.
 */
static json_t *
client_read(struct mb_client *c, int64_t deadline, struct client_fds *fds,
	    int *err)
{
	char reason[128];
	json_t *msg;
	ssize_t n;

	/* Reads first and polls only when nothing is there yet: a reply to
	 * a quick request costs no extra system call. */
	while ((n = wire_recv_fds(c->fd, c->buf, WIRE_MAX_REPLY, fds->fd,
				  MB_FDS_PER_MESSAGE, &fds->count, MSG_DONTWAIT)) ==
	       -EAGAIN)
		if ((*err = client_poll(c, POLLIN, deadline)) < 0)
			return NULL;
	/* The broker closed with our request unread (it refused us): the
	 * kernel reports the reset first, then still delivers what it said
	 * before closing. */
	if (n == -ECONNRESET)
		n = wire_recv_fds(c->fd, c->buf, WIRE_MAX_REPLY, fds->fd,
				  MB_FDS_PER_MESSAGE, &fds->count, MSG_DONTWAIT);
	if (n <= 0) {
		client_fds_close(fds);
		client_mark_lost(c);
		*err = MB_ELOST;
		return NULL;
	}
	if ((msg = wire_decode(c->buf, (size_t)n, reason, sizeof reason)) ==
	    NULL) {
		client_fds_close(fds);
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
	struct client_fds fds;
	int err = 0, r = MB_ELOST;
	json_t *msg = client_read(c, 0, &fds, &err);

	client_fds_close(&fds);
	if (msg != NULL && json_is_false(json_object_get(msg, "ok")))
		r = client_reply_error(c, msg);
	json_decref(msg);
	client_mark_lost(c);
	return r;
}

int64_t
client_send(struct mb_client *c, json_t *req, int64_t deadline)
{
	int64_t id = ++c->next_id;
	char *text;
	size_t len;
	int r;

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
	while ((r = wire_send(c->fd, text, len, -1, MSG_DONTWAIT)) == -EAGAIN &&
	       (r = client_poll(c, POLLOUT, deadline)) == 0)
		;
	free(text);
	if (r == -ETIMEDOUT)
		snprintf(c->last_error, sizeof c->last_error,
			 "the broker did not take the request in time");
	if (r == -EPIPE || r == -ECONNRESET)
		return client_refused(c);
	return r < 0 ? r : id;
}

void
client_fds_close(struct client_fds *fds)
{
	while (fds->count > 0)
		close(fds->fd[--fds->count]);
}

int
client_wait(struct mb_client *c, int64_t id, int64_t deadline,
	    json_t **reply, struct client_fds *fds_out)
{
	int64_t start = clock_monotonic_ms();
	int r;

	if (reply != NULL)
		*reply = NULL;
	if (fds_out != NULL)
		fds_out->count = 0;
	for (;;) {
		struct client_fds fds = {.count = 0};
		int err = 0;
		json_t *msg = client_read(c, deadline, &fds, &err);
		const json_t *rid;

		if (msg == NULL) {
			if (err == MB_EPROTOCOL)
				continue;
			if (err == -ETIMEDOUT)
				snprintf(c->last_error, sizeof c->last_error,
					 "no reply from the broker in %lld ms",
					 (long long)(clock_monotonic_ms() - start));
			return err;
		}
		rid = json_object_get(msg, "id");
		/* An error with no id answers the one request in flight: the
		 * broker could not read it (too large, or no hello in time). */
		if (client_take_event(c, msg) ||
		    (json_is_integer(rid) && json_integer_value(rid) != id) ||
		    (!json_is_integer(rid) &&
		     !json_is_false(json_object_get(msg, "ok")))) {
			/* An event, the reply to an mb_ack or to a request
			 * that timed out. */
			if (fds.count > 0) {
				client_fds_close(&fds);
				client_drop_stale(c, msg);
			}
			json_decref(msg);
			continue;
		}
		r = json_is_true(json_object_get(msg, "ok"))
			    ? 0 : client_reply_error(c, msg);
		if (fds_out != NULL)
			*fds_out = fds;
		else
			client_fds_close(&fds);
		if (reply != NULL)
			*reply = msg;
		else
			json_decref(msg);
		return r;
	}
}

int
client_call_until(struct mb_client *c, json_t *req, int64_t deadline,
		  json_t **reply, struct client_fds *fds_out)
{
	int64_t id = client_send(c, req, deadline);

	if (reply != NULL)
		*reply = NULL;
	if (fds_out != NULL)
		fds_out->count = 0;
	if (id < 0)
		return (int)id;
	return client_wait(c, id, deadline, reply, fds_out);
}

int
client_call(struct mb_client *c, json_t *req, json_t **reply,
	    struct client_fds *fds_out)
{
	return client_call_until(c, req, client_deadline(c->timeout_ms),
				 reply, fds_out);
}

/* Says hello; on success opens the ack semaphore the broker named. */
static int
client_hello(struct mb_client *c, const char *role, int64_t deadline)
{
	json_t *req = json_pack("{s:s, s:i, s:s}", "op", "hello", "version",
				MB_PROTOCOL_VERSION, "role", role);
	json_t *reply = NULL;
	const json_t *sem;
	int r;

	if (req == NULL)
		return -ENOMEM;
	r = client_call_until(c, req, deadline, &reply, NULL);
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

/* The uid the broker must run as (besides root): want, else
 * $MBROKER_BROKER_UID, else -1 for our own.  -EINVAL when malformed. */
static int64_t
client_expected_uid(int64_t want)
{
	const char *env = getenv("MBROKER_BROKER_UID");
	char *end;
	long long v;

	if (want >= 0 || env == NULL || *env == '\0')
		return want < 0 ? -1 : want;
	errno = 0;
	v = strtoll(env, &end, 10);
	if (*end != '\0' || errno != 0 || v < 0 || v > UINT32_MAX - 1LL)
		return -EINVAL;
	return v;
}

/*
 * Refuses a socket served by a process that is neither root, nor the
 * expected uid (by default ours): anyone could have bound it first.
 */
static int
client_check_peer(struct mb_client *c, int64_t want, char *why,
		  size_t whylen)
{
	struct ucred cred;
	socklen_t len = sizeof cred;
	int64_t expect = client_expected_uid(want);
	char trusted[32];

	if (expect == -EINVAL) {
		snprintf(why, whylen, "MBROKER_BROKER_UID is not a uid");
		return -EINVAL;
	}
	if (getsockopt(c->fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
		return -errno;
	if (cred.uid == 0 || (expect >= 0 && cred.uid == (uid_t)expect) ||
	    (expect < 0 && (cred.uid == getuid() || cred.uid == geteuid())))
		return 0;
	if (expect < 0)
		expect = geteuid();
	snprintf(trusted, sizeof trusted, "uid %lld or ", (long long)expect);
	snprintf(why, whylen,
		 "it is served by uid %u (pid %d), not by %sroot%s",
		 (unsigned)cred.uid, (int)cred.pid, expect == 0 ? "" : trusted,
		 want < 0 && getenv("MBROKER_BROKER_UID") == NULL
			 ? " (set MBROKER_BROKER_UID to trust it)" : "");
	return MB_EPEER;
}

/* Connects the socket, retrying while the broker's backlog is full. */
static int
client_connect_socket(struct mb_client *c, const struct sockaddr_un *sun,
		      int64_t deadline)
{
	while (connect(c->fd, (const struct sockaddr *)sun, sizeof *sun) < 0) {
		if (errno != EAGAIN && errno != EINTR)
			return -errno;
		if (deadline >= 0 && clock_monotonic_ms() >= deadline)
			return -ETIMEDOUT;
		poll(NULL, 0, CLIENT_CONNECT_RETRY_MS);
	}
	return 0;
}

/* The client's descriptors: the socket, the queue's eventfd, the epoll
 * instance over both. */
static int
client_open_fds(struct mb_client *c)
{
	struct epoll_event ev = {.events = EPOLLIN};

	c->fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK,
		       0);
	c->pending = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	c->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (c->fd < 0 || c->pending < 0 || c->epfd < 0)
		return -errno;
	if (epoll_ctl(c->epfd, EPOLL_CTL_ADD, c->fd, &ev) < 0 ||
	    epoll_ctl(c->epfd, EPOLL_CTL_ADD, c->pending, &ev) < 0)
		return -errno;
	return 0;
}

int
client_connect(const struct client_params *p, struct mb_client **out,
	       char *why, size_t whylen)
{
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	int64_t deadline = client_deadline(p->timeout_ms);
	char def[sizeof sun.sun_path], ignored[8];
	const char *path = p->path;
	struct mb_client *c;
	int r;

	*out = NULL;
	if (why == NULL) {
		why = ignored;
		whylen = sizeof ignored;
	}
	why[0] = '\0';
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
	c->fd = c->pending = c->epfd = -1;
	c->timeout_ms = -1;
	c->sem = SEM_FAILED;
	c->ack_len = (size_t)snprintf(c->ack_msg, sizeof c->ack_msg,
				      "{\"id\":%d,\"op\":\"ack\"}",
				      CLIENT_ACK_ID);
	if ((r = client_open_fds(c)) < 0 ||
	    (r = client_connect_socket(c, &sun, deadline)) < 0 ||
	    (r = client_check_peer(c, p->broker_uid, why, whylen)) < 0)
		goto fail;
	if ((r = client_hello(c, p->role, deadline)) < 0) {
		snprintf(why, whylen, "%s", c->last_error);
		goto fail;
	}
	*out = c;
	return 0;
fail:
	mb_close(c);
	return r;
}

int
mb_connect(const char *socket_path, struct mb_client **out)
{
	return mb_connect_ex(socket_path, -1, -1, out);
}

int
mb_connect_ex(const char *socket_path, int64_t broker_uid, int timeout_ms,
	      struct mb_client **out)
{
	struct client_params p = {.path = socket_path, .role = "worker",
				  .broker_uid = broker_uid,
				  .timeout_ms = timeout_ms};

	return client_connect(&p, out, NULL, 0);
}

void
mb_set_timeout(struct mb_client *c, int timeout_ms)
{
	c->timeout_ms = timeout_ms < 0 ? -1 : timeout_ms;
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
	if (c->pending >= 0)
		close(c->pending);
	if (c->epfd >= 0)
		close(c->epfd);
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
	return c->epfd;
}

int
mb_next_event(struct mb_client *c, struct mb_event *out)
{
	struct client_event *e;

	while (c->events == NULL && !c->lost) {
		struct client_fds fds = {.count = 0};
		int err = 0;
		json_t *msg = client_read(c, 0, &fds, &err);

		if (msg == NULL) {
			if (err == MB_EPROTOCOL)
				continue;
			break;
		}
		/* Anything but an event: a reply nobody waits for. */
		if (!client_take_event(c, msg) && fds.count > 0)
			client_drop_stale(c, msg);
		client_fds_close(&fds);
		json_decref(msg);
	}
	/* Also when nothing was queued: a process that shares the connection
	 * after a fork may have left the eventfd set. */
	if ((e = c->events) == NULL) {
		client_pending_sync(c);
		return 0;
	}
	c->events = e->next;
	if (c->events == NULL) {
		c->events_tail = NULL;
		client_pending_sync(c);
	}
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
