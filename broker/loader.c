/* SPDX-License-Identifier: MIT */
/*
 * loader.c - copies a model file into a new segment on a thread of its own,
 * so a long load never blocks the control loop.  The thread reads straight
 * into the mapping of a segment whose pages were reserved first, hashes
 * each chunk while it is hot in cache, keeps under --load-rate, notices a
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

#include "loader.h"
#include "mbrokerd.h"
#include "segment.h"
#include "wakeup.h"

/* Bytes read per call: large enough for full speed, small enough that a
 * cancel is noticed within milliseconds. */
#define LOADER_CHUNK (8u << 20)
/* Under --load-rate: how often the pace is checked, at most. */
#define LOADER_PACE_MS 50
/* Files at least this large are filled by two threads. */
#define LOADER_SPLIT_MIN (64u << 20)
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
	const struct provider *provider;
	char segment[NAMES_SHM_MAX];
	atomic_uint_fast64_t done;
	atomic_uint_fast64_t total; /* the file's size, once known */
	atomic_bool cancel;
	struct loader_note sized, finished;
	uint64_t rate; /* bytes per second, 0: unlimited */
	bool background; /* one thread, whatever its size */
	uint64_t promised; /* room held for it until its segment is made */
	/* Results, read by the main thread after the thread posted. */
	int result;
	char error[PATH_MAX + 512];
	struct segment *seg;
	uint64_t reclaimed;
	uint64_t size;
	uint64_t checksum;
	void *state;
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

/* One part of the segment to fill, by one thread. */
struct loader_fill {
	struct load_job *job;
	int src;
	unsigned char *map;
	uint64_t off, len;
	int result;
	char error[PATH_MAX + 512];
};

/*
 * Reserves the part's pages and reads the file straight into them.  On
 * its own thread the part is half the file: page allocation, not copying,
 * is what a load waits on, and two cores allocate twice as fast.
 */
static int
loader_fill(struct loader_fill *f)
{
	struct load_job *job = f->job;
	int64_t started = clock_monotonic_ms();
	uint64_t done = 0, chunk = LOADER_CHUNK;
	int r;

	if ((r = segment_reserve_pages(job->seg, f->off, f->len, f->error,
				       sizeof f->error)) < 0)
		return r;
	/* Throttled, read what LOADER_PACE_MS allows at a time. */
	if (job->rate > 0 && job->rate / (1000 / LOADER_PACE_MS) < chunk)
		chunk = job->rate / (1000 / LOADER_PACE_MS) + 1;
	while (done < f->len) {
		size_t want = f->len - done < chunk ? (size_t)(f->len - done)
						    : (size_t)chunk;
		ssize_t n;

		if (atomic_load(&job->cancel)) {
			snprintf(f->error, sizeof f->error, "load cancelled "
				 "after %" PRIu64 " bytes",
				 (uint64_t)atomic_load(&job->done));
			return MB_ECANCELLED;
		}
		n = pread(f->src, f->map + f->off + done, want,
			  (off_t)(f->off + done));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			snprintf(f->error, sizeof f->error, "reading %s at byte %"
				 PRIu64 ": %s", job->path, f->off + done,
				 n < 0 ? strerror(errno) : "file shrank");
			return MB_EIO;
		}
		done += (uint64_t)n;
		atomic_fetch_add(&job->done, (uint_fast64_t)n);
		if (job->rate > 0)
			loader_pace(job, done, started);
	}
	return 0;
}

static void *
loader_fill_thread(void *arg)
{
	struct loader_fill *f = arg;

	f->result = loader_fill(f);
	return NULL;
}

/* XXH3 of what was copied, in slices so that a cancel is noticed. */
static int
loader_hash(struct load_job *job, const unsigned char *map)
{
	XXH3_state_t *xs = XXH3_createState();
	int r = 0;

	if (xs == NULL || XXH3_64bits_reset(xs) == XXH_ERROR) {
		XXH3_freeState(xs);
		return -ENOMEM;
	}
	for (uint64_t off = 0; off < job->size; off += LOADER_HASH_SLICE) {
		uint64_t len = job->size - off < LOADER_HASH_SLICE
				       ? job->size - off : LOADER_HASH_SLICE;

		if (atomic_load(&job->cancel)) {
			snprintf(job->error, sizeof job->error,
				 "load cancelled while hashing");
			r = MB_ECANCELLED;
			break;
		}
		XXH3_64bits_update(xs, map + off, (size_t)len);
	}
	if (r == 0)
		job->checksum = XXH3_64bits_digest(xs);
	XXH3_freeState(xs);
	return r;
}

/* Fills the segment from src (in two halves on two threads when it is
 * large and unthrottled), checks the file did not grow, then hashes. */
static int
loader_copy(struct load_job *job, int src, unsigned char *map)
{
	struct loader_fill parts[2] = {
		{.job = job, .src = src, .map = map, .len = job->size},
		{.job = job, .src = src, .map = map},
	};
	pthread_t helper;
	bool split = job->rate == 0 && job->size >= LOADER_SPLIT_MIN &&
		     !job->background;
	unsigned char extra;

	if (split) {
		parts[0].len = job->size / 2 / 4096 * 4096;
		parts[1].off = parts[0].len;
		parts[1].len = job->size - parts[0].len;
		if (pthread_create(&helper, NULL, loader_fill_thread,
				   &parts[1]) != 0) {
			/* No second thread: one fills it all. */
			split = false;
			parts[0].len = job->size;
		}
	}
	parts[0].result = loader_fill(&parts[0]);
	if (split)
		pthread_join(helper, NULL);
	for (int i = 0; i < (split ? 2 : 1); i++) {
		if (parts[i].result < 0) {
			snprintf(job->error, sizeof job->error, "%s",
				 parts[i].error);
			return parts[i].result;
		}
	}
	if (pread(src, &extra, 1, (off_t)job->size) > 0) {
		snprintf(job->error, sizeof job->error,
			 "%s grew during the load", job->path);
		return MB_EIO;
	}
	return loader_hash(job, map);
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
	if (fstat(fd, st) < 0 || !S_ISREG(st->st_mode)) {
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
			 "%s changed during the load", job->path);
		return MB_EIO;
	}
	return 0;
}

/* The whole load, on the loader thread; 0 or MB_E* / -errno. */
static int
loader_load(struct load_job *job)
{
	unsigned char *map = MAP_FAILED;
	struct stat st;
	int src, r;

	if ((src = loader_open(job, &st)) < 0) {
		segment_unpromise(job->promised);
		job->promised = 0;
		return src;
	}
	job->size = (uint64_t)st.st_size;
	atomic_store(&job->total, job->size);
	wakeup_post(job->finished_channel, &job->sized);
	r = job->provider->probe(src, job->size, job->error,
				 sizeof job->error);
	if (r < 0)
		goto out;
	if (lseek(src, 0, SEEK_SET) < 0) {
		r = -errno;
		goto out;
	}
	job->seg = segment_create(job->segment, job->size, job->promised, &r,
				  job->error, sizeof job->error);
	job->promised = 0;
	if (job->seg == NULL)
		goto out;
	map = mmap(NULL, job->size, PROT_READ | PROT_WRITE, MAP_SHARED,
		   segment_rw_fd(job->seg), 0);
	if (map == MAP_FAILED) {
		r = -errno;
		snprintf(job->error, sizeof job->error, "cannot map segment: %s",
			 strerror(errno));
		goto out;
	}
	/* In a --shm-dir tmpfs mounted huge=advise, this asks for 2 MiB
	 * pages; /dev/shm gives none (measured: no effect there). */
	if (broker.cfg.shm_dir != NULL)
		madvise(map, job->size, MADV_HUGEPAGE);
	if ((r = loader_copy(job, src, map)) < 0 ||
	    (r = loader_unchanged(job, src, &st)) < 0 ||
	    (r = job->provider->load(map, job->size, &job->state,
				     &job->ntensors, job->error,
				     sizeof job->error)) < 0)
		goto out;
	if ((r = segment_seal(job->seg)) < 0) {
		snprintf(job->error, sizeof job->error,
			 "cannot seal segment: %s", strerror(-r));
		if (job->provider->unload(job->state) < 0)
			log_warnx("%s: provider cleanup failed", job->path);
		job->state = NULL;
	}
out:
	if (map != MAP_FAILED)
		munmap(map, job->size);
	close(src);
	if (job->promised > 0) { /* failed before its segment */
		segment_unpromise(job->promised);
		job->promised = 0;
	}
	if (r < 0 && job->seg != NULL) {
		job->reclaimed = job->size;
		segment_put(job->seg);
		job->seg = NULL;
	}
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
	if (job->result == 0) {
		segment_put(job->seg);
		if (job->provider->unload(job->state) < 0)
			log_warnx("%s: provider cleanup failed", job->path);
	}
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
		.segment = job->seg,
		.size = job->size,
		.checksum = job->checksum,
		.state = job->state,
		.ntensors = job->ntensors,
		.reclaimed = job->reclaimed,
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

int
loader_abandon(struct load_job *job)
{
	atomic_store(&job->cancel, true);
	job->calls = NULL;
	loader_abandoned++;
	log_warnx("the load of %s did not stop in time (blocked in a read?); "
		  "abandoned", job->path);
	/* The thread still owns the descriptor and the reservation (so
	 * nothing is freed yet); the name goes now, so nothing is left if the
	 * broker exits first. */
	return segment_unlink_name(job->segment);
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
