/* Loading YAML files (configuration and policy) with errors that name file:line and key.
 *
 * A thin layer over libyaml's document API: the whole file is loaded as a node graph, then
 * walked by the caller. Every error helper writes "FILE:LINE: KEY: message" to the yfile's
 * error buffer and returns -1, so parsers can `return yf_error(...)`. */
#ifndef IAMSIGN_POLICY_YAMLFILE_H
#define IAMSIGN_POLICY_YAMLFILE_H

#include <stddef.h>
#include <stdint.h>
#include <yaml.h>

#define YF_MAX_FILE (1024 * 1024) /* larger files are refused */

#define YF_MAX_PATH 4096

struct yfile {
	const char *path;
	char dir[YF_MAX_PATH]; /* absolute directory of the file, for relative paths in it */
	yaml_document_t doc;
	int loaded;
	char *err;
	size_t errlen;
};

/* Load path; the root must be a mapping. 0, or -1 with the error in err. */
int yf_load(struct yfile *yf, const char *path, char *err, size_t errlen);
void yf_free(struct yfile *yf);
yaml_node_t *yf_root(struct yfile *yf);

/* Format an error at node's line (line 0 when node is NULL). Always returns -1. */
int yf_error(struct yfile *yf, const yaml_node_t *node, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Walk a mapping: returns the number of pairs, or -1 (error set) if node is not a mapping or a
 * key is not a scalar or appears twice. For i < n, yf_pair() gives key text and value node. */
int yf_map_size(struct yfile *yf, yaml_node_t *node, const char *what);
void yf_pair(struct yfile *yf, yaml_node_t *map, int i, const char **key, yaml_node_t **value);
/* The key node of pair i, to name the line of a key in an error. */
yaml_node_t *yf_pair_key(struct yfile *yf, yaml_node_t *map, int i);

/* Sequence access: number of items or -1 (error set) if not a sequence. */
int yf_seq_size(struct yfile *yf, yaml_node_t *node, const char *key);
yaml_node_t *yf_seq_item(struct yfile *yf, yaml_node_t *seq, int i);

/* Typed scalars: 0 or -1 (error set, naming key). */
int yf_str(struct yfile *yf, yaml_node_t *n, const char *key, const char **out);
int yf_strdup(struct yfile *yf, yaml_node_t *n, const char *key, char **out);
int yf_uint(struct yfile *yf, yaml_node_t *n, const char *key, uint64_t max, uint64_t *out);
int yf_bool(struct yfile *yf, yaml_node_t *n, const char *key, int *out);
/* Durations: "30s", "5m", "12h", "1d", or plain seconds. */
int yf_duration(struct yfile *yf, yaml_node_t *n, const char *key, uint64_t *seconds);
/* A list of strings (a sequence of scalars, or one scalar taken as a one-item list); *out is a
 * NULL-terminated array of strdup'ed strings, freed with yf_strv_free(). */
int yf_strv(struct yfile *yf, yaml_node_t *n, const char *key, char ***out, size_t *count);
/* A path: relative paths are taken from the file's directory, not the working directory (the
 * daemon runs from /). *out is malloc'ed. */
int yf_path(struct yfile *yf, yaml_node_t *n, const char *key, char **out);
/* A list of paths (or one path) of at most max entries, each resolved as yf_path() does;
 * NULL-terminated, freed with yf_strv_free(). */
int yf_paths(struct yfile *yf, yaml_node_t *n, const char *key, size_t max, char ***out,
             size_t *count);
void yf_strv_free(char **v);

#endif
