/* The replay program: a main() for a fuzz target built without libFuzzer. It runs
 * LLVMFuzzerTestOneInput once over every file named on the command line and every regular
 * file in the directories named there (not recursively), so a corpus or a crashing input is
 * replayed by `meson test` with any compiler and any sanitizer, or none.
 *
 * usage: fuzz-TARGET-replay FILE|DIR...   exits 0 after the last input, 1 if one is unreadable */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "tests/fuzz/fuzz.h"

#define REPLAY_MAX_INPUT (4 * 1024 * 1024) /* above any target's own cap */

static int replay_file(const char *path)
{
	FILE *f = fopen(path, "rb");
	uint8_t *buf = NULL;
	size_t len;
	int r = -1;

	if (f == NULL) {
		fprintf(stderr, "%s: %s\n", path, strerror(errno));
		return -1;
	}
	/* One byte more than allowed, to tell a full read from a truncated one. */
	if ((buf = malloc(REPLAY_MAX_INPUT + 1)) == NULL) {
		fprintf(stderr, "%s: out of memory\n", path);
		goto out;
	}
	len = fread(buf, 1, REPLAY_MAX_INPUT + 1, f);
	if (ferror(f) || len > REPLAY_MAX_INPUT) {
		fprintf(stderr, "%s: cannot read, or larger than %d bytes\n", path,
		        REPLAY_MAX_INPUT);
		goto out;
	}
	fprintf(stderr, "replay %s (%zu bytes)\n", path, len);
	/* An exact-size copy, so ASan sees a read past the input's end. */
	{
		uint8_t *copy = malloc(len > 0 ? len : 1);

		if (copy == NULL) {
			fprintf(stderr, "%s: out of memory\n", path);
			goto out;
		}
		memcpy(copy, buf, len);
		LLVMFuzzerTestOneInput(copy, len);
		free(copy);
	}
	r = 0;
out:
	free(buf);
	fclose(f);
	return r;
}

static int cmp_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Every regular file directly in dir, in name order (stable runs). */
static int replay_dir(const char *dir, size_t *count)
{
	struct dirent *de;
	struct stat st;
	char **names = NULL, **grown, *path;
	size_t n = 0, cap = 0, i;
	DIR *d = opendir(dir);
	int r = 0;

	if (d == NULL) {
		fprintf(stderr, "%s: %s\n", dir, strerror(errno));
		return -1;
	}
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		if (n == cap) {
			cap = cap == 0 ? 64 : cap * 2;
			if ((grown = realloc(names, cap * sizeof(*names))) == NULL) {
				r = -1;
				break;
			}
			names = grown;
		}
		if ((names[n] = strdup(de->d_name)) == NULL) {
			r = -1;
			break;
		}
		n++;
	}
	closedir(d);
	if (r != 0)
		fprintf(stderr, "%s: out of memory\n", dir);
	if (n > 0)
		qsort(names, n, sizeof(*names), cmp_names);
	for (i = 0; i < n && r == 0; i++) {
		if (asprintf(&path, "%s/%s", dir, names[i]) < 0) {
			r = -1;
			break;
		}
		if (stat(path, &st) == 0 && S_ISREG(st.st_mode)) {
			if (replay_file(path) != 0)
				r = -1;
			else
				(*count)++;
		}
		free(path);
	}
	for (i = 0; i < n; i++)
		free(names[i]);
	free(names);
	return r;
}

int main(int argc, char **argv)
{
	struct stat st;
	size_t count = 0;
	int i, r = 0;

	if (argc < 2) {
		fprintf(stderr, "usage: %s FILE|DIR...\n", argv[0]);
		return 2;
	}
	for (i = 1; i < argc; i++) {
		if (stat(argv[i], &st) != 0) {
			fprintf(stderr, "%s: %s\n", argv[i], strerror(errno));
			r = 1;
		} else if (S_ISDIR(st.st_mode)) {
			if (replay_dir(argv[i], &count) != 0)
				r = 1;
		} else if (replay_file(argv[i]) != 0) {
			r = 1;
		} else {
			count++;
		}
	}
	fprintf(stderr, "%zu inputs replayed\n", count);
	return r;
}
