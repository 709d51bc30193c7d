/* SPDX-License-Identifier: MIT */
/*
 * conn.c - one client connection: who is on the other end (SO_PEERCRED and
 * a pidfd, so signals never reach a recycled pid), reading its messages,
 * sending replies without ever blocking on a slow reader, and losing it.
 * The connection is the lease: when it closes, every attachment it held is
 * released.  A connection is freed after the callback that lost it, never
 * inside it.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/pidfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "mbrokerd.h"
#include "wire.h"

#ifndef SO_PEERPIDFD
#define SO_PEERPIDFD 77
#endif

/* Messages read from one client per wake-up, so one cannot starve others. */
#define CONN_READ_BURST 64

static char conn_buf[WIRE_MAX_REPLY + 1];

struct conn *
conn_find(uint64_t id)
{
	struct conn *c;

	TAILQ_FOREACH(c, &broker.conns, entry)
		if (c->id == id)
			return c;
	return NULL;
}

static void
conn_outmsg_free(struct outmsg *m)
{
	if (m->fd >= 0)
		close(m->fd);
	free(m->data);
	free(m);
}

static void
conn_free(struct conn *c)
{
	struct outmsg *m;

	while ((m = TAILQ_FIRST(&c->outq)) != NULL) {
		TAILQ_REMOVE(&c->outq, m, entry);
		conn_outmsg_free(m);
	}
	if (c->ev_read != NULL)
		event_free(c->ev_read);
	if (c->ev_write != NULL)
		event_free(c->ev_write);
	if (c->ev_pid != NULL)
		event_free(c->ev_pid);
	if (c->ev_idle != NULL)
		event_free(c->ev_idle);
	if (c->fd >= 0)
		close(c->fd);
	if (c->pidfd >= 0)
		close(c->pidfd);
	free(c);
}

static void
conn_free_later(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	conn_free(arg);
}

void
conn_lost(struct conn *c, const char *why)
{
	if (c->lost)
		return;
	c->lost = true;
	if (c->nattachments > 0 || strcmp(c->role, "worker") == 0)
		log_info("client pid %ld (conn %llu, %s) gone: %s, releasing "
			 "%u attachment(s)", (long)c->pid,
			 (unsigned long long)c->id, c->role, why,
			 c->nattachments);
	else
		log_debug("client pid %ld (conn %llu) gone: %s", (long)c->pid,
			  (unsigned long long)c->id, why);
	attach_release_all(c);
	pending_drop_conn(c->id);
	TAILQ_REMOVE(&broker.conns, c, entry);
	broker.nconns--;
	event_del(c->ev_read);
	event_del(c->ev_write);
	if (c->ev_pid != NULL)
		event_del(c->ev_pid);
	if (c->ev_idle != NULL)
		event_del(c->ev_idle);
	if (event_base_once(broker.base, -1, EV_TIMEOUT, conn_free_later, c,
			    NULL) < 0)
		log_warnx("conn %llu: cannot schedule its release",
			  (unsigned long long)c->id);
}

static void
conn_read(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;

	(void)what;
	for (int i = 0; i < CONN_READ_BURST && !c->lost; i++) {
		int passed;
		ssize_t n = wire_recv(fd, conn_buf, broker.cfg.max_message,
				      &passed, MSG_DONTWAIT);

		if (passed >= 0)
			close(passed); /* clients have no reason to pass one */
		if (n == -EAGAIN)
			return;
		if (n == 0) {
			conn_lost(c, "connection closed");
			return;
		}
		if (n == -EMSGSIZE) {
			conn_bad_request(c, "message over the size limit");
			reply_error(c, NULL, MB_EBADREQ, NULL,
				    "message larger than %zu bytes",
				    broker.cfg.max_message);
			continue;
		}
		if (n < 0) {
			conn_lost(c, strerror((int)-n));
			return;
		}
		request_dispatch(c, conn_buf, (size_t)n);
	}
}

/* Sends the head of the queue until it is empty or the socket is full. */
static int
conn_drain(struct conn *c)
{
	struct outmsg *m;

	while ((m = TAILQ_FIRST(&c->outq)) != NULL) {
		int r = wire_send(c->fd, m->data, m->len, m->fd, MSG_DONTWAIT);

		if (r == -EAGAIN)
			return event_add(c->ev_write, NULL) < 0 ? -EIO : 0;
		if (r < 0)
			return r;
		TAILQ_REMOVE(&c->outq, m, entry);
		c->nqueued--;
		conn_outmsg_free(m);
	}
	return 0;
}

static void
conn_write(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;
	int r;

	(void)fd;
	(void)what;
	if ((r = conn_drain(c)) < 0)
		conn_lost(c, strerror(-r));
}

int
conn_send(struct conn *c, const json_t *msg, int pass_fd)
{
	struct outmsg *m;
	int r;

	if (c->lost)
		return -EPIPE;
	if ((m = calloc(1, sizeof *m)) == NULL ||
	    (m->data = wire_encode(msg, &m->len)) == NULL) {
		free(m);
		conn_lost(c, "out of memory");
		return -EPIPE;
	}
	m->fd = -1;
	if (m->len > WIRE_MAX_REPLY) {
		log_warnx("pid %ld: a %zu-byte message is over the %d-byte "
			  "limit; not sent", (long)c->pid, m->len,
			  WIRE_MAX_REPLY);
		conn_outmsg_free(m);
		return -EMSGSIZE;
	}
	if (TAILQ_EMPTY(&c->outq)) {
		r = wire_send(c->fd, m->data, m->len, pass_fd, MSG_DONTWAIT);
		if (r != -EAGAIN) {
			conn_outmsg_free(m);
			if (r == 0)
				return 0;
			conn_lost(c, strerror(-r));
			return -EPIPE;
		}
	}
	if (c->nqueued >= CONN_MAX_QUEUED) {
		log_warnx("pid %ld (uid %ld): %d replies unread; dropping the "
			  "client", (long)c->pid, (long)c->uid, CONN_MAX_QUEUED);
		conn_outmsg_free(m);
		conn_lost(c, "client does not read its replies");
		return -EPIPE;
	}
	if (pass_fd >= 0 && (m->fd = fcntl(pass_fd, F_DUPFD_CLOEXEC, 0)) < 0) {
		conn_outmsg_free(m);
		conn_lost(c, "out of descriptors");
		return -EPIPE;
	}
	TAILQ_INSERT_TAIL(&c->outq, m, entry);
	c->nqueued++;
	if (event_add(c->ev_write, NULL) < 0) {
		conn_lost(c, "cannot wait for the socket");
		return -EPIPE;
	}
	return 0;
}

/*
 * The process that connected has exited.  Its connection usually closes
 * with it; if it stays open, a process it forked holds it, and the lease
 * goes on until that one closes it too (docs/reliability.md).
 */
static void
conn_pid_exit(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;

	(void)fd;
	(void)what;
	c->pid_exited = true;
	log_debug("pid %ld (conn %llu) exited", (long)c->pid,
		  (unsigned long long)c->id);
}

/* Fills in who is on the other end of c. */
static void
conn_identify(struct conn *c)
{
	struct ucred cred;
	socklen_t len = sizeof cred;

	if (getsockopt(c->fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0) {
		c->pid = cred.pid;
		c->uid = cred.uid;
		c->gid = cred.gid;
	}
	len = sizeof c->pidfd;
	if (getsockopt(c->fd, SOL_SOCKET, SO_PEERPIDFD, &c->pidfd, &len) < 0) {
		/* Kernels before 6.5: open it now; the peer is still there
		 * unless it died already, which its EOF will tell. */
		c->pidfd = c->pid > 0 ? pidfd_open(c->pid, 0) : -1;
	}
	if (c->pidfd >= 0)
		fcntl(c->pidfd, F_SETFD, FD_CLOEXEC);
	c->rights = rights_of_peer(c->fd, c->uid, c->gid);
}

/* Tells a client over the connection limit why, and closes it. */
static void
conn_refuse(int fd)
{
	static int64_t last_log;
	static unsigned refused;
	json_t *err = json_pack("{s:n, s:b, s:{s:s, s:s}}", "id", "ok", 0,
				"error", "code", "limit", "message",
				"too many connections");

	if (err != NULL)
		wire_send_json(fd, err, -1, MSG_DONTWAIT);
	json_decref(err);
	close(fd);
	refused++;
	if (clock_monotonic_ms() - last_log >= 1000) {
		log_warnx("refused %u client(s): %u connections already (see "
			  "--max-connections)", refused, broker.cfg.max_conns);
		last_log = clock_monotonic_ms();
		refused = 0;
	}
}

void
conn_bad_request(struct conn *c, const char *why)
{
	if (++c->bad_requests == 1 || c->bad_requests % 1000 == 0)
		log_warnx("pid %ld (uid %ld): bad request #%u: %s",
			  (long)c->pid, (long)c->uid, c->bad_requests, why);
}

/* A client that has not said hello in time is dropped. */
static void
conn_idle(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;

	(void)fd;
	(void)what;
	reply_error(c, NULL, MB_EBADREQ, NULL, "no hello within %.1f s",
		    broker.cfg.idle_timeout_ms / 1000.0);
	log_warnx("pid %ld (uid %ld): no hello within %.1f s; closing",
		  (long)c->pid, (long)c->uid,
		  broker.cfg.idle_timeout_ms / 1000.0);
	conn_lost(c, "no hello in time");
}

void
conn_said_hello(struct conn *c)
{
	c->hello = true;
	evtimer_del(c->ev_idle);
}

int
conn_accept(int fd)
{
	struct timeval idle = {broker.cfg.idle_timeout_ms / 1000,
			       broker.cfg.idle_timeout_ms % 1000 * 1000};
	struct conn *c;

	if (broker.nconns >= broker.cfg.max_conns) {
		conn_refuse(fd);
		return -1;
	}
	if ((c = calloc(1, sizeof *c)) == NULL) {
		close(fd);
		return -1;
	}
	c->id = ++broker.next_conn_id;
	c->fd = fd;
	c->pidfd = -1;
	strcpy(c->role, "client");
	TAILQ_INIT(&c->attachments);
	TAILQ_INIT(&c->outq);
	conn_identify(c);
	c->ev_read = event_new(broker.base, fd, EV_READ | EV_PERSIST, conn_read,
			       c);
	c->ev_write = event_new(broker.base, fd, EV_WRITE, conn_write, c);
	if (c->pidfd >= 0)
		c->ev_pid = event_new(broker.base, c->pidfd, EV_READ,
				      conn_pid_exit, c);
	c->ev_idle = evtimer_new(broker.base, conn_idle, c);
	if (c->ev_read == NULL || c->ev_write == NULL || c->ev_idle == NULL ||
	    evtimer_add(c->ev_idle, &idle) < 0 ||
	    event_add(c->ev_read, NULL) < 0 ||
	    (c->ev_pid != NULL && event_add(c->ev_pid, NULL) < 0)) {
		conn_free(c);
		return -1;
	}
	TAILQ_INSERT_TAIL(&broker.conns, c, entry);
	broker.nconns++;
	log_debug("client pid %ld uid %ld connected (conn %llu)", (long)c->pid,
		  (long)c->uid, (unsigned long long)c->id);
	return 0;
}

int
conn_signal(struct conn *c, int sig)
{
	if (c->pidfd >= 0) {
		if (pidfd_send_signal(c->pidfd, sig, NULL, 0) == 0)
			return 0;
		if (errno != ENOSYS)
			return -errno;
	}
	/* No pidfd support (kernels before 5.3, valgrind): the pid the
	 * kernel gave at connect, which a recycled pid could receive. */
	if (c->pid <= 0)
		return -ESRCH;
	return kill(c->pid, sig) < 0 ? -errno : 0;
}

void
conn_flush_all(int64_t timeout_ms)
{
	int64_t deadline = clock_monotonic_ms() + timeout_ms;
	struct conn *c;

	TAILQ_FOREACH(c, &broker.conns, entry) {
		while (!TAILQ_EMPTY(&c->outq)) {
			struct pollfd p = {.fd = c->fd, .events = POLLOUT};
			int64_t left = deadline - clock_monotonic_ms();

			if (left <= 0 || poll(&p, 1, (int)left) <= 0 ||
			    conn_drain(c) < 0)
				break;
		}
	}
}

void
conn_close_all(void)
{
	struct conn *c;

	while ((c = TAILQ_FIRST(&broker.conns)) != NULL) {
		attach_release_all(c);
		pending_drop_conn(c->id);
		TAILQ_REMOVE(&broker.conns, c, entry);
		broker.nconns--;
		conn_free(c);
	}
}
