/* The credential registry: credentials and their certificate chains in STATE_DIR/iamsign.db.
 *
 * One SQLite connection per struct registry, serialised by a mutex: the daemon's workers call
 * registry_get concurrently, and the statements are prepared once. The schema carries a version
 * (PRAGMA user_version) so that later tables (audit, quotas, SAD identifiers) are added by
 * migrations in the same database. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "policy/policy.h"
#include "signer/core/registry.h"

#define REG_DB_NAME "iamsign.db"
#define REG_BUSY_MS 5000
/* Largest device key or chain PEM accepted: a few certificates. */
#define REG_MAX_PEM (64 * 1024)
/* Rows fetched per lock hold in registry_foreach, so the callback runs unlocked. */
#define REG_PAGE 128

/* Schema migrations: migrations[i] takes user_version i to i + 1. Append only. */
static const char *const migrations[] = {
    "CREATE TABLE credentials ("
    " id TEXT PRIMARY KEY NOT NULL,"
    " owner TEXT NOT NULL,"
    " class TEXT NOT NULL CHECK (class IN ('citizen', 'seal')),"
    " status TEXT NOT NULL CHECK (status IN ('active', 'suspended', 'revoked')),"
    " key_uri TEXT NOT NULL,"
    " device_key_pem TEXT,"
    " created INTEGER NOT NULL"
    ");"
    "CREATE INDEX credentials_owner ON credentials (owner, id);"
    "CREATE TABLE chains ("
    " id TEXT PRIMARY KEY NOT NULL,"
    " pem TEXT NOT NULL"
    ");",
    /* 2: wrapped keys (blob, KEK, public key, binding) and certificates in the registry,
     * settings (the KEK in use). Existing credentials are token objects. */
    "ALTER TABLE credentials ADD COLUMN key_store TEXT NOT NULL DEFAULT 'token'"
    " CHECK (key_store IN ('token', 'wrapped'));"
    "CREATE TABLE wrapped_keys ("
    " id TEXT PRIMARY KEY NOT NULL,"
    " kek BLOB NOT NULL,"
    " blob BLOB NOT NULL,"
    " pub BLOB NOT NULL,"
    " binding BLOB NOT NULL,"
    " created INTEGER NOT NULL"
    ");"
    "CREATE INDEX wrapped_keys_kek ON wrapped_keys (kek, id);"
    "CREATE TABLE certs ("
    " id TEXT PRIMARY KEY NOT NULL,"
    " der BLOB NOT NULL"
    ");"
    "CREATE TABLE settings ("
    " name TEXT PRIMARY KEY NOT NULL,"
    " value BLOB NOT NULL"
    ");",
};
#define REG_SCHEMA_VERSION ((int)(sizeof(migrations) / sizeof(migrations[0])))

#define REG_COLUMNS                                                                                \
	"c.id, c.owner, c.class, c.status, c.key_uri, c.device_key_pem, c.created, ch.pem, "       \
	"c.key_store, w.kek, w.blob, w.pub, w.binding, w.created, ce.der "                         \
	"FROM credentials c LEFT JOIN chains ch ON ch.id = c.id "                                  \
	"LEFT JOIN wrapped_keys w ON w.id = c.id LEFT JOIN certs ce ON ce.id = c.id "
#define WKEY_COLUMNS "kek, blob, pub, binding, created FROM wrapped_keys "

enum {
	ST_GET,
	ST_PAGE,
	ST_PAGE_OWNER,
	ST_ADD,
	ST_SET_STATUS,
	ST_CHAIN_PUT,
	ST_CHAIN_DEL,
	ST_REMOVE,
	ST_WKEY_GET,
	ST_WKEY_PUT,
	ST_WKEY_REWRAP,
	ST_WKEY_DEL,
	ST_WKEY_IDS,
	ST_WKEY_IDS_ALL,
	ST_WKEY_COUNT_KEK,
	ST_WKEY_COUNT_NOT,
	ST_WKEY_COUNT_ALL,
	ST_CERT_PUT,
	ST_CERT_DEL,
	ST_SET_GET,
	ST_SET_PUT,
	ST_SET_DEL,
	ST_BEGIN,
	ST_COMMIT,
	ST_ROLLBACK,
	ST_COUNT
};

static const char *const stmt_sql[ST_COUNT] = {
    [ST_GET] = "SELECT " REG_COLUMNS "WHERE c.id = ?1",
    [ST_PAGE] = "SELECT " REG_COLUMNS "WHERE c.id > ?1 ORDER BY c.id LIMIT ?2",
    [ST_PAGE_OWNER] = "SELECT " REG_COLUMNS "WHERE c.owner = ?3 AND c.id > ?1 "
                      "ORDER BY c.id LIMIT ?2",
    [ST_ADD] = "INSERT INTO credentials (id, owner, class, status, key_uri, device_key_pem, "
               "created, key_store) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    [ST_WKEY_GET] = "SELECT " WKEY_COLUMNS "WHERE id = ?1",
    [ST_WKEY_PUT] = "INSERT INTO wrapped_keys (id, kek, blob, pub, binding, created) "
                    "VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    [ST_WKEY_REWRAP] = "UPDATE wrapped_keys SET kek = ?3, blob = ?4 WHERE id = ?1 AND kek = ?2",
    [ST_WKEY_DEL] = "DELETE FROM wrapped_keys WHERE id = ?1",
    [ST_WKEY_IDS] = "SELECT id FROM wrapped_keys WHERE id > ?1 AND kek <> ?3 ORDER BY id "
                    "LIMIT ?2",
    [ST_WKEY_IDS_ALL] = "SELECT id FROM wrapped_keys WHERE id > ?1 ORDER BY id LIMIT ?2",
    [ST_WKEY_COUNT_KEK] = "SELECT count(*) FROM wrapped_keys WHERE kek = ?1",
    [ST_WKEY_COUNT_NOT] = "SELECT count(*) FROM wrapped_keys WHERE kek <> ?1",
    [ST_WKEY_COUNT_ALL] = "SELECT count(*) FROM wrapped_keys",
    [ST_CERT_PUT] = "INSERT INTO certs (id, der) VALUES (?1, ?2) "
                    "ON CONFLICT (id) DO UPDATE SET der = excluded.der",
    [ST_CERT_DEL] = "DELETE FROM certs WHERE id = ?1",
    [ST_SET_GET] = "SELECT value FROM settings WHERE name = ?1",
    [ST_SET_PUT] = "INSERT INTO settings (name, value) VALUES (?1, ?2) "
                   "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
    [ST_SET_DEL] = "DELETE FROM settings WHERE name = ?1",
    [ST_SET_STATUS] = "UPDATE credentials SET status = ?2 WHERE id = ?1",
    [ST_CHAIN_PUT] = "INSERT INTO chains (id, pem) VALUES (?1, ?2) "
                     "ON CONFLICT (id) DO UPDATE SET pem = excluded.pem",
    [ST_CHAIN_DEL] = "DELETE FROM chains WHERE id = ?1",
    [ST_REMOVE] = "DELETE FROM credentials WHERE id = ?1",
    [ST_BEGIN] = "BEGIN IMMEDIATE",
    [ST_COMMIT] = "COMMIT",
    [ST_ROLLBACK] = "ROLLBACK",
};

struct registry {
	sqlite3 *db;
	pthread_mutex_t mu;
	sqlite3_stmt *st[ST_COUNT];
};

const char *reg_status_name(enum reg_status s)
{
	switch (s) {
	case REG_ACTIVE:
		return "active";
	case REG_SUSPENDED:
		return "suspended";
	case REG_REVOKED:
		return "revoked";
	}
	return NULL;
}

static int status_lookup(const char *s)
{
	static const enum reg_status all[] = {REG_ACTIVE, REG_SUSPENDED, REG_REVOKED};
	size_t i;

	for (i = 0; i < sizeof(all) / sizeof(all[0]); i++)
		if (strcmp(s, reg_status_name(all[i])) == 0)
			return (int)all[i];
	return 0;
}

void reg_wkey_clear(struct reg_wkey *w)
{
	if (w == NULL)
		return;
	free(w->blob);
	free(w->pub);
	free(w->binding);
	memset(w, 0, sizeof(*w));
}

void reg_cred_clear(struct reg_cred *c)
{
	if (c == NULL)
		return;
	free(c->chain_pem);
	free(c->device_key_pem);
	reg_wkey_clear(&c->wkey);
	free(c->cert);
	memset(c, 0, sizeof(*c));
}

static const char *store_name(enum reg_store s)
{
	return s == REG_STORE_WRAPPED ? "wrapped" : s == REG_STORE_TOKEN ? "token" : NULL;
}

/* A BLOB column of 1..max bytes into a fresh buffer; NULL stays NULL (*len 0). */
static int blob_col(sqlite3_stmt *st, int col, size_t max, unsigned char **dst, size_t *len)
{
	const void *b;
	int n;

	*dst = NULL;
	*len = 0;
	if (sqlite3_column_type(st, col) == SQLITE_NULL)
		return REG_OK;
	b = sqlite3_column_blob(st, col);
	n = sqlite3_column_bytes(st, col);
	if (b == NULL || n <= 0 || (size_t)n > max)
		return REG_ERR_INTERNAL;
	if ((*dst = malloc((size_t)n)) == NULL)
		return REG_ERR_INTERNAL;
	memcpy(*dst, b, (size_t)n);
	*len = (size_t)n;
	return REG_OK;
}

/* Columns col.. of a wrapped_keys row (kek, blob, pub, binding, created); all NULL: none. */
static int read_wkey(sqlite3_stmt *st, int col, struct reg_wkey *w)
{
	size_t kl = 0;
	unsigned char *kek = NULL;
	int r = REG_ERR_INTERNAL;

	memset(w, 0, sizeof(*w));
	if (sqlite3_column_type(st, col) == SQLITE_NULL)
		return REG_OK;
	if (blob_col(st, col, REG_KEK_ID_LEN, &kek, &kl) != REG_OK || kl != REG_KEK_ID_LEN ||
	    blob_col(st, col + 1, REG_MAX_BLOB, &w->blob, &w->blob_len) != REG_OK ||
	    blob_col(st, col + 2, REG_MAX_SPKI, &w->pub, &w->pub_len) != REG_OK ||
	    blob_col(st, col + 3, REG_MAX_BINDING, &w->binding, &w->binding_len) != REG_OK ||
	    w->blob == NULL || w->pub == NULL || w->binding == NULL)
		goto out;
	memcpy(w->kek, kek, REG_KEK_ID_LEN);
	w->created = sqlite3_column_int64(st, col + 4);
	w->present = 1;
	r = REG_OK;
out:
	free(kek);
	if (r != REG_OK)
		reg_wkey_clear(w);
	return r;
}

/* A key URI: "pkcs11:" followed by printable ASCII, at most REG_MAX_URI bytes. */
static int valid_uri(const char *s)
{
	size_t n;

	if (s == NULL || strncmp(s, "pkcs11:", 7) != 0)
		return 0;
	for (n = 0; s[n] != '\0'; n++) {
		unsigned char ch = (unsigned char)s[n];
		if (n >= REG_MAX_URI || ch < 0x21 || ch > 0x7e)
			return 0;
	}
	return 1;
}

/* Optional PEM text: NULL, or 1..REG_MAX_PEM bytes of printable ASCII and line breaks. */
static int valid_pem(const char *s)
{
	size_t n;

	if (s == NULL)
		return 1;
	for (n = 0; s[n] != '\0'; n++) {
		unsigned char ch = (unsigned char)s[n];
		if (n >= REG_MAX_PEM)
			return 0;
		if ((ch < 0x20 || ch > 0x7e) && ch != '\n' && ch != '\r')
			return 0;
	}
	return n > 0;
}

static void lock(struct registry *r)
{
	pthread_mutex_lock(&r->mu);
}

static void unlock(struct registry *r)
{
	pthread_mutex_unlock(&r->mu);
}

/* Step a statement that returns no rows, then reset it: REG_OK, REG_ERR_EXISTS on a primary
 * key conflict, else REG_ERR_INTERNAL. */
static int exec_stmt(sqlite3_stmt *st)
{
	int rc = sqlite3_step(st);
	int r = REG_ERR_INTERNAL;

	if (rc == SQLITE_DONE)
		r = REG_OK;
	else if (rc == SQLITE_CONSTRAINT_PRIMARYKEY || rc == SQLITE_CONSTRAINT_UNIQUE)
		r = REG_ERR_EXISTS; /* extended result codes are on */
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	return r;
}

static int bind_text(sqlite3_stmt *st, int idx, const char *s)
{
	if (s == NULL)
		return sqlite3_bind_null(st, idx) == SQLITE_OK ? REG_OK : REG_ERR_INTERNAL;
	return sqlite3_bind_text(st, idx, s, -1, SQLITE_STATIC) == SQLITE_OK ? REG_OK
	                                                                     : REG_ERR_INTERNAL;
}

static int copy_col(sqlite3_stmt *st, int col, char *dst, size_t dstlen)
{
	const unsigned char *s = sqlite3_column_text(st, col);
	int n = sqlite3_column_bytes(st, col);

	if (s == NULL || n <= 0 || (size_t)n >= dstlen)
		return REG_ERR_INTERNAL;
	memcpy(dst, s, (size_t)n);
	dst[n] = '\0';
	return REG_OK;
}

static int dup_col(sqlite3_stmt *st, int col, char **dst)
{
	const unsigned char *s = sqlite3_column_text(st, col);
	int n = sqlite3_column_bytes(st, col);

	*dst = NULL;
	if (sqlite3_column_type(st, col) == SQLITE_NULL)
		return REG_OK;
	if (s == NULL || n < 0)
		return REG_ERR_INTERNAL;
	if ((*dst = malloc((size_t)n + 1)) == NULL)
		return REG_ERR_INTERNAL;
	memcpy(*dst, s, (size_t)n);
	(*dst)[n] = '\0';
	return REG_OK;
}

/* Fill *c from the current row of a REG_COLUMNS query. A row that fails validation means the
 * database was edited behind our back: an internal error, never a half-filled credential. */
static int read_row(sqlite3_stmt *st, struct reg_cred *c)
{
	char cls[16], status[16];
	int r = REG_ERR_INTERNAL;

	memset(c, 0, sizeof(*c));
	if (copy_col(st, 0, c->id, sizeof(c->id)) != REG_OK ||
	    copy_col(st, 1, c->owner, sizeof(c->owner)) != REG_OK ||
	    copy_col(st, 2, cls, sizeof(cls)) != REG_OK ||
	    copy_col(st, 3, status, sizeof(status)) != REG_OK ||
	    copy_col(st, 4, c->key_uri, sizeof(c->key_uri)) != REG_OK)
		goto out;
	if (!cred_valid_id(c->id) || !cred_valid_user(c->owner) || !valid_uri(c->key_uri))
		goto out;
	if ((c->cls = pol_class_lookup(cls)) == 0)
		goto out;
	if ((c->status = (enum reg_status)status_lookup(status)) == 0)
		goto out;
	if (dup_col(st, 5, &c->device_key_pem) != REG_OK)
		goto out;
	c->created = sqlite3_column_int64(st, 6);
	if (dup_col(st, 7, &c->chain_pem) != REG_OK)
		goto out;
	if (copy_col(st, 8, status, sizeof(status)) != REG_OK)
		goto out;
	if (strcmp(status, "wrapped") == 0)
		c->store = REG_STORE_WRAPPED;
	else if (strcmp(status, "token") == 0)
		c->store = REG_STORE_TOKEN;
	else
		goto out;
	/* A token credential's blob columns are read only for a wrapped one. */
	if (c->store == REG_STORE_WRAPPED &&
	    (read_wkey(st, 9, &c->wkey) != REG_OK ||
	     blob_col(st, 14, REG_MAX_CERT, &c->cert, &c->cert_len) != REG_OK))
		goto out;
	r = REG_OK;
out:
	if (r != REG_OK)
		reg_cred_clear(c);
	return r;
}

static void set_err(char *err, size_t errlen, const char *what, const char *detail)
{
	if (err != NULL && errlen > 0)
		snprintf(err, errlen, "%s%s%s", what, detail != NULL ? ": " : "",
		         detail != NULL ? detail : "");
}

/* Bring the schema to REG_SCHEMA_VERSION, one transaction per step. */
static int migrate(sqlite3 *db, char *err, size_t errlen)
{
	sqlite3_stmt *st = NULL;
	int version, r = REG_ERR_INTERNAL;
	char *msg = NULL;
	char pragma[64];

	for (;;) {
		if (sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, &msg) != SQLITE_OK) {
			set_err(err, errlen, "registry: cannot begin migration", msg);
			goto out;
		}
		if (sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL) != SQLITE_OK ||
		    sqlite3_step(st) != SQLITE_ROW) {
			set_err(err, errlen, "registry: cannot read schema version",
			        sqlite3_errmsg(db));
			goto rollback;
		}
		version = sqlite3_column_int(st, 0);
		sqlite3_finalize(st);
		st = NULL;
		if (version < 0 || version > REG_SCHEMA_VERSION) {
			if (err != NULL)
				snprintf(err, errlen,
				         "registry: database schema version %d is not supported "
				         "(this program knows up to %d)",
				         version, REG_SCHEMA_VERSION);
			goto rollback;
		}
		if (version == REG_SCHEMA_VERSION) {
			if (sqlite3_exec(db, "COMMIT", NULL, NULL, &msg) != SQLITE_OK) {
				set_err(err, errlen, "registry: commit", msg);
				goto rollback;
			}
			break;
		}
		if (sqlite3_exec(db, migrations[version], NULL, NULL, &msg) != SQLITE_OK) {
			set_err(err, errlen, "registry: schema migration failed", msg);
			goto rollback;
		}
		/* PRAGMA takes no parameters; the number is ours. */
		snprintf(pragma, sizeof(pragma), "PRAGMA user_version = %d", version + 1);
		if (sqlite3_exec(db, pragma, NULL, NULL, &msg) != SQLITE_OK ||
		    sqlite3_exec(db, "COMMIT", NULL, NULL, &msg) != SQLITE_OK) {
			set_err(err, errlen, "registry: schema migration failed", msg);
			goto rollback;
		}
	}
	r = REG_OK;
	goto out;
rollback:
	sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
out:
	sqlite3_finalize(st);
	sqlite3_free(msg);
	return r;
}

/* Create (when create != 0) the state directory 0700 and the database file 0600 before SQLite
 * opens it, so that neither ever exists with looser modes. */
static int prepare_files(const char *state_dir, const char *path, int create, char *err,
                         size_t errlen)
{
	struct stat sb;
	int fd = -1, r = REG_ERR_INTERNAL;

	if (create && mkdir(state_dir, 0700) != 0 && errno != EEXIST) {
		set_err(err, errlen, state_dir, strerror(errno));
		goto out;
	}
	if (stat(state_dir, &sb) != 0) {
		set_err(err, errlen, state_dir, strerror(errno));
		r = errno == ENOENT ? REG_ERR_NOT_FOUND : REG_ERR_INTERNAL;
		goto out;
	}
	if (!S_ISDIR(sb.st_mode)) {
		set_err(err, errlen, state_dir, "not a directory");
		goto out;
	}
	if ((sb.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
		set_err(err, errlen, state_dir, "state directory is group- or world-writable");
		goto out;
	}
	/* Never open() an existing database here: closing any descriptor of the file drops
	 * every POSIX lock this process holds on it, including those of SQLite connections
	 * already open (the ledger's), and another process may then delete the WAL under them.
	 * Only a database that does not exist yet is created (O_EXCL), then checked by path. */
	if (create) {
		fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
		if (fd < 0 && errno != EEXIST) {
			set_err(err, errlen, path, strerror(errno));
			goto out;
		}
	}
	if (lstat(path, &sb) != 0) {
		set_err(err, errlen, path, strerror(errno));
		r = errno == ENOENT ? REG_ERR_NOT_FOUND : REG_ERR_INTERNAL;
		goto out;
	}
	if (!S_ISREG(sb.st_mode)) {
		set_err(err, errlen, path, "not a regular file");
		goto out;
	}
	/* The registry names citizens: keep it owner-only (SQLite gives -wal and -shm the same
	 * mode as the database). */
	if ((sb.st_mode & 077) != 0 && chmod(path, 0600) != 0) {
		set_err(err, errlen, path, strerror(errno));
		goto out;
	}
	r = REG_OK;
out:
	if (fd >= 0)
		close(fd);
	return r;
}

int registry_open(const char *state_dir, int create, struct registry **out, char *err,
                  size_t errlen)
{
	struct registry *reg = NULL;
	char path[4096];
	char *msg = NULL;
	int i, n, r = REG_ERR_INTERNAL;
	sqlite3_stmt *st = NULL;

	*out = NULL;
	if (state_dir == NULL || state_dir[0] == '\0') {
		set_err(err, errlen, "registry: no state directory configured", NULL);
		r = REG_ERR_BAD_INPUT;
		goto out;
	}
	n = snprintf(path, sizeof(path), "%s/%s", state_dir, REG_DB_NAME);
	if (n < 0 || (size_t)n >= sizeof(path)) {
		set_err(err, errlen, "registry: state directory path too long", NULL);
		r = REG_ERR_BAD_INPUT;
		goto out;
	}
	if ((r = prepare_files(state_dir, path, create, err, errlen)) != REG_OK)
		goto out;
	r = REG_ERR_INTERNAL;
	if ((reg = calloc(1, sizeof(*reg))) == NULL) {
		set_err(err, errlen, "registry: out of memory", NULL);
		goto out;
	}
	if (pthread_mutex_init(&reg->mu, NULL) != 0) {
		set_err(err, errlen, "registry: cannot create mutex", NULL);
		free(reg);
		reg = NULL;
		goto out;
	}
	/* Our own mutex serialises the connection; SQLite's would be a second lock. */
	if (sqlite3_open_v2(path, &reg->db,
	                    SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_NOFOLLOW,
	                    NULL) != SQLITE_OK) {
		set_err(err, errlen, path,
		        reg->db != NULL ? sqlite3_errmsg(reg->db) : "cannot open database");
		goto out;
	}
	sqlite3_extended_result_codes(reg->db, 1);
	if (sqlite3_busy_timeout(reg->db, REG_BUSY_MS) != SQLITE_OK ||
	    sqlite3_exec(reg->db, "PRAGMA foreign_keys = ON; PRAGMA synchronous = FULL;", NULL,
	                 NULL, &msg) != SQLITE_OK) {
		set_err(err, errlen, "registry: cannot configure database", msg);
		goto out;
	}
	/* journal_mode answers with the mode in force: check that WAL took. */
	if (sqlite3_prepare_v2(reg->db, "PRAGMA journal_mode = WAL", -1, &st, NULL) != SQLITE_OK ||
	    sqlite3_step(st) != SQLITE_ROW || sqlite3_column_text(st, 0) == NULL ||
	    strcmp((const char *)sqlite3_column_text(st, 0), "wal") != 0) {
		set_err(err, errlen, "registry: cannot enable WAL journal",
		        sqlite3_errmsg(reg->db));
		goto out;
	}
	sqlite3_finalize(st);
	st = NULL;
	if (migrate(reg->db, err, errlen) != REG_OK)
		goto out;
	for (i = 0; i < ST_COUNT; i++) {
		if (sqlite3_prepare_v3(reg->db, stmt_sql[i], -1, SQLITE_PREPARE_PERSISTENT,
		                       &reg->st[i], NULL) != SQLITE_OK) {
			set_err(err, errlen, "registry: cannot prepare statement",
			        sqlite3_errmsg(reg->db));
			goto out;
		}
	}
	*out = reg;
	reg = NULL;
	r = REG_OK;
out:
	sqlite3_finalize(st);
	sqlite3_free(msg);
	registry_close(reg);
	return r;
}

void registry_close(struct registry *r)
{
	int i;

	if (r == NULL)
		return;
	for (i = 0; i < ST_COUNT; i++)
		sqlite3_finalize(r->st[i]);
	sqlite3_close(r->db);
	pthread_mutex_destroy(&r->mu);
	free(r);
}

int registry_get(struct registry *r, const char *id, struct reg_cred *out)
{
	sqlite3_stmt *st;
	int rc, ret = REG_ERR_INTERNAL;

	memset(out, 0, sizeof(*out));
	if (r == NULL || !cred_valid_id(id))
		return REG_ERR_BAD_INPUT;
	lock(r);
	st = r->st[ST_GET];
	if (bind_text(st, 1, id) != REG_OK)
		goto out;
	rc = sqlite3_step(st);
	if (rc == SQLITE_DONE)
		ret = REG_ERR_NOT_FOUND;
	else if (rc == SQLITE_ROW)
		ret = read_row(st, out);
out:
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	unlock(r);
	return ret;
}

static int run_in_tx(struct registry *r, int ret)
{
	if (ret == REG_OK)
		ret = exec_stmt(r->st[ST_COMMIT]);
	if (ret != REG_OK)
		exec_stmt(r->st[ST_ROLLBACK]);
	return ret;
}

static int cred_ok(const struct reg_cred *c)
{
	if (c == NULL || !cred_valid_id(c->id) || !cred_valid_user(c->owner) ||
	    !valid_uri(c->key_uri) || !valid_pem(c->device_key_pem) || !valid_pem(c->chain_pem))
		return 0;
	if ((c->cls != POL_CLASS_CITIZEN && c->cls != POL_CLASS_SEAL) ||
	    pol_class_name((enum pol_class)c->cls) == NULL || reg_status_name(c->status) == NULL)
		return 0;
	return c->store == 0 || store_name(c->store) != NULL;
}

/* One credential's inserts, inside the caller's transaction (lock held). */
static int add_locked(struct registry *r, const struct reg_cred *c)
{
	sqlite3_stmt *st = r->st[ST_ADD];
	int ret;

	if (bind_text(st, 1, c->id) != REG_OK || bind_text(st, 2, c->owner) != REG_OK ||
	    bind_text(st, 3, pol_class_name((enum pol_class)c->cls)) != REG_OK ||
	    bind_text(st, 4, reg_status_name(c->status)) != REG_OK ||
	    bind_text(st, 5, c->key_uri) != REG_OK ||
	    bind_text(st, 6, c->device_key_pem) != REG_OK ||
	    sqlite3_bind_int64(st, 7, c->created != 0 ? c->created : (int64_t)time(NULL)) !=
	        SQLITE_OK ||
	    bind_text(st, 8, store_name(c->store != 0 ? c->store : REG_STORE_TOKEN)) != REG_OK) {
		sqlite3_reset(st);
		sqlite3_clear_bindings(st);
		return REG_ERR_INTERNAL;
	}
	ret = exec_stmt(st);
	if (ret == REG_OK && c->chain_pem != NULL) {
		st = r->st[ST_CHAIN_PUT];
		if (bind_text(st, 1, c->id) != REG_OK || bind_text(st, 2, c->chain_pem) != REG_OK) {
			sqlite3_reset(st);
			sqlite3_clear_bindings(st);
			ret = REG_ERR_INTERNAL;
		} else {
			ret = exec_stmt(st);
		}
	}
	return ret;
}

int registry_add(struct registry *r, const struct reg_cred *c)
{
	int ret = REG_ERR_INTERNAL;

	if (r == NULL || !cred_ok(c))
		return REG_ERR_BAD_INPUT;
	lock(r);
	if (exec_stmt(r->st[ST_BEGIN]) == REG_OK)
		ret = run_in_tx(r, add_locked(r, c));
	unlock(r);
	return ret;
}

int registry_add_each(struct registry *r, int (*next)(void *arg, struct reg_cred *c), void *arg,
                      size_t *bad)
{
	struct reg_cred c;
	size_t i = 0;
	int ret = REG_ERR_INTERNAL, more;

	*bad = 0;
	if (r == NULL || next == NULL)
		return REG_ERR_BAD_INPUT;
	lock(r);
	if (exec_stmt(r->st[ST_BEGIN]) != REG_OK)
		goto out;
	for (ret = REG_OK; ret == REG_OK; i++) {
		memset(&c, 0, sizeof(c));
		if ((more = next(arg, &c)) <= 0) {
			ret = more == 0 ? REG_OK : REG_ERR_BAD_INPUT;
			reg_cred_clear(&c);
			break;
		}
		ret = cred_ok(&c) ? add_locked(r, &c) : REG_ERR_BAD_INPUT;
		reg_cred_clear(&c);
		*bad = i;
	}
	ret = run_in_tx(r, ret);
out:
	unlock(r);
	return ret;
}

int registry_set_status(struct registry *r, const char *id, enum reg_status s)
{
	const char *status = reg_status_name(s);
	sqlite3_stmt *st;
	int ret = REG_ERR_INTERNAL;

	if (r == NULL || !cred_valid_id(id) || status == NULL)
		return REG_ERR_BAD_INPUT;
	lock(r);
	st = r->st[ST_SET_STATUS];
	if (bind_text(st, 1, id) != REG_OK || bind_text(st, 2, status) != REG_OK) {
		sqlite3_reset(st);
		sqlite3_clear_bindings(st);
		goto out;
	}
	ret = exec_stmt(st);
	if (ret == REG_OK && sqlite3_changes(r->db) == 0)
		ret = REG_ERR_NOT_FOUND;
out:
	unlock(r);
	return ret;
}

int registry_set_chain(struct registry *r, const char *id, const char *chain_pem)
{
	sqlite3_stmt *st;
	int ret = REG_ERR_INTERNAL;

	if (r == NULL || !cred_valid_id(id) || !valid_pem(chain_pem))
		return REG_ERR_BAD_INPUT;
	lock(r);
	st = r->st[chain_pem != NULL ? ST_CHAIN_PUT : ST_CHAIN_DEL];
	if (bind_text(st, 1, id) != REG_OK ||
	    (chain_pem != NULL && bind_text(st, 2, chain_pem) != REG_OK)) {
		sqlite3_reset(st);
		sqlite3_clear_bindings(st);
		goto out;
	}
	ret = exec_stmt(st);
out:
	unlock(r);
	return ret;
}

int registry_remove(struct registry *r, const char *id)
{
	int ret = REG_ERR_INTERNAL, changed = 0;

	if (r == NULL || !cred_valid_id(id))
		return REG_ERR_BAD_INPUT;
	lock(r);
	if (exec_stmt(r->st[ST_BEGIN]) != REG_OK)
		goto out;
	if (bind_text(r->st[ST_REMOVE], 1, id) != REG_OK || exec_stmt(r->st[ST_REMOVE]) != REG_OK) {
		run_in_tx(r, REG_ERR_INTERNAL);
		goto out;
	}
	changed += sqlite3_changes(r->db);
	if (bind_text(r->st[ST_CHAIN_DEL], 1, id) != REG_OK ||
	    exec_stmt(r->st[ST_CHAIN_DEL]) != REG_OK) {
		run_in_tx(r, REG_ERR_INTERNAL);
		goto out;
	}
	changed += sqlite3_changes(r->db);
	if ((ret = run_in_tx(r, REG_OK)) == REG_OK && changed == 0)
		ret = REG_ERR_NOT_FOUND;
out:
	unlock(r);
	return ret;
}

/* Fetch up to REG_PAGE credentials after `after` (exclusive) into page; *n gets the count. */
static int fetch_page(struct registry *r, const char *owner, const char *after,
                      struct reg_cred *page, size_t *n)
{
	sqlite3_stmt *st;
	int rc, ret = REG_ERR_INTERNAL;

	*n = 0;
	lock(r);
	st = r->st[owner != NULL ? ST_PAGE_OWNER : ST_PAGE];
	if (bind_text(st, 1, after) != REG_OK || sqlite3_bind_int(st, 2, REG_PAGE) != SQLITE_OK ||
	    (owner != NULL && bind_text(st, 3, owner) != REG_OK))
		goto out;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		if (*n >= REG_PAGE || read_row(st, &page[*n]) != REG_OK)
			goto out;
		(*n)++;
	}
	if (rc == SQLITE_DONE)
		ret = REG_OK;
out:
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	unlock(r);
	return ret;
}

int registry_foreach(struct registry *r, const char *owner,
                     int (*fn)(const struct reg_cred *c, void *arg), void *arg)
{
	return registry_foreach_after(r, owner, NULL, fn, arg);
}

int registry_foreach_after(struct registry *r, const char *owner, const char *from,
                           int (*fn)(const struct reg_cred *c, void *arg), void *arg)
{
	struct reg_cred *page = NULL;
	char after[CRED_MAX_ID + 1] = "";
	size_t i, n = 0;
	int ret = REG_ERR_INTERNAL, stop = 0;

	if (r == NULL || fn == NULL || (owner != NULL && !cred_valid_user(owner)))
		return REG_ERR_BAD_INPUT;
	if (from != NULL && from[0] != '\0') {
		if (!cred_valid_id(from))
			return REG_ERR_BAD_INPUT;
		memcpy(after, from, strlen(from) + 1);
	}
	if ((page = calloc(REG_PAGE, sizeof(*page))) == NULL)
		return REG_ERR_INTERNAL;
	/* Page by key so the callback runs without the lock (it may call the registry) and
	 * memory stays bounded however many credentials there are. */
	do {
		if (fetch_page(r, owner, after, page, &n) != REG_OK)
			goto out;
		for (i = 0; i < n && !stop; i++)
			stop = fn(&page[i], arg) != 0;
		if (n > 0)
			memcpy(after, page[n - 1].id, sizeof(after));
		for (i = 0; i < n; i++)
			reg_cred_clear(&page[i]);
	} while (!stop && n == REG_PAGE);
	n = 0;
	ret = REG_OK;
out:
	for (i = 0; i < n; i++)
		reg_cred_clear(&page[i]);
	free(page);
	return ret;
}

/* ---- wrapped keys, certificates, settings ---- */

static int bind_blob(sqlite3_stmt *st, int idx, const void *b, size_t n)
{
	if (b == NULL)
		return sqlite3_bind_null(st, idx) == SQLITE_OK ? REG_OK : REG_ERR_INTERNAL;
	return sqlite3_bind_blob(st, idx, b, (int)n, SQLITE_STATIC) == SQLITE_OK ? REG_OK
	                                                                         : REG_ERR_INTERNAL;
}

static void done(sqlite3_stmt *st)
{
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
}

int registry_wkey_get(struct registry *r, const char *id, struct reg_wkey *out)
{
	sqlite3_stmt *st;
	int rc, ret = REG_ERR_INTERNAL;

	memset(out, 0, sizeof(*out));
	if (r == NULL || !cred_valid_id(id))
		return REG_ERR_BAD_INPUT;
	lock(r);
	st = r->st[ST_WKEY_GET];
	if (bind_text(st, 1, id) == REG_OK) {
		rc = sqlite3_step(st);
		if (rc == SQLITE_DONE)
			ret = REG_ERR_NOT_FOUND;
		else if (rc == SQLITE_ROW)
			ret = read_wkey(st, 0, out) == REG_OK && out->present ? REG_OK
			                                                      : REG_ERR_INTERNAL;
	}
	done(st);
	unlock(r);
	return ret;
}

static int wkey_ok(const char *id, const struct reg_wkey *w)
{
	return cred_valid_id(id) && w->blob != NULL && w->blob_len > 0 &&
	       w->blob_len <= REG_MAX_BLOB && w->pub != NULL && w->pub_len > 0 &&
	       w->pub_len <= REG_MAX_SPKI && w->binding != NULL && w->binding_len > 0 &&
	       w->binding_len <= REG_MAX_BINDING;
}

int registry_wkey_put_many(struct registry *r, const char *const *ids, const struct reg_wkey *w,
                           size_t n)
{
	sqlite3_stmt *st;
	size_t i;
	int ret = REG_ERR_INTERNAL;

	if (r == NULL)
		return REG_ERR_BAD_INPUT;
	for (i = 0; i < n; i++)
		if (!wkey_ok(ids[i], &w[i]))
			return REG_ERR_BAD_INPUT;
	lock(r);
	if (exec_stmt(r->st[ST_BEGIN]) != REG_OK)
		goto out;
	st = r->st[ST_WKEY_PUT];
	for (i = 0, ret = REG_OK; i < n && ret == REG_OK; i++) {
		if (bind_text(st, 1, ids[i]) != REG_OK ||
		    bind_blob(st, 2, w[i].kek, REG_KEK_ID_LEN) != REG_OK ||
		    bind_blob(st, 3, w[i].blob, w[i].blob_len) != REG_OK ||
		    bind_blob(st, 4, w[i].pub, w[i].pub_len) != REG_OK ||
		    bind_blob(st, 5, w[i].binding, w[i].binding_len) != REG_OK ||
		    sqlite3_bind_int64(st, 6,
		                       w[i].created != 0 ? w[i].created : (int64_t)time(NULL)) !=
		        SQLITE_OK) {
			done(st);
			ret = REG_ERR_INTERNAL;
		} else {
			ret = exec_stmt(st);
		}
	}
	ret = run_in_tx(r, ret);
out:
	unlock(r);
	return ret;
}

int registry_wkey_rewrap(struct registry *r, const char *id,
                         const unsigned char old_kek[REG_KEK_ID_LEN],
                         const unsigned char new_kek[REG_KEK_ID_LEN], const unsigned char *blob,
                         size_t blob_len)
{
	sqlite3_stmt *st;
	int ret = REG_ERR_INTERNAL;

	if (r == NULL || !cred_valid_id(id) || blob == NULL || blob_len == 0 ||
	    blob_len > REG_MAX_BLOB)
		return REG_ERR_BAD_INPUT;
	lock(r);
	st = r->st[ST_WKEY_REWRAP];
	if (bind_text(st, 1, id) == REG_OK && bind_blob(st, 2, old_kek, REG_KEK_ID_LEN) == REG_OK &&
	    bind_blob(st, 3, new_kek, REG_KEK_ID_LEN) == REG_OK &&
	    bind_blob(st, 4, blob, blob_len) == REG_OK) {
		ret = exec_stmt(st);
		if (ret == REG_OK && sqlite3_changes(r->db) == 0)
			ret = REG_ERR_NOT_FOUND;
	} else {
		done(st);
	}
	unlock(r);
	return ret;
}

int registry_wkey_remove(struct registry *r, const char *id)
{
	int ret = REG_ERR_INTERNAL, changed = 0;

	if (r == NULL || !cred_valid_id(id))
		return REG_ERR_BAD_INPUT;
	lock(r);
	if (exec_stmt(r->st[ST_BEGIN]) != REG_OK)
		goto out;
	if (bind_text(r->st[ST_WKEY_DEL], 1, id) != REG_OK ||
	    exec_stmt(r->st[ST_WKEY_DEL]) != REG_OK) {
		run_in_tx(r, REG_ERR_INTERNAL);
		goto out;
	}
	changed = sqlite3_changes(r->db);
	if (bind_text(r->st[ST_CERT_DEL], 1, id) != REG_OK ||
	    exec_stmt(r->st[ST_CERT_DEL]) != REG_OK) {
		run_in_tx(r, REG_ERR_INTERNAL);
		goto out;
	}
	if ((ret = run_in_tx(r, REG_OK)) == REG_OK && changed == 0)
		ret = REG_ERR_NOT_FOUND;
out:
	unlock(r);
	return ret;
}

int registry_wkey_ids(struct registry *r, const unsigned char *not_kek, const char *after,
                      size_t max, char **ids, size_t *n)
{
	sqlite3_stmt *st;
	int rc, ret = REG_ERR_INTERNAL;

	*n = 0;
	if (r == NULL || max == 0 || max > 100000)
		return REG_ERR_BAD_INPUT;
	lock(r);
	st = r->st[not_kek != NULL ? ST_WKEY_IDS : ST_WKEY_IDS_ALL];
	if (bind_text(st, 1, after != NULL ? after : "") != REG_OK ||
	    sqlite3_bind_int64(st, 2, (int64_t)max) != SQLITE_OK ||
	    (not_kek != NULL && bind_blob(st, 3, not_kek, REG_KEK_ID_LEN) != REG_OK))
		goto out;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		const unsigned char *t = sqlite3_column_text(st, 0);
		if (t == NULL || *n >= max || (ids[*n] = strdup((const char *)t)) == NULL)
			goto out;
		(*n)++;
	}
	if (rc == SQLITE_DONE)
		ret = REG_OK;
out:
	if (ret != REG_OK) {
		while (*n > 0)
			free(ids[--*n]);
	}
	done(st);
	unlock(r);
	return ret;
}

int registry_wkey_count(struct registry *r, const unsigned char *kek, const unsigned char *not_kek,
                        uint64_t *n)
{
	sqlite3_stmt *st;
	int ret = REG_ERR_INTERNAL;

	*n = 0;
	if (r == NULL)
		return REG_ERR_BAD_INPUT;
	lock(r);
	st = r->st[kek != NULL       ? ST_WKEY_COUNT_KEK
	           : not_kek != NULL ? ST_WKEY_COUNT_NOT
	                             : ST_WKEY_COUNT_ALL];
	if ((kek != NULL || not_kek != NULL) &&
	    bind_blob(st, 1, kek != NULL ? kek : not_kek, REG_KEK_ID_LEN) != REG_OK)
		goto out;
	if (sqlite3_step(st) == SQLITE_ROW) {
		*n = (uint64_t)sqlite3_column_int64(st, 0);
		ret = REG_OK;
	}
out:
	done(st);
	unlock(r);
	return ret;
}

int registry_cert_put(struct registry *r, const char *id, const unsigned char *der, size_t len)
{
	sqlite3_stmt *st;
	int ret = REG_ERR_INTERNAL;

	if (r == NULL || !cred_valid_id(id) || (der != NULL && (len == 0 || len > REG_MAX_CERT)))
		return REG_ERR_BAD_INPUT;
	lock(r);
	st = r->st[der != NULL ? ST_CERT_PUT : ST_CERT_DEL];
	if (bind_text(st, 1, id) == REG_OK && (der == NULL || bind_blob(st, 2, der, len) == REG_OK))
		ret = exec_stmt(st);
	else
		done(st);
	unlock(r);
	return ret;
}

uint64_t registry_full_scans(struct registry *r)
{
	uint64_t n = 0;
	int i;

	if (r == NULL)
		return 0;
	lock(r);
	for (i = 0; i < ST_COUNT; i++)
		if (r->st[i] != NULL && i != ST_WKEY_COUNT_NOT && i != ST_WKEY_COUNT_ALL &&
		    i != ST_WKEY_COUNT_KEK)
			n += (uint64_t)sqlite3_stmt_status(r->st[i],
			                                   SQLITE_STMTSTATUS_FULLSCAN_STEP, 0);
	unlock(r);
	return n;
}

int registry_cert_put_many(struct registry *r, const struct reg_cert_put *v, size_t n)
{
	sqlite3_stmt *st;
	size_t i;
	int ret = REG_ERR_INTERNAL;

	if (r == NULL)
		return REG_ERR_BAD_INPUT;
	for (i = 0; i < n; i++)
		if (!cred_valid_id(v[i].id) || v[i].der == NULL || v[i].len == 0 ||
		    v[i].len > REG_MAX_CERT || !valid_pem(v[i].chain_pem))
			return REG_ERR_BAD_INPUT;
	lock(r);
	if (exec_stmt(r->st[ST_BEGIN]) != REG_OK)
		goto out;
	for (i = 0, ret = REG_OK; i < n && ret == REG_OK; i++) {
		st = r->st[ST_CERT_PUT];
		if (bind_text(st, 1, v[i].id) != REG_OK ||
		    bind_blob(st, 2, v[i].der, v[i].len) != REG_OK) {
			done(st);
			ret = REG_ERR_INTERNAL;
			break;
		}
		if ((ret = exec_stmt(st)) != REG_OK || v[i].chain_pem == NULL)
			continue;
		st = r->st[ST_CHAIN_PUT];
		if (bind_text(st, 1, v[i].id) != REG_OK ||
		    bind_text(st, 2, v[i].chain_pem) != REG_OK) {
			done(st);
			ret = REG_ERR_INTERNAL;
		} else {
			ret = exec_stmt(st);
		}
	}
	ret = run_in_tx(r, ret);
out:
	unlock(r);
	return ret;
}

int registry_setting_get(struct registry *r, const char *name, unsigned char *val, size_t max,
                         size_t *len)
{
	sqlite3_stmt *st;
	int rc, n, ret = REG_ERR_INTERNAL;

	*len = 0;
	if (r == NULL || name == NULL)
		return REG_ERR_BAD_INPUT;
	lock(r);
	st = r->st[ST_SET_GET];
	if (bind_text(st, 1, name) != REG_OK)
		goto out;
	rc = sqlite3_step(st);
	if (rc == SQLITE_DONE) {
		ret = REG_ERR_NOT_FOUND;
	} else if (rc == SQLITE_ROW) {
		n = sqlite3_column_bytes(st, 0);
		if (n >= 0 && (size_t)n <= max) {
			memcpy(val, sqlite3_column_blob(st, 0), (size_t)n);
			*len = (size_t)n;
			ret = REG_OK;
		}
	}
out:
	done(st);
	unlock(r);
	return ret;
}

int registry_setting_put(struct registry *r, const char *name, const unsigned char *val, size_t len)
{
	sqlite3_stmt *st;
	int ret = REG_ERR_INTERNAL;

	if (r == NULL || name == NULL || (val != NULL && len > 256))
		return REG_ERR_BAD_INPUT;
	lock(r);
	st = r->st[val != NULL ? ST_SET_PUT : ST_SET_DEL];
	if (bind_text(st, 1, name) == REG_OK &&
	    (val == NULL || bind_blob(st, 2, val, len) == REG_OK))
		ret = exec_stmt(st);
	else
		done(st);
	unlock(r);
	return ret;
}
