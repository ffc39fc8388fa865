/* iamsignd: the signing daemon. The process started is the signing core; it forks the
 * listener (signer/listener/listener.c) before it opens the token or the ledger. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>

#include "signer/config.h"
#include "signer/core/core.h"
#include "signer/listener/http.h"
#include "signer/listener/listener.h"
#include "signer/core/service.h"

#define READY_MS 30000 /* the listener's start */
#define STOP_MS (LISTENER_DRAIN_MS + 5000)

static void usage(FILE *f)
{
	fprintf(f,
	        "usage: iamsignd -c FILE [--check]\n"
	        "  -c, --config FILE   configuration (iamsignd.yaml)\n"
	        "      --check         validate configuration, policy, SAD issuer keys, trust\n"
	        "                      anchors and CRLs, then exit\n"
	        "      --bench-no-fsync  benchmarks only: the ledger does not fsync, so a crash\n"
	        "                      can lose records of signatures already returned\n"
	        "  -h, --help          this text\n");
}

/* No core dumps and no ptrace by other processes of the same user: the core holds a PIN and a
 * token session. */
static void harden(void)
{
	struct rlimit rl = {0, 0};

	setrlimit(RLIMIT_CORE, &rl);
	prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
}

static int check(const char *path)
{
	struct config *cfg = NULL;
	struct svc_rules *rules = NULL;
	struct tsa_verifier *tsa = NULL;
	char err[512];
	int r = 1;

	if (config_load(path, &cfg, err, sizeof(err)) != 0 ||
	    svc_rules_load(cfg, &rules, err, sizeof(err)) != 0 ||
	    (cfg->tsa_url != NULL && tsa_verifier_load(cfg, &tsa, err, sizeof(err)) != 0)) {
		fprintf(stderr, "iamsignd: %s\n", err);
		goto out;
	}
	printf("%s: configuration and policy %s are valid\n", path, cfg->policy_path);
	r = 0;
out:
	tsa_verifier_free(tsa);
	svc_rules_free(rules);
	config_free(cfg);
	return r;
}

/* The listening socket: systemd's (socket activation), which must be listen.socket, or our
 * own. *ours is set when the socket file is ours to remove. */
static int get_socket(const struct config *cfg, int *ours, char *err, size_t errlen)
{
	int n = sd_listen_fds(1);

	*ours = 0;
	if (n < 0) {
		snprintf(err, errlen, "socket activation: %s", strerror(-n));
		return -1;
	}
	if (n == 0) {
		int fd = http_bind(cfg, err, errlen);

		*ours = fd >= 0;
		return fd;
	}
	if (n != 1 ||
	    sd_is_socket_unix(SD_LISTEN_FDS_START, SOCK_STREAM, 1, cfg->socket_path, 0) <= 0) {
		snprintf(err, errlen,
		         "socket activation: expected one listening stream socket at %s "
		         "(listen.socket), got %d descriptor(s) that are not",
		         cfg->socket_path, n);
		return -1;
	}
	return SD_LISTEN_FDS_START;
}

/* The core's user and group, before the token and the ledger are opened (so that what the
 * core creates belongs to that user) but after the PIN file, which stays root's, is read. */
static int drop_core(const struct config *cfg, char *err, size_t errlen)
{
	int r;

	if (cfg->user == NULL) {
		if (geteuid() == 0)
			fprintf(stderr, "iamsignd: warning: no user configured: the signing core "
			                "keeps running as root\n");
		return 0;
	}
	if ((r = tok_pin_preload(cfg->token_pin_file)) != TOK_OK) {
		snprintf(err, errlen, "token.pin_file %s: %s", cfg->token_pin_file,
		         tok_strerror(r));
		return -1;
	}
	return config_become_user(cfg, err, errlen);
}

/* Wait for the listener's byte saying it serves. 0, or -1 if it died or timed out. */
static int wait_ready(int fd)
{
	struct pollfd p = {.fd = fd, .events = POLLIN};
	char c;
	int r;

	do
		r = poll(&p, 1, READY_MS);
	while (r < 0 && errno == EINTR);
	return r == 1 && read(fd, &c, 1) == 1 ? 0 : -1;
}

/* Reap the listener if it has exited: 1 (with *status), else 0. */
static int reaped(pid_t pid, int *status)
{
	pid_t r;

	do
		r = waitpid(pid, status, WNOHANG);
	while (r < 0 && errno == EINTR);
	return r == pid;
}

/* Stop the listener: a byte on its stop pipe (a core running as another user may not signal
 * it), and it drains. After STOP_MS it is killed if it can be; if not, it goes when the core
 * exits (its parent-death signal). */
static void stop_listener(pid_t pid, int stop_fd)
{
	struct timespec ts = {0, 10 * 1000 * 1000};
	int status;

	if (write(stop_fd, "1", 1) != 1)
		kill(pid, SIGTERM);
	for (int waited = 0; waited < STOP_MS; waited += 10) {
		if (reaped(pid, &status))
			return;
		nanosleep(&ts, NULL);
	}
	fprintf(stderr, "iamsignd: the listener did not stop in time\n");
	if (kill(pid, SIGKILL) == 0)
		while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
			;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {{"config", required_argument, NULL, 'c'},
	                                     {"check", no_argument, NULL, 'C'},
	                                     {"bench-no-fsync", no_argument, NULL, 'N'},
	                                     {"help", no_argument, NULL, 'h'},
	                                     {NULL, 0, NULL, 0}};
	struct service svc = {0};
	struct core *core = NULL;
	struct config *cfg = NULL;
	const char *path = NULL;
	char err[512];
	sigset_t set;
	pid_t listener = -1;
	int *pairs = NULL, ready[2] = {-1, -1}, stop[2] = {-1, -1};
	int c, sig, status, do_check = 0, no_fsync = 0, r = 1, lfd = -1, ours = 0;
	unsigned nch = 0; /* channels to the core */

	while ((c = getopt_long(argc, argv, "c:h", opts, NULL)) != -1) {
		switch (c) {
		case 'c':
			path = optarg;
			break;
		case 'C':
			do_check = 1;
			break;
		case 'N':
			no_fsync = 1;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (path == NULL || optind != argc) {
		usage(stderr);
		return 2;
	}
	if (do_check)
		return check(path);
	harden();

	/* Signals are taken by sigwait in the main threads only (the listener's too, which
	 * inherits the mask); no other thread sees them. */
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	sigaddset(&set, SIGCHLD);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);

	if (config_load(path, &cfg, err, sizeof(err)) != 0) {
		fprintf(stderr, "iamsignd: %s\n", err);
		goto out;
	}
	if ((lfd = get_socket(cfg, &ours, err, sizeof(err))) < 0) {
		fprintf(stderr, "iamsignd: %s\n", err);
		goto out;
	}
	/* One channel per listener thread, and the last one kept for /healthz and /metrics so
	 * that they answer while every other channel waits on the token or the ledger: [2i] the
	 * core's end, [2i+1] the listener's. */
	nch = cfg->threads + 1;
	if ((pairs = calloc(2 * (size_t)nch, sizeof(int))) == NULL) {
		fprintf(stderr, "iamsignd: out of memory\n");
		goto out;
	}
	for (unsigned i = 0; i < 2 * nch; i++)
		pairs[i] = -1;
	for (unsigned i = 0; i < nch; i++)
		if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, &pairs[2 * i]) != 0) {
			fprintf(stderr, "iamsignd: socketpair: %s\n", strerror(errno));
			goto out;
		}
	if (pipe2(ready, O_CLOEXEC) != 0 || pipe2(stop, O_CLOEXEC) != 0) {
		fprintf(stderr, "iamsignd: pipe: %s\n", strerror(errno));
		goto out;
	}

	/* The listener leaves now, single-threaded and before anything secret is opened. */
	fflush(NULL);
	if ((listener = fork()) < 0) {
		fprintf(stderr, "iamsignd: fork: %s\n", strerror(errno));
		goto out;
	}
	if (listener == 0) {
		int *mine = pairs;

		close(ready[0]);
		close(stop[1]);
		for (unsigned i = 0; i < nch; i++) {
			close(pairs[2 * i]);
			mine[i] = pairs[2 * i + 1];
		}
		listener_main(cfg, lfd, mine, nch, ready[1], stop[0], getppid());
	}
	close(ready[1]);
	ready[1] = -1;
	close(stop[0]);
	stop[0] = -1;
	for (unsigned i = 0; i < nch; i++) {
		close(pairs[2 * i + 1]);
		pairs[i] = pairs[2 * i];
	}
	for (unsigned i = nch; i < 2 * nch; i++)
		pairs[i] = -1;
	close(lfd); /* the listener's now; the core never accepts */
	lfd = -1;

	r = drop_core(cfg, err, sizeof(err)) == 0 &&
	    svc_open(&svc, cfg, no_fsync, err, sizeof(err)) == 0;
	tok_pin_preload_clear(); /* the token keeps its own copy */
	if (!r) {
		r = 1;
		fprintf(stderr, "iamsignd: %s\n", err);
		goto out;
	}
	r = 1;
	if (core_start(&svc, cfg->socket_path, pairs, nch, &core, err, sizeof(err)) != 0) {
		free(pairs);
		pairs = NULL;
		fprintf(stderr, "iamsignd: %s\n", err);
		goto out;
	}
	free(pairs);
	pairs = NULL;
	if (wait_ready(ready[0]) != 0) {
		fprintf(stderr, "iamsignd: the listener did not start\n");
		goto out;
	}
	close(ready[0]);
	ready[0] = -1;
	if (no_fsync)
		fprintf(stderr, "iamsignd: WARNING: --bench-no-fsync: the ledger is not durable\n");
	fprintf(stderr, "iamsignd: listening on %s with %u workers (listener pid %d)\n",
	        cfg->socket_path, cfg->threads, (int)listener);
	sd_notify(0, "READY=1");
	for (;;) {
		if (sigwait(&set, &sig) != 0)
			continue;
		if (sig == SIGCHLD) {
			if (!reaped(listener, &status))
				continue;
			listener = -1;
			fprintf(stderr, "iamsignd: the listener exited (%s %d): stopping\n",
			        WIFSIGNALED(status) ? "signal" : "status",
			        WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
			goto out;
		}
		if (sig == SIGHUP) {
			sd_notify(0, "RELOADING=1");
			if (svc_reload(&svc, err, sizeof(err)) != 0)
				fprintf(stderr,
				        "iamsignd: SIGHUP: reload refused, the old policy stays in "
				        "force: %s\n",
				        err);
			else
				fprintf(stderr, "iamsignd: SIGHUP: policy, SAD issuer keys, trust "
				                "anchors and CRLs reloaded\n");
			sd_notify(0, "READY=1");
			continue;
		}
		fprintf(stderr, "iamsignd: %s: finishing requests in flight\n", strsignal(sig));
		break;
	}
	sd_notify(0, "STOPPING=1");
	/* No new connections by the path from here; the listener drains what it has. */
	if (ours && unlink(cfg->socket_path) != 0)
		fprintf(stderr,
		        "iamsignd: warning: %s: cannot remove the socket (%s); the next start "
		        "replaces it\n",
		        cfg->socket_path, strerror(errno));
	ours = 0;
	stop_listener(listener, stop[1]);
	listener = -1;
	r = 0;
out:
	if (listener > 0 && kill(listener, SIGKILL) == 0)
		while (waitpid(listener, &status, 0) < 0 && errno == EINTR)
			;
	core_join(core); /* its channels end with the listener */
	if (pairs != NULL) {
		for (unsigned i = 0; i < 2 * nch; i++)
			if (pairs[i] >= 0)
				close(pairs[i]);
		free(pairs);
	}
	if (ready[0] >= 0)
		close(ready[0]);
	if (ready[1] >= 0)
		close(ready[1]);
	for (int i = 0; i < 2; i++)
		if (stop[i] >= 0)
			close(stop[i]);
	if (lfd >= 0)
		close(lfd);
	if (ours && cfg != NULL)
		unlink(cfg->socket_path);
	svc_close(&svc);
	if (r == 0)
		fprintf(stderr, "iamsignd: stopped\n");
	config_free(cfg);
	return r;
}
