/* Token access: one PKCS#11 module, one token, the daemon's own sessions.
 *
 * Nothing here knows HTTP, JSON or policy. Every function returns TOK_OK (0) or a negative
 * enum tok_err; tok_strerror() names it. */
#ifndef IAMSIGN_PKCS11_TOKEN_H
#define IAMSIGN_PKCS11_TOKEN_H

#include <stddef.h>
#include <stdint.h>

#include <p11-kit/pkcs11.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

enum tok_err {
	TOK_OK = 0,
	TOK_ERR_INTERNAL = -1,    /* we are broken (allocation, unexpected CK_RV) */
	TOK_ERR_NOT_FOUND = -2,   /* no such token, key or certificate */
	TOK_ERR_UNAVAILABLE = -3, /* token removed, device error, session lost: retry later */
	TOK_ERR_PIN = -4,         /* PIN incorrect, locked, expired, or PIN file unusable */
	TOK_ERR_BAD_INPUT = -5,   /* the caller's data cannot be signed (length, mechanism) */
	TOK_ERR_MODULE = -6,      /* module path not allowed, or not a PKCS#11 module */
	TOK_ERR_MECHANISM = -7,   /* the token does not support the mechanism */
	TOK_ERR_EXISTS = -8,      /* object already present (provisioning) */
	TOK_ERR_BUSY = -9,        /* the token has no session free for us: retry later */
	TOK_ERR_UNUSABLE = -10,   /* a wrapped key refused: blob damaged, bound to another
	                           * credential, of another KEK, or the KEK missing (wrapped.h) */
};

/* One line naming the error; never NULL. */
const char *tok_strerror(int err);

/* Map a CK_RV to enum tok_err (CKR_OK -> TOK_OK). */
int tok_err_from_rv(CK_RV rv);

/* Largest signature tok_sign_digest() produces (RSA-4096 or DER ECDSA P-521). */
#define TOK_MAX_SIG 600
/* Largest digest accepted (SHA-512). */
#define TOK_MAX_DIGEST 64

struct token;

struct tok_opts {
	const char *module;             /* path to the PKCS#11 module */
	const char *const *module_dirs; /* allowlist of directories; NULL: tok_default_dirs */
	const char *uri;                /* RFC 7512 token URI, e.g. "pkcs11:token=iamsign-01" */
	const char *pin_file;           /* user PIN; NULL: do not log in */
	int require_initialized; /* 0 lets tok_open pick a slot with an uninitialised token */
	/* 1: no monitor thread (no PC/SC watching, no recovery after token loss); for one-shot
	 * tools. The daemon leaves it 0. */
	int no_monitor;
	/* The most sessions to hold on the token at once, the login's included (at least 2); 0:
	 * as many as the token's CK_TOKEN_INFO allows. Either way the workers are capped at one
	 * fewer, and at 64. */
	unsigned max_sessions;
};

/* NULL-terminated default allowlist: system PKCS#11 module and SoftHSM directories. */
extern const char *const tok_default_dirs[];

/* Check that realpath(module) lies directly in one of dirs. TOK_OK or TOK_ERR_MODULE. */
int tok_module_allowed(const char *module, const char *const *dirs);

/* Read a PIN file: refused (TOK_ERR_PIN) if group- or world-readable, empty, or over 256
 * bytes; one trailing newline stripped. *pin is allocated, the caller wipes and frees it with
 * tok_pin_free(). */
int tok_pin_read(const char *path, char **pin, size_t *len);
void tok_pin_free(char *pin, size_t len);

/* For a process about to give up the right to read its PIN files (iamsignd and iamsign-admin
 * before they drop to the configured user): read path now, with the checks of tok_pin_read;
 * tok_pin_read(path) then returns this content without opening the file. At most two paths
 * (user and SO PIN). tok_pin_preload_clear wipes them. TOK_OK or tok_pin_read's error. */
int tok_pin_preload(const char *path);
void tok_pin_preload_clear(void);

/* Load the module (allowlisted), C_Initialize (CKF_OS_LOCKING_OK), find the token matching the
 * URI, and log in with the PIN file if one is given. The PIN is then kept for logging in again
 * after the token comes back, in mlock()ed memory that is left out of core dumps and wiped by
 * tok_close(); tok_open fails (TOK_ERR_PIN) if it cannot be locked. Unless opts->no_monitor, a
 * monitor thread recovers the token after loss (new sessions, login again, module
 * re-initialised when it lost its state, backoff between attempts) and, when the slot is a
 * card reader, a PC/SC thread watches it (see pkcs11/internal.h). On error, err gets one line
 * for the operator. */
int tok_open(const struct tok_opts *opts, struct token **out, char *err, size_t errlen);
void tok_close(struct token *tok);

/* Token state, cheap (one atomic load), for /healthz and metrics. While not TOK_STATE_UP,
 * tok_sign_digest() and uncached tok_key_get() fail at once with TOK_ERR_UNAVAILABLE
 * (TOK_ERR_PIN when TOK_STATE_PIN_FAILED) without touching the module. */
enum tok_state {
	TOK_STATE_UP = 0,
	TOK_STATE_DOWN = 1,       /* removed or failing; being recovered */
	TOK_STATE_PIN_FAILED = 2, /* a login was refused; never retried; restart needed */
};
int tok_state(struct token *tok);

struct tok_stats {
	int state;              /* enum tok_state */
	uint64_t downs;         /* times the token went down */
	uint64_t recoveries;    /* times it came back */
	uint64_t fast_failures; /* requests refused at once while it was down */
	int64_t last_outage_ms; /* length of the last outage that ended */
	int pcsc;               /* 1 when a PC/SC thread watches the reader */
};
void tok_stats(struct token *tok, struct tok_stats *out);

/* Low-level access for provisioning tools (iamsign-admin). The session is the calling
 * thread's own (opened on first use, read-write). */
CK_FUNCTION_LIST *tok_functions(struct token *tok);
CK_SLOT_ID tok_slot(struct token *tok);
int tok_session(struct token *tok, CK_SESSION_HANDLE *out);
/* C_Login with the user PIN (or SO PIN when so != 0) from a file. */
int tok_login(struct token *tok, const char *pin_file, int so);

enum tok_keytype { TOK_KEY_EC = 1, TOK_KEY_RSA = 2 };

/* A signing key found on the token, cached by URI. Owned by the token; valid until
 * tok_close(). */
struct tok_key {
	CK_OBJECT_HANDLE priv;
	enum tok_keytype type;
	int curve_nid;        /* EC: NID_X9_62_prime256v1 or NID_secp384r1; RSA: 0 */
	unsigned bits;        /* key size in bits */
	unsigned char id[64]; /* CKA_ID */
	size_t id_len;
	char label[128]; /* CKA_LABEL, NUL-terminated */
	X509 *cert;      /* certificate with the same CKA_ID, or NULL */
	EVP_PKEY *pub;   /* public key (from the token's public key object or cert) */
	int always_auth; /* CKA_ALWAYS_AUTHENTICATE: tok_sign_digest logs in per signature */
	/* Non-NULL: an unwrapped session object held by pkcs11/wrapped.c (tok_wrapped_get), not
	 * a token object of the cache above; no cert then. */
	const void *wrapped;
};

/* Find the private key matching a PKCS#11 object URI (e.g. "pkcs11:object=cred-1;type=private"
 * or "pkcs11:id=%01%02"), with its certificate and public key. One object search the first
 * time, a cache hit afterwards. The search runs on a worker thread, like a signature, and is
 * waited for at most 1.5 s: then TOK_ERR_UNAVAILABLE, and the token is marked down.
 * TOK_ERR_NOT_FOUND if no key matches, TOK_ERR_BAD_INPUT if the URI is malformed or matches
 * more than one key. Thread-safe. */
int tok_key_get(struct token *tok, const char *uri, const struct tok_key **out);

/* Drop every cached key (after provisioning changes, or token loss). */
void tok_key_flush(struct token *tok);

enum tok_scheme { TOK_ECDSA = 1, TOK_RSA_PKCS1 = 2, TOK_RSA_PSS = 3 };

struct tok_sign_params {
	enum tok_scheme scheme;
	int hash_nid;    /* NID_sha256, NID_sha384, NID_sha512 */
	int mgf1_nid;    /* PSS only: MGF1 hash */
	size_t salt_len; /* PSS only */
};

/* Sign a digest, on a worker thread's own session, waiting at most 1.5 s: a token that does not
 * answer by then gives TOK_ERR_UNAVAILABLE (and is marked down); the late result is discarded.
 * Keys with CKA_ALWAYS_AUTHENTICATE get the
 * context-specific login (C_Login CKU_CONTEXT_SPECIFIC after C_SignInit) with the held PIN.
 * After a token outage the key's handle is found again by its URI (same key type, size and
 * RSA modulus or EC curve and CKA_ID, else TOK_ERR_NOT_FOUND). ECDSA results are DER
 * (ECDSA-Sig-Value), PKCS#1 v1.5 builds the DigestInfo for hash_nid, PSS uses CKM_RSA_PKCS_PSS.
 * dlen must be the hash's length (TOK_ERR_BAD_INPUT otherwise); sig must hold TOK_MAX_SIG bytes.
 * Thread-safe. */
int tok_sign_digest(struct token *tok, const struct tok_key *key, const struct tok_sign_params *p,
                    const uint8_t *dig, size_t dlen, uint8_t *sig, size_t *siglen);

/* Conversions, exposed for unit tests. */
/* r||s (each half rawlen/2 bytes) to DER ECDSA-Sig-Value; der must hold rawlen + 16. */
int tok_ecdsa_raw_to_der(const uint8_t *raw, size_t rawlen, uint8_t *der, size_t *derlen);
/* DER DigestInfo for hash_nid and dig; out must hold dlen + 32. */
int tok_digestinfo(int hash_nid, const uint8_t *dig, size_t dlen, uint8_t *out, size_t *outlen);

#endif
