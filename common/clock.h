/* SPDX-License-Identifier: MIT */
/*
 * clock.h - the one time base of the broker and the library:
 * CLOCK_MONOTONIC, so that no deadline moves when the wall clock is
 * stepped.
 */
#ifndef MB_COMMON_CLOCK_H
#define MB_COMMON_CLOCK_H

#include <stdint.h>

/* Monotonic time in milliseconds (and microseconds); never fails. */
int64_t clock_monotonic_ms(void);
int64_t clock_monotonic_us(void);

#endif
