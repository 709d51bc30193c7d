/* SPDX-License-Identifier: MIT */
/*
 * test_ackwait.c - the wait on the ack semaphore: a post wakes the main
 * loop at once, an armed deadline wakes it when it passes (not before), a
 * nearer deadline replaces a farther one, and the semaphore is unlinked at
 * the end.  If the semaphore cannot be created, nothing is left behind.
 * A wall clock stepped by an hour moves no deadline, and a failing
 * sem_clockwait still ends the wait at its deadline.
 * WRAP: sem_open sem_clockwait clock_gettime
 */
#include <errno.h>
#include <fcntl.h>
#include <semaphore.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <semaphore.h>
#include <time.h>

#include "unit.h"

#include "mbrokerd.h"

#include "broker_fixture.h"

/* Set by the test, read by the waiter thread inside the wrappers. */
static atomic_bool fail_sem_open, fail_clockwait, step_wall_clock;
static int wakes;

sem_t *__real_sem_open(const char *name, int flags, ...);
sem_t *__wrap_sem_open(const char *name, int flags, ...);
int __real_sem_clockwait(sem_t *sem, clockid_t clock,
			 const struct timespec *abstime);
int __wrap_sem_clockwait(sem_t *sem, clockid_t clock,
			 const struct timespec *abstime);
int __real_clock_gettime(clockid_t clock, struct timespec *ts);
int __wrap_clock_gettime(clockid_t clock, struct timespec *ts);

int
__wrap_sem_clockwait(sem_t *sem, clockid_t clock, const struct timespec *abstime)
{
	if (fail_clockwait) {
		errno = EINVAL;
		return -1;
	}
	return __real_sem_clockwait(sem, clock, abstime);
}

/* The wall clock jumps an hour ahead; the monotonic clock does not. */
int
__wrap_clock_gettime(clockid_t clock, struct timespec *ts)
{
	int r = __real_clock_gettime(clock, ts);

	if (r == 0 && step_wall_clock && clock == CLOCK_REALTIME)
		ts->tv_sec += 3600;
	return r;
}

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
	int64_t t0 = clock_monotonic_ms();
	int rounds = 0;

	(void)state;
	assert_int_equal(ackwait_init(on_wake), 0);
	ackwait_arm(t0 + 60000);
	ackwait_arm(t0 + 100);
	/* The re-arm itself may wake the loop once (the waiter keeps the
	 * deadline across it); the deadline must wake it too, at 100 ms,
	 * not at 60 s. */
	do {
		run_until_wake();
		rounds++;
	} while (clock_monotonic_ms() - t0 < 95 && rounds < 5);
	assert_in_range(clock_monotonic_ms() - t0, 95, 5000);
	assert_in_range(rounds, 1, 3);
	ackwait_shutdown();
}

static void
test_ackwait_wall_clock_step(void **state)
{
	int64_t elapsed;

	(void)state;
	assert_int_equal(ackwait_init(on_wake), 0);
	step_wall_clock = true;
	ackwait_arm(clock_monotonic_ms() + 200);
	elapsed = run_until_wake();
	step_wall_clock = false;
	assert_in_range(elapsed, 195, 3000);
	ackwait_shutdown();
}

static void
test_ackwait_failing_semaphore_keeps_deadline(void **state)
{
	int64_t t0 = clock_monotonic_ms(), deadline = t0 + 200;
	int rounds = 0;

	(void)state;
	assert_int_equal(ackwait_init(on_wake), 0);
	fail_clockwait = true;
	ackwait_arm(deadline);
	/* It polls meanwhile, every 10 ms rather than in a hot loop; a
	 * wake-up must still come once the deadline has passed. */
	while (clock_monotonic_ms() < deadline) {
		run_until_wake();
		rounds++;
	}
	assert_in_range(clock_monotonic_ms() - t0, 195, 3000);
	assert_in_range(rounds, 1, 60);
	fail_clockwait = false;
	ackwait_shutdown();
}

/* Whatever a test left running (when it failed) stops before the next. */
static int
stop_waiter(void **state)
{
	(void)state;
	ackwait_shutdown();
	return 0;
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_teardown(test_ackwait_init_failure_leaves_nothing,
					  stop_waiter),
		cmocka_unit_test_teardown(test_ackwait_deadline, stop_waiter),
		cmocka_unit_test_teardown(test_ackwait_post_wakes, stop_waiter),
		cmocka_unit_test_teardown(test_ackwait_nearer_deadline, stop_waiter),
		cmocka_unit_test_teardown(test_ackwait_wall_clock_step, stop_waiter),
		cmocka_unit_test_teardown(
			test_ackwait_failing_semaphore_keeps_deadline,
			stop_waiter),
	};

	return cmocka_run_group_tests(tests, broker_fixture_group_setup,
				      broker_fixture_group_teardown);
}
