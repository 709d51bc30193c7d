/* SPDX-License-Identifier: MIT */
/*
 * provider_safetensors.c - the safetensors format: the header is validated
 * from the file before anything is copied (a bad file fails fast), then
 * again from the copied bytes, which are what workers will read.  The
 * table is kept while the model is loaded and freed at unload; being
 * large blocks, the probe's buffer and the tables are mappings of their
 * own (see main), so what they held goes back to the system at once.
 */
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#include "mbrokerd.h"
#include "safetensors.h"

static int
provider_safetensors_pread(int fd, void *buf, size_t len)
{
	size_t off = 0;

	while (off < len) {
		ssize_t n = pread(fd, (char *)buf + off, len - off, (off_t)off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		off += (size_t)n;
	}
	return 0;
}

static int
provider_safetensors_probe(int fd, uint64_t size, char *err, size_t errlen)
{
	unsigned char head[8];
	struct st_table *table = NULL;
	size_t total;
	char *buf;
	int r;

	if (size < sizeof head ||
	    provider_safetensors_pread(fd, head, sizeof head) < 0)
		return st_header_size(head, 0, size, &total, err, errlen);
	if ((r = st_header_size(head, sizeof head, size, &total, err,
				errlen)) < 0)
		return r;
	if ((buf = malloc(total)) == NULL)
		return -ENOMEM;
	if (provider_safetensors_pread(fd, buf, total) < 0) {
		free(buf);
		snprintf(err, errlen, "cannot read the safetensors header");
		return MB_EIO;
	}
	r = st_parse(buf, total, size, &table, err, errlen);
	st_table_free(table);
	free(buf);
	return r;
}

static int
provider_safetensors_load(const void *data, uint64_t size, void **state,
			  size_t *ntensors, char *err, size_t errlen)
{
	struct st_table *table;
	int r = st_parse(data, size, size, &table, err, errlen);

	if (r < 0)
		return r;
	*state = table;
	*ntensors = table->count;
	return 0;
}

static int
provider_safetensors_unload(void *state)
{
	st_table_free(state);
	return 0;
}

const struct provider provider_safetensors = {
	.name = "safetensors",
	.probe = provider_safetensors_probe,
	.load = provider_safetensors_load,
	.unload = provider_safetensors_unload,
};
