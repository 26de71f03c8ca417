/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fuzz target: the ahtree verifiers (spec 5.4) never crash and never accept
 * a forgery.
 *
 * The input picks a tree size n (Alhs H(seed || k)), one of the three proof
 * kinds with genuine indices, mutates the genuine proof, and then makes a
 * claim (indices, leaf, roots). The tree is real, so forgeries are judged
 * against the genuine roots Root(x), 1 <= x <= n:
 *
 *  - inclusion, claimed leaf = leafFor(alh'), root = Root(x):
 *      accepted => alh' is one of Alh(1..x). By collision resistance the
 *      accepted fold is a path of real nodes of tree x, and a leaf hash
 *      H(0x00 || alh') can only be a leaf node. (The claimed position is NOT
 *      checked: spec 5.4 has no final i1 == j1 test, so e.g. the proof of
 *      leaf 5 in a 5-leaf tree also passes as "leaf 2"; that is the spec.)
 *  - last inclusion, leaf = leafFor(alh'), root = Root(x):
 *      accepted => alh' == Alh(x): an all-left fold walks the right spine,
 *      whose only leaf is the last one.
 *  - consistency, jroot = Root(x):
 *      accepted => iroot is Root(y) for some 1 <= y <= x. ci folds exactly
 *      the left siblings that cj (a real path of tree x) folds, and such a
 *      fold is the RFC 6962 root of a prefix.
 *
 * Claims against roots or leaves the input made up are only run for
 * robustness.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "immudb/crypto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct fz {
  const uint8_t *p;
  size_t n;
} fz;

static uint8_t fz_u8(fz *f) {
  if (f->n == 0) {
    return 0;
  }
  f->n--;
  return *f->p++;
}

static uint16_t fz_u16(fz *f) {
  uint16_t hi = fz_u8(f);
  return (uint16_t)(hi << 8 | fz_u8(f));
}

static uint64_t fz_u64(fz *f) {
  uint64_t v = 0;
  for (int i = 0; i < 8; i++) {
    v = v << 8 | fz_u8(f);
  }
  return v;
}

static void fz_digest(fz *f, immu_digest *d) {
  size_t k = f->n < 32 ? f->n : 32;
  memcpy(d->b, f->p, k);
  memset(d->b + k, 0, 32 - k);
  f->p += k;
  f->n -= k;
}

#define MAXN 300
#define CAP (IMMU_PROOF_MAX_TERMS + 8)

static void fail(const char *what, int kind, uint64_t i, uint64_t j,
                 uint64_t x) {
  fprintf(stderr,
          "fuzz_ahtree_verify: %s (kind %d, i %llu, j %llu, root size %llu)\n",
          what, kind, (unsigned long long)i, (unsigned long long)j,
          (unsigned long long)x);
  abort();
}

/* Mutates q[0..*nq) as the input says; |pool| holds real tree nodes. */
static void mutate(fz *f, immu_digest *q, size_t *nq, const immu_digest *pool,
                   size_t npool) {
  unsigned nops = fz_u8(f) % 8;
  for (unsigned op = 0; op < nops; op++) {
    unsigned kind = fz_u8(f) % 8;
    size_t n = *nq;
    size_t k = n ? fz_u8(f) % n : 0;
    switch (kind) {
    case 0:
      if (n) {
        q[k].b[fz_u8(f) % 32] ^= (uint8_t)(1u << (fz_u8(f) % 8));
      }
      break;
    case 1:
      if (n) {
        fz_digest(f, &q[k]);
      }
      break;
    case 2:
      if (n && npool) {
        q[k] = pool[fz_u16(f) % npool];
      }
      break;
    case 3:
      if (n) {
        memmove(&q[k], &q[k + 1], (n - k - 1) * sizeof *q);
        (*nq)--;
      }
      break;
    case 4:
    case 5:
      if (n < CAP) {
        size_t at = fz_u8(f) % (n + 1);
        memmove(&q[at + 1], &q[at], (n - at) * sizeof *q);
        if (kind == 4 || npool == 0) {
          fz_digest(f, &q[at]);
        } else {
          q[at] = pool[fz_u16(f) % npool];
        }
        (*nq)++;
      }
      break;
    case 6:
      if (n >= 2) {
        size_t k2 = fz_u8(f) % n;
        immu_digest t = q[k];
        q[k] = q[k2];
        q[k2] = t;
      }
      break;
    default:
      *nq = n ? fz_u8(f) % (n + 1) : 0;
      break;
    }
  }
}

/* A claimed index near |genuine|, or anything. */
static uint64_t claim_index(fz *f, uint64_t genuine, uint64_t n) {
  switch (fz_u8(f) % 6) {
  case 1:
    return genuine + 1;
  case 2:
    return genuine - 1;
  case 3:
    return fz_u64(f);
  case 4:
    return 1 + fz_u16(f) % n;
  default:
    return genuine;
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fz f = {data, size};
  static immu_digest alh[MAXN + 1], leaf[MAXN + 1], roots[MAXN + 1];
  immu_digest g[IMMU_PROOF_MAX_TERMS], q[CAP];
  immu_digest pool[4 * IMMU_PROOF_MAX_TERMS + MAXN];
  size_t ng = 0, nq, npool = 0;
  immu_ahtree *t = NULL;
  uint8_t seed[12];

  uint64_t n = 1 + fz_u16(&f) % MAXN;
  for (int i = 0; i < 8; i++) {
    seed[i] = fz_u8(&f);
  }
  if (immu_ahtree_new_mem(&t) != 0) {
    abort();
  }
  for (uint64_t k = 1; k <= n; k++) {
    seed[8] = (uint8_t)(k >> 24);
    seed[9] = (uint8_t)(k >> 16);
    seed[10] = (uint8_t)(k >> 8);
    seed[11] = (uint8_t)k;
    immu_sha256(seed, sizeof seed, &alh[k]);
    immu_ahtree_leaf(&alh[k], &leaf[k]);
    if (immu_ahtree_append(t, alh[k].b, 32, &roots[k]) != 0) {
      abort();
    }
  }

  int kind = fz_u8(&f) % 3; /* 0 inclusion, 1 last inclusion, 2 consistency */
  uint64_t j = 1 + fz_u16(&f) % n;
  uint64_t i = kind == 1 ? j : 1 + fz_u16(&f) % j;
  int rc = kind == 2 ? immu_ahtree_consistency_proof(t, i, j, g, &ng)
                     : immu_ahtree_inclusion_proof(t, i, j, g, &ng);
  if (rc != 0 || ng > IMMU_PROOF_MAX_TERMS) {
    fail("generation failed", kind, i, j, 0);
  }
  switch (kind) {
  case 0:
    rc = immu_ahtree_verify_inclusion(g, ng, i, j, &leaf[i], &roots[j]);
    break;
  case 1:
    rc = immu_ahtree_verify_last_inclusion(g, ng, j, &leaf[j], &roots[j]);
    break;
  default:
    rc = immu_ahtree_verify_consistency(g, ng, i, j, &roots[i], &roots[j]);
    break;
  }
  if (rc != 0) {
    fail("genuine proof rejected", kind, i, j, j);
  }

  /* A pool of real nodes: other genuine proofs, roots and leaves. */
  for (int r = 0; r < 3; r++) {
    size_t np = 0;
    uint64_t jj = 1 + fz_u16(&f) % n, ii = 1 + fz_u16(&f) % jj;
    if ((r == 1 ? immu_ahtree_consistency_proof(t, ii, jj, pool + npool, &np)
                : immu_ahtree_inclusion_proof(t, ii, jj, pool + npool, &np)) !=
        0) {
      abort();
    }
    npool += np;
  }
  for (uint64_t k = 1; k <= n; k++) {
    pool[npool++] = (k % 2) ? roots[k] : leaf[k];
  }

  memcpy(q, g, ng * sizeof *q);
  nq = ng;
  mutate(&f, q, &nq, pool, npool);

  /* The claim. */
  uint64_t ci = claim_index(&f, i, n), cj = claim_index(&f, j, n);
  /* The root the claim is checked against: Root(x) of the real tree, or
   * made up by the input (then no forgery check). */
  int made_up_root = fz_u8(&f) % 8 == 7;
  uint64_t x = j;
  if (fz_u8(&f) % 2) {
    x = 1 + fz_u16(&f) % n;
  }
  immu_digest jroot = roots[x];
  if (made_up_root) {
    fz_digest(&f, &jroot);
  }
  /* The first argument: a leaf hash of an Alh (genuine, another tx's,
   * altered or made up), or a raw digest used as a leaf (no check). For
   * consistency, iroot: a genuine root, altered, or made up. */
  immu_digest a = kind == 1 ? alh[j] : alh[i];
  immu_digest first;
  int raw_first = 0;
  switch (fz_u8(&f) % 6) {
  case 1:
    a = alh[1 + fz_u16(&f) % n];
    break;
  case 2:
    a.b[fz_u8(&f) % 32] ^= (uint8_t)(1u << (fz_u8(&f) % 8));
    break;
  case 3:
    fz_digest(&f, &a);
    break;
  case 4:
    raw_first = 1;
    break;
  default:
    break;
  }
  if (kind == 2) {
    first = roots[i];
    switch (fz_u8(&f) % 4) {
    case 1:
      first = roots[1 + fz_u16(&f) % n];
      break;
    case 2:
      first.b[fz_u8(&f) % 32] ^= (uint8_t)(1u << (fz_u8(&f) % 8));
      break;
    case 3:
      fz_digest(&f, &first);
      break;
    default:
      break;
    }
  } else if (raw_first) {
    if (fz_u8(&f) % 2) {
      first = pool[fz_u16(&f) % npool];
    } else {
      fz_digest(&f, &first);
    }
  } else {
    immu_ahtree_leaf(&a, &first);
  }

  const immu_digest *qp = nq ? q : NULL;
  switch (kind) {
  case 0:
    rc = immu_ahtree_verify_inclusion(qp, nq, ci, cj, &first, &jroot);
    break;
  case 1:
    rc = immu_ahtree_verify_last_inclusion(qp, nq, ci, &first, &jroot);
    break;
  default:
    rc = immu_ahtree_verify_consistency(qp, nq, ci, cj, &first, &jroot);
    break;
  }
  if (rc != 0 && rc != IMMU_EVERIFY) {
    fail("unexpected return code", kind, ci, cj, x);
  }
  if (rc == 0 && !made_up_root) {
    if (kind == 0 && !raw_first) {
      int member = 0;
      for (uint64_t k = 1; k <= x; k++) {
        if (memcmp(alh[k].b, a.b, 32) == 0) {
          member = 1;
          break;
        }
      }
      if (!member) {
        fail("FORGERY: inclusion of an Alh outside the tree", kind, ci, cj, x);
      }
    } else if (kind == 1 && !raw_first) {
      if (memcmp(alh[x].b, a.b, 32) != 0) {
        fail("FORGERY: last inclusion of an Alh that is not the last leaf",
             kind, ci, cj, x);
      }
    } else if (kind == 2) {
      int prefix = 0;
      for (uint64_t y = 1; y <= x; y++) {
        if (memcmp(roots[y].b, first.b, 32) == 0) {
          prefix = 1;
          break;
        }
      }
      if (!prefix) {
        fail("FORGERY: consistency with a root that is no prefix root", kind,
             ci, cj, x);
      }
    }
  }
  immu_ahtree_free(t);
  return 0;
}
