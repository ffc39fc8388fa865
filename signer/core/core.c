/* The signing core's channels: the listener's decoded requests in, the service's answers out.
 * Nothing the listener sends is trusted: the caller is who the kernel says is at the other end
 * of the connection passed along, every field is decoded afresh and checked (wire.c), and
 * every answer but a framing error, or a request that names no caller, goes out through
 * svc_conclude, which records it. */
#include "signer/core/core.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/x509.h>

#include "signer/wire/wire.h"

struct channel {
	struct core *core;
	unsigned id;
	int fd;
	int status_only; /* the channel kept for /healthz and /metrics */
	pthread_t thread;
	int started;
	int broken;   /* out of step with the listener (a time-stamp reply that did not come) */
	uint8_t *tsa; /* the last time-stamp reply's payload, until the next or the answer */
	size_t tsa_len;
};

struct core {
	struct service *svc;
	char sock_path[108];
	unsigned n;
	struct channel *ch;
};

/* A field the listener should never have sent: its bug or its compromise. Said loudly. */
static int violation(struct refusal *f, const struct channel *ch, const char *why)
{
	fprintf(stderr, "iamsignd: core: channel %u: listener sent an invalid request: %s\n",
	        ch->id, why);
	return refuse(f, R_INVALID_REQUEST, "request refused by the signing core: %s", why);
}

static void tsa_reply_free(struct channel *ch)
{
	if (ch->tsa != NULL) {
		OPENSSL_cleanse(ch->tsa, ch->tsa_len);
		free(ch->tsa);
	}
	ch->tsa = NULL;
	ch->tsa_len = 0;
}

/* The core's way to the TSA: ask the listener on this request's channel (docs/protocol.md,
 * "Time-stamps in the middle of a sign request"), waiting at most the query's wait + 2 s. A reply
 * that does not come, or not as one, leaves the channel out of step: it is closed after this
 * request. */
static int channel_tsa_fetch(void *arg, unsigned query_ms, const uint8_t *query, size_t qlen,
                             struct wire_tsa_reply *reply, char *why, size_t whylen)
{
	struct channel *ch = arg;
	struct wire_buf b;
	struct pollfd pfd = {.fd = ch->fd, .events = POLLIN};
	int wait_ms = (int)query_ms + 2000;
	uint32_t type;
	int fd = -1, r;
	char whyw[160];

	tsa_reply_free(ch);
	wire_buf_init(&b, WIRE_MAX_RESP);
	r = wire_enc_tsa_query(&b, query_ms, query, qlen) == 0
	        ? wire_send(ch->fd, WIRE_RESP_TSA_QUERY, &b, -1)
	        : -1;
	wire_buf_free(&b);
	if (r != 0) {
		ch->broken = 1;
		snprintf(why, whylen, "the query cannot be sent to the listener");
		return -1;
	}
	do
		r = poll(&pfd, 1, wait_ms);
	while (r < 0 && errno == EINTR);
	if (r <= 0) {
		ch->broken = 1;
		snprintf(why, whylen, "the listener returned no reply within %d s", wait_ms / 1000);
		return -1;
	}
	if (wire_recv(ch->fd, WIRE_MAX_REQ, &type, &ch->tsa, &ch->tsa_len, &fd, whyw,
	              sizeof(whyw)) != 0 ||
	    type != WIRE_REQ_TSA_REPLY || fd >= 0) {
		if (fd >= 0)
			close(fd);
		ch->broken = 1;
		fprintf(stderr,
		        "iamsignd: core: channel %u: no time-stamp reply from the listener\n",
		        ch->id);
		snprintf(why, whylen, "the listener's reply is not a time-stamp reply");
		return -1;
	}
	if (wire_dec_tsa_reply(ch->tsa, ch->tsa_len, reply, whyw, sizeof(whyw)) != 0) {
		fprintf(stderr, "iamsignd: core: channel %u: listener sent an invalid reply: %s\n",
		        ch->id, whyw);
		snprintf(why, whylen, "the listener's reply is malformed: %s", whyw);
		return -1;
	}
	return 0;
}

static int do_sign(struct channel *ch, const uint8_t *p, size_t len, const struct peer *peer,
                   struct audit_rec *rec, struct wire_buf *out, struct refusal *f)
{
	struct service *s = ch->core->svc;
	struct wire_sign *w;
	struct sign_result res = {0};
	struct svc_tsa_link tsa = {channel_tsa_fetch, ch};
	char why[160];
	int ok = 0;

	if ((w = malloc(sizeof(*w))) == NULL) {
		svc_audit_begin(rec, peer, "signatures/signHash");
		refuse(f, R_INTERNAL_ERROR, "out of memory");
		return svc_conclude(s, rec, 0, f);
	}
	if (wire_dec_sign(p, len, w, why, sizeof(why)) != 0) {
		const char *op = len > 0 ? wire_method_name((enum wire_method)p[0]) : NULL;

		svc_audit_begin(rec, peer, op != NULL ? op : "unknown");
		violation(f, ch, why);
		goto out;
	}
	svc_audit_begin(rec, peer, wire_method_name(w->method));
	/* The configuration's cap, which the listener applies too. */
	if (s->cfg != NULL && w->req.nhashes > s->cfg->limits.hashes) {
		refuse(f, R_TOO_MANY_HASHES,
		       "Invalid parameter %s: more than %u hashes (limits.hashes)",
		       w->req.cms ? "documentDigests" : "hashes", s->cfg->limits.hashes);
		goto out;
	}
	if (svc_sign_stamped(s, peer, &w->req, &tsa, &res, rec, f) != 0)
		goto out;
	ok = 1;
out:
	tsa_reply_free(ch);
	OPENSSL_cleanse(w, sizeof(*w));
	free(w);
	/* An answer that does not encode marks out (oom): handle() answers 500 for it. */
	if ((ok = svc_conclude(s, rec, ok, f)))
		wire_enc_sign_result(out, &res);
	sign_result_clear(&res);
	return ok;
}

static int do_cred_info(struct channel *ch, const uint8_t *p, size_t len, const struct peer *peer,
                        struct audit_rec *rec, struct wire_buf *out, struct refusal *f)
{
	struct service *s = ch->core->svc;
	struct cred_info ci;
	struct wire_cred_info w = {0};
	char id[CRED_MAX_ID + 1], why[160];
	unsigned char *der = NULL;
	int ok = 0, n;

	svc_audit_begin(rec, peer, wire_method_name(WM_CRED_INFO));
	if (wire_dec_cred_info_req(p, len, id, why, sizeof(why)) != 0) {
		violation(f, ch, why);
		return svc_conclude(s, rec, 0, f);
	}
	if (svc_cred_info(s, peer, id, &ci, rec, f) != 0)
		return svc_conclude(s, rec, 0, f);
	w.status = ci.reg.status == REG_ACTIVE      ? WIRE_CRED_ACTIVE
	           : ci.reg.status == REG_SUSPENDED ? WIRE_CRED_SUSPENDED
	                                            : WIRE_CRED_REVOKED;
	snprintf(w.owner, sizeof(w.owner), "%s", ci.reg.owner);
	w.key_type = ci.key->type == TOK_KEY_EC ? WIRE_KEY_EC : WIRE_KEY_RSA;
	w.bits = (unsigned)ci.key->bits;
	w.curve_nid = ci.key->type == TOK_KEY_EC ? ci.key->curve_nid : 0;
	if (ci.key->cert != NULL && (n = i2d_X509(ci.key->cert, &der)) > 0) {
		w.cert_der = der;
		w.cert_len = (size_t)n;
	}
	w.chain_pem = ci.reg.chain_pem;
	if ((ok = svc_conclude(s, rec, 1, f)))
		wire_enc_cred_info(out, &w);
	OPENSSL_free(der);
	cred_info_clear(&ci);
	return ok;
}

static int do_list(struct channel *ch, const uint8_t *p, size_t len, const struct peer *peer,
                   struct audit_rec *rec, struct wire_buf *out, struct refusal *f)
{
	struct service *s = ch->core->svc;
	struct wire_list_req w;
	char **ids, why[160];
	size_t n = 0;
	int more = 0, ok = 0;

	svc_audit_begin(rec, peer, wire_method_name(WM_LIST));
	if (wire_dec_list_req(p, len, &w, why, sizeof(why)) != 0) {
		violation(f, ch, why);
		return svc_conclude(s, rec, 0, f);
	}
	if ((ids = calloc(WIRE_MAX_IDS, sizeof(*ids))) == NULL) {
		refuse(f, R_INTERNAL_ERROR, "out of memory");
		return svc_conclude(s, rec, 0, f);
	}
	if (svc_cred_list(s, peer, w.has_user ? w.user : NULL, w.has_after ? w.after : NULL, w.max,
	                  ids, &n, &more, rec, f) == 0)
		ok = 1;
	if ((ok = svc_conclude(s, rec, ok, f)))
		wire_enc_list(out, more, ids, n);
	for (size_t i = 0; i < n; i++)
		free(ids[i]);
	free(ids);
	return ok;
}

/* An answer the listener gave by itself (info, or a refusal of what it could not decode):
 * recorded under the caller the kernel names. */
static int do_record(struct channel *ch, const uint8_t *p, size_t len, const struct peer *peer,
                     struct audit_rec *rec, struct refusal *f)
{
	struct service *s = ch->core->svc;
	struct wire_record w;
	char why[160];

	if (wire_dec_record(p, len, &w, why, sizeof(why)) != 0) {
		const char *op = len > 0 ? wire_method_name((enum wire_method)p[0]) : NULL;

		svc_audit_begin(rec, peer, op != NULL ? op : "unknown");
		violation(f, ch, why);
		return svc_conclude(s, rec, 0, f);
	}
	svc_audit_begin(rec, peer, wire_method_name(w.method));
	if (w.refusal.reason == R_NONE)
		return svc_conclude(s, rec, 1, f);
	/* The listener's refusal is recorded; the answer to the listener is that it was. */
	*f = w.refusal;
	svc_conclude(s, rec, 0, f);
	return rec->seq != 0;
}

/* The token's and the ledger's figures, for /healthz and /metrics. */
static void status_of(struct service *s, struct wire_status *st)
{
	struct tok_stats ts;
	struct ledger_stats ls;
	struct svc_cache_stats cs;

	tok_stats(s->tok, &ts);
	ledger_stats(s->ledger, &ls);
	st->tok.state = ts.state == TOK_STATE_UP     ? WIRE_TOKEN_UP
	                : ts.state == TOK_STATE_DOWN ? WIRE_TOKEN_DOWN
	                                             : WIRE_TOKEN_PIN_FAILED;
	st->tok.pcsc = ts.pcsc;
	st->tok.downs = ts.downs;
	st->tok.recoveries = ts.recoveries;
	st->tok.fast_failures = ts.fast_failures;
	st->tok.last_outage_ms = ts.last_outage_ms;
	st->ledger.commits = ls.commits;
	st->ledger.records = ls.records;
	st->ledger.failed = ls.failed;
	st->ledger.commit_ns = ls.commit_ns;
	st->ledger.busy_ms = ls.busy_ms;
	st->ledger.unrecorded = ls.unrecorded;
	st->ledger.stalled = ls.stalled;
	svc_cache_stats(s, &cs);
	st->cache.key_hits = cs.keys.hits;
	st->cache.key_misses = cs.keys.misses;
	st->cache.key_evictions = cs.keys.evictions;
	st->cache.key_refused = cs.keys.refused;
	st->cache.key_proven_again = cs.keys.proven_again;
	st->cache.key_held = cs.keys.held;
	st->cache.key_capacity = cs.keys.capacity;
	st->cache.cert_hits = cs.cert_hits;
	st->cache.cert_misses = cs.cert_misses;
	st->cache.cert_slots = cs.cert_slots;
}

/* One request: the answer's type and payload in out. */
static uint32_t handle(struct channel *ch, uint32_t type, const uint8_t *p, size_t len, int cfd,
                       struct wire_buf *out)
{
	struct service *s = ch->core->svc;
	struct refusal f = {0};
	struct audit_rec *rec = NULL;
	struct peer peer;
	char why[160];
	uint32_t rtype = WIRE_RESP_ERROR;
	int ok = 0;

	if (ch->status_only && type != WIRE_REQ_STATUS) {
		violation(&f, ch, "a request other than status on the status channel");
		goto answer;
	}
	if (type == WIRE_REQ_STATUS) {
		struct wire_status st;

		if (cfd >= 0 || len != 0) {
			violation(&f, ch, "status request with a payload or a descriptor");
			goto answer;
		}
		status_of(s, &st);
		if (wire_enc_status(out, &st) == 0)
			return WIRE_RESP_STATUS;
		refuse(&f, R_INTERNAL_ERROR, "out of memory");
		goto answer;
	}
	if (type < WIRE_REQ_SIGN || type > WIRE_REQ_RECORD) {
		violation(&f, ch, "unknown request type");
		goto answer;
	}
	/* No connection, or not one accepted on our socket: no caller, nothing recorded. */
	if (cfd < 0 || wire_peer(cfd, ch->core->sock_path, &peer, why, sizeof(why)) != 0) {
		fprintf(stderr, "iamsignd: core: channel %u: request without a caller: %s\n",
		        ch->id, cfd < 0 ? "no connection passed" : why);
		refuse(&f, R_UNKNOWN_CALLER, "caller identity unavailable");
		goto answer;
	}
	if ((rec = malloc(sizeof(*rec))) == NULL) {
		refuse(&f, R_INTERNAL_ERROR, "out of memory");
		goto answer;
	}
	switch (type) {
	case WIRE_REQ_SIGN:
		ok = do_sign(ch, p, len, &peer, rec, out, &f);
		rtype = WIRE_RESP_SIGN;
		break;
	case WIRE_REQ_CRED_INFO:
		ok = do_cred_info(ch, p, len, &peer, rec, out, &f);
		rtype = WIRE_RESP_CRED_INFO;
		break;
	case WIRE_REQ_LIST:
		ok = do_list(ch, p, len, &peer, rec, out, &f);
		rtype = WIRE_RESP_LIST;
		break;
	default:
		ok = do_record(ch, p, len, &peer, rec, &f);
		rtype = WIRE_RESP_RECORD;
		break;
	}
answer:
	if (rec != NULL) {
		OPENSSL_cleanse(rec, sizeof(*rec));
		free(rec);
	}
	if (ok && !out->oom)
		return rtype;
	if (ok) { /* recorded as allowed, but the answer does not encode: said loudly */
		fprintf(stderr, "iamsignd: core: channel %u: an answer did not fit the protocol\n",
		        ch->id);
		refuse(&f, R_INTERNAL_ERROR, "answer too large");
	}
	if (f.reason == R_NONE)
		refuse(&f, R_INTERNAL_ERROR, "internal error");
	wire_buf_free(out);
	wire_buf_init(out, WIRE_MAX_RESP);
	wire_enc_error(out, &f);
	return WIRE_RESP_ERROR;
}

static void *channel_main(void *arg)
{
	struct channel *ch = arg;
	char why[160];

	pthread_setname_np(pthread_self(), ch->status_only ? "core-status" : "core-channel");
	for (;;) {
		struct wire_buf out;
		uint8_t *payload = NULL;
		size_t len = 0;
		uint32_t type, rtype;
		int cfd = -1, r;

		r = wire_recv(ch->fd, WIRE_MAX_REQ, &type, &payload, &len, &cfd, why, sizeof(why));
		if (r == 1)
			break;
		if (r != 0) {
			/* Out of step with the listener: this channel is closed, which the
			 * listener sees and answers 503 on. */
			fprintf(stderr, "iamsignd: core: channel %u: %s: channel closed\n", ch->id,
			        why);
			break;
		}
		wire_buf_init(&out, WIRE_MAX_RESP);
		rtype = handle(ch, type, payload, len, cfd, &out);
		if (cfd >= 0)
			close(cfd);
		if (payload != NULL) {
			OPENSSL_cleanse(payload, len);
			free(payload);
		}
		if (ch->broken) { /* recorded; the listener sees the channel close */
			fprintf(stderr, "iamsignd: core: channel %u: out of step: channel closed\n",
			        ch->id);
			wire_buf_free(&out);
			break;
		}
		r = wire_send(ch->fd, rtype, &out, -1);
		wire_buf_free(&out);
		if (r != 0)
			break;
	}
	close(ch->fd);
	ch->fd = -1;
	return NULL;
}

int core_start(struct service *svc, const char *sock_path, const int *fds, unsigned n,
               struct core **out, char *err, size_t errlen)
{
	struct core *c;

	if (n < 2) {
		snprintf(err, errlen, "the core needs a status channel and one more");
		return -1;
	}
	if ((c = calloc(1, sizeof(*c))) == NULL || (c->ch = calloc(n, sizeof(*c->ch))) == NULL) {
		free(c);
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	c->svc = svc;
	c->n = n;
	snprintf(c->sock_path, sizeof(c->sock_path), "%s", sock_path);
	for (unsigned i = 0; i < n; i++) {
		c->ch[i].core = c;
		c->ch[i].id = i;
		c->ch[i].fd = fds[i];
		c->ch[i].status_only = i == n - 1;
	}
	for (unsigned i = 0; i < n; i++) {
		if (pthread_create(&c->ch[i].thread, NULL, channel_main, &c->ch[i]) != 0) {
			snprintf(err, errlen, "cannot start the core's channel threads");
			for (unsigned j = 0; j < n; j++)
				if (j >= i)
					close(c->ch[j].fd);
				else
					shutdown(c->ch[j].fd, SHUT_RDWR); /* ends its thread */
			core_join(c);
			return -1;
		}
		c->ch[i].started = 1;
	}
	*out = c;
	return 0;
}

void core_join(struct core *c)
{
	if (c == NULL)
		return;
	for (unsigned i = 0; i < c->n; i++)
		if (c->ch[i].started)
			pthread_join(c->ch[i].thread, NULL);
	free(c->ch);
	free(c);
}
