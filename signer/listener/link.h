/* The listener's end of the socketpairs to the signing core: a pool of channels, one request
 * at a time on each, and one more for status requests. */
#ifndef IAMSIGN_SIGNER_LINK_H
#define IAMSIGN_SIGNER_LINK_H

#include <stddef.h>
#include <stdint.h>

#include "signer/wire/wire.h"

struct core_link;

/* Take over n channel descriptors (n >= 2): the last is kept for status requests, the others
 * are the pool. 0, or -1 (out of memory). */
int core_link_init(const int *fds, unsigned n, struct core_link **out);
void core_link_free(struct core_link *l);

struct tsa_fetcher;
/* Where the core's time-stamp queries go (NULL: each is answered "not configured"); set
 * before the first call. Whether one is set, for info. */
void core_link_set_tsa(struct core_link *l, struct tsa_fetcher *t);
int core_link_has_tsa(const struct core_link *l);

/* Send one request (fd: the caller's connection, or -1) on a free channel, or a
 * WIRE_REQ_STATUS on the status channel, and wait for its answer, fetching the time-stamps
 * the core asks for on the way (a B-T WIRE_REQ_SIGN, max_queries of them at most): 0 with *rtype
 * and *payload (malloc'ed; the caller wipes and frees it), or -1 with f set to core_unavailable
 * when the core cannot be reached (that channel is then closed). */
int core_link_call(struct core_link *l, uint32_t type, const struct wire_buf *req, int fd,
                   uint32_t *rtype, uint8_t **payload, size_t *len, struct refusal *f);
int core_link_call_tsa(struct core_link *l, uint32_t type, const struct wire_buf *req, int fd,
                       size_t max_queries, uint32_t *rtype, uint8_t **payload, size_t *len,
                       struct refusal *f);

#endif
