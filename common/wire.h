/* SPDX-License-Identifier: MIT */
/*
 * wire.h - one control message on the wire: a JSON object sent as a single
 * SOCK_SEQPACKET record, optionally carrying one descriptor (SCM_RIGHTS).
 * Shared by the broker and the library.
 */
#ifndef MB_COMMON_WIRE_H
#define MB_COMMON_WIRE_H

#include <stddef.h>
#include <sys/types.h>

#include <jansson.h>

/* Largest request the broker accepts from a client unless configured
 * (--max-message), in bytes. */
#define WIRE_MAX_REQUEST 65536
/* Deepest nesting of arrays and objects a request may have. */
#define WIRE_MAX_DEPTH 16
/* Longest string (key or value) a request may hold, in bytes. */
#define WIRE_MAX_STRING 4096
/* Largest message the broker sends (a reply or an event), in bytes; it
 * stays under the default socket send buffer (net.core.wmem_default). */
#define WIRE_MAX_REPLY (160 * 1024)

/*
 * Sends one record of len bytes (at most WIRE_MAX_REPLY); pass_fd (unless
 * -1) travels with it.  flags are added to MSG_NOSIGNAL.  Returns 0,
 * -EMSGSIZE or -errno.
 */
int wire_send(int fd, const void *buf, size_t len, int pass_fd, int flags);
/* The same with nfds descriptors (at most MB_FDS_PER_MESSAGE; -EINVAL
 * past it) in one SCM_RIGHTS message. */
int wire_send_fds(int fd, const void *buf, size_t len, const int *fds,
		  unsigned nfds, int flags);

/*
 * Receives one record into buf (cap bytes).  Returns its length, 0 at end
 * of stream, -EMSGSIZE when it was longer than cap (the rest is dropped), or
 * -errno.  A descriptor that came with it goes to *fd_out (close-on-exec),
 * else *fd_out is -1; extra descriptors are closed.
 */
ssize_t wire_recv(int fd, void *buf, size_t cap, int *fd_out, int flags);

/*
 * wire_recv keeping up to max descriptors (close-on-exec) in fds and
 * their number in *count; any beyond max are closed, and so are all of
 * them when the record was too long.
 */
ssize_t wire_recv_fds(int fd, void *buf, size_t cap, int *fds, size_t max,
		      size_t *count, int flags);

/* Encodes msg compactly; returns a malloc'd string and its length in *len. */
char *wire_encode(const json_t *msg, size_t *len);

/*
 * Decodes one record into a JSON object (duplicate keys, NUL bytes and
 * non-objects refused).  Returns a new reference or NULL with a reason in
 * err.
 */
json_t *wire_decode(const void *buf, size_t len, char *err, size_t errlen);

/*
 * Checks the shape of a request before it is parsed: nesting no deeper
 * than max_depth, no string longer than max_string.  Returns 0, or -1 with
 * a reason in err.  Linear, and never recursive.
 */
int wire_check_shape(const void *buf, size_t len, int max_depth,
		     size_t max_string, char *err, size_t errlen);

/* Sends msg (encoded) with pass_fd; returns 0, -EMSGSIZE or -errno. */
int wire_send_json(int fd, const json_t *msg, int pass_fd, int flags);

#endif
