/* Shared test fixtures for the unit tests that load files: a private temporary directory holding
 * mode-0600 copies of tests/data fixtures, and a scratch file written there with a chosen mode.
 *
 * A checkout made with umask 002 leaves tests/data group-writable, which the loaders rightly
 * refuse, so each fixture is copied with mode 0600 first. Static functions: include this in one
 * test file only, after the standard headers a cmocka test needs. */
#ifndef IAMSIGN_TESTS_UNIT_FIXTURES_H
#define IAMSIGN_TESTS_UNIT_FIXTURES_H

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char tmpdir[PATH_MAX];
static char fixdir[PATH_MAX + 16]; /* private copies of tests/data, mode 0600 */
static char tmpfile_path[PATH_MAX + 32];
static char link_path[PATH_MAX + 32];
static char target_path[PATH_MAX + 32];

/* What fixtures_setup() was given, for write_tmp_mode() and fixtures_teardown(). */
static const char *fixtures_tmp_name;
static const char *const *fixtures_files;
static size_t fixtures_nfiles;

/* Path of a fixture's private copy. */
static const char *fixture(const char *name)
{
	static char path[4][PATH_MAX + 96];
	static int next;
	char *p = path[next++ % 4];

	snprintf(p, sizeof(path[0]), "%s/%s", fixdir, name);
	return p;
}

static int copy_file(const char *from, const char *to)
{
	char buf[4096];
	ssize_t got;
	int in, out, r = -1;

	in = open(from, O_RDONLY | O_CLOEXEC);
	if (in == -1)
		return -1;
	out = open(to, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (out == -1)
		goto out;
	while ((got = read(in, buf, sizeof(buf))) > 0)
		if (write(out, buf, (size_t)got) != got)
			goto out;
	if (got == 0 && fchmod(out, 0600) == 0)
		r = 0;
out:
	if (out != -1 && close(out) != 0)
		r = -1;
	close(in);
	return r;
}

/* Write text to a fresh file (the tmp_name given to fixtures_setup) in the private directory,
 * with the given mode; returns its path, which is also left in tmpfile_path. */
static const char *write_tmp_mode(const char *text, mode_t mode)
{
	FILE *f;

	snprintf(tmpfile_path, sizeof(tmpfile_path), "%s/%s", tmpdir, fixtures_tmp_name);
	unlink(tmpfile_path);
	f = fopen(tmpfile_path, "w");
	assert_non_null(f);
	assert_int_equal(fputs(text, f) >= 0, 1);
	assert_int_equal(fclose(f), 0);
	assert_int_equal(chmod(tmpfile_path, mode), 0);
	return tmpfile_path;
}

/* Make $TMPDIR/<test>-XXXXXX (its data/ holding copies of the nfiles named files from tests/data)
 * and the paths link.yaml, target.yaml and tmp_name in it; returns 0 or -1, for a cmocka group
 * setup. */
static int fixtures_setup(const char *test, const char *tmp_name, const char *const *files,
                          size_t nfiles)
{
	const char *base = getenv("TMPDIR");
	char from[PATH_MAX];
	size_t i;

	fixtures_tmp_name = tmp_name;
	fixtures_files = files;
	fixtures_nfiles = nfiles;
	snprintf(tmpdir, sizeof(tmpdir), "%s/%s-XXXXXX",
	         base != NULL && base[0] != '\0' ? base : "/tmp", test);
	if (mkdtemp(tmpdir) == NULL)
		return -1;
	snprintf(fixdir, sizeof(fixdir), "%s/data", tmpdir);
	snprintf(link_path, sizeof(link_path), "%s/link.yaml", tmpdir);
	snprintf(target_path, sizeof(target_path), "%s/target.yaml", tmpdir);
	if (mkdir(fixdir, 0700) != 0)
		return -1;
	for (i = 0; i < nfiles; i++) {
		snprintf(from, sizeof(from), "%s/%s", TEST_DATA, files[i]);
		if (copy_file(from, fixture(files[i])) != 0) {
			fprintf(stderr, "cannot copy %s: %s\n", from, strerror(errno));
			return -1;
		}
	}
	return 0;
}

/* Remove what fixtures_setup() made and the tests left there; returns 0 or -1. */
static int fixtures_teardown(void)
{
	size_t i;

	for (i = 0; i < fixtures_nfiles; i++)
		unlink(fixture(fixtures_files[i]));
	rmdir(fixdir);
	unlink(link_path);
	unlink(target_path);
	snprintf(tmpfile_path, sizeof(tmpfile_path), "%s/%s", tmpdir, fixtures_tmp_name);
	unlink(tmpfile_path);
	return rmdir(tmpdir);
}

#endif
