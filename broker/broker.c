/* SPDX-License-Identifier: MIT */
/*
 * broker.c - the broker's one global state (struct broker in mbrokerd.h),
 * apart from main so that the unit tests link every module without it.
 */
#include "mbrokerd.h"

struct broker broker;
