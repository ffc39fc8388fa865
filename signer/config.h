/* iamsignd.yaml: the daemon's configuration (also read by iamsign-admin). */
#ifndef IAMSIGN_SIGNER_CONFIG_H
#define IAMSIGN_SIGNER_CONFIG_H

#include <stddef.h>
#include <sys/types.h>

struct config {
	char *path;
	/* token: */
	char *token_module;
	char *token_uri;
	char *token_pin_file;
	char **token_module_dirs; /* token.module_dirs, NULL-terminated; NULL: built-in allowlist */
	/* listen: */
	char *socket_path;
	mode_t socket_mode; /* default 0660 */
	char *socket_group; /* NULL: daemon's group */
	unsigned threads;   /* listen.threads: worker threads, default 4, 1..64 */
	/* top level */
	char *state_dir;
	char *policy_path;
	char **sad_issuers; /* NULL-terminated, may be empty */
	size_t nsad_issuers;
	char *trust_anchors; /* may be NULL */
	/* ledger: */
	char *ledger_audit_key;           /* PKCS#11 URI of the checkpoint signing key */
	unsigned ledger_checkpoint_every; /* records between checkpoints, 1..1000000 (1000) */
	unsigned ledger_checkpoint_secs;  /* seconds between checkpoints, 1..86400 (60) */
};

/* Parse and validate: required keys token.module, token.uri, token.pin_file, listen.socket,
 * state_dir, policy. Unknown keys and bad values are errors "FILE:LINE: KEY: message". Relative
 * paths are taken relative to the configuration file's directory. */
int config_load(const char *path, struct config **out, char *err, size_t errlen);
void config_free(struct config *c);

#endif
