/* SPDX-License-Identifier: MIT */
/*
 * mbrokerd.h - what every part of the broker shares: the configuration,
 * logging, the event base and the small services that own no model state
 * (options, model directories, metrics, sd_notify, the ack semaphore, peer
 * identity, rights, the instance lock, the registry mirror).  The layers
 * that own state have headers of their own (docs/design.md draws them):
 * request.h -> ops.h -> registry.h, lease.h -> segment.h, with conn.h and
 * reply.h below the requests.  Only the broker includes these; workers
 * see include/mbroker.h alone.
 *
 * Threads: everything belongs to the main (libevent) thread, except a load
 * job while its loader thread runs and the ackwait waiter thread, which
 * touch only what their own files say.
 */
#ifndef MBROKERD_H
#define MBROKERD_H

#include <limits.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/queue.h>
#include <sys/resource.h>
#include <sys/types.h>

#include <event2/event.h>
#include <jansson.h>

#include "clock.h"
#include "mbroker.h"
#include "names.h"

/* Most models the registry holds at once. */
#define BROKER_MAX_MODELS 256
/* Most messages, and most bytes of them, queued for one slow client
 * before it is dropped: the bytes bound what 1024 clients that never read
 * can cost (256 replies of 160 KiB each would be 40 MiB a client). */
#define CONN_MAX_QUEUED 256
#define CONN_MAX_QUEUED_BYTES (512 * 1024)
/* Most segment descriptors one client may have unread, queued in the
 * broker or in flight in its socket, before it is dropped. */
#define CONN_MAX_FDS 16
/* Descriptors one connection costs the broker at most: its socket, its
 * pidfd and CONN_MAX_FDS queued. */
#define CONN_FDS_EACH (2 + CONN_MAX_FDS)
/* Most segments the broker holds at once, of all models and generations
 * (a bundle has one per file). */
#define BROKER_MAX_SEGMENTS 2048
/* Descriptors kept apart from connections: the broker's own (event base,
 * sockets, pipes, semaphore, mirror, metrics), one per segment, two per
 * model for a load (its source file or directory and a member), and the
 * directories a bundle's walk holds open (one per level; a member name of
 * BUNDLE_NAME_MAX bytes has at most 128). */
#define BROKER_FD_RESERVE (64 + BROKER_MAX_SEGMENTS + 2 * BROKER_MAX_MODELS \
			   + 128)

/* rlimit.c */
/* Reads resource's limit into *rl and raises its soft limit to the hard
 * one (a refusal logged, the limit kept); *was: the soft limit before.
 * 0, or -1 when it cannot be read (logged). */
int rlimit_raise(int resource, const char *name, struct rlimit *rl,
		 rlim_t *was);

/* log.c */
enum log_level { LOG_LEVEL_ERROR, LOG_LEVEL_WARN, LOG_LEVEL_INFO, LOG_LEVEL_DEBUG };
void log_init(enum log_level level);
/* One JSON object per line instead of text. */
void log_set_json(bool json);
int log_level_parse(const char *name, enum log_level *out);
void log_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_warnx(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
__attribute__((noreturn)) void fatalx(const char *fmt, ...)
	__attribute__((format(printf, 1, 2)));

/* options.c */
/* When a replace's two copies do not fit (load.c). */
enum replace_policy {
	REPLACE_AVAILABILITY, /* two copies at once, or no_space */
	REPLACE_RESOURCE,     /* unload first when two do not fit: a gap */
};

struct preload {
	char name[MB_NAME_MAX + 1];
	char path[PATH_MAX];
};

struct config {
	char socket_path[PATH_MAX];
	char instance[NAMES_INSTANCE_MAX + 1];
	struct preload *preloads;
	size_t npreloads;
	char **model_dirs;
	size_t nmodel_dirs;
	const char *shm_dir; /* NULL: /dev/shm through shm_open */
	const char *metrics_listen; /* ADDR:PORT, or NULL */
	int64_t shutdown_timeout_ms;
	int64_t kill_after_ms; /* 0: never */
	uint64_t max_shm_bytes; /* 0: no budget beyond /dev/shm's free space */
	bool lock;              /* --lock: segments' pages locked in memory */
	uint64_t load_rate;     /* bytes per second, 0: as fast as possible */
	bool keep_file_cache;   /* leave a loaded file's pages cached */
	size_t max_message;     /* largest request accepted, bytes */
	unsigned max_conns;     /* most client connections at once */
	bool max_conns_set;     /* given on the command line */
	int64_t idle_timeout_ms; /* to say hello after connecting */
	gid_t allow_gid;        /* may use models; 0: no such group */
	gid_t admin_gid;        /* may also administer; 0: none */
	enum log_level log_level;
	bool log_json;
	bool daemonize;
	char pid_file[PATH_MAX];
	int unload_signal;
	enum replace_policy replace_policy;
	bool autoload;         /* an attach loads a catalog model */
	int64_t keep_alive_ms; /* idle time before an unload; -1: never */
	char **pins;           /* --pin names */
	size_t npins;
};
/* What options_parse asks of its caller. */
enum options_result { OPTIONS_RUN, OPTIONS_EXIT_OK, OPTIONS_USAGE };
enum options_result options_parse(int argc, char **argv, struct config *cfg,
				  FILE *out, FILE *err);
void options_free(struct config *cfg);
/* Parses "availability" or "resource"; 0, or -1 when neither. */
int options_replace_policy(const char *text, enum replace_policy *out);
/* Parses seconds ("10", "0.5") into milliseconds; -1 when invalid. */
int64_t options_seconds_ms(const char *text);
/* Parses a byte count ("1073741824", "512M", "4GiB"); -1 when invalid. */
int64_t options_bytes(const char *text);
/* The group clients share the socket and mirror through, or 0. */
gid_t options_socket_gid(const struct config *cfg);

/* modeldir.c */
/* Opens the --model-dir directories.  0, or -1 logged. */
int modeldir_init(void);
void modeldir_shutdown(void);
/* Whether path names a file under a --model-dir (or none is set). */
bool modeldir_allows(const char *path);
/* Opens path with flags, beneath its --model-dir if any are set.  Returns
 * a descriptor, MB_EDENIED or -errno, with a reason in err.  Thread-safe. */
int modeldir_open(const char *path, int flags, char *err, size_t errlen);
/* The size of the regular file at path (opened as modeldir_open does,
 * never blocking on a FIFO), or -1. */
int64_t modeldir_file_size(const char *path);

/* metrics.c */
/* Serves GET /metrics on --metrics-listen, if set.  0, or -1 logged. */
int metrics_init(void);
void metrics_shutdown(void);

/* notify.c */
/* Reads $NOTIFY_SOCKET and $WATCHDOG_USEC; 0, or -1. */
int notify_init(void);
/* Sends one sd_notify message (nothing without $NOTIFY_SOCKET). */
void notify_send(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Sends READY=1 once no model is loading any more (the first time). */
void notify_ready_check(void);
void notify_shutdown(void);

/* meminfo.c */
/* Shmem from /proc/meminfo in kB, or -1. */
int64_t meminfo_shmem_kb(void);

/* provider.c, provider_raw.c, provider_safetensors.c */
struct provider {
	const char *name;
	/* Checks the file before it is copied; 0 or MB_EFORMAT + reason. */
	int (*probe)(int fd, uint64_t size, char *err, size_t errlen);
	/* Validates the copied bytes; may set *state.  0 or MB_E*. */
	int (*load)(const void *data, uint64_t size, void **state,
		    size_t *ntensors, char *err, size_t errlen);
	/* Releases what load set up; 0 or -1 (logged, unload goes on). */
	int (*unload)(void *state);
};
extern const struct provider provider_raw;
extern const struct provider provider_safetensors;
extern const struct provider provider_bundle;
/* The provider called name ("raw", "safetensors", "bundle"), or NULL. */
const struct provider *provider_find(const char *name);
/* The provider a path implies: safetensors for *.safetensors, else raw. */
const struct provider *provider_for_path(const char *path);
/* The format "auto" gives path: a directory is a bundle, else by its
 * name (provider_for_path). */
const struct provider *provider_auto(const char *path);

/* ackwait.c */
/* Creates the ack semaphore and its waiter thread; wake runs in the main
 * loop whenever the semaphore is posted or the armed deadline passes. */
int ackwait_init(void (*wake)(void));
/* Waits for posts until deadline_ms (monotonic); -1 disarms. */
void ackwait_arm(int64_t deadline_ms);
/* Stops the thread, closes and unlinks the semaphore. */
void ackwait_shutdown(void);
const char *ackwait_name(void);

/* peer.c */
/* A pidfd of the process at the other end of the Unix socket fd, whose
 * SO_PEERCRED said pid and uid; or -1 with the reason in *why (a static
 * string) when that process cannot be identified for certain. */
int peer_pidfd(int fd, pid_t pid, uid_t uid, const char **why);

/* control.c */
/* Listens on path (stale socket replaced, 0600).  0, or -1 logged. */
int control_listen(const char *path);
void control_close(void);

/* rights.c */
/* What a peer may do; each request needs one. */
enum right {
	RIGHT_NONE = 0,       /* hello, ping */
	RIGHT_USE = 1 << 0,   /* attach, detach, ack, list, stats, workers */
	RIGHT_ADMIN = 1 << 1, /* load, unload, shutdown */
};
/* The rights of the peer on fd, from SO_PEERCRED and SO_PEERGROUPS. */
unsigned rights_of_peer(int fd, uid_t uid, gid_t gid);
const char *rights_name(unsigned right);
/* Gives the client group access to a name the broker created (mode for
 * the group: r or rw); 0, or -1 logged. */
int rights_share(const char *path, int fd, mode_t group_mode);

/* instance.c */
/* Takes the instance lock; 0, or 2 when another broker holds it, -1. */
int instance_lock(const char *instance);
/* Removes what a dead broker of this instance left in dir. */
void instance_clean_stale(const char *instance, const char *dir);
/* Lets the lock name this process as its holder (after --daemon) to
 * every newcomer, answered from the event loop.  0, or -1 logged. */
int instance_record_pid(void);
/* Releases the lock; before event_base_free. */
void instance_unlock(void);

/* mirror.c */
/* Creates the mirror with every page reserved.  0, or -1 logged. */
int mirror_init(void);
/* Marks model slot for a rewrite in the mirror soon (from the registry);
 * the broker's own record is rewritten then too if it changed. */
void mirror_model_changed(unsigned slot);
/* Rewrites a holder's worker record now: pid and the model slots it holds
 * (held: a count per slot, or NULL for none).  *record is its slot + 1, 0
 * when it has none; one is taken with the first model, freed with the
 * last. */
void mirror_worker_changed(unsigned *record, pid_t pid, const uint16_t *held);
void mirror_shutdown(void);

/* Counters for stats and metrics, each written by the operation it
 * counts. */
struct counters {
	uint64_t loads, load_failures, unloads, unload_timeouts;
	uint64_t replaces, replace_failures, drains, drain_timeouts;
	uint64_t evictions, idle_unloads, autoloads;
	uint64_t drain_ms_sum;
	uint64_t attaches, detaches, acks;
};

/* What every layer reads: the configuration, the event base, and whether
 * the broker is stopping.  Each piece of state with an owner lives in its
 * owner's file. */
struct broker {
	struct config cfg;
	struct event_base *base;
	char token[9]; /* random part of this broker's segment names */
	int64_t started_ms;
	bool shutting_down; /* set by shutdown.c only */
	int exit_code;
	struct counters counters;
};
extern struct broker broker;

#endif /* MBROKERD_H */
