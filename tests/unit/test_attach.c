/* SPDX-License-Identifier: MIT */
/*
 * test_attach.c - attachments and the budget: the bytes of a segment
 * unlinked while attached (an unload that timed out) stay counted against
 * --max-shm-bytes until the last of those attachments is released, and an
 * attachment already holding such bytes is never counted for a later
 * segment.
 */
#include <sys/socket.h>

#include "unit.h"

#include "mbrokerd.h"
#include "broker_fixture.h"

/* Takes size bytes of the budget the way the gen-th load of m does. */
static void
reserve(uint64_t gen, uint64_t size)
{
	char name[NAMES_SHM_MAX], err[256];
	int fd;

	assert_int_equal(segment_name(name, sizeof name, "m", gen), 0);
	fd = segment_create(name, size, err, sizeof err);
	assert_true(fd >= 0);
	segment_filled(fd);
	close(fd);
	assert_int_equal(segment_unlink(name), 0);
}

static void
test_attach_strand_until_last_release(void **state)
{
	struct model *m = registry_add("m");
	struct attachment *a, *b, *c2;
	struct conn *x, *y;
	int px, py;

	(void)state;
	m->state = MODEL_READY;
	x = broker_fixture_conn_new(&px);
	y = broker_fixture_conn_new(&py);
	a = attach_add(x, m);
	b = attach_add(y, m);
	assert_non_null(a);
	assert_non_null(b);
	reserve(1, 4096);
	assert_int_equal(segment_bytes_held(), 4096);
	/* The unload timed out: both holders keep the bytes. */
	assert_true(attach_strand(m, 4096));
	attach_release(a);
	assert_int_equal(segment_bytes_held(), 4096);
	/* A later segment of m, attached by x: only x's attachment holds it;
	 * y's still holds the first. */
	reserve(2, 8192);
	c2 = attach_add(x, m);
	assert_non_null(c2);
	assert_true(attach_strand(m, 8192));
	assert_int_equal(segment_bytes_held(), 4096 + 8192);
	attach_release(b);
	assert_int_equal(segment_bytes_held(), 8192);
	attach_release(c2);
	assert_int_equal(segment_bytes_held(), 0);
	/* Nobody attached, or only holders of older segments: nothing is
	 * taken over, the caller gives the bytes back. */
	assert_false(attach_strand(m, 1));
	c2 = attach_add(x, m);
	reserve(3, 4096);
	assert_true(attach_strand(m, 4096));
	assert_false(attach_strand(m, 4096));
	attach_release(c2);
	assert_int_equal(segment_bytes_held(), 0);
	conn_close_all();
	close(px);
	close(py);
	registry_clear();
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_attach_strand_until_last_release),
	};

	return cmocka_run_group_tests(tests, broker_fixture_group_setup,
				      broker_fixture_group_teardown);
}
