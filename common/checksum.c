/* SPDX-License-Identifier: MIT */
/*
 * checksum.c - the XXH3-64 checksum of model bytes, exported so that a
 * worker can verify its mapping without linking libxxhash itself, and a
 * bundle's checksum over its members (checksum.h).
 */
#include <string.h>
#include <xxhash.h>

#include "checksum.h"
#include "mbroker.h"

uint64_t
mb_checksum(const void *data, size_t size)
{
	return XXH3_64bits(data, size);
}

void
bundle_sum_begin(struct bundle_sum *s)
{
	XXH3_64bits_reset(&s->state);
}

void
bundle_sum_add(struct bundle_sum *s, const char *name, uint64_t size,
	       uint64_t checksum)
{
	unsigned char le[16];

	for (int b = 0; b < 8; b++) {
		le[b] = (unsigned char)(size >> (8 * b));
		le[8 + b] = (unsigned char)(checksum >> (8 * b));
	}
	XXH3_64bits_update(&s->state, name, strlen(name) + 1);
	XXH3_64bits_update(&s->state, le, sizeof le);
}

uint64_t
bundle_sum_end(struct bundle_sum *s)
{
	return XXH3_64bits_digest(&s->state);
}
