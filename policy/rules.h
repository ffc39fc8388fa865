/* A rule set: the policy file, the SAD issuer keys, and the trust anchors with the policy's
 * CRLs. Loaded together and replaced together (SIGHUP), checked together (iamsignd --check,
 * iamsign-admin policy check), so every path reports the same errors. */
#ifndef IAMSIGN_POLICY_RULES_H
#define IAMSIGN_POLICY_RULES_H

#include <stddef.h>

#include "policy/certcheck.h"
#include "policy/policy.h"
#include "policy/sad.h"

struct rule_set {
	struct policy *pol;
	struct sad_keys *sad;
	struct cert_checker *certs;
};

/* Load all three; trust_anchors is required (signing certificates must chain to it). On error
 * nothing is kept and err names the file (and line). */
int rule_set_load(const char *policy_path, char *const *sad_issuers, size_t nsad,
                  const char *trust_anchors, struct rule_set *out, char *err, size_t errlen);
void rule_set_clear(struct rule_set *rs);

#endif
