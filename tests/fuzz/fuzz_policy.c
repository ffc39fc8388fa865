/* Fuzz target: the policy file (policy_load), input written to a private mode-0600 file. A
 * loaded policy must hold what policy.h promises, and deciding a request with it must not
 * fail open. */
#include <stdlib.h>
#include <string.h>

#include "policy/policy.h"
#include "tests/fuzz/fuzz.h"
#include "tests/fuzz/input_file.h"

#define FUZZ_MAX_INPUT (64 * 1024) /* the loader's own cap is 1 MiB; larger adds nothing */

static void check(const struct policy *p)
{
	const struct pol_purpose *pp;
	struct pol_request req;
	size_t i, j;

	for (i = 0; i < p->npurposes; i++)
		if (p->purposes[i].name == NULL || p->purposes[i].nalgs == 0 ||
		    p->purposes[i].algs == NULL || p->purposes[i].max_hashes < 1 ||
		    p->purposes[i].hashes == 0)
			abort();
	for (i = 0; i < p->ncallers; i++) {
		const struct pol_caller *c = &p->callers[i];

		if (c->name == NULL || c->npurposes == 0 || c->purposes == NULL ||
		    c->purposes[c->npurposes] != NULL || (!c->has_uid && !c->has_gid) ||
		    c->classes == 0)
			abort();
		for (j = 0; j < c->npurposes; j++)
			if (policy_purpose(p, c->purposes[j]) == NULL)
				abort();
		/* Every caller is found by its own identity (the most specific entry may be
		 * another one with the same uid), and is refused a request naming no hash. */
		if (c->has_uid && c->has_gid && policy_caller(p, c->uid, c->gid) != c)
			abort();
		memset(&req, 0, sizeof(req));
		req.purpose = c->purposes[0];
		req.cls = POL_CLASS_CITIZEN;
		req.fam = ALG_ECDSA;
		req.hash = HASH_SHA256;
		req.nhashes = 0;
		if (policy_check_sign(p, c, &req, &pp) == POL_OK)
			abort();
		req.nhashes = 1;
		req.purpose = "no such purpose, not a valid name";
		if (policy_check_sign(p, c, &req, &pp) == POL_OK)
			abort();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct policy *p = NULL;
	char err[1024];

	if (size > FUZZ_MAX_INPUT)
		return 0;
	err[0] = '\0';
	if (policy_load(fuzz_input_file("policy.yaml", data, size), &p, err, sizeof(err)) != 0) {
		if (p != NULL || err[0] == '\0')
			abort();
		return 0;
	}
	if (p == NULL)
		abort();
	check(p);
	policy_free(p);
	return 0;
}
