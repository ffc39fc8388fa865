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
};
#define REG_SCHEMA_VERSION ((int)(sizeof(migrations) / sizeof(migrations[0])))

#define REG_COLUMNS                                                                                \
	"c.id, c.owner, c.class, c.status, c.key_uri, c.device_key_pem, c.created, ch.pem "        \
	"FROM credentials c LEFT JOIN chains ch ON ch.id = c.id "

enum {
	ST_GET,
	ST_PAGE,
	ST_PAGE_OWNER,
	ST_ADD,
	ST_SET_STATUS,
	ST_CHAIN_PUT,
	ST_CHAIN_DEL,
	ST_REMOVE,
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
               "created) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
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

void reg_cred_clear(struct reg_cred *c)
{
	if (c == NULL)
		return;
	free(c->chain_pem);
	free(c->device_key_pem);
	memset(c, 0, sizeof(*c));
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

int registry_add(struct registry *r, const struct reg_cred *c)
{
	const char *cls, *status;
	sqlite3_stmt *st;
	int ret = REG_ERR_INTERNAL;

	if (r == NULL || c == NULL || !cred_valid_id(c->id) || !cred_valid_user(c->owner) ||
	    !valid_uri(c->key_uri) || !valid_pem(c->device_key_pem) || !valid_pem(c->chain_pem))
		return REG_ERR_BAD_INPUT;
	if ((c->cls != POL_CLASS_CITIZEN && c->cls != POL_CLASS_SEAL) ||
	    (cls = pol_class_name((enum pol_class)c->cls)) == NULL)
		return REG_ERR_BAD_INPUT;
	if ((status = reg_status_name(c->status)) == NULL)
		return REG_ERR_BAD_INPUT;
	lock(r);
	if (exec_stmt(r->st[ST_BEGIN]) != REG_OK)
		goto out;
	st = r->st[ST_ADD];
	if (bind_text(st, 1, c->id) != REG_OK || bind_text(st, 2, c->owner) != REG_OK ||
	    bind_text(st, 3, cls) != REG_OK || bind_text(st, 4, status) != REG_OK ||
	    bind_text(st, 5, c->key_uri) != REG_OK ||
	    bind_text(st, 6, c->device_key_pem) != REG_OK ||
	    sqlite3_bind_int64(st, 7, c->created != 0 ? c->created : (int64_t)time(NULL)) !=
	        SQLITE_OK) {
		sqlite3_reset(st);
		sqlite3_clear_bindings(st);
		ret = run_in_tx(r, REG_ERR_INTERNAL);
		goto out;
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
	struct reg_cred *page = NULL;
	char after[CRED_MAX_ID + 1] = "";
	size_t i, n = 0;
	int ret = REG_ERR_INTERNAL, stop = 0;

	if (r == NULL || fn == NULL || (owner != NULL && !cred_valid_user(owner)))
		return REG_ERR_BAD_INPUT;
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
