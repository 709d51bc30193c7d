/* SPDX-License-Identifier: MIT */
/*
 * model_memory.c - what a model costs a process that runs an engine on it:
 * the model's files (a directory's, or an attached bundle's segments),
 * then /proc/self/smaps read against them.  Used by
 * examples/pocketsphinx_pool.c for its memory table.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "model_memory.h"

/*
 * Adds one file of the model (st says which, size how much of it is the
 * model's); 0 or -1 (ENOSPC) when there are too many.
 */
static int
model_memory_add(struct model_files *files, const char *name,
		 const struct stat *st, uint64_t size, uintptr_t library_map)
{
	struct model_file *f;

	if (files->n == MODEL_MEMORY_MAX_FILES) {
		errno = ENOSPC;
		return -1;
	}
	f = &files->f[files->n++];
	snprintf(f->name, sizeof f->name, "%s", name);
	f->dev = st->st_dev;
	f->ino = st->st_ino;
	f->size = size;
	f->library_map = library_map;
	f->in_place = false;
	return 0;
}

/*
 * Adds every regular file beneath the directory dirfd (which it closes),
 * named by its path under prefix.  Returns 0 or -1.
 */
static int
model_memory_scan(struct model_files *files, int dirfd, const char *prefix)
{
	struct dirent *e;
	struct stat st;
	char name[256];
	DIR *d;
	int r = 0, sub;

	if ((d = fdopendir(dirfd)) == NULL) {
		close(dirfd);
		return -1;
	}
	while (r == 0 && (e = readdir(d)) != NULL) {
		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
			continue;
		if ((size_t)snprintf(name, sizeof name, "%s%s%s", prefix,
				     prefix[0] ? "/" : "", e->d_name) >=
		    sizeof name) {
			errno = ENAMETOOLONG;
			r = -1;
		} else if (fstatat(dirfd, e->d_name, &st, 0) < 0)
			r = -1;
		else if (S_ISREG(st.st_mode))
			r = model_memory_add(files, name, &st,
					     (uint64_t)st.st_size, 0);
		else if (S_ISDIR(st.st_mode)) {
			sub = openat(dirfd, e->d_name,
				     O_RDONLY | O_DIRECTORY | O_CLOEXEC);
			r = sub < 0 ? -1 : model_memory_scan(files, sub, name);
		}
	}
	closedir(d);
	return r;
}

/* A disk or fork worker's model: the files its engine opens. */
int
model_memory_files_from_dir(struct model_files *files, const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	files->n = 0;
	return fd < 0 ? -1 : model_memory_scan(files, fd, "");
}

/* A broker worker's model: the segments it holds descriptors of. */
int
model_memory_files_from_attachment(struct model_files *files,
				   const struct mb_attachment *att)
{
	struct mb_member m;
	struct stat st;

	files->n = 0;
	for (size_t i = 0; i < mb_member_count(att); i++)
		if (mb_member_at(att, i, &m) < 0 ||
		    fstat(mb_member_fd(att, i), &st) < 0 ||
		    model_memory_add(files, m.name, &st, m.size,
				     (uintptr_t)m.data) < 0)
			return -1;
	return 0;
}

/* The model file a mapping's device and inode name, or NULL. */
static struct model_file *
model_memory_find(struct model_files *files, unsigned dev_major,
		  unsigned dev_minor, ino_t ino)
{
	for (size_t i = 0; i < files->n; i++) {
		struct model_file *f = &files->f[i];

		if (f->ino == ino && major(f->dev) == dev_major &&
		    minor(f->dev) == dev_minor)
			return f;
	}
	return NULL;
}

/* One mapping of /proc/self/smaps being read. */
struct model_mapping {
	struct model_file *file; /* a model file, or NULL */
	bool library;            /* libmbroker's mapping of that file */
	bool anonymous;
};

/* Counts one "Name: N kB" line of smaps into mem for the mapping m. */
static void
model_memory_count(struct model_memory *mem, const struct model_mapping *m,
		   const char *field, uint64_t bytes)
{
	if (strcmp(field, "Pss") == 0) {
		mem->total_pss += bytes;
		if (m->file != NULL && !m->library)
			mem->in_place_pss += bytes;
		if (m->anonymous)
			mem->heap_pss += bytes;
	} else if (strcmp(field, "Rss") == 0) {
		if (m->file != NULL && !m->library) {
			mem->in_place_rss += bytes;
			m->file->in_place = true;
		} else if (m->file != NULL)
			mem->library_rss += bytes;
	} else if (m->anonymous && (strcmp(field, "Private_Dirty") == 0 ||
				    strcmp(field, "Private_Clean") == 0))
		mem->heap_private += bytes;
}

/* Reads smaps once; the engine's mappings are told from libmbroker's. */
int
model_memory_read(struct model_files *files, struct model_memory *mem)
{
	struct model_mapping m = {0};
	char *line = NULL, field[64];
	unsigned long start, end, offset, ino, kb;
	unsigned dev_major, dev_minor;
	size_t cap = 0;
	FILE *f;
	int path;

	memset(mem, 0, sizeof *mem);
	if ((f = fopen("/proc/self/smaps", "re")) == NULL)
		return -1;
	while (getline(&line, &cap, f) > 0) {
		path = -1;
		if (sscanf(line, "%lx-%lx %*s %lx %x:%x %lu %n", &start, &end,
			   &offset, &dev_major, &dev_minor, &ino, &path) >= 6 &&
		    path > 0) {
			m.file = ino ? model_memory_find(files, dev_major,
							 dev_minor, ino)
				     : NULL;
			m.library = m.file != NULL &&
				    m.file->library_map == start;
			m.anonymous = ino == 0 &&
				      (line[path] == '\0' ||
				       strncmp(line + path, "[heap]", 6) == 0 ||
				       strncmp(line + path, "[anon", 5) == 0);
		} else if (sscanf(line, "%63[^:]: %lu kB", field, &kb) == 2)
			model_memory_count(mem, &m, field, (uint64_t)kb * 1024);
	}
	free(line);
	fclose(f);
	for (size_t i = 0; i < files->n; i++) {
		mem->files++;
		if (!files->f[i].in_place) {
			mem->unmapped_files++;
			mem->unmapped_bytes += files->f[i].size;
		}
	}
	return 0;
}
