/* For the fuzz targets whose code under test reads a file: the input written to a mode-0600
 * file in a private directory made once per process (and removed at exit). */
#ifndef IAMSIGN_TESTS_FUZZ_INPUT_FILE_H
#define IAMSIGN_TESTS_FUZZ_INPUT_FILE_H

#include <stddef.h>
#include <stdint.h>

/* Path of the file now holding exactly data[0..size); aborts on any failure (a broken harness
 * must not pass for a quiet target). */
const char *fuzz_input_file(const char *name, const uint8_t *data, size_t size);

#endif
