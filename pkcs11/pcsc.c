/* Watching a smartcard reader with pcsc-lite, so that a pulled card is noticed at once (about
 * 0.1 s) rather than by the next request that fails, and a card put back is used again as soon
 * as PC/SC sees it.
 *
 * One thread blocks in SCardGetStatusChange() on the reader behind the token's slot and calls
 * back on every change of "card present". It never touches the PKCS#11 module: the callback only
 * flips the token's state and wakes its monitor. If pcscd goes away or the reader disappears,
 * that counts as "no card" and the thread keeps trying to reconnect. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pkcs11/internal.h"

#ifdef HAVE_PCSC

#include <PCSC/winscard.h>

/* How long one SCardGetStatusChange() waits before looking at the stop flag again (tok_close
 * also cancels it at once with SCardCancel). */
#define PCSC_WAIT_MS 1000
/* Pause before reconnecting to pcscd or listing readers again. */
#define PCSC_RETRY_MS 250
/* pcsc-lite's list of reader names is bounded by its reader count; bound ours too. */
#define PCSC_MAX_READERS_LEN 16384

struct tok_pcsc {
	pthread_t th;
	pthread_mutex_t lock; /* guards ctx/have_ctx against SCardCancel from tok_pcsc_stop */
	SCARDCONTEXT ctx;
	int have_ctx;
	_Atomic int stop;
	char reader[65]; /* slot description without the padding */
	tok_pcsc_cb cb;
	void *arg;
	int last; /* -1 unknown, 0 absent, 1 present */
};

static void nap(struct tok_pcsc *w, int ms)
{
	struct timespec ts = {0, 50 * 1000 * 1000};

	for (; ms > 0 && !atomic_load(&w->stop); ms -= 50)
		nanosleep(&ts, NULL);
}

static void report(struct tok_pcsc *w, int present)
{
	if (present == w->last)
		return;
	w->last = present;
	w->cb(w->arg, present);
}

static void drop_ctx(struct tok_pcsc *w)
{
	pthread_mutex_lock(&w->lock);
	if (w->have_ctx)
		SCardReleaseContext(w->ctx);
	w->have_ctx = 0;
	pthread_mutex_unlock(&w->lock);
}

/* The full PC/SC name of our reader, into name (size n). 0 if found. */
static int find_reader(struct tok_pcsc *w, char *name, size_t n)
{
	DWORD len = 0;
	char *buf = NULL, *p;
	size_t plen = strlen(w->reader);
	int r = -1;

	if (SCardListReaders(w->ctx, NULL, NULL, &len) != SCARD_S_SUCCESS || len == 0 ||
	    len > PCSC_MAX_READERS_LEN)
		return -1;
	buf = calloc(1, (size_t)len + 1);
	if (buf == NULL)
		return -1;
	if (SCardListReaders(w->ctx, NULL, buf, &len) != SCARD_S_SUCCESS)
		goto out;
	/* OpenSC's slot description is the reader name cut to 64 bytes: a prefix match. */
	for (p = buf; *p != '\0' && p < buf + len; p += strlen(p) + 1) {
		if (strncmp(p, w->reader, plen) == 0 && strlen(p) < n) {
			memcpy(name, p, strlen(p) + 1);
			r = 0;
			break;
		}
	}
out:
	free(buf);
	return r;
}

static void *watch(void *arg)
{
	struct tok_pcsc *w = arg;
	SCARD_READERSTATE st;
	char name[512];
	LONG rv;
	DWORD events = 0;
	int present, have_events = 0;

	pthread_setname_np(pthread_self(), "pcsc-watch");
	while (!atomic_load(&w->stop)) {
		pthread_mutex_lock(&w->lock);
		rv = SCardEstablishContext(SCARD_SCOPE_SYSTEM, NULL, NULL, &w->ctx);
		w->have_ctx = rv == SCARD_S_SUCCESS;
		pthread_mutex_unlock(&w->lock);
		if (rv != SCARD_S_SUCCESS) {
			report(w, 0); /* no pcscd: the card cannot be used either */
			nap(w, PCSC_RETRY_MS);
			continue;
		}
		if (find_reader(w, name, sizeof(name)) != 0) {
			report(w, 0);
			drop_ctx(w);
			nap(w, PCSC_RETRY_MS);
			continue;
		}
		memset(&st, 0, sizeof(st));
		st.szReader = name;
		st.dwCurrentState = SCARD_STATE_UNAWARE;
		have_events = 0;
		while (!atomic_load(&w->stop)) {
			rv = SCardGetStatusChange(w->ctx, PCSC_WAIT_MS, &st, 1);
			if (rv == SCARD_E_TIMEOUT || rv == SCARD_E_CANCELLED)
				continue;
			if (rv != SCARD_S_SUCCESS)
				break; /* reader gone or pcscd restarted: reconnect */
			present = (st.dwEventState & SCARD_STATE_PRESENT) != 0 &&
			          (st.dwEventState & SCARD_STATE_MUTE) == 0;
			/* The high 16 bits count insertions and removals: a pull and a push between
			 * two looks still shows as a change, and the old login is gone. */
			if (present && w->last == 1 && have_events &&
			    (st.dwEventState >> 16) != (events >> 16))
				report(w, 0);
			events = st.dwEventState;
			have_events = 1;
			report(w, present);
			st.dwCurrentState = st.dwEventState & ~(DWORD)SCARD_STATE_CHANGED;
		}
		if (!atomic_load(&w->stop)) {
			report(w, 0);
			nap(w, PCSC_RETRY_MS);
		}
		drop_ctx(w);
	}
	return NULL;
}

int tok_pcsc_start(const char *reader, tok_pcsc_cb cb, void *arg, struct tok_pcsc **out)
{
	struct tok_pcsc *w;
	SCARDCONTEXT probe;
	size_t n;

	*out = NULL;
	/* No pcscd now: nothing to watch (a SoftHSM setup, or PC/SC not installed). */
	if (SCardEstablishContext(SCARD_SCOPE_SYSTEM, NULL, NULL, &probe) != SCARD_S_SUCCESS)
		return TOK_ERR_UNAVAILABLE;
	SCardReleaseContext(probe);

	w = calloc(1, sizeof(*w));
	if (w == NULL)
		return TOK_ERR_INTERNAL;
	n = strnlen(reader, sizeof(w->reader) - 1);
	memcpy(w->reader, reader, n);
	while (n > 0 && w->reader[n - 1] == ' ')
		n--;
	w->reader[n] = '\0';
	w->cb = cb;
	w->arg = arg;
	w->last = -1;
	if (n == 0 || pthread_mutex_init(&w->lock, NULL) != 0) {
		free(w);
		return TOK_ERR_UNAVAILABLE;
	}
	if (pthread_create(&w->th, NULL, watch, w) != 0) {
		pthread_mutex_destroy(&w->lock);
		free(w);
		return TOK_ERR_INTERNAL;
	}
	*out = w;
	return TOK_OK;
}

void tok_pcsc_stop(struct tok_pcsc *w)
{
	if (w == NULL)
		return;
	atomic_store(&w->stop, 1);
	pthread_mutex_lock(&w->lock);
	if (w->have_ctx)
		SCardCancel(w->ctx);
	pthread_mutex_unlock(&w->lock);
	pthread_join(w->th, NULL);
	pthread_mutex_destroy(&w->lock);
	free(w);
}

#else /* !HAVE_PCSC */

int tok_pcsc_start(const char *reader, tok_pcsc_cb cb, void *arg, struct tok_pcsc **out)
{
	(void)reader;
	(void)cb;
	(void)arg;
	*out = NULL;
	return TOK_ERR_UNAVAILABLE;
}

void tok_pcsc_stop(struct tok_pcsc *w)
{
	(void)w;
}

#endif
