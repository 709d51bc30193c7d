/* SPDX-License-Identifier: MIT */
/*
 * errors.c - text, symbolic names and wire names of mbroker's error codes,
 * all generated from the one MB_ERROR_MAP in include/mbroker.h.
 */
#include <string.h>

#include "mbroker.h"
#include "errors.h"

struct error_entry {
	int code;
	const char *symbol;
	const char *wire;
	const char *message;
};

static const struct error_entry error_table[] = {
#define ERROR_ENTRY(name, value, wire, msg) {value, "MB_E" #name, wire, msg},
	MB_ERROR_MAP(ERROR_ENTRY)
#undef ERROR_ENTRY
};

static const struct error_entry *
errors_find(int err)
{
	for (size_t i = 0; i < sizeof error_table / sizeof error_table[0]; i++)
		if (error_table[i].code == err)
			return &error_table[i];
	return NULL;
}

/* Static text for an MB_E* code or a -errno value. */
const char *
mb_strerror(int err)
{
	const struct error_entry *e = errors_find(err);

	if (e != NULL)
		return e->message;
	if (err == 0)
		return "success";
	if (err < 0 && err > -4096)
		return strerrordesc_np(-err) ? strerrordesc_np(-err)
					     : "unknown system error";
	return "unknown error";
}

/* Static symbolic name for an MB_E* code or a -errno value. */
const char *
mb_err_name(int err)
{
	const struct error_entry *e = errors_find(err);

	if (e != NULL)
		return e->symbol;
	if (err == 0)
		return "OK";
	if (err < 0 && err > -4096 && strerrorname_np(-err) != NULL)
		return strerrorname_np(-err);
	return "UNKNOWN";
}

const char *
errors_wire_name(int err)
{
	const struct error_entry *e = errors_find(err);

	return e != NULL ? e->wire : "internal";
}

int
errors_from_wire(const char *wire)
{
	for (size_t i = 0; i < sizeof error_table / sizeof error_table[0]; i++)
		if (strcmp(error_table[i].wire, wire) == 0)
			return error_table[i].code;
	return MB_EPROTOCOL;
}
