/* The ledger: hash chain, group commit, quota and jti conditions, failure when the database
 * cannot be written, tamper and truncation detection, export. Each test uses its own state
 * directory under $TMPDIR. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <sqlite3.h>

#include "signer/core/ledger.h"

#define THREADS 16

struct fixture {
	char dir[256];
	EVP_PKEY *key;   /* software audit key */
	EVP_PKEY *other; /* a key that did not sign */
};

static int sw_sign(void *arg, const uint8_t head[32], uint8_t *sig, size_t *siglen)
{
	EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new((EVP_PKEY *)arg, NULL);
	int ok;

	/* As the token does: ECDSA over the 32-byte head taken as a SHA-256 digest. */
	ok = ctx != NULL && EVP_PKEY_sign_init(ctx) == 1 &&
	     EVP_PKEY_CTX_set_signature_md(ctx, EVP_sha256()) == 1 &&
	     EVP_PKEY_sign(ctx, sig, siglen, head, 32) == 1;
	EVP_PKEY_CTX_free(ctx);
	return ok ? 0 : -1;
}

static int fail_sign(void *arg, const uint8_t head[32], uint8_t *sig, size_t *siglen)
{
	return -1;
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	const char *tmp = getenv("TMPDIR");

	assert_non_null(f);
	snprintf(f->dir, sizeof(f->dir), "%s/ledger-test.XXXXXX", tmp != NULL ? tmp : "/tmp");
	assert_non_null(mkdtemp(f->dir));
	assert_non_null(f->key = EVP_EC_gen("P-256"));
	assert_non_null(f->other = EVP_EC_gen("P-256"));
	*state = f;
	return 0;
}

static struct ledger *open_ledger_opts(struct fixture *f, const struct ledger_opts *o)
{
	struct ledger *l = NULL;
	char err[256] = "";

	if (ledger_open(f->dir, o, &l, err, sizeof(err)) != LEDGER_OK)
		fail_msg("ledger_open: %s", err);
	return l;
}

static struct ledger *open_ledger(struct fixture *f, int direct, ledger_sign_fn sign,
                                  unsigned every)
{
	struct ledger_opts o;

	memset(&o, 0, sizeof(o));
	o.direct = direct;
	o.sign = sign;
	o.sign_arg = f->key;
	o.checkpoint_every = every;
	return open_ledger_opts(f, &o);
}

/* A writer-thread ledger whose requests wait at most timeout_ms for their record. */
static struct ledger *open_ledger_timeout(struct fixture *f, unsigned timeout_ms)
{
	struct ledger_opts o;

	memset(&o, 0, sizeof(o));
	o.timeout_ms = timeout_ms;
	return open_ledger_opts(f, &o);
}

static int64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A gate that, while closed, holds whoever passes it until it opens; hung tells that someone
 * is held. */
struct gate {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int closed, hung;
};

static void gate_pass(struct gate *g)
{
	pthread_mutex_lock(&g->mu);
	while (g->closed) {
		g->hung = 1;
		pthread_cond_wait(&g->cv, &g->mu);
	}
	pthread_mutex_unlock(&g->mu);
}

static void gate_close(struct gate *g, int on)
{
	pthread_mutex_lock(&g->mu);
	g->closed = on;
	g->hung = 0;
	pthread_cond_broadcast(&g->cv);
	pthread_mutex_unlock(&g->mu);
}

/* Wait (up to 5 s) until someone is held at g. */
static void gate_wait_hung(struct gate *g)
{
	int hung = 0;

	for (int i = 0; i < 500 && !hung; i++) {
		pthread_mutex_lock(&g->mu);
		hung = g->hung;
		pthread_mutex_unlock(&g->mu);
		if (!hung)
			usleep(10 * 1000);
	}
	assert_true(hung);
}

/* A disk that stops answering: while fsync_gate is closed, SQLite's fsync and fdatasync (which
 * resolve to these definitions, the executable's) wait until it opens. */
static struct gate fsync_gate = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

/* A disk that fails the next fsync (EIO) while fsync_fails is set. */
static int fsync_fails;

static int fsync_fault(void)
{
	if (!__atomic_exchange_n(&fsync_fails, 0, __ATOMIC_SEQ_CST))
		return 0;
	errno = EIO;
	return -1;
}

int fdatasync(int fd)
{
	gate_pass(&fsync_gate);
	if (fsync_fault() != 0)
		return -1;
	return (int)syscall(SYS_fdatasync, fd);
}

int fsync(int fd)
{
	gate_pass(&fsync_gate);
	if (fsync_fault() != 0)
		return -1;
	return (int)syscall(SYS_fsync, fd);
}

/* An audit key that stops answering while sign_gate is closed. */
static struct gate sign_gate = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

static int gated_sign(void *arg, const uint8_t head[32], uint8_t *sig, size_t *siglen)
{
	gate_pass(&sign_gate);
	return sw_sign(arg, head, sig, siglen);
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	char cmd[512];

	/* A test that failed with a gate closed must not hold the next one's writer. */
	gate_close(&fsync_gate, 0);
	gate_close(&sign_gate, 0);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
	if (system(cmd) != 0)
		fprintf(stderr, "cannot remove %s\n", f->dir);
	EVP_PKEY_free(f->key);
	EVP_PKEY_free(f->other);
	free(f);
	return 0;
}

static void make_rec(struct audit_rec *r, unsigned i)
{
	memset(r, 0, sizeof(*r));
	r->time_ms = 1700000000000LL + i;
	snprintf(r->caller, sizeof(r->caller), "renewal");
	r->uid = 1000;
	r->gid = 1000;
	r->pid = 4242;
	snprintf(r->op, sizeof(r->op), "signatures/signHash");
	snprintf(r->cred, sizeof(r->cred), "cred-%u", i % 3);
	snprintf(r->owner, sizeof(r->owner), "citizen-%u", i % 3);
	snprintf(r->purpose, sizeof(r->purpose), "vehicle-licence-renewal");
	snprintf(r->halg, sizeof(r->halg), "sha256");
	r->nhashes = 2;
	r->hash_len = 32;
	memset(r->hashes[0], (int)(i & 0xff), 32);
	memset(r->hashes[1], 0xa5, 32);
	snprintf(r->decision, sizeof(r->decision), "allow");
	snprintf(r->detail, sizeof(r->detail), "record %u", i);
	r->nsigs = 2;
	memset(r->sig_sha256[0], 0x11, 32);
	memset(r->sig_sha256[1], (int)(i & 0xff), 32);
}

static void append_n(struct ledger *l, unsigned n)
{
	struct audit_rec *r = malloc(sizeof(*r));
	unsigned i;

	assert_non_null(r);
	for (i = 0; i < n; i++) {
		make_rec(r, i);
		assert_int_equal(ledger_append(l, r), LEDGER_OK);
	}
	free(r);
}

/* Verify; returns the verify result and fills the counts. */
static int verify(struct fixture *f, EVP_PKEY *key, uint64_t *records, uint64_t *ckpts,
                  uint64_t *bad, char *why, size_t whylen)
{
	return ledger_verify(f->dir, key, records, ckpts, bad, why, whylen);
}

static void expect_intact(struct fixture *f, uint64_t want_records)
{
	uint64_t records, ckpts, bad;
	char why[512];
	int r = verify(f, f->key, &records, &ckpts, &bad, why, sizeof(why));

	if (r != 0)
		fail_msg("verify failed at %llu: %s", (unsigned long long)bad, why);
	assert_int_equal(records, want_records);
}

static void expect_bad(struct fixture *f, uint64_t want_bad, const char *want_why)
{
	uint64_t records, ckpts, bad;
	char why[512];
	int r = verify(f, f->key, &records, &ckpts, &bad, why, sizeof(why));

	if (r == 0)
		fail_msg("verify passed, expected a failure at %llu", (unsigned long long)want_bad);
	if (bad != want_bad)
		fail_msg("verify failed at %llu (%s), expected %llu", (unsigned long long)bad, why,
		         (unsigned long long)want_bad);
	if (strstr(why, want_why) == NULL)
		fail_msg("why \"%s\" does not mention \"%s\"", why, want_why);
}

static void sql(struct fixture *f, const char *stmt)
{
	char path[512], *msg = NULL;
	sqlite3 *db;

	snprintf(path, sizeof(path), "%s/iamsign.db", f->dir);
	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	if (sqlite3_exec(db, stmt, NULL, NULL, &msg) != SQLITE_OK)
		fail_msg("%s: %s", stmt, msg);
	sqlite3_close(db);
}

/* The ledger.unrecorded records: how many there are, and the answers they note in all. Each
 * is checked for the fields every such record carries. */
static uint64_t gaps_noted(struct fixture *f, unsigned *nrecords)
{
	char path[512];
	sqlite3 *db;
	sqlite3_stmt *st;
	uint64_t sum = 0;
	unsigned long long n;
	const char *detail;

	*nrecords = 0;
	snprintf(path, sizeof(path), "%s/iamsign.db", f->dir);
	assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
	assert_int_equal(
	    sqlite3_prepare_v2(db,
	                       "SELECT caller, decision, reason, detail, pid FROM audit "
	                       "WHERE op = 'ledger.unrecorded' ORDER BY seq",
	                       -1, &st, NULL),
	    SQLITE_OK);
	while (sqlite3_step(st) == SQLITE_ROW) {
		assert_string_equal((const char *)sqlite3_column_text(st, 0), "iamsignd");
		assert_string_equal((const char *)sqlite3_column_text(st, 1), "deny");
		assert_string_equal((const char *)sqlite3_column_text(st, 2), "ledger_unavailable");
		detail = (const char *)sqlite3_column_text(st, 3);
		if (sscanf(detail, "%llu answer(s) 503 ledger_unavailable without a record", &n) !=
		        1 ||
		    strstr(detail, " from 20") == NULL || strstr(detail, "Z to 20") == NULL)
			fail_msg("detail: %s", detail);
		assert_int_equal(sqlite3_column_int64(st, 4), getpid());
		sum += n;
		(*nrecords)++;
	}
	sqlite3_finalize(st);
	sqlite3_close(db);
	return sum;
}

static int64_t count_rows(struct fixture *f, const char *where)
{
	char path[512], q[256];
	sqlite3 *db;
	sqlite3_stmt *st;
	int64_t n = -1;

	snprintf(path, sizeof(path), "%s/iamsign.db", f->dir);
	snprintf(q, sizeof(q), "SELECT COUNT(*) FROM audit WHERE %s", where);
	assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_prepare_v2(db, q, -1, &st, NULL), SQLITE_OK);
	if (sqlite3_step(st) == SQLITE_ROW)
		n = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	sqlite3_close(db);
	return n;
}

/* Exactly one ledger.unrecorded record, at seq, noting n answers. */
static void expect_one_gap(struct fixture *f, unsigned seq, uint64_t n)
{
	char where[64];
	unsigned ngaps;

	assert_int_equal(gaps_noted(f, &ngaps), n);
	assert_int_equal(ngaps, 1);
	snprintf(where, sizeof(where), "seq = %u AND op = 'ledger.unrecorded'", seq);
	assert_int_equal(count_rows(f, where), 1);
}

/* ---- chain ---- */

static void test_chain_many(void **state)
{
	struct fixture *f = *state;
	struct ledger *l = open_ledger(f, 0, NULL, 0);
	struct audit_rec r;

	append_n(l, 500);
	make_rec(&r, 500);
	assert_int_equal(ledger_append(l, &r), LEDGER_OK);
	assert_int_equal(r.seq, 501);
	ledger_close(l);
	expect_intact(f, 501);

	/* Another process (direct mode) continues the same chain. */
	l = open_ledger(f, 1, NULL, 0);
	append_n(l, 10);
	ledger_close(l);
	expect_intact(f, 511);
}

static void test_bad_input(void **state)
{
	struct fixture *f = *state;
	struct ledger *l = open_ledger(f, 1, NULL, 0);
	struct audit_rec r;

	make_rec(&r, 0);
	snprintf(r.decision, sizeof(r.decision), "maybe");
	assert_int_equal(ledger_append(l, &r), LEDGER_ERR_BAD_INPUT);
	make_rec(&r, 0);
	r.nhashes = LEDGER_MAX_HASHES + 1;
	assert_int_equal(ledger_append(l, &r), LEDGER_ERR_BAD_INPUT);
	make_rec(&r, 0);
	memset(r.detail, 'x', sizeof(r.detail)); /* not terminated */
	assert_int_equal(ledger_append(l, &r), LEDGER_ERR_BAD_INPUT);
	make_rec(&r, 0);
	r.op[0] = '\0';
	assert_int_equal(ledger_append(l, &r), LEDGER_ERR_BAD_INPUT);
	/* time 0: filled in by the ledger */
	make_rec(&r, 0);
	r.time_ms = 0;
	assert_int_equal(ledger_append(l, &r), LEDGER_OK);
	assert_true(r.time_ms > 1700000000000LL);
	ledger_close(l);
	expect_intact(f, 1);
}

/* ---- group commit ---- */

struct worker {
	struct ledger *l;
	unsigned id, n;
	int ok, quota_fail, replay_fail, other;
	uint64_t *seqs;
	uint32_t quota_max;
	const char *jti;
	uint32_t jti_num;
	/* ledger_expect around each append, as the daemon's signing path does, with a pause
	 * between the two where the daemon signs: the commit delay then finds announced records
	 * still on their way and takes them in as they come. */
	int announce;
};

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct audit_rec *r = malloc(sizeof(*r));
	unsigned i;
	int rc;

	if (r == NULL)
		return NULL;
	for (i = 0; i < w->n; i++) {
		make_rec(r, w->id * 1000 + i);
		if (w->quota_max > 0) {
			snprintf(r->cred, sizeof(r->cred), "quota-cred");
			r->quota_add = 1;
			r->quota_day = 20000;
			r->quota_max = w->quota_max;
		}
		if (w->jti != NULL) {
			snprintf(r->jti, sizeof(r->jti), "%s", w->jti);
			r->jti_add = 1;
			r->jti_num = w->jti_num;
			r->jti_exp = 1900000000;
		}
		if (w->announce) {
			struct timespec sign = {0, 200 * 1000};

			ledger_expect(w->l, 1);
			nanosleep(&sign, NULL);
		}
		rc = w->announce ? ledger_append_expected(w->l, r) : ledger_append(w->l, r);
		if (rc == LEDGER_OK) {
			w->ok++;
		} else if (rc == LEDGER_ERR_QUOTA) {
			w->quota_fail++;
			if (strcmp(r->decision, "deny") != 0 ||
			    strcmp(r->reason, "quota_exceeded") != 0 || r->nsigs != 0)
				w->other++;
		} else if (rc == LEDGER_ERR_REPLAY) {
			w->replay_fail++;
		} else {
			w->other++;
		}
		if (w->seqs != NULL)
			w->seqs[i] = r->seq;
	}
	free(r);
	return NULL;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static void run_workers(struct worker *w, unsigned n)
{
	pthread_t t[THREADS];
	unsigned i;

	for (i = 0; i < n; i++)
		assert_int_equal(pthread_create(&t[i], NULL, worker_main, &w[i]), 0);
	for (i = 0; i < n; i++)
		pthread_join(t[i], NULL);
}

static void group_commit(void **state, int announce)
{
	enum { PER = 200 };
	struct fixture *f = *state;
	struct ledger *l = open_ledger(f, 0, sw_sign, 500);
	struct worker w[THREADS];
	uint64_t *seqs = calloc(THREADS * PER, sizeof(*seqs)), records, ckpts, bad;
	struct ledger_stats st;
	char why[512];
	unsigned i;

	assert_non_null(seqs);
	memset(w, 0, sizeof(w));
	for (i = 0; i < THREADS; i++) {
		w[i].l = l;
		w[i].id = i;
		w[i].n = PER;
		w[i].seqs = seqs + i * PER;
		w[i].announce = announce;
	}
	run_workers(w, THREADS);
	ledger_stats(l, &st);
	ledger_close(l);
	assert_true(st.records == THREADS * PER && st.failed == 0);
	assert_true(st.commits >= 1 && st.commit_ns > 0);
	/* Shared commits: with announcements, each fsync carries the records on their way. */
	assert_true(st.commits <= st.records);
	if (announce)
		assert_true(st.commits < st.records);
	for (i = 0; i < THREADS; i++) {
		assert_int_equal(w[i].ok, PER);
		assert_int_equal(w[i].other, 0);
	}
	qsort(seqs, THREADS * PER, sizeof(*seqs), cmp_u64);
	for (i = 0; i < THREADS * PER; i++)
		assert_int_equal(seqs[i], i + 1); /* unique and contiguous */
	free(seqs);
	assert_int_equal(verify(f, f->key, &records, &ckpts, &bad, why, sizeof(why)), 0);
	assert_int_equal(records, THREADS * PER);
	/* every 500 records (at batch boundaries) and one at close, covering the tail */
	assert_true(ckpts >= 2);
	assert_null(strstr(why, "not yet covered"));
}

static void test_group_commit(void **state)
{
	group_commit(state, 0);
}

/* With the commit delay: appends announced by the other threads are waited for. */
static void test_group_commit_announced(void **state)
{
	group_commit(state, 1);
}

/* Announced records that never come hold a commit back a few milliseconds at most. */
static void test_commit_delay_bounded(void **state)
{
	struct fixture *f = *state;
	struct ledger *l = open_ledger(f, 0, sw_sign, 1000);
	struct audit_rec r;
	struct timespec t0, t1;
	double ms;

	make_rec(&r, 1);
	ledger_expect(l, 8);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (unsigned i = 0; i < 20; i++)
		assert_int_equal(ledger_append(l, &r), LEDGER_OK);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	ledger_expect(l, -8);
	ms = (double)(t1.tv_sec - t0.tv_sec) * 1000 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
	/* 20 commits, each delayed at most 2 ms, plus their fsyncs: far below a second. */
	if (ms > 1000)
		fail_msg("20 appends took %.0f ms with 8 announced records that never came", ms);
	assert_int_equal(r.seq, 20);
	ledger_close(l);
}

/* The daemon opens the registry (a WAL connection to the same file) before the ledger. Opening
 * the ledger must not drop that process's POSIX locks (by open()+close() of the database), or
 * another process closing its last connection deletes the WAL under the daemon and committed
 * records are lost. */
static void test_second_process(void **state)
{
	struct fixture *f = *state;
	struct ledger *l;
	char path[512];
	sqlite3 *reg;
	pid_t pid;
	int status;

	l = open_ledger(f, 1, NULL, 0); /* creates the database */
	ledger_close(l);
	snprintf(path, sizeof(path), "%s/iamsign.db", f->dir);
	assert_int_equal(sqlite3_open(path, &reg), SQLITE_OK);
	assert_int_equal(sqlite3_exec(reg, "PRAGMA journal_mode = WAL; SELECT count(*) FROM audit",
	                              NULL, NULL, NULL),
	                 SQLITE_OK);
	l = open_ledger(f, 0, NULL, 0);
	append_n(l, 5);
	for (int i = 0; i < 3; i++) {
		pid = fork();
		assert_true(pid >= 0);
		if (pid == 0) { /* a fresh process, as iamsign-admin: see append_one() */
			execl("/proc/self/exe", "test-ledger", "--append-one", f->dir,
			      (char *)NULL);
			_exit(127);
		}
		assert_int_equal(waitpid(pid, &status, 0), pid);
		assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
		append_n(l, 5);
	}
	ledger_close(l);
	sqlite3_close(reg);
	expect_intact(f, 5 + 3 * 6);
}

/* ---- conditions ---- */

static void quota_exact(void **state, int announce)
{
	enum { PER = 25, QUOTA = 37 };
	struct fixture *f = *state;
	struct ledger *l = open_ledger(f, 0, NULL, 0);
	struct worker w[THREADS];
	int ok = 0, denied = 0;
	unsigned i;

	memset(w, 0, sizeof(w));
	for (i = 0; i < THREADS; i++) {
		w[i].l = l;
		w[i].id = i;
		w[i].n = PER;
		w[i].quota_max = QUOTA;
		w[i].announce = announce;
	}
	run_workers(w, THREADS);
	for (i = 0; i < THREADS; i++) {
		ok += w[i].ok;
		denied += w[i].quota_fail;
		assert_int_equal(w[i].other, 0);
	}
	assert_int_equal(ok, QUOTA);
	assert_int_equal(denied, THREADS * PER - QUOTA);
	assert_int_equal(ledger_quota_used(l, "quota-cred", 20000), QUOTA);
	assert_int_equal(ledger_quota_used(l, "quota-cred", 20001), 0);
	assert_int_equal(ledger_quota_used(l, "other", 20000), 0);
	ledger_close(l);
	expect_intact(f, THREADS * PER); /* refusals are recorded too */
}

static void test_quota_exact(void **state)
{
	quota_exact(state, 0);
}

/* Announced, as the daemon's signing path does: records that arrive during the commit delay
 * join the open transaction, and each sees the counts of those written before it. */
static void test_quota_exact_announced(void **state)
{
	quota_exact(state, 1);
}

/* THREADS workers each append 4 records that use the SAD jti, allowed 5 uses: exactly 5 go
 * through, the rest are refused as replays. */
static void jti_race(struct ledger *l, const char *jti, int announce)
{
	struct worker w[THREADS];
	int ok = 0, replay = 0;
	unsigned i;

	memset(w, 0, sizeof(w));
	for (i = 0; i < THREADS; i++) {
		w[i].l = l;
		w[i].id = i;
		w[i].n = 4;
		w[i].jti = jti;
		w[i].jti_num = 5;
		w[i].announce = announce;
	}
	run_workers(w, THREADS);
	for (i = 0; i < THREADS; i++) {
		ok += w[i].ok;
		replay += w[i].replay_fail;
		assert_int_equal(w[i].other, 0);
	}
	assert_int_equal(ok, 5);
	assert_int_equal(replay, THREADS * 4 - 5);
	assert_int_equal(ledger_jti_used(l, jti), 5);
}

static void test_jti(void **state)
{
	struct fixture *f = *state;
	struct ledger *l = open_ledger(f, 0, NULL, 0);
	struct audit_rec r;

	jti_race(l, "jti-race", 0);
	assert_int_equal(ledger_jti_used(l, "unknown"), 0);
	/* The same race announced: records joining a transaction during the commit delay. */
	jti_race(l, "jti-race-announced", 1);

	/* A single-use SAD: once, then replayed; a refusal consumes nothing. */
	make_rec(&r, 1);
	snprintf(r.jti, sizeof(r.jti), "once");
	r.jti_add = 1;
	r.jti_num = 1;
	snprintf(r.decision, sizeof(r.decision), "deny");
	snprintf(r.reason, sizeof(r.reason), "hash_not_approved");
	r.nsigs = 0;
	assert_int_equal(ledger_append(l, &r), LEDGER_OK);
	assert_int_equal(ledger_jti_used(l, "once"), 0);
	make_rec(&r, 2);
	snprintf(r.jti, sizeof(r.jti), "once");
	r.jti_add = 1;
	r.jti_num = 1;
	assert_int_equal(ledger_append(l, &r), LEDGER_OK);
	make_rec(&r, 3);
	snprintf(r.jti, sizeof(r.jti), "once");
	r.jti_add = 1;
	r.jti_num = 1;
	assert_int_equal(ledger_append(l, &r), LEDGER_ERR_REPLAY);
	assert_string_equal(r.decision, "deny");
	assert_string_equal(r.reason, "sad_replayed");
	assert_int_equal(r.nsigs, 0);
	assert_int_equal(ledger_jti_used(l, "once"), 1);
	ledger_close(l);

	/* Still consumed after a "restart". */
	l = open_ledger(f, 1, NULL, 0);
	make_rec(&r, 4);
	snprintf(r.jti, sizeof(r.jti), "once");
	r.jti_add = 1;
	r.jti_num = 1;
	assert_int_equal(ledger_append(l, &r), LEDGER_ERR_REPLAY);
	ledger_close(l);
	expect_intact(f, 2 * THREADS * 4 + 4);
}

/* ---- unwritable ---- */

struct blocked {
	struct ledger *l;
	int rc;
};

static void *blocked_append(void *arg)
{
	struct blocked *b = arg;
	struct audit_rec r;

	make_rec(&r, 7);
	b->rc = ledger_append(b->l, &r);
	return NULL;
}

/* Wait (up to 10 s) until the writer is off its batch. */
static void wait_idle(struct ledger *l)
{
	struct ledger_stats st;

	for (int i = 0; i < 1000; i++) {
		ledger_stats(l, &st);
		if (st.busy_ms == 0)
			return;
		usleep(10 * 1000);
	}
	fail_msg("the writer is still on its batch after 10 s");
}

static void test_unavailable(void **state)
{
	struct fixture *f = *state;
	struct ledger *l = open_ledger_timeout(f, 500);
	struct blocked b[3];
	struct ledger_stats st;
	pthread_t t[3];
	char path[512];
	sqlite3 *db;
	int64_t t0, took;
	unsigned i;

	alarm(30); /* a wait that never ends fails the test */
	append_n(l, 3);
	/* Another writer holds the database's write lock, for longer than the write timeout
	 * (0.5 s) and the busy timeout (5 s) both. */
	snprintf(path, sizeof(path), "%s/iamsign.db", f->dir);
	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	assert_int_equal(sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
	t0 = mono_ms();
	for (i = 0; i < 3; i++) {
		b[i].l = l;
		b[i].rc = 1;
		assert_int_equal(pthread_create(&t[i], NULL, blocked_append, &b[i]), 0);
	}
	/* The writer is on their batch, waiting for the lock: the stats say how long; not yet
	 * stalled. */
	usleep(300 * 1000);
	ledger_stats(l, &st);
	assert_true(st.busy_ms >= 200 && st.busy_ms < 500);
	assert_int_equal(st.stalled, 0);
	assert_false(ledger_stalled(l));
	/* Each is answered unavailable at the write timeout, not the busy timeout's 5 s. */
	for (i = 0; i < 3; i++) {
		pthread_join(t[i], NULL);
		assert_int_equal(b[i].rc, LEDGER_ERR_UNAVAILABLE);
	}
	took = mono_ms() - t0;
	if (took < 500 || took >= 4900)
		fail_msg("the blocked appends returned after %lld ms", (long long)took);
	ledger_stats(l, &st);
	assert_int_equal(st.failed, 3);
	/* (Refusing at once while stalled is checked with a hung fsync below: that stall lasts
	 * as long as the test wants, this one only until the busy timeout.) The lock goes: the
	 * writer commits what it was writing, the records whose waiters gave up included, and
	 * frees them; any still queued at the timeout were dropped unwritten. Or, on a slow
	 * machine, the busy timeout came first and the batch failed. */
	assert_int_equal(sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(db);
	wait_idle(l);
	assert_false(ledger_stalled(l));
	ledger_stats(l, &st);
	assert_true(st.records >= 3 && st.records <= 6);
	assert_int_equal(st.failed, 3);
	/* The writer keeps going. */
	append_n(l, 2);
	ledger_stats(l, &st);
	assert_int_equal(st.failed, 3);
	ledger_close(l);
	expect_intact(f, st.records);
	/* Each of the 3 answered unavailable is accounted for: its own record, committed late,
	 * or counted in the ledger.unrecorded record that went in with the next batch. */
	{
		unsigned ngaps;
		uint64_t noted = gaps_noted(f, &ngaps);
		int64_t late = count_rows(f, "detail = 'record 7'");

		if ((uint64_t)late + noted != 3 || ngaps != (noted > 0))
			fail_msg("%lld committed late, %llu noted in %u record(s)", (long long)late,
			         (unsigned long long)noted, ngaps);
		/* The stats counted the same answers. */
		assert_int_equal(st.unrecorded, noted);
	}
	alarm(0);
}

/* The disk stops answering inside the commit's fsync: the request is answered unavailable
 * at the write timeout, later ones at once, and once the fsync returns the ledger goes on with
 * the chain intact. */
/* The writer is held at g, or is about to be, with 2 records committed and a write timeout of
 * 300 ms: an append gives up at the timeout, and from then on the ledger is stalled, refusing
 * announcements and appends at once. */
static void expect_stall(struct ledger *l, struct gate *g)
{
	struct blocked b = {.l = l, .rc = 1};
	struct ledger_stats st;
	struct audit_rec r;
	pthread_t t;
	int64_t t0, took, t_held, held;

	t0 = mono_ms();
	assert_int_equal(pthread_create(&t, NULL, blocked_append, &b), 0);
	gate_wait_hung(g);
	t_held = mono_ms(); /* the writer has been on it since this at least */
	pthread_join(t, NULL);
	took = mono_ms() - t0;
	assert_int_equal(b.rc, LEDGER_ERR_UNAVAILABLE);
	if (took < 300 || took > 5300)
		fail_msg("the append returned after %lld ms", (long long)took);
	assert_true(ledger_stalled(l));
	make_rec(&r, 9);
	assert_int_equal(ledger_announce(l, &r), LEDGER_ERR_UNAVAILABLE); /* nothing announced */
	assert_int_equal(r.settled, 1); /* counted: never to be appended */
	make_rec(&r, 9);
	t0 = mono_ms();
	assert_int_equal(ledger_append(l, &r), LEDGER_ERR_UNAVAILABLE);
	assert_true(mono_ms() - t0 < 200);
	held = mono_ms() - t_held;
	ledger_stats(l, &st);
	assert_int_equal(st.records, 2);
	assert_int_equal(st.failed, 2);
	assert_int_equal(st.stalled, 1);    /* what /healthz shows */
	if ((int64_t)st.busy_ms + 2 < held) /* ms rounding */
		fail_msg("busy for %llu ms, held for %lld", (unsigned long long)st.busy_ms,
		         (long long)held);
}

static void test_fsync_hangs(void **state)
{
	struct fixture *f = *state;
	struct ledger *l = open_ledger_timeout(f, 300);
	struct ledger_stats st;
	struct audit_rec r;

	alarm(30); /* a wait that never ends fails the test */
	append_n(l, 2);
	/* The writer takes the next record and hangs in the commit's fsync. */
	gate_close(&fsync_gate, 1);
	expect_stall(l, &fsync_gate);
	/* The disk answers: the record given up on was in the commit, and is in the chain. */
	gate_close(&fsync_gate, 0);
	wait_idle(l);
	ledger_stats(l, &st);
	assert_int_equal(st.records, 3);
	assert_int_equal(st.failed, 2);
	assert_int_equal(st.unrecorded, 2);
	assert_int_equal(st.stalled, 0);
	/* The next record takes along one that notes the two answers refused at once (the
	 * announcement and the append) without a record of their own. */
	make_rec(&r, 10);
	assert_int_equal(ledger_announce(l, &r), LEDGER_OK);
	assert_int_equal(ledger_append_expected(l, &r), LEDGER_OK);
	assert_int_equal(r.seq, 5);
	ledger_close(l);
	expect_intact(f, 5);
	expect_one_gap(f, 4, 2);
	alarm(0);
}

/* A checkpoint that hangs (the audit key does not answer; its own fsync could do the same)
 * holds the queue like a batch that hangs, and counts as a stall the same way. */
static void test_checkpoint_hangs(void **state)
{
	struct fixture *f = *state;
	struct ledger_opts o = {.timeout_ms = 300, .sign = gated_sign, .checkpoint_every = 2};
	struct ledger_stats st;
	struct ledger *l;
	uint64_t records, ckpts, bad;
	char why[512];

	alarm(30); /* a wait that never ends fails the test */
	o.sign_arg = f->key;
	l = open_ledger_opts(f, &o);
	gate_close(&sign_gate, 1);
	append_n(l, 2); /* committed; the checkpoint they call for hangs */
	gate_wait_hung(&sign_gate);
	expect_stall(l, &sign_gate);
	/* The key answers: the checkpoint is stored; the records given up on were still queued,
	 * and are not. With no record to take it along, the one noting the three answers without
	 * a record (the queued append, the announcement, the append refused at once) is written
	 * at close, before the final checkpoint. */
	gate_close(&sign_gate, 0);
	wait_idle(l);
	assert_false(ledger_stalled(l));
	ledger_stats(l, &st);
	assert_int_equal(st.unrecorded, 3);
	assert_int_equal(st.stalled, 0);
	ledger_close(l);
	assert_int_equal(verify(f, f->key, &records, &ckpts, &bad, why, sizeof(why)), 0);
	assert_int_equal(records, 3);
	assert_int_equal(ckpts, 2); /* at 2, and at 3 on close */
	expect_one_gap(f, 3, 3);
	alarm(0);
}

/* A commit whose fsync fails: its request is answered unavailable, nothing of it is kept, and
 * the next batch carries a record noting that answer. */
static void test_batch_fails(void **state)
{
	struct fixture *f = *state;
	struct ledger *l = open_ledger_timeout(f, 2000);
	struct ledger_stats st;
	struct audit_rec r;

	append_n(l, 2);
	__atomic_store_n(&fsync_fails, 1, __ATOMIC_SEQ_CST);
	make_rec(&r, 8);
	assert_int_equal(ledger_append(l, &r), LEDGER_ERR_UNAVAILABLE);
	ledger_stats(l, &st);
	assert_int_equal(st.records, 2);
	assert_int_equal(st.failed, 1);
	assert_int_equal(st.unrecorded, 1);
	make_rec(&r, 9);
	assert_int_equal(ledger_append(l, &r), LEDGER_OK);
	assert_int_equal(r.seq, 4);
	ledger_close(l);
	expect_intact(f, 4);
	assert_int_equal(count_rows(f, "detail = 'record 8'"), 0);
	expect_one_gap(f, 3, 1);
}

static void test_unavailable_direct(void **state)
{
	struct fixture *f = *state;
	struct ledger *l = open_ledger(f, 1, NULL, 0);
	struct ledger_stats st;
	struct audit_rec r;
	char path[512];
	sqlite3 *db;

	snprintf(path, sizeof(path), "%s/iamsign.db", f->dir);
	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	assert_int_equal(sqlite3_exec(db, "BEGIN EXCLUSIVE", NULL, NULL, NULL), SQLITE_OK);
	make_rec(&r, 1);
	r.quota_add = 1;
	r.quota_day = 1;
	r.quota_max = 10;
	assert_int_equal(ledger_append(l, &r), LEDGER_ERR_UNAVAILABLE);
	assert_int_equal(sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(db);
	/* nothing of the failed record was kept, quota included */
	assert_int_equal(ledger_quota_used(l, r.cred, 1), 0);
	assert_int_equal(ledger_append(l, &r), LEDGER_OK);
	assert_int_equal(r.seq, 1);
	ledger_stats(l, &st);
	assert_true(st.commits == 1 && st.records == 1 && st.failed == 1 && st.commit_ns > 0);
	assert_int_equal(st.unrecorded, 0); /* admin reports its own failure */
	ledger_close(l);
	expect_intact(f, 1);
}

/* ---- checkpoints and tampering ---- */

/* 20 records, checkpoints at 10 and 20 (count-based), then 3 uncovered records. */
static void build_signed(struct fixture *f)
{
	struct ledger *l = open_ledger(f, 0, sw_sign, 10);
	uint64_t records, ckpts, bad;
	char why[512];

	append_n(l, 20);
	ledger_close(l);
	l = open_ledger(f, 1, NULL, 0);
	append_n(l, 3);
	ledger_close(l);
	assert_int_equal(verify(f, f->key, &records, &ckpts, &bad, why, sizeof(why)), 0);
	assert_int_equal(records, 23);
	assert_int_equal(ckpts, 2);
	assert_non_null(strstr(why, "3 record(s) after the last checkpoint (seq 20)"));
}

static void test_checkpoints(void **state)
{
	struct fixture *f = *state;
	uint64_t records, ckpts, bad, seq;
	struct ledger *l;
	char why[512];

	build_signed(f);
	/* explicit checkpoint, as iamsign-admin audit checkpoint does */
	l = open_ledger(f, 1, sw_sign, 0);
	assert_int_equal(ledger_checkpoint(l, &seq), LEDGER_OK);
	assert_int_equal(seq, 23);
	assert_int_equal(ledger_checkpoint(l, &seq), LEDGER_OK); /* same head: no new row */
	ledger_close(l);
	assert_int_equal(verify(f, f->key, &records, &ckpts, &bad, why, sizeof(why)), 0);
	assert_int_equal(ckpts, 3);
	assert_string_equal(why, "");
	/* without the key: intact, with a warning */
	assert_int_equal(verify(f, NULL, &records, &ckpts, &bad, why, sizeof(why)), 0);
	assert_non_null(strstr(why, "NOT checked"));
	/* the wrong key */
	assert_int_equal(verify(f, f->other, &records, &ckpts, &bad, why, sizeof(why)), -1);
	assert_int_equal(bad, 10);
	assert_non_null(strstr(why, "bad signature"));
}

/* The audit key fails while flaky_broken is set (its token is out); calls counted. */
static int flaky_broken, flaky_calls;

static int flaky_sign(void *arg, const uint8_t head[32], uint8_t *sig, size_t *siglen)
{
	__atomic_add_fetch(&flaky_calls, 1, __ATOMIC_SEQ_CST);
	if (__atomic_load_n(&flaky_broken, __ATOMIC_SEQ_CST))
		return -1;
	return sw_sign(arg, head, sig, siglen);
}

/* A checkpoint that failed is tried again within seconds of the key signing again, with no
 * record to prompt it, rather than a whole interval (here an hour) later. */
static void test_checkpoint_retried(void **state)
{
	struct fixture *f = *state;
	struct ledger_opts o = {.sign = flaky_sign, .checkpoint_every = 3, .checkpoint_secs = 3600};
	uint64_t records, ckpts = 0, bad;
	struct ledger *l;
	char why[512];
	int64_t t0;

	alarm(30);
	o.sign_arg = f->key;
	__atomic_store_n(&flaky_broken, 1, __ATOMIC_SEQ_CST);
	__atomic_store_n(&flaky_calls, 0, __ATOMIC_SEQ_CST);
	l = open_ledger_opts(f, &o);
	append_n(l, 3); /* the checkpoint they call for fails */
	while (__atomic_load_n(&flaky_calls, __ATOMIC_SEQ_CST) == 0)
		usleep(10 * 1000);
	__atomic_store_n(&flaky_broken, 0, __ATOMIC_SEQ_CST);
	t0 = mono_ms();
	while (mono_ms() - t0 < 5000) {
		assert_int_equal(verify(f, f->key, &records, &ckpts, &bad, why, sizeof(why)), 0);
		if (ckpts > 0)
			break;
		usleep(50 * 1000);
	}
	assert_int_equal(ckpts, 1);
	/* Tried again 1 s after the failure (2 s if that one failed too): in 3 s at most. */
	assert_true(mono_ms() - t0 < 3000);
	ledger_close(l);
	assert_int_equal(verify(f, f->key, &records, &ckpts, &bad, why, sizeof(why)), 0);
	assert_int_equal(records, 3);
	assert_int_equal(ckpts, 1);
	assert_string_equal(why, "");
	alarm(0);
}

static void test_checkpoint_sign_fails(void **state)
{
	struct fixture *f = *state;
	struct ledger *l = open_ledger(f, 0, fail_sign, 5);
	uint64_t seq;

	append_n(l, 12); /* failing checkpoints are logged, appends go on */
	assert_int_equal(ledger_checkpoint(l, &seq), LEDGER_ERR_INTERNAL);
	ledger_close(l);
	expect_intact(f, 12);
	l = open_ledger(f, 1, NULL, 0);
	assert_int_equal(ledger_checkpoint(l, &seq), LEDGER_ERR_BAD_INPUT);
	ledger_close(l);
}

static void test_tamper_edit(void **state)
{
	struct fixture *f = *state;

	build_signed(f);
	sql(f, "UPDATE audit SET decision = 'deny' WHERE seq = 4");
	expect_bad(f, 4, "does not match its hash");
}

static void test_tamper_edit_hash(void **state)
{
	struct fixture *f = *state;

	build_signed(f);
	/* the whole row replaced by another one's content, hashes included */
	sql(f, "UPDATE audit SET (time_ms, detail, hashes, sig_sha256, prev_hash, hash) = "
	       "(SELECT time_ms, detail, hashes, sig_sha256, prev_hash, hash FROM audit "
	       "WHERE seq = 6) WHERE seq = 7");
	expect_bad(f, 7, "does not match its hash");
}

static void test_tamper_edit_type(void **state)
{
	struct fixture *f = *state;

	build_signed(f);
	sql(f, "UPDATE audit SET detail = CAST('rec' || char(0) || 'x' AS BLOB) WHERE seq = 2");
	expect_bad(f, 2, "malformed");
}

static void test_tamper_delete(void **state)
{
	struct fixture *f = *state;

	build_signed(f);
	sql(f, "DELETE FROM audit WHERE seq = 5");
	expect_bad(f, 5, "missing");
}

static void test_tamper_delete_renumber(void **state)
{
	struct fixture *f = *state;

	build_signed(f);
	sql(f, "DELETE FROM audit WHERE seq = 5; UPDATE audit SET seq = seq - 1 WHERE seq > 5");
	expect_bad(f, 5, "does not match its hash");
}

static void test_tamper_insert(void **state)
{
	struct fixture *f = *state;

	build_signed(f);
	/* at the end: a copy of a record under a new sequence number */
	sql(f, "INSERT INTO audit SELECT 24, time_ms, caller, uid, gid, pid, op, cred, owner, "
	       "purpose, halg, hash_len, hashes, jti, decision, reason, detail, sig_sha256, "
	       "(SELECT hash FROM audit WHERE seq = 23), hash, tst FROM audit WHERE seq = 3");
	expect_bad(f, 24, "does not match its hash");
}

static void test_tamper_insert_middle(void **state)
{
	struct fixture *f = *state;

	build_signed(f);
	/* in the middle: later records shifted up to make room for a copy of record 3 */
	sql(f, "UPDATE audit SET seq = seq + 1000 WHERE seq > 12;"
	       "UPDATE audit SET seq = seq - 999 WHERE seq > 1000;"
	       "INSERT INTO audit SELECT 13, time_ms, caller, uid, gid, pid, op, cred, owner, "
	       "purpose, halg, hash_len, hashes, jti, decision, reason, detail, sig_sha256, "
	       "(SELECT hash FROM audit WHERE seq = 12), hash, tst FROM audit WHERE seq = 3");
	expect_bad(f, 13, "does not match its hash");
}

static void test_tamper_reorder(void **state)
{
	struct fixture *f = *state;

	build_signed(f);
	sql(f, "UPDATE audit SET seq = 1000 WHERE seq = 8;"
	       "UPDATE audit SET seq = 8 WHERE seq = 9;"
	       "UPDATE audit SET seq = 9 WHERE seq = 1000");
	expect_bad(f, 8, "does not match its hash");
}

static void test_tamper_truncate(void **state)
{
	struct fixture *f = *state;

	build_signed(f);
	sql(f, "DELETE FROM audit WHERE seq > 17");
	expect_bad(f, 18, "tail truncated");
}

static void test_tamper_truncate_uncovered(void **state)
{
	struct fixture *f = *state;
	uint64_t records, ckpts, bad;
	char why[512];

	/* cutting only records after the last checkpoint cannot be told from their absence */
	build_signed(f);
	sql(f, "DELETE FROM audit WHERE seq > 20");
	assert_int_equal(verify(f, f->key, &records, &ckpts, &bad, why, sizeof(why)), 0);
	assert_int_equal(records, 20);
}

static void test_tamper_checkpoint(void **state)
{
	struct fixture *f = *state;

	build_signed(f);
	sql(f, "UPDATE checkpoints SET head = (SELECT hash FROM audit WHERE seq = 9) "
	       "WHERE seq = 10");
	expect_bad(f, 10, "differs from the signed checkpoint");
}

static void test_tamper_checkpoint_sig(void **state)
{
	struct fixture *f = *state;

	build_signed(f);
	sql(f, "UPDATE checkpoints SET sig = X'3006020101020101' WHERE seq = 20");
	expect_bad(f, 20, "bad signature");
}

/* ---- export ---- */

/* A B-T signature's record carries each time-stamp's time and token hash: in the chain (an
 * edited tst column is found), in the export; and a database from before the tst column is
 * given it when opened, its records verifying unchanged. */
static void test_timestamps(void **state)
{
	struct fixture *f = *state;
	struct audit_rec *r = malloc(sizeof(*r));
	struct ledger *l;
	char path[512], line[8192], err[256];
	json_t *o, *ts;
	FILE *fp;
	int fd;

	assert_non_null(r);
	/* The first database has the table as it was before time-stamps. */
	l = open_ledger(f, 1, NULL, 0);
	append_n(l, 3);
	ledger_close(l);
	sql(f, "CREATE TABLE old AS SELECT seq, time_ms, caller, uid, gid, pid, op, cred, owner, "
	       "purpose, halg, hash_len, hashes, jti, decision, reason, detail, sig_sha256, "
	       "prev_hash, hash FROM audit; DROP TABLE audit; ALTER TABLE old RENAME TO audit");
	expect_intact(f, 3);
	l = open_ledger(f, 1, NULL, 0);
	make_rec(r, 3);
	r->ntst = 1; /* not one per signature */
	assert_int_equal(ledger_append(l, r), LEDGER_ERR_BAD_INPUT);
	r->ntst = 2;
	r->tst_time_ms[0] = 1700000000123LL;
	r->tst_time_ms[1] = 1700000000456LL;
	memset(r->tst_sha256[0], 0x5a, 32);
	memset(r->tst_sha256[1], 0xc3, 32);
	assert_int_equal(ledger_append(l, r), LEDGER_OK);
	make_rec(r, 4);
	assert_int_equal(ledger_append(l, r), LEDGER_OK);
	ledger_close(l);
	expect_intact(f, 5);

	snprintf(path, sizeof(path), "%s/export.jsonl", f->dir);
	assert_true((fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600)) >= 0);
	if (ledger_export_jsonl(f->dir, fd, err, sizeof(err)) != LEDGER_OK)
		fail_msg("export: %s", err);
	close(fd);
	assert_non_null(fp = fopen(path, "r"));
	for (int n = 1; fgets(line, sizeof(line), fp) != NULL; n++) {
		assert_non_null(o = json_loads(line, 0, NULL));
		ts = json_object_get(o, "timestamps");
		if (n != 4) {
			assert_null(ts);
		} else {
			assert_int_equal(json_array_size(ts), 2);
			assert_string_equal(
			    json_string_value(json_object_get(json_array_get(ts, 0), "time")),
			    "2023-11-14T22:13:20.123Z");
			assert_string_equal(
			    json_string_value(
			        json_object_get(json_array_get(ts, 1), "token_sha256")),
			    "c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3");
		}
		json_decref(o);
	}
	fclose(fp);

	/* The time-stamps are in the record's hash. */
	sql(f, "UPDATE audit SET tst = zeroblob(80) WHERE seq = 4");
	expect_bad(f, 4, "does not match its hash");
	sql(f, "UPDATE audit SET tst = zeroblob(40) WHERE seq = 4");
	expect_bad(f, 4, "malformed");
	free(r);
}

static void test_export(void **state)
{
	static const char *const fields[] = {"seq",
	                                     "time",
	                                     "caller",
	                                     "uid",
	                                     "gid",
	                                     "pid",
	                                     "op",
	                                     "credential",
	                                     "owner",
	                                     "purpose",
	                                     "hash_algorithm",
	                                     "hashes",
	                                     "jti",
	                                     "decision",
	                                     "reason",
	                                     "detail",
	                                     "signature_sha256",
	                                     "prev_hash",
	                                     "hash",
	                                     NULL};
	struct fixture *f = *state;
	struct ledger *l = open_ledger(f, 1, NULL, 0);
	char path[512], line[8192], err[256], prev_hash[65] = "";
	json_t *o, *v;
	json_error_t je;
	FILE *fp;
	size_t i, n = 0;
	int fd;

	append_n(l, 42);
	ledger_close(l);
	snprintf(path, sizeof(path), "%s/export.jsonl", f->dir);
	assert_true((fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600)) >= 0);
	if (ledger_export_jsonl(f->dir, fd, err, sizeof(err)) != LEDGER_OK)
		fail_msg("export: %s", err);
	close(fd);
	assert_non_null(fp = fopen(path, "r"));
	while (fgets(line, sizeof(line), fp) != NULL) {
		assert_non_null(strchr(line, '\n'));
		o = json_loads(line, 0, &je);
		if (o == NULL)
			fail_msg("line %zu: %s", n + 1, je.text);
		for (i = 0; fields[i] != NULL; i++)
			if (json_object_get(o, fields[i]) == NULL)
				fail_msg("line %zu: no field %s", n + 1, fields[i]);
		assert_int_equal(json_object_size(o), i);
		assert_int_equal(json_integer_value(json_object_get(o, "seq")), n + 1);
		assert_string_equal(json_string_value(json_object_get(o, "op")),
		                    "signatures/signHash");
		v = json_object_get(o, "time");
		assert_int_equal(strlen(json_string_value(v)), strlen("2023-11-14T22:13:20.000Z"));
		if (n == 0) {
			assert_string_equal(json_string_value(v), "2023-11-14T22:13:20.000Z");
			assert_string_equal(
			    json_string_value(json_object_get(o, "prev_hash")),
			    "0000000000000000000000000000000000000000000000000000000"
			    "000000000");
		} else {
			assert_string_equal(json_string_value(json_object_get(o, "prev_hash")),
			                    prev_hash);
		}
		snprintf(prev_hash, sizeof(prev_hash), "%s",
		         json_string_value(json_object_get(o, "hash")));
		v = json_object_get(o, "hashes");
		assert_int_equal(json_array_size(v), 2);
		assert_string_equal(json_string_value(json_array_get(v, 1)),
		                    "paWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaU=");
		v = json_object_get(o, "signature_sha256");
		assert_int_equal(json_array_size(v), 2);
		assert_string_equal(
		    json_string_value(json_array_get(v, 0)),
		    "1111111111111111111111111111111111111111111111111111111111111111");
		json_decref(o);
		n++;
	}
	fclose(fp);
	assert_int_equal(n, 42);
}

/* test-ledger --append-one DIR: one record in direct mode; its connection closes last. */
static int append_one(const char *dir)
{
	struct ledger_opts o = {.direct = 1};
	struct ledger *l = NULL;
	struct audit_rec r;
	char err[256];
	int rc;

	if (ledger_open(dir, &o, &l, err, sizeof(err)) != LEDGER_OK) {
		fprintf(stderr, "append-one: %s\n", err);
		return 1;
	}
	make_rec(&r, 99);
	rc = ledger_append(l, &r);
	ledger_close(l);
	return rc == LEDGER_OK ? 0 : 1;
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_chain_many, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_bad_input, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_group_commit, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_group_commit_announced, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_commit_delay_bounded, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_second_process, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_quota_exact, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_quota_exact_announced, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_jti, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_unavailable, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_fsync_hangs, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_checkpoint_hangs, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_batch_fails, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_unavailable_direct, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_checkpoints, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_checkpoint_sign_fails, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_checkpoint_retried, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_tamper_edit, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_tamper_edit_hash, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_tamper_edit_type, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_tamper_delete, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_tamper_delete_renumber, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_tamper_insert, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_tamper_insert_middle, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_tamper_reorder, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_tamper_truncate, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_tamper_truncate_uncovered, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_tamper_checkpoint, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_tamper_checkpoint_sig, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_export, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_timestamps, setup, teardown),
	};

	if (argc == 3 && strcmp(argv[1], "--append-one") == 0)
		return append_one(argv[2]);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
