/* SPDX-License-Identifier: MIT */
/*
 * rlimit.c - raising a resource limit (descriptors, locked memory) to its
 * hard limit at start, so that what the broker may hold is as much as
 * the operator allowed; a refusal is logged and the limit kept as it was.
 */
#include "mbrokerd.h"

int
rlimit_raise(int resource, const char *name, struct rlimit *rl, rlim_t *was)
{
	if (getrlimit(resource, rl) < 0) {
		log_warn("getrlimit %s", name);
		return -1;
	}
	*was = rl->rlim_cur;
	if (rl->rlim_cur < rl->rlim_max) {
		rl->rlim_cur = rl->rlim_max;
		if (setrlimit(resource, rl) < 0) {
			log_warn("cannot raise %s from %llu to %llu", name,
				 (unsigned long long)*was,
				 (unsigned long long)rl->rlim_max);
			rl->rlim_cur = *was;
		}
	}
	return 0;
}
