/* Wrapped keys (wrapped.h): the KEK, generation and wrapping for the provisioning tool, and
 * the daemon's cache of unwrapped session objects.
 *
 * The cache is a hash table by tag (SHA-256 of credential ID and public key, so a credential
 * given a new key never meets the old one's entry) and a recency list, under one mutex. Every
 * module call runs on a worker (tok_job_call) under the read side of op_lock, like a
 * signature; calls on the cache's own session (unwrap, destroy) are serialised by a second
 * mutex. An entry leaves the table when it is the least recently used and a new key needs its
 * place; it is freed, and its object queued for destruction, when its last holder lets go.
 * The queue is emptied by the next unwrap, on a worker: the token holds at most capacity
 * objects plus the few evicted since. After a token outage every object is gone with the
 * session (recovery closes all sessions and bumps the token's gen): an entry whose gen is old
 * is unwrapped again before it signs (tok_wrapped_fresh), and old handles are never destroyed
 * or used, since the module may have given their numbers to new objects. */
#include "pkcs11/wrapped.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/objects.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <openssl/x509.h>
#include <p11-kit/p11-kit.h>
#include <p11-kit/uri.h>

#include "pkcs11/internal.h"

#define WC_MAX_URI_ATTRS 8
#define WC_MAX_KEKS 8 /* KEK handles remembered per gen: one, two while rotating */
#define WC_MAX_PENDING 4096
#define WC_KEK_BITS 256
#define WC_PROVEN_PER_KEY 4 /* proofs remembered per key the cache holds */
#define WC_MAX_PROVEN (1u << 22)
#define PROOF_TAG "iamsign wrapped key proven v1"
#define BINDING_TAG "iamsign wrapped key binding v1"
#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

struct wkey {
	struct tok_key key; /* key.wrapped points back here */
	struct tok_wcache *c;
	unsigned char tag[32];
	struct wkey *hnext;       /* hash chain */
	struct wkey *prev, *next; /* recency list, most recent first */
	long refs;                /* holders (under c->mu) */
	int in_table;
	_Atomic unsigned hgen; /* token gen of key.priv */
	pthread_mutex_t mu;    /* unwrapping again after an outage */
	unsigned char kek_id[TOK_KEK_ID_LEN];
	unsigned char *blob;
	size_t blob_len;
};

struct kek_slot {
	unsigned char id[TOK_KEK_ID_LEN];
	CK_OBJECT_HANDLE h;
	unsigned gen;
	int used;
};

struct pending {
	CK_OBJECT_HANDLE h;
	unsigned gen;
};

struct tok_wcache {
	struct token *tok;
	P11KitUri *uri;
	CK_ATTRIBUTE tmpl[WC_MAX_URI_ATTRS + 3];
	CK_ULONG ntmpl; /* the URI's attributes and CKA_CLASS; CKA_ID goes at ntmpl */
	CK_OBJECT_CLASS secret_class;

	pthread_mutex_t mu; /* table, list, counters, pending */
	struct wkey **buckets;
	size_t nbuckets;
	struct wkey *head, *tail;
	size_t n;
	unsigned cap;
	struct pending *pend;
	size_t npend;
	uint64_t hits, misses, evictions, refused, proven_again;
	/* Digests of (credential, KEK, blob, public key, binding) whose binding verified and
	 * whose unwrapped key signed for the public key, direct-mapped: a key unwrapped again
	 * after its eviction is not proven again (its attributes still are). */
	unsigned char (*proven)[32];
	size_t nproven; /* a power of two */

	pthread_mutex_t smu; /* the session below and the KEK handles */
	CK_SESSION_HANDLE sess;
	unsigned sess_gen;
	int have_sess;
	struct kek_slot keks[WC_MAX_KEKS];
};

void tok_wrapped_new_clear(struct tok_wrapped_new *w)
{
	if (w == NULL)
		return;
	free(w->blob);
	free(w->spki);
	free(w->binding);
	memset(w, 0, sizeof(*w));
}

int tok_wrapped_binding_digest(const char *cred_id, const unsigned char *spki, size_t spki_len,
                               unsigned char out[32])
{
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	unsigned int len = 0;
	int ok;

	if (md == NULL)
		return TOK_ERR_INTERNAL;
	ok = EVP_DigestInit_ex(md, EVP_sha256(), NULL) &&
	     EVP_DigestUpdate(md, BINDING_TAG, sizeof(BINDING_TAG)) && /* with its NUL */
	     EVP_DigestUpdate(md, cred_id, strlen(cred_id) + 1) &&
	     EVP_DigestUpdate(md, spki, spki_len) && EVP_DigestFinal_ex(md, out, &len) && len == 32;
	EVP_MD_CTX_free(md);
	return ok ? TOK_OK : TOK_ERR_INTERNAL;
}

/* The DER of an EC SubjectPublicKeyInfo up to the uncompressed point: SEQUENCE { SEQUENCE {
 * id-ecPublicKey, the curve's OID }, BIT STRING (no unused bits) }, point 04 || X || Y. */
static const struct {
	const char *group;
	unsigned char prefix[24];
	size_t prefix_len, point_len;
} ec_spki[] = {
    {"prime256v1",
     {0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02,
      0x01, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03},
     24,
     66},
    {"secp384r1",
     {0x30, 0x76, 0x30, 0x10, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d,
      0x02, 0x01, 0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22, 0x03},
     21,
     98},
};

/* An EC P-256/P-384 SPKI in the one DER form keygen writes, made into a key from its point
 * (EVP_PKEY_fromdata checks that the point is on the curve). OpenSSL 3.0's d2i_PUBKEY runs
 * its decoder search, about five times the cost, under locks every other thread takes too:
 * this is on the path of every key the cache unwraps. NULL when spki is not of that form. */
static EVP_PKEY *ec_spki_parse(const unsigned char *spki, size_t len)
{
	OSSL_PARAM params[3];
	EVP_PKEY_CTX *ctx = NULL;
	EVP_PKEY *pk = NULL;
	size_t i, pl;

	for (i = 0; i < NELEM(ec_spki); i++) {
		pl = ec_spki[i].prefix_len;
		/* The BIT STRING's length byte, its "no unused bits" byte, then 04. */
		if (len != pl + 1 + ec_spki[i].point_len ||
		    memcmp(spki, ec_spki[i].prefix, pl) != 0 || spki[pl] != ec_spki[i].point_len ||
		    spki[pl + 1] != 0x00 || spki[pl + 2] != 0x04)
			continue;
		params[0] = OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME,
		                                             (char *)ec_spki[i].group, 0);
		params[1] = OSSL_PARAM_construct_octet_string(
		    OSSL_PKEY_PARAM_PUB_KEY, (void *)(spki + pl + 2), ec_spki[i].point_len - 1);
		params[2] = OSSL_PARAM_construct_end();
		if ((ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL)) == NULL ||
		    EVP_PKEY_fromdata_init(ctx) != 1 ||
		    EVP_PKEY_fromdata(ctx, &pk, EVP_PKEY_PUBLIC_KEY, params) != 1)
			pk = NULL;
		EVP_PKEY_CTX_free(ctx);
		ERR_clear_error();
		return pk;
	}
	return NULL;
}

EVP_PKEY *tok_spki_parse(const unsigned char *spki, size_t len)
{
	const unsigned char *p = spki;
	EVP_PKEY *pk;

	if (spki == NULL || len == 0 || len > TOK_MAX_SPKI)
		return NULL;
	if ((pk = ec_spki_parse(spki, len)) != NULL)
		return pk;
	pk = d2i_PUBKEY(NULL, &p, (long)len);
	if (pk != NULL && p != spki + len) {
		EVP_PKEY_free(pk);
		pk = NULL;
	}
	/* Only the DER that encodes it (d2i tolerates, for one, unused bits in the BIT STRING):
	 * one key, one form, as the binding and the caches' tags take the bytes. */
	if (pk != NULL) {
		unsigned char *der = NULL;
		int n = i2d_PUBKEY(pk, &der);

		if (n <= 0 || (size_t)n != len || memcmp(der, spki, len) != 0) {
			EVP_PKEY_free(pk);
			pk = NULL;
		}
		OPENSSL_free(der);
	}
	ERR_clear_error();
	return pk;
}

/* Does sig verify as pub's signature over the SHA-256 digest dig? */
static int verify_digest(EVP_PKEY *pub, const unsigned char dig[32], const unsigned char *sig,
                         size_t siglen)
{
	EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new(pub, NULL);
	int ok = 0;

	if (ctx != NULL && EVP_PKEY_verify_init(ctx) == 1 &&
	    (EVP_PKEY_get_base_id(pub) != EVP_PKEY_RSA ||
	     EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_PADDING) == 1) &&
	    EVP_PKEY_CTX_set_signature_md(ctx, EVP_sha256()) == 1)
		ok = EVP_PKEY_verify(ctx, sig, siglen, dig, 32) == 1;
	EVP_PKEY_CTX_free(ctx);
	return ok;
}

/* Describe a tok_key from its public key: type, curve or size. */
static int key_from_pub(struct tok_key *k, EVP_PKEY *pub)
{
	char group[64];

	if (EVP_PKEY_get_base_id(pub) == EVP_PKEY_EC) {
		if (EVP_PKEY_get_utf8_string_param(pub, OSSL_PKEY_PARAM_GROUP_NAME, group,
		                                   sizeof(group), NULL) != 1)
			return TOK_ERR_BAD_INPUT;
		k->type = TOK_KEY_EC;
		k->curve_nid = OBJ_txt2nid(group);
		if (k->curve_nid == NID_X9_62_prime256v1)
			k->bits = 256;
		else if (k->curve_nid == NID_secp384r1)
			k->bits = 384;
		else
			return TOK_ERR_BAD_INPUT;
		return TOK_OK;
	}
	if (EVP_PKEY_get_base_id(pub) == EVP_PKEY_RSA) {
		k->type = TOK_KEY_RSA;
		k->curve_nid = 0;
		k->bits = (unsigned)EVP_PKEY_get_bits(pub);
		return k->bits >= 2048 && k->bits <= 4096 ? TOK_OK : TOK_ERR_BAD_INPUT;
	}
	return TOK_ERR_BAD_INPUT;
}

/* ---- attributes ---- */

struct bool_want {
	CK_ATTRIBUTE_TYPE type;
	const char *name;
	CK_BBOOL want;
};

/* Read every attribute of want back in one call; TOK_ERR_UNUSABLE naming the first that
 * differs (or cannot be read). */
static int check_bools(struct token *tok, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE h,
                       const struct bool_want *want, size_t n, const char *what, char *err,
                       size_t errlen)
{
	CK_BBOOL v[16];
	CK_ATTRIBUTE a[16];
	CK_RV rv;
	size_t i;

	if (n > 16)
		return TOK_ERR_INTERNAL;
	for (i = 0; i < n; i++) {
		v[i] = 0xff;
		a[i].type = want[i].type;
		a[i].pValue = &v[i];
		a[i].ulValueLen = sizeof(v[i]);
	}
	rv = tok->fl->C_GetAttributeValue(s, h, a, (CK_ULONG)n);
	if (rv != CKR_OK && rv != CKR_ATTRIBUTE_TYPE_INVALID && rv != CKR_ATTRIBUTE_SENSITIVE) {
		int r = tok_err_from_rv(rv);
		tok_seterr(err, errlen, "%s: attributes cannot be read (%s)", what,
		           p11_kit_strerror(rv));
		return r == TOK_ERR_UNAVAILABLE ? r : TOK_ERR_UNUSABLE;
	}
	for (i = 0; i < n; i++) {
		if (a[i].ulValueLen != sizeof(CK_BBOOL)) {
			tok_seterr(err, errlen, "%s: %s cannot be read back", what, want[i].name);
			return TOK_ERR_UNUSABLE;
		}
		if ((v[i] != CK_FALSE) != (want[i].want != CK_FALSE)) {
			tok_seterr(err, errlen, "%s: %s is %s, expected %s", what, want[i].name,
			           v[i] != CK_FALSE ? "true" : "false",
			           want[i].want != CK_FALSE ? "true" : "false");
			return TOK_ERR_UNUSABLE;
		}
	}
	return TOK_OK;
}

#define BW(a, w)                                                                                   \
	{                                                                                          \
		a, #a, w                                                                           \
	}

static const struct bool_want kek_want[] = {
    BW(CKA_TOKEN, CK_TRUE),
    BW(CKA_PRIVATE, CK_TRUE),
    BW(CKA_SENSITIVE, CK_TRUE),
    BW(CKA_EXTRACTABLE, CK_FALSE),
    BW(CKA_WRAP, CK_TRUE),
    BW(CKA_UNWRAP, CK_TRUE),
    BW(CKA_ENCRYPT, CK_FALSE),
    BW(CKA_DECRYPT, CK_FALSE),
    BW(CKA_SIGN, CK_FALSE),
    BW(CKA_VERIFY, CK_FALSE),
    BW(CKA_DERIVE, CK_FALSE),
    BW(CKA_ALWAYS_SENSITIVE, CK_TRUE),
    BW(CKA_NEVER_EXTRACTABLE, CK_TRUE),
};

/* An unwrapped key for signing: a session object, sensitive, never extractable, sign only. */
static const struct bool_want unwrapped_want[] = {
    BW(CKA_TOKEN, CK_FALSE),       BW(CKA_PRIVATE, CK_TRUE), BW(CKA_SENSITIVE, CK_TRUE),
    BW(CKA_EXTRACTABLE, CK_FALSE), BW(CKA_SIGN, CK_TRUE),    BW(CKA_DECRYPT, CK_FALSE),
    BW(CKA_UNWRAP, CK_FALSE),      BW(CKA_DERIVE, CK_FALSE), BW(CKA_SIGN_RECOVER, CK_FALSE),
};

/* The same for rotation, extractable so that the new KEK can wrap it. */
static const struct bool_want rewrap_want[] = {
    BW(CKA_TOKEN, CK_FALSE),      BW(CKA_PRIVATE, CK_TRUE), BW(CKA_SENSITIVE, CK_TRUE),
    BW(CKA_EXTRACTABLE, CK_TRUE), BW(CKA_SIGN, CK_TRUE),    BW(CKA_DECRYPT, CK_FALSE),
    BW(CKA_UNWRAP, CK_FALSE),     BW(CKA_DERIVE, CK_FALSE),
};

static const struct bool_want gen_priv_want[] = {
    BW(CKA_TOKEN, CK_FALSE),      BW(CKA_PRIVATE, CK_TRUE), BW(CKA_SENSITIVE, CK_TRUE),
    BW(CKA_EXTRACTABLE, CK_TRUE), BW(CKA_SIGN, CK_TRUE),    BW(CKA_DECRYPT, CK_FALSE),
    BW(CKA_UNWRAP, CK_FALSE),     BW(CKA_DERIVE, CK_FALSE), BW(CKA_ALWAYS_SENSITIVE, CK_TRUE),
};

static const struct bool_want gen_pub_want[] = {
    BW(CKA_TOKEN, CK_FALSE),
    BW(CKA_VERIFY, CK_TRUE),
    BW(CKA_ENCRYPT, CK_FALSE),
    BW(CKA_WRAP, CK_FALSE),
};

/* ---- the cache's session and the KEKs; caller holds op_lock (read) and c->smu ---- */

/* The cache's session in the current gen: opened anew after an outage (the old one was
 * closed by recovery, its number possibly another's now: never closed here). */
static int wc_session(struct tok_wcache *c, CK_SESSION_HANDLE *out)
{
	unsigned gen = atomic_load(&c->tok->gen);
	CK_SESSION_HANDLE h;
	CK_RV rv;

	/* The login's session, where there is one: it lives until recovery closes every
	 * session, as these objects must, and costs no session of the token's budget. */
	if (c->tok->have_anchor) {
		c->sess_gen = gen;
		*out = c->tok->anchor;
		return TOK_OK;
	}
	if (c->have_sess && c->sess_gen == gen) {
		*out = c->sess;
		return TOK_OK;
	}
	c->have_sess = 0;
	rv = tok_open_session(c->tok, &h);
	if (rv != CKR_OK)
		return tok_session_failed(c->tok, rv) != TOK_OK ? tok_err_from_rv(rv)
		                                                : TOK_ERR_INTERNAL;
	c->sess = h;
	c->sess_gen = gen;
	c->have_sess = 1;
	*out = h;
	return TOK_OK;
}

/* Find the KEKs the URI matches with CKA_ID id (NULL: any). */
static int kek_find(struct tok_wcache *c, CK_SESSION_HANDLE s, const unsigned char *id,
                    CK_OBJECT_HANDLE *objs, CK_ULONG max, CK_ULONG *found)
{
	CK_FUNCTION_LIST *fl = c->tok->fl;
	CK_ULONG nt = c->ntmpl, got, total = 0;
	CK_TOKEN_INFO ti;
	CK_RV rv, rv2;

	*found = 0;
	rv = fl->C_GetTokenInfo(c->tok->slot, &ti);
	if (rv != CKR_OK)
		return tok_session_failed(c->tok, rv);
	if (!p11_kit_uri_match_token_info(c->uri, &ti))
		return TOK_OK; /* keys.kek names another token: none here */
	if (id != NULL) {
		c->tmpl[nt].type = CKA_ID;
		c->tmpl[nt].pValue = (void *)id;
		c->tmpl[nt].ulValueLen = TOK_KEK_ID_LEN;
		nt++;
	}
	rv = fl->C_FindObjectsInit(s, c->tmpl, nt);
	if (rv != CKR_OK)
		return tok_session_failed(c->tok, rv);
	while (total < max) {
		got = 0;
		rv = fl->C_FindObjects(s, objs + total, max - total, &got);
		if (rv != CKR_OK || got == 0 || got > max - total)
			break;
		total += got;
	}
	rv2 = fl->C_FindObjectsFinal(s);
	if (rv != CKR_OK)
		return tok_session_failed(c->tok, rv);
	if (rv2 != CKR_OK)
		return tok_session_failed(c->tok, rv2);
	*found = total;
	return TOK_OK;
}

/* The KEK with CKA_ID id, found and checked once per gen. */
static int kek_handle(struct tok_wcache *c, CK_SESSION_HANDLE s, const unsigned char *id,
                      CK_OBJECT_HANDLE *out, char *err, size_t errlen)
{
	unsigned gen = atomic_load(&c->tok->gen);
	CK_OBJECT_HANDLE objs[2];
	CK_ULONG found = 0;
	struct kek_slot *free_slot = NULL;
	size_t i;
	int r;

	for (i = 0; i < WC_MAX_KEKS; i++) {
		struct kek_slot *k = &c->keks[i];
		if (k->used && k->gen == gen && memcmp(k->id, id, TOK_KEK_ID_LEN) == 0) {
			*out = k->h;
			return TOK_OK;
		}
		if (free_slot == NULL && (!k->used || k->gen != gen))
			free_slot = k;
	}
	if ((r = kek_find(c, s, id, objs, 2, &found)) != TOK_OK)
		return r;
	if (found == 0) {
		tok_seterr(err, errlen, "the KEK that wrapped this key is not on the token");
		return TOK_ERR_UNUSABLE;
	}
	if (found > 1) {
		tok_seterr(err, errlen, "several KEKs share the CKA_ID of this key's KEK");
		return TOK_ERR_UNUSABLE;
	}
	if ((r = check_bools(c->tok, s, objs[0], kek_want, NELEM(kek_want), "KEK", err, errlen)) !=
	    TOK_OK)
		return r;
	if (free_slot == NULL)
		free_slot = &c->keks[0];
	memcpy(free_slot->id, id, TOK_KEK_ID_LEN);
	free_slot->h = objs[0];
	free_slot->gen = gen;
	free_slot->used = 1;
	*out = objs[0];
	return TOK_OK;
}

/* Destroy the objects of evicted entries that are of this gen. Caller holds smu. */
static void drain_pending(struct tok_wcache *c, CK_SESSION_HANDLE s)
{
	struct pending batch[64];
	unsigned gen = atomic_load(&c->tok->gen);
	size_t n, i;

	do {
		pthread_mutex_lock(&c->mu);
		n = c->npend < NELEM(batch) ? c->npend : NELEM(batch);
		c->npend -= n;
		memcpy(batch, c->pend + c->npend, n * sizeof(*batch));
		pthread_mutex_unlock(&c->mu);
		for (i = 0; i < n; i++)
			if (batch[i].gen == gen)
				c->tok->fl->C_DestroyObject(s, batch[i].h);
	} while (n == NELEM(batch));
}

static void queue_destroy(struct tok_wcache *c, CK_OBJECT_HANDLE h, unsigned gen)
{
	/* Caller holds c->mu. A full queue drops the oldest: that object then lives until the
	 * session closes, which bounds it all the same. */
	if (h == CK_INVALID_HANDLE)
		return;
	if (c->npend == WC_MAX_PENDING) {
		memmove(c->pend, c->pend + 1, (WC_MAX_PENDING - 1) * sizeof(*c->pend));
		c->npend--;
	}
	c->pend[c->npend].h = h;
	c->pend[c->npend].gen = gen;
	c->npend++;
}

/* C_UnwrapKey of blob with KEK kek_id into a session object of the cache's session, its
 * attributes read back. Caller holds op_lock (read). */
static int unwrap_locked(struct tok_wcache *c, const unsigned char *kek_id,
                         const unsigned char *blob, size_t blob_len, enum tok_keytype type,
                         int extractable, CK_OBJECT_HANDLE *out, unsigned *gen_out, char *err,
                         size_t errlen)
{
	CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
	CK_KEY_TYPE kt = type == TOK_KEY_EC ? CKK_EC : CKK_RSA;
	CK_BBOOL t = CK_TRUE, f = CK_FALSE;
	CK_MECHANISM mech = {CKM_AES_KEY_WRAP_PAD, NULL, 0};
	CK_ATTRIBUTE tmpl[] = {
	    {CKA_CLASS, &cls, sizeof(cls)},    {CKA_KEY_TYPE, &kt, sizeof(kt)},
	    {CKA_TOKEN, &f, sizeof(f)},        {CKA_PRIVATE, &t, sizeof(t)},
	    {CKA_SENSITIVE, &t, sizeof(t)},    {CKA_EXTRACTABLE, extractable ? &t : &f, sizeof(t)},
	    {CKA_SIGN, &t, sizeof(t)},         {CKA_DECRYPT, &f, sizeof(f)},
	    {CKA_UNWRAP, &f, sizeof(f)},       {CKA_DERIVE, &f, sizeof(f)},
	    {CKA_SIGN_RECOVER, &f, sizeof(f)},
	};
	CK_OBJECT_HANDLE kek, h = CK_INVALID_HANDLE;
	CK_SESSION_HANDLE s;
	CK_RV rv;
	int r;

	*out = CK_INVALID_HANDLE;
	pthread_mutex_lock(&c->smu);
	if ((r = wc_session(c, &s)) != TOK_OK) {
		tok_seterr(err, errlen, "session: %s", tok_strerror(r));
		goto out;
	}
	drain_pending(c, s);
	if ((r = kek_handle(c, s, kek_id, &kek, err, errlen)) != TOK_OK)
		goto out;
	rv = c->tok->fl->C_UnwrapKey(s, &mech, kek, (CK_BYTE_PTR)blob, (CK_ULONG)blob_len, tmpl,
	                             extractable ? NELEM(tmpl) - 1 : NELEM(tmpl), &h);
	if (rv != CKR_OK) {
		r = tok_err_from_rv(rv);
		if (r == TOK_ERR_UNAVAILABLE || r == TOK_ERR_BUSY) {
			tok_session_failed(c->tok, rv);
			tok_seterr(err, errlen, "C_UnwrapKey: %s", p11_kit_strerror(rv));
		} else {
			/* Damaged, of another KEK, not a key of this type: never "try later". */
			r = TOK_ERR_UNUSABLE;
			tok_seterr(err, errlen, "the KEK does not unwrap the blob (%s)",
			           p11_kit_strerror(rv));
		}
		goto out;
	}
	r = extractable ? check_bools(c->tok, s, h, rewrap_want, NELEM(rewrap_want),
	                              "unwrapped key", err, errlen)
	                : check_bools(c->tok, s, h, unwrapped_want, NELEM(unwrapped_want),
	                              "unwrapped key", err, errlen);
	if (r != TOK_OK)
		goto out;
	*out = h;
	*gen_out = c->sess_gen;
	h = CK_INVALID_HANDLE;
out:
	if (h != CK_INVALID_HANDLE)
		c->tok->fl->C_DestroyObject(s, h);
	pthread_mutex_unlock(&c->smu);
	return r;
}

/* ---- unwrapping on a worker ---- */

struct unwrap_job {
	struct tok_job j;
	struct tok_wcache *c;
	unsigned char kek_id[TOK_KEK_ID_LEN];
	unsigned char *blob;
	size_t blob_len;
	enum tok_keytype type;
	int extractable;
	CK_OBJECT_HANDLE h; /* the result, until taken */
	unsigned gen;
	char err[200];
};

static void unwrap_job_drop(struct tok_job *j)
{
	struct unwrap_job *uj = (struct unwrap_job *)j;

	/* Given up by its requester: the object it made is nobody's. */
	if (uj->h != CK_INVALID_HANDLE) {
		pthread_mutex_lock(&uj->c->mu);
		queue_destroy(uj->c, uj->h, uj->gen);
		pthread_mutex_unlock(&uj->c->mu);
	}
	free(uj->blob);
	free(uj);
}

static int unwrap_job_run(struct token *tok, struct tok_job *j)
{
	struct unwrap_job *uj = (struct unwrap_job *)j;
	int r;

	if ((r = tok_use_begin(tok)) != TOK_OK)
		return r;
	r = unwrap_locked(uj->c, uj->kek_id, uj->blob, uj->blob_len, uj->type, uj->extractable,
	                  &uj->h, &uj->gen, uj->err, sizeof(uj->err));
	tok_use_end(tok);
	return r;
}

static int unwrap_on_worker(struct tok_wcache *c, const unsigned char *kek_id,
                            const unsigned char *blob, size_t blob_len, enum tok_keytype type,
                            int extractable, CK_OBJECT_HANDLE *h, unsigned *gen, char *err,
                            size_t errlen)
{
	struct unwrap_job *uj;
	int r, gone = 0;

	*h = CK_INVALID_HANDLE;
	if ((uj = calloc(1, sizeof(*uj))) == NULL || (uj->blob = malloc(blob_len)) == NULL) {
		free(uj);
		return TOK_ERR_INTERNAL;
	}
	uj->j.run = unwrap_job_run;
	uj->j.drop = unwrap_job_drop;
	uj->c = c;
	memcpy(uj->kek_id, kek_id, TOK_KEK_ID_LEN);
	memcpy(uj->blob, blob, blob_len);
	uj->blob_len = blob_len;
	uj->type = type;
	uj->extractable = extractable;
	uj->h = CK_INVALID_HANDLE;
	r = tok_job_call(c->tok, &uj->j, "an unwrap", &gone);
	if (gone)
		return r;
	if (r == TOK_OK) {
		*h = uj->h;
		*gen = uj->gen;
		uj->h = CK_INVALID_HANDLE;
	} else {
		tok_seterr(err, errlen, "%s", uj->err[0] != '\0' ? uj->err : tok_strerror(r));
	}
	unwrap_job_drop(&uj->j);
	return r;
}

/* Queue an object for destruction by the next unwrap. */
static void discard(struct tok_wcache *c, CK_OBJECT_HANDLE h, unsigned gen)
{
	pthread_mutex_lock(&c->mu);
	queue_destroy(c, h, gen);
	pthread_mutex_unlock(&c->mu);
}

/* The key k (priv set) signs a random challenge that pub must verify. */
static int challenge(struct token *tok, const struct tok_key *k, EVP_PKEY *pub, char *err,
                     size_t errlen)
{
	struct tok_sign_params sp = {
	    .scheme = k->type == TOK_KEY_EC ? TOK_ECDSA : TOK_RSA_PKCS1,
	    .hash_nid = NID_sha256,
	};
	unsigned char dig[32], sig[TOK_MAX_SIG];
	size_t siglen = sizeof(sig);
	int r;

	if (RAND_bytes(dig, sizeof(dig)) != 1)
		return TOK_ERR_INTERNAL;
	r = tok_sign_digest(tok, k, &sp, dig, sizeof(dig), sig, &siglen);
	if (r != TOK_OK) {
		tok_seterr(err, errlen, "the unwrapped key cannot sign: %s", tok_strerror(r));
		return r == TOK_ERR_UNAVAILABLE || r == TOK_ERR_BUSY || r == TOK_ERR_PIN
		           ? r
		           : TOK_ERR_UNUSABLE;
	}
	if (!verify_digest(pub, dig, sig, siglen)) {
		tok_seterr(err, errlen, "the unwrapped key is not the credential's public key");
		return TOK_ERR_UNUSABLE;
	}
	return TOK_OK;
}

/* Checks that need no token: the public key parses, is of a type we sign with, and the binding
 * signature binds it to the credential ID. */
static int check_ref(const struct tok_wrapped_ref *ref, int proven, EVP_PKEY **pub,
                     struct tok_key *k, char *err, size_t errlen)
{
	unsigned char dig[32];

	*pub = NULL;
	if (ref->blob == NULL || ref->blob_len == 0 || ref->blob_len > TOK_MAX_BLOB ||
	    ref->kek_id == NULL) {
		tok_seterr(err, errlen, "no usable blob");
		return TOK_ERR_UNUSABLE;
	}
	if ((*pub = tok_spki_parse(ref->spki, ref->spki_len)) == NULL ||
	    key_from_pub(k, *pub) != TOK_OK) {
		tok_seterr(err, errlen, "the recorded public key is damaged or of an unknown type");
		goto bad;
	}
	if (ref->binding == NULL || ref->binding_len == 0 || ref->binding_len > TOK_MAX_BINDING) {
		tok_seterr(err, errlen, "the key's binding to credential %s is missing",
		           ref->cred_id);
		goto bad;
	}
	if (proven) /* these very bytes verified before */
		return TOK_OK;
	if (tok_wrapped_binding_digest(ref->cred_id, ref->spki, ref->spki_len, dig) != TOK_OK) {
		EVP_PKEY_free(*pub);
		*pub = NULL;
		return TOK_ERR_INTERNAL;
	}
	if (ref->binding == NULL || ref->binding_len == 0 || ref->binding_len > TOK_MAX_BINDING ||
	    !verify_digest(*pub, dig, ref->binding, ref->binding_len)) {
		tok_seterr(err, errlen, "the key's binding to credential %s does not verify",
		           ref->cred_id);
		goto bad;
	}
	ERR_clear_error();
	return TOK_OK;
bad:
	ERR_clear_error();
	EVP_PKEY_free(*pub);
	*pub = NULL;
	return TOK_ERR_UNUSABLE;
}

/* ---- the cache ---- */

static void tag_of(const struct tok_wrapped_ref *ref, unsigned char tag[32])
{
	unsigned char buf[sizeof(((struct tok_key *)0)->label) + TOK_MAX_SPKI + 1];
	size_t idlen = strnlen(ref->cred_id, sizeof(((struct tok_key *)0)->label) - 1);
	size_t n = ref->spki_len <= TOK_MAX_SPKI ? ref->spki_len : TOK_MAX_SPKI;

	/* One-shot SHA-256 of ID, NUL, SPKI: the hit path's only hashing. An SPKI over the
	 * limit is refused by check_ref before it could be cached. */
	memcpy(buf, ref->cred_id, idlen);
	buf[idlen] = '\0';
	memcpy(buf + idlen + 1, ref->spki, n);
	SHA256(buf, idlen + 1 + n, tag);
}

static void put_len(unsigned char *p, size_t n)
{
	p[0] = (unsigned char)(n >> 8);
	p[1] = (unsigned char)n;
}

/* The digest of everything a first unwrap proves: SHA-256 of PROOF_TAG, then credential ID,
 * KEK ID, blob, public key and binding, each after its 2-byte length. Two refs share it only
 * when they are the same bytes. -1 when a field is over its bound (check_ref refuses it). */
static int proof_of(const struct tok_wrapped_ref *ref, unsigned char out[32])
{
	unsigned char buf[sizeof(PROOF_TAG) + 5 * 2 + sizeof(((struct tok_key *)0)->label) +
	                  TOK_KEK_ID_LEN + TOK_MAX_BLOB + TOK_MAX_SPKI + TOK_MAX_BINDING];
	const unsigned char *part[5];
	size_t len[5], n = sizeof(PROOF_TAG), i;

	part[0] = (const unsigned char *)ref->cred_id;
	len[0] = strnlen(ref->cred_id, sizeof(((struct tok_key *)0)->label));
	part[1] = ref->kek_id;
	len[1] = TOK_KEK_ID_LEN;
	part[2] = ref->blob;
	len[2] = ref->blob_len;
	part[3] = ref->spki;
	len[3] = ref->spki_len;
	part[4] = ref->binding;
	len[4] = ref->binding_len;
	if (len[0] == sizeof(((struct tok_key *)0)->label) || ref->kek_id == NULL ||
	    ref->blob == NULL || len[2] > TOK_MAX_BLOB || ref->spki == NULL ||
	    len[3] > TOK_MAX_SPKI || ref->binding == NULL || len[4] > TOK_MAX_BINDING)
		return -1;
	memcpy(buf, PROOF_TAG, sizeof(PROOF_TAG));
	for (i = 0; i < 5; i++) {
		put_len(buf + n, len[i]);
		memcpy(buf + n + 2, part[i], len[i]);
		n += 2 + len[i];
	}
	SHA256(buf, n, out);
	return 0;
}

/* Caller holds c->mu. */
static unsigned char *proven_slot(struct tok_wcache *c, const unsigned char proof[32])
{
	uint64_t v;

	memcpy(&v, proof + 8, sizeof(v)); /* not the bytes bucket_of uses: another digest */
	return c->proven[v & (c->nproven - 1)];
}

static int proven_has(struct tok_wcache *c, const unsigned char proof[32])
{
	int has;

	pthread_mutex_lock(&c->mu);
	has = CRYPTO_memcmp(proven_slot(c, proof), proof, 32) == 0;
	pthread_mutex_unlock(&c->mu);
	return has;
}

static void proven_add(struct tok_wcache *c, const unsigned char proof[32])
{
	pthread_mutex_lock(&c->mu);
	memcpy(proven_slot(c, proof), proof, 32);
	pthread_mutex_unlock(&c->mu);
}

static size_t bucket_of(const struct tok_wcache *c, const unsigned char tag[32])
{
	uint64_t v;

	memcpy(&v, tag, sizeof(v));
	return (size_t)(v & (c->nbuckets - 1));
}

static void wkey_free(struct wkey *e)
{
	if (e == NULL)
		return;
	EVP_PKEY_free(e->key.pub);
	free(e->blob);
	pthread_mutex_destroy(&e->mu);
	free(e);
}

/* Caller holds c->mu. */
static void list_unlink(struct tok_wcache *c, struct wkey *e)
{
	if (e->prev != NULL)
		e->prev->next = e->next;
	else
		c->head = e->next;
	if (e->next != NULL)
		e->next->prev = e->prev;
	else
		c->tail = e->prev;
	e->prev = e->next = NULL;
}

static void list_push(struct tok_wcache *c, struct wkey *e)
{
	e->prev = NULL;
	e->next = c->head;
	if (c->head != NULL)
		c->head->prev = e;
	c->head = e;
	if (c->tail == NULL)
		c->tail = e;
}

static struct wkey *table_find(struct tok_wcache *c, const unsigned char tag[32])
{
	struct wkey *e;

	for (e = c->buckets[bucket_of(c, tag)]; e != NULL; e = e->hnext)
		if (memcmp(e->tag, tag, 32) == 0)
			return e;
	return NULL;
}

/* Take e out of the table (caller holds c->mu); freed by its last holder. */
static struct wkey *table_remove(struct tok_wcache *c, struct wkey *e)
{
	struct wkey **pp;

	for (pp = &c->buckets[bucket_of(c, e->tag)]; *pp != NULL; pp = &(*pp)->hnext) {
		if (*pp == e) {
			*pp = e->hnext;
			break;
		}
	}
	list_unlink(c, e);
	e->in_table = 0;
	c->n--;
	if (e->refs == 0) {
		queue_destroy(c, e->key.priv, atomic_load(&e->hgen));
		return e; /* the caller frees it outside the lock */
	}
	return NULL;
}

int tok_wcache_new(struct token *tok, const char *kek_uri, unsigned capacity,
                   struct tok_wcache **out)
{
	struct tok_wcache *c = NULL;
	CK_ATTRIBUTE *attrs;
	CK_ULONG nattrs = 0, i;
	size_t nb = 16;
	int r = TOK_ERR_INTERNAL;

	*out = NULL;
	if (tok == NULL || kek_uri == NULL || capacity < 2)
		return TOK_ERR_BAD_INPUT;
	if ((c = calloc(1, sizeof(*c))) == NULL)
		return TOK_ERR_INTERNAL;
	c->tok = tok;
	c->cap = capacity;
	pthread_mutex_init(&c->mu, NULL);
	pthread_mutex_init(&c->smu, NULL);
	if ((c->uri = p11_kit_uri_new()) == NULL)
		goto out;
	r = TOK_ERR_BAD_INPUT;
	if (p11_kit_uri_parse(kek_uri, P11_KIT_URI_FOR_OBJECT_ON_TOKEN, c->uri) != P11_KIT_URI_OK ||
	    p11_kit_uri_any_unrecognized(c->uri))
		goto out;
	attrs = p11_kit_uri_get_attributes(c->uri, &nattrs);
	if (nattrs > WC_MAX_URI_ATTRS)
		goto out;
	c->secret_class = CKO_SECRET_KEY;
	for (i = 0; i < nattrs; i++) {
		if (attrs[i].type == CKA_CLASS || attrs[i].type == CKA_ID)
			continue; /* ours: a secret key, and the ID of the blob's KEK */
		c->tmpl[c->ntmpl++] = attrs[i];
	}
	c->tmpl[c->ntmpl].type = CKA_CLASS;
	c->tmpl[c->ntmpl].pValue = &c->secret_class;
	c->tmpl[c->ntmpl].ulValueLen = sizeof(c->secret_class);
	c->ntmpl++;
	r = TOK_ERR_INTERNAL;
	while (nb < (size_t)capacity * 2 && nb < ((size_t)1 << 24))
		nb *= 2;
	c->nproven = 16;
	while (c->nproven < (size_t)capacity * WC_PROVEN_PER_KEY && c->nproven < WC_MAX_PROVEN)
		c->nproven *= 2;
	/* All zero: no SHA-256 output is, as far as anyone will ever know. */
	if ((c->buckets = calloc(nb, sizeof(*c->buckets))) == NULL ||
	    (c->pend = calloc(WC_MAX_PENDING, sizeof(*c->pend))) == NULL ||
	    (c->proven = calloc(c->nproven, sizeof(*c->proven))) == NULL)
		goto out;
	c->nbuckets = nb;
	*out = c;
	c = NULL;
	r = TOK_OK;
out:
	tok_wcache_free(c);
	return r;
}

void tok_wcache_free(struct tok_wcache *c)
{
	struct wkey *e, *next;

	if (c == NULL)
		return;
	/* The module is closed (tok_close): its session objects went with it. Entries still
	 * held are a caller's bug; they are left rather than freed under it. */
	for (e = c->head; e != NULL; e = next) {
		next = e->next;
		if (e->refs == 0)
			wkey_free(e);
	}
	free(c->buckets);
	free(c->pend);
	free(c->proven);
	if (c->uri != NULL)
		p11_kit_uri_free(c->uri);
	pthread_mutex_destroy(&c->mu);
	pthread_mutex_destroy(&c->smu);
	free(c);
}

static void log_refusal(const struct tok_wrapped_ref *ref, const char *why)
{
	tok_log("wrapped key of credential %s refused: %s", ref->cred_id, why);
}

int tok_wrapped_get(struct tok_wcache *c, const struct tok_wrapped_ref *ref,
                    const struct tok_key **out)
{
	struct wkey *e = NULL, *had, *victim = NULL;
	EVP_PKEY *pub = NULL;
	unsigned char tag[32], proof[32];
	char err[256] = "";
	CK_OBJECT_HANDLE h = CK_INVALID_HANDLE;
	unsigned gen = 0;
	int r, proven = 0, provable;

	*out = NULL;
	if (c == NULL || ref == NULL || ref->cred_id == NULL || ref->spki == NULL)
		return TOK_ERR_INTERNAL;
	tag_of(ref, tag);
	pthread_mutex_lock(&c->mu);
	if ((had = table_find(c, tag)) != NULL) {
		had->refs++;
		list_unlink(c, had);
		list_push(c, had);
		c->hits++;
		pthread_mutex_unlock(&c->mu);
		*out = &had->key;
		return TOK_OK;
	}
	c->misses++;
	pthread_mutex_unlock(&c->mu);

	if ((e = calloc(1, sizeof(*e))) == NULL)
		return TOK_ERR_INTERNAL;
	pthread_mutex_init(&e->mu, NULL);
	e->c = c;
	e->key.wrapped = e;
	e->key.priv = CK_INVALID_HANDLE;
	memcpy(e->tag, tag, 32);
	snprintf(e->key.label, sizeof(e->key.label), "%s", ref->cred_id);
	provable = proof_of(ref, proof) == 0;
	proven = provable && proven_has(c, proof);
	if ((r = check_ref(ref, proven, &pub, &e->key, err, sizeof(err))) != TOK_OK)
		goto out;
	e->key.pub = pub;
	pub = NULL;
	if ((e->blob = malloc(ref->blob_len)) == NULL) {
		r = TOK_ERR_INTERNAL;
		goto out;
	}
	memcpy(e->blob, ref->blob, ref->blob_len);
	e->blob_len = ref->blob_len;
	memcpy(e->kek_id, ref->kek_id, TOK_KEK_ID_LEN);
	r = unwrap_on_worker(c, e->kek_id, e->blob, e->blob_len, e->key.type, 0, &h, &gen, err,
	                     sizeof(err));
	if (r != TOK_OK)
		goto out;
	e->key.priv = h;
	atomic_store(&e->hgen, gen);
	e->refs = 1; /* ours during the challenge */
	if (!proven) {
		if ((r = challenge(c->tok, &e->key, e->key.pub, err, sizeof(err))) != TOK_OK) {
			discard(c, h, gen);
			goto out;
		}
		if (provable)
			proven_add(c, proof);
	}
	pthread_mutex_lock(&c->mu);
	if (proven)
		c->proven_again++;
	if ((had = table_find(c, tag)) != NULL) {
		/* Another request unwrapped it meanwhile: keep theirs. */
		had->refs++;
		list_unlink(c, had);
		list_push(c, had);
		queue_destroy(c, h, gen);
		pthread_mutex_unlock(&c->mu);
		wkey_free(e);
		*out = &had->key;
		return TOK_OK;
	}
	if (c->n >= c->cap && c->tail != NULL) {
		victim = table_remove(c, c->tail);
		c->evictions++;
	}
	e->hnext = c->buckets[bucket_of(c, tag)];
	c->buckets[bucket_of(c, tag)] = e;
	e->in_table = 1;
	list_push(c, e);
	c->n++;
	pthread_mutex_unlock(&c->mu);
	wkey_free(victim);
	*out = &e->key;
	e = NULL;
	r = TOK_OK;
out:
	if (r == TOK_ERR_UNUSABLE) {
		log_refusal(ref, err);
		pthread_mutex_lock(&c->mu);
		c->refused++;
		pthread_mutex_unlock(&c->mu);
	} else if (r != TOK_OK && err[0] != '\0') {
		tok_log("wrapped key of credential %s: %s", ref->cred_id, err);
	}
	EVP_PKEY_free(pub);
	wkey_free(e);
	return r;
}

void tok_wrapped_put(struct tok_wcache *c, const struct tok_key *key)
{
	struct wkey *e;
	int gone = 0;

	if (c == NULL || key == NULL || key->wrapped == NULL)
		return;
	e = (struct wkey *)key->wrapped;
	pthread_mutex_lock(&c->mu);
	if (--e->refs == 0 && !e->in_table) {
		queue_destroy(c, e->key.priv, atomic_load(&e->hgen));
		gone = 1;
	}
	pthread_mutex_unlock(&c->mu);
	if (gone)
		wkey_free(e);
}

void tok_wrapped_hold(const struct tok_key *key)
{
	struct wkey *e = (struct wkey *)key->wrapped;

	pthread_mutex_lock(&e->c->mu);
	e->refs++;
	pthread_mutex_unlock(&e->c->mu);
}

void tok_wrapped_release(const struct tok_key *key)
{
	struct wkey *e = (struct wkey *)key->wrapped;

	tok_wrapped_put(e->c, key);
}

int tok_wrapped_fresh(struct token *tok, const struct tok_key *key)
{
	struct wkey *e = (struct wkey *)key->wrapped;
	unsigned gen = atomic_load(&tok->gen), hgen = 0;
	CK_OBJECT_HANDLE h = CK_INVALID_HANDLE;
	char err[256] = "";
	int r = TOK_OK;

	if (atomic_load(&e->hgen) == gen)
		return TOK_OK;
	/* The token came back: the session object died with the old session. The blob was
	 * checked when it was first unwrapped; the attributes are checked again. */
	pthread_mutex_lock(&e->mu);
	if (atomic_load(&e->hgen) != gen) {
		r = unwrap_locked(e->c, e->kek_id, e->blob, e->blob_len, e->key.type, 0, &h, &hgen,
		                  err, sizeof(err));
		if (r == TOK_OK) {
			__atomic_store_n(&e->key.priv, h, __ATOMIC_RELAXED);
			atomic_store(&e->hgen, hgen);
		} else {
			tok_log("wrapped key of credential %s after the token's outage: %s",
			        e->key.label, err);
		}
	}
	pthread_mutex_unlock(&e->mu);
	return r;
}

void tok_wcache_stats(struct tok_wcache *c, struct tok_wcache_stats *out)
{
	memset(out, 0, sizeof(*out));
	if (c == NULL)
		return;
	pthread_mutex_lock(&c->mu);
	out->hits = c->hits;
	out->misses = c->misses;
	out->evictions = c->evictions;
	out->refused = c->refused;
	out->proven_again = c->proven_again;
	out->held = c->n;
	out->capacity = c->cap;
	pthread_mutex_unlock(&c->mu);
}

/* ---- provisioning: the caller's own session (tok_session), one thread ---- */

static int label_of_uri(struct tok_wcache *c, const CK_ATTRIBUTE **label)
{
	CK_ULONG i;

	for (i = 0; i < c->ntmpl; i++) {
		if (c->tmpl[i].type == CKA_LABEL && c->tmpl[i].ulValueLen > 0) {
			*label = &c->tmpl[i];
			return TOK_OK;
		}
	}
	return TOK_ERR_BAD_INPUT;
}

int tok_kek_create(struct tok_wcache *c, unsigned char id[TOK_KEK_ID_LEN], char *err, size_t errlen)
{
	CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
	CK_KEY_TYPE kt = CKK_AES;
	CK_ULONG vlen = WC_KEK_BITS / 8, got_len = 0;
	CK_BBOOL t = CK_TRUE, f = CK_FALSE;
	CK_MECHANISM mech = {CKM_AES_KEY_GEN, NULL, 0};
	CK_OBJECT_HANDLE h = CK_INVALID_HANDLE;
	CK_SESSION_HANDLE s;
	const CK_ATTRIBUTE *label;
	CK_ATTRIBUTE vl = {CKA_VALUE_LEN, &got_len, sizeof(got_len)};
	CK_RV rv;
	int r;

	if (label_of_uri(c, &label) != TOK_OK) {
		tok_seterr(err, errlen, "keys.kek must name the KEK's label (object=...)");
		return TOK_ERR_BAD_INPUT;
	}
	if (RAND_bytes(id, TOK_KEK_ID_LEN) != 1)
		return TOK_ERR_INTERNAL;
	if ((r = tok_session(c->tok, &s)) != TOK_OK) {
		tok_seterr(err, errlen, "session: %s", tok_strerror(r));
		return r;
	}
	CK_ATTRIBUTE tmpl[] = {
	    {CKA_CLASS, &cls, sizeof(cls)},
	    {CKA_KEY_TYPE, &kt, sizeof(kt)},
	    {CKA_VALUE_LEN, &vlen, sizeof(vlen)},
	    {CKA_TOKEN, &t, sizeof(t)},
	    {CKA_PRIVATE, &t, sizeof(t)},
	    {CKA_SENSITIVE, &t, sizeof(t)},
	    {CKA_EXTRACTABLE, &f, sizeof(f)},
	    {CKA_WRAP, &t, sizeof(t)},
	    {CKA_UNWRAP, &t, sizeof(t)},
	    {CKA_ENCRYPT, &f, sizeof(f)},
	    {CKA_DECRYPT, &f, sizeof(f)},
	    {CKA_SIGN, &f, sizeof(f)},
	    {CKA_VERIFY, &f, sizeof(f)},
	    {CKA_DERIVE, &f, sizeof(f)},
	    {CKA_LABEL, label->pValue, label->ulValueLen},
	    {CKA_ID, id, TOK_KEK_ID_LEN},
	};
	rv = c->tok->fl->C_GenerateKey(s, &mech, tmpl, NELEM(tmpl), &h);
	if (rv != CKR_OK) {
		tok_seterr(err, errlen, "C_GenerateKey (AES-256): %s", p11_kit_strerror(rv));
		return tok_err_from_rv(rv);
	}
	r = check_bools(c->tok, s, h, kek_want, NELEM(kek_want), "KEK", err, errlen);
	if (r == TOK_OK && (c->tok->fl->C_GetAttributeValue(s, h, &vl, 1) != CKR_OK ||
	                    got_len != WC_KEK_BITS / 8)) {
		tok_seterr(err, errlen, "KEK: CKA_VALUE_LEN does not read back as 32");
		r = TOK_ERR_UNUSABLE;
	}
	if (r != TOK_OK)
		c->tok->fl->C_DestroyObject(s, h);
	return r;
}

int tok_kek_list(struct tok_wcache *c, unsigned char (*ids)[TOK_KEK_ID_LEN], size_t max, size_t *n)
{
	CK_OBJECT_HANDLE objs[WC_MAX_KEKS];
	CK_ULONG found = 0, i;
	CK_SESSION_HANDLE s;
	int r;

	*n = 0;
	if ((r = tok_session(c->tok, &s)) != TOK_OK)
		return r;
	if ((r = kek_find(c, s, NULL, objs, WC_MAX_KEKS, &found)) != TOK_OK)
		return r;
	for (i = 0; i < found; i++) {
		unsigned char buf[64];
		CK_ATTRIBUTE a = {CKA_ID, buf, sizeof(buf)};

		if (c->tok->fl->C_GetAttributeValue(s, objs[i], &a, 1) != CKR_OK ||
		    a.ulValueLen != TOK_KEK_ID_LEN)
			continue; /* not one of ours */
		if (*n < max)
			memcpy(ids[*n], buf, TOK_KEK_ID_LEN);
		(*n)++;
	}
	return TOK_OK;
}

int tok_kek_check(struct tok_wcache *c, const unsigned char id[TOK_KEK_ID_LEN], char *err,
                  size_t errlen)
{
	CK_OBJECT_HANDLE h;
	CK_SESSION_HANDLE s;
	int r;

	if ((r = tok_use_begin(c->tok)) != TOK_OK)
		return r;
	pthread_mutex_lock(&c->smu);
	r = wc_session(c, &s);
	if (r == TOK_OK)
		r = kek_handle(c, s, id, &h, err, errlen);
	if (r == TOK_ERR_UNUSABLE && strstr(err, "not on the token") != NULL)
		r = TOK_ERR_NOT_FOUND;
	pthread_mutex_unlock(&c->smu);
	tok_use_end(c->tok);
	return r;
}

int tok_kek_destroy(struct tok_wcache *c, const unsigned char id[TOK_KEK_ID_LEN])
{
	CK_OBJECT_HANDLE objs[2];
	CK_ULONG found = 0;
	CK_SESSION_HANDLE s;
	CK_RV rv;
	int r;
	size_t i;

	if ((r = tok_session(c->tok, &s)) != TOK_OK)
		return r;
	if ((r = kek_find(c, s, id, objs, 2, &found)) != TOK_OK)
		return r;
	if (found != 1)
		return found == 0 ? TOK_ERR_NOT_FOUND : TOK_ERR_BAD_INPUT;
	if ((rv = c->tok->fl->C_DestroyObject(s, objs[0])) != CKR_OK)
		return tok_err_from_rv(rv);
	pthread_mutex_lock(&c->smu);
	for (i = 0; i < WC_MAX_KEKS; i++)
		if (memcmp(c->keks[i].id, id, TOK_KEK_ID_LEN) == 0)
			c->keks[i].used = 0;
	pthread_mutex_unlock(&c->smu);
	return TOK_OK;
}

/* Read an attribute of at most max bytes into a fresh buffer. */
static int attr_read(struct token *tok, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE h,
                     CK_ATTRIBUTE_TYPE type, size_t max, unsigned char **buf, size_t *len)
{
	CK_ATTRIBUTE a = {type, NULL, 0};
	CK_RV rv;

	*buf = NULL;
	*len = 0;
	rv = tok->fl->C_GetAttributeValue(s, h, &a, 1);
	if (rv != CKR_OK || a.ulValueLen == 0 || a.ulValueLen > max)
		return rv == CKR_OK ? TOK_ERR_BAD_INPUT : tok_err_from_rv(rv);
	if ((a.pValue = *buf = malloc(a.ulValueLen)) == NULL)
		return TOK_ERR_INTERNAL;
	rv = tok->fl->C_GetAttributeValue(s, h, &a, 1);
	if (rv != CKR_OK) {
		free(*buf);
		*buf = NULL;
		return tok_err_from_rv(rv);
	}
	*len = a.ulValueLen;
	return TOK_OK;
}

/* The generated public key object as SubjectPublicKeyInfo DER. */
static int spki_of(struct token *tok, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE pub,
                   enum tok_keytype type, int curve_nid, unsigned char **spki, size_t *len)
{
	unsigned char *a = NULL, *b = NULL, *der = NULL;
	size_t alen = 0, blen = 0;
	const unsigned char *p;
	ASN1_OCTET_STRING *os = NULL;
	OSSL_PARAM_BLD *bld = NULL;
	OSSL_PARAM *op = NULL;
	EVP_PKEY_CTX *ctx = NULL;
	EVP_PKEY *pk = NULL;
	BIGNUM *n = NULL, *e = NULL;
	int dlen, r;

	*spki = NULL;
	*len = 0;
	if ((bld = OSSL_PARAM_BLD_new()) == NULL)
		return TOK_ERR_INTERNAL;
	if (type == TOK_KEY_EC) {
		if ((r = attr_read(tok, s, pub, CKA_EC_POINT, 256, &a, &alen)) != TOK_OK)
			goto out;
		r = TOK_ERR_INTERNAL;
		p = a;
		if ((os = d2i_ASN1_OCTET_STRING(NULL, &p, (long)alen)) == NULL || p != a + alen)
			goto out;
		if (!OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME,
		                                     OBJ_nid2sn(curve_nid), 0) ||
		    !OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY,
		                                      ASN1_STRING_get0_data(os),
		                                      (size_t)ASN1_STRING_length(os)))
			goto out;
	} else {
		if ((r = attr_read(tok, s, pub, CKA_MODULUS, 1024, &a, &alen)) != TOK_OK ||
		    (r = attr_read(tok, s, pub, CKA_PUBLIC_EXPONENT, 16, &b, &blen)) != TOK_OK)
			goto out;
		r = TOK_ERR_INTERNAL;
		if ((n = BN_bin2bn(a, (int)alen, NULL)) == NULL ||
		    (e = BN_bin2bn(b, (int)blen, NULL)) == NULL ||
		    !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, n) ||
		    !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, e))
			goto out;
	}
	r = TOK_ERR_INTERNAL;
	if ((op = OSSL_PARAM_BLD_to_param(bld)) == NULL ||
	    (ctx = EVP_PKEY_CTX_new_from_name(NULL, type == TOK_KEY_EC ? "EC" : "RSA", NULL)) ==
	        NULL ||
	    EVP_PKEY_fromdata_init(ctx) != 1 ||
	    EVP_PKEY_fromdata(ctx, &pk, EVP_PKEY_PUBLIC_KEY, op) != 1)
		goto out;
	if ((dlen = i2d_PUBKEY(pk, &der)) <= 0 || (size_t)dlen > TOK_MAX_SPKI)
		goto out;
	if ((*spki = malloc((size_t)dlen)) == NULL)
		goto out;
	memcpy(*spki, der, (size_t)dlen);
	*len = (size_t)dlen;
	r = TOK_OK;
out:
	ERR_clear_error();
	OPENSSL_free(der);
	EVP_PKEY_free(pk);
	EVP_PKEY_CTX_free(ctx);
	OSSL_PARAM_free(op);
	OSSL_PARAM_BLD_free(bld);
	ASN1_OCTET_STRING_free(os);
	BN_free(n);
	BN_free(e);
	free(a);
	free(b);
	return r;
}

/* C_Sign of a SHA-256 digest with a session key on the caller's session; DER for ECDSA. */
static int sign_direct(struct token *tok, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE priv,
                       enum tok_keytype type, const unsigned char dig[32], unsigned char **sig,
                       size_t *siglen)
{
	CK_MECHANISM mech = {type == TOK_KEY_EC ? CKM_ECDSA : CKM_RSA_PKCS, NULL, 0};
	unsigned char in[TOK_MAX_DIGEST + 32], out[TOK_MAX_SIG];
	size_t inlen = 32;
	CK_ULONG outlen = sizeof(out);
	CK_RV rv;
	int r;

	*sig = NULL;
	*siglen = 0;
	if (type == TOK_KEY_EC) {
		memcpy(in, dig, 32);
	} else if ((r = tok_digestinfo(NID_sha256, dig, 32, in, &inlen)) != TOK_OK) {
		return r;
	}
	if ((rv = tok->fl->C_SignInit(s, &mech, priv)) != CKR_OK ||
	    (rv = tok->fl->C_Sign(s, in, (CK_ULONG)inlen, out, &outlen)) != CKR_OK)
		return tok_err_from_rv(rv);
	if ((*sig = malloc(TOK_MAX_SIG)) == NULL)
		return TOK_ERR_INTERNAL;
	if (type == TOK_KEY_EC) {
		r = tok_ecdsa_raw_to_der(out, outlen, *sig, siglen);
		if (r != TOK_OK) {
			free(*sig);
			*sig = NULL;
		}
		return r;
	}
	memcpy(*sig, out, outlen);
	*siglen = outlen;
	return TOK_OK;
}

/* C_WrapKey with the KEK, two calls (length, then data). */
static int wrap_with(struct token *tok, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE kek,
                     CK_OBJECT_HANDLE priv, unsigned char **blob, size_t *len)
{
	CK_MECHANISM mech = {CKM_AES_KEY_WRAP_PAD, NULL, 0};
	CK_ULONG n = 0;
	CK_RV rv;

	*blob = NULL;
	*len = 0;
	rv = tok->fl->C_WrapKey(s, &mech, kek, priv, NULL, &n);
	if (rv != CKR_OK)
		return tok_err_from_rv(rv);
	if (n == 0 || n > TOK_MAX_BLOB || (*blob = malloc(n)) == NULL)
		return TOK_ERR_INTERNAL;
	rv = tok->fl->C_WrapKey(s, &mech, kek, priv, *blob, &n);
	if (rv != CKR_OK) {
		free(*blob);
		*blob = NULL;
		return tok_err_from_rv(rv);
	}
	*len = n;
	return TOK_OK;
}

/* The KEK handle on the caller's own thread (provisioning). */
static int kek_for_admin(struct tok_wcache *c, const unsigned char *id, CK_OBJECT_HANDLE *kek,
                         char *err, size_t errlen)
{
	CK_SESSION_HANDLE s;
	int r;

	if ((r = tok_use_begin(c->tok)) != TOK_OK)
		return r;
	pthread_mutex_lock(&c->smu);
	r = wc_session(c, &s);
	if (r == TOK_OK)
		r = kek_handle(c, s, id, kek, err, errlen);
	pthread_mutex_unlock(&c->smu);
	tok_use_end(c->tok);
	return r;
}

int tok_wrapped_generate(struct tok_wcache *c, const unsigned char kek_id[TOK_KEK_ID_LEN],
                         enum tok_keytype type, int curve_nid, unsigned bits, const char *cred_id,
                         struct tok_wrapped_new *out, char *err, size_t errlen)
{
	struct token *tok = c->tok;
	CK_OBJECT_CLASS priv_class = CKO_PRIVATE_KEY, pub_class = CKO_PUBLIC_KEY;
	CK_KEY_TYPE kt = type == TOK_KEY_EC ? CKK_EC : CKK_RSA;
	CK_BBOOL t = CK_TRUE, f = CK_FALSE;
	CK_ULONG mbits = bits;
	CK_BYTE exponent[] = {0x01, 0x00, 0x01};
	CK_MECHANISM mech = {type == TOK_KEY_EC ? CKM_EC_KEY_PAIR_GEN : CKM_RSA_PKCS_KEY_PAIR_GEN,
	                     NULL, 0};
	CK_OBJECT_HANDLE priv = CK_INVALID_HANDLE, pub = CK_INVALID_HANDLE, kek;
	CK_SESSION_HANDLE s;
	unsigned char ecparams[16], *p, dig[32];
	EVP_PKEY *pk = NULL;
	ASN1_OBJECT *oid;
	CK_ULONG npub = 6;
	CK_RV rv;
	int n, r;

	memset(out, 0, sizeof(*out));
	memcpy(out->kek_id, kek_id, TOK_KEK_ID_LEN);
	CK_ATTRIBUTE priv_t[] = {
	    {CKA_CLASS, &priv_class, sizeof(priv_class)},
	    {CKA_KEY_TYPE, &kt, sizeof(kt)},
	    {CKA_TOKEN, &f, sizeof(f)},
	    {CKA_PRIVATE, &t, sizeof(t)},
	    {CKA_SENSITIVE, &t, sizeof(t)},
	    /* Only so that the KEK can wrap it, now; the object is destroyed right after. */
	    {CKA_EXTRACTABLE, &t, sizeof(t)},
	    {CKA_SIGN, &t, sizeof(t)},
	    {CKA_DECRYPT, &f, sizeof(f)},
	    {CKA_UNWRAP, &f, sizeof(f)},
	    {CKA_DERIVE, &f, sizeof(f)},
	};
	CK_ATTRIBUTE pub_t[] = {
	    {CKA_CLASS, &pub_class, sizeof(pub_class)},
	    {CKA_KEY_TYPE, &kt, sizeof(kt)},
	    {CKA_TOKEN, &f, sizeof(f)},
	    {CKA_VERIFY, &t, sizeof(t)},
	    {CKA_ENCRYPT, &f, sizeof(f)},
	    {CKA_WRAP, &f, sizeof(f)},
	    {0, NULL, 0},
	    {0, NULL, 0},
	};
	if ((r = kek_for_admin(c, kek_id, &kek, err, errlen)) != TOK_OK)
		return r;
	if (type == TOK_KEY_EC) {
		oid = OBJ_nid2obj(curve_nid);
		n = oid != NULL ? i2d_ASN1_OBJECT(oid, NULL) : -1;
		if (n <= 0 || (size_t)n > sizeof(ecparams))
			return TOK_ERR_BAD_INPUT;
		p = ecparams;
		i2d_ASN1_OBJECT(oid, &p);
		pub_t[npub++] = (CK_ATTRIBUTE){CKA_EC_PARAMS, ecparams, (CK_ULONG)n};
	} else {
		pub_t[npub++] = (CK_ATTRIBUTE){CKA_MODULUS_BITS, &mbits, sizeof(mbits)};
		pub_t[npub++] = (CK_ATTRIBUTE){CKA_PUBLIC_EXPONENT, exponent, sizeof(exponent)};
	}
	if ((r = tok_session(tok, &s)) != TOK_OK) {
		tok_seterr(err, errlen, "session: %s", tok_strerror(r));
		return r;
	}
	rv = tok->fl->C_GenerateKeyPair(s, &mech, pub_t, npub, priv_t, NELEM(priv_t), &pub, &priv);
	if (rv != CKR_OK) {
		tok_seterr(err, errlen, "C_GenerateKeyPair: %s", p11_kit_strerror(rv));
		r = tok_err_from_rv(rv);
		goto out;
	}
	if ((r = check_bools(tok, s, priv, gen_priv_want, NELEM(gen_priv_want), "private key", err,
	                     errlen)) != TOK_OK ||
	    (r = check_bools(tok, s, pub, gen_pub_want, NELEM(gen_pub_want), "public key", err,
	                     errlen)) != TOK_OK)
		goto out;
	if ((r = spki_of(tok, s, pub, type, curve_nid, &out->spki, &out->spki_len)) != TOK_OK) {
		tok_seterr(err, errlen, "the public key cannot be read: %s", tok_strerror(r));
		goto out;
	}
	if ((r = tok_wrapped_binding_digest(cred_id, out->spki, out->spki_len, dig)) != TOK_OK)
		goto out;
	if ((r = sign_direct(tok, s, priv, type, dig, &out->binding, &out->binding_len)) !=
	    TOK_OK) {
		tok_seterr(err, errlen, "the binding signature failed: %s", tok_strerror(r));
		goto out;
	}
	r = TOK_ERR_INTERNAL;
	if ((pk = tok_spki_parse(out->spki, out->spki_len)) == NULL ||
	    !verify_digest(pk, dig, out->binding, out->binding_len)) {
		tok_seterr(err, errlen, "the binding signature does not verify");
		goto out;
	}
	if ((r = wrap_with(tok, s, kek, priv, &out->blob, &out->blob_len)) != TOK_OK) {
		tok_seterr(err, errlen, "C_WrapKey: %s", tok_strerror(r));
		goto out;
	}
	r = TOK_OK;
out:
	ERR_clear_error();
	EVP_PKEY_free(pk);
	if (priv != CK_INVALID_HANDLE)
		tok->fl->C_DestroyObject(s, priv);
	if (pub != CK_INVALID_HANDLE)
		tok->fl->C_DestroyObject(s, pub);
	if (r != TOK_OK)
		tok_wrapped_new_clear(out);
	return r;
}

/* A key unwrapped and checked as for signing, outside the table (provisioning): *out is
 * released with tok_wrapped_put. */
static int unwrap_checked(struct tok_wcache *c, const unsigned char *kek_id,
                          const struct tok_wrapped_ref *ref, const unsigned char *blob,
                          size_t blob_len, int extractable, struct wkey **out, char *err,
                          size_t errlen)
{
	struct wkey *e;
	EVP_PKEY *pub = NULL;
	unsigned gen = 0;
	int r;

	*out = NULL;
	if ((e = calloc(1, sizeof(*e))) == NULL)
		return TOK_ERR_INTERNAL;
	pthread_mutex_init(&e->mu, NULL);
	e->c = c;
	e->key.wrapped = e;
	e->key.priv = CK_INVALID_HANDLE;
	e->refs = 1;
	snprintf(e->key.label, sizeof(e->key.label), "%s", ref->cred_id);
	if ((r = check_ref(ref, 0, &pub, &e->key, err, errlen)) != TOK_OK)
		goto out;
	e->key.pub = pub;
	r = TOK_ERR_INTERNAL;
	if ((e->blob = malloc(blob_len)) == NULL)
		goto out;
	memcpy(e->blob, blob, blob_len);
	e->blob_len = blob_len;
	memcpy(e->kek_id, kek_id, TOK_KEK_ID_LEN);
	r = unwrap_on_worker(c, kek_id, blob, blob_len, e->key.type, extractable, &e->key.priv,
	                     &gen, err, errlen);
	atomic_store(&e->hgen, gen);
	if (r == TOK_OK)
		r = challenge(c->tok, &e->key, pub, err, errlen);
out:
	if (r != TOK_OK) {
		tok_wrapped_put(c, &e->key);
		return r;
	}
	*out = e;
	return TOK_OK;
}

int tok_wrapped_rewrap(struct tok_wcache *c, const struct tok_wrapped_ref *ref,
                       const unsigned char new_kek[TOK_KEK_ID_LEN], unsigned char **blob,
                       size_t *blob_len, char *err, size_t errlen)
{
	struct wkey *e = NULL, *e2 = NULL;
	CK_OBJECT_HANDLE kek;
	CK_SESSION_HANDLE s;
	unsigned char *nb = NULL;
	size_t nlen = 0;
	int r;

	*blob = NULL;
	*blob_len = 0;
	if ((r = kek_for_admin(c, new_kek, &kek, err, errlen)) != TOK_OK)
		goto out;
	if ((r = unwrap_checked(c, ref->kek_id, ref, ref->blob, ref->blob_len, 1, &e, err,
	                        errlen)) != TOK_OK)
		goto out;
	if ((r = tok_use_begin(c->tok)) != TOK_OK)
		goto out;
	pthread_mutex_lock(&c->smu);
	r = wc_session(c, &s);
	if (r == TOK_OK && atomic_load(&e->hgen) == c->sess_gen) {
		r = wrap_with(c->tok, s, kek, e->key.priv, &nb, &nlen);
		/* The extractable copy goes at once, not by the queue. */
		c->tok->fl->C_DestroyObject(s, e->key.priv);
		e->key.priv = CK_INVALID_HANDLE;
	} else if (r == TOK_OK) {
		r = TOK_ERR_UNAVAILABLE;
	}
	pthread_mutex_unlock(&c->smu);
	tok_use_end(c->tok);
	if (r != TOK_OK) {
		tok_seterr(err, errlen, "C_WrapKey: %s", tok_strerror(r));
		goto out;
	}
	/* The new blob must open under the new KEK into the same key before the old goes. */
	if ((r = unwrap_checked(c, new_kek, ref, nb, nlen, 0, &e2, err, errlen)) != TOK_OK)
		goto out;
	*blob = nb;
	*blob_len = nlen;
	nb = NULL;
	r = TOK_OK;
out:
	if (e != NULL)
		tok_wrapped_put(c, &e->key);
	if (e2 != NULL)
		tok_wrapped_put(c, &e2->key);
	free(nb);
	return r;
}
