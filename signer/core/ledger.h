/* The ledger: tamper-evident audit records, quota counters and consumed SAD identifiers in the
 * state directory's SQLite database (iamsign.db, WAL, synchronous=FULL), hash-chained, with
 * checkpoints of the chain head signed by the audit key in the token.
 *
 * In the daemon, ledger_append() hands the record to one writer thread that commits every
 * record waiting at that moment in one transaction and one fsync (group commit), and returns
 * once the record is durable. iamsign-admin opens the ledger in direct mode: each append is its
 * own transaction. Either way the chain stays linear across processes: the writer reads the
 * chain head inside each write transaction (BEGIN IMMEDIATE).
 *
 * With the writer, every append the ledger could not take (refused, given up on while still
 * queued, or in a batch that failed) and every announcement refused (ledger_announce) is an
 * answer without a record of its own. They are counted, and the next transaction starts with
 * one record noting them (op "ledger.unrecorded", caller "iamsignd", decision "deny", reason
 * "ledger_unavailable", the count and the time span in detail), or ledger_close writes it. */
#ifndef IAMSIGN_SIGNER_LEDGER_H
#define IAMSIGN_SIGNER_LEDGER_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

enum ledger_err {
	LEDGER_OK = 0,
	LEDGER_ERR_INTERNAL = -1,
	LEDGER_ERR_UNAVAILABLE = -2, /* cannot write (disk full, read-only, locked too long) */
	LEDGER_ERR_QUOTA = -3,       /* the record's quota condition failed: recorded as a denial */
	LEDGER_ERR_REPLAY = -4,      /* the record's jti condition failed: recorded as a denial */
	LEDGER_ERR_BAD_INPUT = -5,
};

#define LEDGER_MAX_HASHES 64

struct audit_rec {
	/* Filled by the caller. Strings are NUL-terminated; empty when not applicable. */
	int64_t time_ms; /* unix time in milliseconds; 0: ledger_append fills in now */
	char caller[65]; /* policy caller name, or "" when unknown; "admin" for the tool */
	uint32_t uid, gid;
	int32_t pid;
	char op[40]; /* "signatures/signHash", "credentials/info", "admin.keygen", ... */
	char cred[65];
	char owner[129];
	char purpose[65];
	char halg[16]; /* "sha256", ... */
	size_t nhashes;
	size_t hash_len;
	uint8_t hashes[LEDGER_MAX_HASHES][64];
	char jti[129];
	char decision[8]; /* "allow" or "deny" */
	char reason[48];  /* stable reason, "" when allowed */
	char detail[200]; /* free text (admin action arguments, error description) */
	size_t nsigs;
	uint8_t sig_sha256[LEDGER_MAX_HASHES][32];
	/* RFC 3161 time-stamps (CAdES B-T): 0, or one per signature (ntst == nsigs): the TSA's
	 * time (genTime, unix milliseconds) and the SHA-256 of the token's DER. */
	size_t ntst;
	int64_t tst_time_ms[LEDGER_MAX_HASHES];
	uint8_t tst_sha256[LEDGER_MAX_HASHES][32];

	/* Conditions and side effects, applied in the record's own transaction. When a condition
	 * fails, the record is written as decision "deny" with reason quota_exceeded or
	 * sad_replayed and nsigs 0, and ledger_append returns LEDGER_ERR_QUOTA or _REPLAY. */
	uint32_t quota_add; /* > 0: add to quota(cred, quota_day); fail if the sum > quota_max */
	int64_t quota_day;
	uint32_t quota_max;
	uint32_t jti_add; /* > 0: consume jti; fail if used + jti_add > jti_num */
	uint32_t jti_num;
	int64_t jti_exp; /* kept so expired identifiers can be purged later */

	/* Filled by the ledger. seq on success; settled once the ledger has had its say on the
	 * record: every ledger_append returns with it set (the record written, or counted among
	 * the answers without one), and a refused ledger_announce sets it. A settled record is
	 * never appended again (svc_conclude). */
	uint64_t seq;
	int settled;
};

/* Signs a checkpoint: the SHA-256 chain head, with the audit key. Returns 0 or negative. */
typedef int (*ledger_sign_fn)(void *arg, const uint8_t head[32], uint8_t *sig, size_t *siglen);

struct ledger_opts {
	int direct;                /* 1: no writer thread (iamsign-admin) */
	int no_fsync;              /* benchmark only: synchronous=OFF */
	unsigned checkpoint_every; /* records between checkpoints (default 1000) */
	unsigned checkpoint_secs;  /* seconds between checkpoints (default 60) */
	unsigned timeout_ms;       /* a request's wait for its record (default 2000), see below */
	ledger_sign_fn sign;       /* NULL: no checkpoints (admin direct mode) */
	void *sign_arg;
};

struct ledger;
int ledger_open(const char *state_dir, const struct ledger_opts *opts, struct ledger **out,
                char *err, size_t errlen);
/* Stops the writer, writes the record of answers without one (if any) and a final checkpoint
 * (when it can sign), closes. */
void ledger_close(struct ledger *l);

/* Append one record; blocks until it is durable (or failed). Thread-safe. With the writer
 * thread, the wait is bounded by opts.timeout_ms: a record still queued then is never written
 * and LEDGER_ERR_UNAVAILABLE returned; one the writer was already writing is left to it, and
 * may still be committed (a signature thrown away then has a record all the same). While the
 * writer has been on one batch or checkpoint for that long (ledger_stalled), appends fail at
 * once. */
int ledger_append(struct ledger *l, struct audit_rec *rec);

/* 1 while the writer is stuck on a batch or a checkpoint (a hung fsync, a lock held
 * elsewhere, an audit key that does not answer): it has been on it for opts.timeout_ms or
 * longer, or a request gave up waiting meanwhile. Never in direct mode. */
int ledger_stalled(struct ledger *l);

/* Group commit's hint: a request announces (+1) that it will append a record soon, then
 * appends it with ledger_append_expected, which takes the announcement back as the record
 * arrives (queued or refused); one that will not append after all takes it back with -1.
 * When at least four announced records are on their way, the writer holds a commit back for
 * them, at most about the time of one recent commit and never over 2 ms, so that one fsync
 * carries them all; with fewer the wait would cost more than it saves. The transaction is open
 * meanwhile and takes each record in as it arrives. Ignored by a ledger without a writer thread
 * (direct). */
void ledger_expect(struct ledger *l, int delta);
/* ledger_expect(l, +1) for the signing path, unless the ledger is stalled (ledger_stalled):
 * then LEDGER_ERR_UNAVAILABLE, rec settled (its answer counted as one without a record) and
 * nothing announced, so nothing should be signed. One lock,
 * where a check and an announcement would take it twice. */
int ledger_announce(struct ledger *l, struct audit_rec *rec);
int ledger_append_expected(struct ledger *l, struct audit_rec *rec);

/* What the ledger has done since it was opened, for /metrics. A commit is one write
 * transaction of audit records, and one fsync unless opts.no_fsync: records / commits is how
 * many requests shared each fsync, commit_ns / commits the mean time a COMMIT took. failed
 * counts the appends answered LEDGER_ERR_UNAVAILABLE or LEDGER_ERR_INTERNAL: nothing was
 * recorded for them, except for one that timed out while the writer had it, and that the
 * writer then committed (counted in records too). Checkpoints are not counted. busy_ms is how
 * long the writer has been on its current batch or checkpoint (0 when it has neither): a stuck
 * disk or a held lock shows there while the requests queued behind it wait. unrecorded counts
 * the answers given LEDGER_ERR_UNAVAILABLE without a record of their own, each once, when that
 * became certain (appends and refused announcements alike); a ledger.unrecorded record notes
 * them in the chain afterwards. Not kept across restarts. stalled is ledger_stalled() at the
 * same moment: 1 while signing is refused at once. Thread-safe. */
struct ledger_stats {
	uint64_t commits;
	uint64_t records;
	uint64_t failed;
	uint64_t commit_ns;
	uint64_t busy_ms;
	uint64_t unrecorded;
	int stalled;
};
void ledger_stats(struct ledger *l, struct ledger_stats *out);

/* Sign the current chain head now with opts->sign and store the checkpoint (iamsign-admin
 * audit checkpoint). *seq gets the sequence number covered (0: the ledger is empty, nothing
 * signed). LEDGER_OK also when that head already has a checkpoint; LEDGER_ERR_BAD_INPUT without
 * a sign callback; LEDGER_ERR_INTERNAL if signing failed; LEDGER_ERR_UNAVAILABLE if the
 * database cannot be written. Thread-safe. */
int ledger_checkpoint(struct ledger *l, uint64_t *seq);

/* Current count of quota(cred, day) (0 if none), for a pre-check before signing; the
 * authoritative check is the record's condition. -1 on error. */
int64_t ledger_quota_used(struct ledger *l, const char *cred, int64_t day);
/* Signatures already consumed under jti (0 if unknown); -1 on error. */
int64_t ledger_jti_used(struct ledger *l, const char *jti);

/* Verification and export, for iamsign-admin (read-only; verify_key is the audit key's public
 * key, NULL to skip checkpoint signatures with a warning). verify returns 0 when intact; else
 * -1 with *bad_seq set to the first bad sequence number and why filled. Both stream, a record
 * (and for verify a checkpoint) at a time: memory does not grow with the ledger. */
struct evp_pkey_st;
int ledger_verify(const char *state_dir, struct evp_pkey_st *verify_key, uint64_t *records,
                  uint64_t *checkpoints, uint64_t *bad_seq, char *why, size_t whylen);
/* One JSON object per line with stable field names (see docs/operations.md). */
int ledger_export_jsonl(const char *state_dir, int fd, char *err, size_t errlen);

#endif
