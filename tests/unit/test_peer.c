/* SPDX-License-Identifier: MIT */
/*
 * test_peer.c - whom the broker signals on a kernel without SO_PEERPIDFD
 * (getsockopt hides it, as before Linux 6.5).  A client whose pid names
 * another process by accept time (it exited and its pid was reused:
 * SO_PEERCRED here reports a bystander's pid) gets no pidfd and no signal,
 * and the bystander lives; so it is when the kernel has SO_PEERPIDFD but
 * says the client is gone.  A client process that holds its end of the
 * socket is identified and signalled (where pidfd_open exists: not under
 * valgrind).
 * WRAP: getsockopt
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/pidfd.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include "unit.h"

#include "mbrokerd.h"

#include "broker_fixture.h"

#ifndef SO_PEERPIDFD
#define SO_PEERPIDFD 77
#endif

static int peerpidfd_errno; /* SO_PEERPIDFD fails with it; 0: the kernel's */
static pid_t peercred_pid;  /* SO_PEERCRED reports it; 0: the kernel's */
static pid_t child = -1;    /* the test's child, killed at teardown */

int __real_getsockopt(int fd, int level, int name, void *val, socklen_t *len);
int __wrap_getsockopt(int fd, int level, int name, void *val, socklen_t *len);

int
__wrap_getsockopt(int fd, int level, int name, void *val, socklen_t *len)
{
	int r;

	if (level == SOL_SOCKET && name == SO_PEERPIDFD && peerpidfd_errno) {
		errno = peerpidfd_errno;
		return -1;
	}
	r = __real_getsockopt(fd, level, name, val, len);
	if (r == 0 && level == SOL_SOCKET && name == SO_PEERCRED &&
	    peercred_pid > 0)
		((struct ucred *)val)->pid = peercred_pid;
	return r;
}

/* A child that waits for a signal, holding what it inherits but drop. */
static pid_t
spawn_sleeper(int drop)
{
	child = fork();
	assert_true(child >= 0);
	if (child == 0) {
		if (drop >= 0)
			close(drop);
		for (;;)
			pause();
	}
	return child;
}

/* Whether pid is still running after ms: a signal sent would have ended
 * it by then. */
static bool
still_running(pid_t pid, int ms)
{
	for (int i = 0; i < ms / 10; i++) {
		if (waitpid(pid, NULL, WNOHANG) == pid)
			return false;
		poll(NULL, 0, 10);
	}
	return waitpid(pid, NULL, WNOHANG) == 0;
}

/* Kills and reaps the test's child, whatever the test did; closes its
 * connections. */
static int
teardown(void **state)
{
	(void)state;
	conn_close_all();
	if (child > 0) {
		kill(child, SIGKILL);
		waitpid(child, NULL, 0);
	}
	child = -1;
	return 0;
}

/* The connection accepted on fd. */
static struct conn *
accept_fd(int fd)
{
	assert_int_equal(conn_accept(fd), 0);
	return conn_newest();
}

static void
new_pair(int sv[2])
{
	assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0,
				    sv), 0);
}

/* The client exited before accept and a bystander took its pid. */
static void
test_peer_reused_pid_not_signalled(void **state)
{
	pid_t bystander = spawn_sleeper(-1);
	struct conn *c;
	int sv[2];

	(void)state;
	peerpidfd_errno = ENOPROTOOPT;
	peercred_pid = bystander;
	new_pair(sv);
	c = accept_fd(sv[0]);
	assert_non_null(c);
	assert_int_equal(c->pid, bystander);
	assert_true(c->pidfd < 0);
	assert_int_equal(conn_signal(c, SIGTERM), -ESRCH);
	assert_int_equal(conn_signal(c, SIGKILL), -ESRCH);
	assert_true(still_running(bystander, 300));
	close(sv[1]);
}

/* A kernel with SO_PEERPIDFD that says the client is gone: no fallback
 * to the pid it had. */
static void
test_peer_gone_no_fallback(void **state)
{
	pid_t bystander = spawn_sleeper(-1);
	struct conn *c;
	int sv[2];

	(void)state;
	peerpidfd_errno = EINVAL;
	peercred_pid = bystander;
	new_pair(sv);
	c = accept_fd(sv[0]);
	assert_true(c->pidfd < 0);
	assert_int_equal(conn_signal(c, SIGTERM), -ESRCH);
	assert_true(still_running(bystander, 300));
	close(sv[1]);
}

/* Whether this system opens pidfds (valgrind does not). */
static bool
has_pidfd_open(void)
{
	int fd = pidfd_open(getpid(), 0);

	if (fd < 0)
		return false;
	close(fd);
	return true;
}

/* The process holding the client's end is identified and signalled. */
static void
test_peer_holder_signalled(void **state)
{
	struct conn *c;
	pid_t holder;
	int sv[2], status;

	(void)state;
	if (!has_pidfd_open())
		skip();
	peerpidfd_errno = ENOPROTOOPT;
	new_pair(sv);
	holder = spawn_sleeper(sv[0]);
	close(sv[1]);
	peercred_pid = holder;
	c = accept_fd(sv[0]);
	assert_true(c->pidfd >= 0);
	assert_int_equal(conn_signal(c, SIGTERM), 0);
	assert_int_equal(waitpid(holder, &status, 0), holder);
	assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGTERM);
	child = -1;
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_teardown(test_peer_reused_pid_not_signalled,
					  teardown),
		cmocka_unit_test_teardown(test_peer_gone_no_fallback, teardown),
		cmocka_unit_test_teardown(test_peer_holder_signalled, teardown),
	};

	return cmocka_run_group_tests(tests, broker_fixture_group_setup,
				      broker_fixture_group_teardown);
}
