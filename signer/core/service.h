/* The signing core: decoded requests in, decisions and signatures out. Knows policy, registry,
 * token and CMS; knows nothing of HTTP or JSON (csc.c translates). */
#ifndef IAMSIGN_SIGNER_SERVICE_H
#define IAMSIGN_SIGNER_SERVICE_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "pkcs11/token.h"
#include "pkcs11/wrapped.h"
#include "policy/algs.h"
#include "policy/certcheck.h"
#include "policy/rate.h"
#include "policy/policy.h"
#include "policy/rules.h"
#include "policy/sad.h"
#include "signer/config.h"
#include "signer/core/ledger.h"
#include "signer/core/registry.h"
#include "signer/core/stamp.h"
#include "signer/wire/types.h"

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
	struct tok_wcache *wcache; /* unwrapped keys (keys.kek, keys.cache) */
	pthread_mutex_t rules_mu;
	struct svc_rules *rules;
	unsigned long generation;
	struct tsa_verifier *tsa; /* tsa: configured, else NULL (B-T refused) */
};

/* Open everything the configuration names: rules, registry, token (logged in), audit key,
 * ledger. no_fsync is the benchmark-only switch that turns the ledger's fsync off. */
int svc_open(struct service *s, struct config *cfg, int no_fsync, char *err, size_t errlen);
void svc_close(struct service *s);

/* Load policy, SAD issuer keys, trust anchors and CRLs anew and swap them in at once. On error
 * the old rules stay and err names the file (and line). */
int svc_reload(struct service *s, char *err, size_t errlen);

/* The caches' figures for /metrics: unwrapped keys and certificate checks. */
struct svc_cache_stats {
	struct tok_wcache_stats keys;
	uint64_t cert_hits, cert_misses, cert_slots;
};
void svc_cache_stats(struct service *s, struct svc_cache_stats *out);

/* Load the rules a configuration names, as svc_reload does (also for --check). */
int svc_rules_load(const struct config *cfg, struct svc_rules **out, char *err, size_t errlen);
void svc_rules_free(struct svc_rules *r);

/* Start the audit record of a request: time, peer, operation. */
void svc_audit_begin(struct audit_rec *rec, const struct peer *p, const char *op);

/* Every answer the core gives passes here: the one place that keeps the rule "no answer
 * leaves without its record". A record the ledger has not settled yet (all but a signature's,
 * which svc_sign appends itself) is appended now: allowed when ok, else denied with f's reason.
 * When the ledger then holds no record of the answer, the answer becomes f = 503
 * ledger_unavailable, whatever it was. Returns ok, or 0 with f set. */
int svc_conclude(struct service *s, struct audit_rec *rec, int ok, struct refusal *f);

/* Sign: every check of the policy, then the token, then the ledger (which records the
 * request itself, allowed or refused by its quota and SAD conditions). Either way the answer
 * goes through svc_conclude, which records a refusal the ledger has not seen. */
int svc_sign(struct service *s, const struct peer *p, const struct sign_req *req,
             struct sign_result *out, struct audit_rec *rec, struct refusal *f);
/* The same, with the way to the TSA for a B-T request (req->stamp): each CMS gets its
 * signature-time-stamp, checked, before the record; any failure refuses the request
 * (tsa_unavailable, tsa_bad_token), never a B-B instead. svc_sign is this with tsa NULL. */
int svc_sign_stamped(struct service *s, const struct peer *p, const struct sign_req *req,
                     const struct svc_tsa_link *tsa, struct sign_result *out, struct audit_rec *rec,
                     struct refusal *f);

/* What credentials/info reports. The key is borrowed from the token cache, or for a wrapped
 * key described in own (public key and certificate from the registry, no unwrap). */
struct cred_info {
	struct reg_cred reg;
	const struct tok_key *key;
	struct tok_key own;
};
int svc_cred_info(struct service *s, const struct peer *p, const char *id, struct cred_info *out,
                  struct audit_rec *rec, struct refusal *f);
void cred_info_clear(struct cred_info *ci);

/* Credential IDs the caller may use, in ID order, after `after` (NULL: from the start), at
 * most max; *more is set when further IDs follow. ids[i] are heap strings for the caller to
 * free. */
int svc_cred_list(struct service *s, const struct peer *p, const char *user, const char *after,
                  size_t max, char **ids, size_t *n, int *more, struct audit_rec *rec,
                  struct refusal *f);

#endif
