/* DER conversions of the signing path: ECDSA r||s to ECDSA-Sig-Value, and the PKCS#1 v1.5
 * DigestInfo. Both are checked by decoding with OpenSSL and against RFC 8017's fixed bytes. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/objects.h>
#include <openssl/rand.h>

#include "pkcs11/token.h"

/* Convert raw (2 * half bytes), decode the DER back and compare r and s with the halves. */
static void roundtrip(const uint8_t *raw, size_t half)
{
	uint8_t der[2 * 66 + 16];
	size_t derlen = 0;
	const unsigned char *p;
	ECDSA_SIG *sig;
	const BIGNUM *r, *s;
	BIGNUM *wr, *ws;

	assert_true(2 * half + 16 <= sizeof(der));
	assert_int_equal(tok_ecdsa_raw_to_der(raw, 2 * half, der, &derlen), TOK_OK);
	assert_true(derlen > 0 && derlen <= 2 * half + 16);

	p = der;
	sig = d2i_ECDSA_SIG(NULL, &p, (long)derlen);
	assert_non_null(sig);
	/* Consumed exactly: no trailing bytes. */
	assert_ptr_equal(p, der + derlen);
	ECDSA_SIG_get0(sig, &r, &s);
	wr = BN_bin2bn(raw, (int)half, NULL);
	ws = BN_bin2bn(raw + half, (int)half, NULL);
	assert_non_null(wr);
	assert_non_null(ws);
	assert_int_equal(BN_cmp(r, wr), 0);
	assert_int_equal(BN_cmp(s, ws), 0);
	BN_free(wr);
	BN_free(ws);
	ECDSA_SIG_free(sig);
}

/* Length byte of the first INTEGER (r) in the DER output. */
static size_t der_r_len(const uint8_t *raw, size_t half, uint8_t *first_content)
{
	uint8_t der[2 * 66 + 16];
	size_t derlen = 0;

	assert_int_equal(tok_ecdsa_raw_to_der(raw, 2 * half, der, &derlen), TOK_OK);
	/* SEQUENCE, short form for P-256/P-384, then INTEGER tag. */
	assert_int_equal(der[0], 0x30);
	assert_true(der[1] < 0x80);
	assert_int_equal(der[1], derlen - 2);
	assert_int_equal(der[2], 0x02);
	*first_content = der[4];
	return der[3];
}

static void ecdsa_shapes(size_t half)
{
	uint8_t raw[2 * 48];
	uint8_t c;
	int i;

	assert_true(half <= 48);

	/* High bit set in both: DER needs a 0x00 pad to keep them positive. */
	memset(raw, 0xff, 2 * half);
	raw[0] = 0x80;
	raw[half] = 0xc3;
	roundtrip(raw, half);
	assert_int_equal(der_r_len(raw, half, &c), half + 1);
	assert_int_equal(c, 0x00);

	/* Leading zero bytes in r: DER drops them (minimal encoding). */
	memset(raw, 0x11, 2 * half);
	raw[0] = 0x00;
	raw[1] = 0x00;
	raw[2] = 0x7f;
	roundtrip(raw, half);
	assert_int_equal(der_r_len(raw, half, &c), half - 2);
	assert_int_equal(c, 0x7f);

	/* Leading zero followed by a high-bit byte: the zero stays as the pad. */
	memset(raw, 0x22, 2 * half);
	raw[0] = 0x00;
	raw[1] = 0x90;
	raw[half] = 0x00;
	raw[half + 1] = 0x00;
	raw[half + 2] = 0x00;
	raw[half + 3] = 0x81;
	roundtrip(raw, half);
	assert_int_equal(der_r_len(raw, half, &c), half);
	assert_int_equal(c, 0x00);

	/* Small values. */
	memset(raw, 0, 2 * half);
	raw[half - 1] = 1;
	raw[2 * half - 1] = 2;
	roundtrip(raw, half);

	/* Random values, whatever their first bytes. */
	for (i = 0; i < 200; i++) {
		assert_int_equal(RAND_bytes(raw, (int)(2 * half)), 1);
		if (i % 3 == 0)
			raw[0] &= 0x7f;
		if (i % 5 == 0)
			raw[half] = 0;
		roundtrip(raw, half);
	}
}

static void test_ecdsa_p256(void **state)
{
	ecdsa_shapes(32);
}

static void test_ecdsa_p384(void **state)
{
	ecdsa_shapes(48);
}

static void test_ecdsa_refused(void **state)
{
	uint8_t raw[200];
	uint8_t der[sizeof(raw) + 16];
	size_t derlen = 99;

	memset(raw, 0x42, sizeof(raw));
	assert_int_equal(tok_ecdsa_raw_to_der(raw, 0, der, &derlen), TOK_ERR_BAD_INPUT);
	assert_int_equal(derlen, 0);
	assert_int_equal(tok_ecdsa_raw_to_der(raw, 63, der, &derlen), TOK_ERR_BAD_INPUT);
	assert_int_equal(tok_ecdsa_raw_to_der(raw, 97, der, &derlen), TOK_ERR_BAD_INPUT);
	assert_int_equal(tok_ecdsa_raw_to_der(raw, 1, der, &derlen), TOK_ERR_BAD_INPUT);
	/* Larger than any curve iamsign could meet (P-521 is 2 * 66). */
	assert_int_equal(tok_ecdsa_raw_to_der(raw, 2 * 67, der, &derlen), TOK_ERR_BAD_INPUT);
	assert_int_equal(tok_ecdsa_raw_to_der(NULL, 64, der, &derlen), TOK_ERR_BAD_INPUT);
	assert_int_equal(tok_ecdsa_raw_to_der(raw, 64, NULL, &derlen), TOK_ERR_BAD_INPUT);
	assert_int_equal(tok_ecdsa_raw_to_der(raw, 64, der, NULL), TOK_ERR_BAD_INPUT);
	/* P-521 size still accepted. */
	assert_int_equal(tok_ecdsa_raw_to_der(raw, 2 * 66, der, &derlen), TOK_OK);
}

/* RFC 8017 section 9.2, note 1. */
static const uint8_t prefix_sha256[] = {0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01,
                                        0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20};
static const uint8_t prefix_sha384[] = {0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01,
                                        0x65, 0x03, 0x04, 0x02, 0x02, 0x05, 0x00, 0x04, 0x30};
static const uint8_t prefix_sha512[] = {0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01,
                                        0x65, 0x03, 0x04, 0x02, 0x03, 0x05, 0x00, 0x04, 0x40};

static void check_digestinfo(int nid, size_t dlen, const uint8_t *prefix, size_t plen)
{
	uint8_t dig[TOK_MAX_DIGEST];
	uint8_t out[TOK_MAX_DIGEST + 32];
	size_t outlen = 0;
	size_t i;

	for (i = 0; i < dlen; i++)
		dig[i] = (uint8_t)(0xa0 + i);
	assert_int_equal(tok_digestinfo(nid, dig, dlen, out, &outlen), TOK_OK);
	assert_int_equal(outlen, plen + dlen);
	assert_true(outlen <= dlen + 32);
	assert_memory_equal(out, prefix, plen);
	assert_memory_equal(out + plen, dig, dlen);
}

static void test_digestinfo(void **state)
{
	check_digestinfo(NID_sha256, 32, prefix_sha256, sizeof(prefix_sha256));
	check_digestinfo(NID_sha384, 48, prefix_sha384, sizeof(prefix_sha384));
	check_digestinfo(NID_sha512, 64, prefix_sha512, sizeof(prefix_sha512));
}

static void test_digestinfo_refused(void **state)
{
	uint8_t dig[TOK_MAX_DIGEST + 1];
	uint8_t out[TOK_MAX_DIGEST + 33];
	size_t outlen = 99;

	memset(dig, 0x5a, sizeof(dig));
	assert_int_equal(tok_digestinfo(NID_sha256, dig, 31, out, &outlen), TOK_ERR_BAD_INPUT);
	assert_int_equal(outlen, 0);
	assert_int_equal(tok_digestinfo(NID_sha256, dig, 33, out, &outlen), TOK_ERR_BAD_INPUT);
	assert_int_equal(tok_digestinfo(NID_sha256, dig, 48, out, &outlen), TOK_ERR_BAD_INPUT);
	assert_int_equal(tok_digestinfo(NID_sha384, dig, 32, out, &outlen), TOK_ERR_BAD_INPUT);
	assert_int_equal(tok_digestinfo(NID_sha512, dig, 65, out, &outlen), TOK_ERR_BAD_INPUT);
	assert_int_equal(tok_digestinfo(NID_sha512, dig, 0, out, &outlen), TOK_ERR_BAD_INPUT);
	/* Hashes iamsign does not sign with. */
	assert_int_equal(tok_digestinfo(NID_sha1, dig, 20, out, &outlen), TOK_ERR_BAD_INPUT);
	assert_int_equal(tok_digestinfo(NID_md5, dig, 16, out, &outlen), TOK_ERR_BAD_INPUT);
	assert_int_equal(tok_digestinfo(NID_undef, dig, 32, out, &outlen), TOK_ERR_BAD_INPUT);
	assert_int_equal(tok_digestinfo(NID_sha256, NULL, 32, out, &outlen), TOK_ERR_BAD_INPUT);
	assert_int_equal(tok_digestinfo(NID_sha256, dig, 32, NULL, &outlen), TOK_ERR_BAD_INPUT);
	assert_int_equal(tok_digestinfo(NID_sha256, dig, 32, out, NULL), TOK_ERR_BAD_INPUT);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_ecdsa_p256),         cmocka_unit_test(test_ecdsa_p384),
	    cmocka_unit_test(test_ecdsa_refused),      cmocka_unit_test(test_digestinfo),
	    cmocka_unit_test(test_digestinfo_refused),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
