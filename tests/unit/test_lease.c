/* SPDX-License-Identifier: MIT */
/*
 * test_lease.c - attachments (leases) and the budget: a lease holds its
 * generation's segment, so the bytes of a segment unlinked while attached
 * (an unload that timed out, a drain past its deadline) stay counted
 * against --max-shm-bytes until the last of those leases is released; a
 * lease counts only for the generation it holds, never for a later one;
 * a connection that goes away releases what it held.
 */
#include <sys/socket.h>

#include "unit.h"

#include "mbrokerd.h"
#include "broker_fixture.h"
#include "lease.h"

/* A new generation of m of size bytes serves; returns the one it
 * replaced. */
static struct generation *
replace(struct model *m, uint64_t size)
{
	broker_fixture_loaded_generation(m, "/models/m", &provider_raw, size);
	return registry_generation_promote(m);
}

/* Lets go of g's n segments as an unload or a drain does; returns the
 * bytes it reports freed, and asserts it removed the names. */
static uint64_t
release_all(struct generation *g, unsigned n)
{
	uint64_t freed = 0;
	unsigned unlinked = 0;

	registry_generation_release(g, &freed, &unlinked);
	assert_int_equal(unlinked, n);
	assert_null(g->members);
	return freed;
}

/* The same for a single file's one segment. */
static uint64_t
release(struct generation *g)
{
	return release_all(g, 1);
}

static void
test_lease_bytes_held_until_last_release(void **state)
{
	struct model *m = broker_fixture_ready_model("m", "/models/m",
						     &provider_raw, NULL);
	struct generation *first = model_current(m), *second;
	struct lease *a, *b, *c2;
	struct conn *x, *y;
	int px, py;

	(void)state;
	x = broker_fixture_conn_new(&px);
	y = broker_fixture_conn_new(&py);
	a = lease_add(x, first);
	b = lease_add(y, first);
	assert_non_null(a);
	assert_non_null(b);
	assert_ptr_equal(lease_generation(a), first);
	assert_ptr_equal(lease_find(x, lease_id(a)), a);
	assert_null(lease_find(y, lease_id(a)));
	assert_int_equal(model_leases(m), 2);
	assert_int_equal(lease_holders_count(), 2);
	assert_int_equal(segment_bytes_held(), 4096);
	/* The unload timed out: the name goes, both holders keep the bytes
	 * (none are reported freed). */
	assert_int_equal(release(first), 0);
	assert_int_equal(unit_shm_count(broker.cfg.instance), 0);
	lease_release(a);
	assert_int_equal(segment_bytes_held(), 4096);
	assert_int_equal(lease_holders_count(), 1);
	/* A later generation of m, attached by x: only x's lease holds it;
	 * y's still holds the first. */
	assert_ptr_equal(replace(m, 8192), first);
	second = model_current(m);
	c2 = lease_add(x, second);
	assert_non_null(c2);
	assert_int_equal(release(second), 0);
	assert_int_equal(segment_bytes_held(), 4096 + 8192);
	lease_release(b);
	assert_int_equal(segment_bytes_held(), 8192);
	assert_int_equal(first->nleases, 0);
	lease_release(c2);
	assert_int_equal(segment_bytes_held(), 0);
	assert_int_equal(lease_holders_count(), 0);
	/* Nobody attached: the bytes go back at once, reported freed. */
	assert_ptr_equal(replace(m, 4096), second);
	assert_int_equal(segment_bytes_held(), 4096);
	assert_int_equal(release(model_current(m)), 4096);
	assert_int_equal(segment_bytes_held(), 0);
	conn_close_all();
	close(px);
	close(py);
	registry_clear();
}

static void
test_lease_bundle_holds_every_member(void **state)
{
	struct model *m = registry_add("b");
	int fds[MB_FDS_PER_MESSAGE], px;
	struct generation *g;
	struct lease *l;
	struct conn *x;

	(void)state;
	assert_non_null(m);
	registry_set_state(m, MODEL_LOADING);
	g = broker_fixture_loaded_bundle(m, "/models/b", 10, 4096);
	assert_null(registry_generation_promote(m));
	registry_set_state(m, MODEL_READY);
	assert_true(generation_is_bundle(g));
	assert_int_equal(unit_shm_count(broker.cfg.instance), 10);
	x = broker_fixture_conn_new(&px);
	assert_non_null(l = lease_add(x, g));
	assert_int_equal(lease_members(l), 10);
	/* Pages of 8, in member order. */
	assert_int_equal(lease_descriptors(l, 0, fds), 8);
	for (unsigned i = 0; i < 8; i++)
		assert_int_equal(fds[i], segment_fd(g->members[i].segment));
	assert_int_equal(lease_descriptors(l, 8, fds), 2);
	assert_int_equal(fds[1], segment_fd(g->members[9].segment));
	assert_int_equal(lease_descriptors(l, 10, fds), 0);
	/* Unloaded while held: every name goes, every byte stays counted
	 * (none reported freed) until the lease is released. */
	assert_int_equal(segment_bytes_held(), 10 * 4096);
	assert_int_equal(release_all(g, 10), 0);
	assert_int_equal(unit_shm_count(broker.cfg.instance), 0);
	assert_int_equal(segment_bytes_held(), 10 * 4096);
	assert_int_equal(segment_count(), 10);
	lease_release(l);
	assert_int_equal(segment_bytes_held(), 0);
	assert_int_equal(segment_count(), 0);
	conn_close_all();
	close(px);
	registry_clear();
}

static void
test_lease_lost_connection_releases(void **state)
{
	struct model *m = broker_fixture_ready_model("m", "/models/m",
						     &provider_raw, NULL);
	struct generation *g = model_current(m);
	struct conn *x;
	int px;

	(void)state;
	x = broker_fixture_conn_new(&px);
	assert_non_null(lease_add(x, g));
	assert_non_null(lease_add(x, g));
	assert_int_equal(lease_count(x), 2);
	assert_int_equal(model_leases(m), 2);
	/* Unlinked while held, then the holder goes: the budget is back. */
	assert_int_equal(release(g), 0);
	assert_int_equal(segment_bytes_held(), 4096);
	conn_lost(x, "test");
	/* Released after the callback that lost it, not inside. */
	assert_int_equal(model_leases(m), 2);
	event_base_loop(broker.base, EVLOOP_NONBLOCK);
	assert_int_equal(model_leases(m), 0);
	assert_int_equal(lease_holders_count(), 0);
	assert_int_equal(segment_bytes_held(), 0);
	close(px);
	registry_clear();
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_lease_bytes_held_until_last_release),
		cmocka_unit_test(test_lease_bundle_holds_every_member),
		cmocka_unit_test(test_lease_lost_connection_releases),
	};

	return cmocka_run_group_tests(tests, broker_fixture_group_setup,
				      broker_fixture_group_teardown);
}
