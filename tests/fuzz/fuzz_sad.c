/* Fuzz target: signature activation data. The input is a compact JWS, given to sad_verify() as
 * a NUL-terminated string with one pinned issuer key, a device key, and a fixed time; what
 * verifies is then matched against requests it must and must not allow.
 *
 * The keys are public keys only; the seed corpus holds tokens signed by their private halves
 * (made once with tests/mint-sad and thrown away), with iat = FUZZ_NOW, so the corpus reaches
 * the claim checks and a mutation of a claim is refused as untrusted. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "policy/algs.h"
#include "policy/sad.h"
#include "tests/fuzz/fuzz.h"

#define FUZZ_NOW ((time_t)1767225600) /* 2026-01-01T00:00:00Z: the corpus tokens' iat */

static const char issuer_pem[] =
    "-----BEGIN PUBLIC KEY-----\n"
    "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEsPx328SHpIo9g6On02r2fiQTpOvg\n"
    "x01zNXg6dK9hKQC065lUdv4UkVEkgyL1DRevDlivDSjOlpnbVlz6CsCUXw==\n"
    "-----END PUBLIC KEY-----\n";
static const char device_pem[] =
    "-----BEGIN PUBLIC KEY-----\n"
    "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEdKsw9/yOSDbOnb/DqKs8fxAiInuR\n"
    "euM8bwA4pVaA5sUyPYI8OnO9+Ay0TzZmQUcZ0MtPzCcgkUFp//SjPmpddw==\n"
    "-----END PUBLIC KEY-----\n";

static struct sad_keys *issuers;

/* sad_keys_load() reads files: write the issuer key to a private directory once, load it, and
 * remove both. */
static void load_issuers(void)
{
	const char *base = getenv("TMPDIR");
	char dir[4096], path[4200], err[256];
	char *paths[1] = {path};
	FILE *f;

	snprintf(dir, sizeof(dir), "%s/iamsign-fuzz-sad-XXXXXX",
	         base != NULL && base[0] != '\0' ? base : "/tmp");
	if (mkdtemp(dir) == NULL)
		abort();
	snprintf(path, sizeof(path), "%s/issuer.pub", dir);
	if ((f = fopen(path, "w")) == NULL || fputs(issuer_pem, f) < 0 || fclose(f) != 0)
		abort();
	if (sad_keys_load(paths, 1, &issuers, err, sizeof(err)) != 0) {
		fprintf(stderr, "fuzz-sad: %s\n", err);
		abort();
	}
	unlink(path);
	rmdir(dir);
}

/* Is h (hlen bytes) among the approved hashes? */
static int approved(const struct sad_claims *c, const uint8_t *h, size_t hlen)
{
	size_t i;

	for (i = 0; i < c->nhashes; i++)
		if (memcmp(c->hashes[i], h, hlen) == 0)
			return 1;
	return 0;
}

/* What verified must be usable for exactly what it approves: its own hashes, and not a hash
 * outside them, another credential, nobody's, or no hash at all. */
static void check_match(const struct sad_claims *c)
{
	uint8_t(*h)[64] = calloc(c->nhashes + 1, sizeof(*h));
	size_t hlen = alg_hash_len(c->halg);
	unsigned b;

	if (h == NULL)
		abort();
	if (c->nhashes < 1 || c->nhashes > SAD_MAX_HASHES || hlen == 0 || c->num < 1 ||
	    c->num > SAD_MAX_NUM || c->exp <= c->iat || c->iss[0] == '\0' || c->jti[0] == '\0')
		abort();
	memcpy(h, c->hashes, c->nhashes * sizeof(*h));
	if (sad_match(c, c->cred, c->sub, c->purpose, c->halg, (const uint8_t(*)[64])h,
	              c->nhashes) != SAD_OK)
		abort();
	/* At most SAD_MAX_HASHES are approved: one of 256 first bytes makes an unapproved one. */
	memcpy(h[c->nhashes], c->hashes[0], sizeof(h[0]));
	for (b = 0; b < 256 && approved(c, h[c->nhashes], hlen); b++)
		h[c->nhashes][0] = (uint8_t)b;
	if (sad_match(c, c->cred, c->sub, c->purpose, c->halg, (const uint8_t(*)[64])h,
	              c->nhashes + 1) != SAD_HASH_NOT_AUTHORISED ||
	    sad_match(c, c->cred, c->sub, c->purpose, c->halg, (const uint8_t(*)[64])h, 0) ==
	        SAD_OK ||
	    (strcmp(c->cred, "other-credential") != 0 &&
	     sad_match(c, "other-credential", c->sub, c->purpose, c->halg, (const uint8_t(*)[64])h,
	               1) == SAD_OK) ||
	    sad_match(c, c->cred, NULL, c->purpose, c->halg, (const uint8_t(*)[64])h, 1) == SAD_OK)
		abort();
	free(h);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct sad_claims claims;
	enum sad_result r;
	char *jws;

	if (issuers == NULL)
		load_issuers();
	if (size > SAD_MAX_LEN + 16) /* sad_verify refuses longer: enough to cross the cap */
		return 0;
	if ((jws = malloc(size + 1)) == NULL)
		abort();
	memcpy(jws, data, size);
	jws[size] = '\0';
	r = sad_verify(issuers, device_pem, jws, FUZZ_NOW, &claims);
	if (sad_reason(r) == NULL || sad_strerror(r) == NULL)
		abort();
	if (r == SAD_OK)
		check_match(&claims);
	free(jws);
	return 0;
}
