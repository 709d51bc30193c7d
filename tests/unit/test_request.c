/* SPDX-License-Identifier: MIT */
/*
 * test_request.c - the control protocol as a client sees it: requests go
 * through request_dispatch on a real connection and the replies are read
 * from the other end of the socket pair.  Every bad request gets an error
 * reply with its code and a message; the broker state is untouched.  A
 * reply that cannot be sent loses that client only.
 * WRAP: sendmsg
 */
#include <stdlib.h>
#include <sys/socket.h>

#include "unit.h"

#include "mbrokerd.h"
#include "wire.h"

#include "broker_fixture.h"
#include "lease.h"

static int peer = -1;
static struct conn *conn;
static int fail_sendmsg; /* fail the Nth sendmsg from now; 0: never */

ssize_t __real_sendmsg(int fd, const struct msghdr *msg, int flags);
ssize_t __wrap_sendmsg(int fd, const struct msghdr *msg, int flags);

ssize_t
__wrap_sendmsg(int fd, const struct msghdr *msg, int flags)
{
	if (fail_sendmsg > 0 && --fail_sendmsg == 0) {
		errno = ENOBUFS;
		return -1;
	}
	return __real_sendmsg(fd, msg, flags);
}

static int
setup(void **state)
{
	int sv[2];

	(void)state;
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC,
		       0, sv) < 0 || conn_accept(sv[0]) < 0)
		return -1;
	peer = sv[1];
	conn = conn_newest();
	return 0;
}

static int
teardown(void **state)
{
	(void)state;
	conn_close_all();
	registry_clear();
	close(peer);
	return 0;
}

/* Dispatches text on the connection and returns the one reply. */
static json_t *
ask(const char *text)
{
	char buf[WIRE_MAX_REPLY + 1], err[256];
	json_t *reply;
	ssize_t n;
	int fd;

	request_dispatch(conn, text, strlen(text));
	n = wire_recv(peer, buf, sizeof buf, &fd, MSG_DONTWAIT);
	if (n <= 0)
		fail_msg("no reply to %s", text);
	assert_int_equal(fd, -1);
	reply = wire_decode(buf, (size_t)n, err, sizeof err);
	assert_non_null(reply);
	assert_int_equal(wire_recv(peer, buf, sizeof buf, &fd, MSG_DONTWAIT),
			 -EAGAIN);
	return reply;
}

static void
hello(void)
{
	json_t *r = ask("{\"id\":1,\"op\":\"hello\",\"version\":1}");

	assert_true(json_is_true(json_object_get(r, "ok")));
	json_decref(r);
}

/* A model called name whose load failed (ERROR, no generation). */
static struct model *
error_model(const char *name)
{
	struct model *m = registry_add(name);

	assert_non_null(m);
	registry_set_state(m, MODEL_LOADING);
	model_set_error(m, "the load failed");
	registry_set_state(m, MODEL_ERROR);
	return m;
}

/* Asks text and checks the reply is error code with message inside. */
static void
expect_error(const char *text, const char *code, const char *message)
{
	json_t *r = ask(text);
	const json_t *err = json_object_get(r, "error");
	const char *got_code = json_string_value(json_object_get(err, "code"));
	const char *got_msg = json_string_value(json_object_get(err, "message"));

	assert_true(json_is_false(json_object_get(r, "ok")));
	if (got_code == NULL || strcmp(got_code, code) != 0 || got_msg == NULL ||
	    strstr(got_msg, message) == NULL)
		fail_msg("%s: got %s '%s', want %s '%s'", text, got_code,
			 got_msg, code, message);
	json_decref(r);
}

static void
test_request_hello_required(void **state)
{
	(void)state;
	expect_error("{\"id\":1,\"op\":\"ping\"}", "bad_request", "say hello first");
	expect_error("{\"id\":2,\"op\":\"hello\",\"version\":2}",
		     "version_mismatch", "protocol version 1, client 2");
	expect_error("{\"id\":3,\"op\":\"hello\"}", "bad_request",
		     "\"version\" must be an integer");
	expect_error("{\"id\":4,\"op\":\"hello\",\"version\":1,\"role\":\"Admin!\"}",
		     "bad_request", "role");
	hello();
	assert_true(conn->hello);
}

static void
test_request_hello_reply(void **state)
{
	json_t *r;

	(void)state;
	r = ask("{\"id\":41,\"op\":\"hello\",\"version\":1,\"role\":\"worker\"}");
	assert_int_equal(json_integer_value(json_object_get(r, "id")), 41);
	assert_int_equal(json_integer_value(json_object_get(r, "version")), 1);
	assert_string_equal(json_string_value(json_object_get(r, "instance")),
			    broker.cfg.instance);
	assert_non_null(json_object_get(r, "ack_semaphore"));
	assert_string_equal(conn->role, "worker");
	json_decref(r);
}

/* The role's exact format, as docs/protocol.md states it: 1 to 15
 * letters a-z, said in the refusal. */
static void
test_request_hello_role_bounds(void **state)
{
	static const char *const refused[] = {
		"\"abcdefghijklmnop\"", "\"\"", "\"Worker\"", "\"w-1\"", "7",
	};
	char text[128];
	json_t *r;

	(void)state;
	for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
		snprintf(text, sizeof text, "{\"id\":1,\"op\":\"hello\","
			 "\"version\":1,\"role\":%s}", refused[i]);
		expect_error(text, "bad_request",
			     "\"role\" must be 1 to 15 lowercase letters a-z");
		assert_false(conn->hello);
	}
	r = ask("{\"id\":2,\"op\":\"hello\",\"version\":1,"
		"\"role\":\"abcdefghijklmno\"}");
	assert_true(json_is_true(json_object_get(r, "ok")));
	assert_string_equal(conn->role, "abcdefghijklmno");
	json_decref(r);
}

static void
test_request_malformed(void **state)
{
	json_t *r;

	(void)state;
	hello();
	expect_error("{\"op\":", "bad_request", "invalid JSON");
	expect_error("[\"ping\"]", "bad_request", "not a JSON object");
	expect_error("{\"op\":\"ping\"}", "bad_request", "\"id\" must be an integer");
	expect_error("{\"id\":\"7\",\"op\":\"ping\"}", "bad_request",
		     "\"id\" must be an integer");
	expect_error("{\"id\":7}", "bad_request", "\"op\" must be a string");
	expect_error("{\"id\":7,\"op\":\"fly\"}", "bad_request", "unknown op \"fly\"");
	expect_error("{\"id\":7,\"op\":\"ping\",\"op\":\"list\"}", "bad_request",
		     "duplicate");
	r = ask("{\"id\":\"x\"}");
	assert_true(json_is_null(json_object_get(r, "id")));
	json_decref(r);
	r = ask("{\"id\":99,\"op\":\"ping\"}");
	assert_int_equal(json_integer_value(json_object_get(r, "id")), 99);
	assert_true(json_is_true(json_object_get(r, "ok")));
	json_decref(r);
}

/* A name or op cut short in the message never leaves half a UTF-8
 * character there, nor do bytes that are not UTF-8 get in: the reply
 * keeps its "message", valid UTF-8. */
static void
test_request_message_cut_utf8(void **state)
{
	char text[256], want[128];
	const char *a63 = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
	struct model *broken;

	(void)state;
	hello();
	assert_int_equal(strlen(a63), 63);
	snprintf(text, sizeof text, "{\"id\":1,\"op\":\"attach\","
		 "\"name\":\"%s\u00e9\"}", a63);
	snprintf(want, sizeof want, "no model called %s", a63);
	expect_error(text, "unknown_model", want);
	snprintf(text, sizeof text, "{\"id\":1,\"op\":\"%s\u00e9\"}", a63);
	snprintf(want, sizeof want, "unknown op \"%s?\"", a63);
	expect_error(text, "bad_request", want);
	/* Bytes that are no UTF-8 at all (from a preload's path, say). */
	broken = error_model("broken");
	model_set_error(broken, "caf\xc3\xa9, \xff and overlong \xc0\x80");
	expect_error("{\"id\":1,\"op\":\"attach\",\"name\":\"broken\"}",
		     "not_ready", "caf\xc3\xa9, ? and overlong ??");
	model_set_error(broken, "surrogate \xed\xa0\x80, past U+10FFFF "
			"\xf4\x90\x80\x80, U+1F600 \xf0\x9f\x98\x80");
	expect_error("{\"id\":1,\"op\":\"attach\",\"name\":\"broken\"}",
		     "not_ready", "ERROR: surrogate ???, past U+10FFFF ????, "
		     "U+1F600 \xf0\x9f\x98\x80");
	registry_clear();
}

static void
test_request_load_validation(void **state)
{
	(void)state;
	hello();
	expect_error("{\"id\":1,\"op\":\"load\",\"path\":\"/m\"}", "bad_request",
		     "\"name\" must be a string");
	expect_error("{\"id\":1,\"op\":\"load\",\"name\":\"a/b\",\"path\":\"/m\"}",
		     "bad_name", "invalid model name");
	expect_error("{\"id\":1,\"op\":\"load\",\"name\":\"..\",\"path\":\"/m\"}",
		     "bad_name", "invalid model name");
	expect_error("{\"id\":1,\"op\":\"load\",\"name\":\"a\",\"path\":\"m.bin\"}",
		     "bad_request", "absolute path");
	expect_error("{\"id\":1,\"op\":\"load\",\"name\":\"a\",\"path\":\"/m\","
		     "\"format\":\"gguf\"}", "bad_request", "\"format\" must be");
	expect_error("{\"id\":1,\"op\":\"load\",\"name\":\"a\",\"path\":\"/m\","
		     "\"wait\":1}", "bad_request", "\"wait\" must be");
	assert_int_equal(registry_count(), 0);
}

static void
test_request_unknown_models(void **state)
{
	(void)state;
	hello();
	expect_error("{\"id\":1,\"op\":\"attach\",\"name\":\"nope\"}",
		     "unknown_model", "no model called nope");
	expect_error("{\"id\":1,\"op\":\"unload\",\"name\":\"nope\"}",
		     "unknown_model", "no model called nope");
	expect_error("{\"id\":1,\"op\":\"unload\",\"name\":\"nope\",\"timeout\":-1}",
		     "bad_request", "\"timeout\" must be seconds");
	expect_error("{\"id\":1,\"op\":\"detach\",\"attachment\":\"1\"}",
		     "bad_request", "\"attachment\" must be an integer");
	expect_error("{\"id\":1,\"op\":\"detach\",\"attachment\":5}",
		     "not_attached", "no attachment 5");
}

static void
test_request_queries(void **state)
{
	json_t *r;

	(void)state;
	hello();
	r = ask("{\"id\":2,\"op\":\"list\"}");
	assert_int_equal(json_array_size(json_object_get(r, "models")), 0);
	json_decref(r);
	r = ask("{\"id\":3,\"op\":\"stats\"}");
	assert_int_equal(json_integer_value(json_object_get(r, "connections")), 1);
	assert_int_equal(json_integer_value(json_object_get(r, "pid")), getpid());
	assert_non_null(json_object_get(r, "shmem_kb"));
	json_decref(r);
	r = ask("{\"id\":4,\"op\":\"workers\"}");
	assert_int_equal(json_array_size(json_object_get(r, "workers")), 0);
	json_decref(r);
	r = ask("{\"id\":5,\"op\":\"ack\"}");
	assert_int_equal(json_integer_value(json_object_get(r, "released")), 0);
	json_decref(r);
}

/* Fails unless o has exactly the members named in the NULL-terminated
 * list (plus "id" and "ok" when reply is true). */
static void
expect_members(const json_t *o, bool reply, const char *const *names)
{
	size_t n = reply ? 2 : 0;

	for (; *names != NULL; names++, n++)
		if (json_object_get(o, *names) == NULL)
			fail_msg("no member \"%s\"", *names);
	if (json_object_size(o) != n) {
		char *text = json_dumps(o, JSON_COMPACT);

		fail_msg("members not in docs/protocol.md: %s", text);
	}
}

/* Every member, and no other, of the replies of hello, ping, ack, list (a
 * READY and an ERROR model, and a generation), stats and workers: those
 * docs/protocol.md is to name. */
static void
test_request_reply_members(void **state)
{
	static const char *const hello_m[] = {
		"version", "broker", "instance", "pid", "ack_semaphore",
		"signal", "shutting_down", "rights", "max_message", NULL};
	static const char *const none[] = {NULL};
	static const char *const ack_m[] = {"released", NULL};
	static const char *const list_m[] = {"models", "total", NULL};
	static const char *const ready_m[] = {
		"name", "format", "state", "generation", "size", "attached",
		"path", "pids", "checksum", "tensors", "load_ms", "segment",
		"generations", "pinned", "keep_alive_ms", "reason", "idle_ms",
		NULL};
	static const char *const error_m[] = {
		"name", "format", "state", "generation", "size", "attached",
		"path", "pids", "error", "generations", "pinned",
		"keep_alive_ms", "reason", NULL};
	static const char *const stats_m[] = {
		"pid", "instance", "version", "uptime_ms", "models", "workers",
		"connections", "abandoned_loads", "bytes_shared",
		"bytes_reserved", "max_shm_bytes", "shmem_kb", "loads",
		"load_failures", "unloads", "unload_timeouts", "replaces",
		"replace_failures", "drain_timeouts", "evictions", "idle_unloads",
		"autoloads", "attaches", "detaches",
		"acks", "shutting_down", NULL};
	static const char *const workers_m[] = {"workers", "total", NULL};
	static const char *const worker_m[] = {
		"pid", "exited", "uid", "gid", "conn", "role", "attachments",
		NULL};
	static const char *const attachment_m[] = {
		"attachment", "model", "generation", NULL};
	static const char *const generation_m[] = {
		"generation", "role", "size", "attached", "path", "checksum",
		"segment", "pids", NULL};
	struct model *ready = broker_fixture_ready_model(
		"ready", "/models/ready", &provider_raw, NULL);
	const json_t *models, *worker;
	json_t *r;

	(void)state;
	error_model("broken");
	r = ask("{\"id\":1,\"op\":\"hello\",\"version\":1,\"role\":\"worker\"}");
	expect_members(r, true, hello_m);
	json_decref(r);
	r = ask("{\"id\":2,\"op\":\"ping\"}");
	expect_members(r, true, none);
	json_decref(r);
	assert_non_null(lease_add(conn, model_current(ready)));
	r = ask("{\"id\":3,\"op\":\"list\"}");
	expect_members(r, true, list_m);
	models = json_object_get(r, "models");
	expect_members(json_array_get(models, 0), false, ready_m);
	expect_members(json_array_get(json_object_get(json_array_get(models, 0),
						      "generations"), 0),
		       false, generation_m);
	expect_members(json_array_get(models, 1), false, error_m);
	json_decref(r);
	r = ask("{\"id\":4,\"op\":\"stats\"}");
	expect_members(r, true, stats_m);
	json_decref(r);
	r = ask("{\"id\":5,\"op\":\"workers\"}");
	expect_members(r, true, workers_m);
	worker = json_array_get(json_object_get(r, "workers"), 0);
	expect_members(worker, false, worker_m);
	expect_members(json_array_get(json_object_get(worker, "attachments"), 0),
		       false, attachment_m);
	json_decref(r);
	r = ask("{\"id\":6,\"op\":\"ack\"}");
	expect_members(r, true, ack_m);
	json_decref(r);
	conn_close_all();
	registry_clear();
}

static void
test_request_list_pages(void **state)
{
	char name[16], seen[BROKER_MAX_MODELS] = {0}, path[2001];
	json_int_t offset = 0;
	int pages = 0, models = 0;
	json_t *r, *m;
	size_t i;

	(void)state;
	hello();
	memset(path, 'p', sizeof path - 1);
	path[0] = '/';
	path[sizeof path - 1] = '\0';
	for (int k = 0; k < BROKER_MAX_MODELS; k++) {
		struct model *added;

		snprintf(name, sizeof name, "m%d", k);
		added = registry_add(name);
		assert_non_null(added);
		registry_set_state(added, MODEL_LOADING);
		assert_non_null(registry_generation_new(added, &provider_raw,
							path));
	}
	do {
		char req[64];

		snprintf(req, sizeof req, "{\"id\":1,\"op\":\"list\",\"offset\":%lld}",
			 (long long)offset);
		r = ask(req);
		assert_true(json_is_true(json_object_get(r, "ok")));
		assert_int_equal(json_integer_value(json_object_get(r, "total")),
				 BROKER_MAX_MODELS);
		json_array_foreach(json_object_get(r, "models"), i, m) {
			int k = atoi(json_string_value(json_object_get(m, "name")) + 1);

			assert_false(seen[k]);
			seen[k] = 1;
			models++;
		}
		offset = json_integer_value(json_object_get(r, "next"));
		pages++;
		json_decref(r);
	} while (offset > 0);
	assert_int_equal(models, BROKER_MAX_MODELS);
	assert_true(pages > 1);
	expect_error("{\"id\":1,\"op\":\"list\",\"offset\":-1}", "bad_request",
		     "\"offset\" must be");
	registry_clear();
}

static void
test_request_send_failure_loses_one_client(void **state)
{
	static const char ping[] = "{\"id\":5,\"op\":\"ping\"}";
	struct conn *other;
	struct model *m = broker_fixture_ready_model("held", "/models/held",
						     &provider_raw, NULL);
	int other_peer;

	(void)state;
	hello();
	other = broker_fixture_conn_new(&other_peer);
	assert_non_null(lease_add(conn, model_current(m)));
	assert_int_equal(conn_count(), 2);
	fail_sendmsg = 1;
	request_dispatch(conn, ping, strlen(ping));
	/* That client is gone and its attachment released once the callback
	 * that lost it is over; the other stays. */
	event_base_loop(broker.base, EVLOOP_NONBLOCK);
	assert_int_equal(conn_count(), 1);
	assert_ptr_equal(conn_next(NULL), other);
	assert_int_equal(model_leases(m), 0);
	conn = other;
	close(peer);
	peer = other_peer;
	hello();
	registry_clear();
	event_base_loop(broker.base, EVLOOP_NONBLOCK);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_request_hello_required, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_request_hello_reply, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_request_hello_role_bounds,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_request_malformed, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_request_message_cut_utf8,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_request_load_validation, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_request_unknown_models, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_request_queries, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_request_reply_members, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_request_list_pages, setup,
						teardown),
		cmocka_unit_test_setup_teardown(
			test_request_send_failure_loses_one_client, setup,
			teardown),
	};

	return cmocka_run_group_tests(tests, broker_fixture_group_setup,
				      broker_fixture_group_teardown);
}
