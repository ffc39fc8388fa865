/* Unit tests: RFC 3161 query and token checks (signer/core/tsa.c), against a TSA made here
 * with OpenSSL's own TS_RESP_CTX: every check refuses what it should, and says which. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ts.h>
#include <openssl/x509v3.h>

#include "policy/algs.h"
#include "signer/core/tsa.h"

struct pki {
	EVP_PKEY *ca_key, *other_key, *tsa_key, *user_key;
	X509 *ca, *other, *tsa, *user, *user_future;
	char ca_path[64], other_path[64];
};
static struct pki P;
static long fake_offset; /* the test TSA's clock, relative to now */

static EVP_PKEY *ec_key(void)
{
	EVP_PKEY *k = EVP_EC_gen("P-256");

	assert_non_null(k);
	return k;
}

static void ext(X509 *x, X509 *issuer, int nid, const char *value)
{
	X509V3_CTX ctx;
	X509_EXTENSION *e;

	X509V3_set_ctx(&ctx, issuer, x, NULL, NULL, 0);
	assert_non_null(e = X509V3_EXT_conf_nid(NULL, &ctx, nid, value));
	assert_true(X509_add_ext(x, e, -1));
	X509_EXTENSION_free(e);
}

/* A certificate for key, signed by issuer_key (self-signed when issuer is NULL), valid from
 * now + from_s for days. */
static X509 *cert(const char *cn, EVP_PKEY *key, X509 *issuer, EVP_PKEY *issuer_key, long from_s,
                  int days, const char *eku)
{
	X509 *x = X509_new();
	X509_NAME *n = X509_NAME_new();
	static long serial = 1;

	assert_non_null(x);
	X509_set_version(x, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(x), serial++);
	X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
	X509_set_subject_name(x, n);
	X509_set_issuer_name(x, issuer != NULL ? X509_get_subject_name(issuer) : n);
	X509_gmtime_adj(X509_getm_notBefore(x), from_s);
	X509_gmtime_adj(X509_getm_notAfter(x), from_s + (long)days * 86400);
	X509_set_pubkey(x, key);
	if (issuer == NULL) {
		ext(x, x, NID_basic_constraints, "critical,CA:TRUE");
		ext(x, x, NID_key_usage, "critical,keyCertSign");
	} else {
		ext(x, issuer, NID_basic_constraints, "critical,CA:FALSE");
		ext(x, issuer, NID_key_usage, "critical,digitalSignature,nonRepudiation");
		if (eku != NULL)
			ext(x, issuer, NID_ext_key_usage, eku);
	}
	assert_true(X509_sign(x, issuer_key, EVP_sha256()) > 0);
	X509_NAME_free(n);
	return x;
}

static void write_pem(const char *path, X509 *x)
{
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	assert_true(PEM_write_X509(f, x));
	fclose(f);
}

static int setup(void **state)
{
	P.ca_key = ec_key();
	P.other_key = ec_key();
	P.tsa_key = ec_key();
	P.user_key = ec_key();
	P.ca = cert("test CA", P.ca_key, NULL, P.ca_key, -3600, 30, NULL);
	P.other = cert("other CA", P.other_key, NULL, P.other_key, -3600, 30, NULL);
	P.tsa = cert("test TSA", P.tsa_key, P.ca, P.ca_key, -3600, 20, "critical,timeStamping");
	P.user = cert("citizen", P.user_key, P.ca, P.ca_key, -3600, 10, NULL);
	P.user_future = cert("citizen later", P.user_key, P.ca, P.ca_key, 3600, 10, NULL);
	snprintf(P.ca_path, sizeof(P.ca_path), "/tmp/test-tsa-ca-%ld.pem", (long)getpid());
	snprintf(P.other_path, sizeof(P.other_path), "/tmp/test-tsa-other-%ld.pem", (long)getpid());
	write_pem(P.ca_path, P.ca);
	write_pem(P.other_path, P.other);
	return 0;
}

static int teardown(void **state)
{
	unlink(P.ca_path);
	unlink(P.other_path);
	X509_free(P.ca);
	X509_free(P.other);
	X509_free(P.tsa);
	X509_free(P.user);
	X509_free(P.user_future);
	EVP_PKEY_free(P.ca_key);
	EVP_PKEY_free(P.other_key);
	EVP_PKEY_free(P.tsa_key);
	EVP_PKEY_free(P.user_key);
	return 0;
}

static struct tsa_verifier *verifier(const char *anchors, int hash, const char *policy)
{
	struct config cfg = {0};
	struct tsa_verifier *v = NULL;
	char err[256];

	cfg.tsa_url = "http://tsa.test/";
	cfg.tsa_trust_anchors = (char *)anchors;
	cfg.tsa_hash = hash;
	cfg.tsa_policy = (char *)policy;
	if (tsa_verifier_load(&cfg, &v, err, sizeof(err)) != 0)
		fail_msg("%s", err);
	return v;
}

static int fake_time(struct TS_resp_ctx *ctx, void *data, long *sec, long *usec)
{
	*sec = (long)time(NULL) + fake_offset;
	*usec = 0;
	return 1;
}

static ASN1_INTEGER *serial_cb(struct TS_resp_ctx *ctx, void *data)
{
	ASN1_INTEGER *s = ASN1_INTEGER_new();

	ASN1_INTEGER_set(s, 42);
	return s;
}

/* The TSA's answer to query der (len bytes), as DER: signed by tsa_cert. */
static uint8_t *answer(const uint8_t *der, size_t len, X509 *tsa_cert, size_t *outlen)
{
	TS_RESP_CTX *ctx = TS_RESP_CTX_new();
	ASN1_OBJECT *pol = OBJ_txt2obj("1.2.3.4.1", 1);
	BIO *in = BIO_new_mem_buf(der, (int)len);
	TS_RESP *resp;
	unsigned char *out = NULL;
	int n;

	assert_non_null(ctx);
	assert_true(TS_RESP_CTX_set_signer_cert(ctx, tsa_cert));
	assert_true(TS_RESP_CTX_set_signer_key(ctx, P.tsa_key));
	assert_true(TS_RESP_CTX_set_def_policy(ctx, pol));
	assert_true(TS_RESP_CTX_add_md(ctx, EVP_sha256()));
	assert_true(TS_RESP_CTX_set_ess_cert_id_digest(ctx, EVP_sha256()));
	TS_RESP_CTX_set_serial_cb(ctx, serial_cb, NULL);
	TS_RESP_CTX_set_time_cb(ctx, fake_time, NULL);
	assert_non_null(resp = TS_RESP_create_response(ctx, in));
	assert_true((n = i2d_TS_RESP(resp, &out)) > 0);
	*outlen = (size_t)n;
	TS_RESP_free(resp);
	BIO_free(in);
	ASN1_OBJECT_free(pol);
	TS_RESP_CTX_free(ctx);
	return out;
}

/* Check an answer to q (or to the query tampered with by edit) and expect verdict, why
 * mentioning needle. */
static void expect(struct tsa_verifier *v, struct tsa_query *q, const uint8_t *reply, size_t len,
                   X509 *signer, enum tsa_verdict want, const char *needle)
{
	uint8_t *token = NULL;
	size_t tlen = 0;
	int64_t ms = 0;
	char why[200] = "";
	enum tsa_verdict got = tsa_reply_check(v, q, reply, len, signer, time(NULL), &token, &tlen,
	                                       &ms, why, sizeof(why));

	if (got != want)
		fail_msg("verdict %d (%s), expected %d", got, why, want);
	if (want == TSA_OK) {
		assert_non_null(token);
		assert_true(tlen > 100);
		assert_true(ms / 1000 >= (int64_t)time(NULL) + fake_offset - 5 &&
		            ms / 1000 <= (int64_t)time(NULL) + fake_offset + 5);
		OPENSSL_free(token);
	} else {
		assert_null(token);
		if (strstr(why, needle) == NULL)
			fail_msg("why \"%s\" does not mention \"%s\"", why, needle);
	}
}

static void good_token(void **state)
{
	static const uint8_t sig[] = "a signature value";
	struct tsa_verifier *v = verifier(P.ca_path, HASH_SHA256, NULL);
	struct tsa_query q, q2;
	uint8_t *r;
	size_t n;

	fake_offset = 0;
	assert_int_equal(tsa_query_make(v, sig, sizeof(sig), &q), 0);
	assert_int_equal(q.ilen, 32);
	/* Two queries for the same value differ: the nonce. */
	assert_int_equal(tsa_query_make(v, sig, sizeof(sig), &q2), 0);
	assert_int_not_equal(ASN1_INTEGER_cmp(TS_REQ_get_nonce(q.req), TS_REQ_get_nonce(q2.req)),
	                     0);
	assert_memory_equal(q.imprint, q2.imprint, q.ilen);
	r = answer(q.der, q.len, P.tsa, &n);
	expect(v, &q, r, n, P.user, TSA_OK, NULL);
	/* The answer to another query is refused for this one: its nonce. */
	expect(v, &q2, r, n, P.user, TSA_BAD_TOKEN, "nonce");
	/* A query over another signature value with our nonce: the imprint. */
	OPENSSL_free(r);
	{
		struct tsa_query other;
		TS_REQ *req;
		uint8_t *der = NULL;
		int len;

		assert_int_equal(tsa_query_make(v, (const uint8_t *)"other", 5, &other), 0);
		assert_true(TS_REQ_set_nonce(other.req, TS_REQ_get_nonce(q.req)));
		req = other.req;
		assert_true((len = i2d_TS_REQ(req, &der)) > 0);
		r = answer(der, (size_t)len, P.tsa, &n);
		expect(v, &q, r, n, P.user, TSA_BAD_TOKEN, "message imprint");
		OPENSSL_free(r);
		OPENSSL_free(der);
		tsa_query_clear(&other);
	}
	tsa_query_clear(&q);
	tsa_query_clear(&q2);
	tsa_verifier_free(v);
}

static void refusals(void **state)
{
	static const uint8_t sig[] = "a signature value";
	struct tsa_verifier *v = verifier(P.ca_path, HASH_SHA256, NULL);
	struct tsa_verifier *other = verifier(P.other_path, HASH_SHA256, NULL);
	struct tsa_verifier *pol = verifier(P.ca_path, HASH_SHA256, "1.2.3.9");
	struct tsa_verifier *sha384 = verifier(P.ca_path, HASH_SHA384, NULL);
	struct tsa_query q;
	uint8_t *r, junk[] = {0x30, 0x03, 0x02, 0x01, 0x00};
	size_t n;

	fake_offset = 0;
	assert_int_equal(tsa_query_make(v, sig, sizeof(sig), &q), 0);
	r = answer(q.der, q.len, P.tsa, &n);
	/* Anchors that do not name the TSA's CA. */
	expect(other, &q, r, n, P.user, TSA_BAD_TOKEN, "tsa.trust_anchors");
	/* A policy other than tsa.policy. */
	expect(pol, &q, r, n, P.user, TSA_BAD_TOKEN, "policy");
	/* A time outside the signing certificate's validity (not yet valid). */
	expect(v, &q, r, n, P.user_future, TSA_BAD_TOKEN, "validity");
	/* Not a response, a truncated one, a response with trailing bytes. */
	expect(v, &q, junk, sizeof(junk), P.user, TSA_UNAVAILABLE, "not a time-stamp response");
	expect(v, &q, r, n - 1, P.user, TSA_UNAVAILABLE, "not a time-stamp response");
	{
		uint8_t *longer = malloc(n + 1);

		memcpy(longer, r, n);
		longer[n] = 0;
		expect(v, &q, longer, n + 1, P.user, TSA_UNAVAILABLE, "not a time-stamp response");
		free(longer);
	}
	OPENSSL_free(r);
	/* (A TSA certificate whose timeStamping EKU is not critical cannot be had from OpenSSL's
	 * own TSA code, which refuses to sign with it; the same purpose check refuses it here.) */
	/* The TSA's clock 10 minutes off either way. */
	for (long off = -600; off <= 600; off += 1200) {
		fake_offset = off;
		r = answer(q.der, q.len, P.tsa, &n);
		expect(v, &q, r, n, P.user, TSA_BAD_TOKEN, "daemon's clock");
		OPENSSL_free(r);
	}
	fake_offset = 60; /* within the skew */
	r = answer(q.der, q.len, P.tsa, &n);
	expect(v, &q, r, n, P.user, TSA_OK, NULL);
	OPENSSL_free(r);
	fake_offset = 0;
	tsa_query_clear(&q);
	/* The TSA refuses a hash it does not take (its status): unavailable, not a bad token. */
	assert_int_equal(tsa_query_make(sha384, sig, sizeof(sig), &q), 0);
	assert_int_equal(q.ilen, 48);
	r = answer(q.der, q.len, P.tsa, &n);
	expect(sha384, &q, r, n, P.user, TSA_UNAVAILABLE, "refused");
	OPENSSL_free(r);
	tsa_query_clear(&q);
	tsa_verifier_free(v);
	tsa_verifier_free(other);
	tsa_verifier_free(pol);
	tsa_verifier_free(sha384);
}

static void loading(void **state)
{
	struct config cfg = {0};
	struct tsa_verifier *v = NULL;
	char err[256];

	cfg.tsa_url = "http://tsa.test/";
	cfg.tsa_hash = HASH_SHA256;
	cfg.tsa_trust_anchors = "/nonexistent/tsa-ca.pem";
	assert_int_equal(tsa_verifier_load(&cfg, &v, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "cannot open"));
	cfg.tsa_trust_anchors = "/dev/null";
	assert_int_equal(tsa_verifier_load(&cfg, &v, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "no PEM certificate"));
	assert_null(v);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(good_token),
	    cmocka_unit_test(refusals),
	    cmocka_unit_test(loading),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
