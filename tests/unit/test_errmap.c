/* The CK_RV -> enum tok_err table, error names, the module allowlist and PIN file rules. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "pkcs11/token.h"

struct rv_case {
	CK_RV rv;
	int want;
};

static const struct rv_case rv_cases[] = {
    {CKR_OK, TOK_OK},
    /* Retry later. */
    {CKR_DEVICE_REMOVED, TOK_ERR_UNAVAILABLE},
    {CKR_TOKEN_NOT_PRESENT, TOK_ERR_UNAVAILABLE},
    {CKR_DEVICE_ERROR, TOK_ERR_UNAVAILABLE},
    {CKR_DEVICE_MEMORY, TOK_ERR_UNAVAILABLE},
    {CKR_SESSION_HANDLE_INVALID, TOK_ERR_UNAVAILABLE},
    {CKR_SESSION_CLOSED, TOK_ERR_UNAVAILABLE},
    {CKR_TOKEN_NOT_RECOGNIZED, TOK_ERR_UNAVAILABLE},
    {CKR_CRYPTOKI_NOT_INITIALIZED, TOK_ERR_UNAVAILABLE},
    {CKR_USER_NOT_LOGGED_IN, TOK_ERR_UNAVAILABLE},
    /* PIN. */
    {CKR_PIN_INCORRECT, TOK_ERR_PIN},
    {CKR_PIN_LOCKED, TOK_ERR_PIN},
    {CKR_PIN_EXPIRED, TOK_ERR_PIN},
    {CKR_PIN_INVALID, TOK_ERR_PIN},
    {CKR_PIN_LEN_RANGE, TOK_ERR_PIN},
    /* The caller's data. */
    {CKR_DATA_LEN_RANGE, TOK_ERR_BAD_INPUT},
    {CKR_DATA_INVALID, TOK_ERR_BAD_INPUT},
    {CKR_ARGUMENTS_BAD, TOK_ERR_BAD_INPUT},
    {CKR_KEY_TYPE_INCONSISTENT, TOK_ERR_BAD_INPUT},
    {CKR_KEY_FUNCTION_NOT_PERMITTED, TOK_ERR_BAD_INPUT},
    /* Mechanism. */
    {CKR_MECHANISM_INVALID, TOK_ERR_MECHANISM},
    {CKR_MECHANISM_PARAM_INVALID, TOK_ERR_MECHANISM},
    /* Objects. */
    {CKR_OBJECT_HANDLE_INVALID, TOK_ERR_NOT_FOUND},
    {CKR_KEY_HANDLE_INVALID, TOK_ERR_NOT_FOUND},
    /* No session free: retry later, the token is fine. */
    {CKR_SESSION_COUNT, TOK_ERR_BUSY},
    /* Everything else is a surprise. */
    {CKR_GENERAL_ERROR, TOK_ERR_INTERNAL},
    {CKR_HOST_MEMORY, TOK_ERR_INTERNAL},
    {CKR_FUNCTION_FAILED, TOK_ERR_INTERNAL},
    {CKR_BUFFER_TOO_SMALL, TOK_ERR_INTERNAL},
    {CKR_OPERATION_ACTIVE, TOK_ERR_INTERNAL},
    {CKR_USER_ALREADY_LOGGED_IN, TOK_ERR_INTERNAL},
    {CKR_CRYPTOKI_ALREADY_INITIALIZED, TOK_ERR_INTERNAL},
    {CKR_VENDOR_DEFINED, TOK_ERR_INTERNAL},
    {CKR_VENDOR_DEFINED | 0x1234, TOK_ERR_INTERNAL},
    {(CK_RV)-1, TOK_ERR_INTERNAL},
};

static void test_rv_map(void **state)
{
	size_t i;

	for (i = 0; i < sizeof(rv_cases) / sizeof(rv_cases[0]); i++) {
		if (tok_err_from_rv(rv_cases[i].rv) != rv_cases[i].want)
			fail_msg("CK_RV 0x%lx: got %d, want %d", (unsigned long)rv_cases[i].rv,
			         tok_err_from_rv(rv_cases[i].rv), rv_cases[i].want);
	}
}

static void test_strerror(void **state)
{
	static const int special[] = {INT_MIN, INT_MIN + 1, -1000, 1000, INT_MAX};
	const char *s;
	int e;
	size_t i;

	for (e = -100; e <= 100; e++) {
		s = tok_strerror(e);
		assert_non_null(s);
		assert_true(strlen(s) > 0);
	}
	for (i = 0; i < sizeof(special) / sizeof(special[0]); i++)
		assert_non_null(tok_strerror(special[i]));
	/* Every defined code has its own name. */
	for (e = TOK_ERR_UNUSABLE; e < TOK_OK; e++) {
		assert_string_not_equal(tok_strerror(e), tok_strerror(e + 1));
		assert_string_not_equal(tok_strerror(e), tok_strerror(-1000));
	}
}

/* --- files --- */

static char base[PATH_MAX];

static void pathf(char *out, const char *name)
{
	int n = snprintf(out, PATH_MAX, "%s/%s", base, name);

	assert_true(n > 0 && n < PATH_MAX);
}

static void write_file(const char *name, const void *data, size_t len, mode_t mode)
{
	char p[PATH_MAX];
	int fd;

	pathf(p, name);
	unlink(p);
	fd = open(p, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, data, len), (ssize_t)len);
	/* fchmod, not the open mode: the umask must not decide what the test checks. */
	assert_int_equal(fchmod(fd, mode), 0);
	close(fd);
}

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
	return remove(p);
}

static int setup(void **state)
{
	const char *tmp = getenv("TMPDIR");
	int n = snprintf(base, sizeof(base), "%s/iamsign-errmap-XXXXXX", tmp ? tmp : "/tmp");

	if (n <= 0 || (size_t)n >= sizeof(base) || mkdtemp(base) == NULL)
		return -1;
	return 0;
}

static int teardown(void **state)
{
	return nftw(base, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static void test_module_allowed(void **state)
{
	char allowed[PATH_MAX], other[PATH_MAX], alias[PATH_MAX], p[PATH_MAX];
	const char *dirs[3];
	const char *alias_dirs[2];
	static const char elf[] = "\177ELF not really";

	pathf(allowed, "allowed");
	pathf(other, "other");
	pathf(alias, "alias");
	assert_int_equal(mkdir(allowed, 0755), 0);
	assert_int_equal(mkdir(other, 0755), 0);
	pathf(p, "allowed/sub");
	assert_int_equal(mkdir(p, 0755), 0);
	write_file("allowed/mod.so", elf, sizeof(elf), 0644);
	write_file("allowed/sub/deep.so", elf, sizeof(elf), 0644);
	write_file("allowed/gw.so", elf, sizeof(elf), 0664);
	write_file("other/evil.so", elf, sizeof(elf), 0644);
	pathf(p, "allowed/escape.so");
	assert_int_equal(symlink("../other/evil.so", p), 0);
	pathf(p, "allowed/inside.so");
	assert_int_equal(symlink("mod.so", p), 0);
	assert_int_equal(symlink("allowed", alias), 0);

	dirs[0] = "/nonexistent-iamsign-dir";
	dirs[1] = allowed;
	dirs[2] = NULL;

	pathf(p, "allowed/mod.so");
	assert_int_equal(tok_module_allowed(p, dirs), TOK_OK);
	/* A symlink staying inside the allowed directory resolves to an allowed file. */
	pathf(p, "allowed/inside.so");
	assert_int_equal(tok_module_allowed(p, dirs), TOK_OK);
	/* Non-canonical spellings of an allowed file. */
	pathf(p, "allowed/../allowed/./mod.so");
	assert_int_equal(tok_module_allowed(p, dirs), TOK_OK);
	pathf(p, "alias/mod.so");
	assert_int_equal(tok_module_allowed(p, dirs), TOK_OK);
	/* An allowlist entry that is itself a symlink. */
	alias_dirs[0] = alias;
	alias_dirs[1] = NULL;
	pathf(p, "allowed/mod.so");
	assert_int_equal(tok_module_allowed(p, alias_dirs), TOK_OK);

	/* Outside the list. */
	pathf(p, "other/evil.so");
	assert_int_equal(tok_module_allowed(p, dirs), TOK_ERR_MODULE);
	/* A symlink in an allowed directory pointing outside it. */
	pathf(p, "allowed/escape.so");
	assert_int_equal(tok_module_allowed(p, dirs), TOK_ERR_MODULE);
	/* ".." out of an allowed directory. */
	pathf(p, "allowed/../other/evil.so");
	assert_int_equal(tok_module_allowed(p, dirs), TOK_ERR_MODULE);
	/* Only directly inside, not in a subdirectory. */
	pathf(p, "allowed/sub/deep.so");
	assert_int_equal(tok_module_allowed(p, dirs), TOK_ERR_MODULE);
	/* Nonexistent. */
	pathf(p, "allowed/missing.so");
	assert_int_equal(tok_module_allowed(p, dirs), TOK_ERR_MODULE);
	/* Not a regular file. */
	pathf(p, "allowed/sub");
	assert_int_equal(tok_module_allowed(p, dirs), TOK_ERR_MODULE);
	/* Writable by the group. */
	pathf(p, "allowed/gw.so");
	assert_int_equal(tok_module_allowed(p, dirs), TOK_ERR_MODULE);
	/* Empty allowlist, empty or missing path. */
	dirs[0] = NULL;
	pathf(p, "allowed/mod.so");
	assert_int_equal(tok_module_allowed(p, dirs), TOK_ERR_MODULE);
	assert_int_equal(tok_module_allowed("", dirs), TOK_ERR_MODULE);
	assert_int_equal(tok_module_allowed(NULL, dirs), TOK_ERR_MODULE);
	/* NULL means the default list, which our temp directory is not in. */
	assert_int_equal(tok_module_allowed(p, NULL), TOK_ERR_MODULE);
}

static void test_default_dirs(void **state)
{
	size_t i;
	int softhsm = 0;

	for (i = 0; tok_default_dirs[i] != NULL; i++) {
		assert_int_equal(tok_default_dirs[i][0], '/');
		if (strcmp(tok_default_dirs[i], "/usr/lib/softhsm") == 0)
			softhsm = 1;
	}
	assert_true(i >= 3);
	assert_true(softhsm);
}

/* Read name; on success compare with want. */
static int pin_read(const char *name, const char *want, size_t wantlen)
{
	char p[PATH_MAX];
	char *pin = (char *)1;
	size_t len = 99;
	int r;

	pathf(p, name);
	r = tok_pin_read(p, &pin, &len);
	if (r != TOK_OK) {
		assert_null(pin);
		assert_int_equal(len, 0);
		return r;
	}
	assert_non_null(pin);
	assert_int_equal(len, wantlen);
	assert_memory_equal(pin, want, wantlen);
	/* Handed out as a C string too. */
	assert_int_equal(pin[len], '\0');
	tok_pin_free(pin, len);
	return r;
}

static void test_pin_read(void **state)
{
	char big[300];
	char p[PATH_MAX], target[PATH_MAX];

	write_file("pin-ok", "123456\n", 7, 0600);
	assert_int_equal(pin_read("pin-ok", "123456", 6), TOK_OK);
	write_file("pin-nonl", "123456", 6, 0400);
	assert_int_equal(pin_read("pin-nonl", "123456", 6), TOK_OK);
	/* One newline stripped, not all of them. */
	write_file("pin-2nl", "abc\n\n", 5, 0600);
	assert_int_equal(pin_read("pin-2nl", "abc\n", 4), TOK_OK);

	write_file("pin-0640", "123456\n", 7, 0640);
	assert_int_equal(pin_read("pin-0640", NULL, 0), TOK_ERR_PIN);
	write_file("pin-0604", "123456\n", 7, 0604);
	assert_int_equal(pin_read("pin-0604", NULL, 0), TOK_ERR_PIN);
	write_file("pin-0620", "123456\n", 7, 0620);
	assert_int_equal(pin_read("pin-0620", NULL, 0), TOK_ERR_PIN);
	write_file("pin-0601", "123456\n", 7, 0601);
	assert_int_equal(pin_read("pin-0601", NULL, 0), TOK_ERR_PIN);

	write_file("pin-empty", "", 0, 0600);
	assert_int_equal(pin_read("pin-empty", NULL, 0), TOK_ERR_PIN);
	write_file("pin-nl", "\n", 1, 0600);
	assert_int_equal(pin_read("pin-nl", NULL, 0), TOK_ERR_PIN);

	memset(big, '7', sizeof(big));
	write_file("pin-300", big, 300, 0600);
	assert_int_equal(pin_read("pin-300", NULL, 0), TOK_ERR_PIN);
	write_file("pin-257", big, 257, 0600);
	assert_int_equal(pin_read("pin-257", NULL, 0), TOK_ERR_PIN);
	write_file("pin-256", big, 256, 0600);
	assert_int_equal(pin_read("pin-256", big, 256), TOK_OK);
	big[256] = '\n';
	write_file("pin-256nl", big, 257, 0600);
	assert_int_equal(pin_read("pin-256nl", big, 256), TOK_OK);

	write_file("pin-nul",
	           "12\0"
	           "456\n",
	           7, 0600);
	assert_int_equal(pin_read("pin-nul", NULL, 0), TOK_ERR_PIN);

	/* A symlink is refused even to a good file. */
	pathf(p, "pin-link");
	pathf(target, "pin-ok");
	assert_int_equal(symlink(target, p), 0);
	assert_int_equal(pin_read("pin-link", NULL, 0), TOK_ERR_PIN);
	assert_int_equal(pin_read("pin-missing", NULL, 0), TOK_ERR_PIN);
	pathf(p, "pin-dir");
	assert_int_equal(mkdir(p, 0700), 0);
	assert_int_equal(pin_read("pin-dir", NULL, 0), TOK_ERR_PIN);

	tok_pin_free(NULL, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_rv_map),       cmocka_unit_test(test_strerror),
	    cmocka_unit_test(test_default_dirs), cmocka_unit_test(test_module_allowed),
	    cmocka_unit_test(test_pin_read),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
