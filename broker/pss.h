/* SPDX-License-Identifier: MIT */
/*
 * pss.h - what a model's pages cost in the processes that map them
 * (pss.c), from /proc/PID/smaps.
 */
#ifndef MBROKER_PSS_H
#define MBROKER_PSS_H

#include <stdint.h>
#include <sys/types.h>

struct model;
/* One holder's Pss in kB of m's pages, or -1 when unreadable. */
typedef void pss_fn(const struct model *m, pid_t pid, int64_t kb, void *arg);
/* Calls fn once for every model each holding process holds, reading
 * each process's /proc/PID/smaps once. */
void pss_of_holders(pss_fn *fn, void *arg);

#endif /* MBROKER_PSS_H */
