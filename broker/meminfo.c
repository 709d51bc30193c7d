/* SPDX-License-Identifier: MIT */
/*
 * meminfo.c - reads the machine's shared-memory total (Shmem in
 * /proc/meminfo) for the memory reported before and after an unload.
 */
#include <stdio.h>

#include "mbrokerd.h"

int64_t
meminfo_shmem_kb(void)
{
	FILE *f = fopen("/proc/meminfo", "re");
	char line[256];
	long long kb = -1;

	if (f == NULL)
		return -1;
	while (fgets(line, sizeof line, f) != NULL)
		if (sscanf(line, "Shmem: %lld kB", &kb) == 1)
			break;
	fclose(f);
	return kb;
}
