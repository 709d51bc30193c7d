/* SPDX-License-Identifier: MIT */
/*
 * member_dir.c - mb_member_dir: a private directory laid out like the
 * bundle, one symlink per member pointing to its kept descriptor's
 * /proc/self/fd/N, for code that opens a model directory by path.  Every
 * path made is remembered so that mb_ack can remove them all from a
 * signal handler (unlink and rmdir only); mb_detach and mb_close remove
 * and free it.  Member names were checked when the attach reply was read:
 * relative, no empty, "." or ".." component.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "attach.h"

/* Remembers path (a copy) as made; 0 or -ENOMEM. */
static int
member_dir_record(struct member_dir *dir, const char *path)
{
	char **grown, *copy = strdup(path);

	if (copy == NULL)
		return -ENOMEM;
	grown = realloc(dir->paths, (dir->count + 1) * sizeof *dir->paths);
	if (grown == NULL) {
		free(copy);
		return -ENOMEM;
	}
	dir->paths = grown;
	dir->paths[dir->count++] = copy;
	return 0;
}

/* Makes the subdirectories of name under root and the link at name to
 * descriptor fd.  0 or -errno. */
static int
member_dir_link(struct member_dir *dir, const char *name, int fd)
{
	char path[PATH_MAX], target[32];
	size_t root = strlen(dir->root);
	int r;

	if ((size_t)snprintf(path, sizeof path, "%s/%s", dir->root, name) >=
	    sizeof path)
		return -ENAMETOOLONG;
	for (char *slash = strchr(path + root + 1, '/'); slash != NULL;
	     slash = strchr(slash + 1, '/')) {
		*slash = '\0';
		if (mkdir(path, 0700) == 0)
			r = member_dir_record(dir, path);
		else
			r = errno == EEXIST ? 0 : -errno;
		*slash = '/';
		if (r < 0)
			return r;
	}
	snprintf(target, sizeof target, "/proc/self/fd/%d", fd);
	if (symlink(target, path) < 0)
		return -errno;
	return member_dir_record(dir, path);
}

/* Makes the directory of att's members; 0 and *out, or -errno. */
static int
member_dir_make(const struct mb_attachment *att, struct member_dir **out)
{
	const char *tmp = getenv("TMPDIR");
	struct member_dir *dir = calloc(1, sizeof *dir);
	int r = 0;

	if (dir == NULL)
		return -ENOMEM;
	if (tmp == NULL || *tmp == '\0')
		tmp = "/tmp";
	if ((size_t)snprintf(dir->root, sizeof dir->root, "%s/mbroker.XXXXXX",
			     tmp) >= sizeof dir->root) {
		free(dir);
		return -ENAMETOOLONG;
	}
	if (mkdtemp(dir->root) == NULL) {
		r = -errno;
		free(dir);
		return r;
	}
	for (size_t i = 0; i < att->count && r == 0; i++)
		r = member_dir_link(
		    dir, att->bundle ? att->members[i].name : att->name,
		    atomic_load(&att->keep.fds[i]));
	if (r < 0) {
		member_dir_free(dir);
		return r;
	}
	*out = dir;
	return 0;
}

int
mb_member_dir(struct mb_attachment *att, char *buf, size_t len)
{
	struct member_dir *dir = atomic_load(&att->keep.dir);
	int r;

	if (mb_attachment_fd(att) < 0)
		return -EBADF;
	if (dir == NULL) {
		if ((r = member_dir_make(att, &dir)) < 0)
			return r;
		atomic_store(&att->keep.dir, dir);
	}
	if (strlen(dir->root) >= len)
		return -ENAMETOOLONG;
	strcpy(buf, dir->root);
	return 0;
}

void
member_dir_remove(struct member_dir *dir)
{
	if (dir == NULL || atomic_exchange(&dir->removed, true))
		return;
	for (size_t i = dir->count; i-- > 0;)
		if (unlink(dir->paths[i]) < 0)
			rmdir(dir->paths[i]);
	rmdir(dir->root);
}

void
member_dir_free(struct member_dir *dir)
{
	if (dir == NULL)
		return;
	member_dir_remove(dir);
	for (size_t i = 0; i < dir->count; i++)
		free(dir->paths[i]);
	free(dir->paths);
	free(dir);
}
