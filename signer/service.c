/* The signing core: caller -> credential -> policy -> key -> token (-> CMS). */
#include "signer/service.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>
#include <openssl/pem.h>

#include "signer/cms.h"

int svc_fail(struct svc_error *e, int http, const char *error, const char *reason, const char *fmt,
             ...)
{
	va_list ap;

	e->http = http;
	e->error = error;
	e->reason = reason;
	va_start(ap, fmt);
	vsnprintf(e->desc, sizeof(e->desc), fmt, ap);
	va_end(ap);
	return -1;
}

void sign_result_clear(struct sign_result *r)
{
	for (size_t i = 0; i < r->n; i++)
		OPENSSL_free(r->sig[i]);
	r->n = 0;
}

int svc_open(struct service *s, struct config *cfg, char *err, size_t errlen)
{
	struct tok_opts topts = {0};
	int r;

	memset(s, 0, sizeof(*s));
	s->cfg = cfg;
	if (policy_load(cfg->policy_path, &s->pol, err, errlen) != 0)
		goto fail;
	if (registry_open(cfg->state_dir, 1, &s->reg, err, errlen) != REG_OK)
		goto fail;
	topts.module = cfg->token_module;
	topts.module_dirs = (const char *const *)cfg->token_module_dirs;
	topts.uri = cfg->token_uri;
	topts.pin_file = cfg->token_pin_file;
	topts.require_initialized = 1;
	if ((r = tok_open(&topts, &s->tok, err, errlen)) != TOK_OK)
		goto fail;
	return 0;
fail:
	svc_close(s);
	return -1;
}

void svc_close(struct service *s)
{
	if (s->tok != NULL)
		tok_close(s->tok);
	if (s->reg != NULL)
		registry_close(s->reg);
	if (s->pol != NULL)
		policy_free(s->pol);
	s->tok = NULL;
	s->reg = NULL;
	s->pol = NULL;
}

const struct pol_caller *svc_caller(struct service *s, const struct peer *p, struct svc_error *e)
{
	const struct pol_caller *c = policy_caller(s->pol, p->uid, p->gid);

	if (c == NULL)
		svc_fail(e, 403, "access_denied", "unknown_caller",
		         "no caller in the policy matches uid %u gid %u", (unsigned)p->uid,
		         (unsigned)p->gid);
	return c;
}

static int token_error(struct svc_error *e, int r, const char *what)
{
	switch (r) {
	case TOK_ERR_UNAVAILABLE:
	case TOK_ERR_PIN:
		return svc_fail(e, 503, "temporarily_unavailable", "token_unavailable", "%s: %s",
		                what, tok_strerror(r));
	case TOK_ERR_NOT_FOUND:
		return svc_fail(e, 500, "server_error", "key_not_found",
		                "%s: the credential's key is not on the token", what);
	case TOK_ERR_BAD_INPUT:
	case TOK_ERR_MECHANISM:
		return svc_fail(e, 400, "invalid_request", "algorithm_not_supported", "%s: %s",
		                what, tok_strerror(r));
	default:
		return svc_fail(e, 500, "server_error", "internal_error", "%s: %s", what,
		                tok_strerror(r));
	}
}

/* The registry entry of an ID, usable (class allowed) by the caller. */
static int lookup_cred(struct service *s, const struct pol_caller *c, const char *id,
                       struct reg_cred *rc, struct svc_error *e)
{
	int r = registry_get(s->reg, id, rc);

	if (r == REG_ERR_NOT_FOUND || r == REG_ERR_BAD_INPUT)
		return svc_fail(e, 400, "invalid_request", "unknown_credential",
		                "Invalid parameter credentialID");
	if (r != REG_OK)
		return svc_fail(e, 500, "server_error", "registry_unavailable",
		                "the credential registry cannot be read");
	if (!policy_caller_may_use(c, (enum pol_class)rc->cls)) {
		reg_cred_clear(rc);
		return svc_fail(e, 403, "access_denied", "class_not_allowed",
		                "caller %s may not use %s credentials", c->name,
		                pol_class_name((enum pol_class)rc->cls));
	}
	return 0;
}

static const char *policy_error_code(enum pol_reason r, int *http)
{
	switch (r) {
	case POL_PURPOSE_REQUIRED:
	case POL_TOO_MANY_HASHES:
		*http = 400;
		return "invalid_request";
	default:
		*http = 403;
		return "access_denied";
	}
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

int svc_sign(struct service *s, const struct peer *p, const struct sign_req *req,
             struct sign_result *out, struct svc_error *e)
{
	const struct pol_caller *caller;
	const struct pol_purpose *purpose = NULL;
	const struct tok_key *key = NULL;
	struct reg_cred rc = {0};
	struct pol_request pr = {0};
	struct tok_sign_params tp = {0};
	STACK_OF(X509) *chain = NULL;
	enum pol_reason pol;
	int r = -1, t, http;
	const char *code;

	out->n = 0;
	if ((caller = svc_caller(s, p, e)) == NULL)
		return -1;
	if (lookup_cred(s, caller, req->cred, &rc, e) != 0)
		return -1;
	if (rc.status != REG_ACTIVE) {
		svc_fail(e, 403, "access_denied",
		         rc.status == REG_REVOKED ? "credential_revoked" : "credential_suspended",
		         "credential %s is %s", rc.id, reg_status_name(rc.status));
		goto out;
	}
	pr.purpose = req->purpose;
	pr.cls = (enum pol_class)rc.cls;
	pr.fam = req->fam;
	pr.hash = req->hash;
	pr.nhashes = req->nhashes;
	if ((pol = policy_check_sign(s->pol, caller, &pr, &purpose)) != POL_OK) {
		code = policy_error_code(pol, &http);
		svc_fail(e, http, code, pol_reason_str(pol), "refused by policy for caller %s: %s",
		         caller->name, pol_reason_str(pol));
		goto out;
	}
	if ((t = tok_key_get(s->tok, rc.key_uri, &key)) != TOK_OK) {
		token_error(e, t, "credential key");
		goto out;
	}
	if ((req->fam == ALG_ECDSA) != (key->type == TOK_KEY_EC)) {
		svc_fail(e, 400, "invalid_request", "algorithm_key_mismatch",
		         "signAlgo %s does not fit the credential's %s key",
		         alg_sign_name(req->fam, req->hash),
		         key->type == TOK_KEY_EC ? "EC" : "RSA");
		goto out;
	}
	if (req->cms && key->cert == NULL) {
		svc_fail(e, 400, "invalid_request", "no_certificate",
		         "credential %s has no certificate", rc.id);
		goto out;
	}
	tp.scheme = req->fam == ALG_ECDSA     ? TOK_ECDSA
	            : req->fam == ALG_RSA_PSS ? TOK_RSA_PSS
	                                      : TOK_RSA_PKCS1;
	tp.hash_nid = alg_hash_nid(req->hash);
	tp.mgf1_nid = tp.hash_nid;
	tp.salt_len = req->pss_salt;
	if (req->cms)
		chain = load_chain(rc.chain_pem);

	for (size_t i = 0; i < req->nhashes; i++) {
		size_t dlen = alg_hash_len(req->hash);

		if (req->cms) {
			struct cms_signer cs = {s->tok, key, &tp};
			struct cms_params cp = {
			    .cert = key->cert,
			    .chain = chain,
			    .hash_nid = tp.hash_nid,
			    .sigalg = (enum cms_sigalg)tp.scheme,
			    .pss_salt = tp.salt_len,
			    .digest = req->hashes[i],
			    .dlen = dlen,
			    .signing_time = time(NULL),
			    .sign = cms_sign_cb,
			    .sign_arg = &cs,
			};
			t = cms_build(&cp, &out->sig[i], &out->len[i]);
			if (t == CMS_ERR_INTERNAL || t == CMS_ERR_INPUT) {
				svc_fail(e, 500, "server_error", "internal_error",
				         "building the CMS signature failed");
				goto out;
			}
		} else {
			uint8_t sig[TOK_MAX_SIG];
			size_t len = sizeof(sig);

			t = tok_sign_digest(s->tok, key, &tp, req->hashes[i], dlen, sig, &len);
			if (t == TOK_OK) {
				if ((out->sig[i] = OPENSSL_memdup(sig, len)) == NULL) {
					svc_fail(e, 500, "server_error", "internal_error",
					         "out of memory");
					goto out;
				}
				out->len[i] = len;
			}
		}
		if (t != TOK_OK) {
			token_error(e, t, "signing");
			goto out;
		}
		out->n = i + 1;
	}
	r = 0;
out:
	if (r != 0)
		sign_result_clear(out);
	sk_X509_pop_free(chain, X509_free);
	reg_cred_clear(&rc);
	return r;
}

int svc_cred_info(struct service *s, const struct peer *p, const char *id, struct cred_info *out,
                  struct svc_error *e)
{
	const struct pol_caller *caller;
	int t;

	memset(out, 0, sizeof(*out));
	if ((caller = svc_caller(s, p, e)) == NULL)
		return -1;
	if (lookup_cred(s, caller, id, &out->reg, e) != 0)
		return -1;
	if ((t = tok_key_get(s->tok, out->reg.key_uri, &out->key)) != TOK_OK) {
		reg_cred_clear(&out->reg);
		return token_error(e, t, "credential key");
	}
	return 0;
}

void cred_info_clear(struct cred_info *ci)
{
	reg_cred_clear(&ci->reg);
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
                  size_t max, char **ids, size_t *n, int *more, struct svc_error *e)
{
	struct list_ctx l = {.after = after, .ids = ids, .max = max};

	*n = 0;
	*more = 0;
	if ((l.caller = svc_caller(s, p, e)) == NULL)
		return -1;
	if (registry_foreach(s->reg, user, list_one, &l) != REG_OK || l.failed) {
		for (size_t i = 0; i < l.n; i++)
			free(ids[i]);
		return svc_fail(e, 500, "server_error", "registry_unavailable",
		                "the credential registry cannot be read");
	}
	*n = l.n;
	*more = l.more;
	return 0;
}
