/* SPDX-License-Identifier: MIT */
/*
 * attach.c - libmbroker's attachments: the read-only mapping of a model's
 * segment from the descriptor the broker passed, its tensors, detach, the
 * move to a replacing generation, and mb_ack.  Each mapping is published
 * in a slot with atomics so that mb_ack, which may run in a signal handler
 * at any moment, lets each go exactly once and never one that is half set
 * up.  It does not unmap: it maps zero pages over the segment (MAP_FIXED),
 * so the shared pages are let go at once while code it interrupted
 * mid-read reads zeros instead of faulting; mb_detach and mb_close unmap
 * what is left.
 */
#include <errno.h>
#include <poll.h>
#include <semaphore.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "client.h"
#include "safetensors.h"

/* mb_attach_wait asks again after 5 ms, then twice as late each time, up
 * to every 100 ms. */
#define ATTACH_WAIT_FIRST_MS 5
#define ATTACH_WAIT_MAX_MS 100

struct mb_attachment {
	struct mb_client *client;
	int slot;
	uint64_t id;
	char name[MB_NAME_MAX + 1];
	char format[16];
	uint64_t generation;
	uint64_t checksum;
	size_t size;
	const unsigned char *data;
	struct st_table *tensors;
};

static int
attach_free_slot(const struct mb_client *c)
{
	for (int i = 0; i < MB_MAX_ATTACHMENTS; i++)
		if (c->atts[i] == NULL &&
		    atomic_load(&c->slots[i].addr) == NULL)
			return i;
	return -1;
}

/* Tells the broker an attachment is released; errors are only returned. */
static int
attach_notify_detach(struct mb_client *c, uint64_t id)
{
	json_t *req = json_pack("{s:s, s:I}", "op", "detach", "attachment",
				(json_int_t)id);
	int r;

	if (req == NULL)
		return -ENOMEM;
	r = client_call(c, req, NULL, NULL);
	json_decref(req);
	return r == MB_ENOTATTACHED ? 0 : r;
}

/* Fills att from the attach reply; 0 or MB_EPROTOCOL. */
static int
attach_parse_reply(struct mb_attachment *att, const json_t *reply)
{
	const char *name, *format, *sum;
	json_int_t id, gen, size;

	if (json_unpack((json_t *)(uintptr_t)reply,
			"{s:I, s:s, s:s, s:I, s:I, s:s}", "attachment", &id,
			"name", &name, "format", &format, "generation", &gen,
			"size", &size, "checksum", &sum) < 0 ||
	    size <= 0 || strlen(name) > MB_NAME_MAX ||
	    strlen(format) >= sizeof att->format)
		return MB_EPROTOCOL;
	att->id = (uint64_t)id;
	att->generation = (uint64_t)gen;
	att->size = (size_t)size;
	att->checksum = strtoull(sum, NULL, 16);
	strcpy(att->name, name);
	strcpy(att->format, format);
	return 0;
}

/* Maps fd read-only after checking it is the size the broker said. */
static int
attach_map(struct mb_attachment *att, int fd)
{
	struct stat st;
	void *p;

	if (fstat(fd, &st) < 0)
		return -errno;
	if ((uint64_t)st.st_size != att->size)
		return MB_EPROTOCOL;
	p = mmap(NULL, att->size, PROT_READ, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED)
		return -errno;
	att->data = p;
	return 0;
}

/* Attaches name with one round trip that ends by deadline (-1: none). */
static int
attach_once(struct mb_client *c, const char *name, int64_t deadline,
	    struct mb_attachment **out)
{
	struct mb_attachment *att;
	json_t *req, *reply = NULL;
	unsigned acks;
	int fd = -1, r, slot;
	int64_t id;

	*out = NULL;
	if ((slot = attach_free_slot(c)) < 0)
		return MB_ELIMIT;
	if ((att = calloc(1, sizeof *att)) == NULL)
		return -ENOMEM;
	att->client = c;
	att->slot = slot;
	if ((req = json_pack("{s:s, s:s}", "op", "attach", "name", name)) ==
	    NULL) {
		free(att);
		return -ENOMEM;
	}
	acks = atomic_load(&c->ack_count);
	id = client_send(c, req, deadline);
	json_decref(req);
	r = id < 0 ? (int)id : client_wait(c, id, deadline, &reply, &fd);
	if (r == 0 && (r = attach_parse_reply(att, reply)) == 0 && fd < 0)
		r = MB_EPROTOCOL;
	json_decref(reply);
	if (r == 0)
		r = attach_map(att, fd);
	if (fd >= 0)
		close(fd);
	if (r == 0 && strcmp(att->format, "safetensors") == 0) {
		char err[256];

		r = st_parse(att->data, att->size, att->size, &att->tensors,
			     err, sizeof err);
		if (r < 0)
			snprintf(c->last_error, sizeof c->last_error, "%s", err);
	}
	if (r < 0) {
		if (att->data != NULL)
			munmap((void *)(uintptr_t)att->data, att->size);
		if (att->id != 0)
			attach_notify_detach(c, att->id);
		st_table_free(att->tensors);
		free(att);
		return r;
	}
	atomic_store(&c->slots[slot].len, att->size);
	atomic_store(&c->slots[slot].released, false);
	atomic_store(&c->slots[slot].addr, (void *)(uintptr_t)att->data);
	c->atts[slot] = att;
	if (atomic_load(&c->ack_count) != acks) {
		/* mb_ack ran meanwhile: whatever it missed is undone here. */
		void *p = atomic_exchange(&c->slots[slot].addr, NULL);

		atomic_store(&c->slots[slot].released, false);
		if (p != NULL)
			munmap(p, att->size);
		attach_notify_detach(c, att->id);
		attach_forget(att);
		return -ECANCELED;
	}
	*out = att;
	return 0;
}

int
mb_attach(struct mb_client *c, const char *name, struct mb_attachment **out)
{
	return attach_once(c, name, client_deadline(c->timeout_ms), out);
}

/* The deadline of one try: the caller's or the client's bound per round
 * trip, whichever comes first. */
static int64_t
attach_try_deadline(const struct mb_client *c, int64_t deadline)
{
	int64_t each = client_deadline(c->timeout_ms);

	return each < 0 || (deadline >= 0 && deadline < each) ? deadline : each;
}

int
mb_attach_wait(struct mb_client *c, const char *name, int timeout_ms,
	       struct mb_attachment **out)
{
	int64_t deadline = client_deadline(timeout_ms), left;
	int step = ATTACH_WAIT_FIRST_MS, r;

	while ((r = attach_once(c, name, attach_try_deadline(c, deadline),
				out)) == MB_ENOTREADY || r == MB_ENOMODEL) {
		left = deadline < 0 ? step : deadline - clock_monotonic_ms();
		if (left < 0)
			left = 0;
		poll(NULL, 0, left < step ? (int)left : step);
		/* Time is up: the last refusal says why. */
		if (left <= step && deadline >= 0)
			break;
		step = step * 2 > ATTACH_WAIT_MAX_MS ? ATTACH_WAIT_MAX_MS
						     : step * 2;
	}
	return r;
}

void
attach_forget(struct mb_attachment *att)
{
	att->client->atts[att->slot] = NULL;
	st_table_free(att->tensors);
	free(att);
}

int
mb_detach(struct mb_attachment *att)
{
	struct mb_client *c;
	bool released;
	void *p;
	int r = 0;

	if (att == NULL)
		return 0;
	c = att->client;
	p = atomic_exchange(&c->slots[att->slot].addr, NULL);
	released = atomic_exchange(&c->slots[att->slot].released, false);
	if (p != NULL) {
		munmap(p, att->size);
		/* Not acked: the broker has not heard of its release. */
		if (!released)
			r = attach_notify_detach(c, att->id);
	}
	attach_forget(att);
	return r;
}

int
mb_follow_replace(struct mb_client *c, struct mb_attachment **att,
		  const struct mb_event *ev)
{
	struct mb_attachment *next;
	int r;

	if (ev->type != MB_EVENT_REPLACED || *att == NULL ||
	    strcmp((*att)->name, ev->model) != 0 ||
	    (*att)->generation >= ev->generation)
		return 0;
	if ((r = mb_attach(c, ev->model, &next)) < 0)
		return r;
	/* The new one is held: letting go of the old leaves no gap.  A
	 * notification that fails is the broker's to clean up (the drain
	 * deadline, or the connection closing). */
	(void)mb_detach(*att);
	*att = next;
	return 0;
}

int
mb_ack(struct mb_client *c)
{
	int saved = errno, r = 0;

	atomic_fetch_add(&c->ack_count, 1);
	for (int i = 0; i < MB_MAX_ATTACHMENTS; i++) {
		struct client_slot *s = &c->slots[i];
		void *p = atomic_load(&s->addr);

		/* Zero pages over the segment: its pages are let go now, and
		 * a read this interrupted goes on harmlessly. */
		if (p != NULL && !atomic_exchange(&s->released, true) &&
		    mmap(p, atomic_load(&s->len), PROT_READ,
			 MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS, -1, 0) ==
			    MAP_FAILED)
			munmap(p, atomic_load(&s->len));
	}
	if (send(c->fd, c->ack_msg, c->ack_len, MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
		r = -errno;
	if (c->sem != SEM_FAILED)
		sem_post(c->sem);
	errno = saved;
	return r;
}

const void *
mb_attachment_data(const struct mb_attachment *att)
{
	return att->data;
}

size_t
mb_attachment_size(const struct mb_attachment *att)
{
	return att->size;
}

const char *
mb_attachment_name(const struct mb_attachment *att)
{
	return att->name;
}

const char *
mb_attachment_format(const struct mb_attachment *att)
{
	return att->format;
}

uint64_t
mb_attachment_generation(const struct mb_attachment *att)
{
	return att->generation;
}

uint64_t
mb_attachment_checksum(const struct mb_attachment *att)
{
	return att->checksum;
}

size_t
mb_tensor_count(const struct mb_attachment *att)
{
	return att->tensors != NULL ? att->tensors->count : 0;
}

static void
attach_tensor_fill(const struct mb_attachment *att, const struct st_tensor *t,
		   struct mb_tensor *out)
{
	out->name = t->name;
	out->dtype = t->dtype;
	out->ndim = t->ndim;
	memcpy(out->shape, t->shape, sizeof out->shape);
	out->data = att->data + t->offset;
	out->nbytes = (size_t)t->nbytes;
}

int
mb_tensor_at(const struct mb_attachment *att, size_t index,
	     struct mb_tensor *out)
{
	if (att->tensors == NULL || index >= att->tensors->count)
		return MB_ENOTENSOR;
	attach_tensor_fill(att, &att->tensors->tensors[index], out);
	return 0;
}

int
mb_tensor_find(const struct mb_attachment *att, const char *name,
	       struct mb_tensor *out)
{
	const struct st_tensor *t;

	if (att->tensors == NULL || (t = st_table_find(att->tensors, name)) ==
						   NULL)
		return MB_ENOTENSOR;
	attach_tensor_fill(att, t, out);
	return 0;
}
