/* SPDX-License-Identifier: MIT */
/*
 * fuzz_safetensors.c - libFuzzer target for the safetensors parser: any
 * bytes as a whole file.  Beyond not crashing, a header the parser accepts
 * must describe tensors that lie inside the file, and each must be found
 * again by its name.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct st_table *table = NULL;
	char err[256];

	if (st_parse(data, size, size, &table, err, sizeof err) != 0)
		return 0;
	for (size_t i = 0; i < table->count; i++) {
		const struct st_tensor *t = &table->tensors[i];

		if (t->offset < table->data_start || t->offset > size ||
		    t->nbytes > size - t->offset ||
		    st_table_find(table, t->name) != t)
			abort();
	}
	st_table_free(table);
	return 0;
}
