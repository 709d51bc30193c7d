/* SPDX-License-Identifier: MIT */
/*
 * loader.c - copies a model file, or each file of a bundle in name order,
 * into new segments on a thread of its own, so a long load never blocks
 * the control loop.  The thread writes the file into the segment through
 * a small buffer (into the mapping of reserved pages in a --shm-dir),
 * hashes each chunk while it is hot in cache; a large file goes through a
 * pipeline, this thread reading and hashing while a second writes the
 * buffers (or hashes the mapping right behind the reads), so the hash
 * overlaps the copy and no byte is read twice.  It keeps under --load-rate,
 * leaves the page cache as it found it (filecache.c), notices a
 * file that changes under it, and stops early when cancelled.  It tells
 * its caller twice, on the main loop and in order: once the file's size is
 * known and once it finished; until then the thread touches only its own
 * job.  It knows nothing of models: what a load means is load.c's.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <xxhash.h>

#include "bundle.h"
#include "filecache.h"
#include "loader.h"
#include "mbrokerd.h"
#include "segment.h"
#include "wakeup.h"

/* Bytes read per call into a mapping: large enough for full speed, small
 * enough that a cancel is noticed within milliseconds. */
#define LOADER_CHUNK (8u << 20)
/* Bytes read per call, then written: fits the cache, so the hash and the
 * write find it hot (measured best against 128 KiB and 8 MiB). */
#define LOADER_BUFFER (1u << 20)
/* Under --load-rate: how often the pace is checked, at most. */
#define LOADER_PACE_MS 50
/* Files at least this large are filled by a pipeline of two threads. */
#define LOADER_PIPE_MIN (64u << 20)
/* Buffers of LOADER_BUFFER between the reading and the writing thread. */
#define LOADER_RING 6
/* The checksum pass looks for a cancel this often. */
#define LOADER_HASH_SLICE (64u << 20)

struct load_job;
/* What the thread posts to the main loop, through one pipe in order. */
struct loader_note {
	struct load_job *job;
	bool finished; /* false: the size is known */
};

struct load_job {
	const struct loader_calls *calls; /* NULL once abandoned */
	void *ctx;
	pthread_t thread;
	struct wakeup *finished_channel; /* where the thread posts notes */
	char path[PATH_MAX];
	const struct provider *provider; /* provider_bundle for a bundle */
	char segment[NAMES_SHM_MAX];     /* the first member's; base of all */
	atomic_uint nsegments;           /* segments it created so far */
	atomic_uint_fast64_t done;
	atomic_uint_fast64_t total; /* the files' size, once known */
	atomic_bool cancel;
	struct loader_note sized, finished;
	uint64_t rate; /* bytes per second, 0: unlimited */
	bool background; /* one thread, whatever its size */
	uint64_t promised; /* room held for it until its segment is made */
	/* The member being copied, and what messages call it. */
	struct member *member;
	char label[PATH_MAX + BUNDLE_NAME_MAX + 2];
	/* Results, read by the main thread after the thread posted. */
	int result;
	char error[PATH_MAX + BUNDLE_NAME_MAX + 512];
	struct member *members;
	unsigned nmembers;
	uint64_t reclaimed;
	unsigned removed;
	uint64_t size;
	uint64_t checksum;
	size_t ntensors;
};

static struct wakeup *loader_wakeup;
/* Abandoned jobs whose thread has not finished yet. */
static unsigned loader_abandoned;

/* Under --load-rate, waits (cancellably) until off bytes are due. */
static void
loader_pace(struct load_job *job, uint64_t off, int64_t started_ms)
{
	int64_t due = started_ms + (int64_t)(off * 1000 / job->rate);
	int64_t now;

	while (!atomic_load(&job->cancel) &&
	       (now = clock_monotonic_ms()) < due) {
		int64_t ms = due - now < LOADER_PACE_MS ? due - now
							: LOADER_PACE_MS;
		struct timespec ts = {0, (long)ms * 1000000};

		nanosleep(&ts, NULL);
	}
}

/*
 * The two stages of a pipelined fill: the reader (stage A) reads chunk
 * after chunk, into a ring of buffers (hashing each while hot) or into the
 * mapping; the follower (stage B) writes each buffer into the segment and
 * frees it, or hashes the mapping right behind the reader.  read and used
 * count the bytes each stage is through; stop is set by the stage that
 * fails, so the other stops too.
 */
struct loader_pipe {
	pthread_mutex_t lock;
	pthread_cond_t moved;
	unsigned char *ring;  /* LOADER_RING buffers; NULL: the mapping */
	XXH3_state_t *hash;   /* fed by the follower, or NULL */
	uint64_t read, used;
	bool finished, stop;
};

/* One thread's share of a fill: the whole copy alone, or one stage of
 * the pipeline (reader or follower). */
struct loader_fill {
	struct load_job *job;
	struct segment *seg;
	int src;
	unsigned char *map;   /* filled in place; NULL: written with pwrite */
	XXH3_state_t *hash;   /* fed each chunk while hot, or NULL */
	unsigned char *buf;   /* the chunk between read and write */
	struct loader_pipe *pipe; /* the reader's, or NULL: copied alone */
	uint64_t len;
	int result;
	char error[PATH_MAX + BUNDLE_NAME_MAX + 512];
};

/* The reader waits until the ring has room for want more bytes; false
 * if the follower stopped. */
static bool
loader_pipe_room(struct loader_pipe *p, size_t want)
{
	bool go;

	pthread_mutex_lock(&p->lock);
	while (!p->stop && p->ring != NULL &&
	       LOADER_RING * LOADER_BUFFER - (p->read - p->used) < want)
		pthread_cond_wait(&p->moved, &p->lock);
	go = !p->stop;
	pthread_mutex_unlock(&p->lock);
	return go;
}

/* Moves one stage's count (read or used) on by n bytes. */
static void
loader_pipe_advance(struct loader_pipe *p, uint64_t *count, uint64_t n)
{
	pthread_mutex_lock(&p->lock);
	*count += n;
	pthread_cond_signal(&p->moved);
	pthread_mutex_unlock(&p->lock);
}

/* A stage is over: all read (the follower drains what is left) or, on a
 * failure, both stop. */
static void
loader_pipe_end(struct loader_pipe *p, bool failed)
{
	pthread_mutex_lock(&p->lock);
	if (failed)
		p->stop = true;
	else
		p->finished = true;
	pthread_cond_signal(&p->moved);
	pthread_mutex_unlock(&p->lock);
}

/*
 * Copies the part from the file, a chunk at a time, to the segment: on
 * /dev/shm written (each page allocated as it is copied, so a full
 * filesystem is a clean no_space and no page is zeroed first), in a
 * --shm-dir read straight into the mapping of pages reserved first (its
 * 2 MiB pages fill fastest that way).  With a pipe it is the reader:
 * chunks go into the ring (hashed while hot) for the follower to write,
 * or into the mapping for the follower to hash.
 */
static int
loader_fill(struct loader_fill *f)
{
	struct load_job *job = f->job;
	struct loader_pipe *pipe = f->pipe;
	int64_t started = clock_monotonic_ms();
	uint64_t done = 0, chunk = f->map != NULL ? LOADER_CHUNK
						  : LOADER_BUFFER;
	uint64_t ring = LOADER_RING * LOADER_BUFFER;
	int r;

	if (f->map != NULL && (r = segment_reserve_pages(f->seg, 0,
			       f->len, f->error, sizeof f->error)) < 0)
		return r;
	/* Throttled, read what LOADER_PACE_MS allows at a time. */
	if (job->rate > 0 && job->rate / (1000 / LOADER_PACE_MS) < chunk)
		chunk = job->rate / (1000 / LOADER_PACE_MS) + 1;
	while (done < f->len) {
		size_t want = f->len - done < chunk ? (size_t)(f->len - done)
						    : (size_t)chunk;
		unsigned char *to = f->map != NULL ? f->map + done
						   : f->buf;
		ssize_t n;

		if (atomic_load(&job->cancel)) {
			snprintf(f->error, sizeof f->error, "load cancelled "
				 "after %" PRIu64 " bytes",
				 (uint64_t)atomic_load(&job->done));
			return MB_ECANCELLED;
		}
		if (pipe != NULL && pipe->ring != NULL) {
			to = pipe->ring + done % ring;
			if (want > ring - done % ring)
				want = (size_t)(ring - done % ring);
		}
		if (pipe != NULL && !loader_pipe_room(pipe, want))
			return MB_ECANCELLED; /* the follower's error tells */
		n = pread(f->src, to, want, (off_t)done);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			snprintf(f->error, sizeof f->error, "reading %s at byte %"
				 PRIu64 ": %s", job->label, done,
				 n < 0 ? strerror(errno) : "file shrank");
			return MB_EIO;
		}
		if (f->hash != NULL)
			XXH3_64bits_update(f->hash, to, (size_t)n);
		done += (uint64_t)n;
		if (pipe != NULL)
			loader_pipe_advance(pipe, &pipe->read, (uint64_t)n);
		if (pipe != NULL && pipe->ring != NULL)
			continue;
		if (f->map == NULL &&
		    (r = segment_write(f->seg, to, (size_t)n,
				       done - (uint64_t)n, f->error,
				       sizeof f->error)) < 0)
			return r;
		atomic_fetch_add(&job->done, (uint_fast64_t)n);
		if (job->rate > 0)
			loader_pace(job, done, started);
	}
	return 0;
}

/* The follower: writes each buffer the reader filled into the segment, or
 * hashes the mapping right behind the reader, until the reader is through
 * and all is used, or a stage failed. */
static int
loader_follow(struct loader_fill *f)
{
	struct loader_pipe *p = f->pipe;
	uint64_t ring = LOADER_RING * LOADER_BUFFER;

	for (;;) {
		uint64_t from, len;
		bool stop;
		int r;

		pthread_mutex_lock(&p->lock);
		while (!p->stop && !p->finished && p->used == p->read)
			pthread_cond_wait(&p->moved, &p->lock);
		from = p->used;
		len = p->read - p->used;
		stop = p->stop;
		pthread_mutex_unlock(&p->lock);
		if (stop || len == 0)
			return 0;
		if (p->ring == NULL) {
			len = len < LOADER_CHUNK ? len : LOADER_CHUNK;
			XXH3_64bits_update(p->hash, f->map + from, (size_t)len);
		} else {
			if (len > ring - from % ring)
				len = ring - from % ring;
			if ((r = segment_write(f->seg, p->ring + from % ring,
					       (size_t)len, from, f->error,
					       sizeof f->error)) < 0) {
				loader_pipe_end(p, true);
				return r;
			}
			atomic_fetch_add(&f->job->done, (uint_fast64_t)len);
		}
		loader_pipe_advance(p, &p->used, len);
	}
}

static void *
loader_follow_thread(void *arg)
{
	struct loader_fill *f = arg;

	f->result = loader_follow(f);
	return NULL;
}

/* XXH3 of what was copied into the mapping, in slices so that a cancel is
 * noticed. */
static int
loader_hash(struct load_job *job, XXH3_state_t *xs, const unsigned char *map)
{
	struct member *m = job->member;

	for (uint64_t off = 0; off < m->size; off += LOADER_HASH_SLICE) {
		uint64_t len = m->size - off < LOADER_HASH_SLICE
				       ? m->size - off : LOADER_HASH_SLICE;

		if (atomic_load(&job->cancel)) {
			snprintf(job->error, sizeof job->error,
				 "load cancelled while hashing");
			return MB_ECANCELLED;
		}
		XXH3_64bits_update(xs, map + off, (size_t)len);
	}
	return 0;
}

/*
 * Fills the member's segment from src and hashes it.  Large and
 * unthrottled (and not in the background), in a pipeline of two threads:
 * this one reads (and on /dev/shm hashes) while a second one writes the
 * buffers into the segment (in a --shm-dir: hashes the mapping behind the
 * reads), so the load takes as long as the slower stage.  Alone, chunks
 * are hashed as they pass through the buffer, and a filled mapping is
 * hashed in one pass after.  Checks the file did not grow.  map is NULL
 * for an empty member.
 */
static int
loader_copy(struct load_job *job, int src, unsigned char *map)
{
	struct member *m = job->member;
	bool mapped = broker.cfg.shm_dir != NULL && map != NULL;
	struct loader_pipe pipe = {
		.lock = PTHREAD_MUTEX_INITIALIZER,
		.moved = PTHREAD_COND_INITIALIZER,
	};
	struct loader_fill reader = {
		.job = job, .seg = m->segment, .src = src,
		.map = mapped ? map : NULL, .len = m->size,
	}, follower = reader;
	XXH3_state_t *xs = XXH3_createState();
	pthread_t helper;
	bool piped = job->rate == 0 && m->size >= LOADER_PIPE_MIN &&
		     !job->background;
	unsigned char extra;
	int r = -ENOMEM;

	if (xs == NULL || XXH3_64bits_reset(xs) == XXH_ERROR)
		goto out;
	if (!mapped)
		reader.hash = xs;
	if (piped && mapped)
		pipe.hash = xs;
	if (!mapped && (reader.buf = malloc(piped ? LOADER_RING *
					    LOADER_BUFFER : LOADER_BUFFER)) == NULL)
		goto out;
	if (piped) {
		pipe.ring = reader.buf;
		reader.pipe = follower.pipe = &pipe;
		/* No second thread: one copies it all. */
		if (pthread_create(&helper, NULL, loader_follow_thread,
				   &follower) != 0) {
			piped = false;
			reader.pipe = NULL;
			pipe.hash = NULL;
		}
	}
	reader.result = loader_fill(&reader);
	if (piped) {
		loader_pipe_end(&pipe, reader.result < 0);
		pthread_join(helper, NULL);
	}
	if (follower.result < 0 || reader.result < 0) {
		struct loader_fill *f = follower.result < 0 ? &follower : &reader;

		snprintf(job->error, sizeof job->error, "%s", f->error);
		r = f->result;
		goto out;
	}
	if (pread(src, &extra, 1, (off_t)m->size) > 0) {
		snprintf(job->error, sizeof job->error,
			 "%s grew during the load", job->label);
		r = MB_EIO;
		goto out;
	}
	if ((r = mapped && !piped ? loader_hash(job, xs, map) : 0) == 0)
		m->checksum = XXH3_64bits_digest(xs);
out:
	free(reader.buf);
	XXH3_freeState(xs);
	return r;
}

/* Opens the source: a non-empty regular file, never a FIFO or device.
 * A file that cannot be opened (missing, unreadable) is io_error; a path
 * outside every --model-dir stays permission_denied. */
static int
loader_open(struct load_job *job, struct stat *st)
{
	int fd = modeldir_open(job->path, O_RDONLY | O_CLOEXEC | O_NOCTTY |
					      O_NONBLOCK, job->error,
			       sizeof job->error);

	if (fd < 0)
		return fd == MB_EDENIED ? fd : MB_EIO;
	if (fstat(fd, st) == 0 && S_ISDIR(st->st_mode)) {
		snprintf(job->error, sizeof job->error, "%s is a directory: "
			 "load it as a bundle (format auto or bundle)",
			 job->path);
		close(fd);
		return MB_EFORMAT;
	}
	if (!S_ISREG(st->st_mode)) {
		snprintf(job->error, sizeof job->error,
			 "%s is not a regular file", job->path);
		close(fd);
		return MB_EIO;
	}
	if (st->st_size == 0) {
		snprintf(job->error, sizeof job->error, "%s is empty",
			 job->path);
		close(fd);
		return MB_EFORMAT;
	}
	return fd;
}

/* Checks the source did not change while it was copied. */
static int
loader_unchanged(struct load_job *job, int src, const struct stat *before)
{
	struct stat after;

	if (fstat(src, &after) < 0 || after.st_size != before->st_size ||
	    after.st_mtim.tv_sec != before->st_mtim.tv_sec ||
	    after.st_mtim.tv_nsec != before->st_mtim.tv_nsec) {
		snprintf(job->error, sizeof job->error,
			 "%s changed during the load", job->label);
		return MB_EIO;
	}
	return 0;
}

/* Lets go of what the members hold: their segments (counted as removed,
 * their bytes as reclaimed) and provider states; frees the list. */
static void
loader_release_members(struct load_job *job)
{
	for (unsigned i = 0; i < job->nmembers; i++) {
		struct member *m = &job->members[i];

		if (m->provider_state != NULL &&
		    m->provider->unload(m->provider_state) < 0)
			log_warnx("%s/%s: provider cleanup failed", job->path,
				  m->name);
		if (m->segment != NULL) {
			job->reclaimed += m->size;
			job->removed++;
			segment_put(m->segment);
		}
	}
	free(job->members);
	job->members = NULL;
	job->nmembers = 0;
}

/* Puts "member NAME of PATH: " before the error (cutting its end if it
 * must). */
static void
loader_error_prefix(struct load_job *job)
{
	char prefix[PATH_MAX + BUNDLE_NAME_MAX + 16];
	size_t n = (size_t)snprintf(prefix, sizeof prefix, "member %s of %s: ",
				    job->member->name, job->path);
	size_t len = strlen(job->error);

	if (n + len >= sizeof job->error)
		len = sizeof job->error - n - 1;
	memmove(job->error + n, job->error, len);
	job->error[n + len] = '\0';
	memcpy(job->error, prefix, n);
}

/* Copies the member job->member from src (read-only, its size checked)
 * into the index-th segment, checks it, and seals it. */
static int
loader_member(struct load_job *job, unsigned index, int src,
	      const struct stat *st)
{
	struct member *m = job->member;
	struct filecache *cache = NULL;
	unsigned char *map = MAP_FAILED;
	uint64_t promise = m->size < job->promised ? m->size : job->promised;
	char name[NAMES_SHM_MAX];
	int r;

	if (atomic_load(&job->cancel)) {
		snprintf(job->error, sizeof job->error, "load cancelled "
			 "after %" PRIu64 " bytes",
			 (uint64_t)atomic_load(&job->done));
		return MB_ECANCELLED;
	}
	/* Before the probe's first read: what the load brings in goes when
	 * it is over, unless --keep-file-cache. */
	if (!broker.cfg.keep_file_cache)
		cache = filecache_note(src, m->size);
	if ((r = m->provider->probe(src, m->size, job->error,
				    sizeof job->error)) < 0)
		goto out;
	if (lseek(src, 0, SEEK_SET) < 0) {
		r = -errno;
		goto out;
	}
	if ((r = segment_name_member(name, sizeof name, job->segment,
				     index)) < 0)
		goto out;
	job->promised -= promise;
	m->segment = segment_create(name, m->size, promise, &r, job->error,
				    sizeof job->error);
	if (m->segment == NULL)
		goto out;
	atomic_fetch_add(&job->nsegments, 1);
	if (m->size > 0) {
		map = mmap(NULL, m->size, PROT_READ | PROT_WRITE, MAP_SHARED,
			   segment_rw_fd(m->segment), 0);
		if (map == MAP_FAILED) {
			r = -errno;
			snprintf(job->error, sizeof job->error,
				 "cannot map segment: %s", strerror(-r));
			goto out;
		}
		/* In a --shm-dir tmpfs mounted huge=advise, this asks for
		 * 2 MiB pages; /dev/shm gives none (measured: no effect). */
		if (broker.cfg.shm_dir != NULL)
			madvise(map, m->size, MADV_HUGEPAGE);
	}
	if ((r = loader_copy(job, src, map == MAP_FAILED ? NULL : map)) < 0 ||
	    (r = loader_unchanged(job, src, st)) < 0 ||
	    (r = m->provider->load(map == MAP_FAILED ? NULL : map, m->size,
				   &m->provider_state, &m->ntensors,
				   job->error, sizeof job->error)) < 0)
		goto out;
	if ((r = segment_seal(m->segment)) < 0)
		snprintf(job->error, sizeof job->error,
			 "cannot seal segment %s: %s", name, strerror(-r));
out:
	if (map != MAP_FAILED)
		munmap(map, m->size);
	filecache_drop_new(cache, src);
	/* A bundle's failure names the member (the loader's own messages
	 * name it by its label already). */
	if (job->provider == &provider_bundle && r < 0 &&
	    strstr(job->error, job->label) == NULL)
		loader_error_prefix(job);
	return r;
}

/* Lists a single file as the one member, its descriptor in *src. */
static int
loader_list_file(struct load_job *job, int *src, struct stat *st)
{
	const char *base = strrchr(job->path, '/');

	if ((*src = loader_open(job, st)) < 0)
		return *src;
	if ((job->members = calloc(1, sizeof *job->members)) == NULL) {
		close(*src);
		*src = -1;
		return -ENOMEM;
	}
	job->nmembers = 1;
	snprintf(job->members[0].name, sizeof job->members[0].name, "%.*s",
		 BUNDLE_NAME_MAX, base != NULL ? base + 1 : job->path);
	job->members[0].provider = job->provider;
	job->members[0].size = (uint64_t)st->st_size;
	job->size = job->members[0].size;
	return 0;
}

/* Opens job->member of the bundle whose directory is dir, read-only; its
 * size must be what the walk saw. */
static int
loader_open_member(struct load_job *job, int dir, struct stat *st)
{
	struct member *m = job->member;
	int src = bundle_open_member(dir, job->path, m->name, st, job->error,
				     sizeof job->error);

	if (src < 0)
		return src;
	if ((uint64_t)st->st_size != m->size) {
		snprintf(job->error, sizeof job->error,
			 "%s changed during the load", job->label);
		close(src);
		return MB_EIO;
	}
	return src;
}

/* The whole load, on the loader thread; 0 or MB_E* / -errno. */
static int
loader_load(struct load_job *job)
{
	bool bundle = job->provider == &provider_bundle;
	int dir = -1, src = -1, r;
	struct stat st;

	if (bundle) {
		if ((r = dir = bundle_open(job->path, job->error,
					   sizeof job->error)) >= 0)
			r = bundle_walk(dir, job->path, &job->members,
					&job->nmembers, &job->size, job->error,
					sizeof job->error);
	} else {
		r = loader_list_file(job, &src, &st);
	}
	if (r < 0)
		goto out;
	atomic_store(&job->total, job->size);
	wakeup_post(job->finished_channel, &job->sized);
	for (unsigned i = 0; r == 0 && i < job->nmembers; i++) {
		job->member = &job->members[i];
		snprintf(job->label, sizeof job->label, bundle ? "%s/%s" : "%s",
			 job->path, job->member->name);
		if (bundle && (src = loader_open_member(job, dir, &st)) < 0) {
			r = src;
			break;
		}
		r = loader_member(job, i, src, &st);
		job->ntensors += job->member->ntensors;
		close(src);
		src = -1;
	}
	if (r == 0)
		job->checksum = bundle ? bundle_checksum(job->members,
							 job->nmembers)
				       : job->members[0].checksum;
out:
	if (dir >= 0)
		close(dir);
	if (job->promised > 0) { /* failed before its last segment */
		segment_unpromise(job->promised);
		job->promised = 0;
	}
	if (r < 0)
		loader_release_members(job);
	return r;
}

static void *
loader_thread(void *arg)
{
	struct load_job *job = arg;

	job->result = loader_load(job);
	if (job->result < 0 && job->error[0] == '\0')
		snprintf(job->error, sizeof job->error, "%s",
			 mb_strerror(job->result));
	wakeup_post(job->finished_channel, &job->finished);
	return NULL;
}

/* Cleans up after an abandoned job whose thread finally returned. */
static void
loader_done_abandoned(struct load_job *job)
{
	loader_abandoned--;
	loader_release_members(job);
	log_info("abandoned load of %s finished; cleaned up", job->path);
	free(job);
}

/* Hands a finished job's result to its caller, on the main loop. */
static void
loader_done(struct load_job *job)
{
	struct load_result r = {
		.result = job->result,
		.error = job->error,
		.members = job->members,
		.nmembers = job->nmembers,
		.size = job->size,
		.checksum = job->checksum,
		.ntensors = job->ntensors,
		.reclaimed = job->reclaimed,
		.removed = job->removed,
	};

	pthread_join(job->thread, NULL);
	if (job->calls == NULL) {
		loader_done_abandoned(job);
		return;
	}
	job->calls->done(job->ctx, &r);
	free(job);
}

struct load_job *
loader_start(const char *segment_name, const char *path,
	     const struct provider *p, uint64_t promised,
	     const struct loader_calls *calls, void *ctx, int *err)
{
	struct load_job *job = calloc(1, sizeof *job);
	sigset_t all, old;

	if (job == NULL) {
		*err = -ENOMEM;
		return NULL;
	}
	job->calls = calls;
	job->ctx = ctx;
	job->finished_channel = loader_wakeup;
	job->sized = (struct loader_note){job, false};
	job->finished = (struct loader_note){job, true};
	job->provider = p;
	job->rate = broker.cfg.load_rate;
	job->background = calls->background;
	job->promised = promised;
	snprintf(job->path, sizeof job->path, "%s", path);
	snprintf(job->segment, sizeof job->segment, "%s", segment_name);
	/* The thread takes no signals: they belong to the main loop. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	*err = -pthread_create(&job->thread, NULL, loader_thread, job);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (*err < 0) {
		free(job);
		return NULL;
	}
	return job;
}

void
loader_cancel(struct load_job *job)
{
	atomic_store(&job->cancel, true);
}

/* Removes the names of the segments job made so far; how many there
 * were. */
static int
loader_unlink_names(struct load_job *job)
{
	unsigned made = atomic_load(&job->nsegments);
	char name[NAMES_SHM_MAX];
	int n = 0;

	for (unsigned i = 0; i < made; i++)
		if (segment_name_member(name, sizeof name, job->segment,
					i) == 0)
			n += segment_unlink_name(name);
	return n;
}

int
loader_abandon(struct load_job *job)
{
	atomic_store(&job->cancel, true);
	job->calls = NULL;
	loader_abandoned++;
	log_warnx("the load of %s did not stop in time (blocked in a read?); "
		  "abandoned", job->path);
	/* The thread still owns the descriptors and the reservation (so
	 * nothing is freed yet); the names it made go now, so nothing is left
	 * if the broker exits first (one it makes later goes when it
	 * returns). */
	return loader_unlink_names(job);
}

uint64_t
loader_progress(const struct load_job *job)
{
	return atomic_load(&job->done);
}

unsigned
loader_abandoned_count(void)
{
	return loader_abandoned;
}

uint64_t
loader_total(const struct load_job *job)
{
	return atomic_load(&job->total);
}

/* Receives what a loader thread posted. */
static void
loader_note(void *ptr)
{
	struct loader_note *note = ptr;

	struct load_job *job = note->job;

	if (note->finished)
		loader_done(job);
	else if (job->calls != NULL)
		job->calls->sized(job->ctx, atomic_load(&job->total));
}

int
loader_init(void)
{
	loader_wakeup = wakeup_new(loader_note);
	return loader_wakeup != NULL ? 0 : -1;
}

void
loader_shutdown(void)
{
	/* An abandoned thread may still post: leave it its channel, as the
	 * process is about to exit anyway. */
	if (loader_abandoned == 0)
		wakeup_free(loader_wakeup);
	loader_wakeup = NULL;
}
