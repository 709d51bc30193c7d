/* SPDX-License-Identifier: MIT */
/*
 * test_libmbroker.c - the public API as a worker author meets it, against
 * a real mbrokerd started for the test ($BUILD/mbrokerd): connecting (and
 * the check of the broker's uid),
 * refusals with their codes and messages, the bytes and tensors of an
 * attachment, a mapping that cannot be made writable, events, repeated
 * acks (which count even when the semaphore post fails), an ack that
 * lands while an attach waits for its reply (the attach is undone), the
 * event descriptor staying readable while a call has queued an event,
 * every blocking call bounded against a stopped broker, a replace followed
 * with mb_follow_replace, and a broker that dies under an attached worker.
 * WRAP: sem_post recvmsg
 */
#include <errno.h>
#include <poll.h>
#include <semaphore.h>
#include <stdbool.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>

#include "unit.h"

#include "mbroker.h"

static char dir[64], sock[128], model[128], instance[32];
static bool fail_sem_post;
/* The client that acks, as a signal handler would, in its next recvmsg. */
static struct mb_client *ack_in_recv;

int __real_sem_post(sem_t *sem);
int __wrap_sem_post(sem_t *sem);
ssize_t __real_recvmsg(int fd, struct msghdr *msg, int flags);
ssize_t __wrap_recvmsg(int fd, struct msghdr *msg, int flags);

ssize_t
__wrap_recvmsg(int fd, struct msghdr *msg, int flags)
{
	struct mb_client *c = ack_in_recv;

	ack_in_recv = NULL;
	if (c != NULL)
		mb_ack(c);
	return __real_recvmsg(fd, msg, flags);
}

int
__wrap_sem_post(sem_t *sem)
{
	if (fail_sem_post) {
		errno = EOVERFLOW;
		return -1;
	}
	return __real_sem_post(sem);
}
static pid_t broker = -1;

static const char header[] =
	"{\"b.bias\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[48,64]},"
	"\"a.weight\":{\"dtype\":\"BF16\",\"shape\":[4,6],\"data_offsets\":[0,48]}}";
/* The model: header length, header, 64 bytes of data. */
static unsigned char file[8 + sizeof header - 1 + 64];

static int
connect_retry(struct mb_client **c)
{
	for (int i = 0; i < 500; i++) {
		if (mb_connect(sock, c) == 0)
			return 0;
		poll(NULL, 0, 10);
	}
	return -1;
}

static void
start_broker(void)
{
	char bin[256], arg[160];
	const char *build = getenv("BUILD") ? getenv("BUILD") : "build";

	snprintf(bin, sizeof bin, "%s/mbrokerd", build);
	snprintf(arg, sizeof arg, "m=%s", model);
	broker = fork();
	if (broker == 0) {
		execl(bin, "mbrokerd", "--socket", sock, "--instance", instance,
		      "--model", arg, "--log-level", "error", (char *)NULL);
		_exit(127);
	}
}

/* Attaches "m", waiting for its load to end. */
static int
attach_ready(struct mb_client *c, struct mb_attachment **att)
{
	int r = MB_ENOTREADY;

	for (int i = 0; i < 500 && r == MB_ENOTREADY; i++)
		if ((r = mb_attach(c, "m", att)) == MB_ENOTREADY)
			poll(NULL, 0, 10);
	return r;
}

static void
test_lib_connect_refused(void **state)
{
	struct mb_client *c = (struct mb_client *)1;
	char path[192];

	(void)state;
	snprintf(path, sizeof path, "%s/nobody.sock", dir);
	assert_int_equal(mb_connect(path, &c), -ENOENT);
	assert_null(c);
	mb_close(NULL);
}

static void
test_lib_connect_checks_broker_uid(void **state)
{
	struct mb_client *c = (struct mb_client *)1;

	(void)state;
	assert_int_equal(connect_retry(&c), 0);
	mb_close(c);
	setenv("MBROKER_BROKER_UID", "nobody", 1);
	assert_int_equal(mb_connect(sock, &c), -EINVAL);
	assert_null(c);
	setenv("MBROKER_BROKER_UID", "0", 1);
	assert_int_equal(mb_connect(sock, &c), getuid() == 0 ? 0 : MB_EPEER);
	mb_close(c);
	unsetenv("MBROKER_BROKER_UID");
	/* Root is trusted whatever was expected; anyone else only when
	 * expected (test_broker_uid runs a broker as another user). */
	assert_int_equal(mb_connect_ex(sock, (int64_t)getuid() + 1, -1, &c),
			 getuid() == 0 ? 0 : MB_EPEER);
	mb_close(c);
	assert_string_equal(mb_err_name(MB_EPEER), "MB_EPEER");
}

static void
test_lib_attach_and_tensors(void **state)
{
	struct mb_attachment *att;
	struct mb_client *c;
	struct mb_tensor t;

	(void)state;
	assert_int_equal(connect_retry(&c), 0);
	assert_int_equal(mb_attach(c, "nope", &att), MB_ENOMODEL);
	assert_non_null(strstr(mb_last_error(c), "no model called nope"));
	assert_int_equal(attach_ready(c, &att), 0);
	assert_string_equal(mb_attachment_name(att), "m");
	assert_string_equal(mb_attachment_format(att), "safetensors");
	assert_int_equal(mb_attachment_size(att), sizeof file);
	assert_memory_equal(mb_attachment_data(att), file, sizeof file);
	assert_int_equal(mb_attachment_checksum(att), mb_checksum(file, sizeof file));
	assert_int_equal(mb_tensor_count(att), 2);
	assert_int_equal(mb_tensor_at(att, 0, &t), 0);
	assert_string_equal(t.name, "a.weight");
	assert_string_equal(t.dtype, "BF16");
	assert_int_equal(t.ndim, 2);
	assert_int_equal(t.shape[1], 6);
	assert_int_equal(mb_tensor_find(att, "b.bias", &t), 0);
	assert_int_equal(t.nbytes, 16);
	assert_ptr_equal(t.data, (const unsigned char *)mb_attachment_data(att) +
					 8 + sizeof header - 1 + 48);
	assert_int_equal(mb_tensor_find(att, "c", &t), MB_ENOTENSOR);
	assert_int_equal(mb_tensor_at(att, 2, &t), MB_ENOTENSOR);
	/* No way to write the weights through the mapping. */
	assert_int_equal(mprotect((void *)(uintptr_t)mb_attachment_data(att),
				  4096, PROT_READ | PROT_WRITE), -1);
	assert_int_equal(errno, EACCES);
	assert_int_equal(mb_detach(att), 0);
	mb_close(c);
}

static void
test_lib_request_and_ack(void **state)
{
	static const char pad_head[] = "{\"op\":\"ping\",\"pad\":\"";
	struct mb_attachment *a1, *a2;
	struct mb_client *c;
	char *reply, *big;

	(void)state;
	assert_int_equal(connect_retry(&c), 0);
	assert_int_equal(attach_ready(c, &a1), 0);
	assert_int_equal(mb_attach(c, "m", &a2), 0);
	assert_int_equal(mb_request(c, "{\"op\":\"stats\"}", &reply), 0);
	assert_non_null(strstr(reply, "\"workers\":1"));
	free(reply);
	assert_int_equal(mb_request(c, "{\"op\":\"fly\"}", &reply), MB_EBADREQ);
	assert_non_null(strstr(reply, "unknown op"));
	free(reply);
	assert_int_equal(mb_request(c, "[]", &reply), MB_EBADREQ);
	assert_null(reply);
	big = malloc(70000);
	memset(big, ' ', 70000);
	memcpy(big, pad_head, sizeof pad_head - 1);
	memcpy(big + 69990, "\"}", 3);
	/* Over the broker's limit: its error, though it could not read the
	 * id; over any limit: refused before sending. */
	assert_int_equal(mb_request(c, big, &reply), MB_EBADREQ);
	assert_non_null(strstr(mb_last_error(c), "larger than 65536 bytes"));
	free(reply);
	assert_int_equal(mb_request(c, "{\"op\":\"ping\"}", &reply), 0);
	free(reply);
	big = realloc(big, 200000);
	memset(big + 69990, ' ', 200000 - 69990);
	memcpy(big + 199990, "\"}", 3);
	assert_int_equal(mb_request(c, big, &reply), MB_ELIMIT);
	assert_non_null(strstr(mb_last_error(c), "over the 163840-byte limit"));
	free(big);
	/* Acks may repeat; handles stay until detached or closed.  The
	 * message is what counts: a failed semaphore post loses nothing. */
	fail_sem_post = true;
	assert_int_equal(mb_ack(c), 0);
	fail_sem_post = false;
	assert_int_equal(mb_ack(c), 0);
	/* After the ack the data reads as zeros: no fault for code an
	 * acking signal handler interrupted. */
	for (size_t i = 0; i < mb_attachment_size(a2); i++)
		if (((const unsigned char *)mb_attachment_data(a2))[i] != 0)
			fail_msg("byte %zu after mb_ack is not zero", i);
	assert_int_equal(mb_detach(a1), 0);
	assert_int_equal(mb_request(c, "{\"op\":\"workers\"}", &reply), 0);
	assert_non_null(strstr(reply, "\"workers\":[{"));
	assert_non_null(strstr(reply, "\"attachments\":[]"));
	free(reply);
	mb_close(c);
}


static int64_t
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Whether the event descriptor of c polls readable right now. */
static bool
event_fd_ready(struct mb_client *c)
{
	struct pollfd p = {.fd = mb_event_fd(c), .events = POLLIN};

	return poll(&p, 1, 0) == 1;
}

/* Asks the admin connection for the model list; whether it says "m" has
 * want attachments. */
static bool
attached_is(struct mb_client *admin, int want)
{
	char needle[32], *reply;
	bool r;

	snprintf(needle, sizeof needle, "\"attached\":%d", want);
	if (mb_request(admin, "{\"op\":\"list\"}", &reply) != 0)
		return false;
	r = strstr(reply, needle) != NULL;
	free(reply);
	return r;
}

/* Loads "m" again after a test unloaded it. */
static void
reload(struct mb_client *admin)
{
	char req[256], *reply;

	snprintf(req, sizeof req, "{\"op\":\"load\",\"name\":\"m\",\"path\":"
		 "\"%s\",\"wait\":true}", model);
	assert_int_equal(mb_request(admin, req, &reply), 0);
	free(reply);
}

static void
test_lib_ack_during_attach_undoes_it(void **state)
{
	struct mb_client *worker, *admin;
	struct mb_attachment *att = (struct mb_attachment *)1;

	(void)state;
	assert_int_equal(connect_retry(&worker), 0);
	assert_int_equal(connect_retry(&admin), 0);
	assert_int_equal(attach_ready(worker, &att), 0);
	assert_int_equal(mb_detach(att), 0);
	/* The "signal" lands after the request left, before its reply is
	 * read: the ack covered nothing of this attach, so it is undone. */
	ack_in_recv = worker;
	assert_int_equal(mb_attach(worker, "m", &att), -ECANCELED);
	assert_null(att);
	assert_null(ack_in_recv);
	assert_true(attached_is(admin, 0));
	assert_int_equal(mb_attach(worker, "m", &att), 0);
	assert_true(attached_is(admin, 1));
	mb_close(worker);
	mb_close(admin);
}

static void
test_lib_event_fd_ready_while_queued(void **state)
{
	struct mb_client *worker, *admin;
	struct mb_attachment *att;
	struct mb_event ev;
	pid_t unloader;
	char *text;
	int status;

	(void)state;
	signal(SIGUSR1, SIG_IGN);
	assert_int_equal(connect_retry(&worker), 0);
	assert_int_equal(attach_ready(worker, &att), 0);
	assert_false(event_fd_ready(worker));
	unloader = fork();
	if (unloader == 0)
		_exit(connect_retry(&admin) == 0 &&
		      mb_request(admin, "{\"op\":\"unload\",\"name\":\"m\","
				 "\"timeout\":5}", &text) == 0 ? 0 : 1);
	for (int i = 0; i < 1000 && !event_fd_ready(worker); i++)
		poll(NULL, 0, 10);
	/* A round trip reads the event on the way and queues it: the
	 * descriptor must still say so to a worker about to sleep in poll. */
	assert_int_equal(mb_request(worker, "{\"op\":\"ping\"}", &text), 0);
	free(text);
	assert_true(event_fd_ready(worker));
	assert_int_equal(mb_next_event(worker, &ev), 1);
	assert_int_equal(ev.type, MB_EVENT_UNLOAD);
	assert_false(event_fd_ready(worker));
	assert_int_equal(mb_next_event(worker, &ev), 0);
	assert_int_equal(mb_detach(att), 0);
	assert_int_equal(waitpid(unloader, &status, 0), unloader);
	assert_int_equal(status, 0);
	assert_int_equal(connect_retry(&admin), 0);
	reload(admin);
	mb_close(worker);
	mb_close(admin);
}

static void
test_lib_bounded_against_stopped_broker(void **state)
{
	struct mb_client *c, *late = (struct mb_client *)1, *admin;
	struct mb_attachment *att;
	char *reply;
	int64_t t0;

	(void)state;
	assert_int_equal(connect_retry(&c), 0);
	assert_int_equal(connect_retry(&admin), 0);
	assert_int_equal(attach_ready(c, &att), 0);
	assert_int_equal(mb_detach(att), 0);
	mb_set_timeout(c, 300);
	kill(broker, SIGSTOP);
	t0 = now_ms();
	assert_int_equal(mb_connect_ex(sock, -1, 300, &late), -ETIMEDOUT);
	assert_null(late);
	assert_in_range(now_ms() - t0, 250, 5000);
	t0 = now_ms();
	assert_int_equal(mb_attach(c, "m", &att), -ETIMEDOUT);
	assert_in_range(now_ms() - t0, 250, 5000);
	assert_non_null(strstr(mb_last_error(c), "no reply from the broker"));
	t0 = now_ms();
	assert_int_equal(mb_attach_wait(c, "m", 400, &att), -ETIMEDOUT);
	assert_in_range(now_ms() - t0, 250, 5000);
	kill(broker, SIGCONT);
	/* The late replies granted attachments nobody holds: they are given
	 * back as soon as they are read. */
	mb_set_timeout(c, 10000);
	assert_int_equal(mb_request(c, "{\"op\":\"ping\"}", &reply), 0);
	free(reply);
	for (int i = 0; i < 500 && !attached_is(admin, 0); i++)
		poll(NULL, 0, 10);
	assert_true(attached_is(admin, 0));
	assert_int_equal(mb_attach(c, "m", &att), 0);
	mb_close(c);
	mb_close(admin);
}

/* The broker runs on for the next tests even when one failed stopped. */
static int
continue_broker(void **state)
{
	(void)state;
	if (broker > 0)
		kill(broker, SIGCONT);
	return 0;
}

static void
test_lib_attach_wait_until_ready(void **state)
{
	struct mb_client *c, *admin;
	struct mb_attachment *att;
	char req[256], *reply;
	pid_t loader;
	int64_t t0;
	int status;

	(void)state;
	assert_int_equal(connect_retry(&c), 0);
	t0 = now_ms();
	assert_int_equal(mb_attach_wait(c, "m2", 300, &att), MB_ENOMODEL);
	assert_in_range(now_ms() - t0, 250, 5000);
	/* "m2" is asked for 300 ms after the worker started waiting. */
	loader = fork();
	if (loader == 0) {
		poll(NULL, 0, 300);
		snprintf(req, sizeof req, "{\"op\":\"load\",\"name\":\"m2\","
			 "\"path\":\"%s\"}", model);
		_exit(connect_retry(&admin) == 0 &&
		      mb_request(admin, req, &reply) == 0 ? 0 : 1);
	}
	t0 = now_ms();
	assert_int_equal(mb_attach_wait(c, "m2", 10000, &att), 0);
	assert_in_range(now_ms() - t0, 250, 10000);
	assert_string_equal(mb_attachment_name(att), "m2");
	assert_int_equal(waitpid(loader, &status, 0), loader);
	assert_int_equal(status, 0);
	assert_int_equal(mb_detach(att), 0);
	assert_int_equal(mb_request(c, "{\"op\":\"unload\",\"name\":\"m2\"}",
				    &reply), 0);
	free(reply);
	mb_close(c);
}

/* Waits up to 10 s for the next event of c. */
static int
next_event(struct mb_client *c, struct mb_event *ev)
{
	struct pollfd p = {.fd = mb_event_fd(c), .events = POLLIN};

	for (int i = 0; i < 1000; i++) {
		int r = mb_next_event(c, ev);

		if (r != 0)
			return r;
		poll(&p, 1, 10);
	}
	return 0;
}

static void
test_lib_replace_followed(void **state)
{
	struct mb_client *worker, *admin;
	struct mb_attachment *att, *old;
	struct mb_event ev;
	uint64_t gen;
	char req[256], *reply;

	(void)state;
	assert_int_equal(connect_retry(&worker), 0);
	assert_int_equal(connect_retry(&admin), 0);
	assert_int_equal(attach_ready(worker, &att), 0);
	gen = mb_attachment_generation(att);
	old = att;
	snprintf(req, sizeof req, "{\"op\":\"load\",\"name\":\"m\",\"path\":"
		 "\"%s\",\"replace\":true,\"wait\":true,\"timeout\":5}",
		 model);
	assert_int_equal(mb_request(admin, req, &reply), 0);
	free(reply);
	/* No signal for a replace (SIGUSR1 is not ignored here): an event,
	 * followed without ever holding nothing. */
	assert_int_equal(next_event(worker, &ev), 1);
	assert_int_equal(ev.type, MB_EVENT_REPLACED);
	assert_string_equal(ev.model, "m");
	assert_int_equal(ev.old_generation, gen);
	assert_true(ev.generation > gen);
	assert_memory_equal(mb_attachment_data(att), file, sizeof file);
	assert_int_equal(mb_follow_replace(worker, &att, &ev), 0);
	assert_ptr_not_equal(att, old);
	assert_int_equal(mb_attachment_generation(att), ev.generation);
	assert_memory_equal(mb_attachment_data(att), file, sizeof file);
	assert_true(attached_is(admin, 1));
	assert_int_equal(mb_detach(att), 0);
	mb_close(worker);
	mb_close(admin);
}

static void
test_lib_unload_event_then_broker_lost(void **state)
{
	struct mb_client *worker, *admin;
	struct mb_attachment *att;
	struct mb_event ev;
	char *reply;
	int status;

	(void)state;
	signal(SIGUSR1, SIG_IGN);
	assert_int_equal(connect_retry(&worker), 0);
	assert_int_equal(connect_retry(&admin), 0);
	assert_int_equal(attach_ready(worker, &att), 0);
	assert_int_equal(mb_next_event(worker, &ev), 0);
	/* An unload that this worker will not answer in time. */
	assert_int_equal(mb_request(admin, "{\"op\":\"unload\",\"name\":\"m\","
				    "\"timeout\":0.2}", &reply), MB_ETIMEOUT);
	assert_non_null(strstr(reply, "\"pids\":["));
	free(reply);
	assert_int_equal(next_event(worker, &ev), 1);
	assert_int_equal(ev.type, MB_EVENT_UNLOAD);
	assert_string_equal(ev.model, "m");
	assert_int_equal(ev.timeout_ms, 200);
	/* The broker dies: the mapping stays valid, the loss is reported. */
	kill(broker, SIGKILL);
	waitpid(broker, &status, 0);
	broker = -1;
	assert_int_equal(next_event(worker, &ev), 1);
	assert_int_equal(ev.type, MB_EVENT_BROKER_LOST);
	assert_int_equal(mb_next_event(worker, &ev), 0);
	assert_memory_equal(mb_attachment_data(att), file, sizeof file);
	assert_int_equal(mb_attach(worker, "m", &att), MB_ELOST);
	mb_close(worker);
	mb_close(admin);
}

static int
group_setup(void **state)
{
	FILE *f;

	(void)state;
	snprintf(dir, sizeof dir, "/tmp/mbroker-lib.XXXXXX");
	if (mkdtemp(dir) == NULL)
		return -1;
	unit_instance(instance, sizeof instance);
	snprintf(sock, sizeof sock, "%s/b.sock", dir);
	snprintf(model, sizeof model, "%s/m.safetensors", dir);
	file[0] = sizeof header - 1;
	memcpy(file + 8, header, sizeof header - 1);
	for (size_t i = 8 + sizeof header - 1; i < sizeof file; i++)
		file[i] = (unsigned char)i;
	if ((f = fopen(model, "wb")) == NULL ||
	    fwrite(file, 1, sizeof file, f) != sizeof file || fclose(f) != 0)
		return -1;
	start_broker();
	return broker > 0 ? 0 : -1;
}

static int
group_teardown(void **state)
{
	(void)state;
	if (broker > 0) {
		kill(broker, SIGKILL);
		waitpid(broker, NULL, 0);
	}
	unit_shm_scan(instance, 1);
	unlink(model);
	unlink(sock);
	rmdir(dir);
	return 0;
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_lib_connect_refused),
		cmocka_unit_test(test_lib_connect_checks_broker_uid),
		cmocka_unit_test(test_lib_attach_and_tensors),
		cmocka_unit_test(test_lib_request_and_ack),
		cmocka_unit_test(test_lib_ack_during_attach_undoes_it),
		cmocka_unit_test(test_lib_event_fd_ready_while_queued),
		cmocka_unit_test_teardown(
			test_lib_bounded_against_stopped_broker,
			continue_broker),
		cmocka_unit_test(test_lib_attach_wait_until_ready),
		cmocka_unit_test(test_lib_replace_followed),
		cmocka_unit_test(test_lib_unload_event_then_broker_lost),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
