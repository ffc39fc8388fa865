/* CAdES B-T in the signing path: each CMS of a signDoc request gets its signature-time-stamp,
 * fetched through the request's carrier (the core has no network) and checked (tsa.h) before
 * it is embedded. */
#ifndef IAMSIGN_SIGNER_CORE_STAMP_H
#define IAMSIGN_SIGNER_CORE_STAMP_H

#include <openssl/x509.h>

#include "signer/core/ledger.h"
#include "signer/core/tsa.h"
#include "signer/wire/wire.h"

/* How a time-stamp query reaches the TSA: core.c posts it through the listener on the
 * request's channel. fetch returns 0 with *reply filled (its body valid until the next call),
 * or -1 with why set when no reply came back at all. */
struct svc_tsa_link {
	int (*fetch)(void *arg, unsigned wait_ms, const uint8_t *query, size_t qlen,
	             struct wire_tsa_reply *reply, char *why, size_t whylen);
	void *arg;
};

/* Replace each of the n CMS in sig/len by its B-T form, all within budget_ms (tsa.timeout:
 * each query is waited for at most what is left of it, so a slow TSA holds a request no
 * longer than one that hangs). v NULL (no tsa: configured) or link
 * NULL: refused tsa_unavailable. On success rec holds each token's time and SHA-256 (ntst ==
 * n). 0, or -1 with f set to tsa_unavailable or tsa_bad_token (or internal_error); the CMS
 * left are then B-B and must not be returned. */
int svc_stamp(const struct tsa_verifier *v, const struct svc_tsa_link *link, unsigned budget_ms,
              X509 *signer, uint8_t **sig, size_t *len, size_t n, struct audit_rec *rec,
              struct refusal *f);

#endif
