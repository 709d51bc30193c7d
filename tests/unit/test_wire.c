/* SPDX-License-Identifier: MIT */
/*
 * test_wire.c - message framing over SOCK_SEQPACKET: one JSON object per
 * record, descriptors travelling with their message (at most as many
 * as the receiver takes, the others closed), oversized records
 * refused on both sides, and the decoder's refusals.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/socket.h>

#include "unit.h"

#include "mbroker.h"
#include "wire.h"

static int sv[2];

static int
setup(void **state)
{
	(void)state;
	return socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv);
}

static int
teardown(void **state)
{
	(void)state;
	close(sv[0]);
	close(sv[1]);
	return 0;
}

static void
test_wire_roundtrip(void **state)
{
	json_t *msg = json_pack("{s:s, s:i}", "op", "ping", "id", 7), *back;
	char buf[WIRE_MAX_REPLY + 1], err[128];
	ssize_t n;
	int fd;

	(void)state;
	assert_int_equal(wire_send_json(sv[0], msg, -1, 0), 0);
	assert_int_equal(wire_send(sv[0], "{\"id\":8}", 8, -1, 0), 0);
	n = wire_recv(sv[1], buf, sizeof buf, &fd, 0);
	assert_int_equal(fd, -1);
	back = wire_decode(buf, (size_t)n, err, sizeof err);
	assert_non_null(back);
	assert_true(json_equal(msg, back));
	/* Records never merge: the second comes on its own. */
	n = wire_recv(sv[1], buf, sizeof buf, &fd, 0);
	assert_int_equal(n, 8);
	json_decref(back);
	json_decref(msg);
}

static void
test_wire_passes_descriptor(void **state)
{
	char buf[64];
	int p[2], got;

	(void)state;
	assert_int_equal(pipe(p), 0);
	assert_int_equal(wire_send(sv[0], "{}", 2, p[1], 0), 0);
	close(p[1]);
	assert_int_equal(wire_recv(sv[1], buf, sizeof buf, &got, 0), 2);
	assert_true(got >= 0);
	assert_true(fcntl(got, F_GETFD) & FD_CLOEXEC);
	assert_int_equal(write(got, "x", 1), 1);
	assert_int_equal(read(p[0], buf, 1), 1);
	assert_int_equal(buf[0], 'x');
	close(got);
	close(p[0]);
}

/* Sends "{}" with count descriptors of /dev/null in one SCM_RIGHTS. */
static void
send_many(int count)
{
	char body[] = "{}";
	int fds[12];
	union {
		char buf[CMSG_SPACE(sizeof fds)];
		struct cmsghdr align;
	} control;
	struct iovec iov = {.iov_base = body, .iov_len = 2};
	struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1,
			     .msg_control = control.buf,
			     .msg_controllen = CMSG_SPACE(sizeof(int) *
							  (size_t)count)};
	struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg);

	for (int i = 0; i < count; i++)
		assert_true((fds[i] = open("/dev/null", O_RDONLY)) >= 0);
	cmsg->cmsg_level = SOL_SOCKET;
	cmsg->cmsg_type = SCM_RIGHTS;
	cmsg->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)count);
	memcpy(CMSG_DATA(cmsg), fds, sizeof(int) * (size_t)count);
	assert_int_equal(sendmsg(sv[0], &msg, 0), 2);
	for (int i = 0; i < count; i++)
		close(fds[i]);
}

static void
test_wire_recv_fds_keeps_at_most_max(void **state)
{
	int fds[MB_FDS_PER_MESSAGE], before = unit_fd_count();
	char buf[64];
	size_t count;

	(void)state;
	send_many(MB_FDS_PER_MESSAGE);
	assert_int_equal(wire_recv_fds(sv[1], buf, sizeof buf, fds,
				       MB_FDS_PER_MESSAGE, &count, 0),
			 2);
	assert_int_equal(count, MB_FDS_PER_MESSAGE);
	assert_int_equal(unit_fd_count(), before + MB_FDS_PER_MESSAGE);
	for (size_t i = 0; i < count; i++) {
		assert_true(fcntl(fds[i], F_GETFD) & FD_CLOEXEC);
		close(fds[i]);
	}
	/* More than max: the rest are closed, none is left open. */
	send_many(12);
	assert_int_equal(wire_recv_fds(sv[1], buf, sizeof buf, fds, 3, &count,
				       0),
			 2);
	assert_int_equal(count, 3);
	assert_int_equal(unit_fd_count(), before + 3);
	for (size_t i = 0; i < count; i++)
		close(fds[i]);
	send_many(2);
	assert_int_equal(wire_recv(sv[1], buf, sizeof buf, &fds[0], 0), 2);
	assert_int_equal(unit_fd_count(), before + 1);
	close(fds[0]);
}

static void
test_wire_oversize(void **state)
{
	static char big[WIRE_MAX_REPLY + 2];
	char small[16];
	int fd;

	(void)state;
	memset(big, ' ', sizeof big);
	assert_int_equal(wire_send(sv[0], big, WIRE_MAX_REPLY + 1, -1, 0),
			 -EMSGSIZE);
	assert_int_equal(wire_send(sv[0], big, 100, -1, 0), 0);
	assert_int_equal(wire_recv(sv[1], small, sizeof small, &fd, 0),
			 -EMSGSIZE);
	/* The rest of that record is gone; the next one reads whole. */
	assert_int_equal(wire_send(sv[0], "{}", 2, -1, 0), 0);
	assert_int_equal(wire_recv(sv[1], small, sizeof small, &fd, 0), 2);
}

static void
test_wire_eof_and_eagain(void **state)
{
	char buf[16];
	int fd;

	(void)state;
	assert_int_equal(wire_recv(sv[1], buf, sizeof buf, &fd, MSG_DONTWAIT),
			 -EAGAIN);
	close(sv[0]);
	sv[0] = -1;
	assert_int_equal(wire_recv(sv[1], buf, sizeof buf, &fd, 0), 0);
	assert_int_equal(wire_send(sv[1], "{}", 2, -1, 0), -EPIPE);
}

static void
expect_decode_error(const char *text, size_t len, const char *reason)
{
	char err[256];

	assert_null(wire_decode(text, len, err, sizeof err));
	if (strstr(err, reason) == NULL)
		fail_msg("'%s' lacks '%s'", err, reason);
}

static void
test_wire_decode_refusals(void **state)
{
	(void)state;
	expect_decode_error("{\"op\":", 6, "invalid JSON");
	expect_decode_error("not json", 8, "invalid JSON");
	expect_decode_error("[1]", 3, "not a JSON object");
	expect_decode_error("\"s\"", 3, "invalid JSON");
	expect_decode_error("{\"a\":1,\"a\":2}", 13, "duplicate");
	expect_decode_error("{\"a\":\"\0\"}", 9, "NUL byte");
	expect_decode_error("{\"a\":\"\\u0000\"}", 14, "invalid JSON");
	expect_decode_error("{\"a\":\"\xff\"}", 9, "invalid JSON");
	expect_decode_error("", 0, "invalid JSON");
}

/* Whether {"k":"<body repeated n times>"} passes the shape check. */
static int
shape_of_string(const char *body, size_t n)
{
	static char msg[2 * WIRE_MAX_STRING + 16];
	size_t len = strlen(body), off = 6;
	char err[128];
	int r;

	assert_true(off + n * len + 2 <= sizeof msg);
	memcpy(msg, "{\"k\":\"", off);
	for (size_t i = 0; i < n; i++, off += len)
		memcpy(msg + off, body, len);
	msg[off++] = '"';
	msg[off++] = '}';
	r = wire_check_shape(msg, off, WIRE_MAX_DEPTH, WIRE_MAX_STRING, err,
			     sizeof err);
	if (r < 0)
		assert_non_null(strstr(err, "a string longer than 4096 bytes"));
	return r;
}

/* Whether n nested arrays inside the request object pass. */
static int
shape_of_depth(int n)
{
	char msg[128], err[128];
	int len = snprintf(msg, sizeof msg, "{\"k\":%.*s%.*s}", n,
			   "[[[[[[[[[[[[[[[[[[[[", n, "]]]]]]]]]]]]]]]]]]]]");

	return wire_check_shape(msg, (size_t)len, WIRE_MAX_DEPTH,
				WIRE_MAX_STRING, err, sizeof err);
}

/* The limits docs/protocol.md states, at the bound and one past it: a
 * string of 4096 bytes between its quotes (escapes as written), a key
 * too, and 16 levels counting the request object. */
static void
test_wire_check_shape_bounds(void **state)
{
	(void)state;
	assert_int_equal(WIRE_MAX_STRING, 4096);
	assert_int_equal(shape_of_string("a", 4096), 0);
	assert_int_equal(shape_of_string("a", 4097), -1);
	assert_int_equal(shape_of_string("\\n", 2048), 0);
	assert_int_equal(shape_of_string("\\\"", 2048), 0);
	assert_int_equal(shape_of_string("\\u00e9", 683), -1);
	assert_int_equal(shape_of_string("\\u00e9", 682), 0);
	assert_int_equal(shape_of_string("", 0), 0);
	assert_int_equal(shape_of_depth(WIRE_MAX_DEPTH - 1), 0);
	assert_int_equal(shape_of_depth(WIRE_MAX_DEPTH), -1);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_wire_roundtrip, setup, teardown),
		cmocka_unit_test_setup_teardown(test_wire_passes_descriptor, setup,
						teardown),
		cmocka_unit_test_setup_teardown(
			test_wire_recv_fds_keeps_at_most_max, setup, teardown),
		cmocka_unit_test_setup_teardown(test_wire_oversize, setup, teardown),
		cmocka_unit_test_setup_teardown(test_wire_eof_and_eagain, setup,
						teardown),
		cmocka_unit_test(test_wire_decode_refusals),
		cmocka_unit_test(test_wire_check_shape_bounds),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
