/* Shared by the fuzz targets: the libFuzzer entry point, and what the replay program adds. */
#ifndef IAMSIGN_TESTS_FUZZ_FUZZ_H
#define IAMSIGN_TESTS_FUZZ_FUZZ_H

#include <stddef.h>
#include <stdint.h>

/* Run one input; always returns 0 (libFuzzer's contract). A bug shows as a crash or a
 * sanitizer report, never as a return value. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#endif
