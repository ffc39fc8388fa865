/* Token buckets per caller and the Hong Kong day. See rate.h. */
#include "policy/rate.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define RT_BUCKETS 64 /* hash chains; callers are at most a few hundred */
/* Refill arithmetic is in doubles: allow for rounding when a bucket should hold exactly n. */
#define RT_EPSILON 1e-9

struct rate_bucket {
	struct rate_bucket *next;
	double tokens;
	double last;    /* time of the last refill */
	uint32_t count; /* the rate the bucket was filled with, to notice a reload */
	uint32_t per_s;
	char name[];
};

struct rate_table {
	pthread_mutex_t lock;
	struct rate_bucket *chain[RT_BUCKETS];
};

struct rate_table *rate_table_new(void)
{
	struct rate_table *t = calloc(1, sizeof(*t));

	if (t == NULL)
		return NULL;
	if (pthread_mutex_init(&t->lock, NULL) != 0) {
		free(t);
		return NULL;
	}
	return t;
}

void rate_table_free(struct rate_table *t)
{
	struct rate_bucket *b, *next;
	size_t i;

	if (t == NULL)
		return;
	for (i = 0; i < RT_BUCKETS; i++) {
		for (b = t->chain[i]; b != NULL; b = next) {
			next = b->next;
			free(b);
		}
	}
	pthread_mutex_destroy(&t->lock);
	free(t);
}

/* FNV-1a */
static size_t name_hash(const char *s)
{
	uint32_t h = 2166136261u;

	for (; *s != '\0'; s++) {
		h ^= (unsigned char)*s;
		h *= 16777619u;
	}
	return h % RT_BUCKETS;
}

/* The caller's bucket, created full at now if new; NULL when out of memory. Lock held. */
static struct rate_bucket *bucket_get(struct rate_table *t, const char *caller, uint32_t count,
                                      uint32_t per_s, double now)
{
	size_t h = name_hash(caller), len = strlen(caller);
	struct rate_bucket *b;

	for (b = t->chain[h]; b != NULL; b = b->next)
		if (strcmp(b->name, caller) == 0)
			return b;
	b = malloc(sizeof(*b) + len + 1);
	if (b == NULL)
		return NULL;
	memcpy(b->name, caller, len + 1);
	b->tokens = count;
	b->last = now;
	b->count = count;
	b->per_s = per_s;
	b->next = t->chain[h];
	t->chain[h] = b;
	return b;
}

int rate_take(struct rate_table *t, const char *caller, const struct pol_rate *r, double now,
              unsigned n)
{
	struct rate_bucket *b;
	uint32_t per_s;
	int ret = -1;

	if (r == NULL || r->count == 0)
		return 0;
	if (t == NULL || caller == NULL)
		return -1; /* fail closed */
	per_s = r->per_s == 0 ? 1 : r->per_s;
	pthread_mutex_lock(&t->lock);
	b = bucket_get(t, caller, r->count, per_s, now);
	if (b == NULL)
		goto out;
	if (b->count != r->count || b->per_s != per_s) {
		/* A reload changed the rate: keep the same fraction of a full bucket. */
		b->tokens = b->count == 0 ? r->count : b->tokens * r->count / b->count;
		b->count = r->count;
		b->per_s = per_s;
	}
	/* A clock that steps back refills nothing and does not move the mark back. */
	if (now > b->last) {
		b->tokens += (now - b->last) * b->count / b->per_s;
		b->last = now;
	}
	if (b->tokens > b->count)
		b->tokens = b->count;
	if (b->tokens + RT_EPSILON < (double)n)
		goto out;
	b->tokens -= n;
	if (b->tokens < 0)
		b->tokens = 0;
	ret = 0;
out:
	pthread_mutex_unlock(&t->lock);
	return ret;
}

int64_t hk_day(time_t t)
{
	int64_t s = (int64_t)t + 8 * 3600, d = s / 86400;

	/* floor, also before 1970 */
	if (s % 86400 < 0)
		d--;
	return d;
}
