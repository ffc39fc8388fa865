/* Rate limits (a token bucket per caller) and the Hong Kong calendar day for quotas. */
#ifndef IAMSIGN_POLICY_RATE_H
#define IAMSIGN_POLICY_RATE_H

#include <stdint.h>
#include <time.h>

#include "policy/policy.h"

/* Buckets keyed by caller name; they survive policy reloads (a reload that changes a rate
 * re-scales the bucket). Thread-safe. */
struct rate_table;
struct rate_table *rate_table_new(void);
void rate_table_free(struct rate_table *t);

/* Take n tokens for caller at time now (seconds, monotonic, fractional). 0 if allowed (also
 * when r->count is 0: no limit), -1 if the bucket has fewer than n tokens (nothing taken). */
int rate_take(struct rate_table *t, const char *caller, const struct pol_rate *r, double now,
              unsigned n);

/* Days since 1970-01-01 in Asia/Hong_Kong (UTC+8, no daylight saving since 1979). */
int64_t hk_day(time_t t);

#endif
