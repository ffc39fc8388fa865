/* The credential registry: an SQLite database (iamsign.db) in the state directory, shared by
 * iamsignd and iamsign-admin. Each call is its own statement; the handle is safe to share
 * between threads (internally serialised). */
#ifndef IAMSIGN_SIGNER_REGISTRY_H
#define IAMSIGN_SIGNER_REGISTRY_H

#include <stddef.h>
#include <stdint.h>

#include "signer/wire/types.h"

enum reg_err {
	REG_OK = 0,
	REG_ERR_INTERNAL = -1,
	REG_ERR_NOT_FOUND = -2,
	REG_ERR_EXISTS = -3,
	REG_ERR_BAD_INPUT = -4,
};

enum reg_status { REG_ACTIVE = 1, REG_SUSPENDED = 2, REG_REVOKED = 3 };
const char *reg_status_name(enum reg_status s); /* "active", "suspended", "revoked" */

#define REG_MAX_URI 512
#define REG_KEK_ID_LEN 16
#define REG_MAX_BLOB 4096
#define REG_MAX_SPKI 1024
#define REG_MAX_BINDING 512
#define REG_MAX_CERT (16 * 1024)

/* Where a credential's private key is: a token object found by key_uri, or a blob wrapped by
 * the token's KEK, kept in the registry (table wrapped_keys, by ID, so keygen comes before
 * enrol). */
enum reg_store { REG_STORE_TOKEN = 1, REG_STORE_WRAPPED = 2 };

/* A wrapped key: the blob, the KEK's CKA_ID, the public key (SubjectPublicKeyInfo DER) and
 * the binding signature (pkcs11/wrapped.h). */
struct reg_wkey {
	int present;
	unsigned char kek[REG_KEK_ID_LEN];
	unsigned char *blob;
	size_t blob_len;
	unsigned char *pub;
	size_t pub_len;
	unsigned char *binding;
	size_t binding_len;
	int64_t created;
};
void reg_wkey_clear(struct reg_wkey *w);

struct reg_cred {
	char id[CRED_MAX_ID + 1];
	char owner[CRED_MAX_USER + 1];
	int cls; /* enum pol_class value (1 citizen, 2 seal) */
	enum reg_status status;
	char key_uri[REG_MAX_URI + 1];
	char *chain_pem;      /* extra certificates for CMS (table chains, keyed by ID, so
	                       * import-cert --chain may come before enrol), or NULL */
	char *device_key_pem; /* citizen's registered device public key (PEM), or NULL */
	int64_t created;      /* unix time */
	enum reg_store store; /* 0 in registry_add: REG_STORE_TOKEN */
	struct reg_wkey wkey; /* REG_STORE_WRAPPED: the blob (present 0 when it is missing) */
	unsigned char *cert;  /* the certificate DER kept in the registry (wrapped keys), or NULL */
	size_t cert_len;
};
void reg_cred_clear(struct reg_cred *c);

struct registry;
/* Open (create with create != 0) STATE_DIR/iamsign.db, WAL mode, synchronous FULL. */
int registry_open(const char *state_dir, int create, struct registry **out, char *err,
                  size_t errlen);
void registry_close(struct registry *r);

int registry_get(struct registry *r, const char *id, struct reg_cred *out);
int registry_add(struct registry *r, const struct reg_cred *c); /* REG_ERR_EXISTS if present */
int registry_set_status(struct registry *r, const char *id, enum reg_status s);
/* Upsert the chain of a credential ID, enrolled or not yet (NULL removes it). */
int registry_set_chain(struct registry *r, const char *id, const char *chain_pem);
int registry_remove(struct registry *r, const char *id);
/* Calls fn for each credential in ID order (owner == NULL) or those of one owner; stops when fn
 * returns non-zero. Pages of REG_PAGE rows, by index: memory is bounded whatever the count. */
int registry_foreach(struct registry *r, const char *owner,
                     int (*fn)(const struct reg_cred *c, void *arg), void *arg);
/* The same, from the first ID after `after` (exclusive; NULL or "": from the start). */
int registry_foreach_after(struct registry *r, const char *owner, const char *after,
                           int (*fn)(const struct reg_cred *c, void *arg), void *arg);
/* Enrol credentials in one transaction, all or none: next fills each (1), says the end (0) or
 * fails (-1, nothing is enrolled); it runs under the registry's lock and must not call it.
 * REG_ERR_EXISTS (with *bad the index) when one is already enrolled. */
int registry_add_each(struct registry *r, int (*next)(void *arg, struct reg_cred *c), void *arg,
                      size_t *bad);

/* Wrapped keys, by credential ID (enrolled or not yet). */
int registry_wkey_get(struct registry *r, const char *id, struct reg_wkey *out);
/* Insert n keys in one transaction (REG_ERR_EXISTS, nothing written, if one ID has a key). */
int registry_wkey_put_many(struct registry *r, const char *const *ids, const struct reg_wkey *w,
                           size_t n);
/* A rewrapped blob (kek rotate): only when the row still holds old_kek's blob. */
int registry_wkey_rewrap(struct registry *r, const char *id,
                         const unsigned char old_kek[REG_KEK_ID_LEN],
                         const unsigned char new_kek[REG_KEK_ID_LEN], const unsigned char *blob,
                         size_t blob_len);
/* Erase the key's blob (destroy): the key is gone for good. */
int registry_wkey_remove(struct registry *r, const char *id);
/* Keys whose KEK is not kek (NULL: every key), in ID order after `after`, at most max: ids get
 * heap strings. For rotation, which resumes from the first that is left. */
int registry_wkey_ids(struct registry *r, const unsigned char *not_kek, const char *after,
                      size_t max, char **ids, size_t *n);
/* How many keys: those of KEK kek; else (kek NULL) those of any KEK but not_kek; else all. */
int registry_wkey_count(struct registry *r, const unsigned char *kek, const unsigned char *not_kek,
                        uint64_t *n);

/* The certificate DER of a credential ID (import-cert of a wrapped key); NULL removes it. */
int registry_cert_put(struct registry *r, const char *id, const unsigned char *der, size_t len);
/* Certificates (and chains, where not NULL) of n credential IDs in one transaction, all or
 * none (import-cert --dir). */
struct reg_cert_put {
	const char *id;
	const unsigned char *der;
	size_t len;
	const char *chain_pem;
};
int registry_cert_put_many(struct registry *r, const struct reg_cert_put *v, size_t n);
/* Rows the registry's statements have stepped through in full table scans since it was opened
 * (SQLITE_STMTSTATUS_FULLSCAN_STEP): 0 while every lookup and page goes by an index, whatever
 * the number of rows. The counts kek rotate takes (registry_wkey_count) are left out. */
uint64_t registry_full_scans(struct registry *r);
/* Settings (the KEK in use, a rotation's target): a value of at most 256 bytes. */
int registry_setting_get(struct registry *r, const char *name, unsigned char *val, size_t max,
                         size_t *len);
int registry_setting_put(struct registry *r, const char *name, const unsigned char *val,
                         size_t len); /* val NULL: removed */

#endif
