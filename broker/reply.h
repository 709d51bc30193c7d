/* SPDX-License-Identifier: MIT */
/*
 * reply.h - replies to a client's requests (reply.c): sent now, or owed
 * by an operation that ends later (a pending list is the reply object an
 * operation answers when it is done).
 */
#ifndef MBROKER_REPLY_H
#define MBROKER_REPLY_H

#include <stdbool.h>
#include <sys/queue.h>

#include <jansson.h>

struct conn;
struct pending;
TAILQ_HEAD(pending_list, pending);

/* Reply helpers; body and extra are taken (may be NULL). */
void reply_ok(struct conn *c, json_t *id, json_t *body, int pass_fd);
/* reply_ok with nfds descriptors (at most MB_FDS_PER_MESSAGE). */
void reply_ok_fds(struct conn *c, json_t *id, json_t *body, const int *fds,
		  unsigned nfds);
void reply_error(struct conn *c, json_t *id, int code, json_t *extra,
		 const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* Queues the reply to (c, id) on list; false after replying `limit` (c
 * has CONN_MAX_QUEUED waiting already) or `internal` (out of memory), in
 * which case the caller starts nothing. */
bool pending_add(struct pending_list *list, struct conn *c, json_t *id);
/* Replies ok with body to every pending request and empties the list;
 * takes the reference to body. */
void pending_reply_ok(struct pending_list *list, json_t *body);
/* Replies with an error to every pending request and empties the list;
 * takes the reference to extra (may be NULL). */
void pending_reply_error(struct pending_list *list, int code, json_t *extra,
			 const char *message);
/* Answers every pending request of list with answer(c, id, arg) and
 * empties it: for replies that are more than a body (an attach, with its
 * descriptor). */
void pending_answer(struct pending_list *list,
		    void (*answer)(struct conn *c, json_t *id, void *arg),
		    void *arg);
/* Moves every pending request of from to the end of to. */
void pending_move(struct pending_list *from, struct pending_list *to);
/* Drops every reply still owed to c (it went away). */
void pending_drop_conn(struct conn *c);

#endif /* MBROKER_REPLY_H */
