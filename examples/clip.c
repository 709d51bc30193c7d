/* SPDX-License-Identifier: MIT */
/*
 * clip.c - the audio clips the speech examples decode: 16 kHz 16-bit mono
 * samples from a WAV file or a raw one, and the name a transcript line
 * gives a clip.  Used by examples/pocketsphinx_pool.c.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clip.h"

/* The little-endian 16- and 32-bit numbers of a WAV header. */
static uint32_t
clip_le(const unsigned char *p, int bytes)
{
	uint32_t v = 0;

	for (int i = bytes - 1; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

/*
 * Where the samples of a WAV file are: its data chunk, when its format
 * chunk, before it, says 16 kHz 16-bit mono PCM.  Returns true and the
 * chunk's offset and length, or false.
 */
static bool
clip_wav_data(const unsigned char *buf, size_t len, size_t *off,
	      size_t *bytes)
{
	bool pcm16 = false;
	size_t at = 12, size;

	while (at + 8 <= len) {
		size = clip_le(buf + at + 4, 4);
		if (memcmp(buf + at, "fmt ", 4) == 0 && size >= 16 &&
		    at + 8 + 16 <= len)
			pcm16 = clip_le(buf + at + 8, 2) == 1 &&
				clip_le(buf + at + 10, 2) == 1 &&
				clip_le(buf + at + 12, 4) == CLIP_SAMPLE_RATE &&
				clip_le(buf + at + 22, 2) == 16;
		if (memcmp(buf + at, "data", 4) == 0) {
			*off = at + 8;
			*bytes = size < len - *off ? size : len - *off;
			return pcm16;
		}
		at += 8 + size + (size & 1);
	}
	return false;
}

int16_t *
clip_read(const char *path, size_t *nsamples)
{
	unsigned char *buf = NULL, *grown;
	size_t len = 0, cap = 0, off = 0, bytes, got;
	bool failed;
	FILE *f;

	if ((f = fopen(path, "rbe")) == NULL)
		return NULL;
	do {
		if (len == cap) {
			cap = cap ? cap * 2 : 1 << 16;
			if ((grown = realloc(buf, cap)) == NULL) {
				free(buf);
				fclose(f);
				return NULL;
			}
			buf = grown;
		}
		got = fread(buf + len, 1, cap - len, f);
		len += got;
	} while (got > 0);
	failed = ferror(f);
	fclose(f);
	bytes = len;
	if (!failed && len >= 12 && memcmp(buf, "RIFF", 4) == 0 &&
	    memcmp(buf + 8, "WAVE", 4) == 0 &&
	    !clip_wav_data(buf, len, &off, &bytes)) {
		free(buf);
		errno = EINVAL;
		return NULL;
	}
	if (failed) {
		free(buf);
		errno = EIO;
		return NULL;
	}
	*nsamples = bytes / 2;
	memmove(buf, buf + off, bytes);
	return (int16_t *)(void *)buf;
}

void
clip_name(const char *path, char *buf, size_t len)
{
	const char *base = strrchr(path, '/');
	char *dot;

	snprintf(buf, len, "%s", base ? base + 1 : path);
	if ((dot = strrchr(buf, '.')) != NULL && dot != buf)
		*dot = '\0';
}
