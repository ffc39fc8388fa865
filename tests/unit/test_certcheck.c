/* Unit tests: signing certificate checks (policy/certcheck.c). The CAs, certificates and CRLs are
 * made here with OpenSSL's API at a fixed time, so every case is deterministic. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "policy/certcheck.h"

#define NOW ((time_t)1800000000) /* 2027-01-15 08:00:00 UTC */
#define DAY 86400
#define YEAR (365 * DAY)

/* Key usages */
#define KU_NONE NULL
#define KU_SIGN_NR "critical,digitalSignature,nonRepudiation"
#define KU_SIGN_ONLY "critical,digitalSignature"
#define KU_CA "critical,keyCertSign,cRLSign"

static char tmpdir[PATH_MAX];
static char err[1024];

static struct {
	EVP_PKEY *ca_key, *ca2_key, *other_key, *inter_key, *leaf_key;
	X509 *ca, *ca2, *other, *inter;
} pki;

static const char *tmp_path(const char *name)
{
	static char path[16][PATH_MAX + 64];
	static int next;
	char *p = path[next++ % 16];

	snprintf(p, sizeof(path[0]), "%s/%s", tmpdir, name);
	return p;
}

static void add_ext(X509 *x, X509 *issuer, int nid, const char *value)
{
	X509V3_CTX ctx;
	X509_EXTENSION *ext;

	X509V3_set_ctx(&ctx, issuer, x, NULL, NULL, 0);
	ext = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
	assert_non_null(ext);
	assert_int_equal(X509_add_ext(x, ext, -1), 1);
	X509_EXTENSION_free(ext);
}

/* A certificate for key, named cn, signed by issuer (NULL: self-signed with key). */
static X509 *make_cert(const char *cn, EVP_PKEY *key, X509 *issuer, EVP_PKEY *issuer_key,
                       long serial, time_t not_before, time_t not_after, int ca, const char *ku)
{
	X509 *x = X509_new();
	X509_NAME *name = X509_NAME_new();

	assert_non_null(x);
	assert_non_null(name);
	assert_int_equal(X509_set_version(x, 2), 1);
	assert_int_equal(ASN1_INTEGER_set(X509_get_serialNumber(x), serial), 1);
	assert_int_equal(X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
	                                            (const unsigned char *)cn, -1, -1, 0),
	                 1);
	assert_int_equal(X509_set_subject_name(x, name), 1);
	assert_int_equal(
	    X509_set_issuer_name(x, issuer != NULL ? X509_get_subject_name(issuer) : name), 1);
	X509_NAME_free(name);
	assert_non_null(ASN1_TIME_set(X509_getm_notBefore(x), not_before));
	assert_non_null(ASN1_TIME_set(X509_getm_notAfter(x), not_after));
	assert_int_equal(X509_set_pubkey(x, key), 1);
	add_ext(x, issuer != NULL ? issuer : x, NID_basic_constraints,
	        ca ? "critical,CA:TRUE" : "critical,CA:FALSE");
	if (ku != NULL)
		add_ext(x, issuer != NULL ? issuer : x, NID_key_usage, ku);
	assert_true(X509_sign(x, issuer_key != NULL ? issuer_key : key, EVP_sha256()) > 0);
	return x;
}

static X509 *make_leaf(long serial, time_t not_before, time_t not_after, const char *ku)
{
	return make_cert("citizen", pki.leaf_key, pki.ca, pki.ca_key, serial, not_before, not_after,
	                 0, ku);
}

/* A CRL in issuer's name signed with key, listing serials; next 0: no nextUpdate. */
static X509_CRL *make_crl(X509 *issuer, EVP_PKEY *key, time_t last, time_t next,
                          const long *serials, size_t n)
{
	X509_CRL *crl = X509_CRL_new();
	ASN1_TIME *t = ASN1_TIME_set(NULL, last);
	size_t i;

	assert_non_null(crl);
	assert_non_null(t);
	assert_int_equal(X509_CRL_set_version(crl, 1), 1);
	assert_int_equal(X509_CRL_set_issuer_name(crl, X509_get_subject_name(issuer)), 1);
	assert_int_equal(X509_CRL_set1_lastUpdate(crl, t), 1);
	if (next != 0) {
		assert_non_null(ASN1_TIME_set(t, next));
		assert_int_equal(X509_CRL_set1_nextUpdate(crl, t), 1);
	}
	for (i = 0; i < n; i++) {
		X509_REVOKED *rev = X509_REVOKED_new();
		ASN1_INTEGER *sn = ASN1_INTEGER_new();

		assert_non_null(rev);
		assert_non_null(sn);
		assert_int_equal(ASN1_INTEGER_set(sn, serials[i]), 1);
		assert_int_equal(X509_REVOKED_set_serialNumber(rev, sn), 1);
		assert_non_null(ASN1_TIME_set(t, last - 60));
		assert_int_equal(X509_REVOKED_set_revocationDate(rev, t), 1);
		assert_int_equal(X509_CRL_add0_revoked(crl, rev), 1);
		ASN1_INTEGER_free(sn);
	}
	ASN1_TIME_free(t);
	assert_int_equal(X509_CRL_sort(crl), 1);
	assert_true(X509_CRL_sign(crl, key, EVP_sha256()) > 0);
	return crl;
}

static const char *write_certs(const char *name, X509 *a, X509 *b)
{
	const char *path = tmp_path(name);
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	assert_int_equal(PEM_write_X509(f, a), 1);
	if (b != NULL)
		assert_int_equal(PEM_write_X509(f, b), 1);
	assert_int_equal(fclose(f), 0);
	return path;
}

static const char *write_crl(const char *name, X509_CRL *crl, int der)
{
	const char *path = tmp_path(name);
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	if (der)
		assert_int_equal(i2d_X509_CRL_fp(f, crl), 1);
	else
		assert_int_equal(PEM_write_X509_CRL(f, crl), 1);
	assert_int_equal(fclose(f), 0);
	X509_CRL_free(crl);
	return path;
}

static const char *write_text(const char *name, const char *text)
{
	const char *path = tmp_path(name);
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	assert_int_equal(fputs(text, f) >= 0, 1);
	assert_int_equal(fclose(f), 0);
	return path;
}

/* A checker for anchors (a path or NULL) and up to two CRL paths. */
static struct cert_checker *load(const char *anchors, const char *crl1, const char *crl2)
{
	struct cert_checker *c = NULL;
	char *crls[2] = {(char *)crl1, (char *)crl2};
	size_t n = crl1 == NULL ? 0 : crl2 == NULL ? 1 : 2;

	if (cert_checker_load(anchors, crls, n, &c, err, sizeof(err)) != 0)
		fail_msg("load: %s", err);
	assert_non_null(c);
	return c;
}

/* Loading must fail with an error that names path and contains needle. */
static void load_fails(const char *anchors, const char *crl, const char *path, const char *needle)
{
	struct cert_checker *c = (struct cert_checker *)1;
	char *crls[1] = {(char *)crl};

	err[0] = '\0';
	assert_int_equal(cert_checker_load(anchors, crls, crl != NULL, &c, err, sizeof(err)), -1);
	assert_null(c);
	if (strstr(err, path) == NULL)
		fail_msg("error \"%s\" lacks the file name %s", err, path);
	if (strstr(err, needle) == NULL)
		fail_msg("error \"%s\" lacks \"%s\"", err, needle);
}

static int setup(void **state)
{
	const char *base = getenv("TMPDIR");

	snprintf(tmpdir, sizeof(tmpdir), "%s/test-certcheck-XXXXXX",
	         base != NULL && base[0] != '\0' ? base : "/tmp");
	if (mkdtemp(tmpdir) == NULL)
		return -1;
	pki.ca_key = EVP_EC_gen("P-256");
	pki.ca2_key = EVP_EC_gen("P-256");
	pki.other_key = EVP_EC_gen("P-256");
	pki.inter_key = EVP_EC_gen("P-256");
	pki.leaf_key = EVP_EC_gen("P-256");
	if (pki.ca_key == NULL || pki.ca2_key == NULL || pki.other_key == NULL ||
	    pki.inter_key == NULL || pki.leaf_key == NULL)
		return -1;
	pki.ca = make_cert("iamsign test CA", pki.ca_key, NULL, NULL, 1, NOW - 10 * YEAR,
	                   NOW + 10 * YEAR, 1, KU_CA);
	pki.ca2 = make_cert("iamsign second CA", pki.ca2_key, NULL, NULL, 2, NOW - 10 * YEAR,
	                    NOW + 10 * YEAR, 1, KU_CA);
	pki.other = make_cert("someone else's CA", pki.other_key, NULL, NULL, 3, NOW - 10 * YEAR,
	                      NOW + 10 * YEAR, 1, KU_CA);
	/* an intermediate that expires in 30 days, before its leaves */
	pki.inter = make_cert("iamsign issuing CA", pki.inter_key, pki.ca, pki.ca_key, 4,
	                      NOW - YEAR, NOW + 30 * DAY, 1, KU_CA);
	return 0;
}

static int teardown(void **state)
{
	static const char *const names[] = {
	    "ca.pem",    "both.pem",   "other.pem",    "fresh.crl",   "fresh.der",  "stale.crl",
	    "now.crl",   "nonext.crl", "ca2stale.crl", "foreign.crl", "forged.crl", "garbage.crl",
	    "empty.pem", "notpem.pem", "cert-as.crl",  "soon.crl",    "inter.crl",
	};
	size_t i;

	for (i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		unlink(tmp_path(names[i]));
	X509_free(pki.ca);
	X509_free(pki.ca2);
	X509_free(pki.other);
	X509_free(pki.inter);
	EVP_PKEY_free(pki.ca_key);
	EVP_PKEY_free(pki.ca2_key);
	EVP_PKEY_free(pki.other_key);
	EVP_PKEY_free(pki.inter_key);
	EVP_PKEY_free(pki.leaf_key);
	return rmdir(tmpdir);
}

static void test_reasons(void **state)
{
	assert_string_equal(cert_reason(CERT_MISSING), "cert_missing");
	assert_string_equal(cert_reason(CERT_NOT_YET_VALID), "cert_not_yet_valid");
	assert_string_equal(cert_reason(CERT_EXPIRED), "cert_expired");
	assert_string_equal(cert_reason(CERT_VALIDITY_TOO_SHORT), "cert_expiring");
	assert_string_equal(cert_reason(CERT_UNTRUSTED), "cert_untrusted");
	assert_string_equal(cert_reason(CERT_REVOKED), "cert_revoked");
	assert_string_equal(cert_reason(CERT_CRL_STALE), "crl_stale");
	assert_string_equal(cert_reason(CERT_NO_NON_REPUDIATION), "cert_no_non_repudiation");
}

static void test_good_and_missing(void **state)
{
	struct cert_checker *c = load(write_certs("ca.pem", pki.ca, NULL), NULL, NULL);
	X509 *leaf = make_leaf(10, NOW - DAY, NOW + YEAR, KU_SIGN_NR);
	time_t until = 1;

	assert_int_equal(cert_check(c, leaf, NULL, NOW, 0, 1, &until), CERT_OK);
	assert_int_equal(until, NOW + YEAR);
	/* good_until: notAfter - min_validity */
	assert_int_equal(cert_check(c, leaf, NULL, NOW, DAY, 1, &until), CERT_OK);
	assert_int_equal(until, NOW + YEAR - DAY);
	assert_int_equal(cert_check(c, leaf, NULL, NOW, DAY, 1, NULL), CERT_OK);
	/* ... and the answer really holds until then, and not a second longer */
	assert_int_equal(cert_check(c, leaf, NULL, until, DAY, 1, NULL), CERT_OK);
	assert_int_equal(cert_check(c, leaf, NULL, until + 1, DAY, 1, NULL),
	                 CERT_VALIDITY_TOO_SHORT);

	until = 1;
	assert_int_equal(cert_check(c, NULL, NULL, NOW, 0, 1, &until), CERT_MISSING);
	assert_int_equal(until, 0);
	X509_free(leaf);
	cert_checker_free(c);
	cert_checker_free(NULL);
}

static void test_validity_window(void **state)
{
	struct cert_checker *c = load(write_certs("ca.pem", pki.ca, NULL), NULL, NULL);
	X509 *expired = make_leaf(11, NOW - YEAR, NOW - 1, KU_SIGN_NR);
	X509 *future = make_leaf(12, NOW + 1, NOW + YEAR, KU_SIGN_NR);
	X509 *leaf = make_leaf(13, NOW - DAY, NOW + DAY, KU_SIGN_NR);
	time_t until = 1;

	assert_int_equal(cert_check(c, expired, NULL, NOW, 0, 0, &until), CERT_EXPIRED);
	assert_int_equal(until, 0);
	assert_int_equal(cert_check(c, future, NULL, NOW, 0, 0, NULL), CERT_NOT_YET_VALID);
	/* both ends are part of the validity period (RFC 5280) */
	assert_int_equal(cert_check(c, future, NULL, NOW + 1, 0, 0, NULL), CERT_OK);
	assert_int_equal(cert_check(c, expired, NULL, NOW - 1, 0, 0, NULL), CERT_OK);
	assert_int_equal(cert_check(c, leaf, NULL, NOW + DAY, 0, 0, &until), CERT_OK);
	assert_int_equal(until, NOW + DAY);
	assert_int_equal(cert_check(c, leaf, NULL, NOW + DAY + 1, 0, 0, NULL), CERT_EXPIRED);
	assert_int_equal(cert_check(c, leaf, NULL, NOW - DAY - 1, 0, 0, NULL), CERT_NOT_YET_VALID);
	X509_free(expired);
	X509_free(future);
	X509_free(leaf);
	cert_checker_free(c);
}

static void test_min_validity(void **state)
{
	struct cert_checker *c = load(write_certs("ca.pem", pki.ca, NULL), NULL, NULL);
	X509 *soon = make_leaf(14, NOW - YEAR, NOW + 3600, KU_SIGN_NR);
	time_t until;

	assert_int_equal(cert_check(c, soon, NULL, NOW, DAY, 1, NULL), CERT_VALIDITY_TOO_SHORT);
	assert_int_equal(cert_check(c, soon, NULL, NOW, 3601, 1, NULL), CERT_VALIDITY_TOO_SHORT);
	assert_int_equal(cert_check(c, soon, NULL, NOW, 3600, 1, &until), CERT_OK);
	assert_int_equal(until, NOW);
	assert_int_equal(cert_check(c, soon, NULL, NOW, 0, 1, NULL), CERT_OK);
	assert_int_equal(cert_check(c, soon, NULL, NOW, UINT64_MAX, 1, NULL),
	                 CERT_VALIDITY_TOO_SHORT);
	X509_free(soon);
	cert_checker_free(c);
}

static void test_untrusted(void **state)
{
	struct cert_checker *c = load(write_certs("ca.pem", pki.ca, NULL), NULL, NULL);
	struct cert_checker *none = load(NULL, NULL, NULL);
	X509 *foreign = make_cert("citizen", pki.leaf_key, pki.other, pki.other_key, 20, NOW - DAY,
	                          NOW + YEAR, 0, KU_SIGN_NR);
	/* our CA's name, someone else's key */
	X509 *forged = make_cert("citizen", pki.leaf_key, pki.ca, pki.other_key, 21, NOW - DAY,
	                         NOW + YEAR, 0, KU_SIGN_NR);
	X509 *self = make_cert("citizen", pki.leaf_key, NULL, NULL, 22, NOW - DAY, NOW + YEAR, 0,
	                       KU_SIGN_NR);
	X509 *good = make_leaf(23, NOW - DAY, NOW + YEAR, KU_SIGN_NR);
	time_t until = 1;

	assert_int_equal(cert_check(c, foreign, NULL, NOW, 0, 0, &until), CERT_UNTRUSTED);
	assert_int_equal(until, 0);
	assert_int_equal(cert_check(c, forged, NULL, NOW, 0, 0, NULL), CERT_UNTRUSTED);
	assert_int_equal(cert_check(c, self, NULL, NOW, 0, 0, NULL), CERT_UNTRUSTED);
	/* the untrusted CA given as an intermediate does not help */
	{
		STACK_OF(X509) *chain = sk_X509_new_null();

		assert_non_null(chain);
		assert_true(sk_X509_push(chain, pki.other) > 0);
		assert_int_equal(cert_check(c, foreign, chain, NOW, 0, 0, NULL), CERT_UNTRUSTED);
		sk_X509_free(chain);
	}
	/* no anchors: nothing is trusted */
	assert_int_equal(cert_check(none, good, NULL, NOW, 0, 0, NULL), CERT_UNTRUSTED);
	assert_int_equal(cert_check(c, good, NULL, NOW, 0, 0, NULL), CERT_OK);
	/* an anchor that has expired no longer anchors */
	X509_free(good);
	good = make_leaf(24, NOW - DAY, NOW + 20 * YEAR, KU_SIGN_NR);
	assert_int_equal(cert_check(c, good, NULL, NOW + 10 * YEAR - 1, 0, 0, NULL), CERT_OK);
	assert_int_equal(cert_check(c, good, NULL, NOW + 10 * YEAR + 1, 0, 0, NULL),
	                 CERT_UNTRUSTED);
	X509_free(foreign);
	X509_free(forged);
	X509_free(self);
	X509_free(good);
	cert_checker_free(c);
	cert_checker_free(none);
}

static void test_intermediate(void **state)
{
	struct cert_checker *c = load(write_certs("ca.pem", pki.ca, NULL), NULL, NULL);
	X509 *leaf = make_cert("citizen", pki.leaf_key, pki.inter, pki.inter_key, 30, NOW - DAY,
	                       NOW + YEAR, 0, KU_SIGN_NR);
	STACK_OF(X509) *chain = sk_X509_new_null();
	time_t until = 0;

	assert_non_null(chain);
	assert_true(sk_X509_push(chain, pki.inter) > 0);
	assert_int_equal(cert_check(c, leaf, NULL, NOW, 0, 1, NULL), CERT_UNTRUSTED);
	assert_int_equal(cert_check(c, leaf, chain, NOW, 0, 1, &until), CERT_OK);
	/* the intermediate expires first: the answer holds only while it is valid */
	assert_int_equal(until, NOW + 30 * DAY - 1);
	assert_int_equal(cert_check(c, leaf, chain, until, 0, 1, NULL), CERT_OK);
	assert_int_equal(cert_check(c, leaf, chain, NOW + 30 * DAY + 1, 0, 1, NULL),
	                 CERT_UNTRUSTED);
	sk_X509_free(chain);
	X509_free(leaf);
	cert_checker_free(c);
}

static void test_revoked(void **state)
{
	static const long listed[] = {40, 41};
	const char *ca = write_certs("ca.pem", pki.ca, NULL);
	const char *pem = write_crl(
	    "fresh.crl", make_crl(pki.ca, pki.ca_key, NOW - 3600, NOW + 7 * DAY, listed, 2), 0);
	const char *der = write_crl(
	    "fresh.der", make_crl(pki.ca, pki.ca_key, NOW - 3600, NOW + 7 * DAY, listed, 2), 1);
	X509 *revoked = make_leaf(41, NOW - DAY, NOW + YEAR, KU_SIGN_NR);
	X509 *good = make_leaf(42, NOW - DAY, NOW + YEAR, KU_SIGN_NR);
	struct cert_checker *c;
	time_t until = 1;

	c = load(ca, pem, NULL);
	assert_int_equal(cert_check(c, revoked, NULL, NOW, 0, 1, &until), CERT_REVOKED);
	assert_int_equal(until, 0);
	assert_int_equal(cert_check(c, good, NULL, NOW, 0, 1, &until), CERT_OK);
	/* the CRL's nextUpdate comes before the certificate's notAfter */
	assert_int_equal(until, NOW + 7 * DAY);
	cert_checker_free(c);

	c = load(ca, der, NULL);
	assert_int_equal(cert_check(c, revoked, NULL, NOW, 0, 1, NULL), CERT_REVOKED);
	assert_int_equal(cert_check(c, good, NULL, NOW, 0, 1, NULL), CERT_OK);
	cert_checker_free(c);
	X509_free(revoked);
	X509_free(good);
}

static void test_stale_crl(void **state)
{
	static const long listed[] = {50};
	const char *ca = write_certs("ca.pem", pki.ca, NULL);
	const char *both = write_certs("both.pem", pki.ca, pki.ca2);
	const char *stale = write_crl(
	    "stale.crl", make_crl(pki.ca, pki.ca_key, NOW - 8 * DAY, NOW - 1, NULL, 0), 0);
	const char *at_now =
	    write_crl("now.crl", make_crl(pki.ca, pki.ca_key, NOW - 8 * DAY, NOW, NULL, 0), 0);
	const char *nonext =
	    write_crl("nonext.crl", make_crl(pki.ca, pki.ca_key, NOW - 8 * DAY, 0, NULL, 0), 0);
	const char *ca2stale = write_crl(
	    "ca2stale.crl", make_crl(pki.ca2, pki.ca2_key, NOW - 8 * DAY, NOW - 1, NULL, 0), 0);
	const char *stale_listing = write_crl(
	    "soon.crl", make_crl(pki.ca, pki.ca_key, NOW - 8 * DAY, NOW - 1, listed, 1), 0);
	X509 *leaf = make_leaf(51, NOW - DAY, NOW + YEAR, KU_SIGN_NR);
	X509 *listed_leaf = make_leaf(50, NOW - DAY, NOW + YEAR, KU_SIGN_NR);
	struct cert_checker *c;
	time_t until = 1;

	/* past nextUpdate: fail closed */
	c = load(ca, stale, NULL);
	assert_int_equal(cert_check(c, leaf, NULL, NOW, 0, 1, &until), CERT_CRL_STALE);
	assert_int_equal(until, 0);
	cert_checker_free(c);

	/* nextUpdate itself is still fresh, and bounds good_until */
	c = load(ca, at_now, NULL);
	assert_int_equal(cert_check(c, leaf, NULL, NOW, 0, 1, &until), CERT_OK);
	assert_int_equal(until, NOW);
	assert_int_equal(cert_check(c, leaf, NULL, NOW + 1, 0, 1, NULL), CERT_CRL_STALE);
	cert_checker_free(c);

	/* no nextUpdate: never fresh */
	c = load(ca, nonext, NULL);
	assert_int_equal(cert_check(c, leaf, NULL, NOW, 0, 1, NULL), CERT_CRL_STALE);
	cert_checker_free(c);

	/* a stale CRL of another issuer does not concern this certificate */
	c = load(both, ca2stale, NULL);
	assert_int_equal(cert_check(c, leaf, NULL, NOW, 0, 1, &until), CERT_OK);
	assert_int_equal(until, NOW + YEAR);
	cert_checker_free(c);

	/* a fresh and a stale CRL of the same issuer: stale wins */
	c = load(ca, at_now, stale);
	assert_int_equal(cert_check(c, leaf, NULL, NOW, 0, 1, NULL), CERT_CRL_STALE);
	cert_checker_free(c);

	/* a stale CRL that lists the certificate: revoked is the more precise answer */
	c = load(ca, stale_listing, NULL);
	assert_int_equal(cert_check(c, listed_leaf, NULL, NOW, 0, 1, NULL), CERT_REVOKED);
	assert_int_equal(cert_check(c, leaf, NULL, NOW, 0, 1, NULL), CERT_CRL_STALE);
	cert_checker_free(c);
	X509_free(leaf);
	X509_free(listed_leaf);
}

static void test_crl_load_errors(void **state)
{
	const char *ca = write_certs("ca.pem", pki.ca, NULL);
	const char *foreign = write_crl(
	    "foreign.crl", make_crl(pki.other, pki.other_key, NOW - 3600, NOW + DAY, NULL, 0), 0);
	/* our CA's name, another key */
	const char *forged = write_crl(
	    "forged.crl", make_crl(pki.ca, pki.other_key, NOW - 3600, NOW + DAY, NULL, 0), 1);
	/* signed by the intermediate, which is not an anchor */
	const char *inter = write_crl(
	    "inter.crl", make_crl(pki.inter, pki.inter_key, NOW - 3600, NOW + DAY, NULL, 0), 0);
	const char *garbage = write_text("garbage.crl", "not a CRL at all\n");
	const char *cert_as = write_certs("cert-as.crl", pki.ca, NULL);
	const char *missing = tmp_path("missing.crl");

	load_fails(ca, foreign, foreign, "not one of the trust anchors");
	load_fails(ca, forged, forged, "does not verify");
	load_fails(ca, inter, inter, "not one of the trust anchors");
	load_fails(ca, garbage, garbage, "CRL");
	load_fails(ca, cert_as, cert_as, "CRL");
	load_fails(ca, missing, missing, "cannot open");
	load_fails(NULL, foreign, foreign, "not one of the trust anchors");
	/* the good CRL first, then a bad one: the whole load fails */
	{
		struct cert_checker *c = (struct cert_checker *)1;
		const char *good = write_crl(
		    "fresh.crl", make_crl(pki.ca, pki.ca_key, NOW - 3600, NOW + DAY, NULL, 0), 0);
		char *crls[2] = {(char *)good, (char *)foreign};

		assert_int_equal(cert_checker_load(ca, crls, 2, &c, err, sizeof(err)), -1);
		assert_null(c);
		assert_non_null(strstr(err, foreign));
	}
}

static void test_anchor_load_errors(void **state)
{
	const char *empty = write_text("empty.pem", "");
	const char *notpem = write_text("notpem.pem", "-----BEGIN PUBLIC KEY-----\nAAAA\n"
	                                              "-----END PUBLIC KEY-----\n");
	const char *garbage = write_text("garbage.crl", "hello\n");
	const char *missing = tmp_path("missing.pem");
	struct cert_checker *c = NULL;

	load_fails(empty, NULL, empty, "empty");
	load_fails(notpem, NULL, notpem, "no certificate");
	load_fails(garbage, NULL, garbage, "PEM");
	load_fails(missing, NULL, missing, "cannot open");
	load_fails(tmpdir, NULL, tmpdir, "not a regular file");
	/* a NULL or tiny error buffer is fine */
	assert_int_equal(cert_checker_load(missing, NULL, 0, &c, NULL, 0), -1);
	assert_int_equal(cert_checker_load(missing, NULL, 0, &c, err, 4), -1);
	assert_int_equal(strlen(err), 3);
}

static void test_non_repudiation(void **state)
{
	struct cert_checker *c = load(write_certs("ca.pem", pki.ca, NULL), NULL, NULL);
	X509 *no_ku = make_leaf(60, NOW - DAY, NOW + YEAR, KU_NONE);
	X509 *sign_only = make_leaf(61, NOW - DAY, NOW + YEAR, KU_SIGN_ONLY);
	X509 *nr = make_leaf(62, NOW - DAY, NOW + YEAR, KU_SIGN_NR);
	X509 *nr_only = make_leaf(63, NOW - DAY, NOW + YEAR, "critical,nonRepudiation");
	time_t until = 1;

	assert_int_equal(cert_check(c, no_ku, NULL, NOW, 0, 1, &until), CERT_NO_NON_REPUDIATION);
	assert_int_equal(until, 0);
	assert_int_equal(cert_check(c, no_ku, NULL, NOW, 0, 0, NULL), CERT_OK);
	assert_int_equal(cert_check(c, sign_only, NULL, NOW, 0, 1, NULL), CERT_NO_NON_REPUDIATION);
	assert_int_equal(cert_check(c, sign_only, NULL, NOW, 0, 0, NULL), CERT_OK);
	assert_int_equal(cert_check(c, nr, NULL, NOW, 0, 1, NULL), CERT_OK);
	assert_int_equal(cert_check(c, nr_only, NULL, NOW, 0, 1, NULL), CERT_OK);
	X509_free(no_ku);
	X509_free(sign_only);
	X509_free(nr);
	X509_free(nr_only);
	cert_checker_free(c);
}

/* One checker, many threads, each certificate its own answer. */
struct worker {
	const struct cert_checker *c;
	X509 *good, *revoked;
	int failures;
};

static void *work(void *arg)
{
	struct worker *w = arg;
	int i;

	for (i = 0; i < 200; i++) {
		if (cert_check(w->c, w->good, NULL, NOW, DAY, 1, NULL) != CERT_OK)
			w->failures++;
		if (cert_check(w->c, w->revoked, NULL, NOW, DAY, 1, NULL) != CERT_REVOKED)
			w->failures++;
	}
	return NULL;
}

static void test_threads(void **state)
{
	static const long listed[] = {71};
	const char *ca = write_certs("ca.pem", pki.ca, NULL);
	const char *crl = write_crl(
	    "fresh.crl", make_crl(pki.ca, pki.ca_key, NOW - 3600, NOW + 7 * DAY, listed, 1), 0);
	struct cert_checker *c = load(ca, crl, NULL);
	struct worker w[4];
	pthread_t th[4];
	int i;

	for (i = 0; i < 4; i++) {
		w[i].c = c;
		w[i].good = make_leaf(70, NOW - DAY, NOW + YEAR, KU_SIGN_NR);
		w[i].revoked = make_leaf(71, NOW - DAY, NOW + YEAR, KU_SIGN_NR);
		w[i].failures = 0;
		assert_int_equal(pthread_create(&th[i], NULL, work, &w[i]), 0);
	}
	for (i = 0; i < 4; i++) {
		assert_int_equal(pthread_join(th[i], NULL), 0);
		assert_int_equal(w[i].failures, 0);
		X509_free(w[i].good);
		X509_free(w[i].revoked);
	}
	cert_checker_free(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_reasons),         cmocka_unit_test(test_good_and_missing),
	    cmocka_unit_test(test_validity_window), cmocka_unit_test(test_min_validity),
	    cmocka_unit_test(test_untrusted),       cmocka_unit_test(test_intermediate),
	    cmocka_unit_test(test_revoked),         cmocka_unit_test(test_stale_crl),
	    cmocka_unit_test(test_crl_load_errors), cmocka_unit_test(test_anchor_load_errors),
	    cmocka_unit_test(test_non_repudiation), cmocka_unit_test(test_threads),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
