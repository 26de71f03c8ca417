/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The C client SDK (include/immudb/client.h): ImmuService calls over the
 * gRPC transport of grpc_client.h, protobuf-c encoding, and the
 * verification of every proof-carrying reply (client_int.h, rules V1-V6).
 *
 * Layout of this file
 *   1. errors, allocation glue for protobuf-c
 *   2. proto -> client conversions (entries, tx, KV metadata)
 *   3. verification (pure functions, no I/O; the security boundary)
 *   4. the handle: connection, metadata, identity pinning, RPC helper
 *   5. the public calls
 *
 * Every byte received from the server is treated as hostile: lengths are
 * checked before use, every digest must be 32 bytes, counts are checked
 * against what was received, and nothing is asserted about server data.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "client/client_int.h"
#include "client/grpc_client.h"
#include "core/endian.h"
#include "core/mem.h"
#include "google/protobuf/empty.pb-c.h"
#include "immudb/client.h"
#include "immudb/crypto.h"
#include "immudb/err.h"
#include "schema.pb-c.h"

#define SVC "/immudb.schema.ImmuService/"
#define DEFAULT_PORT 3322
#define DEFAULT_DB "defaultdb"
#define DEFAULT_KEEPALIVE_MS 60000
#define KEEPALIVE_TIMEOUT_MS 10000
#define CHUNK_SIZE (64u * 1024u) /* Chunk content, immudb's default */
#define MAX_STREAM_BYTES ((size_t)(64u << 20) + 2u * 65536u)
#define ERRLEN 1024

/* ------------------------------------------------------------------ */
/* 1. Errors and allocation                                            */
/* ------------------------------------------------------------------ */

static _Thread_local char tl_err[ERRLEN];
static _Thread_local int tl_grpc = -1;

const char *immu_client_last_error(void) { return tl_err; }

int immu_client_last_grpc_status(void) { return tl_grpc; }

static int fail(int rc, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static int fail(int rc, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(tl_err, sizeof tl_err, fmt, ap);
  va_end(ap);
  return rc;
}

static void clear_err(void) {
  tl_err[0] = '\0';
  tl_grpc = -1;
}

/* Writes a message into a caller buffer; returns IMMU_EVERIFY. */
static int vfail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int vfail(char *err, size_t errlen, const char *fmt, ...) {
  va_list ap;
  if (err != NULL && errlen > 0) {
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
  }
  return IMMU_EVERIFY;
}

static void *pb_alloc(void *data, size_t n) {
  (void)data;
  return immu__malloc(n ? n : 1);
}

static void pb_free(void *data, void *p) {
  (void)data;
  immu__free(p);
}

ProtobufCAllocator immu__cli_pb_allocator = {pb_alloc, pb_free, NULL};

#define PB_FREE(m)                                                             \
  do {                                                                         \
    if ((m) != NULL)                                                           \
      protobuf_c_message_free_unpacked(&(m)->base, &immu__cli_pb_allocator);             \
  } while (0)

/* Copy of |n| bytes; never NULL on success (1 byte allocated for n == 0). */
static uint8_t *dup_bytes(const uint8_t *p, size_t n) {
  uint8_t *d = immu__malloc(n ? n : 1);
  if (d != NULL && n > 0)
    memcpy(d, p, n);
  return d;
}

static char *dup_str(const char *s) {
  if (s == NULL)
    s = "";
  return immu__strndup(s, strlen(s));
}

static ProtobufCBinaryData bin(const void *p, size_t n) {
  ProtobufCBinaryData b;
  b.len = n;
  b.data = (uint8_t *)(uintptr_t)p;
  return b;
}

static ProtobufCBinaryData bin_str(const char *s) {
  return bin(s, s ? strlen(s) : 0);
}

static char *cstr(const char *s) { return (char *)(uintptr_t)(s ? s : ""); }

static int bytes_eq(const uint8_t *a, size_t alen, const uint8_t *b,
                    size_t blen) {
  return alen == blen && (alen == 0 || memcmp(a, b, alen) == 0);
}

/* ------------------------------------------------------------------ */
/* 2. Conversions                                                      */
/* ------------------------------------------------------------------ */

/* KV metadata (spec 2.3): the flags and the hashed byte string. */
static void md_from_pb(const Immudb__Schema__KVMetadata *m,
                       immu_client_kv_md *out, uint8_t bytes[IMMU_KV_MD_MAX],
                       size_t *blen) {
  size_t n = 0;
  memset(out, 0, sizeof *out);
  if (m != NULL) {
    out->deleted = m->deleted ? 1 : 0;
    if (m->expiration != NULL) {
      out->has_expiration = 1;
      out->expires_at = m->expiration->expiresat;
    }
    out->non_indexable = m->nonindexable ? 1 : 0;
  }
  if (bytes != NULL) {
    if (out->deleted)
      bytes[n++] = 0x00;
    if (out->has_expiration) {
      bytes[n++] = 0x01;
      immu__put_u64(bytes + n, (uint64_t)out->expires_at);
      n += 8;
    }
    if (out->non_indexable)
      bytes[n++] = 0x02;
  }
  if (blen != NULL)
    *blen = n;
}

static int md_empty(const immu_client_kv_md *m) {
  return !m->deleted && !m->has_expiration && !m->non_indexable;
}

void immu_client_entry_clear(immu_client_entry *e) {
  if (e == NULL)
    return;
  immu__free(e->key);
  immu__free(e->value);
  immu__free(e->referenced_by.key);
  memset(e, 0, sizeof *e);
}

void immu_client_entries_clear(immu_client_entries *l) {
  if (l == NULL)
    return;
  for (size_t i = 0; i < l->n; i++)
    immu_client_entry_clear(&l->v[i]);
  immu__free(l->v);
  memset(l, 0, sizeof *l);
}

void immu_client_zentries_clear(immu_client_zentries *l) {
  if (l == NULL)
    return;
  for (size_t i = 0; i < l->n; i++) {
    immu__free(l->v[i].set);
    immu__free(l->v[i].key);
    immu_client_entry_clear(&l->v[i].entry);
  }
  immu__free(l->v);
  memset(l, 0, sizeof *l);
}

void immu_client_tx_clear(immu_client_tx *tx) {
  if (tx == NULL)
    return;
  for (size_t i = 0; i < tx->nentries; i++) {
    immu__free(tx->entries[i].key);
    immu__free(tx->entries[i].value);
  }
  immu__free(tx->entries);
  memset(tx, 0, sizeof *tx);
}

void immu_client_tx_list_clear(immu_client_tx_list *l) {
  if (l == NULL)
    return;
  for (size_t i = 0; i < l->n; i++)
    immu_client_tx_clear(&l->v[i]);
  immu__free(l->v);
  memset(l, 0, sizeof *l);
}

int immu__cli_entry_from_pb(const Immudb__Schema__Entry *m,
                            immu_client_entry *out) {
  memset(out, 0, sizeof *out);
  if (m == NULL)
    return IMMU_EPROTO;
  out->tx = m->tx;
  out->key = dup_bytes(m->key.data, m->key.len);
  out->key_len = m->key.len;
  out->value = dup_bytes(m->value.data, m->value.len);
  out->value_len = m->value.len;
  out->revision = m->revision;
  out->expired = m->expired ? 1 : 0;
  md_from_pb(m->metadata, &out->md, NULL, NULL);
  if (m->referencedby != NULL) {
    const Immudb__Schema__Reference *r = m->referencedby;
    out->has_referenced_by = 1;
    out->referenced_by.tx = r->tx;
    out->referenced_by.key = dup_bytes(r->key.data, r->key.len);
    out->referenced_by.key_len = r->key.len;
    out->referenced_by.at_tx = r->attx;
    out->referenced_by.revision = r->revision;
    md_from_pb(r->metadata, &out->referenced_by.md, NULL, NULL);
    if (out->referenced_by.key == NULL)
      goto oom;
  }
  if (out->key == NULL || out->value == NULL)
    goto oom;
  return 0;
oom:
  immu_client_entry_clear(out);
  return IMMU_ENOMEM;
}

static int entries_from_pb(Immudb__Schema__Entry *const *v, size_t n,
                           immu_client_entries *out) {
  memset(out, 0, sizeof *out);
  if (n == 0)
    return 0;
  out->v = immu__calloc(n, sizeof *out->v);
  if (out->v == NULL)
    return IMMU_ENOMEM;
  for (size_t i = 0; i < n; i++) {
    int rc = immu__cli_entry_from_pb(v[i], &out->v[i]);
    if (rc != 0) {
      immu_client_entries_clear(out);
      return rc;
    }
    out->n = i + 1;
  }
  return 0;
}

static int zentries_from_pb(const Immudb__Schema__ZEntries *m,
                            immu_client_zentries *out) {
  memset(out, 0, sizeof *out);
  if (m->n_entries == 0)
    return 0;
  out->v = immu__calloc(m->n_entries, sizeof *out->v);
  if (out->v == NULL)
    return IMMU_ENOMEM;
  for (size_t i = 0; i < m->n_entries; i++) {
    const Immudb__Schema__ZEntry *z = m->entries[i];
    immu_client_zentry *o = &out->v[i];
    int rc;
    out->n = i + 1;
    o->set = dup_bytes(z->set.data, z->set.len);
    o->set_len = z->set.len;
    o->key = dup_bytes(z->key.data, z->key.len);
    o->key_len = z->key.len;
    o->score = z->score;
    o->at_tx = z->attx;
    if (o->set == NULL || o->key == NULL) {
      immu_client_zentries_clear(out);
      return IMMU_ENOMEM;
    }
    if (z->entry != NULL &&
        (rc = immu__cli_entry_from_pb(z->entry, &o->entry)) != 0) {
      immu_client_zentries_clear(out);
      return rc;
    }
  }
  return 0;
}

/* Copies a 32-byte digest field; anything else is malformed (rule V1). */
static int digest_from(const ProtobufCBinaryData *b, immu_digest *out) {
  if (b->len != IMMU_DIGEST_LEN || b->data == NULL)
    return -1;
  memcpy(out->b, b->data, IMMU_DIGEST_LEN);
  return 0;
}

int immu__cli_header_from_pb(const Immudb__Schema__TxHeader *m,
                             immu_tx_header *out, char *err, size_t errlen) {
  immu_digest alh;

  memset(out, 0, sizeof *out);
  if (m == NULL)
    return vfail(err, errlen, "missing tx header");
  out->id = m->id;
  out->ts = m->ts;
  out->bl_tx_id = m->bltxid;
  if (digest_from(&m->prevalh, &out->prev_alh) != 0 ||
      digest_from(&m->eh, &out->eh) != 0 ||
      digest_from(&m->blroot, &out->bl_root) != 0)
    return vfail(err, errlen,
                 "tx %" PRIu64 " header: prevAlh, eH and blRoot must be "
                 "32 bytes each (got %zu, %zu, %zu)",
                 m->id, m->prevalh.len, m->eh.len, m->blroot.len);
  if (m->version != 0 && m->version != 1)
    return vfail(err, errlen, "tx %" PRIu64 " header: unknown version %d",
                 m->id, (int)m->version);
  out->version = (uint32_t)m->version;
  if (m->nentries < 1 ||
      (out->version == 0 && (uint32_t)m->nentries > IMMU_V0_MAX_ENTRIES))
    return vfail(err, errlen,
                 "tx %" PRIu64 " header: invalid entry count %d for version "
                 "%u",
                 m->id, (int)m->nentries, (unsigned)out->version);
  out->nentries = (uint32_t)m->nentries;
  if (m->metadata != NULL) {
    const Immudb__Schema__TxMetadata *md = m->metadata;
    size_t n = 0;
    if (md->truncatedtxid != 0) {
      out->md[n++] = 0x00;
      immu__put_u64(out->md + n, md->truncatedtxid);
      n += 8;
    }
    if (md->extra.len > 0) {
      if (md->extra.len > 256)
        return vfail(err, errlen,
                     "tx %" PRIu64 " header: tx metadata 'extra' of %zu "
                     "bytes (at most 256)",
                     m->id, md->extra.len);
      out->md[n++] = 0x01;
      immu__put_u16(out->md + n, (uint16_t)md->extra.len);
      n += 2;
      memcpy(out->md + n, md->extra.data, md->extra.len);
      n += md->extra.len;
    }
    out->md_len = (uint32_t)n;
    if (n > 0 && out->version == 0)
      return vfail(err, errlen,
                   "tx %" PRIu64 " header: version 0 cannot carry tx "
                   "metadata",
                   m->id);
  }
  if (out->id == 0 || out->bl_tx_id >= out->id)
    return vfail(err, errlen,
                 "tx header: invalid id %" PRIu64 " / blTxId %" PRIu64,
                 out->id, out->bl_tx_id);
  if (immu_tx_alh(out, &alh) != 0)
    return vfail(err, errlen, "tx %" PRIu64 " header: cannot be hashed",
                 out->id);
  return 0;
}

/* Digest list from repeated bytes (each exactly 32 bytes). */
static int list_from_pb(const ProtobufCBinaryData *v, size_t n,
                        immu_digest_list *out) {
  out->d = NULL;
  out->n = 0;
  if (n == 0)
    return 0;
  if (n > SIZE_MAX / sizeof(immu_digest))
    return IMMU_EVERIFY;
  out->d = immu__malloc(n * sizeof(immu_digest));
  if (out->d == NULL)
    return IMMU_ENOMEM;
  out->n = n;
  for (size_t i = 0; i < n; i++)
    if (digest_from(&v[i], &out->d[i]) != 0)
      return IMMU_EVERIFY; /* the caller frees the partial list */
  return 0;
}

int immu__cli_dual_proof_from_pb(const Immudb__Schema__DualProof *m,
                                 immu_dual_proof *out, char *err,
                                 size_t errlen) {
  int rc;

  memset(out, 0, sizeof *out);
  if (m == NULL)
    return vfail(err, errlen, "missing dual proof");
  if ((rc = immu__cli_header_from_pb(m->sourcetxheader, &out->source, err,
                                     errlen)) != 0 ||
      (rc = immu__cli_header_from_pb(m->targettxheader, &out->target, err,
                                     errlen)) != 0)
    return rc;
  if (m->linearproof == NULL)
    return vfail(err, errlen, "dual proof without a linear proof");
  if (digest_from(&m->targetbltxalh, &out->target_bl_tx_alh) != 0)
    return vfail(err, errlen,
                 "dual proof: targetBlTxAlh must be 32 bytes (got %zu)",
                 m->targetbltxalh.len);
  out->linear.source_tx_id = m->linearproof->sourcetxid;
  out->linear.target_tx_id = m->linearproof->targettxid;
  if ((rc = list_from_pb(m->inclusionproof, m->n_inclusionproof,
                         &out->inclusion)) != 0 ||
      (rc = list_from_pb(m->consistencyproof, m->n_consistencyproof,
                         &out->consistency)) != 0 ||
      (rc = list_from_pb(m->lastinclusionproof, m->n_lastinclusionproof,
                         &out->last_inclusion)) != 0 ||
      (rc = list_from_pb(m->linearproof->terms, m->linearproof->n_terms,
                         &out->linear.terms)) != 0)
    goto bad;
  if (m->linearadvanceproof != NULL) {
    const Immudb__Schema__LinearAdvanceProof *l = m->linearadvanceproof;
    out->has_lap = 1;
    if ((rc = list_from_pb(l->linearproofterms, l->n_linearproofterms,
                           &out->lap.linear_terms)) != 0)
      goto bad;
    if (l->n_inclusionproofs > 0) {
      out->lap.inclusion =
          immu__calloc(l->n_inclusionproofs, sizeof *out->lap.inclusion);
      if (out->lap.inclusion == NULL) {
        rc = IMMU_ENOMEM;
        goto bad;
      }
      out->lap.ninclusion = l->n_inclusionproofs;
      for (size_t i = 0; i < l->n_inclusionproofs; i++) {
        const Immudb__Schema__InclusionProof *ip = l->inclusionproofs[i];
        if (ip == NULL) {
          rc = IMMU_EVERIFY;
          goto bad;
        }
        if ((rc = list_from_pb(ip->terms, ip->n_terms,
                               &out->lap.inclusion[i])) != 0)
          goto bad;
      }
    }
  }
  return 0;
bad:
  immu_dual_proof_free(out);
  if (rc == IMMU_ENOMEM)
    return rc;
  return vfail(err, errlen, "dual proof: every proof term must be 32 bytes");
}

int immu__cli_tx_from_pb(const Immudb__Schema__Tx *m, immu_client_tx *out,
                         char *err, size_t errlen) {
  immu_digest *dig = NULL, root;
  char a[65], b[65];
  int rc;

  memset(out, 0, sizeof *out);
  if (m == NULL)
    return vfail(err, errlen, "missing tx");
  if ((rc = immu__cli_header_from_pb(m->header, &out->header, err, errlen)) !=
      0)
    return rc;
  /* Rule V2: the whole tx, so that Eh can be recomputed. */
  if (m->n_entries != out->header.nentries) {
    rc = vfail(err, errlen,
               "tx %" PRIu64 ": header announces %u entries but %zu were "
               "sent",
               out->header.id, (unsigned)out->header.nentries, m->n_entries);
    memset(out, 0, sizeof *out);
    return rc;
  }
  out->entries = immu__calloc(m->n_entries, sizeof *out->entries);
  dig = immu__malloc(m->n_entries * sizeof *dig);
  if (out->entries == NULL || dig == NULL) {
    rc = IMMU_ENOMEM;
    goto fail;
  }
  out->nentries = m->n_entries;
  for (size_t i = 0; i < m->n_entries; i++) {
    const Immudb__Schema__TxEntry *te = m->entries[i];
    immu_client_tx_entry *e = &out->entries[i];
    uint8_t md[IMMU_KV_MD_MAX];
    size_t mdlen;

    if (te == NULL || te->key.len == 0 ||
        digest_from(&te->hvalue, &e->hval) != 0) {
      rc = vfail(err, errlen,
                 "tx %" PRIu64 " entry %zu: empty key or hValue not 32 "
                 "bytes",
                 out->header.id, i);
      goto fail;
    }
    md_from_pb(te->metadata, &e->md, md, &mdlen);
    e->vlen = te->vlen >= 0 ? (uint32_t)te->vlen : 0;
    e->key = dup_bytes(te->key.data, te->key.len);
    e->key_len = te->key.len;
    if (e->key == NULL) {
      rc = IMMU_ENOMEM;
      goto fail;
    }
    if (te->value.len > 0) {
      immu_digest hv;
      immu_sha256(te->value.data, te->value.len, &hv);
      if (!immu_digest_eq(&hv, &e->hval)) {
        rc = vfail(err, errlen,
                   "tx %" PRIu64 " entry %zu: the value sent does not hash "
                   "to its hValue",
                   out->header.id, i);
        goto fail;
      }
      e->value = dup_bytes(te->value.data, te->value.len);
      if (e->value == NULL) {
        rc = IMMU_ENOMEM;
        goto fail;
      }
      e->value_len = te->value.len;
      e->has_value = 1;
    }
    if (immu_entry_digest(out->header.version, e->key, e->key_len, md, mdlen,
                          &e->hval, &dig[i]) != 0) {
      rc = vfail(err, errlen,
                 "tx %" PRIu64 " entry %zu: KV metadata or key length not "
                 "allowed with header version %u",
                 out->header.id, i, (unsigned)out->header.version);
      goto fail;
    }
  }
  if (immu_htree_root(dig, m->n_entries, &root) != 0 ||
      !immu_digest_eq(&root, &out->header.eh)) {
    immu_digest_hex(&root, a);
    immu_digest_hex(&out->header.eh, b);
    rc = vfail(err, errlen,
               "tx %" PRIu64 ": the entries hash to Eh %s but the header "
               "says %s",
               out->header.id, a, b);
    goto fail;
  }
  if (immu_tx_alh(&out->header, &out->alh) != 0) {
    rc = vfail(err, errlen, "tx %" PRIu64 ": header cannot be hashed",
               out->header.id);
    goto fail;
  }
  immu__free(dig);
  return 0;
fail:
  immu__free(dig);
  immu_client_tx_clear(out);
  return rc;
}

/* ------------------------------------------------------------------ */
/* 3. Verification                                                     */
/* ------------------------------------------------------------------ */

void immu__cli_expect_clear(immu__cli_expect *e) {
  if (e == NULL)
    return;
  immu__free(e->key);
  memset(e, 0, sizeof *e);
}

int immu__cli_expect_kv(immu__cli_expect *e, const uint8_t *key, size_t klen,
                        const uint8_t *val, size_t vlen) {
  static const uint8_t plain = IMMU_VALUE_PLAIN;
  immu_buf parts[2] = {{&plain, 1}, {val, vlen}};

  memset(e, 0, sizeof *e);
  if (key == NULL || klen == 0 || (val == NULL && vlen > 0))
    return IMMU_EINVAL;
  e->key = immu__malloc(IMMU_ENC_KEY_LEN(klen));
  if (e->key == NULL)
    return IMMU_ENOMEM;
  immu_enc_key(key, klen, e->key, IMMU_ENC_KEY_LEN(klen), &e->klen);
  immu_sha256v(parts, 2, &e->hval);
  return 0;
}

int immu__cli_expect_ref(immu__cli_expect *e, const uint8_t *key, size_t klen,
                         const uint8_t *ref, size_t rlen, uint64_t at_tx) {
  uint8_t *v;
  size_t vl;

  memset(e, 0, sizeof *e);
  if (key == NULL || klen == 0 || ref == NULL || rlen == 0)
    return IMMU_EINVAL;
  v = immu__malloc(IMMU_ENC_REF_VALUE_LEN(rlen));
  e->key = immu__malloc(IMMU_ENC_KEY_LEN(klen));
  if (v == NULL || e->key == NULL) {
    immu__free(v);
    immu__cli_expect_clear(e);
    return IMMU_ENOMEM;
  }
  immu_enc_key(key, klen, e->key, IMMU_ENC_KEY_LEN(klen), &e->klen);
  immu_enc_ref_value(ref, rlen, at_tx, v, IMMU_ENC_REF_VALUE_LEN(rlen), &vl);
  immu_sha256(v, vl, &e->hval);
  immu__free(v);
  return 0;
}

int immu__cli_expect_zadd(immu__cli_expect *e, const uint8_t *set, size_t slen,
                          double score, const uint8_t *key, size_t klen,
                          uint64_t at_tx) {
  size_t cap = IMMU_ENC_ZADD_KEY_LEN(slen, klen);

  memset(e, 0, sizeof *e);
  if (set == NULL || slen == 0 || key == NULL || klen == 0 || isnan(score))
    return IMMU_EINVAL;
  e->key = immu__malloc(cap);
  if (e->key == NULL)
    return IMMU_ENOMEM;
  immu_enc_zadd_key(set, slen, score, key, klen, at_tx, e->key, cap, &e->klen);
  e->hval = immu_empty_digest; /* spec 11.5: H("") */
  return 0;
}

/* Rules V3 and V4: links the tx (id, alh) with the trusted state. With
 * |is_write| the tx must be newer than the trusted state. */
static int verify_link(const Immudb__Schema__VerifiableTx *m,
                       const immu__cli_vctx *v, uint64_t x,
                       const immu_digest *x_alh, int is_write,
                       immu__cli_state *newst) {
  const immu__cli_state *t = v->trusted;
  uint64_t sid = t != NULL ? t->tx_id : 0;
  uint64_t src_id, tgt_id;
  const immu_digest *src_alh, *tgt_alh;
  immu_dual_proof dp;
  int rc;

  if (is_write && sid > 0 && x <= sid)
    return vfail(v->err, v->errlen,
                 "the server claims the write landed in tx %" PRIu64
                 ", which is not newer than the trusted tx %" PRIu64,
                 x, sid);
  if (sid == 0) {
    src_id = tgt_id = x;
    src_alh = tgt_alh = x_alh;
  } else if (sid <= x) {
    src_id = sid;
    src_alh = &t->alh;
    tgt_id = x;
    tgt_alh = x_alh;
  } else {
    src_id = x;
    src_alh = x_alh;
    tgt_id = sid;
    tgt_alh = &t->alh;
  }
  if ((rc = immu__cli_dual_proof_from_pb(m->dualproof, &dp, v->err,
                                         v->errlen)) != 0)
    return rc;
  rc = immu_dual_proof_verify(&dp, src_id, tgt_id, src_alh, tgt_alh);
  immu_dual_proof_free(&dp);
  if (rc != 0)
    return vfail(v->err, v->errlen,
                 "the dual proof between tx %" PRIu64 " and tx %" PRIu64
                 " does not verify (trusted state: tx %" PRIu64 ")",
                 src_id, tgt_id, sid);
  memset(newst, 0, sizeof *newst);
  snprintf(newst->db, sizeof newst->db, "%s", v->db ? v->db : "");
  newst->tx_id = tgt_id;
  newst->alh = *tgt_alh;
  if (m->signature != NULL && m->signature->signature.len > 0 &&
      m->signature->signature.len <= IMMU_SIG_MAX) {
    memcpy(newst->sig, m->signature->signature.data,
           m->signature->signature.len);
    newst->sig_len = m->signature->signature.len;
  }
  if (v->verifier != NULL) {
    if (newst->sig_len == 0)
      return vfail(v->err, v->errlen,
                   "the server sent no (or an oversized) signature for the "
                   "state of tx %" PRIu64 " but a signing key is configured",
                   tgt_id);
    rc = immu_verifier_verify_state(v->verifier, newst->db, strlen(newst->db),
                                    tgt_id, tgt_alh, newst->sig,
                                    newst->sig_len);
    if (rc == IMMU_ENOMEM)
      return rc;
    if (rc != 0)
      return vfail(v->err, v->errlen,
                   "the server's signature of the state {db '%s', tx %" PRIu64
                   "} does not verify with the configured key",
                   newst->db, tgt_id);
  }
  return 0;
}

int immu__cli_verify_write(const Immudb__Schema__VerifiableTx *m,
                           const immu__cli_vctx *v, const immu__cli_expect *exp,
                           size_t nexp, immu__cli_state *newst,
                           immu_tx_header *hdr) {
  immu_client_tx tx;
  int rc;

  if (m == NULL || m->tx == NULL || m->dualproof == NULL)
    return vfail(v->err, v->errlen,
                 "incomplete VerifiableTx (tx or dual proof missing)");
  if ((rc = immu__cli_tx_from_pb(m->tx, &tx, v->err, v->errlen)) != 0)
    return rc;
  /* Rule V5: exactly what was written, in order. */
  if (tx.nentries != nexp) {
    rc = vfail(v->err, v->errlen,
               "tx %" PRIu64 " holds %zu entries, the request wrote %zu",
               tx.header.id, tx.nentries, nexp);
    goto out;
  }
  for (size_t i = 0; i < nexp; i++) {
    const immu_client_tx_entry *e = &tx.entries[i];
    if (!bytes_eq(e->key, e->key_len, exp[i].key, exp[i].klen) ||
        !immu_digest_eq(&e->hval, &exp[i].hval) || !md_empty(&e->md)) {
      rc = vfail(v->err, v->errlen,
                 "tx %" PRIu64 " entry %zu is not the one the request wrote "
                 "(key, value hash or metadata differ)",
                 tx.header.id, i);
      goto out;
    }
  }
  if ((rc = verify_link(m, v, tx.header.id, &tx.alh, 1, newst)) != 0)
    goto out;
  if (hdr != NULL)
    *hdr = tx.header;
out:
  immu_client_tx_clear(&tx);
  return rc;
}

int immu__cli_verify_tx_by_id(const Immudb__Schema__VerifiableTx *m,
                              const immu__cli_vctx *v, uint64_t tx_id,
                              immu__cli_state *newst, immu_client_tx *out) {
  immu_client_tx tx;
  int rc;

  if (out != NULL)
    memset(out, 0, sizeof *out);
  if (m == NULL || m->tx == NULL || m->dualproof == NULL)
    return vfail(v->err, v->errlen,
                 "incomplete VerifiableTx (tx or dual proof missing)");
  if ((rc = immu__cli_tx_from_pb(m->tx, &tx, v->err, v->errlen)) != 0)
    return rc;
  if (tx.header.id != tx_id) {
    rc = vfail(v->err, v->errlen,
               "asked for tx %" PRIu64 ", the server sent tx %" PRIu64, tx_id,
               tx.header.id);
    goto out;
  }
  if ((rc = verify_link(m, v, tx.header.id, &tx.alh, 0, newst)) != 0)
    goto out;
  if (out != NULL) {
    *out = tx;
    return 0;
  }
out:
  immu_client_tx_clear(&tx);
  return rc;
}

int immu__cli_verify_get(const Immudb__Schema__VerifiableEntry *m,
                         const immu__cli_vctx *v, const uint8_t *key,
                         size_t klen, uint64_t at_tx, immu__cli_state *newst,
                         immu_client_entry *out) {
  static const uint8_t plain = IMMU_VALUE_PLAIN;
  const Immudb__Schema__Entry *e;
  const Immudb__Schema__InclusionProof *ip;
  const Immudb__Schema__KVMetadata *mdpb;
  immu_client_kv_md md;
  uint8_t mdb[IMMU_KV_MD_MAX];
  size_t mdlen, skl;
  uint8_t *skey = NULL;
  immu_digest hval, digest, terms[IMMU_PROOF_MAX_TERMS];
  immu_client_tx tx;
  uint64_t vtx;
  int rc;

  if (out != NULL)
    memset(out, 0, sizeof *out);
  memset(&tx, 0, sizeof tx);
  if (key == NULL || klen == 0)
    return IMMU_EINVAL;
  if (m == NULL || m->entry == NULL || m->verifiabletx == NULL ||
      m->verifiabletx->tx == NULL || m->verifiabletx->dualproof == NULL ||
      m->inclusionproof == NULL)
    return vfail(v->err, v->errlen,
                 "incomplete VerifiableEntry (entry, tx, dual proof or "
                 "inclusion proof missing)");
  e = m->entry;
  ip = m->inclusionproof;

  /* Rule V6: the entry the requested key must have in tx vTx. */
  if (e->referencedby != NULL) {
    const Immudb__Schema__Reference *r = e->referencedby;
    uint8_t *rv;
    size_t rvl;
    if (!bytes_eq(r->key.data, r->key.len, key, klen))
      return vfail(v->err, v->errlen,
                   "the server answered for reference key of %zu bytes, not "
                   "the requested key",
                   r->key.len);
    if (e->key.len == 0)
      return vfail(v->err, v->errlen, "reference to an empty key");
    vtx = r->tx;
    mdpb = r->metadata;
    rv = immu__malloc(IMMU_ENC_REF_VALUE_LEN(e->key.len));
    if (rv == NULL)
      return IMMU_ENOMEM;
    immu_enc_ref_value(e->key.data, e->key.len, r->attx, rv,
                       IMMU_ENC_REF_VALUE_LEN(e->key.len), &rvl);
    immu_sha256(rv, rvl, &hval);
    immu__free(rv);
  } else {
    immu_buf parts[2] = {{&plain, 1}, {e->value.data, e->value.len}};
    if (!bytes_eq(e->key.data, e->key.len, key, klen))
      return vfail(v->err, v->errlen,
                   "the server answered for another key than the requested "
                   "one");
    vtx = e->tx;
    mdpb = e->metadata;
    immu_sha256v(parts, 2, &hval);
  }
  if (at_tx > 0 && vtx != at_tx)
    return vfail(v->err, v->errlen,
                 "asked for the entry written in tx %" PRIu64
                 ", the server sent one of tx %" PRIu64,
                 at_tx, vtx);
  md_from_pb(mdpb, &md, mdb, &mdlen);
  if (md.deleted)
    return vfail(v->err, v->errlen,
                 "the server returned a deleted entry as the key's value");

  if ((rc = immu__cli_tx_from_pb(m->verifiabletx->tx, &tx, v->err,
                                 v->errlen)) != 0)
    return rc;
  if (tx.header.id != vtx) {
    rc = vfail(v->err, v->errlen,
               "the entry claims tx %" PRIu64 " but the proof is for tx "
               "%" PRIu64,
               vtx, tx.header.id);
    goto out;
  }
  skl = IMMU_ENC_KEY_LEN(klen);
  skey = immu__malloc(skl);
  if (skey == NULL) {
    rc = IMMU_ENOMEM;
    goto out;
  }
  immu_enc_key(key, klen, skey, skl, &skl);
  if (immu_entry_digest(tx.header.version, skey, skl, mdb, mdlen, &hval,
                        &digest) != 0) {
    rc = vfail(v->err, v->errlen,
               "entry metadata or key length not allowed with header "
               "version %u",
               (unsigned)tx.header.version);
    goto out;
  }
  if (ip->leaf < 0 || ip->width < 1 ||
      (uint32_t)ip->width != tx.header.nentries ||
      ip->n_terms > IMMU_PROOF_MAX_TERMS) {
    rc = vfail(v->err, v->errlen,
               "malformed inclusion proof (leaf %d, width %d, %zu terms) for "
               "a tx of %u entries",
               (int)ip->leaf, (int)ip->width, ip->n_terms,
               (unsigned)tx.header.nentries);
    goto out;
  }
  for (size_t i = 0; i < ip->n_terms; i++)
    if (digest_from(&ip->terms[i], &terms[i]) != 0) {
      rc = vfail(v->err, v->errlen, "inclusion proof term %zu not 32 bytes",
                 i);
      goto out;
    }
  if (immu_htree_verify(terms, ip->n_terms, (uint64_t)ip->leaf,
                        (uint64_t)ip->width, &digest, &tx.header.eh) != 0) {
    rc = vfail(v->err, v->errlen,
               "the entry of the requested key is not proven in tx %" PRIu64
               " (inclusion proof against Eh fails)",
               vtx);
    goto out;
  }
  if ((rc = verify_link(m->verifiabletx, v, tx.header.id, &tx.alh, 0,
                        newst)) != 0)
    goto out;
  if (out != NULL) {
    rc = immu__cli_entry_from_pb(e, out);
    if (rc == 0) {
      out->md = md;
      if (out->has_referenced_by) {
        /* The proven metadata is the reference's; the value's own is
         * proven by the second step. */
        out->referenced_by.md = md;
        out->md = (immu_client_kv_md){0};
      }
    }
  }
out:
  immu__free(skey);
  immu_client_tx_clear(&tx);
  return rc;
}

int immu__cli_check_ref_target(const immu_client_entry *ref,
                               const immu_client_entry *target, char *err,
                               size_t errlen) {
  if (!ref->has_referenced_by)
    return vfail(err, errlen, "not a reference");
  if (target->has_referenced_by)
    return vfail(err, errlen,
                 "the referenced key resolves to another reference");
  if (!bytes_eq(ref->key, ref->key_len, target->key, target->key_len))
    return vfail(err, errlen,
                 "the referenced entry proven is for another key");
  if (ref->tx != target->tx)
    return vfail(err, errlen,
                 "the reference resolved to a value of tx %" PRIu64
                 " but the referenced key's proven entry is of tx %" PRIu64,
                 ref->tx, target->tx);
  if (ref->referenced_by.at_tx > 0 && ref->tx != ref->referenced_by.at_tx)
    return vfail(err, errlen,
                 "the reference is bound to tx %" PRIu64
                 " but resolved to a value of tx %" PRIu64,
                 ref->referenced_by.at_tx, ref->tx);
  if (!bytes_eq(ref->value, ref->value_len, target->value, target->value_len))
    return vfail(err, errlen,
                 "the value returned through the reference differs from the "
                 "proven value of the referenced key");
  return 0;
}

int immu__cli_verified_get_flow(const immu__cli_vctx *v,
                                const immu_db_key_req *req,
                                immu__cli_fetch_entry_fn fetch, void *arg,
                                immu__cli_state *newst,
                                immu_client_entry *out) {
  Immudb__Schema__VerifiableEntry *m = NULL;
  immu__cli_state st1, st2;
  immu_client_entry first, target;
  immu__cli_vctx v2;
  immu_db_key_req r2;
  uint64_t since = v->trusted != NULL ? v->trusted->tx_id : 0;
  int rc;

  memset(out, 0, sizeof *out);
  memset(&target, 0, sizeof target);
  if ((rc = fetch(arg, req, since, &m, v->err, v->errlen)) != 0)
    return rc;
  rc = immu__cli_verify_get(m, v, req->key, req->key_len, req->at_tx, &st1,
                            &first);
  PB_FREE(m);
  if (rc != 0)
    return rc;
  if (!first.has_referenced_by) {
    *out = first;
    *newst = st1;
    return 0;
  }
  /* A reference: prove the referenced value too (second VerifiableGet of
   * the referenced key at the value's tx, from the state just proven). */
  if (first.tx == 0) {
    immu_client_entry_clear(&first);
    return vfail(v->err, v->errlen, "reference resolved to tx 0");
  }
  memset(&r2, 0, sizeof r2);
  r2.key = first.key;
  r2.key_len = first.key_len;
  r2.at_tx = first.tx;
  v2 = *v;
  v2.trusted = &st1;
  if ((rc = fetch(arg, &r2, st1.tx_id, &m, v->err, v->errlen)) != 0)
    goto out;
  rc = immu__cli_verify_get(m, &v2, r2.key, r2.key_len, r2.at_tx, &st2,
                            &target);
  PB_FREE(m);
  if (rc != 0)
    goto out;
  if ((rc = immu__cli_check_ref_target(&first, &target, v->err, v->errlen)) !=
      0)
    goto out;
  first.md = target.md;
  *out = first;
  memset(&first, 0, sizeof first);
  *newst = st2;
out:
  immu_client_entry_clear(&first);
  immu_client_entry_clear(&target);
  return rc;
}

int immu__cli_verify_state_reply(const Immudb__Schema__ImmutableState *m,
                                 const char *db, const immu_verifier *v,
                                 immu__cli_state *out, char *err,
                                 size_t errlen) {
  memset(out, 0, sizeof *out);
  if (m == NULL)
    return vfail(err, errlen, "missing state");
  if (m->db == NULL || strcmp(m->db, db) != 0)
    return vfail(err, errlen,
                 "the server reports the state of database '%s', not '%s'",
                 m->db ? m->db : "", db);
  if (m->txid == 0) {
    /* An empty database: nothing to trust yet, but its state is still
     * {db, 0, H("")} and, with a key configured, must be signed. */
    out->alh = immu_empty_digest;
    if (m->txhash.len != 0 &&
        (digest_from(&m->txhash, &out->alh) != 0 ||
         !immu_digest_eq(&out->alh, &immu_empty_digest)))
      return vfail(err, errlen,
                   "the state of an empty database must have hash H(\"\")");
  } else if (digest_from(&m->txhash, &out->alh) != 0) {
    return vfail(err, errlen, "state txHash must be 32 bytes (got %zu)",
                 m->txhash.len);
  }
  snprintf(out->db, sizeof out->db, "%s", db);
  out->tx_id = m->txid;
  if (m->signature != NULL && m->signature->signature.len > 0 &&
      m->signature->signature.len <= IMMU_SIG_MAX) {
    memcpy(out->sig, m->signature->signature.data,
           m->signature->signature.len);
    out->sig_len = m->signature->signature.len;
  }
  if (v != NULL) {
    if (out->sig_len == 0)
      return vfail(err, errlen,
                   "the server's state carries no signature but a signing "
                   "key is configured");
    int rc = immu_verifier_verify_state(v, db, strlen(db), out->tx_id,
                                        &out->alh, out->sig, out->sig_len);
    if (rc == IMMU_ENOMEM)
      return rc;
    if (rc != 0)
      return vfail(err, errlen,
                   "the signature of the server's state {db '%s', tx %" PRIu64
                   "} does not verify with the configured key",
                   db, out->tx_id);
  }
  return 0;
}

/* ------------------------------------------------------------------ */
/* 4. The handle                                                       */
/* ------------------------------------------------------------------ */

struct immu_client {
  /* Immutable after immu_client_new. */
  char *host;
  int port;
  char *ca_file, *cert_file, *key_file, *server_name;
  int tls, insecure_skip_verify, connect_timeout_ms;
  size_t max_recv_msg_size;
  int64_t call_timeout_ms;
  int keepalive_ms;
  char *state_dir;
  char opt_db[IMMU_DB_NAME_MAX + 1]; /* options.database, "" if not given */
  immu_verifier *verifier; /* NULL: no signature checks */
  int has_key;
  immu_digest key_hash; /* SHA-256 of the DER SubjectPublicKeyInfo */

  /* The connection: calls hold the read lock, reconnecting the write one. */
  pthread_rwlock_t conn_lock;
  immu__grpc_client *conn;

  /* Guards the fields below. */
  pthread_mutex_t mu;
  char *token;   /* Login / UseDatabase token, or NULL */
  char *session; /* session id, or NULL */
  char db[IMMU_DB_NAME_MAX + 1];
  char uuid[129]; /* pinned immudb-uuid ("" = not seen yet) */
  immu__cli_store *store; /* opened once the identity is known */

  /* Background KeepAlive. */
  pthread_mutex_t ka_mu;
  pthread_cond_t ka_cond;
  pthread_t ka_thread;
  int ka_running, ka_quit;
};

void immu_client_options_init(immu_client_options *o) {
  memset(o, 0, sizeof *o);
}

/* SHA-256 of the DER SubjectPublicKeyInfo of the PEM public key |path|. */
static int key_hash_of(const char *path, immu_digest *out) {
  BIO *b = BIO_new_file(path, "r");
  EVP_PKEY *k = NULL;
  unsigned char *der = NULL;
  int n, rc = IMMU_ECRYPTO;

  if (b == NULL)
    return IMMU_ECRYPTO;
  k = PEM_read_bio_PUBKEY(b, NULL, NULL, NULL);
  if (k != NULL && (n = i2d_PUBKEY(k, &der)) > 0) {
    immu_sha256(der, (size_t)n, out);
    rc = 0;
  }
  OPENSSL_free(der);
  EVP_PKEY_free(k);
  BIO_free(b);
  return rc;
}

static int connect_locked(immu_client *c) {
  immu__grpc_client_opts o;
  char err[512] = "";
  int rc;

  memset(&o, 0, sizeof o);
  o.host = c->host;
  o.port = c->port;
  o.tls = c->tls;
  o.ca_file = c->ca_file;
  o.cert_file = c->cert_file;
  o.key_file = c->key_file;
  o.server_name = c->server_name;
  o.insecure_skip_verify = c->insecure_skip_verify;
  o.max_recv_msg_size = c->max_recv_msg_size;
  o.connect_timeout_ms = c->connect_timeout_ms;
  o.default_timeout_ms = c->call_timeout_ms;
  rc = immu__grpc_client_connect(&o, &c->conn, err, sizeof err);
  if (rc != 0) {
    c->conn = NULL;
    return fail(rc, "cannot connect to %s:%d: %s", c->host, c->port,
                err[0] ? err : immu_strerror(rc));
  }
  return 0;
}

/* Takes the connection for one call (read lock held until conn_release),
 * reconnecting first if the previous connection failed. */
static int conn_acquire(immu_client *c, immu__grpc_client **out) {
  for (int attempt = 0;; attempt++) {
    pthread_rwlock_rdlock(&c->conn_lock);
    if (c->conn != NULL && immu__grpc_client_usable(c->conn)) {
      *out = c->conn;
      return 0;
    }
    pthread_rwlock_unlock(&c->conn_lock);
    if (attempt > 0)
      return fail(IMMU_ECLOSED, "connection to %s:%d closed", c->host,
                  c->port);
    pthread_rwlock_wrlock(&c->conn_lock);
    if (c->conn == NULL || !immu__grpc_client_usable(c->conn)) {
      int rc;
      immu__grpc_client_free(c->conn);
      c->conn = NULL;
      if ((rc = connect_locked(c)) != 0) {
        pthread_rwlock_unlock(&c->conn_lock);
        return rc;
      }
    }
    pthread_rwlock_unlock(&c->conn_lock);
  }
}

static void conn_release(immu_client *c) {
  pthread_rwlock_unlock(&c->conn_lock);
}

/* Compares a response's immudb-uuid with the pinned one; pins the first
 * one seen (against the identity file of the address). */
static int check_uuid(immu_client *c, const char *uuid) {
  char err[768] = "";
  int rc = 0;

  if (uuid == NULL || uuid[0] == '\0')
    return 0;
  if (strlen(uuid) >= sizeof c->uuid)
    return fail(IMMU_EPROTO, "the server sent an immudb-uuid of %zu bytes",
                strlen(uuid));
  pthread_mutex_lock(&c->mu);
  if (c->uuid[0] == '\0') {
    rc = immu__cli_identity_pin(c->state_dir, c->host, c->port, uuid,
                                c->has_key ? &c->key_hash : NULL, err,
                                sizeof err);
    if (rc == 0)
      snprintf(c->uuid, sizeof c->uuid, "%s", uuid);
  } else if (strcmp(c->uuid, uuid) != 0) {
    rc = IMMU_EVERIFY;
    snprintf(err, sizeof err,
             "server identity changed: %s:%d answered with immudb-uuid '%s' "
             "earlier and now with '%s' (CVE-2022-39199)",
             c->host, c->port, c->uuid, uuid);
  }
  pthread_mutex_unlock(&c->mu);
  if (rc != 0)
    return fail(rc, "%s", err[0] ? err : immu_strerror(rc));
  return 0;
}

static int map_status(int code, const char *msg) {
  if (msg == NULL)
    msg = "";
  switch (code) {
  case IMMU__GRPC_NOT_FOUND:
    return IMMU_ENOTFOUND;
  case IMMU__GRPC_ALREADY_EXISTS:
    return IMMU_EEXIST;
  case IMMU__GRPC_INVALID_ARGUMENT:
    return IMMU_EINVAL;
  case IMMU__GRPC_OUT_OF_RANGE:
    return IMMU_ERANGE;
  case IMMU__GRPC_PERMISSION_DENIED:
    return IMMU_EPERM;
  case IMMU__GRPC_UNAUTHENTICATED:
    return IMMU_EAUTH;
  case IMMU__GRPC_DEADLINE_EXCEEDED:
    return IMMU_ETIMEOUT;
  case IMMU__GRPC_UNAVAILABLE:
    return IMMU_ECLOSED;
  case IMMU__GRPC_RESOURCE_EXHAUSTED:
    return IMMU_ETOOLARGE;
  case IMMU__GRPC_UNIMPLEMENTED:
    return IMMU_EUNSUPPORTED;
  case IMMU__GRPC_FAILED_PRECONDITION:
  case IMMU__GRPC_ABORTED:
    return IMMU_ECONFLICT;
  case IMMU__GRPC_DATA_LOSS:
    return IMMU_ECORRUPT;
  case IMMU__GRPC_UNKNOWN:
    if (strstr(msg, "not found") != NULL)
      return IMMU_ENOTFOUND;
    if (strstr(msg, "already exist") != NULL)
      return IMMU_EEXIST;
    return IMMU_EPROTO;
  default:
    return IMMU_EPROTO;
  }
}

/* Request metadata of one call: the session id or the token. */
typedef struct call_md {
  immu__grpc_md md;
  char *val;
  size_t n;
} call_md;

static int md_snapshot(immu_client *c, call_md *m) {
  memset(m, 0, sizeof *m);
  pthread_mutex_lock(&c->mu);
  if (c->session != NULL) {
    m->val = dup_str(c->session);
    m->md.key = "sessionid";
  } else if (c->token != NULL) {
    size_t n = strlen(c->token);
    m->val = immu__malloc(n + 8);
    if (m->val != NULL) {
      memcpy(m->val, "Bearer ", 7);
      memcpy(m->val + 7, c->token, n + 1);
    }
    m->md.key = "authorization";
  } else {
    pthread_mutex_unlock(&c->mu);
    return 0;
  }
  pthread_mutex_unlock(&c->mu);
  if (m->val == NULL)
    return IMMU_ENOMEM;
  m->md.value = m->val;
  m->n = 1;
  return 0;
}

/* One gRPC call. |resp| non-NULL: exactly one reply message (unary when
 * nreqs == 1, else client streaming); otherwise every reply message goes
 * to |on_msg|. Checks the transport result, the gRPC status and the
 * immudb-uuid header. */
static int do_call(immu_client *c, const char *method,
                   const immu__grpc_msg *reqs, size_t nreqs,
                   immu__grpc_on_msg on_msg, void *arg, uint8_t **resp,
                   size_t *resp_len, int64_t timeout_ms) {
  char path[96];
  call_md md;
  immu__grpc_call_opts co;
  immu__grpc_result res;
  immu__grpc_client *conn = NULL;
  const char *uuid;
  int rc, irc;

  if (resp != NULL) {
    *resp = NULL;
    *resp_len = 0;
  }
  snprintf(path, sizeof path, SVC "%s", method);
  if ((rc = md_snapshot(c, &md)) != 0)
    return fail(rc, "%s: out of memory", method);
  memset(&co, 0, sizeof co);
  co.md = md.n ? &md.md : NULL;
  co.nmd = md.n;
  co.timeout_ms = timeout_ms; /* 0: the handle's default */
  immu__grpc_result_init(&res);
  if ((rc = conn_acquire(c, &conn)) != 0) {
    immu__free(md.val);
    return rc;
  }
  if (resp != NULL && nreqs == 1)
    rc = immu__grpc_client_unary(conn, path, &co, reqs[0].ptr, reqs[0].len,
                                 resp, resp_len, &res);
  else if (resp != NULL)
    rc = immu__grpc_client_client_stream(conn, path, &co, reqs, nreqs, resp,
                                         resp_len, &res);
  else
    rc = immu__grpc_client_call(conn, path, &co, reqs, nreqs, on_msg, arg,
                                &res);
  conn_release(c);
  immu__free(md.val);

  tl_grpc = res.status;
  uuid = immu__grpc_result_header(&res, "immudb-uuid");
  if ((irc = check_uuid(c, uuid)) != 0) {
    rc = irc; /* message already set */
  } else if (rc != 0) {
    rc = fail(rc, "%s: %s (gRPC %s: %s)", method, immu_strerror(rc),
              immu__grpc_code_name(res.status),
              res.message ? res.message : "");
  } else if (res.status != IMMU__GRPC_OK) {
    rc = fail(map_status(res.status, res.message),
              "%s: server error %s: %s", method,
              immu__grpc_code_name(res.status),
              res.message ? res.message : "");
  }
  immu__grpc_result_free(&res);
  if (rc != 0 && resp != NULL) {
    immu__free(*resp);
    *resp = NULL;
    *resp_len = 0;
  }
  return rc;
}

/* Unary call with protobuf messages and a deadline (0 = the handle's
 * default). |rd| NULL: the reply is dropped (google.protobuf.Empty). Caller
 * frees *out with PB_FREE. */
static int rpc_t(immu_client *c, const char *method,
                 const ProtobufCMessage *req,
                 const ProtobufCMessageDescriptor *rd, ProtobufCMessage **out,
                 int64_t timeout_ms) {
  size_t n = protobuf_c_message_get_packed_size(req);
  uint8_t *buf = immu__malloc(n ? n : 1), *resp = NULL;
  size_t resp_len = 0;
  immu__grpc_msg msg;
  int rc;

  if (out != NULL)
    *out = NULL;
  if (buf == NULL)
    return fail(IMMU_ENOMEM, "%s: out of memory", method);
  protobuf_c_message_pack(req, buf);
  msg.ptr = buf;
  msg.len = n;
  rc = do_call(c, method, &msg, 1, NULL, NULL, &resp, &resp_len, timeout_ms);
  immu__free(buf);
  if (rc != 0)
    return rc;
  if (rd != NULL && out != NULL) {
    *out = protobuf_c_message_unpack(rd, &immu__cli_pb_allocator, resp_len, resp);
    if (*out == NULL)
      rc = fail(IMMU_EPROTO, "%s: cannot decode the %s reply", method,
                rd->name);
  }
  immu__free(resp);
  return rc;
}

static int rpc(immu_client *c, const char *method, const ProtobufCMessage *req,
               const ProtobufCMessageDescriptor *rd, ProtobufCMessage **out) {
  return rpc_t(c, method, req, rd, out, 0);
}

static const Google__Protobuf__Empty empty_req = GOOGLE__PROTOBUF__EMPTY__INIT;

#define EMPTY_REQ (&empty_req.base)

/* The server identity and the state store, established once per handle:
 * the immudb-uuid (a Health call if none was seen yet) and the signing key
 * are pinned for the address, then the store of that identity is opened. */
static int ensure_store(immu_client *c) {
  char uuid[129], sid[300], err[768] = "";
  int rc;

  pthread_mutex_lock(&c->mu);
  if (c->store != NULL) {
    pthread_mutex_unlock(&c->mu);
    return 0;
  }
  snprintf(uuid, sizeof uuid, "%s", c->uuid);
  pthread_mutex_unlock(&c->mu);
  if (uuid[0] == '\0') {
    ProtobufCMessage *h = NULL;
    if ((rc = rpc(c, "Health", EMPTY_REQ,
                  &immudb__schema__health_response__descriptor, &h)) != 0)
      return rc;
    protobuf_c_message_free_unpacked(h, &immu__cli_pb_allocator);
    pthread_mutex_lock(&c->mu);
    snprintf(uuid, sizeof uuid, "%s", c->uuid);
    pthread_mutex_unlock(&c->mu);
  }
  if (uuid[0] == '\0' && !c->has_key)
    return fail(IMMU_EVERIFY,
                "%s:%d sent no immudb-uuid header: the server cannot be "
                "identified to keep its trusted state (configure its "
                "signing key to identify it by the key)",
                c->host, c->port);
  if ((rc = immu__cli_identity_pin(c->state_dir, c->host, c->port,
                                   uuid[0] ? uuid : NULL,
                                   c->has_key ? &c->key_hash : NULL, err,
                                   sizeof err)) != 0)
    return fail(rc, "%s", err);
  if ((rc = immu__cli_server_id(uuid, c->has_key ? &c->key_hash : NULL, sid,
                                sizeof sid)) != 0)
    return fail(rc, "cannot derive a state name for the server");
  pthread_mutex_lock(&c->mu);
  if (c->store == NULL)
    rc = immu__cli_store_open(c->state_dir, sid, &c->store, err, sizeof err);
  pthread_mutex_unlock(&c->mu);
  if (rc != 0)
    return fail(rc, "%s", err[0] ? err : immu_strerror(rc));
  return 0;
}

static void current_db(immu_client *c, char db[IMMU_DB_NAME_MAX + 1]) {
  pthread_mutex_lock(&c->mu);
  memcpy(db, c->db, IMMU_DB_NAME_MAX + 1);
  pthread_mutex_unlock(&c->mu);
}

/* Starts a verified call: locks the store and loads the trusted state of
 * the current database, falling back to CurrentState on first use (TOFU,
 * signature checked when a key is configured). On success the store is
 * locked: finish with verified_end. */
static int verified_begin(immu_client *c, char db[IMMU_DB_NAME_MAX + 1],
                          immu__cli_state *trusted) {
  char err[768] = "";
  int rc;

  if ((rc = ensure_store(c)) != 0)
    return rc;
  current_db(c, db);
  if ((rc = immu__cli_store_lock(c->store, err, sizeof err)) != 0)
    return fail(rc, "%s", err);
  rc = immu__cli_store_get(c->store, db, trusted, err, sizeof err);
  if (rc == IMMU_ENOTFOUND) {
    Immudb__Schema__ImmutableState *st = NULL;
    rc = rpc(c, "CurrentState", EMPTY_REQ,
             &immudb__schema__immutable_state__descriptor,
             (ProtobufCMessage **)&st);
    if (rc == 0) {
      rc = immu__cli_verify_state_reply(st, db, c->verifier, trusted, err,
                                        sizeof err);
      if (rc != 0)
        fail(rc, "first state of database '%s' rejected: %s", db, err);
    }
    PB_FREE(st);
  } else if (rc != 0) {
    fail(rc, "%s", err[0] ? err : immu_strerror(rc));
  }
  if (rc != 0)
    immu__cli_store_unlock(c->store);
  return rc;
}

/* Ends a verified call; stores |newst| when not NULL. */
static int verified_end(immu_client *c, const immu__cli_state *newst) {
  char err[768] = "";
  int rc = 0;
  if (newst != NULL && newst->tx_id > 0)
    rc = immu__cli_store_put(c->store, newst, err, sizeof err);
  immu__cli_store_unlock(c->store);
  if (rc != 0)
    return fail(rc, "cannot store the new trusted state: %s",
                err[0] ? err : immu_strerror(rc));
  return 0;
}

/* ------------------------------------------------------------------ */
/* Keepalive thread                                                    */
/* ------------------------------------------------------------------ */

static void *ka_main(void *arg) {
  immu_client *c = arg;
  struct timespec ts;

  pthread_mutex_lock(&c->ka_mu);
  while (!c->ka_quit) {
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += c->keepalive_ms / 1000;
    ts.tv_nsec += (long)(c->keepalive_ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
      ts.tv_sec++;
      ts.tv_nsec -= 1000000000L;
    }
    while (!c->ka_quit &&
           pthread_cond_timedwait(&c->ka_cond, &c->ka_mu, &ts) == 0) {
    }
    if (c->ka_quit)
      break;
    pthread_mutex_unlock(&c->ka_mu);
    (void)immu_client_keepalive(c);
    pthread_mutex_lock(&c->ka_mu);
  }
  pthread_mutex_unlock(&c->ka_mu);
  return NULL;
}

static void ka_start(immu_client *c) {
  if (c->keepalive_ms <= 0)
    return;
  pthread_mutex_lock(&c->ka_mu);
  if (!c->ka_running) {
    c->ka_quit = 0;
    if (pthread_create(&c->ka_thread, NULL, ka_main, c) == 0)
      c->ka_running = 1;
  }
  pthread_mutex_unlock(&c->ka_mu);
}

static void ka_stop(immu_client *c) {
  pthread_t t;
  pthread_mutex_lock(&c->ka_mu);
  if (!c->ka_running) {
    pthread_mutex_unlock(&c->ka_mu);
    return;
  }
  c->ka_quit = 1;
  c->ka_running = 0;
  t = c->ka_thread;
  pthread_cond_broadcast(&c->ka_cond);
  pthread_mutex_unlock(&c->ka_mu);
  if (!pthread_equal(t, pthread_self()))
    pthread_join(t, NULL);
  else
    pthread_detach(t);
}

/* ------------------------------------------------------------------ */
/* 5. Public calls                                                     */
/* ------------------------------------------------------------------ */

static int valid_db_name(const char *name) {
  return name != NULL && name[0] != '\0' && strlen(name) <= IMMU_DB_NAME_MAX;
}

int immu_client_new(const immu_client_options *opt, immu_client **out) {
  immu_client *c;
  pthread_condattr_t ca;
  int rc;

  clear_err();
  if (out == NULL)
    return fail(IMMU_EINVAL, "immu_client_new: NULL out");
  *out = NULL;
  if (opt == NULL)
    return fail(IMMU_EINVAL, "immu_client_new: NULL options");
  if (opt->port < 0 || opt->port > 65535)
    return fail(IMMU_EINVAL, "invalid port %d", opt->port);
  if (opt->cert_file != NULL && opt->key_file == NULL)
    return fail(IMMU_EINVAL, "a client certificate needs its key_file");
  if (opt->database != NULL && !valid_db_name(opt->database))
    return fail(IMMU_EINVAL, "invalid database name");
  c = immu__calloc(1, sizeof *c);
  if (c == NULL)
    return fail(IMMU_ENOMEM, "out of memory");
  c->host = dup_str(opt->address ? opt->address : "127.0.0.1");
  c->port = opt->port ? opt->port : DEFAULT_PORT;
  c->tls = opt->tls;
  c->ca_file = opt->ca_file ? dup_str(opt->ca_file) : NULL;
  c->cert_file = opt->cert_file ? dup_str(opt->cert_file) : NULL;
  c->key_file = opt->key_file ? dup_str(opt->key_file) : NULL;
  c->server_name = opt->server_name ? dup_str(opt->server_name) : NULL;
  c->state_dir = opt->state_dir ? dup_str(opt->state_dir) : NULL;
  c->insecure_skip_verify = opt->insecure_skip_verify;
  c->connect_timeout_ms = opt->connect_timeout_ms;
  c->call_timeout_ms = opt->call_timeout_ms;
  c->max_recv_msg_size = opt->max_recv_msg_size;
  c->keepalive_ms =
      opt->keepalive_ms == 0 ? DEFAULT_KEEPALIVE_MS : opt->keepalive_ms;
  snprintf(c->db, sizeof c->db, "%s",
           opt->database ? opt->database : DEFAULT_DB);
  snprintf(c->opt_db, sizeof c->opt_db, "%s",
           opt->database ? opt->database : "");
  pthread_rwlock_init(&c->conn_lock, NULL);
  pthread_mutex_init(&c->mu, NULL);
  pthread_mutex_init(&c->ka_mu, NULL);
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&c->ka_cond, &ca);
  pthread_condattr_destroy(&ca);
  if (c->host == NULL || (opt->ca_file && !c->ca_file) ||
      (opt->cert_file && !c->cert_file) || (opt->key_file && !c->key_file) ||
      (opt->server_name && !c->server_name) ||
      (opt->state_dir && !c->state_dir)) {
    immu_client_free(c);
    return fail(IMMU_ENOMEM, "out of memory");
  }
  if (opt->server_signing_pubkey != NULL) {
    rc = immu_verifier_from_file(opt->server_signing_pubkey, &c->verifier);
    if (rc == 0)
      rc = key_hash_of(opt->server_signing_pubkey, &c->key_hash);
    if (rc != 0) {
      immu_client_free(c);
      return fail(rc == IMMU_ENOMEM ? rc : IMMU_ECRYPTO,
                  "cannot load the server signing public key %s (a PEM "
                  "\"PUBLIC KEY\" of a P-256 key)",
                  opt->server_signing_pubkey);
    }
    c->has_key = 1;
  }
  if ((rc = connect_locked(c)) != 0) {
    immu_client_free(c);
    return rc;
  }
  *out = c;
  return 0;
}

void immu_client_free(immu_client *c) {
  if (c == NULL)
    return;
  ka_stop(c);
  immu__grpc_client_free(c->conn);
  immu__cli_store_free(c->store);
  immu_verifier_free(c->verifier);
  pthread_rwlock_destroy(&c->conn_lock);
  pthread_mutex_destroy(&c->mu);
  pthread_mutex_destroy(&c->ka_mu);
  pthread_cond_destroy(&c->ka_cond);
  immu__free(c->host);
  immu__free(c->ca_file);
  immu__free(c->cert_file);
  immu__free(c->key_file);
  immu__free(c->server_name);
  immu__free(c->state_dir);
  immu__free(c->token);
  immu__free(c->session);
  immu__free(c);
}

void immu_client_current_database(immu_client *c, char *buf, size_t cap) {
  if (buf == NULL || cap == 0)
    return;
  pthread_mutex_lock(&c->mu);
  snprintf(buf, cap, "%s", c->db);
  pthread_mutex_unlock(&c->mu);
}

/* --- auth ---------------------------------------------------------- */

int immu_client_login(immu_client *c, const char *user, const char *password) {
  Immudb__Schema__LoginRequest req = IMMUDB__SCHEMA__LOGIN_REQUEST__INIT;
  Immudb__Schema__LoginResponse *r = NULL;
  char *tok;
  int rc;

  clear_err();
  if (user == NULL || password == NULL)
    return fail(IMMU_EINVAL, "login: user and password are required");
  req.user = bin_str(user);
  req.password = bin_str(password);
  if ((rc = rpc(c, "Login", &req.base,
                &immudb__schema__login_response__descriptor,
                (ProtobufCMessage **)&r)) != 0)
    return rc;
  if (r->token == NULL || r->token[0] == '\0') {
    PB_FREE(r);
    return fail(IMMU_EPROTO, "Login: the server returned no token");
  }
  tok = dup_str(r->token);
  PB_FREE(r);
  if (tok == NULL)
    return fail(IMMU_ENOMEM, "out of memory");
  pthread_mutex_lock(&c->mu);
  immu__free(c->token);
  c->token = tok;
  snprintf(c->db, sizeof c->db, "%s", DEFAULT_DB);
  pthread_mutex_unlock(&c->mu);
  if (c->opt_db[0] != '\0')
    return immu_client_use_database(c, c->opt_db);
  return 0;
}

int immu_client_logout(immu_client *c) {
  int rc;
  clear_err();
  rc = rpc(c, "Logout", EMPTY_REQ, NULL, NULL);
  pthread_mutex_lock(&c->mu);
  immu__free(c->token);
  c->token = NULL;
  pthread_mutex_unlock(&c->mu);
  return rc;
}

int immu_client_token(immu_client *c, char *buf, size_t cap) {
  int rc = 0;
  clear_err();
  if (c == NULL || buf == NULL || cap == 0)
    return fail(IMMU_EINVAL, "token: invalid argument");
  pthread_mutex_lock(&c->mu);
  if (c->token == NULL)
    rc = IMMU_ENOTFOUND;
  else if (strlen(c->token) >= cap)
    rc = IMMU_ETOOLARGE;
  else
    memcpy(buf, c->token, strlen(c->token) + 1);
  pthread_mutex_unlock(&c->mu);
  if (rc == IMMU_ENOTFOUND)
    return fail(rc, "token: the handle has no login token");
  if (rc != 0)
    return fail(rc, "token: buffer too small");
  return 0;
}

int immu_client_set_token(immu_client *c, const char *token,
                          const char *database) {
  char *tok;
  clear_err();
  if (c == NULL || token == NULL || token[0] == '\0')
    return fail(IMMU_EINVAL, "set_token: empty token");
  for (const char *p = token; *p; p++)
    if ((unsigned char)*p < 0x20 || (unsigned char)*p > 0x7e)
      return fail(IMMU_EINVAL, "set_token: the token has non-printable "
                               "bytes");
  if (database != NULL && !valid_db_name(database))
    return fail(IMMU_EINVAL, "set_token: invalid database name");
  if ((tok = dup_str(token)) == NULL)
    return fail(IMMU_ENOMEM, "out of memory");
  pthread_mutex_lock(&c->mu);
  immu__free(c->token);
  c->token = tok;
  if (database != NULL)
    snprintf(c->db, sizeof c->db, "%s", database);
  pthread_mutex_unlock(&c->mu);
  return 0;
}

int immu_client_open_session(immu_client *c, const char *user,
                             const char *password, const char *database) {
  Immudb__Schema__OpenSessionRequest req =
      IMMUDB__SCHEMA__OPEN_SESSION_REQUEST__INIT;
  Immudb__Schema__OpenSessionResponse *r = NULL;
  char db[IMMU_DB_NAME_MAX + 1];
  char *sid;
  int rc;

  clear_err();
  if (user == NULL || password == NULL)
    return fail(IMMU_EINVAL, "open_session: user and password are required");
  if (database != NULL && !valid_db_name(database))
    return fail(IMMU_EINVAL, "open_session: invalid database name");
  pthread_mutex_lock(&c->mu);
  rc = c->session != NULL;
  pthread_mutex_unlock(&c->mu);
  if (rc)
    return fail(IMMU_EBUSY, "open_session: a session is already open");
  if (database != NULL)
    snprintf(db, sizeof db, "%s", database);
  else
    current_db(c, db);
  req.username = bin_str(user);
  req.password = bin_str(password);
  req.databasename = db;
  if ((rc = rpc(c, "OpenSession", &req.base,
                &immudb__schema__open_session_response__descriptor,
                (ProtobufCMessage **)&r)) != 0)
    return rc;
  if (r->sessionid == NULL || r->sessionid[0] == '\0') {
    PB_FREE(r);
    return fail(IMMU_EPROTO, "OpenSession: the server returned no id");
  }
  if (r->serveruuid != NULL && r->serveruuid[0] != '\0' &&
      (rc = check_uuid(c, r->serveruuid)) != 0) {
    PB_FREE(r);
    return rc;
  }
  sid = dup_str(r->sessionid);
  PB_FREE(r);
  if (sid == NULL)
    return fail(IMMU_ENOMEM, "out of memory");
  pthread_mutex_lock(&c->mu);
  immu__free(c->session);
  c->session = sid;
  snprintf(c->db, sizeof c->db, "%s", db);
  pthread_mutex_unlock(&c->mu);
  ka_start(c);
  return 0;
}

int immu_client_close_session(immu_client *c) {
  int rc, has;
  clear_err();
  pthread_mutex_lock(&c->mu);
  has = c->session != NULL;
  pthread_mutex_unlock(&c->mu);
  if (!has)
    return fail(IMMU_EINVAL, "close_session: no session is open");
  ka_stop(c);
  rc = rpc(c, "CloseSession", EMPTY_REQ, NULL, NULL);
  pthread_mutex_lock(&c->mu);
  immu__free(c->session);
  c->session = NULL;
  pthread_mutex_unlock(&c->mu);
  return rc;
}

int immu_client_keepalive(immu_client *c) {
  int has;
  clear_err();
  pthread_mutex_lock(&c->mu);
  has = c->session != NULL;
  pthread_mutex_unlock(&c->mu);
  if (!has)
    return fail(IMMU_EINVAL, "keepalive: no session is open");
  /* Bounded even without a default deadline, so that closing the session
   * never waits long for the background keepalive. */
  return rpc_t(c, "KeepAlive", EMPTY_REQ, NULL, NULL,
               c->call_timeout_ms > 0 ? 0 : KEEPALIVE_TIMEOUT_MS);
}

int immu_client_use_database(immu_client *c, const char *name) {
  Immudb__Schema__Database req = IMMUDB__SCHEMA__DATABASE__INIT;
  Immudb__Schema__UseDatabaseReply *r = NULL;
  char *tok = NULL;
  int rc;

  clear_err();
  if (!valid_db_name(name))
    return fail(IMMU_EINVAL, "use_database: invalid database name");
  req.databasename = cstr(name);
  if ((rc = rpc(c, "UseDatabase", &req.base,
                &immudb__schema__use_database_reply__descriptor,
                (ProtobufCMessage **)&r)) != 0)
    return rc;
  if (r->token != NULL && r->token[0] != '\0') {
    tok = dup_str(r->token);
    if (tok == NULL) {
      PB_FREE(r);
      return fail(IMMU_ENOMEM, "out of memory");
    }
  }
  PB_FREE(r);
  pthread_mutex_lock(&c->mu);
  if (tok != NULL) {
    immu__free(c->token);
    c->token = tok;
  }
  snprintf(c->db, sizeof c->db, "%s", name);
  pthread_mutex_unlock(&c->mu);
  return 0;
}

/* --- health, info, state ------------------------------------------- */

int immu_client_health(immu_client *c, int *status, char *version,
                       size_t cap) {
  Immudb__Schema__HealthResponse *r = NULL;
  int rc;
  clear_err();
  if ((rc = rpc(c, "Health", EMPTY_REQ,
                &immudb__schema__health_response__descriptor,
                (ProtobufCMessage **)&r)) != 0)
    return rc;
  if (status != NULL)
    *status = r->status ? 1 : 0;
  if (version != NULL && cap > 0)
    snprintf(version, cap, "%s", r->version ? r->version : "");
  PB_FREE(r);
  return 0;
}

int immu_client_server_info(immu_client *c, immu_client_info *out) {
  Immudb__Schema__ServerInfoRequest req =
      IMMUDB__SCHEMA__SERVER_INFO_REQUEST__INIT;
  Immudb__Schema__ServerInfoResponse *r = NULL;
  int rc;
  clear_err();
  memset(out, 0, sizeof *out);
  if ((rc = rpc(c, "ServerInfo", &req.base,
                &immudb__schema__server_info_response__descriptor,
                (ProtobufCMessage **)&r)) != 0)
    return rc;
  snprintf(out->version, sizeof out->version, "%s",
           r->version ? r->version : "");
  out->started_at = r->startedat;
  out->num_transactions = r->numtransactions;
  out->num_databases = r->numdatabases;
  out->databases_disk_size = r->databasesdisksize;
  PB_FREE(r);
  return 0;
}

static void state_out(const immu__cli_state *s, immu_client_state *out) {
  memset(out, 0, sizeof *out);
  memcpy(out->db, s->db, sizeof out->db);
  out->tx_id = s->tx_id;
  out->tx_hash = s->alh;
  memcpy(out->signature, s->sig, s->sig_len);
  out->signature_len = s->sig_len;
}

int immu_client_current_state(immu_client *c, immu_client_state *out) {
  Immudb__Schema__ImmutableState *st = NULL;
  char db[IMMU_DB_NAME_MAX + 1], err[768] = "";
  immu__cli_state s;
  int rc;

  clear_err();
  memset(out, 0, sizeof *out);
  current_db(c, db);
  if ((rc = rpc(c, "CurrentState", EMPTY_REQ,
                &immudb__schema__immutable_state__descriptor,
                (ProtobufCMessage **)&st)) != 0)
    return rc;
  rc = immu__cli_verify_state_reply(st, db, c->verifier, &s, err, sizeof err);
  PB_FREE(st);
  if (rc != 0)
    return fail(rc, "CurrentState: %s", err);
  state_out(&s, out);
  return 0;
}

int immu_client_trusted_state(immu_client *c, immu_client_state *out) {
  char db[IMMU_DB_NAME_MAX + 1], err[768] = "";
  immu__cli_state s;
  int rc;

  clear_err();
  memset(out, 0, sizeof *out);
  if ((rc = ensure_store(c)) != 0)
    return rc;
  current_db(c, db);
  if ((rc = immu__cli_store_lock(c->store, err, sizeof err)) != 0)
    return fail(rc, "%s", err);
  rc = immu__cli_store_get(c->store, db, &s, err, sizeof err);
  immu__cli_store_unlock(c->store);
  if (rc == IMMU_ENOTFOUND)
    return fail(rc, "no trusted state for database '%s' yet", db);
  if (rc != 0)
    return fail(rc, "%s", err[0] ? err : immu_strerror(rc));
  state_out(&s, out);
  return 0;
}

/* --- plain KV ------------------------------------------------------ */

/* TxHeader reply -> *hdr (may be NULL). */
static int header_reply(const char *method, Immudb__Schema__TxHeader *r,
                        immu_tx_header *hdr) {
  char err[256];
  immu_tx_header h;
  int rc = immu__cli_header_from_pb(r, &h, err, sizeof err);
  PB_FREE(r);
  if (rc != 0)
    return fail(IMMU_EPROTO, "%s: malformed header: %s", method, err);
  if (hdr != NULL)
    *hdr = h;
  return 0;
}

/* KeyValue messages for |kvs|, into |arr| / |ptrs| of |n| elements. */
static int build_kvs(const immu_db_kv *kvs, size_t n,
                     Immudb__Schema__KeyValue **arr,
                     Immudb__Schema__KeyValue ***ptrs) {
  *arr = immu__calloc(n ? n : 1, sizeof **arr);
  *ptrs = immu__calloc(n ? n : 1, sizeof **ptrs);
  if (*arr == NULL || *ptrs == NULL) {
    immu__free(*arr);
    immu__free(*ptrs);
    return IMMU_ENOMEM;
  }
  for (size_t i = 0; i < n; i++) {
    Immudb__Schema__KeyValue kv = IMMUDB__SCHEMA__KEY_VALUE__INIT;
    kv.key = bin(kvs[i].key, kvs[i].key_len);
    kv.value = bin(kvs[i].value, kvs[i].value_len);
    (*arr)[i] = kv;
    (*ptrs)[i] = &(*arr)[i];
  }
  return 0;
}

static int check_kvs(const immu_db_kv *kvs, size_t n) {
  if (kvs == NULL || n == 0)
    return fail(IMMU_EINVAL, "no key-value pairs given");
  for (size_t i = 0; i < n; i++)
    if (kvs[i].key == NULL || kvs[i].key_len == 0 ||
        (kvs[i].value == NULL && kvs[i].value_len > 0))
      return fail(IMMU_EINVAL, "key-value pair %zu: empty key or NULL value",
                  i);
  return 0;
}

int immu_client_set_all(immu_client *c, const immu_db_kv *kvs, size_t n,
                        int no_wait, immu_tx_header *hdr) {
  Immudb__Schema__SetRequest req = IMMUDB__SCHEMA__SET_REQUEST__INIT;
  Immudb__Schema__KeyValue *arr, **ptrs;
  Immudb__Schema__TxHeader *r = NULL;
  int rc;

  clear_err();
  if ((rc = check_kvs(kvs, n)) != 0)
    return rc;
  if (build_kvs(kvs, n, &arr, &ptrs) != 0)
    return fail(IMMU_ENOMEM, "out of memory");
  req.n_kvs = n;
  req.kvs = ptrs;
  req.nowait = no_wait ? 1 : 0;
  rc = rpc(c, "Set", &req.base, &immudb__schema__tx_header__descriptor,
           (ProtobufCMessage **)&r);
  immu__free(arr);
  immu__free(ptrs);
  if (rc != 0)
    return rc;
  return header_reply("Set", r, hdr);
}

int immu_client_set(immu_client *c, const uint8_t *key, size_t klen,
                    const uint8_t *value, size_t vlen, immu_tx_header *hdr) {
  immu_db_kv kv = {key, klen, value, vlen};
  return immu_client_set_all(c, &kv, 1, 0, hdr);
}

static void key_req_pb(const immu_db_key_req *r, Immudb__Schema__KeyRequest *m) {
  Immudb__Schema__KeyRequest k = IMMUDB__SCHEMA__KEY_REQUEST__INIT;
  k.key = bin(r->key, r->key_len);
  k.attx = r->at_tx;
  k.sincetx = r->since_tx;
  k.nowait = r->no_wait ? 1 : 0;
  k.atrevision = r->at_revision;
  *m = k;
}

int immu_client_get(immu_client *c, const immu_db_key_req *req,
                    immu_client_entry *out) {
  Immudb__Schema__KeyRequest m;
  Immudb__Schema__Entry *r = NULL;
  int rc;

  clear_err();
  memset(out, 0, sizeof *out);
  if (req == NULL || req->key == NULL || req->key_len == 0)
    return fail(IMMU_EINVAL, "get: empty key");
  key_req_pb(req, &m);
  if ((rc = rpc(c, "Get", &m.base, &immudb__schema__entry__descriptor,
                (ProtobufCMessage **)&r)) != 0)
    return rc;
  rc = immu__cli_entry_from_pb(r, out);
  PB_FREE(r);
  return rc ? fail(rc, "get: out of memory") : 0;
}

static ProtobufCBinaryData *bufs_pb(const immu_buf *keys, size_t n) {
  ProtobufCBinaryData *v = immu__calloc(n ? n : 1, sizeof *v);
  if (v != NULL)
    for (size_t i = 0; i < n; i++)
      v[i] = bin(keys[i].ptr, keys[i].len);
  return v;
}

int immu_client_get_all(immu_client *c, const immu_buf *keys, size_t n,
                        uint64_t since_tx, immu_client_entries *out) {
  Immudb__Schema__KeyListRequest req = IMMUDB__SCHEMA__KEY_LIST_REQUEST__INIT;
  Immudb__Schema__Entries *r = NULL;
  int rc;

  clear_err();
  memset(out, 0, sizeof *out);
  if (keys == NULL && n > 0)
    return fail(IMMU_EINVAL, "get_all: NULL keys");
  req.keys = bufs_pb(keys, n);
  if (req.keys == NULL)
    return fail(IMMU_ENOMEM, "out of memory");
  req.n_keys = n;
  req.sincetx = since_tx;
  rc = rpc(c, "GetAll", &req.base, &immudb__schema__entries__descriptor,
           (ProtobufCMessage **)&r);
  immu__free(req.keys);
  if (rc != 0)
    return rc;
  rc = entries_from_pb(r->entries, r->n_entries, out);
  PB_FREE(r);
  return rc ? fail(rc, "get_all: out of memory") : 0;
}

int immu_client_delete(immu_client *c, const immu_buf *keys, size_t n,
                       uint64_t since_tx, int no_wait, immu_tx_header *hdr) {
  Immudb__Schema__DeleteKeysRequest req =
      IMMUDB__SCHEMA__DELETE_KEYS_REQUEST__INIT;
  Immudb__Schema__TxHeader *r = NULL;
  int rc;

  clear_err();
  if (keys == NULL || n == 0)
    return fail(IMMU_EINVAL, "delete: no keys");
  req.keys = bufs_pb(keys, n);
  if (req.keys == NULL)
    return fail(IMMU_ENOMEM, "out of memory");
  req.n_keys = n;
  req.sincetx = since_tx;
  req.nowait = no_wait ? 1 : 0;
  rc = rpc(c, "Delete", &req.base, &immudb__schema__tx_header__descriptor,
           (ProtobufCMessage **)&r);
  immu__free(req.keys);
  if (rc != 0)
    return rc;
  return header_reply("Delete", r, hdr);
}

static void ref_req_pb(const immu_db_ref_req *r,
                       Immudb__Schema__ReferenceRequest *m) {
  Immudb__Schema__ReferenceRequest x = IMMUDB__SCHEMA__REFERENCE_REQUEST__INIT;
  x.key = bin(r->key, r->key_len);
  x.referencedkey = bin(r->referenced_key, r->referenced_key_len);
  x.attx = r->at_tx;
  x.boundref = r->bound_ref ? 1 : 0;
  x.nowait = r->no_wait ? 1 : 0;
  *m = x;
}

static void zadd_req_pb(const immu_db_zadd_req *r,
                        Immudb__Schema__ZAddRequest *m) {
  Immudb__Schema__ZAddRequest x = IMMUDB__SCHEMA__ZADD_REQUEST__INIT;
  x.set = bin(r->set, r->set_len);
  x.score = r->score;
  x.key = bin(r->key, r->key_len);
  x.attx = r->at_tx;
  x.boundref = r->bound_ref ? 1 : 0;
  x.nowait = r->no_wait ? 1 : 0;
  *m = x;
}

int immu_client_exec_all(immu_client *c, const immu_db_op *ops, size_t n,
                         int no_wait, immu_tx_header *hdr) {
  Immudb__Schema__ExecAllRequest req = IMMUDB__SCHEMA__EXEC_ALL_REQUEST__INIT;
  Immudb__Schema__Op *opv = NULL, **opp = NULL;
  Immudb__Schema__KeyValue *kvv = NULL;
  Immudb__Schema__ZAddRequest *zv = NULL;
  Immudb__Schema__ReferenceRequest *rv = NULL;
  Immudb__Schema__TxHeader *r = NULL;
  int rc;

  clear_err();
  if (ops == NULL || n == 0)
    return fail(IMMU_EINVAL, "exec_all: no operations");
  opv = immu__calloc(n, sizeof *opv);
  opp = immu__calloc(n, sizeof *opp);
  kvv = immu__calloc(n, sizeof *kvv);
  zv = immu__calloc(n, sizeof *zv);
  rv = immu__calloc(n, sizeof *rv);
  if (opv == NULL || opp == NULL || kvv == NULL || zv == NULL || rv == NULL) {
    rc = fail(IMMU_ENOMEM, "out of memory");
    goto out;
  }
  for (size_t i = 0; i < n; i++) {
    Immudb__Schema__Op op = IMMUDB__SCHEMA__OP__INIT;
    switch (ops[i].kind) {
    case IMMU_DB_OP_KV: {
      Immudb__Schema__KeyValue kv = IMMUDB__SCHEMA__KEY_VALUE__INIT;
      kv.key = bin(ops[i].u.kv.key, ops[i].u.kv.key_len);
      kv.value = bin(ops[i].u.kv.value, ops[i].u.kv.value_len);
      kvv[i] = kv;
      op.operation_case = IMMUDB__SCHEMA__OP__OPERATION_KV;
      op.kv = &kvv[i];
      break;
    }
    case IMMU_DB_OP_ZADD:
      zadd_req_pb(&ops[i].u.zadd, &zv[i]);
      op.operation_case = IMMUDB__SCHEMA__OP__OPERATION_Z_ADD;
      op.zadd = &zv[i];
      break;
    case IMMU_DB_OP_REF:
      ref_req_pb(&ops[i].u.ref, &rv[i]);
      op.operation_case = IMMUDB__SCHEMA__OP__OPERATION_REF;
      op.ref = &rv[i];
      break;
    default:
      rc = fail(IMMU_EINVAL, "exec_all: operation %zu has unknown kind %d", i,
                ops[i].kind);
      goto out;
    }
    opv[i] = op;
    opp[i] = &opv[i];
  }
  req.n_operations = n;
  req.operations = opp;
  req.nowait = no_wait ? 1 : 0;
  rc = rpc(c, "ExecAll", &req.base, &immudb__schema__tx_header__descriptor,
           (ProtobufCMessage **)&r);
  if (rc == 0)
    rc = header_reply("ExecAll", r, hdr);
out:
  immu__free(opv);
  immu__free(opp);
  immu__free(kvv);
  immu__free(zv);
  immu__free(rv);
  return rc;
}

int immu_client_scan(immu_client *c, const immu_db_scan_req *q,
                     immu_client_entries *out) {
  Immudb__Schema__ScanRequest req = IMMUDB__SCHEMA__SCAN_REQUEST__INIT;
  Immudb__Schema__Entries *r = NULL;
  int rc;

  clear_err();
  memset(out, 0, sizeof *out);
  if (q == NULL)
    return fail(IMMU_EINVAL, "scan: NULL request");
  req.seekkey = bin(q->seek_key, q->seek_key_len);
  req.endkey = bin(q->end_key, q->end_key_len);
  req.prefix = bin(q->prefix, q->prefix_len);
  req.desc = q->desc ? 1 : 0;
  req.limit = q->limit;
  req.sincetx = q->since_tx;
  req.nowait = q->no_wait ? 1 : 0;
  req.inclusiveseek = q->inclusive_seek ? 1 : 0;
  req.inclusiveend = q->inclusive_end ? 1 : 0;
  req.offset = q->offset;
  if ((rc = rpc(c, "Scan", &req.base, &immudb__schema__entries__descriptor,
                (ProtobufCMessage **)&r)) != 0)
    return rc;
  rc = entries_from_pb(r->entries, r->n_entries, out);
  PB_FREE(r);
  return rc ? fail(rc, "scan: out of memory") : 0;
}

int immu_client_history(immu_client *c, const immu_db_history_req *q,
                        immu_client_entries *out) {
  Immudb__Schema__HistoryRequest req = IMMUDB__SCHEMA__HISTORY_REQUEST__INIT;
  Immudb__Schema__Entries *r = NULL;
  int rc;

  clear_err();
  memset(out, 0, sizeof *out);
  if (q == NULL || q->key == NULL || q->key_len == 0)
    return fail(IMMU_EINVAL, "history: empty key");
  req.key = bin(q->key, q->key_len);
  req.offset = q->offset;
  req.limit = q->limit;
  req.desc = q->desc ? 1 : 0;
  req.sincetx = q->since_tx;
  if ((rc = rpc(c, "History", &req.base, &immudb__schema__entries__descriptor,
                (ProtobufCMessage **)&r)) != 0)
    return rc;
  rc = entries_from_pb(r->entries, r->n_entries, out);
  PB_FREE(r);
  return rc ? fail(rc, "history: out of memory") : 0;
}

int immu_client_count(immu_client *c, const uint8_t *prefix, size_t plen,
                      uint64_t *out) {
  Immudb__Schema__KeyPrefix req = IMMUDB__SCHEMA__KEY_PREFIX__INIT;
  Immudb__Schema__EntryCount *r = NULL;
  int rc;
  clear_err();
  req.prefix = bin(prefix, plen);
  if ((rc = rpc(c, "Count", &req.base, &immudb__schema__entry_count__descriptor,
                (ProtobufCMessage **)&r)) != 0)
    return rc;
  if (out != NULL)
    *out = r->count;
  PB_FREE(r);
  return 0;
}

int immu_client_count_all(immu_client *c, uint64_t *out) {
  Immudb__Schema__EntryCount *r = NULL;
  int rc;
  clear_err();
  if ((rc = rpc(c, "CountAll", EMPTY_REQ,
                &immudb__schema__entry_count__descriptor,
                (ProtobufCMessage **)&r)) != 0)
    return rc;
  if (out != NULL)
    *out = r->count;
  PB_FREE(r);
  return 0;
}

int immu_client_tx_by_id(immu_client *c, uint64_t id, immu_client_tx *out) {
  Immudb__Schema__TxRequest req = IMMUDB__SCHEMA__TX_REQUEST__INIT;
  Immudb__Schema__Tx *r = NULL;
  char err[512];
  int rc;

  clear_err();
  memset(out, 0, sizeof *out);
  if (id == 0)
    return fail(IMMU_EINVAL, "tx_by_id: tx 0 does not exist");
  req.tx = id;
  if ((rc = rpc(c, "TxById", &req.base, &immudb__schema__tx__descriptor,
                (ProtobufCMessage **)&r)) != 0)
    return rc;
  rc = immu__cli_tx_from_pb(r, out, err, sizeof err);
  PB_FREE(r);
  if (rc != 0)
    return fail(rc, "TxById: %s", rc == IMMU_ENOMEM ? "out of memory" : err);
  return 0;
}

int immu_client_tx_scan(immu_client *c, const immu_db_tx_scan_req *q,
                        immu_client_tx_list *out) {
  Immudb__Schema__TxScanRequest req = IMMUDB__SCHEMA__TX_SCAN_REQUEST__INIT;
  Immudb__Schema__TxList *r = NULL;
  char err[512];
  int rc = 0;

  clear_err();
  memset(out, 0, sizeof *out);
  if (q == NULL)
    return fail(IMMU_EINVAL, "tx_scan: NULL request");
  req.initialtx = q->initial_tx;
  req.limit = q->limit;
  req.desc = q->desc ? 1 : 0;
  if ((rc = rpc(c, "TxScan", &req.base, &immudb__schema__tx_list__descriptor,
                (ProtobufCMessage **)&r)) != 0)
    return rc;
  if (r->n_txs > 0) {
    out->v = immu__calloc(r->n_txs, sizeof *out->v);
    if (out->v == NULL)
      rc = IMMU_ENOMEM;
    for (size_t i = 0; rc == 0 && i < r->n_txs; i++) {
      rc = immu__cli_tx_from_pb(r->txs[i], &out->v[i], err, sizeof err);
      if (rc == 0)
        out->n = i + 1;
    }
  }
  PB_FREE(r);
  if (rc != 0) {
    immu_client_tx_list_clear(out);
    return fail(rc, "TxScan: %s", rc == IMMU_ENOMEM ? "out of memory" : err);
  }
  return 0;
}

int immu_client_set_reference(immu_client *c, const immu_db_ref_req *q,
                              immu_tx_header *hdr) {
  Immudb__Schema__ReferenceRequest req;
  Immudb__Schema__TxHeader *r = NULL;
  int rc;
  clear_err();
  if (q == NULL || q->key_len == 0 || q->referenced_key_len == 0)
    return fail(IMMU_EINVAL, "set_reference: empty key");
  ref_req_pb(q, &req);
  if ((rc = rpc(c, "SetReference", &req.base,
                &immudb__schema__tx_header__descriptor,
                (ProtobufCMessage **)&r)) != 0)
    return rc;
  return header_reply("SetReference", r, hdr);
}

int immu_client_zadd(immu_client *c, const immu_db_zadd_req *q,
                     immu_tx_header *hdr) {
  Immudb__Schema__ZAddRequest req;
  Immudb__Schema__TxHeader *r = NULL;
  int rc;
  clear_err();
  if (q == NULL || q->set_len == 0 || q->key_len == 0)
    return fail(IMMU_EINVAL, "zadd: empty set or key");
  zadd_req_pb(q, &req);
  if ((rc = rpc(c, "ZAdd", &req.base, &immudb__schema__tx_header__descriptor,
                (ProtobufCMessage **)&r)) != 0)
    return rc;
  return header_reply("ZAdd", r, hdr);
}

int immu_client_zscan(immu_client *c, const immu_db_zscan_req *q,
                      immu_client_zentries *out) {
  Immudb__Schema__ZScanRequest req = IMMUDB__SCHEMA__ZSCAN_REQUEST__INIT;
  Immudb__Schema__Score mins = IMMUDB__SCHEMA__SCORE__INIT;
  Immudb__Schema__Score maxs = IMMUDB__SCHEMA__SCORE__INIT;
  Immudb__Schema__ZEntries *r = NULL;
  int rc;

  clear_err();
  memset(out, 0, sizeof *out);
  if (q == NULL || q->set_len == 0)
    return fail(IMMU_EINVAL, "zscan: empty set");
  req.set = bin(q->set, q->set_len);
  req.seekkey = bin(q->seek_key, q->seek_key_len);
  req.seekscore = q->seek_score;
  req.seekattx = q->seek_at_tx;
  req.inclusiveseek = q->inclusive_seek ? 1 : 0;
  req.limit = q->limit;
  req.desc = q->desc ? 1 : 0;
  if (q->has_min_score) {
    mins.score = q->min_score;
    req.minscore = &mins;
  }
  if (q->has_max_score) {
    maxs.score = q->max_score;
    req.maxscore = &maxs;
  }
  req.sincetx = q->since_tx;
  req.nowait = q->no_wait ? 1 : 0;
  req.offset = q->offset;
  if ((rc = rpc(c, "ZScan", &req.base, &immudb__schema__zentries__descriptor,
                (ProtobufCMessage **)&r)) != 0)
    return rc;
  rc = zentries_from_pb(r, out);
  PB_FREE(r);
  return rc ? fail(rc, "zscan: out of memory") : 0;
}

/* --- streams --------------------------------------------------------- */

/* Packed Chunk messages of a client stream. */
typedef struct chunks {
  immu__grpc_msg *v;
  size_t n, cap;
} chunks;

static void chunks_free(chunks *ch) {
  for (size_t i = 0; i < ch->n; i++)
    immu__free((void *)(uintptr_t)ch->v[i].ptr);
  immu__free(ch->v);
  memset(ch, 0, sizeof *ch);
}

static int chunk_add(chunks *ch, const uint8_t *hdr8, const uint8_t *p,
                     size_t n) {
  Immudb__Schema__Chunk m = IMMUDB__SCHEMA__CHUNK__INIT;
  uint8_t *content = NULL, *packed;
  size_t clen = n + (hdr8 ? 8 : 0), plen;

  if (ch->n == ch->cap) {
    size_t nc = ch->cap ? ch->cap * 2 : 16;
    immu__grpc_msg *nv = immu__realloc(ch->v, nc * sizeof *nv);
    if (nv == NULL)
      return IMMU_ENOMEM;
    ch->v = nv;
    ch->cap = nc;
  }
  if (hdr8 != NULL) {
    content = immu__malloc(clen);
    if (content == NULL)
      return IMMU_ENOMEM;
    memcpy(content, hdr8, 8);
    if (n > 0)
      memcpy(content + 8, p, n);
    m.content = bin(content, clen);
  } else {
    m.content = bin(p, n);
  }
  plen = protobuf_c_message_get_packed_size(&m.base);
  packed = immu__malloc(plen ? plen : 1);
  if (packed == NULL) {
    immu__free(content);
    return IMMU_ENOMEM;
  }
  protobuf_c_message_pack(&m.base, packed);
  immu__free(content);
  ch->v[ch->n].ptr = packed;
  ch->v[ch->n].len = plen;
  ch->n++;
  return 0;
}

/* One framed message: u64 BE length + payload; the first chunk carries the
 * length and up to CHUNK_SIZE - 8 payload bytes, later ones CHUNK_SIZE. */
static int frame_add(chunks *ch, const uint8_t *p, size_t n) {
  uint8_t h[8];
  size_t first = n < CHUNK_SIZE - 8 ? n : CHUNK_SIZE - 8;
  int rc;
  immu__put_u64(h, (uint64_t)n);
  if ((rc = chunk_add(ch, h, p, first)) != 0)
    return rc;
  for (size_t off = first; off < n; off += CHUNK_SIZE) {
    size_t k = n - off < CHUNK_SIZE ? n - off : CHUNK_SIZE;
    if ((rc = chunk_add(ch, NULL, p + off, k)) != 0)
      return rc;
  }
  return 0;
}

int immu_client_stream_set(immu_client *c, const immu_db_kv *kvs, size_t n,
                           immu_tx_header *hdr) {
  chunks ch = {0};
  uint8_t *resp = NULL;
  size_t resp_len = 0;
  Immudb__Schema__TxHeader *r;
  int rc;

  clear_err();
  if ((rc = check_kvs(kvs, n)) != 0)
    return rc;
  for (size_t i = 0; i < n; i++) {
    if ((rc = frame_add(&ch, kvs[i].key, kvs[i].key_len)) != 0 ||
        (rc = frame_add(&ch, kvs[i].value, kvs[i].value_len)) != 0) {
      chunks_free(&ch);
      return fail(rc, "stream_set: out of memory");
    }
  }
  rc = do_call(c, "streamSet", ch.v, ch.n, NULL, NULL, &resp, &resp_len, 0);
  chunks_free(&ch);
  if (rc != 0)
    return rc;
  r = (Immudb__Schema__TxHeader *)protobuf_c_message_unpack(
      &immudb__schema__tx_header__descriptor, &immu__cli_pb_allocator, resp_len, resp);
  immu__free(resp);
  if (r == NULL)
    return fail(IMMU_EPROTO, "streamSet: cannot decode the TxHeader reply");
  return header_reply("streamSet", r, hdr);
}

typedef struct sget {
  uint8_t *buf;
  size_t len, cap;
  int cb_rc; /* the callback's failure, if any */
  char msg[128];
} sget;

static int sget_fail(sget *s, int rc, const char *msg) {
  s->cb_rc = rc;
  snprintf(s->msg, sizeof s->msg, "%s", msg);
  return rc;
}

static int sget_on_msg(void *arg, const uint8_t *msg, size_t len) {
  sget *s = arg;
  Immudb__Schema__Chunk *ch = (Immudb__Schema__Chunk *)protobuf_c_message_unpack(
      &immudb__schema__chunk__descriptor, &immu__cli_pb_allocator, len, msg);
  int rc = 0;
  if (ch == NULL)
    return sget_fail(s, IMMU_EPROTO, "cannot decode a Chunk");
  if (ch->content.len > MAX_STREAM_BYTES - s->len) {
    rc = sget_fail(s, IMMU_ETOOLARGE, "the stream exceeds 64 MiB");
  } else if (ch->content.len > 0) {
    if (s->len + ch->content.len > s->cap) {
      size_t nc = s->cap ? s->cap : 65536;
      while (nc < s->len + ch->content.len)
        nc *= 2;
      uint8_t *nb = immu__realloc(s->buf, nc);
      if (nb == NULL)
        rc = sget_fail(s, IMMU_ENOMEM, "out of memory");
      else {
        s->buf = nb;
        s->cap = nc;
      }
    }
    if (rc == 0) {
      memcpy(s->buf + s->len, ch->content.data, ch->content.len);
      s->len += ch->content.len;
    }
  }
  PB_FREE(ch);
  return rc;
}

/* Takes the next framed message of [*p, end). */
static int unframe(const uint8_t **p, const uint8_t *end, const uint8_t **msg,
                   size_t *n) {
  uint64_t l;
  if ((size_t)(end - *p) < 8)
    return -1;
  l = immu__get_u64(*p);
  *p += 8;
  if (l > (uint64_t)(end - *p))
    return -1;
  *msg = *p;
  *n = (size_t)l;
  *p += l;
  return 0;
}

int immu_client_stream_get(immu_client *c, const immu_db_key_req *req,
                           immu_client_entry *out) {
  Immudb__Schema__KeyRequest m;
  sget s = {0};
  uint8_t *packed;
  size_t plen;
  immu__grpc_msg msg;
  const uint8_t *p, *end, *k, *v;
  size_t kl, vl;
  int rc;

  clear_err();
  memset(out, 0, sizeof *out);
  if (req == NULL || req->key == NULL || req->key_len == 0)
    return fail(IMMU_EINVAL, "stream_get: empty key");
  key_req_pb(req, &m);
  plen = protobuf_c_message_get_packed_size(&m.base);
  packed = immu__malloc(plen ? plen : 1);
  if (packed == NULL)
    return fail(IMMU_ENOMEM, "out of memory");
  protobuf_c_message_pack(&m.base, packed);
  msg.ptr = packed;
  msg.len = plen;
  rc = do_call(c, "streamGet", &msg, 1, sget_on_msg, &s, NULL, NULL, 0);
  immu__free(packed);
  if (s.cb_rc != 0) {
    immu__free(s.buf);
    return fail(s.cb_rc, "streamGet: %s", s.msg);
  }
  if (rc != 0) {
    immu__free(s.buf);
    return rc;
  }
  p = s.buf;
  end = s.buf + s.len;
  if (s.buf == NULL || unframe(&p, end, &k, &kl) != 0 ||
      unframe(&p, end, &v, &vl) != 0 || p != end) {
    immu__free(s.buf);
    return fail(IMMU_EPROTO,
                "streamGet: the stream is not exactly a key and a value");
  }
  out->key = dup_bytes(k, kl);
  out->key_len = kl;
  out->value = dup_bytes(v, vl);
  out->value_len = vl;
  immu__free(s.buf);
  if (out->key == NULL || out->value == NULL) {
    immu_client_entry_clear(out);
    return fail(IMMU_ENOMEM, "out of memory");
  }
  return 0;
}

/* --- verified calls ------------------------------------------------- */

static void vctx_init(immu__cli_vctx *v, immu_client *c, const char *db,
                      const immu__cli_state *trusted, char *err,
                      size_t errlen) {
  v->db = db;
  v->trusted = trusted;
  v->verifier = c->verifier;
  v->err = err;
  v->errlen = errlen;
  err[0] = '\0';
}

/* Runs one verified write: |req| is a request message whose proveSinceTx
 * field |*prove| is set from the trusted state here. */
static int verified_write(immu_client *c, const char *method,
                          ProtobufCMessage *req, uint64_t *prove,
                          const immu__cli_expect *exp, size_t nexp,
                          immu_tx_header *hdr) {
  char db[IMMU_DB_NAME_MAX + 1], err[768];
  immu__cli_state trusted, newst;
  Immudb__Schema__VerifiableTx *r = NULL;
  immu__cli_vctx v;
  int rc;

  if ((rc = verified_begin(c, db, &trusted)) != 0)
    return rc;
  *prove = trusted.tx_id;
  rc = rpc(c, method, req, &immudb__schema__verifiable_tx__descriptor,
           (ProtobufCMessage **)&r);
  if (rc != 0) {
    verified_end(c, NULL);
    return rc;
  }
  vctx_init(&v, c, db, &trusted, err, sizeof err);
  rc = immu__cli_verify_write(r, &v, exp, nexp, &newst, hdr);
  PB_FREE(r);
  if (rc != 0) {
    verified_end(c, NULL);
    return fail(rc, "%s: %s", method,
                rc == IMMU_ENOMEM ? "out of memory" : err);
  }
  return verified_end(c, &newst);
}

int immu_client_verified_set(immu_client *c, const immu_db_kv *kvs, size_t n,
                             immu_tx_header *hdr) {
  Immudb__Schema__VerifiableSetRequest req =
      IMMUDB__SCHEMA__VERIFIABLE_SET_REQUEST__INIT;
  Immudb__Schema__SetRequest sr = IMMUDB__SCHEMA__SET_REQUEST__INIT;
  Immudb__Schema__KeyValue *arr = NULL, **ptrs = NULL;
  immu__cli_expect *exp = NULL;
  int rc;

  clear_err();
  if ((rc = check_kvs(kvs, n)) != 0)
    return rc;
  exp = immu__calloc(n, sizeof *exp);
  if (exp == NULL || build_kvs(kvs, n, &arr, &ptrs) != 0) {
    immu__free(exp);
    return fail(IMMU_ENOMEM, "out of memory");
  }
  for (size_t i = 0; i < n; i++)
    if ((rc = immu__cli_expect_kv(&exp[i], kvs[i].key, kvs[i].key_len,
                                  kvs[i].value, kvs[i].value_len)) != 0) {
      rc = fail(rc, "verified_set: cannot encode pair %zu", i);
      goto out;
    }
  sr.n_kvs = n;
  sr.kvs = ptrs;
  req.setrequest = &sr;
  rc = verified_write(c, "VerifiableSet", &req.base, &req.provesincetx, exp, n,
                      hdr);
out:
  for (size_t i = 0; i < n; i++)
    immu__cli_expect_clear(&exp[i]);
  immu__free(exp);
  immu__free(arr);
  immu__free(ptrs);
  return rc;
}

int immu_client_verified_set_reference(immu_client *c,
                                       const immu_db_ref_req *q,
                                       immu_tx_header *hdr) {
  Immudb__Schema__VerifiableReferenceRequest req =
      IMMUDB__SCHEMA__VERIFIABLE_REFERENCE_REQUEST__INIT;
  Immudb__Schema__ReferenceRequest rr;
  immu__cli_expect exp;
  int rc;

  clear_err();
  if (q == NULL)
    return fail(IMMU_EINVAL, "verified_set_reference: NULL request");
  if ((rc = immu__cli_expect_ref(&exp, q->key, q->key_len, q->referenced_key,
                                 q->referenced_key_len, q->at_tx)) != 0)
    return fail(rc, "verified_set_reference: empty key");
  ref_req_pb(q, &rr);
  req.referencerequest = &rr;
  rc = verified_write(c, "VerifiableSetReference", &req.base,
                      &req.provesincetx, &exp, 1, hdr);
  immu__cli_expect_clear(&exp);
  return rc;
}

int immu_client_verified_zadd(immu_client *c, const immu_db_zadd_req *q,
                              immu_tx_header *hdr) {
  Immudb__Schema__VerifiableZAddRequest req =
      IMMUDB__SCHEMA__VERIFIABLE_ZADD_REQUEST__INIT;
  Immudb__Schema__ZAddRequest zr;
  immu__cli_expect exp;
  int rc;

  clear_err();
  if (q == NULL)
    return fail(IMMU_EINVAL, "verified_zadd: NULL request");
  if ((rc = immu__cli_expect_zadd(&exp, q->set, q->set_len, q->score, q->key,
                                  q->key_len, q->at_tx)) != 0)
    return fail(rc, "verified_zadd: empty set or key, or NaN score");
  zadd_req_pb(q, &zr);
  req.zaddrequest = &zr;
  rc = verified_write(c, "VerifiableZAdd", &req.base, &req.provesincetx, &exp,
                      1, hdr);
  immu__cli_expect_clear(&exp);
  return rc;
}

int immu_client_verified_tx_by_id(immu_client *c, uint64_t id,
                                  immu_client_tx *out) {
  Immudb__Schema__VerifiableTxRequest req =
      IMMUDB__SCHEMA__VERIFIABLE_TX_REQUEST__INIT;
  Immudb__Schema__VerifiableTx *r = NULL;
  char db[IMMU_DB_NAME_MAX + 1], err[768];
  immu__cli_state trusted, newst;
  immu__cli_vctx v;
  int rc;

  clear_err();
  if (out != NULL)
    memset(out, 0, sizeof *out);
  if (id == 0)
    return fail(IMMU_EINVAL, "verified_tx_by_id: tx 0 does not exist");
  if ((rc = verified_begin(c, db, &trusted)) != 0)
    return rc;
  req.tx = id;
  req.provesincetx = trusted.tx_id;
  rc = rpc(c, "VerifiableTxById", &req.base,
           &immudb__schema__verifiable_tx__descriptor,
           (ProtobufCMessage **)&r);
  if (rc != 0) {
    verified_end(c, NULL);
    return rc;
  }
  vctx_init(&v, c, db, &trusted, err, sizeof err);
  rc = immu__cli_verify_tx_by_id(r, &v, id, &newst, out);
  PB_FREE(r);
  if (rc != 0) {
    verified_end(c, NULL);
    return fail(rc, "VerifiableTxById: %s",
                rc == IMMU_ENOMEM ? "out of memory" : err);
  }
  rc = verified_end(c, &newst);
  if (rc != 0 && out != NULL)
    immu_client_tx_clear(out);
  return rc;
}

typedef struct fetch_ctx {
  immu_client *c;
} fetch_ctx;

static int fetch_entry(void *arg, const immu_db_key_req *q,
                       uint64_t prove_since_tx,
                       Immudb__Schema__VerifiableEntry **out, char *err,
                       size_t errlen) {
  fetch_ctx *f = arg;
  Immudb__Schema__VerifiableGetRequest req =
      IMMUDB__SCHEMA__VERIFIABLE_GET_REQUEST__INIT;
  Immudb__Schema__KeyRequest kr;
  int rc;

  key_req_pb(q, &kr);
  req.keyrequest = &kr;
  req.provesincetx = prove_since_tx;
  rc = rpc(f->c, "VerifiableGet", &req.base,
           &immudb__schema__verifiable_entry__descriptor,
           (ProtobufCMessage **)out);
  if (rc != 0 && err != NULL && errlen > 0)
    snprintf(err, errlen, "%s", tl_err);
  return rc;
}

int immu_client_verified_get(immu_client *c, const immu_db_key_req *req,
                             immu_client_entry *out) {
  char db[IMMU_DB_NAME_MAX + 1], err[ERRLEN];
  immu__cli_state trusted, newst;
  immu__cli_vctx v;
  fetch_ctx f = {c};
  int rc;

  clear_err();
  memset(out, 0, sizeof *out);
  if (req == NULL || req->key == NULL || req->key_len == 0)
    return fail(IMMU_EINVAL, "verified_get: empty key");
  if ((rc = verified_begin(c, db, &trusted)) != 0)
    return rc;
  vctx_init(&v, c, db, &trusted, err, sizeof err);
  rc = immu__cli_verified_get_flow(&v, req, fetch_entry, &f, &newst, out);
  if (rc != 0) {
    verified_end(c, NULL);
    if (rc == IMMU_EVERIFY || rc == IMMU_ENOMEM)
      return fail(rc, "VerifiableGet: %s",
                  rc == IMMU_ENOMEM ? "out of memory" : err);
    return fail(rc, "%s", err); /* the RPC's own message */
  }
  rc = verified_end(c, &newst);
  if (rc != 0)
    immu_client_entry_clear(out);
  return rc;
}

int immu_client_verified_get_at(immu_client *c, const uint8_t *key,
                                size_t klen, uint64_t at_tx,
                                immu_client_entry *out) {
  immu_db_key_req r;
  memset(&r, 0, sizeof r);
  r.key = key;
  r.key_len = klen;
  r.at_tx = at_tx;
  return immu_client_verified_get(c, &r, out);
}

int immu_client_verified_get_since(immu_client *c, const uint8_t *key,
                                   size_t klen, uint64_t since_tx,
                                   immu_client_entry *out) {
  immu_db_key_req r;
  memset(&r, 0, sizeof r);
  r.key = key;
  r.key_len = klen;
  r.since_tx = since_tx;
  return immu_client_verified_get(c, &r, out);
}

/* --- databases ------------------------------------------------------ */

void immu_client_db_list_clear(immu_client_db_list *l) {
  if (l == NULL)
    return;
  for (size_t i = 0; i < l->n; i++) {
    immu__free(l->v[i].name);
    immu__free(l->v[i].created_by);
  }
  immu__free(l->v);
  memset(l, 0, sizeof *l);
}

int immu_client_create_database(immu_client *c, const char *name) {
  Immudb__Schema__Database req = IMMUDB__SCHEMA__DATABASE__INIT;
  clear_err();
  if (!valid_db_name(name))
    return fail(IMMU_EINVAL, "create_database: invalid name");
  req.databasename = cstr(name);
  return rpc(c, "CreateDatabase", &req.base, NULL, NULL);
}

int immu_client_create_database_v2(immu_client *c, const char *name,
                                   const immu_client_db_settings *s,
                                   int if_not_exists, int *already_existed) {
  Immudb__Schema__CreateDatabaseRequest req =
      IMMUDB__SCHEMA__CREATE_DATABASE_REQUEST__INIT;
  Immudb__Schema__DatabaseNullableSettings ns =
      IMMUDB__SCHEMA__DATABASE_NULLABLE_SETTINGS__INIT;
  Immudb__Schema__NullableUint32 fs = IMMUDB__SCHEMA__NULLABLE_UINT32__INIT,
                                 mk = IMMUDB__SCHEMA__NULLABLE_UINT32__INIT,
                                 mv = IMMUDB__SCHEMA__NULLABLE_UINT32__INIT,
                                 me = IMMUDB__SCHEMA__NULLABLE_UINT32__INIT,
                                 hv = IMMUDB__SCHEMA__NULLABLE_UINT32__INIT;
  Immudb__Schema__NullableBool ec = IMMUDB__SCHEMA__NULLABLE_BOOL__INIT,
                               al = IMMUDB__SCHEMA__NULLABLE_BOOL__INIT;
  Immudb__Schema__CreateDatabaseResponse *r = NULL;
  int rc;

  clear_err();
  if (already_existed != NULL)
    *already_existed = 0;
  if (!valid_db_name(name))
    return fail(IMMU_EINVAL, "create_database_v2: invalid name");
  req.name = cstr(name);
  req.ifnotexists = if_not_exists ? 1 : 0;
  if (s != NULL) {
    if (s->has_file_size) {
      fs.value = s->file_size;
      ns.filesize = &fs;
    }
    if (s->has_max_key_len) {
      mk.value = s->max_key_len;
      ns.maxkeylen = &mk;
    }
    if (s->has_max_value_len) {
      mv.value = s->max_value_len;
      ns.maxvaluelen = &mv;
    }
    if (s->has_max_tx_entries) {
      me.value = s->max_tx_entries;
      ns.maxtxentries = &me;
    }
    if (s->has_exclude_commit_time) {
      ec.value = s->exclude_commit_time ? 1 : 0;
      ns.excludecommittime = &ec;
    }
    if (s->has_write_tx_header_version) {
      hv.value = s->write_tx_header_version;
      ns.writetxheaderversion = &hv;
    }
    if (s->has_autoload) {
      al.value = s->autoload ? 1 : 0;
      ns.autoload = &al;
    }
    req.settings = &ns;
  }
  if ((rc = rpc(c, "CreateDatabaseV2", &req.base,
                &immudb__schema__create_database_response__descriptor,
                (ProtobufCMessage **)&r)) != 0)
    return rc;
  if (already_existed != NULL)
    *already_existed = r->alreadyexisted ? 1 : 0;
  PB_FREE(r);
  return 0;
}

int immu_client_database_list(immu_client *c, immu_client_db_list *out) {
  Immudb__Schema__DatabaseListResponse *r = NULL;
  int rc;
  clear_err();
  memset(out, 0, sizeof *out);
  if ((rc = rpc(c, "DatabaseList", EMPTY_REQ,
                &immudb__schema__database_list_response__descriptor,
                (ProtobufCMessage **)&r)) != 0)
    return rc;
  if (r->n_databases > 0) {
    out->v = immu__calloc(r->n_databases, sizeof *out->v);
    if (out->v == NULL)
      rc = IMMU_ENOMEM;
    for (size_t i = 0; rc == 0 && i < r->n_databases; i++) {
      const Immudb__Schema__Database *d = r->databases[i];
      out->n = i + 1;
      out->v[i].name = dup_str(d ? d->databasename : "");
      out->v[i].created_by = dup_str("");
      if (out->v[i].name == NULL || out->v[i].created_by == NULL)
        rc = IMMU_ENOMEM;
    }
  }
  PB_FREE(r);
  if (rc != 0) {
    immu_client_db_list_clear(out);
    return fail(rc, "database_list: out of memory");
  }
  return 0;
}

int immu_client_database_list_v2(immu_client *c, immu_client_db_list *out) {
  Immudb__Schema__DatabaseListRequestV2 req =
      IMMUDB__SCHEMA__DATABASE_LIST_REQUEST_V2__INIT;
  Immudb__Schema__DatabaseListResponseV2 *r = NULL;
  int rc;
  clear_err();
  memset(out, 0, sizeof *out);
  if ((rc = rpc(c, "DatabaseListV2", &req.base,
                &immudb__schema__database_list_response_v2__descriptor,
                (ProtobufCMessage **)&r)) != 0)
    return rc;
  if (r->n_databases > 0) {
    out->v = immu__calloc(r->n_databases, sizeof *out->v);
    if (out->v == NULL)
      rc = IMMU_ENOMEM;
    for (size_t i = 0; rc == 0 && i < r->n_databases; i++) {
      const Immudb__Schema__DatabaseInfo *d = r->databases[i];
      immu_client_db_info *o = &out->v[i];
      out->n = i + 1;
      o->name = dup_str(d->name);
      o->created_by = dup_str(d->created_by);
      o->loaded = d->loaded ? 1 : 0;
      o->disk_size = d->disksize;
      o->num_transactions = d->numtransactions;
      o->created_at = d->created_at;
      if (o->name == NULL || o->created_by == NULL)
        rc = IMMU_ENOMEM;
    }
  }
  PB_FREE(r);
  if (rc != 0) {
    immu_client_db_list_clear(out);
    return fail(rc, "database_list_v2: out of memory");
  }
  return 0;
}

/* Load / Unload / Delete: their requests are all {string database = 1},
 * so one LoadDatabaseRequest encodes each of them byte for byte. */
static int db_op(immu_client *c, const char *method, const char *name,
                 const ProtobufCMessageDescriptor *respd) {
  Immudb__Schema__LoadDatabaseRequest req =
      IMMUDB__SCHEMA__LOAD_DATABASE_REQUEST__INIT;
  ProtobufCMessage *r = NULL;
  int rc;
  clear_err();
  if (!valid_db_name(name))
    return fail(IMMU_EINVAL, "%s: invalid database name", method);
  req.database = cstr(name);
  rc = rpc(c, method, &req.base, respd, &r);
  if (r != NULL)
    protobuf_c_message_free_unpacked(r, &immu__cli_pb_allocator);
  return rc;
}

int immu_client_load_database(immu_client *c, const char *name) {
  return db_op(c, "LoadDatabase", name,
               &immudb__schema__load_database_response__descriptor);
}

int immu_client_unload_database(immu_client *c, const char *name) {
  return db_op(c, "UnloadDatabase", name,
               &immudb__schema__unload_database_response__descriptor);
}

int immu_client_delete_database(immu_client *c, const char *name) {
  return db_op(c, "DeleteDatabase", name,
               &immudb__schema__delete_database_response__descriptor);
}

int immu_client_flush_index(immu_client *c, float cleanup_percentage,
                            int synced) {
  Immudb__Schema__FlushIndexRequest req =
      IMMUDB__SCHEMA__FLUSH_INDEX_REQUEST__INIT;
  ProtobufCMessage *r = NULL;
  int rc;
  clear_err();
  req.cleanuppercentage = cleanup_percentage;
  req.synced = synced ? 1 : 0;
  rc = rpc(c, "FlushIndex", &req.base,
           &immudb__schema__flush_index_response__descriptor, &r);
  if (r != NULL)
    protobuf_c_message_free_unpacked(r, &immu__cli_pb_allocator);
  return rc;
}

int immu_client_compact_index(immu_client *c) {
  clear_err();
  return rpc(c, "CompactIndex", EMPTY_REQ, NULL, NULL);
}

/* --- users ---------------------------------------------------------- */

void immu_client_user_list_clear(immu_client_user_list *l) {
  if (l == NULL)
    return;
  for (size_t i = 0; i < l->n; i++) {
    immu_client_user *u = &l->v[i];
    for (size_t j = 0; j < u->nperms; j++)
      immu__free(u->perms[j].database);
    immu__free(u->perms);
    immu__free(u->user);
    immu__free(u->created_by);
    immu__free(u->created_at);
  }
  immu__free(l->v);
  memset(l, 0, sizeof *l);
}

int immu_client_create_user(immu_client *c, const char *user,
                            const char *password, uint32_t permission,
                            const char *database) {
  Immudb__Schema__CreateUserRequest req =
      IMMUDB__SCHEMA__CREATE_USER_REQUEST__INIT;
  clear_err();
  if (user == NULL || password == NULL || database == NULL)
    return fail(IMMU_EINVAL, "create_user: user, password and database are "
                             "required");
  req.user = bin_str(user);
  req.password = bin_str(password);
  req.permission = permission;
  req.database = cstr(database);
  return rpc(c, "CreateUser", &req.base, NULL, NULL);
}

int immu_client_list_users(immu_client *c, immu_client_user_list *out) {
  Immudb__Schema__UserList *r = NULL;
  int rc;
  clear_err();
  memset(out, 0, sizeof *out);
  if ((rc = rpc(c, "ListUsers", EMPTY_REQ,
                &immudb__schema__user_list__descriptor,
                (ProtobufCMessage **)&r)) != 0)
    return rc;
  if (r->n_users > 0) {
    out->v = immu__calloc(r->n_users, sizeof *out->v);
    if (out->v == NULL)
      rc = IMMU_ENOMEM;
    for (size_t i = 0; rc == 0 && i < r->n_users; i++) {
      const Immudb__Schema__User *u = r->users[i];
      immu_client_user *o = &out->v[i];
      out->n = i + 1;
      o->user = immu__strndup((const char *)u->user.data, u->user.len);
      o->created_by = dup_str(u->createdby);
      o->created_at = dup_str(u->createdat);
      o->active = u->active ? 1 : 0;
      if (o->user == NULL || o->created_by == NULL || o->created_at == NULL) {
        rc = IMMU_ENOMEM;
        break;
      }
      if (u->n_permissions > 0) {
        o->perms = immu__calloc(u->n_permissions, sizeof *o->perms);
        if (o->perms == NULL) {
          rc = IMMU_ENOMEM;
          break;
        }
        for (size_t j = 0; j < u->n_permissions; j++) {
          o->nperms = j + 1;
          o->perms[j].database = dup_str(u->permissions[j]->database);
          o->perms[j].permission = u->permissions[j]->permission;
          if (o->perms[j].database == NULL) {
            rc = IMMU_ENOMEM;
            break;
          }
        }
      }
    }
  }
  PB_FREE(r);
  if (rc != 0) {
    immu_client_user_list_clear(out);
    return fail(rc, "list_users: out of memory");
  }
  return 0;
}

int immu_client_change_password(immu_client *c, const char *user,
                                const char *old_password,
                                const char *new_password) {
  Immudb__Schema__ChangePasswordRequest req =
      IMMUDB__SCHEMA__CHANGE_PASSWORD_REQUEST__INIT;
  clear_err();
  if (user == NULL || old_password == NULL || new_password == NULL)
    return fail(IMMU_EINVAL, "change_password: missing argument");
  req.user = bin_str(user);
  req.oldpassword = bin_str(old_password);
  req.newpassword = bin_str(new_password);
  return rpc(c, "ChangePassword", &req.base, NULL, NULL);
}

int immu_client_change_permission(immu_client *c, int action,
                                  const char *user, const char *database,
                                  uint32_t permission) {
  Immudb__Schema__ChangePermissionRequest req =
      IMMUDB__SCHEMA__CHANGE_PERMISSION_REQUEST__INIT;
  clear_err();
  if (user == NULL || database == NULL ||
      (action != IMMU_PERM_GRANT && action != IMMU_PERM_REVOKE))
    return fail(IMMU_EINVAL, "change_permission: invalid argument");
  req.action = action == IMMU_PERM_GRANT
                   ? IMMUDB__SCHEMA__PERMISSION_ACTION__GRANT
                   : IMMUDB__SCHEMA__PERMISSION_ACTION__REVOKE;
  req.username = cstr(user);
  req.database = cstr(database);
  req.permission = permission;
  return rpc(c, "ChangePermission", &req.base, NULL, NULL);
}

int immu_client_set_active_user(immu_client *c, const char *user, int active) {
  Immudb__Schema__SetActiveUserRequest req =
      IMMUDB__SCHEMA__SET_ACTIVE_USER_REQUEST__INIT;
  clear_err();
  if (user == NULL)
    return fail(IMMU_EINVAL, "set_active_user: missing user");
  req.active = active ? 1 : 0;
  req.username = cstr(user);
  return rpc(c, "SetActiveUser", &req.base, NULL, NULL);
}
