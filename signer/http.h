/* HTTP/1.1 on the Unix socket (libmicrohttpd): routes to csc_handle, /healthz and /metrics,
 * and takes each caller's identity from SO_PEERCRED when the connection starts. */
#ifndef IAMSIGN_SIGNER_HTTP_H
#define IAMSIGN_SIGNER_HTTP_H

#include <stddef.h>

#include "signer/config.h"
#include "signer/service.h"

struct http_server;

/* Create the socket (mode, group; a stale socket file is replaced, a live one refused) and start
 * cfg->threads workers. 0, or -1 with err set. */
int http_start(struct service *svc, const struct config *cfg, struct http_server **out, char *err,
               size_t errlen);

/* Stop accepting, let requests in flight finish (at most timeout_ms), stop, remove the socket. */
void http_stop(struct http_server *h, int timeout_ms);

#endif
