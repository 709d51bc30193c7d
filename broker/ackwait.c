/* SPDX-License-Identifier: MIT */
/*
 * ackwait.c - the ack semaphore and the thread that waits on it.  Workers
 * post /dev/shm/sem.mbroker.<instance>.ack when they let go of a model; the
 * thread sleeps in sem_clockwait against a CLOCK_MONOTONIC deadline and
 * wakes the main loop on every post and when the deadline passes.  EINTR
 * neither extends nor shortens the wait.  Who is done is never read from
 * the semaphore's value: the main loop decides that from its own
 * per-worker state (lease.c), so a worker that posts twice cannot end a
 * wait early, and one that dies without posting is not waited for.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mbrokerd.h"
#include "wakeup.h"

/* How often the waiter looks when the semaphore itself fails. */
#define ACKWAIT_FALLBACK_MS 10

static struct {
	sem_t *sem;
	char name[NAMES_SHM_MAX];
	pthread_t thread;
	bool running;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	int64_t deadline_ms; /* -1: disarmed */
	bool stop;
	atomic_bool wake_pending; /* coalesces wake-ups not yet handled */
	struct wakeup *wakeup;
	void (*wake)(void);
} ackwait = {
	.sem = SEM_FAILED,
	.lock = PTHREAD_MUTEX_INITIALIZER,
	.cond = PTHREAD_COND_INITIALIZER,
	.deadline_ms = -1,
};

static void
ackwait_woken(void *ptr)
{
	(void)ptr;
	atomic_store(&ackwait.wake_pending, false);
	ackwait.wake();
}

/*
 * sem_clockwait failed for another reason than the deadline: the deadline
 * must hold all the same, so sleep a short step on the monotonic clock and
 * let the main loop look (it decides from its own records anyway).
 * Returns the deadline once it has passed, else -1.
 */
static int64_t
ackwait_fallback(int64_t deadline)
{
	static bool warned;
	struct timespec step = {0, ACKWAIT_FALLBACK_MS * 1000000};

	if (!warned)
		log_warn("sem_clockwait on %s; polling every %d ms instead",
			 ackwait.name, ACKWAIT_FALLBACK_MS);
	warned = true;
	clock_nanosleep(CLOCK_MONOTONIC, 0, &step, NULL);
	return clock_monotonic_ms() >= deadline ? deadline : -1;
}

static void *
ackwait_thread(void *arg)
{
	int64_t expired = -1; /* the deadline that last timed out */

	(void)arg;
	pthread_mutex_lock(&ackwait.lock);
	while (!ackwait.stop) {
		int64_t deadline = ackwait.deadline_ms;
		struct timespec ts;
		int r;

		if (deadline < 0 || deadline == expired) {
			pthread_cond_wait(&ackwait.cond, &ackwait.lock);
			continue;
		}
		pthread_mutex_unlock(&ackwait.lock);
		ts.tv_sec = deadline / 1000;
		ts.tv_nsec = (deadline % 1000) * 1000000;
		do
			r = sem_clockwait(ackwait.sem, CLOCK_MONOTONIC, &ts);
		while (r < 0 && errno == EINTR);
		if (r < 0 && errno == ETIMEDOUT)
			expired = deadline;
		else if (r < 0)
			expired = ackwait_fallback(deadline);
		if (!atomic_exchange(&ackwait.wake_pending, true))
			wakeup_post(ackwait.wakeup, NULL);
		pthread_mutex_lock(&ackwait.lock);
	}
	pthread_mutex_unlock(&ackwait.lock);
	return NULL;
}

int
ackwait_init(void (*wake)(void))
{
	char path[320]; /* "/dev/shm/sem." and the name, with room */
	sigset_t all, old;
	int r;

	ackwait.wake = wake;
	pthread_mutex_lock(&ackwait.lock);
	ackwait.stop = false;
	ackwait.deadline_ms = -1;
	pthread_mutex_unlock(&ackwait.lock);
	atomic_store(&ackwait.wake_pending, false);
	if (names_shm(ackwait.name, sizeof ackwait.name, broker.cfg.instance,
		      "ack") < 0)
		return -1;
	ackwait.sem = sem_open(ackwait.name, O_CREAT | O_EXCL, 0600, 0);
	if (ackwait.sem == SEM_FAILED) {
		log_warn("cannot create semaphore %s%s", ackwait.name,
			 errno == EEXIST ? " (a name that is not ours; left "
					   "untouched)" : "");
		return -1;
	}
	/* Workers of the client group post it too. */
	snprintf(path, sizeof path, "/dev/shm/sem.%s", ackwait.name + 1);
	rights_share(path, -1, 0060);
	if ((ackwait.wakeup = wakeup_new(ackwait_woken)) == NULL) {
		log_warn("cannot create the ack wake-up pipe");
		return -1;
	}
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	r = pthread_create(&ackwait.thread, NULL, ackwait_thread, NULL);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (r != 0) {
		log_warnx("cannot start the ack waiter: %s", strerror(r));
		return -1;
	}
	ackwait.running = true;
	return 0;
}

void
ackwait_arm(int64_t deadline_ms)
{
	pthread_mutex_lock(&ackwait.lock);
	if (ackwait.deadline_ms != deadline_ms) {
		/* The thread may sleep on the condition or in the semaphore
		 * with the old deadline: wake it either way to re-read it. */
		if (ackwait.deadline_ms >= 0 && ackwait.sem != SEM_FAILED)
			sem_post(ackwait.sem);
		ackwait.deadline_ms = deadline_ms;
		pthread_cond_signal(&ackwait.cond);
	}
	pthread_mutex_unlock(&ackwait.lock);
}

const char *
ackwait_name(void)
{
	return ackwait.name;
}

void
ackwait_shutdown(void)
{
	if (ackwait.running) {
		pthread_mutex_lock(&ackwait.lock);
		ackwait.stop = true;
		pthread_cond_signal(&ackwait.cond);
		pthread_mutex_unlock(&ackwait.lock);
		sem_post(ackwait.sem);
		pthread_join(ackwait.thread, NULL);
		ackwait.running = false;
	}
	wakeup_free(ackwait.wakeup);
	ackwait.wakeup = NULL;
	if (ackwait.sem != SEM_FAILED) {
		sem_close(ackwait.sem);
		ackwait.sem = SEM_FAILED;
		if (sem_unlink(ackwait.name) < 0 && errno != ENOENT)
			log_warn("cannot unlink semaphore %s", ackwait.name);
	}
}
