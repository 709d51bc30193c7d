/* SPDX-License-Identifier: MIT */
/*
 * test_errors.c - every error code has a message, a symbol and a wire name
 * that maps back to it; system errors are described too.
 */
#include <errno.h>

#include "unit.h"

#include "errors.h"
#include "mbroker.h"

static void
test_errors_table_roundtrip(void **state)
{
	static const int codes[] = {
#define CODE(name, value, wire, msg) MB_E##name,
		MB_ERROR_MAP(CODE)
#undef CODE
	};

	(void)state;
	for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++) {
		assert_true(codes[i] < -1000);
		assert_int_equal(errors_from_wire(errors_wire_name(codes[i])),
				 codes[i]);
		assert_true(strncmp(mb_err_name(codes[i]), "MB_E", 4) == 0);
		assert_true(strlen(mb_strerror(codes[i])) > 5);
	}
}

static void
test_errors_named(void **state)
{
	(void)state;
	assert_string_equal(mb_err_name(MB_ENOMODEL), "MB_ENOMODEL");
	assert_string_equal(errors_wire_name(MB_ENOMODEL), "unknown_model");
	assert_string_equal(mb_strerror(MB_ETIMEOUT),
			    "workers did not release in time");
	assert_string_equal(mb_err_name(-ENOENT), "ENOENT");
	assert_string_equal(mb_strerror(-ENOENT), "No such file or directory");
	assert_string_equal(mb_strerror(0), "success");
	assert_string_equal(mb_strerror(12345), "unknown error");
	assert_string_equal(mb_err_name(12345), "UNKNOWN");
	assert_int_equal(errors_from_wire("no_such_code"), MB_EPROTOCOL);
	assert_string_equal(errors_wire_name(-ENOENT), "internal");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_errors_table_roundtrip),
		cmocka_unit_test(test_errors_named),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
