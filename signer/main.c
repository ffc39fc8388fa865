/* iamsignd: the signing daemon. */
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

#include "signer/config.h"
#include "signer/http.h"
#include "signer/service.h"

#define DRAIN_MS 10000

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

/* No core dumps and no ptrace by other users: the process holds a PIN and a token session. */
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
	char err[512];
	int r = 1;

	if (config_load(path, &cfg, err, sizeof(err)) != 0 ||
	    svc_rules_load(cfg, &rules, err, sizeof(err)) != 0) {
		fprintf(stderr, "iamsignd: %s\n", err);
		goto out;
	}
	printf("%s: configuration and policy %s are valid\n", path, cfg->policy_path);
	r = 0;
out:
	svc_rules_free(rules);
	config_free(cfg);
	return r;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {{"config", required_argument, NULL, 'c'},
	                                     {"check", no_argument, NULL, 'C'},
	                                     {"bench-no-fsync", no_argument, NULL, 'N'},
	                                     {"help", no_argument, NULL, 'h'},
	                                     {NULL, 0, NULL, 0}};
	struct service svc = {0};
	struct http_server *http = NULL;
	struct config *cfg = NULL;
	const char *path = NULL;
	char err[512];
	sigset_t set;
	int c, sig, do_check = 0, no_fsync = 0, r = 1;

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

	/* Signals are taken by sigwait in this thread only; the workers never see them. */
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);

	if (config_load(path, &cfg, err, sizeof(err)) != 0) {
		fprintf(stderr, "iamsignd: %s\n", err);
		goto out;
	}
	if (svc_open(&svc, cfg, no_fsync, err, sizeof(err)) != 0) {
		fprintf(stderr, "iamsignd: %s\n", err);
		goto out;
	}
	if (http_start(&svc, cfg, &http, err, sizeof(err)) != 0) {
		fprintf(stderr, "iamsignd: %s\n", err);
		goto out;
	}
	if (no_fsync)
		fprintf(stderr, "iamsignd: WARNING: --bench-no-fsync: the ledger is not durable\n");
	fprintf(stderr, "iamsignd: listening on %s with %u workers\n", cfg->socket_path,
	        cfg->threads);
	for (;;) {
		if (sigwait(&set, &sig) != 0)
			continue;
		if (sig == SIGHUP) {
			if (svc_reload(&svc, err, sizeof(err)) != 0)
				fprintf(stderr,
				        "iamsignd: SIGHUP: reload refused, the old policy stays in "
				        "force: %s\n",
				        err);
			else
				fprintf(stderr, "iamsignd: SIGHUP: policy, SAD issuer keys, trust "
				                "anchors and CRLs reloaded\n");
			continue;
		}
		fprintf(stderr, "iamsignd: %s: finishing requests in flight\n", strsignal(sig));
		break;
	}
	http_stop(http, DRAIN_MS);
	http = NULL;
	fprintf(stderr, "iamsignd: stopped\n");
	r = 0;
out:
	http_stop(http, 0);
	svc_close(&svc);
	config_free(cfg);
	return r;
}
