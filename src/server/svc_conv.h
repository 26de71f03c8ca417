/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Internal header of the data half of ImmuService (svc_kv.c, svc_stream.c,
 * svc_conv.c):
 *
 *  1. A reply arena: every protobuf-c message a handler builds for one
 *     reply (and the arrays of pointers they hold) comes from one arena and
 *     is released at once after packing.
 *  2. Conversions between the KV layer's types (include/immudb/db.h) and
 *     the generated protobuf-c messages (proto/schema.proto):
 *       - *_to_pb: reply messages. Byte fields BORROW the memory of the
 *         immu_db_* source (keys, values, digests): pack the reply before
 *         clearing the source.
 *       - *_from_pb for requests: fill immu_db_* request structs whose
 *         pointers borrow the unpacked protobuf-c message.
 *       - header / dual proof *_from_pb: the client-side direction, for
 *         verifiers (tests, the C client): they validate that every digest
 *         field is exactly 32 bytes (immudb-crypto.md 3.5, 11.12).
 *  3. Helpers shared by the unary handlers (svc_kv.c) and the stream
 *     handlers (svc_stream.c), and the stream handlers themselves.
 *
 * Wire choices that keep replies decodable by immudb-node 1.1.1 (its proto
 * is immudb v1.0's, immudb-api.md section 2 "[n111]") and by HEAD clients:
 *   - TxHeader.version (8) is 0, the proto3 default, hence absent; the
 *     tx-level metadata (9) is never sent (version 0 has none).
 *   - TxEntry carries key (1), hValue (2) and vLen (3); field 3 is vOff
 *     (int64, unused) for 1.1.1, which never reads vLen. Field 4 (KV
 *     metadata at HEAD, vLen in 1.1.1) is never sent, nor is value (5).
 *   - Every digest (prevAlh, eH, blRoot, targetBlTxAlh, proof terms,
 *     txHash, hValue) is sent as exactly 32 bytes, zeros included.
 *   - Entry / Reference metadata (KV metadata) is never sent: our
 *     transactions are header version 0, which cannot carry it.
 *   - DualProof.LinearAdvanceProof (8) is sent only when the proof has one
 *     (never with BlTxID = ID - 1); old clients skip the unknown field.
 */
#ifndef IMMU_SERVER_SVC_CONV_H
#define IMMU_SERVER_SVC_CONV_H

#include <stddef.h>
#include <stdint.h>

#include "immudb/crypto.h"
#include "immudb/db.h"
#include "schema.pb-c.h"
#include "server/svc.h"

/* ------------------------------------------------------------------ */
/* Reply arena                                                         */
/* ------------------------------------------------------------------ */

typedef struct immu_svc_arena {
  void *head_; /* private: list of blocks */
} immu_svc_arena;

#define IMMU_SVC_ARENA_INIT                                                    \
  { NULL }

/* Returns |n| zeroed bytes aligned for any type, valid until
 * immu__svc_arena_free; NULL when out of memory. */
void *immu__svc_arena_alloc(immu_svc_arena *a, size_t n);
/* Releases every allocation of |a| and leaves it empty (reusable). */
void immu__svc_arena_free(immu_svc_arena *a);

/* ------------------------------------------------------------------ */
/* Replies (immu_db -> protobuf-c). NULL means out of memory.          */
/* ------------------------------------------------------------------ */

/* TxHeader: digests borrowed from |h| (always 32 bytes each). */
Immudb__Schema__TxHeader *immu__svc_pb_tx_header(immu_svc_arena *a,
                                                 const immu_tx_header *h);
/* Tx{header, entries: TxEntry{key, hValue, vLen}}. */
Immudb__Schema__Tx *immu__svc_pb_tx(immu_svc_arena *a, const immu_db_tx *tx);
Immudb__Schema__TxList *immu__svc_pb_tx_list(immu_svc_arena *a,
                                             const immu_db_tx_list *l);
Immudb__Schema__DualProof *immu__svc_pb_dual_proof(immu_svc_arena *a,
                                                   const immu_dual_proof *p);
/* Signature{publicKey, signature}; |sig| and |pubkey| borrowed. */
Immudb__Schema__Signature *immu__svc_pb_signature(immu_svc_arena *a,
                                                  const uint8_t *sig,
                                                  size_t sig_len,
                                                  const uint8_t *pubkey);
/* VerifiableTx{tx, dualProof, signature}; |sig| may be NULL. */
Immudb__Schema__VerifiableTx *immu__svc_pb_vtx(immu_svc_arena *a,
                                               const immu_db_verifiable_tx *v,
                                               Immudb__Schema__Signature *sig);
/* Entry{tx, key, value, referencedBy, revision}. With |with_value| 0 the
 * value is left out (streamVerifiableGet sends it separately). */
Immudb__Schema__Entry *
immu__svc_pb_entry(immu_svc_arena *a, const immu_db_entry *e, int with_value);
Immudb__Schema__Entries *immu__svc_pb_entries(immu_svc_arena *a,
                                              const immu_db_entries *l);
Immudb__Schema__ZEntry *immu__svc_pb_zentry(immu_svc_arena *a,
                                            const immu_db_zentry *z);
Immudb__Schema__ZEntries *immu__svc_pb_zentries(immu_svc_arena *a,
                                                const immu_db_zentries *l);
Immudb__Schema__InclusionProof *
immu__svc_pb_inclusion(immu_svc_arena *a, const immu_db_inclusion_proof *p);
Immudb__Schema__VerifiableEntry *
immu__svc_pb_ventry(immu_svc_arena *a, const immu_db_verifiable_entry *v,
                    Immudb__Schema__Signature *sig);
/* ImmutableState{db, txId, txHash, signature}; |db| and |st| borrowed. */
Immudb__Schema__ImmutableState *
immu__svc_pb_state(immu_svc_arena *a, const char *db, const immu_db_state *st,
                   Immudb__Schema__Signature *sig);

/* ------------------------------------------------------------------ */
/* Requests (protobuf-c -> immu_db). The results borrow |m|.           */
/* ------------------------------------------------------------------ */

void immu__svc_key_req(const Immudb__Schema__KeyRequest *m,
                       immu_db_key_req *out);
void immu__svc_scan_req(const Immudb__Schema__ScanRequest *m,
                        immu_db_scan_req *out);
void immu__svc_history_req(const Immudb__Schema__HistoryRequest *m,
                           immu_db_history_req *out);
void immu__svc_ref_req(const Immudb__Schema__ReferenceRequest *m,
                       immu_db_ref_req *out);
void immu__svc_zadd_req(const Immudb__Schema__ZAddRequest *m,
                        immu_db_zadd_req *out);
void immu__svc_zscan_req(const Immudb__Schema__ZScanRequest *m,
                         immu_db_zscan_req *out);
/* Refusal of KV metadata that asks for something (deleted, expiration,
 * nonIndexable): header version 0, which we write, cannot carry it. The
 * text is immudb's (store.ErrMetadataUnsupported). */
#define IMMU_SVC_MD_UNSUPPORTED                                                \
  "metadata is unsupported when in 1.1 compatibility mode"

/* The KVs of |m| as an array from |a| (*n may be 0). Returns 0,
 * IMMU_ENOMEM, or IMMU_EUNSUPPORTED (IMMU_SVC_MD_UNSUPPORTED). */
int immu__svc_kvs(immu_svc_arena *a, const Immudb__Schema__SetRequest *m,
                  immu_db_kv **out, size_t *n);
/* The operations of |m|. Returns 0, IMMU_ENOMEM, or IMMU_EINVAL for an
 * operation with no kind set (message in |errbuf|). */
int immu__svc_ops(immu_svc_arena *a, const Immudb__Schema__ExecAllRequest *m,
                  immu_db_op **out, size_t *n, char *errbuf, size_t errcap);

/* ------------------------------------------------------------------ */
/* Client-side direction (verifiers)                                   */
/* ------------------------------------------------------------------ */

/* Header from its proto form. Returns 0, or IMMU_EINVAL when a digest is
 * not exactly 32 bytes, nentries is negative, the version is not 0 or 1,
 * or the tx metadata is not representable. |m| NULL is IMMU_EINVAL. */
int immu__svc_tx_header_from_pb(const Immudb__Schema__TxHeader *m,
                                immu_tx_header *out);
/* Dual proof from its proto form; the digest arrays are allocated from
 * |a|. Returns 0, IMMU_EINVAL (missing header / linear proof, a term that
 * is not 32 bytes) or IMMU_ENOMEM. */
int immu__svc_dual_proof_from_pb(immu_svc_arena *a,
                                 const Immudb__Schema__DualProof *m,
                                 immu_dual_proof *out);

/* ------------------------------------------------------------------ */
/* Shared handler helpers (svc_kv.c)                                   */
/* ------------------------------------------------------------------ */

/* Waits (polling immu_grpc_call_cancelled) until the selected database's
 * index covers tx |tx|. Returns 0, or finishes the call (DEADLINE_EXCEEDED
 * / CANCELLED / the engine error) and returns nonzero. */
int immu__svc_wait_indexed(immu_srv_ctx *c, uint64_t tx);
/* The wait a read with (since_tx, no_wait) needs before the KV call, done
 * here so that it is bounded by the call: nothing when |no_wait|; else the
 * index must reach since_tx, or the last committed tx when 0. A since_tx
 * beyond the last tx is left to the KV layer to refuse. */
int immu__svc_read_wait(immu_srv_ctx *c, uint64_t since_tx, int no_wait);
/* Waits like immu__svc_wait_indexed for the last committed tx: what immudb
 * does before the index reads of SetReference, ZAdd, ExecAll and Count. */
int immu__svc_wait_last(immu_srv_ctx *c);
/* Finishes the call with PERMISSION_DENIED and returns nonzero when the
 * selected database may not be written from outside (systemdb). */
int immu__svc_check_writable(immu_srv_ctx *c);
/* Signs {db, h->id, Alh(h)} when the server has a key: *out is the
 * Signature (from |a|) or NULL without a key. Returns 0, or finishes the
 * call and returns nonzero. */
int immu__svc_sign(immu_srv_ctx *c, immu_svc_arena *a, const immu_tx_header *h,
                   Immudb__Schema__Signature **out);
/* Finishes the call with RESOURCE_EXHAUSTED "out of memory" (a reply or a
 * request conversion could not be allocated). */
void immu__svc_fail_oom(immu_grpc_call *call);

/* ------------------------------------------------------------------ */
/* Stream handlers (svc_stream.c); arg is the immu_server*             */
/* ------------------------------------------------------------------ */

/* Payload bytes per Chunk we send (immudb's DefaultChunkSize, 64 KiB,
 * the 8-byte length prefix included in the first chunk of a message). */
#define IMMU_SVC_CHUNK_SIZE (64u * 1024u)
/* Sum of the values of one streamed write (immudb's MaxTxValueLen). */
#define IMMU_SVC_MAX_TX_VALUES_LEN (32u * 1024u * 1024u)

void immu__svc_stream_get(immu_grpc_call *call, void *arg);
void immu__svc_stream_set(immu_grpc_call *call, void *arg);
void immu__svc_stream_verifiable_get(immu_grpc_call *call, void *arg);
void immu__svc_stream_verifiable_set(immu_grpc_call *call, void *arg);
void immu__svc_stream_scan(immu_grpc_call *call, void *arg);
void immu__svc_stream_zscan(immu_grpc_call *call, void *arg);
void immu__svc_stream_history(immu_grpc_call *call, void *arg);
void immu__svc_stream_exec_all(immu_grpc_call *call, void *arg);

#endif
