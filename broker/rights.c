/* SPDX-License-Identifier: MIT */
/*
 * rights.c - who may do what.  A peer is known by the kernel's word
 * (SO_PEERCRED, SO_PEERGROUPS), never by what it says.  The broker's own
 * uid and root may do everything; members of --admin-gid may too; members
 * of --allow-gid may use models (attach, detach, ack, and look at the
 * registry); anyone else who can reach the socket may only say hello and
 * ping.  With a client group, the socket, its directory, the registry
 * mirror and the ack semaphore are shared with that group and nobody
 * else.
 */
#include <errno.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mbrokerd.h"

#ifndef SO_PEERGROUPS
#define SO_PEERGROUPS 59
#endif

/* Whether the peer on fd belongs to gid (primary or supplementary). */
static bool
rights_member(int fd, gid_t primary, gid_t gid)
{
	gid_t stack[64], *groups = stack;
	socklen_t len = sizeof stack;
	bool found = primary == gid;

	if (found)
		return true;
	if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, &len) < 0) {
		if (errno != ERANGE || (groups = malloc(len)) == NULL)
			return false;
		if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, &len) < 0)
			len = 0;
	}
	for (size_t i = 0; i < len / sizeof *groups && !found; i++)
		found = groups[i] == gid;
	if (groups != stack)
		free(groups);
	return found;
}

unsigned
rights_of_peer(int fd, uid_t uid, gid_t gid)
{
	const struct config *cfg = &broker.cfg;

	if (uid == geteuid() || uid == 0)
		return RIGHT_USE | RIGHT_ADMIN;
	if (cfg->admin_gid != 0 && rights_member(fd, gid, cfg->admin_gid))
		return RIGHT_USE | RIGHT_ADMIN;
	if (cfg->allow_gid != 0 && rights_member(fd, gid, cfg->allow_gid))
		return RIGHT_USE;
	return RIGHT_NONE;
}

const char *
rights_name(unsigned right)
{
	return right & RIGHT_ADMIN ? "administer the broker" : "use models";
}

int
rights_share(const char *path, int fd, mode_t group_mode)
{
	gid_t gid = options_socket_gid(&broker.cfg);
	struct stat st;
	int r;

	if (gid == 0)
		return 0;
	r = fd >= 0 ? fchown(fd, (uid_t)-1, gid) : chown(path, (uid_t)-1, gid);
	if (r == 0)
		r = fd >= 0 ? fstat(fd, &st) : stat(path, &st);
	if (r == 0)
		r = fd >= 0 ? fchmod(fd, (st.st_mode & 0700) | group_mode)
			    : chmod(path, (st.st_mode & 0700) | group_mode);
	if (r < 0) {
		log_warn("cannot share %s with group %ld", path, (long)gid);
		return -1;
	}
	return 0;
}
