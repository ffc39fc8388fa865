/* For test_wrapped.sh: a key generated and wrapped as keygen does, unwrapped as the daemon's
 * cache does, and its session object's attributes read back through PKCS#11 directly (not by
 * the code under test): a private session object, sensitive, not extractable, sign only, its
 * value unreadable, and the KEK refuses to wrap it again.
 *
 * usage: wrapped-attrs MODULE TOKEN-URI PIN-FILE KEK-URI; prints one line per check, exit 0
 * when all pass. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/objects.h>
#include <p11-kit/pkcs11.h>

#include "pkcs11/token.h"
#include "pkcs11/wrapped.h"

static int failed;

static void want(int ok, const char *what)
{
	printf("%s: %s\n", ok ? "ok" : "FAILED", what);
	if (!ok)
		failed = 1;
}

int main(int argc, char **argv)
{
	static const struct {
		CK_ATTRIBUTE_TYPE type;
		const char *name;
		CK_BBOOL want;
	} bools[] = {
	    {CKA_TOKEN, "CKA_TOKEN", CK_FALSE},
	    {CKA_PRIVATE, "CKA_PRIVATE", CK_TRUE},
	    {CKA_SENSITIVE, "CKA_SENSITIVE", CK_TRUE},
	    {CKA_EXTRACTABLE, "CKA_EXTRACTABLE", CK_FALSE},
	    {CKA_SIGN, "CKA_SIGN", CK_TRUE},
	    {CKA_DECRYPT, "CKA_DECRYPT", CK_FALSE},
	    {CKA_UNWRAP, "CKA_UNWRAP", CK_FALSE},
	    {CKA_DERIVE, "CKA_DERIVE", CK_FALSE},
	    {CKA_SIGN_RECOVER, "CKA_SIGN_RECOVER", CK_FALSE},
	};
	struct tok_opts o = {0};
	struct token *tok = NULL;
	struct tok_wcache *c = NULL;
	struct tok_wrapped_new nw = {0};
	struct tok_wrapped_ref ref = {0};
	const struct tok_key *key = NULL;
	unsigned char kek[1][TOK_KEK_ID_LEN], value[256], blob[TOK_MAX_BLOB];
	CK_MECHANISM mech = {CKM_AES_KEY_WRAP_PAD, NULL, 0};
	CK_ATTRIBUTE a;
	CK_OBJECT_HANDLE kh[2];
	CK_OBJECT_CLASS sec = CKO_SECRET_KEY;
	CK_ATTRIBUTE kt[] = {{CKA_CLASS, &sec, sizeof(sec)}, {CKA_ID, NULL, TOK_KEK_ID_LEN}};
	CK_FUNCTION_LIST *fl;
	CK_SESSION_HANDLE s;
	CK_ULONG n = 0, bl = sizeof(blob);
	CK_BBOOL v;
	CK_RV rv;
	char err[256] = "";
	size_t nk = 0, i;

	if (argc != 5) {
		fprintf(stderr, "usage: wrapped-attrs MODULE TOKEN-URI PIN-FILE KEK-URI\n");
		return 2;
	}
	o.module = argv[1];
	o.uri = argv[2];
	o.pin_file = argv[3];
	o.require_initialized = 1;
	o.no_monitor = 1;
	if (tok_open(&o, &tok, err, sizeof(err)) != TOK_OK ||
	    tok_wcache_new(tok, argv[4], 2, &c) != TOK_OK ||
	    tok_kek_list(c, kek, 1, &nk) != TOK_OK || nk != 1) {
		fprintf(stderr, "wrapped-attrs: setup: %s (KEKs: %zu)\n", err, nk);
		return 1;
	}
	if (tok_wrapped_generate(c, kek[0], TOK_KEY_EC, NID_X9_62_prime256v1, 0, "attrs-1", &nw,
	                         err, sizeof(err)) != TOK_OK) {
		fprintf(stderr, "wrapped-attrs: generate: %s\n", err);
		return 1;
	}
	ref = (struct tok_wrapped_ref){"attrs-1", nw.kek_id,   nw.blob,    nw.blob_len,
	                               nw.spki,   nw.spki_len, nw.binding, nw.binding_len};
	if (tok_wrapped_get(c, &ref, &key) != TOK_OK) {
		fprintf(stderr, "wrapped-attrs: unwrap refused\n");
		return 1;
	}
	fl = tok_functions(tok);
	if (tok_session(tok, &s) != TOK_OK)
		return 1;
	for (i = 0; i < sizeof(bools) / sizeof(bools[0]); i++) {
		char what[64];

		v = 0xff;
		a = (CK_ATTRIBUTE){bools[i].type, &v, sizeof(v)};
		rv = fl->C_GetAttributeValue(s, key->priv, &a, 1);
		snprintf(what, sizeof(what), "unwrapped key %s is %s", bools[i].name,
		         bools[i].want ? "true" : "false");
		want(rv == CKR_OK && a.ulValueLen == sizeof(v) && (v != CK_FALSE) == bools[i].want,
		     what);
	}
	a = (CK_ATTRIBUTE){CKA_VALUE, value, sizeof(value)};
	rv = fl->C_GetAttributeValue(s, key->priv, &a, 1);
	want(rv == CKR_ATTRIBUTE_SENSITIVE, "unwrapped key CKA_VALUE cannot be read");
	kt[1].pValue = kek[0];
	if (fl->C_FindObjectsInit(s, kt, 2) == CKR_OK) {
		fl->C_FindObjects(s, kh, 2, &n);
		fl->C_FindObjectsFinal(s);
	}
	want(n == 1, "the KEK found by its CKA_ID");
	rv = n == 1 ? fl->C_WrapKey(s, &mech, kh[0], key->priv, blob, &bl) : CKR_OK;
	want(rv != CKR_OK, "the KEK does not wrap the unwrapped key again");
	tok_wrapped_put(c, key);
	tok_wrapped_new_clear(&nw);
	tok_close(tok);
	tok_wcache_free(c);
	return failed;
}
