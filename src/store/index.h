/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The key index: RocksDB holding derived data, rebuildable from the log at
 * any time. The engine's indexer applies committed txs in batches; each
 * batch also stores "indexed up to tx N" in the same atomic write, so a
 * crash leaves the index at a tx boundary. RocksDB's WAL is off: after a
 * crash the index resumes from whatever N it persisted.
 *
 * Namespaces (first byte of each RocksDB key; ENC(k) = k with 0x00 escaped
 * as 0x00 0xff, terminated by 0x00 0x01, which preserves key order when
 * something follows it). 'l' rows live in the column family "latest", all
 * others in the default one; 'm' is written to both in every apply:
 *   'm' "last"                      -> u64 last indexed tx | u32 format
 *                                      version (3; see index.c)
 *   'l' storekey                    -> latest version of storekey (ENTRY)
 *   'h' ENC(storekey) u64 revision  -> version |revision| (1-based) of
 *                                      every revision but the latest
 *                                      (ENTRY): a key written once has
 *                                      no 'h' row
 *   'z' ENC(set) SCORE ENC(key) u64 atTx u64 tx -> empty: sorted-set member
 *       (SCORE = the double's bits, sign bit flipped for >= 0 and all bits
 *        flipped for < 0, so byte order is numeric order)
 *   'c' u8 prefix                   -> u64 number of distinct store keys
 *                                      with that first byte (for Count)
 * ENTRY = u64 tx | u32 entry index in tx | u64 value position in the log |
 *         u32 vlen | 32 hVal | u64 revision | u8 mdlen | md |
 *         u32 inline_len | inline value (only in 'l', when vlen <= the
 *         inline limit; inline_len = 0xffffffff when not inlined)
 *
 * Store keys are the spec's KV-layer keys: 0x00||userkey for plain values
 * and references, 0x01||... for sorted-set entries (spec 7.1). A ZAdd entry
 * is indexed both under 'l'/'h' (as any store key) and under 'z' (decoded
 * with immu_dec_zadd_key).
 *
 * Thread-safety: immu__index_apply from one thread at a time; every read
 * function may run concurrently with it and with each other (reads see a
 * consistent snapshot per call).
 */
#ifndef IMMU_STORE_INDEX_H
#define IMMU_STORE_INDEX_H

#include <stddef.h>
#include <stdint.h>

#include "immudb/crypto.h"

/* Shared by every database of a process: one block cache, one RocksDB Env
 * (background thread pool), one set of options. */
typedef struct immu_index_env immu_index_env;
typedef struct immu_index immu_index;

/* |cache_bytes| (0 = 256 MiB) for the caches: an eighth for the latest
 * rows the applies wrote (store/rcache.h), the rest for the shared LRU
 * block cache; |bg_threads| background compaction/flush threads (0 = 2).
 * Caller owns *out. */
int immu__index_env_new(size_t cache_bytes, int bg_threads,
                        immu_index_env **out);
void immu__index_env_free(immu_index_env *env);

/* Counters of the environment's latest-row cache (tests, metrics). */
struct immu__rcache_stats;
void immu__index_env_rcache_stats(immu_index_env *env,
                                  struct immu__rcache_stats *out);

/* Opens or creates the index in |dir|. IMMU_ECORRUPT if RocksDB reports
 * corruption or the 'm' record is malformed (the caller then destroys and
 * rebuilds). Error text (RocksDB's message) goes to *errmsg if not NULL
 * (caller frees with immu__free). |inline_max| = largest value copied into
 * 'l' records (0 = never inline). */
int immu__index_open(immu_index_env *env, const char *dir, uint32_t inline_max,
                     immu_index **out, char **errmsg);
void immu__index_close(immu_index *ix);
/* Deletes an index directory (closed). */
int immu__index_destroy(immu_index_env *env, const char *dir);

/* Last tx whose entries are all in the index (0 for a new index). */
uint64_t immu__index_last_tx(const immu_index *ix);

/* One entry of a committed tx, as the indexer passes it. Borrowed. */
typedef struct immu_index_kv {
  const uint8_t *key; /* store key */
  size_t klen;
  const uint8_t *md;
  size_t mdlen;
  const uint8_t *value; /* may be NULL if vlen > inline_max */
  uint32_t vlen;
  uint64_t tx;
  uint32_t idx;  /* position in the tx */
  uint64_t vpos; /* log position of the value bytes */
  immu_digest hval;
} immu_index_kv;

/* Applies the entries of txs |first|..|last| (|last| = |first| - 1 + the
 * number of txs; first must be last_tx + 1) in ONE atomic RocksDB write,
 * with the 'm' record set to |last|. Entries in tx order then entry order.
 * Returns 0, IMMU_EINVAL (first != last_tx + 1), IMMU_EIO (RocksDB error). */
int immu__index_apply(immu_index *ix, uint64_t first, uint64_t last,
                      const immu_index_kv *kvs, size_t n);

/* One version of a key as read back. Pointers borrow an internal buffer of
 * the call (valid only inside the callback, or until the next call on the
 * same immu_index_entry for immu__index_get*). */
typedef struct immu_index_entry {
  uint64_t tx;
  uint32_t idx;
  uint64_t vpos;
  uint32_t vlen;
  immu_digest hval;
  uint64_t revision;
  uint8_t mdlen;
  uint8_t md[IMMU_KV_MD_MAX];
  int has_inline; /* value bytes in inline/vlen */
  uint8_t *inline_value; /* owned by the entry: free with
                            immu__index_entry_clear */
  const uint8_t *key; /* store key, valid in iteration callbacks only */
  size_t klen;
} immu_index_entry;

void immu__index_entry_clear(immu_index_entry *e);

/* Latest version of |key|. IMMU_ENOTFOUND if never set. */
int immu__index_get_latest(immu_index *ix, const uint8_t *key, size_t klen,
                           immu_index_entry *out);
/* What the calling thread's last failed point read found: RocksDB's own
 * error text, or which row did not decode ("" if none). Never NULL. */
const char *immu__index_last_error(void);

/* As immu__index_get_latest, from RocksDB's memtables and block cache
 * only: IMMU_EWOULDBLOCK when answering needs a file read. For threads
 * that must not wait on disk. */
int immu__index_get_latest_cached(immu_index *ix, const uint8_t *key,
                                  size_t klen, immu_index_entry *out);

/* Version |rev| (1-based) of |key|. IMMU_ENOTFOUND if it has fewer. */
int immu__index_get_revision(immu_index *ix, const uint8_t *key, size_t klen,
                             uint64_t rev, immu_index_entry *out);

/* Callback for iterations: return 0 to continue, 1 to stop, negative to
 * abort with that code. */
typedef int (*immu_index_cb)(void *arg, const immu_index_entry *e);

/* Versions of |key| from revision |from| (1-based; in descending order
 * |from| = 0 means the latest) going up (or down if |desc|). */
int immu__index_history(immu_index *ix, const uint8_t *key, size_t klen,
                        uint64_t from, int desc, immu_index_cb cb, void *arg);

/* Latest versions of the store keys in [lo, hi] in key order (or reverse if
 * |desc|). lo/hi NULL = unbounded; lo_incl/hi_incl choose inclusiveness.
 * Only keys starting with |prefix| (plen bytes, may be 0). */
int immu__index_scan(immu_index *ix, const uint8_t *prefix, size_t plen,
                     const uint8_t *lo, size_t lolen, int lo_incl,
                     const uint8_t *hi, size_t hilen, int hi_incl, int desc,
                     immu_index_cb cb, void *arg);

/* A sorted-set member as read back from 'z'. */
typedef struct immu_index_zmember {
  const uint8_t *set;
  size_t slen;
  double score;
  const uint8_t *key; /* user key (without the 0x00 prefix) */
  size_t klen;
  uint64_t at_tx;
  uint64_t tx; /* tx of the ZAdd entry */
} immu_index_zmember;
typedef int (*immu_index_zcb)(void *arg, const immu_index_zmember *m);

/* Members of |set| with min <= score <= max (NaN-free; use +-INFINITY for
 * unbounded; min_excl/max_excl make the bound exclusive), in score order
 * then key order then atTx (reversed if |desc|). If |seek_key| is not NULL,
 * start strictly after (or before, if desc) the member (seek_score,
 * seek_key, seek_at_tx). */
int immu__index_zscan(immu_index *ix, const uint8_t *set, size_t slen,
                      double min, int min_excl, double max, int max_excl,
                      const uint8_t *seek_key, size_t seek_klen,
                      double seek_score, uint64_t seek_at_tx, int desc,
                      immu_index_zcb cb, void *arg);

/* Number of distinct store keys starting with |prefix| (any length; a
 * one-byte prefix is O(1) from the 'c' counters, longer ones iterate). */
int immu__index_count(immu_index *ix, const uint8_t *prefix, size_t plen,
                      uint64_t *out);

/* Bytes on disk (SST + blob files) as RocksDB reports them. */
uint64_t immu__index_bytes(immu_index *ix);

/* Flushes memtables to SST files (FlushIndex) / compacts (CompactIndex). */
int immu__index_flush(immu_index *ix);
int immu__index_compact(immu_index *ix);

#endif
