/* SPDX-License-Identifier: MIT */
/*
 * instance.c - one broker per instance.  The lock is an abstract Unix
 * socket, "@mbroker.<instance>.lock": binding it is atomic, the kernel
 * releases it when its holder dies, and no rm of /dev/shm or logind
 * RemoveIPC can take it away, so whoever holds it may remove what a dead
 * broker of the same instance left behind, and a live broker's names are
 * never touched.  Whoever finds it taken learns the holder's pid from
 * SO_PEERCRED; the holder accepts and closes those connections
 * (listener.c) so that its backlog never fills, and the newcomer connects
 * without blocking, so a stopped holder cannot make it hang.  Abstract
 * sockets belong to a network namespace: brokers of one instance must
 * share one (docs/design.md).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "listener.h"
#include "mbrokerd.h"

#define INSTANCE_SHM_DIR "/dev/shm"

/* How long answering pauses when the broker is out of descriptors. */
#define INSTANCE_BACKOFF_MS 1000

static int instance_fd = -1;
static struct listener *instance_listener;

/* The lock's address; returns its length for bind and connect. */
static socklen_t
instance_address(struct sockaddr_un *sun, const char *name)
{
	int n;

	memset(sun, 0, sizeof *sun);
	sun->sun_family = AF_UNIX;
	n = snprintf(sun->sun_path + 1, sizeof sun->sun_path - 1,
		     "mbroker.%s.lock", name);
	return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 +
			   (size_t)n);
}

/* Says who holds the lock, as far as it can tell without waiting. */
static void
instance_report_holder(const struct sockaddr_un *sun, socklen_t len,
		       const char *name)
{
	int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC,
			0);
	struct ucred cred = {0};
	socklen_t clen = sizeof cred;

	if (fd >= 0 && connect(fd, (const struct sockaddr *)sun, len) == 0 &&
	    getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen) == 0 &&
	    cred.pid > 0) {
		if (cred.uid == geteuid())
			log_error("instance %s: already running (pid %ld)",
				  name, (long)cred.pid);
		else
			log_error("instance %s: already running (pid %ld), "
				  "held by uid %ld", name, (long)cred.pid,
				  (long)cred.uid);
	} else if (fd >= 0 && errno == EAGAIN) {
		/* Its backlog is full: the holder lives but does not run. */
		log_error("instance %s: already running (its holder does not "
			  "answer: stopped?)", name);
	} else {
		log_error("instance %s: already running", name);
	}
	if (fd >= 0)
		close(fd);
}

int
instance_lock(const char *name)
{
	struct sockaddr_un sun;
	socklen_t len = instance_address(&sun, name);

	instance_fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (instance_fd < 0) {
		log_warn("instance %s: socket", name);
		return -1;
	}
	if (bind(instance_fd, (struct sockaddr *)&sun, len) < 0) {
		int saved = errno;

		close(instance_fd);
		instance_fd = -1;
		if (saved == EADDRINUSE) {
			instance_report_holder(&sun, len, name);
			return 2;
		}
		errno = saved;
		log_warn("instance %s: cannot take the lock", name);
		return -1;
	}
	return 0;
}

/* A newcomer connected: it has read our pid, so it is closed at once. */
static void
instance_answer(int c, void *arg)
{
	(void)arg;
	close(c);
}

int
instance_record_pid(void)
{
	/* SO_PEERCRED reports the process that called listen(). */
	if (listen(instance_fd, 8) < 0) {
		log_warn("the instance lock cannot tell our pid");
		return 0;
	}
	if (fcntl(instance_fd, F_SETFL, O_NONBLOCK) < 0 ||
	    (instance_listener = listener_new(instance_fd, "instance lock",
					      INSTANCE_BACKOFF_MS,
					      instance_answer, NULL)) == NULL) {
		log_warnx("cannot answer on the instance lock");
		return -1;
	}
	return 0;
}

/* Whether a /dev/shm entry belongs to this instance. */
static bool
instance_owns(const char *entry, const char *prefix)
{
	if (strncmp(entry, "sem.", 4) == 0)
		entry += 4;
	return strncmp(entry, prefix, strlen(prefix)) == 0;
}

void
instance_clean_stale(const char *name, const char *shm_dir)
{
	char prefix[NAMES_SHM_MAX];
	unsigned removed = 0;
	uint64_t bytes = 0;
	struct dirent *d;
	DIR *dir;

	if (names_prefix(prefix, sizeof prefix, name) < 0 ||
	    (dir = opendir(shm_dir)) == NULL)
		return;
	while ((d = readdir(dir)) != NULL) {
		struct stat st;

		if (!instance_owns(d->d_name, prefix) ||
		    fstatat(dirfd(dir), d->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
			continue;
		if (!S_ISREG(st.st_mode) || st.st_uid != geteuid()) {
			log_warnx("instance %s: %s/%s is not ours; left alone",
				  name, shm_dir, d->d_name);
			continue;
		}
		if (unlinkat(dirfd(dir), d->d_name, 0) < 0) {
			log_warn("instance %s: cannot remove stale %s", name,
				 d->d_name);
			continue;
		}
		log_info("instance %s: removed %s/%s (%" PRId64 " bytes) left "
			 "by a dead broker", name, shm_dir, d->d_name,
			 (int64_t)st.st_size);
		removed++;
		bytes += (uint64_t)st.st_size;
	}
	closedir(dir);
	if (removed > 0)
		log_info("instance %s: %u stale name(s), %" PRIu64 " bytes, "
			 "removed", name, removed, bytes);
}

void
instance_unlock(void)
{
	listener_free(instance_listener);
	instance_listener = NULL;
	if (instance_fd >= 0)
		close(instance_fd);
	instance_fd = -1;
}
