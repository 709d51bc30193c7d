/* SPDX-License-Identifier: MIT */
/*
 * test_names.c - model and instance names, the shared-memory names built
 * from them, and the default socket path.
 */
#include <errno.h>
#include <stdlib.h>

#include "unit.h"

#include "mbroker.h"
#include "names.h"

static void
test_names_model(void **state)
{
	char longest[MB_NAME_MAX + 2];

	(void)state;
	assert_true(names_model_valid("whisper-large_v3.en"));
	assert_true(names_model_valid("a"));
	assert_true(names_model_valid("..."));
	assert_false(names_model_valid(""));
	assert_false(names_model_valid("."));
	assert_false(names_model_valid(".."));
	assert_false(names_model_valid("a/b"));
	assert_false(names_model_valid("a b"));
	assert_false(names_model_valid("caf\xc3\xa9"));
	assert_false(names_model_valid("%s%n"));
	memset(longest, 'x', MB_NAME_MAX);
	longest[MB_NAME_MAX] = '\0';
	assert_true(names_model_valid(longest));
	longest[MB_NAME_MAX] = 'x';
	longest[MB_NAME_MAX + 1] = '\0';
	assert_false(names_model_valid(longest));
}

static void
test_names_instance(void **state)
{
	(void)state;
	assert_true(names_instance_valid("default"));
	assert_true(names_instance_valid("pool_2-b"));
	/* A dot would let one instance's prefix cover another's names. */
	assert_false(names_instance_valid("a.b"));
	assert_false(names_instance_valid(""));
	assert_false(names_instance_valid("123456789012345678901234567890123"));
}

static void
test_names_shm(void **state)
{
	char buf[NAMES_SHM_MAX], tiny[8];

	(void)state;
	assert_int_equal(names_shm(buf, sizeof buf, "default", "ack"), 0);
	assert_string_equal(buf, "/mbroker.default.ack");
	assert_int_equal(names_prefix(buf, sizeof buf, "pool"), 0);
	assert_string_equal(buf, "mbroker.pool.");
	assert_int_equal(names_shm(tiny, sizeof tiny, "default", "ack"),
			 -ENAMETOOLONG);
}

static void
test_names_default_socket(void **state)
{
	char buf[128], want[64];

	(void)state;
	setenv("MBROKER_SOCKET", "/x/y.sock", 1);
	assert_int_equal(mb_default_socket_path(buf, sizeof buf), 0);
	assert_string_equal(buf, "/x/y.sock");
	unsetenv("MBROKER_SOCKET");
	setenv("XDG_RUNTIME_DIR", "relative", 1);
	assert_int_equal(mb_default_socket_path(buf, sizeof buf), 0);
	snprintf(want, sizeof want, "/tmp/mbroker-%u/default.sock",
		 (unsigned)getuid());
	assert_string_equal(buf, want);
	setenv("XDG_RUNTIME_DIR", "/run/user/5", 1);
	assert_int_equal(mb_default_socket_path(buf, sizeof buf), 0);
	assert_string_equal(buf, "/run/user/5/mbroker/default.sock");
	assert_int_equal(mb_default_socket_path(buf, 10), -ENAMETOOLONG);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_names_model),
		cmocka_unit_test(test_names_instance),
		cmocka_unit_test(test_names_shm),
		cmocka_unit_test(test_names_default_socket),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
