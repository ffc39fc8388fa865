/* libmicrohttpd glue: socket setup, peer credentials, body limits, routing. */
#include "signer/http.h"

#include <errno.h>
#include <grp.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <microhttpd.h>

#include "signer/csc.h"

#define CSC_PREFIX "/csc/v2/"
#define HTTP_MAX_CONNECTIONS 512
#define HTTP_IDLE_TIMEOUT 30 /* seconds */
#define HTTP_CONN_MEMORY (96 * 1024)

struct http_server {
	struct service *svc;
	struct MHD_Daemon *mhd;
	int fd;
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	atomic_long in_flight;
	atomic_ulong requests, errors4, errors5;
};

/* Per request: the body collected so far. */
struct req_ctx {
	char *body;
	size_t len;
	int too_large;
};

/* "PATH: WHAT: strerror(errno)"; returns -1. */
static int fail(char *err, size_t errlen, const char *path, const char *what)
{
	snprintf(err, errlen, "%s: %s: %s", path, what, strerror(errno));
	return -1;
}

/* Bind the socket path, replacing a stale socket file but never a live one. */
static int listen_socket(const struct config *cfg, char *err, size_t errlen)
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
	if (listen(fd, 128) != 0) {
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

/* The kernel's word on who is calling, taken once per connection. */
static void notify_connection(void *cls, struct MHD_Connection *c, void **socket_ctx,
                              enum MHD_ConnectionNotificationCode code)
{
	const union MHD_ConnectionInfo *ci;
	struct peer *p;
	struct ucred uc;
	socklen_t len = sizeof(uc);

	if (code == MHD_CONNECTION_NOTIFY_CLOSED) {
		free(*socket_ctx);
		*socket_ctx = NULL;
		return;
	}
	ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
	if (ci == NULL || getsockopt(ci->connect_fd, SOL_SOCKET, SO_PEERCRED, &uc, &len) != 0 ||
	    len != sizeof(uc))
		return; /* no identity: every request on it is refused */
	if ((p = malloc(sizeof(*p))) == NULL)
		return;
	p->pid = uc.pid;
	p->uid = uc.uid;
	p->gid = uc.gid;
	*socket_ctx = p;
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

static enum MHD_Result reply_error(struct http_server *h, struct MHD_Connection *c, int status,
                                   const char *error, const char *reason, const char *desc)
{
	struct svc_error e = {.http = status, .error = error, .reason = reason};

	snprintf(e.desc, sizeof(e.desc), "%s", desc);
	return reply(h, c, status, csc_error_body(&e), "application/json");
}

static char *metrics_text(struct http_server *h)
{
	char *s = NULL;

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
	             "iamsign_requests_in_flight %ld\n",
	             atomic_load(&h->requests), atomic_load(&h->errors4), atomic_load(&h->errors5),
	             atomic_load(&h->in_flight)) < 0)
		return NULL;
	return s;
}

static void log_refusal(const struct peer *p, const char *method, int status, const char *body)
{
	/* Only the status and the JSON error (code, reason, description): never request data. */
	fprintf(stderr, "iamsignd: uid=%u pid=%d %s -> %d %s\n", (unsigned)p->uid, (int)p->pid,
	        method, status, body != NULL ? body : "");
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *c, const char *url,
                              const char *method, const char *version, const char *upload,
                              size_t *upload_size, void **req_cls)
{
	struct http_server *h = cls;
	struct req_ctx *rc = *req_cls;
	const union MHD_ConnectionInfo *ci;
	const struct peer *p;
	const char *clen;
	char *body = NULL;
	int status;

	if (rc == NULL) {
		/* First call: headers only. Refuse an announced oversize body before reading
		 * it. */
		if ((rc = calloc(1, sizeof(*rc))) == NULL)
			return MHD_NO;
		*req_cls = rc;
		atomic_fetch_add(&h->in_flight, 1);
		clen =
		    MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
		if (clen != NULL && strtoull(clen, NULL, 10) > CSC_MAX_BODY)
			return reply_error(h, c, 413, "invalid_request", "body_too_large",
			                   "request body too large");
		return MHD_YES;
	}
	if (*upload_size != 0) {
		if (!rc->too_large && rc->len + *upload_size <= CSC_MAX_BODY) {
			char *nb = realloc(rc->body, rc->len + *upload_size + 1);

			if (nb == NULL)
				return MHD_NO;
			rc->body = nb;
			memcpy(rc->body + rc->len, upload, *upload_size);
			rc->len += *upload_size;
			rc->body[rc->len] = '\0';
		} else {
			rc->too_large = 1;
		}
		*upload_size = 0;
		return MHD_YES;
	}

	atomic_fetch_add(&h->requests, 1);
	ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
	p = ci != NULL ? ci->socket_context : NULL;
	if (p == NULL)
		return reply_error(h, c, 403, "access_denied", "unknown_caller",
		                   "caller identity unavailable");
	if (strcmp(method, MHD_HTTP_METHOD_GET) == 0 && strcmp(url, "/healthz") == 0) {
		/* One atomic load: a pulled card shows here at once, without touching it. */
		switch (tok_state(h->svc->tok)) {
		case TOK_STATE_UP:
			return reply(h, c, 200, strdup("{\"status\":\"ok\",\"token\":\"up\"}"),
			             "application/json");
		case TOK_STATE_PIN_FAILED:
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
		return reply_error(h, c, 404, "invalid_request", "unknown_method", "no such path");
	if (strcmp(method, MHD_HTTP_METHOD_POST) != 0)
		return reply_error(h, c, 405, "invalid_request", "method_not_allowed",
		                   "use POST for CSC methods");
	if (rc->too_large)
		return reply_error(h, c, 413, "invalid_request", "body_too_large",
		                   "request body too large");
	csc_handle(h->svc, p, url + strlen(CSC_PREFIX), rc->body != NULL ? rc->body : "", rc->len,
	           &status, &body);
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
}

int http_start(struct service *svc, const struct config *cfg, struct http_server **out, char *err,
               size_t errlen)
{
	struct http_server *h;

	if ((h = calloc(1, sizeof(*h))) == NULL) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	h->svc = svc;
	if ((h->fd = listen_socket(cfg, err, errlen)) < 0) {
		free(h);
		return -1;
	}
	snprintf(h->path, sizeof(h->path), "%s", cfg->socket_path);
	h->mhd = MHD_start_daemon(
	    MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ITC | MHD_USE_ERROR_LOG, 0,
	    NULL, NULL, handle, h, MHD_OPTION_LISTEN_SOCKET, h->fd, MHD_OPTION_THREAD_POOL_SIZE,
	    (unsigned)cfg->threads, MHD_OPTION_CONNECTION_LIMIT, (unsigned)HTTP_MAX_CONNECTIONS,
	    MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)HTTP_IDLE_TIMEOUT,
	    MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)HTTP_CONN_MEMORY,
	    MHD_OPTION_NOTIFY_CONNECTION, notify_connection, h, MHD_OPTION_NOTIFY_COMPLETED,
	    completed, h, MHD_OPTION_END);
	if (h->mhd == NULL) {
		snprintf(err, errlen, "%s: cannot start the HTTP server", cfg->socket_path);
		unlink(h->path);
		close(h->fd);
		free(h);
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
	unlink(h->path);
	for (int waited = 0; atomic_load(&h->in_flight) > 0 && waited < timeout_ms; waited += 10)
		nanosleep(&ts, NULL);
	MHD_stop_daemon(h->mhd);
	if (listen_fd != MHD_INVALID_SOCKET)
		close(listen_fd);
	free(h);
}
