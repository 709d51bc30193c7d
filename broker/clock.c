/* SPDX-License-Identifier: MIT */
/*
 * clock.c - the broker's one time base: CLOCK_MONOTONIC in milliseconds,
 * so that no deadline moves when the wall clock is stepped.
 */
#include <time.h>

#include "mbrokerd.h"

int64_t
clock_monotonic_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t
clock_monotonic_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}
