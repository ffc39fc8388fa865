/* The listener <-> core protocol: framing, descriptor passing, the caller's identity, and one
 * encoder and one decoder per message. See wire.h and docs/protocol.md.
 *
 * Decoders read through a cursor that never passes the payload's end, check each field before
 * anything is allocated, and on error leave their output cleared (freed and wiped). Encoders
 * check the same bounds, so the sending side never emits a payload the other side must refuse;
 * an encoder that refuses its input poisons the buffer (oom), so that wire_send refuses it. */
#include "signer/wire/wire.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "policy/algs.h"

#define WIRE_RECV_FDS 8 /* control room per read: more than one descriptor is seen and closed */

_Static_assert(CRED_MAX_ID <= UINT8_MAX && CRED_MAX_USER <= UINT8_MAX &&
                   WIRE_MAX_PURPOSE <= UINT8_MAX && WIRE_MAX_HASHES <= UINT8_MAX,
               "u8 lengths and counts");
_Static_assert(WIRE_MAX_SAD <= UINT16_MAX && WIRE_MAX_IDS <= UINT16_MAX &&
                   WIRE_MAX_TSA_QUERY <= UINT16_MAX && WIRE_MAX_TSA_REPLY <= UINT16_MAX,
               "u16 lengths and counts");
_Static_assert(WIRE_MAX_TSA_REPLY + 5 <= WIRE_MAX_REQ, "a TSA reply fits a request");
_Static_assert(WIRE_MAX_DESC <= UINT8_MAX && R_COUNT <= UINT16_MAX, "u8 and u16 fields");
_Static_assert(WIRE_MAX_REQ < WIRE_MAX_RESP && WIRE_MAX_RESP <= UINT32_MAX, "caps");

__attribute__((format(printf, 3, 4))) static int fail(char *why, size_t whylen, const char *fmt,
                                                      ...)
{
	va_list ap;

	if (why != NULL && whylen > 0) {
		va_start(ap, fmt);
		vsnprintf(why, whylen, fmt, ap);
		va_end(ap);
	}
	return -1;
}

static void why_clear(char *why, size_t whylen)
{
	if (why != NULL && whylen > 0)
		why[0] = '\0';
}

/* --- Methods --- */

static const char *const method_names[] = {
    [WM_INFO] = "info",
    [WM_LIST] = "credentials/list",
    [WM_CRED_INFO] = "credentials/info",
    [WM_SIGN_HASH] = "signatures/signHash",
    [WM_SIGN_DOC] = "signatures/signDoc",
    [WM_UNKNOWN] = "unknown",
};

const char *wire_method_name(enum wire_method m)
{
	if ((int)m < WM_INFO || (int)m > WM_UNKNOWN)
		return NULL;
	return method_names[m];
}

enum wire_method wire_method_of(const char *path)
{
	if (path == NULL)
		return WM_UNKNOWN;
	for (int m = WM_INFO; m < WM_UNKNOWN; m++)
		if (strcmp(path, method_names[m]) == 0)
			return (enum wire_method)m;
	return WM_UNKNOWN;
}

static int method_valid(unsigned m)
{
	return m >= WM_INFO && m <= WM_UNKNOWN;
}

/* --- Character classes --- */

static int printable(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] > 0x7e)
			return 0;
	return 1;
}

/* --- Encode buffer --- */

void wire_buf_init(struct wire_buf *b, size_t max)
{
	memset(b, 0, sizeof(*b));
	b->max = max;
}

void wire_buf_free(struct wire_buf *b)
{
	if (b->p != NULL) {
		OPENSSL_cleanse(b->p, b->cap);
		free(b->p);
	}
	b->p = NULL;
	b->len = b->cap = 0;
	b->oom = 0;
}

/* Room for n more bytes, or oom. Grown by a fresh allocation and the old one wiped: realloc
 * could leave a SAD behind in freed memory. */
static int buf_room(struct wire_buf *b, size_t n)
{
	size_t want, cap;
	uint8_t *p;

	if (b->oom)
		return -1;
	if (n > b->max || b->len > b->max - n) {
		b->oom = 1;
		return -1;
	}
	want = b->len + n;
	if (want <= b->cap)
		return 0;
	cap = b->cap > 0 ? b->cap : 256;
	while (cap < want)
		cap *= 2; /* want <= max <= WIRE_MAX_RESP: no overflow */
	if (cap > b->max)
		cap = b->max;
	if ((p = malloc(cap)) == NULL) {
		b->oom = 1;
		return -1;
	}
	if (b->p != NULL) {
		memcpy(p, b->p, b->len);
		OPENSSL_cleanse(b->p, b->cap);
		free(b->p);
	}
	b->p = p;
	b->cap = cap;
	return 0;
}

static void put_bytes(struct wire_buf *b, const void *v, size_t n)
{
	if (n == 0 || buf_room(b, n) != 0)
		return;
	memcpy(b->p + b->len, v, n);
	b->len += n;
}

static void put_u8(struct wire_buf *b, uint8_t v)
{
	put_bytes(b, &v, sizeof(v));
}

static void put_u16(struct wire_buf *b, uint16_t v)
{
	put_bytes(b, &v, sizeof(v));
}

static void put_u32(struct wire_buf *b, uint32_t v)
{
	put_bytes(b, &v, sizeof(v));
}

static void put_u64(struct wire_buf *b, uint64_t v)
{
	put_bytes(b, &v, sizeof(v));
}

/* A string or byte string after its length, in width bytes (1, 2 or 4); n fits (checked). */
static void put_str(struct wire_buf *b, int width, const void *s, size_t n)
{
	if (width == 1)
		put_u8(b, (uint8_t)n);
	else if (width == 2)
		put_u16(b, (uint16_t)n);
	else
		put_u32(b, (uint32_t)n);
	put_bytes(b, s, n);
}

/* The encoders' end: -1 (and b poisoned) when the input was refused or b ran out. */
static int enc_done(struct wire_buf *b, int input_ok)
{
	if (!input_ok)
		b->oom = 1;
	return b->oom ? -1 : 0;
}

/* --- Decode cursor --- */

struct rd {
	const uint8_t *p;
	size_t len, off;
	char *why;
	size_t whylen;
};

static void rd_init(struct rd *r, const uint8_t *p, size_t len, char *why, size_t whylen)
{
	r->p = p;
	r->len = len;
	r->off = 0;
	r->why = why;
	r->whylen = whylen;
	why_clear(why, whylen);
}

/* The next n bytes; *out is NULL when n is 0. */
static int rd_take(struct rd *r, const char *field, size_t n, const uint8_t **out)
{
	*out = NULL;
	if (n > r->len - r->off)
		return fail(r->why, r->whylen, "%s: truncated", field);
	*out = n > 0 ? r->p + r->off : NULL;
	r->off += n;
	return 0;
}

static int rd_u8(struct rd *r, const char *field, uint8_t *v)
{
	const uint8_t *s;

	if (rd_take(r, field, sizeof(*v), &s) != 0)
		return -1;
	memcpy(v, s, sizeof(*v));
	return 0;
}

static int rd_u16(struct rd *r, const char *field, uint16_t *v)
{
	const uint8_t *s;

	if (rd_take(r, field, sizeof(*v), &s) != 0)
		return -1;
	memcpy(v, s, sizeof(*v));
	return 0;
}

static int rd_u32(struct rd *r, const char *field, uint32_t *v)
{
	const uint8_t *s;

	if (rd_take(r, field, sizeof(*v), &s) != 0)
		return -1;
	memcpy(v, s, sizeof(*v));
	return 0;
}

static int rd_u64(struct rd *r, const char *field, uint64_t *v)
{
	const uint8_t *s;

	if (rd_take(r, field, sizeof(*v), &s) != 0)
		return -1;
	memcpy(v, s, sizeof(*v));
	return 0;
}

/* A length in width bytes (1, 2 or 4), within min..max. */
static int rd_len(struct rd *r, const char *field, int width, size_t min, size_t max, size_t *n)
{
	uint8_t v8;
	uint16_t v16;
	uint32_t v32;

	if (width == 1) {
		if (rd_u8(r, field, &v8) != 0)
			return -1;
		*n = v8;
	} else if (width == 2) {
		if (rd_u16(r, field, &v16) != 0)
			return -1;
		*n = v16;
	} else {
		if (rd_u32(r, field, &v32) != 0)
			return -1;
		*n = v32;
	}
	if (*n < min || *n > max)
		return fail(r->why, r->whylen, "%s: length %zu not in %zu..%zu", field, *n, min,
		            max);
	return 0;
}

/* A string after its length into dst (room for max + 1): min..max bytes, no NUL. */
static int rd_str(struct rd *r, const char *field, int width, size_t min, size_t max, char *dst,
                  size_t *outlen)
{
	const uint8_t *s;
	size_t n;

	if (rd_len(r, field, width, min, max, &n) != 0 || rd_take(r, field, n, &s) != 0)
		return -1;
	if (n > 0 && memchr(s, '\0', n) != NULL)
		return fail(r->why, r->whylen, "%s: NUL byte inside", field);
	if (n > 0)
		memcpy(dst, s, n);
	dst[n] = '\0';
	if (outlen != NULL)
		*outlen = n;
	return 0;
}

static int rd_end(struct rd *r)
{
	if (r->off != r->len)
		return fail(r->why, r->whylen, "%zu trailing bytes", r->len - r->off);
	return 0;
}

/* --- Shared pieces: the refusal of a record or an error answer --- */

/* u16 reason (known, not R_NONE), then the description. */
static int put_refusal(struct wire_buf *b, const struct refusal *f)
{
	char desc[WIRE_MAX_DESC + 1];
	size_t dlen;

	if (f == NULL || reason_name(f->reason) == NULL)
		return -1;
	/* The description may quote the caller's bytes (an unknown JSON key): anything outside
	 * printable ASCII becomes '?' rather than costing the answer. */
	dlen = strnlen(f->desc, WIRE_MAX_DESC);
	for (size_t i = 0; i < dlen; i++)
		desc[i] = (unsigned char)f->desc[i] >= 0x20 && (unsigned char)f->desc[i] <= 0x7e
		              ? f->desc[i]
		              : '?';
	put_u16(b, (uint16_t)f->reason);
	put_str(b, 1, desc, dlen);
	return 0;
}

static int rd_reason(struct rd *r, uint16_t *reason)
{
	if (rd_u16(r, "reason", reason) != 0)
		return -1;
	if (*reason != R_NONE && reason_name((enum reason) * reason) == NULL)
		return fail(r->why, r->whylen, "reason: %u unknown", (unsigned)*reason);
	return 0;
}

static int rd_desc(struct rd *r, char desc[WIRE_MAX_DESC + 1])
{
	size_t n;

	if (rd_str(r, "description", 1, 0, WIRE_MAX_DESC, desc, &n) != 0)
		return -1;
	if (!printable(desc, n))
		return fail(r->why, r->whylen, "description: not printable ASCII");
	return 0;
}

/* --- WIRE_REQ_SIGN --- */

static int hash_valid(unsigned h)
{
	return h == HASH_SHA256 || h == HASH_SHA384 || h == HASH_SHA512;
}

static int family_valid(unsigned f)
{
	return f == ALG_ECDSA || f == ALG_RSA_PKCS1 || f == ALG_RSA_PSS;
}

int wire_enc_sign(struct wire_buf *b, enum wire_method m, const struct sign_req *req)
{
	size_t dlen, plen = 0, slen = 0;
	int ok;

	ok = req != NULL && (m == WM_SIGN_HASH || m == WM_SIGN_DOC) &&
	     (req->cms != 0) == (m == WM_SIGN_DOC) &&
	     (m == WM_SIGN_DOC || (!req->stamp && !req->pades)) && family_valid(req->fam) &&
	     hash_valid(req->hash) && req->pss_salt <= 64 && cred_valid_id(req->cred) &&
	     req->nhashes >= 1 && req->nhashes <= WIRE_MAX_HASHES;
	if (!ok)
		return enc_done(b, 0);
	dlen = alg_hash_len(req->hash);
	if (req->fam != ALG_RSA_PSS && req->pss_salt != dlen)
		return enc_done(b, 0);
	if (req->purpose != NULL &&
	    ((plen = strnlen(req->purpose, WIRE_MAX_PURPOSE + 1)) == 0 || plen > WIRE_MAX_PURPOSE))
		return enc_done(b, 0);
	if (req->sad != NULL &&
	    ((slen = strnlen(req->sad, WIRE_MAX_SAD + 1)) == 0 || slen > WIRE_MAX_SAD))
		return enc_done(b, 0);
	put_u8(b, (uint8_t)m);
	put_u8(b, (uint8_t)req->fam);
	put_u8(b, (uint8_t)req->hash);
	put_u8(b, (uint8_t)req->pss_salt);
	put_str(b, 1, req->cred, strlen(req->cred));
	put_str(b, 1, req->purpose, plen);
	put_str(b, 2, req->sad, slen);
	put_u8(b, (uint8_t)req->nhashes);
	for (size_t i = 0; i < req->nhashes; i++)
		put_bytes(b, req->hashes[i], dlen);
	put_u8(b, (uint8_t)((req->stamp ? WIRE_FORM_B_T : 0) | (req->pades ? WIRE_FORM_PADES : 0)));
	return enc_done(b, 1);
}

int wire_dec_sign(const uint8_t *p, size_t len, struct wire_sign *out, char *why, size_t whylen)
{
	struct rd r;
	struct sign_req *q = &out->req;
	uint8_t m, fam, hash, salt, n, form;
	size_t dlen, plen, slen;
	const uint8_t *d;
	int ret = -1;

	memset(out, 0, sizeof(*out));
	rd_init(&r, p, len, why, whylen);
	if (rd_u8(&r, "method", &m) != 0)
		goto out;
	if (m != WM_SIGN_HASH && m != WM_SIGN_DOC) {
		fail(why, whylen, "method: %u is not a signing method", m);
		goto out;
	}
	if (rd_u8(&r, "family", &fam) != 0)
		goto out;
	if (!family_valid(fam)) {
		fail(why, whylen, "family: %u unknown", fam);
		goto out;
	}
	if (rd_u8(&r, "hash", &hash) != 0)
		goto out;
	if (!hash_valid(hash)) {
		fail(why, whylen, "hash: %u unknown", hash);
		goto out;
	}
	dlen = alg_hash_len((enum alg_hash)hash);
	if (rd_u8(&r, "pss_salt", &salt) != 0)
		goto out;
	if (salt > 64 || (fam != ALG_RSA_PSS && salt != dlen)) {
		fail(why, whylen, "pss_salt: %u not allowed", salt);
		goto out;
	}
	if (rd_str(&r, "cred", 1, 1, CRED_MAX_ID, q->cred, NULL) != 0)
		goto out;
	if (!cred_valid_id(q->cred)) {
		fail(why, whylen, "cred: not a credential ID");
		goto out;
	}
	if (rd_str(&r, "purpose", 1, 0, WIRE_MAX_PURPOSE, out->purpose, &plen) != 0 ||
	    rd_str(&r, "SAD", 2, 0, WIRE_MAX_SAD, out->sad, &slen) != 0 ||
	    rd_u8(&r, "nhashes", &n) != 0)
		goto out;
	if (n < 1 || n > WIRE_MAX_HASHES) {
		fail(why, whylen, "nhashes: %u not in 1..%d", n, WIRE_MAX_HASHES);
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		if (rd_take(&r, "hashes", dlen, &d) != 0)
			goto out;
		memcpy(q->hashes[i], d, dlen);
	}
	if (rd_u8(&r, "form", &form) != 0)
		goto out;
	if ((form & ~(WIRE_FORM_B_T | WIRE_FORM_PADES)) != 0 || (m != WM_SIGN_DOC && form != 0)) {
		fail(why, whylen, "form: 0x%02x not allowed", form);
		goto out;
	}
	if (rd_end(&r) != 0)
		goto out;
	out->method = (enum wire_method)m;
	q->stamp = (form & WIRE_FORM_B_T) != 0;
	q->pades = (form & WIRE_FORM_PADES) != 0;
	q->fam = (enum alg_family)fam;
	q->hash = (enum alg_hash)hash;
	q->pss_salt = salt;
	q->purpose = plen > 0 ? out->purpose : NULL;
	q->sad = slen > 0 ? out->sad : NULL;
	q->nhashes = n;
	q->cms = m == WM_SIGN_DOC;
	ret = 0;
out:
	if (ret != 0)
		OPENSSL_cleanse(out, sizeof(*out)); /* the SAD, if it got that far */
	return ret;
}

/* --- WIRE_RESP_TSA_QUERY, WIRE_REQ_TSA_REPLY --- */

int wire_enc_tsa_query(struct wire_buf *b, unsigned wait_ms, const uint8_t *q, size_t len)
{
	if (q == NULL || len < 1 || len > WIRE_MAX_TSA_QUERY || wait_ms < 1 ||
	    wait_ms > WIRE_MAX_TSA_WAIT_MS)
		return enc_done(b, 0);
	put_u32(b, (uint32_t)wait_ms);
	put_str(b, 2, q, len);
	return enc_done(b, 1);
}

int wire_dec_tsa_query(const uint8_t *p, size_t len, unsigned *wait_ms, const uint8_t **q,
                       size_t *qlen, char *why, size_t whylen)
{
	struct rd r;
	uint32_t w = 0;

	*wait_ms = 0;
	*q = NULL;
	*qlen = 0;
	rd_init(&r, p, len, why, whylen);
	if (rd_u32(&r, "wait", &w) != 0 ||
	    (w < 1 || w > WIRE_MAX_TSA_WAIT_MS
	         ? fail(why, whylen, "wait: %u ms out of bounds", (unsigned)w)
	         : 0) != 0 ||
	    rd_len(&r, "query", 2, 1, WIRE_MAX_TSA_QUERY, qlen) != 0 ||
	    rd_take(&r, "query", *qlen, q) != 0 || rd_end(&r) != 0) {
		*q = NULL;
		*qlen = 0;
		return -1;
	}
	*wait_ms = w;
	return 0;
}

static const char *const tsa_outcome_names[] = {
    [WIRE_TSA_OK] = "ok",
    [WIRE_TSA_UNREACHABLE] = "unreachable",
    [WIRE_TSA_TIMEOUT] = "timeout",
    [WIRE_TSA_HTTP_ERROR] = "http_error",
    [WIRE_TSA_TOO_LARGE] = "too_large",
    [WIRE_TSA_NOT_CONFIGURED] = "not_configured",
};

const char *wire_tsa_outcome_name(int outcome)
{
	if (outcome < WIRE_TSA_OK || outcome > WIRE_TSA_NOT_CONFIGURED)
		return NULL;
	return tsa_outcome_names[outcome];
}

/* The rules of a reply, for both ends: NULL, or the field that breaks them. */
static const char *tsa_reply_bad(int outcome, unsigned status, size_t len)
{
	if (wire_tsa_outcome_name(outcome) == NULL)
		return "outcome";
	if (status != 0 && (status < 100 || status > 599))
		return "http_status";
	if (outcome == WIRE_TSA_OK && status != 200)
		return "http_status";
	if (outcome == WIRE_TSA_OK ? len < 1 || len > WIRE_MAX_TSA_REPLY : len != 0)
		return "body";
	return NULL;
}

int wire_enc_tsa_reply(struct wire_buf *b, const struct wire_tsa_reply *r)
{
	if (r == NULL || tsa_reply_bad(r->outcome, r->http_status, r->len) != NULL ||
	    (r->len > 0 && r->body == NULL))
		return enc_done(b, 0);
	put_u8(b, (uint8_t)r->outcome);
	put_u16(b, (uint16_t)r->http_status);
	put_str(b, 2, r->body, r->len);
	return enc_done(b, 1);
}

int wire_dec_tsa_reply(const uint8_t *p, size_t len, struct wire_tsa_reply *out, char *why,
                       size_t whylen)
{
	struct rd r;
	uint8_t outcome;
	uint16_t status;
	const char *bad;
	size_t n;
	const uint8_t *body;

	memset(out, 0, sizeof(*out));
	rd_init(&r, p, len, why, whylen);
	if (rd_u8(&r, "outcome", &outcome) != 0 || rd_u16(&r, "http_status", &status) != 0 ||
	    rd_len(&r, "body", 2, 0, WIRE_MAX_TSA_REPLY, &n) != 0 ||
	    rd_take(&r, "body", n, &body) != 0)
		return -1;
	if ((bad = tsa_reply_bad(outcome, status, n)) != NULL)
		return fail(why, whylen, "%s: not allowed with outcome %u, status %u, %zu bytes",
		            bad, (unsigned)outcome, (unsigned)status, n);
	if (rd_end(&r) != 0)
		return -1;
	out->outcome = outcome;
	out->http_status = status;
	out->body = body;
	out->len = n;
	return 0;
}

/* --- WIRE_REQ_CRED_INFO --- */

int wire_enc_cred_info_req(struct wire_buf *b, const char *cred)
{
	if (!cred_valid_id(cred))
		return enc_done(b, 0);
	put_str(b, 1, cred, strlen(cred));
	return enc_done(b, 1);
}

int wire_dec_cred_info_req(const uint8_t *p, size_t len, char cred[CRED_MAX_ID + 1], char *why,
                           size_t whylen)
{
	struct rd r;

	memset(cred, 0, CRED_MAX_ID + 1);
	rd_init(&r, p, len, why, whylen);
	if (rd_str(&r, "cred", 1, 1, CRED_MAX_ID, cred, NULL) != 0)
		goto bad;
	if (!cred_valid_id(cred)) {
		fail(why, whylen, "cred: not a credential ID");
		goto bad;
	}
	if (rd_end(&r) != 0)
		goto bad;
	return 0;
bad:
	memset(cred, 0, CRED_MAX_ID + 1);
	return -1;
}

/* --- WIRE_REQ_LIST --- */

int wire_enc_list_req(struct wire_buf *b, const char *user, const char *after, unsigned max)
{
	if ((user != NULL && !cred_valid_user(user)) || (after != NULL && !cred_valid_id(after)) ||
	    max < 1 || max > WIRE_MAX_IDS)
		return enc_done(b, 0);
	put_str(b, 1, user, user != NULL ? strlen(user) : 0);
	put_str(b, 1, after, after != NULL ? strlen(after) : 0);
	put_u16(b, (uint16_t)max);
	return enc_done(b, 1);
}

int wire_dec_list_req(const uint8_t *p, size_t len, struct wire_list_req *out, char *why,
                      size_t whylen)
{
	struct rd r;
	size_t ulen, alen;
	uint16_t max;

	memset(out, 0, sizeof(*out));
	rd_init(&r, p, len, why, whylen);
	if (rd_str(&r, "user", 1, 0, CRED_MAX_USER, out->user, &ulen) != 0)
		goto bad;
	if (ulen > 0 && !cred_valid_user(out->user)) {
		fail(why, whylen, "user: not a userID");
		goto bad;
	}
	if (rd_str(&r, "after", 1, 0, CRED_MAX_ID, out->after, &alen) != 0)
		goto bad;
	if (alen > 0 && !cred_valid_id(out->after)) {
		fail(why, whylen, "after: not a credential ID");
		goto bad;
	}
	if (rd_u16(&r, "max", &max) != 0)
		goto bad;
	if (max < 1 || max > WIRE_MAX_IDS) {
		fail(why, whylen, "max: %u not in 1..%d", (unsigned)max, WIRE_MAX_IDS);
		goto bad;
	}
	if (rd_end(&r) != 0)
		goto bad;
	out->has_user = ulen > 0;
	out->has_after = alen > 0;
	out->max = max;
	return 0;
bad:
	memset(out, 0, sizeof(*out));
	return -1;
}

/* --- WIRE_REQ_RECORD --- */

int wire_enc_record(struct wire_buf *b, enum wire_method m, const struct refusal *refusal)
{
	if (!method_valid(m) || (refusal == NULL && m != WM_INFO))
		return enc_done(b, 0);
	put_u8(b, (uint8_t)m);
	if (refusal == NULL) {
		put_u16(b, R_NONE);
		return enc_done(b, 1);
	}
	return enc_done(b, put_refusal(b, refusal) == 0);
}

int wire_dec_record(const uint8_t *p, size_t len, struct wire_record *out, char *why, size_t whylen)
{
	struct rd r;
	uint8_t m;
	uint16_t reason;

	memset(out, 0, sizeof(*out));
	rd_init(&r, p, len, why, whylen);
	if (rd_u8(&r, "method", &m) != 0)
		goto bad;
	if (!method_valid(m)) {
		fail(why, whylen, "method: %u unknown", m);
		goto bad;
	}
	if (rd_reason(&r, &reason) != 0)
		goto bad;
	if (reason == R_NONE) {
		if (m != WM_INFO) {
			fail(why, whylen, "reason: none (allowed) recorded only for info");
			goto bad;
		}
	} else if (rd_desc(&r, out->refusal.desc) != 0) {
		goto bad;
	}
	if (rd_end(&r) != 0)
		goto bad;
	out->method = (enum wire_method)m;
	out->refusal.reason = (enum reason)reason;
	return 0;
bad:
	memset(out, 0, sizeof(*out));
	return -1;
}

/* --- WIRE_RESP_ERROR --- */

int wire_enc_error(struct wire_buf *b, const struct refusal *f)
{
	return enc_done(b, put_refusal(b, f) == 0);
}

int wire_dec_error(const uint8_t *p, size_t len, struct refusal *f, char *why, size_t whylen)
{
	struct rd r;
	uint16_t reason;

	memset(f, 0, sizeof(*f));
	rd_init(&r, p, len, why, whylen);
	if (rd_reason(&r, &reason) != 0)
		goto bad;
	if (reason == R_NONE) {
		fail(why, whylen, "reason: none in an error answer");
		goto bad;
	}
	if (rd_desc(&r, f->desc) != 0 || rd_end(&r) != 0)
		goto bad;
	f->reason = (enum reason)reason;
	return 0;
bad:
	memset(f, 0, sizeof(*f));
	return -1;
}

/* --- WIRE_RESP_SIGN --- */

int wire_enc_sign_result(struct wire_buf *b, const struct sign_result *r)
{
	if (r == NULL || r->n < 1 || r->n > WIRE_MAX_HASHES)
		return enc_done(b, 0);
	for (size_t i = 0; i < r->n; i++)
		if (r->sig[i] == NULL || r->len[i] < 1 || r->len[i] > WIRE_MAX_SIG)
			return enc_done(b, 0);
	put_u8(b, (uint8_t)r->n);
	for (size_t i = 0; i < r->n; i++)
		put_str(b, 4, r->sig[i], r->len[i]);
	return enc_done(b, 1);
}

int wire_dec_sign_result(const uint8_t *p, size_t len, struct sign_result *out, char *why,
                         size_t whylen)
{
	struct rd r;
	uint8_t n;
	size_t slen;
	const uint8_t *s;
	int ret = -1;

	memset(out, 0, sizeof(*out));
	rd_init(&r, p, len, why, whylen);
	if (rd_u8(&r, "n", &n) != 0)
		goto out;
	if (n < 1 || n > WIRE_MAX_HASHES) {
		fail(why, whylen, "n: %u not in 1..%d", n, WIRE_MAX_HASHES);
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		/* Taken from the payload before the copy is allocated: no larger than what came. */
		if (rd_len(&r, "signature", 4, 1, WIRE_MAX_SIG, &slen) != 0 ||
		    rd_take(&r, "signature", slen, &s) != 0)
			goto out;
		if ((out->sig[i] = OPENSSL_malloc(slen)) == NULL) {
			fail(why, whylen, "out of memory");
			goto out;
		}
		memcpy(out->sig[i], s, slen);
		out->len[i] = slen;
		out->n = i + 1;
	}
	if (rd_end(&r) != 0)
		goto out;
	ret = 0;
out:
	if (ret != 0) {
		sign_result_clear(out);
		memset(out, 0, sizeof(*out));
	}
	return ret;
}

/* --- WIRE_RESP_CRED_INFO --- */

static int key_valid(int type, int curve_nid)
{
	return (type == WIRE_KEY_RSA && curve_nid == 0) || (type == WIRE_KEY_EC && curve_nid > 0);
}

const char *wire_cred_status_name(int status)
{
	switch (status) {
	case WIRE_CRED_ACTIVE:
		return "active";
	case WIRE_CRED_SUSPENDED:
		return "suspended";
	case WIRE_CRED_REVOKED:
		return "revoked";
	}
	return NULL;
}

int wire_enc_cred_info(struct wire_buf *b, const struct wire_cred_info *ci)
{
	size_t olen, clen;

	if (ci == NULL || wire_cred_status_name(ci->status) == NULL ||
	    !cred_valid_user(ci->owner) || !key_valid(ci->key_type, ci->curve_nid) ||
	    ci->bits > UINT16_MAX || ci->cert_len > WIRE_MAX_CERT ||
	    (ci->cert_len > 0 && ci->cert_der == NULL))
		return enc_done(b, 0);
	olen = strlen(ci->owner);
	clen = ci->chain_pem != NULL ? strnlen(ci->chain_pem, WIRE_MAX_CHAIN + 1) : 0;
	if (clen > WIRE_MAX_CHAIN)
		return enc_done(b, 0);
	put_u8(b, (uint8_t)ci->status);
	put_str(b, 1, ci->owner, olen);
	put_u8(b, (uint8_t)ci->key_type);
	put_u16(b, (uint16_t)ci->bits);
	put_u32(b, (uint32_t)ci->curve_nid);
	put_str(b, 4, ci->cert_der, ci->cert_len);
	put_str(b, 4, ci->chain_pem, clen);
	return enc_done(b, 1);
}

int wire_dec_cred_info(const uint8_t *p, size_t len, struct wire_cred_info *out, char *why,
                       size_t whylen)
{
	struct rd r;
	uint8_t st, type;
	uint16_t bits;
	uint32_t nid;
	int32_t curve;
	size_t n;
	const uint8_t *s;
	int ret = -1;

	memset(out, 0, sizeof(*out));
	rd_init(&r, p, len, why, whylen);
	if (rd_u8(&r, "status", &st) != 0)
		goto out;
	if (wire_cred_status_name(st) == NULL) {
		fail(why, whylen, "status: %u unknown", st);
		goto out;
	}
	if (rd_str(&r, "owner", 1, 1, CRED_MAX_USER, out->owner, NULL) != 0)
		goto out;
	if (!cred_valid_user(out->owner)) {
		fail(why, whylen, "owner: not a userID");
		goto out;
	}
	if (rd_u8(&r, "key type", &type) != 0 || rd_u16(&r, "bits", &bits) != 0 ||
	    rd_u32(&r, "curve", &nid) != 0)
		goto out;
	memcpy(&curve, &nid, sizeof(curve));
	if (!key_valid(type, curve)) {
		fail(why, whylen, "key type %u with curve %d", type, (int)curve);
		goto out;
	}
	if (rd_len(&r, "certificate", 4, 0, WIRE_MAX_CERT, &n) != 0 ||
	    rd_take(&r, "certificate", n, &s) != 0)
		goto out;
	if (n > 0) {
		if ((out->cert_der = malloc(n)) == NULL) {
			fail(why, whylen, "out of memory");
			goto out;
		}
		memcpy(out->cert_der, s, n);
		out->cert_len = n;
	}
	if (rd_len(&r, "chain", 4, 0, WIRE_MAX_CHAIN, &n) != 0 || rd_take(&r, "chain", n, &s) != 0)
		goto out;
	if (n > 0) {
		if (memchr(s, '\0', n) != NULL) {
			fail(why, whylen, "chain: NUL byte inside");
			goto out;
		}
		if ((out->chain_pem = malloc(n + 1)) == NULL) {
			fail(why, whylen, "out of memory");
			goto out;
		}
		memcpy(out->chain_pem, s, n);
		out->chain_pem[n] = '\0';
	}
	if (rd_end(&r) != 0)
		goto out;
	out->status = st;
	out->key_type = type;
	out->bits = bits;
	out->curve_nid = curve;
	ret = 0;
out:
	if (ret != 0)
		wire_cred_info_clear(out);
	return ret;
}

void wire_cred_info_clear(struct wire_cred_info *ci)
{
	free(ci->cert_der);
	free(ci->chain_pem);
	memset(ci, 0, sizeof(*ci));
}

/* --- WIRE_RESP_LIST --- */

int wire_enc_list(struct wire_buf *b, int more, char *const *ids, size_t n)
{
	if (n > WIRE_MAX_IDS || (n > 0 && ids == NULL))
		return enc_done(b, 0);
	for (size_t i = 0; i < n; i++)
		if (!cred_valid_id(ids[i]))
			return enc_done(b, 0);
	put_u8(b, more != 0);
	put_u16(b, (uint16_t)n);
	for (size_t i = 0; i < n; i++)
		put_str(b, 1, ids[i], strlen(ids[i]));
	return enc_done(b, 1);
}

int wire_dec_list(const uint8_t *p, size_t len, struct wire_list *out, char *why, size_t whylen)
{
	struct rd r;
	uint8_t more;
	uint16_t n;
	int ret = -1;

	memset(out, 0, sizeof(*out));
	rd_init(&r, p, len, why, whylen);
	if (rd_u8(&r, "more", &more) != 0)
		goto out;
	if (more > 1) {
		fail(why, whylen, "more: %u not 0 or 1", more);
		goto out;
	}
	if (rd_u16(&r, "n", &n) != 0)
		goto out;
	if (n > WIRE_MAX_IDS) {
		fail(why, whylen, "n: %u over %d", (unsigned)n, WIRE_MAX_IDS);
		goto out;
	}
	/* Each ID takes at least two bytes: no array for IDs the payload cannot hold. */
	if ((size_t)n * 2 > r.len - r.off) {
		fail(why, whylen, "ids: truncated");
		goto out;
	}
	if (n > 0 && (out->ids = calloc(n, sizeof(*out->ids))) == NULL) {
		fail(why, whylen, "out of memory");
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		if (rd_str(&r, "id", 1, 1, CRED_MAX_ID, out->ids[i], NULL) != 0)
			goto out;
		if (!cred_valid_id(out->ids[i])) {
			fail(why, whylen, "id %zu: not a credential ID", i);
			goto out;
		}
	}
	if (rd_end(&r) != 0)
		goto out;
	out->more = more;
	out->n = n;
	ret = 0;
out:
	if (ret != 0)
		wire_list_clear(out);
	return ret;
}

void wire_list_clear(struct wire_list *l)
{
	free(l->ids);
	memset(l, 0, sizeof(*l));
}

/* --- WIRE_RESP_STATUS --- */

int wire_enc_status(struct wire_buf *b, const struct wire_status *st)
{
	const struct wire_token_stats *ts = st != NULL ? &st->tok : NULL;

	if (ts == NULL || ts->state < WIRE_TOKEN_UP || ts->state > WIRE_TOKEN_PIN_FAILED ||
	    (ts->pcsc != 0 && ts->pcsc != 1) || ts->last_outage_ms < 0 ||
	    st->ledger.records < st->ledger.commits)
		return enc_done(b, 0);
	put_u8(b, (uint8_t)ts->state);
	put_u8(b, (uint8_t)ts->pcsc);
	put_u64(b, ts->downs);
	put_u64(b, ts->recoveries);
	put_u64(b, ts->fast_failures);
	put_u64(b, (uint64_t)ts->last_outage_ms);
	put_u64(b, st->ledger.commits);
	put_u64(b, st->ledger.records);
	put_u64(b, st->ledger.failed);
	put_u64(b, st->ledger.commit_ns);
	put_u64(b, st->ledger.busy_ms);
	put_u64(b, st->ledger.unrecorded);
	put_u8(b, st->ledger.stalled ? 1 : 0);
	if (st->cache.key_held > st->cache.key_capacity)
		return enc_done(b, 0);
	put_u64(b, st->cache.key_hits);
	put_u64(b, st->cache.key_misses);
	put_u64(b, st->cache.key_evictions);
	put_u64(b, st->cache.key_refused);
	put_u64(b, st->cache.key_proven_again);
	put_u64(b, st->cache.key_held);
	put_u64(b, st->cache.key_capacity);
	put_u64(b, st->cache.cert_hits);
	put_u64(b, st->cache.cert_misses);
	put_u64(b, st->cache.cert_slots);
	return enc_done(b, 1);
}

int wire_dec_status(const uint8_t *p, size_t len, struct wire_status *out, char *why, size_t whylen)
{
	struct rd r;
	uint8_t state, pcsc, stalled;
	uint64_t downs, ups, fast, last;
	struct wire_ledger_stats ls;
	struct wire_cache_stats cs;
	int64_t outage;

	memset(out, 0, sizeof(*out));
	rd_init(&r, p, len, why, whylen);
	if (rd_u8(&r, "state", &state) != 0)
		return -1;
	if (state > WIRE_TOKEN_PIN_FAILED)
		return fail(why, whylen, "state: %u unknown", state);
	if (rd_u8(&r, "pcsc", &pcsc) != 0)
		return -1;
	if (pcsc > 1)
		return fail(why, whylen, "pcsc: %u not 0 or 1", pcsc);
	if (rd_u64(&r, "downs", &downs) != 0 || rd_u64(&r, "recoveries", &ups) != 0 ||
	    rd_u64(&r, "fast_failures", &fast) != 0 || rd_u64(&r, "last_outage_ms", &last) != 0)
		return -1;
	memcpy(&outage, &last, sizeof(outage));
	if (outage < 0)
		return fail(why, whylen, "last_outage_ms: negative");
	if (rd_u64(&r, "commits", &ls.commits) != 0 || rd_u64(&r, "records", &ls.records) != 0 ||
	    rd_u64(&r, "failed", &ls.failed) != 0 || rd_u64(&r, "commit_ns", &ls.commit_ns) != 0 ||
	    rd_u64(&r, "busy_ms", &ls.busy_ms) != 0 ||
	    rd_u64(&r, "unrecorded", &ls.unrecorded) != 0 || rd_u8(&r, "stalled", &stalled) != 0)
		return -1;
	if (ls.records < ls.commits)
		return fail(why, whylen, "records: fewer than commits");
	if (stalled > 1)
		return fail(why, whylen, "stalled: %u not 0 or 1", stalled);
	ls.stalled = stalled;
	if (rd_u64(&r, "key_hits", &cs.key_hits) != 0 ||
	    rd_u64(&r, "key_misses", &cs.key_misses) != 0 ||
	    rd_u64(&r, "key_evictions", &cs.key_evictions) != 0 ||
	    rd_u64(&r, "key_refused", &cs.key_refused) != 0 ||
	    rd_u64(&r, "key_proven_again", &cs.key_proven_again) != 0 ||
	    rd_u64(&r, "key_held", &cs.key_held) != 0 ||
	    rd_u64(&r, "key_capacity", &cs.key_capacity) != 0 ||
	    rd_u64(&r, "cert_hits", &cs.cert_hits) != 0 ||
	    rd_u64(&r, "cert_misses", &cs.cert_misses) != 0 ||
	    rd_u64(&r, "cert_slots", &cs.cert_slots) != 0)
		return -1;
	if (cs.key_held > cs.key_capacity)
		return fail(why, whylen, "key_held: more than key_capacity");
	if (rd_end(&r) != 0)
		return -1;
	out->tok.state = state;
	out->tok.pcsc = pcsc;
	out->tok.downs = downs;
	out->tok.recoveries = ups;
	out->tok.fast_failures = fast;
	out->tok.last_outage_ms = outage;
	out->ledger = ls;
	out->cache = cs;
	return 0;
}

/* --- Framing --- */

static int send_all(int sock, const uint8_t *p, size_t n)
{
	ssize_t w;

	while (n > 0) {
		w = send(sock, p, n, MSG_NOSIGNAL);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			if (w == 0)
				errno = EIO;
			return -1;
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

int wire_send(int sock, uint32_t type, const struct wire_buf *payload, int fd)
{
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(sizeof(int))];
	} ctl;
	uint8_t hdr[WIRE_HDR_LEN];
	uint32_t magic = WIRE_MAGIC, len32;
	size_t len = payload != NULL ? payload->len : 0;
	struct cmsghdr *cm;
	struct msghdr msg;
	struct iovec iov[2];
	size_t sent;
	ssize_t w;

	if (payload != NULL && (payload->oom || (len > 0 && payload->p == NULL))) {
		errno = EINVAL;
		return -1;
	}
	if (len > WIRE_MAX_RESP) {
		errno = EMSGSIZE;
		return -1;
	}
	len32 = (uint32_t)len;
	memcpy(hdr, &magic, 4);
	memcpy(hdr + 4, &type, 4);
	memcpy(hdr + 8, &len32, 4);
	/* Header and payload in one call, the descriptor with them: one system call a message
	 * unless the socket's buffer is short. */
	memset(&msg, 0, sizeof(msg));
	iov[0].iov_base = hdr;
	iov[0].iov_len = sizeof(hdr);
	iov[1].iov_base = len > 0 ? payload->p : NULL;
	iov[1].iov_len = len;
	msg.msg_iov = iov;
	msg.msg_iovlen = len > 0 ? 2 : 1;
	if (fd >= 0) {
		memset(&ctl, 0, sizeof(ctl));
		msg.msg_control = ctl.buf;
		msg.msg_controllen = sizeof(ctl.buf);
		cm = CMSG_FIRSTHDR(&msg);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(cm), &fd, sizeof(int));
	}
	do
		w = sendmsg(sock, &msg, MSG_NOSIGNAL);
	while (w < 0 && errno == EINTR);
	if (w < 0)
		return -1;
	/* The descriptor went with the first byte; what the buffer did not take follows
	 * without it. */
	sent = (size_t)w;
	if (sent < sizeof(hdr) && send_all(sock, hdr + sent, sizeof(hdr) - sent) != 0)
		return -1;
	sent = sent < sizeof(hdr) ? 0 : sent - sizeof(hdr);
	if (sent < len && send_all(sock, payload->p + sent, len - sent) != 0)
		return -1;
	return 0;
}

static void close_fds(int *fds, size_t n)
{
	for (size_t i = 0; i < n; i++)
		close(fds[i]);
}

/* One recvmsg into p[0..n), descriptors and all. A descriptor is accepted only with the
 * first byte of a message (first != 0), and only one; anything else in the control data, or
 * control data cut short, is an error after every descriptor received is closed. Returns the
 * bytes read (0 at end of stream), or -1 with why set. */
static ssize_t recv_some(int sock, uint8_t *p, size_t n, int first, int *fd, char *why,
                         size_t whylen)
{
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(sizeof(int) * WIRE_RECV_FDS)];
	} ctl;
	int fds[WIRE_RECV_FDS], bad = 0;
	size_t nfds = 0, k;
	struct cmsghdr *cm;
	struct msghdr msg;
	struct iovec iov;
	ssize_t got;

	memset(&msg, 0, sizeof(msg));
	iov.iov_base = p;
	iov.iov_len = n;
	msg.msg_iov = &iov;
	msg.msg_iovlen = 1;
	msg.msg_control = ctl.buf;
	msg.msg_controllen = sizeof(ctl.buf);
	do
		got = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
	while (got < 0 && errno == EINTR);
	if (got < 0)
		return fail(why, whylen, "recvmsg: %s", strerror(errno));
	for (cm = CMSG_FIRSTHDR(&msg); cm != NULL; cm = CMSG_NXTHDR(&msg, cm)) {
		if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS ||
		    cm->cmsg_len < CMSG_LEN(0)) {
			bad = 1;
			continue;
		}
		k = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (size_t i = 0; i < k && nfds < WIRE_RECV_FDS; i++)
			memcpy(&fds[nfds++], CMSG_DATA(cm) + i * sizeof(int), sizeof(int));
	}
	if (bad || (msg.msg_flags & MSG_CTRUNC) || nfds > 1 || (nfds == 1 && !first)) {
		close_fds(fds, nfds);
		if (msg.msg_flags & MSG_CTRUNC)
			return fail(why, whylen, "control data truncated");
		if (bad)
			return fail(why, whylen, "control data other than one descriptor");
		if (nfds > 1)
			return fail(why, whylen, "%zu descriptors attached", nfds);
		return fail(why, whylen, "descriptor attached inside a message");
	}
	if (nfds == 1)
		*fd = fds[0];
	return got;
}

/* Exactly n bytes into p. eof_ok: an end of stream before the first byte returns 1. */
static int recv_all(int sock, uint8_t *p, size_t n, int eof_ok, int *fd, const char *what,
                    char *why, size_t whylen)
{
	size_t off = 0;
	ssize_t got;

	while (off < n) {
		got = recv_some(sock, p + off, n - off, eof_ok && off == 0, fd, why, whylen);
		if (got < 0)
			return -1;
		if (got == 0) {
			if (eof_ok && off == 0)
				return 1;
			return fail(why, whylen, "end of stream inside a %s (%zu of %zu bytes)",
			            what, off, n);
		}
		off += (size_t)got;
	}
	return 0;
}

int wire_recv(int sock, size_t cap, uint32_t *type, uint8_t **payload, size_t *len, int *fd,
              char *why, size_t whylen)
{
	uint8_t hdr[WIRE_HDR_LEN], *p = NULL;
	uint32_t magic, t, n;
	int got_fd = -1, r;

	*type = 0;
	*payload = NULL;
	*len = 0;
	*fd = -1;
	why_clear(why, whylen);
	r = recv_all(sock, hdr, sizeof(hdr), 1, &got_fd, "header", why, whylen);
	if (r != 0)
		goto bad;
	memcpy(&magic, hdr, 4);
	memcpy(&t, hdr + 4, 4);
	memcpy(&n, hdr + 8, 4);
	if (magic != WIRE_MAGIC) {
		r = fail(why, whylen, "bad magic 0x%08x", (unsigned)magic);
		goto bad;
	}
	if (n > cap) {
		r = fail(why, whylen, "payload of %u bytes over the cap of %zu", (unsigned)n, cap);
		goto bad;
	}
	if (n > 0) {
		if ((p = malloc(n)) == NULL) {
			r = fail(why, whylen, "out of memory");
			goto bad;
		}
		if ((r = recv_all(sock, p, n, 0, &got_fd, "payload", why, whylen)) != 0)
			goto bad;
	}
	*type = t;
	*payload = p;
	*len = n;
	*fd = got_fd;
	return 0;
bad:
	if (p != NULL) {
		OPENSSL_cleanse(p, n);
		free(p);
	}
	if (got_fd >= 0)
		close(got_fd);
	return r;
}

/* --- The caller --- */

static int sockopt_int(int fd, int opt, int *v)
{
	socklen_t len = sizeof(*v);

	if (getsockopt(fd, SOL_SOCKET, opt, v, &len) != 0)
		return -1;
	if (len != sizeof(*v)) {
		errno = EINVAL;
		return -1;
	}
	return 0;
}

int wire_peer(int fd, const char *sock_path, struct peer *out, char *why, size_t whylen)
{
	const size_t off = offsetof(struct sockaddr_un, sun_path);
	struct sockaddr_un sa;
	socklen_t salen = sizeof(sa), clen = sizeof(struct ucred);
	struct ucred cred;
	struct stat st;
	size_t want, namelen;
	int v;

	memset(out, 0, sizeof(*out));
	why_clear(why, whylen);
	if (sock_path == NULL || (want = strlen(sock_path)) == 0 || want > sizeof(sa.sun_path))
		return fail(why, whylen, "no usable socket path to compare with");
	if (fstat(fd, &st) != 0)
		return fail(why, whylen, "fstat: %s", strerror(errno));
	if (!S_ISSOCK(st.st_mode))
		return fail(why, whylen, "not a socket");
	if (sockopt_int(fd, SO_DOMAIN, &v) != 0)
		return fail(why, whylen, "SO_DOMAIN: %s", strerror(errno));
	if (v != AF_UNIX)
		return fail(why, whylen, "not an AF_UNIX socket (domain %d)", v);
	if (sockopt_int(fd, SO_TYPE, &v) != 0)
		return fail(why, whylen, "SO_TYPE: %s", strerror(errno));
	if (v != SOCK_STREAM)
		return fail(why, whylen, "not a stream socket (type %d)", v);
	if (sockopt_int(fd, SO_ACCEPTCONN, &v) != 0)
		return fail(why, whylen, "SO_ACCEPTCONN: %s", strerror(errno));
	if (v != 0)
		return fail(why, whylen, "a listening socket, not a connection");
	memset(&sa, 0, sizeof(sa));
	if (getsockname(fd, (struct sockaddr *)&sa, &salen) != 0)
		return fail(why, whylen, "getsockname: %s", strerror(errno));
	if (salen > sizeof(sa))
		return fail(why, whylen, "local address longer than a sockaddr_un");
	if (salen <= off || sa.sun_family != AF_UNIX)
		return fail(why, whylen, "local address unnamed");
	if (sa.sun_path[0] == '\0')
		return fail(why, whylen, "local address abstract");
	/* Linux counts the terminating NUL in a pathname address, except when the path fills
	 * sun_path: at most one byte after the name, and that a NUL. */
	namelen = strnlen(sa.sun_path, salen - off);
	if (salen - off - namelen > 1)
		return fail(why, whylen, "local address malformed");
	if (namelen != want || memcmp(sa.sun_path, sock_path, want) != 0)
		return fail(why, whylen, "local address is not the daemon's socket");
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen) != 0)
		return fail(why, whylen, "SO_PEERCRED: %s", strerror(errno));
	if (clen != sizeof(cred))
		return fail(why, whylen, "SO_PEERCRED: short answer");
	/* An unconnected socket reports uid and gid -1. */
	if (cred.uid == (uid_t)-1 || cred.gid == (gid_t)-1)
		return fail(why, whylen, "no peer credentials");
	out->pid = cred.pid;
	out->uid = cred.uid;
	out->gid = cred.gid;
	return 0;
}
