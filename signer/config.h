/* iamsignd.yaml: the daemon's configuration (also read by iamsign-admin). */
#ifndef IAMSIGN_SIGNER_CONFIG_H
#define IAMSIGN_SIGNER_CONFIG_H

#include <stddef.h>
#include <sys/types.h>

/* limits: caps on what a caller may send (docs/config.md "limits"). Defaults and ranges: */
#define CFG_DEFAULT_BODY_SIZE (64 * 1024) /* limits.body_size, 1 KiB..1 MiB */
#define CFG_MAX_BODY_SIZE (1024 * 1024)
#define CFG_DEFAULT_HEADER_SIZE (16 * 1024) /* limits.header_size, 1 KiB..1 MiB */
#define CFG_MAX_HEADER_SIZE (1024 * 1024)
#define CFG_MIN_SIZE 1024
#define CFG_DEFAULT_HASHES 64 /* limits.hashes, 1..WIRE_MAX_HASHES (64) */
#define CFG_MAX_HASHES 64
#define CFG_DEFAULT_JSON_DEPTH 32 /* limits.json_depth, 4..1024 */
#define CFG_MIN_JSON_DEPTH 4      /* a signDoc request is 4 deep */
#define CFG_MAX_JSON_DEPTH 1024
#define CFG_DEFAULT_CONNECTIONS 512 /* limits.connections, 1..10000 */
#define CFG_MAX_CONNECTIONS 10000
#define CFG_DEFAULT_PER_UID 32      /* limits.connections_per_uid, 1..limits.connections */
#define CFG_DEFAULT_READ_TIMEOUT 10 /* limits.read_timeout, seconds, 1..3600 */
#define CFG_DEFAULT_IDLE_TIMEOUT 30 /* limits.idle_timeout, seconds, 1..3600 */
#define CFG_MAX_TIMEOUT 3600

struct config_limits {
	size_t body_size;      /* bytes of one request body */
	size_t header_size;    /* bytes of one request's line and headers */
	unsigned hashes;       /* hashes in one sign request */
	unsigned json_depth;   /* nesting of arrays and objects in a body */
	unsigned connections;  /* connections at once, all callers */
	unsigned per_uid;      /* connections at once from one uid (SO_PEERCRED) */
	unsigned read_timeout; /* seconds for a request to arrive once its first line has */
	unsigned idle_timeout; /* seconds a connection may wait for its next request, or stay
	                          silent in the middle of one */
};

/* Fill l with the defaults above. */
void config_limits_default(struct config_limits *l);

struct config {
	char *path;
	/* token: */
	char *token_module;
	char *token_uri;
	char *token_pin_file;
	char **token_module_dirs; /* token.module_dirs, NULL-terminated; NULL: built-in allowlist */
	unsigned token_sessions;  /* token.sessions: most sessions at once, 2..65; 0: the token's */
	/* listen: */
	char *socket_path;
	mode_t socket_mode; /* default 0660 */
	char *socket_group; /* NULL: daemon's group */
	unsigned threads;   /* listen.threads: worker threads, default 16, 1..64 */
	/* top level */
	char *user;  /* the signing core drops to this user once the token and ledger are open;
	              * NULL: it keeps the user it was started as */
	char *group; /* and this group (NULL: the user's primary group) */
	char *listener_user;  /* listener.user: the listener process's user (default nobody) */
	char *listener_group; /* listener.group: its group (default: that user's group) */
	char *state_dir;
	char *policy_path;
	char **sad_issuers; /* NULL-terminated, may be empty */
	size_t nsad_issuers;
	char *trust_anchors; /* may be NULL */
	/* ledger: */
	char *ledger_audit_key;           /* PKCS#11 URI of the checkpoint signing key */
	unsigned ledger_checkpoint_every; /* records between checkpoints, 1..1000000 (1000) */
	unsigned ledger_checkpoint_secs;  /* seconds between checkpoints, 1..86400 (60) */
	unsigned ledger_write_timeout;    /* seconds a request waits for its record, 1..60 (2) */
	/* tsa: the RFC 3161 time-stamping service of Ades-B-T (tsa_url NULL: none) */
	char *tsa_url;           /* http://HOST[:PORT]/PATH, at most CFG_MAX_TSA_URL bytes */
	char *tsa_host;          /* HOST of tsa_url (an IPv6 address without its brackets) */
	unsigned tsa_port;       /* PORT of tsa_url (80 when absent) */
	char *tsa_trust_anchors; /* the TSA's CA certificates (PEM); required with url */
	int tsa_hash;            /* enum alg_hash of the message imprint (default SHA-256) */
	unsigned tsa_timeout;    /* seconds for one time-stamp's round trip, 1..60 (5) */
	char *tsa_policy;        /* dotted OID of the TSA policy to ask for, or NULL */
	/* keys: */
	char *keys_kek;      /* PKCS#11 URI of the key-encryption key of wrapped keys */
	unsigned keys_cache; /* unwrapped keys held at once, 2..1000000 (10000) */
	/* limits: */
	struct config_limits limits;
};

#define CFG_MAX_TSA_URL 1024
#define CFG_DEFAULT_TSA_TIMEOUT 5
#define CFG_MAX_TSA_TIMEOUT 60

/* Parse and validate: required keys token.module, token.uri, token.pin_file, listen.socket,
 * state_dir, policy. Unknown keys and bad values are errors "FILE:LINE: KEY: message". Relative
 * paths are taken relative to the configuration file's directory. */
int config_load(const char *path, struct config **out, char *err, size_t errlen);
void config_free(struct config *c);

/* Become `user` and `group` (that user's primary group by default; no supplementary groups),
 * with the process non-dumpable again afterwards. 0 when done or when no user is configured,
 * else -1 with err set. iamsignd's core and iamsign-admin call it once their PIN files are
 * read (tok_pin_preload), so that what they create belongs to that user. */
int config_become_user(const struct config *c, char *err, size_t errlen);

/* The two halves, for the listener, which roots itself in between: look user (and group, or
 * the user's primary group) up, errors naming "KEY.user" / "KEY.group" ("" for the top-level
 * keys); then switch to them as config_become_user does. 0, or -1 with err set. */
int config_lookup_user(const char *user, const char *group, const char *key, uid_t *uid, gid_t *gid,
                       char *err, size_t errlen);
int config_switch_user(uid_t uid, gid_t gid, char *err, size_t errlen);

#endif
