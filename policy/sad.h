/* Signature activation data: the citizen's approval, a compact JWS (ES256) from a pinned issuer
 * key or the credential's registered device key. Verified with libjose; the algorithm comes
 * from the pinned key (EC P-256 -> ES256), never from the JWS header.
 *
 * Nothing here knows PKCS#11, HTTP or the database: consuming `jti` is the ledger's job. */
#ifndef IAMSIGN_POLICY_SAD_H
#define IAMSIGN_POLICY_SAD_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "policy/algs.h"

#define SAD_MAX_LEN 8192 /* compact JWS bytes */
#define SAD_MAX_HASHES 64
#define SAD_MAX_SKEW 60      /* seconds of clock skew allowed on iat/exp */
#define SAD_MAX_LIFETIME 600 /* exp - iat at most this many seconds */
#define SAD_MAX_NUM 1000     /* largest `num` accepted */

enum sad_result {
	SAD_OK = 0,
	SAD_MALFORMED,        /* sad_invalid: not a compact JWS, bad JSON, missing/mistyped claim */
	SAD_BAD_ALG,          /* sad_invalid: header alg not ES256 (none, HS*, RS*, ...), or crit */
	SAD_UNTRUSTED,        /* sad_invalid: no pinned key verifies the signature */
	SAD_EXPIRED,          /* sad_expired: exp + skew < now */
	SAD_NOT_YET_VALID,    /* sad_invalid: iat - skew > now */
	SAD_LIFETIME,         /* sad_invalid: exp <= iat or exp - iat > SAD_MAX_LIFETIME */
	SAD_WRONG_CREDENTIAL, /* sad_wrong_credential: cred differs */
	SAD_WRONG_SUBJECT,    /* sad_wrong_subject: sub is not the credential's owner */
	SAD_WRONG_PURPOSE,    /* sad_wrong_purpose */
	SAD_HASH_NOT_AUTHORISED, /* hash_not_authorised: a requested hash is not in `hashes`, or
	                            halg */
};

/* The stable API `reason` for a result ("sad_invalid", "sad_expired", ...). */
const char *sad_reason(enum sad_result r);
/* A short human description ("signature does not verify with any pinned key"). */
const char *sad_strerror(enum sad_result r);

/* Pinned issuer keys (EC P-256 public keys in PEM files). */
struct sad_keys;
int sad_keys_load(char *const *pem_paths, size_t n, struct sad_keys **out, char *err,
                  size_t errlen);
void sad_keys_free(struct sad_keys *k);

struct sad_claims {
	char iss[257];
	char sub[129];
	char cred[65];
	char purpose[65];
	char jti[129];
	enum alg_hash halg;
	size_t nhashes;
	uint8_t hashes[SAD_MAX_HASHES][64]; /* each alg_hash_len(halg) bytes */
	uint32_t num;                       /* signatures allowed in all, 1..SAD_MAX_NUM */
	int64_t iat, exp;
	int by_device; /* verified with the credential's device key, not an issuer key */
};

/* Parse and verify jws: signature against the issuers or device_key_pem (may be NULL), header,
 * claim types and bounds, time (now, with SAD_MAX_SKEW). On SAD_OK, *out holds the claims. */
enum sad_result sad_verify(const struct sad_keys *issuers, const char *device_key_pem,
                           const char *jws, time_t now, struct sad_claims *out);

/* The claims against a request: credential, owner, purpose, hash algorithm, and every
 * requested hash among the approved ones. */
enum sad_result sad_match(const struct sad_claims *c, const char *cred, const char *owner,
                          const char *purpose, enum alg_hash halg, const uint8_t (*hashes)[64],
                          size_t nhashes);

#endif
