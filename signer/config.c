/* iamsignd.yaml loading. See config.h and docs/config.md. */
#include "signer/config.h"

#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/un.h>
#include <unistd.h>

#include "policy/algs.h"
#include "policy/yamlfile.h"

#define CFG_MAX_URI 1024
#define CFG_MAX_THREADS 64
#define CFG_MAX_SESSIONS 65 /* the login's and one per token worker (64) */
#define CFG_DEFAULT_THREADS 16
#define CFG_DEFAULT_MODE 0660
#define CFG_MAX_LIST 64 /* module_dirs, sad_issuers */
#define CFG_DEFAULT_AUDIT_KEY "pkcs11:object=iamsign-audit;type=private"
#define CFG_DEFAULT_CHECKPOINT_EVERY 1000
#define CFG_MAX_CHECKPOINT_EVERY 1000000
#define CFG_DEFAULT_CHECKPOINT_SECS 60
#define CFG_MAX_CHECKPOINT_SECS 86400 /* a day without a signed checkpoint is too long */
#define CFG_DEFAULT_WRITE_TIMEOUT 2
#define CFG_MAX_WRITE_TIMEOUT 60
#define CFG_DEFAULT_KEK "pkcs11:object=iamsign-kek;type=secret-key"
#define CFG_DEFAULT_KEYS_CACHE 10000
#define CFG_MIN_KEYS_CACHE 2
#define CFG_MAX_KEYS_CACHE 1000000

struct loader {
	struct yfile yf;
	struct config *c;
};

/* An octal file mode: "0660", 0660, "660" or "0o660", at most 0777. */
static int get_mode(struct loader *L, yaml_node_t *n, const char *key, mode_t *out)
{
	const char *s, *d;
	unsigned v = 0;
	size_t i;

	if (yf_str(&L->yf, n, key, &s) != 0)
		return -1;
	d = strncmp(s, "0o", 2) == 0 ? s + 2 : s;
	for (i = 0; d[i] >= '0' && d[i] <= '7'; i++) {
		if (i >= 5)
			goto bad;
		v = v * 8 + (unsigned)(d[i] - '0');
	}
	if (i == 0 || d[i] != '\0')
		goto bad;
	if (v > 0777)
		return yf_error(&L->yf, n, key, "mode %s is above 0777", s);
	*out = (mode_t)v;
	return 0;
bad:
	return yf_error(&L->yf, n, key, "expected an octal mode such as \"0660\", found '%s'", s);
}

static int parse_token(struct loader *L, yaml_node_t *at, yaml_node_t *map)
{
	struct yfile *yf = &L->yf;
	struct config *c = L->c;
	yaml_node_t *v;
	const char *k, *s;
	char key[80];
	size_t ndirs;
	uint64_t u;
	int n, i;

	n = yf_map_size(yf, map, "token");
	if (n < 0)
		return -1;
	for (i = 0; i < n; i++) {
		yf_pair(yf, map, i, &k, &v);
		if (strcmp(k, "module") == 0) {
			if (yf_path(&L->yf, v, "token.module", &c->token_module) != 0)
				return -1;
		} else if (strcmp(k, "uri") == 0) {
			if (yf_str(yf, v, "token.uri", &s) != 0)
				return -1;
			if (strncmp(s, "pkcs11:", 7) != 0)
				return yf_error(yf, v, "token.uri",
				                "expected a PKCS#11 URI (RFC 7512) starting with "
				                "\"pkcs11:\"");
			if (strlen(s) > CFG_MAX_URI)
				return yf_error(yf, v, "token.uri", "URI too long (at most %d)",
				                CFG_MAX_URI);
			c->token_uri = strdup(s);
			if (c->token_uri == NULL)
				return yf_error(yf, v, "token.uri", "out of memory");
		} else if (strcmp(k, "pin_file") == 0) {
			if (yf_path(&L->yf, v, "token.pin_file", &c->token_pin_file) != 0)
				return -1;
		} else if (strcmp(k, "module_dirs") == 0) {
			if (yf_paths(&L->yf, v, "token.module_dirs", CFG_MAX_LIST,
			             &c->token_module_dirs, &ndirs) != 0)
				return -1;
			if (ndirs == 0)
				return yf_error(yf, v, "token.module_dirs",
				                "empty list would allow no module (leave "
				                "module_dirs out for the built-in list)");
		} else if (strcmp(k, "sessions") == 0) {
			if (yf_uint(yf, v, "token.sessions", CFG_MAX_SESSIONS, &u) != 0)
				return -1;
			if (u < 2)
				return yf_error(yf, v, "token.sessions",
				                "must be between 2 and %d (one session holds the "
				                "login, the others sign)",
				                CFG_MAX_SESSIONS);
			c->token_sessions = (unsigned)u;
		} else {
			snprintf(key, sizeof(key), "token.%.60s", k);
			return yf_error(yf, yf_pair_key(yf, map, i), key,
			                "unknown key in token (expected module, uri, pin_file, "
			                "module_dirs, sessions)");
		}
	}
	if (c->token_module == NULL)
		return yf_error(yf, at, "token.module", "missing (path of the PKCS#11 module)");
	if (c->token_uri == NULL)
		return yf_error(yf, at, "token.uri", "missing (PKCS#11 URI of the token)");
	if (c->token_pin_file == NULL)
		return yf_error(yf, at, "token.pin_file", "missing (file holding the user PIN)");
	return 0;
}

static int parse_listen(struct loader *L, yaml_node_t *at, yaml_node_t *map)
{
	struct yfile *yf = &L->yf;
	struct config *c = L->c;
	struct sockaddr_un sun;
	yaml_node_t *v;
	const char *k, *s;
	char key[80];
	uint64_t u;
	int n, i;

	n = yf_map_size(yf, map, "listen");
	if (n < 0)
		return -1;
	for (i = 0; i < n; i++) {
		yf_pair(yf, map, i, &k, &v);
		if (strcmp(k, "socket") == 0) {
			if (yf_str(yf, v, "listen.socket", &s) != 0)
				return -1;
			if (s[0] != '/')
				return yf_error(yf, v, "listen.socket", "must be an absolute path");
			if (strlen(s) >= sizeof(sun.sun_path))
				return yf_error(
				    yf, v, "listen.socket",
				    "path too long for a Unix socket (at most %zu bytes)",
				    sizeof(sun.sun_path) - 1);
			c->socket_path = strdup(s);
			if (c->socket_path == NULL)
				return yf_error(yf, v, "listen.socket", "out of memory");
		} else if (strcmp(k, "mode") == 0) {
			if (get_mode(L, v, "listen.mode", &c->socket_mode) != 0)
				return -1;
		} else if (strcmp(k, "group") == 0) {
			if (yf_strdup(yf, v, "listen.group", &c->socket_group) != 0)
				return -1;
		} else if (strcmp(k, "threads") == 0) {
			if (yf_uint(yf, v, "listen.threads", CFG_MAX_THREADS, &u) != 0)
				return -1;
			if (u < 1)
				return yf_error(yf, v, "listen.threads", "must be between 1 and %d",
				                CFG_MAX_THREADS);
			c->threads = (unsigned)u;
		} else {
			snprintf(key, sizeof(key), "listen.%.60s", k);
			return yf_error(yf, yf_pair_key(yf, map, i), key,
			                "unknown key in listen (expected socket, mode, group, "
			                "threads)");
		}
	}
	if (c->socket_path == NULL)
		return yf_error(yf, at, "listen.socket", "missing (path of the Unix socket)");
	return 0;
}

static int parse_ledger(struct loader *L, yaml_node_t *map)
{
	struct yfile *yf = &L->yf;
	struct config *c = L->c;
	yaml_node_t *v;
	const char *k, *s;
	char key[80];
	uint64_t u;
	int n, i;

	n = yf_map_size(yf, map, "ledger");
	if (n < 0)
		return -1;
	for (i = 0; i < n; i++) {
		yf_pair(yf, map, i, &k, &v);
		if (strcmp(k, "audit_key") == 0) {
			if (yf_str(yf, v, "ledger.audit_key", &s) != 0)
				return -1;
			if (strncmp(s, "pkcs11:", 7) != 0)
				return yf_error(yf, v, "ledger.audit_key",
				                "expected a PKCS#11 URI (RFC 7512) starting with "
				                "\"pkcs11:\"");
			if (strlen(s) > CFG_MAX_URI)
				return yf_error(yf, v, "ledger.audit_key",
				                "URI too long (at most %d)", CFG_MAX_URI);
			free(c->ledger_audit_key);
			c->ledger_audit_key = strdup(s);
			if (c->ledger_audit_key == NULL)
				return yf_error(yf, v, "ledger.audit_key", "out of memory");
		} else if (strcmp(k, "checkpoint_every") == 0) {
			if (yf_uint(yf, v, "ledger.checkpoint_every", CFG_MAX_CHECKPOINT_EVERY,
			            &u) != 0)
				return -1;
			if (u < 1)
				return yf_error(yf, v, "ledger.checkpoint_every",
				                "must be between 1 and %d",
				                CFG_MAX_CHECKPOINT_EVERY);
			c->ledger_checkpoint_every = (unsigned)u;
		} else if (strcmp(k, "checkpoint_interval") == 0) {
			if (yf_duration(yf, v, "ledger.checkpoint_interval", &u) != 0)
				return -1;
			if (u < 1 || u > CFG_MAX_CHECKPOINT_SECS)
				return yf_error(yf, v, "ledger.checkpoint_interval",
				                "must be between 1s and 1d (%d seconds)",
				                CFG_MAX_CHECKPOINT_SECS);
			c->ledger_checkpoint_secs = (unsigned)u;
		} else if (strcmp(k, "write_timeout") == 0) {
			if (yf_duration(yf, v, "ledger.write_timeout", &u) != 0)
				return -1;
			if (u < 1 || u > CFG_MAX_WRITE_TIMEOUT)
				return yf_error(yf, v, "ledger.write_timeout",
				                "must be between 1s and %ds",
				                CFG_MAX_WRITE_TIMEOUT);
			c->ledger_write_timeout = (unsigned)u;
		} else {
			snprintf(key, sizeof(key), "ledger.%.60s", k);
			return yf_error(yf, yf_pair_key(yf, map, i), key,
			                "unknown key in ledger (expected audit_key, "
			                "checkpoint_every, checkpoint_interval, write_timeout)");
		}
	}
	return 0;
}

static int parse_keys(struct loader *L, yaml_node_t *map)
{
	struct yfile *yf = &L->yf;
	struct config *c = L->c;
	yaml_node_t *v;
	const char *k, *s;
	char key[80];
	uint64_t u;
	int n, i;

	n = yf_map_size(yf, map, "keys");
	if (n < 0)
		return -1;
	for (i = 0; i < n; i++) {
		yf_pair(yf, map, i, &k, &v);
		if (strcmp(k, "kek") == 0) {
			if (yf_str(yf, v, "keys.kek", &s) != 0)
				return -1;
			if (strncmp(s, "pkcs11:", 7) != 0 || strlen(s) > CFG_MAX_URI)
				return yf_error(yf, v, "keys.kek",
				                "expected a PKCS#11 URI (pkcs11:...) of at most %d "
				                "bytes",
				                CFG_MAX_URI);
			free(c->keys_kek);
			if ((c->keys_kek = strdup(s)) == NULL)
				return yf_error(yf, v, "keys.kek", "out of memory");
		} else if (strcmp(k, "cache") == 0) {
			if (yf_uint(yf, v, "keys.cache", CFG_MAX_KEYS_CACHE, &u) != 0)
				return -1;
			if (u < CFG_MIN_KEYS_CACHE)
				return yf_error(yf, v, "keys.cache", "must be between %d and %d",
				                CFG_MIN_KEYS_CACHE, CFG_MAX_KEYS_CACHE);
			c->keys_cache = (unsigned)u;
		} else {
			snprintf(key, sizeof(key), "keys.%.60s", k);
			return yf_error(yf, yf_pair_key(yf, map, i), key,
			                "unknown key in keys (expected kek, cache)");
		}
	}
	return 0;
}

void config_limits_default(struct config_limits *l)
{
	l->body_size = CFG_DEFAULT_BODY_SIZE;
	l->header_size = CFG_DEFAULT_HEADER_SIZE;
	l->hashes = CFG_DEFAULT_HASHES;
	l->json_depth = CFG_DEFAULT_JSON_DEPTH;
	l->connections = CFG_DEFAULT_CONNECTIONS;
	l->per_uid = CFG_DEFAULT_PER_UID;
	l->read_timeout = CFG_DEFAULT_READ_TIMEOUT;
	l->idle_timeout = CFG_DEFAULT_IDLE_TIMEOUT;
}

/* A size in bytes: "65536", "64KiB" or "1MiB", between CFG_MIN_SIZE and max. */
static int get_size(struct loader *L, yaml_node_t *n, const char *key, size_t max, size_t *out)
{
	const char *s, *unit;
	uint64_t v = 0, mul = 1;
	size_t i;

	if (yf_str(&L->yf, n, key, &s) != 0)
		return -1;
	for (i = 0; s[i] >= '0' && s[i] <= '9'; i++) {
		if (i >= 9)
			return yf_error(&L->yf, n, key,
			                "size '%s' is too large (at most %zu bytes)", s, max);
		v = v * 10 + (uint64_t)(s[i] - '0');
	}
	unit = s + i;
	if (strcmp(unit, "KiB") == 0)
		mul = 1024;
	else if (strcmp(unit, "MiB") == 0)
		mul = 1024 * 1024;
	else if (unit[0] != '\0')
		i = 0;
	if (i == 0 || (i > 1 && s[0] == '0'))
		return yf_error(&L->yf, n, key,
		                "expected a size in bytes such as 65536, 64KiB or 1MiB, found '%s'",
		                s);
	v *= mul;
	if (v < CFG_MIN_SIZE || v > max)
		return yf_error(&L->yf, n, key, "must be between %d and %zu bytes", CFG_MIN_SIZE,
		                max);
	*out = (size_t)v;
	return 0;
}

/* An integer in lo..hi. */
static int get_uint_range(struct loader *L, yaml_node_t *n, const char *key, unsigned lo,
                          unsigned hi, unsigned *out)
{
	uint64_t u;

	if (yf_uint(&L->yf, n, key, hi, &u) != 0)
		return -1;
	if (u < lo)
		return yf_error(&L->yf, n, key, "must be between %u and %u", lo, hi);
	*out = (unsigned)u;
	return 0;
}

/* A duration of 1 s .. CFG_MAX_TIMEOUT. */
static int get_timeout(struct loader *L, yaml_node_t *n, const char *key, unsigned *out)
{
	uint64_t u;

	if (yf_duration(&L->yf, n, key, &u) != 0)
		return -1;
	if (u < 1 || u > CFG_MAX_TIMEOUT)
		return yf_error(&L->yf, n, key, "must be between 1s and 1h (%d seconds)",
		                CFG_MAX_TIMEOUT);
	*out = (unsigned)u;
	return 0;
}

static int parse_limits(struct loader *L, yaml_node_t *map)
{
	struct yfile *yf = &L->yf;
	struct config_limits *l = &L->c->limits;
	yaml_node_t *v, *per_uid = NULL;
	const char *k;
	char key[80];
	int n, i, r;

	n = yf_map_size(yf, map, "limits");
	if (n < 0)
		return -1;
	for (i = 0; i < n; i++) {
		yf_pair(yf, map, i, &k, &v);
		snprintf(key, sizeof(key), "limits.%.60s", k);
		if (strcmp(k, "body_size") == 0) {
			r = get_size(L, v, key, CFG_MAX_BODY_SIZE, &l->body_size);
		} else if (strcmp(k, "header_size") == 0) {
			r = get_size(L, v, key, CFG_MAX_HEADER_SIZE, &l->header_size);
		} else if (strcmp(k, "hashes") == 0) {
			r = get_uint_range(L, v, key, 1, CFG_MAX_HASHES, &l->hashes);
		} else if (strcmp(k, "json_depth") == 0) {
			r = get_uint_range(L, v, key, CFG_MIN_JSON_DEPTH, CFG_MAX_JSON_DEPTH,
			                   &l->json_depth);
		} else if (strcmp(k, "connections") == 0) {
			r = get_uint_range(L, v, key, 1, CFG_MAX_CONNECTIONS, &l->connections);
		} else if (strcmp(k, "connections_per_uid") == 0) {
			r = get_uint_range(L, v, key, 1, CFG_MAX_CONNECTIONS, &l->per_uid);
			per_uid = v;
		} else if (strcmp(k, "read_timeout") == 0) {
			r = get_timeout(L, v, key, &l->read_timeout);
		} else if (strcmp(k, "idle_timeout") == 0) {
			r = get_timeout(L, v, key, &l->idle_timeout);
		} else {
			return yf_error(yf, yf_pair_key(yf, map, i), key,
			                "unknown key in limits (expected body_size, header_size, "
			                "hashes, json_depth, connections, connections_per_uid, "
			                "read_timeout, idle_timeout)");
		}
		if (r != 0)
			return -1;
	}
	/* Left out, the per-uid cap follows a lowered total; given, it must fit in it. */
	if (per_uid == NULL && l->per_uid > l->connections)
		l->per_uid = l->connections;
	if (l->per_uid > l->connections)
		return yf_error(yf, per_uid, "limits.connections_per_uid",
		                "%u is more than limits.connections (%u)", l->per_uid,
		                l->connections);
	return 0;
}

/* A user or group name into *out (replacing what was there): 1..32 of [a-z0-9_.-], not
 * starting with '-' (what useradd accepts, less the odd cases). */
static int get_name(struct loader *L, yaml_node_t *n, const char *key, char **out)
{
	size_t len;

	free(*out);
	*out = NULL;
	if (yf_strdup(&L->yf, n, key, out) != 0)
		return -1;
	len = strlen(*out);
	if (len == 0 || len > 32 || (*out)[0] == '-' ||
	    strspn(*out, "abcdefghijklmnopqrstuvwxyz0123456789_.-") != len)
		return yf_error(&L->yf, n, key, "not a user or group name: '%.40s'", *out);
	return 0;
}

/* listener: the process that parses requests (user, group). */
static int parse_listener(struct loader *L, yaml_node_t *map)
{
	struct yfile *yf = &L->yf;
	struct config *c = L->c;
	yaml_node_t *v;
	const char *k;
	char key[80];
	int n, i;

	n = yf_map_size(yf, map, "listener");
	if (n < 0)
		return -1;
	for (i = 0; i < n; i++) {
		yf_pair(yf, map, i, &k, &v);
		if (strcmp(k, "user") == 0) {
			if (get_name(L, v, "listener.user", &c->listener_user) != 0)
				return -1;
		} else if (strcmp(k, "group") == 0) {
			if (get_name(L, v, "listener.group", &c->listener_group) != 0)
				return -1;
		} else {
			snprintf(key, sizeof(key), "listener.%.60s", k);
			return yf_error(yf, yf_pair_key(yf, map, i), key,
			                "unknown key (expected user, group)");
		}
	}
	return 0;
}

/* tsa.url: http://HOST[:PORT]/PATH. Plain HTTP only: the token is signed and checked, and the
 * listener, rooted in an empty directory, has no CA bundle for TLS. HOST is a DNS name, an
 * IPv4 address or a bracketed IPv6 address; it is resolved once, when the listener starts. */
static int tsa_url(struct loader *L, yaml_node_t *v)
{
	struct config *c = L->c;
	const char *s, *h, *e, *p;
	size_t hlen;
	unsigned long port = 80;

	if (yf_str(&L->yf, v, "tsa.url", &s) != 0)
		return -1;
	if (strlen(s) > CFG_MAX_TSA_URL)
		return yf_error(&L->yf, v, "tsa.url", "longer than %d bytes", CFG_MAX_TSA_URL);
	if (strncmp(s, "http://", 7) != 0)
		return yf_error(&L->yf, v, "tsa.url",
		                "expected http://HOST[:PORT]/PATH (plain HTTP: the token is "
		                "verified, not the transport)");
	h = s + 7;
	for (p = h; *p != '\0'; p++)
		if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f || *p == '#' ||
		    *p == '@')
			return yf_error(&L->yf, v, "tsa.url",
			                "spaces, controls, '#', '@' and non-ASCII are not allowed");
	if (*h == '[') {
		if ((e = strchr(h, ']')) == NULL || e == h + 1 ||
		    strspn(h + 1, "0123456789abcdefABCDEF:.") != (size_t)(e - h - 1))
			return yf_error(&L->yf, v, "tsa.url", "malformed IPv6 address");
		hlen = (size_t)(e - h - 1);
		h++;
		e++;
	} else {
		hlen =
		    strspn(h, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-");
		e = h + hlen;
		if (hlen == 0 || hlen > 253)
			return yf_error(&L->yf, v, "tsa.url", "no host name");
	}
	if (*e == ':') {
		char *end;

		if (e[1] < '0' || e[1] > '9')
			return yf_error(&L->yf, v, "tsa.url", "malformed port");
		port = strtoul(e + 1, &end, 10);
		if (port < 1 || port > 65535 || end - (e + 1) > 5)
			return yf_error(&L->yf, v, "tsa.url", "port not in 1..65535");
		e = end;
	}
	if (*e != '/' && *e != '\0')
		return yf_error(&L->yf, v, "tsa.url", "expected '/' or ':' after the host");
	free(c->tsa_url);
	free(c->tsa_host);
	c->tsa_url = strdup(s);
	c->tsa_host = strndup(h, hlen);
	c->tsa_port = (unsigned)port;
	if (c->tsa_url == NULL || c->tsa_host == NULL)
		return yf_error(&L->yf, v, "tsa.url", "out of memory");
	return 0;
}

/* A dotted OID: at least two arcs, digits only, no leading zeros. */
static int oid_syntax(const char *s)
{
	size_t arcs = 0, n;

	if (strlen(s) > 128)
		return 0;
	for (;;) {
		if ((n = strspn(s, "0123456789")) == 0 || (n > 1 && s[0] == '0'))
			return 0;
		arcs++;
		s += n;
		if (*s == '\0')
			return arcs >= 2;
		if (*s++ != '.')
			return 0;
	}
}

static int parse_tsa(struct loader *L, yaml_node_t *at, yaml_node_t *map)
{
	struct yfile *yf = &L->yf;
	struct config *c = L->c;
	yaml_node_t *v;
	const char *k, *s;
	char key[80];
	uint64_t u;
	int n, i;

	n = yf_map_size(yf, map, "tsa");
	if (n < 0)
		return -1;
	for (i = 0; i < n; i++) {
		yf_pair(yf, map, i, &k, &v);
		if (strcmp(k, "url") == 0) {
			if (tsa_url(L, v) != 0)
				return -1;
		} else if (strcmp(k, "trust_anchors") == 0) {
			if (yf_path(yf, v, "tsa.trust_anchors", &c->tsa_trust_anchors) != 0)
				return -1;
		} else if (strcmp(k, "hash") == 0) {
			if (yf_str(yf, v, "tsa.hash", &s) != 0)
				return -1;
			if ((c->tsa_hash = alg_hash_lookup(s)) == HASH_NONE)
				return yf_error(yf, v, "tsa.hash",
				                "expected sha256, sha384 or sha512, found '%s'", s);
		} else if (strcmp(k, "timeout") == 0) {
			if (yf_duration(yf, v, "tsa.timeout", &u) != 0)
				return -1;
			if (u < 1 || u > CFG_MAX_TSA_TIMEOUT)
				return yf_error(yf, v, "tsa.timeout", "must be between 1s and %ds",
				                CFG_MAX_TSA_TIMEOUT);
			c->tsa_timeout = (unsigned)u;
		} else if (strcmp(k, "policy") == 0) {
			if (yf_str(yf, v, "tsa.policy", &s) != 0)
				return -1;
			if (!oid_syntax(s))
				return yf_error(
				    yf, v, "tsa.policy",
				    "expected a dotted OID such as 1.2.3.4, found '%.64s'", s);
			free(c->tsa_policy);
			if ((c->tsa_policy = strdup(s)) == NULL)
				return yf_error(yf, v, "tsa.policy", "out of memory");
		} else {
			snprintf(key, sizeof(key), "tsa.%.60s", k);
			return yf_error(yf, yf_pair_key(yf, map, i), key,
			                "unknown key in tsa (expected url, trust_anchors, hash, "
			                "timeout, policy)");
		}
	}
	if (c->tsa_url == NULL)
		return yf_error(yf, at, "tsa.url", "missing (the time-stamping service)");
	if (c->tsa_trust_anchors == NULL)
		return yf_error(yf, at, "tsa.trust_anchors",
		                "missing (the CA certificates the TSA's tokens must chain to)");
	return 0;
}

static int parse_root(struct loader *L)
{
	struct yfile *yf = &L->yf;
	struct config *c = L->c;
	yaml_node_t *root = yf_root(yf), *v, *token = NULL, *listen = NULL;
	yaml_node_t *token_key = NULL, *listen_key = NULL;
	const char *k;
	int n, i;

	n = yf_map_size(yf, root, "configuration");
	if (n < 0)
		return -1;
	for (i = 0; i < n; i++) {
		yf_pair(yf, root, i, &k, &v);
		if (strcmp(k, "token") == 0) {
			token = v;
			token_key = yf_pair_key(yf, root, i);
		} else if (strcmp(k, "listen") == 0) {
			listen = v;
			listen_key = yf_pair_key(yf, root, i);
		} else if (strcmp(k, "state_dir") == 0) {
			if (yf_path(&L->yf, v, "state_dir", &c->state_dir) != 0)
				return -1;
		} else if (strcmp(k, "policy") == 0) {
			if (yf_path(&L->yf, v, "policy", &c->policy_path) != 0)
				return -1;
		} else if (strcmp(k, "sad_issuers") == 0) {
			yf_strv_free(c->sad_issuers);
			c->sad_issuers = NULL;
			if (yf_paths(&L->yf, v, "sad_issuers", CFG_MAX_LIST, &c->sad_issuers,
			             &c->nsad_issuers) != 0)
				return -1;
		} else if (strcmp(k, "trust_anchors") == 0) {
			if (yf_path(&L->yf, v, "trust_anchors", &c->trust_anchors) != 0)
				return -1;
		} else if (strcmp(k, "user") == 0) {
			if (get_name(L, v, "user", &c->user) != 0)
				return -1;
		} else if (strcmp(k, "group") == 0) {
			if (get_name(L, v, "group", &c->group) != 0)
				return -1;
		} else if (strcmp(k, "listener") == 0) {
			if (parse_listener(L, v) != 0)
				return -1;
		} else if (strcmp(k, "ledger") == 0) {
			if (parse_ledger(L, v) != 0)
				return -1;
		} else if (strcmp(k, "limits") == 0) {
			if (parse_limits(L, v) != 0)
				return -1;
		} else if (strcmp(k, "tsa") == 0) {
			if (parse_tsa(L, yf_pair_key(yf, root, i), v) != 0)
				return -1;
		} else if (strcmp(k, "keys") == 0) {
			if (parse_keys(L, v) != 0)
				return -1;
		} else {
			return yf_error(
			    yf, yf_pair_key(yf, root, i), k,
			    "unknown key (expected token, listen, listener, user, group, "
			    "state_dir, policy, sad_issuers, trust_anchors, ledger, "
			    "keys, limits, tsa)");
		}
	}
	if (token == NULL)
		return yf_error(yf, root, "token", "missing (module, uri and pin_file)");
	if (parse_token(L, token_key, token) != 0)
		return -1;
	if (listen == NULL)
		return yf_error(yf, root, "listen", "missing (at least listen.socket)");
	if (parse_listen(L, listen_key, listen) != 0)
		return -1;
	if (c->state_dir == NULL)
		return yf_error(yf, root, "state_dir", "missing (directory of the ledger)");
	if (c->policy_path == NULL)
		return yf_error(yf, root, "policy", "missing (path of the policy file)");
	return 0;
}

int config_load(const char *path, struct config **out, char *err, size_t errlen)
{
	struct loader L;
	struct config *c = NULL;
	int r = -1;

	*out = NULL;
	memset(&L, 0, sizeof(L));
	if (yf_load(&L.yf, path, err, errlen) != 0)
		goto out;
	c = calloc(1, sizeof(*c));
	if (c == NULL || (c->path = strdup(path)) == NULL ||
	    (c->sad_issuers = calloc(1, sizeof(*c->sad_issuers))) == NULL) {
		yf_error(&L.yf, NULL, NULL, "out of memory");
		goto out;
	}
	c->socket_mode = CFG_DEFAULT_MODE;
	c->threads = CFG_DEFAULT_THREADS;
	c->ledger_checkpoint_every = CFG_DEFAULT_CHECKPOINT_EVERY;
	c->ledger_checkpoint_secs = CFG_DEFAULT_CHECKPOINT_SECS;
	c->ledger_write_timeout = CFG_DEFAULT_WRITE_TIMEOUT;
	c->tsa_hash = HASH_SHA256;
	c->tsa_timeout = CFG_DEFAULT_TSA_TIMEOUT;
	c->keys_cache = CFG_DEFAULT_KEYS_CACHE;
	config_limits_default(&c->limits);
	L.c = c;
	if (parse_root(&L) != 0)
		goto out;
	if ((c->ledger_audit_key == NULL &&
	     (c->ledger_audit_key = strdup(CFG_DEFAULT_AUDIT_KEY)) == NULL) ||
	    (c->keys_kek == NULL && (c->keys_kek = strdup(CFG_DEFAULT_KEK)) == NULL) ||
	    (c->listener_user == NULL && (c->listener_user = strdup("nobody")) == NULL)) {
		yf_error(&L.yf, NULL, NULL, "out of memory");
		goto out;
	}
	*out = c;
	c = NULL;
	r = 0;
out:
	config_free(c);
	yf_free(&L.yf);
	return r;
}

void config_free(struct config *c)
{
	if (c == NULL)
		return;
	free(c->path);
	free(c->token_module);
	free(c->token_uri);
	free(c->token_pin_file);
	yf_strv_free(c->token_module_dirs);
	free(c->socket_path);
	free(c->socket_group);
	free(c->user);
	free(c->group);
	free(c->listener_user);
	free(c->listener_group);
	free(c->state_dir);
	free(c->policy_path);
	yf_strv_free(c->sad_issuers);
	free(c->trust_anchors);
	free(c->ledger_audit_key);
	free(c->tsa_url);
	free(c->tsa_host);
	free(c->tsa_trust_anchors);
	free(c->tsa_policy);
	free(c->keys_kek);
	free(c);
}

int config_lookup_user(const char *user, const char *group, const char *key, uid_t *uid, gid_t *gid,
                       char *err, size_t errlen)
{
	struct passwd pw, *pwp = NULL;
	struct group gr, *grp = NULL;
	char buf[4096];

	if (getpwnam_r(user, &pw, buf, sizeof(buf), &pwp) != 0 || pwp == NULL) {
		snprintf(err, errlen, "%s%suser: no such user: %s", key, *key ? "." : "", user);
		return -1;
	}
	*uid = pw.pw_uid;
	*gid = pw.pw_gid;
	if (group != NULL) {
		if (getgrnam_r(group, &gr, buf, sizeof(buf), &grp) != 0 || grp == NULL) {
			snprintf(err, errlen, "%s%sgroup: no such group: %s", key, *key ? "." : "",
			         group);
			return -1;
		}
		*gid = gr.gr_gid;
	}
	return 0;
}

int config_switch_user(uid_t uid, gid_t gid, char *err, size_t errlen)
{
	if (getuid() == uid && geteuid() == uid && getgid() == gid && getegid() == gid)
		return 0; /* already */
	if (setgroups(1, &gid) != 0 || setgid(gid) != 0 || setuid(uid) != 0) {
		snprintf(err, errlen, "cannot become uid %u: %s", (unsigned)uid, strerror(errno));
		return -1;
	}
	if (uid != 0 && (setuid(0) == 0 || seteuid(0) == 0)) {
		snprintf(err, errlen, "cannot become uid %u: root could be regained",
		         (unsigned)uid);
		return -1;
	}
	/* A change of user makes the process dumpable again. */
	prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
	return 0;
}

int config_become_user(const struct config *c, char *err, size_t errlen)
{
	uid_t uid;
	gid_t gid;

	char why[256];

	if (c->user == NULL)
		return 0;
	if (config_lookup_user(c->user, c->group, "", &uid, &gid, why, sizeof(why)) != 0) {
		snprintf(err, errlen, "%s: %s", c->path, why);
		return -1;
	}
	return config_switch_user(uid, gid, err, errlen);
}
