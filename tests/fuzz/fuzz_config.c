/* Fuzz target: the daemon's configuration file (config_load), input written to a private
 * mode-0600 file. A loaded configuration must satisfy the contract config.h states. */
#include <stdlib.h>
#include <string.h>

#include "signer/config.h"
#include "tests/fuzz/fuzz.h"
#include "tests/fuzz/input_file.h"

#define FUZZ_MAX_INPUT (64 * 1024) /* the loader's own cap is 1 MiB; larger adds nothing */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct config *c = NULL;
	char err[1024];
	size_t i;

	if (size > FUZZ_MAX_INPUT)
		return 0;
	err[0] = '\0';
	if (config_load(fuzz_input_file("iamsignd.yaml", data, size), &c, err, sizeof(err)) != 0) {
		/* Refused: with a message naming the file, and nothing handed out. */
		if (c != NULL || err[0] == '\0')
			abort();
		return 0;
	}
	if (c == NULL || c->token_module == NULL || c->token_uri == NULL ||
	    c->token_pin_file == NULL || c->socket_path == NULL || c->state_dir == NULL ||
	    c->policy_path == NULL || c->ledger_audit_key == NULL || c->sad_issuers == NULL ||
	    c->threads < 1 || c->threads > 64 || c->socket_mode > 0777 ||
	    c->ledger_checkpoint_every < 1 || c->ledger_checkpoint_secs < 1 ||
	    strncmp(c->token_uri, "pkcs11:", 7) != 0 || c->socket_path[0] != '/' ||
	    c->token_module[0] != '/' || c->state_dir[0] != '/' || c->policy_path[0] != '/')
		abort();
	for (i = 0; i < c->nsad_issuers; i++)
		if (c->sad_issuers[i] == NULL || c->sad_issuers[i][0] != '/')
			abort();
	if (c->sad_issuers[c->nsad_issuers] != NULL)
		abort();
	config_free(c);
	return 0;
}
