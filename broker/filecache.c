/* SPDX-License-Identifier: MIT */
/*
 * filecache.c - so that a loaded model does not cost its size twice in
 * RAM: before the copy, which of the file's pages are in the page cache;
 * after it, POSIX_FADV_DONTNEED on each run of pages that were not, so
 * pages cached before the load stay.  First cachestat(2) counts the
 * cached pages (one call, no byte read; it walks the cache's folios, so a
 * GiB costs 0.1 to 1.3 ms when the file was read or written in large
 * folios, 7 ms in 4 KiB pages, where mincore takes 18 ms page by page): a
 * file fully cached or not cached at all, a load's usual case, needs no
 * more.  Only a file partly cached is looked at page by page, with mincore
 * over a read-only mapping.  mincore rather than
 * probing with preadv2(RWF_NOWAIT): the probe copies bytes, needs a call
 * per run, and cannot tell a page the copy's readahead brought in from
 * one cached before.  The kernel answers both for files the broker owns
 * or may write (and for root); for others cachestat refuses and mincore
 * says every page is cached, so nothing is dropped: the page cache is
 * left as the load made it.
 */
#include <fcntl.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "filecache.h"

#ifndef SYS_cachestat
#define SYS_cachestat 451
#endif

/* The kernel's struct cachestat_range and struct cachestat (Linux 6.5),
 * which older headers lack. */
struct filecache_range {
	uint64_t off, len;
};
struct filecache_counts {
	uint64_t cached, dirty, writeback, evicted, recently_evicted;
};

struct filecache {
	uint64_t size;
	size_t page;
	bool counted;             /* all or none cached: no resident[] */
	bool all;                 /* counted: every page was cached */
	unsigned char resident[]; /* one byte a page, bit 0: was cached */
};

/* Fills fc->counted and fc->all from cachestat; false when the kernel
 * cannot say or the file is partly cached. */
static bool
filecache_count(struct filecache *fc, int fd, uint64_t pages)
{
	struct filecache_range range = {0, fc->size};
	struct filecache_counts counts;

	if (syscall(SYS_cachestat, fd, &range, &counts, 0) < 0 ||
	    (counts.cached != 0 && counts.cached < pages))
		return false;
	fc->counted = true;
	fc->all = counts.cached != 0;
	return true;
}

/* Fills fc->resident with mincore; false when the file cannot be
 * mapped. */
static bool
filecache_map(struct filecache *fc, int fd)
{
	void *map = mmap(NULL, (size_t)fc->size, PROT_READ, MAP_SHARED, fd, 0);
	int r;

	if (map == MAP_FAILED)
		return false;
	r = mincore(map, (size_t)fc->size, fc->resident);
	munmap(map, (size_t)fc->size);
	return r == 0;
}

struct filecache *
filecache_note(int fd, uint64_t size)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	uint64_t pages = (size + page - 1) / page;
	struct filecache *fc;

	if (size == 0 || size > SIZE_MAX - page ||
	    (fc = calloc(1, sizeof *fc + pages)) == NULL)
		return NULL;
	fc->size = size;
	fc->page = page;
	if (filecache_count(fc, fd, pages) || filecache_map(fc, fd))
		return fc;
	free(fc);
	return NULL;
}

void
filecache_drop_new(struct filecache *fc, int fd)
{
	uint64_t pages, run = 0;

	if (fc == NULL)
		return;
	pages = (fc->size + fc->page - 1) / fc->page;
	if (fc->counted) {
		if (!fc->all)
			posix_fadvise(fd, 0, (off_t)fc->size,
				      POSIX_FADV_DONTNEED);
		free(fc);
		return;
	}
	for (uint64_t i = 0; i <= pages; i++) {
		if (i < pages && !(fc->resident[i] & 1)) {
			run++;
			continue;
		}
		if (run > 0)
			posix_fadvise(fd, (off_t)((i - run) * fc->page),
				      (off_t)(run * fc->page),
				      POSIX_FADV_DONTNEED);
		run = 0;
	}
	free(fc);
}
