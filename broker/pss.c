/* SPDX-License-Identifier: MIT */
/*
 * pss.c - the proportional set size of a model's pages in one holder:
 * the Pss lines of its /proc/PID/smaps entries that map the model's
 * segment (by name; " (deleted)" follows an unlinked one).  With one copy
 * shared by N workers, each holder's share is about size / N: "X once
 * plus Y per worker" is the model's bytes plus these.
 */
#include <inttypes.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "conn.h"
#include "lease.h"
#include "mbrokerd.h"
#include "pss.h"
#include "registry.h"

int64_t
pss_of_mappings(pid_t pid, const char *name)
{
	char path[64], line[PATH_MAX + 256];
	bool inside = false;
	int64_t kb = 0, v;
	FILE *f;

	snprintf(path, sizeof path, "/proc/%ld/smaps", (long)pid);
	if ((f = fopen(path, "re")) == NULL)
		return -1;
	while (fgets(line, sizeof line, f) != NULL) {
		/* A mapping's header is "start-end perms offset dev inode
		 * [path]"; each field after it is "Name: value". */
		size_t first = strcspn(line, " ");

		if (first > 0 && line[first - 1] != ':' &&
		    memchr(line, '-', first) != NULL) {
			inside = strstr(line, name) != NULL;
			continue;
		}
		if (inside && sscanf(line, "Pss: %" SCNd64 " kB", &v) == 1)
			kb += v;
	}
	fclose(f);
	return kb;
}

struct pss_walk {
	char prefix[NAMES_SHM_MAX]; /* in every generation's segment name */
	void (*fn)(pid_t pid, int64_t kb, void *arg);
	void *arg;
};

static void
pss_holder(struct conn *c, void *arg)
{
	struct pss_walk *w = arg;

	w->fn(c->pid, pss_of_mappings(c->pid, w->prefix), w->arg);
}

void
pss_of_holders(const struct model *m,
	       void (*fn)(pid_t pid, int64_t kb, void *arg), void *arg)
{
	struct pss_walk w = {.fn = fn, .arg = arg};

	snprintf(w.prefix, sizeof w.prefix, "/mbroker.%s.model.%s.",
		 broker.cfg.instance, model_name(m));
	lease_holders(m, NULL, pss_holder, &w);
}
