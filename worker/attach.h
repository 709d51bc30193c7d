/* SPDX-License-Identifier: MIT */
/*
 * attach.h - libmbroker's internal view of an attachment, shared by
 * attach.c (the attach round trips, detach, mb_ack), member.c (the
 * members' mappings and kept descriptors), member_dir.c (the directory of
 * links) and tensor.c (tensors across safetensors members).
 */
#ifndef MB_WORKER_ATTACH_H
#define MB_WORKER_ATTACH_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "mbroker.h"

/* Longest member name, in bytes (a path relative to the bundle). */
#define ATTACH_MEMBER_NAME_MAX 255

struct attach_member {
	char *name;
	char format[16];
	const unsigned char *data; /* inside the attachment's region; NULL
				      when size is 0 */
	size_t size;
	uint64_t checksum;
	struct st_table *tensors; /* safetensors members */
};

/*
 * The directory of links of mb_member_dir: every path it made (absolute),
 * in the order made, so that removing them backwards empties each
 * subdirectory before it; root last.  removed says it is done, so that
 * mb_ack (in a signal handler) and mb_detach do it once.
 */
struct member_dir {
	char root[4096];
	size_t count;
	char **paths;
	atomic_bool removed;
};

/*
 * What mb_ack lets go of besides the mapping, reachable from the client's
 * slot: each member's kept descriptor (-1 when none, or closed) and the
 * member directory.  Every change is an atomic exchange, so mb_ack and
 * mb_detach close each descriptor once.
 */
struct attach_keep {
	size_t count;
	_Atomic int *fds;
	_Atomic(struct member_dir *) dir;
};

struct mb_attachment {
	struct mb_client *client;
	int slot;
	unsigned flags; /* MB_ATTACH_*, for mb_follow_replace */
	uint64_t id;
	char name[MB_NAME_MAX + 1];
	char format[16];
	uint64_t generation;
	uint64_t checksum;
	size_t size;
	bool bundle;
	/* One reservation every member is mapped into, each at a page
	 * boundary: mb_ack and mb_detach let go of it at once. */
	unsigned char *region;
	size_t region_len;
	size_t count;
	struct attach_member *members;
	struct attach_keep keep;
	json_t *weight_map; /* tensor name -> member name, from the index */
	size_t tensor_count;
};

/*
 * Maps every member with a descriptor of att->keep.fds into one
 * reservation after checking each descriptor is a regular file of the
 * reply's size.  0, MB_EPROTOCOL (another file type, or a size that
 * differs from the reply's) or -errno.
 */
int member_map(struct mb_attachment *att);

/* Closes the kept descriptors and removes the member directory, once.
 * Async-signal-safe. */
void member_let_go(struct attach_keep *keep);

/* Lets go of the kept descriptors and directory and frees the members
 * (unmapping is the caller's). */
void member_free(struct mb_attachment *att);

/* Removes a member directory's entries (once) and frees it; accepts
 * NULL. */
void member_dir_free(struct member_dir *dir);

/* Removes a member directory's entries, once.  Async-signal-safe. */
void member_dir_remove(struct member_dir *dir);

/*
 * Reads the tensor tables of the safetensors members and the weight maps
 * of the *.safetensors.index.json members at the top of a bundle.  0,
 * MB_EFORMAT with a reason in err, or -ENOMEM.
 */
int tensor_load(struct mb_attachment *att, char *err, size_t errlen);

/* Frees what tensor_load made. */
void tensor_free(struct mb_attachment *att);

#endif
