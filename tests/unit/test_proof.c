/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Property tests of linear proofs, linear-advance proofs and dual proofs
 * (spec 6), and of the KV-layer entry encodings (spec 7.2, 2).
 *
 * Three synthetic chains of 300 transactions, built exactly as the spec's
 * commit path does (PrevAlh chain from H(""), BlRoot = Root(BlTxID) of the
 * ahtree of earlier Alhs, ZERO32 when BlTxID = 0):
 *   A  BlTxID = ID - 1, header version 0 (what our server writes);
 *   B  BlTxID = the largest multiple of 10 below ID (immudb 1.2's lag),
 *      versions mixed 0/1, random tx metadata on version-1 headers;
 *   C  BlTxID lagging irregularly (random jumps), version 1.
 * For every pair (s, t) with t <= 64 and 3000 random pairs with t <= 300,
 * immu_dual_proof_gen's proof must verify, and every tamper that the
 * verifier provably reads must be rejected.
 *
 * Set IMMU_TEST_SEED to replay another seed.
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

static void rnd_bytes(uint8_t *p, size_t n) {
  for (size_t i = 0; i < n; i++) {
    p[i] = (uint8_t)rnd();
  }
}

static void rnd_digest(immu_digest *d) { rnd_bytes(d->b, sizeof d->b); }

static void flip_bit(immu_digest *d) {
  d->b[rnd_below(32)] ^= (uint8_t)(1u << rnd_below(8));
}

/* ------------------------------------------------------------------ */
/* Synthetic chains                                                    */
/* ------------------------------------------------------------------ */

#define CHAIN_N 300

typedef struct chain {
  const char *name;
  uint64_t n;
  immu_tx_header h[CHAIN_N]; /* h[id - 1] */
  immu_digest alh[CHAIN_N];
  immu_ahtree *tree; /* Alh(1..n) */
  int fail_id;       /* the tx source fails for this id (0: never) */
} chain;

enum { CHAIN_A, CHAIN_B, CHAIN_C, NCHAINS };
static chain chains[NCHAINS];

static int ch_header(void *ctx, uint64_t id, immu_tx_header *out) {
  const chain *c = ctx;
  if (id < 1 || id > c->n) {
    return IMMU_ENOTFOUND;
  }
  if ((uint64_t)c->fail_id == id) {
    return -EIO;
  }
  *out = c->h[id - 1];
  return 0;
}

static int ch_alh(void *ctx, uint64_t id, immu_digest *out) {
  const chain *c = ctx;
  if (id < 1 || id > c->n) {
    return IMMU_ENOTFOUND;
  }
  if ((uint64_t)c->fail_id == id) {
    return -EIO;
  }
  *out = c->alh[id - 1];
  return 0;
}

static immu_tx_source source_of(chain *c) {
  immu_tx_source s = {c, ch_header, ch_alh};
  return s;
}

static void build_chain(chain *c, int kind) {
  immu_digest root;
  uint64_t prev_bl = 0;
  c->n = CHAIN_N;
  c->fail_id = 0;
  assert_rc(immu_ahtree_new_mem(&c->tree), 0);
  for (uint64_t id = 1; id <= CHAIN_N; id++) {
    immu_tx_header *h = &c->h[id - 1];
    memset(h, 0, sizeof *h);
    h->id = id;
    h->ts = (int64_t)(rnd() >> 1) - (int64_t)(rnd() >> 2);
    switch (kind) {
    case CHAIN_A:
      h->bl_tx_id = id - 1;
      h->version = 0;
      break;
    case CHAIN_B:
      h->bl_tx_id = (id - 1) / 10 * 10;
      h->version = (id % 2 == 0) ? 1u : 0u;
      break;
    default: {
      /* Never behind the previous tx's BlTxID, always < ID. */
      uint64_t bl = prev_bl;
      if (rnd_below(4) == 0) {
        bl = id - 1;
      } else if (rnd_below(3) == 0 && id - 1 > prev_bl) {
        bl = prev_bl + 1 + rnd_below((size_t)(id - 1 - prev_bl));
      }
      h->bl_tx_id = bl;
      h->version = 1;
      break;
    }
    }
    prev_bl = h->bl_tx_id;
    h->nentries = h->version == 0 ? 1u + (uint32_t)rnd_below(65535)
                                  : 1u + (uint32_t)rnd_below(1u << 20);
    if (h->version == 1 && rnd_below(3) == 0) {
      h->md_len = (uint32_t)rnd_below(IMMU_TX_MD_MAX + 1);
      rnd_bytes(h->md, h->md_len);
    }
    rnd_digest(&h->eh);
    if (h->bl_tx_id == 0) {
      h->bl_root = immu_zero_digest;
    } else {
      assert_rc(immu_ahtree_root_at(c->tree, h->bl_tx_id, &h->bl_root), 0);
    }
    h->prev_alh = id == 1 ? immu_empty_digest : c->alh[id - 2];
    assert_rc(immu_tx_alh(h, &c->alh[id - 1]), 0);
    assert_rc(immu_ahtree_append(c->tree, c->alh[id - 1].b, 32, &root), 0);
  }
}

static int chains_setup(void **state) {
  (void)state;
  const char *env = getenv("IMMU_TEST_SEED");
  uint64_t seed = 0x5eed0f00dcafe123ull;
  if (env != NULL && env[0] != '\0') {
    seed = strtoull(env, NULL, 0);
  }
  rng_state = seed;
  printf("# test_proof seed 0x%016llx\n", (unsigned long long)seed);
  chains[CHAIN_A].name = "A (BlTxID = ID-1, v0)";
  chains[CHAIN_B].name = "B (BlTxID lags by up to 10, v0/v1)";
  chains[CHAIN_C].name = "C (irregular lag, v1)";
  for (int k = 0; k < NCHAINS; k++) {
    build_chain(&chains[k], k);
  }
  return 0;
}

static int chains_teardown(void **state) {
  (void)state;
  for (int k = 0; k < NCHAINS; k++) {
    immu_ahtree_free(chains[k].tree);
    chains[k].tree = NULL;
  }
  return 0;
}

/* ------------------------------------------------------------------ */
/* Dual proof: structure expected from spec 6.2                        */
/* ------------------------------------------------------------------ */

static void check_structure(const chain *c, const immu_dual_proof *p,
                            uint64_t s, uint64_t t) {
  const immu_tx_header *S = &c->h[s - 1], *T = &c->h[t - 1];
  immu_digest terms[IMMU_PROOF_MAX_TERMS];
  size_t n;

  assert_memory_equal(&p->source.bl_root, &S->bl_root, 32);
  assert_int_equal(p->source.id, s);
  assert_int_equal(p->target.id, t);
  /* inclusionProof = InclusionProof(S.ID, T.BlTxID) iff S.ID < T.BlTxID */
  if (s < T->bl_tx_id) {
    assert_rc(immu_ahtree_inclusion_proof(c->tree, s, T->bl_tx_id, terms, &n),
              0);
    assert_int_equal(p->inclusion.n, n);
    assert_memory_equal(p->inclusion.d, terms, n * sizeof *terms);
  } else {
    assert_int_equal(p->inclusion.n, 0);
  }
  /* consistencyProof = ConsistencyProof(S.BlTxID, T.BlTxID) iff S.BlTxID>0 */
  if (S->bl_tx_id > 0) {
    assert_rc(immu_ahtree_consistency_proof(c->tree, S->bl_tx_id, T->bl_tx_id,
                                            terms, &n),
              0);
    assert_int_equal(p->consistency.n, n);
    if (n > 0) {
      assert_memory_equal(p->consistency.d, terms, n * sizeof *terms);
    }
  } else {
    assert_int_equal(p->consistency.n, 0);
  }
  /* targetBlTxAlh and lastInclusionProof iff T.BlTxID > 0 */
  if (T->bl_tx_id > 0) {
    assert_digest_equal(&p->target_bl_tx_alh, &c->alh[T->bl_tx_id - 1]);
    assert_rc(immu_ahtree_inclusion_proof(c->tree, T->bl_tx_id, T->bl_tx_id,
                                          terms, &n),
              0);
    assert_int_equal(p->last_inclusion.n, n);
    if (n > 0) {
      assert_memory_equal(p->last_inclusion.d, terms, n * sizeof *terms);
    }
  } else {
    assert_digest_equal(&p->target_bl_tx_alh, &immu_zero_digest);
    assert_int_equal(p->last_inclusion.n, 0);
  }
  /* linearProof = LinearProof(max(S.ID, T.BlTxID), T.ID) */
  uint64_t ls = s > T->bl_tx_id ? s : T->bl_tx_id;
  assert_int_equal(p->linear.source_tx_id, ls);
  assert_int_equal(p->linear.target_tx_id, t);
  assert_int_equal(p->linear.terms.n, t - ls + 1);
  assert_digest_equal(&p->linear.terms.d[0], &c->alh[ls - 1]);
  for (uint64_t k = 1; k <= t - ls; k++) {
    immu_digest inner;
    assert_rc(immu_tx_inner_hash(&c->h[ls + k - 1], &inner), 0);
    assert_digest_equal(&p->linear.terms.d[k], &inner);
  }
  /* LAP(S.BlTxID, min(S.ID, T.BlTxID), T.BlTxID), absent if b <= a + 1 */
  uint64_t a = S->bl_tx_id, b = s < T->bl_tx_id ? s : T->bl_tx_id;
  if (b <= a + 1) {
    assert_int_equal(p->has_lap, 0);
  } else {
    assert_int_equal(p->has_lap, 1);
    assert_int_equal(p->lap.linear_terms.n, b - a);
    assert_digest_equal(&p->lap.linear_terms.d[0], &c->alh[a]);
    for (uint64_t k = 1; k < b - a; k++) {
      immu_digest inner;
      assert_rc(immu_tx_inner_hash(&c->h[a + k], &inner), 0);
      assert_digest_equal(&p->lap.linear_terms.d[k], &inner);
    }
    assert_int_equal(p->lap.ninclusion, b - a - 1);
    for (uint64_t x = a + 1; x < b; x++) {
      const immu_digest_list *l = &p->lap.inclusion[x - a - 1];
      assert_rc(
          immu_ahtree_inclusion_proof(c->tree, x, T->bl_tx_id, terms, &n), 0);
      assert_int_equal(l->n, n);
      assert_memory_equal(l->d, terms, n * sizeof *terms);
    }
    /* The LAP verifies on its own too. */
    assert_rc(immu_linear_advance_proof_verify(&p->lap, a, b,
                                               b == s ? &c->alh[s - 1]
                                                      : &p->target_bl_tx_alh,
                                               &T->bl_root, T->bl_tx_id),
              0);
  }
}

/* ------------------------------------------------------------------ */
/* Dual proof tampering                                                */
/* ------------------------------------------------------------------ */

typedef struct tctx {
  immu_dual_proof *p;
  uint64_t s, t;
  const immu_digest *sa, *ta;
  size_t rejected;
  size_t skipped;
} tctx;

static void expect_reject(tctx *x, const char *what) {
  int rc = immu_dual_proof_verify(x->p, x->s, x->t, x->sa, x->ta);
  if (rc != IMMU_EVERIFY) {
    fail_msg("dual proof %llu -> %llu: tamper '%s' gave %d (%s), want "
             "IMMU_EVERIFY",
             (unsigned long long)x->s, (unsigned long long)x->t, what, rc,
             immu_err_name(rc));
  }
  x->rejected++;
}

static void expect_accept(tctx *x) {
  assert_rc(immu_dual_proof_verify(x->p, x->s, x->t, x->sa, x->ta), 0);
}

/* Header tampers: every field enters Alh(header) (spec 3.2/3.3), which the
 * verifier compares with the trusted Alh (spec 6.4 step 2), so each change
 * is rejected; S.ID / T.ID are also compared with the ids directly. */
static void tamper_header(tctx *x, immu_tx_header *h) {
  immu_tx_header saved = *h;

  h->id++;
  expect_reject(x, "header id");
  *h = saved;
  h->ts ^= 1;
  expect_reject(x, "header ts");
  *h = saved;
  h->bl_tx_id++;
  expect_reject(x, "header bl_tx_id + 1");
  *h = saved;
  if (saved.bl_tx_id > 0) {
    h->bl_tx_id--;
    expect_reject(x, "header bl_tx_id - 1");
    *h = saved;
  }
  flip_bit(&h->bl_root);
  expect_reject(x, "header bl_root");
  *h = saved;
  flip_bit(&h->prev_alh);
  expect_reject(x, "header prev_alh");
  *h = saved;
  flip_bit(&h->eh);
  expect_reject(x, "header eh");
  *h = saved;
  h->nentries++;
  expect_reject(x, "header nentries");
  *h = saved;
  h->version ^= 1;
  expect_reject(x, "header version");
  *h = saved;
  if (saved.version == 1) {
    if (saved.md_len > 0) {
      h->md[rnd_below(saved.md_len)] ^= 0x20;
      expect_reject(x, "header md byte");
      *h = saved;
    }
    if (saved.md_len < IMMU_TX_MD_MAX) {
      h->md_len++;
      expect_reject(x, "header md_len");
      *h = saved;
    }
  } else {
    h->md_len = 1; /* metadata with version 0 is invalid */
    expect_reject(x, "header md on v0");
    *h = saved;
  }
}

/* Tampers of one digest list that the verifier reads. |min_after_drop|: a
 * drop that leaves fewer terms than this is skipped (see callers). */
static void tamper_list(tctx *x, immu_digest_list *l, const char *what,
                        int can_extend, size_t min_after_drop) {
  char msg[96];
  if (l->n > 0) {
    size_t k = rnd_below(l->n);
    immu_digest saved = l->d[k];
    flip_bit(&l->d[k]);
    snprintf(msg, sizeof msg, "%s: term %zu flipped", what, k);
    expect_reject(x, msg);
    l->d[k] = saved;
    /* Every term, first and last in particular. */
    l->d[0].b[0] ^= 1;
    snprintf(msg, sizeof msg, "%s: first term flipped", what);
    expect_reject(x, msg);
    l->d[0].b[0] ^= 1;
    l->d[l->n - 1].b[31] ^= 0x80;
    snprintf(msg, sizeof msg, "%s: last term flipped", what);
    expect_reject(x, msg);
    l->d[l->n - 1].b[31] ^= 0x80;
    if (l->n - 1 >= min_after_drop) {
      l->n--;
      snprintf(msg, sizeof msg, "%s: last term dropped", what);
      expect_reject(x, msg);
      l->n++;
    } else {
      x->skipped++;
    }
  }
  if (can_extend) {
    immu_digest *orig = l->d;
    size_t n = l->n;
    immu_digest *bigger = malloc((n + 1) * sizeof *bigger);
    assert_non_null(bigger);
    if (n > 0) {
      memcpy(bigger, orig, n * sizeof *bigger);
    }
    rnd_digest(&bigger[n]);
    l->d = bigger;
    l->n = n + 1;
    snprintf(msg, sizeof msg, "%s: random term appended", what);
    expect_reject(x, msg);
    if (n > 0) {
      bigger[n] = orig[n - 1];
      snprintf(msg, sizeof msg, "%s: last term duplicated", what);
      expect_reject(x, msg);
    }
    l->d = orig;
    l->n = n;
    free(bigger);
  } else {
    x->skipped++;
  }
}

static void tamper_dual(tctx *x, const chain *c) {
  immu_dual_proof *p = x->p;
  const uint64_t s = x->s, t = x->t;
  const uint64_t sbl = c->h[s - 1].bl_tx_id, tbl = c->h[t - 1].bl_tx_id;

  expect_accept(x);

  /* Headers of source and target. */
  tamper_header(x, &p->source);
  tamper_header(x, &p->target);
  expect_accept(x);

  /* inclusionProof is read iff s < T.BlTxID (spec 6.4 step 3). When it is
   * not read (empty in a genuine proof) extra terms go unnoticed: skipped. */
  if (s < tbl) {
    tamper_list(x, &p->inclusion, "inclusion", 1, 0);
  } else {
    assert_int_equal(p->inclusion.n, 0);
    x->skipped++;
  }
  /* consistencyProof is read iff S.BlTxID > 0 (step 4). With
   * S.BlTxID == T.BlTxID an empty proof is accepted because the roots are
   * equal (spec 5.4 step 2), so a drop down to zero terms is no must-fail. */
  if (sbl > 0) {
    tamper_list(x, &p->consistency, "consistency", 1, sbl == tbl ? 1 : 0);
  } else {
    assert_int_equal(p->consistency.n, 0);
    x->skipped++;
  }
  /* lastInclusionProof and targetBlTxAlh are read iff T.BlTxID > 0
   * (step 5, and the linear part starts from targetBlTxAlh). With
   * T.BlTxID == 0 the verifier never looks at them. */
  if (tbl > 0) {
    tamper_list(x, &p->last_inclusion, "last inclusion", 1, 0);
    immu_digest saved = p->target_bl_tx_alh;
    flip_bit(&p->target_bl_tx_alh);
    expect_reject(x, "target_bl_tx_alh");
    p->target_bl_tx_alh = saved;
  } else {
    x->skipped += 2;
  }
  /* The linear proof is always read: terms, count and both ids. */
  tamper_list(x, &p->linear.terms, "linear", 1, 0);
  p->linear.source_tx_id++;
  expect_reject(x, "linear source id + 1");
  p->linear.source_tx_id -= 2;
  expect_reject(x, "linear source id - 1");
  p->linear.source_tx_id++;
  p->linear.target_tx_id++;
  expect_reject(x, "linear target id + 1");
  p->linear.target_tx_id--;

  /* The LAP is read iff min(s, T.BlTxID) > S.BlTxID + 1 (spec 6.4 step 6,
   * 6.3 step 1); otherwise it is ignored and absent from a genuine proof. */
  uint64_t b = s < tbl ? s : tbl;
  if (b > sbl + 1) {
    assert_int_equal(p->has_lap, 1);
    immu_linear_advance_proof *lap = &p->lap;
    tamper_list(x, &lap->linear_terms, "LAP linear", 1, 0);
    assert_true(lap->ninclusion >= 1);
    size_t k = rnd_below(lap->ninclusion);
    tamper_list(x, &lap->inclusion[k], "LAP inclusion", 1, 0);
    lap->ninclusion--;
    expect_reject(x, "LAP inclusion proof dropped");
    lap->ninclusion++;
    if (lap->ninclusion >= 2) {
      immu_digest_list tmp = lap->inclusion[0];
      lap->inclusion[0] = lap->inclusion[1];
      lap->inclusion[1] = tmp;
      expect_reject(x, "LAP inclusion proofs swapped");
      lap->inclusion[1] = lap->inclusion[0];
      lap->inclusion[0] = tmp;
    }
    p->has_lap = 0;
    expect_reject(x, "LAP removed");
    p->has_lap = 1;
  } else {
    assert_int_equal(p->has_lap, 0);
    x->skipped++;
  }

  /* The verifier's own arguments. */
  uint64_t s0 = x->s, t0 = x->t;
  const immu_digest *sa0 = x->sa, *ta0 = x->ta;
  immu_digest other;
  x->s = s0 + 1;
  expect_reject(x, "source id + 1");
  if (s0 > 1) {
    x->s = s0 - 1;
    expect_reject(x, "source id - 1");
  }
  x->s = s0;
  x->t = t0 + 1;
  expect_reject(x, "target id + 1");
  x->t = t0 - 1;
  expect_reject(x, "target id - 1");
  x->t = t0;
  other = *sa0;
  flip_bit(&other);
  x->sa = &other;
  expect_reject(x, "source alh flipped");
  x->sa = &c->alh[rnd_below(CHAIN_N)];
  if (memcmp(x->sa->b, sa0->b, 32) != 0) {
    expect_reject(x, "source alh of another tx");
  }
  x->sa = sa0;
  other = *ta0;
  flip_bit(&other);
  x->ta = &other;
  expect_reject(x, "target alh flipped");
  if (s0 != t0) {
    x->ta = sa0;
    expect_reject(x, "target alh = source alh");
  }
  x->ta = ta0;
  expect_accept(x);
}

typedef struct dstats {
  size_t proofs, rejected, skipped;
} dstats;

static void check_pair(chain *c, uint64_t s, uint64_t t, int tamper,
                       dstats *st) {
  immu_tx_source src = source_of(c);
  immu_dual_proof p;
  memset(&p, 0x5c, sizeof p); /* the generator must initialise everything */
  assert_rc(immu_dual_proof_gen(c->tree, &src, &c->h[s - 1], &c->h[t - 1], &p),
            0);
  check_structure(c, &p, s, t);
  tctx x = {&p, s, t, &c->alh[s - 1], &c->alh[t - 1], 0, 0};
  expect_accept(&x);
  if (tamper) {
    tamper_dual(&x, c);
  }
  immu_dual_proof_free(&p);
  st->proofs++;
  st->rejected += x.rejected;
  st->skipped += x.skipped;
}

static void run_pairs(chain *c) {
  dstats st = {0, 0, 0};
  for (uint64_t t = 1; t <= 64; t++) {
    for (uint64_t s = 1; s <= t; s++) {
      check_pair(c, s, t, 1, &st);
    }
  }
  for (int k = 0; k < 3000; k++) {
    uint64_t t = 1 + rnd_below(CHAIN_N);
    uint64_t s = 1 + rnd_below((size_t)t);
    check_pair(c, s, t, 1, &st);
  }
  /* The extremes. */
  check_pair(c, 1, CHAIN_N, 1, &st);
  check_pair(c, CHAIN_N, CHAIN_N, 1, &st);
  check_pair(c, CHAIN_N - 1, CHAIN_N, 1, &st);
  printf("# chain %s: %zu dual proofs verified, %zu tampers rejected, %zu "
         "not applicable (unread fields)\n",
         c->name, st.proofs, st.rejected, st.skipped);
}

static void test_dual_chain_a(void **state) {
  (void)state;
  run_pairs(&chains[CHAIN_A]);
}

static void test_dual_chain_b(void **state) {
  (void)state;
  run_pairs(&chains[CHAIN_B]);
}

static void test_dual_chain_c(void **state) {
  (void)state;
  run_pairs(&chains[CHAIN_C]);
}

/* Spec 6.4's case table for BlTxID = ID - 1. */
static void test_dual_case_table(void **state) {
  (void)state;
  chain *c = &chains[CHAIN_A];
  immu_tx_source src = source_of(c);
  immu_dual_proof p;

  /* s = t = 1: only [Alh(1)]. */
  assert_rc(immu_dual_proof_gen(c->tree, &src, &c->h[0], &c->h[0], &p), 0);
  assert_int_equal(p.inclusion.n, 0);
  assert_int_equal(p.consistency.n, 0);
  assert_int_equal(p.last_inclusion.n, 0);
  assert_digest_equal(&p.target_bl_tx_alh, &immu_zero_digest);
  assert_int_equal(p.linear.terms.n, 1);
  assert_int_equal(p.has_lap, 0);
  assert_rc(immu_dual_proof_verify(&p, 1, 1, &c->alh[0], &c->alh[0]), 0);
  immu_dual_proof_free(&p);

  /* s = t > 1 (ProveSinceTx = 0): ConsistencyProof(t-1, t-1),
   * LastInclusion(t-1), [Alh(t)]. */
  for (uint64_t t = 2; t <= 20; t++) {
    assert_rc(
        immu_dual_proof_gen(c->tree, &src, &c->h[t - 1], &c->h[t - 1], &p), 0);
    assert_int_equal(p.inclusion.n, 0);
    assert_int_equal(p.consistency.n, t - 1 == 1 ? 0 : 2);
    assert_digest_equal(&p.target_bl_tx_alh, &c->alh[t - 2]);
    assert_int_equal(p.linear.source_tx_id, t);
    assert_int_equal(p.linear.terms.n, 1);
    assert_digest_equal(&p.linear.terms.d[0], &c->alh[t - 1]);
    assert_int_equal(p.has_lap, 0);
    assert_rc(immu_dual_proof_verify(&p, t, t, &c->alh[t - 1], &c->alh[t - 1]),
              0);
    /* The same proof does not bind another tx. */
    assert_rc(immu_dual_proof_verify(&p, t, t, &c->alh[t - 2], &c->alh[t - 1]),
              IMMU_EVERIFY);
    immu_dual_proof_free(&p);
  }

  /* s = t - 1: no inclusion proof, linear [Alh(s), inner(t)]. */
  assert_rc(immu_dual_proof_gen(c->tree, &src, &c->h[8], &c->h[9], &p), 0);
  assert_int_equal(p.inclusion.n, 0);
  assert_int_equal(p.linear.source_tx_id, 9);
  assert_int_equal(p.linear.terms.n, 2);
  immu_dual_proof_free(&p);

  /* s < t - 1: inclusion proof (s, t-1), linear [Alh(t-1), inner(t)]. */
  assert_rc(immu_dual_proof_gen(c->tree, &src, &c->h[2], &c->h[9], &p), 0);
  assert_true(p.inclusion.n > 0);
  assert_int_equal(p.linear.source_tx_id, 9);
  assert_int_equal(p.linear.terms.n, 2);
  assert_int_equal(p.has_lap, 0);
  immu_dual_proof_free(&p);
}

static void test_dual_gen_errors(void **state) {
  (void)state;
  chain *c = &chains[CHAIN_B];
  immu_tx_source src = source_of(c);
  immu_dual_proof p;

  /* s > t */
  memset(&p, 0, sizeof p);
  assert_rc(immu_dual_proof_gen(c->tree, &src, &c->h[20], &c->h[10], &p),
            IMMU_EINVAL);
  immu_dual_proof_free(&p);

  /* S.BlTxID > T.BlTxID is corrupt data. tx 15 and 16 both have BlTxID 10. */
  immu_tx_header s15 = c->h[14];
  s15.bl_tx_id = 11;
  memset(&p, 0, sizeof p);
  assert_rc(immu_dual_proof_gen(c->tree, &src, &s15, &c->h[15], &p),
            IMMU_ECORRUPT);
  immu_dual_proof_free(&p);

  /* Errors of the tx source pass through, nothing leaks. */
  /* S = 27 (BlTxID 20), T = 35 (BlTxID 30): LAP(20, 27, 30) reads Alh(21)
   * and inner(22..26); the linear proof reads Alh(30), inner(31..35). */
  c->fail_id = 25;
  memset(&p, 0, sizeof p);
  assert_rc(immu_dual_proof_gen(c->tree, &src, &c->h[26], &c->h[34], &p),
            -EIO);
  c->fail_id = 33;
  assert_rc(immu_dual_proof_gen(c->tree, &src, &c->h[26], &c->h[34], &p),
            -EIO);
  c->fail_id = 30; /* targetBlTxAlh / linear start */
  assert_rc(immu_dual_proof_gen(c->tree, &src, &c->h[26], &c->h[34], &p),
            -EIO);
  c->fail_id = 0;
  assert_rc(immu_dual_proof_gen(c->tree, &src, &c->h[26], &c->h[34], &p), 0);
  assert_int_equal(p.has_lap, 1);
  assert_rc(immu_dual_proof_verify(&p, 27, 35, &c->alh[26], &c->alh[34]), 0);
  immu_dual_proof_free(&p);

  /* A tree that does not hold T.BlTxID leaves fails cleanly. */
  immu_ahtree *small = NULL;
  assert_rc(immu_ahtree_new_mem(&small), 0);
  for (int k = 0; k < 5; k++) {
    assert_rc(immu_ahtree_append(small, c->alh[k].b, 32, NULL), 0);
  }
  memset(&p, 0, sizeof p);
  int rc = immu_dual_proof_gen(small, &src, &c->h[2], &c->h[34], &p);
  assert_true(rc < 0);
  immu_ahtree_free(small);

  /* Freeing a zeroed proof is fine. */
  memset(&p, 0, sizeof p);
  immu_dual_proof_free(&p);
}

/* Verifier argument rules of spec 6.4 step 1 on a genuine proof. */
static void test_dual_verify_rules(void **state) {
  (void)state;
  chain *c = &chains[CHAIN_A];
  immu_tx_source src = source_of(c);
  immu_dual_proof p;
  assert_rc(immu_dual_proof_gen(c->tree, &src, &c->h[4], &c->h[9], &p), 0);
  assert_rc(immu_dual_proof_verify(&p, 5, 10, &c->alh[4], &c->alh[9]), 0);
  assert_rc(immu_dual_proof_verify(NULL, 5, 10, &c->alh[4], &c->alh[9]),
            IMMU_EVERIFY);
  /* S.ID = 0 */
  immu_tx_header saved = p.source;
  p.source.id = 0;
  assert_rc(immu_dual_proof_verify(&p, 0, 10, &c->alh[4], &c->alh[9]),
            IMMU_EVERIFY);
  p.source = saved;
  /* S.ID > T.ID: swap the headers and the ids. */
  immu_tx_header tmp = p.source;
  p.source = p.target;
  p.target = tmp;
  assert_rc(immu_dual_proof_verify(&p, 10, 5, &c->alh[9], &c->alh[4]),
            IMMU_EVERIFY);
  p.target = p.source;
  p.source = tmp;
  assert_rc(immu_dual_proof_verify(&p, 5, 10, &c->alh[4], &c->alh[9]), 0);
  immu_dual_proof_free(&p);
}

/* ------------------------------------------------------------------ */
/* Linear and linear-advance proofs on their own                       */
/* ------------------------------------------------------------------ */

static void test_linear_proofs(void **state) {
  (void)state;
  chain *c = &chains[CHAIN_C];
  immu_tx_source src = source_of(c);
  immu_linear_proof lp;

  for (int k = 0; k < 400; k++) {
    uint64_t s = 1 + rnd_below(CHAIN_N);
    uint64_t t = s + rnd_below((size_t)(CHAIN_N - s + 1) < 40
                                   ? (size_t)(CHAIN_N - s + 1)
                                   : 40);
    const immu_digest *sa = &c->alh[s - 1], *ta = &c->alh[t - 1];
    assert_rc(immu_linear_proof_gen(&src, s, t, &lp), 0);
    assert_int_equal(lp.source_tx_id, s);
    assert_int_equal(lp.target_tx_id, t);
    assert_int_equal(lp.terms.n, t - s + 1);
    assert_rc(immu_linear_proof_verify(&lp, s, t, sa, ta), 0);
    /* ids, alhs, terms, count */
    assert_rc(immu_linear_proof_verify(&lp, s + 1, t, sa, ta), IMMU_EVERIFY);
    assert_rc(immu_linear_proof_verify(&lp, s, t + 1, sa, ta), IMMU_EVERIFY);
    assert_rc(immu_linear_proof_verify(&lp, s, t, ta, ta),
              s == t ? 0 : IMMU_EVERIFY);
    assert_rc(immu_linear_proof_verify(&lp, s, t, sa, sa),
              s == t ? 0 : IMMU_EVERIFY);
    size_t j = rnd_below(lp.terms.n);
    flip_bit(&lp.terms.d[j]);
    assert_rc(immu_linear_proof_verify(&lp, s, t, sa, ta), IMMU_EVERIFY);
    immu_linear_proof_free(&lp);
    assert_null(lp.terms.d);
  }

  /* A proof with a missing term (v0.9.0 did not check the count). */
  assert_rc(immu_linear_proof_gen(&src, 10, 15, &lp), 0);
  lp.terms.n--;
  lp.target_tx_id = 15;
  assert_rc(immu_linear_proof_verify(&lp, 10, 15, &c->alh[9], &c->alh[14]),
            IMMU_EVERIFY);
  lp.terms.n++;
  assert_rc(immu_linear_proof_verify(&lp, 10, 15, &c->alh[9], &c->alh[14]),
            0);
  assert_rc(immu_linear_proof_verify(NULL, 10, 15, &c->alh[9], &c->alh[14]),
            IMMU_EVERIFY);
  size_t n0 = lp.terms.n;
  lp.terms.n = 0;
  assert_rc(immu_linear_proof_verify(&lp, 10, 15, &c->alh[9], &c->alh[14]),
            IMMU_EVERIFY);
  lp.terms.n = n0;
  immu_linear_proof_free(&lp);

  /* s = 0 and s > t. */
  memset(&lp, 0, sizeof lp);
  assert_rc(immu_linear_proof_gen(&src, 0, 3, &lp), IMMU_EINVAL);
  immu_linear_proof_free(&lp);
  memset(&lp, 0, sizeof lp);
  assert_rc(immu_linear_proof_gen(&src, 4, 3, &lp), IMMU_EINVAL);
  immu_linear_proof_free(&lp);
  immu_digest one = c->alh[0];
  immu_linear_proof zero = {0, 0, {&one, 1}};
  assert_rc(immu_linear_proof_verify(&zero, 0, 0, &one, &one), IMMU_EVERIFY);
  immu_linear_proof back = {4, 3, {&one, 1}};
  assert_rc(immu_linear_proof_verify(&back, 4, 3, &one, &one), IMMU_EVERIFY);
  immu_linear_proof self = {1, 1, {&one, 1}};
  assert_rc(immu_linear_proof_verify(&self, 1, 1, &one, &one), 0);

  /* Source errors pass through. */
  c->fail_id = 12;
  memset(&lp, 0, sizeof lp);
  assert_rc(immu_linear_proof_gen(&src, 10, 15, &lp), -EIO);
  immu_linear_proof_free(&lp);
  c->fail_id = 0;
}

static void test_linear_advance_rules(void **state) {
  (void)state;
  chain *c = &chains[CHAIN_B];
  immu_tx_source src = source_of(c);
  immu_dual_proof p;
  /* S = 17 (BlTxID 10), T = 25 (BlTxID 20): LAP(10, 17, 20). */
  assert_rc(immu_dual_proof_gen(c->tree, &src, &c->h[16], &c->h[24], &p), 0);
  assert_int_equal(p.has_lap, 1);
  const immu_digest *end = &c->alh[16], *root = &c->h[24].bl_root;
  assert_rc(immu_linear_advance_proof_verify(&p.lap, 10, 17, end, root, 20),
            0);
  /* Wrong end Alh, root, start, end. (A wrong tree size alone can go
   * unnoticed: spec 5.4's inclusion verifier has no final i1 == j1 check,
   * so sizes 20 and 21 walk the same sides for these leaves.) */
  assert_rc(
      immu_linear_advance_proof_verify(&p.lap, 10, 17, &c->alh[15], root, 20),
      IMMU_EVERIFY);
  assert_rc(immu_linear_advance_proof_verify(&p.lap, 10, 17, end,
                                             &c->h[16].bl_root, 20),
            IMMU_EVERIFY);
  assert_rc(immu_linear_advance_proof_verify(&p.lap, 9, 17, end, root, 20),
            IMMU_EVERIFY);
  assert_rc(immu_linear_advance_proof_verify(&p.lap, 10, 18, end, root, 20),
            IMMU_EVERIFY);
  /* NULL / not needed / end < start. */
  assert_rc(immu_linear_advance_proof_verify(NULL, 10, 17, end, root, 20),
            IMMU_EVERIFY);
  assert_rc(immu_linear_advance_proof_verify(NULL, 10, 11, end, root, 20), 0);
  assert_rc(immu_linear_advance_proof_verify(NULL, 10, 10, end, root, 20), 0);
  assert_rc(immu_linear_advance_proof_verify(NULL, 10, 9, end, root, 20),
            IMMU_EVERIFY);
  assert_rc(immu_linear_advance_proof_verify(&p.lap, 10, 9, end, root, 20),
            IMMU_EVERIFY);
  /* Counts. */
  p.lap.linear_terms.n++;
  assert_rc(immu_linear_advance_proof_verify(&p.lap, 10, 17, end, root, 20),
            IMMU_EVERIFY);
  p.lap.linear_terms.n--;
  p.lap.ninclusion--;
  assert_rc(immu_linear_advance_proof_verify(&p.lap, 10, 17, end, root, 20),
            IMMU_EVERIFY);
  p.lap.ninclusion++;
  assert_rc(immu_linear_advance_proof_verify(&p.lap, 10, 17, end, root, 20),
            0);
  immu_dual_proof_free(&p);
}

/* ------------------------------------------------------------------ */
/* Entry encodings                                                     */
/* ------------------------------------------------------------------ */

static double bits_to_double(uint64_t bits) {
  double d;
  memcpy(&d, &bits, sizeof d);
  return d;
}

static uint64_t double_to_bits(double d) {
  uint64_t b;
  memcpy(&b, &d, sizeof b);
  return b;
}

static void test_ref_value_roundtrip(void **state) {
  (void)state;
  for (int k = 0; k < 500; k++) {
    size_t rlen = k < 5 ? (size_t)k : rnd_below(300);
    uint8_t ref[300];
    rnd_bytes(ref, rlen);
    uint64_t at = k % 3 == 0 ? 0 : rnd();
    size_t need = IMMU_ENC_REF_VALUE_LEN(rlen), len = 0;
    assert_int_equal(need, rlen + 10);
    /* Exactly-sized heap buffer so ASan sees any overrun. */
    uint8_t *buf = malloc(need);
    assert_non_null(buf);
    assert_rc(immu_enc_ref_value(ref, rlen, at, buf, need - 1, &len),
              IMMU_ETOOLARGE);
    assert_rc(immu_enc_ref_value(ref, rlen, at, buf, need, &len), 0);
    assert_int_equal(len, need);
    assert_int_equal(buf[0], 0x01);
    assert_int_equal(buf[9], 0x00);
    uint64_t got_at = 0;
    const uint8_t *rk = NULL;
    size_t got_rlen = 12345;
    assert_rc(immu_dec_ref_value(buf, len, &got_at, &rk, &got_rlen), 0);
    assert_int_equal(got_at, at);
    assert_int_equal(got_rlen, rlen);
    if (rlen > 0) {
      assert_memory_equal(rk, ref, rlen);
    }
    /* Truncated below the fixed part: corrupt. */
    for (size_t cut = 0; cut < 10 && cut < len; cut++) {
      assert_rc(immu_dec_ref_value(buf, cut, &got_at, &rk, &got_rlen),
                IMMU_ECORRUPT);
    }
    /* Wrong prefixes: a plain value (0x00) is no reference, and the
     * referenced key must be a SET key (0x00 prefix). */
    buf[0] = 0x00;
    assert_rc(immu_dec_ref_value(buf, len, &got_at, &rk, &got_rlen),
              IMMU_ECORRUPT);
    buf[0] = 0x01;
    buf[9] = 0x01;
    assert_rc(immu_dec_ref_value(buf, len, &got_at, &rk, &got_rlen),
              IMMU_ECORRUPT);
    free(buf);
  }
}

static void test_zadd_key_roundtrip(void **state) {
  (void)state;
  static const uint64_t special[] = {
      0x0000000000000000ull, 0x8000000000000000ull, /* +0, -0 */
      0x7ff0000000000000ull, 0xfff0000000000000ull, /* +inf, -inf */
      0x7ff8000000000000ull, 0x7ff4000000000001ull, /* qNaN, sNaN payload */
      0x0000000000000001ull, 0x3ff8000000000000ull, /* denormal, 1.5 */
  };
  for (int k = 0; k < 500; k++) {
    size_t slen = k < 3 ? (size_t)k : rnd_below(200);
    size_t klen = k < 3 ? (size_t)(2 - k) : rnd_below(200);
    uint8_t set[200], key[200];
    rnd_bytes(set, slen);
    rnd_bytes(key, klen);
    uint64_t sbits = k < 8 ? special[k] : rnd();
    double score = bits_to_double(sbits);
    uint64_t at = k % 4 == 0 ? 0 : rnd();
    size_t need = 1 + 8 + slen + 8 + 8 + 1 + klen + 8, len = 0;
    assert_int_equal(IMMU_ENC_ZADD_KEY_LEN(slen, klen), need);
    uint8_t *buf = malloc(need);
    assert_non_null(buf);
    assert_rc(immu_enc_zadd_key(set, slen, score, key, klen, at, buf, need - 1,
                                &len),
              IMMU_ETOOLARGE);
    assert_rc(
        immu_enc_zadd_key(set, slen, score, key, klen, at, buf, need, &len), 0);
    assert_int_equal(len, need);

    const uint8_t *gset = NULL, *gek = NULL;
    size_t gslen = 0, geklen = 0;
    double gscore = 0;
    uint64_t gat = 0;
    assert_rc(immu_dec_zadd_key(buf, len, &gset, &gslen, &gscore, &gek,
                                &geklen, &gat),
              0);
    assert_int_equal(gslen, slen);
    if (slen > 0) {
      assert_memory_equal(gset, set, slen);
    }
    assert_int_equal(double_to_bits(gscore), sbits);
    assert_int_equal(geklen, klen + 1);
    assert_int_equal(gek[0], 0x00);
    if (klen > 0) {
      assert_memory_equal(gek + 1, key, klen);
    }
    assert_int_equal(gat, at);

    /* Every strict prefix is corrupt: the length fields fix the size. */
    for (size_t cut = 0; cut < len; cut++) {
      assert_rc(immu_dec_zadd_key(buf, cut, &gset, &gslen, &gscore, &gek,
                                  &geklen, &gat),
                IMMU_ECORRUPT);
    }
    /* So is a trailing byte. */
    uint8_t *longer = malloc(need + 1);
    assert_non_null(longer);
    memcpy(longer, buf, need);
    longer[need] = 0;
    assert_rc(immu_dec_zadd_key(longer, need + 1, &gset, &gslen, &gscore, &gek,
                                &geklen, &gat),
              IMMU_ECORRUPT);
    free(longer);
    /* Wrong prefix bytes and absurd lengths. */
    buf[0] = 0x00;
    assert_rc(immu_dec_zadd_key(buf, len, &gset, &gslen, &gscore, &gek,
                                &geklen, &gat),
              IMMU_ECORRUPT);
    buf[0] = 0x01;
    buf[1 + 8 + slen + 16] = 0x02; /* the encoded key's 0x00 prefix */
    assert_rc(immu_dec_zadd_key(buf, len, &gset, &gslen, &gscore, &gek,
                                &geklen, &gat),
              IMMU_ECORRUPT);
    buf[1 + 8 + slen + 16] = 0x00;
    memset(buf + 1, 0xff, 8); /* set length 2^64 - 1 */
    assert_rc(immu_dec_zadd_key(buf, len, &gset, &gslen, &gscore, &gek,
                                &geklen, &gat),
              IMMU_ECORRUPT);
    free(buf);
  }
  /* An encoded key of length 0 (no 0x00 prefix) is corrupt. */
  uint8_t z[33];
  memset(z, 0, sizeof z);
  z[0] = 0x01;
  const uint8_t *gset = NULL, *gek = NULL;
  size_t gslen = 0, geklen = 0;
  double gscore = 0;
  uint64_t gat = 0;
  assert_rc(
      immu_dec_zadd_key(z, sizeof z, &gset, &gslen, &gscore, &gek, &geklen, &gat),
      IMMU_ECORRUPT);
}

static void test_key_value_encoders(void **state) {
  (void)state;
  uint8_t in[64], *buf;
  size_t len;
  rnd_bytes(in, sizeof in);
  for (size_t n = 0; n <= sizeof in; n += 7) {
    buf = malloc(n + 1);
    assert_non_null(buf);
    assert_rc(immu_enc_key(in, n, buf, n, &len), IMMU_ETOOLARGE);
    assert_rc(immu_enc_key(in, n, buf, n + 1, &len), 0);
    assert_int_equal(len, IMMU_ENC_KEY_LEN(n));
    assert_int_equal(buf[0], IMMU_PREFIX_SET);
    assert_memory_equal(buf + 1, in, n);
    assert_rc(immu_enc_value(in, n, buf, n, &len), IMMU_ETOOLARGE);
    assert_rc(immu_enc_value(in, n, buf, n + 1, &len), 0);
    assert_int_equal(len, IMMU_ENC_VALUE_LEN(n));
    assert_int_equal(buf[0], IMMU_VALUE_PLAIN);
    assert_memory_equal(buf + 1, in, n);
    free(buf);
  }
}

static void test_entry_digest_errors(void **state) {
  (void)state;
  uint8_t md[IMMU_KV_MD_MAX + 1] = {0};
  immu_digest hv, out;
  rnd_digest(&hv);
  uint8_t *big = calloc(70000, 1);
  assert_non_null(big);

  /* v0 with metadata */
  assert_rc(immu_entry_digest(0, big, 5, md, 1, &hv, &out), IMMU_EINVAL);
  /* unknown versions */
  assert_rc(immu_entry_digest(2, big, 5, NULL, 0, &hv, &out), IMMU_EINVAL);
  assert_rc(immu_entry_digest(7, big, 5, NULL, 0, &hv, &out), IMMU_EINVAL);
  assert_rc(immu_entry_digest(0xffffffffu, big, 5, NULL, 0, &hv, &out),
            IMMU_EINVAL);
  /* v1 metadata longer than 11 bytes */
  assert_rc(immu_entry_digest(1, big, 5, md, IMMU_KV_MD_MAX, &hv, &out), 0);
  assert_rc(immu_entry_digest(1, big, 5, md, IMMU_KV_MD_MAX + 1, &hv, &out),
            IMMU_EINVAL);
  /* v1 key longer than 65535 bytes; v0 has no length prefix and no limit */
  assert_rc(immu_entry_digest(1, big, 65535, NULL, 0, &hv, &out), 0);
  assert_rc(immu_entry_digest(1, big, 65536, NULL, 0, &hv, &out), IMMU_EINVAL);
  assert_rc(immu_entry_digest(0, big, 70000, NULL, 0, &hv, &out), 0);
  /* v0 = H(key || hval), v1 = H(u16 0 || u16 klen || key || hval). */
  uint8_t buf[2 + 2 + 5 + 32];
  immu_digest want;
  memcpy(buf, big, 5);
  memcpy(buf + 5, hv.b, 32);
  immu_sha256(buf, 37, &want);
  assert_rc(immu_entry_digest(0, big, 5, NULL, 0, &hv, &out), 0);
  assert_digest_equal(&out, &want);
  buf[0] = 0;
  buf[1] = 0;
  buf[2] = 0;
  buf[3] = 5;
  memcpy(buf + 4, big, 5);
  memcpy(buf + 9, hv.b, 32);
  immu_sha256(buf, sizeof buf, &want);
  assert_rc(immu_entry_digest(1, big, 5, NULL, 0, &hv, &out), 0);
  assert_digest_equal(&out, &want);
  /* An empty key is fine in both versions. */
  assert_rc(immu_entry_digest(0, NULL, 0, NULL, 0, &hv, &out), 0);
  assert_rc(immu_entry_digest(1, NULL, 0, NULL, 0, &hv, &out), 0);
  free(big);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_dual_case_table),
      cmocka_unit_test(test_dual_gen_errors),
      cmocka_unit_test(test_dual_verify_rules),
      cmocka_unit_test(test_linear_proofs),
      cmocka_unit_test(test_linear_advance_rules),
      cmocka_unit_test(test_dual_chain_a),
      cmocka_unit_test(test_dual_chain_b),
      cmocka_unit_test(test_dual_chain_c),
      cmocka_unit_test(test_ref_value_roundtrip),
      cmocka_unit_test(test_zadd_key_roundtrip),
      cmocka_unit_test(test_key_value_encoders),
      cmocka_unit_test(test_entry_digest_errors),
  };
  return cmocka_run_group_tests(tests, chains_setup, chains_teardown);
}
