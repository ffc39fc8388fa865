/* The signing core: decoded requests in, decisions and signatures out. Knows policy, registry,
 * token and CMS; knows nothing of HTTP or JSON (csc.c translates). */
#ifndef IAMSIGN_SIGNER_SERVICE_H
#define IAMSIGN_SIGNER_SERVICE_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "pkcs11/token.h"
#include "policy/algs.h"
#include "policy/certcheck.h"
#include "policy/rate.h"
#include "policy/policy.h"
#include "policy/rules.h"
#include "policy/sad.h"
#include "signer/config.h"
#include "signer/core/ledger.h"
#include "signer/core/registry.h"

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
	int recorded; /* the ledger already holds this outcome */
};

/* Fill e and return -1 (for `return svc_fail(...)`). */
int svc_fail(struct svc_error *e, int http, const char *error, const char *reason, const char *fmt,
             ...) __attribute__((format(printf, 5, 6)));

#define SVC_MAX_HASHES 64 /* hard cap per request; limits.hashes and max_hashes may lower it */
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

/* What SIGHUP replaces as a whole: policy, SAD issuer keys, trust anchors and CRLs. Immutable;
 * a request holds a reference for its whole duration. */
struct svc_rules {
	struct rule_set set;
	unsigned long generation;
	long refs; /* guarded by service.rules_mu */
};

struct svc_cert_cache; /* certificate check results, see service.c */

struct service {
	struct config *cfg;
	struct token *tok;
	struct registry *reg;
	struct ledger *ledger;
	const struct tok_key *audit_key;
	struct rate_table *rates;
	struct svc_cert_cache *cert_cache;
	pthread_mutex_t rules_mu;
	struct svc_rules *rules;
	unsigned long generation;
};

/* Open everything the configuration names: rules, registry, token (logged in), audit key,
 * ledger. no_fsync is the benchmark-only switch that turns the ledger's fsync off. */
int svc_open(struct service *s, struct config *cfg, int no_fsync, char *err, size_t errlen);
void svc_close(struct service *s);

/* Load policy, SAD issuer keys, trust anchors and CRLs anew and swap them in at once. On error
 * the old rules stay and err names the file (and line). */
int svc_reload(struct service *s, char *err, size_t errlen);

/* Load the rules a configuration names, as svc_reload does (also for --check). */
int svc_rules_load(const struct config *cfg, struct svc_rules **out, char *err, size_t errlen);
void svc_rules_free(struct svc_rules *r);

/* Start the audit record of a request: time, peer, operation. */
void svc_audit_begin(struct audit_rec *rec, const struct peer *p, const char *op);

/* Record the outcome of a request that the service has not recorded itself (everything but a
 * signature that was made): outcome NULL means allowed. Returns 0, or -1 with e set to 503
 * ledger_unavailable: no answer but that one leaves without its record. */
int svc_record(struct service *s, struct audit_rec *rec, const struct svc_error *outcome,
               struct svc_error *e);

/* Sign: every check of the policy, then the token, then the ledger (which records the
 * request itself, allowed or refused by its quota and SAD conditions). On success rec->seq is
 * set; on failure the caller records the refusal with svc_record. */
int svc_sign(struct service *s, const struct peer *p, const struct sign_req *req,
             struct sign_result *out, struct audit_rec *rec, struct svc_error *e);

/* What credentials/info reports. The key is borrowed from the token cache. */
struct cred_info {
	struct reg_cred reg;
	const struct tok_key *key;
};
int svc_cred_info(struct service *s, const struct peer *p, const char *id, struct cred_info *out,
                  struct audit_rec *rec, struct svc_error *e);
void cred_info_clear(struct cred_info *ci);

/* Credential IDs the caller may use, in ID order, after `after` (NULL: from the start), at
 * most max; *more is set when further IDs follow. ids[i] are heap strings for the caller to
 * free. */
int svc_cred_list(struct service *s, const struct peer *p, const char *user, const char *after,
                  size_t max, char **ids, size_t *n, int *more, struct audit_rec *rec,
                  struct svc_error *e);

#endif
