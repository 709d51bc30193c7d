/* SPDX-License-Identifier: MIT */
/*
 * checksum.h - a bundle's checksum, built member by member (checksum.c),
 * by the broker when it loads a bundle and by workers that verify one:
 * XXH3-64 over, for each member in order, its name, one NUL byte, then
 * its size and its own checksum as 8 bytes little-endian each.
 */
#ifndef MBROKER_CHECKSUM_H
#define MBROKER_CHECKSUM_H
#include <stdint.h>
#define XXH_STATIC_LINKING_ONLY /* XXH3_state_t in struct bundle_sum */
#include <xxhash.h>

struct bundle_sum {
	XXH3_state_t state;
};

void bundle_sum_begin(struct bundle_sum *s);
void bundle_sum_add(struct bundle_sum *s, const char *name, uint64_t size,
		    uint64_t checksum);
uint64_t bundle_sum_end(struct bundle_sum *s);
#endif /* MBROKER_CHECKSUM_H */
