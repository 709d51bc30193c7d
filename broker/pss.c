/* SPDX-License-Identifier: MIT */
/*
 * pss.c - the proportional set size of a model's pages in one holder:
 * the Pss lines of its /proc/PID/smaps entries that map the model's
 * segments, every member's of a bundle (by name; " (deleted)" follows an
 * unlinked one), each
 * holder's smaps read once for every model it holds.  With one copy
 * shared by N workers, each holder's share is about size / N: "X once
 * plus Y per worker" is the model's bytes plus these.
 */
#include <inttypes.h>
#include <limits.h>
#include <stdlib.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "conn.h"
#include "lease.h"
#include "mbrokerd.h"
#include "pss.h"
#include "registry.h"

/* The model whose segment a smaps header maps, or NULL: the path holds
 * prefix, then NAME.GENERATION-TOKEN, and .MEMBER for a bundle's member
 * after its first (NAME may itself hold dots). */
static struct model *
pss_model_of(const char *line, const char *prefix)
{
	const char *name = strstr(line, prefix), *dot = NULL;
	char buf[MB_NAME_MAX + 1];

	if (name == NULL)
		return NULL;
	name += strlen(prefix);
	for (const char *p = name; *p != '\0' && *p != ' ' && *p != '\n'; p++) {
		size_t digits = strspn(p + 1, "0123456789");

		if (*p == '.' && digits > 0 && p[1 + digits] == '-')
			dot = p;
	}
	if (dot == NULL || (size_t)(dot - name) > MB_NAME_MAX)
		return NULL;
	memcpy(buf, name, (size_t)(dot - name));
	buf[dot - name] = '\0';
	return registry_find(buf);
}

/* Reads pid's smaps once: the Pss in kB of its mappings of each model's
 * segments, by model slot.  0, or -1 when it cannot be read (another
 * user's process, or gone). */
static int
pss_read(pid_t pid, const char *prefix, int64_t *kb)
{
	char path[64], line[PATH_MAX + 256];
	struct model *inside = NULL;
	int64_t v;
	FILE *f;

	memset(kb, 0, BROKER_MAX_MODELS * sizeof *kb);
	snprintf(path, sizeof path, "/proc/%ld/smaps", (long)pid);
	if ((f = fopen(path, "re")) == NULL)
		return -1;
	while (fgets(line, sizeof line, f) != NULL) {
		/* A mapping's header is "start-end perms offset dev inode
		 * [path]"; each field after it is "Name: value". */
		size_t first = strcspn(line, " ");

		if (first > 0 && line[first - 1] != ':' &&
		    memchr(line, '-', first) != NULL) {
			inside = pss_model_of(line, prefix);
			continue;
		}
		if (inside != NULL &&
		    sscanf(line, "Pss: %" SCNd64 " kB", &v) == 1)
			kb[model_slot(inside)] += v;
	}
	fclose(f);
	return 0;
}

struct pss_walk {
	char prefix[NAMES_SHM_MAX]; /* before NAME in every segment name */
	int64_t kb[BROKER_MAX_MODELS];
	pss_fn *fn;
	void *arg;
};

/* One holder: its smaps read once, then one call per model it holds. */
static void
pss_holder(struct conn *c, void *arg)
{
	struct pss_walk *w = arg;
	bool told[BROKER_MAX_MODELS] = {false};
	bool readable = pss_read(c->pid, w->prefix, w->kb) == 0;
	const struct lease *l = NULL;

	while ((l = lease_next(c, l)) != NULL) {
		const struct model *m = lease_generation(l)->model;

		if (told[model_slot(m)])
			continue;
		told[model_slot(m)] = true;
		w->fn(m, c->pid, readable ? w->kb[model_slot(m)] : -1, w->arg);
	}
}

void
pss_of_holders(pss_fn *fn, void *arg)
{
	struct pss_walk *w = calloc(1, sizeof *w);

	if (w == NULL)
		return;
	w->fn = fn;
	w->arg = arg;
	snprintf(w->prefix, sizeof w->prefix, "/mbroker.%s.model.",
		 broker.cfg.instance);
	lease_each_holder(pss_holder, w);
	free(w);
}
