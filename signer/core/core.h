/* The signing core's end of the listener's socketpairs: one thread per channel, each
 * decoding and re-validating a request (signer/wire/wire.h), identifying the caller from the
 * connection passed with it, and answering through the service. */
#ifndef IAMSIGN_SIGNER_CORE_H
#define IAMSIGN_SIGNER_CORE_H

#include "signer/core/service.h"

struct core;

/* Serve n channels (fds, taken over; n >= 2) for svc; sock_path is the daemon's socket path,
 * the only local address a caller's connection may have. The last channel answers status
 * requests only, so that /healthz and /metrics never queue behind signing. 0, or -1 with err
 * set (with n < 2 the fds stay the caller's). */
int core_start(struct service *svc, const char *sock_path, const int *fds, unsigned n,
               struct core **out, char *err, size_t errlen);

/* Wait until every channel has ended (the listener closed its ends), then free. */
void core_join(struct core *c);

#endif
