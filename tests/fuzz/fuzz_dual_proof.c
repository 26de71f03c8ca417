/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fuzz target: immu_dual_proof_verify (spec 6.4, with the CVE-2022-36111
 * linear-advance check) never crashes and never accepts a forgery.
 *
 * Mode 0 decodes an arbitrary dual proof from the input (headers, every
 * list, the LAP) and verifies it: only robustness is checked, since there
 * is no genuine history to compare with.
 *
 * Mode 1 builds a genuine chain of 2..41 transactions from the input
 * (BlTxID = ID-1 or lagging, header versions 0/1), generates the genuine
 * DualProof(s, t) with immu_dual_proof_gen (which must verify), lets the
 * input mutate any part of it, and verifies it for claimed ids and Alhs.
 * With G(k) the genuine Alh of tx k, a forgery is:
 *
 *  F1  accepted with target (t', G(t')) but source (s', a) with a != G(s').
 *      T's Alh pins T's header; then either leafFor(a) is in T's genuine
 *      tree (so a = G(k), whose preimage starts with u64(k), so k = s') or
 *      a linear chain from a reaches G(t') (so a = G(s')). A fork of the
 *      TARGET is not a forgery: the verifier cannot tell one, so a mutated
 *      target with a genuine source is never judged.
 *  F2  accepted with s' == t', source (s', G(s')) and target Alh != G(s').
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

static uint32_t fz_u32(fz *f) {
  uint32_t hi = fz_u16(f);
  return hi << 16 | fz_u16(f);
}

static uint64_t fz_u64(fz *f) {
  uint64_t hi = fz_u32(f);
  return hi << 32 | fz_u32(f);
}

static void fz_digest(fz *f, immu_digest *d) {
  size_t k = f->n < 32 ? f->n : 32;
  memcpy(d->b, f->p, k);
  memset(d->b + k, 0, 32 - k);
  f->p += k;
  f->n -= k;
}

static void flip(fz *f, immu_digest *d) {
  d->b[fz_u8(f) % 32] ^= (uint8_t)(1u << (fz_u8(f) % 8));
}

/* ------------------------------------------------------------------ */
/* Mode 0: arbitrary proofs                                            */
/* ------------------------------------------------------------------ */

#define LMAX 12

static void fz_header(fz *f, immu_tx_header *h) {
  memset(h, 0, sizeof *h);
  h->id = fz_u8(f) % 64;
  h->ts = (int64_t)fz_u64(f);
  h->bl_tx_id = fz_u8(f) % 64;
  fz_digest(f, &h->bl_root);
  fz_digest(f, &h->prev_alh);
  h->version = fz_u8(f) % 3; /* 2 is invalid */
  h->nentries = fz_u32(f);
  if (fz_u8(f) % 4 == 0) {
    h->nentries &= 0xffff;
  }
  fz_digest(f, &h->eh);
  h->md_len = fz_u8(f) % 4 == 0 ? fz_u16(f) % (IMMU_TX_MD_MAX + 40) : 0;
  size_t copy = h->md_len < IMMU_TX_MD_MAX ? h->md_len : IMMU_TX_MD_MAX;
  for (size_t k = 0; k < copy; k++) {
    h->md[k] = fz_u8(f);
  }
}

static void fz_list(fz *f, immu_digest_list *l, immu_digest *store) {
  l->n = fz_u8(f) % (LMAX + 1);
  l->d = l->n ? store : (fz_u8(f) % 2 ? store : NULL);
  for (size_t k = 0; k < l->n; k++) {
    fz_digest(f, &store[k]);
  }
}

static void run_arbitrary(fz *f) {
  immu_dual_proof p;
  immu_digest incl[LMAX], cons[LMAX], last[LMAX], lin[LMAX], lapl[LMAX];
  immu_digest lapi[6][LMAX];
  immu_digest_list lapil[6];
  immu_digest sa, ta;

  memset(&p, 0, sizeof p);
  fz_header(f, &p.source);
  fz_header(f, &p.target);
  fz_list(f, &p.inclusion, incl);
  fz_list(f, &p.consistency, cons);
  fz_digest(f, &p.target_bl_tx_alh);
  fz_list(f, &p.last_inclusion, last);
  p.linear.source_tx_id = fz_u8(f) % 64;
  p.linear.target_tx_id = fz_u8(f) % 64;
  fz_list(f, &p.linear.terms, lin);
  p.has_lap = fz_u8(f) % 2;
  fz_list(f, &p.lap.linear_terms, lapl);
  p.lap.ninclusion = fz_u8(f) % 7;
  p.lap.inclusion = p.lap.ninclusion ? lapil : NULL;
  for (size_t k = 0; k < p.lap.ninclusion; k++) {
    fz_list(f, &lapil[k], lapi[k]);
  }
  /* Ids and Alhs: mostly consistent with the headers, so that the
   * verifier gets past step 2 and into the proofs. */
  uint64_t sid = p.source.id, tid = p.target.id;
  if (fz_u8(f) % 4 == 0) {
    sid = fz_u64(f);
    tid = fz_u64(f);
  }
  if (fz_u8(f) % 4 == 0 || immu_tx_alh(&p.source, &sa) != 0) {
    fz_digest(f, &sa);
  }
  if (fz_u8(f) % 4 == 0 || immu_tx_alh(&p.target, &ta) != 0) {
    fz_digest(f, &ta);
  }
  int rc = immu_dual_proof_verify(&p, sid, tid, &sa, &ta);
  if (rc != 0 && rc != IMMU_EVERIFY) {
    fprintf(stderr, "fuzz_dual_proof: unexpected rc %d\n", rc);
    abort();
  }
  /* The LAP verifier on its own, with arbitrary bounds. */
  rc = immu_linear_advance_proof_verify(p.has_lap ? &p.lap : NULL,
                                        fz_u8(f) % 64, fz_u8(f) % 64, &ta,
                                        &p.target.bl_root, fz_u8(f) % 64);
  if (rc != 0 && rc != IMMU_EVERIFY) {
    abort();
  }
  rc = immu_linear_proof_verify(&p.linear, p.linear.source_tx_id,
                                p.linear.target_tx_id, &sa, &ta);
  if (rc != 0 && rc != IMMU_EVERIFY) {
    abort();
  }
}

/* ------------------------------------------------------------------ */
/* Mode 1: a genuine chain                                             */
/* ------------------------------------------------------------------ */

#define NMAX 41

typedef struct chain {
  uint64_t n;
  immu_tx_header h[NMAX];
  immu_digest alh[NMAX];
  immu_digest inner[NMAX];
  immu_ahtree *tree;
} chain;

static int ch_header(void *ctx, uint64_t id, immu_tx_header *out) {
  const chain *c = ctx;
  if (id < 1 || id > c->n) {
    return IMMU_ENOTFOUND;
  }
  *out = c->h[id - 1];
  return 0;
}

static int ch_alh(void *ctx, uint64_t id, immu_digest *out) {
  const chain *c = ctx;
  if (id < 1 || id > c->n) {
    return IMMU_ENOTFOUND;
  }
  *out = c->alh[id - 1];
  return 0;
}

static int build_chain(fz *f, chain *c) {
  uint8_t seed[9];
  uint64_t prev_bl = 0;
  c->n = 2 + fz_u8(f) % (NMAX - 1);
  for (int k = 0; k < 8; k++) {
    seed[k] = fz_u8(f);
  }
  if (immu_ahtree_new_mem(&c->tree) != 0) {
    return -1;
  }
  for (uint64_t id = 1; id <= c->n; id++) {
    immu_tx_header *h = &c->h[id - 1];
    immu_digest rnd;
    uint8_t ctl = fz_u8(f);
    seed[8] = (uint8_t)id;
    immu_sha256(seed, sizeof seed, &rnd);
    memset(h, 0, sizeof *h);
    h->id = id;
    h->ts = (int64_t)(rnd.b[0] | (uint64_t)rnd.b[1] << 8);
    /* ctl bits 0-1: BlTxID policy; bit 2: version. */
    switch (ctl & 3) {
    case 0:
    case 1:
      h->bl_tx_id = id - 1;
      break;
    case 2:
      h->bl_tx_id = prev_bl;
      break;
    default:
      h->bl_tx_id = prev_bl + (id - 1 > prev_bl ? (ctl >> 3) % (id - prev_bl) : 0);
      break;
    }
    prev_bl = h->bl_tx_id;
    h->version = (ctl >> 2) & 1;
    h->nentries = 1 + rnd.b[2];
    memcpy(h->eh.b, rnd.b, 32);
    h->eh.b[0] ^= 0x5a;
    if (h->bl_tx_id == 0) {
      h->bl_root = immu_zero_digest;
    } else if (immu_ahtree_root_at(c->tree, h->bl_tx_id, &h->bl_root) != 0) {
      return -1;
    }
    h->prev_alh = id == 1 ? immu_empty_digest : c->alh[id - 2];
    if (immu_tx_inner_hash(h, &c->inner[id - 1]) != 0 ||
        immu_tx_alh(h, &c->alh[id - 1]) != 0 ||
        immu_ahtree_append(c->tree, c->alh[id - 1].b, 32, NULL) != 0) {
      return -1;
    }
  }
  return 0;
}

/* A digest the proof could plausibly contain: an Alh, an innerHash, a
 * root, a leaf hash of the chain; or raw input. */
static void plausible(fz *f, const chain *c, immu_digest *out) {
  uint64_t k = 1 + fz_u8(f) % c->n;
  switch (fz_u8(f) % 5) {
  case 0:
    *out = c->alh[k - 1];
    break;
  case 1:
    *out = c->inner[k - 1];
    break;
  case 2:
    if (immu_ahtree_root_at(c->tree, k, out) != 0) {
      abort();
    }
    break;
  case 3:
    immu_ahtree_leaf(&c->alh[k - 1], out);
    break;
  default:
    fz_digest(f, out);
    break;
  }
}

#define LCAP (IMMU_PROOF_MAX_TERMS + 8)

/* A mutable copy of one list (the generated arrays stay untouched so that
 * immu_dual_proof_free can release them). */
typedef struct mlist {
  immu_digest d[LCAP];
  size_t n;
} mlist;

static void mlist_from(mlist *m, const immu_digest_list *l) {
  m->n = l->n < LCAP ? l->n : LCAP;
  if (m->n) {
    memcpy(m->d, l->d, m->n * sizeof *m->d);
  }
}

static void mutate_list(fz *f, const chain *c, mlist *m) {
  size_t k = m->n ? fz_u8(f) % m->n : 0;
  switch (fz_u8(f) % 6) {
  case 0:
    if (m->n) {
      flip(f, &m->d[k]);
    }
    break;
  case 1:
    if (m->n) {
      plausible(f, c, &m->d[k]);
    }
    break;
  case 2:
    if (m->n) {
      memmove(&m->d[k], &m->d[k + 1], (m->n - k - 1) * sizeof *m->d);
      m->n--;
    }
    break;
  case 3:
    if (m->n < LCAP) {
      size_t at = fz_u8(f) % (m->n + 1);
      memmove(&m->d[at + 1], &m->d[at], (m->n - at) * sizeof *m->d);
      plausible(f, c, &m->d[at]);
      m->n++;
    }
    break;
  case 4: { /* replace by a genuine tree proof for other indices */
    uint64_t j = 1 + fz_u8(f) % c->n, i = 1 + fz_u8(f) % j;
    size_t n = 0;
    int rc = fz_u8(f) % 2
                 ? immu_ahtree_consistency_proof(c->tree, i, j, m->d, &n)
                 : immu_ahtree_inclusion_proof(c->tree, i, j, m->d, &n);
    if (rc != 0) {
      abort();
    }
    m->n = n;
    break;
  }
  default:
    m->n = m->n ? fz_u8(f) % (m->n + 1) : 0;
    break;
  }
}

static void mutate_header(fz *f, const chain *c, immu_tx_header *h) {
  switch (fz_u8(f) % 10) {
  case 0:
    h->id += (uint64_t)(int8_t)fz_u8(f);
    break;
  case 1:
    h->ts ^= (int64_t)fz_u8(f);
    break;
  case 2:
    h->bl_tx_id = fz_u8(f) % (c->n + 2);
    break;
  case 3: {
    uint64_t x = 1 + fz_u8(f) % c->n;
    if (immu_ahtree_root_at(c->tree, x, &h->bl_root) != 0) {
      abort();
    }
    break;
  }
  case 4:
    plausible(f, c, &h->prev_alh);
    break;
  case 5:
    flip(f, &h->eh);
    break;
  case 6:
    h->nentries += fz_u8(f);
    break;
  case 7:
    h->version ^= 1;
    break;
  case 8:
    *h = c->h[fz_u8(f) % c->n];
    break;
  default:
    flip(f, &h->bl_root);
    break;
  }
}

static void run_chain(fz *f) {
  chain *c = calloc(1, sizeof *c);
  if (c == NULL) {
    abort();
  }
  if (build_chain(f, c) != 0) {
    fprintf(stderr, "fuzz_dual_proof: chain construction failed\n");
    abort();
  }
  immu_tx_source src = {c, ch_header, ch_alh};
  uint64_t t = 1 + fz_u8(f) % c->n;
  uint64_t s = 1 + fz_u8(f) % t;
  immu_dual_proof g;
  if (immu_dual_proof_gen(c->tree, &src, &c->h[s - 1], &c->h[t - 1], &g) !=
      0) {
    fprintf(stderr, "fuzz_dual_proof: generation failed\n");
    abort();
  }
  if (immu_dual_proof_verify(&g, s, t, &c->alh[s - 1], &c->alh[t - 1]) != 0) {
    fprintf(stderr, "fuzz_dual_proof: genuine proof %llu -> %llu rejected\n",
            (unsigned long long)s, (unsigned long long)t);
    abort();
  }

  /* Mutable copies of every list. */
  static mlist incl, cons, last, lin, lapl, lapi[NMAX];
  immu_digest_list lapil[NMAX];
  mlist_from(&incl, &g.inclusion);
  mlist_from(&cons, &g.consistency);
  mlist_from(&last, &g.last_inclusion);
  mlist_from(&lin, &g.linear.terms);
  mlist_from(&lapl, &g.lap.linear_terms);
  size_t ninc = g.lap.ninclusion < NMAX ? g.lap.ninclusion : NMAX;
  for (size_t k = 0; k < ninc; k++) {
    mlist_from(&lapi[k], &g.lap.inclusion[k]);
  }
  immu_dual_proof p = g;

  unsigned nops = fz_u8(f) % 10;
  for (unsigned op = 0; op < nops; op++) {
    switch (fz_u8(f) % 12) {
    case 0:
      mutate_header(f, c, &p.source);
      break;
    case 1:
      mutate_header(f, c, &p.target);
      break;
    case 2:
      mutate_list(f, c, &incl);
      break;
    case 3:
      mutate_list(f, c, &cons);
      break;
    case 4:
      mutate_list(f, c, &last);
      break;
    case 5:
      mutate_list(f, c, &lin);
      break;
    case 6:
      mutate_list(f, c, &lapl);
      break;
    case 7:
      if (ninc) {
        mutate_list(f, c, &lapi[fz_u8(f) % ninc]);
      }
      break;
    case 8:
      plausible(f, c, &p.target_bl_tx_alh);
      break;
    case 9:
      p.linear.source_tx_id += (uint64_t)(int8_t)fz_u8(f);
      break;
    case 10:
      p.linear.target_tx_id += (uint64_t)(int8_t)fz_u8(f);
      break;
    default: /* the LAP's presence and its number of inclusion proofs */
      if (fz_u8(f) % 2) {
        p.has_lap ^= 1;
      } else {
        ninc = fz_u8(f) % (NMAX + 1);
        for (size_t k = 0; k < ninc; k++) {
          if (k >= g.lap.ninclusion) {
            lapi[k].n = 0;
          }
        }
      }
      break;
    }
  }
  p.inclusion.d = incl.d;
  p.inclusion.n = incl.n;
  p.consistency.d = cons.d;
  p.consistency.n = cons.n;
  p.last_inclusion.d = last.d;
  p.last_inclusion.n = last.n;
  p.linear.terms.d = lin.d;
  p.linear.terms.n = lin.n;
  p.lap.linear_terms.d = lapl.d;
  p.lap.linear_terms.n = lapl.n;
  for (size_t k = 0; k < ninc; k++) {
    lapil[k].d = lapi[k].d;
    lapil[k].n = lapi[k].n;
  }
  p.lap.ninclusion = ninc;
  p.lap.inclusion = ninc ? lapil : NULL;

  /* The claim: ids near the genuine ones; Alhs genuine, of another tx,
   * altered, made up, or computed from the (mutated) headers. */
  uint64_t cs = s, ct = t;
  if (fz_u8(f) % 4 == 0) {
    cs = 1 + fz_u8(f) % c->n;
  }
  if (fz_u8(f) % 4 == 0) {
    ct = 1 + fz_u8(f) % c->n;
  }
  immu_digest sa = c->alh[cs - 1], ta = c->alh[ct - 1];
  switch (fz_u8(f) % 5) {
  case 1:
    sa = c->alh[fz_u8(f) % c->n];
    break;
  case 2:
    flip(f, &sa);
    break;
  case 3:
    if (immu_tx_alh(&p.source, &sa) != 0) {
      fz_digest(f, &sa);
    }
    break;
  case 4:
    fz_digest(f, &sa);
    break;
  default:
    break;
  }
  switch (fz_u8(f) % 5) {
  case 1:
    ta = c->alh[fz_u8(f) % c->n];
    break;
  case 2:
    flip(f, &ta);
    break;
  case 3:
    if (immu_tx_alh(&p.target, &ta) != 0) {
      fz_digest(f, &ta);
    }
    break;
  case 4:
    fz_digest(f, &ta);
    break;
  default:
    break;
  }

  int rc = immu_dual_proof_verify(&p, cs, ct, &sa, &ta);
  if (rc != 0 && rc != IMMU_EVERIFY) {
    fprintf(stderr, "fuzz_dual_proof: unexpected rc %d\n", rc);
    abort();
  }
  if (rc == 0 && cs <= ct) {
    int s_genuine = memcmp(sa.b, c->alh[cs - 1].b, 32) == 0;
    int t_genuine = memcmp(ta.b, c->alh[ct - 1].b, 32) == 0;
    if (t_genuine && !s_genuine) {
      fprintf(stderr,
              "fuzz_dual_proof: FORGERY F1: fake source %llu accepted under "
              "genuine target %llu (genuine proof %llu -> %llu)\n",
              (unsigned long long)cs, (unsigned long long)ct,
              (unsigned long long)s, (unsigned long long)t);
      abort();
    }
    if (cs == ct && s_genuine && memcmp(sa.b, ta.b, 32) != 0) {
      fprintf(stderr,
              "fuzz_dual_proof: FORGERY F2: tx %llu accepted with two Alhs\n",
              (unsigned long long)cs);
      abort();
    }
  }
  immu_dual_proof_free(&g);
  immu_ahtree_free(c->tree);
  free(c);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fz f = {data, size};
  if (fz_u8(&f) % 4 == 0) {
    run_arbitrary(&f);
  } else {
    run_chain(&f);
  }
  return 0;
}
