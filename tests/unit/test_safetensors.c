/* SPDX-License-Identifier: MIT */
/*
 * test_safetensors.c - the safetensors parser against valid files and
 * every malformed header it must refuse with a named reason, and against
 * a header that changes between its two passes (a shared mapping).
 * WRAP: calloc
 */
#include <stdlib.h>

#include "unit.h"

#include "mbroker.h"
#include "safetensors.h"

static unsigned char st_buf[1 << 16];
static char st_err[256];

/* Lays out header (padded to 8) then data_bytes of data; returns size. */
static size_t
st_build(const char *header, size_t data_bytes)
{
	size_t hlen = strlen(header);

	for (int i = 0; i < 8; i++)
		st_buf[i] = (unsigned char)((uint64_t)hlen >> (8 * i));
	memcpy(st_buf + 8, header, hlen);
	memset(st_buf + 8 + hlen, 0x5a, data_bytes);
	return 8 + hlen + data_bytes;
}

static int
st_try(const char *header, size_t data_bytes)
{
	struct st_table *t = NULL;
	size_t size = st_build(header, data_bytes);
	int r = st_parse(st_buf, size, size, &t, st_err, sizeof st_err);

	if (r == 0)
		st_table_free(t);
	else
		assert_null(t);
	return r;
}

static void
expect_refused(const char *header, size_t data, const char *reason)
{
	assert_int_equal(st_try(header, data), MB_EFORMAT);
	if (strstr(st_err, reason) == NULL)
		fail_msg("'%s' lacks '%s'", st_err, reason);
}

static void
test_st_parse_valid(void **state)
{
	const char *h = "{\"__metadata__\":{\"k\":\"v\"},"
			"\"b\":{\"dtype\":\"F16\",\"shape\":[2,3],\"data_offsets\":[8,20]},"
			"\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}";
	size_t size = st_build(h, 20);
	const struct st_tensor *t;
	struct st_table *table;

	(void)state;
	assert_int_equal(st_parse(st_buf, size, size, &table, st_err,
				  sizeof st_err), 0);
	assert_int_equal(table->count, 2);
	assert_string_equal(table->tensors[0].name, "a");
	assert_string_equal(table->tensors[1].name, "b");
	t = st_table_find(table, "b");
	assert_non_null(t);
	assert_string_equal(t->dtype, "F16");
	assert_int_equal(t->ndim, 2);
	assert_int_equal(t->shape[1], 3);
	assert_int_equal(t->offset, 8 + strlen(h) + 8);
	assert_int_equal(t->nbytes, 12);
	assert_null(st_table_find(table, "c"));
	st_table_free(table);
}

static void
test_st_parse_empty_tensors_may_share_offsets(void **state)
{
	(void)state;
	assert_int_equal(st_try("{\"a\":{\"dtype\":\"F32\",\"shape\":[0],"
				"\"data_offsets\":[0,0]},\"b\":{\"dtype\":\"U8\","
				"\"shape\":[],\"data_offsets\":[0,1]}}", 1), 0);
}

static void
test_st_parse_too_short(void **state)
{
	struct st_table *t;

	(void)state;
	assert_int_equal(st_parse(st_buf, 4, 4, &t, st_err, sizeof st_err),
			 MB_EFORMAT);
	assert_non_null(strstr(st_err, "too short"));
}

static void
test_st_parse_header_over_limit(void **state)
{
	uint64_t hlen = (uint64_t)ST_HEADER_MAX + 1;
	size_t total;

	(void)state;
	assert_int_equal(ST_HEADER_MAX, 100000000);
	for (int i = 0; i < 8; i++)
		st_buf[i] = (unsigned char)(hlen >> (8 * i));
	assert_int_equal(st_header_size(st_buf, 8, 1ull << 40, &total, st_err,
					sizeof st_err), MB_EFORMAT);
	assert_string_equal(st_err, "header length 100000001 exceeds the "
			    "limit of 100000000 bytes");
}

static void
test_st_parse_header_past_end(void **state)
{
	size_t size = st_build("{}", 0);

	(void)state;
	assert_int_equal(st_parse(st_buf, size, size - 1, &(struct st_table *){0},
				  st_err, sizeof st_err), MB_EFORMAT);
	assert_non_null(strstr(st_err, "runs past the end"));
}

static void
test_st_parse_malformed(void **state)
{
	(void)state;
	expect_refused("{\"a\":", 0, "not valid JSON");
	expect_refused("[1,2,3]", 0, "not a JSON object");
	expect_refused("{\"a\":", 0, "not valid JSON");
	expect_refused("{\"a\":{\"dtype\":\"U8\",\"shape\":[0],"
		       "\"data_offsets\":[0,0]},\"a\":{\"dtype\":\"U8\","
		       "\"shape\":[0],\"data_offsets\":[0,0]}}", 0,
		       "'a' appears twice");
	expect_refused("{\"a\":{\"dtype\":\"U8\",\"dtype\":\"U8\","
		       "\"shape\":[0],\"data_offsets\":[0,0]}}", 0, "two dtypes");
	expect_refused("{\"__metadata__\":{},\"__metadata__\":{}}", 0,
		       "two __metadata__");
	expect_refused("{\"a\":\"x\"}", 0, "not an object");
	expect_refused("{\"a\":{\"shape\":[1],\"data_offsets\":[0,1]}}", 1,
		       "missing dtype");
	expect_refused("{\"a\":{\"dtype\":\"F33\",\"shape\":[1],"
		       "\"data_offsets\":[0,4]}}", 4, "unknown dtype 'F33'");
	expect_refused("{\"a\":{\"dtype\":\"F32\",\"shape\":3,"
		       "\"data_offsets\":[0,4]}}", 4, "shape is not an array");
	expect_refused("{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],"
		       "\"data_offsets\":[0,4]}}", 4, "dimension 0 is not");
	expect_refused("{\"a\":{\"dtype\":\"F32\",\"shape\":[1.5],"
		       "\"data_offsets\":[0,4]}}", 4, "dimension 0 is not");
	expect_refused("{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],"
		       "\"data_offsets\":[0,4]}}", 4, "9 dimensions");
	expect_refused("{\"a\":{\"dtype\":\"F64\",\"shape\":[4294967296,"
		       "4294967296,16],\"data_offsets\":[0,4]}}", 4, "overflows");
	expect_refused("{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4,
		       "data_offsets is not");
	expect_refused("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],"
		       "\"data_offsets\":[0,-4]}}", 4, "data_offsets is not");
	expect_refused("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],"
		       "\"data_offsets\":[4,0]}}", 4, "outside the data");
	expect_refused("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],"
		       "\"data_offsets\":[0,8]}}", 4, "outside the data");
	expect_refused("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],"
		       "\"data_offsets\":[0,4]}}", 8, "need 8");
	expect_refused("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],"
		       "\"data_offsets\":[0,8]},\"b\":{\"dtype\":\"F32\","
		       "\"shape\":[1],\"data_offsets\":[4,8]}}", 8, "overlap");
	expect_refused("{\"__metadata__\":[1]}", 0, "__metadata__ is not");
	expect_refused("{\"__metadata__\":{\"k\":1}}", 0, "is not a string");
	expect_refused("{\"\":{\"dtype\":\"F32\",\"shape\":[1],"
		       "\"data_offsets\":[0,4]}}", 4, "name is empty");
}

/* What the header's own JSON reader accepts and refuses. */
static void
test_st_parse_json(void **state)
{
	const char *nested = "{\"a\":{\"dtype\":\"U8\",\"shape\":[],"
			     "\"data_offsets\":[0,1],\"x\":[{\"y\":[true,"
			     "false,null,-1.5e3,\"\\n\"]},{}]}}  ";
	const struct st_tensor *t;
	struct st_table *table;
	char deep[400];
	size_t size;

	(void)state;
	/* Unknown keys may carry any value; the header may end in spaces. */
	assert_int_equal(st_try(nested, 1), 0);
	/* Escapes in names decode to UTF-8, surrogate pairs included. */
	size = st_build("{\"\\u00e9\\ud83d\\ude00\\\"\":{\"dtype\":\"U8\","
			"\"shape\":[1],\"data_offsets\":[0,1]}}", 1);
	assert_int_equal(st_parse(st_buf, size, size, &table, st_err,
				  sizeof st_err), 0);
	t = st_table_find(table, "\xc3\xa9\xf0\x9f\x98\x80\"");
	assert_non_null(t);
	assert_int_equal(t->nbytes, 1);
	st_table_free(table);
	expect_refused("{\"a\\q\":{}}", 0, "bad escape");
	expect_refused("{\"\\ud83d\":{}}", 0, "lone high surrogate");
	expect_refused("{\"\\ude00\":{}}", 0, "lone low surrogate");
	expect_refused("{\"a\\u0000\":{}}", 0, "\\u0000");
	expect_refused("{\"\xc3\x28\":{}}", 0, "invalid UTF-8");
	expect_refused("{\"\xed\xa0\x80\":{}}", 0, "invalid UTF-8");
	expect_refused("{\"a\tb\":{}}", 0, "control character");
	expect_refused("{} {}", 0, "data after the object");
	expect_refused("{\"a\":{\"dtype\":\"U8\",\"shape\":[01],"
		       "\"data_offsets\":[0,1]}}", 1, "not valid JSON");
	expect_refused("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],"
		       "\"data_offsets\":[0,1],\"x\":tru}}", 1, "not valid JSON");
	expect_refused("{\"a\":{\"dtype\":\"F32\",\"shape\":"
		       "[9223372036854775808],\"data_offsets\":[0,4]}}", 4,
		       "dimension 0 is not");
	/* Nesting beyond 64 is refused without recursing further. */
	memset(deep, '[', sizeof deep);
	memcpy(deep, "{\"a\":{\"x\":", 10);
	deep[sizeof deep - 1] = '\0';
	expect_refused(deep, 0, "nested too deep");
}

/* A file of n zero-size tensors, in a buffer the caller frees. */
static unsigned char *
st_many(size_t n, size_t *size)
{
	unsigned char *b = malloc(16 + n * 64);
	size_t off = 9;

	assert_non_null(b);
	b[8] = '{';
	for (size_t i = 0; i < n; i++)
		off += (size_t)sprintf((char *)b + off, "%s\"t%zu\":{\"dtype\":"
				       "\"U8\",\"shape\":[0],\"data_offsets\":"
				       "[0,0]}", i > 0 ? "," : "", i);
	b[off++] = '}';
	for (int i = 0; i < 8; i++)
		b[i] = (unsigned char)((uint64_t)(off - 8) >> (8 * i));
	*size = off;
	return b;
}

static void
test_st_parse_tensor_count_limit(void **state)
{
	struct st_table *table;
	unsigned char *b;
	size_t size;

	(void)state;
	b = st_many(ST_TENSORS_MAX, &size);
	assert_int_equal(st_parse(b, size, size, &table, st_err,
				  sizeof st_err), 0);
	assert_int_equal(table->count, ST_TENSORS_MAX);
	assert_non_null(st_table_find(table, "t262143"));
	st_table_free(table);
	free(b);
	b = st_many(ST_TENSORS_MAX + 1, &size);
	assert_int_equal(st_parse(b, size, size, &table, st_err,
				  sizeof st_err), MB_EFORMAT);
	assert_null(table);
	assert_string_equal(st_err, "more than 262144 tensors (the limit)");
	free(b);
}

/* A header of exactly ST_HEADER_MAX bytes is read; one more is not. */
static void
test_st_parse_header_at_limit(void **state)
{
	size_t size = 8 + (size_t)ST_HEADER_MAX;
	unsigned char *b = malloc(size);
	struct st_table *table;

	(void)state;
	assert_non_null(b);
	for (int i = 0; i < 8; i++)
		b[i] = (unsigned char)((uint64_t)ST_HEADER_MAX >> (8 * i));
	memset(b + 8, ' ', ST_HEADER_MAX);
	memcpy(b + 8, "{\"__metadata__\":{\"k\":\"v\"}}", 26);
	assert_int_equal(st_parse(b, size, size, &table, st_err,
				  sizeof st_err), 0);
	assert_int_equal(table->count, 0);
	st_table_free(table);
	free(b);
}

static void
test_st_parse_nul_in_header(void **state)
{
	size_t size = st_build("{\"a\":{}}  ", 0);

	(void)state;
	st_buf[9] = '\0';
	assert_int_equal(st_parse(st_buf, size, size, &(struct st_table *){0},
				  st_err, sizeof st_err), MB_EFORMAT);
	assert_non_null(strstr(st_err, "NUL"));
}

void *__real_calloc(size_t n, size_t size);
void *__wrap_calloc(size_t n, size_t size);

/* When set, the next allocation (the table, between st_parse's two
 * passes) first rewrites st_buf's header with it. */
static const char *st_swap_header;

void *
__wrap_calloc(size_t n, size_t size)
{
	if (st_swap_header != NULL) {
		memcpy(st_buf + 8, st_swap_header, strlen(st_swap_header));
		st_swap_header = NULL;
	}
	return __real_calloc(n, size);
}

static void
test_st_parse_header_changed_between_passes(void **state)
{
	/* One tensor when counted, three with long names when read again:
	 * the table sized by the first pass must not be overrun. */
	static const char before[] =
		"{\"a\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[0,0]},"
		"\"__metadata__\":{\"k\":\"vvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvv"
		"vvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvv"
		"vvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvv\"}}";
	static const char after[] =
		"{\"bbbbbbbbbbbbbbbbbbbbbbbbbbbbbb\":{\"dtype\":\"U8\",\"shape\":[0],"
		"\"data_offsets\":[0,0]},\"cccccccccccccccccccccccccccccc\":{\"dtype\":"
		"\"U8\",\"shape\":[0],\"data_offsets\":[0,0]},\"d\":{\"dtype\":\"U8\","
		"\"shape\":[0],\"data_offsets\":[0,0]}}";
	char padded[sizeof before];
	struct st_table *t = NULL;
	size_t size = st_build(before, 0);

	(void)state;
	assert_true(sizeof after <= sizeof before);
	memset(padded, ' ', sizeof before - 1);
	memcpy(padded, after, sizeof after - 1);
	padded[sizeof before - 1] = '\0';
	st_swap_header = padded;
	assert_int_equal(st_parse(st_buf, size, size, &t, st_err,
				  sizeof st_err), MB_EFORMAT);
	assert_null(t);
	assert_non_null(strstr(st_err, "changed"));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_st_parse_valid),
		cmocka_unit_test(test_st_parse_empty_tensors_may_share_offsets),
		cmocka_unit_test(test_st_parse_too_short),
		cmocka_unit_test(test_st_parse_header_over_limit),
		cmocka_unit_test(test_st_parse_header_past_end),
		cmocka_unit_test(test_st_parse_malformed),
		cmocka_unit_test(test_st_parse_json),
		cmocka_unit_test(test_st_parse_tensor_count_limit),
		cmocka_unit_test(test_st_parse_header_at_limit),
		cmocka_unit_test(test_st_parse_nul_in_header),
		cmocka_unit_test(test_st_parse_header_changed_between_passes),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
