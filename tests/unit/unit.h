/* SPDX-License-Identifier: MIT */
/*
 * unit.h - what several unit tests share: cmocka's headers in the order it
 * needs, a private instance name, and observations a user could make (open
 * descriptors, the instance's names in /dev/shm).
 */
#ifndef MB_TESTS_UNIT_H
#define MB_TESTS_UNIT_H

#include <dirent.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

/* Names this test's instance "ut-<pid>" (tests/run.sh checks "ut-"). */
static inline void
unit_instance(char *buf, size_t len)
{
	snprintf(buf, len, "ut-%ld", (long)getpid());
}

/* Number of descriptors this process has open. */
static inline int
unit_fd_count(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	int n = 0;

	if (d == NULL)
		return -1;
	while ((e = readdir(d)) != NULL)
		if (e->d_name[0] != '.')
			n++;
	closedir(d);
	return n - 1; /* the directory's own descriptor */
}

/* Number of /dev/shm entries of instance (segments and semaphores);
 * with remove, unlinks them too (a teardown after a failed test). */
static inline int
unit_shm_scan(const char *instance, int remove)
{
	char prefix[96], sem_prefix[100];
	DIR *d = opendir("/dev/shm");
	struct dirent *e;
	int n = 0;

	snprintf(prefix, sizeof prefix, "mbroker.%s.", instance);
	snprintf(sem_prefix, sizeof sem_prefix, "sem.%s", prefix);
	if (d == NULL)
		return -1;
	while ((e = readdir(d)) != NULL)
		if (strncmp(e->d_name, prefix, strlen(prefix)) == 0 ||
		    strncmp(e->d_name, sem_prefix, strlen(sem_prefix)) == 0) {
			n++;
			if (remove)
				unlinkat(dirfd(d), e->d_name, 0);
		}
	closedir(d);
	return n;
}

static inline int
unit_shm_count(const char *instance)
{
	return unit_shm_scan(instance, 0);
}

#endif
