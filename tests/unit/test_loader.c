/* SPDX-License-Identifier: MIT */
/*
 * test_loader.c - loading a model into a segment, and every system call
 * of that path failing on purpose: each failure gives the model ERROR with
 * a clear reason, leaves no name in /dev/shm and no descriptor open.  The
 * loaded segment is read-only for whoever receives its descriptor.  While
 * a load runs, its progress and size are visible and a cancel ends it
 * early, reporting the segment it removed as freed; a load blocked in a read is abandoned at its unload's deadline and
 * its waiting requester answered; a second SIGINT lets a cancelled load
 * that stops within the grace end cleanly.
 * WRAP: shm_open ftruncate pwrite mmap pread statvfs
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

#include "unit.h"

#include "mbrokerd.h"

#include "broker_fixture.h"
#include "loader.h"
#include "ops.h"

enum fault { FAULT_NONE, FAULT_SHM_OPEN, FAULT_FTRUNCATE, FAULT_WRITE,
	     FAULT_MMAP, FAULT_READ, FAULT_SHORT_READ, FAULT_PAUSE,
	     FAULT_SHM_FULL, FAULT_READ_FROM };
static enum fault fault;
/* FAULT_READ and FAULT_SHORT_READ hit the fault_nth-th chunk read;
 * FAULT_READ_FROM hits every read at or past fault_offset. */
static int fault_nth = 1;
static off_t fault_offset;
static char dir[64], raw_path[128], st_path[128], big_path[128],
	split_path[128];
/* FAULT_PAUSE: the second chunk read waits for a byte on this pipe. */
static int pause_pipe[2] = {-1, -1};
static atomic_int chunk_reads;
/* Names the fixture itself holds (the ack semaphore). */
static int base_names;
static unsigned char raw_bytes[3 << 20];

int __real_shm_open(const char *name, int flags, mode_t mode);
int __wrap_shm_open(const char *name, int flags, mode_t mode);
int __real_ftruncate(int fd, off_t len);
int __wrap_ftruncate(int fd, off_t len);
ssize_t __real_pwrite(int fd, const void *buf, size_t count, off_t off);
ssize_t __wrap_pwrite(int fd, const void *buf, size_t count, off_t off);
void *__real_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off);
void *__wrap_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off);
ssize_t __real_pread(int fd, void *buf, size_t count, off_t off);
ssize_t __wrap_pread(int fd, void *buf, size_t count, off_t off);
int __real_statvfs(const char *path, struct statvfs *sv);
int __wrap_statvfs(const char *path, struct statvfs *sv);

/* FAULT_SHM_FULL: /dev/shm has 1 MiB left. */
int
__wrap_statvfs(const char *path, struct statvfs *sv)
{
	int r = __real_statvfs(path, sv);

	if (r == 0 && fault == FAULT_SHM_FULL) {
		sv->f_frsize = 4096;
		sv->f_bavail = 256;
	}
	return r;
}

int
__wrap_shm_open(const char *name, int flags, mode_t mode)
{
	if (fault == FAULT_SHM_OPEN) {
		errno = EACCES;
		return -1;
	}
	return __real_shm_open(name, flags, mode);
}

int
__wrap_ftruncate(int fd, off_t len)
{
	if (fault == FAULT_FTRUNCATE) {
		errno = ENOSPC;
		return -1;
	}
	return __real_ftruncate(fd, len);
}

/* FAULT_WRITE: the segment's filesystem is full. */
ssize_t
__wrap_pwrite(int fd, const void *buf, size_t count, off_t off)
{
	if (fault == FAULT_WRITE) {
		errno = ENOSPC;
		return -1;
	}
	return __real_pwrite(fd, buf, count, off);
}

void *
__wrap_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
	if (fault == FAULT_MMAP && (prot & PROT_WRITE)) {
		errno = ENOMEM;
		return MAP_FAILED;
	}
	return __real_mmap(addr, len, prot, flags, fd, off);
}

ssize_t
__wrap_pread(int fd, void *buf, size_t count, off_t off)
{
	char go;

	if (fault == FAULT_READ_FROM && off >= fault_offset) {
		errno = EIO;
		return -1;
	}
	/* Only the loader reads in chunks this large. */
	if ((fault == FAULT_READ || fault == FAULT_SHORT_READ) &&
	    count >= (1u << 20) && atomic_fetch_add(&chunk_reads, 1) + 1 ==
					   fault_nth) {
		errno = EIO;
		return fault == FAULT_READ ? -1 : 0;
	}
	if (fault == FAULT_PAUSE && count >= (1u << 20) &&
	    atomic_fetch_add(&chunk_reads, 1) == 1 &&
	    read(pause_pipe[0], &go, 1) != 1)
		return -1;
	return __real_pread(fd, buf, count, off);
}

/* Starts loading path as name, as a preload does (nobody owed a reply). */
static struct model *
load_start(const char *name, const char *path)
{
	struct load_request lr = {
		.path = path,
		.provider = provider_for_path(path),
	};
	struct model *m;

	assert_int_equal(load_begin(name, &lr, NULL, NULL), 0);
	assert_non_null(m = registry_find(name));
	assert_int_equal(model_state(m), MODEL_LOADING);
	return m;
}

/* Loads path as "m" and runs the loop until the load is over. */
static struct model *
load_sync(const char *path)
{
	struct model *m = load_start("m", path);

	while (load_running(m))
		event_base_loop(broker.base, EVLOOP_ONCE);
	return m;
}

/* The generation m's load is filling. */
static const struct load_job *
job_of(const struct model *m)
{
	const struct generation *g = model_next_generation(m);

	assert_non_null(g);
	assert_non_null(g->job);
	return g->job;
}

static void
expect_failure_of(const char *path, enum fault f, int nth, const char *reason)
{
	int fds = unit_fd_count();
	struct model *m;
	json_t *o;

	fault = f;
	fault_nth = nth;
	atomic_store(&chunk_reads, 0);
	m = load_sync(path);
	fault = FAULT_NONE;
	assert_int_equal(model_state(m), MODEL_ERROR);
	if (strstr(model_error(m), reason) == NULL)
		fail_msg("error '%s' lacks '%s'", model_error(m), reason);
	o = registry_model_json(m);
	assert_null(json_object_get(o, "segment"));
	json_decref(o);
	assert_int_equal(unit_shm_count(broker.cfg.instance), base_names);
	assert_int_equal(unit_fd_count(), fds);
	assert_int_equal(segment_bytes_held(), 0);
	registry_clear();
}

static void
expect_failure(enum fault f, const char *reason)
{
	expect_failure_of(raw_path, f, 1, reason);
}

static void
test_loader_raw_ready(void **state)
{
	char path[sizeof "/dev/shm" + NAMES_SHM_MAX];
	const struct generation *g;
	struct model *m;
	struct stat st;
	void *p;
	int fd;

	(void)state;
	m = load_sync(raw_path);
	assert_int_equal(model_state(m), MODEL_READY);
	g = model_current(m);
	assert_non_null(g);
	assert_int_equal(g->size, sizeof raw_bytes);
	assert_int_equal(g->checksum, mb_checksum(raw_bytes, sizeof raw_bytes));
	assert_int_equal(unit_shm_count(broker.cfg.instance), base_names + 1);
	snprintf(path, sizeof path, "/dev/shm%s", segment_name(g->members[0].segment));
	fd = segment_fd(g->members[0].segment);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0400);
	assert_int_equal(st.st_size, sizeof raw_bytes);
	/* What a worker receives cannot be written through. */
	assert_int_equal(fcntl(fd, F_GETFL) & O_ACCMODE, O_RDONLY);
	assert_ptr_equal(mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED,
			      fd, 0), MAP_FAILED);
	assert_int_equal(errno, EACCES);
	p = mmap(NULL, sizeof raw_bytes, PROT_READ, MAP_SHARED, fd, 0);
	assert_ptr_not_equal(p, MAP_FAILED);
	assert_memory_equal(p, raw_bytes, sizeof raw_bytes);
	assert_int_equal(mprotect(p, 4096, PROT_READ | PROT_WRITE), -1);
	assert_int_equal(errno, EACCES);
	assert_int_equal(ftruncate(fd, 0), -1);
	munmap(p, sizeof raw_bytes);
	registry_clear();
	assert_int_equal(unit_shm_count(broker.cfg.instance), base_names);
}

static void
test_loader_safetensors_ready(void **state)
{
	struct model *m;

	(void)state;
	m = load_sync(st_path);
	assert_int_equal(model_state(m), MODEL_READY);
	assert_int_equal(model_current(m)->ntensors, 1);
	assert_non_null(model_current(m)->members[0].provider_state);
	registry_clear();
}

static void
test_loader_faults(void **state)
{
	(void)state;
	expect_failure(FAULT_SHM_OPEN, "cannot create segment");
	expect_failure(FAULT_FTRUNCATE, "cannot size segment");
	expect_failure(FAULT_WRITE, "cannot write");
	expect_failure(FAULT_MMAP, "cannot map segment");
	expect_failure(FAULT_READ, "Input/output error");
	expect_failure(FAULT_SHORT_READ, "file shrank");
	/* The 20 MiB file is read in 1 MiB chunks: fail the first three in
	 * turn. */
	for (int nth = 1; nth <= 3; nth++) {
		expect_failure_of(big_path, FAULT_READ, nth, "Input/output error");
		expect_failure_of(big_path, FAULT_SHORT_READ, nth, "file shrank");
	}
}

static void
test_loader_no_space_is_named(void **state)
{
	struct load_request lr = {
		.path = raw_path,
		.provider = &provider_raw,
		.keep_alive_ms = LOAD_KEEP_ALIVE_DEFAULT,
	};
	struct model *m;

	(void)state;
	/* A /dev/shm without room (nothing to evict) refuses the load
	 * before it starts: nothing is left in the registry. */
	fault = FAULT_SHM_FULL;
	assert_int_equal(load_begin("m", &lr, NULL, NULL), -1);
	fault = FAULT_NONE;
	assert_null(registry_find("m"));
	fault = FAULT_WRITE;
	m = load_sync(raw_path);
	fault = FAULT_NONE;
	assert_int_equal(model_state(m), MODEL_ERROR);
	assert_non_null(strstr(model_error(m), "No space left"));
	assert_non_null(strstr(model_error(m), "free"));
	registry_clear();
	fault = FAULT_FTRUNCATE;
	m = load_sync(raw_path);
	fault = FAULT_NONE;
	assert_non_null(strstr(model_error(m), "No space left"));
	registry_clear();
}

/* What a cancelled load reported when it stopped. */
static struct {
	bool stopped;
	uint64_t freed;
	unsigned unlinked;
} cancelled;

static void
load_stopped(struct model *m, uint64_t freed, unsigned unlinked)
{
	(void)m;
	cancelled.stopped = true;
	cancelled.freed = freed;
	cancelled.unlinked = unlinked;
}

static void
test_loader_progress_and_cancel(void **state)
{
	int64_t deadline = clock_monotonic_ms() + 10000;
	int fds = unit_fd_count();
	struct model *m;
	json_t *o;

	(void)state;
	fault = FAULT_PAUSE;
	atomic_store(&chunk_reads, 0);
	m = load_start("big", big_path);
	while (loader_progress(job_of(m)) < (1u << 20) &&
	       clock_monotonic_ms() < deadline)
		poll(NULL, 0, 1);
	/* The first 1 MiB chunk is in; the loader waits on the second. */
	assert_int_equal(loader_progress(job_of(m)), 1u << 20);
	o = registry_model_json(m);
	assert_string_equal(json_string_value(json_object_get(o, "state")),
			    "LOADING");
	assert_int_equal(json_integer_value(json_object_get(o, "bytes_done")),
			 1u << 20);
	assert_int_equal(json_integer_value(json_object_get(o, "size")),
			 20u << 20);
	json_decref(o);
	cancelled.stopped = false;
	load_cancel(m, load_stopped);
	assert_int_equal(write(pause_pipe[1], "x", 1), 1);
	while (!cancelled.stopped)
		event_base_loop(broker.base, EVLOOP_ONCE);
	fault = FAULT_NONE;
	/* It stopped early: what it had made is removed and reported. */
	assert_false(load_running(m));
	assert_int_equal(cancelled.freed, 20u << 20);
	assert_int_equal(cancelled.unlinked, 1);
	assert_null(model_generations(m, NULL));
	assert_int_equal(unit_shm_count(broker.cfg.instance), base_names);
	assert_int_equal(unit_fd_count(), fds);
	assert_int_equal(segment_bytes_held(), 0);
	registry_clear();
}

static bool
stuck_in_error(void)
{
	struct model *m = registry_find("stuck");

	return m != NULL && model_state(m) == MODEL_ERROR;
}

static int fds_before_stuck;

static bool
abandoned_thread_cleaned_up(void)
{
	return loader_abandoned_count() == 0 && segment_bytes_held() == 0 &&
	       unit_fd_count() == fds_before_stuck;
}

/* Sends a load of big_path as name from cl and waits until the loader
 * sits in its second chunk read, which returns when the test says. */
static struct model *
load_paused(struct broker_fixture_client *cl, const char *name, bool wait)
{
	int64_t deadline = clock_monotonic_ms() + 10000;
	char req[512];
	struct model *m;

	fault = FAULT_PAUSE;
	atomic_store(&chunk_reads, 0);
	snprintf(req, sizeof req, "{\"id\":2,\"op\":\"load\",\"name\":\"%s\","
		 "\"path\":\"%s\",\"wait\":%s}", name, big_path,
		 wait ? "true" : "false");
	broker_fixture_client_request(cl, req);
	assert_non_null(m = registry_find(name));
	while (loader_progress(job_of(m)) < (1u << 20) &&
	       clock_monotonic_ms() < deadline)
		poll(NULL, 0, 1);
	assert_int_equal(loader_progress(job_of(m)), 1u << 20);
	return m;
}

static void
test_loader_abandoned_at_deadline(void **state)
{
	struct broker_fixture_client cl;
	int64_t t0;
	struct model *m;

	(void)state;
	fds_before_stuck = unit_fd_count();
	broker_fixture_client_open(&cl);
	broker_fixture_client_expect(&cl, "\"ok\":true");
	m = load_paused(&cl, "stuck", true);
	/* The loader now sits in its second read, which does not return. */
	t0 = clock_monotonic_ms();
	unload_begin(m, 150, NULL, NULL, true, NULL, NULL);
	broker_fixture_run_until(stuck_in_error);
	assert_in_range(clock_monotonic_ms() - t0, UNLOAD_CANCEL_GRACE_MS - 10,
			3000);
	assert_non_null(strstr(model_error(m), "its load did not stop"));
	assert_int_equal(loader_abandoned_count(), 1);
	assert_int_equal(unit_shm_count(broker.cfg.instance), base_names);
	/* The waiting load is answered, once. */
	broker_fixture_client_expect(&cl, "\"id\":2,\"ok\":false,\"error\":"
				     "{\"model\":\"stuck\",\"code\":\"cancelled\"");
	assert_string_equal(broker_fixture_client_read(&cl), "");
	/* When the read finally returns, the thread cleans up alone. */
	assert_int_equal(write(pause_pipe[1], "x", 1), 1);
	conn_close_all();
	close(cl.fd);
	broker_fixture_run_until(abandoned_thread_cleaned_up);
	fault = FAULT_NONE;
	registry_clear();
}

static struct broker_fixture_client *watched;

static bool
watched_readable(void)
{
	struct pollfd p = {.fd = watched->fd, .events = POLLIN};

	return poll(&p, 1, 0) == 1;
}

/* Asserts the next message to cl contains each of the strings. */
static void
expect_all(struct broker_fixture_client *cl, const char *a, const char *b)
{
	const char *got;

	watched = cl;
	broker_fixture_run_until(watched_readable);
	got = broker_fixture_client_read(cl);
	if (strstr(got, a) == NULL || strstr(got, b) == NULL)
		fail_msg("message '%s' lacks '%s' or '%s'", got, a, b);
}

/* A load without wait is answered with the file's size; an unload during
 * the load reports the segment the cancelled load removed as freed. */
static void
test_loader_size_and_freed_while_loading(void **state)
{
	struct broker_fixture_client cl;

	(void)state;
	broker_fixture_client_open(&cl);
	broker_fixture_client_expect(&cl, "\"ok\":true");
	load_paused(&cl, "big", false);
	expect_all(&cl, "\"state\":\"LOADING\"", "\"size\":20971520");
	broker_fixture_client_request(&cl, "{\"id\":3,\"op\":\"unload\","
				      "\"name\":\"big\",\"timeout\":10}");
	assert_int_equal(write(pause_pipe[1], "x", 1), 1);
	broker_fixture_run_until(broker_fixture_registry_empty);
	expect_all(&cl, "\"freed_bytes\":20971520", "\"segments_unlinked\":1");
	fault = FAULT_NONE;
	conn_close_all();
	close(cl.fd);
}

static bool
shutdown_over(void)
{
	return shutdown_done();
}

/* A second SIGINT during a shutdown that cancels a load: the load stops
 * 50 ms later, within the grace, so nothing is abandoned and the shutdown
 * is clean.  Runs last: the broker has shut down after it. */
static void
test_loader_interrupt_lets_a_stopping_load_end(void **state)
{
	struct broker_fixture_client cl;

	(void)state;
	broker_fixture_client_open(&cl);
	broker_fixture_client_expect(&cl, "\"ok\":true");
	load_paused(&cl, "late", false);
	shutdown_begin(10000, NULL, NULL, "by the test");
	shutdown_force();
	event_base_loop(broker.base, EVLOOP_NONBLOCK);
	poll(NULL, 0, 50);
	assert_int_equal(write(pause_pipe[1], "x", 1), 1);
	broker_fixture_run_until(shutdown_over);
	fault = FAULT_NONE;
	assert_int_equal(broker.exit_code, 0);
	assert_int_equal(loader_abandoned_count(), 0);
	assert_int_equal(registry_count(), 0);
	assert_int_equal(unit_shm_count(broker.cfg.instance), base_names);
	conn_close_all();
	close(cl.fd);
}

/* A file large enough to be filled by two threads. */
static void
test_loader_two_threads(void **state)
{
	unsigned char *bytes = malloc(72u << 20);
	FILE *f = fopen(split_path, "rb");
	struct model *m;
	int fds;

	(void)state;
	assert_non_null(bytes);
	assert_int_equal(fread(bytes, 1, 72u << 20, f), 72u << 20);
	fclose(f);
	fds = unit_fd_count();
	m = load_sync(split_path);
	assert_int_equal(model_state(m), MODEL_READY);
	assert_int_equal(model_current(m)->checksum,
			 mb_checksum(bytes, 72u << 20));
	registry_clear();
	free(bytes);
	/* The second half's thread fails: everything is undone. */
	fault_offset = 40u << 20;
	expect_failure_of(split_path, FAULT_READ_FROM, 1, "at byte 4");
	assert_int_equal(unit_fd_count(), fds);
}

static void
write_file(const char *path, const void *data, size_t len)
{
	FILE *f = fopen(path, "wb");

	assert_non_null(f);
	assert_int_equal(fwrite(data, 1, len, f), len);
	assert_int_equal(fclose(f), 0);
}

static int
group_setup(void **state)
{
	static const char header[] =
		"{\"w\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}";
	unsigned char st[8 + sizeof header - 1 + 16] = {0};

	(void)state;
	snprintf(dir, sizeof dir, "/tmp/mbroker-unit.XXXXXX");
	if (broker_fixture_setup(LOG_LEVEL_ERROR) < 0 || mkdtemp(dir) == NULL ||
	    loader_init() < 0 || unload_init() < 0)
		return -1;
	base_names = unit_shm_count(broker.cfg.instance);
	for (size_t i = 0; i < sizeof raw_bytes; i++)
		raw_bytes[i] = (unsigned char)(i * 2654435761u >> 24);
	snprintf(raw_path, sizeof raw_path, "%s/raw.bin", dir);
	write_file(raw_path, raw_bytes, sizeof raw_bytes);
	st[0] = sizeof header - 1;
	memcpy(st + 8, header, sizeof header - 1);
	snprintf(st_path, sizeof st_path, "%s/m.safetensors", dir);
	write_file(st_path, st, sizeof st);
	snprintf(big_path, sizeof big_path, "%s/big.bin", dir);
	write_file(big_path, "x", 1);
	snprintf(split_path, sizeof split_path, "%s/split.bin", dir);
	{
		FILE *f = fopen(split_path, "wb");

		for (unsigned i = 0; f != NULL && i < (72u << 20) / sizeof raw_bytes;
		     i++)
			fwrite(raw_bytes, 1, sizeof raw_bytes, f);
		if (f == NULL || fclose(f) != 0)
			return -1;
	}
	return truncate(big_path, 20u << 20) < 0 ? -1 : pipe(pause_pipe);
}

static int
group_teardown(void **state)
{
	(void)state;
	registry_clear();
	unload_shutdown();
	loader_shutdown();
	shutdown_free();
	broker_fixture_teardown();
	unlink(raw_path);
	unlink(st_path);
	unlink(big_path);
	unlink(split_path);
	close(pause_pipe[0]);
	close(pause_pipe[1]);
	rmdir(dir);
	return 0;
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_loader_raw_ready),
		cmocka_unit_test(test_loader_safetensors_ready),
		cmocka_unit_test(test_loader_faults),
		cmocka_unit_test(test_loader_no_space_is_named),
		cmocka_unit_test(test_loader_progress_and_cancel),
		cmocka_unit_test(test_loader_abandoned_at_deadline),
		cmocka_unit_test(test_loader_two_threads),
		cmocka_unit_test(test_loader_size_and_freed_while_loading),
		cmocka_unit_test(test_loader_interrupt_lets_a_stopping_load_end),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
