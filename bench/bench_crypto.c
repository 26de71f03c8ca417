/* SPDX-License-Identifier: Apache-2.0 */
/*
 * `immubench crypto`: micro-benchmark of the crypto core (include/immudb/
 * crypto.h), measured against `openssl speed -evp sha256` run in the same
 * process lifetime.
 *
 * Cases (each timed R times, median/min/max reported):
 *   1. raw immu_sha256 on 64-byte and 33-byte inputs: the ceiling;
 *   2. entry digests, header version 0 and 1 (32-byte key + hVal);
 *   3. htree roots over 1, 16 and 1000 entry digests;
 *   4. ahtree append with root read-back, cumulative from an empty in-memory
 *      tree, checkpointed at n = 10^3 .. 10^7: appends/s and the exact hash
 *      count, compared with popcount-based bounds;
 *   5. dual proof generation and verification over a synthetic chain of
 *      version-0 transactions (BlTxID = ID-1), random pairs s < t.
 * Hash counts always come from immu_hash_count() deltas taken around the
 * timed loops, never from a formula.
 *
 * Method, machine and recorded results: docs/benchmarks.md.
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "immudb/crypto.h"
#include "immudb/err.h"

#include "bench.h"

/* ------------------------------------------------------------------ */
/* Options                                                             */
/* ------------------------------------------------------------------ */

typedef struct crypto_opts {
  unsigned repeat;
  int quick;
  const char *json; /* NULL, "-" (stdout, no table) or a file name */
  uint64_t max_ahtree;
  uint64_t chain;
  uint64_t pairs;
  double min_time;
  uint64_t seed;
  int peer;              /* run openssl speed */
  unsigned peer_repeat;  /* openssl runs per size */
  unsigned peer_seconds; /* -seconds for openssl speed */
  const char *cases;     /* comma-separated name prefixes, NULL = all */
} crypto_opts;

static void crypto_usage(FILE *f) {
  fputs(
      "usage: immubench crypto [options]\n"
      "\n"
      "Crypto-core micro-benchmark: raw SHA-256, entry digests, htree roots,\n"
      "ahtree append+root (with exact hash counts), dual proof generation and\n"
      "verification, each as a ratio to `openssl speed -evp sha256` measured\n"
      "in the same run.\n"
      "\n"
      "options:\n"
      "  --repeat R       timed runs per case; the median is reported "
      "(default 5)\n"
      "  --min-time S     target seconds per timed run (default 0.25)\n"
      "  --max-ahtree N   largest ahtree size, checkpoints at 10^3..N "
      "(default 10^7)\n"
      "  --chain N        transactions in the dual-proof chain (default "
      "2^16)\n"
      "  --pairs N        random (s, t) pairs for dual proofs (default 4096)\n"
      "  --seed N         PRNG seed for synthetic data (default 1)\n"
      "  --no-peer        do not run `openssl speed` (ratios become null)\n"
      "  --peer-repeat N  openssl speed runs per input size (default R)\n"
      "  --cases LIST     only the cases whose names start with one of the\n"
      "                   comma-separated prefixes (sha256, entry_digest,\n"
      "                   htree_root, dual_proof_gen, dual_proof_verify,\n"
      "                   ahtree)\n"
      "  --quick          smoke test: ahtree to 10^5, chain 2^12, R=3, short "
      "runs\n"
      "  --json FILE      also write the results as JSON to FILE;\n"
      "                   `--json -` writes JSON to stdout instead of the "
      "table\n"
      "  -q, --quiet      no progress messages on stderr\n"
      "  -h, --help       this text\n"
      "\n"
      "Counts accept 1e7, 10^7, 2^16, 64k. See docs/benchmarks.md.\n",
      f);
}

static int parse_opts(int argc, char **argv, crypto_opts *o) {
  memset(o, 0, sizeof *o);
  o->repeat = 5;
  o->max_ahtree = 10000000u;
  o->chain = 65536u;
  o->pairs = 4096u;
  o->min_time = 0.25;
  o->seed = 1;
  o->peer = 1;
  o->peer_seconds = 1;
  int set_repeat = 0, set_ahtree = 0, set_chain = 0, set_pairs = 0,
      set_min_time = 0, set_peer_repeat = 0;
  uint64_t v;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    const char *val = NULL;
#define NEED_VALUE()                                                           \
  do {                                                                         \
    if (bench_option_value("crypto", argc, argv, &i, &val) != 0)               \
      return -1;                                                               \
  } while (0)
    int common = bench_common_option("crypto", argc, argv, &i, &o->json,
                                     &o->cases);
    if (common < 0)
      return -1;
    if (common > 0)
      continue;
    if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
      crypto_usage(stdout);
      return 1;
    } else if (strcmp(a, "--quick") == 0) {
      o->quick = 1;
    } else if (strcmp(a, "--no-peer") == 0) {
      o->peer = 0;
    } else if (strcmp(a, "--repeat") == 0) {
      NEED_VALUE();
      if (bench_parse_count(val, &v) || v < 1 || v > 1000)
        goto bad;
      o->repeat = (unsigned)v;
      set_repeat = 1;
    } else if (strcmp(a, "--peer-repeat") == 0) {
      NEED_VALUE();
      if (bench_parse_count(val, &v) || v < 1 || v > 1000)
        goto bad;
      o->peer_repeat = (unsigned)v;
      set_peer_repeat = 1;
    } else if (strcmp(a, "--max-ahtree") == 0) {
      NEED_VALUE();
      if (bench_parse_count(val, &v) || v < 1 || v > 1000000000u)
        goto bad;
      o->max_ahtree = v;
      set_ahtree = 1;
    } else if (strcmp(a, "--chain") == 0) {
      NEED_VALUE();
      if (bench_parse_count(val, &v) || v < 2 || v > 100000000u)
        goto bad;
      o->chain = v;
      set_chain = 1;
    } else if (strcmp(a, "--pairs") == 0) {
      NEED_VALUE();
      if (bench_parse_count(val, &v) || v < 1 || v > 10000000u)
        goto bad;
      o->pairs = v;
      set_pairs = 1;
    } else if (strcmp(a, "--seed") == 0) {
      NEED_VALUE();
      if (bench_parse_count(val, &v))
        goto bad;
      o->seed = v;
    } else if (strcmp(a, "--min-time") == 0) {
      NEED_VALUE();
      if (bench_parse_double(val, &o->min_time) || o->min_time <= 0 ||
          o->min_time > 60)
        goto bad;
      set_min_time = 1;
    } else {
      fprintf(stderr, "immubench crypto: unknown option '%s'\n", a);
      return -1;
    }
    continue;
  bad:
    fprintf(stderr, "immubench crypto: bad value '%s' for %s\n", val, a);
    return -1;
#undef NEED_VALUE
  }
  if (o->quick) {
    if (!set_repeat)
      o->repeat = 3;
    if (!set_ahtree)
      o->max_ahtree = 100000u;
    if (!set_chain)
      o->chain = 4096u;
    if (!set_pairs)
      o->pairs = 1024u;
    if (!set_min_time)
      o->min_time = 0.05;
    if (!set_peer_repeat)
      o->peer_repeat = 1;
  }
  if (!o->peer_repeat)
    o->peer_repeat = o->repeat;
  return 0;
}

/* ------------------------------------------------------------------ */
/* Small helpers                                                       */
/* ------------------------------------------------------------------ */

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
  if (!x)
    return 64;
  while (!(x & 1)) {
    x >>= 1;
    c++;
  }
  return c;
}

/* 1 if case |name| is selected by --cases. */
static int selected(const crypto_opts *o, const char *name) {
  if (!o->cases)
    return 1;
  const char *p = o->cases;
  while (*p) {
    size_t len = strcspn(p, ",");
    if (len > 0 && strncmp(name, p, len) == 0)
      return 1;
    p += len;
    if (*p == ',')
      p++;
  }
  return 0;
}

static void put_u64le(uint8_t *p, uint64_t v) {
  for (int i = 0; i < 8; i++)
    p[i] = (uint8_t)(v >> (8 * i));
}

static void die_rc(const char *what, int rc) {
  fprintf(stderr, "immubench crypto: %s failed: %s (%s, %d)\n", what,
          immu_err_name(rc), immu_strerror(rc), rc);
  exit(1);
}

/* Accumulates results so the compiler cannot drop the work. */
static volatile uint8_t g_sink;

/* ------------------------------------------------------------------ */
/* Timed cases                                                         */
/* ------------------------------------------------------------------ */

/* The peers: `openssl speed -evp sha256` on 64-byte and 33-byte messages
 * (hashes/s; the ratios use these), and on 16 KiB messages, reported as
 * 64-byte compression blocks/s: the bulk ceiling of the SHA-256 compression
 * function on this CPU, free of per-message overhead. */
enum { PEER_64 = 0, PEER_33 = 1, PEER_BULK = 2, NPEERS = 3 };
static const unsigned peer_bytes[NPEERS] = {64, 33, 16384};
static const char *const peer_key[NPEERS] = {
    "openssl_sha256_64B", "openssl_sha256_33B",
    "openssl_sha256_16384B_blocks"};

typedef struct micro_case {
  const char *name;  /* JSON id */
  const char *label; /* table label */
  const char *unit;  /* what one op produces */
  int peer;          /* which openssl figure the ratio uses */
  void (*run)(void *ctx, uint64_t iters);
  void *ctx;
  /* results */
  uint64_t iters;   /* ops per timed run */
  double *runs;     /* ops/s of each run */
  bench_stats ops;  /* ops/s */
  double hashes_per_op;
  double hashes_per_s;
  double ratio; /* hashes/s / openssl hashes/s, or NAN */
} micro_case;

/* Times |iters| ops; returns seconds. */
static double time_run(micro_case *c, uint64_t iters) {
  uint64_t t0 = bench_now_ns();
  c->run(c->ctx, iters);
  return bench_elapsed_s(t0, bench_now_ns());
}

/* Chooses iterations per run (>= min_time seconds), then does R timed runs,
 * counting hashes across exactly the timed ops. */
static void measure_case(micro_case *c, unsigned repeat, double min_time) {
  bench_progress("crypto: %s", c->label);
  uint64_t iters = 1;
  double t = time_run(c, iters); /* warm-up */
  for (;;) {
    t = time_run(c, iters);
    if (t >= min_time / 10 || iters >= (UINT64_C(1) << 40))
      break;
    iters *= (t < min_time / 1000) ? 16 : 4;
  }
  double want = ceil((double)iters * min_time / (t > 0 ? t : 1e-9));
  c->iters = want < 1 ? 1 : (uint64_t)want;
  c->runs = bench_xcalloc(repeat, sizeof *c->runs);
  uint64_t hashes = 0;
  for (unsigned r = 0; r < repeat; r++) {
    uint64_t h0 = immu_hash_count();
    t = time_run(c, c->iters);
    hashes += immu_hash_count() - h0;
    c->runs[r] = (double)c->iters / t;
  }
  c->ops = bench_stats_of(c->runs, repeat);
  c->hashes_per_op = (double)hashes / ((double)c->iters * repeat);
  c->hashes_per_s = c->ops.median * c->hashes_per_op;
}

/* 1. raw SHA-256 ------------------------------------------------------ */

typedef struct sha_ctx {
  uint8_t buf[64];
  size_t len;
} sha_ctx;

static void run_sha(void *vctx, uint64_t iters) {
  sha_ctx *x = vctx;
  immu_digest d;
  uint8_t acc = 0;
  for (uint64_t i = 0; i < iters; i++) {
    immu_sha256(x->buf, x->len, &d);
    acc ^= d.b[0];
  }
  g_sink ^= acc;
}

/* 2. entry digests ---------------------------------------------------- */

typedef struct entry_ctx {
  unsigned version;
  uint8_t key[32];
  immu_digest hval;
} entry_ctx;

static void run_entry(void *vctx, uint64_t iters) {
  entry_ctx *x = vctx;
  immu_digest d;
  uint8_t acc = 0;
  for (uint64_t i = 0; i < iters; i++) {
    int rc = immu_entry_digest(x->version, x->key, sizeof x->key, NULL, 0,
                               &x->hval, &d);
    if (rc)
      die_rc("immu_entry_digest", rc);
    acc ^= d.b[0];
  }
  g_sink ^= acc;
}

/* 3. htree roots ------------------------------------------------------ */

typedef struct htree_ctx {
  immu_digest *digests;
  size_t n;
} htree_ctx;

static void run_htree(void *vctx, uint64_t iters) {
  htree_ctx *x = vctx;
  immu_digest root;
  uint8_t acc = 0;
  for (uint64_t i = 0; i < iters; i++) {
    int rc = immu_htree_root(x->digests, x->n, &root);
    if (rc)
      die_rc("immu_htree_root", rc);
    acc ^= root.b[0];
  }
  g_sink ^= acc;
}

/* 5. dual proofs ------------------------------------------------------ */

typedef struct chain {
  uint64_t n;
  immu_tx_header *hdr; /* hdr[id-1] */
  immu_digest *alh;    /* alh[id-1] */
  immu_ahtree *tree;   /* leaves: Alh(1..n) */
} chain;

static int chain_header(void *ctx, uint64_t id, immu_tx_header *out) {
  const chain *c = ctx;
  if (id < 1 || id > c->n)
    return IMMU_ENOTFOUND;
  *out = c->hdr[id - 1];
  return 0;
}

static int chain_alh(void *ctx, uint64_t id, immu_digest *out) {
  const chain *c = ctx;
  if (id < 1 || id > c->n)
    return IMMU_ENOTFOUND;
  *out = c->alh[id - 1];
  return 0;
}

/* Version-0 txs with random Eh, BlTxID = ID-1, BlRoot = Root(ID-1) of the
 * tree of earlier Alhs, PrevAlh chained from H(""). */
static void chain_build(chain *c, uint64_t n, bench_rng *rng) {
  c->n = n;
  c->hdr = bench_xcalloc(n, sizeof *c->hdr);
  c->alh = bench_xcalloc(n, sizeof *c->alh);
  int rc = immu_ahtree_new_mem(&c->tree);
  if (rc)
    die_rc("immu_ahtree_new_mem", rc);
  immu_digest root = immu_zero_digest;
  for (uint64_t id = 1; id <= n; id++) {
    immu_tx_header *h = &c->hdr[id - 1];
    h->id = id;
    h->ts = (int64_t)(1700000000 + id);
    h->bl_tx_id = id - 1;
    h->bl_root = (id == 1) ? immu_zero_digest : root;
    h->prev_alh = (id == 1) ? immu_empty_digest : c->alh[id - 2];
    h->version = 0;
    h->nentries = 1 + (uint32_t)bench_rng_below(rng, 64);
    bench_rng_bytes(rng, h->eh.b, sizeof h->eh.b);
    h->md_len = 0;
    rc = immu_tx_alh(h, &c->alh[id - 1]);
    if (rc)
      die_rc("immu_tx_alh", rc);
    rc = immu_ahtree_append(c->tree, c->alh[id - 1].b, IMMU_DIGEST_LEN, &root);
    if (rc)
      die_rc("immu_ahtree_append", rc);
  }
}

static void chain_free(chain *c) {
  immu_ahtree_free(c->tree);
  free(c->hdr);
  free(c->alh);
}

typedef struct dual_ctx {
  chain *ch;
  immu_tx_source src;
  uint64_t *s, *t; /* pairs */
  size_t npairs;
  size_t next;
  immu_dual_proof *proofs; /* for verification */
} dual_ctx;

static void run_dual_gen(void *vctx, uint64_t iters) {
  dual_ctx *x = vctx;
  immu_dual_proof p;
  uint8_t acc = 0;
  for (uint64_t i = 0; i < iters; i++) {
    size_t k = x->next;
    x->next = (k + 1 == x->npairs) ? 0 : k + 1;
    int rc = immu_dual_proof_gen(x->ch->tree, &x->src,
                                 &x->ch->hdr[x->s[k] - 1],
                                 &x->ch->hdr[x->t[k] - 1], &p);
    if (rc)
      die_rc("immu_dual_proof_gen", rc);
    acc ^= (uint8_t)p.inclusion.n;
    immu_dual_proof_free(&p);
  }
  g_sink ^= acc;
}

static void run_dual_verify(void *vctx, uint64_t iters) {
  dual_ctx *x = vctx;
  for (uint64_t i = 0; i < iters; i++) {
    size_t k = x->next;
    x->next = (k + 1 == x->npairs) ? 0 : k + 1;
    int rc = immu_dual_proof_verify(&x->proofs[k], x->s[k], x->t[k],
                                    &x->ch->alh[x->s[k] - 1],
                                    &x->ch->alh[x->t[k] - 1]);
    if (rc)
      die_rc("immu_dual_proof_verify", rc);
  }
}

/* ------------------------------------------------------------------ */
/* 4. ahtree append + root, checkpointed                               */
/* ------------------------------------------------------------------ */

#define MAX_CHECKPOINTS 16

typedef struct ahtree_point {
  uint64_t n;
  double *rate; /* appends/s over the first n appends, per run */
  bench_stats appends;
  uint64_t total_hashes;   /* for n appends + root reads (first run) */
  int hashes_stable;       /* same count in every run */
  uint64_t nth_hashes;     /* cost of the n-th append alone */
  double avg;              /* total_hashes / n */
  unsigned pc_n_plus_2;    /* popcount(n) + 2 */
  double mean_pc_plus_2;   /* mean over k = 1..n of popcount(k) + 2 */
  uint64_t model_total;    /* sum over k of popcount(k) + ctz(k) */
  unsigned model_nth;      /* popcount(n) + ctz(n) */
  double hashes_per_s;
  double ratio;
} ahtree_point;

/* RFC 6962 MTH over leaves data[lo..hi) (32-byte payloads): an independent
 * check that the ahtree roots are right before we time them. */
static void mth(const uint8_t (*data)[32], uint64_t lo, uint64_t hi,
                immu_digest *out) {
  if (hi - lo == 1) {
    uint8_t b[33];
    b[0] = 0x00;
    memcpy(b + 1, data[lo], 32);
    immu_sha256(b, sizeof b, out);
    return;
  }
  uint64_t k = 1;
  while (k * 2 < hi - lo)
    k *= 2;
  immu_digest l, r;
  mth(data, lo, lo + k, &l);
  mth(data, lo + k, hi, &r);
  uint8_t b[65];
  b[0] = 0x01;
  memcpy(b + 1, l.b, 32);
  memcpy(b + 33, r.b, 32);
  immu_sha256(b, sizeof b, out);
}

static void ahtree_leaf_data(uint64_t k, uint8_t out[32]) {
  memset(out, 0xA5, 32);
  put_u64le(out, k);
}

static size_t ahtree_bench(const crypto_opts *o, ahtree_point *pt) {
  size_t np = 0;
  for (uint64_t n = 1000; n <= o->max_ahtree && np < MAX_CHECKPOINTS;
       n *= 10)
    pt[np++].n = n;
  if ((np == 0 || pt[np - 1].n != o->max_ahtree) && np < MAX_CHECKPOINTS)
    pt[np++].n = o->max_ahtree;
  uint64_t nmax = pt[np - 1].n;

  /* The popcount reference figures, computed outside any timing. */
  {
    size_t ci = 0;
    double sum_pc2 = 0;
    uint64_t model = 0;
    for (uint64_t k = 1; k <= nmax; k++) {
      sum_pc2 += popcount64(k) + 2;
      model += popcount64(k) + ctz64(k);
      if (k == pt[ci].n) {
        pt[ci].pc_n_plus_2 = popcount64(k) + 2;
        pt[ci].mean_pc_plus_2 = sum_pc2 / (double)k;
        pt[ci].model_total = model;
        pt[ci].model_nth = popcount64(k) + ctz64(k);
        ci++;
      }
    }
  }

  immu_digest *roots = bench_xcalloc(np, sizeof *roots);
  uint64_t *tot = bench_xcalloc(np, sizeof *tot);
  uint64_t *nth = bench_xcalloc(np, sizeof *nth);
  for (size_t i = 0; i < np; i++) {
    pt[i].rate = bench_xcalloc(o->repeat, sizeof *pt[i].rate);
    pt[i].hashes_stable = 1;
  }
  for (unsigned r = 0; r < o->repeat; r++) {
    bench_progress("crypto: ahtree append+root to n=%llu, run %u/%u",
                   (unsigned long long)nmax, r + 1, o->repeat);
    immu_ahtree *t;
    int rc = immu_ahtree_new_mem(&t);
    if (rc)
      die_rc("immu_ahtree_new_mem", rc);
    uint8_t data[32];
    memset(data, 0xA5, sizeof data);
    immu_digest root;
    size_t ci = 0;
    uint64_t next_cp = pt[0].n, hb = 0;
    uint64_t h0 = immu_hash_count();
    uint64_t t0 = bench_now_ns();
    for (uint64_t k = 1; k <= nmax; k++) {
      put_u64le(data, k);
      if (k == next_cp)
        hb = immu_hash_count();
      rc = immu_ahtree_append(t, data, sizeof data, &root);
      if (rc)
        die_rc("immu_ahtree_append", rc);
      if (k == next_cp) {
        uint64_t now = bench_now_ns();
        uint64_t ha = immu_hash_count();
        pt[ci].rate[r] = (double)k / bench_elapsed_s(t0, now);
        if (r == 0) {
          tot[ci] = ha - h0;
          nth[ci] = ha - hb;
          roots[ci] = root;
        } else if (tot[ci] != ha - h0 || nth[ci] != ha - hb) {
          pt[ci].hashes_stable = 0;
        }
        ci++;
        next_cp = ci < np ? pt[ci].n : 0;
      }
    }
    if (r == 0) {
      /* Sanity, outside the timed loop: the root returned by each
       * checkpoint's append equals Root(n) re-read from the tree, and for
       * the smallest checkpoint an independent RFC 6962 MTH. */
      for (size_t i = 0; i < np; i++) {
        immu_digest again;
        rc = immu_ahtree_root_at(t, pt[i].n, &again);
        if (rc)
          die_rc("immu_ahtree_root_at", rc);
        if (!immu_digest_eq(&again, &roots[i])) {
          fprintf(stderr,
                  "immubench crypto: ahtree root mismatch at n=%llu "
                  "(append vs root_at)\n",
                  (unsigned long long)pt[i].n);
          exit(1);
        }
      }
      uint64_t small = pt[0].n;
      uint8_t(*leaves)[32] = bench_xcalloc(small, 32);
      for (uint64_t k = 1; k <= small; k++)
        ahtree_leaf_data(k, leaves[k - 1]);
      immu_digest ref;
      mth((const uint8_t(*)[32])leaves, 0, small, &ref);
      free(leaves);
      if (!immu_digest_eq(&ref, &roots[0])) {
        fprintf(stderr,
                "immubench crypto: ahtree Root(%llu) differs from the RFC "
                "6962 MTH of the same leaves\n",
                (unsigned long long)small);
        exit(1);
      }
    }
    immu_ahtree_free(t);
  }
  for (size_t i = 0; i < np; i++) {
    pt[i].appends = bench_stats_of(pt[i].rate, o->repeat);
    pt[i].total_hashes = tot[i];
    pt[i].nth_hashes = nth[i];
    pt[i].avg = (double)tot[i] / (double)pt[i].n;
    pt[i].hashes_per_s = pt[i].appends.median * pt[i].avg;
  }
  free(roots);
  free(tot);
  free(nth);
  return np;
}

/* ------------------------------------------------------------------ */
/* Output                                                              */
/* ------------------------------------------------------------------ */

typedef struct peer_result {
  int ok;
  double *runs; /* hashes/s per run */
  bench_stats rate;
  char cmd[160];
} peer_result;

typedef struct dual_info {
  uint64_t chain;
  size_t pairs;
  double avg_terms; /* all proof terms of a dual proof, averaged */
  size_t with_lap;
} dual_info;

/* openssl runs number |from| .. |to|-1 of |total| for each peer size; a
 * size whose run fails is marked unavailable. */
static void peer_rounds(peer_result *peer, unsigned from, unsigned to,
                        unsigned total, unsigned seconds) {
  for (unsigned r = from; r < to; r++) {
    for (int p = 0; p < NPEERS; p++) {
      if (!peer[p].ok)
        continue;
      bench_progress("crypto: openssl speed sha256 %u B, run %u/%u",
                     peer_bytes[p], r + 1, total);
      double v = bench_openssl_sha256_rate(peer_bytes[p], seconds,
                                           peer[p].cmd, sizeof peer[p].cmd);
      if (v <= 0) {
        peer[p].ok = 0;
        bench_progress("crypto: openssl speed unavailable for %u B; its "
                       "ratios will be null",
                       peer_bytes[p]);
      } else {
        peer[p].runs[r] = p == PEER_BULK ? v * (peer_bytes[p] / 64) : v;
      }
    }
  }
}

static void fmt_ratio(double r, char *buf, size_t cap) {
  if (isnan(r))
    snprintf(buf, cap, "n/a");
  else
    snprintf(buf, cap, "%.3f", r);
}

static void print_tables(const crypto_opts *o, const bench_machine *m,
                         const peer_result *peer, micro_case *cases,
                         size_t ncases, const ahtree_point *pt, size_t np,
                         const dual_info *di, const char *cmdline) {
  FILE *f = stdout;
  fprintf(f, "immubench crypto  (%s)\n", cmdline);
  fprintf(f, "cpu: %s, %ld cores, sha_ni: %s\n",
          m->cpu_model[0] ? m->cpu_model : "unknown", m->cores,
          m->sha_ni < 0 ? "unknown" : (m->sha_ni ? "yes" : "no"));
  fprintf(f, "date: %s, %s; median of %u runs (min..max shown)\n\n", m->date,
          m->openssl_lib, o->repeat);

  static const char *const hdr[] = {
      "case", "median ops/s", "min ops/s", "max ops/s",
      "hashes/op", "hashes/s", "ratio to openssl"};
  bench_table *t = bench_table_new(7, hdr, "lrrrrrr");
  char a[64], b[64], c[64], d[64], e[64], r[64];
  for (int p = 0; p < NPEERS; p++) {
    char label[80];
    if (p == PEER_BULK)
      snprintf(label, sizeof label, "openssl sha256 %u B: 64 B blocks/s",
               peer_bytes[p]);
    else
      snprintf(label, sizeof label, "openssl speed sha256, %u B",
               peer_bytes[p]);
    if (!o->peer)
      continue;
    if (peer[p].ok)
      bench_table_addf(t, "%s\t%s\t%s\t%s\t%s\t%s\t%s", label,
                       bench_fmt_num(peer[p].rate.median, 0, a, sizeof a),
                       bench_fmt_num(peer[p].rate.min, 0, b, sizeof b),
                       bench_fmt_num(peer[p].rate.max, 0, c, sizeof c),
                       p == PEER_BULK ? "-" : "1",
                       p == PEER_BULK
                           ? "-"
                           : bench_fmt_num(peer[p].rate.median, 0, d, sizeof d),
                       p == PEER_64 ? "1 (peer)"
                                    : (p == PEER_33 ? "(peer)" : "(ceiling)"));
    else
      bench_table_addf(t, "%s\tn/a\tn/a\tn/a\t-\tn/a\tn/a", label);
  }
  for (size_t i = 0; i < ncases; i++) {
    micro_case *x = &cases[i];
    fmt_ratio(x->ratio, r, sizeof r);
    if (x->peer == PEER_33 && !isnan(x->ratio))
      strncat(r, " (vs 33 B)", sizeof r - strlen(r) - 1);
    bench_table_addf(t, "%s\t%s\t%s\t%s\t%s\t%s\t%s", x->label,
                     bench_fmt_num(x->ops.median, 0, a, sizeof a),
                     bench_fmt_num(x->ops.min, 0, b, sizeof b),
                     bench_fmt_num(x->ops.max, 0, c, sizeof c),
                     bench_fmt_num(x->hashes_per_op, 2, d, sizeof d),
                     bench_fmt_num(x->hashes_per_s, 0, e, sizeof e), r);
  }
  for (size_t i = 0; i < np; i++) {
    char label[64];
    fmt_ratio(pt[i].ratio, r, sizeof r);
    snprintf(label, sizeof label, "ahtree append+root, n=%llu",
             (unsigned long long)pt[i].n);
    bench_table_addf(t, "%s\t%s\t%s\t%s\t%s\t%s\t%s", label,
                     bench_fmt_num(pt[i].appends.median, 0, a, sizeof a),
                     bench_fmt_num(pt[i].appends.min, 0, b, sizeof b),
                     bench_fmt_num(pt[i].appends.max, 0, c, sizeof c),
                     bench_fmt_num(pt[i].avg, 2, d, sizeof d),
                     bench_fmt_num(pt[i].hashes_per_s, 0, e, sizeof e), r);
  }
  bench_table_print(t, f);
  bench_table_free(t);
  fputs("\nhashes/op: immu_hash_count() delta over the timed ops (one per "
        "immu_sha256* call).\n"
        "ratio: achieved hashes/s / openssl 64 B hashes/s (33 B row: vs "
        "openssl 33 B).\n",
        f);
  if (di->pairs)
    fprintf(f,
            "dual proofs: chain of %llu v0 txs, %zu random pairs s<t, "
            "%.1f terms/proof on average, %zu with a linear-advance proof.\n",
            (unsigned long long)di->chain, di->pairs, di->avg_terms,
            di->with_lap);
  fputc('\n', f);
  if (np == 0)
    return;

  static const char *const hdr2[] = {
      "n",     "total hashes", "hashes/append", "mean popcount(k)+2",
      "within", "popcount(n)+2", "within", "n-th append",
      "popcount(n)+ctz(n)"};
  t = bench_table_new(9, hdr2, "rrrrrrrrr");
  for (size_t i = 0; i < np; i++) {
    bench_table_addf(
        t, "%s\t%s\t%s\t%.3f\t%s\t%u\t%s\t%llu\t%u",
        bench_fmt_num((double)pt[i].n, 0, a, sizeof a),
        bench_fmt_num((double)pt[i].total_hashes, 0, b, sizeof b),
        bench_fmt_num(pt[i].avg, 3, c, sizeof c), pt[i].mean_pc_plus_2,
        pt[i].avg <= pt[i].mean_pc_plus_2 ? "yes" : "NO", pt[i].pc_n_plus_2,
        pt[i].avg <= pt[i].pc_n_plus_2 ? "yes" : "no",
        (unsigned long long)pt[i].nth_hashes, pt[i].model_nth);
  }
  fputs("ahtree: n appends from an empty in-memory tree, each followed by "
        "reading its new root\n",
        f);
  bench_table_print(t, f);
  bench_table_free(t);
  fputs("\n", f);
}

static void case_json(bench_json *j, const micro_case *x, unsigned repeat) {
  bench_json_begin_object(j, NULL);
  bench_json_str(j, "name", x->name);
  bench_json_str(j, "label", x->label);
  bench_json_str(j, "unit", x->unit);
  bench_json_uint(j, "iters_per_run", x->iters);
  bench_json_stats(j, "ops_per_s", &x->ops);
  bench_json_begin_array(j, "runs_ops_per_s");
  for (unsigned r = 0; r < repeat; r++)
    bench_json_num(j, NULL, x->runs[r]);
  bench_json_end_array(j);
  bench_json_num(j, "hashes_per_op", x->hashes_per_op);
  bench_json_num(j, "hashes_per_s", x->hashes_per_s);
  bench_json_str(j, "peer", peer_key[x->peer]);
  bench_json_num(j, "ratio_to_openssl", x->ratio);
  bench_json_end_object(j);
}

static void write_json(FILE *f, const crypto_opts *o, const bench_machine *m,
                       const char *ossl_cli, const peer_result *peer,
                       micro_case *cases, size_t ncases,
                       const ahtree_point *pt, size_t np, const dual_info *di,
                       const char *cmdline) {
  bench_json j;
  bench_json_init(&j, f);
  bench_json_begin_object(&j, NULL);
  bench_json_str(&j, "benchmark", "crypto");
  bench_json_int(&j, "schema", 1);
  bench_json_str(&j, "command", cmdline);
  bench_machine_json(&j, "machine", m);
  bench_json_str(&j, "durability", "n/a (pure in-memory crypto)");
  bench_json_begin_object(&j, "config");
  bench_json_uint(&j, "repeat", o->repeat);
  bench_json_bool(&j, "quick", o->quick);
  bench_json_num(&j, "min_time_s", o->min_time);
  bench_json_uint(&j, "max_ahtree", o->max_ahtree);
  bench_json_uint(&j, "chain", o->chain);
  bench_json_uint(&j, "pairs", o->pairs);
  bench_json_uint(&j, "seed", o->seed);
  bench_json_str(&j, "cases", o->cases);
  bench_json_end_object(&j);

  bench_json_begin_object(&j, "peer");
  bench_json_str(&j, "openssl_cli", ossl_cli[0] ? ossl_cli : NULL);
  for (int p = 0; p < NPEERS; p++) {
    const char *key = peer_key[p];
    if (!peer[p].ok) {
      bench_json_null(&j, key);
      continue;
    }
    bench_json_begin_object(&j, key);
    bench_json_str(&j, "command", peer[p].cmd);
    bench_json_uint(&j, "bytes", peer_bytes[p]);
    bench_json_str(&j, "unit", p == PEER_BULK ? "64-byte compression blocks/s"
                                              : "hashes/s");
    bench_json_stats(&j, "rate", &peer[p].rate);
    bench_json_begin_array(&j, "runs");
    for (unsigned r = 0; r < o->peer_repeat; r++)
      bench_json_num(&j, NULL, peer[p].runs[r]);
    bench_json_end_array(&j);
    bench_json_end_object(&j);
  }
  bench_json_end_object(&j);

  bench_json_begin_array(&j, "cases");
  for (size_t i = 0; i < ncases; i++)
    case_json(&j, &cases[i], o->repeat);
  bench_json_end_array(&j);

  if (di->pairs) {
    bench_json_begin_object(&j, "dual_proof");
    bench_json_uint(&j, "chain_txs", di->chain);
    bench_json_uint(&j, "pairs", di->pairs);
    bench_json_num(&j, "avg_terms_per_proof", di->avg_terms);
    bench_json_uint(&j, "proofs_with_linear_advance", di->with_lap);
    bench_json_end_object(&j);
  } else {
    bench_json_null(&j, "dual_proof");
  }

  bench_json_begin_array(&j, "ahtree");
  for (size_t i = 0; i < np; i++) {
    const ahtree_point *x = &pt[i];
    bench_json_begin_object(&j, NULL);
    bench_json_uint(&j, "n", x->n);
    bench_json_stats(&j, "appends_per_s", &x->appends);
    bench_json_begin_array(&j, "runs_appends_per_s");
    for (unsigned r = 0; r < o->repeat; r++)
      bench_json_num(&j, NULL, x->rate[r]);
    bench_json_end_array(&j);
    bench_json_uint(&j, "total_hashes", x->total_hashes);
    bench_json_bool(&j, "hash_count_identical_across_runs", x->hashes_stable);
    bench_json_num(&j, "avg_hashes_per_append", x->avg);
    bench_json_uint(&j, "popcount_n_plus_2", x->pc_n_plus_2);
    bench_json_num(&j, "mean_popcount_k_plus_2", x->mean_pc_plus_2);
    bench_json_bool(&j, "within_bound", x->avg <= x->mean_pc_plus_2);
    bench_json_bool(&j, "within_popcount_n_plus_2", x->avg <= x->pc_n_plus_2);
    bench_json_uint(&j, "nth_append_hashes", x->nth_hashes);
    bench_json_uint(&j, "nth_append_popcount_plus_ctz", x->model_nth);
    bench_json_uint(&j, "sum_popcount_plus_ctz", x->model_total);
    bench_json_num(&j, "hashes_per_s", x->hashes_per_s);
    bench_json_num(&j, "ratio_to_openssl", x->ratio);
    bench_json_end_object(&j);
  }
  bench_json_end_array(&j);
  bench_json_end_object(&j);
  bench_json_finish(&j);
}

/* ------------------------------------------------------------------ */
/* Entry point                                                         */
/* ------------------------------------------------------------------ */

int bench_crypto_main(int argc, char **argv) {
  crypto_opts o;
  int prc = parse_opts(argc, argv, &o);
  if (prc > 0)
    return 0;
  if (prc < 0) {
    crypto_usage(stderr);
    return 2;
  }
  char *cmdline = bench_command_line("immubench", argc, argv);
  int json_stdout = o.json && strcmp(o.json, "-") == 0;
  FILE *jf = NULL;
  if (o.json && !json_stdout) {
    jf = fopen(o.json, "w");
    if (!jf) {
      perror(o.json);
      free(cmdline);
      return 1;
    }
  }

  bench_machine m;
  bench_machine_collect(&m);
  char ossl_cli[128] = "";
  bench_rng rng;
  bench_rng_seed(&rng, o.seed);
  uint64_t start = bench_now_ns();

  /* 6. the peer: half of its runs now, the rest after the last case, so
   * that it sees the same machine conditions as our cases. */
  peer_result peer[NPEERS];
  memset(peer, 0, sizeof peer);
  unsigned peer_first = (o.peer_repeat + 1) / 2;
  if (o.peer) {
    bench_openssl_cli_version(ossl_cli, sizeof ossl_cli);
    for (int p = 0; p < NPEERS; p++) {
      peer[p].runs = bench_xcalloc(o.peer_repeat, sizeof *peer[p].runs);
      peer[p].ok = 1;
    }
    peer_rounds(peer, 0, peer_first, o.peer_repeat, o.peer_seconds);
  }

  /* Data for cases 1-3. */
  sha_ctx sha64, sha33;
  bench_rng_bytes(&rng, sha64.buf, sizeof sha64.buf);
  sha64.len = 64;
  bench_rng_bytes(&rng, sha33.buf, sizeof sha33.buf);
  sha33.len = 33;
  entry_ctx ev0, ev1;
  bench_rng_bytes(&rng, ev0.key, sizeof ev0.key);
  bench_rng_bytes(&rng, ev0.hval.b, sizeof ev0.hval.b);
  ev0.version = 0;
  ev1 = ev0;
  ev1.version = 1;
  static const size_t htree_w[3] = {1, 16, 1000};
  htree_ctx hx[3];
  for (int i = 0; i < 3; i++) {
    hx[i].n = htree_w[i];
    hx[i].digests = bench_xcalloc(htree_w[i], sizeof *hx[i].digests);
    bench_rng_bytes(&rng, hx[i].digests, htree_w[i] * sizeof *hx[i].digests);
  }

  micro_case all[] = {
      {"sha256_64B", "immu_sha256, 64 B", "hashes", PEER_64, run_sha, &sha64,
       0, NULL, {0, 0, 0}, 0, 0, 0},
      {"sha256_33B", "immu_sha256, 33 B", "hashes", PEER_33, run_sha, &sha33,
       0, NULL, {0, 0, 0}, 0, 0, 0},
      {"entry_digest_v0", "entry digest v0 (32 B key)", "digests", PEER_64,
       run_entry, &ev0, 0, NULL, {0, 0, 0}, 0, 0, 0},
      {"entry_digest_v1", "entry digest v1 (32 B key)", "digests", PEER_64,
       run_entry, &ev1, 0, NULL, {0, 0, 0}, 0, 0, 0},
      {"htree_root_1", "htree root, 1 entry", "roots", PEER_64, run_htree,
       &hx[0], 0, NULL, {0, 0, 0}, 0, 0, 0},
      {"htree_root_16", "htree root, 16 entries", "roots", PEER_64, run_htree,
       &hx[1], 0, NULL, {0, 0, 0}, 0, 0, 0},
      {"htree_root_1000", "htree root, 1000 entries", "roots", PEER_64,
       run_htree, &hx[2], 0, NULL, {0, 0, 0}, 0, 0, 0},
      {"dual_proof_gen", "dual proof generate+free", "proofs", PEER_64,
       run_dual_gen, NULL, 0, NULL, {0, 0, 0}, 0, 0, 0},
      {"dual_proof_verify", "dual proof verify", "verifications", PEER_64,
       run_dual_verify, NULL, 0, NULL, {0, 0, 0}, 0, 0, 0},
  };
  micro_case cases[sizeof all / sizeof all[0]];
  size_t ncases = 0;
  int need_chain = 0;
  for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
    if (!selected(&o, all[i].name))
      continue;
    if (all[i].ctx == NULL)
      need_chain = 1;
    cases[ncases++] = all[i];
  }

  /* Data for case 5: the chain, the pairs, and proofs to verify, each
   * checked once (and one tampered) before timing. */
  chain ch;
  dual_ctx dx;
  dual_info di;
  memset(&ch, 0, sizeof ch);
  memset(&dx, 0, sizeof dx);
  memset(&di, 0, sizeof di);
  if (need_chain) {
    bench_progress("crypto: building a chain of %llu txs",
                   (unsigned long long)o.chain);
    chain_build(&ch, o.chain, &rng);
    dx.ch = &ch;
    dx.src.ctx = &ch;
    dx.src.header = chain_header;
    dx.src.alh = chain_alh;
    dx.npairs = (size_t)o.pairs;
    dx.s = bench_xcalloc(dx.npairs, sizeof *dx.s);
    dx.t = bench_xcalloc(dx.npairs, sizeof *dx.t);
    for (size_t i = 0; i < dx.npairs; i++) {
      dx.s[i] = 1 + bench_rng_below(&rng, o.chain - 1); /* [1, n-1] */
      dx.t[i] = dx.s[i] + 1 + bench_rng_below(&rng, o.chain - dx.s[i]);
    }
    di.chain = o.chain;
    di.pairs = dx.npairs;
    dx.proofs = bench_xcalloc(dx.npairs, sizeof *dx.proofs);
    double terms = 0;
    for (size_t i = 0; i < dx.npairs; i++) {
      immu_dual_proof *p = &dx.proofs[i];
      int rc = immu_dual_proof_gen(ch.tree, &dx.src, &ch.hdr[dx.s[i] - 1],
                                   &ch.hdr[dx.t[i] - 1], p);
      if (rc)
        die_rc("immu_dual_proof_gen", rc);
      rc = immu_dual_proof_verify(p, dx.s[i], dx.t[i], &ch.alh[dx.s[i] - 1],
                                  &ch.alh[dx.t[i] - 1]);
      if (rc) {
        fprintf(stderr, "immubench crypto: dual proof (%llu, %llu): ",
                (unsigned long long)dx.s[i], (unsigned long long)dx.t[i]);
        die_rc("immu_dual_proof_verify of a fresh proof", rc);
      }
      terms += (double)(p->inclusion.n + p->consistency.n +
                        p->last_inclusion.n + p->linear.terms.n);
      if (p->has_lap)
        di.with_lap++;
    }
    di.avg_terms = terms / (double)dx.npairs;
    immu_digest bad = ch.alh[dx.t[0] - 1];
    bad.b[7] ^= 0x40;
    if (immu_dual_proof_verify(&dx.proofs[0], dx.s[0], dx.t[0],
                               &ch.alh[dx.s[0] - 1], &bad) != IMMU_EVERIFY) {
      fputs("immubench crypto: a dual proof verified against a wrong target "
            "Alh\n",
            stderr);
      exit(1);
    }
    for (size_t i = 0; i < ncases; i++)
      if (cases[i].ctx == NULL)
        cases[i].ctx = &dx;
  }

  for (size_t i = 0; i < ncases; i++) {
    dx.next = 0;
    measure_case(&cases[i], o.repeat, o.min_time);
  }

  /* 4. ahtree, last: the largest allocation. */
  ahtree_point pt[MAX_CHECKPOINTS];
  memset(pt, 0, sizeof pt);
  size_t np = selected(&o, "ahtree") ? ahtree_bench(&o, pt) : 0;

  if (o.peer) {
    peer_rounds(peer, peer_first, o.peer_repeat, o.peer_repeat,
                o.peer_seconds);
    for (int p = 0; p < NPEERS; p++)
      if (peer[p].ok)
        peer[p].rate = bench_stats_of(peer[p].runs, o.peer_repeat);
  }
  for (size_t i = 0; i < ncases; i++) {
    const peer_result *pr = &peer[cases[i].peer];
    cases[i].ratio = pr->ok ? cases[i].hashes_per_s / pr->rate.median : NAN;
  }
  for (size_t i = 0; i < np; i++)
    pt[i].ratio = peer[PEER_64].ok
                      ? pt[i].hashes_per_s / peer[PEER_64].rate.median
                      : NAN;

  bench_progress("crypto: done in %.1f s",
                 bench_elapsed_s(start, bench_now_ns()));

  if (!json_stdout)
    print_tables(&o, &m, peer, cases, ncases, pt, np, &di, cmdline);
  if (json_stdout)
    write_json(stdout, &o, &m, ossl_cli, peer, cases, ncases, pt, np, &di,
               cmdline);
  int rc = 0;
  if (jf) {
    write_json(jf, &o, &m, ossl_cli, peer, cases, ncases, pt, np, &di,
               cmdline);
    if (fclose(jf) != 0) {
      perror(o.json);
      rc = 1;
    }
  }

  for (size_t i = 0; i < ncases; i++)
    free(cases[i].runs);
  for (size_t i = 0; i < np; i++)
    free(pt[i].rate);
  for (size_t i = 0; i < dx.npairs; i++)
    immu_dual_proof_free(&dx.proofs[i]);
  free(dx.proofs);
  free(dx.s);
  free(dx.t);
  if (need_chain)
    chain_free(&ch);
  for (int i = 0; i < 3; i++)
    free(hx[i].digests);
  for (int p = 0; p < NPEERS; p++)
    free(peer[p].runs);
  free(cmdline);
  (void)g_sink;
  return rc;
}
