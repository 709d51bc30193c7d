/* SPDX-License-Identifier: MIT */
/*
 * mbbench.c - the measurements behind `make bench` that need a program:
 * the fill floor of a fresh segment, attach latency against a bare
 * shm_open + fstat + mmap, inference passes over shared against private
 * weights, a worker that follows replaces while it runs passes back to
 * back, processes that hold a private copy or a page-cache mapping for
 * the memory scenario, the control plane's request rate, the first pass
 * against the next ones with and without MB_ATTACH_POPULATE, and a worker
 * of the cold start.  Each prints
 * one JSON object on stdout; scripts/bench.sh runs them side by side.
 *   mbbench fill-floor BYTES
 *   mbbench attach SOCKET MODEL ITERATIONS
 *   mbbench infer SOCKET MODEL REPETITIONS
 *   mbbench follow SOCKET MODEL SECONDS
 *   mbbench first-attach SOCKET MODEL
 *   mbbench hold-private FILE | hold-mmap FILE
 *   mbbench rate SOCKET OP CLIENTS SECONDS
 *   mbbench crowd SOCKET CONNECTIONS PER_CONNECTION MODEL...
 *   mbbench warm SOCKET MODEL ROUNDS
 *   mbbench first-pass SOCKET MODEL plain|populate
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "client.h"
#include "names.h"

static double
bench_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static __attribute__((noreturn)) void
bench_die(const char *what, int err)
{
	fprintf(stderr, "mbbench: %s: %s\n", what, mb_strerror(err));
	exit(1);
}

/* Connects to sock as role, with no deadline and the default peer check. */
static int
bench_connect(const char *sock, const char *role, struct mb_client **out)
{
	struct client_params p = {
		.path = sock, .role = role, .broker_uid = -1, .timeout_ms = -1
	};

	return client_connect(&p, out, NULL, 0);
}

static int
bench_cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/* The q-quantile of n samples (sorted in place). */
static double
bench_quantile(double *v, size_t n, double q)
{
	qsort(v, n, sizeof *v, bench_cmp);
	return v[(size_t)(q * (double)(n - 1) + 0.5)];
}

/* Populates a fresh segment and copies src into it; returns seconds. */
static double
bench_fill_once(const unsigned char *src, size_t size)
{
	char name[64];
	unsigned char *dst;
	double t0, t1;
	int fd;

	snprintf(name, sizeof name, "/mbbench.%ld", (long)getpid());
	fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL, 0600);
	if (fd < 0 || ftruncate(fd, (off_t)size) < 0)
		bench_die("segment", -errno);
	shm_unlink(name);
	t0 = bench_now();
	dst = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (dst == MAP_FAILED)
		bench_die("mmap", -errno);
	madvise(dst, size, MADV_POPULATE_WRITE);
	memcpy(dst, src, size);
	t1 = bench_now();
	munmap(dst, size);
	close(fd);
	return t1 - t0;
}

/* Populate and memcpy into a fresh segment: what a load cannot beat.
 * The first round warms the allocator up, as the loads' warm-up does. */
static int
bench_fill_floor(size_t size)
{
	unsigned char *src = malloc(size);

	if (src == NULL)
		bench_die("malloc", -ENOMEM);
	memset(src, 0x5a, size);
	bench_fill_once(src, size);
	printf("{\"fill_floor_s\":%.6f}\n", bench_fill_once(src, size));
	free(src);
	return 0;
}

static void
bench_print_latency(const char *key, double *v, size_t n, const char *sep)
{
	printf("\"%s_p50_us\":%.1f,\"%s_p99_us\":%.1f%s", key,
	       bench_quantile(v, n, 0.5) * 1e6, key,
	       bench_quantile(v, n, 0.99) * 1e6, sep);
}

/* Attach latency: on an open connection (and the detach after it, and
 * the mean of a whole attach + detach cycle), with the connect, and a bare
 * shm_open + fstat + mmap of the same segment for comparison. */
static int
bench_attach(const char *sock, const char *model, size_t n)
{
	double *warm = calloc(n, sizeof *warm), *cold = calloc(n, sizeof *cold),
	       *bare = calloc(n, sizeof *bare), *det = calloc(n, sizeof *det);
	char segment[NAMES_SHM_MAX] = "", *reply = NULL;
	struct mb_attachment *att;
	struct mb_client *c;
	double loop;
	int r;

	if ((r = mb_connect(sock, &c)) < 0)
		bench_die("connect", r);
	if (mb_request(c, "{\"op\":\"list\"}", &reply) == 0 && reply != NULL) {
		char *s = strstr(reply, "\"segment\":\"");

		if (s != NULL)
			sscanf(s + 11, "%159[^\"]", segment);
	}
	free(reply);
	loop = bench_now();
	for (size_t i = 0; i < n; i++) {
		double t0 = bench_now();

		if ((r = mb_attach(c, model, &att)) < 0)
			bench_die("attach", r);
		warm[i] = bench_now() - t0;
		t0 = bench_now();
		if ((r = mb_detach(att)) < 0)
			bench_die("detach", r);
		det[i] = bench_now() - t0;
	}
	/* Work the broker defers past a reply shows here, whatever it
	 * overlaps with. */
	loop = (bench_now() - loop) / (double)n;
	mb_close(c);
	for (size_t i = 0; i < n; i++) {
		double t0 = bench_now();

		if ((r = mb_connect(sock, &c)) < 0 ||
		    (r = mb_attach(c, model, &att)) < 0)
			bench_die("connect and attach", r);
		cold[i] = bench_now() - t0;
		mb_close(c);
	}
	for (size_t i = 0; i < n && segment[0] != '\0'; i++) {
		double t0 = bench_now();
		int fd = shm_open(segment, O_RDONLY, 0);
		struct stat st;
		void *p;

		if (fd < 0 || fstat(fd, &st) < 0 ||
		    (p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED,
			      fd, 0)) == MAP_FAILED)
			bench_die("bare mapping", -errno);
		bare[i] = bench_now() - t0;
		munmap(p, (size_t)st.st_size);
		close(fd);
	}
	printf("{\"cycle_mean_us\":%.1f,", loop * 1e6);
	bench_print_latency("attach", warm, n, ",");
	bench_print_latency("detach", det, n, ",");
	bench_print_latency("attach_connect", cold, n, ",");
	bench_print_latency("bare_mmap", bare, n, "}\n");
	free(warm);
	free(cold);
	free(bare);
	free(det);
	return 0;
}

/* A memory-bound pass over every weight, as the reference worker does. */
static uint64_t
bench_pass(const uint64_t *w, size_t words)
{
	uint64_t sum = 0;

	for (size_t i = 0; i < words; i++)
		sum += w[i];
	return sum;
}

/* Passes over the shared mapping and over a private copy, alternated. */
static int
bench_infer(const char *sock, const char *model, size_t reps)
{
	double *shared = calloc(reps, sizeof *shared),
	       *private = calloc(reps, sizeof *private);
	struct mb_attachment *att;
	struct mb_client *c;
	volatile uint64_t sink;
	uint64_t *copy;
	size_t size;
	int r;

	if ((r = mb_connect(sock, &c)) < 0 || (r = mb_attach(c, model, &att)) < 0)
		bench_die("attach", r);
	size = mb_attachment_size(att) / 8 * 8;
	if ((copy = malloc(size)) == NULL)
		bench_die("malloc", -ENOMEM);
	memcpy(copy, mb_attachment_data(att), size);
	sink = bench_pass(mb_attachment_data(att), size / 8); /* warm both */
	sink = bench_pass(copy, size / 8);
	for (size_t i = 0; i < reps; i++) {
		double t0 = bench_now();

		sink = bench_pass(mb_attachment_data(att), size / 8);
		shared[i] = bench_now() - t0;
		t0 = bench_now();
		sink = bench_pass(copy, size / 8);
		private[i] = bench_now() - t0;
	}
	(void)sink;
	printf("{\"shared_pass_s\":%.6f,\"private_pass_s\":%.6f}\n",
	       bench_quantile(shared, reps, 0.5),
	       bench_quantile(private, reps, 0.5));
	free(copy);
	mb_close(c);
	free(shared);
	free(private);
	return 0;
}

/* Passes back to back for SECONDS, following every replace the way a
 * worker does (mb_follow_replace between two passes).  Prints one line per
 * pass, "pass START DURATION GENERATION", and per switch, "switch TIME
 * GENERATION", in seconds of CLOCK_REALTIME, so the script can lay them
 * beside the moment it asked for the replace. */
static int
bench_follow(const char *sock, const char *model, double seconds)
{
	struct mb_attachment *att;
	struct mb_client *c;
	struct mb_event ev;
	volatile uint64_t sink;
	struct timespec ts;
	double end = bench_now() + seconds;
	int r;

	if ((r = mb_connect(sock, &c)) < 0 || (r = mb_attach(c, model, &att)) < 0)
		bench_die("attach", r);
	while (bench_now() < end) {
		double t0, t1;

		clock_gettime(CLOCK_REALTIME, &ts);
		t0 = bench_now();
		sink = bench_pass(mb_attachment_data(att),
				  mb_attachment_size(att) / 8);
		t1 = bench_now();
		printf("pass %.6f %.6f %llu\n", ts.tv_sec + ts.tv_nsec / 1e9,
		       t1 - t0,
		       (unsigned long long)mb_attachment_generation(att));
		while (mb_next_event(c, &ev) > 0) {
			if (ev.type != MB_EVENT_REPLACED)
				continue;
			if ((r = mb_follow_replace(c, &att, &ev)) < 0)
				bench_die("follow", r);
			clock_gettime(CLOCK_REALTIME, &ts);
			printf("switch %.6f %llu\n", ts.tv_sec + ts.tv_nsec / 1e9,
			       (unsigned long long)mb_attachment_generation(att));
		}
	}
	(void)sink;
	mb_close(c);
	return 0;
}

/* One attach on a fresh connection, timed: with --autoload and MODEL not
 * loaded, its whole load is in it. */
static int
bench_first_attach(const char *sock, const char *model)
{
	struct mb_attachment *att;
	struct mb_client *c;
	double t0;
	int r;

	if ((r = mb_connect(sock, &c)) < 0)
		bench_die("connect", r);
	t0 = bench_now();
	if ((r = mb_attach(c, model, &att)) < 0)
		bench_die("attach", r);
	printf("{\"attach_s\":%.6f}\n", bench_now() - t0);
	mb_close(c);
	return 0;
}

/* One attach (flags), its first pass and the median of the 3 after it, in
 * seconds; detached before it returns.  Every pass runs the same
 * instructions, so that only what the pages cost differs. */
static void
bench_warm_once(struct mb_client *c, const char *model, unsigned flags,
		double *attach, double *first, double *steady)
{
	struct mb_attachment *att;
	volatile uint64_t sink;
	double t0, took[4];
	int r;

	t0 = bench_now();
	if ((r = mb_attach_ex(c, model, flags, 0, &att)) < 0)
		bench_die("attach", r);
	*attach = bench_now() - t0;
	for (size_t i = 0; i < 4; i++) {
		t0 = bench_now();
		sink = bench_pass(mb_attachment_data(att),
				  mb_attachment_size(att) / 8);
		took[i] = bench_now() - t0;
	}
	(void)sink;
	*first = took[0];
	*steady = bench_quantile(took + 1, 3, 0.5);
	if ((r = mb_detach(att)) < 0)
		bench_die("detach", r);
}

/*
 * The first pass after an attach against the passes after it, plain and
 * with MB_ATTACH_POPULATE in turn, ROUNDS times each; the medians.  Each
 * attach maps anew, so the first pass of a plain one takes a fault per
 * page (or per fault-around block) again.
 */
static int
bench_warm(const char *sock, const char *model, size_t rounds)
{
	static const char *const kind[2] = {"plain", "populate"};
	double *v[2][3];
	struct mb_client *c;
	int r;

	if ((r = mb_connect(sock, &c)) < 0)
		bench_die("connect", r);
	for (int k = 0; k < 2; k++)
		for (int f = 0; f < 3; f++)
			if ((v[k][f] = calloc(rounds, sizeof(double))) == NULL)
				bench_die("calloc", -ENOMEM);
	for (size_t i = 0; i < rounds; i++)
		for (int k = 0; k < 2; k++)
			bench_warm_once(c, model, k ? MB_ATTACH_POPULATE : 0,
					&v[k][0][i], &v[k][1][i], &v[k][2][i]);
	mb_close(c);
	for (int k = 0; k < 2; k++) {
		printf("%s\"attach_%s_s\":%.6f,\"first_%s_s\":%.6f,"
		       "\"steady_%s_s\":%.6f", k ? "," : "{", kind[k],
		       bench_quantile(v[k][0], rounds, 0.5), kind[k],
		       bench_quantile(v[k][1], rounds, 0.5), kind[k],
		       bench_quantile(v[k][2], rounds, 0.5));
		for (int f = 0; f < 3; f++)
			free(v[k][f]);
	}
	printf("}\n");
	return 0;
}

/*
 * A worker of the cold start: connects as soon as the socket answers,
 * attaches MODEL once it is ready (plain or with MB_ATTACH_POPULATE),
 * makes one pass and prints when it ended, in seconds of CLOCK_REALTIME,
 * so the script can measure from the broker's start.
 */
static int
bench_first_pass(const char *sock, const char *model, bool populate)
{
	struct timespec pause_2ms = {.tv_nsec = 2000000}, ts;
	struct mb_attachment *att;
	struct mb_client *c;
	volatile uint64_t sink;
	double give_up = bench_now() + 60;
	int r;

	while ((r = mb_connect(sock, &c)) < 0 && bench_now() < give_up)
		nanosleep(&pause_2ms, NULL);
	if (r < 0)
		bench_die("connect", r);
	if ((r = mb_attach_ex(c, model, populate ? MB_ATTACH_POPULATE : 0,
			      60000, &att)) < 0)
		bench_die("attach", r);
	sink = bench_pass(mb_attachment_data(att), mb_attachment_size(att) / 8);
	(void)sink;
	clock_gettime(CLOCK_REALTIME, &ts);
	printf("{\"first_pass_done_s\":%.6f}\n", ts.tv_sec + ts.tv_nsec / 1e9);
	mb_close(c);
	return 0;
}

/* Holds FILE as a private copy or a page-cache mapping, every page
 * touched, until killed. */
static int
bench_hold(const char *path, bool private_copy)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	volatile uint64_t sink;
	struct stat st;
	uint64_t *w;

	if (fd < 0 || fstat(fd, &st) < 0)
		bench_die(path, -errno);
	if (private_copy) {
		size_t off = 0;

		if ((w = malloc((size_t)st.st_size)) == NULL)
			bench_die("malloc", -ENOMEM);
		while (off < (size_t)st.st_size) {
			ssize_t n = read(fd, (char *)w + off,
					 (size_t)st.st_size - off);

			if (n <= 0)
				bench_die("read", -errno);
			off += (size_t)n;
		}
	} else {
		w = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
		if (w == MAP_FAILED)
			bench_die("mmap", -errno);
	}
	sink = bench_pass(w, (size_t)st.st_size / 8);
	(void)sink;
	printf("ready\n");
	fflush(stdout);
	for (;;)
		pause();
}

/* CLIENTS processes send OP requests back to back for SECONDS. */
static int
bench_rate(const char *sock, const char *op, int clients, double seconds)
{
	int pipefd[2];
	unsigned long total = 0, count;

	if (pipe(pipefd) < 0)
		bench_die("pipe", -errno);
	for (int i = 0; i < clients; i++) {
		if (fork() == 0) {
			json_t *req = json_pack("{s:s}", "op", op);
			struct mb_client *c;
			double end;
			int r;

			if ((r = bench_connect(sock, "admin", &c)) < 0)
				bench_die("connect", r);
			count = 0;
			end = bench_now() + seconds;
			while (bench_now() < end) {
				if ((r = client_call(c, req, NULL, NULL)) < 0)
					bench_die(op, r);
				count++;
			}
			if (write(pipefd[1], &count, sizeof count) < 0)
				_exit(1);
			_exit(0);
		}
	}
	close(pipefd[1]);
	while (read(pipefd[0], &count, sizeof count) == (ssize_t)sizeof count)
		total += count;
	while (wait(NULL) > 0)
		;
	printf("{\"op\":\"%s\",\"clients\":%d,\"requests_per_s\":%.0f}\n", op,
	       clients, total / seconds);
	return 0;
}

/* Holds CONNECTIONS x PER_CONNECTION attachments of the models in turn
 * (attach requests whose descriptors are closed at once, so no mapping is
 * made) until killed: the registry an attach is measured against. */
static int
bench_crowd(const char *sock, int conns, int per_conn, char **models,
	    int nmodels)
{
	for (int i = 0; i < conns; i++) {
		struct mb_client *c;
		int r;

		if ((r = bench_connect(sock, "worker", &c)) < 0)
			bench_die("connect", r);
		for (int j = 0; j < per_conn; j++) {
			json_t *req = json_pack("{s:s, s:s}", "op", "attach",
						"name", models[(i + j) % nmodels]);

			r = client_call(c, req, NULL, NULL);
			json_decref(req);
			if (r < 0)
				bench_die("attach", r);
		}
	}
	printf("{\"attachments\":%d}\n", conns * per_conn);
	for (;;)
		pause();
}

int
main(int argc, char **argv)
{
	const char *cmd = argc > 1 ? argv[1] : "";

	setvbuf(stdout, NULL, _IOLBF, 0);
	if (strcmp(cmd, "fill-floor") == 0 && argc == 3)
		return bench_fill_floor(strtoull(argv[2], NULL, 10));
	if (strcmp(cmd, "attach") == 0 && argc == 5)
		return bench_attach(argv[2], argv[3], strtoull(argv[4], NULL, 10));
	if (strcmp(cmd, "infer") == 0 && argc == 5)
		return bench_infer(argv[2], argv[3], strtoull(argv[4], NULL, 10));
	if (strcmp(cmd, "follow") == 0 && argc == 5)
		return bench_follow(argv[2], argv[3], atof(argv[4]));
	if (strcmp(cmd, "first-attach") == 0 && argc == 4)
		return bench_first_attach(argv[2], argv[3]);
	if (strcmp(cmd, "hold-private") == 0 && argc == 3)
		return bench_hold(argv[2], true);
	if (strcmp(cmd, "hold-mmap") == 0 && argc == 3)
		return bench_hold(argv[2], false);
	if (strcmp(cmd, "rate") == 0 && argc == 6)
		return bench_rate(argv[2], argv[3], atoi(argv[4]), atof(argv[5]));
	if (strcmp(cmd, "warm") == 0 && argc == 5)
		return bench_warm(argv[2], argv[3], strtoull(argv[4], NULL, 10));
	if (strcmp(cmd, "first-pass") == 0 && argc == 5)
		return bench_first_pass(argv[2], argv[3],
					strcmp(argv[4], "populate") == 0);
	if (strcmp(cmd, "crowd") == 0 && argc >= 6)
		return bench_crowd(argv[2], atoi(argv[3]), atoi(argv[4]),
				   argv + 5, argc - 5);
	fprintf(stderr, "usage: mbbench fill-floor BYTES | attach SOCKET MODEL N |"
		" infer SOCKET MODEL N | follow SOCKET MODEL SECONDS | "
		"first-attach SOCKET MODEL | "
		"hold-private FILE | hold-mmap FILE | "
		"rate SOCKET OP CLIENTS SECONDS | crowd SOCKET CONNECTIONS "
		"PER_CONNECTION MODEL... | warm SOCKET MODEL ROUNDS | "
		"first-pass SOCKET MODEL plain|populate\n");
	return 2;
}
