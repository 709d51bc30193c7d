/* SPDX-License-Identifier: MIT */
/*
 * mirror.c - the registry mirror in shared memory (layout in
 * common/mirror.h): a read-only view of the registry for observers that do
 * not hold a connection.  Each model and each connection holding models
 * has a record of its own, rewritten alone when it changes, so an attach
 * costs the same whatever else is loaded.  Every page is reserved when the
 * file is created: a full /dev/shm can then never make a write to it
 * fault.  Written by the broker only, and never read back: the registry in
 * the broker's memory is the truth.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "mbrokerd.h"
#include "mirror.h"
#include "registry.h"

_Static_assert(MIRROR_MODELS == BROKER_MAX_MODELS,
	       "one mirror slot per model the registry holds");

static struct {
	char name[NAMES_SHM_MAX];
	unsigned char *map; /* NULL: no mirror */
	size_t size;
	struct event *ev;
	uint64_t dirty[MIRROR_MODELS / 64]; /* model slots to rewrite */
	int shutting_down;                  /* as last written; -1: never */
	unsigned *free_workers;             /* a stack of free worker slots */
	unsigned nfree_workers;
	unsigned nworkers;
} mirror = {.shutting_down = -1};

static struct mirror_header *
mirror_header(void)
{
	return (struct mirror_header *)(void *)mirror.map;
}

/* Marks the start of a write to the record whose sequence number is seq. */
static void
mirror_write_begin(_Atomic uint64_t *seq)
{
	atomic_fetch_add_explicit(seq, 1, memory_order_relaxed);
	atomic_thread_fence(memory_order_release);
}

static void
mirror_write_end(_Atomic uint64_t *seq)
{
	atomic_fetch_add_explicit(seq, 1, memory_order_release);
}

/* Rewrites the broker's record when its state changed since. */
static void
mirror_write_broker(void)
{
	struct mirror_header *h = mirror_header();
	char *data = (char *)(h + 1);
	json_t *doc;
	size_t len;

	if (mirror.shutting_down == (int)broker.shutting_down)
		return;
	doc = json_pack("{s:s, s:I, s:b}", "instance", broker.cfg.instance,
			"pid", (json_int_t)getpid(), "shutting_down",
			broker.shutting_down);
	mirror_write_begin(&h->seq);
	len = doc != NULL ? json_dumpb(doc, data, MIRROR_BROKER_MAX,
				       JSON_COMPACT) : 0;
	h->length = len <= MIRROR_BROKER_MAX ? len : 0;
	mirror_write_end(&h->seq);
	json_decref(doc);
	mirror.shutting_down = broker.shutting_down;
}

/* Rewrites model slot s from the registry (length 0 when it is free).  A
 * model whose JSON does not fit loses "path", "error" and "generations"
 * and says "truncated". */
static void
mirror_write_model(unsigned s)
{
	struct mirror_record *rec = (struct mirror_record *)(void *)(
		mirror.map + mirror_header()->models_offset +
		(size_t)s * MIRROR_MODEL_SIZE);
	const struct model *m = registry_at(s);
	json_t *o = m != NULL ? registry_model_json(m) : NULL;
	char *data = (char *)(rec + 1);
	size_t len = 0;

	mirror_write_begin(&rec->seq);
	if (o != NULL &&
	    (len = json_dumpb(o, data, MIRROR_MODEL_MAX, JSON_COMPACT)) >
		    MIRROR_MODEL_MAX) {
		json_object_del(o, "path");
		json_object_del(o, "error");
		json_object_del(o, "generations");
		json_object_set_new(o, "truncated", json_true());
		len = json_dumpb(o, data, MIRROR_MODEL_MAX, JSON_COMPACT);
	}
	rec->length = len <= MIRROR_MODEL_MAX ? len : 0;
	mirror_write_end(&rec->seq);
	json_decref(o);
}

/* Writes what changed since the last time: the broker's record and the
 * dirty model slots. */
static void
mirror_flush(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	mirror_write_broker();
	for (unsigned w = 0; w < MIRROR_MODELS / 64; w++) {
		while (mirror.dirty[w] != 0) {
			unsigned bit = (unsigned)__builtin_ctzll(mirror.dirty[w]);

			mirror.dirty[w] &= mirror.dirty[w] - 1;
			mirror_write_model(w * 64 + bit);
		}
	}
}

void
mirror_model_changed(unsigned slot)
{
	if (mirror.map == NULL)
		return;
	mirror.dirty[slot / 64] |= UINT64_C(1) << (slot % 64);
	event_active(mirror.ev, EV_TIMEOUT, 0);
}

void
mirror_worker_changed(unsigned *record, pid_t pid, const uint16_t *held)
{
	struct mirror_header *h = mirror_header();
	struct mirror_worker *rec;

	if (mirror.map == NULL)
		return;
	if (*record == 0) {
		if (held == NULL)
			return;
		if (mirror.nfree_workers == 0) {
			log_warnx("registry mirror: no worker slot for pid %ld",
				  (long)pid);
			return;
		}
		*record = mirror.free_workers[--mirror.nfree_workers] + 1;
	}
	rec = (struct mirror_worker *)(void *)(mirror.map + h->workers_offset) +
	      (*record - 1);
	mirror_write_begin(&rec->seq);
	rec->pid = held != NULL ? pid : 0;
	for (unsigned w = 0; w < MIRROR_MODELS / 64; w++) {
		uint64_t bits = 0;

		for (unsigned b = 0; held != NULL && b < 64; b++)
			if (held[w * 64 + b] > 0)
				bits |= UINT64_C(1) << b;
		rec->models[w] = bits;
	}
	mirror_write_end(&rec->seq);
	if (held == NULL) {
		mirror.free_workers[mirror.nfree_workers++] = *record - 1;
		*record = 0;
	}
}

int
mirror_init(void)
{
	char path[sizeof "/dev/shm" + NAMES_SHM_MAX];
	struct mirror_header *h;
	struct model *m;
	int fd, r;

	if (names_shm(mirror.name, sizeof mirror.name, broker.cfg.instance,
		      "registry") < 0)
		return -1;
	mirror.nworkers = broker.cfg.max_conns;
	mirror.size = MIRROR_HEADER_SIZE +
		      (size_t)MIRROR_MODELS * MIRROR_MODEL_SIZE +
		      (size_t)mirror.nworkers * sizeof(struct mirror_worker);
	if ((mirror.free_workers = calloc(mirror.nworkers,
					  sizeof *mirror.free_workers)) == NULL)
		return -1;
	for (unsigned i = 0; i < mirror.nworkers; i++)
		mirror.free_workers[i] = mirror.nworkers - 1 - i;
	mirror.nfree_workers = mirror.nworkers;
	fd = shm_open(mirror.name, O_RDWR | O_CREAT | O_EXCL, 0600);
	if (fd < 0) {
		log_warn("cannot create registry mirror %s%s", mirror.name,
			 errno == EEXIST ? " (a name that is not ours; left "
					   "untouched)" : "");
		mirror.name[0] = '\0';
		return -1;
	}
	/* Every page now: a write to a page of a sparse file in a full
	 * /dev/shm would kill the broker with SIGBUS. */
	if ((r = posix_fallocate(fd, 0, (off_t)mirror.size)) != 0) {
		log_error("cannot reserve %zu bytes in /dev/shm for the registry "
			  "mirror %s: %s", mirror.size, mirror.name, strerror(r));
		close(fd);
		return -1;
	}
	mirror.map = mmap(NULL, mirror.size, PROT_READ | PROT_WRITE, MAP_SHARED,
			  fd, 0);
	if (mirror.map == MAP_FAILED) {
		log_warn("cannot map registry mirror %s", mirror.name);
		mirror.map = NULL;
		close(fd);
		return -1;
	}
	snprintf(path, sizeof path, "/dev/shm%s", mirror.name);
	rights_share(path, fd, 0040);
	close(fd);
	h = mirror_header();
	h->model_slots = MIRROR_MODELS;
	h->model_slot_size = MIRROR_MODEL_SIZE;
	h->models_offset = MIRROR_HEADER_SIZE;
	h->worker_slots = mirror.nworkers;
	h->worker_slot_size = sizeof(struct mirror_worker);
	h->workers_offset = MIRROR_HEADER_SIZE +
			    (uint64_t)MIRROR_MODELS * MIRROR_MODEL_SIZE;
	h->size = mirror.size;
	memcpy(h->magic, MIRROR_MAGIC, sizeof h->magic);
	if ((mirror.ev = event_new(broker.base, -1, 0, mirror_flush, NULL)) ==
	    NULL)
		return -1;
	mirror_write_broker();
	for (m = registry_next(NULL); m != NULL; m = registry_next(m))
		mirror_model_changed(model_slot(m));
	return 0;
}

void
mirror_shutdown(void)
{
	if (mirror.ev != NULL)
		event_free(mirror.ev);
	mirror.ev = NULL;
	if (mirror.map != NULL)
		munmap(mirror.map, mirror.size);
	mirror.map = NULL;
	if (mirror.name[0] != '\0' && shm_unlink(mirror.name) < 0 &&
	    errno != ENOENT)
		log_warn("cannot unlink %s", mirror.name);
	mirror.name[0] = '\0';
	free(mirror.free_workers);
	mirror.free_workers = NULL;
	memset(mirror.dirty, 0, sizeof mirror.dirty);
	mirror.shutting_down = -1;
}
