/* SPDX-License-Identifier: MIT */
/*
 * mbworker.c - the reference worker: attaches one model, verifies that the
 * bytes it maps are the ones the broker loaded (every member of a bundle,
 * and its list of members), then runs inference-like
 * passes that read every weight until the broker asks for the model back
 * (an event on the connection or SIGUSR1), and then acknowledges.  When
 * the broker replaces the model it moves to the new generation between
 * two passes, holding the new one (verified) before it lets go of the
 * old.  --populate has the attach fill its page tables, so that its first
 * pass is as fast as the others.  Test switches make it slow
 * (--ack-delay), deaf (--no-ack), blind to replacements (--no-follow) or
 * say what each pass read (--verbose).
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "checksum.h"
#include "mbroker.h"

/* Bytes read between two looks at the unload flag. */
#define MBWORKER_STRIDE (1u << 20)

static volatile sig_atomic_t mbworker_unload;
static volatile sig_atomic_t mbworker_acked_in_handler;
/* With --ack-in-handler, the signal handler acknowledges by itself. */
static struct mb_client *mbworker_handler_client;

struct mbworker_options {
	const char *socket;
	const char *model;
	long ack_delay_ms;
	bool no_ack;
	long passes;
	long interval_ms;
	bool ack_in_handler;
	bool no_follow;
	bool verbose;
	bool populate;
	const char *tensor;
};

/* The model held, and what following its replacements cost. */
struct mbworker {
	const struct mbworker_options *o;
	struct mb_client *client;
	struct mb_attachment *att;
	long replaced;
	double without_model_ms; /* from dropping the old to holding the new */
};

static const char mbworker_usage[] =
	"usage: mbworker [--socket PATH] --model NAME [--passes N]\n"
	"                [--interval MS] [--tensor NAME] [--ack-delay MS]\n"
	"                [--ack-in-handler] [--no-ack] [--no-follow] [--verbose]\n"
	"                [--populate]\n"
	"\n"
	"Attaches NAME, verifies its checksum, reads every weight in a loop\n"
	"(every --interval ms; 0: back to back) until the broker unloads it\n"
	"or --passes passes are done, then acknowledges and exits 0.  When the\n"
	"broker replaces NAME, it attaches the new generation, verifies it and\n"
	"only then detaches the old one; at exit it says how many times, and\n"
	"how long it held no model meanwhile.\n"
	"  --tensor NAME     print that tensor's dtype, shape and first bytes\n"
	"  --populate        fill the page tables at attach (and at each\n"
	"                    replacement's): the first pass takes no fault\n"
	"  --verbose         verify the checksum after every pass and print\n"
	"                    'pass K generation G checksum ok'\n"
	"  --no-follow       ignore replacements: stay on the old generation\n"
	"  --ack-delay MS    wait MS before acknowledging an unload\n"
	"  --ack-in-handler  acknowledge inside the signal handler itself (only\n"
	"                    the signal ends the loop; events, replacements\n"
	"                    too, are not read)\n"
	"  --no-ack          never acknowledge (for timeout tests)\n"
	"Exit status: 0 done, 1 broker error, 2 usage, 3 checksum mismatch.\n";

static void
mbworker_on_signal(int sig)
{
	(void)sig;
	mbworker_unload = 1;
	if (mbworker_handler_client != NULL && !mbworker_acked_in_handler) {
		mb_ack(mbworker_handler_client);
		mbworker_acked_in_handler = 1;
	}
}

static double
mbworker_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static long
mbworker_number(const char *text, const char *what)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(text, &end, 10);
	if (errno != 0 || *end != '\0' || end == text || v < 0) {
		fprintf(stderr, "mbworker: %s wants a number >= 0, got '%s'\n",
			what, text);
		exit(2);
	}
	return v;
}

static void
mbworker_parse(int argc, char **argv, struct mbworker_options *o)
{
	static const struct option longopts[] = {
		{"socket", required_argument, NULL, 's'},
		{"model", required_argument, NULL, 'm'},
		{"ack-delay", required_argument, NULL, 'd'},
		{"no-ack", no_argument, NULL, 'n'},
		{"passes", required_argument, NULL, 'p'},
		{"interval", required_argument, NULL, 'i'},
		{"tensor", required_argument, NULL, 't'},
		{"ack-in-handler", no_argument, NULL, 'a'},
		{"no-follow", no_argument, NULL, 'f'},
		{"verbose", no_argument, NULL, 'v'},
		{"populate", no_argument, NULL, 'P'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	int c;

	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (c) {
		case 's': o->socket = optarg; break;
		case 'm': o->model = optarg; break;
		case 'd': o->ack_delay_ms = mbworker_number(optarg, "--ack-delay"); break;
		case 'n': o->no_ack = true; break;
		case 'p': o->passes = mbworker_number(optarg, "--passes"); break;
		case 'i': o->interval_ms = mbworker_number(optarg, "--interval"); break;
		case 't': o->tensor = optarg; break;
		case 'a': o->ack_in_handler = true; break;
		case 'f': o->no_follow = true; break;
		case 'v': o->verbose = true; break;
		case 'P': o->populate = true; break;
		case 'h': fputs(mbworker_usage, stdout); exit(0);
		default: fputs(mbworker_usage, stderr); exit(2);
		}
	}
	if (o->model == NULL || optind != argc) {
		fputs(mbworker_usage, stderr);
		exit(2);
	}
}

/* One pass over the bytes of a member, stopping early when asked to
 * unload. */
static uint64_t
mbworker_pass_member(const unsigned char *data, size_t size)
{
	uint64_t sum = 0;

	for (size_t off = 0; off < size && !mbworker_unload;
	     off += MBWORKER_STRIDE) {
		size_t end = size - off < MBWORKER_STRIDE ? size : off + MBWORKER_STRIDE;
		size_t i = off;

		for (; i + 8 <= end; i += 8) {
			uint64_t w;

			memcpy(&w, data + i, 8);
			sum += w;
		}
		for (; i < end; i++)
			sum += data[i];
	}
	return sum;
}

/* One pass over every weight of every member. */
static uint64_t
mbworker_pass(const struct mb_attachment *att)
{
	struct mb_member m;
	uint64_t sum = 0;

	for (size_t i = 0; mb_member_at(att, i, &m) == 0; i++)
		sum += mbworker_pass_member(m.data, m.size);
	return sum;
}

/* Sleeps ms whatever signals arrive meanwhile (they interrupt a poll). */
static void
mbworker_sleep_ms(long ms)
{
	struct timespec until;

	clock_gettime(CLOCK_MONOTONIC, &until);
	until.tv_sec += ms / 1000;
	until.tv_nsec += ms % 1000 * 1000000;
	if (until.tv_nsec >= 1000000000) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000;
	}
	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &until, NULL) ==
	       EINTR)
		;
}

/* Where tensor t starts in the member holding it (*in). */
static size_t
mbworker_tensor_offset(const struct mb_attachment *att,
		       const struct mb_tensor *t, struct mb_member *in)
{
	const unsigned char *at = t->data;

	for (size_t i = 0; mb_member_at(att, i, in) == 0; i++) {
		const unsigned char *start = in->data;

		if (start != NULL && at >= start && at < start + in->size)
			return (size_t)(at - start);
	}
	return 0;
}

/* Prints one tensor as read through the mapping; 0 or -1. */
static int
mbworker_print_tensor(const struct mb_attachment *att, const char *name)
{
	const unsigned char *p;
	struct mb_member in;
	struct mb_tensor t;

	if (mb_tensor_find(att, name, &t) < 0) {
		fprintf(stderr, "mbworker: no tensor %s\n", name);
		return -1;
	}
	printf("tensor %s %s [", t.name, t.dtype);
	for (int d = 0; d < t.ndim; d++)
		printf("%s%" PRId64, d ? "," : "", t.shape[d]);
	printf("] %zu bytes at offset %zu", t.nbytes,
	       mbworker_tensor_offset(att, &t, &in));
	if (strcmp(mb_attachment_format(att), "bundle") == 0)
		printf(" of %s", in.name);
	printf(", first bytes");
	p = t.data;
	for (size_t i = 0; i < 8 && i < t.nbytes; i++)
		printf(" %02x", p[i]);
	putchar('\n');
	return 0;
}

/* A bundle's checksum from its members' names, sizes and checksums (see
 * docs/protocol.md). */
static uint64_t
mbworker_bundle_checksum(const struct mb_attachment *att)
{
	struct bundle_sum sum;
	struct mb_member m;

	bundle_sum_begin(&sum);
	for (size_t i = 0; mb_member_at(att, i, &m) == 0; i++)
		bundle_sum_add(&sum, m.name, m.size, m.checksum);
	return bundle_sum_end(&sum);
}

/* Whether the mappings read as what the broker loaded: each member's
 * bytes, and for a bundle the list of members too. */
static bool
mbworker_verified(const struct mb_attachment *att)
{
	struct mb_member m;

	for (size_t i = 0; mb_member_at(att, i, &m) == 0; i++)
		if (mb_checksum(m.data, m.size) != m.checksum)
			return false;
	if (strcmp(mb_attachment_format(att), "bundle") != 0)
		return true;
	return mbworker_bundle_checksum(att) == mb_attachment_checksum(att);
}

/* The options of every attach: MB_ATTACH_POPULATE with --populate. */
static unsigned
mbworker_attach_flags(const struct mbworker_options *o)
{
	return o->populate ? MB_ATTACH_POPULATE : 0;
}

/*
 * Moves to the generation that replaced ours: attaches it and verifies it
 * while the old one still serves, then detaches the old.  This is
 * mb_follow_replace's order with the checksum in between, which the
 * library's helper cannot do.  Returns 0, or 3 when the new mapping is
 * not what the broker loaded.  A refused attach keeps the old generation:
 * it stays readable until the broker's drain deadline.
 */
static int
mbworker_follow(struct mbworker *w, const struct mb_event *ev)
{
	struct mb_attachment *next;
	double t0 = mbworker_now_ms(), held, dropped;
	uint64_t from = mb_attachment_generation(w->att);
	int r;

	if (w->o->no_follow || strcmp(ev->model, w->o->model) != 0 ||
	    from >= ev->generation)
		return 0;
	r = mb_attach_ex(w->client, w->o->model, mbworker_attach_flags(w->o), 0,
			 &next);
	if (r < 0) {
		printf("mbworker[%ld]: cannot follow %s to generation %" PRIu64
		       ": %s; staying on %" PRIu64 "\n", (long)getpid(),
		       w->o->model, ev->generation, mb_strerror(r), from);
		return 0;
	}
	if (!mbworker_verified(next)) {
		fprintf(stderr, "mbworker[%ld]: checksum mismatch on %s "
			"generation %" PRIu64 "\n", (long)getpid(), w->o->model,
			mb_attachment_generation(next));
		mb_detach(next);
		return 3;
	}
	held = mbworker_now_ms();
	mb_detach(w->att);
	dropped = mbworker_now_ms();
	w->att = next;
	w->replaced++;
	if (held > dropped)
		w->without_model_ms += held - dropped;
	printf("mbworker[%ld]: followed %s from generation %" PRIu64 " to %"
	       PRIu64 ", checksum ok (%.1f ms)\n", (long)getpid(),
	       w->o->model, from, mb_attachment_generation(next),
	       dropped - t0);
	return 0;
}

/* Reads pending events; returns 1 when ours is being taken away, 2 when
 * the broker is gone, 3 when a replacement did not verify. */
static int
mbworker_events(struct mbworker *w)
{
	struct mb_event ev;
	int r;

	while (mb_next_event(w->client, &ev) == 1) {
		switch (ev.type) {
		case MB_EVENT_UNLOAD:
			if (strcmp(ev.model, w->o->model) == 0)
				return 1;
			break;
		case MB_EVENT_REPLACED:
			if ((r = mbworker_follow(w, &ev)) != 0)
				return r;
			break;
		case MB_EVENT_SHUTDOWN:
			return 1;
		case MB_EVENT_BROKER_LOST:
			return 2;
		default:
			break;
		}
	}
	return 0;
}

/*
 * Waits for ms or until an event or signal arrives.  With --ack-in-handler
 * only the signal ends the wait: the handler must be the one that acks,
 * whichever of the event and the signal comes first.
 */
static int
mbworker_wait(struct mbworker *w, long ms)
{
	struct pollfd p = {.fd = mb_event_fd(w->client), .events = POLLIN};
	bool events = mbworker_handler_client == NULL;

	if (!mbworker_unload)
		poll(&p, events ? 1 : 0, (int)ms);
	return events ? mbworker_events(w) : 0;
}

/* The line tests and operators read at exit. */
static void
mbworker_say_replaced(const struct mbworker *w)
{
	printf("mbworker: replaced %ld time(s), served without a model %.0f "
	       "ms\n", w->replaced, w->without_model_ms);
}

/*
 * One pass over the model; with --verbose, a check that it read what the
 * broker loaded.  Returns 0, or 3 when it did not.
 */
static int
mbworker_serve(struct mbworker *w, long pass)
{
	volatile uint64_t sink = mbworker_pass(w->att);
	bool ok;

	(void)sink;
	if (!w->o->verbose || mbworker_unload)
		return 0;
	ok = mbworker_verified(w->att);
	/* An ack in the signal handler may have zeroed it meanwhile. */
	if (mbworker_unload)
		return 0;
	printf("mbworker[%ld]: pass %ld generation %" PRIu64 " checksum %s\n",
	       (long)getpid(), pass, mb_attachment_generation(w->att),
	       ok ? "ok" : "BAD");
	return ok ? 0 : 3;
}

int
main(int argc, char **argv)
{
	struct mbworker_options o = {.passes = -1};
	struct mbworker w = {.o = &o};
	struct sigaction sa;
	double t0, asked;
	long passes = 0;
	int r, why = 0;

	setvbuf(stdout, NULL, _IOLBF, 0);
	mbworker_parse(argc, argv, &o);
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = mbworker_on_signal;
	sigaction(SIGUSR1, &sa, NULL);
	t0 = mbworker_now_ms();
	if ((r = mb_connect(o.socket, &w.client)) < 0) {
		fprintf(stderr, "mbworker: cannot connect: %s\n", mb_strerror(r));
		return 1;
	}
	if ((r = mb_attach_ex(w.client, o.model, mbworker_attach_flags(&o), 0,
			      &w.att)) < 0) {
		fprintf(stderr, "mbworker: cannot attach %s: %s%s%s\n", o.model,
			mb_strerror(r), mb_last_error(w.client)[0] ? ": " : "",
			mb_last_error(w.client));
		mb_close(w.client);
		return 1;
	}
	if (!mbworker_verified(w.att)) {
		fprintf(stderr, "mbworker[%ld]: checksum mismatch on %s\n",
			(long)getpid(), o.model);
		mb_close(w.client);
		return 3;
	}
	/* Armed before the line below, which tests wait for. */
	if (o.ack_in_handler)
		mbworker_handler_client = w.client;
	printf("mbworker[%ld]: attached %s generation %" PRIu64 ", %zu bytes, "
	       "%zu tensors, %schecksum ok (%.1f ms)\n", (long)getpid(),
	       o.model, mb_attachment_generation(w.att),
	       mb_attachment_size(w.att), mb_tensor_count(w.att),
	       o.populate ? "populated, " : "", mbworker_now_ms() - t0);
	if (o.tensor != NULL && mbworker_print_tensor(w.att, o.tensor) < 0) {
		mbworker_handler_client = NULL;
		mb_close(w.client);
		return 1;
	}
	while (!mbworker_unload && why == 0 &&
	       (o.passes < 0 || passes < o.passes)) {
		if ((why = mbworker_serve(&w, passes + 1)) != 0)
			break;
		if (!mbworker_unload)
			passes++;
		why = mbworker_wait(&w, o.interval_ms);
	}
	/* No handler may use the client once it can be closed. */
	mbworker_handler_client = NULL;
	if (why == 3) {
		mb_close(w.client);
		return 3;
	}
	mbworker_say_replaced(&w);
	if (why == 2) {
		printf("mbworker[%ld]: broker lost after %ld passes; mapping "
		       "still valid: checksum %s\n", (long)getpid(), passes,
		       mbworker_verified(w.att) ? "ok" : "BAD");
		mb_close(w.client);
		return 0;
	}
	if (o.passes >= 0 && passes >= o.passes && !mbworker_unload) {
		mb_detach(w.att);
		printf("mbworker[%ld]: %ld passes done, detached\n",
		       (long)getpid(), passes);
		mb_close(w.client);
		return 0;
	}
	asked = mbworker_now_ms();
	if (o.no_ack) {
		printf("mbworker[%ld]: unload requested after %ld pass(es); not "
		       "acknowledging (--no-ack)\n", (long)getpid(), passes);
		for (;;)
			pause();
	}
	if (o.ack_delay_ms > 0)
		mbworker_sleep_ms(o.ack_delay_ms);
	if (mbworker_acked_in_handler) {
		printf("mbworker[%ld]: unload requested after %ld pass(es); "
		       "acknowledged in the signal handler\n", (long)getpid(),
		       passes);
	} else {
		mb_ack(w.client);
		printf("mbworker[%ld]: unload requested after %ld pass(es); "
		       "acknowledged (unmap and ack took %.1f ms)\n",
		       (long)getpid(), passes, mbworker_now_ms() - asked);
	}
	mb_close(w.client);
	return 0;
}
