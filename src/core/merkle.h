/* SPDX-License-Identifier: Apache-2.0 */
/* Leaf and node hashing shared by htree and ahtree (spec 4.1, 5.1):
 * leaf = H(0x00 || payload), node = H(0x01 || left || right). */
#ifndef IMMU_CORE_MERKLE_H
#define IMMU_CORE_MERKLE_H

#include <string.h>

#include "immudb/crypto.h"

static inline void immu__node_hash(const immu_digest *l, const immu_digest *r,
                                   immu_digest *out) {
  uint8_t buf[1 + 2 * IMMU_DIGEST_LEN];
  buf[0] = 0x01;
  memcpy(buf + 1, l->b, IMMU_DIGEST_LEN);
  memcpy(buf + 1 + IMMU_DIGEST_LEN, r->b, IMMU_DIGEST_LEN);
  immu_sha256(buf, sizeof buf, out);
}

static inline void immu__leaf_hash32(const immu_digest *d, immu_digest *out) {
  uint8_t buf[1 + IMMU_DIGEST_LEN];
  buf[0] = 0x00;
  memcpy(buf + 1, d->b, IMMU_DIGEST_LEN);
  immu_sha256(buf, sizeof buf, out);
}

/* Largest power of two strictly below n (n >= 2). */
static inline uint64_t immu__split_point(uint64_t n) {
  uint64_t k = 1;
  while (k << 1 < n)
    k <<= 1;
  return k;
}

static inline unsigned immu__popcount64(uint64_t x) {
  return (unsigned)__builtin_popcountll(x);
}

#endif
