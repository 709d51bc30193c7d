/* SPDX-License-Identifier: MIT */
/*
 * attach.c - attachments: which connection holds which model.  This is the
 * broker's own per-worker state that decides when an unload may finish:
 * a model is free when its count of attachments reaches zero, whatever the
 * semaphore says.
 */
#include <stdlib.h>

#include "mbrokerd.h"

struct attachment *
attach_add(struct conn *c, struct model *m)
{
	struct attachment *a = calloc(1, sizeof *a);

	if (a == NULL)
		return NULL;
	a->id = ++broker.next_attach_id;
	a->model = m;
	a->conn = c;
	TAILQ_INSERT_TAIL(&c->attachments, a, entry);
	c->nattachments++;
	m->nattached++;
	mirror_schedule();
	return a;
}

void
attach_release(struct attachment *a)
{
	struct model *m = a->model;
	struct conn *c = a->conn;

	TAILQ_REMOVE(&c->attachments, a, entry);
	c->nattachments--;
	m->nattached--;
	log_debug("model %s: released by pid %ld (attachment %llu), %u left",
		  m->name, (long)c->pid, (unsigned long long)a->id,
		  m->nattached);
	free(a);
	mirror_schedule();
	if (m->state == MODEL_UNLOADING)
		unload_schedule();
}

void
attach_release_all(struct conn *c)
{
	struct attachment *a;

	while ((a = TAILQ_FIRST(&c->attachments)) != NULL)
		attach_release(a);
}

struct attachment *
attach_find(struct conn *c, uint64_t id)
{
	struct attachment *a;

	TAILQ_FOREACH(a, &c->attachments, entry)
		if (a->id == id)
			return a;
	return NULL;
}

void
attach_pids(const struct model *m, json_t *array)
{
	struct conn *c;
	struct attachment *a;

	TAILQ_FOREACH(c, &broker.conns, entry) {
		TAILQ_FOREACH(a, &c->attachments, entry) {
			if (a->model == m) {
				json_array_append_new(array,
						      json_integer(c->pid));
				break;
			}
		}
	}
}

unsigned
attach_orphans(const struct model *m)
{
	unsigned n = 0;
	struct conn *c;
	struct attachment *a;

	TAILQ_FOREACH(c, &broker.conns, entry) {
		if (!c->pid_exited)
			continue;
		TAILQ_FOREACH(a, &c->attachments, entry) {
			if (a->model == m) {
				n++;
				break;
			}
		}
	}
	return n;
}
