/* iamsign-bench: signing throughput and latency, through iamsignd and against the raw token.
 *
 * Daemon mode: N closed-loop clients, each one persistent libcurl handle (HTTP keep-alive on
 * the Unix socket), all driven by one thread through curl's multi interface, send
 * signatures/signHash with --hashes SHA-256 digests (default 1) in a loop. Request bodies are
 * built before the timed window; with --sad-key each request carries a fresh SAD (ES256, a
 * fresh jti) taken from a pool minted before the window, so that the client's own cost stays
 * small: the line reports it as client_cpu_us (this process's user + system CPU per request).
 * Raw mode: N threads call the module's C_SignInit/C_Sign on the configured token and key
 * in-process (after one checked tok_sign_digest() warm-up): the ceiling the daemon is
 * measured against. With --sad-key, each operation also verifies one ES256 SAD (JWS signing
 * input, SHA-256 + ECDSA P-256 verify with OpenSSL): the citizen path's baseline.
 * Each run prints one machine-readable line:
 *   daemon clients=2 ops=... rate=.../s p50_us=... p99_us=... errors=0 hashes=1 sigs=.../s
 *          client_cpu_us=...
 *   raw threads=2 ops=... rate=.../s p50_us=... p99_us=... errors=0   ("rawsad" with --sad-key)
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

#include <sys/resource.h>

#include <curl/curl.h>
#include <jansson.h>
#include <dirent.h>
#include <openssl/ec.h>
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
#define MAX_HASHES 64             /* --hashes */
#define MAX_REQ 16384             /* one request body */
#define SAD_POOL_PER_SECOND 6000u /* default SADs minted per second of a run */
#define OID_SHA256 "2.16.840.1.101.3.4.2.1"

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
	unsigned nhashes;     /* --hashes N per request */
	const char *sad_key;  /* --sad-key: the SAD issuer's private key (PEM) */
	const char *sad_user; /* --sad-user: the SAD's sub */
	unsigned sad_pool;    /* --sad-pool: SADs minted before each run (0: default) */
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
	unsigned conc; /* connections, all driven by one thread */
	unsigned sad_pool_n;
	const char *socket;
	const char *body;
	unsigned nhashes;
	const char *hashes; /* the JSON array's contents: "h1","h2",.. */
	/* --spread: body of each request built from these */
	unsigned spread;
	const char *base, *algo, *purpose;
	/* --sad-key: bodies with a fresh SAD each, minted before the window into pool[] (and
	 * on the spot, counted in sad_inline, once it is used up) */
	EVP_PKEY *sad_key;
	const char *cred, *sad_user;
	char **pool;
	size_t npool, next;
	uint64_t sad_inline;
	/* raw */
	struct token *tok;
	const struct tok_key *key;
	struct tok_sign_params sp;
	uint8_t dig[32];
	/* raw --sad-key: one SAD whose signature each operation verifies */
	EVP_PKEY *vkey;
	const uint8_t *vin, *vsig;
	size_t vinlen, vsiglen;
};

struct worker {
	pthread_t th;
	struct run *run;
	uint64_t ops, errors;
	uint32_t *lat; /* microseconds, one per successful operation while room remains */
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

/* ---- SAD minting (the citizen's approval, as tests/mint-sad makes it) ---- */

/* base64url without padding of in into out (room for 4 * ((n + 2) / 3) + 1). */
static size_t b64url(const uint8_t *in, size_t n, char *out)
{
	size_t len = (size_t)EVP_EncodeBlock((unsigned char *)out, in, (int)n), i;

	while (len > 0 && out[len - 1] == '=')
		len--;
	out[len] = '\0';
	for (i = 0; i < len; i++)
		out[i] = out[i] == '+' ? '-' : out[i] == '/' ? '_' : out[i];
	return len;
}

/* A compact JWS, header {"alg":"ES256"}, over claims for cred/sub/purpose approving the run's
 * hashes (num = their count), iat now, exp now + 300 s, a fresh random jti. The signing input
 * ends at *sep (the '.' before the signature); with der_out, the signature in DER goes there
 * as well (room for *der_len, set to its length). 0, or -1 if it does not fit or fails. */
static int mint_sad(EVP_PKEY *key, const char *cred, const char *sub, const char *purpose,
                    const char *hashes, unsigned num, char *out, size_t outlen, size_t *sep,
                    uint8_t *der_out, size_t *der_len)
{
	char claims[MAX_REQ / 2], jti[33];
	uint8_t rnd[16], der[80], raw[64];
	const uint8_t *p = der;
	size_t len, derlen = sizeof(der), i;
	EVP_MD_CTX *md = NULL;
	ECDSA_SIG *es = NULL;
	const BIGNUM *r, *s;
	long long now = (long long)time(NULL);
	int n, rc = -1;

	if (RAND_bytes(rnd, sizeof(rnd)) != 1)
		return -1;
	for (i = 0; i < sizeof(rnd); i++)
		snprintf(jti + 2 * i, 3, "%02x", rnd[i]);
	n = snprintf(claims, sizeof(claims),
	             "{\"iss\":\"iamsign-bench\",\"sub\":\"%s\",\"cred\":\"%s\",\"hashes\":[%s],"
	             "\"halg\":\"" OID_SHA256 "\",\"num\":%u,\"purpose\":\"%s\",\"iat\":%lld,"
	             "\"exp\":%lld,\"jti\":\"%s\"}",
	             sub, cred, hashes, num, purpose, now, now + 300, jti);
	/* header, payload and signature in base64url, with their dots */
	if (n < 0 || (size_t)n >= sizeof(claims) || outlen < 21 + 4 * ((size_t)n + 2) / 3 + 90)
		return -1;
	len = (size_t)snprintf(out, outlen, "%s.", "eyJhbGciOiJFUzI1NiJ9");
	len += b64url((const uint8_t *)claims, (size_t)n, out + len);
	if ((md = EVP_MD_CTX_new()) == NULL ||
	    EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, key) != 1 ||
	    EVP_DigestSign(md, der, &derlen, (const uint8_t *)out, len) != 1 ||
	    (es = d2i_ECDSA_SIG(NULL, &p, (long)derlen)) == NULL)
		goto out;
	ECDSA_SIG_get0(es, &r, &s);
	if (BN_bn2binpad(r, raw, 32) != 32 || BN_bn2binpad(s, raw + 32, 32) != 32)
		goto out;
	if (der_out != NULL) {
		if (derlen > *der_len)
			goto out;
		memcpy(der_out, der, derlen);
		*der_len = derlen;
	}
	*sep = len;
	out[len++] = '.';
	b64url(raw, sizeof(raw), out + len);
	rc = 0;
out:
	ECDSA_SIG_free(es);
	EVP_MD_CTX_free(md);
	return rc;
}

/* A signHash body with a fresh SAD, into out. 0 or -1. */
static int sad_body(const struct run *run, char *out, size_t outlen)
{
	char sad[MAX_REQ / 2 + 256];
	size_t sep;
	int n;

	if (mint_sad(run->sad_key, run->cred, run->sad_user, run->purpose, run->hashes,
	             run->nhashes, sad, sizeof(sad), &sep, NULL, NULL) != 0)
		return -1;
	n = snprintf(out, outlen,
	             "{\"credentialID\":\"%s\",\"SAD\":\"%s\",\"hashes\":[%s],"
	             "\"hashAlgorithmOID\":\"" OID_SHA256 "\",\"signAlgo\":\"%s\","
	             "\"purpose\":\"%s\"}",
	             run->cred, sad, run->hashes, run->algo, run->purpose);
	return n < 0 || (size_t)n >= outlen ? -1 : 0;
}

static void pool_free(struct run *run)
{
	size_t i;

	for (i = 0; i < run->npool; i++)
		free(run->pool[i]);
	free(run->pool);
	run->pool = NULL;
	run->npool = run->next = 0;
}

/* n bodies with a fresh SAD each, minted before the timed window. */
static int pool_fill(struct run *run, size_t n)
{
	char buf[MAX_REQ];

	pool_free(run);
	if ((run->pool = calloc(n, sizeof(*run->pool))) == NULL)
		return -1;
	for (; run->npool < n; run->npool++)
		if (sad_body(run, buf, sizeof(buf)) != 0 ||
		    (run->pool[run->npool] = strdup(buf)) == NULL)
			return -1;
	return 0;
}

/* ---- daemon mode ---- */

/* One client: its easy handle (one keep-alive connection), its answer, its request's start. */
struct conn {
	CURL *h;
	struct body b;
	char errbuf[CURL_ERROR_SIZE];
	uint64_t t0, rng;
	char own[MAX_REQ]; /* --spread, or a SAD minted once the pool is used up */
};

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

static int conn_setup(struct conn *c, const struct run *run, struct curl_slist *hdrs)
{
	if ((c->h = curl_easy_init()) == NULL)
		return -1;
	curl_easy_setopt(c->h, CURLOPT_UNIX_SOCKET_PATH, run->socket);
	curl_easy_setopt(c->h, CURLOPT_URL, "http://localhost/csc/v2/signatures/signHash");
	curl_easy_setopt(c->h, CURLOPT_HTTPHEADER, hdrs);
	curl_easy_setopt(c->h, CURLOPT_POSTFIELDS, run->body);
	curl_easy_setopt(c->h, CURLOPT_POSTFIELDSIZE, (long)strlen(run->body));
	curl_easy_setopt(c->h, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(c->h, CURLOPT_WRITEDATA, &c->b);
	curl_easy_setopt(c->h, CURLOPT_ERRORBUFFER, c->errbuf);
	curl_easy_setopt(c->h, CURLOPT_PRIVATE, c);
	curl_easy_setopt(c->h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c->h, CURLOPT_TIMEOUT, REQUEST_TIMEOUT);
	/* no proxy: also spares the look-up of the proxy variables on every request */
	curl_easy_setopt(c->h, CURLOPT_PROXY, "");
	return 0;
}

/* The body of c's next request: the run's own (set once), a --spread one, or one with a fresh
 * SAD from the pool (minted here once the pool is used up). */
static int next_body(struct run *run, struct conn *c)
{
	const char *body = NULL;
	unsigned k;
	int n;

	if (run->spread > 0) {
		if (c->rng == 0 && RAND_bytes((unsigned char *)&c->rng, sizeof(c->rng)) != 1)
			c->rng = (uint64_t)(uintptr_t)c | 1;
		c->rng ^= c->rng << 13;
		c->rng ^= c->rng >> 7;
		c->rng ^= c->rng << 17;
		k = (unsigned)(c->rng % run->spread) + 1;
		n = snprintf(c->own, sizeof(c->own),
		             "{\"credentialID\":\"%s-%u\",\"hashes\":[%s],"
		             "\"hashAlgorithmOID\":\"" OID_SHA256 "\",\"signAlgo\":\"%s\"%s%s%s}",
		             run->base, k, run->hashes, run->algo,
		             run->purpose ? ",\"purpose\":\"" : "",
		             run->purpose ? run->purpose : "", run->purpose ? "\"" : "");
		if (n < 0 || (size_t)n >= sizeof(c->own))
			return -1;
		body = c->own;
	} else if (run->sad_key != NULL && run->next < run->npool) {
		body = run->pool[run->next++];
	} else if (run->sad_key != NULL) {
		if (sad_body(run, c->own, sizeof(c->own)) != 0)
			return -1;
		run->sad_inline++;
		body = c->own;
	}
	if (body != NULL) {
		curl_easy_setopt(c->h, CURLOPT_POSTFIELDS, body);
		curl_easy_setopt(c->h, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
	}
	return 0;
}

/* c's answer: 0 if 200 (in the warm-up, with as many signatures as hashes), else -1 with the
 * reason noted. */
static int conn_check(struct worker *w, struct conn *c, CURLcode cr, int warm)
{
	long status = 0;
	json_t *j;
	int r = 0;

	if (cr != CURLE_OK) {
		set_error(w, "%s", c->errbuf[0] ? c->errbuf : curl_easy_strerror(cr));
		return -1;
	}
	curl_easy_getinfo(c->h, CURLINFO_RESPONSE_CODE, &status);
	if (status != 200) {
		set_error(w, "%s (HTTP %ld)", c->b.p, status);
		return -1;
	}
	if (warm) {
		j = json_loads(c->b.p, 0, NULL);
		if (json_array_size(json_object_get(j, "signatures")) != w->run->nhashes) {
			set_error(w, "not %u signatures in the answer: %s", w->run->nhashes,
			          c->b.p);
			r = -1;
		}
		json_decref(j);
	}
	return r;
}

static int conn_start(CURLM *m, struct run *run, struct conn *c)
{
	if (next_body(run, c) != 0)
		return -1;
	c->b.len = 0;
	c->b.p[0] = '\0';
	c->b.overflow = 0;
	c->errbuf[0] = '\0';
	c->t0 = now_ns();
	return curl_multi_add_handle(m, c->h) == CURLM_OK ? 0 : -1;
}

/* Drive the n started requests in m until none is left. A request that completes is checked
 * and, while the clock is before deadline (0: never, the warm-up), sent again at once: n
 * closed-loop clients on one thread. */
static void drive(CURLM *m, struct worker *w, unsigned n, uint64_t deadline)
{
	struct run *run = w->run;
	unsigned active = n;
	int running, left, again;
	struct conn *c;
	CURLMsg *msg;
	uint64_t t1;

	while (active > 0) {
		curl_multi_perform(m, &running);
		again = 0;
		while ((msg = curl_multi_info_read(m, &left)) != NULL) {
			if (msg->msg != CURLMSG_DONE)
				continue;
			curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&c);
			t1 = now_ns();
			if (conn_check(w, c, msg->data.result, deadline == 0) == 0) {
				if (deadline != 0) {
					w->ops++;
					record(w, t1 - c->t0);
				}
			} else {
				w->errors++;
				if (deadline == 0)
					w->setup_failed = 1;
			}
			curl_multi_remove_handle(m, c->h);
			if (t1 < deadline && conn_start(m, run, c) == 0) {
				again = 1;
			} else {
				if (t1 < deadline) {
					set_error(w, "cannot start a request");
					w->errors++;
				}
				active--;
			}
		}
		if (active > 0 && !again)
			curl_multi_poll(m, NULL, 0, 100, NULL);
	}
}

static void daemon_worker(struct worker *w)
{
	struct run *run = w->run;
	struct curl_slist *hdrs = NULL;
	struct conn *conns = NULL;
	CURLM *m = NULL;
	unsigned i, started = 0;

	if ((hdrs = curl_slist_append(NULL, "Content-Type: application/json")) == NULL ||
	    (hdrs = curl_slist_append(hdrs, "Expect:")) == NULL ||
	    (conns = calloc(run->conc, sizeof(*conns))) == NULL ||
	    (m = curl_multi_init()) == NULL) {
		set_error(w, "cannot set up libcurl");
		w->setup_failed = 1;
		goto ready;
	}
	/* every connection stays open for the next request */
	curl_multi_setopt(m, CURLMOPT_MAXCONNECTS, (long)run->conc + 1);
	for (i = 0; i < run->conc; i++) {
		if (conn_setup(&conns[i], run, hdrs) != 0 || conn_start(m, run, &conns[i]) != 0) {
			set_error(w, "cannot set up libcurl");
			w->setup_failed = 1;
			break;
		}
		started++;
	}
	/* warm-up: opens the connections kept for the run, checks one answer each */
	drive(m, w, started, 0);
ready:
	if (w->setup_failed && w->errors == 0)
		w->errors++;
	if (wait_start(run) != 0 || w->setup_failed)
		goto out;
	for (i = 0; i < run->conc; i++)
		if (conn_start(m, run, &conns[i]) != 0)
			break;
	drive(m, w, i, now_ns() + (uint64_t)run->seconds * 1000000000u);
out:
	for (i = 0; conns != NULL && i < run->conc; i++)
		if (conns[i].h != NULL)
			curl_easy_cleanup(conns[i].h);
	free(conns);
	if (m != NULL)
		curl_multi_cleanup(m);
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
	EVP_MD_CTX *md = NULL;
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
	if (run->vkey != NULL && (md = EVP_MD_CTX_new()) == NULL) {
		set_error(w, "out of memory");
		w->setup_failed = 1;
	}
	if (w->setup_failed)
		w->errors++;
	if (wait_start(run) != 0 || w->setup_failed)
		goto out;
	/* The timed loop is the module's own C_SignInit + C_Sign on this thread's session, as
	 * bare as a PKCS#11 client gets: the baseline the daemon is measured against. */
	fl = tok_functions(run->tok);
	if ((e = tok_session(run->tok, &sess)) != TOK_OK) {
		set_error(w, "tok_session: %s", tok_strerror(e));
		w->errors++;
		goto out;
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
			goto out;
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
		/* the citizen path's baseline: one ES256 verification of a SAD as well */
		if (rv == CKR_OK && md != NULL &&
		    (EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, run->vkey) != 1 ||
		     EVP_DigestVerify(md, run->vsig, run->vsiglen, run->vin, run->vinlen) != 1)) {
			set_error(w, "the SAD's ES256 signature does not verify");
			rv = CKR_GENERAL_ERROR;
		}
		t1 = now_ns();
		if (rv == CKR_OK) {
			w->ops++;
			record(w, t1 - t0);
		} else {
			w->errors++;
			set_error(w, "C_Sign: %s", tok_strerror(tok_err_from_rv(rv)));
		}
	} while (t1 < deadline);
out:
	EVP_MD_CTX_free(md);
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
	/* the daemon's clients are all driven by one thread */
	unsigned nthreads = run->mode == MODE_DAEMON ? 1 : conc;
	uint32_t *all = NULL;
	uint64_t ops = 0, errors = 0, t0, t1, cpu;
	size_t nall = 0, i, started = 0;
	struct rusage ru0, ru1;
	int setup_failed = 0, r = -1;
	double secs;
	char extra[160] = "";

	if (w == NULL) {
		fprintf(stderr, "iamsign-bench: out of memory\n");
		return -1;
	}
	run->ready = 0;
	run->go = 0;
	run->cancel = 0;
	run->conc = conc;
	run->sad_inline = 0;
	if (run->mode == MODE_DAEMON && run->sad_key != NULL &&
	    pool_fill(run, (size_t)run->sad_pool_n) != 0) {
		fprintf(stderr, "iamsign-bench: cannot mint the SADs\n");
		goto out;
	}
	for (i = 0; i < nthreads; i++) {
		w[i].run = run;
		if (pthread_create(&w[i].th, NULL, worker_main, &w[i]) != 0)
			break;
		started++;
	}
	pthread_mutex_lock(&run->mu);
	while (run->ready < started)
		pthread_cond_wait(&run->cv, &run->mu);
	run->cancel = started != nthreads;
	run->go = 1;
	getrusage(RUSAGE_SELF, &ru0);
	pthread_cond_broadcast(&run->cv);
	pthread_mutex_unlock(&run->mu);
	t0 = now_ns();
	for (i = 0; i < started; i++)
		pthread_join(w[i].th, NULL);
	t1 = now_ns();
	getrusage(RUSAGE_SELF, &ru1);
	if (started != nthreads) {
		fprintf(stderr, "iamsign-bench: cannot start %u threads\n", nthreads);
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
	/* this process's CPU in the window: the load generator's cost per request */
	cpu = (uint64_t)(ru1.ru_utime.tv_sec - ru0.ru_utime.tv_sec + ru1.ru_stime.tv_sec -
	                 ru0.ru_stime.tv_sec) *
	          1000000u +
	      (uint64_t)(ru1.ru_utime.tv_usec - ru0.ru_utime.tv_usec + ru1.ru_stime.tv_usec -
	                 ru0.ru_stime.tv_usec);
	if (run->mode == MODE_DAEMON)
		snprintf(extra, sizeof(extra),
		         " hashes=%u sigs=%.0f/s client_cpu_us=%.1f sad_inline=%llu", run->nhashes,
		         secs > 0 ? (double)ops * run->nhashes / secs : 0.0,
		         ops ? (double)cpu / (double)ops : 0.0,
		         (unsigned long long)run->sad_inline);
	printf("%s %s=%u ops=%llu rate=%.0f/s p50_us=%u p99_us=%u errors=%llu%s%s\n",
	       run->mode == MODE_DAEMON ? "daemon"
	       : run->vkey != NULL      ? "rawsad"
	                                : "raw",
	       run->mode == MODE_DAEMON ? "clients" : "threads", conc, (unsigned long long)ops,
	       secs > 0 ? (double)ops / secs : 0.0, percentile(all, nall, 50),
	       percentile(all, nall, 99), (unsigned long long)errors, extra,
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
	pool_free(run);
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

/* The JSON array contents "h1","h2",.. of n SHA-256 digests (the first of "iamsign-bench",
 * the k-th of "iamsign-bench-k"), into out. */
static int hash_list(unsigned n, char *out, size_t outlen)
{
	unsigned char dig[32];
	char in[32], b64[48];
	size_t len = 0;
	unsigned k;
	int m;

	for (k = 0; k < n; k++) {
		m = k ? snprintf(in, sizeof(in), "iamsign-bench-%u", k)
		      : snprintf(in, sizeof(in), "iamsign-bench");
		if (!EVP_Digest(in, (size_t)m, dig, NULL, EVP_sha256(), NULL))
			return -1;
		EVP_EncodeBlock((unsigned char *)b64, dig, sizeof(dig));
		m = snprintf(out + len, outlen - len, "%s\"%s\"", k ? "," : "", b64);
		if (m < 0 || (size_t)m >= outlen - len)
			return -1;
		len += (size_t)m;
	}
	return 0;
}

/* Names put into JSON text as they are: nothing that would need escaping. */
static int json_plain(const char *what, const char *s)
{
	for (; s != NULL && *s != '\0'; s++) {
		if (*s == '"' || *s == '\\' || (unsigned char)*s < 0x20) {
			fprintf(stderr,
			        "iamsign-bench: %s: no quotes, backslashes or control "
			        "characters\n",
			        what);
			return -1;
		}
	}
	return 0;
}

static EVP_PKEY *read_key(const char *path)
{
	EVP_PKEY *k = NULL;
	FILE *f = fopen(path, "r");

	if (f != NULL) {
		k = PEM_read_PrivateKey(f, NULL, NULL, NULL);
		fclose(f);
	}
	if (k == NULL || EVP_PKEY_get_base_id(k) != EVP_PKEY_EC) {
		fprintf(stderr, "iamsign-bench: %s: not an EC P-256 private key\n", path);
		EVP_PKEY_free(k);
		return NULL;
	}
	return k;
}

static int bench_daemon(const struct opts *o)
{
	struct run run = {.mode = MODE_DAEMON,
	                  .seconds = o->seconds,
	                  .socket = o->socket,
	                  .nhashes = o->nhashes,
	                  .mu = PTHREAD_MUTEX_INITIALIZER,
	                  .cv = PTHREAD_COND_INITIALIZER};
	char algo[64], hashes[MAX_HASHES * 48], body[MAX_REQ];
	size_t i;
	int n, r = -1, failed = 0;

	char first[160];
	struct opts o1;
	const char *spread_base = o->credential;

	if (o->credential == NULL) {
		fprintf(stderr, "iamsign-bench: --credential is required\n");
		return -1;
	}
	if (o->sad_key != NULL && (o->sad_user == NULL || o->purpose == NULL || o->spread > 0)) {
		fprintf(stderr, "iamsign-bench: --sad-key needs --sad-user and --purpose, and "
		                "does not go with --spread\n");
		return -1;
	}
	if (json_plain("--credential", o->credential) != 0 ||
	    json_plain("--purpose", o->purpose) != 0 || json_plain("--sad-user", o->sad_user) != 0)
		return -1;
	if (o->spread > 0) { /* the algorithm and the warm-up from BASE-1 */
		o1 = *o;
		snprintf(first, sizeof(first), "%s-1", o->credential);
		o1.credential = first;
		o = &o1;
	}
	if (sign_algo(o, algo, sizeof(algo)) != 0 || hash_list(o->nhashes, hashes, sizeof(hashes)))
		goto out;
	n = snprintf(body, sizeof(body),
	             "{\"credentialID\":\"%s\",\"hashes\":[%s],\"hashAlgorithmOID\":\"" OID_SHA256
	             "\",\"signAlgo\":\"%s\"%s%s%s}",
	             o->credential, hashes, algo, o->purpose ? ",\"purpose\":\"" : "",
	             o->purpose ? o->purpose : "", o->purpose ? "\"" : "");
	if (n < 0 || (size_t)n >= sizeof(body))
		goto out;
	run.body = body;
	run.hashes = hashes;
	run.algo = algo;
	run.purpose = o->purpose;
	if (o->spread > 0) {
		run.spread = o->spread;
		run.base = spread_base;
	}
	if (o->sad_key != NULL) {
		if ((run.sad_key = read_key(o->sad_key)) == NULL)
			goto out;
		run.cred = o->credential;
		run.sad_user = o->sad_user;
		run.sad_pool_n = o->sad_pool ? o->sad_pool : o->seconds * SAD_POOL_PER_SECOND;
	}
	for (i = 0; i < o->nconc; i++)
		if (run_once(&run, o->conc[i]) != 0)
			failed = 1;
	r = failed ? -1 : 0;
out:
	EVP_PKEY_free(run.sad_key);
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
	EVP_PKEY *sk = NULL;
	uint8_t der[80];
	char err[512] = "", sad[MAX_REQ], hashes[64];
	size_t sep, derlen = sizeof(der);
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
	if (o->sad_key != NULL) {
		/* One SAD as the daemon gets it; each operation verifies its signature (DER, as
		 * OpenSSL takes it) over its signing input with the issuer's public key. */
		if ((sk = read_key(o->sad_key)) == NULL)
			goto out;
		if (hash_list(1, hashes, sizeof(hashes)) != 0 ||
		    mint_sad(sk, "bench", "bench", "bench", hashes, 1, sad, sizeof(sad), &sep, der,
		             &derlen) != 0) {
			fprintf(stderr, "iamsign-bench: cannot mint a SAD with %s\n", o->sad_key);
			goto out;
		}
		run.vkey = sk;
		run.vin = (const uint8_t *)sad;
		run.vinlen = sep;
		run.vsig = der;
		run.vsiglen = derlen;
	}
	for (i = 0; i < o->nconc; i++)
		if (run_once(&run, o->conc[i]) != 0)
			failed = 1;
	r = failed ? -1 : 0;
out:
	if (run.tok != NULL)
		tok_close(run.tok);
	config_free(cfg);
	EVP_PKEY_free(sk);
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
	       "                     [--algo NAME|OID] [--purpose P] [--spread N] [--hashes N]\n"
	       "                     [--sad-key ISSUER.key --sad-user U [--sad-pool N]]\n"
	       "       iamsign-bench --issue CSRDIR OUTDIR CA.pem CA.key\n"
	       "       iamsign-bench --raw -c iamsignd.yaml --key-uri URI [--threads 1,2,4]\n"
	       "                     [--seconds N] [--sad-key ISSUER.key]\n");
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
		O_ISSUE,
		O_HASHES,
		O_SAD_KEY,
		O_SAD_USER,
		O_SAD_POOL
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
	    {"hashes", required_argument, NULL, O_HASHES},
	    {"sad-key", required_argument, NULL, O_SAD_KEY},
	    {"sad-user", required_argument, NULL, O_SAD_USER},
	    {"sad-pool", required_argument, NULL, O_SAD_POOL},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	struct opts o = {
	    .seconds = 5, .conc = {1, 2, 4}, .nconc = 3, .mode = MODE_DAEMON, .nhashes = 1};
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
		case O_HASHES:
			if (parse_uint(optarg, 1, MAX_HASHES, &o.nhashes) != 0) {
				fprintf(stderr, "iamsign-bench: --hashes: 1..%d\n", MAX_HASHES);
				return 2;
			}
			break;
		case O_SAD_KEY:
			o.sad_key = optarg;
			break;
		case O_SAD_USER:
			o.sad_user = optarg;
			break;
		case O_SAD_POOL:
			if (parse_uint(optarg, 1, 10000000, &o.sad_pool) != 0) {
				fprintf(stderr, "iamsign-bench: --sad-pool: 1..10000000\n");
				return 2;
			}
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
