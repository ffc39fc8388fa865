/* tok_spki_parse, the public key of a wrapped credential: its quick form for EC P-256/P-384
 * gives the key d2i_PUBKEY gives, and refuses what d2i_PUBKEY refuses (a point off the curve,
 * a cut or lengthened SPKI, trailing bytes, unused bits in its BIT STRING); RSA and compressed
 * points take d2i_PUBKEY, held to the one DER that encodes the key. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/x509.h>

#include "pkcs11/wrapped.h"

static EVP_PKEY *gen(const char *alg, const char *param)
{
	EVP_PKEY *pk = param != NULL ? EVP_PKEY_Q_keygen(NULL, NULL, alg, param)
	                             : EVP_PKEY_Q_keygen(NULL, NULL, alg, (size_t)2048);

	assert_non_null(pk);
	return pk;
}

/* The SPKI DER of pk, uncompressed or (EC) compressed. */
static int spki_of(EVP_PKEY *pk, int compressed, unsigned char *out, size_t max)
{
	unsigned char *der = NULL;
	int n;

	if (compressed)
		assert_int_equal(EVP_PKEY_set_utf8_string_param(pk, "point-format", "compressed"),
		                 1);
	n = i2d_PUBKEY(pk, &der);
	assert_true(n > 0 && (size_t)n <= max);
	memcpy(out, der, (size_t)n);
	OPENSSL_free(der);
	return n;
}

/* Parsed, it is the same key as pk, and d2i_PUBKEY agrees. */
static void same_key(EVP_PKEY *pk, const unsigned char *spki, size_t len)
{
	const unsigned char *p = spki;
	EVP_PKEY *a = tok_spki_parse(spki, len), *b = d2i_PUBKEY(NULL, &p, (long)len);

	assert_non_null(a);
	assert_non_null(b);
	assert_int_equal(EVP_PKEY_eq(a, pk), 1);
	assert_int_equal(EVP_PKEY_eq(a, b), 1);
	EVP_PKEY_free(a);
	EVP_PKEY_free(b);
}

static void ec_curves(void **state)
{
	static const char *const curves[] = {"P-256", "P-384"};
	unsigned char spki[256];
	size_t i;
	int n;

	(void)state;
	for (i = 0; i < 2; i++) {
		EVP_PKEY *pk = gen("EC", curves[i]);

		n = spki_of(pk, 0, spki, sizeof(spki));
		assert_int_equal(n, i == 0 ? 91 : 120);
		same_key(pk, spki, (size_t)n);
		n = spki_of(pk, 1, spki, sizeof(spki));
		same_key(pk, spki, (size_t)n);
		EVP_PKEY_free(pk);
	}
}

static void rsa(void **state)
{
	unsigned char spki[512];
	EVP_PKEY *pk = gen("RSA", NULL);
	int n = spki_of(pk, 0, spki, sizeof(spki));

	(void)state;
	same_key(pk, spki, (size_t)n);
	EVP_PKEY_free(pk);
}

static void refused(void **state)
{
	unsigned char spki[256], bad[260];
	EVP_PKEY *pk = gen("EC", "P-256"), *got;
	int n = spki_of(pk, 0, spki, sizeof(spki));

	(void)state;
	/* Y + 1: off the curve (a P-256 point's Y is never within one of another's for the
	 * same X but the negation, which would not be +1 here). */
	memcpy(bad, spki, (size_t)n);
	bad[n - 1] ^= 0x01;
	assert_null(tok_spki_parse(bad, (size_t)n));
	/* Cut, trailing byte, wrong BIT STRING "unused bits", no SPKI at all. */
	assert_null(tok_spki_parse(spki, (size_t)n - 1));
	memcpy(bad, spki, (size_t)n);
	bad[n] = 0x00;
	assert_null(tok_spki_parse(bad, (size_t)n + 1));
	memcpy(bad, spki, (size_t)n);
	bad[25] = 0x01;
	assert_null(tok_spki_parse(bad, (size_t)n));
	assert_null(tok_spki_parse(spki, 0));
	assert_null(tok_spki_parse(NULL, 91));
	/* The point at X, Y but labelled P-384's OID: refused, the lengths do not fit. */
	memcpy(bad, spki, (size_t)n);
	bad[14] = 0x05;
	got = tok_spki_parse(bad, (size_t)n);
	assert_null(got);
	EVP_PKEY_free(pk);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(ec_curves),
	    cmocka_unit_test(rsa),
	    cmocka_unit_test(refused),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
