/* Signing a digest with a cached key on the calling thread's session: the hot path.
 *
 * Per signature: the state check and the read side of op_lock, one pthread_getspecific,
 * C_SignInit (and the context-specific C_Login for CKA_ALWAYS_AUTHENTICATE keys) and C_Sign,
 * and for ECDSA the DER conversion. A token that is down is not entered: TOK_ERR_UNAVAILABLE
 * at once. Inputs are checked before the token sees them, so bad requests cost nothing on
 * the token and cannot leave an operation half-open. */
#include <string.h>

#include <openssl/asn1.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/objects.h>
#include <openssl/x509.h>

#include "pkcs11/internal.h"

/* Largest EC field iamsign could meet (P-521), bounding raw r||s. */
#define TOK_EC_MAX_FIELD 66

struct hash_info {
	int nid;
	size_t len;
	CK_MECHANISM_TYPE ckm;
	CK_RSA_PKCS_MGF_TYPE mgf;
};

static const struct hash_info hashes[] = {
    {NID_sha256, 32, CKM_SHA256, CKG_MGF1_SHA256},
    {NID_sha384, 48, CKM_SHA384, CKG_MGF1_SHA384},
    {NID_sha512, 64, CKM_SHA512, CKG_MGF1_SHA512},
};

static const struct hash_info *hash_find(int nid)
{
	size_t i;

	for (i = 0; i < sizeof(hashes) / sizeof(hashes[0]); i++)
		if (hashes[i].nid == nid)
			return &hashes[i];
	return NULL;
}

int tok_ecdsa_raw_to_der(const uint8_t *raw, size_t rawlen, uint8_t *der, size_t *derlen)
{
	int r = TOK_ERR_BAD_INPUT;
	BIGNUM *br = NULL, *bs = NULL;
	ECDSA_SIG *es = NULL;
	unsigned char *p;
	size_t half;
	int n;

	if (derlen != NULL)
		*derlen = 0;
	if (raw == NULL || der == NULL || derlen == NULL)
		return TOK_ERR_BAD_INPUT;
	if (rawlen == 0 || rawlen % 2 != 0 || rawlen > 2 * TOK_EC_MAX_FIELD)
		return TOK_ERR_BAD_INPUT;
	half = rawlen / 2;

	r = TOK_ERR_INTERNAL;
	br = BN_bin2bn(raw, (int)half, NULL);
	bs = BN_bin2bn(raw + half, (int)half, NULL);
	es = ECDSA_SIG_new();
	if (br == NULL || bs == NULL || es == NULL)
		goto out;
	if (ECDSA_SIG_set0(es, br, bs) != 1)
		goto out;
	br = bs = NULL; /* owned by es now */
	n = i2d_ECDSA_SIG(es, NULL);
	if (n <= 0 || (size_t)n > rawlen + 16)
		goto out;
	p = der;
	if (i2d_ECDSA_SIG(es, &p) != n)
		goto out;
	*derlen = (size_t)n;
	r = TOK_OK;
out:
	ECDSA_SIG_free(es);
	BN_free(br);
	BN_free(bs);
	return r;
}

int tok_digestinfo(int hash_nid, const uint8_t *dig, size_t dlen, uint8_t *out, size_t *outlen)
{
	int r = TOK_ERR_BAD_INPUT;
	const struct hash_info *h;
	X509_SIG *xs = NULL;
	X509_ALGOR *alg = NULL;
	ASN1_OCTET_STRING *os = NULL;
	ASN1_OBJECT *obj;
	unsigned char *p;
	int n;

	if (outlen != NULL)
		*outlen = 0;
	if (dig == NULL || out == NULL || outlen == NULL)
		goto out;
	h = hash_find(hash_nid);
	if (h == NULL || dlen != h->len)
		goto out;

	r = TOK_ERR_INTERNAL;
	obj = OBJ_nid2obj(hash_nid);
	xs = X509_SIG_new();
	if (obj == NULL || xs == NULL)
		goto out;
	X509_SIG_getm(xs, &alg, &os);
	/* RFC 8017 9.2 note 1: parameters present as NULL, as every verifier expects. */
	if (X509_ALGOR_set0(alg, obj, V_ASN1_NULL, NULL) != 1)
		goto out;
	if (ASN1_OCTET_STRING_set(os, dig, (int)dlen) != 1)
		goto out;
	n = i2d_X509_SIG(xs, NULL);
	if (n <= 0 || (size_t)n > dlen + 32)
		goto out;
	p = out;
	if (i2d_X509_SIG(xs, &p) != n)
		goto out;
	*outlen = (size_t)n;
	r = TOK_OK;
out:
	X509_SIG_free(xs);
	return r;
}

int tok_sign_digest(struct token *tok, const struct tok_key *key, const struct tok_sign_params *p,
                    const uint8_t *dig, size_t dlen, uint8_t *sig, size_t *siglen)
{
	int r = TOK_ERR_BAD_INPUT;
	const struct hash_info *h, *mgf;
	/* ECDSA: raw r||s from the token; PKCS#1 v1.5: the DigestInfo to sign. */
	uint8_t buf[2 * TOK_EC_MAX_FIELD > TOK_MAX_DIGEST + 32 ? 2 * TOK_EC_MAX_FIELD
	                                                       : TOK_MAX_DIGEST + 32];
	size_t dilen = 0, emlen, modlen;
	CK_MECHANISM mech;
	CK_RSA_PKCS_PSS_PARAMS pss;
	CK_BYTE_PTR in, outp;
	CK_ULONG inlen, outlen;
	struct tok_sess *ts = NULL;
	CK_OBJECT_HANDLE priv;
	CK_FUNCTION_LIST *fl;
	CK_RV rv = CKR_OK;
	const char *pin;
	size_t pinlen = 0;

	if (siglen != NULL)
		*siglen = 0;
	if (tok == NULL || key == NULL || p == NULL || dig == NULL || sig == NULL || siglen == NULL)
		return TOK_ERR_INTERNAL;
	h = hash_find(p->hash_nid);
	if (h == NULL || dlen != h->len)
		goto out;
	modlen = (key->bits + 7) / 8;

	mech.pParameter = NULL;
	mech.ulParameterLen = 0;
	in = (CK_BYTE_PTR)dig;
	inlen = (CK_ULONG)dlen;
	outp = sig;
	outlen = TOK_MAX_SIG;
	switch (p->scheme) {
	case TOK_ECDSA:
		if (key->type != TOK_KEY_EC || 2 * modlen > sizeof(buf))
			goto out;
		mech.mechanism = CKM_ECDSA;
		outp = buf;
		outlen = sizeof(buf);
		break;
	case TOK_RSA_PKCS1:
		if (key->type != TOK_KEY_RSA || modlen > TOK_MAX_SIG)
			goto out;
		r = tok_digestinfo(h->nid, dig, dlen, buf, &dilen);
		if (r != TOK_OK)
			goto out;
		r = TOK_ERR_BAD_INPUT;
		mech.mechanism = CKM_RSA_PKCS;
		in = buf;
		inlen = (CK_ULONG)dilen;
		break;
	case TOK_RSA_PSS:
		/* bits >= 2 keeps "bits - 1" below from wrapping. */
		if (key->type != TOK_KEY_RSA || modlen > TOK_MAX_SIG || key->bits < 2)
			goto out;
		mgf = hash_find(p->mgf1_nid);
		if (mgf == NULL)
			goto out;
		/* RFC 8017 9.1.1: emLen >= hLen + sLen + 2, else the token refuses it anyway, with
		 * an error that would read as "mechanism unsupported". */
		emlen = (key->bits - 1 + 7) / 8;
		if (p->salt_len > emlen || emlen - p->salt_len < h->len + 2)
			goto out;
		pss.hashAlg = h->ckm;
		pss.mgf = mgf->mgf;
		pss.sLen = (CK_ULONG)p->salt_len;
		mech.mechanism = CKM_RSA_PKCS_PSS;
		mech.pParameter = &pss;
		mech.ulParameterLen = sizeof(pss);
		break;
	default:
		goto out;
	}

	r = tok_use_begin(tok);
	if (r != TOK_OK)
		goto out;
	r = tok_key_fresh(tok, key);
	if (r == TOK_OK)
		r = tok_sess_get(tok, &ts);
	if (r != TOK_OK) {
		tok_use_end(tok);
		goto out;
	}
	fl = tok->fl;
	priv = __atomic_load_n(&key->priv, __ATOMIC_RELAXED);
	atomic_store(&ts->busy_since, tok_now_ms());
	rv = fl->C_SignInit(ts->h, &mech, priv);
	if (rv == CKR_OK && key->always_auth) {
		/* CKA_ALWAYS_AUTHENTICATE: the user login does not cover this key; one login per
		 * signature, between C_SignInit and C_Sign. */
		pin = tok_pin(tok, &pinlen);
		if (pin == NULL) {
			r = TOK_ERR_PIN;
			tok_session_failed(tok, CKR_OPERATION_ACTIVE);
			goto done;
		}
		rv = fl->C_Login(ts->h, CKU_CONTEXT_SPECIFIC, (CK_UTF8CHAR *)pin, (CK_ULONG)pinlen);
		if (rv != CKR_OK) {
			r = tok_login_failed(tok, CKU_CONTEXT_SPECIFIC, rv);
			if (r == TOK_ERR_UNAVAILABLE)
				tok_mark_down(tok, ts->gen,
				              "context-specific login lost the token");
			/* The signing operation is still open on the session: close it. */
			tok_session_failed(tok, CKR_OPERATION_ACTIVE);
			goto done;
		}
	}
	if (rv == CKR_OK)
		rv = fl->C_Sign(ts->h, in, inlen, outp, &outlen);
	atomic_store(&ts->busy_since, 0);
	if (rv != CKR_OK && tok->removable &&
	    (rv == CKR_GENERAL_ERROR || rv == CKR_FUNCTION_FAILED)) {
		/* A card says this when it was pulled mid-APDU (before PC/SC tells us) or lost
		 * its login to a reset by another PC/SC client: both are "log in again", and the
		 * request was checked before it got here. */
		tok_mark_down_settle(tok, ts->gen, "the card failed a signature",
		                     TOK_CARD_SETTLE_MS);
		tok_session_failed(tok, rv);
		r = TOK_ERR_UNAVAILABLE;
	} else if (rv != CKR_OK) {
		r = tok_session_failed(tok, rv);
	}
done:
	tok_use_end(tok);
	if (r != TOK_OK || rv != CKR_OK) {
		if (r == TOK_OK)
			r = TOK_ERR_INTERNAL;
		goto out;
	}

	r = TOK_ERR_INTERNAL;
	if (p->scheme == TOK_ECDSA) {
		/* r||s, each exactly the field size: anything else is not a signature we know. */
		if (outlen != 2 * modlen)
			goto out;
		r = tok_ecdsa_raw_to_der(buf, outlen, sig, siglen);
		goto out;
	}
	if (outlen != modlen)
		goto out;
	*siglen = outlen;
	r = TOK_OK;
out:
	return r;
}
