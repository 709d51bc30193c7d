/* SPDX-License-Identifier: MIT */
/*
 * test_mirror.c - the registry mirror as an observer reads it: the layout
 * of common/mirror.h (the broker's record, one record per model, one per
 * connection holding models), and what an attach costs it: the pages the
 * broker writes for one attach or detach (counted by write-protecting the
 * mapping and catching each first write) stay the same however many
 * models are loaded.
 */
#include <signal.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include "unit.h"

#include "mbrokerd.h"
#include "broker_fixture.h"
#include "lease.h"
#include "mirror.h"

/* The mirror as an observer maps it, read-only. */
static const unsigned char *
map_mirror(size_t *size)
{
	char name[NAMES_SHM_MAX];
	struct stat st;
	void *p;
	int fd;

	assert_int_equal(names_shm(name, sizeof name, broker.cfg.instance,
				   "registry"), 0);
	fd = shm_open(name, O_RDONLY, 0);
	assert_true(fd >= 0);
	assert_int_equal(fstat(fd, &st), 0);
	p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
	close(fd);
	assert_true(p != MAP_FAILED);
	*size = (size_t)st.st_size;
	return p;
}

/* Model slot s's JSON, or NULL when the slot is free. */
static json_t *
model_record(const unsigned char *map, unsigned s)
{
	const struct mirror_header *h = (const void *)map;
	const struct mirror_record *rec =
		(const void *)(map + h->models_offset +
			       (size_t)s * h->model_slot_size);

	if (rec->length == 0)
		return NULL;
	return json_loadb((const char *)(rec + 1), rec->length, 0, NULL);
}

static const struct mirror_worker *
worker_record(const unsigned char *map, unsigned s)
{
	const struct mirror_header *h = (const void *)map;

	return (const void *)(map + h->workers_offset +
			      (size_t)s * h->worker_slot_size);
}

/* The worker slot that names pid, or -1. */
static int
worker_of(const unsigned char *map, pid_t pid)
{
	const struct mirror_header *h = (const void *)map;

	for (unsigned s = 0; s < h->worker_slots; s++)
		if (worker_record(map, s)->pid == pid)
			return (int)s;
	return -1;
}

/* A READY model whose path is about path_len bytes long. */
static struct model *
ready_model(const char *name, size_t path_len)
{
	char path[PATH_MAX];

	memset(path, 'p', path_len);
	path[0] = '/';
	path[path_len] = '\0';
	return broker_fixture_ready_model(name, path, &provider_raw, NULL);
}

/* Unloads m at once: its generations are let go and it leaves the
 * registry. */
static void
remove_model(struct model *m)
{
	broker_fixture_drop_generations(m);
	registry_set_state(m, MODEL_UNLOADING);
	registry_set_state(m, MODEL_UNINITIALIZED);
	registry_remove(m);
}

/* Runs what the loop has pending: the mirror's deferred writes. */
static void
flush(void)
{
	event_base_loop(broker.base, EVLOOP_NONBLOCK);
}

static void
test_mirror_layout(void **state)
{
	struct model *a, *b;
	const unsigned char *map;
	const struct mirror_header *h;
	const struct mirror_worker *w;
	struct conn *c;
	struct lease *x, *y;
	json_t *o, *doc;
	size_t size;
	int peer, s;

	(void)state;
	a = ready_model("a", 10);
	b = ready_model("b", 10);
	c = broker_fixture_conn_new(&peer);
	x = lease_add(c, model_current(b));
	y = lease_add(c, model_current(b));
	assert_non_null(x);
	assert_non_null(y);
	flush();
	map = map_mirror(&size);
	h = (const void *)map;
	assert_memory_equal(h->magic, MIRROR_MAGIC, 8);
	assert_int_equal(h->size, size);
	assert_int_equal(h->model_slots, MIRROR_MODELS);
	assert_int_equal(h->worker_slots, broker.cfg.max_conns);
	assert_int_equal(h->seq % 2, 0);
	doc = json_loadb((const char *)(h + 1), h->length, 0, NULL);
	assert_string_equal(json_string_value(json_object_get(doc, "instance")),
			    broker.cfg.instance);
	assert_int_equal(json_integer_value(json_object_get(doc, "pid")),
			 getpid());
	json_decref(doc);
	/* One record per model, as "list" shows it. */
	o = model_record(map, model_slot(b));
	assert_non_null(o);
	assert_string_equal(json_string_value(json_object_get(o, "name")), "b");
	assert_string_equal(json_string_value(json_object_get(o, "state")),
			    "READY");
	assert_int_equal(json_integer_value(json_object_get(o, "attached")), 2);
	json_decref(o);
	o = model_record(map, model_slot(a));
	assert_int_equal(json_integer_value(json_object_get(o, "attached")), 0);
	json_decref(o);
	/* The connection's record: its pid, holding b and not a. */
	s = worker_of(map, getpid());
	assert_true(s >= 0);
	w = worker_record(map, (unsigned)s);
	assert_true(w->models[model_slot(b) / 64] & (UINT64_C(1) << (model_slot(b) % 64)));
	assert_false(w->models[model_slot(a) / 64] & (UINT64_C(1) << (model_slot(a) % 64)));
	/* Still held after one detach; gone after the last. */
	lease_release(x);
	flush();
	assert_int_equal(worker_of(map, getpid()), s);
	lease_release(y);
	flush();
	assert_int_equal(worker_of(map, getpid()), -1);
	o = model_record(map, model_slot(b));
	assert_int_equal(json_integer_value(json_object_get(o, "attached")), 0);
	json_decref(o);
	/* A removed model frees its slot. */
	s = (int)model_slot(a);
	remove_model(a);
	flush();
	assert_null(model_record(map, (unsigned)s));
	munmap((void *)(uintptr_t)map, size);
	conn_close_all();
	close(peer);
	registry_clear();
}

/* Where the broker maps its mirror, from /proc/self/maps. */
static void
mirror_range(uintptr_t *start, uintptr_t *end)
{
	char name[NAMES_SHM_MAX], line[512], suffix[NAMES_SHM_MAX + 16];
	FILE *f = fopen("/proc/self/maps", "r");

	assert_non_null(f);
	assert_int_equal(names_shm(name, sizeof name, broker.cfg.instance,
				   "registry"), 0);
	snprintf(suffix, sizeof suffix, "/dev/shm%s\n", name);
	*start = *end = 0;
	while (fgets(line, sizeof line, f) != NULL) {
		size_t n = strlen(line), k = strlen(suffix);

		if (n >= k && strcmp(line + n - k, suffix) == 0 &&
		    sscanf(line, "%lx-%lx", start, end) == 2)
			break;
	}
	fclose(f);
	assert_true(*end > *start);
}

/* The mirror's mapping is write-protected while a change is made; each
 * first write to a page faults here, is counted, and goes on. */
static struct {
	uintptr_t start, end;
	unsigned pages;
	struct sigaction old;
} watch;

static void
watch_fault(int sig, siginfo_t *si, void *ctx)
{
	uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
	uintptr_t p = (uintptr_t)si->si_addr / page * page;

	(void)sig;
	(void)ctx;
	if (p < watch.start || p >= watch.end ||
	    mprotect((void *)p, page, PROT_READ | PROT_WRITE) < 0)
		abort();
	watch.pages++;
}

static void
watch_begin(void)
{
	struct sigaction sa = {.sa_sigaction = watch_fault,
			       .sa_flags = SA_SIGINFO};

	mirror_range(&watch.start, &watch.end);
	watch.pages = 0;
	assert_int_equal(sigaction(SIGSEGV, &sa, &watch.old), 0);
	assert_int_equal(mprotect((void *)watch.start, watch.end - watch.start,
				  PROT_READ), 0);
}

/* Pages of the mirror written since watch_begin. */
static unsigned
watch_end(void)
{
	assert_int_equal(mprotect((void *)watch.start, watch.end - watch.start,
				  PROT_READ | PROT_WRITE), 0);
	assert_int_equal(sigaction(SIGSEGV, &watch.old, NULL), 0);
	return watch.pages;
}

/* Pages of the mirror written by one attach and one detach of the first
 * model, with the others loaded. */
static void
attach_cost(unsigned nmodels, unsigned *attach_pages, unsigned *detach_pages)
{
	struct model *first = NULL;
	struct lease *a;
	struct conn *c;
	char name[16];
	int peer;

	for (unsigned i = 0; i < nmodels; i++) {
		struct model *m;

		snprintf(name, sizeof name, "m%u", i);
		m = ready_model(name, 3000);
		if (first == NULL)
			first = m;
	}
	c = broker_fixture_conn_new(&peer);
	flush();
	watch_begin();
	a = lease_add(c, model_current(first));
	flush();
	*attach_pages = watch_end();
	assert_non_null(a);
	watch_begin();
	lease_release(a);
	flush();
	*detach_pages = watch_end();
	conn_close_all();
	close(peer);
	registry_clear();
	flush();
}

static void
test_mirror_attach_cost_is_constant(void **state)
{
	unsigned one_a, one_d, many_a, many_d;

	(void)state;
	attach_cost(1, &one_a, &one_d);
	attach_cost(200, &many_a, &many_d);
	/* The model's record (a 3,000-byte path: two pages at most) and the
	 * connection's record. */
	assert_in_range(many_a, 1, 3);
	assert_in_range(many_d, 1, 3);
	assert_int_equal(many_a, one_a);
	assert_int_equal(many_d, one_d);
}

static int
setup(void **state)
{
	(void)state;
	if (broker_fixture_setup(LOG_LEVEL_ERROR) < 0 || mirror_init() < 0)
		return -1;
	return 0;
}

static int
teardown(void **state)
{
	(void)state;
	mirror_shutdown();
	broker_fixture_teardown();
	return 0;
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_mirror_layout),
		cmocka_unit_test(test_mirror_attach_cost_is_constant),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
