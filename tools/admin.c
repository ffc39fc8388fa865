/* iamsign-admin: the security officers' tool. Provisions the token (init-token, audit-key,
 * keygen, csr, import-cert) and the credential registry (enrol, list, suspend, resume, revoke,
 * destroy), checks and exports the audit ledger, using the daemon's configuration for the
 * module, token, PIN file and state directory.
 *
 * Every command that changes state appends an audit record (op "admin.<command>") through the
 * ledger in direct mode; the ledger is opened before anything changes, so an unwritable ledger
 * refuses the action rather than letting it go unrecorded.
 *
 * PINs come only from files (tok_pin_read refuses group- or world-readable ones) and are wiped
 * after use. Exit status: 0 done, 1 failed, 2 usage error. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/asn1.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <p11-kit/pkcs11.h>
#include <p11-kit/uri.h>

#include "pkcs11/token.h"
#include "pkcs11/wrapped.h"
#include "policy/policy.h"
#include "policy/rules.h"
#include "signer/config.h"
#include "signer/core/ledger.h"
#include "signer/core/registry.h"

#define PROG "iamsign-admin"
#define DEFAULT_CONFIG "/etc/iamsign/iamsignd.yaml"

enum { EXIT_OK = 0, EXIT_FAIL = 1, EXIT_USAGE = 2, HELP_SHOWN = -1 };

#define MAX_CERT_FILE (64 * 1024)  /* one certificate, PEM or DER */
#define MAX_CHAIN_FILE (64 * 1024) /* a chain, PEM */
#define MAX_CHAIN_CERTS 10
#define MAX_PUBKEY_FILE (16 * 1024) /* a device public key, PEM */
#define MAX_SUBJECT 1024
#define MAX_COUNT 1000000
#define MAX_LABEL 256        /* longest CKA_LABEL read back */
#define MAX_OBJECTS 10000000 /* bound on objects enumerated from the token */
#define CKA_ID_LEN 16
#define TOKEN_LABEL_LEN 32
#define AUDIT_KEY_LABEL "iamsign-audit"
#define AUDIT_KEY_URI "pkcs11:object=" AUDIT_KEY_LABEL ";type=private"

static void msg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void msg(const char *fmt, ...)
{
	va_list ap;

	fputs(PROG ": ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

/* The first OpenSSL error, for messages; "" when there is none. */
static const char *ossl_err(void)
{
	static char buf[256];
	unsigned long e = ERR_peek_last_error();

	if (e == 0)
		return "unknown error";
	ERR_error_string_n(e, buf, sizeof(buf));
	ERR_clear_error();
	return buf;
}

/* ---- arguments ---- */

enum opt_id {
	OPT_CONFIG = 'c',
	OPT_HELP = 'h',
	OPT_LABEL = 256,
	OPT_SO_PIN_FILE,
	OPT_CREDENTIAL,
	OPT_ALG,
	OPT_COUNT,
	OPT_SUBJECT,
	OPT_OUT,
	OPT_CERT,
	OPT_CHAIN,
	OPT_USER,
	OPT_CLASS,
	OPT_DEVICE_KEY,
	OPT_KEY,
	OPT_FORMAT,
	OPT_STORE,
	OPT_DIR,
	OPT_FROM,
	OPT_LAST
};

#define MAX_POS 1

struct args {
	const char *v[OPT_LAST];  /* option values by enum opt_id */
	const char *pos[MAX_POS]; /* positional arguments */
};

struct command {
	const char *name; /* one word, or "word word" ("audit verify") */
	const char *usage;
	const struct option *opts;   /* terminated by a zero entry */
	const char *const *required; /* long names that must be given, NULL-terminated */
	int (*run)(const char *config_path, const struct args *a);
	int npos; /* positional arguments required (at most MAX_POS) */
};

#define OPT(name, id)                                                                              \
	{                                                                                          \
		name, required_argument, NULL, id                                                  \
	}
#define COMMON_OPTS                                                                                \
	OPT("config", OPT_CONFIG),                                                                 \
	{                                                                                          \
		"help", no_argument, NULL, OPT_HELP                                                \
	}

static void usage_line(FILE *f, const struct command *c)
{
	fprintf(f, "  %s %s\n", c->name, c->usage);
}

/* Parse a command's options into a; usage errors are reported here. */
static int parse_args(const struct command *c, int argc, char **argv, struct args *a,
                      const char **config_path)
{
	const char *const *req;
	int ch, i, li = 0;

	memset(a, 0, sizeof(*a));
	optind = 0; /* glibc: restart scanning; argv[0] is the command name */
	opterr = 0;
	while ((ch = getopt_long(argc, argv, "+c:h", c->opts, &li)) != -1) {
		if (ch == OPT_HELP) {
			printf("usage: " PROG " [-c CONFIG] %s %s\n", c->name, c->usage);
			return HELP_SHOWN;
		}
		if (ch == OPT_CONFIG) {
			*config_path = optarg;
			continue;
		}
		if (ch < OPT_LABEL || ch >= OPT_LAST) {
			msg("%s: unknown option or missing value: %s", c->name,
			    optind > 0 && optind <= argc ? argv[optind - 1] : "?");
			return EXIT_USAGE;
		}
		if (a->v[ch] != NULL) {
			msg("%s: --%s given twice", c->name, c->opts[li].name);
			return EXIT_USAGE;
		}
		a->v[ch] = optarg;
	}
	for (i = 0; i < c->npos && optind < argc; i++)
		a->pos[i] = argv[optind++];
	if (i < c->npos) {
		msg("%s: missing argument", c->name);
		return EXIT_USAGE;
	}
	if (optind < argc) {
		msg("%s: unexpected argument '%s'", c->name, argv[optind]);
		return EXIT_USAGE;
	}
	for (req = c->required; req != NULL && *req != NULL; req++) {
		for (i = 0; c->opts[i].name != NULL; i++)
			if (strcmp(c->opts[i].name, *req) == 0)
				break;
		if (c->opts[i].name == NULL || a->v[c->opts[i].val] == NULL) {
			msg("%s: --%s is required", c->name, *req);
			return EXIT_USAGE;
		}
	}
	return EXIT_OK;
}

static int parse_count(const char *s, unsigned long *out)
{
	char *end;
	unsigned long v;

	if (s == NULL) {
		*out = 0;
		return 0;
	}
	if (*s < '0' || *s > '9')
		return -1;
	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno != 0 || *end != '\0' || v < 1 || v > MAX_COUNT)
		return -1;
	*out = v;
	return 0;
}

/* ---- files ---- */

/* Read a whole regular file of at most max bytes; *buf is NUL-terminated and freed by the
 * caller. */
static int read_file(const char *path, size_t max, unsigned char **buf, size_t *len)
{
	struct stat sb;
	unsigned char *b = NULL;
	size_t got = 0;
	ssize_t n;
	int fd = -1, r = EXIT_FAIL;

	*buf = NULL;
	*len = 0;
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0) {
		msg("%s: %s", path, strerror(errno));
		goto out;
	}
	if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
		msg("%s: not a regular file", path);
		goto out;
	}
	if (sb.st_size <= 0 || (unsigned long long)sb.st_size > max) {
		msg("%s: empty or larger than %zu bytes", path, max);
		goto out;
	}
	if ((b = malloc((size_t)sb.st_size + 1)) == NULL) {
		msg("out of memory");
		goto out;
	}
	while (got < (size_t)sb.st_size) {
		n = read(fd, b + got, (size_t)sb.st_size - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			msg("%s: %s", path, n < 0 ? strerror(errno) : "file shrank while reading");
			goto out;
		}
		got += (size_t)n;
	}
	b[got] = '\0';
	*buf = b;
	*len = got;
	b = NULL;
	r = EXIT_OK;
out:
	free(b);
	if (fd >= 0)
		close(fd);
	return r;
}

/* Write data to path ("-": standard output), replacing the file. */
static int write_file(const char *path, const void *data, size_t len)
{
	const unsigned char *p = data;
	ssize_t n;
	int fd, r = EXIT_FAIL;

	if (strcmp(path, "-") == 0)
		fd = STDOUT_FILENO;
	else if ((fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0644)) <
	         0) {
		msg("%s: %s", path, strerror(errno));
		return EXIT_FAIL;
	}
	while (len > 0) {
		n = write(fd, p, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			msg("%s: %s", path, strerror(errno));
			goto out;
		}
		p += n;
		len -= (size_t)n;
	}
	r = EXIT_OK;
out:
	if (fd != STDOUT_FILENO && close(fd) != 0 && r == EXIT_OK) {
		msg("%s: %s", path, strerror(errno));
		r = EXIT_FAIL;
	}
	return r;
}

/* ---- configuration, token, registry ---- */

/* Load the configuration; run as root with `user` configured, become that user (as the
 * daemon's core does), so that what this tool creates (database, token files) belongs to it.
 * The PIN files (the user PIN's, and extra_pin when given), which stay root's, are read
 * first. */
static int load_config_pins(const char *path, const char *extra_pin, struct config **cfg)
{
	char err[512];

	if (config_load(path, cfg, err, sizeof(err)) != 0) {
		msg("%s", err);
		return EXIT_FAIL;
	}
	if ((*cfg)->user == NULL || geteuid() != 0)
		return EXIT_OK;
	/* A PIN file that cannot be read is reported by the command that needs it. */
	tok_pin_preload((*cfg)->token_pin_file);
	if (extra_pin != NULL)
		tok_pin_preload(extra_pin);
	if (config_become_user(*cfg, err, sizeof(err)) != 0) {
		msg("%s", err);
		tok_pin_preload_clear();
		return EXIT_FAIL;
	}
	return EXIT_OK;
}

static int load_config(const char *path, struct config **cfg)
{
	return load_config_pins(path, NULL, cfg);
}

static int open_token(const struct config *cfg, int login, int require_initialized,
                      struct token **tok)
{
	struct tok_opts o;
	char err[512] = "";
	int r;

	memset(&o, 0, sizeof(o));
	o.module = cfg->token_module;
	o.module_dirs = (const char *const *)cfg->token_module_dirs;
	o.uri = cfg->token_uri;
	o.pin_file = login ? cfg->token_pin_file : NULL;
	o.require_initialized = require_initialized;
	if ((r = tok_open(&o, tok, err, sizeof(err))) != TOK_OK) {
		msg("token: %s", err[0] != '\0' ? err : tok_strerror(r));
		return EXIT_FAIL;
	}
	return EXIT_OK;
}

/* Open the registry; when create == 0, a missing database leaves *reg NULL and succeeds. */
static int open_registry(const struct config *cfg, int create, struct registry **reg)
{
	char err[512] = "";
	int r;

	*reg = NULL;
	r = registry_open(cfg->state_dir, create, reg, err, sizeof(err));
	if (r == REG_OK || (!create && r == REG_ERR_NOT_FOUND))
		return EXIT_OK;
	msg("%s", err[0] != '\0' ? err : "registry: cannot open");
	return EXIT_FAIL;
}

/* ---- audit ---- */

/* The audit record of one admin command: the ledger is checked before the command changes
 * anything, and the record written when it ends (decision allow, or deny with a reason).
 *
 * The ledger is not held open in between: registry_open() opens and closes the database file
 * itself, and closing any descriptor of a file drops every POSIX lock the process holds on it,
 * those of an open ledger connection included (SQLite's WAL relies on them). So registry
 * handles come and go while no ledger connection is open, and the ledger is reopened (it only
 * stat()s an existing file) to append. */
struct audit {
	struct ledger *l;
	int ready; /* audit_begin succeeded */
	const char *state_dir;
	struct ledger_opts opts;
	const char *op;
	char cred[CRED_MAX_ID + 1];
	char owner[CRED_MAX_USER + 1];
	char detail[200];
	const char *reason; /* a stable reason for a refusal; NULL: "failed" */
};

static int audit_open(struct audit *au)
{
	char err[512] = "";

	if (au->l != NULL)
		return EXIT_OK;
	if (ledger_open(au->state_dir, &au->opts, &au->l, err, sizeof(err)) != LEDGER_OK) {
		msg("audit ledger: %s", err[0] != '\0' ? err : "cannot open");
		au->l = NULL;
		return EXIT_FAIL;
	}
	return EXIT_OK;
}

/* Check that the ledger can be opened (creating the state directory and tables if need be);
 * refuse the command otherwise. With a sign callback the ledger stays open (audit
 * checkpoint, which opens no registry). */
static int audit_begin(struct audit *au, const struct config *cfg, const char *op,
                       ledger_sign_fn sign, void *sign_arg)
{
	memset(au, 0, sizeof(*au));
	au->op = op;
	au->state_dir = cfg->state_dir;
	au->opts.direct = 1;
	au->opts.sign = sign;
	au->opts.sign_arg = sign_arg;
	if (audit_open(au) != EXIT_OK) {
		msg("%s: refused: the action could not be recorded", op);
		return EXIT_FAIL;
	}
	if (sign == NULL) { /* see struct audit */
		ledger_close(au->l);
		au->l = NULL;
	}
	au->ready = 1;
	return EXIT_OK;
}

static void audit_cred(struct audit *au, const char *cred, const char *owner)
{
	if (cred != NULL)
		snprintf(au->cred, sizeof(au->cred), "%s", cred);
	if (owner != NULL)
		snprintf(au->owner, sizeof(au->owner), "%s", owner);
}

static void audit_detail(struct audit *au, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void audit_detail(struct audit *au, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(au->detail, sizeof(au->detail), fmt, ap);
	va_end(ap);
}

/* Write the record for result r. A record that cannot be written turns a success into a
 * failure: the action happened, but unrecorded, and the operator must know. */
static int audit_record(struct audit *au, int r)
{
	struct audit_rec *rec = NULL;
	int lr = LEDGER_ERR_UNAVAILABLE;

	if (!au->ready)
		return r;
	if (audit_open(au) != EXIT_OK)
		goto out;
	if ((rec = calloc(1, sizeof(*rec))) == NULL) {
		msg("out of memory");
		lr = LEDGER_ERR_INTERNAL;
		goto out;
	}
	snprintf(rec->caller, sizeof(rec->caller), "admin");
	rec->uid = (uint32_t)getuid();
	rec->gid = (uint32_t)getgid();
	rec->pid = (int32_t)getpid();
	snprintf(rec->op, sizeof(rec->op), "%s", au->op);
	snprintf(rec->cred, sizeof(rec->cred), "%s", au->cred);
	snprintf(rec->owner, sizeof(rec->owner), "%s", au->owner);
	snprintf(rec->decision, sizeof(rec->decision), "%s", r == EXIT_OK ? "allow" : "deny");
	if (r != EXIT_OK)
		snprintf(rec->reason, sizeof(rec->reason), "%s",
		         au->reason != NULL ? au->reason : "failed");
	snprintf(rec->detail, sizeof(rec->detail), "%s", au->detail);
	lr = ledger_append(au->l, rec);
out:
	free(rec);
	if (lr != LEDGER_OK) {
		msg("audit ledger: cannot record %s (error %d)%s", au->op, lr,
		    r == EXIT_OK ? "; the action was done but is not in the ledger" : "");
		if (r == EXIT_OK)
			r = EXIT_FAIL;
	}
	return r;
}

/* Write the record and close the ledger. */
static int audit_end(struct audit *au, int r)
{
	if (!au->ready)
		return r;
	r = audit_record(au, r);
	ledger_close(au->l);
	au->l = NULL;
	au->ready = 0;
	return r;
}

static void rv_msg(const char *what, CK_RV rv)
{
	msg("%s: %s (CKR 0x%lx)", what, tok_strerror(tok_err_from_rv(rv)), (unsigned long)rv);
}

static void default_key_uri(const char *id, char *uri, size_t len)
{
	/* IDs are [A-Za-z0-9._-], all unreserved in RFC 7512: no escaping needed. */
	snprintf(uri, len, "pkcs11:object=%s;type=private", id);
}

/* The key of credential id: the URI the registry records if it is enrolled, else the key
 * labelled id. */
static int credential_key_uri(const struct config *cfg, const char *id, char *uri, size_t len)
{
	struct registry *reg = NULL;
	struct reg_cred c;
	int r = EXIT_FAIL, rr;

	memset(&c, 0, sizeof(c));
	if (open_registry(cfg, 0, &reg) != EXIT_OK)
		goto out;
	default_key_uri(id, uri, len);
	if (reg == NULL) {
		r = EXIT_OK;
		goto out;
	}
	rr = registry_get(reg, id, &c);
	if (rr == REG_OK)
		snprintf(uri, len, "%s", c.key_uri);
	else if (rr != REG_ERR_NOT_FOUND) {
		msg("registry: cannot read credential %s", id);
		goto out;
	}
	r = EXIT_OK;
out:
	reg_cred_clear(&c);
	registry_close(reg);
	return r;
}

static int get_key(struct token *tok, const char *uri, const char *id, const struct tok_key **key)
{
	int r = tok_key_get(tok, uri, key);

	if (r == TOK_OK)
		return EXIT_OK;
	if (r == TOK_ERR_NOT_FOUND)
		msg("no private key for credential %s on the token (%s)", id, uri);
	else
		msg("key %s: %s", uri, tok_strerror(r));
	return EXIT_FAIL;
}

/* ---- PKCS#11 helpers ---- */

struct handles {
	CK_OBJECT_HANDLE *h;
	size_t n, cap;
};

static void handles_free(struct handles *hv)
{
	free(hv->h);
	memset(hv, 0, sizeof(*hv));
}

/* Append every object matching tmpl to hv. */
static int find_objects(CK_FUNCTION_LIST *fn, CK_SESSION_HANDLE s, CK_ATTRIBUTE *tmpl,
                        CK_ULONG ntmpl, struct handles *hv)
{
	CK_OBJECT_HANDLE batch[64];
	CK_ULONG got, i;
	CK_RV rv;
	int r = EXIT_FAIL;

	if ((rv = fn->C_FindObjectsInit(s, tmpl, ntmpl)) != CKR_OK) {
		rv_msg("C_FindObjectsInit", rv);
		return EXIT_FAIL;
	}
	for (;;) {
		if ((rv = fn->C_FindObjects(s, batch, 64, &got)) != CKR_OK) {
			rv_msg("C_FindObjects", rv);
			goto out;
		}
		if (got == 0)
			break;
		if (hv->n + got > hv->cap) {
			size_t cap = hv->cap == 0 ? 64 : hv->cap * 2;
			CK_OBJECT_HANDLE *nh;
			while (cap < hv->n + got)
				cap *= 2;
			if (cap > MAX_OBJECTS || (nh = realloc(hv->h, cap * sizeof(*nh))) == NULL) {
				msg("too many objects on the token");
				goto out;
			}
			hv->h = nh;
			hv->cap = cap;
		}
		for (i = 0; i < got; i++)
			hv->h[hv->n++] = batch[i];
	}
	r = EXIT_OK;
out:
	fn->C_FindObjectsFinal(s);
	return r;
}

/* Read a CKA_LABEL (at most MAX_LABEL bytes) into buf, NUL-terminated; "" if it has none. */
static int get_label(CK_FUNCTION_LIST *fn, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE h, char *buf,
                     size_t len)
{
	CK_ATTRIBUTE a = {CKA_LABEL, NULL, 0};
	CK_RV rv;

	buf[0] = '\0';
	rv = fn->C_GetAttributeValue(s, h, &a, 1);
	if (rv == CKR_ATTRIBUTE_TYPE_INVALID || a.ulValueLen == CK_UNAVAILABLE_INFORMATION)
		return EXIT_OK;
	if (rv != CKR_OK) {
		rv_msg("C_GetAttributeValue(CKA_LABEL)", rv);
		return EXIT_FAIL;
	}
	if (a.ulValueLen >= len) /* longer than any ID: cannot collide with one */
		return EXIT_OK;
	a.pValue = buf;
	if ((rv = fn->C_GetAttributeValue(s, h, &a, 1)) != CKR_OK) {
		rv_msg("C_GetAttributeValue(CKA_LABEL)", rv);
		return EXIT_FAIL;
	}
	buf[a.ulValueLen] = '\0';
	return EXIT_OK;
}

/* Labels already on the token, sorted, for --count (one enumeration, not one search per ID). */
struct labels {
	char **v;
	size_t n;
};

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static void labels_free(struct labels *l)
{
	size_t i;

	for (i = 0; i < l->n; i++)
		free(l->v[i]);
	free(l->v);
	memset(l, 0, sizeof(*l));
}

static int labels_load(CK_FUNCTION_LIST *fn, CK_SESSION_HANDLE s, struct labels *l)
{
	struct handles hv = {0};
	char buf[MAX_LABEL + 1];
	size_t i;
	int r = EXIT_FAIL;

	memset(l, 0, sizeof(*l));
	if (find_objects(fn, s, NULL, 0, &hv) != EXIT_OK)
		goto out;
	if (hv.n > 0 && (l->v = calloc(hv.n, sizeof(*l->v))) == NULL) {
		msg("out of memory");
		goto out;
	}
	for (i = 0; i < hv.n; i++) {
		if (get_label(fn, s, hv.h[i], buf, sizeof(buf)) != EXIT_OK)
			goto out;
		if (buf[0] == '\0')
			continue;
		if ((l->v[l->n] = strdup(buf)) == NULL) {
			msg("out of memory");
			goto out;
		}
		l->n++;
	}
	if (l->n > 0)
		qsort(l->v, l->n, sizeof(*l->v), cmp_str);
	r = EXIT_OK;
out:
	if (r != EXIT_OK)
		labels_free(l);
	handles_free(&hv);
	return r;
}

/* 1 if an object labelled label exists (looked up in l when given, else searched), 0 if not,
 * -1 on error. */
static int label_taken(CK_FUNCTION_LIST *fn, CK_SESSION_HANDLE s, const struct labels *l,
                       const char *label)
{
	CK_ATTRIBUTE t = {CKA_LABEL, (void *)label, strlen(label)};
	struct handles hv = {0};
	int r;

	if (l != NULL)
		return l->n > 0 && bsearch(&label, l->v, l->n, sizeof(*l->v), cmp_str) != NULL;
	if (find_objects(fn, s, &t, 1, &hv) != EXIT_OK)
		return -1;
	r = hv.n > 0;
	handles_free(&hv);
	return r;
}

/* ---- init-token ---- */

static int valid_token_label(const char *s)
{
	size_t i, n = strlen(s);

	if (n == 0 || n > TOKEN_LABEL_LEN || s[n - 1] == ' ' || s[0] == ' ')
		return 0;
	for (i = 0; i < n; i++)
		if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] > 0x7e)
			return 0;
	return 1;
}

/* Does the configured token URI select the token described by info? */
static int uri_matches(const char *uri_str, CK_TOKEN_INFO *info)
{
	P11KitUri *uri = p11_kit_uri_new();
	int r = 0;

	if (uri != NULL && p11_kit_uri_parse(uri_str, P11_KIT_URI_FOR_TOKEN, uri) == P11_KIT_URI_OK)
		r = p11_kit_uri_match_token_info(uri, info);
	p11_kit_uri_free(uri);
	return r;
}

static int create_audit_key(struct token *tok);
static int make_kek(const struct config *cfg, struct token *tok, char *idhex);

static int cmd_init_token(const char *config_path, const struct args *a)
{
	const char *label = a->v[OPT_LABEL];
	struct audit au = {0};
	struct config *cfg = NULL;
	struct token *tok = NULL;
	CK_FUNCTION_LIST *fn = NULL;
	CK_SESSION_HANDLE s;
	CK_TOKEN_INFO info;
	CK_UTF8CHAR padded[TOKEN_LABEL_LEN];
	char *so = NULL, *user = NULL;
	size_t solen = 0, userlen = 0;
	int logged_in = 0, r = EXIT_FAIL, tr;
	char kekhex[2 * TOK_KEK_ID_LEN + 1] = "";
	CK_RV rv;

	if (!valid_token_label(label)) {
		msg("init-token: the label must be 1..32 printable ASCII characters, without "
		    "leading or trailing spaces");
		return EXIT_USAGE;
	}
	/* The state directory may not exist yet: opening the ledger creates it. */
	if (load_config_pins(config_path, a->v[OPT_SO_PIN_FILE], &cfg) != EXIT_OK ||
	    audit_begin(&au, cfg, "admin.init-token", NULL, NULL) != EXIT_OK)
		goto out;
	audit_detail(&au, "label=%s", label);
	/* Read both PINs before touching the token, so a bad file changes nothing. */
	if ((tr = tok_pin_read(a->v[OPT_SO_PIN_FILE], &so, &solen)) != TOK_OK) {
		msg("SO PIN file %s: %s", a->v[OPT_SO_PIN_FILE], tok_strerror(tr));
		goto out;
	}
	if ((tr = tok_pin_read(cfg->token_pin_file, &user, &userlen)) != TOK_OK) {
		msg("user PIN file %s: %s", cfg->token_pin_file, tok_strerror(tr));
		goto out;
	}
	if (open_token(cfg, 0, 0, &tok) != EXIT_OK)
		goto out;
	fn = tok_functions(tok);
	if ((rv = fn->C_GetTokenInfo(tok_slot(tok), &info)) != CKR_OK) {
		rv_msg("C_GetTokenInfo", rv);
		goto out;
	}
	if (info.flags & CKF_TOKEN_INITIALIZED) {
		msg("init-token: the selected token is already initialised; refusing to erase it");
		au.reason = "token_initialised";
		goto out;
	}
	memset(padded, ' ', sizeof(padded));
	memcpy(padded, label, strlen(label));
	if ((rv = fn->C_InitToken(tok_slot(tok), (CK_UTF8CHAR *)so, solen, padded)) != CKR_OK) {
		rv_msg("C_InitToken", rv);
		goto out;
	}
	if ((tr = tok_login(tok, a->v[OPT_SO_PIN_FILE], 1)) != TOK_OK) {
		msg("SO login: %s", tok_strerror(tr));
		goto out;
	}
	logged_in = 1;
	if ((tr = tok_session(tok, &s)) != TOK_OK) {
		msg("session: %s", tok_strerror(tr));
		goto out;
	}
	if ((rv = fn->C_InitPIN(s, (CK_UTF8CHAR *)user, userlen)) != CKR_OK) {
		rv_msg("C_InitPIN", rv);
		goto out;
	}
	printf("token initialised with label \"%s\"; user PIN set from %s\n", label,
	       cfg->token_pin_file);
	/* The audit key, as the user: the SO cannot create private objects. */
	fn->C_Logout(s);
	logged_in = 0;
	if ((tr = tok_login(tok, cfg->token_pin_file, 0)) != TOK_OK) {
		msg("user login: %s", tok_strerror(tr));
		goto out;
	}
	logged_in = 1;
	if (create_audit_key(tok) != EXIT_OK) {
		msg("init-token: the token is initialised but has no audit key; run audit-key");
		goto out;
	}
	if (make_kek(cfg, tok, kekhex) != EXIT_OK) {
		msg("init-token: the token is initialised but has no KEK; run kek create");
		goto out;
	}
	audit_detail(&au, "label=%s kek=%s", label, kekhex);
	if (fn->C_GetTokenInfo(tok_slot(tok), &info) == CKR_OK &&
	    !uri_matches(cfg->token_uri, &info))
		printf("warning: token.uri in %s (%s) does not select this token: set it to "
		       "\"pkcs11:token=%s\"\n",
		       config_path, cfg->token_uri, label);
	else
		printf("token.uri in %s must keep naming this label (%s)\n", config_path,
		       cfg->token_uri);
	r = EXIT_OK;
out:
	if (logged_in && tok_session(tok, &s) == TOK_OK)
		fn->C_Logout(s);
	tok_pin_free(so, solen);
	tok_pin_free(user, userlen);
	tok_close(tok);
	r = audit_end(&au, r);
	config_free(cfg);
	return r;
}

/* ---- wrapped keys: the KEK in use ---- */

static void progress(unsigned long done, unsigned long total, int *last);

#define SETTING_KEK "kek.current"   /* CKA_ID of the KEK new keys are wrapped with */
#define SETTING_KEK_NEXT "kek.next" /* a rotation's new KEK, until every blob is rewrapped */
#define WRAP_BATCH 256              /* keys generated per registry transaction */

static void hex(const unsigned char *b, size_t n, char *out)
{
	size_t i;

	for (i = 0; i < n; i++)
		snprintf(out + 2 * i, 3, "%02x", b[i]);
	out[2 * n] = '\0';
}

/* The cache the provisioning calls go through (a small one: they unwrap a key at a time). */
static int open_wcache(const struct config *cfg, struct token *tok, struct tok_wcache **c)
{
	if (tok_wcache_new(tok, cfg->keys_kek, 4, c) == TOK_OK)
		return EXIT_OK;
	msg("keys.kek %s: not a usable PKCS#11 URI", cfg->keys_kek);
	return EXIT_FAIL;
}

/* The KEK new keys are wrapped with: a rotation's target while one runs, else the one in use;
 * a registry that names none adopts the token's only KEK. *have is 0 when there is none. */
static int kek_in_use(struct tok_wcache *c, struct registry *reg, unsigned char id[TOK_KEK_ID_LEN],
                      int *have)
{
	unsigned char ids[2][TOK_KEK_ID_LEN];
	char err[256] = "";
	size_t len = 0, n = 0;
	int rr, tr;

	*have = 0;
	rr = registry_setting_get(reg, SETTING_KEK_NEXT, id, TOK_KEK_ID_LEN, &len);
	if (rr == REG_ERR_NOT_FOUND)
		rr = registry_setting_get(reg, SETTING_KEK, id, TOK_KEK_ID_LEN, &len);
	if (rr == REG_OK && len == TOK_KEK_ID_LEN) {
		if ((tr = tok_kek_check(c, id, err, sizeof(err))) != TOK_OK) {
			msg("the KEK the registry names: %s",
			    err[0] != '\0' ? err : tok_strerror(tr));
			return EXIT_FAIL;
		}
		*have = 1;
		return EXIT_OK;
	}
	if (rr != REG_ERR_NOT_FOUND) {
		msg("registry: cannot read the KEK setting");
		return EXIT_FAIL;
	}
	if ((tr = tok_kek_list(c, ids, 2, &n)) != TOK_OK) {
		msg("KEK lookup: %s", tok_strerror(tr));
		return EXIT_FAIL;
	}
	if (n == 0)
		return EXIT_OK;
	if (n > 1) {
		msg("the token has %zu KEKs matching keys.kek and the registry names none", n);
		return EXIT_FAIL;
	}
	memcpy(id, ids[0], TOK_KEK_ID_LEN);
	if ((tr = tok_kek_check(c, id, err, sizeof(err))) != TOK_OK) {
		msg("KEK: %s", err[0] != '\0' ? err : tok_strerror(tr));
		return EXIT_FAIL;
	}
	if (registry_setting_put(reg, SETTING_KEK, id, TOK_KEK_ID_LEN) != REG_OK) {
		msg("registry: cannot record the KEK in use");
		return EXIT_FAIL;
	}
	*have = 1;
	return EXIT_OK;
}

/* Make the KEK (init-token, kek create) and record it as the one in use. */
static int make_kek(const struct config *cfg, struct token *tok, char *idhex)
{
	struct tok_wcache *c = NULL;
	struct registry *reg = NULL;
	unsigned char id[TOK_KEK_ID_LEN], ids[1][TOK_KEK_ID_LEN];
	char err[256] = "";
	size_t n = 0;
	int r = EXIT_FAIL, tr;

	if (open_wcache(cfg, tok, &c) != EXIT_OK || open_registry(cfg, 1, &reg) != EXIT_OK)
		goto out;
	if ((tr = tok_kek_list(c, ids, 1, &n)) != TOK_OK) {
		msg("KEK lookup: %s", tok_strerror(tr));
		goto out;
	}
	if (n > 0) {
		msg("the token already has a KEK matching %s (kek rotate replaces it)",
		    cfg->keys_kek);
		goto out;
	}
	if ((tr = tok_kek_create(c, id, err, sizeof(err))) != TOK_OK) {
		msg("kek: %s", err[0] != '\0' ? err : tok_strerror(tr));
		goto out;
	}
	if (registry_setting_put(reg, SETTING_KEK, id, TOK_KEK_ID_LEN) != REG_OK) {
		msg("registry: cannot record the new KEK; it is on the token, unused");
		goto out;
	}
	hex(id, TOK_KEK_ID_LEN, idhex);
	printf("KEK (AES-256, wrap and unwrap only) generated in the token: %s, CKA_ID %s\n",
	       cfg->keys_kek, idhex);
	r = EXIT_OK;
out:
	registry_close(reg);
	tok_wcache_free(c);
	return r;
}

static int cmd_kek_create(const char *config_path, const struct args *a)
{
	struct audit au = {0};
	struct config *cfg = NULL;
	struct token *tok = NULL;
	char idhex[2 * TOK_KEK_ID_LEN + 1] = "";
	int r = EXIT_FAIL;

	if (load_config(config_path, &cfg) != EXIT_OK ||
	    audit_begin(&au, cfg, "admin.kek.create", NULL, NULL) != EXIT_OK)
		goto out;
	audit_detail(&au, "kek=%s", cfg->keys_kek);
	if (open_token(cfg, 1, 1, &tok) != EXIT_OK)
		goto out;
	r = make_kek(cfg, tok, idhex);
	audit_detail(&au, "kek=%s id=%s", cfg->keys_kek, idhex);
out:
	tok_close(tok);
	r = audit_end(&au, r);
	config_free(cfg);
	return r;
}

static void wref(struct tok_wrapped_ref *ref, const char *id, const struct reg_wkey *w)
{
	ref->cred_id = id;
	ref->kek_id = w->kek;
	ref->blob = w->blob;
	ref->blob_len = w->blob_len;
	ref->spki = w->pub;
	ref->spki_len = w->pub_len;
	ref->binding = w->binding;
	ref->binding_len = w->binding_len;
}

/* ---- kek rotate ---- */

#define ROTATE_PAGE 256

/* A new KEK, every blob rewrapped with it, then the old KEKs destroyed. Interrupted, it
 * resumes: the new KEK is in the registry (kek.next) and only blobs still under another KEK
 * are rewrapped; each blob is replaced only after the new one was unwrapped and checked. */
static int cmd_kek_rotate(const char *config_path, const struct args *a)
{
	struct audit au = {0};
	struct config *cfg = NULL;
	struct token *tok = NULL;
	struct tok_wcache *c = NULL;
	struct registry *reg = NULL;
	unsigned char next[TOK_KEK_ID_LEN], ids_tok[8][TOK_KEK_ID_LEN];
	char *ids[ROTATE_PAGE], after[CRED_MAX_ID + 1] = "", err[256] = "";
	char nexthex[2 * TOK_KEK_ID_LEN + 1];
	uint64_t total = 0, done = 0, failed = 0;
	size_t len = 0, n = 0, i, nk = 0;
	int r = EXIT_FAIL, rr, tr, last = -1, bar = isatty(STDERR_FILENO), resumed = 0;

	if (load_config(config_path, &cfg) != EXIT_OK ||
	    audit_begin(&au, cfg, "admin.kek.rotate", NULL, NULL) != EXIT_OK)
		goto out;
	if (open_token(cfg, 1, 1, &tok) != EXIT_OK || open_wcache(cfg, tok, &c) != EXIT_OK ||
	    open_registry(cfg, 1, &reg) != EXIT_OK)
		goto out;
	rr = registry_setting_get(reg, SETTING_KEK_NEXT, next, sizeof(next), &len);
	if (rr == REG_OK && len == TOK_KEK_ID_LEN &&
	    (tr = tok_kek_check(c, next, err, sizeof(err))) == TOK_OK) {
		resumed = 1;
	} else if (rr == REG_OK) {
		msg("kek rotate: the rotation's new KEK is unusable: %s",
		    err[0] != '\0' ? err : "bad setting");
		goto out;
	} else if (rr != REG_ERR_NOT_FOUND) {
		msg("registry: cannot read the KEK settings");
		goto out;
	} else {
		if ((tr = tok_kek_create(c, next, err, sizeof(err))) != TOK_OK) {
			msg("kek rotate: %s", err[0] != '\0' ? err : tok_strerror(tr));
			goto out;
		}
		if (registry_setting_put(reg, SETTING_KEK_NEXT, next, TOK_KEK_ID_LEN) != REG_OK) {
			msg("registry: cannot record the new KEK");
			tok_kek_destroy(c, next);
			goto out;
		}
	}
	hex(next, TOK_KEK_ID_LEN, nexthex);
	audit_detail(&au, "new kek id=%s%s", nexthex, resumed ? " (resumed)" : "");
	if (registry_wkey_count(reg, NULL, next, &total) != REG_OK) {
		msg("registry: cannot count the blobs");
		goto out;
	}
	printf("kek rotate: %s new KEK %s; %llu blobs to rewrap\n",
	       resumed ? "resuming with" : "made", nexthex, (unsigned long long)total);
	do {
		if (registry_wkey_ids(reg, next, after, ROTATE_PAGE, ids, &n) != REG_OK) {
			msg("registry: cannot list the blobs");
			goto out;
		}
		for (i = 0; i < n; i++) {
			struct reg_wkey w;
			struct tok_wrapped_ref ref = {0};
			unsigned char *nb = NULL;
			size_t nlen = 0;

			snprintf(after, sizeof(after), "%s", ids[i]);
			if (registry_wkey_get(reg, ids[i], &w) != REG_OK) {
				msg("registry: cannot read the blob of %s", ids[i]);
				failed++;
				continue;
			}
			wref(&ref, ids[i], &w);
			err[0] = '\0';
			tr = tok_wrapped_rewrap(c, &ref, next, &nb, &nlen, err, sizeof(err));
			if (tr == TOK_OK &&
			    registry_wkey_rewrap(reg, ids[i], w.kek, next, nb, nlen) == REG_OK) {
				done++;
			} else {
				if (bar)
					fputc('\n', stderr);
				msg("%s: not rewrapped: %s", ids[i],
				    tr != TOK_OK ? (err[0] != '\0' ? err : tok_strerror(tr))
				                 : "registry write failed");
				failed++;
			}
			free(nb);
			reg_wkey_clear(&w);
			if (bar && total > 0)
				progress(done + failed <= total ? done + failed : total, total,
				         &last);
		}
		for (i = 0; i < n; i++)
			free(ids[i]);
	} while (n == ROTATE_PAGE);
	if (failed > 0) {
		msg("kek rotate: %llu rewrapped, %llu failed; the old KEK stays. Run kek rotate "
		    "again to resume",
		    (unsigned long long)done, (unsigned long long)failed);
		audit_detail(&au, "new kek id=%s: %llu rewrapped, %llu failed", nexthex,
		             (unsigned long long)done, (unsigned long long)failed);
		au.reason = "incomplete";
		goto out;
	}
	/* No blob needs the old KEKs now: retire them, then the new one is the one in use. */
	if (registry_wkey_count(reg, NULL, next, &total) != REG_OK || total != 0) {
		msg("kek rotate: blobs under an old KEK remain; run kek rotate again");
		goto out;
	}
	if (registry_setting_put(reg, SETTING_KEK, next, TOK_KEK_ID_LEN) != REG_OK ||
	    registry_setting_put(reg, SETTING_KEK_NEXT, NULL, 0) != REG_OK) {
		msg("registry: cannot record the new KEK as in use");
		goto out;
	}
	if ((tr = tok_kek_list(c, ids_tok, 8, &nk)) != TOK_OK || nk > 8) {
		msg("KEK lookup: %s", tok_strerror(tr));
		goto out;
	}
	for (i = 0; i < nk; i++) {
		if (memcmp(ids_tok[i], next, TOK_KEK_ID_LEN) == 0)
			continue;
		if ((tr = tok_kek_destroy(c, ids_tok[i])) != TOK_OK) {
			msg("cannot destroy an old KEK: %s", tok_strerror(tr));
			goto out;
		}
	}
	printf("kek rotate: %llu blobs rewrapped; %zu old KEK(s) destroyed; KEK %s in use\n",
	       (unsigned long long)done, nk > 0 ? nk - 1 : 0, nexthex);
	audit_detail(&au, "new kek id=%s: %llu rewrapped, %zu old destroyed", nexthex,
	             (unsigned long long)done, nk > 0 ? nk - 1 : 0);
	r = EXIT_OK;
out:
	registry_close(reg);
	tok_close(tok);
	tok_wcache_free(c);
	r = audit_end(&au, r);
	config_free(cfg);
	return r;
}

/* ---- keygen ---- */

struct key_alg {
	const char *name;
	CK_KEY_TYPE type;
	int curve_nid;
	CK_ULONG bits;
};

static const struct key_alg key_algs[] = {
    {"ec-p256", CKK_EC, NID_X9_62_prime256v1, 256},
    {"ec-p384", CKK_EC, NID_secp384r1, 384},
    {"rsa-2048", CKK_RSA, 0, 2048},
    {"rsa-3072", CKK_RSA, 0, 3072},
};

static const struct key_alg *key_alg_lookup(const char *name)
{
	size_t i;

	for (i = 0; i < sizeof(key_algs) / sizeof(key_algs[0]); i++)
		if (strcmp(name, key_algs[i].name) == 0)
			return &key_algs[i];
	return NULL;
}

struct bool_attr {
	CK_ATTRIBUTE_TYPE type;
	const char *name;
	CK_BBOOL want;
};

/* What keygen asks for and then insists on reading back. */
static const struct bool_attr priv_required[] = {
    {CKA_TOKEN, "CKA_TOKEN", CK_TRUE},
    {CKA_PRIVATE, "CKA_PRIVATE", CK_TRUE},
    {CKA_SENSITIVE, "CKA_SENSITIVE", CK_TRUE},
    {CKA_EXTRACTABLE, "CKA_EXTRACTABLE", CK_FALSE},
    {CKA_SIGN, "CKA_SIGN", CK_TRUE},
    {CKA_DECRYPT, "CKA_DECRYPT", CK_FALSE},
    {CKA_UNWRAP, "CKA_UNWRAP", CK_FALSE},
    {CKA_DERIVE, "CKA_DERIVE", CK_FALSE},
    /* Set by the token, not by us: the key was never outside it. */
    {CKA_ALWAYS_SENSITIVE, "CKA_ALWAYS_SENSITIVE", CK_TRUE},
    {CKA_NEVER_EXTRACTABLE, "CKA_NEVER_EXTRACTABLE", CK_TRUE},
};

static const struct bool_attr pub_required[] = {
    {CKA_TOKEN, "CKA_TOKEN", CK_TRUE},
    {CKA_VERIFY, "CKA_VERIFY", CK_TRUE},
    {CKA_ENCRYPT, "CKA_ENCRYPT", CK_FALSE},
    {CKA_WRAP, "CKA_WRAP", CK_FALSE},
};

static int check_bools(CK_FUNCTION_LIST *fn, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE h,
                       const struct bool_attr *req, size_t n, const char *what)
{
	CK_BBOOL v;
	CK_ATTRIBUTE a;
	CK_RV rv;
	size_t i;

	for (i = 0; i < n; i++) {
		v = 0xff;
		a.type = req[i].type;
		a.pValue = &v;
		a.ulValueLen = sizeof(v);
		rv = fn->C_GetAttributeValue(s, h, &a, 1);
		if (rv != CKR_OK || a.ulValueLen != sizeof(v)) {
			msg("%s: cannot read %s back (CKR 0x%lx)", what, req[i].name,
			    (unsigned long)rv);
			return EXIT_FAIL;
		}
		if ((v != CK_FALSE) != (req[i].want != CK_FALSE)) {
			msg("%s: %s is %s, expected %s", what, req[i].name,
			    v != CK_FALSE ? "true" : "false",
			    req[i].want != CK_FALSE ? "true" : "false");
			return EXIT_FAIL;
		}
	}
	return EXIT_OK;
}

/* Check that the object carries exactly this CKA_LABEL and CKA_ID. */
static int check_label_id(CK_FUNCTION_LIST *fn, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE h,
                          const char *label, const unsigned char *id, size_t idlen,
                          const char *what)
{
	char lbuf[MAX_LABEL + 1];
	unsigned char ibuf[CKA_ID_LEN];
	CK_ATTRIBUTE a = {CKA_ID, ibuf, sizeof(ibuf)};

	if (get_label(fn, s, h, lbuf, sizeof(lbuf)) != EXIT_OK)
		return EXIT_FAIL;
	if (strcmp(lbuf, label) != 0) {
		msg("%s: CKA_LABEL reads back as \"%s\", expected \"%s\"", what, lbuf, label);
		return EXIT_FAIL;
	}
	if (fn->C_GetAttributeValue(s, h, &a, 1) != CKR_OK || a.ulValueLen != idlen ||
	    memcmp(ibuf, id, idlen) != 0) {
		msg("%s: CKA_ID does not read back as generated", what);
		return EXIT_FAIL;
	}
	return EXIT_OK;
}

/* Generate one key pair labelled label; on any difference in the attributes read back, the
 * pair is destroyed. */
static int keygen_one(CK_FUNCTION_LIST *fn, CK_SESSION_HANDLE s, const struct key_alg *alg,
                      const char *label)
{
	CK_OBJECT_CLASS priv_class = CKO_PRIVATE_KEY, pub_class = CKO_PUBLIC_KEY;
	CK_KEY_TYPE ktype = alg->type;
	CK_BBOOL t = CK_TRUE, f = CK_FALSE;
	CK_ULONG bits = alg->bits;
	CK_BYTE exponent[] = {0x01, 0x00, 0x01};
	CK_MECHANISM mech = {alg->type == CKK_EC ? CKM_EC_KEY_PAIR_GEN : CKM_RSA_PKCS_KEY_PAIR_GEN,
	                     NULL, 0};
	CK_OBJECT_HANDLE priv = CK_INVALID_HANDLE, pub = CK_INVALID_HANDLE;
	unsigned char id[CKA_ID_LEN], ecparams[16], *p;
	CK_ULONG lablen = strlen(label);
	int n, r = EXIT_FAIL;
	CK_RV rv;

	if (RAND_bytes(id, sizeof(id)) != 1) {
		msg("RAND_bytes: %s", ossl_err());
		return EXIT_FAIL;
	}
	CK_ATTRIBUTE priv_t[] = {
	    {CKA_CLASS, &priv_class, sizeof(priv_class)},
	    {CKA_KEY_TYPE, &ktype, sizeof(ktype)},
	    {CKA_TOKEN, &t, sizeof(t)},
	    {CKA_PRIVATE, &t, sizeof(t)},
	    {CKA_SENSITIVE, &t, sizeof(t)},
	    {CKA_EXTRACTABLE, &f, sizeof(f)},
	    {CKA_SIGN, &t, sizeof(t)},
	    {CKA_DECRYPT, &f, sizeof(f)},
	    {CKA_UNWRAP, &f, sizeof(f)},
	    {CKA_DERIVE, &f, sizeof(f)},
	    {CKA_LABEL, (void *)label, lablen},
	    {CKA_ID, id, sizeof(id)},
	};
	CK_ATTRIBUTE pub_t[] = {
	    {CKA_CLASS, &pub_class, sizeof(pub_class)},
	    {CKA_KEY_TYPE, &ktype, sizeof(ktype)},
	    {CKA_TOKEN, &t, sizeof(t)},
	    {CKA_PRIVATE, &f, sizeof(f)},
	    {CKA_VERIFY, &t, sizeof(t)},
	    {CKA_ENCRYPT, &f, sizeof(f)},
	    {CKA_WRAP, &f, sizeof(f)},
	    {CKA_LABEL, (void *)label, lablen},
	    {CKA_ID, id, sizeof(id)},
	    /* filled below: EC parameters, or RSA size and exponent */
	    {0, NULL, 0},
	    {0, NULL, 0},
	};
	CK_ULONG npub = sizeof(pub_t) / sizeof(pub_t[0]) - 2;

	if (alg->type == CKK_EC) {
		ASN1_OBJECT *oid = OBJ_nid2obj(alg->curve_nid);
		n = oid != NULL ? i2d_ASN1_OBJECT(oid, NULL) : -1;
		if (n <= 0 || (size_t)n > sizeof(ecparams)) {
			msg("cannot encode the curve OID");
			goto out;
		}
		p = ecparams;
		i2d_ASN1_OBJECT(oid, &p);
		pub_t[npub++] = (CK_ATTRIBUTE){CKA_EC_PARAMS, ecparams, (CK_ULONG)n};
	} else {
		pub_t[npub++] = (CK_ATTRIBUTE){CKA_MODULUS_BITS, &bits, sizeof(bits)};
		pub_t[npub++] = (CK_ATTRIBUTE){CKA_PUBLIC_EXPONENT, exponent, sizeof(exponent)};
	}
	rv = fn->C_GenerateKeyPair(s, &mech, pub_t, npub, priv_t,
	                           sizeof(priv_t) / sizeof(priv_t[0]), &pub, &priv);
	if (rv != CKR_OK) {
		rv_msg("C_GenerateKeyPair", rv);
		goto out;
	}
	if (check_bools(fn, s, priv, priv_required,
	                sizeof(priv_required) / sizeof(priv_required[0]),
	                "private key") != EXIT_OK ||
	    check_label_id(fn, s, priv, label, id, sizeof(id), "private key") != EXIT_OK ||
	    check_bools(fn, s, pub, pub_required, sizeof(pub_required) / sizeof(pub_required[0]),
	                "public key") != EXIT_OK ||
	    check_label_id(fn, s, pub, label, id, sizeof(id), "public key") != EXIT_OK) {
		msg("%s: the token did not keep the requested key attributes; key pair destroyed",
		    label);
		goto out;
	}
	r = EXIT_OK;
out:
	if (r != EXIT_OK) {
		if (priv != CK_INVALID_HANDLE && (rv = fn->C_DestroyObject(s, priv)) != CKR_OK)
			rv_msg("C_DestroyObject (private key)", rv);
		if (pub != CK_INVALID_HANDLE && (rv = fn->C_DestroyObject(s, pub)) != CKR_OK)
			rv_msg("C_DestroyObject (public key)", rv);
	}
	return r;
}

static void progress(unsigned long done, unsigned long total, int *last)
{
	enum { WIDTH = 40 };
	int pct = (int)(done * 100 / total), fill = (int)(done * WIDTH / total);

	if (pct == *last)
		return;
	*last = pct;
	fprintf(stderr, "\r[%.*s%*s] %3d%% %lu/%lu", fill,
	        "########################################", WIDTH - fill, "", pct, done, total);
	if (done == total)
		fputc('\n', stderr);
	fflush(stderr);
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* keygen --store wrapped: every ID (ID-1..ID-N with --count) that has no key yet gets one,
 * generated in the token, wrapped and stored in batches of WRAP_BATCH per transaction; IDs
 * that have a key are skipped, so an interrupted run is resumed by running it again. */
static int keygen_wrapped(struct tok_wcache *c, struct registry *reg,
                          const unsigned char kek[TOK_KEK_ID_LEN], const struct key_alg *alg,
                          const char *base, unsigned long count, struct audit *au)
{
	char(*ids)[CRED_MAX_ID + 1] = NULL;
	const char *idp[WRAP_BATCH];
	struct reg_wkey *w = NULL;
	struct tok_wrapped_new nw;
	struct reg_cred cur;
	struct reg_wkey had;
	unsigned long i, total = count > 0 ? count : 1, made = 0, skipped = 0;
	size_t nb = 0, k;
	char err[256];
	double t0 = now_s(), dt;
	int r = EXIT_FAIL, rr, tr, last = -1, bar = count > 0 && isatty(STDERR_FILENO);

	memset(&nw, 0, sizeof(nw));
	if ((ids = calloc(WRAP_BATCH, sizeof(*ids))) == NULL ||
	    (w = calloc(WRAP_BATCH, sizeof(*w))) == NULL) {
		msg("out of memory");
		goto out;
	}
	for (i = 1; i <= total; i++) {
		char *id = ids[nb];

		if (count > 0)
			snprintf(id, sizeof(ids[0]), "%s-%lu", base, i);
		else
			snprintf(id, sizeof(ids[0]), "%s", base);
		rr = registry_wkey_get(reg, id, &had);
		reg_wkey_clear(&had);
		if (rr == REG_OK) {
			if (count == 0) {
				msg("keygen: %s already has a wrapped key", id);
				au->reason = "exists";
				goto out;
			}
			skipped++;
			goto next;
		} else if (rr != REG_ERR_NOT_FOUND) {
			msg("registry: cannot read %s", id);
			goto out;
		}
		memset(&cur, 0, sizeof(cur));
		rr = registry_get(reg, id, &cur);
		reg_cred_clear(&cur);
		if (rr == REG_OK) {
			msg("keygen: %s is enrolled with a token key; refusing to give it another",
			    id);
			au->reason = "exists";
			goto out;
		}
		err[0] = '\0';
		tr = tok_wrapped_generate(c, kek, alg->type == CKK_EC ? TOK_KEY_EC : TOK_KEY_RSA,
		                          alg->curve_nid, (unsigned)alg->bits, id, &nw, err,
		                          sizeof(err));
		if (tr != TOK_OK) {
			if (bar)
				fputc('\n', stderr);
			msg("keygen: %s: %s", id, err[0] != '\0' ? err : tok_strerror(tr));
			goto stopped;
		}
		memcpy(w[nb].kek, nw.kek_id, TOK_KEK_ID_LEN);
		w[nb].blob = nw.blob;
		w[nb].blob_len = nw.blob_len;
		w[nb].pub = nw.spki;
		w[nb].pub_len = nw.spki_len;
		w[nb].binding = nw.binding;
		w[nb].binding_len = nw.binding_len;
		w[nb].created = (int64_t)time(NULL);
		memset(&nw, 0, sizeof(nw)); /* owned by w[nb] now */
		idp[nb] = ids[nb];
		nb++;
	next:
		if (nb == WRAP_BATCH || (i == total && nb > 0)) {
			if ((rr = registry_wkey_put_many(reg, idp, w, nb)) != REG_OK) {
				msg("registry: cannot store %zu wrapped keys (error %d)", nb, rr);
				goto stopped;
			}
			made += nb;
			for (k = 0; k < nb; k++)
				reg_wkey_clear(&w[k]);
			nb = 0;
		}
		if (bar)
			progress(i, total, &last);
	}
	dt = now_s() - t0;
	if (count > 0) {
		printf("%s-1..%s-%lu: %lu %s keys generated and wrapped, %lu already had one, in "
		       "%.1f s (%.0f keys/s)\n",
		       base, base, count, made, alg->name, skipped, dt, dt > 0 ? made / dt : 0.0);
		audit_detail(au,
		             "store=wrapped alg=%s count=%lu (%s-1..%s-%lu): %lu made, %lu "
		             "skipped",
		             alg->name, count, base, base, count, made, skipped);
	} else {
		printf("%s: %s key generated in the token and wrapped by the KEK\n", base,
		       alg->name);
		audit_detail(au, "store=wrapped alg=%s", alg->name);
	}
	r = EXIT_OK;
	goto out;
stopped:
	msg("keygen: stopped; %lu keys were made and stored, %lu skipped; run it again to resume",
	    made, skipped);
	audit_detail(au, "store=wrapped alg=%s count=%lu: stopped, %lu made", alg->name, count,
	             made);
out:
	tok_wrapped_new_clear(&nw);
	for (k = 0; w != NULL && k < nb; k++)
		reg_wkey_clear(&w[k]);
	free(w);
	free(ids);
	return r;
}

static int cmd_keygen(const char *config_path, const struct args *a)
{
	const char *base = a->v[OPT_CREDENTIAL];
	const struct key_alg *alg = key_alg_lookup(a->v[OPT_ALG]);
	struct audit au = {0};
	struct config *cfg = NULL;
	struct token *tok = NULL;
	struct labels labels = {0};
	CK_FUNCTION_LIST *fn;
	CK_SESSION_HANDLE s;
	char id[CRED_MAX_ID + 1];
	unsigned long count, i, made = 0;
	int r = EXIT_FAIL, tr, taken, last = -1, bar = isatty(STDERR_FILENO), have_kek = 0;
	const char *store = a->v[OPT_STORE];
	struct tok_wcache *wc = NULL;
	struct registry *reg = NULL;
	unsigned char kek[TOK_KEK_ID_LEN];

	if (!cred_valid_id(base)) {
		msg("keygen: credential ID must be 1..%d of [A-Za-z0-9._-]", CRED_MAX_ID);
		return EXIT_USAGE;
	}
	if (alg == NULL) {
		msg("keygen: --alg must be ec-p256, ec-p384, rsa-2048 or rsa-3072");
		return EXIT_USAGE;
	}
	if (parse_count(a->v[OPT_COUNT], &count) != 0) {
		msg("keygen: --count must be 1..%d", MAX_COUNT);
		return EXIT_USAGE;
	}
	if (strcmp(base, AUDIT_KEY_LABEL) == 0) {
		msg("keygen: %s is reserved for the audit key (see audit-key)", AUDIT_KEY_LABEL);
		return EXIT_USAGE;
	}
	if (store != NULL && strcmp(store, "wrapped") != 0 && strcmp(store, "token") != 0) {
		msg("keygen: --store must be wrapped or token");
		return EXIT_USAGE;
	}
	if (count > 0) { /* every ID-N must itself be a valid ID */
		int n = snprintf(id, sizeof(id), "%s-%lu", base, count);
		if (n < 0 || (size_t)n >= sizeof(id)) {
			msg("keygen: %s-%lu would be longer than %d characters", base, count,
			    CRED_MAX_ID);
			return EXIT_USAGE;
		}
	}
	if (load_config(config_path, &cfg) != EXIT_OK ||
	    audit_begin(&au, cfg, "admin.keygen", NULL, NULL) != EXIT_OK)
		goto out;
	audit_cred(&au, base, NULL);
	if (count > 0)
		audit_detail(&au, "alg=%s count=%lu (%s-1..%s-%lu)", alg->name, count, base, base,
		             count);
	else
		audit_detail(&au, "alg=%s", alg->name);
	if (open_token(cfg, 1, 1, &tok) != EXIT_OK)
		goto out;
	/* Wrapped by default where the token has the KEK. */
	if (store == NULL || strcmp(store, "wrapped") == 0) {
		if (open_wcache(cfg, tok, &wc) != EXIT_OK ||
		    open_registry(cfg, 1, &reg) != EXIT_OK ||
		    kek_in_use(wc, reg, kek, &have_kek) != EXIT_OK)
			goto out;
		if (!have_kek && store != NULL) {
			msg("keygen: --store wrapped: the token has no KEK (%s); make one with kek "
			    "create",
			    cfg->keys_kek);
			goto out;
		}
		if (have_kek) {
			r = keygen_wrapped(wc, reg, kek, alg, base, count, &au);
			goto out;
		}
		registry_close(reg);
		reg = NULL;
	}
	fn = tok_functions(tok);
	if ((tr = tok_session(tok, &s)) != TOK_OK) {
		msg("session: %s", tok_strerror(tr));
		goto out;
	}
	if (count > 0 && labels_load(fn, s, &labels) != EXIT_OK)
		goto out;
	/* Refuse before generating anything, so a clash leaves the token unchanged. */
	for (i = (count > 0 ? 1 : 0); i <= count; i++) {
		if (count > 0)
			snprintf(id, sizeof(id), "%s-%lu", base, i);
		else
			snprintf(id, sizeof(id), "%s", base);
		if ((taken = label_taken(fn, s, count > 0 ? &labels : NULL, id)) < 0)
			goto out;
		if (taken) {
			msg("keygen: an object labelled %s already exists on the token", id);
			au.reason = "exists";
			goto out;
		}
	}
	if (count == 0) {
		if (keygen_one(fn, s, alg, base) != EXIT_OK)
			goto out;
		printf("%s: %s key generated in the token\n", base, alg->name);
	} else {
		for (i = 1; i <= count; i++) {
			snprintf(id, sizeof(id), "%s-%lu", base, i);
			if (keygen_one(fn, s, alg, id) != EXIT_OK) {
				if (bar)
					fputc('\n', stderr);
				msg("keygen: stopped at %s; %lu keys were made (%s-1..%s-%lu)", id,
				    made, base, base, made);
				audit_detail(&au, "alg=%s count=%lu: stopped at %s, %lu made",
				             alg->name, count, id, made);
				goto out;
			}
			made++;
			if (bar)
				progress(made, count, &last);
		}
		printf("%s-1..%s-%lu: %lu %s keys generated in the token\n", base, base, count,
		       count, alg->name);
	}
	r = EXIT_OK;
out:
	if (tok != NULL)
		tok_key_flush(tok);
	labels_free(&labels);
	registry_close(reg);
	tok_close(tok);
	tok_wcache_free(wc);
	r = audit_end(&au, r);
	config_free(cfg);
	return r;
}

/* ---- audit-key ---- */

/* The audit key: EC P-256, labelled AUDIT_KEY_LABEL, with the attributes of every key (sign
 * only, sensitive, never extractable), read back by keygen_one. Refused if one exists. */
static int create_audit_key(struct token *tok)
{
	CK_FUNCTION_LIST *fn = tok_functions(tok);
	CK_SESSION_HANDLE s;
	int tr, taken;

	if ((tr = tok_session(tok, &s)) != TOK_OK) {
		msg("session: %s", tok_strerror(tr));
		return EXIT_FAIL;
	}
	if ((taken = label_taken(fn, s, NULL, AUDIT_KEY_LABEL)) < 0)
		return EXIT_FAIL;
	if (taken) {
		msg("an object labelled %s already exists on the token", AUDIT_KEY_LABEL);
		return EXIT_FAIL;
	}
	if (keygen_one(fn, s, key_alg_lookup("ec-p256"), AUDIT_KEY_LABEL) != EXIT_OK)
		return EXIT_FAIL;
	tok_key_flush(tok);
	printf("audit key %s (ec-p256) generated in the token\n", AUDIT_KEY_LABEL);
	return EXIT_OK;
}

static int cmd_audit_key(const char *config_path, const struct args *a)
{
	struct audit au = {0};
	struct config *cfg = NULL;
	struct token *tok = NULL;
	int r = EXIT_FAIL;

	if (load_config(config_path, &cfg) != EXIT_OK ||
	    audit_begin(&au, cfg, "admin.audit-key", NULL, NULL) != EXIT_OK)
		goto out;
	audit_detail(&au, "label=%s alg=ec-p256", AUDIT_KEY_LABEL);
	if (open_token(cfg, 1, 1, &tok) != EXIT_OK)
		goto out;
	r = create_audit_key(tok);
out:
	tok_close(tok);
	r = audit_end(&au, r);
	config_free(cfg);
	return r;
}

/* ---- csr ---- */

/* "/type=value/type=value" into an X509_NAME. Types and values are checked by OpenSSL; escapes
 * and multi-valued RDNs are refused rather than half-supported. */
static int parse_subject(const char *in, X509_NAME **out)
{
	char buf[MAX_SUBJECT + 1];
	char *p, *next, *eq;
	X509_NAME *name = NULL;
	size_t len = strlen(in), i;
	int r = EXIT_FAIL;

	*out = NULL;
	if (len < 2 || len > MAX_SUBJECT || in[0] != '/') {
		msg("csr: --subject must look like /CN=name/O=organisation (at most %d bytes)",
		    MAX_SUBJECT);
		return EXIT_USAGE;
	}
	for (i = 0; i < len; i++) {
		if (in[i] == '\\' || in[i] == '+' || (unsigned char)in[i] < 0x20 || in[i] == 0x7f) {
			msg("csr: --subject: escapes, '+' and control characters are not accepted");
			return EXIT_USAGE;
		}
	}
	memcpy(buf, in, len + 1);
	if ((name = X509_NAME_new()) == NULL) {
		msg("out of memory");
		goto out;
	}
	for (p = buf + 1; p != NULL; p = next) {
		if ((next = strchr(p, '/')) != NULL)
			*next++ = '\0';
		eq = strchr(p, '=');
		if (eq == NULL || eq == p || eq[1] == '\0') {
			msg("csr: --subject: \"%s\" is not type=value", p);
			r = EXIT_USAGE;
			goto out;
		}
		*eq = '\0';
		if (OBJ_txt2nid(p) == NID_undef) {
			msg("csr: --subject: unknown attribute type \"%s\"", p);
			r = EXIT_USAGE;
			goto out;
		}
		if (!X509_NAME_add_entry_by_txt(name, p, MBSTRING_UTF8, (unsigned char *)eq + 1, -1,
		                                -1, 0)) {
			msg("csr: --subject: bad value for %s: %s", p, ossl_err());
			r = EXIT_USAGE;
			goto out;
		}
	}
	*out = name;
	name = NULL;
	r = EXIT_OK;
out:
	X509_NAME_free(name);
	return r;
}

/* Hash, signature parameters and signature algorithm for a token key. */
static int key_sig_params(const struct tok_key *key, const EVP_MD **md, struct tok_sign_params *sp,
                          int *sig_nid)
{
	memset(sp, 0, sizeof(*sp));
	if (key->type == TOK_KEY_EC && key->curve_nid == NID_X9_62_prime256v1) {
		*md = EVP_sha256();
		sp->scheme = TOK_ECDSA;
		sp->hash_nid = NID_sha256;
		*sig_nid = NID_ecdsa_with_SHA256;
	} else if (key->type == TOK_KEY_EC && key->curve_nid == NID_secp384r1) {
		*md = EVP_sha384();
		sp->scheme = TOK_ECDSA;
		sp->hash_nid = NID_sha384;
		*sig_nid = NID_ecdsa_with_SHA384;
	} else if (key->type == TOK_KEY_RSA) {
		*md = EVP_sha256();
		sp->scheme = TOK_RSA_PKCS1;
		sp->hash_nid = NID_sha256;
		*sig_nid = NID_sha256WithRSAEncryption;
	} else {
		msg("unsupported key type on the token");
		return EXIT_FAIL;
	}
	return EXIT_OK;
}

/* A PKCS#10 request for key, signed inside the token, PEM into *pem (caller frees). */
static int csr_make(struct token *tok, const struct tok_key *key, X509_NAME *name, char **pem)
{
	X509_REQ *req = NULL;
	X509_ALGOR *algor = NULL;
	ASN1_BIT_STRING *bits = NULL;
	BIO *mem = NULL;
	const EVP_MD *md;
	struct tok_sign_params sp;
	unsigned char *tbs = NULL, dig[EVP_MAX_MD_SIZE];
	uint8_t sig[TOK_MAX_SIG];
	unsigned int diglen = 0;
	size_t siglen = sizeof(sig);
	char *data;
	long pemlen;
	int tbslen, sig_nid, r = EXIT_FAIL, tr;

	*pem = NULL;
	if (key->pub == NULL) {
		msg("csr: no public key for %s", key->label);
		goto out;
	}
	if (key_sig_params(key, &md, &sp, &sig_nid) != EXIT_OK)
		goto out;
	if ((req = X509_REQ_new()) == NULL || !X509_REQ_set_version(req, 0) ||
	    !X509_REQ_set_subject_name(req, name) || !X509_REQ_set_pubkey(req, key->pub)) {
		msg("csr: cannot build the request: %s", ossl_err());
		goto out;
	}
	/* The token signs the DER of CertificationRequestInfo. */
	if ((tbslen = i2d_re_X509_REQ_tbs(req, &tbs)) <= 0 ||
	    !EVP_Digest(tbs, (size_t)tbslen, dig, &diglen, md, NULL)) {
		msg("csr: cannot encode or hash the request: %s", ossl_err());
		goto out;
	}
	if ((tr = tok_sign_digest(tok, key, &sp, dig, diglen, sig, &siglen)) != TOK_OK) {
		msg("csr: signing in the token failed: %s", tok_strerror(tr));
		goto out;
	}
	if ((algor = X509_ALGOR_new()) == NULL ||
	    !X509_ALGOR_set0(algor, OBJ_nid2obj(sig_nid),
	                     sp.scheme == TOK_RSA_PKCS1 ? V_ASN1_NULL : V_ASN1_UNDEF, NULL) ||
	    !X509_REQ_set1_signature_algo(req, algor) || (bits = ASN1_BIT_STRING_new()) == NULL ||
	    !ASN1_BIT_STRING_set(bits, sig, (int)siglen)) {
		msg("csr: cannot set the signature: %s", ossl_err());
		goto out;
	}
	/* A signature is whole bytes: say "0 unused bits" rather than let the encoder trim
	 * trailing zero bytes. */
	bits->flags &= ~(ASN1_STRING_FLAG_BITS_LEFT | 0x07);
	bits->flags |= ASN1_STRING_FLAG_BITS_LEFT;
	X509_REQ_set0_signature(req, bits);
	bits = NULL;
	if (X509_REQ_verify(req, key->pub) != 1) {
		msg("csr: the token's signature does not verify with its public key: %s",
		    ossl_err());
		goto out;
	}
	if ((mem = BIO_new(BIO_s_mem())) == NULL || !PEM_write_bio_X509_REQ(mem, req) ||
	    (pemlen = BIO_get_mem_data(mem, &data)) <= 0 ||
	    (*pem = strndup(data, (size_t)pemlen)) == NULL) {
		msg("csr: cannot encode PEM: %s", ossl_err());
		goto out;
	}
	r = EXIT_OK;
out:
	BIO_free(mem);
	ASN1_BIT_STRING_free(bits);
	X509_ALGOR_free(algor);
	OPENSSL_free(tbs);
	X509_REQ_free(req);
	return r;
}

/* The key of credential id for provisioning: its wrapped key (unwrapped and checked into wc;
 * *held set, tok_wrapped_put when done) when the registry has one, else its token key. */
static int credential_key(const struct config *cfg, struct token *tok, struct tok_wcache *wc,
                          struct registry *reg, const char *id, const struct tok_key **key,
                          int *held)
{
	struct reg_wkey w;
	struct tok_wrapped_ref ref = {0};
	char uri[REG_MAX_URI + 1];
	int rr, tr;

	*held = 0;
	rr = reg != NULL ? registry_wkey_get(reg, id, &w) : REG_ERR_NOT_FOUND;
	if (rr == REG_OK) {
		wref(&ref, id, &w);
		tr = tok_wrapped_get(wc, &ref, key);
		reg_wkey_clear(&w);
		if (tr != TOK_OK) {
			msg("%s: the wrapped key cannot be used: %s", id, tok_strerror(tr));
			return EXIT_FAIL;
		}
		*held = 1;
		return EXIT_OK;
	}
	if (rr != REG_ERR_NOT_FOUND) {
		msg("registry: cannot read %s", id);
		return EXIT_FAIL;
	}
	if (credential_key_uri(cfg, id, uri, sizeof(uri)) != EXIT_OK)
		return EXIT_FAIL;
	return get_key(tok, uri, id, key);
}

/* "/CN=%s/O=.." with %s (once, and no other %) replaced by id. */
static int subject_for(const char *tmpl, const char *id, char *out, size_t outlen)
{
	const char *p = strstr(tmpl, "%s");
	int n;

	if (p == NULL || strchr(p + 2, '%') != NULL || strchr(tmpl, '%') != p)
		return -1;
	n = snprintf(out, outlen, "%.*s%s%s", (int)(p - tmpl), tmpl, id, p + 2);
	return n < 0 || (size_t)n >= outlen ? -1 : 0;
}

/* Write data to DIR/NAME by a temporary file and rename, so that a file present is whole. */
static int write_whole(const char *dir, const char *name, const char *data, size_t len)
{
	char path[PATH_MAX], tmp[PATH_MAX];

	if (snprintf(path, sizeof(path), "%s/%s", dir, name) >= (int)sizeof(path) ||
	    snprintf(tmp, sizeof(tmp), "%s/.%s.tmp", dir, name) >= (int)sizeof(tmp)) {
		msg("%s: path too long", dir);
		return EXIT_FAIL;
	}
	if (write_file(tmp, data, len) != EXIT_OK)
		return EXIT_FAIL;
	if (rename(tmp, path) != 0) {
		msg("%s: %s", path, strerror(errno));
		unlink(tmp);
		return EXIT_FAIL;
	}
	return EXIT_OK;
}

static int cmd_csr(const char *config_path, const struct args *a)
{
	const char *id = a->v[OPT_CREDENTIAL], *out_arg = a->v[OPT_OUT];
	struct audit au = {0};
	struct config *cfg = NULL;
	struct token *tok = NULL;
	struct tok_wcache *wc = NULL;
	struct registry *reg = NULL;
	const struct tok_key *key = NULL;
	X509_NAME *name = NULL;
	char *pem = NULL, cid[CRED_MAX_ID + 1], subj[MAX_SUBJECT + CRED_MAX_ID + 1];
	char fname[CRED_MAX_ID + 8], path[PATH_MAX];
	unsigned long count, i, made = 0, skipped = 0;
	struct stat sb;
	double t0 = now_s(), dt;
	int r = EXIT_FAIL, held = 0, last = -1, bar = isatty(STDERR_FILENO);

	if (!cred_valid_id(id)) {
		msg("csr: credential ID must be 1..%d of [A-Za-z0-9._-]", CRED_MAX_ID);
		return EXIT_USAGE;
	}
	if (parse_count(a->v[OPT_COUNT], &count) != 0) {
		msg("csr: --count must be 1..%d", MAX_COUNT);
		return EXIT_USAGE;
	}
	if (count > 0) {
		if (subject_for(a->v[OPT_SUBJECT], id, subj, sizeof(subj)) != 0) {
			msg("csr: with --count, --subject must hold %%s once (the credential ID), "
			    "and no other %%");
			return EXIT_USAGE;
		}
		if (stat(out_arg, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
			msg("csr: with --count, --out must be a directory: %s", out_arg);
			return EXIT_USAGE;
		}
		if ((r = parse_subject(subj, &name)) != EXIT_OK)
			return r;
		X509_NAME_free(name);
		name = NULL;
	} else if ((r = parse_subject(a->v[OPT_SUBJECT], &name)) != EXIT_OK) {
		return r;
	}
	r = EXIT_FAIL;
	if (load_config(config_path, &cfg) != EXIT_OK ||
	    audit_begin(&au, cfg, "admin.csr", NULL, NULL) != EXIT_OK)
		goto out;
	audit_cred(&au, id, NULL);
	audit_detail(&au, "subject=%s out=%s", a->v[OPT_SUBJECT], out_arg);
	if (open_registry(cfg, 0, &reg) != EXIT_OK || open_token(cfg, 1, 1, &tok) != EXIT_OK ||
	    open_wcache(cfg, tok, &wc) != EXIT_OK)
		goto out;
	if (count == 0) {
		if (credential_key(cfg, tok, wc, reg, id, &key, &held) != EXIT_OK ||
		    csr_make(tok, key, name, &pem) != EXIT_OK ||
		    write_file(out_arg, pem, strlen(pem)) != EXIT_OK)
			goto out;
		if (strcmp(out_arg, "-") != 0)
			printf("%s: certificate request written to %s\n", id, out_arg);
		r = EXIT_OK;
		goto out;
	}
	/* One DIR/ID.csr per credential; those already written are skipped (resume). */
	for (i = 1; i <= count; i++) {
		snprintf(cid, sizeof(cid), "%s-%lu", id, i);
		snprintf(fname, sizeof(fname), "%s.csr", cid);
		snprintf(path, sizeof(path), "%s/%s", out_arg, fname);
		if (stat(path, &sb) == 0) {
			skipped++;
		} else {
			if (subject_for(a->v[OPT_SUBJECT], cid, subj, sizeof(subj)) != 0 ||
			    parse_subject(subj, &name) != EXIT_OK)
				goto stopped;
			if (credential_key(cfg, tok, wc, reg, cid, &key, &held) != EXIT_OK ||
			    csr_make(tok, key, name, &pem) != EXIT_OK ||
			    write_whole(out_arg, fname, pem, strlen(pem)) != EXIT_OK)
				goto stopped;
			if (held)
				tok_wrapped_put(wc, key);
			held = 0;
			key = NULL;
			free(pem);
			pem = NULL;
			X509_NAME_free(name);
			name = NULL;
			made++;
		}
		if (bar)
			progress(i, count, &last);
	}
	dt = now_s() - t0;
	printf("%s-1..%s-%lu: %lu certificate requests written to %s, %lu already there, in "
	       "%.1f s (%.0f/s)\n",
	       id, id, count, made, out_arg, skipped, dt, dt > 0 ? made / dt : 0.0);
	audit_detail(&au, "count=%lu subject=%s out=%s: %lu made, %lu skipped", count,
	             a->v[OPT_SUBJECT], out_arg, made, skipped);
	r = EXIT_OK;
	goto out;
stopped:
	if (bar)
		fputc('\n', stderr);
	msg("csr: stopped at %s; %lu written, %lu skipped; run it again to resume", cid, made,
	    skipped);
	audit_detail(&au, "count=%lu out=%s: stopped at %s, %lu made", count, out_arg, cid, made);
out:
	if (held)
		tok_wrapped_put(wc, key);
	free(pem);
	X509_NAME_free(name);
	registry_close(reg);
	tok_close(tok);
	tok_wcache_free(wc);
	r = audit_end(&au, r);
	config_free(cfg);
	return r;
}

/* ---- import-cert ---- */

static X509 *load_cert(const char *path)
{
	unsigned char *buf = NULL;
	const unsigned char *p;
	size_t len;
	BIO *bio = NULL;
	X509 *x = NULL;

	if (read_file(path, MAX_CERT_FILE, &buf, &len) != EXIT_OK)
		return NULL;
	if ((bio = BIO_new_mem_buf(buf, (int)len)) != NULL)
		x = PEM_read_bio_X509(bio, NULL, NULL, NULL);
	if (x == NULL) {
		p = buf;
		x = d2i_X509(NULL, &p, (long)len);
		if (x != NULL && p != buf + len) { /* DER with trailing bytes */
			X509_free(x);
			x = NULL;
		}
	}
	if (x == NULL)
		msg("%s: not a PEM or DER certificate", path);
	ERR_clear_error();
	BIO_free(bio);
	free(buf);
	return x;
}

/* Parse a PEM chain file and write it back canonically (certificates only) into *pem. */
static int load_chain(const char *path, char **pem)
{
	unsigned char *buf = NULL;
	size_t len;
	BIO *in = NULL, *out = NULL;
	X509 *x = NULL;
	char *data;
	long dlen;
	int n = 0, r = EXIT_FAIL;

	*pem = NULL;
	if (read_file(path, MAX_CHAIN_FILE, &buf, &len) != EXIT_OK)
		goto out;
	if ((in = BIO_new_mem_buf(buf, (int)len)) == NULL || (out = BIO_new(BIO_s_mem())) == NULL) {
		msg("out of memory");
		goto out;
	}
	while ((x = PEM_read_bio_X509(in, NULL, NULL, NULL)) != NULL) {
		if (++n > MAX_CHAIN_CERTS) {
			msg("%s: more than %d certificates", path, MAX_CHAIN_CERTS);
			goto out;
		}
		if (!PEM_write_bio_X509(out, x)) {
			msg("%s: %s", path, ossl_err());
			goto out;
		}
		X509_free(x);
	}
	/* The loop ends on "no start line" at the end of the file; anything else is damage. */
	if (ERR_GET_REASON(ERR_peek_last_error()) != PEM_R_NO_START_LINE || n == 0) {
		msg("%s: not a PEM certificate chain%s", path, n == 0 ? " (no certificate)" : "");
		goto out;
	}
	ERR_clear_error();
	if ((dlen = BIO_get_mem_data(out, &data)) <= 0 ||
	    (*pem = strndup(data, (size_t)dlen)) == NULL) {
		msg("out of memory");
		goto out;
	}
	r = EXIT_OK;
out:
	ERR_clear_error();
	X509_free(x);
	BIO_free(in);
	BIO_free(out);
	free(buf);
	return r;
}

/* Certificates already stored for this credential: labelled id, or sharing the key's CKA_ID. */
static int find_certs(CK_FUNCTION_LIST *fn, CK_SESSION_HANDLE s, const char *id,
                      const struct tok_key *key, struct handles *hv)
{
	CK_OBJECT_CLASS cls = CKO_CERTIFICATE;
	CK_ATTRIBUTE by_label[] = {
	    {CKA_CLASS, &cls, sizeof(cls)},
	    {CKA_LABEL, (void *)id, strlen(id)},
	};
	CK_ATTRIBUTE by_id[] = {
	    {CKA_CLASS, &cls, sizeof(cls)},
	    {CKA_ID, (void *)key->id, key->id_len},
	};
	size_t first, i, j, k;

	if (find_objects(fn, s, by_label, 2, hv) != EXIT_OK)
		return EXIT_FAIL;
	if (key->id_len == 0)
		return EXIT_OK;
	first = hv->n;
	if (find_objects(fn, s, by_id, 2, hv) != EXIT_OK)
		return EXIT_FAIL;
	/* Drop handles found twice. */
	for (i = k = first; i < hv->n; i++) {
		for (j = 0; j < first && hv->h[j] != hv->h[i]; j++)
			;
		if (j == first)
			hv->h[k++] = hv->h[i];
	}
	hv->n = k;
	return EXIT_OK;
}

static int store_cert(CK_FUNCTION_LIST *fn, CK_SESSION_HANDLE s, const char *id,
                      const struct tok_key *key, X509 *cert, CK_OBJECT_HANDLE *out)
{
	CK_OBJECT_CLASS cls = CKO_CERTIFICATE;
	CK_CERTIFICATE_TYPE ctype = CKC_X_509;
	CK_BBOOL t = CK_TRUE, f = CK_FALSE;
	unsigned char *subj = NULL, *issuer = NULL, *serial = NULL, *value = NULL;
	int subjlen, issuerlen, seriallen, valuelen, r = EXIT_FAIL;
	CK_RV rv;

	subjlen = i2d_X509_NAME(X509_get_subject_name(cert), &subj);
	issuerlen = i2d_X509_NAME(X509_get_issuer_name(cert), &issuer);
	seriallen = i2d_ASN1_INTEGER(X509_get0_serialNumber(cert), &serial);
	valuelen = i2d_X509(cert, &value);
	if (subjlen <= 0 || issuerlen <= 0 || seriallen <= 0 || valuelen <= 0) {
		msg("cannot encode the certificate: %s", ossl_err());
		goto out;
	}
	CK_ATTRIBUTE tmpl[] = {
	    {CKA_CLASS, &cls, sizeof(cls)},
	    {CKA_CERTIFICATE_TYPE, &ctype, sizeof(ctype)},
	    {CKA_TOKEN, &t, sizeof(t)},
	    {CKA_PRIVATE, &f, sizeof(f)},
	    {CKA_LABEL, (void *)id, strlen(id)},
	    {CKA_ID, (void *)key->id, key->id_len},
	    {CKA_SUBJECT, subj, (CK_ULONG)subjlen},
	    {CKA_ISSUER, issuer, (CK_ULONG)issuerlen},
	    {CKA_SERIAL_NUMBER, serial, (CK_ULONG)seriallen},
	    {CKA_VALUE, value, (CK_ULONG)valuelen},
	};
	if ((rv = fn->C_CreateObject(s, tmpl, sizeof(tmpl) / sizeof(tmpl[0]), out)) != CKR_OK) {
		rv_msg("C_CreateObject (certificate)", rv);
		goto out;
	}
	r = EXIT_OK;
out:
	OPENSSL_free(subj);
	OPENSSL_free(issuer);
	OPENSSL_free(serial);
	OPENSSL_free(value);
	return r;
}

/* The certificate (and chain) of a wrapped credential, into the registry: refused (*why) when
 * its public key is not the credential's. */
static int cert_matches_wrapped(const struct reg_wkey *w, X509 *cert, const char **why)
{
	EVP_PKEY *pk = tok_spki_parse(w->pub, w->pub_len);
	int ok = pk != NULL && X509_get0_pubkey(cert) != NULL &&
	         EVP_PKEY_eq(pk, X509_get0_pubkey(cert)) == 1;

	EVP_PKEY_free(pk);
	ERR_clear_error();
	*why = ok ? NULL : "the certificate's public key is not the credential's";
	return ok;
}

static int store_wrapped_cert(struct registry *reg, const char *id, X509 *cert, const char *chain)
{
	unsigned char *der = NULL;
	int n = i2d_X509(cert, &der), rr;

	if (n <= 0) {
		msg("%s: cannot encode the certificate: %s", id, ossl_err());
		return EXIT_FAIL;
	}
	rr = registry_cert_put(reg, id, der, (size_t)n);
	OPENSSL_free(der);
	if (rr == REG_OK && chain != NULL)
		rr = registry_set_chain(reg, id, chain);
	if (rr != REG_OK) {
		msg("registry: cannot store the certificate of %s (error %d)", id, rr);
		return EXIT_FAIL;
	}
	return EXIT_OK;
}

/* DIR/ID.pem: the certificate, then its chain, PEM. *chain is NULL without one. */
static int load_cert_file(const char *path, X509 **cert, char **chain)
{
	unsigned char *buf = NULL;
	size_t len = 0;
	BIO *in = NULL, *out = NULL;
	X509 *x = NULL;
	char *data;
	long dlen;
	int n = 0, r = EXIT_FAIL;

	*cert = NULL;
	*chain = NULL;
	if (read_file(path, MAX_CHAIN_FILE, &buf, &len) != EXIT_OK)
		goto out;
	if ((in = BIO_new_mem_buf(buf, (int)len)) == NULL || (out = BIO_new(BIO_s_mem())) == NULL)
		goto out;
	if ((*cert = PEM_read_bio_X509(in, NULL, NULL, NULL)) == NULL) {
		msg("%s: not a PEM certificate", path);
		goto out;
	}
	while ((x = PEM_read_bio_X509(in, NULL, NULL, NULL)) != NULL) {
		if (++n > MAX_CHAIN_CERTS || !PEM_write_bio_X509(out, x)) {
			msg("%s: more than %d chain certificates", path, MAX_CHAIN_CERTS);
			goto out;
		}
		X509_free(x);
		x = NULL;
	}
	if (ERR_GET_REASON(ERR_peek_last_error()) != PEM_R_NO_START_LINE) {
		msg("%s: damaged PEM after the certificate", path);
		goto out;
	}
	if (n > 0 && ((dlen = BIO_get_mem_data(out, &data)) <= 0 ||
	              (*chain = strndup(data, (size_t)dlen)) == NULL))
		goto out;
	r = EXIT_OK;
out:
	ERR_clear_error();
	if (r != EXIT_OK) {
		X509_free(*cert);
		*cert = NULL;
	}
	X509_free(x);
	BIO_free(in);
	BIO_free(out);
	free(buf);
	return r;
}

/* Certificates of one transaction of import-cert --dir. */
struct cert_batch {
	struct reg_cert_put v[WRAP_BATCH];
	char ids[WRAP_BATCH][CRED_MAX_ID + 1];
	unsigned char *der[WRAP_BATCH];
	char *chain[WRAP_BATCH];
	size_t n;
};

static void cert_batch_clear(struct cert_batch *cb)
{
	size_t i;

	for (i = 0; i < cb->n; i++) {
		OPENSSL_free(cb->der[i]);
		free(cb->chain[i]);
		/* NULL again: i2d_X509 writes into a buffer it is given rather than allocate. */
		cb->der[i] = NULL;
		cb->chain[i] = NULL;
	}
	cb->n = 0;
}

/* Store the batch in one transaction. */
static int cert_batch_flush(struct registry *reg, struct cert_batch *cb)
{
	int rr = cb->n > 0 ? registry_cert_put_many(reg, cb->v, cb->n) : REG_OK;

	if (rr != REG_OK) {
		msg("registry: cannot store %zu certificates (error %d)", cb->n, rr);
		return EXIT_FAIL; /* the caller counts them out */
	}
	cert_batch_clear(cb);
	return EXIT_OK;
}

/* One pass over DIR/ *.pem: count (write -1), check (write 0) or store (write 1, WRAP_BATCH
 * per transaction) each. A bad file names itself and stops the pass. */
static int import_dir_pass(struct registry *reg, const char *dir, int write, unsigned long total,
                           unsigned long *n, struct audit *au)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	char path[PATH_MAX] = "", id[CRED_MAX_ID + 1], *chain = NULL;
	struct cert_batch *cb = NULL;
	struct reg_wkey w;
	const char *why;
	X509 *cert = NULL;
	size_t len;
	int r = EXIT_FAIL, rr, last = -1, bar = write >= 0 && total > 0 && isatty(STDERR_FILENO);

	*n = 0;
	memset(&w, 0, sizeof(w));
	if (d == NULL) {
		msg("%s: %s", dir, strerror(errno));
		return EXIT_FAIL;
	}
	if (write == 1 && (cb = calloc(1, sizeof(*cb))) == NULL) {
		msg("out of memory");
		goto out;
	}
	while ((de = readdir(d)) != NULL) {
		len = strlen(de->d_name);
		if (len <= 4 || strcmp(de->d_name + len - 4, ".pem") != 0 || de->d_name[0] == '.')
			continue;
		if (write < 0) {
			(*n)++;
			continue;
		}
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		if (len - 4 > CRED_MAX_ID) {
			msg("%s: the name is not a credential ID", path);
			goto out;
		}
		memcpy(id, de->d_name, len - 4);
		id[len - 4] = '\0';
		if (!cred_valid_id(id)) {
			msg("%s: %s is not a credential ID", path, id);
			goto out;
		}
		if (load_cert_file(path, &cert, &chain) != EXIT_OK)
			goto out;
		if ((rr = registry_wkey_get(reg, id, &w)) != REG_OK) {
			msg("%s: %s", path,
			    rr == REG_ERR_NOT_FOUND
			        ? "no wrapped key for this credential (import-cert "
			          "--credential for token keys)"
			        : "registry unreadable");
			goto out;
		}
		if (!cert_matches_wrapped(&w, cert, &why)) {
			msg("%s: %s", path, why);
			au->reason = "key_mismatch";
			goto out;
		}
		if (write == 1) {
			int dl = i2d_X509(cert, &cb->der[cb->n]);

			if (dl <= 0) {
				msg("%s: cannot encode the certificate: %s", path, ossl_err());
				goto out;
			}
			snprintf(cb->ids[cb->n], sizeof(cb->ids[0]), "%s", id);
			cb->chain[cb->n] = chain;
			chain = NULL;
			cb->v[cb->n] = (struct reg_cert_put){cb->ids[cb->n], cb->der[cb->n],
			                                     (size_t)dl, cb->chain[cb->n]};
			cb->n++;
		}
		(*n)++;
		if (write == 1 && cb->n == WRAP_BATCH && cert_batch_flush(reg, cb) != EXIT_OK)
			goto out;
		reg_wkey_clear(&w);
		X509_free(cert);
		cert = NULL;
		free(chain);
		chain = NULL;
		if (bar && (write == 0 || cb->n == 0))
			progress(*n <= total ? *n : total, total, &last);
	}
	if (cb != NULL && cert_batch_flush(reg, cb) != EXIT_OK)
		goto out;
	if (bar)
		progress(total, total, &last);
	r = EXIT_OK;
out:
	if (r != EXIT_OK && write >= 0) {
		if (bar)
			fputc('\n', stderr);
		/* Whole batches are stored; the one being filled is not. */
		if (cb != NULL)
			*n -= cb->n;
		audit_detail(au, "dir=%s: %s at %s, %lu stored", dir, write ? "stopped" : "refused",
		             path, write ? *n : 0);
	}
	if (cb != NULL)
		cert_batch_clear(cb);
	free(cb);
	reg_wkey_clear(&w);
	X509_free(cert);
	free(chain);
	closedir(d);
	return r;
}

/* import-cert --dir DIR: every DIR/ID.pem checked first (nothing is stored when one is bad),
 * then stored; storing one again is harmless, so a run that stopped is resumed by another. */
static int import_dir(const char *config_path, const char *dir)
{
	struct audit au = {0};
	struct config *cfg = NULL;
	struct registry *reg = NULL;
	unsigned long n = 0, stored = 0, total = 0;
	double t0 = now_s(), dt;
	int r = EXIT_FAIL;

	if (load_config(config_path, &cfg) != EXIT_OK ||
	    audit_begin(&au, cfg, "admin.import-cert", NULL, NULL) != EXIT_OK)
		goto out;
	audit_detail(&au, "dir=%s", dir);
	if (open_registry(cfg, 0, &reg) != EXIT_OK)
		goto out;
	if (reg == NULL) {
		msg("import-cert: no registry yet (keygen first)");
		goto out;
	}
	if (import_dir_pass(reg, dir, -1, 0, &total, &au) != EXIT_OK)
		goto out;
	if (isatty(STDERR_FILENO))
		fprintf(stderr, "checking %lu certificates\n", total);
	if (import_dir_pass(reg, dir, 0, total, &n, &au) != EXIT_OK) {
		msg("import-cert: nothing imported from %s", dir);
		goto out;
	}
	if (isatty(STDERR_FILENO))
		fprintf(stderr, "storing %lu certificates, %d per transaction\n", n, WRAP_BATCH);
	if (import_dir_pass(reg, dir, 1, n, &stored, &au) != EXIT_OK) {
		msg("import-cert: stopped with %lu of %lu stored; run it again to resume", stored,
		    n);
		goto out;
	}
	dt = now_s() - t0;
	printf("%s: %lu certificates checked and stored in %.1f s (%.0f/s)\n", dir, stored, dt,
	       dt > 0 ? stored / dt : 0.0);
	audit_detail(&au, "dir=%s: %lu certificates stored", dir, stored);
	r = EXIT_OK;
out:
	registry_close(reg);
	r = audit_end(&au, r);
	config_free(cfg);
	return r;
}

static int cmd_import_cert(const char *config_path, const struct args *a)
{
	const char *id = a->v[OPT_CREDENTIAL];
	struct audit au = {0};
	struct config *cfg = NULL;
	struct token *tok = NULL;
	struct registry *reg = NULL;
	const struct tok_key *key;
	struct handles old = {0};
	unsigned char fp[EVP_MAX_MD_SIZE];
	unsigned int fplen = 0;
	char fphex[2 * EVP_MAX_MD_SIZE + 1] = "";
	CK_FUNCTION_LIST *fn;
	CK_SESSION_HANDLE s;
	CK_OBJECT_HANDLE created = CK_INVALID_HANDLE;
	X509 *cert = NULL;
	EVP_PKEY *cpub;
	char uri[REG_MAX_URI + 1], *chain = NULL;
	size_t i;
	int r = EXIT_FAIL, tr, rr;
	CK_RV rv;
	struct reg_wkey wk;
	const char *why;

	memset(&wk, 0, sizeof(wk));
	if (a->v[OPT_DIR] != NULL) {
		if (id != NULL || a->v[OPT_CERT] != NULL || a->v[OPT_CHAIN] != NULL) {
			msg("import-cert: --dir takes no --credential, --cert or --chain");
			return EXIT_USAGE;
		}
		return import_dir(config_path, a->v[OPT_DIR]);
	}
	if (a->v[OPT_CERT] == NULL) {
		msg("import-cert: --cert (or --dir) is required");
		return EXIT_USAGE;
	}
	if (!cred_valid_id(id)) {
		msg("import-cert: credential ID must be 1..%d of [A-Za-z0-9._-]", CRED_MAX_ID);
		return EXIT_USAGE;
	}
	if ((cert = load_cert(a->v[OPT_CERT])) == NULL)
		goto out;
	if (a->v[OPT_CHAIN] != NULL && load_chain(a->v[OPT_CHAIN], &chain) != EXIT_OK)
		goto out;
	if (load_config(config_path, &cfg) != EXIT_OK ||
	    audit_begin(&au, cfg, "admin.import-cert", NULL, NULL) != EXIT_OK)
		goto out;
	audit_cred(&au, id, NULL);
	if (X509_digest(cert, EVP_sha256(), fp, &fplen) == 1)
		for (i = 0; i < fplen; i++)
			snprintf(fphex + 2 * i, 3, "%02x", fp[i]);
	audit_detail(&au, "cert=%s sha256=%s%s%s", a->v[OPT_CERT], fphex,
	             chain != NULL ? " chain=" : "", chain != NULL ? a->v[OPT_CHAIN] : "");
	if (open_registry(cfg, 0, &reg) != EXIT_OK)
		goto out;
	if (reg != NULL && (rr = registry_wkey_get(reg, id, &wk)) == REG_OK) {
		/* A wrapped key: the certificate goes in the registry, not the token. */
		if (!cert_matches_wrapped(&wk, cert, &why)) {
			msg("import-cert: %s: %s", id, why);
			au.reason = "key_mismatch";
			goto out;
		}
		if (store_wrapped_cert(reg, id, cert, chain) != EXIT_OK)
			goto out;
		printf("%s: certificate stored in the registry%s\n", id,
		       chain != NULL ? "; chain recorded" : "");
		r = EXIT_OK;
		goto out;
	} else if (reg != NULL && rr != REG_ERR_NOT_FOUND) {
		msg("registry: cannot read %s", id);
		goto out;
	}
	registry_close(reg);
	reg = NULL;
	if (credential_key_uri(cfg, id, uri, sizeof(uri)) != EXIT_OK ||
	    open_token(cfg, 1, 1, &tok) != EXIT_OK || get_key(tok, uri, id, &key) != EXIT_OK)
		goto out;
	if ((cpub = X509_get0_pubkey(cert)) == NULL || key->pub == NULL ||
	    EVP_PKEY_eq(cpub, key->pub) != 1) {
		msg("import-cert: certificate does not match the token key of %s", id);
		au.reason = "key_mismatch";
		goto out;
	}
	ERR_clear_error();
	if (X509_cmp_current_time(X509_get0_notAfter(cert)) <= 0)
		msg("warning: the certificate has expired");
	fn = tok_functions(tok);
	if ((tr = tok_session(tok, &s)) != TOK_OK) {
		msg("session: %s", tok_strerror(tr));
		goto out;
	}
	/* Store the new certificate before removing the old, so a failure leaves one behind. */
	if (find_certs(fn, s, id, key, &old) != EXIT_OK ||
	    store_cert(fn, s, id, key, cert, &created) != EXIT_OK)
		goto out;
	for (i = 0; i < old.n; i++) {
		if (old.h[i] != created && (rv = fn->C_DestroyObject(s, old.h[i])) != CKR_OK) {
			rv_msg("C_DestroyObject (previous certificate)", rv);
			goto out;
		}
	}
	tok_key_flush(tok);
	if (chain != NULL) {
		if (open_registry(cfg, 1, &reg) != EXIT_OK)
			goto out;
		if ((rr = registry_set_chain(reg, id, chain)) != REG_OK) {
			msg("registry: cannot store the chain of %s (error %d)", id, rr);
			goto out;
		}
	}
	printf("%s: certificate stored%s%s\n", id, old.n > 0 ? ", replacing the previous one" : "",
	       chain != NULL ? "; chain recorded" : "");
	r = EXIT_OK;
out:
	reg_wkey_clear(&wk);
	handles_free(&old);
	registry_close(reg);
	free(chain);
	X509_free(cert);
	tok_close(tok);
	r = audit_end(&au, r);
	config_free(cfg);
	return r;
}

/* ---- enrol ---- */

/* A device key: PEM EC P-256 public key, checked and re-encoded canonically into *pem. */
static int load_device_key(const char *path, char **pem)
{
	unsigned char *buf = NULL;
	size_t len;
	BIO *in = NULL, *out = NULL;
	EVP_PKEY *pk = NULL;
	EVP_PKEY_CTX *ctx = NULL;
	char group[64], *data;
	long dlen;
	int r = EXIT_FAIL;

	*pem = NULL;
	if (read_file(path, MAX_PUBKEY_FILE, &buf, &len) != EXIT_OK)
		goto out;
	if ((in = BIO_new_mem_buf(buf, (int)len)) == NULL ||
	    (pk = PEM_read_bio_PUBKEY(in, NULL, NULL, NULL)) == NULL) {
		msg("%s: not a PEM public key", path);
		goto out;
	}
	if (!EVP_PKEY_is_a(pk, "EC") ||
	    !EVP_PKEY_get_utf8_string_param(pk, "group", group, sizeof(group), NULL) ||
	    strcmp(group, "prime256v1") != 0) {
		msg("%s: the device key must be an EC P-256 public key", path);
		goto out;
	}
	if ((ctx = EVP_PKEY_CTX_new_from_pkey(NULL, pk, NULL)) == NULL ||
	    EVP_PKEY_public_check(ctx) != 1) {
		msg("%s: the device key is not a valid P-256 point", path);
		goto out;
	}
	if ((out = BIO_new(BIO_s_mem())) == NULL || !PEM_write_bio_PUBKEY(out, pk) ||
	    (dlen = BIO_get_mem_data(out, &data)) <= 0 ||
	    (*pem = strndup(data, (size_t)dlen)) == NULL) {
		msg("out of memory");
		goto out;
	}
	r = EXIT_OK;
out:
	ERR_clear_error();
	EVP_PKEY_CTX_free(ctx);
	EVP_PKEY_free(pk);
	BIO_free(in);
	BIO_free(out);
	free(buf);
	return r;
}

/* ---- enrol --from FILE ---- */

#define ENROL_LINE 8192

struct enrol_line {
	char *id;
	unsigned long line;
	int skip; /* already enrolled just so: resumed */
};

struct enrol_file {
	const char *path;
	FILE *f;
	unsigned long line;
	struct enrol_line *v;
	size_t n, cap, at; /* at: next entry for pass 2 */
	int bar, last;     /* a progress bar on stderr: by bytes in pass 1, by lines in pass 2 */
	unsigned long size;
};

/* The next credential line of ef->f: fields in id, user, cls, dev (NULL when absent). 1, 0 at
 * the end, -1 for a malformed line (named on stderr). */
static int enrol_parse(struct enrol_file *ef, char *buf, char **id, char **user, int *cls,
                       char **dev)
{
	char *f[5], *save = NULL, *hash;
	int nf;

	for (;;) {
		if (fgets(buf, ENROL_LINE, ef->f) == NULL)
			return ferror(ef->f) ? (msg("%s: read error", ef->path), -1) : 0;
		ef->line++;
		if (strchr(buf, '\n') == NULL && !feof(ef->f)) {
			msg("%s:%lu: line longer than %d bytes", ef->path, ef->line,
			    ENROL_LINE - 1);
			return -1;
		}
		if ((hash = strchr(buf, '#')) != NULL)
			*hash = '\0';
		for (nf = 0; nf < 5; nf++)
			if ((f[nf] = strtok_r(nf == 0 ? buf : NULL, " \t\r\n", &save)) == NULL)
				break;
		if (nf == 0)
			continue;
		if (nf < 3 || nf > 4) {
			msg("%s:%lu: expected \"credentialID userID class [device-key-file]\"",
			    ef->path, ef->line);
			return -1;
		}
		if (!cred_valid_id(f[0]) || strcmp(f[0], AUDIT_KEY_LABEL) == 0) {
			msg("%s:%lu: %s is not a credential ID (1..%d of [A-Za-z0-9._-], not %s)",
			    ef->path, ef->line, f[0], CRED_MAX_ID, AUDIT_KEY_LABEL);
			return -1;
		}
		if (!cred_valid_user(f[1])) {
			msg("%s:%lu: %s is not a userID", ef->path, ef->line, f[1]);
			return -1;
		}
		if ((*cls = pol_class_lookup(f[2])) != POL_CLASS_CITIZEN &&
		    *cls != POL_CLASS_SEAL) {
			msg("%s:%lu: class must be citizen or seal, not %s", ef->path, ef->line,
			    f[2]);
			return -1;
		}
		*id = f[0];
		*user = f[1];
		*dev = nf == 4 ? f[3] : NULL;
		return 1;
	}
}

static int cmp_enrol_line(const void *a, const void *b)
{
	const struct enrol_line *x = a, *y = b;
	int c = strcmp(x->id, y->id);

	return c != 0 ? c : (x->line > y->line) - (x->line < y->line);
}

static int cmp_line_no(const void *a, const void *b)
{
	const struct enrol_line *x = a, *y = b;

	return (x->line > y->line) - (x->line < y->line);
}

/* Pass 2's source for registry_add_each: the same file, lines checked by pass 1. */
static int enrol_next(void *arg, struct reg_cred *c)
{
	struct enrol_file *ef = arg;
	char buf[ENROL_LINE], *id, *user, *dev;
	int cls, r;

	for (;;) {
		if ((r = enrol_parse(ef, buf, &id, &user, &cls, &dev)) <= 0)
			return r == 0 && ef->at == ef->n ? 0 : -1;
		if (ef->at >= ef->n || ef->v[ef->at].line != ef->line ||
		    strcmp(ef->v[ef->at].id, id) != 0)
			return -1; /* the file changed under us */
		if (ef->bar)
			progress(ef->at + 1, ef->n, &ef->last);
		if (ef->v[ef->at++].skip)
			continue;
		snprintf(c->id, sizeof(c->id), "%s", id);
		snprintf(c->owner, sizeof(c->owner), "%s", user);
		c->cls = cls;
		c->status = REG_ACTIVE;
		c->created = (int64_t)time(NULL);
		c->store = REG_STORE_WRAPPED; /* pass 1 found each one's wrapped key */
		default_key_uri(id, c->key_uri, sizeof(c->key_uri));
		if (dev != NULL && load_device_key(dev, &c->device_key_pem) != EXIT_OK)
			return -1;
		return 1;
	}
}

static void enrol_file_free(struct enrol_file *ef)
{
	size_t i;

	for (i = 0; i < ef->n; i++)
		free(ef->v[i].id);
	free(ef->v);
	if (ef->f != NULL)
		fclose(ef->f);
}

/* Pass 1: every line parsed and checked (IDs unique, device keys valid, each credential's key
 * present, not enrolled to someone else) before anything is written. */
static int enrol_check(struct enrol_file *ef, const struct config *cfg, struct registry *reg,
                       unsigned long *skipped)
{
	char buf[ENROL_LINE], *id, *user, *dev, *pem = NULL;
	struct reg_cred prev;
	struct reg_wkey w;
	int cls, rr, r;
	size_t i;

	(void)cfg;
	*skipped = 0;
	while ((r = enrol_parse(ef, buf, &id, &user, &cls, &dev)) == 1) {
		long at = ftell(ef->f);

		if (ef->bar && at > 0 && ef->size > 0)
			progress((unsigned long)at <= ef->size ? (unsigned long)at : ef->size,
			         ef->size, &ef->last);
		if (dev != NULL) {
			if (load_device_key(dev, &pem) != EXIT_OK) {
				msg("%s:%lu: device key %s refused", ef->path, ef->line, dev);
				return EXIT_FAIL;
			}
			free(pem);
			pem = NULL;
		}
		if (ef->n == ef->cap) {
			size_t cap = ef->cap == 0 ? 1024 : ef->cap * 2;
			struct enrol_line *nv = realloc(ef->v, cap * sizeof(*nv));
			if (nv == NULL)
				return (msg("out of memory"), EXIT_FAIL);
			ef->v = nv;
			ef->cap = cap;
		}
		if ((ef->v[ef->n].id = strdup(id)) == NULL)
			return (msg("out of memory"), EXIT_FAIL);
		ef->v[ef->n].line = ef->line;
		ef->v[ef->n].skip = 0;
		memset(&prev, 0, sizeof(prev));
		rr = registry_get(reg, id, &prev);
		if (rr == REG_OK) {
			if (strcmp(prev.owner, user) != 0 || prev.cls != cls) {
				msg("%s:%lu: %s is already enrolled for %s", ef->path, ef->line, id,
				    prev.owner);
				reg_cred_clear(&prev);
				ef->n++;
				return EXIT_FAIL;
			}
			ef->v[ef->n].skip = 1;
			(*skipped)++;
		} else if (rr != REG_ERR_NOT_FOUND) {
			msg("registry: cannot read %s", id);
			ef->n++;
			return EXIT_FAIL;
		}
		reg_cred_clear(&prev);
		if (!ef->v[ef->n].skip) {
			rr = registry_wkey_get(reg, id, &w);
			reg_wkey_clear(&w);
			if (rr != REG_OK) {
				msg("%s:%lu: %s has no wrapped key (keygen first; token keys are "
				    "enrolled one by one with enrol --credential)",
				    ef->path, ef->line, id);
				ef->n++;
				return EXIT_FAIL;
			}
		}
		ef->n++;
	}
	if (r < 0)
		return EXIT_FAIL;
	if (ef->bar && ef->size > 0)
		progress(ef->size, ef->size, &ef->last);
	/* IDs unique within the file: sorted, then back in line order for pass 2. */
	qsort(ef->v, ef->n, sizeof(*ef->v), cmp_enrol_line);
	for (i = 1; i < ef->n; i++) {
		if (strcmp(ef->v[i].id, ef->v[i - 1].id) == 0) {
			msg("%s:%lu: %s is already on line %lu", ef->path, ef->v[i].line,
			    ef->v[i].id, ef->v[i - 1].line);
			return EXIT_FAIL;
		}
	}
	qsort(ef->v, ef->n, sizeof(*ef->v), cmp_line_no);
	return EXIT_OK;
}

static int enrol_from(const char *config_path, const char *path)
{
	struct audit au = {0};
	struct config *cfg = NULL;
	struct registry *reg = NULL;
	struct enrol_file ef = {.path = path};
	struct stat sb;
	unsigned long skipped = 0;
	size_t bad = 0;
	double t0 = now_s(), dt;
	int r = EXIT_FAIL, rr;

	if (load_config(config_path, &cfg) != EXIT_OK ||
	    audit_begin(&au, cfg, "admin.enrol", NULL, NULL) != EXIT_OK)
		goto out;
	audit_detail(&au, "from=%s", path);
	if (open_registry(cfg, 1, &reg) != EXIT_OK)
		goto out;
	if ((ef.f = fopen(path, "re")) == NULL) {
		msg("%s: %s", path, strerror(errno));
		goto out;
	}
	ef.bar = isatty(STDERR_FILENO);
	ef.last = -1;
	if (fstat(fileno(ef.f), &sb) == 0 && S_ISREG(sb.st_mode))
		ef.size = (unsigned long)sb.st_size;
	if (ef.bar)
		fprintf(stderr, "checking %s\n", path);
	if (enrol_check(&ef, cfg, reg, &skipped) != EXIT_OK) {
		msg("enrol: nothing from %s was enrolled", path);
		au.reason = "bad_input";
		audit_detail(&au, "from=%s: refused at line %lu", path, ef.line);
		goto out;
	}
	rewind(ef.f);
	ef.line = 0;
	ef.at = 0;
	ef.last = -1;
	if (ef.bar)
		fprintf(stderr, "enrolling %zu credentials in one transaction\n", ef.n - skipped);
	if ((rr = registry_add_each(reg, enrol_next, &ef, &bad)) != REG_OK) {
		msg("enrol: %s: nothing was enrolled (%s)", path,
		    rr == REG_ERR_EXISTS      ? "an ID was enrolled meanwhile"
		    : rr == REG_ERR_BAD_INPUT ? "the file changed while enrolling"
		                              : "registry write failed");
		goto out;
	}
	dt = now_s() - t0;
	printf("%s: %zu credentials enrolled, %lu already were, in %.1f s (%.0f/s)\n", path,
	       ef.n - skipped, skipped, dt, dt > 0 ? (ef.n - skipped) / dt : 0.0);
	audit_detail(&au, "from=%s: %zu enrolled, %lu already enrolled", path, ef.n - skipped,
	             skipped);
	r = EXIT_OK;
out:
	enrol_file_free(&ef);
	registry_close(reg);
	r = audit_end(&au, r);
	config_free(cfg);
	return r;
}

static int cmd_enrol(const char *config_path, const struct args *a)
{
	const char *id = a->v[OPT_CREDENTIAL], *user = a->v[OPT_USER];
	const char *key_uri = a->v[OPT_KEY];
	struct audit au = {0};
	struct config *cfg = NULL;
	struct token *tok = NULL;
	struct registry *reg = NULL;
	const struct tok_key *key;
	struct reg_cred c, prev;
	struct reg_wkey wk;
	int cls, r = EXIT_FAIL, rr = REG_ERR_NOT_FOUND;

	memset(&wk, 0, sizeof(wk));
	memset(&c, 0, sizeof(c));
	memset(&prev, 0, sizeof(prev));
	if (a->v[OPT_FROM] != NULL) {
		if (id != NULL || user != NULL || a->v[OPT_CLASS] != NULL || key_uri != NULL ||
		    a->v[OPT_DEVICE_KEY] != NULL) {
			msg("enrol: --from takes its credentials from the file alone");
			return EXIT_USAGE;
		}
		return enrol_from(config_path, a->v[OPT_FROM]);
	}
	if (id == NULL || user == NULL || a->v[OPT_CLASS] == NULL) {
		msg("enrol: --credential, --user and --class are required (or --from FILE)");
		return EXIT_USAGE;
	}
	if (!cred_valid_id(id)) {
		msg("enrol: credential ID must be 1..%d of [A-Za-z0-9._-]", CRED_MAX_ID);
		return EXIT_USAGE;
	}
	if (!cred_valid_user(user)) {
		msg("enrol: userID must be 1..%d printable ASCII characters without spaces",
		    CRED_MAX_USER);
		return EXIT_USAGE;
	}
	if (strcmp(id, AUDIT_KEY_LABEL) == 0) {
		msg("enrol: %s is reserved for the audit key", AUDIT_KEY_LABEL);
		return EXIT_USAGE;
	}
	if ((cls = pol_class_lookup(a->v[OPT_CLASS])) != POL_CLASS_CITIZEN &&
	    cls != POL_CLASS_SEAL) {
		msg("enrol: --class must be citizen or seal");
		return EXIT_USAGE;
	}
	if (key_uri != NULL &&
	    (strncmp(key_uri, "pkcs11:", 7) != 0 || strlen(key_uri) > REG_MAX_URI)) {
		msg("enrol: --key must be a PKCS#11 URI (pkcs11:...) of at most %d bytes",
		    REG_MAX_URI);
		return EXIT_USAGE;
	}
	snprintf(c.id, sizeof(c.id), "%s", id);
	snprintf(c.owner, sizeof(c.owner), "%s", user);
	c.cls = cls;
	c.status = REG_ACTIVE;
	c.created = (int64_t)time(NULL);
	if (key_uri != NULL)
		snprintf(c.key_uri, sizeof(c.key_uri), "%s", key_uri);
	else
		default_key_uri(id, c.key_uri, sizeof(c.key_uri));
	if (a->v[OPT_DEVICE_KEY] != NULL &&
	    load_device_key(a->v[OPT_DEVICE_KEY], &c.device_key_pem) != EXIT_OK)
		goto out;
	if (load_config(config_path, &cfg) != EXIT_OK ||
	    audit_begin(&au, cfg, "admin.enrol", NULL, NULL) != EXIT_OK)
		goto out;
	audit_cred(&au, id, user);
	audit_detail(&au, "user=%s class=%s key=%s%s", user, pol_class_name((enum pol_class)cls),
	             c.key_uri, c.device_key_pem != NULL ? " device_key=yes" : "");
	if (open_registry(cfg, 1, &reg) != EXIT_OK)
		goto out;
	if ((rr = registry_get(reg, id, &prev)) == REG_OK) {
		msg("enrol: credential %s is already enrolled (owner %s)", id, prev.owner);
		au.reason = "exists";
		goto out;
	} else if (rr != REG_ERR_NOT_FOUND) {
		msg("registry: cannot read credential %s", id);
		goto out;
	}
	if (key_uri == NULL && (rr = registry_wkey_get(reg, id, &wk)) == REG_OK) {
		c.store = REG_STORE_WRAPPED; /* its key is the registry's blob */
	} else if (key_uri == NULL && rr != REG_ERR_NOT_FOUND) {
		msg("registry: cannot read credential %s", id);
		goto out;
	} else {
		if (open_token(cfg, 1, 1, &tok) != EXIT_OK ||
		    get_key(tok, c.key_uri, id, &key) != EXIT_OK)
			goto out;
		if (key->cert == NULL)
			msg("note: no certificate for %s on the token yet; run import-cert before "
			    "use",
			    id);
	}
	if ((rr = registry_add(reg, &c)) == REG_ERR_EXISTS) {
		msg("enrol: credential %s is already enrolled", id);
		au.reason = "exists";
		goto out;
	} else if (rr != REG_OK) {
		msg("registry: cannot enrol %s (error %d)", id, rr);
		goto out;
	}
	printf("%s: enrolled for %s, class %s, key %s%s\n", id, user,
	       pol_class_name((enum pol_class)cls),
	       c.store == REG_STORE_WRAPPED ? "wrapped by the KEK" : c.key_uri,
	       c.device_key_pem != NULL ? ", device key registered" : "");
	r = EXIT_OK;
out:
	reg_wkey_clear(&wk);
	reg_cred_clear(&c);
	reg_cred_clear(&prev);
	registry_close(reg);
	tok_close(tok);
	r = audit_end(&au, r);
	config_free(cfg);
	return r;
}

/* ---- list ---- */

enum { COL_ID, COL_OWNER, COL_CLASS, COL_STATUS, COL_ALG, COL_SUBJECT, COL_NOT_AFTER, NCOLS };
static const char *const col_names[NCOLS] = {"CREDENTIAL", "OWNER",   "CLASS",    "STATUS",
                                             "ALGORITHM",  "SUBJECT", "NOT-AFTER"};

struct table {
	char *(*rows)[NCOLS];
	size_t n, cap;
	struct token *tok; /* NULL when the token could not be opened */
	int failed;
};

static void key_alg_name(const struct tok_key *k, char *buf, size_t len)
{
	if (k->type == TOK_KEY_EC && k->curve_nid == NID_X9_62_prime256v1)
		snprintf(buf, len, "ec-p256");
	else if (k->type == TOK_KEY_EC && k->curve_nid == NID_secp384r1)
		snprintf(buf, len, "ec-p384");
	else if (k->type == TOK_KEY_EC)
		snprintf(buf, len, "ec-%u", k->bits);
	else if (k->type == TOK_KEY_RSA)
		snprintf(buf, len, "rsa-%u", k->bits);
	else
		snprintf(buf, len, "?");
}

/* The list columns of a wrapped credential, from the registry alone. */
static void list_wrapped(const struct reg_cred *c, char *alg, size_t alen, char *subject,
                         size_t slen, char *not_after, size_t nlen)
{
	struct tok_key k = {0};
	const unsigned char *p = c->cert;
	X509 *x = NULL;
	struct tm tm;
	char group[64];

	snprintf(alg, alen, "%s", c->wkey.present ? "?" : "missing");
	if (c->wkey.present && (k.pub = tok_spki_parse(c->wkey.pub, c->wkey.pub_len)) != NULL) {
		if (EVP_PKEY_get_base_id(k.pub) == EVP_PKEY_EC &&
		    EVP_PKEY_get_utf8_string_param(k.pub, "group", group, sizeof(group), NULL) ==
		        1) {
			k.type = TOK_KEY_EC;
			k.curve_nid = OBJ_txt2nid(group);
		} else {
			k.type = TOK_KEY_RSA;
		}
		k.bits = (unsigned)EVP_PKEY_get_bits(k.pub);
		key_alg_name(&k, alg, alen);
		snprintf(alg + strlen(alg), alen - strlen(alg), "/wrapped");
		EVP_PKEY_free(k.pub);
	}
	if (c->cert != NULL && (x = d2i_X509(NULL, &p, (long)c->cert_len)) != NULL) {
		X509_NAME_oneline(X509_get_subject_name(x), subject, (int)slen);
		if (ASN1_TIME_to_tm(X509_get0_notAfter(x), &tm) != 1 ||
		    strftime(not_after, nlen, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
			snprintf(not_after, nlen, "?");
		X509_free(x);
	}
	ERR_clear_error();
}

static int list_row(const struct reg_cred *c, void *arg)
{
	struct table *t = arg;
	const struct tok_key *key = NULL;
	const char *cls = pol_class_name((enum pol_class)c->cls);
	char alg[32] = "?", subject[512] = "-", not_after[32] = "-";
	const char *vals[NCOLS];
	struct tm tm;
	size_t i;

	if (c->store == REG_STORE_WRAPPED) {
		list_wrapped(c, alg, sizeof(alg), subject, sizeof(subject), not_after,
		             sizeof(not_after));
	} else if (t->tok != NULL) {
		if (tok_key_get(t->tok, c->key_uri, &key) == TOK_OK) {
			key_alg_name(key, alg, sizeof(alg));
			if (key->cert != NULL) {
				X509_NAME_oneline(X509_get_subject_name(key->cert), subject,
				                  sizeof(subject));
				if (ASN1_TIME_to_tm(X509_get0_notAfter(key->cert), &tm) != 1 ||
				    strftime(not_after, sizeof(not_after), "%Y-%m-%dT%H:%M:%SZ",
				             &tm) == 0)
					snprintf(not_after, sizeof(not_after), "?");
			}
		} else {
			snprintf(alg, sizeof(alg), "missing");
		}
	}
	if (t->n == t->cap) {
		size_t cap = t->cap == 0 ? 64 : t->cap * 2;
		char *(*nr)[NCOLS] = realloc(t->rows, cap * sizeof(*nr));
		if (nr == NULL)
			goto fail;
		t->rows = nr;
		t->cap = cap;
	}
	vals[COL_ID] = c->id;
	vals[COL_OWNER] = c->owner;
	vals[COL_CLASS] = cls;
	vals[COL_STATUS] = reg_status_name(c->status);
	vals[COL_ALG] = alg;
	vals[COL_SUBJECT] = subject;
	vals[COL_NOT_AFTER] = not_after;
	for (i = 0; i < NCOLS; i++) {
		if ((t->rows[t->n][i] = strdup(vals[i] != NULL ? vals[i] : "?")) == NULL) {
			while (i-- > 0)
				free(t->rows[t->n][i]);
			goto fail;
		}
	}
	t->n++;
	return 0;
fail:
	msg("out of memory");
	t->failed = 1;
	return 1;
}

static int cmd_list(const char *config_path, const struct args *a)
{
	struct config *cfg = NULL;
	struct registry *reg = NULL;
	struct table t = {0};
	size_t width[NCOLS], i, j;
	int r = EXIT_FAIL;

	if (load_config(config_path, &cfg) != EXIT_OK || open_registry(cfg, 0, &reg) != EXIT_OK)
		goto out;
	/* The table is still useful without the token: say so and show the registry. */
	if (reg != NULL && open_token(cfg, 1, 1, &t.tok) != EXIT_OK)
		msg("warning: token unavailable; algorithm and certificate columns are unknown");
	if (reg != NULL && (registry_foreach(reg, NULL, list_row, &t) != REG_OK || t.failed)) {
		msg("registry: cannot list credentials");
		goto out;
	}
	for (j = 0; j < NCOLS; j++) {
		width[j] = strlen(col_names[j]);
		for (i = 0; i < t.n; i++)
			if (strlen(t.rows[i][j]) > width[j])
				width[j] = strlen(t.rows[i][j]);
	}
	for (j = 0; j < NCOLS; j++)
		printf("%-*s%s", j + 1 < NCOLS ? (int)width[j] : 0, col_names[j],
		       j + 1 < NCOLS ? "  " : "\n");
	for (i = 0; i < t.n; i++)
		for (j = 0; j < NCOLS; j++)
			printf("%-*s%s", j + 1 < NCOLS ? (int)width[j] : 0, t.rows[i][j],
			       j + 1 < NCOLS ? "  " : "\n");
	if (fflush(stdout) != 0) {
		msg("standard output: %s", strerror(errno));
		goto out;
	}
	r = EXIT_OK;
out:
	for (i = 0; i < t.n; i++)
		for (j = 0; j < NCOLS; j++)
			free(t.rows[i][j]);
	free(t.rows);
	tok_close(t.tok);
	registry_close(reg);
	config_free(cfg);
	return r;
}

/* ---- suspend, resume, revoke ---- */

static int set_status(const char *config_path, const struct args *a, const char *op,
                      enum reg_status to)
{
	const char *id = a->v[OPT_CREDENTIAL];
	struct audit au = {0};
	struct config *cfg = NULL;
	struct registry *reg = NULL;
	struct reg_cred c;
	int r = EXIT_FAIL, rr;

	memset(&c, 0, sizeof(c));
	if (!cred_valid_id(id)) {
		msg("credential ID must be 1..%d of [A-Za-z0-9._-]", CRED_MAX_ID);
		return EXIT_USAGE;
	}
	if (load_config(config_path, &cfg) != EXIT_OK ||
	    audit_begin(&au, cfg, op, NULL, NULL) != EXIT_OK)
		goto out;
	audit_cred(&au, id, NULL);
	audit_detail(&au, "status=%s", reg_status_name(to));
	if (open_registry(cfg, 0, &reg) != EXIT_OK)
		goto out;
	rr = reg != NULL ? registry_get(reg, id, &c) : REG_ERR_NOT_FOUND;
	if (rr == REG_ERR_NOT_FOUND) {
		msg("credential %s is not enrolled", id);
		au.reason = "unknown_credential";
		goto out;
	} else if (rr != REG_OK) {
		msg("registry: cannot read credential %s", id);
		goto out;
	}
	audit_cred(&au, id, c.owner);
	audit_detail(&au, "status %s -> %s", reg_status_name(c.status), reg_status_name(to));
	if (c.status == REG_REVOKED && to != REG_REVOKED) {
		msg("credential %s is revoked; revocation is final", id);
		au.reason = "credential_revoked";
		goto out;
	}
	if (c.status == to) {
		printf("%s: already %s\n", id, reg_status_name(to));
		r = EXIT_OK;
		goto out;
	}
	if ((rr = registry_set_status(reg, id, to)) != REG_OK) {
		msg("registry: cannot set the status of %s (error %d)", id, rr);
		goto out;
	}
	printf("%s: %s (was %s); the daemon applies it from its next request\n", id,
	       reg_status_name(to), reg_status_name(c.status));
	r = EXIT_OK;
out:
	reg_cred_clear(&c);
	registry_close(reg);
	r = audit_end(&au, r);
	config_free(cfg);
	return r;
}

static int cmd_suspend(const char *config_path, const struct args *a)
{
	return set_status(config_path, a, "admin.suspend", REG_SUSPENDED);
}

static int cmd_resume(const char *config_path, const struct args *a)
{
	return set_status(config_path, a, "admin.resume", REG_ACTIVE);
}

static int cmd_revoke(const char *config_path, const struct args *a)
{
	return set_status(config_path, a, "admin.revoke", REG_REVOKED);
}

/* ---- destroy ---- */

/* Destroy the key's private key, public key and certificates: every object of those classes
 * sharing its CKA_ID (or, for a key without one, its label). *n gets the count destroyed. */
static int destroy_objects(struct token *tok, const struct tok_key *key, size_t *n)
{
	static const CK_OBJECT_CLASS classes[] = {CKO_PRIVATE_KEY, CKO_PUBLIC_KEY, CKO_CERTIFICATE};
	CK_FUNCTION_LIST *fn = tok_functions(tok);
	CK_SESSION_HANDLE s;
	CK_OBJECT_CLASS cls;
	struct handles hv = {0};
	char label[MAX_LABEL + 1];
	size_t i, j;
	int r = EXIT_FAIL, tr, have_priv = 0;
	CK_RV rv;

	*n = 0;
	if ((tr = tok_session(tok, &s)) != TOK_OK) {
		msg("session: %s", tok_strerror(tr));
		return EXIT_FAIL;
	}
	for (i = 0; i < sizeof(classes) / sizeof(classes[0]); i++) {
		CK_ATTRIBUTE t[] = {
		    {CKA_CLASS, &cls, sizeof(cls)},
		    {CKA_ID, (void *)key->id, key->id_len},
		};
		cls = classes[i];
		if (key->id_len == 0)
			t[1] = (CK_ATTRIBUTE){CKA_LABEL, (void *)key->label, strlen(key->label)};
		if (find_objects(fn, s, t, 2, &hv) != EXIT_OK)
			goto out;
	}
	for (i = 0; i < hv.n; i++)
		have_priv |= hv.h[i] == key->priv;
	if (!have_priv) {
		msg("the key's own object was not found by its CKA_ID; nothing destroyed");
		goto out;
	}
	/* Never the audit key, whatever it shares with this one. */
	for (i = j = 0; i < hv.n; i++) {
		if (get_label(fn, s, hv.h[i], label, sizeof(label)) != EXIT_OK)
			goto out;
		if (strcmp(label, AUDIT_KEY_LABEL) != 0)
			hv.h[j++] = hv.h[i];
	}
	hv.n = j;
	for (i = 0; i < hv.n; i++) {
		if ((rv = fn->C_DestroyObject(s, hv.h[i])) != CKR_OK) {
			rv_msg("C_DestroyObject", rv);
			goto out;
		}
		(*n)++;
	}
	r = EXIT_OK;
out:
	handles_free(&hv);
	return r;
}

/* destroy of a wrapped credential: revoked first (the daemon refuses it from its next
 * request), then its blob erased, which no KEK can bring back, then the registry entry. */
static int destroy_wrapped(struct registry *reg, const char *id, int enrolled,
                           const struct reg_cred *c, int have_blob, struct audit *au)
{
	int rr;

	if (enrolled && c->status != REG_REVOKED &&
	    (rr = registry_set_status(reg, id, REG_REVOKED)) != REG_OK) {
		msg("registry: cannot revoke %s (error %d)", id, rr);
		return EXIT_FAIL;
	}
	if (have_blob && (rr = registry_wkey_remove(reg, id)) != REG_OK) {
		msg("registry: cannot erase the wrapped key of %s (error %d)", id, rr);
		return EXIT_FAIL;
	}
	if (enrolled && (rr = registry_remove(reg, id)) != REG_OK) {
		msg("registry: cannot remove %s (error %d)", id, rr);
		return EXIT_FAIL;
	}
	audit_detail(au, "store=wrapped blob=%s%s", have_blob ? "erased" : "absent",
	             enrolled ? " registry entry removed" : "");
	printf("%s: wrapped key %s%s\n", id, have_blob ? "erased (gone for good)" : "was absent",
	       enrolled ? ", registry entry removed" : "");
	return EXIT_OK;
}

static int cmd_destroy(const char *config_path, const struct args *a)
{
	const char *id = a->v[OPT_CREDENTIAL];
	struct audit au = {0};
	struct config *cfg = NULL;
	struct registry *reg = NULL;
	struct token *tok = NULL;
	const struct tok_key *key = NULL;
	struct reg_cred c;
	char uri[REG_MAX_URI + 1];
	size_t n = 0;
	int r = EXIT_FAIL, rr, tr, enrolled = 0;

	memset(&c, 0, sizeof(c));
	if (!cred_valid_id(id)) {
		msg("destroy: credential ID must be 1..%d of [A-Za-z0-9._-]", CRED_MAX_ID);
		return EXIT_USAGE;
	}
	if (strcmp(id, AUDIT_KEY_LABEL) == 0) {
		msg("destroy: %s is the audit key, not a credential", AUDIT_KEY_LABEL);
		return EXIT_USAGE;
	}
	if (load_config(config_path, &cfg) != EXIT_OK ||
	    audit_begin(&au, cfg, "admin.destroy", NULL, NULL) != EXIT_OK)
		goto out;
	audit_cred(&au, id, NULL);
	if (open_registry(cfg, 0, &reg) != EXIT_OK)
		goto out;
	rr = reg != NULL ? registry_get(reg, id, &c) : REG_ERR_NOT_FOUND;
	if (rr == REG_OK) {
		enrolled = 1;
		audit_cred(&au, id, c.owner);
		snprintf(uri, sizeof(uri), "%s", c.key_uri);
	} else if (rr == REG_ERR_NOT_FOUND) {
		default_key_uri(id, uri, sizeof(uri));
	} else {
		msg("registry: cannot read credential %s", id);
		goto out;
	}
	audit_detail(&au, "key=%s", uri);
	if (reg != NULL && (!enrolled || c.store == REG_STORE_WRAPPED)) {
		struct reg_wkey w;
		int wr = registry_wkey_get(reg, id, &w);

		reg_wkey_clear(&w);
		if (wr == REG_OK || (enrolled && wr == REG_ERR_NOT_FOUND)) {
			r = destroy_wrapped(reg, id, enrolled, &c, wr == REG_OK, &au);
			goto out;
		} else if (wr != REG_ERR_NOT_FOUND) {
			msg("registry: cannot read the key of %s", id);
			goto out;
		}
	}
	if (open_token(cfg, 1, 1, &tok) != EXIT_OK)
		goto out;
	tr = tok_key_get(tok, uri, &key);
	if (tr == TOK_ERR_NOT_FOUND && !enrolled) {
		msg("destroy: %s is neither enrolled nor on the token", id);
		au.reason = "unknown_credential";
		goto out;
	} else if (tr != TOK_OK && tr != TOK_ERR_NOT_FOUND) {
		msg("key %s: %s", uri, tok_strerror(tr));
		goto out;
	}
	/* Revoked first: the daemon refuses the credential from its next request on, even if
	 * destroying the objects fails halfway. */
	if (enrolled && c.status != REG_REVOKED &&
	    (rr = registry_set_status(reg, id, REG_REVOKED)) != REG_OK) {
		msg("registry: cannot revoke %s (error %d)", id, rr);
		goto out;
	}
	if (key != NULL) {
		if (destroy_objects(tok, key, &n) != EXIT_OK) {
			audit_detail(&au, "key=%s: destroyed %zu objects, then failed", uri, n);
			goto out;
		}
		tok_key_flush(tok);
	} else {
		msg("warning: no key for %s on the token (%s); removing the registry entry", id,
		    uri);
	}
	if (enrolled && (rr = registry_remove(reg, id)) != REG_OK) {
		msg("registry: cannot remove %s (error %d)", id, rr);
		goto out;
	}
	audit_detail(&au, "key=%s objects=%zu%s", uri, n,
	             enrolled ? " registry entry removed" : "");
	printf("%s: %zu token objects destroyed%s\n", id, n,
	       enrolled ? ", registry entry removed" : "");
	r = EXIT_OK;
out:
	reg_cred_clear(&c);
	registry_close(reg);
	tok_close(tok);
	r = audit_end(&au, r);
	config_free(cfg);
	return r;
}

/* ---- audit verify, export, checkpoint ---- */

/* The audit key on the token, or NULL (with a message). */
/* The audit key the daemon signs checkpoints with (ledger.audit_key, by default the key
 * labelled AUDIT_KEY_LABEL), or NULL with a message. */
static const struct tok_key *audit_key(const struct config *cfg, struct token *tok)
{
	const char *uri = cfg->ledger_audit_key != NULL ? cfg->ledger_audit_key : AUDIT_KEY_URI;
	const struct tok_key *key = NULL;
	int r = tok_key_get(tok, uri, &key);

	if (r == TOK_ERR_NOT_FOUND) {
		msg("no audit key (%s) on the token; create it with audit-key", uri);
		return NULL;
	}
	if (r != TOK_OK) {
		msg("audit key: %s", tok_strerror(r));
		return NULL;
	}
	/* EC as audit-key makes it, or RSA as a smartcard's keys are: the daemon signs with
	 * either (ECDSA, or PKCS#1 v1.5 over the head as a SHA-256 digest). */
	if (key->pub == NULL) {
		msg("the audit key %s has no public key on the token", uri);
		return NULL;
	}
	return key;
}

static int cmd_audit_verify(const char *config_path, const struct args *a)
{
	struct config *cfg = NULL;
	struct token *tok = NULL;
	const struct tok_key *key = NULL;
	uint64_t records = 0, ckpts = 0, bad = 0;
	char why[512] = "";
	int r = EXIT_FAIL;

	if (load_config(config_path, &cfg) != EXIT_OK)
		goto out;
	if (open_token(cfg, 1, 1, &tok) == EXIT_OK)
		key = audit_key(cfg, tok);
	if (ledger_verify(cfg->state_dir, key != NULL ? key->pub : NULL, &records, &ckpts, &bad,
	                  why, sizeof(why)) != 0) {
		if (bad > 0)
			printf("audit ledger NOT intact: first bad sequence number %llu: %s\n",
			       (unsigned long long)bad, why);
		else
			msg("audit verify: %s", why);
		goto out;
	}
	if (key == NULL && ckpts > 0) {
		printf("audit ledger: %llu records, %llu checkpoints: chain intact, but the "
		       "checkpoint signatures could not be checked without the audit key\n",
		       (unsigned long long)records, (unsigned long long)ckpts);
		goto out;
	}
	printf("audit ledger: %llu records, %llu checkpoints: intact\n",
	       (unsigned long long)records, (unsigned long long)ckpts);
	if (why[0] != '\0')
		printf("note: %s\n", why);
	r = EXIT_OK;
out:
	tok_close(tok);
	config_free(cfg);
	return r;
}

static int cmd_audit_export(const char *config_path, const struct args *a)
{
	struct config *cfg = NULL;
	char err[512] = "";
	int r = EXIT_FAIL;

	if (a->v[OPT_FORMAT] != NULL && strcmp(a->v[OPT_FORMAT], "jsonl") != 0) {
		msg("audit export: --format must be jsonl");
		return EXIT_USAGE;
	}
	if (load_config(config_path, &cfg) != EXIT_OK)
		goto out;
	fflush(stdout);
	if (ledger_export_jsonl(cfg->state_dir, STDOUT_FILENO, err, sizeof(err)) != LEDGER_OK) {
		msg("audit export: %s", err);
		goto out;
	}
	r = EXIT_OK;
out:
	config_free(cfg);
	return r;
}

struct audit_signer {
	struct token *tok;
	const struct tok_key *key;
};

/* ledger_sign_fn: in the token over the 32-byte chain head as a SHA-256 digest, as the daemon
 * does: ECDSA, or PKCS#1 v1.5 for an RSA key. */
static int audit_sign(void *arg, const uint8_t head[32], uint8_t *sig, size_t *siglen)
{
	struct audit_signer *as = arg;
	struct tok_sign_params sp = {
	    .scheme = as->key->type == TOK_KEY_EC ? TOK_ECDSA : TOK_RSA_PKCS1,
	    .hash_nid = NID_sha256,
	};
	uint8_t buf[TOK_MAX_SIG];
	size_t len = sizeof(buf);

	if (tok_sign_digest(as->tok, as->key, &sp, head, 32, buf, &len) != TOK_OK || len > *siglen)
		return -1;
	memcpy(sig, buf, len);
	*siglen = len;
	return 0;
}

static int cmd_audit_checkpoint(const char *config_path, const struct args *a)
{
	struct audit au = {0};
	struct audit_signer as = {0};
	struct config *cfg = NULL;
	uint64_t seq = 0;
	int r = EXIT_FAIL, lr;

	if (load_config(config_path, &cfg) != EXIT_OK ||
	    open_token(cfg, 1, 1, &as.tok) != EXIT_OK ||
	    (as.key = audit_key(cfg, as.tok)) == NULL ||
	    audit_begin(&au, cfg, "admin.audit.checkpoint", audit_sign, &as) != EXIT_OK)
		goto out;
	/* The record first, so the checkpoint covers it. */
	audit_detail(&au, "key=%s", as.key->label);
	if (audit_record(&au, EXIT_OK) != EXIT_OK)
		goto out;
	if ((lr = ledger_checkpoint(au.l, &seq)) != LEDGER_OK) {
		msg("audit checkpoint: %s", lr == LEDGER_ERR_INTERNAL
		                                ? "the audit key could not sign"
		                                : "the checkpoint cannot be stored");
		au.reason = "checkpoint_failed";
		audit_record(&au, EXIT_FAIL);
		goto out;
	}
	printf("checkpoint signed at sequence number %llu\n", (unsigned long long)seq);
	r = EXIT_OK;
out:
	ledger_close(au.l); /* before the token: the ledger may still sign */
	au.l = NULL;
	tok_close(as.tok);
	config_free(cfg);
	return r;
}

/* ---- policy check ---- */

/* The same rule set iamsignd loads (policy, SAD issuer keys, trust anchors and CRLs, from
 * the configuration), with FILE as the policy: the same errors as iamsignd --check. */
static int cmd_policy_check(const char *config_path, const struct args *a)
{
	struct config *cfg = NULL;
	struct rule_set rs;
	char err[512] = "";
	int r = EXIT_FAIL;

	if (load_config(config_path, &cfg) != 0)
		return EXIT_FAIL;
	if (rule_set_load(a->pos[0], cfg->sad_issuers, cfg->nsad_issuers, cfg->trust_anchors, &rs,
	                  err, sizeof(err)) != 0) {
		msg("%s", err);
		goto out;
	}
	rule_set_clear(&rs);
	printf("%s: OK (with the SAD issuer keys and trust anchors of %s)\n", a->pos[0],
	       config_path);
	r = EXIT_OK;
out:
	config_free(cfg);
	return r;
}

/* ---- main ---- */

static const struct option init_token_opts[] = {
    OPT("label", OPT_LABEL), OPT("so-pin-file", OPT_SO_PIN_FILE), COMMON_OPTS, {0}};
static const struct option keygen_opts[] = {
    OPT("credential", OPT_CREDENTIAL), OPT("alg", OPT_ALG), OPT("count", OPT_COUNT),
    OPT("store", OPT_STORE),           COMMON_OPTS,         {0}};
static const struct option csr_opts[] = {OPT("credential", OPT_CREDENTIAL),
                                         OPT("subject", OPT_SUBJECT),
                                         OPT("count", OPT_COUNT),
                                         OPT("out", OPT_OUT),
                                         COMMON_OPTS,
                                         {0}};
static const struct option import_cert_opts[] = {
    OPT("credential", OPT_CREDENTIAL), OPT("cert", OPT_CERT), OPT("dir", OPT_DIR),
    OPT("chain", OPT_CHAIN),           COMMON_OPTS,           {0}};
static const struct option enrol_opts[] = {OPT("credential", OPT_CREDENTIAL),
                                           OPT("user", OPT_USER),
                                           OPT("class", OPT_CLASS),
                                           OPT("device-key", OPT_DEVICE_KEY),
                                           OPT("key", OPT_KEY),
                                           OPT("from", OPT_FROM),
                                           COMMON_OPTS,
                                           {0}};
static const struct option list_opts[] = {COMMON_OPTS, {0}};
static const struct option cred_opts[] = {OPT("credential", OPT_CREDENTIAL), COMMON_OPTS, {0}};
static const struct option export_opts[] = {OPT("format", OPT_FORMAT), COMMON_OPTS, {0}};

static const char *const init_token_req[] = {"label", "so-pin-file", NULL};
static const char *const keygen_req[] = {"credential", "alg", NULL};
static const char *const csr_req[] = {"credential", "subject", "out", NULL};
static const char *const import_cert_req[] = {NULL};
static const char *const enrol_req[] = {NULL};
static const char *const cred_req[] = {"credential", NULL};

static const struct command commands[] = {
    {"init-token", "--label LABEL --so-pin-file FILE", init_token_opts, init_token_req,
     cmd_init_token, 0},
    {"keygen",
     "--credential ID --alg ec-p256|ec-p384|rsa-2048|rsa-3072 [--count N] "
     "[--store wrapped|token]",
     keygen_opts, keygen_req, cmd_keygen, 0},
    {"kek create", "", list_opts, NULL, cmd_kek_create, 0},
    {"kek rotate", "", list_opts, NULL, cmd_kek_rotate, 0},
    {"csr",
     "--credential ID --subject /CN=../O=.. --out FILE | --credential BASE --count N "
     "--subject \"/CN=%s/O=..\" --out DIR",
     csr_opts, csr_req, cmd_csr, 0},
    {"import-cert", "--credential ID --cert FILE [--chain FILE] | --dir DIR", import_cert_opts,
     import_cert_req, cmd_import_cert, 0},
    {"enrol",
     "--credential ID --user USER --class citizen|seal [--device-key FILE] [--key URI] | --from "
     "FILE",
     enrol_opts, enrol_req, cmd_enrol, 0},
    {"list", "", list_opts, NULL, cmd_list, 0},
    {"suspend", "--credential ID", cred_opts, cred_req, cmd_suspend, 0},
    {"resume", "--credential ID", cred_opts, cred_req, cmd_resume, 0},
    {"revoke", "--credential ID", cred_opts, cred_req, cmd_revoke, 0},
    {"destroy", "--credential ID", cred_opts, cred_req, cmd_destroy, 0},
    {"audit-key", "", list_opts, NULL, cmd_audit_key, 0},
    {"audit verify", "", list_opts, NULL, cmd_audit_verify, 0},
    {"audit export", "[--format jsonl]", export_opts, NULL, cmd_audit_export, 0},
    {"audit checkpoint", "", list_opts, NULL, cmd_audit_checkpoint, 0},
    {"policy check", "FILE", list_opts, NULL, cmd_policy_check, 1},
};

/* Does command c match the words at argv[0] (and argv[1] for a two-word name)? Returns the
 * number of words it takes, 0 if no match. */
static int command_match(const struct command *c, int argc, char **argv)
{
	const char *sp = strchr(c->name, ' ');
	size_t n = sp != NULL ? (size_t)(sp - c->name) : strlen(c->name);

	if (strlen(argv[0]) != n || strncmp(argv[0], c->name, n) != 0)
		return 0;
	if (sp == NULL)
		return 1;
	return argc > 1 && strcmp(argv[1], sp + 1) == 0 ? 2 : 0;
}

static void usage(FILE *f)
{
	size_t i;

	fprintf(f, "usage: " PROG " [-c CONFIG] COMMAND [OPTIONS]\n"
	           "Provision the token and the credential registry of iamsignd.\n\n"
	           "  -c, --config FILE  daemon configuration (default " DEFAULT_CONFIG ")\n"
	           "  -h, --help         this text; COMMAND --help for one command\n\n"
	           "commands:\n");
	for (i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		usage_line(f, &commands[i]);
	fprintf(f, "\nPINs are read from files only: the user PIN from token.pin_file, the SO PIN "
	           "from --so-pin-file.\nEvery command that changes state is recorded in the "
	           "audit ledger (audit export).\n");
}

int main(int argc, char **argv)
{
	static const struct option gopts[] = {COMMON_OPTS, {0}};
	const char *config_path = DEFAULT_CONFIG;
	const struct command *cmd = NULL;
	struct rlimit nocore = {0, 0};
	struct args a;
	size_t i;
	int ch, r, words = 0;

	/* PINs pass through this process: no core dumps, no ptrace by other users. */
	setrlimit(RLIMIT_CORE, &nocore);
	prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);

	opterr = 0;
	while ((ch = getopt_long(argc, argv, "+c:h", gopts, NULL)) != -1) {
		if (ch == OPT_CONFIG) {
			config_path = optarg;
		} else if (ch == OPT_HELP) {
			usage(stdout);
			return EXIT_OK;
		} else {
			msg("unknown option or missing value: %s", argv[optind - 1]);
			fprintf(stderr, "Try '" PROG " --help'.\n");
			return EXIT_USAGE;
		}
	}
	if (optind >= argc) {
		msg("no command given");
		usage(stderr);
		return EXIT_USAGE;
	}
	for (i = 0; i < sizeof(commands) / sizeof(commands[0]) && cmd == NULL; i++)
		if ((words = command_match(&commands[i], argc - optind, argv + optind)) > 0)
			cmd = &commands[i];
	if (cmd == NULL) {
		msg("unknown command '%s%s%s'", argv[optind], optind + 1 < argc ? " " : "",
		    optind + 1 < argc ? argv[optind + 1] : "");
		fprintf(stderr, "Try '" PROG " --help'.\n");
		return EXIT_USAGE;
	}
	/* getopt sees the last word of the command name as argv[0]. */
	optind += words - 1;
	r = parse_args(cmd, argc - optind, argv + optind, &a, &config_path);
	if (r == HELP_SHOWN)
		return EXIT_OK;
	if (r != EXIT_OK) {
		fprintf(stderr, "usage: " PROG " [-c CONFIG] %s %s\n", cmd->name, cmd->usage);
		return r;
	}
	r = cmd->run(config_path, &a);
	tok_pin_preload_clear();
	if (r == EXIT_USAGE)
		fprintf(stderr, "usage: " PROG " [-c CONFIG] %s %s\n", cmd->name, cmd->usage);
	return r;
}
