/* CSC API v2 over JSON, in the listener: decode and bound every field, ask the signing core
 * (signer/listener/link.h), encode the answer. */
#ifndef IAMSIGN_SIGNER_CSC_H
#define IAMSIGN_SIGNER_CSC_H

#include <stddef.h>

#include <jansson.h>

#include "signer/config.h"
#include "signer/listener/link.h"
#include "signer/wire/types.h"

#define CSC_MAX_BODY (64 * 1024)

/* Handle one request from the caller on connection conn_fd (passed to the core, which
 * identifies the caller from it): method is the path after /csc/v2/ ("signatures/signHash").
 * Always sets *status and *body (a JSON text, malloc'ed): an error answer when anything fails.
 * Every answer is recorded in the ledger by the core, except when the core cannot be
 * reached. */
void csc_handle(struct core_link *link, const struct config_limits *lim, int conn_fd,
                const char *method, const char *body, size_t len, int *status, char **out);

/* Decoders, exposed for unit tests: 0, or -1 with f set (a 400). The request keeps pointers
 * into root, which must outlive it. */
int csc_decode_sign_hash(json_t *root, struct sign_req *req, struct refusal *f);
int csc_decode_sign_doc(json_t *root, struct sign_req *req, struct refusal *f);

/* The one map from a reason to the answer's HTTP status and CSC `error` code (docs/api.md
 * lists it): 500 internal_error for a value outside the enumeration. */
int csc_status(enum reason r, const char **error);

/* JSON for an error answer (malloc'ed). */
char *csc_error_body(const struct refusal *f);

#endif
