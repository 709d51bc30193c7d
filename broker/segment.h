/* SPDX-License-Identifier: MIT */
/*
 * segment.h - one shared-memory segment's whole life, owned by segment.c:
 * created under the budget and the free space, filled (by the loader),
 * sealed read-only, handed out by descriptor, unlinked, and given back to
 * the budget when its last holder lets go.  A segment counts references:
 * the generation that owns it holds one, each lease one more, so a segment
 * unlinked while workers still map it keeps its bytes counted until the
 * last of them is gone.
 */
#ifndef MBROKER_SEGMENT_H
#define MBROKER_SEGMENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct segment;

/* Fills buf with the shm name of the gen-th load of model; 0 or -errno. */
int segment_name_for(char *buf, size_t len, const char *model, uint64_t gen);
/* Fills buf with the name of a model's member-th segment (a bundle has one
 * per file): base (segment_name_for) for the first, base.MEMBER after.
 * 0 or -ENAMETOOLONG. */
int segment_name_member(char *buf, size_t len, const char *base,
			unsigned member);
/* Segments that exist now (BROKER_MAX_SEGMENTS at most). */
unsigned segment_count(void);
/* Removes a segment's name while its creator still owns it (a load that
 * is abandoned); 1 when a name was removed, 0 when there was none. */
int segment_unlink_name(const char *name);

/*
 * Creates the segment called name (segment_name_for): size bytes, O_EXCL and
 * mode 0600, within the --max-shm-bytes budget and the free space less
 * what other segments being filled have yet to take.  Returns it with one
 * reference and a read-write descriptor (until segment_seal), or NULL with
 * *result (MB_E* or -errno) and a reason in err.  Thread-safe.
 */
struct segment *segment_create(const char *name, uint64_t size,
			       uint64_t promised, int *result, char *err,
			       size_t errlen);
/* Holds size bytes of room for a load that passed its room check until
 * its segment_create (given them as promised) or its failure before
 * (segment_unpromise): a second load checked meanwhile sees them taken.
 * Thread-safe. */
void segment_promise(uint64_t size);
void segment_unpromise(uint64_t size);
/* The read-write descriptor while the segment is being filled. */
int segment_rw_fd(const struct segment *s);
/* Reserves len pages' bytes from off, so that a full filesystem is an
 * error here instead of a SIGBUS later; 0 or MB_ENOSPACE / -errno with a
 * reason.  Thread-safe for disjoint parts. */
int segment_reserve_pages(struct segment *s, uint64_t off, uint64_t len,
			  char *err, size_t errlen);
/* Writes len bytes of buf at off, allocating the pages as it copies
 * (write-style: no zeroing pass first, and a full filesystem is an error
 * here, never a SIGBUS later); 0 or MB_ENOSPACE / -errno with a reason.
 * Thread-safe for disjoint parts. */
int segment_write(struct segment *s, const void *buf, size_t len,
		  uint64_t off, char *err, size_t errlen);
/* Makes the filled segment read-only for everyone (0400; 0440 and the
 * group --allow-gid when it is given) and keeps a
 * read-only descriptor to hand out; the read-write one is closed (also on
 * failure).  With --lock its pages are locked in memory until the last
 * reference goes.  Its pages no longer count as still to take.  0 or
 * -errno. */
int segment_seal(struct segment *s);
/* The read-only descriptor handed out with attach replies. */
int segment_fd(const struct segment *s);
/* The shm name, "" once unlinked. */
const char *segment_name(const struct segment *s);
/* The name it was created under, unlinked or not (as the mappings of its
 * holders still show it in /proc/PID/smaps). */
const char *segment_created_name(const struct segment *s);
uint64_t segment_size(const struct segment *s);
/* Removes the name (nobody can open it any more; holders keep their
 * mapping).  Returns 1 when a name was removed, 0 when it was already
 * gone, -errno (logged by the caller). */
int segment_unlink(struct segment *s);
/* One more holder of s (a lease); returns s. */
struct segment *segment_hold(struct segment *s);
/* Lets go of one reference: the last one unlinks the name if still there,
 * closes the descriptors and gives the bytes back to the budget. */
void segment_put(struct segment *s);

/* Bytes of the budget held by segments now. */
uint64_t segment_bytes_held(void);
/* Bytes free in the segments' filesystem, or -errno. */
int64_t segment_space_free(void);
/* Whether size more bytes fit in the budget and the free space now (a
 * check ahead of a load; segment_create decides); else the reason. */
bool segment_room(uint64_t size, char *err, size_t errlen);
/* The same once freed bytes of segments have been given back (what an
 * eviction would free). */
bool segment_room_freeing(uint64_t size, uint64_t freed, char *err,
			  size_t errlen);
/* --lock at start: raises RLIMIT_MEMLOCK's soft limit to the hard one
 * and takes it as a second budget, which every load is checked against
 * (no_space); refuses a --max-shm-bytes budget it cannot lock.  0, or -1
 * logged. */
int segment_lock_init(void);
/* The directory segments live in (/dev/shm or --shm-dir). */
const char *segment_dir(void);

#endif /* MBROKER_SEGMENT_H */
