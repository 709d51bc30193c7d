/* SPDX-License-Identifier: MIT */
/*
 * errors.h - the wire names of mbroker's error codes, shared by the broker
 * (which puts them in error replies) and the library (which maps them back).
 */
#ifndef MB_COMMON_ERRORS_H
#define MB_COMMON_ERRORS_H

/* The wire name for an MB_E* code; "internal" for anything else. */
const char *errors_wire_name(int err);
/* The MB_E* code for a wire name; MB_EPROTOCOL when unknown. */
int errors_from_wire(const char *wire);

#endif
