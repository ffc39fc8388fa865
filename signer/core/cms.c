/* CAdES B-B detached CMS with an external signer; see cms.h for the approach. */
#include "signer/core/cms.h"

#include <limits.h>
#include <string.h>

#include <openssl/cms.h>
#include <openssl/ess.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/pkcs7.h>
#include <openssl/rsa.h>

#define CMS_MAX_SIG 1024

/* RSASSA-PSS-params for hash_nid with MGF1(hash_nid) and the given salt length. */
static ASN1_STRING *pss_params(int hash_nid, size_t salt)
{
	RSA_PSS_PARAMS *pss = NULL;
	X509_ALGOR *mgfhash = NULL;
	ASN1_STRING *mgfparam = NULL, *out = NULL;
	const EVP_MD *md = EVP_get_digestbynid(hash_nid);

	if (md == NULL || (pss = RSA_PSS_PARAMS_new()) == NULL)
		goto out;
	if ((pss->hashAlgorithm = X509_ALGOR_new()) == NULL)
		goto out;
	X509_ALGOR_set_md(pss->hashAlgorithm, md);
	if ((mgfhash = X509_ALGOR_new()) == NULL)
		goto out;
	X509_ALGOR_set_md(mgfhash, md);
	if (ASN1_item_pack(mgfhash, ASN1_ITEM_rptr(X509_ALGOR), &mgfparam) == NULL)
		goto out;
	if ((pss->maskGenAlgorithm = X509_ALGOR_new()) == NULL)
		goto out;
	if (!X509_ALGOR_set0(pss->maskGenAlgorithm, OBJ_nid2obj(NID_mgf1), V_ASN1_SEQUENCE,
	                     mgfparam))
		goto out;
	mgfparam = NULL;
	if ((pss->saltLength = ASN1_INTEGER_new()) == NULL ||
	    !ASN1_INTEGER_set(pss->saltLength, (long)salt))
		goto out;
	ASN1_item_pack(pss, ASN1_ITEM_rptr(RSA_PSS_PARAMS), &out);
out:
	ASN1_STRING_free(mgfparam);
	X509_ALGOR_free(mgfhash);
	RSA_PSS_PARAMS_free(pss);
	return out;
}

static int add_attrs(CMS_SignerInfo *si, const struct cms_params *p)
{
	ESS_SIGNING_CERT_V2 *sc = NULL;
	ASN1_TIME *t = NULL;
	unsigned char *scder = NULL;
	int sclen, ok = 0;

	if (!CMS_signed_add1_attr_by_NID(si, NID_pkcs9_contentType, V_ASN1_OBJECT,
	                                 OBJ_nid2obj(NID_pkcs7_data), -1))
		goto out;
	if (!CMS_signed_add1_attr_by_NID(si, NID_pkcs9_messageDigest, V_ASN1_OCTET_STRING,
	                                 p->digest, (int)p->dlen))
		goto out;
	/* PAdES: the time is the signature dictionary's /M (EN 319 142-1 5.2.2.1). */
	if (!p->pades) {
		if ((t = ASN1_TIME_set(NULL, p->signing_time)) == NULL)
			goto out;
		if (!CMS_signed_add1_attr_by_NID(si, NID_pkcs9_signingTime, t->type, t, -1))
			goto out;
	}
	/* ESS signing-certificate-v2 without issuerSerial, as CAdES recommends; CMS_CADES
	 * would include it. SHA-256 is ESSCertIDv2's default hash, so it is left implicit. */
	if ((sc = OSSL_ESS_signing_cert_v2_new_init(EVP_sha256(), p->cert, NULL, 0)) == NULL)
		goto out;
	if ((sclen = i2d_ESS_SIGNING_CERT_V2(sc, &scder)) <= 0)
		goto out;
	if (!CMS_signed_add1_attr_by_NID(si, NID_id_smime_aa_signingCertificateV2, V_ASN1_SEQUENCE,
	                                 scder, sclen))
		goto out;
	ok = 1;
out:
	OPENSSL_free(scder);
	ESS_SIGNING_CERT_V2_free(sc);
	ASN1_TIME_free(t);
	return ok;
}

/* Digest of the signed attributes' DER as signed (a SET OF, in DER order). */
static int attrs_digest(CMS_SignerInfo *si, const EVP_MD *md, uint8_t *dig, unsigned *dlen)
{
	STACK_OF(X509_ATTRIBUTE) *attrs = NULL;
	unsigned char *der = NULL;
	int i, n, len, ok = 0;

	if ((attrs = sk_X509_ATTRIBUTE_new_null()) == NULL)
		goto out;
	n = CMS_signed_get_attr_count(si);
	for (i = 0; i < n; i++)
		if (!sk_X509_ATTRIBUTE_push(attrs, CMS_signed_get_attr(si, i)))
			goto out;
	len = ASN1_item_i2d((const ASN1_VALUE *)attrs, &der, ASN1_ITEM_rptr(PKCS7_ATTR_SIGN));
	if (len <= 0)
		goto out;
	ok = EVP_Digest(der, (size_t)len, dig, dlen, md, NULL);
out:
	OPENSSL_free(der);
	sk_X509_ATTRIBUTE_free(attrs); /* the attributes belong to si */
	return ok;
}

int cms_build(const struct cms_params *p, uint8_t **der, size_t *derlen)
{
	CMS_ContentInfo *cms = NULL;
	CMS_SignerInfo *si;
	EVP_PKEY *pub;
	X509_ALGOR *sigalg = NULL;
	ASN1_STRING *pss = NULL;
	const EVP_MD *md;
	uint8_t dig[EVP_MAX_MD_SIZE], sig[CMS_MAX_SIG];
	unsigned dlen = 0;
	size_t siglen = sizeof(sig);
	unsigned char *out = NULL;
	int i, len, r = CMS_ERR_INTERNAL;

	*der = NULL;
	*derlen = 0;
	md = EVP_get_digestbynid(p->hash_nid);
	if (md == NULL || p->dlen != (size_t)EVP_MD_get_size(md) || p->cert == NULL)
		return CMS_ERR_INPUT;
	if ((pub = X509_get0_pubkey(p->cert)) == NULL)
		return CMS_ERR_INPUT;

	cms = CMS_sign(NULL, NULL, NULL, NULL, CMS_DETACHED | CMS_BINARY | CMS_PARTIAL);
	if (cms == NULL)
		goto out;
	/* The public key passes CMS_add1_signer's key/cert match; CMS_PARTIAL keeps OpenSSL
	 * from trying to sign with it. */
	si = CMS_add1_signer(cms, p->cert, pub, md, CMS_PARTIAL | CMS_NOSMIMECAP | CMS_BINARY);
	if (si == NULL)
		goto out;
	for (i = 0; p->chain != NULL && i < sk_X509_num(p->chain); i++)
		if (!CMS_add1_cert(cms, sk_X509_value(p->chain, i)))
			goto out;
	CMS_SignerInfo_get0_algs(si, NULL, NULL, NULL, &sigalg);
	if (p->sigalg == CMS_SIG_RSA_PSS) {
		if ((pss = pss_params(p->hash_nid, p->pss_salt)) == NULL)
			goto out;
		if (!X509_ALGOR_set0(sigalg, OBJ_nid2obj(NID_rsassaPss), V_ASN1_SEQUENCE, pss))
			goto out;
		pss = NULL;
	} else if ((p->sigalg == CMS_SIG_ECDSA) != (EVP_PKEY_get_base_id(pub) == EVP_PKEY_EC)) {
		r = CMS_ERR_INPUT;
		goto out;
	}
	if (!add_attrs(si, p) || !attrs_digest(si, md, dig, &dlen))
		goto out;
	if ((r = p->sign(p->sign_arg, dig, dlen, sig, &siglen)) != 0)
		goto out;
	r = CMS_ERR_INTERNAL;
	if (!ASN1_STRING_set(CMS_SignerInfo_get0_signature(si), sig, (int)siglen))
		goto out;
	if ((len = i2d_CMS_ContentInfo(cms, &out)) <= 0)
		goto out;
	*der = out;
	*derlen = (size_t)len;
	r = 0;
out:
	OPENSSL_cleanse(dig, sizeof(dig));
	ASN1_STRING_free(pss);
	CMS_ContentInfo_free(cms);
	return r;
}

int cms_stamp(const uint8_t *der, size_t len, cms_stamp_fn stamp, void *arg, uint8_t **out,
              size_t *outlen)
{
	const unsigned char *pp = der;
	CMS_ContentInfo *cms = NULL;
	STACK_OF(CMS_SignerInfo) * sis;
	CMS_SignerInfo *si;
	ASN1_OCTET_STRING *sig;
	uint8_t *token = NULL;
	size_t tlen = 0;
	unsigned char *enc = NULL;
	int n, r = CMS_ERR_INPUT;

	*out = NULL;
	*outlen = 0;
	if (len == 0 || len > INT_MAX ||
	    (cms = d2i_CMS_ContentInfo(NULL, &pp, (long)len)) == NULL || pp != der + len)
		goto out;
	if ((sis = CMS_get0_SignerInfos(cms)) == NULL || sk_CMS_SignerInfo_num(sis) != 1)
		goto out;
	si = sk_CMS_SignerInfo_value(sis, 0);
	if ((sig = CMS_SignerInfo_get0_signature(si)) == NULL || ASN1_STRING_length(sig) <= 0)
		goto out;
	if ((r = stamp(arg, ASN1_STRING_get0_data(sig), (size_t)ASN1_STRING_length(sig), &token,
	               &tlen)) != 0)
		goto out;
	r = CMS_ERR_INTERNAL;
	/* The token is a ContentInfo, a SEQUENCE: its DER is the attribute's value as is. */
	if (tlen > INT_MAX || !CMS_unsigned_add1_attr_by_NID(si, NID_id_smime_aa_timeStampToken,
	                                                     V_ASN1_SEQUENCE, token, (int)tlen))
		goto out;
	if ((n = i2d_CMS_ContentInfo(cms, &enc)) <= 0)
		goto out;
	*out = enc;
	*outlen = (size_t)n;
	r = 0;
out:
	OPENSSL_free(token);
	CMS_ContentInfo_free(cms);
	return r;
}
