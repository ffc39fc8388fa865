/* Signing a digest with a cached key on the calling thread's session: the hot path.
 *
 * Per signature: the state check and the read side of op_lock, one pthread_getspecific,
 * C_SignInit (and the context-specific C_Login for CKA_ALWAYS_AUTHENTICATE keys) and C_Sign,
 * and for ECDSA the DER conversion. A token that is down is not entered: TOK_ERR_UNAVAILABLE
 * at once. Inputs are checked before the token sees them, so bad requests cost nothing on
 * the token and cannot leave an operation half-open. */
#include <stdlib.h>
#include <string.h>

#include <openssl/asn1.h>
#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/objects.h>
#include <openssl/x509.h>

#include "pkcs11/internal.h"
#include "pkcs11/wrapped.h"

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

/* One signature's module work, run by a worker (worker.c): heap-allocated, because a caller
 * that gave up on it leaves it to the worker. */
struct sign_job {
	struct tok_job j;
	const struct tok_key *key; /* owned by the token until tok_close */
	CK_MECHANISM mech;
	CK_RSA_PKCS_PSS_PARAMS pss;
	CK_BYTE in[TOK_MAX_DIGEST + 32];
	CK_ULONG inlen;
	CK_BYTE out[TOK_MAX_SIG > 2 * TOK_EC_MAX_FIELD ? TOK_MAX_SIG : 2 * TOK_EC_MAX_FIELD];
	CK_ULONG outlen;
};

static void sign_job_drop(struct tok_job *j)
{
	struct sign_job *sj = (struct sign_job *)j;

	/* A wrapped key is held by the job, which may outlive its requester. */
	if (sj->key != NULL && sj->key->wrapped != NULL)
		tok_wrapped_release(sj->key);
	OPENSSL_cleanse(sj, sizeof(*sj));
	free(sj);
}

/* On a worker: C_SignInit (and the context-specific login) and C_Sign on the worker's own
 * session, holding the read side of op_lock. */
static int sign_job_run(struct token *tok, struct tok_job *j)
{
	struct sign_job *sj = (struct sign_job *)j;
	const struct tok_key *key = sj->key;
	struct tok_sess *ts = NULL;
	CK_OBJECT_HANDLE priv;
	CK_FUNCTION_LIST *fl;
	CK_RV rv = CKR_OK;
	const char *pin;
	size_t pinlen = 0;
	int r;

	r = tok_use_begin(tok);
	if (r != TOK_OK)
		return r;
	r = key->wrapped != NULL ? tok_wrapped_fresh(tok, key) : tok_key_fresh(tok, key);
	if (r == TOK_OK)
		r = tok_sess_get(tok, &ts);
	if (r != TOK_OK)
		goto done;
	fl = tok->fl;
	priv = __atomic_load_n(&key->priv, __ATOMIC_RELAXED);
	if (sj->mech.mechanism == CKM_RSA_PKCS_PSS) {
		sj->mech.pParameter = &sj->pss;
		sj->mech.ulParameterLen = sizeof(sj->pss);
	}
	atomic_store(&ts->busy_since, tok_now_ms());
	rv = fl->C_SignInit(ts->h, &sj->mech, priv);
	if (rv == CKR_OK && key->always_auth) {
		/* CKA_ALWAYS_AUTHENTICATE: the user login does not cover this key; one login per
		 * signature, between C_SignInit and C_Sign. */
		pin = tok_pin(tok, &pinlen);
		if (pin == NULL) {
			atomic_store(&ts->busy_since, 0);
			r = TOK_ERR_PIN;
			tok_session_failed(tok, CKR_OPERATION_ACTIVE);
			goto done;
		}
		rv = fl->C_Login(ts->h, CKU_CONTEXT_SPECIFIC, (CK_UTF8CHAR *)pin, (CK_ULONG)pinlen);
		if (rv != CKR_OK) {
			atomic_store(&ts->busy_since, 0);
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
		rv = fl->C_Sign(ts->h, sj->in, sj->inlen, sj->out, &sj->outlen);
	atomic_store(&ts->busy_since, 0);
	if (rv == CKR_OK) {
		r = TOK_OK;
		/* The token signs again: the next outage starts from the shortest backoff. */
		if (!atomic_load_explicit(&tok->proven, memory_order_relaxed))
			atomic_store(&tok->proven, 1);
	} else if (tok->removable && (rv == CKR_GENERAL_ERROR || rv == CKR_FUNCTION_FAILED)) {
		/* A card says this when it was pulled mid-APDU (before PC/SC tells us) or lost
		 * its login to a reset by another PC/SC client: both are "log in again", and the
		 * request was checked before it got here. PC/SC may never report the pull (a card
		 * back before pcscd looks), and then the module's view of the card is stale: its
		 * connection may no longer carry APDUs, and a login over it fails with the same
		 * CKR_GENERAL_ERROR some cards give a wrong PIN. So the recovery starts the module
		 * afresh: it connects to the card and reads it again, and only a card that has
		 * just answered is given the PIN. */
		tok->need_reinit = 1;
		tok_mark_down_settle(tok, ts->gen, "the card failed a signature",
		                     TOK_CARD_SETTLE_MS);
		tok_session_failed(tok, rv);
		r = TOK_ERR_UNAVAILABLE;
	} else {
		r = tok_session_failed(tok, rv);
		if (r == TOK_OK)
			r = TOK_ERR_INTERNAL;
	}
done:
	tok_use_end(tok);
	return r;
}

int tok_sign_digest(struct token *tok, const struct tok_key *key, const struct tok_sign_params *p,
                    const uint8_t *dig, size_t dlen, uint8_t *sig, size_t *siglen)
{
	int r = TOK_ERR_BAD_INPUT;
	const struct hash_info *h, *mgf;
	struct sign_job *sj = NULL;
	size_t dilen = 0, emlen, modlen, outmax;
	int gone = 0;

	if (siglen != NULL)
		*siglen = 0;
	if (tok == NULL || key == NULL || p == NULL || dig == NULL || sig == NULL || siglen == NULL)
		return TOK_ERR_INTERNAL;
	h = hash_find(p->hash_nid);
	if (h == NULL || dlen != h->len)
		goto out;
	modlen = (key->bits + 7) / 8;
	if ((sj = calloc(1, sizeof(*sj))) == NULL)
		return TOK_ERR_INTERNAL;
	sj->j.run = sign_job_run;
	sj->j.drop = sign_job_drop;
	sj->key = key;
	if (key->wrapped != NULL)
		tok_wrapped_hold(key);
	memcpy(sj->in, dig, dlen);
	sj->inlen = (CK_ULONG)dlen;
	outmax = TOK_MAX_SIG;
	switch (p->scheme) {
	case TOK_ECDSA:
		if (key->type != TOK_KEY_EC || 2 * modlen > 2 * TOK_EC_MAX_FIELD)
			goto out;
		sj->mech.mechanism = CKM_ECDSA;
		outmax = 2 * TOK_EC_MAX_FIELD;
		break;
	case TOK_RSA_PKCS1:
		if (key->type != TOK_KEY_RSA || modlen > TOK_MAX_SIG)
			goto out;
		r = tok_digestinfo(h->nid, dig, dlen, sj->in, &dilen);
		if (r != TOK_OK)
			goto out;
		r = TOK_ERR_BAD_INPUT;
		sj->mech.mechanism = CKM_RSA_PKCS;
		sj->inlen = (CK_ULONG)dilen;
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
		sj->pss.hashAlg = h->ckm;
		sj->pss.mgf = mgf->mgf;
		sj->pss.sLen = (CK_ULONG)p->salt_len;
		sj->mech.mechanism = CKM_RSA_PKCS_PSS;
		break;
	default:
		goto out;
	}
	sj->outlen = (CK_ULONG)outmax;

	r = tok_job_call(tok, &sj->j, "a signature", &gone);
	if (gone)
		sj = NULL; /* still in the module: the worker owns the job now */
	if (r != TOK_OK)
		goto out;

	r = TOK_ERR_INTERNAL;
	if (p->scheme == TOK_ECDSA) {
		/* r||s, each exactly the field size: anything else is not a signature we know. */
		if (sj->outlen != 2 * modlen)
			goto out;
		r = tok_ecdsa_raw_to_der(sj->out, sj->outlen, sig, siglen);
		goto out;
	}
	if (sj->outlen != modlen)
		goto out;
	memcpy(sig, sj->out, sj->outlen);
	*siglen = sj->outlen;
	r = TOK_OK;
out:
	if (sj != NULL)
		sign_job_drop(&sj->j);
	return r;
}
