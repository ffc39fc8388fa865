/* iamsign: command-line client of iamsignd for scripts and operators.
 *
 * Speaks the CSC API v2 subset of docs/api.md over the daemon's Unix socket (libcurl for HTTP,
 * jansson for JSON). Documents are hashed here and only digests leave the process; `verify`
 * works offline with OpenSSL's CMS_verify. Every function returns 0 or -1 and has printed the
 * reason once when it returns -1. */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <jansson.h>
#include <openssl/pem.h> /* before cms.h, which declares PEM_read_bio_CMS with its macros */
#include <openssl/cms.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/rsa.h>
#include <openssl/ts.h>
#include <openssl/x509.h>

#include "tools/pdf.h"

#define DEFAULT_SOCKET "/run/iamsign/iamsign.sock"
#define MAX_BODY (4u << 20)  /* largest response body accepted from the daemon */
#define MAX_SAD (64u << 10)  /* largest SAD file */
#define MAX_PAGES 1000       /* credentials/list pages followed */
#define PAGE_SIZE 100        /* credentials/list maxResults */
#define REQUEST_TIMEOUT 120L /* seconds for one request, connection included */

enum { EXIT_USAGE = 2 };

struct opts {
	const char *socket;
	const char *credential;
	const char *purpose;
	const char *hash;   /* NULL: sha256, or the hash a combined --algo names */
	const char *algo;   /* NULL: from the credential's key */
	const char *sad;    /* file holding a compact JWS */
	const char *ca;     /* verify: CA certificates (PEM) */
	const char *tsa_ca; /* verify-pdf: the TSA's CA certificates (PEM); NULL: ca */
	const char *level;  /* sign, sign-pdf: Ades-B-B (NULL) or Ades-B-T */
	const char *out;    /* sign-pdf: the signed PDF */
	const char *reason; /* sign-pdf: /Reason */
	const char *name;   /* sign-pdf: /Name */
};

struct buf {
	char *p;
	size_t len;
	int overflow;
};

struct client {
	const struct opts *o;
	CURL *curl;
	struct curl_slist *hdrs;
	char *sad; /* contents of --sad, or NULL */
	char errbuf[CURL_ERROR_SIZE];
};

/* What a signing request needs besides the digest. */
struct signing {
	char *cred;
	const EVP_MD *md;
	char hash_oid[64];
	char sign_algo[64];
	char *sign_params; /* base64 DER RSASSA-PSS-params, or NULL */
};

static void usage(FILE *f)
{
	fprintf(
	    f,
	    "usage: iamsign [--socket S] [--credential ID] [--purpose P] [--hash sha256|sha384]\n"
	    "               [--algo NAME|OID] [--sad FILE] [--level B-B|B-T] COMMAND [ARGS]\n"
	    "commands:\n"
	    "  info                          print the daemon's info response\n"
	    "  credentials                   list the credentials this caller may use\n"
	    "  sign-hash FILE...             raw signature of each file into FILE.sig\n"
	    "  sign FILE...                  CAdES detached CMS of each file into FILE.p7s\n"
	    "  verify FILE FILE.p7s --ca CA.pem   verify a detached CMS locally\n"
	    "  sign-pdf FORM.pdf [--out SIGNED.pdf] [--reason TEXT] [--name TEXT]\n"
	    "                                PAdES signature by an incremental update\n"
	    "  verify-pdf SIGNED.pdf --ca CA.pem [--tsa-ca TSA-CA.pem]\n"
	    "                                check every signature of a PDF locally\n"
	    "socket: --socket, else $IAMSIGN_SOCKET, else " DEFAULT_SOCKET "\n");
}

/* ---- small helpers ---- */

static const char *jstr(const json_t *o, const char *key)
{
	const json_t *v = json_object_get(o, key);
	return json_is_string(v) ? json_string_value(v) : NULL;
}

/* Text from the daemon or a certificate goes to a terminal: control bytes become '?'. */
static void sanitize(char *s)
{
	for (; *s != '\0'; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			*s = '?';
}

static void print_safe(FILE *f, const char *s)
{
	for (; *s != '\0'; s++)
		fputc((unsigned char)*s < 0x20 || *s == 0x7f ? '?' : *s, f);
}

/* Drain OpenSSL's error queue onto one line: "prefix: reason[: detail]; reason...". */
static void print_openssl_errors(const char *prefix)
{
	const char *data, *reason;
	char buf[256];
	int flags, n = 0;
	unsigned long e;

	fprintf(stderr, "%s: ", prefix);
	while ((e = ERR_get_error_all(NULL, NULL, NULL, &data, &flags)) != 0) {
		if ((reason = ERR_reason_error_string(e)) == NULL) {
			ERR_error_string_n(e, buf, sizeof(buf));
			reason = buf;
		}
		fprintf(stderr, "%s%s", n++ ? "; " : "", reason);
		if ((flags & ERR_TXT_STRING) && data != NULL && *data != '\0')
			fprintf(stderr, ": %s", data);
	}
	fprintf(stderr, "%s\n", n ? "" : "unknown error");
}

/* Standard base64 of len bytes; NULL on allocation failure. */
static char *b64_encode(const unsigned char *p, size_t len)
{
	char *out;

	if (len > INT_MAX / 2)
		return NULL;
	out = malloc(4 * ((len + 2) / 3) + 1);
	if (out == NULL)
		return NULL;
	EVP_EncodeBlock((unsigned char *)out, p, (int)len);
	return out;
}

/* Decode standard base64 (no whitespace); *out allocated. -1 if malformed. */
static int b64_decode(const char *s, unsigned char **out, size_t *outlen)
{
	size_t n = strlen(s), pad = 0;
	unsigned char *p = NULL;
	int r = -1, k;

	*out = NULL;
	if (n == 0 || n % 4 != 0 || n > INT_MAX)
		goto out;
	if (s[n - 1] == '=')
		pad++;
	if (s[n - 2] == '=')
		pad++;
	if ((p = malloc(n / 4 * 3)) == NULL)
		goto out;
	if ((k = EVP_DecodeBlock(p, (const unsigned char *)s, (int)n)) < 0 ||
	    (size_t)k != n / 4 * 3)
		goto out;
	*outlen = (size_t)k - pad;
	*out = p;
	p = NULL;
	r = 0;
out:
	free(p);
	return r;
}

static int hash_file(const char *path, const EVP_MD *md, unsigned char *dig, unsigned *dlen)
{
	unsigned char chunk[65536];
	EVP_MD_CTX *ctx = NULL;
	FILE *f = NULL;
	size_t n;
	int r = -1;

	if ((f = fopen(path, "rb")) == NULL) {
		fprintf(stderr, "iamsign: %s: %s\n", path, strerror(errno));
		goto out;
	}
	if ((ctx = EVP_MD_CTX_new()) == NULL || !EVP_DigestInit_ex(ctx, md, NULL)) {
		print_openssl_errors("iamsign: hash");
		goto out;
	}
	while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
		if (!EVP_DigestUpdate(ctx, chunk, n)) {
			print_openssl_errors("iamsign: hash");
			goto out;
		}
	}
	if (ferror(f)) {
		fprintf(stderr, "iamsign: %s: read error\n", path);
		goto out;
	}
	if (!EVP_DigestFinal_ex(ctx, dig, dlen)) {
		print_openssl_errors("iamsign: hash");
		goto out;
	}
	r = 0;
out:
	EVP_MD_CTX_free(ctx);
	if (f != NULL)
		fclose(f);
	return r;
}

/* Write data to path through a temporary file and rename, so a failed run leaves no half file. */
static int write_file(const char *path, const unsigned char *data, size_t len)
{
	char tmp[PATH_MAX];
	int fd = -1, r = -1;
	mode_t mask;
	size_t off = 0;

	if ((size_t)snprintf(tmp, sizeof(tmp), "%s.XXXXXX", path) >= sizeof(tmp)) {
		fprintf(stderr, "iamsign: %s: path too long\n", path);
		return -1;
	}
	if ((fd = mkstemp(tmp)) < 0) {
		fprintf(stderr, "iamsign: %s: %s\n", tmp, strerror(errno));
		return -1;
	}
	mask = umask(0);
	umask(mask);
	if (fchmod(fd, 0666 & ~mask) != 0)
		goto fail;
	while (off < len) {
		ssize_t w = write(fd, data + off, len - off);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			goto fail;
		off += (size_t)w;
	}
	if (close(fd) != 0) {
		fd = -1;
		goto fail;
	}
	fd = -1;
	if (rename(tmp, path) != 0)
		goto fail;
	r = 0;
	goto out;
fail:
	fprintf(stderr, "iamsign: %s: %s\n", path, strerror(errno));
	unlink(tmp);
out:
	if (fd >= 0)
		close(fd);
	return r;
}

/* FILE + suffix into out; -1 if it does not fit. */
static int out_path(char *out, size_t outlen, const char *file, const char *suffix)
{
	if ((size_t)snprintf(out, outlen, "%s%s", file, suffix) >= outlen) {
		fprintf(stderr, "iamsign: %s: path too long\n", file);
		return -1;
	}
	return 0;
}

/* ---- HTTP to the daemon ---- */

static size_t on_body(char *data, size_t size, size_t nmemb, void *arg)
{
	struct buf *b = arg;
	size_t n = size * nmemb;
	char *p;

	if (n > MAX_BODY - b->len) {
		b->overflow = 1;
		return 0;
	}
	if ((p = realloc(b->p, b->len + n + 1)) == NULL)
		return 0;
	memcpy(p + b->len, data, n);
	b->p = p;
	b->len += n;
	b->p[b->len] = '\0';
	return n;
}

static int client_init(struct client *c, const struct opts *o)
{
	memset(c, 0, sizeof(*c));
	c->o = o;
	if ((c->curl = curl_easy_init()) == NULL)
		goto fail;
	if ((c->hdrs = curl_slist_append(NULL, "Content-Type: application/json")) == NULL)
		goto fail;
	/* The daemon answers at once; no 100-continue round trip. */
	if ((c->hdrs = curl_slist_append(c->hdrs, "Expect:")) == NULL)
		goto fail;
	return 0;
fail:
	fprintf(stderr, "iamsign: cannot initialise libcurl\n");
	return -1;
}

static void client_free(struct client *c)
{
	if (c->sad != NULL) {
		OPENSSL_cleanse(c->sad, strlen(c->sad));
		free(c->sad);
	}
	curl_slist_free_all(c->hdrs);
	if (c->curl != NULL)
		curl_easy_cleanup(c->curl);
}

/* Print the daemon's error answer as "iamsign: error: description (reason: r)". */
static void print_server_error(long status, const struct buf *b)
{
	json_t *j = NULL;
	const char *e = NULL, *d, *reason;

	if (b->p != NULL)
		j = json_loadb(b->p, b->len, 0, NULL);
	if (json_is_object(j))
		e = jstr(j, "error");
	if (e == NULL) {
		fprintf(stderr, "iamsign: HTTP %ld from the daemon\n", status);
	} else {
		d = jstr(j, "error_description");
		reason = jstr(j, "reason");
		fputs("iamsign: ", stderr);
		print_safe(stderr, e);
		fputs(": ", stderr);
		print_safe(stderr, d ? d : "(no description)");
		if (reason != NULL) {
			fputs(" (reason: ", stderr);
			print_safe(stderr, reason);
			fputc(')', stderr);
		}
		fputc('\n', stderr);
	}
	json_decref(j);
}

/* POST /csc/v2/<method> with req; on HTTP 200 *resp is the JSON object answered. */
static int csc_call(struct client *c, const char *method, json_t *req, json_t **resp)
{
	struct buf b = {0};
	char url[256];
	char *body = NULL;
	json_t *j = NULL;
	json_error_t jerr;
	long status = 0;
	CURLcode cr;
	int r = -1;

	*resp = NULL;
	if ((size_t)snprintf(url, sizeof(url), "http://localhost/csc/v2/%s", method) >= sizeof(url))
		goto out;
	if ((body = json_dumps(req, JSON_COMPACT)) == NULL) {
		fprintf(stderr, "iamsign: cannot encode the request\n");
		goto out;
	}
	curl_easy_reset(c->curl);
	c->errbuf[0] = '\0';
	curl_easy_setopt(c->curl, CURLOPT_UNIX_SOCKET_PATH, c->o->socket);
	curl_easy_setopt(c->curl, CURLOPT_URL, url);
	curl_easy_setopt(c->curl, CURLOPT_HTTPHEADER, c->hdrs);
	curl_easy_setopt(c->curl, CURLOPT_POSTFIELDS, body);
	curl_easy_setopt(c->curl, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
	curl_easy_setopt(c->curl, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(c->curl, CURLOPT_WRITEDATA, &b);
	curl_easy_setopt(c->curl, CURLOPT_ERRORBUFFER, c->errbuf);
	curl_easy_setopt(c->curl, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c->curl, CURLOPT_CONNECTTIMEOUT, 10L);
	curl_easy_setopt(c->curl, CURLOPT_TIMEOUT, REQUEST_TIMEOUT);
	curl_easy_setopt(c->curl, CURLOPT_PROTOCOLS_STR, "http");
	cr = curl_easy_perform(c->curl);
	if (b.overflow) {
		fprintf(stderr, "iamsign: %s: response larger than %u bytes\n", method, MAX_BODY);
		goto out;
	}
	if (cr != CURLE_OK) {
		fprintf(stderr, "iamsign: %s: %s\n", c->o->socket,
		        c->errbuf[0] ? c->errbuf : curl_easy_strerror(cr));
		goto out;
	}
	curl_easy_getinfo(c->curl, CURLINFO_RESPONSE_CODE, &status);
	if (status != 200) {
		print_server_error(status, &b);
		goto out;
	}
	if (b.p == NULL || (j = json_loadb(b.p, b.len, JSON_REJECT_DUPLICATES, &jerr)) == NULL) {
		fprintf(stderr, "iamsign: %s: malformed response: %s\n", method,
		        b.p ? jerr.text : "empty body");
		goto out;
	}
	if (!json_is_object(j)) {
		fprintf(stderr, "iamsign: %s: response is not a JSON object\n", method);
		goto out;
	}
	*resp = j;
	j = NULL;
	r = 0;
out:
	json_decref(j);
	free(body);
	free(b.p);
	return r;
}

/* ---- info ---- */

/* Print one field: strings as they are, arrays of strings comma-separated, the rest as JSON. */
static void print_value(const char *key, json_t *v)
{
	size_t i;
	char *s;

	print_safe(stdout, key);
	fputs(": ", stdout);
	if (json_is_string(v)) {
		print_safe(stdout, json_string_value(v));
		putchar('\n');
		return;
	}
	if (json_is_array(v)) {
		int all_strings = 1;
		for (i = 0; i < json_array_size(v); i++)
			all_strings &= json_is_string(json_array_get(v, i));
		if (all_strings) {
			for (i = 0; i < json_array_size(v); i++) {
				fputs(i ? ", " : "", stdout);
				print_safe(stdout, json_string_value(json_array_get(v, i)));
			}
			putchar('\n');
			return;
		}
	}
	s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
	printf("%s\n", s ? s : "?");
	free(s);
}

static int cmd_info(struct client *c)
{
	json_t *req = json_object(), *resp = NULL;
	void *it;
	int r = -1;

	if (req == NULL || csc_call(c, "info", req, &resp) != 0)
		goto out;
	for (it = json_object_iter(resp); it != NULL; it = json_object_iter_next(resp, it))
		print_value(json_object_iter_key(it), json_object_iter_value(it));
	r = 0;
out:
	json_decref(req);
	json_decref(resp);
	return r;
}

/* ---- credentials ---- */

/* Dotted OID or name to NID; NID_undef if unknown. */
static int oid_nid(const char *s)
{
	ASN1_OBJECT *o;
	int nid;

	if (s == NULL || (o = OBJ_txt2obj(s, 0)) == NULL)
		return NID_undef;
	nid = OBJ_obj2nid(o);
	ASN1_OBJECT_free(o);
	return nid;
}

/* The key's algorithm OID: CSC v2 makes key.algo an array (the key algorithm first, e.g.
 * rsaEncryption then RSASSA-PSS); a plain string is accepted too. NULL if absent. */
static const char *key_algo(const json_t *key)
{
	const json_t *a = json_object_get(key, "algo");

	if (json_is_array(a))
		a = json_array_get(a, 0);
	return json_is_string(a) ? json_string_value(a) : NULL;
}

/* credentials/list, following nextPageToken; *ids becomes a JSON array of strings. */
static int list_credentials(struct client *c, json_t **ids)
{
	json_t *all = json_array(), *req = NULL, *resp = NULL, *page, *v;
	const char *next;
	char *token = NULL;
	size_t i;
	int r = -1, n;

	*ids = NULL;
	if (all == NULL)
		goto out;
	for (n = 0;; n++) {
		if (n == MAX_PAGES) {
			fprintf(stderr, "iamsign: credentials/list: more than %d pages\n",
			        MAX_PAGES);
			goto out;
		}
		json_decref(req);
		if ((req = json_pack("{s:i}", "maxResults", PAGE_SIZE)) == NULL)
			goto out;
		if (token != NULL && json_object_set_new(req, "pageToken", json_string(token)) != 0)
			goto out;
		json_decref(resp);
		if (csc_call(c, "credentials/list", req, &resp) != 0)
			goto out;
		page = json_object_get(resp, "credentialIDs");
		if (!json_is_array(page))
			goto malformed;
		for (i = 0; i < json_array_size(page); i++) {
			v = json_array_get(page, i);
			if (!json_is_string(v) || json_array_append(all, v) != 0)
				goto malformed;
		}
		free(token);
		token = NULL;
		if ((next = jstr(resp, "nextPageToken")) == NULL || *next == '\0')
			break;
		if ((token = strdup(next)) == NULL)
			goto out;
	}
	*ids = all;
	all = NULL;
	r = 0;
	goto out;
malformed:
	fprintf(stderr, "iamsign: credentials/list: malformed credentialIDs\n");
out:
	free(token);
	json_decref(req);
	json_decref(resp);
	json_decref(all);
	return r;
}

static int credential_info(struct client *c, const char *id, json_t **resp)
{
	json_t *req;
	int r;

	req =
	    json_pack("{s:s, s:s, s:b}", "credentialID", id, "certificates", "none", "certInfo", 1);
	if (req == NULL)
		return -1;
	r = csc_call(c, "credentials/info", req, resp);
	json_decref(req);
	return r;
}

/* "EC P-256", "RSA 2048", or the OID when it names no key type we know. */
static void key_desc(const json_t *key, char *out, size_t outlen)
{
	const char *algo = key_algo(key), *curve = jstr(key, "curve"), *nist = NULL;
	const json_t *len = json_object_get(key, "len");
	long long bits = json_is_integer(len) ? json_integer_value(len) : 0;
	const char *name;

	switch (oid_nid(algo)) {
	case NID_X9_62_id_ecPublicKey:
		name = "EC";
		nist = EC_curve_nid2nist(oid_nid(curve));
		break;
	case NID_rsaEncryption:
		name = "RSA";
		break;
	case NID_rsassaPss:
		name = "RSA-PSS";
		break;
	default:
		name = algo ? algo : "?";
	}
	if (nist != NULL)
		snprintf(out, outlen, "%s %s", name, nist);
	else if (bits > 0)
		snprintf(out, outlen, "%s %lld", name, bits);
	else
		snprintf(out, outlen, "%s", name);
}

static int cmd_credentials(struct client *c)
{
	static const char *const head[] = {"CREDENTIAL", "KEY", "STATUS", "SUBJECT", "VALID TO"};
	enum { NCOL = 5 };
	json_t *ids = NULL, *rows = json_array(), *info = NULL, *row;
	size_t w[NCOL], i, k;
	int r = -1, failed = 0;

	if (rows == NULL || list_credentials(c, &ids) != 0)
		goto out;
	for (i = 0; i < json_array_size(ids); i++) {
		const char *cid = json_string_value(json_array_get(ids, i)), *ks, *cs;
		const json_t *key, *cert;
		char kd[128], st[64], subj[1024], until[64], idc[256];

		json_decref(info);
		if (credential_info(c, cid, &info) != 0) {
			fputs("iamsign: credentials/info failed for ", stderr);
			print_safe(stderr, cid);
			fputc('\n', stderr);
			failed = 1;
			continue;
		}
		key = json_object_get(info, "key");
		cert = json_object_get(info, "cert");
		key_desc(key, kd, sizeof(kd));
		ks = jstr(key, "status");
		cs = jstr(cert, "status");
		snprintf(st, sizeof(st), "%s%s%s", ks ? ks : "?", cs ? "/" : "", cs ? cs : "");
		snprintf(subj, sizeof(subj), "%s", jstr(cert, "subjectDN") ?: "-");
		snprintf(until, sizeof(until), "%s", jstr(cert, "validTo") ?: "-");
		snprintf(idc, sizeof(idc), "%s", cid);
		sanitize(idc);
		sanitize(kd);
		sanitize(st);
		sanitize(subj);
		sanitize(until);
		row = json_pack("[sssss]", idc, kd, st, subj, until);
		if (row == NULL || json_array_append_new(rows, row) != 0)
			goto out;
	}
	for (k = 0; k < NCOL; k++)
		w[k] = strlen(head[k]);
	for (i = 0; i < json_array_size(rows); i++) {
		for (k = 0; k < NCOL; k++) {
			size_t l =
			    strlen(json_string_value(json_array_get(json_array_get(rows, i), k)));
			w[k] = l > w[k] ? l : w[k];
		}
	}
	for (k = 0; k < NCOL; k++)
		printf("%-*s%s", k + 1 < NCOL ? (int)w[k] : 0, head[k], k + 1 < NCOL ? "  " : "\n");
	for (i = 0; i < json_array_size(rows); i++) {
		row = json_array_get(rows, i);
		for (k = 0; k < NCOL; k++)
			printf("%-*s%s", k + 1 < NCOL ? (int)w[k] : 0,
			       json_string_value(json_array_get(row, k)),
			       k + 1 < NCOL ? "  " : "\n");
	}
	r = failed ? -1 : 0;
out:
	json_decref(info);
	json_decref(ids);
	json_decref(rows);
	return r;
}

/* ---- signing ---- */

static void signing_free(struct signing *sg)
{
	free(sg->cred);
	free(sg->sign_params);
	memset(sg, 0, sizeof(*sg));
}

/* DER RSASSA-PSS-params (RFC 4055) for md with MGF1(md) and a salt as long as the digest. */
static int pss_params(const EVP_MD *md, char **out)
{
	RSA_PSS_PARAMS *pp = NULL;
	X509_ALGOR *mgfmd = NULL;
	ASN1_STRING *packed = NULL;
	unsigned char *der = NULL;
	int r = -1, n;

	*out = NULL;
	if ((pp = RSA_PSS_PARAMS_new()) == NULL || (pp->hashAlgorithm = X509_ALGOR_new()) == NULL ||
	    (pp->maskGenAlgorithm = X509_ALGOR_new()) == NULL ||
	    (pp->saltLength = ASN1_INTEGER_new()) == NULL || (mgfmd = X509_ALGOR_new()) == NULL)
		goto out;
	X509_ALGOR_set_md(pp->hashAlgorithm, md);
	X509_ALGOR_set_md(mgfmd, md);
	if ((packed = ASN1_item_pack(mgfmd, ASN1_ITEM_rptr(X509_ALGOR), NULL)) == NULL)
		goto out;
	if (!X509_ALGOR_set0(pp->maskGenAlgorithm, OBJ_nid2obj(NID_mgf1), V_ASN1_SEQUENCE, packed))
		goto out;
	packed = NULL;
	if (!ASN1_INTEGER_set(pp->saltLength, EVP_MD_get_size(md)))
		goto out;
	if ((n = i2d_RSA_PSS_PARAMS(pp, &der)) <= 0)
		goto out;
	if ((*out = b64_encode(der, (size_t)n)) == NULL)
		goto out;
	r = 0;
out:
	if (r != 0)
		print_openssl_errors("iamsign: RSASSA-PSS parameters");
	OPENSSL_free(der);
	ASN1_STRING_free(packed);
	X509_ALGOR_free(mgfmd);
	RSA_PSS_PARAMS_free(pp);
	return r;
}

static int hash_nid(const char *name)
{
	if (strcmp(name, "sha256") == 0)
		return NID_sha256;
	if (strcmp(name, "sha384") == 0)
		return NID_sha384;
	if (strcmp(name, "sha512") == 0)
		return NID_sha512;
	return NID_undef;
}

/* Decide credential, hash and signAlgo for signing requests:
 * --credential, else the caller's only credential; --algo as given (a combined algorithm also
 * fixes the hash), else the credential key's algorithm combined with --hash (default sha256). */
static int resolve_signing(struct client *c, struct signing *sg)
{
	const struct opts *o = c->o;
	json_t *ids = NULL, *info = NULL;
	ASN1_OBJECT *obj = NULL;
	int md_nid = NID_undef, algo_nid = NID_undef, dig, pk, sig;
	int r = -1;

	memset(sg, 0, sizeof(*sg));
	if (o->hash != NULL && (md_nid = hash_nid(o->hash)) == NID_undef) {
		fprintf(stderr, "iamsign: --hash %s: use sha256, sha384 or sha512\n", o->hash);
		goto out;
	}
	if (o->credential != NULL) {
		sg->cred = strdup(o->credential);
	} else {
		if (list_credentials(c, &ids) != 0)
			goto out;
		if (json_array_size(ids) != 1) {
			fprintf(
			    stderr,
			    "iamsign: %zu credentials available: choose one with --credential\n",
			    json_array_size(ids));
			goto out;
		}
		sg->cred = strdup(json_string_value(json_array_get(ids, 0)));
	}
	if (sg->cred == NULL)
		goto out;

	if (o->algo != NULL) {
		if ((obj = OBJ_txt2obj(o->algo, 0)) == NULL) {
			fprintf(stderr, "iamsign: --algo %s: unknown algorithm\n", o->algo);
			goto out;
		}
		algo_nid = OBJ_obj2nid(obj);
		if (algo_nid != NID_undef && OBJ_find_sigid_algs(algo_nid, &dig, &pk) &&
		    dig != NID_undef) {
			if (md_nid != NID_undef && md_nid != dig) {
				fprintf(stderr, "iamsign: --algo %s signs %s digests, not %s\n",
				        o->algo, OBJ_nid2sn(dig), o->hash);
				goto out;
			}
			md_nid = dig;
		}
		if (OBJ_obj2txt(sg->sign_algo, sizeof(sg->sign_algo), obj, 1) <= 0)
			goto out;
	} else {
		const char *key_oid;

		if (md_nid == NID_undef)
			md_nid = NID_sha256;
		if (credential_info(c, sg->cred, &info) != 0)
			goto out;
		key_oid = key_algo(json_object_get(info, "key"));
		if (key_oid == NULL) {
			fprintf(stderr, "iamsign: credentials/info: no key.algo for %s\n",
			        sg->cred);
			goto out;
		}
		pk = oid_nid(key_oid);
		if (pk == NID_rsassaPss) {
			algo_nid = pk;
			sig = pk;
		} else if (pk == NID_undef || !OBJ_find_sigid_by_algs(&sig, md_nid, pk)) {
			fprintf(stderr,
			        "iamsign: no signature algorithm known for key %s with %s: "
			        "use --algo\n",
			        key_oid, OBJ_nid2sn(md_nid));
			goto out;
		}
		if (OBJ_obj2txt(sg->sign_algo, sizeof(sg->sign_algo), OBJ_nid2obj(sig), 1) <= 0)
			goto out;
	}
	if (md_nid == NID_undef)
		md_nid = NID_sha256;
	if ((md_nid != NID_sha256 && md_nid != NID_sha384 && md_nid != NID_sha512) ||
	    (sg->md = EVP_get_digestbynid(md_nid)) == NULL) {
		fprintf(stderr, "iamsign: hash %s not supported\n", OBJ_nid2sn(md_nid));
		goto out;
	}
	if (OBJ_obj2txt(sg->hash_oid, sizeof(sg->hash_oid), OBJ_nid2obj(md_nid), 1) <= 0)
		goto out;
	if (algo_nid == NID_rsassaPss && pss_params(sg->md, &sg->sign_params) != 0)
		goto out;
	r = 0;
out:
	if (r != 0)
		signing_free(sg);
	ASN1_OBJECT_free(obj);
	json_decref(ids);
	json_decref(info);
	return r;
}

/* Add what every signing request carries beyond the digests. */
static int add_common(const struct client *c, const struct signing *sg, json_t *req)
{
	if (json_object_set_new(req, "credentialID", json_string(sg->cred)) != 0 ||
	    json_object_set_new(req, "signAlgo", json_string(sg->sign_algo)) != 0)
		return -1;
	if (sg->sign_params != NULL &&
	    json_object_set_new(req, "signAlgoParams", json_string(sg->sign_params)) != 0)
		return -1;
	if (c->o->purpose != NULL &&
	    json_object_set_new(req, "purpose", json_string(c->o->purpose)) != 0)
		return -1;
	if (c->sad != NULL && json_object_set_new(req, "SAD", json_string(c->sad)) != 0)
		return -1;
	return 0;
}

/* The CSC conformance level of --level. */
static const char *conformance(const struct opts *o)
{
	return o->level != NULL && strcmp(o->level, "B-T") == 0 ? "Ades-B-T" : "Ades-B-B";
}

/* signDoc for one digest: the base64-decoded CMS in *cms (malloc'ed). fmt is "C" or "P". */
static int sign_doc(struct client *c, const struct signing *sg, const unsigned char *dig,
                    unsigned dlen, const char *fmt, unsigned char **cms, size_t *cmslen)
{
	char *b64 = NULL;
	json_t *req = NULL, *resp = NULL, *v;
	int r = -1;

	*cms = NULL;
	if ((b64 = b64_encode(dig, dlen)) == NULL)
		goto out;
	req = json_pack("{s:[{s:[s], s:s}], s:s, s:s, s:s}", "documentDigests", "hashes", b64,
	                "hashAlgorithmOID", sg->hash_oid, "signature_format", fmt,
	                "conformance_level", conformance(c->o), "signed_envelope_property",
	                "Detached");
	if (req == NULL || add_common(c, sg, req) != 0) {
		fprintf(stderr, "iamsign: cannot build the request\n");
		goto out;
	}
	if (csc_call(c, "signatures/signDoc", req, &resp) != 0)
		goto out;
	v = json_object_get(resp, "SignatureObject");
	if (json_is_array(v) && json_array_size(v) == 1)
		v = json_array_get(v, 0);
	if (!json_is_string(v) || b64_decode(json_string_value(v), cms, cmslen) != 0 ||
	    *cmslen == 0) {
		fprintf(stderr, "iamsign: signDoc: malformed SignatureObject in the response\n");
		free(*cms);
		*cms = NULL;
		goto out;
	}
	r = 0;
out:
	free(b64);
	json_decref(req);
	json_decref(resp);
	return r;
}

/* Hash file, ask for a raw signature (doc == 0, FILE.sig) or a CAdES B-B detached CMS
 * (doc == 1, FILE.p7s), write it and print its path. */
static int sign_file(struct client *c, const struct signing *sg, const char *file, int doc)
{
	unsigned char dig[EVP_MAX_MD_SIZE], *sigbin = NULL;
	unsigned dlen = 0;
	size_t siglen = 0;
	char *b64 = NULL, path[PATH_MAX];
	const char *method = doc ? "signatures/signDoc" : "signatures/signHash";
	const char *field = doc ? "SignatureObject" : "signatures";
	json_t *req = NULL, *resp = NULL, *v;
	int r = -1;

	if (out_path(path, sizeof(path), file, doc ? ".p7s" : ".sig") != 0)
		goto out;
	if (hash_file(file, sg->md, dig, &dlen) != 0)
		goto out;
	if ((b64 = b64_encode(dig, dlen)) == NULL)
		goto out;
	if (doc)
		req = json_pack("{s:[{s:[s], s:s}], s:s, s:s, s:s}", "documentDigests", "hashes",
		                b64, "hashAlgorithmOID", sg->hash_oid, "signature_format", "C",
		                "conformance_level", conformance(c->o), "signed_envelope_property",
		                "Detached");
	else
		req = json_pack("{s:[s], s:s}", "hashes", b64, "hashAlgorithmOID", sg->hash_oid);
	if (req == NULL || add_common(c, sg, req) != 0) {
		fprintf(stderr, "iamsign: cannot build the request\n");
		goto out;
	}
	if (csc_call(c, method, req, &resp) != 0)
		goto out;
	v = json_object_get(resp, field);
	if (json_is_array(v) && json_array_size(v) == 1)
		v = json_array_get(v, 0);
	if (!json_is_string(v) || b64_decode(json_string_value(v), &sigbin, &siglen) != 0 ||
	    siglen == 0) {
		fprintf(stderr, "iamsign: %s: malformed %s in the response\n", method, field);
		goto out;
	}
	if (write_file(path, sigbin, siglen) != 0)
		goto out;
	printf("%s\n", path);
	r = 0;
out:
	if (r != 0)
		fprintf(stderr, "iamsign: %s: not signed\n", file);
	free(sigbin);
	free(b64);
	json_decref(req);
	json_decref(resp);
	return r;
}

static int cmd_sign(struct client *c, char **files, int nfiles, int doc)
{
	struct signing sg;
	int i, r = 0;

	if (resolve_signing(c, &sg) != 0)
		return -1;
	for (i = 0; i < nfiles; i++)
		if (sign_file(c, &sg, files[i], doc) != 0)
			r = -1;
	signing_free(&sg);
	return r;
}

/* ---- verify (local, no daemon) ---- */

static int cmd_verify(const struct opts *o, const char *file, const char *p7s)
{
	BIO *in = NULL, *content = NULL;
	CMS_ContentInfo *cms = NULL;
	X509_STORE *store = NULL;
	STACK_OF(X509) *signers = NULL;
	int i, r = -1;

	if ((in = BIO_new_file(p7s, "rb")) == NULL) {
		fprintf(stderr, "iamsign: %s: %s\n", p7s, strerror(errno));
		goto out;
	}
	if ((cms = d2i_CMS_bio(in, NULL)) == NULL) {
		/* DER is what `sign` writes; accept PEM too. */
		if (BIO_reset(in) == 0 && (cms = PEM_read_bio_CMS(in, NULL, NULL, NULL)) != NULL)
			ERR_clear_error();
	}
	if (cms == NULL) {
		fprintf(stderr, "iamsign: %s: not a CMS signature (DER or PEM)\n", p7s);
		ERR_clear_error();
		goto out;
	}
	if ((store = X509_STORE_new()) == NULL || !X509_STORE_load_file(store, o->ca)) {
		fprintf(stderr, "iamsign: %s: cannot load CA certificates\n", o->ca);
		print_openssl_errors("iamsign");
		goto out;
	}
	if ((content = BIO_new_file(file, "rb")) == NULL) {
		fprintf(stderr, "iamsign: %s: %s\n", file, strerror(errno));
		goto out;
	}
	if (CMS_verify(cms, NULL, store, content, NULL, CMS_BINARY) != 1) {
		print_openssl_errors("Verification failure");
		goto out;
	}
	printf("Verification successful\n");
	if ((signers = CMS_get0_signers(cms)) != NULL) {
		for (i = 0; i < sk_X509_num(signers); i++) {
			BIO *bout = BIO_new_fp(stdout, BIO_NOCLOSE);

			if (bout == NULL)
				break;
			BIO_puts(bout, "Signer: ");
			X509_NAME_print_ex(bout, X509_get_subject_name(sk_X509_value(signers, i)),
			                   0, XN_FLAG_RFC2253 & ~ASN1_STRFLGS_ESC_MSB);
			BIO_puts(bout, "\n");
			BIO_free(bout);
		}
	}
	r = 0;
out:
	sk_X509_free(signers);
	BIO_free(content);
	BIO_free(in);
	X509_STORE_free(store);
	CMS_ContentInfo_free(cms);
	return r;
}

/* ---- PDF (PAdES) ---- */

struct pdf_signing {
	struct client *c;
	const struct signing *sg;
};

/* pdf_sign's callback: the byte range's digest, signed as PAdES through signDoc. */
static int pdf_sign_cb(void *arg, const unsigned char *data, size_t len, unsigned char **cms,
                       size_t *cmslen)
{
	struct pdf_signing *ps = arg;
	unsigned char dig[EVP_MAX_MD_SIZE];
	unsigned dlen = 0;

	if (!EVP_Digest(data, len, dig, &dlen, ps->sg->md, NULL)) {
		print_openssl_errors("iamsign");
		return -1;
	}
	return sign_doc(ps->c, ps->sg, dig, dlen, "P", cms, cmslen);
}

static int cmd_sign_pdf(struct client *c, const char *in)
{
	struct signing sg;
	struct pdf_signing ps = {c, &sg};
	char path[PATH_MAX], err[512];
	const char *out = c->o->out;
	size_t n = strlen(in);
	int r;

	if (out == NULL) {
		/* FORM.pdf -> FORM.signed.pdf */
		if (n > 4 && strcasecmp(in + n - 4, ".pdf") == 0)
			n -= 4;
		if ((size_t)snprintf(path, sizeof(path), "%.*s.signed.pdf", (int)n, in) >=
		    sizeof(path)) {
			fprintf(stderr, "iamsign: %s: path too long\n", in);
			return -1;
		}
		out = path;
	}
	if (resolve_signing(c, &sg) != 0)
		return -1;
	r = pdf_sign(in, out, c->o->reason, c->o->name, pdf_sign_cb, &ps, err, sizeof(err));
	signing_free(&sg);
	if (r != 0) {
		fprintf(stderr, "iamsign: %s: %s\n", in, err);
		unlink(out);
		return -1;
	}
	printf("%s\n", out);
	return 0;
}

static X509_STORE *load_store(const char *path)
{
	X509_STORE *store = X509_STORE_new();

	if (store == NULL || !X509_STORE_load_file(store, path)) {
		fprintf(stderr, "iamsign: %s: cannot load CA certificates\n", path);
		print_openssl_errors("iamsign");
		X509_STORE_free(store);
		return NULL;
	}
	return store;
}

/* The signature-time-stamp of si, if any: verified against tsa (signature, a time-stamping
 * certificate, the imprint over si's signature value) and within signer's validity. 1 when
 * there is none, 0 when it verifies, -1 (printed) when it does not. */
static int check_timestamp(CMS_SignerInfo *si, X509 *signer, X509_STORE *tsa)
{
	int i = CMS_unsigned_get_attr_by_NID(si, NID_id_smime_aa_timeStampToken, -1);
	X509_ATTRIBUTE *attr;
	ASN1_TYPE *t;
	const unsigned char *pp;
	PKCS7 *tok = NULL;
	TS_TST_INFO *tst = NULL;
	TS_VERIFY_CTX *ctx = NULL;
	ASN1_OCTET_STRING *sig = CMS_SignerInfo_get0_signature(si);
	BIO *data = NULL;
	time_t when;
	struct tm tm;
	int r = -1;

	if (i < 0)
		return 1;
	if ((attr = CMS_unsigned_get_attr(si, i)) == NULL || X509_ATTRIBUTE_count(attr) != 1 ||
	    (t = X509_ATTRIBUTE_get0_type(attr, 0)) == NULL || t->type != V_ASN1_SEQUENCE) {
		fprintf(stderr, "  time-stamp: malformed attribute\n");
		return -1;
	}
	pp = t->value.sequence->data;
	if ((tok = d2i_PKCS7(NULL, &pp, t->value.sequence->length)) == NULL ||
	    (tst = PKCS7_to_TS_TST_INFO(tok)) == NULL) {
		fprintf(stderr, "  time-stamp: not a TimeStampToken\n");
		goto out;
	}
	if ((ctx = TS_VERIFY_CTX_new()) == NULL ||
	    (data = BIO_new_mem_buf(ASN1_STRING_get0_data(sig), ASN1_STRING_length(sig))) == NULL ||
	    !X509_STORE_up_ref(tsa))
		goto out;
	TS_VERIFY_CTX_set_flags(ctx, TS_VFY_VERSION | TS_VFY_SIGNATURE | TS_VFY_DATA);
	TS_VERIFY_CTX_set_store(ctx, tsa); /* ctx owns the reference taken */
	TS_VERIFY_CTX_set_data(ctx, data); /* and the BIO */
	data = NULL;
	if (TS_RESP_verify_token(ctx, tok) != 1) {
		print_openssl_errors("  time-stamp: verification failure");
		goto out;
	}
	if (!ASN1_TIME_to_tm(TS_TST_INFO_get_time(tst), &tm)) {
		fprintf(stderr, "  time-stamp: malformed time\n");
		goto out;
	}
	when = timegm(&tm);
	if (X509_cmp_time(X509_get0_notBefore(signer), &when) > 0 ||
	    X509_cmp_time(X509_get0_notAfter(signer), &when) < 0) {
		fprintf(stderr, "  time-stamp: outside the signing certificate's validity\n");
		goto out;
	}
	printf("  time-stamp: %04d-%02d-%02dT%02d:%02d:%02dZ, verified, over this signature\n",
	       tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
	r = 0;
out:
	BIO_free(data);
	TS_VERIFY_CTX_free(ctx);
	TS_TST_INFO_free(tst);
	PKCS7_free(tok);
	return r;
}

/* One signature of a PDF: the byte range (structure, and whether it covers the whole file),
 * the CMS over it, its time-stamp. last: the newest signature, which must cover the file. */
static int check_pdf_sig(const unsigned char *pdf, size_t size, const struct pdf_sig *s, int last,
                         X509_STORE *store, X509_STORE *tsa)
{
	const long long *br = s->range;
	const unsigned char *pp;
	unsigned char *der = NULL;
	size_t derlen;
	CMS_ContentInfo *cms = NULL;
	STACK_OF(CMS_SignerInfo) * sis;
	STACK_OF(X509) *signers = NULL;
	BIO *content = NULL;
	unsigned char *data = NULL;
	size_t n1, n2;
	int r = -1;

	printf("signature %s (%s):\n", s->field[0] ? s->field : "?",
	       s->subfilter[0] ? s->subfilter : "no SubFilter");
	if (s->nrange != 4 || br[0] != 0 || br[1] <= 0 || br[2] <= br[1] || br[3] < 0 ||
	    (unsigned long long)br[2] + (unsigned long long)br[3] > size || pdf[br[1]] != '<' ||
	    pdf[br[2] - 1] != '>') {
		fprintf(stderr,
		        "  byte range: malformed (it must run from the start of the file to "
		        "/Contents and from after /Contents on)\n");
		return -1;
	}
	for (long long i = br[1] + 1; i < br[2] - 1; i++)
		if (!isxdigit(pdf[i])) {
			fprintf(stderr, "  byte range: the gap is not the /Contents hex string\n");
			return -1;
		}
	if (strcmp(s->subfilter, "ETSI.CAdES.detached") != 0)
		fprintf(stderr, "  warning: SubFilter %s, not ETSI.CAdES.detached (PAdES)\n",
		        s->subfilter[0] ? s->subfilter : "missing");
	if ((unsigned long long)br[2] + (unsigned long long)br[3] == size) {
		printf("  byte range: the whole file but /Contents\n");
	} else if (last) {
		fprintf(stderr,
		        "  byte range: ends at byte %lld of %zu: the file was changed after "
		        "the last signature\n",
		        br[2] + br[3], size);
		return -1;
	} else {
		printf("  byte range: the revision up to byte %lld (later changes are incremental "
		       "updates)\n",
		       br[2] + br[3]);
	}
	n1 = (size_t)br[1];
	n2 = (size_t)br[3];
	if ((data = malloc(n1 + n2 + 1)) == NULL)
		return -1;
	memcpy(data, pdf, n1);
	memcpy(data + n1, pdf + br[2], n2);
	/* The CMS: the hex string in the gap, its zero padding left to the DER decoder. */
	if ((br[2] - br[1]) % 2 != 0) {
		fprintf(stderr, "  /Contents: an odd number of hex digits\n");
		goto out;
	}
	derlen = (size_t)(br[2] - br[1] - 2) / 2;
	if ((der = malloc(derlen + 1)) == NULL)
		goto out;
	for (size_t i = 0; i < derlen; i++) {
		char hx[3] = {(char)pdf[br[1] + 1 + 2 * (long long)i],
		              (char)pdf[br[1] + 2 + 2 * (long long)i], '\0'};
		der[i] = (unsigned char)strtoul(hx, NULL, 16);
	}
	pp = der;
	if (derlen == 0 || (cms = d2i_CMS_ContentInfo(NULL, &pp, (long)derlen)) == NULL) {
		fprintf(stderr, "  /Contents: not a CMS signature\n");
		ERR_clear_error();
		goto out;
	}
	if ((content = BIO_new_mem_buf(data, (int)(n1 + n2))) == NULL)
		goto out;
	if (CMS_verify(cms, NULL, store, content, NULL, CMS_BINARY) != 1) {
		print_openssl_errors("  Verification failure");
		goto out;
	}
	printf("  CMS: verified over the byte range\n");
	signers = CMS_get0_signers(cms);
	sis = CMS_get0_SignerInfos(cms);
	if (signers == NULL || sis == NULL || sk_X509_num(signers) != 1 ||
	    sk_CMS_SignerInfo_num(sis) != 1) {
		fprintf(stderr, "  CMS: not exactly one signer\n");
		goto out;
	}
	{
		BIO *bout = BIO_new_fp(stdout, BIO_NOCLOSE);

		if (bout != NULL) {
			BIO_puts(bout, "  signer: ");
			X509_NAME_print_ex(bout, X509_get_subject_name(sk_X509_value(signers, 0)),
			                   0, XN_FLAG_RFC2253 & ~ASN1_STRFLGS_ESC_MSB);
			BIO_puts(bout, "\n");
			BIO_free(bout);
		}
	}
	if (CMS_signed_get_attr_by_NID(sk_CMS_SignerInfo_value(sis, 0), NID_pkcs9_signingTime,
	                               -1) >= 0)
		fprintf(stderr,
		        "  warning: a signing-time attribute (PAdES puts the time in /M)\n");
	switch (check_timestamp(sk_CMS_SignerInfo_value(sis, 0), sk_X509_value(signers, 0), tsa)) {
	case 1:
		printf("  time-stamp: none (B-B)\n");
		break;
	case 0:
		break;
	default:
		goto out;
	}
	r = 0;
out:
	sk_X509_free(signers);
	BIO_free(content);
	CMS_ContentInfo_free(cms);
	free(der);
	free(data);
	return r;
}

static int cmd_verify_pdf(const struct opts *o, const char *path)
{
	struct pdf_sig *sigs = NULL;
	X509_STORE *store = NULL, *tsa = NULL;
	unsigned char *pdf = NULL;
	size_t size = 0, n = 0, bad = 0;
	char err[512];
	FILE *f;
	int r = -1;

	if ((f = fopen(path, "rb")) == NULL) {
		fprintf(stderr, "iamsign: %s: %s\n", path, strerror(errno));
		return -1;
	}
	if ((pdf = malloc(PDF_MAX_SIZE + 1)) != NULL)
		size = fread(pdf, 1, PDF_MAX_SIZE + 1, f);
	if (pdf == NULL || ferror(f) || size > PDF_MAX_SIZE) {
		fprintf(stderr, "iamsign: %s: unreadable or larger than %u bytes\n", path,
		        PDF_MAX_SIZE);
		fclose(f);
		goto out;
	}
	fclose(f);
	if (pdf_signatures(path, &sigs, &n, err, sizeof(err)) != 0) {
		fprintf(stderr, "iamsign: %s\n", err);
		goto out;
	}
	if (n == 0) {
		fprintf(stderr, "iamsign: %s: no signature\n", path);
		goto out;
	}
	if ((store = load_store(o->ca)) == NULL ||
	    (tsa = load_store(o->tsa_ca != NULL ? o->tsa_ca : o->ca)) == NULL)
		goto out;
	for (size_t i = 0; i < n; i++)
		if (check_pdf_sig(pdf, size, &sigs[i], i + 1 == n, store, tsa) != 0)
			bad++;
	if (bad > 0) {
		fprintf(stderr, "Verification failure: %zu of %zu signatures\n", bad, n);
		goto out;
	}
	printf("Verification successful: %zu signature%s\n", n, n == 1 ? "" : "s");
	r = 0;
out:
	pdf_sigs_free(sigs, n);
	X509_STORE_free(store);
	X509_STORE_free(tsa);
	free(pdf);
	return r;
}

/* ---- main ---- */

/* Read the SAD file: a compact JWS on one line, at most MAX_SAD bytes. */
static int read_sad(const char *path, char **out)
{
	FILE *f = NULL;
	char *p = NULL;
	size_t n, i;
	int r = -1;

	*out = NULL;
	if ((f = fopen(path, "rb")) == NULL) {
		fprintf(stderr, "iamsign: %s: %s\n", path, strerror(errno));
		goto out;
	}
	if ((p = malloc(MAX_SAD + 1)) == NULL)
		goto out;
	n = fread(p, 1, MAX_SAD + 1, f);
	if (ferror(f) || n > MAX_SAD) {
		fprintf(stderr, "iamsign: %s: unreadable or larger than %u bytes\n", path, MAX_SAD);
		goto out;
	}
	while (n > 0 && (p[n - 1] == '\n' || p[n - 1] == '\r' || p[n - 1] == ' '))
		n--;
	p[n] = '\0';
	for (i = 0; i < n; i++) {
		if ((unsigned char)p[i] <= ' ' || (unsigned char)p[i] >= 0x7f) {
			fprintf(stderr, "iamsign: %s: not a compact JWS\n", path);
			goto out;
		}
	}
	if (n == 0) {
		fprintf(stderr, "iamsign: %s: empty\n", path);
		goto out;
	}
	*out = p;
	p = NULL;
	r = 0;
out:
	if (p != NULL) {
		OPENSSL_cleanse(p, MAX_SAD + 1);
		free(p);
	}
	if (f != NULL)
		fclose(f);
	return r;
}

int main(int argc, char **argv)
{
	enum {
		O_SOCKET = 256,
		O_CRED,
		O_PURPOSE,
		O_HASH,
		O_ALGO,
		O_SAD,
		O_CA,
		O_TSA_CA,
		O_LEVEL,
		O_OUT,
		O_REASON,
		O_NAME
	};
	static const struct option longopts[] = {
	    {"socket", required_argument, NULL, O_SOCKET},
	    {"credential", required_argument, NULL, O_CRED},
	    {"purpose", required_argument, NULL, O_PURPOSE},
	    {"hash", required_argument, NULL, O_HASH},
	    {"algo", required_argument, NULL, O_ALGO},
	    {"sad", required_argument, NULL, O_SAD},
	    {"ca", required_argument, NULL, O_CA},
	    {"tsa-ca", required_argument, NULL, O_TSA_CA},
	    {"level", required_argument, NULL, O_LEVEL},
	    {"out", required_argument, NULL, O_OUT},
	    {"reason", required_argument, NULL, O_REASON},
	    {"name", required_argument, NULL, O_NAME},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	struct opts o = {0};
	struct client c;
	const char *cmd;
	char **args;
	int ch, nargs, r = -1, have_client = 0;

	while ((ch = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (ch) {
		case O_SOCKET:
			o.socket = optarg;
			break;
		case O_CRED:
			o.credential = optarg;
			break;
		case O_PURPOSE:
			o.purpose = optarg;
			break;
		case O_HASH:
			o.hash = optarg;
			break;
		case O_ALGO:
			o.algo = optarg;
			break;
		case O_SAD:
			o.sad = optarg;
			break;
		case O_CA:
			o.ca = optarg;
			break;
		case O_TSA_CA:
			o.tsa_ca = optarg;
			break;
		case O_LEVEL:
			if (strcmp(optarg, "B-B") != 0 && strcmp(optarg, "B-T") != 0) {
				fprintf(stderr, "iamsign: --level: B-B or B-T\n");
				return EXIT_USAGE;
			}
			o.level = optarg;
			break;
		case O_OUT:
			o.out = optarg;
			break;
		case O_REASON:
			o.reason = optarg;
			break;
		case O_NAME:
			o.name = optarg;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return EXIT_USAGE;
		}
	}
	if (optind >= argc) {
		usage(stderr);
		return EXIT_USAGE;
	}
	cmd = argv[optind];
	args = argv + optind + 1;
	nargs = argc - optind - 1;

	if (strcmp(cmd, "verify") == 0) {
		if (nargs != 2 || o.ca == NULL) {
			fprintf(stderr, "usage: iamsign verify FILE FILE.p7s --ca CA.pem\n");
			return EXIT_USAGE;
		}
		return cmd_verify(&o, args[0], args[1]) == 0 ? 0 : 1;
	}
	if (strcmp(cmd, "verify-pdf") == 0) {
		if (nargs != 1 || o.ca == NULL) {
			fprintf(stderr, "usage: iamsign verify-pdf SIGNED.pdf --ca CA.pem "
			                "[--tsa-ca TSA-CA.pem]\n");
			return EXIT_USAGE;
		}
		return cmd_verify_pdf(&o, args[0]) == 0 ? 0 : 1;
	}
	if (strcmp(cmd, "sign-pdf") == 0 && nargs != 1) {
		fprintf(stderr, "usage: iamsign [options] sign-pdf FORM.pdf [--out SIGNED.pdf] "
		                "[--reason TEXT] [--name TEXT]\n");
		return EXIT_USAGE;
	}
	if (((strcmp(cmd, "info") == 0 || strcmp(cmd, "credentials") == 0) && nargs != 0) ||
	    ((strcmp(cmd, "sign-hash") == 0 || strcmp(cmd, "sign") == 0) && nargs < 1)) {
		usage(stderr);
		return EXIT_USAGE;
	}
	if (strcmp(cmd, "info") != 0 && strcmp(cmd, "credentials") != 0 &&
	    strcmp(cmd, "sign-hash") != 0 && strcmp(cmd, "sign") != 0 &&
	    strcmp(cmd, "sign-pdf") != 0) {
		fprintf(stderr, "iamsign: unknown command %s\n", cmd);
		usage(stderr);
		return EXIT_USAGE;
	}
	if (o.socket == NULL)
		o.socket = getenv("IAMSIGN_SOCKET");
	if (o.socket == NULL || *o.socket == '\0')
		o.socket = DEFAULT_SOCKET;

	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
		fprintf(stderr, "iamsign: cannot initialise libcurl\n");
		return 1;
	}
	if (client_init(&c, &o) != 0)
		goto out;
	have_client = 1;
	if (o.sad != NULL && read_sad(o.sad, &c.sad) != 0)
		goto out;
	if (strcmp(cmd, "info") == 0)
		r = cmd_info(&c);
	else if (strcmp(cmd, "credentials") == 0)
		r = cmd_credentials(&c);
	else if (strcmp(cmd, "sign-pdf") == 0)
		r = cmd_sign_pdf(&c, args[0]);
	else
		r = cmd_sign(&c, args, nargs, strcmp(cmd, "sign") == 0);
out:
	if (have_client)
		client_free(&c);
	curl_global_cleanup();
	return r == 0 ? 0 : 1;
}
