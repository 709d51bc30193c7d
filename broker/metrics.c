/* SPDX-License-Identifier: MIT */
/*
 * metrics.c - Prometheus metrics over HTTP (libevent's evhttp), off unless
 * --metrics-listen ADDR:PORT: models by state, bytes and attached workers
 * per model, load durations, the counters of stats, the reserved bytes and
 * the machine's Shmem.  Everything is read from the registry at scrape
 * time; nothing is kept for it.  Model names are [A-Za-z0-9._-], so they
 * are safe as label values as they are.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/http.h>

#include "mbrokerd.h"

static struct evhttp *metrics_http;

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
	struct model *m;

	evbuffer_add_printf(b, "# HELP mbroker_models Models by state.\n"
			    "# TYPE mbroker_models gauge\n");
	for (size_t i = 0; i < sizeof states / sizeof states[0]; i++) {
		unsigned n = 0;

		TAILQ_FOREACH(m, &broker.models, entry)
			n += m->state == states[i];
		evbuffer_add_printf(b, "mbroker_models{state=\"%s\"} %u\n",
				    registry_state_name(states[i]), n);
	}
	evbuffer_add_printf(b, "# HELP mbroker_model_bytes Size of each model."
			    "\n# TYPE mbroker_model_bytes gauge\n");
	TAILQ_FOREACH(m, &broker.models, entry)
		evbuffer_add_printf(b, "mbroker_model_bytes{model=\"%s\","
				    "state=\"%s\"} %llu\n", m->name,
				    registry_state_name(m->state),
				    (unsigned long long)loader_total(m));
	evbuffer_add_printf(b, "# HELP mbroker_model_attached Workers attached"
			    " to each model.\n# TYPE mbroker_model_attached "
			    "gauge\n");
	TAILQ_FOREACH(m, &broker.models, entry)
		evbuffer_add_printf(b, "mbroker_model_attached{model=\"%s\"} "
				    "%u\n", m->name, m->nattached);
	evbuffer_add_printf(b, "# HELP mbroker_model_load_seconds How long "
			    "each model's load took.\n# TYPE "
			    "mbroker_model_load_seconds gauge\n");
	TAILQ_FOREACH(m, &broker.models, entry)
		if (m->state == MODEL_READY)
			evbuffer_add_printf(b, "mbroker_model_load_seconds{model="
					    "\"%s\"} %.3f\n", m->name,
					    m->load_ms / 1000.0);
}

static void
metrics_serve(struct evhttp_request *req, void *arg)
{
	struct evbuffer *b;
	unsigned workers = 0;
	struct conn *c;

	(void)arg;
	if (evhttp_request_get_command(req) != EVHTTP_REQ_GET ||
	    strcmp(evhttp_request_get_uri(req), "/metrics") != 0) {
		evhttp_send_error(req, HTTP_NOTFOUND, "only GET /metrics");
		return;
	}
	if ((b = evbuffer_new()) == NULL) {
		evhttp_send_error(req, HTTP_INTERNAL, NULL);
		return;
	}
	TAILQ_FOREACH(c, &broker.conns, entry)
		workers += c->nattachments > 0;
	metrics_models(b);
	metrics_gauge(b, "workers", "Connections holding an attachment.",
		      workers);
	metrics_gauge(b, "connections", "Client connections.", broker.nconns);
	metrics_gauge(b, "reserved_bytes", "Bytes held by segments.",
		      (double)segment_bytes_held());
	metrics_gauge(b, "shmem_bytes", "Shmem of the machine (/proc/meminfo).",
		      (double)meminfo_shmem_kb() * 1024);
	metrics_gauge(b, "shutting_down", "1 while the broker shuts down.",
		      broker.shutting_down);
	metrics_counter(b, "loads_total", "Loads that succeeded.", broker.loads);
	metrics_counter(b, "load_failures_total", "Loads that failed.",
			broker.load_failures);
	metrics_counter(b, "unloads_total", "Unloads that ended in time.",
			broker.unloads);
	metrics_counter(b, "unload_timeouts_total",
			"Unloads that ended in ERROR at the deadline.",
			broker.unload_timeouts);
	metrics_counter(b, "attaches_total", "Attaches granted.",
			broker.attaches);
	metrics_counter(b, "detaches_total", "Detaches.", broker.detaches);
	metrics_counter(b, "acks_total", "Acknowledgements.", broker.acks);
	evhttp_add_header(evhttp_request_get_output_headers(req),
			  "Content-Type", "text/plain; version=0.0.4");
	evhttp_send_reply(req, HTTP_OK, "OK", b);
	evbuffer_free(b);
}

int
metrics_init(void)
{
	const char *listen = broker.cfg.metrics_listen;
	struct evhttp_bound_socket *bound;
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
	if ((metrics_http = evhttp_new(broker.base)) == NULL ||
	    (bound = evhttp_bind_socket_with_handle(metrics_http, host,
						    (uint16_t)port)) == NULL) {
		log_error("cannot serve metrics on %s", listen);
		return -1;
	}
	evhttp_set_allowed_methods(metrics_http, EVHTTP_REQ_GET);
	evhttp_set_gencb(metrics_http, metrics_serve, NULL);
	if (getsockname(evhttp_bound_socket_get_fd(bound),
			(struct sockaddr *)&ss, &len) == 0) {
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

void
metrics_shutdown(void)
{
	if (metrics_http != NULL)
		evhttp_free(metrics_http);
	metrics_http = NULL;
}
