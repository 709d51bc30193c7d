/* SPDX-License-Identifier: MIT */
/*
 * names.c - validation of model and instance names, the shared-memory names
 * built from them, and the default control socket path (a runtime
 * directory of the user's own; /tmp only when there is none).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mbroker.h"
#include "names.h"

static bool
names_charset_valid(const char *name, size_t max, const char *extra)
{
	size_t len = strlen(name);

	if (len == 0 || len > max)
		return false;
	for (size_t i = 0; i < len; i++) {
		char c = name[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		      (c >= '0' && c <= '9') || strchr(extra, c) != NULL))
			return false;
	}
	return true;
}

bool
names_model_valid(const char *name)
{
	if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
		return false;
	return names_charset_valid(name, MB_NAME_MAX, "._-");
}

bool
names_instance_valid(const char *name)
{
	return names_charset_valid(name, NAMES_INSTANCE_MAX, "_-");
}

int
names_shm(char *buf, size_t len, const char *instance, const char *suffix)
{
	int n = snprintf(buf, len, "/mbroker.%s.%s", instance, suffix);

	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

int
names_prefix(char *buf, size_t len, const char *instance)
{
	int n = snprintf(buf, len, "mbroker.%s.", instance);

	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

/* Whether /run/user/<uid> is there and is the user's own. */
static bool
names_run_user(char *buf, size_t len, uid_t uid)
{
	struct stat st;
	int n = snprintf(buf, len, "/run/user/%u", (unsigned)uid);

	return n > 0 && (size_t)n < len && lstat(buf, &st) == 0 &&
	       S_ISDIR(st.st_mode) && st.st_uid == uid;
}

int
mb_default_socket_path(char *buf, size_t len)
{
	const char *env = getenv("MBROKER_SOCKET");
	uid_t uid = getuid();
	char run[64];
	int n;

	if (env != NULL && env[0] != '\0')
		n = snprintf(buf, len, "%s", env);
	else if (uid == 0)
		n = snprintf(buf, len, "/run/mbroker/default.sock");
	else if ((env = getenv("XDG_RUNTIME_DIR")) != NULL && env[0] == '/')
		n = snprintf(buf, len, "%s/mbroker/default.sock", env);
	else if (names_run_user(run, sizeof run, uid))
		n = snprintf(buf, len, "%s/mbroker/default.sock", run);
	else
		n = snprintf(buf, len, "/tmp/mbroker-%u/default.sock",
			     (unsigned)uid);
	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}
