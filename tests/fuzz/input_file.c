/* See input_file.h. */
#include "tests/fuzz/input_file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char dir[4096];
static char path[4096 + 256];

static void remove_dir(void)
{
	unlink(path);
	rmdir(dir);
}

const char *fuzz_input_file(const char *name, const uint8_t *data, size_t size)
{
	const char *base = getenv("TMPDIR");
	size_t done = 0;
	ssize_t n;
	int fd;

	if (dir[0] == '\0') {
		snprintf(dir, sizeof(dir), "%s/iamsign-fuzz-XXXXXX",
		         base != NULL && base[0] != '\0' ? base : "/tmp");
		if (mkdtemp(dir) == NULL) {
			fprintf(stderr, "fuzz: mkdtemp %s: %s\n", dir, strerror(errno));
			abort();
		}
		snprintf(path, sizeof(path), "%s/%s", dir, name);
		atexit(remove_dir);
	}
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd == -1 || fchmod(fd, 0600) != 0) {
		fprintf(stderr, "fuzz: %s: %s\n", path, strerror(errno));
		abort();
	}
	while (done < size) {
		n = write(fd, data + done, size - done);
		if (n == -1 && errno == EINTR)
			continue;
		if (n <= 0) {
			fprintf(stderr, "fuzz: write %s: %s\n", path, strerror(errno));
			abort();
		}
		done += (size_t)n;
	}
	if (close(fd) != 0)
		abort();
	return path;
}
