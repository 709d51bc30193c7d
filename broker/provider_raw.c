/* SPDX-License-Identifier: MIT */
/*
 * provider_raw.c - the raw format: any non-empty file, shared as it is.
 */
#include "mbrokerd.h"

static int
provider_raw_probe(int fd, uint64_t size, char *err, size_t errlen)
{
	(void)fd;
	(void)size;
	(void)err;
	(void)errlen;
	return 0;
}

static int
provider_raw_load(const void *data, uint64_t size, void **state,
		  size_t *ntensors, char *err, size_t errlen)
{
	(void)data;
	(void)size;
	(void)err;
	(void)errlen;
	*state = NULL;
	*ntensors = 0;
	return 0;
}

static int
provider_raw_unload(void *state)
{
	(void)state;
	return 0;
}

const struct provider provider_raw = {
	.name = "raw",
	.probe = provider_raw_probe,
	.load = provider_raw_load,
	.unload = provider_raw_unload,
};
