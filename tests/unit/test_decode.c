/* Request decoding: every field of signHash and signDoc bounded and checked. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "signer/listener/csc.h"

/* base64 of 32 bytes 0x00..0x1f, 48 bytes, and 31 bytes */
#define H32 "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
#define H48 "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4v"
#define H31 "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHg=="
#define SHA256 "2.16.840.1.101.3.4.2.1"
#define SHA384 "2.16.840.1.101.3.4.2.2"

static struct sign_req req;
static struct refusal err;
static json_t *doc;

static int decode_hash(const char *text)
{
	json_error_t je;

	/* req keeps pointers into the document: it lives until the next decode. */
	json_decref(doc);
	doc = json_loads(text, JSON_REJECT_DUPLICATES, &je);
	assert_non_null(doc);
	memset(&err, 0, sizeof(err));
	return csc_decode_sign_hash(doc, &req, &err);
}

static int decode_doc(const char *text)
{
	json_error_t je;

	/* req keeps pointers into the document: it lives until the next decode. */
	json_decref(doc);
	doc = json_loads(text, JSON_REJECT_DUPLICATES, &je);
	assert_non_null(doc);
	memset(&err, 0, sizeof(err));
	return csc_decode_sign_doc(doc, &req, &err);
}

static void expect_400(const char *reason)
{
	const char *error = NULL;

	assert_int_equal(csc_status(err.reason, &error), 400);
	assert_string_equal(error, "invalid_request");
	assert_string_equal(reason_name(err.reason), reason);
	assert_true(strlen(err.desc) > 0);
}

static void good_sign_hash(void **state)
{
	assert_int_equal(decode_hash("{\"credentialID\":\"cit-1\",\"hashes\":[\"" H32 "\",\"" H32
	                             "\"],\"hashAlgorithmOID\":\"" SHA256
	                             "\",\"signAlgo\":\"1.2.840.10045.2.1\",\"purpose\":\"p\","
	                             "\"SAD\":\"a.b.c\",\"clientData\":\"x\"}"),
	                 0);
	assert_string_equal(req.cred, "cit-1");
	assert_int_equal(req.fam, ALG_ECDSA);
	assert_int_equal(req.hash, HASH_SHA256);
	assert_int_equal(req.nhashes, 2);
	for (int i = 0; i < 32; i++)
		assert_int_equal(req.hashes[1][i], i);
	assert_string_equal(req.purpose, "p");
	assert_int_equal(req.cms, 0);
}

static void combined_oid_implies_hash(void **state)
{
	assert_int_equal(decode_hash("{\"credentialID\":\"c\",\"hashes\":[\"" H48
	                             "\"],\"signAlgo\":\"1.2.840.10045.4.3.3\"}"),
	                 0);
	assert_int_equal(req.hash, HASH_SHA384);
	/* The combined OID and an explicit, different hash disagree. */
	assert_int_equal(decode_hash("{\"credentialID\":\"c\",\"hashes\":[\"" H48
	                             "\"],\"signAlgo\":\"1.2.840.10045.4.3.2\","
	                             "\"hashAlgorithmOID\":\"" SHA384 "\"}"),
	                 -1);
	expect_400("invalid_request");
}

static void key_oid_needs_hash(void **state)
{
	assert_int_equal(decode_hash("{\"credentialID\":\"c\",\"hashes\":[\"" H32
	                             "\"],\"signAlgo\":\"1.2.840.113549.1.1.1\"}"),
	                 -1);
	expect_400("invalid_request");
}

static void wrong_digest_length(void **state)
{
	assert_int_equal(decode_hash("{\"credentialID\":\"c\",\"hashes\":[\"" H31
	                             "\"],\"hashAlgorithmOID\":\"" SHA256
	                             "\",\"signAlgo\":\"1.2.840.10045.2.1\"}"),
	                 -1);
	expect_400("invalid_digest");
	assert_int_equal(decode_hash("{\"credentialID\":\"c\",\"hashes\":[\"" H48
	                             "\"],\"hashAlgorithmOID\":\"" SHA256
	                             "\",\"signAlgo\":\"1.2.840.10045.2.1\"}"),
	                 -1);
	expect_400("invalid_digest");
}

static void bad_base64(void **state)
{
	const char *bad[] = {"not base64!",
	                     "AAEC",
	                     "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8",
	                     "",
	                     "====",
	                     "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=AAAA"};
	char text[512];

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(
		    text, sizeof(text),
		    "{\"credentialID\":\"c\",\"hashes\":[\"%s\"],\"hashAlgorithmOID\":\"" SHA256
		    "\",\"signAlgo\":\"1.2.840.10045.2.1\"}",
		    bad[i]);
		assert_int_equal(decode_hash(text), -1);
		expect_400("invalid_digest");
	}
	/* a hash that is not a string */
	assert_int_equal(decode_hash("{\"credentialID\":\"c\",\"hashes\":[42],\"hashAlgorithmOID\":"
	                             "\"" SHA256 "\",\"signAlgo\":\"1.2.840.10045.2.1\"}"),
	                 -1);
	expect_400("invalid_digest");
}

static void missing_and_mistyped_fields(void **state)
{
	assert_int_equal(decode_hash("{\"hashes\":[\"" H32 "\"],\"hashAlgorithmOID\":\"" SHA256
	                             "\",\"signAlgo\":\"1.2.840.10045.2.1\"}"),
	                 -1);
	assert_non_null(strstr(err.desc, "credentialID"));
	assert_int_equal(decode_hash("{\"credentialID\":7,\"hashes\":[\"" H32
	                             "\"],\"hashAlgorithmOID\":\"" SHA256
	                             "\",\"signAlgo\":\"1.2.840.10045.2.1\"}"),
	                 -1);
	assert_int_equal(decode_hash("{\"credentialID\":\"c\",\"hashes\":\"" H32
	                             "\",\"hashAlgorithmOID\":\"" SHA256
	                             "\",\"signAlgo\":\"1.2.840.10045.2.1\"}"),
	                 -1);
	assert_int_equal(decode_hash("{\"credentialID\":\"c\",\"hashes\":[],\"hashAlgorithmOID\":"
	                             "\"" SHA256 "\",\"signAlgo\":\"1.2.840.10045.2.1\"}"),
	                 -1);
	assert_int_equal(decode_hash("{\"credentialID\":\"c\",\"hashes\":[\"" H32
	                             "\"],\"hashAlgorithmOID\":\"" SHA256 "\"}"),
	                 -1);
	assert_non_null(strstr(err.desc, "signAlgo"));
	assert_int_equal(decode_hash("[1,2,3]"), -1);
}

static void unknown_field_refused(void **state)
{
	assert_int_equal(
	    decode_hash("{\"credentialID\":\"c\",\"hashes\":[\"" H32
	                "\"],\"hashAlgorithmOID\":\"" SHA256
	                "\",\"signAlgo\":\"1.2.840.10045.2.1\",\"credentialId\":\"d\"}"),
	    -1);
	expect_400("invalid_request");
	assert_non_null(strstr(err.desc, "credentialId"));
}

static void bad_credential_id(void **state)
{
	assert_int_equal(decode_hash("{\"credentialID\":\"../etc/passwd\",\"hashes\":[\"" H32
	                             "\"],\"hashAlgorithmOID\":\"" SHA256
	                             "\",\"signAlgo\":\"1.2.840.10045.2.1\"}"),
	                 -1);
	expect_400("unknown_credential");
	char text[512];
	char longid[100];
	memset(longid, 'a', sizeof(longid) - 1);
	longid[sizeof(longid) - 1] = '\0';
	snprintf(text, sizeof(text),
	         "{\"credentialID\":\"%s\",\"hashes\":[\"" H32 "\"],\"hashAlgorithmOID\":\"" SHA256
	         "\",\"signAlgo\":\"1.2.840.10045.2.1\"}",
	         longid);
	assert_int_equal(decode_hash(text), -1);
}

static void unknown_algorithms(void **state)
{
	assert_int_equal(decode_hash("{\"credentialID\":\"c\",\"hashes\":[\"" H32
	                             "\"],\"hashAlgorithmOID\":\"" SHA256
	                             "\",\"signAlgo\":\"1.2.3.4\"}"),
	                 -1);
	expect_400("algorithm_not_supported");
	assert_int_equal(decode_hash("{\"credentialID\":\"c\",\"hashes\":[\"" H32
	                             "\"],\"hashAlgorithmOID\":\"1.3.14.3.2.26\","
	                             "\"signAlgo\":\"1.2.840.10045.2.1\"}"),
	                 -1);
	expect_400("algorithm_not_supported");
}

static void too_many_hashes(void **state)
{
	size_t cap = 64 * (sizeof(H32) + 3) + 256;
	char *text = malloc(cap);
	size_t off;

	assert_non_null(text);
	off = (size_t)snprintf(text, cap,
	                       "{\"credentialID\":\"c\",\"hashAlgorithmOID\":\"" SHA256
	                       "\",\"signAlgo\":\"1.2.840.10045.2.1\",\"hashes\":[");
	for (int i = 0; i < WIRE_MAX_HASHES + 1; i++)
		off += (size_t)snprintf(text + off, cap - off, "%s\"" H32 "\"", i ? "," : "");
	snprintf(text + off, cap - off, "]}");
	assert_int_equal(decode_hash(text), -1);
	expect_400("too_many_hashes");
	free(text);
}

/* base64 DER RSASSA-PSS-params built with OpenSSL */
static char *pss_params_b64(int hash_nid, int mgf_nid, long salt)
{
	RSA_PSS_PARAMS *p = RSA_PSS_PARAMS_new();
	X509_ALGOR *mh = X509_ALGOR_new();
	ASN1_STRING *ms = NULL;
	unsigned char *der = NULL;
	static char out[512];
	int len;

	p->hashAlgorithm = X509_ALGOR_new();
	X509_ALGOR_set_md(p->hashAlgorithm, EVP_get_digestbynid(hash_nid));
	X509_ALGOR_set_md(mh, EVP_get_digestbynid(mgf_nid));
	ASN1_item_pack(mh, ASN1_ITEM_rptr(X509_ALGOR), &ms);
	p->maskGenAlgorithm = X509_ALGOR_new();
	X509_ALGOR_set0(p->maskGenAlgorithm, OBJ_nid2obj(NID_mgf1), V_ASN1_SEQUENCE, ms);
	p->saltLength = ASN1_INTEGER_new();
	ASN1_INTEGER_set(p->saltLength, salt);
	len = i2d_RSA_PSS_PARAMS(p, &der);
	EVP_EncodeBlock((unsigned char *)out, der, len);
	OPENSSL_free(der);
	X509_ALGOR_free(mh);
	RSA_PSS_PARAMS_free(p);
	return out;
}

static void pss_params(void **state)
{
	char text[1024];

	snprintf(text, sizeof(text),
	         "{\"credentialID\":\"c\",\"hashes\":[\"" H32 "\"],\"hashAlgorithmOID\":\"" SHA256
	         "\",\"signAlgo\":\"1.2.840.113549.1.1.10\",\"signAlgoParams\":\"%s\"}",
	         pss_params_b64(NID_sha256, NID_sha256, 20));
	assert_int_equal(decode_hash(text), 0);
	assert_int_equal(req.fam, ALG_RSA_PSS);
	assert_int_equal(req.pss_salt, 20);
	/* MGF1 hash differing from the message hash */
	snprintf(text, sizeof(text),
	         "{\"credentialID\":\"c\",\"hashes\":[\"" H32 "\"],\"hashAlgorithmOID\":\"" SHA256
	         "\",\"signAlgo\":\"1.2.840.113549.1.1.10\",\"signAlgoParams\":\"%s\"}",
	         pss_params_b64(NID_sha256, NID_sha1, 32));
	assert_int_equal(decode_hash(text), -1);
	/* params hash differing from hashAlgorithmOID */
	snprintf(text, sizeof(text),
	         "{\"credentialID\":\"c\",\"hashes\":[\"" H32 "\"],\"hashAlgorithmOID\":\"" SHA256
	         "\",\"signAlgo\":\"1.2.840.113549.1.1.10\",\"signAlgoParams\":\"%s\"}",
	         pss_params_b64(NID_sha384, NID_sha384, 48));
	assert_int_equal(decode_hash(text), -1);
	/* garbage, and params for a non-PSS algorithm */
	assert_int_equal(decode_hash("{\"credentialID\":\"c\",\"hashes\":[\"" H32
	                             "\"],\"hashAlgorithmOID\":\"" SHA256
	                             "\",\"signAlgo\":\"1.2.840.113549.1.1.10\","
	                             "\"signAlgoParams\":\"MAA=\"}"),
	                 -1);
	assert_int_equal(decode_hash("{\"credentialID\":\"c\",\"hashes\":[\"" H32
	                             "\"],\"hashAlgorithmOID\":\"" SHA256
	                             "\",\"signAlgo\":\"1.2.840.113549.1.1.1\","
	                             "\"signAlgoParams\":\"MAA=\"}"),
	                 -1);
	/* no params: salt defaults to the hash length */
	assert_int_equal(decode_hash("{\"credentialID\":\"c\",\"hashes\":[\"" H48
	                             "\"],\"hashAlgorithmOID\":\"" SHA384
	                             "\",\"signAlgo\":\"RSASSA-PSS\"}"),
	                 0);
	assert_int_equal(req.pss_salt, 48);
}

static void good_sign_doc(void **state)
{
	assert_int_equal(
	    decode_doc("{\"credentialID\":\"c\",\"documentDigests\":[{\"hashes\":[\"" H32
	               "\"],\"hashAlgorithmOID\":\"" SHA256 "\"},{\"hashes\":[\"" H32 "\",\"" H32
	               "\"],\"hashAlgorithmOID\":\"" SHA256 "\"}],\"signature_format\":\"C\","
	               "\"conformance_level\":\"Ades-B-B\",\"signed_envelope_property\":"
	               "\"Detached\",\"signAlgo\":\"1.2.840.10045.4.3.2\"}"),
	    0);
	assert_int_equal(req.cms, 1);
	assert_int_equal(req.nhashes, 3);
	assert_int_equal(req.hash, HASH_SHA256);
}

static void bad_sign_doc(void **state)
{
	/* XAdES, enveloping, a level we do not make, mixed hash algorithms */
	assert_int_equal(
	    decode_doc("{\"credentialID\":\"c\",\"documentDigests\":[{\"hashes\":[\"" H32
	               "\"],\"hashAlgorithmOID\":\"" SHA256 "\"}],\"signature_format\":\"X\","
	               "\"signAlgo\":\"1.2.840.10045.4.3.2\"}"),
	    -1);
	assert_int_equal(
	    decode_doc("{\"credentialID\":\"c\",\"documentDigests\":[{\"hashes\":[\"" H32
	               "\"],\"hashAlgorithmOID\":\"" SHA256
	               "\"}],\"signature_format\":\"C\",\"signed_envelope_property\":"
	               "\"Enveloping\",\"signAlgo\":\"1.2.840.10045.4.3.2\"}"),
	    -1);
	assert_int_equal(
	    decode_doc("{\"credentialID\":\"c\",\"documentDigests\":[{\"hashes\":[\"" H32
	               "\"],\"hashAlgorithmOID\":\"" SHA256
	               "\"}],\"signature_format\":\"C\",\"conformance_level\":"
	               "\"Ades-B-LTA\",\"signAlgo\":\"1.2.840.10045.4.3.2\"}"),
	    -1);
	assert_int_equal(
	    decode_doc("{\"credentialID\":\"c\",\"documentDigests\":[{\"hashes\":[\"" H32
	               "\"],\"hashAlgorithmOID\":\"" SHA256 "\"},{\"hashes\":[\"" H48
	               "\"],\"hashAlgorithmOID\":\"" SHA384 "\"}],\"signature_format\":\"C\","
	               "\"signAlgo\":\"1.2.840.10045.2.1\"}"),
	    -1);
	assert_int_equal(
	    decode_doc("{\"credentialID\":\"c\",\"documentDigests\":[],"
	               "\"signature_format\":\"C\",\"signAlgo\":\"1.2.840.10045.2.1\"}"),
	    -1);
	assert_int_equal(
	    decode_doc("{\"credentialID\":\"c\",\"documentDigests\":[{\"hashes\":[\"" H32
	               "\"],\"hashAlgorithmOID\":\"" SHA256 "\",\"extra\":1}],"
	               "\"signature_format\":\"C\",\"signAlgo\":\"1.2.840.10045.2.1\"}"),
	    -1);
}

static void error_body_is_json(void **state)
{
	struct refusal e;
	json_error_t je;
	json_t *o;
	char *s;

	refuse(&e, R_PURPOSE_NOT_ALLOWED, "%s", "quote \" and newline\n");
	s = csc_error_body(&e);
	assert_non_null(s);
	o = json_loads(s, 0, &je);
	assert_non_null(o);
	assert_string_equal(json_string_value(json_object_get(o, "error")), "access_denied");
	assert_string_equal(json_string_value(json_object_get(o, "reason")), "purpose_not_allowed");
	assert_string_equal(json_string_value(json_object_get(o, "error_description")),
	                    "quote \" and newline\n");
	json_decref(o);
	free(s);
}

/* A parameter's name is quoted cut at 64 bytes: cut inside a UTF-8 sequence, the body still
 * comes out (found by fuzz-decode: it came out NULL, and the client got a 400 with no body). */
static void error_body_with_split_utf8(void **state)
{
	char text[512], key[80];
	json_error_t je;
	json_t *o;
	const char *d;
	char *s;

	memset(key, ':', 63);
	memcpy(key + 63, "\xc6\xbc", 2);          /* U+01BC across bytes 64 and 65 */
	memcpy(key + 65, "tail", sizeof("tail")); /* with its NUL */
	snprintf(text, sizeof(text),
	         "{\"credentialID\":\"c\",\"hashes\":[\"" H32 "\"],\"hashAlgorithmOID\":\"" SHA256
	         "\",\"signAlgo\":\"1.2.840.10045.2.1\",\"%s\":1}",
	         key);
	assert_int_equal(decode_hash(text), -1);
	expect_400("invalid_request");
	s = csc_error_body(&err);
	assert_non_null(s);
	o = json_loads(s, 0, &je);
	assert_non_null(o);
	d = json_string_value(json_object_get(o, "error_description"));
	assert_non_null(d);
	assert_non_null(strstr(d, ":::::?"));
	assert_string_equal(json_string_value(json_object_get(o, "reason")), "invalid_request");
	json_decref(o);
	free(s);
	/* A whole non-ASCII name is quoted as it is. */
	refuse(&err, R_INVALID_REQUEST, "Unknown parameter \xc6\xbc");
	s = csc_error_body(&err);
	assert_non_null(s);
	o = json_loads(s, 0, &je);
	assert_non_null(o);
	assert_string_equal(json_string_value(json_object_get(o, "error_description")),
	                    "Unknown parameter \xc6\xbc");
	json_decref(o);
	free(s);
}

/* Every reason has a name, and docs/api.md's error table is csc_status(): each reason listed
 * once, with the HTTP status and CSC error the listener answers. */
static void reasons_match_the_api_doc(void **state)
{
	int seen[R_COUNT] = {0};
	char line[1024];
	FILE *f;

	assert_null(reason_name(R_NONE));
	assert_null(reason_name(R_COUNT));
	assert_int_equal(reason_lookup("no_such_reason"), R_NONE);
	for (int r = R_NONE + 1; r < R_COUNT; r++) {
		assert_non_null(reason_name((enum reason)r));
		assert_int_equal(reason_lookup(reason_name((enum reason)r)), r);
	}
	f = fopen(TEST_DATA "/../../docs/api.md", "r");
	assert_non_null(f);
	while (fgets(line, sizeof(line), f) != NULL) {
		char error[64], names[512], *save = NULL;
		const char *want;
		int http;

		if (sscanf(line, "| %d | %63[a-z_] | %511[^|]|", &http, error, names) != 3)
			continue;
		for (char *t = strtok_r(names, ", ", &save); t != NULL;
		     t = strtok_r(NULL, ", ", &save)) {
			enum reason r;

			if (t[0] != '`')
				continue;
			t[strcspn(t + 1, "`") + 1] = '\0';
			r = reason_lookup(t + 1);
			if (r == R_NONE)
				fail_msg("docs/api.md names an unknown reason %s", t + 1);
			assert_int_equal(csc_status(r, &want), http);
			assert_string_equal(want, error);
			seen[r]++;
		}
	}
	fclose(f);
	for (int r = R_NONE + 1; r < R_COUNT; r++)
		if (seen[r] != 1)
			fail_msg("docs/api.md lists reason %s %d times",
			         reason_name((enum reason)r), seen[r]);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(good_sign_hash),
	    cmocka_unit_test(combined_oid_implies_hash),
	    cmocka_unit_test(key_oid_needs_hash),
	    cmocka_unit_test(wrong_digest_length),
	    cmocka_unit_test(bad_base64),
	    cmocka_unit_test(missing_and_mistyped_fields),
	    cmocka_unit_test(unknown_field_refused),
	    cmocka_unit_test(bad_credential_id),
	    cmocka_unit_test(unknown_algorithms),
	    cmocka_unit_test(too_many_hashes),
	    cmocka_unit_test(pss_params),
	    cmocka_unit_test(good_sign_doc),
	    cmocka_unit_test(bad_sign_doc),
	    cmocka_unit_test(error_body_is_json),
	    cmocka_unit_test(error_body_with_split_utf8),
	    cmocka_unit_test(reasons_match_the_api_doc),
	};
	int r = cmocka_run_group_tests(tests, NULL, NULL);

	json_decref(doc);
	return r;
}
