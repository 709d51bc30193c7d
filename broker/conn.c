/* SPDX-License-Identifier: MIT */
/*
 * conn.c - one client connection: who is on the other end (SO_PEERCRED and
 * a pidfd from peer.c, so signals never reach a recycled pid), reading its
 * messages, sending replies without ever blocking on a slow reader (and
 * without holding more than CONN_MAX_FDS descriptors it has not read),
 * logging its refusals within a budget, and losing it.  It knows nothing
 * of models: when a connection ends, the lost hook (request.c) releases
 * what it held and drops the replies it was owed.  A connection is freed
 * after the callback that lost it, never inside it.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/sockios.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/pidfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "mbrokerd.h"
#include "conn.h"
#include "reply.h"
#include "wire.h"

/* Messages read from one client per wake-up, so one cannot starve others. */
#define CONN_READ_BURST 64
/* Refusal lines: each client 5, then one every 10 s; all clients together
 * 100, then 10 a second. */
#define CONN_REFUSAL_BURST 5
#define CONN_REFUSAL_INTERVAL_MS 10000
#define CONN_REFUSALS_ALL_BURST 100
#define CONN_REFUSALS_ALL_INTERVAL_MS 100

static struct loglimit conn_refusals_all;
/* Lines about clients that will never be signalled: any client can cause
 * one per connection, so they get a budget as large as all clients'
 * refusals. */
static struct loglimit conn_unsignalled_all;

static char conn_buf[WIRE_MAX_REPLY + 1];

/* Every connection, in accept order. */
static TAILQ_HEAD(conn_head, conn) conn_list = TAILQ_HEAD_INITIALIZER(conn_list);
static unsigned conn_nconns;
static uint64_t conn_last_id;
static const struct conn_handlers *conn_handlers;

void
conn_set_handlers(const struct conn_handlers *h)
{
	conn_handlers = h;
}

struct conn *
conn_next(const struct conn *c)
{
	return c == NULL ? TAILQ_FIRST(&conn_list) : TAILQ_NEXT(c, entry);
}

struct conn *
conn_newest(void)
{
	return TAILQ_LAST(&conn_list, conn_head);
}

unsigned
conn_count(void)
{
	return conn_nconns;
}

struct conn *
conn_find(uint64_t id)
{
	struct conn *c;

	TAILQ_FOREACH(c, &conn_list, entry)
		if (c->id == id)
			return c;
	return NULL;
}

static void
conn_outmsg_free(struct outmsg *m)
{
	for (unsigned i = 0; i < m->nfds; i++)
		close(m->fds[i]);
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
	if (c->ev_end != NULL)
		event_free(c->ev_end);
	if (c->fd >= 0)
		close(c->fd);
	if (c->pidfd >= 0)
		close(c->pidfd);
	free(c);
}

/* Ends a lost connection, after the callback that lost it: the layer
 * above lets go of what it held and was owed, then it is freed.  Never
 * inside that callback, which may be walking the connections or their
 * holdings while it sends. */
static void
conn_end(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;

	(void)fd;
	(void)what;
	conn_handlers->lost(c, c->lost_why);
	TAILQ_REMOVE(&conn_list, c, entry);
	conn_nconns--;
	conn_free(c);
}

/*
 * Whether one more line fits in l: burst lines at first, then one per
 * interval_ms (a token bucket); when not, it is counted as suppressed.
 */
static bool
conn_loglimit_take(struct loglimit *l, unsigned burst, int64_t interval_ms)
{
	int64_t now = clock_monotonic_ms(), full = burst * interval_ms;

	l->credit_ms += now - l->last_ms;
	if (l->last_ms == 0 || l->credit_ms > full)
		l->credit_ms = full;
	l->last_ms = now;
	if (l->credit_ms >= interval_ms) {
		l->credit_ms -= interval_ms;
		return true;
	}
	l->suppressed++;
	return false;
}

void
conn_log_refusal(struct conn *c, const char *fmt, ...)
{
	char line[1024];
	unsigned mine, all;
	va_list ap;

	c->refusals++;
	if (!conn_loglimit_take(&c->refusal_log, CONN_REFUSAL_BURST,
				CONN_REFUSAL_INTERVAL_MS)) {
		c->refusals_muted++;
		return;
	}
	if (!conn_loglimit_take(&conn_refusals_all, CONN_REFUSALS_ALL_BURST,
				CONN_REFUSALS_ALL_INTERVAL_MS)) {
		c->refusals_muted++;
		c->refusal_log.suppressed++;
		return;
	}
	va_start(ap, fmt);
	vsnprintf(line, sizeof line, fmt, ap);
	va_end(ap);
	mine = c->refusal_log.suppressed;
	all = conn_refusals_all.suppressed;
	c->refusal_log.suppressed = conn_refusals_all.suppressed = 0;
	if (mine == 0 && all == 0)
		log_warnx("%s", line);
	else
		log_warnx("%s (not logged since the last line: %u refusal(s) "
			  "of this client, %u line(s) of all clients)", line,
			  mine, all);
}

void
conn_lost(struct conn *c, const char *why)
{
	if (c->lost)
		return;
	c->lost = true;
	if (c->refusals_muted > 0 &&
	    conn_loglimit_take(&conn_refusals_all, CONN_REFUSALS_ALL_BURST,
			       CONN_REFUSALS_ALL_INTERVAL_MS))
		log_warnx("pid %ld (uid %ld, conn %llu) gone after %u refused "
			  "request(s), %u of them not logged", (long)c->pid,
			  (long)c->uid, (unsigned long long)c->id, c->refusals,
			  c->refusals_muted);
	snprintf(c->lost_why, sizeof c->lost_why, "%s", why);
	event_del(c->ev_read);
	event_del(c->ev_write);
	if (c->ev_pid != NULL)
		event_del(c->ev_pid);
	if (c->ev_idle != NULL)
		event_del(c->ev_idle);
	event_active(c->ev_end, EV_TIMEOUT, 0);
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
		conn_handlers->message(c, conn_buf, (size_t)n);
	}
}

/* Bytes sent to c's client that it has not read yet (SIOCOUTQ), or -1. */
static int64_t
conn_unread(const struct conn *c)
{
	int n;

	return ioctl(c->fd, SIOCOUTQ, &n) < 0 ? -1 : n;
}

/*
 * Forgets the descriptors c's client has read.  It reads in order, so a
 * message is read once the unread bytes are fewer than those sent after
 * it.  sent_bytes only ever grows by less than was really sent (a reader
 * racing the measure makes it smaller), so a descriptor still unread is
 * never taken for read; at worst one read is counted a little longer.
 */
static void
conn_inflight_update(struct conn *c)
{
	int64_t unread;

	if (c->ninflight == 0 || (unread = conn_unread(c)) < 0)
		return;
	while (c->ninflight > 0 &&
	       c->inflight[c->inflight_head] <= c->sent_bytes - unread) {
		c->inflight_head = (c->inflight_head + 1) % CONN_MAX_FDS;
		c->ninflight--;
	}
}

/* Sends one message to c's client without blocking, and remembers each
 * descriptor it carries until the client has read it.  0 or -errno. */
static int
conn_transmit(struct conn *c, const char *data, size_t len, const int *fds,
	      unsigned nfds)
{
	bool track = nfds > 0 || c->ninflight > 0;
	int64_t before = track ? conn_unread(c) : -1, after;
	int r = wire_send_fds(c->fd, data, len, fds, nfds, MSG_DONTWAIT);

	if (r < 0 || !track)
		return r;
	after = conn_unread(c);
	if (c->ninflight == 0)
		c->sent_bytes = 0;
	if (before >= 0 && after > before)
		c->sent_bytes += after - before;
	for (unsigned i = 0; i < nfds; i++)
		c->inflight[(c->inflight_head + c->ninflight++) % CONN_MAX_FDS] =
			c->sent_bytes;
	return 0;
}

/* Whether c's client would have more than CONN_MAX_FDS descriptors
 * unread, queued here or in flight in its socket, with nfds more: it may
 * not be sent them. */
static bool
conn_fds_full(struct conn *c, unsigned nfds)
{
	conn_inflight_update(c);
	return c->nfds_queued + c->ninflight + nfds > CONN_MAX_FDS;
}

/* Sends the head of the queue until it is empty or the socket is full. */
static int
conn_drain(struct conn *c)
{
	struct outmsg *m;

	while ((m = TAILQ_FIRST(&c->outq)) != NULL) {
		int r = conn_transmit(c, m->data, m->len, m->fds, m->nfds);

		if (r == -EAGAIN)
			return event_add(c->ev_write, NULL) < 0 ? -EIO : 0;
		if (r < 0)
			return r;
		TAILQ_REMOVE(&c->outq, m, entry);
		c->nqueued--;
		c->queued_bytes -= m->len;
		c->nfds_queued -= m->nfds;
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
conn_send(struct conn *c, const json_t *msg, const int *fds, unsigned nfds)
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
	if (m->len > WIRE_MAX_REPLY) {
		log_warnx("pid %ld: a %zu-byte message is over the %d-byte "
			  "limit; not sent", (long)c->pid, m->len,
			  WIRE_MAX_REPLY);
		conn_outmsg_free(m);
		return -EMSGSIZE;
	}
	if (nfds > 0 && conn_fds_full(c, nfds)) {
		log_warnx("pid %ld (uid %ld): %u descriptors unread, queued or "
			  "in flight; dropping the client (%u more would pass "
			  "%d)", (long)c->pid, (long)c->uid,
			  c->nfds_queued + c->ninflight, nfds, CONN_MAX_FDS);
		conn_outmsg_free(m);
		conn_lost(c, "client does not read its attach replies");
		return -EPIPE;
	}
	if (TAILQ_EMPTY(&c->outq)) {
		r = conn_transmit(c, m->data, m->len, fds, nfds);
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
	if (c->queued_bytes + m->len > CONN_MAX_QUEUED_BYTES) {
		log_warnx("pid %ld (uid %ld): %zu KiB of replies unread; "
			  "dropping the client", (long)c->pid, (long)c->uid,
			  (c->queued_bytes + m->len) / 1024);
		conn_outmsg_free(m);
		conn_lost(c, "client does not read its replies");
		return -EPIPE;
	}
	for (; m->nfds < nfds; m->nfds++) {
		if ((m->fds[m->nfds] = fcntl(fds[m->nfds], F_DUPFD_CLOEXEC,
					     0)) < 0) {
			conn_outmsg_free(m);
			conn_lost(c, "out of descriptors");
			return -EPIPE;
		}
	}
	TAILQ_INSERT_TAIL(&c->outq, m, entry);
	c->nqueued++;
	c->queued_bytes += m->len;
	c->nfds_queued += m->nfds;
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
	c->pidfd = peer_pidfd(c->fd, c->pid, c->uid, &c->unsignalled);
	if (c->pidfd < 0 &&
	    conn_loglimit_take(&conn_unsignalled_all, CONN_REFUSALS_ALL_BURST,
			       CONN_REFUSALS_ALL_INTERVAL_MS)) {
		char muted[64] = "";

		if (conn_unsignalled_all.suppressed > 0)
			snprintf(muted, sizeof muted, " (%u such line(s) not "
				 "logged since the last)",
				 conn_unsignalled_all.suppressed);
		log_info("client pid %ld (uid %ld, conn %llu) will not be "
			 "signalled, only told on its socket: %s%s",
			 (long)c->pid, (long)c->uid, (unsigned long long)c->id,
			 c->unsignalled, muted);
		conn_unsignalled_all.suppressed = 0;
	}
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
	conn_log_refusal(c, "pid %ld (uid %ld): bad request #%u: %s",
			 (long)c->pid, (long)c->uid, ++c->bad_requests, why);
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
	conn_log_refusal(c, "pid %ld (uid %ld): no hello within %.1f s; "
			 "closing", (long)c->pid, (long)c->uid,
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

	if (conn_nconns >= broker.cfg.max_conns) {
		conn_refuse(fd);
		return -1;
	}
	if ((c = calloc(1, sizeof *c)) == NULL) {
		close(fd);
		return -1;
	}
	c->id = ++conn_last_id;
	c->fd = fd;
	c->pidfd = -1;
	strcpy(c->role, "client");
	TAILQ_INIT(&c->owed);
	TAILQ_INIT(&c->outq);
	conn_identify(c);
	c->ev_read = event_new(broker.base, fd, EV_READ | EV_PERSIST, conn_read,
			       c);
	c->ev_write = event_new(broker.base, fd, EV_WRITE, conn_write, c);
	if (c->pidfd >= 0)
		c->ev_pid = event_new(broker.base, c->pidfd, EV_READ,
				      conn_pid_exit, c);
	c->ev_idle = evtimer_new(broker.base, conn_idle, c);
	c->ev_end = event_new(broker.base, -1, 0, conn_end, c);
	if (c->ev_read == NULL || c->ev_write == NULL || c->ev_idle == NULL ||
	    c->ev_end == NULL ||
	    evtimer_add(c->ev_idle, &idle) < 0 ||
	    event_add(c->ev_read, NULL) < 0 ||
	    (c->ev_pid != NULL && event_add(c->ev_pid, NULL) < 0)) {
		conn_free(c);
		return -1;
	}
	TAILQ_INSERT_TAIL(&conn_list, c, entry);
	conn_nconns++;
	log_debug("client pid %ld uid %ld connected (conn %llu)", (long)c->pid,
		  (long)c->uid, (unsigned long long)c->id);
	return 0;
}

int
conn_signal(struct conn *c, int sig)
{
	struct pollfd p = {.fd = c->pidfd, .events = POLLIN};

	if (c->pidfd < 0) {
		log_info("pid %ld (conn %llu) not signalled: %s", (long)c->pid,
			 (unsigned long long)c->id, c->unsignalled);
		errno = ESRCH;
		return -ESRCH;
	}
	if (pidfd_send_signal(c->pidfd, sig, NULL, 0) == 0)
		return 0;
	if (errno != ENOSYS)
		return -errno;
	/* A pidfd without pidfd_send_signal (valgrind emulates one, not the
	 * other): the pid, only while the pidfd says its process lives. */
	if (poll(&p, 1, 0) != 0) {
		errno = ESRCH;
		return -ESRCH;
	}
	return kill(c->pid, sig) < 0 ? -errno : 0;
}

void
conn_flush_all(int64_t timeout_ms)
{
	int64_t deadline = clock_monotonic_ms() + timeout_ms;
	struct conn *c;

	TAILQ_FOREACH(c, &conn_list, entry) {
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

	while ((c = TAILQ_FIRST(&conn_list)) != NULL) {
		conn_handlers->lost(c, NULL);
		TAILQ_REMOVE(&conn_list, c, entry);
		conn_nconns--;
		conn_free(c);
	}
}
