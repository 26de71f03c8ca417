/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Internal header of the client SDK (client.c, client_state.c): the
 * verification functions (pure: protobuf-c reply in, verdict and new state
 * out, no I/O) and the trusted-state store. Exposed for the tests
 * (tests/client/test_client_verify.c) and the fuzz target
 * (tests/fuzz/fuzz_client_verify.c), which drive them with replies built
 * from the engine or from hostile bytes.
 *
 * Verification rules (immudb-crypto.md "the spec"; details at each
 * function):
 *   V1  Every digest field of a header or proof is exactly 32 bytes; a
 *       header has version 0 or 1, 1 <= nentries (<= 65535 for v0), and
 *       tx metadata only with version 1 (spec 3, 11.12).
 *   V2  A returned Tx carries all header.nentries entries; their digests
 *       (formula of the header's version, spec 2) hash to header.eH (spec
 *       4). Hence every entry handed to the caller is proven by the Alh.
 *   V3  The dual proof verifies (spec 6.4, linear-advance check included)
 *       between the trusted state and the tx, oriented by their ids; its
 *       header on the tx's side must be the tx's header (same Alh).
 *   V4  With a verifier, the signature of {db, target id, target Alh}
 *       verifies (spec 8).
 *   V5  Writes: the tx holds exactly the expected entries, in order, with
 *       no KV metadata, and is newer than the trusted state.
 *   V6  Reads: the entry digest rebuilt from the *requested* key and the
 *       returned value is proven in its tx by the server's inclusion proof
 *       against the (V2-checked) Eh; with at_tx the tx must be at_tx.
 */
#ifndef IMMU_CLIENT_CLIENT_INT_H
#define IMMU_CLIENT_CLIENT_INT_H

#include <stddef.h>
#include <stdint.h>

#include "immudb/client.h"
#include "immudb/crypto.h"
#include "schema.pb-c.h"

/* The allocator of every protobuf-c message the SDK unpacks (immu__malloc
 * underneath); messages handed to the SDK to free (immu__cli_fetch_entry_fn
 * replies) must come from it. */
extern ProtobufCAllocator immu__cli_pb_allocator;

/* A trusted state. tx_id == 0 means "none yet". */
typedef struct immu__cli_state {
  char db[IMMU_DB_NAME_MAX + 1];
  uint64_t tx_id;
  immu_digest alh;
  uint8_t sig[IMMU_SIG_MAX];
  size_t sig_len;
} immu__cli_state;

/* Context of one verification. All borrowed. */
typedef struct immu__cli_vctx {
  const char *db;                 /* database name (what the server signs) */
  const immu__cli_state *trusted; /* NULL or tx_id 0: no trusted state */
  const immu_verifier *verifier;  /* NULL: signatures are not checked */
  char *err;                      /* message buffer (may be NULL) */
  size_t errlen;
} immu__cli_vctx;

/* One entry a write must have produced: store key and H(stored value).
 * |key| is owned by the expectation (immu__cli_expect_clear). */
typedef struct immu__cli_expect {
  uint8_t *key;
  size_t klen;
  immu_digest hval;
} immu__cli_expect;

/* Builders of write expectations (spec 7.2). Return 0 or IMMU_ENOMEM /
 * IMMU_EINVAL (empty key, NaN score). */
int immu__cli_expect_kv(immu__cli_expect *e, const uint8_t *key, size_t klen,
                        const uint8_t *val, size_t vlen);
int immu__cli_expect_ref(immu__cli_expect *e, const uint8_t *key, size_t klen,
                         const uint8_t *ref, size_t rlen, uint64_t at_tx);
int immu__cli_expect_zadd(immu__cli_expect *e, const uint8_t *set, size_t slen,
                          double score, const uint8_t *key, size_t klen,
                          uint64_t at_tx);
void immu__cli_expect_clear(immu__cli_expect *e);

/* Header and dual proof from their proto forms (rule V1). The dual proof's
 * arrays are allocated with immu__malloc: free with immu_dual_proof_free.
 * Return 0, IMMU_EVERIFY (malformed; message in err) or IMMU_ENOMEM. */
int immu__cli_header_from_pb(const Immudb__Schema__TxHeader *m,
                             immu_tx_header *out, char *err, size_t errlen);
int immu__cli_dual_proof_from_pb(const Immudb__Schema__DualProof *m,
                                 immu_dual_proof *out, char *err,
                                 size_t errlen);

/* Tx from its proto form with rule V2 (entries vs Eh); *out owned by the
 * caller (immu_client_tx_clear). Values sent in TxEntry.value must hash to
 * hValue. Returns 0, IMMU_EVERIFY or IMMU_ENOMEM. */
int immu__cli_tx_from_pb(const Immudb__Schema__Tx *m, immu_client_tx *out,
                         char *err, size_t errlen);

/* VerifiableSet / SetReference / ZAdd reply (rules V1-V5): |exp| are the
 * |nexp| entries the request must have produced. On success *newst is the
 * new trusted state ({v->db, tx id, Alh, signature}) and *hdr (may be NULL)
 * the proven header. Returns 0, IMMU_EVERIFY or IMMU_ENOMEM. */
int immu__cli_verify_write(const Immudb__Schema__VerifiableTx *m,
                           const immu__cli_vctx *v, const immu__cli_expect *exp,
                           size_t nexp, immu__cli_state *newst,
                           immu_tx_header *hdr);

/* VerifiableTxById reply for tx |tx_id| (rules V1-V4). *out (may be NULL)
 * receives the proven tx. */
int immu__cli_verify_tx_by_id(const Immudb__Schema__VerifiableTx *m,
                              const immu__cli_vctx *v, uint64_t tx_id,
                              immu__cli_state *newst, immu_client_tx *out);

/* VerifiableGet reply for user key |key| (rules V1-V4, V6). |at_tx| is the
 * request's atTx (0 = any). On success *out (may be NULL) holds the proven
 * entry; for a reference, only the reference entry is proven here: see
 * immu__cli_check_ref_target / immu__cli_verified_get_flow. */
int immu__cli_verify_get(const Immudb__Schema__VerifiableEntry *m,
                         const immu__cli_vctx *v, const uint8_t *key,
                         size_t klen, uint64_t at_tx, immu__cli_state *newst,
                         immu_client_entry *out);

/* Second step of a verified get of a reference: |target| is the proven
 * plain entry of the referenced key read at ref->tx. Requires the same key,
 * tx and value, no further reference, and for a bound reference tx ==
 * referenced_by.at_tx. Returns 0 or IMMU_EVERIFY. */
int immu__cli_check_ref_target(const immu_client_entry *ref,
                               const immu_client_entry *target, char *err,
                               size_t errlen);

/* Performs one VerifiableGet(key, at_tx, since_tx, at_revision,
 * proveSinceTx) for immu__cli_verified_get_flow; *out is a reply unpacked
 * with immu__cli_pb_allocator, which the flow frees. Returns 0 or an error
 * (with a message in err). */
typedef int (*immu__cli_fetch_entry_fn)(
    void *arg, const immu_db_key_req *req, uint64_t prove_since_tx,
    Immudb__Schema__VerifiableEntry **out, char *err, size_t errlen);

/* The whole verified get: fetch + immu__cli_verify_get, and for a reference
 * a second fetch of the referenced key at the value's tx (proveSinceTx =
 * the state after the first step) + immu__cli_check_ref_target. *newst is
 * the state after the last step. */
int immu__cli_verified_get_flow(const immu__cli_vctx *v,
                                const immu_db_key_req *req,
                                immu__cli_fetch_entry_fn fetch, void *arg,
                                immu__cli_state *newst,
                                immu_client_entry *out);

/* CurrentState reply used as the first trusted state (TOFU): db must be
 * |db|, txHash 32 bytes, and with a verifier the signature must verify.
 * Returns 0 or IMMU_EVERIFY. */
int immu__cli_verify_state_reply(const Immudb__Schema__ImmutableState *m,
                                 const char *db, const immu_verifier *v,
                                 immu__cli_state *out, char *err,
                                 size_t errlen);

/* Entry conversion (not verified): proto Entry -> immu_client_entry. */
int immu__cli_entry_from_pb(const Immudb__Schema__Entry *m,
                            immu_client_entry *out);

/* ------------------------------------------------------------------ */
/* Trusted-state store (client_state.c)                                */
/* ------------------------------------------------------------------ */

typedef struct immu__cli_store immu__cli_store;

/* Opens the store of server |server_id| (a file-name-safe token, see
 * immu__cli_server_id) under |dir|, creating the directory (0700) if
 * needed; |dir| NULL = in-memory store. Caller frees with
 * immu__cli_store_free. Returns 0, IMMU_EINVAL, IMMU_ENOMEM or -errno. */
int immu__cli_store_open(const char *dir, const char *server_id,
                         immu__cli_store **out, char *err, size_t errlen);
void immu__cli_store_free(immu__cli_store *s);

/* Exclusive access to the store for a whole verified call: a mutex for the
 * threads of this process, then flock(LOCK_EX) on state-<id>.lock (opened
 * at each lock, so forked children never share the lock). Returns 0 or
 * -errno. */
int immu__cli_store_lock(immu__cli_store *s, char *err, size_t errlen);
void immu__cli_store_unlock(immu__cli_store *s);

/* Trusted state of |db| (lock held). Returns 0, IMMU_ENOTFOUND,
 * IMMU_ECORRUPT (damaged file: message names it), or -errno. */
int immu__cli_store_get(immu__cli_store *s, const char *db,
                        immu__cli_state *out, char *err, size_t errlen);

/* Stores |st| (lock held) with the merge rule: a database's state never
 * moves backwards. Stored tx > st->tx_id: the stored one is kept (returns
 * 0); equal ids with different hashes: IMMU_EVERIFY (the server forked);
 * otherwise replaced. The file is rewritten atomically (temp file, fsync,
 * rename, fsync dir). Returns 0, IMMU_EVERIFY, IMMU_ECORRUPT, IMMU_ENOMEM,
 * -errno. */
int immu__cli_store_put(immu__cli_store *s, const immu__cli_state *st,
                        char *err, size_t errlen);

/* Identity pinning of address host:port under |dir| (no-op returning 0
 * when dir is NULL): records the first |uuid| (may be NULL) and |key_hash|
 * (may be NULL) seen; a different one later is IMMU_EVERIFY with a message
 * naming both values and the file. Returns 0, IMMU_EVERIFY, IMMU_ECORRUPT,
 * IMMU_ENOMEM, -errno. */
int immu__cli_identity_pin(const char *dir, const char *host, int port,
                           const char *uuid, const immu_digest *key_hash,
                           char *err, size_t errlen);

/* The store name of a server: "key-<hex sha256>" when |key_hash| is given,
 * else "uuid-<hex of uuid>". Writes at most |cap| bytes (NUL included).
 * Returns 0 or IMMU_EINVAL (neither given, or too small). */
int immu__cli_server_id(const char *uuid, const immu_digest *key_hash,
                        char *out, size_t cap);

#endif /* IMMU_CLIENT_CLIENT_INT_H */
