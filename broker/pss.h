/* SPDX-License-Identifier: MIT */
/*
 * pss.h - what a model's pages cost in the processes that map them
 * (pss.c), from /proc/PID/smaps.
 */
#ifndef MBROKER_PSS_H
#define MBROKER_PSS_H

#include <stdint.h>
#include <sys/types.h>

/* The Pss, in kB, of pid's mappings of files whose name contains name
 * (a segment's shm name), or -1 when its smaps cannot be read (another
 * user's process, or gone). */
int64_t pss_of_mappings(pid_t pid, const char *name);

struct model;
/* Calls fn(pid, kB or -1, arg) for each process holding m: its Pss of
 * every generation of m it maps. */
void pss_of_holders(const struct model *m,
		    void (*fn)(pid_t pid, int64_t kb, void *arg), void *arg);

#endif /* MBROKER_PSS_H */
