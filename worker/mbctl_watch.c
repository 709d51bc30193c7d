/* SPDX-License-Identifier: MIT */
/*
 * mbctl_watch.c - mbctl's live views: the progress of a load it waits for,
 * or of a replace's new generation (bytes, rate and ETA on a bar when
 * stderr is a terminal, a plain line at each tenth otherwise), read from
 * `list` on a second connection while the first waits for the load's
 * reply; and `mbctl top`, a refreshing view of models, workers and memory.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "client.h"
#include "mbctl.h"

struct mbctl_progress {
	pthread_t thread;
	atomic_bool done;
	const struct mbctl *m;
	const char *name;
	bool tty;
};

static double
mbctl_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* The model called name in a list reply, or NULL. */
static const json_t *
mbctl_find_model(const json_t *reply, const char *name)
{
	const json_t *mod;
	size_t i;

	json_array_foreach(json_object_get(reply, "models"), i, mod)
		if (strcmp(mbctl_str(mod, "name"), name) == 0)
			return mod;
	return NULL;
}

/* What a load of the model mod is filling: the model while LOADING, else
 * the generation a replace loads beside the serving one; or NULL. */
static const json_t *
mbctl_filling(const json_t *mod)
{
	const json_t *g;
	size_t i;

	if (mod == NULL)
		return NULL;
	if (strcmp(mbctl_str(mod, "state"), "LOADING") == 0)
		return mod;
	json_array_foreach(json_object_get(mod, "generations"), i, g)
		if (strcmp(mbctl_str(g, "role"), "next") == 0)
			return g;
	return NULL;
}

static void
mbctl_progress_show(struct mbctl_progress *p, json_int_t done,
		    json_int_t size, double elapsed, int *last_tenth)
{
	char have[32], total[32];
	double rate = elapsed > 0 ? done / elapsed : 0;
	double pct = size > 0 ? 100.0 * done / size : 0;
	int bar = (int)(pct * 30 / 100);

	mbctl_size(have, sizeof have, done);
	mbctl_size(total, sizeof total, size);
	if (p->tty) {
		fprintf(stderr, "\r%s [%.*s%*s] %5.1f%%  %s of %s  %.0f MB/s  "
			"ETA %.0f s \033[K", p->name, bar,
			"##############################", 30 - bar, "", pct, have,
			total, rate / 1e6,
			rate > 0 ? (size - done) / rate : 0.0);
	} else if ((int)(pct / 10) > *last_tenth) {
		*last_tenth = (int)(pct / 10);
		fprintf(stderr, "loading %s: %.0f%% (%s of %s, %.0f MB/s)\n",
			p->name, pct, have, total, rate / 1e6);
	}
}

static void *
mbctl_progress_run(void *arg)
{
	struct mbctl_progress *p = arg;
	json_t *req = json_pack("{s:s}", "op", "list"), *reply;
	double start = mbctl_now();
	struct mb_client *c;
	int last_tenth = -1;
	bool shown = false;

	if (mbctl_connect(p->m, &c, NULL, 0) < 0) {
		json_decref(req);
		return NULL;
	}
	while (!atomic_load(&p->done)) {
		const json_t *mod;

		poll(NULL, 0, 250);
		reply = NULL;
		if (atomic_load(&p->done) ||
		    client_call(c, req, &reply, NULL) < 0) {
			json_decref(reply);
			break;
		}
		mod = mbctl_filling(mbctl_find_model(reply, p->name));
		if (mod != NULL) {
			mbctl_progress_show(p, mbctl_int(mod, "bytes_done"),
					    mbctl_int(mod, "size"),
					    mbctl_now() - start, &last_tenth);
			shown = true;
		}
		json_decref(reply);
	}
	if (shown && p->tty)
		fprintf(stderr, "\r\033[K");
	json_decref(req);
	mb_close(c);
	return NULL;
}

struct mbctl_progress *
mbctl_progress_start(const struct mbctl *m, const char *name)
{
	struct mbctl_progress *p = calloc(1, sizeof *p);

	if (p == NULL)
		return NULL;
	p->m = m;
	p->name = name;
	p->tty = isatty(STDERR_FILENO);
	if (pthread_create(&p->thread, NULL, mbctl_progress_run, p) != 0) {
		free(p);
		return NULL;
	}
	return p;
}

void
mbctl_progress_stop(struct mbctl_progress *p)
{
	if (p == NULL)
		return;
	atomic_store(&p->done, true);
	pthread_join(p->thread, NULL);
	free(p);
}

/* One screen: a summary line, then the models and the workers. */
static int
mbctl_top_once(struct mbctl *m, bool tty)
{
	json_t *req = json_pack("{s:s}", "op", "stats"), *reply = NULL;
	char shmem[32], shared[32];
	time_t now = time(NULL);
	int r;

	r = client_call(m->client, req, &reply, NULL);
	json_decref(req);
	if (r < 0) {
		json_decref(reply);
		fprintf(stderr, "mbctl: %s\n", mb_strerror(r));
		return r == MB_ELOST || r == -ETIMEDOUT ? 3 : 1;
	}
	if (tty)
		printf("\033[H\033[2J");
	mbctl_size(shmem, sizeof shmem, mbctl_int(reply, "shmem_kb") * 1024);
	mbctl_size(shared, sizeof shared, mbctl_int(reply, "bytes_shared"));
	printf("mbrokerd %s, instance %s, pid %lld, %s", mbctl_str(reply, "version"),
	       mbctl_str(reply, "instance"), (long long)mbctl_int(reply, "pid"),
	       ctime(&now));
	printf("%lld model(s), %s shared, %lld worker(s), %lld connection(s), "
	       "Shmem %s%s\n\n", (long long)mbctl_int(reply, "models"), shared,
	       (long long)mbctl_int(reply, "workers"),
	       (long long)mbctl_int(reply, "connections"), shmem,
	       json_is_true(json_object_get(reply, "shutting_down"))
		       ? ", SHUTTING DOWN" : "");
	json_decref(reply);
	if ((r = mbctl_list(m)) != 0)
		return r;
	putchar('\n');
	if ((r = mbctl_memory(m)) != 0)
		return r;
	putchar('\n');
	r = mbctl_workers(m);
	fflush(stdout);
	return r;
}

int
mbctl_top(struct mbctl *m, long iterations)
{
	bool tty = isatty(STDOUT_FILENO);
	int r;

	for (long i = 0; iterations == 0 || i < iterations; i++) {
		if (i > 0) {
			poll(NULL, 0, 1000);
			if (!tty)
				putchar('\n');
		}
		if ((r = mbctl_top_once(m, tty)) != 0)
			return r;
	}
	return 0;
}
