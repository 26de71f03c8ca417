/* SPDX-License-Identifier: Apache-2.0 */
/*
 * htree: the Merkle tree over one transaction's entry digests (spec 4).
 * Its shape is RFC 6962's (odd nodes promoted), so the root is computed as a
 * fold of the perfect subtrees ("peaks") of a binary counter: O(n) hashes,
 * O(log n) stack, no allocation.
 */
#include "core/merkle.h"
#include "immudb/crypto.h"

/* Root over d[0..n), n >= 1. */
static void range_root(const immu_digest *d, size_t n, immu_digest *out) {
  immu_digest stack[65];
  unsigned level[65];
  size_t sp = 0;

  for (size_t i = 0; i < n; i++) {
    immu__leaf_hash32(&d[i], &stack[sp]);
    level[sp++] = 0;
    while (sp >= 2 && level[sp - 1] == level[sp - 2]) {
      immu__node_hash(&stack[sp - 2], &stack[sp - 1], &stack[sp - 2]);
      level[sp - 2]++;
      sp--;
    }
  }
  /* Fold the peaks right to left: that is RFC 6962's split at the largest
   * power of two. */
  immu_digest acc = stack[sp - 1];
  for (size_t i = sp - 1; i-- > 0;)
    immu__node_hash(&stack[i], &acc, &acc);
  *out = acc;
}

int immu_htree_root(const immu_digest *digests, size_t n, immu_digest *root) {
  if (n == 0)
    return IMMU_EINVAL;
  range_root(digests, n, root);
  return 0;
}

/* RFC 6962 PATH(m, D[lo:lo+n]), bottom-up. */
static void path(const immu_digest *d, size_t m, size_t lo, size_t n,
                 immu_digest *terms, size_t *cnt) {
  if (n <= 1)
    return;
  size_t k = (size_t)immu__split_point(n);
  if (m < k) {
    path(d, m, lo, k, terms, cnt);
    range_root(d + lo + k, n - k, &terms[(*cnt)++]);
  } else {
    path(d, m - k, lo + k, n - k, terms, cnt);
    range_root(d + lo, k, &terms[(*cnt)++]);
  }
}

int immu_htree_proof(const immu_digest *digests, size_t n, size_t leaf,
                     immu_digest *terms, size_t *nterms) {
  if (n == 0 || leaf >= n)
    return IMMU_EINVAL;
  *nterms = 0;
  path(digests, leaf, 0, n, terms, nterms);
  return 0;
}

int immu_htree_verify(const immu_digest *terms, size_t nterms, uint64_t leaf,
                      uint64_t width, const immu_digest *digest,
                      const immu_digest *root) {
  immu_digest c;
  uint64_t i = leaf, r;

  if (width == 0 || leaf >= width || (nterms > 0 && terms == NULL))
    return IMMU_EVERIFY;
  r = width - 1;
  immu__leaf_hash32(digest, &c);
  for (size_t k = 0; k < nterms; k++) {
    if (i % 2 == 0 && i != r)
      immu__node_hash(&c, &terms[k], &c);
    else
      immu__node_hash(&terms[k], &c, &c);
    i >>= 1;
    r >>= 1;
  }
  return (i == r && immu_digest_eq(&c, root)) ? 0 : IMMU_EVERIFY;
}
