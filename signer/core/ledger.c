/* The ledger: hash-chained audit records, quota counters and consumed SAD identifiers in
 * STATE_DIR/iamsign.db, next to the registry's tables.
 *
 * Tables (created here with CREATE TABLE IF NOT EXISTS; the registry's user_version migrations
 * are left alone):
 *   audit(seq, time_ms, caller, uid, gid, pid, op, cred, owner, purpose, halg, hash_len,
 *         hashes, jti, decision, reason, detail, sig_sha256, prev_hash, hash)
 *     hashes: the nhashes submitted hashes concatenated (BLOB, nhashes * hash_len bytes);
 *     sig_sha256: the SHA-256 of each signature concatenated (BLOB, nsigs * 32 bytes);
 *     tst: for each signature's RFC 3161 time-stamp, the TSA's time (8-byte big-endian unix
 *       milliseconds) and the SHA-256 of the token (BLOB, 0 or nsigs * 40 bytes; a column
 *       added to older databases when the daemon opens them);
 *     prev_hash, hash: 32-byte BLOBs.
 *   checkpoints(seq, head, time_ms, sig): head is the hash of record seq, sig the audit key's
 *     signature over it (DER ECDSA for an EC key).
 *   quota(cred, day, count), sad_jti(jti, used, num, exp).
 *
 * A record's hash is SHA-256 over its canonical encoding (enc_record below): every field in a
 * fixed order, integers as fixed-width big-endian, strings and byte strings as a 4-byte
 * big-endian length and the bytes, lists as a 4-byte count and their items, then the previous
 * record's hash (32 zero bytes before the first record). A record with time-stamps is tagged
 * LEDGER_ENC_TAG_TST and has them after the signatures' hashes; one without keeps the first
 * tag and encoding, so that older records verify unchanged. Nothing in the database is trusted
 * when verifying: every row is re-encoded from its columns.
 *
 * Locks: `mu` guards the queue, the checkpoint counters and the stats; `wmu` guards the write
 * connection (held by the writer thread for a transaction, its commit delay included, or by a
 * direct-mode append, or by a checkpoint); `rmu` guards the read connection used by
 * ledger_quota_used/ledger_jti_used. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <sqlite3.h>

#include "signer/core/ledger.h"

#define LEDGER_DB_NAME "iamsign.db"
#define LEDGER_BUSY_MS 5000
#define LEDGER_DEFAULT_TIMEOUT_MS 2000 /* a request's wait for its record, see ledger.h */
#define LEDGER_MAX_QUEUE 4096          /* records waiting for the writer; more is overload */
#define LEDGER_MAX_SIG 1024            /* checkpoint signature buffer */
#define LEDGER_MAX_BATCH 256           /* the commit delay stops waiting at this many records */
#define LEDGER_DELAY_MAX_NS (2 * 1000 * 1000) /* longest commit delay, whatever a commit took */
#define LEDGER_DELAY_SIBLINGS 4 /* records on their way that make a commit delay worth it */
#define LEDGER_DEFAULT_EVERY 1000
#define LEDGER_DEFAULT_SECS 60
#define LEDGER_ENC_TAG "iamsign.audit.v1"
#define LEDGER_ENC_TAG_TST "iamsign.audit.v2" /* v1 and the time-stamps */
#define LEDGER_TST_LEN 40                     /* a time-stamp in the tst column */

static const char schema_sql[] = "CREATE TABLE IF NOT EXISTS audit ("
                                 " seq INTEGER PRIMARY KEY NOT NULL,"
                                 " time_ms INTEGER NOT NULL,"
                                 " caller TEXT NOT NULL,"
                                 " uid INTEGER NOT NULL,"
                                 " gid INTEGER NOT NULL,"
                                 " pid INTEGER NOT NULL,"
                                 " op TEXT NOT NULL,"
                                 " cred TEXT NOT NULL,"
                                 " owner TEXT NOT NULL,"
                                 " purpose TEXT NOT NULL,"
                                 " halg TEXT NOT NULL,"
                                 " hash_len INTEGER NOT NULL,"
                                 " hashes BLOB NOT NULL,"
                                 " jti TEXT NOT NULL,"
                                 " decision TEXT NOT NULL,"
                                 " reason TEXT NOT NULL,"
                                 " detail TEXT NOT NULL,"
                                 " sig_sha256 BLOB NOT NULL,"
                                 " prev_hash BLOB NOT NULL,"
                                 " hash BLOB NOT NULL,"
                                 " tst BLOB NOT NULL DEFAULT x''"
                                 ");"
                                 "CREATE TABLE IF NOT EXISTS checkpoints ("
                                 " seq INTEGER PRIMARY KEY NOT NULL,"
                                 " head BLOB NOT NULL,"
                                 " time_ms INTEGER NOT NULL,"
                                 " sig BLOB NOT NULL"
                                 ");"
                                 "CREATE TABLE IF NOT EXISTS quota ("
                                 " cred TEXT NOT NULL,"
                                 " day INTEGER NOT NULL,"
                                 " count INTEGER NOT NULL,"
                                 " PRIMARY KEY (cred, day)"
                                 ");"
                                 "CREATE TABLE IF NOT EXISTS sad_jti ("
                                 " jti TEXT PRIMARY KEY NOT NULL,"
                                 " used INTEGER NOT NULL,"
                                 " num INTEGER NOT NULL,"
                                 " exp INTEGER NOT NULL"
                                 ");";

#define AUDIT_COLUMNS                                                                              \
	"seq, time_ms, caller, uid, gid, pid, op, cred, owner, purpose, halg, hash_len, hashes, "  \
	"jti, decision, reason, detail, sig_sha256, prev_hash, hash, tst"
/* The same from a database no daemon with time-stamps has opened yet. */
#define AUDIT_COLUMNS_V1                                                                           \
	"seq, time_ms, caller, uid, gid, pid, op, cred, owner, purpose, halg, hash_len, hashes, "  \
	"jti, decision, reason, detail, sig_sha256, prev_hash, hash, x''"
enum {
	C_SEQ,
	C_TIME,
	C_CALLER,
	C_UID,
	C_GID,
	C_PID,
	C_OP,
	C_CRED,
	C_OWNER,
	C_PURPOSE,
	C_HALG,
	C_HASH_LEN,
	C_HASHES,
	C_JTI,
	C_DECISION,
	C_REASON,
	C_DETAIL,
	C_SIGS,
	C_PREV,
	C_HASH,
	C_TST,
};

/* Write-connection statements. */
enum {
	W_BEGIN,
	W_COMMIT,
	W_ROLLBACK,
	W_HEAD,
	W_INSERT,
	W_QUOTA_GET,
	W_QUOTA_ADD,
	W_JTI_GET,
	W_JTI_ADD,
	W_CKPT_HAS,
	W_CKPT_PUT,
	W_CKPT_LAST,
	W_COUNT
};

static const char *const wsql[W_COUNT] = {
    [W_BEGIN] = "BEGIN IMMEDIATE",
    [W_COMMIT] = "COMMIT",
    [W_ROLLBACK] = "ROLLBACK",
    [W_HEAD] = "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1",
    [W_INSERT] = "INSERT INTO audit (" AUDIT_COLUMNS ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, "
                 "?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21)",
    [W_QUOTA_GET] = "SELECT count FROM quota WHERE cred = ?1 AND day = ?2",
    [W_QUOTA_ADD] = "INSERT INTO quota (cred, day, count) VALUES (?1, ?2, ?3) "
                    "ON CONFLICT (cred, day) DO UPDATE SET count = count + excluded.count",
    [W_JTI_GET] = "SELECT used, num FROM sad_jti WHERE jti = ?1",
    [W_JTI_ADD] = "INSERT INTO sad_jti (jti, used, num, exp) VALUES (?1, ?2, ?3, ?4) "
                  "ON CONFLICT (jti) DO UPDATE SET used = used + excluded.used",
    [W_CKPT_HAS] = "SELECT 1 FROM checkpoints WHERE seq = ?1",
    [W_CKPT_PUT] = "INSERT INTO checkpoints (seq, head, time_ms, sig) VALUES (?1, ?2, ?3, ?4)",
    [W_CKPT_LAST] = "SELECT seq FROM checkpoints ORDER BY seq DESC LIMIT 1",
};

/* Read-connection statements. */
enum { R_QUOTA, R_JTI, R_COUNT };
static const char *const rsql[R_COUNT] = {
    [R_QUOTA] = "SELECT count FROM quota WHERE cred = ?1 AND day = ?2",
    [R_JTI] = "SELECT used FROM sad_jti WHERE jti = ?1",
};

/* One record waiting for the writer, with a copy of the record of its own: a waiter that
 * gives up (the write timeout) leaves it behind, and whoever holds it last frees it. */
/* Answers given without a record (the ledger could not take theirs): counted until a record
 * noting them can be written (gap_record). */
struct gap {
	uint64_t n;
	int64_t first_ms, last_ms;
};

struct pending {
	struct audit_rec rec;
	struct pending *next;
	int result;
	int done;      /* the writer is finished with it: result and rec are final */
	int abandoned; /* its waiter gave up while the writer had it: the writer frees it */
	/* Its waiter's own, posted under mu when done is set: a batch wakes only the waiters it
	 * carried, and a woken waiter needs no lock to read its result (a condition variable
	 * would make each of them queue again for mu, which the writer holds while it wakes the
	 * rest). */
	sem_t sem;
	int notes_gap; /* the writer's own record noting gap (gap_record); no waiter, no sem */
	struct gap gap;
};

struct ledger {
	struct ledger_opts opts;
	char path[4096];

	sqlite3 *db; /* write connection, under wmu */
	sqlite3_stmt *w[W_COUNT];
	pthread_mutex_t wmu;

	sqlite3 *rdb; /* read connection, under rmu */
	sqlite3_stmt *r[R_COUNT];
	pthread_mutex_t rmu;

	/* Queue and checkpoint bookkeeping, under mu. */
	pthread_mutex_t mu;
	pthread_cond_t cv_work; /* writer: work queued, or stop */
	struct pending *qhead, *qtail;
	size_t qlen;
	long expected;   /* appends announced (ledger_expect) that have not arrived yet */
	int64_t sync_ns; /* recent commit time (moving average), for the commit delay */
	int stop;
	uint64_t uncovered;        /* records committed since the last checkpoint */
	uint64_t since_try;        /* records committed since the last checkpoint attempt */
	struct timespec last_ckpt; /* last checkpoint attempt, CLOCK_MONOTONIC */
	unsigned ckpt_failed;      /* checkpoint attempts failed in a row */
	struct ledger_stats stats;
	struct timespec busy_since; /* when the writer took its current batch or checkpoint */
	int busy;                   /* it has one */
	int gave_up;                /* a waiter timed out since the writer took it */
	struct gap gap;             /* answers without a record, not yet noted in the ledger */
	pthread_t writer;
	int have_writer;
	int have_locks;
};

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (err == NULL || errlen == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int rfc3339_ms(int64_t ms, char *buf, size_t len);

static double mono_since(const struct timespec *t0)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)(ts.tv_sec - t0->tv_sec) + (double)(ts.tv_nsec - t0->tv_nsec) / 1e9;
}

/* CLOCK_MONOTONIC ns nanoseconds from now (0 <= ns), for timed waits. */
static void mono_deadline(struct timespec *ts, int64_t ns)
{
	clock_gettime(CLOCK_MONOTONIC, ts);
	ts->tv_sec += (time_t)(ns / 1000000000);
	ts->tv_nsec += (long)(ns % 1000000000);
	if (ts->tv_nsec >= 1000000000L) {
		ts->tv_sec++;
		ts->tv_nsec -= 1000000000L;
	}
}

/* ---- canonical encoding ---- */

static int enc_u32(EVP_MD_CTX *md, uint32_t v)
{
	uint8_t b[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};

	return EVP_DigestUpdate(md, b, sizeof(b));
}

static int enc_u64(EVP_MD_CTX *md, uint64_t v)
{
	uint8_t b[8];
	int i;

	for (i = 7; i >= 0; i--, v >>= 8)
		b[i] = (uint8_t)v;
	return EVP_DigestUpdate(md, b, sizeof(b));
}

static int enc_bytes(EVP_MD_CTX *md, const void *p, size_t n)
{
	if (n > UINT32_MAX || !enc_u32(md, (uint32_t)n))
		return 0;
	return n == 0 || EVP_DigestUpdate(md, p, n);
}

static int enc_str(EVP_MD_CTX *md, const char *s)
{
	return enc_bytes(md, s, strlen(s));
}

/* hash = SHA-256(encoding of rec with seq and prev). The order here is the format: append
 * new fields only under a new tag. */
static int rec_hash(const struct audit_rec *r, uint64_t seq, const uint8_t prev[32],
                    uint8_t out[32])
{
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	unsigned int len = 0;
	size_t i;
	int ok;

	ok = md != NULL && EVP_DigestInit_ex(md, EVP_sha256(), NULL) &&
	     enc_str(md, r->ntst > 0 ? LEDGER_ENC_TAG_TST : LEDGER_ENC_TAG) && enc_u64(md, seq) &&
	     enc_u64(md, (uint64_t)r->time_ms) && enc_str(md, r->caller) && enc_u32(md, r->uid) &&
	     enc_u32(md, r->gid) && enc_u32(md, (uint32_t)r->pid) && enc_str(md, r->op) &&
	     enc_str(md, r->cred) && enc_str(md, r->owner) && enc_str(md, r->purpose) &&
	     enc_str(md, r->halg) && enc_u32(md, (uint32_t)r->nhashes);
	for (i = 0; ok && i < r->nhashes; i++)
		ok = enc_bytes(md, r->hashes[i], r->hash_len);
	ok = ok && enc_str(md, r->jti) && enc_str(md, r->decision) && enc_str(md, r->reason) &&
	     enc_str(md, r->detail) && enc_u32(md, (uint32_t)r->nsigs);
	for (i = 0; ok && i < r->nsigs; i++)
		ok = enc_bytes(md, r->sig_sha256[i], 32);
	if (r->ntst > 0) {
		ok = ok && enc_u32(md, (uint32_t)r->ntst);
		for (i = 0; ok && i < r->ntst; i++)
			ok = enc_u64(md, (uint64_t)r->tst_time_ms[i]) &&
			     enc_bytes(md, r->tst_sha256[i], 32);
	}
	ok = ok && enc_bytes(md, prev, 32) && EVP_DigestFinal_ex(md, out, &len) && len == 32;
	EVP_MD_CTX_free(md);
	return ok ? 0 : -1;
}

/* ---- record validation ---- */

#define STR_OK(field) (memchr((field), '\0', sizeof(field)) != NULL)

static int rec_valid(const struct audit_rec *r)
{
	if (!STR_OK(r->caller) || !STR_OK(r->op) || !STR_OK(r->cred) || !STR_OK(r->owner) ||
	    !STR_OK(r->purpose) || !STR_OK(r->halg) || !STR_OK(r->jti) || !STR_OK(r->decision) ||
	    !STR_OK(r->reason) || !STR_OK(r->detail))
		return 0;
	if (r->op[0] == '\0' ||
	    (strcmp(r->decision, "allow") != 0 && strcmp(r->decision, "deny") != 0))
		return 0;
	if (r->nhashes > LEDGER_MAX_HASHES || r->nsigs > LEDGER_MAX_HASHES)
		return 0;
	if (r->ntst != 0 && r->ntst != r->nsigs)
		return 0;
	if (r->nhashes > 0 && (r->hash_len == 0 || r->hash_len > sizeof(r->hashes[0])))
		return 0;
	if (r->jti_add > 0 && r->jti[0] == '\0')
		return 0;
	if (r->quota_add > 0 && r->cred[0] == '\0')
		return 0;
	return 1;
}

/* ---- files and connections ---- */

/* Create the state directory 0700 and the database file 0600 before SQLite opens it, so neither
 * ever exists with looser modes.
 *
 * An existing database is only stat()ed and chmod()ed, never open()ed: closing a descriptor of
 * a file drops every POSIX lock this process holds on it, including those of SQLite connections
 * already open here (the registry's). Without its shared lock, another process closing its last
 * connection believes it is alone, checkpoints and deletes the WAL under our feet, and
 * committed records are lost. */
static int prepare_files(const char *state_dir, const char *path, char *err, size_t errlen)
{
	struct stat sb;
	int fd;

	if (mkdir(state_dir, 0700) != 0 && errno != EEXIST) {
		set_err(err, errlen, "%s: %s", state_dir, strerror(errno));
		return -1;
	}
	if (stat(state_dir, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
		set_err(err, errlen, "%s: not a directory", state_dir);
		return -1;
	}
	if ((sb.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
		set_err(err, errlen, "%s: state directory is group- or world-writable", state_dir);
		return -1;
	}
	fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd >= 0) {
		close(fd); /* new: nobody can hold a lock on it yet */
		return 0;
	}
	if (errno != EEXIST) {
		set_err(err, errlen, "%s: %s", path, strerror(errno));
		return -1;
	}
	if (lstat(path, &sb) != 0 || !S_ISREG(sb.st_mode)) {
		set_err(err, errlen, "%s: not a regular file", path);
		return -1;
	}
	if ((sb.st_mode & 077) != 0 && chmod(path, 0600) != 0) {
		set_err(err, errlen, "%s: %s", path, strerror(errno));
		return -1;
	}
	return 0;
}

static int db_path(const char *state_dir, char *path, size_t len)
{
	int n;

	if (state_dir == NULL || state_dir[0] == '\0')
		return -1;
	n = snprintf(path, len, "%s/%s", state_dir, LEDGER_DB_NAME);
	return n < 0 || (size_t)n >= len ? -1 : 0;
}

static int open_conn(const char *path, int flags, int sync_off, sqlite3 **out, char *err,
                     size_t errlen)
{
	sqlite3 *db = NULL;
	sqlite3_stmt *st = NULL;
	char *msg = NULL;
	int r = -1;

	*out = NULL;
	if (sqlite3_open_v2(path, &db, flags | SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_NOFOLLOW, NULL) !=
	    SQLITE_OK) {
		set_err(err, errlen, "%s: %s", path,
		        db != NULL ? sqlite3_errmsg(db) : "cannot open database");
		goto out;
	}
	sqlite3_extended_result_codes(db, 1);
	if (sqlite3_busy_timeout(db, LEDGER_BUSY_MS) != SQLITE_OK ||
	    sqlite3_exec(db, sync_off ? "PRAGMA synchronous = OFF;" : "PRAGMA synchronous = FULL;",
	                 NULL, NULL, &msg) != SQLITE_OK) {
		set_err(err, errlen, "ledger: cannot configure database: %s",
		        msg != NULL ? msg : sqlite3_errmsg(db));
		goto out;
	}
	if ((flags & SQLITE_OPEN_READONLY) == 0) {
		/* journal_mode answers with the mode in force: check that WAL took. */
		if (sqlite3_prepare_v2(db, "PRAGMA journal_mode = WAL", -1, &st, NULL) !=
		        SQLITE_OK ||
		    sqlite3_step(st) != SQLITE_ROW || sqlite3_column_text(st, 0) == NULL ||
		    strcmp((const char *)sqlite3_column_text(st, 0), "wal") != 0) {
			set_err(err, errlen, "ledger: cannot enable WAL journal: %s",
			        sqlite3_errmsg(db));
			goto out;
		}
	}
	*out = db;
	db = NULL;
	r = 0;
out:
	sqlite3_finalize(st);
	sqlite3_free(msg);
	sqlite3_close(db);
	return r;
}

/* 1 if the audit table has the tst column (0 for a database from before time-stamps). */
static int has_tst(sqlite3 *db)
{
	sqlite3_stmt *st = NULL;
	int r = sqlite3_prepare_v2(db, "SELECT tst FROM audit LIMIT 0", -1, &st, NULL) == SQLITE_OK;

	sqlite3_finalize(st);
	return r;
}

static int create_schema(sqlite3 *db, char *err, size_t errlen)
{
	char *msg = NULL;

	if (sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, &msg) != SQLITE_OK ||
	    sqlite3_exec(db, schema_sql, NULL, NULL, &msg) != SQLITE_OK ||
	    (!has_tst(db) &&
	     sqlite3_exec(db, "ALTER TABLE audit ADD COLUMN tst BLOB NOT NULL DEFAULT x''", NULL,
	                  NULL, &msg) != SQLITE_OK) ||
	    sqlite3_exec(db, "COMMIT", NULL, NULL, &msg) != SQLITE_OK) {
		set_err(err, errlen, "ledger: cannot create tables: %s",
		        msg != NULL ? msg : sqlite3_errmsg(db));
		sqlite3_free(msg);
		if (!sqlite3_get_autocommit(db))
			sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
		return -1;
	}
	return 0;
}

static void reset(sqlite3_stmt *st)
{
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
}

/* Head of the chain on the write connection: *seq 0 and zero hash when empty. 0 or -1. */
static int read_head(struct ledger *l, uint64_t *seq, uint8_t hash[32])
{
	sqlite3_stmt *st = l->w[W_HEAD];
	int rc, r = -1;

	*seq = 0;
	memset(hash, 0, 32);
	rc = sqlite3_step(st);
	if (rc == SQLITE_DONE) {
		r = 0;
	} else if (rc == SQLITE_ROW && sqlite3_column_int64(st, 0) > 0 &&
	           sqlite3_column_bytes(st, 1) == 32) {
		*seq = (uint64_t)sqlite3_column_int64(st, 0);
		memcpy(hash, sqlite3_column_blob(st, 1), 32);
		r = 0;
	}
	reset(st);
	return r;
}

/* ---- writing ---- */

enum { COND_SQL_ERROR = 1 };

/* Check and apply a record's quota and jti conditions. LEDGER_OK, LEDGER_ERR_QUOTA or
 * _REPLAY (nothing applied), or COND_SQL_ERROR. */
static int apply_conditions(struct ledger *l, const struct audit_rec *r)
{
	sqlite3_stmt *st;
	int64_t used = 0, num = r->jti_num, count = 0;
	int rc;

	if (strcmp(r->decision, "allow") != 0)
		return LEDGER_OK; /* a refusal consumes nothing */
	if (r->jti_add > 0) {
		st = l->w[W_JTI_GET];
		if (sqlite3_bind_text(st, 1, r->jti, -1, SQLITE_STATIC) != SQLITE_OK)
			goto sqlfail;
		rc = sqlite3_step(st);
		if (rc == SQLITE_ROW) {
			used = sqlite3_column_int64(st, 0);
			/* The first use fixed the identifier's allowance: never raise it. */
			if (sqlite3_column_int64(st, 1) < num)
				num = sqlite3_column_int64(st, 1);
		} else if (rc != SQLITE_DONE) {
			goto sqlfail;
		}
		reset(st);
		if (used + (int64_t)r->jti_add > num)
			return LEDGER_ERR_REPLAY;
	}
	if (r->quota_add > 0) {
		st = l->w[W_QUOTA_GET];
		if (sqlite3_bind_text(st, 1, r->cred, -1, SQLITE_STATIC) != SQLITE_OK ||
		    sqlite3_bind_int64(st, 2, r->quota_day) != SQLITE_OK)
			goto sqlfail;
		rc = sqlite3_step(st);
		if (rc == SQLITE_ROW)
			count = sqlite3_column_int64(st, 0);
		else if (rc != SQLITE_DONE)
			goto sqlfail;
		reset(st);
		if (count + (int64_t)r->quota_add > (int64_t)r->quota_max)
			return LEDGER_ERR_QUOTA;
	}
	if (r->jti_add > 0) {
		st = l->w[W_JTI_ADD];
		if (sqlite3_bind_text(st, 1, r->jti, -1, SQLITE_STATIC) != SQLITE_OK ||
		    sqlite3_bind_int64(st, 2, r->jti_add) != SQLITE_OK ||
		    sqlite3_bind_int64(st, 3, r->jti_num) != SQLITE_OK ||
		    sqlite3_bind_int64(st, 4, r->jti_exp) != SQLITE_OK ||
		    sqlite3_step(st) != SQLITE_DONE)
			goto sqlfail;
		reset(st);
	}
	if (r->quota_add > 0) {
		st = l->w[W_QUOTA_ADD];
		if (sqlite3_bind_text(st, 1, r->cred, -1, SQLITE_STATIC) != SQLITE_OK ||
		    sqlite3_bind_int64(st, 2, r->quota_day) != SQLITE_OK ||
		    sqlite3_bind_int64(st, 3, r->quota_add) != SQLITE_OK ||
		    sqlite3_step(st) != SQLITE_DONE)
			goto sqlfail;
		reset(st);
	}
	return LEDGER_OK;
sqlfail:
	reset(st);
	return COND_SQL_ERROR;
}

static int insert_rec(struct ledger *l, const struct audit_rec *r, uint64_t seq,
                      const uint8_t prev[32], const uint8_t hash[32])
{
	sqlite3_stmt *st = l->w[W_INSERT];
	uint8_t hashes[LEDGER_MAX_HASHES * 64], sigs[LEDGER_MAX_HASHES * 32];
	uint8_t tst[LEDGER_MAX_HASHES * LEDGER_TST_LEN];
	size_t i, hl = r->nhashes > 0 ? r->hash_len : 0;
	int ok;

	for (i = 0; i < r->nhashes; i++)
		memcpy(hashes + i * hl, r->hashes[i], hl);
	for (i = 0; i < r->nsigs; i++)
		memcpy(sigs + i * 32, r->sig_sha256[i], 32);
	for (i = 0; i < r->ntst; i++) {
		for (int b = 0; b < 8; b++)
			tst[i * LEDGER_TST_LEN + (size_t)b] =
			    (uint8_t)((uint64_t)r->tst_time_ms[i] >> (56 - 8 * b));
		memcpy(tst + i * LEDGER_TST_LEN + 8, r->tst_sha256[i], 32);
	}
	ok = sqlite3_bind_int64(st, 1, (int64_t)seq) == SQLITE_OK &&
	     sqlite3_bind_int64(st, 2, r->time_ms) == SQLITE_OK &&
	     sqlite3_bind_text(st, 3, r->caller, -1, SQLITE_STATIC) == SQLITE_OK &&
	     sqlite3_bind_int64(st, 4, r->uid) == SQLITE_OK &&
	     sqlite3_bind_int64(st, 5, r->gid) == SQLITE_OK &&
	     sqlite3_bind_int64(st, 6, r->pid) == SQLITE_OK &&
	     sqlite3_bind_text(st, 7, r->op, -1, SQLITE_STATIC) == SQLITE_OK &&
	     sqlite3_bind_text(st, 8, r->cred, -1, SQLITE_STATIC) == SQLITE_OK &&
	     sqlite3_bind_text(st, 9, r->owner, -1, SQLITE_STATIC) == SQLITE_OK &&
	     sqlite3_bind_text(st, 10, r->purpose, -1, SQLITE_STATIC) == SQLITE_OK &&
	     sqlite3_bind_text(st, 11, r->halg, -1, SQLITE_STATIC) == SQLITE_OK &&
	     sqlite3_bind_int64(st, 12, (int64_t)hl) == SQLITE_OK &&
	     sqlite3_bind_blob(st, 13, hashes, (int)(r->nhashes * hl), SQLITE_TRANSIENT) ==
	         SQLITE_OK &&
	     sqlite3_bind_text(st, 14, r->jti, -1, SQLITE_STATIC) == SQLITE_OK &&
	     sqlite3_bind_text(st, 15, r->decision, -1, SQLITE_STATIC) == SQLITE_OK &&
	     sqlite3_bind_text(st, 16, r->reason, -1, SQLITE_STATIC) == SQLITE_OK &&
	     sqlite3_bind_text(st, 17, r->detail, -1, SQLITE_STATIC) == SQLITE_OK &&
	     sqlite3_bind_blob(st, 18, sigs, (int)(r->nsigs * 32), SQLITE_TRANSIENT) == SQLITE_OK &&
	     sqlite3_bind_blob(st, 19, prev, 32, SQLITE_TRANSIENT) == SQLITE_OK &&
	     sqlite3_bind_blob(st, 20, hash, 32, SQLITE_TRANSIENT) == SQLITE_OK &&
	     sqlite3_bind_blob(st, 21, tst, (int)(r->ntst * LEDGER_TST_LEN), SQLITE_TRANSIENT) ==
	         SQLITE_OK &&
	     sqlite3_step(st) == SQLITE_DONE;
	reset(st);
	return ok ? 0 : -1;
}

static void rollback(struct ledger *l)
{
	if (!sqlite3_get_autocommit(l->db)) {
		sqlite3_step(l->w[W_ROLLBACK]);
		sqlite3_reset(l->w[W_ROLLBACK]);
	}
}

/* A record whose quota or jti condition failed (rc) is written as that refusal, without its
 * signatures; any other rc leaves it as it is. */
static void refuse(struct audit_rec *r, int rc)
{
	if (rc != LEDGER_ERR_QUOTA && rc != LEDGER_ERR_REPLAY)
		return;
	snprintf(r->decision, sizeof(r->decision), "deny");
	snprintf(r->reason, sizeof(r->reason), "%s",
	         rc == LEDGER_ERR_QUOTA ? "quota_exceeded" : "sad_replayed");
	r->nsigs = 0;
	r->ntst = 0;
}

/* One write transaction. Records join it in queue order as they arrive (txn_add), so the work
 * of inserting them overlaps the commit delay; txn_end commits them all with one fsync. */
struct txn {
	struct audit_rec *w; /* scratch copy of the record being written */
	uint64_t seq, first; /* last sequence number used; the first of this transaction */
	uint8_t prev[32];    /* hash of record seq */
	int bad;             /* an error: the transaction rolls back, every record unavailable */
	struct pending *head, *tail;
	size_t n;        /* records joined */
	int64_t took_ns; /* time txn_end spent in COMMIT (about 0 if it was bad before) */
};

/* Begin a transaction on the write connection (wmu held). A failure marks it bad. */
static void txn_begin(struct ledger *l, struct txn *t)
{
	int rc;

	memset(t, 0, sizeof(*t));
	if ((t->w = malloc(sizeof(*t->w))) == NULL) {
		t->bad = LEDGER_ERR_INTERNAL;
		return;
	}
	rc = sqlite3_step(l->w[W_BEGIN]);
	sqlite3_reset(l->w[W_BEGIN]);
	if (rc != SQLITE_DONE) {
		fprintf(stderr, "ledger: cannot begin a transaction: %s\n", sqlite3_errmsg(l->db));
		t->bad = LEDGER_ERR_UNAVAILABLE;
		return;
	}
	if (read_head(l, &t->seq, t->prev) != 0) {
		fprintf(stderr, "ledger: cannot read the chain head: %s\n", sqlite3_errmsg(l->db));
		t->bad = LEDGER_ERR_UNAVAILABLE;
		return;
	}
	t->first = t->seq + 1;
}

/* Write the records of list (linked by next) into t, in order, and keep them for txn_end.
 * Once t is bad the rest are only kept, to be answered with its error. */
static void txn_add(struct ledger *l, struct txn *t, struct pending *list)
{
	struct pending *p;
	uint8_t hash[32];
	int rc;

	if (list == NULL)
		return;
	if (t->tail != NULL)
		t->tail->next = list;
	else
		t->head = list;
	for (p = list; p != NULL; p = p->next) {
		t->tail = p;
		t->n++;
		p->result = LEDGER_ERR_UNAVAILABLE;
		if (t->bad)
			continue;
		*t->w = p->rec;
		rc = apply_conditions(l, t->w);
		if (rc == COND_SQL_ERROR) {
			fprintf(stderr, "ledger: cannot apply a record's conditions: %s\n",
			        sqlite3_errmsg(l->db));
			t->bad = LEDGER_ERR_UNAVAILABLE;
			continue;
		}
		refuse(t->w, rc);
		if (rec_hash(t->w, t->seq + 1, t->prev, hash) != 0) {
			fprintf(stderr, "ledger: cannot hash a record\n");
			t->bad = LEDGER_ERR_UNAVAILABLE;
			continue;
		}
		if (insert_rec(l, t->w, t->seq + 1, t->prev, hash) != 0) {
			fprintf(stderr, "ledger: cannot insert a record: %s\n",
			        sqlite3_errmsg(l->db));
			t->bad = LEDGER_ERR_UNAVAILABLE;
			continue;
		}
		t->seq++;
		memcpy(t->prev, hash, 32);
		p->result = rc;
	}
}

/* Commit t, or roll it back if it went bad. Every joined record's result is set; on success
 * each record's seq (and, for a failed condition, its decision) is filled in. Returns the
 * number of records committed. The records stay linked from t->head for their wake-up. */
static size_t txn_end(struct ledger *l, struct txn *t)
{
	struct pending *p;
	struct timespec t0, t1;
	uint64_t seq;
	int rc;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	if (!t->bad) {
		rc = sqlite3_step(l->w[W_COMMIT]);
		sqlite3_reset(l->w[W_COMMIT]);
		if (rc != SQLITE_DONE) {
			fprintf(stderr, "ledger: cannot commit: %s\n", sqlite3_errmsg(l->db));
			t->bad = LEDGER_ERR_UNAVAILABLE;
		}
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	t->took_ns = (int64_t)(t1.tv_sec - t0.tv_sec) * 1000000000 + (t1.tv_nsec - t0.tv_nsec);
	free(t->w);
	t->w = NULL;
	if (t->bad) {
		if (t->n > 0)
			fprintf(stderr, "ledger: %zu record(s) rolled back, none written\n", t->n);
		rollback(l);
		for (p = t->head; p != NULL; p = p->next)
			p->result = t->bad;
		return 0;
	}
	/* Durable: tell the callers what was written. */
	seq = t->first;
	for (p = t->head; p != NULL; p = p->next, seq++) {
		p->rec.seq = seq;
		refuse(&p->rec, p->result);
	}
	return t->n;
}

/* ---- checkpoints ---- */

/* Sign the current head and store it. Called with wmu held. LEDGER_OK (also when the ledger
 * is empty or the head already has a checkpoint; *seq 0 then if empty), else an error. */
static int checkpoint_locked(struct ledger *l, uint64_t *seq_out)
{
	sqlite3_stmt *st;
	uint8_t head[32], sig[LEDGER_MAX_SIG];
	size_t siglen = sizeof(sig);
	uint64_t seq;
	int rc, ok;

	if (seq_out != NULL)
		*seq_out = 0;
	if (l->opts.sign == NULL)
		return LEDGER_ERR_BAD_INPUT;
	/* A committed record never changes, so the head can be signed outside a transaction. */
	if (read_head(l, &seq, head) != 0)
		return LEDGER_ERR_UNAVAILABLE;
	if (seq == 0)
		return LEDGER_OK;
	if (seq_out != NULL)
		*seq_out = seq;
	st = l->w[W_CKPT_HAS];
	if (sqlite3_bind_int64(st, 1, (int64_t)seq) != SQLITE_OK) {
		reset(st);
		return LEDGER_ERR_UNAVAILABLE;
	}
	rc = sqlite3_step(st);
	reset(st);
	if (rc == SQLITE_ROW)
		return LEDGER_OK;
	if (rc != SQLITE_DONE)
		return LEDGER_ERR_UNAVAILABLE;
	if (l->opts.sign(l->opts.sign_arg, head, sig, &siglen) != 0 || siglen == 0 ||
	    siglen > sizeof(sig)) {
		fprintf(stderr, "ledger: the audit key could not sign the checkpoint at seq %llu\n",
		        (unsigned long long)seq);
		return LEDGER_ERR_INTERNAL;
	}
	st = l->w[W_CKPT_PUT];
	ok = sqlite3_bind_int64(st, 1, (int64_t)seq) == SQLITE_OK &&
	     sqlite3_bind_blob(st, 2, head, 32, SQLITE_TRANSIENT) == SQLITE_OK &&
	     sqlite3_bind_int64(st, 3, now_ms()) == SQLITE_OK &&
	     sqlite3_bind_blob(st, 4, sig, (int)siglen, SQLITE_TRANSIENT) == SQLITE_OK &&
	     sqlite3_step(st) == SQLITE_DONE;
	reset(st);
	if (!ok) {
		fprintf(stderr, "ledger: cannot store the checkpoint at seq %llu: %s\n",
		        (unsigned long long)seq, sqlite3_errmsg(l->db));
		return LEDGER_ERR_UNAVAILABLE;
	}
	return LEDGER_OK;
}

/* A checkpoint that failed (its token out, say) is tried again soon rather than a whole interval
 * later: 1 s after, then 2, 4 and every LEDGER_RETRY_MAX_SECS s until it is made. While the
 * token is down a try is refused at once, without reaching it. */
#define LEDGER_RETRY_MAX_SECS 8

/* Seconds from the last attempt to the next time-based one. Called with mu held. */
static unsigned checkpoint_wait(const struct ledger *l)
{
	unsigned w = LEDGER_RETRY_MAX_SECS;

	if (l->ckpt_failed == 0)
		return l->opts.checkpoint_secs;
	if (l->ckpt_failed < 4)
		w = 1u << (l->ckpt_failed - 1);
	return w < l->opts.checkpoint_secs ? w : l->opts.checkpoint_secs;
}

/* Checkpoint now and reset the counters. */
static int checkpoint_now(struct ledger *l, uint64_t *seq)
{
	uint64_t at = 0;
	int r;

	pthread_mutex_lock(&l->wmu);
	r = checkpoint_locked(l, &at);
	pthread_mutex_unlock(&l->wmu);
	if (seq != NULL)
		*seq = at;
	pthread_mutex_lock(&l->mu);
	if (r == LEDGER_OK) {
		l->uncovered = 0;
		if (l->ckpt_failed > 0)
			fprintf(stderr,
			        "ledger: checkpoint at seq %llu made, after %u failed attempt(s)\n",
			        (unsigned long long)at, l->ckpt_failed);
		l->ckpt_failed = 0;
	} else if (l->ckpt_failed + 1 != 0) { /* saturating */
		l->ckpt_failed++;
	}
	/* Also after a failure: retry after checkpoint_wait, not after every commit. */
	l->since_try = 0;
	clock_gettime(CLOCK_MONOTONIC, &l->last_ckpt);
	pthread_mutex_unlock(&l->mu);
	return r;
}

/* Called with mu held. */
static int checkpoint_due(struct ledger *l)
{
	if (l->opts.sign == NULL || l->uncovered == 0)
		return 0;
	return l->since_try >= l->opts.checkpoint_every ||
	       mono_since(&l->last_ckpt) >= (double)checkpoint_wait(l);
}

int ledger_checkpoint(struct ledger *l, uint64_t *seq)
{
	if (l == NULL)
		return LEDGER_ERR_BAD_INPUT;
	return checkpoint_now(l, seq);
}

/* ---- the writer thread ---- */

/* A queued pending (its sem initialised) or the writer's gap record (no sem). */
static void pending_free(struct pending *p)
{
	if (!p->notes_gap)
		sem_destroy(&p->sem);
	OPENSSL_cleanse(p, sizeof(*p));
	free(p);
}

/* Count the answers of g, left without a record, for the next gap record (mu held). */
static void gap_add(struct ledger *l, const struct gap *g)
{
	if (g->n == 0)
		return;
	if (l->gap.n == 0 || g->first_ms < l->gap.first_ms)
		l->gap.first_ms = g->first_ms;
	if (g->last_ms > l->gap.last_ms)
		l->gap.last_ms = g->last_ms;
	l->gap.n += g->n;
}

/* n answers are given now without a record: counted for the gap record and in the stats (mu
 * held). gap_add alone gives back a count that a failed gap record took over. Not for a direct
 * ledger, whose caller (iamsign-admin) reports its own failure; so it never has a gap record. */
static void gap_now(struct ledger *l, uint64_t n)
{
	int64_t now = now_ms();
	struct gap g = {n, now, now};

	if (l->opts.direct)
		return;
	gap_add(l, &g);
	l->stats.unrecorded += n;
}

/* The record that notes the answers counted so far, taking them over (mu held): NULL when
 * there are none, or no memory (they stay counted). It goes into the next transaction, before
 * its records; if that fails, the count is given back (gap_add). */
static struct pending *gap_record(struct ledger *l)
{
	struct pending *p;
	struct audit_rec *r;
	char from[32], to[32];

	if (l->gap.n == 0 || (p = calloc(1, sizeof(*p))) == NULL)
		return NULL;
	p->notes_gap = 1;
	p->gap = l->gap;
	memset(&l->gap, 0, sizeof(l->gap));
	r = &p->rec;
	r->time_ms = now_ms();
	snprintf(r->caller, sizeof(r->caller), "iamsignd");
	r->uid = (uint32_t)getuid();
	r->gid = (uint32_t)getgid();
	r->pid = (int32_t)getpid();
	snprintf(r->op, sizeof(r->op), "ledger.unrecorded");
	snprintf(r->decision, sizeof(r->decision), "deny");
	snprintf(r->reason, sizeof(r->reason), "ledger_unavailable");
	if (rfc3339_ms(p->gap.first_ms, from, sizeof(from)) != 0 ||
	    rfc3339_ms(p->gap.last_ms, to, sizeof(to)) != 0)
		from[0] = to[0] = '\0';
	snprintf(r->detail, sizeof(r->detail),
	         "%llu answer(s) 503 ledger_unavailable without a record of their own, from %s to "
	         "%s",
	         (unsigned long long)p->gap.n, from, to);
	p->result = LEDGER_ERR_UNAVAILABLE;
	return p;
}

/* The writer starts on a batch or a checkpoint (mu held). */
static void mark_busy(struct ledger *l)
{
	l->busy = 1;
	l->gave_up = 0;
	clock_gettime(CLOCK_MONOTONIC, &l->busy_since);
}

/* The writer is done with its batch or checkpoint (mu held). */
static void mark_idle(struct ledger *l)
{
	l->busy = 0;
	l->gave_up = 0;
}

/* The writer has been on one batch or checkpoint for the write timeout or longer, or a
 * request gave up waiting while it has been on this one (mu held). */
static int stalled(struct ledger *l)
{
	return l->busy &&
	       (l->gave_up || mono_since(&l->busy_since) * 1000.0 >= (double)l->opts.timeout_ms);
}

/* Account for t, which txn_end ended with n records committed (mu held): the recent commit
 * time for the commit delay, the checkpoint counters and the stats. n 0: it failed, and all
 * its records with it; a failure says nothing about how long a commit takes. A record whose
 * waiter timed out still counts as committed when it was: it is in the chain. */
static void count_end(struct ledger *l, const struct txn *t, size_t n)
{
	if (n == 0) {
		/* One that timed out was counted failed when its waiter gave up; now its request is
		 * also an answer without a record. A gap record gives its count back. */
		for (const struct pending *p = t->head; p != NULL; p = p->next) {
			if (p->notes_gap) {
				gap_add(l, &p->gap);
				continue;
			}
			l->stats.failed += !p->abandoned;
			gap_now(l, 1);
		}
		return;
	}
	l->sync_ns = l->sync_ns == 0 ? t->took_ns : (7 * l->sync_ns + t->took_ns) / 8;
	l->uncovered += n;
	l->since_try += n;
	l->stats.commits++;
	l->stats.records += n;
	l->stats.commit_ns += (uint64_t)(t->took_ns > 0 ? t->took_ns : 0);
}

/* Take the whole queue (mu held). */
static struct pending *take_queue(struct ledger *l)
{
	struct pending *q = l->qhead;

	l->qhead = l->qtail = NULL;
	l->qlen = 0;
	return q;
}

/* The commit delay, with t open (wmu held, mu not): while appends announced by requests on
 * their way here (signing now) have not arrived, take in those that do, for at most wait_ns:
 * one fsync then carries them all instead of each paying its own. Each joins the transaction
 * as it arrives, so the wait also covers the work of writing it. */
static void gather(struct ledger *l, struct txn *t, int64_t wait_ns)
{
	struct pending *more;
	struct timespec until;

	mono_deadline(&until, wait_ns);
	pthread_mutex_lock(&l->mu);
	while (!t->bad && t->n < LEDGER_MAX_BATCH) {
		while (l->qhead == NULL && l->expected > 0 && !l->stop &&
		       pthread_cond_timedwait(&l->cv_work, &l->mu, &until) == 0)
			;
		if (l->qhead == NULL)
			break; /* the time is up, nothing more is on its way, or stopping */
		more = take_queue(l);
		pthread_mutex_unlock(&l->mu);
		txn_add(l, t, more);
		pthread_mutex_lock(&l->mu);
		if (l->expected == 0 || l->stop)
			break;
	}
	pthread_mutex_unlock(&l->mu);
}

static void *writer_main(void *arg)
{
	struct ledger *l = arg;
	struct pending *batch, *gap, *p, *next;
	struct timespec ts;
	struct txn t;
	int64_t wait_ns = 0;
	size_t n, gone;
	int stop, due, delay, noted = 0, r;

	pthread_setname_np(pthread_self(), "ledger-writer");
	for (;;) {
		pthread_mutex_lock(&l->mu);
		while (l->qhead == NULL && !l->stop && !checkpoint_due(l)) {
			if (l->opts.sign != NULL && l->uncovered > 0) {
				/* Wake for the time-based checkpoint of an idle ledger. */
				clock_gettime(CLOCK_MONOTONIC, &ts);
				ts.tv_sec = l->last_ckpt.tv_sec + (time_t)checkpoint_wait(l);
				ts.tv_nsec = l->last_ckpt.tv_nsec;
				pthread_cond_timedwait(&l->cv_work, &l->mu, &ts);
			} else {
				pthread_cond_wait(&l->cv_work, &l->mu);
			}
		}
		/* With few on their way a commit delay would cost more latency than it saves. */
		delay = l->qhead != NULL && !l->stop && l->expected >= LEDGER_DELAY_SIBLINGS;
		if (delay) /* about one commit's time */
			wait_ns =
			    l->sync_ns < LEDGER_DELAY_MAX_NS ? l->sync_ns : LEDGER_DELAY_MAX_NS;
		batch = take_queue(l);
		stop = l->stop;
		if (batch != NULL) {
			mark_busy(l);
			gap = gap_record(l);
			noted = gap != NULL;
			if (noted) { /* the answers it notes came first */
				gap->next = batch;
				batch = gap;
			}
		}
		pthread_mutex_unlock(&l->mu);

		if (batch != NULL) {
			pthread_mutex_lock(&l->wmu);
			txn_begin(l, &t);
			txn_add(l, &t, batch);
			if (delay)
				gather(l, &t, wait_ns);
			n = txn_end(l, &t);
			pthread_mutex_unlock(&l->wmu);
			pthread_mutex_lock(&l->mu);
			count_end(l, &t, n);
			gone = 0;
			for (p = t.head; p != NULL; p = next) {
				next = p->next;     /* p belongs to its waiter once done */
				if (p->notes_gap) { /* counted back by count_end if it failed */
					pending_free(p);
					continue;
				}
				if (p->abandoned) {
					pending_free(p);
					gone++;
					continue;
				}
				p->done = 1;
				sem_post(&p->sem); /* p is its waiter's from here */
			}
			if (gone > 0)
				fprintf(
				    stderr,
				    "ledger: a batch took %.0f ms, %s; %zu of its %zu request(s) "
				    "had been answered unavailable after %u ms\n",
				    mono_since(&l->busy_since) * 1000.0,
				    n > 0 ? "committed" : "failed", gone, t.n - (size_t)noted,
				    l->opts.timeout_ms);
			mark_idle(l);
			pthread_mutex_unlock(&l->mu);
		}
		/* Not while stopping: ledger_close writes the final one. */
		pthread_mutex_lock(&l->mu);
		due = checkpoint_due(l) && !stop;
		if (due) /* the queue waits on it as on a batch: it can hang the same way */
			mark_busy(l);
		pthread_mutex_unlock(&l->mu);
		if (due) {
			r = checkpoint_now(l, NULL);
			pthread_mutex_lock(&l->mu);
			if (l->gave_up)
				fprintf(
				    stderr,
				    "ledger: a checkpoint took %.0f ms; requests queued behind it "
				    "were answered unavailable after %u ms\n",
				    mono_since(&l->busy_since) * 1000.0, l->opts.timeout_ms);
			mark_idle(l);
			pthread_mutex_unlock(&l->mu);
			if (r != LEDGER_OK)
				fprintf(stderr, "ledger: checkpoint failed; will retry\n");
		}
		if (stop && batch == NULL)
			break;
	}
	return NULL;
}

/* ---- open, close ---- */

/* Write p in a transaction of its own, without the writer thread: p->result says how it went.
 * For a direct ledger's appends, and for the gap record at close. */
static void write_one(struct ledger *l, struct pending *p)
{
	struct txn t;
	size_t n;

	pthread_mutex_lock(&l->wmu);
	txn_begin(l, &t);
	txn_add(l, &t, p);
	n = txn_end(l, &t);
	pthread_mutex_lock(&l->mu);
	count_end(l, &t, n);
	pthread_mutex_unlock(&l->mu);
	pthread_mutex_unlock(&l->wmu);
}

/* At close, with the writer gone: note the answers still counted without a record. */
static void gap_flush(struct ledger *l)
{
	struct pending *gap;

	pthread_mutex_lock(&l->mu);
	gap = gap_record(l);
	pthread_mutex_unlock(&l->mu);
	if (gap == NULL)
		return;
	write_one(l, gap);
	if (gap->result != LEDGER_OK)
		fprintf(stderr, "ledger: %llu answer(s) without a record could not be noted\n",
		        (unsigned long long)gap->gap.n);
	pending_free(gap);
}

void ledger_close(struct ledger *l)
{
	int i, uncovered;

	if (l == NULL)
		return;
	if (l->have_writer) {
		pthread_mutex_lock(&l->mu);
		l->stop = 1;
		pthread_cond_signal(&l->cv_work);
		pthread_mutex_unlock(&l->mu);
		pthread_join(l->writer, NULL);
		if (l->db != NULL)
			gap_flush(l);
	}
	if (l->have_locks && l->db != NULL && l->opts.sign != NULL) {
		pthread_mutex_lock(&l->mu);
		uncovered = l->uncovered > 0;
		pthread_mutex_unlock(&l->mu);
		if (uncovered && checkpoint_now(l, NULL) != LEDGER_OK)
			fprintf(stderr, "ledger: final checkpoint failed\n");
	}
	for (i = 0; i < W_COUNT; i++)
		sqlite3_finalize(l->w[i]);
	for (i = 0; i < R_COUNT; i++)
		sqlite3_finalize(l->r[i]);
	sqlite3_close(l->db);
	sqlite3_close(l->rdb);
	if (l->have_locks) {
		pthread_mutex_destroy(&l->mu);
		pthread_mutex_destroy(&l->wmu);
		pthread_mutex_destroy(&l->rmu);
		pthread_cond_destroy(&l->cv_work);
	}
	free(l);
}

static int init_locks(struct ledger *l)
{
	pthread_condattr_t ca;
	int ok;

	if (pthread_condattr_init(&ca) != 0)
		return -1;
	ok = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC) == 0 &&
	     pthread_mutex_init(&l->mu, NULL) == 0;
	if (ok && pthread_mutex_init(&l->wmu, NULL) != 0) {
		pthread_mutex_destroy(&l->mu);
		ok = 0;
	}
	if (ok && pthread_mutex_init(&l->rmu, NULL) != 0) {
		pthread_mutex_destroy(&l->mu);
		pthread_mutex_destroy(&l->wmu);
		ok = 0;
	}
	if (ok && pthread_cond_init(&l->cv_work, &ca) != 0) {
		pthread_mutex_destroy(&l->mu);
		pthread_mutex_destroy(&l->wmu);
		pthread_mutex_destroy(&l->rmu);
		ok = 0;
	}
	pthread_condattr_destroy(&ca);
	return ok ? 0 : -1;
}

int ledger_open(const char *state_dir, const struct ledger_opts *opts, struct ledger **out,
                char *err, size_t errlen)
{
	struct ledger *l = NULL;
	uint64_t head_seq = 0;
	uint8_t head[32];
	sqlite3_stmt *st;
	int i, rc, r = LEDGER_ERR_INTERNAL;

	*out = NULL;
	if ((l = calloc(1, sizeof(*l))) == NULL) {
		set_err(err, errlen, "ledger: out of memory");
		return LEDGER_ERR_INTERNAL;
	}
	if (opts != NULL)
		l->opts = *opts;
	if (l->opts.checkpoint_every == 0)
		l->opts.checkpoint_every = LEDGER_DEFAULT_EVERY;
	if (l->opts.checkpoint_secs == 0)
		l->opts.checkpoint_secs = LEDGER_DEFAULT_SECS;
	if (l->opts.timeout_ms == 0)
		l->opts.timeout_ms = LEDGER_DEFAULT_TIMEOUT_MS;
	if (db_path(state_dir, l->path, sizeof(l->path)) != 0) {
		set_err(err, errlen, "ledger: no state directory, or its path is too long");
		r = LEDGER_ERR_BAD_INPUT;
		goto out;
	}
	if (init_locks(l) != 0) {
		set_err(err, errlen, "ledger: cannot create locks");
		goto out;
	}
	l->have_locks = 1;
	clock_gettime(CLOCK_MONOTONIC, &l->last_ckpt);
	r = LEDGER_ERR_UNAVAILABLE;
	if (prepare_files(state_dir, l->path, err, errlen) != 0 ||
	    open_conn(l->path, SQLITE_OPEN_READWRITE, l->opts.no_fsync, &l->db, err, errlen) != 0 ||
	    create_schema(l->db, err, errlen) != 0 ||
	    open_conn(l->path, SQLITE_OPEN_READWRITE, l->opts.no_fsync, &l->rdb, err, errlen) != 0)
		goto out;
	for (i = 0; i < W_COUNT; i++) {
		if (sqlite3_prepare_v3(l->db, wsql[i], -1, SQLITE_PREPARE_PERSISTENT, &l->w[i],
		                       NULL) != SQLITE_OK) {
			set_err(err, errlen, "ledger: cannot prepare statement: %s",
			        sqlite3_errmsg(l->db));
			goto out;
		}
	}
	for (i = 0; i < R_COUNT; i++) {
		if (sqlite3_prepare_v3(l->rdb, rsql[i], -1, SQLITE_PREPARE_PERSISTENT, &l->r[i],
		                       NULL) != SQLITE_OK) {
			set_err(err, errlen, "ledger: cannot prepare statement: %s",
			        sqlite3_errmsg(l->rdb));
			goto out;
		}
	}
	/* Records left uncovered by a previous run count towards the next checkpoint. */
	if (read_head(l, &head_seq, head) != 0) {
		set_err(err, errlen, "ledger: cannot read the chain head: %s",
		        sqlite3_errmsg(l->db));
		goto out;
	}
	st = l->w[W_CKPT_LAST];
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW && (uint64_t)sqlite3_column_int64(st, 0) < head_seq)
		l->uncovered = head_seq - (uint64_t)sqlite3_column_int64(st, 0);
	else if (rc == SQLITE_DONE)
		l->uncovered = head_seq;
	l->since_try = l->uncovered;
	sqlite3_reset(st);
	if (!l->opts.direct) {
		if (pthread_create(&l->writer, NULL, writer_main, l) != 0) {
			set_err(err, errlen, "ledger: cannot start the writer thread");
			r = LEDGER_ERR_INTERNAL;
			goto out;
		}
		l->have_writer = 1;
	}
	*out = l;
	l = NULL;
	r = LEDGER_OK;
out:
	if (l != NULL) {
		l->opts.sign = NULL; /* no checkpoint from a half-open ledger */
		ledger_close(l);
	}
	return r;
}

/* ---- appending ---- */

/* Take p out of the queue if it is still there (mu held): 1 if it was. */
static int unqueue(struct ledger *l, struct pending *p)
{
	struct pending **pp, *prev = NULL;

	for (pp = &l->qhead; *pp != NULL; prev = *pp, pp = &(*pp)->next) {
		if (*pp == p) {
			*pp = p->next;
			if (l->qtail == p)
				l->qtail = prev;
			l->qlen--;
			return 1;
		}
	}
	return 0;
}

static int append_one(struct ledger *l, struct audit_rec *rec, int announced)
{
	struct pending *p;
	struct timespec until;
	int r = LEDGER_OK, rc = 0;

	if (l == NULL)
		return LEDGER_ERR_BAD_INPUT;
	if (rec == NULL || !rec_valid(rec)) {
		if (announced)
			ledger_expect(l, -1);
		return LEDGER_ERR_BAD_INPUT;
	}
	if (rec->time_ms == 0)
		rec->time_ms = now_ms();
	if ((p = malloc(sizeof(*p))) != NULL) {
		p->rec = *rec;
		p->next = NULL;
		p->result = LEDGER_ERR_UNAVAILABLE;
		p->done = 0;
		p->abandoned = 0;
		p->notes_gap = 0;
	}
	if (l->opts.direct) {
		if (p == NULL)
			return LEDGER_ERR_INTERNAL;
		write_one(l, p);
		*rec = p->rec;
		r = p->result;
		OPENSSL_cleanse(p, sizeof(*p));
		free(p);
		return r;
	}
	mono_deadline(&until, (int64_t)l->opts.timeout_ms * 1000000);
	pthread_mutex_lock(&l->mu);
	if (announced)
		l->expected--; /* here now, queued or refused: no longer on its way */
	/* Stuck on a batch past the timeout: refused at once rather than queued behind it. */
	if (p == NULL)
		r = LEDGER_ERR_INTERNAL;
	else if (l->stop || l->qlen >= LEDGER_MAX_QUEUE || stalled(l))
		r = LEDGER_ERR_UNAVAILABLE;
	else if (sem_init(&p->sem, 0, 0) != 0)
		r = LEDGER_ERR_INTERNAL;
	if (r != LEDGER_OK) {
		l->stats.failed++;
		gap_now(l, 1);
		pthread_mutex_unlock(&l->mu);
		if (p != NULL) {
			OPENSSL_cleanse(p, sizeof(*p));
			free(p);
		}
		return r;
	}
	if (l->qtail != NULL)
		l->qtail->next = p;
	else
		l->qhead = p;
	l->qtail = p;
	l->qlen++;
	pthread_mutex_unlock(&l->mu);
	/* After the unlock, so that the writer does not wake only to wait for mu. */
	pthread_cond_signal(&l->cv_work);
	do
		rc = sem_clockwait(&p->sem, CLOCK_MONOTONIC, &until);
	while (rc != 0 && errno == EINTR);
	if (rc == 0) /* done, and posted after the writer's last touch */
		goto done;
	pthread_mutex_lock(&l->mu);
	if (!p->done) {
		/* Given up: a record still queued is never written; one the writer holds may
		 * yet be committed, and the writer frees it. */
		l->stats.failed++;
		l->gave_up = 1;
		if (unqueue(l, p)) {
			gap_now(l, 1); /* never written; one the writer has may yet be */
			pthread_mutex_unlock(&l->mu);
			pending_free(p);
		} else {
			p->abandoned = 1;
			pthread_mutex_unlock(&l->mu);
		}
		return LEDGER_ERR_UNAVAILABLE;
	}
	/* Done as the wait ran out: posted under mu with done, so nothing touches p now. */
	pthread_mutex_unlock(&l->mu);
done:
	*rec = p->rec;
	r = p->result;
	pending_free(p);
	return r;
}

static int append(struct ledger *l, struct audit_rec *rec, int announced)
{
	int r = append_one(l, rec, announced);

	if (rec != NULL)
		rec->settled = 1;
	return r;
}

void ledger_stats(struct ledger *l, struct ledger_stats *out)
{
	memset(out, 0, sizeof(*out));
	if (l == NULL)
		return;
	pthread_mutex_lock(&l->mu);
	*out = l->stats;
	if (l->busy)
		out->busy_ms = (uint64_t)(mono_since(&l->busy_since) * 1000.0);
	out->stalled = !l->opts.direct && stalled(l);
	pthread_mutex_unlock(&l->mu);
}

int ledger_stalled(struct ledger *l)
{
	int r;

	if (l == NULL || l->opts.direct)
		return 0;
	pthread_mutex_lock(&l->mu);
	r = stalled(l);
	pthread_mutex_unlock(&l->mu);
	return r;
}

int ledger_announce(struct ledger *l, struct audit_rec *rec)
{
	int r = LEDGER_OK;

	if (l == NULL || l->opts.direct)
		return LEDGER_OK;
	pthread_mutex_lock(&l->mu);
	if (stalled(l)) {
		r = LEDGER_ERR_UNAVAILABLE;
		gap_now(l, 1); /* the request is answered so, without a record */
		rec->settled = 1;
	} else {
		l->expected++;
	}
	pthread_mutex_unlock(&l->mu);
	return r;
}

int ledger_append(struct ledger *l, struct audit_rec *rec)
{
	return append(l, rec, 0);
}

int ledger_append_expected(struct ledger *l, struct audit_rec *rec)
{
	return append(l, rec, 1);
}

void ledger_expect(struct ledger *l, int delta)
{
	if (l == NULL || l->opts.direct)
		return;
	pthread_mutex_lock(&l->mu);
	l->expected += delta;
	pthread_mutex_unlock(&l->mu);
}

/* ---- reads ---- */

/* One count from a read statement: its first parameter the key text, its second (when
 * with_day) the day. 0 when no row, -1 on error. */
static int64_t read_count(struct ledger *l, int which, const char *key, int with_day, int64_t day)
{
	sqlite3_stmt *st;
	int64_t v = -1;
	int rc;

	if (l == NULL || key == NULL)
		return -1;
	pthread_mutex_lock(&l->rmu);
	st = l->r[which];
	if (sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC) == SQLITE_OK &&
	    (!with_day || sqlite3_bind_int64(st, 2, day) == SQLITE_OK)) {
		rc = sqlite3_step(st);
		if (rc == SQLITE_ROW)
			v = sqlite3_column_int64(st, 0);
		else if (rc == SQLITE_DONE)
			v = 0;
	}
	reset(st);
	pthread_mutex_unlock(&l->rmu);
	return v;
}

int64_t ledger_quota_used(struct ledger *l, const char *cred, int64_t day)
{
	return read_count(l, R_QUOTA, cred, 1, day);
}

int64_t ledger_jti_used(struct ledger *l, const char *jti)
{
	return read_count(l, R_JTI, jti, 0, 0);
}

/* ---- reading records back (verify, export) ---- */

/* Open read-only and start one read transaction, so verify and export see one snapshot even
 * while the daemon appends. */
static int open_reader(const char *state_dir, sqlite3 **db, char *err, size_t errlen)
{
	char path[4096];
	struct stat sb;
	char *msg = NULL;

	*db = NULL;
	if (db_path(state_dir, path, sizeof(path)) != 0) {
		set_err(err, errlen, "ledger: no state directory, or its path is too long");
		return -1;
	}
	if (stat(path, &sb) != 0) {
		set_err(err, errlen, "%s: %s", path, strerror(errno));
		return -1;
	}
	if (open_conn(path, SQLITE_OPEN_READONLY, 0, db, err, errlen) != 0)
		return -1;
	if (sqlite3_exec(*db, "BEGIN", NULL, NULL, &msg) != SQLITE_OK) {
		set_err(err, errlen, "ledger: %s", msg != NULL ? msg : sqlite3_errmsg(*db));
		sqlite3_free(msg);
		sqlite3_close(*db);
		*db = NULL;
		return -1;
	}
	return 0;
}

static void close_reader(sqlite3 *db)
{
	if (db == NULL)
		return;
	sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
	sqlite3_close(db);
}

static int col_int(sqlite3_stmt *st, int col, int64_t min, int64_t max, int64_t *v)
{
	if (sqlite3_column_type(st, col) != SQLITE_INTEGER)
		return -1;
	*v = sqlite3_column_int64(st, col);
	return *v < min || *v > max ? -1 : 0;
}

static int col_str(sqlite3_stmt *st, int col, char *dst, size_t dstlen)
{
	const unsigned char *s;
	int n;

	if (sqlite3_column_type(st, col) != SQLITE_TEXT)
		return -1;
	s = sqlite3_column_text(st, col);
	n = sqlite3_column_bytes(st, col);
	/* An embedded NUL would hide bytes from the hash: refuse it. */
	if (s == NULL || n < 0 || (size_t)n >= dstlen || memchr(s, '\0', (size_t)n) != NULL)
		return -1;
	memcpy(dst, s, (size_t)n);
	dst[n] = '\0';
	return 0;
}

static int col_blob(sqlite3_stmt *st, int col, const uint8_t **p, size_t *n)
{
	if (sqlite3_column_type(st, col) != SQLITE_BLOB)
		return -1;
	*p = sqlite3_column_blob(st, col);
	*n = (size_t)sqlite3_column_bytes(st, col);
	return *n > 0 && *p == NULL ? -1 : 0;
}

/* Fill rec, prev and hash from a row of AUDIT_COLUMNS. -1 if a column has the wrong type or
 * does not fit: the row was not written by the ledger. */
static int row_to_rec(sqlite3_stmt *st, struct audit_rec *r, uint8_t prev[32], uint8_t hash[32])
{
	const uint8_t *p;
	size_t n, i;
	int64_t v;

	memset(r, 0, sizeof(*r));
	if (col_int(st, C_SEQ, 1, INT64_MAX, &v) != 0)
		return -1;
	r->seq = (uint64_t)v;
	if (col_int(st, C_TIME, INT64_MIN, INT64_MAX, &r->time_ms) != 0 ||
	    col_str(st, C_CALLER, r->caller, sizeof(r->caller)) != 0)
		return -1;
	if (col_int(st, C_UID, 0, UINT32_MAX, &v) != 0)
		return -1;
	r->uid = (uint32_t)v;
	if (col_int(st, C_GID, 0, UINT32_MAX, &v) != 0)
		return -1;
	r->gid = (uint32_t)v;
	if (col_int(st, C_PID, INT32_MIN, INT32_MAX, &v) != 0)
		return -1;
	r->pid = (int32_t)v;
	if (col_str(st, C_OP, r->op, sizeof(r->op)) != 0 ||
	    col_str(st, C_CRED, r->cred, sizeof(r->cred)) != 0 ||
	    col_str(st, C_OWNER, r->owner, sizeof(r->owner)) != 0 ||
	    col_str(st, C_PURPOSE, r->purpose, sizeof(r->purpose)) != 0 ||
	    col_str(st, C_HALG, r->halg, sizeof(r->halg)) != 0)
		return -1;
	if (col_int(st, C_HASH_LEN, 0, (int64_t)sizeof(r->hashes[0]), &v) != 0)
		return -1;
	r->hash_len = (size_t)v;
	if (col_blob(st, C_HASHES, &p, &n) != 0)
		return -1;
	if (r->hash_len == 0 ? n != 0
	                     : (n % r->hash_len != 0 || n / r->hash_len == 0 ||
	                        n / r->hash_len > LEDGER_MAX_HASHES))
		return -1;
	r->nhashes = r->hash_len == 0 ? 0 : n / r->hash_len;
	for (i = 0; i < r->nhashes; i++)
		memcpy(r->hashes[i], p + i * r->hash_len, r->hash_len);
	if (col_str(st, C_JTI, r->jti, sizeof(r->jti)) != 0 ||
	    col_str(st, C_DECISION, r->decision, sizeof(r->decision)) != 0 ||
	    col_str(st, C_REASON, r->reason, sizeof(r->reason)) != 0 ||
	    col_str(st, C_DETAIL, r->detail, sizeof(r->detail)) != 0)
		return -1;
	if (col_blob(st, C_SIGS, &p, &n) != 0 || n % 32 != 0 || n / 32 > LEDGER_MAX_HASHES)
		return -1;
	r->nsigs = n / 32;
	for (i = 0; i < r->nsigs; i++)
		memcpy(r->sig_sha256[i], p + i * 32, 32);
	if (col_blob(st, C_PREV, &p, &n) != 0 || n != 32)
		return -1;
	memcpy(prev, p, 32);
	if (col_blob(st, C_HASH, &p, &n) != 0 || n != 32)
		return -1;
	memcpy(hash, p, 32);
	if (col_blob(st, C_TST, &p, &n) != 0 || (n != 0 && n != r->nsigs * LEDGER_TST_LEN))
		return -1;
	r->ntst = n / LEDGER_TST_LEN;
	for (i = 0; i < r->ntst; i++) {
		uint64_t t = 0;

		for (int b = 0; b < 8; b++)
			t = t << 8 | p[i * LEDGER_TST_LEN + (size_t)b];
		r->tst_time_ms[i] = (int64_t)t;
		memcpy(r->tst_sha256[i], p + i * LEDGER_TST_LEN + 8, 32);
	}
	return 0;
}

/* Every audit row in order, from a database with or without the tst column. */
static int prepare_rows(sqlite3 *db, sqlite3_stmt **st)
{
	return sqlite3_prepare_v2(db,
	                          has_tst(db) ? "SELECT " AUDIT_COLUMNS " FROM audit ORDER BY seq"
	                                      : "SELECT " AUDIT_COLUMNS_V1
	                                        " FROM audit ORDER BY seq",
	                          -1, st, NULL);
}

/* ---- verify ---- */

struct ckpt {
	uint64_t seq;
	uint8_t head[32];
	uint8_t *sig;
	size_t siglen;
};

/* The next checkpoint, in seq order, into *c (its sig replaced): 1, 0 after the last, -1 for
 * a malformed row or a read error (why says which). One at a time, so verify's memory does not
 * grow with the ledger. */
static int ckpt_next(sqlite3 *db, sqlite3_stmt *st, struct ckpt *c, uint64_t *bad_seq, char *why,
                     size_t whylen)
{
	const uint8_t *p;
	size_t len;
	int64_t seq;
	int rc;

	free(c->sig);
	memset(c, 0, sizeof(*c));
	if ((rc = sqlite3_step(st)) == SQLITE_DONE)
		return 0;
	if (rc != SQLITE_ROW) {
		set_err(why, whylen, "cannot read the checkpoints: %s", sqlite3_errmsg(db));
		return -1;
	}
	if (col_int(st, 0, 1, INT64_MAX, &seq) != 0) {
		set_err(why, whylen, "a checkpoint row has a malformed sequence number");
		return -1;
	}
	c->seq = (uint64_t)seq;
	if (col_blob(st, 1, &p, &len) != 0 || len != 32) {
		*bad_seq = c->seq;
		set_err(why, whylen, "checkpoint at seq %llu is malformed",
		        (unsigned long long)c->seq);
		return -1;
	}
	memcpy(c->head, p, 32);
	if (col_blob(st, 2, &p, &len) != 0 || len == 0 || len > LEDGER_MAX_SIG ||
	    (c->sig = malloc(len)) == NULL) {
		*bad_seq = c->seq;
		set_err(why, whylen, "checkpoint at seq %llu has a malformed signature",
		        (unsigned long long)c->seq);
		return -1;
	}
	memcpy(c->sig, p, len);
	c->siglen = len;
	return 1;
}

static int ckpt_sig_ok(EVP_PKEY *key, const struct ckpt *c)
{
	EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new(key, NULL);
	int ok;

	/* The audit key signed the 32-byte head as a SHA-256 digest (ECDSA over the value
	 * itself; PKCS#1 v1.5 with a SHA-256 DigestInfo for an RSA key). */
	ok = ctx != NULL && EVP_PKEY_verify_init(ctx) == 1 &&
	     EVP_PKEY_CTX_set_signature_md(ctx, EVP_sha256()) == 1 &&
	     EVP_PKEY_verify(ctx, c->sig, c->siglen, c->head, 32) == 1;
	EVP_PKEY_CTX_free(ctx);
	return ok;
}

int ledger_verify(const char *state_dir, struct evp_pkey_st *verify_key, uint64_t *records,
                  uint64_t *checkpoints, uint64_t *bad_seq, char *why, size_t whylen)
{
	sqlite3 *db = NULL;
	sqlite3_stmt *st = NULL;
	sqlite3_stmt *cst = NULL;
	struct audit_rec *rec = NULL;
	struct ckpt ck = {0};
	uint64_t nck = 0;
	int have; /* ck holds the next checkpoint not yet matched */
	uint8_t prev[32], stored_prev[32], stored_hash[32], hash[32];
	uint64_t expect = 1, last_ck = 0;
	int rc, r = -1;

	*records = 0;
	*checkpoints = 0;
	*bad_seq = 0;
	set_err(why, whylen, "%s", "");
	if (open_reader(state_dir, &db, why, whylen) != 0)
		goto out;
	if (sqlite3_prepare_v2(db, "SELECT seq, head, sig FROM checkpoints ORDER BY seq", -1, &cst,
	                       NULL) != SQLITE_OK) {
		set_err(why, whylen, "cannot read the checkpoints: %s", sqlite3_errmsg(db));
		goto out;
	}
	if ((have = ckpt_next(db, cst, &ck, bad_seq, why, whylen)) < 0)
		goto out;
	if ((rec = malloc(sizeof(*rec))) == NULL) {
		set_err(why, whylen, "out of memory");
		goto out;
	}
	if (prepare_rows(db, &st) != SQLITE_OK) {
		set_err(why, whylen, "cannot read the audit records: %s", sqlite3_errmsg(db));
		goto out;
	}
	memset(prev, 0, sizeof(prev));
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		if (row_to_rec(st, rec, stored_prev, stored_hash) != 0) {
			*bad_seq = sqlite3_column_type(st, C_SEQ) == SQLITE_INTEGER &&
			                   sqlite3_column_int64(st, C_SEQ) > 0
			               ? (uint64_t)sqlite3_column_int64(st, C_SEQ)
			               : expect;
			set_err(why, whylen, "record %llu is malformed (a column was edited)",
			        (unsigned long long)*bad_seq);
			goto out;
		}
		if (rec->seq != expect) {
			*bad_seq = expect;
			if (expect + 1 == rec->seq)
				set_err(why, whylen, "record %llu is missing (deleted)",
				        (unsigned long long)expect);
			else
				set_err(why, whylen, "records %llu..%llu are missing (deleted)",
				        (unsigned long long)expect,
				        (unsigned long long)(rec->seq - 1));
			goto out;
		}
		if (rec_hash(rec, rec->seq, stored_prev, hash) != 0) {
			set_err(why, whylen, "cannot compute hashes");
			goto out;
		}
		if (CRYPTO_memcmp(hash, stored_hash, 32) != 0) {
			*bad_seq = rec->seq;
			set_err(why, whylen,
			        "record %llu does not match its hash (edited, inserted or moved)",
			        (unsigned long long)rec->seq);
			goto out;
		}
		if (CRYPTO_memcmp(stored_prev, prev, 32) != 0) {
			*bad_seq = rec->seq;
			set_err(why, whylen,
			        "record %llu does not follow record %llu (chain broken: a record "
			        "was inserted, replaced or reordered)",
			        (unsigned long long)rec->seq, (unsigned long long)(rec->seq - 1));
			goto out;
		}
		while (have && ck.seq <= rec->seq) {
			/* ck.seq < rec->seq cannot happen: seqs are contiguous from 1. */
			if (CRYPTO_memcmp(ck.head, stored_hash, 32) != 0) {
				*bad_seq = rec->seq;
				set_err(why, whylen,
				        "record %llu differs from the signed checkpoint at that "
				        "sequence number (chain rewritten)",
				        (unsigned long long)rec->seq);
				goto out;
			}
			if (verify_key != NULL && !ckpt_sig_ok(verify_key, &ck)) {
				*bad_seq = rec->seq;
				set_err(why, whylen,
				        "the checkpoint at seq %llu has a bad signature (not made "
				        "by the audit key)",
				        (unsigned long long)rec->seq);
				goto out;
			}
			last_ck = rec->seq;
			nck++;
			if ((have = ckpt_next(db, cst, &ck, bad_seq, why, whylen)) < 0)
				goto out;
		}
		memcpy(prev, stored_hash, 32);
		(*records)++;
		expect++;
	}
	if (rc != SQLITE_DONE) {
		set_err(why, whylen, "cannot read the audit records: %s", sqlite3_errmsg(db));
		goto out;
	}
	if (have) {
		/* The last checkpoint says how far the ledger reached. */
		uint64_t tail;

		do {
			nck++;
			tail = ck.seq;
		} while ((have = ckpt_next(db, cst, &ck, bad_seq, why, whylen)) > 0);
		*checkpoints = nck;
		if (have < 0)
			goto out;
		*bad_seq = expect;
		set_err(why, whylen,
		        "tail truncated: a signed checkpoint covers seq %llu but the ledger ends "
		        "at seq %llu",
		        (unsigned long long)tail, (unsigned long long)(expect - 1));
		goto out;
	}
	*checkpoints = nck;
	/* Intact; say what is not covered yet, and whether signatures were checked. */
	if (*records > last_ck)
		set_err(why, whylen,
		        "%llu record(s) after the last checkpoint (seq %llu) are not yet covered "
		        "by a signed checkpoint%s",
		        (unsigned long long)(*records - last_ck), (unsigned long long)last_ck,
		        verify_key == NULL && nck > 0 ? "; checkpoint signatures NOT checked (no "
		                                        "audit key)"
		                                      : "");
	else if (verify_key == NULL && nck > 0)
		set_err(why, whylen, "checkpoint signatures NOT checked (no audit key)");
	r = 0;
out:
	sqlite3_finalize(st);
	sqlite3_finalize(cst);
	close_reader(db);
	free(ck.sig);
	free(rec);
	return r;
}

/* ---- export ---- */

static void hex(const uint8_t *p, size_t n, char *out)
{
	static const char digits[] = "0123456789abcdef";
	size_t i;

	for (i = 0; i < n; i++) {
		out[2 * i] = digits[p[i] >> 4];
		out[2 * i + 1] = digits[p[i] & 15];
	}
	out[2 * n] = '\0';
}

/* A JSON string; bytes that are not valid UTF-8 (records hold what callers sent) become '?'. */
static json_t *jstr(const char *s)
{
	json_t *j = json_string(s);
	char *copy;
	size_t i;

	if (j != NULL || (copy = strdup(s)) == NULL)
		return j;
	for (i = 0; copy[i] != '\0'; i++)
		if ((unsigned char)copy[i] >= 0x80)
			copy[i] = '?';
	j = json_string(copy);
	free(copy);
	return j;
}

static int rfc3339_ms(int64_t ms, char *buf, size_t len)
{
	int64_t secs = ms / 1000, frac = ms % 1000;
	time_t t;
	struct tm tm;
	char base[32];

	if (frac < 0) {
		frac += 1000;
		secs -= 1;
	}
	t = (time_t)secs;
	if (gmtime_r(&t, &tm) == NULL ||
	    strftime(base, sizeof(base), "%Y-%m-%dT%H:%M:%S", &tm) == 0)
		return -1;
	snprintf(buf, len, "%s.%03dZ", base, (int)frac);
	return 0;
}

static json_t *rec_json(const struct audit_rec *r, const uint8_t prev[32], const uint8_t hash[32])
{
	json_t *o = json_object(), *hashes = json_array(), *sigs = json_array(),
	       *tsts = json_array();
	char t[48], hx[65], b64[4 * ((64 + 2) / 3) + 1];
	size_t i;
	int ok;

	ok = o != NULL && hashes != NULL && sigs != NULL && tsts != NULL &&
	     rfc3339_ms(r->time_ms, t, sizeof(t)) == 0;
	for (i = 0; ok && i < r->nhashes; i++) {
		EVP_EncodeBlock((unsigned char *)b64, r->hashes[i], (int)r->hash_len);
		ok = json_array_append_new(hashes, json_string(b64)) == 0;
	}
	for (i = 0; ok && i < r->nsigs; i++) {
		hex(r->sig_sha256[i], 32, hx);
		ok = json_array_append_new(sigs, json_string(hx)) == 0;
	}
	ok = ok && json_object_set_new(o, "seq", json_integer((json_int_t)r->seq)) == 0 &&
	     json_object_set_new(o, "time", json_string(t)) == 0 &&
	     json_object_set_new(o, "caller", jstr(r->caller)) == 0 &&
	     json_object_set_new(o, "uid", json_integer(r->uid)) == 0 &&
	     json_object_set_new(o, "gid", json_integer(r->gid)) == 0 &&
	     json_object_set_new(o, "pid", json_integer(r->pid)) == 0 &&
	     json_object_set_new(o, "op", jstr(r->op)) == 0 &&
	     json_object_set_new(o, "credential", jstr(r->cred)) == 0 &&
	     json_object_set_new(o, "owner", jstr(r->owner)) == 0 &&
	     json_object_set_new(o, "purpose", jstr(r->purpose)) == 0 &&
	     json_object_set_new(o, "hash_algorithm", jstr(r->halg)) == 0 &&
	     json_object_set(o, "hashes", hashes) == 0 &&
	     json_object_set_new(o, "jti", jstr(r->jti)) == 0 &&
	     json_object_set_new(o, "decision", jstr(r->decision)) == 0 &&
	     json_object_set_new(o, "reason", jstr(r->reason)) == 0 &&
	     json_object_set_new(o, "detail", jstr(r->detail)) == 0 &&
	     json_object_set(o, "signature_sha256", sigs) == 0;
	if (ok) {
		hex(prev, 32, hx);
		ok = json_object_set_new(o, "prev_hash", json_string(hx)) == 0;
	}
	if (ok) {
		hex(hash, 32, hx);
		ok = json_object_set_new(o, "hash", json_string(hx)) == 0;
	}
	for (i = 0; ok && i < r->ntst; i++) {
		json_t *ts;

		hex(r->tst_sha256[i], 32, hx);
		ok = rfc3339_ms(r->tst_time_ms[i], t, sizeof(t)) == 0 &&
		     (ts = json_pack("{s:s, s:s}", "time", t, "token_sha256", hx)) != NULL &&
		     json_array_append_new(tsts, ts) == 0;
	}
	ok = ok && (r->ntst == 0 || json_object_set(o, "timestamps", tsts) == 0);
	json_decref(hashes);
	json_decref(sigs);
	json_decref(tsts);
	if (!ok) {
		json_decref(o);
		return NULL;
	}
	return o;
}

static int write_all(int fd, const char *p, size_t n)
{
	ssize_t w;

	while (n > 0) {
		w = write(fd, p, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -1;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

int ledger_export_jsonl(const char *state_dir, int fd, char *err, size_t errlen)
{
	sqlite3 *db = NULL;
	sqlite3_stmt *st = NULL;
	struct audit_rec *rec = NULL;
	uint8_t prev[32], hash[32];
	json_t *o;
	char *line;
	size_t len;
	int rc, r = LEDGER_ERR_INTERNAL;

	if (open_reader(state_dir, &db, err, errlen) != 0) {
		r = LEDGER_ERR_UNAVAILABLE;
		goto out;
	}
	if ((rec = malloc(sizeof(*rec))) == NULL) {
		set_err(err, errlen, "out of memory");
		goto out;
	}
	if (prepare_rows(db, &st) != SQLITE_OK) {
		set_err(err, errlen, "cannot read the audit records: %s", sqlite3_errmsg(db));
		r = LEDGER_ERR_UNAVAILABLE;
		goto out;
	}
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		if (row_to_rec(st, rec, prev, hash) != 0) {
			set_err(err, errlen, "record %lld is malformed; run audit verify",
			        (long long)sqlite3_column_int64(st, C_SEQ));
			goto out;
		}
		if ((o = rec_json(rec, prev, hash)) == NULL) {
			set_err(err, errlen, "cannot encode record %llu",
			        (unsigned long long)rec->seq);
			goto out;
		}
		line = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
		json_decref(o);
		if (line == NULL) {
			set_err(err, errlen, "cannot encode record %llu",
			        (unsigned long long)rec->seq);
			goto out;
		}
		len = strlen(line);
		line[len] = '\n'; /* replaces the NUL; written by length */
		rc = write_all(fd, line, len + 1);
		free(line);
		if (rc != 0) {
			set_err(err, errlen, "write: %s", strerror(errno));
			goto out;
		}
	}
	if (rc != SQLITE_DONE) {
		set_err(err, errlen, "cannot read the audit records: %s", sqlite3_errmsg(db));
		r = LEDGER_ERR_UNAVAILABLE;
		goto out;
	}
	r = LEDGER_OK;
out:
	sqlite3_finalize(st);
	close_reader(db);
	free(rec);
	return r;
}
