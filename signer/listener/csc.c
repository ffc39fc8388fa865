/* CSC API v2: JSON in, JSON out. Every field is checked for type, length and range here; the
 * service sees only decoded, bounded values. */
#include "signer/listener/csc.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/asn1.h>
#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "signer/wire/wire.h"

#define CSC_MAX_STR 512        /* longest plain string field */
#define CSC_MAX_PSS_PARAMS 256 /* base64 of DER RSASSA-PSS-params */
#define CSC_MAX_RESULTS 1000

_Static_assert(CSC_MAX_BODY == CFG_DEFAULT_BODY_SIZE, "limits.body_size default is CSC_MAX_BODY");
_Static_assert(CFG_MAX_HASHES == WIRE_MAX_HASHES, "limits.hashes may lower WIRE_MAX_HASHES only");

/* Whether the arrays and objects of a JSON text nest deeper than max. Brackets are counted
 * outside strings only (a backslash escapes the next byte, as in jansson's lexer), and the scan
 * stops at the first level beyond max. jansson 2.14 has no depth option (only its fixed 2048),
 * so the configured cap is checked on the bytes before anything is parsed or allocated. */
static int json_too_deep(const char *text, size_t len, size_t max)
{
	size_t depth = 0;
	int in_str = 0;

	for (size_t i = 0; i < len; i++) {
		char ch = text[i];

		if (in_str) {
			if (ch == '\\')
				i++;
			else if (ch == '"')
				in_str = 0;
		} else if (ch == '"') {
			in_str = 1;
		} else if (ch == '[' || ch == '{') {
			if (++depth > max)
				return 1;
		} else if ((ch == ']' || ch == '}') && depth > 0) {
			depth--;
		}
	}
	return 0;
}

/* A 400 invalid_request whose reason is the CSC code itself. */
__attribute__((format(printf, 2, 3))) static int bad(struct refusal *f, const char *fmt, ...)
{
	va_list ap;

	f->reason = R_INVALID_REQUEST;
	va_start(ap, fmt);
	vsnprintf(f->desc, sizeof(f->desc), fmt, ap);
	va_end(ap);
	return -1;
}

/* The object's members must all be among allowed (NULL-terminated). */
static int only_keys(json_t *o, const char *const *allowed, struct refusal *f)
{
	const char *k;
	json_t *v;

	json_object_foreach(o, k, v)
	{
		size_t i;

		for (i = 0; allowed[i] != NULL; i++)
			if (strcmp(k, allowed[i]) == 0)
				break;
		if (allowed[i] == NULL)
			return refuse(f, R_INVALID_REQUEST, "Unknown parameter %.64s", k);
	}
	return 0;
}

/* A string member: required or optional (*out NULL when absent), 1..max bytes, no NUL. */
static int get_str(json_t *o, const char *key, int required, size_t max, const char **out,
                   struct refusal *f)
{
	json_t *v = json_object_get(o, key);
	size_t len;

	*out = NULL;
	if (v == NULL) {
		if (required)
			return bad(f, "Missing (or invalid type) string parameter %s", key);
		return 0;
	}
	if (!json_is_string(v))
		return bad(f, "Missing (or invalid type) string parameter %s", key);
	len = json_string_length(v);
	if (len == 0 || len > max || strlen(json_string_value(v)) != len)
		return bad(f, "Invalid parameter %s", key);
	*out = json_string_value(v);
	return 0;
}

/* Standard base64 (padded) into out, at most cap bytes; -1 if malformed or too long. */
static int b64_decode(const char *s, uint8_t *out, size_t cap, size_t *outlen)
{
	size_t slen = strlen(s), pad = 0;
	int n;

	if (slen == 0 || slen % 4 != 0 || slen / 4 * 3 > cap)
		return -1;
	pad = (s[slen - 1] == '=') + (s[slen - 2] == '=');
	/* EVP_DecodeBlock takes '=' anywhere and skips whitespace: only the standard alphabet,
	 * with padding at the very end, is a digest. */
	if (strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/") !=
	    slen - pad)
		return -1;
	n = EVP_DecodeBlock(out, (const unsigned char *)s, (int)slen);
	if (n < 0 || (size_t)n < pad)
		return -1;
	*outlen = (size_t)n - pad;
	return 0;
}

/* Standard base64 of exactly want (<= WIRE_MAX_DIGEST) bytes into out. */
static int b64_exact(const char *s, uint8_t *out, size_t want)
{
	uint8_t buf[WIRE_MAX_DIGEST + 3];
	size_t n;

	if (b64_decode(s, buf, sizeof(buf), &n) != 0 || n != want)
		return -1;
	memcpy(out, buf, want);
	return 0;
}

/* signAlgo, hashAlgorithmOID, signAlgoParams -> family, hash, PSS salt. */
static int decode_algs(json_t *root, struct sign_req *req, struct refusal *f)
{
	const char *salg, *halg, *params;
	enum alg_hash h1 = HASH_NONE, h2 = HASH_NONE;

	if (get_str(root, "signAlgo", 1, 64, &salg, f) != 0 ||
	    get_str(root, "hashAlgorithmOID", 0, 64, &halg, f) != 0 ||
	    get_str(root, "signAlgoParams", 0, CSC_MAX_PSS_PARAMS, &params, f) != 0)
		return -1;
	if (alg_sign_lookup(salg, &req->fam, &h1) != 0)
		return refuse(f, R_ALGORITHM_NOT_SUPPORTED, "Invalid parameter signAlgo");
	if (halg != NULL && (h2 = alg_hash_lookup(halg)) == HASH_NONE)
		return refuse(f, R_ALGORITHM_NOT_SUPPORTED, "Invalid parameter hashAlgorithmOID");
	if (h1 != HASH_NONE && h2 != HASH_NONE && h1 != h2)
		return bad(f, "Invalid parameter %s: does not match signAlgo", "hashAlgorithmOID");
	req->hash = h1 != HASH_NONE ? h1 : h2;
	if (req->hash == HASH_NONE)
		return bad(f, "Missing (or invalid type) string parameter %s", "hashAlgorithmOID");
	req->pss_salt = alg_hash_len(req->hash);
	if (params != NULL && req->fam != ALG_RSA_PSS)
		return bad(f, "Invalid parameter %s: only for RSASSA-PSS", "signAlgoParams");
	if (params != NULL) {
		/* DER RSASSA-PSS-params: the hash and MGF1 hash must be the request's hash, the
		 * trailer 1 (OpenSSL's decoder does the ASN.1). */
		uint8_t der[CSC_MAX_PSS_PARAMS];
		const unsigned char *pp = der;
		RSA_PSS_PARAMS *pss = NULL;
		X509_ALGOR *mgfhash = NULL;
		size_t n = 0;
		int ok = 0;
		long salt = -1;

		if (b64_decode(params, der, sizeof(der), &n) == 0 && n > 0)
			pss = d2i_RSA_PSS_PARAMS(NULL, &pp, (long)n);
		if (pss != NULL && pp == der + n && pss->hashAlgorithm != NULL &&
		    pss->maskGenAlgorithm != NULL &&
		    OBJ_obj2nid(pss->hashAlgorithm->algorithm) == alg_hash_nid(req->hash) &&
		    OBJ_obj2nid(pss->maskGenAlgorithm->algorithm) == NID_mgf1 &&
		    (pss->trailerField == NULL || ASN1_INTEGER_get(pss->trailerField) == 1)) {
			mgfhash = ASN1_TYPE_unpack_sequence(ASN1_ITEM_rptr(X509_ALGOR),
			                                    pss->maskGenAlgorithm->parameter);
			salt = pss->saltLength != NULL ? ASN1_INTEGER_get(pss->saltLength) : 20;
			ok = mgfhash != NULL &&
			     OBJ_obj2nid(mgfhash->algorithm) == alg_hash_nid(req->hash) &&
			     salt >= 0 && salt <= 64;
		}
		X509_ALGOR_free(mgfhash);
		RSA_PSS_PARAMS_free(pss);
		if (!ok)
			return bad(f, "Invalid parameter %s", "signAlgoParams");
		req->pss_salt = (size_t)salt;
	}
	return 0;
}

static int decode_hash_list(json_t *arr, const char *field, struct sign_req *req, struct refusal *f)
{
	size_t i, dlen = alg_hash_len(req->hash);
	json_t *v;

	if (!json_is_array(arr) || json_array_size(arr) == 0)
		return bad(f, "Missing (or invalid type) array parameter %s", field);
	if (req->nhashes + json_array_size(arr) > WIRE_MAX_HASHES)
		return refuse(f, R_TOO_MANY_HASHES, "Invalid parameter %s: more than %d hashes",
		              field, WIRE_MAX_HASHES);
	json_array_foreach(arr, i, v)
	{
		if (!json_is_string(v) ||
		    b64_exact(json_string_value(v), req->hashes[req->nhashes], dlen) != 0)
			return refuse(f, R_INVALID_DIGEST,
			              "Invalid parameter %s: item %zu is not a base64 %s digest",
			              field, i, alg_hash_name(req->hash));
		req->nhashes++;
	}
	return 0;
}

static int decode_common(json_t *root, struct sign_req *req, struct refusal *f)
{
	const char *cred;

	if (get_str(root, "credentialID", 1, CRED_MAX_ID, &cred, f) != 0)
		return -1;
	if (!cred_valid_id(cred))
		return refuse(f, R_UNKNOWN_CREDENTIAL, "Invalid parameter credentialID");
	memcpy(req->cred, cred, strlen(cred) + 1);
	if (get_str(root, "SAD", 0, WIRE_MAX_SAD, &req->sad, f) != 0 ||
	    get_str(root, "purpose", 0, 64, &req->purpose, f) != 0)
		return -1;
	return decode_algs(root, req, f);
}

int csc_decode_sign_hash(json_t *root, struct sign_req *req, struct refusal *f)
{
	static const char *const keys[] = {
	    "credentialID",   "SAD",     "hashes",     "hashAlgorithmOID", "signAlgo",
	    "signAlgoParams", "purpose", "clientData", "operationMode",    NULL};
	const char *mode;

	memset(req, 0, sizeof(*req));
	if (!json_is_object(root))
		return bad(f, "%s", "The request body must be a JSON object");
	if (only_keys(root, keys, f) != 0 || decode_common(root, req, f) != 0)
		return -1;
	if (get_str(root, "operationMode", 0, 8, &mode, f) != 0)
		return -1;
	if (mode != NULL && strcmp(mode, "S") != 0)
		return bad(f, "Invalid parameter %s: only S is supported", "operationMode");
	if (json_object_get(root, "clientData") != NULL &&
	    (!json_is_string(json_object_get(root, "clientData")) ||
	     json_string_length(json_object_get(root, "clientData")) > CSC_MAX_STR))
		return bad(f, "Invalid parameter %s", "clientData");
	return decode_hash_list(json_object_get(root, "hashes"), "hashes", req, f);
}

int csc_decode_sign_doc(json_t *root, struct sign_req *req, struct refusal *f)
{
	static const char *const keys[] = {"credentialID",      "SAD",
	                                   "documentDigests",   "signAlgo",
	                                   "signAlgoParams",    "signature_format",
	                                   "conformance_level", "signed_envelope_property",
	                                   "purpose",           "clientData",
	                                   "operationMode",     NULL};
	static const char *const dkeys[] = {"hashes", "hashAlgorithmOID", NULL};
	const char *fmt, *level, *env, *mode;
	json_t *docs, *d;
	size_t i;

	memset(req, 0, sizeof(*req));
	req->cms = 1;
	if (!json_is_object(root))
		return bad(f, "%s", "The request body must be a JSON object");
	if (only_keys(root, keys, f) != 0)
		return -1;
	docs = json_object_get(root, "documentDigests");
	if (!json_is_array(docs) || json_array_size(docs) == 0 ||
	    json_array_size(docs) > WIRE_MAX_HASHES)
		return bad(f, "Missing (or invalid type) array parameter %s", "documentDigests");
	/* Every entry names its hash algorithm; iamsign signs one algorithm per request, so
	 * they must agree. The first entry's becomes the request's hashAlgorithmOID. */
	json_array_foreach(docs, i, d)
	{
		json_t *h = json_object_get(d, "hashAlgorithmOID");

		if (!json_is_object(d) || only_keys(d, dkeys, f) != 0 || !json_is_string(h))
			return bad(f, "Invalid parameter %s", "documentDigests");
		if (i == 0 && json_object_get(root, "hashAlgorithmOID") == NULL &&
		    json_object_set(root, "hashAlgorithmOID", h) != 0)
			return refuse(f, R_INTERNAL_ERROR, "out of memory");
		if (!json_equal(h, json_object_get(root, "hashAlgorithmOID")))
			return bad(f, "Invalid parameter %s: one hashAlgorithmOID per request",
			           "documentDigests");
	}
	if (decode_common(root, req, f) != 0)
		return -1;
	json_array_foreach(docs, i, d) if (decode_hash_list(json_object_get(d, "hashes"),
	                                                    "documentDigests.hashes", req,
	                                                    f) != 0) return -1;
	if (get_str(root, "signature_format", 1, 8, &fmt, f) != 0 ||
	    get_str(root, "conformance_level", 0, 16, &level, f) != 0 ||
	    get_str(root, "signed_envelope_property", 0, 16, &env, f) != 0 ||
	    get_str(root, "operationMode", 0, 8, &mode, f) != 0)
		return -1;
	/* C: CAdES; P: PAdES, the same CMS without signing-time, for a PDF's byte range. */
	if (strcmp(fmt, "C") != 0 && strcmp(fmt, "P") != 0)
		return bad(f, "Invalid parameter %s: only C (CAdES) and P (PAdES) are supported",
		           "signature_format");
	req->pades = fmt[0] == 'P';
	if (level != NULL && strcasecmp(level, "Ades-B-B") != 0 &&
	    strcasecmp(level, "Ades-B") != 0 && strcasecmp(level, "Ades-B-T") != 0 &&
	    strcasecmp(level, "Ades-T") != 0)
		return bad(f, "Invalid parameter %s: only Ades-B-B and Ades-B-T are supported",
		           "conformance_level");
	req->stamp = level != NULL &&
	             (strcasecmp(level, "Ades-B-T") == 0 || strcasecmp(level, "Ades-T") == 0);
	if (env != NULL && strcmp(env, "Detached") != 0)
		return bad(f, "Invalid parameter %s: only Detached is supported",
		           "signed_envelope_property");
	if (mode != NULL && strcmp(mode, "S") != 0)
		return bad(f, "Invalid parameter %s: only S is supported", "operationMode");
	return 0;
}

/* Each reason's HTTP status and CSC error code: the one place where the core's reasons (and
 * the listener's own) become HTTP. */
static const struct {
	int status;
	const char *error;
} csc_codes[R_COUNT] = {
    [R_INVALID_REQUEST] = {400, "invalid_request"},
    [R_MALFORMED_JSON] = {400, "invalid_request"},
    [R_JSON_TOO_DEEP] = {400, "invalid_request"},
    [R_BAD_CONTENT_LENGTH] = {400, "invalid_request"},
    [R_BODY_TOO_LARGE] = {413, "invalid_request"},
    [R_HEADER_TOO_LARGE] = {431, "invalid_request"},
    [R_UNKNOWN_METHOD] = {404, "invalid_request"},
    [R_METHOD_NOT_ALLOWED] = {405, "invalid_request"},
    [R_TOO_MANY_CONNECTIONS] = {503, "temporarily_unavailable"},
    [R_INVALID_DIGEST] = {400, "invalid_request"},
    [R_UNKNOWN_CREDENTIAL] = {400, "invalid_request"},
    [R_ALGORITHM_NOT_SUPPORTED] = {400, "invalid_request"},
    [R_ALGORITHM_KEY_MISMATCH] = {400, "invalid_request"},
    [R_TOO_MANY_HASHES] = {400, "invalid_request"},
    [R_PURPOSE_REQUIRED] = {400, "invalid_request"},
    [R_UNKNOWN_CALLER] = {403, "access_denied"},
    [R_PURPOSE_NOT_ALLOWED] = {403, "access_denied"},
    [R_CLASS_NOT_ALLOWED] = {403, "access_denied"},
    [R_ALGORITHM_NOT_ALLOWED] = {403, "access_denied"},
    [R_HASH_ALGORITHM_NOT_ALLOWED] = {403, "access_denied"},
    [R_CREDENTIAL_SUSPENDED] = {403, "access_denied"},
    [R_CREDENTIAL_REVOKED] = {403, "access_denied"},
    [R_RATE_LIMITED] = {429, "access_denied"},
    [R_QUOTA_EXCEEDED] = {429, "access_denied"},
    [R_CERT_MISSING] = {403, "access_denied"},
    [R_CERT_NOT_YET_VALID] = {403, "access_denied"},
    [R_CERT_EXPIRED] = {403, "access_denied"},
    [R_CERT_EXPIRING] = {403, "access_denied"},
    [R_CERT_UNTRUSTED] = {403, "access_denied"},
    [R_CERT_REVOKED] = {403, "access_denied"},
    [R_CRL_STALE] = {403, "access_denied"},
    [R_CERT_NO_NON_REPUDIATION] = {403, "access_denied"},
    [R_SAD_REQUIRED] = {403, "access_denied"},
    [R_SAD_INVALID] = {403, "access_denied"},
    [R_SAD_EXPIRED] = {403, "access_denied"},
    [R_SAD_WRONG_CREDENTIAL] = {403, "access_denied"},
    [R_SAD_WRONG_SUBJECT] = {403, "access_denied"},
    [R_SAD_WRONG_PURPOSE] = {403, "access_denied"},
    [R_HASH_NOT_AUTHORISED] = {403, "access_denied"},
    [R_SAD_REPLAYED] = {403, "access_denied"},
    [R_TOKEN_UNAVAILABLE] = {503, "temporarily_unavailable"},
    [R_TOKEN_BUSY] = {503, "temporarily_unavailable"},
    [R_LEDGER_UNAVAILABLE] = {503, "temporarily_unavailable"},
    [R_CORE_UNAVAILABLE] = {503, "temporarily_unavailable"},
    [R_KEY_NOT_FOUND] = {500, "server_error"},
    [R_REGISTRY_UNAVAILABLE] = {500, "server_error"},
    [R_INTERNAL_ERROR] = {500, "server_error"},
    [R_TSA_UNAVAILABLE] = {503, "temporarily_unavailable"},
    [R_TSA_BAD_TOKEN] = {502, "server_error"},
    [R_KEY_UNUSABLE] = {500, "server_error"},
};

int csc_status(enum reason r, const char **error)
{
	if (reason_name(r) == NULL || csc_codes[r].status == 0)
		r = R_INTERNAL_ERROR;
	if (error != NULL)
		*error = csc_codes[r].error;
	return csc_codes[r].status;
}

char *csc_error_body(const struct refusal *f)
{
	char desc[sizeof(f->desc)];
	const char *error, *reason = reason_name(f->reason);
	json_t *o;
	char *s;

	csc_status(f->reason, &error);
	if (reason == NULL)
		reason = reason_name(R_INTERNAL_ERROR);
	o = json_pack("{s:s, s:s, s:s}", "error", error, "error_description", f->desc, "reason",
	              reason);
	if (o == NULL) {
		/* The description can quote the request (a parameter's name) cut at a byte count,
		 * which may split a UTF-8 sequence, and jansson refuses a string that is not
		 * UTF-8. Send it with every non-ASCII byte as '?' rather than no body at all. */
		snprintf(desc, sizeof(desc), "%s", f->desc);
		for (size_t i = 0; desc[i] != '\0'; i++)
			if ((unsigned char)desc[i] >= 0x80)
				desc[i] = '?';
		o = json_pack("{s:s, s:s, s:s}", "error", error, "error_description", desc,
		              "reason", reason);
	}
	s = o != NULL ? json_dumps(o, JSON_COMPACT) : NULL;
	json_decref(o);
	return s;
}

static json_t *b64_value(const uint8_t *data, size_t len)
{
	size_t outlen = 4 * ((len + 2) / 3) + 1;
	char *buf = malloc(outlen);
	json_t *v = NULL;

	if (buf == NULL)
		return NULL;
	EVP_EncodeBlock((unsigned char *)buf, data, (int)len);
	v = json_string(buf);
	free(buf);
	return v;
}

static json_t *handle_info(int tsa)
{
	json_t *algos = json_array(), *methods, *levels, *out;

	for (size_t i = 0; alg_sign_oids[i] != NULL; i++)
		json_array_append_new(algos, json_string(alg_sign_oids[i]));
	methods = json_pack("[s,s,s,s,s]", "info", "credentials/list", "credentials/info",
	                    "signatures/signHash", "signatures/signDoc");
	/* B-T only with a TSA to ask. */
	levels = tsa ? json_pack("[s,s]", "Ades-B-B", "Ades-B-T") : json_pack("[s]", "Ades-B-B");
	out = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:o, s:{s:o}, s:{s:[s,s], s:[[s],[s]]}}",
	                "specs", "2.0.0.0", "name", "iamsign", "logo", "", "region", "HK", "lang",
	                "en-US", "description", "iamsign: hardware-backed signing for iAM Smart+",
	                "methods", methods, "signAlgorithms", "algos", algos, "signature_formats",
	                "formats", "C", "P", "envelope_properties", "Detached", "Detached");
	if (out != NULL &&
	    (levels == NULL || json_object_set_new(out, "conformance_levels", levels) != 0)) {
		json_decref(out);
		return NULL;
	}
	return out;
}

/* Whether the core has answered a request (and so recorded the answer, svc_conclude). */
enum core_reach {
	CORE_NOT_ASKED = 0, /* answered here alone: the core must record it (record) */
	CORE_ANSWERED,      /* an answer the protocol allows came back: the core has recorded it */
	CORE_UNREACHABLE,   /* no answer: nothing was done, and nothing can be recorded */
};

/* One request on its way through the listener: where the core is, and the refusal so far. */
struct csc_req {
	struct core_link *link;
	const struct config_limits *lim;
	int fd;
	struct refusal f;
	enum core_reach core;
	size_t tsa_queries; /* time-stamp queries the core may make in this request (B-T) */
};

/* Ask the core: send b as type and expect want back. 0 with the answer's payload (for the
 * caller to free), or -1 with q->f set. q->core says what the core did. */
static int ask_core(struct csc_req *q, uint32_t type, struct wire_buf *b, uint32_t want,
                    uint8_t **p, size_t *n)
{
	uint32_t rtype;
	char why[160];

	*p = NULL;
	*n = 0;
	if (b->oom)
		return refuse(&q->f, R_INTERNAL_ERROR,
		              "the request cannot be encoded for the signing core");
	if (core_link_call_tsa(q->link, type, b, q->fd, q->tsa_queries, &rtype, p, n, &q->f) != 0) {
		q->core = CORE_UNREACHABLE;
		return -1;
	}
	if (rtype == want) {
		q->core = CORE_ANSWERED;
		return 0;
	}
	if (rtype == WIRE_RESP_ERROR && wire_dec_error(*p, *n, &q->f, why, sizeof(why)) == 0) {
		q->core = CORE_ANSWERED;
	} else {
		fprintf(stderr, "iamsignd: listener: unexpected answer %u from the core\n",
		        (unsigned)rtype);
		refuse(&q->f, R_INTERNAL_ERROR, "unexpected answer from the signing core");
	}
	free(*p);
	*p = NULL;
	return -1;
}

static json_t *handle_list(struct csc_req *q, json_t *root)
{
	static const char *const keys[] = {"userID", "maxResults", "pageToken", "clientData", NULL};
	struct wire_list l = {0};
	struct wire_buf b;
	const char *user, *page;
	uint8_t *p = NULL;
	size_t n = 0, max = 100;
	json_t *arr, *out = NULL, *mr;
	char why[160];

	if (only_keys(root, keys, &q->f) != 0 ||
	    get_str(root, "userID", 0, CRED_MAX_USER, &user, &q->f) != 0 ||
	    get_str(root, "pageToken", 0, CRED_MAX_ID, &page, &q->f) != 0)
		return NULL;
	if ((mr = json_object_get(root, "maxResults")) != NULL) {
		if (!json_is_integer(mr) || json_integer_value(mr) < 1 ||
		    json_integer_value(mr) > CSC_MAX_RESULTS) {
			bad(&q->f, "Invalid parameter %s", "maxResults");
			return NULL;
		}
		max = (size_t)json_integer_value(mr);
	}
	/* What the core would refuse anyway is refused here with the CSC error. */
	if (user != NULL && !cred_valid_user(user)) {
		bad(&q->f, "Invalid parameter %s", "userID");
		return NULL;
	}
	if (page != NULL && !cred_valid_id(page)) {
		bad(&q->f, "Invalid parameter %s", "pageToken");
		return NULL;
	}
	wire_buf_init(&b, WIRE_MAX_REQ);
	wire_enc_list_req(&b, user, page, (unsigned)max);
	if (ask_core(q, WIRE_REQ_LIST, &b, WIRE_RESP_LIST, &p, &n) != 0)
		goto out;
	if (wire_dec_list(p, n, &l, why, sizeof(why)) != 0) {
		refuse(&q->f, R_INTERNAL_ERROR, "malformed answer from the signing core");
		goto out;
	}
	arr = json_array();
	for (size_t i = 0; i < l.n; i++)
		json_array_append_new(arr, json_string(l.ids[i]));
	out = json_pack("{s:o}", "credentialIDs", arr);
	if (out != NULL && l.more && l.n > 0)
		json_object_set(out, "nextPageToken", json_array_get(arr, l.n - 1));
out:
	wire_list_clear(&l);
	wire_buf_free(&b);
	free(p);
	return out;
}

static json_t *asn1_time_json(const ASN1_TIME *t)
{
	ASN1_GENERALIZEDTIME *g = ASN1_TIME_to_generalizedtime(t, NULL);
	json_t *v;

	if (g == NULL)
		return NULL;
	v = json_stringn((const char *)ASN1_STRING_get0_data(g), (size_t)ASN1_STRING_length(g));
	ASN1_GENERALIZEDTIME_free(g);
	return v;
}

static json_t *name_json(const X509_NAME *n)
{
	char *s = NULL;
	BIO *b = BIO_new(BIO_s_mem());
	json_t *v = NULL;
	long len;

	if (b == NULL)
		return NULL;
	if (X509_NAME_print_ex(b, n, 0, XN_FLAG_RFC2253) >= 0 &&
	    (len = BIO_get_mem_data(b, &s)) >= 0)
		v = json_stringn(s, (size_t)len);
	BIO_free(b);
	return v;
}

static json_t *cert_json(const struct wire_cred_info *ci, const char *mode, int info)
{
	const unsigned char *pp = ci->cert_der;
	X509 *x = ci->cert_der != NULL ? d2i_X509(NULL, &pp, (long)ci->cert_len) : NULL;
	json_t *c = json_object(), *certs;
	BIGNUM *bn;
	char *hex;
	const char *status = "valid";

	if (x == NULL) {
		json_object_set_new(c, "status", json_string("missing"));
		return c;
	}
	if (X509_cmp_time(X509_get0_notAfter(x), NULL) < 0)
		status = "expired";
	else if (X509_cmp_time(X509_get0_notBefore(x), NULL) > 0)
		status = "not_yet_valid";
	json_object_set_new(c, "status", json_string(status));
	if (strcmp(mode, "none") != 0) {
		unsigned char *der;
		int len;

		certs = json_array();
		json_array_append_new(certs, b64_value(ci->cert_der, ci->cert_len));
		if (strcmp(mode, "chain") == 0 && ci->chain_pem != NULL) {
			BIO *b = BIO_new_mem_buf(ci->chain_pem, -1);
			X509 *y;

			while (b != NULL && (y = PEM_read_bio_X509(b, NULL, NULL, NULL)) != NULL) {
				der = NULL;
				if ((len = i2d_X509(y, &der)) > 0)
					json_array_append_new(certs, b64_value(der, (size_t)len));
				OPENSSL_free(der);
				X509_free(y);
			}
			BIO_free(b);
		}
		json_object_set_new(c, "certificates", certs);
	}
	if (info) {
		json_object_set_new(c, "issuerDN", name_json(X509_get_issuer_name(x)));
		json_object_set_new(c, "subjectDN", name_json(X509_get_subject_name(x)));
		bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL);
		hex = bn != NULL ? BN_bn2hex(bn) : NULL;
		if (hex != NULL)
			json_object_set_new(c, "serialNumber", json_string(hex));
		OPENSSL_free(hex);
		BN_free(bn);
		json_object_set_new(c, "validFrom", asn1_time_json(X509_get0_notBefore(x)));
		json_object_set_new(c, "validTo", asn1_time_json(X509_get0_notAfter(x)));
	}
	X509_free(x);
	return c;
}

static json_t *handle_cred_info(struct csc_req *q, json_t *root)
{
	static const char *const keys[] = {"credentialID", "certificates", "certInfo", "authInfo",
	                                   "lang",         "clientData",   NULL};
	struct wire_cred_info ci = {0};
	struct wire_buf b;
	const char *id, *mode, *status;
	uint8_t *p = NULL;
	size_t n = 0;
	json_t *key, *ci_v, *out = NULL;
	char why[160];
	int info = 0;

	if (only_keys(root, keys, &q->f) != 0 ||
	    get_str(root, "credentialID", 1, CRED_MAX_ID, &id, &q->f) ||
	    get_str(root, "certificates", 0, 8, &mode, &q->f) != 0)
		return NULL;
	if (mode == NULL)
		mode = "single";
	if (strcmp(mode, "none") != 0 && strcmp(mode, "single") != 0 &&
	    strcmp(mode, "chain") != 0) {
		bad(&q->f, "Invalid parameter %s", "certificates");
		return NULL;
	}
	if ((ci_v = json_object_get(root, "certInfo")) != NULL) {
		if (!json_is_boolean(ci_v)) {
			bad(&q->f, "Invalid parameter %s", "certInfo");
			return NULL;
		}
		info = json_is_true(ci_v);
	}
	if (!cred_valid_id(id)) {
		refuse(&q->f, R_UNKNOWN_CREDENTIAL, "Invalid parameter credentialID");
		return NULL;
	}
	wire_buf_init(&b, WIRE_MAX_REQ);
	wire_enc_cred_info_req(&b, id);
	if (ask_core(q, WIRE_REQ_CRED_INFO, &b, WIRE_RESP_CRED_INFO, &p, &n) != 0)
		goto out;
	if (wire_dec_cred_info(p, n, &ci, why, sizeof(why)) != 0) {
		refuse(&q->f, R_INTERNAL_ERROR, "malformed answer from the signing core");
		goto out;
	}
	status = ci.status == WIRE_CRED_ACTIVE ? "enabled" : "disabled";
	if (ci.key_type == WIRE_KEY_EC)
		key = json_pack("{s:s, s:[s], s:i, s:s}", "status", status, "algo",
		                "1.2.840.10045.2.1", "len", (json_int_t)ci.bits, "curve",
		                ci.curve_nid == NID_secp384r1 ? "1.3.132.0.34"
		                                              : "1.2.840.10045.3.1.7");
	else
		key = json_pack("{s:s, s:[s,s], s:i}", "status", status, "algo",
		                "1.2.840.113549.1.1.1", "1.2.840.113549.1.1.10", "len",
		                (json_int_t)ci.bits);
	out = json_pack("{s:o, s:o, s:{s:s}, s:s, s:i, s:s, s:s}", "key", key, "cert",
	                cert_json(&ci, mode, info), "auth", "mode", "explicit", "SCAL", "2",
	                "multisign", (json_int_t)1, "status", wire_cred_status_name(ci.status),
	                "owner", ci.owner);
out:
	wire_cred_info_clear(&ci);
	wire_buf_free(&b);
	free(p);
	return out;
}

static json_t *handle_sign(struct csc_req *q, json_t *root, enum wire_method m)
{
	int doc = m == WM_SIGN_DOC;
	struct sign_req *req;
	struct sign_result res = {0};
	struct wire_buf b;
	uint8_t *p = NULL;
	size_t n = 0;
	json_t *arr, *out = NULL;
	char why[160];

	wire_buf_init(&b, WIRE_MAX_REQ);
	/* Large (64 hashes of 64 bytes): keep it off the worker's stack. */
	if ((req = malloc(sizeof(*req))) == NULL) {
		refuse(&q->f, R_INTERNAL_ERROR, "out of memory");
		return NULL;
	}
	if ((doc ? csc_decode_sign_doc(root, req, &q->f)
	         : csc_decode_sign_hash(root, req, &q->f)) != 0)
		goto out;
	/* The decoders hold a request to WIRE_MAX_HASHES; the configuration may lower that. */
	if (req->nhashes > q->lim->hashes) {
		refuse(&q->f, R_TOO_MANY_HASHES,
		       "Invalid parameter %s: more than %u hashes (limits.hashes)",
		       doc ? "documentDigests" : "hashes", q->lim->hashes);
		goto out;
	}
	wire_enc_sign(&b, m, req);
	q->tsa_queries = req->stamp ? req->nhashes : 0;
	if (ask_core(q, WIRE_REQ_SIGN, &b, WIRE_RESP_SIGN, &p, &n) != 0)
		goto out;
	if (wire_dec_sign_result(p, n, &res, why, sizeof(why)) != 0) {
		refuse(&q->f, R_INTERNAL_ERROR, "malformed answer from the signing core");
		goto out;
	}
	arr = json_array();
	for (size_t i = 0; i < res.n; i++)
		json_array_append_new(arr, b64_value(res.sig[i], res.len[i]));
	out = json_pack("{s:o}", doc ? "SignatureObject" : "signatures", arr);
out:
	sign_result_clear(&res);
	wire_buf_free(&b);
	free(p);
	OPENSSL_cleanse(req, sizeof(*req));
	free(req);
	return out;
}

/* An answer given here without the core (info, or a refusal of what could not be decoded):
 * the core records it. 0, or -1 with q->f set to why it could not be recorded. */
static int record(struct csc_req *q, enum wire_method m, const struct refusal *refusal)
{
	struct wire_buf b;
	uint8_t *p = NULL;
	size_t n = 0;
	int r;

	wire_buf_init(&b, WIRE_MAX_REQ);
	wire_enc_record(&b, m, refusal);
	r = ask_core(q, WIRE_REQ_RECORD, &b, WIRE_RESP_RECORD, &p, &n);
	wire_buf_free(&b);
	free(p);
	return r;
}

void csc_handle(struct core_link *link, const struct config_limits *lim, int conn_fd,
                const char *method, const char *body, size_t len, int *status, char **out)
{
	struct csc_req q = {.link = link, .lim = lim, .fd = conn_fd};
	enum wire_method m = wire_method_of(method);
	json_error_t jerr;
	json_t *root = NULL, *resp = NULL;

	*out = NULL;
	if (m == WM_INFO) {
		resp = handle_info(core_link_has_tsa(link));
		goto done;
	}
	if (m == WM_UNKNOWN) {
		refuse(&q.f, R_UNKNOWN_METHOD, "no such method");
		goto done;
	}
	if (len > lim->body_size) {
		refuse(&q.f, R_BODY_TOO_LARGE, "request body over %zu bytes", lim->body_size);
		goto done;
	}
	if (json_too_deep(body, len, lim->json_depth)) {
		refuse(&q.f, R_JSON_TOO_DEEP, "JSON nested deeper than %u levels", lim->json_depth);
		goto done;
	}
	/* jansson refuses duplicate keys (asked), \u0000 in strings (JSON_ALLOW_NUL not given),
	 * invalid UTF-8 and control characters in strings. */
	root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
	if (root == NULL) {
		refuse(&q.f, R_MALFORMED_JSON, "malformed JSON: %s (line %d, column %d)", jerr.text,
		       jerr.line, jerr.column);
		goto done;
	}
	if (!json_is_object(root)) {
		bad(&q.f, "%s", "The request body must be a JSON object");
		goto done;
	}
	if (m == WM_LIST)
		resp = handle_list(&q, root);
	else if (m == WM_CRED_INFO)
		resp = handle_cred_info(&q, root);
	else
		resp = handle_sign(&q, root, m);
done:
	if (resp == NULL && q.f.reason == R_NONE)
		refuse(&q.f, R_INTERNAL_ERROR, "internal error");
	/* The listener's half of "no answer leaves without its record": the core has recorded
	 * what it answered; what was answered here alone it records now, and if it cannot, the
	 * answer is its refusal instead. A core that cannot be reached did nothing and can
	 * record nothing: that answer goes out alone. */
	if (q.core == CORE_NOT_ASKED && record(&q, m, resp != NULL ? NULL : &q.f) != 0) {
		json_decref(resp);
		resp = NULL;
	}
	if (resp != NULL) {
		*status = 200;
		*out = json_dumps(resp, JSON_COMPACT);
	}
	if (*out == NULL) {
		if (q.f.reason == R_NONE)
			refuse(&q.f, R_INTERNAL_ERROR, "internal error");
		*status = csc_status(q.f.reason, NULL);
		*out = csc_error_body(&q.f);
	}
	json_decref(resp);
	json_decref(root);
}
