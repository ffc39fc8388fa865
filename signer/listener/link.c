/* A pool of channels to the core. A request takes a free channel for its round trip; one that
 * fails is closed for good (it may be out of step), and with none left every request is
 * answered 503 at once. The last channel is not in the pool: status requests (/healthz,
 * /metrics) take it, one at a time, so they never wait for a request on the token or the
 * ledger. */
#include "signer/listener/link.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "signer/listener/tsafetch.h"

struct core_link {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	unsigned n, nfree, alive; /* the pool's */
	int *fds;                 /* by channel; -1 once closed */
	int *free;                /* stack of free channel numbers */
	pthread_mutex_t smu;      /* held for a status round trip */
	int sfd;                  /* the status channel; -1 once closed */
	struct tsa_fetcher *tsa;  /* NULL: no tsa configured */
};

void core_link_set_tsa(struct core_link *l, struct tsa_fetcher *t)
{
	l->tsa = t;
}

int core_link_has_tsa(const struct core_link *l)
{
	return l->tsa != NULL;
}

int core_link_init(const int *fds, unsigned n, struct core_link **out)
{
	struct core_link *l;

	if (n < 2 || (l = calloc(1, sizeof(*l))) == NULL)
		return -1;
	n--; /* the last is the status channel */
	if ((l->fds = calloc(n, sizeof(int))) == NULL ||
	    (l->free = calloc(n, sizeof(int))) == NULL) {
		free(l->fds);
		free(l);
		return -1;
	}
	pthread_mutex_init(&l->mu, NULL);
	pthread_cond_init(&l->cv, NULL);
	pthread_mutex_init(&l->smu, NULL);
	l->sfd = fds[n];
	for (unsigned i = 0; i < n; i++) {
		l->fds[i] = fds[i];
		l->free[i] = (int)i;
	}
	l->n = l->nfree = l->alive = n;
	*out = l;
	return 0;
}

void core_link_free(struct core_link *l)
{
	if (l == NULL)
		return;
	for (unsigned i = 0; i < l->n; i++)
		if (l->fds[i] >= 0)
			close(l->fds[i]);
	if (l->sfd >= 0)
		close(l->sfd);
	pthread_cond_destroy(&l->cv);
	pthread_mutex_destroy(&l->mu);
	pthread_mutex_destroy(&l->smu);
	free(l->fds);
	free(l->free);
	free(l);
}

/* The core asks for a time-stamp (payload p): fetch it and send the reply on chfd. 0, or -1
 * with why set (the channel is then unusable). */
static int tsa_answer(struct core_link *l, int chfd, const uint8_t *p, size_t n, char *why,
                      size_t whylen)
{
	struct wire_tsa_reply reply = {.outcome = WIRE_TSA_NOT_CONFIGURED};
	struct wire_buf b;
	const uint8_t *q;
	uint8_t *body = NULL;
	size_t qlen;
	unsigned wait_ms;
	int r;

	if (wire_dec_tsa_query(p, n, &wait_ms, &q, &qlen, why, whylen) != 0)
		return -1;
	if (l->tsa != NULL)
		tsa_fetch(l->tsa, wait_ms, q, qlen, &reply, &body);
	wire_buf_init(&b, WIRE_MAX_REQ);
	wire_enc_tsa_reply(&b, &reply);
	r = wire_send(chfd, WIRE_REQ_TSA_REPLY, &b, -1);
	wire_buf_free(&b);
	free(body);
	if (r != 0)
		snprintf(why, whylen, "cannot send the time-stamp reply to the core");
	return r;
}

/* One request and its answer on chfd, after at most max_queries time-stamp queries: 0, or -1
 * with why set (the channel is then unusable). */
static int round_trip(struct core_link *l, int chfd, uint32_t type, const struct wire_buf *req,
                      int fd, size_t max_queries, uint32_t *rtype, uint8_t **payload, size_t *len,
                      char *why, size_t whylen)
{
	int rfd = -1, r;

	r = wire_send(chfd, type, req, fd);
	if (r != 0) {
		snprintf(why, whylen, "cannot send to the core");
		return -1;
	}
	for (;;) {
		r = wire_recv(chfd, WIRE_MAX_RESP, rtype, payload, len, &rfd, why, whylen);
		if (r != 0 || rfd >= 0 || *rtype != WIRE_RESP_TSA_QUERY)
			break;
		if (max_queries == 0) {
			snprintf(why, whylen, "a time-stamp query the request did not call for");
			r = -1;
			break;
		}
		max_queries--;
		r = tsa_answer(l, chfd, *payload, *len, why, whylen);
		free(*payload);
		*payload = NULL;
		*len = 0;
		if (r != 0)
			break;
	}
	if (r == 1)
		snprintf(why, whylen, "the core closed the channel");
	else if (r == 0 && rfd >= 0) {
		close(rfd); /* the core never sends one */
		r = -1;
		snprintf(why, whylen, "a descriptor came with the answer");
	}
	if (r == 0)
		return 0;
	free(*payload);
	*payload = NULL;
	*len = 0;
	return -1;
}

static int status_call(struct core_link *l, const struct wire_buf *req, uint32_t *rtype,
                       uint8_t **payload, size_t *len, struct refusal *f)
{
	char why[160];
	int r = -1, alive;

	/* With no channel left for signing, the core cannot be reached for what counts. */
	pthread_mutex_lock(&l->mu);
	alive = l->alive > 0;
	pthread_mutex_unlock(&l->mu);
	pthread_mutex_lock(&l->smu);
	if (alive && l->sfd >= 0) {
		r = round_trip(l, l->sfd, WIRE_REQ_STATUS, req, -1, 0, rtype, payload, len, why,
		               sizeof(why));
		if (r != 0) {
			fprintf(stderr,
			        "iamsignd: listener: the status channel to the core: %s: "
			        "closed\n",
			        why);
			close(l->sfd);
			l->sfd = -1;
		}
	}
	pthread_mutex_unlock(&l->smu);
	if (r == 0)
		return 0;
	return refuse(f, R_CORE_UNAVAILABLE, "the signing core cannot be reached");
}

int core_link_call(struct core_link *l, uint32_t type, const struct wire_buf *req, int fd,
                   uint32_t *rtype, uint8_t **payload, size_t *len, struct refusal *f)
{
	return core_link_call_tsa(l, type, req, fd, 0, rtype, payload, len, f);
}

int core_link_call_tsa(struct core_link *l, uint32_t type, const struct wire_buf *req, int fd,
                       size_t max_queries, uint32_t *rtype, uint8_t **payload, size_t *len,
                       struct refusal *f)
{
	char why[160];
	int ch, r;

	*payload = NULL;
	*len = 0;
	if (type == WIRE_REQ_STATUS)
		return status_call(l, req, rtype, payload, len, f);
	pthread_mutex_lock(&l->mu);
	while (l->nfree == 0 && l->alive > 0)
		pthread_cond_wait(&l->cv, &l->mu);
	if (l->alive == 0) {
		pthread_mutex_unlock(&l->mu);
		return refuse(f, R_CORE_UNAVAILABLE, "the signing core is not running");
	}
	ch = l->free[--l->nfree];
	pthread_mutex_unlock(&l->mu);

	r = round_trip(l, l->fds[ch], type, req, fd, max_queries, rtype, payload, len, why,
	               sizeof(why));
	pthread_mutex_lock(&l->mu);
	if (r == 0) {
		l->free[l->nfree++] = ch;
	} else {
		close(l->fds[ch]);
		l->fds[ch] = -1;
		l->alive--;
	}
	pthread_cond_signal(&l->cv);
	if (r != 0 && l->alive == 0)
		pthread_cond_broadcast(&l->cv);
	pthread_mutex_unlock(&l->mu);
	if (r == 0)
		return 0;
	fprintf(stderr, "iamsignd: listener: channel %d to the core: %s: closed\n", ch, why);
	return refuse(f, R_CORE_UNAVAILABLE, "the signing core cannot be reached");
}
