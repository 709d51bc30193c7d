/* SPDX-License-Identifier: MIT */
/*
 * modeldir.c - the --model-dir confinement.  With model directories
 * configured, a load names a path under one of them, and the file is
 * opened with openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS) from that
 * directory: the kernel itself refuses "..", absolute symlinks and
 * symlinks that climb out, and /proc magic links, with no window between
 * a check and the open.  The directories are opened once at start; the
 * loader threads only read this list.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "mbrokerd.h"

struct modeldir {
	char *given; /* as on the command line, without trailing slashes */
	char *real;  /* after realpath */
	int fd;      /* O_PATH */
};

static struct modeldir *modeldirs;
static size_t nmodeldirs;

int
modeldir_init(void)
{
	const struct config *cfg = &broker.cfg;

	if (cfg->nmodel_dirs == 0)
		return 0;
	if ((modeldirs = calloc(cfg->nmodel_dirs, sizeof *modeldirs)) == NULL)
		return -1;
	for (size_t i = 0; i < cfg->nmodel_dirs; i++) {
		struct modeldir *d = &modeldirs[nmodeldirs];
		size_t len;

		d->fd = open(cfg->model_dirs[i], O_PATH | O_DIRECTORY | O_CLOEXEC);
		if (d->fd < 0 || (d->real = realpath(cfg->model_dirs[i], NULL)) ==
					 NULL ||
		    (d->given = strdup(cfg->model_dirs[i])) == NULL) {
			log_warn("--model-dir %s", cfg->model_dirs[i]);
			if (d->fd >= 0)
				close(d->fd);
			free(d->real);
			return -1;
		}
		len = strlen(d->given);
		while (len > 1 && d->given[len - 1] == '/')
			d->given[--len] = '\0';
		nmodeldirs++;
		log_info("loads confined to %s", d->real);
	}
	return 0;
}

void
modeldir_shutdown(void)
{
	for (size_t i = 0; i < nmodeldirs; i++) {
		close(modeldirs[i].fd);
		free(modeldirs[i].given);
		free(modeldirs[i].real);
	}
	free(modeldirs);
	modeldirs = NULL;
	nmodeldirs = 0;
}

/* The part of path below prefix, or NULL when path is not below it. */
static const char *
modeldir_below(const char *path, const char *prefix)
{
	size_t len = strcmp(prefix, "/") == 0 ? 0 : strlen(prefix);

	if (strncmp(path, prefix, len) != 0 || path[len] != '/')
		return NULL;
	while (path[len] == '/')
		len++;
	return path[len] != '\0' ? path + len : NULL;
}

/* The directory path is named under, and the rest of path in *rel. */
static const struct modeldir *
modeldir_find(const char *path, const char **rel)
{
	for (size_t i = 0; i < nmodeldirs; i++)
		if ((*rel = modeldir_below(path, modeldirs[i].given)) != NULL ||
		    (*rel = modeldir_below(path, modeldirs[i].real)) != NULL)
			return &modeldirs[i];
	return NULL;
}

bool
modeldir_allows(const char *path)
{
	const char *rel;

	return nmodeldirs == 0 || modeldir_find(path, &rel) != NULL;
}

/* Without openat2 (kernels before 5.6): resolve, check, open the result
 * without following a final symlink.  A race remains; said in the docs. */
static int
modeldir_open_resolved(const struct modeldir *d, const char *path, int flags)
{
	char real[PATH_MAX];
	int fd;

	if (realpath(path, real) == NULL)
		return -errno;

	if (modeldir_below(real, d->real) == NULL)
		return -EXDEV;
	fd = open(real, flags | O_NOFOLLOW);
	return fd < 0 ? -errno : fd;
}

int
modeldir_open(const char *path, int flags, char *err, size_t errlen)
{
	struct open_how how = {.flags = (uint64_t)flags,
			       .resolve = RESOLVE_BENEATH |
					  RESOLVE_NO_MAGICLINKS};
	const struct modeldir *d;
	const char *rel;
	long fd;

	if (nmodeldirs == 0) {
		fd = open(path, flags);
		if (fd < 0)
			snprintf(err, errlen, "cannot open %s: %s", path,
				 strerror(errno));
		return fd < 0 ? -errno : (int)fd;
	}
	if ((d = modeldir_find(path, &rel)) == NULL) {
		snprintf(err, errlen, "%s is not under any --model-dir", path);
		return MB_EDENIED;
	}
	fd = syscall(SYS_openat2, d->fd, rel, &how, sizeof how);
	if (fd < 0 && errno == ENOSYS)
		fd = modeldir_open_resolved(d, path, flags);
	else if (fd < 0)
		fd = -errno;
	if (fd == -EXDEV || fd == -ELOOP) {
		snprintf(err, errlen, "%s resolves outside --model-dir %s",
			 path, d->given);
		return MB_EDENIED;
	}
	if (fd < 0)
		snprintf(err, errlen, "cannot open %s: %s", path,
			 strerror((int)-fd));
	return (int)fd;
}

int64_t
modeldir_file_size(const char *path)
{
	char err[256];
	struct stat st;
	int fd = modeldir_open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY |
					     O_NONBLOCK, err, sizeof err);
	int64_t size = -1;

	if (fd < 0)
		return -1;
	if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode))
		size = (int64_t)st.st_size;
	close(fd);
	return size;
}
