/* SPDX-License-Identifier: MIT */
/*
 * attach.c - attachments: which connection holds which model.  This is the
 * broker's own per-worker state that decides when an unload may finish:
 * a model is free when its count of attachments reaches zero, whatever the
 * semaphore says.  Each connection also counts what it holds per model
 * slot, so that the registry mirror and the pids holding a model cost one
 * look per connection, not one per attachment.
 */
#include <stdlib.h>

#include "mbrokerd.h"

/* Frees c's counts of attachments per model once it holds none. */
static void
attach_held_trim(struct conn *c)
{
	if (c->nattachments == 0) {
		free(c->held);
		c->held = NULL;
	}
}

struct attachment *
attach_add(struct conn *c, struct model *m)
{
	struct attachment *a;

	if (c->held == NULL &&
	    (c->held = calloc(BROKER_MAX_MODELS, sizeof *c->held)) == NULL)
		return NULL;
	if ((a = calloc(1, sizeof *a)) == NULL) {
		attach_held_trim(c);
		return NULL;
	}
	a->id = ++broker.next_attach_id;
	a->model = m;
	a->conn = c;
	TAILQ_INSERT_TAIL(&c->attachments, a, entry);
	c->nattachments++;
	m->nattached++;
	mirror_model_changed(m);
	if (c->held[m->slot]++ == 0)
		mirror_worker_changed(c);
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
	if (a->stranded != NULL && --a->stranded->holders == 0) {
		log_info("model %s: the last holder of its unlinked segment let "
			 "go; %llu bytes back to the budget", m->name,
			 (unsigned long long)a->stranded->bytes);
		segment_unreserve(a->stranded->bytes);
		free(a->stranded);
	}
	if (--c->held[m->slot] == 0)
		mirror_worker_changed(c);
	attach_held_trim(c);
	log_debug("model %s: released by pid %ld (attachment %llu), %u left",
		  m->name, (long)c->pid, (unsigned long long)a->id,
		  m->nattached);
	free(a);
	mirror_model_changed(m);
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

	TAILQ_FOREACH(c, &broker.conns, entry)
		if (c->held != NULL && c->held[m->slot] > 0)
			json_array_append_new(array, json_integer(c->pid));
}

unsigned
attach_orphans(const struct model *m)
{
	unsigned n = 0;
	struct conn *c;

	TAILQ_FOREACH(c, &broker.conns, entry)
		if (c->pid_exited && c->held != NULL && c->held[m->slot] > 0)
			n++;
	return n;
}

bool
attach_strand(struct model *m, uint64_t bytes)
{
	struct stranded *st;
	struct conn *c;
	struct attachment *a;

	if (m->nattached == 0 || (st = calloc(1, sizeof *st)) == NULL)
		return false;
	st->bytes = bytes;
	TAILQ_FOREACH(c, &broker.conns, entry) {
		if (c->held == NULL || c->held[m->slot] == 0)
			continue;
		TAILQ_FOREACH(a, &c->attachments, entry) {
			if (a->model == m && a->stranded == NULL) {
				a->stranded = st;
				st->holders++;
			}
		}
	}
	if (st->holders == 0) { /* all hold an older, stranded segment */
		free(st);
		return false;
	}
	return true;
}
