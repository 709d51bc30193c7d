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

#include <jansson.h>

#include "mbroker.h"
#include "wire.h"

/* The id of the acknowledgement message; requests count from 1. */
#define CLIENT_ACK_ID 0

/*
 * One mapping, published so that mb_ack can let it go from a signal
 * handler: mb_ack replaces it in place with zero pages (released), and
 * mb_detach or mb_close unmap whatever is there.
 */
struct client_slot {
	_Atomic(void *) addr;
	_Atomic size_t len;
	atomic_bool released;
};

struct client_event {
	struct client_event *next;
	struct mb_event ev;
};

struct mb_client {
	int fd;
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

/*
 * Connects and says hello with role ("worker", "admin").  0 or an error;
 * *out is a new client.  When the broker refused, its message goes to why
 * (which may be NULL).
 */
int client_connect(const char *path, const char *role, struct mb_client **out,
		   char *why, size_t whylen);

/*
 * Sends req (its "id" is set here) and waits for the reply with that id;
 * events that arrive meanwhile are queued.  *reply gets the reply (new
 * reference) and *fd a descriptor that came with it (or -1); either may be
 * NULL.  Returns 0 when the reply is ok, its error code when not (message
 * in last_error), or a transport error.
 */
int client_call(struct mb_client *c, json_t *req, json_t **reply, int *fd);

/* Frees an attachment handle whose mapping is already gone (attach.c). */
void attach_forget(struct mb_attachment *att);

#endif
