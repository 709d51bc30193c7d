/* SPDX-License-Identifier: MIT */
/*
 * test_conn.c - descriptors a connection passes: one message carries up
 * to MB_FDS_PER_MESSAGE of them in one SCM_RIGHTS (a bundle's attach
 * reply, a page of the members op), and each one counts against the
 * CONN_MAX_FDS a client may leave unread, so a client that never reads
 * is dropped before a message that would pass them is sent, while one
 * that reads between pages is never dropped.
 */
#include <sys/socket.h>
#include <sys/stat.h>

#include "unit.h"

#include "mbrokerd.h"
#include "broker_fixture.h"
#include "reply.h"

/* Reads one message from fd: how many descriptors it carried (closed),
 * or -1 when there was none to read. */
static int
receive(int fd)
{
	union {
		char buf[CMSG_SPACE(sizeof(int) * 2 * MB_FDS_PER_MESSAGE)];
		struct cmsghdr align;
	} control;
	char data[WIRE_MAX_REPLY];
	struct iovec iov = {.iov_base = data, .iov_len = sizeof data};
	struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1,
			     .msg_control = control.buf,
			     .msg_controllen = sizeof control.buf};
	struct cmsghdr *c;
	int n = 0;

	if (recvmsg(fd, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC) <= 0)
		return -1;
	for (c = CMSG_FIRSTHDR(&msg); c != NULL; c = CMSG_NXTHDR(&msg, c)) {
		int *fds = (int *)(void *)CMSG_DATA(c);
		size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);

		for (size_t i = 0; i < k; i++, n++)
			close(fds[i]);
	}
	return n;
}

/* Eight descriptors of the same file, as a page of a bundle's. */
static void
eight(int *fds, int fd)
{
	for (int i = 0; i < MB_FDS_PER_MESSAGE; i++)
		fds[i] = fd;
}

static void
test_conn_pages_of_descriptors(void **state)
{
	int fds[MB_FDS_PER_MESSAGE], peer, file = open("/dev/null", O_RDONLY);
	int before = unit_fd_count();
	struct conn *c;

	(void)state;
	assert_true(file >= 0);
	eight(fds, file);
	c = broker_fixture_conn_new(&peer);
	/* A client that reads each page gets every descriptor. */
	for (int page = 0; page < 5; page++) {
		reply_ok_fds(c, NULL, NULL, fds, MB_FDS_PER_MESSAGE);
		assert_false(c->lost);
		assert_int_equal(receive(peer), MB_FDS_PER_MESSAGE);
	}
	/* Two pages unread are the 16 it may leave; a third drops it. */
	reply_ok_fds(c, NULL, NULL, fds, MB_FDS_PER_MESSAGE);
	reply_ok_fds(c, NULL, NULL, fds, MB_FDS_PER_MESSAGE);
	assert_false(c->lost);
	reply_ok_fds(c, NULL, NULL, fds, 1);
	assert_true(c->lost);
	assert_int_equal(receive(peer), MB_FDS_PER_MESSAGE);
	assert_int_equal(receive(peer), MB_FDS_PER_MESSAGE);
	assert_int_equal(receive(peer), -1);
	event_base_loop(broker.base, EVLOOP_NONBLOCK);
	close(peer);
	close(file);
	assert_int_equal(unit_fd_count(), before - 1);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_conn_pages_of_descriptors),
	};

	return cmocka_run_group_tests(tests, broker_fixture_group_setup,
				      broker_fixture_group_teardown);
}
