/* SPDX-License-Identifier: MIT */
/*
 * utf8.h - recognising one well-formed UTF-8 character, for the places
 * that read text no library has checked: the broker's JSON log lines and
 * the safetensors header parser.
 */
#ifndef MB_COMMON_UTF8_H
#define MB_COMMON_UTF8_H

#include <stddef.h>

/*
 * Length (1 to 4) of the well-formed UTF-8 character at p, of which avail
 * bytes may be read, or 0 when there is none there: a stray continuation
 * byte, an overlong form, a surrogate, a code point past U+10FFFF, or a
 * character cut short.
 */
size_t utf8_len(const unsigned char *p, size_t avail);

#endif
