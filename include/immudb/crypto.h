/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The cryptographic core of libimmudb: pure functions on byte buffers that
 * reproduce immudb's hashes and proofs byte for byte
 * (../shared/spec/immudb-crypto.md, "the spec" below).
 *
 * Nothing here does I/O except through the callbacks the caller supplies
 * (ahtree node storage, tx header lookup). Unless stated otherwise every
 * function is thread-safe for distinct objects and reentrant.
 *
 * Conventions: out-parameters come last; inputs are borrowed; a function
 * that returns a negative code leaves its out-parameters unspecified unless
 * stated otherwise.
 */
#ifndef IMMUDB_CRYPTO_H
#define IMMUDB_CRYPTO_H

#include <stddef.h>
#include <stdint.h>

#include "immudb/err.h"

#ifdef __cplusplus
extern "C" {
#endif

#define IMMU_DIGEST_LEN 32

/* Upper bound on the terms of any tree proof (htree or ahtree) over at most
 * 2^64 leaves, consistency proofs with their power-of-two prefix included. */
#define IMMU_PROOF_MAX_TERMS 130

/* Largest KV-metadata string (spec 2.3) and tx-metadata string (spec 3.4). */
#define IMMU_KV_MD_MAX 11
#define IMMU_TX_MD_MAX 270

/* Entries per tx with header version 0: NEntries is a u16 there (spec 11.3). */
#define IMMU_V0_MAX_ENTRIES 65535u

typedef struct immu_digest {
  uint8_t b[IMMU_DIGEST_LEN];
} immu_digest;

/* ------------------------------------------------------------------ */
/* SHA-256                                                             */
/* ------------------------------------------------------------------ */

/* One-shot SHA-256 of |len| bytes at |data| (NULL allowed when len is 0). */
void immu_sha256(const void *data, size_t len, immu_digest *out);

/* SHA-256 of the concatenation of |n| buffers. */
typedef struct immu_buf {
  const void *ptr;
  size_t len;
} immu_buf;
void immu_sha256v(const immu_buf *parts, size_t n, immu_digest *out);

/* Number of SHA-256 compressions requested (one per immu_sha256* call) by the
 * calling thread since it started. Used by benchmarks and tests to prove the
 * hash cost of an operation. */
uint64_t immu_hash_count(void);

/* H("") = e3b0c442...: PrevAlh of tx 1 and the state hash of an empty db. */
extern const immu_digest immu_empty_digest;
/* 32 zero bytes: BlRoot when BlTxID is 0. */
extern const immu_digest immu_zero_digest;

/* Constant-time equality of two digests: 1 if equal, 0 otherwise. */
int immu_digest_eq(const immu_digest *a, const immu_digest *b);

/* Writes 64 lowercase hex characters and a NUL into |out| (65 bytes). */
void immu_digest_hex(const immu_digest *d, char out[65]);

/* Parses exactly 64 hex characters. Returns 0 or IMMU_EINVAL. */
int immu_digest_from_hex(const char *hex, immu_digest *out);

/* ------------------------------------------------------------------ */
/* KV-layer encodings (spec 7.2)                                       */
/* ------------------------------------------------------------------ */

#define IMMU_PREFIX_SET 0x00u
#define IMMU_PREFIX_ZSET 0x01u
#define IMMU_PREFIX_SQL 0x02u
#define IMMU_VALUE_PLAIN 0x00u
#define IMMU_VALUE_REF 0x01u

/* Byte lengths of the encodings, so callers can size buffers. */
#define IMMU_ENC_KEY_LEN(klen) ((size_t)(klen) + 1u)
#define IMMU_ENC_VALUE_LEN(vlen) ((size_t)(vlen) + 1u)
#define IMMU_ENC_REF_VALUE_LEN(rlen) ((size_t)(rlen) + 10u)
#define IMMU_ENC_ZADD_KEY_LEN(slen, klen) ((size_t)(slen) + (size_t)(klen) + 34u)

/* Each encoder writes into |out| (capacity |cap|) and stores the length in
 * |*out_len|. Returns 0, or IMMU_ETOOLARGE if |cap| is too small. */

/* 0x00 || key */
int immu_enc_key(const uint8_t *key, size_t klen, uint8_t *out, size_t cap,
                 size_t *out_len);
/* 0x00 || value */
int immu_enc_value(const uint8_t *val, size_t vlen, uint8_t *out, size_t cap,
                   size_t *out_len);
/* 0x01 || u64(atTx) || 0x00 || refKey */
int immu_enc_ref_value(const uint8_t *ref_key, size_t rlen, uint64_t at_tx,
                       uint8_t *out, size_t cap, size_t *out_len);
/* 0x01 || u64(len(set)) || set || u64(bits(score)) || u64(klen+1) || 0x00 ||
 * key || u64(atTx). |key| is the *user* key; the 0x00 prefix is added. */
int immu_enc_zadd_key(const uint8_t *set, size_t slen, double score,
                      const uint8_t *key, size_t klen, uint64_t at_tx,
                      uint8_t *out, size_t cap, size_t *out_len);

/* Decodes a stored reference value (0x01 || u64 atTx || 0x00 || refKey).
 * |*ref_key| points into |val| (borrowed). Returns 0 or IMMU_ECORRUPT. */
int immu_dec_ref_value(const uint8_t *val, size_t vlen, uint64_t *at_tx,
                       const uint8_t **ref_key, size_t *rlen);

/* Decodes a ZAdd store key. |*set| and |*enc_key| point into |key|
 * (enc_key includes its 0x00 prefix). Returns 0 or IMMU_ECORRUPT. */
int immu_dec_zadd_key(const uint8_t *key, size_t klen, const uint8_t **set,
                      size_t *slen, double *score, const uint8_t **enc_key,
                      size_t *eklen, uint64_t *at_tx);

/* ------------------------------------------------------------------ */
/* Entry digests (spec 2)                                              */
/* ------------------------------------------------------------------ */

/* Digest of one entry as its transaction's header |version| dictates:
 *   version 0: H(key || hval)
 *   version 1: H(u16(mdlen) || md || u16(klen) || key || hval)
 * |key| is the store key (with its KV prefix). |md| may be NULL when mdlen
 * is 0. Returns 0; IMMU_EINVAL for an unknown version, a key longer than
 * 65535 bytes with version 1, metadata longer than IMMU_KV_MD_MAX, or
 * non-empty metadata with version 0. */
int immu_entry_digest(unsigned version, const uint8_t *key, size_t klen,
                      const uint8_t *md, size_t mdlen, const immu_digest *hval,
                      immu_digest *out);

/* ------------------------------------------------------------------ */
/* Transaction header, innerHash, Alh (spec 3)                         */
/* ------------------------------------------------------------------ */

typedef struct immu_tx_header {
  uint64_t id;
  int64_t ts; /* unix seconds */
  uint64_t bl_tx_id;
  immu_digest bl_root;  /* zeros when bl_tx_id == 0 */
  immu_digest prev_alh; /* H("") for tx 1 */
  uint32_t version;     /* 0 or 1 */
  uint32_t nentries;
  immu_digest eh;
  uint32_t md_len; /* tx metadata (version 1 only) */
  uint8_t md[IMMU_TX_MD_MAX];
} immu_tx_header;

/* innerHash of |h| (spec 3.2). Returns 0, or IMMU_EINVAL for an unknown
 * version, nentries > 65535 with version 0, or metadata with version 0. */
int immu_tx_inner_hash(const immu_tx_header *h, immu_digest *out);

/* Alh = H(u64(id) || prevAlh || innerHash) (spec 3.3). Errors as above. */
int immu_tx_alh(const immu_tx_header *h, immu_digest *out);

/* advance(alh, txID, inner) = H(u64(txID) || alh || inner) (spec 6). */
void immu_alh_advance(const immu_digest *alh, uint64_t tx_id,
                      const immu_digest *inner, immu_digest *out);

/* ------------------------------------------------------------------ */
/* htree: the per-tx Merkle tree over entry digests (spec 4)           */
/* ------------------------------------------------------------------ */

/* Root (Eh) over |n| >= 1 entry digests. O(n) hashes, no allocation.
 * Returns 0 or IMMU_EINVAL when n == 0. */
int immu_htree_root(const immu_digest *digests, size_t n, immu_digest *root);

/* Inclusion proof of leaf |leaf| (0-based) among |n| digests: the bottom-up
 * audit path, written to |terms| (capacity IMMU_PROOF_MAX_TERMS), count in
 * |*nterms|. O(n) hashes. Returns 0 or IMMU_EINVAL (leaf >= n). */
int immu_htree_proof(const immu_digest *digests, size_t n, size_t leaf,
                     immu_digest *terms, size_t *nterms);

/* Verifies that |digest| is leaf |leaf| of a tree of |width| leaves with
 * root |root| (spec 4.3). Returns 0 or IMMU_EVERIFY. */
int immu_htree_verify(const immu_digest *terms, size_t nterms, uint64_t leaf,
                      uint64_t width, const immu_digest *digest,
                      const immu_digest *root);

/* ------------------------------------------------------------------ */
/* ahtree: the append-only binary-linking tree (spec 5)                */
/* ------------------------------------------------------------------ */

/*
 * Nodes of perfect subtrees are stored in post order: leaf i (0-based) sits
 * at position 2i - popcount(i) and the node of level l whose leaves end at
 * leaf e sits at pos(e) + l. A tree of n leaves holds 2n - popcount(n)
 * nodes. Appending a leaf costs one leaf hash plus one hash per completed
 * subtree (two amortised); Root(m) for any m <= n folds popcount(m) stored
 * peaks.
 *
 * Node storage is pluggable: the tree calls |read| for nodes it does not keep
 * in memory and |append| to persist new ones. The callbacks return 0 or a
 * negative code, which the tree passes through.
 */
typedef struct immu_ahtree_store {
  void *ctx;
  /* Reads |n| consecutive nodes starting at |pos| into |out|. */
  int (*read)(void *ctx, uint64_t pos, size_t n, immu_digest *out);
  /* Appends |n| nodes; the first one lands at position |pos| (== number of
   * nodes stored so far). */
  int (*append)(void *ctx, uint64_t pos, const immu_digest *nodes, size_t n);
} immu_ahtree_store;

typedef struct immu_ahtree immu_ahtree;

/* Opens a tree over |store| that already holds the nodes of |nleaves| leaves
 * (0 for a new tree); reads the current peaks. |store| is copied; its ctx is
 * borrowed and must outlive the tree. Caller owns *out; free with
 * immu_ahtree_free(). Returns 0, IMMU_ENOMEM, or what store->read returns. */
int immu_ahtree_open(const immu_ahtree_store *store, uint64_t nleaves,
                     immu_ahtree **out);

/* A tree whose nodes live in a growable in-memory array owned by the tree.
 * Caller owns *out. Returns 0 or IMMU_ENOMEM. */
int immu_ahtree_new_mem(immu_ahtree **out);

/* Frees the tree (NULL allowed). */
void immu_ahtree_free(immu_ahtree *t);

/* Number of leaves. */
uint64_t immu_ahtree_size(const immu_ahtree *t);

/* Appends leaf H(0x00 || data) and stores the new nodes. If |root| is not
 * NULL it receives Root(size after append). Not thread-safe against other
 * calls on |t| (readers may run concurrently only if the store allows it
 * and the caller excludes appends). Returns 0, IMMU_ENOMEM or a store
 * error; on error the tree is unchanged. */
int immu_ahtree_append(immu_ahtree *t, const void *data, size_t len,
                       immu_digest *root);

/* Root of the first |m| leaves, 1 <= m <= size. O(log n).
 * Returns 0, IMMU_ERANGE, or a store error. */
int immu_ahtree_root_at(const immu_ahtree *t, uint64_t m, immu_digest *out);

/* Inclusion proof of leaf |i| in the tree of the first |j| leaves
 * (1 <= i <= j <= size), bottom-up (spec 5.2). */
int immu_ahtree_inclusion_proof(const immu_ahtree *t, uint64_t i, uint64_t j,
                                immu_digest *terms, size_t *nterms);

/* Consistency proof between sizes |i| and |j| (1 <= i <= j <= size) in
 * immudb's form (spec 5.3: power-of-two prefix, and the (n, n) case). */
int immu_ahtree_consistency_proof(const immu_ahtree *t, uint64_t i, uint64_t j,
                                  immu_digest *terms, size_t *nterms);

/* leafFor(alh) = H(0x00 || alh). */
void immu_ahtree_leaf(const immu_digest *alh, immu_digest *out);

/* Verifiers (spec 5.4). Return 0 or IMMU_EVERIFY. |ileaf| / |leaf| are
 * leaf hashes (immu_ahtree_leaf of the Alh), not Alhs. */
int immu_ahtree_verify_inclusion(const immu_digest *terms, size_t nterms,
                                 uint64_t i, uint64_t j,
                                 const immu_digest *ileaf,
                                 const immu_digest *jroot);
int immu_ahtree_verify_last_inclusion(const immu_digest *terms, size_t nterms,
                                      uint64_t i, const immu_digest *leaf,
                                      const immu_digest *root);
int immu_ahtree_verify_consistency(const immu_digest *terms, size_t nterms,
                                   uint64_t i, uint64_t j,
                                   const immu_digest *iroot,
                                   const immu_digest *jroot);

/* ------------------------------------------------------------------ */
/* Linear, linear-advance and dual proofs (spec 6)                     */
/* ------------------------------------------------------------------ */

/* A list of digests. In generated proofs the array is owned by the proof
 * (freed by immu_dual_proof_free); in proofs built by a decoder it may
 * point anywhere the caller likes. */
typedef struct immu_digest_list {
  immu_digest *d;
  size_t n;
} immu_digest_list;

typedef struct immu_linear_proof {
  uint64_t source_tx_id;
  uint64_t target_tx_id;
  immu_digest_list terms;
} immu_linear_proof;

typedef struct immu_linear_advance_proof {
  immu_digest_list linear_terms;
  size_t ninclusion;
  immu_digest_list *inclusion; /* one proof per tx in (start+1 .. end-1) */
} immu_linear_advance_proof;

typedef struct immu_dual_proof {
  immu_tx_header source;
  immu_tx_header target;
  immu_digest_list inclusion;
  immu_digest_list consistency;
  immu_digest target_bl_tx_alh;
  immu_digest_list last_inclusion;
  immu_linear_proof linear;
  int has_lap; /* 0: LinearAdvanceProof absent (not needed) */
  immu_linear_advance_proof lap;
} immu_dual_proof;

/* Gives the dual-proof generator access to committed transactions.
 * |header| fills the header of tx |id| (1 <= id <= last committed); |alh|
 * returns its Alh. Both return 0 or a negative code, passed through. */
typedef struct immu_tx_source {
  void *ctx;
  int (*header)(void *ctx, uint64_t id, immu_tx_header *out);
  int (*alh)(void *ctx, uint64_t id, immu_digest *out);
} immu_tx_source;

/* Linear proof from tx |s| to tx |t| (1 <= s <= t): [Alh(s), inner(s+1) ..
 * inner(t)]. Caller owns terms (free with immu_linear_proof_free). */
int immu_linear_proof_gen(const immu_tx_source *src, uint64_t s, uint64_t t,
                          immu_linear_proof *out);
void immu_linear_proof_free(immu_linear_proof *p);

/* VerifyLinearProof (spec 6.1). Returns 0 or IMMU_EVERIFY. */
int immu_linear_proof_verify(const immu_linear_proof *p, uint64_t s,
                             uint64_t t, const immu_digest *s_alh,
                             const immu_digest *t_alh);

/* VerifyLinearAdvanceProof (spec 6.3). |p| may be NULL. */
int immu_linear_advance_proof_verify(const immu_linear_advance_proof *p,
                                     uint64_t start, uint64_t end,
                                     const immu_digest *end_alh,
                                     const immu_digest *tree_root,
                                     uint64_t tree_size);

/* DualProof(S, T) as immudb's server builds it (spec 6.2), with the
 * LinearAdvanceProof when BlTxID lags. |tree| must hold at least
 * target->bl_tx_id leaves. Caller owns *out's arrays: free with
 * immu_dual_proof_free(). Returns 0, IMMU_EINVAL (s > t), IMMU_ECORRUPT
 * (S.BlTxID > T.BlTxID), IMMU_ENOMEM, or a source/tree error. */
int immu_dual_proof_gen(const immu_ahtree *tree, const immu_tx_source *src,
                        const immu_tx_header *source,
                        const immu_tx_header *target, immu_dual_proof *out);
void immu_dual_proof_free(immu_dual_proof *p);

/* VerifyDualProof (spec 6.4) including the CVE-2022-36111 linear-advance
 * check. Returns 0 or IMMU_EVERIFY. */
int immu_dual_proof_verify(const immu_dual_proof *p, uint64_t source_tx_id,
                           uint64_t target_tx_id,
                           const immu_digest *source_alh,
                           const immu_digest *target_alh);

/* ------------------------------------------------------------------ */
/* State signing (spec 8)                                              */
/* ------------------------------------------------------------------ */

#define IMMU_DB_NAME_MAX 255

/* ToBytes: u32(len(db)) || db || u64(txId) || txHash. Writes into |out|
 * (capacity |cap|, at least 44 + dblen). Returns 0, IMMU_EINVAL (db longer
 * than IMMU_DB_NAME_MAX) or IMMU_ETOOLARGE. */
int immu_state_bytes(const char *db, size_t dblen, uint64_t tx_id,
                     const immu_digest *tx_hash, uint8_t *out, size_t cap,
                     size_t *out_len);

typedef struct immu_signer immu_signer;
typedef struct immu_verifier immu_verifier;

#define IMMU_SIG_MAX 80    /* DER ECDSA P-256 signature */
#define IMMU_PUBKEY_LEN 65 /* 0x04 || X || Y */

/* Loads an EC P-256 private key from PEM text ("EC PRIVATE KEY" or PKCS#8).
 * Caller owns *out (immu_signer_free). Returns 0, IMMU_EINVAL (not a P-256
 * EC key or unparsable), IMMU_ENOMEM. Thread-safe to use concurrently. */
int immu_signer_from_pem(const char *pem, size_t len, immu_signer **out);
int immu_signer_from_file(const char *path, immu_signer **out);
void immu_signer_free(immu_signer *s);

/* Signs the state: ECDSA-SHA256 over immu_state_bytes(); DER signature in
 * |sig| (IMMU_SIG_MAX bytes), the uncompressed public key in |pubkey|. */
int immu_signer_sign_state(const immu_signer *s, const char *db, size_t dblen,
                           uint64_t tx_id, const immu_digest *tx_hash,
                           uint8_t sig[IMMU_SIG_MAX], size_t *sig_len,
                           uint8_t pubkey[IMMU_PUBKEY_LEN]);

/* Loads a P-256 public key from PEM ("PUBLIC KEY", PKIX). */
int immu_verifier_from_pem(const char *pem, size_t len, immu_verifier **out);
int immu_verifier_from_file(const char *path, immu_verifier **out);
void immu_verifier_free(immu_verifier *v);

/* Verifies a DER signature over the state. Returns 0 or IMMU_EVERIFY. */
int immu_verifier_verify_state(const immu_verifier *v, const char *db,
                               size_t dblen, uint64_t tx_id,
                               const immu_digest *tx_hash, const uint8_t *sig,
                               size_t sig_len);

#ifdef __cplusplus
}
#endif

#endif /* IMMUDB_CRYPTO_H */
