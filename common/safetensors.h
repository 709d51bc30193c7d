/* SPDX-License-Identifier: MIT */
/*
 * safetensors.h - parser and validator of the safetensors format: an 8-byte
 * little-endian header length, a JSON header describing each tensor, then
 * the data.  The broker runs it before and after copying a file; the library
 * runs it again on the read-only mapping to find tensors by name.
 */
#ifndef MB_COMMON_SAFETENSORS_H
#define MB_COMMON_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "mbroker.h"

/* Largest JSON header accepted, in bytes: the reference implementation's
 * limit (MAX_HEADER_SIZE of the safetensors Rust crate). */
#define ST_HEADER_MAX 100000000u
/*
 * Most tensors in one file.  The reference implementation has none (its
 * header limit alone allows about two million); published checkpoints
 * hold at most some 10^4 per file, and this bounds a table at 27 MB.
 */
#define ST_TENSORS_MAX 262144u

struct st_tensor {
	char *name;
	const char *dtype; /* static string */
	int ndim;
	int64_t shape[MB_MAX_DIMS];
	uint64_t offset; /* from the start of the file */
	uint64_t nbytes;
};

struct st_table {
	size_t count;
	struct st_tensor *tensors; /* sorted by name */
	char *names;               /* every tensor's name, one block */
	uint64_t data_start;       /* 8 + header length */
};

/*
 * Reads the header length from the first bytes of a file of file_size
 * bytes and checks it against the limits.  Returns 0 and sets *total to the
 * number of leading bytes st_parse needs, or MB_EFORMAT with a reason.
 */
int st_header_size(const void *buf, size_t len, uint64_t file_size,
		   size_t *total, char *err, size_t errlen);

/*
 * Parses and validates the header at the start of buf (at least the size
 * st_header_size gave) of a file of file_size bytes.  On success *out is a
 * new table (st_table_free), of about sizeof(struct st_tensor) plus the
 * name per tensor, and nothing else is allocated.  Returns 0, MB_EFORMAT
 * with a reason in err, or -ENOMEM.
 */
int st_parse(const void *buf, size_t len, uint64_t file_size,
	     struct st_table **out, char *err, size_t errlen);

/* Frees a table; accepts NULL. */
void st_table_free(struct st_table *table);

/* The tensor called name, or NULL. */
const struct st_tensor *st_table_find(const struct st_table *table,
				      const char *name);

#endif
