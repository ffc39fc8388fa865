/* Loading the PKCS#11 module (only from allowlisted directories) and reading PIN files.
 *
 * The module runs inside the signing process with all its privileges, so which file gets
 * dlopen()ed is a security decision: the configured path is resolved, checked against the
 * allowlist, and the resolved path (not the configured one) is what gets loaded. */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <p11-kit/p11-kit.h>

#include "pkcs11/internal.h"

/* Longest PIN accepted from a file, in bytes (newline excluded). */
#define TOK_PIN_MAX 256

/* Debian multiarch triplet of the build, for the per-architecture module directories. The
 * build may pass -DTOK_MULTIARCH="..." for targets this list does not know. */
#ifndef TOK_MULTIARCH
#if defined(__x86_64__) && defined(__ILP32__)
#define TOK_MULTIARCH "x86_64-linux-gnux32"
#elif defined(__x86_64__)
#define TOK_MULTIARCH "x86_64-linux-gnu"
#elif defined(__aarch64__)
#define TOK_MULTIARCH "aarch64-linux-gnu"
#elif defined(__i386__)
#define TOK_MULTIARCH "i386-linux-gnu"
#elif defined(__arm__) && defined(__ARM_PCS_VFP)
#define TOK_MULTIARCH "arm-linux-gnueabihf"
#elif defined(__arm__)
#define TOK_MULTIARCH "arm-linux-gnueabi"
#elif defined(__powerpc64__) && defined(__LITTLE_ENDIAN__)
#define TOK_MULTIARCH "powerpc64le-linux-gnu"
#elif defined(__s390x__)
#define TOK_MULTIARCH "s390x-linux-gnu"
#elif defined(__riscv) && __riscv_xlen == 64
#define TOK_MULTIARCH "riscv64-linux-gnu"
#endif
#endif

const char *const tok_default_dirs[] = {
    "/usr/lib/softhsm",
#ifdef TOK_MULTIARCH
    "/usr/lib/" TOK_MULTIARCH "/softhsm",
    "/usr/lib/" TOK_MULTIARCH "/pkcs11",
#endif
    "/usr/lib/pkcs11",
    "/usr/local/lib/softhsm",
    NULL,
};

/* System library directories a packaged module may live in, behind a symlink that the package
 * put into an allowlisted directory: Debian ships /usr/lib/<triplet>/pkcs11/opensc-pkcs11.so as
 * a symlink to ../opensc-pkcs11.so. */
static const char *const link_target_dirs[] = {
    "/usr/lib",
#ifdef TOK_MULTIARCH
    "/usr/lib/" TOK_MULTIARCH,
#endif
    NULL,
};

/* Does the directory part of path (resolved) equal one of dirs (each resolved)? */
static int dir_in(const char *path, const char *const *dirs)
{
	char dir[PATH_MAX], rdir[PATH_MAX], rlist[PATH_MAX];
	char *slash;
	size_t i, n = strlen(path);

	if (n == 0 || n >= sizeof(dir))
		return 0;
	memcpy(dir, path, n + 1);
	slash = strrchr(dir, '/');
	if (slash == NULL)
		memcpy(dir, ".", 2);
	else if (slash == dir)
		slash[1] = '\0';
	else
		*slash = '\0';
	if (realpath(dir, rdir) == NULL)
		return 0;
	for (i = 0; dirs[i] != NULL; i++) {
		if (realpath(dirs[i], rlist) == NULL)
			continue;
		if (strcmp(rlist, rdir) == 0)
			return 1;
	}
	return 0;
}

/* Resolve module into real (PATH_MAX bytes) and check it is a regular file, not writable by
 * group or others, directly inside one of dirs (each also resolved, so a symlinked allowlist
 * entry works but a symlinked module pointing elsewhere does not), with one exception: a
 * root-owned symlink directly in an allowed directory may lead to a root-owned module directly
 * in a system library directory (link_target_dirs), as distribution packages install them. */
static int module_resolve(const char *module, const char *const *dirs, char *real)
{
	struct stat st, lst;

	if (module == NULL || *module == '\0')
		return TOK_ERR_MODULE;
	if (dirs == NULL)
		dirs = tok_default_dirs;
	if (realpath(module, real) == NULL)
		return TOK_ERR_MODULE;
	if (stat(real, &st) != 0 || !S_ISREG(st.st_mode))
		return TOK_ERR_MODULE;
	/* Code that anyone in the group can rewrite is not the code the allowlist vouched for. */
	if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0)
		return TOK_ERR_MODULE;

	if (dir_in(real, dirs))
		return TOK_OK;
	if (lstat(module, &lst) == 0 && S_ISLNK(lst.st_mode) && lst.st_uid == 0 && st.st_uid == 0 &&
	    dir_in(module, dirs) && dir_in(real, link_target_dirs))
		return TOK_OK;
	return TOK_ERR_MODULE;
}

int tok_module_allowed(const char *module, const char *const *dirs)
{
	char real[PATH_MAX];

	return module_resolve(module, dirs, real);
}

int tok_module_load(const char *module, const char *const *dirs, void **dl_out,
                    CK_FUNCTION_LIST **fl_out, int *finalize_out, char *err, size_t errlen)
{
	int r = TOK_ERR_MODULE;
	char real[PATH_MAX];
	void *dl = NULL;
	CK_C_GetFunctionList getfl;
	CK_FUNCTION_LIST *fl = NULL;
	CK_C_INITIALIZE_ARGS args;
	CK_RV rv;
	const char *msg;

	*dl_out = NULL;
	*fl_out = NULL;
	*finalize_out = 0;

	if (module_resolve(module, dirs, real) != TOK_OK) {
		tok_seterr(
		    err, errlen,
		    "PKCS#11 module %s is not a regular file directly in an allowed directory",
		    module ? module : "(none)");
		goto out;
	}
	dl = dlopen(real, RTLD_NOW | RTLD_LOCAL);
	if (dl == NULL) {
		msg = dlerror();
		tok_seterr(err, errlen, "cannot load PKCS#11 module %s: %s", real,
		           msg ? msg : "unknown error");
		goto out;
	}
	getfl = (CK_C_GetFunctionList)dlsym(dl, "C_GetFunctionList");
	if (getfl == NULL) {
		tok_seterr(err, errlen, "%s is not a PKCS#11 module (no C_GetFunctionList)", real);
		goto out;
	}
	rv = getfl(&fl);
	if (rv != CKR_OK || fl == NULL || fl->C_Initialize == NULL || fl->C_Finalize == NULL) {
		tok_seterr(err, errlen, "%s: C_GetFunctionList failed: %s", real,
		           p11_kit_strerror(rv));
		goto out;
	}

	/* The daemon signs from several threads; the module must lock with the OS primitives. */
	memset(&args, 0, sizeof(args));
	args.flags = CKF_OS_LOCKING_OK;
	rv = fl->C_Initialize(&args);
	if (rv == CKR_OK) {
		*finalize_out = 1;
	} else if (rv == CKR_CRYPTOKI_ALREADY_INITIALIZED) {
		/* Someone else in the process initialised it: share it, never finalise it. */
		*finalize_out = 0;
	} else {
		tok_seterr(err, errlen, "%s: C_Initialize failed: %s", real, p11_kit_strerror(rv));
		r = tok_err_from_rv(rv) == TOK_ERR_UNAVAILABLE ? TOK_ERR_UNAVAILABLE
		                                               : TOK_ERR_MODULE;
		goto out;
	}

	*dl_out = dl;
	*fl_out = fl;
	dl = NULL;
	r = TOK_OK;
out:
	if (dl != NULL)
		dlclose(dl);
	return r;
}

CK_RV tok_module_reinit(CK_FUNCTION_LIST *fl)
{
	CK_C_INITIALIZE_ARGS args;

	fl->C_Finalize(NULL);
	memset(&args, 0, sizeof(args));
	args.flags = CKF_OS_LOCKING_OK;
	return fl->C_Initialize(&args);
}

void tok_module_unload(void *dl, CK_FUNCTION_LIST *fl, int finalize)
{
	if (fl != NULL && finalize)
		fl->C_Finalize(NULL);
	if (dl != NULL)
		dlclose(dl);
}

/* PIN files read ahead by tok_pin_preload: path and content (secure heap). */
#define TOK_PRELOAD_MAX 2
static struct {
	char *path;
	char *pin;
	size_t len;
} preloaded[TOK_PRELOAD_MAX];
static pthread_mutex_t preload_mu = PTHREAD_MUTEX_INITIALIZER;

static int pin_read_file(const char *path, char **pin, size_t *len);

int tok_pin_read(const char *path, char **pin, size_t *len)
{
	int r = -1;

	if (path != NULL && pin != NULL && len != NULL) {
		pthread_mutex_lock(&preload_mu);
		for (size_t i = 0; i < TOK_PRELOAD_MAX && r < 0; i++) {
			if (preloaded[i].path == NULL || strcmp(preloaded[i].path, path) != 0)
				continue;
			r = TOK_ERR_INTERNAL;
			if ((*pin = OPENSSL_secure_malloc(preloaded[i].len + 1)) != NULL) {
				memcpy(*pin, preloaded[i].pin, preloaded[i].len + 1);
				*len = preloaded[i].len;
				r = TOK_OK;
			}
		}
		pthread_mutex_unlock(&preload_mu);
	}
	return r >= 0 ? r : pin_read_file(path, pin, len);
}

int tok_pin_preload(const char *path)
{
	char *pin = NULL, *copy;
	size_t len = 0, i;
	int r;

	if ((r = pin_read_file(path, &pin, &len)) != TOK_OK)
		return r;
	pthread_mutex_lock(&preload_mu);
	for (i = 0; i < TOK_PRELOAD_MAX; i++)
		if (preloaded[i].path == NULL || strcmp(preloaded[i].path, path) == 0)
			break;
	if (i == TOK_PRELOAD_MAX || (copy = strdup(path)) == NULL) {
		pthread_mutex_unlock(&preload_mu);
		tok_pin_free(pin, len);
		return TOK_ERR_INTERNAL;
	}
	free(preloaded[i].path);
	tok_pin_free(preloaded[i].pin, preloaded[i].len);
	preloaded[i].path = copy;
	preloaded[i].pin = pin;
	preloaded[i].len = len;
	pthread_mutex_unlock(&preload_mu);
	return TOK_OK;
}

void tok_pin_preload_clear(void)
{
	pthread_mutex_lock(&preload_mu);
	for (size_t i = 0; i < TOK_PRELOAD_MAX; i++) {
		free(preloaded[i].path);
		tok_pin_free(preloaded[i].pin, preloaded[i].len);
		memset(&preloaded[i], 0, sizeof(preloaded[i]));
	}
	pthread_mutex_unlock(&preload_mu);
}

static int pin_read_file(const char *path, char **pin, size_t *len)
{
	int r = TOK_ERR_PIN;
	int fd = -1;
	struct stat st;
	/* One byte for the optional newline and one to detect an oversized file. */
	unsigned char buf[TOK_PIN_MAX + 2];
	size_t n = 0;
	ssize_t k;
	char *p;

	if (pin != NULL)
		*pin = NULL;
	if (len != NULL)
		*len = 0;
	if (path == NULL || pin == NULL || len == NULL)
		return TOK_ERR_INTERNAL;

	/* O_NONBLOCK: a FIFO planted at the path must not hang the daemon in open(). */
	fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd < 0)
		goto out;
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode))
		goto out;
	if ((st.st_mode & (S_IRWXG | S_IRWXO)) != 0)
		goto out;

	while (n < sizeof(buf)) {
		k = read(fd, buf + n, sizeof(buf) - n);
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0)
			goto out;
		if (k == 0)
			break;
		n += (size_t)k;
	}
	if (n > 0 && buf[n - 1] == '\n')
		n--;
	if (n == 0 || n > TOK_PIN_MAX)
		goto out;
	/* Callers hand the PIN on as a C string (libp11 does); an embedded NUL would silently
	 * shorten it. */
	if (memchr(buf, '\0', n) != NULL)
		goto out;

	/* Secure heap when the process set one up (locked, not dumped); plain heap otherwise. */
	p = OPENSSL_secure_malloc(n + 1);
	if (p == NULL) {
		r = TOK_ERR_INTERNAL;
		goto out;
	}
	memcpy(p, buf, n);
	p[n] = '\0';
	*pin = p;
	*len = n;
	r = TOK_OK;
out:
	OPENSSL_cleanse(buf, sizeof(buf));
	if (fd >= 0)
		close(fd);
	return r;
}

void tok_pin_free(char *pin, size_t len)
{
	if (pin == NULL)
		return;
	OPENSSL_secure_clear_free(pin, len + 1);
}
