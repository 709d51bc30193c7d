/* SPDX-License-Identifier: MIT */
/*
 * wire.c - framing of control messages: one JSON object per SOCK_SEQPACKET
 * record, so a record is never split or merged, a descriptor passed with
 * SCM_RIGHTS belongs to exactly one message, and a message sent from a
 * signal handler cannot interleave with another.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "mbroker.h"
#include "wire.h"

int
wire_send_fds(int fd, const void *buf, size_t len, const int *fds,
	      unsigned nfds, int flags)
{
	struct iovec iov = {.iov_base = (void *)(uintptr_t)buf, .iov_len = len};
	union {
		char buf[CMSG_SPACE(sizeof(int) * MB_FDS_PER_MESSAGE)];
		struct cmsghdr align;
	} control;
	struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
	ssize_t n;

	if (len > WIRE_MAX_REPLY)
		return -EMSGSIZE;
	if (nfds > MB_FDS_PER_MESSAGE)
		return -EINVAL;
	if (nfds > 0) {
		struct cmsghdr *cmsg;

		memset(&control, 0, sizeof control);
		msg.msg_control = control.buf;
		msg.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
		cmsg = CMSG_FIRSTHDR(&msg);
		cmsg->cmsg_level = SOL_SOCKET;
		cmsg->cmsg_type = SCM_RIGHTS;
		cmsg->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
		memcpy(CMSG_DATA(cmsg), fds, sizeof(int) * nfds);
	}
	do
		n = sendmsg(fd, &msg, MSG_NOSIGNAL | flags);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	return (size_t)n == len ? 0 : -EIO;
}

int
wire_send(int fd, const void *buf, size_t len, int pass_fd, int flags)
{
	return wire_send_fds(fd, buf, len, &pass_fd, pass_fd >= 0, flags);
}

/* Keeps the first max descriptors of the control data in fds, closes
 * the others; returns how many were kept. */
static size_t
wire_take_fds(struct msghdr *msg, int *fds, size_t max)
{
	size_t kept = 0;

	for (struct cmsghdr *c = CMSG_FIRSTHDR(msg); c != NULL;
	     c = CMSG_NXTHDR(msg, c)) {
		size_t n;

		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (size_t i = 0; i < n; i++) {
			int fd;

			memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
			if (kept < max)
				fds[kept++] = fd;
			else
				close(fd);
		}
	}
	return kept;
}

ssize_t
wire_recv_fds(int fd, void *buf, size_t cap, int *fds, size_t max,
	      size_t *count, int flags)
{
	struct iovec iov = {.iov_base = buf, .iov_len = cap};
	/* Room for twice what a message may carry: more than that, the
	 * kernel closes the rest itself (MSG_CTRUNC). */
	union {
		char buf[CMSG_SPACE(2 * MB_FDS_PER_MESSAGE * sizeof(int))];
		struct cmsghdr align;
	} control;
	struct msghdr msg = {.msg_iov = &iov,
			     .msg_iovlen = 1,
			     .msg_control = control.buf,
			     .msg_controllen = sizeof control.buf};
	ssize_t n;

	*count = 0;
	do
		n = recvmsg(fd, &msg, MSG_CMSG_CLOEXEC | flags);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	*count = wire_take_fds(&msg, fds, max);
	if (msg.msg_flags & MSG_TRUNC) {
		while (*count > 0)
			close(fds[--*count]);
		return -EMSGSIZE;
	}
	return n;
}

ssize_t
wire_recv(int fd, void *buf, size_t cap, int *fd_out, int flags)
{
	size_t count;
	ssize_t n = wire_recv_fds(fd, buf, cap, fd_out, 1, &count, flags);

	if (count == 0)
		*fd_out = -1;
	return n;
}

char *
wire_encode(const json_t *msg, size_t *len)
{
	char *s = json_dumps(msg, JSON_COMPACT);

	if (s != NULL)
		*len = strlen(s);
	return s;
}

int
wire_send_json(int fd, const json_t *msg, int pass_fd, int flags)
{
	size_t len;
	char *s = wire_encode(msg, &len);
	int r;

	if (s == NULL)
		return -ENOMEM;
	r = wire_send(fd, s, len, pass_fd, flags);
	free(s);
	return r;
}

json_t *
wire_decode(const void *buf, size_t len, char *err, size_t errlen)
{
	json_error_t jerr;
	json_t *msg;

	if (memchr(buf, '\0', len) != NULL) {
		snprintf(err, errlen, "message contains a NUL byte");
		return NULL;
	}
	msg = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &jerr);
	if (msg == NULL) {
		snprintf(err, errlen, "invalid JSON at byte %d: %s",
			 jerr.position, jerr.text);
		return NULL;
	}
	if (!json_is_object(msg)) {
		snprintf(err, errlen, "message is not a JSON object");
		json_decref(msg);
		return NULL;
	}
	return msg;
}

int
wire_check_shape(const void *buf, size_t len, int max_depth,
		 size_t max_string, char *err, size_t errlen)
{
	const unsigned char *p = buf;
	bool in_string = false, escaped = false;
	size_t string_len = 0;
	int depth = 0;

	for (size_t i = 0; i < len; i++) {
		unsigned char c = p[i];

		if (in_string && !escaped && c == '"') {
			in_string = false;
		} else if (in_string) {
			/* The bytes between the quotes, as written. */
			if (++string_len > max_string) {
				snprintf(err, errlen, "a string longer than "
					 "%zu bytes", max_string);
				return -1;
			}
			escaped = !escaped && c == '\\';
		} else if (c == '"') {
			in_string = true;
			string_len = 0;
		} else if (c == '{' || c == '[') {
			if (++depth > max_depth) {
				snprintf(err, errlen, "nesting deeper than %d",
					 max_depth);
				return -1;
			}
		} else if (c == '}' || c == ']') {
			depth--;
		}
	}
	return 0;
}
