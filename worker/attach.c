/* SPDX-License-Identifier: MIT */
/*
 * attach.c - libmbroker's attachments: the attach round trip (and, for a
 * bundle, the members pages that bring the rest of its descriptors, 8 to
 * a message), detach, the move to a replacing generation, and mb_ack.
 * Each attachment's mappings (member.c) sit in one region published in a
 * slot with atomics, so that mb_ack, which may run in a signal handler at
 * any moment, lets each go exactly once and never one that is half set
 * up.  It does not unmap: it maps zero pages over the region (MAP_FIXED),
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
#include <unistd.h>

#include "attach.h"
#include "client.h"
#include "names.h"

/* mb_attach_wait asks again after 5 ms, then twice as late each time, up
 * to every 100 ms. */
#define ATTACH_WAIT_FIRST_MS 5
#define ATTACH_WAIT_MAX_MS 100

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

/* Whether a bundle member's name is a path that stays inside the
 * bundle: relative, no empty, "." or ".." component, no control byte. */
static bool
attach_member_name_valid(const char *name)
{
	size_t len = strlen(name);

	if (len == 0 || len > ATTACH_MEMBER_NAME_MAX || name[0] == '/' ||
	    name[len - 1] == '/' || strstr(name, "//") != NULL)
		return false;
	for (const char *p = name; *p != '\0'; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			return false;
	for (const char *part = name; part != NULL;
	     part = strchr(part, '/')) {
		part += *part == '/';
		if (strncmp(part, ".", 2) == 0 || strncmp(part, "./", 2) == 0 ||
		    strncmp(part, "..", 3) == 0 || strncmp(part, "../", 3) == 0)
			return false;
	}
	return true;
}

/* Room for count members, each without a descriptor yet. */
static int
attach_members_new(struct mb_attachment *att, size_t count)
{
	att->members = calloc(count, sizeof *att->members);
	att->keep.fds = calloc(count, sizeof *att->keep.fds);
	if (att->members == NULL || att->keep.fds == NULL)
		return -ENOMEM;
	att->count = att->keep.count = count;
	for (size_t i = 0; i < count; i++)
		atomic_init(&att->keep.fds[i], -1);
	return 0;
}

/* Fills a bundle's members from the reply's "members"; 0, MB_EPROTOCOL
 * or -ENOMEM. */
static int
attach_parse_members(struct mb_attachment *att, const json_t *members)
{
	size_t total = 0, i;
	const json_t *m;
	int r;

	if (!json_is_array(members) || json_array_size(members) == 0 ||
	    json_array_size(members) > MB_MAX_MEMBERS)
		return MB_EPROTOCOL;
	if ((r = attach_members_new(att, json_array_size(members))) < 0)
		return r;
	json_array_foreach(members, i, m) {
		struct attach_member *am = &att->members[i];
		const char *name, *format, *sum;
		json_int_t size;

		if (json_unpack((json_t *)(uintptr_t)m, "{s:s, s:s, s:I, s:s}",
				"name", &name, "format", &format, "size",
				&size, "checksum", &sum) < 0 ||
		    !attach_member_name_valid(name) || size < 0 ||
		    strlen(format) >= sizeof am->format ||
		    (i > 0 && strcmp(att->members[i - 1].name, name) >= 0))
			return MB_EPROTOCOL;
		if ((am->name = strdup(name)) == NULL)
			return -ENOMEM;
		strcpy(am->format, format);
		am->size = (size_t)size;
		am->checksum = strtoull(sum, NULL, 16);
		total += am->size;
	}
	return total == att->size ? 0 : MB_EPROTOCOL;
}

/* Fills att from the attach reply; 0, MB_EPROTOCOL or -ENOMEM.  The
 * model's name must be one (no slash, not "." or ".."): a single file's
 * link in mb_member_dir is named after it. */
static int
attach_parse_reply(struct mb_attachment *att, const json_t *reply)
{
	const json_t *members = json_object_get(reply, "members");
	const char *name, *format, *sum;
	json_int_t id, gen, size;

	if (json_unpack((json_t *)(uintptr_t)reply,
			"{s:I, s:s, s:s, s:I, s:I, s:s}", "attachment", &id,
			"name", &name, "format", &format, "generation", &gen,
			"size", &size, "checksum", &sum) < 0 ||
	    size < (members != NULL ? 0 : 1) || !names_model_valid(name) ||
	    strlen(format) >= sizeof att->format)
		return MB_EPROTOCOL;
	att->id = (uint64_t)id;
	att->generation = (uint64_t)gen;
	att->size = (size_t)size;
	att->checksum = strtoull(sum, NULL, 16);
	strcpy(att->name, name);
	strcpy(att->format, format);
	if (members != NULL) {
		att->bundle = true;
		return attach_parse_members(att, members);
	}
	/* A single file is a bundle of one member named after the model. */
	if (attach_members_new(att, 1) < 0 ||
	    (att->members[0].name = strdup(name)) == NULL)
		return -ENOMEM;
	strcpy(att->members[0].format, format);
	att->members[0].size = att->size;
	att->members[0].checksum = att->checksum;
	return 0;
}

/*
 * Takes the descriptors of members from.. that came with a message saying
 * it carries count of them (those of a single file's reply: the first).
 * 0 or MB_EPROTOCOL; what is not taken stays in fds for the caller to
 * close.
 */
static int
attach_take_fds(struct mb_attachment *att, size_t from, json_int_t count,
		struct client_fds *fds)
{
	if (!att->bundle)
		count = fds->count > 0 ? 1 : 0;
	if (count < 1 || (size_t)count != (att->bundle ? fds->count : 1) ||
	    from + (size_t)count > att->count ||
	    atomic_load(&att->keep.fds[from]) >= 0)
		return MB_EPROTOCOL;
	for (size_t i = 0; i < (size_t)count; i++)
		atomic_store(&att->keep.fds[from + i], fds->fd[i]);
	memmove(fds->fd, fds->fd + count,
		(fds->count - (size_t)count) * sizeof *fds->fd);
	fds->count -= (size_t)count;
	return 0;
}

/* The descriptors of a bundle's reply: {"from":0,"count":K}. */
static int
attach_take_first(struct mb_attachment *att, const json_t *reply,
		  struct client_fds *fds)
{
	json_int_t from = -1, count = 0;

	if (att->bundle &&
	    json_unpack((json_t *)(uintptr_t)reply, "{s:{s:I, s:I}}",
			"descriptors", "from", &from, "count", &count) < 0)
		return MB_EPROTOCOL;
	if (att->bundle && from != 0)
		return MB_EPROTOCOL;
	return attach_take_fds(att, 0, count, fds);
}

/*
 * Asks for the descriptors of members from..from+7 (the members op) and
 * takes them.  Returns how many came (> 0) or an error.
 */
static int
attach_fetch_page(struct mb_client *c, struct mb_attachment *att,
		  size_t from, int64_t deadline)
{
	json_t *req = json_pack("{s:s, s:I, s:I}", "op", "members",
				"attachment", (json_int_t)att->id, "from",
				(json_int_t)from);
	json_t *reply = NULL;
	struct client_fds fds = {.count = 0};
	json_int_t got_id, got_from, count;
	int r;

	if (req == NULL)
		return -ENOMEM;
	r = client_call_until(c, req, deadline, &reply, &fds);
	json_decref(req);
	if (r == 0 &&
	    (json_unpack(reply, "{s:I, s:I, s:I}", "attachment", &got_id,
			 "from", &got_from, "count", &count) < 0 ||
	     (uint64_t)got_id != att->id || got_from != (json_int_t)from))
		r = MB_EPROTOCOL;
	if (r == 0)
		r = attach_take_fds(att, from, count, &fds);
	client_fds_close(&fds);
	json_decref(reply);
	return r < 0 ? r : (int)count;
}

/* Fetches every bundle member's descriptor beyond the first message's. */
static int
attach_fetch_pages(struct mb_client *c, struct mb_attachment *att,
		   int64_t deadline)
{
	size_t from = 0;
	int r;

	while (from < att->count && atomic_load(&att->keep.fds[from]) >= 0)
		from++;
	while (from < att->count) {
		if ((r = attach_fetch_page(c, att, from, deadline)) < 0)
			return r;
		from += (size_t)r;
	}
	return 0;
}

/* Frees an attachment that was never published, handing it back to the
 * broker when it granted one. */
static void
attach_discard(struct mb_client *c, struct mb_attachment *att)
{
	char why[sizeof c->last_error];

	if (att->region != NULL)
		munmap(att->region, att->region_len);
	/* The reason the attach failed outlives the detach's round trip. */
	memcpy(why, c->last_error, sizeof why);
	if (att->id != 0)
		attach_notify_detach(c, att->id);
	memcpy(c->last_error, why, sizeof why);
	tensor_free(att);
	member_free(att);
	free(att);
}

/* The descriptors of the reply to attach request id, every page of them,
 * and the mappings, tensors and kept descriptors they give. */
static int
attach_receive(struct mb_client *c, struct mb_attachment *att, int64_t id,
	       int64_t deadline)
{
	struct client_fds fds = {.count = 0};
	json_t *reply = NULL;
	char err[256];
	int r;

	r = client_wait(c, id, deadline, &reply, &fds);
	if (r == 0)
		r = attach_parse_reply(att, reply);
	if (r == 0)
		r = attach_take_first(att, reply, &fds);
	client_fds_close(&fds);
	json_decref(reply);
	if (r == 0)
		r = attach_fetch_pages(c, att, deadline);
	if (r == 0)
		r = member_map(att);
	if (r == 0 && !(att->flags & MB_ATTACH_KEEP_FDS))
		member_let_go(&att->keep);
	if (r == 0 && (r = tensor_load(att, err, sizeof err)) < 0)
		snprintf(c->last_error, sizeof c->last_error, "%s", err);
	return r;
}

/* Attaches name with round trips that end by deadline (-1: none). */
static int
attach_once(struct mb_client *c, const char *name, unsigned flags,
	    int64_t deadline, struct mb_attachment **out)
{
	struct client_slot *s;
	struct mb_attachment *att;
	json_t *req;
	unsigned acks;
	int r, slot;
	int64_t id;

	*out = NULL;
	if ((slot = attach_free_slot(c)) < 0)
		return MB_ELIMIT;
	if ((att = calloc(1, sizeof *att)) == NULL)
		return -ENOMEM;
	att->client = c;
	att->slot = slot;
	att->flags = flags;
	if ((req = json_pack("{s:s, s:s}", "op", "attach", "name", name)) ==
	    NULL) {
		free(att);
		return -ENOMEM;
	}
	acks = atomic_load(&c->ack_count);
	id = client_send(c, req, deadline);
	json_decref(req);
	r = id < 0 ? (int)id : attach_receive(c, att, id, deadline);
	if (r < 0) {
		attach_discard(c, att);
		return r;
	}
	s = &c->slots[slot];
	atomic_store(&s->len, att->region_len);
	atomic_store(&s->released, false);
	atomic_store(&s->keep, &att->keep);
	atomic_store(&s->addr, (void *)att->region);
	c->atts[slot] = att;
	if (atomic_load(&c->ack_count) != acks) {
		/* mb_ack ran meanwhile: whatever it missed is undone here. */
		void *p = atomic_exchange(&s->addr, NULL);

		atomic_store(&s->released, false);
		if (p != NULL)
			munmap(p, att->region_len);
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
	return mb_attach_ex(c, name, 0, 0, out);
}

/* The deadline of one try: the caller's or the client's bound per round
 * trip, whichever comes first. */
static int64_t
attach_try_deadline(const struct mb_client *c, int64_t deadline)
{
	int64_t each = client_deadline(c->timeout_ms);

	return each < 0 || (deadline >= 0 && deadline < each) ? deadline : each;
}

/* Attaches name, asking again while it is not ready, until timeout_ms. */
static int
attach_wait(struct mb_client *c, const char *name, unsigned flags,
	    int timeout_ms, struct mb_attachment **out)
{
	int64_t deadline = client_deadline(timeout_ms), left;
	int step = ATTACH_WAIT_FIRST_MS, r;

	while ((r = attach_once(c, name, flags,
				attach_try_deadline(c, deadline), out)) ==
		       MB_ENOTREADY ||
	       r == MB_ENOMODEL) {
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

int
mb_attach_wait(struct mb_client *c, const char *name, int timeout_ms,
	       struct mb_attachment **out)
{
	return attach_wait(c, name, 0, timeout_ms, out);
}

int
mb_attach_ex(struct mb_client *c, const char *name, unsigned flags,
	     int wait_ms, struct mb_attachment **out)
{
	if (wait_ms == 0)
		return attach_once(c, name, flags,
				   client_deadline(c->timeout_ms), out);
	return attach_wait(c, name, flags, wait_ms, out);
}

void
attach_forget(struct mb_attachment *att)
{
	att->client->atts[att->slot] = NULL;
	atomic_store(&att->client->slots[att->slot].keep, NULL);
	tensor_free(att);
	member_free(att);
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
		munmap(p, att->region_len);
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
	if ((r = mb_attach_ex(c, ev->model, (*att)->flags, 0, &next)) < 0)
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
		struct attach_keep *keep;

		/* Zero pages over the segment: its pages are let go now, and
		 * a read this interrupted goes on harmlessly. */
		if (p != NULL && !atomic_exchange(&s->released, true) &&
		    mmap(p, atomic_load(&s->len), PROT_READ,
			 MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS, -1, 0) ==
			    MAP_FAILED)
			munmap(p, atomic_load(&s->len));
		if ((keep = atomic_load(&s->keep)) != NULL)
			member_let_go(keep);
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
	return att->bundle ? NULL : att->members[0].data;
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
