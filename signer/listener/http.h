/* HTTP/1.1 on the Unix socket (libmicrohttpd), in the listener process: routes to csc_handle,
 * /healthz and /metrics, and enforces the connection caps (limits.*) per uid from
 * SO_PEERCRED. */
#ifndef IAMSIGN_SIGNER_HTTP_H
#define IAMSIGN_SIGNER_HTTP_H

#include <stddef.h>

#include "signer/config.h"
#include "signer/listener/link.h"

struct http_server;

/* Bind and listen on cfg->socket_path (mode, group; a stale socket file is replaced, a live one
 * refused). The listening descriptor, or -1 with err set. */
int http_bind(const struct config *cfg, char *err, size_t errlen);

/* Serve listen_fd with cfg->threads workers, asking the core through link. 0, or -1 with err
 * set. */
int http_start(struct core_link *link, const struct config *cfg, int listen_fd,
               struct http_server **out, char *err, size_t errlen);

/* Stop accepting (the listening socket is closed), let requests in flight finish (at most
 * timeout_ms), stop. The socket file is the core's to remove. */
void http_stop(struct http_server *h, int timeout_ms);

#endif
