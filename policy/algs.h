/* Signature and hash algorithm names and OIDs, as CSC requests and policy files spell them. */
#ifndef IAMSIGN_POLICY_ALGS_H
#define IAMSIGN_POLICY_ALGS_H

#include <stddef.h>

enum alg_family { ALG_NONE = 0, ALG_ECDSA = 1, ALG_RSA_PKCS1 = 2, ALG_RSA_PSS = 3 };

/* Hashes iamsign signs: a bit each, for masks. */
enum alg_hash { HASH_NONE = 0, HASH_SHA256 = 1, HASH_SHA384 = 2, HASH_SHA512 = 4 };

/* A hash by name ("sha256") or dotted OID ("2.16.840.1.101.3.4.2.1"); HASH_NONE if unknown. */
enum alg_hash alg_hash_lookup(const char *name_or_oid);
size_t alg_hash_len(enum alg_hash h);       /* digest length in bytes, 0 for HASH_NONE */
const char *alg_hash_name(enum alg_hash h); /* "sha256" */
const char *alg_hash_oid(enum alg_hash h);  /* "2.16.840.1.101.3.4.2.1" */
int alg_hash_nid(enum alg_hash h);          /* OpenSSL NID_sha256 ... */

/* A signature algorithm as named in CSC signAlgo or policy sign_algorithms: either a combined
 * algorithm (family and hash: "ecdsa-with-SHA256", "1.2.840.10045.4.3.2") or a key algorithm
 * (family only, hash HASH_NONE: "1.2.840.10045.2.1", "rsaEncryption", "RSASSA-PSS",
 * "1.2.840.113549.1.1.10"). Returns 0 and fills *fam and *hash, or -1 if unknown. */
int alg_sign_lookup(const char *name_or_oid, enum alg_family *fam, enum alg_hash *hash);

/* Name of a (family, hash) pair for messages and ledger: "ecdsa-with-SHA256",
 * "sha256WithRSAEncryption", "RSASSA-PSS"; the family name when hash is HASH_NONE. */
const char *alg_sign_name(enum alg_family fam, enum alg_hash hash);

/* Signature algorithm OIDs advertised by the info method, NULL-terminated. */
extern const char *const alg_sign_oids[];

#endif
