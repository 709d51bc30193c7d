/* SPDX-License-Identifier: MIT */
/*
 * bundle.c - a model made of many files: the walk of its directory and
 * the opening of its members.  Every regular file beneath the directory
 * is a member, named by its path relative to it.  The walk goes through
 * real subdirectories only (opened with O_NOFOLLOW from their parent's
 * descriptor) and opens each file with openat2(RESOLVE_BENEATH |
 * RESOLVE_NO_MAGICLINKS) from the directory's own descriptor, so a
 * symlink that stays beneath the directory is followed and one that leaves
 * it is refused by the kernel, with no window between a check and the
 * open.  The load request walks once on the main loop for the size and
 * the limits; the loader walks again on its thread, and copies what it
 * found.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "bundle.h"
#include "checksum.h"
#include "mbrokerd.h"
#include "utf8.h"

/* Past this many entries (files and directories) the walk stops, and
 * the load is refused: it runs on the control loop, and a tree that
 * large (of empty directories, say) is no bundle. */
#define BUNDLE_ENTRIES_MAX (16 * MB_MAX_MEMBERS)

struct bundle_walk {
	int root;
	const char *path;
	struct member *members;
	unsigned n;       /* members listed (at most MB_MAX_MEMBERS) */
	unsigned files;   /* files seen, past the bound too */
	unsigned entries; /* files and directories seen */
	uint64_t total;
	char *err;
	size_t errlen;
};

int
bundle_open(const char *path, char *err, size_t errlen)
{
	int fd = modeldir_open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC, err,
			       errlen);

	if (fd == -ENOTDIR) {
		snprintf(err, errlen, "%s is not a directory (a bundle is "
			 "one)", path);
		return MB_EFORMAT;
	}
	if (fd < 0)
		return fd == MB_EDENIED ? fd : MB_EIO;
	return fd;
}

/* Whether a name component is valid UTF-8 without control characters. */
static bool
bundle_name_valid(const char *name)
{
	const unsigned char *p = (const unsigned char *)name;
	size_t left = strlen(name), n;

	while (left > 0) {
		if (*p < 0x20 || *p == 0x7f || (n = utf8_len(p, left)) == 0)
			return false;
		p += n;
		left -= n;
	}
	return true;
}

int
bundle_open_member(int dirfd, const char *path, const char *name,
		   struct stat *st, char *err, size_t errlen)
{
	struct open_how how = {.flags = O_RDONLY | O_CLOEXEC | O_NOCTTY |
					O_NONBLOCK,
			       .resolve = RESOLVE_BENEATH |
					  RESOLVE_NO_MAGICLINKS};
	long fd = syscall(SYS_openat2, dirfd, name, &how, sizeof how);

	/* Without openat2 (before Linux 5.6) no symlink is followed. */
	if (fd < 0 && errno == ENOSYS)
		fd = openat(dirfd, name, (int)how.flags | O_NOFOLLOW);
	if (fd < 0 && (errno == EXDEV || errno == ELOOP)) {
		snprintf(err, errlen, "member %s of %s resolves outside it",
			 name, path);
		return MB_EFORMAT;
	}
	if (fd < 0) {
		snprintf(err, errlen, "cannot open member %s of %s: %s", name,
			 path, strerror(errno));
		return MB_EIO;
	}
	if (fstat((int)fd, st) < 0 || !S_ISREG(st->st_mode)) {
		snprintf(err, errlen, "member %s of %s is not a regular file",
			 name, path);
		close((int)fd);
		return MB_EFORMAT;
	}
	return (int)fd;
}

/* Lists the file name (relative to the bundle) as a member. */
static int
bundle_walk_file(struct bundle_walk *w, const char *name)
{
	struct member *m;
	struct stat st;
	int fd;

	if (++w->files > MB_MAX_MEMBERS)
		return 0; /* counted only: the walk fails with MB_ELIMIT */
	if ((fd = bundle_open_member(w->root, w->path, name, &st, w->err,
				     w->errlen)) < 0)
		return fd;
	close(fd);
	m = &w->members[w->n++];
	memcpy(m->name, name, strlen(name) + 1); /* checked by the walk */
	m->size = (uint64_t)st.st_size;
	m->provider = provider_for_path(name);
	w->total += m->size;
	return 0;
}

/* Walks the directory fd (taken), whose members' names start with
 * prefix ("" or "sub/dir/"). */
static int
bundle_walk_dir(struct bundle_walk *w, int fd, const char *prefix)
{
	DIR *dir = fdopendir(fd);
	struct dirent *e;
	int r = 0;

	if (dir == NULL) {
		snprintf(w->err, w->errlen, "cannot read %s/%s: %s", w->path,
			 prefix, strerror(errno));
		close(fd);
		return MB_EIO;
	}
	while (r == 0 && w->entries <= BUNDLE_ENTRIES_MAX &&
	       (e = readdir(dir)) != NULL) {
		char name[BUNDLE_NAME_MAX + 2];
		struct stat st;
		int sub;

		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
			continue;
		if (++w->entries > BUNDLE_ENTRIES_MAX)
			break;
		if (snprintf(name, sizeof name, "%s%s", prefix, e->d_name) >
		    BUNDLE_NAME_MAX) {
			snprintf(w->err, w->errlen, "member %s%.64s... of %s: "
				 "its name is over %d bytes", prefix,
				 e->d_name, w->path, BUNDLE_NAME_MAX);
			r = MB_EFORMAT;
		} else if (!bundle_name_valid(e->d_name)) {
			snprintf(w->err, w->errlen, "a member in %s/%s has a "
				 "name that is not UTF-8 text without control "
				 "characters", w->path, prefix);
			r = MB_EFORMAT;
		} else if (fstatat(dirfd(dir), e->d_name, &st,
				   AT_SYMLINK_NOFOLLOW) < 0) {
			snprintf(w->err, w->errlen, "member %s of %s: %s",
				 name, w->path, strerror(errno));
			r = MB_EIO;
		} else if (S_ISDIR(st.st_mode)) {
			sub = openat(dirfd(dir), e->d_name, O_RDONLY |
				     O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			if (sub < 0) {
				snprintf(w->err, w->errlen, "cannot open %s/%s:"
					 " %s", w->path, name, strerror(errno));
				r = MB_EIO;
			} else {
				strcat(name, "/");
				r = bundle_walk_dir(w, sub, name);
			}
		} else if (S_ISREG(st.st_mode) || S_ISLNK(st.st_mode)) {
			r = bundle_walk_file(w, name);
		} else {
			snprintf(w->err, w->errlen, "member %s of %s is not a "
				 "regular file", name, w->path);
			r = MB_EFORMAT;
		}
	}
	closedir(dir);
	return r;
}

static int
bundle_by_name(const void *a, const void *b)
{
	return strcmp(((const struct member *)a)->name,
		      ((const struct member *)b)->name);
}

int
bundle_walk(int dirfd, const char *path, struct member **members,
	    unsigned *n, uint64_t *total, char *err, size_t errlen)
{
	struct bundle_walk w = {.root = dirfd, .path = path, .err = err,
				.errlen = errlen};
	int sub = fcntl(dirfd, F_DUPFD_CLOEXEC, 0), r;

	*members = NULL;
	*n = 0;
	*total = 0;
	if (sub < 0 || (w.members = calloc(MB_MAX_MEMBERS,
					   sizeof *w.members)) == NULL) {
		if (sub >= 0)
			close(sub);
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	/* The walk reads from a descriptor of its own: its offset moves. */
	r = bundle_walk_dir(&w, sub, "");
	if (r == 0 && w.entries > BUNDLE_ENTRIES_MAX) {
		snprintf(err, errlen, "%s holds more than %d files and "
			 "directories; a bundle has at most %d files", path,
			 BUNDLE_ENTRIES_MAX, MB_MAX_MEMBERS);
		r = MB_ELIMIT;
	} else if (r == 0 && w.files > MB_MAX_MEMBERS) {
		snprintf(err, errlen, "%s holds %u files; a bundle has at "
			 "most %d", path, w.files, MB_MAX_MEMBERS);
		r = MB_ELIMIT;
	} else if (r == 0 && w.n == 0) {
		snprintf(err, errlen, "%s holds no file", path);
		r = MB_EFORMAT;
	}
	if (r < 0) {
		free(w.members);
		return r;
	}
	qsort(w.members, w.n, sizeof *w.members, bundle_by_name);
	*members = w.members;
	*n = w.n;
	*total = w.total;
	return 0;
}

int
bundle_measure(const char *path, unsigned *n, uint64_t *size, char *err,
	       size_t errlen)
{
	struct member *members;
	int dir = bundle_open(path, err, errlen), r;

	if (dir < 0)
		return dir;
	r = bundle_walk(dir, path, &members, n, size, err, errlen);
	close(dir);
	free(members);
	return r;
}

uint64_t
bundle_checksum(const struct member *members, unsigned n)
{
	struct bundle_sum sum;

	bundle_sum_begin(&sum);
	for (unsigned i = 0; i < n; i++)
		bundle_sum_add(&sum, members[i].name, members[i].size,
			       members[i].checksum);
	return bundle_sum_end(&sum);
}
