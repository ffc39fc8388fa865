/* Signing certificate checks: chain to the trust anchors, validity window with a minimum
 * remaining validity, nonRepudiation, and revocation by CRLs verified against the anchors.
 * Loaded from files into an immutable checker (reloaded on SIGHUP). OpenSSL only. */
#ifndef IAMSIGN_POLICY_CERTCHECK_H
#define IAMSIGN_POLICY_CERTCHECK_H

#include <stdint.h>
#include <time.h>

#include <openssl/x509.h>

enum cert_result {
	CERT_OK = 0,
	CERT_MISSING,            /* cert_missing: the credential has no certificate */
	CERT_NOT_YET_VALID,      /* cert_not_yet_valid */
	CERT_EXPIRED,            /* cert_expired */
	CERT_VALIDITY_TOO_SHORT, /* cert_expiring: notAfter - now < min_cert_validity */
	CERT_UNTRUSTED,          /* cert_untrusted: does not chain to trust_anchors */
	CERT_REVOKED,            /* cert_revoked: listed in a CRL */
	CERT_CRL_STALE, /* crl_stale: a CRL of the issuer is past nextUpdate (fail closed) */
	CERT_NO_NON_REPUDIATION, /* cert_no_non_repudiation */
};
const char *cert_reason(enum cert_result r);

struct cert_checker;

/* anchors_pem: file of CA certificates (NULL: no anchors, every certificate is untrusted).
 * crl_paths: PEM or DER CRLs; each must be signed by an anchor (or a CA in the chain given at
 * check time), else loading fails naming the file. */
int cert_checker_load(const char *anchors_pem, char *const *crl_paths, size_t ncrl,
                      struct cert_checker **out, char *err, size_t errlen);
void cert_checker_free(struct cert_checker *c);

/* Check cert (with untrusted intermediates chain, may be NULL) at time now. On CERT_OK,
 * *good_until (if not NULL) is the last second at which the same answer holds without
 * re-checking: min(notAfter - min_validity, every relevant CRL's nextUpdate). Thread-safe. */
enum cert_result cert_check(const struct cert_checker *c, X509 *cert, STACK_OF(X509) * chain,
                            time_t now, uint64_t min_validity, int require_non_repudiation,
                            time_t *good_until);

#endif
