/* Signing certificate checks against trust anchors and CRLs. See certcheck.h.
 *
 * The checker is immutable once loaded: cert_check() only reads it (the X509_STORE is shared
 * by every X509_STORE_CTX, which OpenSSL locks for its lookups), so any number of threads may
 * check at once while a reload builds the next checker. */
#include "policy/certcheck.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>

#define CC_MAX_ANCHORS_FILE (4 * 1024 * 1024) /* bytes of the trust anchors file */
#define CC_MAX_CRL_FILE (32 * 1024 * 1024)    /* bytes of one CRL file */
#define CC_MAX_ANCHORS 1024                   /* certificates in the anchors file */
#define CC_MAX_CRLS_PER_FILE 64               /* CRLs in one PEM file */

struct cert_checker {
	X509_STORE *store;         /* the anchors, read-only once loaded */
	STACK_OF(X509) * anchors;  /* the same certificates, for CRL signature checks */
	STACK_OF(X509_CRL) * crls; /* each verified with an anchor's key at load time */
};

const char *cert_reason(enum cert_result r)
{
	switch (r) {
	case CERT_OK:
		return "ok";
	case CERT_MISSING:
		return "cert_missing";
	case CERT_NOT_YET_VALID:
		return "cert_not_yet_valid";
	case CERT_EXPIRED:
		return "cert_expired";
	case CERT_VALIDITY_TOO_SHORT:
		return "cert_expiring";
	case CERT_UNTRUSTED:
		return "cert_untrusted";
	case CERT_REVOKED:
		return "cert_revoked";
	case CERT_CRL_STALE:
		return "crl_stale";
	case CERT_NO_NON_REPUDIATION:
		return "cert_no_non_repudiation";
	}
	return "cert_untrusted";
}

/* The first OpenSSL error, for messages; clears the queue. */
static const char *ssl_err(char *buf, size_t len)
{
	unsigned long e = ERR_peek_last_error();

	if (e == 0)
		snprintf(buf, len, "no detail");
	else
		ERR_error_string_n(e, buf, len);
	ERR_clear_error();
	return buf;
}

/* Read a whole regular file of at most max bytes. 0, or -1 with err naming the file. */
static int read_bounded(const char *path, size_t max, unsigned char **out, size_t *outlen,
                        char *err, size_t errlen)
{
	unsigned char *buf = NULL;
	struct stat st;
	size_t len = 0;
	ssize_t got;
	int fd = -1, r = -1;

	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd == -1) {
		snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
		goto out;
	}
	if (fstat(fd, &st) == -1) {
		snprintf(err, errlen, "%s: cannot stat: %s", path, strerror(errno));
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		snprintf(err, errlen, "%s: not a regular file", path);
		goto out;
	}
	if (st.st_size < 0 || (unsigned long long)st.st_size > max) {
		snprintf(err, errlen, "%s: file too large (at most %zu bytes)", path, max);
		goto out;
	}
	/* One byte more than allowed, to notice a file that grew since fstat. */
	buf = malloc(max + 1);
	if (buf == NULL) {
		snprintf(err, errlen, "%s: out of memory", path);
		goto out;
	}
	for (;;) {
		got = read(fd, buf + len, max + 1 - len);
		if (got == -1 && errno == EINTR)
			continue;
		if (got == -1) {
			snprintf(err, errlen, "%s: cannot read: %s", path, strerror(errno));
			goto out;
		}
		if (got == 0)
			break;
		len += (size_t)got;
		if (len > max) {
			snprintf(err, errlen, "%s: file too large (at most %zu bytes)", path, max);
			goto out;
		}
	}
	if (len == 0) {
		snprintf(err, errlen, "%s: empty file", path);
		goto out;
	}
	*out = buf;
	*outlen = len;
	buf = NULL;
	r = 0;
out:
	free(buf);
	if (fd != -1)
		close(fd);
	return r;
}

static int is_pem(const unsigned char *buf, size_t len)
{
	static const char tag[] = "-----BEGIN ";
	size_t i;

	for (i = 0; i + sizeof(tag) - 1 <= len; i++)
		if (memcmp(buf + i, tag, sizeof(tag) - 1) == 0)
			return 1;
	return 0;
}

static int load_anchors(struct cert_checker *c, const char *path, char *err, size_t errlen)
{
	unsigned char *buf = NULL;
	char detail[256];
	size_t len = 0;
	BIO *bio = NULL;
	X509 *x = NULL;
	int r = -1;

	if (read_bounded(path, CC_MAX_ANCHORS_FILE, &buf, &len, err, errlen) != 0)
		goto out;
	if (!is_pem(buf, len)) {
		snprintf(err, errlen, "%s: trust anchors must be PEM certificates", path);
		goto out;
	}
	bio = BIO_new_mem_buf(buf, (int)len);
	if (bio == NULL) {
		snprintf(err, errlen, "%s: out of memory", path);
		goto out;
	}
	for (;;) {
		ERR_set_mark();
		x = PEM_read_bio_X509(bio, NULL, NULL, NULL);
		if (x == NULL) {
			unsigned long e = ERR_peek_last_error();

			/* The end of the file shows as "no start line"; anything else is a
			 * broken certificate. */
			if (ERR_GET_REASON(e) == PEM_R_NO_START_LINE) {
				ERR_pop_to_mark();
				break;
			}
			ERR_clear_last_mark();
			snprintf(err, errlen, "%s: certificate %d: cannot parse: %s", path,
			         sk_X509_num(c->anchors) + 1, ssl_err(detail, sizeof(detail)));
			goto out;
		}
		ERR_clear_last_mark();
		if (sk_X509_num(c->anchors) >= CC_MAX_ANCHORS) {
			snprintf(err, errlen, "%s: too many certificates (at most %d)", path,
			         CC_MAX_ANCHORS);
			goto out;
		}
		if (X509_STORE_add_cert(c->store, x) != 1) {
			snprintf(err, errlen, "%s: certificate %d: cannot add: %s", path,
			         sk_X509_num(c->anchors) + 1, ssl_err(detail, sizeof(detail)));
			goto out;
		}
		if (!sk_X509_push(c->anchors, x)) {
			snprintf(err, errlen, "%s: out of memory", path);
			goto out;
		}
		x = NULL;
	}
	if (sk_X509_num(c->anchors) == 0) {
		snprintf(err, errlen, "%s: no certificate in the file", path);
		goto out;
	}
	r = 0;
out:
	X509_free(x);
	BIO_free(bio);
	free(buf);
	return r;
}

/* A CRL is accepted only when an anchor with the CRL's issuer name (and, if it states key
 * usages, cRLSign among them) verifies its signature. */
static int crl_verify(const struct cert_checker *c, X509_CRL *crl, const char *path, char *err,
                      size_t errlen)
{
	const X509_NAME *issuer = X509_CRL_get_issuer(crl);
	int i, named = 0;
	uint32_t ku;
	X509 *a;

	for (i = 0; i < sk_X509_num(c->anchors); i++) {
		a = sk_X509_value(c->anchors, i);
		if (X509_NAME_cmp(X509_get_subject_name(a), issuer) != 0)
			continue;
		named = 1;
		ku = X509_get_key_usage(a);
		if (ku != UINT32_MAX && !(ku & KU_CRL_SIGN))
			continue;
		if (X509_CRL_verify(crl, X509_get0_pubkey(a)) == 1)
			return 0;
	}
	ERR_clear_error();
	if (named)
		snprintf(err, errlen,
		         "%s: CRL signature does not verify with the trust anchor's key", path);
	else
		snprintf(err, errlen, "%s: CRL issuer is not one of the trust anchors", path);
	return -1;
}

static int add_crl(struct cert_checker *c, X509_CRL *crl, const char *path, char *err,
                   size_t errlen)
{
	ASN1_INTEGER *zero;
	X509_REVOKED *rev;

	if (crl_verify(c, crl, path, err, errlen) != 0)
		return -1;
	/* OpenSSL sorts the revoked list on the first lookup; do it now, while the CRL is ours
	 * alone, so that lookups from many threads only read. */
	zero = ASN1_INTEGER_new();
	if (zero == NULL) {
		snprintf(err, errlen, "%s: out of memory", path);
		return -1;
	}
	(void)X509_CRL_get0_by_serial(crl, &rev, zero);
	ASN1_INTEGER_free(zero);
	if (!sk_X509_CRL_push(c->crls, crl)) {
		snprintf(err, errlen, "%s: out of memory", path);
		return -1;
	}
	return 0;
}

static int load_crl_file(struct cert_checker *c, const char *path, char *err, size_t errlen)
{
	const unsigned char *p;
	unsigned char *buf = NULL;
	char detail[256];
	X509_CRL *crl = NULL;
	BIO *bio = NULL;
	size_t len = 0;
	int n = 0, r = -1;

	if (read_bounded(path, CC_MAX_CRL_FILE, &buf, &len, err, errlen) != 0)
		goto out;
	if (!is_pem(buf, len)) {
		p = buf;
		crl = d2i_X509_CRL(NULL, &p, (long)len);
		if (crl == NULL || p != buf + len) {
			snprintf(err, errlen, "%s: not a DER or PEM CRL: %s", path,
			         crl == NULL ? ssl_err(detail, sizeof(detail))
			                     : "trailing bytes after the CRL");
			goto out;
		}
		if (add_crl(c, crl, path, err, errlen) != 0)
			goto out;
		crl = NULL;
		r = 0;
		goto out;
	}
	bio = BIO_new_mem_buf(buf, (int)len);
	if (bio == NULL) {
		snprintf(err, errlen, "%s: out of memory", path);
		goto out;
	}
	for (;;) {
		ERR_set_mark();
		crl = PEM_read_bio_X509_CRL(bio, NULL, NULL, NULL);
		if (crl == NULL) {
			if (ERR_GET_REASON(ERR_peek_last_error()) == PEM_R_NO_START_LINE && n > 0) {
				ERR_pop_to_mark();
				break;
			}
			ERR_clear_last_mark();
			snprintf(err, errlen, "%s: not a DER or PEM CRL: %s", path,
			         ssl_err(detail, sizeof(detail)));
			goto out;
		}
		ERR_clear_last_mark();
		if (++n > CC_MAX_CRLS_PER_FILE) {
			snprintf(err, errlen, "%s: too many CRLs in one file (at most %d)", path,
			         CC_MAX_CRLS_PER_FILE);
			goto out;
		}
		if (add_crl(c, crl, path, err, errlen) != 0)
			goto out;
		crl = NULL;
	}
	r = 0;
out:
	X509_CRL_free(crl);
	BIO_free(bio);
	free(buf);
	return r;
}

int cert_checker_load(const char *anchors_pem, char *const *crl_paths, size_t ncrl,
                      struct cert_checker **out, char *err, size_t errlen)
{
	struct cert_checker *c = NULL;
	char dummy[1];
	size_t i;
	int r = -1;

	*out = NULL;
	if (err == NULL || errlen == 0) {
		err = dummy;
		errlen = sizeof(dummy);
	}
	err[0] = '\0';
	c = calloc(1, sizeof(*c));
	if (c == NULL || (c->store = X509_STORE_new()) == NULL ||
	    (c->anchors = sk_X509_new_null()) == NULL ||
	    (c->crls = sk_X509_CRL_new_null()) == NULL) {
		snprintf(err, errlen, "out of memory");
		goto out;
	}
	if (anchors_pem != NULL && load_anchors(c, anchors_pem, err, errlen) != 0)
		goto out;
	for (i = 0; i < ncrl; i++) {
		if (crl_paths[i] == NULL)
			break;
		if (load_crl_file(c, crl_paths[i], err, errlen) != 0)
			goto out;
	}
	*out = c;
	c = NULL;
	r = 0;
out:
	cert_checker_free(c);
	ERR_clear_error();
	return r;
}

void cert_checker_free(struct cert_checker *c)
{
	if (c == NULL)
		return;
	X509_STORE_free(c->store);
	sk_X509_pop_free(c->anchors, X509_free);
	sk_X509_CRL_pop_free(c->crls, X509_CRL_free);
	free(c);
}

/* t - now in seconds, or -1 when t cannot be read. */
static int time_delta(const ASN1_TIME *t, const ASN1_TIME *now_asn1, int64_t *delta)
{
	int days, secs;

	if (t == NULL || !ASN1_TIME_diff(&days, &secs, now_asn1, t))
		return -1;
	*delta = (int64_t)days * 86400 + secs;
	return 0;
}

/* The leaf's validity window is checked by cert_check() itself, RFC 5280 style (notAfter
 * included); OpenSSL's own test of the leaf's dates would disagree on the last second. The rest
 * of the chain is left to OpenSSL. */
static int verify_cb(int ok, X509_STORE_CTX *ctx)
{
	int e;

	if (ok || X509_STORE_CTX_get_error_depth(ctx) != 0)
		return ok;
	e = X509_STORE_CTX_get_error(ctx);
	if (e == X509_V_ERR_CERT_HAS_EXPIRED || e == X509_V_ERR_CERT_NOT_YET_VALID)
		return 1;
	return ok;
}

static time_t min_time(time_t a, time_t b)
{
	return a < b ? a : b;
}

/* Chain to the anchors at time now. On success, *until is lowered to the last second at which
 * every certificate above the leaf still is valid for OpenSSL (which counts notAfter as expired).
 */
static enum cert_result check_chain(const struct cert_checker *c, X509 *cert,
                                    STACK_OF(X509) * chain, time_t now, const ASN1_TIME *now_asn1,
                                    time_t *until)
{
	enum cert_result r = CERT_UNTRUSTED;
	X509_STORE_CTX *ctx = NULL;
	X509_VERIFY_PARAM *param;
	STACK_OF(X509) * path;
	int64_t delta;
	int i;

	if (sk_X509_num(c->anchors) == 0)
		goto out;
	ctx = X509_STORE_CTX_new();
	if (ctx == NULL || !X509_STORE_CTX_init(ctx, c->store, cert, chain))
		goto out;
	param = X509_STORE_CTX_get0_param(ctx);
	X509_VERIFY_PARAM_set_time(param, now);
	/* Every certificate in the anchors file is a trust anchor, root or not. */
	X509_VERIFY_PARAM_set_flags(param, X509_V_FLAG_PARTIAL_CHAIN);
	if (!X509_STORE_CTX_set_purpose(ctx, X509_PURPOSE_ANY))
		goto out;
	X509_STORE_CTX_set_verify_cb(ctx, verify_cb);
	if (X509_verify_cert(ctx) != 1)
		goto out;
	path = X509_STORE_CTX_get0_chain(ctx);
	for (i = 1; i < sk_X509_num(path); i++) {
		if (time_delta(X509_get0_notAfter(sk_X509_value(path, i)), now_asn1, &delta) != 0)
			goto out;
		*until = min_time(*until, (time_t)(now + delta - 1));
	}
	r = CERT_OK;
out:
	X509_STORE_CTX_free(ctx);
	ERR_clear_error();
	return r;
}

/* Revocation by the CRLs of the leaf's issuer: a listing wins over staleness, since either
 * refuses and the listing is the more precise reason. */
static enum cert_result check_crls(const struct cert_checker *c, X509 *cert,
                                   const ASN1_TIME *now_asn1, time_t now, time_t *until)
{
	const X509_NAME *issuer = X509_get_issuer_name(cert);
	enum cert_result r = CERT_OK;
	X509_REVOKED *rev;
	X509_CRL *crl;
	int64_t delta;
	int i;

	for (i = 0; i < sk_X509_CRL_num(c->crls); i++) {
		crl = sk_X509_CRL_value(c->crls, i);
		if (X509_NAME_cmp(X509_CRL_get_issuer(crl), issuer) != 0)
			continue;
		/* 1: listed; 2: listed as removeFromCRL, i.e. no longer revoked. */
		if (X509_CRL_get0_by_cert(crl, &rev, cert) == 1)
			return CERT_REVOKED;
		/* No nextUpdate: nobody promised when to look again, so it is never fresh. */
		if (time_delta(X509_CRL_get0_nextUpdate(crl), now_asn1, &delta) != 0 || delta < 0) {
			r = CERT_CRL_STALE;
			continue;
		}
		*until = min_time(*until, (time_t)(now + delta));
	}
	return r;
}

enum cert_result cert_check(const struct cert_checker *c, X509 *cert, STACK_OF(X509) * chain,
                            time_t now, uint64_t min_validity, int require_non_repudiation,
                            time_t *good_until)
{
	enum cert_result r = CERT_UNTRUSTED;
	ASN1_TIME *now_asn1 = NULL;
	int64_t nb, na;
	time_t until;
	uint32_t ku;

	if (good_until != NULL)
		*good_until = 0;
	if (cert == NULL)
		return CERT_MISSING;
	if (c == NULL)
		return CERT_UNTRUSTED;
	now_asn1 = ASN1_TIME_set(NULL, now);
	if (now_asn1 == NULL)
		goto out;
	/* Unreadable dates are a broken certificate: untrusted. */
	if (time_delta(X509_get0_notBefore(cert), now_asn1, &nb) != 0 ||
	    time_delta(X509_get0_notAfter(cert), now_asn1, &na) != 0)
		goto out;
	if (nb > 0) {
		r = CERT_NOT_YET_VALID;
		goto out;
	}
	if (na < 0) {
		r = CERT_EXPIRED;
		goto out;
	}
	if (min_validity > (uint64_t)INT64_MAX || (uint64_t)na < min_validity) {
		r = CERT_VALIDITY_TOO_SHORT;
		goto out;
	}
	until = (time_t)(now + na - (int64_t)min_validity);
	r = check_chain(c, cert, chain, now, now_asn1, &until);
	if (r != CERT_OK)
		goto out;
	r = check_crls(c, cert, now_asn1, now, &until);
	if (r != CERT_OK)
		goto out;
	if (require_non_repudiation) {
		/* UINT32_MAX: no keyUsage extension, which grants nothing here. */
		ku = X509_get_key_usage(cert);
		if (ku == UINT32_MAX || !(ku & KU_NON_REPUDIATION)) {
			r = CERT_NO_NON_REPUDIATION;
			goto out;
		}
	}
	if (good_until != NULL)
		*good_until = until;
	r = CERT_OK;
out:
	ASN1_TIME_free(now_asn1);
	ERR_clear_error();
	return r;
}
