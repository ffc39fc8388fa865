/* Signature activation data: a compact JWS (ES256) checked against pinned keys. See sad.h.
 *
 * The order matters: the token is bounded and split, the protected header is checked (alg
 * exactly ES256, no crit, no key carried in the header), the signature is verified with libjose
 * against each pinned key, and only then is the payload parsed as claims.
 *
 * libjose 11 is not trusted to choose the algorithm: jose_jws_ver_io() compares the header alg
 * with the JWK's alg using `strcmp(halg, kalg) < 0`, so a header "HS256" or "ES384" passes its
 * mismatch check against a key marked "ES256". Hence the header check here, and a JWS object
 * built from the compact parts with nothing but protected, payload and signature. */
#include "policy/sad.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <jose/jose.h>
#include <jose/openssl.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

/* NumericDate bounds: 1970 .. 9999-12-31T23:59:59Z, so exp + SAD_MAX_SKEW cannot overflow. */
#define SAD_DATE_MAX 253402300799LL

struct sad_keys {
	size_t n;
	json_t **jwk; /* public JWKs with "alg":"ES256", read-only after load */
};

const char *sad_reason(enum sad_result r)
{
	switch (r) {
	case SAD_OK:
		return "ok";
	case SAD_MALFORMED:
	case SAD_BAD_ALG:
	case SAD_UNTRUSTED:
	case SAD_NOT_YET_VALID:
	case SAD_LIFETIME:
		return "sad_invalid";
	case SAD_EXPIRED:
		return "sad_expired";
	case SAD_WRONG_CREDENTIAL:
		return "sad_wrong_credential";
	case SAD_WRONG_SUBJECT:
		return "sad_wrong_subject";
	case SAD_WRONG_PURPOSE:
		return "sad_wrong_purpose";
	case SAD_HASH_NOT_AUTHORISED:
		return "hash_not_authorised";
	}
	return "sad_invalid";
}

const char *sad_strerror(enum sad_result r)
{
	switch (r) {
	case SAD_OK:
		return "signature activation data is valid";
	case SAD_MALFORMED:
		return "signature activation data is not a well-formed compact JWS with the "
		       "required "
		       "claims";
	case SAD_BAD_ALG:
		return "JWS header refused: alg is not ES256, or it has crit or carries its own "
		       "key";
	case SAD_UNTRUSTED:
		return "signature does not verify with any pinned key";
	case SAD_EXPIRED:
		return "signature activation data has expired";
	case SAD_NOT_YET_VALID:
		return "signature activation data is issued in the future";
	case SAD_LIFETIME:
		return "signature activation data lifetime is empty or too long";
	case SAD_WRONG_CREDENTIAL:
		return "signature activation data is for another credential";
	case SAD_WRONG_SUBJECT:
		return "signature activation data is for another citizen than the credential's "
		       "owner";
	case SAD_WRONG_PURPOSE:
		return "signature activation data is for another purpose";
	case SAD_HASH_NOT_AUTHORISED:
		return "a requested hash or its algorithm is not approved by the signature "
		       "activation "
		       "data";
	}
	return "unknown signature activation data result";
}

/* libjose reports errors on stderr by default: a daemon keeps its own log. */
static void jose_quiet(void *misc, const char *file, int line, uint64_t err, const char *fmt,
                       va_list ap)
{
	(void)misc;
	(void)file;
	(void)line;
	(void)err;
	(void)fmt;
	(void)ap;
}

static jose_cfg_t *quiet_cfg(void)
{
	jose_cfg_t *cfg = jose_cfg();

	if (cfg != NULL)
		jose_cfg_set_err_func(cfg, jose_quiet, NULL);
	return cfg;
}

/* An EC P-256 public key as a JWK pinned to ES256, or NULL with err naming what is wrong
 * (prefixed by `what`, the file name or "device key"). Takes ownership of nothing. */
static json_t *pkey_to_jwk(EVP_PKEY *pkey, const char *what, char *err, size_t errlen)
{
	jose_cfg_t *cfg = NULL;
	json_t *jwk = NULL;
	char curve[64];
	size_t curvelen = 0;

	if (EVP_PKEY_get_base_id(pkey) != EVP_PKEY_EC) {
		snprintf(err, errlen, "%s: key is %s, not EC P-256", what,
		         EVP_PKEY_get0_type_name(pkey) != NULL ? EVP_PKEY_get0_type_name(pkey)
		                                               : "of an unknown type");
		return NULL;
	}
	if (EVP_PKEY_get_group_name(pkey, curve, sizeof(curve), &curvelen) != 1 ||
	    strcmp(curve, SN_X9_62_prime256v1) != 0) {
		snprintf(err, errlen, "%s: EC key on curve %s, not P-256", what,
		         curvelen > 0 ? curve : "(unnamed)");
		return NULL;
	}
	if ((cfg = quiet_cfg()) == NULL) {
		snprintf(err, errlen, "%s: out of memory", what);
		return NULL;
	}
	jwk = jose_openssl_jwk_from_EVP_PKEY(cfg, pkey);
	jose_cfg_decref(cfg);
	if (jwk == NULL || json_object_get(jwk, "d") != NULL ||
	    json_object_set_new(jwk, "alg", json_string("ES256")) != 0) {
		json_decref(jwk);
		snprintf(err, errlen, "%s: cannot convert the key to a JWK", what);
		return NULL;
	}
	return jwk;
}

static json_t *pem_to_jwk(BIO *bio, const char *what, char *err, size_t errlen)
{
	EVP_PKEY *pkey = PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL);
	json_t *jwk = NULL;

	if (pkey == NULL)
		snprintf(err, errlen, "%s: not a PEM public key (BEGIN PUBLIC KEY)", what);
	else
		jwk = pkey_to_jwk(pkey, what, err, errlen);
	EVP_PKEY_free(pkey);
	ERR_clear_error();
	return jwk;
}

int sad_keys_load(char *const *pem_paths, size_t n, struct sad_keys **out, char *err, size_t errlen)
{
	struct sad_keys *k = NULL;
	BIO *bio = NULL;
	size_t i;
	int r = -1;

	*out = NULL;
	if (n > 0 && pem_paths == NULL) {
		snprintf(err, errlen, "sad issuer keys: no paths");
		return -1;
	}
	if ((k = calloc(1, sizeof(*k))) == NULL ||
	    (n > 0 && (k->jwk = calloc(n, sizeof(*k->jwk))) == NULL)) {
		snprintf(err, errlen, "sad issuer keys: out of memory");
		goto out;
	}
	for (i = 0; i < n; i++) {
		if ((bio = BIO_new_file(pem_paths[i], "r")) == NULL) {
			snprintf(err, errlen, "%s: cannot open", pem_paths[i]);
			ERR_clear_error();
			goto out;
		}
		k->jwk[i] = pem_to_jwk(bio, pem_paths[i], err, errlen);
		BIO_free(bio);
		bio = NULL;
		if (k->jwk[i] == NULL)
			goto out;
		k->n++;
	}
	*out = k;
	k = NULL;
	r = 0;
out:
	sad_keys_free(k);
	return r;
}

void sad_keys_free(struct sad_keys *k)
{
	size_t i;

	if (k == NULL)
		return;
	for (i = 0; i < k->n; i++)
		json_decref(k->jwk[i]);
	free(k->jwk);
	free(k);
}

static int b64_value(unsigned char c, int url)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == (url ? '-' : '+'))
		return 62;
	if (c == (url ? '_' : '/'))
		return 63;
	return -1;
}

/* Strict decoding: base64url without padding (url), or standard base64 with its padding.
 * Refuses other characters, a wrong length and non-zero unused bits, so each byte string has
 * exactly one accepted encoding. Returns 0 and *outlen, or -1 (also when over cap bytes). */
static int b64_decode(const char *in, size_t len, int url, uint8_t *out, size_t cap, size_t *outlen)
{
	unsigned acc = 0;
	int bits = 0, v;
	size_t i, n = 0;

	if (!url) {
		if (len % 4 != 0)
			return -1;
		if (len > 0 && in[len - 1] == '=')
			len--;
		if (len > 0 && in[len - 1] == '=')
			len--;
	}
	if (len % 4 == 1)
		return -1;
	for (i = 0; i < len; i++) {
		if ((v = b64_value((unsigned char)in[i], url)) < 0)
			return -1;
		acc = (acc << 6 | (unsigned)v) & 0xfff;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			if (n >= cap)
				return -1;
			out[n++] = (uint8_t)(acc >> bits);
		}
	}
	if ((acc & ((1u << bits) - 1)) != 0)
		return -1;
	*outlen = n;
	return 0;
}

/* A JSON object from bytes, duplicate keys refused (jansson keeps the last one otherwise). */
static json_t *parse_object(const uint8_t *buf, size_t len)
{
	json_t *j = json_loadb((const char *)buf, len, JSON_REJECT_DUPLICATES, NULL);

	if (j != NULL && !json_is_object(j)) {
		json_decref(j);
		j = NULL;
	}
	return j;
}

/* The protected header: alg exactly ES256; no crit (we understand no extension), no b64
 * (RFC 7797), and no key or key reference, which could only invite using it. */
static enum sad_result check_header(const json_t *hdr)
{
	static const char *const refused[] = {"crit", "b64", "jwk", "jku", "x5u", "x5c"};
	const json_t *alg = json_object_get(hdr, "alg");
	size_t i;

	if (!json_is_string(alg) || strcmp(json_string_value(alg), "ES256") != 0)
		return SAD_BAD_ALG;
	for (i = 0; i < sizeof(refused) / sizeof(refused[0]); i++)
		if (json_object_get(hdr, refused[i]) != NULL)
			return SAD_BAD_ALG;
	return SAD_OK;
}

/* Does jws (flattened, protected/payload/signature only) verify with jwk? */
static int verify_with(jose_cfg_t *cfg, const json_t *jws, const json_t *pinned)
{
	json_t *jwk = json_deep_copy(pinned); /* libjose gets a private copy: no shared refs */
	int ok;

	if (jwk == NULL)
		return 0;
	ok = jose_jws_ver(cfg, jws, jws, jwk, false);
	json_decref(jwk);
	return ok;
}

/* Copy a string claim of 1..cap-1 bytes into dst (cap bytes). */
static int claim_str(const json_t *claims, const char *name, char *dst, size_t cap)
{
	const json_t *v = json_object_get(claims, name);
	size_t len;

	if (!json_is_string(v))
		return -1;
	len = json_string_length(v);
	if (len == 0 || len >= cap || memchr(json_string_value(v), '\0', len) != NULL)
		return -1;
	memcpy(dst, json_string_value(v), len);
	dst[len] = '\0';
	return 0;
}

static int claim_int(const json_t *claims, const char *name, int64_t min, int64_t max, int64_t *dst)
{
	const json_t *v = json_object_get(claims, name);

	if (!json_is_integer(v) || json_integer_value(v) < min || json_integer_value(v) > max)
		return -1;
	*dst = (int64_t)json_integer_value(v);
	return 0;
}

static enum sad_result parse_claims(const json_t *claims, struct sad_claims *c)
{
	const json_t *hashes, *h;
	char halg[64];
	int64_t num;
	size_t i, len, hlen;

	if (claim_str(claims, "iss", c->iss, sizeof(c->iss)) != 0 ||
	    claim_str(claims, "sub", c->sub, sizeof(c->sub)) != 0 ||
	    claim_str(claims, "cred", c->cred, sizeof(c->cred)) != 0 ||
	    claim_str(claims, "purpose", c->purpose, sizeof(c->purpose)) != 0 ||
	    claim_str(claims, "jti", c->jti, sizeof(c->jti)) != 0 ||
	    claim_str(claims, "halg", halg, sizeof(halg)) != 0 ||
	    claim_int(claims, "num", 1, SAD_MAX_NUM, &num) != 0 ||
	    claim_int(claims, "iat", 0, SAD_DATE_MAX, &c->iat) != 0 ||
	    claim_int(claims, "exp", 0, SAD_DATE_MAX, &c->exp) != 0)
		return SAD_MALFORMED;
	c->num = (uint32_t)num;

	/* halg is a dotted OID; a hash name ("sha256") is not accepted here. */
	c->halg = alg_hash_lookup(halg);
	if (c->halg == HASH_NONE || strcmp(alg_hash_oid(c->halg), halg) != 0)
		return SAD_MALFORMED;
	hlen = alg_hash_len(c->halg);
	if (hlen == 0 || hlen > sizeof(c->hashes[0]))
		return SAD_MALFORMED;

	hashes = json_object_get(claims, "hashes");
	if (!json_is_array(hashes) || json_array_size(hashes) < 1 ||
	    json_array_size(hashes) > SAD_MAX_HASHES)
		return SAD_MALFORMED;
	json_array_foreach(hashes, i, h)
	{
		if (!json_is_string(h) ||
		    b64_decode(json_string_value(h), json_string_length(h), 0, c->hashes[i],
		               sizeof(c->hashes[i]), &len) != 0 ||
		    len != hlen)
			return SAD_MALFORMED;
	}
	c->nhashes = json_array_size(hashes);
	return SAD_OK;
}

static enum sad_result check_time(const struct sad_claims *c, time_t now)
{
	int64_t t = (int64_t)now;

	if (c->exp + SAD_MAX_SKEW < t)
		return SAD_EXPIRED;
	if (c->iat - SAD_MAX_SKEW > t)
		return SAD_NOT_YET_VALID;
	if (c->exp <= c->iat || c->exp - c->iat > SAD_MAX_LIFETIME)
		return SAD_LIFETIME;
	return SAD_OK;
}

/* Errors of our own (out of memory) also answer SAD_MALFORMED: the SAD is refused either way,
 * and the contract has no internal error value. */
enum sad_result sad_verify(const struct sad_keys *issuers, const char *device_key_pem,
                           const char *jws, time_t now, struct sad_claims *out)
{
	enum sad_result r = SAD_MALFORMED;
	const char *dot1, *dot2;
	size_t len, hlen, plen, slen, declen, siglen;
	uint8_t *buf = NULL, sig[64];
	json_t *hdr = NULL, *flat = NULL, *claims = NULL, *devjwk = NULL;
	jose_cfg_t *cfg = NULL;
	BIO *bio = NULL;
	char err[256];
	size_t i;
	int verified = 0, by_device = 0;

	memset(out, 0, sizeof(*out));
	if (jws == NULL || (len = strnlen(jws, SAD_MAX_LEN + 1)) > SAD_MAX_LEN)
		goto out;

	/* Exactly three parts: header.payload.signature, none empty. */
	if ((dot1 = memchr(jws, '.', len)) == NULL ||
	    (dot2 = memchr(dot1 + 1, '.', len - (size_t)(dot1 + 1 - jws))) == NULL ||
	    memchr(dot2 + 1, '.', len - (size_t)(dot2 + 1 - jws)) != NULL)
		goto out;
	hlen = (size_t)(dot1 - jws);
	plen = (size_t)(dot2 - dot1 - 1);
	slen = len - hlen - plen - 2;
	if ((buf = malloc(len)) == NULL)
		goto out;

	if (hlen == 0 || b64_decode(jws, hlen, 1, buf, len, &declen) != 0 ||
	    (hdr = parse_object(buf, declen)) == NULL)
		goto out;
	if ((r = check_header(hdr)) != SAD_OK)
		goto out;
	r = SAD_MALFORMED;
	if (plen == 0 || b64_decode(dot1 + 1, plen, 1, buf, len, &declen) != 0 ||
	    b64_decode(dot2 + 1, slen, 1, sig, sizeof(sig), &siglen) != 0 || siglen != sizeof(sig))
		goto out;

	/* The signature, with nothing taken from the header but the (checked) alg. */
	flat = json_pack("{s:s%,s:s%,s:s%}", "protected", jws, hlen, "payload", dot1 + 1, plen,
	                 "signature", dot2 + 1, slen);
	if (flat == NULL || (cfg = quiet_cfg()) == NULL)
		goto out;
	for (i = 0; issuers != NULL && i < issuers->n && !verified; i++)
		verified = verify_with(cfg, flat, issuers->jwk[i]);
	if (!verified && device_key_pem != NULL) {
		if ((bio = BIO_new_mem_buf(device_key_pem, -1)) == NULL)
			goto out;
		devjwk = pem_to_jwk(bio, "device key", err, sizeof(err));
		if (devjwk != NULL && verify_with(cfg, flat, devjwk))
			verified = by_device = 1;
	}
	if (!verified) {
		r = SAD_UNTRUSTED;
		goto out;
	}

	/* Only now is the payload worth reading. */
	if ((claims = parse_object(buf, declen)) == NULL ||
	    (r = parse_claims(claims, out)) != SAD_OK) {
		r = SAD_MALFORMED;
		goto out;
	}
	if ((r = check_time(out, now)) != SAD_OK)
		goto out;
	out->by_device = by_device;
	r = SAD_OK;
out:
	if (r != SAD_OK)
		memset(out, 0, sizeof(*out));
	json_decref(hdr);
	json_decref(flat);
	json_decref(claims);
	json_decref(devjwk);
	BIO_free(bio);
	if (cfg != NULL)
		jose_cfg_decref(cfg);
	free(buf);
	return r;
}

enum sad_result sad_match(const struct sad_claims *c, const char *cred, const char *owner,
                          const char *purpose, enum alg_hash halg, const uint8_t (*hashes)[64],
                          size_t nhashes)
{
	size_t i, j, hlen;
	int found;

	if (cred == NULL || strcmp(c->cred, cred) != 0)
		return SAD_WRONG_CREDENTIAL;
	if (owner == NULL || strcmp(c->sub, owner) != 0)
		return SAD_WRONG_SUBJECT;
	if (purpose == NULL || strcmp(c->purpose, purpose) != 0)
		return SAD_WRONG_PURPOSE;
	/* Nothing requested is nothing approved: fail closed. */
	if (halg != c->halg || (hlen = alg_hash_len(halg)) == 0 || hashes == NULL || nhashes == 0)
		return SAD_HASH_NOT_AUTHORISED;
	for (i = 0; i < nhashes; i++) {
		found = 0;
		for (j = 0; j < c->nhashes && !found; j++)
			found = CRYPTO_memcmp(hashes[i], c->hashes[j], hlen) == 0;
		if (!found)
			return SAD_HASH_NOT_AUTHORISED;
	}
	return SAD_OK;
}
