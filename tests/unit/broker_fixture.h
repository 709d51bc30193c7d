/* SPDX-License-Identifier: MIT */
/*
 * broker_fixture.h - the broker state a unit test starts from: the real
 * option defaults (as mbrokerd with no arguments), a private instance, a
 * quiet log and an event base; and a client that talks to the real
 * dispatcher over a socketpair, and a READY model as a finished load
 * leaves it.  Include after mbrokerd.h and unit.h.
 */
#ifndef MB_TESTS_BROKER_FIXTURE_H
#define MB_TESTS_BROKER_FIXTURE_H

#include <poll.h>
#include <stdbool.h>
#include <sys/socket.h>

#include "bundle.h"
#include "conn.h"
#include "registry.h"
#include "request.h"
#include "segment.h"
#include "wire.h"

/* Returns 0, or -1 when the defaults or the event base fail. */
static inline int
broker_fixture_setup(enum log_level level)
{
	char arg0[] = "mbrokerd";
	char *argv[] = {arg0, NULL};

	if (options_parse(1, argv, &broker.cfg, stdout, stderr) != OPTIONS_RUN)
		return -1;
	unit_instance(broker.cfg.instance, sizeof broker.cfg.instance);
	snprintf(broker.token, sizeof broker.token, "0000beef");
	log_init(level);
	request_init();
	broker.base = event_base_new();
	return broker.base != NULL ? 0 : -1;
}

/* Frees what the fixture and the test left: connections, models, names. */
static inline void
broker_fixture_teardown(void)
{
	conn_close_all();
	registry_clear();
	unit_shm_scan(broker.cfg.instance, 1);
	event_base_free(broker.base);
	broker.base = NULL;
	options_free(&broker.cfg);
}

/* cmocka group setup and teardown with a quiet log. */
static inline int
broker_fixture_group_setup(void **state)
{
	(void)state;
	return broker_fixture_setup(LOG_LEVEL_ERROR);
}

static inline int
broker_fixture_group_teardown(void **state)
{
	(void)state;
	broker_fixture_teardown();
	return 0;
}

/* Runs the event loop until cond holds, at most 10 s; asserts it does. */
static inline void
broker_fixture_run_until(bool (*cond)(void))
{
	int64_t deadline = clock_monotonic_ms() + 10000;

	while (!cond() && clock_monotonic_ms() < deadline) {
		event_base_loop(broker.base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
		poll(NULL, 0, 1);
	}
	assert_true(cond());
}

/* Whether the registry holds no model (a condition for run_until). */
static inline bool
broker_fixture_registry_empty(void)
{
	return registry_count() == 0;
}

/* Gives g n members of size bytes each (provider p), each a sealed
 * segment named as the loader names them, as a finished load leaves it. */
static inline void
broker_fixture_members(struct generation *g, const struct provider *p,
		       unsigned n, uint64_t size)
{
	char base[NAMES_SHM_MAX], shm[NAMES_SHM_MAX], err[256];
	int result;

	assert_int_equal(segment_name_for(base, sizeof base,
					  model_name(g->model), g->number), 0);
	assert_non_null(g->members = calloc(n, sizeof *g->members));
	g->nmembers = n;
	for (unsigned i = 0; i < n; i++) {
		struct member *x = &g->members[i];

		snprintf(x->name, sizeof x->name, "f%02u", i);
		x->provider = p;
		x->size = size;
		assert_int_equal(segment_name_member(shm, sizeof shm, base, i),
				 0);
		x->segment = segment_create(shm, size, 0, &result, err,
					    sizeof err);
		if (x->segment == NULL)
			fail_msg("segment_create: %s", err);
		assert_int_equal(segment_seal(x->segment), 0);
		g->size += size;
	}
}

/* A next generation of m, as a finished load of path by provider p
 * leaves it: a sealed segment of size bytes (promote it to serve it). */
static inline struct generation *
broker_fixture_loaded_generation(struct model *m, const char *path,
				 const struct provider *p, uint64_t size)
{
	struct generation *g = registry_generation_new(m, p, path);

	assert_non_null(g);
	broker_fixture_members(g, p, 1, size);
	return g;
}

/* The same for a bundle of n raw files of size bytes each. */
static inline struct generation *
broker_fixture_loaded_bundle(struct model *m, const char *path, unsigned n,
			     uint64_t size)
{
	struct generation *g = registry_generation_new(m, &provider_bundle,
						       path);

	assert_non_null(g);
	broker_fixture_members(g, &provider_raw, n, size);
	return g;
}

/* A READY model called name, loaded from path by provider p (with
 * provider_state), whose current generation is a real 4 KiB segment. */
static inline struct model *
broker_fixture_ready_model(const char *name, const char *path,
			   const struct provider *p, void *provider_state)
{
	struct model *m = registry_add(name);

	assert_non_null(m);
	registry_set_state(m, MODEL_LOADING);
	broker_fixture_loaded_generation(m, path, p, 4096)->members[0]
		.provider_state = provider_state;
	assert_null(registry_generation_promote(m));
	registry_set_state(m, MODEL_READY);
	return m;
}

/* Releases and frees every generation of m, as an unload does. */
static inline void
broker_fixture_drop_generations(struct model *m)
{
	struct generation *g = NULL;
	uint64_t freed = 0;
	unsigned unlinked = 0;

	while ((g = model_generations(m, g)) != NULL)
		registry_generation_release(g, &freed, &unlinked);
	while ((g = model_generations(m, NULL)) != NULL)
		registry_generation_remove(g);
}

/* A client connection of the broker: the test's end and the broker's. */
struct broker_fixture_client {
	int fd;
	struct conn *conn;
};

/* A connection the broker accepted over a socketpair (before hello); the
 * test's end goes to *peer. */
static inline struct conn *
broker_fixture_conn_new(int *peer)
{
	int sv[2];

	assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK |
					    SOCK_CLOEXEC, 0, sv), 0);
	assert_int_equal(conn_accept(sv[0]), 0);
	*peer = sv[1];
	return conn_newest();
}

/* Connects a client and says hello; asserts it worked. */
static inline void
broker_fixture_client_open(struct broker_fixture_client *cl)
{
	static const char hello[] = "{\"id\":1,\"op\":\"hello\",\"version\":1}";

	cl->conn = broker_fixture_conn_new(&cl->fd);
	request_dispatch(cl->conn, hello, sizeof hello - 1);
}

/* The next message the client received (hello's reply first), or "". */
static inline const char *
broker_fixture_client_read(struct broker_fixture_client *cl)
{
	static char buf[WIRE_MAX_REPLY + 1];
	int fd;
	ssize_t n = wire_recv(cl->fd, buf, sizeof buf - 1, &fd, MSG_DONTWAIT);

	if (fd >= 0)
		close(fd);
	buf[n > 0 ? n : 0] = '\0';
	return buf;
}

/* Asserts the next message the client received contains want. */
static inline void
broker_fixture_client_expect(struct broker_fixture_client *cl,
			     const char *want)
{
	const char *got = broker_fixture_client_read(cl);

	if (strstr(got, want) == NULL)
		fail_msg("message '%s' lacks '%s'", got, want);
}

/* Sends one request from the client through the dispatcher. */
static inline void
broker_fixture_client_request(struct broker_fixture_client *cl,
			      const char *json)
{
	request_dispatch(cl->conn, json, strlen(json));
}

#endif
