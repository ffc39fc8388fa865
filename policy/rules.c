/* Loading a rule set as one unit; see rules.h. */
#include "policy/rules.h"

#include <stdio.h>
#include <string.h>

void rule_set_clear(struct rule_set *rs)
{
	policy_free(rs->pol);
	sad_keys_free(rs->sad);
	cert_checker_free(rs->certs);
	memset(rs, 0, sizeof(*rs));
}

int rule_set_load(const char *policy_path, char *const *sad_issuers, size_t nsad,
                  const char *trust_anchors, struct rule_set *out, char *err, size_t errlen)
{
	memset(out, 0, sizeof(*out));
	if (trust_anchors == NULL) {
		snprintf(err, errlen,
		         "trust_anchors: required: signing certificates must chain to a configured "
		         "CA");
		return -1;
	}
	if (policy_load(policy_path, &out->pol, err, errlen) != 0 ||
	    sad_keys_load(sad_issuers, nsad, &out->sad, err, errlen) != 0 ||
	    cert_checker_load(trust_anchors, out->pol->creds.crl, out->pol->creds.ncrl, &out->certs,
	                      err, errlen) != 0) {
		rule_set_clear(out);
		return -1;
	}
	return 0;
}
