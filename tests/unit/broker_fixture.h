/* SPDX-License-Identifier: MIT */
/*
 * broker_fixture.h - the broker state a unit test starts from: the real
 * option defaults (as mbrokerd with no arguments), a private instance, a
 * quiet log and an event base.  Include after mbrokerd.h and unit.h.
 */
#ifndef MB_TESTS_BROKER_FIXTURE_H
#define MB_TESTS_BROKER_FIXTURE_H

#include <poll.h>
#include <stdbool.h>

/* Returns 0, or -1 when the defaults or the event base fail. */
static inline int
broker_fixture_setup(enum log_level level)
{
	char arg0[] = "mbrokerd";
	char *argv[] = {arg0, NULL};

	if (options_parse(1, argv, &broker.cfg, stdout, stderr) != OPTIONS_RUN)
		return -1;
	unit_instance(broker.cfg.instance, sizeof broker.cfg.instance);
	snprintf(broker.token, sizeof broker.token, "0000beef");
	log_init(level);
	broker.base = event_base_new();
	return broker.base != NULL ? 0 : -1;
}

/* Frees what the fixture and the test left: connections, models, names. */
static inline void
broker_fixture_teardown(void)
{
	conn_close_all();
	registry_clear();
	unit_shm_scan(broker.cfg.instance, 1);
	event_base_free(broker.base);
	broker.base = NULL;
	options_free(&broker.cfg);
}

/* cmocka group setup and teardown with a quiet log. */
static inline int
broker_fixture_group_setup(void **state)
{
	(void)state;
	return broker_fixture_setup(LOG_LEVEL_ERROR);
}

static inline int
broker_fixture_group_teardown(void **state)
{
	(void)state;
	broker_fixture_teardown();
	return 0;
}

/* Runs the event loop until cond holds, at most 10 s; asserts it does. */
static inline void
broker_fixture_run_until(bool (*cond)(void))
{
	int64_t deadline = clock_monotonic_ms() + 10000;

	while (!cond() && clock_monotonic_ms() < deadline) {
		event_base_loop(broker.base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
		poll(NULL, 0, 1);
	}
	assert_true(cond());
}

#endif
