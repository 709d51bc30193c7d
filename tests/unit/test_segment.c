/* SPDX-License-Identifier: MIT */
/*
 * test_segment.c - a segment's life as /dev/shm and the budget show it:
 * its name (the instance's prefix, the model, the generation, the run's
 * token; a bundle's later members add ".i"), created 0600 within
 * --max-shm-bytes and counted among the broker's segments, sealed
 * read-only (0400, or 0440 and the --allow-gid group); its name
 * removed by segment_unlink while a holder keeps mapping the bytes, and
 * the budget given back only when the last reference is put (the last put
 * also removes a name still there).
 */
#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include "unit.h"

#include "mbrokerd.h"
#include "broker_fixture.h"

/* A new segment of size bytes for generation gen of "m"; NULL with the
 * result in *result when it cannot be made. */
static struct segment *
create(uint64_t gen, uint64_t size, int *result)
{
	char name[NAMES_SHM_MAX], err[256];

	assert_int_equal(segment_name_for(name, sizeof name, "m", gen), 0);
	return segment_create(name, size, 0, result, err, sizeof err);
}

/* Whether /dev/shm lists name. */
static bool
listed(const char *name)
{
	char path[sizeof "/dev/shm" + NAMES_SHM_MAX];
	struct stat st;

	snprintf(path, sizeof path, "/dev/shm%s", name);
	return stat(path, &st) == 0;
}

static void
test_segment_name(void **state)
{
	char name[NAMES_SHM_MAX], want[NAMES_SHM_MAX];

	(void)state;
	assert_int_equal(segment_name_for(name, sizeof name, "m", 3), 0);
	snprintf(want, sizeof want, "/mbroker.%s.model.m.3-0000beef",
		 broker.cfg.instance);
	assert_string_equal(name, want);
	assert_true(segment_name_for(name, 8, "m", 3) < 0);
	/* A bundle's members: the first has the name, the others .i. */
	assert_int_equal(segment_name_member(want, sizeof want, name, 0), 0);
	assert_string_equal(want, name);
	assert_int_equal(segment_name_member(want, sizeof want, name, 17), 0);
	assert_true(strncmp(want, name, strlen(name)) == 0);
	assert_string_equal(want + strlen(name), ".17");
	assert_true(segment_name_member(want, strlen(name) + 2, name, 17) < 0);
}

/* With --allow-gid, a sealed segment is 0440 and of that group (the
 * test's own, which it may give without privilege; any for root, whose
 * own is 0, "none"); every segment made counts until its last put, a
 * 0-byte one too. */
static void
test_segment_sealed_for_group(void **state)
{
	gid_t gid = getegid() != 0 ? getegid() : 4242;
	struct segment *s, *z;
	struct stat st;
	int result;

	(void)state;
	broker.cfg.allow_gid = gid;
	assert_int_equal(segment_count(), 0);
	s = create(1, 4096, &result);
	z = create(2, 0, &result);
	assert_non_null(s);
	assert_non_null(z);
	assert_int_equal(segment_count(), 2);
	assert_int_equal(segment_seal(s), 0);
	assert_int_equal(segment_seal(z), 0);
	assert_int_equal(fstat(segment_fd(s), &st), 0);
	assert_int_equal(st.st_mode & 0777, 0440);
	assert_int_equal(st.st_gid, gid);
	assert_int_equal(fstat(segment_fd(z), &st), 0);
	assert_int_equal(st.st_mode & 0777, 0440);
	assert_int_equal(st.st_size, 0);
	segment_put(s);
	segment_put(z);
	assert_int_equal(segment_count(), 0);
	broker.cfg.allow_gid = 0;
}

static void
test_segment_sealed_read_only(void **state)
{
	struct segment *s;
	struct stat st;
	char name[NAMES_SHM_MAX];
	unsigned char *p;
	int result;

	(void)state;
	s = create(1, 4096, &result);
	assert_non_null(s);
	snprintf(name, sizeof name, "%s", segment_name(s));
	assert_int_equal(fstat(segment_rw_fd(s), &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	assert_int_equal(st.st_size, 4096);
	assert_int_equal(pwrite(segment_rw_fd(s), "model", 5, 0), 5);
	assert_int_equal(segment_seal(s), 0);
	assert_int_equal(segment_rw_fd(s), -1);
	assert_int_equal(fstat(segment_fd(s), &st), 0);
	assert_int_equal(st.st_mode & 0777, 0400);
	assert_ptr_equal(mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED,
			      segment_fd(s), 0), MAP_FAILED);
	p = mmap(NULL, 4096, PROT_READ, MAP_SHARED, segment_fd(s), 0);
	assert_ptr_not_equal(p, MAP_FAILED);
	assert_memory_equal(p, "model", 5);
	munmap(p, 4096);
	/* The last put removes the name still there and the bytes. */
	segment_put(s);
	assert_false(listed(name));
	assert_int_equal(segment_bytes_held(), 0);
}

static void
test_segment_budget_until_last_put(void **state)
{
	struct segment *s, *t;
	char name[NAMES_SHM_MAX];
	unsigned char *p;
	int result, fds = unit_fd_count();

	(void)state;
	broker.cfg.max_shm_bytes = 8192;
	s = create(1, 4096, &result);
	assert_non_null(s);
	assert_int_equal(pwrite(segment_rw_fd(s), "bytes", 5, 0), 5);
	assert_int_equal(segment_seal(s), 0);
	snprintf(name, sizeof name, "%s", segment_name(s));
	assert_int_equal(segment_bytes_held(), 4096);
	/* Over the budget: refused with no_space, nothing created. */
	assert_null(create(2, 8192, &result));
	assert_int_equal(result, MB_ENOSPACE);
	assert_int_equal(unit_shm_count(broker.cfg.instance), 1);
	/* A holder (a lease) maps it; the owner removes the name. */
	assert_ptr_equal(segment_hold(s), s);
	p = mmap(NULL, 4096, PROT_READ, MAP_SHARED, segment_fd(s), 0);
	assert_ptr_not_equal(p, MAP_FAILED);
	assert_int_equal(segment_unlink(s), 1);
	assert_false(listed(name));
	assert_string_equal(segment_name(s), "");
	assert_int_equal(segment_unlink(s), 0);
	/* The holder still reads its bytes, which stay counted. */
	assert_memory_equal(p, "bytes", 5);
	segment_put(s);
	assert_int_equal(segment_bytes_held(), 4096);
	assert_null(create(2, 8192, &result));
	assert_int_equal(result, MB_ENOSPACE);
	assert_memory_equal(p, "bytes", 5);
	/* The last reference: the budget is back. */
	segment_put(s);
	assert_int_equal(segment_bytes_held(), 0);
	munmap(p, 4096);
	t = create(2, 8192, &result);
	assert_non_null(t);
	segment_put(t);
	assert_int_equal(unit_shm_count(broker.cfg.instance), 0);
	assert_int_equal(unit_fd_count(), fds);
	broker.cfg.max_shm_bytes = 0;
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_segment_name),
		cmocka_unit_test(test_segment_sealed_read_only),
		cmocka_unit_test(test_segment_sealed_for_group),
		cmocka_unit_test(test_segment_budget_until_last_put),
	};

	return cmocka_run_group_tests(tests, broker_fixture_group_setup,
				      broker_fixture_group_teardown);
}
