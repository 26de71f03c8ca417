/* SPDX-License-Identifier: Apache-2.0 */
/*
 * ahtree: the append-only binary-linking tree over the Alhs of all
 * transactions (spec 5). Leaves are 1-based in the API (leaf n = tx n) and
 * 0-based inside this file.
 *
 * Storage: the nodes of perfect subtrees in post order (see crypto.h). An
 * append writes the new leaf and the subtrees it completes, in one store
 * call; nothing stored is ever recomputed. The current peaks (one per set
 * bit of the size) are kept in memory, so Root(size) costs popcount-1
 * hashes and no reads. Any other root or proof reads O(log n) nodes.
 */
#include <assert.h>
#include <string.h>

#include "core/mem.h"
#include "core/merkle.h"
#include "immudb/crypto.h"

struct immu_ahtree {
  immu_ahtree_store store;
  uint64_t n;              /* leaves */
  immu_digest peaks[64];   /* peaks of the current tree, largest first */
  immu_digest root;        /* Root(n), valid if root_ok */
  int root_ok;
  /* in-memory store (immu_ahtree_new_mem) */
  immu_digest *mem;
  uint64_t mem_len, mem_cap;
};

static uint64_t leaf_pos(uint64_t i) { return 2 * i - immu__popcount64(i); }

/* Position of the node of |level| whose subtree's first leaf is |start|
 * (start is a multiple of 2^level). */
static uint64_t node_pos(unsigned level, uint64_t start) {
  uint64_t last = start + ((uint64_t)1 << level) - 1;
  return leaf_pos(last) + level;
}

static uint64_t nodes_for(uint64_t n) { return 2 * n - immu__popcount64(n); }

static int read_node(const immu_ahtree *t, unsigned level, uint64_t start,
                     immu_digest *out) {
  return t->store.read(t->store.ctx, node_pos(level, start), 1, out);
}

/* MTH of leaves [a, b), where a is a multiple of the largest power of two
 * not above b - a (always true for the ranges RFC 6962 recursion visits). */
static int range_root(const immu_ahtree *t, uint64_t a, uint64_t b,
                      immu_digest *out) {
  immu_digest peaks[64];
  unsigned np = 0;
  uint64_t size = b - a, start = a;
  int rc;

  assert(b > a);
  for (int l = 63; l >= 0; l--) {
    if (!(size >> l & 1))
      continue;
    assert(start % ((uint64_t)1 << l) == 0);
    if ((rc = read_node(t, (unsigned)l, start, &peaks[np++])) != 0)
      return rc;
    start += (uint64_t)1 << l;
  }
  immu_digest acc = peaks[np - 1];
  for (unsigned i = np - 1; i-- > 0;)
    immu__node_hash(&peaks[i], &acc, &acc);
  *out = acc;
  return 0;
}

static int mem_read(void *ctx, uint64_t pos, size_t n, immu_digest *out) {
  immu_ahtree *t = ctx;
  if (pos > t->mem_len || n > t->mem_len - pos)
    return IMMU_ERANGE;
  memcpy(out, t->mem + pos, n * sizeof *out);
  return 0;
}

static int mem_append(void *ctx, uint64_t pos, const immu_digest *nodes,
                      size_t n) {
  immu_ahtree *t = ctx;
  if (pos != t->mem_len)
    return IMMU_EINVAL;
  if (t->mem_len + n > t->mem_cap) {
    uint64_t cap = t->mem_cap ? t->mem_cap * 2 : 1024;
    while (cap < t->mem_len + n)
      cap *= 2;
    if (cap > SIZE_MAX / sizeof(immu_digest))
      return IMMU_ENOMEM;
    immu_digest *m = immu__realloc(t->mem, (size_t)cap * sizeof *m);
    if (m == NULL)
      return IMMU_ENOMEM;
    t->mem = m;
    t->mem_cap = cap;
  }
  memcpy(t->mem + pos, nodes, n * sizeof *nodes);
  t->mem_len += n;
  return 0;
}

int immu_ahtree_open(const immu_ahtree_store *store, uint64_t nleaves,
                     immu_ahtree **out) {
  immu_ahtree *t;
  uint64_t start = 0;
  unsigned np = 0;
  int rc;

  *out = NULL;
  if (store == NULL || store->read == NULL || store->append == NULL ||
      nleaves > ((uint64_t)1 << 62))
    return IMMU_EINVAL;
  if ((t = immu__calloc(1, sizeof *t)) == NULL)
    return IMMU_ENOMEM;
  t->store = *store;
  for (int l = 63; l >= 0; l--) {
    if (!(nleaves >> l & 1))
      continue;
    if ((rc = read_node(t, (unsigned)l, start, &t->peaks[np++])) != 0) {
      immu__free(t);
      return rc;
    }
    start += (uint64_t)1 << l;
  }
  t->n = nleaves;
  *out = t;
  return 0;
}

int immu_ahtree_new_mem(immu_ahtree **out) {
  immu_ahtree *t;
  *out = NULL;
  if ((t = immu__calloc(1, sizeof *t)) == NULL)
    return IMMU_ENOMEM;
  t->store.ctx = t;
  t->store.read = mem_read;
  t->store.append = mem_append;
  *out = t;
  return 0;
}

void immu_ahtree_free(immu_ahtree *t) {
  if (t == NULL)
    return;
  immu__free(t->mem);
  immu__free(t);
}

uint64_t immu_ahtree_size(const immu_ahtree *t) { return t->n; }

void immu_ahtree_leaf(const immu_digest *alh, immu_digest *out) {
  immu__leaf_hash32(alh, out);
}

static void fold_peaks(const immu_digest *peaks, unsigned np,
                       immu_digest *out) {
  immu_digest acc = peaks[np - 1];
  for (unsigned i = np - 1; i-- > 0;)
    immu__node_hash(&peaks[i], &acc, &acc);
  *out = acc;
}

int immu_ahtree_append(immu_ahtree *t, const void *data, size_t len,
                       immu_digest *root) {
  immu_digest nodes[65];
  unsigned np = immu__popcount64(t->n), nn = 0;
  uint64_t i = t->n;
  int rc;

  if (t->n >= ((uint64_t)1 << 62))
    return IMMU_ERANGE;
  {
    uint8_t pfx = 0x00;
    immu_buf parts[2] = {{&pfx, 1}, {data, len}};
    immu_sha256v(parts, 2, &nodes[nn++]);
  }
  /* Each trailing one bit of i is a peak that the new leaf completes. */
  for (uint64_t x = i; x & 1; x >>= 1) {
    immu__node_hash(&t->peaks[np - 1 - (nn - 1)], &nodes[nn - 1], &nodes[nn]);
    nn++;
  }
  if ((rc = t->store.append(t->store.ctx, nodes_for(i), nodes, nn)) != 0)
    return rc;
  np -= nn - 1;
  t->peaks[np++] = nodes[nn - 1];
  t->n++;
  t->root_ok = 0;
  if (root != NULL) {
    fold_peaks(t->peaks, np, &t->root);
    t->root_ok = 1;
    *root = t->root;
  }
  return 0;
}

int immu_ahtree_root_at(const immu_ahtree *t, uint64_t m, immu_digest *out) {
  if (m == 0 || m > t->n)
    return IMMU_ERANGE;
  if (m == t->n) {
    if (t->root_ok)
      *out = t->root;
    else
      fold_peaks(t->peaks, immu__popcount64(t->n), out);
    return 0;
  }
  return range_root(t, 0, m, out);
}

/* RFC 6962 PATH(m, D[lo:lo+n]), bottom-up. */
static int path(const immu_ahtree *t, uint64_t m, uint64_t lo, uint64_t n,
                immu_digest *terms, size_t *cnt) {
  int rc;
  if (n <= 1)
    return 0;
  uint64_t k = immu__split_point(n);
  if (m < k) {
    if ((rc = path(t, m, lo, k, terms, cnt)) != 0)
      return rc;
    return range_root(t, lo + k, lo + n, &terms[(*cnt)++]);
  }
  if ((rc = path(t, m - k, lo + k, n - k, terms, cnt)) != 0)
    return rc;
  return range_root(t, lo, lo + k, &terms[(*cnt)++]);
}

int immu_ahtree_inclusion_proof(const immu_ahtree *t, uint64_t i, uint64_t j,
                                immu_digest *terms, size_t *nterms) {
  if (i == 0 || i > j || j > t->n)
    return IMMU_ERANGE;
  *nterms = 0;
  return path(t, i - 1, 0, j, terms, nterms);
}

/* RFC 6962 SUBPROOF(m, D[lo:lo+n], b). */
static int subproof(const immu_ahtree *t, uint64_t m, uint64_t lo, uint64_t n,
                    int b, immu_digest *terms, size_t *cnt) {
  int rc;
  if (m == n) {
    if (!b)
      return range_root(t, lo, lo + n, &terms[(*cnt)++]);
    return 0;
  }
  uint64_t k = immu__split_point(n);
  if (m <= k) {
    if ((rc = subproof(t, m, lo, k, b, terms, cnt)) != 0)
      return rc;
    return range_root(t, lo + k, lo + n, &terms[(*cnt)++]);
  }
  if ((rc = subproof(t, m - k, lo + k, n - k, 0, terms, cnt)) != 0)
    return rc;
  return range_root(t, lo, lo + k, &terms[(*cnt)++]);
}

int immu_ahtree_consistency_proof(const immu_ahtree *t, uint64_t i, uint64_t j,
                                  immu_digest *terms, size_t *nterms) {
  int rc;
  if (i == 0 || i > j || j > t->n)
    return IMMU_ERANGE;
  *nterms = 0;
  if (i == j) {
    /* SPEC 5.3: empty for (1, 1); [MTH(D[k:n]), MTH(D[0:k])] otherwise. */
    if (j == 1)
      return 0;
    uint64_t k = immu__split_point(j);
    if ((rc = range_root(t, k, j, &terms[0])) != 0 ||
        (rc = range_root(t, 0, k, &terms[1])) != 0)
      return rc;
    *nterms = 2;
    return 0;
  }
  if ((i & (i - 1)) == 0) {
    /* SPEC 5.3: a power-of-two i starts with MTH(D[0:i]). */
    if ((rc = range_root(t, 0, i, &terms[(*nterms)++])) != 0)
      return rc;
  }
  return subproof(t, i, 0, j, 1, terms, nterms);
}

int immu_ahtree_verify_inclusion(const immu_digest *terms, size_t nterms,
                                 uint64_t i, uint64_t j,
                                 const immu_digest *ileaf,
                                 const immu_digest *jroot) {
  immu_digest c;
  uint64_t i1, j1;

  if (i == 0 || i > j || (i < j && nterms == 0) ||
      (nterms > 0 && terms == NULL))
    return IMMU_EVERIFY;
  i1 = i - 1;
  j1 = j - 1;
  c = *ileaf;
  for (size_t k = 0; k < nterms; k++) {
    if (i1 % 2 == 0 && i1 != j1)
      immu__node_hash(&c, &terms[k], &c);
    else
      immu__node_hash(&terms[k], &c, &c);
    i1 >>= 1;
    j1 >>= 1;
  }
  return immu_digest_eq(&c, jroot) ? 0 : IMMU_EVERIFY;
}

int immu_ahtree_verify_last_inclusion(const immu_digest *terms, size_t nterms,
                                      uint64_t i, const immu_digest *leaf,
                                      const immu_digest *root) {
  immu_digest c;
  if (i == 0 || (nterms > 0 && terms == NULL))
    return IMMU_EVERIFY;
  c = *leaf;
  for (size_t k = 0; k < nterms; k++)
    immu__node_hash(&terms[k], &c, &c);
  return immu_digest_eq(&c, root) ? 0 : IMMU_EVERIFY;
}

int immu_ahtree_verify_consistency(const immu_digest *terms, size_t nterms,
                                   uint64_t i, uint64_t j,
                                   const immu_digest *iroot,
                                   const immu_digest *jroot) {
  immu_digest ci, cj;
  uint64_t fn, sn;

  if (i == 0 || i > j || (i < j && nterms == 0) ||
      (nterms > 0 && terms == NULL))
    return IMMU_EVERIFY;
  if (i == j && nterms == 0)
    return immu_digest_eq(iroot, jroot) ? 0 : IMMU_EVERIFY;
  fn = i - 1;
  sn = j - 1;
  while (fn % 2 == 1) {
    fn >>= 1;
    sn >>= 1;
  }
  ci = cj = terms[0];
  for (size_t k = 1; k < nterms; k++) {
    if (fn % 2 == 1 || fn == sn) {
      immu__node_hash(&terms[k], &ci, &ci);
      immu__node_hash(&terms[k], &cj, &cj);
      while (fn % 2 == 0 && fn != 0) {
        fn >>= 1;
        sn >>= 1;
      }
    } else {
      immu__node_hash(&cj, &terms[k], &cj);
    }
    fn >>= 1;
    sn >>= 1;
  }
  return (immu_digest_eq(&ci, iroot) && immu_digest_eq(&cj, jroot))
             ? 0
             : IMMU_EVERIFY;
}
