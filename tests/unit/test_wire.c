/* The listener <-> core protocol (signer/wire/wire.h). Every message round trips; every decoder
 * refuses every truncation of a valid payload, a trailing byte, each cap passed by one, bad
 * enumerations and bad characters, and leaves its output cleared; the framing passes one
 * descriptor and nothing else; wire_peer accepts only a connection accepted on the daemon's own
 * socket. Payloads that an encoder would refuse are written here byte by byte (struct raw),
 * which also pins the layout the header describes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/objects.h>

#include "signer/core/core.h"
#include "signer/listener/link.h"
#include "signer/wire/wire.h"

/* --- A payload written by hand, host byte order --- */

struct raw {
	uint8_t *p;
	size_t n, cap;
};

static void raw_put(struct raw *r, const void *v, size_t n)
{
	if (r->n + n > r->cap) {
		size_t cap = r->cap > 0 ? r->cap : 256;

		while (cap < r->n + n)
			cap *= 2;
		r->p = realloc(r->p, cap);
		assert_non_null(r->p);
		r->cap = cap;
	}
	if (n > 0)
		memcpy(r->p + r->n, v, n);
	r->n += n;
}

static void r8(struct raw *r, unsigned v)
{
	uint8_t x = (uint8_t)v;

	raw_put(r, &x, 1);
}

static void r16(struct raw *r, unsigned v)
{
	uint16_t x = (uint16_t)v;

	raw_put(r, &x, 2);
}

static void r32(struct raw *r, uint32_t v)
{
	raw_put(r, &v, 4);
}

static void r64(struct raw *r, uint64_t v)
{
	raw_put(r, &v, 8);
}

/* A string after its u8, u16 or u32 length; len counts bytes (so NULs may be inside). */
static void rstr(struct raw *r, int width, const char *s, size_t len)
{
	if (width == 1)
		r8(r, (unsigned)len);
	else if (width == 2)
		r16(r, (unsigned)len);
	else
		r32(r, (uint32_t)len);
	raw_put(r, s, len);
}

static void rs8(struct raw *r, const char *s)
{
	rstr(r, 1, s, strlen(s));
}

static void raw_free(struct raw *r)
{
	free(r->p);
	memset(r, 0, sizeof(*r));
}

/* A string of n copies of ch (static, n < sizeof). */
static const char *rep(char ch, size_t n)
{
	static char buf[4][WIRE_MAX_CHAIN + 2];
	static int next;
	char *b = buf[next++ % 4];

	assert_true(n < sizeof(buf[0]));
	memset(b, ch, n);
	b[n] = '\0';
	return b;
}

/* --- Decoders as one type: each checks that a refusal leaves its output cleared --- */

typedef int (*dec_fn)(const uint8_t *p, size_t len, char *why, size_t whylen);

static int all_zero(const void *p, size_t n)
{
	const uint8_t *b = p;

	for (size_t i = 0; i < n; i++)
		if (b[i] != 0)
			return 0;
	return 1;
}

static int d_sign(const uint8_t *p, size_t len, char *why, size_t whylen)
{
	struct wire_sign *w = malloc(sizeof(*w));
	int r;

	assert_non_null(w);
	memset(w, 0xa5, sizeof(*w));
	r = wire_dec_sign(p, len, w, why, whylen);
	if (r != 0)
		assert_true(all_zero(w, sizeof(*w)));
	free(w);
	return r;
}

static int d_cred_req(const uint8_t *p, size_t len, char *why, size_t whylen)
{
	char cred[CRED_MAX_ID + 1];
	int r;

	memset(cred, 0xa5, sizeof(cred));
	r = wire_dec_cred_info_req(p, len, cred, why, whylen);
	if (r != 0)
		assert_true(all_zero(cred, sizeof(cred)));
	return r;
}

static int d_list_req(const uint8_t *p, size_t len, char *why, size_t whylen)
{
	struct wire_list_req w;
	int r;

	memset(&w, 0xa5, sizeof(w));
	r = wire_dec_list_req(p, len, &w, why, whylen);
	if (r != 0)
		assert_true(all_zero(&w, sizeof(w)));
	return r;
}

static int d_record(const uint8_t *p, size_t len, char *why, size_t whylen)
{
	struct wire_record w;
	int r;

	memset(&w, 0xa5, sizeof(w));
	r = wire_dec_record(p, len, &w, why, whylen);
	if (r != 0)
		assert_true(all_zero(&w, sizeof(w)));
	return r;
}

static int d_error(const uint8_t *p, size_t len, char *why, size_t whylen)
{
	struct refusal e;
	int r;

	memset(&e, 0xa5, sizeof(e));
	r = wire_dec_error(p, len, &e, why, whylen);
	if (r != 0)
		assert_true(all_zero(&e, sizeof(e)));
	return r;
}

static int d_sign_result(const uint8_t *p, size_t len, char *why, size_t whylen)
{
	struct sign_result res;
	int r;

	memset(&res, 0xa5, sizeof(res));
	r = wire_dec_sign_result(p, len, &res, why, whylen);
	if (r != 0)
		assert_true(all_zero(&res, sizeof(res)));
	else
		sign_result_clear(&res);
	return r;
}

static int d_cred_info(const uint8_t *p, size_t len, char *why, size_t whylen)
{
	struct wire_cred_info ci;
	int r;

	memset(&ci, 0xa5, sizeof(ci));
	r = wire_dec_cred_info(p, len, &ci, why, whylen);
	if (r != 0)
		assert_true(all_zero(&ci, sizeof(ci)));
	else
		wire_cred_info_clear(&ci);
	return r;
}

static int d_list(const uint8_t *p, size_t len, char *why, size_t whylen)
{
	struct wire_list l;
	int r;

	memset(&l, 0xa5, sizeof(l));
	r = wire_dec_list(p, len, &l, why, whylen);
	if (r != 0)
		assert_true(all_zero(&l, sizeof(l)));
	else
		wire_list_clear(&l);
	return r;
}

static int d_status(const uint8_t *p, size_t len, char *why, size_t whylen)
{
	struct wire_status st;
	int r;

	memset(&st, 0xa5, sizeof(st));
	r = wire_dec_status(p, len, &st, why, whylen);
	if (r != 0)
		assert_true(all_zero(&st, sizeof(st)));
	return r;
}

static int d_tsa_query(const uint8_t *p, size_t len, char *why, size_t whylen)
{
	const uint8_t *q = (const uint8_t *)"x";
	size_t n = 7;
	unsigned w = 7;
	int r = wire_dec_tsa_query(p, len, &w, &q, &n, why, whylen);

	if (r != 0) {
		assert_null(q);
		assert_int_equal(n, 0);
		assert_int_equal(w, 0);
	}
	return r;
}

static int d_tsa_reply(const uint8_t *p, size_t len, char *why, size_t whylen)
{
	struct wire_tsa_reply t;
	int r;

	memset(&t, 0xa5, sizeof(t));
	r = wire_dec_tsa_reply(p, len, &t, why, whylen);
	if (r != 0)
		assert_true(all_zero(&t, sizeof(t)));
	return r;
}

/* Decode an exact-size copy (a read past its end shows under ASan). */
static int dec_copy(dec_fn dec, const uint8_t *p, size_t len, char *why, size_t whylen)
{
	uint8_t *c = malloc(len > 0 ? len : 1);
	int r;

	assert_non_null(c);
	if (len > 0)
		memcpy(c, p, len);
	why[0] = '\0';
	r = dec(c, len, why, whylen);
	free(c);
	return r;
}

/* p decodes; every proper prefix (len-1 down to 0, also as a NULL pointer when empty) and p
 * with one byte more do not, each naming why. */
static void check_strict(dec_fn dec, const uint8_t *p, size_t len)
{
	char why[160];
	uint8_t *c;

	assert_int_equal(dec_copy(dec, p, len, why, sizeof(why)), 0);
	c = malloc(len + 1);
	assert_non_null(c);
	memcpy(c, p, len);
	c[len] = 0;
	assert_int_equal(dec_copy(dec, c, len + 1, why, sizeof(why)), -1);
	assert_non_null(strstr(why, "trailing"));
	free(c);
	for (size_t n = len; n-- > 0;) {
		if (dec_copy(dec, p, n, why, sizeof(why)) != -1)
			fail_msg("prefix of %zu of %zu bytes accepted", n, len);
		assert_true(why[0] != '\0');
	}
	why[0] = '\0';
	assert_int_equal(dec(NULL, 0, why, sizeof(why)), -1);
	assert_true(why[0] != '\0');
}

/* r refused, why naming field. */
static void refused(dec_fn dec, const struct raw *r, const char *field)
{
	char why[160];

	if (dec_copy(dec, r->p, r->n, why, sizeof(why)) != -1)
		fail_msg("accepted, expected a refusal naming %s", field);
	if (strstr(why, field) == NULL)
		fail_msg("refusal \"%s\" does not name %s", why, field);
}

static void accepted(dec_fn dec, const struct raw *r)
{
	char why[160];

	if (dec_copy(dec, r->p, r->n, why, sizeof(why)) != 0)
		fail_msg("refused: %s", why);
}

/* An encoder's refusal poisons the buffer. */
static void enc_refused(int r, struct wire_buf *b)
{
	assert_int_equal(r, -1);
	assert_int_equal(b->oom, 1);
	wire_buf_free(b);
}

/* --- Methods --- */

static void methods(void **state)
{
	static const char *const names[] = {NULL,
	                                    "info",
	                                    "credentials/list",
	                                    "credentials/info",
	                                    "signatures/signHash",
	                                    "signatures/signDoc",
	                                    "unknown"};

	for (int m = WM_INFO; m <= WM_UNKNOWN; m++) {
		assert_string_equal(wire_method_name((enum wire_method)m), names[m]);
		if (m != WM_UNKNOWN)
			assert_int_equal(wire_method_of(names[m]), m);
	}
	assert_null(wire_method_name((enum wire_method)0));
	assert_null(wire_method_name((enum wire_method)7));
	assert_int_equal(wire_method_of("unknown"), WM_UNKNOWN);
	assert_int_equal(wire_method_of(""), WM_UNKNOWN);
	assert_int_equal(wire_method_of("info/"), WM_UNKNOWN);
	assert_int_equal(wire_method_of("signatures/signhash"), WM_UNKNOWN);
	assert_int_equal(wire_method_of("credentials/list?x"), WM_UNKNOWN);
	assert_int_equal(wire_method_of(NULL), WM_UNKNOWN);
}

/* --- WIRE_REQ_SIGN --- */

static void make_req(struct sign_req *q, enum alg_family fam, enum alg_hash h, size_t n,
                     const char *purpose, const char *sad, int cms)
{
	memset(q, 0, sizeof(*q));
	snprintf(q->cred, sizeof(q->cred), "cit-1.A_b");
	q->fam = fam;
	q->hash = h;
	q->pss_salt = fam == ALG_RSA_PSS ? 20 : alg_hash_len(h);
	q->nhashes = n;
	for (size_t i = 0; i < n; i++)
		for (size_t j = 0; j < TOK_MAX_DIGEST; j++)
			q->hashes[i][j] = (uint8_t)(i * 7 + j);
	q->purpose = purpose;
	q->sad = sad;
	q->cms = cms;
}

static void sign_roundtrip_one(const struct sign_req *q, int strict)
{
	enum wire_method m = q->cms ? WM_SIGN_DOC : WM_SIGN_HASH;
	struct wire_sign *w = malloc(sizeof(*w));
	struct wire_buf b;
	size_t dlen = alg_hash_len(q->hash);
	char why[160];

	assert_non_null(w);
	wire_buf_init(&b, WIRE_MAX_REQ);
	assert_int_equal(wire_enc_sign(&b, m, q), 0);
	assert_int_equal(wire_dec_sign(b.p, b.len, w, why, sizeof(why)), 0);
	assert_int_equal(w->method, m);
	assert_string_equal(w->req.cred, q->cred);
	assert_int_equal(w->req.fam, q->fam);
	assert_int_equal(w->req.hash, q->hash);
	assert_int_equal(w->req.pss_salt, q->pss_salt);
	assert_int_equal(w->req.nhashes, q->nhashes);
	assert_int_equal(w->req.cms, q->cms);
	assert_int_equal(w->req.stamp, q->stamp);
	assert_int_equal(w->req.pades, q->pades);
	for (size_t i = 0; i < q->nhashes; i++)
		assert_memory_equal(w->req.hashes[i], q->hashes[i], dlen);
	if (q->purpose == NULL) {
		assert_null(w->req.purpose);
	} else {
		assert_ptr_equal(w->req.purpose, w->purpose);
		assert_string_equal(w->req.purpose, q->purpose);
	}
	if (q->sad == NULL) {
		assert_null(w->req.sad);
	} else {
		assert_ptr_equal(w->req.sad, w->sad);
		assert_string_equal(w->req.sad, q->sad);
	}
	if (strict)
		check_strict(d_sign, b.p, b.len);
	wire_buf_free(&b);
	free(w);
}

static void sign_roundtrip(void **state)
{
	static const enum alg_hash hashes[] = {HASH_SHA256, HASH_SHA384, HASH_SHA512};
	static const enum alg_family fams[] = {ALG_ECDSA, ALG_RSA_PKCS1, ALG_RSA_PSS};
	static const size_t counts[] = {1, 64};
	struct sign_req *q = malloc(sizeof(*q));

	assert_non_null(q);
	for (size_t h = 0; h < 3; h++)
		for (size_t c = 0; c < 2; c++)
			for (int opt = 0; opt < 4; opt++) {
				make_req(q, fams[(h + (size_t)opt) % 3], hashes[h], counts[c],
				         opt & 1 ? "payment" : NULL, opt & 2 ? "eyJ.eyJ.sig" : NULL,
				         opt == 3);
				sign_roundtrip_one(q, 1);
			}
	/* signDoc forms: B-T, PAdES, both. */
	for (int form = 1; form < 4; form++) {
		make_req(q, ALG_ECDSA, HASH_SHA256, 2, NULL, NULL, 1);
		q->stamp = (form & 1) != 0;
		q->pades = (form & 2) != 0;
		sign_roundtrip_one(q, 1);
	}
	/* PSS salts: 0 and 64 for any hash. */
	make_req(q, ALG_RSA_PSS, HASH_SHA256, 1, NULL, NULL, 0);
	q->pss_salt = 0;
	sign_roundtrip_one(q, 1);
	q->pss_salt = 64;
	sign_roundtrip_one(q, 0);
	/* Every field at its cap: purpose 64, SAD 8192, 64 SHA-512 digests, credential ID 64. */
	make_req(q, ALG_ECDSA, HASH_SHA512, WIRE_MAX_HASHES, rep('p', WIRE_MAX_PURPOSE),
	         rep('s', WIRE_MAX_SAD), 1);
	snprintf(q->cred, sizeof(q->cred), "%s", rep('c', CRED_MAX_ID));
	sign_roundtrip_one(q, 0);
	free(q);
}

/* A valid sign payload, written by hand: fields may be overridden. */
struct sign_fields {
	unsigned method, fam, hash, salt, nhashes, form;
	const char *cred;
	size_t cred_len;
	const char *purpose;
	size_t purpose_len;
	const char *sad;
	size_t sad_len;
	size_t dlen; /* digest bytes written per hash */
};

static struct sign_fields sign_default(void)
{
	struct sign_fields f = {
	    .method = WM_SIGN_HASH,
	    .fam = ALG_ECDSA,
	    .hash = HASH_SHA256,
	    .salt = 32,
	    .nhashes = 2,
	    .cred = "cred-1",
	    .cred_len = 6,
	    .purpose = "p",
	    .purpose_len = 1,
	    .sad = "a.b.c",
	    .sad_len = 5,
	    .dlen = 32,
	};
	return f;
}

static void sign_raw(struct raw *r, const struct sign_fields *f)
{
	uint8_t d[TOK_MAX_DIGEST + 1] = {0};

	memset(r, 0, sizeof(*r));
	r8(r, f->method);
	r8(r, f->fam);
	r8(r, f->hash);
	r8(r, f->salt);
	rstr(r, 1, f->cred, f->cred_len);
	rstr(r, 1, f->purpose, f->purpose_len);
	rstr(r, 2, f->sad, f->sad_len);
	r8(r, f->nhashes);
	for (unsigned i = 0; i < f->nhashes; i++)
		raw_put(r, d, f->dlen);
	r8(r, f->form);
}

static void sign_try(const struct sign_fields *f, const char *field)
{
	struct raw r;

	sign_raw(&r, f);
	if (field == NULL)
		accepted(d_sign, &r);
	else
		refused(d_sign, &r, field);
	raw_free(&r);
}

static void sign_refusals(void **state)
{
	struct sign_fields f;
	char big[WIRE_MAX_SAD + 2];

	f = sign_default();
	sign_try(&f, NULL);
	/* Methods: only the two signing ones. */
	for (unsigned m = 0; m < 256; m++) {
		f = sign_default();
		f.method = m;
		sign_try(&f, m == WM_SIGN_HASH || m == WM_SIGN_DOC ? NULL : "method");
	}
	for (unsigned v = 0; v < 256; v++) {
		f = sign_default();
		f.fam = v;
		sign_try(&f, v >= ALG_ECDSA && v <= ALG_RSA_PSS ? NULL : "family");
	}
	for (unsigned v = 0; v < 256; v++) {
		f = sign_default();
		f.hash = v;
		if (v == HASH_SHA256 || v == HASH_SHA384 || v == HASH_SHA512) {
			f.salt = (unsigned)alg_hash_len((enum alg_hash)v);
			f.dlen = f.salt;
			sign_try(&f, NULL);
		} else {
			sign_try(&f, "hash");
		}
	}
	/* form: B-T and PAdES bits, for signDoc only. */
	for (unsigned v = 0; v < 256; v++) {
		f = sign_default();
		f.form = v;
		sign_try(&f, v == 0 ? NULL : "form");
		f.method = WM_SIGN_DOC;
		sign_try(&f, v <= (WIRE_FORM_B_T | WIRE_FORM_PADES) ? NULL : "form");
	}
	/* A digest of another hash's length: the payload's end no longer matches. */
	f = sign_default();
	f.dlen = 48;
	sign_try(&f, "trailing");
	f = sign_default();
	f.dlen = 31;
	sign_try(&f, "hashes");
	/* pss_salt: the digest length unless PSS; PSS 0..64. */
	f = sign_default();
	f.salt = 20;
	sign_try(&f, "pss_salt");
	f.fam = ALG_RSA_PKCS1;
	sign_try(&f, "pss_salt");
	f.fam = ALG_RSA_PSS;
	sign_try(&f, NULL);
	f.salt = 0;
	sign_try(&f, NULL);
	f.salt = 64;
	sign_try(&f, NULL);
	f.salt = 65;
	sign_try(&f, "pss_salt");
	f.salt = 255;
	sign_try(&f, "pss_salt");
	/* Credential ID: 1..64 of [A-Za-z0-9._-], no NUL. */
	f = sign_default();
	f.cred = rep('c', CRED_MAX_ID);
	f.cred_len = CRED_MAX_ID;
	sign_try(&f, NULL);
	f.cred = rep('c', CRED_MAX_ID + 1);
	f.cred_len = CRED_MAX_ID + 1;
	sign_try(&f, "cred");
	f.cred_len = 0;
	sign_try(&f, "cred");
	f.cred = "a\0b";
	f.cred_len = 3;
	sign_try(&f, "cred");
	static const char *const bad_ids[] = {"a b", "a/b", "a:b", "caf\xc3\xa9", "a\nb", "*"};
	for (size_t i = 0; i < sizeof(bad_ids) / sizeof(bad_ids[0]); i++) {
		f.cred = bad_ids[i];
		f.cred_len = strlen(bad_ids[i]);
		sign_try(&f, "cred");
	}
	/* Purpose: absent or 1..64 without NUL. */
	f = sign_default();
	f.purpose_len = 0;
	sign_try(&f, NULL);
	f.purpose = rep('p', WIRE_MAX_PURPOSE);
	f.purpose_len = WIRE_MAX_PURPOSE;
	sign_try(&f, NULL);
	f.purpose = rep('p', WIRE_MAX_PURPOSE + 1);
	f.purpose_len = WIRE_MAX_PURPOSE + 1;
	sign_try(&f, "purpose");
	f.purpose = "pa\0y";
	f.purpose_len = 4;
	sign_try(&f, "purpose");
	/* SAD: absent or 1..8192 without NUL. */
	f = sign_default();
	f.sad_len = 0;
	sign_try(&f, NULL);
	memset(big, 's', sizeof(big));
	f.sad = big;
	f.sad_len = WIRE_MAX_SAD;
	sign_try(&f, NULL);
	f.sad_len = WIRE_MAX_SAD + 1;
	sign_try(&f, "SAD");
	big[100] = '\0';
	f.sad_len = WIRE_MAX_SAD;
	sign_try(&f, "SAD");
	/* 1..64 digests. */
	f = sign_default();
	f.nhashes = 0;
	sign_try(&f, "nhashes");
	f.nhashes = WIRE_MAX_HASHES;
	sign_try(&f, NULL);
	f.nhashes = WIRE_MAX_HASHES + 1;
	sign_try(&f, "nhashes");
}

static void sign_encoder_refusals(void **state)
{
	struct sign_req *q = malloc(sizeof(*q));
	struct wire_buf b;

	assert_non_null(q);
	make_req(q, ALG_ECDSA, HASH_SHA256, 1, NULL, NULL, 0);
	wire_buf_init(&b, WIRE_MAX_REQ);
	enc_refused(wire_enc_sign(&b, WM_INFO, q), &b);
	enc_refused(wire_enc_sign(&b, WM_SIGN_DOC, q), &b); /* cms does not match */
	q->stamp = 1;                                       /* B-T and PAdES are signDoc's */
	enc_refused(wire_enc_sign(&b, WM_SIGN_HASH, q), &b);
	q->stamp = 0;
	q->pades = 1;
	enc_refused(wire_enc_sign(&b, WM_SIGN_HASH, q), &b);
	q->pades = 0;
	q->nhashes = 0;
	enc_refused(wire_enc_sign(&b, WM_SIGN_HASH, q), &b);
	q->nhashes = WIRE_MAX_HASHES + 1;
	enc_refused(wire_enc_sign(&b, WM_SIGN_HASH, q), &b);
	q->nhashes = 1;
	q->pss_salt = 20;
	enc_refused(wire_enc_sign(&b, WM_SIGN_HASH, q), &b);
	q->fam = ALG_RSA_PSS;
	q->pss_salt = 65;
	enc_refused(wire_enc_sign(&b, WM_SIGN_HASH, q), &b);
	q->pss_salt = 32;
	q->fam = ALG_NONE;
	enc_refused(wire_enc_sign(&b, WM_SIGN_HASH, q), &b);
	q->fam = ALG_ECDSA;
	q->hash = HASH_NONE;
	enc_refused(wire_enc_sign(&b, WM_SIGN_HASH, q), &b);
	q->hash = HASH_SHA256;
	q->purpose = "";
	enc_refused(wire_enc_sign(&b, WM_SIGN_HASH, q), &b);
	q->purpose = rep('p', WIRE_MAX_PURPOSE + 1);
	enc_refused(wire_enc_sign(&b, WM_SIGN_HASH, q), &b);
	q->purpose = NULL;
	q->sad = "";
	enc_refused(wire_enc_sign(&b, WM_SIGN_HASH, q), &b);
	q->sad = rep('s', WIRE_MAX_SAD + 1);
	enc_refused(wire_enc_sign(&b, WM_SIGN_HASH, q), &b);
	q->sad = NULL;
	snprintf(q->cred, sizeof(q->cred), "a b");
	enc_refused(wire_enc_sign(&b, WM_SIGN_HASH, q), &b);
	snprintf(q->cred, sizeof(q->cred), "ok");
	assert_int_equal(wire_enc_sign(&b, WM_SIGN_HASH, q), 0);
	/* A poisoned buffer stays poisoned: later puts are ignored, wire_send refuses it. */
	b.oom = 1;
	assert_int_equal(wire_enc_sign(&b, WM_SIGN_HASH, q), -1);
	assert_int_equal(wire_send(-1, WIRE_REQ_SIGN, &b, -1), -1);
	wire_buf_free(&b);
	/* A buffer whose cap is too small for the request. */
	wire_buf_init(&b, 16);
	enc_refused(wire_enc_sign(&b, WM_SIGN_HASH, q), &b);
	free(q);
}

/* --- WIRE_RESP_TSA_QUERY, WIRE_REQ_TSA_REPLY --- */

static void tsa_query(void **state)
{
	static uint8_t q[WIRE_MAX_TSA_QUERY + 1];
	static const unsigned waits[] = {1, 5000, WIRE_MAX_TSA_WAIT_MS};
	const uint8_t *got;
	struct wire_buf b;
	struct raw r;
	size_t n;
	unsigned w;
	char why[160];

	memset(q, 0x30, sizeof(q));
	for (size_t i = 0; i < sizeof(waits) / sizeof(waits[0]); i++) {
		for (size_t len = 1; len <= WIRE_MAX_TSA_QUERY; len += WIRE_MAX_TSA_QUERY - 1) {
			wire_buf_init(&b, WIRE_MAX_RESP);
			assert_int_equal(wire_enc_tsa_query(&b, waits[i], q, len), 0);
			assert_int_equal(
			    wire_dec_tsa_query(b.p, b.len, &w, &got, &n, why, sizeof(why)), 0);
			assert_int_equal(w, waits[i]);
			assert_int_equal(n, len);
			assert_memory_equal(got, q, len);
			check_strict(d_tsa_query, b.p, b.len);
			wire_buf_free(&b);
		}
	}
	wire_buf_init(&b, WIRE_MAX_RESP);
	enc_refused(wire_enc_tsa_query(&b, 5000, q, 0), &b);
	wire_buf_init(&b, WIRE_MAX_RESP);
	enc_refused(wire_enc_tsa_query(&b, 5000, q, WIRE_MAX_TSA_QUERY + 1), &b);
	wire_buf_init(&b, WIRE_MAX_RESP);
	enc_refused(wire_enc_tsa_query(&b, 5000, NULL, 1), &b);
	wire_buf_init(&b, WIRE_MAX_RESP);
	enc_refused(wire_enc_tsa_query(&b, 0, q, 1), &b);
	wire_buf_init(&b, WIRE_MAX_RESP);
	enc_refused(wire_enc_tsa_query(&b, WIRE_MAX_TSA_WAIT_MS + 1, q, 1), &b);
	memset(&r, 0, sizeof(r));
	r32(&r, 5000);
	r16(&r, 0);
	refused(d_tsa_query, &r, "query");
	raw_free(&r);
	r32(&r, 5000);
	r16(&r, WIRE_MAX_TSA_QUERY + 1);
	raw_put(&r, q, WIRE_MAX_TSA_QUERY + 1);
	refused(d_tsa_query, &r, "query");
	raw_free(&r);
	r32(&r, 0);
	r16(&r, 1);
	raw_put(&r, q, 1);
	refused(d_tsa_query, &r, "wait");
	raw_free(&r);
	r32(&r, WIRE_MAX_TSA_WAIT_MS + 1);
	r16(&r, 1);
	raw_put(&r, q, 1);
	refused(d_tsa_query, &r, "wait");
	raw_free(&r);
}

static void tsa_reply_raw(struct raw *r, unsigned outcome, unsigned status, size_t len)
{
	static uint8_t body[WIRE_MAX_TSA_REPLY + 1];

	memset(r, 0, sizeof(*r));
	r8(r, outcome);
	r16(r, status);
	r16(r, (unsigned)len);
	raw_put(r, body, len);
}

static void tsa_reply(void **state)
{
	static uint8_t body[WIRE_MAX_TSA_REPLY + 1];
	struct wire_tsa_reply in = {0}, out;
	struct wire_buf b;
	struct raw r;
	char why[160];

	memset(body, 0x30, sizeof(body));
	/* A reply, and each failure without a body. */
	in.outcome = WIRE_TSA_OK;
	in.http_status = 200;
	in.body = body;
	in.len = WIRE_MAX_TSA_REPLY;
	wire_buf_init(&b, WIRE_MAX_REQ);
	assert_int_equal(wire_enc_tsa_reply(&b, &in), 0);
	assert_true(b.len <= WIRE_MAX_REQ);
	assert_int_equal(wire_dec_tsa_reply(b.p, b.len, &out, why, sizeof(why)), 0);
	assert_int_equal(out.outcome, WIRE_TSA_OK);
	assert_int_equal(out.http_status, 200);
	assert_int_equal(out.len, WIRE_MAX_TSA_REPLY);
	assert_memory_equal(out.body, body, out.len);
	check_strict(d_tsa_reply, b.p, b.len);
	wire_buf_free(&b);
	for (int o = WIRE_TSA_UNREACHABLE; o <= WIRE_TSA_NOT_CONFIGURED; o++) {
		struct wire_tsa_reply f = {.outcome = o,
		                           .http_status = o == WIRE_TSA_HTTP_ERROR ? 503 : 0};

		assert_non_null(wire_tsa_outcome_name(o));
		wire_buf_init(&b, WIRE_MAX_REQ);
		assert_int_equal(wire_enc_tsa_reply(&b, &f), 0);
		assert_int_equal(wire_dec_tsa_reply(b.p, b.len, &out, why, sizeof(why)), 0);
		assert_int_equal(out.outcome, o);
		assert_int_equal(out.http_status, f.http_status);
		assert_int_equal(out.len, 0);
		check_strict(d_tsa_reply, b.p, b.len);
		wire_buf_free(&b);
	}
	assert_null(wire_tsa_outcome_name(-1));
	assert_null(wire_tsa_outcome_name(WIRE_TSA_NOT_CONFIGURED + 1));
	/* The encoder refuses what the decoder would. */
	in.len = WIRE_MAX_TSA_REPLY + 1;
	wire_buf_init(&b, WIRE_MAX_REQ);
	enc_refused(wire_enc_tsa_reply(&b, &in), &b);
	in.len = 0;
	wire_buf_init(&b, WIRE_MAX_REQ);
	enc_refused(wire_enc_tsa_reply(&b, &in), &b);
	in.len = 1;
	in.http_status = 404;
	wire_buf_init(&b, WIRE_MAX_REQ);
	enc_refused(wire_enc_tsa_reply(&b, &in), &b);
	in.outcome = WIRE_TSA_HTTP_ERROR; /* a failure carries no body */
	wire_buf_init(&b, WIRE_MAX_REQ);
	enc_refused(wire_enc_tsa_reply(&b, &in), &b);
	/* Decoder refusals, field by field. */
	for (unsigned o = 0; o < 256; o++) {
		tsa_reply_raw(&r, o, o == WIRE_TSA_OK ? 200 : 0, o == WIRE_TSA_OK ? 10 : 0);
		if (o <= WIRE_TSA_NOT_CONFIGURED)
			accepted(d_tsa_reply, &r);
		else
			refused(d_tsa_reply, &r, "outcome");
		raw_free(&r);
	}
	tsa_reply_raw(&r, WIRE_TSA_OK, 201, 10);
	refused(d_tsa_reply, &r, "http_status");
	raw_free(&r);
	tsa_reply_raw(&r, WIRE_TSA_HTTP_ERROR, 99, 0);
	refused(d_tsa_reply, &r, "http_status");
	raw_free(&r);
	tsa_reply_raw(&r, WIRE_TSA_HTTP_ERROR, 600, 0);
	refused(d_tsa_reply, &r, "http_status");
	raw_free(&r);
	tsa_reply_raw(&r, WIRE_TSA_OK, 200, 0);
	refused(d_tsa_reply, &r, "body");
	raw_free(&r);
	tsa_reply_raw(&r, WIRE_TSA_OK, 200, WIRE_MAX_TSA_REPLY + 1);
	refused(d_tsa_reply, &r, "body");
	raw_free(&r);
	tsa_reply_raw(&r, WIRE_TSA_TIMEOUT, 0, 3);
	refused(d_tsa_reply, &r, "body");
	raw_free(&r);
}

/* --- WIRE_REQ_CRED_INFO --- */

static void cred_info_req(void **state)
{
	char cred[CRED_MAX_ID + 1], why[160];
	struct wire_buf b;
	struct raw r = {0};

	wire_buf_init(&b, WIRE_MAX_REQ);
	assert_int_equal(wire_enc_cred_info_req(&b, "seal-01"), 0);
	assert_int_equal(wire_dec_cred_info_req(b.p, b.len, cred, why, sizeof(why)), 0);
	assert_string_equal(cred, "seal-01");
	check_strict(d_cred_req, b.p, b.len);
	wire_buf_free(&b);

	rs8(&r, rep('x', CRED_MAX_ID));
	accepted(d_cred_req, &r);
	raw_free(&r);
	rs8(&r, rep('x', CRED_MAX_ID + 1));
	refused(d_cred_req, &r, "cred");
	raw_free(&r);
	rs8(&r, "");
	refused(d_cred_req, &r, "cred");
	raw_free(&r);
	rs8(&r, "a;b");
	refused(d_cred_req, &r, "cred");
	raw_free(&r);
	rstr(&r, 1, "ab\0", 3);
	refused(d_cred_req, &r, "cred");
	raw_free(&r);

	enc_refused(wire_enc_cred_info_req(&b, "a b"), &b);
	enc_refused(wire_enc_cred_info_req(&b, ""), &b);
	enc_refused(wire_enc_cred_info_req(&b, NULL), &b);
	enc_refused(wire_enc_cred_info_req(&b, rep('x', CRED_MAX_ID + 1)), &b);
}

/* --- WIRE_REQ_LIST --- */

static void list_req_one(const char *user, const char *after, unsigned max)
{
	struct wire_list_req w;
	struct wire_buf b;
	char why[160];

	wire_buf_init(&b, WIRE_MAX_REQ);
	assert_int_equal(wire_enc_list_req(&b, user, after, max), 0);
	assert_int_equal(wire_dec_list_req(b.p, b.len, &w, why, sizeof(why)), 0);
	assert_int_equal(w.has_user, user != NULL);
	assert_int_equal(w.has_after, after != NULL);
	assert_string_equal(w.user, user != NULL ? user : "");
	assert_string_equal(w.after, after != NULL ? after : "");
	assert_int_equal(w.max, max);
	check_strict(d_list_req, b.p, b.len);
	wire_buf_free(&b);
}

static void list_req_raw(struct raw *r, const char *user, size_t ulen, const char *after,
                         size_t alen, unsigned max)
{
	memset(r, 0, sizeof(*r));
	rstr(r, 1, user, ulen);
	rstr(r, 1, after, alen);
	r16(r, max);
}

static void list_req(void **state)
{
	struct wire_buf b;
	struct raw r;

	list_req_one(NULL, NULL, 1);
	list_req_one("alice@example", NULL, WIRE_MAX_IDS);
	list_req_one(NULL, "cred-9", 10);
	list_req_one(rep('u', CRED_MAX_USER), rep('i', CRED_MAX_ID), 1000);

	list_req_raw(&r, NULL, 0, NULL, 0, 0);
	refused(d_list_req, &r, "max");
	raw_free(&r);
	list_req_raw(&r, NULL, 0, NULL, 0, WIRE_MAX_IDS + 1);
	refused(d_list_req, &r, "max");
	raw_free(&r);
	list_req_raw(&r, rep('u', CRED_MAX_USER + 1), CRED_MAX_USER + 1, NULL, 0, 5);
	refused(d_list_req, &r, "user");
	raw_free(&r);
	list_req_raw(&r, "al ice", 6, NULL, 0, 5);
	refused(d_list_req, &r, "user");
	raw_free(&r);
	list_req_raw(&r, "al\x7f", 3, NULL, 0, 5);
	refused(d_list_req, &r, "user");
	raw_free(&r);
	list_req_raw(&r, "al\0ice", 6, NULL, 0, 5);
	refused(d_list_req, &r, "user");
	raw_free(&r);
	list_req_raw(&r, NULL, 0, rep('i', CRED_MAX_ID + 1), CRED_MAX_ID + 1, 5);
	refused(d_list_req, &r, "after");
	raw_free(&r);
	list_req_raw(&r, NULL, 0, "a/b", 3, 5);
	refused(d_list_req, &r, "after");
	raw_free(&r);
	list_req_raw(&r, NULL, 0, "ab\0", 3, 5);
	refused(d_list_req, &r, "after");
	raw_free(&r);

	wire_buf_init(&b, WIRE_MAX_REQ);
	enc_refused(wire_enc_list_req(&b, NULL, NULL, 0), &b);
	enc_refused(wire_enc_list_req(&b, NULL, NULL, WIRE_MAX_IDS + 1), &b);
	enc_refused(wire_enc_list_req(&b, "a b", NULL, 1), &b);
	enc_refused(wire_enc_list_req(&b, "", NULL, 1), &b);
	enc_refused(wire_enc_list_req(&b, NULL, "a b", 1), &b);
}

/* --- WIRE_REQ_RECORD --- */

static void record_roundtrip(void **state)
{
	struct refusal e = {0};
	struct wire_record w;
	struct wire_buf b;
	char why[160];

	/* Allowed: info only. */
	wire_buf_init(&b, WIRE_MAX_REQ);
	assert_int_equal(wire_enc_record(&b, WM_INFO, NULL), 0);
	assert_int_equal(wire_dec_record(b.p, b.len, &w, why, sizeof(why)), 0);
	assert_int_equal(w.method, WM_INFO);
	assert_int_equal(w.refusal.reason, R_NONE);
	assert_string_equal(w.refusal.desc, "");
	check_strict(d_record, b.p, b.len);
	wire_buf_free(&b);
	for (int m = WM_LIST; m <= WM_UNKNOWN; m++) {
		wire_buf_init(&b, WIRE_MAX_REQ);
		enc_refused(wire_enc_record(&b, (enum wire_method)m, NULL), &b);
	}

	/* Refused, for every method and every reason. */
	for (int m = WM_INFO; m <= WM_UNKNOWN; m++) {
		for (int r = R_NONE + 1; r < R_COUNT; r++) {
			refuse(&e, (enum reason)r, "Invalid parameter credentialID (%d)", m);
			wire_buf_init(&b, WIRE_MAX_REQ);
			assert_int_equal(wire_enc_record(&b, (enum wire_method)m, &e), 0);
			assert_int_equal(wire_dec_record(b.p, b.len, &w, why, sizeof(why)), 0);
			assert_int_equal(w.method, m);
			assert_int_equal(w.refusal.reason, r);
			assert_string_equal(w.refusal.desc, e.desc);
			check_strict(d_record, b.p, b.len);
			wire_buf_free(&b);
		}
	}
	/* The longest description, and an empty one. */
	refuse(&e, R_INTERNAL_ERROR, "%s", rep('d', 199));
	wire_buf_init(&b, WIRE_MAX_REQ);
	assert_int_equal(wire_enc_record(&b, WM_UNKNOWN, &e), 0);
	assert_int_equal(wire_dec_record(b.p, b.len, &w, why, sizeof(why)), 0);
	assert_string_equal(w.refusal.desc, rep('d', 199));
	wire_buf_free(&b);
	refuse(&e, R_UNKNOWN_METHOD, "%s", "");
	wire_buf_init(&b, WIRE_MAX_REQ);
	assert_int_equal(wire_enc_record(&b, WM_UNKNOWN, &e), 0);
	assert_int_equal(wire_dec_record(b.p, b.len, &w, why, sizeof(why)), 0);
	assert_string_equal(w.refusal.desc, "");
	check_strict(d_record, b.p, b.len);
	wire_buf_free(&b);
	/* A description quoting the caller's bytes is sent with '?' for what is not printable. */
	refuse(&e, R_INVALID_REQUEST, "Unknown parameter a\nb\x80\x01z");
	wire_buf_init(&b, WIRE_MAX_REQ);
	assert_int_equal(wire_enc_record(&b, WM_SIGN_HASH, &e), 0);
	assert_int_equal(wire_dec_record(b.p, b.len, &w, why, sizeof(why)), 0);
	assert_string_equal(w.refusal.desc, "Unknown parameter a?b??z");
	wire_buf_free(&b);
}

/* u8 method, u16 reason, then (unless reason is none) the description. */
static void rec_raw(struct raw *r, unsigned m, unsigned reason, const char *desc, size_t dlen)
{
	memset(r, 0, sizeof(*r));
	r8(r, m);
	r16(r, reason);
	if (desc != NULL)
		rstr(r, 1, desc, dlen);
}

static void rec_try(unsigned m, unsigned reason, const char *desc, size_t dlen, const char *field)
{
	struct raw r;

	rec_raw(&r, m, reason, desc, dlen);
	if (field == NULL)
		accepted(d_record, &r);
	else
		refused(d_record, &r, field);
	raw_free(&r);
}

#define S(s) s, strlen(s)

static void record_refusals(void **state)
{
	struct refusal e = {0};
	struct wire_buf b;

	/* Methods 1..6; reason none only for info, with nothing after it. */
	for (unsigned m = 0; m < 256; m++)
		rec_try(m, R_INVALID_REQUEST, S("c"),
		        m >= WM_INFO && m <= WM_UNKNOWN ? NULL : "method");
	rec_try(WM_INFO, R_NONE, NULL, 0, NULL);
	for (unsigned m = WM_LIST; m <= WM_UNKNOWN; m++)
		rec_try(m, R_NONE, NULL, 0, "reason");
	rec_try(WM_INFO, R_NONE, S("c"), "trailing");
	/* reason: a known value. */
	for (unsigned r = 1; r < R_COUNT; r++)
		rec_try(WM_LIST, r, S("c"), NULL);
	static const unsigned bad_reason[] = {R_COUNT, R_COUNT + 1, 255, 256, 65535};
	for (size_t i = 0; i < sizeof(bad_reason) / sizeof(bad_reason[0]); i++)
		rec_try(WM_LIST, bad_reason[i], S("c"), "reason");
	/* description: 0..199 printable ASCII. */
	rec_try(WM_LIST, R_INVALID_REQUEST, rep('d', 199), 199, NULL);
	rec_try(WM_LIST, R_INVALID_REQUEST, rep('d', 200), 200, "description");
	rec_try(WM_LIST, R_INVALID_REQUEST, S("line\nbreak"), "description");
	rec_try(WM_LIST, R_INVALID_REQUEST, S("tab\there"), "description");
	rec_try(WM_LIST, R_INVALID_REQUEST, S("del\x7f"), "description");
	rec_try(WM_LIST, R_INVALID_REQUEST, S("caf\xc3\xa9"), "description");
	rec_try(WM_LIST, R_INVALID_REQUEST, "nul\0inside", 10, "description");
	rec_try(WM_LIST, R_INVALID_REQUEST, S(" ~"), NULL);
	rec_try(WM_LIST, R_INVALID_REQUEST, NULL, 0, "description");

	wire_buf_init(&b, WIRE_MAX_REQ);
	e.reason = R_NONE;
	enc_refused(wire_enc_record(&b, WM_LIST, &e), &b);
	e.reason = R_COUNT;
	enc_refused(wire_enc_record(&b, WM_LIST, &e), &b);
	e.reason = (enum reason) - 1;
	enc_refused(wire_enc_record(&b, WM_LIST, &e), &b);
	refuse(&e, R_INVALID_REQUEST, "c");
	enc_refused(wire_enc_record(&b, (enum wire_method)0, &e), &b);
	enc_refused(wire_enc_record(&b, (enum wire_method)7, &e), &b);
}

/* --- WIRE_RESP_ERROR --- */

static void error_answer(void **state)
{
	struct refusal e = {0}, d;
	struct wire_buf b;
	struct raw r;
	char why[160];

	refuse(&e, R_TOKEN_UNAVAILABLE, "the token is %s", "away");
	wire_buf_init(&b, WIRE_MAX_RESP);
	assert_int_equal(wire_enc_error(&b, &e), 0);
	assert_int_equal(wire_dec_error(b.p, b.len, &d, why, sizeof(why)), 0);
	assert_int_equal(d.reason, R_TOKEN_UNAVAILABLE);
	assert_string_equal(d.desc, "the token is away");
	check_strict(d_error, b.p, b.len);
	wire_buf_free(&b);

	/* u16 reason, description. */
	memset(&r, 0, sizeof(r));
	r16(&r, R_INVALID_REQUEST);
	rs8(&r, "x");
	accepted(d_error, &r);
	raw_free(&r);
	static const unsigned bad_reason[] = {R_NONE, R_COUNT, 600, 65535};
	for (size_t i = 0; i < sizeof(bad_reason) / sizeof(bad_reason[0]); i++) {
		memset(&r, 0, sizeof(r));
		r16(&r, bad_reason[i]);
		rs8(&r, "c");
		refused(d_error, &r, "reason");
		raw_free(&r);
	}
	memset(&r, 0, sizeof(r));
	r16(&r, R_INVALID_REQUEST);
	rstr(&r, 1, rep('d', 200), 200);
	refused(d_error, &r, "description");
	raw_free(&r);
	memset(&r, 0, sizeof(r));
	r16(&r, R_INVALID_REQUEST);
	rstr(&r, 1, "d\0", 2);
	refused(d_error, &r, "description");
	raw_free(&r);

	wire_buf_init(&b, WIRE_MAX_RESP);
	e.reason = R_NONE;
	enc_refused(wire_enc_error(&b, &e), &b);
	e.reason = R_COUNT;
	enc_refused(wire_enc_error(&b, &e), &b);
	enc_refused(wire_enc_error(&b, NULL), &b);
}

/* --- WIRE_RESP_SIGN --- */

static void sign_result_one(size_t n, size_t len, int strict)
{
	struct sign_result in = {0}, out;
	struct wire_buf b;
	char why[160];

	in.n = n;
	for (size_t i = 0; i < n; i++) {
		in.len[i] = len + i;
		in.sig[i] = malloc(in.len[i]);
		assert_non_null(in.sig[i]);
		for (size_t j = 0; j < in.len[i]; j++)
			in.sig[i][j] = (uint8_t)(i + j);
	}
	wire_buf_init(&b, WIRE_MAX_RESP);
	assert_int_equal(wire_enc_sign_result(&b, &in), 0);
	assert_int_equal(wire_dec_sign_result(b.p, b.len, &out, why, sizeof(why)), 0);
	assert_int_equal(out.n, n);
	for (size_t i = 0; i < n; i++) {
		assert_int_equal(out.len[i], in.len[i]);
		assert_memory_equal(out.sig[i], in.sig[i], in.len[i]);
	}
	sign_result_clear(&out);
	if (strict)
		check_strict(d_sign_result, b.p, b.len);
	wire_buf_free(&b);
	for (size_t i = 0; i < n; i++)
		free(in.sig[i]);
}

static void sign_result(void **state)
{
	struct sign_result in = {0};
	uint8_t one = 1;
	struct wire_buf b;
	struct raw r;

	sign_result_one(1, 72, 1);
	sign_result_one(WIRE_MAX_HASHES, 70, 1);
	sign_result_one(1, WIRE_MAX_SIG, 0);
	sign_result_one(WIRE_MAX_HASHES, 1, 1);

	/* n 1..64, each length 1..WIRE_MAX_SIG. */
	memset(&r, 0, sizeof(r));
	r8(&r, 0);
	refused(d_sign_result, &r, "n");
	raw_free(&r);
	memset(&r, 0, sizeof(r));
	r8(&r, WIRE_MAX_HASHES + 1);
	for (int i = 0; i < WIRE_MAX_HASHES + 1; i++)
		rstr(&r, 4, "s", 1);
	refused(d_sign_result, &r, "n");
	raw_free(&r);
	memset(&r, 0, sizeof(r));
	r8(&r, 2);
	rstr(&r, 4, "s", 1);
	r32(&r, 0);
	refused(d_sign_result, &r, "signature");
	raw_free(&r);
	memset(&r, 0, sizeof(r));
	r8(&r, 1);
	rstr(&r, 4, rep('s', WIRE_MAX_SIG), WIRE_MAX_SIG);
	accepted(d_sign_result, &r);
	raw_free(&r);
	memset(&r, 0, sizeof(r));
	r8(&r, 1);
	rstr(&r, 4, rep('s', WIRE_MAX_SIG + 1), WIRE_MAX_SIG + 1);
	refused(d_sign_result, &r, "signature");
	raw_free(&r);
	/* A huge length with nothing behind it: refused before any allocation. */
	memset(&r, 0, sizeof(r));
	r8(&r, 1);
	r32(&r, 0xffffffffu);
	refused(d_sign_result, &r, "signature");
	raw_free(&r);
	memset(&r, 0, sizeof(r));
	r8(&r, 1);
	r32(&r, 1000);
	rstr(&r, 0, "abc", 3); /* width 0: a u32 length, then 3 bytes: the first is cut */
	refused(d_sign_result, &r, "signature");
	raw_free(&r);

	wire_buf_init(&b, WIRE_MAX_RESP);
	enc_refused(wire_enc_sign_result(&b, &in), &b); /* n 0 */
	in.n = 1;
	in.sig[0] = &one;
	in.len[0] = 0;
	enc_refused(wire_enc_sign_result(&b, &in), &b);
	in.len[0] = WIRE_MAX_SIG + 1;
	enc_refused(wire_enc_sign_result(&b, &in), &b);
	in.len[0] = 1;
	in.sig[0] = NULL;
	enc_refused(wire_enc_sign_result(&b, &in), &b);
	in.n = WIRE_MAX_HASHES + 1;
	enc_refused(wire_enc_sign_result(&b, &in), &b);
}

/* --- WIRE_RESP_CRED_INFO --- */

static const char chain[] = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

static void cred_info_one(const struct wire_cred_info *ci, int strict)
{
	struct wire_cred_info out;
	struct wire_buf b;
	char why[160];

	wire_buf_init(&b, WIRE_MAX_RESP);
	assert_int_equal(wire_enc_cred_info(&b, ci), 0);
	assert_int_equal(wire_dec_cred_info(b.p, b.len, &out, why, sizeof(why)), 0);
	assert_int_equal(out.status, ci->status);
	assert_string_equal(out.owner, ci->owner);
	assert_int_equal(out.key_type, ci->key_type);
	assert_int_equal(out.bits, ci->bits);
	assert_int_equal(out.curve_nid, ci->curve_nid);
	assert_int_equal(out.cert_len, ci->cert_len);
	if (ci->cert_len == 0)
		assert_null(out.cert_der);
	else
		assert_memory_equal(out.cert_der, ci->cert_der, ci->cert_len);
	if (ci->chain_pem == NULL || ci->chain_pem[0] == '\0')
		assert_null(out.chain_pem);
	else
		assert_string_equal(out.chain_pem, ci->chain_pem);
	wire_cred_info_clear(&out);
	assert_null(out.cert_der);
	assert_null(out.chain_pem);
	if (strict)
		check_strict(d_cred_info, b.p, b.len);
	wire_buf_free(&b);
}

static struct wire_cred_info ci_default(void)
{
	static uint8_t der[300];
	struct wire_cred_info ci = {
	    .status = WIRE_CRED_ACTIVE,
	    .key_type = WIRE_KEY_EC,
	    .bits = 256,
	    .curve_nid = NID_X9_62_prime256v1,
	};

	for (size_t i = 0; i < sizeof(der); i++)
		der[i] = (uint8_t)i;
	snprintf(ci.owner, sizeof(ci.owner), "alice@example");
	ci.cert_der = der;
	ci.cert_len = sizeof(der);
	ci.chain_pem = (char *)chain;
	return ci;
}

/* u8 status, owner, u8 key type, u16 bits, i32 curve, u32 cert, u32 chain. */
static void ci_raw(struct raw *r, unsigned st, const char *owner, size_t olen, unsigned type,
                   int32_t curve, const char *cert, size_t clen, const char *pem, size_t plen)
{
	uint32_t c;

	memcpy(&c, &curve, sizeof(c));
	memset(r, 0, sizeof(*r));
	r8(r, st);
	rstr(r, 1, owner, olen);
	r8(r, type);
	r16(r, 256);
	r32(r, c);
	rstr(r, 4, cert, clen);
	rstr(r, 4, pem, plen);
}

static void ci_try(unsigned st, const char *owner, size_t olen, unsigned type, int32_t curve,
                   const char *cert, size_t clen, const char *pem, size_t plen, const char *field)
{
	struct raw r;

	ci_raw(&r, st, owner, olen, type, curve, cert, clen, pem, plen);
	if (field == NULL)
		accepted(d_cred_info, &r);
	else
		refused(d_cred_info, &r, field);
	raw_free(&r);
}

static void cred_info(void **state)
{
	struct wire_cred_info ci = ci_default();
	struct wire_buf b;
	const int P256 = NID_X9_62_prime256v1;

	cred_info_one(&ci, 1);
	ci.chain_pem = NULL;
	cred_info_one(&ci, 1);
	ci.cert_der = NULL;
	ci.cert_len = 0;
	cred_info_one(&ci, 1);
	ci.chain_pem = (char *)chain;
	cred_info_one(&ci, 1);
	ci.chain_pem = "";
	cred_info_one(&ci, 0);
	ci = ci_default();
	ci.status = WIRE_CRED_REVOKED;
	ci.key_type = WIRE_KEY_RSA;
	ci.bits = 4096;
	ci.curve_nid = 0;
	snprintf(ci.owner, sizeof(ci.owner), "%s", rep('o', CRED_MAX_USER));
	cred_info_one(&ci, 1);
	/* Certificate and chain at their caps. */
	ci.cert_der = (uint8_t *)rep('c', WIRE_MAX_CERT);
	ci.cert_len = WIRE_MAX_CERT;
	ci.chain_pem = (char *)rep('p', WIRE_MAX_CHAIN);
	cred_info_one(&ci, 0);

	ci_try(WIRE_CRED_ACTIVE, S("bob"), WIRE_KEY_EC, P256, NULL, 0, NULL, 0, NULL);
	for (unsigned v = 0; v < 256; v++)
		ci_try(v, S("bob"), WIRE_KEY_EC, P256, NULL, 0, NULL, 0,
		       v >= WIRE_CRED_ACTIVE && v <= WIRE_CRED_REVOKED ? NULL : "status");
	for (unsigned v = 0; v < 256; v++)
		ci_try(WIRE_CRED_ACTIVE, S("bob"), v, v == WIRE_KEY_RSA ? 0 : P256, NULL, 0, NULL,
		       0, v == WIRE_KEY_EC || v == WIRE_KEY_RSA ? NULL : "key type");
	ci_try(WIRE_CRED_ACTIVE, S("bob"), WIRE_KEY_RSA, P256, NULL, 0, NULL, 0, "curve");
	ci_try(WIRE_CRED_ACTIVE, S("bob"), WIRE_KEY_EC, 0, NULL, 0, NULL, 0, "curve");
	ci_try(WIRE_CRED_ACTIVE, S("bob"), WIRE_KEY_EC, -1, NULL, 0, NULL, 0, "curve");
	ci_try(WIRE_CRED_ACTIVE, "", 0, WIRE_KEY_EC, P256, NULL, 0, NULL, 0, "owner");
	ci_try(WIRE_CRED_ACTIVE, rep('o', CRED_MAX_USER + 1), CRED_MAX_USER + 1, WIRE_KEY_EC, P256,
	       NULL, 0, NULL, 0, "owner");
	ci_try(WIRE_CRED_ACTIVE, S("b ob"), WIRE_KEY_EC, P256, NULL, 0, NULL, 0, "owner");
	ci_try(WIRE_CRED_ACTIVE, "b\0b", 3, WIRE_KEY_EC, P256, NULL, 0, NULL, 0, "owner");
	ci_try(WIRE_CRED_ACTIVE, S("bob"), WIRE_KEY_EC, P256, rep('c', WIRE_MAX_CERT),
	       WIRE_MAX_CERT, NULL, 0, NULL);
	ci_try(WIRE_CRED_ACTIVE, S("bob"), WIRE_KEY_EC, P256, rep('c', WIRE_MAX_CERT + 1),
	       WIRE_MAX_CERT + 1, NULL, 0, "certificate");
	ci_try(WIRE_CRED_ACTIVE, S("bob"), WIRE_KEY_EC, P256, NULL, 0, rep('p', WIRE_MAX_CHAIN),
	       WIRE_MAX_CHAIN, NULL);
	ci_try(WIRE_CRED_ACTIVE, S("bob"), WIRE_KEY_EC, P256, NULL, 0, rep('p', WIRE_MAX_CHAIN + 1),
	       WIRE_MAX_CHAIN + 1, "chain");
	ci_try(WIRE_CRED_ACTIVE, S("bob"), WIRE_KEY_EC, P256, NULL, 0, "pem\0pem", 7, "chain");

	wire_buf_init(&b, WIRE_MAX_RESP);
	ci = ci_default();
	ci.status = 4;
	enc_refused(wire_enc_cred_info(&b, &ci), &b);
	ci = ci_default();
	ci.owner[0] = '\0';
	enc_refused(wire_enc_cred_info(&b, &ci), &b);
	ci = ci_default();
	ci.key_type = WIRE_KEY_RSA;
	enc_refused(wire_enc_cred_info(&b, &ci), &b);
	ci = ci_default();
	ci.bits = 65536;
	enc_refused(wire_enc_cred_info(&b, &ci), &b);
	ci = ci_default();
	ci.cert_len = WIRE_MAX_CERT + 1;
	enc_refused(wire_enc_cred_info(&b, &ci), &b);
	ci = ci_default();
	ci.cert_der = NULL;
	enc_refused(wire_enc_cred_info(&b, &ci), &b);
	ci = ci_default();
	ci.chain_pem = (char *)rep('p', WIRE_MAX_CHAIN + 1);
	enc_refused(wire_enc_cred_info(&b, &ci), &b);
	enc_refused(wire_enc_cred_info(&b, NULL), &b);
}

/* --- WIRE_RESP_LIST --- */

static void list_one(int more, size_t n, int strict)
{
	char **ids = calloc(n + 1, sizeof(*ids));
	struct wire_list l;
	struct wire_buf b;
	char why[160];

	assert_non_null(ids);
	for (size_t i = 0; i < n; i++) {
		ids[i] = malloc(CRED_MAX_ID + 1);
		assert_non_null(ids[i]);
		if (i == n - 1)
			snprintf(ids[i], CRED_MAX_ID + 1, "%s", rep('z', CRED_MAX_ID));
		else
			snprintf(ids[i], CRED_MAX_ID + 1, "cred-%04zu", i);
	}
	wire_buf_init(&b, WIRE_MAX_RESP);
	assert_int_equal(wire_enc_list(&b, more, ids, n), 0);
	assert_int_equal(wire_dec_list(b.p, b.len, &l, why, sizeof(why)), 0);
	assert_int_equal(l.more, more);
	assert_int_equal(l.n, n);
	if (n == 0)
		assert_null(l.ids);
	for (size_t i = 0; i < n; i++)
		assert_string_equal(l.ids[i], ids[i]);
	wire_list_clear(&l);
	if (strict)
		check_strict(d_list, b.p, b.len);
	wire_buf_free(&b);
	for (size_t i = 0; i < n; i++)
		free(ids[i]);
	free(ids);
}

static void list(void **state)
{
	char *bad[] = {"ok", "not ok"};
	struct wire_buf b;
	struct raw r;

	list_one(0, 0, 1);
	list_one(0, 1, 1);
	list_one(1, 1, 1);
	list_one(1, WIRE_MAX_IDS, 1);

	/* more 0 or 1; n 0..1000; each ID 1..64 valid. */
	memset(&r, 0, sizeof(r));
	r8(&r, 2);
	r16(&r, 0);
	refused(d_list, &r, "more");
	raw_free(&r);
	memset(&r, 0, sizeof(r));
	r8(&r, 0);
	r16(&r, WIRE_MAX_IDS + 1);
	for (int i = 0; i < WIRE_MAX_IDS + 1; i++)
		rs8(&r, "a");
	refused(d_list, &r, "n");
	raw_free(&r);
	memset(&r, 0, sizeof(r));
	r8(&r, 0);
	r16(&r, 2);
	rs8(&r, "a");
	rs8(&r, "");
	refused(d_list, &r, "id");
	raw_free(&r);
	memset(&r, 0, sizeof(r));
	r8(&r, 0);
	r16(&r, 1);
	rs8(&r, rep('i', CRED_MAX_ID + 1));
	refused(d_list, &r, "id");
	raw_free(&r);
	memset(&r, 0, sizeof(r));
	r8(&r, 0);
	r16(&r, 1);
	rs8(&r, "a+b");
	refused(d_list, &r, "id");
	raw_free(&r);
	memset(&r, 0, sizeof(r));
	r8(&r, 0);
	r16(&r, 1);
	rstr(&r, 1, "a\0", 2);
	refused(d_list, &r, "id");
	raw_free(&r);
	/* A count the payload cannot hold: refused before the array is allocated. */
	memset(&r, 0, sizeof(r));
	r8(&r, 0);
	r16(&r, WIRE_MAX_IDS);
	refused(d_list, &r, "ids");
	raw_free(&r);

	wire_buf_init(&b, WIRE_MAX_RESP);
	enc_refused(wire_enc_list(&b, 0, bad, 2), &b);
	enc_refused(wire_enc_list(&b, 0, NULL, 1), &b);
	enc_refused(wire_enc_list(&b, 0, bad, WIRE_MAX_IDS + 1), &b);
}

/* --- WIRE_RESP_STATUS --- */

/* A status's token fields (state, pcsc, downs 1, recoveries 2, fast_failures 3, last outage
 * last), from a fresh r. */
static void r_token(struct raw *r, unsigned state, unsigned pcsc, uint64_t last)
{
	memset(r, 0, sizeof(*r));
	r8(r, state);
	r8(r, pcsc);
	r64(r, 1);
	r64(r, 2);
	r64(r, 3);
	r64(r, last);
}

/* The caches' figures: 10 hits ... with held of capacity. */
static void r_caches(struct raw *r, uint64_t held, uint64_t capacity)
{
	r64(r, 10);
	r64(r, 11);
	r64(r, 12);
	r64(r, 13);
	r64(r, 14);
	r64(r, held);
	r64(r, capacity);
	r64(r, 15);
	r64(r, 16);
	r64(r, 17);
}

/* The ledger's figures after a status's token fields, then the caches'. */
static void r_ledger(struct raw *r, uint64_t commits, uint64_t records)
{
	r64(r, commits);
	r64(r, records);
	r64(r, 5);
	r64(r, 6);
	r64(r, 7);
	r64(r, 8);
	r8(r, 0);
	r_caches(r, 1, 2);
}

static void status(void **state)
{
	struct wire_status in = {.tok = {.state = WIRE_TOKEN_DOWN,
	                                 .downs = 3,
	                                 .recoveries = 2,
	                                 .fast_failures = UINT64_MAX,
	                                 .last_outage_ms = INT64_MAX,
	                                 .pcsc = 1},
	                         .ledger = {.commits = 7,
	                                    .records = UINT64_MAX,
	                                    .failed = 11,
	                                    .commit_ns = 13,
	                                    .busy_ms = 17,
	                                    .unrecorded = 19,
	                                    .stalled = 1},
	                         .cache = {.key_hits = UINT64_MAX,
	                                   .key_misses = 23,
	                                   .key_evictions = 29,
	                                   .key_refused = 31,
	                                   .key_proven_again = 37,
	                                   .key_held = 41,
	                                   .key_capacity = 43,
	                                   .cert_hits = 47,
	                                   .cert_misses = 53,
	                                   .cert_slots = 1024}},
	                   out;
	struct wire_buf b;
	struct raw r;
	char why[160];

	wire_buf_init(&b, WIRE_MAX_RESP);
	assert_int_equal(wire_enc_status(&b, &in), 0);
	assert_int_equal(wire_dec_status(b.p, b.len, &out, why, sizeof(why)), 0);
	assert_int_equal(out.tok.state, in.tok.state);
	assert_int_equal(out.tok.pcsc, in.tok.pcsc);
	assert_int_equal(out.tok.downs, in.tok.downs);
	assert_int_equal(out.tok.recoveries, in.tok.recoveries);
	assert_true(out.tok.fast_failures == UINT64_MAX);
	assert_true(out.tok.last_outage_ms == INT64_MAX);
	assert_true(out.ledger.commits == 7 && out.ledger.records == UINT64_MAX);
	assert_true(out.ledger.failed == 11 && out.ledger.commit_ns == 13);
	assert_true(out.ledger.busy_ms == 17 && out.ledger.unrecorded == 19);
	assert_int_equal(out.ledger.stalled, 1);
	assert_true(out.cache.key_hits == UINT64_MAX && out.cache.key_misses == 23);
	assert_true(out.cache.key_evictions == 29 && out.cache.key_refused == 31);
	assert_true(out.cache.key_proven_again == 37 && out.cache.key_held == 41);
	assert_true(out.cache.key_capacity == 43 && out.cache.cert_hits == 47);
	assert_true(out.cache.cert_misses == 53 && out.cache.cert_slots == 1024);
	check_strict(d_status, b.p, b.len);
	wire_buf_free(&b);

	for (unsigned st = 0; st < 256; st++)
		for (unsigned pcsc = 0; pcsc < 3; pcsc++) {
			r_token(&r, st, pcsc, 4);
			r_ledger(&r, 1, 1);
			if (st > WIRE_TOKEN_PIN_FAILED)
				refused(d_status, &r, "state");
			else if (pcsc > 1)
				refused(d_status, &r, "pcsc");
			else
				accepted(d_status, &r);
			raw_free(&r);
		}
	r_token(&r, 0, 0, (uint64_t)-1);
	r_ledger(&r, 0, 0);
	refused(d_status, &r, "last_outage_ms");
	raw_free(&r);
	/* A status from before the ledger's figures, before busy_ms, unrecorded or stalled: too
	 * short. */
	r_token(&r, 0, 0, 4);
	refused(d_status, &r, "commits");
	r64(&r, 1);
	r64(&r, 1);
	r64(&r, 0);
	r64(&r, 0);
	refused(d_status, &r, "busy_ms");
	r64(&r, 0);
	refused(d_status, &r, "unrecorded");
	r64(&r, 0);
	refused(d_status, &r, "stalled");
	raw_free(&r);
	/* stalled is a flag. */
	for (unsigned v = 0; v < 256; v++) {
		r_token(&r, 0, 0, 4);
		r64(&r, 1);
		r64(&r, 1);
		for (int i = 0; i < 4; i++)
			r64(&r, 0);
		r8(&r, v);
		r_caches(&r, 0, 0);
		if (v > 1)
			refused(d_status, &r, "stalled");
		else
			accepted(d_status, &r);
		raw_free(&r);
	}
	/* Every commit carries at least one record. */
	for (uint64_t c = 0; c < 3; c++)
		for (uint64_t n = 0; n < 3; n++) {
			r_token(&r, 0, 0, 4);
			r_ledger(&r, c, n);
			if (n < c)
				refused(d_status, &r, "records");
			else
				accepted(d_status, &r);
			raw_free(&r);
		}

	wire_buf_init(&b, WIRE_MAX_RESP);
	in.tok.state = 3;
	enc_refused(wire_enc_status(&b, &in), &b);
	in.tok.state = 0;
	in.tok.pcsc = 2;
	enc_refused(wire_enc_status(&b, &in), &b);
	in.tok.pcsc = 0;
	in.tok.last_outage_ms = -1;
	enc_refused(wire_enc_status(&b, &in), &b);
	in.tok.last_outage_ms = 0;
	in.ledger.commits = 2;
	in.ledger.records = 1;
	enc_refused(wire_enc_status(&b, &in), &b);
	in.ledger.commits = 1;
	in.cache.key_held = in.cache.key_capacity + 1;
	enc_refused(wire_enc_status(&b, &in), &b);

	/* A status from before the caches' figures: too short; more held than capacity. */
	r_token(&r, 0, 0, 4);
	r64(&r, 1);
	r64(&r, 1);
	for (int i = 0; i < 4; i++)
		r64(&r, 0);
	r8(&r, 0);
	refused(d_status, &r, "key_hits");
	raw_free(&r);
	r_token(&r, 0, 0, 4);
	r64(&r, 1);
	r64(&r, 1);
	for (int i = 0; i < 4; i++)
		r64(&r, 0);
	r8(&r, 0);
	r_caches(&r, 3, 2);
	refused(d_status, &r, "key_held");
	raw_free(&r);
}

/* --- Framing --- */

static int nfds_open(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *de;
	int n = 0;

	assert_non_null(d);
	while ((de = readdir(d)) != NULL)
		if (de->d_name[0] != '.')
			n++;
	closedir(d);
	return n - 1; /* the directory's own descriptor */
}

static void hdr(uint8_t h[WIRE_HDR_LEN], uint32_t magic, uint32_t type, uint32_t len)
{
	memcpy(h, &magic, 4);
	memcpy(h + 4, &type, 4);
	memcpy(h + 8, &len, 4);
}

static void write_all(int fd, const void *p, size_t n)
{
	assert_int_equal(write(fd, p, n), (ssize_t)n);
}

/* Send p with fds attached (raw sendmsg). */
static void send_fds(int sock, const void *p, size_t n, const int *fds, size_t nfds)
{
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(sizeof(int) * 16)];
	} ctl;
	struct msghdr msg = {0};
	struct iovec iov = {.iov_base = (void *)p, .iov_len = n};
	struct cmsghdr *cm;

	assert_true(nfds <= 16);
	memset(&ctl, 0, sizeof(ctl));
	msg.msg_iov = &iov;
	msg.msg_iovlen = 1;
	msg.msg_control = ctl.buf;
	msg.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
	cm = CMSG_FIRSTHDR(&msg);
	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
	memcpy(CMSG_DATA(cm), fds, sizeof(int) * nfds);
	assert_int_equal(sendmsg(sock, &msg, 0), (ssize_t)n);
}

static void pair(int sv[2])
{
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
}

static void framing_plain(void **state)
{
	struct wire_buf b;
	uint8_t *p;
	size_t len;
	uint32_t type;
	int sv[2], fd;
	char why[160];

	pair(sv);
	wire_buf_init(&b, WIRE_MAX_REQ);
	assert_int_equal(wire_enc_cred_info_req(&b, "cred-1"), 0);
	assert_int_equal(wire_send(sv[0], WIRE_REQ_CRED_INFO, &b, -1), 0);
	/* Empty payloads: a NULL buffer, and an empty one. */
	assert_int_equal(wire_send(sv[0], WIRE_REQ_STATUS, NULL, -1), 0);
	wire_buf_free(&b);
	wire_buf_init(&b, WIRE_MAX_RESP);
	assert_int_equal(wire_send(sv[0], WIRE_RESP_RECORD, &b, -1), 0);

	assert_int_equal(wire_recv(sv[1], WIRE_MAX_REQ, &type, &p, &len, &fd, why, sizeof(why)), 0);
	assert_int_equal(type, WIRE_REQ_CRED_INFO);
	assert_int_equal(len, 7);
	assert_int_equal(p[0], 6);
	assert_memory_equal(p + 1, "cred-1", 6);
	assert_int_equal(fd, -1);
	free(p);
	assert_int_equal(wire_recv(sv[1], WIRE_MAX_REQ, &type, &p, &len, &fd, why, sizeof(why)), 0);
	assert_int_equal(type, WIRE_REQ_STATUS);
	assert_null(p);
	assert_int_equal(len, 0);
	assert_int_equal(wire_recv(sv[1], WIRE_MAX_REQ, &type, &p, &len, &fd, why, sizeof(why)), 0);
	assert_int_equal(type, WIRE_RESP_RECORD);
	assert_null(p);
	/* Clean end of stream before a header. */
	close(sv[0]);
	assert_int_equal(wire_recv(sv[1], WIRE_MAX_REQ, &type, &p, &len, &fd, why, sizeof(why)), 1);
	close(sv[1]);

	/* The peer gone: an error, not SIGPIPE. */
	pair(sv);
	close(sv[1]);
	errno = 0;
	assert_int_equal(wire_send(sv[0], WIRE_REQ_STATUS, NULL, -1), -1);
	assert_int_equal(errno, EPIPE);
	close(sv[0]);
	/* A poisoned buffer is never sent. */
	pair(sv);
	b.oom = 1;
	assert_int_equal(wire_send(sv[0], WIRE_RESP_RECORD, &b, -1), -1);
	wire_buf_free(&b);
	close(sv[0]);
	assert_int_equal(wire_recv(sv[1], WIRE_MAX_REQ, &type, &p, &len, &fd, why, sizeof(why)), 1);
	close(sv[1]);
}

static void framing_fd(void **state)
{
	struct wire_buf b;
	uint8_t *p;
	size_t len;
	uint32_t type;
	int sv[2], pp[2], fd, before;
	char why[160], got[4];

	pair(sv);
	assert_int_equal(pipe(pp), 0);
	before = nfds_open();
	wire_buf_init(&b, WIRE_MAX_REQ);
	assert_int_equal(wire_enc_list_req(&b, NULL, NULL, 10), 0);
	assert_int_equal(wire_send(sv[0], WIRE_REQ_LIST, &b, pp[1]), 0);
	wire_buf_free(&b);
	assert_int_equal(wire_recv(sv[1], WIRE_MAX_REQ, &type, &p, &len, &fd, why, sizeof(why)), 0);
	assert_int_equal(type, WIRE_REQ_LIST);
	assert_int_equal(len, 4);
	assert_true(fd >= 0);
	assert_true(fd != pp[1]);
	assert_int_equal(nfds_open(), before + 1);
	assert_true(fcntl(fd, F_GETFD) & FD_CLOEXEC);
	/* The same pipe. */
	write_all(fd, "ping", 4);
	assert_int_equal(read(pp[0], got, 4), 4);
	assert_memory_equal(got, "ping", 4);
	close(fd);
	free(p);
	/* An empty payload with a descriptor. */
	assert_int_equal(wire_send(sv[0], WIRE_REQ_RECORD, NULL, pp[1]), 0);
	assert_int_equal(wire_recv(sv[1], WIRE_MAX_REQ, &type, &p, &len, &fd, why, sizeof(why)), 0);
	assert_null(p);
	assert_true(fd >= 0);
	close(fd);
	assert_int_equal(nfds_open(), before);
	close(pp[0]);
	close(pp[1]);
	close(sv[0]);
	close(sv[1]);
}

/* wire_recv refuses, naming what, with every descriptor it received closed. */
static void recv_refused(int sock, size_t cap, const char *what, int before)
{
	uint8_t *p = (uint8_t *)1;
	size_t len = 1;
	uint32_t type = 1;
	int fd = 0;
	char why[160];

	assert_int_equal(wire_recv(sock, cap, &type, &p, &len, &fd, why, sizeof(why)), -1);
	if (strstr(why, what) == NULL)
		fail_msg("\"%s\" does not say %s", why, what);
	assert_null(p);
	assert_int_equal(len, 0);
	assert_int_equal(fd, -1);
	assert_int_equal(type, 0);
	assert_int_equal(nfds_open(), before);
}

static void framing_refusals(void **state)
{
	uint8_t h[WIRE_HDR_LEN];
	int sv[2], pp[2], many[10], before, on = 1;

	assert_int_equal(pipe(pp), 0);
	before = nfds_open() + 2; /* with the socketpair each case makes */

	/* Bad magic. */
	pair(sv);
	hdr(h, WIRE_MAGIC ^ 1, WIRE_REQ_STATUS, 0);
	write_all(sv[0], h, sizeof(h));
	recv_refused(sv[1], WIRE_MAX_REQ, "magic", before);
	close(sv[0]);
	close(sv[1]);
	/* A length over the cap, and at the cap. */
	pair(sv);
	hdr(h, WIRE_MAGIC, WIRE_REQ_SIGN, WIRE_MAX_REQ + 1);
	write_all(sv[0], h, sizeof(h));
	recv_refused(sv[1], WIRE_MAX_REQ, "cap", before);
	close(sv[0]);
	close(sv[1]);
	pair(sv);
	hdr(h, WIRE_MAGIC, WIRE_REQ_SIGN, 0xffffffffu);
	write_all(sv[0], h, sizeof(h));
	recv_refused(sv[1], WIRE_MAX_RESP, "cap", before);
	close(sv[0]);
	close(sv[1]);
	/* Two descriptors with a header: refused, both closed. */
	pair(sv);
	hdr(h, WIRE_MAGIC, WIRE_REQ_SIGN, 0);
	send_fds(sv[0], h, sizeof(h), pp, 2);
	recv_refused(sv[1], WIRE_MAX_REQ, "descriptors", before);
	close(sv[0]);
	close(sv[1]);
	/* More than the control buffer holds: truncated, every one received closed. */
	pair(sv);
	for (int i = 0; i < 10; i++)
		many[i] = pp[i % 2];
	send_fds(sv[0], h, sizeof(h), many, 10);
	recv_refused(sv[1], WIRE_MAX_REQ, "truncated", before);
	close(sv[0]);
	close(sv[1]);
	/* A descriptor inside the payload rather than with the first byte. */
	pair(sv);
	hdr(h, WIRE_MAGIC, WIRE_REQ_SIGN, 4);
	write_all(sv[0], h, sizeof(h));
	send_fds(sv[0], "abcd", 4, pp, 1);
	recv_refused(sv[1], WIRE_MAX_REQ, "inside", before);
	close(sv[0]);
	close(sv[1]);
	/* Credentials as control data (SO_PASSCRED on the receiving end). */
	pair(sv);
	assert_int_equal(setsockopt(sv[1], SOL_SOCKET, SO_PASSCRED, &on, sizeof(on)), 0);
	hdr(h, WIRE_MAGIC, WIRE_REQ_STATUS, 0);
	send_fds(sv[0], h, sizeof(h), pp, 1);
	recv_refused(sv[1], WIRE_MAX_REQ, "control data", before);
	close(sv[0]);
	close(sv[1]);
	/* End of stream inside a header, and inside a payload (with the descriptor closed). */
	pair(sv);
	write_all(sv[0], h, 5);
	close(sv[0]);
	recv_refused(sv[1], WIRE_MAX_REQ, "header", before - 1);
	close(sv[1]);
	pair(sv);
	hdr(h, WIRE_MAGIC, WIRE_REQ_SIGN, 10);
	send_fds(sv[0], h, sizeof(h), pp, 1);
	write_all(sv[0], "abc", 3);
	close(sv[0]);
	recv_refused(sv[1], WIRE_MAX_REQ, "payload", before - 1);
	close(sv[1]);
	close(pp[0]);
	close(pp[1]);
}

/* A payload that arrives in pieces, header split too, from another process. */
static void framing_split(void **state)
{
	uint8_t h[WIRE_HDR_LEN], body[3000], *p;
	size_t len;
	uint32_t type;
	int sv[2], fd, pp[2], wst;
	char why[160];
	pid_t pid;

	for (size_t i = 0; i < sizeof(body); i++)
		body[i] = (uint8_t)(i * 13);
	assert_int_equal(pipe(pp), 0);
	pair(sv);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct timespec ts = {0, 20 * 1000 * 1000};

		close(sv[1]);
		hdr(h, WIRE_MAGIC, WIRE_RESP_SIGN, sizeof(body));
		send_fds(sv[0], h, 3, pp, 1);
		nanosleep(&ts, NULL);
		write_all(sv[0], h + 3, sizeof(h) - 3);
		nanosleep(&ts, NULL);
		write_all(sv[0], body, 1);
		nanosleep(&ts, NULL);
		write_all(sv[0], body + 1, 1000);
		nanosleep(&ts, NULL);
		write_all(sv[0], body + 1001, sizeof(body) - 1001);
		_exit(0);
	}
	close(sv[0]);
	assert_int_equal(wire_recv(sv[1], WIRE_MAX_RESP, &type, &p, &len, &fd, why, sizeof(why)),
	                 0);
	assert_int_equal(type, WIRE_RESP_SIGN);
	assert_int_equal(len, sizeof(body));
	assert_memory_equal(p, body, sizeof(body));
	assert_true(fd >= 0);
	close(fd);
	free(p);
	assert_int_equal(waitpid(pid, &wst, 0), pid);
	assert_true(WIFEXITED(wst) && WEXITSTATUS(wst) == 0);
	assert_int_equal(wire_recv(sv[1], WIRE_MAX_RESP, &type, &p, &len, &fd, why, sizeof(why)),
	                 1);
	close(sv[1]);
	close(pp[0]);
	close(pp[1]);
}

/* A payload far larger than the socket buffer (48 signatures of WIRE_MAX_SIG, 3 MiB):
 * wire_send writes it in many pieces while another process reads. */
static void framing_large(void **state)
{
	const size_t n = 48;
	struct sign_result in = {0}, out;
	struct wire_buf b;
	uint8_t *p;
	size_t len;
	uint32_t type;
	int sv[2], fd, wst;
	char why[160];
	pid_t pid;

	in.n = n;
	for (size_t i = 0; i < n; i++) {
		in.len[i] = WIRE_MAX_SIG;
		in.sig[i] = malloc(WIRE_MAX_SIG);
		assert_non_null(in.sig[i]);
		for (size_t j = 0; j < WIRE_MAX_SIG; j++)
			in.sig[i][j] = (uint8_t)((i * 31 + j) % 251);
	}
	wire_buf_init(&b, WIRE_MAX_RESP);
	assert_int_equal(wire_enc_sign_result(&b, &in), 0);
	assert_true(b.len > 3 * 1024 * 1024);
	pair(sv);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		close(sv[1]);
		_exit(wire_send(sv[0], WIRE_RESP_SIGN, &b, -1) == 0 ? 0 : 1);
	}
	close(sv[0]);
	assert_int_equal(wire_recv(sv[1], WIRE_MAX_RESP, &type, &p, &len, &fd, why, sizeof(why)),
	                 0);
	assert_int_equal(type, WIRE_RESP_SIGN);
	assert_int_equal(len, b.len);
	assert_int_equal(fd, -1);
	assert_int_equal(wire_dec_sign_result(p, len, &out, why, sizeof(why)), 0);
	assert_int_equal(out.n, n);
	for (size_t i = 0; i < n; i++)
		assert_memory_equal(out.sig[i], in.sig[i], WIRE_MAX_SIG);
	sign_result_clear(&out);
	free(p);
	assert_int_equal(waitpid(pid, &wst, 0), pid);
	assert_true(WIFEXITED(wst) && WEXITSTATUS(wst) == 0);
	close(sv[1]);
	wire_buf_free(&b);
	for (size_t i = 0; i < n; i++)
		free(in.sig[i]);
}

/* --- The caller --- */

static char peer_dir[PATH_MAX];

static int listen_on(const char *path, int type, int abstract)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	socklen_t len;
	int s = socket(AF_UNIX, type | SOCK_CLOEXEC, 0);

	assert_true(s >= 0);
	if (abstract) {
		snprintf(sa.sun_path + 1, sizeof(sa.sun_path) - 1, "%s", path);
		len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + strlen(path));
	} else {
		snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
		len = sizeof(sa);
	}
	assert_int_equal(bind(s, (struct sockaddr *)&sa, len), 0);
	assert_int_equal(listen(s, 4), 0);
	return s;
}

static int connect_to(const char *path, int type, int abstract)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	socklen_t len;
	int s = socket(AF_UNIX, type | SOCK_CLOEXEC, 0);

	assert_true(s >= 0);
	if (abstract) {
		snprintf(sa.sun_path + 1, sizeof(sa.sun_path) - 1, "%s", path);
		len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + strlen(path));
	} else {
		snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
		len = sizeof(sa);
	}
	assert_int_equal(connect(s, (struct sockaddr *)&sa, len), 0);
	return s;
}

static void peer_refused(int fd, const char *path, const char *what)
{
	struct peer p;
	char why[160];

	memset(&p, 0xa5, sizeof(p));
	assert_int_equal(wire_peer(fd, path, &p, why, sizeof(why)), -1);
	assert_true(all_zero(&p, sizeof(p)));
	if (strstr(why, what) == NULL)
		fail_msg("\"%s\" does not say %s", why, what);
}

/* --- The listener's channels (link.c) --- */

struct pool_call {
	struct core_link *link;
	int rc;
	uint32_t rtype;
};

static void *pool_call_main(void *arg)
{
	struct pool_call *c = arg;
	struct wire_buf b;
	struct refusal e;
	uint8_t *p = NULL;
	size_t len = 0;

	wire_buf_init(&b, WIRE_MAX_REQ);
	assert_int_equal(wire_enc_list_req(&b, NULL, NULL, 10), 0);
	c->rc = core_link_call(c->link, WIRE_REQ_LIST, &b, -1, &c->rtype, &p, &len, &e);
	wire_buf_free(&b);
	free(p);
	return NULL;
}

/* Answer what came on a core end (the core side of a channel) with an empty RECORD. */
static void core_answers(int fd, uint32_t want)
{
	uint8_t *p = NULL;
	size_t len = 0;
	uint32_t type;
	int cfd = -1;
	char why[160];

	assert_int_equal(wire_recv(fd, WIRE_MAX_REQ, &type, &p, &len, &cfd, why, sizeof(why)), 0);
	assert_int_equal(type, want);
	free(p);
	assert_int_equal(wire_send(fd, WIRE_RESP_RECORD, NULL, -1), 0);
}

/* A status call, answered at once by the status channel's core end (-1: it is closed). */
static int status_call(struct core_link *l, int core_end, uint32_t *rtype, struct refusal *e)
{
	uint8_t *p = NULL;
	size_t len = 0;
	int r;

	/* Answered before it is asked: the round trip finds the answer waiting. */
	if (core_end >= 0)
		assert_int_equal(wire_send(core_end, WIRE_RESP_RECORD, NULL, -1), 0);
	r = core_link_call(l, WIRE_REQ_STATUS, NULL, -1, rtype, &p, &len, e);
	free(p);
	return r;
}

/* One pool request, answered by whichever of the pool's core ends (a, b) it came on; it must
 * not come on the status channel's core end st (-1: closed). */
static void pool_once(struct core_link *l, int a, int b, int st)
{
	struct pool_call c = {.link = l, .rc = 1};
	struct pollfd pf[3] = {{a, POLLIN, 0}, {b, POLLIN, 0}, {st, POLLIN, 0}};
	pthread_t t;

	assert_int_equal(pthread_create(&t, NULL, pool_call_main, &c), 0);
	assert_true(poll(pf, 2, 10000) > 0);
	assert_int_equal(poll(pf + 2, 1, 0), 0);
	core_answers(pf[0].revents ? a : b, WIRE_REQ_LIST);
	pthread_join(t, NULL);
	assert_int_equal(c.rc, 0);
	assert_int_equal(c.rtype, WIRE_RESP_RECORD);
}

/* Status requests take the last channel, never one of the pool: they are answered while every
 * pool channel waits on the core. */
static void link_status_channel(void **state)
{
	int ch[3][2], ends[3], fd;
	struct core_link *l;
	struct pool_call c[2];
	pthread_t t[2];
	struct refusal e;
	uint32_t type;
	uint8_t *p = NULL;
	size_t len = 0;
	char why[160];

	/* A status call stuck behind the pool would hang: the alarm ends the test instead. */
	alarm(20);
	for (int i = 0; i < 3; i++) {
		pair(ch[i]);
		ends[i] = ch[i][1];
	}
	assert_int_equal(core_link_init(ends, 1, &l), -1);
	assert_int_equal(core_link_init(ends, 3, &l), 0);
	/* Both pool channels busy: their requests arrive, unanswered. */
	for (int i = 0; i < 2; i++) {
		c[i].link = l;
		c[i].rc = 1;
		assert_int_equal(pthread_create(&t[i], NULL, pool_call_main, &c[i]), 0);
	}
	for (int i = 0; i < 2; i++) {
		assert_int_equal(
		    wire_recv(ch[i][0], WIRE_MAX_REQ, &type, &p, &len, &fd, why, sizeof(why)), 0);
		assert_int_equal(type, WIRE_REQ_LIST);
		free(p);
		p = NULL;
	}
	/* The status call goes through meanwhile, on the last channel. */
	assert_int_equal(status_call(l, ch[2][0], &type, &e), 0);
	assert_int_equal(type, WIRE_RESP_RECORD);
	assert_int_equal(wire_recv(ch[2][0], WIRE_MAX_REQ, &type, &p, &len, &fd, why, sizeof(why)),
	                 0);
	assert_int_equal(type, WIRE_REQ_STATUS);
	free(p);
	p = NULL;
	/* The pool's requests complete once answered. */
	for (int i = 0; i < 2; i++)
		assert_int_equal(wire_send(ch[i][0], WIRE_RESP_RECORD, NULL, -1), 0);
	for (int i = 0; i < 2; i++) {
		pthread_join(t[i], NULL);
		assert_int_equal(c[i].rc, 0);
		assert_int_equal(c[i].rtype, WIRE_RESP_RECORD);
	}
	/* A pool request never takes the status channel, idle as it is. */
	pool_once(l, ch[0][0], ch[1][0], ch[2][0]);
	/* The status channel gone: status answers 503 core_unavailable, the pool still works. */
	close(ch[2][0]);
	assert_int_equal(status_call(l, -1, &type, &e), -1);
	assert_int_equal(e.reason, R_CORE_UNAVAILABLE);
	assert_int_equal(status_call(l, -1, &type, &e), -1);
	pool_once(l, ch[0][0], ch[1][0], -1);
	core_link_free(l);
	close(ch[0][0]);
	close(ch[1][0]);

	/* Every pool channel gone: status says the core cannot be reached, though its own
	 * channel would still answer. */
	for (int i = 0; i < 3; i++) {
		pair(ch[i]);
		ends[i] = ch[i][1];
	}
	assert_int_equal(core_link_init(ends, 3, &l), 0);
	close(ch[0][0]);
	close(ch[1][0]);
	for (int i = 0; i < 2; i++) {
		struct pool_call gone = {.link = l, .rc = 1};

		pool_call_main(&gone);
		assert_int_equal(gone.rc, -1);
	}
	assert_int_equal(status_call(l, -1, &type, &e), -1);
	assert_int_equal(e.reason, R_CORE_UNAVAILABLE);
	assert_int_equal(poll(&(struct pollfd){ch[2][0], POLLIN, 0}, 1, 0), 0);
	core_link_free(l);
	close(ch[2][0]);
	alarm(0);
}

/* Send a request on a channel's listener end and read the core's answer: its type, and for an
 * error its reason. */
static uint32_t core_ask(int fd, uint32_t type, const struct wire_buf *b, enum reason *reason)
{
	struct refusal e;
	uint8_t *p = NULL;
	size_t len = 0;
	uint32_t rtype;
	int cfd = -1;
	char why[160];

	assert_int_equal(wire_send(fd, type, b, -1), 0);
	assert_int_equal(wire_recv(fd, WIRE_MAX_RESP, &rtype, &p, &len, &cfd, why, sizeof(why)), 0);
	*reason = R_NONE;
	if (rtype == WIRE_RESP_ERROR) {
		assert_int_equal(wire_dec_error(p, len, &e, why, sizeof(why)), 0);
		*reason = e.reason;
	}
	free(p);
	return rtype;
}

/* The core's end of the channels: the last one serves status requests only, and neither
 * serves a request the listener should never send. None of these reach the service (this
 * core has none). */
static void core_refusals(void **state)
{
	struct core *c = NULL;
	struct wire_buf b;
	int pool[2], st[2], fds[2];
	enum reason reason;
	char err[160];

	/* At least one channel besides the status channel. */
	pair(pool);
	assert_int_equal(core_start(NULL, "/run/none.sock", &pool[1], 1, &c, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "status channel"));
	pair(st);
	fds[0] = pool[1];
	fds[1] = st[1];
	assert_int_equal(core_start(NULL, "/run/none.sock", fds, 2, &c, err, sizeof(err)), 0);

	/* On the status channel: a list request, a signature request, and a status request
	 * carrying a payload, each answered 400 invalid_request; the channel stays up. */
	wire_buf_init(&b, WIRE_MAX_REQ);
	assert_int_equal(wire_enc_list_req(&b, NULL, NULL, 10), 0);
	assert_int_equal(core_ask(st[0], WIRE_REQ_LIST, &b, &reason), WIRE_RESP_ERROR);
	assert_int_equal(reason, R_INVALID_REQUEST);
	assert_int_equal(core_ask(st[0], WIRE_REQ_SIGN, &b, &reason), WIRE_RESP_ERROR);
	assert_int_equal(reason, R_INVALID_REQUEST);
	assert_int_equal(core_ask(st[0], WIRE_REQ_STATUS, &b, &reason), WIRE_RESP_ERROR);
	assert_int_equal(reason, R_INVALID_REQUEST);
	/* On a pool channel: an unknown request type (400), and a list request without the
	 * caller's connection (403 unknown_caller: no caller, nothing recorded). */
	assert_int_equal(core_ask(pool[0], 99, &b, &reason), WIRE_RESP_ERROR);
	assert_int_equal(reason, R_INVALID_REQUEST);
	assert_int_equal(core_ask(pool[0], WIRE_REQ_LIST, &b, &reason), WIRE_RESP_ERROR);
	assert_int_equal(reason, R_UNKNOWN_CALLER);
	wire_buf_free(&b);

	/* The listener closes its ends: every channel thread ends, and core_join returns. */
	close(pool[0]);
	close(st[0]);
	core_join(c);
}

static void peer(void **state)
{
	char path[PATH_MAX + 16], other[PATH_MAX + 16], seq[PATH_MAX + 16], file[PATH_MAX + 16];
	struct peer p;
	char why[160];
	int ls, cs, as, sv[2], fd, abs_l, abs_c, abs_a;

	snprintf(path, sizeof(path), "%s/iamsignd.sock", peer_dir);
	snprintf(other, sizeof(other), "%s/other.sock", peer_dir);
	snprintf(seq, sizeof(seq), "%s/seq.sock", peer_dir);
	snprintf(file, sizeof(file), "%s/file", peer_dir);
	ls = listen_on(path, SOCK_STREAM, 0);
	cs = connect_to(path, SOCK_STREAM, 0);
	as = accept4(ls, NULL, NULL, SOCK_CLOEXEC);
	assert_true(as >= 0);

	/* The accepted connection: the caller is this process. */
	assert_int_equal(wire_peer(as, path, &p, why, sizeof(why)), 0);
	assert_int_equal(p.uid, getuid());
	assert_int_equal(p.gid, getgid());
	assert_int_equal(p.pid, getpid());
	/* ... but not for another path, nor one that differs only in its length. */
	peer_refused(as, other, "daemon's socket");
	path[strlen(path) - 1] = '\0';
	peer_refused(as, path, "daemon's socket");
	snprintf(path + strlen(path), sizeof(path) - strlen(path), "kx");
	peer_refused(as, path, "daemon's socket");
	path[strlen(path) - 1] = '\0';
	assert_int_equal(wire_peer(as, path, &p, why, sizeof(why)), 0);
	peer_refused(as, "", "socket path");
	peer_refused(as, NULL, "socket path");
	/* The connecting end, the listening socket, a socketpair end. */
	peer_refused(cs, path, "unnamed");
	peer_refused(ls, path, "listening");
	pair(sv);
	peer_refused(sv[0], path, "unnamed");
	close(sv[0]);
	close(sv[1]);
	/* A regular file, and a socket of another family. */
	fd = open(file, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	peer_refused(fd, path, "not a socket");
	close(fd);
	unlink(file);
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd >= 0) {
		peer_refused(fd, path, "AF_UNIX");
		close(fd);
	}
	close(as);
	close(cs);
	close(ls);
	unlink(path);

	/* A SOCK_SEQPACKET connection accepted on a socket at the expected path. */
	ls = listen_on(seq, SOCK_SEQPACKET, 0);
	cs = connect_to(seq, SOCK_SEQPACKET, 0);
	as = accept4(ls, NULL, NULL, SOCK_CLOEXEC);
	assert_true(as >= 0);
	peer_refused(as, seq, "stream");
	close(as);
	close(cs);
	close(ls);
	unlink(seq);

	/* An abstract address whose name is the expected path. */
	abs_l = listen_on(path, SOCK_STREAM, 1);
	abs_c = connect_to(path, SOCK_STREAM, 1);
	abs_a = accept4(abs_l, NULL, NULL, SOCK_CLOEXEC);
	assert_true(abs_a >= 0);
	peer_refused(abs_a, path, "abstract");
	close(abs_a);
	close(abs_c);
	close(abs_l);
}

static int peer_setup(void **state)
{
	const char *base = getenv("TMPDIR");

	/* sun_path is 108 bytes: fall back to /tmp when TMPDIR is long. */
	if (base == NULL || base[0] == '\0' || strlen(base) > 60)
		base = "/tmp";
	snprintf(peer_dir, sizeof(peer_dir), "%s/test-wire-XXXXXX", base);
	return mkdtemp(peer_dir) != NULL ? 0 : -1;
}

static int peer_teardown(void **state)
{
	static const char *const names[] = {"iamsignd.sock", "seq.sock", "file"};
	char path[PATH_MAX + 16];

	/* What a failed check left behind. */
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		snprintf(path, sizeof(path), "%s/%s", peer_dir, names[i]);
		unlink(path);
	}
	return rmdir(peer_dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(methods),
	    cmocka_unit_test(sign_roundtrip),
	    cmocka_unit_test(sign_refusals),
	    cmocka_unit_test(sign_encoder_refusals),
	    cmocka_unit_test(tsa_query),
	    cmocka_unit_test(tsa_reply),
	    cmocka_unit_test(cred_info_req),
	    cmocka_unit_test(list_req),
	    cmocka_unit_test(record_roundtrip),
	    cmocka_unit_test(record_refusals),
	    cmocka_unit_test(error_answer),
	    cmocka_unit_test(sign_result),
	    cmocka_unit_test(cred_info),
	    cmocka_unit_test(list),
	    cmocka_unit_test(status),
	    cmocka_unit_test(framing_plain),
	    cmocka_unit_test(framing_fd),
	    cmocka_unit_test(framing_refusals),
	    cmocka_unit_test(framing_split),
	    cmocka_unit_test(framing_large),
	    cmocka_unit_test(link_status_channel),
	    cmocka_unit_test(core_refusals),
	    cmocka_unit_test_setup_teardown(peer, peer_setup, peer_teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
