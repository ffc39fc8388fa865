/* Policy: which caller may sign what. Loaded from YAML; immutable once loaded, so a reload
 * builds a new one and swaps it in.
 *
 * Nothing here knows PKCS#11, HTTP or JSON. */
#ifndef IAMSIGN_POLICY_POLICY_H
#define IAMSIGN_POLICY_POLICY_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "policy/algs.h"

/* Credential classes, a bit each. */
enum pol_class { POL_CLASS_CITIZEN = 1, POL_CLASS_SEAL = 2 };
const char *pol_class_name(enum pol_class c); /* "citizen", "seal" */
int pol_class_lookup(const char *name);       /* enum value, or 0 if unknown */

/* Why a request was refused. The strings are the stable `reason` field of the API. */
enum pol_reason {
	POL_OK = 0,
	POL_UNKNOWN_CALLER,        /* unknown_caller */
	POL_PURPOSE_REQUIRED,      /* purpose_required: caller has several, request names none */
	POL_PURPOSE_NOT_ALLOWED,   /* purpose_not_allowed */
	POL_CLASS_NOT_ALLOWED,     /* class_not_allowed: credential class not in caller's classes */
	POL_ALGORITHM_NOT_ALLOWED, /* algorithm_not_allowed */
	POL_HASH_NOT_ALLOWED,      /* hash_algorithm_not_allowed */
	POL_TOO_MANY_HASHES,       /* too_many_hashes */
};
const char *pol_reason_str(enum pol_reason r);

struct pol_rate {
	uint32_t count; /* 0: no limit */
	uint32_t per_s; /* period in seconds */
};

struct pol_caller {
	char *name;
	int has_uid, has_gid;
	uid_t uid;       /* from uid: or user: (resolved at load) */
	gid_t gid;       /* from gid: or group: (resolved at load) */
	char **purposes; /* NULL-terminated */
	size_t npurposes;
	unsigned classes; /* mask of enum pol_class */
	struct pol_rate rate;
};

struct pol_sign_alg {
	enum alg_family fam;
	enum alg_hash hash; /* HASH_NONE: any allowed hash */
};

struct pol_purpose {
	char *name;
	struct pol_sign_alg *algs;
	size_t nalgs;
	unsigned hashes;     /* mask of enum alg_hash */
	uint32_t max_hashes; /* default 1 */
	int require_sad;     /* default true */
};

struct pol_credentials {
	uint32_t daily_quota;        /* 0: none */
	uint64_t min_cert_validity;  /* seconds */
	int require_non_repudiation; /* default false */
	char **crl;                  /* NULL-terminated paths */
	size_t ncrl;
};

struct policy {
	char *path;
	struct pol_caller *callers;
	size_t ncallers;
	struct pol_purpose *purposes;
	size_t npurposes;
	struct pol_credentials creds;
};

/* Load and validate a policy file: unknown keys, bad values, a caller naming an undefined
 * purpose, an unknown user or group are errors "FILE:LINE: KEY: message". */
int policy_load(const char *path, struct policy **out, char *err, size_t errlen);
void policy_free(struct policy *p);

/* The caller whose uid (or, failing that, gid) matches; a caller entry with both uid and gid
 * needs both. NULL if none. */
const struct pol_caller *policy_caller(const struct policy *p, uid_t uid, gid_t gid);

const struct pol_purpose *policy_purpose(const struct policy *p, const char *name);

/* What a sign request asks, already decoded and normalised. */
struct pol_request {
	const char *purpose; /* NULL: the caller's only purpose */
	enum pol_class cls;  /* class of the credential */
	enum alg_family fam;
	enum alg_hash hash;
	size_t nhashes;
};

/* Decide a sign request for caller: purpose, class, algorithm, hash algorithm, number of hashes.
 * On POL_OK, *purpose is the purpose that applies. */
enum pol_reason policy_check_sign(const struct policy *p, const struct pol_caller *caller,
                                  const struct pol_request *req,
                                  const struct pol_purpose **purpose);

/* May caller use a credential of class cls at all (credentials/list, credentials/info)? */
int policy_caller_may_use(const struct pol_caller *caller, enum pol_class cls);

#endif
