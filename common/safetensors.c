/* SPDX-License-Identifier: MIT */
/*
 * safetensors.c - validation of safetensors headers.  Everything in the
 * header is hostile until checked: its length, that it is a JSON object,
 * each dtype, each shape (non-negative, at most MB_MAX_DIMS, products that
 * do not overflow), each pair of data offsets (inside the data, matching
 * the shape, not overlapping another tensor), the type of __metadata__ and
 * the number of tensors.
 *
 * The header is read by a JSON reader of its own, without building a
 * tree: a first pass checks everything and counts the tensors and the
 * bytes of their names, a second fills a table of exactly that size.  So
 * the memory is the table alone: a tensor takes at least 50 bytes of
 * header and about 100 of table, where a jansson tree took over 1 KB.
 * Duplicate keys are refused in the header and in each tensor; inside
 * __metadata__, which mbroker never reads, they are not looked for.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "safetensors.h"
#include "utf8.h"

/* Longest tensor name accepted. */
#define ST_NAME_MAX 1024
/* Deepest nesting of the values a tensor may carry beside its own keys. */
#define ST_DEPTH_MAX 64

struct st_dtype {
	const char *name;
	unsigned size;
};

static const struct st_dtype st_dtypes[] = {
	{"BOOL", 1}, {"U8", 1},	 {"I8", 1},   {"F8_E4M3", 1}, {"F8_E5M2", 1},
	{"I16", 2},  {"U16", 2}, {"F16", 2},  {"BF16", 2},    {"I32", 4},
	{"U32", 4},  {"F32", 4}, {"I64", 8},  {"U64", 8},     {"F64", 8},
};

/* One pass over the header's JSON. */
struct st_reader {
	const unsigned char *start, *p, *end;
	uint64_t data_start, data_size;
	struct st_table *table; /* NULL in the counting pass */
	size_t count;           /* tensors so far */
	size_t name_bytes;      /* their names, NULs included */
	/* What the counting pass found, which the table has room for: a
	 * header in shared memory may say more when read again. */
	size_t max_count, max_name_bytes;
	bool metadata_seen;
	char *err;
	size_t errlen;
};

/* A tensor's description as read, checked once it is whole. */
struct st_desc {
	bool has_dtype, has_shape, has_offsets;
	bool dtype_string, shape_array;
	char dtype[33]; /* enough to name any unknown one in a message */
	size_t ndim;
	long bad_dim; /* first dimension that is not an int64 >= 0, or -1 */
	int64_t shape[MB_MAX_DIMS];
	size_t noffsets;
	bool offsets_bad;
	int64_t offsets[2];
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

static int
st_syntax(struct st_reader *r, const char *what)
{
	return st_fail(r->err, r->errlen, "header is not valid JSON (byte %zu:"
		       " %s)", (size_t)(r->p - r->start), what);
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

/* The next byte after white space, or 0 at the end (a NUL was refused
 * before reading began). */
static unsigned char
st_peek(struct st_reader *r)
{
	while (r->p < r->end && (*r->p == ' ' || *r->p == '\t' ||
				 *r->p == '\n' || *r->p == '\r'))
		r->p++;
	return r->p < r->end ? *r->p : 0;
}

static int
st_expect(struct st_reader *r, unsigned char c, const char *what)
{
	if (st_peek(r) != c)
		return st_syntax(r, what);
	r->p++;
	return 0;
}

/* After a member or an element: 1 when another follows, 0 at close. */
static int
st_next(struct st_reader *r, unsigned char close)
{
	unsigned char c = st_peek(r);

	if (c == ',' || c == close) {
		r->p++;
		return c == ',';
	}
	return st_syntax(r, close == '}' ? "expected ',' or '}'"
					 : "expected ',' or ']'");
}

static int
st_hex4(struct st_reader *r, unsigned *out)
{
	*out = 0;
	if (r->end - r->p < 4)
		return st_syntax(r, "short \\u escape");
	for (int i = 0; i < 4; i++) {
		unsigned char c = *r->p++;
		unsigned v;

		if (c >= '0' && c <= '9')
			v = c - '0';
		else if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f')
			v = (c | 0x20) - 'a' + 10;
		else
			return st_syntax(r, "bad \\u escape");
		*out = *out << 4 | v;
	}
	return 0;
}

/* Decodes the escape after a backslash into UTF-8 in out; its length. */
static int
st_escape(struct st_reader *r, unsigned char out[4], size_t *len)
{
	static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
	const char *c;
	unsigned cp, low;
	int e;

	if (r->p >= r->end)
		return st_syntax(r, "unterminated string");
	if (*r->p != 'u') {
		if ((c = memchr(from, *r->p, sizeof from - 1)) == NULL)
			return st_syntax(r, "bad escape");
		r->p++;
		out[0] = (unsigned char)to[c - from];
		*len = 1;
		return 0;
	}
	r->p++;
	if ((e = st_hex4(r, &cp)) < 0)
		return e;
	if (cp >= 0xdc00 && cp <= 0xdfff)
		return st_syntax(r, "lone low surrogate");
	if (cp >= 0xd800 && cp <= 0xdbff) {
		if (r->end - r->p < 2 || r->p[0] != '\\' || r->p[1] != 'u')
			return st_syntax(r, "lone high surrogate");
		r->p += 2;
		if ((e = st_hex4(r, &low)) < 0)
			return e;
		if (low < 0xdc00 || low > 0xdfff)
			return st_syntax(r, "lone high surrogate");
		cp = 0x10000 + ((cp - 0xd800) << 10) + (low - 0xdc00);
	}
	if (cp == 0)
		return st_syntax(r, "\\u0000 in a string");
	if (cp < 0x80) {
		out[0] = (unsigned char)cp;
		*len = 1;
	} else if (cp < 0x800) {
		out[0] = (unsigned char)(0xc0 | cp >> 6);
		out[1] = (unsigned char)(0x80 | (cp & 0x3f));
		*len = 2;
	} else if (cp < 0x10000) {
		out[0] = (unsigned char)(0xe0 | cp >> 12);
		out[1] = (unsigned char)(0x80 | (cp >> 6 & 0x3f));
		out[2] = (unsigned char)(0x80 | (cp & 0x3f));
		*len = 3;
	} else {
		out[0] = (unsigned char)(0xf0 | cp >> 18);
		out[1] = (unsigned char)(0x80 | (cp >> 12 & 0x3f));
		out[2] = (unsigned char)(0x80 | (cp >> 6 & 0x3f));
		out[3] = (unsigned char)(0x80 | (cp & 0x3f));
		*len = 4;
	}
	return 0;
}

/*
 * Reads a string: UTF-8, no raw control character, no \u0000.  When out
 * is not NULL, as many whole characters as fit in cap - 1 bytes go there,
 * NUL-terminated; *len is the decoded length in any case.
 */
static int
st_string(struct st_reader *r, char *out, size_t cap, size_t *len)
{
	size_t n = 0, kept = 0;
	bool full = out == NULL;
	int e;

	if ((e = st_expect(r, '"', "expected a string")) < 0)
		return e;
	for (;;) {
		unsigned char esc[4];
		const unsigned char *src;
		size_t seq = 0;

		if (r->p >= r->end)
			return st_syntax(r, "unterminated string");
		if (*r->p == '"')
			break;
		if (*r->p < 0x20)
			return st_syntax(r, "control character in a string");
		if (*r->p == '\\') {
			r->p++;
			if ((e = st_escape(r, esc, &seq)) < 0)
				return e;
			src = esc;
		} else {
			seq = utf8_len(r->p, (size_t)(r->end - r->p));
			if (seq == 0)
				return st_syntax(r, "invalid UTF-8");
			src = r->p;
			r->p += seq;
		}
		if (!full && kept + seq < cap) {
			memcpy(out + kept, src, seq);
			kept += seq;
		} else {
			full = true;
		}
		n += seq;
	}
	r->p++;
	if (out != NULL)
		out[kept] = '\0';
	*len = n;
	return 0;
}

/* Reads a number: 0 and *v for an integer that fits in int64, 1 for any
 * other number (a fraction, an exponent, too large). */
static int
st_number(struct st_reader *r, int64_t *v)
{
	const unsigned char *q = r->p, *end = r->end;
	bool neg = false, integral = true, big = false;
	uint64_t acc = 0;

	if (q < end && *q == '-') {
		neg = true;
		q++;
	}
	if (q >= end || *q < '0' || *q > '9')
		return st_syntax(r, "expected a value");
	if (*q == '0') {
		q++;
	} else {
		for (; q < end && *q >= '0' && *q <= '9'; q++) {
			unsigned d = *q - '0';

			if (acc > ((uint64_t)INT64_MAX - d) / 10)
				big = true;
			else
				acc = acc * 10 + d;
		}
	}
	if (q < end && *q == '.') {
		integral = false;
		if (++q >= end || *q < '0' || *q > '9')
			return st_syntax(r, "bad number");
		while (q < end && *q >= '0' && *q <= '9')
			q++;
	}
	if (q < end && (*q == 'e' || *q == 'E')) {
		integral = false;
		if (++q < end && (*q == '+' || *q == '-'))
			q++;
		if (q >= end || *q < '0' || *q > '9')
			return st_syntax(r, "bad number");
		while (q < end && *q >= '0' && *q <= '9')
			q++;
	}
	r->p = q;
	if (!integral || big)
		return 1;
	*v = neg ? -(int64_t)acc : (int64_t)acc;
	return 0;
}

/* Reads and drops any value, nested at most ST_DEPTH_MAX deep. */
static int
st_skip(struct st_reader *r, int depth)
{
	static const char *const literals[] = {"true", "false", "null"};
	unsigned char c = st_peek(r), close = c == '{' ? '}' : ']';
	size_t len;
	int64_t v;
	int e;

	if (depth > ST_DEPTH_MAX)
		return st_syntax(r, "nested too deep");
	if (c == '"')
		return st_string(r, NULL, 0, &len);
	if (c != '{' && c != '[') {
		for (size_t i = 0; i < 3; i++) {
			len = strlen(literals[i]);
			if ((size_t)(r->end - r->p) >= len &&
			    memcmp(r->p, literals[i], len) == 0) {
				r->p += len;
				return 0;
			}
		}
		e = st_number(r, &v);
		return e < 0 ? e : 0;
	}
	r->p++;
	if (st_peek(r) == close) {
		r->p++;
		return 0;
	}
	do {
		if (c == '{' &&
		    ((e = st_string(r, NULL, 0, &len)) < 0 ||
		     (e = st_expect(r, ':', "expected ':'")) < 0))
			return e;
		if ((e = st_skip(r, depth + 1)) < 0)
			return e;
	} while ((e = st_next(r, close)) > 0);
	return e;
}

/* An array of integers into out (up to max of them); *n counts them all,
 * *bad is the first that is not an int64 >= 0, or -1. */
static int
st_ints(struct st_reader *r, int64_t *out, size_t max, size_t *n, long *bad)
{
	int e;

	*n = 0;
	*bad = -1;
	r->p++;
	if (st_peek(r) == ']') {
		r->p++;
		return 0;
	}
	do {
		unsigned char c = st_peek(r);
		int64_t v = -1;

		if (c == '-' || (c >= '0' && c <= '9'))
			e = st_number(r, &v);
		else
			e = st_skip(r, 1);
		if (e < 0)
			return e;
		if ((e > 0 || v < 0) && *bad < 0)
			*bad = (long)*n;
		if (*n < max)
			out[*n] = v;
		(*n)++;
	} while ((e = st_next(r, ']')) > 0);
	return e;
}

/* Reads one member of a tensor's description into d. */
static int
st_desc_member(struct st_reader *r, const char *name, struct st_desc *d)
{
	char key[16];
	size_t len;
	long bad;
	int e;

	if ((e = st_string(r, key, sizeof key, &len)) < 0 ||
	    (e = st_expect(r, ':', "expected ':'")) < 0)
		return e;
	if (len >= sizeof key)
		return st_skip(r, 1);
	if (strcmp(key, "dtype") == 0) {
		if (d->has_dtype)
			return st_fail(r->err, r->errlen, "tensor '%s': two "
				       "dtypes", name);
		d->has_dtype = true;
		if (st_peek(r) != '"')
			return st_skip(r, 1);
		d->dtype_string = true;
		return st_string(r, d->dtype, sizeof d->dtype, &len);
	}
	if (strcmp(key, "shape") == 0) {
		if (d->has_shape)
			return st_fail(r->err, r->errlen, "tensor '%s': two "
				       "shapes", name);
		d->has_shape = true;
		if (st_peek(r) != '[')
			return st_skip(r, 1);
		d->shape_array = true;
		return st_ints(r, d->shape, MB_MAX_DIMS, &d->ndim, &d->bad_dim);
	}
	if (strcmp(key, "data_offsets") == 0) {
		if (d->has_offsets)
			return st_fail(r->err, r->errlen, "tensor '%s': two "
				       "data_offsets", name);
		d->has_offsets = true;
		if (st_peek(r) != '[') {
			d->offsets_bad = true;
			return st_skip(r, 1);
		}
		e = st_ints(r, d->offsets, 2, &d->noffsets, &bad);
		d->offsets_bad = bad >= 0 || d->noffsets != 2;
		return e;
	}
	return st_skip(r, 1);
}

/* Checks a whole description and fills t from it. */
static int
st_desc_check(struct st_reader *r, const char *name, const struct st_desc *d,
	      struct st_tensor *t)
{
	const struct st_dtype *dt;
	uint64_t count = 1, nbytes;
	int64_t begin = d->offsets[0], end = d->offsets[1];

	if (!d->dtype_string)
		return st_fail(r->err, r->errlen, "tensor '%s': missing dtype",
			       name);
	if ((dt = st_dtype_find(d->dtype)) == NULL)
		return st_fail(r->err, r->errlen, "tensor '%s': unknown dtype "
			       "'%.32s'", name, d->dtype);
	if (!d->shape_array)
		return st_fail(r->err, r->errlen, "tensor '%s': shape is not an "
			       "array", name);
	if (d->ndim > MB_MAX_DIMS)
		return st_fail(r->err, r->errlen, "tensor '%s': %zu dimensions "
			       "(at most %d)", name, d->ndim, MB_MAX_DIMS);
	if (d->bad_dim >= 0)
		return st_fail(r->err, r->errlen, "tensor '%s': dimension %ld "
			       "is not a non-negative integer", name,
			       d->bad_dim);
	for (size_t i = 0; i < d->ndim; i++)
		if (__builtin_mul_overflow(count, (uint64_t)d->shape[i], &count))
			return st_fail(r->err, r->errlen, "tensor '%s': shape "
				       "overflows", name);
	if (__builtin_mul_overflow(count, (uint64_t)dt->size, &nbytes))
		return st_fail(r->err, r->errlen, "tensor '%s': size overflows",
			       name);
	if (!d->has_offsets || d->offsets_bad)
		return st_fail(r->err, r->errlen, "tensor '%s': data_offsets is "
			       "not two non-negative integers", name);
	if (begin > end || (uint64_t)end > r->data_size)
		return st_fail(r->err, r->errlen, "tensor '%s': data_offsets [%"
			       PRId64 ", %" PRId64 "] outside the data (%" PRIu64
			       " bytes)", name, begin, end, r->data_size);
	if ((uint64_t)(end - begin) != nbytes)
		return st_fail(r->err, r->errlen, "tensor '%s': data_offsets "
			       "span %" PRId64 " bytes but shape and dtype need %"
			       PRIu64, name, end - begin, nbytes);
	t->dtype = dt->name;
	t->ndim = (int)d->ndim;
	memcpy(t->shape, d->shape, d->ndim * sizeof d->shape[0]);
	t->offset = r->data_start + (uint64_t)begin;
	t->nbytes = nbytes;
	return 0;
}

/* Reads the tensor called name (len bytes); in the second pass, into the
 * table, its name after the names already there. */
static int
st_tensor_read(struct st_reader *r, const char *name, size_t len)
{
	struct st_desc d = {.bad_dim = -1};
	struct st_tensor scratch, *t = &scratch;
	int e = 0;

	if (len == 0 || len > ST_NAME_MAX)
		return st_fail(r->err, r->errlen, "tensor name is empty or "
			       "longer than %d bytes", ST_NAME_MAX);
	if (r->count == ST_TENSORS_MAX)
		return st_fail(r->err, r->errlen, "more than %u tensors (the "
			       "limit)", ST_TENSORS_MAX);
	if (st_peek(r) != '{') {
		if ((e = st_skip(r, 1)) < 0)
			return e;
		return st_fail(r->err, r->errlen, "tensor '%s': not an object",
			       name);
	}
	r->p++;
	if (st_peek(r) == '}')
		r->p++;
	else
		while ((e = st_desc_member(r, name, &d)) == 0 &&
		       (e = st_next(r, '}')) > 0)
			;
	if (e < 0)
		return e;
	if (r->table != NULL) {
		if (r->count >= r->max_count ||
		    r->name_bytes + len + 1 > r->max_name_bytes)
			return st_fail(r->err, r->errlen, "header changed while "
				       "it was read");
		t = &r->table->tensors[r->count];
		t->name = r->table->names + r->name_bytes;
		memcpy(t->name, name, len + 1);
	}
	r->count++;
	r->name_bytes += len + 1;
	return st_desc_check(r, name, &d, t);
}

static int
st_metadata_read(struct st_reader *r)
{
	char key[65];
	size_t len;
	int e;

	if (r->metadata_seen)
		return st_fail(r->err, r->errlen, "two __metadata__");
	r->metadata_seen = true;
	if (st_peek(r) != '{') {
		if ((e = st_skip(r, 1)) < 0)
			return e;
		return st_fail(r->err, r->errlen, "__metadata__ is not an "
			       "object");
	}
	r->p++;
	if (st_peek(r) == '}') {
		r->p++;
		return 0;
	}
	do {
		if ((e = st_string(r, key, sizeof key, &len)) < 0 ||
		    (e = st_expect(r, ':', "expected ':'")) < 0)
			return e;
		if (st_peek(r) != '"') {
			if ((e = st_skip(r, 1)) < 0)
				return e;
			return st_fail(r->err, r->errlen, "__metadata__ '%s' is "
				       "not a string", key);
		}
		if ((e = st_string(r, NULL, 0, &len)) < 0)
			return e;
	} while ((e = st_next(r, '}')) > 0);
	return e;
}

/* One pass over the whole header. */
static int
st_read(struct st_reader *r)
{
	char name[ST_NAME_MAX + 2];
	size_t len;
	int e;

	if (st_peek(r) != '{') {
		if ((e = st_skip(r, 0)) < 0)
			return e;
		return st_fail(r->err, r->errlen, "header is not a JSON object");
	}
	r->p++;
	if (st_peek(r) == '}') {
		r->p++;
		e = 0;
	} else {
		do {
			if ((e = st_string(r, name, sizeof name, &len)) < 0 ||
			    (e = st_expect(r, ':', "expected ':'")) < 0)
				return e;
			if (strcmp(name, "__metadata__") == 0)
				e = st_metadata_read(r);
			else
				e = st_tensor_read(r, name, len);
			if (e < 0)
				return e;
		} while ((e = st_next(r, '}')) > 0);
	}
	if (e == 0 && st_peek(r) != 0)
		return st_syntax(r, "data after the object");
	return e;
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

/* Checks that no name comes twice and no two non-empty tensors share a
 * byte; leaves the table sorted by name. */
static int
st_table_check(struct st_table *t, char *err, size_t errlen)
{
	uint64_t end = 0;
	const char *prev = NULL;

	qsort(t->tensors, t->count, sizeof *t->tensors, st_cmp_name);
	for (size_t i = 1; i < t->count; i++)
		if (strcmp(t->tensors[i - 1].name, t->tensors[i].name) == 0)
			return st_fail(err, errlen, "tensor '%s' appears twice",
				       t->tensors[i].name);
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
	qsort(t->tensors, t->count, sizeof *t->tensors, st_cmp_name);
	return 0;
}

int
st_parse(const void *buf, size_t len, uint64_t file_size,
	 struct st_table **out, char *err, size_t errlen)
{
	struct st_table *table = NULL;
	struct st_reader r;
	size_t total;
	int e;

	*out = NULL;
	if ((e = st_header_size(buf, len, file_size, &total, err, errlen)) < 0)
		return e;
	if (len < total)
		return st_fail(err, errlen, "header truncated");
	if (memchr((const char *)buf + 8, '\0', total - 8) != NULL)
		return st_fail(err, errlen, "header contains a NUL byte");
	r = (struct st_reader){
		.start = (const unsigned char *)buf + 8,
		.end = (const unsigned char *)buf + total,
		.data_start = total,
		.data_size = file_size - total,
		.err = err,
		.errlen = errlen,
	};
	r.p = r.start;
	if ((e = st_read(&r)) < 0)
		return e;
	if ((table = calloc(1, sizeof *table)) == NULL ||
	    (table->tensors = calloc(r.count + 1, sizeof *table->tensors)) ==
		    NULL ||
	    (table->names = malloc(r.name_bytes + 1)) == NULL) {
		st_table_free(table);
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	table->data_start = total;
	r.p = r.start;
	r.table = table;
	r.max_count = r.count;
	r.max_name_bytes = r.name_bytes;
	r.count = 0;
	r.name_bytes = 0;
	r.metadata_seen = false;
	e = st_read(&r);
	table->count = r.count;
	if (e == 0)
		e = st_table_check(table, err, errlen);
	if (e < 0) {
		st_table_free(table);
		return e;
	}
	*out = table;
	return 0;
}

void
st_table_free(struct st_table *table)
{
	if (table == NULL)
		return;
	free(table->names);
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
