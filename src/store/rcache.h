/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The latest-row cache: a bounded, sharded hash table of the 'l' rows the
 * index applies wrote most recently, shared by every index of one
 * environment (an owner id per open index keeps them apart).
 *
 * It is written through by the apply, after RocksDB took the batch and
 * before the new indexed tx is published, so a row found here is never
 * behind what a reader of that published tx may see; a row is never
 * inserted from a read (a miss on random reads over a large key set would
 * otherwise pay an insert and an eviction each, as RocksDB's row cache
 * did). Once a shard is over its share of the capacity its oldest rows go
 * first, except those read since their last pass (second chance).
 * Thread-safe: one mutex per shard.
 */
#ifndef IMMU_STORE_RCACHE_H
#define IMMU_STORE_RCACHE_H

#include <stddef.h>
#include <stdint.h>

typedef struct immu__rcache immu__rcache;

typedef struct immu__rcache_stats {
  uint64_t hits, misses;
  uint64_t rows;  /* rows held now */
  uint64_t bytes; /* their accounted size */
  uint64_t capacity;
} immu__rcache_stats;

/* A cache of |capacity| bytes (0 = the cache is off: every get misses and
 * puts store nothing). IMMU_ENOMEM. */
int immu__rcache_new(size_t capacity, immu__rcache **out);
void immu__rcache_free(immu__rcache *c);

/* A fresh owner id (never 0, never reused). */
uint64_t immu__rcache_owner(immu__rcache *c);

/* Makes |v| (not NULL) the row of |key| for |owner|, replacing the one
 * held. When it
 * cannot be stored (allocation failure, larger than a shard) the held row
 * is dropped instead, so the cache never answers with an older row. */
void immu__rcache_put(immu__rcache *c, uint64_t owner, const uint8_t *key,
                      size_t klen, const uint8_t *v, size_t vlen);

/* Drops the row of |key| for |owner|, if one is held. */
void immu__rcache_erase(immu__rcache *c, uint64_t owner, const uint8_t *key,
                        size_t klen);

/* Calls fn(row, len, arg) under the shard's lock with |owner|'s row for
 * |key| and returns what it returns; IMMU_ENOTFOUND when no row is held
 * (fn must not return IMMU_ENOTFOUND itself, nor call into the cache). */
int immu__rcache_get(immu__rcache *c, uint64_t owner, const uint8_t *key,
                     size_t klen,
                     int (*fn)(const uint8_t *row, size_t len, void *arg),
                     void *arg);

/* How many rows the cache has let go of without replacing them, over all
 * owners: evicted for room, or not stored by a put (an erase, a row too
 * large for a shard, no memory). Rows dropped by drop_owner do not count.
 * While it keeps its value, every row put since is still held: an owner
 * that has put every row it has can take a miss as "no such row" (the
 * index's apply, for a database whose index started empty). A drop is
 * counted under the shard's lock before that lock is released, so a get
 * that missed because of it is followed by a read of the new count.
 * UINT64_MAX while the cache is off (it holds nothing). Thread-safe. */
uint64_t immu__rcache_drops(immu__rcache *c);

/* Drops every row of |owner| (its index is closing). */
void immu__rcache_drop_owner(immu__rcache *c, uint64_t owner);

void immu__rcache_get_stats(immu__rcache *c, immu__rcache_stats *out);

#endif
