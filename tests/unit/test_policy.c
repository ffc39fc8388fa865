/* Unit tests: policy loading and decisions (policy/policy.c) and algorithm names (algs.c). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/obj_mac.h>

#include "policy/algs.h"
#include "policy/policy.h"

#include "fixtures.h"

static char err[1024];

/* The fixtures these tests load, copied with mode 0600 by fixtures_setup(). */
static const char *const fixtures[] = {
    "policy-good.yaml",        "policy-uid-and-user.yaml", "policy-undefined-purpose.yaml",
    "policy-unknown-alg.yaml", "policy-unknown-user.yaml",
};

static const char *write_tmp(const char *text)
{
	return write_tmp_mode(text, 0600);
}

static int setup(void **state)
{
	return fixtures_setup("test-policy", "policy.yaml", fixtures,
	                      sizeof(fixtures) / sizeof(fixtures[0]));
}

static int teardown(void **state)
{
	return fixtures_teardown();
}

static struct policy *load_text(const char *text)
{
	struct policy *p = NULL;

	if (policy_load(write_tmp(text), &p, err, sizeof(err)) != 0)
		fail_msg("%s", err);
	return p;
}

/* Load text expecting failure; the message must contain each NULL-terminated needle. */
static void expect_fail(const char *text, ...)
{
	struct policy *p = (struct policy *)1;
	const char *needle;
	va_list ap;

	err[0] = '\0';
	assert_int_equal(policy_load(write_tmp(text), &p, err, sizeof(err)), -1);
	assert_null(p);
	assert_non_null(strstr(err, tmpfile_path));
	va_start(ap, text);
	while ((needle = va_arg(ap, const char *)) != NULL) {
		if (strstr(err, needle) == NULL)
			fail_msg("error \"%s\" lacks \"%s\"", err, needle);
	}
	va_end(ap);
}

static void expect_fixture_fail(const char *name, const char *needle1, const char *needle2)
{
	struct policy *p = NULL;
	char path[PATH_MAX];

	snprintf(path, sizeof(path), "%s", fixture(name));
	err[0] = '\0';
	assert_int_equal(policy_load(path, &p, err, sizeof(err)), -1);
	assert_null(p);
	if (strstr(err, path) == NULL)
		fail_msg("error \"%s\" lacks the file name", err);
	if (strstr(err, needle1) == NULL)
		fail_msg("error \"%s\" lacks \"%s\"", err, needle1);
	if (needle2 != NULL && strstr(err, needle2) == NULL)
		fail_msg("error \"%s\" lacks \"%s\"", err, needle2);
}

static struct policy *load_good(void)
{
	struct policy *p = NULL;

	if (policy_load(fixture("policy-good.yaml"), &p, err, sizeof(err)) != 0)
		fail_msg("%s", err);
	return p;
}

static const struct pol_caller *caller_named(const struct policy *p, const char *name)
{
	size_t i;

	for (i = 0; i < p->ncallers; i++)
		if (strcmp(p->callers[i].name, name) == 0)
			return &p->callers[i];
	fail_msg("no caller %s", name);
	return NULL;
}

#define PURPOSE                                                                                    \
	"purposes:\n"                                                                              \
	"  p1:\n"                                                                                  \
	"    sign_algorithms: [ecdsa-with-SHA256]\n"

/* ---- algorithms ---- */

static void test_algs(void **state)
{
	enum alg_family fam;
	enum alg_hash hash;
	size_t i;

	assert_int_equal(alg_hash_lookup("sha256"), HASH_SHA256);
	assert_int_equal(alg_hash_lookup("SHA384"), HASH_SHA384);
	assert_int_equal(alg_hash_lookup("Sha512"), HASH_SHA512);
	assert_int_equal(alg_hash_lookup("2.16.840.1.101.3.4.2.1"), HASH_SHA256);
	assert_int_equal(alg_hash_lookup("2.16.840.1.101.3.4.2.2"), HASH_SHA384);
	assert_int_equal(alg_hash_lookup("2.16.840.1.101.3.4.2.3"), HASH_SHA512);
	assert_int_equal(alg_hash_lookup("sha1"), HASH_NONE);
	assert_int_equal(alg_hash_lookup("2.16.840.1.101.3.4.2.4"), HASH_NONE);
	assert_int_equal(alg_hash_lookup(""), HASH_NONE);
	assert_int_equal(alg_hash_lookup(NULL), HASH_NONE);
	assert_int_equal(alg_hash_len(HASH_SHA256), 32);
	assert_int_equal(alg_hash_len(HASH_SHA384), 48);
	assert_int_equal(alg_hash_len(HASH_SHA512), 64);
	assert_int_equal(alg_hash_len(HASH_NONE), 0);
	assert_string_equal(alg_hash_name(HASH_SHA384), "sha384");
	assert_string_equal(alg_hash_oid(HASH_SHA512), "2.16.840.1.101.3.4.2.3");
	assert_null(alg_hash_oid(HASH_NONE));
	assert_int_equal(alg_hash_nid(HASH_SHA256), NID_sha256);
	assert_int_equal(alg_hash_nid(HASH_NONE), NID_undef);

	static const struct {
		const char *s;
		enum alg_family fam;
		enum alg_hash hash;
	} ok[] = {
	    {"ecdsa-with-SHA256", ALG_ECDSA, HASH_SHA256},
	    {"1.2.840.10045.4.3.2", ALG_ECDSA, HASH_SHA256},
	    {"1.2.840.10045.4.3.3", ALG_ECDSA, HASH_SHA384},
	    {"ECDSA-WITH-sha512", ALG_ECDSA, HASH_SHA512},
	    {"1.2.840.10045.4.3.4", ALG_ECDSA, HASH_SHA512},
	    {"sha256WithRSAEncryption", ALG_RSA_PKCS1, HASH_SHA256},
	    {"1.2.840.113549.1.1.11", ALG_RSA_PKCS1, HASH_SHA256},
	    {"1.2.840.113549.1.1.12", ALG_RSA_PKCS1, HASH_SHA384},
	    {"sha512WithRSAEncryption", ALG_RSA_PKCS1, HASH_SHA512},
	    {"1.2.840.113549.1.1.13", ALG_RSA_PKCS1, HASH_SHA512},
	    {"ecdsa", ALG_ECDSA, HASH_NONE},
	    {"ecPublicKey", ALG_ECDSA, HASH_NONE},
	    {"1.2.840.10045.2.1", ALG_ECDSA, HASH_NONE},
	    {"rsaEncryption", ALG_RSA_PKCS1, HASH_NONE},
	    {"1.2.840.113549.1.1.1", ALG_RSA_PKCS1, HASH_NONE},
	    {"RSASSA-PSS", ALG_RSA_PSS, HASH_NONE},
	    {"1.2.840.113549.1.1.10", ALG_RSA_PSS, HASH_NONE},
	};
	for (i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		fam = ALG_NONE;
		hash = HASH_NONE;
		if (alg_sign_lookup(ok[i].s, &fam, &hash) != 0)
			fail_msg("%s not found", ok[i].s);
		assert_int_equal(fam, ok[i].fam);
		assert_int_equal(hash, ok[i].hash);
	}
	assert_int_equal(alg_sign_lookup("md5WithRSAEncryption", &fam, &hash), -1);
	assert_int_equal(alg_sign_lookup("1.2.840.113549.1.1.5", &fam, &hash), -1);
	assert_int_equal(alg_sign_lookup("1.2.840.10045.4.3.2.", &fam, &hash), -1);
	assert_int_equal(alg_sign_lookup("", &fam, &hash), -1);
	assert_int_equal(alg_sign_lookup(NULL, &fam, &hash), -1);

	assert_string_equal(alg_sign_name(ALG_ECDSA, HASH_SHA256), "ecdsa-with-SHA256");
	assert_string_equal(alg_sign_name(ALG_RSA_PKCS1, HASH_SHA384), "sha384WithRSAEncryption");
	assert_string_equal(alg_sign_name(ALG_RSA_PSS, HASH_SHA256), "RSASSA-PSS");
	assert_string_equal(alg_sign_name(ALG_RSA_PSS, HASH_NONE), "RSASSA-PSS");
	assert_string_equal(alg_sign_name(ALG_ECDSA, HASH_NONE), "ecdsa");
	assert_string_equal(alg_sign_name(ALG_RSA_PKCS1, HASH_NONE), "rsaEncryption");

	/* advertised OIDs: six combined, PSS, two key OIDs; every one resolves */
	for (i = 0; alg_sign_oids[i] != NULL; i++)
		assert_int_equal(alg_sign_lookup(alg_sign_oids[i], &fam, &hash), 0);
	assert_int_equal(i, 9);
}

static void test_names(void **state)
{
	assert_string_equal(pol_class_name(POL_CLASS_CITIZEN), "citizen");
	assert_string_equal(pol_class_name(POL_CLASS_SEAL), "seal");
	assert_int_equal(pol_class_lookup("citizen"), POL_CLASS_CITIZEN);
	assert_int_equal(pol_class_lookup("seal"), POL_CLASS_SEAL);
	assert_int_equal(pol_class_lookup("admin"), 0);
	assert_string_equal(pol_reason_str(POL_UNKNOWN_CALLER), "unknown_caller");
	assert_string_equal(pol_reason_str(POL_PURPOSE_REQUIRED), "purpose_required");
	assert_string_equal(pol_reason_str(POL_PURPOSE_NOT_ALLOWED), "purpose_not_allowed");
	assert_string_equal(pol_reason_str(POL_CLASS_NOT_ALLOWED), "class_not_allowed");
	assert_string_equal(pol_reason_str(POL_ALGORITHM_NOT_ALLOWED), "algorithm_not_allowed");
	assert_string_equal(pol_reason_str(POL_HASH_NOT_ALLOWED), "hash_algorithm_not_allowed");
	assert_string_equal(pol_reason_str(POL_TOO_MANY_HASHES), "too_many_hashes");
}

/* ---- loading ---- */

static void test_good_full(void **state)
{
	struct policy *p = load_good();
	const struct pol_caller *c;
	const struct pol_purpose *pp;

	assert_string_equal(p->path, fixture("policy-good.yaml"));
	assert_int_equal(p->ncallers, 3);
	assert_int_equal(p->npurposes, 2);

	c = caller_named(p, "td-vehicle-licensing");
	assert_true(c->has_uid);
	assert_false(c->has_gid);
	assert_int_equal(c->uid, 1201);
	assert_int_equal(c->npurposes, 1);
	assert_string_equal(c->purposes[0], "vehicle-licence-renewal");
	assert_null(c->purposes[1]);
	assert_int_equal(c->classes, POL_CLASS_CITIZEN);
	assert_int_equal(c->rate.count, 50);
	assert_int_equal(c->rate.per_s, 1);

	c = caller_named(p, "lands-dept");
	assert_true(c->has_uid);
	assert_int_equal(c->uid, 0); /* user: root */
	assert_true(c->has_gid);
	assert_int_equal(c->gid, 300);
	assert_int_equal(c->npurposes, 2);
	assert_int_equal(c->classes, POL_CLASS_CITIZEN | POL_CLASS_SEAL);
	assert_int_equal(c->rate.count, 1000);
	assert_int_equal(c->rate.per_s, 3600);

	c = caller_named(p, "ops-group");
	assert_false(c->has_uid);
	assert_true(c->has_gid);
	assert_int_equal(c->gid, 0); /* group: root */
	assert_int_equal(c->npurposes, 1);
	assert_string_equal(c->purposes[0], "land-registry-seal");
	assert_int_equal(c->classes, POL_CLASS_SEAL);
	assert_int_equal(c->rate.count, 0);

	pp = policy_purpose(p, "vehicle-licence-renewal");
	assert_non_null(pp);
	assert_int_equal(pp->nalgs, 3);
	assert_int_equal(pp->algs[0].fam, ALG_ECDSA);
	assert_int_equal(pp->algs[0].hash, HASH_SHA256);
	assert_int_equal(pp->algs[1].fam, ALG_RSA_PKCS1);
	assert_int_equal(pp->algs[1].hash, HASH_SHA256);
	assert_int_equal(pp->algs[2].fam, ALG_RSA_PSS);
	assert_int_equal(pp->algs[2].hash, HASH_NONE);
	assert_int_equal(pp->hashes, HASH_SHA256 | HASH_SHA384);
	assert_int_equal(pp->max_hashes, 1);
	assert_true(pp->require_sad);

	pp = policy_purpose(p, "land-registry-seal");
	assert_non_null(pp);
	assert_int_equal(pp->nalgs, 2);
	assert_int_equal(pp->algs[0].fam, ALG_ECDSA);
	assert_int_equal(pp->algs[0].hash, HASH_NONE);
	assert_int_equal(pp->hashes, HASH_SHA256 | HASH_SHA384 | HASH_SHA512); /* default */
	assert_int_equal(pp->max_hashes, 20);
	assert_false(pp->require_sad);
	assert_null(policy_purpose(p, "tax-return"));

	assert_int_equal(p->creds.daily_quota, 20);
	assert_int_equal(p->creds.min_cert_validity, 86400);
	assert_true(p->creds.require_non_repudiation);
	assert_int_equal(p->creds.ncrl, 2);
	assert_string_equal(p->creds.crl[0], "/etc/iamsign/hkpost.crl");
	assert_string_equal(p->creds.crl[1], fixture("local.crl"));
	assert_null(p->creds.crl[2]);
	policy_free(p);
}

static void test_defaults(void **state)
{
	struct policy *p = load_text("callers:\n  c:\n    uid: 7\n    purposes: [p1]\n" PURPOSE);
	const struct pol_purpose *pp = policy_purpose(p, "p1");

	assert_int_equal(p->callers[0].classes, POL_CLASS_CITIZEN);
	assert_int_equal(p->callers[0].rate.count, 0);
	assert_int_equal(pp->hashes, HASH_SHA256 | HASH_SHA384 | HASH_SHA512);
	assert_int_equal(pp->max_hashes, 1);
	assert_true(pp->require_sad);
	assert_int_equal(p->creds.daily_quota, 0);
	assert_int_equal(p->creds.min_cert_validity, 0);
	assert_false(p->creds.require_non_repudiation);
	assert_non_null(p->creds.crl);
	assert_null(p->creds.crl[0]);
	assert_int_equal(p->creds.ncrl, 0);
	policy_free(p);

	/* an explicit deny-all policy is valid; JSON is YAML */
	p = load_text("{\"callers\": {}, \"purposes\": {}}");
	assert_int_equal(p->ncallers, 0);
	assert_null(policy_caller(p, 0, 0));
	policy_free(p);
}

static void test_unknown_keys(void **state)
{
	expect_fail("callers: {}\npurposes: {}\nauditors: {}\n", ":3: auditors: unknown key", NULL);
	expect_fail("callers:\n  c:\n    uid: 7\n    purposes: [p1]\n    colour: red\n" PURPOSE,
	            ":5: callers.c.colour: unknown key", NULL);
	expect_fail("callers: {}\n" PURPOSE "    max_hash: 2\n",
	            ":5: purposes.p1.max_hash: unknown", NULL);
	expect_fail("callers: {}\n" PURPOSE "credentials:\n  quota: 3\n",
	            ":6: credentials.quota: unknown key", NULL);
	expect_fail("purposes: {}\n", "callers: missing", NULL);
	expect_fail("callers: {}\n", "purposes: missing", NULL);
}

static void test_undefined_purpose(void **state)
{
	expect_fixture_fail(
	    "policy-undefined-purpose.yaml",
	    "policy-undefined-purpose.yaml:4: callers.td-vehicle-licensing.purposes:",
	    "'tax-return' is not defined");
	/* purposes may come after or before callers */
	expect_fail(PURPOSE "callers:\n  c:\n    uid: 7\n    purposes: p2\n",
	            ":7:", "'p2' is not defined", NULL);
	expect_fail("callers:\n  c:\n    uid: 7\n    purposes: []\n" PURPOSE,
	            ":4: callers.c.purposes: needs at least one purpose", NULL);
	expect_fail("callers:\n  c:\n    uid: 7\n" PURPOSE, ":2: callers.c.purposes: missing",
	            NULL);
	expect_fail("callers:\n  c:\n    uid: 7\n    purposes: [p1, p1]\n" PURPOSE, "listed twice",
	            NULL);
}

static void test_sign_algorithms(void **state)
{
	struct policy *p;

	expect_fixture_fail("policy-unknown-alg.yaml",
	                    "policy-unknown-alg.yaml:9: purposes.vehicle-licence-renewal."
	                    "sign_algorithms:",
	                    "unknown signature algorithm 'md5WithRSAEncryption'");
	expect_fail("callers: {}\npurposes:\n  p1:\n    max_hashes: 2\n",
	            ":3: purposes.p1.sign_algorithms: missing", NULL);
	expect_fail("callers: {}\npurposes:\n  p1:\n    sign_algorithms: []\n", "at least one",
	            NULL);
	expect_fail("callers: {}\npurposes:\n  p1:\n    sign_algorithms: [ecdsa, ecPublicKey]\n",
	            "listed twice", NULL);
	/* a combined algorithm whose hash the purpose forbids could never match */
	expect_fail("callers: {}\npurposes:\n  p1:\n    sign_algorithms: [ecdsa-with-SHA512]\n"
	            "    hash_algorithms: [sha256]\n",
	            ":4: purposes.p1.sign_algorithms:", "sha512", NULL);
	expect_fail("callers: {}\npurposes:\n  p1:\n    sign_algorithms: [ecdsa]\n"
	            "    hash_algorithms: [sha256, md5]\n",
	            ":5: purposes.p1.hash_algorithms: unknown hash algorithm 'md5'", NULL);
	expect_fail("callers: {}\npurposes:\n  p1:\n    sign_algorithms: [ecdsa]\n"
	            "    hash_algorithms: []\n",
	            "purposes.p1.hash_algorithms", NULL);
	expect_fail("callers: {}\npurposes:\n  p1:\n    sign_algorithms: [[ecdsa]]\n",
	            "purposes.p1.sign_algorithms", NULL);
	/* a single scalar is a one-item list; OIDs for hashes */
	p = load_text("callers: {}\npurposes:\n  p1:\n    sign_algorithms: RSASSA-PSS\n"
	              "    hash_algorithms: 2.16.840.1.101.3.4.2.3\n");
	assert_int_equal(p->purposes[0].nalgs, 1);
	assert_int_equal(p->purposes[0].algs[0].fam, ALG_RSA_PSS);
	assert_int_equal(p->purposes[0].hashes, HASH_SHA512);
	policy_free(p);
}

static void test_purpose_values(void **state)
{
	expect_fail("callers: {}\n" PURPOSE "    max_hashes: 0\n",
	            ":5: purposes.p1.max_hashes:", NULL);
	expect_fail("callers: {}\n" PURPOSE "    max_hashes: 1001\n",
	            "purposes.p1.max_hashes:", "too large", NULL);
	expect_fail("callers: {}\n" PURPOSE "    require_sad: yes\n",
	            ":5: purposes.p1.require_sad: expected true or false", NULL);
	expect_fail("callers: {}\npurposes:\n  \"bad name\":\n    sign_algorithms: [ecdsa]\n",
	            ":3: purposes: invalid purpose name", NULL);
	expect_fail("callers: {}\npurposes:\n  p1: [ecdsa]\n",
	            ":3: purposes.p1:", "expected a mapping", NULL);
}

static void test_unknown_user(void **state)
{
	expect_fixture_fail("policy-unknown-user.yaml",
	                    "policy-unknown-user.yaml:3: callers.td-vehicle-licensing.user:",
	                    "unknown user 'iamsign-no-such-user'");
	expect_fail("callers:\n  c:\n    group: iamsign-no-such-group\n    purposes: p1\n" PURPOSE,
	            ":3: callers.c.group: unknown group 'iamsign-no-such-group'", NULL);
	expect_fail("callers:\n  c:\n    user: \"bad:name\"\n    purposes: p1\n" PURPOSE,
	            ":3: callers.c.user: invalid user name", NULL);
}

static void test_identity(void **state)
{
	expect_fixture_fail(
	    "policy-uid-and-user.yaml",
	    "policy-uid-and-user.yaml:4: callers.td-vehicle-licensing:", "uid or user, not both");
	expect_fail("callers:\n  c:\n    gid: 7\n    group: root\n    purposes: p1\n" PURPOSE,
	            ":4: callers.c: give gid or group, not both", NULL);
	expect_fail("callers:\n  c:\n    purposes: p1\n    classes: [seal]\n" PURPOSE,
	            ":2: callers.c: needs uid, user, gid or group", NULL);
	expect_fail("callers:\n  a:\n    uid: 0\n    purposes: p1\n"
	            "  b:\n    user: root\n    purposes: p1\n" PURPOSE,
	            ":5: callers.b: same identity", "'a'", NULL);
	expect_fail("callers:\n  c:\n    uid: -1\n    purposes: p1\n" PURPOSE, ":3: callers.c.uid",
	            NULL);
	expect_fail("callers:\n  c:\n    uid: 4294967295\n    purposes: p1\n" PURPOSE,
	            ":3: callers.c.uid", "too large", NULL);
	expect_fail("callers:\n  c:\n    uid: [1, 2]\n    purposes: p1\n" PURPOSE,
	            ":3: callers.c.uid", "found a list", NULL);
	expect_fail("callers:\n  c:\n    uid: 0755\n    purposes: p1\n" PURPOSE,
	            ":3: callers.c.uid", "leading zero", NULL);
	expect_fail(
	    "callers:\n  c:\n    uid: 1\n    purposes: p1\n    classes: [citizen, admin]\n" PURPOSE,
	    ":5: callers.c.classes: unknown credential class 'admin'", NULL);
	expect_fail("callers:\n  c:\n    uid: 1\n    purposes: p1\n    classes: []\n" PURPOSE,
	            ":5: callers.c.classes", NULL);
	expect_fail("callers:\n  c/d:\n    uid: 1\n    purposes: p1\n" PURPOSE,
	            ":2: callers: invalid caller name", NULL);
	expect_fail("callers:\n  c:\n    uid: 1\n    purposes: p1\n  c:\n    uid: 2\n" PURPOSE,
	            ":5: c: duplicate key in callers", NULL);
}

static void test_rate(void **state)
{
	static const struct {
		const char *text;
		uint32_t count, per_s;
	} good[] = {
	    {"50/s", 50, 1},
	    {"100/m", 100, 60},
	    {"1000/h", 1000, 3600},
	    {"5000/d", 5000, 86400},
	    {"25", 25, 1},
	    {"\"7\"", 7, 1},
	    {"1000000/d", 1000000, 86400},
	};
	static const char *const bad[] = {
	    "0",    "0/s",   "50/w",  "50/",       "/s",    "50/ss",
	    "-5/s", "5.5/s", "050/s", "1000001/s", "50 /s", "[50, s]",
	};
	char text[512];
	struct policy *p;
	size_t i;

	for (i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		snprintf(text, sizeof(text),
		         "callers:\n  c:\n    uid: 1\n    purposes: p1\n    rate: %s\n" PURPOSE,
		         good[i].text);
		p = load_text(text);
		assert_int_equal(p->callers[0].rate.count, good[i].count);
		assert_int_equal(p->callers[0].rate.per_s, good[i].per_s);
		policy_free(p);
	}
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(text, sizeof(text),
		         "callers:\n  c:\n    uid: 1\n    purposes: p1\n    rate: %s\n" PURPOSE,
		         bad[i]);
		expect_fail(text, ":5: callers.c.rate:", NULL);
	}
}

static void test_credentials(void **state)
{
	static const struct {
		const char *text;
		uint64_t s;
	} durations[] = {
	    {"30s", 30}, {"5m", 300}, {"12h", 43200}, {"1d", 86400}, {"90", 90}, {"0", 0},
	};
	char text[PATH_MAX + 32];
	struct policy *p;
	size_t i;

	for (i = 0; i < sizeof(durations) / sizeof(durations[0]); i++) {
		snprintf(text, sizeof(text),
		         "callers: {}\n" PURPOSE "credentials:\n  min_cert_validity: %s\n",
		         durations[i].text);
		p = load_text(text);
		assert_int_equal(p->creds.min_cert_validity, durations[i].s);
		policy_free(p);
	}
	expect_fail("callers: {}\n" PURPOSE "credentials:\n  min_cert_validity: 1w\n",
	            ":6: credentials.min_cert_validity: expected a duration", NULL);
	expect_fail("callers: {}\n" PURPOSE
	            "credentials:\n  min_cert_validity: 99999999999999999d\n",
	            "credentials.min_cert_validity", NULL);
	expect_fail("callers: {}\n" PURPOSE "credentials:\n  daily_quota: 1000001\n",
	            ":6: credentials.daily_quota:", "too large", NULL);
	expect_fail("callers: {}\n" PURPOSE "credentials:\n  daily_quota: lots\n",
	            ":6: credentials.daily_quota:", NULL);
	expect_fail("callers: {}\n" PURPOSE "credentials:\n  require_non_repudiation: 1\n",
	            ":6: credentials.require_non_repudiation:", NULL);
	expect_fail("callers: {}\n" PURPOSE "credentials:\n  crl: {a: b}\n",
	            ":6: credentials.crl:", NULL);
	expect_fail("callers: {}\n" PURPOSE "credentials: [daily_quota]\n",
	            ":5: credentials:", "expected a mapping", NULL);

	p = load_text("callers: {}\n" PURPOSE "credentials:\n  daily_quota: 1000000\n"
	              "  require_non_repudiation: False\n  crl: one.crl\n");
	assert_int_equal(p->creds.daily_quota, 1000000);
	assert_false(p->creds.require_non_repudiation);
	assert_int_equal(p->creds.ncrl, 1);
	snprintf(text, sizeof(text), "%s/one.crl", tmpdir);
	assert_string_equal(p->creds.crl[0], text);
	policy_free(p);
}

static void test_malformed(void **state)
{
	expect_fail("callers: [\n", "YAML syntax error", NULL);
	expect_fail("", "empty file", NULL);
	expect_fail("callers: {}\npurposes: {}\ncallers: {}\n", ":3: callers: duplicate key", NULL);
	expect_fail("callers: {}\npurposes: {}\n---\ncallers: {}\n", "more than one", NULL);
}

/* Loading must fail, naming the file and saying why. */
static void expect_refused(const char *path, const char *needle)
{
	struct policy *p = (struct policy *)1;

	err[0] = '\0';
	assert_int_equal(policy_load(path, &p, err, sizeof(err)), -1);
	assert_null(p);
	if (strstr(err, path) == NULL)
		fail_msg("error \"%s\" lacks the file name %s", err, path);
	if (strstr(err, needle) == NULL)
		fail_msg("error \"%s\" lacks \"%s\"", err, needle);
}

static void expect_loads(const char *path)
{
	struct policy *p = NULL;

	if (policy_load(path, &p, err, sizeof(err)) != 0)
		fail_msg("%s", err);
	policy_free(p);
}

#define SMALL_POLICY "callers: {}\n" PURPOSE

/* Whoever can write the policy can grant themselves signatures: only root or the daemon's user
 * may be able to. */
static void test_permissions(void **state)
{
	static const mode_t ok[] = {0600, 0640, 0644, 0400, 0444};
	static const mode_t group_w[] = {0620, 0660, 0664, 0624};
	static const mode_t world_w[] = {0602, 0606, 0666, 0777, 0642};
	const struct passwd *pw;
	const char *path;
	uid_t nobody;
	size_t i;

	for (i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
		expect_loads(write_tmp_mode(SMALL_POLICY, ok[i]));
	for (i = 0; i < sizeof(group_w) / sizeof(group_w[0]); i++)
		expect_refused(write_tmp_mode(SMALL_POLICY, group_w[i]), "group-writable");
	for (i = 0; i < sizeof(world_w) / sizeof(world_w[0]); i++)
		expect_refused(write_tmp_mode(SMALL_POLICY, world_w[i]), "world-writable");

	/* A symlink (itself mode 0777) is judged by the file it leads to. */
	path = write_tmp_mode(SMALL_POLICY, 0664);
	assert_int_equal(rename(path, target_path), 0);
	unlink(link_path);
	assert_int_equal(symlink(target_path, link_path), 0);
	expect_refused(link_path, "group-writable");
	assert_int_equal(chmod(target_path, 0600), 0);
	expect_loads(link_path);

	if (geteuid() != 0) {
		print_message("skipped: a file owned by another user needs root to chown\n");
		return;
	}
	pw = getpwnam("nobody");
	nobody = pw != NULL ? pw->pw_uid : 65534;
	path = write_tmp_mode(SMALL_POLICY, 0644);
	assert_int_equal(chown(path, nobody, (gid_t)-1), 0);
	expect_refused(path, "owned by uid");
	assert_int_equal(chown(target_path, nobody, (gid_t)-1), 0);
	expect_refused(link_path, "owned by uid");
	assert_int_equal(chown(path, 0, 12345), 0);
	expect_loads(path);
}

/* ---- decisions ---- */

static void test_policy_caller(void **state)
{
	struct policy *p = load_good();
	const struct pol_caller *td = caller_named(p, "td-vehicle-licensing");
	const struct pol_caller *lands = caller_named(p, "lands-dept"); /* uid 0 + gid 300 */
	const struct pol_caller *ops = caller_named(p, "ops-group");    /* gid 0 */

	assert_ptr_equal(policy_caller(p, 1201, 1201), td);
	assert_ptr_equal(policy_caller(p, 1201, 0), td); /* uid before gid */
	assert_ptr_equal(policy_caller(p, 0, 300), lands);
	assert_ptr_equal(policy_caller(p, 0, 0), ops); /* lands needs gid 300 too */
	assert_ptr_equal(policy_caller(p, 5000, 0), ops);
	assert_null(policy_caller(p, 5000, 300)); /* gid 300 only with uid 0 */
	assert_null(policy_caller(p, 5000, 5000));
	assert_null(policy_caller(NULL, 0, 0));
	policy_free(p);

	/* the most specific entry wins, whatever the order in the file */
	p = load_text("callers:\n"
	              "  by-gid:\n    gid: 50\n    purposes: p1\n"
	              "  by-uid:\n    uid: 1000\n    purposes: p1\n"
	              "  by-both:\n    uid: 1000\n    gid: 60\n    purposes: p1\n" PURPOSE);
	assert_string_equal(policy_caller(p, 1000, 60)->name, "by-both");
	assert_string_equal(policy_caller(p, 1000, 50)->name, "by-uid");
	assert_string_equal(policy_caller(p, 1000, 70)->name, "by-uid");
	assert_string_equal(policy_caller(p, 2000, 50)->name, "by-gid");
	assert_null(policy_caller(p, 2000, 60));
	policy_free(p);
}

static enum pol_reason check(const struct policy *p, const struct pol_caller *c,
                             const char *purpose, enum pol_class cls, enum alg_family fam,
                             enum alg_hash hash, size_t nhashes, const struct pol_purpose **pp)
{
	struct pol_request req = {
	    .purpose = purpose, .cls = cls, .fam = fam, .hash = hash, .nhashes = nhashes};

	return policy_check_sign(p, c, &req, pp);
}

static void test_check_sign(void **state)
{
	struct policy *p = load_good();
	const struct pol_caller *td = caller_named(p, "td-vehicle-licensing");
	const struct pol_caller *lands = caller_named(p, "lands-dept");
	const struct pol_purpose *vehicle = policy_purpose(p, "vehicle-licence-renewal");
	const struct pol_purpose *seal = policy_purpose(p, "land-registry-seal");
	const struct pol_purpose *pp;

	/* allowed: the caller's only purpose is implied */
	pp = NULL;
	assert_int_equal(check(p, td, NULL, POL_CLASS_CITIZEN, ALG_ECDSA, HASH_SHA256, 1, &pp),
	                 POL_OK);
	assert_ptr_equal(pp, vehicle);
	assert_int_equal(check(p, td, "vehicle-licence-renewal", POL_CLASS_CITIZEN, ALG_RSA_PKCS1,
	                       HASH_SHA256, 1, &pp),
	                 POL_OK);
	/* RSASSA-PSS without a hash matches every allowed hash */
	assert_int_equal(check(p, td, NULL, POL_CLASS_CITIZEN, ALG_RSA_PSS, HASH_SHA384, 1, &pp),
	                 POL_OK);
	assert_int_equal(
	    check(p, lands, "land-registry-seal", POL_CLASS_SEAL, ALG_ECDSA, HASH_SHA512, 20, &pp),
	    POL_OK);
	assert_ptr_equal(pp, seal);
	assert_int_equal(check(p, lands, "land-registry-seal", POL_CLASS_CITIZEN, ALG_RSA_PKCS1,
	                       HASH_SHA256, 3, NULL),
	                 POL_OK);

	/* unknown_caller */
	pp = vehicle;
	assert_int_equal(check(p, NULL, NULL, POL_CLASS_CITIZEN, ALG_ECDSA, HASH_SHA256, 1, &pp),
	                 POL_UNKNOWN_CALLER);
	assert_null(pp);
	/* purpose_required: two purposes, none named */
	assert_int_equal(check(p, lands, NULL, POL_CLASS_SEAL, ALG_ECDSA, HASH_SHA256, 1, &pp),
	                 POL_PURPOSE_REQUIRED);
	/* purpose_not_allowed: defined but not the caller's, or not defined at all */
	assert_int_equal(
	    check(p, td, "land-registry-seal", POL_CLASS_CITIZEN, ALG_ECDSA, HASH_SHA256, 1, &pp),
	    POL_PURPOSE_NOT_ALLOWED);
	assert_int_equal(
	    check(p, td, "tax-return", POL_CLASS_CITIZEN, ALG_ECDSA, HASH_SHA256, 1, &pp),
	    POL_PURPOSE_NOT_ALLOWED);
	/* class_not_allowed */
	assert_int_equal(check(p, td, NULL, POL_CLASS_SEAL, ALG_ECDSA, HASH_SHA256, 1, &pp),
	                 POL_CLASS_NOT_ALLOWED);
	assert_int_equal(check(p, td, NULL, 0, ALG_ECDSA, HASH_SHA256, 1, &pp),
	                 POL_CLASS_NOT_ALLOWED);
	/* hash_algorithm_not_allowed: sha512 is not in the purpose's hash_algorithms */
	assert_int_equal(check(p, td, NULL, POL_CLASS_CITIZEN, ALG_ECDSA, HASH_SHA512, 1, &pp),
	                 POL_HASH_NOT_ALLOWED);
	assert_int_equal(check(p, td, NULL, POL_CLASS_CITIZEN, ALG_RSA_PSS, HASH_SHA512, 1, &pp),
	                 POL_HASH_NOT_ALLOWED);
	assert_int_equal(check(p, td, NULL, POL_CLASS_CITIZEN, ALG_ECDSA, HASH_NONE, 1, &pp),
	                 POL_HASH_NOT_ALLOWED);
	/* algorithm_not_allowed: sha384 is allowed, but only ecdsa-with-SHA256 is listed */
	assert_int_equal(check(p, td, NULL, POL_CLASS_CITIZEN, ALG_ECDSA, HASH_SHA384, 1, &pp),
	                 POL_ALGORITHM_NOT_ALLOWED);
	assert_int_equal(
	    check(p, lands, "land-registry-seal", POL_CLASS_SEAL, ALG_RSA_PSS, HASH_SHA256, 1, &pp),
	    POL_ALGORITHM_NOT_ALLOWED);
	assert_int_equal(check(p, lands, "land-registry-seal", POL_CLASS_SEAL, ALG_RSA_PKCS1,
	                       HASH_SHA384, 1, &pp),
	                 POL_ALGORITHM_NOT_ALLOWED);
	assert_int_equal(check(p, td, NULL, POL_CLASS_CITIZEN, ALG_NONE, HASH_SHA256, 1, &pp),
	                 POL_ALGORITHM_NOT_ALLOWED);
	/* too_many_hashes: none, or more than max_hashes */
	assert_int_equal(check(p, td, NULL, POL_CLASS_CITIZEN, ALG_ECDSA, HASH_SHA256, 0, &pp),
	                 POL_TOO_MANY_HASHES);
	assert_int_equal(check(p, td, NULL, POL_CLASS_CITIZEN, ALG_ECDSA, HASH_SHA256, 2, &pp),
	                 POL_TOO_MANY_HASHES);
	assert_int_equal(
	    check(p, lands, "land-registry-seal", POL_CLASS_SEAL, ALG_ECDSA, HASH_SHA256, 21, &pp),
	    POL_TOO_MANY_HASHES);
	assert_null(pp);

	assert_true(policy_caller_may_use(td, POL_CLASS_CITIZEN));
	assert_false(policy_caller_may_use(td, POL_CLASS_SEAL));
	assert_true(policy_caller_may_use(lands, POL_CLASS_SEAL));
	assert_false(policy_caller_may_use(NULL, POL_CLASS_CITIZEN));
	assert_false(policy_caller_may_use(lands, 0));
	policy_free(p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_algs),
	    cmocka_unit_test(test_names),
	    cmocka_unit_test(test_good_full),
	    cmocka_unit_test(test_defaults),
	    cmocka_unit_test(test_unknown_keys),
	    cmocka_unit_test(test_undefined_purpose),
	    cmocka_unit_test(test_sign_algorithms),
	    cmocka_unit_test(test_purpose_values),
	    cmocka_unit_test(test_unknown_user),
	    cmocka_unit_test(test_identity),
	    cmocka_unit_test(test_rate),
	    cmocka_unit_test(test_credentials),
	    cmocka_unit_test(test_malformed),
	    cmocka_unit_test(test_permissions),
	    cmocka_unit_test(test_policy_caller),
	    cmocka_unit_test(test_check_sign),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
