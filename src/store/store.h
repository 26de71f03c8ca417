/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The storage engine: one database directory holding an append-only tx log
 * (the source of truth), a tx-position file and the ahtree's nodes (both
 * derived, rebuilt from the log when behind), a checkpoint, and a RocksDB
 * key index (derived, applied asynchronously by a shared worker pool).
 *
 * Layout of <dir>:
 *   settings            format version and limits (validated on open)
 *   checkpoint          last tx whose derived files are synced (atomic)
 *   log/NNN.log         tx records (txrec.h), group-committed
 *   txi/NNN.txi         16 bytes per tx: u64 log pos | u32 frame len | crc
 *   aht/NNN.aht         ahtree nodes, 32 bytes each, post order
 *   index/              RocksDB
 *
 * Commit: entries are hashed and encoded by the calling thread; only ID
 * assignment, Alh and the ahtree append are serial. Writers join a batch;
 * the first writer to find no flush under way leads: it takes the oldest
 * batch as its group, seals every tx, writes them with one pwritev, hands
 * the token to the next batch (one of its waiting threads, or an env
 * committer thread if the batch holds only asynchronous commits),
 * fdatasyncs once (synced mode), and publishes: one futex wake releases
 * all of the group's waiting writers, asynchronous ones get their done
 * callback. An env committer thread then applies what it published to
 * the index itself when no index worker has the store (a caller's thread
 * leaves that to the workers).
 *
 * Thread-safety: every function may be called from any thread, except
 * open/close.
 */
#ifndef IMMU_STORE_STORE_H
#define IMMU_STORE_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "immudb/crypto.h"
#include "store/index.h"
#include "store/io.h"
#include "store/txrec.h"

typedef struct immu_store immu_store;
typedef struct immu_store_env immu_store_env;

enum immu_durability {
  IMMU_DURABILITY_SYNCED = 0, /* return after the fsync covering the tx */
  IMMU_DURABILITY_ASYNC = 1   /* return after the write; fsync soon after */
};

/* Shared by all stores of a process: RocksDB cache and threads, the index
 * worker pool and the timer that syncs async stores and writes checkpoints.
 * |cache_bytes| 0 = 256 MiB; |workers| 0 = 2. Caller owns *out; free it
 * after closing every store that uses it. */
int immu_store_env_new(size_t cache_bytes, int workers, immu_store_env **out);
void immu_store_env_free(immu_store_env *env);

/* Counters of the environment's latest-row cache (store/rcache.h): reads it
 * answered and missed, the rows it holds and their bytes. Thread-safe. */
void immu_store_env_row_cache(immu_store_env *env, uint64_t *hits,
                              uint64_t *misses, uint64_t *rows,
                              uint64_t *bytes);

/* Passes the environment's timer made over its stores since it started
 * (tests: an idle environment must not poll). Thread-safe. */
uint64_t immu__store_env_timer_passes(immu_store_env *env);

/* 1 while a thread has |s| in hand to index it or queued for an index
 * worker (tests: wait for the index to be idle). Thread-safe. */
int immu__store_index_queued(immu_store *s);

/* Tests: while |hold| is 1 the indexer leaves |s| alone (commits go on,
 * the index falls behind); 0 lets it catch up. Thread-safe. */
void immu__store_index_hold(immu_store *s, int hold);

typedef struct immu_store_options {
  int durability;          /* enum immu_durability */
  uint64_t log_seg_size;   /* default 512 MiB */
  uint32_t max_key_len;    /* default 1024 (new databases only) */
  uint32_t max_value_len;  /* default 32 MiB (new databases only) */
  uint32_t max_entries;    /* per tx, default 1024 (new databases only) */
  uint32_t max_group;      /* txs per commit group, default 512 */
  uint32_t async_sync_ms;  /* async mode fsync interval, default 10 */
  uint32_t checkpoint_ms;  /* checkpoint interval, default 1000 */
  uint32_t index_batch;    /* max entries per index batch, default 20000 */
  uint32_t inline_max;     /* values up to this size are copied into the
                              index, default 256 */
  const immu_io *io;       /* NULL = the real file system */
  immu_store_env *env;     /* NULL = a private env (1 worker) */
  /* Log sink for warnings and recovery messages; NULL = stderr. */
  void (*log)(void *arg, int level, const char *msg);
  void *log_arg;
} immu_store_options;

#define IMMU_LOG_ERROR 0
#define IMMU_LOG_WARN 1
#define IMMU_LOG_INFO 2

void immu_store_options_init(immu_store_options *o);

/* Opens or creates the database in |dir| and runs recovery (see store.c).
 * On failure *errmsg (if not NULL) gets a message naming the file, offset
 * and tx where relevant (caller frees with immu__free). Returns 0,
 * IMMU_ECORRUPT, IMMU_EINVAL (bad settings), IMMU_ENOMEM, -errno. */
int immu_store_open(const char *dir, const immu_store_options *o,
                    immu_store **out, char **errmsg);

/* Flushes, syncs, writes a final checkpoint and closes. NULL allowed. */
int immu_store_close(immu_store *s);

/* One entry to commit. All borrowed. |key| is the store key. */
typedef struct immu_store_entry {
  const uint8_t *key;
  size_t klen;
  const uint8_t *md; /* KV metadata; any makes the tx header version 1 */
  size_t mdlen;
  const uint8_t *value;
  size_t vlen;
} immu_store_entry;

/* Called in the serial section with the ID the tx is getting, before it is
 * hashed, so the caller can write that ID into its entries' bytes (ExecAll's
 * bound references with atTx = 0). Must not block; return 0 or an error,
 * which fails only this tx. */
typedef int (*immu_store_bind_fn)(void *arg, uint64_t tx_id);

/* Commits one tx of |n| entries. On success *hdr (if not NULL) is the
 * committed header and *alh its Alh. Returns 0; IMMU_EINVAL (no entries,
 * too many, empty/too long key, too long value or metadata, a duplicate
 * key); IMMU_EPOISONED after an earlier fatal I/O error; -errno from the
 * log write or fsync (then the tx is not committed, or - after a failed
 * fsync - its fate is unknown and the store is poisoned). */
int immu_store_commit(immu_store *s, const immu_store_entry *e, size_t n,
                      immu_store_bind_fn bind, void *bind_arg,
                      immu_tx_header *hdr, immu_digest *alh);

/* Completion of an asynchronous commit: rc as immu_store_commit's; on 0,
 * |hdr| and |alh| are the committed tx's (NULL otherwise; both borrowed
 * for the call). Called exactly once, from an engine thread (a committing
 * leader - another caller's thread inside immu_store_commit - or one of
 * the env's committer threads), never from inside the submitting call, and
 * without any store lock held. Must not block and must be cheap: it
 * delays the rest of its group. It may call immu_store_commit_async and
 * immu_store_on_indexed, never immu_store_commit or immu_store_close.
 * Callbacks of different txs may run concurrently on different threads
 * and not in tx order (each runs after its own group is published, and
 * groups are published in order). */
typedef void (*immu_store_done_fn)(void *arg, int rc,
                                   const immu_tx_header *hdr,
                                   const immu_digest *alh);

/* Queues one tx of |n| entries like immu_store_commit (no bind) and returns
 * without waiting: the entries are validated, hashed and copied before it
 * returns (the caller may free them), and |done| reports the outcome once
 * the tx is durable per the store's mode. Returns 0 (done will be called)
 * or, with done never called: IMMU_EINVAL (as immu_store_commit),
 * IMMU_EPOISONED, IMMU_ECLOSED (close() has started), IMMU_ENOMEM, or
 * -errno when the env cannot start its committer threads. A tx queued
 * before immu_store_close starts is committed before close returns (done
 * gets 0, or the write error). */
int immu_store_commit_async(immu_store *s, const immu_store_entry *e,
                            size_t n, immu_store_done_fn done, void *arg);

/* Completion of immu_store_on_indexed: rc 0 (the index covers the tx),
 * IMMU_ETIMEOUT, IMMU_ECORRUPT (the indexer stopped at a corrupt tx, see
 * immu_store_index_bad_tx) or IMMU_ECLOSED (the store is closing). Called
 * once, from an engine thread (index worker, a committer thread that
 * indexed the group it published, env timer, or the thread in
 * immu_store_close), without any store lock held; same rules as
 * immu_store_done_fn. */
typedef void (*immu_store_indexed_fn)(void *arg, int rc);

/* Asynchronous immu_store_wait_indexed. Returns:
 *   IMMU_STORE_ALREADY  the index already covers |tx|; done is NOT called
 *   0                   queued; done is called exactly once later
 *   < 0                 done is NOT called: IMMU_ECORRUPT (as above),
 *                       IMMU_ETIMEOUT (timeout_ms == 0), IMMU_ECLOSED,
 *                       IMMU_ENOMEM.
 * timeout_ms < 0 waits forever; timeouts fire within a few ms (the env
 * timer's tick). */
#define IMMU_STORE_ALREADY 1
int immu_store_on_indexed(immu_store *s, uint64_t tx, long timeout_ms,
                          immu_store_indexed_fn done, void *arg);

/* Last committed tx and its Alh (0 and H("") when empty). */
void immu_store_state(immu_store *s, uint64_t *tx_id, immu_digest *alh);

/* Last committed tx id (0 when empty), without the store's lock: what
 * every read's index-wait check needs, and it must not contend with the
 * commit path. */
uint64_t immu_store_last_id(immu_store *s);

/* Last tx the index covers, without any lock (a snapshot: it only grows). */
uint64_t immu_store_indexed_id(immu_store *s);

/* How far, in txs, a committed tx may be ahead of the index and still be
 * acknowledged before the index covers it (immu_store_ack_unindexed). */
#define IMMU_STORE_ACK_LAG 1024

/* For a writer that answers its client once tx |tx| is committed instead
 * of once it is indexed: returns 1 and records |tx| (see
 * immu_store_acked_id) if the index is healthy and at most
 * IMMU_STORE_ACK_LAG txs behind |tx|, else 0 (the writer then waits for
 * the index as before, which keeps the index's lag bounded). immudb
 * answers a Set only once it is indexed; a read that waits for the last
 * committed tx sees the same either way, and a read that does not wait
 * (noWait) must wait for immu_store_acked_id instead. Thread-safe, no
 * lock. */
int immu_store_ack_unindexed(immu_store *s, uint64_t tx);

/* The highest tx immu_store_ack_unindexed recorded (0: none): the least
 * the index must cover before any read, noWait ones included. */
uint64_t immu_store_acked_id(immu_store *s);

/* Reads and validates tx |id| (CRCs; not the hashes). The record borrows
 * *buf, which the caller frees with immu__free after immu__txrec_free.
 * IMMU_ENOTFOUND if id is 0 or not committed yet, IMMU_ECORRUPT. */
int immu_store_read_tx(immu_store *s, uint64_t id, immu_txrec *rec,
                       uint8_t **buf);

/* Header and Alh of tx |id| (reads only the record's head). */
int immu_store_read_header(immu_store *s, uint64_t id, immu_tx_header *hdr,
                           immu_digest *alh);

/* The raw record frame of tx |id| (txrec.h format), after checking its
 * CRCs and hashes; caller frees *buf with immu__free. Used to export txs
 * (backup, dump, replication). Errors as immu_store_read_tx. */
int immu_store_read_frame(immu_store *s, uint64_t id, uint8_t **buf,
                          size_t *len);

/* Appends a tx exported from another store, unchanged (same id, ts and
 * hashes): the frame must decode, its hashes must recompute, and it must
 * extend this store's chain exactly (id = last + 1, PrevAlh = last Alh,
 * BlTxID = id - 1, BlRoot = the tree's root). Returns 0, IMMU_ECORRUPT
 * (bad frame or hashes), IMMU_ECONFLICT (does not extend the chain),
 * IMMU_EINVAL (over this store's limits), or a commit error. */
int immu_store_replicate(immu_store *s, const uint8_t *frame, size_t len,
                         immu_tx_header *hdr, immu_digest *alh);

/* Reads |n| value bytes at log position |pos| (from the index). */
int immu_store_read_value(immu_store *s, uint64_t pos, void *buf, size_t n);

/* DualProof(source, target) over the committed state (spec 6.2); never
 * takes the commit path's locks. Free with immu_dual_proof_free. */
int immu_store_dual_proof(immu_store *s, uint64_t source_id,
                          uint64_t target_id, immu_dual_proof *out);

/* The tx at which the indexer stopped because its data does not match its
 * hashes, or 0. */
uint64_t immu_store_index_bad_tx(immu_store *s);

/* The key index, for the KV layer's reads. */
immu_index *immu_store_index(immu_store *s);

/* Waits until the index covers tx |tx| (or the timeout passes: then
 * IMMU_ETIMEOUT). timeout_ms < 0 waits forever. IMMU_ECORRUPT at once if
 * the indexer stopped at a tx whose data does not match its hashes
 * (immu_store_index_bad_tx names it). */
int immu_store_wait_indexed(immu_store *s, uint64_t tx, long timeout_ms);

typedef struct immu_store_stats {
  uint64_t txs;
  uint64_t entries;
  uint64_t indexed_tx;
  uint64_t index_lag;    /* txs committed but not indexed yet */
  uint64_t log_bytes;
  uint64_t txi_bytes;
  uint64_t aht_bytes;
  uint64_t index_bytes;
  uint64_t groups;       /* commit groups (one log write each) */
  uint64_t fsyncs;       /* log fsyncs */
  uint64_t value_bytes;  /* logical bytes committed: keys + values */
  uint64_t aht_block_reads; /* ahtree blocks read into its cache (misses) */
} immu_store_stats;

void immu_store_get_stats(immu_store *s, immu_store_stats *st);

/* Re-hashes every tx, checks the Alh chain, BlTxID/BlRoot against the
 * ahtree and every ahtree leaf. |progress| (may be NULL) is called every
 * 1024 txs. Returns 0 or IMMU_ECORRUPT with a message in *errmsg. */
int immu_store_verify(immu_store *s,
                      void (*progress)(void *arg, uint64_t done,
                                       uint64_t total),
                      void *arg, char **errmsg);

/* Settings of an open store (the persisted limits). */
void immu_store_limits(immu_store *s, uint32_t *max_key_len,
                       uint32_t *max_value_len, uint32_t *max_entries);

#endif
