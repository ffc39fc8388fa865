/* Loading YAML files with errors that name file:line and key. See yamlfile.h. */
#include "policy/yamlfile.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

/* Bounds on what one file may hold, so a walk over it stays cheap. */
#define YF_MAX_PAIRS 1024 /* keys in one mapping (duplicate check is quadratic) */
#define YF_MAX_ITEMS 1024 /* items in one list of strings */
#define YF_MAX_STR 4096   /* bytes in one scalar given to yf_str */
#define YF_MAX_DIGITS 20  /* digits in an integer or duration */

static unsigned long node_line(const yaml_node_t *n)
{
	return n == NULL ? 0 : (unsigned long)n->start_mark.line + 1;
}

static void set_err(struct yfile *yf, unsigned long line, const char *key, const char *fmt,
                    va_list ap) __attribute__((format(printf, 4, 0)));

static void set_err(struct yfile *yf, unsigned long line, const char *key, const char *fmt,
                    va_list ap)
{
	int n;

	if (yf->err == NULL || yf->errlen == 0)
		return;
	if (key != NULL)
		n = snprintf(yf->err, yf->errlen, "%s:%lu: %s: ", yf->path, line, key);
	else
		n = snprintf(yf->err, yf->errlen, "%s:%lu: ", yf->path, line);
	if (n < 0 || (size_t)n >= yf->errlen)
		return;
	vsnprintf(yf->err + n, yf->errlen - (size_t)n, fmt, ap);
}

int yf_error(struct yfile *yf, const yaml_node_t *node, const char *key, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	set_err(yf, node_line(node), key, fmt, ap);
	va_end(ap);
	return -1;
}

static int yf_error_line(struct yfile *yf, unsigned long line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int yf_error_line(struct yfile *yf, unsigned long line, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	set_err(yf, line, NULL, fmt, ap);
	va_end(ap);
	return -1;
}

/* Read the whole file, refusing what is not a regular file, is writable by group or others, is
 * owned by another user than root or our effective uid, or is larger than YF_MAX_FILE. */
static int read_file(struct yfile *yf, unsigned char **out, size_t *outlen)
{
	unsigned char *buf = NULL;
	struct stat st;
	size_t len = 0;
	ssize_t got;
	int fd = -1, r = -1;

	fd = open(yf->path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd == -1) {
		yf_error_line(yf, 0, "cannot open: %s", strerror(errno));
		goto out;
	}
	if (fstat(fd, &st) == -1) {
		yf_error_line(yf, 0, "cannot stat: %s", strerror(errno));
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		yf_error_line(yf, 0, "not a regular file");
		goto out;
	}
	/* Config is a security boundary: anyone able to write it could grant themselves
	 * signatures. The checks are on the opened file, so a symlink is judged by its target
	 * and cannot be swapped between check and read. */
	if (st.st_mode & S_IWOTH) {
		yf_error_line(yf, 0, "refusing a world-writable file (mode %04o)",
		              (unsigned)(st.st_mode & 07777));
		goto out;
	}
	if (st.st_mode & S_IWGRP) {
		yf_error_line(yf, 0, "refusing a group-writable file (mode %04o)",
		              (unsigned)(st.st_mode & 07777));
		goto out;
	}
	if (st.st_uid != 0 && st.st_uid != geteuid()) {
		yf_error_line(yf, 0, "refusing a file owned by uid %lu (must be root or uid %lu)",
		              (unsigned long)st.st_uid, (unsigned long)geteuid());
		goto out;
	}
	if (st.st_size > YF_MAX_FILE) {
		yf_error_line(yf, 0, "file too large (%lld bytes, at most %d)",
		              (long long)st.st_size, YF_MAX_FILE);
		goto out;
	}
	/* One byte more than allowed, to notice a file that grew since fstat. */
	buf = malloc(YF_MAX_FILE + 1);
	if (buf == NULL) {
		yf_error_line(yf, 0, "out of memory");
		goto out;
	}
	for (;;) {
		got = read(fd, buf + len, YF_MAX_FILE + 1 - len);
		if (got == -1 && errno == EINTR)
			continue;
		if (got == -1) {
			yf_error_line(yf, 0, "cannot read: %s", strerror(errno));
			goto out;
		}
		if (got == 0)
			break;
		len += (size_t)got;
		if (len > YF_MAX_FILE) {
			yf_error_line(yf, 0, "file too large (more than %d bytes)", YF_MAX_FILE);
			goto out;
		}
	}
	*out = buf;
	*outlen = len;
	buf = NULL;
	r = 0;
out:
	free(buf);
	if (fd != -1)
		close(fd);
	return r;
}

static int parser_error(struct yfile *yf, const yaml_parser_t *p)
{
	const char *problem = p->problem != NULL ? p->problem : "cannot parse";

	if (p->error == YAML_MEMORY_ERROR)
		return yf_error_line(yf, 0, "out of memory while parsing");
	if (p->context != NULL)
		return yf_error_line(yf, (unsigned long)p->problem_mark.line + 1,
		                     "YAML syntax error: %s (%s at line %lu)", problem, p->context,
		                     (unsigned long)p->context_mark.line + 1);
	return yf_error_line(yf, (unsigned long)p->problem_mark.line + 1, "YAML syntax error: %s",
	                     problem);
}

yaml_node_t *yf_pair_key(struct yfile *yf, yaml_node_t *map, int i)
{
	return yaml_document_get_node(&yf->doc, map->data.mapping.pairs.start[i].key);
}

/* The absolute directory of path, into yf->dir. */
static int set_dir(struct yfile *yf, const char *path)
{
	const char *slash = strrchr(path, '/');
	char cwd[YF_MAX_PATH];
	int n;

	if (path[0] == '/') {
		n = snprintf(yf->dir, sizeof(yf->dir), "%.*s",
		             (int)(slash == path ? 1 : slash - path), path);
	} else {
		if (getcwd(cwd, sizeof(cwd)) == NULL)
			return -1;
		if (slash == NULL)
			n = snprintf(yf->dir, sizeof(yf->dir), "%s", cwd);
		else
			n = snprintf(yf->dir, sizeof(yf->dir), "%s/%.*s", cwd, (int)(slash - path),
			             path);
	}
	return n < 0 || (size_t)n >= sizeof(yf->dir) ? -1 : 0;
}

int yf_path(struct yfile *yf, yaml_node_t *n, const char *key, char **out)
{
	size_t dlen = strlen(yf->dir), slen;
	const char *s;

	*out = NULL;
	if (yf_str(yf, n, key, &s) != 0)
		return -1;
	slen = strlen(s);
	if (s[0] == '/')
		dlen = 0;
	if (dlen + 1 + slen >= YF_MAX_PATH)
		return yf_error(yf, n, key, "path too long");
	if ((*out = malloc(dlen + 1 + slen + 1)) == NULL)
		return yf_error(yf, n, key, "out of memory");
	if (dlen > 0) {
		memcpy(*out, yf->dir, dlen);
		if (yf->dir[dlen - 1] != '/')
			(*out)[dlen++] = '/';
	}
	memcpy(*out + dlen, s, slen + 1);
	return 0;
}

int yf_paths(struct yfile *yf, yaml_node_t *n, const char *key, size_t max, char ***out,
             size_t *count)
{
	char **v = NULL;
	size_t i, cnt;
	int sz, r = -1;

	*out = NULL;
	*count = 0;
	if (n != NULL && n->type == YAML_SCALAR_NODE) {
		cnt = 1;
	} else {
		if ((sz = yf_seq_size(yf, n, key)) < 0)
			goto out;
		cnt = (size_t)sz;
	}
	if (cnt > max) {
		yf_error(yf, n, key, "too many entries (at most %zu)", max);
		goto out;
	}
	if ((v = calloc(cnt + 1, sizeof(*v))) == NULL) {
		yf_error(yf, n, key, "out of memory");
		goto out;
	}
	for (i = 0; i < cnt; i++) {
		yaml_node_t *item = n->type == YAML_SCALAR_NODE ? n : yf_seq_item(yf, n, (int)i);

		if (yf_path(yf, item, key, &v[i]) != 0)
			goto out;
	}
	*out = v;
	*count = cnt;
	v = NULL;
	r = 0;
out:
	yf_strv_free(v);
	return r;
}

int yf_load(struct yfile *yf, const char *path, char *err, size_t errlen)
{
	yaml_parser_t parser;
	yaml_document_t extra;
	yaml_node_t *root;
	unsigned char *buf = NULL;
	size_t len = 0;
	int parser_ok = 0, r = -1;

	memset(yf, 0, sizeof(*yf));
	yf->path = path;
	yf->err = err;
	yf->errlen = errlen;
	if (err != NULL && errlen > 0)
		err[0] = '\0';

	if (set_dir(yf, path) != 0) {
		yf_error_line(yf, 0, "cannot find the directory of the file");
		goto out;
	}
	if (read_file(yf, &buf, &len) != 0)
		goto out;
	if (!yaml_parser_initialize(&parser)) {
		yf_error_line(yf, 0, "cannot initialise the YAML parser");
		goto out;
	}
	parser_ok = 1;
	yaml_parser_set_input_string(&parser, buf, len);

	/* On failure yaml_parser_load() frees the document itself. */
	if (!yaml_parser_load(&parser, &yf->doc)) {
		parser_error(yf, &parser);
		goto out;
	}
	yf->loaded = 1;
	root = yaml_document_get_root_node(&yf->doc);
	if (root == NULL) {
		yf_error_line(yf, 1, "empty file: expected a mapping of settings");
		goto out;
	}
	/* A second document would be silently ignored: refuse it. */
	if (!yaml_parser_load(&parser, &extra)) {
		parser_error(yf, &parser);
		goto out;
	}
	if (yaml_document_get_root_node(&extra) != NULL) {
		yf_error(yf, yaml_document_get_root_node(&extra), NULL,
		         "more than one YAML document in the file");
		yaml_document_delete(&extra);
		goto out;
	}
	yaml_document_delete(&extra);
	if (root->type != YAML_MAPPING_NODE) {
		yf_error(yf, root, NULL, "the top level must be a mapping of settings");
		goto out;
	}
	r = 0;
out:
	if (parser_ok)
		yaml_parser_delete(&parser);
	free(buf);
	if (r != 0 && yf->loaded) {
		yaml_document_delete(&yf->doc);
		yf->loaded = 0;
	}
	return r;
}

void yf_free(struct yfile *yf)
{
	if (yf == NULL)
		return;
	if (yf->loaded)
		yaml_document_delete(&yf->doc);
	yf->loaded = 0;
}

yaml_node_t *yf_root(struct yfile *yf)
{
	if (!yf->loaded)
		return NULL;
	return yaml_document_get_root_node(&yf->doc);
}

static const char *type_name(const yaml_node_t *n)
{
	switch (n->type) {
	case YAML_SCALAR_NODE:
		return "a scalar";
	case YAML_SEQUENCE_NODE:
		return "a list";
	case YAML_MAPPING_NODE:
		return "a mapping";
	default:
		return "nothing";
	}
}

/* A scalar's text, refusing embedded NUL bytes. NULL if not a usable scalar. */
static const char *scalar_text(const yaml_node_t *n)
{
	if (n == NULL || n->type != YAML_SCALAR_NODE)
		return NULL;
	if (strlen((const char *)n->data.scalar.value) != n->data.scalar.length)
		return NULL;
	return (const char *)n->data.scalar.value;
}

int yf_map_size(struct yfile *yf, yaml_node_t *node, const char *what)
{
	yaml_node_pair_t *pairs;
	yaml_node_t *k, *k2;
	const char *s;
	int n, i, j;

	if (node == NULL || node->type != YAML_MAPPING_NODE)
		return yf_error(yf, node, what, "expected a mapping, found %s",
		                node == NULL ? "nothing" : type_name(node));
	pairs = node->data.mapping.pairs.start;
	if (node->data.mapping.pairs.top - pairs > YF_MAX_PAIRS)
		return yf_error(yf, node, what, "too many keys (at most %d)", YF_MAX_PAIRS);
	n = (int)(node->data.mapping.pairs.top - pairs);
	for (i = 0; i < n; i++) {
		k = yaml_document_get_node(&yf->doc, pairs[i].key);
		s = scalar_text(k);
		if (s == NULL)
			return yf_error(yf, k != NULL ? k : node, what,
			                "keys must be plain strings");
		for (j = 0; j < i; j++) {
			k2 = yaml_document_get_node(&yf->doc, pairs[j].key);
			if (k2->data.scalar.length == k->data.scalar.length &&
			    memcmp(k2->data.scalar.value, k->data.scalar.value,
			           k->data.scalar.length) == 0)
				return yf_error(yf, k, s,
				                "duplicate key in %s (first given at line %lu)",
				                what != NULL ? what : "mapping", node_line(k2));
		}
	}
	return n;
}

void yf_pair(struct yfile *yf, yaml_node_t *map, int i, const char **key, yaml_node_t **value)
{
	yaml_node_pair_t *p;

	*key = NULL;
	*value = NULL;
	if (map == NULL || map->type != YAML_MAPPING_NODE || i < 0 ||
	    i >= map->data.mapping.pairs.top - map->data.mapping.pairs.start)
		return;
	p = &map->data.mapping.pairs.start[i];
	*key = scalar_text(yaml_document_get_node(&yf->doc, p->key));
	*value = yaml_document_get_node(&yf->doc, p->value);
}

int yf_seq_size(struct yfile *yf, yaml_node_t *node, const char *key)
{
	ptrdiff_t n;

	if (node == NULL || node->type != YAML_SEQUENCE_NODE)
		return yf_error(yf, node, key, "expected a list, found %s",
		                node == NULL ? "nothing" : type_name(node));
	n = node->data.sequence.items.top - node->data.sequence.items.start;
	if (n > YF_MAX_ITEMS)
		return yf_error(yf, node, key, "too many items (at most %d)", YF_MAX_ITEMS);
	return (int)n;
}

yaml_node_t *yf_seq_item(struct yfile *yf, yaml_node_t *seq, int i)
{
	if (seq == NULL || seq->type != YAML_SEQUENCE_NODE || i < 0 ||
	    i >= seq->data.sequence.items.top - seq->data.sequence.items.start)
		return NULL;
	return yaml_document_get_node(&yf->doc, seq->data.sequence.items.start[i]);
}

/* A plain scalar YAML reads as null. */
static int is_null(const yaml_node_t *n)
{
	const char *s = (const char *)n->data.scalar.value;

	if (n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
		return 0;
	return s[0] == '\0' || strcmp(s, "~") == 0 || strcmp(s, "null") == 0 ||
	       strcmp(s, "Null") == 0 || strcmp(s, "NULL") == 0;
}

int yf_str(struct yfile *yf, yaml_node_t *n, const char *key, const char **out)
{
	const char *s;

	*out = NULL;
	if (n == NULL || n->type != YAML_SCALAR_NODE)
		return yf_error(yf, n, key, "expected a string, found %s",
		                n == NULL ? "nothing" : type_name(n));
	s = scalar_text(n);
	if (s == NULL)
		return yf_error(yf, n, key, "NUL byte in value");
	if (is_null(n) || s[0] == '\0')
		return yf_error(yf, n, key, "missing value");
	if (n->data.scalar.length > YF_MAX_STR)
		return yf_error(yf, n, key, "value too long (at most %d bytes)", YF_MAX_STR);
	*out = s;
	return 0;
}

int yf_strdup(struct yfile *yf, yaml_node_t *n, const char *key, char **out)
{
	const char *s;

	*out = NULL;
	if (yf_str(yf, n, key, &s) != 0)
		return -1;
	*out = strdup(s);
	if (*out == NULL)
		return yf_error(yf, n, key, "out of memory");
	return 0;
}

/* Decimal digits to a number, refusing overflow. Returns the number of digits consumed, 0 if
 * none or on overflow. */
static size_t parse_digits(const char *s, uint64_t *out)
{
	uint64_t v = 0;
	size_t i;

	for (i = 0; s[i] >= '0' && s[i] <= '9'; i++) {
		if (i >= YF_MAX_DIGITS || v > (UINT64_MAX - (uint64_t)(s[i] - '0')) / 10)
			return 0;
		v = v * 10 + (uint64_t)(s[i] - '0');
	}
	*out = v;
	return i;
}

int yf_uint(struct yfile *yf, yaml_node_t *n, const char *key, uint64_t max, uint64_t *out)
{
	const char *s;
	uint64_t v;
	size_t len;

	if (yf_str(yf, n, key, &s) != 0)
		return -1;
	len = parse_digits(s, &v);
	if (len == 0 || s[len] != '\0')
		return yf_error(yf, n, key, "expected a non-negative integer, found '%s'", s);
	/* "0755" is octal to YAML 1.1 and decimal to 1.2: refuse the ambiguity. */
	if (len > 1 && s[0] == '0')
		return yf_error(yf, n, key, "leading zero in '%s' (octal or decimal?)", s);
	if (v > max)
		return yf_error(yf, n, key, "%s is too large (at most %llu)", s,
		                (unsigned long long)max);
	*out = v;
	return 0;
}

int yf_bool(struct yfile *yf, yaml_node_t *n, const char *key, int *out)
{
	static const char *const yes[] = {"true", "True", "TRUE"};
	static const char *const no[] = {"false", "False", "FALSE"};
	const char *s;
	size_t i;

	if (yf_str(yf, n, key, &s) != 0)
		return -1;
	for (i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
		if (strcmp(s, yes[i]) == 0) {
			*out = 1;
			return 0;
		}
		if (strcmp(s, no[i]) == 0) {
			*out = 0;
			return 0;
		}
	}
	return yf_error(yf, n, key, "expected true or false, found '%s'", s);
}

int yf_duration(struct yfile *yf, yaml_node_t *n, const char *key, uint64_t *seconds)
{
	const char *s;
	uint64_t v, mul = 1;
	size_t len;

	if (yf_str(yf, n, key, &s) != 0)
		return -1;
	len = parse_digits(s, &v);
	if (len == 0)
		goto bad;
	if (len > 1 && s[0] == '0')
		goto bad;
	switch (s[len]) {
	case '\0':
		break;
	case 's':
		mul = 1;
		break;
	case 'm':
		mul = 60;
		break;
	case 'h':
		mul = 3600;
		break;
	case 'd':
		mul = 86400;
		break;
	default:
		goto bad;
	}
	if (s[len] != '\0' && s[len + 1] != '\0')
		goto bad;
	if (v > UINT64_MAX / mul)
		return yf_error(yf, n, key, "duration '%s' is too large", s);
	*seconds = v * mul;
	return 0;
bad:
	return yf_error(yf, n, key,
	                "expected a duration such as 30s, 5m, 12h, 1d or plain seconds, found '%s'",
	                s);
}

void yf_strv_free(char **v)
{
	size_t i;

	if (v == NULL)
		return;
	for (i = 0; v[i] != NULL; i++)
		free(v[i]);
	free(v);
}

int yf_strv(struct yfile *yf, yaml_node_t *n, const char *key, char ***out, size_t *count)
{
	char **v = NULL;
	size_t i, cnt;
	int r = -1, sz;

	*out = NULL;
	if (count != NULL)
		*count = 0;
	if (n != NULL && n->type == YAML_SCALAR_NODE) {
		cnt = 1;
	} else {
		sz = yf_seq_size(yf, n, key);
		if (sz < 0)
			goto out;
		cnt = (size_t)sz;
	}
	v = calloc(cnt + 1, sizeof(*v));
	if (v == NULL) {
		yf_error(yf, n, key, "out of memory");
		goto out;
	}
	for (i = 0; i < cnt; i++) {
		yaml_node_t *item = n->type == YAML_SCALAR_NODE ? n : yf_seq_item(yf, n, (int)i);

		if (item == NULL || item->type != YAML_SCALAR_NODE) {
			yf_error(yf, item != NULL ? item : n, key,
			         "expected a list of strings, found %s in it",
			         item == NULL ? "nothing" : type_name(item));
			goto out;
		}
		if (yf_strdup(yf, item, key, &v[i]) != 0)
			goto out;
	}
	*out = v;
	v = NULL;
	if (count != NULL)
		*count = cnt;
	r = 0;
out:
	yf_strv_free(v);
	return r;
}
