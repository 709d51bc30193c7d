/* SPDX-License-Identifier: MIT */
/*
 * lease.h - attachments, which the code calls leases (lease.c): which
 * connection holds which generation of which model, and the one way to ask
 * who holds a model or a generation.  A lease holds a reference to its
 * generation's segment, so the bytes stay counted while it is mapped.
 */
#ifndef MBROKER_LEASE_H
#define MBROKER_LEASE_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

struct conn;
struct generation;
struct model;
struct lease;

/* A lease of g (current and loaded) for c, or NULL out of memory. */
struct lease *lease_add(struct conn *c, struct generation *g);
void lease_release(struct lease *l);
/* Releases every lease of c; returns how many there were. */
unsigned lease_release_all(struct conn *c);
struct lease *lease_find(struct conn *c, uint64_t id);
/* Iteration over c's leases: NULL gives the first. */
struct lease *lease_next(const struct conn *c, const struct lease *l);
uint64_t lease_id(const struct lease *l);
struct generation *lease_generation(const struct lease *l);
/* How many segments l holds: one per member of its generation. */
unsigned lease_members(const struct lease *l);
/* Fills fds with the read-only descriptors of l's segments from member
 * from on, at most MB_FDS_PER_MESSAGE; returns how many (0 when from is
 * past the last). */
unsigned lease_descriptors(const struct lease *l, unsigned from, int *fds);
/* How many leases c has. */
unsigned lease_count(const struct conn *c);
/* Connections that hold at least one lease. */
unsigned lease_holders_count(void);

/* Calls fn once for every connection holding g, or any generation of m
 * when g is NULL; fn may not take or release leases. */
void lease_holders(const struct model *m, const struct generation *g,
		   void (*fn)(struct conn *c, void *arg), void *arg);
/* The model object of m (registry_model_json) with "pids", the
 * processes holding it, on it and on each of its generations: what list
 * and load replies carry (new reference). */
json_t *lease_model_json(const struct model *m);
/* The newest generation of m that c holds, or NULL. */
struct generation *lease_newest(const struct conn *c, const struct model *m);
/* Calls fn once for every connection holding a lease. */
void lease_each_holder(void (*fn)(struct conn *c, void *arg), void *arg);
/* Appends the pids holding g (or any of m's generations) to array. */
void lease_pids(const struct generation *g, json_t *array);
void lease_model_pids(const struct model *m, json_t *array);
/* How many connections holding g (or m when g is NULL) outlived their
 * process (a fork). */
unsigned lease_orphans(const struct model *m, const struct generation *g);
/* Called after every release, with the generation let go of. */
void lease_set_release_hook(void (*hook)(struct generation *g));

#endif /* MBROKER_LEASE_H */
