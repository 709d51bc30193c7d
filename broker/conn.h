/* SPDX-License-Identifier: MIT */
/*
 * conn.h - client connections (conn.c): framing, queued replies and the
 * descriptors passed with them, the peer's identity and rights, and the
 * bounds on what one client may make the broker hold.  The connection
 * layer knows nothing of models or requests: the layers above keep what a
 * connection holds behind `holder`, and get its messages and its end
 * through conn_set_handlers.
 */
#ifndef MBROKER_CONN_H
#define MBROKER_CONN_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/queue.h>
#include <sys/types.h>

#include <event2/event.h>
#include <jansson.h>

#include "mbrokerd.h"

struct outmsg {
	TAILQ_ENTRY(outmsg) entry;
	char *data;
	size_t len;
	int fds[MB_FDS_PER_MESSAGE]; /* its own duplicates */
	unsigned nfds;
};

/* A log budget: a burst of lines, then one line per interval. */
struct loglimit {
	int64_t credit_ms; /* an interval's worth per line allowed */
	int64_t last_ms;
	unsigned suppressed; /* lines not written since the last one */
};

struct pending;
struct lease_holder;

struct conn {
	TAILQ_ENTRY(conn) entry;
	uint64_t id;
	int fd;
	struct event *ev_read;
	struct event *ev_write;
	struct event *ev_pid;
	pid_t pid;
	bool pid_exited; /* the connection outlived its process (a fork) */
	uid_t uid;
	gid_t gid;
	int pidfd;
	unsigned rights; /* RIGHT_* this peer has */
	struct event *ev_idle; /* closes it if no hello comes in time */
	struct event *ev_end;  /* ends it once lost (conn_lost) */
	char lost_why[128];
	unsigned bad_requests;
	unsigned refusals;       /* requests refused, logged or not */
	unsigned refusals_muted; /* of which no line was written */
	struct loglimit refusal_log;
	const char *unsignalled; /* why it has no pidfd (no signals), or NULL */
	bool hello;
	bool lost;
	char role[16];
	struct lease_holder *holder;   /* what it holds (lease.c), or NULL */
	TAILQ_HEAD(, pending) owed;    /* replies that wait (reply.c) */
	unsigned npending;
	TAILQ_HEAD(, outmsg) outq;
	unsigned nqueued;
	size_t queued_bytes;  /* of the messages in outq */
	unsigned nfds_queued; /* descriptors held in outq */
	/* Descriptors sent but maybe unread: where each one's message ends,
	 * in bytes of sent_bytes (a ring, oldest at inflight_head).  Signed:
	 * sent_bytes - unread may be negative. */
	int64_t inflight[CONN_MAX_FDS];
	unsigned inflight_head, ninflight;
	int64_t sent_bytes; /* sent since the ring was last empty, at most */
};

/* Takes over an accepted descriptor.  0, or -1 (fd closed). */
int conn_accept(int fd);
struct conn *conn_find(uint64_t id);
/* Iteration in accept order: conn_next(NULL) is the oldest. */
struct conn *conn_next(const struct conn *c);
/* The connection accepted last, or NULL. */
struct conn *conn_newest(void);
unsigned conn_count(void);
/* What the layer above does with a connection: message handles each
 * request read from it; lost runs once when it ends (why is NULL when it
 * is closed at exit), so that what it held and was owed goes. */
struct conn_handlers {
	void (*message)(struct conn *c, const char *buf, size_t len);
	void (*lost)(struct conn *c, const char *why);
};
void conn_set_handlers(const struct conn_handlers *h);
/* Sends msg (and the nfds descriptors of fds, not taken; at most
 * MB_FDS_PER_MESSAGE) to c, queueing when c is slow.  Each descriptor
 * counts against CONN_MAX_FDS.  Returns 0, -EMSGSIZE when msg is over
 * WIRE_MAX_REPLY (nothing sent, c kept), or -EPIPE when c is lost. */
int conn_send(struct conn *c, const json_t *msg, const int *fds,
	      unsigned nfds);
/* Drops c: nothing more is read from it or sent to it (conn_send says
 * -EPIPE); after the current callback the lost handler runs and it is
 * freed, so a caller walking connections or holdings may lose one. */
void conn_lost(struct conn *c, const char *why);
/* Sends what is queued for every client, waiting at most timeout_ms. */
void conn_flush_all(int64_t timeout_ms);
void conn_close_all(void);
/* Counts a bad request of c and logs it within c's refusal budget. */
void conn_bad_request(struct conn *c, const char *why);
/* Logs a refusal of one of c's requests as a warning, unless c (or all
 * clients together) went over their budget of such lines: then it is
 * counted, and the next line written, and the one at close, say how many
 * were not. */
void conn_log_refusal(struct conn *c, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/* Marks c as past hello: its idle deadline is lifted. */
void conn_said_hello(struct conn *c);
/* Signals c's process through its pidfd; 0 or -errno (-ESRCH when the
 * process could not be identified at connect: it is never signalled). */
int conn_signal(struct conn *c, int sig);

#endif /* MBROKER_CONN_H */
