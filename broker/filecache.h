/* SPDX-License-Identifier: MIT */
/*
 * filecache.h - leaves a source file's pages in the page cache as a load
 * found them: what was cached before stays, what the copy brought in goes.
 */
#ifndef MB_BROKER_FILECACHE_H
#define MB_BROKER_FILECACHE_H

#include <stdint.h>

struct filecache;

/* Notes which of the first size bytes of fd are cached now; NULL when
 * that cannot be known (then nothing is dropped later). */
struct filecache *filecache_note(int fd, uint64_t size);
/* Drops from the page cache the pages of fd that were not cached when fc
 * was noted, and frees fc.  Accepts NULL. */
void filecache_drop_new(struct filecache *fc, int fd);

#endif
