/* SPDX-License-Identifier: MIT */
/*
 * names.h - what a model or instance name may be, and the shared-memory
 * names built from them.  Every name the broker creates is
 * /dev/shm/mbroker.<instance>.* or /dev/shm/sem.mbroker.<instance>.*.
 */
#ifndef MB_COMMON_NAMES_H
#define MB_COMMON_NAMES_H

#include <stdbool.h>
#include <stddef.h>

/* Longest instance name.  Instance names have no '.', so that one
 * instance's prefix is never a prefix of another's. */
#define NAMES_INSTANCE_MAX 32
/* Room for any shared-memory name the broker builds. */
#define NAMES_SHM_MAX 160

/* 1 to MB_NAME_MAX of [A-Za-z0-9._-], and not "." or "..". */
bool names_model_valid(const char *name);
/* 1 to NAMES_INSTANCE_MAX of [A-Za-z0-9_-]. */
bool names_instance_valid(const char *name);

/*
 * Writes "/mbroker.<instance>.<suffix>" (the shm_open / sem_open form) into
 * buf.  Returns 0 or -ENAMETOOLONG.
 */
int names_shm(char *buf, size_t len, const char *instance, const char *suffix);

/* Writes "mbroker.<instance>." (the /dev/shm prefix of an instance). */
int names_prefix(char *buf, size_t len, const char *instance);

#endif
