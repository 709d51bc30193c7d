/* SPDX-License-Identifier: MIT */
/*
 * filecache.c - so that a loaded model does not cost its size twice in
 * RAM: before the copy, which of the file's pages are in the page cache
 * (mincore over a read-only mapping, one call for the whole file, no byte
 * read); after it, POSIX_FADV_DONTNEED on each run of pages that were not,
 * so pages cached before the load stay.  mincore rather than probing with
 * preadv2(RWF_NOWAIT): the probe copies bytes, needs a call per run, and
 * cannot tell a page the copy's readahead brought in from one cached
 * before.  The kernel answers mincore for files the broker owns or may
 * write (and for root); for others it says every page is cached, so
 * nothing is dropped: the page cache is left as the load made it.
 */
#include <fcntl.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "filecache.h"

struct filecache {
	uint64_t size;
	size_t page;
	unsigned char resident[]; /* one byte a page, bit 0: was cached */
};

struct filecache *
filecache_note(int fd, uint64_t size)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	uint64_t pages = (size + page - 1) / page;
	struct filecache *fc;
	void *map;

	if (size == 0 || size > SIZE_MAX - page ||
	    (fc = malloc(sizeof *fc + pages)) == NULL)
		return NULL;
	fc->size = size;
	fc->page = page;
	map = mmap(NULL, (size_t)size, PROT_READ, MAP_SHARED, fd, 0);
	if (map == MAP_FAILED) {
		free(fc);
		return NULL;
	}
	if (mincore(map, (size_t)size, fc->resident) < 0) {
		free(fc);
		fc = NULL;
	}
	munmap(map, (size_t)size);
	return fc;
}

void
filecache_drop_new(struct filecache *fc, int fd)
{
	uint64_t pages, run = 0;

	if (fc == NULL)
		return;
	pages = (fc->size + fc->page - 1) / fc->page;
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
