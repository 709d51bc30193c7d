/* SPDX-License-Identifier: MIT */
/*
 * checksum.c - the XXH3-64 checksum of model bytes, exported so that a
 * worker can verify its mapping without linking libxxhash itself.
 */
#include <xxhash.h>

#include "mbroker.h"

uint64_t
mb_checksum(const void *data, size_t size)
{
	return XXH3_64bits(data, size);
}
