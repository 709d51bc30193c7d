/* SPDX-License-Identifier: MIT */
/*
 * mbfault.c - a misbehaving client for the fault tests: it dies at chosen
 * stages of the protocol, posts the ack semaphore without letting go,
 * forks after attaching, holds many connections, and churns workers that
 * crash and reconnect.  Each command prints what the test needs to know
 * (pids, counts) on stdout, one line each.
 *   mbfault connect-exit SOCKET
 *   mbfault attach-exit SOCKET MODEL
 *   mbfault post SEMAPHORE COUNT
 *   mbfault fork SOCKET MODEL
 *   mbfault hold SOCKET COUNT
 *   mbfault churn SOCKET MODEL WORKERS SECONDS
 *   mbfault squat INSTANCE
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <semaphore.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <stddef.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "mbroker.h"
#include "wire.h"

static volatile sig_atomic_t mbfault_signalled;

static __attribute__((noreturn)) void
mbfault_die(const char *what, int err)
{
	fprintf(stderr, "mbfault: %s: %s\n", what, mb_strerror(err));
	exit(1);
}

static int
mbfault_dial(const char *path)
{
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);

	snprintf(sun.sun_path, sizeof sun.sun_path, "%s", path);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sun, sizeof sun) < 0)
		mbfault_die("connect", -errno);
	return fd;
}

/* Sends text and, when wait, reads one reply. */
static void
mbfault_say(int fd, const char *text, int wait)
{
	char buf[WIRE_MAX_REPLY];
	int passed;

	if (wire_send(fd, text, strlen(text), -1, 0) < 0)
		mbfault_die("send", -errno);
	if (wait && wire_recv(fd, buf, sizeof buf, &passed, 0) <= 0)
		mbfault_die("no reply", MB_ELOST);
}

/* Dies between the attach request and its reply. */
static int
mbfault_attach_exit(const char *path, const char *model)
{
	char req[160];
	int fd = mbfault_dial(path);

	mbfault_say(fd, "{\"id\":1,\"op\":\"hello\",\"version\":1,"
			"\"role\":\"worker\"}", 1);
	snprintf(req, sizeof req, "{\"id\":2,\"op\":\"attach\",\"name\":\"%s\"}",
		 model);
	mbfault_say(fd, req, 0);
	_exit(0);
}

static int
mbfault_post(const char *name, int count)
{
	sem_t *sem = sem_open(name, 0);

	if (sem == SEM_FAILED)
		mbfault_die("sem_open", -errno);
	for (int i = 0; i < count; i++)
		sem_post(sem);
	printf("posted %d\n", count);
	return 0;
}

static void
mbfault_on_signal(int sig)
{
	(void)sig;
	mbfault_signalled = 1;
}

/* Waits for an event on c (or a signal); acks; returns what ended it. */
static const char *
mbfault_wait_and_ack(struct mb_client *c, bool read_events)
{
	struct pollfd p = {.fd = mb_event_fd(c), .events = POLLIN};
	struct mb_event ev;

	for (;;) {
		if (mbfault_signalled) {
			mb_ack(c);
			return "signal";
		}
		if (read_events && mb_next_event(c, &ev) == 1) {
			if (ev.type == MB_EVENT_BROKER_LOST)
				return "broker lost";
			mb_ack(c);
			return "event";
		}
		poll(read_events ? &p : NULL, read_events ? 1 : 0, 50);
	}
}

/*
 * Attaches, then forks.  The parent waits for the unload signal and acks;
 * the child reads the events on the inherited connection and acks.
 */
static int
mbfault_fork(const char *path, const char *model)
{
	struct sigaction sa = {.sa_handler = mbfault_on_signal};
	struct mb_attachment *att;
	struct mb_client *c;
	pid_t child;
	int r;

	sigaction(SIGUSR1, &sa, NULL);
	if ((r = mb_connect(path, &c)) < 0)
		mbfault_die("mb_connect", r);
	if ((r = mb_attach(c, model, &att)) < 0)
		mbfault_die("mb_attach", r);
	setvbuf(stdout, NULL, _IOLBF, 0);
	if ((child = fork()) < 0)
		mbfault_die("fork", -errno);
	if (child == 0) {
		printf("child %ld ready\n", (long)getpid());
		printf("child %ld acked on %s\n", (long)getpid(),
		       mbfault_wait_and_ack(c, true));
		_exit(0);
	}
	printf("parent %ld child %ld\n", (long)getpid(), (long)child);
	printf("parent %ld acked on %s\n", (long)getpid(),
	       mbfault_wait_and_ack(c, false));
	return 0;
}

/* Holds count connections open until SIGTERM. */
static int
mbfault_hold(const char *path, int count)
{
	struct sigaction sa = {.sa_handler = mbfault_on_signal};
	int held = 0;

	sigaction(SIGTERM, &sa, NULL);
	setvbuf(stdout, NULL, _IOLBF, 0);
	for (int i = 0; i < count; i++) {
		struct sockaddr_un sun = {.sun_family = AF_UNIX};
		int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);

		snprintf(sun.sun_path, sizeof sun.sun_path, "%s", path);
		if (fd >= 0 &&
		    connect(fd, (struct sockaddr *)&sun, sizeof sun) == 0)
			held++;
	}
	printf("holding %d\n", held);
	while (!mbfault_signalled)
		pause();
	return 0;
}

/* Holds an instance's lock name (as a stranger would) until SIGTERM. */
static int
mbfault_squat(const char *instance)
{
	struct sigaction sa = {.sa_handler = mbfault_on_signal};
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	int n = snprintf(sun.sun_path + 1, sizeof sun.sun_path - 1,
			 "mbroker.%s.lock", instance);

	sigaction(SIGTERM, &sa, NULL);
	if (fd < 0 ||
	    bind(fd, (struct sockaddr *)&sun,
		 (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 +
			     (size_t)n)) < 0 || listen(fd, 1) < 0)
		mbfault_die("squat", -errno);
	printf("squatting %ld\n", (long)getpid());
	fflush(stdout);
	while (!mbfault_signalled)
		pause();
	return 0;
}

static uint64_t
mbfault_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* One worker life: attach, read, then leave cleanly, crash or be killed. */
static __attribute__((noreturn)) void
mbfault_churn_life(const char *path, const char *model, unsigned seed)
{
	struct mb_attachment *att;
	struct mb_client *c;
	volatile unsigned char sink;

	if (mb_connect(path, &c) < 0 || mb_attach(c, model, &att) < 0)
		_exit(3);
	sink = ((const unsigned char *)mb_attachment_data(att))[seed %
		mb_attachment_size(att)];
	(void)sink;
	switch (seed % 4) {
	case 0:
		mb_detach(att);
		mb_close(c);
		_exit(0);
	case 1:
		_exit(0); /* crash: no detach, no close */
	case 2:
		mb_ack(c);
		_exit(0);
	default:
		kill(getpid(), SIGKILL);
		_exit(0);
	}
}

/* workers children crash and reconnect for seconds; prints the count. */
static int
mbfault_churn(const char *path, const char *model, int workers, int seconds)
{
	uint64_t end = mbfault_now_ms() + (uint64_t)seconds * 1000;
	unsigned long lives = 0, failed = 0;
	unsigned seed = (unsigned)getpid();
	int running = 0, status;

	while (mbfault_now_ms() < end || running > 0) {
		while (running < workers && mbfault_now_ms() < end) {
			pid_t pid;

			seed = seed * 1103515245u + 12345u;
			if ((pid = fork()) == 0)
				mbfault_churn_life(path, model, seed >> 8);
			if (pid > 0)
				running++;
		}
		if (wait(&status) > 0) {
			running--;
			lives++;
			if (WIFEXITED(status) && WEXITSTATUS(status) == 3)
				failed++;
		}
	}
	printf("lives %lu failed %lu\n", lives, failed);
	return failed > 0 ? 1 : 0;
}

int
main(int argc, char **argv)
{
	const char *cmd = argc > 1 ? argv[1] : "";

	if (strcmp(cmd, "connect-exit") == 0 && argc == 3) {
		mbfault_dial(argv[2]);
		_exit(0);
	}
	if (strcmp(cmd, "attach-exit") == 0 && argc == 4)
		return mbfault_attach_exit(argv[2], argv[3]);
	if (strcmp(cmd, "post") == 0 && argc == 4)
		return mbfault_post(argv[2], atoi(argv[3]));
	if (strcmp(cmd, "fork") == 0 && argc == 4)
		return mbfault_fork(argv[2], argv[3]);
	if (strcmp(cmd, "hold") == 0 && argc == 4)
		return mbfault_hold(argv[2], atoi(argv[3]));
	if (strcmp(cmd, "squat") == 0 && argc == 3)
		return mbfault_squat(argv[2]);
	if (strcmp(cmd, "churn") == 0 && argc == 6)
		return mbfault_churn(argv[2], argv[3], atoi(argv[4]),
				     atoi(argv[5]));
	fprintf(stderr, "usage: mbfault connect-exit SOCKET | attach-exit "
		"SOCKET MODEL | post SEMAPHORE COUNT | fork SOCKET MODEL | "
		"hold SOCKET COUNT | churn SOCKET MODEL WORKERS SECONDS | "
		"squat INSTANCE\n");
	return 2;
}
