/* SPDX-License-Identifier: MIT */
/*
 * test_options.c - mbrokerd's command line: defaults, every option, and a
 * clear message (with exit status 2 from main) for every bad value.
 */
#include <signal.h>
#include <stdlib.h>

#include "unit.h"

#include "mbrokerd.h"

static char out_buf[8192], err_buf[8192];
static struct config cfg;

static enum options_result
parse(int argc, const char **argv)
{
	FILE *out = fmemopen(out_buf, sizeof out_buf, "w");
	FILE *err = fmemopen(err_buf, sizeof err_buf, "w");
	enum options_result r;

	memset(out_buf, 0, sizeof out_buf);
	memset(err_buf, 0, sizeof err_buf);
	options_free(&cfg);
	r = options_parse(argc, (char **)(uintptr_t)argv, &cfg, out, err);
	fclose(out);
	fclose(err);
	return r;
}

#define PARSE(...)                                                            \
	parse(sizeof((const char *[]){"mbrokerd", __VA_ARGS__}) /             \
		      sizeof(const char *),                                   \
	      (const char *[]){"mbrokerd", __VA_ARGS__})

static void
expect_usage(enum options_result r, const char *message)
{
	assert_int_equal(r, OPTIONS_USAGE);
	if (strstr(err_buf, message) == NULL)
		fail_msg("stderr '%s' lacks '%s'", err_buf, message);
}

static void
test_options_defaults(void **state)
{
	const char *argv[] = {"mbrokerd"};
	char want[128];

	(void)state;
	unsetenv("MBROKER_SOCKET");
	unsetenv("XDG_RUNTIME_DIR");
	assert_int_equal(parse(1, argv), OPTIONS_RUN);
	/* The path libmbroker and mbctl use too (test_names says which). */
	assert_int_equal(mb_default_socket_path(want, sizeof want), 0);
	assert_string_equal(cfg.socket_path, want);
	assert_string_equal(cfg.instance, "default");
	assert_int_equal(cfg.shutdown_timeout_ms, 10000);
	assert_int_equal(cfg.unload_signal, SIGUSR1);
	assert_int_equal(cfg.kill_after_ms, 0);
	assert_int_equal(cfg.max_shm_bytes, 0);
	assert_int_equal(cfg.load_rate, 0);
	assert_int_equal(cfg.max_message, 65536);
	assert_int_equal(cfg.max_conns, 1024);
	assert_int_equal(cfg.idle_timeout_ms, 10000);
	assert_int_equal(cfg.allow_gid, 0);
	assert_int_equal(cfg.nmodel_dirs, 0);
	assert_int_equal(cfg.npreloads, 0);
	assert_false(cfg.daemonize);
	setenv("MBROKER_SOCKET", "/srv/mb.sock", 1);
	assert_int_equal(parse(1, argv), OPTIONS_RUN);
	assert_string_equal(cfg.socket_path, "/srv/mb.sock");
	assert_string_equal(cfg.pid_file, "/srv/mb.sock.pid");
	unsetenv("MBROKER_SOCKET");
	unsetenv("XDG_RUNTIME_DIR");
}

static void
test_options_all(void **state)
{
	(void)state;
	assert_int_equal(PARSE("--socket", "/s/b.sock", "--instance", "pool_1",
			       "--model", "a=/m/a.bin", "--model",
			       "whisper.large-v3=/m/w.safetensors",
			       "--shutdown-timeout", "2.5", "--signal", "SIGUSR2",
			       "--log-level", "debug", "--daemon", "--pid-file",
			       "/run/b.pid", "--kill-after", "0.5",
			       "--max-shm-bytes", "4G", "--load-rate", "512MiB",
			       "--model-dir", "/models", "--model-dir", "/srv/m",
			       "--max-message", "32K", "--max-connections", "5",
			       "--idle-timeout", "2", "--allow-gid", "4242",
			       "--admin-gid", "daemon", "--admin-gid", "4343"),
			 OPTIONS_RUN);
	assert_string_equal(cfg.socket_path, "/s/b.sock");
	assert_string_equal(cfg.instance, "pool_1");
	assert_int_equal(cfg.npreloads, 2);
	assert_string_equal(cfg.preloads[1].name, "whisper.large-v3");
	assert_string_equal(cfg.preloads[1].path, "/m/w.safetensors");
	assert_int_equal(cfg.shutdown_timeout_ms, 2500);
	assert_int_equal(cfg.unload_signal, SIGUSR2);
	assert_int_equal(cfg.log_level, LOG_LEVEL_DEBUG);
	assert_true(cfg.daemonize);
	assert_string_equal(cfg.pid_file, "/run/b.pid");
	assert_int_equal(cfg.kill_after_ms, 500);
	assert_int_equal(cfg.max_shm_bytes, 4ull << 30);
	assert_int_equal(cfg.load_rate, 512ull << 20);
	assert_int_equal(cfg.nmodel_dirs, 2);
	assert_string_equal(cfg.model_dirs[1], "/srv/m");
	assert_int_equal(cfg.max_message, 32 << 10);
	assert_int_equal(cfg.max_conns, 5);
	assert_int_equal(cfg.idle_timeout_ms, 2000);
	assert_int_equal(cfg.allow_gid, 4242);
	assert_int_equal(cfg.admin_gid, 4343);
	assert_int_equal(PARSE("--allow-gid", "daemon"), OPTIONS_RUN);
	assert_int_equal(cfg.allow_gid, 1); /* Debian's daemon group */
}

static void
test_options_bad_values(void **state)
{
	(void)state;
	expect_usage(PARSE("--instance", "a.b"), "invalid instance name 'a.b'");
	expect_usage(PARSE("--instance", ""), "invalid instance name");
	expect_usage(PARSE("--model", "nopath"), "wants NAME=PATH");
	expect_usage(PARSE("--model", "x="), "wants NAME=PATH");
	expect_usage(PARSE("--model", "../x=/m"), "invalid model name '../x'");
	expect_usage(PARSE("--model", "..=/m"), "invalid model name '..'");
	expect_usage(PARSE("--shutdown-timeout", "-1"), "wants seconds >= 0");
	expect_usage(PARSE("--shutdown-timeout", "ten"), "wants seconds >= 0");
	expect_usage(PARSE("--shutdown-timeout", "nan"), "wants seconds >= 0");
	expect_usage(PARSE("--signal", "KILL"), "unknown signal 'KILL'");
	expect_usage(PARSE("--log-level", "loud"), "unknown log level 'loud'");
	expect_usage(PARSE("--socket", "relative.sock"), "absolute path");
	expect_usage(PARSE("--bogus"), "unknown or incomplete option '--bogus'");
	expect_usage(PARSE("--socket"), "unknown or incomplete option");
	expect_usage(PARSE("extra"), "unexpected argument 'extra'");
	expect_usage(PARSE("--kill-after", "soon"), "--kill-after wants seconds");
	expect_usage(PARSE("--kill-after", "0"), "--kill-after wants seconds > 0");
	expect_usage(PARSE("--model-dir", "models"), "--model-dir must be an absolute");
	expect_usage(PARSE("--max-message", "100"), "--max-message wants 1K to 160K");
	expect_usage(PARSE("--max-message", "1M"), "--max-message wants 1K to 160K");
	expect_usage(PARSE("--max-connections", "0"), "--max-connections wants 1");
	expect_usage(PARSE("--idle-timeout", "0"), "--idle-timeout wants seconds > 0");
	expect_usage(PARSE("--allow-gid", "0"), "--allow-gid wants a group name");
	expect_usage(PARSE("--admin-gid", "no-such-group-here"),
		     "--admin-gid wants a group name");
	expect_usage(PARSE("--max-shm-bytes", "0"), "wants a byte count > 0");
	expect_usage(PARSE("--load-rate", "fast"), "--load-rate wants a byte count");
}

static void
test_options_help_and_version(void **state)
{
	(void)state;
	assert_int_equal(PARSE("--help"), OPTIONS_EXIT_OK);
	assert_non_null(strstr(out_buf, "--shutdown-timeout SECS"));
	assert_int_equal(PARSE("--version"), OPTIONS_EXIT_OK);
	assert_non_null(strstr(out_buf, "mbrokerd " MB_VERSION_STRING));
}

static void
test_options_seconds(void **state)
{
	(void)state;
	assert_int_equal(options_seconds_ms("0"), 0);
	assert_int_equal(options_seconds_ms("0.0015"), 2);
	assert_int_equal(options_seconds_ms("10"), 10000);
	assert_int_equal(options_seconds_ms("1e3"), 1000000);
	assert_int_equal(options_seconds_ms("inf"), -1);
	assert_int_equal(options_seconds_ms("3s"), -1);
	assert_int_equal(options_seconds_ms(""), -1);
}

static void
test_options_bytes(void **state)
{
	(void)state;
	assert_int_equal(options_bytes("0"), 0);
	assert_int_equal(options_bytes("1234"), 1234);
	assert_int_equal(options_bytes("1234B"), 1234);
	assert_int_equal(options_bytes("2K"), 2048);
	assert_int_equal(options_bytes("3MiB"), 3 << 20);
	assert_int_equal(options_bytes("5GB"), 5ll << 30);
	assert_int_equal(options_bytes("1T"), 1ll << 40);
	assert_int_equal(options_bytes("1iB"), -1);
	assert_int_equal(options_bytes("-1"), -1);
	assert_int_equal(options_bytes("12Q"), -1);
	assert_int_equal(options_bytes("M"), -1);
	assert_int_equal(options_bytes("99999999999999999999"), -1);
	assert_int_equal(options_bytes("9999999999T"), -1);
}

static int
teardown(void **state)
{
	(void)state;
	options_free(&cfg);
	return 0;
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_options_defaults),
		cmocka_unit_test(test_options_all),
		cmocka_unit_test(test_options_bad_values),
		cmocka_unit_test(test_options_help_and_version),
		cmocka_unit_test(test_options_seconds),
		cmocka_unit_test(test_options_bytes),
	};

	return cmocka_run_group_tests(tests, NULL, teardown);
}
