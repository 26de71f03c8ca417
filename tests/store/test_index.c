/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Tests of the RocksDB key index (src/store/index.h).
 *
 *   - ENC ordering: sorted-set members with equal scores come back in raw
 *     key order then atTx order, for random keys full of 0x00/0xff bytes
 *     and keys that are prefixes of each other (ENC followed by a u64).
 *   - apply / get_latest / get_revision over many txs with repeated keys,
 *     across reopen (last_tx and counters persisted); first != last_tx + 1.
 *   - history ascending/descending from a revision.
 *   - scan (prefix, lo/hi inclusive/exclusive, desc, early stop) and zscan
 *     (scores incl. +-0, +-inf, denormals; exclusive bounds; desc; seek)
 *     against brute-force models.
 *   - count per one-byte prefix and longer prefixes; inline values.
 *   - corruption: malformed 'm' record, damaged CURRENT file.
 *   - two readers doing get_latest/scan while one thread applies.
 *
 * Directories go under $IMMU_TEST_TMPDIR (fallback /tmp) and are removed.
 * Set IMMU_TEST_SEED to replay another seed.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <ftw.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <unistd.h>

#include <rocksdb/c.h>

#include "core/mem.h"
#include "immudb/crypto.h"
#include "immudb/err.h"
#include "store/index.h"
#include "store/rcache.h"

#define assert_rc(expr, want)                                                  \
  do {                                                                         \
    int rc_ = (expr);                                                          \
    int want_ = (want);                                                        \
    if (rc_ != want_) {                                                        \
      fail_msg("%s = %d (%s), want %d (%s)", #expr, rc_, immu_err_name(rc_),   \
               want_, immu_err_name(want_));                                   \
    }                                                                          \
  } while (0)

/* ------------------------------------------------------------------ */
/* PRNG, directories, shared env                                       */
/* ------------------------------------------------------------------ */

static uint64_t rng_state;

static uint64_t rnd(void) {
  uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

static size_t rnd_below(size_t n) {
  return (size_t)(rnd() % n);
}

static immu_index_env *g_env;

static void make_dir(char *out, size_t cap) {
  const char *base = getenv("IMMU_TEST_TMPDIR");
  if (base == NULL || base[0] == '\0')
    base = "/tmp";
  snprintf(out, cap, "%s/idxtest.XXXXXX", base);
  assert_non_null(mkdtemp(out));
}

static int rm_cb(const char *path, const struct stat *sb, int flag,
                 struct FTW *ftw) {
  (void)sb;
  (void)flag;
  (void)ftw;
  return remove(path);
}

static void remove_dir(const char *dir) {
  nftw(dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

static immu_index *open_ix(const char *dir, uint32_t inline_max) {
  immu_index *ix = NULL;
  char *msg = NULL;
  int rc = immu__index_open(g_env, dir, inline_max, &ix, &msg);
  if (rc != 0)
    fail_msg("open %s: %s (%s)", dir, immu_err_name(rc), msg ? msg : "");
  assert_null(msg);
  return ix;
}

/* ------------------------------------------------------------------ */
/* Building batches                                                    */
/* ------------------------------------------------------------------ */

/* Entries of a batch with owned key/value storage. */
typedef struct batch {
  immu_index_kv *kv;
  uint8_t (*kbuf)[96];
  uint8_t (*vbuf)[64];
  size_t n, cap;
} batch;

static void batch_init(batch *b, size_t cap) {
  b->kv = calloc(cap, sizeof *b->kv);
  b->kbuf = calloc(cap, sizeof *b->kbuf);
  b->vbuf = calloc(cap, sizeof *b->vbuf);
  assert_true(b->kv && b->kbuf && b->vbuf);
  b->n = 0;
  b->cap = cap;
}

static void batch_free(batch *b) {
  free(b->kv);
  free(b->kbuf);
  free(b->vbuf);
}

/* Adds an entry of tx |tx|; the value is |vlen| bytes derived from tx. */
static immu_index_kv *batch_add(batch *b, const uint8_t *key, size_t klen,
                                uint64_t tx, uint32_t idx, uint32_t vlen) {
  immu_index_kv *kv;
  assert_true(b->n < b->cap);
  assert_true(klen <= sizeof b->kbuf[0]);
  kv = &b->kv[b->n];
  memset(kv, 0, sizeof *kv);
  memcpy(b->kbuf[b->n], key, klen);
  for (size_t i = 0; i < vlen && i < sizeof b->vbuf[0]; i++)
    b->vbuf[b->n][i] = (uint8_t)(tx * 31 + i);
  kv->key = b->kbuf[b->n];
  kv->klen = klen;
  kv->value = b->vbuf[b->n];
  kv->vlen = vlen;
  kv->tx = tx;
  kv->idx = idx;
  kv->vpos = tx * 1000 + idx;
  memset(kv->hval.b, (int)(tx & 0xff), IMMU_DIGEST_LEN);
  kv->hval.b[0] = (uint8_t)idx;
  b->n++;
  return kv;
}

/* ------------------------------------------------------------------ */
/* Models                                                              */
/* ------------------------------------------------------------------ */

static int raw_cmp(const uint8_t *a, size_t an, const uint8_t *b, size_t bn) {
  size_t n = an < bn ? an : bn;
  int c = n ? memcmp(a, b, n) : 0;
  if (c != 0)
    return c;
  return an < bn ? -1 : an > bn ? 1 : 0;
}

typedef struct mkey {
  uint8_t k[8];
  size_t kl;
  uint64_t tx;
  uint64_t rev;
  uint32_t idx;
} mkey;

static int mkey_cmp(const void *a, const void *b) {
  const mkey *x = a, *y = b;
  return raw_cmp(x->k, x->kl, y->k, y->kl);
}

typedef struct collect {
  mkey *got;
  size_t n, cap;
  size_t limit; /* stop after this many (0 = all) */
} collect;

static int collect_cb(void *arg, const immu_index_entry *e) {
  collect *c = arg;
  if (c->n >= c->cap || e->klen > sizeof c->got[0].k)
    return IMMU_ERANGE;
  memcpy(c->got[c->n].k, e->key, e->klen);
  c->got[c->n].kl = e->klen;
  c->got[c->n].tx = e->tx;
  c->got[c->n].rev = e->revision;
  c->got[c->n].idx = e->idx;
  c->n++;
  return c->limit != 0 && c->n >= c->limit ? 1 : 0;
}

/* ------------------------------------------------------------------ */
/* Tests                                                               */
/* ------------------------------------------------------------------ */

static void check_latest(immu_index *ix, const uint8_t *k, size_t kl,
                         uint64_t tx, uint64_t rev) {
  immu_index_entry e = {0};
  assert_rc(immu__index_get_latest(ix, k, kl, &e), 0);
  assert_int_equal(e.tx, tx);
  assert_int_equal(e.revision, rev);
  immu__index_entry_clear(&e);
}

/* 20 keys, 300 txs of 1..5 entries, applied in batches of 1..17 txs. */
static void test_apply_revisions(void **state) {
  char dir[512];
  immu_index *ix;
  batch b;
  uint64_t revs[20] = {0}, lasttx[20] = {0};
  uint64_t tx = 1, applied = 0;
  (void)state;

  make_dir(dir, sizeof dir);
  ix = open_ix(dir, 32);
  assert_int_equal(immu__index_last_tx(ix), 0);
  batch_init(&b, 17 * 5);

  while (tx <= 300) {
    size_t ntx = 1 + rnd_below(17);
    uint64_t first = tx;
    b.n = 0;
    for (size_t t = 0; t < ntx && tx <= 300; t++, tx++) {
      size_t ne = 1 + rnd_below(5);
      int used[20] = {0};
      for (uint32_t i = 0; i < ne; i++) {
        size_t k = rnd_below(20);
        uint8_t key[4] = {0x00, 'k', (uint8_t)k, 0x00};
        if (used[k])
          continue;
        used[k] = 1;
        batch_add(&b, key, 3 + (k & 1), tx, i, 8);
        revs[k]++;
        lasttx[k] = tx;
      }
    }
    assert_rc(immu__index_apply(ix, first, tx - 1, b.kv, b.n), 0);
    applied = tx - 1;
    assert_int_equal(immu__index_last_tx(ix), applied);
  }

  for (int pass = 0; pass < 2; pass++) {
    uint64_t distinct = 0, cnt;
    for (size_t k = 0; k < 20; k++) {
      uint8_t key[4] = {0x00, 'k', (uint8_t)k, 0x00};
      immu_index_entry e = {0};
      if (revs[k] == 0) {
        assert_rc(immu__index_get_latest(ix, key, 3 + (k & 1), &e),
                  IMMU_ENOTFOUND);
        continue;
      }
      distinct++;
      check_latest(ix, key, 3 + (k & 1), lasttx[k], revs[k]);
      for (uint64_t r = 1; r <= revs[k]; r++) {
        assert_rc(immu__index_get_revision(ix, key, 3 + (k & 1), r, &e), 0);
        assert_int_equal(e.revision, r);
      }
      assert_rc(immu__index_get_revision(ix, key, 3 + (k & 1), revs[k] + 1, &e),
                IMMU_ENOTFOUND);
      assert_rc(immu__index_get_revision(ix, key, 3 + (k & 1), 0, &e),
                IMMU_ENOTFOUND);
      assert_int_equal(e.revision, revs[k]);
      immu__index_entry_clear(&e);
    }
    assert_rc(immu__index_count(ix, (const uint8_t *)"\x00", 1, &cnt), 0);
    assert_int_equal(cnt, distinct);
    assert_rc(immu__index_count(ix, NULL, 0, &cnt), 0);
    assert_int_equal(cnt, distinct);
    /* reopen: last_tx and counters come back from RocksDB */
    immu__index_close(ix);
    ix = open_ix(dir, 32);
    assert_int_equal(immu__index_last_tx(ix), applied);
  }

  /* wrong first tx */
  b.n = 0;
  batch_add(&b, (const uint8_t *)"\x00zz", 3, applied + 2, 0, 1);
  assert_rc(immu__index_apply(ix, applied + 2, applied + 2, b.kv, 1),
            IMMU_EINVAL);
  assert_rc(immu__index_apply(ix, applied, applied, b.kv, 1), IMMU_EINVAL);
  /* entry outside [first, last] */
  assert_rc(immu__index_apply(ix, applied + 1, applied + 1, b.kv, 1),
            IMMU_EINVAL);
  assert_int_equal(immu__index_last_tx(ix), applied);
  /* an empty tx range moves last_tx too */
  assert_rc(immu__index_apply(ix, applied + 1, applied + 1, NULL, 0), 0);
  assert_int_equal(immu__index_last_tx(ix), applied + 1);

  batch_free(&b);
  immu__index_close(ix);
  assert_rc(immu__index_destroy(g_env, dir), 0);
  remove_dir(dir);
}

static void test_history(void **state) {
  char dir[512];
  immu_index *ix;
  batch b;
  const uint8_t ka[] = {0x00, 'a'};
  const uint8_t kb[] = {0x00, 'a', 0x00}; /* ka is a prefix of kb */
  collect c = {0};
  (void)state;

  make_dir(dir, sizeof dir);
  ix = open_ix(dir, 0);
  batch_init(&b, 64);
  for (uint64_t tx = 1; tx <= 30; tx++) {
    batch_add(&b, ka, sizeof ka, tx, 0, 4);
    if (tx % 3 == 0)
      batch_add(&b, kb, sizeof kb, tx, 1, 4);
  }
  assert_rc(immu__index_apply(ix, 1, 30, b.kv, b.n), 0);
  c.cap = 64;
  c.got = calloc(c.cap, sizeof *c.got);

  /* ascending from 0/1: all 30 of ka, none of kb */
  assert_rc(immu__index_history(ix, ka, sizeof ka, 0, 0, collect_cb, &c), 0);
  assert_int_equal(c.n, 30);
  for (size_t i = 0; i < 30; i++) {
    assert_int_equal(c.got[i].rev, i + 1);
    assert_int_equal(c.got[i].tx, i + 1);
    assert_memory_equal(c.got[i].k, ka, sizeof ka);
  }
  c.n = 0;
  assert_rc(immu__index_history(ix, ka, sizeof ka, 25, 0, collect_cb, &c), 0);
  assert_int_equal(c.n, 6);
  assert_int_equal(c.got[0].rev, 25);
  c.n = 0;
  assert_rc(immu__index_history(ix, ka, sizeof ka, 31, 0, collect_cb, &c), 0);
  assert_int_equal(c.n, 0);
  /* descending from the latest and from 7 */
  assert_rc(immu__index_history(ix, ka, sizeof ka, 0, 1, collect_cb, &c), 0);
  assert_int_equal(c.n, 30);
  assert_int_equal(c.got[0].rev, 30);
  assert_int_equal(c.got[29].rev, 1);
  c.n = 0;
  assert_rc(immu__index_history(ix, ka, sizeof ka, 7, 1, collect_cb, &c), 0);
  assert_int_equal(c.n, 7);
  assert_int_equal(c.got[0].rev, 7);
  assert_int_equal(c.got[6].rev, 1);
  /* limit: stop after 3 */
  c.n = 0;
  c.limit = 3;
  assert_rc(immu__index_history(ix, kb, sizeof kb, 0, 1, collect_cb, &c), 0);
  assert_int_equal(c.n, 3);
  assert_int_equal(c.got[0].rev, 10);
  assert_int_equal(c.got[0].tx, 30);
  assert_int_equal(c.got[2].rev, 8);
  /* unknown key; aborting callback */
  c.n = 0;
  c.limit = 0;
  assert_rc(
      immu__index_history(ix, (const uint8_t *)"\0b", 2, 0, 0, collect_cb, &c),
      0);
  assert_int_equal(c.n, 0);
  c.cap = 2;
  assert_rc(immu__index_history(ix, ka, sizeof ka, 0, 0, collect_cb, &c),
            IMMU_ERANGE);

  free(c.got);
  batch_free(&b);
  immu__index_close(ix);
  assert_rc(immu__index_destroy(g_env, dir), 0);
  remove_dir(dir);
}

static const uint8_t alpha[] = {0x00, 0x01, 0x61, 0xfe, 0xff};

static size_t rnd_key(uint8_t *k, size_t maxtail) {
  static const uint8_t first[] = {0x00, 0x02, 0xff};
  size_t n = 1 + rnd_below(maxtail + 1);
  k[0] = first[rnd_below(sizeof first)];
  for (size_t i = 1; i < n; i++)
    k[i] = alpha[rnd_below(sizeof alpha)];
  return n;
}

static void test_scan_model(void **state) {
  char dir[512];
  immu_index *ix;
  batch b;
  mkey *model;
  size_t nm = 0;
  collect c = {0};
  uint64_t tx = 1;
  size_t total = 0;
  (void)state;

  make_dir(dir, sizeof dir);
  ix = open_ix(dir, 16);
  batch_init(&b, 64);
  model = calloc(2000, sizeof *model);
  c.cap = 2000;
  c.got = calloc(c.cap, sizeof *c.got);

  /* 2000 writes: txs of 1..4 entries, batches of up to ~60 entries */
  for (size_t op = 0; op < 2000;) {
    uint64_t first = tx;
    b.n = 0;
    while (b.n < 60 && op < 2000) {
      size_t ne = 1 + rnd_below(4);
      for (uint32_t i = 0; i < ne && op < 2000; i++, op++) {
        uint8_t k[8];
        size_t kl = rnd_key(k, 4), j;
        int dup = 0;
        for (size_t q = b.n; q-- > 0 && b.kv[q].tx == tx;)
          if (raw_cmp(b.kv[q].key, b.kv[q].klen, k, kl) == 0)
            dup = 1;
        if (dup)
          continue; /* a tx never holds the same key twice */
        batch_add(&b, k, kl, tx, i, (uint32_t)rnd_below(24));
        for (j = 0; j < nm; j++)
          if (raw_cmp(model[j].k, model[j].kl, k, kl) == 0)
            break;
        if (j == nm) {
          memcpy(model[nm].k, k, kl);
          model[nm].kl = kl;
          nm++;
        }
        model[j].tx = tx;
        model[j].rev++;
        model[j].idx = i;
      }
      tx++;
    }
    assert_rc(immu__index_apply(ix, first, tx - 1, b.kv, b.n), 0);
  }
  qsort(model, nm, sizeof *model, mkey_cmp);
  assert_true(nm > 200);

  for (int q = 0; q < 600; q++) {
    uint8_t pre[8], lo[8], hi[8];
    size_t pl = 0, lol = 0, hil = 0, want = 0, limit;
    int has_lo = (int)rnd_below(2), has_hi = (int)rnd_below(2);
    int lo_incl = (int)rnd_below(2), hi_incl = (int)rnd_below(2);
    int desc = (int)rnd_below(2);
    mkey *exp = calloc(nm + 1, sizeof *exp);

    if (rnd_below(3) != 0) {
      const mkey *src = &model[rnd_below(nm)];
      pl = rnd_below(src->kl + 1);
      if (pl > 2)
        pl = 2;
      memcpy(pre, src->k, pl);
    }
    if (has_lo)
      lol = rnd_key(lo, 4) - (rnd_below(4) == 0);
    if (has_hi)
      hil = rnd_key(hi, 4) - (rnd_below(4) == 0);
    limit = rnd_below(4) == 0 ? 1 + rnd_below(10) : 0;

    for (size_t i = 0; i < nm; i++) {
      const mkey *m = &model[desc ? nm - 1 - i : i];
      int c1;
      if (m->kl < pl || memcmp(m->k, pre, pl) != 0)
        continue;
      if (has_lo) {
        c1 = raw_cmp(m->k, m->kl, lo, lol);
        if (c1 < 0 || (c1 == 0 && !lo_incl))
          continue;
      }
      if (has_hi) {
        c1 = raw_cmp(m->k, m->kl, hi, hil);
        if (c1 > 0 || (c1 == 0 && !hi_incl))
          continue;
      }
      exp[want++] = *m;
      if (limit && want == limit)
        break;
    }
    c.n = 0;
    c.limit = limit;
    assert_rc(immu__index_scan(ix, pre, pl, has_lo ? lo : NULL, lol, lo_incl,
                               has_hi ? hi : NULL, hil, hi_incl, desc,
                               collect_cb, &c),
              0);
    if (c.n != want)
      fail_msg("query %d: %zu results, want %zu", q, c.n, want);
    total += want;
    for (size_t i = 0; i < want; i++) {
      assert_memory_equal(c.got[i].k, exp[i].k, exp[i].kl);
      assert_int_equal(c.got[i].kl, exp[i].kl);
      assert_int_equal(c.got[i].tx, exp[i].tx);
      assert_int_equal(c.got[i].rev, exp[i].rev);
      assert_int_equal(c.got[i].idx, exp[i].idx);
    }
    free(exp);
  }

  assert_true(total > 5000); /* the queries are not all empty */

  /* counts: every 1- and 2-byte prefix of the model's keys, and 0xff.. */
  for (size_t i = 0; i < nm; i++) {
    for (size_t pl = 0; pl <= 3 && pl <= model[i].kl; pl++) {
      uint64_t want = 0, got = 1;
      for (size_t j = 0; j < nm; j++)
        if (model[j].kl >= pl && memcmp(model[j].k, model[i].k, pl) == 0)
          want++;
      assert_rc(immu__index_count(ix, model[i].k, pl, &got), 0);
      assert_int_equal(got, want);
    }
  }
  {
    uint64_t got = 1;
    assert_rc(immu__index_count(ix, (const uint8_t *)"\x05", 1, &got), 0);
    assert_int_equal(got, 0);
    assert_rc(immu__index_count(ix, (const uint8_t *)"\xff\xff\xff", 3, &got),
              0);
  }

  /* flush + compact keep everything readable */
  assert_rc(immu__index_flush(ix), 0);
  assert_rc(immu__index_compact(ix), 0);
  assert_true(immu__index_bytes(ix) > 0);
  check_latest(ix, model[0].k, model[0].kl, model[0].tx, model[0].rev);

  free(c.got);
  free(model);
  batch_free(&b);
  immu__index_close(ix);
  assert_rc(immu__index_destroy(g_env, dir), 0);
  remove_dir(dir);
}

/* ---- sorted sets ---- */

typedef struct zm {
  int set;
  double score;
  uint8_t k[8];
  size_t kl;
  uint64_t at_tx;
  uint64_t tx;
} zm;

static const char *const zsets[] = {"s", "s\0", "t"};
static const size_t zset_len[] = {1, 2, 1};

static uint64_t sc_enc(double d) {
  uint64_t b;
  memcpy(&b, &d, 8);
  return (b >> 63) ? ~b : b ^ ((uint64_t)1 << 63);
}

/* Order of members within a set: SCORE, raw key, atTx. */
static int zm_cmp(const zm *a, const zm *b) {
  uint64_t x = sc_enc(a->score), y = sc_enc(b->score);
  int c;
  if (x != y)
    return x < y ? -1 : 1;
  c = raw_cmp(a->k, a->kl, b->k, b->kl);
  if (c != 0)
    return c;
  return a->at_tx < b->at_tx ? -1 : a->at_tx > b->at_tx ? 1 : 0;
}

static int zm_qcmp(const void *a, const void *b) {
  const zm *x = a, *y = b;
  if (x->set != y->set)
    return x->set - y->set;
  return zm_cmp(x, y);
}

typedef struct zcollect {
  zm *got;
  size_t n, cap, limit;
} zcollect;

static int zcollect_cb(void *arg, const immu_index_zmember *m) {
  zcollect *c = arg;
  zm *z;
  if (c->n >= c->cap || m->klen > sizeof c->got[0].k)
    return IMMU_ERANGE;
  z = &c->got[c->n++];
  z->score = m->score;
  memcpy(z->k, m->key, m->klen);
  z->kl = m->klen;
  z->at_tx = m->at_tx;
  z->tx = m->tx;
  return c->limit && c->n >= c->limit ? 1 : 0;
}

static const double scores[] = {-INFINITY, -1e300, -2.5,  -1.0,
                                -5e-324,   -0.0,   0.0,   5e-324,
                                1.0,       2.5,    1e300, INFINITY};
#define NSCORES (sizeof scores / sizeof scores[0])

/* The ZAdd store key of spec 7.2, built here independently of the
 * library's encoder: 0x01 u64(len(set)) set u64(bits(score))
 * u64(len(key)+1) 0x00 key u64(atTx). */
static size_t zadd_key(int set, double score, const uint8_t *k, size_t kl,
                       uint64_t at_tx, uint8_t *out) {
  size_t sl = zset_len[set], o = 0;
  uint64_t bits;
  memcpy(&bits, &score, 8);
  out[o++] = 0x01;
  for (int i = 7; i >= 0; i--)
    out[o++] = (uint8_t)((uint64_t)sl >> (8 * i));
  memcpy(out + o, zsets[set], sl);
  o += sl;
  for (int i = 7; i >= 0; i--)
    out[o++] = (uint8_t)(bits >> (8 * i));
  for (int i = 7; i >= 0; i--)
    out[o++] = (uint8_t)((uint64_t)(kl + 1) >> (8 * i));
  out[o++] = 0x00;
  memcpy(out + o, k, kl);
  o += kl;
  for (int i = 7; i >= 0; i--)
    out[o++] = (uint8_t)(at_tx >> (8 * i));
  assert_int_equal(o, 34 + sl + kl);
  return o;
}

static void zadd(batch *b, zm *z, uint64_t tx, uint32_t idx) {
  uint8_t key[96];
  size_t kl = zadd_key(z->set, z->score, z->k, z->kl, z->at_tx, key);
  batch_add(b, key, kl, tx, idx, 0);
  z->tx = tx;
}

static void test_zscan_model(void **state) {
  char dir[512];
  immu_index *ix;
  batch b;
  zm *model;
  size_t nm = 0;
  zcollect c = {0};
  uint64_t tx = 1;
  size_t total = 0;
  (void)state;

  make_dir(dir, sizeof dir);
  ix = open_ix(dir, 16);
  batch_init(&b, 64);
  model = calloc(2000, sizeof *model);
  c.cap = 2000;
  c.got = calloc(c.cap, sizeof *c.got);

  for (size_t op = 0; op < 1500;) {
    uint64_t first = tx;
    b.n = 0;
    while (b.n < 50 && op < 1500) {
      /* one ZAdd per tx keeps duplicates out of a tx */
      zm z = {0};
      size_t j;
      if (nm > 0 && rnd_below(5) == 0) {
        z = model[rnd_below(nm)]; /* re-add an existing member */
      } else {
        z.set = (int)rnd_below(3);
        z.score = scores[rnd_below(NSCORES)];
        z.kl = rnd_key(z.k, 3) - 1; /* user key, may be empty */
        memmove(z.k, z.k + 1, z.kl);
        z.at_tx = rnd_below(3);
      }
      zadd(&b, &z, tx, 0);
      for (j = 0; j < nm; j++)
        if (zm_qcmp(&model[j], &z) == 0 &&
            sc_enc(model[j].score) == sc_enc(z.score))
          break;
      if (j == nm)
        nm++;
      model[j] = z;
      tx++;
      op++;
    }
    assert_rc(immu__index_apply(ix, first, tx - 1, b.kv, b.n), 0);
  }
  qsort(model, nm, sizeof *model, zm_qcmp);

  for (int q = 0; q < 800; q++) {
    int set = (int)rnd_below(3);
    double min = scores[rnd_below(NSCORES)], max = scores[rnd_below(NSCORES)];
    int min_excl = (int)rnd_below(2), max_excl = (int)rnd_below(2);
    int desc = (int)rnd_below(2), seek = rnd_below(3) == 0;
    zm sk = {0};
    size_t want = 0, limit = rnd_below(4) == 0 ? 1 + rnd_below(8) : 0;
    zm *exp = calloc(nm + 1, sizeof *exp);

    if (q % 4 == 0) {
      min = -INFINITY;
      max = INFINITY;
    } else if (min > max && rnd_below(2)) {
      double t = min;
      min = max;
      max = t;
    }
    if (seek) {
      sk = model[rnd_below(nm)];
      if (rnd_below(2)) {
        sk.kl = rnd_key(sk.k, 3) - 1;
        memmove(sk.k, sk.k + 1, sk.kl);
      }
    }
    for (size_t i = 0; i < nm; i++) {
      const zm *m = &model[desc ? nm - 1 - i : i];
      if (m->set != set)
        continue;
      if (m->score < min || (min_excl && m->score == min))
        continue;
      if (m->score > max || (max_excl && m->score == max))
        continue;
      if (seek) {
        int cmp = zm_cmp(m, &sk);
        if (desc ? cmp >= 0 : cmp <= 0)
          continue;
      }
      exp[want++] = *m;
      if (limit && want == limit)
        break;
    }
    c.n = 0;
    c.limit = limit;
    assert_rc(immu__index_zscan(ix, (const uint8_t *)zsets[set], zset_len[set],
                                min, min_excl, max, max_excl,
                                seek ? sk.k : NULL, sk.kl, sk.score, sk.at_tx,
                                desc, zcollect_cb, &c),
              0);
    if (c.n != want)
      fail_msg("zquery %d: %zu results, want %zu", q, c.n, want);
    total += want;
    for (size_t i = 0; i < want; i++) {
      assert_int_equal(sc_enc(c.got[i].score), sc_enc(exp[i].score));
      assert_int_equal(c.got[i].kl, exp[i].kl);
      assert_memory_equal(c.got[i].k, exp[i].k, exp[i].kl);
      assert_int_equal(c.got[i].at_tx, exp[i].at_tx);
      assert_int_equal(c.got[i].tx, exp[i].tx);
    }
    free(exp);
  }

  assert_true(total > 5000);

  /* ZAdd keys are indexed under 'l'/'h' too, with revisions. */
  {
    uint8_t key[96];
    size_t kl;
    uint64_t cnt;
    kl = zadd_key(model[0].set, model[0].score, model[0].k, model[0].kl,
                  model[0].at_tx, key);
    immu_index_entry e = {0};
    assert_rc(immu__index_get_latest(ix, key, kl, &e), 0);
    assert_int_equal(e.tx, model[0].tx);
    assert_true(e.has_inline); /* empty value, inline_max 16 */
    assert_int_equal(e.vlen, 0);
    immu__index_entry_clear(&e);
    assert_rc(immu__index_count(ix, (const uint8_t *)"\x01", 1, &cnt), 0);
    assert_int_equal(cnt, nm);
  }
  /* NaN bounds are refused */
  assert_rc(immu__index_zscan(ix, (const uint8_t *)"s", 1, NAN, 0, 1.0, 0, NULL,
                              0, 0, 0, 0, zcollect_cb, &c),
            IMMU_EINVAL);

  free(c.got);
  free(model);
  batch_free(&b);
  immu__index_close(ix);
  assert_rc(immu__index_destroy(g_env, dir), 0);
  remove_dir(dir);
}

/* ENC order == raw order, with a u64 following: members of one set with
 * one score, keys full of 0x00/0xff and prefixes of each other, several
 * atTx each, must come back sorted by (raw key, atTx). */
static void test_enc_order(void **state) {
  char dir[512];
  immu_index *ix;
  batch b;
  zm *model;
  size_t nm = 0;
  zcollect c = {0};
  static const uint8_t al[] = {0x00, 0x01, 0x02, 0x7f, 0xfe, 0xff};
  (void)state;

  make_dir(dir, sizeof dir);
  ix = open_ix(dir, 0);
  batch_init(&b, 600);
  model = calloc(600, sizeof *model);
  c.cap = 600;
  c.got = calloc(c.cap, sizeof *c.got);

  while (nm < 500) {
    zm z = {0};
    size_t j;
    if (nm > 0 && rnd_below(3) == 0) {
      /* extend or truncate an existing key: prefixes of each other */
      z = model[rnd_below(nm)];
      if (rnd_below(2) && z.kl < 8)
        z.k[z.kl++] = al[rnd_below(sizeof al)];
      else if (z.kl > 0)
        z.kl--;
    } else {
      z.kl = rnd_below(7);
      for (size_t i = 0; i < z.kl; i++)
        z.k[i] = al[rnd_below(sizeof al)];
    }
    z.score = 1.5;
    z.at_tx = rnd_below(2) ? 0 : rnd();
    for (j = 0; j < nm; j++)
      if (zm_cmp(&model[j], &z) == 0)
        break;
    if (j < nm)
      continue;
    model[nm] = z;
    zadd(&b, &model[nm], nm + 1, 0);
    nm++;
  }
  assert_rc(immu__index_apply(ix, 1, nm, b.kv, b.n), 0);
  qsort(model, nm, sizeof *model, zm_qcmp);
  for (int desc = 0; desc < 2; desc++) {
    c.n = 0;
    assert_rc(immu__index_zscan(ix, (const uint8_t *)"s", 1, -INFINITY, 0,
                                INFINITY, 0, NULL, 0, 0, 0, desc, zcollect_cb,
                                &c),
              0);
    assert_int_equal(c.n, nm);
    for (size_t i = 0; i < nm; i++) {
      const zm *m = &model[desc ? nm - 1 - i : i];
      assert_int_equal(c.got[i].kl, m->kl);
      assert_memory_equal(c.got[i].k, m->k, m->kl);
      assert_int_equal(c.got[i].at_tx, m->at_tx);
    }
  }

  free(c.got);
  free(model);
  batch_free(&b);
  immu__index_close(ix);
  assert_rc(immu__index_destroy(g_env, dir), 0);
  remove_dir(dir);
}

static int inline_cb(void *arg, const immu_index_entry *e) {
  int *bad = arg;
  int want = e->vlen <= 16;
  if (e->has_inline != want)
    (*bad)++;
  else if (want && e->vlen > 0 &&
           (e->inline_value == NULL || e->inline_value[e->vlen - 1] !=
                                           (uint8_t)(e->tx * 31 + e->vlen - 1)))
    (*bad)++;
  return 0;
}

static void test_inline(void **state) {
  char dir[512];
  immu_index *ix;
  batch b;
  immu_index_entry e = {0};
  int bad = 0;
  (void)state;

  for (int lim = 0; lim < 2; lim++) {
    make_dir(dir, sizeof dir);
    ix = open_ix(dir, lim ? 16 : 0);
    batch_init(&b, 8);
    batch_add(&b, (const uint8_t *)"\0a", 2, 1, 0, 0);
    batch_add(&b, (const uint8_t *)"\0b", 2, 1, 1, 16);
    batch_add(&b, (const uint8_t *)"\0c", 2, 1, 2, 17);
    b.kv[2].value = NULL; /* above the limit: may be NULL */
    batch_add(&b, (const uint8_t *)"\0d", 2, 1, 3, 5);
    batch_add(&b, (const uint8_t *)"\0d", 2, 2, 0, 40);
    assert_rc(immu__index_apply(ix, 1, 2, b.kv, b.n), 0);

    assert_rc(immu__index_get_latest(ix, (const uint8_t *)"\0a", 2, &e), 0);
    assert_int_equal(e.has_inline, lim);
    assert_rc(immu__index_get_latest(ix, (const uint8_t *)"\0b", 2, &e), 0);
    assert_int_equal(e.has_inline, lim);
    if (lim) {
      assert_int_equal(e.vlen, 16);
      assert_memory_equal(e.inline_value, b.vbuf[1], 16);
    }
    assert_rc(immu__index_get_latest(ix, (const uint8_t *)"\0c", 2, &e), 0);
    assert_int_equal(e.has_inline, 0);
    assert_int_equal(e.vlen, 17);
    assert_int_equal(e.vpos, 1002);
    assert_rc(immu__index_get_latest(ix, (const uint8_t *)"\0d", 2, &e), 0);
    assert_int_equal(e.has_inline, 0);
    assert_int_equal(e.revision, 2);
    /* 'h' rows never inline */
    assert_rc(immu__index_get_revision(ix, (const uint8_t *)"\0d", 2, 1, &e),
              0);
    assert_int_equal(e.has_inline, 0);
    assert_int_equal(e.vlen, 5);
    if (lim) {
      assert_rc(immu__index_scan(ix, NULL, 0, NULL, 0, 0, NULL, 0, 0, 0,
                                 inline_cb, &bad),
                0);
      assert_int_equal(bad, 0);
    }
    immu__index_entry_clear(&e);
    batch_free(&b);
    immu__index_close(ix);
    assert_rc(immu__index_destroy(g_env, dir), 0);
    remove_dir(dir);
  }
}

static void test_metadata(void **state) {
  char dir[512];
  immu_index *ix;
  batch b;
  immu_index_entry e = {0};
  immu_index_kv *kv;
  (void)state;

  make_dir(dir, sizeof dir);
  ix = open_ix(dir, 8);
  batch_init(&b, 4);
  kv = batch_add(&b, (const uint8_t *)"\x00m", 2, 1, 7, 3);
  kv->md = (const uint8_t *)"\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b";
  kv->mdlen = IMMU_KV_MD_MAX;
  assert_rc(immu__index_apply(ix, 1, 1, b.kv, 1), 0);
  assert_rc(immu__index_get_latest(ix, (const uint8_t *)"\x00m", 2, &e), 0);
  assert_int_equal(e.mdlen, IMMU_KV_MD_MAX);
  assert_memory_equal(e.md, kv->md, IMMU_KV_MD_MAX);
  assert_int_equal(e.idx, 7);
  assert_memory_equal(e.hval.b, kv->hval.b, IMMU_DIGEST_LEN);
  assert_true(e.has_inline);
  assert_memory_equal(e.inline_value, kv->value, 3);
  kv->mdlen = IMMU_KV_MD_MAX + 1;
  kv->tx = 2;
  assert_rc(immu__index_apply(ix, 2, 2, b.kv, 1), IMMU_EINVAL);
  immu__index_entry_clear(&e);
  batch_free(&b);
  immu__index_close(ix);
  assert_rc(immu__index_destroy(g_env, dir), 0);
  remove_dir(dir);
}

/* Writes (v != NULL) or deletes one raw row of column family |cf| (0 =
 * default, 1 = "latest") of a closed index, bypassing index.c. */
static void raw_row(const char *dir, int cf, const char *k, size_t kl,
                    const char *v, size_t vl) {
  rocksdb_options_t *o = rocksdb_options_create();
  rocksdb_writeoptions_t *wo = rocksdb_writeoptions_create();
  const char *names[2] = {"default", "latest"};
  const rocksdb_options_t *cfo[2] = {o, o};
  rocksdb_column_family_handle_t *cfh[2] = {NULL, NULL};
  char *err = NULL;
  rocksdb_t *db;
  rocksdb_options_set_create_missing_column_families(o, 1);
  db = rocksdb_open_column_families(o, dir, 2, names, cfo, cfh, &err);
  assert_null(err);
  if (v != NULL)
    rocksdb_put_cf(db, wo, cfh[cf], k, kl, v, vl, &err);
  else
    rocksdb_delete_cf(db, wo, cfh[cf], k, kl, &err);
  assert_null(err);
  rocksdb_column_family_handle_destroy(cfh[0]);
  rocksdb_column_family_handle_destroy(cfh[1]);
  rocksdb_close(db);
  rocksdb_writeoptions_destroy(wo);
  rocksdb_options_destroy(o);
}

static void put_raw(const char *dir, const char *k, size_t kl, const char *v,
                    size_t vl) {
  raw_row(dir, 0, k, kl, v, vl);
}

/* An 'm' value: u64 last tx | u32 format (CUR_FORMAT: the current one). */
#define CUR_FORMAT 3
static void meta_val(char out[12], uint64_t last, uint32_t fmt) {
  for (int i = 0; i < 8; i++)
    out[i] = (char)(last >> (56 - 8 * i));
  for (int i = 0; i < 4; i++)
    out[8 + i] = (char)(fmt >> (24 - 8 * i));
}

static void expect_corrupt(const char *dir, const char *want) {
  immu_index *ix = NULL;
  char *msg = NULL;
  assert_rc(immu__index_open(g_env, dir, 0, &ix, &msg), IMMU_ECORRUPT);
  assert_null(ix);
  assert_non_null(msg);
  if (strstr(msg, want) == NULL)
    fail_msg("message \"%s\" lacks \"%s\"", msg, want);
  immu__free(msg);
}

static void test_corrupt(void **state) {
  char dir[512], path[600], mv[12];
  immu_index *ix;
  batch b;
  char *msg = NULL;
  FILE *f;
  (void)state;

  /* malformed 'm' */
  make_dir(dir, sizeof dir);
  ix = open_ix(dir, 0);
  batch_init(&b, 2);
  batch_add(&b, (const uint8_t *)"\x00x", 2, 1, 0, 1);
  assert_rc(immu__index_apply(ix, 1, 1, b.kv, 1), 0);
  immu__index_close(ix);
  put_raw(dir, "mlast", 5, "abc", 3);
  ix = (immu_index *)&b; /* must be reset to NULL */
  assert_rc(immu__index_open(g_env, dir, 0, &ix, &msg), IMMU_ECORRUPT);
  assert_null(ix);
  assert_non_null(msg);
  immu__free(msg);
  msg = NULL;

  /* both copies of 'm' valid and equal: opens */
  meta_val(mv, 0x3132333435363738ull, CUR_FORMAT);
  raw_row(dir, 0, "mlast", 5, mv, 12);
  raw_row(dir, 1, "mlast", 5, mv, 12);
  ix = open_ix(dir, 0);
  assert_int_equal(immu__index_last_tx(ix), 0x3132333435363738ull);
  immu__index_close(ix);
  /* another format version (a future one, format 2 with the latest
   * revision in 'h' too, or format 1's bare u64) */
  meta_val(mv, 1, 4);
  raw_row(dir, 1, "mlast", 5, mv, 12);
  expect_corrupt(dir, "format 4");
  meta_val(mv, 0x3132333435363738ull, 2);
  raw_row(dir, 0, "mlast", 5, mv, 12);
  raw_row(dir, 1, "mlast", 5, mv, 12);
  expect_corrupt(dir, "format 2");
  meta_val(mv, 0x3132333435363738ull, CUR_FORMAT);
  raw_row(dir, 0, "mlast", 5, mv, 12);
  raw_row(dir, 1, "mlast", 5, "12345678", 8);
  expect_corrupt(dir, "format 1");
  /* copies that differ: one family persisted without the other */
  meta_val(mv, 0x3132333435363738ull, CUR_FORMAT);
  raw_row(dir, 0, "mlast", 5, mv, 12);
  meta_val(mv, 7, CUR_FORMAT);
  raw_row(dir, 1, "mlast", 5, mv, 12);
  expect_corrupt(dir, "out of step");
  /* one copy missing */
  raw_row(dir, 1, "mlast", 5, NULL, 0);
  expect_corrupt(dir, "missing");

  /* rows but no 'm' */
  raw_row(dir, 0, "mlast", 5, NULL, 0);
  expect_corrupt(dir, "no 'm'");

  /* a corrupt 'l' value is reported by the reader */
  meta_val(mv, 1, CUR_FORMAT);
  raw_row(dir, 0, "mlast", 5, mv, 12);
  raw_row(dir, 1, "mlast", 5, mv, 12);
  raw_row(dir, 1, "l\x00x", 3, "short", 5);
  ix = open_ix(dir, 0);
  {
    immu_index_entry e = {0};
    assert_rc(immu__index_get_latest(ix, (const uint8_t *)"\x00x", 2, &e),
              IMMU_ECORRUPT);
    /* the reader says what it found */
    assert_non_null(strstr(immu__index_last_error(),
                           "malformed index row of 5 bytes"));
    assert_rc(immu__index_get_latest_cached(ix, (const uint8_t *)"\x00x", 2,
                                            &e),
              IMMU_ECORRUPT);
    immu__index_entry_clear(&e);
    /* and forgets it at the next read */
    assert_rc(immu__index_get_latest(ix, (const uint8_t *)"nope", 4, &e),
              IMMU_ENOTFOUND);
    assert_string_equal(immu__index_last_error(), "");
  }
  immu__index_close(ix);
  assert_rc(immu__index_destroy(g_env, dir), 0);
  remove_dir(dir);

  /* RocksDB-level corruption: a damaged CURRENT file */
  make_dir(dir, sizeof dir);
  ix = open_ix(dir, 0);
  immu__index_close(ix);
  snprintf(path, sizeof path, "%s/CURRENT", dir);
  f = fopen(path, "w");
  assert_non_null(f);
  fputs("garbage-without-newline", f);
  fclose(f);
  assert_rc(immu__index_open(g_env, dir, 0, &ix, &msg), IMMU_ECORRUPT);
  assert_non_null(msg);
  assert_true(strstr(msg, "Corruption") != NULL);
  immu__free(msg);
  remove_dir(dir);

  batch_free(&b);
}

/* An index written by format 1 (one column family, bare u64 'm', 'l'
 * rows beside 'h' rows) is refused as corrupt, which makes the store
 * destroy and rebuild it; after destroy the directory opens empty. */
static void test_old_format(void **state) {
  char dir[512];
  rocksdb_options_t *o = rocksdb_options_create();
  rocksdb_writeoptions_t *wo = rocksdb_writeoptions_create();
  char *err = NULL;
  rocksdb_t *db;
  immu_index *ix;
  (void)state;

  make_dir(dir, sizeof dir);
  rocksdb_options_set_create_if_missing(o, 1);
  db = rocksdb_open(o, dir, &err);
  assert_null(err);
  rocksdb_put(db, wo, "mlast", 5, "\0\0\0\0\0\0\0\5", 8, &err);
  assert_null(err);
  rocksdb_put(db, wo, "l\x00x", 3, "whatever", 8, &err);
  assert_null(err);
  rocksdb_close(db);
  rocksdb_writeoptions_destroy(wo);
  rocksdb_options_destroy(o);

  expect_corrupt(dir, "format 1");
  assert_rc(immu__index_destroy(g_env, dir), 0);
  ix = open_ix(dir, 0);
  assert_int_equal(immu__index_last_tx(ix), 0);
  {
    immu_index_entry e = {0};
    assert_rc(immu__index_get_latest(ix, (const uint8_t *)"\x00x", 2, &e),
              IMMU_ENOTFOUND);
  }
  immu__index_close(ix);
  assert_rc(immu__index_destroy(g_env, dir), 0);
  remove_dir(dir);
}

/* ---- concurrency ---- */

#define CKEYS 10
#define CTXS 600

typedef struct cshared {
  immu_index *ix;
  atomic_int done;
  atomic_int errors;
  atomic_long reads;
} cshared;

static int cscan_cb(void *arg, const immu_index_entry *e) {
  uint64_t *tx = arg;
  if (e->revision != e->tx)
    return IMMU_ECORRUPT;
  if (*tx == 0)
    *tx = e->tx;
  else if (*tx != e->tx)
    return IMMU_ECONFLICT; /* one batch = one atomic write */
  return 0;
}

/* History of a key during applies: every revision exactly once, in
 * order, although applies move the latest one from 'l' to 'h'. */
typedef struct chist {
  uint64_t next; /* expected revision; 0 before the first (descending) */
  int desc;
  uint64_t n;
} chist;

static int chist_cb(void *arg, const immu_index_entry *e) {
  chist *h = arg;
  if (e->revision != e->tx)
    return IMMU_ECORRUPT;
  if (h->desc && h->next == 0)
    h->next = e->revision; /* the latest */
  if (e->revision != h->next)
    return IMMU_ECONFLICT;
  h->next = h->desc ? h->next - 1 : h->next + 1;
  h->n++;
  return 0;
}

static void *reader(void *arg) {
  cshared *s = arg;
  uint64_t seen[CKEYS] = {0};
  immu_index_entry e = {0};
  unsigned n = 0;
  while (!atomic_load(&s->done)) {
    for (int k = 0; k < CKEYS; k++) {
      uint8_t key[3] = {0x00, 'c', (uint8_t)k};
      int rc = immu__index_get_latest(s->ix, key, 3, &e);
      if (rc == IMMU_ENOTFOUND && seen[k] == 0)
        continue;
      if (rc != 0 || e.revision < seen[k] || e.revision != e.tx ||
          !e.has_inline || e.inline_value[0] != (uint8_t)(e.tx * 31)) {
        atomic_fetch_add(&s->errors, 1);
        continue;
      }
      seen[k] = e.revision;
      atomic_fetch_add(&s->reads, 1);
    }
    if (n % 4 == 0) {
      int k = (int)(n / 4) % CKEYS;
      uint8_t key[3] = {0x00, 'c', (uint8_t)k};
      chist h = {n % 8 == 0 ? 0 : 1, n % 8 == 0, 0};
      int rc = immu__index_history(s->ix, key, 3, 0, h.desc, chist_cb, &h);
      /* all revisions, back to 1, and at least what the Get saw */
      if (rc != 0 || h.n < seen[k] || (h.n > 0 && h.next != (h.desc ? 0 : h.n + 1)))
        atomic_fetch_add(&s->errors, 1);
      /* the revision last seen as the latest, wherever it lives now */
      if (seen[k] > 0 &&
          (immu__index_get_revision(s->ix, key, 3, seen[k], &e) != 0 ||
           e.revision != seen[k] || e.tx != seen[k]))
        atomic_fetch_add(&s->errors, 1);
    }
    if (++n % 16 == 0) {
      uint64_t tx = 0;
      if (immu__index_scan(s->ix, (const uint8_t *)"\0c", 2, NULL, 0, 0, NULL,
                           0, 0, n % 32 == 0, cscan_cb, &tx) != 0)
        atomic_fetch_add(&s->errors, 1);
    }
  }
  immu__index_entry_clear(&e);
  return NULL;
}

static void test_concurrent(void **state) {
  char dir[512];
  cshared s;
  pthread_t th[2];
  batch b;
  uint64_t tx = 1;
  (void)state;

  make_dir(dir, sizeof dir);
  s.ix = open_ix(dir, 64);
  atomic_init(&s.done, 0);
  atomic_init(&s.errors, 0);
  atomic_init(&s.reads, 0);
  batch_init(&b, 5 * CKEYS);
  for (int i = 0; i < 2; i++)
    assert_int_equal(pthread_create(&th[i], NULL, reader, &s), 0);
  while (tx <= CTXS) {
    uint64_t first = tx;
    b.n = 0;
    for (int t = 0; t < 5; t++, tx++)
      for (int k = 0; k < CKEYS; k++) {
        uint8_t key[3] = {0x00, 'c', (uint8_t)k};
        batch_add(&b, key, 3, tx, (uint32_t)k, 4);
      }
    assert_rc(immu__index_apply(s.ix, first, tx - 1, b.kv, b.n), 0);
    if (tx % 100 == 1)
      assert_rc(immu__index_flush(s.ix), 0);
  }
  atomic_store(&s.done, 1);
  for (int i = 0; i < 2; i++)
    pthread_join(th[i], NULL);
  assert_int_equal(atomic_load(&s.errors), 0);
  assert_true(atomic_load(&s.reads) > 0);
  check_latest(s.ix, (const uint8_t *)"\0c\x03", 3, CTXS, CTXS);

  batch_free(&b);
  immu__index_close(s.ix);
  assert_rc(immu__index_destroy(g_env, dir), 0);
  remove_dir(dir);
}

/* ---- allocation failures ---- */

static int count_cb(void *arg, const immu_index_entry *e) {
  (void)e;
  (*(int *)arg)++;
  return 0;
}

static int zcount_cb(void *arg, const immu_index_zmember *m) {
  (void)m;
  (*(int *)arg)++;
  return 0;
}

/* Runs |expr| failing our |i|-th allocation for i = 0, 1, ... until it
 * succeeds; every failure must be IMMU_ENOMEM. */
#define OOM_LOOP(expr)                                                         \
  do {                                                                         \
    int orc_;                                                                  \
    for (long oi_ = 0;; oi_++) {                                               \
      assert_true(oi_ < 1000);                                                 \
      immu__mem_fail_after(oi_, 0);                                            \
      orc_ = (expr);                                                           \
      immu__mem_fail_after(-1, 0);                                             \
      if (orc_ == 0)                                                           \
        break;                                                                 \
      assert_rc(orc_, IMMU_ENOMEM);                                            \
    }                                                                          \
  } while (0)

static void test_oom(void **state) {
  char dir[512];
  immu_index *ix = NULL;
  batch b;
  uint8_t longkey[300];
  immu_index_entry e = {0};
  uint64_t cnt;
  int n;
  zm z = {0};
  (void)state;

  make_dir(dir, sizeof dir);
  OOM_LOOP(immu__index_open(g_env, dir, 64, &ix, NULL));
  batch_init(&b, 8);
  memset(longkey, 0, sizeof longkey);
  longkey[299] = 'k';
  b.n = 0;
  for (uint64_t tx = 1; tx <= 2; tx++) {
    batch_add(&b, (const uint8_t *)"\0a", 2, tx, 0, 10);
    z.score = -1.0;
    z.k[0] = 'a';
    z.kl = 1;
    zadd(&b, &z, tx, 1);
  }
  /* a key longer than the stack buffers, with 0x00 bytes to escape */
  b.kv[b.n] = b.kv[0];
  b.kv[b.n].key = longkey;
  b.kv[b.n].klen = sizeof longkey;
  b.kv[b.n].tx = 2;
  b.kv[b.n].idx = 2;
  b.n++;
  OOM_LOOP(immu__index_apply(ix, 1, 2, b.kv, b.n));
  assert_int_equal(immu__index_last_tx(ix), 2);

  OOM_LOOP(immu__index_get_latest(ix, (const uint8_t *)"\0a", 2, &e));
  assert_int_equal(e.revision, 2);
  assert_true(e.has_inline);
  immu__index_entry_clear(&e);
  OOM_LOOP(immu__index_get_latest(ix, longkey, sizeof longkey, &e));
  OOM_LOOP(immu__index_get_revision(ix, longkey, sizeof longkey, 1, &e));
  immu__index_entry_clear(&e);
  n = 0;
  OOM_LOOP((n = 0, immu__index_history(ix, longkey, sizeof longkey, 0, 1,
                                       count_cb, &n)));
  assert_int_equal(n, 1);
  OOM_LOOP((n = 0, immu__index_scan(ix, NULL, 0, longkey, sizeof longkey, 1,
                                    NULL, 0, 0, 0, count_cb, &n)));
  assert_int_equal(n, 3); /* longkey, "\0a" and the ZAdd key (0x01...) */
  OOM_LOOP((n = 0, immu__index_zscan(ix, (const uint8_t *)"s", 1, -INFINITY, 0,
                                     INFINITY, 0, longkey, sizeof longkey, -2.0,
                                     0, 0, zcount_cb, &n)));
  assert_int_equal(n, 1);
  OOM_LOOP(immu__index_count(ix, (const uint8_t *)"\0a", 2, &cnt));
  assert_int_equal(cnt, 1);

  batch_free(&b);
  immu__index_close(ix);
  assert_rc(immu__index_destroy(g_env, dir), 0);
  remove_dir(dir);
}

/* The latest rows of an apply are answered from the row cache, which is
 * per index and emptied when its index closes; a reopened index answers
 * the same rows from RocksDB. */
static void test_row_cache(void **state) {
  char d1[512], d2[512];
  immu_index *a, *b;
  immu__rcache_stats st0, st;
  immu_index_entry e = {0};
  batch ba, bb;
  const uint8_t *k = (const uint8_t *)"\0rk";
  (void)state;

  make_dir(d1, sizeof d1);
  make_dir(d2, sizeof d2);
  a = open_ix(d1, 64);
  b = open_ix(d2, 64);
  batch_init(&ba, 4);
  batch_init(&bb, 4);
  batch_add(&ba, k, 3, 1, 0, 8);
  batch_add(&bb, k, 3, 1, 0, 9);
  batch_add(&bb, k, 3, 2, 0, 10);
  assert_rc(immu__index_apply(a, 1, 1, ba.kv, ba.n), 0);
  assert_rc(immu__index_apply(b, 1, 2, bb.kv, bb.n), 0);

  immu__index_env_rcache_stats(g_env, &st0);
  assert_true(st0.rows >= 2);
  assert_rc(immu__index_get_latest_cached(a, k, 3, &e), 0);
  assert_int_equal(e.tx, 1);
  assert_int_equal(e.revision, 1);
  assert_int_equal(e.vlen, 8);
  assert_true(e.has_inline);
  assert_memory_equal(e.inline_value, ba.vbuf[0], 8);
  assert_rc(immu__index_get_latest(b, k, 3, &e), 0);
  assert_int_equal(e.tx, 2);
  assert_int_equal(e.revision, 2);
  assert_memory_equal(e.inline_value, bb.vbuf[1], 10);
  /* the earlier revision comes from its 'h' row */
  assert_rc(immu__index_get_revision(b, k, 3, 1, &e), 0);
  assert_int_equal(e.tx, 1);
  immu__index_env_rcache_stats(g_env, &st);
  assert_true(st.hits >= st0.hits + 3);

  /* a rewrite replaces the cached row at once */
  ba.n = 0;
  batch_add(&ba, k, 3, 2, 0, 12);
  assert_rc(immu__index_apply(a, 2, 2, ba.kv, ba.n), 0);
  assert_rc(immu__index_get_latest_cached(a, k, 3, &e), 0);
  assert_int_equal(e.revision, 2);
  assert_int_equal(e.vlen, 12);
  assert_memory_equal(e.inline_value, ba.vbuf[0], 12);

  /* closing drops the index's rows; reopened, RocksDB answers alike */
  immu__index_close(a);
  immu__index_env_rcache_stats(g_env, &st);
  assert_int_equal(st.rows, st0.rows - 1);
  a = open_ix(d1, 64);
  immu__index_env_rcache_stats(g_env, &st0);
  assert_rc(immu__index_get_latest(a, k, 3, &e), 0);
  assert_int_equal(e.revision, 2);
  assert_int_equal(e.vlen, 12);
  assert_memory_equal(e.inline_value, ba.vbuf[0], 12);
  immu__index_env_rcache_stats(g_env, &st);
  assert_int_equal(st.hits, st0.hits);
  assert_int_equal(st.misses, st0.misses + 1);

  immu__index_entry_clear(&e);
  batch_free(&ba);
  batch_free(&bb);
  immu__index_close(a);
  immu__index_close(b);
  immu__index_env_rcache_stats(g_env, &st);
  assert_int_equal(st.rows, 0);
  assert_rc(immu__index_destroy(g_env, d1), 0);
  assert_rc(immu__index_destroy(g_env, d2), 0);
  remove_dir(d1);
  remove_dir(d2);
}

/* An index opened empty reads the previous rows of an apply from the row
 * cache (a miss is a new key) while the cache has dropped nothing; once it
 * drops rows (a cache too small for the keys), it goes back to RocksDB for
 * good, and the revisions stay right either way. */
static void test_complete_cache(void **state) {
  char dir[512];
  immu_index_env *env;
  immu_index *ix;
  immu__rcache_stats st0, st;
  batch b;
  const uint32_t nk = 600;
  uint64_t tx = 0;
  char *msg = NULL;
  (void)state;

  /* 512 KiB: a 64 KiB row cache, 1 KiB a shard, far too small for nk */
  assert_rc(immu__index_env_new(512 << 10, 1, &env), 0);
  make_dir(dir, sizeof dir);
  assert_rc(immu__index_open(env, dir, 64, &ix, &msg), 0);
  assert_null(msg);
  batch_init(&b, nk);

  /* Empty at open: the first apply looks its keys up in the cache only. */
  immu__index_env_rcache_stats(env, &st0);
  b.n = 0;
  tx++;
  for (uint32_t i = 0; i < 8; i++) {
    uint8_t key[8] = {0x00, 'c', (uint8_t)(i >> 8), (uint8_t)i};
    batch_add(&b, key, 4, tx, i, 20);
  }
  assert_rc(immu__index_apply(ix, tx, tx, b.kv, b.n), 0);
  immu__index_env_rcache_stats(env, &st);
  assert_int_equal(st.misses, st0.misses + 8);
  /* Rewritten while the cache is complete: revision 2 from cached rows. */
  tx++;
  for (size_t i = 0; i < b.n; i++)
    b.kv[i].tx = tx;
  assert_rc(immu__index_apply(ix, tx, tx, b.kv, b.n), 0);
  immu__index_env_rcache_stats(env, &st);
  assert_int_equal(st.hits, st0.hits + 8);
  for (uint32_t i = 0; i < 8; i++) {
    uint8_t key[8] = {0x00, 'c', (uint8_t)(i >> 8), (uint8_t)i};
    check_latest(ix, key, 4, tx, 2);
  }

  /* Three rounds over nk keys: the cache evicts during the first. */
  for (int round = 0; round < 3; round++) {
    for (uint32_t base = 0; base < nk; base += 50) {
      b.n = 0;
      tx++;
      for (uint32_t i = base; i < base + 50; i++) {
        uint8_t key[8] = {0x00, 'k', (uint8_t)(i >> 8), (uint8_t)i};
        batch_add(&b, key, 4, tx, i - base, 20);
      }
      assert_rc(immu__index_apply(ix, tx, tx, b.kv, b.n), 0);
    }
  }
  immu__index_env_rcache_stats(env, &st);
  assert_true(st.rows < nk);
  for (uint32_t i = 0; i < nk; i++) {
    uint8_t key[8] = {0x00, 'k', (uint8_t)(i >> 8), (uint8_t)i};
    immu_index_entry e = {0};
    assert_rc(immu__index_get_latest(ix, key, 4, &e), 0);
    assert_int_equal(e.revision, 3);
    assert_rc(immu__index_get_revision(ix, key, 4, 1, &e), 0);
    assert_int_equal(e.revision, 1);
    immu__index_entry_clear(&e);
  }
  uint64_t cnt;
  assert_rc(immu__index_count(ix, NULL, 0, &cnt), 0);
  assert_int_equal(cnt, nk + 8);

  batch_free(&b);
  immu__index_close(ix);
  assert_rc(immu__index_destroy(env, dir), 0);
  remove_dir(dir);
  immu__index_env_free(env);
}

static void test_destroy(void **state) {
  char dir[512];
  immu_index *ix;
  (void)state;
  make_dir(dir, sizeof dir);
  ix = open_ix(dir, 0);
  immu__index_close(ix);
  assert_rc(immu__index_destroy(g_env, dir), 0);
  assert_int_not_equal(access(dir, F_OK), 0);
  /* a second destroy of a missing directory is fine */
  assert_rc(immu__index_destroy(g_env, dir), 0);
  remove_dir(dir);
}

static int setup(void **state) {
  (void)state;
  return immu__index_env_new(8 << 20, 2, &g_env);
}

static int teardown(void **state) {
  (void)state;
  immu__index_env_free(g_env);
  g_env = NULL;
  return 0;
}

int main(void) {
  const char *seed = getenv("IMMU_TEST_SEED");
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_enc_order),
      cmocka_unit_test(test_apply_revisions),
      cmocka_unit_test(test_history),
      cmocka_unit_test(test_scan_model),
      cmocka_unit_test(test_zscan_model),
      cmocka_unit_test(test_inline),
      cmocka_unit_test(test_metadata),
      cmocka_unit_test(test_corrupt),
      cmocka_unit_test(test_old_format),
      cmocka_unit_test(test_concurrent),
      cmocka_unit_test(test_row_cache),
      cmocka_unit_test(test_oom),
      cmocka_unit_test(test_complete_cache),
      cmocka_unit_test(test_destroy),
  };
  rng_state = seed ? strtoull(seed, NULL, 0) : 0x1dbc0ffee;
  return cmocka_run_group_tests(tests, setup, teardown);
}
