/* Private to pkcs11/: the token's state, shared by token.c, sign.c, module.c and pcsc.c.
 *
 * Token state and recovery (issues 5 and 6). A token is UP, DOWN or PIN_FAILED:
 * - UP -> DOWN when the PC/SC watcher sees the card leave its reader, when a call fails with a
 *   "token gone" CK_RV (device removed or in error, session lost, login lost), or when a
 *   signature or key lookup has been in the module longer than TOK_CALL_DEADLINE_MS. Going
 *   down bumps gen: every session and key handle of an older gen is dead, whoever holds it.
 * - Signatures and key lookups run on worker threads (worker.c); the request waits
 *   TOK_CALL_DEADLINE_MS at most, then is answered TOK_ERR_UNAVAILABLE and the token marked
 *   down: a module call that never returns costs its worker, not the request.
 * - While not UP, the request path answers TOK_ERR_UNAVAILABLE (TOK_ERR_PIN when PIN_FAILED)
 *   at once without entering the module: no request waits on a vanished token.
 * - DOWN -> UP by the monitor thread, with backoff (TOK_BACKOFF_*), woken early by a PC/SC
 *   insertion: under the write side of op_lock (so no other thread is inside the module; a
 *   worker stuck in the module delays this until the module lets it go) close every session
 *   (each of ours by its handle, then C_CloseAllSessions: closing the last one logs out, so
 *   the login below reaches the token), re-initialise the module if it lost its state or the
 *   previous attempt failed, find the token again by URI, check it is the same token
 *   (serial), open the anchor session and log in with the PIN held in locked memory.
 * - DOWN -> PIN_FAILED when that login fails for any reason other than the token going away
 *   again: the PIN is never tried twice, so retries can never lock a card. Only a restart (with
 *   a corrected PIN file) leaves PIN_FAILED.
 * Calls into the module on the request path hold the read side of op_lock. */
#ifndef IAMSIGN_PKCS11_INTERNAL_H
#define IAMSIGN_PKCS11_INTERNAL_H

#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdint.h>

#include "pkcs11/token.h"

/* A request waits this long for its signature (worker.c); then it is answered "unavailable"
 * and the token marked down, so that later requests fail fast instead of queueing behind it.
 * The ledger's wait that follows has its own bound (ledger.write_timeout, 2 s by default). */
#define TOK_CALL_DEADLINE_MS 1500
/* Recovery attempts back off from the first to the last delay, doubling. The first attempt
 * of an outage also waits TOK_BACKOFF_MIN_MS: the token that just failed is given a moment,
 * and /healthz shows the outage. The delay is reset only once a signature has succeeded
 * again, so a token that logs in fine but fails every signature is retried ever more slowly
 * rather than flapping. */
#define TOK_BACKOFF_MIN_MS 200
#define TOK_BACKOFF_MAX_MS 2000
/* Worker threads for module calls on the request path (worker.c). */
#define TOK_MAX_WORKERS 64
/* tok_close waits this long for a worker stuck in the module before leaving it there. */
#define TOK_CLOSE_WAIT_MS 10000
/* Watchdog period while the token is up. */
#define TOK_WATCH_MS 250
/* Settle time after a card failed a signature (see tok_mark_down_settle). */
#define TOK_CARD_SETTLE_MS 600

enum tok_st { ST_UP = 0, ST_DOWN = 1, ST_PIN_FAILED = 2 };

struct tok_sess {
	struct token *tok;
	CK_SESSION_HANDLE h;
	unsigned gen;               /* token gen the session was opened in */
	_Atomic int64_t busy_since; /* monotonic ms a signature entered the module, 0: idle */
	int orphan; /* no thread's any more; kept for the next recovery to close (sess_lock) */
	struct tok_sess *prev;
	struct tok_sess *next;
};

struct key_ent {
	struct key_ent *next;
	uint64_t hash;
	char *uri;
	_Atomic unsigned hgen; /* token gen in which key.priv was (re)found */
	struct tok_key key;
};

struct tok_pcsc;
struct token;

/* Work for the module on a worker thread (worker.c). run() is called on the worker; drop()
 * frees the job, by tok_job_run's caller unless the caller gave up on it (*gone), then by the
 * worker once run() returned. */
struct tok_job {
	int (*run)(struct token *tok, struct tok_job *job);
	void (*drop)(struct tok_job *job);
	int result;
	int state; /* worker.c; under pool_lock */
	/* Posted for this job's requester alone, under pool_lock with state JOB_DONE: the
	 * requester reads the result without queueing again for pool_lock. */
	sem_t done;
	struct tok_job *next;
};

/* Format an error message into err (nothing when err is NULL or errlen 0). */
void tok_seterr(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

struct token {
	void *dl;
	CK_FUNCTION_LIST *fl;
	int finalize;
	CK_SLOT_ID slot;
	char *uri; /* token URI, for finding the token again */
	int require_initialized;

	/* Every open session, so tok_close() can close them; the thread's own via tkey. */
	pthread_key_t tkey;
	int tkey_ok;
	pthread_mutex_t sess_lock;
	int sess_lock_ok;
	struct tok_sess *sessions;
	/* Holds the login: PKCS#11 logs the user out when the last session closes, and worker
	 * sessions come and go. */
	CK_SESSION_HANDLE anchor;
	int have_anchor;

	pthread_rwlock_t cache_lock;
	int cache_lock_ok;
	struct key_ent **buckets;
	size_t nbuckets;
	size_t nkeys;
	/* Flushed entries stay allocated until tok_close(): callers may still hold pointers. */
	struct key_ent *retired;

	/* State and recovery (see the top of this file). */
	_Atomic int state;
	_Atomic unsigned gen;
	pthread_rwlock_t op_lock;
	int op_lock_ok;
	unsigned char serial[16]; /* CK_TOKEN_INFO.serialNumber at open */
	int have_serial;
	char *pin; /* user PIN in an mlock()ed, MADV_DONTDUMP mapping; NULL: no login */
	size_t pin_len;
	size_t pin_map;

	pthread_mutex_t mon_lock;
	pthread_cond_t mon_cond;
	int mon_ok;
	pthread_t mon_thread;
	int mon_running;
	int mon_stop;
	int mon_kick; /* something happened: look now rather than after the backoff */
	/* The module lost its state, or its view of a card may be stale: C_Finalize +
	 * C_Initialize before the next login. Set under op_lock's read side, read under its
	 * write side. */
	int need_reinit;
	struct tok_pcsc *pcsc;
	int removable;            /* the slot is a card reader (CKF_HW_SLOT, removable) */
	_Atomic int card_present; /* PC/SC's view, 1 when no watcher */
	int64_t down_since;       /* monotonic ms */
	int64_t settle_until;     /* monotonic ms: no recovery attempt before (mon_lock) */

	/* Worker pool (worker.c). */
	pthread_mutex_t pool_lock;
	pthread_cond_t pool_cond; /* a job was queued, or stop */
	pthread_cond_t pool_exit; /* a worker exited */
	int pool_ok;
	int pool_stop;
	int nworkers, nidle, nqueued;
	/* The most workers at once, each holding one session: the token's session limit (or
	 * tok_opts.max_sessions) less the login's, lowered when the token refuses a worker a
	 * session. Workers above it leave. */
	int pool_cap;
	/* Every worker started, joined at stop: a worker that has left its loop is still running
	 * its thread-exit destructors (its session's, OpenSSL's), which must be over before the
	 * token is freed and the module unloaded. */
	pthread_t threads[TOK_MAX_WORKERS];
	int nthreads;
	struct tok_job *queue_head, *queue_tail;

	/* Backoff between recovery attempts (mon_lock); reset once a signature succeeds after
	 * an outage (proven). */
	int backoff_ms;
	_Atomic int proven;
	int attempts; /* recovery attempts in this outage (monitor thread) */

	/* Counters for tok_stats(). */
	_Atomic uint64_t n_down;
	_Atomic uint64_t n_up;
	_Atomic uint64_t n_fast_fail;
	_Atomic int64_t last_down_ms;   /* how long the last outage lasted */
	_Atomic int64_t last_detect_ms; /* removal seen -> marked down (PC/SC path) */
};

/* module.c */
int tok_module_load(const char *module, const char *const *dirs, void **dl_out,
                    CK_FUNCTION_LIST **fl_out, int *finalize_out, char *err, size_t errlen);
void tok_module_unload(void *dl, CK_FUNCTION_LIST *fl, int finalize);
/* C_Finalize then C_Initialize again (module lost its state). A CK_RV. */
CK_RV tok_module_reinit(CK_FUNCTION_LIST *fl);

/* worker.c */
int tok_pool_init(struct token *tok);
/* Queue job and wait up to deadline_ms for a worker to run it. The job's result when it ran in
 * time (the caller then drops it); else TOK_ERR_UNAVAILABLE, with *gone set when a worker is
 * still running it (the worker drops it later: the caller must not touch it again).
 * TOK_ERR_INTERNAL when no worker can be started. */
int tok_job_run(struct token *tok, struct tok_job *job, int deadline_ms, int *gone);
/* The request path's call into the module: TOK_ERR_UNAVAILABLE (or TOK_ERR_PIN) at once while
 * the token is not up; else tok_job_run with TOK_CALL_DEADLINE_MS. Past the deadline the token
 * is marked down ("<what> took longer than ...") and *gone set, as with tok_job_run. */
int tok_job_call(struct token *tok, struct tok_job *job, const char *what, int *gone);
/* Stop the workers, waiting up to wait_ms for those inside the module. TOK_OK when all are
 * gone; TOK_ERR_UNAVAILABLE when some are still stuck (the module must then stay loaded). */
int tok_pool_stop(struct token *tok, int wait_ms);

/* token.c */
/* Find the token again by the URI given to tok_open (sets tok->slot). */
int tok_select(struct token *tok, char *err, size_t errlen);

/* session.c */
int64_t tok_now_ms(void);
/* One line on stderr, "<UTC time> iamsign token: <message>". */
void tok_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
CK_RV tok_open_session(struct token *tok, CK_SESSION_HANDLE *h);
void tok_sess_destructor(void *v);
/* Copy the PIN into a locked mapping (tok->pin); tok_pin_drop wipes and unmaps it. */
int tok_pin_hold(struct token *tok, const char *pin, size_t len);
void tok_pin_drop(struct token *tok);
/* Monitor: init the lock and condition (before anything can mark the token down), start the
 * thread (and the PC/SC watcher for a card reader), stop and join both. */
int tok_monitor_init(struct token *tok);
int tok_monitor_start(struct token *tok);
void tok_monitor_stop(struct token *tok);
/* Map rv after a failed call on the calling thread's session, dropping that session when the
 * module says it is gone (or left it mid-operation) so the next call opens a new one, and
 * marking the token down when rv says the token (not just the request) is gone. */
int tok_session_failed(struct token *tok, CK_RV rv);
/* The calling thread's session record (opened on first use). Caller holds op_lock (read). */
int tok_sess_get(struct token *tok, struct tok_sess **out);
/* Mark the token down (once per outage) and wake the monitor. why: one line for stderr. */
void tok_mark_down(struct token *tok, unsigned gen, const char *why);
/* The same, but the first recovery attempt waits settle_ms: a card that failed mid-signature
 * may have been pulled, and PC/SC reports that only some 100-400 ms later; logging in again
 * before then can "succeed" against OpenSC's stale view of a card that is gone. */
void tok_mark_down_settle(struct token *tok, unsigned gen, const char *why, int settle_ms);
/* Fail-fast gate and the read side of op_lock for a request's module calls; tok_use_end()
 * releases it. TOK_OK, TOK_ERR_UNAVAILABLE or TOK_ERR_PIN. */
int tok_use_begin(struct token *tok);
void tok_use_end(struct token *tok);
/* Make key->priv valid in the current gen (re-find it after a recovery). Caller holds op_lock
 * (read). TOK_OK or an error; TOK_ERR_NOT_FOUND if the key is no longer on the token. */
int tok_key_fresh(struct token *tok, const struct tok_key *key);
/* The user PIN held for re-login and context-specific login; NULL when none. */
const char *tok_pin(struct token *tok, size_t *len);
/* A login (user or context-specific) failed with rv: TOK_ERR_UNAVAILABLE when the token went
 * away meanwhile (retrying later is safe), else TOK_ERR_PIN after switching to PIN_FAILED and
 * saying so loudly (never retried). */
int tok_login_failed(struct token *tok, CK_USER_TYPE who, CK_RV rv);

/* pcsc.c: a thread watching one PC/SC reader. present() is called from that thread with 0 when
 * the card leaves (or the reader or pcscd goes away) and 1 when a card is back. */
typedef void (*tok_pcsc_cb)(void *arg, int present);
/* reader: the PKCS#11 slot description (a prefix of the PC/SC reader name, space-padded).
 * TOK_OK, or TOK_ERR_UNAVAILABLE when PC/SC is not there (no watcher then). */
int tok_pcsc_start(const char *reader, tok_pcsc_cb cb, void *arg, struct tok_pcsc **out);
void tok_pcsc_stop(struct tok_pcsc *w);

#endif
