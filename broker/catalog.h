/* SPDX-License-Identifier: MIT */
/*
 * catalog.h - the models the broker may load by name (catalog.c): with
 * --model-dir DIR, NAME is DIR/NAME.safetensors or DIR/NAME.bin, a
 * regular file reached only through the model directories' confinement.
 */
#ifndef MBROKER_CATALOG_H
#define MBROKER_CATALOG_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

struct provider;

/* Finds NAME in the catalog: its path (PATH_MAX bytes) and provider;
 * true when it is there.  The first --model-dir that has it wins, and
 * .safetensors before .bin. */
bool catalog_find(const char *name, char *path, const struct provider **p,
		  uint64_t *size);
/* Every catalog model, sorted by name: {name, path, format, size,
 * loaded} (new reference). */
json_t *catalog_list(void);

#endif /* MBROKER_CATALOG_H */
