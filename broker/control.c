/* SPDX-License-Identifier: MIT */
/*
 * control.c - the control socket: a SOCK_SEQPACKET Unix socket in a
 * directory that is the broker's alone (its uid, not a symlink, 0700, or
 * 0750 for the client group; created so, or refused), created 0600 under
 * a umask (0660 for the client group, if any), a stale socket of a dead
 * broker replaced (a live one, even stopped, is never touched), and its
 * connections accepted (listener.c, which backs off on EMFILE instead of
 * spinning) and handed to conn.c.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "conn.h"
#include "listener.h"
#include "mbrokerd.h"

/* How long accept pauses when the broker is out of descriptors. */
#define CONTROL_BACKOFF_MS 100

static struct {
	int fd;
	struct listener *listener;
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	ino_t ino;
} control = {.fd = -1};

/* A client connected: conn.c takes it. */
static void
control_accepted(int c, void *arg)
{
	(void)arg;
	conn_accept(c);
}

/*
 * Makes sure the socket's directory is ours alone, since whoever can write
 * it can replace the socket: created 0700 (0750 and the client group)
 * when missing.  An existing one must be a real directory (not a symlink)
 * of our uid with exactly that mode and group; it is refused, never
 * changed, since it may hold more than our socket (a home directory,
 * /run).  That includes a 0700 directory systemd's RuntimeDirectory=
 * made when a client group is configured: RuntimeDirectoryMode=0750 and
 * Group= make it right.
 */
static int
control_mkdir(const char *path)
{
	gid_t gid = options_socket_gid(&broker.cfg);
	char dir[sizeof control.path];
	char *slash;
	struct stat st;
	mode_t mode;

	snprintf(dir, sizeof dir, "%s", path);
	if ((slash = strrchr(dir, '/')) == NULL || slash == dir)
		return 0;
	*slash = '\0';
	if (mkdir(dir, 0700) == 0) {
		/* Exactly 0700 whatever the umask or a setgid parent say. */
		if (chmod(dir, 0700) < 0) {
			log_warn("cannot set the mode of %s", dir);
			return -1;
		}
		if (rights_share(dir, -1, 0050) < 0)
			return -1;
	} else if (errno != EEXIST) {
		log_warn("cannot create socket directory %s", dir);
		return -1;
	}
	if (lstat(dir, &st) < 0) {
		log_warn("socket directory %s", dir);
		return -1;
	}
	if (S_ISLNK(st.st_mode)) {
		log_error("socket directory %s is a symlink; refusing to listen "
			  "there", dir);
		return -1;
	}
	if (!S_ISDIR(st.st_mode)) {
		log_error("socket directory %s is not a directory", dir);
		return -1;
	}
	if (st.st_uid != geteuid()) {
		log_error("socket directory %s belongs to uid %ld, not to us "
			  "(uid %ld); refusing to listen there", dir,
			  (long)st.st_uid, (long)geteuid());
		return -1;
	}
	mode = st.st_mode & 07777;
	if (mode & (S_IWGRP | S_IWOTH)) {
		log_error("socket directory %s has mode %04o, writable by "
			  "others; refusing to listen there", dir,
			  (unsigned)mode);
		return -1;
	}
	if (gid == 0 && mode != 0700) {
		log_error("socket directory %s has mode %04o, not 0700; "
			  "refusing to listen there (chmod 0700 it, or remove "
			  "it for the broker to create)", dir, (unsigned)mode);
		return -1;
	}
	if (gid != 0 && (mode != 0750 || st.st_gid != gid)) {
		log_error("socket directory %s has mode %04o and group %ld, not "
			  "0750 and the client group %ld; refusing to listen "
			  "there (chgrp and chmod it, or remove it for the "
			  "broker to create)", dir, (unsigned)mode,
			  (long)st.st_gid, (long)gid);
		return -1;
	}
	return 0;
}

/* Removes a stale socket at path; refuses a live one or a non-socket. */
static int
control_clear_stale(const struct sockaddr_un *sun)
{
	struct stat st;
	int fd, r;

	if (lstat(sun->sun_path, &st) < 0)
		return errno == ENOENT ? 0 : -1;
	if (!S_ISSOCK(st.st_mode)) {
		log_warnx("%s exists and is not a socket; not touching it",
			  sun->sun_path);
		return -1;
	}
	/* Without blocking: a stopped broker's full backlog says EAGAIN. */
	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	r = connect(fd, (const struct sockaddr *)sun, sizeof *sun) == 0 ? 0
									: errno;
	close(fd);
	if (r == 0 || r == EAGAIN) {
		log_error("another broker listens on %s%s", sun->sun_path,
			  r == EAGAIN ? " (it accepts nobody: stopped?)" : "");
		return -1;
	}
	if (unlink(sun->sun_path) < 0) {
		log_warn("cannot remove stale socket %s", sun->sun_path);
		return -1;
	}
	log_info("removed stale socket %s", sun->sun_path);
	return 0;
}

int
control_listen(const char *path)
{
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	struct stat st;
	mode_t old;
	int r;

	if (strlen(path) >= sizeof sun.sun_path) {
		log_error("socket path too long (at most %zu bytes): %s",
			  sizeof sun.sun_path - 1, path);
		return -1;
	}
	strcpy(sun.sun_path, path);
	if (control_mkdir(path) < 0 || control_clear_stale(&sun) < 0)
		return -1;
	control.fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK |
				     SOCK_CLOEXEC, 0);
	if (control.fd < 0) {
		log_warn("socket");
		return -1;
	}
	old = umask(0177);
	r = bind(control.fd, (struct sockaddr *)&sun, sizeof sun);
	umask(old);
	if (r < 0) {
		log_warn("cannot bind %s", path);
		goto fail;
	}
	strcpy(control.path, path);
	if (chmod(path, 0600) < 0 || rights_share(path, -1, 0060) < 0 ||
	    stat(path, &st) < 0 || listen(control.fd, 128) < 0) {
		log_warn("cannot listen on %s", path);
		goto fail;
	}
	control.ino = st.st_ino;
	control.listener = listener_new(control.fd, NULL, CONTROL_BACKOFF_MS,
					control_accepted, NULL);
	if (control.listener == NULL)
		goto fail;
	return 0;
fail:
	control_close();
	return -1;
}

void
control_close(void)
{
	struct stat st;

	listener_free(control.listener);
	control.listener = NULL;
	if (control.fd >= 0)
		close(control.fd);
	control.fd = -1;
	/* Unlink only our own socket, not one a successor bound since. */
	if (control.path[0] != '\0' && stat(control.path, &st) == 0 &&
	    st.st_ino == control.ino && unlink(control.path) < 0)
		log_warn("cannot remove %s", control.path);
	control.path[0] = '\0';
}
