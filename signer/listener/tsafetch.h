/* The listener's half of CAdES B-T: posting the core's time-stamp queries to tsa.url
 * (libcurl, plain HTTP) and handing back what came, uninterpreted: the core checks it. */
#ifndef IAMSIGN_SIGNER_LISTENER_TSAFETCH_H
#define IAMSIGN_SIGNER_LISTENER_TSAFETCH_H

#include <stddef.h>
#include <stdint.h>

#include "signer/config.h"
#include "signer/wire/wire.h"

struct tsa_fetcher;

/* For cfg's tsa.url: resolves the host now (the listener later has no file system, so no
 * resolver configuration) and keeps its addresses for every fetch. Call before the listener
 * roots itself. 0, or -1 with err set. */
int tsa_fetcher_new(const struct config *cfg, struct tsa_fetcher **out, char *err, size_t errlen);
void tsa_fetcher_free(struct tsa_fetcher *t);

/* POST query (application/timestamp-query) within wait_ms or tsa.timeout, whichever is
 * shorter (the core's wait: what is left of the request's budget), no redirects, no proxy, at
 * most WIRE_MAX_TSA_REPLY bytes back. Always fills *reply (its body is malloc'ed into *body,
 * NULL unless the outcome is WIRE_TSA_OK; the caller frees it). Thread-safe. */
void tsa_fetch(struct tsa_fetcher *t, unsigned wait_ms, const uint8_t *query, size_t qlen,
               struct wire_tsa_reply *reply, uint8_t **body);

#endif
