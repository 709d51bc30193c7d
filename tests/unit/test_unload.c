/* SPDX-License-Identifier: MIT */
/*
 * test_unload.c - the unload and shutdown sequences on a real event loop:
 * a failing provider hook is logged and the segment is unlinked anyway; a
 * worker that holds on is sent the event and the signal, then named in the
 * ERROR after the deadline; a second unload ends the ERROR once it let
 * go; an unload joined with a shorter timeout keeps the first's deadline;
 * a shutdown with nothing loaded succeeds at once.  A replaced generation
 * drains: its holders are told, it goes when the last lets go, or at its
 * deadline is unlinked anyway and listed as ERROR while the model serves
 * on.
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
#include "lease.h"
#include "ops.h"

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

	return m != NULL && model_state(m) == MODEL_ERROR;
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
	struct model *m = broker_fixture_ready_model(
		"m", "/models/m", &failing_provider, &hook_calls);

	(void)state;
	assert_int_equal(unit_shm_count(broker.cfg.instance), 2); /* + sem */
	unload_begin(m, 1000, NULL, NULL, true, NULL, NULL);
	assert_int_equal(model_state(m), MODEL_UNLOADING);
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
	struct model *m = broker_fixture_ready_model("m", "/models/m",
						     &provider_raw, NULL);
	struct conn *c;
	json_t *o;
	int sv[2], fd;
	ssize_t n;

	(void)state;
	c = broker_fixture_conn_new(&sv[1]);
	assert_non_null(lease_add(c, model_current(m)));
	signals_seen = 0;
	unload_begin(m, 150, NULL, NULL, true, NULL, NULL);
	/* The holder is told on its connection and by signal. */
	n = wire_recv(sv[1], buf, sizeof buf, &fd, MSG_DONTWAIT);
	assert_true(n > 0);
	buf[n] = '\0';
	assert_non_null(strstr(buf, "\"event\":\"unload\""));
	assert_non_null(strstr(buf, "\"model\":\"m\""));
	broker_fixture_run_until(model_in_error);
	assert_int_equal(signals_seen, 1);
	snprintf(pid, sizeof pid, "pids [%ld]", (long)getpid());
	assert_non_null(strstr(model_error(m), "unload timed out"));
	assert_non_null(strstr(model_error(m), pid));
	/* The name is gone (the semaphore is left); the holder keeps the
	 * bytes, still counted. */
	assert_int_equal(unit_shm_count(broker.cfg.instance), 1);
	o = lease_model_json(m);
	assert_null(json_object_get(o, "segment"));
	assert_string_equal(json_string_value(json_object_get(o, "state")),
			    "ERROR");
	assert_int_equal(json_integer_value(json_array_get(
				 json_object_get(o, "pids"), 0)), getpid());
	json_decref(o);
	assert_int_equal(segment_bytes_held(), 4096);
	/* Once the holder is gone, a second unload ends the ERROR. */
	conn_close_all();
	close(sv[1]);
	assert_int_equal(model_leases(m), 0);
	assert_int_equal(segment_bytes_held(), 0);
	unload_begin(m, 1000, NULL, NULL, true, NULL, NULL);
	broker_fixture_run_until(broker_fixture_registry_empty);
}

static void
test_unload_join_keeps_the_deadline(void **state)
{
	struct model *m = broker_fixture_ready_model("m", "/models/m",
						     &provider_raw, NULL);
	int64_t t0 = clock_monotonic_ms();
	int peer;

	(void)state;
	assert_non_null(lease_add(broker_fixture_conn_new(&peer),
				  model_current(m)));
	unload_begin(m, 5000, NULL, NULL, true, NULL, NULL);
	unload_begin(m, 50, NULL, NULL, true, NULL, NULL);
	/* Well past the joined unload's 50 ms, the first one still waits. */
	while (clock_monotonic_ms() - t0 < 300) {
		event_base_loop(broker.base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
		poll(NULL, 0, 5);
	}
	assert_int_equal(model_state(m), MODEL_UNLOADING);
	/* The holder goes: the unload ends clean. */
	conn_close_all();
	close(peer);
	broker_fixture_run_until(broker_fixture_registry_empty);
}

/* The one message the client at fd received, or "". */
static const char *
received(int fd)
{
	static char buf[WIRE_MAX_REPLY + 1];
	int passed;
	ssize_t n = wire_recv(fd, buf, sizeof buf - 1, &passed, MSG_DONTWAIT);

	if (passed >= 0)
		close(passed);
	buf[n > 0 ? n : 0] = '\0';
	return buf;
}

/* m, READY at generation 1 held by a client (its end in *peer), replaced
 * by generation 2; returns the lease, and the old generation in *old. */
static struct lease *
replaced_while_held(struct model **m, struct generation **old, int *peer)
{
	struct lease *l;

	*m = broker_fixture_ready_model("m", "/models/m", &provider_raw, NULL);
	*old = model_current(*m);
	l = lease_add(broker_fixture_conn_new(peer), *old);
	assert_non_null(l);
	broker_fixture_loaded_generation(*m, "/models/m2", &provider_raw, 8192);
	assert_ptr_equal(registry_generation_promote(*m), *old);
	return l;
}

/* The model and the replaced generation the drain tests watch. */
static struct model *drained_model;
static struct generation *drained_old;

/* Whether the watched model has one generation left. */
static bool
one_generation_left(void)
{
	struct generation *g = model_generations(drained_model, NULL);

	return g != NULL && model_generations(drained_model, g) == NULL;
}

static void
test_unload_drain_ends_at_last_release(void **state)
{
	struct generation *old;
	struct model *m;
	char want[128];
	int peer;
	struct lease *l = replaced_while_held(&m, &old, &peer);

	(void)state;
	unload_drain(old, 60000);
	snprintf(want, sizeof want, "\"event\":\"replaced\",\"model\":\"m\","
		 "\"old_generation\":%llu,\"generation\":%llu",
		 (unsigned long long)old->number,
		 (unsigned long long)model_current(m)->number);
	if (strstr(received(peer), want) == NULL)
		fail_msg("no replaced event");
	/* Both copies exist until the holder lets go; the model serves. */
	assert_int_equal(unit_shm_count(broker.cfg.instance), 3); /* + sem */
	assert_int_equal(model_state(m), MODEL_READY);
	lease_release(l);
	drained_model = m;
	broker_fixture_run_until(one_generation_left);
	assert_int_equal(unit_shm_count(broker.cfg.instance), 2);
	assert_int_equal(segment_bytes_held(), 8192);
	assert_int_equal(model_state(m), MODEL_READY);
	conn_close_all();
	close(peer);
	registry_clear();
}

static bool
drain_timed_out(void)
{
	return drained_old->abandoned;
}

static void
test_unload_drain_deadline_unlinks_anyway(void **state)
{
	struct generation *old;
	struct model *m;
	json_t *o;
	int peer;
	struct lease *l = replaced_while_held(&m, &old, &peer);

	(void)state;
	unload_drain(old, 100);
	drained_model = m;
	drained_old = old;
	broker_fixture_run_until(drain_timed_out);
	/* Its name is gone, its bytes stay counted while held; listed as
	 * ERROR beside the generation serving. */
	assert_int_equal(unit_shm_count(broker.cfg.instance), 2);
	assert_int_equal(segment_bytes_held(), 4096 + 8192);
	o = registry_model_json(m);
	assert_string_equal(json_string_value(json_object_get(o, "state")),
			    "READY");
	assert_string_equal(json_string_value(json_object_get(
				    json_array_get(json_object_get(o, "generations"),
						   1), "state")), "ERROR");
	json_decref(o);
	assert_non_null(strstr(read_log(), "unlinked anyway"));
	/* The last holder lets go: the budget is back, the record goes. */
	lease_release(l);
	assert_int_equal(segment_bytes_held(), 8192);
	assert_true(one_generation_left());
	conn_close_all();
	close(peer);
	registry_clear();
}

static void
test_unload_shutdown_with_nothing_loaded(void **state)
{
	int64_t t0 = clock_monotonic_ms();

	(void)state;
	shutdown_begin(10000, NULL, NULL, "by the test");
	event_base_dispatch(broker.base);
	assert_true(shutdown_done());
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
	shutdown_free();
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
		cmocka_unit_test(test_unload_drain_ends_at_last_release),
		cmocka_unit_test(test_unload_drain_deadline_unlinks_anyway),
		cmocka_unit_test(test_unload_shutdown_with_nothing_loaded),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
