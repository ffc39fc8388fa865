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
 * returns non-zero. */
int registry_foreach(struct registry *r, const char *owner,
                     int (*fn)(const struct reg_cred *c, void *arg), void *arg);

#endif
