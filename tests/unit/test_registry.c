/* The registry at scale: with many rows (REG_ROWS), every lookup the daemon and the batch
 * commands make (credential by ID, a citizen's page, wrapped key by ID, certificates in
 * batches, the listing from an ID) goes by an index: no statement steps through a full table
 * scan, so their cost does not grow with the number of credentials. And a listing visits the
 * rows in pages, as many callbacks as rows, with one owner's page reading only theirs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "policy/policy.h"
#include "signer/core/registry.h"

#define REG_ROWS 20000
#define OWNERS 1000

struct gen {
	size_t i;
};

static int next_cred(void *arg, struct reg_cred *c)
{
	struct gen *g = arg;

	if (g->i == REG_ROWS)
		return 0;
	memset(c, 0, sizeof(*c));
	snprintf(c->id, sizeof(c->id), "cit-%06zu", g->i);
	snprintf(c->owner, sizeof(c->owner), "citizen-%zu", g->i % OWNERS);
	snprintf(c->key_uri, sizeof(c->key_uri), "pkcs11:object=cit-%06zu;type=private", g->i);
	c->cls = POL_CLASS_CITIZEN;
	c->status = REG_ACTIVE;
	c->created = 1;
	c->store = REG_STORE_WRAPPED;
	g->i++;
	return 1;
}

struct count {
	size_t n;
	const char *owner;
	int other; /* a row of another owner was seen */
};

static int count_row(const struct reg_cred *c, void *arg)
{
	struct count *k = arg;

	k->n++;
	if (k->owner != NULL && strcmp(c->owner, k->owner) != 0)
		k->other = 1;
	return 0;
}

static void indexed(void **state)
{
	char dir[] = "/tmp/iamsign-registry-XXXXXX", err[256] = "", cmd[300], id[32];
	unsigned char kek[REG_KEK_ID_LEN] = {1}, blob[40] = {2}, pub[91] = {3}, bind[70] = {4};
	unsigned char der[300] = {0x30};
	struct registry *r = NULL;
	struct gen g = {0};
	struct count k = {0};
	struct reg_cred c;
	struct reg_wkey w;
	struct reg_wkey wv[100];
	const char *ids[100];
	char idbuf[100][32];
	struct reg_cert_put cv[100];
	size_t bad = 0, i;

	(void)state;
	assert_non_null(mkdtemp(dir));
	assert_int_equal(registry_open(dir, 1, &r, err, sizeof(err)), REG_OK);
	assert_int_equal(registry_add_each(r, next_cred, &g, &bad), REG_OK);
	for (i = 0; i < 100; i++) {
		snprintf(idbuf[i], sizeof(idbuf[i]), "cit-%06zu", i * 7);
		ids[i] = idbuf[i];
		wv[i] = (struct reg_wkey){.present = 1,
		                          .blob = blob,
		                          .blob_len = sizeof(blob),
		                          .pub = pub,
		                          .pub_len = sizeof(pub),
		                          .binding = bind,
		                          .binding_len = sizeof(bind),
		                          .created = 1};
		memcpy(wv[i].kek, kek, sizeof(kek));
		cv[i] = (struct reg_cert_put){idbuf[i], der, sizeof(der), NULL};
	}
	assert_int_equal(registry_wkey_put_many(r, ids, wv, 100), REG_OK);
	assert_int_equal(registry_cert_put_many(r, cv, 100), REG_OK);
	assert_true(registry_full_scans(r) == 0);

	/* The signing path: a credential, its key and certificate; a citizen's page. */
	for (i = 0; i < 500; i++) {
		snprintf(id, sizeof(id), "cit-%06zu", (i * 7919) % REG_ROWS);
		assert_int_equal(registry_get(r, id, &c), REG_OK);
		reg_cred_clear(&c);
		assert_int_equal(registry_wkey_get(r, idbuf[i % 100], &w), REG_OK);
		reg_wkey_clear(&w);
	}
	assert_int_equal(registry_get(r, "cit-999999", &c), REG_ERR_NOT_FOUND);
	k.owner = "citizen-7";
	assert_int_equal(registry_foreach_after(r, "citizen-7", "cit-000500", count_row, &k),
	                 REG_OK);
	assert_int_equal(k.n, 19); /* 1007, 2007 .. 19007 */
	assert_false(k.other);
	/* list: every row once, in pages. */
	memset(&k, 0, sizeof(k));
	assert_int_equal(registry_foreach(r, NULL, count_row, &k), REG_OK);
	assert_int_equal(k.n, REG_ROWS);
	assert_true(registry_full_scans(r) == 0);

	registry_close(r);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	assert_int_equal(system(cmd), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(indexed),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
