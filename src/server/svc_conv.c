/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Conversions between the KV layer's types and the protobuf-c messages of
 * immudb.schema, and the reply arena (svc_conv.h). The wire choices that
 * keep replies decodable by immudb-node 1.1.1 and HEAD clients alike are
 * listed in svc_conv.h; immudb-crypto.md sections 3.5, 6.2, 9 and 11 are
 * the reference for what each proof-carrying message must hold.
 */
#include "server/svc_conv.h"

#include <stdalign.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "core/endian.h"
#include "core/mem.h"

/* ------------------------------------------------------------------ */
/* Arena                                                               */
/* ------------------------------------------------------------------ */

#define ARENA_BLOCK 8192u
#define ARENA_ALIGN (alignof(max_align_t))

typedef struct arena_block {
  struct arena_block *next;
  size_t used;
  size_t cap;
  alignas(max_align_t) unsigned char data[];
} arena_block;

void *immu__svc_arena_alloc(immu_svc_arena *a, size_t n) {
  arena_block *b = a->head_;
  size_t need = (n + ARENA_ALIGN - 1) & ~(ARENA_ALIGN - 1);
  void *p;

  if (need < n)
    return NULL; /* overflow */
  if (b == NULL || b->cap - b->used < need) {
    size_t cap = need > ARENA_BLOCK ? need : ARENA_BLOCK;
    if (cap > SIZE_MAX - sizeof *b)
      return NULL;
    b = immu__malloc(sizeof *b + cap);
    if (b == NULL)
      return NULL;
    b->used = 0;
    b->cap = cap;
    if (a->head_ != NULL && need > ARENA_BLOCK) {
      /* A big one-off: keep the current block first so its free room is
       * still used by the small allocations that follow. */
      arena_block *h = a->head_;
      b->next = h->next;
      h->next = b;
    } else {
      b->next = a->head_;
      a->head_ = b;
    }
  }
  p = b->data + b->used;
  b->used += need;
  memset(p, 0, n);
  return p;
}

void immu__svc_arena_free(immu_svc_arena *a) {
  arena_block *b = a->head_;
  while (b != NULL) {
    arena_block *next = b->next;
    immu__free(b);
    b = next;
  }
  a->head_ = NULL;
}

/* ------------------------------------------------------------------ */
/* Helpers                                                             */
/* ------------------------------------------------------------------ */

/* A borrowed byte field. protobuf-c's fields are not const; packing never
 * writes through them. */
static ProtobufCBinaryData bin(const void *p, size_t n) {
  ProtobufCBinaryData b;
  b.len = n;
  b.data = (uint8_t *)(uintptr_t)p;
  return b;
}

static ProtobufCBinaryData dig(const immu_digest *d) {
  return bin(d->b, IMMU_DIGEST_LEN);
}

/* |n| pointers (zeroed) from the arena; n == 0 gives NULL without failing
 * (*ok stays 1). */
static void *arena_array(immu_svc_arena *a, size_t n, size_t elem, int *ok) {
  void *p;
  if (n == 0)
    return NULL;
  if (n > SIZE_MAX / elem) {
    *ok = 0;
    return NULL;
  }
  p = immu__svc_arena_alloc(a, n * elem);
  if (p == NULL)
    *ok = 0;
  return p;
}

/* Repeated bytes of 32-byte digests. Returns 0 or IMMU_ENOMEM. */
static int digests_to_pb(immu_svc_arena *a, const immu_digest *d, size_t n,
                         size_t *out_n, ProtobufCBinaryData **out) {
  int ok = 1;
  ProtobufCBinaryData *v = arena_array(a, n, sizeof *v, &ok);
  if (!ok)
    return IMMU_ENOMEM;
  for (size_t i = 0; i < n; i++)
    v[i] = dig(&d[i]);
  *out = v;
  *out_n = n;
  return 0;
}

/* ------------------------------------------------------------------ */
/* Replies                                                             */
/* ------------------------------------------------------------------ */

/* Tx metadata bytes (spec 3.4) -> TxMetadata{truncatedTxID, extra}.
 * Returns NULL with *ok = 1 when there is nothing representable. */
static Immudb__Schema__TxMetadata *
txmd_to_pb(immu_svc_arena *a, const immu_tx_header *h, int *ok) {
  Immudb__Schema__TxMetadata *m = immu__svc_arena_alloc(a, sizeof *m);
  size_t i = 0;

  if (m == NULL) {
    *ok = 0;
    return NULL;
  }
  immudb__schema__tx_metadata__init(m);
  while (i < h->md_len && h->md_len <= IMMU_TX_MD_MAX) {
    uint8_t attr = h->md[i++];
    if (attr == 0x00 && h->md_len - i >= 8) { /* truncatedUptoTx */
      m->truncatedtxid = immu__get_u64(h->md + i);
      i += 8;
    } else if (attr == 0x01 && h->md_len - i >= 2) { /* extra */
      size_t len = immu__get_u16(h->md + i);
      i += 2;
      if (h->md_len - i < len)
        break;
      m->extra = bin(h->md + i, len);
      i += len;
    } else {
      break; /* unknown attribute: send what was understood */
    }
  }
  return m;
}

Immudb__Schema__TxHeader *immu__svc_pb_tx_header(immu_svc_arena *a,
                                                 const immu_tx_header *h) {
  Immudb__Schema__TxHeader *m = immu__svc_arena_alloc(a, sizeof *m);
  int ok = 1;

  if (m == NULL)
    return NULL;
  immudb__schema__tx_header__init(m);
  m->id = h->id;
  m->prevalh = dig(&h->prev_alh); /* H("") for tx 1: 32 bytes (spec 11.1) */
  m->ts = h->ts;
  m->nentries = (int32_t)h->nentries;
  m->eh = dig(&h->eh);
  m->bltxid = h->bl_tx_id;
  m->blroot = dig(&h->bl_root);     /* ZERO32 when bl_tx_id == 0 (spec 3.5) */
  m->version = (int32_t)h->version; /* 0: absent on the wire */
  if (h->version >= 1) {
    m->metadata = txmd_to_pb(a, h, &ok);
    if (!ok)
      return NULL;
  }
  return m;
}

Immudb__Schema__Tx *immu__svc_pb_tx(immu_svc_arena *a, const immu_db_tx *tx) {
  Immudb__Schema__Tx *m = immu__svc_arena_alloc(a, sizeof *m);
  Immudb__Schema__TxEntry *ents;
  int ok = 1;

  if (m == NULL)
    return NULL;
  immudb__schema__tx__init(m);
  m->header = immu__svc_pb_tx_header(a, &tx->header);
  ents = arena_array(a, tx->nentries, sizeof *ents, &ok);
  m->entries = arena_array(a, tx->nentries, sizeof *m->entries, &ok);
  if (m->header == NULL || !ok)
    return NULL;
  m->n_entries = tx->nentries;
  for (size_t i = 0; i < tx->nentries; i++) {
    const immu_db_tx_entry *e = &tx->entries[i];
    Immudb__Schema__TxEntry *te = &ents[i];
    immudb__schema__tx_entry__init(te);
    te->key = bin(e->key, e->key_len);
    te->hvalue = dig(&e->hval);
    te->vlen = (int32_t)e->value_len; /* field 3: vOff for 1.1.1, unused */
    /* metadata (4) never: it is vLen (varint) for 1.1.1 clients */
    m->entries[i] = te;
  }
  return m;
}

Immudb__Schema__TxList *immu__svc_pb_tx_list(immu_svc_arena *a,
                                             const immu_db_tx_list *l) {
  Immudb__Schema__TxList *m = immu__svc_arena_alloc(a, sizeof *m);
  int ok = 1;

  if (m == NULL)
    return NULL;
  immudb__schema__tx_list__init(m);
  m->txs = arena_array(a, l->n, sizeof *m->txs, &ok);
  if (!ok)
    return NULL;
  m->n_txs = l->n;
  for (size_t i = 0; i < l->n; i++)
    if ((m->txs[i] = immu__svc_pb_tx(a, &l->v[i])) == NULL)
      return NULL;
  return m;
}

static Immudb__Schema__InclusionProof *terms_proof(immu_svc_arena *a,
                                                   const immu_digest_list *l) {
  Immudb__Schema__InclusionProof *m = immu__svc_arena_alloc(a, sizeof *m);
  if (m == NULL)
    return NULL;
  immudb__schema__inclusion_proof__init(m);
  if (digests_to_pb(a, l->d, l->n, &m->n_terms, &m->terms) != 0)
    return NULL;
  return m;
}

Immudb__Schema__DualProof *immu__svc_pb_dual_proof(immu_svc_arena *a,
                                                   const immu_dual_proof *p) {
  Immudb__Schema__DualProof *m = immu__svc_arena_alloc(a, sizeof *m);
  Immudb__Schema__LinearProof *lp;

  if (m == NULL)
    return NULL;
  immudb__schema__dual_proof__init(m);
  m->sourcetxheader = immu__svc_pb_tx_header(a, &p->source);
  m->targettxheader = immu__svc_pb_tx_header(a, &p->target);
  if (m->sourcetxheader == NULL || m->targettxheader == NULL)
    return NULL;
  if (digests_to_pb(a, p->inclusion.d, p->inclusion.n, &m->n_inclusionproof,
                    &m->inclusionproof) != 0 ||
      digests_to_pb(a, p->consistency.d, p->consistency.n,
                    &m->n_consistencyproof, &m->consistencyproof) != 0 ||
      digests_to_pb(a, p->last_inclusion.d, p->last_inclusion.n,
                    &m->n_lastinclusionproof, &m->lastinclusionproof) != 0)
    return NULL;
  /* ZERO32 when target.BlTxID = 0: still 32 bytes (spec 6.2, 11.12) */
  m->targetbltxalh = dig(&p->target_bl_tx_alh);

  lp = immu__svc_arena_alloc(a, sizeof *lp);
  if (lp == NULL)
    return NULL;
  immudb__schema__linear_proof__init(lp);
  lp->sourcetxid = p->linear.source_tx_id;
  lp->targettxid = p->linear.target_tx_id;
  if (digests_to_pb(a, p->linear.terms.d, p->linear.terms.n, &lp->n_terms,
                    &lp->terms) != 0)
    return NULL;
  m->linearproof = lp; /* always present: Go dereferences it */

  if (p->has_lap) {
    Immudb__Schema__LinearAdvanceProof *lap =
        immu__svc_arena_alloc(a, sizeof *lap);
    int ok = 1;
    if (lap == NULL)
      return NULL;
    immudb__schema__linear_advance_proof__init(lap);
    if (digests_to_pb(a, p->lap.linear_terms.d, p->lap.linear_terms.n,
                      &lap->n_linearproofterms, &lap->linearproofterms) != 0)
      return NULL;
    lap->inclusionproofs =
        arena_array(a, p->lap.ninclusion, sizeof *lap->inclusionproofs, &ok);
    if (!ok)
      return NULL;
    lap->n_inclusionproofs = p->lap.ninclusion;
    for (size_t i = 0; i < p->lap.ninclusion; i++)
      if ((lap->inclusionproofs[i] = terms_proof(a, &p->lap.inclusion[i])) ==
          NULL)
        return NULL;
    m->linearadvanceproof = lap;
  }
  return m;
}

Immudb__Schema__Signature *immu__svc_pb_signature(immu_svc_arena *a,
                                                  const uint8_t *sig,
                                                  size_t sig_len,
                                                  const uint8_t *pubkey) {
  Immudb__Schema__Signature *m = immu__svc_arena_alloc(a, sizeof *m);
  if (m == NULL)
    return NULL;
  immudb__schema__signature__init(m);
  m->signature = bin(sig, sig_len);
  m->publickey = bin(pubkey, IMMU_PUBKEY_LEN);
  return m;
}

Immudb__Schema__VerifiableTx *immu__svc_pb_vtx(immu_svc_arena *a,
                                               const immu_db_verifiable_tx *v,
                                               Immudb__Schema__Signature *sig) {
  Immudb__Schema__VerifiableTx *m = immu__svc_arena_alloc(a, sizeof *m);
  if (m == NULL)
    return NULL;
  immudb__schema__verifiable_tx__init(m);
  m->tx = immu__svc_pb_tx(a, &v->tx);
  m->dualproof = immu__svc_pb_dual_proof(a, &v->proof);
  m->signature = sig;
  if (m->tx == NULL || m->dualproof == NULL)
    return NULL;
  return m;
}

Immudb__Schema__Entry *
immu__svc_pb_entry(immu_svc_arena *a, const immu_db_entry *e, int with_value) {
  Immudb__Schema__Entry *m = immu__svc_arena_alloc(a, sizeof *m);
  if (m == NULL)
    return NULL;
  immudb__schema__entry__init(m);
  m->tx = e->tx;
  m->key = bin(e->key, e->key_len);
  if (with_value)
    m->value = bin(e->value, e->value_len);
  m->revision = e->revision;
  if (e->has_referenced_by) {
    Immudb__Schema__Reference *r = immu__svc_arena_alloc(a, sizeof *r);
    if (r == NULL)
      return NULL;
    immudb__schema__reference__init(r);
    r->tx = e->referenced_by.tx;
    r->key = bin(e->referenced_by.key, e->referenced_by.key_len);
    r->attx = e->referenced_by.at_tx;
    r->revision = e->referenced_by.revision;
    m->referencedby = r;
  }
  return m;
}

Immudb__Schema__Entries *immu__svc_pb_entries(immu_svc_arena *a,
                                              const immu_db_entries *l) {
  Immudb__Schema__Entries *m = immu__svc_arena_alloc(a, sizeof *m);
  int ok = 1;
  if (m == NULL)
    return NULL;
  immudb__schema__entries__init(m);
  m->entries = arena_array(a, l->n, sizeof *m->entries, &ok);
  if (!ok)
    return NULL;
  m->n_entries = l->n;
  for (size_t i = 0; i < l->n; i++)
    if ((m->entries[i] = immu__svc_pb_entry(a, &l->v[i], 1)) == NULL)
      return NULL;
  return m;
}

Immudb__Schema__ZEntry *immu__svc_pb_zentry(immu_svc_arena *a,
                                            const immu_db_zentry *z) {
  Immudb__Schema__ZEntry *m = immu__svc_arena_alloc(a, sizeof *m);
  if (m == NULL)
    return NULL;
  immudb__schema__zentry__init(m);
  m->set = bin(z->set, z->set_len);
  m->key = bin(z->key, z->key_len);
  m->score = z->score;
  m->attx = z->at_tx;
  m->entry = immu__svc_pb_entry(a, &z->entry, 1);
  return m->entry == NULL ? NULL : m;
}

Immudb__Schema__ZEntries *immu__svc_pb_zentries(immu_svc_arena *a,
                                                const immu_db_zentries *l) {
  Immudb__Schema__ZEntries *m = immu__svc_arena_alloc(a, sizeof *m);
  int ok = 1;
  if (m == NULL)
    return NULL;
  immudb__schema__zentries__init(m);
  m->entries = arena_array(a, l->n, sizeof *m->entries, &ok);
  if (!ok)
    return NULL;
  m->n_entries = l->n;
  for (size_t i = 0; i < l->n; i++)
    if ((m->entries[i] = immu__svc_pb_zentry(a, &l->v[i])) == NULL)
      return NULL;
  return m;
}

Immudb__Schema__InclusionProof *
immu__svc_pb_inclusion(immu_svc_arena *a, const immu_db_inclusion_proof *p) {
  Immudb__Schema__InclusionProof *m = immu__svc_arena_alloc(a, sizeof *m);
  if (m == NULL)
    return NULL;
  immudb__schema__inclusion_proof__init(m);
  m->leaf = (int32_t)p->leaf;
  m->width = (int32_t)p->width;
  if (digests_to_pb(a, p->terms, p->nterms, &m->n_terms, &m->terms) != 0)
    return NULL;
  return m;
}

Immudb__Schema__VerifiableEntry *
immu__svc_pb_ventry(immu_svc_arena *a, const immu_db_verifiable_entry *v,
                    Immudb__Schema__Signature *sig) {
  Immudb__Schema__VerifiableEntry *m = immu__svc_arena_alloc(a, sizeof *m);
  if (m == NULL)
    return NULL;
  immudb__schema__verifiable_entry__init(m);
  m->entry = immu__svc_pb_entry(a, &v->entry, 1);
  m->verifiabletx = immu__svc_pb_vtx(a, &v->vtx, sig);
  m->inclusionproof = immu__svc_pb_inclusion(a, &v->inclusion);
  if (m->entry == NULL || m->verifiabletx == NULL || m->inclusionproof == NULL)
    return NULL;
  return m;
}

Immudb__Schema__ImmutableState *
immu__svc_pb_state(immu_svc_arena *a, const char *db, const immu_db_state *st,
                   Immudb__Schema__Signature *sig) {
  Immudb__Schema__ImmutableState *m = immu__svc_arena_alloc(a, sizeof *m);
  if (m == NULL)
    return NULL;
  immudb__schema__immutable_state__init(m);
  m->db = (char *)(uintptr_t)db;
  m->txid = st->tx_id;
  m->txhash = dig(&st->tx_hash); /* H("") for an empty database */
  m->signature = sig;
  return m;
}

/* ------------------------------------------------------------------ */
/* Requests                                                            */
/* ------------------------------------------------------------------ */

void immu__svc_key_req(const Immudb__Schema__KeyRequest *m,
                       immu_db_key_req *out) {
  memset(out, 0, sizeof *out);
  out->key = m->key.data;
  out->key_len = m->key.len;
  out->at_tx = m->attx;
  out->since_tx = m->sincetx;
  out->no_wait = m->nowait != 0;
  out->at_revision = m->atrevision;
}

void immu__svc_scan_req(const Immudb__Schema__ScanRequest *m,
                        immu_db_scan_req *out) {
  memset(out, 0, sizeof *out);
  out->seek_key = m->seekkey.data;
  out->seek_key_len = m->seekkey.len;
  out->end_key = m->endkey.data;
  out->end_key_len = m->endkey.len;
  out->prefix = m->prefix.data;
  out->prefix_len = m->prefix.len;
  out->desc = m->desc != 0;
  out->limit = m->limit;
  out->since_tx = m->sincetx;
  out->no_wait = m->nowait != 0;
  out->inclusive_seek = m->inclusiveseek != 0;
  out->inclusive_end = m->inclusiveend != 0;
  out->offset = m->offset;
}

void immu__svc_history_req(const Immudb__Schema__HistoryRequest *m,
                           immu_db_history_req *out) {
  memset(out, 0, sizeof *out);
  out->key = m->key.data;
  out->key_len = m->key.len;
  out->offset = m->offset;
  out->limit = m->limit;
  out->desc = m->desc != 0;
  out->since_tx = m->sincetx;
}

void immu__svc_ref_req(const Immudb__Schema__ReferenceRequest *m,
                       immu_db_ref_req *out) {
  memset(out, 0, sizeof *out);
  out->key = m->key.data;
  out->key_len = m->key.len;
  out->referenced_key = m->referencedkey.data;
  out->referenced_key_len = m->referencedkey.len;
  out->at_tx = m->attx;
  out->bound_ref = m->boundref != 0;
  out->no_wait = m->nowait != 0;
}

void immu__svc_zadd_req(const Immudb__Schema__ZAddRequest *m,
                        immu_db_zadd_req *out) {
  memset(out, 0, sizeof *out);
  out->set = m->set.data;
  out->set_len = m->set.len;
  out->score = m->score;
  out->key = m->key.data;
  out->key_len = m->key.len;
  out->at_tx = m->attx;
  out->bound_ref = m->boundref != 0;
  out->no_wait = m->nowait != 0;
}

void immu__svc_zscan_req(const Immudb__Schema__ZScanRequest *m,
                         immu_db_zscan_req *out) {
  memset(out, 0, sizeof *out);
  out->set = m->set.data;
  out->set_len = m->set.len;
  out->seek_key = m->seekkey.data;
  out->seek_key_len = m->seekkey.len;
  out->seek_score = m->seekscore;
  out->seek_at_tx = m->seekattx;
  out->inclusive_seek = m->inclusiveseek != 0;
  out->limit = m->limit;
  out->desc = m->desc != 0;
  if (m->minscore != NULL) {
    out->has_min_score = 1;
    out->min_score = m->minscore->score;
  }
  if (m->maxscore != NULL) {
    out->has_max_score = 1;
    out->max_score = m->maxscore->score;
  }
  out->since_tx = m->sincetx;
  out->no_wait = m->nowait != 0;
  out->offset = m->offset;
}

/* KV metadata that asks for something (deleted, an expiration,
 * nonIndexable): only header version 1 can carry it (spec 2.3), and our
 * transactions are version 0. An empty KVMetadata message is accepted. */
static int kvmd_requested(const Immudb__Schema__KVMetadata *md) {
  return md != NULL &&
         (md->deleted || md->expiration != NULL || md->nonindexable);
}

int immu__svc_kvs(immu_svc_arena *a, const Immudb__Schema__SetRequest *m,
                  immu_db_kv **out, size_t *n) {
  int ok = 1;
  immu_db_kv *v = arena_array(a, m->n_kvs, sizeof *v, &ok);
  if (!ok)
    return IMMU_ENOMEM;
  for (size_t i = 0; i < m->n_kvs; i++) {
    const Immudb__Schema__KeyValue *kv = m->kvs[i];
    if (kvmd_requested(kv->metadata))
      return IMMU_EUNSUPPORTED;
    v[i].key = kv->key.data;
    v[i].key_len = kv->key.len;
    v[i].value = kv->value.data;
    v[i].value_len = kv->value.len;
  }
  *out = v;
  *n = m->n_kvs;
  return 0;
}

int immu__svc_ops(immu_svc_arena *a, const Immudb__Schema__ExecAllRequest *m,
                  immu_db_op **out, size_t *n, char *errbuf, size_t errcap) {
  int ok = 1;
  immu_db_op *v = arena_array(a, m->n_operations, sizeof *v, &ok);
  if (!ok)
    return IMMU_ENOMEM;
  for (size_t i = 0; i < m->n_operations; i++) {
    const Immudb__Schema__Op *op = m->operations[i];
    switch (op->operation_case) {
    case IMMUDB__SCHEMA__OP__OPERATION_KV:
      if (kvmd_requested(op->kv->metadata)) {
        snprintf(errbuf, errcap, "%s", IMMU_SVC_MD_UNSUPPORTED);
        return IMMU_EUNSUPPORTED;
      }
      v[i].kind = IMMU_DB_OP_KV;
      v[i].u.kv.key = op->kv->key.data;
      v[i].u.kv.key_len = op->kv->key.len;
      v[i].u.kv.value = op->kv->value.data;
      v[i].u.kv.value_len = op->kv->value.len;
      break;
    case IMMUDB__SCHEMA__OP__OPERATION_Z_ADD:
      v[i].kind = IMMU_DB_OP_ZADD;
      immu__svc_zadd_req(op->zadd, &v[i].u.zadd);
      break;
    case IMMUDB__SCHEMA__OP__OPERATION_REF:
      if (op->ref->n_preconditions > 0) {
        snprintf(errbuf, errcap, "preconditions are not supported");
        return IMMU_EUNSUPPORTED;
      }
      v[i].kind = IMMU_DB_OP_REF;
      immu__svc_ref_req(op->ref, &v[i].u.ref);
      break;
    default:
      snprintf(errbuf, errcap,
               "illegal arguments: operation %zu has no kind set", i);
      return IMMU_EINVAL;
    }
  }
  *out = v;
  *n = m->n_operations;
  return 0;
}

/* ------------------------------------------------------------------ */
/* Client-side direction                                               */
/* ------------------------------------------------------------------ */

static int digest_from_pb(const ProtobufCBinaryData *b, immu_digest *out) {
  if (b->len != IMMU_DIGEST_LEN)
    return IMMU_EINVAL;
  memcpy(out->b, b->data, IMMU_DIGEST_LEN);
  return 0;
}

static int digests_from_pb(immu_svc_arena *a, const ProtobufCBinaryData *v,
                           size_t n, immu_digest_list *out) {
  int ok = 1;
  out->d = arena_array(a, n, sizeof *out->d, &ok);
  out->n = 0;
  if (!ok)
    return IMMU_ENOMEM;
  for (size_t i = 0; i < n; i++)
    if (digest_from_pb(&v[i], &out->d[i]) != 0)
      return IMMU_EINVAL;
  out->n = n;
  return 0;
}

int immu__svc_tx_header_from_pb(const Immudb__Schema__TxHeader *m,
                                immu_tx_header *out) {
  memset(out, 0, sizeof *out);
  if (m == NULL || m->nentries < 0 || (m->version != 0 && m->version != 1))
    return IMMU_EINVAL;
  out->id = m->id;
  out->ts = m->ts;
  out->bl_tx_id = m->bltxid;
  out->version = (uint32_t)m->version;
  out->nentries = (uint32_t)m->nentries;
  if (digest_from_pb(&m->prevalh, &out->prev_alh) != 0 ||
      digest_from_pb(&m->eh, &out->eh) != 0 ||
      digest_from_pb(&m->blroot, &out->bl_root) != 0)
    return IMMU_EINVAL;
  if (m->metadata != NULL) {
    const Immudb__Schema__TxMetadata *md = m->metadata;
    size_t n = 0;
    if (m->version == 0 && (md->truncatedtxid != 0 || md->extra.len != 0))
      return IMMU_EINVAL; /* version 0 carries no tx metadata */
    if (md->truncatedtxid != 0) {
      out->md[n++] = 0x00;
      immu__put_u64(out->md + n, md->truncatedtxid);
      n += 8;
    }
    if (md->extra.len != 0) {
      if (md->extra.len > 256)
        return IMMU_EINVAL;
      out->md[n++] = 0x01;
      immu__put_u16(out->md + n, (uint16_t)md->extra.len);
      n += 2;
      memcpy(out->md + n, md->extra.data, md->extra.len);
      n += md->extra.len;
    }
    out->md_len = (uint32_t)n;
  }
  return 0;
}

int immu__svc_dual_proof_from_pb(immu_svc_arena *a,
                                 const Immudb__Schema__DualProof *m,
                                 immu_dual_proof *out) {
  int rc;
  memset(out, 0, sizeof *out);
  if (m == NULL || m->linearproof == NULL)
    return IMMU_EINVAL;
  if ((rc = immu__svc_tx_header_from_pb(m->sourcetxheader, &out->source)) !=
          0 ||
      (rc = immu__svc_tx_header_from_pb(m->targettxheader, &out->target)) !=
          0 ||
      (rc = digests_from_pb(a, m->inclusionproof, m->n_inclusionproof,
                            &out->inclusion)) != 0 ||
      (rc = digests_from_pb(a, m->consistencyproof, m->n_consistencyproof,
                            &out->consistency)) != 0 ||
      (rc = digests_from_pb(a, m->lastinclusionproof, m->n_lastinclusionproof,
                            &out->last_inclusion)) != 0 ||
      (rc = digest_from_pb(&m->targetbltxalh, &out->target_bl_tx_alh)) != 0 ||
      (rc = digests_from_pb(a, m->linearproof->terms, m->linearproof->n_terms,
                            &out->linear.terms)) != 0)
    return rc;
  out->linear.source_tx_id = m->linearproof->sourcetxid;
  out->linear.target_tx_id = m->linearproof->targettxid;
  if (m->linearadvanceproof != NULL) {
    const Immudb__Schema__LinearAdvanceProof *lap = m->linearadvanceproof;
    int ok = 1;
    out->has_lap = 1;
    if ((rc = digests_from_pb(a, lap->linearproofterms, lap->n_linearproofterms,
                              &out->lap.linear_terms)) != 0)
      return rc;
    out->lap.inclusion =
        arena_array(a, lap->n_inclusionproofs, sizeof *out->lap.inclusion, &ok);
    if (!ok)
      return IMMU_ENOMEM;
    for (size_t i = 0; i < lap->n_inclusionproofs; i++) {
      if ((rc = digests_from_pb(a, lap->inclusionproofs[i]->terms,
                                lap->inclusionproofs[i]->n_terms,
                                &out->lap.inclusion[i])) != 0)
        return rc;
      out->lap.ninclusion = i + 1;
    }
  }
  return 0;
}
