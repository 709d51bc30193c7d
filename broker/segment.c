/* SPDX-License-Identifier: MIT */
/*
 * segment.c - the shared-memory segments that hold model bytes: created
 * with O_EXCL and mode 0600 under an unpredictable name, checked against
 * the free space before anything is copied (the loader then reserves the
 * pages, so a full /dev/shm is a load error instead of a SIGBUS in a
 * worker; pages that loads in progress have yet to take count as taken),
 * counted against the --max-shm-bytes budget, sealed
 * read-only once filled, and unlinked at unload.  They live in /dev/shm,
 * or in --shm-dir (a tmpfs mounted with huge=, so 2 MiB pages back them).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
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

/* A segment created whose pages are being reserved and filled. */
struct segment_filling {
	struct segment_filling *next;
	int fd;
	uint64_t size;
};

/* Guards segment_filling and makes each free-space check and the claim
 * that follows one step, so two loads that fit only one at a time cannot
 * both pass the check and then both run out of pages. */
static pthread_mutex_t segment_lock = PTHREAD_MUTEX_INITIALIZER;
static struct segment_filling *segment_filling;

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

/* Bytes that segments being filled have yet to take (their size less
 * the blocks they hold).  Their blocks are read before the free space is,
 * so what they take meanwhile is counted twice, never missed.  Under
 * segment_lock. */
static uint64_t
segment_untaken(void)
{
	uint64_t n = 0;
	struct stat st;

	for (struct segment_filling *f = segment_filling; f != NULL;
	     f = f->next) {
		uint64_t taken = fstat(f->fd, &st) == 0
					 ? (uint64_t)st.st_blocks * 512 : 0;

		n += taken < f->size ? f->size - taken : 0;
	}
	return n;
}

/* Checks size bytes fit in the free space less what segments being
 * filled have yet to take; 0 or MB_ENOSPACE with the reason.  Under
 * segment_lock. */
static int
segment_fits(uint64_t size, char *err, size_t errlen)
{
	uint64_t untaken = segment_untaken();
	int64_t avail = segment_space_free();
	uint64_t left;

	if (avail < 0)
		return 0; /* unknown: the reservation of the pages decides */
	left = (uint64_t)avail > untaken ? (uint64_t)avail - untaken : 0;
	if (left >= size)
		return 0;
	snprintf(err, errlen, "model needs %" PRIu64 " bytes, %s has %" PRIu64
		 " free%s", size, segment_dir(), left, untaken > 0 ?
		 " besides what loads in progress are taking" : "");
	return MB_ENOSPACE;
}

int
segment_create(const char *name, uint64_t size, char *err, size_t errlen)
{
	struct segment_filling *f = malloc(sizeof *f);
	int fd = -1, r;

	if (f == NULL)
		return -ENOMEM;
	pthread_mutex_lock(&segment_lock);
	if ((r = segment_fits(size, err, errlen)) < 0 ||
	    (r = segment_reserve(size, err, errlen)) < 0)
		goto fail;
	fd = segment_open(name, O_RDWR | O_CREAT | O_EXCL, 0600);
	if (fd < 0) {
		r = -errno;
		snprintf(err, errlen, "cannot create segment %s: %s%s", name,
			 strerror(errno), errno == EEXIST ?
			 " (a name that is not ours; left untouched)" : "");
		segment_unreserve(size);
		goto fail;
	}
	if (ftruncate(fd, (off_t)size) < 0) {
		r = errno == ENOSPC ? MB_ENOSPACE : -errno;
		snprintf(err, errlen, "cannot size segment %s to %" PRIu64
			 " bytes: %s", name, size, strerror(errno));
		close(fd);
		segment_remove(name);
		segment_unreserve(size);
		goto fail;
	}
	f->fd = fd;
	f->size = size;
	f->next = segment_filling;
	segment_filling = f;
	pthread_mutex_unlock(&segment_lock);
	return fd;
fail:
	pthread_mutex_unlock(&segment_lock);
	free(f);
	return r;
}

void
segment_filled(int rw_fd)
{
	struct segment_filling **p, *f;

	pthread_mutex_lock(&segment_lock);
	for (p = &segment_filling; *p != NULL; p = &(*p)->next) {
		if ((*p)->fd == rw_fd) {
			f = *p;
			*p = f->next;
			free(f);
			break;
		}
	}
	pthread_mutex_unlock(&segment_lock);
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
