/* Time-stamps for the CMS of a signDoc request; see stamp.h. */
#include "signer/core/stamp.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>
#include <openssl/sha.h>

#include "signer/core/cms.h"

#define STAMP_REFUSED (-2000) /* the stamp callback's error: f says why */

struct stamp_ctx {
	const struct tsa_verifier *v;
	const struct svc_tsa_link *link;
	X509 *signer;
	struct timespec until; /* CLOCK_MONOTONIC: the end of the request's budget */
	size_t i, n;
	int64_t gen_ms;
	uint8_t sha256[32]; /* of the token's DER: the attribute's value, byte for byte */
	struct refusal *f;
};

/* One signature value: query, fetch, check. */
static int stamp_one(void *arg, const uint8_t *sigval, size_t len, uint8_t **token, size_t *tlen)
{
	struct stamp_ctx *c = arg;
	struct tsa_query q;
	struct wire_tsa_reply reply;
	enum tsa_verdict verdict;
	struct timespec now;
	char why[160];
	int64_t left_ms;
	int r = STAMP_REFUSED;

	clock_gettime(CLOCK_MONOTONIC, &now);
	left_ms = (int64_t)(c->until.tv_sec - now.tv_sec) * 1000 +
	          (c->until.tv_nsec - now.tv_nsec) / 1000000;
	if (left_ms < 1) {
		refuse(c->f, R_TSA_UNAVAILABLE,
		       "time-stamp %zu of %zu: timeout: the request's time-stamps took longer than "
		       "tsa.timeout",
		       c->i + 1, c->n);
		return r;
	}
	if (left_ms > WIRE_MAX_TSA_WAIT_MS)
		left_ms = WIRE_MAX_TSA_WAIT_MS;
	if (tsa_query_make(c->v, sigval, len, &q) != 0) {
		refuse(c->f, R_INTERNAL_ERROR, "building the time-stamp query failed");
		return r;
	}
	if (c->link->fetch(c->link->arg, (unsigned)left_ms, q.der, q.len, &reply, why,
	                   sizeof(why)) != 0) {
		refuse(c->f, R_TSA_UNAVAILABLE, "time-stamp %zu of %zu: %s", c->i + 1, c->n, why);
		goto out;
	}
	if (reply.outcome != WIRE_TSA_OK) {
		if (reply.outcome == WIRE_TSA_HTTP_ERROR)
			refuse(c->f, R_TSA_UNAVAILABLE,
			       "time-stamp %zu of %zu: the TSA answered HTTP %u, not a time-stamp "
			       "reply",
			       c->i + 1, c->n, reply.http_status);
		else
			refuse(c->f, R_TSA_UNAVAILABLE, "time-stamp %zu of %zu: the TSA: %s",
			       c->i + 1, c->n, wire_tsa_outcome_name(reply.outcome));
		goto out;
	}
	verdict = tsa_reply_check(c->v, &q, reply.body, reply.len, c->signer, time(NULL), token,
	                          tlen, &c->gen_ms, why, sizeof(why));
	if (verdict != TSA_OK) {
		refuse(c->f, verdict == TSA_UNAVAILABLE ? R_TSA_UNAVAILABLE : R_TSA_BAD_TOKEN,
		       "time-stamp %zu of %zu: %s", c->i + 1, c->n, why);
		if (verdict == TSA_BAD_TOKEN) /* the TSA, or something in between, is wrong */
			fprintf(stderr, "iamsignd: core: a time-stamp token refused: %s\n", why);
		goto out;
	}
	SHA256(*token, *tlen, c->sha256);
	r = 0;
out:
	tsa_query_clear(&q);
	return r;
}

int svc_stamp(const struct tsa_verifier *v, const struct svc_tsa_link *link, unsigned budget_ms,
              X509 *signer, uint8_t **sig, size_t *len, size_t n, struct audit_rec *rec,
              struct refusal *f)
{
	struct stamp_ctx c = {.v = v, .link = link, .signer = signer, .n = n, .f = f};
	uint8_t *out;
	size_t outlen;
	int r;

	rec->ntst = 0;
	if (v == NULL || link == NULL)
		return refuse(f, R_TSA_UNAVAILABLE,
		              "Ades-B-T needs a time-stamping service, and none is configured "
		              "(tsa.url)");
	clock_gettime(CLOCK_MONOTONIC, &c.until);
	c.until.tv_sec += budget_ms / 1000;
	c.until.tv_nsec += (long)(budget_ms % 1000) * 1000000L;
	if (c.until.tv_nsec >= 1000000000L) {
		c.until.tv_sec++;
		c.until.tv_nsec -= 1000000000L;
	}
	for (c.i = 0; c.i < n; c.i++) {
		r = cms_stamp(sig[c.i], len[c.i], stamp_one, &c, &out, &outlen);
		if (r == STAMP_REFUSED)
			goto fail;
		if (r != 0) {
			refuse(f, R_INTERNAL_ERROR, "adding the time-stamp to the CMS failed");
			goto fail;
		}
		rec->tst_time_ms[c.i] = c.gen_ms;
		memcpy(rec->tst_sha256[c.i], c.sha256, 32);
		OPENSSL_free(sig[c.i]);
		sig[c.i] = out;
		len[c.i] = outlen;
	}
	rec->ntst = n;
	return 0;
fail:
	rec->ntst = 0;
	return -1;
}
