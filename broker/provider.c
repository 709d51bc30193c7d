/* SPDX-License-Identifier: MIT */
/*
 * provider.c - the table of model formats (and "bundle", a directory
 * whose files are models of those formats).  A provider checks a file before
 * it is copied (probe), validates the copied bytes (load) and releases what
 * load set up (unload); adding a format is adding one provider_*.c here.
 */
#include <string.h>
#include <sys/stat.h>

#include "mbrokerd.h"

/* A bundle: each of its members is checked by a provider of its own
 * (provider_for_path of its name); the bundle itself has no hooks. */
const struct provider provider_bundle = {.name = "bundle"};

static const struct provider *const provider_table[] = {
	&provider_raw,
	&provider_safetensors,
	&provider_bundle,
};

const struct provider *
provider_find(const char *name)
{
	for (size_t i = 0; i < sizeof provider_table / sizeof provider_table[0];
	     i++)
		if (strcmp(provider_table[i]->name, name) == 0)
			return provider_table[i];
	return NULL;
}

const struct provider *
provider_for_path(const char *path)
{
	static const char ext[] = ".safetensors";
	size_t len = strlen(path);

	if (len > sizeof ext - 1 &&
	    strcmp(path + len - (sizeof ext - 1), ext) == 0)
		return &provider_safetensors;
	return &provider_raw;
}

const struct provider *
provider_auto(const char *path)
{
	struct stat st;

	if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
		return &provider_bundle;
	return provider_for_path(path);
}
