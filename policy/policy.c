/* Policy loading and evaluation. See policy.h and docs/config.md. */
#include "policy/policy.h"

#include <errno.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "policy/yamlfile.h"

#define POL_MAX_NAME 64       /* caller and purpose names */
#define POL_MAX_ENTRIES 256   /* callers, purposes */
#define POL_MAX_HASHES 1000   /* max_hashes upper bound */
#define POL_MAX_QUOTA 1000000 /* daily_quota upper bound */
#define POL_MAX_RATE 1000000  /* rate count upper bound */
#define POL_MAX_CRL 64
#define POL_MAX_PWBUF (1024 * 1024)

#define ALL_HASHES (HASH_SHA256 | HASH_SHA384 | HASH_SHA512)
#define ALL_CLASSES (POL_CLASS_CITIZEN | POL_CLASS_SEAL)

const char *pol_class_name(enum pol_class c)
{
	switch (c) {
	case POL_CLASS_CITIZEN:
		return "citizen";
	case POL_CLASS_SEAL:
		return "seal";
	}
	return "unknown";
}

int pol_class_lookup(const char *name)
{
	if (name == NULL)
		return 0;
	if (strcmp(name, "citizen") == 0)
		return POL_CLASS_CITIZEN;
	if (strcmp(name, "seal") == 0)
		return POL_CLASS_SEAL;
	return 0;
}

const char *pol_reason_str(enum pol_reason r)
{
	switch (r) {
	case POL_OK:
		return "ok";
	case POL_UNKNOWN_CALLER:
		return "unknown_caller";
	case POL_PURPOSE_REQUIRED:
		return "purpose_required";
	case POL_PURPOSE_NOT_ALLOWED:
		return "purpose_not_allowed";
	case POL_CLASS_NOT_ALLOWED:
		return "class_not_allowed";
	case POL_ALGORITHM_NOT_ALLOWED:
		return "algorithm_not_allowed";
	case POL_HASH_NOT_ALLOWED:
		return "hash_algorithm_not_allowed";
	case POL_TOO_MANY_HASHES:
		return "too_many_hashes";
	}
	return "unknown";
}

/* ---- loading ---- */

struct loader {
	struct yfile yf;
	struct policy *p;
};

static int valid_name(const char *s)
{
	size_t i;

	for (i = 0; s[i] != '\0'; i++) {
		if (i >= POL_MAX_NAME)
			return 0;
		if (!((s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= 'a' && s[i] <= 'z') ||
		      (s[i] >= '0' && s[i] <= '9') || s[i] == '.' || s[i] == '_' || s[i] == '-'))
			return 0;
	}
	return i > 0;
}

/* User and group names as passed to getpwnam_r: printable ASCII without spaces or colons. */
static int valid_account(const char *s)
{
	size_t i;

	for (i = 0; s[i] != '\0'; i++) {
		if (i >= 256 || s[i] <= ' ' || s[i] > '~' || s[i] == ':')
			return 0;
	}
	return i > 0;
}

static int lookup_account(struct loader *L, yaml_node_t *n, const char *key, const char *name,
                          int group, unsigned *id)
{
	struct passwd pw, *pwres = NULL;
	struct group gr, *grres = NULL;
	char *buf = NULL;
	size_t buflen = 4096;
	int e, r = -1;

	if (!valid_account(name)) {
		yf_error(&L->yf, n, key, "invalid %s name", group ? "group" : "user");
		goto out;
	}
	for (;;) {
		buf = malloc(buflen);
		if (buf == NULL) {
			yf_error(&L->yf, n, key, "out of memory");
			goto out;
		}
		if (group)
			e = getgrnam_r(name, &gr, buf, buflen, &grres);
		else
			e = getpwnam_r(name, &pw, buf, buflen, &pwres);
		if (e != ERANGE || buflen >= POL_MAX_PWBUF)
			break;
		free(buf);
		buf = NULL;
		buflen *= 4;
	}
	/* Several "not found" errors are documented besides a NULL result. */
	if (e != 0 && e != ENOENT && e != ESRCH && e != EBADF && e != EPERM) {
		yf_error(&L->yf, n, key, "cannot look up %s '%s': %s", group ? "group" : "user",
		         name, strerror(e));
		goto out;
	}
	if (group ? grres == NULL : pwres == NULL) {
		yf_error(&L->yf, n, key, "unknown %s '%s'", group ? "group" : "user", name);
		goto out;
	}
	*id = group ? (unsigned)grres->gr_gid : (unsigned)pwres->pw_uid;
	r = 0;
out:
	free(buf);
	return r;
}

static int parse_rate(struct loader *L, yaml_node_t *n, const char *key, struct pol_rate *rate)
{
	const char *s;
	uint64_t count = 0;
	size_t i;

	if (yf_str(&L->yf, n, key, &s) != 0)
		return -1;
	for (i = 0; s[i] >= '0' && s[i] <= '9'; i++) {
		count = count * 10 + (uint64_t)(s[i] - '0');
		if (count > POL_MAX_RATE)
			return yf_error(&L->yf, n, key, "rate too high (at most %d per period)",
			                POL_MAX_RATE);
	}
	if (i == 0 || (i > 1 && s[0] == '0'))
		goto bad;
	if (count == 0)
		return yf_error(&L->yf, n, key, "rate must be at least 1 (leave it out for none)");
	rate->count = (uint32_t)count;
	if (s[i] == '\0') {
		rate->per_s = 1;
		return 0;
	}
	if (s[i] != '/' || s[i + 1] == '\0' || s[i + 2] != '\0')
		goto bad;
	switch (s[i + 1]) {
	case 's':
		rate->per_s = 1;
		return 0;
	case 'm':
		rate->per_s = 60;
		return 0;
	case 'h':
		rate->per_s = 3600;
		return 0;
	case 'd':
		rate->per_s = 86400;
		return 0;
	}
bad:
	return yf_error(&L->yf, n, key,
	                "expected a rate such as 50/s, 100/m, 1000/h, 5000/d or a number per "
	                "second, found '%s'",
	                s);
}

static void purpose_clear(struct pol_purpose *pp)
{
	free(pp->name);
	free(pp->algs);
	memset(pp, 0, sizeof(*pp));
}

static void caller_clear(struct pol_caller *c)
{
	free(c->name);
	yf_strv_free(c->purposes);
	memset(c, 0, sizeof(*c));
}

static int parse_purpose(struct loader *L, const char *name, yaml_node_t *at, yaml_node_t *map,
                         struct pol_purpose *pp)
{
	struct yfile *yf = &L->yf;
	yaml_node_t *v, *algs_node = NULL, *hashes_node = NULL, *item;
	const char *k, *s;
	char key[POL_MAX_NAME + 64];
	char **hv = NULL;
	size_t nh = 0, i, j;
	uint64_t u;
	int n, na, idx, r = -1;

	pp->max_hashes = 1;
	pp->require_sad = 1;
	pp->hashes = ALL_HASHES;
	snprintf(key, sizeof(key), "purposes.%s", name);
	n = yf_map_size(yf, map, key);
	if (n < 0)
		goto out;
	for (idx = 0; idx < n; idx++) {
		yf_pair(yf, map, idx, &k, &v);
		snprintf(key, sizeof(key), "purposes.%s.%s", name, k);
		if (strcmp(k, "sign_algorithms") == 0) {
			algs_node = v;
		} else if (strcmp(k, "hash_algorithms") == 0) {
			hashes_node = v;
		} else if (strcmp(k, "max_hashes") == 0) {
			if (yf_uint(yf, v, key, POL_MAX_HASHES, &u) != 0)
				goto out;
			if (u < 1) {
				yf_error(yf, v, key, "must be between 1 and %d", POL_MAX_HASHES);
				goto out;
			}
			pp->max_hashes = (uint32_t)u;
		} else if (strcmp(k, "require_sad") == 0) {
			if (yf_bool(yf, v, key, &pp->require_sad) != 0)
				goto out;
		} else {
			yf_error(yf, yf_pair_key(yf, map, idx), key, "unknown key");
			goto out;
		}
	}

	if (hashes_node != NULL) {
		snprintf(key, sizeof(key), "purposes.%s.hash_algorithms", name);
		if (yf_strv(yf, hashes_node, key, &hv, &nh) != 0)
			goto out;
		if (nh == 0) {
			yf_error(yf, hashes_node, key, "needs at least one hash algorithm");
			goto out;
		}
		pp->hashes = 0;
		for (i = 0; i < nh; i++) {
			enum alg_hash h = alg_hash_lookup(hv[i]);

			if (h == HASH_NONE) {
				item = hashes_node->type == YAML_SEQUENCE_NODE
				           ? yf_seq_item(yf, hashes_node, (int)i)
				           : hashes_node;
				yf_error(yf, item, key,
				         "unknown hash algorithm '%s' (sha256, sha384, sha512)",
				         hv[i]);
				goto out;
			}
			pp->hashes |= h;
		}
	}

	snprintf(key, sizeof(key), "purposes.%s.sign_algorithms", name);
	if (algs_node == NULL) {
		yf_error(yf, at, key, "missing (the signature algorithms this purpose allows)");
		goto out;
	}
	if (algs_node->type == YAML_SCALAR_NODE) {
		na = 1;
	} else {
		na = yf_seq_size(yf, algs_node, key);
		if (na < 0)
			goto out;
	}
	if (na == 0) {
		yf_error(yf, algs_node, key, "needs at least one signature algorithm");
		goto out;
	}
	pp->algs = calloc((size_t)na, sizeof(*pp->algs));
	if (pp->algs == NULL) {
		yf_error(yf, algs_node, key, "out of memory");
		goto out;
	}
	for (i = 0; i < (size_t)na; i++) {
		struct pol_sign_alg *a = &pp->algs[i];

		item = algs_node->type == YAML_SCALAR_NODE ? algs_node
		                                           : yf_seq_item(yf, algs_node, (int)i);
		if (item == NULL || item->type != YAML_SCALAR_NODE) {
			yf_error(yf, item != NULL ? item : algs_node, key,
			         "expected a list of algorithm names or OIDs");
			goto out;
		}
		if (yf_str(yf, item, key, &s) != 0)
			goto out;
		if (alg_sign_lookup(s, &a->fam, &a->hash) != 0) {
			yf_error(yf, item, key, "unknown signature algorithm '%s'", s);
			goto out;
		}
		for (j = 0; j < i; j++) {
			if (pp->algs[j].fam == a->fam && pp->algs[j].hash == a->hash) {
				yf_error(yf, item, key, "'%s' is listed twice", s);
				goto out;
			}
		}
		/* An entry no request could ever match is a mistake in the file. */
		if (a->hash != HASH_NONE && !(pp->hashes & a->hash)) {
			yf_error(yf, item, key,
			         "'%s' uses %s, which hash_algorithms does not allow", s,
			         alg_hash_name(a->hash));
			goto out;
		}
	}
	pp->nalgs = (size_t)na;
	r = 0;
out:
	yf_strv_free(hv);
	return r;
}

static int parse_purposes(struct loader *L, yaml_node_t *map)
{
	struct yfile *yf = &L->yf;
	struct policy *p = L->p;
	yaml_node_t *v;
	const char *k;
	int n, i;

	n = yf_map_size(yf, map, "purposes");
	if (n < 0)
		return -1;
	if (n > POL_MAX_ENTRIES)
		return yf_error(yf, map, "purposes", "too many purposes (at most %d)",
		                POL_MAX_ENTRIES);
	p->purposes = calloc((size_t)n + 1, sizeof(*p->purposes));
	if (p->purposes == NULL)
		return yf_error(yf, map, "purposes", "out of memory");
	for (i = 0; i < n; i++) {
		struct pol_purpose *pp = &p->purposes[i];

		yf_pair(yf, map, i, &k, &v);
		if (!valid_name(k))
			return yf_error(
			    yf, yf_pair_key(yf, map, i), "purposes",
			    "invalid purpose name '%.80s' (1 to %d of A-Z a-z 0-9 . _ -)", k,
			    POL_MAX_NAME);
		pp->name = strdup(k);
		if (pp->name == NULL)
			return yf_error(yf, v, "purposes", "out of memory");
		p->npurposes++;
		if (parse_purpose(L, k, yf_pair_key(yf, map, i), v, pp) != 0)
			return -1;
	}
	return 0;
}

static int parse_caller(struct loader *L, const char *name, yaml_node_t *at, yaml_node_t *map,
                        struct pol_caller *c)
{
	struct yfile *yf = &L->yf;
	yaml_node_t *v, *uid_n = NULL, *user_n = NULL, *gid_n = NULL, *group_n = NULL;
	yaml_node_t *purposes_n = NULL, *classes_n = NULL, *item;
	const char *k, *s;
	char key[POL_MAX_NAME + 64];
	char **cv = NULL;
	size_t ncv = 0, i, j;
	uint64_t u;
	unsigned id;
	int n, idx, cls, r = -1;

	c->classes = POL_CLASS_CITIZEN;
	snprintf(key, sizeof(key), "callers.%s", name);
	n = yf_map_size(yf, map, key);
	if (n < 0)
		goto out;
	for (idx = 0; idx < n; idx++) {
		yf_pair(yf, map, idx, &k, &v);
		snprintf(key, sizeof(key), "callers.%s.%s", name, k);
		if (strcmp(k, "uid") == 0)
			uid_n = v;
		else if (strcmp(k, "user") == 0)
			user_n = v;
		else if (strcmp(k, "gid") == 0)
			gid_n = v;
		else if (strcmp(k, "group") == 0)
			group_n = v;
		else if (strcmp(k, "purposes") == 0)
			purposes_n = v;
		else if (strcmp(k, "classes") == 0)
			classes_n = v;
		else if (strcmp(k, "rate") == 0) {
			if (parse_rate(L, v, key, &c->rate) != 0)
				goto out;
		} else {
			yf_error(yf, yf_pair_key(yf, map, idx), key, "unknown key");
			goto out;
		}
	}

	snprintf(key, sizeof(key), "callers.%s", name);
	if (uid_n == NULL && user_n == NULL && gid_n == NULL && group_n == NULL) {
		yf_error(yf, at, key, "needs uid, user, gid or group to identify the caller");
		goto out;
	}
	if (uid_n != NULL && user_n != NULL) {
		yf_error(yf, user_n, key, "give uid or user, not both");
		goto out;
	}
	if (gid_n != NULL && group_n != NULL) {
		yf_error(yf, group_n, key, "give gid or group, not both");
		goto out;
	}
	/* (uid_t)-1 and (gid_t)-1 mean "no change" to the kernel: never a caller. */
	if (uid_n != NULL) {
		snprintf(key, sizeof(key), "callers.%s.uid", name);
		if (yf_uint(yf, uid_n, key, (uid_t)-1 - 1, &u) != 0)
			goto out;
		c->uid = (uid_t)u;
		c->has_uid = 1;
	} else if (user_n != NULL) {
		snprintf(key, sizeof(key), "callers.%s.user", name);
		if (yf_str(yf, user_n, key, &s) != 0 || lookup_account(L, user_n, key, s, 0, &id))
			goto out;
		c->uid = (uid_t)id;
		c->has_uid = 1;
	}
	if (gid_n != NULL) {
		snprintf(key, sizeof(key), "callers.%s.gid", name);
		if (yf_uint(yf, gid_n, key, (gid_t)-1 - 1, &u) != 0)
			goto out;
		c->gid = (gid_t)u;
		c->has_gid = 1;
	} else if (group_n != NULL) {
		snprintf(key, sizeof(key), "callers.%s.group", name);
		if (yf_str(yf, group_n, key, &s) != 0 || lookup_account(L, group_n, key, s, 1, &id))
			goto out;
		c->gid = (gid_t)id;
		c->has_gid = 1;
	}

	snprintf(key, sizeof(key), "callers.%s.purposes", name);
	if (purposes_n == NULL) {
		yf_error(yf, at, key, "missing (the purposes this caller may sign for)");
		goto out;
	}
	if (yf_strv(yf, purposes_n, key, &c->purposes, &c->npurposes) != 0)
		goto out;
	if (c->npurposes == 0) {
		yf_error(yf, purposes_n, key, "needs at least one purpose");
		goto out;
	}
	for (i = 0; i < c->npurposes; i++) {
		item = purposes_n->type == YAML_SEQUENCE_NODE ? yf_seq_item(yf, purposes_n, (int)i)
		                                              : purposes_n;
		if (policy_purpose(L->p, c->purposes[i]) == NULL) {
			yf_error(yf, item, key, "purpose '%.80s' is not defined under purposes",
			         c->purposes[i]);
			goto out;
		}
		for (j = 0; j < i; j++) {
			if (strcmp(c->purposes[j], c->purposes[i]) == 0) {
				yf_error(yf, item, key, "purpose '%s' is listed twice",
				         c->purposes[i]);
				goto out;
			}
		}
	}

	if (classes_n != NULL) {
		snprintf(key, sizeof(key), "callers.%s.classes", name);
		if (yf_strv(yf, classes_n, key, &cv, &ncv) != 0)
			goto out;
		if (ncv == 0) {
			yf_error(yf, classes_n, key, "needs at least one class (citizen, seal)");
			goto out;
		}
		c->classes = 0;
		for (i = 0; i < ncv; i++) {
			cls = pol_class_lookup(cv[i]);
			if (cls == 0) {
				item = classes_n->type == YAML_SEQUENCE_NODE
				           ? yf_seq_item(yf, classes_n, (int)i)
				           : classes_n;
				yf_error(yf, item, key,
				         "unknown credential class '%.80s' (citizen, seal)", cv[i]);
				goto out;
			}
			c->classes |= (unsigned)cls;
		}
	}
	r = 0;
out:
	yf_strv_free(cv);
	return r;
}

static int same_identity(const struct pol_caller *a, const struct pol_caller *b)
{
	return a->has_uid == b->has_uid && a->has_gid == b->has_gid &&
	       (!a->has_uid || a->uid == b->uid) && (!a->has_gid || a->gid == b->gid);
}

static int parse_callers(struct loader *L, yaml_node_t *map)
{
	struct yfile *yf = &L->yf;
	struct policy *p = L->p;
	yaml_node_t *v;
	const char *k;
	char key[POL_MAX_NAME + 16];
	size_t j;
	int n, i;

	n = yf_map_size(yf, map, "callers");
	if (n < 0)
		return -1;
	if (n > POL_MAX_ENTRIES)
		return yf_error(yf, map, "callers", "too many callers (at most %d)",
		                POL_MAX_ENTRIES);
	p->callers = calloc((size_t)n + 1, sizeof(*p->callers));
	if (p->callers == NULL)
		return yf_error(yf, map, "callers", "out of memory");
	for (i = 0; i < n; i++) {
		struct pol_caller *c = &p->callers[i];

		yf_pair(yf, map, i, &k, &v);
		if (!valid_name(k))
			return yf_error(
			    yf, yf_pair_key(yf, map, i), "callers",
			    "invalid caller name '%.80s' (1 to %d of A-Z a-z 0-9 . _ -)", k,
			    POL_MAX_NAME);
		c->name = strdup(k);
		if (c->name == NULL)
			return yf_error(yf, v, "callers", "out of memory");
		p->ncallers++;
		if (parse_caller(L, k, yf_pair_key(yf, map, i), v, c) != 0)
			return -1;
		for (j = 0; j < (size_t)i; j++) {
			if (same_identity(&p->callers[j], c)) {
				snprintf(key, sizeof(key), "callers.%s", c->name);
				return yf_error(yf, yf_pair_key(yf, map, i), key,
				                "same identity (uid/gid) as caller '%s'",
				                p->callers[j].name);
			}
		}
	}
	return 0;
}

static int parse_credentials(struct loader *L, yaml_node_t *map)
{
	struct yfile *yf = &L->yf;
	struct pol_credentials *cr = &L->p->creds;
	yaml_node_t *v;
	const char *k;
	char key[64];
	uint64_t u;
	int n, idx, r = -1;

	n = yf_map_size(yf, map, "credentials");
	if (n < 0)
		goto out;
	for (idx = 0; idx < n; idx++) {
		yf_pair(yf, map, idx, &k, &v);
		snprintf(key, sizeof(key), "credentials.%.40s", k);
		if (strcmp(k, "daily_quota") == 0) {
			if (yf_uint(yf, v, key, POL_MAX_QUOTA, &u) != 0)
				goto out;
			cr->daily_quota = (uint32_t)u;
		} else if (strcmp(k, "min_cert_validity") == 0) {
			if (yf_duration(yf, v, key, &cr->min_cert_validity) != 0)
				goto out;
		} else if (strcmp(k, "require_non_repudiation") == 0) {
			if (yf_bool(yf, v, key, &cr->require_non_repudiation) != 0)
				goto out;
		} else if (strcmp(k, "crl") == 0) {
			yf_strv_free(cr->crl);
			cr->crl = NULL;
			cr->ncrl = 0;
			if (yf_paths(yf, v, key, POL_MAX_CRL, &cr->crl, &cr->ncrl) != 0)
				goto out;
		} else {
			yf_error(yf, yf_pair_key(yf, map, idx), key, "unknown key");
			goto out;
		}
	}
	r = 0;
out:
	return r;
}

int policy_load(const char *path, struct policy **out, char *err, size_t errlen)
{
	struct loader L;
	struct policy *p = NULL;
	yaml_node_t *root, *v, *callers = NULL, *purposes = NULL, *creds = NULL;
	const char *k;
	int n, i, r = -1;

	*out = NULL;
	memset(&L, 0, sizeof(L));
	if (yf_load(&L.yf, path, err, errlen) != 0)
		goto out;
	p = calloc(1, sizeof(*p));
	if (p == NULL || (p->path = strdup(path)) == NULL) {
		yf_error(&L.yf, NULL, NULL, "out of memory");
		goto out;
	}
	p->creds.crl = calloc(1, sizeof(*p->creds.crl));
	if (p->creds.crl == NULL) {
		yf_error(&L.yf, NULL, NULL, "out of memory");
		goto out;
	}
	L.p = p;

	root = yf_root(&L.yf);
	n = yf_map_size(&L.yf, root, "policy");
	if (n < 0)
		goto out;
	for (i = 0; i < n; i++) {
		yf_pair(&L.yf, root, i, &k, &v);
		if (strcmp(k, "callers") == 0)
			callers = v;
		else if (strcmp(k, "purposes") == 0)
			purposes = v;
		else if (strcmp(k, "credentials") == 0)
			creds = v;
		else {
			yf_error(&L.yf, yf_pair_key(&L.yf, root, i), k,
			         "unknown key (expected callers, purposes, credentials)");
			goto out;
		}
	}
	if (purposes == NULL) {
		yf_error(&L.yf, root, "purposes", "missing");
		goto out;
	}
	if (callers == NULL) {
		yf_error(&L.yf, root, "callers", "missing");
		goto out;
	}
	/* Purposes first: callers refer to them, wherever they appear in the file. */
	if (parse_purposes(&L, purposes) != 0 || parse_callers(&L, callers) != 0)
		goto out;
	if (creds != NULL && parse_credentials(&L, creds) != 0)
		goto out;
	*out = p;
	p = NULL;
	r = 0;
out:
	policy_free(p);
	yf_free(&L.yf);
	return r;
}

void policy_free(struct policy *p)
{
	size_t i;

	if (p == NULL)
		return;
	for (i = 0; i < p->ncallers; i++)
		caller_clear(&p->callers[i]);
	free(p->callers);
	for (i = 0; i < p->npurposes; i++)
		purpose_clear(&p->purposes[i]);
	free(p->purposes);
	yf_strv_free(p->creds.crl);
	free(p->path);
	free(p);
}

/* ---- evaluation ---- */

const struct pol_caller *policy_caller(const struct policy *p, uid_t uid, gid_t gid)
{
	const struct pol_caller *c, *uid_only = NULL, *gid_only = NULL;
	size_t i;

	if (p == NULL)
		return NULL;
	/* The most specific entry wins: uid and gid, then uid, then gid alone. */
	for (i = 0; i < p->ncallers; i++) {
		c = &p->callers[i];
		if (c->has_uid && c->uid == uid) {
			if (c->has_gid && c->gid == gid)
				return c;
			if (!c->has_gid && uid_only == NULL)
				uid_only = c;
		} else if (!c->has_uid && c->has_gid && c->gid == gid && gid_only == NULL) {
			gid_only = c;
		}
	}
	return uid_only != NULL ? uid_only : gid_only;
}

const struct pol_purpose *policy_purpose(const struct policy *p, const char *name)
{
	size_t i;

	if (p == NULL || name == NULL)
		return NULL;
	for (i = 0; i < p->npurposes; i++)
		if (p->purposes[i].name != NULL && strcmp(p->purposes[i].name, name) == 0)
			return &p->purposes[i];
	return NULL;
}

int policy_caller_may_use(const struct pol_caller *caller, enum pol_class cls)
{
	if (caller == NULL || (cls != POL_CLASS_CITIZEN && cls != POL_CLASS_SEAL))
		return 0;
	return (caller->classes & (unsigned)cls) != 0;
}

enum pol_reason policy_check_sign(const struct policy *p, const struct pol_caller *caller,
                                  const struct pol_request *req, const struct pol_purpose **purpose)
{
	const struct pol_purpose *pp;
	const char *name = NULL;
	size_t i;
	int found = 0;

	if (purpose != NULL)
		*purpose = NULL;
	if (p == NULL || caller == NULL || req == NULL)
		return POL_UNKNOWN_CALLER;

	if (req->purpose == NULL) {
		if (caller->npurposes != 1)
			return POL_PURPOSE_REQUIRED;
		name = caller->purposes[0];
	} else {
		for (i = 0; i < caller->npurposes; i++) {
			if (strcmp(caller->purposes[i], req->purpose) == 0) {
				name = caller->purposes[i];
				break;
			}
		}
		if (name == NULL)
			return POL_PURPOSE_NOT_ALLOWED;
	}
	pp = policy_purpose(p, name);
	if (pp == NULL) /* policy_load refuses this; fail closed anyway */
		return POL_PURPOSE_NOT_ALLOWED;

	if (!policy_caller_may_use(caller, req->cls))
		return POL_CLASS_NOT_ALLOWED;

	if (alg_hash_len(req->hash) == 0 || !(pp->hashes & (unsigned)req->hash))
		return POL_HASH_NOT_ALLOWED;

	for (i = 0; i < pp->nalgs && !found; i++)
		found = req->fam != ALG_NONE && pp->algs[i].fam == req->fam &&
		        (pp->algs[i].hash == HASH_NONE || pp->algs[i].hash == req->hash);
	if (!found)
		return POL_ALGORITHM_NOT_ALLOWED;

	if (req->nhashes == 0 || req->nhashes > pp->max_hashes)
		return POL_TOO_MANY_HASHES;

	if (purpose != NULL)
		*purpose = pp;
	return POL_OK;
}
