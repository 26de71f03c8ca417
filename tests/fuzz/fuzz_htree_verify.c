/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fuzz target: immu_htree_verify (spec 4.3) never crashes and never
 * accepts a forgery.
 *
 * The input builds a real tree (width and leaf digests derived from it),
 * takes the genuine proof of one leaf, and then mutates the proof and the
 * claim (leaf index, width, digest) as the input says. The verifier is
 * always asked against the GENUINE root R. "Forged" means:
 *
 *   (a) it accepts a digest that is not one of the tree's entry digests.
 *       By collision resistance an accepted walk ends at a real node of
 *       the tree, and H(0x00 || x) can only be a leaf node, so x must be an
 *       entry digest. (The digests are distinct: H(seed || i).)
 *   (b) it accepts, for the tree's true width, a digest at an index where
 *       it does not sit. With the true width the spec verifier's side
 *       choices plus its final i == r check pin the index (checked
 *       exhaustively for all widths < 300 when this target was written).
 *
 * Not forgeries, hence not checked: a different-looking proof for the same
 * (leaf, digest, root); accepting a true digest under a WRONG width (the
 * spec verifier does not pin the width: the proof of leaf 0 of width 3
 * also passes as width 4); anything verified against a root the input made
 * up.
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

static void die(const char *what, uint64_t leaf, uint64_t width) {
  fprintf(stderr, "fuzz_htree_verify: FORGERY: %s (leaf %llu, width %llu)\n",
          what, (unsigned long long)leaf, (unsigned long long)width);
  abort();
}

#define MAXW 300
#define CAP (IMMU_PROOF_MAX_TERMS + 8)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fz f = {data, size};
  static immu_digest d[MAXW];
  immu_digest root, genuine[IMMU_PROOF_MAX_TERMS], other[IMMU_PROOF_MAX_TERMS];
  immu_digest q[CAP];
  size_t ngen = 0, nother = 0, nq;
  uint8_t seed[12];

  /* The tree. */
  size_t w = 1 + fz_u16(&f) % MAXW;
  for (int i = 0; i < 8; i++) {
    seed[i] = fz_u8(&f);
  }
  for (size_t i = 0; i < w; i++) {
    seed[8] = (uint8_t)(i >> 24);
    seed[9] = (uint8_t)(i >> 16);
    seed[10] = (uint8_t)(i >> 8);
    seed[11] = (uint8_t)i;
    immu_sha256(seed, sizeof seed, &d[i]);
  }
  if (immu_htree_root(d, w, &root) != 0) {
    abort();
  }
  size_t leaf = fz_u16(&f) % w;
  if (immu_htree_proof(d, w, leaf, genuine, &ngen) != 0 ||
      ngen > IMMU_PROOF_MAX_TERMS) {
    abort();
  }
  if (immu_htree_verify(genuine, ngen, leaf, w, &d[leaf], &root) != 0) {
    fprintf(stderr, "fuzz_htree_verify: genuine proof rejected\n");
    abort();
  }
  /* Another leaf's genuine proof: a source of real tree nodes. */
  size_t leaf2 = fz_u16(&f) % w;
  if (immu_htree_proof(d, w, leaf2, other, &nother) != 0) {
    abort();
  }

  /* Mutate the proof. */
  memcpy(q, genuine, ngen * sizeof *q);
  nq = ngen;
  unsigned nops = fz_u8(&f) % 8;
  for (unsigned op = 0; op < nops; op++) {
    unsigned kind = fz_u8(&f) % 9;
    size_t k = nq ? fz_u8(&f) % nq : 0;
    switch (kind) {
    case 0: /* flip a bit */
      if (nq) {
        q[k].b[fz_u8(&f) % 32] ^= (uint8_t)(1u << (fz_u8(&f) % 8));
      }
      break;
    case 1: /* replace with input bytes */
      if (nq) {
        fz_digest(&f, &q[k]);
      }
      break;
    case 2: /* replace with a real node from the other leaf's path */
      if (nq && nother) {
        q[k] = other[fz_u8(&f) % nother];
      }
      break;
    case 3: /* delete */
      if (nq) {
        memmove(&q[k], &q[k + 1], (nq - k - 1) * sizeof *q);
        nq--;
      }
      break;
    case 4: /* insert input bytes */
      if (nq < CAP) {
        size_t at = fz_u8(&f) % (nq + 1);
        memmove(&q[at + 1], &q[at], (nq - at) * sizeof *q);
        fz_digest(&f, &q[at]);
        nq++;
      }
      break;
    case 5: /* insert a real node */
      if (nq < CAP && nother) {
        size_t at = fz_u8(&f) % (nq + 1);
        memmove(&q[at + 1], &q[at], (nq - at) * sizeof *q);
        q[at] = other[fz_u8(&f) % nother];
        nq++;
      }
      break;
    case 6: /* swap */
      if (nq >= 2) {
        size_t k2 = fz_u8(&f) % nq;
        immu_digest t = q[k];
        q[k] = q[k2];
        q[k2] = t;
      }
      break;
    case 7: /* truncate */
      nq = nq ? fz_u8(&f) % (nq + 1) : 0;
      break;
    default: /* the root or a leaf-level digest as a term */
      if (nq) {
        q[k] = fz_u8(&f) & 1 ? root : d[fz_u16(&f) % w];
      }
      break;
    }
  }

  /* The claim. */
  uint64_t cl_leaf = leaf, cl_width = w;
  switch (fz_u8(&f) % 6) {
  case 1:
    cl_leaf = leaf + 1;
    break;
  case 2:
    cl_leaf = leaf - 1; /* wraps for leaf 0: must still be safe */
    break;
  case 3:
    cl_leaf = fz_u64(&f);
    break;
  case 4:
    cl_leaf = fz_u16(&f) % w;
    break;
  default:
    break;
  }
  switch (fz_u8(&f) % 5) {
  case 1:
    cl_width = w + 1;
    break;
  case 2:
    cl_width = w - 1;
    break;
  case 3:
    cl_width = fz_u64(&f);
    break;
  case 4:
    cl_width = fz_u16(&f);
    break;
  default:
    break;
  }
  immu_digest cl_digest = d[leaf];
  switch (fz_u8(&f) % 4) {
  case 1:
    cl_digest = d[fz_u16(&f) % w];
    break;
  case 2:
    cl_digest.b[fz_u8(&f) % 32] ^= (uint8_t)(1u << (fz_u8(&f) % 8));
    break;
  case 3:
    fz_digest(&f, &cl_digest);
    break;
  default:
    break;
  }
  int fake_root = fz_u8(&f) % 8 == 7;
  immu_digest cl_root = root;
  if (fake_root) {
    fz_digest(&f, &cl_root);
  }

  int rc = immu_htree_verify(nq ? q : NULL, nq, cl_leaf, cl_width, &cl_digest,
                             &cl_root);
  if (rc != 0 && rc != IMMU_EVERIFY) {
    fprintf(stderr, "fuzz_htree_verify: unexpected rc %d\n", rc);
    abort();
  }
  if (rc == 0 && !fake_root) {
    int member = 0;
    for (size_t i = 0; i < w; i++) {
      if (memcmp(d[i].b, cl_digest.b, 32) == 0) {
        member = 1;
        break;
      }
    }
    if (!member) {
      die("a digest outside the tree verified", cl_leaf, cl_width);
    }
    if (cl_width == w &&
        (cl_leaf >= w || memcmp(d[cl_leaf].b, cl_digest.b, 32) != 0)) {
      die("a digest verified at an index where it does not sit", cl_leaf,
          cl_width);
    }
  }
  return 0;
}
