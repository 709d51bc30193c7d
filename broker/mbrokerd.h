/* SPDX-License-Identifier: MIT */
/*
 * mbrokerd.h - the broker's internal types and the functions each broker
 * source file offers the others, grouped by file.  Only the broker includes
 * it; workers see include/mbroker.h alone.
 *
 * Threads: everything here belongs to the main (libevent) thread, except a
 * load_job while its loader thread runs and the ackwait waiter thread, which
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
/* Descriptors kept apart from connections: the broker's own (event base,
 * sockets, pipes, semaphore, mirror, metrics) and two per model (its
 * segment, and a load's source file). */
#define BROKER_FD_RESERVE (64 + 2 * BROKER_MAX_MODELS)

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
	uint64_t load_rate;     /* bytes per second, 0: as fast as possible */
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
};
/* What options_parse asks of its caller. */
enum options_result { OPTIONS_RUN, OPTIONS_EXIT_OK, OPTIONS_USAGE };
enum options_result options_parse(int argc, char **argv, struct config *cfg,
				  FILE *out, FILE *err);
void options_free(struct config *cfg);
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
struct model;
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
/* The provider called name ("raw", "safetensors"), or NULL. */
const struct provider *provider_find(const char *name);
/* The provider a path implies: safetensors for *.safetensors, else raw. */
const struct provider *provider_for_path(const char *path);

/* registry.c */
enum model_state {
	MODEL_UNINITIALIZED,
	MODEL_LOADING,
	MODEL_READY,
	MODEL_UNLOADING,
	MODEL_ERROR,
};

/* A request whose reply waits for something to finish. */
struct pending {
	TAILQ_ENTRY(pending) entry;
	uint64_t conn_id;
	json_t *id;
};
TAILQ_HEAD(pending_list, pending);

struct load_job;
struct model {
	TAILQ_ENTRY(model) entry;
	char name[MB_NAME_MAX + 1];
	unsigned slot; /* its index in registry_at and the mirror */
	const struct provider *provider;
	enum model_state state;
	uint64_t generation;
	char path[PATH_MAX];
	char segment[NAMES_SHM_MAX]; /* shm_open name, "" when none */
	int ro_fd;                   /* read-only descriptor handed out */
	uint64_t size;
	uint64_t checksum;
	void *provider_state;
	size_t ntensors;
	char error[PATH_MAX + 512];
	unsigned nattached;
	struct load_job *job; /* while the loader thread runs */
	bool load_abandoned;  /* its load did not stop by the deadline */
	int64_t load_started_ms;
	int64_t load_ms;
	struct pending_list start_waiters; /* load without wait: the size */
	struct pending_list load_waiters;  /* load with wait: the outcome */
	/* While UNLOADING. */
	int64_t unload_started_ms;
	int64_t unload_deadline_ms;
	int64_t shmem_before_kb;
	int64_t kill_at_ms; /* --kill-after: when holders get SIGKILL; -1 */
	json_t *killed_pids;
	uint64_t unload_freed;    /* bytes this unload gave back */
	unsigned unload_unlinked; /* segment names this unload removed */
	bool unload_interrupted;  /* its deadline was cut by a SIGINT */
	bool unload_for_shutdown;
	struct pending_list unload_waiters;
};

const char *registry_state_name(enum model_state state);
/* Whether the state machine allows from -> to. */
bool registry_transition_valid(enum model_state from, enum model_state to);
/* Moves m to state to; a transition the machine forbids is a bug (fatal). */
void registry_set_state(struct model *m, enum model_state to);
struct model *registry_find(const char *name);
/* The model in slot (below BROKER_MAX_MODELS), or NULL. */
struct model *registry_at(unsigned slot);
/* A new UNINITIALIZED model in the registry, or NULL when it is full. */
struct model *registry_add(const char *name);
/* Removes m and frees it; it must hold no segment, job or attachment. */
void registry_remove(struct model *m);
unsigned registry_count(void);
/* Frees every model at exit, unlinking any name still held. */
void registry_clear(void);
/* The model as a JSON object for list and replies (new reference). */
json_t *registry_model_json(const struct model *m);
/* The same without "pids", which costs a look at every connection. */
json_t *registry_model_fields(const struct model *m);

/* pending.c */
struct conn;
/* Queues the reply to (c, id) on list; false after replying `limit` (c
 * has CONN_MAX_QUEUED waiting already) or `internal` (out of memory), in
 * which case the caller starts nothing. */
bool pending_add(struct pending_list *list, struct conn *c, json_t *id);
/* Replies ok with body to every pending request and empties the list;
 * takes the reference to body. */
void pending_reply_ok(struct pending_list *list, json_t *body);
/* Replies with an error to every pending request and empties the list;
 * takes the reference to extra (may be NULL). */
void pending_reply_error(struct pending_list *list, int code, json_t *extra,
			 const char *message);
/* Drops every reply still owed to connection conn_id (it went away). */
void pending_drop_conn(uint64_t conn_id);
/* Whether no reply waits on m. */
bool pending_none(const struct model *m);

/* segment.c */
/* Fills name with the shm name of the gen-th load of model. */
int segment_name(char *buf, size_t len, const char *model, uint64_t gen);
/* Creates the segment (O_EXCL, 0600) of size bytes, within the
 * --max-shm-bytes budget and the free space less what other segments being
 * filled have yet to take (the loader reserves the pages, then calls
 * segment_filled); returns a read-write descriptor or MB_E* / -errno with
 * a reason in err.  Thread-safe. */
int segment_create(const char *name, uint64_t size, char *err, size_t errlen);
/* The pages of rw_fd's segment are reserved, or its load gave up: it no
 * longer counts as still to take.  Call before closing rw_fd. */
void segment_filled(int rw_fd);
/* Gives size bytes back to the budget once their segment is unlinked. */
void segment_unreserve(uint64_t size);
/* Bytes of the budget held by segments now. */
uint64_t segment_bytes_held(void);
/* Makes the filled segment read-only for everyone (mode 0400) and returns
 * a new read-only descriptor of it, or -errno. */
int segment_seal(int rw_fd);
/* Unlinks the name; a name already gone is fine.  Returns 0 or -errno. */
int segment_unlink(const char *name);
/* Bytes free in /dev/shm, or -errno. */
int64_t segment_space_free(void);

/* loader.c */
/* Starts a loader thread for m from path; m goes LOADING.  0 or -errno. */
int loader_start(struct model *m, const char *path);
/* Asks m's running load to stop early (it still reports completion). */
void loader_cancel(struct model *m);
/* Gives up on m's running load: its name is unlinked now and its thread
 * cleans up alone when it returns; m no longer has a job. */
void loader_abandon(struct model *m);
/* Bytes copied so far by m's running load. */
uint64_t loader_progress(const struct model *m);
/* Abandoned loads whose thread has not returned yet. */
unsigned loader_abandoned_count(void);
/* The size of the file m's running load copies (0 until known). */
uint64_t loader_total(const struct model *m);
/* Sets up the completion channel.  0 or -1. */
int loader_init(void);
void loader_shutdown(void);

/* ackwait.c */
/* Creates the ack semaphore and its waiter thread; wake runs in the main
 * loop whenever the semaphore is posted or the armed deadline passes. */
int ackwait_init(void (*wake)(void));
/* Waits for posts until deadline_ms (monotonic); -1 disarms. */
void ackwait_arm(int64_t deadline_ms);
/* Stops the thread, closes and unlinks the semaphore. */
void ackwait_shutdown(void);
const char *ackwait_name(void);

/* conn.c */
/* Budget bytes of a segment unlinked while attached (an unload that timed
 * out), reserved until the last of those attachments is released. */
struct stranded {
	uint64_t bytes;
	unsigned holders;
};

struct attachment {
	TAILQ_ENTRY(attachment) entry;
	uint64_t id;
	struct model *model;
	struct conn *conn;
	struct stranded *stranded; /* NULL while its segment is named */
};

struct outmsg {
	TAILQ_ENTRY(outmsg) entry;
	char *data;
	size_t len;
	int fd;
};

/* A log budget: a burst of lines, then one line per interval. */
struct loglimit {
	int64_t credit_ms; /* an interval's worth per line allowed */
	int64_t last_ms;
	unsigned suppressed; /* lines not written since the last one */
};

struct conn {
	TAILQ_ENTRY(conn) entry;
	uint64_t id;
	int fd;
	struct event *ev_read;
	struct event *ev_write;
	struct event *ev_pid;
	pid_t pid;
	bool pid_exited; /* the connection outlived its process (a fork) */
	uid_t uid;
	gid_t gid;
	int pidfd;
	unsigned rights; /* RIGHT_* this peer has */
	struct event *ev_idle; /* closes it if no hello comes in time */
	unsigned bad_requests;
	unsigned refusals;       /* requests refused, logged or not */
	unsigned refusals_muted; /* of which no line was written */
	struct loglimit refusal_log;
	const char *unsignalled; /* why it has no pidfd (no signals), or NULL */
	bool hello;
	bool lost;
	char role[16];
	TAILQ_HEAD(, attachment) attachments;
	unsigned nattachments;
	uint16_t *held;       /* attachments per model slot, while any */
	unsigned mirror_slot; /* its worker slot in the mirror + 1, or 0 */
	TAILQ_HEAD(, outmsg) outq;
	unsigned nqueued;
	unsigned npending; /* its requests whose reply waits (pending.c) */
	size_t queued_bytes;  /* of the messages in outq */
	unsigned nfds_queued; /* descriptors held in outq */
	/* Descriptors sent but maybe unread: where each one's message ends,
	 * in bytes of sent_bytes (a ring, oldest at inflight_head).  Signed:
	 * sent_bytes - unread may be negative. */
	int64_t inflight[CONN_MAX_FDS];
	unsigned inflight_head, ninflight;
	int64_t sent_bytes; /* sent since the ring was last empty, at most */
};
TAILQ_HEAD(conn_list, conn);

/* Takes over an accepted descriptor.  0, or -1 (fd closed). */
int conn_accept(int fd);
struct conn *conn_find(uint64_t id);
/* Sends msg (and pass_fd, not taken) to c, queueing when c is slow.
 * Returns 0, -EMSGSIZE when msg is over WIRE_MAX_REPLY (nothing sent, c
 * kept), or -EPIPE when c is lost. */
int conn_send(struct conn *c, const json_t *msg, int pass_fd);
/* Drops c: its attachments are released and it is freed after the
 * current callback. */
void conn_lost(struct conn *c, const char *why);
/* Sends what is queued for every client, waiting at most timeout_ms. */
void conn_flush_all(int64_t timeout_ms);
void conn_close_all(void);
/* Counts a bad request of c and logs it within c's refusal budget. */
void conn_bad_request(struct conn *c, const char *why);
/* Logs a refusal of one of c's requests as a warning, unless c (or all
 * clients together) went over their budget of such lines: then it is
 * counted, and the next line written, and the one at close, say how many
 * were not. */
void conn_log_refusal(struct conn *c, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/* Marks c as past hello: its idle deadline is lifted. */
void conn_said_hello(struct conn *c);
/* Signals c's process through its pidfd; 0 or -errno (-ESRCH when the
 * process could not be identified at connect: it is never signalled). */
int conn_signal(struct conn *c, int sig);

/* attach.c */
struct attachment *attach_add(struct conn *c, struct model *m);
void attach_release(struct attachment *a);
void attach_release_all(struct conn *c);
struct attachment *attach_find(struct conn *c, uint64_t id);
/* Appends the pids attached to m to array (new integers), one look per
 * connection. */
void attach_pids(const struct model *m, json_t *array);
/* How many connections holding m outlived their process. */
unsigned attach_orphans(const struct model *m);
/* Takes over bytes of the budget for m's segment, unlinked while attached:
 * they go back when every attachment of m now there is released.  Returns
 * false (nothing taken over) when m has none or memory is short. */
bool attach_strand(struct model *m, uint64_t bytes);

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

/* request.c */
struct request {
	struct conn *conn;
	json_t *msg;
	json_t *id;
};
typedef void request_fn(struct request *req);
struct request_entry {
	const char *op;
	request_fn *fn;
	unsigned right; /* what the peer needs (enum right) */
};
void request_dispatch(struct conn *c, const char *buf, size_t len);
/* Reply helpers; body and extra are taken (may be NULL). */
void reply_ok(struct conn *c, json_t *id, json_t *body, int pass_fd);
void reply_error(struct conn *c, json_t *id, int code, json_t *extra,
		 const char *fmt, ...) __attribute__((format(printf, 5, 6)));
/* Replies with the items (taken) of a list under key, from the request's
 * "offset" on, as many as fit in one message; "total" counts them all and
 * "next" is the offset of the next page when there is one. */
void reply_paged(struct request *req, const char *key, json_t *items);
/* A required string field, or NULL after an error reply. */
const char *request_string(struct request *req, const char *key);
/* An optional timeout in seconds, in ms; def when absent, -1 after an
 * error reply. */
int64_t request_timeout(struct request *req, int64_t def);

/* req_session.c, req_model.c, req_attach.c, req_query.c, req_shutdown.c */
extern const struct request_entry req_session_entries[];
extern const struct request_entry req_model_entries[];
extern const struct request_entry req_attach_entries[];
extern const struct request_entry req_query_entries[];
extern const struct request_entry req_shutdown_entries[];

/* unload.c */
/* How long a cancelled load may take to stop before it is abandoned, even
 * when the deadline is sooner (a SIGINT, a timeout of 0): a load notices a
 * cancel within one 8 MiB chunk, one 50 ms --load-rate step or one 64 MiB
 * hash slice, so one that has not stopped by then is blocked. */
#define UNLOAD_CANCEL_GRACE_MS 250
/* Starts unloading m (READY, LOADING or ERROR); the reply to (c, id), if
 * c is not NULL, is sent when it ends. */
void unload_begin(struct model *m, int64_t timeout_ms, struct conn *c,
		  json_t *id, bool for_shutdown);
/* Schedules a look at every unload in progress. */
void unload_schedule(void);
/* Ends every unload now, as if its deadline had passed. */
void unload_expire_all(void);
/* Sets up the evaluation event and the ack waiter.  0 or -1. */
int unload_init(void);
void unload_shutdown(void);

/* shutdown.c */
void shutdown_begin(int64_t timeout_ms, struct conn *c, json_t *id,
		    const char *why);
/* Second SIGINT: stop waiting for workers. */
void shutdown_force(void);
/* Called when an unload ends: finishes the shutdown when nothing is left. */
void shutdown_check(void);

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
/* Marks m (or its slot, once removed) for a rewrite in the mirror soon;
 * the broker's own record is rewritten then too if it changed. */
void mirror_model_changed(const struct model *m);
/* Rewrites c's worker record now: its pid and which models it holds (from
 * c->held); a slot is taken at its first attachment, freed at its last. */
void mirror_worker_changed(struct conn *c);
void mirror_shutdown(void);

/* The broker's one global state. */
struct broker {
	struct config cfg;
	struct event_base *base;
	TAILQ_HEAD(, model) models;
	unsigned nmodels;
	struct conn_list conns;
	unsigned nconns;
	uint64_t next_generation;
	uint64_t next_conn_id;
	uint64_t next_attach_id;
	char token[9]; /* random part of this broker's segment names */
	int64_t started_ms;
	/* Shutdown. */
	bool shutting_down;
	bool shutdown_done;
	int64_t shutdown_shmem_before_kb;
	uint64_t shutdown_freed_bytes;
	unsigned shutdown_models;
	unsigned shutdown_timeouts;
	/* Where the shutdown's time went, in microseconds. */
	int64_t shutdown_started_us;
	int64_t shutdown_notify_us;  /* events and signals sent */
	int64_t shutdown_drained_us; /* when the last model was let go */
	int64_t shutdown_release_us; /* hooks, unlinks, closes */
	json_t *shutdown_stuck_pids;
	struct pending_list shutdown_waiters;
	int exit_code;
	/* Counters for stats. */
	uint64_t loads, load_failures, unloads, unload_timeouts;
	uint64_t attaches, detaches, acks;
};
extern struct broker broker;

#endif /* MBROKERD_H */
