/* Unit tests: iamsignd.yaml loading (signer/config.c) and the YAML layer beneath it. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "signer/config.h"
#include "policy/algs.h"
#include "policy/policy.h"
#include "policy/yamlfile.h"

#include "fixtures.h"

static char err[1024];

/* The fixtures these tests load, copied with mode 0600 by fixtures_setup(). */
static const char *const fixtures[] = {
    "config-bad-mode.yaml", "config-bad-threads.yaml",     "config-duplicate.yaml",
    "config-good.yaml",     "config-list-for-scalar.yaml", "config-malformed.yaml",
    "config-minimal.yaml",  "config-missing-uri.yaml",     "config-unknown-key.yaml",
    "policy-good.yaml",
};

/* Write text to a fresh file in a private directory; returns its path. */
static const char *write_tmp(const char *text, mode_t mode)
{
	return write_tmp_mode(text, mode);
}

static int setup(void **state)
{
	return fixtures_setup("test-config", "iamsignd.yaml", fixtures,
	                      sizeof(fixtures) / sizeof(fixtures[0]));
}

static int teardown(void **state)
{
	return fixtures_teardown();
}

/* Load text expecting failure; the message must contain each of the NULL-terminated needles. */
static void expect_fail(const char *text, ...)
{
	struct config *c = (struct config *)1;
	const char *needle;
	va_list ap;

	err[0] = '\0';
	assert_int_equal(config_load(write_tmp(text, 0600), &c, err, sizeof(err)), -1);
	assert_null(c);
	va_start(ap, text);
	while ((needle = va_arg(ap, const char *)) != NULL) {
		if (strstr(err, needle) == NULL)
			fail_msg("error \"%s\" lacks \"%s\"", err, needle);
	}
	va_end(ap);
	/* Every error names the file. */
	assert_non_null(strstr(err, tmpfile_path));
}

static void expect_fixture_fail(const char *name, const char *needle1, const char *needle2)
{
	struct config *c = NULL;
	char path[PATH_MAX];

	snprintf(path, sizeof(path), "%s", fixture(name));
	err[0] = '\0';
	assert_int_equal(config_load(path, &c, err, sizeof(err)), -1);
	assert_null(c);
	if (strstr(err, path) == NULL)
		fail_msg("error \"%s\" lacks the file name", err);
	if (strstr(err, needle1) == NULL)
		fail_msg("error \"%s\" lacks \"%s\"", err, needle1);
	if (needle2 != NULL && strstr(err, needle2) == NULL)
		fail_msg("error \"%s\" lacks \"%s\"", err, needle2);
}

#define TOKEN                                                                                      \
	"token:\n"                                                                                 \
	"  module: /usr/lib/softhsm/libsofthsm2.so\n"                                              \
	"  uri: \"pkcs11:token=t\"\n"                                                              \
	"  pin_file: /etc/iamsign/user.pin\n"
#define TAIL                                                                                       \
	"state_dir: /var/lib/iamsign\n"                                                            \
	"policy: /etc/iamsign/policy.yaml\n"
#define LISTEN "listen:\n  socket: /run/iamsign/iamsign.sock\n"

static void test_good_full(void **state)
{
	struct config *c = NULL;
	char path[PATH_MAX + 96];

	snprintf(path, sizeof(path), "%s", fixture("config-good.yaml"));
	if (config_load(path, &c, err, sizeof(err)) != 0)
		fail_msg("%s", err);
	assert_string_equal(c->path, path);
	assert_string_equal(c->token_module, "/usr/lib/softhsm/libsofthsm2.so");
	assert_string_equal(c->token_uri, "pkcs11:token=iamsign-01");
	assert_string_equal(c->token_pin_file, fixture("user.pin"));
	assert_non_null(c->token_module_dirs);
	assert_string_equal(c->token_module_dirs[0], "/usr/lib/softhsm");
	assert_string_equal(c->token_module_dirs[1], "/usr/lib/x86_64-linux-gnu/pkcs11");
	assert_null(c->token_module_dirs[2]);
	assert_string_equal(c->socket_path, "/run/iamsign/iamsign.sock");
	assert_int_equal(c->socket_mode, 0640);
	assert_string_equal(c->socket_group, "iamsign-callers");
	assert_int_equal(c->threads, 8);
	assert_string_equal(c->state_dir, "/var/lib/iamsign");
	assert_string_equal(c->policy_path, fixture("policy-good.yaml"));
	assert_int_equal(c->nsad_issuers, 2);
	assert_string_equal(c->sad_issuers[0], "/etc/iamsign/sad-issuer.pem");
	assert_string_equal(c->sad_issuers[1], fixture("keys/second-issuer.pem"));
	assert_null(c->sad_issuers[2]);
	assert_string_equal(c->trust_anchors, fixture("ca.pem"));
	/* no ledger: in the fixture, so the defaults */
	assert_string_equal(c->ledger_audit_key, "pkcs11:object=iamsign-audit;type=private");
	assert_int_equal(c->ledger_checkpoint_every, 1000);
	assert_int_equal(c->ledger_checkpoint_secs, 60);
	config_free(c);
}

/* What --check does: the configuration, then the policy it names. */
static void test_good_config_names_good_policy(void **state)
{
	struct config *c = NULL;
	struct policy *p = NULL;

	assert_int_equal(config_load(fixture("config-good.yaml"), &c, err, sizeof(err)), 0);
	if (policy_load(c->policy_path, &p, err, sizeof(err)) != 0)
		fail_msg("%s", err);
	policy_free(p);
	config_free(c);
}

static void test_minimal_defaults(void **state)
{
	struct config *c = NULL;

	if (config_load(fixture("config-minimal.yaml"), &c, err, sizeof(err)) != 0)
		fail_msg("%s", err);
	assert_int_equal(c->socket_mode, 0660);
	assert_int_equal(c->threads, 16);
	assert_null(c->socket_group);
	assert_null(c->token_module_dirs);
	assert_non_null(c->sad_issuers);
	assert_null(c->sad_issuers[0]);
	assert_int_equal(c->nsad_issuers, 0);
	assert_null(c->trust_anchors);
	assert_string_equal(c->ledger_audit_key, "pkcs11:object=iamsign-audit;type=private");
	assert_int_equal(c->ledger_checkpoint_every, 1000);
	assert_int_equal(c->ledger_checkpoint_secs, 60);
	/* no limits: the safe defaults */
	assert_int_equal(c->limits.body_size, 64 * 1024);
	assert_int_equal(c->limits.header_size, 16 * 1024);
	assert_int_equal(c->limits.hashes, 64);
	assert_int_equal(c->limits.json_depth, 32);
	assert_int_equal(c->limits.connections, 512);
	assert_int_equal(c->limits.per_uid, 32);
	assert_int_equal(c->limits.read_timeout, 10);
	assert_int_equal(c->limits.idle_timeout, 30);
	config_free(c);
}

static void test_unknown_key(void **state)
{
	/* file name, line 7, the key with its section */
	expect_fixture_fail("config-unknown-key.yaml",
	                    "config-unknown-key.yaml:7: listen.mdoe:", "unknown key");
	expect_fail(TOKEN LISTEN TAIL "colour: blue\n", ":9: colour: unknown key", NULL);
	expect_fail(TOKEN "  slot: 3\n" LISTEN TAIL, ":5: token.slot: unknown key", NULL);
}

static void test_missing_required(void **state)
{
	expect_fixture_fail("config-missing-uri.yaml", ":1: token.uri: missing", NULL);
	expect_fail("token:\n  uri: \"pkcs11:\"\n  pin_file: /p\n" LISTEN TAIL,
	            "token.module: missing", NULL);
	expect_fail("token:\n  uri: \"pkcs11:\"\n  module: /m\n" LISTEN TAIL,
	            "token.pin_file: missing", NULL);
	expect_fail(TOKEN "listen:\n  mode: \"0600\"\n" TAIL, ":5: listen.socket: missing", NULL);
	expect_fail(TOKEN TAIL "listen:\n  group: g\n", ":7: listen.socket: missing", NULL);
	expect_fail(TOKEN TAIL, "listen: missing", NULL);
	expect_fail(LISTEN TAIL, "token: missing", NULL);
	expect_fail(TOKEN LISTEN "policy: /p\n", "state_dir: missing", NULL);
	expect_fail(TOKEN LISTEN "state_dir: /s\n", "policy: missing", NULL);
	/* an empty value is not a value */
	expect_fail(TOKEN LISTEN TAIL "trust_anchors:\n", ":9: trust_anchors: missing value", NULL);
	expect_fail(TOKEN LISTEN TAIL "trust_anchors: \"\"\n", "trust_anchors: missing value",
	            NULL);
}

static void test_mode(void **state)
{
	static const struct {
		const char *text;
		mode_t mode;
	} good[] = {
	    {"\"0660\"", 0660}, {"0640", 0640}, {"\"0o600\"", 0600},
	    {"660", 0660},      {"0", 0},       {"\"0777\"", 0777},
	};
	char text[512];
	struct config *c;
	size_t i;

	for (i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		snprintf(text, sizeof(text), TOKEN LISTEN "  mode: %s\n" TAIL, good[i].text);
		c = NULL;
		if (config_load(write_tmp(text, 0600), &c, err, sizeof(err)) != 0)
			fail_msg("mode %s: %s", good[i].text, err);
		assert_int_equal(c->socket_mode, good[i].mode);
		config_free(c);
	}
	expect_fixture_fail("config-bad-mode.yaml",
	                    "config-bad-mode.yaml:7: listen.mode:", "octal");
	expect_fail(TOKEN LISTEN "  mode: \"01777\"\n" TAIL, ":7: listen.mode:", "above 0777",
	            NULL);
	expect_fail(TOKEN LISTEN "  mode: rw-rw----\n" TAIL, "listen.mode", "octal", NULL);
	expect_fail(TOKEN LISTEN "  mode: 0x1b0\n" TAIL, "listen.mode", "octal", NULL);
	expect_fail(TOKEN LISTEN "  mode: -660\n" TAIL, "listen.mode", NULL);
	expect_fail(TOKEN LISTEN "  mode: [6, 6, 0]\n" TAIL, "listen.mode", "found a list", NULL);
}

static void test_threads(void **state)
{
	struct config *c = NULL;

	expect_fixture_fail("config-bad-threads.yaml",
	                    "config-bad-threads.yaml:7: listen.threads:", "too large");
	expect_fail(TOKEN LISTEN "  threads: 0\n" TAIL, ":7: listen.threads:", NULL);
	expect_fail(TOKEN LISTEN "  threads: -1\n" TAIL, "listen.threads", NULL);
	expect_fail(TOKEN LISTEN "  threads: four\n" TAIL, "listen.threads", NULL);
	expect_fail(TOKEN LISTEN "  threads: 2.5\n" TAIL, "listen.threads", NULL);
	expect_fail(TOKEN LISTEN "  threads: 99999999999999999999999\n" TAIL, "listen.threads",
	            NULL);
	assert_int_equal(
	    config_load(write_tmp(TOKEN LISTEN "  threads: 64\n" TAIL, 0600), &c, err, sizeof(err)),
	    0);
	assert_int_equal(c->threads, 64);
	config_free(c);
}

/* token.sessions: 2..65, absent 0 (the token's own limit). */
static void test_sessions(void **state)
{
	struct config *c = NULL;

	expect_fail(TOKEN "  sessions: 1\n" LISTEN TAIL, ":5: token.sessions:", "between 2 and 65",
	            NULL);
	expect_fail(TOKEN "  sessions: 0\n" LISTEN TAIL, ":5: token.sessions:", NULL);
	expect_fail(TOKEN "  sessions: 66\n" LISTEN TAIL, ":5: token.sessions:", "too large", NULL);
	expect_fail(TOKEN "  sessions: many\n" LISTEN TAIL, "token.sessions", NULL);
	expect_fail(TOKEN "  sessions: -3\n" LISTEN TAIL, "token.sessions", NULL);
	assert_int_equal(
	    config_load(write_tmp(TOKEN "  sessions: 2\n" LISTEN TAIL, 0600), &c, err, sizeof(err)),
	    0);
	assert_int_equal(c->token_sessions, 2);
	config_free(c);
	assert_int_equal(config_load(write_tmp(TOKEN LISTEN TAIL, 0600), &c, err, sizeof(err)), 0);
	assert_int_equal(c->token_sessions, 0);
	config_free(c);
}

/* user, group, listener.user, listener.group: names only, checked; the listener's default. */
static void test_users(void **state)
{
	struct config *c = NULL;

	assert_int_equal(config_load(write_tmp(TOKEN LISTEN TAIL, 0600), &c, err, sizeof(err)), 0);
	assert_null(c->user);
	assert_null(c->group);
	assert_string_equal(c->listener_user, "nobody");
	assert_null(c->listener_group);
	config_free(c);
	c = NULL;
	assert_int_equal(
	    config_load(write_tmp(TOKEN LISTEN TAIL "user: iamsign\ngroup: iamsign\n"
	                                            "listener:\n  user: iamsign-listener\n"
	                                            "  group: nogroup\n",
	                          0600),
	                &c, err, sizeof(err)),
	    0);
	assert_string_equal(c->user, "iamsign");
	assert_string_equal(c->group, "iamsign");
	assert_string_equal(c->listener_user, "iamsign-listener");
	assert_string_equal(c->listener_group, "nogroup");
	config_free(c);
	expect_fail(TOKEN LISTEN TAIL "user: \"root; rm\"\n",
	            ":9: user:", "not a user or group name", NULL);
	expect_fail(TOKEN LISTEN TAIL "group: -x\n", ":9: group:", NULL);
	expect_fail(TOKEN LISTEN TAIL "user: Admin\n", ":9: user:", NULL);
	expect_fail(TOKEN LISTEN TAIL "user: abcdefghijabcdefghijabcdefghijabc\n",
	            ":9: user:", NULL);
	expect_fail(TOKEN LISTEN TAIL "user: [a]\n", ":9: user", NULL);
	expect_fail(TOKEN LISTEN TAIL "listener:\n  user: ''\n", ":10: listener.user:", NULL);
	expect_fail(TOKEN LISTEN TAIL "listener:\n  chroot: /x\n",
	            ":10: listener.chroot:", "unknown key", NULL);
	expect_fail(TOKEN LISTEN TAIL "listener: nobody\n", ":9: listener", NULL);
}

static void test_socket_and_uri(void **state)
{
	char text[1024], longpath[200];

	expect_fail(TOKEN "listen:\n  socket: run/iamsign.sock\n" TAIL,
	            ":6: listen.socket:", "absolute", NULL);
	memset(longpath, 'a', sizeof(longpath));
	longpath[0] = '/';
	longpath[108] = '\0'; /* 108 bytes: one too many for sun_path with its NUL */
	snprintf(text, sizeof(text), TOKEN "listen:\n  socket: %s\n" TAIL, longpath);
	expect_fail(text, "listen.socket", "too long", NULL);
	expect_fail("token:\n  module: /m\n  uri: token=t\n  pin_file: /p\n" LISTEN TAIL,
	            ":3: token.uri:", "pkcs11:", NULL);
	expect_fail(TOKEN "  module_dirs: []\n" LISTEN TAIL, ":5: token.module_dirs:", NULL);
}

/* Relative paths are taken from the file's directory, even when the file itself is named by a
 * relative path. */
static void test_relative_paths(void **state)
{
	struct config *c = NULL;
	char cwd[PATH_MAX], real[PATH_MAX], want[PATH_MAX + 64];

	assert_non_null(getcwd(cwd, sizeof(cwd)));
	assert_non_null(realpath(fixdir, real));
	assert_int_equal(chdir(fixdir), 0);
	if (config_load("config-good.yaml", &c, err, sizeof(err)) != 0)
		fail_msg("%s", err);
	assert_int_equal(chdir(cwd), 0);
	snprintf(want, sizeof(want), "%s/policy-good.yaml", real);
	assert_string_equal(c->policy_path, want);
	snprintf(want, sizeof(want), "%s/user.pin", real);
	assert_string_equal(c->token_pin_file, want);
	assert_string_equal(c->path, "config-good.yaml");
	config_free(c);

	/* in a temporary file: every path-valued key */
	assert_int_equal(config_load(write_tmp("token:\n  module: lib/m.so\n  uri: \"pkcs11:\"\n"
	                                       "  pin_file: ../pin\n  module_dirs: lib\n" LISTEN
	                                       "state_dir: state\npolicy: ./policy.yaml\n"
	                                       "sad_issuers: sad.pem\ntrust_anchors: /ca.pem\n",
	                                       0600),
	                             &c, err, sizeof(err)),
	                 0);
	snprintf(want, sizeof(want), "%s/lib/m.so", tmpdir);
	assert_string_equal(c->token_module, want);
	snprintf(want, sizeof(want), "%s/../pin", tmpdir);
	assert_string_equal(c->token_pin_file, want);
	snprintf(want, sizeof(want), "%s/lib", tmpdir);
	assert_string_equal(c->token_module_dirs[0], want);
	assert_null(c->token_module_dirs[1]);
	snprintf(want, sizeof(want), "%s/state", tmpdir);
	assert_string_equal(c->state_dir, want);
	snprintf(want, sizeof(want), "%s/./policy.yaml", tmpdir);
	assert_string_equal(c->policy_path, want);
	snprintf(want, sizeof(want), "%s/sad.pem", tmpdir);
	assert_int_equal(c->nsad_issuers, 1);
	assert_string_equal(c->sad_issuers[0], want);
	assert_string_equal(c->trust_anchors, "/ca.pem");
	config_free(c);
}

static void test_malformed(void **state)
{
	/* The unterminated quote on line 3 runs on; libyaml notices at the end of input. */
	expect_fixture_fail("config-malformed.yaml", "YAML syntax error", "line 3");
	expect_fail(TOKEN " listen: [a\n", "YAML syntax error", NULL);
	expect_fail(TOKEN LISTEN TAIL "sad_issuers: [a, b\n", "YAML syntax error", "line 9", NULL);
	expect_fail("token: {module: /m\n", "YAML syntax error", NULL);
	expect_fail("", ":1:", "empty file", NULL);
	expect_fail("# only a comment\n", "empty file", NULL);
	expect_fail("- token\n- listen\n", ":1:", "top level must be a mapping", NULL);
	expect_fail("just a string\n", "top level must be a mapping", NULL);
	expect_fail(TOKEN LISTEN TAIL "---\n" TOKEN, ":10:", "more than one YAML document", NULL);
	expect_fail(TOKEN LISTEN TAIL "---\n", "more than one YAML document", NULL);
	expect_fail(TOKEN LISTEN "state_dir: \"/a\\0b\"\npolicy: /p\n", ":7: state_dir:", "NUL",
	            NULL);
}

static void test_duplicate_key(void **state)
{
	expect_fixture_fail("config-duplicate.yaml",
	                    "config-duplicate.yaml:9: state_dir:", "first given at line 7");
	expect_fail("token:\n  module: /a\n  module: /b\n", ":3: module: duplicate key", NULL);
}

static void test_wrong_types(void **state)
{
	expect_fixture_fail(
	    "config-list-for-scalar.yaml",
	    "config-list-for-scalar.yaml:5: token.pin_file:", "expected a string, found a list");
	expect_fail("token: /usr/lib/softhsm/libsofthsm2.so\n" LISTEN TAIL,
	            ":1: token:", "expected a mapping, found a scalar", NULL);
	expect_fail(TOKEN LISTEN TAIL "sad_issuers: {a: b}\n", "sad_issuers",
	            "expected a list, found a mapping", NULL);
	expect_fail(TOKEN LISTEN TAIL "sad_issuers: [[a]]\n", "sad_issuers",
	            "expected a string, found a list", NULL);
	expect_fail(TOKEN LISTEN TAIL "? [a, b]\n: c\n", "keys must be plain strings", NULL);
	expect_fail(TOKEN "listen:\n  socket: {path: /run/x}\n" TAIL,
	            ":6: listen.socket:", "expected a string, found a mapping", NULL);
}

static void test_aliases(void **state)
{
	struct config *c = NULL;

	assert_int_equal(config_load(write_tmp(TOKEN LISTEN "state_dir: &dir /var/lib/iamsign\n"
	                                                    "policy: /p.yaml\n"
	                                                    "trust_anchors: *dir\n",
	                                       0600),
	                             &c, err, sizeof(err)),
	                 0);
	assert_string_equal(c->trust_anchors, "/var/lib/iamsign");
	config_free(c);
	expect_fail(TOKEN LISTEN TAIL "trust_anchors: *nowhere\n", "YAML syntax error", NULL);
}

static void test_file_checks(void **state)
{
	struct config *c = NULL;
	char *big;
	FILE *f;

	expect_fail("", "empty", NULL);
	/* world-writable: refused before parsing */
	assert_int_equal(config_load(write_tmp(TOKEN LISTEN TAIL, 0666), &c, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "world-writable"));
	/* too large */
	big = malloc(YF_MAX_FILE + 2);
	assert_non_null(big);
	memset(big, '#', YF_MAX_FILE + 1);
	big[YF_MAX_FILE + 1] = '\0';
	write_tmp("", 0600);
	f = fopen(tmpfile_path, "w");
	assert_non_null(f);
	assert_int_equal(fputs(big, f) >= 0, 1);
	assert_int_equal(fclose(f), 0);
	free(big);
	assert_int_equal(config_load(tmpfile_path, &c, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "too large"));
	/* missing file, a directory */
	assert_int_equal(config_load(TEST_DATA "/config-none.yaml", &c, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "config-none.yaml"));
	assert_int_equal(config_load(TEST_DATA, &c, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "not a regular file"));
	assert_null(c);
}

/* The optional tsa: mapping (RFC 3161, for Ades-B-T). */
static void test_tsa(void **state)
{
	struct config *c = NULL;

	assert_int_equal(config_load(write_tmp(TOKEN LISTEN TAIL, 0600), &c, err, sizeof(err)), 0);
	assert_null(c->tsa_url);
	config_free(c);
	if (config_load(write_tmp(TOKEN LISTEN TAIL "tsa:\n"
	                                            "  url: http://tsa.example:8080/ts\n"
	                                            "  trust_anchors: /etc/iamsign/tsa-ca.pem\n"
	                                            "  hash: sha384\n"
	                                            "  timeout: 2s\n"
	                                            "  policy: 1.3.6.1.4.1.4146.2.3\n",
	                          0600),
	                &c, err, sizeof(err)) != 0)
		fail_msg("%s", err);
	assert_string_equal(c->tsa_url, "http://tsa.example:8080/ts");
	assert_string_equal(c->tsa_host, "tsa.example");
	assert_int_equal(c->tsa_port, 8080);
	assert_string_equal(c->tsa_trust_anchors, "/etc/iamsign/tsa-ca.pem");
	assert_int_equal(c->tsa_hash, HASH_SHA384);
	assert_int_equal(c->tsa_timeout, 2);
	assert_string_equal(c->tsa_policy, "1.3.6.1.4.1.4146.2.3");
	config_free(c);
	/* defaults: port 80, SHA-256, 5 s, no policy; an IPv6 literal loses its brackets */
	if (config_load(write_tmp(TOKEN LISTEN TAIL "tsa:\n  url: http://[::1]\n"
	                                            "  trust_anchors: /etc/tsa.pem\n",
	                          0600),
	                &c, err, sizeof(err)) != 0)
		fail_msg("%s", err);
	assert_string_equal(c->tsa_host, "::1");
	assert_int_equal(c->tsa_port, 80);
	assert_int_equal(c->tsa_hash, HASH_SHA256);
	assert_int_equal(c->tsa_timeout, 5);
	assert_null(c->tsa_policy);
	config_free(c);

	expect_fail(TOKEN LISTEN TAIL "tsa:\n  trust_anchors: /etc/tsa.pem\n", "tsa.url", "missing",
	            NULL);
	expect_fail(TOKEN LISTEN TAIL "tsa:\n  url: http://tsa/\n", "tsa.trust_anchors", "missing",
	            NULL);
	expect_fail(TOKEN LISTEN TAIL "tsa:\n  url: https://tsa/\n  trust_anchors: /t.pem\n",
	            ":10: tsa.url:", "plain HTTP", NULL);
	expect_fail(TOKEN LISTEN TAIL "tsa:\n  url: http://tsa:0/\n  trust_anchors: /t.pem\n",
	            "tsa.url:", "1..65535", NULL);
	expect_fail(TOKEN LISTEN TAIL "tsa:\n  url: http://tsa:99999/\n  trust_anchors: /t.pem\n",
	            "tsa.url:", "1..65535", NULL);
	expect_fail(TOKEN LISTEN TAIL "tsa:\n  url: http://user@tsa/\n  trust_anchors: /t.pem\n",
	            "tsa.url:", NULL);
	expect_fail(TOKEN LISTEN TAIL "tsa:\n  url: http://tsa?x\n  trust_anchors: /t.pem\n",
	            "tsa.url:", "after the host", NULL);
	expect_fail(TOKEN LISTEN TAIL "tsa:\n  url: http://[::1/\n  trust_anchors: /t.pem\n",
	            "tsa.url:", "IPv6", NULL);
	expect_fail(TOKEN LISTEN TAIL "tsa:\n  url: http:///x\n  trust_anchors: /t.pem\n",
	            "tsa.url:", "no host", NULL);
	expect_fail(TOKEN LISTEN TAIL "tsa:\n  url: http://t/\n  trust_anchors: /t.pem\n"
	                              "  hash: md5\n",
	            "tsa.hash:", "sha256", NULL);
	expect_fail(TOKEN LISTEN TAIL "tsa:\n  url: http://t/\n  trust_anchors: /t.pem\n"
	                              "  timeout: 61s\n",
	            "tsa.timeout:", "between 1s and 60s", NULL);
	expect_fail(TOKEN LISTEN TAIL "tsa:\n  url: http://t/\n  trust_anchors: /t.pem\n"
	                              "  policy: 1.02.3\n",
	            "tsa.policy:", "dotted OID", NULL);
	expect_fail(TOKEN LISTEN TAIL "tsa:\n  url: http://t/\n  trust_anchors: /t.pem\n"
	                              "  policy: 1\n",
	            "tsa.policy:", "dotted OID", NULL);
	expect_fail(TOKEN LISTEN TAIL "tsa:\n  url: http://t/\n  trust_anchors: /t.pem\n"
	                              "  nonce: yes\n",
	            "tsa.nonce:", "unknown key", NULL);
}

/* The optional ledger: mapping. */
static void test_ledger(void **state)
{
	struct config *c = NULL;

	if (config_load(write_tmp(TOKEN LISTEN TAIL
	                          "ledger:\n"
	                          "  audit_key: \"pkcs11:object=audit-2;type=private\"\n"
	                          "  checkpoint_every: 50\n"
	                          "  checkpoint_interval: 5m\n"
	                          "  write_timeout: 10s\n",
	                          0600),
	                &c, err, sizeof(err)) != 0)
		fail_msg("%s", err);
	assert_string_equal(c->ledger_audit_key, "pkcs11:object=audit-2;type=private");
	assert_int_equal(c->ledger_checkpoint_every, 50);
	assert_int_equal(c->ledger_checkpoint_secs, 300);
	assert_int_equal(c->ledger_write_timeout, 10);
	config_free(c);

	/* each key alone; the others keep their defaults */
	assert_int_equal(
	    config_load(write_tmp(TOKEN LISTEN TAIL "ledger:\n  checkpoint_every: 1\n", 0600), &c,
	                err, sizeof(err)),
	    0);
	assert_int_equal(c->ledger_checkpoint_every, 1);
	assert_int_equal(c->ledger_checkpoint_secs, 60);
	assert_int_equal(c->ledger_write_timeout, 2);
	assert_string_equal(c->ledger_audit_key, "pkcs11:object=iamsign-audit;type=private");
	config_free(c);
	assert_int_equal(
	    config_load(write_tmp(TOKEN LISTEN TAIL "ledger:\n  write_timeout: 1m\n", 0600), &c,
	                err, sizeof(err)),
	    0);
	assert_int_equal(c->ledger_write_timeout, 60);
	config_free(c);
	assert_int_equal(
	    config_load(write_tmp(TOKEN LISTEN TAIL "ledger:\n  checkpoint_every: 1000000\n"
	                                            "  checkpoint_interval: 1d\n",
	                          0600),
	                &c, err, sizeof(err)),
	    0);
	assert_int_equal(c->ledger_checkpoint_every, 1000000);
	assert_int_equal(c->ledger_checkpoint_secs, 86400);
	config_free(c);
	assert_int_equal(
	    config_load(write_tmp(TOKEN LISTEN TAIL "ledger:\n  checkpoint_interval: 1\n", 0600),
	                &c, err, sizeof(err)),
	    0);
	assert_int_equal(c->ledger_checkpoint_secs, 1);
	config_free(c);
	assert_int_equal(
	    config_load(write_tmp(TOKEN LISTEN TAIL "ledger: {}\n", 0600), &c, err, sizeof(err)),
	    0);
	assert_int_equal(c->ledger_checkpoint_every, 1000);
	config_free(c);

	expect_fail(TOKEN LISTEN TAIL "ledger:\n  checkpoint_every: 0\n",
	            ":10: ledger.checkpoint_every:", "between 1 and 1000000", NULL);
	expect_fail(TOKEN LISTEN TAIL "ledger:\n  checkpoint_every: 1000001\n",
	            ":10: ledger.checkpoint_every:", "too large", NULL);
	expect_fail(TOKEN LISTEN TAIL "ledger:\n  checkpoint_every: many\n",
	            "ledger.checkpoint_every:", NULL);
	expect_fail(TOKEN LISTEN TAIL "ledger:\n  checkpoint_interval: 0s\n",
	            ":10: ledger.checkpoint_interval:", "between", NULL);
	expect_fail(TOKEN LISTEN TAIL "ledger:\n  checkpoint_interval: 2d\n",
	            ":10: ledger.checkpoint_interval:", "between", NULL);
	expect_fail(TOKEN LISTEN TAIL "ledger:\n  checkpoint_interval: soon\n",
	            ":10: ledger.checkpoint_interval:", "duration", NULL);
	expect_fail(TOKEN LISTEN TAIL "ledger:\n  write_timeout: 0s\n",
	            ":10: ledger.write_timeout:", "between 1s and 60s", NULL);
	expect_fail(TOKEN LISTEN TAIL "ledger:\n  write_timeout: 61s\n",
	            ":10: ledger.write_timeout:", "between 1s and 60s", NULL);
	expect_fail(TOKEN LISTEN TAIL "ledger:\n  audit_key: iamsign-audit\n",
	            ":10: ledger.audit_key:", "pkcs11:", NULL);
	expect_fail(TOKEN LISTEN TAIL "ledger:\n  audit_key:\n",
	            "ledger.audit_key:", "missing value", NULL);
	expect_fail(TOKEN LISTEN TAIL "ledger:\n  checkpoints: 5\n",
	            ":10: ledger.checkpoints:", "unknown key in ledger", NULL);
	expect_fail(TOKEN LISTEN TAIL "ledger: pkcs11:object=x\n",
	            ":9: ledger:", "expected a mapping", NULL);
	expect_fail(TOKEN LISTEN TAIL "ledger:\n  checkpoint_every: 5\n  checkpoint_every: 6\n",
	            ":11: checkpoint_every: duplicate key", NULL);
}

/* The optional keys: mapping (wrapped keys). */
static void test_keys(void **state)
{
	struct config *c = NULL;

	(void)state;
	assert_int_equal(config_load(write_tmp(TOKEN LISTEN TAIL, 0600), &c, err, sizeof(err)), 0);
	assert_string_equal(c->keys_kek, "pkcs11:object=iamsign-kek;type=secret-key");
	assert_int_equal(c->keys_cache, 10000);
	config_free(c);
	assert_int_equal(config_load(write_tmp(TOKEN LISTEN TAIL "keys:\n  kek: "
	                                                         "\"pkcs11:object=kek-2\"\n"
	                                                         "  cache: 2\n",
	                                       0600),
	                             &c, err, sizeof(err)),
	                 0);
	assert_string_equal(c->keys_kek, "pkcs11:object=kek-2");
	assert_int_equal(c->keys_cache, 2);
	config_free(c);
	expect_fail(TOKEN LISTEN TAIL "keys:\n  cache: 1\n", ":10: keys.cache:", "between 2 and",
	            NULL);
	expect_fail(TOKEN LISTEN TAIL "keys:\n  cache: 1000001\n", ":10: keys.cache:", "too large",
	            NULL);
	expect_fail(TOKEN LISTEN TAIL "keys:\n  kek: iamsign-kek\n",
	            ":10: keys.kek:", "pkcs11:", NULL);
	expect_fail(TOKEN LISTEN TAIL "keys:\n  wrap: yes\n",
	            ":10: keys.wrap:", "unknown key in keys", NULL);
}

static struct config *load_ok(const char *text)
{
	struct config *c = NULL;

	if (config_load(write_tmp(text, 0600), &c, err, sizeof(err)) != 0)
		fail_msg("%s", err);
	return c;
}

static void test_limits(void **state)
{
	struct config *c;

	c = load_ok(TOKEN LISTEN TAIL "limits:\n"
	                              "  body_size: 32KiB\n"
	                              "  header_size: 8192\n"
	                              "  hashes: 8\n"
	                              "  json_depth: 10\n"
	                              "  connections: 100\n"
	                              "  connections_per_uid: 10\n"
	                              "  read_timeout: 5s\n"
	                              "  idle_timeout: 1m\n");
	assert_int_equal(c->limits.body_size, 32 * 1024);
	assert_int_equal(c->limits.header_size, 8192);
	assert_int_equal(c->limits.hashes, 8);
	assert_int_equal(c->limits.json_depth, 10);
	assert_int_equal(c->limits.connections, 100);
	assert_int_equal(c->limits.per_uid, 10);
	assert_int_equal(c->limits.read_timeout, 5);
	assert_int_equal(c->limits.idle_timeout, 60);
	config_free(c);

	/* each key alone; the others keep their defaults */
	c = load_ok(TOKEN LISTEN TAIL "limits:\n  body_size: 1MiB\n");
	assert_int_equal(c->limits.body_size, 1024 * 1024);
	assert_int_equal(c->limits.header_size, 16 * 1024);
	assert_int_equal(c->limits.hashes, 64);
	assert_int_equal(c->limits.per_uid, 32);
	config_free(c);
	c = load_ok(TOKEN LISTEN TAIL "limits:\n  header_size: 1KiB\n  hashes: 1\n"
	                              "  json_depth: 4\n  read_timeout: 1\n"
	                              "  idle_timeout: 1h\n");
	assert_int_equal(c->limits.header_size, 1024);
	assert_int_equal(c->limits.hashes, 1);
	assert_int_equal(c->limits.json_depth, 4);
	assert_int_equal(c->limits.read_timeout, 1);
	assert_int_equal(c->limits.idle_timeout, 3600);
	assert_int_equal(c->limits.body_size, 64 * 1024);
	config_free(c);
	c = load_ok(TOKEN LISTEN TAIL "limits: {}\n");
	assert_int_equal(c->limits.connections, 512);
	config_free(c);
	/* a total below the per-uid default lowers it; an explicit one must fit */
	c = load_ok(TOKEN LISTEN TAIL "limits:\n  connections: 8\n");
	assert_int_equal(c->limits.connections, 8);
	assert_int_equal(c->limits.per_uid, 8);
	config_free(c);
	c = load_ok(TOKEN LISTEN TAIL "limits:\n  connections_per_uid: 512\n"
	                              "  connections: 10000\n");
	assert_int_equal(c->limits.per_uid, 512);
	assert_int_equal(c->limits.connections, 10000);
	config_free(c);

	expect_fail(TOKEN LISTEN TAIL "limits:\n  connections: 8\n  connections_per_uid: 9\n",
	            ":11: limits.connections_per_uid:", "more than limits.connections", NULL);
	/* sizes */
	expect_fail(TOKEN LISTEN TAIL "limits:\n  body_size: 1023\n",
	            ":10: limits.body_size:", "between 1024 and 1048576", NULL);
	expect_fail(TOKEN LISTEN TAIL "limits:\n  body_size: 2MiB\n",
	            ":10: limits.body_size:", "between", NULL);
	expect_fail(TOKEN LISTEN TAIL "limits:\n  header_size: 1048577\n",
	            ":10: limits.header_size:", "between", NULL);
	expect_fail(TOKEN LISTEN TAIL "limits:\n  body_size: 64kb\n", "limits.body_size:", "64KiB",
	            NULL);
	expect_fail(TOKEN LISTEN TAIL "limits:\n  body_size: KiB\n",
	            "limits.body_size:", "expected a size", NULL);
	expect_fail(TOKEN LISTEN TAIL "limits:\n  body_size: 064KiB\n",
	            "limits.body_size:", "expected a size", NULL);
	expect_fail(TOKEN LISTEN TAIL "limits:\n  body_size: -1\n", "limits.body_size:", NULL);
	expect_fail(TOKEN LISTEN TAIL "limits:\n  body_size: 99999999999999999999KiB\n",
	            "limits.body_size:", "too large", NULL);
	expect_fail(TOKEN LISTEN TAIL "limits:\n  body_size: [1]\n",
	            "limits.body_size:", "found a list", NULL);
	expect_fail(TOKEN LISTEN TAIL "limits:\n  body_size:\n",
	            "limits.body_size:", "missing value", NULL);
	/* counts */
	expect_fail(TOKEN LISTEN TAIL "limits:\n  hashes: 65\n", ":10: limits.hashes:", "too large",
	            NULL);
	expect_fail(TOKEN LISTEN TAIL "limits:\n  hashes: 0\n",
	            ":10: limits.hashes:", "between 1 and 64", NULL);
	expect_fail(TOKEN LISTEN TAIL "limits:\n  json_depth: 3\n",
	            ":10: limits.json_depth:", "between 4 and 1024", NULL);
	expect_fail(TOKEN LISTEN TAIL "limits:\n  json_depth: 1025\n",
	            "limits.json_depth:", "too large", NULL);
	expect_fail(TOKEN LISTEN TAIL "limits:\n  connections: 0\n",
	            "limits.connections:", "between 1 and 10000", NULL);
	expect_fail(TOKEN LISTEN TAIL "limits:\n  connections: 10001\n",
	            "limits.connections:", "too large", NULL);
	expect_fail(TOKEN LISTEN TAIL "limits:\n  connections_per_uid: 0\n",
	            "limits.connections_per_uid:", "between", NULL);
	expect_fail(TOKEN LISTEN TAIL "limits:\n  hashes: many\n",
	            "limits.hashes:", "non-negative integer", NULL);
	/* timeouts */
	expect_fail(TOKEN LISTEN TAIL "limits:\n  read_timeout: 0s\n",
	            ":10: limits.read_timeout:", "between 1s and 1h", NULL);
	expect_fail(TOKEN LISTEN TAIL "limits:\n  idle_timeout: 2h\n",
	            "limits.idle_timeout:", "between 1s and 1h", NULL);
	expect_fail(TOKEN LISTEN TAIL "limits:\n  idle_timeout: soon\n",
	            "limits.idle_timeout:", "duration", NULL);
	/* structure */
	expect_fail(TOKEN LISTEN TAIL "limits:\n  body: 1KiB\n",
	            ":10: limits.body:", "unknown key in limits", NULL);
	expect_fail(TOKEN LISTEN TAIL "limits: 64KiB\n", ":9: limits:", "expected a mapping", NULL);
	expect_fail(TOKEN LISTEN TAIL "limits:\n  hashes: 5\n  hashes: 6\n",
	            ":11: hashes: duplicate key", NULL);
}

/* Loading must fail, naming the file and saying why. */
static void expect_refused(const char *path, const char *needle)
{
	struct config *c = (struct config *)1;

	err[0] = '\0';
	assert_int_equal(config_load(path, &c, err, sizeof(err)), -1);
	assert_null(c);
	if (strstr(err, path) == NULL)
		fail_msg("error \"%s\" lacks the file name %s", err, path);
	if (strstr(err, needle) == NULL)
		fail_msg("error \"%s\" lacks \"%s\"", err, needle);
}

static void expect_loads(const char *path)
{
	struct config *c = NULL;

	if (config_load(path, &c, err, sizeof(err)) != 0)
		fail_msg("%s", err);
	config_free(c);
}

/* The configuration is a security boundary: only root or the daemon's user may be able to
 * change it. */
static void test_permissions(void **state)
{
	static const mode_t ok[] = {0600, 0640, 0644, 0400, 0444, 0700, 0755};
	static const mode_t group_w[] = {0620, 0660, 0664, 0670, 0624};
	static const mode_t world_w[] = {0602, 0606, 0646, 0666, 0777, 0642};
	char target[PATH_MAX + 32];
	const struct passwd *pw;
	const char *path;
	uid_t nobody;
	size_t i;

	for (i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
		expect_loads(write_tmp(TOKEN LISTEN TAIL, ok[i]));
	for (i = 0; i < sizeof(group_w) / sizeof(group_w[0]); i++)
		expect_refused(write_tmp(TOKEN LISTEN TAIL, group_w[i]), "group-writable");
	for (i = 0; i < sizeof(world_w) / sizeof(world_w[0]); i++)
		expect_refused(write_tmp(TOKEN LISTEN TAIL, world_w[i]), "world-writable");

	/* A symlink (itself mode 0777) is judged by the file it leads to. */
	snprintf(target, sizeof(target), "%s/target.yaml", tmpdir);
	path = write_tmp(TOKEN LISTEN TAIL, 0660);
	assert_int_equal(rename(path, target), 0);
	unlink(link_path);
	assert_int_equal(symlink(target, link_path), 0);
	expect_refused(link_path, "group-writable");
	assert_int_equal(chmod(target, 0644), 0);
	expect_loads(link_path);

	/* Owned by someone else: needs root to arrange. */
	if (geteuid() != 0) {
		print_message("skipped: a file owned by another user needs root to chown\n");
		return;
	}
	pw = getpwnam("nobody");
	nobody = pw != NULL ? pw->pw_uid : 65534;
	path = write_tmp(TOKEN LISTEN TAIL, 0644);
	assert_int_equal(chown(path, nobody, (gid_t)-1), 0);
	expect_refused(path, "owned by uid");
	/* also behind a symlink */
	assert_int_equal(chown(target, nobody, (gid_t)-1), 0);
	expect_refused(link_path, "owned by uid");
	/* root's own files are fine, whatever their group */
	assert_int_equal(chown(path, 0, 12345), 0);
	expect_loads(path);
}

/* Error text is bounded by the caller's buffer. */
static void test_small_error_buffer(void **state)
{
	struct config *c = NULL;
	char small[16];

	memset(small, 'x', sizeof(small));
	assert_int_equal(config_load(fixture("config-unknown-key.yaml"), &c, small, sizeof(small)),
	                 -1);
	assert_int_equal(strlen(small), sizeof(small) - 1);
	assert_int_equal(config_load(fixture("config-unknown-key.yaml"), &c, NULL, 0), -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_good_full),
	    cmocka_unit_test(test_good_config_names_good_policy),
	    cmocka_unit_test(test_minimal_defaults),
	    cmocka_unit_test(test_unknown_key),
	    cmocka_unit_test(test_missing_required),
	    cmocka_unit_test(test_mode),
	    cmocka_unit_test(test_threads),
	    cmocka_unit_test(test_sessions),
	    cmocka_unit_test(test_users),
	    cmocka_unit_test(test_socket_and_uri),
	    cmocka_unit_test(test_relative_paths),
	    cmocka_unit_test(test_malformed),
	    cmocka_unit_test(test_duplicate_key),
	    cmocka_unit_test(test_wrong_types),
	    cmocka_unit_test(test_aliases),
	    cmocka_unit_test(test_file_checks),
	    cmocka_unit_test(test_ledger),
	    cmocka_unit_test(test_tsa),
	    cmocka_unit_test(test_keys),
	    cmocka_unit_test(test_limits),
	    cmocka_unit_test(test_permissions),
	    cmocka_unit_test(test_small_error_buffer),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
