/* SPDX-License-Identifier: MIT */
/*
 * mbctl.c - the admin CLI, a client of libmbroker: one command per call,
 * tables for people by default, the broker's reply as it came with --json.
 * Exit status: 0 success, 1 the broker refused or failed, 2 usage, 3 no
 * broker to talk to (none, one silent for --timeout, or one of a uid that
 * is not trusted).
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "client.h"
#include "mbctl.h"

/* --timeout when not given, and how often a long wait checks that the
 * broker still answers. */
#define MBCTL_TIMEOUT_MS 10000
#define MBCTL_PROBE_MS 1000

static const char mbctl_usage[] =
	"usage: mbctl [--socket PATH] [--json] [--timeout S]\n"
	"             [--broker-uid UID] COMMAND\n"
	"\n"
	"  ping                        check that the broker answers\n"
	"  load NAME [PATH] [--format raw|safetensors|bundle] [--wait]\n"
	"       [--keep-alive S]\n"
	"       [--replace [--policy availability|resource] [--drain-timeout S]]\n"
	"                              load PATH as NAME (*.safetensors is\n"
	"                              safetensors, a directory a bundle of\n"
	"                              every file beneath it, unless --format\n"
	"                              says);\n"
	"                              without PATH, NAME's file in the\n"
	"                              catalog; --keep-alive: unload it once\n"
	"                              nobody has held it for S s (0: as soon\n"
	"                              as the last holder lets go);\n"
	"                              --replace: a new generation of a READY\n"
	"                              NAME, which serves on meanwhile\n"
	"  reload NAME [--wait] [--policy P] [--drain-timeout S]\n"
	"                              replace NAME from its own path\n"
	"  unload NAME [--timeout S]   unload NAME, waiting S s for workers\n"
	"  list                        models: state, why loaded, keep-alive,\n"
	"                              time unused\n"
	"  catalog                     the models of --model-dir and which\n"
	"                              are loaded\n"
	"  pin NAME                    never evict NAME nor unload it idle\n"
	"  unpin NAME                  let eviction and keep-alive apply again\n"
	"  stats                       counters and memory\n"
	"  memory                      each model's bytes once, and its Pss\n"
	"                              in each process holding it\n"
	"  workers                     who holds what\n"
	"  shutdown [--timeout S]      orderly shutdown of the broker\n"
	"  top [--iterations N]        a live view, refreshed every second\n"
	"\n"
	"The socket defaults to $MBROKER_SOCKET; for root\n"
	"/run/mbroker/default.sock; else $XDG_RUNTIME_DIR/mbroker/default.sock,\n"
	"else /run/user/<uid>/mbroker/default.sock, else\n"
	"/tmp/mbroker-<uid>/default.sock.\n"
	"--timeout S (default 10): give up on a broker silent for S s (one\n"
	"that is stopped or hung); load --wait, unload and shutdown wait as\n"
	"long as the broker keeps answering within S s.\n"
	"A replace switches to the new generation once it is READY; workers\n"
	"then move over and the old one drains for --drain-timeout S (default\n"
	"the broker's --shutdown-timeout).  --policy availability (the usual\n"
	"default) refuses with no_space when two copies do not fit; resource\n"
	"unloads first, with a gap in service.\n"
	"--broker-uid UID: trust a broker of that uid (default\n"
	"$MBROKER_BROKER_UID, else only our own uid or root).\n"
	"Exit status: 0 success, 1 refused or failed (the broker's message on\n"
	"stderr), 2 usage, 3 cannot reach the broker, it is not who was\n"
	"expected, or it did not answer in time.\n";


static __attribute__((noreturn)) void
mbctl_usage_exit(const char *what, const char *arg)
{
	if (what != NULL)
		fprintf(stderr, "mbctl: %s%s%s%s\n", what, arg ? " '" : "",
			arg ? arg : "", arg ? "'" : "");
	fputs(mbctl_usage, stderr);
	exit(2);
}

void
mbctl_size(char *buf, size_t len, json_int_t bytes)
{
	if (bytes >= (json_int_t)1 << 30)
		snprintf(buf, len, "%.2f GiB", bytes / 1073741824.0);
	else if (bytes >= 1 << 20)
		snprintf(buf, len, "%.1f MiB", bytes / 1048576.0);
	else
		snprintf(buf, len, "%lld B", (long long)bytes);
}

json_int_t
mbctl_int(const json_t *o, const char *key)
{
	return json_integer_value(json_object_get(o, key));
}

const char *
mbctl_str(const json_t *o, const char *key)
{
	const char *s = json_string_value(json_object_get(o, key));

	return s != NULL ? s : "";
}

int
mbctl_connect(const struct mbctl *m, struct mb_client **out, char *why,
	      size_t whylen)
{
	struct client_params p = {.path = m->socket, .role = "admin",
				  .broker_uid = m->broker_uid,
				  .timeout_ms = m->timeout_ms};
	int r = client_connect(&p, out, why, whylen);

	if (r == 0)
		mb_set_timeout(*out, m->timeout_ms);
	return r;
}

/*
 * Waits for the reply to request id, which the broker may take long to
 * give by design (a load to finish, workers to let go).  As long as the
 * broker answers a second connection within --timeout (a ping, or the
 * refusal of a broker at --max-connections) it is waited for; when it
 * does not (stopped, or hung), -ETIMEDOUT.
 */
static int
mbctl_wait_alive(struct mbctl *m, int64_t id, json_t **reply)
{
	json_t *ping = json_pack("{s:s}", "op", "ping");
	struct mb_client *probe = NULL;
	int r;

	while ((r = client_wait(m->client, id, client_deadline(MBCTL_PROBE_MS),
				reply, NULL)) == -ETIMEDOUT) {
		if (probe == NULL) {
			r = mbctl_connect(m, &probe, NULL, 0);
			if (r == MB_ELIMIT) /* full, yet it answered */
				continue;
			if (r == -ETIMEDOUT)
				break;
		}
		/* No second connection (the broker is going away): only
		 * --timeout more for the reply itself. */
		if (probe == NULL) {
			r = client_wait(m->client, id,
					client_deadline(m->timeout_ms), reply,
					NULL);
			break;
		}
		if ((r = client_call(probe, ping, NULL, NULL)) == -ETIMEDOUT)
			break;
		if (r < 0) {
			mb_close(probe);
			probe = NULL;
		}
	}
	json_decref(ping);
	mb_close(probe);
	return r;
}

/* Says that the broker was silent for --timeout; returns exit status 3. */
static int
mbctl_timed_out(const struct mbctl *m)
{
	fprintf(stderr, "mbctl: the broker at %s did not answer within %g s "
		"(--timeout); is it stopped?\n", m->socket,
		m->timeout_ms / 1000.0);
	return 3;
}

/*
 * Sends req (taken), prints the outcome; returns the exit status.  A
 * request that waits by design (waits) is waited for while the broker
 * lives; any other is bounded by --timeout.
 */
static int
mbctl_call(struct mbctl *m, json_t *req, bool waits, json_t **reply)
{
	int64_t deadline = client_deadline(m->timeout_ms), id;
	int r;

	*reply = NULL;
	id = client_send(m->client, req, deadline);
	json_decref(req);
	if (id < 0)
		r = (int)id;
	else if (waits)
		r = mbctl_wait_alive(m, id, reply);
	else
		r = client_wait(m->client, id, deadline, reply, NULL);
	if (m->json && *reply != NULL) {
		char *s = json_dumps(*reply, JSON_COMPACT);

		if (s != NULL)
			puts(s);
		free(s);
	}
	if (r == 0)
		return 0;
	if (r == -ETIMEDOUT)
		return mbctl_timed_out(m);
	if (mb_last_error(m->client)[0] != '\0')
		fprintf(stderr, "mbctl: %s (%s)\n", mb_last_error(m->client),
			mb_strerror(r));
	else
		fprintf(stderr, "mbctl: %s\n", mb_strerror(r));
	return r == MB_ELOST ? 3 : 1;
}

/* A generation's state for people: the broker says it only when it is
 * ERROR (a draining one past its deadline); else its role tells. */
static const char *
mbctl_generation_state(const json_t *g)
{
	const char *role = mbctl_str(g, "role");

	if (mbctl_str(g, "state")[0] != '\0')
		return mbctl_str(g, "state");
	if (strcmp(role, "next") == 0)
		return "LOADING";
	return strcmp(role, "draining") == 0 ? "DRAINING" : "READY";
}

/* The detail column of a generation: the load's progress, when a
 * draining one is freed anyway and who holds it, or the checksum. */
static void
mbctl_generation_detail(const json_t *g, char *buf, size_t len)
{
	const char *role = mbctl_str(g, "role");
	const json_t *pid;
	size_t i, used;

	if (strcmp(role, "next") == 0 && mbctl_int(g, "size") > 0) {
		snprintf(buf, len, "%.0f%% loaded", 100.0 *
			 mbctl_int(g, "bytes_done") / mbctl_int(g, "size"));
		return;
	}
	if (strcmp(role, "draining") != 0) {
		snprintf(buf, len, "xxh3 %s", mbctl_str(g, "checksum"));
		return;
	}
	snprintf(buf, len, "deadline in %.1f s, pids",
		 mbctl_int(g, "drain_deadline_ms") / 1e3);
	json_array_foreach(json_object_get(g, "pids"), i, pid)
		if ((used = strlen(buf)) < len)
			snprintf(buf + used, len - used, " %lld",
				 (long long)json_integer_value(pid));
}

/* One row per generation, under its model's, while a replace has more
 * than one: the serving one, the one loading, those draining. */
static void
mbctl_print_generations(const json_t *mod)
{
	const json_t *g;
	size_t i;

	json_array_foreach(json_object_get(mod, "generations"), i, g) {
		char size[32], detail[256];

		mbctl_size(size, sizeof size, mbctl_int(g, "size"));
		mbctl_generation_detail(g, detail, sizeof detail);
		printf("  %-22s %-10s %-12s %10s %-8s %-10s %-8s %4lld %8lld  "
		       "%s\n", mbctl_str(g, "role"), mbctl_generation_state(g),
		       "", size, "", "", "", (long long)mbctl_int(g, "generation"),
		       (long long)mbctl_int(g, "attached"), detail);
	}
}

/* A time span for people: tenths under 10 s, then whole units. */
static void
mbctl_duration(char *buf, size_t len, json_int_t ms)
{
	if (ms < 10000)
		snprintf(buf, len, "%.1f s", ms / 1e3);
	else if (ms < 120000)
		snprintf(buf, len, "%lld s", (long long)(ms / 1000));
	else if (ms < 7200000)
		snprintf(buf, len, "%lld min", (long long)(ms / 60000));
	else
		snprintf(buf, len, "%lld h", (long long)(ms / 3600000));
}

/* How long the model may stay unused before the broker unloads it:
 * "pinned" (never, nor evicted), "forever", or its keep-alive; "-" from
 * a broker that does not say. */
static void
mbctl_keep_alive(const json_t *mod, char *buf, size_t len)
{
	const json_t *ka = json_object_get(mod, "keep_alive_ms");

	if (json_is_true(json_object_get(mod, "pinned")))
		snprintf(buf, len, "pinned");
	else if (!json_is_integer(ka))
		snprintf(buf, len, "-");
	else if (json_integer_value(ka) < 0)
		snprintf(buf, len, "forever");
	else
		snprintf(buf, len, "%g s", json_integer_value(ka) / 1e3);
}

/* Since when a READY model has been unused: "in use" while attached,
 * "-" in any other state. */
static void
mbctl_idle(const json_t *mod, char *buf, size_t len)
{
	if (!json_is_integer(json_object_get(mod, "idle_ms")))
		snprintf(buf, len, "-");
	else if (mbctl_int(mod, "attached") > 0)
		snprintf(buf, len, "in use");
	else
		mbctl_duration(buf, len, mbctl_int(mod, "idle_ms"));
}

/* What list says of a loaded model: its checksum, a bundle's number of
 * files, the tensors. */
static void
mbctl_loaded_detail(const json_t *mod, char *buf, size_t len)
{
	char members[32] = "";

	if (json_object_get(mod, "members") != NULL)
		snprintf(members, sizeof members, "%lld members, ",
			 (long long)mbctl_int(mod, "members"));
	snprintf(buf, len, "xxh3 %s, %s%lld tensors",
		 mbctl_str(mod, "checksum"), members,
		 (long long)mbctl_int(mod, "tensors"));
}

static void
mbctl_print_model(const json_t *mod)
{
	char size[32], keep_alive[32], idle[32], detail[256] = "";
	const char *state = mbctl_str(mod, "state");
	const char *reason = mbctl_str(mod, "reason");

	mbctl_size(size, sizeof size, mbctl_int(mod, "size"));
	mbctl_keep_alive(mod, keep_alive, sizeof keep_alive);
	mbctl_idle(mod, idle, sizeof idle);
	if (strcmp(state, "LOADING") == 0 && mbctl_int(mod, "size") > 0)
		snprintf(detail, sizeof detail, "%.0f%% loaded",
			 100.0 * mbctl_int(mod, "bytes_done") /
				 mbctl_int(mod, "size"));
	else if (strcmp(state, "ERROR") == 0)
		snprintf(detail, sizeof detail, "%s", mbctl_str(mod, "error"));
	else if (json_object_get(mod, "checksum") != NULL)
		mbctl_loaded_detail(mod, detail, sizeof detail);
	printf("%-24s %-10s %-12s %10s %-8s %-10s %-8s %4lld %8lld  %s\n",
	       mbctl_str(mod, "name"), state, mbctl_str(mod, "format"), size,
	       reason[0] != '\0' ? reason : "-", keep_alive, idle,
	       (long long)mbctl_int(mod, "generation"),
	       (long long)mbctl_int(mod, "attached"), detail);
	if (json_array_size(json_object_get(mod, "generations")) > 1)
		mbctl_print_generations(mod);
}

static void
mbctl_print_worker(const json_t *w)
{
	const json_t *a;
	size_t j;

	printf("%-8lld %-6lld %-8s", (long long)mbctl_int(w, "pid"),
	       (long long)mbctl_int(w, "uid"), mbctl_str(w, "role"));
	json_array_foreach(json_object_get(w, "attachments"), j, a)
		printf(" %s(gen %lld)", mbctl_str(a, "model"),
		       (long long)mbctl_int(a, "generation"));
	putchar('\n');
}

/* Fetches every page of the list op (whose items are under key) and
 * prints each item; returns the exit status. */
static int
mbctl_paged(struct mbctl *m, const char *op, const char *key,
	    void (*print)(const json_t *))
{
	json_int_t offset = 0;
	json_t *reply, *item;
	bool more;
	size_t i;
	int r;

	do {
		reply = NULL;
		r = mbctl_call(m, json_pack("{s:s, s:I}", "op", op, "offset",
					    offset), false, &reply);
		if (r == 0 && !m->json)
			json_array_foreach(json_object_get(reply, key), i, item)
				print(item);
		more = json_is_integer(json_object_get(reply, "next"));
		offset = json_integer_value(json_object_get(reply, "next"));
		json_decref(reply);
	} while (r == 0 && more && offset > 0);
	return r;
}

int
mbctl_list(struct mbctl *m)
{
	if (!m->json)
		printf("%-24s %-10s %-12s %10s %-8s %-10s %-8s %4s %8s  %s\n",
		       "NAME", "STATE", "FORMAT", "SIZE", "REASON",
		       "KEEP-ALIVE", "IDLE", "GEN", "ATTACHED", "DETAIL");
	return mbctl_paged(m, "list", "models", mbctl_print_model);
}

static void
mbctl_print_catalog_entry(const json_t *entry)
{
	char size[32];

	mbctl_size(size, sizeof size, mbctl_int(entry, "size"));
	printf("%-24s %-12s %10s %-6s  %s\n", mbctl_str(entry, "name"),
	       mbctl_str(entry, "format"), size,
	       json_is_true(json_object_get(entry, "loaded")) ? "yes" : "no",
	       mbctl_str(entry, "path"));
}

/* One model of memory: its bytes once, then each holder's Pss. */
static void
mbctl_print_memory(const json_t *model)
{
	char size[32], pss[32];
	const json_t *h;
	size_t i;

	mbctl_size(size, sizeof size, mbctl_int(model, "bytes"));
	mbctl_size(pss, sizeof pss, mbctl_int(model, "holders_pss_kb") * 1024);
	printf("%-24s %10s once, %10s in %zu holder(s)\n",
	       mbctl_str(model, "name"), size, pss,
	       json_array_size(json_object_get(model, "holders")));
	json_array_foreach(json_object_get(model, "holders"), i, h) {
		const json_t *kb = json_object_get(h, "pss_kb");

		if (json_is_integer(kb))
			mbctl_size(pss, sizeof pss, json_integer_value(kb) * 1024);
		printf("  pid %-8lld %10s\n",
		       (long long)mbctl_int(h, "pid"),
		       json_is_integer(kb) ? pss : "unreadable");
	}
}

int
mbctl_memory(struct mbctl *m)
{
	return mbctl_paged(m, "memory", "models", mbctl_print_memory);
}

static int
mbctl_catalog(struct mbctl *m)
{
	if (!m->json)
		printf("%-24s %-12s %10s %-6s  %s\n", "NAME", "FORMAT", "SIZE",
		       "LOADED", "PATH");
	return mbctl_paged(m, "catalog", "models", mbctl_print_catalog_entry);
}

/* pin NAME and unpin NAME; NAME need not be loaded. */
static int
mbctl_pin(struct mbctl *m, const char *name, bool pin)
{
	json_t *reply = NULL;
	int r = mbctl_call(m, json_pack("{s:s, s:s}", "op", pin ? "pin" :
					"unpin", "name", name), false, &reply);

	if (r == 0 && !m->json)
		printf("%s %s (%s)\n", name,
		       json_is_true(json_object_get(reply, "pinned"))
			       ? "pinned" : "unpinned",
		       json_is_true(json_object_get(reply, "loaded"))
			       ? "loaded" : "not loaded");
	json_decref(reply);
	return r;
}

int
mbctl_workers(struct mbctl *m)
{
	if (!m->json)
		printf("%-8s %-6s %-8s %s\n", "PID", "UID", "ROLE", "ATTACHED");
	return mbctl_paged(m, "workers", "workers", mbctl_print_worker);
}

static int
mbctl_stats(struct mbctl *m)
{
	json_t *reply = NULL, *v;
	const char *key;
	int r = mbctl_call(m, json_pack("{s:s}", "op", "stats"), false,
			   &reply);

	if (r == 0 && !m->json) {
		json_object_foreach(reply, key, v) {
			char *s;

			if (strcmp(key, "id") == 0 || strcmp(key, "ok") == 0)
				continue;
			s = json_dumps(v, JSON_ENCODE_ANY);
			printf("%-16s %s\n", key, s != NULL ? s : "?");
			free(s);
		}
	}
	json_decref(reply);
	return r;
}

/* Parses "--timeout S" at argv[i]; returns seconds or -1 when absent. */
static double
mbctl_timeout(int argc, char **argv, int i)
{
	char *end;
	double v;

	if (i >= argc)
		return -1;
	if (strcmp(argv[i], "--timeout") != 0 || i + 1 >= argc)
		mbctl_usage_exit("unexpected argument", argv[i]);
	v = strtod(argv[i + 1], &end);
	if (*end != '\0' || end == argv[i + 1] || v < 0)
		mbctl_usage_exit("--timeout wants seconds, got", argv[i + 1]);
	if (i + 2 < argc)
		mbctl_usage_exit("unexpected argument", argv[i + 2]);
	return v;
}

static void
mbctl_print_freed(const char *what, const json_t *reply)
{
	char freed[32];

	mbctl_size(freed, sizeof freed, mbctl_int(reply, "freed_bytes"));
	printf("%s: %s freed; Shmem %lld kB -> %lld kB\n", what, freed,
	       (long long)mbctl_int(reply, "shmem_before_kb"),
	       (long long)mbctl_int(reply, "shmem_after_kb"));
}

static int
mbctl_unload(struct mbctl *m, int argc, char **argv)
{
	json_t *req, *reply = NULL;
	double timeout;
	char what[128];
	int r;

	if (argc < 2)
		mbctl_usage_exit("unload wants a NAME", NULL);
	timeout = mbctl_timeout(argc, argv, 2);
	req = json_pack("{s:s, s:s}", "op", "unload", "name", argv[1]);
	if (timeout >= 0)
		json_object_set_new(req, "timeout", json_real(timeout));
	r = mbctl_call(m, req, true, &reply);
	if (r == 0 && !m->json) {
		snprintf(what, sizeof what, "%s unloaded in %lld ms", argv[1],
			 (long long)mbctl_int(reply, "waited_ms"));
		mbctl_print_freed(what, reply);
	}
	json_decref(reply);
	return r;
}

static int
mbctl_shutdown(struct mbctl *m, int argc, char **argv)
{
	double timeout = mbctl_timeout(argc, argv, 1);
	json_t *req = json_pack("{s:s}", "op", "shutdown"), *reply = NULL;
	char what[128];
	int r;

	if (timeout >= 0)
		json_object_set_new(req, "timeout", json_real(timeout));
	r = mbctl_call(m, req, true, &reply);
	if (r == 0 && !m->json) {
		snprintf(what, sizeof what, "shutdown complete in %lld ms, %lld "
			 "model(s) unloaded", (long long)mbctl_int(reply, "elapsed_ms"),
			 (long long)mbctl_int(reply, "models_unloaded"));
		mbctl_print_freed(what, reply);
	}
	json_decref(reply);
	return r;
}

/* The options of a load or reload; the policy and drain timeout ask for
 * a replace. */
struct mbctl_load_options {
	const char *path; /* NULL: the broker's (reload) or the catalog's */
	const char *format;
	const char *policy;
	double drain_timeout; /* -1: the broker's default */
	double keep_alive;    /* -1: the broker's --keep-alive */
	bool wait;
	bool replace;
};

/* Parses the seconds of option opt at arg: 0 to 86400; exits 2 when
 * they are not. */
static double
mbctl_seconds(const char *opt, const char *arg)
{
	char *end;
	double v = strtod(arg, &end);

	if (*end != '\0' || end == arg || !(v >= 0 && v <= 86400)) {
		char what[64];

		snprintf(what, sizeof what, "%s wants 0 to 86400 seconds, got",
			 opt);
		mbctl_usage_exit(what, arg);
	}
	return v;
}

/* Parses the PATH and options of load NAME [PATH] or reload NAME (from
 * argv[2]); exits 2 on a bad one. */
static void
mbctl_load_options(int argc, char **argv, bool reload,
		   struct mbctl_load_options *lo)
{
	int i = 2;

	*lo = (struct mbctl_load_options){.drain_timeout = -1,
					  .keep_alive = -1,
					  .replace = reload};
	if (!reload && i < argc && argv[i][0] != '-')
		lo->path = argv[i++];
	for (; i < argc; i++) {
		if (strcmp(argv[i], "--wait") == 0)
			lo->wait = true;
		else if (strcmp(argv[i], "--format") == 0 && !reload &&
			 i + 1 < argc)
			lo->format = argv[++i];
		else if (strcmp(argv[i], "--replace") == 0 && !reload)
			lo->replace = true;
		else if (strcmp(argv[i], "--policy") == 0 && i + 1 < argc)
			lo->policy = argv[++i];
		else if ((strcmp(argv[i], "--drain-timeout") == 0 ||
			  strcmp(argv[i], "--timeout-drain") == 0) &&
			 i + 1 < argc)
			lo->drain_timeout = mbctl_seconds("--drain-timeout",
							  argv[++i]);
		else if (strcmp(argv[i], "--keep-alive") == 0 && !reload &&
			 i + 1 < argc)
			lo->keep_alive = mbctl_seconds("--keep-alive",
						       argv[++i]);
		else
			mbctl_usage_exit("unexpected argument", argv[i]);
	}
	if (lo->policy != NULL && strcmp(lo->policy, "availability") != 0 &&
	    strcmp(lo->policy, "resource") != 0)
		mbctl_usage_exit("--policy wants availability or resource, got",
				 lo->policy);
	if (!lo->replace && (lo->policy != NULL || lo->drain_timeout >= 0))
		mbctl_usage_exit("--policy and --drain-timeout go with --replace",
				 NULL);
}

/* The generation of model object mod that has role, or -1. */
static json_int_t
mbctl_generation_of(const json_t *mod, const char *role)
{
	const json_t *g;
	size_t i;

	json_array_foreach(json_object_get(mod, "generations"), i, g)
		if (strcmp(mbctl_str(g, "role"), role) == 0)
			return mbctl_int(g, "generation");
	return -1;
}

/* What a successful load or replace says to people. */
static void
mbctl_print_loaded(const char *name, const struct mbctl_load_options *lo,
		   const json_t *reply)
{
	char size[32];
	json_int_t next = mbctl_generation_of(reply, "next");

	mbctl_size(size, sizeof size, mbctl_int(reply, "size"));
	if (lo->wait)
		printf("%s READY: generation %lld, %s, xxh3 %s, %lld tensors, "
		       "loaded in %lld ms%s\n", name,
		       (long long)mbctl_int(reply, "generation"), size,
		       mbctl_str(reply, "checksum"),
		       (long long)mbctl_int(reply, "tensors"),
		       (long long)mbctl_int(reply, "load_ms"),
		       json_is_true(json_object_get(reply, "gap"))
			       ? " (unloaded first: a gap in service)" : "");
	else if (lo->replace && next >= 0)
		printf("%s LOADING generation %lld; generation %lld serves "
		       "until it is READY\n", name, (long long)next,
		       (long long)mbctl_int(reply, "generation"));
	else
		printf("%s LOADING (generation %lld)\n", name,
		       (long long)mbctl_int(reply, "generation"));
}

/*
 * load NAME [PATH] and reload NAME: a load request, with "replace" for a
 * new generation beside the serving one.  Without a path the broker
 * finds the file: the model's own for a reload, the catalog's for a
 * load.
 */
static int
mbctl_load(struct mbctl *m, int argc, char **argv, bool reload)
{
	char path[PATH_MAX], cwd[PATH_MAX];
	struct mbctl_progress *progress = NULL;
	struct mbctl_load_options lo;
	json_t *req, *reply = NULL;
	int r;

	if (argc < 2 || argv[1][0] == '-')
		mbctl_usage_exit(reload ? "reload wants a NAME"
					: "load wants a NAME", NULL);
	mbctl_load_options(argc, argv, reload, &lo);
	req = json_pack("{s:s, s:s, s:b}", "op", "load", "name", argv[1],
			"wait", lo.wait);
	if (lo.path != NULL) {
		if (lo.path[0] == '/')
			snprintf(path, sizeof path, "%s", lo.path);
		else if (getcwd(cwd, sizeof cwd) == NULL ||
			 snprintf(path, sizeof path, "%s/%s", cwd, lo.path) >=
				 (int)sizeof path)
			mbctl_usage_exit("path too long", lo.path);
		json_object_set_new(req, "path", json_string(path));
	}
	if (lo.format != NULL)
		json_object_set_new(req, "format", json_string(lo.format));
	if (lo.replace)
		json_object_set_new(req, "replace", json_true());
	if (lo.policy != NULL)
		json_object_set_new(req, "policy", json_string(lo.policy));
	if (lo.drain_timeout >= 0)
		json_object_set_new(req, "timeout",
				    json_real(lo.drain_timeout));
	if (lo.keep_alive >= 0)
		json_object_set_new(req, "keep_alive",
				    lo.keep_alive == (json_int_t)lo.keep_alive
					    ? json_integer(lo.keep_alive)
					    : json_real(lo.keep_alive));
	if (lo.wait && !m->json)
		progress = mbctl_progress_start(m, argv[1]);
	r = mbctl_call(m, req, lo.wait, &reply);
	mbctl_progress_stop(progress);
	if (r == 0 && !m->json)
		mbctl_print_loaded(argv[1], &lo, reply);
	else if (lo.replace && !m->json &&
		 json_is_integer(json_object_get(reply, "generation")))
		fprintf(stderr, "mbctl: %s still serves generation %lld\n",
			argv[1], (long long)mbctl_int(reply, "generation"));
	json_decref(reply);
	return r;
}

static int
mbctl_ping(struct mbctl *m)
{
	struct timespec a, b;
	json_t *reply = NULL;
	int r;

	clock_gettime(CLOCK_MONOTONIC, &a);
	r = mbctl_call(m, json_pack("{s:s}", "op", "ping"), false, &reply);
	clock_gettime(CLOCK_MONOTONIC, &b);
	if (r == 0 && !m->json)
		printf("pong in %.0f us\n", (b.tv_sec - a.tv_sec) * 1e6 +
						     (b.tv_nsec - a.tv_nsec) / 1e3);
	json_decref(reply);
	return r;
}

static int
mbctl_run(struct mbctl *m, int argc, char **argv)
{
	const char *cmd = argv[0];

	if (strcmp(cmd, "ping") == 0 && argc == 1)
		return mbctl_ping(m);
	if (strcmp(cmd, "load") == 0 || strcmp(cmd, "reload") == 0)
		return mbctl_load(m, argc, argv, strcmp(cmd, "reload") == 0);
	if (strcmp(cmd, "unload") == 0)
		return mbctl_unload(m, argc, argv);
	if (strcmp(cmd, "list") == 0 && argc == 1)
		return mbctl_list(m);
	if (strcmp(cmd, "catalog") == 0 && argc == 1)
		return mbctl_catalog(m);
	if (strcmp(cmd, "memory") == 0 && argc == 1)
		return mbctl_memory(m);
	if ((strcmp(cmd, "pin") == 0 || strcmp(cmd, "unpin") == 0) &&
	    argc == 2)
		return mbctl_pin(m, argv[1], strcmp(cmd, "pin") == 0);
	if (strcmp(cmd, "stats") == 0 && argc == 1)
		return mbctl_stats(m);
	if (strcmp(cmd, "workers") == 0 && argc == 1)
		return mbctl_workers(m);
	if (strcmp(cmd, "shutdown") == 0)
		return mbctl_shutdown(m, argc, argv);
	if (strcmp(cmd, "top") == 0 && argc == 1)
		return mbctl_top(m, 0);
	if (strcmp(cmd, "top") == 0 && argc == 3 &&
	    strcmp(argv[1], "--iterations") == 0 && atol(argv[2]) > 0)
		return mbctl_top(m, atol(argv[2]));
	mbctl_usage_exit("unknown command or arguments", cmd);
}

/* The global --timeout: seconds, more than 0, as milliseconds. */
static int
mbctl_timeout_ms(const char *arg)
{
	char *end;
	double v = strtod(arg, &end);

	if (*end != '\0' || end == arg || !(v > 0) || v > INT_MAX / 1000)
		mbctl_usage_exit("--timeout wants seconds, got", arg);
	return v * 1000 < 1 ? 1 : (int)(v * 1000);
}

/* --broker-uid: a decimal uid. */
static int64_t
mbctl_uid(const char *arg)
{
	char *end;
	long long v = strtoll(arg, &end, 10);

	if (*end != '\0' || end == arg || v < 0 || v >= UINT32_MAX)
		mbctl_usage_exit("--broker-uid wants a uid, got", arg);
	return v;
}

static bool
mbctl_known(const char *cmd)
{
	static const char *const cmds[] = {"ping", "load", "reload", "unload",
					   "list", "catalog", "memory", "pin",
					   "unpin",
					   "stats", "workers", "shutdown",
					   "top"};

	for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
		if (strcmp(cmd, cmds[i]) == 0)
			return true;
	return false;
}

int
main(int argc, char **argv)
{
	struct mbctl m = {.timeout_ms = MBCTL_TIMEOUT_MS, .broker_uid = -1};
	char def[PATH_MAX], why[512] = "";
	int i, r;

	for (i = 1; i < argc && argv[i][0] == '-'; i++) {
		if (strcmp(argv[i], "--json") == 0)
			m.json = true;
		else if (strcmp(argv[i], "--socket") == 0 && i + 1 < argc)
			m.socket = argv[++i];
		else if (strcmp(argv[i], "--timeout") == 0 && i + 1 < argc)
			m.timeout_ms = mbctl_timeout_ms(argv[++i]);
		else if (strcmp(argv[i], "--broker-uid") == 0 && i + 1 < argc)
			m.broker_uid = mbctl_uid(argv[++i]);
		else if (strcmp(argv[i], "--help") == 0) {
			fputs(mbctl_usage, stdout);
			return 0;
		} else
			mbctl_usage_exit("unknown option", argv[i]);
	}
	if (i >= argc)
		mbctl_usage_exit("no command", NULL);
	if (!mbctl_known(argv[i]))
		mbctl_usage_exit("unknown command", argv[i]);
	if (m.socket == NULL && mb_default_socket_path(def, sizeof def) == 0)
		m.socket = def;
	if ((r = mbctl_connect(&m, &m.client, why, sizeof why)) == -ETIMEDOUT)
		return mbctl_timed_out(&m);
	if (r < 0) {
		fprintf(stderr, "mbctl: cannot reach the broker at %s: %s%s%s\n",
			m.socket != NULL ? m.socket : "?", mb_strerror(r),
			why[0] != '\0' ? ": " : "", why);
		return 3;
	}
	r = mbctl_run(&m, argc - i, argv + i);
	mb_close(m.client);
	return r;
}
