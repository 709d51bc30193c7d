/* SPDX-License-Identifier: MIT */
/*
 * mkmodel.c - writes a synthetic model of deterministic weights for the
 * demo, the tests and the benchmarks: a safetensors file of F32 tensors
 * ("layers.<i>.weight") or, with --raw, plain bytes.  The same size and
 * seed always give the same bytes.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t
mkmodel_next(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

static int
mkmodel_fill(FILE *f, uint64_t bytes, uint64_t *state)
{
	static uint64_t buf[1 << 16];

	while (bytes > 0) {
		size_t n = bytes < sizeof buf ? (size_t)bytes : sizeof buf;

		for (size_t i = 0; i < (n + 7) / 8; i++)
			buf[i] = mkmodel_next(state);
		if (fwrite(buf, 1, n, f) != n)
			return -1;
		bytes -= n;
	}
	return 0;
}

/* Writes the safetensors header for ntensors tensors of per bytes. */
static int
mkmodel_header(FILE *f, unsigned ntensors, uint64_t per)
{
	size_t cap = 128 + (size_t)ntensors * 128, len = 0;
	char *h = malloc(cap);
	unsigned char lenbuf[8];
	int r = 0;

	if (h == NULL)
		return -1;
	len += (size_t)snprintf(h + len, cap - len,
				"{\"__metadata__\":{\"format\":\"mbroker-demo\"}");
	for (unsigned i = 0; i < ntensors; i++)
		len += (size_t)snprintf(h + len, cap - len,
					",\"layers.%u.weight\":{\"dtype\":\"F32\","
					"\"shape\":[%" PRIu64 "],\"data_offsets\":"
					"[%" PRIu64 ",%" PRIu64 "]}",
					i, per / 4, i * per, (i + 1) * per);
	len += (size_t)snprintf(h + len, cap - len, "}");
	while (len % 8 != 0)
		h[len++] = ' ';
	for (int i = 0; i < 8; i++)
		lenbuf[i] = (unsigned char)((uint64_t)len >> (8 * i));
	if (fwrite(lenbuf, 1, 8, f) != 8 || fwrite(h, 1, len, f) != len)
		r = -1;
	free(h);
	return r;
}

int
main(int argc, char **argv)
{
	uint64_t bytes, per, state = 0x9e3779b97f4a7c15ULL;
	unsigned ntensors = 16;
	int raw = 0, i;
	FILE *f;

	for (i = 1; i < argc && argv[i][0] == '-'; i++) {
		if (strcmp(argv[i], "--raw") == 0)
			raw = 1;
		else if (strcmp(argv[i], "--tensors") == 0 && i + 1 < argc)
			ntensors = (unsigned)strtoul(argv[++i], NULL, 10);
		else if (strcmp(argv[i], "--seed") == 0 && i + 1 < argc)
			state ^= strtoull(argv[++i], NULL, 10) * 0x2545f4914f6cdd1dULL;
		else
			break;
	}
	if (argc - i != 2 || ntensors == 0) {
		fprintf(stderr, "usage: mkmodel [--raw] [--tensors N] [--seed S] "
			"OUT BYTES\n");
		return 2;
	}
	bytes = strtoull(argv[i + 1], NULL, 10);
	per = bytes / ntensors / 4 * 4;
	if ((f = fopen(argv[i], "wb")) == NULL) {
		fprintf(stderr, "mkmodel: %s: %s\n", argv[i], strerror(errno));
		return 1;
	}
	if ((raw ? mkmodel_fill(f, bytes, &state)
		 : mkmodel_header(f, ntensors, per) < 0 ? -1
		 : mkmodel_fill(f, per * ntensors, &state)) < 0 ||
	    fclose(f) != 0) {
		fprintf(stderr, "mkmodel: writing %s failed\n", argv[i]);
		return 1;
	}
	return 0;
}
