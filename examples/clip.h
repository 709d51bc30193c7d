/* SPDX-License-Identifier: MIT */
/*
 * clip.h - reading the audio clips the speech examples decode (clip.c).
 */
#ifndef CLIP_H
#define CLIP_H

#include <stddef.h>
#include <stdint.h>

#define CLIP_SAMPLE_RATE 16000

/*
 * The samples of a clip: a WAV file's (16 kHz 16-bit mono PCM only), or
 * the whole file as raw samples.  Returns a malloc'd array (free() it)
 * and sets *nsamples, or NULL with errno set: EINVAL for a WAV file of
 * another format, EIO for a read error, else fopen's or malloc's.
 */
int16_t *clip_read(const char *path, size_t *nsamples);

/* A clip's name in transcript lines: its file name without its suffix. */
void clip_name(const char *path, char *buf, size_t len);

#endif /* CLIP_H */
