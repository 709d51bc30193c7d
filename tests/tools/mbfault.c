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
 *   mbfault corpus SOCKET FILE...   (prints "NAME CODE" per file)
 *   mbfault hostile SOCKET          (generated attacks, one line each)
 *   mbfault notify-listen PATH      (systemd's side of sd_notify)
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

/*
 * Reads one reply within 5 s; returns its error code, "ok", "closed" or
 * "no-reply" (static or in buf).
 */
static const char *
mbfault_outcome(int fd, char *buf, size_t len)
{
	struct pollfd p = {.fd = fd, .events = POLLIN};
	const char *code;
	char err[128];
	json_t *msg;
	int passed;
	ssize_t n;

	if (poll(&p, 1, 5000) <= 0)
		return "no-reply";
	n = wire_recv(fd, buf, len, &passed, MSG_DONTWAIT);
	if (passed >= 0)
		close(passed);
	if (n <= 0)
		return "closed";
	if ((msg = wire_decode(buf, (size_t)n, err, sizeof err)) == NULL)
		return "garbled";
	code = json_string_value(json_object_get(json_object_get(msg, "error"),
						 "code"));
	snprintf(buf, len, "%s", json_is_true(json_object_get(msg, "ok")) ? "ok"
				 : code != NULL ? code : "?");
	json_decref(msg);
	return buf;
}

static const char mbfault_hello[] =
	"{\"id\":1,\"op\":\"hello\",\"version\":1}";

/* Sends each file as one message on a fresh connection (after a hello,
 * unless the file is itself a hello) and prints what came back. */
static int
mbfault_corpus(const char *path, int nfiles, char **files)
{
	static char msg[1 << 20], reply[WIRE_MAX_REPLY];

	for (int i = 0; i < nfiles; i++) {
		const char *base = strrchr(files[i], '/') ? strrchr(files[i], '/') + 1
							  : files[i];
		FILE *f = fopen(files[i], "rb");
		size_t n = f != NULL ? fread(msg, 1, sizeof msg, f) : 0;
		int fd = mbfault_dial(path);

		if (f != NULL)
			fclose(f);
		if (strstr(base, "hello") == NULL)
			mbfault_say(fd, mbfault_hello, 1);
		if (wire_send(fd, msg, n, -1, 0) < 0)
			printf("%s unsendable\n", base);
		else
			printf("%s %s\n", base, mbfault_outcome(fd, reply,
								sizeof reply));
		close(fd);
	}
	return 0;
}

/* The attacks that are easier made than stored. */
static int
mbfault_hostile(const char *path)
{
	static char buf[10 << 20], reply[WIRE_MAX_REPLY];
	static const char ping[] = "{\"id\":1,\"op\":\"ping\"}";
	int fd, big = sizeof buf, sent = 0, errors = 0;

	fd = mbfault_dial(path);
	mbfault_say(fd, mbfault_hello, 1);
	memset(buf, '[', 100000);
	if (wire_send(fd, buf, 100000, -1, 0) == 0)
		printf("nested %s\n", mbfault_outcome(fd, reply, sizeof reply));
	else
		printf("nested unsendable\n");
	close(fd);

	/* 10 MB first; the kernel refuses records that large, so then the
	 * largest it does carry (as root the buffer may exceed wmem_max). */
	memset(buf, ' ', sizeof buf);
	for (size_t size = sizeof buf; size >= 64 * 1024; size /= 2) {
		fd = mbfault_dial(path);
		mbfault_say(fd, mbfault_hello, 1);
		setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &big, sizeof big);
		if (send(fd, buf, size, MSG_NOSIGNAL) == (ssize_t)size) {
			printf("huge %zu %s\n", size,
			       mbfault_outcome(fd, reply, sizeof reply));
			close(fd);
			break;
		}
		printf("huge %zu unsendable (%s)\n", size, strerror(errno));
		close(fd);
	}

	fd = mbfault_dial(path);
	mbfault_say(fd, mbfault_hello, 1);
	for (size_t i = 0; i < sizeof ping - 1; i++) {
		mbfault_say(fd, (char[]){ping[i], '\0'}, 0);
		errors += strcmp(mbfault_outcome(fd, reply, sizeof reply),
				 "bad_request") == 0;
	}
	printf("bytewise %d/%zu bad_request\n", errors, sizeof ping - 1);
	close(fd);

	/* A flood of requests whose replies are never read. */
	fd = mbfault_dial(path);
	mbfault_say(fd, mbfault_hello, 1);
	while (sent < 100000 && send(fd, ping, sizeof ping - 1,
				     MSG_NOSIGNAL) > 0)
		sent++;
	printf("flood %s after %d\n", sent < 100000 ? "dropped" : "survived",
	       sent);
	close(fd);

	fd = mbfault_dial(path);
	printf("silent %s", mbfault_outcome(fd, reply, sizeof reply));
	printf(" then %s\n", mbfault_outcome(fd, reply, sizeof reply));
	close(fd);
	return 0;
}

/* Receives sd_notify datagrams at path and prints each on one line. */
static int
mbfault_notify_listen(const char *path)
{
	struct sigaction sa = {.sa_handler = mbfault_on_signal};
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	char msg[4096];
	int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);

	sigaction(SIGTERM, &sa, NULL);
	snprintf(sun.sun_path, sizeof sun.sun_path, "%s", path);
	if (fd < 0 || bind(fd, (struct sockaddr *)&sun, sizeof sun) < 0)
		mbfault_die("bind", -errno);
	printf("listening\n");
	fflush(stdout);
	while (!mbfault_signalled) {
		ssize_t n = recv(fd, msg, sizeof msg - 1, 0);

		if (n < 0)
			continue;
		msg[n] = '\0';
		for (ssize_t i = 0; i < n; i++)
			if (msg[i] == '\n')
				msg[i] = ' ';
		printf("%s\n", msg);
		fflush(stdout);
	}
	unlink(path);
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
	if (strcmp(cmd, "corpus") == 0 && argc >= 4)
		return mbfault_corpus(argv[2], argc - 3, argv + 3);
	if (strcmp(cmd, "hostile") == 0 && argc == 3)
		return mbfault_hostile(argv[2]);
	if (strcmp(cmd, "notify-listen") == 0 && argc == 3)
		return mbfault_notify_listen(argv[2]);
	if (strcmp(cmd, "squat") == 0 && argc == 3)
		return mbfault_squat(argv[2]);
	if (strcmp(cmd, "churn") == 0 && argc == 6)
		return mbfault_churn(argv[2], argv[3], atoi(argv[4]),
				     atoi(argv[5]));
	fprintf(stderr, "usage: mbfault connect-exit SOCKET | attach-exit "
		"SOCKET MODEL | post SEMAPHORE COUNT | fork SOCKET MODEL | "
		"hold SOCKET COUNT | churn SOCKET MODEL WORKERS SECONDS | "
		"squat INSTANCE | corpus SOCKET FILE... | hostile SOCKET | "
		"notify-listen PATH\n");
	return 2;
}
