/* libmicrohttpd glue: socket setup, peer credentials, body limits, routing. */
#include "signer/listener/http.h"

#include <errno.h>
#include <grp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <microhttpd.h>

#include "signer/listener/csc.h"
#include "signer/wire/wire.h"

#define CSC_PREFIX "/csc/v2/"
/* MHD's per-connection memory pool holds the request line and headers, the header list, the
 * read buffer and the answer's headers: limits.header_size plus this much. */
#define HTTP_POOL_SLACK (16 * 1024)
#define HTTP_SPARE_FDS 64 /* descriptors beyond the connections: ledger, token, logs */

/* Where a connection's current request stands, for the read and idle deadlines. */
enum conn_phase {
	CONN_WAIT, /* waiting for a request line: deadline idle_timeout after open or last answer */
	CONN_READ, /* request line in: headers and body due read_timeout after it */
	CONN_BUSY, /* request complete: being served or answered (no deadline here) */
};

/* One connection: the kernel's word on the caller, taken when it opens, and its deadline. */
struct conn {
	struct peer peer;
	int has_peer; /* SO_PEERCRED worked; without it every request is refused */
	int fd;       /* MHD's socket; ours to shut down while listed in h->conns */
	int refused;  /* over limits.connections_per_uid: shut down at once */
	int shut;     /* shut down by us (deadline or refusal) */
	enum conn_phase phase;
	int64_t deadline; /* CLOCK_MONOTONIC milliseconds; for CONN_WAIT and CONN_READ */
	struct conn *prev, *next;
};

struct http_server {
	struct core_link *link;
	struct MHD_Daemon *mhd;
	struct config_limits lim;
	atomic_long in_flight;
	atomic_ulong requests, errors4, errors5;
	/* Connections and the reaper that enforces their deadlines. MHD calls the notify
	 * callback (which unlinks) before it closes a socket, so a listed fd is still MHD's
	 * open socket and shutdown() on it under mu is safe. */
	pthread_mutex_t mu;
	pthread_cond_t cv;
	pthread_t reaper;
	int reaper_started, stopping;
	struct conn *conns;
	unsigned long reaped, refused, refused_all; /* since the reaper last logged them */
	uid_t refused_uid;
	int64_t log_window;        /* libmicrohttpd's messages: start of this second */
	unsigned log_lines;        /* lines written in it */
	unsigned long log_dropped; /* lines not written, since the reaper reported */
};

/* Per request: the body collected so far. */
struct req_ctx {
	char *body;
	size_t len, cap;
};

/* CLOCK_MONOTONIC in milliseconds. */
static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The connection MHD keeps for c (NULL if none). */
static struct conn *conn_of(struct MHD_Connection *c)
{
	const union MHD_ConnectionInfo *ci =
	    MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);

	return ci != NULL ? ci->socket_context : NULL;
}

static void conn_set_phase(struct http_server *h, struct conn *k, enum conn_phase phase)
{
	if (k == NULL)
		return;
	pthread_mutex_lock(&h->mu);
	k->phase = phase;
	if (phase == CONN_WAIT)
		k->deadline = now_ms() + (int64_t)h->lim.idle_timeout * 1000;
	else if (phase == CONN_READ)
		k->deadline = now_ms() + (int64_t)h->lim.read_timeout * 1000;
	pthread_mutex_unlock(&h->mu);
}

/* "PATH: WHAT: strerror(errno)"; returns -1. */
static int fail(char *err, size_t errlen, const char *path, const char *what)
{
	snprintf(err, errlen, "%s: %s: %s", path, what, strerror(errno));
	return -1;
}

int http_bind(const struct config *cfg, char *err, size_t errlen)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	struct stat st;
	mode_t old;
	int fd = -1, probe, r;

	if (strlen(cfg->socket_path) >= sizeof(sa.sun_path)) {
		snprintf(err, errlen, "%s: socket path too long", cfg->socket_path);
		return -1;
	}
	memcpy(sa.sun_path, cfg->socket_path, strlen(cfg->socket_path) + 1);
	if (lstat(cfg->socket_path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode)) {
			snprintf(err, errlen, "%s: exists and is not a socket", cfg->socket_path);
			return -1;
		}
		if ((probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0)
			return fail(err, errlen, cfg->socket_path, "socket");
		r = connect(probe, (struct sockaddr *)&sa, sizeof(sa));
		close(probe);
		if (r == 0) {
			snprintf(err, errlen, "%s: another daemon is listening there",
			         cfg->socket_path);
			return -1;
		}
		if (errno != ECONNREFUSED)
			return fail(err, errlen, cfg->socket_path, "cannot probe existing socket");
		if (unlink(cfg->socket_path) != 0)
			return fail(err, errlen, cfg->socket_path, "cannot remove stale socket");
	}
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0)) < 0)
		return fail(err, errlen, cfg->socket_path, "socket");
	/* Created owner-only, then opened up to the configured mode once the group is right. */
	old = umask(0177);
	r = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
	umask(old);
	if (r != 0) {
		fail(err, errlen, cfg->socket_path, "bind");
		goto bad;
	}
	if (cfg->socket_group != NULL) {
		struct group gr, *g = NULL;
		char buf[4096];

		if (getgrnam_r(cfg->socket_group, &gr, buf, sizeof(buf), &g) != 0 || g == NULL) {
			snprintf(err, errlen, "listen.group: no such group: %s", cfg->socket_group);
			goto bad_unlink;
		}
		if (chown(cfg->socket_path, (uid_t)-1, g->gr_gid) != 0) {
			fail(err, errlen, cfg->socket_path, "chown");
			goto bad_unlink;
		}
	}
	if (chmod(cfg->socket_path, cfg->socket_mode) != 0) {
		fail(err, errlen, cfg->socket_path, "chmod");
		goto bad_unlink;
	}
	/* The kernel's largest backlog: a burst of callers waits in it rather than failing. */
	if (listen(fd, SOMAXCONN) != 0) {
		fail(err, errlen, cfg->socket_path, "listen");
		goto bad_unlink;
	}
	return fd;
bad_unlink:
	unlink(cfg->socket_path);
bad:
	close(fd);
	return -1;
}

/* The kernel's word on who is calling, taken once per connection; the per-uid cap is counted
 * here, over the connections open now. */
static void notify_connection(void *cls, struct MHD_Connection *c, void **socket_ctx,
                              enum MHD_ConnectionNotificationCode code)
{
	struct http_server *h = cls;
	const union MHD_ConnectionInfo *ci;
	struct conn *k = *socket_ctx, *o;
	struct ucred uc;
	socklen_t len = sizeof(uc);
	unsigned same = 0, all = 0;

	if (code == MHD_CONNECTION_NOTIFY_CLOSED) {
		if (k == NULL)
			return;
		pthread_mutex_lock(&h->mu);
		if (k->prev != NULL)
			k->prev->next = k->next;
		else
			h->conns = k->next;
		if (k->next != NULL)
			k->next->prev = k->prev;
		pthread_mutex_unlock(&h->mu);
		free(k);
		*socket_ctx = NULL;
		return;
	}
	ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
	if (ci == NULL)
		return; /* no socket context: every request on it is refused */
	if ((k = calloc(1, sizeof(*k))) == NULL) {
		shutdown(ci->connect_fd, SHUT_RDWR); /* untracked: no deadline could hold it */
		return;
	}
	k->fd = ci->connect_fd;
	if (getsockopt(k->fd, SOL_SOCKET, SO_PEERCRED, &uc, &len) == 0 && len == sizeof(uc)) {
		k->peer.pid = uc.pid;
		k->peer.uid = uc.uid;
		k->peer.gid = uc.gid;
		k->has_peer = 1;
	}
	k->phase = CONN_WAIT;
	pthread_mutex_lock(&h->mu);
	k->deadline = now_ms() + (int64_t)h->lim.idle_timeout * 1000;
	for (o = h->conns; o != NULL; o = o->next) {
		if (o->shut)
			continue;
		all++;
		if (o->has_peer && k->has_peer && o->peer.uid == k->peer.uid)
			same++;
	}
	/* Over a cap: closed before a byte is read, so the excess cannot hold a slot. The total
	 * is counted here rather than left to MHD, which splits its limit evenly over the
	 * worker threads while one thread may accept nearly every connection. */
	if (all >= h->lim.connections || (k->has_peer && same >= h->lim.per_uid)) {
		k->refused = k->shut = 1;
		shutdown(k->fd, SHUT_RDWR);
		if (all >= h->lim.connections) {
			h->refused_all++;
		} else {
			h->refused++;
			h->refused_uid = k->peer.uid;
		}
	}
	k->next = h->conns;
	if (h->conns != NULL)
		h->conns->prev = k;
	h->conns = k;
	pthread_mutex_unlock(&h->mu);
	*socket_ctx = k;
}

#define HTTP_LOG_PER_SEC 10

/* libmicrohttpd writes a line for every connection it closes on an error: at most
 * HTTP_LOG_PER_SEC of them a second reach the log, so that a flood of bad connections cannot
 * flood it; the reaper counts the rest. */
__attribute__((format(printf, 2, 0))) static void mhd_log(void *cls, const char *fmt, va_list ap)
{
	struct http_server *h = cls;
	int64_t now = now_ms();
	int emit;

	pthread_mutex_lock(&h->mu);
	if (now - h->log_window >= 1000) {
		h->log_window = now;
		h->log_lines = 0;
	}
	emit = h->log_lines < HTTP_LOG_PER_SEC;
	if (emit)
		h->log_lines++;
	else
		h->log_dropped++;
	pthread_mutex_unlock(&h->mu);
	if (emit) {
		fputs("iamsignd: libmicrohttpd: ", stderr);
		vfprintf(stderr, fmt, ap);
	}
}

/* MHD has the request line: from now on the rest of the request is due within read_timeout. */
static void *request_line(void *cls, const char *uri, struct MHD_Connection *c)
{
	conn_set_phase(cls, conn_of(c), CONN_READ);
	return NULL; /* the request context starts empty (see handle) */
}

/* Once a second: shut down connections past their deadline (a slowloris caller trickling a
 * request byte by byte resets MHD's idle timeout forever, but not this), and log in one line
 * what was closed or refused, so a flood of connections cannot flood the log. */
static void *reaper_main(void *arg)
{
	struct http_server *h = arg;
	struct timespec until;
	unsigned long reaped, refused, refused_all, dropped;
	uid_t uid;

	pthread_setname_np(pthread_self(), "http-reaper");
	pthread_mutex_lock(&h->mu);
	while (!h->stopping) {
		int64_t now = now_ms();

		for (struct conn *k = h->conns; k != NULL; k = k->next) {
			if (k->shut || k->phase == CONN_BUSY || now < k->deadline)
				continue;
			shutdown(k->fd, SHUT_RDWR);
			k->shut = 1;
			h->reaped++;
		}
		reaped = h->reaped;
		refused = h->refused;
		refused_all = h->refused_all;
		uid = h->refused_uid;
		dropped = h->log_dropped;
		h->reaped = h->refused = h->refused_all = h->log_dropped = 0;
		if (dropped > 0)
			fprintf(stderr, "iamsignd: %lu more libmicrohttpd message(s) not logged\n",
			        dropped);
		if (reaped > 0)
			fprintf(
			    stderr,
			    "iamsignd: closed %lu connection(s) whose request did not arrive in "
			    "time (limits.read_timeout %us, limits.idle_timeout %us)\n",
			    reaped, h->lim.read_timeout, h->lim.idle_timeout);
		if (refused > 0)
			fprintf(
			    stderr,
			    "iamsignd: refused %lu connection(s) over limits.connections_per_uid "
			    "(%u; last uid=%u)\n",
			    refused, h->lim.per_uid, (unsigned)uid);
		if (refused_all > 0)
			fprintf(
			    stderr,
			    "iamsignd: refused %lu connection(s) over limits.connections (%u)\n",
			    refused_all, h->lim.connections);
		clock_gettime(CLOCK_MONOTONIC, &until);
		until.tv_sec += 1;
		pthread_cond_timedwait(&h->cv, &h->mu, &until);
	}
	pthread_mutex_unlock(&h->mu);
	return NULL;
}

static enum MHD_Result reply(struct http_server *h, struct MHD_Connection *c, int status,
                             char *body, const char *type)
{
	struct MHD_Response *r;
	enum MHD_Result ret;

	if (status >= 500)
		atomic_fetch_add(&h->errors5, 1);
	else if (status >= 400)
		atomic_fetch_add(&h->errors4, 1);
	r = MHD_create_response_from_buffer(body != NULL ? strlen(body) : 0, body,
	                                    MHD_RESPMEM_MUST_FREE);
	if (r == NULL) {
		free(body);
		return MHD_NO;
	}
	MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
	ret = MHD_queue_response(c, (unsigned)status, r);
	MHD_destroy_response(r);
	return ret;
}

static enum MHD_Result reply_error(struct http_server *h, struct MHD_Connection *c,
                                   enum reason reason, const char *desc)
{
	struct refusal f;

	refuse(&f, reason, "%s", desc);
	return reply(h, c, csc_status(reason, NULL), csc_error_body(&f), "application/json");
}

/* The token's state and the ledger's counters from the core (neither waits on a failing token
 * or a slow disk there). */
static int core_status(struct http_server *h, struct wire_status *st)
{
	struct wire_buf b;
	struct refusal f;
	uint8_t *p = NULL;
	size_t n = 0;
	uint32_t type;
	char why[160];
	int r = -1;

	wire_buf_init(&b, WIRE_MAX_REQ);
	if (core_link_call(h->link, WIRE_REQ_STATUS, &b, -1, &type, &p, &n, &f) == 0 &&
	    type == WIRE_RESP_STATUS && wire_dec_status(p, n, st, why, sizeof(why)) == 0)
		r = 0;
	free(p);
	wire_buf_free(&b);
	return r;
}

/* The core's caches, appended to the rest. */
static char *metrics_caches(const struct wire_cache_stats *cs)
{
	char *s = NULL;

	if (asprintf(&s,
	             "# HELP iamsign_wrapped_keys_hits_total Signatures whose wrapped key was "
	             "held unwrapped.\n"
	             "# TYPE iamsign_wrapped_keys_hits_total counter\n"
	             "iamsign_wrapped_keys_hits_total %llu\n"
	             "# HELP iamsign_wrapped_keys_misses_total Wrapped keys unwrapped in the "
	             "token because they were not held.\n"
	             "# TYPE iamsign_wrapped_keys_misses_total counter\n"
	             "iamsign_wrapped_keys_misses_total %llu\n"
	             "# HELP iamsign_wrapped_keys_evictions_total Unwrapped keys destroyed to make "
	             "room (least recently used).\n"
	             "# TYPE iamsign_wrapped_keys_evictions_total counter\n"
	             "iamsign_wrapped_keys_evictions_total %llu\n"
	             "# HELP iamsign_wrapped_keys_refused_total Wrapped keys refused "
	             "(key_unusable): not bound to their credential, damaged, or of a KEK "
	             "not on the token.\n"
	             "# TYPE iamsign_wrapped_keys_refused_total counter\n"
	             "iamsign_wrapped_keys_refused_total %llu\n"
	             "# HELP iamsign_wrapped_keys_proven_again_total Misses whose registry row "
	             "was proven before, byte for byte: unwrapped without proving it again.\n"
	             "# TYPE iamsign_wrapped_keys_proven_again_total counter\n"
	             "iamsign_wrapped_keys_proven_again_total %llu\n"
	             "# HELP iamsign_wrapped_keys_held Unwrapped keys held in the token now.\n"
	             "# TYPE iamsign_wrapped_keys_held gauge\n"
	             "iamsign_wrapped_keys_held %llu\n"
	             "# HELP iamsign_wrapped_keys_capacity keys.cache: unwrapped keys held at "
	             "most.\n"
	             "# TYPE iamsign_wrapped_keys_capacity gauge\n"
	             "iamsign_wrapped_keys_capacity %llu\n"
	             "# HELP iamsign_cert_checks_hits_total Certificate checks answered from the "
	             "cache.\n"
	             "# TYPE iamsign_cert_checks_hits_total counter\n"
	             "iamsign_cert_checks_hits_total %llu\n"
	             "# HELP iamsign_cert_checks_misses_total Certificates checked in full "
	             "(chain, validity, CRL).\n"
	             "# TYPE iamsign_cert_checks_misses_total counter\n"
	             "iamsign_cert_checks_misses_total %llu\n"
	             "# HELP iamsign_cert_checks_slots Slots of the certificate check cache.\n"
	             "# TYPE iamsign_cert_checks_slots gauge\n"
	             "iamsign_cert_checks_slots %llu\n",
	             (unsigned long long)cs->key_hits, (unsigned long long)cs->key_misses,
	             (unsigned long long)cs->key_evictions, (unsigned long long)cs->key_refused,
	             (unsigned long long)cs->key_proven_again, (unsigned long long)cs->key_held,
	             (unsigned long long)cs->key_capacity, (unsigned long long)cs->cert_hits,
	             (unsigned long long)cs->cert_misses, (unsigned long long)cs->cert_slots) < 0)
		return NULL;
	return s;
}

static char *metrics_text(struct http_server *h)
{
	char *s = NULL, *caches, *all = NULL;
	struct wire_status st;
	const struct wire_token_stats *ts = &st.tok;
	const struct wire_ledger_stats *ls = &st.ledger;

	if (core_status(h, &st) != 0) {
		memset(&st, 0, sizeof(st));
		st.tok.state = -1;
	}
	if (asprintf(&s,
	             "# HELP iamsign_requests_total HTTP requests answered.\n"
	             "# TYPE iamsign_requests_total counter\n"
	             "iamsign_requests_total %lu\n"
	             "# HELP iamsign_client_errors_total Requests answered 4xx.\n"
	             "# TYPE iamsign_client_errors_total counter\n"
	             "iamsign_client_errors_total %lu\n"
	             "# HELP iamsign_server_errors_total Requests answered 5xx.\n"
	             "# TYPE iamsign_server_errors_total counter\n"
	             "iamsign_server_errors_total %lu\n"
	             "# HELP iamsign_requests_in_flight Requests being served.\n"
	             "# TYPE iamsign_requests_in_flight gauge\n"
	             "iamsign_requests_in_flight %ld\n"
	             "# HELP iamsign_token_state Token state: 0 up, 1 down (being recovered), 2 "
	             "PIN refused (no login is tried again; restart with a fixed PIN), -1 the "
	             "signing core cannot be reached.\n"
	             "# TYPE iamsign_token_state gauge\n"
	             "iamsign_token_state %d\n"
	             "# HELP iamsign_token_outages_total Times the token went down.\n"
	             "# TYPE iamsign_token_outages_total counter\n"
	             "iamsign_token_outages_total %llu\n"
	             "# HELP iamsign_token_recoveries_total Times the token came back by itself.\n"
	             "# TYPE iamsign_token_recoveries_total counter\n"
	             "iamsign_token_recoveries_total %llu\n"
	             "# HELP iamsign_token_refused_while_down_total Signatures refused at once "
	             "because the token was down.\n"
	             "# TYPE iamsign_token_refused_while_down_total counter\n"
	             "iamsign_token_refused_while_down_total %llu\n"
	             "# HELP iamsign_token_last_outage_seconds Length of the last outage that "
	             "ended.\n"
	             "# TYPE iamsign_token_last_outage_seconds gauge\n"
	             "iamsign_token_last_outage_seconds %.3f\n"
	             "# HELP iamsign_ledger_commits_total Ledger transactions committed, each with "
	             "one fsync.\n"
	             "# TYPE iamsign_ledger_commits_total counter\n"
	             "iamsign_ledger_commits_total %llu\n"
	             "# HELP iamsign_ledger_records_total Audit records committed.\n"
	             "# TYPE iamsign_ledger_records_total counter\n"
	             "iamsign_ledger_records_total %llu\n"
	             "# HELP iamsign_ledger_failed_total Records refused because the ledger could "
	             "not be written (ledger_unavailable).\n"
	             "# TYPE iamsign_ledger_failed_total counter\n"
	             "iamsign_ledger_failed_total %llu\n"
	             "# HELP iamsign_ledger_commit_seconds_total Time spent committing, the fsync "
	             "included.\n"
	             "# TYPE iamsign_ledger_commit_seconds_total counter\n"
	             "iamsign_ledger_commit_seconds_total %.6f\n"
	             "# HELP iamsign_ledger_busy_seconds How long the ledger's writer has been on "
	             "its current batch or checkpoint, 0 when idle.\n"
	             "# TYPE iamsign_ledger_busy_seconds gauge\n"
	             "iamsign_ledger_busy_seconds %.3f\n"
	             "# HELP iamsign_ledger_unrecorded_total Answers 503 ledger_unavailable given "
	             "without a record of their own, each noted later by a ledger.unrecorded "
	             "record.\n"
	             "# TYPE iamsign_ledger_unrecorded_total counter\n"
	             "iamsign_ledger_unrecorded_total %llu\n",
	             atomic_load(&h->requests), atomic_load(&h->errors4), atomic_load(&h->errors5),
	             atomic_load(&h->in_flight), ts->state, (unsigned long long)ts->downs,
	             (unsigned long long)ts->recoveries, (unsigned long long)ts->fast_failures,
	             (double)ts->last_outage_ms / 1000.0, (unsigned long long)ls->commits,
	             (unsigned long long)ls->records, (unsigned long long)ls->failed,
	             (double)ls->commit_ns / 1e9, (double)ls->busy_ms / 1000.0,
	             (unsigned long long)ls->unrecorded) < 0)
		return NULL;
	if ((caches = metrics_caches(&st.cache)) == NULL || asprintf(&all, "%s%s", s, caches) < 0)
		all = NULL;
	free(caches);
	free(s);
	return all;
}

static void log_refusal(const struct peer *p, const char *method, int status, const char *body)
{
	/* Only the status and the JSON error (code, reason, description): never request data. */
	fprintf(stderr, "iamsignd: uid=%u pid=%d %s -> %d %s\n", (unsigned)p->uid, (int)p->pid,
	        method, status, body != NULL ? body : "");
}

/* Content-Length as MHD passed it: decimal digits only; -1 if anything else. */
static long long content_length(const char *s)
{
	long long v = 0;
	size_t i;

	for (i = 0; s[i] >= '0' && s[i] <= '9'; i++) {
		if (i >= 18)
			return -1;
		v = v * 10 + (s[i] - '0');
	}
	return i == 0 || s[i] != '\0' ? -1 : v;
}

/* What the headers add up to: their size, and how often the body is framed. */
struct hdr_sum {
	size_t bytes;
	unsigned clen, te;
};

static enum MHD_Result add_header(void *cls, enum MHD_ValueKind kind, const char *key,
                                  const char *value)
{
	struct hdr_sum *sum = cls;

	sum->bytes += strlen(key) + (value != NULL ? strlen(value) : 0) + 4; /* ": " CRLF */
	if (kind == MHD_HEADER_KIND && strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH) == 0)
		sum->clen++;
	if (kind == MHD_HEADER_KIND && strcasecmp(key, MHD_HTTP_HEADER_TRANSFER_ENCODING) == 0)
		sum->te++;
	return MHD_YES;
}

/* The first call, with the request line and headers only: every cap that can be judged before
 * a byte of the body is read. Returns 0, or the status of the refusal already queued. */
static int first_call(struct http_server *h, struct MHD_Connection *c, const char *url,
                      const char *method, struct req_ctx *rc, enum MHD_Result *ret)
{
	const struct conn *k = conn_of(c);
	struct hdr_sum sum = {strlen(method) + strlen(url) + strlen("  HTTP/1.1\r\n\r\n"), 0, 0};
	const char *clen;
	long long n;

	if (k != NULL && k->refused) {
		*ret = reply_error(h, c, R_TOO_MANY_CONNECTIONS,
		                   "too many connections (limits.connections or "
		                   "limits.connections_per_uid)");
		return 503;
	}
	MHD_get_connection_values(c, MHD_HEADER_KIND | MHD_GET_ARGUMENT_KIND, add_header, &sum);
	if (sum.bytes > h->lim.header_size) {
		*ret = reply_error(h, c, R_HEADER_TOO_LARGE, "request line and headers too large");
		return 431;
	}
	/* MHD 0.9.75 takes the first of several Content-Length headers and lets
	 * Transfer-Encoding override one: a body framed two ways is refused instead. */
	if (sum.clen > 1 || (sum.clen > 0 && sum.te > 0) || sum.te > 1) {
		*ret = reply_error(h, c, R_BAD_CONTENT_LENGTH, "body length given more than once");
		return 400;
	}
	clen = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
	if (clen == NULL)
		return 0;
	if ((n = content_length(clen)) < 0) {
		*ret = reply_error(h, c, R_BAD_CONTENT_LENGTH, "malformed Content-Length");
		return 400;
	}
	if ((unsigned long long)n > h->lim.body_size) {
		*ret = reply_error(h, c, R_BODY_TOO_LARGE, "request body too large");
		return 413;
	}
	/* Announced and within the cap: one allocation for the whole body. */
	if (n > 0) {
		if ((rc->body = malloc((size_t)n + 1)) == NULL) {
			*ret = MHD_NO;
			return 500;
		}
		rc->cap = (size_t)n + 1;
	}
	return 0;
}

/* A piece of the body: kept while within limits.body_size. 0, or -1 to close the connection
 * (MHD 0.9.75 cannot queue an answer in the middle of a body: a body that outgrows the cap
 * without having announced its length, or arrives too late, gets a closed connection). */
static int body_piece(struct http_server *h, struct MHD_Connection *c, struct req_ctx *rc,
                      const char *upload, size_t n)
{
	struct conn *k = conn_of(c);
	int late = 0;

	if (k != NULL) {
		pthread_mutex_lock(&h->mu);
		late = k->phase != CONN_BUSY && now_ms() >= k->deadline;
		pthread_mutex_unlock(&h->mu);
	}
	if (late || n > h->lim.body_size - rc->len)
		return -1;
	if (rc->len + n + 1 > rc->cap) {
		size_t cap = rc->cap < 1024 ? 1024 : rc->cap;
		char *nb;

		while (cap < rc->len + n + 1)
			cap *= 2;
		if (cap > h->lim.body_size + 1)
			cap = h->lim.body_size + 1;
		if ((nb = realloc(rc->body, cap)) == NULL)
			return -1;
		rc->body = nb;
		rc->cap = cap;
	}
	memcpy(rc->body + rc->len, upload, n);
	rc->len += n;
	rc->body[rc->len] = '\0';
	return 0;
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *c, const char *url,
                              const char *method, const char *version, const char *upload,
                              size_t *upload_size, void **req_cls)
{
	struct http_server *h = cls;
	struct req_ctx *rc = *req_cls;
	const struct conn *k;
	const struct peer *p;
	enum MHD_Result ret = MHD_YES;
	char *body = NULL;
	int status;

	if (rc == NULL) {
		/* First call: headers only. Refuse what the caps refuse before reading a body. */
		if ((rc = calloc(1, sizeof(*rc))) == NULL)
			return MHD_NO;
		*req_cls = rc;
		atomic_fetch_add(&h->in_flight, 1);
		if (first_call(h, c, url, method, rc, &ret) != 0)
			conn_set_phase(h, conn_of(c), CONN_BUSY);
		return ret;
	}
	if (*upload_size != 0) {
		if (body_piece(h, c, rc, upload, *upload_size) != 0)
			return MHD_NO;
		*upload_size = 0;
		return MHD_YES;
	}

	atomic_fetch_add(&h->requests, 1);
	conn_set_phase(h, conn_of(c), CONN_BUSY);
	k = conn_of(c);
	p = k != NULL && k->has_peer ? &k->peer : NULL;
	if (p == NULL)
		return reply_error(h, c, R_UNKNOWN_CALLER, "caller identity unavailable");
	if (strcmp(method, MHD_HTTP_METHOD_GET) == 0 && strcmp(url, "/healthz") == 0) {
		struct wire_status st;

		/* Atomic loads in the core: a pulled card shows here at once, untouched. */
		if (core_status(h, &st) != 0)
			return reply(h, c, 503,
			             strdup("{\"status\":\"degraded\",\"core\":\"down\"}"),
			             "application/json");
		switch (st.tok.state) {
		case WIRE_TOKEN_UP:
			if (st.ledger.stalled)
				return reply(h, c, 503,
				             strdup("{\"status\":\"degraded\",\"token\":\"up\","
				                    "\"ledger\":\"stalled\"}"),
				             "application/json");
			return reply(h, c, 200, strdup("{\"status\":\"ok\",\"token\":\"up\"}"),
			             "application/json");
		case WIRE_TOKEN_PIN_FAILED:
			return reply(h, c, 503,
			             strdup("{\"status\":\"degraded\",\"token\":\"down\","
			                    "\"reason\":\"pin_refused\"}"),
			             "application/json");
		default:
			return reply(h, c, 503,
			             strdup("{\"status\":\"degraded\",\"token\":\"down\"}"),
			             "application/json");
		}
	}
	if (strcmp(method, MHD_HTTP_METHOD_GET) == 0 && strcmp(url, "/metrics") == 0)
		return reply(h, c, 200, metrics_text(h), "text/plain; version=0.0.4");
	if (strncmp(url, CSC_PREFIX, strlen(CSC_PREFIX)) != 0)
		return reply_error(h, c, R_UNKNOWN_METHOD, "no such path");
	if (strcmp(method, MHD_HTTP_METHOD_POST) != 0)
		return reply_error(h, c, R_METHOD_NOT_ALLOWED, "use POST for CSC methods");
	csc_handle(h->link, &h->lim, k->fd, url + strlen(CSC_PREFIX),
	           rc->body != NULL ? rc->body : "", rc->len, &status, &body);
	if (status != 200)
		log_refusal(p, url, status, body);
	return reply(h, c, status, body, "application/json");
}

static void completed(void *cls, struct MHD_Connection *c, void **req_cls,
                      enum MHD_RequestTerminationCode toe)
{
	struct http_server *h = cls;
	struct req_ctx *rc = *req_cls;

	if (rc == NULL)
		return;
	free(rc->body);
	free(rc);
	*req_cls = NULL;
	atomic_fetch_sub(&h->in_flight, 1);
	/* Answered (or abandoned): the connection may wait idle_timeout for its next request. */
	conn_set_phase(h, conn_of(c), CONN_WAIT);
}

/* Room for limits.connections sockets plus the daemon's own files: raise the soft limit towards
 * the hard one if it is short (systemd's default soft limit is 1024), and say so when even that
 * is not enough. */
static void fit_nofile(unsigned connections)
{
	struct rlimit rl;
	rlim_t want = (rlim_t)connections + HTTP_SPARE_FDS;

	if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur >= want)
		return;
	rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max >= want ? want : rl.rlim_max;
	setrlimit(RLIMIT_NOFILE, &rl);
	if (rl.rlim_cur < want)
		fprintf(stderr,
		        "iamsignd: warning: RLIMIT_NOFILE %llu is short of limits.connections (%u) "
		        "plus %d\n",
		        (unsigned long long)rl.rlim_cur, connections, HTTP_SPARE_FDS);
}

static void reaper_stop(struct http_server *h)
{
	if (!h->reaper_started)
		return;
	pthread_mutex_lock(&h->mu);
	h->stopping = 1;
	pthread_cond_signal(&h->cv);
	pthread_mutex_unlock(&h->mu);
	pthread_join(h->reaper, NULL);
	h->reaper_started = 0;
}

static void server_free(struct http_server *h)
{
	reaper_stop(h);
	pthread_cond_destroy(&h->cv);
	pthread_mutex_destroy(&h->mu);
	free(h);
}

int http_start(struct core_link *link, const struct config *cfg, int listen_fd,
               struct http_server **out, char *err, size_t errlen)
{
	struct http_server *h;
	pthread_condattr_t ca;

	if ((h = calloc(1, sizeof(*h))) == NULL) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	h->link = link;
	h->lim = cfg->limits;
	pthread_mutex_init(&h->mu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&h->cv, &ca);
	pthread_condattr_destroy(&ca);
	if (pthread_create(&h->reaper, NULL, reaper_main, h) != 0) {
		snprintf(err, errlen, "cannot start the connection reaper thread");
		server_free(h);
		return -1;
	}
	h->reaper_started = 1;
	fit_nofile(h->lim.connections);
	/* A thread per connection: a request waits for the core (the token, the ledger's
	 * commit) inside its handler, and with a pool of threads every other connection that
	 * landed on the same thread would wait behind it (the pool hands new connections to
	 * whichever thread is idle, so one thread can hold most of them). The core's
	 * concurrency is bounded by the channels (listen.threads), the threads here by
	 * limits.connections: notify_connection() closes the excess, so MHD's own limit, above
	 * it, only bounds connections that are already being closed. */
	h->mhd = MHD_start_daemon(
	    MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION | MHD_USE_POLL |
	        MHD_USE_ITC | MHD_USE_ERROR_LOG,
	    0,
	    /* The logger first: MHD logs through its default one until it has seen it. */
	    NULL, NULL, handle, h, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, h, MHD_OPTION_LISTEN_SOCKET,
	    listen_fd, MHD_OPTION_CONNECTION_LIMIT, (unsigned)h->lim.connections * 2,
	    MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)h->lim.idle_timeout,
	    MHD_OPTION_CONNECTION_MEMORY_LIMIT, h->lim.header_size + (size_t)HTTP_POOL_SLACK,
	    MHD_OPTION_URI_LOG_CALLBACK, request_line, h, MHD_OPTION_NOTIFY_CONNECTION,
	    notify_connection, h, MHD_OPTION_NOTIFY_COMPLETED, completed, h, MHD_OPTION_END);
	if (h->mhd == NULL) {
		snprintf(err, errlen, "%s: cannot start the HTTP server", cfg->socket_path);
		server_free(h);
		return -1;
	}
	*out = h;
	return 0;
}

void http_stop(struct http_server *h, int timeout_ms)
{
	struct timespec ts = {0, 10 * 1000 * 1000};
	MHD_socket listen_fd;

	if (h == NULL)
		return;
	/* No new connections; requests already received are answered before the stop. Once
	 * quiesced, the listening socket is ours to close; otherwise MHD closes it. */
	listen_fd = MHD_quiesce_daemon(h->mhd);
	for (int waited = 0; atomic_load(&h->in_flight) > 0 && waited < timeout_ms; waited += 10)
		nanosleep(&ts, NULL);
	MHD_stop_daemon(h->mhd);
	if (listen_fd != MHD_INVALID_SOCKET)
		close(listen_fd);
	server_free(h);
}
