/* SPDX-License-Identifier: MIT */
/*
 * pocketsphinx_pool.c - a pool of C speech recognisers (pocketsphinx with
 * its en-us model) and what each one costs in memory.  The parent forks N
 * workers; each gets a decoder one of three ways: `disk` opens the model
 * directory itself, `fork` inherits the decoder the parent opened before
 * forking (copy-on-write), `broker` attaches the model as an mbroker
 * bundle, keeping each member's descriptor, and points pocketsphinx at
 * the attachment's member directory.  Each worker decodes the clips
 * (16 kHz 16-bit mono, WAV or raw) and prints one transcript per clip; a
 * broker worker that the broker asks to let go (unload, shutdown)
 * finishes the clip in hand, frees its decoder, acknowledges and exits 0.
 * Once every worker has decoded, all measure their memory at the same
 * moment (model_memory.c) and the parent prints the table: model bytes
 * the engine maps in place (pocketsphinx mmaps only mdef and sendump),
 * private heap (it reads everything else into malloc'd memory), total
 * Pss, and the model files, or bundle members, it never maps.
 *
 *     build/examples/pocketsphinx_pool --mode disk --workers 4 clip.wav
 *     mbctl load en-us /usr/share/pocketsphinx/model/en-us
 *     build/examples/pocketsphinx_pool --mode broker --socket S clip.wav
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <pocketsphinx.h>
#include <sphinxbase/err.h>

#include "clip.h"
#include "mbroker.h"
#include "model_memory.h"

#define POOL_MAX_WORKERS 64
#define POOL_DEFAULT_MODEL "/usr/share/pocketsphinx/model/en-us"
#define MIB(bytes) ((double)(bytes) / (1024.0 * 1024.0))

enum pool_mode { POOL_DISK, POOL_FORK, POOL_BROKER };

struct pool_options {
	enum pool_mode mode;
	int workers;
	long rounds; /* passes over the clips; 0: until the broker stops us */
	const char *model_dir;
	const char *socket;
	const char *bundle;
	int wait_ms;
	char **clips;
	int nclips;
};

/* A worker's messages to the parent on its pipe. */
enum pool_report_kind { POOL_DECODED = 1, POOL_MEASURED };

struct pool_report {
	enum pool_report_kind kind;
	double init_ms;
	double decode_ms;
	long clips;
	struct model_memory mem;
};

/* A worker as the parent sees it. */
struct pool_child {
	pid_t pid;
	int report_fd; /* reads the worker's reports; -1 once it ended */
	int go_fd;     /* one byte: measure now; a second: exit */
	bool decoded;
	bool measured;
	struct pool_report report;
};

/* The decoder a worker runs, and where its model comes from. */
struct pool_worker {
	const struct pool_options *o;
	int index;
	ps_decoder_t *ps;
	struct model_files files;
	struct mb_client *client; /* broker mode */
	struct mb_attachment *att;
	enum mb_event_type stopped_by; /* the broker's event that stops us */
	int report_fd;
	int go_fd;
	struct pool_report report;
};

static const char pool_usage[] =
	"usage: pocketsphinx_pool [--mode disk|fork|broker] [--workers N]\n"
	"                         [--rounds N] [--model DIR] [--socket PATH]\n"
	"                         [--bundle NAME] [--wait-ms MS] CLIP...\n"
	"\n"
	"Runs N (default 4) pocketsphinx workers that decode every CLIP\n"
	"(16 kHz 16-bit mono, WAV or raw) --rounds times (default 1; 0, broker\n"
	"mode only: until the broker unloads the bundle or shuts down),\n"
	"printing 'worker K clip NAME: TRANSCRIPT', then the memory table.\n"
	"  --mode disk    each worker opens the model directory (default)\n"
	"  --mode fork    the parent opens one decoder, workers fork after it\n"
	"  --mode broker  each worker attaches the bundle --bundle (default\n"
	"                 en-us, waiting --wait-ms for it, default 10000) from\n"
	"                 the broker at --socket, and opens the model through\n"
	"                 the attachment's member directory\n"
	"  --model DIR    the model directory (default " POOL_DEFAULT_MODEL ")\n"
	"Exit status: 0 every worker done, 1 a worker failed, 2 usage.\n";

static double
pool_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static long
pool_number(const char *text, const char *what, long low)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(text, &end, 10);
	if (errno != 0 || *end != '\0' || end == text || v < low ||
	    v > INT_MAX) {
		fprintf(stderr, "pocketsphinx_pool: %s wants a number >= %ld, "
			"got '%s'\n", what, low, text);
		exit(2);
	}
	return v;
}

static void
pool_parse(int argc, char **argv, struct pool_options *o)
{
	static const struct option longopts[] = {
		{"mode", required_argument, NULL, 'm'},
		{"workers", required_argument, NULL, 'n'},
		{"rounds", required_argument, NULL, 'r'},
		{"model", required_argument, NULL, 'd'},
		{"socket", required_argument, NULL, 's'},
		{"bundle", required_argument, NULL, 'b'},
		{"wait-ms", required_argument, NULL, 'w'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	int c;

	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (c) {
		case 'm':
			if (strcmp(optarg, "disk") == 0)
				o->mode = POOL_DISK;
			else if (strcmp(optarg, "fork") == 0)
				o->mode = POOL_FORK;
			else if (strcmp(optarg, "broker") == 0)
				o->mode = POOL_BROKER;
			else {
				fputs(pool_usage, stderr);
				exit(2);
			}
			break;
		case 'n':
			o->workers = (int)pool_number(optarg, "--workers", 1);
			break;
		case 'r': o->rounds = pool_number(optarg, "--rounds", 0); break;
		case 'd': o->model_dir = optarg; break;
		case 's': o->socket = optarg; break;
		case 'b': o->bundle = optarg; break;
		case 'w':
			o->wait_ms = (int)pool_number(optarg, "--wait-ms", 0);
			break;
		case 'h': fputs(pool_usage, stdout); exit(0);
		default: fputs(pool_usage, stderr); exit(2);
		}
	}
	o->clips = argv + optind;
	o->nclips = argc - optind;
	if (o->nclips == 0 || o->workers > POOL_MAX_WORKERS ||
	    (o->rounds == 0 && o->mode != POOL_BROKER)) {
		fputs(pool_usage, stderr);
		exit(2);
	}
}

/*
 * A decoder for the en-us model laid out in dir (en-us/ acoustic model,
 * en-us.lm.bin, cmudict-en-us.dict), or NULL.  pocketsphinx keeps the
 * configuration and logs nowhere.
 */
static ps_decoder_t *
pool_decoder_new(const char *dir)
{
	char hmm[PATH_MAX], lm[PATH_MAX], dict[PATH_MAX];
	ps_decoder_t *ps;
	cmd_ln_t *config;

	snprintf(hmm, sizeof hmm, "%s/en-us", dir);
	snprintf(lm, sizeof lm, "%s/en-us.lm.bin", dir);
	snprintf(dict, sizeof dict, "%s/cmudict-en-us.dict", dir);
	err_set_logfp(NULL);
	config = cmd_ln_init(NULL, ps_args(), TRUE, "-hmm", hmm, "-lm", lm,
			     "-dict", dict, NULL);
	if (config == NULL)
		return NULL;
	ps = ps_init(config);
	cmd_ln_free_r(config);
	return ps;
}

/* Decodes one whole clip into text (empty when nothing was heard). */
static int
pool_decode(ps_decoder_t *ps, const int16_t *samples, size_t n, char *text,
	    size_t len)
{
	const char *hyp;
	int32 score;

	if (ps_start_utt(ps) < 0 ||
	    ps_process_raw(ps, samples, n, FALSE, TRUE) < 0 ||
	    ps_end_utt(ps) < 0)
		return -1;
	hyp = ps_get_hyp(ps, &score);
	snprintf(text, len, "%s", hyp ? hyp : "");
	return 0;
}

/* Writes a whole report; a worker whose parent is gone just ends. */
static void
pool_report_send(int fd, const struct pool_report *r)
{
	if (write(fd, r, sizeof *r) != (ssize_t)sizeof *r)
		_exit(1);
}

/*
 * Attaches the bundle, keeping its members' descriptors, and opens a
 * decoder on its member directory: pocketsphinx opens and reads the
 * broker's segments through the links to /proc/self/fd.  Returns 0, or
 * -1 having said why.
 */
static int
pool_worker_attach(struct pool_worker *w)
{
	const struct pool_options *o = w->o;
	char dir[PATH_MAX];
	int r;

	if ((r = mb_connect(o->socket, &w->client)) < 0) {
		fprintf(stderr, "pocketsphinx_pool: worker %d cannot connect: "
			"%s\n", w->index, mb_strerror(r));
		return -1;
	}
	if ((r = mb_attach_ex(w->client, o->bundle, MB_ATTACH_KEEP_FDS,
			      o->wait_ms, &w->att)) < 0) {
		fprintf(stderr, "pocketsphinx_pool: worker %d cannot attach "
			"%s: %s%s%s\n", w->index, o->bundle, mb_strerror(r),
			mb_last_error(w->client)[0] ? ": " : "",
			mb_last_error(w->client));
		return -1;
	}
	if ((r = mb_member_dir(w->att, dir, sizeof dir)) < 0) {
		fprintf(stderr, "pocketsphinx_pool: worker %d: no member "
			"directory for %s: %s\n", w->index, o->bundle,
			mb_strerror(r));
		return -1;
	}
	if (model_memory_files_from_attachment(&w->files, w->att) < 0) {
		fprintf(stderr, "pocketsphinx_pool: worker %d: the members of "
			"%s: %s\n", w->index, o->bundle, strerror(errno));
		return -1;
	}
	if ((w->ps = pool_decoder_new(dir)) == NULL) {
		fprintf(stderr, "pocketsphinx_pool: worker %d: pocketsphinx "
			"cannot open bundle %s\n", w->index, o->bundle);
		return -1;
	}
	return 0;
}

/*
 * Opens the worker's decoder the way its mode says.  Returns 0, or -1
 * having said why.
 */
static int
pool_worker_open(struct pool_worker *w, ps_decoder_t *inherited)
{
	const struct pool_options *o = w->o;

	if (o->mode == POOL_BROKER)
		return pool_worker_attach(w);
	if (o->mode == POOL_FORK) {
		w->ps = inherited;
		return model_memory_files_from_dir(&w->files, o->model_dir);
	}
	if (model_memory_files_from_dir(&w->files, o->model_dir) < 0) {
		fprintf(stderr, "pocketsphinx_pool: %s: %s\n", o->model_dir,
			strerror(errno));
		return -1;
	}
	if ((w->ps = pool_decoder_new(o->model_dir)) == NULL) {
		fprintf(stderr, "pocketsphinx_pool: worker %d: pocketsphinx "
			"cannot open %s\n", w->index, o->model_dir);
		return -1;
	}
	return 0;
}

/*
 * Whether the broker asks for the bundle back: an unload of it, a
 * shutdown, or a lost connection (a replacement is not followed: a
 * decoder holds its generation until it ends).  Sets w->stopped_by.
 */
static bool
pool_worker_stopping(struct pool_worker *w)
{
	struct mb_event ev;

	while (w->client != NULL && w->stopped_by == MB_EVENT_NONE &&
	       mb_next_event(w->client, &ev) == 1)
		if ((ev.type == MB_EVENT_UNLOAD &&
		     strcmp(ev.model, w->o->bundle) == 0) ||
		    ev.type == MB_EVENT_SHUTDOWN ||
		    ev.type == MB_EVENT_BROKER_LOST)
			w->stopped_by = ev.type;
	return w->stopped_by != MB_EVENT_NONE;
}

/*
 * Decodes every clip o->rounds times (0: until the broker stops us), one
 * transcript line each; looks at the broker's events between two clips.
 * Returns 0, 1 when the broker stopped us, or -1.
 */
static int
pool_worker_decode(struct pool_worker *w)
{
	const struct pool_options *o = w->o;
	char text[4096], name[256];
	int16_t *samples;
	size_t n;
	double t0;

	for (long round = 0; o->rounds == 0 || round < o->rounds; round++) {
		for (int i = 0; i < o->nclips; i++) {
			if (pool_worker_stopping(w))
				return 1;
			if ((samples = clip_read(o->clips[i], &n)) == NULL) {
				fprintf(stderr, "pocketsphinx_pool: %s: %s\n",
					o->clips[i], errno == EINVAL ?
					"not 16 kHz 16-bit mono PCM" :
					strerror(errno));
				return -1;
			}
			t0 = pool_now_ms();
			if (pool_decode(w->ps, samples, n, text, sizeof text) <
			    0) {
				fprintf(stderr, "pocketsphinx_pool: worker %d "
					"cannot decode %s\n", w->index,
					o->clips[i]);
				free(samples);
				return -1;
			}
			w->report.decode_ms += pool_now_ms() - t0;
			w->report.clips++;
			free(samples);
			clip_name(o->clips[i], name, sizeof name);
			printf("worker %d clip %s: %s\n", w->index, name, text);
		}
	}
	return 0;
}

/*
 * Waits for the parent's next byte, following the broker's events.
 * Returns 0 when it came, 1 when the broker stopped us meanwhile, -1 when
 * the parent is gone.
 */
static int
pool_worker_wait_parent(struct pool_worker *w)
{
	struct pollfd p[2] = {
		{.fd = w->go_fd, .events = POLLIN},
		{.fd = w->client ? mb_event_fd(w->client) : -1,
		 .events = POLLIN},
	};
	char byte;

	for (;;) {
		if (pool_worker_stopping(w))
			return 1;
		if (poll(p, 2, -1) < 0 && errno != EINTR)
			return -1;
		if (p[0].revents != 0)
			return read(w->go_fd, &byte, 1) == 1 ? 0 : -1;
	}
}

/*
 * Lets go of the decoder, and then of the bundle: pocketsphinx's own
 * mappings and descriptors of the segments go with ps_free, so once the
 * broker has the ack nothing of the bundle is left here.
 */
static void
pool_worker_close(struct pool_worker *w)
{
	if (w->o->mode != POOL_FORK)
		ps_free(w->ps);
	if (w->client == NULL)
		return;
	if (w->stopped_by == MB_EVENT_BROKER_LOST)
		printf("worker %d: broker lost after %ld clip(s), decoder "
		       "freed\n", w->index, w->report.clips);
	else if (w->stopped_by != MB_EVENT_NONE) {
		mb_ack(w->client);
		printf("worker %d: stopped by %s after %ld clip(s), decoder "
		       "freed, acknowledged\n", w->index,
		       w->stopped_by == MB_EVENT_UNLOAD ? "an unload"
							: "a shutdown",
		       w->report.clips);
	}
	mb_close(w->client);
}

/* Prints which model files this worker maps in place: tests read it. */
static void
pool_worker_say_in_place(const struct pool_worker *w)
{
	const struct model_memory *m = &w->report.mem;
	char line[4096];
	size_t off = 0;

	for (size_t i = 0; i < w->files.n && off < sizeof line; i++)
		if (w->files.f[i].in_place)
			off += (size_t)snprintf(line + off, sizeof line - off,
						" %s", w->files.f[i].name);
	printf("worker %d mapped in place (rss=%" PRIu64 " pss=%" PRIu64
	       "):%s\n", w->index, m->in_place_rss, m->in_place_pss,
	       off ? line : "");
}

/*
 * A worker's life: open, decode, report, measure with the others at the
 * parent's word, exit at its next word; or stop early when the broker
 * asks.  Returns the exit status.
 */
static int
pool_worker_run(struct pool_worker *w, ps_decoder_t *inherited)
{
	double t0 = pool_now_ms();
	int r;

	/* The broker's signal says what its event says: the event is read. */
	signal(SIGUSR1, SIG_IGN);
	if (pool_worker_open(w, inherited) < 0) {
		mb_close(w->client);
		return 1;
	}
	w->report.init_ms = pool_now_ms() - t0;
	if ((r = pool_worker_decode(w)) == 0) {
		w->report.kind = POOL_DECODED;
		pool_report_send(w->report_fd, &w->report);
		r = pool_worker_wait_parent(w);
	}
	if (r == 0 && model_memory_read(&w->files, &w->report.mem) < 0)
		r = -1;
	if (r == 0) {
		w->report.kind = POOL_MEASURED;
		pool_worker_say_in_place(w);
		pool_report_send(w->report_fd, &w->report);
		r = pool_worker_wait_parent(w);
	}
	pool_worker_close(w);
	return r < 0 ? 1 : 0;
}

/* Starts worker index; its pipes are set up here.  0 or -1. */
static int
pool_spawn(const struct pool_options *o, int index, struct pool_child *c,
	   struct pool_child *children, ps_decoder_t *inherited)
{
	int report[2], go[2];
	struct pool_worker w = {.o = o, .index = index};

	if (pipe2(report, O_CLOEXEC) < 0)
		return -1;
	if (pipe2(go, O_CLOEXEC) < 0) {
		close(report[0]);
		close(report[1]);
		return -1;
	}
	fflush(stdout);
	if ((c->pid = fork()) < 0) {
		close(report[0]);
		close(report[1]);
		close(go[0]);
		close(go[1]);
		return -1;
	}
	if (c->pid == 0) {
		for (int i = 0; i < index; i++) {
			close(children[i].report_fd);
			close(children[i].go_fd);
		}
		close(report[0]);
		close(go[1]);
		w.report_fd = report[1];
		w.go_fd = go[0];
		exit(pool_worker_run(&w, inherited));
	}
	close(report[1]);
	close(go[0]);
	c->report_fd = report[0];
	c->go_fd = go[1];
	return 0;
}

/* Tells every worker still running to go on (one byte each). */
static void
pool_release(struct pool_child *children, int n)
{
	for (int i = 0; i < n; i++)
		if (children[i].report_fd >= 0 &&
		    write(children[i].go_fd, "g", 1) != 1)
			fprintf(stderr, "pocketsphinx_pool: worker %d is "
				"gone\n", i + 1);
}

/*
 * Reads reports until every worker still running has sent one of kind;
 * a worker whose pipe closes has ended (its status tells how).
 */
static void
pool_collect(struct pool_child *children, int n, enum pool_report_kind kind)
{
	struct pollfd p[POOL_MAX_WORKERS];
	struct pool_report r;
	int waiting;

	for (;;) {
		waiting = 0;
		for (int i = 0; i < n; i++) {
			struct pool_child *c = &children[i];
			bool done = kind == POOL_DECODED ? c->decoded
							 : c->measured;

			p[i].fd = c->report_fd >= 0 && !done ? c->report_fd
							     : -1;
			p[i].events = POLLIN;
			waiting += p[i].fd >= 0;
		}
		if (waiting == 0)
			return;
		if (poll(p, (nfds_t)n, -1) < 0 && errno != EINTR)
			return;
		for (int i = 0; i < n; i++) {
			struct pool_child *c = &children[i];

			if (p[i].fd < 0 || p[i].revents == 0)
				continue;
			if (read(c->report_fd, &r, sizeof r) != sizeof r) {
				close(c->report_fd);
				c->report_fd = -1;
				continue;
			}
			c->report = r;
			c->decoded = true;
			c->measured = r.kind == POOL_MEASURED;
		}
	}
}

static const char *
pool_mode_name(enum pool_mode mode)
{
	return mode == POOL_DISK ? "disk" : mode == POOL_FORK ? "fork"
							       : "broker";
}

static void
pool_table_row(const char *who, const struct pool_report *r)
{
	const struct model_memory *m = &r->mem;

	printf("%-8s %7.0f %9.0f %8.1f %8.1f %7.1f %9.1f %8.1f %7.1f "
	       "%3u/%-3u %5.1f\n", who, r->init_ms, r->decode_ms,
	       MIB(m->in_place_rss), MIB(m->in_place_pss), MIB(m->library_rss),
	       MIB(m->heap_private), MIB(m->heap_pss), MIB(m->total_pss),
	       m->unmapped_files, m->files, MIB(m->unmapped_bytes));
}

/*
 * The memory table: one row per worker that measured (and the parent's
 * decoder in fork mode), then their sum; MiB.
 */
static void
pool_table(const struct pool_options *o, const struct pool_child *children,
	   int n, const struct pool_report *parent)
{
	struct pool_report sum = {0};
	char who[32];
	int rows = 0;

	for (int i = 0; i < n; i++)
		rows += children[i].measured;
	if (rows == 0) {
		printf("memory: no worker measured\n");
		return;
	}
	printf("memory (%s mode, %d workers; MiB):\n", pool_mode_name(o->mode),
	       o->workers);
	printf("%-8s %7s %9s %8s %8s %7s %9s %8s %7s %7s %5s\n", "process",
	       "init_ms", "decode_ms", "inpl_rss", "inpl_pss", "lib_rss",
	       "heap_priv", "heap_pss", "pss", "unmapd", "MiB");
	if (parent != NULL) {
		pool_table_row("parent", parent);
		sum = *parent;
	}
	for (int i = 0; i < n; i++) {
		const struct pool_report *r = &children[i].report;

		if (!children[i].measured)
			continue;
		snprintf(who, sizeof who, "worker%d", i + 1);
		pool_table_row(who, r);
		sum.init_ms += r->init_ms;
		sum.decode_ms += r->decode_ms;
		sum.mem.in_place_rss += r->mem.in_place_rss;
		sum.mem.in_place_pss += r->mem.in_place_pss;
		sum.mem.library_rss += r->mem.library_rss;
		sum.mem.heap_private += r->mem.heap_private;
		sum.mem.heap_pss += r->mem.heap_pss;
		sum.mem.total_pss += r->mem.total_pss;
		sum.mem.files = r->mem.files;
		sum.mem.unmapped_files = r->mem.unmapped_files;
		sum.mem.unmapped_bytes = r->mem.unmapped_bytes;
	}
	pool_table_row("sum", &sum);
	printf("memory sum: in_place_pss=%" PRIu64 " heap_private=%" PRIu64
	       " pss=%" PRIu64 " workers=%d\n", sum.mem.in_place_pss,
	       sum.mem.heap_private, sum.mem.total_pss, rows);
}

/* Reaps every worker; 0 when each exited 0. */
static int
pool_reap(struct pool_child *children, int n)
{
	int status, failed = 0;
	pid_t pid;

	for (int i = 0; i < n; i++) {
		while ((pid = waitpid(children[i].pid, &status, 0)) < 0 &&
		       errno == EINTR)
			;
		if (pid < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
			fprintf(stderr, "pocketsphinx_pool: worker %d ended "
				"with status %d\n", i + 1, status);
			failed = 1;
		}
	}
	return failed;
}

/* The memory of the parent's decoder (fork mode), with the workers'. */
static void
pool_parent_measure(const char *model_dir, struct model_memory *mem)
{
	struct model_files *files = malloc(sizeof *files);

	if (files != NULL && model_memory_files_from_dir(files, model_dir) == 0)
		model_memory_read(files, mem);
	free(files);
}

int
main(int argc, char **argv)
{
	struct pool_options o = {.workers = 4, .rounds = 1,
				 .model_dir = POOL_DEFAULT_MODEL,
				 .bundle = "en-us", .wait_ms = 10000};
	struct pool_child children[POOL_MAX_WORKERS];
	struct pool_report parent = {0};
	ps_decoder_t *inherited = NULL;
	double t0;
	int started = 0;

	setvbuf(stdout, NULL, _IOLBF, 0);
	pool_parse(argc, argv, &o);
	signal(SIGPIPE, SIG_IGN);
	if (o.mode == POOL_FORK) {
		t0 = pool_now_ms();
		if ((inherited = pool_decoder_new(o.model_dir)) == NULL) {
			fprintf(stderr, "pocketsphinx_pool: pocketsphinx "
				"cannot open %s\n", o.model_dir);
			return 1;
		}
		parent.init_ms = pool_now_ms() - t0;
	}
	for (; started < o.workers; started++) {
		children[started] = (struct pool_child){.report_fd = -1,
							.go_fd = -1};
		if (pool_spawn(&o, started + 1, &children[started], children,
			       inherited) < 0) {
			fprintf(stderr, "pocketsphinx_pool: cannot start a "
				"worker: %s\n", strerror(errno));
			break;
		}
	}
	pool_collect(children, started, POOL_DECODED);
	if (inherited != NULL)
		pool_parent_measure(o.model_dir, &parent.mem);
	pool_release(children, started);
	pool_collect(children, started, POOL_MEASURED);
	pool_table(&o, children, started, inherited ? &parent : NULL);
	pool_release(children, started);
	if (inherited != NULL)
		ps_free(inherited);
	return pool_reap(children, started) || started < o.workers;
}
