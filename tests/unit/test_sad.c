/* Unit tests: signature activation data (policy/sad.c). Every token is minted by tests/mint-sad
 * (the jose command and OpenSSL, not our code) with keys made by `openssl genpkey` in a fresh
 * temporary directory. Times are relative to T, and sad_verify is given `now` explicitly. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>

#include <openssl/evp.h>

#include "policy/algs.h"
#include "policy/sad.h"

#define MINT TEST_DATA "/../mint-sad"
#define SHA256_OID "2.16.840.1.101.3.4.2.1"
#define SHA384_OID "2.16.840.1.101.3.4.2.2"
#define FF32 "//////////////////////////////////////////" /* 42 of 43 characters */
#define FF32_URL "__________________________________________"

static char tmpdir[PATH_MAX];
static char err[1024];
static time_t T; /* iat of the default claims */

/* Digests of "one", "two", "three" (SHA-256) and "one" (SHA-384), raw and as standard base64. */
static uint8_t h1[64], h2[64], h3[64], h384[64];
static char b1[100], b2[100], b3[100], b384[100];

static const char *tmp_path(const char *name)
{
	static char path[16][PATH_MAX + 64];
	static int next;
	char *p = path[next++ % 16];

	snprintf(p, sizeof(path[0]), "%s/%s", tmpdir, name);
	return p;
}

static void run(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void run(const char *fmt, ...)
{
	char cmd[4 * PATH_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	if (system(cmd) != 0)
		fail_msg("command failed: %s", cmd);
}

static void genkey(const char *name, const char *alg_opts)
{
	run("openssl genpkey %s -out '%s.pem' 2>/dev/null && "
	    "openssl pkey -in '%s.pem' -pubout -out '%s.pub' 2>/dev/null",
	    alg_opts, tmp_path(name), tmp_path(name), tmp_path(name));
}

#define P256 "-algorithm EC -pkeyopt ec_paramgen_curve:P-256"

static void digest(const char *md, const char *text, uint8_t *raw, char *b64)
{
	unsigned int len = 0;

	assert_int_equal(EVP_Digest(text, strlen(text), raw, &len, EVP_get_digestbyname(md), NULL),
	                 1);
	EVP_EncodeBlock((unsigned char *)b64, raw, (int)len);
}

static int setup(void **state)
{
	const char *base = getenv("TMPDIR");

	(void)state;
	snprintf(tmpdir, sizeof(tmpdir), "%s/test-sad-XXXXXX",
	         base != NULL && base[0] != '\0' ? base : "/tmp");
	if (mkdtemp(tmpdir) == NULL || strchr(tmpdir, '\'') != NULL)
		return -1;
	genkey("issuer", P256);
	genkey("issuer2", P256);
	genkey("other", P256);
	genkey("device", P256);
	genkey("p384", "-algorithm EC -pkeyopt ec_paramgen_curve:P-384");
	genkey("rsa", "-algorithm RSA -pkeyopt rsa_keygen_bits:2048");
	digest("SHA256", "one", h1, b1);
	digest("SHA256", "two", h2, b2);
	digest("SHA256", "three", h3, b3);
	digest("SHA384", "one", h384, b384);
	T = time(NULL);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	run("rm -rf '%s'", tmpdir);
	return 0;
}

/* Claims as raw JSON values; a NULL member is left out. */
struct cl {
	const char *iss, *sub, *cred, *purpose, *jti, *halg, *hashes, *num, *iat, *exp;
	const char *extra; /* raw members appended, e.g. "\"jti\":\"again\"" */
	char ibuf[32], ebuf[32], hbuf[256];
};

static void cl_default(struct cl *c)
{
	memset(c, 0, sizeof(*c));
	c->iss = "\"https://auth.iamsmart.example\"";
	c->sub = "\"citizen-1\"";
	c->cred = "\"cred-1\"";
	c->purpose = "\"tax-return\"";
	c->jti = "\"jti-0001\"";
	c->halg = "\"" SHA256_OID "\"";
	snprintf(c->hbuf, sizeof(c->hbuf), "[\"%s\",\"%s\"]", b1, b2);
	c->hashes = c->hbuf;
	c->num = "2";
	snprintf(c->ibuf, sizeof(c->ibuf), "%lld", (long long)T);
	snprintf(c->ebuf, sizeof(c->ebuf), "%lld", (long long)T + 300);
	c->iat = c->ibuf;
	c->exp = c->ebuf;
}

static void cl_times(struct cl *c, long long iat, long long exp)
{
	snprintf(c->ibuf, sizeof(c->ibuf), "%lld", iat);
	snprintf(c->ebuf, sizeof(c->ebuf), "%lld", exp);
}

static char *cl_json(const struct cl *c)
{
	const char *names[] = {"iss",  "sub",    "cred", "purpose", "jti",
	                       "halg", "hashes", "num",  "iat",     "exp"};
	const char *values[] = {c->iss,  c->sub,    c->cred, c->purpose, c->jti,
	                        c->halg, c->hashes, c->num,  c->iat,     c->exp};
	size_t cap = 32768, off = 1, i;
	char *s = malloc(cap);

	assert_non_null(s);
	s[0] = '{';
	for (i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (values[i] != NULL)
			off += (size_t)snprintf(s + off, cap - off, "%s\"%s\":%s",
			                        off > 1 ? "," : "", names[i], values[i]);
	if (c->extra != NULL)
		off += (size_t)snprintf(s + off, cap - off, "%s%s", off > 1 ? "," : "", c->extra);
	assert_true(off + 2 < cap);
	snprintf(s + off, cap - off, "}");
	return s;
}

/* A token from tests/mint-sad, signed with key NAME.pem, claims text as given. */
static char *mint_raw(const char *key, const char *claims, const char *mode)
{
	char cmd[4 * PATH_MAX], *tok;
	size_t cap = 65536, len;
	FILE *f;

	f = fopen(tmp_path("claims.json"), "w");
	assert_non_null(f);
	assert_true(fputs(claims, f) >= 0);
	assert_int_equal(fclose(f), 0);
	snprintf(cmd, sizeof(cmd), "'%s' '%s.pem' \"$(cat '%s')\" %s", MINT, tmp_path(key),
	         tmp_path("claims.json"), mode);
	f = popen(cmd, "r");
	assert_non_null(f);
	tok = malloc(cap);
	assert_non_null(tok);
	len = fread(tok, 1, cap - 1, f);
	if (pclose(f) != 0)
		fail_msg("mint-sad failed: %s", cmd);
	while (len > 0 && tok[len - 1] == '\n')
		len--;
	tok[len] = '\0';
	assert_true(len > 0);
	return tok;
}

static char *mint(const char *key, const struct cl *c, const char *mode)
{
	char *json = cl_json(c), *tok = mint_raw(key, json, mode);

	free(json);
	return tok;
}

static char *mint_default(const char *key)
{
	struct cl c;

	cl_default(&c);
	return mint(key, &c, "es256");
}

static struct sad_keys *load(const char *const *names, size_t n)
{
	char *paths[8];
	struct sad_keys *k = NULL;
	size_t i;

	assert_true(n <= 8);
	for (i = 0; i < n; i++) {
		paths[i] = strdup(tmp_path(names[i]));
		assert_non_null(paths[i]);
	}
	if (sad_keys_load(paths, n, &k, err, sizeof(err)) != 0)
		fail_msg("sad_keys_load: %s", err);
	for (i = 0; i < n; i++)
		free(paths[i]);
	return k;
}

static struct sad_keys *issuer_keys(void)
{
	const char *names[] = {"issuer.pub"};

	return load(names, 1);
}

static char *read_text(const char *path)
{
	char *buf = malloc(16384);
	size_t len;
	FILE *f = fopen(path, "r");

	assert_non_null(f);
	assert_non_null(buf);
	len = fread(buf, 1, 16383, f);
	buf[len] = '\0';
	fclose(f);
	return buf;
}

/* Verify a token minted with `key` and claims `c` in `mode` against the issuer key at `now`. */
static enum sad_result verify_cl(const char *key, const struct cl *c, const char *mode, time_t now)
{
	struct sad_keys *k = issuer_keys();
	struct sad_claims out;
	char *tok = mint(key, c, mode);
	enum sad_result r = sad_verify(k, NULL, tok, now, &out);

	free(tok);
	sad_keys_free(k);
	return r;
}

static enum sad_result verify_str(const char *tok)
{
	struct sad_keys *k = issuer_keys();
	struct sad_claims out;
	enum sad_result r = sad_verify(k, NULL, tok, T, &out);

	sad_keys_free(k);
	return r;
}

/* base64url of text, no padding */
static void b64url(const char *text, char *out)
{
	char *p;

	EVP_EncodeBlock((unsigned char *)out, (const unsigned char *)text, (int)strlen(text));
	for (p = out; *p != '\0'; p++)
		if (*p == '+')
			*p = '-';
		else if (*p == '/')
			*p = '_';
		else if (*p == '=')
			*p = '\0';
}

static void test_valid_issuer(void **state)
{
	struct sad_keys *k = issuer_keys();
	struct sad_claims c;
	char *tok = mint_default("issuer");

	(void)state;
	memset(&c, 0xa5, sizeof(c));
	assert_int_equal(sad_verify(k, NULL, tok, T, &c), SAD_OK);
	assert_string_equal(c.iss, "https://auth.iamsmart.example");
	assert_string_equal(c.sub, "citizen-1");
	assert_string_equal(c.cred, "cred-1");
	assert_string_equal(c.purpose, "tax-return");
	assert_string_equal(c.jti, "jti-0001");
	assert_int_equal(c.halg, HASH_SHA256);
	assert_int_equal(c.nhashes, 2);
	assert_memory_equal(c.hashes[0], h1, 32);
	assert_memory_equal(c.hashes[1], h2, 32);
	assert_int_equal(c.num, 2);
	assert_int_equal(c.iat, (int64_t)T);
	assert_int_equal(c.exp, (int64_t)T + 300);
	assert_int_equal(c.by_device, 0);
	/* a device key that did not sign it changes nothing */
	{
		char *dev = read_text(tmp_path("device.pub"));

		assert_int_equal(sad_verify(k, dev, tok, T, &c), SAD_OK);
		assert_int_equal(c.by_device, 0);
		free(dev);
	}
	free(tok);
	sad_keys_free(k);
}

static void test_valid_device(void **state)
{
	struct sad_keys *k = issuer_keys();
	struct sad_claims c;
	char *tok = mint_default("device");
	char *dev = read_text(tmp_path("device.pub"));
	char *other = read_text(tmp_path("other.pub"));
	char *rsa = read_text(tmp_path("rsa.pub"));

	(void)state;
	assert_int_equal(sad_verify(k, dev, tok, T, &c), SAD_OK);
	assert_int_equal(c.by_device, 1);
	assert_string_equal(c.cred, "cred-1");
	/* without the device key, or with another one, nobody vouches for it */
	assert_int_equal(sad_verify(k, NULL, tok, T, &c), SAD_UNTRUSTED);
	assert_int_equal(c.by_device, 0);
	assert_int_equal(sad_verify(k, other, tok, T, &c), SAD_UNTRUSTED);
	assert_int_equal(sad_verify(k, rsa, tok, T, &c), SAD_UNTRUSTED);
	assert_int_equal(sad_verify(k, "not a pem", tok, T, &c), SAD_UNTRUSTED);
	/* no issuers at all: the device key alone */
	assert_int_equal(sad_verify(NULL, dev, tok, T, &c), SAD_OK);
	assert_int_equal(c.by_device, 1);
	free(tok);
	free(dev);
	free(other);
	free(rsa);
	sad_keys_free(k);
}

static void test_several_issuers(void **state)
{
	const char *names[] = {"other.pub", "issuer2.pub", "issuer.pub"};
	struct sad_keys *k = load(names, 3), *none = load(names, 0);
	struct sad_claims c;
	char *tok = mint_default("issuer"), *tok2 = mint_default("issuer2");

	(void)state;
	assert_int_equal(sad_verify(k, NULL, tok, T, &c), SAD_OK);
	assert_int_equal(sad_verify(k, NULL, tok2, T, &c), SAD_OK);
	assert_int_equal(sad_verify(none, NULL, tok, T, &c), SAD_UNTRUSTED);
	free(tok);
	free(tok2);
	sad_keys_free(k);
	sad_keys_free(none);
}

static void test_bad_alg(void **state)
{
	struct cl c;

	(void)state;
	cl_default(&c);
	/* the control: the same claims and key as ES256 verify */
	assert_int_equal(verify_cl("issuer", &c, "es256", T), SAD_OK);
	assert_int_equal(verify_cl("issuer", &c, "none", T), SAD_BAD_ALG);
	assert_int_equal(verify_cl("issuer", &c, "hs256-pub", T), SAD_BAD_ALG);
	assert_int_equal(verify_cl("issuer", &c, "es384-header", T), SAD_BAD_ALG);
}

static void test_bad_signature(void **state)
{
	struct cl c;

	(void)state;
	cl_default(&c);
	assert_int_equal(verify_cl("issuer", &c, "bad-sig", T), SAD_UNTRUSTED);
	/* a perfectly good signature by a key nobody pinned */
	assert_int_equal(verify_cl("other", &c, "es256", T), SAD_UNTRUSTED);
}

/* The valid token with its protected header replaced by `hdr` (JSON text). */
static enum sad_result with_header(const char *tok, const char *hdr)
{
	char b[512], *t = malloc(strlen(tok) + sizeof(b));
	enum sad_result r;

	assert_non_null(t);
	b64url(hdr, b);
	snprintf(t, strlen(tok) + sizeof(b), "%s%s", b, strchr(tok, '.'));
	r = verify_str(t);
	free(t);
	return r;
}

static void test_header(void **state)
{
	char *tok = mint_default("issuer");

	(void)state;
	/* the control: the header jose wrote, re-encoded the same way */
	assert_int_equal(with_header(tok, "{\"alg\":\"ES256\"}"), SAD_OK);
	assert_int_equal(with_header(tok, "{\"typ\":\"JWT\"}"), SAD_BAD_ALG);
	assert_int_equal(with_header(tok, "{\"alg\":\"HS512\"}"), SAD_BAD_ALG);
	assert_int_equal(with_header(tok, "{\"alg\":\"RS256\"}"), SAD_BAD_ALG);
	assert_int_equal(with_header(tok, "{\"alg\":\"PS256\"}"), SAD_BAD_ALG);
	assert_int_equal(with_header(tok, "{\"alg\":\"es256\"}"), SAD_BAD_ALG);
	assert_int_equal(with_header(tok, "{\"alg\":[\"ES256\"]}"), SAD_BAD_ALG);
	assert_int_equal(with_header(tok, "{\"alg\":\"ES256\",\"crit\":[\"exp\"],\"exp\":1}"),
	                 SAD_BAD_ALG);
	assert_int_equal(with_header(tok, "{\"alg\":\"ES256\",\"jku\":\"https://x.example/k\"}"),
	                 SAD_BAD_ALG);
	assert_int_equal(with_header(tok, "{\"alg\":\"ES256\",\"x5u\":\"https://x.example/c\"}"),
	                 SAD_BAD_ALG);
	assert_int_equal(with_header(tok, "{\"alg\":\"ES256\",\"x5c\":[\"MIIB\"]}"), SAD_BAD_ALG);
	assert_int_equal(with_header(tok, "{\"alg\":\"ES256\",\"jwk\":{\"kty\":\"EC\"}}"),
	                 SAD_BAD_ALG);
	/* a second alg that jansson would otherwise let win */
	assert_int_equal(with_header(tok, "{\"alg\":\"ES256\",\"alg\":\"none\"}"), SAD_MALFORMED);
	assert_int_equal(with_header(tok, "[\"ES256\"]"), SAD_MALFORMED);
	assert_int_equal(with_header(tok, "not json"), SAD_MALFORMED);
	free(tok);
}

static void test_time(void **state)
{
	struct sad_keys *k = issuer_keys();
	struct sad_claims c;
	char *tok = mint_default("issuer"); /* iat T, exp T + 300 */

	(void)state;
	assert_int_equal(sad_verify(k, NULL, tok, T + 300 + SAD_MAX_SKEW, &c), SAD_OK);
	assert_int_equal(sad_verify(k, NULL, tok, T + 301 + SAD_MAX_SKEW, &c), SAD_EXPIRED);
	assert_int_equal(sad_verify(k, NULL, tok, T + 86400, &c), SAD_EXPIRED);
	assert_int_equal(sad_verify(k, NULL, tok, T - SAD_MAX_SKEW, &c), SAD_OK);
	assert_int_equal(sad_verify(k, NULL, tok, T - SAD_MAX_SKEW - 1, &c), SAD_NOT_YET_VALID);
	assert_int_equal(sad_verify(k, NULL, tok, T - 86400, &c), SAD_NOT_YET_VALID);
	free(tok);
	sad_keys_free(k);
}

static void test_expired_minted(void **state)
{
	struct cl c;
	time_t now = time(NULL);

	(void)state;
	cl_default(&c);
	cl_times(&c, (long long)now - 1000, (long long)now - 700);
	assert_int_equal(verify_cl("issuer", &c, "es256", now), SAD_EXPIRED);
	assert_int_equal(verify_cl("issuer", &c, "es256", now - 700), SAD_OK);
	cl_times(&c, (long long)now + 1000, (long long)now + 1300);
	assert_int_equal(verify_cl("issuer", &c, "es256", now), SAD_NOT_YET_VALID);
}

static void test_lifetime(void **state)
{
	struct cl c;

	(void)state;
	cl_default(&c);
	cl_times(&c, (long long)T, (long long)T + SAD_MAX_LIFETIME);
	assert_int_equal(verify_cl("issuer", &c, "es256", T), SAD_OK);
	cl_times(&c, (long long)T, (long long)T + SAD_MAX_LIFETIME + 1);
	assert_int_equal(verify_cl("issuer", &c, "es256", T), SAD_LIFETIME);
	cl_times(&c, (long long)T, (long long)T + 86400 * 365);
	assert_int_equal(verify_cl("issuer", &c, "es256", T), SAD_LIFETIME);
	cl_times(&c, (long long)T, (long long)T);
	assert_int_equal(verify_cl("issuer", &c, "es256", T), SAD_LIFETIME);
	cl_times(&c, (long long)T + 10, (long long)T);
	assert_int_equal(verify_cl("issuer", &c, "es256", T), SAD_LIFETIME);
}

static void test_malformed_shape(void **state)
{
	char *tok = mint_default("issuer"), t[SAD_MAX_LEN + 64];
	size_t len = strlen(tok);
	const char *p = strchr(tok, '.'), *q = strrchr(tok, '.');

	(void)state;
	if (p == NULL || q == NULL || p == q || len + 8 > sizeof(t))
		fail_msg("unexpected token %s", tok);
	assert_int_equal(verify_str(tok), SAD_OK);

	/* two parts */
	snprintf(t, sizeof(t), "%.*s", (int)(q - tok), tok);
	assert_int_equal(verify_str(t), SAD_MALFORMED);
	/* four parts */
	snprintf(t, sizeof(t), "%s.AAAA", tok);
	assert_int_equal(verify_str(t), SAD_MALFORMED);
	snprintf(t, sizeof(t), "%s.", tok);
	assert_int_equal(verify_str(t), SAD_MALFORMED);
	/* an empty payload or header, with the parts around it genuine */
	snprintf(t, sizeof(t), "%.*s.%s", (int)(p - tok), tok, q);
	assert_int_equal(verify_str(t), SAD_MALFORMED);
	snprintf(t, sizeof(t), "%s", p);
	assert_int_equal(verify_str(t), SAD_MALFORMED);
	/* empty */
	assert_int_equal(verify_str(""), SAD_MALFORMED);
	assert_int_equal(verify_str(".."), SAD_MALFORMED);
	/* a character outside base64url in the payload, in the signature, in the header */
	memcpy(t, tok, len + 1);
	t[p - tok + 3] = '+';
	assert_int_equal(verify_str(t), SAD_MALFORMED);
	memcpy(t, tok, len + 1);
	t[len - 5] = '/';
	assert_int_equal(verify_str(t), SAD_MALFORMED);
	memcpy(t, tok, len + 1);
	t[len - 5] = '=';
	assert_int_equal(verify_str(t), SAD_MALFORMED);
	memcpy(t, tok, len + 1);
	t[2] = ' ';
	assert_int_equal(verify_str(t), SAD_MALFORMED);
	/* a signature part one character short (impossible length), or of 63 bytes */
	memcpy(t, tok, len + 1);
	t[len - 1] = '\0';
	assert_int_equal(verify_str(t), SAD_MALFORMED);
	memcpy(t, tok, len + 1);
	t[len - 2] = '\0';
	assert_int_equal(verify_str(t), SAD_MALFORMED);
	/* trailing newline */
	snprintf(t, sizeof(t), "%s\n", tok);
	assert_int_equal(verify_str(t), SAD_MALFORMED);
	assert_int_equal(verify_str(NULL), SAD_MALFORMED);
	free(tok);
}

static void test_malformed_payload(void **state)
{
	struct sad_keys *k = issuer_keys();
	struct sad_claims c;
	char *tok;

	(void)state;
	tok = mint_raw("issuer", "this is not JSON", "es256");
	assert_int_equal(sad_verify(k, NULL, tok, T, &c), SAD_MALFORMED);
	free(tok);
	tok = mint_raw("issuer", "[1,2,3]", "es256");
	assert_int_equal(sad_verify(k, NULL, tok, T, &c), SAD_MALFORMED);
	free(tok);
	/* unverifiable garbage is untrusted before it is malformed */
	tok = mint_raw("other", "this is not JSON", "es256");
	assert_int_equal(sad_verify(k, NULL, tok, T, &c), SAD_UNTRUSTED);
	free(tok);
	sad_keys_free(k);
}

static void test_malformed_claims(void **state)
{
	struct cl c;
	char hashes[512];

	(void)state;
#define EXPECT(result, ...)                                                                        \
	do {                                                                                       \
		cl_default(&c);                                                                    \
		__VA_ARGS__;                                                                       \
		assert_int_equal(verify_cl("issuer", &c, "es256", T), result);                     \
	} while (0)

	/* controls for the bounds tested below */
	EXPECT(SAD_OK, c.num = "1");
	EXPECT(SAD_OK, c.num = "1000");
	EXPECT(SAD_OK, c.extra = "\"aud\":\"ignored\"");

	EXPECT(SAD_MALFORMED, c.extra = "\"jti\":\"jti-0002\"");
	EXPECT(SAD_MALFORMED, c.extra = "\"sub\":\"citizen-1\"");
	EXPECT(SAD_MALFORMED, c.num = "0");
	EXPECT(SAD_MALFORMED, c.num = "1001");
	EXPECT(SAD_MALFORMED, c.num = "-1");
	EXPECT(SAD_MALFORMED, c.num = "2.0");
	EXPECT(SAD_MALFORMED, c.num = "\"2\"");
	EXPECT(SAD_MALFORMED, c.num = NULL);
	EXPECT(SAD_MALFORMED, c.halg = "\"1.2.3.4\"");
	EXPECT(SAD_MALFORMED, c.halg = "\"sha256\"");
	EXPECT(SAD_MALFORMED, c.halg = "1");
	EXPECT(SAD_MALFORMED, c.halg = NULL);
	EXPECT(SAD_MALFORMED, c.jti = NULL);
	EXPECT(SAD_MALFORMED, c.jti = "\"\"");
	EXPECT(SAD_MALFORMED, c.jti = "42");
	EXPECT(SAD_MALFORMED, c.iss = NULL);
	EXPECT(SAD_MALFORMED, c.sub = NULL);
	EXPECT(SAD_MALFORMED, c.sub = "\"\"");
	EXPECT(SAD_MALFORMED, c.cred = NULL);
	EXPECT(SAD_MALFORMED, c.cred = "[\"cred-1\"]");
	EXPECT(SAD_MALFORMED, c.purpose = NULL);
	EXPECT(SAD_MALFORMED, c.iat = NULL);
	EXPECT(SAD_MALFORMED, snprintf(c.ibuf, sizeof(c.ibuf), "%lld.0", (long long)T));
	EXPECT(SAD_MALFORMED, c.exp = "\"later\"");
	EXPECT(SAD_MALFORMED, c.hashes = NULL);
	EXPECT(SAD_MALFORMED, c.hashes = "[]");
	EXPECT(SAD_MALFORMED, c.hashes = "\"one\"");
	EXPECT(SAD_MALFORMED, c.hashes = "[1]");

	/* sizes: 128-byte sub and 64-byte cred fit, one more does not */
	EXPECT(SAD_OK, c.sub = "\"" /* 128 */
	                       "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	                       "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	                       "\"");
	EXPECT(SAD_MALFORMED, c.sub =
	                          "\"x" /* 129 */
	                          "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	                          "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	                          "\"");
	EXPECT(SAD_OK,
	       c.cred = "\"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\"");
	EXPECT(SAD_MALFORMED,
	       c.cred = "\"x0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\"");

	/* hashes: the wrong length for halg, url-safe or unpadded base64 */
	EXPECT(SAD_OK, snprintf(hashes, sizeof(hashes), "[\"%s\"]", b384); c.hashes = hashes;
	       c.halg = "\"" SHA384_OID "\"");
	EXPECT(SAD_MALFORMED, snprintf(hashes, sizeof(hashes), "[\"%s\"]", b384);
	       c.hashes = hashes);
	EXPECT(SAD_MALFORMED, c.halg = "\"" SHA384_OID "\"");
	EXPECT(SAD_MALFORMED, snprintf(hashes, sizeof(hashes), "[\"%s\",\"%.40s\"]", b1, b2);
	       c.hashes = hashes);
	EXPECT(SAD_MALFORMED, snprintf(hashes, sizeof(hashes), "[\"%.43s\"]", b1);
	       c.hashes = hashes);
	/* 32 bytes of 0xff: "/////...8=" in standard base64 */
	EXPECT(SAD_OK, c.hashes = "[\"" FF32 "8=\"]");
	EXPECT(SAD_MALFORMED, c.hashes = "[\"" FF32_URL "8=\"]");
	/* unused bits set: a second spelling of a hash is refused */
	EXPECT(SAD_MALFORMED, c.hashes = "[\"" FF32 "9=\"]");
#undef EXPECT
}

static void test_hash_count(void **state)
{
	struct cl c;
	char *hashes = malloc(8192);
	size_t off, i;

	(void)state;
	assert_non_null(hashes);
	for (size_t n = SAD_MAX_HASHES; n <= SAD_MAX_HASHES + 1; n++) {
		off = (size_t)snprintf(hashes, 8192, "[");
		for (i = 0; i < n; i++)
			off += (size_t)snprintf(hashes + off, 8192 - off, "%s\"%s\"", i ? "," : "",
			                        b1);
		snprintf(hashes + off, 8192 - off, "]");
		cl_default(&c);
		c.hashes = hashes;
		assert_int_equal(verify_cl("issuer", &c, "es256", T),
		                 n <= SAD_MAX_HASHES ? SAD_OK : SAD_MALFORMED);
	}
	free(hashes);
}

static void test_too_long(void **state)
{
	struct sad_keys *k = issuer_keys();
	struct sad_claims out;
	char *pad = malloc(8192), *tok;
	struct cl c;

	(void)state;
	assert_non_null(pad);
	/* under SAD_MAX_LEN: fine */
	cl_default(&c);
	snprintf(pad, 8192, "\"pad\":\"%05000d\"", 0);
	c.extra = pad;
	tok = mint("issuer", &c, "es256");
	assert_true(strlen(tok) < SAD_MAX_LEN);
	assert_int_equal(sad_verify(k, NULL, tok, T, &out), SAD_OK);
	free(tok);
	/* a well signed token over SAD_MAX_LEN */
	snprintf(pad, 8192, "\"pad\":\"%07000d\"", 0);
	tok = mint("issuer", &c, "es256");
	assert_true(strlen(tok) > SAD_MAX_LEN);
	assert_int_equal(sad_verify(k, NULL, tok, T, &out), SAD_MALFORMED);
	free(tok);
	free(pad);
	sad_keys_free(k);
}

static void test_match(void **state)
{
	struct sad_keys *k = issuer_keys();
	struct sad_claims c;
	char *tok = mint_default("issuer"); /* hashes h1, h2 */
	uint8_t req[3][64];

	(void)state;
	assert_int_equal(sad_verify(k, NULL, tok, T, &c), SAD_OK);
	memset(req, 0, sizeof(req));
	memcpy(req[0], h1, 32);
	memcpy(req[1], h2, 32);
	memcpy(req[2], h3, 32);

	assert_int_equal(sad_match(&c, "cred-1", "citizen-1", "tax-return", HASH_SHA256, req, 2),
	                 SAD_OK);
	assert_int_equal(
	    sad_match(&c, "cred-1", "citizen-1", "tax-return", HASH_SHA256, req + 1, 1), SAD_OK);
	/* each mismatch alone */
	assert_int_equal(sad_match(&c, "cred-2", "citizen-1", "tax-return", HASH_SHA256, req, 2),
	                 SAD_WRONG_CREDENTIAL);
	assert_int_equal(sad_match(&c, "cred-1", "citizen-2", "tax-return", HASH_SHA256, req, 2),
	                 SAD_WRONG_SUBJECT);
	assert_int_equal(sad_match(&c, "cred-1", "citizen-1", "payroll", HASH_SHA256, req, 2),
	                 SAD_WRONG_PURPOSE);
	assert_int_equal(sad_match(&c, "cred-1", "citizen-1", "tax-return", HASH_SHA384, req, 2),
	                 SAD_HASH_NOT_AUTHORISED);
	assert_int_equal(
	    sad_match(&c, "cred-1", "citizen-1", "tax-return", HASH_SHA256, req + 2, 1),
	    SAD_HASH_NOT_AUTHORISED);
	/* some approved, one not */
	assert_int_equal(sad_match(&c, "cred-1", "citizen-1", "tax-return", HASH_SHA256, req, 3),
	                 SAD_HASH_NOT_AUTHORISED);
	assert_int_equal(
	    sad_match(&c, "cred-1", "citizen-1", "tax-return", HASH_SHA256, req + 1, 2),
	    SAD_HASH_NOT_AUTHORISED);
	assert_int_equal(sad_match(&c, "cred-1", "citizen-1", "tax-return", HASH_SHA256, req, 0),
	                 SAD_HASH_NOT_AUTHORISED);
	/* prefixes are not matches */
	assert_int_equal(sad_match(&c, "cred-", "citizen-1", "tax-return", HASH_SHA256, req, 2),
	                 SAD_WRONG_CREDENTIAL);
	assert_int_equal(sad_match(&c, "cred-1", "citizen-1x", "tax-return", HASH_SHA256, req, 2),
	                 SAD_WRONG_SUBJECT);
	/* the order: credential, subject, purpose, hash */
	assert_int_equal(sad_match(&c, "cred-2", "citizen-2", "payroll", HASH_SHA384, req + 2, 1),
	                 SAD_WRONG_CREDENTIAL);
	assert_int_equal(sad_match(&c, "cred-1", "citizen-2", "payroll", HASH_SHA384, req + 2, 1),
	                 SAD_WRONG_SUBJECT);
	assert_int_equal(sad_match(&c, "cred-1", "citizen-1", "payroll", HASH_SHA384, req + 2, 1),
	                 SAD_WRONG_PURPOSE);
	free(tok);
	sad_keys_free(k);
}

static void test_keys_load(void **state)
{
	struct sad_keys *k = (struct sad_keys *)1;
	char *paths[2];

	(void)state;
	paths[0] = strdup(tmp_path("issuer.pub"));
	paths[1] = strdup(tmp_path("rsa.pub"));
	assert_int_equal(sad_keys_load(paths, 1, &k, err, sizeof(err)), 0);
	assert_non_null(k);
	sad_keys_free(k);

	k = (struct sad_keys *)1;
	assert_int_equal(sad_keys_load(paths, 2, &k, err, sizeof(err)), -1);
	assert_null(k);
	assert_non_null(strstr(err, paths[1]));
	assert_non_null(strstr(err, "RSA"));
	free(paths[1]);

	paths[1] = strdup(tmp_path("p384.pub"));
	assert_int_equal(sad_keys_load(paths, 2, &k, err, sizeof(err)), -1);
	assert_non_null(strstr(err, paths[1]));
	assert_non_null(strstr(err, "P-256"));
	free(paths[1]);

	/* a private key file, a missing file: not a pinned public key */
	paths[1] = strdup(tmp_path("other.pem"));
	assert_int_equal(sad_keys_load(paths, 2, &k, err, sizeof(err)), -1);
	assert_non_null(strstr(err, paths[1]));
	free(paths[1]);
	paths[1] = strdup(tmp_path("missing.pub"));
	assert_int_equal(sad_keys_load(paths, 2, &k, err, sizeof(err)), -1);
	assert_non_null(strstr(err, paths[1]));
	free(paths[1]);
	free(paths[0]);
}

static void test_reasons(void **state)
{
	enum sad_result r;

	(void)state;
	assert_string_equal(sad_reason(SAD_OK), "ok");
	assert_string_equal(sad_reason(SAD_MALFORMED), "sad_invalid");
	assert_string_equal(sad_reason(SAD_BAD_ALG), "sad_invalid");
	assert_string_equal(sad_reason(SAD_UNTRUSTED), "sad_invalid");
	assert_string_equal(sad_reason(SAD_NOT_YET_VALID), "sad_invalid");
	assert_string_equal(sad_reason(SAD_LIFETIME), "sad_invalid");
	assert_string_equal(sad_reason(SAD_EXPIRED), "sad_expired");
	assert_string_equal(sad_reason(SAD_WRONG_CREDENTIAL), "sad_wrong_credential");
	assert_string_equal(sad_reason(SAD_WRONG_SUBJECT), "sad_wrong_subject");
	assert_string_equal(sad_reason(SAD_WRONG_PURPOSE), "sad_wrong_purpose");
	assert_string_equal(sad_reason(SAD_HASH_NOT_AUTHORISED), "hash_not_authorised");
	for (r = SAD_OK; r <= SAD_HASH_NOT_AUTHORISED; r++) {
		assert_non_null(sad_strerror(r));
		assert_true(strlen(sad_strerror(r)) > 10);
		if (r > SAD_OK)
			assert_string_not_equal(sad_strerror(r), sad_strerror(r - 1));
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_valid_issuer),
	    cmocka_unit_test(test_valid_device),
	    cmocka_unit_test(test_several_issuers),
	    cmocka_unit_test(test_bad_alg),
	    cmocka_unit_test(test_bad_signature),
	    cmocka_unit_test(test_header),
	    cmocka_unit_test(test_time),
	    cmocka_unit_test(test_expired_minted),
	    cmocka_unit_test(test_lifetime),
	    cmocka_unit_test(test_malformed_shape),
	    cmocka_unit_test(test_malformed_payload),
	    cmocka_unit_test(test_malformed_claims),
	    cmocka_unit_test(test_hash_count),
	    cmocka_unit_test(test_too_long),
	    cmocka_unit_test(test_match),
	    cmocka_unit_test(test_keys_load),
	    cmocka_unit_test(test_reasons),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
