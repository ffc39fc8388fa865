/* One token: selection by PKCS#11 URI, login, the daemon's own sessions, and the key cache.
 *
 * Sessions are ours, not a library pool's (see DESIGN: libp11's pool hangs or hands out dead
 * sessions when the token goes away): each thread that calls the module opens its own on first
 * use, and a session the module declares dead is dropped so that the thread's next call opens a
 * fresh one. In the daemon those threads are the workers (worker.c): requests reach the module
 * only through them, key lookups included. The login's session (anchor) is held apart.
 *
 * Keys are looked up once per URI and cached: SoftHSM's C_FindObjects scans every object, so a
 * search per request would make signing cost grow with the number of credentials. */
#include <pthread.h>
#include <stddef.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/asn1.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/param_build.h>
#include <openssl/x509.h>
#include <p11-kit/p11-kit.h>
#include <p11-kit/uri.h>

#include "pkcs11/internal.h"

/* Bounds on what the module may hand us; anything larger is refused, not truncated. */
#define TOK_MAX_SLOTS 1024
#define TOK_MAX_URI 4096
#define TOK_MAX_URI_ATTRS 16
#define TOK_MAX_EC_PARAMS 128
#define TOK_MAX_EC_POINT 256
#define TOK_MAX_MODULUS 1024 /* 8192-bit RSA */
#define TOK_MAX_EXPONENT 16
#define TOK_MAX_CERT (64 * 1024)
#define TOK_MAX_CERTS_PER_ID 8
/* A signature must fit TOK_MAX_SIG bytes. */
#define TOK_MAX_RSA_BITS 4096
#define TOK_MIN_RSA_BITS 1024
#define TOK_CACHE_MIN_BUCKETS 64

void tok_seterr(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (err == NULL || errlen == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

/* Space-padded PKCS#11 label to a C string for messages. */
static void label_str(const CK_UTF8CHAR *lbl, size_t n, char *out, size_t outlen)
{
	size_t i, m = n;

	while (m > 0 && lbl[m - 1] == ' ')
		m--;
	if (m >= outlen)
		m = outlen - 1;
	for (i = 0; i < m; i++)
		out[i] = (lbl[i] >= 0x20 && lbl[i] < 0x7f) ? (char)lbl[i] : '?';
	out[m] = '\0';
}

/* --- login (provisioning tools) --- */

int tok_login(struct token *tok, const char *pin_file, int so)
{
	CK_SESSION_HANDLE s;
	char *pin = NULL;
	size_t plen = 0;
	CK_RV rv;
	int r;

	if (tok == NULL || pin_file == NULL)
		return TOK_ERR_INTERNAL;
	r = tok_session(tok, &s);
	if (r != TOK_OK)
		return r;
	r = tok_pin_read(pin_file, &pin, &plen);
	if (r != TOK_OK)
		return r;
	rv = tok->fl->C_Login(s, so ? CKU_SO : CKU_USER, (CK_UTF8CHAR *)pin, (CK_ULONG)plen);
	tok_pin_free(pin, plen);
	if (rv == CKR_OK || rv == CKR_USER_ALREADY_LOGGED_IN)
		return TOK_OK;
	return tok_session_failed(tok, rv);
}

/* --- token selection --- */

static int slot_list(struct token *tok, CK_SLOT_ID **out, CK_ULONG *nout, char *err, size_t errlen)
{
	CK_SLOT_ID *list = NULL;
	CK_ULONG ns, got;
	CK_RV rv;
	int tries;

	*out = NULL;
	*nout = 0;
	/* A token inserted between the two calls makes the second one too small: ask again. */
	for (tries = 0; tries < 3; tries++) {
		ns = 0;
		rv = tok->fl->C_GetSlotList(CK_TRUE, NULL, &ns);
		if (rv != CKR_OK)
			break;
		if (ns == 0)
			return TOK_OK;
		if (ns > TOK_MAX_SLOTS) {
			tok_seterr(err, errlen, "module reports %lu slots, more than %d", ns,
			           TOK_MAX_SLOTS);
			return TOK_ERR_INTERNAL;
		}
		list = calloc(ns, sizeof(*list));
		if (list == NULL)
			return TOK_ERR_INTERNAL;
		got = ns;
		rv = tok->fl->C_GetSlotList(CK_TRUE, list, &got);
		if (rv == CKR_OK && got <= ns) {
			*out = list;
			*nout = got;
			return TOK_OK;
		}
		free(list);
		list = NULL;
		if (rv != CKR_BUFFER_TOO_SMALL)
			break;
	}
	tok_seterr(err, errlen, "C_GetSlotList failed: %s", p11_kit_strerror(rv));
	return tok_err_from_rv(rv) == TOK_ERR_UNAVAILABLE ? TOK_ERR_UNAVAILABLE : TOK_ERR_INTERNAL;
}

static int select_by_uri(struct token *tok, const char *uri, char *err, size_t errlen)
{
	int r = TOK_ERR_INTERNAL;
	P11KitUri *u = NULL;
	CK_SLOT_ID *slots = NULL;
	CK_ULONG ns = 0, i;
	CK_TOKEN_INFO ti;
	char first[33], second[33];
	unsigned matches = 0;
	int pr;

	/* No URI: the one initialised token, whatever its name. */
	if (uri == NULL)
		uri = "pkcs11:";
	if (strnlen(uri, TOK_MAX_URI + 1) > TOK_MAX_URI) {
		tok_seterr(err, errlen, "token URI longer than %d bytes", TOK_MAX_URI);
		r = TOK_ERR_BAD_INPUT;
		goto out;
	}
	u = p11_kit_uri_new();
	if (u == NULL)
		goto out;
	pr = p11_kit_uri_parse(uri, P11_KIT_URI_FOR_TOKEN, u);
	if (pr != P11_KIT_URI_OK) {
		tok_seterr(err, errlen, "token URI \"%s\": %s", uri, p11_kit_uri_message(pr));
		r = TOK_ERR_BAD_INPUT;
		goto out;
	}
	/* An attribute p11-kit did not take as a token attribute would make every match fail
	 * with a misleading "no token": say what is wrong instead. */
	if (p11_kit_uri_any_unrecognized(u)) {
		tok_seterr(err, errlen,
		           "token URI \"%s\" has attributes that do not describe a token", uri);
		r = TOK_ERR_BAD_INPUT;
		goto out;
	}
	if (p11_kit_uri_get_pin_value(u) != NULL) {
		tok_seterr(err, errlen, "token URI must not carry a PIN (use token.pin_file)");
		r = TOK_ERR_BAD_INPUT;
		goto out;
	}

	r = slot_list(tok, &slots, &ns, err, errlen);
	if (r != TOK_OK)
		goto out;
	for (i = 0; i < ns; i++) {
		if (tok->fl->C_GetTokenInfo(slots[i], &ti) != CKR_OK)
			continue; /* removed meanwhile */
		/* SoftHSM always offers an empty uninitialised token; it is never the one meant. */
		if ((ti.flags & CKF_TOKEN_INITIALIZED) == 0)
			continue;
		if (!p11_kit_uri_match_token_info(u, &ti))
			continue;
		if (matches == 0) {
			tok->slot = slots[i];
			label_str(ti.label, sizeof(ti.label), first, sizeof(first));
		} else if (matches == 1) {
			label_str(ti.label, sizeof(ti.label), second, sizeof(second));
		}
		matches++;
	}
	if (matches == 0) {
		tok_seterr(err, errlen,
		           "no initialised token matches \"%s\" (%lu slots with a token)", uri, ns);
		r = TOK_ERR_NOT_FOUND;
		goto out;
	}
	if (matches > 1) {
		tok_seterr(err, errlen,
		           "%u tokens match \"%s\" (\"%s\", \"%s\"%s); add serial= to the URI",
		           matches, uri, first, second, matches > 2 ? ", ..." : "");
		r = TOK_ERR_BAD_INPUT;
		goto out;
	}
	r = TOK_OK;
out:
	free(slots);
	if (u != NULL)
		p11_kit_uri_free(u);
	return r;
}

static int select_uninitialised(struct token *tok, char *err, size_t errlen)
{
	int r;
	CK_SLOT_ID *slots = NULL;
	CK_ULONG ns = 0, i;
	CK_TOKEN_INFO ti;

	r = slot_list(tok, &slots, &ns, err, errlen);
	if (r != TOK_OK)
		goto out;
	for (i = 0; i < ns; i++) {
		if (tok->fl->C_GetTokenInfo(slots[i], &ti) != CKR_OK)
			continue;
		if ((ti.flags & CKF_TOKEN_INITIALIZED) == 0) {
			tok->slot = slots[i];
			r = TOK_OK;
			goto out;
		}
	}
	tok_seterr(err, errlen, "no slot holds an uninitialised token (%lu slots with a token)",
	           ns);
	r = TOK_ERR_NOT_FOUND;
out:
	free(slots);
	return r;
}

int tok_select(struct token *tok, char *err, size_t errlen)
{
	if (tok->require_initialized)
		return select_by_uri(tok, tok->uri, err, errlen);
	return select_uninitialised(tok, err, errlen);
}

/* --- open and close --- */

static void cache_free_all(struct token *tok);

void tok_close(struct token *tok)
{
	struct tok_sess *s, *next;
	unsigned gen;

	if (tok == NULL)
		return;
	/* First the threads that could start a recovery or mark the token down. */
	tok_monitor_stop(tok);
	/* Then the workers. One stuck in the module keeps the module (and this struct, which it
	 * uses) alive: finalising or unloading under it would crash the process on its way
	 * out. */
	if (tok_pool_stop(tok, TOK_CLOSE_WAIT_MS) != TOK_OK) {
		fprintf(stderr,
		        "iamsign token: a call is still inside the PKCS#11 module after "
		        "%d s; leaving the module loaded\n",
		        TOK_CLOSE_WAIT_MS / 1000);
		/* The PIN too: that call may still need it, and a wiped one would be a wrong
		 * one, spending a PIN try. The process is exiting; the mapping is locked and
		 * left out of core dumps. */
		return;
	}
	cache_free_all(tok);
	/* Delete the key first: exiting threads then no longer run the destructor. */
	if (tok->tkey_ok)
		pthread_key_delete(tok->tkey);
	gen = atomic_load(&tok->gen);
	for (s = tok->sessions; s != NULL; s = next) {
		next = s->next;
		/* Handles from before an outage are dead or reused: not ours to close. */
		if (s->gen == gen && s->h != CK_INVALID_HANDLE)
			tok->fl->C_CloseSession(s->h);
		free(s);
	}
	tok->sessions = NULL;
	if (tok->have_anchor)
		tok->fl->C_CloseSession(tok->anchor);
	tok_module_unload(tok->dl, tok->fl, tok->finalize);
	tok_pin_drop(tok);
	if (tok->sess_lock_ok)
		pthread_mutex_destroy(&tok->sess_lock);
	if (tok->cache_lock_ok)
		pthread_rwlock_destroy(&tok->cache_lock);
	if (tok->op_lock_ok)
		pthread_rwlock_destroy(&tok->op_lock);
	free(tok->uri);
	free(tok);
}

/* The fewest sessions CK_TOKEN_INFO allows at once (read-write ones included, which is what the
 * daemon opens); 0 when it states no limit. */
static CK_ULONG session_limit(const CK_TOKEN_INFO *ti)
{
	CK_ULONG v[2] = {ti->ulMaxSessionCount, ti->ulMaxRwSessionCount}, lim = 0;

	for (int i = 0; i < 2; i++)
		if (v[i] != CK_EFFECTIVELY_INFINITE && v[i] != CK_UNAVAILABLE_INFORMATION &&
		    (lim == 0 || v[i] < lim))
			lim = v[i];
	return lim;
}

/* Cap the workers at the sessions allowed (by the token, or fewer by opts), less one: the
 * login's session (a one-shot tool's own thread's without one). */
static int pool_size(struct token *tok, const struct tok_opts *opts, CK_ULONG token_lim, char *err,
                     size_t errlen)
{
	CK_ULONG max = token_lim;

	if (opts->max_sessions != 0 && (max == 0 || opts->max_sessions < max))
		max = opts->max_sessions;
	if (max == 0)
		return TOK_OK;
	if (max < 2) {
		tok_seterr(err, errlen,
		           "the token allows %lu session at once; iamsign needs 2: one to hold the "
		           "login, one to sign",
		           (unsigned long)max);
		return TOK_ERR_BUSY;
	}
	if (max - 1 < (CK_ULONG)tok->pool_cap)
		tok->pool_cap = (int)(max - 1);
	if (!opts->no_monitor)
		tok_log("at most %lu sessions at once (%s): the login's, and one for each of up "
		        "to %d workers",
		        (unsigned long)max,
		        max == token_lim ? "the token's limit" : "token.sessions", tok->pool_cap);
	return TOK_OK;
}

int tok_open(const struct tok_opts *opts, struct token **out, char *err, size_t errlen)
{
	int r = TOK_ERR_INTERNAL;
	struct token *tok = NULL;
	CK_TOKEN_INFO ti;
	CK_ULONG lim = 0;
	char *pin = NULL;
	size_t plen = 0;
	CK_RV rv = CKR_OK;

	if (err != NULL && errlen > 0)
		err[0] = '\0';
	if (out != NULL)
		*out = NULL;
	if (opts == NULL || out == NULL) {
		tok_seterr(err, errlen, "tok_open: no options");
		goto out;
	}
	tok = calloc(1, sizeof(*tok));
	if (tok == NULL)
		goto out;
	if (pthread_mutex_init(&tok->sess_lock, NULL) != 0)
		goto out;
	tok->sess_lock_ok = 1;
	if (pthread_rwlock_init(&tok->cache_lock, NULL) != 0)
		goto out;
	tok->cache_lock_ok = 1;
	if (pthread_rwlock_init(&tok->op_lock, NULL) != 0)
		goto out;
	tok->op_lock_ok = 1;
	if (pthread_key_create(&tok->tkey, tok_sess_destructor) != 0)
		goto out;
	tok->tkey_ok = 1;
	if (tok_monitor_init(tok) != TOK_OK)
		goto out;
	if (tok_pool_init(tok) != TOK_OK)
		goto out;
	tok->require_initialized = opts->require_initialized;
	if (opts->uri != NULL && (tok->uri = strdup(opts->uri)) == NULL)
		goto out;

	r = tok_module_load(opts->module, opts->module_dirs, &tok->dl, &tok->fl, &tok->finalize,
	                    err, errlen);
	if (r != TOK_OK)
		goto out;
	r = tok_select(tok, err, errlen);
	if (r != TOK_OK)
		goto out;
	/* The serial tells, after an outage, whether the token back in the slot is this one. */
	if (tok->fl->C_GetTokenInfo(tok->slot, &ti) == CKR_OK) {
		memcpy(tok->serial, ti.serialNumber, sizeof(tok->serial));
		tok->have_serial = 1;
		lim = session_limit(&ti);
	}
	r = pool_size(tok, opts, lim, err, errlen);
	if (r != TOK_OK)
		goto out;

	if (opts->pin_file != NULL) {
		r = tok_pin_read(opts->pin_file, &pin, &plen);
		if (r != TOK_OK) {
			tok_seterr(
			    err, errlen,
			    "PIN file %s unusable: must be a regular file (no symlink) of mode "
			    "0600 "
			    "or stricter holding 1 to 256 bytes",
			    opts->pin_file);
			goto out;
		}
		r = tok_pin_hold(tok, pin, plen);
		tok_pin_free(pin, plen);
		pin = NULL;
		if (r != TOK_OK) {
			tok_seterr(err, errlen, "cannot keep the PIN in locked memory (mlock)");
			goto out;
		}
		rv = tok_open_session(tok, &tok->anchor);
		if (rv != CKR_OK) {
			tok_seterr(err, errlen, "C_OpenSession failed: %s", p11_kit_strerror(rv));
			r = tok_err_from_rv(rv);
			goto out;
		}
		tok->have_anchor = 1;
		rv = tok->fl->C_Login(tok->anchor, CKU_USER, (CK_UTF8CHAR *)tok->pin,
		                      (CK_ULONG)tok->pin_len);
		if (rv != CKR_OK && rv != CKR_USER_ALREADY_LOGGED_IN) {
			/* Said once, here; the daemon does not start, so nothing retries. */
			tok_seterr(err, errlen, "C_Login failed: %s (CKR 0x%lx)%s",
			           p11_kit_strerror(rv), (unsigned long)rv,
			           rv == CKR_GENERAL_ERROR ? "; some cards say this for a wrong PIN"
			                                   : "");
			r = tok_err_from_rv(rv);
			if (r == TOK_ERR_INTERNAL)
				r = TOK_ERR_PIN;
			goto out;
		}
	}
	if (!opts->no_monitor && (r = tok_monitor_start(tok)) != TOK_OK) {
		tok_seterr(err, errlen, "cannot start the token monitor thread");
		goto out;
	}
	*out = tok;
	tok = NULL;
	r = TOK_OK;
out:
	tok_pin_free(pin, plen);
	tok_close(tok);
	return r;
}

/* --- key lookup --- */

/* Read one attribute into a fresh buffer of at most max bytes. TOK_ERR_NOT_FOUND when the
 * object lacks it (or will not tell), TOK_ERR_BAD_INPUT when it is larger than max. */
static int attr_get(struct token *tok, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE o,
                    CK_ATTRIBUTE_TYPE type, size_t max, unsigned char **buf, size_t *len)
{
	CK_ATTRIBUTE a;
	unsigned char *b = NULL;
	CK_RV rv;
	int r = TOK_ERR_INTERNAL;

	*buf = NULL;
	*len = 0;
	a.type = type;
	a.pValue = NULL;
	a.ulValueLen = 0;
	rv = tok->fl->C_GetAttributeValue(s, o, &a, 1);
	if (rv == CKR_ATTRIBUTE_TYPE_INVALID || rv == CKR_ATTRIBUTE_SENSITIVE ||
	    (rv == CKR_OK && a.ulValueLen == CK_UNAVAILABLE_INFORMATION)) {
		r = TOK_ERR_NOT_FOUND;
		goto out;
	}
	if (rv != CKR_OK) {
		r = tok_session_failed(tok, rv);
		goto out;
	}
	if (a.ulValueLen > max) {
		r = TOK_ERR_BAD_INPUT;
		goto out;
	}
	b = malloc(a.ulValueLen > 0 ? a.ulValueLen : 1);
	if (b == NULL)
		goto out;
	a.pValue = b;
	rv = tok->fl->C_GetAttributeValue(s, o, &a, 1);
	if (rv != CKR_OK) {
		/* Grown between the calls, or the session died. */
		r = rv == CKR_BUFFER_TOO_SMALL ? TOK_ERR_BAD_INPUT : tok_session_failed(tok, rv);
		goto out;
	}
	if (a.ulValueLen > max) {
		r = TOK_ERR_INTERNAL;
		goto out;
	}
	*buf = b;
	*len = a.ulValueLen;
	b = NULL;
	r = TOK_OK;
out:
	free(b);
	return r;
}

/* Find up to max objects matching tmpl; *found tells how many (max means "max or more"). */
static int find_objects(struct token *tok, CK_SESSION_HANDLE s, CK_ATTRIBUTE *tmpl, CK_ULONG n,
                        CK_OBJECT_HANDLE *objs, CK_ULONG max, CK_ULONG *found)
{
	CK_ULONG total = 0, got;
	CK_RV rv, rv2;

	*found = 0;
	rv = tok->fl->C_FindObjectsInit(s, tmpl, n);
	if (rv != CKR_OK)
		return tok_session_failed(tok, rv);
	/* A module may hand results out in pieces: ask until full or dry. */
	while (total < max) {
		got = 0;
		rv = tok->fl->C_FindObjects(s, objs + total, max - total, &got);
		if (rv != CKR_OK || got == 0 || got > max - total)
			break;
		total += got;
	}
	rv2 = tok->fl->C_FindObjectsFinal(s);
	if (rv != CKR_OK)
		return tok_session_failed(tok, rv);
	if (rv2 != CKR_OK)
		return tok_session_failed(tok, rv2);
	*found = total;
	return TOK_OK;
}

static int ec_params_nid(const unsigned char *der, size_t len)
{
	const unsigned char *p = der;
	ASN1_OBJECT *obj;
	int nid;

	/* Only namedCurve; explicit parameters are not something iamsign signs with. */
	obj = d2i_ASN1_OBJECT(NULL, &p, (long)len);
	if (obj == NULL)
		return NID_undef;
	nid = p == der + len ? OBJ_obj2nid(obj) : NID_undef;
	ASN1_OBJECT_free(obj);
	if (nid != NID_X9_62_prime256v1 && nid != NID_secp384r1)
		return NID_undef;
	return nid;
}

static EVP_PKEY *pkey_fromdata(const char *alg, OSSL_PARAM_BLD *bld)
{
	OSSL_PARAM *op = NULL;
	EVP_PKEY_CTX *ctx = NULL;
	EVP_PKEY *pk = NULL;

	op = OSSL_PARAM_BLD_to_param(bld);
	if (op == NULL)
		goto out;
	ctx = EVP_PKEY_CTX_new_from_name(NULL, alg, NULL);
	if (ctx == NULL)
		goto out;
	if (EVP_PKEY_fromdata_init(ctx) != 1 ||
	    EVP_PKEY_fromdata(ctx, &pk, EVP_PKEY_PUBLIC_KEY, op) != 1)
		pk = NULL;
out:
	EVP_PKEY_CTX_free(ctx);
	OSSL_PARAM_free(op);
	return pk;
}

static EVP_PKEY *ec_pkey(int nid, const unsigned char *point, size_t len)
{
	OSSL_PARAM_BLD *bld;
	EVP_PKEY *pk = NULL;

	bld = OSSL_PARAM_BLD_new();
	if (bld == NULL)
		return NULL;
	if (OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, OBJ_nid2sn(nid), 0) &&
	    OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, point, len))
		pk = pkey_fromdata("EC", bld);
	OSSL_PARAM_BLD_free(bld);
	return pk;
}

static EVP_PKEY *rsa_pkey(const BIGNUM *n, const BIGNUM *e)
{
	OSSL_PARAM_BLD *bld;
	EVP_PKEY *pk = NULL;

	bld = OSSL_PARAM_BLD_new();
	if (bld == NULL)
		return NULL;
	if (OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, n) &&
	    OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, e))
		pk = pkey_fromdata("RSA", bld);
	OSSL_PARAM_BLD_free(bld);
	return pk;
}

/* Does pk have the private key's type and size (EC: curve; RSA: the very modulus)? */
static int pkey_fits(const struct tok_key *key, const BIGNUM *modulus, const EVP_PKEY *pk)
{
	char group[64];
	size_t glen = 0;
	BIGNUM *n = NULL;
	int ok = 0;

	if (pk == NULL)
		return 0;
	if (key->type == TOK_KEY_EC) {
		if (EVP_PKEY_get_base_id(pk) != EVP_PKEY_EC)
			return 0;
		if (EVP_PKEY_get_utf8_string_param(pk, OSSL_PKEY_PARAM_GROUP_NAME, group,
		                                   sizeof(group), &glen) != 1)
			return 0;
		return OBJ_txt2nid(group) == key->curve_nid;
	}
	if (EVP_PKEY_get_base_id(pk) != EVP_PKEY_RSA)
		return 0;
	if (EVP_PKEY_get_bn_param(pk, OSSL_PKEY_PARAM_RSA_N, &n) != 1)
		return 0;
	ok = BN_cmp(n, modulus) == 0;
	BN_free(n);
	return ok;
}

/* The public key object with the private key's CKA_ID. TOK_ERR_NOT_FOUND if there is none
 * usable (absent, ambiguous, or not the same key parameters): the certificate may still do. */
static int pub_from_object(struct token *tok, CK_SESSION_HANDLE s, const struct tok_key *key,
                           CK_KEY_TYPE kt, const unsigned char *ecparams, size_t eplen,
                           const BIGNUM *modulus, EVP_PKEY **out)
{
	int r;
	CK_OBJECT_CLASS cls = CKO_PUBLIC_KEY;
	CK_ATTRIBUTE tmpl[3];
	CK_OBJECT_HANDLE objs[2];
	CK_ULONG found = 0;
	unsigned char *a = NULL, *b = NULL;
	size_t alen = 0, blen = 0;
	ASN1_OCTET_STRING *os = NULL;
	const unsigned char *p;
	BIGNUM *n = NULL, *e = NULL;
	size_t fl;

	*out = NULL;
	tmpl[0].type = CKA_CLASS;
	tmpl[0].pValue = &cls;
	tmpl[0].ulValueLen = sizeof(cls);
	tmpl[1].type = CKA_KEY_TYPE;
	tmpl[1].pValue = &kt;
	tmpl[1].ulValueLen = sizeof(kt);
	tmpl[2].type = CKA_ID;
	tmpl[2].pValue = (void *)key->id;
	tmpl[2].ulValueLen = key->id_len;
	r = find_objects(tok, s, tmpl, 3, objs, 2, &found);
	if (r != TOK_OK)
		goto out;
	if (found != 1) {
		r = TOK_ERR_NOT_FOUND;
		goto out;
	}

	if (key->type == TOK_KEY_EC) {
		r = attr_get(tok, s, objs[0], CKA_EC_PARAMS, TOK_MAX_EC_PARAMS, &a, &alen);
		if (r != TOK_OK)
			goto out;
		if (alen != eplen || memcmp(a, ecparams, alen) != 0) {
			r = TOK_ERR_NOT_FOUND;
			goto out;
		}
		r = attr_get(tok, s, objs[0], CKA_EC_POINT, TOK_MAX_EC_POINT, &b, &blen);
		if (r != TOK_OK)
			goto out;
		/* CKA_EC_POINT is DER OCTET STRING around the point; some older modules give the
		 * bare uncompressed point. Lengths tell them apart: a bare point is 1 + 2 * field
		 * bytes, which no wrapped valid point is. */
		fl = (key->bits + 7) / 8;
		r = TOK_ERR_BAD_INPUT;
		if (blen == 1 + 2 * fl && b[0] == 0x04) {
			*out = ec_pkey(key->curve_nid, b, blen);
		} else {
			p = b;
			os = d2i_ASN1_OCTET_STRING(NULL, &p, (long)blen);
			if (os == NULL || p != b + blen)
				goto out;
			*out = ec_pkey(key->curve_nid, ASN1_STRING_get0_data(os),
			               (size_t)ASN1_STRING_length(os));
		}
	} else {
		r = attr_get(tok, s, objs[0], CKA_MODULUS, TOK_MAX_MODULUS, &a, &alen);
		if (r != TOK_OK)
			goto out;
		r = attr_get(tok, s, objs[0], CKA_PUBLIC_EXPONENT, TOK_MAX_EXPONENT, &b, &blen);
		if (r != TOK_OK)
			goto out;
		r = TOK_ERR_INTERNAL;
		n = BN_bin2bn(a, (int)alen, NULL);
		e = BN_bin2bn(b, (int)blen, NULL);
		if (n == NULL || e == NULL)
			goto out;
		if (BN_cmp(n, modulus) != 0) {
			r = TOK_ERR_NOT_FOUND;
			goto out;
		}
		*out = rsa_pkey(n, e);
	}
	r = *out != NULL ? TOK_OK : TOK_ERR_BAD_INPUT;
out:
	ASN1_OCTET_STRING_free(os);
	BN_free(n);
	BN_free(e);
	free(a);
	free(b);
	return r;
}

/* The X.509 certificate with the private key's CKA_ID whose key is the key's (pub when known,
 * else at least the same curve or modulus); the newest if several (a renewal stored beside the
 * old one). *out is NULL when there is none. */
static int cert_find(struct token *tok, CK_SESSION_HANDLE s, const struct tok_key *key,
                     const BIGNUM *modulus, const EVP_PKEY *pub, X509 **out)
{
	int r;
	CK_OBJECT_CLASS cls = CKO_CERTIFICATE;
	CK_CERTIFICATE_TYPE ct = CKC_X_509;
	CK_ATTRIBUTE tmpl[3];
	CK_OBJECT_HANDLE objs[TOK_MAX_CERTS_PER_ID];
	CK_ULONG found = 0, i;
	unsigned char *der = NULL;
	size_t dlen = 0;
	const unsigned char *p;
	X509 *x = NULL, *best = NULL;

	*out = NULL;
	tmpl[0].type = CKA_CLASS;
	tmpl[0].pValue = &cls;
	tmpl[0].ulValueLen = sizeof(cls);
	tmpl[1].type = CKA_CERTIFICATE_TYPE;
	tmpl[1].pValue = &ct;
	tmpl[1].ulValueLen = sizeof(ct);
	tmpl[2].type = CKA_ID;
	tmpl[2].pValue = (void *)key->id;
	tmpl[2].ulValueLen = key->id_len;
	r = find_objects(tok, s, tmpl, 3, objs, TOK_MAX_CERTS_PER_ID, &found);
	if (r != TOK_OK)
		goto out;
	for (i = 0; i < found; i++) {
		r = attr_get(tok, s, objs[i], CKA_VALUE, TOK_MAX_CERT, &der, &dlen);
		if (r == TOK_ERR_NOT_FOUND || r == TOK_ERR_BAD_INPUT)
			continue;
		if (r != TOK_OK)
			goto out;
		p = der;
		x = d2i_X509(NULL, &p, (long)dlen);
		if (x != NULL && p != der + dlen) {
			X509_free(x);
			x = NULL;
		}
		free(der);
		der = NULL;
		if (x == NULL)
			continue;
		if (!pkey_fits(key, modulus, X509_get0_pubkey(x)) ||
		    (pub != NULL && EVP_PKEY_eq(pub, X509_get0_pubkey(x)) != 1) ||
		    (best != NULL &&
		     ASN1_TIME_compare(X509_get0_notBefore(x), X509_get0_notBefore(best)) <= 0)) {
			X509_free(x);
			x = NULL;
			continue;
		}
		X509_free(best);
		best = x;
		x = NULL;
	}
	*out = best;
	best = NULL;
	r = TOK_OK;
out:
	X509_free(best);
	free(der);
	return r;
}

/* Fill key (priv already set) from the token: type, size, ID, label, public key, certificate. */
static int key_describe(struct token *tok, CK_SESSION_HANDLE s, struct tok_key *key)
{
	int r;
	unsigned char *buf = NULL, *ecparams = NULL;
	size_t len = 0, eplen = 0;
	CK_KEY_TYPE kt;
	BIGNUM *modulus = NULL;
	int nbits;

	r = attr_get(tok, s, key->priv, CKA_KEY_TYPE, sizeof(kt), &buf, &len);
	if (r != TOK_OK)
		goto out;
	if (len != sizeof(kt)) {
		r = TOK_ERR_INTERNAL;
		goto out;
	}
	memcpy(&kt, buf, sizeof(kt));
	free(buf);
	buf = NULL;

	r = attr_get(tok, s, key->priv, CKA_ID, sizeof(key->id), &buf, &len);
	if (r == TOK_OK) {
		memcpy(key->id, buf, len);
		key->id_len = len;
	} else if (r != TOK_ERR_NOT_FOUND) {
		goto out; /* BAD_INPUT: an ID longer than tok_key can hold */
	}
	free(buf);
	buf = NULL;

	/* Refused rather than truncated: the label is the credential ID. */
	r = attr_get(tok, s, key->priv, CKA_LABEL, sizeof(key->label) - 1, &buf, &len);
	if (r == TOK_OK) {
		memcpy(key->label, buf, len);
		key->label[len] = '\0';
		if (memchr(key->label, '\0', len) != NULL) {
			r = TOK_ERR_BAD_INPUT;
			goto out;
		}
	} else if (r != TOK_ERR_NOT_FOUND) {
		goto out;
	}
	free(buf);
	buf = NULL;

	/* Absent or unreadable means no: a module without it has no per-signature login. */
	r = attr_get(tok, s, key->priv, CKA_ALWAYS_AUTHENTICATE, sizeof(CK_BBOOL), &buf, &len);
	if (r == TOK_OK && len == sizeof(CK_BBOOL))
		key->always_auth = buf[0] == CK_TRUE;
	else if (r != TOK_OK && r != TOK_ERR_NOT_FOUND)
		goto out;
	free(buf);
	buf = NULL;

	if (kt == CKK_EC) {
		r = attr_get(tok, s, key->priv, CKA_EC_PARAMS, TOK_MAX_EC_PARAMS, &ecparams,
		             &eplen);
		if (r != TOK_OK)
			goto out;
		key->type = TOK_KEY_EC;
		key->curve_nid = ec_params_nid(ecparams, eplen);
		if (key->curve_nid == NID_undef) {
			r = TOK_ERR_BAD_INPUT;
			goto out;
		}
		key->bits = key->curve_nid == NID_secp384r1 ? 384 : 256;
	} else if (kt == CKK_RSA) {
		r = attr_get(tok, s, key->priv, CKA_MODULUS, TOK_MAX_MODULUS, &buf, &len);
		if (r != TOK_OK)
			goto out;
		key->type = TOK_KEY_RSA;
		modulus = BN_bin2bn(buf, (int)len, NULL);
		if (modulus == NULL) {
			r = TOK_ERR_INTERNAL;
			goto out;
		}
		nbits = BN_num_bits(modulus);
		if (nbits < TOK_MIN_RSA_BITS || nbits > TOK_MAX_RSA_BITS) {
			r = TOK_ERR_BAD_INPUT;
			goto out;
		}
		key->bits = (unsigned)nbits;
	} else {
		r = TOK_ERR_BAD_INPUT;
		goto out;
	}

	r = pub_from_object(tok, s, key, kt, ecparams, eplen, modulus, &key->pub);
	if (r != TOK_OK && r != TOK_ERR_NOT_FOUND)
		goto out;
	r = cert_find(tok, s, key, modulus, key->pub, &key->cert);
	if (r != TOK_OK)
		goto out;
	if (key->pub == NULL && key->cert != NULL) {
		key->pub = X509_get_pubkey(key->cert);
		if (key->pub == NULL) {
			r = TOK_ERR_INTERNAL;
			goto out;
		}
	}
	r = key->pub != NULL ? TOK_OK : TOK_ERR_NOT_FOUND;
out:
	BN_free(modulus);
	free(ecparams);
	free(buf);
	return r;
}

static void key_ent_free(struct key_ent *e)
{
	if (e == NULL)
		return;
	X509_free(e->key.cert);
	EVP_PKEY_free(e->key.pub);
	free(e->uri);
	free(e);
}

/* The one private key matching uri on this token, by one object search. TOK_ERR_NOT_FOUND if
 * none, TOK_ERR_BAD_INPUT if the URI is malformed or matches several. */
static int find_priv(struct token *tok, CK_SESSION_HANDLE s, const char *uri, CK_OBJECT_HANDLE *out)
{
	int r = TOK_ERR_INTERNAL;
	P11KitUri *u = NULL;
	CK_ATTRIBUTE tmpl[TOK_MAX_URI_ATTRS + 1];
	CK_ATTRIBUTE *attrs;
	CK_ULONG nattrs = 0, nt = 0, i, found = 0;
	CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY, have;
	CK_OBJECT_HANDLE objs[2];
	CK_TOKEN_INFO ti;
	CK_RV rv;
	int has_class = 0;

	u = p11_kit_uri_new();
	if (u == NULL)
		goto out;
	r = TOK_ERR_BAD_INPUT;
	if (p11_kit_uri_parse(uri, P11_KIT_URI_FOR_OBJECT_ON_TOKEN, u) != P11_KIT_URI_OK)
		goto out;
	if (p11_kit_uri_any_unrecognized(u))
		goto out;
	attrs = p11_kit_uri_get_attributes(u, &nattrs);
	if (nattrs > TOK_MAX_URI_ATTRS)
		goto out;
	for (i = 0; i < nattrs; i++) {
		if (attrs[i].type == CKA_CLASS) {
			/* This finds signing keys: "type=cert" is a caller mistake, not a miss. */
			if (attrs[i].ulValueLen != sizeof(have))
				goto out;
			memcpy(&have, attrs[i].pValue, sizeof(have));
			if (have != CKO_PRIVATE_KEY)
				goto out;
			has_class = 1;
		}
		tmpl[nt++] = attrs[i];
	}
	if (!has_class) {
		tmpl[nt].type = CKA_CLASS;
		tmpl[nt].pValue = &cls;
		tmpl[nt].ulValueLen = sizeof(cls);
		nt++;
	}

	/* Token attributes in the URI (token=, serial=) must name this token. Read fresh: the
	 * label changes when a provisioning tool initialises the token. */
	rv = tok->fl->C_GetTokenInfo(tok->slot, &ti);
	if (rv != CKR_OK) {
		r = tok_session_failed(tok, rv);
		goto out;
	}
	if (!p11_kit_uri_match_token_info(u, &ti)) {
		r = TOK_ERR_NOT_FOUND;
		goto out;
	}
	r = find_objects(tok, s, tmpl, nt, objs, 2, &found);
	if (r != TOK_OK)
		goto out;
	if (found == 0) {
		r = TOK_ERR_NOT_FOUND;
		goto out;
	}
	if (found > 1) {
		r = TOK_ERR_BAD_INPUT;
		goto out;
	}
	*out = objs[0];
	r = TOK_OK;
out:
	if (u != NULL)
		p11_kit_uri_free(u);
	return r;
}

/* First lookup of a URI: one object search and the attribute reads, on a worker's session.
 * Caller holds op_lock (read). */
static int key_load(struct token *tok, const char *uri, size_t ulen, struct key_ent **out)
{
	int r = TOK_ERR_INTERNAL;
	CK_OBJECT_HANDLE h = CK_INVALID_HANDLE;
	CK_SESSION_HANDLE s;
	unsigned gen = atomic_load(&tok->gen);
	struct key_ent *e = NULL;

	*out = NULL;
	r = tok_session(tok, &s);
	if (r != TOK_OK)
		goto out;
	r = find_priv(tok, s, uri, &h);
	if (r != TOK_OK)
		goto out;
	r = TOK_ERR_INTERNAL;
	e = calloc(1, sizeof(*e));
	if (e == NULL)
		goto out;
	e->uri = malloc(ulen + 1);
	if (e->uri == NULL)
		goto out;
	memcpy(e->uri, uri, ulen + 1);
	e->key.priv = h;
	atomic_store(&e->hgen, gen);
	r = key_describe(tok, s, &e->key);
	if (r != TOK_OK)
		goto out;
	*out = e;
	e = NULL;
out:
	key_ent_free(e);
	return r;
}

/* A first lookup's module work, run by a worker like a signature (worker.c) and with the same
 * deadline: heap-allocated, because a caller that gave up on it leaves it to the worker. */
struct key_job {
	struct tok_job j;
	char *uri;
	size_t ulen;
	struct key_ent *e; /* the result, until the caller takes it */
};

static void key_job_drop(struct tok_job *j)
{
	struct key_job *kj = (struct key_job *)j;

	key_ent_free(kj->e);
	free(kj->uri);
	free(kj);
}

static int key_job_run(struct token *tok, struct tok_job *j)
{
	struct key_job *kj = (struct key_job *)j;
	int r;

	r = tok_use_begin(tok);
	if (r != TOK_OK)
		return r;
	r = key_load(tok, kj->uri, kj->ulen, &kj->e);
	tok_use_end(tok);
	return r;
}

/* key_load on a worker; *out is the caller's on TOK_OK. */
static int key_lookup(struct token *tok, const char *uri, size_t ulen, struct key_ent **out)
{
	struct key_job *kj;
	int r, gone = 0;

	*out = NULL;
	if ((kj = calloc(1, sizeof(*kj))) == NULL || (kj->uri = malloc(ulen + 1)) == NULL) {
		free(kj);
		return TOK_ERR_INTERNAL;
	}
	memcpy(kj->uri, uri, ulen);
	kj->uri[ulen] = '\0';
	kj->ulen = ulen;
	kj->j.run = key_job_run;
	kj->j.drop = key_job_drop;
	r = tok_job_call(tok, &kj->j, "a key lookup", &gone);
	if (gone)
		return r; /* still in the module: the worker owns the job now */
	if (r == TOK_OK) {
		*out = kj->e;
		kj->e = NULL;
	}
	key_job_drop(&kj->j);
	return r;
}

/* Is object h the same key as key (type, size, CKA_ID; RSA: the very modulus)? */
static int same_key(struct token *tok, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE h,
                    const struct tok_key *key)
{
	unsigned char *buf = NULL;
	size_t len = 0;
	CK_KEY_TYPE kt;
	BIGNUM *n = NULL, *have = NULL;
	int r;

	r = attr_get(tok, s, h, CKA_KEY_TYPE, sizeof(kt), &buf, &len);
	if (r != TOK_OK)
		goto out;
	r = TOK_ERR_NOT_FOUND;
	if (len != sizeof(kt))
		goto out;
	memcpy(&kt, buf, sizeof(kt));
	free(buf);
	buf = NULL;
	if ((kt == CKK_RSA) != (key->type == TOK_KEY_RSA))
		goto out;
	r = attr_get(tok, s, h, CKA_ID, sizeof(key->id), &buf, &len);
	if (r == TOK_ERR_NOT_FOUND)
		len = 0;
	else if (r != TOK_OK)
		goto out;
	r = TOK_ERR_NOT_FOUND;
	if (len != key->id_len || (len > 0 && memcmp(buf, key->id, len) != 0))
		goto out;
	free(buf);
	buf = NULL;
	if (key->type == TOK_KEY_RSA) {
		r = attr_get(tok, s, h, CKA_MODULUS, TOK_MAX_MODULUS, &buf, &len);
		if (r != TOK_OK)
			goto out;
		r = TOK_ERR_INTERNAL;
		n = BN_bin2bn(buf, (int)len, NULL);
		if (n == NULL || EVP_PKEY_get_bn_param(key->pub, OSSL_PKEY_PARAM_RSA_N, &have) != 1)
			goto out;
		r = BN_cmp(n, have) == 0 ? TOK_OK : TOK_ERR_NOT_FOUND;
	} else {
		r = attr_get(tok, s, h, CKA_EC_PARAMS, TOK_MAX_EC_PARAMS, &buf, &len);
		if (r != TOK_OK)
			goto out;
		r = ec_params_nid(buf, len) == key->curve_nid ? TOK_OK : TOK_ERR_NOT_FOUND;
	}
out:
	BN_free(n);
	BN_free(have);
	free(buf);
	return r;
}

int tok_key_fresh(struct token *tok, const struct tok_key *key)
{
	/* The key is one of ours, inside a key_ent of the cache (or retired list). */
	struct key_ent *e = (struct key_ent *)((char *)key - offsetof(struct key_ent, key));
	unsigned gen = atomic_load(&tok->gen);
	CK_OBJECT_HANDLE h = CK_INVALID_HANDLE;
	CK_SESSION_HANDLE s;
	int r;

	if (atomic_load(&e->hgen) == gen)
		return TOK_OK;
	/* The token came back: object handles may have changed with it. */
	r = tok_session(tok, &s);
	if (r != TOK_OK)
		return r;
	r = find_priv(tok, s, e->uri, &h);
	if (r != TOK_OK)
		return r;
	r = same_key(tok, s, h, key);
	if (r != TOK_OK)
		return r;
	__atomic_store_n(&e->key.priv, h, __ATOMIC_RELAXED);
	atomic_store(&e->hgen, gen);
	return TOK_OK;
}

/* FNV-1a: the cache is keyed by configuration strings, not attacker-chosen ones. */
static uint64_t uri_hash(const char *s, size_t n)
{
	uint64_t h = 0xcbf29ce484222325ULL;
	size_t i;

	for (i = 0; i < n; i++) {
		h ^= (unsigned char)s[i];
		h *= 0x100000001b3ULL;
	}
	return h;
}

/* Caller holds cache_lock. */
static struct key_ent *cache_find(struct token *tok, const char *uri, uint64_t h)
{
	struct key_ent *e;

	if (tok->buckets == NULL)
		return NULL;
	for (e = tok->buckets[h & (tok->nbuckets - 1)]; e != NULL; e = e->next)
		if (e->hash == h && strcmp(e->uri, uri) == 0)
			return e;
	return NULL;
}

/* Caller holds cache_lock for writing. Growing is best effort: longer chains still work. */
static int cache_insert(struct token *tok, struct key_ent *e)
{
	struct key_ent **nb, *x, *next;
	size_t n, i;

	if (tok->buckets == NULL || tok->nkeys >= tok->nbuckets * 2) {
		n = tok->buckets == NULL ? TOK_CACHE_MIN_BUCKETS : tok->nbuckets * 2;
		nb = calloc(n, sizeof(*nb));
		if (nb == NULL && tok->buckets == NULL)
			return TOK_ERR_INTERNAL;
		if (nb != NULL) {
			for (i = 0; i < tok->nbuckets; i++) {
				for (x = tok->buckets[i]; x != NULL; x = next) {
					next = x->next;
					x->next = nb[x->hash & (n - 1)];
					nb[x->hash & (n - 1)] = x;
				}
			}
			free(tok->buckets);
			tok->buckets = nb;
			tok->nbuckets = n;
		}
	}
	i = e->hash & (tok->nbuckets - 1);
	e->next = tok->buckets[i];
	tok->buckets[i] = e;
	tok->nkeys++;
	return TOK_OK;
}

int tok_key_get(struct token *tok, const char *uri, const struct tok_key **out)
{
	struct key_ent *e, *had;
	size_t ulen;
	uint64_t h;
	int r;

	if (out != NULL)
		*out = NULL;
	if (tok == NULL || out == NULL)
		return TOK_ERR_INTERNAL;
	if (uri == NULL)
		return TOK_ERR_BAD_INPUT;
	ulen = strnlen(uri, TOK_MAX_URI + 1);
	if (ulen > TOK_MAX_URI)
		return TOK_ERR_BAD_INPUT;
	h = uri_hash(uri, ulen);

	pthread_rwlock_rdlock(&tok->cache_lock);
	e = cache_find(tok, uri, h);
	pthread_rwlock_unlock(&tok->cache_lock);
	if (e != NULL) {
		*out = &e->key;
		return TOK_OK;
	}

	/* Search without the cache lock: a slow token must not stall cache hits of other
	 * threads. A token that is down is not searched at all. */
	r = key_lookup(tok, uri, ulen, &e);
	if (r != TOK_OK)
		return r;
	e->hash = h;

	pthread_rwlock_wrlock(&tok->cache_lock);
	had = cache_find(tok, uri, h);
	if (had != NULL) {
		/* Another thread loaded it meanwhile; keep theirs, pointers may be out already. */
		pthread_rwlock_unlock(&tok->cache_lock);
		key_ent_free(e);
		*out = &had->key;
		return TOK_OK;
	}
	r = cache_insert(tok, e);
	pthread_rwlock_unlock(&tok->cache_lock);
	if (r != TOK_OK) {
		key_ent_free(e);
		return r;
	}
	*out = &e->key;
	return TOK_OK;
}

void tok_key_flush(struct token *tok)
{
	struct key_ent *e, *next;
	size_t i;

	if (tok == NULL)
		return;
	pthread_rwlock_wrlock(&tok->cache_lock);
	for (i = 0; i < tok->nbuckets; i++) {
		for (e = tok->buckets[i]; e != NULL; e = next) {
			next = e->next;
			e->next = tok->retired;
			tok->retired = e;
		}
		tok->buckets[i] = NULL;
	}
	tok->nkeys = 0;
	pthread_rwlock_unlock(&tok->cache_lock);
}

static void cache_free_all(struct token *tok)
{
	struct key_ent *e, *next;

	if (tok->cache_lock_ok)
		tok_key_flush(tok);
	for (e = tok->retired; e != NULL; e = next) {
		next = e->next;
		key_ent_free(e);
	}
	tok->retired = NULL;
	free(tok->buckets);
	tok->buckets = NULL;
	tok->nbuckets = 0;
}
