/* Fuzz target: the CSC request decoders on JSON parsed exactly as csc_handle() parses a body
 * (json_loadb, duplicate keys refused), and the error body built from whatever they report. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "signer/listener/csc.h"
#include "tests/fuzz/fuzz.h"

static void decode(json_t *root, int doc)
{
	struct refusal e;
	struct sign_req *req = malloc(sizeof(*req)); /* large: off the stack, as csc.c does */
	char *body;
	int r;

	if (req == NULL)
		abort();
	memset(&e, 0, sizeof(e));
	r = doc ? csc_decode_sign_doc(root, req, &e) : csc_decode_sign_hash(root, req, &e);
	/* The decoder's contract: 0, or -1 with an error set that the edge can answer. */
	if (r == 0) {
		if (req->nhashes == 0 || req->nhashes > WIRE_MAX_HASHES || req->hash == HASH_NONE ||
		    alg_hash_len(req->hash) == 0 || req->cred[0] == '\0')
			abort();
	} else if (r != -1 || reason_name(e.reason) == NULL || csc_status(e.reason, NULL) < 400) {
		abort();
	}
	if (r != 0) {
		if ((body = csc_error_body(&e)) == NULL)
			abort();
		free(body);
	}
	free(req);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	json_error_t jerr;
	json_t *root;

	if (size > CSC_MAX_BODY) /* csc_handle answers 413 before parsing */
		return 0;
	root = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, &jerr);
	if (root == NULL)
		return 0;
	/* signHash first: signDoc may add hashAlgorithmOID to the object it is given. */
	decode(root, 0);
	decode(root, 1);
	json_decref(root);
	return 0;
}
