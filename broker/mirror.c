/* SPDX-License-Identifier: MIT */
/*
 * mirror.c - the registry mirror in shared memory (layout in
 * common/mirror.h): a read-only view of the registry for observers that do
 * not hold a connection.  Written by the broker only, after each change,
 * and never read back: the registry in the broker's memory is the truth.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "mbrokerd.h"
#include "mirror.h"

static struct {
	char name[NAMES_SHM_MAX];
	struct mirror_header *map;
	struct event *ev;
} mirror;

static void
mirror_write(evutil_socket_t fd, short what, void *arg)
{
	json_t *models = json_array(), *doc;
	struct model *m;
	char *text;
	size_t len;

	(void)fd;
	(void)what;
	(void)arg;
	TAILQ_FOREACH(m, &broker.models, entry)
		json_array_append_new(models, registry_model_json(m));
	doc = json_pack("{s:s, s:I, s:b, s:o}", "instance", broker.cfg.instance,
			"pid", (json_int_t)getpid(), "shutting_down",
			broker.shutting_down, "models", models);
	text = doc != NULL ? json_dumps(doc, JSON_COMPACT) : NULL;
	json_decref(doc);
	if (text == NULL || (len = strlen(text)) > MIRROR_DATA_MAX) {
		log_warnx("registry mirror not updated: too large");
		free(text);
		return;
	}
	atomic_fetch_add(&mirror.map->seq, 1);
	memcpy(mirror.map + 1, text, len);
	mirror.map->length = len;
	atomic_fetch_add(&mirror.map->seq, 1);
	free(text);
}

void
mirror_schedule(void)
{
	if (mirror.ev != NULL)
		event_active(mirror.ev, EV_TIMEOUT, 0);
}

int
mirror_init(void)
{
	char path[sizeof "/dev/shm" + NAMES_SHM_MAX];
	int fd;

	if (names_shm(mirror.name, sizeof mirror.name, broker.cfg.instance,
		      "registry") < 0)
		return -1;
	fd = shm_open(mirror.name, O_RDWR | O_CREAT | O_EXCL, 0600);
	if (fd < 0) {
		log_warn("cannot create registry mirror %s%s", mirror.name,
			 errno == EEXIST ? " (a name that is not ours; left "
					   "untouched)" : "");
		mirror.name[0] = '\0';
		return -1;
	}
	if (ftruncate(fd, MIRROR_SIZE) < 0 ||
	    (mirror.map = mmap(NULL, MIRROR_SIZE, PROT_READ | PROT_WRITE,
			       MAP_SHARED, fd, 0)) == MAP_FAILED) {
		log_warn("cannot size registry mirror %s", mirror.name);
		mirror.map = NULL;
		close(fd);
		return -1;
	}
	snprintf(path, sizeof path, "/dev/shm%s", mirror.name);
	rights_share(path, fd, 0040);
	close(fd);
	memcpy(mirror.map->magic, MIRROR_MAGIC, sizeof mirror.map->magic);
	if ((mirror.ev = event_new(broker.base, -1, 0, mirror_write, NULL)) ==
	    NULL)
		return -1;
	mirror_write(-1, 0, NULL);
	return 0;
}

void
mirror_shutdown(void)
{
	if (mirror.ev != NULL)
		event_free(mirror.ev);
	mirror.ev = NULL;
	if (mirror.map != NULL)
		munmap(mirror.map, MIRROR_SIZE);
	mirror.map = NULL;
	if (mirror.name[0] != '\0' && shm_unlink(mirror.name) < 0 &&
	    errno != ENOENT)
		log_warn("cannot unlink %s", mirror.name);
	mirror.name[0] = '\0';
}
