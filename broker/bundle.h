/* SPDX-License-Identifier: MIT */
/*
 * bundle.h - a model made of many files (bundle.c): the walk that lists
 * the regular files beneath a directory, confined to it, as members in
 * name order; the opening of one member; and the bundle's checksum.  A
 * member record is also what a generation keeps of each file it holds
 * (a single-file model is one member): the loader fills it, the registry
 * owns it once the load is done.
 */
#ifndef MBROKER_BUNDLE_H
#define MBROKER_BUNDLE_H

#include <stddef.h>
#include <stdint.h>

struct provider;
struct segment;
struct stat;

/* Longest member name (its path relative to the bundle's directory). */
#define BUNDLE_NAME_MAX 255

struct member {
	char name[BUNDLE_NAME_MAX + 1];
	const struct provider *provider; /* safetensors by its name, or raw */
	uint64_t size;
	uint64_t checksum;
	struct segment *segment; /* one reference, once copied */
	void *provider_state;
	size_t ntensors;
};

/* Opens the bundle's directory at path (through --model-dir confinement
 * as a file would be).  A descriptor, or MB_EFORMAT (not a directory),
 * MB_EDENIED, MB_EIO with the reason in err. */
int bundle_open(const char *path, char *err, size_t errlen);
/*
 * Lists the members beneath the directory dirfd (bundle_open'ed; path
 * names it in messages): every regular file, recursively, by name order,
 * each opened once (a symlink is followed only while it stays beneath the
 * directory).  *members (freed by the caller) and *n; *total their size.
 * 0, or MB_EFORMAT (a member refused, or no file), MB_ELIMIT (more than
 * MB_MAX_MEMBERS files, or than 16 times that many files and directories:
 * the walk stops there), MB_EIO, -ENOMEM, with the reason in err.
 */
int bundle_walk(int dirfd, const char *path, struct member **members,
		unsigned *n, uint64_t *total, char *err, size_t errlen);
/* Opens and walks the bundle at path for its file count (*n) and total
 * size (*size) alone; 0 or an error of bundle_open or bundle_walk. */
int bundle_measure(const char *path, unsigned *n, uint64_t *size, char *err,
		   size_t errlen);
/* Opens member name of the directory dirfd read-only, beneath it, and
 * fstats it into *st.  A regular file's descriptor, or MB_EFORMAT /
 * MB_EIO with the reason. */
int bundle_open_member(int dirfd, const char *path, const char *name,
		       struct stat *st, char *err, size_t errlen);
/* The bundle's checksum: XXH3-64 over, for each member in order, its
 * name, a NUL, its size and its checksum as 8 bytes little-endian each. */
uint64_t bundle_checksum(const struct member *members, unsigned n);

#endif /* MBROKER_BUNDLE_H */
