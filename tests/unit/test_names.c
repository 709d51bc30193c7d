/* SPDX-License-Identifier: MIT */
/*
 * test_names.c - model and instance names, the shared-memory names built
 * from them, and the default socket path.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

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

/*
 * The default path as uid sees it with XDG_RUNTIME_DIR set to xdg (NULL:
 * unset), written by a child that takes uid when it differs from ours.
 */
static void
default_path_as(uid_t uid, const char *xdg, char *out, size_t len)
{
	int p[2], status;
	ssize_t n;
	pid_t pid;

	assert_int_equal(pipe(p), 0);
	assert_true((pid = fork()) >= 0);
	if (pid == 0) {
		char buf[256];

		close(p[0]);
		if (xdg != NULL)
			setenv("XDG_RUNTIME_DIR", xdg, 1);
		else
			unsetenv("XDG_RUNTIME_DIR");
		if ((uid != getuid() && setresuid(uid, uid, uid) < 0) ||
		    mb_default_socket_path(buf, sizeof buf) < 0 ||
		    write(p[1], buf, strlen(buf)) != (ssize_t)strlen(buf))
			_exit(1);
		_exit(0);
	}
	close(p[1]);
	n = read(p[0], out, len - 1);
	close(p[0]);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	assert_true(n > 0);
	out[n] = '\0';
}

static void
test_names_default_socket(void **state)
{
	/* A user other than root: ourselves, or nobody when we are root. */
	uid_t user = getuid() == 0 ? 65534 : getuid();
	char buf[128], want[64], run[32];
	struct stat st;

	(void)state;
	setenv("MBROKER_SOCKET", "/x/y.sock", 1);
	assert_int_equal(mb_default_socket_path(buf, sizeof buf), 0);
	assert_string_equal(buf, "/x/y.sock");
	unsetenv("MBROKER_SOCKET");

	default_path_as(user, "/run/user/5", buf, sizeof buf);
	assert_string_equal(buf, "/run/user/5/mbroker/default.sock");
	/* Without a usable XDG_RUNTIME_DIR: /run/user/<uid> if it is the
	 * user's own directory, else /tmp. */
	snprintf(run, sizeof run, "/run/user/%u", (unsigned)user);
	if (lstat(run, &st) == 0 && S_ISDIR(st.st_mode) && st.st_uid == user)
		snprintf(want, sizeof want, "%s/mbroker/default.sock", run);
	else
		snprintf(want, sizeof want, "/tmp/mbroker-%u/default.sock",
			 (unsigned)user);
	default_path_as(user, NULL, buf, sizeof buf);
	assert_string_equal(buf, want);
	default_path_as(user, "relative", buf, sizeof buf);
	assert_string_equal(buf, want);
	/* Root has a system-wide runtime directory, whatever its session. */
	if (getuid() == 0) {
		default_path_as(0, NULL, buf, sizeof buf);
		assert_string_equal(buf, "/run/mbroker/default.sock");
		default_path_as(0, "/run/user/0", buf, sizeof buf);
		assert_string_equal(buf, "/run/mbroker/default.sock");
	}
	setenv("MBROKER_SOCKET", "/a/much/longer/path.sock", 1);
	assert_int_equal(mb_default_socket_path(buf, 10), -ENAMETOOLONG);
	unsetenv("MBROKER_SOCKET");
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
