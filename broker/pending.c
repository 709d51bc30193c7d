/* SPDX-License-Identifier: MIT */
/*
 * pending.c - requests whose reply waits for a load, an unload or the
 * shutdown to finish.  A pending reply names its connection by id, so a
 * client that went away meanwhile is simply skipped.
 */
#include <stdlib.h>

#include "mbrokerd.h"

void
pending_add(struct pending_list *list, uint64_t conn_id, json_t *id)
{
	struct pending *p = calloc(1, sizeof *p);

	if (p == NULL) {
		log_warnx("out of memory: a deferred reply is lost");
		return;
	}
	p->conn_id = conn_id;
	p->id = json_incref(id);
	TAILQ_INSERT_TAIL(list, p, entry);
}

/* Sends to each pending request and empties the list. */
static void
pending_reply(struct pending_list *list, bool ok, int code, json_t *body,
	      const char *message)
{
	struct pending *p;

	while ((p = TAILQ_FIRST(list)) != NULL) {
		struct conn *c = conn_find(p->conn_id);

		TAILQ_REMOVE(list, p, entry);
		if (c != NULL && ok)
			reply_ok(c, p->id, json_incref(body), -1);
		else if (c != NULL)
			reply_error(c, p->id, code, json_incref(body), "%s",
				    message);
		json_decref(p->id);
		free(p);
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
