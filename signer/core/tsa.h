/* RFC 3161 time-stamps for CAdES B-T, the core's half: the query for one signature value, and
 * the check of what the TSA answered before its token goes into a signature. The core has no
 * network: the listener posts the query and hands back the bytes (docs/protocol.md), which are
 * trusted for nothing until tsa_reply_check has accepted them. */
#ifndef IAMSIGN_SIGNER_CORE_TSA_H
#define IAMSIGN_SIGNER_CORE_TSA_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <openssl/ts.h>
#include <openssl/x509.h>

#include "signer/config.h"

#define TSA_MAX_SKEW 120 /* seconds between the token's time and the daemon's clock */

struct tsa_verifier;

/* The configuration's tsa: trust anchors (at least one certificate), imprint hash, policy.
 * 0, or -1 with err naming the file. */
int tsa_verifier_load(const struct config *cfg, struct tsa_verifier **out, char *err,
                      size_t errlen);
void tsa_verifier_free(struct tsa_verifier *v);

/* One query: the hash of the signature value, a fresh random 64-bit nonce, certReq, the
 * configured policy. der is what the TSA is sent. */
struct tsa_query {
	TS_REQ *req;
	uint8_t *der; /* OPENSSL_malloc'ed */
	size_t len;
	uint8_t imprint[EVP_MAX_MD_SIZE];
	unsigned ilen;
};
int tsa_query_make(const struct tsa_verifier *v, const uint8_t *sigval, size_t len,
                   struct tsa_query *q);
void tsa_query_clear(struct tsa_query *q);

enum tsa_verdict {
	TSA_OK = 0,
	TSA_UNAVAILABLE = 1, /* not a time-stamp response, or the TSA refused (status) */
	TSA_BAD_TOKEN = 2,   /* a token that must not be used: see tsa_reply_check */
};

/* Check a TimeStampResp: status granted; its token verifies against the trust anchors with a
 * time-stamping certificate (extended key usage timeStamping, critical, as OpenSSL's TS code
 * requires), ESS signing certificate included; its imprint is q's (algorithm and hash), its
 * nonce q's, its policy the configured one (when set); its time within TSA_MAX_SKEW of now
 * and within signer's validity. On TSA_OK, *token is the TimeStampToken's DER
 * (OPENSSL_malloc'ed) and *gen_ms its time in unix milliseconds; otherwise why says what
 * failed. */
enum tsa_verdict tsa_reply_check(const struct tsa_verifier *v, const struct tsa_query *q,
                                 const uint8_t *reply, size_t len, X509 *signer, time_t now,
                                 uint8_t **token, size_t *tlen, int64_t *gen_ms, char *why,
                                 size_t whylen);

#endif
