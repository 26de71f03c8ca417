/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Linear proofs, linear-advance proofs (CVE-2022-36111) and dual proofs
 * (spec 6): generation as immudb's server does it, and verification as
 * immudb's newest verifier does it (the linear-advance check included).
 */
#include <string.h>

#include "core/mem.h"
#include "immudb/crypto.h"

static int list_alloc(immu_digest_list *l, uint64_t n) {
  l->d = NULL;
  l->n = 0;
  if (n == 0)
    return 0;
  if (n > SIZE_MAX / sizeof(immu_digest))
    return IMMU_ENOMEM;
  if ((l->d = immu__malloc((size_t)n * sizeof(immu_digest))) == NULL)
    return IMMU_ENOMEM;
  l->n = (size_t)n;
  return 0;
}

static void list_free(immu_digest_list *l) {
  immu__free(l->d);
  l->d = NULL;
  l->n = 0;
}

static int inner_of(const immu_tx_source *src, uint64_t id, immu_digest *out) {
  immu_tx_header h;
  int rc = src->header(src->ctx, id, &h);
  if (rc != 0)
    return rc;
  if (h.id != id)
    return IMMU_ECORRUPT;
  return immu_tx_inner_hash(&h, out);
}

/* [Alh(s), inner(s+1) .. inner(t)] into a fresh list. */
static int chain_terms(const immu_tx_source *src, uint64_t s, uint64_t t,
                       immu_digest_list *out) {
  int rc;
  if ((rc = list_alloc(out, t - s + 1)) != 0)
    return rc;
  if ((rc = src->alh(src->ctx, s, &out->d[0])) != 0)
    goto fail;
  for (uint64_t k = 1; k <= t - s; k++)
    if ((rc = inner_of(src, s + k, &out->d[k])) != 0)
      goto fail;
  return 0;
fail:
  list_free(out);
  return rc;
}

int immu_linear_proof_gen(const immu_tx_source *src, uint64_t s, uint64_t t,
                          immu_linear_proof *out) {
  memset(out, 0, sizeof *out);
  if (s == 0 || s > t)
    return IMMU_EINVAL;
  out->source_tx_id = s;
  out->target_tx_id = t;
  return chain_terms(src, s, t, &out->terms);
}

void immu_linear_proof_free(immu_linear_proof *p) {
  if (p != NULL)
    list_free(&p->terms);
}

int immu_linear_proof_verify(const immu_linear_proof *p, uint64_t s,
                             uint64_t t, const immu_digest *s_alh,
                             const immu_digest *t_alh) {
  immu_digest c;
  if (p == NULL || p->source_tx_id != s || p->target_tx_id != t || s == 0 ||
      s > t || p->terms.n == 0 || p->terms.d == NULL)
    return IMMU_EVERIFY;
  if (!immu_digest_eq(&p->terms.d[0], s_alh) ||
      (uint64_t)p->terms.n != t - s + 1)
    return IMMU_EVERIFY;
  c = p->terms.d[0];
  for (uint64_t k = 1; k <= t - s; k++)
    immu_alh_advance(&c, s + k, &p->terms.d[k], &c);
  return immu_digest_eq(&c, t_alh) ? 0 : IMMU_EVERIFY;
}

static void lap_free(immu_linear_advance_proof *p) {
  list_free(&p->linear_terms);
  for (size_t i = 0; i < p->ninclusion; i++)
    list_free(&p->inclusion[i]);
  immu__free(p->inclusion);
  p->inclusion = NULL;
  p->ninclusion = 0;
}

static int tree_proof(const immu_ahtree *tree, int consistency, uint64_t i,
                      uint64_t j, immu_digest_list *out) {
  immu_digest terms[IMMU_PROOF_MAX_TERMS];
  size_t n = 0;
  int rc = consistency
               ? immu_ahtree_consistency_proof(tree, i, j, terms, &n)
               : immu_ahtree_inclusion_proof(tree, i, j, terms, &n);
  if (rc != 0)
    return rc;
  if ((rc = list_alloc(out, n)) != 0)
    return rc;
  if (n)
    memcpy(out->d, terms, n * sizeof *terms);
  return 0;
}

/* LAP(a, b, blSize) of spec 6.3; absent when b <= a + 1. */
static int lap_gen(const immu_ahtree *tree, const immu_tx_source *src,
                   uint64_t a, uint64_t b, uint64_t bl_size,
                   immu_dual_proof *out) {
  immu_linear_advance_proof *p = &out->lap;
  int rc;

  if (b <= a + 1)
    return 0;
  out->has_lap = 1;
  if ((rc = chain_terms(src, a + 1, b, &p->linear_terms)) != 0)
    return rc;
  if (b - a - 1 > SIZE_MAX / sizeof(immu_digest_list))
    return IMMU_ENOMEM;
  p->inclusion = immu__calloc((size_t)(b - a - 1), sizeof(immu_digest_list));
  if (p->inclusion == NULL)
    return IMMU_ENOMEM;
  p->ninclusion = (size_t)(b - a - 1);
  for (uint64_t x = a + 1; x < b; x++)
    if ((rc = tree_proof(tree, 0, x, bl_size, &p->inclusion[x - a - 1])) != 0)
      return rc;
  return 0;
}

int immu_dual_proof_gen(const immu_ahtree *tree, const immu_tx_source *src,
                        const immu_tx_header *source,
                        const immu_tx_header *target, immu_dual_proof *out) {
  uint64_t s = source->id, tbl = target->bl_tx_id;
  int rc;

  memset(out, 0, sizeof *out);
  if (s == 0 || s > target->id)
    return IMMU_EINVAL; /* ErrSourceTxNewerThanTargetTx */
  if (source->bl_tx_id > tbl || tbl >= target->id ||
      source->bl_tx_id >= source->id)
    return IMMU_ECORRUPT;
  if (tbl > immu_ahtree_size(tree))
    return IMMU_ERANGE;
  out->source = *source;
  out->target = *target;
  if (s < tbl && (rc = tree_proof(tree, 0, s, tbl, &out->inclusion)) != 0)
    goto fail;
  if (source->bl_tx_id > 0 &&
      (rc = tree_proof(tree, 1, source->bl_tx_id, tbl, &out->consistency)) !=
          0)
    goto fail;
  if (tbl > 0) {
    if ((rc = src->alh(src->ctx, tbl, &out->target_bl_tx_alh)) != 0 ||
        (rc = tree_proof(tree, 0, tbl, tbl, &out->last_inclusion)) != 0)
      goto fail;
  }
  if ((rc = immu_linear_proof_gen(src, s > tbl ? s : tbl, target->id,
                                  &out->linear)) != 0)
    goto fail;
  if ((rc = lap_gen(tree, src, source->bl_tx_id, s < tbl ? s : tbl, tbl,
                    out)) != 0)
    goto fail;
  return 0;
fail:
  immu_dual_proof_free(out);
  return rc;
}

void immu_dual_proof_free(immu_dual_proof *p) {
  if (p == NULL)
    return;
  list_free(&p->inclusion);
  list_free(&p->consistency);
  list_free(&p->last_inclusion);
  immu_linear_proof_free(&p->linear);
  lap_free(&p->lap);
  p->has_lap = 0;
}

int immu_linear_advance_proof_verify(const immu_linear_advance_proof *p,
                                     uint64_t start, uint64_t end,
                                     const immu_digest *end_alh,
                                     const immu_digest *tree_root,
                                     uint64_t tree_size) {
  immu_digest c, leaf;

  if (end < start)
    return IMMU_EVERIFY;
  if (end <= start + 1)
    return 0;
  if (p == NULL || p->linear_terms.d == NULL ||
      (uint64_t)p->linear_terms.n != end - start ||
      (uint64_t)p->ninclusion != end - start - 1 || p->inclusion == NULL)
    return IMMU_EVERIFY;
  c = p->linear_terms.d[0];
  for (uint64_t x = start + 1; x < end; x++) {
    const immu_digest_list *ip = &p->inclusion[x - start - 1];
    immu_ahtree_leaf(&c, &leaf);
    if (immu_ahtree_verify_inclusion(ip->d, ip->n, x, tree_size, &leaf,
                                     tree_root) != 0)
      return IMMU_EVERIFY;
    immu_alh_advance(&c, x + 1, &p->linear_terms.d[x - start], &c);
  }
  return immu_digest_eq(&c, end_alh) ? 0 : IMMU_EVERIFY;
}

int immu_dual_proof_verify(const immu_dual_proof *p, uint64_t source_tx_id,
                           uint64_t target_tx_id,
                           const immu_digest *source_alh,
                           const immu_digest *target_alh) {
  const immu_tx_header *S, *T;
  const immu_linear_advance_proof *lap;
  immu_digest alh, leaf;

  if (p == NULL)
    return IMMU_EVERIFY;
  S = &p->source;
  T = &p->target;
  lap = p->has_lap ? &p->lap : NULL;
  if (S->id != source_tx_id || T->id != target_tx_id || S->id == 0 ||
      S->id > T->id)
    return IMMU_EVERIFY;
  /* A header's BlTxID is the tree size before it: always below its ID. */
  if (S->bl_tx_id >= S->id || T->bl_tx_id >= T->id)
    return IMMU_EVERIFY;
  if (immu_tx_alh(S, &alh) != 0 || !immu_digest_eq(&alh, source_alh))
    return IMMU_EVERIFY;
  if (immu_tx_alh(T, &alh) != 0 || !immu_digest_eq(&alh, target_alh))
    return IMMU_EVERIFY;

  if (source_tx_id < T->bl_tx_id) {
    immu_ahtree_leaf(source_alh, &leaf);
    if (immu_ahtree_verify_inclusion(p->inclusion.d, p->inclusion.n,
                                     source_tx_id, T->bl_tx_id, &leaf,
                                     &T->bl_root) != 0)
      return IMMU_EVERIFY;
  }
  if (S->bl_tx_id > 0 &&
      immu_ahtree_verify_consistency(p->consistency.d, p->consistency.n,
                                     S->bl_tx_id, T->bl_tx_id, &S->bl_root,
                                     &T->bl_root) != 0)
    return IMMU_EVERIFY;
  if (T->bl_tx_id > 0) {
    immu_ahtree_leaf(&p->target_bl_tx_alh, &leaf);
    if (immu_ahtree_verify_last_inclusion(p->last_inclusion.d,
                                          p->last_inclusion.n, T->bl_tx_id,
                                          &leaf, &T->bl_root) != 0)
      return IMMU_EVERIFY;
  }
  if (source_tx_id < T->bl_tx_id) {
    if (immu_linear_proof_verify(&p->linear, T->bl_tx_id, target_tx_id,
                                 &p->target_bl_tx_alh, target_alh) != 0 ||
        immu_linear_advance_proof_verify(lap, S->bl_tx_id, source_tx_id,
                                         source_alh, &T->bl_root,
                                         T->bl_tx_id) != 0)
      return IMMU_EVERIFY;
  } else {
    if (immu_linear_proof_verify(&p->linear, source_tx_id, target_tx_id,
                                 source_alh, target_alh) != 0 ||
        immu_linear_advance_proof_verify(lap, S->bl_tx_id, T->bl_tx_id,
                                         &p->target_bl_tx_alh, &T->bl_root,
                                         T->bl_tx_id) != 0)
      return IMMU_EVERIFY;
  }
  return 0;
}
