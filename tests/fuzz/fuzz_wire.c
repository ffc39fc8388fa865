/* Fuzz target: the listener <-> core payload decoders (signer/wire/wire.h). The first byte picks
 * the decoder, the rest is the payload, under the cap wire_recv applies to that direction. The
 * decoders' contract is checked: a refusal names why and leaves the output cleared; an
 * acceptance holds only values in range and encodes back to exactly the same bytes (the
 * encoding is canonical, so nothing is lost or invented in between). */
#include <stdlib.h>
#include <string.h>

#include "signer/wire/wire.h"
#include "tests/fuzz/fuzz.h"

/* The first byte, modulo D_COUNT (the seeds in corpus/wire use these values). */
enum {
	D_SIGN,
	D_CRED_REQ,
	D_LIST_REQ,
	D_RECORD,
	D_ERROR,
	D_SIGN_RESULT,
	D_CRED_INFO,
	D_LIST,
	D_STATUS,
	D_TSA_QUERY,
	D_TSA_REPLY,
	D_COUNT
};

static int all_zero(const void *p, size_t n)
{
	const unsigned char *b = p;

	for (size_t i = 0; i < n; i++)
		if (b[i] != 0)
			return 0;
	return 1;
}

/* A decoder's result: 0, or -1 with why set and the output cleared. */
static void check(int r, const char *why, const void *out, size_t outlen)
{
	if (r == -1) {
		if (why[0] == '\0' || !all_zero(out, outlen))
			abort();
	} else if (r != 0) {
		abort();
	}
}

/* The encoder, given what was decoded, wrote exactly the payload. */
static void same(struct wire_buf *b, int r, const uint8_t *p, size_t len)
{
	if (r != 0 || b->oom || b->len != len || (len > 0 && memcmp(b->p, p, len) != 0))
		abort();
}

static void sign(const uint8_t *p, size_t len, struct wire_buf *b, char *why, size_t whylen)
{
	struct wire_sign *w = malloc(sizeof(*w));
	int r;

	if (w == NULL)
		abort();
	r = wire_dec_sign(p, len, w, why, whylen);
	check(r, why, w, sizeof(*w));
	if (r == 0) {
		if (w->req.nhashes < 1 || w->req.nhashes > WIRE_MAX_HASHES ||
		    alg_hash_len(w->req.hash) == 0 || !cred_valid_id(w->req.cred) ||
		    (w->req.purpose != NULL && w->req.purpose != w->purpose) ||
		    (w->req.sad != NULL && w->req.sad != w->sad))
			abort();
		same(b, wire_enc_sign(b, w->method, &w->req), p, len);
	}
	free(w);
}

static void list_req(const uint8_t *p, size_t len, struct wire_buf *b, char *why, size_t whylen)
{
	struct wire_list_req w;
	int r = wire_dec_list_req(p, len, &w, why, whylen);

	check(r, why, &w, sizeof(w));
	if (r == 0)
		same(b,
		     wire_enc_list_req(b, w.has_user ? w.user : NULL, w.has_after ? w.after : NULL,
		                       w.max),
		     p, len);
}

static void record(const uint8_t *p, size_t len, struct wire_buf *b, char *why, size_t whylen)
{
	struct wire_record w;
	int r = wire_dec_record(p, len, &w, why, whylen);

	check(r, why, &w, sizeof(w));
	if (r != 0)
		return;
	if (w.refusal.reason == R_NONE) {
		same(b, wire_enc_record(b, w.method, NULL), p, len);
		return;
	}
	if (reason_name(w.refusal.reason) == NULL)
		abort();
	same(b, wire_enc_record(b, w.method, &w.refusal), p, len);
}

static void error_answer(const uint8_t *p, size_t len, struct wire_buf *b, char *why, size_t whylen)
{
	struct refusal e;
	int r = wire_dec_error(p, len, &e, why, whylen);

	check(r, why, &e, sizeof(e));
	if (r == 0) {
		if (reason_name(e.reason) == NULL)
			abort();
		same(b, wire_enc_error(b, &e), p, len);
	}
}

static void sign_result(const uint8_t *p, size_t len, struct wire_buf *b, char *why, size_t whylen)
{
	struct sign_result res;
	int r = wire_dec_sign_result(p, len, &res, why, whylen);

	check(r, why, &res, sizeof(res));
	if (r == 0) {
		same(b, wire_enc_sign_result(b, &res), p, len);
		sign_result_clear(&res);
	}
}

static void cred_info(const uint8_t *p, size_t len, struct wire_buf *b, char *why, size_t whylen)
{
	struct wire_cred_info ci;
	int r = wire_dec_cred_info(p, len, &ci, why, whylen);

	check(r, why, &ci, sizeof(ci));
	if (r == 0) {
		if ((ci.cert_der == NULL) != (ci.cert_len == 0) || ci.cert_len > WIRE_MAX_CERT ||
		    (ci.chain_pem != NULL &&
		     (ci.chain_pem[0] == '\0' || strlen(ci.chain_pem) > WIRE_MAX_CHAIN)))
			abort();
		same(b, wire_enc_cred_info(b, &ci), p, len);
		wire_cred_info_clear(&ci);
	}
}

static void list(const uint8_t *p, size_t len, struct wire_buf *b, char *why, size_t whylen)
{
	struct wire_list l;
	char **ids;
	int r = wire_dec_list(p, len, &l, why, whylen);

	check(r, why, &l, sizeof(l));
	if (r != 0)
		return;
	if (l.n > WIRE_MAX_IDS || (l.n > 0) != (l.ids != NULL))
		abort();
	if ((ids = calloc(l.n + 1, sizeof(*ids))) == NULL)
		abort();
	for (size_t i = 0; i < l.n; i++)
		ids[i] = l.ids[i];
	same(b, wire_enc_list(b, l.more, ids, l.n), p, len);
	free(ids);
	wire_list_clear(&l);
}

static void tsa_query(const uint8_t *p, size_t len, struct wire_buf *b, char *why, size_t whylen)
{
	const uint8_t *q = NULL;
	size_t n = 0;
	unsigned w;
	int r = wire_dec_tsa_query(p, len, &w, &q, &n, why, whylen);

	if (r == 0) {
		if (n < 1 || n > WIRE_MAX_TSA_QUERY || q < p || q + n > p + len || w < 1 ||
		    w > WIRE_MAX_TSA_WAIT_MS)
			abort();
		same(b, wire_enc_tsa_query(b, w, q, n), p, len);
	} else if (r != -1 || why[0] == '\0' || q != NULL || n != 0) {
		abort();
	}
}

static void tsa_reply(const uint8_t *p, size_t len, struct wire_buf *b, char *why, size_t whylen)
{
	struct wire_tsa_reply t;
	int r = wire_dec_tsa_reply(p, len, &t, why, whylen);

	check(r, why, &t, sizeof(t));
	if (r != 0)
		return;
	if (wire_tsa_outcome_name(t.outcome) == NULL || t.len > WIRE_MAX_TSA_REPLY ||
	    (t.outcome == WIRE_TSA_OK) != (t.len > 0) || (t.len > 0 && t.body + t.len > p + len))
		abort();
	same(b, wire_enc_tsa_reply(b, &t), p, len);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct wire_buf b;
	char why[160] = "";
	const uint8_t *p;
	size_t len;
	int which, req;

	if (size < 1)
		return 0;
	which = data[0] % D_COUNT;
	p = data + 1;
	len = size - 1;
	/* Requests reach a decoder only under WIRE_MAX_REQ, answers under WIRE_MAX_RESP. */
	req = which == D_SIGN || which == D_CRED_REQ || which == D_LIST_REQ || which == D_RECORD ||
	      which == D_TSA_REPLY;
	if (len > (req ? WIRE_MAX_REQ : WIRE_MAX_RESP))
		return 0;
	wire_buf_init(&b, req ? WIRE_MAX_REQ : WIRE_MAX_RESP);
	switch (which) {
	case D_SIGN:
		sign(p, len, &b, why, sizeof(why));
		break;
	case D_CRED_REQ: {
		char cred[CRED_MAX_ID + 1];
		int r = wire_dec_cred_info_req(p, len, cred, why, sizeof(why));

		check(r, why, cred, sizeof(cred));
		if (r == 0)
			same(&b, wire_enc_cred_info_req(&b, cred), p, len);
		break;
	}
	case D_LIST_REQ:
		list_req(p, len, &b, why, sizeof(why));
		break;
	case D_RECORD:
		record(p, len, &b, why, sizeof(why));
		break;
	case D_ERROR:
		error_answer(p, len, &b, why, sizeof(why));
		break;
	case D_SIGN_RESULT:
		sign_result(p, len, &b, why, sizeof(why));
		break;
	case D_CRED_INFO:
		cred_info(p, len, &b, why, sizeof(why));
		break;
	case D_LIST:
		list(p, len, &b, why, sizeof(why));
		break;
	case D_TSA_QUERY:
		tsa_query(p, len, &b, why, sizeof(why));
		break;
	case D_TSA_REPLY:
		tsa_reply(p, len, &b, why, sizeof(why));
		break;
	default: {
		struct wire_status st;
		int r = wire_dec_status(p, len, &st, why, sizeof(why));

		check(r, why, &st, sizeof(st));
		if (r == 0)
			same(&b, wire_enc_status(&b, &st), p, len);
		break;
	}
	}
	wire_buf_free(&b);
	return 0;
}
