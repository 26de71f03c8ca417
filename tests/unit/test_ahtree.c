/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Property tests of the append-only binary-linking tree (spec 5).
 *
 * One random tree of 512 leaves gives every tree size 1..512 (Root(m) and
 * the proofs at size m only look at the first m leaves). For every j in
 * 1..512 and every i in 1..j:
 *   - InclusionProof(i, j) equals RFC 6962 PATH(i-1, D[0:j]) and
 *     ConsistencyProof(i, j) equals the spec 5.3 form (power-of-two prefix,
 *     the (n, n) case), both computed by an independent reference, and both
 *     verify against Root(i) / Root(j);
 *   - each generated proof gets ONE tamper (cycling through the kinds) that
 *     must be rejected;
 *   - InclusionProof(j, j) verifies as a last-inclusion proof (with tamper).
 * Root(m) is compared with a recursive MTH for every m.
 *
 * Also: a custom node store (open / reopen / continue), a failing store,
 * the documented node layout, and the hash cost of appends and roots.
 *
 * The reference hashes with OpenSSL's SHA256() directly (not immu_sha256)
 * so it shares no code with the implementation and does not disturb
 * immu_hash_count(). Set IMMU_TEST_SEED to replay another seed.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <openssl/sha.h>

#include "immudb/crypto.h"

#define assert_rc(expr, want)                                                  \
  do {                                                                         \
    int rc_ = (expr);                                                          \
    int want_ = (want);                                                        \
    if (rc_ != want_) {                                                        \
      fail_msg("%s = %d (%s), want %d (%s)", #expr, rc_, immu_err_name(rc_),  \
               want_, immu_err_name(want_));                                   \
    }                                                                          \
  } while (0)

#define assert_digest_equal(x, y) assert_memory_equal((x)->b, (y)->b, 32)

/* ------------------------------------------------------------------ */
/* PRNG                                                                */
/* ------------------------------------------------------------------ */

static uint64_t rng_state;

static uint64_t rnd(void) {
  uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

static size_t rnd_below(size_t n) { return (size_t)(rnd() % n); }

static void rnd_digest(immu_digest *d) {
  for (size_t i = 0; i < IMMU_DIGEST_LEN; i += 8) {
    uint64_t v = rnd();
    memcpy(d->b + i, &v, 8);
  }
}

static void flip_bit(immu_digest *d) {
  d->b[rnd_below(32)] ^= (uint8_t)(1u << rnd_below(8));
}

static int seed_setup(void **state) {
  (void)state;
  const char *env = getenv("IMMU_TEST_SEED");
  uint64_t seed = 0x0badc0ffee123457ull;
  if (env != NULL && env[0] != '\0') {
    seed = strtoull(env, NULL, 0);
  }
  rng_state = seed;
  printf("# test_ahtree seed 0x%016llx\n", (unsigned long long)seed);
  return 0;
}

static unsigned popcount64(uint64_t x) {
  unsigned c = 0;
  while (x) {
    x &= x - 1;
    c++;
  }
  return c;
}

static unsigned ctz64(uint64_t x) {
  unsigned c = 0;
  while (x && !(x & 1)) {
    x >>= 1;
    c++;
  }
  return c;
}

/* ------------------------------------------------------------------ */
/* Independent reference                                               */
/* ------------------------------------------------------------------ */

static void ref_leaf(const immu_digest *alh, immu_digest *out) {
  uint8_t buf[33];
  buf[0] = 0x00;
  memcpy(buf + 1, alh->b, 32);
  SHA256(buf, sizeof buf, out->b);
}

static void ref_node(const immu_digest *l, const immu_digest *r,
                     immu_digest *out) {
  uint8_t buf[65];
  buf[0] = 0x01;
  memcpy(buf + 1, l->b, 32);
  memcpy(buf + 33, r->b, 32);
  SHA256(buf, sizeof buf, out->b);
}

static uint64_t split_k(uint64_t n) {
  uint64_t k = 1;
  while (k * 2 < n) {
    k *= 2;
  }
  return k;
}

static int is_pow2(uint64_t x) { return x != 0 && (x & (x - 1)) == 0; }

#define NMAX 512
#define LEVELS 10 /* 2^9 = 512 */

/* The test tree: alh[1..NMAX], leaf hashes and the perfect subtrees
 * lvl[l][k] = MTH of leaves k*2^l+1 .. (k+1)*2^l (1-based leaves). */
static immu_digest alh[NMAX + 1];
static immu_digest leafh[NMAX + 1];
static immu_digest lvl[LEVELS][NMAX];
static immu_digest ref_roots[NMAX + 1];

/* MTH of the 1-based leaves lo+1 .. hi, by RFC 6962 recursion; perfect,
 * aligned ranges come from lvl[][]. */
static void ref_mth(uint64_t lo, uint64_t hi, immu_digest *out) {
  uint64_t n = hi - lo;
  if (is_pow2(n) && lo % n == 0) {
    *out = lvl[ctz64(n)][lo / n];
    return;
  }
  uint64_t k = split_k(n);
  immu_digest l, r;
  ref_mth(lo, lo + k, &l);
  ref_mth(lo + k, hi, &r);
  ref_node(&l, &r, out);
}

/* Plain recursion without the level cache, used once per size to check
 * the cache itself against the definition. */
static void ref_mth_plain(uint64_t lo, uint64_t hi, immu_digest *out) {
  uint64_t n = hi - lo;
  if (n == 1) {
    *out = leafh[lo + 1];
    return;
  }
  uint64_t k = split_k(n);
  immu_digest l, r;
  ref_mth_plain(lo, lo + k, &l);
  ref_mth_plain(lo + k, hi, &r);
  ref_node(&l, &r, out);
}

static void ref_init(void) {
  for (uint64_t n = 1; n <= NMAX; n++) {
    rnd_digest(&alh[n]);
    ref_leaf(&alh[n], &leafh[n]);
    lvl[0][n - 1] = leafh[n];
  }
  for (unsigned l = 1; l < LEVELS; l++) {
    for (uint64_t k = 0; k < ((uint64_t)NMAX >> l); k++) {
      ref_node(&lvl[l - 1][2 * k], &lvl[l - 1][2 * k + 1], &lvl[l][k]);
    }
  }
  for (uint64_t m = 1; m <= NMAX; m++) {
    ref_mth(0, m, &ref_roots[m]);
  }
}

typedef struct dlist {
  immu_digest d[IMMU_PROOF_MAX_TERMS + 2];
  size_t n;
} dlist;

/* PATH(m, D[lo:hi]) bottom-up, appended to |out|. */
static void ref_path(uint64_t m, uint64_t lo, uint64_t hi, dlist *out) {
  uint64_t n = hi - lo;
  if (n <= 1) {
    return;
  }
  uint64_t k = split_k(n);
  if (m < k) {
    ref_path(m, lo, lo + k, out);
    ref_mth(lo + k, hi, &out->d[out->n++]);
  } else {
    ref_path(m - k, lo + k, hi, out);
    ref_mth(lo, lo + k, &out->d[out->n++]);
  }
}

/* SUBPROOF(m, D[lo:hi], b) of RFC 6962. */
static void ref_subproof(uint64_t m, uint64_t lo, uint64_t hi, int b,
                         dlist *out) {
  uint64_t n = hi - lo;
  if (m == n) {
    if (!b) {
      ref_mth(lo, hi, &out->d[out->n++]);
    }
    return;
  }
  uint64_t k = split_k(n);
  if (m <= k) {
    ref_subproof(m, lo, lo + k, b, out);
    ref_mth(lo + k, hi, &out->d[out->n++]);
  } else {
    ref_subproof(m - k, lo + k, hi, 0, out);
    ref_mth(lo, lo + k, &out->d[out->n++]);
  }
}

/* immudb's ConsistencyProof(i, j), spec 5.3. */
static void ref_consistency(uint64_t i, uint64_t j, dlist *out) {
  out->n = 0;
  if (i == j) {
    if (j >= 2) {
      uint64_t k = split_k(j);
      ref_mth(k, j, &out->d[out->n++]);
      ref_mth(0, k, &out->d[out->n++]);
    }
    return;
  }
  if (is_pow2(i)) {
    ref_mth(0, i, &out->d[out->n++]);
  }
  ref_subproof(i, 0, j, 1, out);
}

/* Transcriptions of the spec 5.4 verifiers, used only as an oracle to
 * decide whether a re-labelled proof (other i or j) is a claim the spec's
 * algorithm rejects. */
static int ref_verify_inclusion(const immu_digest *p, size_t n, uint64_t i,
                                uint64_t j, const immu_digest *ileaf,
                                const immu_digest *jroot) {
  if (i > j || i == 0 || (i < j && n == 0)) {
    return 0;
  }
  uint64_t i1 = i - 1, j1 = j - 1;
  immu_digest c = *ileaf;
  for (size_t k = 0; k < n; k++) {
    if (i1 % 2 == 0 && i1 != j1) {
      ref_node(&c, &p[k], &c);
    } else {
      ref_node(&p[k], &c, &c);
    }
    i1 >>= 1;
    j1 >>= 1;
  }
  return memcmp(c.b, jroot->b, 32) == 0;
}

static int ref_verify_consistency(const immu_digest *p, size_t n, uint64_t i,
                                  uint64_t j, const immu_digest *iroot,
                                  const immu_digest *jroot) {
  if (i > j || i == 0 || (i < j && n == 0)) {
    return 0;
  }
  if (i == j && n == 0) {
    return memcmp(iroot->b, jroot->b, 32) == 0;
  }
  uint64_t fn = i - 1, sn = j - 1;
  while (fn % 2 == 1) {
    fn >>= 1;
    sn >>= 1;
  }
  immu_digest ci = p[0], cj = p[0];
  for (size_t k = 1; k < n; k++) {
    if (fn % 2 == 1 || fn == sn) {
      ref_node(&p[k], &ci, &ci);
      ref_node(&p[k], &cj, &cj);
      while (fn % 2 == 0 && fn != 0) {
        fn >>= 1;
        sn >>= 1;
      }
    } else {
      ref_node(&cj, &p[k], &cj);
    }
    fn >>= 1;
    sn >>= 1;
  }
  return memcmp(ci.b, iroot->b, 32) == 0 && memcmp(cj.b, jroot->b, 32) == 0;
}

static void check_same_list(const immu_digest *got, size_t ngot,
                            const dlist *want, const char *what, uint64_t i,
                            uint64_t j) {
  if (ngot != want->n) {
    fail_msg("%s(%llu, %llu): %zu terms, want %zu", what,
             (unsigned long long)i, (unsigned long long)j, ngot, want->n);
  }
  for (size_t k = 0; k < ngot; k++) {
    if (memcmp(got[k].b, want->d[k].b, 32) != 0) {
      fail_msg("%s(%llu, %llu): term %zu differs", what, (unsigned long long)i,
               (unsigned long long)j, k);
    }
  }
}

/* ------------------------------------------------------------------ */
/* Tampering                                                           */
/* ------------------------------------------------------------------ */

/*
 * One tamper per generated proof, cycling through the kinds below; a kind
 * that does not apply (e.g. flipping a term of an empty proof) passes to the
 * next one. All of them must be rejected:
 *
 *   K_TERM   flip a bit of a random term (every term feeds the fold; for
 *            consistency every term feeds cj);
 *   K_FIRST  flip a bit of the leaf hash / of Root(i);
 *   K_ROOT   flip a bit of Root(j);
 *   K_DROP   drop the last term (the fold stops below the root). Not for a
 *            consistency proof with i == j left empty: spec 5.4 accepts an
 *            empty (n, n) proof when the roots are equal, and they are;
 *   K_EXTRA  insert a random or duplicated term (one hash too many);
 *   K_I/K_J  present the same terms for i +- 1 (with that leaf's genuine
 *            hash / Root(i')) or j +- 1 (with the genuine Root(j')). Such a
 *            relabelled claim is true data, so it is only a must-fail when
 *            the spec's own algorithm rejects it: a transcription of spec
 *            5.4 (ref_verify_*) decides, and claims it accepts are counted
 *            and skipped. (With these labels it never accepted one.)
 *
 * Last-inclusion proofs (i == j) get the same kinds, with K_I = "i = 0" and
 * K_J = "another leaf of the tree claimed as the last one".
 */

typedef struct tstats {
  size_t applied;
  size_t not_must_fail; /* relabels the spec's own algorithm accepts */
  size_t inapplicable;
} tstats;

enum {
  K_TERM,
  K_FIRST, /* leaf (inclusion) or iroot (consistency) */
  K_ROOT,  /* jroot */
  K_DROP,
  K_EXTRA,
  K_I,
  K_J,
  K_KINDS
};

/* Copies |n| terms and inserts one extra term (random or a duplicate) at a
 * random position. Returns the new count. */
static size_t with_extra(const immu_digest *p, size_t n, immu_digest *out) {
  size_t pos = rnd_below(n + 1);
  immu_digest extra;
  if (n > 0 && rnd_below(2) == 0) {
    extra = p[rnd_below(n)];
  } else {
    rnd_digest(&extra);
  }
  memcpy(out, p, pos * sizeof *p);
  out[pos] = extra;
  memcpy(out + pos + 1, p + pos, (n - pos) * sizeof *p);
  return n + 1;
}

/* Picks i +- 1 within [lo, hi]; returns 0 if neither fits. */
static uint64_t pick_neighbour(uint64_t x, uint64_t lo, uint64_t hi) {
  int up_ok = x + 1 <= hi, down_ok = x >= lo + 1;
  if (up_ok && down_ok) {
    return rnd_below(2) ? x + 1 : x - 1;
  }
  if (up_ok) {
    return x + 1;
  }
  if (down_ok) {
    return x - 1;
  }
  return 0;
}

/* Tampers a genuine InclusionProof(i, j) with |kind|; returns 1 if applied
 * (and rejected), 0 if the kind does not apply or is not a must-fail. */
static int tamper_inclusion(int kind, const immu_digest *p, size_t n,
                            uint64_t i, uint64_t j, tstats *st) {
  immu_digest t[IMMU_PROOF_MAX_TERMS + 2], leaf = leafh[i],
                                            root = ref_roots[j];
  memcpy(t, p, n * sizeof *p);
  switch (kind) {
  case K_TERM:
    if (n == 0) {
      return 0;
    }
    flip_bit(&t[rnd_below(n)]);
    assert_rc(immu_ahtree_verify_inclusion(t, n, i, j, &leaf, &root),
              IMMU_EVERIFY);
    return 1;
  case K_FIRST:
    flip_bit(&leaf);
    assert_rc(immu_ahtree_verify_inclusion(t, n, i, j, &leaf, &root),
              IMMU_EVERIFY);
    return 1;
  case K_ROOT:
    flip_bit(&root);
    assert_rc(immu_ahtree_verify_inclusion(t, n, i, j, &leaf, &root),
              IMMU_EVERIFY);
    return 1;
  case K_DROP:
    /* Fewer hashes end below the root (or an empty proof with i < j). */
    if (n == 0) {
      return 0;
    }
    assert_rc(immu_ahtree_verify_inclusion(t, n - 1, i, j, &leaf, &root),
              IMMU_EVERIFY);
    return 1;
  case K_EXTRA: {
    size_t n2 = with_extra(p, n, t);
    assert_rc(immu_ahtree_verify_inclusion(t, n2, i, j, &leaf, &root),
              IMMU_EVERIFY);
    return 1;
  }
  case K_I: {
    /* The same terms presented as proof for leaf i' (with its genuine leaf
     * hash) in the same tree. */
    uint64_t i2 = pick_neighbour(i, 1, j);
    if (i2 == 0) {
      return 0;
    }
    if (ref_verify_inclusion(t, n, i2, j, &leafh[i2], &root)) {
      st->not_must_fail++;
      return 0;
    }
    assert_rc(immu_ahtree_verify_inclusion(t, n, i2, j, &leafh[i2], &root),
              IMMU_EVERIFY);
    return 1;
  }
  case K_J: {
    /* The same terms presented for the tree of size j' (genuine root). */
    uint64_t j2 = pick_neighbour(j, i, NMAX);
    if (j2 == 0) {
      return 0;
    }
    if (ref_verify_inclusion(t, n, i, j2, &leaf, &ref_roots[j2])) {
      st->not_must_fail++;
      return 0;
    }
    assert_rc(
        immu_ahtree_verify_inclusion(t, n, i, j2, &leaf, &ref_roots[j2]),
        IMMU_EVERIFY);
    return 1;
  }
  default:
    fail();
  }
  return 0;
}

static int tamper_consistency(int kind, const immu_digest *p, size_t n,
                              uint64_t i, uint64_t j, tstats *st) {
  immu_digest t[IMMU_PROOF_MAX_TERMS + 2], ir = ref_roots[i],
                                            jr = ref_roots[j];
  memcpy(t, p, n * sizeof *p);
  switch (kind) {
  case K_TERM:
    /* Every term feeds cj (spec 5.4 step 5), proof[0] feeds both. */
    if (n == 0) {
      return 0;
    }
    flip_bit(&t[rnd_below(n)]);
    assert_rc(immu_ahtree_verify_consistency(t, n, i, j, &ir, &jr),
              IMMU_EVERIFY);
    return 1;
  case K_FIRST:
    flip_bit(&ir);
    assert_rc(immu_ahtree_verify_consistency(t, n, i, j, &ir, &jr),
              IMMU_EVERIFY);
    return 1;
  case K_ROOT:
    flip_bit(&jr);
    assert_rc(immu_ahtree_verify_consistency(t, n, i, j, &ir, &jr),
              IMMU_EVERIFY);
    return 1;
  case K_DROP:
    /* With i == j an empty proof is accepted when the roots are equal
     * (spec 5.4 step 2), and here they are: dropping the only term is not a
     * must-fail. Generated (n, n) proofs have 0 or 2 terms, so this only
     * guards the rule. */
    if (n == 0 || (i == j && n == 1)) {
      return 0;
    }
    assert_rc(immu_ahtree_verify_consistency(t, n - 1, i, j, &ir, &jr),
              IMMU_EVERIFY);
    return 1;
  case K_EXTRA: {
    size_t n2 = with_extra(p, n, t);
    assert_rc(immu_ahtree_verify_consistency(t, n2, i, j, &ir, &jr),
              IMMU_EVERIFY);
    return 1;
  }
  case K_I: {
    uint64_t i2 = pick_neighbour(i, 1, j);
    if (i2 == 0) {
      return 0;
    }
    if (ref_verify_consistency(t, n, i2, j, &ref_roots[i2], &jr)) {
      st->not_must_fail++;
      return 0;
    }
    assert_rc(immu_ahtree_verify_consistency(t, n, i2, j, &ref_roots[i2], &jr),
              IMMU_EVERIFY);
    return 1;
  }
  case K_J: {
    uint64_t j2 = pick_neighbour(j, i, NMAX);
    if (j2 == 0) {
      return 0;
    }
    if (ref_verify_consistency(t, n, i, j2, &ir, &ref_roots[j2])) {
      st->not_must_fail++;
      return 0;
    }
    assert_rc(immu_ahtree_verify_consistency(t, n, i, j2, &ir, &ref_roots[j2]),
              IMMU_EVERIFY);
    return 1;
  }
  default:
    fail();
  }
  return 0;
}

/* Last inclusion: every sibling is on the left, so the fold walks the right
 * spine and can only end at the last leaf. */
static int tamper_last(int kind, const immu_digest *p, size_t n, uint64_t j) {
  immu_digest t[IMMU_PROOF_MAX_TERMS + 2], leaf = leafh[j],
                                            root = ref_roots[j];
  memcpy(t, p, n * sizeof *p);
  switch (kind) {
  case K_TERM:
    if (n == 0) {
      return 0;
    }
    flip_bit(&t[rnd_below(n)]);
    break;
  case K_FIRST:
    flip_bit(&leaf);
    break;
  case K_ROOT:
    flip_bit(&root);
    break;
  case K_DROP:
    if (n == 0) {
      return 0;
    }
    n--;
    break;
  case K_EXTRA:
    n = with_extra(p, n, t);
    break;
  case K_I:
    /* i = 0 is rejected (spec 5.4); other values of i are not read. */
    assert_rc(immu_ahtree_verify_last_inclusion(t, n, 0, &leaf, &root),
              IMMU_EVERIFY);
    return 1;
  case K_J:
    /* Another leaf of the same tree is not its last leaf. */
    if (j == 1) {
      return 0;
    }
    leaf = leafh[1 + rnd_below(j - 1)];
    break;
  default:
    fail();
  }
  assert_rc(immu_ahtree_verify_last_inclusion(t, n, j, &leaf, &root),
            IMMU_EVERIFY);
  return 1;
}

/* Applies the tamper kind |*next| (or the following ones if it does not
 * apply) and advances the cycle. */
#define APPLY_ONE(call_with_kind, cycle, st)                                   \
  do {                                                                         \
    int done_ = 0;                                                             \
    for (int a_ = 0; a_ < K_KINDS && !done_; a_++) {                           \
      int kind = (cycle + a_) % K_KINDS;                                       \
      done_ = (call_with_kind);                                                \
      if (!done_) {                                                            \
        (st)->inapplicable++;                                                  \
      }                                                                        \
    }                                                                          \
    assert_true(done_);                                                        \
    (st)->applied++;                                                           \
    cycle = (cycle + 1) % K_KINDS;                                             \
  } while (0)

/* ------------------------------------------------------------------ */
/* The all-pairs property test                                         */
/* ------------------------------------------------------------------ */

static immu_ahtree *build_mem_tree(uint64_t n) {
  immu_ahtree *t = NULL;
  immu_digest root;
  assert_rc(immu_ahtree_new_mem(&t), 0);
  for (uint64_t m = 1; m <= n; m++) {
    assert_rc(immu_ahtree_append(t, alh[m].b, 32, &root), 0);
    assert_digest_equal(&root, &ref_roots[m]);
    assert_int_equal(immu_ahtree_size(t), m);
  }
  return t;
}

static int tree_setup(void **state) {
  (void)state;
  ref_init();
  return 0;
}

static void test_roots_every_size(void **state) {
  (void)state;
  immu_ahtree *t = build_mem_tree(NMAX);
  immu_digest r, leaf;
  for (uint64_t m = 1; m <= NMAX; m++) {
    immu_digest plain;
    ref_mth_plain(0, m, &plain);
    assert_digest_equal(&plain, &ref_roots[m]);
    assert_rc(immu_ahtree_root_at(t, m, &r), 0);
    assert_digest_equal(&r, &ref_roots[m]);
    immu_ahtree_leaf(&alh[m], &leaf);
    assert_digest_equal(&leaf, &leafh[m]);
  }
  assert_rc(immu_ahtree_root_at(t, 0, &r), IMMU_ERANGE);
  assert_rc(immu_ahtree_root_at(t, NMAX + 1, &r), IMMU_ERANGE);
  immu_ahtree_free(t);

  /* Leaves are H(0x00 || payload) for any payload length. */
  immu_ahtree *t2 = NULL;
  uint8_t payload[100];
  immu_digest want;
  for (size_t k = 0; k < sizeof payload; k++) {
    payload[k] = (uint8_t)k;
  }
  assert_rc(immu_ahtree_new_mem(&t2), 0);
  assert_rc(immu_ahtree_append(t2, payload, 0, &r), 0);
  uint8_t z = 0;
  SHA256(&z, 1, want.b);
  assert_digest_equal(&r, &want);
  assert_rc(immu_ahtree_append(t2, payload, sizeof payload, NULL), 0);
  assert_int_equal(immu_ahtree_size(t2), 2);
  immu_ahtree_free(t2);
  immu_ahtree_free(NULL);
}

static void test_all_pairs(void **state) {
  (void)state;
  immu_ahtree *t = build_mem_tree(NMAX);
  immu_digest terms[IMMU_PROOF_MAX_TERMS];
  size_t nterms;
  dlist want;
  tstats inc_st = {0, 0, 0}, con_st = {0, 0, 0}, last_st = {0, 0, 0};
  int inc_cycle = 0, con_cycle = 0, last_cycle = 0;
  size_t pairs = 0;

  for (uint64_t j = 1; j <= NMAX; j++) {
    for (uint64_t i = 1; i <= j; i++) {
      pairs++;
      /* Inclusion. */
      assert_rc(immu_ahtree_inclusion_proof(t, i, j, terms, &nterms), 0);
      want.n = 0;
      ref_path(i - 1, 0, j, &want);
      check_same_list(terms, nterms, &want, "InclusionProof", i, j);
      assert_rc(immu_ahtree_verify_inclusion(terms, nterms, i, j, &leafh[i],
                                             &ref_roots[j]),
                0);
      APPLY_ONE(tamper_inclusion(kind, terms, nterms, i, j, &inc_st),
                inc_cycle, &inc_st);
      if (i == j) {
        assert_rc(immu_ahtree_verify_last_inclusion(terms, nterms, j,
                                                    &leafh[j], &ref_roots[j]),
                  0);
        APPLY_ONE(tamper_last(kind, terms, nterms, j), last_cycle, &last_st);
      } else if ((i + j) % 7 == 0) {
        /* A non-last leaf's genuine path is no last-inclusion proof. */
        assert_rc(immu_ahtree_verify_last_inclusion(terms, nterms, j,
                                                    &leafh[i], &ref_roots[j]),
                  IMMU_EVERIFY);
      }

      /* Consistency. */
      assert_rc(immu_ahtree_consistency_proof(t, i, j, terms, &nterms), 0);
      ref_consistency(i, j, &want);
      check_same_list(terms, nterms, &want, "ConsistencyProof", i, j);
      assert_rc(immu_ahtree_verify_consistency(terms, nterms, i, j,
                                               &ref_roots[i], &ref_roots[j]),
                0);
      APPLY_ONE(tamper_consistency(kind, terms, nterms, i, j, &con_st),
                con_cycle, &con_st);
    }
  }
  printf("# ahtree: %zu pairs; tampers rejected: inclusion %zu, consistency "
         "%zu, last-inclusion %zu; relabels the spec verifier itself accepts "
         "(skipped): inclusion %zu, consistency %zu\n",
         pairs, inc_st.applied, con_st.applied, last_st.applied,
         inc_st.not_must_fail, con_st.not_must_fail);
  assert_int_equal(pairs, (size_t)NMAX * (NMAX + 1) / 2);
  immu_ahtree_free(t);
}

/* Verifier argument rules of spec 5.4 that do not depend on hashes. */
static void test_verifier_rules(void **state) {
  (void)state;
  immu_ahtree *t = build_mem_tree(16);
  immu_digest terms[IMMU_PROOF_MAX_TERMS];
  size_t nterms;

  /* i > j, i = 0 */
  assert_rc(immu_ahtree_inclusion_proof(t, 3, 9, terms, &nterms), 0);
  assert_rc(immu_ahtree_verify_inclusion(terms, nterms, 0, 9, &leafh[3],
                                         &ref_roots[9]),
            IMMU_EVERIFY);
  assert_rc(immu_ahtree_verify_inclusion(terms, nterms, 10, 9, &leafh[3],
                                         &ref_roots[9]),
            IMMU_EVERIFY);
  /* i < j with an empty proof, even when leaf == root. */
  assert_rc(immu_ahtree_verify_inclusion(terms, 0, 1, 2, &leafh[1],
                                         &leafh[1]),
            IMMU_EVERIFY);
  /* i == j == 1: the empty proof of a 1-leaf tree. */
  assert_rc(immu_ahtree_inclusion_proof(t, 1, 1, terms, &nterms), 0);
  assert_int_equal(nterms, 0);
  assert_rc(immu_ahtree_verify_inclusion(terms, 0, 1, 1, &leafh[1],
                                         &ref_roots[1]),
            0);
  assert_rc(immu_ahtree_verify_last_inclusion(terms, 0, 1, &leafh[1],
                                              &ref_roots[1]),
            0);
  assert_rc(immu_ahtree_verify_last_inclusion(terms, 0, 0, &leafh[1],
                                              &ref_roots[1]),
            IMMU_EVERIFY);

  /* Consistency: i > j, i = 0, i < j with an empty proof. */
  assert_rc(immu_ahtree_consistency_proof(t, 3, 9, terms, &nterms), 0);
  assert_rc(immu_ahtree_verify_consistency(terms, nterms, 0, 9, &ref_roots[3],
                                           &ref_roots[9]),
            IMMU_EVERIFY);
  assert_rc(immu_ahtree_verify_consistency(terms, nterms, 10, 9,
                                           &ref_roots[3], &ref_roots[9]),
            IMMU_EVERIFY);
  assert_rc(immu_ahtree_verify_consistency(terms, 0, 3, 9, &ref_roots[3],
                                           &ref_roots[3]),
            IMMU_EVERIFY);
  /* i == j: the empty proof is accepted iff the roots are equal. */
  for (uint64_t n = 1; n <= 16; n++) {
    assert_rc(immu_ahtree_verify_consistency(terms, 0, n, n, &ref_roots[n],
                                             &ref_roots[n]),
              0);
    if (n > 1) {
      assert_rc(immu_ahtree_verify_consistency(terms, 0, n, n,
                                               &ref_roots[n - 1],
                                               &ref_roots[n]),
                IMMU_EVERIFY);
    }
  }
  /* (1, 1) generates an empty proof; (n, n) two terms. */
  assert_rc(immu_ahtree_consistency_proof(t, 1, 1, terms, &nterms), 0);
  assert_int_equal(nterms, 0);
  assert_rc(immu_ahtree_consistency_proof(t, 7, 7, terms, &nterms), 0);
  assert_int_equal(nterms, 2);
  /* A plain RFC 6962 proof (no power-of-two prefix) is rejected. */
  assert_rc(immu_ahtree_consistency_proof(t, 4, 11, terms, &nterms), 0);
  assert_rc(immu_ahtree_verify_consistency(terms, nterms, 4, 11,
                                           &ref_roots[4], &ref_roots[11]),
            0);
  assert_digest_equal(&terms[0], &ref_roots[4]);
  assert_rc(immu_ahtree_verify_consistency(terms + 1, nterms - 1, 4, 11,
                                           &ref_roots[4], &ref_roots[11]),
            IMMU_EVERIFY);

  /* Generators: arguments out of range. */
  assert_rc(immu_ahtree_inclusion_proof(t, 0, 5, terms, &nterms), IMMU_ERANGE);
  assert_rc(immu_ahtree_inclusion_proof(t, 6, 5, terms, &nterms), IMMU_ERANGE);
  assert_rc(immu_ahtree_inclusion_proof(t, 5, 17, terms, &nterms),
            IMMU_ERANGE);
  assert_rc(immu_ahtree_consistency_proof(t, 0, 5, terms, &nterms),
            IMMU_ERANGE);
  assert_rc(immu_ahtree_consistency_proof(t, 6, 5, terms, &nterms),
            IMMU_ERANGE);
  assert_rc(immu_ahtree_consistency_proof(t, 5, 17, terms, &nterms),
            IMMU_ERANGE);
  immu_ahtree_free(t);

  /* An empty tree has no roots or proofs. */
  immu_ahtree *e = NULL;
  immu_digest r;
  assert_rc(immu_ahtree_new_mem(&e), 0);
  assert_int_equal(immu_ahtree_size(e), 0);
  assert_rc(immu_ahtree_root_at(e, 0, &r), IMMU_ERANGE);
  assert_rc(immu_ahtree_root_at(e, 1, &r), IMMU_ERANGE);
  assert_rc(immu_ahtree_inclusion_proof(e, 1, 1, terms, &nterms), IMMU_ERANGE);
  assert_rc(immu_ahtree_consistency_proof(e, 1, 1, terms, &nterms),
            IMMU_ERANGE);
  immu_ahtree_free(e);
}

/* ------------------------------------------------------------------ */
/* Custom node store                                                   */
/* ------------------------------------------------------------------ */

typedef struct arr_store {
  immu_digest *nodes;
  uint64_t n, cap;
  int fail_append;
  int fail_read;
  int bad_call; /* set when the tree made an out-of-contract call */
  uint64_t reads, appends;
} arr_store;

static int st_read(void *ctx, uint64_t pos, size_t n, immu_digest *out) {
  arr_store *s = ctx;
  s->reads++;
  if (s->fail_read) {
    return -EIO;
  }
  if (pos > s->n || n > s->n - pos) {
    s->bad_call = 1;
    return -EIO;
  }
  memcpy(out, s->nodes + pos, n * sizeof *out);
  return 0;
}

static int st_append(void *ctx, uint64_t pos, const immu_digest *nodes,
                     size_t n) {
  arr_store *s = ctx;
  s->appends++;
  if (s->fail_append) {
    return -EIO;
  }
  if (pos != s->n) {
    s->bad_call = 1;
    return -EIO;
  }
  if (s->n + n > s->cap) {
    uint64_t cap = s->cap ? s->cap : 64;
    while (cap < s->n + n) {
      cap *= 2;
    }
    immu_digest *p = realloc(s->nodes, (size_t)cap * sizeof *p);
    if (p == NULL) {
      return -ENOMEM;
    }
    s->nodes = p;
    s->cap = cap;
  }
  memcpy(s->nodes + s->n, nodes, n * sizeof *nodes);
  s->n += n;
  return 0;
}

static immu_ahtree_store store_of(arr_store *s) {
  immu_ahtree_store st = {s, st_read, st_append};
  return st;
}

/* Deterministic payload of leaf m (1-based) for the big store tests. */
static void payload(uint64_t m, uint8_t out[32]) {
  uint8_t b[8];
  for (int k = 7; k >= 0; k--) {
    b[k] = (uint8_t)(m >> (8 * (7 - k)));
  }
  SHA256(b, sizeof b, out);
}

static void compare_trees(const immu_ahtree *a, const immu_ahtree *b,
                          uint64_t m) {
  immu_digest ra, rb, ta[IMMU_PROOF_MAX_TERMS], tb[IMMU_PROOF_MAX_TERMS];
  size_t na, nb;
  assert_rc(immu_ahtree_root_at(a, m, &ra), 0);
  assert_rc(immu_ahtree_root_at(b, m, &rb), 0);
  assert_digest_equal(&ra, &rb);
  uint64_t i = 1 + rnd_below((size_t)m);
  assert_rc(immu_ahtree_inclusion_proof(a, i, m, ta, &na), 0);
  assert_rc(immu_ahtree_inclusion_proof(b, i, m, tb, &nb), 0);
  assert_int_equal(na, nb);
  assert_memory_equal(ta, tb, na * sizeof *ta);
  assert_rc(immu_ahtree_consistency_proof(a, i, m, ta, &na), 0);
  assert_rc(immu_ahtree_consistency_proof(b, i, m, tb, &nb), 0);
  assert_int_equal(na, nb);
  assert_memory_equal(ta, tb, na * sizeof *ta);
}

static void test_custom_store(void **state) {
  (void)state;
  arr_store s;
  memset(&s, 0, sizeof s);
  immu_ahtree_store st = store_of(&s);
  immu_ahtree *mem = NULL, *cus = NULL;
  immu_digest rm, rc;
  uint8_t p[32];

  assert_rc(immu_ahtree_new_mem(&mem), 0);
  assert_rc(immu_ahtree_open(&st, 0, &cus), 0);
  assert_int_equal(immu_ahtree_size(cus), 0);
  for (uint64_t m = 1; m <= 1000; m++) {
    payload(m, p);
    assert_rc(immu_ahtree_append(mem, p, 32, &rm), 0);
    assert_rc(immu_ahtree_append(cus, p, 32, &rc), 0);
    assert_digest_equal(&rm, &rc);
    assert_int_equal(immu_ahtree_size(cus), m);
    /* A tree of m leaves holds 2m - popcount(m) nodes. */
    assert_int_equal(s.n, 2 * m - popcount64(m));
  }
  assert_int_equal(s.bad_call, 0);

  /* The documented layout: leaf i (0-based) at 2i - popcount(i), the node
   * of level l ending at leaf e at pos(e) + l. Compared with a reference
   * built from the same payloads. */
  {
    immu_digest *lv = calloc(1000, sizeof *lv);
    assert_non_null(lv);
    for (uint64_t i = 0; i < 1000; i++) {
      payload(i + 1, p);
      immu_digest a;
      memcpy(a.b, p, 32);
      ref_leaf(&a, &lv[i]);
      assert_digest_equal(&s.nodes[2 * i - popcount64(i)], &lv[i]);
    }
    uint64_t width = 1000;
    for (unsigned l = 1; width >= 2; l++) {
      for (uint64_t k = 0; k + 1 < width; k += 2) {
        ref_node(&lv[k], &lv[k + 1], &lv[k / 2]);
      }
      width /= 2;
      for (uint64_t k = 0; k < width; k++) {
        uint64_t e = (k + 1) * ((uint64_t)1 << l) - 1;
        assert_digest_equal(&s.nodes[2 * e - popcount64(e) + l], &lv[k]);
      }
    }
    free(lv);
  }

  /* Reopen at size 1000 and continue to 1500. */
  immu_ahtree_free(cus);
  cus = NULL;
  uint64_t reads_before = s.reads;
  assert_rc(immu_ahtree_open(&st, 1000, &cus), 0);
  assert_true(s.reads > reads_before); /* the peaks come from the store */
  assert_int_equal(immu_ahtree_size(cus), 1000);
  for (uint64_t m = 1; m <= 1000; m += 37) {
    compare_trees(mem, cus, m);
  }
  compare_trees(mem, cus, 1000);
  for (uint64_t m = 1001; m <= 1500; m++) {
    payload(m, p);
    assert_rc(immu_ahtree_append(mem, p, 32, &rm), 0);
    assert_rc(immu_ahtree_append(cus, p, 32, &rc), 0);
    assert_digest_equal(&rm, &rc);
    assert_rc(immu_ahtree_root_at(cus, m, &rc), 0);
    assert_digest_equal(&rm, &rc);
    if (m % 50 == 0) {
      compare_trees(mem, cus, m);
    }
  }
  assert_int_equal(s.n, 2 * 1500 - popcount64(1500));
  assert_int_equal(s.bad_call, 0);
  immu_ahtree_free(cus);

  /* Reopen at every small size: same roots as the mem tree. */
  for (uint64_t n = 1; n <= 70; n++) {
    immu_ahtree *r = NULL;
    assert_rc(immu_ahtree_open(&st, n, &r), 0);
    assert_int_equal(immu_ahtree_size(r), n);
    compare_trees(mem, r, n);
    immu_ahtree_free(r);
  }
  assert_int_equal(s.bad_call, 0);
  immu_ahtree_free(mem);
  free(s.nodes);
}

static void test_failing_store(void **state) {
  (void)state;
  arr_store s;
  memset(&s, 0, sizeof s);
  immu_ahtree_store st = store_of(&s);
  immu_ahtree *mem = NULL, *cus = NULL;
  immu_digest rm, rc, before, after;
  uint8_t p[32];

  assert_rc(immu_ahtree_new_mem(&mem), 0);
  assert_rc(immu_ahtree_open(&st, 0, &cus), 0);
  for (uint64_t m = 1; m <= 1100; m++) {
    payload(m, p);
    /* Fail the first attempt at every size up to 70 and around 1024,
     * including the append that completes ten subtrees at once. */
    if (m <= 70 || (m >= 1020 && m <= 1030)) {
      uint64_t size0 = immu_ahtree_size(cus), nodes0 = s.n;
      if (size0 > 0) {
        assert_rc(immu_ahtree_root_at(cus, size0, &before), 0);
      }
      s.fail_append = 1;
      assert_rc(immu_ahtree_append(cus, p, 32, &rc), -EIO);
      s.fail_append = 0;
      assert_int_equal(immu_ahtree_size(cus), size0);
      assert_int_equal(s.n, nodes0);
      if (size0 > 0) {
        assert_rc(immu_ahtree_root_at(cus, size0, &after), 0);
        assert_digest_equal(&before, &after);
        compare_trees(mem, cus, size0);
      }
      assert_rc(immu_ahtree_root_at(cus, size0 + 1, &after), IMMU_ERANGE);
    }
    assert_rc(immu_ahtree_append(mem, p, 32, &rm), 0);
    assert_rc(immu_ahtree_append(cus, p, 32, &rc), 0);
    assert_digest_equal(&rm, &rc);
    assert_int_equal(s.n, 2 * m - popcount64(m));
  }
  assert_int_equal(s.bad_call, 0);

  /* Read errors are passed through; a call that succeeds is still right. */
  immu_digest terms[IMMU_PROOF_MAX_TERMS];
  size_t nterms;
  s.fail_read = 1;
  int r1 = immu_ahtree_root_at(cus, 77, &rc);
  assert_true(r1 == 0 || r1 == -EIO);
  if (r1 == 0) {
    assert_rc(immu_ahtree_root_at(mem, 77, &rm), 0);
    assert_digest_equal(&rm, &rc);
  }
  int r2 = immu_ahtree_inclusion_proof(cus, 3, 1000, terms, &nterms);
  assert_true(r2 == 0 || r2 == -EIO);
  int r3 = immu_ahtree_consistency_proof(cus, 3, 1000, terms, &nterms);
  assert_true(r3 == 0 || r3 == -EIO);
  /* Root(size) and appends need no reads (peaks are kept in memory), but
   * whatever the tree does, a failure must leave it unchanged. */
  payload(1101, p);
  int r4 = immu_ahtree_append(cus, p, 32, &rc);
  assert_true(r4 == 0 || r4 == -EIO);
  assert_int_equal(immu_ahtree_size(cus), r4 == 0 ? 1101 : 1100);
  /* Opening over a store that cannot be read fails with its error. */
  immu_ahtree *bad = NULL;
  assert_rc(immu_ahtree_open(&st, 1000, &bad), -EIO);
  s.fail_read = 0;
  if (r4 == 0) {
    assert_rc(immu_ahtree_append(mem, p, 32, &rm), 0);
    assert_digest_equal(&rm, &rc);
  }
  compare_trees(mem, cus, immu_ahtree_size(cus));
  immu_ahtree_free(cus);
  immu_ahtree_free(mem);
  free(s.nodes);
}

/* ------------------------------------------------------------------ */
/* Hash cost                                                           */
/* ------------------------------------------------------------------ */

/*
 * Bounds asserted (immu_hash_count counts one per immu_sha256* call):
 *
 * - Appending leaf number m (tree grows from m-1 to m leaves) costs one leaf
 *   hash plus one node hash per perfect subtree it completes; the number
 *   completed is the number of trailing one bits of m-1 (= trailing zeros
 *   of m). Root(m) folds the popcount(m) peaks: popcount(m) - 1 hashes. So
 *   one append-with-root costs 1 + ctz(m) + popcount(m) - 1; we assert
 *   <= 1 + ctz(m) + popcount(m) (one hash of slack) and >= 1 + ctz(m)
 *   (every new node must be computed once, since the store holds them all).
 * - Appending leaves 1..n without roots costs sum(1 + ctz(m)) =
 *   2n - popcount(n); taking Root(n) then adds popcount(n) - 1. We assert a
 *   total within [2n - 1, 2n + popcount(n)].
 */
static void test_hash_cost(void **state) {
  (void)state;
  const uint64_t n = 100000;
  immu_ahtree *t = NULL;
  immu_digest root;
  uint8_t p[32];

  assert_rc(immu_ahtree_new_mem(&t), 0);
  memset(p, 0x5a, sizeof p);
  uint64_t h0 = immu_hash_count();
  for (uint64_t m = 1; m <= n; m++) {
    p[0] = (uint8_t)m;
    p[1] = (uint8_t)(m >> 8);
    p[2] = (uint8_t)(m >> 16);
    assert_rc(immu_ahtree_append(t, p, 32, NULL), 0);
  }
  assert_rc(immu_ahtree_root_at(t, n, &root), 0);
  uint64_t total = immu_hash_count() - h0;
  printf("# ahtree: %llu appends + Root(n) cost %llu hashes (2n = %llu)\n",
         (unsigned long long)n, (unsigned long long)total,
         (unsigned long long)(2 * n));
  assert_true(total >= 2 * n - 1);
  assert_true(total <= 2 * n + popcount64(n));
  immu_ahtree_free(t);

  /* Append with root, per call. */
  assert_rc(immu_ahtree_new_mem(&t), 0);
  for (uint64_t m = 1; m <= 5000; m++) {
    p[0] = (uint8_t)m;
    p[1] = (uint8_t)(m >> 8);
    uint64_t before = immu_hash_count();
    assert_rc(immu_ahtree_append(t, p, 32, &root), 0);
    uint64_t cost = immu_hash_count() - before;
    if (cost > 1 + ctz64(m) + popcount64(m) || cost < 1 + ctz64(m)) {
      fail_msg("append #%llu with root cost %llu hashes, want [%u, %u]",
               (unsigned long long)m, (unsigned long long)cost,
               1 + ctz64(m), 1 + ctz64(m) + popcount64(m));
    }
  }
  immu_ahtree_free(t);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_roots_every_size),
      cmocka_unit_test(test_verifier_rules),
      cmocka_unit_test(test_all_pairs),
      cmocka_unit_test(test_custom_store),
      cmocka_unit_test(test_failing_store),
      cmocka_unit_test(test_hash_cost),
  };
  int rc = seed_setup(NULL);
  (void)rc;
  return cmocka_run_group_tests(tests, tree_setup, NULL);
}
