/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Tests of the client SDK's verification and trusted-state logic
 * (src/client/client_int.h) without a server.
 *
 * Replies are produced the way the server produces them: a database of the
 * KV layer (include/immudb/db.h) in a temp dir answers the verifiable calls
 * (VerifiableSet/SetReference/ZAdd/Get/TxById), a small converter below
 * turns the results into the protobuf-c messages the server sends (digests
 * as 32 bytes, header version 0 absent, signature over the proof's target
 * state), they are packed and unpacked as on the wire, and fed to the SDK's
 * verifiers.
 *
 * Covered:
 *   - genuine replies are accepted across many txs and trusted states, in
 *     both directions of the dual proof, with header versions 0 and 1;
 *   - tampering is rejected: every byte of every hash, header field, entry,
 *     proof term and signature; swapped txs, replays, wrong keys; lying
 *     references (the referenced value is proven by a second call);
 *   - a flip of any byte of a packed reply is rejected or leaves the
 *     verified result identical to the genuine one;
 *   - state persistence (round trip, merge rule, corruption is an error,
 *     identity pinning of UUID and key), and 4 processes x 50 verified
 *     updates of one state file.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "client/client_int.h"
#include "core/endian.h"
#include "core/mem.h"
#include "immudb/client.h"
#include "immudb/crypto.h"
#include "immudb/db.h"
#include "schema.pb-c.h"
#include "store/store.h"

#define DBNAME "defaultdb"
#define U8(s) ((const uint8_t *)(s))

#define assert_rc(expr, want)                                                  \
  do {                                                                         \
    int rc_ = (expr);                                                          \
    int want_ = (want);                                                        \
    if (rc_ != want_)                                                          \
      fail_msg("%s = %d (%s), want %d (%s); err: %s", #expr, rc_,              \
               immu_err_name(rc_), want_, immu_err_name(want_), g_err);        \
  } while (0)
#define OK(expr) assert_rc(expr, 0)

/* Message buffer shared by the verifiers of a test. */
static char g_err[1024];
/* Tampered variants checked (reported by the tamper tests). */
static unsigned long g_checks;

/* ------------------------------------------------------------------ */
/* Fixture: a database, a signing key pair                             */
/* ------------------------------------------------------------------ */

typedef struct fixture {
  char dir[512];
  immu_db *db;
  immu_signer *signer;
  immu_verifier *verifier;
  immu_verifier *other; /* verifier of an unrelated key */
  immu__cli_state st[4096]; /* genuine state of every tx (index = tx id) */
  uint64_t last;
} fixture;

static int rm_cb(const char *path, const struct stat *sb, int flag,
                 struct FTW *ftw) {
  (void)sb;
  (void)flag;
  (void)ftw;
  return remove(path);
}

/* A fresh P-256 key pair as PEM texts (caller frees). */
static void gen_key(char **priv, char **pub) {
  EVP_PKEY *k = EVP_EC_gen("P-256");
  BIO *b1 = BIO_new(BIO_s_mem()), *b2 = BIO_new(BIO_s_mem());
  char *p;
  long n;
  assert_non_null(k);
  assert_int_equal(PEM_write_bio_PrivateKey(b1, k, NULL, NULL, 0, NULL, NULL),
                   1);
  assert_int_equal(PEM_write_bio_PUBKEY(b2, k), 1);
  n = BIO_get_mem_data(b1, &p);
  *priv = strndup(p, (size_t)n);
  n = BIO_get_mem_data(b2, &p);
  *pub = strndup(p, (size_t)n);
  BIO_free(b1);
  BIO_free(b2);
  EVP_PKEY_free(k);
}

static int setup(void **state) {
  fixture *fx = calloc(1, sizeof *fx);
  const char *base = getenv("IMMU_TEST_TMPDIR");
  immu_store_options so;
  immu_db_options o;
  char *priv, *pub, *priv2, *pub2;

  if (fx == NULL)
    return -1;
  snprintf(fx->dir, sizeof fx->dir, "%s/cvXXXXXX",
           base && *base ? base : "/tmp");
  if (mkdtemp(fx->dir) == NULL)
    return -1;
  immu_store_options_init(&so);
  so.durability = IMMU_DURABILITY_ASYNC;
  immu_db_options_init(&o);
  o.store = &so;
  o.index_wait_ms = 30000;
  char dbdir[600];
  snprintf(dbdir, sizeof dbdir, "%s/db", fx->dir);
  if (immu_db_open(dbdir, &o, &fx->db) != 0)
    return -1;
  gen_key(&priv, &pub);
  gen_key(&priv2, &pub2);
  if (immu_signer_from_pem(priv, strlen(priv), &fx->signer) != 0 ||
      immu_verifier_from_pem(pub, strlen(pub), &fx->verifier) != 0 ||
      immu_verifier_from_pem(pub2, strlen(pub2), &fx->other) != 0)
    return -1;
  free(priv);
  free(pub);
  free(priv2);
  free(pub2);
  *state = fx;
  return 0;
}

static int teardown(void **state) {
  fixture *fx = *state;
  immu_db_close(fx->db);
  immu_signer_free(fx->signer);
  immu_verifier_free(fx->verifier);
  immu_verifier_free(fx->other);
  nftw(fx->dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
  free(fx);
  return 0;
}

/* Records the genuine state of every tx up to the last committed one. */
static void record_states(fixture *fx) {
  immu_db_state cur;
  immu_db_current_state(fx->db, &cur);
  assert_true(cur.tx_id < 4096);
  for (uint64_t t = fx->last + 1; t <= cur.tx_id; t++) {
    immu_db_tx tx;
    OK(immu_db_tx_by_id(fx->db, t, &tx));
    memset(&fx->st[t], 0, sizeof fx->st[t]);
    snprintf(fx->st[t].db, sizeof fx->st[t].db, "%s", DBNAME);
    fx->st[t].tx_id = t;
    fx->st[t].alh = tx.alh;
    immu_db_tx_clear(&tx);
  }
  fx->last = cur.tx_id;
}

/* ------------------------------------------------------------------ */
/* Converter: engine results -> the protobuf-c replies a server sends  */
/* ------------------------------------------------------------------ */

typedef struct arena {
  void **v;
  size_t n, cap;
} arena;

static void *aalloc(arena *a, size_t n) {
  void *p = calloc(1, n ? n : 1);
  assert_non_null(p);
  if (a->n == a->cap) {
    a->cap = a->cap ? a->cap * 2 : 64;
    a->v = realloc(a->v, a->cap * sizeof *a->v);
    assert_non_null(a->v);
  }
  a->v[a->n++] = p;
  return p;
}

static void afree(arena *a) {
  for (size_t i = 0; i < a->n; i++)
    free(a->v[i]);
  free(a->v);
  memset(a, 0, sizeof *a);
}

static ProtobufCBinaryData pbd(const void *p, size_t n) {
  ProtobufCBinaryData b;
  b.len = n;
  b.data = (uint8_t *)(uintptr_t)p;
  return b;
}

static ProtobufCBinaryData pbdig(const immu_digest *d) {
  return pbd(d->b, IMMU_DIGEST_LEN);
}

static Immudb__Schema__TxHeader *conv_hdr(arena *a, const immu_tx_header *h) {
  Immudb__Schema__TxHeader *m = aalloc(a, sizeof *m);
  immudb__schema__tx_header__init(m);
  m->id = h->id;
  m->prevalh = pbdig(&h->prev_alh);
  m->ts = h->ts;
  m->nentries = (int32_t)h->nentries;
  m->eh = pbdig(&h->eh);
  m->bltxid = h->bl_tx_id;
  m->blroot = pbdig(&h->bl_root);
  m->version = (int32_t)h->version;
  if (h->version == 1) { /* HEAD servers send an (empty) TxMetadata */
    Immudb__Schema__TxMetadata *md = aalloc(a, sizeof *md);
    immudb__schema__tx_metadata__init(md);
    m->metadata = md;
  }
  return m;
}

/* KV metadata bytes (spec 2.3) -> proto. */
static Immudb__Schema__KVMetadata *conv_kvmd(arena *a, const uint8_t *md,
                                             size_t n) {
  Immudb__Schema__KVMetadata *m;
  size_t i = 0;
  if (n == 0)
    return NULL;
  m = aalloc(a, sizeof *m);
  immudb__schema__kvmetadata__init(m);
  if (i < n && md[i] == 0x00) {
    m->deleted = 1;
    i++;
  }
  if (i < n && md[i] == 0x01) {
    Immudb__Schema__Expiration *e = aalloc(a, sizeof *e);
    immudb__schema__expiration__init(e);
    e->expiresat = (int64_t)immu__get_u64(md + i + 1);
    m->expiration = e;
    i += 9;
  }
  if (i < n && md[i] == 0x02) {
    m->nonindexable = 1;
    i++;
  }
  assert_int_equal(i, n);
  return m;
}

static Immudb__Schema__Tx *conv_tx(arena *a, const immu_db_tx *tx) {
  Immudb__Schema__Tx *m = aalloc(a, sizeof *m);
  immudb__schema__tx__init(m);
  m->header = conv_hdr(a, &tx->header);
  m->n_entries = tx->nentries;
  m->entries = aalloc(a, tx->nentries * sizeof *m->entries);
  for (size_t i = 0; i < tx->nentries; i++) {
    const immu_db_tx_entry *e = &tx->entries[i];
    Immudb__Schema__TxEntry *te = aalloc(a, sizeof *te);
    immudb__schema__tx_entry__init(te);
    te->key = pbd(e->key, e->key_len);
    te->hvalue = pbdig(&e->hval);
    te->vlen = (int32_t)e->value_len;
    te->metadata = conv_kvmd(a, e->md, e->md_len);
    m->entries[i] = te;
  }
  return m;
}

static ProtobufCBinaryData *conv_list(arena *a, const immu_digest_list *l,
                                      size_t *n) {
  ProtobufCBinaryData *v = aalloc(a, (l->n ? l->n : 1) * sizeof *v);
  for (size_t i = 0; i < l->n; i++)
    v[i] = pbdig(&l->d[i]);
  *n = l->n;
  return v;
}

static Immudb__Schema__DualProof *conv_dp(arena *a, const immu_dual_proof *p) {
  Immudb__Schema__DualProof *m = aalloc(a, sizeof *m);
  Immudb__Schema__LinearProof *lp = aalloc(a, sizeof *lp);
  immudb__schema__dual_proof__init(m);
  immudb__schema__linear_proof__init(lp);
  m->sourcetxheader = conv_hdr(a, &p->source);
  m->targettxheader = conv_hdr(a, &p->target);
  m->inclusionproof = conv_list(a, &p->inclusion, &m->n_inclusionproof);
  m->consistencyproof = conv_list(a, &p->consistency, &m->n_consistencyproof);
  m->targetbltxalh = pbdig(&p->target_bl_tx_alh);
  m->lastinclusionproof =
      conv_list(a, &p->last_inclusion, &m->n_lastinclusionproof);
  lp->sourcetxid = p->linear.source_tx_id;
  lp->targettxid = p->linear.target_tx_id;
  lp->terms = conv_list(a, &p->linear.terms, &lp->n_terms);
  m->linearproof = lp;
  if (p->has_lap) {
    Immudb__Schema__LinearAdvanceProof *l = aalloc(a, sizeof *l);
    immudb__schema__linear_advance_proof__init(l);
    l->linearproofterms =
        conv_list(a, &p->lap.linear_terms, &l->n_linearproofterms);
    l->n_inclusionproofs = p->lap.ninclusion;
    l->inclusionproofs =
        aalloc(a, (p->lap.ninclusion + 1) * sizeof *l->inclusionproofs);
    for (size_t i = 0; i < p->lap.ninclusion; i++) {
      Immudb__Schema__InclusionProof *ip = aalloc(a, sizeof *ip);
      immudb__schema__inclusion_proof__init(ip);
      ip->terms = conv_list(a, &p->lap.inclusion[i], &ip->n_terms);
      l->inclusionproofs[i] = ip;
    }
    m->linearadvanceproof = l;
  }
  return m;
}

/* The signature the server attaches: over {db, T.id, Alh(T)}. */
static Immudb__Schema__Signature *conv_sig(arena *a, const immu_signer *s,
                                           const immu_tx_header *t) {
  Immudb__Schema__Signature *m;
  uint8_t *sig, *pub;
  size_t slen;
  immu_digest alh;
  if (s == NULL)
    return NULL;
  m = aalloc(a, sizeof *m);
  sig = aalloc(a, IMMU_SIG_MAX);
  pub = aalloc(a, IMMU_PUBKEY_LEN);
  immudb__schema__signature__init(m);
  OK(immu_tx_alh(t, &alh));
  OK(immu_signer_sign_state(s, DBNAME, strlen(DBNAME), t->id, &alh, sig, &slen,
                            pub));
  m->signature = pbd(sig, slen);
  m->publickey = pbd(pub, IMMU_PUBKEY_LEN);
  return m;
}

static Immudb__Schema__VerifiableTx *
conv_vtx(arena *a, const immu_db_verifiable_tx *v, const immu_signer *s) {
  Immudb__Schema__VerifiableTx *m = aalloc(a, sizeof *m);
  immudb__schema__verifiable_tx__init(m);
  m->tx = conv_tx(a, &v->tx);
  m->dualproof = conv_dp(a, &v->proof);
  m->signature = conv_sig(a, s, &v->proof.target);
  return m;
}

static uint8_t *pack(const ProtobufCMessage *m, size_t *len) {
  *len = protobuf_c_message_get_packed_size(m);
  uint8_t *b = malloc(*len ? *len : 1);
  assert_non_null(b);
  protobuf_c_message_pack(m, b);
  return b;
}

static uint8_t *pack_vtx(const immu_db_verifiable_tx *v, const immu_signer *s,
                         size_t *len) {
  arena a = {0};
  uint8_t *b = pack(&conv_vtx(&a, v, s)->base, len);
  afree(&a);
  return b;
}

static uint8_t *pack_ventry(const immu_db_verifiable_entry *v,
                            const immu_signer *s, size_t *len) {
  arena a = {0};
  Immudb__Schema__VerifiableEntry *m = aalloc(&a, sizeof *m);
  Immudb__Schema__Entry *e = aalloc(&a, sizeof *e);
  Immudb__Schema__InclusionProof *ip = aalloc(&a, sizeof *ip);
  ProtobufCBinaryData *terms;
  const uint8_t *rkey;
  size_t rklen;
  uint8_t *b;

  immudb__schema__verifiable_entry__init(m);
  immudb__schema__entry__init(e);
  immudb__schema__inclusion_proof__init(ip);
  e->tx = v->entry.tx;
  e->key = pbd(v->entry.key, v->entry.key_len);
  e->value = pbd(v->entry.value, v->entry.value_len);
  e->revision = v->entry.revision;
  if (v->entry.has_referenced_by) {
    Immudb__Schema__Reference *r = aalloc(&a, sizeof *r);
    immudb__schema__reference__init(r);
    r->tx = v->entry.referenced_by.tx;
    r->key = pbd(v->entry.referenced_by.key, v->entry.referenced_by.key_len);
    r->attx = v->entry.referenced_by.at_tx;
    r->revision = v->entry.referenced_by.revision;
    e->referencedby = r;
    rkey = v->entry.referenced_by.key;
    rklen = v->entry.referenced_by.key_len;
  } else {
    rkey = v->entry.key;
    rklen = v->entry.key_len;
  }
  /* The KV metadata of the proven entry, as a HEAD server sends it. */
  for (size_t i = 0; i < v->vtx.tx.nentries; i++) {
    const immu_db_tx_entry *te = &v->vtx.tx.entries[i];
    if (te->key_len == rklen + 1 && te->key[0] == 0 &&
        memcmp(te->key + 1, rkey, rklen) == 0 && te->md_len > 0) {
      if (e->referencedby != NULL)
        e->referencedby->metadata = conv_kvmd(&a, te->md, te->md_len);
      else
        e->metadata = conv_kvmd(&a, te->md, te->md_len);
    }
  }
  ip->leaf = (int32_t)v->inclusion.leaf;
  ip->width = (int32_t)v->inclusion.width;
  terms = aalloc(&a, (v->inclusion.nterms + 1) * sizeof *terms);
  for (size_t i = 0; i < v->inclusion.nterms; i++)
    terms[i] = pbdig(&v->inclusion.terms[i]);
  ip->terms = terms;
  ip->n_terms = v->inclusion.nterms;
  m->entry = e;
  m->verifiabletx = conv_vtx(&a, &v->vtx, s);
  m->inclusionproof = ip;
  b = pack(&m->base, len);
  afree(&a);
  return b;
}

static Immudb__Schema__VerifiableTx *unpack_vtx(const uint8_t *b, size_t n) {
  return (Immudb__Schema__VerifiableTx *)protobuf_c_message_unpack(
      &immudb__schema__verifiable_tx__descriptor, &immu__cli_pb_allocator, n,
      b);
}

static Immudb__Schema__VerifiableEntry *unpack_ventry(const uint8_t *b,
                                                      size_t n) {
  return (Immudb__Schema__VerifiableEntry *)protobuf_c_message_unpack(
      &immudb__schema__verifiable_entry__descriptor, &immu__cli_pb_allocator,
      n, b);
}

#define PBFREE(m)                                                              \
  do {                                                                         \
    if ((m) != NULL)                                                           \
      protobuf_c_message_free_unpacked(&(m)->base, &immu__cli_pb_allocator);   \
  } while (0)

/* ------------------------------------------------------------------ */
/* Helpers: verification contexts, engine-backed fetch                 */
/* ------------------------------------------------------------------ */

static immu__cli_vctx vctx(const immu__cli_state *trusted,
                           const immu_verifier *v) {
  immu__cli_vctx c;
  c.db = DBNAME;
  c.trusted = trusted;
  c.verifier = v;
  c.err = g_err;
  c.errlen = sizeof g_err;
  g_err[0] = '\0';
  return c;
}

static const immu__cli_state none_state; /* tx_id 0 */

static void assert_state(const fixture *fx, const immu__cli_state *s,
                         uint64_t t) {
  assert_int_equal(s->tx_id, t);
  assert_true(immu_digest_eq(&s->alh, &fx->st[t].alh));
  assert_string_equal(s->db, DBNAME);
}

typedef void (*hook_fn)(int call, Immudb__Schema__VerifiableEntry *m,
                        void *arg);

/* A VerifiableGet served by the engine, optionally corrupted by |hook|. */
typedef struct fetch_ctx {
  fixture *fx;
  const immu_signer *signer;
  hook_fn hook;
  void *hook_arg;
  int calls;
} fetch_ctx;

static int engine_fetch(void *arg, const immu_db_key_req *req,
                        uint64_t prove_since_tx,
                        Immudb__Schema__VerifiableEntry **out, char *err,
                        size_t errlen) {
  fetch_ctx *f = arg;
  immu_db_verifiable_entry ve;
  uint8_t *b;
  size_t n;
  int rc = immu_db_verifiable_get(f->fx->db, req, prove_since_tx, &ve);
  if (rc != 0) {
    snprintf(err, errlen, "engine: %s", immu_db_last_error());
    return rc;
  }
  b = pack_ventry(&ve, f->signer, &n);
  immu_db_verifiable_entry_clear(&ve);
  *out = unpack_ventry(b, n);
  free(b);
  assert_non_null(*out);
  if (f->hook != NULL)
    f->hook(f->calls, *out, f->hook_arg);
  f->calls++;
  return 0;
}

/* Verified get through the flow with the engine as server. */
static int vget(fixture *fx, const immu__cli_state *trusted,
                const immu_verifier *v, const char *key, uint64_t at_tx,
                hook_fn hook, void *hook_arg, immu__cli_state *newst,
                immu_client_entry *out) {
  fetch_ctx f = {fx, fx->signer, hook, hook_arg, 0};
  immu__cli_vctx c = vctx(trusted, v);
  immu_db_key_req r;
  memset(&r, 0, sizeof r);
  r.key = U8(key);
  r.key_len = strlen(key);
  r.at_tx = at_tx;
  return immu__cli_verified_get_flow(&c, &r, engine_fetch, &f, newst, out);
}

/* VerifiableTxById(t, proveSinceTx = s) from the engine, packed. */
static uint8_t *vtx_by_id_bytes(fixture *fx, uint64_t t, uint64_t s,
                                const immu_signer *signer, size_t *n) {
  immu_db_verifiable_tx v;
  uint8_t *b;
  OK(immu_db_verifiable_tx_by_id(fx->db, t, s, &v));
  b = pack_vtx(&v, signer, n);
  immu_db_verifiable_tx_clear(&v);
  return b;
}

static int verify_txid_bytes(const uint8_t *b, size_t n,
                             const immu__cli_state *trusted,
                             const immu_verifier *v, uint64_t t,
                             immu__cli_state *newst, immu_client_tx *out) {
  Immudb__Schema__VerifiableTx *m = unpack_vtx(b, n);
  immu__cli_vctx c = vctx(trusted, v);
  int rc;
  if (m == NULL)
    return IMMU_EPROTO;
  rc = immu__cli_verify_tx_by_id(m, &c, t, newst, out);
  PBFREE(m);
  return rc;
}

/* ------------------------------------------------------------------ */
/* Building a history with verified writes                             */
/* ------------------------------------------------------------------ */

typedef struct hist {
  uint64_t key_tx[8]; /* last tx that set k<i> */
  char key_val[8][96];
} hist;

/* Performs the write of step |i| with the engine, verifies it as the
 * client would from |*trusted| and advances |*trusted|. */
static void verified_write_step(fixture *fx, int i, hist *h,
                                immu__cli_state *trusted) {
  immu_db_verifiable_tx v;
  immu__cli_expect exp[3];
  size_t nexp = 0;
  char k[3][16], val[3][32];
  int rc, kind = i % 5;
  uint64_t since = trusted->tx_id;
  int ki = i % 7;

  memset(exp, 0, sizeof exp);
  if (h->key_tx[ki] == 0 || i < 7)
    kind = kind == 1 ? 1 : 0; /* refs and zadds need an existing key */
  if (kind == 0 || kind == 1) {
    immu_db_kv kvs[3];
    size_t n = kind == 0 ? 1 : 3;
    for (size_t j = 0; j < n; j++) {
      int kj = (int)((size_t)ki + j) % 7;
      snprintf(k[j], sizeof k[j], "k%d", kj);
      snprintf(val[j], sizeof val[j], "v%d-%zu", i, j);
      kvs[j] = (immu_db_kv){U8(k[j]), strlen(k[j]), U8(val[j]),
                            strlen(val[j])};
      OK(immu__cli_expect_kv(&exp[j], U8(k[j]), strlen(k[j]), U8(val[j]),
                             strlen(val[j])));
    }
    nexp = n;
    OK(immu_db_verifiable_set(fx->db, kvs, n, 0, since, &v));
    for (size_t j = 0; j < n; j++) {
      int kj = (int)((size_t)ki + j) % 7;
      h->key_tx[kj] = v.tx.header.id;
      snprintf(h->key_val[kj], sizeof h->key_val[kj], "%s", val[j]);
    }
  } else if (kind == 2 || kind == 3) {
    immu_db_ref_req r;
    snprintf(k[0], sizeof k[0], "r%d", i);
    snprintf(k[1], sizeof k[1], "k%d", ki);
    memset(&r, 0, sizeof r);
    r.key = U8(k[0]);
    r.key_len = strlen(k[0]);
    r.referenced_key = U8(k[1]);
    r.referenced_key_len = strlen(k[1]);
    if (kind == 3) {
      r.at_tx = h->key_tx[ki];
      r.bound_ref = 1;
    }
    OK(immu__cli_expect_ref(&exp[0], r.key, r.key_len, r.referenced_key,
                            r.referenced_key_len, r.at_tx));
    nexp = 1;
    OK(immu_db_verifiable_set_reference(fx->db, &r, since, &v));
  } else {
    immu_db_zadd_req z;
    snprintf(k[1], sizeof k[1], "k%d", ki);
    memset(&z, 0, sizeof z);
    z.set = U8("myset");
    z.set_len = 5;
    z.score = i * 1.5 - 10.0;
    z.key = U8(k[1]);
    z.key_len = strlen(k[1]);
    if (i % 2) {
      z.at_tx = h->key_tx[ki];
      z.bound_ref = 1;
    }
    OK(immu__cli_expect_zadd(&exp[0], z.set, z.set_len, z.score, z.key,
                             z.key_len, z.at_tx));
    nexp = 1;
    OK(immu_db_verifiable_zadd(fx->db, &z, since, &v));
  }
  size_t n;
  uint8_t *b = pack_vtx(&v, fx->signer, &n);
  uint64_t x = v.tx.header.id;
  immu_db_verifiable_tx_clear(&v);
  record_states(fx);

  Immudb__Schema__VerifiableTx *m = unpack_vtx(b, n);
  immu__cli_state newst;
  immu_tx_header hdr;
  immu__cli_vctx c = vctx(trusted, fx->verifier);
  assert_non_null(m);
  rc = immu__cli_verify_write(m, &c, exp, nexp, &newst, &hdr);
  assert_rc(rc, 0);
  assert_state(fx, &newst, x);
  assert_int_equal(hdr.id, x);
  assert_true(newst.sig_len > 0);

  /* The same reply from an empty trusted state: a proof (x, x) is needed,
   * so only accepted when the server was asked with proveSinceTx 0. */
  if (since == 0) {
    immu__cli_vctx c0 = vctx(&none_state, NULL);
    assert_rc(immu__cli_verify_write(m, &c0, exp, nexp, &newst, NULL), 0);
  }
  /* Expecting another value or a missing entry is rejected. */
  if (nexp > 1) {
    immu__cli_vctx c2 = vctx(trusted, fx->verifier);
    assert_rc(immu__cli_verify_write(m, &c2, exp, nexp - 1, &newst, NULL),
              IMMU_EVERIFY);
  }
  exp[0].hval.b[0] ^= 1;
  {
    immu__cli_vctx c3 = vctx(trusted, fx->verifier);
    assert_rc(immu__cli_verify_write(m, &c3, exp, nexp, &newst, NULL),
              IMMU_EVERIFY);
  }
  exp[0].hval.b[0] ^= 1;
  PBFREE(m);
  free(b);
  for (size_t j = 0; j < 3; j++)
    immu__cli_expect_clear(&exp[j]);
  trusted->tx_id = x;
  trusted->alh = fx->st[x].alh;
  snprintf(trusted->db, sizeof trusted->db, "%s", DBNAME);
}

static void build_history(fixture *fx, int steps, hist *h,
                          immu__cli_state *trusted) {
  for (int i = 0; i < steps; i++) {
    verified_write_step(fx, i, h, trusted);
    /* Some multi-entry txs of every kind, unverified (ExecAll). */
    if (i % 9 == 8) {
      immu_db_op ops[3];
      memset(ops, 0, sizeof ops);
      ops[0].kind = IMMU_DB_OP_KV;
      ops[0].u.kv = (immu_db_kv){U8("ex"), 2, U8("exval"), 5};
      ops[1].kind = IMMU_DB_OP_ZADD;
      ops[1].u.zadd.set = U8("exset");
      ops[1].u.zadd.set_len = 5;
      ops[1].u.zadd.key = U8("ex");
      ops[1].u.zadd.key_len = 2;
      ops[1].u.zadd.score = 3;
      ops[2].kind = IMMU_DB_OP_REF;
      ops[2].u.ref.key = U8("exref");
      ops[2].u.ref.key_len = 5;
      ops[2].u.ref.referenced_key = U8("ex");
      ops[2].u.ref.referenced_key_len = 2;
      OK(immu_db_exec_all(fx->db, ops, 3, 0, NULL));
      record_states(fx);
    }
  }
}

/* ------------------------------------------------------------------ */
/* Tests: genuine replies                                              */
/* ------------------------------------------------------------------ */

static void test_genuine_writes_and_reads(void **state) {
  fixture *fx = *state;
  immu__cli_state trusted = none_state, newst;
  hist h;
  memset(&h, 0, sizeof h);

  build_history(fx, 60, &h, &trusted);
  assert_state(fx, &trusted, fx->last);

  /* VerifiableTxById for every tx from many trusted states (both
   * directions of the dual proof, and none). */
  uint64_t starts[] = {0, 1, 2, 3, 4, 5, 8, 13, 30, fx->last - 1, fx->last};
  for (size_t si = 0; si < sizeof starts / sizeof *starts; si++) {
    uint64_t s = starts[si];
    const immu__cli_state *tr = s ? &fx->st[s] : &none_state;
    for (uint64_t t = 1; t <= fx->last; t++) {
      size_t n;
      uint8_t *b = vtx_by_id_bytes(fx, t, s, fx->signer, &n);
      immu_client_tx tx;
      assert_rc(verify_txid_bytes(b, n, tr, fx->verifier, t, &newst, &tx), 0);
      assert_state(fx, &newst, s > t ? s : t);
      assert_int_equal(tx.header.id, t);
      assert_true(immu_digest_eq(&tx.alh, &fx->st[t].alh));
      assert_true(tx.nentries >= 1);
      immu_client_tx_clear(&tx);
      /* Asking for another tx than the one sent is rejected. */
      if (t > 1)
        assert_rc(verify_txid_bytes(b, n, tr, fx->verifier, t - 1, &newst,
                                    NULL),
                  IMMU_EVERIFY);
      free(b);
    }
  }

  /* VerifiedGet of every key (plain, references bound and unbound) from
   * several trusted states; the value must be the engine's latest. */
  const char *keys[] = {"k0", "k1", "k2", "k3", "k4", "k5", "k6",
                        "r7", "r8", "r12", "r13", "r17", "r18", "ex",
                        "exref"};
  uint64_t gstarts[] = {0, 1, 7, 20, fx->last};
  for (size_t si = 0; si < sizeof gstarts / sizeof *gstarts; si++) {
    const immu__cli_state *tr =
        gstarts[si] ? &fx->st[gstarts[si]] : &none_state;
    for (size_t ki = 0; ki < sizeof keys / sizeof *keys; ki++) {
      immu_client_entry e;
      immu_db_entry want;
      immu_db_key_req r;
      memset(&r, 0, sizeof r);
      r.key = U8(keys[ki]);
      r.key_len = strlen(keys[ki]);
      if (immu_db_get(fx->db, &r, &want) != 0)
        continue; /* e.g. a reference name that was not created */
      assert_rc(vget(fx, tr, fx->verifier, keys[ki], 0, NULL, NULL, &newst,
                     &e),
                0);
      assert_int_equal(e.tx, want.tx);
      assert_memory_equal(e.value, want.value, want.value_len);
      assert_int_equal(e.value_len, want.value_len);
      assert_int_equal(e.has_referenced_by, want.has_referenced_by);
      if (e.has_referenced_by) {
        assert_int_equal(e.referenced_by.tx, want.referenced_by.tx);
        assert_int_equal(e.referenced_by.at_tx, want.referenced_by.at_tx);
      }
      assert_true(newst.tx_id >= tr->tx_id);
      assert_true(immu_digest_eq(&newst.alh, &fx->st[newst.tx_id].alh));
      /* At its own tx too. */
      if (!e.has_referenced_by) {
        immu_client_entry e2;
        assert_rc(vget(fx, tr, fx->verifier, keys[ki], e.tx, NULL, NULL,
                       &newst, &e2),
                  0);
        assert_int_equal(e2.tx, e.tx);
        immu_client_entry_clear(&e2);
      }
      immu_client_entry_clear(&e);
      immu_db_entry_clear(&want);
    }
  }
  /* Every historic version of k3 at its tx. */
  for (uint64_t t = 1; t <= fx->last; t++) {
    immu_client_entry e;
    immu_db_key_req r;
    immu_db_entry want;
    memset(&r, 0, sizeof r);
    r.key = U8("k3");
    r.key_len = 2;
    r.at_tx = t;
    if (immu_db_get(fx->db, &r, &want) != 0)
      continue;
    assert_rc(vget(fx, &fx->st[fx->last], fx->verifier, "k3", t, NULL, NULL,
                   &newst, &e),
              0);
    assert_int_equal(e.tx, t);
    assert_memory_equal(e.value, want.value, want.value_len);
    assert_state(fx, &newst, fx->last); /* the trusted state stays */
    immu_client_entry_clear(&e);
    immu_db_entry_clear(&want);
  }
}

/* Header version 1 (KV metadata) and version 0 txs in one chain. */
static void test_header_v1(void **state) {
  fixture *fx = *state;
  immu__cli_state trusted = none_state, newst;
  hist h;
  uint8_t key[] = {0x00, 'm', 'd', 'k'};
  uint8_t val[] = {0x00, 'v', 'a', 'l'};
  uint8_t md[9] = {0x01};
  immu_store_entry se;
  immu_tx_header hdr;
  immu_digest alh;

  memset(&h, 0, sizeof h);
  build_history(fx, 5, &h, &trusted);
  immu__put_u64(md + 1, 4102444800u); /* expires 2100-01-01 */
  memset(&se, 0, sizeof se);
  se.key = key;
  se.klen = sizeof key;
  se.md = md;
  se.mdlen = sizeof md;
  se.value = val;
  se.vlen = sizeof val;
  OK(immu_store_commit(immu_db_store(fx->db), &se, 1, NULL, NULL, &hdr, &alh));
  assert_int_equal(hdr.version, 1);
  uint64_t v1tx = hdr.id;
  build_history(fx, 5, &h, &trusted); /* v0 txs after the v1 one */
  record_states(fx);

  for (uint64_t s = 0; s <= fx->last; s++) {
    size_t n;
    uint8_t *b = vtx_by_id_bytes(fx, v1tx, s, fx->signer, &n);
    immu_client_tx tx;
    assert_rc(verify_txid_bytes(b, n, s ? &fx->st[s] : &none_state,
                                fx->verifier, v1tx, &newst, &tx),
              0);
    assert_int_equal(tx.header.version, 1);
    assert_int_equal(tx.entries[0].md.has_expiration, 1);
    assert_int_equal(tx.entries[0].md.expires_at, 4102444800);
    immu_client_tx_clear(&tx);
    free(b);
  }
  /* A v1 tx's entry digest must include the metadata: dropping it from the
   * reply breaks Eh. */
  {
    size_t n;
    uint8_t *b = vtx_by_id_bytes(fx, v1tx, 1, fx->signer, &n);
    Immudb__Schema__VerifiableTx *m = unpack_vtx(b, n);
    immu__cli_vctx c = vctx(&fx->st[1], fx->verifier);
    Immudb__Schema__KVMetadata *saved = m->tx->entries[0]->metadata;
    m->tx->entries[0]->metadata = NULL;
    assert_rc(immu__cli_verify_tx_by_id(m, &c, v1tx, &newst, NULL),
              IMMU_EVERIFY);
    m->tx->entries[0]->metadata = saved;
    /* Declaring the v1 header as v0 breaks its Alh. */
    Immudb__Schema__TxMetadata *tmd = m->tx->header->metadata;
    m->tx->header->version = 0;
    m->tx->header->metadata = NULL;
    c = vctx(&fx->st[1], fx->verifier);
    assert_rc(immu__cli_verify_tx_by_id(m, &c, v1tx, &newst, NULL),
              IMMU_EVERIFY);
    m->tx->header->version = 1;
    m->tx->header->metadata = tmd;
    PBFREE(m);
    free(b);
  }
  /* VerifiedGet of the v1 entry (its metadata is part of the digest). */
  {
    immu_client_entry e;
    immu_db_entry want;
    immu_db_key_req r;
    memset(&r, 0, sizeof r);
    r.key = U8("mdk");
    r.key_len = 3;
    if (immu_db_get(fx->db, &r, &want) == 0) {
      assert_rc(vget(fx, &fx->st[2], fx->verifier, "mdk", 0, NULL, NULL,
                     &newst, &e),
                0);
      assert_int_equal(e.tx, v1tx);
      assert_int_equal(e.md.has_expiration, 1);
      immu_client_entry_clear(&e);
      immu_db_entry_clear(&want);
    }
  }
}

/* ------------------------------------------------------------------ */
/* Tests: tampering                                                    */
/* ------------------------------------------------------------------ */

/* Flips every byte of a bytes field in turn; each flip must be rejected by
 * |check| (which returns the verifier's result). */
typedef int (*check_fn)(void *arg);

static void flip_all(ProtobufCBinaryData *b, check_fn check, void *arg,
                     const char *what) {
  for (size_t i = 0; i < b->len; i++) {
    b->data[i] ^= 0x5a;
    int rc = check(arg);
    b->data[i] ^= 0x5a;
    if (rc == 0)
      fail_msg("%s: flipping byte %zu was accepted", what, i);
  }
}

static void flip_list(ProtobufCBinaryData *v, size_t n, check_fn check,
                      void *arg, const char *what) {
  char name[128];
  for (size_t i = 0; i < n; i++) {
    snprintf(name, sizeof name, "%s[%zu]", what, i);
    flip_all(&v[i], check, arg, name);
  }
}

/* Header fields: every numeric field nudged, every digest flipped. */
static void tamper_header(Immudb__Schema__TxHeader *h, check_fn check,
                          void *arg, const char *what) {
  char name[128];
#define NUDGE(field)                                                           \
  do {                                                                         \
    h->field += 1;                                                             \
    if (check(arg) == 0)                                                       \
      fail_msg("%s." #field " + 1 accepted", what);                            \
    h->field -= 2;                                                             \
    if (check(arg) == 0)                                                       \
      fail_msg("%s." #field " - 1 accepted", what);                            \
    h->field += 1;                                                             \
  } while (0)
  NUDGE(id);
  NUDGE(ts);
  NUDGE(nentries);
  NUDGE(bltxid);
  NUDGE(version);
#undef NUDGE
  snprintf(name, sizeof name, "%s.prevAlh", what);
  flip_all(&h->prevalh, check, arg, name);
  snprintf(name, sizeof name, "%s.eH", what);
  flip_all(&h->eh, check, arg, name);
  snprintf(name, sizeof name, "%s.blRoot", what);
  flip_all(&h->blroot, check, arg, name);
  /* A shortened digest is malformed. */
  h->eh.len--;
  if (check(arg) == 0)
    fail_msg("%s: 31-byte eH accepted", what);
  h->eh.len++;
}

static void tamper_dual_proof(Immudb__Schema__DualProof *dp, check_fn check,
                              void *arg) {
  tamper_header(dp->sourcetxheader, check, arg, "dualProof.source");
  tamper_header(dp->targettxheader, check, arg, "dualProof.target");
  flip_list(dp->inclusionproof, dp->n_inclusionproof, check, arg,
            "inclusionProof");
  flip_list(dp->consistencyproof, dp->n_consistencyproof, check, arg,
            "consistencyProof");
  flip_list(dp->lastinclusionproof, dp->n_lastinclusionproof, check, arg,
            "lastInclusionProof");
  flip_all(&dp->targetbltxalh, check, arg, "targetBlTxAlh");
  flip_list(dp->linearproof->terms, dp->linearproof->n_terms, check, arg,
            "linearProof.terms");
  dp->linearproof->sourcetxid++;
  assert_int_not_equal(check(arg), 0);
  dp->linearproof->sourcetxid--;
  dp->linearproof->targettxid++;
  assert_int_not_equal(check(arg), 0);
  dp->linearproof->targettxid--;
  /* Dropping a term of any list. */
  if (dp->n_inclusionproof > 0) {
    dp->n_inclusionproof--;
    assert_int_not_equal(check(arg), 0);
    dp->n_inclusionproof++;
  }
  if (dp->n_consistencyproof > 0) {
    dp->n_consistencyproof--;
    assert_int_not_equal(check(arg), 0);
    dp->n_consistencyproof++;
  }
  if (dp->n_lastinclusionproof > 0) {
    dp->n_lastinclusionproof--;
    assert_int_not_equal(check(arg), 0);
    dp->n_lastinclusionproof++;
  }
  dp->linearproof->n_terms--;
  assert_int_not_equal(check(arg), 0);
  dp->linearproof->n_terms++;
}

static void tamper_tx(Immudb__Schema__Tx *tx, check_fn check, void *arg) {
  char name[64];
  tamper_header(tx->header, check, arg, "tx.header");
  for (size_t i = 0; i < tx->n_entries; i++) {
    snprintf(name, sizeof name, "tx.entries[%zu].key", i);
    flip_all(&tx->entries[i]->key, check, arg, name);
    snprintf(name, sizeof name, "tx.entries[%zu].hValue", i);
    flip_all(&tx->entries[i]->hvalue, check, arg, name);
  }
  /* A missing entry, or entries swapped. */
  tx->n_entries--;
  assert_int_not_equal(check(arg), 0);
  tx->n_entries++;
  if (tx->n_entries >= 2) {
    Immudb__Schema__TxEntry *e = tx->entries[0];
    tx->entries[0] = tx->entries[1];
    tx->entries[1] = e;
    assert_int_not_equal(check(arg), 0);
    tx->entries[1] = tx->entries[0];
    tx->entries[0] = e;
  }
}

typedef struct txid_check {
  Immudb__Schema__VerifiableTx *m;
  const immu__cli_state *trusted;
  const immu_verifier *v;
  uint64_t t;
} txid_check;

static int check_txid(void *arg) {
  txid_check *k = arg;
  g_checks++;
  immu__cli_state newst;
  immu__cli_vctx c = vctx(k->trusted, k->v);
  return immu__cli_verify_tx_by_id(k->m, &c, k->t, &newst, NULL);
}

static void test_tamper_tx_by_id(void **state) {
  fixture *fx = *state;
  g_checks = 0;
  immu__cli_state trusted = none_state;
  hist h;
  memset(&h, 0, sizeof h);
  build_history(fx, 20, &h, &trusted);

  /* Pairs where every part of the dual proof is used: s < T.BlTxID,
   * S.BlTxID > 0, T.BlTxID > 0; and the reverse direction. */
  struct {
    uint64_t t, s;
  } cases[] = {{fx->last, 3}, {9, 2}, {5, fx->last}, {fx->last, fx->last}};
  for (size_t ci = 0; ci < sizeof cases / sizeof *cases; ci++) {
    size_t n;
    uint8_t *b =
        vtx_by_id_bytes(fx, cases[ci].t, cases[ci].s, fx->signer, &n);
    txid_check k = {unpack_vtx(b, n), &fx->st[cases[ci].s], fx->verifier,
                    cases[ci].t};
    assert_non_null(k.m);
    assert_rc(check_txid(&k), 0);
    tamper_tx(k.m->tx, check_txid, &k);
    tamper_dual_proof(k.m->dualproof, check_txid, &k);
    flip_all(&k.m->signature->signature, check_txid, &k, "signature");
    /* Without the checks of a key, a bad signature does not matter... */
    k.m->signature->signature.data[5] ^= 1;
    k.v = NULL;
    assert_rc(check_txid(&k), 0);
    /* ...with another key, the genuine one fails. */
    k.m->signature->signature.data[5] ^= 1;
    k.v = fx->other;
    assert_rc(check_txid(&k), IMMU_EVERIFY);
    /* No signature at all with a key configured. */
    k.v = fx->verifier;
    Immudb__Schema__Signature *sig = k.m->signature;
    k.m->signature = NULL;
    assert_rc(check_txid(&k), IMMU_EVERIFY);
    k.m->signature = sig;
    /* Another trusted state (a forked history) is rejected. */
    immu__cli_state forged = fx->st[cases[ci].s];
    forged.alh.b[7] ^= 1;
    k.trusted = &forged;
    assert_rc(check_txid(&k), IMMU_EVERIFY);
    PBFREE(k.m);
    free(b);
  }
  print_message("VerifiableTxById: %lu verifications of tampered replies\n",
                g_checks);
}

/* A signature over another state: the right key, the wrong content. */
static void test_signature_of_other_state(void **state) {
  fixture *fx = *state;
  immu__cli_state trusted = none_state, newst;
  hist h;
  size_t n1, n2;
  memset(&h, 0, sizeof h);
  build_history(fx, 8, &h, &trusted);
  uint8_t *b1 = vtx_by_id_bytes(fx, 5, 3, fx->signer, &n1);
  uint8_t *b2 = vtx_by_id_bytes(fx, 6, 3, fx->signer, &n2);
  Immudb__Schema__VerifiableTx *m1 = unpack_vtx(b1, n1);
  Immudb__Schema__VerifiableTx *m2 = unpack_vtx(b2, n2);
  immu__cli_vctx c = vctx(&fx->st[3], fx->verifier);
  Immudb__Schema__Signature *s1 = m1->signature;
  assert_rc(immu__cli_verify_tx_by_id(m1, &c, 5, &newst, NULL), 0);
  m1->signature = m2->signature;
  c = vctx(&fx->st[3], fx->verifier);
  assert_rc(immu__cli_verify_tx_by_id(m1, &c, 5, &newst, NULL), IMMU_EVERIFY);
  m1->signature = s1;
  /* The state signed for another database. */
  c = vctx(&fx->st[3], fx->verifier);
  c.db = "otherdb";
  assert_rc(immu__cli_verify_tx_by_id(m1, &c, 5, &newst, NULL), IMMU_EVERIFY);
  PBFREE(m1);
  PBFREE(m2);
  free(b1);
  free(b2);
}

typedef struct get_check {
  Immudb__Schema__VerifiableEntry *m;
  const immu__cli_state *trusted;
  const immu_verifier *v;
  const char *key;
  uint64_t at_tx;
} get_check;

static int check_get(void *arg) {
  get_check *k = arg;
  g_checks++;
  immu__cli_state newst;
  immu_client_entry e;
  immu__cli_vctx c = vctx(k->trusted, k->v);
  int rc = immu__cli_verify_get(k->m, &c, U8(k->key), strlen(k->key),
                                k->at_tx, &newst, &e);
  immu_client_entry_clear(&e);
  return rc;
}

static void test_tamper_get(void **state) {
  fixture *fx = *state;
  g_checks = 0;
  immu__cli_state trusted = none_state;
  hist h;
  memset(&h, 0, sizeof h);
  build_history(fx, 30, &h, &trusted);

  const char *keys[] = {"k2", "r12", "r13"};
  uint64_t starts[] = {2, fx->last};
  for (size_t ki = 0; ki < 3; ki++) {
    for (size_t si = 0; si < 2; si++) {
      immu_db_verifiable_entry ve;
      immu_db_key_req r;
      size_t n;
      memset(&r, 0, sizeof r);
      r.key = U8(keys[ki]);
      r.key_len = strlen(keys[ki]);
      OK(immu_db_verifiable_get(fx->db, &r, starts[si], &ve));
      uint8_t *b = pack_ventry(&ve, fx->signer, &n);
      immu_db_verifiable_entry_clear(&ve);
      get_check k = {unpack_ventry(b, n), &fx->st[starts[si]], fx->verifier,
                     keys[ki], 0};
      assert_rc(check_get(&k), 0);
      Immudb__Schema__Entry *e = k.m->entry;
      if (e->referencedby == NULL) {
        flip_all(&e->value, check_get, &k, "entry.value");
        flip_all(&e->key, check_get, &k, "entry.key");
      } else {
        /* The referenced key is hashed into the reference's value. */
        flip_all(&e->key, check_get, &k, "entry.key (referenced)");
        flip_all(&e->referencedby->key, check_get, &k, "referencedBy.key");
        e->referencedby->attx ^= 1;
        assert_int_not_equal(check_get(&k), 0);
        e->referencedby->attx ^= 1;
        e->referencedby->tx++;
        assert_int_not_equal(check_get(&k), 0);
        e->referencedby->tx--;
        /* A plain entry posing as the reference is rejected. */
        Immudb__Schema__Reference *rb = e->referencedby;
        e->referencedby = NULL;
        assert_int_not_equal(check_get(&k), 0);
        e->referencedby = rb;
      }
      if (e->referencedby == NULL) {
        e->tx++;
        assert_int_not_equal(check_get(&k), 0);
        e->tx--;
      }
      /* A deleted flag the server did not prove. */
      {
        Immudb__Schema__KVMetadata md = IMMUDB__SCHEMA__KVMETADATA__INIT;
        md.deleted = 1;
        Immudb__Schema__KVMetadata *saved = e->metadata;
        e->metadata = &md;
        if (e->referencedby == NULL)
          assert_int_not_equal(check_get(&k), 0);
        e->metadata = saved;
      }
      /* The htree inclusion proof. */
      Immudb__Schema__InclusionProof *ip = k.m->inclusionproof;
      flip_list(ip->terms, ip->n_terms, check_get, &k, "inclusion.terms");
      for (int d = -2; d <= 2; d++) {
        if (d == 0)
          continue;
        ip->leaf += d;
        if (check_get(&k) == 0)
          fail_msg("inclusion leaf %+d accepted", d);
        ip->leaf -= d;
        ip->width += d;
        if (check_get(&k) == 0)
          fail_msg("inclusion width %+d accepted", d);
        ip->width -= d;
      }
      if (ip->n_terms > 0) {
        ip->n_terms--;
        assert_int_not_equal(check_get(&k), 0);
        ip->n_terms++;
      }
      tamper_tx(k.m->verifiabletx->tx, check_get, &k);
      tamper_dual_proof(k.m->verifiabletx->dualproof, check_get, &k);
      flip_all(&k.m->verifiabletx->signature->signature, check_get, &k,
               "signature");
      /* The answer for another key, or at another tx. */
      k.key = "k1";
      assert_int_not_equal(check_get(&k), 0);
      k.key = keys[ki];
      k.at_tx = (e->referencedby ? e->referencedby->tx : e->tx) + 1;
      assert_int_not_equal(check_get(&k), 0);
      k.at_tx = 0;
      assert_rc(check_get(&k), 0);
      PBFREE(k.m);
      free(b);
    }
  }
  print_message("VerifiableGet: %lu verifications of tampered replies\n",
                g_checks);
}

/* Writes: replayed, swapped and foreign replies. */
static void test_write_swaps(void **state) {
  fixture *fx = *state;
  immu__cli_state trusted = none_state, newst;
  immu_db_verifiable_tx v;
  immu__cli_expect e1, e2;
  hist h;
  size_t n1, n2;
  memset(&h, 0, sizeof h);
  build_history(fx, 10, &h, &trusted);

  immu_db_kv kv1 = {U8("w"), 1, U8("one"), 3};
  immu_db_kv kv2 = {U8("w"), 1, U8("two"), 3};
  OK(immu__cli_expect_kv(&e1, U8("w"), 1, U8("one"), 3));
  OK(immu__cli_expect_kv(&e2, U8("w"), 1, U8("two"), 3));
  OK(immu_db_verifiable_set(fx->db, &kv1, 1, 0, trusted.tx_id, &v));
  uint8_t *b1 = pack_vtx(&v, fx->signer, &n1);
  immu_db_verifiable_tx_clear(&v);
  record_states(fx);
  immu__cli_state s1 = fx->st[fx->last];
  OK(immu_db_verifiable_set(fx->db, &kv2, 1, 0, s1.tx_id, &v));
  uint8_t *b2 = pack_vtx(&v, fx->signer, &n2);
  immu_db_verifiable_tx_clear(&v);
  record_states(fx);

  Immudb__Schema__VerifiableTx *m1 = unpack_vtx(b1, n1);
  Immudb__Schema__VerifiableTx *m2 = unpack_vtx(b2, n2);
  immu__cli_vctx c = vctx(&trusted, fx->verifier);
  assert_rc(immu__cli_verify_write(m1, &c, &e1, 1, &newst, NULL), 0);
  /* The reply of the first write for the second request. */
  c = vctx(&trusted, fx->verifier);
  assert_rc(immu__cli_verify_write(m1, &c, &e2, 1, &newst, NULL),
            IMMU_EVERIFY);
  /* Replay of an old write reply once the state moved on. */
  c = vctx(&s1, fx->verifier);
  assert_rc(immu__cli_verify_write(m1, &c, &e1, 1, &newst, NULL),
            IMMU_EVERIFY);
  c = vctx(&s1, fx->verifier);
  assert_rc(immu__cli_verify_write(m2, &c, &e2, 1, &newst, NULL), 0);
  /* A genuine reply proven from another state than ours. */
  c = vctx(&trusted, fx->verifier);
  assert_rc(immu__cli_verify_write(m2, &c, &e2, 1, &newst, NULL),
            IMMU_EVERIFY);
  /* Extra KV metadata on our entry. */
  {
    Immudb__Schema__KVMetadata md = IMMUDB__SCHEMA__KVMETADATA__INIT;
    md.nonindexable = 1;
    m2->tx->entries[0]->metadata = &md;
    c = vctx(&s1, fx->verifier);
    assert_rc(immu__cli_verify_write(m2, &c, &e2, 1, &newst, NULL),
              IMMU_EVERIFY);
    m2->tx->entries[0]->metadata = NULL;
  }
  /* Missing parts. */
  {
    Immudb__Schema__DualProof *dp = m2->dualproof;
    m2->dualproof = NULL;
    c = vctx(&s1, fx->verifier);
    assert_rc(immu__cli_verify_write(m2, &c, &e2, 1, &newst, NULL),
              IMMU_EVERIFY);
    m2->dualproof = dp;
    Immudb__Schema__LinearProof *lp = dp->linearproof;
    dp->linearproof = NULL;
    c = vctx(&s1, fx->verifier);
    assert_rc(immu__cli_verify_write(m2, &c, &e2, 1, &newst, NULL),
              IMMU_EVERIFY);
    dp->linearproof = lp;
  }
  PBFREE(m1);
  PBFREE(m2);
  free(b1);
  free(b2);
  immu__cli_expect_clear(&e1);
  immu__cli_expect_clear(&e2);
}

/* A lying server on references: the referenced value is proven too. */
typedef struct lie {
  int on_call;
  int what;
} lie;

static void lie_hook(int call, Immudb__Schema__VerifiableEntry *m, void *arg) {
  lie *l = arg;
  if (call != l->on_call)
    return;
  switch (l->what) {
  case 0: /* change the value returned through the reference (in place) */
    if (m->entry->value.len > 0)
      m->entry->value.data[0] ^= 0x20;
    break;
  case 1: /* claim the value came from another tx */
    m->entry->tx += 1;
    break;
  default:
    break;
  }
}

static void test_reference_value_proven(void **state) {
  fixture *fx = *state;
  immu__cli_state newst;
  immu_client_entry e;
  immu_db_kv kv;
  immu_db_ref_req r;
  immu_tx_header h1, h2;

  kv = (immu_db_kv){U8("target"), 6, U8("first"), 5};
  OK(immu_db_set(fx->db, &kv, 1, 0, &h1));
  kv = (immu_db_kv){U8("target"), 6, U8("second"), 6};
  OK(immu_db_set(fx->db, &kv, 1, 0, &h2));
  memset(&r, 0, sizeof r);
  r.key = U8("ref");
  r.key_len = 3;
  r.referenced_key = U8("target");
  r.referenced_key_len = 6;
  OK(immu_db_set_reference(fx->db, &r, NULL));
  r.key = U8("bref");
  r.key_len = 4;
  r.at_tx = h1.id;
  r.bound_ref = 1;
  OK(immu_db_set_reference(fx->db, &r, NULL));
  kv = (immu_db_kv){U8("other"), 5, U8("x"), 1};
  OK(immu_db_set(fx->db, &kv, 1, 0, NULL));
  record_states(fx);

  /* Honest: unbound -> latest, bound -> its tx. */
  assert_rc(vget(fx, &fx->st[1], fx->verifier, "ref", 0, NULL, NULL, &newst,
                 &e),
            0);
  assert_int_equal(e.value_len, 6);
  assert_memory_equal(e.value, "second", 6);
  assert_int_equal(e.tx, h2.id);
  assert_true(e.has_referenced_by);
  assert_memory_equal(e.key, "target", 6);
  immu_client_entry_clear(&e);
  assert_rc(vget(fx, &fx->st[1], fx->verifier, "bref", 0, NULL, NULL, &newst,
                 &e),
            0);
  assert_memory_equal(e.value, "first", 5);
  assert_int_equal(e.tx, h1.id);
  immu_client_entry_clear(&e);

  /* The value substituted in the first answer: the reference entry alone
   * verifies (what the official clients check), the second call catches
   * it. */
  {
    immu_db_key_req kr;
    immu_db_verifiable_entry ve;
    size_t n;
    memset(&kr, 0, sizeof kr);
    kr.key = U8("ref");
    kr.key_len = 3;
    OK(immu_db_verifiable_get(fx->db, &kr, 1, &ve));
    uint8_t *b = pack_ventry(&ve, fx->signer, &n);
    immu_db_verifiable_entry_clear(&ve);
    Immudb__Schema__VerifiableEntry *m = unpack_ventry(b, n);
    ProtobufCBinaryData saved = m->entry->value;
    static uint8_t evil[] = "evil";
    m->entry->value = (ProtobufCBinaryData){4, evil};
    immu__cli_vctx c = vctx(&fx->st[1], fx->verifier);
    assert_rc(immu__cli_verify_get(m, &c, U8("ref"), 3, 0, &newst, &e), 0);
    immu_client_entry_clear(&e);
    m->entry->value = saved;
    PBFREE(m);
    free(b);
  }
  lie l = {0, 0};
  for (int what = 0; what <= 1; what++) {
    const char *keys[] = {"ref", "bref"};
    for (int ki = 0; ki < 2; ki++) {
      l.on_call = 0;
      l.what = what;
      int rc = vget(fx, &fx->st[1], fx->verifier, keys[ki], 0, lie_hook, &l,
                    &newst, &e);
      if (rc == 0)
        fail_msg("lie %d on %s accepted", what, keys[ki]);
      /* Caught by the proof of the referenced value (IMMU_EVERIFY), or the
       * server cannot back its claim (the key is not in that tx). */
      assert_true(rc == IMMU_EVERIFY || rc == IMMU_ENOTFOUND);
    }
  }
}

/* Every byte of a packed reply flipped: rejected, or the verified result
 * is exactly the genuine one. */
static void test_packed_byte_flips(void **state) {
  fixture *fx = *state;
  immu__cli_state trusted = none_state, gst, newst;
  hist h;
  size_t n;
  memset(&h, 0, sizeof h);
  build_history(fx, 12, &h, &trusted);

  /* VerifiableTxById(t = last, proveSinceTx = 3). */
  uint64_t t = fx->last;
  uint8_t *b = vtx_by_id_bytes(fx, t, 3, fx->signer, &n);
  immu_client_tx gtx, tx;
  assert_rc(verify_txid_bytes(b, n, &fx->st[3], fx->verifier, t, &gst, &gtx),
            0);
  size_t accepted = 0;
  for (size_t i = 0; i < n; i++) {
    static const uint8_t masks[] = {0x01, 0x80, 0xff};
    for (size_t mi = 0; mi < 3; mi++) {
      b[i] ^= masks[mi];
      int rc = verify_txid_bytes(b, n, &fx->st[3], fx->verifier, t, &newst,
                                 &tx);
      b[i] ^= masks[mi];
      if (rc != 0)
        continue;
      accepted++;
      assert_int_equal(newst.tx_id, gst.tx_id);
      assert_true(immu_digest_eq(&newst.alh, &gst.alh));
      assert_true(immu_digest_eq(&tx.alh, &gtx.alh));
      assert_int_equal(tx.nentries, gtx.nentries);
      for (size_t j = 0; j < tx.nentries; j++) {
        assert_memory_equal(tx.entries[j].key, gtx.entries[j].key,
                            gtx.entries[j].key_len);
        assert_true(
            immu_digest_eq(&tx.entries[j].hval, &gtx.entries[j].hval));
      }
      immu_client_tx_clear(&tx);
    }
  }
  print_message("VerifiableTx: %zu bytes, %zu harmless flips accepted\n", n,
                accepted);
  immu_client_tx_clear(&gtx);
  free(b);

  /* VerifiableGet of a reference and of a plain key. */
  const char *keys[] = {"k3", "r7", "r8"};
  for (int ki = 0; ki < 3; ki++) {
    immu_db_verifiable_entry ve;
    immu_db_key_req r;
    immu_client_entry ge, e;
    memset(&r, 0, sizeof r);
    r.key = U8(keys[ki]);
    r.key_len = strlen(keys[ki]);
    OK(immu_db_verifiable_get(fx->db, &r, 4, &ve));
    b = pack_ventry(&ve, fx->signer, &n);
    immu_db_verifiable_entry_clear(&ve);
    Immudb__Schema__VerifiableEntry *m = unpack_ventry(b, n);
    immu__cli_vctx c = vctx(&fx->st[4], fx->verifier);
    assert_rc(immu__cli_verify_get(m, &c, r.key, r.key_len, 0, &gst, &ge), 0);
    PBFREE(m);
    accepted = 0;
    for (size_t i = 0; i < n; i++) {
      b[i] ^= 0x41;
      m = unpack_ventry(b, n);
      b[i] ^= 0x41;
      if (m == NULL)
        continue;
      c = vctx(&fx->st[4], fx->verifier);
      int rc = immu__cli_verify_get(m, &c, r.key, r.key_len, 0, &newst, &e);
      PBFREE(m);
      if (rc != 0)
        continue;
      accepted++;
      assert_int_equal(newst.tx_id, gst.tx_id);
      assert_true(immu_digest_eq(&newst.alh, &gst.alh));
      assert_int_equal(e.has_referenced_by, ge.has_referenced_by);
      assert_int_equal(e.key_len, ge.key_len);
      assert_memory_equal(e.key, ge.key, ge.key_len);
      if (!ge.has_referenced_by) {
        /* A plain value is proven: identical. (Through a reference the
         * value is proven by the flow's second step.) */
        assert_int_equal(e.tx, ge.tx);
        assert_int_equal(e.value_len, ge.value_len);
        assert_memory_equal(e.value, ge.value, ge.value_len);
      } else {
        assert_int_equal(e.referenced_by.tx, ge.referenced_by.tx);
        assert_int_equal(e.referenced_by.at_tx, ge.referenced_by.at_tx);
      }
      immu_client_entry_clear(&e);
    }
    print_message("VerifiableEntry %s: %zu bytes, %zu harmless flips\n",
                  keys[ki], n, accepted);
    immu_client_entry_clear(&ge);
    free(b);
  }
}

/* ------------------------------------------------------------------ */
/* Tests: TOFU state, encodings                                        */
/* ------------------------------------------------------------------ */

static void test_state_reply(void **state) {
  fixture *fx = *state;
  immu__cli_state trusted = none_state, out;
  hist h;
  memset(&h, 0, sizeof h);
  build_history(fx, 3, &h, &trusted);

  Immudb__Schema__ImmutableState st = IMMUDB__SCHEMA__IMMUTABLE_STATE__INIT;
  Immudb__Schema__Signature sig = IMMUDB__SCHEMA__SIGNATURE__INIT;
  uint8_t sb[IMMU_SIG_MAX], pub[IMMU_PUBKEY_LEN];
  size_t slen;
  OK(immu_signer_sign_state(fx->signer, DBNAME, strlen(DBNAME), 3,
                            &fx->st[3].alh, sb, &slen, pub));
  st.db = (char *)DBNAME;
  st.txid = 3;
  st.txhash = pbdig(&fx->st[3].alh);
  sig.signature = pbd(sb, slen);
  st.signature = &sig;
  OK(immu__cli_verify_state_reply(&st, DBNAME, fx->verifier, &out, g_err,
                                  sizeof g_err));
  assert_state(fx, &out, 3);
  assert_rc(immu__cli_verify_state_reply(&st, DBNAME, fx->other, &out, g_err,
                                         sizeof g_err),
            IMMU_EVERIFY);
  assert_rc(immu__cli_verify_state_reply(&st, "otherdb", fx->verifier, &out,
                                         g_err, sizeof g_err),
            IMMU_EVERIFY);
  st.txid = 2;
  assert_rc(immu__cli_verify_state_reply(&st, DBNAME, fx->verifier, &out,
                                         g_err, sizeof g_err),
            IMMU_EVERIFY);
  st.txid = 3;
  st.signature = NULL;
  assert_rc(immu__cli_verify_state_reply(&st, DBNAME, fx->verifier, &out,
                                         g_err, sizeof g_err),
            IMMU_EVERIFY);
  OK(immu__cli_verify_state_reply(&st, DBNAME, NULL, &out, g_err,
                                  sizeof g_err));
  st.txhash.len = 31;
  assert_rc(immu__cli_verify_state_reply(&st, DBNAME, NULL, &out, g_err,
                                         sizeof g_err),
            IMMU_EVERIFY);
  /* An empty database: its state is {db, 0, H("")}; any other hash is
   * refused, and with a key configured it must be signed. */
  st.txid = 0;
  assert_rc(immu__cli_verify_state_reply(&st, DBNAME, NULL, &out, g_err,
                                         sizeof g_err),
            IMMU_EVERIFY); /* the leftover 31-byte hash */
  st.txhash.data = (uint8_t *)immu_empty_digest.b;
  st.txhash.len = 32;
  OK(immu__cli_verify_state_reply(&st, DBNAME, NULL, &out, g_err,
                                  sizeof g_err));
  assert_int_equal(out.tx_id, 0);
  assert_true(immu_digest_eq(&out.alh, &immu_empty_digest));
  assert_rc(immu__cli_verify_state_reply(&st, DBNAME, fx->verifier, &out,
                                         g_err, sizeof g_err),
            IMMU_EVERIFY); /* unsigned */
  uint8_t sig0[IMMU_SIG_MAX], pub0[IMMU_PUBKEY_LEN];
  size_t slen0 = 0;
  OK(immu_signer_sign_state(fx->signer, DBNAME, strlen(DBNAME), 0,
                            &immu_empty_digest, sig0, &slen0, pub0));
  Immudb__Schema__Signature sg = IMMUDB__SCHEMA__SIGNATURE__INIT;
  sg.signature.data = sig0;
  sg.signature.len = slen0;
  sg.publickey.data = pub0;
  sg.publickey.len = sizeof pub0;
  st.signature = &sg;
  OK(immu__cli_verify_state_reply(&st, DBNAME, fx->verifier, &out, g_err,
                                  sizeof g_err));
  assert_rc(immu__cli_verify_state_reply(&st, "otherdb", fx->verifier, &out,
                                         g_err, sizeof g_err),
            IMMU_EVERIFY);
  st.signature = NULL;
}

static void hex_eq(const uint8_t *p, size_t n, const char *hex) {
  char buf[512];
  assert_true(n * 2 < sizeof buf);
  for (size_t i = 0; i < n; i++)
    snprintf(buf + 2 * i, 3, "%02x", p[i]);
  assert_string_equal(buf, hex);
}

/* Expectations reproduce the spec 10.2 vectors. */
static void test_expect_encodings(void **state) {
  immu__cli_expect e;
  (void)state;
  OK(immu__cli_expect_kv(&e, U8("key1"), 4, U8("value1"), 6));
  hex_eq(e.key, e.klen, "006b657931");
  hex_eq(e.hval.b, 32,
         "d7da3a95c85f6573d3e611bac5be34c478a4b7710e9eb0955ab99238f54ccb45");
  immu__cli_expect_clear(&e);
  OK(immu__cli_expect_ref(&e, U8("ref1"), 4, U8("key1"), 4, 3));
  hex_eq(e.key, e.klen, "0072656631");
  hex_eq(e.hval.b, 32,
         "126c2faf7fd0017b408f24c506c13b54e510daf878efa7e74e5e06c823fd9a40");
  immu__cli_expect_clear(&e);
  OK(immu__cli_expect_zadd(&e, U8("set1"), 4, 1.5, U8("key1"), 4, 0));
  hex_eq(e.key, e.klen,
         "010000000000000004736574313ff80000000000000000000000000005006b6579"
         "310000000000000000");
  assert_true(immu_digest_eq(&e.hval, &immu_empty_digest));
  immu__cli_expect_clear(&e);
  assert_rc(immu__cli_expect_kv(&e, U8(""), 0, U8("v"), 1), IMMU_EINVAL);
  assert_rc(immu__cli_expect_zadd(&e, U8("s"), 1, NAN, U8("k"), 1, 0),
            IMMU_EINVAL);
}

/* ------------------------------------------------------------------ */
/* Tests: state persistence                                            */
/* ------------------------------------------------------------------ */

static immu__cli_state mkst(const char *db, uint64_t tx, uint8_t fill) {
  immu__cli_state s;
  memset(&s, 0, sizeof s);
  snprintf(s.db, sizeof s.db, "%s", db);
  s.tx_id = tx;
  memset(s.alh.b, fill, 32);
  s.sig_len = 3;
  s.sig[0] = fill;
  return s;
}

static void flip_file_byte(const char *path, off_t off) {
  int fd = open(path, O_RDWR);
  uint8_t c;
  assert_true(fd >= 0);
  assert_int_equal(pread(fd, &c, 1, off), 1);
  c ^= 0x01;
  assert_int_equal(pwrite(fd, &c, 1, off), 1);
  close(fd);
}

static void test_state_store(void **state) {
  fixture *fx = *state;
  char dir[600], path[700];
  immu__cli_store *s;
  immu__cli_state got;

  snprintf(dir, sizeof dir, "%s/states/nested", fx->dir);
  OK(immu__cli_store_open(dir, "uuid-abc", &s, g_err, sizeof g_err));
  OK(immu__cli_store_lock(s, g_err, sizeof g_err));
  assert_rc(immu__cli_store_get(s, "db1", &got, g_err, sizeof g_err),
            IMMU_ENOTFOUND);
  immu__cli_state a = mkst("db1", 5, 0xaa), b = mkst("db two", 9, 0xbb);
  OK(immu__cli_store_put(s, &a, g_err, sizeof g_err));
  OK(immu__cli_store_put(s, &b, g_err, sizeof g_err));
  /* Merge rule: never backwards; same id with another hash = fork. */
  immu__cli_state older = mkst("db1", 4, 0xcc);
  OK(immu__cli_store_put(s, &older, g_err, sizeof g_err));
  immu__cli_state fork = mkst("db1", 5, 0xdd);
  assert_rc(immu__cli_store_put(s, &fork, g_err, sizeof g_err), IMMU_EVERIFY);
  assert_non_null(strstr(g_err, "forked"));
  immu__cli_store_unlock(s);
  immu__cli_store_free(s);

  /* Round trip through a new store (another handle / process). */
  OK(immu__cli_store_open(dir, "uuid-abc", &s, g_err, sizeof g_err));
  OK(immu__cli_store_lock(s, g_err, sizeof g_err));
  OK(immu__cli_store_get(s, "db1", &got, g_err, sizeof g_err));
  assert_int_equal(got.tx_id, 5);
  assert_true(immu_digest_eq(&got.alh, &a.alh));
  assert_int_equal(got.sig_len, 3);
  assert_int_equal(got.sig[0], 0xaa);
  OK(immu__cli_store_get(s, "db two", &got, g_err, sizeof g_err));
  assert_int_equal(got.tx_id, 9);
  immu__cli_state newer = mkst("db1", 7, 0xee);
  OK(immu__cli_store_put(s, &newer, g_err, sizeof g_err));
  OK(immu__cli_store_get(s, "db1", &got, g_err, sizeof g_err));
  assert_int_equal(got.tx_id, 7);
  immu__cli_store_unlock(s);

  /* A damaged file is an error, never a missing state. */
  snprintf(path, sizeof path, "%s/state-uuid-abc", dir);
  struct stat sb;
  assert_int_equal(stat(path, &sb), 0);
  assert_int_equal(sb.st_mode & 0777, 0600);
  for (off_t off = 0; off < sb.st_size; off += 13) {
    flip_file_byte(path, off);
    OK(immu__cli_store_lock(s, g_err, sizeof g_err));
    int rc = immu__cli_store_get(s, "db1", &got, g_err, sizeof g_err);
    int rc2 = immu__cli_store_put(s, &newer, g_err, sizeof g_err);
    immu__cli_store_unlock(s);
    flip_file_byte(path, off);
    if (rc != IMMU_ECORRUPT || rc2 != IMMU_ECORRUPT)
      fail_msg("flipped byte %ld of the state file: get %d put %d", (long)off,
               rc, rc2);
  }
  assert_int_equal(truncate(path, sb.st_size - 1), 0);
  OK(immu__cli_store_lock(s, g_err, sizeof g_err));
  assert_rc(immu__cli_store_get(s, "db1", &got, g_err, sizeof g_err),
            IMMU_ECORRUPT);
  immu__cli_store_unlock(s);
  assert_int_equal(truncate(path, 0), 0);
  OK(immu__cli_store_lock(s, g_err, sizeof g_err));
  assert_rc(immu__cli_store_get(s, "db1", &got, g_err, sizeof g_err),
            IMMU_ECORRUPT);
  immu__cli_store_unlock(s);
  immu__cli_store_free(s);

  /* In-memory store: same rules. */
  OK(immu__cli_store_open(NULL, "uuid-abc", &s, g_err, sizeof g_err));
  OK(immu__cli_store_lock(s, g_err, sizeof g_err));
  OK(immu__cli_store_put(s, &a, g_err, sizeof g_err));
  OK(immu__cli_store_put(s, &older, g_err, sizeof g_err));
  OK(immu__cli_store_get(s, "db1", &got, g_err, sizeof g_err));
  assert_int_equal(got.tx_id, 5);
  assert_rc(immu__cli_store_put(s, &fork, g_err, sizeof g_err), IMMU_EVERIFY);
  immu__cli_store_unlock(s);
  immu__cli_store_free(s);

  /* Server ids are file-name safe. */
  char sid[300];
  immu_digest kh;
  memset(kh.b, 0x11, 32);
  OK(immu__cli_server_id("c1a2b3/../x", NULL, sid, sizeof sid));
  assert_null(strchr(sid, '/'));
  OK(immu__cli_server_id(NULL, &kh, sid, sizeof sid));
  assert_int_equal(strncmp(sid, "key-1111", 8), 0);
  assert_rc(immu__cli_server_id(NULL, NULL, sid, sizeof sid), IMMU_EINVAL);
  assert_rc(immu__cli_store_open(dir, "../evil", &s, g_err, sizeof g_err),
            IMMU_EINVAL);
}

static void test_identity_pin(void **state) {
  fixture *fx = *state;
  char dir[600];
  immu_digest k1, k2;
  memset(k1.b, 1, 32);
  memset(k2.b, 2, 32);
  snprintf(dir, sizeof dir, "%s/ident", fx->dir);

  OK(immu__cli_identity_pin(dir, "127.0.0.1", 3322, "uuid-one", NULL, g_err,
                            sizeof g_err));
  OK(immu__cli_identity_pin(dir, "127.0.0.1", 3322, "uuid-one", NULL, g_err,
                            sizeof g_err));
  OK(immu__cli_identity_pin(dir, "127.0.0.1", 3322, NULL, NULL, g_err,
                            sizeof g_err));
  /* CVE-2022-39199: a changed UUID is an error naming both. */
  assert_rc(immu__cli_identity_pin(dir, "127.0.0.1", 3322, "uuid-two", NULL,
                                   g_err, sizeof g_err),
            IMMU_EVERIFY);
  assert_non_null(strstr(g_err, "uuid-one"));
  assert_non_null(strstr(g_err, "uuid-two"));
  /* Other addresses are independent. */
  OK(immu__cli_identity_pin(dir, "127.0.0.1", 3323, "uuid-two", NULL, g_err,
                            sizeof g_err));
  OK(immu__cli_identity_pin(dir, "localhost", 3322, "uuid-two", NULL, g_err,
                            sizeof g_err));
  /* A key is pinned the first time one is configured. */
  OK(immu__cli_identity_pin(dir, "127.0.0.1", 3322, "uuid-one", &k1, g_err,
                            sizeof g_err));
  OK(immu__cli_identity_pin(dir, "127.0.0.1", 3322, NULL, &k1, g_err,
                            sizeof g_err));
  assert_rc(immu__cli_identity_pin(dir, "127.0.0.1", 3322, "uuid-one", &k2,
                                   g_err, sizeof g_err),
            IMMU_EVERIFY);
  assert_non_null(strstr(g_err, "signing key changed"));
  /* Still pinned after all that. */
  assert_rc(immu__cli_identity_pin(dir, "127.0.0.1", 3322, "uuid-two", NULL,
                                   g_err, sizeof g_err),
            IMMU_EVERIFY);
  /* A damaged identity file is an error. */
  {
    char path[800];
    immu_digest ah;
    const char *addr = "127.0.0.1:3322";
    char hex[65];
    immu_sha256(addr, strlen(addr), &ah);
    immu_digest_hex(&ah, hex);
    hex[32] = '\0';
    snprintf(path, sizeof path, "%s/identity-%s", dir, hex);
    flip_file_byte(path, 25);
    assert_rc(immu__cli_identity_pin(dir, "127.0.0.1", 3322, "uuid-one",
                                     NULL, g_err, sizeof g_err),
              IMMU_ECORRUPT);
    flip_file_byte(path, 25);
    OK(immu__cli_identity_pin(dir, "127.0.0.1", 3322, "uuid-one", NULL, g_err,
                              sizeof g_err));
  }
  /* No directory: nothing is pinned across handles. */
  OK(immu__cli_identity_pin(NULL, "127.0.0.1", 3322, "whatever", NULL, g_err,
                            sizeof g_err));
}

/* 4 processes x 50 verified updates of one state file. Each update is the
 * whole client flow under the store lock: read the trusted state, verify a
 * genuine VerifiableTxById reply proven from it, store the new state. The
 * file must stay valid, every process must see monotonic tx ids, and the
 * final state is the last tx. */
#define NPROC 4
#define NUPD 50
#define CHAIN 60
#define AHEAD 3

static void test_state_concurrent_processes(void **state) {
  fixture *fx = *state;
  immu__cli_state trusted = none_state;
  hist h;
  char dir[600];
  /* blobs[s][d]: VerifiableTxById(t = s + d (or s when d = 0), since s). */
  static uint8_t *blob[CHAIN + 1][AHEAD + 1];
  static size_t blen[CHAIN + 1][AHEAD + 1];

  memset(&h, 0, sizeof h);
  while (fx->last < CHAIN)
    build_history(fx, 1, &h, &trusted);
  for (uint64_t s = 0; s <= CHAIN; s++)
    for (uint64_t d = 0; d <= AHEAD; d++) {
      uint64_t t = d == 0 ? s : s + d;
      blob[s][d] = NULL;
      if (t == 0 || t > CHAIN)
        continue;
      blob[s][d] = vtx_by_id_bytes(fx, t, s, fx->signer, &blen[s][d]);
    }
  snprintf(dir, sizeof dir, "%s/shared-states", fx->dir);

  pid_t pids[NPROC];
  for (int p = 0; p < NPROC; p++) {
    pids[p] = fork();
    assert_true(pids[p] >= 0);
    if (pids[p] == 0) {
      immu__cli_store *s;
      char err[1024];
      uint64_t seen = 0;
      unsigned seed = (unsigned)p * 7919u + 1;
      if (immu__cli_store_open(dir, "key-test", &s, err, sizeof err) != 0)
        _exit(10);
      for (int u = 0; u < NUPD; u++) {
        immu__cli_state tr, newst;
        immu__cli_vctx c;
        if (immu__cli_store_lock(s, err, sizeof err) != 0)
          _exit(11);
        int rc = immu__cli_store_get(s, DBNAME, &tr, err, sizeof err);
        if (rc == IMMU_ENOTFOUND)
          tr = none_state;
        else if (rc != 0)
          _exit(12);
        if (tr.tx_id < seen)
          _exit(13); /* the state moved backwards */
        seen = tr.tx_id;
        seed = seed * 1103515245u + 12345u;
        uint64_t d = 1 + (seed >> 16) % AHEAD;
        if (tr.tx_id + d > CHAIN)
          d = tr.tx_id == CHAIN ? 0 : CHAIN - tr.tx_id;
        uint64_t t = d == 0 ? tr.tx_id : tr.tx_id + d;
        Immudb__Schema__VerifiableTx *m =
            unpack_vtx(blob[tr.tx_id][d], blen[tr.tx_id][d]);
        if (m == NULL)
          _exit(14);
        c.db = DBNAME;
        c.trusted = &tr;
        c.verifier = fx->verifier;
        c.err = err;
        c.errlen = sizeof err;
        rc = immu__cli_verify_tx_by_id(m, &c, t, &newst, NULL);
        PBFREE(m);
        if (rc != 0)
          _exit(15);
        if (newst.tx_id < seen)
          _exit(16);
        if (immu__cli_store_put(s, &newst, err, sizeof err) != 0)
          _exit(17);
        seen = newst.tx_id;
        immu__cli_store_unlock(s);
      }
      immu__cli_store_free(s);
      _exit(0);
    }
  }
  for (int p = 0; p < NPROC; p++) {
    int st = 0;
    assert_int_equal(waitpid(pids[p], &st, 0), pids[p]);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
      fail_msg("child %d failed with status %d", p,
               WIFEXITED(st) ? WEXITSTATUS(st) : -1);
  }
  immu__cli_store *s;
  immu__cli_state got;
  OK(immu__cli_store_open(dir, "key-test", &s, g_err, sizeof g_err));
  OK(immu__cli_store_lock(s, g_err, sizeof g_err));
  OK(immu__cli_store_get(s, DBNAME, &got, g_err, sizeof g_err));
  immu__cli_store_unlock(s);
  immu__cli_store_free(s);
  assert_state(fx, &got, CHAIN);
  assert_true(got.sig_len > 0);
  for (uint64_t si = 0; si <= CHAIN; si++)
    for (uint64_t d = 0; d <= AHEAD; d++)
      free(blob[si][d]);
}

/* Allocation failure at every point of the verifiers and the store: a
 * clean IMMU_ENOMEM (never a false verdict), no leak (ASan). */
static void test_oom(void **state) {
  fixture *fx = *state;
  immu__cli_state trusted = none_state, newst;
  hist h;
  size_t n1, n2, n3;
  char dir[600];
  memset(&h, 0, sizeof h);
  build_history(fx, 14, &h, &trusted);
  uint64_t last = fx->last;
  uint8_t *b1 = vtx_by_id_bytes(fx, last, 3, fx->signer, &n1);
  immu_db_verifiable_entry ve;
  immu_db_key_req r;
  memset(&r, 0, sizeof r);
  r.key = U8("r7");
  r.key_len = 2;
  OK(immu_db_verifiable_get(fx->db, &r, 3, &ve));
  uint8_t *b2 = pack_ventry(&ve, fx->signer, &n2);
  immu_db_verifiable_entry_clear(&ve);
  immu__cli_expect exp;
  immu_db_kv kv = {U8("w"), 1, U8("x"), 1};
  immu_db_verifiable_tx vt;
  OK(immu__cli_expect_kv(&exp, U8("w"), 1, U8("x"), 1));
  OK(immu_db_verifiable_set(fx->db, &kv, 1, 0, last, &vt));
  uint8_t *b3 = pack_vtx(&vt, fx->signer, &n3);
  immu_db_verifiable_tx_clear(&vt);
  /* No engine threads may allocate while failures are injected. */
  OK(immu_db_close(fx->db));
  fx->db = NULL;

  Immudb__Schema__VerifiableTx *m1 = unpack_vtx(b1, n1);
  Immudb__Schema__VerifiableEntry *m2 = unpack_ventry(b2, n2);
  Immudb__Schema__VerifiableTx *m3 = unpack_vtx(b3, n3);
  for (int which = 0; which < 3; which++) {
    long i;
    for (i = 0;; i++) {
      immu__cli_vctx c = vctx(&fx->st[3], fx->verifier);
      immu__cli_vctx cw = vctx(&fx->st[last], fx->verifier);
      immu_client_tx tx;
      immu_client_entry e;
      int rc;
      immu__mem_fail_after(i, 1);
      if (which == 0) {
        rc = immu__cli_verify_tx_by_id(m1, &c, last, &newst, &tx);
        immu__mem_fail_after(-1, 0);
        if (rc == 0)
          immu_client_tx_clear(&tx);
      } else if (which == 1) {
        rc = immu__cli_verify_get(m2, &c, U8("r7"), 2, 0, &newst, &e);
        immu__mem_fail_after(-1, 0);
        if (rc == 0)
          immu_client_entry_clear(&e);
      } else {
        rc = immu__cli_verify_write(m3, &cw, &exp, 1, &newst, NULL);
        immu__mem_fail_after(-1, 0);
      }
      if (rc == 0)
        break;
      if (rc != IMMU_ENOMEM)
        fail_msg("case %d, allocation %ld failed: %s (%s)", which, i,
                 immu_err_name(rc), g_err);
    }
    assert_true(i > 0);
  }
  PBFREE(m1);
  PBFREE(m2);
  PBFREE(m3);
  immu__cli_expect_clear(&exp);
  free(b1);
  free(b2);
  free(b3);

  /* The store. */
  snprintf(dir, sizeof dir, "%s/oomstates", fx->dir);
  for (long i = 0;; i++) {
    immu__cli_store *s = NULL;
    immu__cli_state a = mkst("db1", 5 + (uint64_t)i, 0xaa), got;
    int rc;
    immu__mem_fail_after(i, 1);
    rc = immu__cli_store_open(dir, "uuid-oom", &s, g_err, sizeof g_err);
    if (rc == 0) {
      rc = immu__cli_store_lock(s, g_err, sizeof g_err);
      if (rc == 0) {
        rc = immu__cli_store_put(s, &a, g_err, sizeof g_err);
        if (rc == 0)
          rc = immu__cli_store_get(s, "db1", &got, g_err, sizeof g_err);
        immu__cli_store_unlock(s);
      }
      immu__cli_store_free(s);
    }
    if (rc == 0)
      rc = immu__cli_identity_pin(dir, "h", 1, "u", NULL, g_err,
                                  sizeof g_err);
    immu__mem_fail_after(-1, 0);
    if (rc == 0)
      break;
    if (rc != IMMU_ENOMEM)
      fail_msg("store, allocation %ld failed: %s (%s)", i, immu_err_name(rc),
               g_err);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_genuine_writes_and_reads, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_header_v1, setup, teardown),
      cmocka_unit_test_setup_teardown(test_tamper_tx_by_id, setup, teardown),
      cmocka_unit_test_setup_teardown(test_signature_of_other_state, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_tamper_get, setup, teardown),
      cmocka_unit_test_setup_teardown(test_write_swaps, setup, teardown),
      cmocka_unit_test_setup_teardown(test_reference_value_proven, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_packed_byte_flips, setup, teardown),
      cmocka_unit_test_setup_teardown(test_state_reply, setup, teardown),
      cmocka_unit_test(test_expect_encodings),
      cmocka_unit_test_setup_teardown(test_state_store, setup, teardown),
      cmocka_unit_test_setup_teardown(test_identity_pin, setup, teardown),
      cmocka_unit_test_setup_teardown(test_state_concurrent_processes, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_oom, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
