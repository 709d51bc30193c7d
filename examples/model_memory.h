/* SPDX-License-Identifier: MIT */
/*
 * model_memory.h - what a model costs a process that runs an engine on it,
 * from /proc/self/smaps (model_memory.c).
 */
#ifndef MODEL_MEMORY_H
#define MODEL_MEMORY_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "mbroker.h"

#define MODEL_MEMORY_MAX_FILES MB_MAX_MEMBERS

/* One file of the model as the kernel names it, to find its mappings. */
struct model_file {
	char name[256];
	dev_t dev;
	ino_t ino;
	uint64_t size;
	uintptr_t library_map; /* libmbroker's own mapping of it, or 0 */
	bool in_place;         /* the engine maps it (model_memory_read) */
};

/* The files of one model. */
struct model_files {
	struct model_file f[MODEL_MEMORY_MAX_FILES];
	size_t n;
};

/* What one process costs, from its smaps; bytes. */
struct model_memory {
	uint64_t in_place_rss; /* model files the engine maps */
	uint64_t in_place_pss;
	uint64_t library_rss;  /* what libmbroker's mappings have in memory */
	uint64_t heap_private; /* anonymous memory only this process has */
	uint64_t heap_pss;
	uint64_t total_pss;
	uint64_t unmapped_bytes; /* model files the engine does not map */
	unsigned files;
	unsigned unmapped_files;
};

/*
 * The files of a model directory, every regular file beneath it, named
 * by their path under it.  Returns 0, or -1 with errno set (ENOSPC past
 * MODEL_MEMORY_MAX_FILES, ENAMETOOLONG for a path over 255 bytes).
 */
int model_memory_files_from_dir(struct model_files *files, const char *dir);

/*
 * The members of a bundle attached with MB_ATTACH_KEEP_FDS: each one's
 * segment, and where libmbroker mapped it.  Returns 0 or -1 (errno set).
 */
int model_memory_files_from_attachment(struct model_files *files,
				       const struct mb_attachment *att);

/*
 * This process's memory: the mappings of the model's files (found by
 * device and inode, so a broker segment counts whatever its path; a
 * mapping at another address than libmbroker's is the engine's), its
 * anonymous memory and its total Pss; marks the files the engine maps.
 * Returns 0 or -1 (errno set).
 */
int model_memory_read(struct model_files *files, struct model_memory *mem);

#endif /* MODEL_MEMORY_H */
