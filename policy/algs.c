/* Signature and hash algorithm names and OIDs. See algs.h. */
#include "policy/algs.h"

#include <string.h>
#include <strings.h>

#include <openssl/obj_mac.h>

struct hash_def {
	enum alg_hash hash;
	const char *name;
	const char *oid;
	size_t len;
	int nid;
};

static const struct hash_def hashes[] = {
    {HASH_SHA256, "sha256", "2.16.840.1.101.3.4.2.1", 32, NID_sha256},
    {HASH_SHA384, "sha384", "2.16.840.1.101.3.4.2.2", 48, NID_sha384},
    {HASH_SHA512, "sha512", "2.16.840.1.101.3.4.2.3", 64, NID_sha512},
};

#define NHASHES (sizeof(hashes) / sizeof(hashes[0]))

struct sign_def {
	enum alg_family fam;
	enum alg_hash hash;
	const char *name; /* canonical name, matched case-insensitively */
	const char *oid;  /* NULL: an alias name only */
};

/* The first entry for a (family, hash) pair gives its canonical name. */
static const struct sign_def signs[] = {
    {ALG_ECDSA, HASH_SHA256, "ecdsa-with-SHA256", "1.2.840.10045.4.3.2"},
    {ALG_ECDSA, HASH_SHA384, "ecdsa-with-SHA384", "1.2.840.10045.4.3.3"},
    {ALG_ECDSA, HASH_SHA512, "ecdsa-with-SHA512", "1.2.840.10045.4.3.4"},
    {ALG_RSA_PKCS1, HASH_SHA256, "sha256WithRSAEncryption", "1.2.840.113549.1.1.11"},
    {ALG_RSA_PKCS1, HASH_SHA384, "sha384WithRSAEncryption", "1.2.840.113549.1.1.12"},
    {ALG_RSA_PKCS1, HASH_SHA512, "sha512WithRSAEncryption", "1.2.840.113549.1.1.13"},
    {ALG_ECDSA, HASH_NONE, "ecdsa", "1.2.840.10045.2.1"},
    {ALG_ECDSA, HASH_NONE, "ecPublicKey", NULL},
    {ALG_RSA_PKCS1, HASH_NONE, "rsaEncryption", "1.2.840.113549.1.1.1"},
    {ALG_RSA_PSS, HASH_NONE, "RSASSA-PSS", "1.2.840.113549.1.1.10"},
};

#define NSIGNS (sizeof(signs) / sizeof(signs[0]))

const char *const alg_sign_oids[] = {
    "1.2.840.10045.4.3.2",   /* ecdsa-with-SHA256 */
    "1.2.840.10045.4.3.3",   /* ecdsa-with-SHA384 */
    "1.2.840.10045.4.3.4",   /* ecdsa-with-SHA512 */
    "1.2.840.113549.1.1.11", /* sha256WithRSAEncryption */
    "1.2.840.113549.1.1.12", /* sha384WithRSAEncryption */
    "1.2.840.113549.1.1.13", /* sha512WithRSAEncryption */
    "1.2.840.113549.1.1.10", /* RSASSA-PSS */
    "1.2.840.10045.2.1",     /* ecPublicKey, with hashAlgorithmOID */
    "1.2.840.113549.1.1.1",  /* rsaEncryption, with hashAlgorithmOID */
    NULL,
};

static const struct hash_def *hash_def(enum alg_hash h)
{
	size_t i;

	for (i = 0; i < NHASHES; i++)
		if (hashes[i].hash == h)
			return &hashes[i];
	return NULL;
}

enum alg_hash alg_hash_lookup(const char *name_or_oid)
{
	size_t i;

	if (name_or_oid == NULL)
		return HASH_NONE;
	for (i = 0; i < NHASHES; i++)
		if (strcasecmp(name_or_oid, hashes[i].name) == 0 ||
		    strcmp(name_or_oid, hashes[i].oid) == 0)
			return hashes[i].hash;
	return HASH_NONE;
}

size_t alg_hash_len(enum alg_hash h)
{
	const struct hash_def *d = hash_def(h);

	return d != NULL ? d->len : 0;
}

const char *alg_hash_name(enum alg_hash h)
{
	const struct hash_def *d = hash_def(h);

	return d != NULL ? d->name : "none";
}

const char *alg_hash_oid(enum alg_hash h)
{
	const struct hash_def *d = hash_def(h);

	return d != NULL ? d->oid : NULL;
}

int alg_hash_nid(enum alg_hash h)
{
	const struct hash_def *d = hash_def(h);

	return d != NULL ? d->nid : NID_undef;
}

int alg_sign_lookup(const char *name_or_oid, enum alg_family *fam, enum alg_hash *hash)
{
	size_t i;

	if (name_or_oid == NULL)
		return -1;
	for (i = 0; i < NSIGNS; i++) {
		if (strcasecmp(name_or_oid, signs[i].name) == 0 ||
		    (signs[i].oid != NULL && strcmp(name_or_oid, signs[i].oid) == 0)) {
			*fam = signs[i].fam;
			*hash = signs[i].hash;
			return 0;
		}
	}
	return -1;
}

const char *alg_sign_name(enum alg_family fam, enum alg_hash hash)
{
	size_t i;

	/* PSS names its hash in parameters, not in the algorithm. */
	if (fam == ALG_RSA_PSS)
		return "RSASSA-PSS";
	for (i = 0; i < NSIGNS; i++)
		if (signs[i].fam == fam && signs[i].hash == hash)
			return signs[i].name;
	return "unknown";
}
