/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fuzz target: the client SDK's reply verifiers (src/client/client_int.h)
 * never crash on hostile server replies and never accept a forgery relative
 * to a genuine trusted state.
 *
 * A genuine history G of N transactions is built once (header versions 0
 * and 1, plain, reference and sorted-set entries, BlTxID = ID - 1), signed
 * with a fixed test key. Input layout:
 *
 *   byte 0  mode: 0 VerifiableTxById, 1 VerifiableGet, 2 VerifiableSet-like
 *           write, 3..5 the same but the reply is the genuine one for the
 *           parameters below with the rest of the input XORed over its
 *           packed bytes (structured mutation)
 *   byte 1  trusted state s (s mod (N+1); 0 = none)
 *   byte 2  request parameter: tx id (mode 0), key index (mode 1), the
 *           genuine tx whose entries the write expects (mode 2)
 *   byte 3  flags: bit 0 = a verifier is configured, bit 1 = (get) the
 *           request names the key's tx as atTx
 *   rest    the reply: protobuf bytes (modes 0-2) or the XOR mask (3-5)
 *
 * Forgery oracle (anything accepted must satisfy):
 *   - the new state never goes below the trusted one, and equals it when
 *     its id is not above it;
 *   - a tx, entry or state at or below the trusted tx id is genuine (the
 *     trusted state pins all of history up to it);
 *   - with a verifier configured, the new state is genuine (only genuine
 *     states were ever signed), hence so is everything proven below it.
 * Extensions beyond the trusted state without a verifier are not forgeries:
 * the server may have committed more.
 *
 * Built with -DIMMU_FUZZ_CLIENT_GEN, the file has a main() that writes the
 * seed corpus (genuine replies for many parameters) into a directory.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client/client_int.h"
#include "immudb/crypto.h"
#include "schema.pb-c.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define N 8
#define DB "defaultdb"

static const char PRIV_PEM[] =
    "-----BEGIN PRIVATE KEY-----\n"
    "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg5vjVtJFTd/NUdjyy\n"
    "esIEZchxACgWjEihAwCSynt+GnqhRANCAAQ1ZoAGVT1MaX48bZhg4DApbALHWHi+\n"
    "j7dtWTQBcHVimGsbpG5PN5X4gStjTAhInK2csfQEnPXe27TRCWHRWh43\n"
    "-----END PRIVATE KEY-----\n";
static const char PUB_PEM[] =
    "-----BEGIN PUBLIC KEY-----\n"
    "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAENWaABlU9TGl+PG2YYOAwKWwCx1h4\n"
    "vo+3bVk0AXB1YphrG6RuTzeV+IErY0wISJytnLH0BJz13tu00Qlh0VoeNw==\n"
    "-----END PUBLIC KEY-----\n";

typedef struct gentry {
  uint8_t key[80]; /* store key */
  size_t klen;
  uint8_t val[80]; /* stored value */
  size_t vlen;
  uint8_t md[IMMU_KV_MD_MAX];
  size_t mdlen;
  immu_digest hval;
  char ukey[40]; /* user key (plain / reference entries) */
} gentry;

typedef struct gtx {
  immu_tx_header h;
  immu_digest alh;
  gentry e[3];
  size_t n;
} gtx;

static gtx G[N + 1];
static immu_ahtree *tree;
static immu_signer *signer;
static immu_verifier *verifier;
static int inited;

/* Keys a get may ask for: every plain/ref user key, and a missing one. */
static char getkeys[3 * N + 1][40];
static size_t ngetkeys;

static void die(const char *what) {
  fprintf(stderr, "fuzz_client_verify: %s\n", what);
  abort();
}

static int src_header(void *ctx, uint64_t id, immu_tx_header *out) {
  (void)ctx;
  if (id < 1 || id > N)
    return IMMU_ENOTFOUND;
  *out = G[id].h;
  return 0;
}

static int src_alh(void *ctx, uint64_t id, immu_digest *out) {
  (void)ctx;
  if (id < 1 || id > N)
    return IMMU_ENOTFOUND;
  *out = G[id].alh;
  return 0;
}

static const immu_tx_source SRC = {NULL, src_header, src_alh};

static void init(void) {
  immu_digest dig[3];
  if (inited)
    return;
  inited = 1;
  if (immu_ahtree_new_mem(&tree) != 0 ||
      immu_signer_from_pem(PRIV_PEM, strlen(PRIV_PEM), &signer) != 0 ||
      immu_verifier_from_pem(PUB_PEM, strlen(PUB_PEM), &verifier) != 0)
    die("init");
  for (uint64_t k = 1; k <= N; k++) {
    gtx *t = &G[k];
    memset(t, 0, sizeof *t);
    t->n = 1 + k % 3;
    t->h.id = k;
    t->h.ts = 1000 + (int64_t)k;
    t->h.version = k == 4 ? 1 : 0;
    t->h.bl_tx_id = k - 1;
    if (k > 1) {
      if (immu_ahtree_root_at(tree, k - 1, &t->h.bl_root) != 0)
        die("root");
      t->h.prev_alh = G[k - 1].alh;
    } else {
      t->h.prev_alh = immu_empty_digest;
    }
    for (size_t j = 0; j < t->n; j++) {
      gentry *e = &t->e[j];
      char val[40];
      snprintf(e->ukey, sizeof e->ukey, "key%u-%u", (unsigned)k, (unsigned)j);
      snprintf(val, sizeof val, "val%u-%u", (unsigned)k, (unsigned)j);
      if (k == 6 && j == 0) { /* a bound reference ref -> key2-0 @ 2 */
        snprintf(e->ukey, sizeof e->ukey, "ref");
        immu_enc_key((const uint8_t *)"ref", 3, e->key, sizeof e->key,
                     &e->klen);
        immu_enc_ref_value((const uint8_t *)"key2-0", 6, 2, e->val,
                           sizeof e->val, &e->vlen);
      } else if (k == 7 && j == 0) { /* a sorted-set member */
        e->ukey[0] = '\0';
        immu_enc_zadd_key((const uint8_t *)"set", 3, 1.5,
                          (const uint8_t *)"key3-0", 6, 0, e->key,
                          sizeof e->key, &e->klen);
        e->vlen = 0;
      } else {
        immu_enc_key((const uint8_t *)e->ukey, strlen(e->ukey), e->key,
                     sizeof e->key, &e->klen);
        immu_enc_value((const uint8_t *)val, strlen(val), e->val,
                       sizeof e->val, &e->vlen);
      }
      if (t->h.version == 1) { /* nonIndexable */
        e->md[0] = 0x02;
        e->mdlen = 1;
      }
      immu_sha256(e->val, e->vlen, &e->hval);
      if (immu_entry_digest(t->h.version, e->key, e->klen, e->md, e->mdlen,
                            &e->hval, &dig[j]) != 0)
        die("digest");
      if (e->ukey[0] != '\0' && ngetkeys < sizeof getkeys / sizeof *getkeys)
        snprintf(getkeys[ngetkeys++], sizeof getkeys[0], "%s", e->ukey);
    }
    t->h.nentries = (uint32_t)t->n;
    if (immu_htree_root(dig, t->n, &t->h.eh) != 0 ||
        immu_tx_alh(&t->h, &t->alh) != 0 ||
        immu_ahtree_append(tree, t->alh.b, 32, NULL) != 0)
      die("chain");
  }
  snprintf(getkeys[ngetkeys++], sizeof getkeys[0], "missing");
}

/* ------------------------------------------------------------------ */
/* Genuine replies (for mutation modes and the seed generator)         */
/* ------------------------------------------------------------------ */

typedef struct arena {
  void *v[4096];
  size_t n;
} arena;

static void *aalloc(arena *a, size_t n) {
  void *p = calloc(1, n ? n : 1);
  if (p == NULL || a->n == sizeof a->v / sizeof *a->v)
    die("arena");
  a->v[a->n++] = p;
  return p;
}

static void afree(arena *a) {
  for (size_t i = 0; i < a->n; i++)
    free(a->v[i]);
  a->n = 0;
}

static ProtobufCBinaryData pbd(const void *p, size_t n) {
  ProtobufCBinaryData b;
  b.len = n;
  b.data = (uint8_t *)(uintptr_t)p;
  return b;
}

static Immudb__Schema__TxHeader *c_hdr(arena *a, const immu_tx_header *h) {
  Immudb__Schema__TxHeader *m = aalloc(a, sizeof *m);
  immudb__schema__tx_header__init(m);
  m->id = h->id;
  m->prevalh = pbd(h->prev_alh.b, 32);
  m->ts = h->ts;
  m->nentries = (int32_t)h->nentries;
  m->eh = pbd(h->eh.b, 32);
  m->bltxid = h->bl_tx_id;
  m->blroot = pbd(h->bl_root.b, 32);
  m->version = (int32_t)h->version;
  return m;
}

static ProtobufCBinaryData *c_list(arena *a, const immu_digest_list *l,
                                   size_t *n) {
  ProtobufCBinaryData *v = aalloc(a, (l->n + 1) * sizeof *v);
  for (size_t i = 0; i < l->n; i++)
    v[i] = pbd(l->d[i].b, 32);
  *n = l->n;
  return v;
}

/* VerifiableTx of tx |x| proven against trusted |s| (roles as a server
 * chooses them); |keep| receives the dual proof to free after packing. */
static Immudb__Schema__VerifiableTx *c_vtx(arena *a, uint64_t x, uint64_t s,
                                           immu_dual_proof *keep) {
  Immudb__Schema__VerifiableTx *m = aalloc(a, sizeof *m);
  Immudb__Schema__Tx *tx = aalloc(a, sizeof *tx);
  Immudb__Schema__DualProof *dp = aalloc(a, sizeof *dp);
  Immudb__Schema__LinearProof *lp = aalloc(a, sizeof *lp);
  Immudb__Schema__Signature *sg = aalloc(a, sizeof *sg);
  uint8_t *sig = aalloc(a, IMMU_SIG_MAX), *pub = aalloc(a, IMMU_PUBKEY_LEN);
  uint64_t src = s == 0 ? x : (s <= x ? s : x), tgt = s <= x ? x : s;
  size_t slen;

  immudb__schema__verifiable_tx__init(m);
  immudb__schema__tx__init(tx);
  immudb__schema__dual_proof__init(dp);
  immudb__schema__linear_proof__init(lp);
  immudb__schema__signature__init(sg);
  tx->header = c_hdr(a, &G[x].h);
  tx->n_entries = G[x].n;
  tx->entries = aalloc(a, G[x].n * sizeof *tx->entries);
  for (size_t j = 0; j < G[x].n; j++) {
    const gentry *e = &G[x].e[j];
    Immudb__Schema__TxEntry *te = aalloc(a, sizeof *te);
    immudb__schema__tx_entry__init(te);
    te->key = pbd(e->key, e->klen);
    te->hvalue = pbd(e->hval.b, 32);
    te->vlen = (int32_t)e->vlen;
    if (e->mdlen > 0) {
      Immudb__Schema__KVMetadata *md = aalloc(a, sizeof *md);
      immudb__schema__kvmetadata__init(md);
      md->nonindexable = 1;
      te->metadata = md;
    }
    tx->entries[j] = te;
  }
  if (immu_dual_proof_gen(tree, &SRC, &G[src].h, &G[tgt].h, keep) != 0)
    die("dual proof");
  dp->sourcetxheader = c_hdr(a, &keep->source);
  dp->targettxheader = c_hdr(a, &keep->target);
  dp->inclusionproof = c_list(a, &keep->inclusion, &dp->n_inclusionproof);
  dp->consistencyproof =
      c_list(a, &keep->consistency, &dp->n_consistencyproof);
  dp->targetbltxalh = pbd(keep->target_bl_tx_alh.b, 32);
  dp->lastinclusionproof =
      c_list(a, &keep->last_inclusion, &dp->n_lastinclusionproof);
  lp->sourcetxid = keep->linear.source_tx_id;
  lp->targettxid = keep->linear.target_tx_id;
  lp->terms = c_list(a, &keep->linear.terms, &lp->n_terms);
  dp->linearproof = lp;
  if (immu_signer_sign_state(signer, DB, strlen(DB), tgt, &G[tgt].alh, sig,
                             &slen, pub) != 0)
    die("sign");
  sg->signature = pbd(sig, slen);
  sg->publickey = pbd(pub, IMMU_PUBKEY_LEN);
  m->tx = tx;
  m->dualproof = dp;
  m->signature = sg;
  return m;
}

static uint8_t *pack(const ProtobufCMessage *m, size_t *n) {
  uint8_t *b;
  *n = protobuf_c_message_get_packed_size(m);
  b = malloc(*n ? *n : 1);
  if (b == NULL)
    die("oom");
  protobuf_c_message_pack(m, b);
  return b;
}

/* Finds the genuine tx and entry of user key |k| (plain or reference). */
static int find_key(const char *k, uint64_t *tx, size_t *j) {
  for (uint64_t t = N; t >= 1; t--)
    for (size_t i = 0; i < G[t].n; i++)
      if (strcmp(G[t].e[i].ukey, k) == 0) {
        *tx = t;
        *j = i;
        return 0;
      }
  return -1;
}

/* Genuine packed reply for (mode, s, param); NULL if there is none. */
static uint8_t *genuine(int mode, uint64_t s, unsigned param, size_t *n) {
  arena a;
  immu_dual_proof dp;
  uint8_t *b = NULL;
  a.n = 0;
  memset(&dp, 0, sizeof dp);
  if (mode == 0 || mode == 2) {
    uint64_t x = mode == 0 ? 1 + param % (N + 2) : 1 + param % N;
    if (x > N)
      return NULL;
    if (mode == 2 && ((s != 0 && x <= s) || G[x].h.version != 0))
      return NULL; /* writes land after the trusted state, without KV
                      metadata */
    b = pack(&c_vtx(&a, x, s, &dp)->base, n);
  } else {
    const char *k = getkeys[param % ngetkeys];
    uint64_t x;
    size_t j;
    immu_digest dig[3], terms[IMMU_PROOF_MAX_TERMS];
    size_t nterms;
    if (find_key(k, &x, &j) != 0)
      return NULL;
    Immudb__Schema__VerifiableEntry *m = aalloc(&a, sizeof *m);
    Immudb__Schema__Entry *e = aalloc(&a, sizeof *e);
    Immudb__Schema__InclusionProof *ip = aalloc(&a, sizeof *ip);
    ProtobufCBinaryData *tv = aalloc(&a, sizeof *tv * IMMU_PROOF_MAX_TERMS);
    immudb__schema__verifiable_entry__init(m);
    immudb__schema__entry__init(e);
    immudb__schema__inclusion_proof__init(ip);
    const gentry *ge = &G[x].e[j];
    if (strcmp(k, "ref") == 0) {
      Immudb__Schema__Reference *r = aalloc(&a, sizeof *r);
      immudb__schema__reference__init(r);
      r->tx = x;
      r->key = pbd("ref", 3);
      r->attx = 2;
      e->referencedby = r;
      e->tx = 2;
      e->key = pbd("key2-0", 6);
      e->value = pbd(G[2].e[0].val + 1, G[2].e[0].vlen - 1);
    } else {
      e->tx = x;
      e->key = pbd(ge->ukey, strlen(ge->ukey));
      e->value = pbd(ge->val + 1, ge->vlen - 1);
    }
    if (ge->mdlen > 0) {
      Immudb__Schema__KVMetadata *md = aalloc(&a, sizeof *md);
      immudb__schema__kvmetadata__init(md);
      md->nonindexable = 1;
      if (e->referencedby != NULL)
        e->referencedby->metadata = md;
      else
        e->metadata = md;
    }
    for (size_t i = 0; i < G[x].n; i++)
      immu_entry_digest(G[x].h.version, G[x].e[i].key, G[x].e[i].klen,
                        G[x].e[i].md, G[x].e[i].mdlen, &G[x].e[i].hval,
                        &dig[i]);
    if (immu_htree_proof(dig, G[x].n, j, terms, &nterms) != 0)
      die("htree");
    for (size_t i = 0; i < nterms; i++)
      tv[i] = pbd(terms[i].b, 32);
    ip->leaf = (int32_t)j;
    ip->width = (int32_t)G[x].n;
    ip->terms = tv;
    ip->n_terms = nterms;
    m->entry = e;
    m->inclusionproof = ip;
    m->verifiabletx = c_vtx(&a, x, s, &dp);
    b = pack(&m->base, n);
  }
  immu_dual_proof_free(&dp);
  afree(&a);
  return b;
}

/* ------------------------------------------------------------------ */
/* The oracle                                                          */
/* ------------------------------------------------------------------ */

static int genuine_state(const immu__cli_state *st) {
  return st->tx_id >= 1 && st->tx_id <= N &&
         immu_digest_eq(&st->alh, &G[st->tx_id].alh);
}

static int genuine_tx_has(uint64_t t, const uint8_t *key, size_t klen,
                          const immu_digest *hval) {
  if (t < 1 || t > N)
    return 0;
  for (size_t i = 0; i < G[t].n; i++)
    if (G[t].e[i].klen == klen && memcmp(G[t].e[i].key, key, klen) == 0 &&
        immu_digest_eq(&G[t].e[i].hval, hval))
      return 1;
  return 0;
}

static void check_state(const immu__cli_state *tr, const immu__cli_state *nw,
                        int with_verifier) {
  if (nw->tx_id < tr->tx_id)
    die("FORGERY: state moved backwards");
  if (nw->tx_id == tr->tx_id && tr->tx_id > 0 &&
      !immu_digest_eq(&nw->alh, &tr->alh))
    die("FORGERY: state forked at the trusted tx");
  if (with_verifier && !genuine_state(nw))
    die("FORGERY: accepted a state that was never signed");
}

/* Verifies one reply and checks the oracle; returns 1 if it was accepted. */
static int run(int mode, uint64_t s, unsigned param, unsigned flags,
               const uint8_t *msg, size_t len) {
  int accepted = 0;
  immu__cli_state tr, nw;
  immu__cli_vctx v;
  char err[512];
  int with_v = flags & 1;

  memset(&tr, 0, sizeof tr);
  if (s > 0) {
    snprintf(tr.db, sizeof tr.db, "%s", DB);
    tr.tx_id = s;
    tr.alh = G[s].alh;
  }
  v.db = DB;
  v.trusted = &tr;
  v.verifier = with_v ? verifier : NULL;
  v.err = err;
  v.errlen = sizeof err;

  if (mode == 0) {
    uint64_t t = 1 + param % (N + 2); /* N+1, N+2: beyond the history */
    immu_client_tx tx;
    Immudb__Schema__VerifiableTx *m =
        (Immudb__Schema__VerifiableTx *)protobuf_c_message_unpack(
            &immudb__schema__verifiable_tx__descriptor,
            &immu__cli_pb_allocator, len, msg);
    if (m == NULL)
      return 0;
    if (immu__cli_verify_tx_by_id(m, &v, t, &nw, &tx) == 0) {
      accepted = 1;
      check_state(&tr, &nw, with_v);
      if (tx.header.id != t)
        die("FORGERY: another tx than the one asked for");
      if (t <= s || with_v) {
        if (t > N || !immu_digest_eq(&tx.alh, &G[t].alh) ||
            tx.nentries != G[t].n)
          die("FORGERY: a tx below the trusted state differs");
        for (size_t i = 0; i < tx.nentries; i++)
          if (!genuine_tx_has(t, tx.entries[i].key, tx.entries[i].key_len,
                              &tx.entries[i].hval))
            die("FORGERY: an entry of a proven tx differs");
      }
      immu_client_tx_clear(&tx);
    }
    protobuf_c_message_free_unpacked(&m->base, &immu__cli_pb_allocator);
  } else if (mode == 1) {
    const char *k = getkeys[param % ngetkeys];
    uint64_t at = 0, x;
    size_t j;
    immu_client_entry e;
    if ((flags & 2) && find_key(k, &x, &j) == 0)
      at = x;
    Immudb__Schema__VerifiableEntry *m =
        (Immudb__Schema__VerifiableEntry *)protobuf_c_message_unpack(
            &immudb__schema__verifiable_entry__descriptor,
            &immu__cli_pb_allocator, len, msg);
    if (m == NULL)
      return 0;
    if (immu__cli_verify_get(m, &v, (const uint8_t *)k, strlen(k), at, &nw,
                             &e) == 0) {
      accepted = 1;
      uint8_t skey[64], val[256];
      size_t sl, vl;
      immu_digest hv;
      uint64_t vtx = e.has_referenced_by ? e.referenced_by.tx : e.tx;
      check_state(&tr, &nw, with_v);
      if (at != 0 && vtx != at)
        die("FORGERY: entry of another tx than atTx");
      immu_enc_key((const uint8_t *)k, strlen(k), skey, sizeof skey, &sl);
      int ok = 1;
      if (e.has_referenced_by) {
        if (immu_enc_ref_value(e.key, e.key_len, e.referenced_by.at_tx, val,
                               sizeof val, &vl) != 0)
          ok = 0; /* no genuine reference has such a long target */
        else
          immu_sha256(val, vl, &hv);
      } else {
        uint8_t z = 0;
        immu_buf parts[2] = {{&z, 1}, {e.value, e.value_len}};
        immu_sha256v(parts, 2, &hv);
      }
      if ((vtx <= s || with_v) && (!ok || !genuine_tx_has(vtx, skey, sl, &hv)))
        die("FORGERY: a proven entry is not in the genuine tx");
      immu_client_entry_clear(&e);
    }
    protobuf_c_message_free_unpacked(&m->base, &immu__cli_pb_allocator);
  } else {
    uint64_t w = 1 + param % N;
    immu__cli_expect exp[3];
    immu_tx_header hdr;
    for (size_t i = 0; i < G[w].n; i++) {
      exp[i].key = G[w].e[i].key;
      exp[i].klen = G[w].e[i].klen;
      exp[i].hval = G[w].e[i].hval;
    }
    Immudb__Schema__VerifiableTx *m =
        (Immudb__Schema__VerifiableTx *)protobuf_c_message_unpack(
            &immudb__schema__verifiable_tx__descriptor,
            &immu__cli_pb_allocator, len, msg);
    if (m == NULL)
      return 0;
    if (immu__cli_verify_write(m, &v, exp, G[w].n, &nw, &hdr) == 0) {
      accepted = 1;
      check_state(&tr, &nw, with_v);
      if (s > 0 && nw.tx_id <= s)
        die("FORGERY: a write at or below the trusted tx");
      if (with_v && nw.tx_id != w)
        die("FORGERY: signed state of another tx holds our entries");
    }
    protobuf_c_message_free_unpacked(&m->base, &immu__cli_pb_allocator);
  }
  return accepted;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  int mode;
  uint64_t s;
  unsigned param, flags;

  init();
  if (size < 4)
    return 0;
  mode = data[0] % 6;
  s = data[1] % (N + 1);
  param = data[2];
  flags = data[3];
  data += 4;
  size -= 4;
  if (mode < 3) {
    run(mode, s, param, flags, data, size);
  } else {
    size_t n;
    uint8_t *b = genuine(mode - 3, s, param, &n);
    if (b == NULL)
      return 0;
    for (size_t i = 0; i < size && n > 0; i++)
      b[i % n] ^= data[i];
    run(mode - 3, s, param, flags, b, n);
    free(b);
  }
  return 0;
}

#ifdef IMMU_FUZZ_CLIENT_GEN
/* Seed corpus: genuine replies for every mode and many parameters, and a
 * few structured-mutation inputs. Usage: gen DIR */
int main(int argc, char **argv) {
  unsigned count = 0;
  if (argc != 2)
    return 2;
  init();
  for (int mode = 0; mode < 3; mode++)
    for (uint64_t s = 0; s <= N; s += (mode == 1 ? 2 : 1))
      for (unsigned p = 0; p < (mode == 1 ? ngetkeys : N); p++) {
        size_t n;
        uint8_t *b = genuine(mode, s, p, &n);
        if (b == NULL)
          continue;
        if ((s + p) % 3 != 0 && mode != 1)
          goto next; /* keep the corpus small */
        for (unsigned flags = 1; flags <= 3; flags += 2) {
          uint8_t *in = malloc(n + 4);
          char path[1024], hex[65];
          immu_digest d;
          FILE *f;
          in[0] = (uint8_t)mode;
          in[1] = (uint8_t)s;
          in[2] = (uint8_t)p;
          in[3] = (uint8_t)flags;
          memcpy(in + 4, b, n);
          if (!run(mode, s, p, flags, b, n)) {
            fprintf(stderr, "genuine reply rejected: mode %d s %u p %u\n",
                    mode, (unsigned)s, p);
            return 1;
          }
          immu_sha256(in, n + 4, &d);
          immu_digest_hex(&d, hex);
          snprintf(path, sizeof path, "%s/%s", argv[1], hex);
          f = fopen(path, "wb");
          if (f == NULL || fwrite(in, 1, n + 4, f) != n + 4)
            return 1;
          fclose(f);
          free(in);
          count++;
          if (mode == 1)
            break;
        }
      next:
        free(b);
      }
  for (int mode = 3; mode < 6; mode++)
    for (unsigned k = 0; k < 4; k++) {
      uint8_t in[16] = {(uint8_t)mode, (uint8_t)(2 + k), (uint8_t)(5 + k), 1};
      char path[1024], hex[65];
      immu_digest d;
      FILE *f;
      in[4 + k] = (uint8_t)(1u << k);
      immu_sha256(in, sizeof in, &d);
      immu_digest_hex(&d, hex);
      snprintf(path, sizeof path, "%s/%s", argv[1], hex);
      f = fopen(path, "wb");
      if (f == NULL || fwrite(in, 1, sizeof in, f) != sizeof in)
        return 1;
      fclose(f);
      count++;
    }
  printf("wrote %u seeds\n", count);
  return 0;
}
#endif
