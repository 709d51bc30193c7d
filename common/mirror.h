/* SPDX-License-Identifier: MIT */
/*
 * mirror.h - layout of the registry mirror, /dev/shm/mbroker.<instance>.
 * registry: fixed-size records, each rewritten alone when what it
 * describes changes, so that an attach touches two records whatever else
 * is loaded.  In file order:
 *
 *   the header      struct mirror_header, then the broker's record: JSON
 *                   {"instance","pid","shutting_down"} of `length` bytes
 *   model slots     model_slots x model_slot_size bytes from models_offset:
 *                   struct mirror_record, then the model's JSON object (as
 *                   in the "list" reply, without "pids"); length 0: free
 *   worker slots    worker_slots x struct mirror_worker from
 *                   workers_offset: a connection holding models, its pid
 *                   and a bitmap of the model slots it holds; pid 0: free
 *
 * Only the broker writes it.  Each record has its own sequence number, odd
 * while the broker writes that record: readers copy a record, re-read its
 * sequence number and retry when it changed.  Records are each consistent,
 * not with each other.
 */
#ifndef MB_COMMON_MIRROR_H
#define MB_COMMON_MIRROR_H

#include <stdatomic.h>
#include <stdint.h>

#define MIRROR_MAGIC "MBREG002"
/* The header and the broker's record. */
#define MIRROR_HEADER_SIZE 4096u
/* Model slots: one per model the registry can hold. */
#define MIRROR_MODELS 256u
#define MIRROR_MODEL_SIZE 8192u

struct mirror_header {
	char magic[8];
	_Atomic uint64_t seq; /* of the broker's record */
	uint64_t length;      /* of the broker's record */
	uint32_t model_slots;
	uint32_t model_slot_size;
	uint64_t models_offset;
	uint32_t worker_slots;
	uint32_t worker_slot_size;
	uint64_t workers_offset;
	uint64_t size; /* of the whole file */
};

/* Starts each model slot; the JSON follows. */
struct mirror_record {
	_Atomic uint64_t seq;
	uint64_t length;
};

struct mirror_worker {
	_Atomic uint64_t seq;
	int64_t pid;
	uint64_t models[MIRROR_MODELS / 64]; /* bit s % 64 of word s / 64 */
};

#define MIRROR_BROKER_MAX (MIRROR_HEADER_SIZE - sizeof(struct mirror_header))
#define MIRROR_MODEL_MAX (MIRROR_MODEL_SIZE - sizeof(struct mirror_record))

#endif
