/* SPDX-License-Identifier: MIT */
/*
 * catalog.c - the catalog: the models the broker may load by name, found
 * in the --model-dir directories as NAME.safetensors (safetensors),
 * NAME.bin (raw) or a subdirectory NAME/ (a bundle of the files beneath).  A name must be a valid model name (no slash, not . or
 * ..), and every file is opened through modeldir_open, so nothing outside
 * the model directories is reachable by name.
 */
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bundle.h"
#include "catalog.h"
#include "mbrokerd.h"
#include "registry.h"

static const struct {
	const char *suffix;
	const struct provider *provider;
} catalog_kinds[] = {
	{".safetensors", &provider_safetensors},
	{".bin", &provider_raw},
};

/* Whether the model directory i holds a bundle NAME/ (a directory whose
 * walk finds its files within the limits): its path and size. */
static bool
catalog_find_bundle(size_t i, const char *name, char *path, uint64_t *size)
{
	char err[PATH_MAX + BUNDLE_NAME_MAX + 512];
	unsigned n;
	int dir;

	if (snprintf(path, PATH_MAX, "%s/%s", broker.cfg.model_dirs[i],
		     name) >= PATH_MAX ||
	    (dir = modeldir_open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC,
				 err, sizeof err)) < 0)
		return false;
	close(dir);
	return bundle_measure(path, &n, size, err, sizeof err) == 0;
}

bool
catalog_find(const char *name, char *path, const struct provider **p,
	     uint64_t *size)
{
	if (!names_model_valid(name))
		return false;
	for (size_t i = 0; i < broker.cfg.nmodel_dirs; i++) {
		for (size_t k = 0; k < sizeof catalog_kinds /
					   sizeof catalog_kinds[0]; k++) {
			int64_t n;

			if (snprintf(path, PATH_MAX, "%s/%s%s",
				     broker.cfg.model_dirs[i], name,
				     catalog_kinds[k].suffix) >= PATH_MAX ||
			    (n = modeldir_file_size(path)) < 0)
				continue;
			*p = catalog_kinds[k].provider;
			*size = (uint64_t)n;
			return true;
		}
		if (catalog_find_bundle(i, name, path, size)) {
			*p = &provider_bundle;
			return true;
		}
	}
	return false;
}

/* The model name a file entry names by its suffix, or false. */
static bool
catalog_entry_name(const char *entry, char *name, size_t len)
{
	size_t n = strlen(entry);

	for (size_t k = 0; k < sizeof catalog_kinds / sizeof catalog_kinds[0];
	     k++) {
		size_t s = strlen(catalog_kinds[k].suffix);

		if (n > s && strcmp(entry + n - s, catalog_kinds[k].suffix) == 0 &&
		    n - s < len) {
			memcpy(name, entry, n - s);
			name[n - s] = '\0';
			return names_model_valid(name);
		}
	}
	return false;
}

/* Adds the catalog's model called name to seen, once. */
static void
catalog_add(json_t *seen, const char *name)
{
	const struct provider *p;
	const struct model *m;
	char path[PATH_MAX];
	uint64_t size;

	if (!names_model_valid(name) || json_object_get(seen, name) != NULL ||
	    !catalog_find(name, path, &p, &size))
		return;
	m = registry_find(name);
	json_object_set_new(seen, name, json_pack(
		"{s:s, s:s, s:s, s:I, s:b}", "name", name, "path", path,
		"format", p->name, "size", (json_int_t)size, "loaded",
		m != NULL && model_state(m) == MODEL_READY));
}

static int
catalog_by_name(const void *a, const void *b)
{
	return strcmp(json_string_value(json_object_get(*(json_t *const *)a,
							"name")),
		      json_string_value(json_object_get(*(json_t *const *)b,
							"name")));
}

json_t *
catalog_list(void)
{
	json_t *seen = json_object(), *items, *list = json_array();
	const char *key;
	json_t *v;
	size_t n = 0, i = 0;
	json_t **sorted;

	for (size_t d = 0; d < broker.cfg.nmodel_dirs; d++) {
		DIR *dir = opendir(broker.cfg.model_dirs[d]);
		struct dirent *e;

		if (dir == NULL)
			continue;
		while ((e = readdir(dir)) != NULL) {
			char name[MB_NAME_MAX + 1];

			if (catalog_entry_name(e->d_name, name, sizeof name))
				catalog_add(seen, name);
			/* A subdirectory (or a symlink to one) is a bundle. */
			if (e->d_type == DT_DIR || e->d_type == DT_LNK ||
			    e->d_type == DT_UNKNOWN)
				catalog_add(seen, e->d_name);
		}
		closedir(dir);
	}
	items = seen;
	if ((sorted = calloc(json_object_size(items) + 1, sizeof *sorted)) ==
	    NULL) {
		json_decref(items);
		return list;
	}
	json_object_foreach(items, key, v)
		sorted[n++] = v;
	qsort(sorted, n, sizeof *sorted, catalog_by_name);
	for (i = 0; i < n; i++)
		json_array_append(list, sorted[i]);
	free(sorted);
	json_decref(items);
	return list;
}
