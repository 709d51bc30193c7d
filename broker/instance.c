/* SPDX-License-Identifier: MIT */
/*
 * instance.c - one broker per instance.  The lock is an flock on
 * /dev/shm/mbroker.<instance>.lock, which the kernel drops when its holder
 * dies, so whoever holds it may remove what a dead broker of the same
 * instance left behind; a live broker's names are never touched.  The lock
 * file holds the owner's pid for the "already running" message.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mbrokerd.h"

#define INSTANCE_SHM_DIR "/dev/shm"

static struct {
	int fd;
	char name[NAMES_SHM_MAX];
} instance = {.fd = -1};

/* Whether fd is still the file at the lock's name (not unlinked since). */
static bool
instance_current(int fd)
{
	char path[sizeof INSTANCE_SHM_DIR + NAMES_SHM_MAX];
	struct stat a, b;

	snprintf(path, sizeof path, INSTANCE_SHM_DIR "%s", instance.name);
	return fstat(fd, &a) == 0 && stat(path, &b) == 0 &&
	       a.st_ino == b.st_ino && a.st_dev == b.st_dev;
}

/* A lock file someone else created is never used. */
static bool
instance_ours(int fd, const char *name)
{
	struct stat st;

	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) ||
	    st.st_uid != geteuid()) {
		log_error("instance %s: " INSTANCE_SHM_DIR "%s is not ours "
			  "(uid %ld); not touching it", name, instance.name,
			  (long)st.st_uid);
		return false;
	}
	return true;
}

static void
instance_report_holder(int fd, const char *name)
{
	char buf[32] = "";
	ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
	long pid = n > 0 ? strtol(buf, NULL, 10) : 0;

	if (pid > 0)
		log_error("instance %s: already running (pid %ld)", name, pid);
	else
		log_error("instance %s: already running", name);
}

int
instance_lock(const char *name)
{
	int fd = -1;

	if (names_shm(instance.name, sizeof instance.name, name, "lock") < 0)
		return -1;
	for (int tries = 0; tries < 10; tries++) {
		fd = shm_open(instance.name, O_RDWR | O_CREAT, 0600);
		if (fd < 0) {
			log_warn("instance %s: cannot open lock %s%s", name,
				 instance.name, errno == EACCES ?
				 " (held by another user?)" : "");
			return -1;
		}
		if (!instance_ours(fd, name)) {
			close(fd);
			return -1;
		}
		if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
			if (errno == EWOULDBLOCK)
				instance_report_holder(fd, name);
			else
				log_warn("instance %s: flock", name);
			close(fd);
			return errno == EWOULDBLOCK ? 2 : -1;
		}
		if (instance_current(fd))
			break;
		/* Its last owner unlinked it as we opened it: again. */
		close(fd);
		fd = -1;
	}
	if (fd < 0) {
		log_error("instance %s: lock keeps changing", name);
		return -1;
	}
	instance.fd = fd;
	return 0;
}

void
instance_record_pid(void)
{
	char pid[32];
	int len = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());

	if (ftruncate(instance.fd, 0) < 0 ||
	    pwrite(instance.fd, pid, (size_t)len, 0) != len)
		log_warn("cannot record our pid in %s", instance.name);
}

/* Whether a /dev/shm entry belongs to this instance (not its lock). */
static bool
instance_owns(const char *entry, const char *prefix)
{
	size_t plen = strlen(prefix);

	if (strncmp(entry, "sem.", 4) == 0)
		entry += 4;
	return strncmp(entry, prefix, plen) == 0 &&
	       strcmp(entry + plen, "lock") != 0;
}

void
instance_clean_stale(const char *name)
{
	char prefix[NAMES_SHM_MAX];
	unsigned removed = 0;
	uint64_t bytes = 0;
	struct dirent *d;
	DIR *dir;

	if (names_prefix(prefix, sizeof prefix, name) < 0 ||
	    (dir = opendir(INSTANCE_SHM_DIR)) == NULL)
		return;
	while ((d = readdir(dir)) != NULL) {
		struct stat st;

		if (!instance_owns(d->d_name, prefix) ||
		    fstatat(dirfd(dir), d->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
			continue;
		if (!S_ISREG(st.st_mode) || st.st_uid != geteuid()) {
			log_warnx("instance %s: %s/%s is not ours; left alone",
				  name, INSTANCE_SHM_DIR, d->d_name);
			continue;
		}
		if (unlinkat(dirfd(dir), d->d_name, 0) < 0) {
			log_warn("instance %s: cannot remove stale %s", name,
				 d->d_name);
			continue;
		}
		log_info("instance %s: removed %s/%s (%" PRId64 " bytes) left "
			 "by a dead broker", name, INSTANCE_SHM_DIR, d->d_name,
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
	if (instance.fd < 0)
		return;
	/* Unlink while still holding it; a newcomer checks the inode. */
	shm_unlink(instance.name);
	close(instance.fd);
	instance.fd = -1;
}
