/* SPDX-License-Identifier: MIT */
/*
 * mbrokerd.c - the broker process: main, start-up (instance lock, removal
 * of what a dead broker left, control socket, preloads), signals, the
 * optional detach for init scripts, and the final teardown that removes
 * every name the broker created.  SIGTERM and SIGINT start the orderly
 * shutdown (shutdown.c); a SIGINT during a shutdown stops waiting for
 * workers.
 */
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "mbrokerd.h"
#include "segment.h"
#include "conn.h"
#include "loader.h"
#include "ops.h"
#include "registry.h"
#include "request.h"

static struct event *mbrokerd_signals[4];

static void
mbrokerd_signal(evutil_socket_t sig, short what, void *arg)
{
	(void)what;
	(void)arg;
	switch (sig) {
	case SIGINT:
		/* An interrupt during any shutdown: stop waiting. */
		if (broker.shutting_down) {
			shutdown_force();
			return;
		}
		shutdown_begin(broker.cfg.shutdown_timeout_ms, NULL, NULL,
			       "on SIGINT");
		break;
	case SIGTERM:
		shutdown_begin(broker.cfg.shutdown_timeout_ms, NULL, NULL,
			       "on SIGTERM");
		break;
	default:
		log_debug("signal %d ignored", (int)sig);
		break;
	}
}

static int
mbrokerd_signals_init(void)
{
	static const int sigs[] = {SIGINT, SIGTERM, SIGHUP, SIGUSR1};

	signal(SIGPIPE, SIG_IGN);
	for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) {
		mbrokerd_signals[i] = evsignal_new(broker.base, sigs[i],
						   mbrokerd_signal, NULL);
		if (mbrokerd_signals[i] == NULL ||
		    event_add(mbrokerd_signals[i], NULL) < 0)
			return -1;
	}
	return 0;
}

/* A random part for this broker's segment names (CVE-2019-12779). */
static void
mbrokerd_token(void)
{
	uint32_t r = 0;

	if (getrandom(&r, sizeof r, 0) != sizeof r)
		r = (uint32_t)getpid() ^ (uint32_t)clock_monotonic_ms();
	snprintf(broker.token, sizeof broker.token, "%08x", r);
}

/*
 * Raises the descriptor limit to its hard limit and checks that it holds
 * every connection at its worst (CONN_FDS_EACH) and the reserve.  The
 * unread descriptors of a non-root broker's clients are charged to that
 * limit too (unix(7)), CONN_MAX_FDS each at most.  A default
 * --max-connections that does not fit is lowered, one given is refused.
 * Returns 0, or -1 logged.
 */
static int
mbrokerd_descriptors(void)
{
	struct config *cfg = &broker.cfg;
	struct rlimit rl;
	rlim_t was, room;
	unsigned want;

	if (rlimit_raise(RLIMIT_NOFILE, "RLIMIT_NOFILE", &rl, &was) < 0)
		return -1;
	room = rl.rlim_cur > BROKER_FD_RESERVE
		       ? (rl.rlim_cur - BROKER_FD_RESERVE) / CONN_FDS_EACH
		       : 0;
	want = cfg->max_conns_set ? cfg->max_conns : 1;
	if (room < want) {
		log_error("RLIMIT_NOFILE is %llu (hard limit %llu) but %u "
			  "connection(s) need %llu descriptors (%d each and %d "
			  "kept for models): raise the limit (ulimit -n, "
			  "LimitNOFILE=)%s", (unsigned long long)rl.rlim_cur,
			  (unsigned long long)rl.rlim_max, want,
			  (unsigned long long)want * CONN_FDS_EACH +
				  BROKER_FD_RESERVE,
			  CONN_FDS_EACH, BROKER_FD_RESERVE,
			  cfg->max_conns_set ? " or lower --max-connections"
					     : "");
		return -1;
	}
	if (room < cfg->max_conns) {
		log_warnx("--max-connections lowered from %u to %llu to fit "
			  "RLIMIT_NOFILE %llu", cfg->max_conns,
			  (unsigned long long)room,
			  (unsigned long long)rl.rlim_cur);
		cfg->max_conns = (unsigned)room;
	}
	log_info("descriptors: RLIMIT_NOFILE %llu (was %llu, hard limit "
		 "%llu), %u connection(s) of %d each, %d kept for models",
		 (unsigned long long)rl.rlim_cur, (unsigned long long)was,
		 (unsigned long long)rl.rlim_max, cfg->max_conns, CONN_FDS_EACH,
		 BROKER_FD_RESERVE);
	return 0;
}

/*
 * --daemon: the parent waits until the child listens (or fails) and exits
 * with that outcome, so an init script knows the broker is up.  Returns the
 * write end of the readiness pipe in the child.
 */
static int
mbrokerd_daemonize(void)
{
	int pipefd[2], status, null;
	char ok;
	pid_t pid;

	if (pipe2(pipefd, O_CLOEXEC) < 0)
		fatalx("pipe: %s", strerror(errno));
	if ((pid = fork()) < 0)
		fatalx("fork: %s", strerror(errno));
	if (pid > 0) {
		close(pipefd[1]);
		if (read(pipefd[0], &ok, 1) == 1)
			_exit(0);
		if (waitpid(pid, &status, 0) == pid && WIFEXITED(status))
			_exit(WEXITSTATUS(status));
		_exit(2);
	}
	close(pipefd[0]);
	if (setsid() < 0)
		log_warn("setsid");
	if ((null = open("/dev/null", O_RDWR | O_CLOEXEC)) >= 0) {
		dup2(null, STDIN_FILENO);
		dup2(null, STDOUT_FILENO);
		close(null);
	}
	return pipefd[1];
}

/* Whether the pid file is ours to remove at exit. */
static bool mbrokerd_pid_written;

/* Writes --pid-file; 0, or -1 logged (the start then fails). */
static int
mbrokerd_pid_file(void)
{
	FILE *f = fopen(broker.cfg.pid_file, "we");
	int r;

	if (f == NULL) {
		log_error("cannot write pid file %s: %s", broker.cfg.pid_file,
			  strerror(errno));
		return -1;
	}
	mbrokerd_pid_written = true;
	r = fprintf(f, "%ld\n", (long)getpid());
	if (fclose(f) != 0 || r < 0) {
		log_error("cannot write pid file %s: %s", broker.cfg.pid_file,
			  strerror(errno));
		return -1;
	}
	return 0;
}

/* Starts loading the --model preloads; a model that cannot be read ends
 * in ERROR, as if loaded on request.  0, or -1 when one cannot start. */
static int
mbrokerd_preload(void)
{
	for (size_t i = 0; i < broker.cfg.npreloads; i++) {
		const struct preload *p = &broker.cfg.preloads[i];
		struct load_request lr = {
			.reason = REASON_PRELOAD,
			.keep_alive_ms = LOAD_KEEP_ALIVE_DEFAULT,
		};
		char path[PATH_MAX];

		if (registry_find(p->name) != NULL) {
			log_warnx("--model %s given twice; the first wins",
				  p->name);
			continue;
		}
		if (realpath(p->path, path) == NULL) {
			log_warn("--model %s: %s", p->name, p->path);
			snprintf(path, sizeof path, "%s", p->path);
		}
		lr.path = path;
		lr.provider = provider_auto(path);
		if (load_begin(p->name, &lr, NULL, NULL) < 0) {
			log_error("--model %s: cannot start its load", p->name);
			return -1;
		}
	}
	return 0;
}

/* Removes every name and frees everything; returns the exit status. */
static int
mbrokerd_teardown(void)
{
	conn_flush_all(500);
	conn_close_all();
	registry_clear();
	control_close();
	mirror_shutdown();
	unload_shutdown();
	residency_shutdown();
	loader_shutdown();
	modeldir_shutdown();
	notify_shutdown();
	metrics_shutdown();
	for (size_t i = 0; i < sizeof mbrokerd_signals / sizeof
				   mbrokerd_signals[0]; i++)
		if (mbrokerd_signals[i] != NULL)
			event_free(mbrokerd_signals[i]);
	if (mbrokerd_pid_written)
		unlink(broker.cfg.pid_file);
	instance_unlock();
	if (broker.base != NULL)
		event_base_free(broker.base);
	shutdown_free();
	options_free(&broker.cfg);
	return broker.exit_code;
}

int
main(int argc, char **argv)
{
	int ready = -1, r;

	/* A fixed threshold: every block of 1 MiB or more (a safetensors
	 * table, a header being read) is its own mapping, returned to the
	 * system when freed.  glibc's default raises the threshold after such
	 * frees, and the next tables then stay resident in a loader thread's
	 * arena after their model is unloaded. */
	mallopt(M_MMAP_THRESHOLD, 1 << 20);
	switch (options_parse(argc, argv, &broker.cfg, stdout, stderr)) {
	case OPTIONS_EXIT_OK:
		return 0;
	case OPTIONS_USAGE:
		return 2;
	case OPTIONS_RUN:
		break;
	}
	log_init(broker.cfg.log_level);
	log_set_json(broker.cfg.log_json);
	broker.started_ms = clock_monotonic_ms();
	request_init();
	mbrokerd_token();
	if (mbrokerd_descriptors() < 0 ||
	    (broker.cfg.lock && segment_lock_init() < 0))
		return 2;
	if ((r = instance_lock(broker.cfg.instance)) != 0)
		return 2;
	instance_clean_stale(broker.cfg.instance, "/dev/shm");
	if (broker.cfg.shm_dir != NULL)
		instance_clean_stale(broker.cfg.instance, broker.cfg.shm_dir);
	if (broker.cfg.daemonize)
		ready = mbrokerd_daemonize();
	if ((broker.base = event_base_new()) == NULL ||
	    mbrokerd_signals_init() < 0 || notify_init() < 0 ||
	    metrics_init() < 0 ||
	    modeldir_init() < 0 ||
	    loader_init() < 0 ||
	    unload_init() < 0 || residency_init() < 0 || mirror_init() < 0 ||
	    control_listen(broker.cfg.socket_path) < 0) {
		log_error("start-up failed; removing what was created");
		mbrokerd_teardown();
		return 2;
	}
	/* After --daemon, so the lock names the process that serves. */
	if (instance_record_pid() < 0 ||
	    (broker.cfg.daemonize && mbrokerd_pid_file() < 0)) {
		log_error("start-up failed; removing what was created");
		mbrokerd_teardown();
		return 2;
	}
	log_info("mbrokerd %s listening on %s (instance %s, protocol %d, "
		 "shutdown timeout %.1f s)", MB_VERSION_STRING,
		 broker.cfg.socket_path, broker.cfg.instance,
		 MB_PROTOCOL_VERSION, broker.cfg.shutdown_timeout_ms / 1000.0);
	if (mbrokerd_preload() < 0) {
		/* Loads may be running: end them the orderly way. */
		broker.exit_code = 2;
		shutdown_begin(0, NULL, NULL, "after a failed start");
	} else {
		notify_ready_check();
	}
	if (broker.exit_code == 0 && ready >= 0) {
		if (write(ready, "", 1) != 1)
			log_warn("cannot tell the parent we are ready");
		close(ready);
	}
	event_base_dispatch(broker.base);
	r = mbrokerd_teardown();
	log_info("exiting with status %d", r);
	return r;
}
