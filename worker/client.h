/* SPDX-License-Identifier: MIT */
/*
 * client.h - libmbroker's internal view of a client, shared by client.c
 * (connection, requests, events) and attach.c (mappings and mb_ack).
 */
#ifndef MB_WORKER_CLIENT_H
#define MB_WORKER_CLIENT_H

#include <semaphore.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "clock.h"
#include "mbroker.h"
#include "wire.h"

/* The id of the acknowledgement message; requests count from 1. */
#define CLIENT_ACK_ID 0

/*
 * One attachment's mappings, published so that mb_ack can let them go
 * from a signal handler: mb_ack replaces them in place with zero pages
 * (released) and closes the kept descriptors, and mb_detach or mb_close
 * unmap whatever is there.
 */
struct client_slot {
	_Atomic(void *) addr;
	_Atomic size_t len;
	atomic_bool released;
	_Atomic(struct attach_keep *) keep; /* what mb_ack also lets go of */
};

/* The descriptors that came with one message. */
struct client_fds {
	size_t count;
	int fd[MB_FDS_PER_MESSAGE];
};

struct attach_keep;

struct client_event {
	struct client_event *next;
	struct mb_event ev;
};

/*
 * fd is the connection (non-blocking: every wait is a poll with a
 * deadline); pending an eventfd that is readable exactly while the event
 * queue is not empty; epfd, what mb_event_fd returns, watches both, so it
 * polls readable whether an event waits in the socket or in the queue.
 */
struct mb_client {
	int fd;
	int pending;
	int epfd;
	int timeout_ms; /* each round trip; -1: no bound (mb_set_timeout) */
	sem_t *sem;
	int64_t next_id;
	bool lost;
	bool lost_reported;
	atomic_uint ack_count;
	char ack_msg[48];
	size_t ack_len;
	char last_error[512];
	struct client_slot slots[MB_MAX_ATTACHMENTS];
	struct mb_attachment *atts[MB_MAX_ATTACHMENTS];
	struct client_event *events, *events_tail;
	char buf[WIRE_MAX_REPLY + 1];
};

/* What to expect of the connection: see mb_connect_ex. */
struct client_params {
	const char *path;    /* NULL: mb_default_socket_path */
	const char *role;    /* "worker", "admin" */
	int64_t broker_uid;  /* -1: $MBROKER_BROKER_UID, else ours or root */
	int timeout_ms;      /* connect and hello; -1: no bound */
};

/*
 * Connects, checks who serves the socket and says hello.  0 or an error;
 * *out is a new client.  When the broker refused or is not who was
 * expected, the reason goes to why (which may be NULL).
 */
int client_connect(const struct client_params *p, struct mb_client **out,
		   char *why, size_t whylen);

/* The absolute CLOCK_MONOTONIC deadline (ms) timeout_ms from now; -1 for a
 * negative timeout (no deadline). */
int64_t client_deadline(int timeout_ms);

/*
 * Sends req with a new "id" (set here), waiting for room until deadline.
 * Returns the id (> 0), or MB_ELOST, MB_ELIMIT, -ETIMEDOUT or -errno.
 */
int64_t client_send(struct mb_client *c, json_t *req, int64_t deadline);

/* Closes every descriptor of fds and empties it. */
void client_fds_close(struct client_fds *fds);

/*
 * Waits until deadline (-1: forever) for the reply to request id; events
 * that arrive meanwhile are queued.  *reply gets the reply (new reference)
 * and *fds the descriptors that came with it (the caller's to close);
 * either may be NULL.
 * Returns 0 when the reply is ok, its error code when not (message in
 * last_error), -ETIMEDOUT when the deadline passed first (the request
 * stays outstanding: wait again, or its late reply is dropped), or a
 * transport error.
 */
int client_wait(struct mb_client *c, int64_t id, int64_t deadline,
		json_t **reply, struct client_fds *fds);

/* client_send then client_wait, bounded by deadline. */
int client_call_until(struct mb_client *c, json_t *req, int64_t deadline,
		      json_t **reply, struct client_fds *fds);
/* The same, bounded by the client's timeout_ms. */
int client_call(struct mb_client *c, json_t *req, json_t **reply,
		struct client_fds *fds);

/* Frees an attachment handle whose mapping is already gone, closing its
 * kept descriptors (attach.c). */
void attach_forget(struct mb_attachment *att);

#endif
