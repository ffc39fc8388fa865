/* The signing core. A sign request is decided in this order, each step refusing with a stable
 * reason: caller, credential (exists, class), registry status, purpose/algorithm/hash/count,
 * rate limit, certificate, signature activation data, daily quota; then the token signs and
 * the ledger records the request durably (re-checking quota and SAD consumption in the same
 * transaction) before any signature is returned. */
#include "signer/core/service.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/sha.h>

#include "signer/core/cms.h"

#define CERT_CACHE_MIN 1024
#define CERT_CACHE_PER_KEY 2 /* slots per key the wrapped keys' cache holds */
#define CERT_CACHE_MAX (1u << 22)

/* Copy a string into a fixed field, cut at the field's size. */
#define SET_FIELD(dst, src) snprintf((dst), sizeof(dst), "%s", (src) != NULL ? (src) : "")

/* Certificate check results by a tag of credential ID and certificate (and for a wrapped key
 * its public key), with the rules generation; only good results are kept, until their
 * good_until. Keyed so because key entries come and go (the wrapped keys' LRU frees them): an
 * address could come back for another credential. Direct-mapped, CERT_CACHE_PER_KEY slots per
 * key of keys.cache: a credential whose key is held has its check held too, mostly, and the
 * memory is bounded by keys.cache. */
struct cert_slot {
	unsigned char tag[32];
	unsigned long generation;
	time_t good_until;
	int used;
};

struct svc_cert_cache {
	pthread_mutex_t mu;
	size_t n; /* a power of two */
	uint64_t hits, misses;
	struct cert_slot *slot;
};

static struct cert_slot *cert_slot_of(struct svc_cert_cache *c, const unsigned char tag[32])
{
	uint64_t v;

	memcpy(&v, tag, sizeof(v));
	return &c->slot[v & (c->n - 1)];
}

static struct svc_cert_cache *cert_cache_new(unsigned keys_cache)
{
	struct svc_cert_cache *c = calloc(1, sizeof(*c));

	if (c == NULL)
		return NULL;
	c->n = CERT_CACHE_MIN;
	while (c->n < (size_t)keys_cache * CERT_CACHE_PER_KEY && c->n < CERT_CACHE_MAX)
		c->n *= 2;
	if ((c->slot = calloc(c->n, sizeof(*c->slot))) == NULL) {
		free(c);
		return NULL;
	}
	pthread_mutex_init(&c->mu, NULL);
	return c;
}

static void cert_cache_free(struct svc_cert_cache *c)
{
	if (c == NULL)
		return;
	pthread_mutex_destroy(&c->mu);
	free(c->slot);
	free(c);
}

static int cert_cached(struct svc_cert_cache *c, const unsigned char tag[32], unsigned long gen,
                       time_t now)
{
	struct cert_slot *sl = cert_slot_of(c, tag);
	int hit;

	pthread_mutex_lock(&c->mu);
	hit = sl->used && memcmp(sl->tag, tag, 32) == 0 && sl->generation == gen &&
	      now <= sl->good_until;
	if (hit)
		c->hits++;
	else
		c->misses++;
	pthread_mutex_unlock(&c->mu);
	return hit;
}

static void cert_remember(struct svc_cert_cache *c, const unsigned char tag[32], unsigned long gen,
                          time_t good_until)
{
	struct cert_slot *sl = cert_slot_of(c, tag);

	pthread_mutex_lock(&c->mu);
	memcpy(sl->tag, tag, 32);
	sl->used = 1;
	sl->generation = gen;
	sl->good_until = good_until;
	pthread_mutex_unlock(&c->mu);
}

/* The tag of a credential's certificate: SHA-256 over ID, NUL, the certificate's SHA-256 and,
 * for a wrapped key, its public key's. */
static int cert_tag(const struct reg_cred *rc, const struct tok_key *key, unsigned char tag[32])
{
	unsigned char buf[CRED_MAX_ID + 1 + 64];
	size_t idlen = strlen(rc->id);
	unsigned int n = 0;

	memcpy(buf, rc->id, idlen + 1);
	if (rc->store == REG_STORE_WRAPPED) {
		SHA256(rc->cert, rc->cert_len, buf + idlen + 1);
		SHA256(rc->wkey.pub, rc->wkey.pub_len, buf + idlen + 33);
		n = 64;
	} else if (X509_digest(key->cert, EVP_sha256(), buf + idlen + 1, &n) != 1 || n != 32) {
		return -1;
	}
	SHA256(buf, idlen + 1 + n, tag);
	return 0;
}

/* A wrapped credential's certificate from the registry, checked to hold its key. */
static X509 *wrapped_cert(const struct reg_cred *rc, const struct tok_key *key)
{
	const unsigned char *p = rc->cert;
	X509 *x;

	if (rc->cert == NULL)
		return NULL;
	x = d2i_X509(NULL, &p, (long)rc->cert_len);
	if (x != NULL &&
	    (p != rc->cert + rc->cert_len || EVP_PKEY_eq(X509_get0_pubkey(x), key->pub) != 1)) {
		X509_free(x);
		x = NULL;
	}
	ERR_clear_error();
	return x;
}

static int token_error(struct refusal *f, int r, const char *what);

/* The credential's key: its token object by URI, or its wrapped blob unwrapped into the
 * cache; svc_key_put lets a wrapped one go. */
static int svc_key_get(struct service *s, const struct reg_cred *rc, const struct tok_key **key,
                       struct refusal *f)
{
	struct tok_wrapped_ref ref = {0};
	int t;

	if (rc->store != REG_STORE_WRAPPED) {
		t = tok_key_get(s->tok, rc->key_uri, key);
	} else if (!rc->wkey.present) {
		return refuse(f, R_KEY_UNUSABLE, "credential %s has no wrapped key", rc->id);
	} else {
		ref.cred_id = rc->id;
		ref.kek_id = rc->wkey.kek;
		ref.blob = rc->wkey.blob;
		ref.blob_len = rc->wkey.blob_len;
		ref.spki = rc->wkey.pub;
		ref.spki_len = rc->wkey.pub_len;
		ref.binding = rc->wkey.binding;
		ref.binding_len = rc->wkey.binding_len;
		t = tok_wrapped_get(s->wcache, &ref, key);
	}
	if (t == TOK_ERR_UNUSABLE)
		return refuse(f, R_KEY_UNUSABLE,
		              "the wrapped key of credential %s is refused; nothing was signed",
		              rc->id);
	return t == TOK_OK ? 0 : token_error(f, t, "credential key");
}

static void svc_key_put(struct service *s, const struct tok_key *key)
{
	if (key != NULL && key->wrapped != NULL)
		tok_wrapped_put(s->wcache, key);
}

void svc_rules_free(struct svc_rules *r)
{
	if (r == NULL)
		return;
	rule_set_clear(&r->set);
	free(r);
}

int svc_rules_load(const struct config *cfg, struct svc_rules **out, char *err, size_t errlen)
{
	struct svc_rules *r;

	*out = NULL;
	if ((r = calloc(1, sizeof(*r))) == NULL) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	if (rule_set_load(cfg->policy_path, cfg->sad_issuers, cfg->nsad_issuers, cfg->trust_anchors,
	                  &r->set, err, errlen) != 0) {
		free(r);
		return -1;
	}
	r->refs = 1;
	*out = r;
	return 0;
}

static struct svc_rules *rules_get(struct service *s)
{
	struct svc_rules *r;

	pthread_mutex_lock(&s->rules_mu);
	r = s->rules;
	r->refs++;
	pthread_mutex_unlock(&s->rules_mu);
	return r;
}

static void rules_put(struct service *s, struct svc_rules *r)
{
	long refs;

	pthread_mutex_lock(&s->rules_mu);
	refs = --r->refs;
	pthread_mutex_unlock(&s->rules_mu);
	if (refs == 0)
		svc_rules_free(r);
}

int svc_reload(struct service *s, char *err, size_t errlen)
{
	struct svc_rules *r, *old;

	if (svc_rules_load(s->cfg, &r, err, errlen) != 0)
		return -1;
	pthread_mutex_lock(&s->rules_mu);
	r->generation = ++s->generation;
	old = s->rules;
	s->rules = r;
	pthread_mutex_unlock(&s->rules_mu);
	rules_put(s, old);
	/* Certificates imported since (renewals) are read from the token again. */
	tok_key_flush(s->tok);
	return 0;
}

/* Checkpoints of the ledger are signed by the audit key, on the ledger writer's thread. */
static int audit_sign(void *arg, const uint8_t head[32], uint8_t *sig, size_t *siglen)
{
	struct service *s = arg;
	struct tok_sign_params tp = {
	    .scheme = s->audit_key->type == TOK_KEY_EC ? TOK_ECDSA : TOK_RSA_PKCS1,
	    .hash_nid = NID_sha256,
	};
	uint8_t buf[TOK_MAX_SIG];
	size_t len = sizeof(buf);
	int r = tok_sign_digest(s->tok, s->audit_key, &tp, head, 32, buf, &len);

	if (r != TOK_OK)
		return r;
	if (len > *siglen)
		return -1;
	memcpy(sig, buf, len);
	*siglen = len;
	return 0;
}

/* The cache of unwrapped keys. Nothing is looked up in the token here: start costs the same
 * whatever the number of credentials, and a token without a KEK serves its token objects. */
static int svc_wcache_open(struct service *s, char *err, size_t errlen)
{
	if (tok_wcache_new(s->tok, s->cfg->keys_kek, s->cfg->keys_cache, &s->wcache) == TOK_OK)
		return 0;
	snprintf(err, errlen, "%s: keys.kek %s: not a usable PKCS#11 URI", s->cfg->path,
	         s->cfg->keys_kek);
	return -1;
}

void svc_cache_stats(struct service *s, struct svc_cache_stats *out)
{
	memset(out, 0, sizeof(*out));
	tok_wcache_stats(s->wcache, &out->keys);
	if (s->cert_cache != NULL) {
		pthread_mutex_lock(&s->cert_cache->mu);
		out->cert_hits = s->cert_cache->hits;
		out->cert_misses = s->cert_cache->misses;
		out->cert_slots = s->cert_cache->n;
		pthread_mutex_unlock(&s->cert_cache->mu);
	}
}

/* One line at shutdown: how the cache of unwrapped keys fared (tools/bench reads it). */
static void svc_wcache_report(struct service *s)
{
	struct tok_wcache_stats st;

	if (s->wcache == NULL)
		return;
	tok_wcache_stats(s->wcache, &st);
	if (st.hits + st.misses + st.refused > 0)
		fprintf(stderr,
		        "iamsignd: core: wrapped keys: %llu hits, %llu misses, %llu "
		        "evictions, %llu refused, %llu held of %u, %llu unwrapped again "
		        "without proof\n",
		        (unsigned long long)st.hits, (unsigned long long)st.misses,
		        (unsigned long long)st.evictions, (unsigned long long)st.refused,
		        (unsigned long long)st.held, st.capacity,
		        (unsigned long long)st.proven_again);
}

int svc_open(struct service *s, struct config *cfg, int no_fsync, char *err, size_t errlen)
{
	struct tok_opts topts = {0};
	struct ledger_opts lopts = {0};
	int r;

	memset(s, 0, sizeof(*s));
	s->cfg = cfg;
	pthread_mutex_init(&s->rules_mu, NULL);
	if (cfg->trust_anchors == NULL) {
		snprintf(err, errlen,
		         "%s: trust_anchors: required: signing certificates must chain "
		         "to a configured CA",
		         cfg->path);
		goto fail;
	}
	if (svc_rules_load(cfg, &s->rules, err, errlen) != 0)
		goto fail;
	if ((s->rates = rate_table_new()) == NULL ||
	    (s->cert_cache = cert_cache_new(cfg->keys_cache)) == NULL) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	if (registry_open(cfg->state_dir, 1, &s->reg, err, errlen) != REG_OK)
		goto fail;
	topts.module = cfg->token_module;
	topts.module_dirs = (const char *const *)cfg->token_module_dirs;
	topts.uri = cfg->token_uri;
	topts.pin_file = cfg->token_pin_file;
	topts.require_initialized = 1;
	topts.max_sessions = cfg->token_sessions;
	if ((r = tok_open(&topts, &s->tok, err, errlen)) != TOK_OK)
		goto fail;
	if (svc_wcache_open(s, err, errlen) != 0)
		goto fail;
	if ((r = tok_key_get(s->tok, cfg->ledger_audit_key, &s->audit_key)) != TOK_OK) {
		snprintf(err, errlen, "ledger.audit_key %s: %s%s", cfg->ledger_audit_key,
		         tok_strerror(r),
		         r == TOK_ERR_NOT_FOUND ? " (create it with iamsign-admin audit-key, or "
		                                  "name an existing key)"
		                                : "");
		goto fail;
	}
	lopts.no_fsync = no_fsync;
	lopts.checkpoint_every = cfg->ledger_checkpoint_every;
	lopts.checkpoint_secs = cfg->ledger_checkpoint_secs;
	lopts.timeout_ms = cfg->ledger_write_timeout * 1000;
	lopts.sign = audit_sign;
	lopts.sign_arg = s;
	if (ledger_open(cfg->state_dir, &lopts, &s->ledger, err, errlen) != LEDGER_OK)
		goto fail;
	if (cfg->tsa_url != NULL && tsa_verifier_load(cfg, &s->tsa, err, errlen) != 0)
		goto fail;
	return 0;
fail:
	svc_close(s);
	return -1;
}

void svc_close(struct service *s)
{
	/* The ledger first: its final checkpoint is signed with the token. */
	if (s->ledger != NULL)
		ledger_close(s->ledger);
	if (s->tok != NULL)
		tok_close(s->tok);
	svc_wcache_report(s);
	tok_wcache_free(s->wcache); /* after the token: no worker may still use it */
	if (s->reg != NULL)
		registry_close(s->reg);
	if (s->rules != NULL)
		rules_put(s, s->rules);
	rate_table_free(s->rates);
	tsa_verifier_free(s->tsa);
	cert_cache_free(s->cert_cache);
	pthread_mutex_destroy(&s->rules_mu);
	memset(s, 0, sizeof(*s));
}

void svc_audit_begin(struct audit_rec *rec, const struct peer *p, const char *op)
{
	struct timespec ts;

	memset(rec, 0, sizeof(*rec));
	clock_gettime(CLOCK_REALTIME, &ts);
	rec->time_ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
	rec->uid = (uint32_t)p->uid;
	rec->gid = (uint32_t)p->gid;
	rec->pid = (int32_t)p->pid;
	/* op comes from the request path: keep it printable. */
	for (size_t i = 0; op[i] != '\0' && i + 1 < sizeof(rec->op); i++)
		rec->op[i] = op[i] > 0x20 && op[i] < 0x7f ? op[i] : '?';
}

int svc_conclude(struct service *s, struct audit_rec *rec, int ok, struct refusal *f)
{
	if (!rec->settled) {
		if (ok) {
			SET_FIELD(rec->decision, "allow");
		} else {
			SET_FIELD(rec->decision, "deny");
			SET_FIELD(rec->reason, reason_name(f->reason) != NULL
			                           ? reason_name(f->reason)
			                           : "internal_error");
			SET_FIELD(rec->detail, f->desc);
			rec->nsigs = 0;
			rec->ntst = 0;
		}
		/* Only a signature's own record carries conditions: nothing else consumes. */
		rec->quota_add = 0;
		rec->jti_add = 0;
		ledger_append(s->ledger, rec); /* settles it, written or not */
	}
	if (rec->seq != 0)
		return ok;
	if (ok || f->reason != R_LEDGER_UNAVAILABLE)
		refuse(f, R_LEDGER_UNAVAILABLE,
		       "the audit ledger cannot be written; nothing was done");
	return 0;
}

static const struct pol_caller *find_caller(const struct svc_rules *rules, const struct peer *p,
                                            struct audit_rec *rec, struct refusal *f)
{
	const struct pol_caller *c = policy_caller(rules->set.pol, p->uid, p->gid);

	if (c == NULL)
		refuse(f, R_UNKNOWN_CALLER, "no caller in the policy matches uid %u gid %u",
		       (unsigned)p->uid, (unsigned)p->gid);
	else
		SET_FIELD(rec->caller, c->name);
	return c;
}

static int token_error(struct refusal *f, int r, const char *what)
{
	switch (r) {
	case TOK_ERR_UNAVAILABLE:
	case TOK_ERR_PIN:
		return refuse(f, R_TOKEN_UNAVAILABLE, "%s: %s", what, tok_strerror(r));
	case TOK_ERR_BUSY:
		return refuse(f, R_TOKEN_BUSY, "%s: %s", what, tok_strerror(r));
	case TOK_ERR_UNUSABLE:
		return refuse(f, R_KEY_UNUSABLE, "%s: %s", what, tok_strerror(r));
	case TOK_ERR_NOT_FOUND:
		return refuse(f, R_KEY_NOT_FOUND, "%s: the credential's key is not on the token",
		              what);
	case TOK_ERR_BAD_INPUT:
	case TOK_ERR_MECHANISM:
		return refuse(f, R_ALGORITHM_NOT_SUPPORTED, "%s: %s", what, tok_strerror(r));
	default:
		return refuse(f, R_INTERNAL_ERROR, "%s: %s", what, tok_strerror(r));
	}
}

/* The registry entry of an ID, usable (class allowed) by the caller. */
static int lookup_cred(struct service *s, const struct pol_caller *c, const char *id,
                       struct reg_cred *rc, struct audit_rec *rec, struct refusal *f)
{
	int r = registry_get(s->reg, id, rc);

	SET_FIELD(rec->cred, id);
	if (r == REG_ERR_NOT_FOUND || r == REG_ERR_BAD_INPUT)
		return refuse(f, R_UNKNOWN_CREDENTIAL, "Invalid parameter credentialID");
	if (r != REG_OK)
		return refuse(f, R_REGISTRY_UNAVAILABLE, "the credential registry cannot be read");
	SET_FIELD(rec->owner, rc->owner);
	if (!policy_caller_may_use(c, (enum pol_class)rc->cls)) {
		refuse(f, R_CLASS_NOT_ALLOWED, "caller %s may not use %s credentials", c->name,
		       pol_class_name((enum pol_class)rc->cls));
		reg_cred_clear(rc);
		return -1;
	}
	return 0;
}

/* The policy's, certificate check's and SAD check's own results as the API's reasons. */
static enum reason reason_of_policy(enum pol_reason r)
{
	switch (r) {
	case POL_OK:
		break;
	case POL_UNKNOWN_CALLER:
		return R_UNKNOWN_CALLER;
	case POL_PURPOSE_REQUIRED:
		return R_PURPOSE_REQUIRED;
	case POL_PURPOSE_NOT_ALLOWED:
		return R_PURPOSE_NOT_ALLOWED;
	case POL_CLASS_NOT_ALLOWED:
		return R_CLASS_NOT_ALLOWED;
	case POL_ALGORITHM_NOT_ALLOWED:
		return R_ALGORITHM_NOT_ALLOWED;
	case POL_HASH_NOT_ALLOWED:
		return R_HASH_ALGORITHM_NOT_ALLOWED;
	case POL_TOO_MANY_HASHES:
		return R_TOO_MANY_HASHES;
	}
	return R_INTERNAL_ERROR;
}

static enum reason reason_of_cert(enum cert_result r)
{
	switch (r) {
	case CERT_OK:
		break;
	case CERT_MISSING:
		return R_CERT_MISSING;
	case CERT_NOT_YET_VALID:
		return R_CERT_NOT_YET_VALID;
	case CERT_EXPIRED:
		return R_CERT_EXPIRED;
	case CERT_VALIDITY_TOO_SHORT:
		return R_CERT_EXPIRING;
	case CERT_UNTRUSTED:
		return R_CERT_UNTRUSTED;
	case CERT_REVOKED:
		return R_CERT_REVOKED;
	case CERT_CRL_STALE:
		return R_CRL_STALE;
	case CERT_NO_NON_REPUDIATION:
		return R_CERT_NO_NON_REPUDIATION;
	}
	return R_INTERNAL_ERROR;
}

static enum reason reason_of_sad(enum sad_result r)
{
	switch (r) {
	case SAD_OK:
		break;
	case SAD_MALFORMED:
	case SAD_BAD_ALG:
	case SAD_UNTRUSTED:
	case SAD_NOT_YET_VALID:
	case SAD_LIFETIME:
		return R_SAD_INVALID;
	case SAD_EXPIRED:
		return R_SAD_EXPIRED;
	case SAD_WRONG_CREDENTIAL:
		return R_SAD_WRONG_CREDENTIAL;
	case SAD_WRONG_SUBJECT:
		return R_SAD_WRONG_SUBJECT;
	case SAD_WRONG_PURPOSE:
		return R_SAD_WRONG_PURPOSE;
	case SAD_HASH_NOT_AUTHORISED:
		return R_HASH_NOT_AUTHORISED;
	}
	return R_SAD_INVALID;
}

static STACK_OF(X509) * load_chain(const char *pem)
{
	STACK_OF(X509) * sk;
	BIO *b;
	X509 *x;

	if (pem == NULL)
		return NULL;
	if ((sk = sk_X509_new_null()) == NULL)
		return NULL;
	if ((b = BIO_new_mem_buf(pem, -1)) == NULL)
		return sk;
	while ((x = PEM_read_bio_X509(b, NULL, NULL, NULL)) != NULL)
		if (!sk_X509_push(sk, x))
			X509_free(x);
	BIO_free(b);
	return sk;
}

/* The signing certificate: present, trusted, valid long enough, not revoked, nonRepudiation.
 * The credential's chain is parsed only when a check is due (*chain keeps it for the CMS), and
 * a wrapped key's certificate too (*owned). */
static int check_cert(struct service *s, const struct svc_rules *rules, const struct tok_key *key,
                      const struct reg_cred *rc, X509 **owned, STACK_OF(X509) * *chain, time_t now,
                      struct refusal *f)
{
	const struct pol_credentials *pc = &rules->set.pol->creds;
	enum cert_result cr;
	time_t good_until = 0;
	unsigned char tag[32];
	X509 *cert = key->cert;

	if (rc->store == REG_STORE_WRAPPED ? rc->cert == NULL : key->cert == NULL)
		return refuse(f, R_CERT_MISSING, "the credential has no certificate");
	if (cert_tag(rc, key, tag) != 0)
		return refuse(f, R_INTERNAL_ERROR, "the certificate cannot be hashed");
	if (cert_cached(s->cert_cache, tag, rules->generation, now))
		return 0;
	if (rc->store == REG_STORE_WRAPPED) {
		if (*owned == NULL && (*owned = wrapped_cert(rc, key)) == NULL)
			return refuse(f, R_CERT_MISSING,
			              "the credential's certificate is damaged or not of its key");
		cert = *owned;
	}
	if (*chain == NULL)
		*chain = load_chain(rc->chain_pem);
	cr = cert_check(rules->set.certs, cert, *chain, now, pc->min_cert_validity,
	                pc->require_non_repudiation, &good_until);
	if (cr != CERT_OK)
		return refuse(f, reason_of_cert(cr), "the signing certificate is refused: %s",
		              cert_reason(cr));
	cert_remember(s->cert_cache, tag, rules->generation, good_until);
	return 0;
}

/* The citizen's approval: required for citizen credentials and for purposes that say so. */
static int check_sad(struct service *s, const struct svc_rules *rules, const struct sign_req *req,
                     const struct reg_cred *rc, const struct pol_purpose *purpose, time_t now,
                     struct audit_rec *rec, struct refusal *f)
{
	struct sad_claims *c;
	enum sad_result sr;
	int64_t used;
	int r = -1;

	if (req->sad == NULL) {
		if (purpose->require_sad || rc->cls == POL_CLASS_CITIZEN)
			return refuse(f, R_SAD_REQUIRED,
			              "this request needs the citizen's signature activation "
			              "data (SAD)");
		return 0;
	}
	if ((c = malloc(sizeof(*c))) == NULL)
		return refuse(f, R_INTERNAL_ERROR, "out of memory");
	sr = sad_verify(rules->set.sad, rc->device_key_pem, req->sad, now, c);
	if (sr == SAD_OK)
		sr = sad_match(c, rc->id, rc->owner, purpose->name, req->hash,
		               (const uint8_t(*)[64])req->hashes, req->nhashes);
	if (sr != SAD_OK) {
		refuse(f, reason_of_sad(sr), "SAD refused: %s", sad_strerror(sr));
		goto out;
	}
	SET_FIELD(rec->jti, c->jti);
	if ((used = ledger_jti_used(s->ledger, c->jti)) < 0) {
		refuse(f, R_LEDGER_UNAVAILABLE, "the audit ledger cannot be read");
		goto out;
	}
	if ((uint64_t)used + req->nhashes > c->num) {
		refuse(f, R_SAD_REPLAYED,
		       "the SAD approves %u signature(s) and all were made with it", c->num);
		goto out;
	}
	/* Authoritative in the ledger's transaction, so concurrent requests cannot overrun it. */
	rec->jti_add = (uint32_t)req->nhashes;
	rec->jti_num = c->num;
	rec->jti_exp = c->exp;
	r = 0;
out:
	OPENSSL_cleanse(c, sizeof(*c));
	free(c);
	return r;
}

static int check_quota(struct service *s, const struct svc_rules *rules, const struct reg_cred *rc,
                       size_t n, time_t now, struct audit_rec *rec, struct refusal *f)
{
	uint32_t quota = rules->set.pol->creds.daily_quota;
	int64_t day, used;

	if (quota == 0 || rc->cls != POL_CLASS_CITIZEN)
		return 0;
	day = hk_day(now);
	if ((used = ledger_quota_used(s->ledger, rc->id, day)) < 0)
		return refuse(f, R_LEDGER_UNAVAILABLE, "the audit ledger cannot be read");
	if ((uint64_t)used + n > quota)
		return refuse(f, R_QUOTA_EXCEEDED,
		              "credential %s has made %lld of its %u signatures today", rc->id,
		              (long long)used, quota);
	rec->quota_add = (uint32_t)n;
	rec->quota_day = day;
	rec->quota_max = quota;
	return 0;
}

struct cms_signer {
	struct token *tok;
	const struct tok_key *key;
	const struct tok_sign_params *params;
};

static int cms_sign_cb(void *arg, const uint8_t *dig, size_t dlen, uint8_t *sig, size_t *siglen)
{
	struct cms_signer *cs = arg;
	uint8_t buf[TOK_MAX_SIG];
	size_t len = sizeof(buf);
	int r = tok_sign_digest(cs->tok, cs->key, cs->params, dig, dlen, buf, &len);

	if (r != TOK_OK)
		return r;
	if (len > *siglen)
		return TOK_ERR_INTERNAL;
	memcpy(sig, buf, len);
	*siglen = len;
	return 0;
}

static int make_signatures(struct service *s, const struct sign_req *req, const struct tok_key *key,
                           X509 *cert, STACK_OF(X509) * chain, struct sign_result *out,
                           struct refusal *f)
{
	struct tok_sign_params tp = {0};
	size_t dlen = alg_hash_len(req->hash);
	int t;

	tp.scheme = req->fam == ALG_ECDSA     ? TOK_ECDSA
	            : req->fam == ALG_RSA_PSS ? TOK_RSA_PSS
	                                      : TOK_RSA_PKCS1;
	tp.hash_nid = alg_hash_nid(req->hash);
	tp.mgf1_nid = tp.hash_nid;
	tp.salt_len = req->pss_salt;
	for (size_t i = 0; i < req->nhashes; i++) {
		if (req->cms) {
			struct cms_signer cs = {s->tok, key, &tp};
			struct cms_params cp = {
			    .cert = cert,
			    .chain = chain,
			    .hash_nid = tp.hash_nid,
			    .sigalg = (enum cms_sigalg)tp.scheme,
			    .pss_salt = tp.salt_len,
			    .digest = req->hashes[i],
			    .dlen = dlen,
			    .signing_time = time(NULL),
			    .pades = req->pades,
			    .sign = cms_sign_cb,
			    .sign_arg = &cs,
			};
			t = cms_build(&cp, &out->sig[i], &out->len[i]);
			if (t == CMS_ERR_INTERNAL || t == CMS_ERR_INPUT)
				return refuse(f, R_INTERNAL_ERROR,
				              "building the CMS signature failed");
		} else {
			uint8_t sig[TOK_MAX_SIG];
			size_t len = sizeof(sig);

			t = tok_sign_digest(s->tok, key, &tp, req->hashes[i], dlen, sig, &len);
			if (t == TOK_OK) {
				if ((out->sig[i] = OPENSSL_memdup(sig, len)) == NULL)
					return refuse(f, R_INTERNAL_ERROR, "out of memory");
				out->len[i] = len;
			}
		}
		if (t != TOK_OK)
			return token_error(f, t, "signing");
		out->n = i + 1;
	}
	return 0;
}

static double mono_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A B-T request's time-stamps. The TSA's round trip is no signature's time: group commit is
 * not held back for it (the announcement is taken back meanwhile and made again after). */
static int stamp_signatures(struct service *s, const struct svc_tsa_link *tsa, X509 *cert,
                            struct sign_result *out, struct audit_rec *rec, int *announced,
                            struct refusal *f)
{
	/* All of the request's time-stamps within tsa.timeout. */
	unsigned budget_ms =
	    (s->cfg != NULL ? s->cfg->tsa_timeout : CFG_DEFAULT_TSA_TIMEOUT) * 1000u;

	ledger_expect(s->ledger, -1);
	*announced = 0;
	if (svc_stamp(s->tsa, tsa, budget_ms, cert, out->sig, out->len, out->n, rec, f) != 0)
		return -1;
	if (ledger_announce(s->ledger, rec) != LEDGER_OK)
		return refuse(f, R_LEDGER_UNAVAILABLE,
		              "the audit ledger is stuck on a write; no signature is returned");
	*announced = 1;
	return 0;
}

int svc_sign(struct service *s, const struct peer *p, const struct sign_req *req,
             struct sign_result *out, struct audit_rec *rec, struct refusal *f)
{
	return svc_sign_stamped(s, p, req, NULL, out, rec, f);
}

int svc_sign_stamped(struct service *s, const struct peer *p, const struct sign_req *req,
                     const struct svc_tsa_link *tsa, struct sign_result *out, struct audit_rec *rec,
                     struct refusal *f)
{
	struct svc_rules *rules = rules_get(s);
	const struct pol_caller *caller;
	const struct pol_purpose *purpose = NULL;
	const struct tok_key *key = NULL;
	struct reg_cred rc = {0};
	struct pol_request pr = {0};
	STACK_OF(X509) *chain = NULL;
	X509 *wcert = NULL; /* a wrapped key's certificate, parsed from the registry */
	X509 *cert;         /* the certificate the signatures are made under */
	enum pol_reason pol;
	time_t now = time(NULL);
	int r = -1, announced = 0;

	out->n = 0;
	SET_FIELD(rec->halg, alg_hash_name(req->hash));
	rec->hash_len = alg_hash_len(req->hash);
	rec->nhashes = req->nhashes;
	for (size_t i = 0; i < req->nhashes; i++)
		memcpy(rec->hashes[i], req->hashes[i], rec->hash_len);
	if ((caller = find_caller(rules, p, rec, f)) == NULL)
		goto out;
	if (lookup_cred(s, caller, req->cred, &rc, rec, f) != 0)
		goto out;
	if (rc.status != REG_ACTIVE) {
		refuse(f, rc.status == REG_REVOKED ? R_CREDENTIAL_REVOKED : R_CREDENTIAL_SUSPENDED,
		       "credential %s is %s", rc.id, reg_status_name(rc.status));
		goto out;
	}
	pr.purpose = req->purpose;
	pr.cls = (enum pol_class)rc.cls;
	pr.fam = req->fam;
	pr.hash = req->hash;
	pr.nhashes = req->nhashes;
	if ((pol = policy_check_sign(rules->set.pol, caller, &pr, &purpose)) != POL_OK) {
		refuse(f, reason_of_policy(pol), "refused by policy for caller %s: %s",
		       caller->name, pol_reason_str(pol));
		goto out;
	}
	SET_FIELD(rec->purpose, purpose->name);
	if (rate_take(s->rates, caller->name, &caller->rate, mono_now(), 1) != 0) {
		refuse(f, R_RATE_LIMITED, "caller %s is over its rate of %u per %u s", caller->name,
		       caller->rate.count, caller->rate.per_s);
		goto out;
	}
	if (svc_key_get(s, &rc, &key, f) != 0)
		goto out;
	if ((req->fam == ALG_ECDSA) != (key->type == TOK_KEY_EC)) {
		refuse(f, R_ALGORITHM_KEY_MISMATCH,
		       "signAlgo %s does not fit the credential's %s key",
		       alg_sign_name(req->fam, req->hash), key->type == TOK_KEY_EC ? "EC" : "RSA");
		goto out;
	}
	if (check_cert(s, rules, key, &rc, &wcert, &chain, now, f) != 0 ||
	    check_sad(s, rules, req, &rc, purpose, now, rec, f) != 0 ||
	    check_quota(s, rules, &rc, req->nhashes, now, rec, f) != 0)
		goto out;
	if (req->cms && chain == NULL)
		chain = load_chain(rc.chain_pem); /* carried in the CMS */
	if (req->cms && key->wrapped != NULL && wcert == NULL &&
	    (wcert = wrapped_cert(&rc, key)) == NULL) {
		refuse(f, R_CERT_MISSING,
		       "the credential's certificate is damaged or not of its key");
		goto out;
	}
	/* From here a record follows within a signature's time: group commit may wait for it.
	 * A ledger stuck on a write would only throw the signature away: none is made, and the
	 * refusal is not recorded either (it would be refused the same way). */
	if (ledger_announce(s->ledger, rec) != LEDGER_OK) {
		refuse(f, R_LEDGER_UNAVAILABLE,
		       "the audit ledger is stuck on a write; nothing was signed");
		goto out;
	}
	announced = 1;
	cert = key->wrapped != NULL ? wcert : key->cert;
	if (make_signatures(s, req, key, cert, chain, out, f) != 0)
		goto out;
	if (req->stamp && stamp_signatures(s, tsa, cert, out, rec, &announced, f) != 0)
		goto out;

	/* The record goes in before any signature leaves. */
	SET_FIELD(rec->decision, "allow");
	rec->nsigs = out->n;
	for (size_t i = 0; i < out->n; i++)
		SHA256(out->sig[i], out->len[i], rec->sig_sha256[i]);
	announced = 0; /* the append takes the announcement back */
	switch (ledger_append_expected(s->ledger, rec)) {
	case LEDGER_OK:
		r = 0;
		break;
	case LEDGER_ERR_QUOTA:
		refuse(f, R_QUOTA_EXCEEDED, "credential %s has reached its daily quota", rc.id);
		break;
	case LEDGER_ERR_REPLAY:
		refuse(f, R_SAD_REPLAYED, "the SAD's signatures are used up");
		break;
	default:
		refuse(f, R_LEDGER_UNAVAILABLE,
		       "the audit ledger cannot be written; no signature is returned");
		break;
	}
out:
	if (announced)
		ledger_expect(s->ledger, -1);
	if (r != 0) {
		sign_result_clear(out);
		/* The refusal's record has no conditions: nothing was consumed. */
		rec->quota_add = 0;
		rec->jti_add = 0;
		rec->ntst = 0;
	}
	sk_X509_pop_free(chain, X509_free);
	X509_free(wcert);
	svc_key_put(s, key);
	reg_cred_clear(&rc);
	rules_put(s, rules);
	return r;
}

/* credentials/info of a wrapped key, from the registry alone: the key is not unwrapped. */
static int wrapped_info(struct cred_info *ci, struct refusal *f)
{
	struct tok_key *k = &ci->own;
	char group[64];

	if (!ci->reg.wkey.present ||
	    (k->pub = tok_spki_parse(ci->reg.wkey.pub, ci->reg.wkey.pub_len)) == NULL)
		goto bad;
	if (EVP_PKEY_get_base_id(k->pub) == EVP_PKEY_EC) {
		if (EVP_PKEY_get_utf8_string_param(k->pub, OSSL_PKEY_PARAM_GROUP_NAME, group,
		                                   sizeof(group), NULL) != 1)
			goto bad;
		k->type = TOK_KEY_EC;
		k->curve_nid = OBJ_txt2nid(group);
	} else {
		k->type = TOK_KEY_RSA;
	}
	k->bits = (unsigned)EVP_PKEY_get_bits(k->pub);
	k->cert = wrapped_cert(&ci->reg, k); /* NULL: none yet, or not of this key */
	ci->key = k;
	return 0;
bad:
	ERR_clear_error();
	cred_info_clear(ci);
	return refuse(f, R_KEY_UNUSABLE, "the credential's wrapped key is damaged");
}

int svc_cred_info(struct service *s, const struct peer *p, const char *id, struct cred_info *out,
                  struct audit_rec *rec, struct refusal *f)
{
	struct svc_rules *rules = rules_get(s);
	const struct pol_caller *caller;
	int t, r = -1;

	memset(out, 0, sizeof(*out));
	if ((caller = find_caller(rules, p, rec, f)) == NULL)
		goto out;
	if (lookup_cred(s, caller, id, &out->reg, rec, f) != 0)
		goto out;
	if (out->reg.store == REG_STORE_WRAPPED) {
		r = wrapped_info(out, f);
		goto out;
	}
	if ((t = tok_key_get(s->tok, out->reg.key_uri, &out->key)) != TOK_OK) {
		reg_cred_clear(&out->reg);
		token_error(f, t, "credential key");
		goto out;
	}
	r = 0;
out:
	rules_put(s, rules);
	return r;
}

void cred_info_clear(struct cred_info *ci)
{
	reg_cred_clear(&ci->reg);
	X509_free(ci->own.cert);
	EVP_PKEY_free(ci->own.pub);
	memset(&ci->own, 0, sizeof(ci->own));
	ci->key = NULL;
}

struct list_ctx {
	const struct pol_caller *caller;
	const char *after;
	char **ids;
	size_t max, n;
	int more, failed;
};

static int list_one(const struct reg_cred *c, void *arg)
{
	struct list_ctx *l = arg;

	if (l->after != NULL && strcmp(c->id, l->after) <= 0)
		return 0;
	if (c->status == REG_REVOKED || !policy_caller_may_use(l->caller, (enum pol_class)c->cls))
		return 0;
	if (l->n == l->max) {
		l->more = 1;
		return 1;
	}
	if ((l->ids[l->n] = strdup(c->id)) == NULL) {
		l->failed = 1;
		return 1;
	}
	l->n++;
	return 0;
}

int svc_cred_list(struct service *s, const struct peer *p, const char *user, const char *after,
                  size_t max, char **ids, size_t *n, int *more, struct audit_rec *rec,
                  struct refusal *f)
{
	struct svc_rules *rules = rules_get(s);
	struct list_ctx l = {.after = after, .ids = ids, .max = max};
	int r = -1;

	*n = 0;
	*more = 0;
	SET_FIELD(rec->owner, user);
	if ((l.caller = find_caller(rules, p, rec, f)) == NULL)
		goto out;
	/* From the page token on, by index: a page never reads the credentials before it. */
	if (registry_foreach_after(s->reg, user,
	                           after != NULL && cred_valid_id(after) ? after : NULL, list_one,
	                           &l) != REG_OK ||
	    l.failed) {
		for (size_t i = 0; i < l.n; i++)
			free(ids[i]);
		refuse(f, R_REGISTRY_UNAVAILABLE, "the credential registry cannot be read");
		goto out;
	}
	*n = l.n;
	*more = l.more;
	r = 0;
out:
	rules_put(s, rules);
	return r;
}
