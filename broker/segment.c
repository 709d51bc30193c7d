/* SPDX-License-Identifier: MIT */
/*
 * segment.c - the shared-memory segments that hold model bytes, from
 * creation to the return of their budget (segment.h): created with O_EXCL
 * and mode 0600 under an unpredictable name, checked against the free
 * space before anything is copied (the loader then writes the pages, or
 * reserves them before filling a mapping, so a full /dev/shm is a load
 * error instead of a SIGBUS in a worker; pages
 * that loads in progress have yet to take count as taken), counted against
 * the --max-shm-bytes budget until the last reference goes, sealed
 * read-only once filled (mode 0400, or 0440 for the --allow-gid group).
 * They live in /dev/shm, or in --shm-dir (a tmpfs
 * mounted with huge=, so 2 MiB pages back them).  With --lock a sealed
 * segment stays mapped read-only in the broker and mlock()ed until its
 * last reference goes, so its pages are never swapped out; what is held
 * counts against RLIMIT_MEMLOCK as against the budget.
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
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "mbrokerd.h"
#include "segment.h"

#define SEGMENT_DIR "/dev/shm"

/* Where segments live: /dev/shm through shm_open, or --shm-dir (a tmpfs
 * mounted with huge=, for 2 MiB pages) through open. */
const char *
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

struct segment {
	struct segment *next_filling; /* on segment_filling while filled */
	char name[NAMES_SHM_MAX];
	bool named;    /* the name still exists */
	bool filling;  /* its pages may still be untaken */
	bool outlived; /* unlinked while holders still mapped it */
	int rw_fd, ro_fd;
	void *locked; /* --lock: the mlock()ed mapping, or MAP_FAILED */
	uint64_t size;
	unsigned refs;
};

/* Guards segment_filling and makes each free-space check and the claim
 * that follows one step, so two loads that fit only one at a time cannot
 * both pass the check and then both run out of pages. */
static pthread_mutex_t segment_lock = PTHREAD_MUTEX_INITIALIZER;
static struct segment *segment_filling;

/* Bytes held by this broker's segments, against --max-shm-bytes. */
static atomic_uint_fast64_t segment_held;
/* Bytes promised to loads between their room check and their claim. */
static atomic_uint_fast64_t segment_promised;
/* Segments that exist, against BROKER_MAX_SEGMENTS. */
static atomic_uint segment_live;
/* With --lock, the most bytes segments may hold (RLIMIT_MEMLOCK); 0: no
 * bound (no --lock, or an unlimited RLIMIT_MEMLOCK). */
static uint64_t segment_lockable;

int
segment_lock_init(void)
{
	uint64_t budget = broker.cfg.max_shm_bytes;
	struct rlimit rl;
	rlim_t was;

	if (rlimit_raise(RLIMIT_MEMLOCK, "RLIMIT_MEMLOCK", &rl, &was) < 0)
		return -1;
	if (rl.rlim_cur != RLIM_INFINITY && budget > rl.rlim_cur) {
		log_error("--lock: RLIMIT_MEMLOCK is %llu bytes (hard limit "
			  "%llu), less than the --max-shm-bytes budget of %"
			  PRIu64 ": raise it (ulimit -l, LimitMEMLOCK=) or "
			  "lower --max-shm-bytes",
			  (unsigned long long)rl.rlim_cur,
			  (unsigned long long)rl.rlim_max, budget);
		return -1;
	}
	segment_lockable = rl.rlim_cur == RLIM_INFINITY ? 0 : rl.rlim_cur;
	log_info("--lock: models stay in memory; RLIMIT_MEMLOCK %s%llu "
		 "bytes (was %llu)", rl.rlim_cur == RLIM_INFINITY ?
		 "unlimited, " : "", (unsigned long long)rl.rlim_cur,
		 (unsigned long long)was);
	return 0;
}

void
segment_promise(uint64_t size)
{
	atomic_fetch_add(&segment_promised, size);
}

void
segment_unpromise(uint64_t size)
{
	atomic_fetch_sub(&segment_promised, size);
}

/* Checks size bytes fit in the budget; 0 or MB_ENOSPACE with the reason. */
static int
segment_budget_fits(uint64_t size, uint64_t held, char *err, size_t errlen)
{
	uint64_t budget = broker.cfg.max_shm_bytes;

	uint64_t lockable = segment_lockable;

	if (budget != 0 && (held > budget || size > budget - held)) {
		snprintf(err, errlen, "model needs %" PRIu64 " bytes, the "
			 "--max-shm-bytes budget of %" PRIu64 " has %" PRIu64
			 " free", size, budget,
			 held > budget ? 0 : budget - held);
		return MB_ENOSPACE;
	}
	if (lockable != 0 && (held > lockable || size > lockable - held)) {
		snprintf(err, errlen, "model needs %" PRIu64 " bytes, --lock "
			 "may lock %" PRIu64 " more of RLIMIT_MEMLOCK's %"
			 PRIu64 " (raise it: ulimit -l, LimitMEMLOCK=)", size,
			 held > lockable ? 0 : lockable - held, lockable);
		return MB_ENOSPACE;
	}
	return 0;
}

/* Takes size bytes of the budget; 0 or MB_ENOSPACE with the reason. */
static int
segment_reserve(uint64_t size, char *err, size_t errlen)
{
	uint_fast64_t held = atomic_load(&segment_held);
	int r;

	do {
		if ((r = segment_budget_fits(size, held, err, errlen)) < 0)
			return r;
	} while (!atomic_compare_exchange_weak(&segment_held, &held,
					       held + size));
	return 0;
}

uint64_t
segment_bytes_held(void)
{
	return atomic_load(&segment_held);
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

	for (struct segment *f = segment_filling; f != NULL;
	     f = f->next_filling) {
		uint64_t taken = fstat(f->rw_fd, &st) == 0
					 ? (uint64_t)st.st_blocks * 512 : 0;

		n += taken < f->size ? f->size - taken : 0;
	}
	return n;
}

/* Checks size bytes fit in the free space less what segments being
 * filled have yet to take, and less taken bytes more (room promised to
 * loads not yet claimed, less what an eviction would free: may be
 * negative); 0 or MB_ENOSPACE with the reason.  Under segment_lock. */
static int
segment_space_fits(uint64_t size, int64_t taken, char *err, size_t errlen)
{
	uint64_t untaken = segment_untaken();
	int64_t avail = segment_space_free();
	int64_t left;

	if (avail < 0)
		return 0; /* unknown: the reservation of the pages decides */
	left = avail - (int64_t)untaken - taken;
	if (left >= (int64_t)size)
		return 0;
	snprintf(err, errlen, "model needs %" PRIu64 " bytes, %s has %" PRId64
		 " free%s", size, segment_dir(), left > 0 ? left : 0,
		 untaken > 0 || taken > 0 ?
		 " besides what loads in progress are taking" : "");
	return MB_ENOSPACE;
}

bool
segment_room_freeing(uint64_t size, uint64_t freed, char *err,
		     size_t errlen)
{
	uint64_t promised = atomic_load(&segment_promised);
	uint64_t held = atomic_load(&segment_held) + promised;
	bool fits;

	/* Freed pages come back to the filesystem too: asking for size less
	 * them is the same check.  Room promised to loads not yet claimed
	 * counts as taken. */
	pthread_mutex_lock(&segment_lock);
	fits = segment_budget_fits(size, held > freed ? held - freed : 0, err,
				   errlen) == 0 &&
	       segment_space_fits(size, (int64_t)promised - (int64_t)freed,
				  err, errlen) == 0;
	pthread_mutex_unlock(&segment_lock);
	return fits;
}

bool
segment_room(uint64_t size, char *err, size_t errlen)
{
	return segment_room_freeing(size, 0, err, errlen);
}

/* Takes s off the list of segments being filled.  Under segment_lock. */
static void
segment_unfill(struct segment *s)
{
	struct segment **p;

	if (!s->filling)
		return;
	for (p = &segment_filling; *p != NULL; p = &(*p)->next_filling) {
		if (*p == s) {
			*p = s->next_filling;
			break;
		}
	}
	s->filling = false;
}

int
segment_name_for(char *buf, size_t len, const char *model, uint64_t gen)
{
	char suffix[NAMES_SHM_MAX];

	snprintf(suffix, sizeof suffix, "model.%s.%" PRIu64 "-%s", model, gen,
		 broker.token);
	return names_shm(buf, len, broker.cfg.instance, suffix);
}

int
segment_name_member(char *buf, size_t len, const char *base,
		    unsigned member)
{
	int n = member == 0 ? snprintf(buf, len, "%s", base)
			    : snprintf(buf, len, "%s.%u", base, member);

	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

unsigned
segment_count(void)
{
	return atomic_load(&segment_live);
}

int
segment_unlink_name(const char *name)
{
	return segment_remove(name) == 0 ? 1 : 0;
}

struct segment *
segment_create(const char *name, uint64_t size, uint64_t promised,
	       int *result, char *err, size_t errlen)
{
	struct segment *s = calloc(1, sizeof *s);

	if (s == NULL) {
		segment_unpromise(promised);
		*result = -ENOMEM;
		return NULL;
	}
	snprintf(s->name, sizeof s->name, "%s", name);
	s->size = size;
	s->ro_fd = -1;
	s->locked = MAP_FAILED;
	s->refs = 1;
	pthread_mutex_lock(&segment_lock);
	/* Its own promise becomes the claim (or goes, if it fails). */
	segment_unpromise(promised);
	if (atomic_load(&segment_live) >= BROKER_MAX_SEGMENTS) {
		*result = MB_ELIMIT;
		snprintf(err, errlen, "the broker holds %d segments, its most",
			 BROKER_MAX_SEGMENTS);
		goto fail;
	}
	if ((*result = segment_space_fits(size,
					  (int64_t)atomic_load(&segment_promised),
					  err, errlen)) < 0 ||
	    (*result = segment_reserve(size, err, errlen)) < 0)
		goto fail;
	s->rw_fd = segment_open(s->name, O_RDWR | O_CREAT | O_EXCL, 0600);
	if (s->rw_fd < 0) {
		*result = -errno;
		snprintf(err, errlen, "cannot create segment %s: %s%s", s->name,
			 strerror(errno), errno == EEXIST ?
			 " (a name that is not ours; left untouched)" : "");
		atomic_fetch_sub(&segment_held, size);
		goto fail;
	}
	s->named = true;
	atomic_fetch_add(&segment_live, 1);
	if (ftruncate(s->rw_fd, (off_t)size) < 0) {
		*result = errno == ENOSPC ? MB_ENOSPACE : -errno;
		snprintf(err, errlen, "cannot size segment %s to %" PRIu64
			 " bytes: %s", s->name, size, strerror(errno));
		pthread_mutex_unlock(&segment_lock);
		segment_put(s);
		return NULL;
	}
	s->filling = true;
	s->next_filling = segment_filling;
	segment_filling = s;
	pthread_mutex_unlock(&segment_lock);
	return s;
fail:
	pthread_mutex_unlock(&segment_lock);
	free(s);
	return NULL;
}

int
segment_rw_fd(const struct segment *s)
{
	return s->rw_fd;
}

int
segment_reserve_pages(struct segment *s, uint64_t off, uint64_t len,
		      char *err, size_t errlen)
{
	int r = posix_fallocate(s->rw_fd, (off_t)off, (off_t)len);

	if (r == 0)
		return 0;
	snprintf(err, errlen, "cannot reserve %" PRIu64 " bytes in %s (%"
		 PRId64 " free): %s", len, segment_dir(), segment_space_free(),
		 strerror(r));
	return r == ENOSPC ? MB_ENOSPACE : -r;
}

/* Maps s read-only and locks its pages in memory (--lock); 0 or -errno.
 * The mapping is the lock: munmap in segment_put lets go of both.
 * mlock2 with no flags is mlock; sanitizers turn mlock into a no-op. */
static int
segment_lock_pages(struct segment *s)
{
	void *p;

	if (s->size == 0)
		return 0;
	p = mmap(NULL, s->size, PROT_READ, MAP_SHARED, s->ro_fd, 0);
	if (p == MAP_FAILED)
		return -errno;
	if (mlock2(p, s->size, 0) < 0) {
		int saved = errno;

		munmap(p, s->size);
		return -saved;
	}
	s->locked = p;
	return 0;
}

int
segment_write(struct segment *s, const void *buf, size_t len, uint64_t off,
	      char *err, size_t errlen)
{
	const unsigned char *p = buf;
	ssize_t n;

	while (len > 0) {
		if ((n = pwrite(s->rw_fd, p, len, (off_t)off)) < 0 &&
		    errno == EINTR)
			continue;
		if (n <= 0) {
			int e = n < 0 ? errno : ENOSPC;

			snprintf(err, errlen, "cannot write %zu bytes in %s (%"
				 PRId64 " free): %s", len, segment_dir(),
				 segment_space_free(), strerror(e));
			return e == ENOSPC ? MB_ENOSPACE : -e;
		}
		p += n;
		off += (uint64_t)n;
		len -= (size_t)n;
	}
	return 0;
}

int
segment_seal(struct segment *s)
{
	gid_t gid = broker.cfg.allow_gid;
	char path[64];
	int r = 0;

	pthread_mutex_lock(&segment_lock);
	segment_unfill(s);
	pthread_mutex_unlock(&segment_lock);
	snprintf(path, sizeof path, "/proc/self/fd/%d", s->rw_fd);
	/* Readable by the --allow-gid group's workers through the
	 * descriptor they received (/proc/self/fd/N); writable by none. */
	if ((gid != 0 && fchown(s->rw_fd, (uid_t)-1, gid) < 0) ||
	    fchmod(s->rw_fd, gid != 0 ? 0440 : 0400) < 0 ||
	    (s->ro_fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
		r = -errno;
	close(s->rw_fd);
	s->rw_fd = -1;
	if (r == 0 && broker.cfg.lock)
		r = segment_lock_pages(s);
	return r;
}

int
segment_fd(const struct segment *s)
{
	return s->ro_fd;
}

const char *
segment_name(const struct segment *s)
{
	return s->named ? s->name : "";
}

const char *
segment_created_name(const struct segment *s)
{
	return s->name;
}

uint64_t
segment_size(const struct segment *s)
{
	return s->size;
}

int
segment_unlink(struct segment *s)
{
	if (!s->named)
		return 0;
	if (segment_remove(s->name) < 0 && errno != ENOENT)
		return -errno;
	s->named = false;
	if (s->refs > 1)
		s->outlived = true;
	return 1;
}

struct segment *
segment_hold(struct segment *s)
{
	s->refs++;
	return s;
}

void
segment_put(struct segment *s)
{
	if (--s->refs > 0)
		return;
	pthread_mutex_lock(&segment_lock);
	segment_unfill(s);
	pthread_mutex_unlock(&segment_lock);
	if (s->named && segment_remove(s->name) < 0 && errno != ENOENT)
		log_warn("cannot unlink segment %s", s->name);
	if (s->rw_fd >= 0)
		close(s->rw_fd);
	if (s->ro_fd >= 0)
		close(s->ro_fd);
	if (s->locked != MAP_FAILED)
		munmap(s->locked, s->size);
	atomic_fetch_sub(&segment_held, s->size);
	atomic_fetch_sub(&segment_live, 1);
	if (s->outlived)
		log_info("segment %s: its last holder let go; %" PRIu64
			 " bytes back to the budget", s->name, s->size);
	free(s);
}
