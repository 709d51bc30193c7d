/* SPDX-License-Identifier: MIT */
/*
 * safetensors.c - validation of safetensors headers.  Everything in the
 * header is hostile until checked: its length, that it is a JSON object,
 * each dtype, each shape (non-negative, at most MB_MAX_DIMS, products that
 * do not overflow), each pair of data offsets (inside the data, matching
 * the shape, not overlapping another tensor) and the type of __metadata__.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "safetensors.h"

/* Longest tensor name accepted. */
#define ST_NAME_MAX 1024

struct st_dtype {
	const char *name;
	unsigned size;
};

static const struct st_dtype st_dtypes[] = {
	{"BOOL", 1}, {"U8", 1},	 {"I8", 1},   {"F8_E4M3", 1}, {"F8_E5M2", 1},
	{"I16", 2},  {"U16", 2}, {"F16", 2},  {"BF16", 2},    {"I32", 4},
	{"U32", 4},  {"F32", 4}, {"I64", 8},  {"U64", 8},     {"F64", 8},
};

static int __attribute__((format(printf, 3, 4)))
st_fail(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return MB_EFORMAT;
}

static const struct st_dtype *
st_dtype_find(const char *name)
{
	for (size_t i = 0; i < sizeof st_dtypes / sizeof st_dtypes[0]; i++)
		if (strcmp(st_dtypes[i].name, name) == 0)
			return &st_dtypes[i];
	return NULL;
}

int
st_header_size(const void *buf, size_t len, uint64_t file_size,
	       size_t *total, char *err, size_t errlen)
{
	const unsigned char *p = buf;
	uint64_t hlen = 0;

	if (file_size < 8 || len < 8)
		return st_fail(err, errlen,
			       "file too short for a safetensors header "
			       "(%" PRIu64 " bytes)", file_size);
	for (int i = 7; i >= 0; i--)
		hlen = hlen << 8 | p[i];
	if (hlen < 2)
		return st_fail(err, errlen, "header length %" PRIu64
			       " is too small", hlen);
	if (hlen > ST_HEADER_MAX)
		return st_fail(err, errlen, "header length %" PRIu64
			       " exceeds the limit of %u bytes", hlen,
			       ST_HEADER_MAX);
	if (hlen > file_size - 8)
		return st_fail(err, errlen, "header length %" PRIu64
			       " runs past the end of the file (%" PRIu64
			       " bytes)", hlen, file_size);
	*total = (size_t)(8 + hlen);
	return 0;
}

static int
st_int_at(const json_t *array, size_t i, int64_t *out)
{
	const json_t *v = json_array_get(array, i);

	if (!json_is_integer(v) || json_integer_value(v) < 0)
		return -1;
	*out = json_integer_value(v);
	return 0;
}

/* Fills t from the JSON description of one tensor. */
static int
st_tensor_parse(const char *name, const json_t *desc, uint64_t data_size,
		struct st_tensor *t, char *err, size_t errlen)
{
	const json_t *dtype = json_object_get(desc, "dtype");
	const json_t *shape = json_object_get(desc, "shape");
	const json_t *offsets = json_object_get(desc, "data_offsets");
	const struct st_dtype *dt;
	uint64_t count = 1, nbytes;
	int64_t begin, end;

	if (!json_is_object(desc))
		return st_fail(err, errlen, "tensor '%s': not an object", name);
	if (!json_is_string(dtype))
		return st_fail(err, errlen, "tensor '%s': missing dtype", name);
	if ((dt = st_dtype_find(json_string_value(dtype))) == NULL)
		return st_fail(err, errlen, "tensor '%s': unknown dtype '%.32s'",
			       name, json_string_value(dtype));
	if (!json_is_array(shape))
		return st_fail(err, errlen, "tensor '%s': shape is not an array",
			       name);
	if (json_array_size(shape) > MB_MAX_DIMS)
		return st_fail(err, errlen, "tensor '%s': %zu dimensions "
			       "(at most %d)", name, json_array_size(shape),
			       MB_MAX_DIMS);
	t->ndim = (int)json_array_size(shape);
	for (int d = 0; d < t->ndim; d++) {
		if (st_int_at(shape, (size_t)d, &t->shape[d]) < 0)
			return st_fail(err, errlen, "tensor '%s': dimension %d "
				       "is not a non-negative integer", name, d);
		if (__builtin_mul_overflow(count, (uint64_t)t->shape[d], &count))
			return st_fail(err, errlen, "tensor '%s': shape "
				       "overflows", name);
	}
	if (__builtin_mul_overflow(count, (uint64_t)dt->size, &nbytes))
		return st_fail(err, errlen, "tensor '%s': size overflows", name);
	if (!json_is_array(offsets) || json_array_size(offsets) != 2 ||
	    st_int_at(offsets, 0, &begin) < 0 || st_int_at(offsets, 1, &end) < 0)
		return st_fail(err, errlen, "tensor '%s': data_offsets is not "
			       "two non-negative integers", name);
	if (begin > end || (uint64_t)end > data_size)
		return st_fail(err, errlen, "tensor '%s': data_offsets [%" PRId64
			       ", %" PRId64 "] outside the data (%" PRIu64
			       " bytes)", name, begin, end, data_size);
	if ((uint64_t)(end - begin) != nbytes)
		return st_fail(err, errlen, "tensor '%s': data_offsets span %"
			       PRId64 " bytes but shape and dtype need %" PRIu64,
			       name, end - begin, nbytes);
	t->dtype = dt->name;
	t->offset = (uint64_t)begin;
	t->nbytes = nbytes;
	return 0;
}

static int
st_cmp_offset(const void *a, const void *b)
{
	const struct st_tensor *x = a, *y = b;

	if (x->offset != y->offset)
		return x->offset < y->offset ? -1 : 1;
	return x->nbytes < y->nbytes ? -1 : x->nbytes > y->nbytes;
}

static int
st_cmp_name(const void *a, const void *b)
{
	const struct st_tensor *x = a, *y = b;

	return strcmp(x->name, y->name);
}

static int
st_metadata_check(const json_t *meta, char *err, size_t errlen)
{
	const char *key;
	const json_t *v;

	if (!json_is_object(meta))
		return st_fail(err, errlen, "__metadata__ is not an object");
	json_object_foreach((json_t *)(uintptr_t)meta, key, v)
		if (!json_is_string(v))
			return st_fail(err, errlen, "__metadata__ '%.64s' is "
				       "not a string", key);
	return 0;
}

/* Checks that no two non-empty tensors share a byte. */
static int
st_overlap_check(struct st_table *t, char *err, size_t errlen)
{
	uint64_t end = 0;
	const char *prev = NULL;

	qsort(t->tensors, t->count, sizeof *t->tensors, st_cmp_offset);
	for (size_t i = 0; i < t->count; i++) {
		const struct st_tensor *x = &t->tensors[i];

		if (x->nbytes == 0)
			continue;
		if (prev != NULL && x->offset < end)
			return st_fail(err, errlen, "tensors '%s' and '%s' "
				       "overlap", prev, x->name);
		end = x->offset + x->nbytes;
		prev = x->name;
	}
	return 0;
}

static int
st_table_fill(struct st_table *table, json_t *header, uint64_t data_size,
	      char *err, size_t errlen)
{
	const char *key;
	json_t *v;
	int r;

	json_object_foreach(header, key, v) {
		struct st_tensor *t;

		if (strcmp(key, "__metadata__") == 0) {
			if ((r = st_metadata_check(v, err, errlen)) < 0)
				return r;
			continue;
		}
		if (key[0] == '\0' || strlen(key) > ST_NAME_MAX)
			return st_fail(err, errlen, "tensor name is empty or "
				       "longer than %d bytes", ST_NAME_MAX);
		t = &table->tensors[table->count];
		memset(t, 0, sizeof *t);
		if ((t->name = strdup(key)) == NULL)
			return -ENOMEM;
		table->count++;
		if ((r = st_tensor_parse(key, v, data_size, t, err, errlen)) < 0)
			return r;
		t->offset += table->data_start;
	}
	return 0;
}

int
st_parse(const void *buf, size_t len, uint64_t file_size,
	 struct st_table **out, char *err, size_t errlen)
{
	struct st_table *table = NULL;
	json_t *header = NULL;
	json_error_t jerr;
	size_t total;
	int r;

	*out = NULL;
	if ((r = st_header_size(buf, len, file_size, &total, err, errlen)) < 0)
		return r;
	if (len < total)
		return st_fail(err, errlen, "header truncated");
	if (memchr((const char *)buf + 8, '\0', total - 8) != NULL)
		return st_fail(err, errlen, "header contains a NUL byte");
	header = json_loadb((const char *)buf + 8, total - 8,
			    JSON_REJECT_DUPLICATES, &jerr);
	if (header == NULL)
		return st_fail(err, errlen, "header is not valid JSON (byte %d:"
			       " %s)", jerr.position, jerr.text);
	r = MB_EFORMAT;
	if (!json_is_object(header)) {
		st_fail(err, errlen, "header is not a JSON object");
		goto out;
	}
	r = -ENOMEM;
	if ((table = calloc(1, sizeof *table)) == NULL ||
	    (table->tensors = calloc(json_object_size(header) + 1,
				     sizeof *table->tensors)) == NULL)
		goto out;
	table->data_start = total;
	if ((r = st_table_fill(table, header, file_size - total, err, errlen)) < 0 ||
	    (r = st_overlap_check(table, err, errlen)) < 0)
		goto out;
	qsort(table->tensors, table->count, sizeof *table->tensors,
	      st_cmp_name);
	*out = table;
	table = NULL;
	r = 0;
out:
	if (r == -ENOMEM)
		snprintf(err, errlen, "out of memory");
	st_table_free(table);
	json_decref(header);
	return r;
}

void
st_table_free(struct st_table *table)
{
	if (table == NULL)
		return;
	for (size_t i = 0; i < table->count; i++)
		free(table->tensors[i].name);
	free(table->tensors);
	free(table);
}

const struct st_tensor *
st_table_find(const struct st_table *table, const char *name)
{
	struct st_tensor key = {.name = (char *)(uintptr_t)name};

	return bsearch(&key, table->tensors, table->count,
		       sizeof *table->tensors, st_cmp_name);
}
