/* iamsign-bench: signing throughput and latency, through iamsignd and against the raw token.
 *
 * Daemon mode: N client threads, each with one persistent libcurl handle (HTTP keep-alive on
 * the Unix socket), send signatures/signHash with one SHA-256 digest in a loop.
 * Raw mode: N threads call the module's C_SignInit/C_Sign on the configured token and key
 * in-process (after one checked tok_sign_digest() warm-up): the ceiling the daemon is
 * measured against.
 * Each run prints one machine-readable line:
 *   daemon clients=2 ops=... rate=.../s p50_us=... p99_us=... errors=0
 *   raw threads=2 ops=... rate=.../s p50_us=... p99_us=... errors=0
 * Exit status 1 if any run had errors or could not start. */
#include <errno.h>
#include <stdarg.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>
#include <jansson.h>
#include <dirent.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "pkcs11/token.h"
#include "signer/config.h"

#define DEFAULT_SOCKET "/run/iamsign/iamsign.sock"
#define MAX_LIST 16  /* concurrency levels per invocation */
#define MAX_CONC 256 /* threads per run */
#define MAX_SECONDS 3600
#define MAX_SAMPLES (64u << 20) /* latencies kept per thread; ops are counted beyond it */
#define MAX_BODY (1u << 20)     /* response bytes kept; the rest is an error */
#define REQUEST_TIMEOUT 30L

enum mode { MODE_DAEMON, MODE_RAW };

struct opts {
	const char *socket;
	const char *credential;
	const char *purpose;
	const char *algo;
	const char *config;
	const char *key_uri;
	unsigned seconds;
	unsigned conc[MAX_LIST];
	size_t nconc;
	enum mode mode;
	unsigned spread;      /* --spread N: each request for BASE-k, k uniform in 1..N */
	const char *issue[4]; /* --issue CSRDIR OUTDIR CA.pem CA.key (see issue_certs) */
};

/* Shared by the threads of one run; read-only once they start. */
struct run {
	enum mode mode;
	unsigned seconds;
	/* start line: workers warm up, report ready, and all start together */
	pthread_mutex_t mu;
	pthread_cond_t cv;
	unsigned ready;
	int go, cancel;
	/* daemon */
	const char *socket;
	const char *body;
	/* --spread: body of each request built from these */
	unsigned spread;
	const char *base, *b64, *algo, *purpose;
	/* raw */
	struct token *tok;
	const struct tok_key *key;
	struct tok_sign_params sp;
	uint8_t dig[32];
};

struct worker {
	pthread_t th;
	struct run *run;
	uint64_t ops, errors;
	char body[512]; /* --spread: this request's body */
	uint64_t rng;   /* --spread: xorshift64 state */
	uint32_t *lat;  /* microseconds, one per successful operation while room remains */
	size_t nlat, cap;
	int setup_failed;
	char first_error[256];
};

struct body {
	char p[4096];
	size_t len;
	int overflow;
};

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void record(struct worker *w, uint64_t ns)
{
	uint64_t us = ns / 1000;

	if (w->nlat == w->cap && w->cap < MAX_SAMPLES) {
		size_t ncap = w->cap ? w->cap * 2 : 65536;
		uint32_t *p = realloc(w->lat, ncap * sizeof(*p));

		if (p != NULL) {
			w->lat = p;
			w->cap = ncap;
		}
	}
	if (w->nlat < w->cap)
		w->lat[w->nlat++] = us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;
}

__attribute__((format(printf, 2, 3))) static void set_error(struct worker *w, const char *fmt, ...)
{
	va_list ap;
	char *p;

	if (w->first_error[0] != '\0')
		return;
	va_start(ap, fmt);
	vsnprintf(w->first_error, sizeof(w->first_error), fmt, ap);
	va_end(ap);
	/* the daemon's text goes to a terminal: no control bytes */
	for (p = w->first_error; *p != '\0'; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			*p = '?';
}

/* Report ready, then wait for the start signal. 0 to go, -1 if the run was called off. */
static int wait_start(struct run *run)
{
	int r;

	pthread_mutex_lock(&run->mu);
	run->ready++;
	pthread_cond_broadcast(&run->cv);
	while (!run->go)
		pthread_cond_wait(&run->cv, &run->mu);
	r = run->cancel ? -1 : 0;
	pthread_mutex_unlock(&run->mu);
	return r;
}

/* ---- daemon mode ---- */

/* Keeps the start of the body (for error reports), counts the rest. */
static size_t on_body(char *data, size_t size, size_t nmemb, void *arg)
{
	struct body *b = arg;
	size_t n = size * nmemb, room = sizeof(b->p) - 1 - b->len;

	if (n > MAX_BODY) {
		b->overflow = 1;
		return 0;
	}
	memcpy(b->p + b->len, data, n < room ? n : room);
	b->len += n < room ? n : room;
	b->p[b->len] = '\0';
	return n;
}

static int daemon_setup(CURL **out, const struct run *run, struct curl_slist *hdrs, struct body *b,
                        char *errbuf)
{
	CURL *h = curl_easy_init();

	*out = NULL;
	if (h == NULL)
		return -1;
	curl_easy_setopt(h, CURLOPT_UNIX_SOCKET_PATH, run->socket);
	curl_easy_setopt(h, CURLOPT_URL, "http://localhost/csc/v2/signatures/signHash");
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
	curl_easy_setopt(h, CURLOPT_POSTFIELDS, run->body);
	curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)strlen(run->body));
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, b);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_TIMEOUT, REQUEST_TIMEOUT);
	*out = h;
	return 0;
}

/* One request; 0 if answered 200 with signatures, else -1 with the reason noted. */
static int daemon_once(struct worker *w, CURL *h, struct body *b, const char *errbuf)
{
	long status = 0;
	CURLcode cr;

	b->len = 0;
	b->p[0] = '\0';
	b->overflow = 0;
	cr = curl_easy_perform(h);
	if (cr != CURLE_OK) {
		set_error(w, "%s", errbuf[0] ? errbuf : curl_easy_strerror(cr));
		return -1;
	}
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
	if (status != 200) {
		set_error(w, "%s (HTTP %ld)", b->p, status);
		return -1;
	}
	return 0;
}

/* --spread: the next request goes to a credential drawn uniformly from BASE-1..BASE-N. */
static void spread_next(struct worker *w, CURL *h)
{
	const struct run *run = w->run;
	unsigned k;
	int n;

	if (w->rng == 0 && RAND_bytes((unsigned char *)&w->rng, sizeof(w->rng)) != 1)
		w->rng = (uint64_t)(uintptr_t)w | 1;
	w->rng ^= w->rng << 13;
	w->rng ^= w->rng >> 7;
	w->rng ^= w->rng << 17;
	k = (unsigned)(w->rng % run->spread) + 1;
	n = snprintf(w->body, sizeof(w->body),
	             "{\"credentialID\":\"%s-%u\",\"hashes\":[\"%s\"],"
	             "\"hashAlgorithmOID\":\"2.16.840.1.101.3.4.2.1\",\"signAlgo\":\"%s\"%s%s%s}",
	             run->base, k, run->b64, run->algo, run->purpose ? ",\"purpose\":\"" : "",
	             run->purpose ? run->purpose : "", run->purpose ? "\"" : "");
	if (n < 0 || (size_t)n >= sizeof(w->body))
		return;
	curl_easy_setopt(h, CURLOPT_POSTFIELDS, w->body);
	curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)n);
}

static void daemon_worker(struct worker *w)
{
	struct run *run = w->run;
	struct curl_slist *hdrs = NULL;
	struct body b = {0};
	char errbuf[CURL_ERROR_SIZE] = "";
	CURL *h = NULL;
	uint64_t deadline, t0, t1;
	json_t *j;

	if ((hdrs = curl_slist_append(NULL, "Content-Type: application/json")) == NULL ||
	    (hdrs = curl_slist_append(hdrs, "Expect:")) == NULL ||
	    daemon_setup(&h, run, hdrs, &b, errbuf) != 0) {
		set_error(w, "cannot set up libcurl");
		w->setup_failed = 1;
	} else if (daemon_once(w, h, &b, errbuf) != 0) {
		/* warm-up: opens the connection kept for the run */
		w->setup_failed = 1;
	} else {
		j = json_loads(b.p, 0, NULL);
		if (!json_is_array(json_object_get(j, "signatures"))) {
			set_error(w, "no signatures in the answer: %s", b.p);
			w->setup_failed = 1;
		}
		json_decref(j);
	}
	if (w->setup_failed)
		w->errors++;
	if (wait_start(run) != 0 || w->setup_failed)
		goto out;
	deadline = now_ns() + (uint64_t)run->seconds * 1000000000u;
	do {
		if (run->spread > 0)
			spread_next(w, h);
		t0 = now_ns();
		if (daemon_once(w, h, &b, errbuf) == 0) {
			t1 = now_ns();
			w->ops++;
			record(w, t1 - t0);
		} else {
			t1 = now_ns();
			w->errors++;
		}
	} while (t1 < deadline);
out:
	if (h != NULL)
		curl_easy_cleanup(h);
	curl_slist_free_all(hdrs);
}

/* ---- raw mode ---- */

static void raw_worker(struct worker *w)
{
	struct run *run = w->run;
	uint8_t sig[TOK_MAX_SIG];
	size_t siglen = sizeof(sig);
	uint64_t deadline, t0, t1;
	EVP_PKEY_CTX *vctx = NULL;
	CK_FUNCTION_LIST *fl;
	CK_SESSION_HANDLE sess;
	CK_MECHANISM mech = {0};
	uint8_t di[TOK_MAX_DIGEST + 32];
	const uint8_t *in;
	size_t inlen, dilen = 0;
	int e;

	/* warm-up through the token layer; the signature is checked once */
	if ((e = tok_sign_digest(run->tok, run->key, &run->sp, run->dig, sizeof(run->dig), sig,
	                         &siglen)) != TOK_OK) {
		set_error(w, "tok_sign_digest: %s", tok_strerror(e));
		w->setup_failed = 1;
	} else if (run->key->pub != NULL &&
	           ((vctx = EVP_PKEY_CTX_new(run->key->pub, NULL)) == NULL ||
	            EVP_PKEY_verify_init(vctx) <= 0 ||
	            EVP_PKEY_CTX_set_signature_md(vctx, EVP_sha256()) <= 0 ||
	            EVP_PKEY_verify(vctx, sig, siglen, run->dig, sizeof(run->dig)) != 1)) {
		set_error(w, "the token's signature does not verify with its public key");
		w->setup_failed = 1;
	}
	EVP_PKEY_CTX_free(vctx);
	if (w->setup_failed)
		w->errors++;
	if (wait_start(run) != 0 || w->setup_failed)
		return;
	/* The timed loop is the module's own C_SignInit + C_Sign on this thread's session, as
	 * bare as a PKCS#11 client gets: the baseline the daemon is measured against. */
	fl = tok_functions(run->tok);
	if ((e = tok_session(run->tok, &sess)) != TOK_OK) {
		set_error(w, "tok_session: %s", tok_strerror(e));
		w->errors++;
		return;
	}
	if (run->key->type == TOK_KEY_EC) {
		mech.mechanism = CKM_ECDSA;
		in = run->dig;
		inlen = sizeof(run->dig);
	} else {
		mech.mechanism = CKM_RSA_PKCS;
		if (tok_digestinfo(NID_sha256, run->dig, sizeof(run->dig), di, &dilen) != TOK_OK) {
			set_error(w, "cannot build the DigestInfo");
			w->errors++;
			return;
		}
		in = di;
		inlen = dilen;
	}
	deadline = now_ns() + (uint64_t)run->seconds * 1000000000u;
	do {
		CK_ULONG outlen = sizeof(sig);
		CK_RV rv;

		t0 = now_ns();
		rv = fl->C_SignInit(sess, &mech, run->key->priv);
		if (rv == CKR_OK)
			rv = fl->C_Sign(sess, (CK_BYTE_PTR)in, (CK_ULONG)inlen, sig, &outlen);
		t1 = now_ns();
		if (rv == CKR_OK) {
			w->ops++;
			record(w, t1 - t0);
		} else {
			w->errors++;
			set_error(w, "C_Sign: %s", tok_strerror(tok_err_from_rv(rv)));
		}
	} while (t1 < deadline);
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;

	if (w->run->mode == MODE_DAEMON)
		daemon_worker(w);
	else
		raw_worker(w);
	return NULL;
}

/* ---- runs and statistics ---- */

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of sorted v. */
static uint32_t percentile(const uint32_t *v, size_t n, unsigned p)
{
	size_t rank;

	if (n == 0)
		return 0;
	rank = (n * p + 99) / 100;
	return v[rank ? rank - 1 : 0];
}

/* Run conc threads for run->seconds and print the result line. 0 if clean. */
static int run_once(struct run *run, unsigned conc)
{
	struct worker *w = calloc(conc, sizeof(*w));
	uint32_t *all = NULL;
	uint64_t ops = 0, errors = 0, t0, t1;
	size_t nall = 0, i, started = 0;
	int setup_failed = 0, r = -1;
	double secs;

	if (w == NULL) {
		fprintf(stderr, "iamsign-bench: out of memory\n");
		return -1;
	}
	run->ready = 0;
	run->go = 0;
	run->cancel = 0;
	for (i = 0; i < conc; i++) {
		w[i].run = run;
		if (pthread_create(&w[i].th, NULL, worker_main, &w[i]) != 0)
			break;
		started++;
	}
	pthread_mutex_lock(&run->mu);
	while (run->ready < started)
		pthread_cond_wait(&run->cv, &run->mu);
	run->cancel = started != conc;
	run->go = 1;
	pthread_cond_broadcast(&run->cv);
	pthread_mutex_unlock(&run->mu);
	t0 = now_ns();
	for (i = 0; i < started; i++)
		pthread_join(w[i].th, NULL);
	t1 = now_ns();
	if (started != conc) {
		fprintf(stderr, "iamsign-bench: cannot start %u threads\n", conc);
		goto out;
	}

	for (i = 0; i < conc; i++) {
		ops += w[i].ops;
		errors += w[i].errors;
		nall += w[i].nlat;
		setup_failed |= w[i].setup_failed;
	}
	if ((all = malloc((nall ? nall : 1) * sizeof(*all))) == NULL) {
		fprintf(stderr, "iamsign-bench: out of memory\n");
		goto out;
	}
	nall = 0;
	for (i = 0; i < conc; i++) {
		if (w[i].nlat) {
			memcpy(all + nall, w[i].lat, w[i].nlat * sizeof(*all));
			nall += w[i].nlat;
		}
	}
	qsort(all, nall, sizeof(*all), cmp_u32);
	secs = (double)(t1 - t0) / 1e9;
	printf("%s %s=%u ops=%llu rate=%.0f/s p50_us=%u p99_us=%u errors=%llu%s\n",
	       run->mode == MODE_DAEMON ? "daemon" : "raw",
	       run->mode == MODE_DAEMON ? "clients" : "threads", conc, (unsigned long long)ops,
	       secs > 0 ? (double)ops / secs : 0.0, percentile(all, nall, 50),
	       percentile(all, nall, 99), (unsigned long long)errors,
	       setup_failed ? " failed=setup" : "");
	fflush(stdout);
	for (i = 0; i < conc; i++) {
		if (w[i].first_error[0] != '\0') {
			fprintf(stderr, "iamsign-bench: %s %zu: %s\n",
			        run->mode == MODE_DAEMON ? "client" : "thread", i,
			        w[i].first_error);
			break;
		}
	}
	r = errors || setup_failed ? -1 : 0;
out:
	for (i = 0; i < conc; i++)
		free(w[i].lat);
	free(all);
	free(w);
	return r;
}

/* ---- setup ---- */

/* A query to the daemon outside the measured loop (credentials/info for the key algorithm). */
static int daemon_query(const char *sock, const char *method, json_t *req, json_t **resp)
{
	struct curl_slist *hdrs = NULL;
	struct body b = {0};
	char url[256], errbuf[CURL_ERROR_SIZE] = "";
	char *body = NULL;
	CURL *h = NULL;
	long status = 0;
	CURLcode cr;
	int r = -1;

	*resp = NULL;
	if ((size_t)snprintf(url, sizeof(url), "http://localhost/csc/v2/%s", method) >= sizeof(url))
		goto out;
	if ((body = json_dumps(req, JSON_COMPACT)) == NULL || (h = curl_easy_init()) == NULL ||
	    (hdrs = curl_slist_append(NULL, "Content-Type: application/json")) == NULL)
		goto out;
	curl_easy_setopt(h, CURLOPT_UNIX_SOCKET_PATH, sock);
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
	curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, &b);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_TIMEOUT, REQUEST_TIMEOUT);
	if ((cr = curl_easy_perform(h)) != CURLE_OK) {
		fprintf(stderr, "iamsign-bench: %s: %s\n", sock,
		        errbuf[0] ? errbuf : curl_easy_strerror(cr));
		goto out;
	}
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
	if (status != 200 || b.len >= sizeof(b.p) - 1 ||
	    (*resp = json_loads(b.p, 0, NULL)) == NULL) {
		fprintf(stderr, "iamsign-bench: %s: HTTP %ld: %s\n", method, status, b.p);
		goto out;
	}
	r = 0;
out:
	curl_slist_free_all(hdrs);
	if (h != NULL)
		curl_easy_cleanup(h);
	free(body);
	return r;
}

/* signAlgo as a dotted OID: --algo (name or OID), else the credential's key with SHA-256. */
static int sign_algo(const struct opts *o, char *out, size_t outlen)
{
	ASN1_OBJECT *obj = NULL;
	json_t *req = NULL, *resp = NULL, *v;
	const char *key_oid;
	int sig, r = -1;

	if (o->algo != NULL) {
		if ((obj = OBJ_txt2obj(o->algo, 0)) == NULL) {
			fprintf(stderr, "iamsign-bench: --algo %s: unknown algorithm\n", o->algo);
			goto out;
		}
	} else {
		req =
		    json_pack("{s:s, s:s}", "credentialID", o->credential, "certificates", "none");
		if (req == NULL || daemon_query(o->socket, "credentials/info", req, &resp) != 0)
			goto out;
		/* CSC v2: key.algo is an array, the key's own algorithm first */
		v = json_object_get(json_object_get(resp, "key"), "algo");
		key_oid = json_string_value(json_is_array(v) ? json_array_get(v, 0) : v);
		if (key_oid == NULL || (obj = OBJ_txt2obj(key_oid, 1)) == NULL ||
		    !OBJ_find_sigid_by_algs(&sig, NID_sha256, OBJ_obj2nid(obj))) {
			fprintf(stderr, "iamsign-bench: key algorithm %s: use --algo\n",
			        key_oid ? key_oid : "(none)");
			goto out;
		}
		ASN1_OBJECT_free(obj);
		obj = OBJ_dup(OBJ_nid2obj(sig));
	}
	if (obj == NULL || OBJ_obj2txt(out, (int)outlen, obj, 1) <= 0)
		goto out;
	r = 0;
out:
	ASN1_OBJECT_free(obj);
	json_decref(req);
	json_decref(resp);
	return r;
}

static int bench_daemon(const struct opts *o)
{
	struct run run = {.mode = MODE_DAEMON,
	                  .seconds = o->seconds,
	                  .socket = o->socket,
	                  .mu = PTHREAD_MUTEX_INITIALIZER,
	                  .cv = PTHREAD_COND_INITIALIZER};
	unsigned char dig[32];
	char algo[64], b64[64];
	json_t *req = NULL;
	char *body = NULL;
	size_t i;
	int r = -1, failed = 0;

	char first[160];
	struct opts o1;
	const char *spread_base = o->credential;

	if (o->credential == NULL) {
		fprintf(stderr, "iamsign-bench: --credential is required\n");
		return -1;
	}
	if (o->spread > 0) { /* the algorithm and the warm-up from BASE-1 */
		o1 = *o;
		snprintf(first, sizeof(first), "%s-1", o->credential);
		o1.credential = first;
		o = &o1;
	}
	if (sign_algo(o, algo, sizeof(algo)) != 0)
		goto out;
	if (!EVP_Digest("iamsign-bench", 13, dig, NULL, EVP_sha256(), NULL))
		goto out;
	EVP_EncodeBlock((unsigned char *)b64, dig, sizeof(dig));
	req = json_pack("{s:s, s:[s], s:s, s:s}", "credentialID", o->credential, "hashes", b64,
	                "hashAlgorithmOID", "2.16.840.1.101.3.4.2.1", "signAlgo", algo);
	if (req == NULL ||
	    (o->purpose != NULL && json_object_set_new(req, "purpose", json_string(o->purpose))))
		goto out;
	if ((body = json_dumps(req, JSON_COMPACT)) == NULL)
		goto out;
	run.body = body;
	if (o->spread > 0) {
		run.spread = o->spread;
		run.base = spread_base;
		run.b64 = b64;
		run.algo = algo;
		run.purpose = o->purpose;
	}
	for (i = 0; i < o->nconc; i++)
		if (run_once(&run, o->conc[i]) != 0)
			failed = 1;
	r = failed ? -1 : 0;
out:
	free(body);
	json_decref(req);
	return r;
}

static int bench_raw(const struct opts *o)
{
	struct run run = {.mode = MODE_RAW,
	                  .seconds = o->seconds,
	                  .mu = PTHREAD_MUTEX_INITIALIZER,
	                  .cv = PTHREAD_COND_INITIALIZER};
	struct config *cfg = NULL;
	struct tok_opts to = {0};
	char err[512] = "";
	size_t i;
	int e, r = -1, failed = 0;

	if (o->config == NULL || o->key_uri == NULL) {
		fprintf(stderr, "iamsign-bench: --raw needs -c CONFIG and --key-uri URI\n");
		return -1;
	}
	if (config_load(o->config, &cfg, err, sizeof(err)) != 0) {
		fprintf(stderr, "iamsign-bench: %s\n", err);
		goto out;
	}
	to.module = cfg->token_module;
	to.module_dirs = (const char *const *)cfg->token_module_dirs;
	to.uri = cfg->token_uri;
	to.pin_file = cfg->token_pin_file;
	to.require_initialized = 1;
	if ((e = tok_open(&to, &run.tok, err, sizeof(err))) != TOK_OK) {
		fprintf(stderr, "iamsign-bench: %s: %s\n", tok_strerror(e), err);
		goto out;
	}
	if ((e = tok_key_get(run.tok, o->key_uri, &run.key)) != TOK_OK) {
		fprintf(stderr, "iamsign-bench: %s: %s\n", o->key_uri, tok_strerror(e));
		goto out;
	}
	run.sp.scheme = run.key->type == TOK_KEY_EC ? TOK_ECDSA : TOK_RSA_PKCS1;
	run.sp.hash_nid = NID_sha256;
	if (!EVP_Digest("iamsign-bench", 13, run.dig, NULL, EVP_sha256(), NULL))
		goto out;
	for (i = 0; i < o->nconc; i++)
		if (run_once(&run, o->conc[i]) != 0)
			failed = 1;
	r = failed ? -1 : 0;
out:
	if (run.tok != NULL)
		tok_close(run.tok);
	config_free(cfg);
	return r;
}

/* ---- main ---- */

static int parse_uint(const char *s, unsigned lo, unsigned hi, unsigned *out)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || *s == '-' || v < lo || v > hi)
		return -1;
	*out = (unsigned)v;
	return 0;
}

/* "1,2,4" into o->conc. */
static int parse_list(const char *s, struct opts *o)
{
	char buf[256], *tok, *save = NULL;

	if ((size_t)snprintf(buf, sizeof(buf), "%s", s) >= sizeof(buf))
		return -1;
	o->nconc = 0;
	for (tok = strtok_r(buf, ",", &save); tok != NULL; tok = strtok_r(NULL, ",", &save)) {
		if (o->nconc == MAX_LIST || parse_uint(tok, 1, MAX_CONC, &o->conc[o->nconc]) != 0)
			return -1;
		o->nconc++;
	}
	return o->nconc ? 0 : -1;
}

/* ---- --issue: certificates for tools/bench --scale ----
 *
 * Every CSRDIR/ID.csr, its signature checked, becomes OUTDIR/ID.pem: a certificate from the
 * test CA (CA.pem, CA.key) for the request's subject and key, valid 30 days, digitalSignature
 * and nonRepudiation. What `openssl x509 -req` does, without a process per certificate. */
static int issue_one(const char *in, const char *out, X509 *ca, EVP_PKEY *cakey)
{
	FILE *f = NULL;
	X509_REQ *req = NULL;
	X509 *x = NULL;
	X509V3_CTX ctx;
	X509_EXTENSION *ext;
	EVP_PKEY *pk;
	unsigned char serial[16];
	BIGNUM *bn = NULL;
	int r = -1;

	if ((f = fopen(in, "r")) == NULL || (req = PEM_read_X509_REQ(f, NULL, NULL, NULL)) == NULL)
		goto out;
	fclose(f);
	f = NULL;
	if ((pk = X509_REQ_get0_pubkey(req)) == NULL || X509_REQ_verify(req, pk) != 1)
		goto out;
	if (RAND_bytes(serial, sizeof(serial)) != 1)
		goto out;
	serial[0] &= 0x7f;
	if ((x = X509_new()) == NULL || !X509_set_version(x, 2) ||
	    (bn = BN_bin2bn(serial, sizeof(serial), NULL)) == NULL ||
	    !BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) ||
	    !X509_set_subject_name(x, X509_REQ_get_subject_name(req)) ||
	    !X509_set_issuer_name(x, X509_get_subject_name(ca)) || !X509_set_pubkey(x, pk) ||
	    !X509_gmtime_adj(X509_getm_notBefore(x), -60) ||
	    !X509_gmtime_adj(X509_getm_notAfter(x), 30L * 86400))
		goto out;
	X509V3_set_ctx(&ctx, ca, x, NULL, NULL, 0);
	if ((ext = X509V3_EXT_conf_nid(NULL, &ctx, NID_basic_constraints, "critical,CA:FALSE")) ==
	        NULL ||
	    !X509_add_ext(x, ext, -1))
		goto out;
	X509_EXTENSION_free(ext);
	if ((ext = X509V3_EXT_conf_nid(NULL, &ctx, NID_key_usage,
	                               "critical,digitalSignature,nonRepudiation")) == NULL ||
	    !X509_add_ext(x, ext, -1))
		goto out;
	X509_EXTENSION_free(ext);
	if (!X509_sign(x, cakey, EVP_sha256()))
		goto out;
	if ((f = fopen(out, "w")) == NULL || !PEM_write_X509(f, x))
		goto out;
	r = 0;
out:
	if (f != NULL && fclose(f) != 0)
		r = -1;
	BN_free(bn);
	X509_free(x);
	X509_REQ_free(req);
	return r;
}

static int issue_certs(const char *const a[4])
{
	DIR *d = NULL;
	struct dirent *de;
	FILE *f;
	X509 *ca = NULL;
	EVP_PKEY *cakey = NULL;
	char in[4096], out[4096];
	unsigned long n = 0;
	uint64_t t0 = now_ns();
	size_t len;
	int r = -1;

	if ((f = fopen(a[2], "r")) != NULL) {
		ca = PEM_read_X509(f, NULL, NULL, NULL);
		fclose(f);
	}
	if ((f = fopen(a[3], "r")) != NULL) {
		cakey = PEM_read_PrivateKey(f, NULL, NULL, NULL);
		fclose(f);
	}
	if (ca == NULL || cakey == NULL || (d = opendir(a[0])) == NULL) {
		fprintf(stderr, "iamsign-bench: --issue: cannot read the CA or %s\n", a[0]);
		goto out;
	}
	while ((de = readdir(d)) != NULL) {
		len = strlen(de->d_name);
		if (len <= 4 || strcmp(de->d_name + len - 4, ".csr") != 0 || de->d_name[0] == '.')
			continue;
		snprintf(in, sizeof(in), "%s/%s", a[0], de->d_name);
		snprintf(out, sizeof(out), "%s/%.*s.pem", a[1], (int)(len - 4), de->d_name);
		if (issue_one(in, out, ca, cakey) != 0) {
			fprintf(stderr, "iamsign-bench: --issue: %s refused\n", in);
			goto out;
		}
		n++;
	}
	printf("issue certs=%lu seconds=%.2f\n", n, (double)(now_ns() - t0) / 1e9);
	r = 0;
out:
	if (d != NULL)
		closedir(d);
	X509_free(ca);
	EVP_PKEY_free(cakey);
	return r;
}

static void usage(FILE *f)
{
	fprintf(
	    f, "usage: iamsign-bench [--socket S] --credential ID [--clients 1,2,4] [--seconds N]\n"
	       "                     [--algo NAME|OID] [--purpose P] [--spread N]\n"
	       "       iamsign-bench --issue CSRDIR OUTDIR CA.pem CA.key\n"
	       "       iamsign-bench --raw -c iamsignd.yaml --key-uri URI [--threads 1,2,4]\n"
	       "                     [--seconds N]\n");
}

int main(int argc, char **argv)
{
	enum {
		O_SOCKET = 256,
		O_CRED,
		O_CLIENTS,
		O_SECONDS,
		O_ALGO,
		O_PURPOSE,
		O_RAW,
		O_KEY,
		O_SPREAD,
		O_ISSUE
	};
	static const struct option longopts[] = {
	    {"socket", required_argument, NULL, O_SOCKET},
	    {"credential", required_argument, NULL, O_CRED},
	    {"clients", required_argument, NULL, O_CLIENTS},
	    {"threads", required_argument, NULL, O_CLIENTS},
	    {"seconds", required_argument, NULL, O_SECONDS},
	    {"algo", required_argument, NULL, O_ALGO},
	    {"purpose", required_argument, NULL, O_PURPOSE},
	    {"raw", no_argument, NULL, O_RAW},
	    {"config", required_argument, NULL, 'c'},
	    {"key-uri", required_argument, NULL, O_KEY},
	    {"spread", required_argument, NULL, O_SPREAD},
	    {"issue", required_argument, NULL, O_ISSUE},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	struct opts o = {.seconds = 5, .conc = {1, 2, 4}, .nconc = 3, .mode = MODE_DAEMON};
	int ch, r;

	while ((ch = getopt_long(argc, argv, "c:h", longopts, NULL)) != -1) {
		switch (ch) {
		case O_SOCKET:
			o.socket = optarg;
			break;
		case O_CRED:
			o.credential = optarg;
			break;
		case O_CLIENTS:
			if (parse_list(optarg, &o) != 0) {
				fprintf(stderr,
				        "iamsign-bench: %s: want a list like 1,2,4 (1..%d)\n",
				        optarg, MAX_CONC);
				return 2;
			}
			break;
		case O_SECONDS:
			if (parse_uint(optarg, 1, MAX_SECONDS, &o.seconds) != 0) {
				fprintf(stderr, "iamsign-bench: --seconds: 1..%d\n", MAX_SECONDS);
				return 2;
			}
			break;
		case O_ALGO:
			o.algo = optarg;
			break;
		case O_PURPOSE:
			o.purpose = optarg;
			break;
		case O_RAW:
			o.mode = MODE_RAW;
			break;
		case 'c':
			o.config = optarg;
			break;
		case O_KEY:
			o.key_uri = optarg;
			break;
		case O_SPREAD:
			if (parse_uint(optarg, 1, 100000000, &o.spread) != 0) {
				fprintf(stderr, "iamsign-bench: --spread: 1..100000000\n");
				return 2;
			}
			break;
		case O_ISSUE:
			o.issue[0] = optarg;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (o.issue[0] != NULL) {
		if (argc - optind != 3) {
			usage(stderr);
			return 2;
		}
		o.issue[1] = argv[optind];
		o.issue[2] = argv[optind + 1];
		o.issue[3] = argv[optind + 2];
		return issue_certs(o.issue) == 0 ? 0 : 1;
	}
	if (optind != argc) {
		usage(stderr);
		return 2;
	}
	if (o.socket == NULL)
		o.socket = getenv("IAMSIGN_SOCKET");
	if (o.socket == NULL || *o.socket == '\0')
		o.socket = DEFAULT_SOCKET;
	signal(SIGPIPE, SIG_IGN);

	if (o.mode == MODE_RAW)
		return bench_raw(&o) == 0 ? 0 : 1;
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
		fprintf(stderr, "iamsign-bench: cannot initialise libcurl\n");
		return 1;
	}
	r = bench_daemon(&o);
	curl_global_cleanup();
	return r == 0 ? 0 : 1;
}
