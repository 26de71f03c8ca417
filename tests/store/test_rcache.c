/* SPDX-License-Identifier: Apache-2.0 */
/* Tests of the latest-row cache (src/store/rcache.c): replacement, owners,
 * the capacity bound and second-chance eviction, rows that cannot be stored, allocation
 * failures, and concurrent writers and readers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "core/mem.h"
#include "immudb/err.h"
#include "store/rcache.h"

typedef struct got {
  uint8_t v[256];
  size_t n;
} got;

static int copy_cb(const uint8_t *row, size_t len, void *arg) {
  got *g = arg;
  if (len > sizeof g->v)
    return IMMU_ECORRUPT;
  memcpy(g->v, row, len);
  g->n = len;
  return 0;
}

static int fail_cb(const uint8_t *row, size_t len, void *arg) {
  (void)row;
  (void)len;
  (void)arg;
  return IMMU_ECORRUPT;
}

static int get_str(immu__rcache *c, uint64_t owner, const char *k, got *g) {
  return immu__rcache_get(c, owner, (const uint8_t *)k, strlen(k), copy_cb, g);
}

static void put_str(immu__rcache *c, uint64_t owner, const char *k,
                    const char *v) {
  immu__rcache_put(c, owner, (const uint8_t *)k, strlen(k),
                   (const uint8_t *)v, strlen(v));
}

static void expect_row(immu__rcache *c, uint64_t owner, const char *k,
                       const char *v) {
  got g;
  assert_int_equal(get_str(c, owner, k, &g), 0);
  assert_int_equal(g.n, strlen(v));
  assert_memory_equal(g.v, v, g.n);
}

static void expect_none(immu__rcache *c, uint64_t owner, const char *k) {
  got g;
  assert_int_equal(get_str(c, owner, k, &g), IMMU_ENOTFOUND);
}

static void test_put_get_replace(void **state) {
  immu__rcache *c;
  immu__rcache_stats st;
  uint64_t o;
  got g;
  (void)state;

  assert_int_equal(immu__rcache_new(1 << 20, &c), 0);
  o = immu__rcache_owner(c);
  assert_true(o != 0);
  expect_none(c, o, "a");
  put_str(c, o, "a", "one");
  expect_row(c, o, "a", "one");
  put_str(c, o, "a", "two!");
  expect_row(c, o, "a", "two!");
  /* keys that differ only in length or in their last byte */
  put_str(c, o, "ab", "x");
  put_str(c, o, "abcdefgh", "eight");
  put_str(c, o, "abcdefgi", "eight'");
  expect_row(c, o, "a", "two!");
  expect_row(c, o, "ab", "x");
  expect_row(c, o, "abcdefgh", "eight");
  expect_row(c, o, "abcdefgi", "eight'");
  /* empty rows are rows */
  immu__rcache_put(c, o, (const uint8_t *)"e", 1, (const uint8_t *)"", 0);
  assert_int_equal(get_str(c, o, "e", &g), 0);
  assert_int_equal(g.n, 0);
  /* the callback's result is the get's */
  assert_int_equal(immu__rcache_get(c, o, (const uint8_t *)"a", 1, fail_cb,
                                    NULL),
                   IMMU_ECORRUPT);
  immu__rcache_erase(c, o, (const uint8_t *)"a", 1);
  expect_none(c, o, "a");
  immu__rcache_erase(c, o, (const uint8_t *)"zz", 2); /* not held: no-op */

  immu__rcache_get_stats(c, &st);
  assert_int_equal(st.rows, 4);
  assert_true(st.bytes > 0 && st.bytes <= st.capacity);
  assert_int_equal(st.capacity, 1 << 20);
  assert_true(st.hits >= 8);
  assert_true(st.misses >= 2);
  immu__rcache_free(c);
}

static void test_owners(void **state) {
  immu__rcache *c;
  immu__rcache_stats st;
  uint64_t a, b;
  (void)state;

  assert_int_equal(immu__rcache_new(1 << 20, &c), 0);
  a = immu__rcache_owner(c);
  b = immu__rcache_owner(c);
  assert_true(a != b);
  put_str(c, a, "k", "of a");
  expect_none(c, b, "k");
  put_str(c, b, "k", "of b");
  expect_row(c, a, "k", "of a");
  expect_row(c, b, "k", "of b");
  for (int i = 0; i < 500; i++) {
    char k[16];
    snprintf(k, sizeof k, "key%d", i);
    put_str(c, a, k, "va");
    put_str(c, b, k, "vb");
  }
  immu__rcache_drop_owner(c, a);
  expect_none(c, a, "k");
  expect_none(c, a, "key7");
  expect_row(c, b, "k", "of b");
  expect_row(c, b, "key499", "vb");
  immu__rcache_get_stats(c, &st);
  assert_int_equal(st.rows, 501);
  immu__rcache_free(c);
}

/* 64 shards of 1 KiB: a handful of rows each. */
static void test_capacity_lru(void **state) {
  immu__rcache *c;
  immu__rcache_stats st;
  uint64_t o;
  char v[40];
  (void)state;

  assert_int_equal(immu__rcache_new(64 << 10, &c), 0);
  o = immu__rcache_owner(c);
  memset(v, 'v', sizeof v - 1);
  v[sizeof v - 1] = '\0';
  put_str(c, o, "hot", "stays");
  put_str(c, o, "cold", "goes");
  for (int i = 0; i < 5000; i++) {
    char k[16];
    snprintf(k, sizeof k, "k%d", i);
    put_str(c, o, k, v);
    expect_row(c, o, "hot", "stays"); /* read after every insert */
    immu__rcache_get_stats(c, &st);
    assert_true(st.bytes <= st.capacity);
  }
  expect_none(c, o, "cold");
  expect_none(c, o, "k0");
  expect_row(c, o, "k4999", v); /* the newest row of its shard */
  immu__rcache_get_stats(c, &st);
  assert_true(st.rows > 64 && st.rows < 5000);
  immu__rcache_free(c);
}

static void test_unstorable(void **state) {
  immu__rcache *c;
  uint8_t big[2048];
  uint64_t o;
  (void)state;

  /* off: nothing stored, every get misses */
  assert_int_equal(immu__rcache_new(0, &c), 0);
  o = immu__rcache_owner(c);
  put_str(c, o, "a", "b");
  expect_none(c, o, "a");
  immu__rcache_drop_owner(c, o);
  immu__rcache_free(c);

  /* a row larger than its shard drops the held one */
  assert_int_equal(immu__rcache_new(64 << 10, &c), 0);
  o = immu__rcache_owner(c);
  memset(big, 7, sizeof big);
  put_str(c, o, "a", "small");
  expect_row(c, o, "a", "small");
  immu__rcache_put(c, o, (const uint8_t *)"a", 1, big, sizeof big);
  expect_none(c, o, "a");

  /* an allocation failure on replacement drops the held one */
  put_str(c, o, "b", "old");
  immu__mem_fail_after(0, 0);
  put_str(c, o, "b", "new");
  immu__mem_fail_after(-1, 0);
  expect_none(c, o, "b");
  put_str(c, o, "b", "new");
  expect_row(c, o, "b", "new");
  immu__rcache_free(c);

  /* every allocation failing: nothing held, nothing stale */
  assert_int_equal(immu__rcache_new(1 << 20, &c), 0);
  o = immu__rcache_owner(c);
  immu__mem_fail_after(0, 1);
  put_str(c, o, "a", "x");
  immu__mem_fail_after(-1, 0);
  expect_none(c, o, "a");
  immu__rcache_free(c);
}

/* Writers publish increasing versions of each key; a reader never sees a
 * row of another key, a torn row, or a version going backwards. */
#define CK 64
#define CV 4000

typedef struct cshared {
  immu__rcache *c;
  uint64_t owner;
  _Atomic int done;
  _Atomic unsigned long errors, hits;
} cshared;

static void enc(uint8_t out[16], uint32_t key, uint32_t ver) {
  memcpy(out, &key, 4);
  memcpy(out + 4, &ver, 4);
  memcpy(out + 8, &key, 4);
  memcpy(out + 12, &ver, 4);
}

static void *cwriter(void *arg) {
  cshared *s = arg;
  for (uint32_t ver = 1; ver <= CV; ver++)
    for (uint32_t k = 0; k < CK; k++) {
      uint8_t v[16];
      if (k % 2 != (ver % 2))
        continue;
      enc(v, k, ver);
      immu__rcache_put(s->c, s->owner, (const uint8_t *)&k, 4, v, 16);
    }
  return NULL;
}

static void *creader(void *arg) {
  cshared *s = arg;
  uint32_t seen[CK] = {0};
  while (!atomic_load(&s->done)) {
    for (uint32_t k = 0; k < CK; k++) {
      got g;
      uint32_t kk, ver;
      int rc = immu__rcache_get(s->c, s->owner, (const uint8_t *)&k, 4,
                                copy_cb, &g);
      if (rc == IMMU_ENOTFOUND)
        continue;
      memcpy(&kk, g.v, 4);
      memcpy(&ver, g.v + 4, 4);
      if (rc != 0 || g.n != 16 || kk != k || ver < seen[k] ||
          memcmp(g.v, g.v + 8, 8) != 0) {
        atomic_fetch_add(&s->errors, 1);
        continue;
      }
      seen[k] = ver;
      atomic_fetch_add(&s->hits, 1);
    }
  }
  return NULL;
}

static void test_concurrent(void **state) {
  cshared s;
  pthread_t w, r[2];
  got g;
  (void)state;
  assert_int_equal(immu__rcache_new(4 << 20, &s.c), 0);
  s.owner = immu__rcache_owner(s.c);
  atomic_init(&s.done, 0);
  atomic_init(&s.errors, 0);
  atomic_init(&s.hits, 0);
  for (int i = 0; i < 2; i++)
    assert_int_equal(pthread_create(&r[i], NULL, creader, &s), 0);
  assert_int_equal(pthread_create(&w, NULL, cwriter, &s), 0);
  pthread_join(w, NULL);
  atomic_store(&s.done, 1);
  for (int i = 0; i < 2; i++)
    pthread_join(r[i], NULL);
  assert_int_equal(atomic_load(&s.errors), 0);
  assert_true(atomic_load(&s.hits) > 0);
  for (uint32_t k = 0; k < CK; k++) {
    uint32_t ver;
    assert_int_equal(immu__rcache_get(s.c, s.owner, (const uint8_t *)&k, 4,
                                      copy_cb, &g),
                     0);
    memcpy(&ver, g.v + 4, 4);
    assert_int_equal(ver, k % 2 == CV % 2 ? CV : CV - 1);
  }
  immu__rcache_free(s.c);
}

/* The drop count moves when a row goes without a replacement (evicted for
 * room, erased, not storable), not on a replacing put or drop_owner. */
static void test_drops(void **state) {
  immu__rcache *c, *off;
  uint64_t o, p, d;
  char k[16], big[2048];
  (void)state;

  assert_int_equal(immu__rcache_new(0, &off), 0);
  assert_int_equal(immu__rcache_drops(off), UINT64_MAX);
  immu__rcache_free(off);

  /* 64 shards of 1 KiB */
  assert_int_equal(immu__rcache_new(64 << 10, &c), 0);
  o = immu__rcache_owner(c);
  p = immu__rcache_owner(c);
  assert_int_equal(immu__rcache_drops(c), 0);
  put_str(c, o, "a", "1");
  put_str(c, o, "a", "2"); /* replaced, not dropped */
  put_str(c, p, "b", "1");
  immu__rcache_drop_owner(c, p);
  assert_int_equal(immu__rcache_drops(c), 0);
  immu__rcache_erase(c, o, (const uint8_t *)"a", 1);
  assert_int_equal(immu__rcache_drops(c), 1);
  memset(big, 'x', sizeof big - 1);
  big[sizeof big - 1] = '\0';
  put_str(c, o, "big", big); /* larger than a shard */
  assert_int_equal(immu__rcache_drops(c), 2);
  expect_none(c, o, "big");
  /* Enough rows to overflow shards: every eviction counts. */
  d = immu__rcache_drops(c);
  for (int i = 0; i < 2000; i++) {
    snprintf(k, sizeof k, "k%d", i);
    put_str(c, o, k, "0123456789012345678901234567890123456789");
  }
  immu__rcache_stats st;
  immu__rcache_get_stats(c, &st);
  assert_true(st.rows < 2000);
  assert_int_equal(immu__rcache_drops(c) - d, 2000 - st.rows);
  immu__rcache_free(c);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_put_get_replace),
      cmocka_unit_test(test_owners),
      cmocka_unit_test(test_capacity_lru),
      cmocka_unit_test(test_unstorable),
      cmocka_unit_test(test_concurrent),
      cmocka_unit_test(test_drops),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
