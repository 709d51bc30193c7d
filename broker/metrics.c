/* SPDX-License-Identifier: MIT */
/*
 * metrics.c - Prometheus metrics over HTTP, off unless
 * --metrics-listen ADDR:PORT: models by state, bytes and attached workers
 * per model, load durations, the counters of stats, the reserved bytes and
 * the machine's Shmem.  Everything is read from the registry at scrape
 * time; nothing is kept for it.  Model names are [A-Za-z0-9._-], so they
 * are safe as label values as they are.
 *
 * The HTTP side is its own, and small: one GET /metrics per connection,
 * answered with Connection: close.  Whoever reaches the port is not
 * trusted: a request head is read up to METRICS_MAX_HEAD bytes and no
 * body ever, a connection is closed METRICS_TIMEOUT_S after it was
 * accepted whatever it did (idle or trickling), and with
 * METRICS_MAX_CONNECTIONS open accepting pauses (the kernel's backlog
 * holds the rest).  So the descriptors and memory the endpoint can take
 * from the control socket and the loads are bounded.
 */
#include <arpa/inet.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "mbrokerd.h"
#include "pss.h"
#include "conn.h"
#include "lease.h"
#include "listener.h"
#include "loader.h"
#include "registry.h"
#include "segment.h"

/* Scrapers are few: Prometheus (two in a HA pair), a person with curl. */
#define METRICS_MAX_CONNECTIONS 16
/* A GET /metrics with a scraper's headers is well under 1 KiB. */
#define METRICS_MAX_HEAD 8192
/* A connection's whole life: a scrape is asked and answered at once. */
#define METRICS_TIMEOUT_S 5
/* Out of descriptors, accepting pauses this long at a time (listener.c). */
#define METRICS_BACKOFF_MS 100

struct metrics_conn {
	struct bufferevent *bev;
	struct event *deadline; /* METRICS_TIMEOUT_S after the accept */
	bool replied; /* closed once the reply is written */
	TAILQ_ENTRY(metrics_conn) entry;
};

static struct {
	int fd;
	struct listener *listener; /* paused at the cap */
	bool logged; /* the cap was logged once */
	unsigned nconns;
	TAILQ_HEAD(, metrics_conn) conns;
} metrics = {.fd = -1, .conns = TAILQ_HEAD_INITIALIZER(metrics.conns)};

static void
metrics_counter(struct evbuffer *b, const char *name, const char *help,
		uint64_t value)
{
	evbuffer_add_printf(b, "# HELP mbroker_%s %s\n# TYPE mbroker_%s counter\n"
			    "mbroker_%s %llu\n", name, help, name, name,
			    (unsigned long long)value);
}

static void
metrics_gauge(struct evbuffer *b, const char *name, const char *help,
	      double value)
{
	evbuffer_add_printf(b, "# HELP mbroker_%s %s\n# TYPE mbroker_%s gauge\n"
			    "mbroker_%s %.17g\n", name, help, name, name, value);
}

static void
metrics_models(struct evbuffer *b)
{
	static const enum model_state states[] = {
		MODEL_LOADING, MODEL_READY, MODEL_UNLOADING, MODEL_ERROR};
	const struct generation *g;
	struct model *m;

	evbuffer_add_printf(b, "# HELP mbroker_models Models by state.\n"
			    "# TYPE mbroker_models gauge\n");
	for (size_t i = 0; i < sizeof states / sizeof states[0]; i++) {
		unsigned n = 0;

		for (m = registry_next(NULL); m != NULL; m = registry_next(m))
			n += model_state(m) == states[i];
		evbuffer_add_printf(b, "mbroker_models{state=\"%s\"} %u\n",
				    registry_state_name(states[i]), n);
	}
	evbuffer_add_printf(b, "# HELP mbroker_model_bytes Size of each model."
			    "\n# TYPE mbroker_model_bytes gauge\n");
	for (m = registry_next(NULL); m != NULL; m = registry_next(m)) {
		g = model_current(m) != NULL ? model_current(m)
					     : model_generations(m, NULL);
		evbuffer_add_printf(b, "mbroker_model_bytes{model=\"%s\","
				    "state=\"%s\"} %llu\n", model_name(m),
				    registry_state_name(model_state(m)),
				    (unsigned long long)(g == NULL ? 0
				    : g->job != NULL ? loader_total(g->job)
						     : g->size));
	}
	evbuffer_add_printf(b, "# HELP mbroker_model_attached Workers attached"
			    " to each model.\n# TYPE mbroker_model_attached "
			    "gauge\n");
	for (m = registry_next(NULL); m != NULL; m = registry_next(m))
		evbuffer_add_printf(b, "mbroker_model_attached{model=\"%s\"} "
				    "%u\n", model_name(m), model_leases(m));
	evbuffer_add_printf(b, "# HELP mbroker_model_generations Generations "
			    "of each model (more than one while a replace "
			    "drains).\n# TYPE mbroker_model_generations gauge\n");
	for (m = registry_next(NULL); m != NULL; m = registry_next(m)) {
		unsigned n = 0;

		for (g = NULL; (g = model_generations(m, g)) != NULL;)
			n++;
		evbuffer_add_printf(b, "mbroker_model_generations{model=\"%s\"}"
				    " %u\n", model_name(m), n);
	}
	evbuffer_add_printf(b, "# HELP mbroker_model_load_seconds How long "
			    "each model's load took.\n# TYPE "
			    "mbroker_model_load_seconds gauge\n");
	for (m = registry_next(NULL); m != NULL; m = registry_next(m))
		if (model_state(m) == MODEL_READY &&
		    (g = model_current(m)) != NULL)
			evbuffer_add_printf(b, "mbroker_model_load_seconds{model="
					    "\"%s\"} %.3f\n", model_name(m),
					    g->load_ms / 1000.0);
}

/* One holder's Pss of one model's pages. */
static void
metrics_pss_line(const struct model *m, pid_t pid, int64_t kb, void *arg)
{
	if (kb >= 0)
		evbuffer_add_printf(arg, "mbroker_model_holder_pss_bytes{model="
				    "\"%s\",pid=\"%ld\"} %lld\n",
				    model_name(m), (long)pid,
				    (long long)kb * 1024);
}

/* What each model costs in each holder (its bytes once are
 * mbroker_model_bytes). */
static void
metrics_memory(struct evbuffer *b)
{
	evbuffer_add_printf(b, "# HELP mbroker_model_holder_pss_bytes Pss of "
			    "a model's pages in each process holding it "
			    "(/proc/PID/smaps, where readable).\n# TYPE "
			    "mbroker_model_holder_pss_bytes gauge\n");
	pss_of_holders(metrics_pss_line, b);
}

/* The scrape itself: every metric, read from the registry now. */
static void
metrics_scrape(struct evbuffer *b)
{
	const struct counters *n = &broker.counters;

	metrics_models(b);
	metrics_memory(b);
	metrics_gauge(b, "workers", "Connections holding an attachment.",
		      lease_holders_count());
	metrics_gauge(b, "connections", "Client connections.", conn_count());
	metrics_gauge(b, "reserved_bytes", "Bytes held by segments.",
		      (double)segment_bytes_held());
	metrics_gauge(b, "shmem_bytes", "Shmem of the machine (/proc/meminfo).",
		      (double)meminfo_shmem_kb() * 1024);
	metrics_gauge(b, "shutting_down", "1 while the broker shuts down.",
		      broker.shutting_down);
	metrics_counter(b, "loads_total", "Loads that succeeded.", n->loads);
	metrics_counter(b, "load_failures_total", "Loads that failed.",
			n->load_failures);
	metrics_counter(b, "unloads_total", "Unloads that ended in time.",
			n->unloads);
	metrics_counter(b, "unload_timeouts_total",
			"Unloads that ended in ERROR at the deadline.",
			n->unload_timeouts);
	metrics_counter(b, "replaces_total", "Replaces that switched to a new "
			"generation.", n->replaces);
	metrics_counter(b, "replace_failures_total", "Replaces whose new "
			"generation failed to load (the old one served on).",
			n->replace_failures);
	metrics_counter(b, "drains_total", "Replaced generations let go of, "
			"in time or not.", n->drains);
	metrics_counter(b, "drain_timeouts_total", "Replaced generations "
			"still held at their deadline.", n->drain_timeouts);
	metrics_gauge(b, "drain_seconds_sum", "Time replaced generations took "
		      "to drain, summed (with drains_total: the mean).",
		      (double)n->drain_ms_sum / 1000.0);
	metrics_counter(b, "evictions_total", "Models unloaded to make room for "
			"a load.", n->evictions);
	metrics_counter(b, "idle_unloads_total", "Models unloaded after their "
			"keep-alive.", n->idle_unloads);
	metrics_counter(b, "autoloads_total", "Loads started by an attach "
			"(--autoload).", n->autoloads);
	metrics_counter(b, "attaches_total", "Attaches granted.", n->attaches);
	metrics_counter(b, "detaches_total", "Detaches.", n->detaches);
	metrics_counter(b, "acks_total", "Acknowledgements.", n->acks);
}

/* Closes a connection; safe inside its callbacks, as libevent holds a
 * reference to a bufferevent while it runs one and no longer touches a
 * timer whose callback runs. */
static void
metrics_conn_close(struct metrics_conn *mc)
{
	TAILQ_REMOVE(&metrics.conns, mc, entry);
	bufferevent_free(mc->bev);
	event_free(mc->deadline);
	free(mc);
	metrics.nconns--;
	if (metrics.listener != NULL)
		listener_resume(metrics.listener);
}

/* Queues the reply (the scrape, or the reason as text) and stops reading;
 * the connection closes once it is written. */
static void
metrics_reply(struct metrics_conn *mc, int status, const char *reason)
{
	struct evbuffer *out = bufferevent_get_output(mc->bev);
	struct evbuffer *body = evbuffer_new();

	if (body == NULL) {
		metrics_conn_close(mc);
		return;
	}
	if (status == 200)
		metrics_scrape(body);
	else
		evbuffer_add_printf(body, "%s\n", reason);
	evbuffer_add_printf(out, "HTTP/1.1 %d %s\r\nContent-Type: %s\r\n"
			    "Content-Length: %zu\r\nConnection: close\r\n"
			    "\r\n", status, reason,
			    status == 200 ? "text/plain; version=0.0.4"
					  : "text/plain",
			    evbuffer_get_length(body));
	evbuffer_add_buffer(out, body);
	evbuffer_free(body);
	bufferevent_disable(mc->bev, EV_READ);
	mc->replied = true;
}

/* Waits for the whole request head, then answers it. */
static void
metrics_read(struct bufferevent *bev, void *arg)
{
	struct metrics_conn *mc = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	struct evbuffer_ptr end = evbuffer_search(in, "\r\n\r\n", 4, NULL);
	char *line;

	if (end.pos < 0 || end.pos + 4 > METRICS_MAX_HEAD) {
		if (evbuffer_get_length(in) > METRICS_MAX_HEAD)
			metrics_reply(mc, 431, "Request Header Fields Too Large");
		return;
	}
	if ((line = evbuffer_readln(in, NULL, EVBUFFER_EOL_CRLF_STRICT)) ==
	    NULL)
		metrics_reply(mc, 500, "Internal Server Error");
	else if (strncmp(line, "GET ", 4) != 0)
		metrics_reply(mc, 405, "Method Not Allowed");
	else if (strncmp(line + 4, "/metrics ", 9) != 0)
		metrics_reply(mc, 404, "Not Found");
	else
		metrics_reply(mc, 200, "OK");
	free(line);
}

static void
metrics_write(struct bufferevent *bev, void *arg)
{
	struct metrics_conn *mc = arg;

	(void)bev;
	if (mc->replied)
		metrics_conn_close(mc);
}

/* End of file or an error: closed. */
static void
metrics_event(struct bufferevent *bev, short what, void *arg)
{
	(void)bev;
	(void)what;
	metrics_conn_close(arg);
}

static void
metrics_expire(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	metrics_conn_close(arg);
}

/* Takes a scraper's connection; at the cap, accepting pauses until one
 * closes. */
static void
metrics_conn_new(int fd, void *arg)
{
	const struct timeval timeout = {METRICS_TIMEOUT_S, 0};
	struct metrics_conn *mc = calloc(1, sizeof *mc);

	(void)arg;
	if (mc == NULL ||
	    (mc->deadline = evtimer_new(broker.base, metrics_expire, mc)) ==
		    NULL ||
	    (mc->bev = bufferevent_socket_new(broker.base, fd,
					      BEV_OPT_CLOSE_ON_FREE)) == NULL) {
		log_warnx("metrics: out of memory for a connection");
		close(fd);
		if (mc != NULL && mc->deadline != NULL)
			event_free(mc->deadline);
		free(mc);
		return;
	}
	bufferevent_setcb(mc->bev, metrics_read, metrics_write, metrics_event,
			  mc);
	evtimer_add(mc->deadline, &timeout);
	bufferevent_setwatermark(mc->bev, EV_READ, 0, METRICS_MAX_HEAD + 1);
	bufferevent_enable(mc->bev, EV_READ);
	TAILQ_INSERT_TAIL(&metrics.conns, mc, entry);
	if (++metrics.nconns >= METRICS_MAX_CONNECTIONS) {
		if (!metrics.logged)
			log_warnx("metrics: %d connections open, accepting more "
				  "as they close (logged once)",
				  METRICS_MAX_CONNECTIONS);
		metrics.logged = true;
		listener_pause(metrics.listener);
	}
}

/* A listening TCP socket on host:port, or -1 logged. */
static int
metrics_listen(const char *host, const char *port)
{
	const struct addrinfo hints = {.ai_flags = AI_PASSIVE | AI_NUMERICSERV,
				       .ai_socktype = SOCK_STREAM};
	struct addrinfo *ai;
	int fd = -1, one = 1, r;

	if ((r = getaddrinfo(host, port, &hints, &ai)) != 0) {
		log_error("--metrics-listen %s:%s: %s", host, port,
			  gai_strerror(r));
		return -1;
	}
	if ((fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK |
					       SOCK_CLOEXEC, 0)) < 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
	    bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 ||
	    listen(fd, SOMAXCONN) < 0) {
		log_warn("cannot serve metrics on %s:%s", host, port);
		if (fd >= 0)
			close(fd);
		fd = -1;
	}
	freeaddrinfo(ai);
	return fd;
}

/* Listens on --metrics-listen, if set; 0, or -1 logged. */
int
metrics_init(void)
{
	const char *listen = broker.cfg.metrics_listen;
	struct sockaddr_storage ss;
	socklen_t len = sizeof ss;
	char host[256], addr[INET6_ADDRSTRLEN];
	const char *colon;
	long port;

	if (listen == NULL)
		return 0;
	colon = strrchr(listen, ':');
	port = colon != NULL ? strtol(colon + 1, NULL, 10) : -1;
	if (colon == NULL || (size_t)(colon - listen) >= sizeof host ||
	    port < 0 || port > 65535) {
		log_error("--metrics-listen wants ADDR:PORT, got %s", listen);
		return -1;
	}
	memcpy(host, listen, (size_t)(colon - listen));
	host[colon - listen] = '\0';
	if ((metrics.fd = metrics_listen(host, colon + 1)) < 0)
		return -1;
	if ((metrics.listener = listener_new(metrics.fd, "metrics",
					     METRICS_BACKOFF_MS, metrics_conn_new,
					     NULL)) == NULL) {
		log_error("cannot serve metrics on %s", listen);
		return -1;
	}
	if (getsockname(metrics.fd, (struct sockaddr *)&ss, &len) == 0) {
		void *a = ss.ss_family == AF_INET6
			? (void *)&((struct sockaddr_in6 *)&ss)->sin6_addr
			: (void *)&((struct sockaddr_in *)&ss)->sin_addr;
		unsigned short p = ntohs(ss.ss_family == AF_INET6
			? ((struct sockaddr_in6 *)&ss)->sin6_port
			: ((struct sockaddr_in *)&ss)->sin_port);

		inet_ntop(ss.ss_family, a, addr, sizeof addr);
		log_info("metrics on http://%s:%u/metrics", addr, p);
	}
	return 0;
}

/* Closes every connection and the listener. */
void
metrics_shutdown(void)
{
	struct metrics_conn *mc;

	listener_free(metrics.listener);
	metrics.listener = NULL;
	while ((mc = TAILQ_FIRST(&metrics.conns)) != NULL)
		metrics_conn_close(mc);
	if (metrics.fd >= 0)
		close(metrics.fd);
	metrics.fd = -1;
}
