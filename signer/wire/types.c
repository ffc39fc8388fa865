/* The types both processes share: see types.h. */
#include "signer/wire/types.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <openssl/crypto.h>

int cred_valid_id(const char *s)
{
	size_t n;

	if (s == NULL)
		return 0;
	for (n = 0; s[n] != '\0'; n++) {
		unsigned char ch = (unsigned char)s[n];
		if (n >= CRED_MAX_ID)
			return 0;
		if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
		      (ch >= '0' && ch <= '9') || ch == '.' || ch == '_' || ch == '-'))
			return 0;
	}
	return n > 0;
}

int cred_valid_user(const char *s)
{
	size_t n;

	if (s == NULL)
		return 0;
	for (n = 0; s[n] != '\0'; n++) {
		unsigned char ch = (unsigned char)s[n];
		if (n >= CRED_MAX_USER)
			return 0;
		if (ch < 0x21 || ch > 0x7e)
			return 0;
	}
	return n > 0;
}

void sign_result_clear(struct sign_result *r)
{
	for (size_t i = 0; i < r->n; i++)
		OPENSSL_free(r->sig[i]);
	r->n = 0;
}

static const char *const reason_names[R_COUNT] = {
    [R_INVALID_REQUEST] = "invalid_request",
    [R_MALFORMED_JSON] = "malformed_json",
    [R_JSON_TOO_DEEP] = "json_too_deep",
    [R_BAD_CONTENT_LENGTH] = "bad_content_length",
    [R_BODY_TOO_LARGE] = "body_too_large",
    [R_HEADER_TOO_LARGE] = "header_too_large",
    [R_UNKNOWN_METHOD] = "unknown_method",
    [R_METHOD_NOT_ALLOWED] = "method_not_allowed",
    [R_TOO_MANY_CONNECTIONS] = "too_many_connections",
    [R_INVALID_DIGEST] = "invalid_digest",
    [R_UNKNOWN_CREDENTIAL] = "unknown_credential",
    [R_ALGORITHM_NOT_SUPPORTED] = "algorithm_not_supported",
    [R_ALGORITHM_KEY_MISMATCH] = "algorithm_key_mismatch",
    [R_TOO_MANY_HASHES] = "too_many_hashes",
    [R_PURPOSE_REQUIRED] = "purpose_required",
    [R_UNKNOWN_CALLER] = "unknown_caller",
    [R_PURPOSE_NOT_ALLOWED] = "purpose_not_allowed",
    [R_CLASS_NOT_ALLOWED] = "class_not_allowed",
    [R_ALGORITHM_NOT_ALLOWED] = "algorithm_not_allowed",
    [R_HASH_ALGORITHM_NOT_ALLOWED] = "hash_algorithm_not_allowed",
    [R_CREDENTIAL_SUSPENDED] = "credential_suspended",
    [R_CREDENTIAL_REVOKED] = "credential_revoked",
    [R_RATE_LIMITED] = "rate_limited",
    [R_QUOTA_EXCEEDED] = "quota_exceeded",
    [R_CERT_MISSING] = "cert_missing",
    [R_CERT_NOT_YET_VALID] = "cert_not_yet_valid",
    [R_CERT_EXPIRED] = "cert_expired",
    [R_CERT_EXPIRING] = "cert_expiring",
    [R_CERT_UNTRUSTED] = "cert_untrusted",
    [R_CERT_REVOKED] = "cert_revoked",
    [R_CRL_STALE] = "crl_stale",
    [R_CERT_NO_NON_REPUDIATION] = "cert_no_non_repudiation",
    [R_SAD_REQUIRED] = "sad_required",
    [R_SAD_INVALID] = "sad_invalid",
    [R_SAD_EXPIRED] = "sad_expired",
    [R_SAD_WRONG_CREDENTIAL] = "sad_wrong_credential",
    [R_SAD_WRONG_SUBJECT] = "sad_wrong_subject",
    [R_SAD_WRONG_PURPOSE] = "sad_wrong_purpose",
    [R_HASH_NOT_AUTHORISED] = "hash_not_authorised",
    [R_SAD_REPLAYED] = "sad_replayed",
    [R_TOKEN_UNAVAILABLE] = "token_unavailable",
    [R_TOKEN_BUSY] = "token_busy",
    [R_LEDGER_UNAVAILABLE] = "ledger_unavailable",
    [R_CORE_UNAVAILABLE] = "core_unavailable",
    [R_KEY_NOT_FOUND] = "key_not_found",
    [R_REGISTRY_UNAVAILABLE] = "registry_unavailable",
    [R_INTERNAL_ERROR] = "internal_error",
    [R_TSA_UNAVAILABLE] = "tsa_unavailable",
    [R_TSA_BAD_TOKEN] = "tsa_bad_token",
    [R_KEY_UNUSABLE] = "key_unusable",
};

const char *reason_name(enum reason r)
{
	if ((int)r <= R_NONE || (int)r >= R_COUNT)
		return NULL;
	return reason_names[r];
}

enum reason reason_lookup(const char *name)
{
	if (name == NULL)
		return R_NONE;
	for (int r = R_NONE + 1; r < R_COUNT; r++)
		if (reason_names[r] != NULL && strcmp(reason_names[r], name) == 0)
			return (enum reason)r;
	return R_NONE;
}

int refuse(struct refusal *f, enum reason r, const char *fmt, ...)
{
	va_list ap;

	f->reason = r;
	va_start(ap, fmt);
	vsnprintf(f->desc, sizeof(f->desc), fmt, ap);
	va_end(ap);
	return -1;
}
