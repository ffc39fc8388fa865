/* Module calls with a deadline: the request path hands its token work to a pool of worker
 * threads and waits at most a deadline for the answer.
 *
 * A thread inside C_Sign cannot be called back: a token that stops answering keeps it there
 * for as long as the module likes. So the request's thread never enters the module on the
 * signing path; a worker does (with its own session), and the request gives up after the
 * deadline, answers "unavailable" and marks the token down. The worker comes back whenever
 * the module lets it and throws the late result away; until then recovery waits for it (it
 * holds op_lock's read side), and requests fail fast in the meantime.
 *
 * Everything the request path asks of the module goes this way: signatures (sign.c) and the
 * first lookup of a key (token.c), so the requests' threads hold no session of their own.
 *
 * Workers start on demand, up to pool_cap (the token's session limit less the login's session,
 * TOK_MAX_WORKERS at most); idle ones wait for the next job. A token that refuses a worker its
 * session (CKR_SESSION_COUNT: it allows fewer than it said, or another application holds the
 * rest) lowers the cap to the workers that have one; the refused worker leaves and its job goes
 * back to the head of the queue for them, so the request does not fail for it. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pkcs11/internal.h"

enum { JOB_QUEUED = 0, JOB_RUNNING = 1, JOB_DONE = 2, JOB_ABANDONED = 3 };

int tok_pool_init(struct token *tok)
{
	pthread_condattr_t ca;

	if (pthread_mutex_init(&tok->pool_lock, NULL) != 0)
		return TOK_ERR_INTERNAL;
	if (pthread_condattr_init(&ca) != 0)
		goto fail_mutex;
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	if (pthread_cond_init(&tok->pool_cond, &ca) != 0)
		goto fail_attr;
	if (pthread_cond_init(&tok->pool_exit, &ca) != 0)
		goto fail_cond;
	pthread_condattr_destroy(&ca);
	tok->pool_cap = TOK_MAX_WORKERS;
	tok->pool_ok = 1;
	return TOK_OK;
fail_cond:
	pthread_cond_destroy(&tok->pool_cond);
fail_attr:
	pthread_condattr_destroy(&ca);
fail_mutex:
	pthread_mutex_destroy(&tok->pool_lock);
	return TOK_ERR_INTERNAL;
}

static void deadline_at(struct timespec *ts, int ms)
{
	clock_gettime(CLOCK_MONOTONIC, ts);
	ts->tv_sec += ms / 1000;
	ts->tv_nsec += (long)(ms % 1000) * 1000000L;
	if (ts->tv_nsec >= 1000000000L) {
		ts->tv_sec++;
		ts->tv_nsec -= 1000000000L;
	}
}

/* A worker's job failed TOK_ERR_BUSY: the token refused it a session. Unless it is the only
 * worker, lower the cap below it (it leaves) and put its job back at the head of the queue, for
 * the workers that have a session: 1 then, and the job is no longer this worker's. Caller holds
 * pool_lock. */
static int session_refused(struct token *tok, struct tok_job *job)
{
	if (tok->nworkers <= 1)
		return 0;
	if (tok->pool_cap > tok->nworkers - 1) {
		tok->pool_cap = tok->nworkers - 1;
		tok_log("the token refused a new session (CKR_SESSION_COUNT); signing continues "
		        "on at most %d worker(s), one session each",
		        tok->pool_cap);
		pthread_cond_broadcast(&tok->pool_cond); /* idle workers above the cap leave */
	}
	if (job->state == JOB_ABANDONED)
		return 0; /* its requester has gone: the worker drops it, then leaves */
	job->state = JOB_QUEUED;
	job->next = tok->queue_head;
	tok->queue_head = job;
	if (tok->queue_tail == NULL)
		tok->queue_tail = job;
	tok->nqueued++;
	pthread_cond_signal(&tok->pool_cond);
	return 1;
}

static void *worker(void *arg)
{
	struct token *tok = arg;
	struct tok_job *job;
	int r;

	pthread_setname_np(pthread_self(), "token-worker");
	pthread_mutex_lock(&tok->pool_lock);
	while (!tok->pool_stop && tok->nworkers <= tok->pool_cap) {
		job = tok->queue_head;
		if (job == NULL) {
			tok->nidle++;
			pthread_cond_wait(&tok->pool_cond, &tok->pool_lock);
			tok->nidle--;
			continue;
		}
		tok->queue_head = job->next;
		if (tok->queue_head == NULL)
			tok->queue_tail = NULL;
		tok->nqueued--;
		job->state = JOB_RUNNING;
		pthread_mutex_unlock(&tok->pool_lock);

		r = job->run(tok, job);

		pthread_mutex_lock(&tok->pool_lock);
		if (r == TOK_ERR_BUSY && session_refused(tok, job))
			break;
		job->result = r;
		if (job->state == JOB_ABANDONED) {
			/* Its caller answered long ago; the late result goes nowhere. */
			pthread_mutex_unlock(&tok->pool_lock);
			sem_destroy(&job->done);
			job->drop(job);
			pthread_mutex_lock(&tok->pool_lock);
		} else {
			job->state = JOB_DONE;
			sem_post(&job->done); /* the job is its requester's from here */
		}
	}
	tok->nworkers--;
	pthread_cond_broadcast(&tok->pool_exit);
	pthread_mutex_unlock(&tok->pool_lock);
	return NULL;
}

/* Caller holds pool_lock. */
static void unqueue(struct token *tok, struct tok_job *job)
{
	struct tok_job **pp, *prev = NULL;

	for (pp = &tok->queue_head; *pp != NULL; prev = *pp, pp = &(*pp)->next) {
		if (*pp == job) {
			*pp = job->next;
			if (tok->queue_tail == job)
				tok->queue_tail = prev;
			tok->nqueued--;
			return;
		}
	}
}

int tok_job_run(struct token *tok, struct tok_job *job, int deadline_ms, int *gone)
{
	struct timespec until;
	pthread_t t;
	int spawned = 0, rc = 0;

	*gone = 0;
	if (!tok->pool_ok || sem_init(&job->done, 0, 0) != 0)
		return TOK_ERR_INTERNAL;
	job->state = JOB_QUEUED;
	job->next = NULL;
	job->result = TOK_ERR_UNAVAILABLE;
	deadline_at(&until, deadline_ms);

	pthread_mutex_lock(&tok->pool_lock);
	if (tok->pool_stop) {
		pthread_mutex_unlock(&tok->pool_lock);
		sem_destroy(&job->done);
		return TOK_ERR_UNAVAILABLE;
	}
	if (tok->queue_tail != NULL)
		tok->queue_tail->next = job;
	else
		tok->queue_head = job;
	tok->queue_tail = job;
	tok->nqueued++;
	if (tok->nqueued > tok->nidle && tok->nworkers < tok->pool_cap &&
	    tok->nthreads < TOK_MAX_WORKERS) {
		if (pthread_create(&t, NULL, worker, tok) == 0) {
			tok->threads[tok->nthreads++] = t;
			tok->nworkers++;
			spawned = 1;
		}
		if (!spawned && tok->nworkers == 0) {
			unqueue(tok, job);
			pthread_mutex_unlock(&tok->pool_lock);
			sem_destroy(&job->done);
			return TOK_ERR_INTERNAL;
		}
	}
	pthread_mutex_unlock(&tok->pool_lock);
	/* After the unlock, so that the worker does not wake only to wait for pool_lock. */
	pthread_cond_signal(&tok->pool_cond);
	do
		rc = sem_clockwait(&job->done, CLOCK_MONOTONIC, &until);
	while (rc != 0 && errno == EINTR);
	if (rc == 0) { /* done: posted after the worker's last touch */
		sem_destroy(&job->done);
		return job->result;
	}
	pthread_mutex_lock(&tok->pool_lock);
	if (job->state == JOB_DONE) { /* as the wait ran out: posted under pool_lock */
		pthread_mutex_unlock(&tok->pool_lock);
		sem_destroy(&job->done);
		return job->result;
	}
	if (job->state == JOB_QUEUED) {
		/* No worker got to it: every one is busy, most likely stuck in the module. */
		unqueue(tok, job);
		pthread_mutex_unlock(&tok->pool_lock);
		sem_destroy(&job->done);
		return TOK_ERR_UNAVAILABLE;
	}
	/* The worker destroys the semaphore when the module lets it go. */
	job->state = JOB_ABANDONED;
	*gone = 1;
	pthread_mutex_unlock(&tok->pool_lock);
	return TOK_ERR_UNAVAILABLE;
}

int tok_job_call(struct token *tok, struct tok_job *job, const char *what, int *gone)
{
	char why[128];
	unsigned gen;
	int st, r;

	*gone = 0;
	if ((st = atomic_load(&tok->state)) != ST_UP) {
		atomic_fetch_add(&tok->n_fast_fail, 1);
		return st == ST_PIN_FAILED ? TOK_ERR_PIN : TOK_ERR_UNAVAILABLE;
	}
	gen = atomic_load(&tok->gen);
	r = tok_job_run(tok, job, TOK_CALL_DEADLINE_MS, gone);
	if (*gone) {
		snprintf(why, sizeof(why),
		         "%s took longer than %.1f s; the module has not returned", what,
		         TOK_CALL_DEADLINE_MS / 1000.0);
		tok_mark_down(tok, gen, why);
		r = TOK_ERR_UNAVAILABLE;
	}
	return r;
}

int tok_pool_stop(struct token *tok, int wait_ms)
{
	struct timespec until;
	int rc = 0, left;

	if (!tok->pool_ok)
		return TOK_OK;
	deadline_at(&until, wait_ms);
	pthread_mutex_lock(&tok->pool_lock);
	tok->pool_stop = 1;
	pthread_cond_broadcast(&tok->pool_cond);
	while (tok->nworkers > 0 && rc != ETIMEDOUT)
		rc = pthread_cond_timedwait(&tok->pool_exit, &tok->pool_lock, &until);
	left = tok->nworkers;
	pthread_mutex_unlock(&tok->pool_lock);
	if (left > 0)
		return TOK_ERR_UNAVAILABLE;
	/* All have left their loop; wait until their threads are gone too. */
	for (int i = 0; i < tok->nthreads; i++)
		pthread_join(tok->threads[i], NULL);
	tok->nthreads = 0;
	pthread_cond_destroy(&tok->pool_cond);
	pthread_cond_destroy(&tok->pool_exit);
	pthread_mutex_destroy(&tok->pool_lock);
	tok->pool_ok = 0;
	return TOK_OK;
}
