/* SPDX-License-Identifier: MIT */
/*
 * segment.c - the shared-memory segments that hold model bytes: created
 * with O_EXCL and mode 0600 under an unpredictable name, checked against
 * the free space before anything is copied (the loader then reserves the
 * pages, so a full /dev/shm is a load error instead of a SIGBUS in a
 * worker), counted against the --max-shm-bytes budget, sealed
 * read-only once filled, and unlinked at unload.  They live in /dev/shm,
 * or in --shm-dir (a tmpfs mounted with huge=, so 2 MiB pages back them).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "mbrokerd.h"

#define SEGMENT_DIR "/dev/shm"

/* Where segments live: /dev/shm through shm_open, or --shm-dir (a tmpfs
 * mounted with huge=, for 2 MiB pages) through open. */
static const char *
segment_dir(void)
{
	return broker.cfg.shm_dir != NULL ? broker.cfg.shm_dir : SEGMENT_DIR;
}

/* Opens (creating with O_EXCL when flags say so) the segment's file. */
static int
segment_open(const char *name, int flags, mode_t mode)
{
	char path[PATH_MAX];

	if (broker.cfg.shm_dir == NULL)
		return shm_open(name, flags, mode);
	if (snprintf(path, sizeof path, "%s%s", broker.cfg.shm_dir, name) >=
	    (int)sizeof path) {
		errno = ENAMETOOLONG;
		return -1;
	}
	return open(path, flags | O_NOFOLLOW | O_CLOEXEC, mode);
}

static int
segment_remove(const char *name)
{
	char path[PATH_MAX];

	if (broker.cfg.shm_dir == NULL)
		return shm_unlink(name);
	snprintf(path, sizeof path, "%s%s", broker.cfg.shm_dir, name);
	return unlink(path);
}

/* Bytes held by this broker's segments, against --max-shm-bytes. */
static atomic_uint_fast64_t segment_held;

/* Takes size bytes of the budget; 0 or MB_ENOSPACE with the reason. */
static int
segment_reserve(uint64_t size, char *err, size_t errlen)
{
	uint64_t budget = broker.cfg.max_shm_bytes;
	uint_fast64_t held = atomic_load(&segment_held);

	do {
		if (budget > 0 && (held > budget || size > budget - held)) {
			snprintf(err, errlen, "model needs %" PRIu64 " bytes, "
				 "the --max-shm-bytes budget of %" PRIu64 " has %"
				 PRIu64 " free", size, budget,
				 held > budget ? 0 : budget - (uint64_t)held);
			return MB_ENOSPACE;
		}
	} while (!atomic_compare_exchange_weak(&segment_held, &held,
					       held + size));
	return 0;
}

void
segment_unreserve(uint64_t size)
{
	atomic_fetch_sub(&segment_held, size);
}

uint64_t
segment_bytes_held(void)
{
	return atomic_load(&segment_held);
}

int
segment_name(char *buf, size_t len, const char *model, uint64_t gen)
{
	char suffix[NAMES_SHM_MAX];

	snprintf(suffix, sizeof suffix, "model.%s.%" PRIu64 "-%s", model, gen,
		 broker.token);
	return names_shm(buf, len, broker.cfg.instance, suffix);
}

int64_t
segment_space_free(void)
{
	struct statvfs sv;

	if (statvfs(segment_dir(), &sv) < 0)
		return -errno;
	return (int64_t)sv.f_bavail * (int64_t)sv.f_frsize;
}

int
segment_create(const char *name, uint64_t size, char *err, size_t errlen)
{
	int64_t avail = segment_space_free();
	int fd, r;

	if (avail >= 0 && (uint64_t)avail < size) {
		snprintf(err, errlen, "model needs %" PRIu64 " bytes, %s has %"
			 PRId64 " free", size, segment_dir(), avail);
		return MB_ENOSPACE;
	}
	if ((r = segment_reserve(size, err, errlen)) < 0)
		return r;
	fd = segment_open(name, O_RDWR | O_CREAT | O_EXCL, 0600);
	if (fd < 0) {
		r = -errno;
		snprintf(err, errlen, "cannot create segment %s: %s%s", name,
			 strerror(errno), errno == EEXIST ?
			 " (a name that is not ours; left untouched)" : "");
		segment_unreserve(size);
		return r;
	}
	if (ftruncate(fd, (off_t)size) < 0) {
		r = errno == ENOSPC ? MB_ENOSPACE : -errno;
		snprintf(err, errlen, "cannot size segment %s to %" PRIu64
			 " bytes: %s", name, size, strerror(errno));
		goto fail;
	}
	return fd;
fail:
	close(fd);
	segment_remove(name);
	segment_unreserve(size);
	return r;
}

int
segment_seal(int rw_fd)
{
	char path[64];
	int fd;

	if (fchmod(rw_fd, 0400) < 0)
		return -errno;
	snprintf(path, sizeof path, "/proc/self/fd/%d", rw_fd);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	return fd < 0 ? -errno : fd;
}

int
segment_unlink(const char *name)
{
	if (segment_remove(name) < 0 && errno != ENOENT)
		return -errno;
	return 0;
}
