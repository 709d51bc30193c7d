/* SPDX-License-Identifier: MIT */
/*
 * broker.c - the broker's one global state (struct broker in mbrokerd.h),
 * apart from main so that the unit tests link every module without it.
 */
#include "mbrokerd.h"

struct broker broker = {
	.models = TAILQ_HEAD_INITIALIZER(broker.models),
	.conns = TAILQ_HEAD_INITIALIZER(broker.conns),
	.shutdown_waiters = TAILQ_HEAD_INITIALIZER(broker.shutdown_waiters),
};
