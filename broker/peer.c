/* SPDX-License-Identifier: MIT */
/*
 * peer.c - who is on the other end of a connection: a pidfd that is
 * certainly the process of the client, or none.  Kernels from 6.5 hand it
 * over (SO_PEERPIDFD).  Before, the pid SO_PEERCRED recorded at connect
 * may name another process by the time the broker accepts (the client
 * exited and its pid was reused), so a pidfd_open of it is kept only when
 * that process holds the other end of this very socket (sock_diag names
 * its inode, /proc/PID/fd shows it) and has the uid the kernel reported.
 * A start time could not prove as much: the kernel does not say when the
 * client connected.  conn.c asks at accept; a client without a pidfd gets
 * its events but never a signal.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/sock_diag.h>
#include <linux/unix_diag.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/pidfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mbrokerd.h"

#ifndef SO_PEERPIDFD
#define SO_PEERPIDFD 77
#endif

/* Most of a client's descriptors looked at for its socket: every look is
 * two system calls in the main loop, and a client may hold a million. */
#define PEER_SCAN_MAX 1024

static const char peer_gone[] = "it exited before the broker accepted it";

/* The inode of the socket at the other end of the Unix socket fd, or 0
 * (sock_diag with UDIAG_SHOW_PEER). */
static unsigned long
peer_inode(int fd)
{
	struct {
		struct nlmsghdr nlh;
		struct unix_diag_req req;
	} q = {
		.nlh = {.nlmsg_len = sizeof q,
			.nlmsg_type = SOCK_DIAG_BY_FAMILY,
			.nlmsg_flags = NLM_F_REQUEST},
		.req = {.sdiag_family = AF_UNIX,
			.udiag_states = ~0u,
			.udiag_show = UDIAG_SHOW_PEER,
			.udiag_cookie = {~0u, ~0u}},
	};
	union {
		struct nlmsghdr nlh;
		char buf[4096];
	} r;
	struct stat st;
	unsigned long peer = 0;
	uint32_t ino;
	ssize_t n;
	int nl;

	if (fstat(fd, &st) < 0)
		return 0;
	q.req.udiag_ino = (unsigned)st.st_ino;
	nl = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
	if (nl < 0)
		return 0;
	/* The kernel answers within send: nothing here can block. */
	if (send(nl, &q, sizeof q, 0) == (ssize_t)sizeof q &&
	    (n = recv(nl, &r, sizeof r, MSG_DONTWAIT)) > 0 &&
	    NLMSG_OK(&r.nlh, (size_t)n) &&
	    r.nlh.nlmsg_type == SOCK_DIAG_BY_FAMILY) {
		struct unix_diag_msg *msg = NLMSG_DATA(&r.nlh);
		struct rtattr *a = (struct rtattr *)(msg + 1);
		int len = (int)(r.nlh.nlmsg_len - NLMSG_LENGTH(sizeof *msg));

		for (; RTA_OK(a, len); a = RTA_NEXT(a, len))
			if (a->rta_type == UNIX_DIAG_PEER &&
			    RTA_PAYLOAD(a) >= sizeof ino) {
				memcpy(&ino, RTA_DATA(a), sizeof ino);
				peer = ino;
			}
	}
	close(nl);
	return peer;
}

/* Whether pid runs with effective uid. */
static bool
peer_has_uid(pid_t pid, uid_t uid)
{
	char path[64], line[256];
	unsigned long real, effective;
	bool found = false;
	FILE *f;

	snprintf(path, sizeof path, "/proc/%ld/status", (long)pid);
	if ((f = fopen(path, "re")) == NULL)
		return false;
	while (!found && fgets(line, sizeof line, f) != NULL)
		found = sscanf(line, "Uid: %lu %lu", &real, &effective) == 2;
	fclose(f);
	return found && effective == (unsigned long)uid;
}

/* Why pid is not the process holding the socket whose inode is ino (with
 * the uid the kernel reported), or NULL when it is. */
static const char *
peer_check(pid_t pid, uid_t uid, unsigned long ino)
{
	char path[64], want[64], link[64];
	const char *why = "its pid now names a process that does not hold "
			  "the connection";
	struct dirent *e;
	unsigned seen = 0;
	DIR *d;

	if (!peer_has_uid(pid, uid))
		return "its pid now names a process of another uid";
	snprintf(path, sizeof path, "/proc/%ld/fd", (long)pid);
	snprintf(want, sizeof want, "socket:[%lu]", ino);
	if ((d = opendir(path)) == NULL)
		return "its descriptors cannot be read in /proc";
	while ((e = readdir(d)) != NULL) {
		ssize_t n;

		if (++seen > PEER_SCAN_MAX + 2) { /* with "." and ".." */
			why = "it holds too many descriptors to search "
			      "for its socket";
			break;
		}
		n = readlinkat(dirfd(d), e->d_name, link, sizeof link - 1);
		if (n > 0 && (link[n] = '\0', strcmp(link, want) == 0)) {
			why = NULL;
			break;
		}
	}
	closedir(d);
	return why;
}

int
peer_pidfd(int fd, pid_t pid, uid_t uid, const char **why)
{
	struct pollfd p = {.fd = -1, .events = POLLIN};
	socklen_t len = sizeof p.fd;
	unsigned long ino;

	*why = NULL;
	if (getsockopt(fd, SOL_SOCKET, SO_PEERPIDFD, &p.fd, &len) == 0) {
		fcntl(p.fd, F_SETFD, FD_CLOEXEC);
		return p.fd;
	}
	if (errno != ENOPROTOOPT) {
		/* The kernel knows the option: EINVAL (6.5) or ESRCH means
		 * the peer's process is gone; anything else leaves it
		 * unknown, never guessed. */
		*why = errno == EINVAL || errno == ESRCH ? peer_gone
		       : errno == EMFILE || errno == ENFILE
			   ? "the broker has no descriptor left for its pidfd"
			   : "the kernel gave no pidfd for it";
		return -1;
	}
	if (pid <= 0 || (p.fd = pidfd_open(pid, 0)) < 0) {
		*why = pid > 0 && errno == ESRCH ? peer_gone
						 : "this system has no pidfds";
		return -1;
	}
	if ((ino = peer_inode(fd)) == 0)
		*why = "its end of the socket cannot be found (sock_diag)";
	else
		*why = peer_check(pid, uid, ino);
	/* Alive after the look, the pidfd's process is the one looked at. */
	if (*why == NULL && poll(&p, 1, 0) != 0)
		*why = peer_gone;
	if (*why != NULL) {
		close(p.fd);
		return -1;
	}
	return p.fd;
}
