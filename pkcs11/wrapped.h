/* Wrapped keys: citizen keys kept outside the token only as blobs that the token's
 * key-encryption key (KEK) alone can open, unwrapped into session objects at signing and held
 * in a least-recently-used cache of a fixed size (docs/security.md, "Wrapped keys").
 *
 * The KEK is an AES-256 token object: private, sensitive, never extractable, CKA_WRAP and
 * CKA_UNWRAP and nothing else. Blobs are CKM_AES_KEY_WRAP_PAD (RFC 5649) of the private key;
 * each records the CKA_ID of the KEK that made it (several KEKs share the label of keys.kek
 * while one is rotated). A blob is bound to its credential: beside it the registry keeps the
 * public key (SubjectPublicKeyInfo DER) and a binding signature, made by the key itself when
 * it was generated, over tok_wrapped_binding_digest(credential ID, public key). Before an
 * unwrapped key is first used, the binding is verified with that public key and the key signs
 * a random challenge that must verify with it too: a blob moved to another credential, a
 * damaged blob or public key, a blob of another KEK and a missing KEK all end in
 * TOK_ERR_UNUSABLE, never in a signature. The cache remembers the digests of the rows it has
 * proven so (a bounded table, WC_PROVEN_PER_KEY per key it holds): the same bytes unwrapped
 * again after an eviction are not proven again, as after a token outage; any other bytes
 * are.
 *
 * Every function returns TOK_OK or a negative enum tok_err. */
#ifndef IAMSIGN_PKCS11_WRAPPED_H
#define IAMSIGN_PKCS11_WRAPPED_H

#include <stddef.h>
#include <stdint.h>

#include "pkcs11/token.h"

#define TOK_KEK_ID_LEN 16
#define TOK_MAX_BLOB 4096 /* RSA-3072 PKCS#8 wrapped is under 2 KiB */
#define TOK_MAX_SPKI 1024
#define TOK_MAX_BINDING 512

/* What the registry keeps of one wrapped key; borrowed for the length of a call. */
struct tok_wrapped_ref {
	const char *cred_id;
	const unsigned char *kek_id; /* TOK_KEK_ID_LEN bytes */
	const unsigned char *blob;
	size_t blob_len;
	const unsigned char *spki;
	size_t spki_len;
	const unsigned char *binding;
	size_t binding_len;
};

/* A freshly generated and wrapped key (tok_wrapped_generate), the caller's to store. */
struct tok_wrapped_new {
	unsigned char kek_id[TOK_KEK_ID_LEN];
	unsigned char *blob;
	size_t blob_len;
	unsigned char *spki;
	size_t spki_len;
	unsigned char *binding;
	size_t binding_len;
};
void tok_wrapped_new_clear(struct tok_wrapped_new *w);

/* SHA-256 of "iamsign wrapped key binding v1", NUL, credential ID, NUL, SPKI DER: what the
 * binding signature signs. */
int tok_wrapped_binding_digest(const char *cred_id, const unsigned char *spki, size_t spki_len,
                               unsigned char out[32]);

struct tok_wcache;

/* The cache of unwrapped keys for the KEKs that kek_uri (keys.kek) names, holding at most
 * capacity keys (2..): the least recently used is destroyed in the token when another is
 * needed. The session objects are made in the login's session (they die with the session that
 * made them, and that one lives until an outage; without a login, a session of the cache's
 * own); after a token outage unwrapping a key again when it is
 * next used. Free it after tok_close(). TOK_ERR_BAD_INPUT for a malformed URI. */
int tok_wcache_new(struct token *tok, const char *kek_uri, unsigned capacity,
                   struct tok_wcache **out);
void tok_wcache_free(struct tok_wcache *c);

/* The unwrapped key of ref, from the cache or unwrapped now (on a worker, with the signing
 * deadline, then checked as the top of this file says). *out is held until
 * tok_wrapped_put(); it signs with tok_sign_digest() like a token key. TOK_ERR_UNUSABLE when
 * the blob is refused (logged, with the credential and why). Thread-safe. */
int tok_wrapped_get(struct tok_wcache *c, const struct tok_wrapped_ref *ref,
                    const struct tok_key **out);
void tok_wrapped_put(struct tok_wcache *c, const struct tok_key *key);

/* For sign.c: make key->priv valid in the current token gen (unwrap again after an outage).
 * Caller holds op_lock (read), on a worker. */
int tok_wrapped_fresh(struct token *tok, const struct tok_key *key);
/* For sign.c: a sign job holds its own reference while it may outlive its requester. */
void tok_wrapped_hold(const struct tok_key *key);
void tok_wrapped_release(const struct tok_key *key);

struct tok_wcache_stats {
	uint64_t hits, misses, evictions, refused;
	uint64_t proven_again; /* misses whose very bytes were proven before (not proven again) */
	uint64_t held;         /* unwrapped keys in the cache now */
	unsigned capacity;
};
void tok_wcache_stats(struct tok_wcache *c, struct tok_wcache_stats *out);

/* ---- provisioning (iamsign-admin) ---- */

/* Make a KEK labelled as kek_uri's object= says, with a random CKA_ID, and read its
 * attributes back (destroyed when any differs). */
int tok_kek_create(struct tok_wcache *c, unsigned char id[TOK_KEK_ID_LEN], char *err,
                   size_t errlen);
/* The CKA_IDs of the KEKs kek_uri matches, at most max; *n how many there are. */
int tok_kek_list(struct tok_wcache *c, unsigned char (*ids)[TOK_KEK_ID_LEN], size_t max, size_t *n);
/* Find that KEK and check its attributes. TOK_ERR_NOT_FOUND, or TOK_ERR_UNUSABLE (err says
 * which attribute) when it is not a KEK we trust. */
int tok_kek_check(struct tok_wcache *c, const unsigned char id[TOK_KEK_ID_LEN], char *err,
                  size_t errlen);
int tok_kek_destroy(struct tok_wcache *c, const unsigned char id[TOK_KEK_ID_LEN]);

/* Generate a key pair in the token as session objects (EC: curve_nid; RSA: bits), sign the
 * binding for cred_id with it, wrap the private key with KEK kek_id, and destroy both objects.
 * The private key is extractable only so that the KEK can wrap it, and only for that moment.
 * Attributes are read back and checked. */
int tok_wrapped_generate(struct tok_wcache *c, const unsigned char kek_id[TOK_KEK_ID_LEN],
                         enum tok_keytype type, int curve_nid, unsigned bits, const char *cred_id,
                         struct tok_wrapped_new *out, char *err, size_t errlen);

/* Rewrap ref's blob under KEK new_kek: unwrapped (checked as for signing) into an extractable
 * session object, wrapped, destroyed; the new blob is unwrapped and checked again before it is
 * returned (*blob, malloc'ed), so no blob is lost when the old KEK goes. */
int tok_wrapped_rewrap(struct tok_wcache *c, const struct tok_wrapped_ref *ref,
                       const unsigned char new_kek[TOK_KEK_ID_LEN], unsigned char **blob,
                       size_t *blob_len, char *err, size_t errlen);

/* The public key of a SubjectPublicKeyInfo DER (EC P-256/P-384, RSA), or NULL. */
EVP_PKEY *tok_spki_parse(const unsigned char *spki, size_t len);

#endif
