/* RFC 3161 queries and the check of their answers; see tsa.h. */
#include "signer/core/tsa.h"

#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/pem.h>
#include <openssl/rand.h>

#include "policy/algs.h"

#define TSA_NONCE_BITS 64

struct tsa_verifier {
	X509_STORE *store;
	const EVP_MD *md;
	ASN1_OBJECT *policy; /* NULL: any */
};

__attribute__((format(printf, 3, 4))) static int say(char *why, size_t whylen, const char *fmt, ...)
{
	va_list ap;

	if (why != NULL && whylen > 0) {
		va_start(ap, fmt);
		vsnprintf(why, whylen, fmt, ap);
		va_end(ap);
	}
	return -1;
}

void tsa_verifier_free(struct tsa_verifier *v)
{
	if (v == NULL)
		return;
	X509_STORE_free(v->store);
	ASN1_OBJECT_free(v->policy);
	free(v);
}

/* The anchors: every certificate in the PEM file, at least one. */
static int load_anchors(const char *path, X509_STORE *store, char *err, size_t errlen)
{
	BIO *b = BIO_new_file(path, "r");
	X509 *x;
	int n = 0;

	if (b == NULL)
		return say(err, errlen, "tsa.trust_anchors: %s: cannot open", path);
	while ((x = PEM_read_bio_X509(b, NULL, NULL, NULL)) != NULL) {
		if (!X509_STORE_add_cert(store, x)) {
			X509_free(x);
			BIO_free(b);
			return say(err, errlen, "tsa.trust_anchors: %s: cannot add a certificate",
			           path);
		}
		X509_free(x);
		n++;
	}
	ERR_clear_error(); /* the end of the file */
	BIO_free(b);
	if (n == 0)
		return say(err, errlen, "tsa.trust_anchors: %s: no PEM certificate", path);
	return 0;
}

int tsa_verifier_load(const struct config *cfg, struct tsa_verifier **out, char *err, size_t errlen)
{
	struct tsa_verifier *v;

	*out = NULL;
	if (cfg->tsa_url == NULL || cfg->tsa_trust_anchors == NULL)
		return say(err, errlen, "tsa: not configured");
	if ((v = calloc(1, sizeof(*v))) == NULL || (v->store = X509_STORE_new()) == NULL) {
		tsa_verifier_free(v);
		return say(err, errlen, "out of memory");
	}
	if (load_anchors(cfg->tsa_trust_anchors, v->store, err, errlen) != 0)
		goto fail;
	if ((v->md = EVP_get_digestbynid(alg_hash_nid((enum alg_hash)cfg->tsa_hash))) == NULL) {
		say(err, errlen, "tsa.hash: unknown");
		goto fail;
	}
	if (cfg->tsa_policy != NULL && (v->policy = OBJ_txt2obj(cfg->tsa_policy, 1)) == NULL) {
		say(err, errlen, "tsa.policy: %s is not an OID", cfg->tsa_policy);
		goto fail;
	}
	*out = v;
	return 0;
fail:
	tsa_verifier_free(v);
	return -1;
}

void tsa_query_clear(struct tsa_query *q)
{
	TS_REQ_free(q->req);
	OPENSSL_free(q->der);
	memset(q, 0, sizeof(*q));
}

int tsa_query_make(const struct tsa_verifier *v, const uint8_t *sigval, size_t len,
                   struct tsa_query *q)
{
	TS_MSG_IMPRINT *mi = NULL;
	X509_ALGOR *alg = NULL;
	ASN1_INTEGER *nonce = NULL;
	BIGNUM *bn = NULL;
	unsigned char *der = NULL;
	int n, r = -1;

	memset(q, 0, sizeof(*q));
	if (!EVP_Digest(sigval, len, q->imprint, &q->ilen, v->md, NULL))
		goto out;
	if ((q->req = TS_REQ_new()) == NULL || !TS_REQ_set_version(q->req, 1) ||
	    (mi = TS_MSG_IMPRINT_new()) == NULL || (alg = X509_ALGOR_new()) == NULL)
		goto out;
	X509_ALGOR_set_md(alg, v->md);
	if (!TS_MSG_IMPRINT_set_algo(mi, alg) ||
	    !TS_MSG_IMPRINT_set_msg(mi, q->imprint, (int)q->ilen) ||
	    !TS_REQ_set_msg_imprint(q->req, mi))
		goto out;
	if (v->policy != NULL && !TS_REQ_set_policy_id(q->req, v->policy))
		goto out;
	/* A nonce from the CSPRNG, so that a token cannot be an old answer replayed. */
	if ((bn = BN_new()) == NULL ||
	    !BN_priv_rand(bn, TSA_NONCE_BITS, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY) ||
	    (nonce = BN_to_ASN1_INTEGER(bn, NULL)) == NULL || !TS_REQ_set_nonce(q->req, nonce))
		goto out;
	/* The TSA's certificate in the token: the anchors are its CA's, not the TSA's own. */
	if (!TS_REQ_set_cert_req(q->req, 1))
		goto out;
	if ((n = i2d_TS_REQ(q->req, &der)) <= 0)
		goto out;
	q->der = der;
	q->len = (size_t)n;
	r = 0;
out:
	ASN1_INTEGER_free(nonce);
	BN_free(bn);
	X509_ALGOR_free(alg);
	TS_MSG_IMPRINT_free(mi);
	if (r != 0)
		tsa_query_clear(q);
	return r;
}

/* The token's time in unix milliseconds: GeneralizedTime, fractions of a second kept to
 * milliseconds. */
static int gen_time_ms(const ASN1_GENERALIZEDTIME *t, int64_t *ms)
{
	const char *s = (const char *)ASN1_STRING_get0_data(t), *dot;
	int n = ASN1_STRING_length(t), frac = 0, digits = 0;
	struct tm tm;

	if (s == NULL || n < 15 || !ASN1_TIME_to_tm(t, &tm))
		return -1;
	if ((dot = memchr(s, '.', (size_t)n)) != NULL)
		for (const char *d = dot + 1; d < s + n && *d >= '0' && *d <= '9'; d++)
			if (digits < 3) {
				frac = frac * 10 + (*d - '0');
				digits++;
			}
	while (digits > 0 && digits < 3) {
		frac *= 10;
		digits++;
	}
	*ms = (int64_t)timegm(&tm) * 1000 + frac;
	return 0;
}

/* Why OpenSSL refused, on one line. */
static void openssl_why(char *buf, size_t len)
{
	unsigned long e = ERR_peek_last_error();

	if (e == 0)
		snprintf(buf, len, "no reason given");
	else
		ERR_error_string_n(e, buf, len);
	ERR_clear_error();
}

enum tsa_verdict tsa_reply_check(const struct tsa_verifier *v, const struct tsa_query *q,
                                 const uint8_t *reply, size_t len, X509 *signer, time_t now,
                                 uint8_t **token, size_t *tlen, int64_t *gen_ms, char *why,
                                 size_t whylen)
{
	const unsigned char *pp = reply;
	TS_RESP *resp = NULL;
	TS_TST_INFO *tst;
	TS_MSG_IMPRINT *mi;
	X509_ALGOR *alg;
	ASN1_OCTET_STRING *dig;
	ASN1_OBJECT *policy;
	const ASN1_INTEGER *nonce;
	PKCS7 *tok;
	X509 *tsa_cert = NULL;
	unsigned char *der = NULL;
	char ossl[160];
	long status;
	int64_t ms;
	time_t secs;
	int n;
	enum tsa_verdict r = TSA_BAD_TOKEN;

	*token = NULL;
	*tlen = 0;
	*gen_ms = 0;
	if (len == 0 || len > LONG_MAX || (resp = d2i_TS_RESP(NULL, &pp, (long)len)) == NULL ||
	    pp != reply + len) {
		ERR_clear_error();
		say(why, whylen, "the TSA's answer is not a time-stamp response");
		r = TSA_UNAVAILABLE;
		goto out;
	}
	status = ASN1_INTEGER_get(TS_STATUS_INFO_get0_status(TS_RESP_get_status_info(resp)));
	if (status != 0 && status != 1) { /* granted, grantedWithMods */
		say(why, whylen, "the TSA refused the request (PKIStatus %ld)", status);
		r = TSA_UNAVAILABLE;
		goto out;
	}
	if ((tok = TS_RESP_get_token(resp)) == NULL || (tst = TS_RESP_get_tst_info(resp)) == NULL) {
		say(why, whylen, "granted, but no token");
		goto out;
	}
	/* Signature, ESS signing certificate, and a time-stamping certificate chaining to the
	 * anchors: first, so that an untrusted TSA is named as such whatever else it got
	 * wrong. */
	if (TS_RESP_verify_signature(tok, NULL, v->store, &tsa_cert) != 1) {
		openssl_why(ossl, sizeof(ossl));
		say(why, whylen, "the token does not verify against tsa.trust_anchors: %s", ossl);
		goto out;
	}
	mi = TS_TST_INFO_get_msg_imprint(tst);
	alg = mi != NULL ? TS_MSG_IMPRINT_get_algo(mi) : NULL;
	dig = mi != NULL ? TS_MSG_IMPRINT_get_msg(mi) : NULL;
	if (alg == NULL || dig == NULL || OBJ_obj2nid(alg->algorithm) != EVP_MD_get_type(v->md) ||
	    (size_t)ASN1_STRING_length(dig) != q->ilen ||
	    CRYPTO_memcmp(ASN1_STRING_get0_data(dig), q->imprint, q->ilen) != 0) {
		say(why, whylen,
		    "the token's message imprint is not the %s of this signature value",
		    EVP_MD_get0_name(v->md));
		goto out;
	}
	nonce = TS_TST_INFO_get_nonce(tst);
	if (nonce == NULL || ASN1_INTEGER_cmp(nonce, TS_REQ_get_nonce(q->req)) != 0) {
		say(why, whylen, "the token's nonce is not the one asked for");
		goto out;
	}
	policy = TS_TST_INFO_get_policy_id(tst);
	if (v->policy != NULL && (policy == NULL || OBJ_cmp(policy, v->policy) != 0)) {
		say(why, whylen, "the token's policy is not tsa.policy");
		goto out;
	}
	if (gen_time_ms(TS_TST_INFO_get_time(tst), &ms) != 0) {
		say(why, whylen, "the token's time is malformed");
		goto out;
	}
	secs = (time_t)(ms / 1000);
	if (secs > now + TSA_MAX_SKEW || secs < now - TSA_MAX_SKEW) {
		say(why, whylen, "the token's time is %lld s from the daemon's clock (at most %d)",
		    (long long)(secs - now), TSA_MAX_SKEW);
		goto out;
	}
	if (X509_cmp_time(X509_get0_notBefore(signer), &secs) > 0 ||
	    X509_cmp_time(X509_get0_notAfter(signer), &secs) < 0) {
		say(why, whylen, "the token's time is outside the signing certificate's validity");
		goto out;
	}
	if ((n = i2d_PKCS7(tok, &der)) <= 0) {
		say(why, whylen, "the token cannot be encoded");
		goto out;
	}
	*token = der;
	*tlen = (size_t)n;
	*gen_ms = ms;
	r = TSA_OK;
out:
	X509_free(tsa_cert);
	TS_RESP_free(resp);
	return r;
}
