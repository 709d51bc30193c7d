/* SPDX-License-Identifier: MIT */
/*
 * test_unload.c - the unload and shutdown sequences on a real event loop:
 * a failing provider hook is logged and the segment is unlinked anyway; a
 * worker that holds on is sent the event and the signal, then named in the
 * ERROR after the deadline; a second unload ends the ERROR once it let
 * go; an unload joined with a shorter timeout keeps the first's deadline;
 * a shutdown with nothing loaded succeeds at once.
 */
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>

#include "unit.h"

#include "mbrokerd.h"
#include "wire.h"

#include "broker_fixture.h"

static int hook_calls;
static volatile sig_atomic_t signals_seen;
static char log_path[64];
static int saved_stderr = -1;

static int
failing_unload(void *state)
{
	(void)state;
	hook_calls++;
	return -1;
}

static const struct provider failing_provider = {
	.name = "failing",
	.probe = NULL,
	.load = NULL,
	.unload = failing_unload,
};

static void
on_signal(int sig)
{
	(void)sig;
	signals_seen++;
}

static bool
model_in_error(void)
{
	struct model *m = registry_find("m");

	return m != NULL && m->state == MODEL_ERROR;
}

static char *
read_log(void)
{
	static char buf[8192];
	FILE *f = fopen(log_path, "r");
	size_t n = f != NULL ? fread(buf, 1, sizeof buf - 1, f) : 0;

	if (f != NULL)
		fclose(f);
	buf[n] = '\0';
	return buf;
}

static void
test_unload_hook_failure_goes_on(void **state)
{
	struct model *m =
		broker_fixture_ready_model(&failing_provider, &hook_calls);

	(void)state;
	assert_int_equal(unit_shm_count(broker.cfg.instance), 2); /* + sem */
	unload_begin(m, 1000, NULL, NULL, false);
	assert_int_equal(m->state, MODEL_UNLOADING);
	broker_fixture_run_until(broker_fixture_registry_empty);
	assert_int_equal(hook_calls, 1);
	assert_int_equal(unit_shm_count(broker.cfg.instance), 1);
	assert_non_null(strstr(read_log(), "unload hook failed; going on"));
	assert_non_null(strstr(read_log(), "model m: unloaded in"));
}

static void
test_unload_timeout_names_holder(void **state)
{
	char buf[WIRE_MAX_REPLY], pid[32];
	struct model *m = broker_fixture_ready_model(&provider_raw, &hook_calls);
	struct conn *c;
	int sv[2], fd;
	ssize_t n;

	(void)state;
	m->provider_state = NULL;
	assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK |
					     SOCK_CLOEXEC, 0, sv), 0);
	assert_int_equal(conn_accept(sv[0]), 0);
	c = TAILQ_FIRST(&broker.conns);
	assert_non_null(attach_add(c, m));
	signals_seen = 0;
	unload_begin(m, 150, NULL, NULL, false);
	/* The holder is told on its connection and by signal. */
	n = wire_recv(sv[1], buf, sizeof buf, &fd, MSG_DONTWAIT);
	assert_true(n > 0);
	buf[n] = '\0';
	assert_non_null(strstr(buf, "\"event\":\"unload\""));
	assert_non_null(strstr(buf, "\"model\":\"m\""));
	broker_fixture_run_until(model_in_error);
	assert_int_equal(signals_seen, 1);
	snprintf(pid, sizeof pid, "pids [%ld]", (long)getpid());
	assert_non_null(strstr(m->error, "unload timed out"));
	assert_non_null(strstr(m->error, pid));
	assert_int_equal(unit_shm_count(broker.cfg.instance), 1);
	assert_string_equal(m->segment, "");
	assert_int_equal(m->ro_fd, -1);
	/* Once the holder is gone, a second unload ends the ERROR. */
	conn_close_all();
	close(sv[1]);
	assert_int_equal(m->nattached, 0);
	unload_begin(m, 1000, NULL, NULL, false);
	broker_fixture_run_until(broker_fixture_registry_empty);
}

static void
test_unload_join_keeps_the_deadline(void **state)
{
	struct model *m = broker_fixture_ready_model(&provider_raw, &hook_calls);
	int64_t deadline, t0 = clock_monotonic_ms();
	int sv[2];

	(void)state;
	m->provider_state = NULL;
	assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK |
					     SOCK_CLOEXEC, 0, sv), 0);
	assert_int_equal(conn_accept(sv[0]), 0);
	assert_non_null(attach_add(TAILQ_FIRST(&broker.conns), m));
	unload_begin(m, 5000, NULL, NULL, false);
	deadline = m->unload_deadline_ms;
	unload_begin(m, 50, NULL, NULL, false);
	assert_int_equal(m->unload_deadline_ms, deadline);
	while (clock_monotonic_ms() - t0 < 300) {
		event_base_loop(broker.base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
		poll(NULL, 0, 5);
	}
	assert_int_equal(m->state, MODEL_UNLOADING);
	/* The holder goes: the unload ends clean. */
	conn_close_all();
	close(sv[1]);
	broker_fixture_run_until(broker_fixture_registry_empty);
}

static void
test_unload_shutdown_with_nothing_loaded(void **state)
{
	int64_t t0 = clock_monotonic_ms();

	(void)state;
	shutdown_begin(10000, NULL, NULL, "by the test");
	event_base_dispatch(broker.base);
	assert_true(broker.shutdown_done);
	assert_int_equal(broker.exit_code, 0);
	assert_in_range(clock_monotonic_ms() - t0, 0, 2000);
	assert_non_null(strstr(read_log(), "shutdown complete"));
}

static int
group_setup(void **state)
{
	struct sigaction sa = {.sa_handler = on_signal};
	int fd;

	(void)state;
	if (broker_fixture_setup(LOG_LEVEL_INFO) < 0)
		return -1;
	broker.cfg.unload_signal = SIGUSR2;
	sigaction(SIGUSR2, &sa, NULL);
	snprintf(log_path, sizeof log_path, "/tmp/mbroker-unit-log.XXXXXX");
	if ((fd = mkstemp(log_path)) < 0)
		return -1;
	saved_stderr = dup(STDERR_FILENO);
	dup2(fd, STDERR_FILENO);
	close(fd);
	return unload_init();
}

static int
group_teardown(void **state)
{
	(void)state;
	conn_close_all();
	unload_shutdown();
	json_decref(broker.shutdown_stuck_pids);
	broker_fixture_teardown();
	dup2(saved_stderr, STDERR_FILENO);
	close(saved_stderr);
	unlink(log_path);
	return 0;
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_unload_hook_failure_goes_on),
		cmocka_unit_test(test_unload_timeout_names_holder),
		cmocka_unit_test(test_unload_join_keeps_the_deadline),
		cmocka_unit_test(test_unload_shutdown_with_nothing_loaded),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
