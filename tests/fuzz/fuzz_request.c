/* SPDX-License-Identifier: MIT */
/*
 * fuzz_request.c - libFuzzer target for the control protocol as the broker
 * reads it: any bytes as one message on a live connection (past hello,
 * with the rights to use models), through the shape check, the decoder,
 * the dispatch and every handler a user may reach; replies are drained
 * from the other end.  Administration requests are refused by rights here
 * (they would start threads and stop the loop); their validation is
 * covered by tests/corpus and the unit tests.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>

#include "conn.h"
#include "mbrokerd.h"
#include "request.h"
#include "wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct conn *fuzz_conn;
static int fuzz_peer = -1;

static void
fuzz_setup(void)
{
	char arg0[] = "mbrokerd";
	char *argv[] = {arg0, NULL};

	if (options_parse(1, argv, &broker.cfg, stdout, stderr) != OPTIONS_RUN ||
	    (broker.base = event_base_new()) == NULL)
		abort();
	snprintf(broker.cfg.instance, sizeof broker.cfg.instance, "fz-%ld",
		 (long)getpid());
	log_init(LOG_LEVEL_ERROR);
	request_init();
}

/* A fresh connection, past hello, that may use models only. */
static void
fuzz_connect(void)
{
	int sv[2];

	if (fuzz_peer >= 0)
		close(fuzz_peer);
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC,
		       0, sv) < 0 || conn_accept(sv[0]) < 0)
		abort();
	fuzz_peer = sv[1];
	fuzz_conn = conn_newest();
	fuzz_conn->rights = RIGHT_USE;
	conn_said_hello(fuzz_conn);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static char reply[WIRE_MAX_REPLY];
	int fd;

	if (broker.base == NULL)
		fuzz_setup();
	if (fuzz_conn == NULL)
		fuzz_connect();
	request_dispatch(fuzz_conn, (const char *)data, size);
	/* A lost connection is freed by the loop below. */
	if (fuzz_conn->lost)
		fuzz_conn = NULL;
	while (wire_recv(fuzz_peer, reply, sizeof reply, &fd, MSG_DONTWAIT) > 0)
		if (fd >= 0)
			close(fd);
	event_base_loop(broker.base, EVLOOP_NONBLOCK);
	return 0;
}
