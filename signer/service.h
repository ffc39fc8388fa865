/* The signing core: decoded requests in, decisions and signatures out. Knows policy, registry,
 * token and CMS; knows nothing of HTTP or JSON (csc.c translates). */
#ifndef IAMSIGN_SIGNER_SERVICE_H
#define IAMSIGN_SIGNER_SERVICE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "pkcs11/token.h"
#include "policy/algs.h"
#include "policy/policy.h"
#include "signer/config.h"
#include "signer/registry.h"

/* Who is calling: from SO_PEERCRED, never from the request. */
struct peer {
	pid_t pid;
	uid_t uid;
	gid_t gid;
};

/* An error answer: HTTP status, CSC error code, stable reason, one-line description. */
struct svc_error {
	int http;
	const char *error;  /* CSC: invalid_request, access_denied, ... */
	const char *reason; /* stable rule name: unknown_caller, token_unavailable, ... */
	char desc[200];
};

/* Fill e and return -1 (for `return svc_fail(...)`). */
int svc_fail(struct svc_error *e, int http, const char *error, const char *reason, const char *fmt,
             ...) __attribute__((format(printf, 5, 6)));

#define SVC_MAX_HASHES 64 /* hard cap per request; the policy's max_hashes is lower */
#define SVC_MAX_SAD 8192

struct sign_req {
	char cred[REG_MAX_ID + 1];
	const char *purpose; /* NULL: the caller's only purpose; points into the request */
	const char *sad;     /* NULL when absent; points into the request */
	enum alg_family fam;
	enum alg_hash hash;
	size_t pss_salt; /* PSS only */
	size_t nhashes;
	uint8_t hashes[SVC_MAX_HASHES][TOK_MAX_DIGEST];
	int cms; /* signDoc: CAdES B-B detached CMS per hash */
};

/* One signature (raw DER, or a CMS ContentInfo), heap-allocated. */
struct sign_result {
	size_t n;
	uint8_t *sig[SVC_MAX_HASHES];
	size_t len[SVC_MAX_HASHES];
};
void sign_result_clear(struct sign_result *r);

struct service {
	struct config *cfg;
	struct policy *pol;
	struct token *tok;
	struct registry *reg;
};

/* Open everything the configuration names: policy, registry, token (logged in). */
int svc_open(struct service *s, struct config *cfg, char *err, size_t errlen);
void svc_close(struct service *s);

/* The caller's policy entry, or an access_denied error. */
const struct pol_caller *svc_caller(struct service *s, const struct peer *p, struct svc_error *e);

int svc_sign(struct service *s, const struct peer *p, const struct sign_req *req,
             struct sign_result *out, struct svc_error *e);

/* What credentials/info reports. cert and chain are borrowed from the token cache / registry. */
struct cred_info {
	struct reg_cred reg;
	const struct tok_key *key;
};
int svc_cred_info(struct service *s, const struct peer *p, const char *id, struct cred_info *out,
                  struct svc_error *e);
void cred_info_clear(struct cred_info *ci);

/* Credential IDs the caller may use, in ID order, after `after` (NULL: from the start), at
 * most max; *more is set when further IDs follow. ids[i] are heap strings for the caller to
 * free. */
int svc_cred_list(struct service *s, const struct peer *p, const char *user, const char *after,
                  size_t max, char **ids, size_t *n, int *more, struct svc_error *e);

#endif
