/* The listener: everything a caller sends is parsed here, in a process that has no PIN, no
 * PKCS#11 module, no ledger and, once started, no file system: its root is an empty directory
 * that no longer exists, its user is listener.user, and it cannot gain privileges again. */
#include "signer/listener/listener.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "signer/listener/http.h"
#include "signer/listener/link.h"
#include "signer/listener/tsafetch.h"

__attribute__((noreturn, format(printf, 1, 2))) static void die(const char *fmt, ...)
{
	va_list ap;

	fputs("iamsignd: listener: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	_exit(1);
}

/* What the libraries would otherwise fetch from the file system later: OpenSSL's
 * configuration and algorithms, jansson's hash seed (from /dev/urandom), the time zone. */
static void preload(void)
{
	EVP_MD *md;

	OPENSSL_init_crypto(OPENSSL_INIT_LOAD_CONFIG | OPENSSL_INIT_ADD_ALL_DIGESTS, NULL);
	if ((md = EVP_MD_fetch(NULL, "SHA256", NULL)) != NULL)
		EVP_MD_free(md);
	json_object_seed(0);
	tzset();
	curl_global_init(CURL_GLOBAL_DEFAULT);
}

/* Root into a fresh empty directory next to the socket, removed at once: nothing can be
 * created in, or reached from, a root that no longer exists. */
static void empty_root(const char *sock_path)
{
	char dir[PATH_MAX], tmpl[PATH_MAX];
	int fd;

	snprintf(dir, sizeof(dir), "%s", sock_path);
	if (snprintf(tmpl, sizeof(tmpl), "%s/.iamsign-listener.XXXXXX", dirname(dir)) >=
	    (int)sizeof(tmpl))
		die("socket directory path too long");
	if (mkdtemp(tmpl) == NULL)
		die("%s: cannot create the empty root: %s", tmpl, strerror(errno));
	if ((fd = open(tmpl, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0 || fchdir(fd) != 0) {
		rmdir(tmpl);
		die("%s: %s", tmpl, strerror(errno));
	}
	close(fd);
	if (rmdir(tmpl) != 0)
		die("%s: cannot remove: %s", tmpl, strerror(errno));
	if (chroot(".") != 0 || chdir("/") != 0)
		die("chroot: %s", strerror(errno));
}

/* listener.user and listener.group (that user's group by default), never root, once the
 * process is rooted in an empty directory. */
static void drop_to(const struct config *cfg)
{
	char err[256];
	uid_t uid;
	gid_t gid;

	if (config_lookup_user(cfg->listener_user, cfg->listener_group, "listener", &uid, &gid, err,
	                       sizeof(err)) != 0)
		die("%s", err);
	if (uid == 0)
		die("listener.user: %s is root", cfg->listener_user);
	empty_root(cfg->socket_path);
	if (config_switch_user(uid, gid, err, sizeof(err)) != 0)
		die("%s", err);
}

void listener_main(const struct config *cfg, int listen_fd, const int *chan, unsigned n,
                   int ready_fd, int stop_fd, pid_t core)
{
	struct rlimit rl = {0, 0};
	struct http_server *http = NULL;
	struct core_link *link = NULL;
	struct tsa_fetcher *tsa = NULL;
	struct pollfd p[2];
	sigset_t set;
	char err[512];

	/* Gone with the core, whatever way it goes. */
	if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) != 0 || getppid() != core)
		_exit(1);
	setrlimit(RLIMIT_CORE, &rl);
	preload();
	/* The TSA's addresses, while there is still a file system to resolve them with. */
	if (cfg->tsa_url != NULL && tsa_fetcher_new(cfg, &tsa, err, sizeof(err)) != 0)
		die("%s", err);
	if (geteuid() == 0)
		drop_to(cfg);
	else
		fprintf(stderr,
		        "iamsignd: listener: warning: not started as root: it keeps uid %u and "
		        "the file system\n",
		        (unsigned)geteuid());
	/* After the uid change, which resets both: no core dumps, no ptrace by the same user;
	 * death with the core. */
	if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0 ||
	    prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ||
	    prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) != 0)
		die("prctl: %s", strerror(errno));
	if (getppid() != core)
		_exit(1);

	if (core_link_init(chan, n, &link) != 0)
		die("out of memory");
	core_link_set_tsa(link, tsa);
	if (http_start(link, cfg, listen_fd, &http, err, sizeof(err)) != 0)
		die("%s", err);
	if (write(ready_fd, "1", 1) != 1)
		die("cannot tell the core it is serving: %s", strerror(errno));
	close(ready_fd);

	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	p[0].fd = signalfd(-1, &set, SFD_CLOEXEC);
	p[0].events = POLLIN;
	p[1].fd = stop_fd;
	p[1].events = POLLIN;
	if (p[0].fd < 0)
		die("signalfd: %s", strerror(errno));
	while (poll(p, 2, -1) <= 0)
		;
	http_stop(http, LISTENER_DRAIN_MS);
	core_link_free(link);
	tsa_fetcher_free(tsa);
	_exit(0);
}
