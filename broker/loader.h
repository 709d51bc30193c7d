/* SPDX-License-Identifier: MIT */
/*
 * loader.h - copying a model file, or every file of a bundle, into new
 * segments on a thread of its own (loader.c).  The loader knows files,
 * providers and segments, not models: it reports to its caller through
 * two callbacks, run on the main loop in order: once the files' size is
 * known, and once it finished.
 */
#ifndef MBROKER_LOADER_H
#define MBROKER_LOADER_H

#include <stdbool.h>
#include <stdint.h>

struct provider;
struct member;
struct load_job;

/* What a finished load produced, lent to the done callback: on success it
 * takes the members (the array, each one's segment reference and provider
 * state). */
struct load_result {
	int result; /* 0 or MB_E* / -errno */
	const char *error;
	struct member *members; /* in name order; one for a single file */
	unsigned nmembers;
	uint64_t size;     /* of every member */
	uint64_t checksum; /* the file's, or the bundle's (bundle.h) */
	size_t ntensors;   /* of every member */
	uint64_t reclaimed; /* bytes of segments it made, then removed */
	unsigned removed;   /* how many segments those were */
};

struct loader_calls {
	/* A load beside a serving generation: one thread, leaving the
	 * other cores to the workers that keep serving. */
	bool background;
	void (*sized)(void *ctx, uint64_t size);
	/* The job is freed when this returns. */
	void (*done)(void *ctx, const struct load_result *r);
};

/* Starts copying path into the segment segment_name (provider p checks
 * it), or for provider_bundle each file beneath the directory path into
 * segment_name_member(segment_name, i), on a thread; calls report to ctx.  promised: room the caller promised
 * it (segment_promise), which the job gives back.  NULL with *err
 * (-errno) on failure (the promise is then still the caller's). */
struct load_job *loader_start(const char *segment_name, const char *path,
			      const struct provider *p, uint64_t promised,
			      const struct loader_calls *calls, void *ctx,
			      int *err);
/* Asks the job to stop early (it still reports completion). */
void loader_cancel(struct load_job *job);
/* Gives up on a job: it will not report; its segments' names are removed
 * now and its thread cleans up alone when it returns.  Returns how many
 * segment names were removed. */
int loader_abandon(struct load_job *job);
/* Bytes copied so far, and the files' size (0 until known). */
uint64_t loader_progress(const struct load_job *job);
uint64_t loader_total(const struct load_job *job);
/* Abandoned jobs whose thread has not returned yet. */
unsigned loader_abandoned_count(void);
/* Sets up the completion channel.  0 or -1. */
int loader_init(void);
void loader_shutdown(void);

#endif /* MBROKER_LOADER_H */
