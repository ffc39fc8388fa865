/* Unit tests: token buckets per caller and the Hong Kong day (policy/limits.c). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>

#include "policy/rate.h"

static struct rate_table *table(void)
{
	struct rate_table *t = rate_table_new();

	assert_non_null(t);
	return t;
}

/* A new bucket starts full: count requests at once, then refusals. */
static void test_burst_then_refuse(void **state)
{
	struct pol_rate r = {.count = 5, .per_s = 1};
	struct rate_table *t = table();
	int i;

	for (i = 0; i < 5; i++)
		assert_int_equal(rate_take(t, "a", &r, 100.0, 1), 0);
	assert_int_equal(rate_take(t, "a", &r, 100.0, 1), -1);
	assert_int_equal(rate_take(t, "a", &r, 100.0, 1), -1);
	rate_table_free(t);
}

/* Refill is count per per_s seconds, never above count. */
static void test_refill(void **state)
{
	struct pol_rate r = {.count = 10, .per_s = 60}; /* one token every 6 s */
	struct rate_table *t = table();
	int i;

	for (i = 0; i < 10; i++)
		assert_int_equal(rate_take(t, "a", &r, 1000.0, 1), 0);
	assert_int_equal(rate_take(t, "a", &r, 1000.0, 1), -1);
	assert_int_equal(rate_take(t, "a", &r, 1005.9, 1), -1);
	assert_int_equal(rate_take(t, "a", &r, 1006.0, 1), 0);
	assert_int_equal(rate_take(t, "a", &r, 1006.0, 1), -1);
	assert_int_equal(rate_take(t, "a", &r, 1018.0, 1), 0);
	assert_int_equal(rate_take(t, "a", &r, 1018.0, 1), 0);
	assert_int_equal(rate_take(t, "a", &r, 1018.0, 1), -1);

	/* a long pause fills the bucket only to its capacity */
	for (i = 0; i < 10; i++)
		assert_int_equal(rate_take(t, "a", &r, 100000.0, 1), 0);
	assert_int_equal(rate_take(t, "a", &r, 100000.0, 1), -1);

	/* a clock stepping back refills nothing */
	assert_int_equal(rate_take(t, "a", &r, 50.0, 1), -1);
	assert_int_equal(rate_take(t, "a", &r, 100006.0, 1), 0);
	rate_table_free(t);

	/* 50/s: a token every 20 ms, exact despite floating point */
	r.count = 50;
	r.per_s = 1;
	t = table();
	for (i = 0; i < 50; i++)
		assert_int_equal(rate_take(t, "b", &r, 7.0, 1), 0);
	assert_int_equal(rate_take(t, "b", &r, 7.0, 1), -1);
	for (i = 1; i <= 100; i++) {
		assert_int_equal(rate_take(t, "b", &r, 7.0 + 0.02 * i, 1), 0);
		assert_int_equal(rate_take(t, "b", &r, 7.0 + 0.02 * i, 1), -1);
	}
	rate_table_free(t);
}

/* n > 1 takes n at once or nothing. */
static void test_take_many(void **state)
{
	struct pol_rate r = {.count = 10, .per_s = 10}; /* one per second */
	struct rate_table *t = table();

	assert_int_equal(rate_take(t, "a", &r, 0.0, 4), 0);
	assert_int_equal(rate_take(t, "a", &r, 0.0, 4), 0);
	assert_int_equal(rate_take(t, "a", &r, 0.0, 3), -1); /* 2 left: nothing taken */
	assert_int_equal(rate_take(t, "a", &r, 0.0, 2), 0);
	assert_int_equal(rate_take(t, "a", &r, 0.0, 1), -1);
	assert_int_equal(rate_take(t, "a", &r, 3.0, 3), 0);
	/* more than the capacity is never possible */
	assert_int_equal(rate_take(t, "a", &r, 1000.0, 11), -1);
	assert_int_equal(rate_take(t, "a", &r, 1000.0, 10), 0);
	/* n = 0 takes nothing and is allowed */
	assert_int_equal(rate_take(t, "a", &r, 1000.0, 0), 0);
	rate_table_free(t);
}

/* Each caller has its own bucket. */
static void test_independent_callers(void **state)
{
	struct pol_rate r = {.count = 2, .per_s = 1};
	struct rate_table *t = table();
	char name[16];
	int i;

	assert_int_equal(rate_take(t, "renewal", &r, 1.0, 2), 0);
	assert_int_equal(rate_take(t, "renewal", &r, 1.0, 1), -1);
	assert_int_equal(rate_take(t, "lands", &r, 1.0, 1), 0);
	assert_int_equal(rate_take(t, "lands", &r, 1.0, 1), 0);
	assert_int_equal(rate_take(t, "lands", &r, 1.0, 1), -1);
	assert_int_equal(rate_take(t, "renewal", &r, 1.0, 1), -1);
	/* many callers, colliding in the hash: still separate */
	for (i = 0; i < 500; i++) {
		snprintf(name, sizeof(name), "c%d", i);
		assert_int_equal(rate_take(t, name, &r, 1.0, 2), 0);
	}
	for (i = 0; i < 500; i++) {
		snprintf(name, sizeof(name), "c%d", i);
		assert_int_equal(rate_take(t, name, &r, 1.0, 1), -1);
	}
	rate_table_free(t);
}

static void test_unlimited(void **state)
{
	struct pol_rate r = {.count = 0, .per_s = 1};
	struct rate_table *t = table();
	int i;

	for (i = 0; i < 100000; i++)
		assert_int_equal(rate_take(t, "a", &r, 1.0, 64), 0);
	assert_int_equal(rate_take(t, "a", NULL, 1.0, 1), 0);
	rate_table_free(t);
}

/* A reload that changes the rate keeps the bucket's fill fraction. */
static void test_rate_change(void **state)
{
	struct pol_rate r = {.count = 10, .per_s = 1}, r2 = {.count = 100, .per_s = 1};
	struct rate_table *t = table();
	int i;

	assert_int_equal(rate_take(t, "a", &r, 1.0, 10), 0); /* empty */
	assert_int_equal(rate_take(t, "a", &r2, 1.0, 1), -1);
	/* half a second at 100/s: 50 */
	for (i = 0; i < 50; i++)
		assert_int_equal(rate_take(t, "a", &r2, 1.5, 1), 0);
	assert_int_equal(rate_take(t, "a", &r2, 1.5, 1), -1);
	rate_table_free(t);
}

static void test_hk_day(void **state)
{
	/* 2026-11-27 15:59:59 UTC is 23:59:59 in Hong Kong; one second later is the next day. */
	const time_t before = 1795795199, after = 1795795200;

	assert_int_equal(hk_day(after) - hk_day(before), 1);
	assert_int_equal(hk_day(after), after / 86400 + 1);
	/* 16:00 UTC to 15:59:59 UTC next day is one HK day */
	assert_int_equal(hk_day(after + 86399), hk_day(after));
	assert_int_equal(hk_day(after + 86400), hk_day(after) + 1);
	/* the epoch: 1970-01-01 08:00 in Hong Kong is day 0; 16:00 UTC is day 1 */
	assert_int_equal(hk_day(0), 0);
	assert_int_equal(hk_day(16 * 3600 - 1), 0);
	assert_int_equal(hk_day(16 * 3600), 1);
	/* before the epoch the day still changes at 16:00 UTC */
	assert_int_equal(hk_day(-8 * 3600), 0);
	assert_int_equal(hk_day(-8 * 3600 - 1), -1);
	assert_int_equal(hk_day(-86400 - 8 * 3600), -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_burst_then_refuse),
	    cmocka_unit_test(test_refill),
	    cmocka_unit_test(test_take_many),
	    cmocka_unit_test(test_independent_callers),
	    cmocka_unit_test(test_unlimited),
	    cmocka_unit_test(test_rate_change),
	    cmocka_unit_test(test_hk_day),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
