/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The stream calls of ImmuService (immudb-api.md 1j): values larger than
 * one gRPC message travel as a sequence of Chunk{content, metadata}.
 *
 * Framing (immudb pkg/stream): the chunk contents of one call form a byte
 * stream of logical messages, each an 8-byte big-endian length followed by
 * that many payload bytes. Chunk metadata (field 2, v1.5+) is ignored when
 * received; we send none.
 *
 *   Sending: every message starts a new chunk; the first chunk carries the
 *   length and the first IMMU_SVC_CHUNK_SIZE - 8 payload bytes, the next
 *   ones up to IMMU_SVC_CHUNK_SIZE payload bytes each. An empty message is
 *   one chunk holding only its 8-byte length. (immudb-py's readers rely on
 *   each message starting a chunk.)
 *
 *   Receiving: chunk boundaries are ignored; messages may share a chunk or
 *   span many (immudb-py packs several in one chunk; Go never does).
 *
 * Message order, per call:
 *   streamGet            -> key, value           (the resolved key, like Get)
 *   streamScan           -> (key, value)*
 *   streamHistory        -> (key, value)*
 *   streamZScan          -> (set, key, score, atTx, value)*
 *                           score = u64 BE of the IEEE-754 bits, atTx = u64
 *   streamVerifiableGet  -> Entry without value (protobuf), VerifiableTx
 *                           (protobuf), InclusionProof (protobuf), value
 *   streamSet            <- (key, value)*                   -> TxHeader
 *   streamVerifiableSet  <- proveSinceTx (u64 BE, 8 bytes), (key, value)*
 *                           -> VerifiableTx. The v0.9-1.1 clients' form,
 *                           a first pair key "ProveSinceTx" / value u64, is
 *                           accepted too (the first message then has 12
 *                           bytes, never 8).
 *   streamExecAll        <- (op)* -> TxHeader, op = a 1-byte message with
 *                           the kind (1 KV, 2 ZAdd, 4 Ref) then, for KV,
 *                           key and value; for ZAdd, a ZAddRequest
 *                           (protobuf). Ref is refused like immudb does.
 *
 * Limits: a key at most the database's key length, a value at most its
 * value length, and the values of one call at most 32 MiB in total
 * (immudb's MaxTxValueLen), each checked before allocating. Writes wait
 * for the index like their unary forms (bounded by the call).
 */
#include <inttypes.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "core/endian.h"
#include "core/mem.h"
#include "immudb/crypto.h"
#include "immudb/db.h"
#include "schema.pb-c.h"
#include "server/server.h"
#include "server/svc.h"
#include "server/svc_conv.h"
#include "store/store.h"

/* Kinds of streamExecAll operations (immudb pkg/stream TOp_*). */
#define TOP_KV 1
#define TOP_ZADD 2
#define TOP_REF 4

/* Largest protobuf message a stream request may carry (a ZAddRequest, the
 * ProveSinceTx key): bounded by the key limits anyway. */
#define MAX_SMALL_MSG (64u * 1024u)

#define NOT_ENOUGH_DATA                                                        \
  "not enough data to build the expected message. check value length "         \
  "declaration"

/* ------------------------------------------------------------------ */
/* Sending                                                             */
/* ------------------------------------------------------------------ */

typedef struct chunk_out {
  immu_grpc_call *call;
  uint8_t *buf; /* IMMU_SVC_CHUNK_SIZE bytes: the first chunk of a message */
} chunk_out;

static int send_chunk(immu_grpc_call *call, const uint8_t *p, size_t n) {
  Immudb__Schema__Chunk ch = IMMUDB__SCHEMA__CHUNK__INIT;
  ch.content.data = (uint8_t *)(uintptr_t)p;
  ch.content.len = n;
  return immu_srv_send(call, &ch.base);
}

/* Sends one framed message. Returns 0 or IMMU_ECLOSED (call cancelled). */
static int send_msg(chunk_out *o, const void *payload, size_t n) {
  const uint8_t *p = payload;
  size_t first = n < IMMU_SVC_CHUNK_SIZE - 8 ? n : IMMU_SVC_CHUNK_SIZE - 8;
  int rc;

  immu__put_u64(o->buf, (uint64_t)n);
  if (first > 0)
    memcpy(o->buf + 8, p, first);
  if ((rc = send_chunk(o->call, o->buf, 8 + first)) != 0)
    return rc;
  for (size_t off = first; off < n; off += IMMU_SVC_CHUNK_SIZE) {
    size_t len = n - off < IMMU_SVC_CHUNK_SIZE ? n - off : IMMU_SVC_CHUNK_SIZE;
    if ((rc = send_chunk(o->call, p + off, len)) != 0)
      return rc;
  }
  return 0;
}

static int send_u64(chunk_out *o, uint64_t v) {
  uint8_t b[8];
  immu__put_u64(b, v);
  return send_msg(o, b, sizeof b);
}

/* Packs |m| and sends it as one framed message. */
static int send_pb(chunk_out *o, const ProtobufCMessage *m) {
  size_t n = protobuf_c_message_get_packed_size(m);
  uint8_t *b = immu__malloc(n ? n : 1);
  int rc;
  if (b == NULL)
    return IMMU_ENOMEM;
  protobuf_c_message_pack(m, b);
  rc = send_msg(o, b, n);
  immu__free(b);
  return rc;
}

static int out_open(chunk_out *o, immu_grpc_call *call) {
  o->call = call;
  o->buf = immu__malloc(IMMU_SVC_CHUNK_SIZE);
  if (o->buf == NULL) {
    immu__svc_fail_oom(call);
    return IMMU_ENOMEM;
  }
  return 0;
}

static void out_close(chunk_out *o) {
  immu__free(o->buf);
  o->buf = NULL;
}

/* Ends a server-streaming call after |rc| from the senders. */
static void out_finish(chunk_out *o, int rc) {
  if (rc == 0)
    immu_grpc_call_finish(o->call, IMMU_GRPC_OK, "");
  else if (rc == IMMU_ENOMEM)
    immu__svc_fail_oom(o->call);
  else
    immu_srv_failf(o->call, IMMU_GRPC_CANCELLED, "the call was cancelled");
}

static int send_kv(chunk_out *o, const immu_db_entry *e) {
  int rc = send_msg(o, e->key, e->key_len);
  return rc != 0 ? rc : send_msg(o, e->value, e->value_len);
}

/* ------------------------------------------------------------------ */
/* Receiving                                                           */
/* ------------------------------------------------------------------ */

typedef struct chunk_in {
  immu_grpc_call *call;
  size_t next;  /* next request message to unpack */
  size_t nmsgs; /* request messages */
  Immudb__Schema__Chunk *cur;
  size_t off;      /* read offset in cur->content */
  size_t raw_left; /* encoded bytes of the chunks not unpacked yet */
} chunk_in;

static void in_open(chunk_in *r, immu_grpc_call *call) {
  memset(r, 0, sizeof *r);
  r->call = call;
  r->nmsgs = immu_grpc_call_nmsgs(call);
  for (size_t i = 0; i < r->nmsgs; i++) {
    size_t len = 0;
    (void)immu_grpc_call_msg(call, i, &len);
    r->raw_left += len;
  }
}

static void in_close(chunk_in *r) {
  if (r->cur != NULL)
    protobuf_c_message_free_unpacked(&r->cur->base, NULL);
  r->cur = NULL;
}

/* Makes unread bytes available. Returns 0, 1 at the end of the stream,
 * IMMU_EPROTO for a chunk that does not decode. */
static int in_fill(chunk_in *r) {
  while (r->cur == NULL || r->off >= r->cur->content.len) {
    const uint8_t *m;
    size_t len = 0;
    in_close(r);
    if (r->next >= r->nmsgs)
      return 1;
    m = immu_grpc_call_msg(r->call, r->next++, &len);
    r->raw_left -= len;
    r->cur = (Immudb__Schema__Chunk *)protobuf_c_message_unpack(
        &immudb__schema__chunk__descriptor, NULL, len, m);
    r->off = 0;
    if (r->cur == NULL)
      return IMMU_EPROTO;
  }
  return 0;
}

/* Upper bound of the bytes still to come. */
static size_t in_left(const chunk_in *r) {
  size_t n = r->raw_left;
  if (r->cur != NULL)
    n += r->cur->content.len - r->off;
  return n;
}

static int in_read(chunk_in *r, uint8_t *dst, size_t n) {
  while (n > 0) {
    size_t k;
    int rc = in_fill(r);
    if (rc != 0)
      return rc == 1 ? IMMU_ERANGE : rc; /* ERANGE: truncated */
    k = r->cur->content.len - r->off;
    if (k > n)
      k = n;
    memcpy(dst, r->cur->content.data + r->off, k);
    r->off += k;
    dst += k;
    n -= k;
  }
  return 0;
}

/* 1 when no message follows, 0 when one does, IMMU_EPROTO. */
static int in_at_end(chunk_in *r) {
  return in_fill(r);
}

/* Reads one framed message of at most |max| bytes into a new buffer
 * (*out, immu__free; at least one byte allocated). Returns 0;
 * IMMU_ERANGE truncated stream; IMMU_ETOOLARGE over |max|; IMMU_EPROTO a
 * chunk that does not decode; IMMU_ENOMEM. */
static int in_msg(chunk_in *r, size_t max, uint8_t **out, size_t *len) {
  uint8_t h[8];
  uint64_t n;
  int rc;

  *out = NULL;
  *len = 0;
  if ((rc = in_read(r, h, sizeof h)) != 0)
    return rc;
  n = immu__get_u64(h);
  if (n > max)
    return IMMU_ETOOLARGE;
  if (n > in_left(r))
    return IMMU_ERANGE;
  if ((*out = immu__malloc(n ? (size_t)n : 1)) == NULL)
    return IMMU_ENOMEM;
  if ((rc = in_read(r, *out, (size_t)n)) != 0) {
    immu__free(*out);
    *out = NULL;
    return rc;
  }
  *len = (size_t)n;
  return 0;
}

/* Finishes the call for a failed in_msg / in_at_end; |what| names the
 * message for IMMU_ETOOLARGE. */
static void in_fail(immu_grpc_call *call, int rc, const char *what) {
  switch (rc) {
  case IMMU_ENOMEM:
    immu__svc_fail_oom(call);
    break;
  case IMMU_ETOOLARGE:
    if (strcmp(what, "value") == 0)
      immu_srv_failf(call, IMMU_GRPC_FAILED_PRECONDITION,
                     "internal store max value length exceeded");
    else
      immu_srv_failf(call, IMMU_GRPC_INVALID_ARGUMENT,
                     "illegal arguments: streamed %s too large", what);
    break;
  case IMMU_EPROTO:
    immu_srv_failf(call, IMMU_GRPC_INVALID_ARGUMENT, "malformed request");
    break;
  default:
    immu_srv_failf(call, IMMU_GRPC_INVALID_ARGUMENT, NOT_ENOUGH_DATA);
    break;
  }
}

/* Buffers received from the stream, released together. */
typedef struct bufs {
  uint8_t **v;
  size_t n, cap;
} bufs;

static int bufs_keep(bufs *b, uint8_t *p) {
  if (b->n == b->cap) {
    size_t cap = b->cap ? b->cap * 2 : 16;
    uint8_t **v = immu__realloc(b->v, cap * sizeof *v);
    if (v == NULL) {
      immu__free(p);
      return IMMU_ENOMEM;
    }
    b->v = v;
    b->cap = cap;
  }
  b->v[b->n++] = p;
  return 0;
}

static void bufs_free(bufs *b) {
  for (size_t i = 0; i < b->n; i++)
    immu__free(b->v[i]);
  immu__free(b->v);
  memset(b, 0, sizeof *b);
}

/* Streamed KV pairs of one write. */
typedef struct kv_list {
  immu_db_kv *v;
  size_t n, cap;
  size_t values; /* sum of value lengths */
  bufs mem;
} kv_list;

static void kvl_free(kv_list *l) {
  immu__free(l->v);
  bufs_free(&l->mem);
  memset(l, 0, sizeof *l);
}

typedef struct limits {
  uint32_t key;
  uint32_t value;
} limits;

static void db_limits(immu_db *db, limits *lim) {
  uint32_t entries;
  immu_store_limits(immu_db_store(db), &lim->key, &lim->value, &entries);
}

/* Reads a key message and a value message. Returns 0, or finishes the
 * call and returns nonzero. */
static int read_kv(chunk_in *r, const limits *lim, bufs *mem, size_t *values,
                   immu_db_kv *kv) {
  uint8_t *k = NULL, *v = NULL;
  size_t kl = 0, vl = 0;
  int rc;

  if ((rc = in_msg(r, lim->key, &k, &kl)) != 0) {
    in_fail(r->call, rc, "key");
    return rc;
  }
  if ((rc = bufs_keep(mem, k)) != 0) {
    immu__svc_fail_oom(r->call);
    return rc;
  }
  if ((rc = in_msg(r, lim->value, &v, &vl)) != 0) {
    in_fail(r->call, rc, "value");
    return rc;
  }
  if ((rc = bufs_keep(mem, v)) != 0) {
    immu__svc_fail_oom(r->call);
    return rc;
  }
  *values += vl;
  if (*values > IMMU_SVC_MAX_TX_VALUES_LEN) {
    immu_srv_failf(r->call, IMMU_GRPC_FAILED_PRECONDITION,
                   "max transaction values length exceeded");
    return IMMU_ETOOLARGE;
  }
  kv->key = k;
  kv->key_len = kl;
  kv->value = v;
  kv->value_len = vl;
  return 0;
}

/* Reads (key, value) pairs up to the end of the stream. */
static int read_kvs(chunk_in *r, const limits *lim, kv_list *l) {
  for (;;) {
    int rc = in_at_end(r);
    if (rc == 1)
      return 0;
    if (rc != 0) {
      in_fail(r->call, rc, "chunk");
      return rc;
    }
    if (l->n == l->cap) {
      size_t cap = l->cap ? l->cap * 2 : 8;
      immu_db_kv *v = immu__realloc(l->v, cap * sizeof *v);
      if (v == NULL) {
        immu__svc_fail_oom(r->call);
        return IMMU_ENOMEM;
      }
      l->v = v;
      l->cap = cap;
    }
    if ((rc = read_kv(r, lim, &l->mem, &l->values, &l->v[l->n])) != 0)
      return rc;
    l->n++;
  }
}

/* ------------------------------------------------------------------ */
/* Server-streaming calls                                              */
/* ------------------------------------------------------------------ */

void immu__svc_stream_get(immu_grpc_call *call, void *arg) {
  immu_srv_ctx c;
  Immudb__Schema__KeyRequest *req;
  immu_db_key_req kr;
  immu_db_entry e = {0};
  chunk_out o = {0};
  int rc;

  if (immu_srv_begin(arg, call, IMMU_PERM_READ, 1, &c) != 0)
    return;
  req = (Immudb__Schema__KeyRequest *)immu_srv_unpack(
      call, 0, &immudb__schema__key_request__descriptor);
  if (req == NULL)
    goto out;
  immu__svc_key_req(req, &kr);
  if (kr.key_len > 0 && kr.at_tx == 0 &&
      immu__svc_read_wait(&c, kr.since_tx, kr.no_wait) != 0)
    goto done;
  kr.no_wait = 1;
  if ((rc = immu_db_get(c.db, &kr, &e)) != 0) {
    immu_srv_fail(call, rc);
  } else if (out_open(&o, call) == 0) {
    out_finish(&o, send_kv(&o, &e));
    out_close(&o);
  }
  immu_db_entry_clear(&e);
done:
  protobuf_c_message_free_unpacked(&req->base, NULL);
out:
  immu_srv_end(&c);
}

/* streamScan and streamHistory: (key, value) per entry. */
static void send_entries(immu_grpc_call *call, const immu_db_entries *l) {
  chunk_out o;
  int rc = 0;
  if (out_open(&o, call) != 0)
    return;
  for (size_t i = 0; i < l->n && rc == 0; i++)
    rc = send_kv(&o, &l->v[i]);
  out_finish(&o, rc);
  out_close(&o);
}

void immu__svc_stream_scan(immu_grpc_call *call, void *arg) {
  immu_srv_ctx c;
  Immudb__Schema__ScanRequest *req;
  immu_db_scan_req sr;
  immu_db_entries l = {0};
  int rc;

  if (immu_srv_begin(arg, call, IMMU_PERM_READ, 1, &c) != 0)
    return;
  req = (Immudb__Schema__ScanRequest *)immu_srv_unpack(
      call, 0, &immudb__schema__scan_request__descriptor);
  if (req == NULL)
    goto out;
  immu__svc_scan_req(req, &sr);
  if (immu__svc_read_wait(&c, sr.since_tx, sr.no_wait) != 0)
    goto done;
  sr.no_wait = 1;
  if ((rc = immu_db_scan(c.db, &sr, &l)) != 0)
    immu_srv_fail(call, rc);
  else
    send_entries(call, &l);
  immu_db_entries_clear(&l);
done:
  protobuf_c_message_free_unpacked(&req->base, NULL);
out:
  immu_srv_end(&c);
}

void immu__svc_stream_history(immu_grpc_call *call, void *arg) {
  immu_srv_ctx c;
  Immudb__Schema__HistoryRequest *req;
  immu_db_history_req hr;
  immu_db_entries l = {0};
  int rc;

  if (immu_srv_begin(arg, call, IMMU_PERM_READ, 1, &c) != 0)
    return;
  req = (Immudb__Schema__HistoryRequest *)immu_srv_unpack(
      call, 0, &immudb__schema__history_request__descriptor);
  if (req == NULL)
    goto out;
  immu__svc_history_req(req, &hr);
  if (hr.key_len > 0 && immu__svc_read_wait(&c, hr.since_tx, 0) != 0)
    goto done;
  if ((rc = immu_db_history(c.db, &hr, &l)) != 0)
    immu_srv_fail(call, rc);
  else
    send_entries(call, &l);
  immu_db_entries_clear(&l);
done:
  protobuf_c_message_free_unpacked(&req->base, NULL);
out:
  immu_srv_end(&c);
}

void immu__svc_stream_zscan(immu_grpc_call *call, void *arg) {
  immu_srv_ctx c;
  Immudb__Schema__ZScanRequest *req;
  immu_db_zscan_req zr;
  immu_db_zentries l = {0};
  chunk_out o;
  int rc;

  if (immu_srv_begin(arg, call, IMMU_PERM_READ, 1, &c) != 0)
    return;
  req = (Immudb__Schema__ZScanRequest *)immu_srv_unpack(
      call, 0, &immudb__schema__zscan_request__descriptor);
  if (req == NULL)
    goto out;
  immu__svc_zscan_req(req, &zr);
  if (immu__svc_read_wait(&c, zr.since_tx, zr.no_wait) != 0)
    goto done;
  zr.no_wait = 1;
  if ((rc = immu_db_zscan(c.db, &zr, &l)) != 0) {
    immu_srv_fail(call, rc);
  } else if (out_open(&o, call) == 0) {
    rc = 0;
    for (size_t i = 0; i < l.n && rc == 0; i++) {
      const immu_db_zentry *z = &l.v[i];
      uint64_t bits;
      memcpy(&bits, &z->score, sizeof bits); /* float64bits, BE below */
      if ((rc = send_msg(&o, z->set, z->set_len)) == 0 &&
          (rc = send_msg(&o, z->key, z->key_len)) == 0 &&
          (rc = send_u64(&o, bits)) == 0 && (rc = send_u64(&o, z->at_tx)) == 0)
        rc = send_msg(&o, z->entry.value, z->entry.value_len);
    }
    out_finish(&o, rc);
    out_close(&o);
  }
  immu_db_zentries_clear(&l);
done:
  protobuf_c_message_free_unpacked(&req->base, NULL);
out:
  immu_srv_end(&c);
}

void immu__svc_stream_verifiable_get(immu_grpc_call *call, void *arg) {
  immu_srv_ctx c;
  immu_svc_arena a = IMMU_SVC_ARENA_INIT;
  Immudb__Schema__VerifiableGetRequest *req;
  Immudb__Schema__Signature *sig;
  Immudb__Schema__Entry *ent;
  Immudb__Schema__VerifiableTx *vtx;
  Immudb__Schema__InclusionProof *incl;
  immu_db_verifiable_entry v;
  immu_db_key_req kr;
  chunk_out o;
  int rc;

  memset(&v, 0, sizeof v);
  if (immu_srv_begin(arg, call, IMMU_PERM_READ, 1, &c) != 0)
    return;
  req = (Immudb__Schema__VerifiableGetRequest *)immu_srv_unpack(
      call, 0, &immudb__schema__verifiable_get_request__descriptor);
  if (req == NULL)
    goto out;
  if (req->keyrequest == NULL) {
    immu_srv_failf(call, IMMU_GRPC_INVALID_ARGUMENT,
                   "illegal arguments: empty key");
    goto done;
  }
  immu__svc_key_req(req->keyrequest, &kr);
  if (kr.key_len > 0 && kr.at_tx == 0 &&
      immu__svc_read_wait(&c, kr.since_tx, kr.no_wait) != 0)
    goto done;
  kr.no_wait = 1;
  if ((rc = immu_db_verifiable_get(c.db, &kr, req->provesincetx, &v)) != 0) {
    immu_srv_fail(call, rc);
    goto done;
  }
  if (immu__svc_sign(&c, &a, &v.vtx.proof.target, &sig) != 0)
    goto done;
  ent = immu__svc_pb_entry(&a, &v.entry, 0);
  vtx = immu__svc_pb_vtx(&a, &v.vtx, sig);
  incl = immu__svc_pb_inclusion(&a, &v.inclusion);
  if (ent == NULL || vtx == NULL || incl == NULL) {
    immu__svc_fail_oom(call);
  } else if (out_open(&o, call) == 0) {
    if ((rc = send_pb(&o, &ent->base)) == 0 &&
        (rc = send_pb(&o, &vtx->base)) == 0 &&
        (rc = send_pb(&o, &incl->base)) == 0)
      rc = send_msg(&o, v.entry.value, v.entry.value_len);
    out_finish(&o, rc);
    out_close(&o);
  }
done:
  immu_db_verifiable_entry_clear(&v);
  protobuf_c_message_free_unpacked(&req->base, NULL);
out:
  immu__svc_arena_free(&a);
  immu_srv_end(&c);
}

/* ------------------------------------------------------------------ */
/* Client-streaming calls                                              */
/* ------------------------------------------------------------------ */

static void reply_header(immu_grpc_call *call, immu_svc_arena *a,
                         const immu_tx_header *h) {
  const Immudb__Schema__TxHeader *m = immu__svc_pb_tx_header(a, h);
  if (m == NULL)
    immu__svc_fail_oom(call);
  else
    immu_srv_reply(call, &m->base);
}

/* begin() of svc_kv.c for the streamed writes. */
static int begin_write(immu_server *s, immu_grpc_call *call, immu_srv_ctx *c) {
  if (immu_srv_begin(s, call, IMMU_PERM_READWRITE, 1, c) != 0)
    return -1;
  if (immu__svc_check_writable(c) != 0) {
    immu_srv_end(c);
    return -1;
  }
  return 0;
}

void immu__svc_stream_set(immu_grpc_call *call, void *arg) {
  immu_srv_ctx c;
  immu_svc_arena a = IMMU_SVC_ARENA_INIT;
  immu_tx_header hdr;
  chunk_in r;
  kv_list l = {0};
  limits lim;
  int rc;

  if (begin_write(arg, call, &c) != 0)
    return;
  db_limits(c.db, &lim);
  in_open(&r, call);
  if (read_kvs(&r, &lim, &l) == 0) {
    if ((rc = immu_db_set(c.db, l.v, l.n, 1, &hdr)) != 0)
      immu_srv_fail(call, rc);
    else if (immu__svc_wait_indexed(&c, hdr.id) == 0)
      reply_header(call, &a, &hdr);
  }
  in_close(&r);
  kvl_free(&l);
  immu__svc_arena_free(&a);
  immu_srv_end(&c);
}

/* The first message(s) of streamVerifiableSet: proveSinceTx. */
static int read_prove_since(chunk_in *r, uint64_t *out) {
  static const char fake_key[] = "ProveSinceTx"; /* v0.9 - v1.1 clients */
  uint8_t *m = NULL;
  size_t n = 0;
  int rc;

  if ((rc = in_msg(r, MAX_SMALL_MSG, &m, &n)) != 0) {
    in_fail(r->call, rc, "proveSinceTx");
    return rc;
  }
  if (n == sizeof fake_key - 1 && memcmp(m, fake_key, n) == 0) {
    immu__free(m);
    if ((rc = in_msg(r, MAX_SMALL_MSG, &m, &n)) != 0) {
      in_fail(r->call, rc, "proveSinceTx");
      return rc;
    }
  }
  if (n != 8) {
    immu__free(m);
    immu_srv_failf(r->call, IMMU_GRPC_INVALID_ARGUMENT,
                   "illegal arguments: the stream must start with "
                   "proveSinceTx as an 8-byte big-endian number");
    return IMMU_EINVAL;
  }
  *out = immu__get_u64(m);
  immu__free(m);
  return 0;
}

void immu__svc_stream_verifiable_set(immu_grpc_call *call, void *arg) {
  immu_srv_ctx c;
  immu_svc_arena a = IMMU_SVC_ARENA_INIT;
  immu_db_verifiable_tx v = {0};
  Immudb__Schema__Signature *sig;
  uint64_t prove_since = 0;
  chunk_in r;
  kv_list l = {0};
  limits lim;
  int rc;

  if (begin_write(arg, call, &c) != 0)
    return;
  db_limits(c.db, &lim);
  in_open(&r, call);
  if (read_prove_since(&r, &prove_since) == 0 && read_kvs(&r, &lim, &l) == 0) {
    if ((rc = immu_db_verifiable_set(c.db, l.v, l.n, 1, prove_since, &v)) != 0)
      immu_srv_fail(call, rc);
    else if (immu__svc_wait_indexed(&c, v.tx.header.id) == 0 &&
             immu__svc_sign(&c, &a, &v.proof.target, &sig) == 0) {
      const Immudb__Schema__VerifiableTx *m = immu__svc_pb_vtx(&a, &v, sig);
      if (m == NULL)
        immu__svc_fail_oom(call);
      else
        immu_srv_reply(call, &m->base);
    }
  }
  immu_db_verifiable_tx_clear(&v);
  in_close(&r);
  kvl_free(&l);
  immu__svc_arena_free(&a);
  immu_srv_end(&c);
}

/* One streamed ExecAll operation into ops[*n]. Returns 0, or finishes the
 * call and returns nonzero. */
static int read_op(chunk_in *r, const limits *lim, bufs *mem, size_t *values,
                   immu_db_op *op, Immudb__Schema__ZAddRequest **zadd) {
  uint8_t *t = NULL, *m = NULL;
  size_t tn = 0, mn = 0;
  int rc, kind;

  if ((rc = in_msg(r, MAX_SMALL_MSG, &t, &tn)) != 0) {
    in_fail(r->call, rc, "operation kind");
    return rc;
  }
  kind = tn == 1 ? t[0] : -1;
  immu__free(t);
  memset(op, 0, sizeof *op);
  switch (kind) {
  case TOP_KV:
    op->kind = IMMU_DB_OP_KV;
    return read_kv(r, lim, mem, values, &op->u.kv);
  case TOP_ZADD:
    if ((rc = in_msg(r, MAX_SMALL_MSG, &m, &mn)) != 0) {
      in_fail(r->call, rc, "zAdd request");
      return rc;
    }
    *zadd = (Immudb__Schema__ZAddRequest *)protobuf_c_message_unpack(
        &immudb__schema__zadd_request__descriptor, NULL, mn, m);
    immu__free(m);
    if (*zadd == NULL) {
      immu_srv_failf(r->call, IMMU_GRPC_INVALID_ARGUMENT,
                     "unable to reassemble the ExecAll message");
      return IMMU_EPROTO;
    }
    op->kind = IMMU_DB_OP_ZADD;
    immu__svc_zadd_req(*zadd, &op->u.zadd);
    return 0;
  case TOP_REF:
    immu_srv_failf(r->call, IMMU_GRPC_UNIMPLEMENTED,
                   "reference operation is not yet implemented");
    return IMMU_EUNSUPPORTED;
  default:
    immu_srv_failf(r->call, IMMU_GRPC_INVALID_ARGUMENT,
                   "illegal arguments: unknown ExecAll operation kind");
    return IMMU_EINVAL;
  }
}

void immu__svc_stream_exec_all(immu_grpc_call *call, void *arg) {
  immu_srv_ctx c;
  immu_svc_arena a = IMMU_SVC_ARENA_INIT;
  immu_tx_header hdr;
  immu_db_op *ops = NULL;
  Immudb__Schema__ZAddRequest **zadds = NULL;
  size_t n = 0, cap = 0, values = 0;
  bufs mem = {0};
  chunk_in r;
  limits lim;
  int rc;

  if (begin_write(arg, call, &c) != 0)
    return;
  db_limits(c.db, &lim);
  in_open(&r, call);
  for (;;) {
    rc = in_at_end(&r);
    if (rc == 1)
      break;
    if (rc != 0) {
      in_fail(call, rc, "chunk");
      goto out;
    }
    if (n == cap) {
      size_t ncap = cap ? cap * 2 : 8;
      immu_db_op *o2 = immu__realloc(ops, ncap * sizeof *o2);
      Immudb__Schema__ZAddRequest **z2;
      if (o2 != NULL)
        ops = o2;
      z2 = o2 ? immu__realloc(zadds, ncap * sizeof *z2) : NULL;
      if (z2 == NULL) {
        immu__svc_fail_oom(call);
        goto out;
      }
      zadds = z2;
      cap = ncap;
    }
    zadds[n] = NULL;
    rc = read_op(&r, &lim, &mem, &values, &ops[n], &zadds[n]);
    n++; /* zadds[n-1] is released below even on failure */
    if (rc != 0)
      goto out;
  }
  /* immudb's StreamExecAll waits for the index (no noWait on the wire) */
  if (immu__svc_wait_last(&c) != 0)
    goto out;
  if ((rc = immu_db_exec_all(c.db, ops, n, 1, &hdr)) != 0)
    immu_srv_fail(call, rc);
  else if (immu__svc_wait_indexed(&c, hdr.id) == 0)
    reply_header(call, &a, &hdr);
out:
  for (size_t i = 0; i < n; i++)
    if (zadds[i] != NULL)
      protobuf_c_message_free_unpacked(&zadds[i]->base, NULL);
  immu__free(zadds);
  immu__free(ops);
  bufs_free(&mem);
  in_close(&r);
  immu__svc_arena_free(&a);
  immu_srv_end(&c);
}
