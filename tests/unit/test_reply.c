/* SPDX-License-Identifier: MIT */
/*
 * test_reply.c - the requests whose reply is deferred (load with wait,
 * unload, shutdown), sent through the real dispatcher on a socketpair:
 * out of memory for the deferred reply, each is answered `internal` at once
 * and nothing starts; a connection that goes away leaves no reply owed to
 * it behind, also when the deferred reply itself finds it gone.
 * WRAP: calloc pending_add
 */
#include <signal.h>
#include <stdlib.h>

#include "unit.h"

#include "mbrokerd.h"

#include "broker_fixture.h"
#include "lease.h"
#include "ops.h"
#include "reply.h"

void *__real_calloc(size_t n, size_t size);
void *__wrap_calloc(size_t n, size_t size);
bool __real_pending_add(struct pending_list *list, struct conn *c,
			json_t *id);
bool __wrap_pending_add(struct pending_list *list, struct conn *c,
			json_t *id);

/* When set, allocating a deferred reply fails: the first calloc inside
 * pending_add (its error reply, sent after, gets its memory). */
static bool fail_pending, in_pending_add;
static struct broker_fixture_client client;

static void
request(const char *json)
{
	broker_fixture_client_request(&client, json);
}

static void
expect(const char *want)
{
	broker_fixture_client_expect(&client, want);
}

void *
__wrap_calloc(size_t n, size_t size)
{
	if (in_pending_add) {
		in_pending_add = false;
		return NULL;
	}
	return __real_calloc(n, size);
}

bool
__wrap_pending_add(struct pending_list *list, struct conn *c, json_t *id)
{
	bool added;

	in_pending_add = fail_pending;
	added = __real_pending_add(list, c, id);
	in_pending_add = false;
	return added;
}

static void
test_pending_out_of_memory_answers_internal(void **state)
{
	struct model *m = broker_fixture_ready_model("m", "/models/m",
						     &provider_raw, NULL);

	(void)state;
	fail_pending = true;
	request("{\"id\":2,\"op\":\"load\",\"name\":\"x\",\"path\":\"/x\","
		"\"wait\":true}");
	expect("\"id\":2,\"ok\":false,\"error\":{\"code\":\"internal\"");
	assert_null(registry_find("x"));
	request("{\"id\":3,\"op\":\"unload\",\"name\":\"m\"}");
	expect("\"id\":3,\"ok\":false,\"error\":{\"code\":\"internal\"");
	assert_int_equal(model_state(m), MODEL_READY);
	request("{\"id\":4,\"op\":\"shutdown\"}");
	expect("\"id\":4,\"ok\":false,\"error\":{\"code\":\"internal\"");
	assert_false(broker.shutting_down);
	fail_pending = false;
	/* With memory, the unload is answered when it ends. */
	request("{\"id\":5,\"op\":\"unload\",\"name\":\"m\"}");
	broker_fixture_run_until(broker_fixture_registry_empty);
	expect("\"id\":5,\"ok\":true");
	assert_string_equal(broker_fixture_client_read(&client), "");
}

static void
test_pending_lost_connection_owes_nothing(void **state)
{
	struct model *m = broker_fixture_ready_model("m", "/models/m",
						     &provider_raw, NULL);
	struct broker_fixture_client holder;

	(void)state;
	/* A second client holds m, so the unload waits. */
	broker_fixture_client_open(&holder);
	assert_non_null(lease_add(holder.conn, model_current(m)));
	request("{\"id\":6,\"op\":\"unload\",\"name\":\"m\",\"timeout\":60}");
	assert_int_equal(model_state(m), MODEL_UNLOADING);
	assert_int_equal(client.conn->npending, 1);
	conn_lost(client.conn, "test");
	/* Ended after this callback: what it was owed is dropped then. */
	assert_int_equal(client.conn->npending, 1);
	event_base_loop(broker.base, EVLOOP_NONBLOCK);
	assert_int_equal(conn_count(), 1);
	/* The unload goes on without it and ends when the holder leaves. */
	conn_lost(holder.conn, "test");
	broker_fixture_run_until(broker_fixture_registry_empty);
	close(holder.fd);
}

static void
test_pending_reply_to_a_closed_client(void **state)
{
	struct model *m = broker_fixture_ready_model("m", "/models/m",
						     &provider_raw, NULL);
	struct broker_fixture_client holder;
	uint64_t id = client.conn->id;

	(void)state;
	broker_fixture_client_open(&holder);
	assert_non_null(lease_add(holder.conn, model_current(m)));
	request("{\"id\":7,\"op\":\"unload\",\"name\":\"m\",\"timeout\":60}");
	assert_int_equal(model_state(m), MODEL_UNLOADING);
	/* The client is gone before the broker read its end of file: the
	 * deferred reply is the first to hear (EPIPE), and loses it. */
	close(client.fd);
	client.fd = -1;
	conn_lost(holder.conn, "test");
	broker_fixture_run_until(broker_fixture_registry_empty);
	assert_null(conn_find(id));
	close(holder.fd);
}

static void
test_pending_bounded_per_connection(void **state)
{
	struct model *m = broker_fixture_ready_model("m", "/models/m",
						     &provider_raw, NULL);
	struct broker_fixture_client holder;

	(void)state;
	broker_fixture_client_open(&holder);
	assert_non_null(lease_add(holder.conn, model_current(m)));
	/* Joined unloads all wait: CONN_MAX_QUEUED of them, then `limit`. */
	for (int i = 0; i < CONN_MAX_QUEUED; i++)
		request("{\"id\":8,\"op\":\"unload\",\"name\":\"m\","
			"\"timeout\":60}");
	assert_string_equal(broker_fixture_client_read(&client), "");
	request("{\"id\":9,\"op\":\"unload\",\"name\":\"m\"}");
	expect("\"id\":9,\"ok\":false,\"error\":{\"code\":\"limit\"");
	assert_int_equal(client.conn->npending, CONN_MAX_QUEUED);
	close(holder.fd);
}

/* Each test talks on a fresh connection that said hello. */
static int
setup(void **state)
{
	(void)state;
	broker_fixture_client_open(&client);
	expect("\"ok\":true");
	return 0;
}

static int
teardown(void **state)
{
	(void)state;
	fail_pending = false;
	conn_close_all();
	registry_clear();
	if (client.fd >= 0)
		close(client.fd);
	return 0;
}

static int
group_setup(void **state)
{
	(void)state;
	if (broker_fixture_setup(LOG_LEVEL_ERROR) < 0)
		return -1;
	/* The holder is this process: its unload signal is ignored. */
	broker.cfg.unload_signal = SIGUSR2;
	signal(SIGUSR2, SIG_IGN);
	return unload_init();
}

static int
group_teardown(void **state)
{
	(void)state;
	unload_shutdown();
	broker_fixture_teardown();
	return 0;
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(
			test_pending_out_of_memory_answers_internal, setup,
			teardown),
		cmocka_unit_test_setup_teardown(
			test_pending_lost_connection_owes_nothing, setup,
			teardown),
		cmocka_unit_test_setup_teardown(
			test_pending_reply_to_a_closed_client, setup, teardown),
		cmocka_unit_test_setup_teardown(
			test_pending_bounded_per_connection, setup, teardown),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
