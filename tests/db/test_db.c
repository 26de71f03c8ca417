/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Tests of the KV layer (include/immudb/db.h) against immudb's semantics
 * (immudb-crypto.md section 7, immudb-api.md section 2).
 *
 * Every verifiable result is checked the way a Go HEAD client does it
 * (spec 7.5): the entry digest is recomputed from what the client expects
 * (with the digest formula of the returned tx header's version), proven
 * against Eh with the htree verifier, and the dual proof is verified
 * between the client's trusted state and the new one; the state is then
 * advanced. Tampered proofs must be rejected.
 *
 * Each test gets its own database under $IMMU_TEST_TMPDIR (fallback /tmp),
 * removed at the end.
 */
#include <ftw.h>
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/endian.h"
#include "core/mem.h"
#include "immudb/crypto.h"
#include "immudb/db.h"
#include "store/store.h"

#define assert_rc(expr, want)                                                  \
  do {                                                                         \
    int rc_ = (expr);                                                          \
    int want_ = (want);                                                        \
    if (rc_ != want_) {                                                        \
      fail_msg("%s = %d (%s: %s), want %d (%s)", #expr, rc_,                   \
               immu_err_name(rc_), immu_db_last_error(), want_,                \
               immu_err_name(want_));                                          \
    }                                                                          \
  } while (0)

#define OK(expr) assert_rc(expr, 0)

/* Fails unless the last error message contains |s|. */
#define assert_msg(s)                                                          \
  do {                                                                         \
    if (strstr(immu_db_last_error(), (s)) == NULL)                             \
      fail_msg("message \"%s\" lacks \"%s\"", immu_db_last_error(), (s));      \
  } while (0)

#define U8(s) ((const uint8_t *)(s))
#define KV(k, v) ((immu_db_kv){U8(k), strlen(k), U8(v), strlen(v)})

/* ------------------------------------------------------------------ */
/* Fixture                                                             */
/* ------------------------------------------------------------------ */

typedef struct fixture {
  char dir[512];
  immu_db *db;
} fixture;

static int rm_cb(const char *path, const struct stat *sb, int flag,
                 struct FTW *ftw) {
  (void)sb;
  (void)flag;
  (void)ftw;
  return remove(path);
}

static immu_db *open_db_opts(const char *dir, const immu_store_options *so) {
  immu_db_options o;
  immu_db *db = NULL;
  immu_db_options_init(&o);
  o.store = so;
  o.index_wait_ms = 30000; /* fail rather than hang */
  int rc = immu_db_open(dir, &o, &db);
  if (rc != 0)
    fail_msg("open %s: %s (%s)", dir, immu_err_name(rc), immu_db_last_error());
  return db;
}

static immu_db *open_db(const char *dir) {
  immu_store_options so;
  immu_store_options_init(&so);
  so.durability = IMMU_DURABILITY_ASYNC;
  return open_db_opts(dir, &so);
}

static int setup(void **state) {
  fixture *fx = calloc(1, sizeof *fx);
  const char *base = getenv("IMMU_TEST_TMPDIR");
  if (fx == NULL)
    return -1;
  snprintf(fx->dir, sizeof fx->dir, "%s/dbXXXXXX",
           base && *base ? base : "/tmp");
  if (mkdtemp(fx->dir) == NULL) {
    free(fx);
    return -1;
  }
  fx->db = open_db(fx->dir);
  *state = fx;
  return 0;
}

static int teardown(void **state) {
  fixture *fx = *state;
  int rc = immu_db_close(fx->db);
  nftw(fx->dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
  free(fx);
  return rc == 0 ? 0 : -1;
}

static void reopen(fixture *fx) {
  OK(immu_db_close(fx->db));
  fx->db = open_db(fx->dir);
}

/* ------------------------------------------------------------------ */
/* Helpers                                                             */
/* ------------------------------------------------------------------ */

static uint64_t put(immu_db *db, const char *k, const char *v) {
  immu_db_kv kv = KV(k, v);
  immu_tx_header h;
  OK(immu_db_set(db, &kv, 1, 0, &h));
  return h.id;
}

static uint64_t ref(immu_db *db, const char *k, const char *target,
                    uint64_t at_tx) {
  immu_db_ref_req r = {U8(k), strlen(k), U8(target), strlen(target),
                       at_tx, at_tx > 0, 0};
  immu_tx_header h;
  OK(immu_db_set_reference(db, &r, &h));
  return h.id;
}

static uint64_t zadd(immu_db *db, const char *set, double score, const char *k,
                     uint64_t at_tx) {
  immu_db_zadd_req z = {U8(set),   strlen(set), score,     U8(k),
                        strlen(k), at_tx,       at_tx > 0, 0};
  immu_tx_header h;
  OK(immu_db_zadd(db, &z, &h));
  return h.id;
}

static immu_db_key_req kreq(const char *k) {
  immu_db_key_req r;
  memset(&r, 0, sizeof r);
  r.key = U8(k);
  r.key_len = strlen(k);
  return r;
}

static void assert_bytes(const uint8_t *p, size_t n, const char *want) {
  if (n != strlen(want) || (n > 0 && memcmp(p, want, n) != 0))
    fail_msg("got \"%.*s\" (%zu bytes), want \"%s\"", (int)n,
             p ? (const char *)p : "", n, want);
}

/* Get of |k| must give value |v| written in tx |tx| (0 = don't check). */
static void expect_get(immu_db *db, const immu_db_key_req *r, const char *key,
                       const char *v, uint64_t tx) {
  immu_db_entry e;
  OK(immu_db_get(db, r, &e));
  assert_bytes(e.key, e.key_len, key);
  assert_bytes(e.value, e.value_len, v);
  if (tx)
    assert_int_equal(e.tx, tx);
  immu_db_entry_clear(&e);
}

static void expect_latest(immu_db *db, const char *k, const char *v,
                          uint64_t tx) {
  immu_db_key_req r = kreq(k);
  expect_get(db, &r, k, v, tx);
}

static void expect_get_err(immu_db *db, const immu_db_key_req *r, int rc,
                           const char *msg) {
  immu_db_entry e;
  assert_rc(immu_db_get(db, r, &e), rc);
  if (msg)
    assert_msg(msg);
  assert_null(e.key);
  assert_null(e.value);
  immu_db_entry_clear(&e);
}

static uint64_t last_tx(immu_db *db) {
  immu_db_state s;
  immu_db_current_state(db, &s);
  return s.tx_id;
}

/* ------------------------------------------------------------------ */
/* Client-side verification (spec 7.5, Go HEAD)                        */
/* ------------------------------------------------------------------ */

typedef struct cstate {
  uint64_t id;
  immu_digest alh;
} cstate;

/* A client state trusted at tx |id| (its Alh, read back). */
static cstate trusted_at(immu_db *db, uint64_t id) {
  cstate c = {id, {{0}}};
  immu_db_tx t;
  OK(immu_db_tx_by_id(db, id, &t));
  c.alh = t.alh;
  immu_db_tx_clear(&t);
  return c;
}

static void alh_of(const immu_tx_header *h, immu_digest *out) {
  OK(immu_tx_alh(h, out));
}

static int hdr_eq(const immu_tx_header *a, const immu_tx_header *b) {
  immu_digest x, y;
  alh_of(a, &x);
  alh_of(b, &y);
  return a->id == b->id && immu_digest_eq(&x, &y);
}

/* Digest of (store key, stored value) as a tx of header |version| has it. */
static void kv_digest(unsigned version, const uint8_t *k, size_t kn,
                      const uint8_t *v, size_t vn, immu_digest *out) {
  immu_digest hv;
  immu_sha256(v, vn, &hv);
  OK(immu_entry_digest(version, k, kn, NULL, 0, &hv, out));
}

/* Recomputes every entry digest of |tx| from its returned bytes, checks the
 * values against their hashes and the tree against Eh, and the Alh. Fills
 * |d| (capacity >= tx->nentries). */
static void check_tx(const immu_db_tx *tx, immu_digest *d) {
  immu_digest h, root;
  assert_int_equal(tx->nentries, tx->header.nentries);
  assert_true(tx->nentries >= 1);
  for (size_t i = 0; i < tx->nentries; i++) {
    const immu_db_tx_entry *e = &tx->entries[i];
    immu_sha256(e->value, e->value_len, &h);
    assert_true(immu_digest_eq(&h, &e->hval));
    OK(immu_entry_digest(tx->header.version, e->key, e->key_len, e->md,
                         e->md_len, &e->hval, &d[i]));
  }
  OK(immu_htree_root(d, tx->nentries, &root));
  assert_true(immu_digest_eq(&root, &tx->header.eh));
  alh_of(&tx->header, &h);
  assert_true(immu_digest_eq(&h, &tx->alh));
}

/* VerifiedSet / VerifiedSetReference / VerifiedZAdd: the tx must contain
 * the expected entry (store key |k|, stored value |v|), proven locally
 * against Eh, and the dual proof must link |st| to the tx. Advances |st|. */
static void verify_written(cstate *st, const immu_db_verifiable_tx *vt,
                           const uint8_t *k, size_t kn, const uint8_t *v,
                           size_t vn) {
  const immu_db_tx *tx = &vt->tx;
  const immu_dual_proof *p = &vt->proof;
  immu_digest *d = calloc(tx->nentries, sizeof *d);
  immu_digest want, talh, terms[IMMU_PROOF_MAX_TERMS];
  size_t leaf = SIZE_MAX, nterms;

  assert_non_null(d);
  check_tx(tx, d);
  kv_digest(tx->header.version, k, kn, v, vn, &want);
  for (size_t i = 0; i < tx->nentries; i++)
    if (immu_digest_eq(&d[i], &want))
      leaf = i;
  assert_true(leaf != SIZE_MAX);
  OK(immu_htree_proof(d, tx->nentries, leaf, terms, &nterms));
  OK(immu_htree_verify(terms, nterms, leaf, tx->nentries, &want,
                       &tx->header.eh));
  free(d);

  /* The proof's target is the tx; its Eh must be the one we proved. */
  assert_true(hdr_eq(&p->target, &tx->header));
  assert_true(immu_digest_eq(&p->target.eh, &tx->header.eh));
  alh_of(&p->target, &talh);
  if (st->id > 0) {
    assert_int_equal(p->source.id, st->id);
    OK(immu_dual_proof_verify(p, st->id, tx->header.id, &st->alh, &talh));
  } else {
    /* proveSinceTx = 0: DualProof(tx, tx) must verify too (spec 11.10) */
    assert_int_equal(p->source.id, tx->header.id);
    OK(immu_dual_proof_verify(p, tx->header.id, tx->header.id, &talh, &talh));
  }
  st->id = p->target.id;
  st->alh = talh;
}

/* VerifiedGet (spec 7.5): |req_key| is the key the client asked for. */
static void verify_get(cstate *st, const immu_db_verifiable_entry *ve,
                       const char *req_key) {
  const immu_db_entry *e = &ve->entry;
  const immu_dual_proof *p = &ve->vtx.proof;
  uint8_t kb[256], vb[512];
  size_t kn, vn;
  uint64_t vtx;
  immu_digest digest, salh, talh;
  const immu_digest *eh;
  cstate src, dst;

  if (!e->has_referenced_by) {
    /* EncodeEntrySpec(requestedKey, nil, entry.value) */
    OK(immu_enc_key(U8(req_key), strlen(req_key), kb, sizeof kb, &kn));
    OK(immu_enc_value(e->value, e->value_len, vb, sizeof vb, &vn));
    vtx = e->tx;
  } else {
    /* EncodeReference(requestedKey, nil, entry.key, referencedBy.atTx) */
    assert_bytes(e->referenced_by.key, e->referenced_by.key_len, req_key);
    OK(immu_enc_key(U8(req_key), strlen(req_key), kb, sizeof kb, &kn));
    OK(immu_enc_ref_value(e->key, e->key_len, e->referenced_by.at_tx, vb,
                          sizeof vb, &vn));
    vtx = e->referenced_by.tx;
  }
  assert_int_equal(ve->vtx.tx.header.id, vtx);
  kv_digest(ve->vtx.tx.header.version, kb, kn, vb, vn, &digest);

  alh_of(&p->source, &salh);
  alh_of(&p->target, &talh);
  if (st->id <= vtx) {
    eh = &p->target.eh;
    src = *st;
    dst = (cstate){vtx, talh};
    assert_int_equal(p->target.id, vtx);
  } else {
    eh = &p->source.eh;
    src = (cstate){vtx, salh};
    dst = *st;
    assert_int_equal(p->source.id, vtx);
  }
  assert_int_equal(ve->inclusion.width, ve->vtx.tx.nentries);
  OK(immu_htree_verify(ve->inclusion.terms, ve->inclusion.nterms,
                       ve->inclusion.leaf, ve->inclusion.width, &digest, eh));
  if (st->id > 0) {
    OK(immu_dual_proof_verify(p, src.id, dst.id, &src.alh, &dst.alh));
  } else {
    assert_int_equal(p->source.id, vtx);
    OK(immu_dual_proof_verify(p, vtx, vtx, &talh, &talh));
  }
  st->id = p->target.id;
  st->alh = talh;
}

/* VerifiedTxByID: only the dual proof, same source/target choice. */
static void verify_tx_by_id(cstate *st, const immu_db_verifiable_tx *vt) {
  const immu_dual_proof *p = &vt->proof;
  uint64_t id = vt->tx.header.id;
  immu_digest salh, talh;
  immu_digest d[64];
  assert_true(vt->tx.nentries <= 64);
  check_tx(&vt->tx, d);
  alh_of(&p->source, &salh);
  alh_of(&p->target, &talh);
  if (st->id == 0) {
    OK(immu_dual_proof_verify(p, id, id, &talh, &talh));
  } else if (st->id <= id) {
    assert_true(hdr_eq(&p->target, &vt->tx.header));
    OK(immu_dual_proof_verify(p, st->id, id, &st->alh, &talh));
  } else {
    assert_true(hdr_eq(&p->source, &vt->tx.header));
    OK(immu_dual_proof_verify(p, id, st->id, &salh, &st->alh));
  }
  st->id = p->target.id;
  st->alh = talh;
}

/* ------------------------------------------------------------------ */
/* Set / Get                                                           */
/* ------------------------------------------------------------------ */

static void test_set_get(void **state) {
  fixture *fx = *state;
  immu_db *db = fx->db;
  immu_db_kv kvs[3] = {KV("alpha", "1"), KV("beta", "two"), KV("gamma", "")};
  immu_tx_header h;
  immu_db_state s0, s1;
  immu_db_entry e;

  immu_db_current_state(db, &s0);
  assert_int_equal(s0.tx_id, 0);
  assert_true(immu_digest_eq(&s0.tx_hash, &immu_empty_digest));

  OK(immu_db_set(db, kvs, 3, 0, &h));
  assert_int_equal(h.id, 1);
  assert_int_equal(h.nentries, 3);
  assert_int_equal(h.version, 0);
  immu_db_current_state(db, &s1);
  assert_int_equal(s1.tx_id, 1);
  {
    immu_digest a;
    alh_of(&h, &a);
    assert_true(immu_digest_eq(&a, &s1.tx_hash));
  }

  expect_latest(db, "alpha", "1", 1);
  expect_latest(db, "beta", "two", 1);
  expect_latest(db, "gamma", "", 1); /* empty value allowed */
  {
    immu_db_key_req r = kreq("alpha");
    OK(immu_db_get(db, &r, &e));
    assert_int_equal(e.revision, 1);
    assert_false(e.has_referenced_by);
    assert_non_null(e.value);
    immu_db_entry_clear(&e);
    immu_db_entry_clear(&e); /* idempotent */
  }

  /* errors */
  {
    immu_db_key_req r = kreq("nope");
    expect_get_err(db, &r, IMMU_ENOTFOUND, "key not found");
    r.key_len = 0;
    expect_get_err(db, &r, IMMU_EINVAL, "illegal arguments");
  }
  {
    immu_db_kv bad = {U8(""), 0, U8("v"), 1};
    assert_rc(immu_db_set(db, &bad, 1, 0, NULL), IMMU_EINVAL);
    assert_msg("illegal arguments");
    assert_rc(immu_db_set(db, kvs, 0, 0, NULL), IMMU_EINVAL);
    immu_db_kv dup[2] = {KV("x", "1"), KV("x", "2")};
    assert_rc(immu_db_set(db, dup, 2, 0, NULL), IMMU_EINVAL);
    assert_msg("duplicated key");
  }
  assert_int_equal(last_tx(db), 1); /* nothing committed by the failures */

  /* overwrite, noWait, then read with sinceTx */
  {
    immu_db_kv kv = KV("alpha", "11");
    OK(immu_db_set(db, &kv, 1, 1, &h));
    immu_db_key_req r = kreq("alpha");
    r.since_tx = h.id;
    expect_get(db, &r, "alpha", "11", h.id);
    r.since_tx = h.id + 1;
    expect_get_err(db, &r, IMMU_EINVAL, "sinceTx");
  }

  /* a large value (not inlined in the index) */
  {
    size_t n = 100000;
    uint8_t *big = malloc(n);
    assert_non_null(big);
    for (size_t i = 0; i < n; i++)
      big[i] = (uint8_t)(i * 7);
    immu_db_kv kv = {U8("big"), 3, big, n};
    OK(immu_db_set(db, &kv, 1, 0, NULL));
    immu_db_key_req r = kreq("big");
    OK(immu_db_get(db, &r, &e));
    assert_int_equal(e.value_len, n);
    assert_memory_equal(e.value, big, n);
    immu_db_entry_clear(&e);
    free(big);
  }
}

static void test_limits(void **state) {
  fixture *fx = *state;
  char dir[600];
  immu_store_options so;
  immu_db *db;

  snprintf(dir, sizeof dir, "%s/small", fx->dir);
  immu_store_options_init(&so);
  so.durability = IMMU_DURABILITY_ASYNC;
  so.max_key_len = 16;
  so.max_value_len = 32;
  so.max_entries = 4;
  db = open_db_opts(dir, &so);

  /* encoded key = 1 + user key */
  put(db, "123456789012345", "v"); /* 16 bytes encoded: fits */
  {
    immu_db_kv kv = KV("1234567890123456", "v");
    assert_rc(immu_db_set(db, &kv, 1, 0, NULL), IMMU_ETOOLARGE);
    assert_msg("max key length exceeded");
  }
  /* encoded value = 1 + user value */
  put(db, "k", "1234567890123456789012345678901");
  {
    immu_db_kv kv = KV("k", "12345678901234567890123456789012");
    assert_rc(immu_db_set(db, &kv, 1, 0, NULL), IMMU_ETOOLARGE);
    assert_msg("max value length exceeded");
  }
  {
    immu_db_kv kvs[5] = {KV("a", "1"), KV("b", "1"), KV("c", "1"), KV("d", "1"),
                         KV("e", "1")};
    OK(immu_db_set(db, kvs, 4, 0, NULL));
    assert_rc(immu_db_set(db, kvs, 5, 0, NULL), IMMU_ETOOLARGE);
    assert_msg("max number of entries");
  }
  /* a ZAdd key is the set, the key and 34 bytes of framing */
  {
    immu_db_zadd_req z = {U8("s"), 1, 1.0, U8("a"), 1, 0, 0, 0};
    assert_rc(immu_db_zadd(db, &z, NULL), IMMU_ETOOLARGE);
  }
  /* a reference whose key is too long */
  {
    immu_db_ref_req r = {U8("r234567890123456"), 16, U8("a"), 1, 0, 0, 0};
    assert_rc(immu_db_set_reference(db, &r, NULL), IMMU_ETOOLARGE);
    r.key_len = 15;
    OK(immu_db_set_reference(db, &r, NULL));
  }
  OK(immu_db_close(db));
}

static void test_get_at_tx_and_revisions(void **state) {
  fixture *fx = *state;
  immu_db *db = fx->db;
  uint64_t t1 = put(db, "k", "v1");
  uint64_t t2 = put(db, "other", "o");
  uint64_t t3 = put(db, "k", "v2");
  uint64_t t4 = put(db, "k", "v3");
  immu_db_key_req r = kreq("k");
  immu_db_entry e;

  /* atTx: exactly the version written in that tx */
  r.at_tx = t1;
  expect_get(db, &r, "k", "v1", t1);
  r.at_tx = t3;
  expect_get(db, &r, "k", "v2", t3);
  r.at_tx = t2;
  expect_get_err(db, &r, IMMU_ENOTFOUND, "key not found");
  r.at_tx = t4 + 10;
  expect_get_err(db, &r, IMMU_ENOTFOUND, "tx not found");
  r.at_tx = t1;
  r.since_tx = t1;
  expect_get_err(db, &r, IMMU_EINVAL, "illegal arguments");
  r.since_tx = 0;
  r.at_revision = 1;
  expect_get_err(db, &r, IMMU_EINVAL, "illegal arguments");

  /* revisions */
  r = kreq("k");
  for (int64_t rev = 1; rev <= 3; rev++) {
    const char *want[] = {"", "v1", "v2", "v3"};
    uint64_t wtx[] = {0, t1, t3, t4};
    r.at_revision = rev;
    OK(immu_db_get(db, &r, &e));
    assert_bytes(e.value, e.value_len, want[rev]);
    assert_int_equal(e.tx, wtx[rev]);
    assert_int_equal(e.revision, (uint64_t)rev);
    immu_db_entry_clear(&e);
  }
  r.at_revision = 0;
  OK(immu_db_get(db, &r, &e));
  assert_int_equal(e.revision, 3);
  immu_db_entry_clear(&e);
  r.at_revision = -1;
  OK(immu_db_get(db, &r, &e));
  assert_bytes(e.value, e.value_len, "v2");
  assert_int_equal(e.revision, 2);
  immu_db_entry_clear(&e);
  r.at_revision = -2;
  expect_get(db, &r, "k", "v1", t1);
  r.at_revision = -3;
  expect_get_err(db, &r, IMMU_ERANGE, "invalid key revision number");
  r.at_revision = 4;
  expect_get_err(db, &r, IMMU_ERANGE, "invalid key revision number");
  r.at_revision = INT64_MIN;
  expect_get_err(db, &r, IMMU_ERANGE, "invalid key revision number");
  r = kreq("missing");
  r.at_revision = 1;
  expect_get_err(db, &r, IMMU_ENOTFOUND, "key not found");

  /* sinceTx */
  r = kreq("k");
  r.since_tx = t4;
  expect_get(db, &r, "k", "v3", t4);
  r.since_tx = t4 + 1;
  expect_get_err(db, &r, IMMU_EINVAL, "illegal arguments");
  r.since_tx = 0;
  r.no_wait = 1;
  expect_get(db, &r, "k", "v3", t4); /* Set waited for the index already */
}

/* ------------------------------------------------------------------ */
/* References                                                          */
/* ------------------------------------------------------------------ */

static void test_references(void **state) {
  fixture *fx = *state;
  immu_db *db = fx->db;
  uint64_t ta = put(db, "a", "1");
  put(db, "b", "B");
  uint64_t tr = ref(db, "r", "a", 0);
  immu_db_key_req q = kreq("r");
  immu_db_entry e;

  /* unbound: resolves to the latest value of a */
  OK(immu_db_get(db, &q, &e));
  assert_bytes(e.key, e.key_len, "a");
  assert_bytes(e.value, e.value_len, "1");
  assert_int_equal(e.tx, ta);
  assert_int_equal(e.revision, 1);
  assert_true(e.has_referenced_by);
  assert_int_equal(e.referenced_by.tx, tr);
  assert_bytes(e.referenced_by.key, e.referenced_by.key_len, "r");
  assert_int_equal(e.referenced_by.at_tx, 0);
  assert_int_equal(e.referenced_by.revision, 1);
  immu_db_entry_clear(&e);

  uint64_t ta2 = put(db, "a", "2");
  expect_get(db, &q, "a", "2", ta2);

  /* bound: stays at the value of tx ta */
  uint64_t trb = ref(db, "rb", "a", ta);
  q = kreq("rb");
  OK(immu_db_get(db, &q, &e));
  assert_bytes(e.value, e.value_len, "1");
  assert_int_equal(e.tx, ta);
  assert_int_equal(e.referenced_by.tx, trb);
  assert_int_equal(e.referenced_by.at_tx, ta);
  immu_db_entry_clear(&e);

  /* the reference read at its own tx resolves too */
  q = kreq("r");
  q.at_tx = tr;
  expect_get(db, &q, "a", "2", ta2);

  /* rules (spec 7.3) */
  {
    immu_db_ref_req r = {U8("x"), 1, U8("a"), 1, ta, 0, 0};
    assert_rc(immu_db_set_reference(db, &r, NULL), IMMU_EINVAL);
    assert_msg("illegal arguments");
    r.at_tx = 0;
    r.bound_ref = 1;
    assert_rc(immu_db_set_reference(db, &r, NULL), IMMU_EINVAL);
    r.bound_ref = 0;
    r.key_len = 0;
    assert_rc(immu_db_set_reference(db, &r, NULL), IMMU_EINVAL);
    r.key_len = 1;
    r.referenced_key_len = 0;
    assert_rc(immu_db_set_reference(db, &r, NULL), IMMU_EINVAL);
  }
  {
    /* the key must not be a plain entry */
    immu_db_ref_req r = {U8("b"), 1, U8("a"), 1, 0, 0, 0};
    assert_rc(immu_db_set_reference(db, &r, NULL), IMMU_EEXIST);
    assert_msg("final key cannot be converted into a reference");
  }
  {
    /* the referenced key must exist */
    immu_db_ref_req r = {U8("x"), 1, U8("ghost"), 5, 0, 0, 0};
    assert_rc(immu_db_set_reference(db, &r, NULL), IMMU_ENOTFOUND);
    assert_msg("key not found");
    /* ... in tx atTx when bound */
    r.referenced_key = U8("b");
    r.referenced_key_len = 1;
    r.at_tx = ta;
    r.bound_ref = 1;
    assert_rc(immu_db_set_reference(db, &r, NULL), IMMU_ENOTFOUND);
    r.at_tx = 999;
    assert_rc(immu_db_set_reference(db, &r, NULL), IMMU_ENOTFOUND);
    assert_msg("tx not found");
  }
  {
    /* and must not be a reference */
    immu_db_ref_req r = {U8("x"), 1, U8("r"), 1, 0, 0, 0};
    assert_rc(immu_db_set_reference(db, &r, NULL), IMMU_ECONFLICT);
    assert_msg("referenced key cannot be a reference");
  }
  uint64_t before = last_tx(db);
  /* a reference may be re-pointed */
  ref(db, "r", "b", 0);
  assert_int_equal(last_tx(db), before + 1);
  expect_get(db, &q, "a", "2", ta2); /* q is still r at tx tr */
  q = kreq("r");
  expect_get(db, &q, "b", "B", 0);
  /* a reference may become a plain key again through Set */
  uint64_t tp = put(db, "r", "plain");
  expect_latest(db, "r", "plain", tp);

  /* GetAll: missing keys skipped, references resolved */
  {
    immu_buf keys[4] = {{"a", 1}, {"ghost", 5}, {"rb", 2}, {"", 0}};
    immu_db_entries l;
    OK(immu_db_get_all(db, keys, 4, 0, &l));
    assert_int_equal(l.n, 2);
    assert_bytes(l.v[0].value, l.v[0].value_len, "2");
    assert_bytes(l.v[1].key, l.v[1].key_len, "a");
    assert_bytes(l.v[1].value, l.v[1].value_len, "1");
    assert_true(l.v[1].has_referenced_by);
    immu_db_entries_clear(&l);
    OK(immu_db_get_all(db, keys, 0, 0, &l));
    assert_int_equal(l.n, 0);
    immu_db_entries_clear(&l);
    assert_rc(immu_db_get_all(db, keys, 1, last_tx(db) + 1, &l), IMMU_EINVAL);
  }
}

/* ------------------------------------------------------------------ */
/* History                                                             */
/* ------------------------------------------------------------------ */

static void test_history(void **state) {
  fixture *fx = *state;
  immu_db *db = fx->db;
  uint64_t tx[6];
  char v[8];
  immu_db_entries l;

  for (int i = 1; i <= 5; i++) {
    snprintf(v, sizeof v, "v%d", i);
    tx[i] = put(db, "h", v);
    put(db, "noise", v);
  }
  immu_db_history_req r = {U8("h"), 1, 0, 0, 0, 0};
  OK(immu_db_history(db, &r, &l));
  assert_int_equal(l.n, 5);
  for (size_t i = 0; i < 5; i++) {
    snprintf(v, sizeof v, "v%zu", i + 1);
    assert_bytes(l.v[i].value, l.v[i].value_len, v);
    assert_bytes(l.v[i].key, l.v[i].key_len, "h");
    assert_int_equal(l.v[i].tx, tx[i + 1]);
    assert_int_equal(l.v[i].revision, i + 1);
  }
  immu_db_entries_clear(&l);

  r.offset = 1;
  r.limit = 2;
  OK(immu_db_history(db, &r, &l));
  assert_int_equal(l.n, 2);
  assert_int_equal(l.v[0].revision, 2);
  assert_int_equal(l.v[1].revision, 3);
  immu_db_entries_clear(&l);

  r.desc = 1;
  r.offset = 0;
  r.limit = 0;
  OK(immu_db_history(db, &r, &l));
  assert_int_equal(l.n, 5);
  assert_int_equal(l.v[0].revision, 5);
  assert_int_equal(l.v[4].revision, 1);
  immu_db_entries_clear(&l);

  r.offset = 1;
  r.limit = 3;
  OK(immu_db_history(db, &r, &l));
  assert_int_equal(l.n, 3);
  assert_bytes(l.v[0].value, l.v[0].value_len, "v4");
  assert_bytes(l.v[2].value, l.v[2].value_len, "v2");
  immu_db_entries_clear(&l);

  r.offset = 5;
  OK(immu_db_history(db, &r, &l));
  assert_int_equal(l.n, 0);
  immu_db_entries_clear(&l);
  r.desc = 0;
  OK(immu_db_history(db, &r, &l));
  assert_int_equal(l.n, 0);
  immu_db_entries_clear(&l);

  /* errors */
  r.offset = 0;
  r.limit = -1;
  assert_rc(immu_db_history(db, &r, &l), IMMU_EINVAL);
  r.limit = 1001;
  assert_rc(immu_db_history(db, &r, &l), IMMU_ETOOLARGE);
  assert_msg("result size limit exceeded");
  r.limit = 0;
  r.since_tx = last_tx(db) + 1;
  assert_rc(immu_db_history(db, &r, &l), IMMU_EINVAL);
  r.since_tx = 0;
  r.key = U8("nope");
  r.key_len = 4;
  assert_rc(immu_db_history(db, &r, &l), IMMU_ENOTFOUND);
  assert_msg("key not found");
  r.key_len = 0;
  assert_rc(immu_db_history(db, &r, &l), IMMU_EINVAL);

  /* the history of a reference shows its stored bytes, unresolved */
  uint64_t tr = ref(db, "hr", "h", tx[2]);
  immu_db_history_req rr = {U8("hr"), 2, 0, 0, 0, 0};
  OK(immu_db_history(db, &rr, &l));
  assert_int_equal(l.n, 1);
  assert_int_equal(l.v[0].tx, tr);
  assert_false(l.v[0].has_referenced_by);
  {
    uint8_t want[10];
    immu__put_u64(want, tx[2]);
    want[8] = 0x00;
    want[9] = 'h';
    assert_int_equal(l.v[0].value_len, 10);
    assert_memory_equal(l.v[0].value, want, 10);
  }
  immu_db_entries_clear(&l);
}

/* ------------------------------------------------------------------ */
/* Scan                                                                */
/* ------------------------------------------------------------------ */

/* Scan must return exactly the keys in |want| (space separated). */
static void expect_scan(immu_db *db, const immu_db_scan_req *r,
                        const char *want) {
  immu_db_entries l;
  char got[512] = "";
  size_t o = 0;
  OK(immu_db_scan(db, r, &l));
  for (size_t i = 0; i < l.n; i++) {
    const immu_db_entry *e = &l.v[i];
    const uint8_t *k = e->has_referenced_by ? e->referenced_by.key : e->key;
    size_t kn = e->has_referenced_by ? e->referenced_by.key_len : e->key_len;
    o += (size_t)snprintf(got + o, sizeof got - o, "%s%.*s", i ? " " : "",
                          (int)kn, (const char *)k);
  }
  immu_db_entries_clear(&l);
  if (strcmp(got, want) != 0)
    fail_msg("scan gave \"%s\", want \"%s\"", got, want);
}

static immu_db_scan_req sreq(void) {
  immu_db_scan_req r;
  memset(&r, 0, sizeof r);
  return r;
}

static void test_scan(void **state) {
  fixture *fx = *state;
  immu_db *db = fx->db;
  immu_db_kv kvs[6] = {KV("a", "1"), KV("ab", "2"), KV("abc", "3"),
                       KV("b", "4"), KV("ba", "5"), KV("c", "6")};
  immu_db_scan_req r = sreq();
  immu_db_entries l;

  OK(immu_db_set(db, kvs, 6, 0, NULL));
  put(db, "d", "x");
  zadd(db, "set", 1.0, "a", 0); /* sorted-set keys are not in Scan */
  ref(db, "rr", "b", 0);
  ref(db, "rd", "d", 0);
  put(db, "d", "y"); /* rd follows it */

  expect_scan(db, &r, "a ab abc b ba c d rd rr");
  r.desc = 1;
  expect_scan(db, &r, "rr rd d c ba b abc ab a");
  r = sreq();
  r.prefix = U8("a");
  r.prefix_len = 1;
  expect_scan(db, &r, "a ab abc");
  r.desc = 1;
  expect_scan(db, &r, "abc ab a");

  /* seek / end, ascending */
  r = sreq();
  r.seek_key = U8("ab");
  r.seek_key_len = 2;
  expect_scan(db, &r, "abc b ba c d rd rr");
  r.inclusive_seek = 1;
  expect_scan(db, &r, "ab abc b ba c d rd rr");
  r.end_key = U8("ba");
  r.end_key_len = 2;
  expect_scan(db, &r, "ab abc b");
  r.inclusive_end = 1;
  expect_scan(db, &r, "ab abc b ba");
  r.limit = 2;
  expect_scan(db, &r, "ab abc");
  r.offset = 1;
  expect_scan(db, &r, "abc b");
  r.offset = 10;
  expect_scan(db, &r, "");

  /* descending: seek is the upper bound, end the lower one */
  r = sreq();
  r.desc = 1;
  r.seek_key = U8("ba");
  r.seek_key_len = 2;
  expect_scan(db, &r, "b abc ab a");
  r.inclusive_seek = 1;
  expect_scan(db, &r, "ba b abc ab a");
  r.end_key = U8("ab");
  r.end_key_len = 2;
  expect_scan(db, &r, "ba b abc");
  r.inclusive_end = 1;
  expect_scan(db, &r, "ba b abc ab");
  r.limit = 3;
  r.offset = 1;
  expect_scan(db, &r, "b abc ab");

  /* references are resolved */
  r = sreq();
  r.prefix = U8("r");
  r.prefix_len = 1;
  OK(immu_db_scan(db, &r, &l));
  assert_int_equal(l.n, 2);
  assert_bytes(l.v[0].key, l.v[0].key_len, "d");
  assert_bytes(l.v[0].value, l.v[0].value_len, "y");
  assert_bytes(l.v[1].key, l.v[1].key_len, "b");
  assert_bytes(l.v[1].value, l.v[1].value_len, "4");
  assert_bytes(l.v[1].referenced_by.key, l.v[1].referenced_by.key_len, "rr");
  immu_db_entries_clear(&l);

  /* errors */
  r = sreq();
  r.limit = 1001;
  assert_rc(immu_db_scan(db, &r, &l), IMMU_ETOOLARGE);
  r.limit = 0;
  r.since_tx = last_tx(db) + 1;
  assert_rc(immu_db_scan(db, &r, &l), IMMU_EINVAL);
  r.since_tx = last_tx(db);
  expect_scan(db, &r, "a ab abc b ba c d rd rr");
  r.no_wait = 1;
  expect_scan(db, &r, "a ab abc b ba c d rd rr");
}

static void test_count(void **state) {
  fixture *fx = *state;
  immu_db *db = fx->db;
  immu_db_kv kvs[4] = {KV("x1", "1"), KV("x2", "2"), KV("y1", "3"),
                       KV("xy", "4")};
  uint64_t n;

  OK(immu_db_count_all(db, &n));
  assert_int_equal(n, 0);
  OK(immu_db_set(db, kvs, 4, 0, NULL));
  put(db, "x1", "again"); /* same key: still one */
  ref(db, "xr", "y1", 0);
  zadd(db, "x", 1.0, "x1", 0); /* not a user key */
  OK(immu_db_count(db, U8("x"), 1, &n));
  assert_int_equal(n, 4);
  OK(immu_db_count(db, U8("x1"), 2, &n));
  assert_int_equal(n, 1);
  OK(immu_db_count(db, U8("z"), 1, &n));
  assert_int_equal(n, 0);
  OK(immu_db_count_all(db, &n));
  assert_int_equal(n, 5);
}

/* ------------------------------------------------------------------ */
/* Sorted sets                                                         */
/* ------------------------------------------------------------------ */

static immu_db_zscan_req zreq(const char *set) {
  immu_db_zscan_req r;
  memset(&r, 0, sizeof r);
  r.set = U8(set);
  r.set_len = strlen(set);
  return r;
}

/* ZScan must return the members in |want|: "key@score" space separated. */
static void expect_zscan(immu_db *db, const immu_db_zscan_req *r,
                         const char *want) {
  immu_db_zentries l;
  char got[1024] = "";
  size_t o = 0;
  OK(immu_db_zscan(db, r, &l));
  for (size_t i = 0; i < l.n; i++) {
    const immu_db_zentry *z = &l.v[i];
    assert_int_equal(z->set_len, r->set_len);
    assert_memory_equal(z->set, r->set, r->set_len);
    o += (size_t)snprintf(got + o, sizeof got - o, "%s%.*s@%g", i ? " " : "",
                          (int)z->key_len, (const char *)z->key, z->score);
  }
  immu_db_zentries_clear(&l);
  if (strcmp(got, want) != 0)
    fail_msg("zscan gave \"%s\", want \"%s\"", got, want);
}

static void test_zset(void **state) {
  fixture *fx = *state;
  immu_db *db = fx->db;
  immu_db_zscan_req r;
  immu_db_zentries l;

  uint64_t t1 = put(db, "k1", "one");
  put(db, "k2", "two");
  put(db, "k3", "three");
  put(db, "k4", "four");
  zadd(db, "s", 2.5, "k1", 0);
  zadd(db, "s", -10.5, "k2", 0);
  zadd(db, "s", -1, "k3", 0);
  zadd(db, "s", 0, "k4", 0);
  zadd(db, "s", 100, "k1", 0); /* the same key at another score */
  zadd(db, "s", -1, "k1", t1); /* bound: k1 as of t1 */
  zadd(db, "s2", 1, "k1", 0);  /* another set */
  zadd(db, "s", 2.5, "k1", 0); /* re-adding a member: still one */
  uint64_t t5 = put(db, "k1", "uno");

  r = zreq("s");
  /* ties on score order by key, then atTx (0 before t1) */
  {
    immu_db_zentries z;
    OK(immu_db_zscan(db, &r, &z));
    assert_int_equal(z.n, 6);
    const char *keys[] = {"k2", "k1", "k3", "k4", "k1", "k1"};
    const double scores[] = {-10.5, -1, -1, 0, 2.5, 100};
    for (size_t i = 0; i < 6; i++) {
      assert_bytes(z.v[i].key, z.v[i].key_len, keys[i]);
      assert_true(z.v[i].score == scores[i]);
      assert_bytes(z.v[i].set, z.v[i].set_len, "s");
    }
    /* the bound member shows k1 at t1, the others its latest value */
    assert_int_equal(z.v[1].at_tx, t1);
    assert_bytes(z.v[1].entry.value, z.v[1].entry.value_len, "one");
    assert_int_equal(z.v[1].entry.tx, t1);
    assert_int_equal(z.v[4].at_tx, 0);
    assert_bytes(z.v[4].entry.value, z.v[4].entry.value_len, "uno");
    assert_int_equal(z.v[4].entry.tx, t5);
    assert_bytes(z.v[4].entry.key, z.v[4].entry.key_len, "k1");
    immu_db_zentries_clear(&z);
  }
  r.desc = 1;
  {
    immu_db_zentries z;
    OK(immu_db_zscan(db, &r, &z));
    assert_int_equal(z.n, 6);
    assert_true(z.v[0].score == 100);
    assert_true(z.v[5].score == -10.5);
    immu_db_zentries_clear(&z);
  }

  /* score bounds, with negatives */
  r = zreq("s");
  r.has_min_score = 1;
  r.min_score = -5;
  r.has_max_score = 1;
  r.max_score = 2.5;
  {
    immu_db_zentries z;
    OK(immu_db_zscan(db, &r, &z));
    assert_int_equal(z.n, 4);
    assert_true(z.v[0].score == -1 && z.v[3].score == 2.5);
    immu_db_zentries_clear(&z);
  }
  r.desc = 1;
  r.max_score = -1;
  r.min_score = -11;
  {
    immu_db_zentries z;
    OK(immu_db_zscan(db, &r, &z));
    assert_int_equal(z.n, 3);
    assert_true(z.v[0].score == -1 && z.v[2].score == -10.5);
    immu_db_zentries_clear(&z);
  }
  r.min_score = 5; /* empty range */
  {
    immu_db_zentries z;
    OK(immu_db_zscan(db, &r, &z));
    assert_int_equal(z.n, 0);
    immu_db_zentries_clear(&z);
  }

  /* limit and offset */
  r = zreq("s");
  r.limit = 2;
  r.offset = 1;
  {
    immu_db_zentries z;
    OK(immu_db_zscan(db, &r, &z));
    assert_int_equal(z.n, 2);
    assert_true(z.v[0].score == -1 && z.v[1].score == -1);
    assert_int_equal(z.v[0].at_tx, t1);
    immu_db_zentries_clear(&z);
  }

  /* seek: exclusive by default, inclusive on request; both directions */
  r = zreq("s");
  r.seek_key = U8("k3");
  r.seek_key_len = 2;
  r.seek_score = -1;
  {
    immu_db_zentries z;
    OK(immu_db_zscan(db, &r, &z));
    assert_int_equal(z.n, 3);
    assert_bytes(z.v[0].key, z.v[0].key_len, "k4");
    immu_db_zentries_clear(&z);
    r.inclusive_seek = 1;
    OK(immu_db_zscan(db, &r, &z));
    assert_int_equal(z.n, 4);
    assert_bytes(z.v[0].key, z.v[0].key_len, "k3");
    assert_true(z.v[0].score == -1);
    immu_db_zentries_clear(&z);
    r.desc = 1;
    OK(immu_db_zscan(db, &r, &z));
    assert_int_equal(z.n, 3);
    assert_bytes(z.v[0].key, z.v[0].key_len, "k3");
    assert_bytes(z.v[1].key, z.v[1].key_len, "k1");
    assert_bytes(z.v[2].key, z.v[2].key_len, "k2");
    immu_db_zentries_clear(&z);
    r.inclusive_seek = 0;
    OK(immu_db_zscan(db, &r, &z));
    assert_int_equal(z.n, 2);
    immu_db_zentries_clear(&z);
    /* seek on the bound member (score -1, k1, atTx t1) */
    r = zreq("s");
    r.seek_key = U8("k1");
    r.seek_key_len = 2;
    r.seek_score = -1;
    r.seek_at_tx = t1;
    r.inclusive_seek = 1;
    r.limit = 1;
    OK(immu_db_zscan(db, &r, &z));
    assert_int_equal(z.n, 1);
    assert_int_equal(z.v[0].at_tx, t1);
    immu_db_zentries_clear(&z);
    /* an inclusive seek on a member that does not exist */
    r.seek_at_tx = 0;
    r.limit = 0;
    OK(immu_db_zscan(db, &r, &z));
    assert_int_equal(z.n, 5);
    assert_int_equal(z.v[0].at_tx, t1);
    immu_db_zentries_clear(&z);
    /* an inclusive seek member outside the score bounds is not returned */
    r = zreq("s");
    r.seek_key = U8("k2");
    r.seek_key_len = 2;
    r.seek_score = -10.5;
    r.inclusive_seek = 1;
    r.has_min_score = 1;
    r.min_score = -2;
    OK(immu_db_zscan(db, &r, &z));
    assert_int_equal(z.n, 5);
    immu_db_zentries_clear(&z);
  }

  r = zreq("s2");
  expect_zscan(db, &r, "k1@1");
  r = zreq("none");
  expect_zscan(db, &r, "");

  /* errors */
  r = zreq("");
  assert_rc(immu_db_zscan(db, &r, &l), IMMU_EINVAL);
  r = zreq("s");
  r.seek_at_tx = 1;
  assert_rc(immu_db_zscan(db, &r, &l), IMMU_EINVAL);
  assert_msg("seekKey");
  r = zreq("s");
  r.limit = 5000;
  assert_rc(immu_db_zscan(db, &r, &l), IMMU_ETOOLARGE);
  r = zreq("s");
  r.has_min_score = 1;
  r.min_score = NAN;
  assert_rc(immu_db_zscan(db, &r, &l), IMMU_EINVAL);
  r = zreq("s");
  r.since_tx = last_tx(db) + 1;
  assert_rc(immu_db_zscan(db, &r, &l), IMMU_EINVAL);
  {
    immu_db_zadd_req z = {U8("s"), 1, 1.0, U8("ghost"), 5, 0, 0, 0};
    assert_rc(immu_db_zadd(db, &z, NULL), IMMU_ENOTFOUND);
    z.key = U8("k2");
    z.key_len = 2;
    z.at_tx = t1; /* k2 was not written in t1 */
    z.bound_ref = 1;
    assert_rc(immu_db_zadd(db, &z, NULL), IMMU_ENOTFOUND);
    z.bound_ref = 0;
    assert_rc(immu_db_zadd(db, &z, NULL), IMMU_EINVAL);
    z.at_tx = 0;
    z.bound_ref = 1;
    assert_rc(immu_db_zadd(db, &z, NULL), IMMU_EINVAL);
    z.bound_ref = 0;
    z.score = NAN;
    assert_rc(immu_db_zadd(db, &z, NULL), IMMU_EINVAL);
    z.score = 1;
    z.set_len = 0;
    assert_rc(immu_db_zadd(db, &z, NULL), IMMU_EINVAL);
    z.set_len = 1;
    z.key_len = 0;
    assert_rc(immu_db_zadd(db, &z, NULL), IMMU_EINVAL);
    /* a reference cannot be a member */
    ref(db, "zr", "k2", 0);
    z.key = U8("zr");
    z.key_len = 2;
    assert_rc(immu_db_zadd(db, &z, NULL), IMMU_ECONFLICT);
    assert_msg("referenced key cannot be a reference");
  }
}

/* ------------------------------------------------------------------ */
/* ExecAll                                                             */
/* ------------------------------------------------------------------ */

static void test_exec_all(void **state) {
  fixture *fx = *state;
  immu_db *db = fx->db;
  immu_tx_header h;
  immu_db_entry e;
  immu_db_key_req q;

  uint64_t t0 = put(db, "old", "o");
  immu_db_op ops[6];
  memset(ops, 0, sizeof ops);
  ops[0].kind = IMMU_DB_OP_KV;
  ops[0].u.kv = KV("ek", "v1");
  /* bound to this very tx (atTx = 0 + boundRef) */
  ops[1].kind = IMMU_DB_OP_REF;
  ops[1].u.ref = (immu_db_ref_req){U8("eref"), 4, U8("ek"), 2, 0, 1, 0};
  /* unbound, to a key of this tx */
  ops[2].kind = IMMU_DB_OP_REF;
  ops[2].u.ref = (immu_db_ref_req){U8("eref2"), 5, U8("ek"), 2, 0, 0, 0};
  ops[3].kind = IMMU_DB_OP_ZADD;
  ops[3].u.zadd = (immu_db_zadd_req){U8("es"), 2, -3.5, U8("ek"), 2, 0, 1, 0};
  ops[4].kind = IMMU_DB_OP_ZADD;
  ops[4].u.zadd = (immu_db_zadd_req){U8("es"), 2, 7, U8("old"), 3, t0, 1, 0};
  /* the same member unbound: distinct from the bound one after binding */
  ops[5].kind = IMMU_DB_OP_ZADD;
  ops[5].u.zadd = (immu_db_zadd_req){U8("es"), 2, -3.5, U8("ek"), 2, 0, 0, 0};
  OK(immu_db_exec_all(db, ops, 6, 0, &h));
  uint64_t tx = h.id;
  assert_int_equal(h.nentries, 6);

  /* the bound reference carries the tx's own id */
  {
    immu_db_tx t;
    uint8_t want[12];
    OK(immu_db_tx_by_id(db, tx, &t));
    assert_int_equal(t.nentries, 6);
    assert_int_equal(t.entries[1].value_len, 12);
    OK(immu_enc_ref_value(U8("ek"), 2, tx, want, sizeof want, &(size_t){0}));
    assert_memory_equal(t.entries[1].value, want, 12);
    /* ZAdd key ends with u64(atTx) = tx */
    assert_int_equal(immu__get_u64(t.entries[3].key + t.entries[3].key_len - 8),
                     tx);
    assert_int_equal(immu__get_u64(t.entries[5].key + t.entries[5].key_len - 8),
                     0);
    assert_int_equal(t.entries[3].value_len, 0);
    immu_db_tx_clear(&t);
  }

  uint64_t t2 = put(db, "ek", "v2");
  q = kreq("eref");
  OK(immu_db_get(db, &q, &e));
  assert_bytes(e.value, e.value_len, "v1"); /* bound */
  assert_int_equal(e.tx, tx);
  assert_int_equal(e.referenced_by.at_tx, tx);
  immu_db_entry_clear(&e);
  q = kreq("eref2");
  expect_get(db, &q, "ek", "v2", t2); /* unbound */

  {
    immu_db_zscan_req r = zreq("es");
    immu_db_zentries z;
    OK(immu_db_zscan(db, &r, &z));
    assert_int_equal(z.n, 3);
    assert_int_equal(z.v[0].at_tx, 0);
    assert_bytes(z.v[0].entry.value, z.v[0].entry.value_len, "v2");
    assert_int_equal(z.v[1].at_tx, tx);
    assert_bytes(z.v[1].entry.value, z.v[1].entry.value_len, "v1");
    assert_true(z.v[2].score == 7);
    assert_bytes(z.v[2].entry.value, z.v[2].entry.value_len, "o");
    immu_db_zentries_clear(&z);
  }

  /* failures commit nothing */
  uint64_t before = last_tx(db);
  {
    immu_db_op b[2];
    memset(b, 0, sizeof b);
    /* bound to this tx, but the tx does not write the target */
    b[0].kind = IMMU_DB_OP_KV;
    b[0].u.kv = KV("n1", "x");
    b[1].kind = IMMU_DB_OP_REF;
    b[1].u.ref = (immu_db_ref_req){U8("nr"), 2, U8("old"), 3, 0, 1, 0};
    assert_rc(immu_db_exec_all(db, b, 2, 0, NULL), IMMU_ENOTFOUND);
    b[1].kind = IMMU_DB_OP_ZADD;
    b[1].u.zadd = (immu_db_zadd_req){U8("s"), 1, 1, U8("old"), 3, 0, 1, 0};
    assert_rc(immu_db_exec_all(db, b, 2, 0, NULL), IMMU_ENOTFOUND);
    /* a reference to a reference of the same tx */
    b[0].kind = IMMU_DB_OP_REF;
    b[0].u.ref = (immu_db_ref_req){U8("nr1"), 3, U8("old"), 3, 0, 0, 0};
    b[1].kind = IMMU_DB_OP_REF;
    b[1].u.ref = (immu_db_ref_req){U8("nr2"), 3, U8("nr1"), 3, 0, 0, 0};
    assert_rc(immu_db_exec_all(db, b, 2, 0, NULL), IMMU_ECONFLICT);
    /* ZAdd of a reference of the same tx */
    b[1].kind = IMMU_DB_OP_ZADD;
    b[1].u.zadd = (immu_db_zadd_req){U8("s"), 1, 1, U8("nr1"), 3, 0, 0, 0};
    assert_rc(immu_db_exec_all(db, b, 2, 0, NULL), IMMU_ECONFLICT);
    /* a reference over a plain key */
    b[0].kind = IMMU_DB_OP_KV;
    b[0].u.kv = KV("n1", "x");
    b[1].kind = IMMU_DB_OP_REF;
    b[1].u.ref = (immu_db_ref_req){U8("old"), 3, U8("ek"), 2, 0, 0, 0};
    assert_rc(immu_db_exec_all(db, b, 2, 0, NULL), IMMU_EEXIST);
    /* atTx without boundRef */
    b[1].u.ref = (immu_db_ref_req){U8("nr3"), 3, U8("ek"), 2, t2, 0, 0};
    assert_rc(immu_db_exec_all(db, b, 2, 0, NULL), IMMU_EINVAL);
    /* a missing target */
    b[1].u.ref = (immu_db_ref_req){U8("nr3"), 3, U8("ghost"), 5, 0, 0, 0};
    assert_rc(immu_db_exec_all(db, b, 2, 0, NULL), IMMU_ENOTFOUND);
    /* duplicate keys */
    b[0].kind = IMMU_DB_OP_KV;
    b[0].u.kv = KV("dup", "1");
    b[1].kind = IMMU_DB_OP_KV;
    b[1].u.kv = KV("dup", "2");
    assert_rc(immu_db_exec_all(db, b, 2, 0, NULL), IMMU_EINVAL);
    assert_msg("duplicated key");
    /* an empty key, an unknown kind, no ops */
    b[1].u.kv = KV("", "2");
    assert_rc(immu_db_exec_all(db, b, 2, 0, NULL), IMMU_EINVAL);
    b[1].kind = 42;
    assert_rc(immu_db_exec_all(db, b, 2, 0, NULL), IMMU_EINVAL);
    assert_rc(immu_db_exec_all(db, b, 0, 0, NULL), IMMU_EINVAL);
    /* a bound ZAdd that collides with an explicit one once bound */
    b[0].kind = IMMU_DB_OP_ZADD;
    b[0].u.zadd =
        (immu_db_zadd_req){U8("c"), 1, 1, U8("ek"), 2, last_tx(db) + 1, 1, 0};
    b[1].kind = IMMU_DB_OP_ZADD;
    b[1].u.zadd = (immu_db_zadd_req){U8("c"), 1, 1, U8("ek"), 2, 0, 1, 0};
    immu_db_op c3[3];
    c3[0] = (immu_db_op){IMMU_DB_OP_KV, {.kv = KV("ek", "v3")}};
    c3[1] = b[1];
    c3[2] = b[0]; /* atTx = the next tx id, which does not exist yet */
    assert_rc(immu_db_exec_all(db, c3, 3, 0, NULL), IMMU_ENOTFOUND);
    assert_msg("tx not found");
  }
  assert_int_equal(last_tx(db), before);

  /* an unbound ZAdd of a key written in the same tx */
  {
    immu_db_op b[2];
    memset(b, 0, sizeof b);
    b[0].kind = IMMU_DB_OP_ZADD;
    b[0].u.zadd = (immu_db_zadd_req){U8("late"), 4, 1, U8("fresh"), 5, 0, 0, 0};
    b[1].kind = IMMU_DB_OP_KV;
    b[1].u.kv = KV("fresh", "f");
    OK(immu_db_exec_all(db, b, 2, 1, &h));
    immu_db_zscan_req r = zreq("late");
    r.since_tx = h.id;
    expect_zscan(db, &r, "fresh@1");
  }
}

/* ------------------------------------------------------------------ */
/* Transactions                                                        */
/* ------------------------------------------------------------------ */

static void test_tx(void **state) {
  fixture *fx = *state;
  immu_db *db = fx->db;
  immu_db_kv kvs[2] = {KV("t1", "a"), KV("t2", "bb")};
  immu_tx_header h;
  immu_db_tx t;
  immu_db_tx_list l;
  immu_digest d[4];

  OK(immu_db_set(db, kvs, 2, 0, &h));
  for (int i = 0; i < 9; i++)
    put(db, "more", "x");
  OK(immu_db_tx_by_id(db, h.id, &t));
  check_tx(&t, d);
  assert_int_equal(t.header.id, h.id);
  assert_int_equal(t.nentries, 2);
  {
    uint8_t k[3] = {0x00, 't', '2'}, v[3] = {0x00, 'b', 'b'};
    assert_int_equal(t.entries[1].key_len, 3);
    assert_memory_equal(t.entries[1].key, k, 3);
    assert_int_equal(t.entries[1].value_len, 3);
    assert_memory_equal(t.entries[1].value, v, 3);
    assert_int_equal(t.entries[1].md_len, 0);
  }
  immu_db_tx_clear(&t);
  immu_db_tx_clear(&t);

  assert_rc(immu_db_tx_by_id(db, 0, &t), IMMU_EINVAL);
  assert_rc(immu_db_tx_by_id(db, 11, &t), IMMU_ENOTFOUND);
  assert_msg("tx not found");

  immu_db_tx_scan_req r = {0, 3, 0};
  OK(immu_db_tx_scan(db, &r, &l));
  assert_int_equal(l.n, 3);
  for (size_t i = 0; i < 3; i++)
    assert_int_equal(l.v[i].header.id, i + 1);
  immu_db_tx_list_clear(&l);
  r = (immu_db_tx_scan_req){8, 0, 0};
  OK(immu_db_tx_scan(db, &r, &l));
  assert_int_equal(l.n, 3);
  assert_int_equal(l.v[2].header.id, 10);
  immu_db_tx_list_clear(&l);
  r = (immu_db_tx_scan_req){0, 4, 1};
  OK(immu_db_tx_scan(db, &r, &l));
  assert_int_equal(l.n, 4);
  assert_int_equal(l.v[0].header.id, 10);
  assert_int_equal(l.v[3].header.id, 7);
  immu_db_tx_list_clear(&l);
  r = (immu_db_tx_scan_req){2, 0, 1};
  OK(immu_db_tx_scan(db, &r, &l));
  assert_int_equal(l.n, 2);
  assert_int_equal(l.v[1].header.id, 1);
  immu_db_tx_list_clear(&l);
  r = (immu_db_tx_scan_req){99, 0, 0};
  OK(immu_db_tx_scan(db, &r, &l));
  assert_int_equal(l.n, 0);
  immu_db_tx_list_clear(&l);
  r = (immu_db_tx_scan_req){99, 2, 1};
  OK(immu_db_tx_scan(db, &r, &l));
  assert_int_equal(l.n, 2);
  assert_int_equal(l.v[0].header.id, 10);
  immu_db_tx_list_clear(&l);
  r = (immu_db_tx_scan_req){1, 1001, 0};
  assert_rc(immu_db_tx_scan(db, &r, &l), IMMU_ETOOLARGE);
}

/* ------------------------------------------------------------------ */
/* Verifiable calls                                                    */
/* ------------------------------------------------------------------ */

/* The expected stored bytes of a plain KV. */
static void enc_kv(const char *k, const char *v, uint8_t *kb, size_t *kn,
                   uint8_t *vb, size_t *vn) {
  OK(immu_enc_key(U8(k), strlen(k), kb, 256, kn));
  OK(immu_enc_value(U8(v), strlen(v), vb, 256, vn));
}

static void test_verifiable_set(void **state) {
  fixture *fx = *state;
  immu_db *db = fx->db;
  immu_db_verifiable_tx vt;
  cstate st = {0, immu_empty_digest};
  uint8_t kb[256], vb[256];
  size_t kn, vn;
  char k[32], v[32];

  /* trust on first use: empty state, proveSinceTx = 0 */
  {
    immu_db_kv kv = KV("vs0", "first");
    OK(immu_db_verifiable_set(db, &kv, 1, 0, 0, &vt));
    enc_kv("vs0", "first", kb, &kn, vb, &vn);
    verify_written(&st, &vt, kb, kn, vb, vn);
    assert_int_equal(st.id, 1);
    immu_db_verifiable_tx_clear(&vt);
  }
  /* a state advanced across many txs, with unverified txs in between */
  for (int i = 1; i <= 40; i++) {
    for (int j = 0; j < i % 4; j++)
      put(db, "filler", "f");
    snprintf(k, sizeof k, "vs%d", i);
    snprintf(v, sizeof v, "value-%d", i);
    immu_db_kv kvs[3] = {KV("other1", "x"), KV(k, v), KV("other2", "y")};
    size_t n = (size_t)(i % 3) + 1;
    immu_db_kv *p = n == 1 ? &kvs[1] : kvs;
    OK(immu_db_verifiable_set(db, p, n, 0, st.id, &vt));
    enc_kv(k, v, kb, &kn, vb, &vn);
    verify_written(&st, &vt, kb, kn, vb, vn);
    assert_int_equal(st.id, last_tx(db));
    immu_db_verifiable_tx_clear(&vt);
  }
  /* a proof from far back (source tx 1) */
  {
    cstate old = trusted_at(db, 1);
    immu_db_kv kv = KV("far", "away");
    OK(immu_db_verifiable_set(db, &kv, 1, 0, 1, &vt));
    enc_kv("far", "away", kb, &kn, vb, &vn);
    verify_written(&old, &vt, kb, kn, vb, vn);

    /* tampering is detected */
    immu_digest talh, bad = old.alh;
    alh_of(&vt.proof.target, &talh);
    bad.b[0] ^= 1;
    assert_rc(
        immu_dual_proof_verify(&vt.proof, 1, vt.tx.header.id, &bad, &talh),
        IMMU_EVERIFY);
    if (vt.proof.inclusion.n > 0) {
      vt.proof.inclusion.d[0].b[5] ^= 0x80;
      OK(immu_tx_alh(&vt.tx.header, &talh));
      {
        immu_tx_header src;
        immu_digest salh;
        OK(immu_store_read_header(immu_db_store(db), 1, &src, &salh));
        assert_rc(
            immu_dual_proof_verify(&vt.proof, 1, vt.tx.header.id, &salh, &talh),
            IMMU_EVERIFY);
      }
    }
    immu_db_verifiable_tx_clear(&vt);
  }
  /* proveSinceTx beyond the last tx: "illegal state", nothing written */
  {
    uint64_t before = last_tx(db);
    immu_db_kv kv = KV("no", "no");
    assert_rc(immu_db_verifiable_set(db, &kv, 1, 0, before + 1, &vt),
              IMMU_EINVAL);
    assert_msg("illegal state");
    assert_int_equal(last_tx(db), before);
    immu_db_verifiable_tx_clear(&vt);
  }
}

static void test_verifiable_get(void **state) {
  fixture *fx = *state;
  immu_db *db = fx->db;
  immu_db_verifiable_entry ve;
  immu_db_key_req q;
  cstate st = {0, immu_empty_digest};

  /* a multi-entry tx so the leaf is not trivially 0 */
  for (int i = 0; i < 5; i++)
    put(db, "pre", "p");
  immu_db_kv kvs[5] = {KV("g0", "a"), KV("g1", "b"), KV("g2", "c"),
                       KV("g3", "d"), KV("g4", "e")};
  immu_tx_header h;
  OK(immu_db_set(db, kvs, 5, 0, &h));
  uint64_t tg = h.id;
  for (int i = 0; i < 20; i++)
    put(db, "post", "p");

  /* empty state: the entry's tx is source and target */
  q = kreq("g3");
  OK(immu_db_verifiable_get(db, &q, 0, &ve));
  assert_int_equal(ve.inclusion.leaf, 3);
  assert_int_equal(ve.inclusion.width, 5);
  assert_int_equal(ve.vtx.proof.source.id, tg);
  assert_int_equal(ve.vtx.proof.target.id, tg);
  verify_get(&st, &ve, "g3");
  assert_int_equal(st.id, tg);
  immu_db_verifiable_entry_clear(&ve);

  /* proveSinceTx below the entry's tx */
  {
    cstate s2;
    immu_db_tx t;
    OK(immu_db_tx_by_id(db, 2, &t));
    s2 = (cstate){2, t.alh};
    immu_db_tx_clear(&t);
    q = kreq("g1");
    OK(immu_db_verifiable_get(db, &q, 2, &ve));
    assert_int_equal(ve.vtx.proof.source.id, 2);
    assert_int_equal(ve.vtx.proof.target.id, tg);
    verify_get(&s2, &ve, "g1");
    assert_int_equal(s2.id, tg);
    immu_db_verifiable_entry_clear(&ve);
  }
  /* proveSinceTx equal to the entry's tx */
  q = kreq("g4");
  OK(immu_db_verifiable_get(db, &q, st.id, &ve));
  verify_get(&st, &ve, "g4");
  immu_db_verifiable_entry_clear(&ve);

  /* a newer state: the entry's tx becomes the source */
  {
    cstate s3;
    uint64_t last = last_tx(db);
    immu_db_tx t;
    OK(immu_db_tx_by_id(db, last, &t));
    s3 = (cstate){last, t.alh};
    immu_db_tx_clear(&t);
    q = kreq("g0");
    OK(immu_db_verifiable_get(db, &q, last, &ve));
    assert_int_equal(ve.vtx.proof.source.id, tg);
    assert_int_equal(ve.vtx.proof.target.id, last);
    assert_int_equal(ve.vtx.tx.header.id, tg);
    verify_get(&s3, &ve, "g0");
    assert_int_equal(s3.id, last); /* the state does not go back */
    /* tampering with the entry is detected */
    {
      immu_digest bad, hv;
      uint8_t k[3] = {0, 'g', '0'}, v[2] = {0, 'X'};
      immu_sha256(v, 2, &hv);
      OK(immu_entry_digest(ve.vtx.tx.header.version, k, 3, NULL, 0, &hv, &bad));
      assert_rc(immu_htree_verify(ve.inclusion.terms, ve.inclusion.nterms,
                                  ve.inclusion.leaf, ve.inclusion.width, &bad,
                                  &ve.vtx.proof.source.eh),
                IMMU_EVERIFY);
    }
    immu_db_verifiable_entry_clear(&ve);

    /* a state advanced step by step, verified at every step */
    cstate s4 = {0, immu_empty_digest};
    for (uint64_t since = 0; since <= last; since += 3) {
      if (since > 0) {
        OK(immu_db_tx_by_id(db, since, &t));
        s4 = (cstate){since, t.alh};
        immu_db_tx_clear(&t);
      }
      q = kreq("g2");
      OK(immu_db_verifiable_get(db, &q, since, &ve));
      verify_get(&s4, &ve, "g2");
      immu_db_verifiable_entry_clear(&ve);
    }
  }

  /* with atTx */
  {
    uint64_t t2 = put(db, "g2", "c2");
    cstate s = st;
    q = kreq("g2");
    q.at_tx = tg;
    OK(immu_db_verifiable_get(db, &q, s.id, &ve));
    assert_bytes(ve.entry.value, ve.entry.value_len, "c");
    verify_get(&s, &ve, "g2");
    immu_db_verifiable_entry_clear(&ve);
    q.at_tx = 0;
    OK(immu_db_verifiable_get(db, &q, s.id, &ve));
    assert_bytes(ve.entry.value, ve.entry.value_len, "c2");
    assert_int_equal(ve.vtx.tx.header.id, t2);
    verify_get(&s, &ve, "g2");
    assert_int_equal(s.id, t2);
    immu_db_verifiable_entry_clear(&ve);
  }

  /* a reference: the reference entry is what gets proven */
  {
    uint64_t tr = ref(db, "gref", "g1", tg);
    for (int i = 0; i < 3; i++)
      put(db, "post", "p");
    cstate s = st;
    q = kreq("gref");
    OK(immu_db_verifiable_get(db, &q, s.id, &ve));
    assert_true(ve.entry.has_referenced_by);
    assert_int_equal(ve.entry.tx, tg);
    assert_int_equal(ve.entry.referenced_by.tx, tr);
    assert_int_equal(ve.vtx.tx.header.id, tr);
    assert_bytes(ve.entry.value, ve.entry.value_len, "b");
    verify_get(&s, &ve, "gref");
    assert_int_equal(s.id, tr);
    immu_db_verifiable_entry_clear(&ve);
    /* and from a newer state */
    uint64_t last = last_tx(db);
    immu_db_tx t;
    OK(immu_db_tx_by_id(db, last, &t));
    s = (cstate){last, t.alh};
    immu_db_tx_clear(&t);
    OK(immu_db_verifiable_get(db, &q, last, &ve));
    verify_get(&s, &ve, "gref");
    immu_db_verifiable_entry_clear(&ve);
    /* an unbound one */
    ref(db, "gref2", "g1", 0);
    q = kreq("gref2");
    OK(immu_db_verifiable_get(db, &q, 0, &ve));
    cstate s0 = {0, immu_empty_digest};
    verify_get(&s0, &ve, "gref2");
    immu_db_verifiable_entry_clear(&ve);
  }

  /* errors */
  q = kreq("g1");
  assert_rc(immu_db_verifiable_get(db, &q, last_tx(db) + 1, &ve), IMMU_EINVAL);
  assert_msg("illegal state");
  q = kreq("missing");
  assert_rc(immu_db_verifiable_get(db, &q, 0, &ve), IMMU_ENOTFOUND);
  assert_msg("key not found");
  immu_db_verifiable_entry_clear(&ve);
}

static void test_verifiable_tx_ref_zadd(void **state) {
  fixture *fx = *state;
  immu_db *db = fx->db;
  immu_db_verifiable_tx vt;
  cstate st = {0, immu_empty_digest};
  uint8_t kb[256], vb[256];
  size_t kn, vn;

  uint64_t t1 = put(db, "base", "b0");
  for (int i = 0; i < 7; i++)
    put(db, "x", "y");

  /* VerifiableTxById with proveSinceTx 0, below and above */
  OK(immu_db_verifiable_tx_by_id(db, 5, 0, &vt));
  verify_tx_by_id(&st, &vt);
  assert_int_equal(st.id, 5);
  immu_db_verifiable_tx_clear(&vt);
  OK(immu_db_verifiable_tx_by_id(db, 7, st.id, &vt));
  verify_tx_by_id(&st, &vt);
  assert_int_equal(st.id, 7);
  immu_db_verifiable_tx_clear(&vt);
  OK(immu_db_verifiable_tx_by_id(db, 3, st.id, &vt));
  assert_int_equal(vt.proof.source.id, 3);
  assert_int_equal(vt.proof.target.id, 7);
  verify_tx_by_id(&st, &vt);
  assert_int_equal(st.id, 7);
  immu_db_verifiable_tx_clear(&vt);
  assert_rc(immu_db_verifiable_tx_by_id(db, 99, 0, &vt), IMMU_ENOTFOUND);
  assert_rc(immu_db_verifiable_tx_by_id(db, 1, 99, &vt), IMMU_EINVAL);
  assert_msg("illegal state");

  /* VerifiableSetReference: the digest of EncodeReference(k, ref, atTx) */
  {
    immu_db_ref_req r = {U8("vr"), 2, U8("base"), 4, t1, 1, 0};
    OK(immu_db_verifiable_set_reference(db, &r, st.id, &vt));
    OK(immu_enc_key(U8("vr"), 2, kb, sizeof kb, &kn));
    OK(immu_enc_ref_value(U8("base"), 4, t1, vb, sizeof vb, &vn));
    verify_written(&st, &vt, kb, kn, vb, vn);
    immu_db_verifiable_tx_clear(&vt);
    r.key = U8("vr0");
    r.key_len = 3;
    r.at_tx = 0;
    r.bound_ref = 0;
    OK(immu_db_verifiable_set_reference(db, &r, 0, &vt));
    OK(immu_enc_key(U8("vr0"), 3, kb, sizeof kb, &kn));
    OK(immu_enc_ref_value(U8("base"), 4, 0, vb, sizeof vb, &vn));
    cstate s0 = {0, immu_empty_digest};
    verify_written(&s0, &vt, kb, kn, vb, vn);
    immu_db_verifiable_tx_clear(&vt);
    /* errors of the plain call come through */
    r.key = U8("base");
    r.key_len = 4;
    assert_rc(immu_db_verifiable_set_reference(db, &r, 0, &vt), IMMU_EEXIST);
    assert_rc(immu_db_verifiable_set_reference(db, &r, 999, &vt), IMMU_EINVAL);
  }
  /* VerifiableZAdd: key EncodeZAdd(set, score, EncodeKey(k), atTx), value
   * empty */
  {
    const double scores[] = {-7.25, 0, 42};
    for (int i = 0; i < 3; i++) {
      uint64_t at = i == 2 ? t1 : 0;
      immu_db_zadd_req z = {U8("vz"), 2,  scores[i], U8("base"),
                            4,        at, at > 0,    0};
      OK(immu_db_verifiable_zadd(db, &z, st.id, &vt));
      OK(immu_enc_zadd_key(U8("vz"), 2, scores[i], U8("base"), 4, at, kb,
                           sizeof kb, &kn));
      /* Spec 7.2: 1+8+len(set)+8+8+1+len(key)+8. */
      assert_int_equal(kn, 1 + 8 + 2 + 8 + 8 + 1 + 4 + 8);
      verify_written(&st, &vt, kb, kn, NULL, 0);
      immu_db_verifiable_tx_clear(&vt);
    }
    immu_db_zadd_req z = {U8("vz"), 2, 1, U8("ghost"), 5, 0, 0, 0};
    assert_rc(immu_db_verifiable_zadd(db, &z, st.id, &vt), IMMU_ENOTFOUND);
    immu_db_zscan_req r = zreq("vz");
    expect_zscan(db, &r, "base@-7.25 base@0 base@42");
  }
  assert_int_equal(st.id, last_tx(db));
}

/* ------------------------------------------------------------------ */
/* Allocation failures                                                 */
/* ------------------------------------------------------------------ */

/* Runs |call| with the i-th allocation failing, for i = 0, 1, ... until it
 * succeeds; every failure must be a clean IMMU_ENOMEM (ASan checks that
 * nothing leaks), |cleanup| runs after every attempt and |check| after the
 * successful one. */
#define OOM_LOOP(call, check, cleanup)                                         \
  do {                                                                         \
    for (long i_ = 0;; i_++) {                                                 \
      immu__mem_fail_after(i_, 0);                                             \
      int rc_ = (call);                                                        \
      immu__mem_fail_after(-1, 0);                                             \
      if (rc_ == 0) {                                                          \
        check;                                                                 \
        cleanup;                                                               \
        break;                                                                 \
      }                                                                        \
      cleanup;                                                                 \
      if (rc_ != IMMU_ENOMEM)                                                  \
        fail_msg("%s with allocation %ld failing: %s (%s)", #call, i_,         \
                 immu_err_name(rc_), immu_db_last_error());                    \
      if (i_ > 5000)                                                           \
        fail_msg("%s never succeeds", #call);                                  \
    }                                                                          \
  } while (0)

/* verify_get from the state at tx |since|. */
static void verify_get_from(immu_db *db, uint64_t since,
                            const immu_db_verifiable_entry *ve,
                            const char *key) {
  immu_db_tx t;
  cstate s = {0, immu_empty_digest};
  if (since > 0) {
    OK(immu_db_tx_by_id(db, since, &t));
    s = (cstate){since, t.alh};
    immu_db_tx_clear(&t);
  }
  verify_get(&s, ve, key);
}

static void test_oom(void **state) {
  fixture *fx = *state;
  immu_store_options so;
  immu_db *db;
  char dir[600];
  immu_db_entry e;
  immu_db_entries l;
  immu_db_zentries z;
  immu_db_tx t;
  immu_db_tx_list tl;
  immu_db_verifiable_entry ve;
  immu_db_verifiable_tx vt;
  immu_db_key_req q;
  uint64_t n;

  /* synced, no timed checkpoints: the engine's threads stay idle */
  snprintf(dir, sizeof dir, "%s/oom", fx->dir);
  immu_store_options_init(&so);
  so.checkpoint_ms = 3600u * 1000u;
  db = open_db_opts(dir, &so);
  uint64_t t1 = put(db, "o1", "one");
  put(db, "o2", "two");
  put(db, "o1", "uno");
  ref(db, "or", "o1", t1);
  ref(db, "ou", "o2", 0);
  zadd(db, "os", -1, "o1", t1);
  zadd(db, "os", 2, "o2", 0);
  {
    char big[600];
    memset(big, 'b', sizeof big - 1);
    big[sizeof big - 1] = 0;
    put(db, "obig", big); /* not inlined in the index */
  }
  expect_latest(db, "o1", "uno", 0); /* index caught up */

  q = kreq("o1");
  OOM_LOOP(immu_db_get(db, &q, &e), assert_bytes(e.value, e.value_len, "uno"),
           immu_db_entry_clear(&e));
  q = kreq("or");
  OOM_LOOP(immu_db_get(db, &q, &e), assert_bytes(e.value, e.value_len, "one"),
           immu_db_entry_clear(&e));
  q = kreq("obig");
  OOM_LOOP(immu_db_get(db, &q, &e), assert_int_equal(e.value_len, 599),
           immu_db_entry_clear(&e));
  q = kreq("o1");
  q.at_tx = t1;
  OOM_LOOP(immu_db_get(db, &q, &e), assert_bytes(e.value, e.value_len, "one"),
           immu_db_entry_clear(&e));
  q = kreq("o1");
  q.at_revision = -1;
  OOM_LOOP(immu_db_get(db, &q, &e), assert_bytes(e.value, e.value_len, "one"),
           immu_db_entry_clear(&e));
  {
    immu_buf keys[3] = {{"o1", 2}, {"or", 2}, {"ox", 2}};
    OOM_LOOP(immu_db_get_all(db, keys, 3, 0, &l), assert_int_equal(l.n, 2),
             immu_db_entries_clear(&l));
  }
  {
    immu_db_history_req r = {U8("o1"), 2, 0, 0, 1, 0};
    OOM_LOOP(immu_db_history(db, &r, &l), assert_int_equal(l.n, 2),
             immu_db_entries_clear(&l));
  }
  {
    immu_db_scan_req r = sreq();
    OOM_LOOP(immu_db_scan(db, &r, &l), assert_int_equal(l.n, 5),
             immu_db_entries_clear(&l));
  }
  {
    immu_db_zscan_req r = zreq("os");
    r.seek_key = U8("o1");
    r.seek_key_len = 2;
    r.seek_score = -1;
    r.seek_at_tx = t1;
    r.inclusive_seek = 1;
    OOM_LOOP(immu_db_zscan(db, &r, &z), assert_int_equal(z.n, 2),
             immu_db_zentries_clear(&z));
  }
  OOM_LOOP(immu_db_count(db, U8("o"), 1, &n), assert_int_equal(n, 5), (void)0);
  OOM_LOOP(immu_db_tx_by_id(db, 2, &t), assert_int_equal(t.nentries, 1),
           immu_db_tx_clear(&t));
  {
    immu_db_tx_scan_req r = {0, 0, 1};
    OOM_LOOP(immu_db_tx_scan(db, &r, &tl), assert_int_equal(tl.n, 8),
             immu_db_tx_list_clear(&tl));
  }
  q = kreq("or");
  OOM_LOOP(immu_db_verifiable_get(db, &q, 2, &ve),
           verify_get_from(db, 2, &ve, "or"),
           immu_db_verifiable_entry_clear(&ve));
  OOM_LOOP(immu_db_verifiable_tx_by_id(db, 3, 8, &vt),
           assert_int_equal(vt.proof.target.id, 8),
           immu_db_verifiable_tx_clear(&vt));

  /* writes: a failed attempt commits nothing */
  {
    uint64_t before;
    immu_db_kv kv = KV("ow", "w");
    before = last_tx(db);
    OOM_LOOP(immu_db_set(db, &kv, 1, 0, NULL), (void)0,
             assert_true(last_tx(db) == before || rc_ == 0));
    immu_db_op ops[3];
    memset(ops, 0, sizeof ops);
    ops[0].kind = IMMU_DB_OP_KV;
    ops[0].u.kv = KV("ox", "x");
    ops[1].kind = IMMU_DB_OP_REF;
    ops[1].u.ref = (immu_db_ref_req){U8("oxr"), 3, U8("ox"), 2, 0, 1, 0};
    ops[2].kind = IMMU_DB_OP_ZADD;
    ops[2].u.zadd = (immu_db_zadd_req){U8("os"), 2, 9, U8("ox"), 2, 0, 1, 0};
    before = last_tx(db);
    OOM_LOOP(immu_db_exec_all(db, ops, 3, 0, NULL), (void)0,
             assert_true(last_tx(db) == before || rc_ == 0));
    assert_int_equal(last_tx(db), before + 1);
    q = kreq("oxr");
    expect_get(db, &q, "ox", "x", before + 1);
  }
  OK(immu_db_close(db));
}

/* ------------------------------------------------------------------ */
/* Persistence and maintenance                                         */
/* ------------------------------------------------------------------ */

static void test_reopen(void **state) {
  fixture *fx = *state;
  immu_db_state s1, s2;
  immu_db_verifiable_entry ve;
  immu_db_key_req q;

  uint64_t t1 = put(fx->db, "p1", "one");
  put(fx->db, "p2", "two");
  uint64_t t3 = put(fx->db, "p1", "uno");
  ref(fx->db, "pr", "p1", t1);
  zadd(fx->db, "ps", -2, "p2", 0);
  zadd(fx->db, "ps", 3, "p1", t1);
  immu_db_current_state(fx->db, &s1);

  reopen(fx);
  immu_db_current_state(fx->db, &s2);
  assert_int_equal(s1.tx_id, s2.tx_id);
  assert_true(immu_digest_eq(&s1.tx_hash, &s2.tx_hash));

  expect_latest(fx->db, "p1", "uno", t3);
  expect_latest(fx->db, "p2", "two", 0);
  q = kreq("pr");
  expect_get(fx->db, &q, "p1", "one", t1);
  q = kreq("p1");
  q.at_revision = 1;
  expect_get(fx->db, &q, "p1", "one", t1);
  {
    immu_db_scan_req r = sreq();
    r.prefix = U8("p");
    r.prefix_len = 1;
    expect_scan(fx->db, &r, "p1 p2 pr");
  }
  {
    immu_db_zscan_req r = zreq("ps");
    expect_zscan(fx->db, &r, "p2@-2 p1@3");
  }
  {
    immu_db_history_req r = {U8("p1"), 2, 0, 0, 0, 0};
    immu_db_entries l;
    OK(immu_db_history(fx->db, &r, &l));
    assert_int_equal(l.n, 2);
    immu_db_entries_clear(&l);
  }
  /* proofs against the state saved before the restart */
  {
    cstate st = {s1.tx_id, s1.tx_hash};
    q = kreq("p2");
    OK(immu_db_verifiable_get(fx->db, &q, st.id, &ve));
    verify_get(&st, &ve, "p2");
    immu_db_verifiable_entry_clear(&ve);
    immu_db_verifiable_tx vt;
    immu_db_kv kv = KV("after", "restart");
    uint8_t kb[256], vb[256];
    size_t kn, vn;
    OK(immu_db_verifiable_set(fx->db, &kv, 1, 0, st.id, &vt));
    enc_kv("after", "restart", kb, &kn, vb, &vn);
    verify_written(&st, &vt, kb, kn, vb, vn);
    immu_db_verifiable_tx_clear(&vt);
  }

  /* maintenance passthroughs */
  {
    immu_db_stats s;
    OK(immu_db_flush_index(fx->db));
    OK(immu_db_compact_index(fx->db));
    OK(immu_db_verify(fx->db, NULL, NULL));
    immu_db_get_stats(fx->db, &s);
    assert_int_equal(s.txs, last_tx(fx->db));
    assert_true(s.entries >= s.txs);
  }
  reopen(fx);
  expect_latest(fx->db, "after", "restart", 0);
}

/* immu_db_get_cached: immu_db_get's answer from memory, IMMU_EWOULDBLOCK
 * exactly when it would need the disk, a wait or another lookup. */
static void expect_cached(immu_db *db, const immu_db_key_req *r, const char *v) {
  immu_db_entry e;
  OK(immu_db_get_cached(db, r, &e));
  assert_bytes(e.value, e.value_len, v);
  immu_db_entry_clear(&e);
}

static void expect_cached_rc(immu_db *db, const immu_db_key_req *r, int rc) {
  immu_db_entry e;
  assert_rc(immu_db_get_cached(db, r, &e), rc);
  assert_null(e.value);
}

static void test_get_cached(void **state) {
  fixture *fx = *state;
  enum { NK = 3000 };
  static char big[4096];
  immu_db_kv *kvs = calloc(NK, sizeof *kvs);
  char (*keys)[8] = calloc(NK, sizeof *keys);
  immu_db_key_req q;
  immu_tx_header h;
  uint64_t t1;

  assert_non_null(kvs);
  assert_non_null(keys);
  /* Enough rows for several data blocks of the index's latest family. */
  for (int i = 0; i < NK; i++) {
    snprintf(keys[i], sizeof keys[i], "k%04d", i);
    kvs[i] = (immu_db_kv){U8(keys[i]), 5, U8("a value of a key, inline"), 24};
  }
  /* One SST per 1000 keys (flushed, not compacted). */
  for (int i = 0; i < NK; i += 1000) {
    OK(immu_db_set(fx->db, kvs + i, 1000, 0, &h));
    OK(immu_db_flush_index(fx->db));
  }
  memset(big, 'b', sizeof big);
  big[sizeof big - 1] = '\0';
  t1 = put(fx->db, "small", "one");
  put(fx->db, "small", "two");
  put(fx->db, "big", big);
  ref(fx->db, "ref", "small", 0);

  q = kreq("small");
  expect_cached(fx->db, &q, "two");
  /* Flushed to an SST whose blocks a flush does not cache, but written by
   * this process: the index's row cache answers (RocksDB's cache-only read
   * is exercised after the reopen below). */
  q = kreq("k0000");
  expect_cached(fx->db, &q, "a value of a key, inline");
  q = kreq("absent");
  expect_cached_rc(fx->db, &q, IMMU_ENOTFOUND);
  assert_msg("key not found");
  q = kreq("");
  expect_cached_rc(fx->db, &q, IMMU_EINVAL);
  q = kreq("small");
  q.since_tx = last_tx(fx->db) + 1;
  expect_cached_rc(fx->db, &q, IMMU_EINVAL);
  /* what needs the log or a second lookup */
  q = kreq("small");
  q.at_tx = t1;
  expect_cached_rc(fx->db, &q, IMMU_EWOULDBLOCK);
  q = kreq("small");
  q.at_revision = 1;
  expect_cached_rc(fx->db, &q, IMMU_EWOULDBLOCK);
  q = kreq("big");
  expect_cached_rc(fx->db, &q, IMMU_EWOULDBLOCK);
  q = kreq("ref");
  expect_cached_rc(fx->db, &q, IMMU_EWOULDBLOCK);

  /* A cold block cache and an empty row cache after a reopen: RocksDB
   * answers a cache-only read of a block that is on disk only with OK and
   * an empty value ("may exist"), until a blocking read brings the block
   * in; also once another block of the same table was read. */
  OK(immu_db_flush_index(fx->db));
  reopen(fx);
  q = kreq("k0000");
  expect_cached_rc(fx->db, &q, IMMU_EWOULDBLOCK);
  expect_latest(fx->db, "k0999", "a value of a key, inline", h.id - 2);
  q = kreq("k0000");
  expect_cached_rc(fx->db, &q, IMMU_EWOULDBLOCK);
  expect_latest(fx->db, "k0000", "a value of a key, inline", h.id - 2);
  expect_cached(fx->db, &q, "a value of a key, inline");
  free(kvs);
  free(keys);
}

/* Writers overwrite random keys (flushes make overlapping L0 files) while
 * readers ask immu_db_get_cached first and immu_db_get when it gives up:
 * every answer must be the key's own value. A cache-only RocksDB read that
 * meets an uncached block answers OK with an empty value; taken for a row,
 * that was "corrupt data" (found by this test's load, bounded here). */
enum { CC_KEYS = 50000, CC_WRITERS = 3, CC_READERS = 2 };

typedef struct cc_arg {
  immu_db *db;
  atomic_int *stop;
  atomic_long *bad, *cached, *blocking;
  unsigned seed;
} cc_arg;

static void cc_key(unsigned i, char *k) {
  snprintf(k, 24, "cc-%019u", i);
}

static void *cc_writer(void *p) {
  cc_arg *a = p;
  unsigned x = a->seed, n = 0;
  char k[24], v[128];
  while (!atomic_load(a->stop)) {
    unsigned i;
    x = x * 1103515245u + 12345u;
    i = (x >> 8) % CC_KEYS;
    cc_key(i, k);
    memset(v, 'v', sizeof v);
    snprintf(v, 24, "val-%u-", i);
    immu_db_kv kv = {U8(k), 22, U8(v), sizeof v};
    immu_tx_header h;
    if (immu_db_set(a->db, &kv, 1, 1, &h) != 0)
      atomic_fetch_add(a->bad, 1);
    /* Many small overlapping SSTs, most of their blocks never cached. */
    if (a->seed == 1 && ++n % 3000 == 0 && immu_db_flush_index(a->db) != 0)
      atomic_fetch_add(a->bad, 1);
  }
  return NULL;
}

static void *cc_reader(void *p) {
  cc_arg *a = p;
  unsigned x = a->seed;
  char k[24], want[24];
  while (!atomic_load(a->stop)) {
    immu_db_key_req r;
    immu_db_entry e;
    unsigned i;
    int rc;
    x = x * 1103515245u + 12345u;
    i = (x >> 8) % CC_KEYS;
    cc_key(i, k);
    r = kreq(k);
    r.no_wait = 1;
    rc = immu_db_get_cached(a->db, &r, &e);
    if (rc == IMMU_EWOULDBLOCK) {
      atomic_fetch_add(a->blocking, 1);
      rc = immu_db_get(a->db, &r, &e);
    } else {
      atomic_fetch_add(a->cached, 1);
    }
    if (rc == IMMU_ENOTFOUND)
      continue;
    snprintf(want, sizeof want, "val-%u-", i);
    if (rc != 0 || e.value_len != 128 ||
        memcmp(e.value, want, strlen(want)) != 0) {
      if (atomic_fetch_add(a->bad, 1) == 0)
        print_message("  %s: rc %d (%s)\n", k, rc, immu_db_last_error());
    }
    if (rc == 0)
      immu_db_entry_clear(&e);
  }
  return NULL;
}

static void test_get_cached_concurrent(void **state) {
  fixture *fx = *state;
  pthread_t th[CC_WRITERS + CC_READERS];
  cc_arg args[CC_WRITERS + CC_READERS];
  atomic_int stop = 0;
  atomic_long bad = 0, cached = 0, blocking = 0;
  for (int i = 0; i < CC_WRITERS + CC_READERS; i++) {
    args[i] = (cc_arg){fx->db, &stop, &bad, &cached, &blocking,
                       (unsigned)i * 7919u + 1u};
    assert_int_equal(pthread_create(&th[i], NULL,
                                    i < CC_WRITERS ? cc_writer : cc_reader,
                                    &args[i]),
                     0);
  }
  sleep(3);
  atomic_store(&stop, 1);
  for (int i = 0; i < CC_WRITERS + CC_READERS; i++)
    pthread_join(th[i], NULL);
  print_message("  cached %ld, blocking %ld, wrong %ld\n", atomic_load(&cached),
                atomic_load(&blocking), atomic_load(&bad));
  assert_int_equal(atomic_load(&bad), 0);
  assert_true(atomic_load(&cached) > 0);
}

static void test_shared_env(void **state) {
  fixture *fx = *state;
  immu_store_env *env;
  immu_db_options o;
  immu_db *a = NULL, *b = NULL;
  char da[600], db_[600];

  snprintf(da, sizeof da, "%s/a", fx->dir);
  snprintf(db_, sizeof db_, "%s/b", fx->dir);
  OK(immu_store_env_new(0, 2, &env));
  immu_db_options_init(&o);
  o.env = env;
  o.index_wait_ms = 30000;
  OK(immu_db_open(da, &o, &a));
  OK(immu_db_open(db_, &o, &b));
  put(a, "k", "in a");
  put(b, "k", "in b");
  put(b, "k2", "only b");
  expect_latest(a, "k", "in a", 1);
  expect_latest(b, "k", "in b", 1);
  {
    immu_db_key_req q = kreq("k2");
    expect_get_err(a, &q, IMMU_ENOTFOUND, "key not found");
  }
  OK(immu_db_close(a));
  OK(immu_db_close(b));
  immu_store_env_free(env);

  /* open errors */
  assert_rc(immu_db_open(NULL, NULL, &a), IMMU_EINVAL);
  assert_null(a);
  OK(immu_db_close(NULL));
}

/* ------------------------------------------------------------------ */
/* Asynchronous Set                                                    */
/* ------------------------------------------------------------------ */

static _Thread_local int tl_in_set_async;

typedef struct adone {
  pthread_mutex_t *mu;
  pthread_cond_t *cv;
  int *ndone;
  int calls;
  int rc;
  int had_hdr;
  int bad; /* called inside immu_db_set_async */
  immu_tx_header hdr;
  char msg[128];
} adone;

static void adone_cb(void *arg, int rc, const immu_tx_header *hdr) {
  adone *a = arg;
  pthread_mutex_lock(a->mu);
  a->calls++;
  a->rc = rc;
  a->bad |= tl_in_set_async;
  a->had_hdr = hdr != NULL;
  if (hdr != NULL)
    a->hdr = *hdr;
  snprintf(a->msg, sizeof a->msg, "%s", rc != 0 ? immu_db_last_error() : "");
  (*a->ndone)++;
  pthread_cond_broadcast(a->cv);
  pthread_mutex_unlock(a->mu);
}

static int set_async(immu_db *db, const char *k, const char *v, int no_wait,
                     adone *a) {
  immu_db_kv kv = KV(k, v);
  tl_in_set_async = 1;
  int rc = immu_db_set_async(db, &kv, 1, no_wait, adone_cb, a);
  tl_in_set_async = 0;
  return rc;
}

static void wait_ndone(pthread_mutex_t *mu, pthread_cond_t *cv, int *ndone,
                       int n) {
  pthread_mutex_lock(mu);
  while (*ndone < n)
    pthread_cond_wait(cv, mu);
  pthread_mutex_unlock(mu);
}

static void test_set_async(void **state) {
  fixture *fx = *state;
  immu_db *db = fx->db;
  pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
  pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
  int ndone = 0;
  enum { N = 200 };
  adone *a = calloc(N, sizeof *a);
  for (int i = 0; i < N; i++)
    a[i] = (adone){&mu, &cv, &ndone, 0, 0, 0, 0, {0}, ""};

  /* Validation errors come back synchronously, with immu_db_set's codes
   * and messages; done is not called. */
  immu_db_kv dup[2] = {KV("d", "1"), KV("d", "2")};
  assert_rc(immu_db_set_async(db, dup, 2, 0, adone_cb, &a[0]), IMMU_EINVAL);
  assert_msg("duplicated key");
  assert_rc(immu_db_set_async(db, dup, 0, 0, adone_cb, &a[0]), IMMU_EINVAL);
  assert_rc(immu_db_set_async(db, dup, 1, 0, NULL, NULL), IMMU_EINVAL);
  char big[2048];
  memset(big, 'k', sizeof big - 1);
  big[sizeof big - 1] = 0;
  assert_rc(set_async(db, big, "v", 0, &a[0]), IMMU_ETOOLARGE);
  assert_int_equal(ndone, 0);

  /* Many in flight, mixed with synchronous Sets: each done once, with the
   * committed header, in submission order; the index covers the tx. */
  uint64_t before = last_tx(db);
  for (int i = 0; i < N; i++) {
    char k[32], v[32];
    snprintf(k, sizeof k, "as%d", i);
    snprintf(v, sizeof v, "av%d", i);
    OK(set_async(db, k, v, i % 5 == 0, &a[i]));
    if (i % 50 == 0)
      put(db, "sync", k);
  }
  wait_ndone(&mu, &cv, &ndone, N);
  for (int i = 0; i < N; i++) {
    assert_int_equal(a[i].calls, 1);
    assert_int_equal(a[i].bad, 0);
    assert_rc(a[i].rc, 0);
    assert_true(a[i].had_hdr);
    assert_true(a[i].hdr.id > before);
    assert_int_equal(a[i].hdr.nentries, 1);
    if (i > 0)
      assert_true(a[i].hdr.id > a[i - 1].hdr.id);
  }
  OK(immu_db_flush_index(db));
  expect_latest(db, "as7", "av7", a[7].hdr.id);
  expect_latest(db, "as199", "av199", a[199].hdr.id);

  /* VerifiableSet finished by hand: the same result as the sync call. */
  {
    cstate st = {0, immu_empty_digest};
    immu_db_verifiable_tx vt;
    uint8_t kb[256], vb[256];
    size_t kn, vn;
    immu_db_kv kv = KV("vsa", "val");
    OK(immu_db_check_prove_since(db, 0));
    assert_rc(immu_db_check_prove_since(db, last_tx(db) + 5), IMMU_EINVAL);
    assert_msg("illegal state");
    ndone = 0;
    a[0] = (adone){&mu, &cv, &ndone, 0, 0, 0, 0, {0}, ""};
    OK(immu_db_set_async(db, &kv, 1, 0, adone_cb, &a[0]));
    wait_ndone(&mu, &cv, &ndone, 1);
    assert_rc(a[0].rc, 0);
    OK(immu_db_verifiable_tx_for(db, &a[0].hdr, 0, &vt));
    enc_kv("vsa", "val", kb, &kn, vb, &vn);
    verify_written(&st, &vt, kb, kn, vb, vn);
    assert_int_equal(st.id, a[0].hdr.id);
    immu_db_verifiable_tx_clear(&vt);
    /* and from an older trusted state */
    cstate old = trusted_at(db, 1);
    OK(immu_db_verifiable_tx_for(db, &a[0].hdr, 1, &vt));
    verify_written(&old, &vt, kb, kn, vb, vn);
    immu_db_verifiable_tx_clear(&vt);
  }

  /* close() with Sets queued: each done still called once, the tx
   * committed (hdr given); the index wait may end with IMMU_ECLOSED. */
  ndone = 0;
  for (int i = 0; i < N; i++) {
    char k[32];
    snprintf(k, sizeof k, "cl%d", i);
    a[i] = (adone){&mu, &cv, &ndone, 0, 0, 0, 0, {0}, ""};
    OK(set_async(db, k, "v", 0, &a[i]));
  }
  OK(immu_db_close(db));
  assert_int_equal(ndone, N);
  for (int i = 0; i < N; i++) {
    assert_int_equal(a[i].calls, 1);
    assert_true(a[i].rc == 0 || a[i].rc == IMMU_ECLOSED);
    assert_true(a[i].had_hdr);
  }
  fx->db = open_db(fx->dir);
  assert_int_equal(last_tx(fx->db), a[N - 1].hdr.id);
  free(a);
}

/* An index wait that cannot succeed in time: done gets IMMU_ETIMEOUT with
 * immu_db_set's message and the header (the tx is committed). */
static void test_set_async_timeout(void **state) {
  fixture *fx = *state;
  immu_db_options o;
  immu_db *db;
  char dir[600];
  snprintf(dir, sizeof dir, "%s/t0", fx->dir);
  immu_db_options_init(&o);
  o.index_wait_ms = 0;
  OK(immu_db_open(dir, &o, &db));
  pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
  pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
  int ndone = 0, ntimeout = 0;
  enum { N = 50 };
  adone a[N];
  for (int i = 0; i < N; i++) {
    a[i] = (adone){&mu, &cv, &ndone, 0, 0, 0, 0, {0}, ""};
    OK(set_async(db, "k", "v", 0, &a[i]));
  }
  wait_ndone(&mu, &cv, &ndone, N);
  for (int i = 0; i < N; i++) {
    assert_int_equal(a[i].calls, 1);
    assert_true(a[i].had_hdr);
    if (a[i].rc == IMMU_ETIMEOUT) {
      ntimeout++;
      assert_non_null(strstr(a[i].msg, "timed out waiting for the index"));
    } else {
      assert_rc(a[i].rc, 0);
    }
  }
  /* The done callback runs right after the fsync, before the indexer can
   * have applied the tx; at least the first waits must time out. */
  assert_true(ntimeout > 0);
  OK(immu_db_close(db));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_set_get, setup, teardown),
      cmocka_unit_test_setup_teardown(test_limits, setup, teardown),
      cmocka_unit_test_setup_teardown(test_get_at_tx_and_revisions, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_references, setup, teardown),
      cmocka_unit_test_setup_teardown(test_history, setup, teardown),
      cmocka_unit_test_setup_teardown(test_scan, setup, teardown),
      cmocka_unit_test_setup_teardown(test_count, setup, teardown),
      cmocka_unit_test_setup_teardown(test_zset, setup, teardown),
      cmocka_unit_test_setup_teardown(test_exec_all, setup, teardown),
      cmocka_unit_test_setup_teardown(test_tx, setup, teardown),
      cmocka_unit_test_setup_teardown(test_verifiable_set, setup, teardown),
      cmocka_unit_test_setup_teardown(test_verifiable_get, setup, teardown),
      cmocka_unit_test_setup_teardown(test_verifiable_tx_ref_zadd, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_oom, setup, teardown),
      cmocka_unit_test_setup_teardown(test_get_cached, setup, teardown),
      cmocka_unit_test_setup_teardown(test_get_cached_concurrent, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_reopen, setup, teardown),
      cmocka_unit_test_setup_teardown(test_shared_env, setup, teardown),
      cmocka_unit_test_setup_teardown(test_set_async, setup, teardown),
      cmocka_unit_test_setup_teardown(test_set_async_timeout, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
