/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The key index on RocksDB's C API (contract and namespaces in index.h).
 *
 * Layout decisions beyond the header comment:
 *   - 'm' record key is the 5 bytes "mlast"; value u64 last tx then u32
 *     INDEX_FORMAT (exactly 12 bytes), one copy per column family.
 *   - 'c' record key is 'c' followed by one byte; value u64.
 *   - 'l' values always carry the inline_len field; 'h' values stop after
 *     md (no inline_len); the decoder accepts both shapes.
 *   - 'z' rows hold ENC(user key), the ZAdd's encKey without its 0x00
 *     prefix. A member is one row: re-adding the same ZAdd store key in a
 *     later tx deletes the row of the previous tx in the same batch.
 *   - Scores -0.0 and +0.0 are distinct SCOREs (so the exact bits survive
 *     and the store key can be rebuilt) but compare equal in zscan bounds.
 *
 * Every value read back from RocksDB is validated before use; malformed
 * bytes give IMMU_ECORRUPT. RocksDB errors starting with "Corruption" give
 * IMMU_ECORRUPT, any other RocksDB error -EIO.
 *
 * Apply sorts the batch's entries by key (stably, so a key's occurrences
 * stay in tx order), reads every distinct key's 'l' record with one
 * batched MultiGet, then writes the 'h' rows, the 'l' rows, the 'z' rows,
 * the changed 'c' counters and 'm' in one WriteBatch (WAL off): sorted
 * inserts are cheaper for the memtable, and one write is atomic.
 *
 * Caches: the env's whole budget is one block cache shared by every
 * database. The "latest" family keeps its index and filter blocks in its
 * table readers (one cache lookup per Get); the default family has no
 * filters and charges its index blocks to the cache. (No row cache: see
 * immu__index_env_new.)
 *
 * Concurrency: immu__index_apply owns the write batch and the scratch
 * arrays; readers only touch the shared point-read options (read-only
 * after open), the atomics and their own per-call buffers and iterators
 * (an iterator pins an implicit snapshot).
 */
#include "store/index.h"

#include <errno.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <rocksdb/c.h>

#include "core/endian.h"
#include "core/mem.h"
#include "immudb/err.h"
#include "store/rcache.h"

#define NS_META 'm'
#define NS_LATEST 'l'
#define NS_HIST 'h'
#define NS_ZSET 'z'
#define NS_COUNT 'c'

static const char meta_key[] = "mlast";
#define META_KEY_LEN 5
/* On-disk format of the index. 1: one column family, 8-byte 'm' (no
 * version). 2: 'l' rows in their own column family, 'm' = u64 last tx |
 * u32 version, written to both families. 3: as 2, but the latest revision
 * of a key lives in its 'l' row only; 'h' rows hold the earlier ones. An
 * index of another version is reported corrupt, so the store rebuilds it
 * from the log. */
#define INDEX_FORMAT 3u
#define META_LEN 12
#define CF_LATEST_NAME "latest"
/* Restart points in the latest family's data blocks: every key. Point
 * reads then land on their key through the block's hash index without
 * parsing the keys before it, and random user keys share no prefix worth
 * delta-encoding. Measured R1 (2 readers, 10^6 keys): interval 16
 * 295-325k, 4 352-505k, 1 459-552k Get/s, interleaved runs; the blocks
 * grow by the 4-byte restart entry per key. */
#define LATEST_RESTART_INTERVAL 1
/* The latest family's data blocks: 16 KiB with one hash bucket per 0.25
 * keys. A Get pays a fixed price per block it touches (a cache-shard
 * lookup, the index block's binary search, the block iterator), which
 * larger blocks spread over four times as many keys; the sparser buckets
 * keep the block's hash lookup from falling back to a binary search on
 * collisions. Measured R1 (2 readers, 10^6 keys, interleaved, same
 * build): 4 KiB/0.75 330-396k Get/s, 16 KiB/0.25 474-593k, 32 KiB/0.25
 * 429-466k. The buckets are one byte each: ~270 bytes, 1.6%, of a block
 * of ~67 rows. */
#define LATEST_BLOCK_SIZE ((size_t)16 << 10)
#define LATEST_HASH_RATIO 0.25

/* ENTRY without md and inline parts: u64 tx, u32 idx, u64 vpos, u32 vlen,
 * 32 hVal, u64 revision, u8 mdlen. */
#define ENTRY_FIXED 65u
#define NO_INLINE 0xffffffffu

/* Small keys are built on the stack in the read paths. */
#define STACK_KEY 256

#define DEFAULT_CACHE ((size_t)256 << 20)
#define DEFAULT_BG 2
#define WRITE_BUFFER ((size_t)8 << 20)
#define MAX_OPEN_FILES 64
#define L0_TRIGGER 8

struct immu_index_env {
  rocksdb_cache_t *cache;     /* blocks */
  immu__rcache *rc;           /* the latest rows the applies wrote */
  rocksdb_env_t *renv;
  rocksdb_block_based_table_options_t *bbto;   /* 'latest': with bloom */
  rocksdb_block_based_table_options_t *bbto_h; /* default: no filter */
  rocksdb_options_t *opts;   /* DB options and the 'latest' family's */
  rocksdb_options_t *opts_h; /* the default family's */
};

/* Apply scratch: the batch's keys in key order, and one group per
 * distinct key. */
typedef struct skey {
  const uint8_t *key; /* borrowed from the kvs */
  size_t klen;
  size_t i; /* index in kvs */
} skey;

typedef struct group {
  size_t start, end; /* range in the sorted skeys */
  uint64_t base;     /* revision of the indexed latest version, 0 if new */
  uint64_t prev_tx;  /* its tx */
  const uint8_t *prev; /* its 'l' row cut to the 'h' shape (in mvals[] or
                        * ix->cbuf) */
  size_t prev_len;
  size_t coff, clen; /* its 'l' row copied into ix->cbuf; clen 0: none */
  size_t loff, llen; /* its new 'l' row in ix->lbuf */
} group;

struct immu_index {
  immu_index_env *env;
  rocksdb_t *db;
  rocksdb_column_family_handle_t *cf;   /* default: 'h' 'z' 'c' 'm' */
  rocksdb_column_family_handle_t *cf_l; /* 'latest': 'l' rows and 'm' */
  rocksdb_readoptions_t *ro;          /* point reads; shared, never modified */
  rocksdb_readoptions_t *ro_mem;      /* as ro, memtables and cache only */
  rocksdb_writeoptions_t *wo;
  rocksdb_flushoptions_t *fo;
  uint32_t inline_max;
  uint64_t rc_owner; /* this index's rows in env->rc */
  /* The row cache holds every 'l' row of this index while its drop count
   * stays at |rc_drops| (the index was empty when opened, and every apply
   * puts its rows): the apply then reads the previous rows from the cache
   * and takes a miss as a new key, with no RocksDB lookup. Cleared for
   * good once the cache drops a row. Owned by the applying thread. */
  int rc_complete;
  uint64_t rc_drops;
  _Atomic uint64_t last_tx;
  _Atomic uint64_t counts[256];

  /* Owned by the applying thread. */
  rocksdb_writebatch_t *wb;
  skey *sk;
  uint64_t *revs; /* revision of each sorted entry */
  group *grp;
  const char **mkeys; /* batched lookup of the groups' 'l' records */
  size_t *msizes;
  rocksdb_pinnableslice_t **mvals;
  char **merrs;
  size_t acap; /* capacity of sk, revs, grp, m* */
  uint8_t *mbuf;
  size_t mcap;
  size_t hlen; /* length of the current 'h' key prefix in kbuf */
  uint8_t *kbuf;
  size_t kcap;
  uint8_t *vbuf;
  size_t vcap;
  uint8_t *lbuf; /* the batch's new 'l' rows, for the write and the cache */
  size_t lcap;
  uint8_t *zbuf;
  size_t zcap;
  uint8_t *cbuf; /* previous 'l' rows copied from the row cache */
  size_t ccap, clen;
};

/* ------------------------------------------------------------------ */
/* Helpers                                                             */
/* ------------------------------------------------------------------ */

static int err_code(const char *err) {
  if (strncmp(err, "Corruption", 10) == 0)
    return IMMU_ECORRUPT;
  /* Only from ro_mem (Status::Incomplete): the answer is not in the
   * memtables or the cache. */
  if (strncmp(err, "Result incomplete", 17) == 0)
    return IMMU_EWOULDBLOCK;
  return -EIO;
}

/* The text of the last RocksDB failure of the calling thread that was not
 * an expected "Result incomplete" (immu__index_last_error). */
static _Thread_local char last_err[160];

static int rocks_err(char *err) {
  int rc = err_code(err);
  if (rc != IMMU_EWOULDBLOCK)
    snprintf(last_err, sizeof last_err, "%s", err);
  rocksdb_free(err);
  return rc;
}

const char *immu__index_last_error(void) {
  return last_err;
}

static int reserve(uint8_t **p, size_t *cap, size_t need) {
  uint8_t *np;
  size_t ncap;
  if (need <= *cap)
    return 0;
  ncap = *cap ? *cap : 64;
  while (ncap < need)
    ncap *= 2;
  np = immu__realloc(*p, ncap);
  if (np == NULL)
    return IMMU_ENOMEM;
  *p = np;
  *cap = ncap;
  return 0;
}

/* RocksDB counts every key comparison and block read in a thread-local
 * perf context (its default level is "count"). Through the shared library
 * each count costs calls to __tls_get_addr: 15% of the instructions of an
 * apply under callgrind. Nothing in the process reads perf contexts, so
 * every thread that calls into the index turns counting off, once (the
 * level is per thread; RocksDB's own background threads keep theirs). */
static _Thread_local int perf_quiet_done;

static void perf_quiet(void) {
  if (!perf_quiet_done) {
    rocksdb_set_perf_level(rocksdb_disable);
    perf_quiet_done = 1;
  }
}

/* A key buffer that lives on the stack when small. */
typedef struct kbuf {
  uint8_t *p;
  uint8_t st[STACK_KEY];
} kbuf;

static int kbuf_init(kbuf *b, size_t need) {
  if (need <= STACK_KEY) {
    b->p = b->st;
    return 0;
  }
  b->p = immu__malloc(need);
  return b->p == NULL ? IMMU_ENOMEM : 0;
}

static void kbuf_free(kbuf *b) {
  if (b->p != b->st)
    immu__free(b->p);
}

/* Bytewise comparison with shorter-is-smaller, RocksDB's default order. */
static int keycmp(const uint8_t *a, size_t an, const uint8_t *b, size_t bn) {
  size_t n = an < bn ? an : bn;
  int c = n ? memcmp(a, b, n) : 0;
  if (c != 0)
    return c;
  return an < bn ? -1 : an > bn ? 1 : 0;
}

/* ENC(k): 0x00 -> 0x00 0xff, then 0x00 0x01. At most 2 * n + 2 bytes. */
#define ENC_MAX(n) (2 * (size_t)(n) + 2)

static size_t enc_put(uint8_t *out, const uint8_t *k, size_t n) {
  size_t o = 0;
  while (n > 0) {
    const uint8_t *z = memchr(k, 0, n);
    size_t run = z ? (size_t)(z - k) : n;
    memcpy(out + o, k, run);
    o += run;
    k += run;
    n -= run;
    if (z != NULL) {
      out[o++] = 0x00;
      out[o++] = 0xff;
      k++;
      n--;
    }
  }
  out[o++] = 0x00;
  out[o++] = 0x01;
  return o;
}

/* Decodes ENC at |p| (|n| bytes available) into |out| (capacity >= n).
 * Returns the encoded length consumed, or 0 if malformed. */
static size_t enc_get(const uint8_t *p, size_t n, uint8_t *out,
                      size_t *out_len) {
  size_t i = 0, o = 0;
  while (i < n) {
    if (p[i] != 0x00) {
      out[o++] = p[i++];
      continue;
    }
    if (i + 1 >= n)
      return 0;
    if (p[i + 1] == 0xff) {
      out[o++] = 0x00;
      i += 2;
    } else if (p[i + 1] == 0x01) {
      *out_len = o;
      return i + 2;
    } else {
      return 0;
    }
  }
  return 0;
}

/* SCORE: order-preserving u64 of a double. */
static uint64_t score_enc(double d) {
  uint64_t b;
  memcpy(&b, &d, sizeof b);
  return (b >> 63) ? ~b : b ^ ((uint64_t)1 << 63);
}

static double score_dec(uint64_t s) {
  uint64_t b = (s >> 63) ? s ^ ((uint64_t)1 << 63) : ~s;
  double d;
  memcpy(&d, &b, sizeof d);
  return d;
}

/* Smallest key greater than every key starting with |p| (in place; the
 * result may be shorter). Returns the new length, 0 if there is none. */
static size_t prefix_succ(uint8_t *p, size_t n) {
  while (n > 0) {
    if (p[n - 1] != 0xff) {
      p[n - 1]++;
      return n;
    }
    n--;
  }
  return 0;
}

/* ------------------------------------------------------------------ */
/* ENTRY                                                               */
/* ------------------------------------------------------------------ */

static size_t entry_size(const immu_index_kv *kv, int inl_field, int inl) {
  size_t n = ENTRY_FIXED + kv->mdlen;
  if (inl_field)
    n += 4 + (inl ? kv->vlen : 0);
  return n;
}

static size_t entry_put(uint8_t *out, const immu_index_kv *kv, uint64_t rev,
                        int inl_field, int inl) {
  uint8_t *p = out;
  immu__put_u64(p, kv->tx);
  immu__put_u32(p + 8, kv->idx);
  immu__put_u64(p + 12, kv->vpos);
  immu__put_u32(p + 20, kv->vlen);
  memcpy(p + 24, kv->hval.b, IMMU_DIGEST_LEN);
  immu__put_u64(p + 56, rev);
  p[64] = (uint8_t)kv->mdlen;
  p += ENTRY_FIXED;
  if (kv->mdlen > 0) {
    memcpy(p, kv->md, kv->mdlen);
    p += kv->mdlen;
  }
  if (inl_field) {
    immu__put_u32(p, inl ? kv->vlen : NO_INLINE);
    p += 4;
    if (inl && kv->vlen > 0) {
      memcpy(p, kv->value, kv->vlen);
      p += kv->vlen;
    }
  }
  return (size_t)(p - out);
}

/* Decodes an ENTRY into |e| (inline_value, key untouched); *inl points at
 * the inline bytes inside |v| when e->has_inline. */
static int entry_get(const uint8_t *v, size_t n, immu_index_entry *e,
                     const uint8_t **inl) {
  size_t mdl, rest;
  uint32_t il;
  if (n < ENTRY_FIXED)
    return IMMU_ECORRUPT;
  mdl = v[64];
  if (mdl > IMMU_KV_MD_MAX || n < ENTRY_FIXED + mdl)
    return IMMU_ECORRUPT;
  e->tx = immu__get_u64(v);
  e->idx = immu__get_u32(v + 8);
  e->vpos = immu__get_u64(v + 12);
  e->vlen = immu__get_u32(v + 20);
  memcpy(e->hval.b, v + 24, IMMU_DIGEST_LEN);
  e->revision = immu__get_u64(v + 56);
  e->mdlen = (uint8_t)mdl;
  if (mdl > 0)
    memcpy(e->md, v + ENTRY_FIXED, mdl);
  if (e->tx == 0 || e->revision == 0)
    return IMMU_ECORRUPT;
  rest = n - ENTRY_FIXED - mdl;
  e->has_inline = 0;
  *inl = NULL;
  if (rest == 0)
    return 0; /* 'h' shape */
  if (rest < 4)
    return IMMU_ECORRUPT;
  il = immu__get_u32(v + ENTRY_FIXED + mdl);
  if (il == NO_INLINE)
    return rest == 4 ? 0 : IMMU_ECORRUPT;
  if (il != e->vlen || rest - 4 != (size_t)il)
    return IMMU_ECORRUPT;
  e->has_inline = 1;
  *inl = v + ENTRY_FIXED + mdl + 4;
  return 0;
}

/* Decodes into the caller's entry, reusing its inline buffer. |out| is
 * unchanged on failure. */
static int entry_to_out(const uint8_t *v, size_t n, immu_index_entry *out) {
  immu_index_entry t;
  const uint8_t *inl;
  int rc = entry_get(v, n, &t, &inl);
  if (rc != 0)
    return rc;
  t.inline_value = out->inline_value;
  if (t.has_inline) {
    uint8_t *p = immu__realloc(out->inline_value, t.vlen ? t.vlen : 1);
    if (p == NULL)
      return IMMU_ENOMEM;
    if (t.vlen > 0)
      memcpy(p, inl, t.vlen);
    t.inline_value = p;
  }
  t.key = NULL;
  t.klen = 0;
  *out = t;
  return 0;
}

void immu__index_entry_clear(immu_index_entry *e) {
  if (e == NULL)
    return;
  immu__free(e->inline_value);
  memset(e, 0, sizeof *e);
}

/* ------------------------------------------------------------------ */
/* Env                                                                 */
/* ------------------------------------------------------------------ */

/* An LRU cache with shards of at least 4 MiB: an index or filter block
 * larger than its shard would be evicted as soon as it is inserted. */
static rocksdb_cache_t *make_lru(size_t bytes) {
  rocksdb_lru_cache_options_t *o = rocksdb_lru_cache_options_create();
  rocksdb_cache_t *c;
  int bits = 0;
  if (o == NULL)
    return NULL;
  while (bits < 6 && (bytes >> (bits + 1)) >= ((size_t)4 << 20))
    bits++;
  rocksdb_lru_cache_options_set_capacity(o, bytes);
  rocksdb_lru_cache_options_set_num_shard_bits(o, bits);
  c = rocksdb_cache_create_lru_opts(o);
  rocksdb_lru_cache_options_destroy(o);
  return c;
}

int immu__index_env_new(size_t cache_bytes, int bg_threads,
                        immu_index_env **out) {
  immu_index_env *env;
  rocksdb_filterpolicy_t *bloom;
  int hi;

  *out = NULL;
  if (bg_threads < 0)
    return IMMU_EINVAL;
  if (cache_bytes == 0)
    cache_bytes = DEFAULT_CACHE;
  if (bg_threads == 0)
    bg_threads = DEFAULT_BG;
  env = immu__calloc(1, sizeof *env);
  if (env == NULL)
    return IMMU_ENOMEM;

  /* An eighth of the budget holds the latest rows the applies wrote
   * (rcache.h), the rest caches blocks. RocksDB's row cache (filled by
   * reads) was measured slower for random reads over 1M keys (87k vs
   * 115-134k Get/s): its misses pay an insert and an eviction each. Ours
   * is filled by writes only: a Get of a recently written key skips the
   * memtables, filters and blocks (a third of a server Get's CPU), one of
   * an older key pays one failed hash lookup. */
  if (immu__rcache_new(cache_bytes / 8, &env->rc) != 0) {
    immu__free(env);
    return IMMU_ENOMEM;
  }
  env->cache = make_lru(cache_bytes - cache_bytes / 8);
  env->renv = rocksdb_create_default_env();
  env->bbto = rocksdb_block_based_options_create();
  env->opts = rocksdb_options_create();
  bloom = rocksdb_filterpolicy_create_bloom_full(10);
  if (env->cache == NULL || env->renv == NULL ||
      env->bbto == NULL || env->opts == NULL || bloom == NULL) {
    if (bloom != NULL)
      rocksdb_filterpolicy_destroy(bloom);
    immu__index_env_free(env);
    return IMMU_ENOMEM;
  }

  /* Compactions in the low-priority pool, flushes in the high one. */
  hi = bg_threads > 2 ? bg_threads / 2 : 1;
  rocksdb_env_set_background_threads(env->renv, bg_threads);
  rocksdb_env_set_high_priority_background_threads(env->renv, hi);

  rocksdb_block_based_options_set_block_cache(env->bbto, env->cache);
  /* The table options take ownership of the policy. */
  rocksdb_block_based_options_set_filter_policy(env->bbto, bloom);
  rocksdb_block_based_options_set_whole_key_filtering(env->bbto, 1);
  /* Index and filter blocks live in each SST's table reader, outside the
   * block cache: a Get then does one cache lookup (the data block) instead
   * of three, each under a shard mutex (+25% random Get/s). The price is
   * memory that grows with the data instead of the cache budget: ~10 bits
   * of filter per key plus one index entry per 16 KiB data block. Only
   * the "latest" family pays it (one record per key): 1.52 MB for 10^6
   * keys (rocksdb.estimate-table-readers-mem), 1.5 bytes per key, under 1%
   * of that family's size; 1000 databases of 10^6 keys each would hold
   * ~1.5 GB of it. */
  rocksdb_block_based_options_set_cache_index_and_filter_blocks(env->bbto, 0);
  rocksdb_block_based_options_set_data_block_index_type(
      env->bbto,
      rocksdb_block_based_table_data_block_index_type_binary_search_and_hash);
  rocksdb_block_based_options_set_data_block_hash_ratio(env->bbto,
                                                         LATEST_HASH_RATIO);
  rocksdb_block_based_options_set_block_restart_interval(env->bbto,
                                                 LATEST_RESTART_INTERVAL);
  rocksdb_block_based_options_set_block_size(env->bbto, LATEST_BLOCK_SIZE);

  rocksdb_options_set_env(env->opts, env->renv);
  rocksdb_options_set_block_based_table_factory(env->opts, env->bbto);
  rocksdb_options_set_create_if_missing(env->opts, 1);
  rocksdb_options_set_max_open_files(env->opts, MAX_OPEN_FILES);
  rocksdb_options_set_write_buffer_size(env->opts, WRITE_BUFFER);
  rocksdb_options_set_max_write_buffer_number(env->opts, 2);
  rocksdb_options_set_max_background_jobs(env->opts, bg_threads + hi);
  rocksdb_options_set_level_compaction_dynamic_level_bytes(env->opts, 1);
  /* Compacting L0 into the base level rewrites the overlapping part of the
   * base level, i.e. all of it for random keys: waiting for 8 L0 files
   * instead of 4 halves those rewrites (-23% background instructions per
   * KV, callgrind over 600k KVs), for a few more filter probes per Get
   * while L0 is full. A larger memtable instead made the sorted inserts
   * of an apply far dearer (+37% apply instructions at 32 MiB). */
  rocksdb_options_set_level0_file_num_compaction_trigger(env->opts, L0_TRIGGER);
  /* No compression: the records are hashes, positions and user values
   * that snappy barely shrinks, while compressing took ~12% of all the
   * index's instructions (flush and compaction) and decompressing every
   * block read back from disk on top. */
  rocksdb_options_set_compression(env->opts, rocksdb_no_compression);
  /* Memtable bloom on whole keys: cheap misses for the apply's lookups. */
  rocksdb_options_set_memtable_prefix_bloom_size_ratio(env->opts, 0.05);
  rocksdb_options_set_memtable_whole_key_filtering(env->opts, 1);
  rocksdb_options_set_skip_stats_update_on_db_open(env->opts, 1);
  /* Keep RocksDB's own LOG small: 1000 databases each keep one. */
  rocksdb_options_set_info_log_level(env->opts, 2 /* WARN */);
  rocksdb_options_set_keep_log_file_num(env->opts, 2);
  rocksdb_options_set_max_log_file_size(env->opts, (size_t)1 << 20);
  rocksdb_options_set_max_manifest_file_size(env->opts, (size_t)64 << 20);
  /* Two column families and no WAL: only atomic flushes keep what is on
   * disk a consistent prefix of the applies across both (the 'm' copies
   * in each family are compared at open as a second line of defence). */
  rocksdb_options_set_create_missing_column_families(env->opts, 1);
  rocksdb_options_set_atomic_flush(env->opts, 1);

  /* The default family ('h', 'z', 'c', 'm') is read by history, revision
   * and sorted-set queries only, nearly always for keys that exist: no
   * bloom filters (neither in SSTs nor in the memtable), and its index
   * blocks go to the shared cache so that the history, which grows with
   * every write, stays within the cache budget. */
  env->opts_h = rocksdb_options_create_copy(env->opts);
  env->bbto_h = rocksdb_block_based_options_create();
  if (env->opts_h == NULL || env->bbto_h == NULL) {
    immu__index_env_free(env);
    return IMMU_ENOMEM;
  }
  rocksdb_block_based_options_set_block_cache(env->bbto_h, env->cache);
  rocksdb_block_based_options_set_cache_index_and_filter_blocks(env->bbto_h, 1);
  rocksdb_block_based_options_set_cache_index_and_filter_blocks_with_high_priority(
      env->bbto_h, 1);
  rocksdb_block_based_options_set_data_block_index_type(
      env->bbto_h,
      rocksdb_block_based_table_data_block_index_type_binary_search_and_hash);
  rocksdb_block_based_options_set_data_block_hash_ratio(env->bbto_h, 0.75);
  rocksdb_options_set_block_based_table_factory(env->opts_h, env->bbto_h);
  rocksdb_options_set_memtable_prefix_bloom_size_ratio(env->opts_h, 0);
  rocksdb_options_set_memtable_whole_key_filtering(env->opts_h, 0);

  *out = env;
  return 0;
}

void immu__index_env_free(immu_index_env *env) {
  if (env == NULL)
    return;
  if (env->opts != NULL)
    rocksdb_options_destroy(env->opts);
  if (env->opts_h != NULL)
    rocksdb_options_destroy(env->opts_h);
  if (env->bbto != NULL)
    rocksdb_block_based_options_destroy(env->bbto);
  if (env->bbto_h != NULL)
    rocksdb_block_based_options_destroy(env->bbto_h);
  if (env->cache != NULL)
    rocksdb_cache_destroy(env->cache);
  if (env->renv != NULL)
    rocksdb_env_destroy(env->renv);
  immu__rcache_free(env->rc);
  immu__free(env);
}

void immu__index_env_rcache_stats(immu_index_env *env,
                                  immu__rcache_stats *out) {
  immu__rcache_get_stats(env->rc, out);
}

/* ------------------------------------------------------------------ */
/* Iteration                                                           */
/* ------------------------------------------------------------------ */

typedef int (*row_fn)(void *ctx, const uint8_t *k, size_t kl, const uint8_t *v,
                      size_t vl);

/* Visits the keys in [lo, hi) (both bounds required) of family |cf|,
 * ascending or descending, under one implicit snapshot. |fn| returns 0 to
 * go on, 1 to stop, or a negative code to abort with. */
static int iterate_at(immu_index *ix, rocksdb_column_family_handle_t *cf,
                      const rocksdb_snapshot_t *snap, const uint8_t *lo,
                      size_t lolen, const uint8_t *hi, size_t hilen, int desc,
                      row_fn fn, void *ctx) {
  rocksdb_readoptions_t *ro;
  rocksdb_iterator_t *it;
  char *err = NULL;
  int rc = 0;

  if (keycmp(lo, lolen, hi, hilen) >= 0)
    return 0;
  perf_quiet();
  ro = rocksdb_readoptions_create();
  if (ro == NULL)
    return IMMU_ENOMEM;
  rocksdb_readoptions_set_iterate_lower_bound(ro, (const char *)lo, lolen);
  rocksdb_readoptions_set_iterate_upper_bound(ro, (const char *)hi, hilen);
  if (snap != NULL)
    rocksdb_readoptions_set_snapshot(ro, snap);
  it = rocksdb_create_iterator_cf(ix->db, ro, cf);
  if (it == NULL) {
    rocksdb_readoptions_destroy(ro);
    return IMMU_ENOMEM;
  }
  if (desc)
    rocksdb_iter_seek_to_last(it);
  else
    rocksdb_iter_seek(it, (const char *)lo, lolen);
  while (rocksdb_iter_valid(it)) {
    size_t kl, vl;
    const char *k = rocksdb_iter_key(it, &kl);
    const char *v = rocksdb_iter_value(it, &vl);
    rc = fn(ctx, (const uint8_t *)k, kl, (const uint8_t *)v, vl);
    if (rc != 0)
      break;
    if (desc)
      rocksdb_iter_prev(it);
    else
      rocksdb_iter_next(it);
  }
  if (rc > 0)
    rc = 0;
  if (rc == 0) {
    rocksdb_iter_get_error(it, &err);
    if (err != NULL)
      rc = rocks_err(err);
  }
  rocksdb_iter_destroy(it);
  rocksdb_readoptions_destroy(ro);
  return rc;
}

static int iterate(immu_index *ix, rocksdb_column_family_handle_t *cf,
                   const uint8_t *lo, size_t lolen, const uint8_t *hi,
                   size_t hilen, int desc, row_fn fn, void *ctx) {
  return iterate_at(ix, cf, NULL, lo, lolen, hi, hilen, desc, fn, ctx);
}

/* ------------------------------------------------------------------ */
/* Open / close                                                        */
/* ------------------------------------------------------------------ */

static void set_msg(char **errmsg, const char *msg) {
  if (errmsg != NULL && *errmsg == NULL && msg != NULL)
    *errmsg = immu__strndup(msg, strlen(msg));
}

static int any_row(void *ctx, const uint8_t *k, size_t kl, const uint8_t *v,
                   size_t vl) {
  (void)k;
  (void)kl;
  (void)v;
  (void)vl;
  *(int *)ctx = 1;
  return 1;
}

static int load_count(void *ctx, const uint8_t *k, size_t kl, const uint8_t *v,
                      size_t vl) {
  immu_index *ix = ctx;
  if (kl != 2 || vl != 8)
    return IMMU_ECORRUPT;
  atomic_store_explicit(&ix->counts[k[1]], immu__get_u64(v),
                        memory_order_relaxed);
  return 0;
}

/* Reads the 'm' record of family |cf| into *last; *found = 0 if there is
 * none. A record of another format version is IMMU_ECORRUPT, so that the
 * store rebuilds the index instead of misreading it. */
static int read_meta(immu_index *ix, rocksdb_column_family_handle_t *cf,
                     int *found, uint64_t *last, char **errmsg) {
  char *err = NULL;
  size_t vl = 0;
  char *v = rocksdb_get_cf(ix->db, ix->ro, cf, meta_key, META_KEY_LEN, &vl,
                           &err);
  char msg[96];
  uint32_t fmt;

  *found = 0;
  *last = 0;
  if (err != NULL) {
    set_msg(errmsg, err);
    return rocks_err(err);
  }
  if (v == NULL)
    return 0;
  if (vl == 8) {
    /* Format 1 stored the bare u64. */
    rocksdb_free(v);
    snprintf(msg, sizeof msg, "index: format 1, this version needs %u",
             INDEX_FORMAT);
    set_msg(errmsg, msg);
    return IMMU_ECORRUPT;
  }
  if (vl != META_LEN) {
    rocksdb_free(v);
    snprintf(msg, sizeof msg, "index: malformed 'm' record (%zu bytes)", vl);
    set_msg(errmsg, msg);
    return IMMU_ECORRUPT;
  }
  fmt = immu__get_u32((const uint8_t *)v + 8);
  *last = immu__get_u64((const uint8_t *)v);
  rocksdb_free(v);
  if (fmt != INDEX_FORMAT) {
    snprintf(msg, sizeof msg, "index: format %u, this version needs %u",
             (unsigned)fmt, INDEX_FORMAT);
    set_msg(errmsg, msg);
    return IMMU_ECORRUPT;
  }
  *found = 1;
  return 0;
}

static int load_state(immu_index *ix, char **errmsg) {
  static const uint8_t all_lo[1] = {0x00};
  static const uint8_t all_hi[2] = {0xff, 0xff};
  static const uint8_t c_lo[1] = {NS_COUNT};
  static const uint8_t c_hi[1] = {NS_COUNT + 1};
  uint64_t last_h, last_l;
  int found_h, found_l, rc;

  if ((rc = read_meta(ix, ix->cf, &found_h, &last_h, errmsg)) != 0 ||
      (rc = read_meta(ix, ix->cf_l, &found_l, &last_l, errmsg)) != 0)
    return rc;
  if (found_h && found_l) {
    /* Every apply writes both copies in one batch: a difference means one
     * family was persisted without the other. */
    if (last_h != last_l) {
      set_msg(errmsg, "index: column families out of step");
      return IMMU_ECORRUPT;
    }
    atomic_store(&ix->last_tx, last_h);
  } else if (found_h || found_l) {
    set_msg(errmsg, "index: 'm' record missing in one column family");
    return IMMU_ECORRUPT;
  } else {
    /* Every apply writes 'm': rows without it mean damage. */
    int found = 0;
    rc = iterate(ix, ix->cf, all_lo, 1, all_hi, 2, 0, any_row, &found);
    if (rc == 0 && !found)
      rc = iterate(ix, ix->cf_l, all_lo, 1, all_hi, 2, 0, any_row, &found);
    if (rc != 0)
      return rc;
    if (found) {
      set_msg(errmsg, "index: rows present but no 'm' record");
      return IMMU_ECORRUPT;
    }
  }
  rc = iterate(ix, ix->cf, c_lo, 1, c_hi, 1, 0, load_count, ix);
  if (rc == IMMU_ECORRUPT)
    set_msg(errmsg, "index: malformed 'c' record");
  return rc;
}

int immu__index_open(immu_index_env *env, const char *dir, uint32_t inline_max,
                     immu_index **out, char **errmsg) {
  immu_index *ix;
  char *err = NULL;
  int rc;

  *out = NULL;
  if (errmsg != NULL)
    *errmsg = NULL;
  ix = immu__calloc(1, sizeof *ix);
  if (ix == NULL)
    return IMMU_ENOMEM;
  ix->env = env;
  ix->inline_max = inline_max;
  ix->rc_owner = immu__rcache_owner(env->rc);
  atomic_init(&ix->last_tx, 0);
  for (int i = 0; i < 256; i++)
    atomic_init(&ix->counts[i], 0);

  {
    /* 'l' rows have a family of their own: a Get or the apply's MultiGet
     * searches memtables, filters and SSTs holding one record per key
     * instead of one per version. */
    const char *names[2] = {"default", CF_LATEST_NAME};
    const rocksdb_options_t *cfo[2] = {env->opts_h, env->opts};
    rocksdb_column_family_handle_t *cfh[2] = {NULL, NULL};
    ix->db =
        rocksdb_open_column_families(env->opts, dir, 2, names, cfo, cfh, &err);
    if (err != NULL) {
      set_msg(errmsg, err);
      rc = rocks_err(err);
      ix->db = NULL;
      goto fail;
    }
    ix->cf = cfh[0];
    ix->cf_l = cfh[1];
  }
  ix->ro = rocksdb_readoptions_create();
  ix->ro_mem = rocksdb_readoptions_create();
  ix->wo = rocksdb_writeoptions_create();
  ix->fo = rocksdb_flushoptions_create();
  ix->wb = rocksdb_writebatch_create();
  if (ix->ro == NULL || ix->ro_mem == NULL || ix->wo == NULL ||
      ix->fo == NULL || ix->wb == NULL) {
    rc = IMMU_ENOMEM;
    goto fail;
  }
  /* kBlockCacheTier: a read that would need a file does no I/O: a table
   * not open yet fails with Incomplete, an uncached data block gives an
   * empty value with status OK (get_into maps both to IMMU_EWOULDBLOCK). */
  rocksdb_readoptions_set_read_tier(ix->ro_mem, 1);
  /* The log is the source of truth: no WAL, no sync. */
  rocksdb_writeoptions_disable_WAL(ix->wo, 1);
  rocksdb_writeoptions_set_sync(ix->wo, 0);
  rocksdb_flushoptions_set_wait(ix->fo, 1);

  rc = load_state(ix, errmsg);
  if (rc != 0)
    goto fail;
  if (atomic_load(&ix->last_tx) == 0) {
    ix->rc_drops = immu__rcache_drops(env->rc);
    ix->rc_complete = ix->rc_drops != UINT64_MAX;
  }
  *out = ix;
  return 0;

fail:
  immu__index_close(ix);
  return rc;
}

void immu__index_close(immu_index *ix) {
  if (ix == NULL)
    return;
  immu__rcache_drop_owner(ix->env->rc, ix->rc_owner);
  if (ix->cf != NULL)
    rocksdb_column_family_handle_destroy(ix->cf);
  if (ix->cf_l != NULL)
    rocksdb_column_family_handle_destroy(ix->cf_l);
  if (ix->db != NULL)
    rocksdb_close(ix->db); /* flushes the memtables (WAL is off) */
  if (ix->ro != NULL)
    rocksdb_readoptions_destroy(ix->ro);
  if (ix->ro_mem != NULL)
    rocksdb_readoptions_destroy(ix->ro_mem);
  if (ix->wo != NULL)
    rocksdb_writeoptions_destroy(ix->wo);
  if (ix->fo != NULL)
    rocksdb_flushoptions_destroy(ix->fo);
  if (ix->wb != NULL)
    rocksdb_writebatch_destroy(ix->wb);
  immu__free(ix->sk);
  immu__free(ix->revs);
  immu__free(ix->grp);
  immu__free(ix->mkeys);
  immu__free(ix->msizes);
  immu__free(ix->mvals);
  immu__free(ix->merrs);
  immu__free(ix->mbuf);
  immu__free(ix->kbuf);
  immu__free(ix->vbuf);
  immu__free(ix->lbuf);
  immu__free(ix->zbuf);
  immu__free(ix->cbuf);
  immu__free(ix);
}

int immu__index_destroy(immu_index_env *env, const char *dir) {
  char *err = NULL;
  rocksdb_destroy_db(env->opts, dir, &err);
  if (err != NULL)
    return rocks_err(err);
  return 0;
}

uint64_t immu__index_last_tx(const immu_index *ix) {
  return atomic_load_explicit(&((immu_index *)ix)->last_tx,
                              memory_order_acquire);
}

/* ------------------------------------------------------------------ */
/* Apply                                                               */
/* ------------------------------------------------------------------ */

static int skey_cmp(const void *a, const void *b) {
  const skey *x = a, *y = b;
  int c = keycmp(x->key, x->klen, y->key, y->klen);
  if (c != 0)
    return c;
  return x->i < y->i ? -1 : x->i > y->i ? 1 : 0;
}

static int apply_prepare(immu_index *ix, size_t n) {
  if (n <= ix->acap)
    return 0;
  {
    skey *sk = immu__realloc(ix->sk, n * sizeof *sk);
    if (sk == NULL)
      return IMMU_ENOMEM;
    ix->sk = sk;
  }
  {
    uint64_t *revs = immu__realloc(ix->revs, n * sizeof *revs);
    if (revs == NULL)
      return IMMU_ENOMEM;
    ix->revs = revs;
  }
  {
    group *g = immu__realloc(ix->grp, n * sizeof *g);
    if (g == NULL)
      return IMMU_ENOMEM;
    ix->grp = g;
  }
  {
    const char **k = immu__realloc(ix->mkeys, n * sizeof *k);
    if (k == NULL)
      return IMMU_ENOMEM;
    ix->mkeys = k;
  }
  {
    size_t *z = immu__realloc(ix->msizes, n * sizeof *z);
    if (z == NULL)
      return IMMU_ENOMEM;
    ix->msizes = z;
  }
  {
    rocksdb_pinnableslice_t **v = immu__realloc(ix->mvals, n * sizeof *v);
    if (v == NULL)
      return IMMU_ENOMEM;
    /* lookup_release frees what is not NULL */
    memset(v + ix->acap, 0, (n - ix->acap) * sizeof *v);
    ix->mvals = v;
  }
  {
    char **e = immu__realloc(ix->merrs, n * sizeof *e);
    if (e == NULL)
      return IMMU_ENOMEM;
    ix->merrs = e;
  }
  ix->acap = n;
  return 0;
}

/* Builds the 'z' row key of ZAdd store key |zk| at tx |tx| into ix->zbuf.
 * Returns its length, 0 if |zk| is not a well-formed ZAdd key, or a
 * negative code. */
static long zrow_key(immu_index *ix, const uint8_t *zk, size_t zkl,
                     uint64_t tx) {
  const uint8_t *set, *ek;
  size_t slen, eklen, o;
  double score;
  uint64_t at_tx;
  if (immu_dec_zadd_key(zk, zkl, &set, &slen, &score, &ek, &eklen, &at_tx) != 0)
    return 0;
  if (reserve(&ix->zbuf, &ix->zcap,
              1 + ENC_MAX(slen) + 8 + ENC_MAX(eklen - 1) + 16) != 0)
    return IMMU_ENOMEM;
  ix->zbuf[0] = NS_ZSET;
  o = 1 + enc_put(ix->zbuf + 1, set, slen);
  immu__put_u64(ix->zbuf + o, score_enc(score));
  o += 8;
  o += enc_put(ix->zbuf + o, ek + 1, eklen - 1);
  immu__put_u64(ix->zbuf + o, at_tx);
  immu__put_u64(ix->zbuf + o + 8, tx);
  return (long)(o + 16);
}

/* Splits the sorted entries into groups of one key each. */
static size_t apply_groups(immu_index *ix, size_t n) {
  size_t ng = 0;
  for (size_t g = 0, e; g < n; g = e) {
    const skey *first = &ix->sk[g];
    for (e = g + 1; e < n && first->klen == ix->sk[e].klen &&
                    memcmp(first->key, ix->sk[e].key, first->klen) == 0;
         e++)
      ;
    ix->grp[ng].start = g;
    ix->grp[ng].end = e;
    ix->grp[ng].base = 0;
    ix->grp[ng].prev_tx = 0;
    ix->grp[ng].prev = NULL;
    ix->grp[ng].prev_len = 0;
    ng++;
  }
  return ng;
}

/* Sets group |g|'s base revision, previous tx and previous row from the
 * indexed 'l' row |v| (|vl| bytes, which must outlive the apply). */
static int group_prev(immu_index *ix, size_t g, const uint8_t *v, size_t vl) {
  immu_index_entry e;
  const uint8_t *inl;
  int rc = entry_get(v, vl, &e, &inl);
  if (rc == 0) {
    ix->grp[g].base = e.revision;
    ix->grp[g].prev_tx = e.tx;
    ix->grp[g].prev = v;
    ix->grp[g].prev_len = ENTRY_FIXED + e.mdlen;
  }
  return rc;
}

static int copy_row(const uint8_t *row, size_t len, void *arg) {
  immu_index *ix = arg;
  int rc = reserve(&ix->cbuf, &ix->ccap, ix->clen + len);
  if (rc != 0)
    return rc;
  memcpy(ix->cbuf + ix->clen, row, len);
  ix->clen += len;
  return 0;
}

/* The previous rows from the row cache, when it holds all of them (see
 * rc_complete). Returns 1 if it did (the groups are set), 0 if the caller
 * must look them up in RocksDB (the cache dropped a row: for good), or an
 * error. */
static int apply_lookup_cached(immu_index *ix, size_t ng) {
  immu__rcache *c = ix->env->rc;
  int rc = 0;
  ix->clen = 0;
  for (size_t g = 0; g < ng && rc == 0; g++) {
    const skey *k = &ix->sk[ix->grp[g].start];
    group *gr = &ix->grp[g];
    gr->coff = ix->clen;
    rc = immu__rcache_get(c, ix->rc_owner, k->key, k->klen, copy_row, ix);
    if (rc == IMMU_ENOTFOUND)
      rc = 0; /* a new key */
    gr->clen = ix->clen - gr->coff;
  }
  if (rc != 0)
    return rc;
  /* After the gets: a drop that explains one of their misses is seen. */
  if (immu__rcache_drops(c) != ix->rc_drops) {
    ix->rc_complete = 0;
    return 0;
  }
  for (size_t g = 0; g < ng && rc == 0; g++)
    if (ix->grp[g].clen > 0)
      rc = group_prev(ix, g, ix->cbuf + ix->grp[g].coff, ix->grp[g].clen);
  return rc == 0 ? 1 : rc;
}

/* Reads the indexed 'l' record of every group's key with one batched
 * MultiGet (keys sorted): base revision and tx. */
static int apply_lookup(immu_index *ix, size_t ng) {
  size_t total = 0, o = 0;
  int rc = 0;
  if (ng == 0)
    return 0;
  if (ix->rc_complete) {
    rc = apply_lookup_cached(ix, ng);
    if (rc != 0)
      return rc < 0 ? rc : 0;
  }
  for (size_t g = 0; g < ng; g++)
    total += ix->sk[ix->grp[g].start].klen + 1;
  if ((rc = reserve(&ix->mbuf, &ix->mcap, total)) != 0)
    return rc;
  for (size_t g = 0; g < ng; g++) {
    const skey *k = &ix->sk[ix->grp[g].start];
    ix->mbuf[o] = NS_LATEST;
    memcpy(ix->mbuf + o + 1, k->key, k->klen);
    ix->mkeys[g] = (const char *)ix->mbuf + o;
    ix->msizes[g] = k->klen + 1;
    o += k->klen + 1;
    ix->mvals[g] = NULL;
    ix->merrs[g] = NULL;
  }
  rocksdb_batched_multi_get_cf(ix->db, ix->ro, ix->cf_l, ng, ix->mkeys,
                               ix->msizes, ix->mvals, ix->merrs, 1);
  for (size_t g = 0; g < ng; g++) {
    if (ix->merrs[g] != NULL) {
      if (rc == 0 && strncmp(ix->merrs[g], "NotFound", 8) != 0)
        rc = err_code(ix->merrs[g]);
      rocksdb_free(ix->merrs[g]);
    }
    if (ix->mvals[g] != NULL && rc == 0) {
      size_t vl = 0;
      const char *v = rocksdb_pinnableslice_value(ix->mvals[g], &vl);
      rc = group_prev(ix, g, (const uint8_t *)v, vl);
    }
  }
  return rc;
}

/* Releases the values apply_lookup read (after the write that used them). */
static void lookup_release(immu_index *ix, size_t ng) {
  for (size_t g = 0; g < ng; g++) {
    if (ix->mvals[g] != NULL)
      rocksdb_pinnableslice_destroy(ix->mvals[g]);
    ix->mvals[g] = NULL;
  }
}

/* Pass 1, in key order: revisions (the indexed one, then +1 per occurrence
 * in the batch), the 'h' rows and the counters of new keys. The 'l' row
 * holds a key's latest revision, so the 'h' rows written here are the
 * revisions this batch supersedes: the indexed latest one (its 'l' row
 * minus the inline part, which is exactly the 'h' shape) and every
 * occurrence but the last. A batch of new keys, each written once, adds
 * no 'h' row at all: one memtable insert per key instead of two. */
static int apply_history(immu_index *ix, const immu_index_kv *kvs, size_t ng,
                         uint64_t *pending) {
  for (size_t g = 0; g < ng; g++) {
    const group *gr = &ix->grp[g];
    const immu_index_kv *kv0 = &kvs[ix->sk[gr->start].i];
    size_t pl;
    int rc;
    if (gr->base == 0)
      pending[kv0->key[0]]++;
    if ((rc = reserve(&ix->kbuf, &ix->kcap, 1 + ENC_MAX(kv0->klen) + 8)) != 0)
      return rc;
    ix->kbuf[0] = NS_HIST;
    pl = 1 + enc_put(ix->kbuf + 1, kv0->key, kv0->klen);
    if (gr->base > 0) {
      immu__put_u64(ix->kbuf + pl, gr->base);
      rocksdb_writebatch_put(ix->wb, (const char *)ix->kbuf, pl + 8,
                             (const char *)gr->prev, gr->prev_len);
    }
    for (size_t j = gr->start; j < gr->end; j++) {
      const immu_index_kv *kv = &kvs[ix->sk[j].i];
      size_t vl;
      ix->revs[j] = gr->base + 1 + (j - gr->start);
      if (j + 1 == gr->end)
        break; /* the latest: its 'l' row only */
      if ((rc = reserve(&ix->vbuf, &ix->vcap, entry_size(kv, 0, 0))) != 0)
        return rc;
      /* 'h' ENC(key) u64 rev -> ENTRY (no inline part) */
      immu__put_u64(ix->kbuf + pl, ix->revs[j]);
      vl = entry_put(ix->vbuf, kv, ix->revs[j], 0, 0);
      rocksdb_writebatch_put(ix->wb, (const char *)ix->kbuf, pl + 8,
                             (const char *)ix->vbuf, vl);
    }
  }
  return 0;
}

/* Pass 2: 'l' rows of the distinct keys, from their last occurrence,
 * kept in ix->lbuf for the row cache. */
static int apply_latest(immu_index *ix, const immu_index_kv *kvs, size_t ng) {
  size_t used = 0;
  for (size_t g = 0; g < ng; g++) {
    group *gr = &ix->grp[g];
    size_t j = gr->end - 1;
    const immu_index_kv *kv = &kvs[ix->sk[j].i];
    int inl = ix->inline_max > 0 && kv->vlen <= ix->inline_max &&
              (kv->value != NULL || kv->vlen == 0);
    int rc;
    if ((rc = reserve(&ix->lbuf, &ix->lcap,
                      used + entry_size(kv, 1, inl))) != 0 ||
        (rc = reserve(&ix->kbuf, &ix->kcap, kv->klen + 1)) != 0)
      return rc;
    gr->loff = used;
    gr->llen = entry_put(ix->lbuf + used, kv, ix->revs[j], 1, inl);
    used += gr->llen;
    ix->kbuf[0] = NS_LATEST;
    memcpy(ix->kbuf + 1, kv->key, kv->klen);
    rocksdb_writebatch_put_cf(ix->wb, ix->cf_l, (const char *)ix->kbuf,
                              kv->klen + 1, (const char *)ix->lbuf + gr->loff,
                              gr->llen);
  }
  return 0;
}

/* After the batch is in RocksDB and before its last tx is published: the
 * new 'l' rows replace the cached ones. */
static void cache_latest(immu_index *ix, const immu_index_kv *kvs,
                         size_t ng) {
  for (size_t g = 0; g < ng; g++) {
    const group *gr = &ix->grp[g];
    const immu_index_kv *kv = &kvs[ix->sk[gr->end - 1].i];
    immu__rcache_put(ix->env->rc, ix->rc_owner, kv->key, kv->klen,
                     ix->lbuf + gr->loff, gr->llen);
  }
}

/* Pass 3: one 'z' row per ZAdd member, at the tx of its last occurrence;
 * the row of the previously indexed tx goes. A malformed 0x01 key is
 * indexed as a plain key only. */
static int apply_zset(immu_index *ix, const immu_index_kv *kvs, size_t ng) {
  for (size_t g = 0; g < ng; g++) {
    const immu_index_kv *kv = &kvs[ix->sk[ix->grp[g].end - 1].i];
    long zl;
    if (kv->key[0] != IMMU_PREFIX_ZSET)
      continue;
    if (ix->grp[g].prev_tx != 0) {
      zl = zrow_key(ix, kv->key, kv->klen, ix->grp[g].prev_tx);
      if (zl < 0)
        return (int)zl;
      if (zl > 0)
        rocksdb_writebatch_delete(ix->wb, (const char *)ix->zbuf, (size_t)zl);
    }
    zl = zrow_key(ix, kv->key, kv->klen, kv->tx);
    if (zl < 0)
      return (int)zl;
    if (zl > 0)
      rocksdb_writebatch_put(ix->wb, (const char *)ix->zbuf, (size_t)zl, "", 0);
  }
  return 0;
}

int immu__index_apply(immu_index *ix, uint64_t first, uint64_t last,
                      const immu_index_kv *kvs, size_t n) {
  uint64_t pending[256];
  uint8_t ck[2], cv[8], mv[META_LEN];
  size_t ng = 0;
  char *err = NULL;
  int rc;

  if (first != immu__index_last_tx(ix) + 1 || last + 1 < first ||
      (n > 0 && kvs == NULL))
    return IMMU_EINVAL;
  for (size_t i = 0; i < n; i++) {
    const immu_index_kv *kv = &kvs[i];
    if (kv->key == NULL || kv->klen == 0 || kv->mdlen > IMMU_KV_MD_MAX ||
        (kv->mdlen > 0 && kv->md == NULL) || kv->tx < first || kv->tx > last ||
        (i > 0 && kv->tx < kvs[i - 1].tx))
      return IMMU_EINVAL;
  }
  if ((rc = apply_prepare(ix, n)) != 0)
    return rc;
  perf_quiet();
  /* Key order (stable: occurrences of a key stay in tx order) gives the
   * memtable sorted inserts and makes each key's occurrences adjacent. */
  for (size_t i = 0; i < n; i++) {
    ix->sk[i].key = kvs[i].key;
    ix->sk[i].klen = kvs[i].klen;
    ix->sk[i].i = i;
  }
  if (n > 1)
    qsort(ix->sk, n, sizeof *ix->sk, skey_cmp);
  memset(pending, 0, sizeof pending);
  rocksdb_writebatch_clear(ix->wb);

  ng = apply_groups(ix, n);
  rc = apply_lookup(ix, ng);
  if (rc == 0)
    rc = apply_history(ix, kvs, ng, pending);
  if (rc == 0)
    rc = apply_latest(ix, kvs, ng);
  if (rc == 0)
    rc = apply_zset(ix, kvs, ng);
  if (rc == 0) {
    for (int p = 0; p < 256; p++) {
      if (pending[p] == 0)
        continue;
      ck[0] = NS_COUNT;
      ck[1] = (uint8_t)p;
      immu__put_u64(cv,
                    atomic_load_explicit(&ix->counts[p], memory_order_relaxed) +
                        pending[p]);
      rocksdb_writebatch_put(ix->wb, (const char *)ck, 2, (const char *)cv, 8);
    }
    immu__put_u64(mv, last);
    immu__put_u32(mv + 8, INDEX_FORMAT);
    rocksdb_writebatch_put(ix->wb, meta_key, META_KEY_LEN, (const char *)mv,
                           META_LEN);
    rocksdb_writebatch_put_cf(ix->wb, ix->cf_l, meta_key, META_KEY_LEN,
                              (const char *)mv, META_LEN);
    rocksdb_write(ix->db, ix->wo, ix->wb, &err);
    if (err != NULL)
      rc = rocks_err(err);
  }
  lookup_release(ix, ng);
  rocksdb_writebatch_clear(ix->wb);
  if (rc != 0)
    return rc;
  cache_latest(ix, kvs, ng);

  for (int p = 0; p < 256; p++)
    if (pending[p] != 0)
      atomic_fetch_add_explicit(&ix->counts[p], pending[p],
                                memory_order_relaxed);
  atomic_store_explicit(&ix->last_tx, last, memory_order_release);
  return 0;
}

/* ------------------------------------------------------------------ */
/* Point reads                                                         */
/* ------------------------------------------------------------------ */

static int get_into(immu_index *ix, const rocksdb_readoptions_t *ro,
                    rocksdb_column_family_handle_t *cf, const uint8_t *k,
                    size_t kl, immu_index_entry *out) {
  last_err[0] = '\0';
  char *err = NULL;
  size_t vl = 0;
  const char *v;
  int rc;
  /* Pinned: the value is read in place from the block or memtable. */
  rocksdb_pinnableslice_t *ps;
  perf_quiet();
  ps = rocksdb_get_pinned_cf(ix->db, ro, cf, (const char *)k, kl, &err);
  if (err != NULL)
    return rocks_err(err);
  if (ps == NULL)
    return IMMU_ENOTFOUND;
  v = rocksdb_pinnableslice_value(ps, &vl);
  if (vl == 0 && ro == ix->ro_mem) {
    /* A cache-only read of an open table whose data block is not cached
     * answers OK with no value ("may exist", as for KeyMayExist). No row
     * of ours is empty: it needs the disk. */
    rocksdb_pinnableslice_destroy(ps);
    return IMMU_EWOULDBLOCK;
  }
  rc = entry_to_out((const uint8_t *)v, vl, out);
  if (rc == IMMU_ECORRUPT)
    snprintf(last_err, sizeof last_err,
             "malformed index row of %zu bytes (key of %zu bytes, '%c')", vl,
             kl, kl > 0 ? (char)k[0] : '?');
  rocksdb_pinnableslice_destroy(ps);
  return rc;
}

static int get_latest(immu_index *ix, const rocksdb_readoptions_t *ro,
                      const uint8_t *key, size_t klen, immu_index_entry *out) {
  kbuf b;
  int rc;
  if (klen == 0)
    return IMMU_ENOTFOUND;
  if ((rc = kbuf_init(&b, klen + 1)) != 0)
    return rc;
  b.p[0] = NS_LATEST;
  memcpy(b.p + 1, key, klen);
  rc = get_into(ix, ro, ix->cf_l, b.p, klen + 1, out);
  kbuf_free(&b);
  return rc;
}

static int row_to_out(const uint8_t *v, size_t n, void *arg) {
  return entry_to_out(v, n, arg);
}

/* The latest row from the row cache, else from RocksDB through |ro|. Not
 * for reads under a snapshot: the cache holds the newest rows only. */
static int get_latest_rc(immu_index *ix, const rocksdb_readoptions_t *ro,
                         const uint8_t *key, size_t klen,
                         immu_index_entry *out) {
  int rc =
      immu__rcache_get(ix->env->rc, ix->rc_owner, key, klen, row_to_out, out);
  if (rc == IMMU_ECORRUPT)
    snprintf(last_err, sizeof last_err,
             "malformed cached index row (key of %zu bytes)", klen);
  if (rc != IMMU_ENOTFOUND)
    return rc;
  return get_latest(ix, ro, key, klen, out);
}

int immu__index_get_latest(immu_index *ix, const uint8_t *key, size_t klen,
                           immu_index_entry *out) {
  return get_latest_rc(ix, ix->ro, key, klen, out);
}

int immu__index_get_latest_cached(immu_index *ix, const uint8_t *key,
                                  size_t klen, immu_index_entry *out) {
  return get_latest_rc(ix, ix->ro_mem, key, klen, out);
}

int immu__index_get_revision(immu_index *ix, const uint8_t *key, size_t klen,
                             uint64_t rev, immu_index_entry *out) {
  kbuf b;
  size_t kl;
  int rc;
  if (rev == 0 || klen == 0)
    return IMMU_ENOTFOUND;
  /* The latest revision is the 'l' row; the earlier ones are 'h' rows,
   * written in the same batch that moved 'l' past them and never removed,
   * so once 'l' is beyond |rev| its 'h' row is there. */
  if ((rc = get_latest_rc(ix, ix->ro, key, klen, out)) != 0)
    return rc;
  if (rev == out->revision)
    return 0;
  if (rev > out->revision)
    return IMMU_ENOTFOUND;
  if ((rc = kbuf_init(&b, 1 + ENC_MAX(klen) + 8)) != 0)
    return rc;
  b.p[0] = NS_HIST;
  kl = 1 + enc_put(b.p + 1, key, klen);
  immu__put_u64(b.p + kl, rev);
  rc = get_into(ix, ix->ro, ix->cf, b.p, kl + 8, out);
  if (rc == IMMU_ENOTFOUND) {
    snprintf(last_err, sizeof last_err,
             "no 'h' row for revision %llu below the latest",
             (unsigned long long)rev);
    rc = IMMU_ECORRUPT;
  }
  if (rc == 0 && out->revision != rev)
    rc = IMMU_ECORRUPT;
  kbuf_free(&b);
  return rc;
}

/* ------------------------------------------------------------------ */
/* Ranges                                                              */
/* ------------------------------------------------------------------ */

/* Shared state of scan and history callbacks. */
typedef struct entry_ctx {
  immu_index_cb cb;
  void *arg;
  uint8_t *scratch; /* inline copy */
  size_t scap;
  size_t plen;        /* history: length of 'h' ENC(key) */
  const uint8_t *key; /* history: the key */
  size_t klen;
  int stopped; /* history: the callback asked to stop */
} entry_ctx;

/* Decodes |v| and calls the user's callback. |want_rev| (history rows)
 * must match the entry's revision when not 0. */
static int emit_entry(entry_ctx *c, const uint8_t *v, size_t vl,
                      uint64_t want_rev, immu_index_entry *e) {
  const uint8_t *inl;
  int rc = entry_get(v, vl, e, &inl);
  if (rc != 0)
    return rc;
  if (want_rev != 0 && e->revision != want_rev)
    return IMMU_ECORRUPT;
  e->inline_value = NULL;
  if (e->has_inline) {
    if ((rc = reserve(&c->scratch, &c->scap, e->vlen ? e->vlen : 1)) != 0)
      return rc;
    if (e->vlen > 0)
      memcpy(c->scratch, inl, e->vlen);
    e->inline_value = c->scratch;
  }
  return c->cb(c->arg, e);
}

static int scan_row(void *ctx, const uint8_t *k, size_t kl, const uint8_t *v,
                    size_t vl) {
  entry_ctx *c = ctx;
  immu_index_entry e;
  if (kl < 2 || k[0] != NS_LATEST)
    return IMMU_ECORRUPT;
  e.key = k + 1;
  e.klen = kl - 1;
  return emit_entry(c, v, vl, 0, &e);
}

static int hist_row(void *ctx, const uint8_t *k, size_t kl, const uint8_t *v,
                    size_t vl) {
  entry_ctx *c = ctx;
  immu_index_entry e;
  uint64_t rev;
  if (kl != c->plen + 8)
    return IMMU_ECORRUPT;
  rev = immu__get_u64(k + c->plen);
  if (rev == 0)
    return IMMU_ECORRUPT;
  e.key = c->key;
  e.klen = c->klen;
  int rc = emit_entry(c, v, vl, rev, &e);
  if (rc > 0)
    c->stopped = 1;
  return rc;
}

/* History's 'l' row: the key's latest revision, read by get_latest. */
static int hist_latest(entry_ctx *c, immu_index_entry *e) {
  e->key = c->key;
  e->klen = c->klen;
  int rc = c->cb(c->arg, e);
  if (rc > 0)
    c->stopped = 1;
  return rc;
}

int immu__index_history(immu_index *ix, const uint8_t *key, size_t klen,
                        uint64_t from, int desc, immu_index_cb cb, void *arg) {
  entry_ctx c = {0};
  const rocksdb_snapshot_t *snap = NULL;
  rocksdb_readoptions_t *ro = NULL;
  immu_index_entry le = {0};
  uint8_t *lo = NULL, *hi = NULL;
  size_t pl, lol, hil;
  int rc;

  if (klen == 0)
    return 0;
  lo = immu__malloc(1 + ENC_MAX(klen) + 9);
  hi = immu__malloc(1 + ENC_MAX(klen) + 9);
  if (lo == NULL || hi == NULL) {
    rc = IMMU_ENOMEM;
    goto out;
  }
  lo[0] = NS_HIST;
  pl = 1 + enc_put(lo + 1, key, klen);
  memcpy(hi, lo, pl);
  /* ENC is prefix-free, so 'h' ENC(key) bounds exactly this key's rows. */
  lol = pl;
  hil = pl;
  hi[hil - 1]++; /* ... 0x00 0x01 -> ... 0x00 0x02 */
  if (desc && from > 0) {
    /* every rev <= from: upper bound 'h' ENC(key) u64(from) 0x00 */
    memcpy(hi, lo, pl);
    immu__put_u64(hi + pl, from);
    hi[pl + 8] = 0x00;
    hil = pl + 9;
  } else if (!desc && from > 1) {
    immu__put_u64(lo + pl, from);
    lol = pl + 8;
  }
  c.cb = cb;
  c.arg = arg;
  c.plen = pl;
  c.key = key;
  c.klen = klen;

  /* The 'l' row (latest revision) and the 'h' rows (the earlier ones)
   * from one snapshot: an apply moves a revision from 'l' to 'h' in one
   * atomic write, and the two reads must not see it twice or miss it. */
  perf_quiet();
  snap = rocksdb_create_snapshot(ix->db);
  ro = rocksdb_readoptions_create();
  if (snap == NULL || ro == NULL) {
    rc = IMMU_ENOMEM;
    goto out;
  }
  rocksdb_readoptions_set_snapshot(ro, snap);
  if ((rc = get_latest(ix, ro, key, klen, &le)) != 0) {
    if (rc == IMMU_ENOTFOUND)
      rc = 0; /* no such key: no 'h' rows either */
    goto out;
  }
  if (desc) {
    if (from == 0 || from >= le.revision) {
      if ((rc = hist_latest(&c, &le)) != 0 || c.stopped)
        goto out;
    }
    rc = iterate_at(ix, ix->cf, snap, lo, lol, hi, hil, desc, hist_row, &c);
  } else {
    rc = iterate_at(ix, ix->cf, snap, lo, lol, hi, hil, desc, hist_row, &c);
    if (rc == 0 && !c.stopped && (from == 0 || from <= le.revision))
      rc = hist_latest(&c, &le);
  }
out:
  if (rc > 0)
    rc = 0;
  immu__index_entry_clear(&le);
  if (ro != NULL)
    rocksdb_readoptions_destroy(ro);
  if (snap != NULL)
    rocksdb_release_snapshot(ix->db, snap);
  immu__free(lo);
  immu__free(hi);
  immu__free(c.scratch);
  return rc;
}

int immu__index_scan(immu_index *ix, const uint8_t *prefix, size_t plen,
                     const uint8_t *lo, size_t lolen, int lo_incl,
                     const uint8_t *hi, size_t hilen, int hi_incl, int desc,
                     immu_index_cb cb, void *arg) {
  entry_ctx c = {0};
  uint8_t *lb = NULL, *ub = NULL, *tmp = NULL;
  size_t lbl, ubl, tl, m;
  int rc;

  m = plen;
  if (lo != NULL && lolen > m)
    m = lolen;
  if (hi != NULL && hilen > m)
    m = hilen;
  m += 2;
  lb = immu__malloc(m);
  ub = immu__malloc(m);
  tmp = immu__malloc(m);
  if (lb == NULL || ub == NULL || tmp == NULL) {
    rc = IMMU_ENOMEM;
    goto out;
  }
  /* Lower bound (inclusive): max('l' prefix, 'l' lo [0x00 if exclusive]) */
  lb[0] = NS_LATEST;
  if (plen > 0)
    memcpy(lb + 1, prefix, plen);
  lbl = 1 + plen;
  if (lo != NULL) {
    tmp[0] = NS_LATEST;
    if (lolen > 0)
      memcpy(tmp + 1, lo, lolen);
    tl = 1 + lolen;
    if (!lo_incl)
      tmp[tl++] = 0x00;
    if (keycmp(tmp, tl, lb, lbl) > 0) {
      memcpy(lb, tmp, tl);
      lbl = tl;
    }
  }
  /* Upper bound (exclusive): min(succ('l' prefix), 'l' hi [0x00 if incl]) */
  ub[0] = NS_LATEST;
  if (plen > 0)
    memcpy(ub + 1, prefix, plen);
  ubl = prefix_succ(ub, 1 + plen); /* >= 1: 'l' itself is never 0xff */
  if (hi != NULL) {
    tmp[0] = NS_LATEST;
    if (hilen > 0)
      memcpy(tmp + 1, hi, hilen);
    tl = 1 + hilen;
    if (hi_incl)
      tmp[tl++] = 0x00;
    if (keycmp(tmp, tl, ub, ubl) < 0) {
      memcpy(ub, tmp, tl);
      ubl = tl;
    }
  }
  c.cb = cb;
  c.arg = arg;
  rc = iterate(ix, ix->cf_l, lb, lbl, ub, ubl, desc, scan_row, &c);
out:
  immu__free(lb);
  immu__free(ub);
  immu__free(tmp);
  immu__free(c.scratch);
  return rc;
}

typedef struct zctx {
  immu_index_zcb cb;
  void *arg;
  const uint8_t *set;
  size_t slen;
  size_t plen; /* 'z' ENC(set) */
  uint8_t *kb; /* decoded user key */
  size_t kcap;
} zctx;

static int zscan_row(void *ctx, const uint8_t *k, size_t kl, const uint8_t *v,
                     size_t vl) {
  zctx *c = ctx;
  immu_index_zmember m;
  size_t used, ukl;
  int rc;
  (void)v;
  /* SCORE, ENC(key) of at least 2 bytes, u64 atTx, u64 tx */
  if (vl != 0 || kl < c->plen + 8 + 2 + 16)
    return IMMU_ECORRUPT;
  k += c->plen;
  kl -= c->plen;
  if ((rc = reserve(&c->kb, &c->kcap, kl)) != 0)
    return rc;
  used = enc_get(k + 8, kl - 8, c->kb, &ukl);
  if (used == 0 || kl - 8 - used != 16)
    return IMMU_ECORRUPT;
  m.set = c->set;
  m.slen = c->slen;
  m.score = score_dec(immu__get_u64(k));
  m.key = c->kb;
  m.klen = ukl;
  m.at_tx = immu__get_u64(k + 8 + used);
  m.tx = immu__get_u64(k + 16 + used);
  return c->cb(c->arg, &m);
}

int immu__index_zscan(immu_index *ix, const uint8_t *set, size_t slen,
                      double min, int min_excl, double max, int max_excl,
                      const uint8_t *seek_key, size_t seek_klen,
                      double seek_score, uint64_t seek_at_tx, int desc,
                      immu_index_zcb cb, void *arg) {
  zctx c = {0};
  uint8_t *lb = NULL, *ub = NULL;
  size_t pl, lbl, ubl, cap;
  uint64_t s;
  double m;
  int rc;

  if (isnan(min) || isnan(max) || (seek_key != NULL && isnan(seek_score)))
    return IMMU_EINVAL;
  cap = 1 + ENC_MAX(slen) + 8 + (seek_key ? ENC_MAX(seek_klen) : 0) + 17;
  lb = immu__malloc(cap);
  ub = immu__malloc(cap);
  if (lb == NULL || ub == NULL) {
    rc = IMMU_ENOMEM;
    goto out;
  }
  lb[0] = NS_ZSET;
  pl = 1 + enc_put(lb + 1, set, slen);
  memcpy(ub, lb, pl);

  /* -0.0 and +0.0 are distinct SCOREs that compare equal. */
  m = min == 0 ? (min_excl ? 0.0 : -0.0) : min;
  s = score_enc(m) + (min_excl ? 1 : 0);
  immu__put_u64(lb + pl, s);
  lbl = pl + 8;
  m = max == 0 ? (max_excl ? -0.0 : 0.0) : max;
  s = score_enc(m) + (max_excl ? 0 : 1);
  immu__put_u64(ub + pl, s);
  ubl = pl + 8;

  if (seek_key != NULL) {
    uint8_t *sk = desc ? ub : lb;
    size_t skl;
    int better;
    /* S = P SCORE ENC(key) u64 atTx; rows of that member are S u64 tx. */
    uint8_t *t = immu__malloc(cap);
    if (t == NULL) {
      rc = IMMU_ENOMEM;
      goto out;
    }
    memcpy(t, lb, pl);
    immu__put_u64(t + pl, score_enc(seek_score));
    skl = pl + 8;
    skl += enc_put(t + skl, seek_key, seek_klen);
    immu__put_u64(t + skl, seek_at_tx);
    skl += 8;
    if (desc) {
      better = keycmp(t, skl, ub, ubl) < 0; /* upper = S */
    } else {
      memset(t + skl, 0xff, 8); /* lower = S ff*8 00 */
      t[skl + 8] = 0x00;
      skl += 9;
      better = keycmp(t, skl, lb, lbl) > 0;
    }
    if (better) {
      memcpy(sk, t, skl);
      if (desc)
        ubl = skl;
      else
        lbl = skl;
    }
    immu__free(t);
  }

  c.cb = cb;
  c.arg = arg;
  c.set = set;
  c.slen = slen;
  c.plen = pl;
  rc = iterate(ix, ix->cf, lb, lbl, ub, ubl, desc, zscan_row, &c);
out:
  immu__free(lb);
  immu__free(ub);
  immu__free(c.kb);
  return rc;
}

static int count_row(void *ctx, const uint8_t *k, size_t kl, const uint8_t *v,
                     size_t vl) {
  (void)k;
  (void)kl;
  (void)v;
  (void)vl;
  (*(uint64_t *)ctx)++;
  return 0;
}

int immu__index_count(immu_index *ix, const uint8_t *prefix, size_t plen,
                      uint64_t *out) {
  uint8_t *lb, *ub;
  size_t ubl;
  uint64_t n = 0;
  int rc;

  *out = 0;
  if (plen == 0) {
    for (int p = 0; p < 256; p++)
      n += atomic_load_explicit(&ix->counts[p], memory_order_relaxed);
    *out = n;
    return 0;
  }
  if (plen == 1) {
    *out = atomic_load_explicit(&ix->counts[prefix[0]], memory_order_relaxed);
    return 0;
  }
  lb = immu__malloc(plen + 1);
  ub = immu__malloc(plen + 1);
  if (lb == NULL || ub == NULL) {
    immu__free(lb);
    immu__free(ub);
    return IMMU_ENOMEM;
  }
  lb[0] = NS_LATEST;
  memcpy(lb + 1, prefix, plen);
  memcpy(ub, lb, plen + 1);
  ubl = prefix_succ(ub, plen + 1);
  rc = iterate(ix, ix->cf_l, lb, plen + 1, ub, ubl, 0, count_row, &n);
  immu__free(lb);
  immu__free(ub);
  if (rc == 0)
    *out = n;
  return rc;
}

/* ------------------------------------------------------------------ */
/* Maintenance                                                         */
/* ------------------------------------------------------------------ */

uint64_t immu__index_bytes(immu_index *ix) {
  rocksdb_column_family_handle_t *cfs[2] = {ix->cf, ix->cf_l};
  uint64_t total = 0;
  for (int i = 0; i < 2; i++) {
    uint64_t sst = 0, blob = 0;
    if (rocksdb_property_int_cf(ix->db, cfs[i], "rocksdb.total-sst-files-size",
                                &sst) != 0)
      sst = 0;
    if (rocksdb_property_int_cf(ix->db, cfs[i], "rocksdb.total-blob-file-size",
                                &blob) != 0)
      blob = 0;
    total += sst + blob;
  }
  return total;
}

int immu__index_flush(immu_index *ix) {
  char *err = NULL;
  /* One family at a time (the C API has no multi-family flush); a crash
   * between the two leaves 'm' copies that differ, which open reports as
   * damage (rebuild) rather than misreading. */
  rocksdb_flush_cf(ix->db, ix->fo, ix->cf_l, &err);
  if (err == NULL)
    rocksdb_flush_cf(ix->db, ix->fo, ix->cf, &err);
  return err != NULL ? rocks_err(err) : 0;
}

int immu__index_compact(immu_index *ix) {
  rocksdb_compact_range_cf(ix->db, ix->cf_l, NULL, 0, NULL, 0);
  rocksdb_compact_range_cf(ix->db, ix->cf, NULL, 0, NULL, 0);
  return 0;
}
