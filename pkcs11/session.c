/* The daemon's own sessions (one per calling thread: the workers), the token's state, and
 * recovery after the token goes away: PC/SC removal, a "token gone" CK_RV, or a call stuck in
 * the module. The state machine is described in internal.h.
 *
 * Sessions are ours, not a library pool's (see DESIGN: libp11's pool hangs or hands out dead
 * sessions when the token goes away): each thread opens its own on first use. A session from
 * before an outage is never closed by handle afterwards: the module may have handed the same
 * number to a new session of another thread. The recovery alone closes them all by handle,
 * while no thread is in the module (close_sessions). */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <p11-kit/p11-kit.h>

#include "pkcs11/internal.h"

int64_t tok_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Wall-clock stamp for stderr lines, so operators can line them up with pcscd's log. */
void tok_log(const char *fmt, ...)
{
	char line[512];
	struct timespec ts;
	struct tm tm;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	fprintf(stderr, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ iamsign token: %s\n",
	        tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
	        ts.tv_nsec / 1000000, line);
}

/* --- the PIN, held for re-login --- */

int tok_pin_hold(struct token *tok, const char *pin, size_t len)
{
	long pg = sysconf(_SC_PAGESIZE);
	size_t map;
	void *p;

	if (pg <= 0 || len == 0)
		return TOK_ERR_INTERNAL;
	map = (len + 1 + (size_t)pg - 1) / (size_t)pg * (size_t)pg;
	p = mmap(NULL, map, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return TOK_ERR_INTERNAL;
	/* Never in a core dump, never in a forked child, never swapped. */
	madvise(p, map, MADV_DONTDUMP);
#ifdef MADV_WIPEONFORK
	madvise(p, map, MADV_WIPEONFORK);
#endif
	if (mlock(p, map) != 0) {
		tok_log("cannot lock the PIN in memory (mlock: %s); raise RLIMIT_MEMLOCK "
		        "(LimitMEMLOCK=) to at least %zu bytes",
		        strerror(errno), map);
		munmap(p, map);
		return TOK_ERR_PIN;
	}
	memcpy(p, pin, len);
	((char *)p)[len] = '\0';
	tok->pin = p;
	tok->pin_len = len;
	tok->pin_map = map;
	return TOK_OK;
}

void tok_pin_drop(struct token *tok)
{
	if (tok->pin == NULL)
		return;
	OPENSSL_cleanse(tok->pin, tok->pin_map);
	munlock(tok->pin, tok->pin_map);
	munmap(tok->pin, tok->pin_map);
	tok->pin = NULL;
	tok->pin_len = 0;
	tok->pin_map = 0;
}

const char *tok_pin(struct token *tok, size_t *len)
{
	*len = tok->pin_len;
	return tok->pin;
}

/* --- sessions --- */

static void sess_link(struct token *tok, struct tok_sess *s)
{
	pthread_mutex_lock(&tok->sess_lock);
	s->prev = NULL;
	s->next = tok->sessions;
	if (tok->sessions != NULL)
		tok->sessions->prev = s;
	tok->sessions = s;
	pthread_mutex_unlock(&tok->sess_lock);
}

/* Off the token's list; the caller holds sess_lock. */
static void sess_unlink_locked(struct token *tok, struct tok_sess *s)
{
	if (s->prev != NULL)
		s->prev->next = s->next;
	else
		tok->sessions = s->next;
	if (s->next != NULL)
		s->next->prev = s->prev;
}

static void sess_unlink(struct token *tok, struct tok_sess *s)
{
	pthread_mutex_lock(&tok->sess_lock);
	sess_unlink_locked(tok, s);
	pthread_mutex_unlock(&tok->sess_lock);
}

/* A worker thread exits: close its session rather than leak one per thread, unless it is from
 * before an outage (then the handle is dead, or someone else's by now). */
void tok_sess_destructor(void *v)
{
	struct tok_sess *s = v;
	struct token *tok = s->tok;

	sess_unlink(tok, s);
	if (pthread_rwlock_tryrdlock(&tok->op_lock) == 0) {
		if (s->gen == atomic_load(&tok->gen) && s->h != CK_INVALID_HANDLE)
			tok->fl->C_CloseSession(s->h);
		pthread_rwlock_unlock(&tok->op_lock);
	}
	free(s);
}

CK_RV tok_open_session(struct token *tok, CK_SESSION_HANDLE *h)
{
	CK_RV rv;

	rv = tok->fl->C_OpenSession(tok->slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, h);
	/* A key adopted from a read-only card still signs in a read-only session. */
	if (rv == CKR_TOKEN_WRITE_PROTECTED)
		rv = tok->fl->C_OpenSession(tok->slot, CKF_SERIAL_SESSION, NULL, NULL, h);
	return rv;
}

/* Forget the thread's session; close it only when it is of the current gen. One not closed is
 * kept, no longer the thread's, for the next recovery to close: a module that called it dead
 * (or a token that went away under it) may still hold it, and with it a login. */
static void sess_drop(struct token *tok, struct tok_sess *s, int close_it)
{
	pthread_setspecific(tok->tkey, NULL);
	if (!close_it && s->h != CK_INVALID_HANDLE) {
		pthread_mutex_lock(&tok->sess_lock);
		s->orphan = 1;
		pthread_mutex_unlock(&tok->sess_lock);
		return;
	}
	sess_unlink(tok, s);
	if (close_it && s->gen == atomic_load(&tok->gen) && s->h != CK_INVALID_HANDLE)
		tok->fl->C_CloseSession(s->h);
	free(s);
}

int tok_sess_get(struct token *tok, struct tok_sess **out)
{
	struct tok_sess *s;
	CK_SESSION_HANDLE h = CK_INVALID_HANDLE;
	unsigned gen = atomic_load(&tok->gen);
	CK_RV rv;

	s = pthread_getspecific(tok->tkey);
	/* No handle: a recovery closed it (see close_sessions). */
	if (s != NULL && s->gen == gen && s->h != CK_INVALID_HANDLE) {
		*out = s;
		return TOK_OK;
	}
	if (s != NULL)
		sess_drop(tok, s, 0);
	rv = tok_open_session(tok, &h);
	if (rv != CKR_OK) {
		if (tok_err_from_rv(rv) == TOK_ERR_UNAVAILABLE)
			tok_mark_down(tok, gen, p11_kit_strerror(rv));
		return tok_err_from_rv(rv);
	}
	s = calloc(1, sizeof(*s));
	if (s == NULL) {
		tok->fl->C_CloseSession(h);
		return TOK_ERR_INTERNAL;
	}
	s->tok = tok;
	s->h = h;
	s->gen = gen;
	sess_link(tok, s);
	if (pthread_setspecific(tok->tkey, s) != 0) {
		sess_unlink(tok, s);
		tok->fl->C_CloseSession(h);
		free(s);
		return TOK_ERR_INTERNAL;
	}
	*out = s;
	return TOK_OK;
}

static int state_err(int st)
{
	return st == ST_PIN_FAILED ? TOK_ERR_PIN : TOK_ERR_UNAVAILABLE;
}

int tok_session(struct token *tok, CK_SESSION_HANDLE *out)
{
	struct tok_sess *s;
	int st, r;

	if (tok == NULL || out == NULL)
		return TOK_ERR_INTERNAL;
	if ((st = atomic_load(&tok->state)) != ST_UP)
		return state_err(st);
	r = tok_sess_get(tok, &s);
	if (r == TOK_OK)
		*out = s->h;
	return r;
}

/* CK_RVs that say the token (or our login on it) is gone, not just that a request failed. */
static int rv_token_gone(CK_RV rv)
{
	switch (rv) {
	case CKR_DEVICE_REMOVED:
	case CKR_TOKEN_NOT_PRESENT:
	case CKR_DEVICE_ERROR:
	case CKR_SESSION_HANDLE_INVALID:
	case CKR_SESSION_CLOSED:
	case CKR_USER_NOT_LOGGED_IN:
	case CKR_CRYPTOKI_NOT_INITIALIZED:
	case CKR_TOKEN_NOT_RECOGNIZED:
		return 1;
	default:
		return 0;
	}
}

int tok_session_failed(struct token *tok, CK_RV rv)
{
	struct tok_sess *s;
	int close_it;

	s = pthread_getspecific(tok->tkey);
	if (rv == CKR_CRYPTOKI_NOT_INITIALIZED)
		tok->need_reinit = 1;
	if (s != NULL && rv_token_gone(rv))
		tok_mark_down(tok, s->gen, p11_kit_strerror(rv));
	switch (rv) {
	case CKR_SESSION_HANDLE_INVALID:
	case CKR_SESSION_CLOSED:
	case CKR_DEVICE_REMOVED:
	case CKR_TOKEN_NOT_PRESENT:
		/* The handle is already dead; closing it would only fail. */
		close_it = 0;
		break;
	case CKR_OPERATION_ACTIVE:
	case CKR_BUFFER_TOO_SMALL:
		/* An operation was left open: PKCS#11 2.40 has no way to cancel it but to close. */
		close_it = 1;
		break;
	default:
		return tok_err_from_rv(rv);
	}
	if (s != NULL)
		sess_drop(tok, s, close_it);
	return tok_err_from_rv(rv);
}

CK_FUNCTION_LIST *tok_functions(struct token *tok)
{
	return tok != NULL ? tok->fl : NULL;
}

CK_SLOT_ID tok_slot(struct token *tok)
{
	return tok != NULL ? tok->slot : 0;
}

/* --- state --- */

int tok_state(struct token *tok)
{
	if (tok == NULL)
		return TOK_STATE_DOWN;
	switch (atomic_load(&tok->state)) {
	case ST_UP:
		return TOK_STATE_UP;
	case ST_PIN_FAILED:
		return TOK_STATE_PIN_FAILED;
	default:
		return TOK_STATE_DOWN;
	}
}

void tok_stats(struct token *tok, struct tok_stats *st)
{
	memset(st, 0, sizeof(*st));
	if (tok == NULL)
		return;
	st->state = tok_state(tok);
	st->downs = atomic_load(&tok->n_down);
	st->recoveries = atomic_load(&tok->n_up);
	st->fast_failures = atomic_load(&tok->n_fast_fail);
	st->last_outage_ms = atomic_load(&tok->last_down_ms);
	st->pcsc = tok->pcsc != NULL;
}

void tok_mark_down_settle(struct token *tok, unsigned gen, const char *why, int settle_ms)
{
	int64_t until;

	if (!tok->mon_ok)
		return;
	pthread_mutex_lock(&tok->mon_lock);
	if (atomic_load(&tok->state) == ST_UP && atomic_load(&tok->gen) == gen) {
		atomic_store(&tok->gen, gen + 1);
		atomic_store(&tok->state, ST_DOWN);
		atomic_fetch_add(&tok->n_down, 1);
		tok->down_since = tok_now_ms();
		tok->attempts = 0;
		if (atomic_load(&tok->proven))
			tok->backoff_ms = TOK_BACKOFF_MIN_MS;
		/* The first attempt waits too (see TOK_BACKOFF_MIN_MS), longer when the token
		 * failed again before a signature succeeded since the last outage. */
		if (tok->backoff_ms > settle_ms)
			settle_ms = tok->backoff_ms;
		tok_log("down: %s; requests fail fast until it is back (next attempt in %d ms)",
		        why, settle_ms);
	}
	if (settle_ms > 0) {
		until = tok_now_ms() + settle_ms;
		if (until > tok->settle_until)
			tok->settle_until = until;
	}
	tok->mon_kick = 1;
	pthread_cond_signal(&tok->mon_cond);
	pthread_mutex_unlock(&tok->mon_lock);
}

void tok_mark_down(struct token *tok, unsigned gen, const char *why)
{
	tok_mark_down_settle(tok, gen, why, 0);
}

int tok_use_begin(struct token *tok)
{
	int st;

	if ((st = atomic_load(&tok->state)) != ST_UP)
		goto fail;
	/* A writer is recovering the token: do not wait for it. */
	if (pthread_rwlock_tryrdlock(&tok->op_lock) != 0) {
		st = ST_DOWN;
		goto fail;
	}
	if ((st = atomic_load(&tok->state)) == ST_UP)
		return TOK_OK;
	pthread_rwlock_unlock(&tok->op_lock);
fail:
	atomic_fetch_add(&tok->n_fast_fail, 1);
	return state_err(st);
}

void tok_use_end(struct token *tok)
{
	pthread_rwlock_unlock(&tok->op_lock);
}

static const char *who_name(CK_USER_TYPE who)
{
	return who == CKU_CONTEXT_SPECIFIC ? "context-specific login"
	       : who == CKU_SO             ? "SO login"
	                                   : "login";
}

int tok_login_failed(struct token *tok, CK_USER_TYPE who, CK_RV rv)
{
	int was;

	switch (rv) {
	case CKR_DEVICE_REMOVED:
	case CKR_TOKEN_NOT_PRESENT:
	case CKR_DEVICE_ERROR:
	case CKR_SESSION_HANDLE_INVALID:
	case CKR_SESSION_CLOSED:
	case CKR_CRYPTOKI_NOT_INITIALIZED:
	case CKR_TOKEN_NOT_RECOGNIZED:
	case CKR_USER_NOT_LOGGED_IN: /* context-specific: the user login was lost meanwhile */
		/* The token went away under the login; the PIN was not judged. */
		return TOK_ERR_UNAVAILABLE;
	default:
		break;
	}
	/* Anything else may be the PIN: some cards say CKR_GENERAL_ERROR for a wrong one. One
	 * more try could be the one that locks the card, so there is none. */
	was = atomic_exchange(&tok->state, ST_PIN_FAILED);
	if (was != ST_PIN_FAILED)
		tok_log("*** %s REFUSED by the token: %s (CKR 0x%lx). NOT retrying: a retry could "
		        "lock the card. Signing is off until token.pin_file is fixed and iamsignd "
		        "restarted. ***",
		        who_name(who), p11_kit_strerror(rv), (unsigned long)rv);
	return TOK_ERR_PIN;
}

/* --- watchdog, monitor and recovery --- */

/* A signature in the module for longer than the deadline: later requests must not queue behind
 * it. Recovery then waits (for op_lock) until the module gives that thread back. */
static void watchdog(struct token *tok)
{
	struct tok_sess *s;
	int64_t now = tok_now_ms(), since;
	unsigned gen = 0;
	int stuck = 0;

	pthread_mutex_lock(&tok->sess_lock);
	for (s = tok->sessions; s != NULL; s = s->next) {
		since = atomic_load(&s->busy_since);
		if (since != 0 && now - since > TOK_CALL_DEADLINE_MS) {
			stuck = 1;
			gen = s->gen;
			break;
		}
	}
	pthread_mutex_unlock(&tok->sess_lock);
	if (stuck)
		tok_mark_down(tok, gen, "a signature has been in the module for too long");
}

static void hexstr(const unsigned char *b, size_t n, char *out, size_t outlen)
{
	size_t i, m = n;

	while (m > 0 && (b[m - 1] == ' ' || b[m - 1] == '\0'))
		m--;
	for (i = 0; i < m && i + 1 < outlen; i++)
		out[i] = (b[i] >= 0x20 && b[i] < 0x7f) ? (char)b[i] : '?';
	out[i] = '\0';
}

/* Close every session the daemon opened, the anchor's included, each by its handle. Caller holds
 * op_lock for writing.
 *
 * C_CloseAllSessions alone is not enough: OpenSC 0.23's closes only every other session of the
 * slot (it deletes from its list while walking it by index). One left open keeps the module's
 * login, so the C_Login that follows answers CKR_USER_ALREADY_LOGGED_IN without the card seeing
 * the PIN; a card pulled and put back faster than PC/SC looks comes back reset, and then refuses
 * every signature. Closing by handle is safe here, and only here: no thread is in the module,
 * every session of ours is to be closed, and a dead handle's number that the module gave again
 * can only be one of ours too. */
static void close_sessions(struct token *tok)
{
	struct tok_sess *s, *next;

	pthread_mutex_lock(&tok->sess_lock);
	for (s = tok->sessions; s != NULL; s = next) {
		next = s->next;
		if (s->h != CK_INVALID_HANDLE) /* CKR_SESSION_HANDLE_INVALID when already gone */
			tok->fl->C_CloseSession(s->h);
		s->h = CK_INVALID_HANDLE; /* a thread's record goes when it next needs one */
		if (!s->orphan)
			continue;
		sess_unlink_locked(tok, s);
		free(s);
	}
	pthread_mutex_unlock(&tok->sess_lock);
	if (tok->have_anchor)
		tok->fl->C_CloseSession(tok->anchor);
	tok->have_anchor = 0;
}

/* One attempt to bring the token back. TOK_OK when it serves again. Takes op_lock for writing:
 * no other thread is inside the module meanwhile. */
static int recover(struct token *tok, int reinit, char *why, size_t whylen)
{
	CK_TOKEN_INFO ti;
	CK_SESSION_HANDLE h;
	CK_RV rv;
	char serial[17];
	int r = TOK_ERR_UNAVAILABLE;

	why[0] = '\0';
	pthread_rwlock_wrlock(&tok->op_lock);
	/* Sessions from before are dead or about to be; the anchor too. Closing the last one logs
	 * out, so the login below is a real one. Then any session we do not know of. */
	close_sessions(tok);
	rv = tok->fl->C_CloseAllSessions(tok->slot);
	if (rv == CKR_CRYPTOKI_NOT_INITIALIZED)
		tok->need_reinit = 1;
	/* After a failed attempt, start the module afresh too: a module that lost its
	 * connection to the device (a network HSM, a reader) may only find it again so. */
	if ((tok->need_reinit || reinit) && tok->finalize) {
		rv = tok_module_reinit(tok->fl);
		if (rv != CKR_OK) {
			snprintf(why, whylen, "module re-initialisation failed: %s",
			         p11_kit_strerror(rv));
			goto out;
		}
		tok->need_reinit = 0;
		tok_log("module re-initialised");
	}
	r = tok_select(tok, why, whylen);
	/* Every failure below is "still down": r must not stay TOK_OK from here (it did, and a
	 * failing C_OpenSession or C_GetTokenInfo then counted as a recovery, retried at once
	 * without backoff, in a tight loop against the token). */
	if (r != TOK_OK)
		goto out;
	r = TOK_ERR_UNAVAILABLE;
	rv = tok->fl->C_GetTokenInfo(tok->slot, &ti);
	if (rv != CKR_OK) {
		snprintf(why, whylen, "C_GetTokenInfo: %s", p11_kit_strerror(rv));
		goto out;
	}
	if (tok->have_serial && memcmp(ti.serialNumber, tok->serial, sizeof(tok->serial)) != 0) {
		/* Not the token we logged in to: its PIN tries are not ours to spend. */
		hexstr(ti.serialNumber, sizeof(ti.serialNumber), serial, sizeof(serial));
		snprintf(why, whylen,
		         "a different token (serial \"%s\") is in the slot; not logging in to it",
		         serial);
		goto out;
	}
	if (tok->pin != NULL && (ti.flags & (CKF_USER_PIN_LOCKED | CKF_USER_PIN_FINAL_TRY))) {
		r = tok_login_failed(tok, CKU_USER,
		                     (ti.flags & CKF_USER_PIN_LOCKED) ? CKR_PIN_LOCKED
		                                                      : CKR_PIN_INCORRECT);
		snprintf(why, whylen, "the token reports its user PIN %s",
		         (ti.flags & CKF_USER_PIN_LOCKED) ? "locked" : "at its final try");
		goto out;
	}
	rv = tok_open_session(tok, &h);
	if (rv != CKR_OK) {
		snprintf(why, whylen, "C_OpenSession: %s", p11_kit_strerror(rv));
		goto out;
	}
	tok->anchor = h;
	tok->have_anchor = 1;
	if (tok->pin != NULL) {
		rv = tok->fl->C_Login(h, CKU_USER, (CK_UTF8CHAR *)tok->pin, (CK_ULONG)tok->pin_len);
		if (rv != CKR_OK && rv != CKR_USER_ALREADY_LOGGED_IN) {
			r = tok_login_failed(tok, CKU_USER, rv);
			snprintf(why, whylen, "C_Login: %s", p11_kit_strerror(rv));
			goto out;
		}
	}
	/* Everything opened before this point belongs to the old gen. */
	atomic_fetch_add(&tok->gen, 1);
	atomic_store(&tok->state, ST_UP);
	r = TOK_OK;
out:
	if (r != TOK_OK && r != TOK_ERR_PIN)
		r = TOK_ERR_UNAVAILABLE;
	pthread_rwlock_unlock(&tok->op_lock);
	return r;
}

static void timed_wait(struct token *tok, int ms)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	ts.tv_sec += ms / 1000;
	ts.tv_nsec += (long)(ms % 1000) * 1000000L;
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	pthread_cond_timedwait(&tok->mon_cond, &tok->mon_lock, &ts);
}

static void *monitor(void *arg)
{
	struct token *tok = arg;
	int r, st, reinit;
	char why[256], last_why[256] = "";
	int64_t took, now;

	pthread_setname_np(pthread_self(), "token-monitor");
	pthread_mutex_lock(&tok->mon_lock);
	while (!tok->mon_stop) {
		st = atomic_load(&tok->state);
		if (st == ST_UP) {
			/* Signing again since the last outage: the next one starts afresh. */
			if (atomic_load(&tok->proven))
				tok->backoff_ms = TOK_BACKOFF_MIN_MS;
			last_why[0] = '\0';
			tok->mon_kick = 0;
			timed_wait(tok, TOK_WATCH_MS);
			if (!tok->mon_stop && atomic_load(&tok->state) == ST_UP) {
				pthread_mutex_unlock(&tok->mon_lock);
				watchdog(tok);
				pthread_mutex_lock(&tok->mon_lock);
			}
			continue;
		}
		if (st == ST_PIN_FAILED) {
			pthread_cond_wait(&tok->mon_cond, &tok->mon_lock);
			continue;
		}
		/* Down, and told to wait first (backoff, or PC/SC catching up). */
		now = tok_now_ms();
		if (tok->settle_until > now) {
			timed_wait(tok, (int)(tok->settle_until - now));
			continue;
		}
		/* With a PC/SC watcher and no card in the reader, an attempt is pointless:
		 * wait for the insertion (or the longest backoff, in case PC/SC misses it). */
		if (tok->pcsc != NULL && !atomic_load(&tok->card_present) && tok->attempts > 0) {
			tok->mon_kick = 0;
			timed_wait(tok, TOK_BACKOFF_MAX_MS);
			if (!tok->mon_kick && !atomic_load(&tok->card_present))
				continue;
		}
		tok->mon_kick = 0;
		/* Each attempt doubles the wait before the next one, until a signature succeeds. */
		tok->backoff_ms = tok->backoff_ms * 2 > TOK_BACKOFF_MAX_MS ? TOK_BACKOFF_MAX_MS
		                                                           : tok->backoff_ms * 2;
		reinit = tok->attempts > 0 && tok->pcsc == NULL;
		pthread_mutex_unlock(&tok->mon_lock);
		r = recover(tok, reinit, why, sizeof(why));
		pthread_mutex_lock(&tok->mon_lock);
		tok->attempts++;
		if (r == TOK_OK) {
			atomic_store(&tok->proven, 0);
			took = tok_now_ms() - tok->down_since;
			atomic_store(&tok->last_down_ms, took);
			atomic_fetch_add(&tok->n_up, 1);
			tok_log("up again after %lld ms (%d attempt%s): new sessions, logged in",
			        (long long)took, tok->attempts, tok->attempts == 1 ? "" : "s");
			continue;
		}
		if (r == TOK_ERR_PIN)
			continue;
		/* Say why once per distinct reason, not once per attempt. */
		if (why[0] != '\0' && strcmp(why, last_why) != 0) {
			tok_log("still down: %s (retrying with backoff, up to %d ms apart)", why,
			        TOK_BACKOFF_MAX_MS);
			snprintf(last_why, sizeof(last_why), "%s", why);
		}
		if (tok->mon_stop)
			continue;
		now = tok_now_ms() + tok->backoff_ms;
		if (now > tok->settle_until)
			tok->settle_until = now;
	}
	pthread_mutex_unlock(&tok->mon_lock);
	return NULL;
}

static void pcsc_event(void *arg, int present)
{
	struct token *tok = arg;

	atomic_store(&tok->card_present, present);
	if (!present) {
		tok_mark_down(tok, atomic_load(&tok->gen), "card removed from the reader (PC/SC)");
		return;
	}
	pthread_mutex_lock(&tok->mon_lock);
	/* A card is back: try now rather than after the backoff. */
	tok->settle_until = 0;
	tok->mon_kick = 1;
	pthread_cond_signal(&tok->mon_cond);
	pthread_mutex_unlock(&tok->mon_lock);
}

int tok_monitor_init(struct token *tok)
{
	pthread_condattr_t ca;

	if (pthread_condattr_init(&ca) != 0)
		return TOK_ERR_INTERNAL;
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	if (pthread_cond_init(&tok->mon_cond, &ca) != 0) {
		pthread_condattr_destroy(&ca);
		return TOK_ERR_INTERNAL;
	}
	pthread_condattr_destroy(&ca);
	if (pthread_mutex_init(&tok->mon_lock, NULL) != 0) {
		pthread_cond_destroy(&tok->mon_cond);
		return TOK_ERR_INTERNAL;
	}
	tok->mon_ok = 1;
	tok->backoff_ms = TOK_BACKOFF_MIN_MS;
	atomic_store(&tok->card_present, 1);
	return TOK_OK;
}

int tok_monitor_start(struct token *tok)
{
	CK_SLOT_INFO si;
	char reader[sizeof(si.slotDescription) + 1];

	if (pthread_create(&tok->mon_thread, NULL, monitor, tok) != 0)
		return TOK_ERR_INTERNAL;
	tok->mon_running = 1;
	/* A hardware slot with removable tokens is a card reader: watch it with PC/SC. */
	if (tok->fl->C_GetSlotInfo(tok->slot, &si) == CKR_OK &&
	    (si.flags & (CKF_HW_SLOT | CKF_REMOVABLE_DEVICE)) ==
	        (CKF_HW_SLOT | CKF_REMOVABLE_DEVICE)) {
		tok->removable = 1;
		memcpy(reader, si.slotDescription, sizeof(si.slotDescription));
		reader[sizeof(si.slotDescription)] = '\0';
		if (tok_pcsc_start(reader, pcsc_event, tok, &tok->pcsc) != TOK_OK)
			tok_log("PC/SC is not available: a pulled card is noticed by the next "
			        "failing request only");
	}
	return TOK_OK;
}

void tok_monitor_stop(struct token *tok)
{
	tok_pcsc_stop(tok->pcsc);
	tok->pcsc = NULL;
	if (tok->mon_running) {
		pthread_mutex_lock(&tok->mon_lock);
		tok->mon_stop = 1;
		pthread_cond_signal(&tok->mon_cond);
		pthread_mutex_unlock(&tok->mon_lock);
		pthread_join(tok->mon_thread, NULL);
		tok->mon_running = 0;
	}
	if (tok->mon_ok) {
		pthread_cond_destroy(&tok->mon_cond);
		pthread_mutex_destroy(&tok->mon_lock);
		tok->mon_ok = 0;
	}
}
