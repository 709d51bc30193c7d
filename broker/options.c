/* SPDX-License-Identifier: MIT */
/*
 * options.c - mbrokerd's command line: parses argv into a struct config,
 * with a clear message for every bad value.  No side effects beyond the
 * config and the streams it is given, so the unit tests drive it directly.
 */
#include <errno.h>
#include <getopt.h>
#include <grp.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mbrokerd.h"
#include "wire.h"

/* The usage text, in two parts: a string constant is at most 4095 bytes
 * (ISO C). */
static const char options_usage_models[] =
	"usage: mbrokerd [options]\n"
	"\n"
	"Shares model weights with worker processes through POSIX shared\n"
	"memory.  Runs in the foreground and logs to stderr.\n"
	"\n"
	"  --socket PATH            control socket (default: $MBROKER_SOCKET;\n"
	"                           root: /run/mbroker/default.sock; others:\n"
	"                           $XDG_RUNTIME_DIR/mbroker/default.sock, else\n"
	"                           /run/user/<uid>/mbroker/default.sock, else\n"
	"                           /tmp/mbroker-<uid>/default.sock); its\n"
	"                           directory must be ours alone\n"
	"  --instance NAME          names in /dev/shm start mbroker.NAME.\n"
	"                           (default: default; [A-Za-z0-9_-], <= 32)\n"
	"  --model NAME=PATH        load PATH as NAME at start (repeatable;\n"
	"                           *.safetensors is safetensors, else raw)\n"
	"  --model-dir DIR          only files beneath DIR may be loaded\n"
	"                           (repeatable; symlinks out are refused)\n"
	"  --shutdown-timeout SECS  how long shutdown waits for workers\n"
	"                           (default 10.0)\n"
	"  --kill-after SECS        SIGKILL the workers that still hold a\n"
	"                           model SECS after its unload began, if\n"
	"                           that is before its deadline\n"
	"                           (default: never)\n"
	"  --autoload               an attach of a --model-dir model that is\n"
	"                           not loaded loads it\n"
	"  --keep-alive SECS        unload a model nobody has attached for\n"
	"                           SECS (default: never; 0: at once)\n"
	"  --pin NAME               never evict or idle-unload NAME\n"
	"                           (repeatable)\n"
	"  --replace-policy POLICY  when a replace's two copies do not fit:\n"
	"                           availability refuses it (no_space),\n"
	"                           resource unloads first, then loads (a\n"
	"                           gap in service) (default: availability)\n"
	"  --shm-dir DIR            put segments in DIR, a tmpfs mounted with\n"
	"                           huge=within_size for 2 MiB pages\n"
	"                           (default: /dev/shm)\n"
	"  --max-shm-bytes N        most bytes of models held at once\n"
	"                           (suffixes K, M, G; default: no budget\n"
	"                           beyond /dev/shm's free space)\n"
	"  --lock                   keep every model's pages in memory\n"
	"                           (mlock): never swapped out; RLIMIT_MEMLOCK\n"
	"                           bounds what may be loaded\n"
	"  --load-rate N            most bytes per second a load copies\n"
	"                           (suffixes K, M, G; default: no limit)\n"
	"  --keep-file-cache        leave the pages a load read of a model\n"
	"                           file in the page cache (default: drop\n"
	"                           those that were not cached before)\n";
static const char options_usage_service[] =
	"  --allow-gid GROUP        members may use models (attach, list);\n"
	"                           the socket is shared with that group\n"
	"  --admin-gid GROUP        members may also load, unload and shut\n"
	"                           down (by default only our own uid)\n"
	"  --max-message N          largest request accepted (default 64K,\n"
	"                           at most 160K)\n"
	"  --max-connections N      most clients at once (default 1024,\n"
	"                           lowered to fit RLIMIT_NOFILE)\n"
	"  --idle-timeout SECS      close a client that has not said hello\n"
	"                           by then (default 10)\n"
	"  --metrics-listen A:P     serve Prometheus metrics on http://A:P/metrics\n"
	"                           (off by default; use a loopback address)\n"
	"  --signal SIG             signal sent to workers on unload\n"
	"                           (default USR1)\n"
	"  --log-level LEVEL        error, warn, info (default) or debug\n"
	"  --log-format FORMAT      text (default) or json, a line each\n"
	"  --daemon                 detach once listening (for init scripts)\n"
	"  --pid-file PATH          with --daemon (default: <socket>.pid)\n"
	"  --help                   this text\n"
	"  --version                the version\n"
	"\n"
	"Without --model-dir, an administrator may load any file the broker's\n"
	"own uid can read.\n"
	"Exit status: 0 clean shutdown, 1 shutdown timed out (workers named\n"
	"in the log), 2 usage or startup failure.\n";

enum {
	OPT_SOCKET = 256,
	OPT_INSTANCE,
	OPT_MODEL,
	OPT_MODEL_DIR,
	OPT_SHUTDOWN_TIMEOUT,
	OPT_KILL_AFTER,
	OPT_REPLACE_POLICY,
	OPT_AUTOLOAD,
	OPT_KEEP_ALIVE,
	OPT_PIN,
	OPT_MAX_SHM_BYTES,
	OPT_LOCK,
	OPT_SHM_DIR,
	OPT_METRICS_LISTEN,
	OPT_LOAD_RATE,
	OPT_KEEP_FILE_CACHE,
	OPT_MAX_MESSAGE,
	OPT_MAX_CONNECTIONS,
	OPT_IDLE_TIMEOUT,
	OPT_ALLOW_GID,
	OPT_ADMIN_GID,
	OPT_SIGNAL,
	OPT_LOG_LEVEL,
	OPT_LOG_FORMAT,
	OPT_DAEMON,
	OPT_PID_FILE,
	OPT_HELP,
	OPT_VERSION,
};

static const struct option options_long[] = {
	{"socket", required_argument, NULL, OPT_SOCKET},
	{"instance", required_argument, NULL, OPT_INSTANCE},
	{"model", required_argument, NULL, OPT_MODEL},
	{"model-dir", required_argument, NULL, OPT_MODEL_DIR},
	{"shutdown-timeout", required_argument, NULL, OPT_SHUTDOWN_TIMEOUT},
	{"kill-after", required_argument, NULL, OPT_KILL_AFTER},
	{"replace-policy", required_argument, NULL, OPT_REPLACE_POLICY},
	{"autoload", no_argument, NULL, OPT_AUTOLOAD},
	{"keep-alive", required_argument, NULL, OPT_KEEP_ALIVE},
	{"pin", required_argument, NULL, OPT_PIN},
	{"max-shm-bytes", required_argument, NULL, OPT_MAX_SHM_BYTES},
	{"lock", no_argument, NULL, OPT_LOCK},
	{"shm-dir", required_argument, NULL, OPT_SHM_DIR},
	{"metrics-listen", required_argument, NULL, OPT_METRICS_LISTEN},
	{"load-rate", required_argument, NULL, OPT_LOAD_RATE},
	{"keep-file-cache", no_argument, NULL, OPT_KEEP_FILE_CACHE},
	{"max-message", required_argument, NULL, OPT_MAX_MESSAGE},
	{"max-connections", required_argument, NULL, OPT_MAX_CONNECTIONS},
	{"idle-timeout", required_argument, NULL, OPT_IDLE_TIMEOUT},
	{"allow-gid", required_argument, NULL, OPT_ALLOW_GID},
	{"admin-gid", required_argument, NULL, OPT_ADMIN_GID},
	{"signal", required_argument, NULL, OPT_SIGNAL},
	{"log-level", required_argument, NULL, OPT_LOG_LEVEL},
	{"log-format", required_argument, NULL, OPT_LOG_FORMAT},
	{"daemon", no_argument, NULL, OPT_DAEMON},
	{"pid-file", required_argument, NULL, OPT_PID_FILE},
	{"help", no_argument, NULL, OPT_HELP},
	{"version", no_argument, NULL, OPT_VERSION},
	{NULL, 0, NULL, 0},
};

int
options_replace_policy(const char *text, enum replace_policy *out)
{
	if (strcmp(text, "availability") == 0)
		*out = REPLACE_AVAILABILITY;
	else if (strcmp(text, "resource") == 0)
		*out = REPLACE_RESOURCE;
	else
		return -1;
	return 0;
}

int64_t
options_seconds_ms(const char *text)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(text, &end);
	if (errno != 0 || end == text || *end != '\0' || !isfinite(v) ||
	    v < 0 || v > 86400.0 * 365)
		return -1;
	return (int64_t)(v * 1000.0 + 0.5);
}

int64_t
options_bytes(const char *text)
{
	static const char *const units[] = {"", "K", "M", "G", "T"};
	unsigned long long v;
	char *end;

	errno = 0;
	if (text[0] < '0' || text[0] > '9')
		return -1;
	v = strtoull(text, &end, 10);
	if (errno != 0)
		return -1;
	for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
		size_t n = strlen(units[i]);

		if (strncmp(end, units[i], n) != 0 ||
		    (strcmp(end + n, "") != 0 && strcmp(end + n, "B") != 0 &&
		     (i == 0 || strcmp(end + n, "iB") != 0)))
			continue;
		for (size_t k = 0; k < i; k++)
			if (__builtin_mul_overflow(v, 1024ull, &v))
				return -1;
		return v > INT64_MAX ? -1 : (int64_t)v;
	}
	return -1;
}

/* A group by number or name; 0 when invalid (gid 0 is never granted). */
static gid_t
options_group(const char *text)
{
	struct group grp, *found = NULL;
	char buf[4096], *end;
	unsigned long v;

	errno = 0;
	v = strtoul(text, &end, 10);
	if (text[0] >= '0' && text[0] <= '9')
		return errno == 0 && *end == '\0' && v < UINT32_MAX ? (gid_t)v : 0;
	if (getgrnam_r(text, &grp, buf, sizeof buf, &found) != 0 || !found)
		return 0;
	return found->gr_gid;
}

gid_t
options_socket_gid(const struct config *cfg)
{
	return cfg->allow_gid != 0 ? cfg->allow_gid : cfg->admin_gid;
}

static int
options_signal(const char *text)
{
	static const struct {
		const char *name;
		int sig;
	} names[] = {{"USR1", SIGUSR1}, {"USR2", SIGUSR2}, {"HUP", SIGHUP},
		     {"INT", SIGINT},   {"TERM", SIGTERM}, {"WINCH", SIGWINCH}};

	if (strncmp(text, "SIG", 3) == 0)
		text += 3;
	for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
		if (strcmp(text, names[i].name) == 0)
			return names[i].sig;
	return -1;
}

static int
options_model(struct config *cfg, const char *arg, FILE *err)
{
	const char *eq = strchr(arg, '=');
	struct preload *p;
	size_t nlen;

	if (eq == NULL || eq[1] == '\0') {
		fprintf(err, "mbrokerd: --model wants NAME=PATH, got '%s'\n",
			arg);
		return -1;
	}
	nlen = (size_t)(eq - arg);
	if (nlen > MB_NAME_MAX) {
		fprintf(err, "mbrokerd: model name longer than %d bytes\n",
			MB_NAME_MAX);
		return -1;
	}
	if (strlen(eq + 1) >= PATH_MAX) {
		fprintf(err, "mbrokerd: model path too long\n");
		return -1;
	}
	if (cfg->npreloads >= BROKER_MAX_MODELS) {
		fprintf(err, "mbrokerd: at most %d --model options\n",
			BROKER_MAX_MODELS);
		return -1;
	}
	p = realloc(cfg->preloads, (cfg->npreloads + 1) * sizeof *p);
	if (p == NULL) {
		fprintf(err, "mbrokerd: out of memory\n");
		return -1;
	}
	cfg->preloads = p;
	p = &cfg->preloads[cfg->npreloads];
	memcpy(p->name, arg, nlen);
	p->name[nlen] = '\0';
	if (!names_model_valid(p->name)) {
		fprintf(err, "mbrokerd: invalid model name '%s' (1 to %d of "
			"A-Z a-z 0-9 . _ -, not . or ..)\n", p->name,
			MB_NAME_MAX);
		return -1;
	}
	snprintf(p->path, sizeof p->path, "%s", eq + 1);
	cfg->npreloads++;
	return 0;
}

static int
options_copy(char *dst, size_t len, const char *src, const char *what,
	     FILE *err)
{
	if (strlen(src) >= len || src[0] == '\0') {
		fprintf(err, "mbrokerd: %s is empty or too long\n", what);
		return -1;
	}
	memcpy(dst, src, strlen(src) + 1);
	return 0;
}

/* Fills what the options left unset. */
static int
options_defaults(struct config *cfg, FILE *err)
{
	int n;

	if (cfg->socket_path[0] == '\0' &&
	    mb_default_socket_path(cfg->socket_path, sizeof cfg->socket_path) < 0) {
		fprintf(err, "mbrokerd: default socket path too long\n");
		return -1;
	}
	if (cfg->socket_path[0] != '/') {
		fprintf(err, "mbrokerd: --socket must be an absolute path\n");
		return -1;
	}
	if (cfg->pid_file[0] == '\0') {
		n = snprintf(cfg->pid_file, sizeof cfg->pid_file, "%s.pid",
			     cfg->socket_path);
		if (n < 0 || (size_t)n >= sizeof cfg->pid_file) {
			fprintf(err, "mbrokerd: pid file path too long\n");
			return -1;
		}
	}
	return 0;
}

enum options_result
options_parse(int argc, char **argv, struct config *cfg, FILE *out,
	      FILE *err)
{
	int c;

	memset(cfg, 0, sizeof *cfg);
	strcpy(cfg->instance, "default");
	cfg->shutdown_timeout_ms = 10000;
	cfg->max_message = WIRE_MAX_REQUEST;
	cfg->max_conns = 1024;
	cfg->idle_timeout_ms = 10000;
	cfg->keep_alive_ms = -1;
	cfg->log_level = LOG_LEVEL_INFO;
	cfg->unload_signal = SIGUSR1;
	optind = 0;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "", options_long, NULL)) != -1) {
		switch (c) {
		case OPT_SOCKET:
			if (options_copy(cfg->socket_path,
					 sizeof cfg->socket_path, optarg,
					 "--socket", err) < 0)
				return OPTIONS_USAGE;
			break;
		case OPT_INSTANCE:
			if (!names_instance_valid(optarg)) {
				fprintf(err, "mbrokerd: invalid instance name "
					"'%s' (1 to %d of A-Z a-z 0-9 _ -)\n",
					optarg, NAMES_INSTANCE_MAX);
				return OPTIONS_USAGE;
			}
			strcpy(cfg->instance, optarg);
			break;
		case OPT_MODEL:
			if (options_model(cfg, optarg, err) < 0)
				return OPTIONS_USAGE;
			break;
		case OPT_METRICS_LISTEN:
			if (strrchr(optarg, ':') == NULL) {
				fprintf(err, "mbrokerd: --metrics-listen wants "
					"ADDR:PORT, got '%s'\n", optarg);
				return OPTIONS_USAGE;
			}
			cfg->metrics_listen = optarg;
			break;
		case OPT_SHM_DIR:
			if (optarg[0] != '/' || strlen(optarg) > PATH_MAX / 2) {
				fprintf(err, "mbrokerd: --shm-dir must be an "
					"absolute path, got '%s'\n", optarg);
				return OPTIONS_USAGE;
			}
			cfg->shm_dir = optarg;
			break;
		case OPT_MODEL_DIR: {
			char **dirs;

			if (optarg[0] != '/') {
				fprintf(err, "mbrokerd: --model-dir must be an "
					"absolute path, got '%s'\n", optarg);
				return OPTIONS_USAGE;
			}
			dirs = realloc(cfg->model_dirs,
				       (cfg->nmodel_dirs + 1) * sizeof *dirs);
			if (dirs == NULL)
				return OPTIONS_USAGE;
			cfg->model_dirs = dirs;
			cfg->model_dirs[cfg->nmodel_dirs++] = optarg;
			break;
		}
		case OPT_SHUTDOWN_TIMEOUT:
			if ((cfg->shutdown_timeout_ms =
				     options_seconds_ms(optarg)) < 0) {
				fprintf(err, "mbrokerd: --shutdown-timeout "
					"wants seconds >= 0, got '%s'\n",
					optarg);
				return OPTIONS_USAGE;
			}
			break;
		case OPT_KILL_AFTER:
			if ((cfg->kill_after_ms = options_seconds_ms(optarg)) <=
			    0) {
				fprintf(err, "mbrokerd: --kill-after wants "
					"seconds > 0, got '%s'\n", optarg);
				return OPTIONS_USAGE;
			}
			break;
		case OPT_AUTOLOAD:
			cfg->autoload = true;
			break;
		case OPT_LOCK:
			cfg->lock = true;
			break;
		case OPT_KEEP_FILE_CACHE:
			cfg->keep_file_cache = true;
			break;
		case OPT_KEEP_ALIVE:
			if ((cfg->keep_alive_ms = options_seconds_ms(optarg)) <
			    0) {
				fprintf(err, "mbrokerd: --keep-alive wants "
					"seconds >= 0, got '%s'\n", optarg);
				return OPTIONS_USAGE;
			}
			break;
		case OPT_PIN: {
			char **pins;

			if (!names_model_valid(optarg)) {
				fprintf(err, "mbrokerd: --pin wants a model "
					"name, got '%s'\n", optarg);
				return OPTIONS_USAGE;
			}
			pins = realloc(cfg->pins, (cfg->npins + 1) *
							  sizeof *pins);
			if (pins == NULL)
				return OPTIONS_USAGE;
			cfg->pins = pins;
			cfg->pins[cfg->npins++] = optarg;
			break;
		}
		case OPT_REPLACE_POLICY:
			if (options_replace_policy(optarg,
						   &cfg->replace_policy) < 0) {
				fprintf(err, "mbrokerd: --replace-policy wants "
					"availability or resource, got '%s'\n",
					optarg);
				return OPTIONS_USAGE;
			}
			break;
		case OPT_MAX_SHM_BYTES:
		case OPT_LOAD_RATE: {
			int64_t v = options_bytes(optarg);

			if (v <= 0) {
				fprintf(err, "mbrokerd: %s wants a byte count "
					"> 0 (suffixes K, M, G), got '%s'\n",
					c == OPT_LOAD_RATE ? "--load-rate"
							   : "--max-shm-bytes",
					optarg);
				return OPTIONS_USAGE;
			}
			if (c == OPT_LOAD_RATE)
				cfg->load_rate = (uint64_t)v;
			else
				cfg->max_shm_bytes = (uint64_t)v;
			break;
		}
		case OPT_MAX_MESSAGE: {
			int64_t v = options_bytes(optarg);

			if (v < 1024 || v > WIRE_MAX_REPLY) {
				fprintf(err, "mbrokerd: --max-message wants "
					"1K to 160K bytes, got '%s'\n", optarg);
				return OPTIONS_USAGE;
			}
			cfg->max_message = (size_t)v;
			break;
		}
		case OPT_MAX_CONNECTIONS: {
			int64_t v = options_bytes(optarg);

			if (v < 1 || v > 65536) {
				fprintf(err, "mbrokerd: --max-connections wants "
					"1 to 65536, got '%s'\n", optarg);
				return OPTIONS_USAGE;
			}
			cfg->max_conns = (unsigned)v;
			cfg->max_conns_set = true;
			break;
		}
		case OPT_IDLE_TIMEOUT:
			if ((cfg->idle_timeout_ms = options_seconds_ms(optarg)) <=
			    0) {
				fprintf(err, "mbrokerd: --idle-timeout wants "
					"seconds > 0, got '%s'\n", optarg);
				return OPTIONS_USAGE;
			}
			break;
		case OPT_ALLOW_GID:
		case OPT_ADMIN_GID: {
			gid_t gid = options_group(optarg);

			if (gid == 0) {
				fprintf(err, "mbrokerd: %s wants a group name "
					"or number other than 0, got '%s'\n",
					c == OPT_ALLOW_GID ? "--allow-gid"
							   : "--admin-gid", optarg);
				return OPTIONS_USAGE;
			}
			if (c == OPT_ALLOW_GID)
				cfg->allow_gid = gid;
			else
				cfg->admin_gid = gid;
			break;
		}
		case OPT_SIGNAL:
			if ((cfg->unload_signal = options_signal(optarg)) < 0) {
				fprintf(err, "mbrokerd: unknown signal '%s' "
					"(USR1, USR2, HUP, INT, TERM, WINCH)\n",
					optarg);
				return OPTIONS_USAGE;
			}
			break;
		case OPT_LOG_LEVEL:
			if (log_level_parse(optarg, &cfg->log_level) < 0) {
				fprintf(err, "mbrokerd: unknown log level '%s' "
					"(error, warn, info, debug)\n", optarg);
				return OPTIONS_USAGE;
			}
			break;
		case OPT_LOG_FORMAT:
			if (strcmp(optarg, "json") != 0 &&
			    strcmp(optarg, "text") != 0) {
				fprintf(err, "mbrokerd: --log-format wants text "
					"or json, got '%s'\n", optarg);
				return OPTIONS_USAGE;
			}
			cfg->log_json = strcmp(optarg, "json") == 0;
			break;
		case OPT_DAEMON:
			cfg->daemonize = true;
			break;
		case OPT_PID_FILE:
			if (options_copy(cfg->pid_file, sizeof cfg->pid_file,
					 optarg, "--pid-file", err) < 0)
				return OPTIONS_USAGE;
			break;
		case OPT_HELP:
			fputs(options_usage_models, out);
			fputs(options_usage_service, out);
			return OPTIONS_EXIT_OK;
		case OPT_VERSION:
			fprintf(out, "mbrokerd %s (protocol %d)\n",
				MB_VERSION_STRING, MB_PROTOCOL_VERSION);
			return OPTIONS_EXIT_OK;
		default:
			fprintf(err, "mbrokerd: unknown or incomplete option "
				"'%s'\n%s%s", argv[optind - 1],
				options_usage_models, options_usage_service);
			return OPTIONS_USAGE;
		}
	}
	if (optind < argc) {
		fprintf(err, "mbrokerd: unexpected argument '%s'\n",
			argv[optind]);
		return OPTIONS_USAGE;
	}
	if (options_defaults(cfg, err) < 0)
		return OPTIONS_USAGE;
	return OPTIONS_RUN;
}

void
options_free(struct config *cfg)
{
	free(cfg->model_dirs);
	cfg->model_dirs = NULL;
	cfg->nmodel_dirs = 0;
	free(cfg->pins);
	cfg->pins = NULL;
	cfg->npins = 0;
	free(cfg->preloads);
	cfg->preloads = NULL;
	cfg->npreloads = 0;
}
