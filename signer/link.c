/* A pool of channels to the core. A request takes a free channel for its round trip; one that
 * fails is closed for good (it may be out of step), and with none left every request is
 * answered 503 at once. */
#include "signer/link.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

struct core_link {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	unsigned n, nfree, alive;
	int *fds;  /* by channel; -1 once closed */
	int *free; /* stack of free channel numbers */
};

int core_link_init(const int *fds, unsigned n, struct core_link **out)
{
	struct core_link *l = calloc(1, sizeof(*l));

	if (l == NULL || (l->fds = calloc(n, sizeof(int))) == NULL ||
	    (l->free = calloc(n, sizeof(int))) == NULL) {
		if (l != NULL)
			free(l->fds);
		free(l);
		return -1;
	}
	pthread_mutex_init(&l->mu, NULL);
	pthread_cond_init(&l->cv, NULL);
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
	pthread_cond_destroy(&l->cv);
	pthread_mutex_destroy(&l->mu);
	free(l->fds);
	free(l->free);
	free(l);
}

int core_link_call(struct core_link *l, uint32_t type, const struct wire_buf *req, int fd,
                   uint32_t *rtype, uint8_t **payload, size_t *len, struct svc_error *e)
{
	char why[160];
	int ch, rfd = -1, r;

	*payload = NULL;
	*len = 0;
	pthread_mutex_lock(&l->mu);
	while (l->nfree == 0 && l->alive > 0)
		pthread_cond_wait(&l->cv, &l->mu);
	if (l->alive == 0) {
		pthread_mutex_unlock(&l->mu);
		return svc_fail(e, 503, "temporarily_unavailable", "core_unavailable",
		                "the signing core is not running");
	}
	ch = l->free[--l->nfree];
	pthread_mutex_unlock(&l->mu);

	r = wire_send(l->fds[ch], type, req, fd);
	if (r == 0) {
		r = wire_recv(l->fds[ch], WIRE_MAX_RESP, rtype, payload, len, &rfd, why,
		              sizeof(why));
		if (r == 1)
			snprintf(why, sizeof(why), "the core closed the channel");
		else if (r == 0 && rfd >= 0) {
			close(rfd); /* the core never sends one */
			r = -1;
			snprintf(why, sizeof(why), "a descriptor came with the answer");
		}
	} else {
		snprintf(why, sizeof(why), "cannot send to the core");
	}

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
	free(*payload);
	*payload = NULL;
	fprintf(stderr, "iamsignd: listener: channel %d to the core: %s: closed\n", ch, why);
	return svc_fail(e, 503, "temporarily_unavailable", "core_unavailable",
	                "the signing core cannot be reached");
}
