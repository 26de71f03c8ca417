/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The key-value layer of libimmudb: immudb's database API (pkg/database) on
 * top of the storage engine. The gRPC server maps each ImmuService KV call
 * onto one function here, 1:1; the types mirror immudb's proto messages
 * (immudb-api.md section 2) and the semantics follow immudb-crypto.md
 * section 7 ("the spec" below).
 *
 * Key spaces (spec 7.1): a user key k is stored as 0x00 || k; its value as
 * 0x00 || v (plain) or 0x01 || u64(atTx) || 0x00 || refKey (reference).
 * Sorted-set members are stored under 0x01 || ... keys with empty values
 * (spec 7.2). Everything in this API speaks *user* keys and values, except
 * immu_db_tx, which exposes the raw store entries a client needs to verify.
 *
 * Conventions
 *  - Every fallible function returns 0 or a negative code (immudb/err.h).
 *    After a failure, immu_db_last_error() returns a message naming the
 *    problem, with immudb's own wording where clients match on it ("key not
 *    found", "tx not found", "illegal arguments: ...", "illegal state",
 *    "invalid key revision number", ...).
 *  - Inputs are borrowed for the duration of the call.
 *  - Result structs are supplied by the caller (any content; they are
 *    overwritten) and, on success, own heap memory that the caller releases
 *    with the matching *_clear() function. On failure they hold nothing
 *    that needs releasing (calling *_clear() on them is still safe).
 *    *_clear() functions accept zeroed structs and leave the struct zeroed.
 *  - "Waiting" for the index means immu_store_wait_indexed with the
 *    database's index_wait_ms (options); a timeout returns IMMU_ETIMEOUT.
 *  - Thread-safety: every function except open/close may be called from any
 *    number of threads on the same handle.
 *  - Write calls check their preconditions (a reference's target exists,
 *    ...) against the index and then commit; like immudb, the check and the
 *    commit are not one atomic step with respect to concurrent writers.
 */
#ifndef IMMUDB_DB_H
#define IMMUDB_DB_H

#include <stddef.h>
#include <stdint.h>

#include "immudb/crypto.h"
#include "immudb/err.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The engine types live in src/store/store.h (internal); they are named
 * here by their struct tags only. */
struct immu_store;
struct immu_store_env;
struct immu_store_options;

typedef struct immu_db immu_db;

/* ------------------------------------------------------------------ */
/* Open / close                                                        */
/* ------------------------------------------------------------------ */

typedef struct immu_db_options {
  /* Engine options (src/store/store.h); NULL = immu_store_options_init
   * defaults. Borrowed for the duration of immu_db_open. */
  const struct immu_store_options *store;
  /* Shared engine env; when not NULL it replaces store->env. Borrowed: it
   * must outlive the database. */
  struct immu_store_env *env;
  /* Largest number of results a scan may return, and the default limit
   * (immudb's maxResultSize). 0 = 1000. */
  uint32_t max_result_size;
  /* How long reads wait for the index to reach the tx they need, in ms;
   * < 0 = forever (immudb's behaviour, the default). */
  long index_wait_ms;
} immu_db_options;

/* Fills |o| with the defaults. */
void immu_db_options_init(immu_db_options *o);

/* Opens or creates the database in directory |dir| (the engine's recovery
 * runs here). |opt| may be NULL (defaults). On success *out is an open
 * handle the caller closes with immu_db_close(); on failure *out is NULL.
 *
 * Returns 0 if it succeeds, or one of the following negative codes:
 *   IMMU_EINVAL    |dir| or |out| NULL, or bad persisted settings
 *   IMMU_ECORRUPT  the log or a derived file is damaged (message names it)
 *   IMMU_ENOMEM    out of memory
 *   -errno         from the file system */
int immu_db_open(const char *dir, const immu_db_options *opt, immu_db **out);

/* Flushes, syncs and closes. NULL allowed (returns 0). Returns 0 or the
 * engine's error from the final sync; the handle is freed either way. */
int immu_db_close(immu_db *db);

/* Message describing the last failed immu_db_* call on the calling thread
 * (thread-local; never NULL; "" if none failed yet). Valid until the next
 * immu_db_* call on this thread. */
const char *immu_db_last_error(void);

/* The engine under the database (for replication, export, tools). */
struct immu_store *immu_db_store(immu_db *db);

/* ------------------------------------------------------------------ */
/* Result types                                                        */
/* ------------------------------------------------------------------ */

/* Reference{tx, key, atTx, revision}: the reference entry through which an
 * Entry was reached. */
typedef struct immu_db_reference {
  uint64_t tx;  /* tx that wrote the reference */
  uint8_t *key; /* the reference's user key (owned) */
  size_t key_len;
  uint64_t at_tx;    /* the tx the reference is bound to, 0 = unbound */
  uint64_t revision; /* revision of the reference key; 0 when not known
                        (reads at a given tx) */
} immu_db_reference;

/* Entry{tx, key, value, referencedBy, revision}. */
typedef struct immu_db_entry {
  uint64_t tx;  /* tx that wrote this value */
  uint8_t *key; /* user key, without the 0x00 prefix (owned) */
  size_t key_len;
  uint8_t *value; /* user value, without its prefix (owned; never NULL
                     after success, even when value_len is 0) */
  size_t value_len;
  int has_referenced_by; /* referenced_by is valid */
  immu_db_reference referenced_by;
  uint64_t revision; /* 1-based version number of the key; 0 when not known
                        (reads at a given tx, values behind bound refs) */
} immu_db_entry;

void immu_db_entry_clear(immu_db_entry *e);

/* Entries{entries}. */
typedef struct immu_db_entries {
  immu_db_entry *v;
  size_t n;
  size_t cap_; /* private */
} immu_db_entries;

void immu_db_entries_clear(immu_db_entries *l);

/* ZEntry{set, key, entry, score, atTx}. */
typedef struct immu_db_zentry {
  uint8_t *set; /* owned */
  size_t set_len;
  uint8_t *key; /* member's user key (owned) */
  size_t key_len;
  immu_db_entry entry; /* the member key's value (at at_tx if > 0) */
  double score;
  uint64_t at_tx;
} immu_db_zentry;

typedef struct immu_db_zentries {
  immu_db_zentry *v;
  size_t n;
  size_t cap_; /* private */
} immu_db_zentries;

void immu_db_zentries_clear(immu_db_zentries *l);

/* TxEntry{key, hValue, vLen, metadata, value}: a raw store entry. */
typedef struct immu_db_tx_entry {
  const uint8_t *key; /* store key, WITH its KV prefix (0x00 / 0x01) */
  size_t key_len;
  const uint8_t *md; /* KV metadata (spec 2.3); empty for our writes */
  size_t md_len;
  immu_digest hval;     /* H(value) */
  const uint8_t *value; /* raw stored value, WITH its prefix */
  size_t value_len;
} immu_db_tx_entry;

/* Tx{header, entries}. The entries point into memory owned by the struct. */
typedef struct immu_db_tx {
  immu_tx_header header;
  immu_digest alh;           /* Alh of the header */
  immu_db_tx_entry *entries; /* header.nentries of them */
  size_t nentries;
  void *mem_; /* private */
} immu_db_tx;

void immu_db_tx_clear(immu_db_tx *tx);

typedef struct immu_db_tx_list {
  immu_db_tx *v;
  size_t n;
  size_t cap_; /* private */
} immu_db_tx_list;

void immu_db_tx_list_clear(immu_db_tx_list *l);

/* VerifiableTx{tx, dualProof}. The proof's source/target headers follow
 * spec 7.4; the server signs {db, proof.target.id, Alh(proof.target)}. */
typedef struct immu_db_verifiable_tx {
  immu_db_tx tx;
  immu_dual_proof proof;
} immu_db_verifiable_tx;

void immu_db_verifiable_tx_clear(immu_db_verifiable_tx *v);

/* InclusionProof{leaf, width, terms}: htree proof (spec 4.2). */
typedef struct immu_db_inclusion_proof {
  uint32_t leaf;  /* 0-based */
  uint32_t width; /* number of entries in the tx */
  size_t nterms;
  immu_digest terms[IMMU_PROOF_MAX_TERMS];
} immu_db_inclusion_proof;

/* VerifiableEntry{entry, verifiableTx, inclusionProof}. */
typedef struct immu_db_verifiable_entry {
  immu_db_entry entry;
  immu_db_verifiable_tx vtx;
  immu_db_inclusion_proof inclusion;
} immu_db_verifiable_entry;

void immu_db_verifiable_entry_clear(immu_db_verifiable_entry *v);

/* ImmutableState{txId, txHash} (unsigned; the server signs it). */
typedef struct immu_db_state {
  uint64_t tx_id;      /* last committed tx, 0 for an empty database */
  immu_digest tx_hash; /* its Alh; H("") for an empty database */
} immu_db_state;

/* ------------------------------------------------------------------ */
/* Requests                                                            */
/* ------------------------------------------------------------------ */

/* KeyValue{key, value}. */
typedef struct immu_db_kv {
  const uint8_t *key;
  size_t key_len;
  const uint8_t *value; /* may be NULL when value_len is 0 */
  size_t value_len;
} immu_db_kv;

/* KeyRequest{key, atTx, sinceTx, noWait, atRevision}. */
typedef struct immu_db_key_req {
  const uint8_t *key;
  size_t key_len;
  uint64_t at_tx;      /* > 0: the version written in exactly this tx */
  uint64_t since_tx;   /* > 0: wait for the index to reach this tx */
  int no_wait;         /* do not wait for the index at all */
  int64_t at_revision; /* > 0: the nth version; < 0: relative to latest */
} immu_db_key_req;

/* ScanRequest{seekKey, endKey, prefix, desc, limit, sinceTx, noWait,
 * inclusiveSeek, inclusiveEnd, offset}. Ascending: seek_key is the lower
 * bound and end_key the upper one; descending: the other way round. Empty
 * (len 0) keys mean unbounded. */
typedef struct immu_db_scan_req {
  const uint8_t *seek_key;
  size_t seek_key_len;
  const uint8_t *end_key;
  size_t end_key_len;
  const uint8_t *prefix;
  size_t prefix_len;
  int desc;
  uint64_t limit; /* 0 = max_result_size */
  uint64_t since_tx;
  int no_wait;
  int inclusive_seek;
  int inclusive_end;
  uint64_t offset; /* keys to skip first */
} immu_db_scan_req;

/* HistoryRequest{key, offset, limit, desc, sinceTx}. */
typedef struct immu_db_history_req {
  const uint8_t *key;
  size_t key_len;
  uint64_t offset;
  int32_t limit; /* 0 = max_result_size; negative is invalid */
  int desc;
  uint64_t since_tx;
} immu_db_history_req;

/* ReferenceRequest{key, referencedKey, atTx, boundRef, noWait}. */
typedef struct immu_db_ref_req {
  const uint8_t *key;
  size_t key_len;
  const uint8_t *referenced_key;
  size_t referenced_key_len;
  uint64_t at_tx;
  int bound_ref;
  int no_wait;
} immu_db_ref_req;

/* ZAddRequest{set, score, key, atTx, boundRef, noWait}. */
typedef struct immu_db_zadd_req {
  const uint8_t *set;
  size_t set_len;
  double score; /* NaN is rejected */
  const uint8_t *key;
  size_t key_len;
  uint64_t at_tx;
  int bound_ref;
  int no_wait;
} immu_db_zadd_req;

/* ZScanRequest{set, seekKey, seekScore, seekAtTx, inclusiveSeek, limit,
 * desc, minScore, maxScore, sinceTx, noWait, offset}. Members come in
 * numeric score order (negative scores included), then key order, then
 * atTx. The score bounds are inclusive. */
typedef struct immu_db_zscan_req {
  const uint8_t *set;
  size_t set_len;
  const uint8_t *seek_key; /* len 0 = start at the first (last) member */
  size_t seek_key_len;
  double seek_score;
  uint64_t seek_at_tx;
  int inclusive_seek;
  uint64_t limit; /* 0 = max_result_size */
  int desc;
  int has_min_score;
  double min_score;
  int has_max_score;
  double max_score;
  uint64_t since_tx;
  int no_wait;
  uint64_t offset;
} immu_db_zscan_req;

/* Op{kv | zAdd | ref} of ExecAll. The op's own no_wait is ignored. */
enum immu_db_op_kind {
  IMMU_DB_OP_KV = 1,
  IMMU_DB_OP_ZADD = 2,
  IMMU_DB_OP_REF = 3
};

typedef struct immu_db_op {
  int kind; /* enum immu_db_op_kind */
  union {
    immu_db_kv kv;
    immu_db_zadd_req zadd;
    immu_db_ref_req ref;
  } u;
} immu_db_op;

/* TxScanRequest{initialTx, limit, desc}. */
typedef struct immu_db_tx_scan_req {
  uint64_t initial_tx; /* 0 = the first (ascending) or last (descending) */
  uint32_t limit;      /* 0 = max_result_size */
  int desc;
} immu_db_tx_scan_req;

/* ------------------------------------------------------------------ */
/* Writes                                                              */
/* ------------------------------------------------------------------ */

/* Set: commits the |n| KVs as one tx, in order (key 0x00||k, value
 * 0x00||v; spec 7.2). Unless |no_wait|, returns only once the index covers
 * the tx. *hdr (if not NULL) receives the committed header.
 *
 * Returns 0 if it succeeds, or one of the following negative codes:
 *   IMMU_EINVAL     n == 0, an empty key, or a key given twice
 *                   ("duplicated key")
 *   IMMU_ETOOLARGE  a key or value over the database's limits, or more
 *                   entries than a tx may hold
 *   IMMU_ETIMEOUT   committed, but the index did not catch up in time
 *   IMMU_EPOISONED, IMMU_ECLOSED, -errno   engine failures */
int immu_db_set(immu_db *db, const immu_db_kv *kvs, size_t n, int no_wait,
                immu_tx_header *hdr);

/* Completion of immu_db_set_async: rc is what immu_db_set would have
 * returned after validation (0, IMMU_ETIMEOUT, IMMU_ECORRUPT, IMMU_ECLOSED,
 * IMMU_EPOISONED, -errno); |hdr| is the committed header (borrowed for the
 * call) whenever the tx committed - also when the index wait then failed -
 * and NULL otherwise. immu_db_last_error() gives the message of a non-zero
 * rc inside the call. Called exactly once, from an engine thread, never
 * from inside immu_db_set_async, without engine locks held: it must not
 * block, and may call immu_db_set_async but no blocking immu_db_* call. */
typedef void (*immu_db_done_fn)(void *arg, int rc, const immu_tx_header *hdr);

/* Set without blocking the caller through the fsync and the index wait.
 * Validates and copies |kvs| synchronously, returning the errors of
 * immu_db_set's validation (then |done| is never called); on 0, |done| is
 * called exactly once later: after durability per the store's mode and,
 * unless |no_wait|, after the index covers the tx (with immu_db_set's
 * index-wait timeout). A Set accepted before immu_db_close starts is
 * committed before close returns; its index wait then ends with
 * IMMU_ECLOSED (hdr set) unless the index already covered it. */
int immu_db_set_async(immu_db *db, const immu_db_kv *kvs, size_t n,
                      int no_wait, immu_db_done_fn done, void *arg);

/* SetReference (spec 7.3): commits key -> referenced_key. Rules: at_tx > 0
 * requires bound_ref and bound_ref requires at_tx > 0; key must not exist
 * as a plain entry (it may already be a reference); referenced_key must
 * exist (in tx at_tx if given) and must not be a reference.
 *
 * Returns 0 if it succeeds, or one of the following negative codes:
 *   IMMU_EINVAL     empty key, bad at_tx/bound_ref ("illegal arguments")
 *   IMMU_EEXIST     key is a plain entry ("final key cannot be converted
 *                   into a reference")
 *   IMMU_ENOTFOUND  referenced key missing ("referenced key not found"),
 *                   or at_tx not committed ("tx not found")
 *   IMMU_ECONFLICT  referenced key is a reference ("referenced key cannot
 *                   be a reference")
 *   and the codes of immu_db_set. */
int immu_db_set_reference(immu_db *db, const immu_db_ref_req *req,
                          immu_tx_header *hdr);

/* ZAdd (spec 7.3): adds (score, key, at_tx) to |set|. The at_tx/bound_ref
 * rule of SetReference applies; key must exist (in tx at_tx if given) and
 * must not be a reference. Errors as immu_db_set_reference (IMMU_EINVAL
 * also for an empty set or a NaN score). */
int immu_db_zadd(immu_db *db, const immu_db_zadd_req *req, immu_tx_header *hdr);

/* ExecAll: the |n| ops as one atomic tx, in order, with the checks of the
 * single calls. A Ref or ZAdd with bound_ref and at_tx = 0 is bound to the
 * tx being committed, so its target must be a KV op of the same call; an
 * unbound one may target a KV op of the same call. Targets that are Ref ops
 * of the same call are rejected ("referenced key cannot be a reference").
 * Errors as immu_db_set and immu_db_set_reference. */
int immu_db_exec_all(immu_db *db, const immu_db_op *ops, size_t n, int no_wait,
                     immu_tx_header *hdr);

/* ------------------------------------------------------------------ */
/* Reads                                                               */
/* ------------------------------------------------------------------ */

/* Get (spec 7.3 "Reads"). Which version:
 *   at_tx > 0        the one written in tx at_tx ("key not found" if that
 *                    tx did not write the key; "tx not found" if no such
 *                    tx), read from the log;
 *   at_revision > 0  the nth version; at_revision < 0: |at_revision| before
 *                    the latest (-1 = the previous one);
 *   otherwise        the latest.
 * Unless no_wait (and when at_tx is 0), first waits for the index to reach
 * since_tx, or the last committed tx when since_tx is 0. A reference is
 * resolved (depth 1: bound ones in their tx, unbound ones to the latest
 * value) and the result describes the referenced value, with
 * referenced_by = the reference entry.
 *
 * Returns 0 if it succeeds, or one of the following negative codes:
 *   IMMU_EINVAL     empty key; at_tx combined with since_tx or at_revision;
 *                   since_tx beyond the last committed tx
 *   IMMU_ENOTFOUND  "key not found", "tx not found"
 *   IMMU_ERANGE     "invalid key revision number"
 *   IMMU_ECORRUPT   a stored value does not match its hash, or is malformed
 *   IMMU_ECONFLICT  a reference to a reference ("key resolution limit
 *                   reached ...")
 *   IMMU_ETIMEOUT   the index did not catch up in time */
int immu_db_get(immu_db *db, const immu_db_key_req *req, immu_db_entry *out);

/* immu_db_get for a thread that must never wait on disk or on the index
 * (a server's I/O loop): the same answer and errors when it can be given
 * from memory, else IMMU_EWOULDBLOCK, after which the caller asks
 * immu_db_get on a thread that may block. Memory here means the index's
 * memtables and block cache, and a value kept inline in the index. It
 * gives up (IMMU_EWOULDBLOCK) on at_tx, at_revision, a reference, a value
 * stored only in the log, and an index that does not cover since_tx (or
 * the last committed tx) yet; with no_wait, one that does not cover
 * immu_store_acked_id. */
int immu_db_get_cached(immu_db *db, const immu_db_key_req *req,
                       immu_db_entry *out);

/* GetAll: the latest value of each of |n| keys that exists (missing keys
 * are skipped), references resolved. Waits for the index to reach
 * |since_tx| (or the last committed tx when 0). IMMU_ETOOLARGE when n >
 * max_result_size; otherwise errors as immu_db_get. */
int immu_db_get_all(immu_db *db, const immu_buf *keys, size_t n,
                    uint64_t since_tx, immu_db_entries *out);

/* History: versions of a key from the index, oldest first (or newest first
 * if desc), skipping |offset|, at most |limit|. Like immudb, the values are
 * the stored ones without their first byte and references are NOT
 * resolved; revision is set. An offset past the end gives an empty list.
 * IMMU_ENOTFOUND ("key not found") if the key was never set; IMMU_EINVAL
 * for an empty key, a negative limit or since_tx beyond the last tx;
 * IMMU_ETOOLARGE if limit > max_result_size. */
int immu_db_history(immu_db *db, const immu_db_history_req *req,
                    immu_db_entries *out);

/* Scan: latest values of the plain key space (references resolved; ones
 * whose target is missing are skipped) within the bounds of |req|.
 * IMMU_EINVAL for since_tx beyond the last tx; IMMU_ETOOLARGE if limit >
 * max_result_size; otherwise errors as immu_db_get. */
int immu_db_scan(immu_db *db, const immu_db_scan_req *req,
                 immu_db_entries *out);

/* ZScan: members of a sorted set with their values (each member key read
 * at its at_tx if > 0, else its latest value; members whose key cannot be
 * found are skipped). IMMU_EINVAL for an empty set, seek_at_tx without
 * seek_key, NaN bounds or since_tx beyond the last tx; IMMU_ETOOLARGE if
 * limit > max_result_size. */
int immu_db_zscan(immu_db *db, const immu_db_zscan_req *req,
                  immu_db_zentries *out);

/* Count: number of distinct user keys (plain or reference) starting with
 * |prefix| (plen may be 0). CountAll: the same with an empty prefix. Both
 * wait for the index to reach the last committed tx. */
int immu_db_count(immu_db *db, const uint8_t *prefix, size_t plen,
                  uint64_t *out);
int immu_db_count_all(immu_db *db, uint64_t *out);

/* TxById: the full tx |id| with its raw entries and values.
 * IMMU_EINVAL if id is 0; IMMU_ENOTFOUND ("tx not found") if id is not
 * committed; IMMU_ECORRUPT. */
int immu_db_tx_by_id(immu_db *db, uint64_t id, immu_db_tx *out);

/* TxScan: up to |limit| txs from initial_tx going up (or down). An
 * initial_tx past the last committed tx gives an empty list (ascending) or
 * starts at the last one (descending). IMMU_ETOOLARGE if limit >
 * max_result_size. */
int immu_db_tx_scan(immu_db *db, const immu_db_tx_scan_req *req,
                    immu_db_tx_list *out);

/* CurrentState: last committed tx and its Alh. Cannot fail. */
void immu_db_current_state(immu_db *db, immu_db_state *out);

/* ------------------------------------------------------------------ */
/* Verifiable calls (spec 7.4)                                         */
/* ------------------------------------------------------------------ */

/* Common rule: |prove_since_tx| > the last committed tx fails with
 * IMMU_EINVAL ("illegal state") before anything is written or read;
 * prove_since_tx = 0 means "use the tx itself as the source".
 *
 * VerifiableSet / VerifiableSetReference / VerifiableZAdd: commit the tx X
 * as the plain call does, then return X with DualProof(S, X), S = X when
 * prove_since_tx is 0, else tx prove_since_tx. Errors: those of the plain
 * call, plus engine read errors; after such a read error the tx stays
 * committed (as in immudb), only the proof is missing. */
int immu_db_verifiable_set(immu_db *db, const immu_db_kv *kvs, size_t n,
                           int no_wait, uint64_t prove_since_tx,
                           immu_db_verifiable_tx *out);

/* The result of a Verifiable* write for tx |hdr->id|, already committed:
 * the tx and DualProof(prove_since_tx or the tx, the tx). With
 * immu_db_set_async, check prove_since_tx first with
 * immu_db_check_prove_since (before committing, as VerifiableSet does).
 * Errors: engine read errors (the tx stays committed). */
int immu_db_verifiable_tx_for(immu_db *db, const immu_tx_header *hdr,
                              uint64_t prove_since_tx,
                              immu_db_verifiable_tx *out);

/* IMMU_EINVAL ("illegal state: proveSinceTx ...") if |prove_since_tx| is
 * beyond the last committed tx, else 0. */
int immu_db_check_prove_since(immu_db *db, uint64_t prove_since_tx);
int immu_db_verifiable_set_reference(immu_db *db, const immu_db_ref_req *req,
                                     uint64_t prove_since_tx,
                                     immu_db_verifiable_tx *out);
int immu_db_verifiable_zadd(immu_db *db, const immu_db_zadd_req *req,
                            uint64_t prove_since_tx,
                            immu_db_verifiable_tx *out);

/* VerifiableGet: the Get of |req|, plus the full tx vTx that wrote the
 * requested key's entry (entry.tx, or referenced_by.tx for a reference),
 * the htree inclusion proof of that entry (key 0x00||requested key) in
 * vTx, and the dual proof DualProof(prove_since_tx or vTx, vTx) when
 * prove_since_tx <= vTx, else DualProof(vTx, prove_since_tx). Errors: those
 * of immu_db_get, "illegal state", engine read errors. */
int immu_db_verifiable_get(immu_db *db, const immu_db_key_req *req,
                           uint64_t prove_since_tx,
                           immu_db_verifiable_entry *out);

/* VerifiableTxById: tx |id| with the dual proof chosen as in
 * VerifiableGet. Errors: those of immu_db_tx_by_id, "illegal state". */
int immu_db_verifiable_tx_by_id(immu_db *db, uint64_t id,
                                uint64_t prove_since_tx,
                                immu_db_verifiable_tx *out);

/* ------------------------------------------------------------------ */
/* Maintenance                                                         */
/* ------------------------------------------------------------------ */

typedef struct immu_db_stats {
  uint64_t txs;
  uint64_t entries;
  uint64_t indexed_tx;
  uint64_t index_lag; /* txs committed but not indexed yet */
  uint64_t log_bytes;
  uint64_t txi_bytes;
  uint64_t aht_bytes;
  uint64_t index_bytes;
  uint64_t groups;      /* commit groups (one log write each) */
  uint64_t fsyncs;      /* log fsyncs */
  uint64_t value_bytes; /* logical bytes committed: keys + values */
} immu_db_stats;

/* Engine statistics. Cannot fail. */
void immu_db_get_stats(immu_db *db, immu_db_stats *st);

/* Re-hashes the whole log and checks the Alh chain and the ahtree (see
 * immu_store_verify). |progress| may be NULL. Returns 0 or IMMU_ECORRUPT
 * (message in immu_db_last_error()). */
int immu_db_verify(immu_db *db,
                   void (*progress)(void *arg, uint64_t done, uint64_t total),
                   void *arg);

/* FlushIndex / CompactIndex: RocksDB memtable flush / full compaction.
 * Return 0 or IMMU_EIO. */
int immu_db_flush_index(immu_db *db);
int immu_db_compact_index(immu_db *db);

#ifdef __cplusplus
}
#endif

#endif /* IMMUDB_DB_H */
