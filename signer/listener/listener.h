/* The listener process: forked by the core before the token or the ledger is opened. */
#ifndef IAMSIGN_SIGNER_LISTENER_H
#define IAMSIGN_SIGNER_LISTENER_H

#include "signer/config.h"

#define LISTENER_DRAIN_MS 10000

/* In the child, never returns: confine the process (empty root, listener.user, no new
 * privileges, no core dumps, death with the core), serve listen_fd through the n channels,
 * write one byte to ready_fd once serving, then drain and exit when stop_fd becomes readable
 * (the core writes to it or is gone; the core may lack the right to signal it) or at SIGTERM
 * or SIGINT (which the caller forked with blocked). */
__attribute__((noreturn)) void listener_main(const struct config *cfg, int listen_fd,
                                             const int *chan, unsigned n, int ready_fd, int stop_fd,
                                             pid_t core);

#endif
