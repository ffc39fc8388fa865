/* CAdES baseline B-B: detached CMS SignedData over a client-supplied digest, the signature
 * itself made by a callback (the token), so the private key never leaves it.
 *
 * OpenSSL 3.0 has no CMS_final_digest: the SignerInfo is built with the certificate's public
 * key (CMS_PARTIAL, never signed by OpenSSL), the signed attributes are added here, their DER
 * (SET OF, as signed) is hashed and handed to the callback, and the result set as the
 * signature. */
#ifndef IAMSIGN_SIGNER_CMS_H
#define IAMSIGN_SIGNER_CMS_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <openssl/x509.h>

/* Sign digest dig (dlen bytes) of the signed attributes; the algorithm is the one given to
 * cms_build. Returns 0, or a negative error that cms_build passes back unchanged. */
typedef int (*cms_sign_fn)(void *arg, const uint8_t *dig, size_t dlen, uint8_t *sig,
                           size_t *siglen);

enum cms_sigalg { CMS_SIG_ECDSA = 1, CMS_SIG_RSA_PKCS1 = 2, CMS_SIG_RSA_PSS = 3 };

struct cms_params {
	X509 *cert;             /* signing certificate (its public key is the token key's) */
	STACK_OF(X509) * chain; /* extra certificates to carry, or NULL */
	int hash_nid;           /* NID_sha256 / NID_sha384 / NID_sha512 */
	enum cms_sigalg sigalg;
	size_t pss_salt;       /* PSS only (MGF1 uses hash_nid) */
	const uint8_t *digest; /* the document's digest (message-digest attribute) */
	size_t dlen;
	time_t signing_time;
	int pades; /* PAdES (ETSI EN 319 142-1): no signing-time attribute, the PDF holds the time
	            */
	cms_sign_fn sign;
	void *sign_arg;
};

#define CMS_ERR_INTERNAL (-1000) /* OpenSSL failed building the structure */
#define CMS_ERR_INPUT (-1001)    /* digest length or algorithm does not fit */

/* Build the DER ContentInfo; *der is OPENSSL_malloc'ed (free with OPENSSL_free). Returns 0, a
 * CMS_ERR_*, or the sign callback's error. */
int cms_build(const struct cms_params *p, uint8_t **der, size_t *derlen);

/* Make a signature-time-stamp for the signature value of a SignerInfo: *token is the DER
 * TimeStampToken (OPENSSL_malloc'ed). Returns 0, or a negative error cms_stamp passes back. */
typedef int (*cms_stamp_fn)(void *arg, const uint8_t *sigval, size_t len, uint8_t **token,
                            size_t *tlen);

/* CAdES B-T from B-B: for the one SignerInfo of ContentInfo der, get a token over its
 * signature value from stamp and add it as the unsigned attribute id-aa-signatureTimeStampToken
 * (RFC 3161 appendix A). *out is the new DER (OPENSSL_malloc'ed). Returns 0, a CMS_ERR_*, or
 * stamp's error. */
int cms_stamp(const uint8_t *der, size_t len, cms_stamp_fn stamp, void *arg, uint8_t **out,
              size_t *outlen);

#endif
