/* SPDX-License-Identifier: MIT */
/*
 * member.c - the files of an attachment: each member's read-only mapping,
 * made at a page boundary inside one reservation so that mb_ack and
 * mb_detach let go of a whole bundle as they let go of one file; the
 * members API; and the descriptors kept with MB_ATTACH_KEEP_FDS, closed
 * exactly once by whichever of mb_ack, mb_detach or mb_close comes first.
 * attach.c calls member_map once the broker has passed every descriptor;
 * with MB_ATTACH_POPULATE it fills the page tables of each mapping.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "attach.h"

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22 /* Linux 5.14 */
#endif

/* size rounded up to whole pages. */
static size_t
member_pages(size_t size, size_t page)
{
	return (size + page - 1) / page * page;
}

/*
 * Enters every page of a read-only mapping in the page tables, so that
 * reading it takes no fault.  A kernel older than 5.14 does not know
 * MADV_POPULATE_READ (EINVAL): one read per page does the same there.
 */
static int
member_populate(const unsigned char *data, size_t size, size_t page)
{
	volatile unsigned char sink;

	if (madvise((void *)(uintptr_t)data, size, MADV_POPULATE_READ) == 0)
		return 0;
	if (errno != EINVAL)
		return -errno;
	for (size_t off = 0; off < size; off += page)
		sink = data[off];
	(void)sink;
	return 0;
}

int
member_map(struct mb_attachment *att)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE), at = 0;
	void *region;
	int r;

	att->region_len = 0;
	for (size_t i = 0; i < att->count; i++) {
		struct stat st;

		if (fstat(atomic_load(&att->keep.fds[i]), &st) < 0)
			return -errno;
		/* A segment is a regular file: a directory (whose size 0
		 * is never mapped) would lead mb_member_dir's links out. */
		if (!S_ISREG(st.st_mode) ||
		    (uint64_t)st.st_size != att->members[i].size)
			return MB_EPROTOCOL;
		att->region_len += member_pages(att->members[i].size, page);
	}
	/* A bundle of empty files still holds a page: the slot of a live
	 * attachment is never NULL. */
	if (att->region_len == 0)
		att->region_len = page;
	region = mmap(NULL, att->region_len, PROT_NONE,
		      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (region == MAP_FAILED)
		return -errno;
	att->region = region;
	for (size_t i = 0; i < att->count; i++) {
		struct attach_member *m = &att->members[i];

		if (m->size == 0)
			continue;
		if (mmap(att->region + at, m->size, PROT_READ,
			 MAP_SHARED | MAP_FIXED, atomic_load(&att->keep.fds[i]),
			 0) == MAP_FAILED)
			return -errno;
		m->data = att->region + at;
		at += member_pages(m->size, page);
		if ((att->flags & MB_ATTACH_POPULATE) &&
		    (r = member_populate(m->data, m->size, page)) < 0)
			return r;
	}
	return 0;
}

void
member_let_go(struct attach_keep *keep)
{
	for (size_t i = 0; i < keep->count; i++) {
		int fd = atomic_exchange(&keep->fds[i], -1);

		if (fd >= 0)
			close(fd);
	}
	member_dir_remove(atomic_load(&keep->dir));
}

void
member_free(struct mb_attachment *att)
{
	member_let_go(&att->keep);
	member_dir_free(atomic_exchange(&att->keep.dir, NULL));
	for (size_t i = 0; i < att->count; i++)
		free(att->members[i].name);
	free(att->members);
	free(att->keep.fds);
}

size_t
mb_member_count(const struct mb_attachment *att)
{
	return att->count;
}

int
mb_member_at(const struct mb_attachment *att, size_t index,
	     struct mb_member *out)
{
	const struct attach_member *m;

	if (index >= att->count)
		return -ERANGE;
	m = &att->members[index];
	out->name = m->name;
	out->format = m->format;
	out->data = m->data;
	out->size = m->size;
	out->checksum = m->checksum;
	return 0;
}

int
mb_member_find(const struct mb_attachment *att, const char *name,
	       struct mb_member *out)
{
	for (size_t i = 0; i < att->count; i++)
		if (strcmp(att->members[i].name, name) == 0)
			return mb_member_at(att, i, out);
	return -ENOENT;
}

int
mb_member_fd(const struct mb_attachment *att, size_t index)
{
	if (index >= att->count)
		return -1;
	return atomic_load(&att->keep.fds[index]);
}

int
mb_attachment_fd(const struct mb_attachment *att)
{
	return mb_member_fd(att, 0);
}

int
mb_member_path(const struct mb_attachment *att, size_t index, char *buf,
	       size_t len)
{
	int fd, n;

	if (index >= att->count)
		return -ERANGE;
	if ((fd = mb_member_fd(att, index)) < 0)
		return -EBADF;
	n = snprintf(buf, len, "/proc/self/fd/%d", fd);
	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}
