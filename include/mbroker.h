/* SPDX-License-Identifier: MIT */
/*
 * mbroker.h - the whole public surface of libmbroker, the library a worker
 * process links to share model weights held by the mbrokerd broker.
 *
 * A worker connects to the broker's control socket (mb_connect), attaches a
 * model by name (mb_attach) and reads its weights through a read-only
 * mapping; the bytes are one physical copy whatever the number of workers.
 * When the broker unloads the model or shuts down it sends an event on the
 * connection and a signal (SIGUSR1 unless configured); the worker answers
 * with mb_detach or mb_ack, which may be called from a signal handler.
 * When the broker replaces the model with a new generation it sends only an
 * event; the worker follows it with mb_follow_replace.
 *
 * A model is one file or a bundle, a directory of up to MB_MAX_MEMBERS
 * files ("members"): each member is mapped on its own, and mb_member_*
 * reach them by index or by their path relative to the directory.  With
 * MB_ATTACH_KEEP_FDS an attachment also keeps each member's read-only
 * descriptor, so that code which only opens files by path can be given
 * "/proc/self/fd/N" (mb_member_path) or a directory laid out like the
 * bundle (mb_member_dir).
 *
 * Conventions: functions return 0 (or a count) on success and a negative
 * MB_E* code on failure; system errors are returned as -errno.  Objects
 * created by a call are returned through an out-parameter and belong to the
 * caller.  The library never prints, exits, aborts, raises SIGPIPE or
 * installs a signal handler, and every descriptor it opens is close-on-exec.
 * A client is not thread-safe: use one per thread, except for mb_ack.
 */
#ifndef MBROKER_H
#define MBROKER_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define MB_EXPORT __attribute__((visibility("default")))
#else
#define MB_EXPORT
#endif

#define MB_VERSION_STRING "0.1.0"
/* The control protocol version this library speaks (see docs/protocol.md). */
#define MB_PROTOCOL_VERSION 1
/* Longest model name, not counting the terminating NUL. */
#define MB_NAME_MAX 64
/* Most dimensions a safetensors tensor may have. */
#define MB_MAX_DIMS 8
/* Most models one client may have attached at a time. */
#define MB_MAX_ATTACHMENTS 256
/* Most files in a bundle (a model made of many files). */
#define MB_MAX_MEMBERS 256
/* Most descriptors one broker message carries (an attach reply of a
 * bundle, or a page of the members op). */
#define MB_FDS_PER_MESSAGE 8

/*
 * Error codes specific to mbroker; system errors are -errno.  The wire name
 * is the "code" string the broker puts in an error reply.
 * X(NAME, value, wire name, message)
 */
#define MB_ERROR_MAP(X)                                                       \
	X(BADREQ, -1001, "bad_request", "malformed or invalid request")       \
	X(VERSION, -1002, "version_mismatch",                                  \
	  "protocol version not supported")                                    \
	X(NOMODEL, -1003, "unknown_model", "no such model")                    \
	X(NOTREADY, -1004, "not_ready", "model is not ready")                  \
	X(SHUTDOWN, -1005, "shutting_down", "broker is shutting down")         \
	X(EXISTS, -1006, "exists", "a model of that name is loaded")           \
	X(LOADING, -1007, "already_loading", "model is already loading")       \
	X(UNLOADING, -1008, "unloading", "model is unloading")                 \
	X(FORMAT, -1009, "format_error", "invalid model file")                 \
	X(NOSPACE, -1010, "no_space", "not enough shared memory")              \
	X(IO, -1011, "io_error", "cannot read the model file")                 \
	X(TIMEOUT, -1012, "timeout", "workers did not release in time")        \
	X(CANCELLED, -1013, "cancelled", "load cancelled by an unload")        \
	X(NAME, -1014, "bad_name", "invalid model name")                       \
	X(LIMIT, -1015, "limit", "a broker limit was reached")                 \
	X(NOTATTACHED, -1016, "not_attached", "no such attachment")            \
	X(NOTENSOR, -1017, "no_tensor", "no such tensor")                      \
	X(LOST, -1018, "connection_lost", "connection to the broker lost")     \
	X(PROTOCOL, -1019, "protocol_error",                                   \
	  "malformed message from the broker")                                 \
	X(DENIED, -1020, "permission_denied", "permission denied")             \
	X(INTERNAL, -1021, "internal", "internal broker error")                \
	X(PEER, -1022, "untrusted_broker",                                     \
	  "the socket is served by an unexpected user")

enum mb_error {
#define MB_ERROR_ENUM(name, value, wire, msg) MB_E##name = value,
	MB_ERROR_MAP(MB_ERROR_ENUM)
#undef MB_ERROR_ENUM
};

/* Text for an error code (MB_E* or -errno).  Never NULL; static storage. */
MB_EXPORT const char *mb_strerror(int err);
/* Symbolic name of an error code ("MB_ENOMODEL", "ENOENT"). Never NULL. */
MB_EXPORT const char *mb_err_name(int err);

struct mb_client;
struct mb_attachment;

/*
 * Writes the socket path used when none is given: $MBROKER_SOCKET; else,
 * for root, /run/mbroker/default.sock; else
 * $XDG_RUNTIME_DIR/mbroker/default.sock, else
 * /run/user/<uid>/mbroker/default.sock when that directory is the user's
 * own, else /tmp/mbroker-<uid>/default.sock.
 * Returns 0, or -ENAMETOOLONG when it does not fit in len bytes.
 */
MB_EXPORT int mb_default_socket_path(char *buf, size_t len);

/*
 * Connects to the broker at socket_path (NULL: the default path) and says
 * hello with MB_PROTOCOL_VERSION.  Blocks until the broker answers, without
 * a bound: mb_connect_ex(socket_path, -1, -1, out).
 * On success *out is a new client, freed with mb_close.  Returns -ENOENT or
 * -ECONNREFUSED when no broker listens there, MB_EVERSION when the broker
 * speaks another protocol version, MB_EPEER when the socket is served by
 * another user than expected (see mb_connect_ex).
 */
MB_EXPORT int mb_connect(const char *socket_path, struct mb_client **out);

/*
 * mb_connect with a check of who serves the socket and a bound on the
 * wait.  Before sending anything the library reads the listening process's
 * uid (SO_PEERCRED) and refuses it with MB_EPEER unless it is root (who
 * could read our memory anyway) or broker_uid; a broker_uid of -1 means
 * $MBROKER_BROKER_UID when set (a decimal uid; -EINVAL when malformed),
 * else this process's own real or effective uid.  On success *out is a
 * new client, freed with mb_close.  Connect and hello take at most timeout_ms
 * (-1: no bound), else -ETIMEDOUT: a broker that is stopped, or too busy
 * to accept, cannot hang the caller.  The timeout does not carry over to
 * later calls (see mb_set_timeout).
 */
MB_EXPORT int mb_connect_ex(const char *socket_path, int64_t broker_uid,
			    int timeout_ms, struct mb_client **out);

/*
 * Bounds each later round trip of this client (mb_attach, mb_detach,
 * mb_request) to timeout_ms; -1, the default, waits as long as the broker
 * lives.  A call past its bound returns -ETIMEDOUT and its request stays
 * sent: a late reply is dropped when it arrives, and an attachment it
 * granted is handed back to the broker at once.  This function can't fail.
 */
MB_EXPORT void mb_set_timeout(struct mb_client *client, int timeout_ms);

/*
 * Unmaps every attachment still held, closes their kept descriptors,
 * removes their member directories, frees their handles and closes the
 * connection; the broker then releases them.  Accepts NULL.  Not
 * async-signal-safe.
 */
MB_EXPORT void mb_close(struct mb_client *client);

/*
 * The broker's message for the last request of this client that failed with
 * an error reply, or "" if none.  Valid until the next call on the client.
 */
MB_EXPORT const char *mb_last_error(const struct mb_client *client);

/*
 * Attaches the READY model called name: the broker hands over a read-only
 * descriptor which is mapped PROT_READ and closed.  Blocks for one round
 * trip.  On success *out is a new attachment, released with mb_detach (or
 * by mb_ack / mb_close).  Returns MB_ENOMODEL, MB_ENOTREADY, MB_EUNLOADING,
 * MB_ESHUTDOWN, MB_ELIMIT (MB_MAX_ATTACHMENTS reached), -ETIMEDOUT past
 * the bound of mb_set_timeout, -ECANCELED when mb_ack ran while it waited
 * for the reply (the new attachment is handed back: the ack asked for
 * everything) or a system error.
 */
MB_EXPORT int mb_attach(struct mb_client *client, const char *name,
			struct mb_attachment **out);

/*
 * mb_attach that waits, for at most timeout_ms (-1: no bound), until a
 * model called name is READY: while the broker answers MB_ENOTREADY (a
 * load in progress, or a failed one) or MB_ENOMODEL (no load asked yet) it
 * asks again, every 5 ms at first and then every 100 ms at most; events
 * that arrive meanwhile are queued as usual.  Returns 0 with *out as
 * mb_attach does; when the time is up, the broker's last refusal
 * (MB_ENOTREADY or MB_ENOMODEL, with mb_last_error saying the model's
 * state) or -ETIMEDOUT when the broker did not answer in time; any other
 * error at once.
 */
MB_EXPORT int mb_attach_wait(struct mb_client *client, const char *name,
			     int timeout_ms, struct mb_attachment **out);

/* Options of mb_attach_ex. */
#define MB_ATTACH_KEEP_FDS 0x1u /* keep each member's descriptor open */
#define MB_ATTACH_POPULATE 0x2u /* fill the page tables before returning */

/*
 * mb_attach with options: flags (MB_ATTACH_*), and wait_ms as
 * mb_attach_wait (0: ask once, as mb_attach; -1: no bound).  Fetches every
 * member's descriptor (a bundle's come 8 to a message: one more round
 * trip per 8 members beyond the first 8), maps each read-only, checks
 * nothing more than mb_attach does, and closes the descriptors unless
 * MB_ATTACH_KEEP_FDS.  With MB_ATTACH_POPULATE every page of every
 * member is entered in this process's page tables before it returns
 * (MADV_POPULATE_READ, or one read per page before Linux 5.14), so the
 * first pass over the weights takes no page faults: the attach costs
 * about what those faults would have (tens of ms per GiB), paid once,
 * before the first request; a populate the kernel refuses (-ENOMEM,
 * -EFAULT) fails the attach.  Returns what mb_attach and mb_attach_wait
 * return, MB_EPROTOCOL when the broker's reply or descriptors do not
 * match, and MB_EFORMAT when a bundle's *.safetensors.index.json is
 * unusable (mb_last_error says why).  mb_attach(c, n, o) is
 * mb_attach_ex(c, n, 0, 0, o), mb_attach_wait(c, n, t, o) is
 * mb_attach_ex(c, n, 0, t, o).
 */
MB_EXPORT int mb_attach_ex(struct mb_client *client, const char *name,
			   unsigned flags, int wait_ms,
			   struct mb_attachment **out);

/*
 * The attachment's read-only bytes and their size.  The pointer is valid
 * until mb_detach or mb_close; after mb_ack it reads as zeros (the shared
 * pages are already let go), so code interrupted by an acking signal
 * handler does not fault.  For a bundle the data is NULL (its members are
 * mapped apart: see mb_member_at) and the size is the members' total.
 */
MB_EXPORT const void *mb_attachment_data(const struct mb_attachment *att);
MB_EXPORT size_t mb_attachment_size(const struct mb_attachment *att);
/* The model's name, format ("raw", "safetensors" or "bundle") and load
 * generation. */
MB_EXPORT const char *mb_attachment_name(const struct mb_attachment *att);
MB_EXPORT const char *mb_attachment_format(const struct mb_attachment *att);
MB_EXPORT uint64_t mb_attachment_generation(const struct mb_attachment *att);
/*
 * The XXH3-64 checksum the broker computed while loading.  A bundle's is
 * the XXH3-64 of, for each member in order, its name, one NUL byte, its
 * size and its checksum (each 8 bytes little-endian): see docs/protocol.md.
 */
MB_EXPORT uint64_t mb_attachment_checksum(const struct mb_attachment *att);

/* One file of a model.  Its strings and data live as long as the
 * attachment; the data reads as zeros after mb_ack. */
struct mb_member {
	const char *name;   /* bundle: relative path ("en-us/mdef");
			       single file: the model's name */
	const char *format; /* "raw" or "safetensors" */
	const void *data;   /* read-only mapping; NULL when size is 0 */
	size_t size;
	uint64_t checksum;  /* XXH3-64 of the member's bytes */
};

/* Number of members: 1 for a single file, in name order for a bundle. */
MB_EXPORT size_t mb_member_count(const struct mb_attachment *att);
/* The index-th member.  Returns 0 or -ERANGE. */
MB_EXPORT int mb_member_at(const struct mb_attachment *att, size_t index,
			   struct mb_member *out);
/* The member called name (its path in the bundle).  Returns 0 or
 * -ENOENT. */
MB_EXPORT int mb_member_find(const struct mb_attachment *att,
			     const char *name, struct mb_member *out);

/*
 * Member 0's / member index's kept descriptor (read-only), or -1 when the
 * attachment was made without MB_ATTACH_KEEP_FDS, the index is out of
 * range or mb_ack closed it.  Owned by the attachment: closed by
 * mb_detach, mb_ack, mb_close; do not close it yourself (dup it to keep
 * it longer).
 */
MB_EXPORT int mb_attachment_fd(const struct mb_attachment *att);
MB_EXPORT int mb_member_fd(const struct mb_attachment *att, size_t index);

/*
 * Writes "/proc/self/fd/N" of member index's kept descriptor into buf: a
 * path that any file-opening code of this process can open (read-only)
 * while the attachment lives.  Returns 0, -EBADF (no kept descriptors),
 * -ERANGE (no such member) or -ENAMETOOLONG.
 */
MB_EXPORT int mb_member_path(const struct mb_attachment *att, size_t index,
			     char *buf, size_t len);

/*
 * Lays out a private directory (mkdtemp under $TMPDIR or /tmp, mode 0700)
 * holding one symlink per member at its relative path (subdirectories
 * made 0700), each pointing to that member's /proc/self/fd/N; for a
 * single-file model one link named after the model.  Writes its path
 * into buf: code that wants a model directory can be given it.  Made once
 * per attachment (later calls give the same path); removed by mb_detach,
 * mb_ack and mb_close (a process killed before leaves it behind, its
 * links dangling).  Returns 0, -EBADF without MB_ATTACH_KEEP_FDS (or
 * after mb_ack), -ENAMETOOLONG, or -errno of the file system.  The links
 * resolve only in this process.
 */
MB_EXPORT int mb_member_dir(struct mb_attachment *att, char *buf, size_t len);

/*
 * Releases the attachment: unmaps it (every member), closes its kept
 * descriptors, removes its member directory, tells the broker, frees the
 * handle.
 * Accepts NULL.  Returns 0 or a system error of the notification (the
 * mapping is gone and the handle freed in every case).
 */
MB_EXPORT int mb_detach(struct mb_attachment *att);

/* One tensor of a safetensors model. */
struct mb_tensor {
	const char *name;  /* valid as long as the attachment */
	const char *dtype; /* "F32", "F16", "BF16", "I8", ... (static) */
	int ndim;
	int64_t shape[MB_MAX_DIMS];
	const void *data;  /* inside the read-only mapping */
	size_t nbytes;
};

/*
 * The tensors of every safetensors member: a single safetensors file's, or
 * all the shards of a bundle.  Number of tensors (0 for a raw model).
 */
MB_EXPORT size_t mb_tensor_count(const struct mb_attachment *att);
/* The index-th tensor: members in order, tensors in name order within
 * each.  Returns 0 or MB_ENOTENSOR. */
MB_EXPORT int mb_tensor_at(const struct mb_attachment *att, size_t index,
			   struct mb_tensor *out);
/*
 * The tensor called name.  In a bundle with a *.safetensors.index.json
 * at its top level, the index's weight_map says which shard holds it (a
 * name not in it is MB_ENOTENSOR); without one, the safetensors members
 * are searched in order.  Returns 0 or MB_ENOTENSOR.
 */
MB_EXPORT int mb_tensor_find(const struct mb_attachment *att, const char *name,
			     struct mb_tensor *out);

/*
 * XXH3-64 of size bytes at data: what a worker computes to check that what
 * it maps is what the broker loaded.  This function can't fail.
 */
MB_EXPORT uint64_t mb_checksum(const void *data, size_t size);

enum mb_event_type {
	MB_EVENT_NONE = 0,
	MB_EVENT_UNLOAD,      /* one model is being unloaded: detach it */
	MB_EVENT_SHUTDOWN,    /* the broker is shutting down: mb_ack */
	MB_EVENT_BROKER_LOST, /* the connection closed; mappings stay valid */
	MB_EVENT_REPLACED,    /* a new generation serves: mb_follow_replace */
};

struct mb_event {
	enum mb_event_type type;
	char model[MB_NAME_MAX + 1]; /* UNLOAD, REPLACED: which model */
	uint64_t generation;         /* UNLOAD: which load; REPLACED: the new */
	int64_t timeout_ms;          /* how long the broker waits for us */
	uint64_t old_generation;     /* REPLACED: the one to let go of */
};

/*
 * A descriptor that polls readable (POLLIN, EPOLLIN) whenever an event may
 * be pending: it watches both the connection and the library's queue of
 * events that arrived while a call waited for its reply, so a worker
 * sleeping in poll() is woken whatever read the event first.  It is an
 * epoll instance (not the socket): poll it, never read it.  It stays
 * readable until mb_next_event has returned every queued event (and, once
 * the broker is gone, for good).  Valid until mb_close.
 */
MB_EXPORT int mb_event_fd(const struct mb_client *client);

/*
 * Takes the next pending event without blocking.  Returns 1 and fills *out
 * when there was one, 0 when none is pending.  MB_EVENT_BROKER_LOST is
 * reported once, after which requests fail with MB_ELOST.
 */
MB_EXPORT int mb_next_event(struct mb_client *client, struct mb_event *out);

/*
 * Follows a replacement: when *att is an attachment of ev->model older
 * than ev->generation (ev an MB_EVENT_REPLACED), attaches the model again
 * (one round trip, bounded by mb_set_timeout), and only once that
 * succeeded detaches the old attachment and sets *att to the new one, so
 * the worker never holds nothing.  Returns 0, also when ev does not
 * concern *att (another model, another event, a generation no newer) and
 * nothing was done; or an error of mb_attach, leaving *att untouched and
 * still mapped: the old generation stays readable until the broker's
 * drain deadline, and the call may be retried.  Once it has moved, the
 * old attachment's data and tensors are gone: look them up again in the
 * new *att.  The new attachment is made with the flags the old one was
 * (MB_ATTACH_KEEP_FDS).  A worker holding several attachments calls it
 * for each.
 */
MB_EXPORT int mb_follow_replace(struct mb_client *client,
				struct mb_attachment **att,
				const struct mb_event *ev);

/*
 * Tells the broker this worker is done with everything it attached: lets
 * go of every mapping (zero pages take the segment's place, so a read in
 * progress goes on harmlessly), sends the acknowledgement and posts the
 * broker's ack semaphore.  Kept descriptors are closed and member
 * directories removed too.  Async-signal-safe and safe to call from another
 * thread; may be called more than once.  Handles stay allocated until
 * mb_detach or mb_close, and their data reads as zeros meanwhile.  Returns
 * 0 or -errno of the send (the shared pages are let go in every case).
 */
MB_EXPORT int mb_ack(struct mb_client *client);

/*
 * Sends one raw JSON request object (the library adds "id") and waits for
 * its reply, which *reply receives as a malloc'd JSON string (free() it)
 * whether the broker said ok or not.  Returns 0 when the reply says ok,
 * the reply's error code otherwise (mb_last_error has its message), or a
 * transport error (then *reply is NULL); MB_ELIMIT for a request over
 * 163840 bytes, which is not sent (the broker answers a smaller limit of
 * its own with MB_EBADREQ).  For admin tools such as mbctl.
 */
MB_EXPORT int mb_request(struct mb_client *client, const char *request_json,
			 char **reply);

#ifdef __cplusplus
}
#endif

#endif /* MBROKER_H */
