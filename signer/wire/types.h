/* What the listener and the signing core both speak of: the caller, a sign request and its
 * signatures, credential and user IDs, and the reasons a request is refused. No HTTP, no SQL,
 * no PKCS#11: each side maps these to its own terms (the listener to HTTP and CSC, the core to
 * the token, the registry and the ledger). */
#ifndef IAMSIGN_SIGNER_WIRE_TYPES_H
#define IAMSIGN_SIGNER_WIRE_TYPES_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "policy/algs.h"

#define CRED_MAX_ID 64    /* credential IDs: 1..64 of [A-Za-z0-9._-] */
#define CRED_MAX_USER 128 /* userIDs: 1..128 printable ASCII, no spaces */

/* 1 if s is a valid credential ID / userID, else 0. */
int cred_valid_id(const char *s);
int cred_valid_user(const char *s);

#define WIRE_MAX_HASHES 64 /* hard cap per request; limits.hashes and max_hashes may lower it */
#define WIRE_MAX_DIGEST 64 /* SHA-512 */
#define WIRE_MAX_SAD 8192
#define WIRE_MAX_DESC 199 /* a refusal's description: 0..199 printable ASCII */

/* Who is calling: from SO_PEERCRED, never from the request. */
struct peer {
	pid_t pid;
	uid_t uid;
	gid_t gid;
};

struct sign_req {
	char cred[CRED_MAX_ID + 1];
	const char *purpose; /* NULL: the caller's only purpose; points into the request */
	const char *sad;     /* NULL when absent; points into the request */
	enum alg_family fam;
	enum alg_hash hash;
	size_t pss_salt; /* PSS only */
	size_t nhashes;
	uint8_t hashes[WIRE_MAX_HASHES][WIRE_MAX_DIGEST];
	int cms;   /* signDoc: CAdES B-B detached CMS per hash */
	int stamp; /* signDoc: B-T, an RFC 3161 signature-time-stamp added to each CMS */
	int pades; /* signDoc: the PAdES form of the CMS (no signing-time attribute) */
};

/* One signature (raw DER, or a CMS ContentInfo) per hash, OPENSSL_malloc'ed. */
struct sign_result {
	size_t n;
	uint8_t *sig[WIRE_MAX_HASHES];
	size_t len[WIRE_MAX_HASHES];
};
void sign_result_clear(struct sign_result *r);

/* Why a request was refused: the API's stable `reason`, named by reason_name(). The core
 * decides with these; the listener alone turns them into an HTTP status and a CSC error code
 * (csc_status), and docs/api.md lists them. Append only: the values cross the wire. */
enum reason {
	R_NONE = 0,
	/* the request itself (mostly decided by the listener) */
	R_INVALID_REQUEST,
	R_MALFORMED_JSON,
	R_JSON_TOO_DEEP,
	R_BAD_CONTENT_LENGTH,
	R_BODY_TOO_LARGE,
	R_HEADER_TOO_LARGE,
	R_UNKNOWN_METHOD,
	R_METHOD_NOT_ALLOWED,
	R_TOO_MANY_CONNECTIONS,
	R_INVALID_DIGEST,
	R_UNKNOWN_CREDENTIAL,
	R_ALGORITHM_NOT_SUPPORTED,
	R_ALGORITHM_KEY_MISMATCH,
	R_TOO_MANY_HASHES,
	R_PURPOSE_REQUIRED,
	/* policy */
	R_UNKNOWN_CALLER,
	R_PURPOSE_NOT_ALLOWED,
	R_CLASS_NOT_ALLOWED,
	R_ALGORITHM_NOT_ALLOWED,
	R_HASH_ALGORITHM_NOT_ALLOWED,
	R_CREDENTIAL_SUSPENDED,
	R_CREDENTIAL_REVOKED,
	R_RATE_LIMITED,
	R_QUOTA_EXCEEDED,
	/* the signing certificate */
	R_CERT_MISSING,
	R_CERT_NOT_YET_VALID,
	R_CERT_EXPIRED,
	R_CERT_EXPIRING,
	R_CERT_UNTRUSTED,
	R_CERT_REVOKED,
	R_CRL_STALE,
	R_CERT_NO_NON_REPUDIATION,
	/* the citizen's approval */
	R_SAD_REQUIRED,
	R_SAD_INVALID,
	R_SAD_EXPIRED,
	R_SAD_WRONG_CREDENTIAL,
	R_SAD_WRONG_SUBJECT,
	R_SAD_WRONG_PURPOSE,
	R_HASH_NOT_AUTHORISED,
	R_SAD_REPLAYED,
	/* iamsign cannot serve now, or is broken */
	R_TOKEN_UNAVAILABLE,
	R_TOKEN_BUSY,
	R_LEDGER_UNAVAILABLE,
	R_CORE_UNAVAILABLE,
	R_KEY_NOT_FOUND,
	R_REGISTRY_UNAVAILABLE,
	R_INTERNAL_ERROR,
	/* RFC 3161 timestamps (CAdES B-T): the TSA could not be asked, or its token is refused */
	R_TSA_UNAVAILABLE,
	R_TSA_BAD_TOKEN,
	/* appended: the credential's wrapped key cannot be used (blob damaged, moved to another
	 * credential, of another KEK, or the KEK is missing); never signs */
	R_KEY_UNUSABLE,
	R_COUNT
};

/* "unknown_caller", ...; NULL for R_NONE and values outside the enumeration. */
const char *reason_name(enum reason r);
/* The reason a name stands for; R_NONE if none. */
enum reason reason_lookup(const char *name);

/* A refusal: its reason and one line for people (may quote the request; encoders make it
 * printable ASCII). */
struct refusal {
	enum reason reason;
	char desc[WIRE_MAX_DESC + 1];
};

/* Fill f and return -1 (for `return refuse(...)`). */
int refuse(struct refusal *f, enum reason r, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
