/* SPDX-License-Identifier: MIT */
/*
 * mirror.h - layout of the registry mirror, /dev/shm/mbroker.<instance>.
 * registry: a header, then a JSON document (the "list" reply's models plus
 * the broker's pid and state) of `length` bytes.  Only the broker writes
 * it; readers copy it under the sequence number (odd while a write is in
 * progress) and retry when it changed.
 */
#ifndef MB_COMMON_MIRROR_H
#define MB_COMMON_MIRROR_H

#include <stdatomic.h>
#include <stdint.h>

#define MIRROR_MAGIC "MBREG001"
#define MIRROR_SIZE (2u << 20)

struct mirror_header {
	char magic[8];
	_Atomic uint64_t seq;
	uint64_t length;
	uint64_t reserved[5];
};

#define MIRROR_DATA_MAX (MIRROR_SIZE - sizeof(struct mirror_header))

#endif
