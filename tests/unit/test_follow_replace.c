/* SPDX-License-Identifier: MIT */
/*
 * test_follow_replace.c - a worker following a replaced model, against a
 * fake broker (a thread serving one connection on a private socket) that
 * plays the broker's part of docs/protocol.md: it answers hello, grants
 * attaches of "m" with a memfd whose every byte is the generation, logs
 * every attach and detach in order, and sends the events the test asks
 * for.  What is checked is what the worker sees: the replaced event's
 * fields, mb_follow_replace attaching the new generation before it
 * detaches the old one, an old attachment untouched and readable when the
 * new attach is refused, and nothing done for an event that is not about
 * the attachment.
 */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "unit.h"

#include "mbroker.h"
#include "wire.h"

#define FAKE_MODEL_SIZE 8192

/* The fake broker: its socket, the one connection it serves, and what
 * the test tells it (under lock). */
static struct {
	pthread_mutex_t lock;
	pthread_t thread;
	char dir[64];
	char path[96];
	int listen_fd;
	int conn;
	uint64_t generation; /* what an attach gets */
	const char *refuse;  /* when set, the wire code attaches get */
	int64_t next_id;
	char log[1024];      /* "attach m 1 #1; detach #1; " ... */
} fake = {.lock = PTHREAD_MUTEX_INITIALIZER};

static struct mb_client *client;

static void
fake_log(const char *fmt, ...)
{
	size_t used = strlen(fake.log);
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(fake.log + used, sizeof fake.log - used, fmt, ap);
	va_end(ap);
}

/* A memfd of FAKE_MODEL_SIZE bytes, each the generation's low byte. */
static int
fake_segment(uint64_t generation, uint64_t *sum)
{
	unsigned char bytes[FAKE_MODEL_SIZE];
	int fd = memfd_create("fake-model", MFD_CLOEXEC);

	memset(bytes, (int)(generation & 0xff), sizeof bytes);
	*sum = mb_checksum(bytes, sizeof bytes);
	if (fd >= 0 && write(fd, bytes, sizeof bytes) != (ssize_t)sizeof bytes) {
		close(fd);
		return -1;
	}
	return fd;
}

/* The reply to one request, with the descriptor an attach passes. */
static json_t *
fake_answer(const json_t *req, int *pass_fd)
{
	const char *op = json_string_value(json_object_get(req, "op"));
	json_t *id = json_object_get(req, "id");
	uint64_t sum;
	char hex[17];

	*pass_fd = -1;
	if (op != NULL && strcmp(op, "attach") == 0) {
		const char *name = json_string_value(json_object_get(req, "name"));

		if (fake.refuse != NULL)
			return json_pack("{s:O, s:b, s:{s:s, s:s}}", "id", id,
					 "ok", 0, "error", "code", fake.refuse,
					 "message", "refused by the fake");
		fake_log("attach %s %" PRIu64 " #%lld; ", name,
			 fake.generation, (long long)++fake.next_id);
		*pass_fd = fake_segment(fake.generation, &sum);
		snprintf(hex, sizeof hex, "%016" PRIx64, sum);
		return json_pack("{s:O, s:b, s:I, s:s, s:s, s:I, s:i, s:s}",
				 "id", id, "ok", 1, "attachment",
				 (json_int_t)fake.next_id, "name", name,
				 "format", "raw", "generation",
				 (json_int_t)fake.generation, "size",
				 FAKE_MODEL_SIZE, "checksum", hex);
	}
	if (op != NULL && strcmp(op, "detach") == 0)
		fake_log("detach #%lld; ", (long long)json_integer_value(
						   json_object_get(req, "attachment")));
	return json_pack("{s:O, s:b}", "id", id, "ok", 1);
}

/* Serves one connection until the client closes it. */
static void *
fake_run(void *arg)
{
	char buf[WIRE_MAX_REPLY], err[128];
	int fd = accept4(fake.listen_fd, NULL, NULL, SOCK_CLOEXEC), unused;
	ssize_t n;

	(void)arg;
	pthread_mutex_lock(&fake.lock);
	fake.conn = fd;
	pthread_mutex_unlock(&fake.lock);
	while (fd >= 0 &&
	       (n = wire_recv(fd, buf, sizeof buf, &unused, 0)) > 0) {
		json_t *req = wire_decode(buf, (size_t)n, err, sizeof err);
		json_t *reply;
		int pass;

		pthread_mutex_lock(&fake.lock);
		reply = fake_answer(req, &pass);
		pthread_mutex_unlock(&fake.lock);
		wire_send_json(fd, reply, pass, 0);
		if (pass >= 0)
			close(pass);
		json_decref(reply);
		json_decref(req);
	}
	return NULL;
}

/* Sends an event to the worker, as the broker would. */
static void
fake_event(const char *json)
{
	int fd;

	pthread_mutex_lock(&fake.lock);
	fd = fake.conn;
	pthread_mutex_unlock(&fake.lock);
	assert_int_equal(wire_send(fd, json, strlen(json), -1, 0), 0);
}

static void
fake_set(uint64_t generation, const char *refuse)
{
	pthread_mutex_lock(&fake.lock);
	fake.generation = generation;
	fake.refuse = refuse;
	pthread_mutex_unlock(&fake.lock);
}

static void
assert_log(const char *want)
{
	pthread_mutex_lock(&fake.lock);
	assert_string_equal(fake.log, want);
	pthread_mutex_unlock(&fake.lock);
}

/* Waits up to 10 s for the next event. */
static int
next_event(struct mb_event *ev)
{
	struct pollfd p = {.fd = mb_event_fd(client), .events = POLLIN};

	for (int i = 0; i < 1000; i++) {
		int r = mb_next_event(client, ev);

		if (r != 0)
			return r;
		poll(&p, 1, 10);
	}
	return 0;
}

/* Whether every byte the attachment maps is the generation's. */
static bool
reads_generation(const struct mb_attachment *att, uint64_t generation)
{
	const unsigned char *p = mb_attachment_data(att);

	for (size_t i = 0; i < mb_attachment_size(att); i++)
		if (p[i] != (unsigned char)generation)
			return false;
	return mb_checksum(p, mb_attachment_size(att)) ==
	       mb_attachment_checksum(att);
}

static void
test_follow_replaced_event_is_parsed(void **state)
{
	struct mb_event ev;

	(void)state;
	fake_event("{\"event\":\"replaced\",\"model\":\"m\",\"old_generation\":1,"
		   "\"generation\":2,\"timeout_ms\":5000}");
	assert_int_equal(next_event(&ev), 1);
	assert_int_equal(ev.type, MB_EVENT_REPLACED);
	assert_string_equal(ev.model, "m");
	assert_int_equal(ev.old_generation, 1);
	assert_int_equal(ev.generation, 2);
	assert_int_equal(ev.timeout_ms, 5000);
	/* An unload says nothing of an old generation. */
	fake_event("{\"event\":\"unload\",\"model\":\"m\",\"generation\":2,"
		   "\"timeout_ms\":100}");
	assert_int_equal(next_event(&ev), 1);
	assert_int_equal(ev.type, MB_EVENT_UNLOAD);
	assert_int_equal(ev.old_generation, 0);
}

static void
test_follow_attaches_new_before_detaching_old(void **state)
{
	struct mb_attachment *att, *old;
	struct mb_event ev;

	(void)state;
	assert_int_equal(mb_attach(client, "m", &att), 0);
	assert_true(reads_generation(att, 1));
	old = att;
	fake_set(2, NULL);
	fake_event("{\"event\":\"replaced\",\"model\":\"m\",\"old_generation\":1,"
		   "\"generation\":2,\"timeout_ms\":5000}");
	assert_int_equal(next_event(&ev), 1);
	assert_int_equal(mb_follow_replace(client, &att, &ev), 0);
	assert_ptr_not_equal(att, old);
	assert_int_equal(mb_attachment_generation(att), 2);
	assert_true(reads_generation(att, 2));
	/* The broker saw the new attach before the old one's detach. */
	assert_log("attach m 1 #1; attach m 2 #2; detach #1; ");
	assert_int_equal(mb_detach(att), 0);
}

static void
test_follow_refused_attach_keeps_old(void **state)
{
	struct mb_attachment *att, *old;
	struct mb_event ev;

	(void)state;
	assert_int_equal(mb_attach(client, "m", &att), 0);
	old = att;
	fake_set(2, "unloading");
	fake_event("{\"event\":\"replaced\",\"model\":\"m\",\"old_generation\":1,"
		   "\"generation\":2,\"timeout_ms\":5000}");
	assert_int_equal(next_event(&ev), 1);
	assert_int_equal(mb_follow_replace(client, &att, &ev), MB_EUNLOADING);
	assert_string_equal(mb_last_error(client), "refused by the fake");
	assert_ptr_equal(att, old);
	assert_int_equal(mb_attachment_generation(att), 1);
	assert_true(reads_generation(att, 1));
	assert_log("attach m 1 #1; ");
	/* Retried once the broker grants it, it moves on. */
	fake_set(2, NULL);
	assert_int_equal(mb_follow_replace(client, &att, &ev), 0);
	assert_true(reads_generation(att, 2));
	assert_log("attach m 1 #1; attach m 2 #2; detach #1; ");
	assert_int_equal(mb_detach(att), 0);
}

static void
test_follow_ignores_events_not_about_it(void **state)
{
	static const struct {
		enum mb_event_type type;
		const char *model;
		uint64_t generation;
	} others[] = {
		{MB_EVENT_REPLACED, "other", 5}, /* another model */
		{MB_EVENT_REPLACED, "m", 1},     /* what it already holds */
		{MB_EVENT_REPLACED, "m", 0},     /* older */
		{MB_EVENT_UNLOAD, "m", 5},       /* not a replace */
		{MB_EVENT_SHUTDOWN, "", 0},
	};
	struct mb_attachment *att, *old, *none = NULL;

	(void)state;
	assert_int_equal(mb_attach(client, "m", &att), 0);
	old = att;
	fake_set(5, NULL);
	for (size_t i = 0; i < sizeof others / sizeof others[0]; i++) {
		struct mb_event ev = {.type = others[i].type,
				      .generation = others[i].generation};

		snprintf(ev.model, sizeof ev.model, "%s", others[i].model);
		assert_int_equal(mb_follow_replace(client, &att, &ev), 0);
		assert_ptr_equal(att, old);
		if (ev.type == MB_EVENT_REPLACED) {
			assert_int_equal(mb_follow_replace(client, &none, &ev), 0);
			assert_null(none);
		}
	}
	assert_true(reads_generation(att, 1));
	assert_log("attach m 1 #1; ");
	assert_int_equal(mb_detach(att), 0);
}

/* A fresh fake broker at generation 1 and a client connected to it. */
static int
setup(void **state)
{
	struct sockaddr_un sun = {.sun_family = AF_UNIX};

	(void)state;
	snprintf(fake.dir, sizeof fake.dir, "/tmp/mbroker-follow.XXXXXX");
	if (mkdtemp(fake.dir) == NULL)
		return -1;
	snprintf(fake.path, sizeof fake.path, "%s/b.sock", fake.dir);
	snprintf(sun.sun_path, sizeof sun.sun_path, "%s", fake.path);
	fake.log[0] = '\0';
	fake.next_id = 0;
	fake.conn = -1;
	fake_set(1, NULL);
	fake.listen_fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (fake.listen_fd < 0 ||
	    bind(fake.listen_fd, (struct sockaddr *)&sun, sizeof sun) < 0 ||
	    listen(fake.listen_fd, 1) < 0 ||
	    pthread_create(&fake.thread, NULL, fake_run, NULL) != 0)
		return -1;
	return mb_connect(fake.path, &client) == 0 ? 0 : -1;
}

/* Closing the client ends the fake's connection, and so its thread. */
static int
teardown(void **state)
{
	(void)state;
	mb_close(client);
	client = NULL;
	pthread_join(fake.thread, NULL);
	close(fake.conn);
	close(fake.listen_fd);
	unlink(fake.path);
	rmdir(fake.dir);
	return 0;
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(
			test_follow_replaced_event_is_parsed, setup, teardown),
		cmocka_unit_test_setup_teardown(
			test_follow_attaches_new_before_detaching_old, setup,
			teardown),
		cmocka_unit_test_setup_teardown(
			test_follow_refused_attach_keeps_old, setup, teardown),
		cmocka_unit_test_setup_teardown(
			test_follow_ignores_events_not_about_it, setup,
			teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
