/* SPDX-License-Identifier: MIT */
/*
 * test_ackwait.c - the wait on the ack semaphore: a post wakes the main
 * loop at once, an armed deadline wakes it when it passes (not before), a
 * nearer deadline replaces a farther one, and the semaphore is unlinked at
 * the end.  If the semaphore cannot be created, nothing is left behind.
 * WRAP: sem_open
 */
#include <errno.h>
#include <fcntl.h>
#include <semaphore.h>
#include <stdarg.h>
#include <time.h>

#include "unit.h"

#include "mbrokerd.h"

static bool fail_sem_open;
static int wakes;

sem_t *__real_sem_open(const char *name, int flags, ...);
sem_t *__wrap_sem_open(const char *name, int flags, ...);

sem_t *
__wrap_sem_open(const char *name, int flags, ...)
{
	mode_t mode = 0;
	unsigned value = 0;
	va_list ap;

	if (fail_sem_open) {
		errno = EACCES;
		return SEM_FAILED;
	}
	if (flags & O_CREAT) {
		va_start(ap, flags);
		mode = (mode_t)va_arg(ap, unsigned);
		value = va_arg(ap, unsigned);
		va_end(ap);
	}
	return __real_sem_open(name, flags, mode, value);
}

static void
on_wake(void)
{
	wakes++;
	event_base_loopbreak(broker.base);
}

/* Runs the loop until a wake-up (at most 10 s); returns elapsed ms. */
static int64_t
run_until_wake(void)
{
	struct timeval safety = {10, 0};
	int64_t t0 = clock_monotonic_ms();

	wakes = 0;
	event_base_loopexit(broker.base, &safety);
	event_base_dispatch(broker.base);
	assert_int_equal(wakes, 1);
	return clock_monotonic_ms() - t0;
}

static void
test_ackwait_init_failure_leaves_nothing(void **state)
{
	(void)state;
	fail_sem_open = true;
	assert_int_equal(ackwait_init(on_wake), -1);
	fail_sem_open = false;
	ackwait_shutdown();
	assert_int_equal(unit_shm_count(broker.cfg.instance), 0);
}

static void
test_ackwait_deadline(void **state)
{
	int64_t elapsed;

	(void)state;
	assert_int_equal(ackwait_init(on_wake), 0);
	assert_int_equal(unit_shm_count(broker.cfg.instance), 1);
	ackwait_arm(clock_monotonic_ms() + 200);
	elapsed = run_until_wake();
	assert_in_range(elapsed, 195, 3000);
	ackwait_arm(-1);
	ackwait_shutdown();
	assert_int_equal(unit_shm_count(broker.cfg.instance), 0);
}

static void
test_ackwait_post_wakes(void **state)
{
	sem_t *sem;

	(void)state;
	assert_int_equal(ackwait_init(on_wake), 0);
	ackwait_arm(clock_monotonic_ms() + 60000);
	sem = sem_open(ackwait_name(), 0);
	assert_ptr_not_equal(sem, SEM_FAILED);
	assert_int_equal(sem_post(sem), 0);
	assert_in_range(run_until_wake(), 0, 5000);
	sem_close(sem);
	ackwait_shutdown();
}

static void
test_ackwait_nearer_deadline(void **state)
{
	int64_t elapsed;

	(void)state;
	assert_int_equal(ackwait_init(on_wake), 0);
	ackwait_arm(clock_monotonic_ms() + 60000);
	ackwait_arm(clock_monotonic_ms() + 100);
	/* The re-arm itself may wake the loop once; the deadline must too. */
	elapsed = run_until_wake();
	if (elapsed < 95) {
		ackwait_arm(clock_monotonic_ms() + 100 - elapsed);
		elapsed += run_until_wake();
	}
	assert_in_range(elapsed, 95, 5000);
	ackwait_shutdown();
}

static int
group_setup(void **state)
{
	(void)state;
	log_init(LOG_LEVEL_ERROR);
	unit_instance(broker.cfg.instance, sizeof broker.cfg.instance);
	broker.base = event_base_new();
	return broker.base != NULL ? 0 : -1;
}

static int
group_teardown(void **state)
{
	(void)state;
	unit_shm_scan(broker.cfg.instance, 1);
	event_base_free(broker.base);
	return 0;
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_ackwait_init_failure_leaves_nothing),
		cmocka_unit_test(test_ackwait_deadline),
		cmocka_unit_test(test_ackwait_post_wakes),
		cmocka_unit_test(test_ackwait_nearer_deadline),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
