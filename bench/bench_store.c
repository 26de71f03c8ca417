/* SPDX-License-Identifier: Apache-2.0 */
/*
 * `immubench kv`: the KV layer (include/immudb/db.h) on a real disk,
 * measured against SQLite and RocksDB run in the same process, on the same
 * data, with the same thread counts, interleaved case by case.
 *
 * Cases:
 *   disk  256-byte append + fdatasync, 2000 times, at the start, after the
 *         writes and at the end (the median is the disk's fsync rate), plus
 *         once as an overwrite of a preallocated file;
 *   sha   raw immu_sha256 on 64 bytes: the hash ceiling of one core;
 *   W1    one KV per tx (32 B random key, 128 B value), 1/16/128 writer
 *         threads, synced and async, for --duration seconds each;
 *   W2    1000 KVs per tx, synced, 1 and 4 writers;
 *   R1    random Get over --keys preloaded keys, 1 and 2 readers;
 *   R2    immu_db_verifiable_get with proveSinceTx = the latest state, 1
 *         and 2 readers, on the R1 data (1000 KVs per tx) and on a set of
 *         single-KV txs; one result is verified client-side (not timed).
 *
 * Every write case gets a fresh directory under --dir, removed afterwards.
 * All three systems get the same cache budget (--cache-mib): ours through
 * an explicit env with one index worker, as a default open would create.
 * Writers commit with noWait (the index is applied asynchronously; its lag
 * and catch-up time are reported) unless --wait-index.
 * Latencies are per call, recorded per thread and merged; fsyncs are
 * counted by the engine (log fsyncs), by a counting wrapper of the engine's
 * I/O seam (every engine-file sync), by a counting SQLite VFS shim and from
 * RocksDB's "rocksdb.dbstats". Bytes written come from /proc/self/io.
 *
 * Method, machine and recorded results: docs/benchmarks.md.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <time.h>
#include <unistd.h>

#include "immudb/crypto.h"
#include "immudb/db.h"
#include "immudb/err.h"
#include "store/io.h"
#include "store/store.h"

#ifdef IMMUBENCH_HAVE_SQLITE3
#include <sqlite3.h>
#endif
#ifdef IMMUBENCH_HAVE_ROCKSDB
#include <rocksdb/c.h>
#endif

#include "bench.h"

#define KEY_LEN 32
#define VAL_LEN 128
#define W2_BATCH 1000
#define LOAD_BATCH 1000
/* Cache budget given to each system (--cache-mib): our index's RocksDB
 * block cache (through an explicit env), the RocksDB peer's block cache,
 * SQLite's page cache per connection. */
static size_t g_cache_bytes = (size_t)256 << 20;
#define SQLITE_BUSY_MS 60000

/* ------------------------------------------------------------------ */
/* Options                                                             */
/* ------------------------------------------------------------------ */

typedef struct kv_opts {
  double duration;
  uint64_t keys;
  uint64_t r2_txs;
  uint64_t disk_iters;
  const char *dir;
  const char *json;
  const char *cases;
  uint64_t seed;
  int quick;
  int peers;
  int wait_index;
  double drain_max;
  uint64_t cache_mib;
} kv_opts;

static void kv_usage(FILE *f) {
  fputs(
      "usage: immubench kv [options]\n"
      "\n"
      "KV-layer benchmark on disk against SQLite (WAL) and RocksDB, run in\n"
      "the same process on the same data and thread counts:\n"
      "  disk  256 B append + fdatasync loop (the disk's fsync rate)\n"
      "  sha   raw SHA-256 rate of one core\n"
      "  w1    1 KV/tx, 1/16/128 writers, synced and async\n"
      "  w2    1000 KVs/tx, synced, 1 and 4 writers\n"
      "  r1    random Get over --keys preloaded keys, 1 and 2 readers\n"
      "  r2    verifiable Get (ours only), 1 and 2 readers\n"
      "\n"
      "options:\n"
      "  --duration S     seconds per timed case (default 5)\n"
      "  --keys N         keys preloaded for r1/r2 (default 10^6)\n"
      "  --r2-txs N       single-KV txs of the narrow r2 data set "
      "(default 10^5)\n"
      "  --disk-iters N   appends+fdatasync of the disk case (default 2000)\n"
      "  --dir DIR        where the data directories go (default "
      "./bench-data);\n"
      "                   use a real disk, not tmpfs\n"
      "  --cases LIST     only the comma-separated case prefixes (disk, sha,\n"
      "                   w1, w2, r1, r2; e.g. w1_synced)\n"
      "  --no-peers       skip SQLite and RocksDB\n"
      "  --cache-mib N    cache budget of each system: our index's block\n"
      "                   cache, RocksDB's block cache, SQLite's page cache\n"
      "                   per connection (default 256)\n"
      "  --wait-index     writers wait for the index (immudb's Set default,\n"
      "                   noWait=false); default: commit only (noWait)\n"
      "  --seed N         PRNG seed (default 1)\n"
      "  --quick          smoke run: 1 s cases, 20k keys, 2k r2 txs\n"
      "  --json FILE      also write the results as JSON to FILE;\n"
      "                   `--json -` writes JSON to stdout instead of the "
      "table\n"
      "  -q, --quiet      no progress messages on stderr\n"
      "  -h, --help       this text\n"
      "\n"
      "See docs/benchmarks.md.\n",
      f);
}

static int parse_opts(int argc, char **argv, kv_opts *o) {
  memset(o, 0, sizeof *o);
  o->duration = 5;
  o->keys = 1000000u;
  o->r2_txs = 100000u;
  o->disk_iters = 2000;
  o->dir = "./bench-data";
  o->seed = 1;
  o->peers = 1;
  o->drain_max = 60;
  o->cache_mib = 256;
  int set_dur = 0, set_keys = 0, set_r2 = 0, set_disk = 0;
  uint64_t v;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    const char *val = NULL;
#define NEED_VALUE()                                                           \
  do {                                                                         \
    if (bench_option_value("kv", argc, argv, &i, &val) != 0)                   \
      return -1;                                                               \
  } while (0)
    int common = bench_common_option("kv", argc, argv, &i, &o->json,
                                     &o->cases);
    if (common < 0)
      return -1;
    if (common > 0)
      continue;
    if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
      kv_usage(stdout);
      return 1;
    } else if (strcmp(a, "--quick") == 0) {
      o->quick = 1;
    } else if (strcmp(a, "--no-peers") == 0) {
      o->peers = 0;
    } else if (strcmp(a, "--wait-index") == 0) {
      o->wait_index = 1;
    } else if (strcmp(a, "--dir") == 0) {
      NEED_VALUE();
      o->dir = val;
    } else if (strcmp(a, "--duration") == 0) {
      NEED_VALUE();
      if (bench_parse_double(val, &o->duration) || o->duration <= 0 ||
          o->duration > 3600)
        goto bad;
      set_dur = 1;
    } else if (strcmp(a, "--keys") == 0) {
      NEED_VALUE();
      if (bench_parse_count(val, &v) || v < 1000 || v > 1000000000u)
        goto bad;
      o->keys = v;
      set_keys = 1;
    } else if (strcmp(a, "--r2-txs") == 0) {
      NEED_VALUE();
      if (bench_parse_count(val, &v) || v < 10 || v > 100000000u)
        goto bad;
      o->r2_txs = v;
      set_r2 = 1;
    } else if (strcmp(a, "--disk-iters") == 0) {
      NEED_VALUE();
      if (bench_parse_count(val, &v) || v < 10 || v > 10000000u)
        goto bad;
      o->disk_iters = v;
      set_disk = 1;
    } else if (strcmp(a, "--cache-mib") == 0) {
      NEED_VALUE();
      if (bench_parse_count(val, &v) || v < 1 || v > 65536)
        goto bad;
      o->cache_mib = v;
    } else if (strcmp(a, "--seed") == 0) {
      NEED_VALUE();
      if (bench_parse_count(val, &v))
        goto bad;
      o->seed = v;
    } else {
      fprintf(stderr, "immubench kv: unknown option '%s'\n", a);
      return -1;
    }
    continue;
  bad:
    fprintf(stderr, "immubench kv: bad value '%s' for %s\n", val, a);
    return -1;
#undef NEED_VALUE
  }
  if (o->quick) {
    if (!set_dur)
      o->duration = 1;
    if (!set_keys)
      o->keys = 20000;
    if (!set_r2)
      o->r2_txs = 2000;
    if (!set_disk)
      o->disk_iters = 300;
    o->drain_max = 2;
  }
  return 0;
}

/* 1 if case |name| is selected by --cases. */
static int selected(const kv_opts *o, const char *name) {
  if (!o->cases)
    return 1;
  const char *p = o->cases;
  while (*p) {
    size_t len = strcspn(p, ",");
    if (len > 0 && strncmp(name, p, len) == 0)
      return 1;
    p += len;
    if (*p == ',')
      p++;
  }
  return 0;
}

/* 1 if any case of the group |g| (a name prefix such as "r1") may be
 * selected: some --cases prefix starts with g, or g starts with it. */
static int group_selected(const kv_opts *o, const char *g) {
  if (!o->cases)
    return 1;
  size_t gl = strlen(g);
  const char *p = o->cases;
  while (*p) {
    size_t len = strcspn(p, ",");
    size_t m = len < gl ? len : gl;
    if (len > 0 && strncmp(g, p, m) == 0)
      return 1;
    p += len;
    if (*p == ',')
      p++;
  }
  return 0;
}

/* ------------------------------------------------------------------ */
/* Small helpers                                                       */
/* ------------------------------------------------------------------ */

static uint64_t mix64(uint64_t z) {
  z += UINT64_C(0x9E3779B97F4A7C15);
  z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
  z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
  return z ^ (z >> 31);
}

static void put_u64le(uint8_t *p, uint64_t v) {
  for (int i = 0; i < 8; i++)
    p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get_u64le(const uint8_t *p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; i++)
    v |= (uint64_t)p[i] << (8 * i);
  return v;
}

/* Key i of a preloaded data set: 32 pseudo-random bytes. */
static void data_key(uint64_t seed, uint64_t i, uint8_t *k) {
  for (int j = 0; j < 4; j++)
    put_u64le(k + 8 * j, mix64((seed << 40) ^ (i * 4 + (uint64_t)j)));
}

/* Value i: u64 LE i, then 120 pseudo-random bytes derived from i
 * (incompressible, like the values of the write cases). */
static void data_value(uint64_t i, uint8_t *v) {
  put_u64le(v, i);
  for (int j = 8; j < VAL_LEN; j += 8)
    put_u64le(v + j, mix64(UINT64_C(0xA5A5A5A5A5) ^ (i * 16 + (uint64_t)j / 8)));
}

static void read_loadavg(double out[3]) {
  out[0] = out[1] = out[2] = NAN;
  FILE *f = fopen("/proc/loadavg", "r");
  if (!f)
    return;
  if (fscanf(f, "%lf %lf %lf", &out[0], &out[1], &out[2]) != 3)
    out[0] = out[1] = out[2] = NAN;
  fclose(f);
}

static void sleep_s(double s) {
  struct timespec ts;
  ts.tv_sec = (time_t)s;
  ts.tv_nsec = (long)((s - (double)ts.tv_sec) * 1e9);
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

/* write_bytes of /proc/self/io: bytes this process caused to be sent to
 * the storage layer (page-cache dirtying, all threads). 0 if unknown. */
static uint64_t proc_write_bytes(int *ok) {
  FILE *f = fopen("/proc/self/io", "r");
  char line[256];
  uint64_t v = 0;
  *ok = 0;
  if (!f)
    return 0;
  while (fgets(line, sizeof line, f)) {
    unsigned long long x;
    if (sscanf(line, "write_bytes: %llu", &x) == 1) {
      v = x;
      *ok = 1;
    }
  }
  fclose(f);
  return v;
}

static uint64_t g_du;
static int du_cb(const char *path, const struct stat *sb, int type,
                 struct FTW *ftw) {
  (void)path;
  (void)ftw;
  if (type == FTW_F && S_ISREG(sb->st_mode))
    g_du += (uint64_t)sb->st_size;
  return 0;
}

/* Sum of the sizes of the regular files under |dir|. Not thread-safe. */
static uint64_t dir_bytes(const char *dir) {
  g_du = 0;
  if (nftw(dir, du_cb, 32, FTW_PHYS) != 0)
    return 0;
  return g_du;
}

static int rm_cb(const char *path, const struct stat *sb, int type,
                 struct FTW *ftw) {
  (void)sb;
  (void)type;
  (void)ftw;
  if (remove(path) != 0 && errno != ENOENT)
    fprintf(stderr, "immubench kv: cannot remove %s: %s\n", path,
            strerror(errno));
  return 0;
}

static void rm_rf(const char *dir) {
  struct stat st;
  if (lstat(dir, &st) != 0)
    return;
  nftw(dir, rm_cb, 32, FTW_DEPTH | FTW_PHYS);
}

static const char *fs_name(long type) {
  switch ((unsigned long)type) {
  case 0xEF53UL:
    return "ext2/3/4";
  case 0x58465342UL:
    return "xfs";
  case 0x9123683EUL:
    return "btrfs";
  case 0x01021994UL:
    return "tmpfs";
  case 0x794C7630UL:
    return "overlayfs";
  case 0x2FC12FC1UL:
    return "zfs";
  case 0x6969UL:
    return "nfs";
  default:
    return "other";
  }
}

/* ------------------------------------------------------------------ */
/* Counting wrapper of the engine's I/O seam                           */
/* ------------------------------------------------------------------ */

static const immu_io *g_real_io;
static _Atomic uint64_t g_io_fdatasyncs, g_io_dirsyncs, g_io_bytes;

static int cio_open(void *c, const char *p, int fl, int m, int *fd) {
  (void)c;
  return g_real_io->open(g_real_io->ctx, p, fl, m, fd);
}
static int cio_close(void *c, int fd) {
  (void)c;
  return g_real_io->close(g_real_io->ctx, fd);
}
static int cio_pread(void *c, int fd, void *b, size_t n, uint64_t off,
                     size_t *nr) {
  (void)c;
  return g_real_io->pread(g_real_io->ctx, fd, b, n, off, nr);
}
static int cio_pwritev(void *c, int fd, const struct iovec *iov, int cnt,
                       uint64_t off) {
  (void)c;
  uint64_t n = 0;
  for (int i = 0; i < cnt; i++)
    n += iov[i].iov_len;
  atomic_fetch_add_explicit(&g_io_bytes, n, memory_order_relaxed);
  return g_real_io->pwritev(g_real_io->ctx, fd, iov, cnt, off);
}
static int cio_fdatasync(void *c, int fd) {
  (void)c;
  atomic_fetch_add_explicit(&g_io_fdatasyncs, 1, memory_order_relaxed);
  return g_real_io->fdatasync(g_real_io->ctx, fd);
}
static int cio_ftruncate(void *c, int fd, uint64_t len) {
  (void)c;
  return g_real_io->ftruncate(g_real_io->ctx, fd, len);
}
static int cio_fsize(void *c, int fd, uint64_t *sz) {
  (void)c;
  return g_real_io->fsize(g_real_io->ctx, fd, sz);
}
static int cio_rename(void *c, const char *a, const char *b) {
  (void)c;
  return g_real_io->rename(g_real_io->ctx, a, b);
}
static int cio_unlink(void *c, const char *p) {
  (void)c;
  return g_real_io->unlink(g_real_io->ctx, p);
}
static int cio_mkdir(void *c, const char *p, int m) {
  (void)c;
  return g_real_io->mkdir(g_real_io->ctx, p, m);
}
static int cio_sync_dir(void *c, const char *p) {
  (void)c;
  atomic_fetch_add_explicit(&g_io_dirsyncs, 1, memory_order_relaxed);
  return g_real_io->sync_dir(g_real_io->ctx, p);
}

static const immu_io counting_io = {
    NULL,          cio_open,      cio_close,     cio_pread,
    cio_pwritev,   cio_fdatasync, cio_ftruncate, cio_fsize,
    cio_rename,    cio_unlink,    cio_mkdir,     cio_sync_dir};

static uint64_t io_syncs(void) {
  return atomic_load(&g_io_fdatasyncs) + atomic_load(&g_io_dirsyncs);
}

/* ------------------------------------------------------------------ */
/* SQLite: a VFS shim that counts xSync calls                          */
/* ------------------------------------------------------------------ */

#ifdef IMMUBENCH_HAVE_SQLITE3
typedef struct cfile {
  sqlite3_file base;
  sqlite3_file *real; /* the real file object follows this struct */
} cfile;

static sqlite3_vfs *g_sq_real;
static sqlite3_vfs g_sq_vfs;
static _Atomic uint64_t g_sq_syncs;
#define SQ_VFS_NAME "immubench-count"
#define REAL(f) (((cfile *)(void *)(f))->real)

static int c_close(sqlite3_file *f) {
  return REAL(f)->pMethods->xClose(REAL(f));
}
static int c_read(sqlite3_file *f, void *b, int n, sqlite3_int64 off) {
  return REAL(f)->pMethods->xRead(REAL(f), b, n, off);
}
static int c_write(sqlite3_file *f, const void *b, int n, sqlite3_int64 off) {
  return REAL(f)->pMethods->xWrite(REAL(f), b, n, off);
}
static int c_truncate(sqlite3_file *f, sqlite3_int64 sz) {
  return REAL(f)->pMethods->xTruncate(REAL(f), sz);
}
static int c_sync(sqlite3_file *f, int flags) {
  atomic_fetch_add_explicit(&g_sq_syncs, 1, memory_order_relaxed);
  return REAL(f)->pMethods->xSync(REAL(f), flags);
}
static int c_filesize(sqlite3_file *f, sqlite3_int64 *sz) {
  return REAL(f)->pMethods->xFileSize(REAL(f), sz);
}
static int c_lock(sqlite3_file *f, int l) {
  return REAL(f)->pMethods->xLock(REAL(f), l);
}
static int c_unlock(sqlite3_file *f, int l) {
  return REAL(f)->pMethods->xUnlock(REAL(f), l);
}
static int c_check_reserved(sqlite3_file *f, int *out) {
  return REAL(f)->pMethods->xCheckReservedLock(REAL(f), out);
}
static int c_fcntl(sqlite3_file *f, int op, void *arg) {
  return REAL(f)->pMethods->xFileControl(REAL(f), op, arg);
}
static int c_sector(sqlite3_file *f) {
  return REAL(f)->pMethods->xSectorSize(REAL(f));
}
static int c_devchar(sqlite3_file *f) {
  return REAL(f)->pMethods->xDeviceCharacteristics(REAL(f));
}
static int c_shm_map(sqlite3_file *f, int pg, int pgsz, int ext,
                     void volatile **pp) {
  return REAL(f)->pMethods->xShmMap(REAL(f), pg, pgsz, ext, pp);
}
static int c_shm_lock(sqlite3_file *f, int off, int n, int fl) {
  return REAL(f)->pMethods->xShmLock(REAL(f), off, n, fl);
}
static void c_shm_barrier(sqlite3_file *f) {
  REAL(f)->pMethods->xShmBarrier(REAL(f));
}
static int c_shm_unmap(sqlite3_file *f, int del) {
  return REAL(f)->pMethods->xShmUnmap(REAL(f), del);
}
static int c_fetch(sqlite3_file *f, sqlite3_int64 off, int amt, void **pp) {
  if (REAL(f)->pMethods->iVersion < 3) {
    *pp = NULL;
    return SQLITE_OK;
  }
  return REAL(f)->pMethods->xFetch(REAL(f), off, amt, pp);
}
static int c_unfetch(sqlite3_file *f, sqlite3_int64 off, void *p) {
  if (REAL(f)->pMethods->iVersion < 3)
    return SQLITE_OK;
  return REAL(f)->pMethods->xUnfetch(REAL(f), off, p);
}

static const sqlite3_io_methods c_io = {
    3,           c_close,          c_read,       c_write,       c_truncate,
    c_sync,      c_filesize,       c_lock,       c_unlock,      c_check_reserved,
    c_fcntl,     c_sector,         c_devchar,    c_shm_map,     c_shm_lock,
    c_shm_barrier, c_shm_unmap,    c_fetch,      c_unfetch};

static int c_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *f,
                  int flags, int *out) {
  (void)vfs;
  cfile *cf = (cfile *)(void *)f;
  cf->real = (sqlite3_file *)(void *)((char *)f + sizeof(cfile));
  cf->base.pMethods = NULL;
  int rc = g_sq_real->xOpen(g_sq_real, name, cf->real, flags, out);
  if (cf->real->pMethods != NULL)
    cf->base.pMethods = &c_io;
  return rc;
}

static pthread_once_t g_sq_once = PTHREAD_ONCE_INIT;
static int g_sq_ok;

static void sq_register(void) {
  g_sq_real = sqlite3_vfs_find(NULL);
  if (g_sq_real == NULL || g_sq_real->iVersion < 1)
    return;
  g_sq_vfs = *g_sq_real;
  g_sq_vfs.pNext = NULL;
  g_sq_vfs.zName = SQ_VFS_NAME;
  g_sq_vfs.szOsFile = (int)sizeof(cfile) + g_sq_real->szOsFile;
  g_sq_vfs.xOpen = c_open;
  g_sq_ok = sqlite3_vfs_register(&g_sq_vfs, 0) == SQLITE_OK;
}
#endif

/* ------------------------------------------------------------------ */
/* The three systems behind one interface                              */
/* ------------------------------------------------------------------ */

enum { SYS_IMMU = 0, SYS_SQLITE = 1, SYS_ROCKS = 2, NSYS = 3 };
static const char *const sys_name[NSYS] = {"immudb-c", "sqlite", "rocksdb"};

static int sys_available(int sys) {
  switch (sys) {
  case SYS_IMMU:
    return 1;
#ifdef IMMUBENCH_HAVE_SQLITE3
  case SYS_SQLITE:
    return 1;
#endif
#ifdef IMMUBENCH_HAVE_ROCKSDB
  case SYS_ROCKS:
    return 1;
#endif
  default:
    return 0;
  }
}

static const char *durability_detail(int sys, int synced) {
  switch (sys) {
  case SYS_IMMU:
    return synced ? "synced: fdatasync of the log per commit group"
                  : "async: log written per group, fsync every 10 ms";
  case SYS_SQLITE:
    return synced ? "WAL, synchronous=FULL" : "WAL, synchronous=NORMAL";
  default:
    return synced ? "WAL, WriteOptions.sync=1" : "WAL, WriteOptions.sync=0";
  }
}

typedef struct sys_db {
  int sys;
  int synced;
  char *dir;
  immu_db *db;
  immu_store_env *env; /* ours: private env, 1 index worker */
#ifdef IMMUBENCH_HAVE_SQLITE3
  char *sq_path;
  sqlite3 *sq_main; /* keeps the WAL and shm alive between connections */
#endif
#ifdef IMMUBENCH_HAVE_ROCKSDB
  rocksdb_t *rdb;
  rocksdb_options_t *ropt;
  rocksdb_block_based_table_options_t *rbb;
  rocksdb_cache_t *rcache;
  rocksdb_writeoptions_t *rwo;
  rocksdb_readoptions_t *rro;
#endif
} sys_db;

/* Per-thread handle. */
typedef struct sys_thr {
  sys_db *d;
  immu_db_kv *kvs; /* ours: the request array */
#ifdef IMMUBENCH_HAVE_SQLITE3
  sqlite3 *conn;
  sqlite3_stmt *ins, *sel, *begin, *commit, *rollback;
#endif
#ifdef IMMUBENCH_HAVE_ROCKSDB
  rocksdb_writebatch_t *wb;
#endif
  char err[256];
} sys_thr;

#ifdef IMMUBENCH_HAVE_SQLITE3
static int sq_exec(sqlite3 *c, const char *sql, char *err, size_t cap) {
  char *msg = NULL;
  int rc = sqlite3_exec(c, sql, NULL, NULL, &msg);
  if (rc != SQLITE_OK) {
    snprintf(err, cap, "sqlite: %s: %s", sql, msg ? msg : sqlite3_errstr(rc));
    sqlite3_free(msg);
    return -1;
  }
  return 0;
}

/* Opens a connection with the per-connection settings of |d|. */
static int sq_connect(sys_db *d, sqlite3 **out, char *err, size_t cap) {
  pthread_once(&g_sq_once, sq_register);
  sqlite3 *c = NULL;
  int rc = sqlite3_open_v2(d->sq_path, &c,
                           SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
                               SQLITE_OPEN_NOMUTEX,
                           g_sq_ok ? SQ_VFS_NAME : NULL);
  if (rc != SQLITE_OK) {
    snprintf(err, cap, "sqlite: open %s: %s", d->sq_path,
             c ? sqlite3_errmsg(c) : sqlite3_errstr(rc));
    sqlite3_close(c);
    return -1;
  }
  sqlite3_busy_timeout(c, SQLITE_BUSY_MS);
  char sql[160];
  snprintf(sql, sizeof sql,
           "PRAGMA journal_mode=WAL; PRAGMA synchronous=%s; "
           "PRAGMA cache_size=-%zu;",
           d->synced ? "FULL" : "NORMAL", g_cache_bytes >> 10);
  if (sq_exec(c, sql, err, cap) != 0) {
    sqlite3_close(c);
    return -1;
  }
  *out = c;
  return 0;
}
#endif

#ifdef IMMUBENCH_HAVE_ROCKSDB
static int rocks_err(char *e, char *err, size_t cap, const char *what) {
  snprintf(err, cap, "rocksdb: %s: %s", what, e);
  rocksdb_free(e);
  return -1;
}
#endif

static int sys_open(sys_db *d, int sys, const char *dir, int synced,
                    char *err, size_t cap) {
  memset(d, 0, sizeof *d);
  d->sys = sys;
  d->synced = synced;
  d->dir = bench_xstrdup(dir);
  if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
    snprintf(err, cap, "mkdir %s: %s", dir, strerror(errno));
    return -1;
  }
  switch (sys) {
  case SYS_IMMU: {
    immu_store_options so;
    immu_db_options o;
    immu_store_options_init(&so);
    so.durability = synced ? IMMU_DURABILITY_SYNCED : IMMU_DURABILITY_ASYNC;
    so.io = &counting_io;
    immu_db_options_init(&o);
    o.store = &so;
    /* What a default open does (a private env with one index worker),
     * with the cache budget the peers get. */
    int erc = immu_store_env_new(g_cache_bytes, 1, &d->env);
    if (erc != 0) {
      snprintf(err, cap, "immu_store_env_new: %s", immu_err_name(erc));
      return -1;
    }
    o.env = d->env;
    char *p = bench_xasprintf("%s/db", dir);
    int rc = immu_db_open(p, &o, &d->db);
    free(p);
    if (rc != 0) {
      snprintf(err, cap, "immu_db_open: %s (%s)", immu_db_last_error(),
               immu_err_name(rc));
      return -1;
    }
    return 0;
  }
#ifdef IMMUBENCH_HAVE_SQLITE3
  case SYS_SQLITE: {
    d->sq_path = bench_xasprintf("%s/kv.sqlite", dir);
    if (sq_connect(d, &d->sq_main, err, cap) != 0)
      return -1;
    return sq_exec(d->sq_main,
                   "CREATE TABLE IF NOT EXISTS kv(k BLOB PRIMARY KEY, v BLOB) "
                   "WITHOUT ROWID;",
                   err, cap);
  }
#endif
#ifdef IMMUBENCH_HAVE_ROCKSDB
  case SYS_ROCKS: {
    char *e = NULL;
    d->rcache = rocksdb_cache_create_lru(g_cache_bytes);
    d->rbb = rocksdb_block_based_options_create();
    rocksdb_block_based_options_set_block_cache(d->rbb, d->rcache);
    rocksdb_block_based_options_set_filter_policy(
        d->rbb, rocksdb_filterpolicy_create_bloom_full(10));
    d->ropt = rocksdb_options_create();
    rocksdb_options_set_create_if_missing(d->ropt, 1);
    rocksdb_options_set_block_based_table_factory(d->ropt, d->rbb);
    rocksdb_options_set_info_log_level(d->ropt, 2);
    char *p = bench_xasprintf("%s/rocks", dir);
    d->rdb = rocksdb_open(d->ropt, p, &e);
    free(p);
    if (e != NULL)
      return rocks_err(e, err, cap, "open");
    d->rwo = rocksdb_writeoptions_create();
    rocksdb_writeoptions_set_sync(d->rwo, synced);
    rocksdb_writeoptions_disable_WAL(d->rwo, 0);
    d->rro = rocksdb_readoptions_create();
    return 0;
  }
#endif
  default:
    snprintf(err, cap, "system %d not built in", sys);
    return -1;
  }
}

static int sys_close(sys_db *d, char *err, size_t cap) {
  int ret = 0;
  switch (d->sys) {
  case SYS_IMMU:
    if (d->db != NULL) {
      int rc = immu_db_close(d->db);
      if (rc != 0) {
        snprintf(err, cap, "immu_db_close: %s", immu_db_last_error());
        ret = -1;
      }
    }
    immu_store_env_free(d->env);
    break;
#ifdef IMMUBENCH_HAVE_SQLITE3
  case SYS_SQLITE:
    if (d->sq_main != NULL && sqlite3_close(d->sq_main) != SQLITE_OK) {
      snprintf(err, cap, "sqlite close: %s", sqlite3_errmsg(d->sq_main));
      ret = -1;
    }
    free(d->sq_path);
    break;
#endif
#ifdef IMMUBENCH_HAVE_ROCKSDB
  case SYS_ROCKS:
    if (d->rdb != NULL)
      rocksdb_close(d->rdb);
    if (d->rwo)
      rocksdb_writeoptions_destroy(d->rwo);
    if (d->rro)
      rocksdb_readoptions_destroy(d->rro);
    if (d->ropt)
      rocksdb_options_destroy(d->ropt);
    if (d->rbb)
      rocksdb_block_based_options_destroy(d->rbb);
    if (d->rcache)
      rocksdb_cache_destroy(d->rcache);
    break;
#endif
  default:
    break;
  }
  free(d->dir);
  memset(d, 0, sizeof *d);
  return ret;
}

static int sys_thr_init(sys_db *d, sys_thr *t, size_t batch) {
  memset(t, 0, sizeof *t);
  t->d = d;
  switch (d->sys) {
  case SYS_IMMU:
    t->kvs = bench_xcalloc(batch, sizeof *t->kvs);
    return 0;
#ifdef IMMUBENCH_HAVE_SQLITE3
  case SYS_SQLITE: {
    if (sq_connect(d, &t->conn, t->err, sizeof t->err) != 0)
      return -1;
    const char *sql[5] = {"INSERT OR REPLACE INTO kv(k, v) VALUES(?1, ?2)",
                          "SELECT v FROM kv WHERE k = ?1", "BEGIN IMMEDIATE",
                          "COMMIT", "ROLLBACK"};
    sqlite3_stmt **st[5] = {&t->ins, &t->sel, &t->begin, &t->commit,
                            &t->rollback};
    for (int i = 0; i < 5; i++)
      if (sqlite3_prepare_v2(t->conn, sql[i], -1, st[i], NULL) != SQLITE_OK) {
        snprintf(t->err, sizeof t->err, "sqlite prepare %s: %s", sql[i],
                 sqlite3_errmsg(t->conn));
        return -1;
      }
    return 0;
  }
#endif
#ifdef IMMUBENCH_HAVE_ROCKSDB
  case SYS_ROCKS:
    t->wb = rocksdb_writebatch_create();
    return 0;
#endif
  default:
    return -1;
  }
}

static void sys_thr_free(sys_thr *t) {
  free(t->kvs);
#ifdef IMMUBENCH_HAVE_SQLITE3
  sqlite3_finalize(t->ins);
  sqlite3_finalize(t->sel);
  sqlite3_finalize(t->begin);
  sqlite3_finalize(t->commit);
  sqlite3_finalize(t->rollback);
  if (t->conn)
    sqlite3_close(t->conn);
#endif
#ifdef IMMUBENCH_HAVE_ROCKSDB
  if (t->wb)
    rocksdb_writebatch_destroy(t->wb);
#endif
  t->kvs = NULL;
}

/* Commits |n| KVs (keys[i*KEY_LEN], vals[i*VAL_LEN]) as one tx. Returns 0,
 * 1 for a transient failure (SQLite busy; counted and retried) or -1 with
 * t->err set. */
static int sys_put(sys_thr *t, const uint8_t *keys, const uint8_t *vals,
                   size_t n, int no_wait) {
  sys_db *d = t->d;
  switch (d->sys) {
  case SYS_IMMU: {
    for (size_t i = 0; i < n; i++) {
      t->kvs[i].key = keys + i * KEY_LEN;
      t->kvs[i].key_len = KEY_LEN;
      t->kvs[i].value = vals + i * VAL_LEN;
      t->kvs[i].value_len = VAL_LEN;
    }
    int rc = immu_db_set(d->db, t->kvs, n, no_wait, NULL);
    if (rc != 0) {
      snprintf(t->err, sizeof t->err, "immu_db_set: %s (%s)",
               immu_db_last_error(), immu_err_name(rc));
      return -1;
    }
    return 0;
  }
#ifdef IMMUBENCH_HAVE_SQLITE3
  case SYS_SQLITE: {
    int rc = sqlite3_step(t->begin);
    sqlite3_reset(t->begin);
    if (rc == SQLITE_BUSY || rc == SQLITE_LOCKED)
      return 1;
    if (rc != SQLITE_DONE)
      goto sq_fail;
    for (size_t i = 0; i < n; i++) {
      sqlite3_bind_blob(t->ins, 1, keys + i * KEY_LEN, KEY_LEN,
                        SQLITE_STATIC);
      sqlite3_bind_blob(t->ins, 2, vals + i * VAL_LEN, VAL_LEN,
                        SQLITE_STATIC);
      rc = sqlite3_step(t->ins);
      sqlite3_reset(t->ins);
      if (rc != SQLITE_DONE)
        goto sq_fail_rollback;
    }
    rc = sqlite3_step(t->commit);
    sqlite3_reset(t->commit);
    if (rc == SQLITE_BUSY) {
      sqlite3_step(t->rollback);
      sqlite3_reset(t->rollback);
      return 1;
    }
    if (rc != SQLITE_DONE)
      goto sq_fail_rollback;
    return 0;
  sq_fail_rollback:
    snprintf(t->err, sizeof t->err, "sqlite write: %s",
             sqlite3_errmsg(t->conn));
    sqlite3_step(t->rollback);
    sqlite3_reset(t->rollback);
    return -1;
  sq_fail:
    snprintf(t->err, sizeof t->err, "sqlite BEGIN: %s",
             sqlite3_errmsg(t->conn));
    return -1;
  }
#endif
#ifdef IMMUBENCH_HAVE_ROCKSDB
  case SYS_ROCKS: {
    char *e = NULL;
    rocksdb_writebatch_clear(t->wb);
    for (size_t i = 0; i < n; i++)
      rocksdb_writebatch_put(t->wb, (const char *)keys + i * KEY_LEN, KEY_LEN,
                             (const char *)vals + i * VAL_LEN, VAL_LEN);
    rocksdb_write(d->rdb, d->rwo, t->wb, &e);
    if (e != NULL)
      return rocks_err(e, t->err, sizeof t->err, "write");
    return 0;
  }
#endif
  default:
    (void)keys;
    (void)vals;
    (void)n;
    (void)no_wait;
    return -1;
  }
}

/* Reads |key| and checks that its value is value |i| (length and the
 * leading u64). Returns 0, or -1 with t->err set. */
static int sys_get(sys_thr *t, const uint8_t *key, uint64_t i) {
  sys_db *d = t->d;
  const uint8_t *v = NULL;
  size_t vlen = 0;
  int ok;
  switch (d->sys) {
  case SYS_IMMU: {
    immu_db_key_req req;
    immu_db_entry e;
    memset(&req, 0, sizeof req);
    req.key = key;
    req.key_len = KEY_LEN;
    int rc = immu_db_get(d->db, &req, &e);
    if (rc != 0) {
      snprintf(t->err, sizeof t->err, "immu_db_get: %s (%s)",
               immu_db_last_error(), immu_err_name(rc));
      return -1;
    }
    ok = e.value_len == VAL_LEN && get_u64le(e.value) == i;
    immu_db_entry_clear(&e);
    break;
  }
#ifdef IMMUBENCH_HAVE_SQLITE3
  case SYS_SQLITE: {
    sqlite3_bind_blob(t->sel, 1, key, KEY_LEN, SQLITE_STATIC);
    int rc = sqlite3_step(t->sel);
    if (rc != SQLITE_ROW) {
      snprintf(t->err, sizeof t->err, "sqlite get: %s",
               rc == SQLITE_DONE ? "key not found" : sqlite3_errmsg(t->conn));
      sqlite3_reset(t->sel);
      return -1;
    }
    v = sqlite3_column_blob(t->sel, 0);
    vlen = (size_t)sqlite3_column_bytes(t->sel, 0);
    ok = vlen == VAL_LEN && v != NULL && get_u64le(v) == i;
    sqlite3_reset(t->sel);
    break;
  }
#endif
#ifdef IMMUBENCH_HAVE_ROCKSDB
  case SYS_ROCKS: {
    char *e = NULL;
    char *rv = rocksdb_get(d->rdb, d->rro, (const char *)key, KEY_LEN, &vlen,
                           &e);
    if (e != NULL)
      return rocks_err(e, t->err, sizeof t->err, "get");
    if (rv == NULL) {
      snprintf(t->err, sizeof t->err, "rocksdb get: key not found");
      return -1;
    }
    v = (const uint8_t *)rv;
    ok = vlen == VAL_LEN && get_u64le(v) == i;
    rocksdb_free(rv);
    break;
  }
#endif
  default:
    return -1;
  }
  (void)v;
  if (!ok) {
    snprintf(t->err, sizeof t->err, "%s: wrong value for key %llu",
             sys_name[d->sys], (unsigned long long)i);
    return -1;
  }
  return 0;
}

/* Engine-side figures of ours, or the peers' sync counts. */
typedef struct sys_counters {
  immu_db_stats st;   /* ours */
  uint64_t io_syncs;  /* ours: every engine-file sync (I/O seam) */
  uint64_t io_bytes;  /* ours: bytes written through the I/O seam */
  uint64_t sq_syncs;  /* sqlite: xSync calls */
} sys_counters;

static void sys_counters_read(const sys_db *d, sys_counters *c) {
  memset(c, 0, sizeof *c);
  if (d->sys == SYS_IMMU)
    immu_db_get_stats(d->db, &c->st);
  c->io_syncs = io_syncs();
  c->io_bytes = atomic_load(&g_io_bytes);
#ifdef IMMUBENCH_HAVE_SQLITE3
  c->sq_syncs = atomic_load(&g_sq_syncs);
#endif
}

/* RocksDB's WAL syncs since open, from "rocksdb.dbstats"
 * ("Cumulative WAL: N writes, M syncs, W writes per sync"): returns the
 * syncs as writes / W - 1 (W = writes / (syncs + 1), printed with two
 * decimals), or -1 when unavailable. */
static double rocks_wal_syncs(const sys_db *d, uint64_t writes) {
#ifdef IMMUBENCH_HAVE_ROCKSDB
  if (d->sys != SYS_ROCKS || d->rdb == NULL)
    return -1;
  char *s = rocksdb_property_value(d->rdb, "rocksdb.dbstats");
  if (s == NULL)
    return -1;
  double w = -1, res = -1;
  const char *p = strstr(s, "Cumulative WAL:");
  if (p != NULL) {
    const char *q = strstr(p, "syncs, ");
    if (q != NULL && sscanf(q + 7, "%lf writes per sync", &w) == 1 && w > 0)
      res = (double)writes / w - 1;
  }
  rocksdb_free(s);
  if (res < 0 && res > -1)
    res = 0;
  return res;
#else
  (void)d;
  (void)writes;
  return -1;
#endif
}

/* Pays the compaction debt of a bulk load before timed reads. */
static int sys_settle(sys_db *d, char *err, size_t cap) {
  switch (d->sys) {
  case SYS_IMMU: {
    int rc = immu_db_flush_index(d->db);
    if (rc == 0)
      rc = immu_db_compact_index(d->db);
    if (rc != 0) {
      snprintf(err, cap, "index flush/compaction: %s", immu_db_last_error());
      return -1;
    }
    return 0;
  }
#ifdef IMMUBENCH_HAVE_SQLITE3
  case SYS_SQLITE:
    return sq_exec(d->sq_main, "PRAGMA wal_checkpoint(TRUNCATE);", err, cap);
#endif
#ifdef IMMUBENCH_HAVE_ROCKSDB
  case SYS_ROCKS: {
    char *e = NULL;
    rocksdb_flushoptions_t *fo = rocksdb_flushoptions_create();
    rocksdb_flushoptions_set_wait(fo, 1);
    rocksdb_flush(d->rdb, fo, &e);
    rocksdb_flushoptions_destroy(fo);
    if (e != NULL)
      return rocks_err(e, err, cap, "flush");
    rocksdb_compact_range(d->rdb, NULL, 0, NULL, 0);
    return 0;
  }
#endif
  default:
    (void)err;
    (void)cap;
    return -1;
  }
}

/* Waits until our index covers every committed tx, at most |max_s|.
 * Returns the seconds waited, or -1 on timeout. */
static double wait_index_caught_up(immu_db *db, double max_s) {
  uint64_t t0 = bench_now_ns();
  for (;;) {
    immu_db_stats st;
    immu_db_get_stats(db, &st);
    double el = bench_elapsed_s(t0, bench_now_ns());
    if (st.index_lag == 0)
      return el;
    if (el > max_s)
      return -1;
    sleep_s(0.001);
  }
}

/* ------------------------------------------------------------------ */
/* Timed runner: N threads calling one op until a deadline             */
/* ------------------------------------------------------------------ */

struct runner;

typedef struct worker {
  struct runner *r;
  unsigned idx;
  pthread_t tid;
  sys_thr th;
  bench_rng rng;
  uint8_t *keys, *vals;
  uint64_t seq;
  double *lat; /* µs per successful op */
  size_t nlat, cap;
  uint64_t ops, transient, failed;
  uint64_t end_ns;
  uint64_t hashes; /* immu_hash_count() delta of this thread */
  char err[256];
} worker;

typedef int (*op_fn)(worker *w);

typedef struct runner {
  sys_db *d;
  unsigned nthreads;
  size_t batch;
  int no_wait;
  uint64_t nkeys;      /* reads: keys of the data set */
  uint64_t data_seed;  /* reads: seed of data_key */
  uint64_t prove_since;
  op_fn op;
  atomic_int stop;
  pthread_barrier_t bar;
  worker *w;
} runner;

static int op_write(worker *w) {
  runner *r = w->r;
  /* Fresh random keys and values for every op: nothing compresses. */
  for (size_t i = 0; i < r->batch; i++) {
    bench_rng_bytes(&w->rng, w->keys + i * KEY_LEN, KEY_LEN);
    put_u64le(w->vals + i * VAL_LEN, w->seq++);
    bench_rng_bytes(&w->rng, w->vals + i * VAL_LEN + 8, VAL_LEN - 8);
  }
  return sys_put(&w->th, w->keys, w->vals, r->batch, r->no_wait);
}

static int op_get(worker *w) {
  runner *r = w->r;
  uint64_t i = bench_rng_below(&w->rng, r->nkeys);
  data_key(r->data_seed, i, w->keys);
  return sys_get(&w->th, w->keys, i);
}

static int op_vget(worker *w) {
  runner *r = w->r;
  uint64_t i = bench_rng_below(&w->rng, r->nkeys);
  data_key(r->data_seed, i, w->keys);
  immu_db_key_req req;
  immu_db_verifiable_entry ve;
  memset(&req, 0, sizeof req);
  req.key = w->keys;
  req.key_len = KEY_LEN;
  int rc = immu_db_verifiable_get(r->d->db, &req, r->prove_since, &ve);
  if (rc != 0) {
    snprintf(w->th.err, sizeof w->th.err, "immu_db_verifiable_get: %s (%s)",
             immu_db_last_error(), immu_err_name(rc));
    return -1;
  }
  int ok = ve.entry.value_len == VAL_LEN && get_u64le(ve.entry.value) == i;
  immu_db_verifiable_entry_clear(&ve);
  if (!ok) {
    snprintf(w->th.err, sizeof w->th.err, "verifiable get: wrong value");
    return -1;
  }
  return 0;
}

static void *worker_main(void *arg) {
  worker *w = arg;
  runner *r = w->r;
  pthread_barrier_wait(&r->bar);
  uint64_t h0 = immu_hash_count();
  while (!atomic_load_explicit(&r->stop, memory_order_relaxed)) {
    uint64_t a = bench_now_ns();
    int rc = r->op(w);
    uint64_t b = bench_now_ns();
    if (rc > 0) {
      w->transient++;
      continue;
    }
    if (rc < 0) {
      w->failed++;
      snprintf(w->err, sizeof w->err, "%s", w->th.err);
      break;
    }
    if (w->nlat == w->cap) {
      w->cap = w->cap ? w->cap * 2 : 4096;
      w->lat = bench_xrealloc(w->lat, w->cap * sizeof *w->lat);
    }
    w->lat[w->nlat++] = (double)(b - a) / 1e3;
    w->ops++;
  }
  w->hashes = immu_hash_count() - h0;
  w->end_ns = bench_now_ns();
  return NULL;
}

/* The figures of one timed case. */
typedef struct case_res {
  char name[64];  /* e.g. w1_synced_t16 */
  char group[8];  /* W1, W2, R1, R2 */
  char label[96]; /* table label */
  int sys;
  int synced;     /* 1/0 for writes, -1 for reads */
  int is_read;
  unsigned threads;
  size_t kvs_per_op;
  int ran;
  char err[320];
  double elapsed;
  uint64_t ops, transient;
  double ops_s, kv_s;
  double p50_us, p99_us, mean_us;
  double hashes_per_op; /* ours, calling threads */
  /* writes */
  double fsyncs_per_tx;     /* ours: log fsyncs (stats); peers: counted */
  double all_syncs_per_tx;  /* ours: every engine-file sync */
  double txs_per_group;     /* ours */
  uint64_t index_lag_end;   /* ours: at the end of the window */
  double drain_s;           /* ours: catch-up time after it, -1 timeout */
  uint64_t file_bytes;      /* ours: log+txi+aht+index (stats) */
  uint64_t dir_bytes;       /* everything in the case directory */
  uint64_t logical_bytes;   /* (32 + 128) per KV */
  double space_amp;         /* file_bytes / logical */
  int io_ok;
  uint64_t io_write_bytes;  /* /proc/self/io write_bytes delta */
  double io_amp;
  double ratio[NSYS];       /* ours / peer ops/s, NAN if none */
  double load1;             /* 1-min load average before the case */
  double cpu_cores;         /* process CPU time (user+sys, all threads)
                               over the window / window length */
} case_res;

/* Runs |op| on |nthreads| threads against |d| for |duration| seconds and
 * fills the timing part of |res|. */
static void run_timed(case_res *res, sys_db *d, unsigned nthreads,
                      size_t batch, int no_wait, op_fn op, double duration,
                      uint64_t nkeys, uint64_t data_seed, uint64_t prove_since,
                      uint64_t seed) {
  runner r;
  memset(&r, 0, sizeof r);
  r.d = d;
  r.nthreads = nthreads;
  r.batch = batch;
  r.no_wait = no_wait;
  r.op = op;
  r.nkeys = nkeys;
  r.data_seed = data_seed;
  r.prove_since = prove_since;
  atomic_store(&r.stop, 0);
  r.w = bench_xcalloc(nthreads, sizeof *r.w);
  for (unsigned i = 0; i < nthreads; i++) {
    worker *w = &r.w[i];
    w->r = &r;
    w->idx = i;
    bench_rng_seed(&w->rng, mix64(seed * 1000003u + i + 1));
    w->keys = bench_xcalloc(batch, KEY_LEN);
    w->vals = bench_xcalloc(batch, VAL_LEN);
    bench_rng_bytes(&w->rng, w->vals, batch * VAL_LEN);
    w->seq = (uint64_t)i << 40;
    if (sys_thr_init(d, &w->th, batch) != 0) {
      snprintf(res->err, sizeof res->err, "thread setup: %s", w->th.err);
      for (unsigned j = 0; j <= i; j++) {
        sys_thr_free(&r.w[j].th);
        free(r.w[j].keys);
        free(r.w[j].vals);
      }
      free(r.w);
      return;
    }
  }
  pthread_barrier_init(&r.bar, NULL, nthreads + 1);
  unsigned started = 0;
  for (unsigned i = 0; i < nthreads; i++) {
    if (pthread_create(&r.w[i].tid, NULL, worker_main, &r.w[i]) != 0) {
      fprintf(stderr, "immubench kv: pthread_create failed\n");
      exit(1);
    }
    started++;
  }
  pthread_barrier_wait(&r.bar);
  uint64_t t0 = bench_now_ns();
  struct rusage ru0, ru1;
  getrusage(RUSAGE_SELF, &ru0);
  double left = duration;
  while (left > 0) {
    sleep_s(left > 0.05 ? 0.05 : left);
    left = duration - bench_elapsed_s(t0, bench_now_ns());
    /* stop early when every thread has failed */
    unsigned dead = 0;
    for (unsigned i = 0; i < nthreads; i++)
      dead += r.w[i].failed ? 1u : 0u;
    if (dead == nthreads)
      break;
  }
  atomic_store(&r.stop, 1);
  uint64_t tend = t0;
  for (unsigned i = 0; i < started; i++) {
    pthread_join(r.w[i].tid, NULL);
    if (r.w[i].end_ns > tend)
      tend = r.w[i].end_ns;
  }
  getrusage(RUSAGE_SELF, &ru1);
  double cpu = (double)(ru1.ru_utime.tv_sec - ru0.ru_utime.tv_sec) +
               (double)(ru1.ru_utime.tv_usec - ru0.ru_utime.tv_usec) / 1e6 +
               (double)(ru1.ru_stime.tv_sec - ru0.ru_stime.tv_sec) +
               (double)(ru1.ru_stime.tv_usec - ru0.ru_stime.tv_usec) / 1e6;
  pthread_barrier_destroy(&r.bar);

  size_t nlat = 0;
  uint64_t hashes = 0;
  for (unsigned i = 0; i < nthreads; i++) {
    worker *w = &r.w[i];
    nlat += w->nlat;
    res->ops += w->ops;
    res->transient += w->transient;
    hashes += w->hashes;
    if (w->failed && !res->err[0])
      snprintf(res->err, sizeof res->err, "thread %u: %s", i, w->err);
  }
  double *all = bench_xmalloc((nlat ? nlat : 1) * sizeof *all);
  size_t k = 0;
  double sum = 0;
  for (unsigned i = 0; i < nthreads; i++) {
    worker *w = &r.w[i];
    memcpy(all + k, w->lat, w->nlat * sizeof *all);
    k += w->nlat;
    for (size_t j = 0; j < w->nlat; j++)
      sum += w->lat[j];
  }
  bench_sort_doubles(all, nlat);
  res->elapsed = bench_elapsed_s(t0, tend);
  res->cpu_cores = res->elapsed > 0 ? cpu / res->elapsed : NAN;
  res->ops_s = res->elapsed > 0 ? (double)res->ops / res->elapsed : 0;
  res->kv_s = res->ops_s * (double)batch;
  res->p50_us = nlat ? bench_percentile_sorted(all, nlat, 50) : NAN;
  res->p99_us = nlat ? bench_percentile_sorted(all, nlat, 99) : NAN;
  res->mean_us = nlat ? sum / (double)nlat : NAN;
  res->hashes_per_op = res->ops ? (double)hashes / (double)res->ops : NAN;
  res->ran = 1;
  free(all);
  for (unsigned i = 0; i < nthreads; i++) {
    sys_thr_free(&r.w[i].th);
    free(r.w[i].keys);
    free(r.w[i].vals);
    free(r.w[i].lat);
  }
  free(r.w);
}

/* ------------------------------------------------------------------ */
/* Cases                                                               */
/* ------------------------------------------------------------------ */

typedef struct results {
  case_res *v;
  size_t n, cap;
} results;

static case_res *results_add(results *rs) {
  if (rs->n == rs->cap) {
    rs->cap = rs->cap ? rs->cap * 2 : 64;
    rs->v = bench_xrealloc(rs->v, rs->cap * sizeof *rs->v);
  }
  case_res *c = &rs->v[rs->n++];
  memset(c, 0, sizeof *c);
  for (int s = 0; s < NSYS; s++)
    c->ratio[s] = NAN;
  c->fsyncs_per_tx = NAN;
  c->all_syncs_per_tx = NAN;
  c->txs_per_group = NAN;
  c->drain_s = NAN;
  c->space_amp = NAN;
  c->io_amp = NAN;
  c->hashes_per_op = NAN;
  c->p50_us = c->p99_us = c->mean_us = NAN;
  c->cpu_cores = NAN;
  double la[3];
  read_loadavg(la);
  c->load1 = la[0];
  return c;
}

#define NDISK 4
typedef struct disk_res {
  int ran;
  const char *what;
  double rate, p50_us, p99_us;
} disk_res;

typedef struct ctx {
  const kv_opts *o;
  char *base; /* <dir>/kv-<pid> */
  results rs;
  int nsys; /* systems to run: 1 or NSYS */
  /* disk case */
  /* disk cases: [0] append at the start, [1] overwrite at the start,
   * [2] append after the write cases, [3] append at the end of the run */
  uint64_t disk_iters;
  disk_res disk[NDISK];
  int disk_ran;         /* at least one append run */
  double disk_fsync_s;  /* the reference: median of the append runs */
  double load_start[3], load_end[3]; /* /proc/loadavg */
  char fs_type[32];
  /* sha case */
  int sha_ran;
  double sha_rate; /* 64 B hashes/s, median */
  double sha_runs[3];
  int verified_wide, verified_narrow; /* -1 not run, 0 failed, 1 ok */
  char verify_msg[2][256];
  double load_s[NSYS];
  double settle_s[NSYS];
  double load_index_s;
  double narrow_load_s, narrow_index_s;
} ctx;

static int sys_enabled(const ctx *c, int sys) {
  return sys < c->nsys && sys_available(sys);
}

/* One write case on one system: fresh dir, timed window, counters. */
static void write_case(ctx *c, case_res *res, int sys, int synced,
                       unsigned threads, size_t batch) {
  const kv_opts *o = c->o;
  char *dir = bench_xasprintf("%s/%s-%s", c->base, res->name, sys_name[sys]);
  rm_rf(dir);
  int io_ok0, io_ok1;
  uint64_t io0 = proc_write_bytes(&io_ok0);
  sys_db d;
  if (sys_open(&d, sys, dir, synced, res->err, sizeof res->err) != 0) {
    char e2[64];
    sys_close(&d, e2, sizeof e2);
    rm_rf(dir);
    free(dir);
    return;
  }
  sys_counters c0, c1;
  sys_counters_read(&d, &c0);
  int no_wait = !o->wait_index;
  run_timed(res, &d, threads, batch, no_wait, op_write, o->duration, 0, 0, 0,
            o->seed + (uint64_t)threads * 7 + (uint64_t)synced);
  sys_counters_read(&d, &c1);
  uint64_t txs = res->ops;
  res->logical_bytes = txs * batch * (KEY_LEN + VAL_LEN);
  if (sys == SYS_IMMU) {
    uint64_t dtx = c1.st.txs - c0.st.txs;
    res->index_lag_end = c1.st.index_lag;
    if (dtx > 0) {
      res->fsyncs_per_tx = (double)(c1.st.fsyncs - c0.st.fsyncs) / (double)dtx;
      res->all_syncs_per_tx = (double)(c1.io_syncs - c0.io_syncs) / (double)dtx;
      uint64_t g = c1.st.groups - c0.st.groups;
      res->txs_per_group = g ? (double)dtx / (double)g : NAN;
    }
    res->drain_s = wait_index_caught_up(d.db, o->drain_max);
    immu_db_stats st;
    immu_db_get_stats(d.db, &st);
    res->file_bytes =
        st.log_bytes + st.txi_bytes + st.aht_bytes + st.index_bytes;
  } else if (sys == SYS_SQLITE) {
    if (txs > 0)
      res->fsyncs_per_tx = (double)(c1.sq_syncs - c0.sq_syncs) / (double)txs;
  } else {
    double s = rocks_wal_syncs(&d, txs);
    if (s >= 0 && txs > 0)
      res->fsyncs_per_tx = s / (double)txs;
  }
  res->dir_bytes = dir_bytes(dir);
  if (sys != SYS_IMMU)
    res->file_bytes = res->dir_bytes;
  char e2[256];
  if (sys_close(&d, e2, sizeof e2) != 0 && !res->err[0])
    snprintf(res->err, sizeof res->err, "%s", e2);
  uint64_t io1 = proc_write_bytes(&io_ok1);
  res->io_ok = io_ok0 && io_ok1;
  res->io_write_bytes = io1 - io0;
  if (res->logical_bytes > 0) {
    res->space_amp = (double)res->file_bytes / (double)res->logical_bytes;
    if (res->io_ok)
      res->io_amp = (double)res->io_write_bytes / (double)res->logical_bytes;
  }
  rm_rf(dir);
  free(dir);
}

static void fill_ratios(results *rs, size_t first) {
  /* the systems of one configuration are consecutive: ours, then peers */
  for (size_t i = first; i < rs->n; i++) {
    case_res *a = &rs->v[i];
    if (a->sys != SYS_IMMU || !a->ran)
      continue;
    for (size_t j = first; j < rs->n; j++) {
      case_res *b = &rs->v[j];
      if (b->sys == SYS_IMMU || !b->ran || strcmp(a->name, b->name) != 0)
        continue;
      if (b->ops_s > 0 && !b->err[0])
        a->ratio[b->sys] = a->ops_s / b->ops_s;
    }
  }
}

static void progress_case(const case_res *r) {
  if (!r->ran) {
    bench_progress("kv: %-16s %-8s skipped: %s", r->name, sys_name[r->sys],
                   r->err);
    return;
  }
  bench_progress("kv: %-16s %-8s %10.0f ops/s  p50 %8.1f us  p99 %9.1f us%s%s",
                 r->name, sys_name[r->sys], r->ops_s, r->p50_us, r->p99_us,
                 r->err[0] ? "  ERROR: " : "", r->err);
}

static void run_writes(ctx *c, const char *group, const char *prefix,
                       int synced, unsigned threads, size_t batch) {
  char name[64];
  snprintf(name, sizeof name, "%s_%s_t%u", prefix, synced ? "synced" : "async",
           threads);
  if (!selected(c->o, name))
    return;
  size_t first = c->rs.n;
  for (int sys = 0; sys < NSYS; sys++) {
    if (!sys_enabled(c, sys))
      continue;
    case_res *r = results_add(&c->rs);
    snprintf(r->name, sizeof r->name, "%s", name);
    snprintf(r->group, sizeof r->group, "%s", group);
    snprintf(r->label, sizeof r->label, "%s %s, %u thr", group,
             synced ? "synced" : "async", threads);
    r->sys = sys;
    r->synced = synced;
    r->threads = threads;
    r->kvs_per_op = batch;
    bench_progress("kv: %s on %s ...", name, sys_name[sys]);
    write_case(c, r, sys, synced, threads, batch);
    progress_case(r);
  }
  fill_ratios(&c->rs, first);
}

/* The disk: |iters| x (write 256 bytes + fdatasync). |overwrite| 0: each
 * write appends (the file grows, so every fdatasync also commits the new
 * size: what a log does); 1: the writes go over a file preallocated and
 * synced beforehand (data only, no metadata). */
static void disk_run(ctx *c, disk_res *dr, int overwrite, const char *what) {
  char *path = bench_xasprintf("%s/disk-fsync.dat", c->base);
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | (overwrite ? 0 : O_APPEND),
                0644);
  if (fd < 0) {
    fprintf(stderr, "immubench kv: %s: %s\n", path, strerror(errno));
    free(path);
    return;
  }
  uint8_t buf[256];
  memset(buf, 0x5A, sizeof buf);
  uint64_t n = c->disk_iters;
  if (overwrite) {
    uint8_t blk[65536];
    memset(blk, 0xA5, sizeof blk);
    for (uint64_t off = 0; off < n * sizeof buf; off += sizeof blk)
      if (pwrite(fd, blk, sizeof blk, (off_t)off) != (ssize_t)sizeof blk) {
        fprintf(stderr, "immubench kv: preallocating: %s\n", strerror(errno));
        exit(1);
      }
    if (fsync(fd) != 0) {
      fprintf(stderr, "immubench kv: fsync: %s\n", strerror(errno));
      exit(1);
    }
  }
  bench_progress("kv: disk: %llu x %s", (unsigned long long)n, what);
  double *lat = bench_xcalloc(n, sizeof *lat);
  uint64_t t0 = bench_now_ns();
  for (uint64_t i = 0; i < n; i++) {
    uint64_t a = bench_now_ns();
    ssize_t w = overwrite ? pwrite(fd, buf, sizeof buf, (off_t)(i * sizeof buf))
                          : write(fd, buf, sizeof buf);
    if (w != (ssize_t)sizeof buf || fdatasync(fd) != 0) {
      fprintf(stderr, "immubench kv: disk write/fdatasync: %s\n",
              strerror(errno));
      exit(1);
    }
    lat[i] = (double)(bench_now_ns() - a) / 1e3;
  }
  double el = bench_elapsed_s(t0, bench_now_ns());
  close(fd);
  unlink(path);
  free(path);
  bench_sort_doubles(lat, n);
  dr->what = what;
  dr->rate = (double)n / el;
  dr->p50_us = bench_percentile_sorted(lat, n, 50);
  dr->p99_us = bench_percentile_sorted(lat, n, 99);
  dr->ran = 1;
  free(lat);
  bench_progress("kv: disk: %.0f fdatasync/s, p50 %.0f us, p99 %.0f us",
                 dr->rate, dr->p50_us, dr->p99_us);
}

static void disk_reference(ctx *c) {
  double v[NDISK];
  size_t n = 0;
  for (int i = 0; i < NDISK; i++)
    if (c->disk[i].ran && i != 1)
      v[n++] = c->disk[i].rate;
  c->disk_ran = n > 0;
  c->disk_fsync_s = n ? bench_median(v, n) : NAN;
}

static volatile uint8_t g_sink;

/* Raw immu_sha256 on 64 bytes: 3 runs of about 0.3 s, median. */
static void sha_case(ctx *c) {
  uint8_t buf[64];
  memset(buf, 0x3C, sizeof buf);
  immu_digest d;
  uint64_t iters = 200000;
  for (int r = 0; r < 3; r++) {
    uint64_t t0 = bench_now_ns();
    for (uint64_t i = 0; i < iters; i++) {
      buf[0] = (uint8_t)i;
      immu_sha256(buf, sizeof buf, &d);
      g_sink ^= d.b[0];
    }
    double el = bench_elapsed_s(t0, bench_now_ns());
    c->sha_runs[r] = (double)iters / el;
    if (r == 0)
      iters = (uint64_t)(c->sha_runs[0] * 0.3) + 1;
  }
  c->sha_rate = bench_median(c->sha_runs, 3);
  c->sha_ran = 1;
  bench_progress("kv: sha256 64 B: %.0f hashes/s", c->sha_rate);
}

/* Loader: |nthreads| threads commit keys [0, n) in txs of |batch| KVs. */
typedef struct loader {
  sys_db *d;
  uint64_t lo, hi, seed;
  size_t batch;
  sys_thr th;
  int rc;
  pthread_t tid;
} loader;

static void *loader_main(void *arg) {
  loader *l = arg;
  uint8_t *keys = bench_xcalloc(l->batch, KEY_LEN);
  uint8_t *vals = bench_xcalloc(l->batch, VAL_LEN);
  for (uint64_t i = l->lo; i < l->hi && l->rc == 0;) {
    size_t n = 0;
    for (; n < l->batch && i < l->hi; n++, i++) {
      data_key(l->seed, i, keys + n * KEY_LEN);
      data_value(i, vals + n * VAL_LEN);
    }
    int rc;
    do
      rc = sys_put(&l->th, keys, vals, n, 1);
    while (rc > 0);
    l->rc = rc;
  }
  free(keys);
  free(vals);
  return NULL;
}

static int load_data(sys_db *d, uint64_t n, uint64_t seed, size_t batch,
                     unsigned nthreads, char *err, size_t cap) {
  loader *l = bench_xcalloc(nthreads, sizeof *l);
  int ret = 0;
  unsigned i;
  for (i = 0; i < nthreads; i++) {
    l[i].d = d;
    l[i].seed = seed;
    l[i].batch = batch;
    l[i].lo = n * i / nthreads;
    l[i].hi = n * (i + 1) / nthreads;
    if (sys_thr_init(d, &l[i].th, batch) != 0) {
      snprintf(err, cap, "%s", l[i].th.err);
      ret = -1;
      i++;
      break;
    }
  }
  unsigned ninit = i;
  if (ret == 0) {
    for (i = 0; i < nthreads; i++)
      pthread_create(&l[i].tid, NULL, loader_main, &l[i]);
    for (i = 0; i < nthreads; i++) {
      pthread_join(l[i].tid, NULL);
      if (l[i].rc != 0 && ret == 0) {
        snprintf(err, cap, "%s", l[i].th.err);
        ret = -1;
      }
    }
  }
  for (i = 0; i < ninit; i++)
    sys_thr_free(&l[i].th);
  free(l);
  return ret;
}

/* Checks a few keys by value before timing reads. */
static int spot_check(sys_db *d, uint64_t nkeys, uint64_t seed, char *err,
                      size_t cap) {
  sys_thr t;
  if (sys_thr_init(d, &t, 1) != 0) {
    snprintf(err, cap, "%s", t.err);
    sys_thr_free(&t);
    return -1;
  }
  uint8_t k[KEY_LEN];
  int rc = 0;
  for (uint64_t j = 0; j < 16 && rc == 0; j++) {
    uint64_t i = j * (nkeys / 16);
    data_key(seed, i, k);
    rc = sys_get(&t, k, i);
  }
  if (rc != 0)
    snprintf(err, cap, "%s", t.err);
  sys_thr_free(&t);
  return rc;
}

/* Client-side verification of one verifiable Get (spec 7.4), as immudb's
 * VerifiedGet does: entry digest in the htree of vTx, Alh of vTx, dual
 * proof from vTx to the client's state; plus a tampered value that must
 * be rejected. Returns 1 if it all holds, 0 otherwise (msg says why). */
static int verify_once(immu_db *db, uint64_t nkeys, uint64_t seed,
                       char *msg, size_t cap) {
  immu_db_state state;
  immu_db_current_state(db, &state);
  uint64_t i = nkeys / 3;
  uint8_t key[KEY_LEN], val[VAL_LEN];
  data_key(seed, i, key);
  data_value(i, val);
  immu_db_key_req req;
  memset(&req, 0, sizeof req);
  req.key = key;
  req.key_len = KEY_LEN;
  immu_db_verifiable_entry ve;
  int rc = immu_db_verifiable_get(db, &req, state.tx_id, &ve);
  if (rc != 0) {
    snprintf(msg, cap, "verifiable_get: %s", immu_db_last_error());
    return 0;
  }
  int ok = 0;
  const immu_tx_header *vh = &ve.vtx.tx.header;
  uint64_t vtx = ve.entry.tx;
  uint8_t ek[1 + KEY_LEN], ev[1 + VAL_LEN];
  size_t ekl, evl;
  immu_digest hval, dig, alh;
  if (ve.entry.value_len != VAL_LEN ||
      memcmp(ve.entry.value, val, VAL_LEN) != 0) {
    snprintf(msg, cap, "value differs from what was written");
    goto out;
  }
  if (vh->id != vtx) {
    snprintf(msg, cap, "vTx header id %llu != entry tx %llu",
             (unsigned long long)vh->id, (unsigned long long)vtx);
    goto out;
  }
  immu_enc_key(key, KEY_LEN, ek, sizeof ek, &ekl);
  immu_enc_value(val, VAL_LEN, ev, sizeof ev, &evl);
  immu_sha256(ev, evl, &hval);
  if (immu_entry_digest(vh->version, ek, ekl, NULL, 0, &hval, &dig) != 0 ||
      immu_htree_verify(ve.inclusion.terms, ve.inclusion.nterms,
                        ve.inclusion.leaf, ve.inclusion.width, &dig,
                        &vh->eh) != 0) {
    snprintf(msg, cap, "htree inclusion proof does not verify");
    goto out;
  }
  if (immu_tx_alh(vh, &alh) != 0 || !immu_digest_eq(&alh, &ve.vtx.tx.alh)) {
    snprintf(msg, cap, "Alh of vTx does not match");
    goto out;
  }
  uint64_t src = vtx, dst = state.tx_id;
  const immu_digest *src_alh = &alh, *dst_alh = &state.tx_hash;
  if (state.tx_id < vtx) {
    src = state.tx_id;
    dst = vtx;
    src_alh = &state.tx_hash;
    dst_alh = &alh;
  }
  if (immu_dual_proof_verify(&ve.vtx.proof, src, dst, src_alh, dst_alh) !=
      0) {
    snprintf(msg, cap, "dual proof (%llu -> %llu) does not verify",
             (unsigned long long)src, (unsigned long long)dst);
    goto out;
  }
  /* tampered value */
  ev[5] ^= 1;
  immu_sha256(ev, evl, &hval);
  immu_entry_digest(vh->version, ek, ekl, NULL, 0, &hval, &dig);
  if (immu_htree_verify(ve.inclusion.terms, ve.inclusion.nterms,
                        ve.inclusion.leaf, ve.inclusion.width, &dig,
                        &vh->eh) == 0) {
    snprintf(msg, cap, "a tampered value verified");
    goto out;
  }
  snprintf(msg, cap,
           "key %llu: value in tx %llu (%u entries, leaf %u, %zu htree terms),"
           " dual proof %llu -> %llu verified; tampered value rejected",
           (unsigned long long)i, (unsigned long long)vtx, vh->nentries,
           ve.inclusion.leaf, ve.inclusion.nterms, (unsigned long long)src,
           (unsigned long long)dst);
  ok = 1;
out:
  immu_db_verifiable_entry_clear(&ve);
  return ok;
}

static void read_case(ctx *c, const char *group, const char *name,
                      const char *label, sys_db *d, unsigned threads,
                      op_fn op, uint64_t nkeys, uint64_t seed,
                      uint64_t prove_since) {
  case_res *r = results_add(&c->rs);
  snprintf(r->name, sizeof r->name, "%s", name);
  snprintf(r->group, sizeof r->group, "%s", group);
  snprintf(r->label, sizeof r->label, "%s", label);
  r->sys = d->sys;
  r->synced = -1;
  r->is_read = 1;
  r->threads = threads;
  r->kvs_per_op = 1;
  bench_progress("kv: %s on %s ...", name, sys_name[d->sys]);
  run_timed(r, d, threads, 1, 0, op, c->o->duration, nkeys, seed, prove_since,
            c->o->seed + threads * 13u);
  progress_case(r);
}

static void skipped_case(ctx *c, const char *group, const char *name,
                         int sys, unsigned threads, const char *why) {
  case_res *r = results_add(&c->rs);
  snprintf(r->name, sizeof r->name, "%s", name);
  snprintf(r->group, sizeof r->group, "%s", group);
  r->sys = sys;
  r->synced = -1;
  r->is_read = 1;
  r->threads = threads;
  snprintf(r->err, sizeof r->err, "%s", why);
  progress_case(r);
}

static void run_reads(ctx *c) {
  const kv_opts *o = c->o;
  int want_r1 = group_selected(o, "r1"),
      want_r2 = group_selected(o, "r2_wide");
  if (!want_r1 && !want_r2)
    return;
  sys_db d[NSYS];
  int open_ok[NSYS] = {0};
  char *dirs[NSYS] = {NULL};
  uint64_t seed = o->seed;
  for (int sys = 0; sys < NSYS; sys++) {
    if (!sys_enabled(c, sys) || (!want_r1 && sys != SYS_IMMU))
      continue;
    char err[320] = "";
    dirs[sys] = bench_xasprintf("%s/r1-%s", c->base, sys_name[sys]);
    rm_rf(dirs[sys]);
    if (sys_open(&d[sys], sys, dirs[sys], 0, err, sizeof err) != 0) {
      fprintf(stderr, "immubench kv: r1 %s: %s\n", sys_name[sys], err);
      sys_close(&d[sys], err, sizeof err);
      continue;
    }
    bench_progress("kv: loading %llu keys into %s (%d KVs/tx, async)",
                   (unsigned long long)o->keys, sys_name[sys], LOAD_BATCH);
    uint64_t t0 = bench_now_ns();
    unsigned lthreads = sys == SYS_SQLITE ? 1u : 2u;
    if (load_data(&d[sys], o->keys, seed, LOAD_BATCH, lthreads, err,
                  sizeof err) != 0) {
      fprintf(stderr, "immubench kv: loading %s: %s\n", sys_name[sys], err);
      sys_close(&d[sys], err, sizeof err);
      continue;
    }
    c->load_s[sys] = bench_elapsed_s(t0, bench_now_ns());
    if (sys == SYS_IMMU) {
      double w = wait_index_caught_up(d[sys].db, 600);
      c->load_index_s = w;
      bench_progress("kv: loaded %s in %.1f s; index caught up %.2f s later",
                     sys_name[sys], c->load_s[sys], w);
      if (w < 0) {
        fprintf(stderr, "immubench kv: index did not catch up in 600 s\n");
        sys_close(&d[sys], err, sizeof err);
        continue;
      }
    } else {
      bench_progress("kv: loaded %s in %.1f s", sys_name[sys], c->load_s[sys]);
    }
    /* Same starting point for every system: the load's compaction debt
     * paid before the reads (ours: flush + full compaction of the index;
     * RocksDB: flush + full compaction; SQLite: a WAL checkpoint). */
    t0 = bench_now_ns();
    if (sys_settle(&d[sys], err, sizeof err) != 0) {
      fprintf(stderr, "immubench kv: settling %s: %s\n", sys_name[sys], err);
      sys_close(&d[sys], err, sizeof err);
      continue;
    }
    c->settle_s[sys] = bench_elapsed_s(t0, bench_now_ns());
    bench_progress("kv: %s compacted in %.1f s", sys_name[sys],
                   c->settle_s[sys]);
    if (spot_check(&d[sys], o->keys, seed, err, sizeof err) != 0) {
      fprintf(stderr, "immubench kv: %s spot check: %s\n", sys_name[sys],
              err);
      sys_close(&d[sys], err, sizeof err);
      continue;
    }
    open_ok[sys] = 1;
  }
  static const unsigned rthreads[2] = {1, 2};
  if (want_r1) {
    for (int t = 0; t < 2; t++) {
      char name[32], label[64];
      snprintf(name, sizeof name, "r1_t%u", rthreads[t]);
      snprintf(label, sizeof label, "R1 Get, %u thr", rthreads[t]);
      if (!selected(o, name))
        continue;
      size_t first = c->rs.n;
      for (int sys = 0; sys < NSYS; sys++)
        if (open_ok[sys])
          read_case(c, "R1", name, label, &d[sys], rthreads[t], op_get,
                    o->keys, seed, 0);
      fill_ratios(&c->rs, first);
    }
  }
  if (want_r2 && open_ok[SYS_IMMU]) {
    immu_db_state st;
    immu_db_current_state(d[SYS_IMMU].db, &st);
    for (int t = 0; t < 2; t++) {
      char name[32], label[80];
      snprintf(name, sizeof name, "r2_wide_t%u", rthreads[t]);
      snprintf(label, sizeof label, "R2 verifiable Get, %d KVs/tx, %u thr",
               LOAD_BATCH, rthreads[t]);
      if (!selected(o, name))
        continue;
      read_case(c, "R2", name, label, &d[SYS_IMMU], rthreads[t], op_vget,
                o->keys, seed, st.tx_id);
      for (int sys = 1; sys < NSYS; sys++)
        if (sys_enabled(c, sys))
          skipped_case(c, "R2", name, sys, rthreads[t],
                       "n/a: no verifiable reads");
    }
    c->verified_wide = verify_once(d[SYS_IMMU].db, o->keys, seed,
                                   c->verify_msg[0], sizeof c->verify_msg[0]);
    bench_progress("kv: client-side verification (wide): %s: %s",
                   c->verified_wide ? "OK" : "FAILED", c->verify_msg[0]);
  }
  for (int sys = 0; sys < NSYS; sys++) {
    char err[256];
    if (open_ok[sys] && sys_close(&d[sys], err, sizeof err) != 0)
      fprintf(stderr, "immubench kv: closing %s: %s\n", sys_name[sys], err);
    if (dirs[sys]) {
      rm_rf(dirs[sys]);
      free(dirs[sys]);
    }
  }
}

/* R2 on single-KV txs: the common shape of immudb data. */
static void run_r2_narrow(ctx *c) {
  const kv_opts *o = c->o;
  if (!group_selected(o, "r2_narrow"))
    return;
  uint64_t seed = o->seed + 1;
  char err[320] = "";
  char *dir = bench_xasprintf("%s/r2-narrow", c->base);
  rm_rf(dir);
  sys_db d;
  if (sys_open(&d, SYS_IMMU, dir, 0, err, sizeof err) != 0) {
    fprintf(stderr, "immubench kv: r2_narrow: %s\n", err);
    sys_close(&d, err, sizeof err);
    free(dir);
    return;
  }
  bench_progress("kv: loading %llu single-KV txs (16 writers, async)",
                 (unsigned long long)o->r2_txs);
  uint64_t t0 = bench_now_ns();
  if (load_data(&d, o->r2_txs, seed, 1, 16, err, sizeof err) != 0) {
    fprintf(stderr, "immubench kv: r2_narrow load: %s\n", err);
    goto out;
  }
  c->narrow_load_s = bench_elapsed_s(t0, bench_now_ns());
  c->narrow_index_s = wait_index_caught_up(d.db, 600);
  if (c->narrow_index_s < 0) {
    fprintf(stderr, "immubench kv: index did not catch up\n");
    goto out;
  }
  immu_db_state st;
  immu_db_current_state(d.db, &st);
  static const unsigned rthreads[2] = {1, 2};
  for (int t = 0; t < 2; t++) {
    char name[32], label[80];
    snprintf(name, sizeof name, "r2_narrow_t%u", rthreads[t]);
    snprintf(label, sizeof label, "R2 verifiable Get, 1 KV/tx, %u thr",
             rthreads[t]);
    if (!selected(o, name))
      continue;
    read_case(c, "R2", name, label, &d, rthreads[t], op_vget, o->r2_txs, seed,
              st.tx_id);
    for (int sys = 1; sys < NSYS; sys++)
      if (sys_enabled(c, sys))
        skipped_case(c, "R2", name, sys, rthreads[t],
                     "n/a: no verifiable reads");
  }
  c->verified_narrow = verify_once(d.db, o->r2_txs, seed, c->verify_msg[1],
                                   sizeof c->verify_msg[1]);
  bench_progress("kv: client-side verification (narrow): %s: %s",
                 c->verified_narrow ? "OK" : "FAILED", c->verify_msg[1]);
out:
  sys_close(&d, err, sizeof err);
  rm_rf(dir);
  free(dir);
}

/* ------------------------------------------------------------------ */
/* Output                                                              */
/* ------------------------------------------------------------------ */

static const char *fmt_ratio(double r, char *buf, size_t cap) {
  if (isnan(r))
    snprintf(buf, cap, "n/a");
  else
    snprintf(buf, cap, "%.2f", r);
  return buf;
}

static const char *fmt_lat(double us, char *buf, size_t cap) {
  if (isnan(us))
    snprintf(buf, cap, "n/a");
  else if (us >= 1000)
    snprintf(buf, cap, "%.2f ms", us / 1000);
  else
    snprintf(buf, cap, "%.1f us", us);
  return buf;
}

static const char *fmt_x(double v, int prec, char *buf, size_t cap) {
  if (isnan(v))
    snprintf(buf, cap, "n/a");
  else
    snprintf(buf, cap, "%.*f", prec, v);
  return buf;
}

static const case_res *find_case(const ctx *c, const char *name, int sys) {
  for (size_t i = 0; i < c->rs.n; i++)
    if (c->rs.v[i].sys == sys && strcmp(c->rs.v[i].name, name) == 0 &&
        c->rs.v[i].ran && !c->rs.v[i].err[0])
      return &c->rs.v[i];
  return NULL;
}

typedef struct target {
  const char *what;
  const char *unit;
  double goal;
  double got; /* NAN when not measured */
  const char *from;
} target;

static size_t compute_targets(const ctx *c, target *t) {
  const case_res *a = find_case(c, "w1_synced_t128", SYS_IMMU);
  t[0] = (target){"W1 synced, 128 writers", "tx/s", 100000,
                  a ? a->ops_s : NAN, "w1_synced_t128"};
  const case_res *b1 = find_case(c, "w2_synced_t1", SYS_IMMU);
  const case_res *b4 = find_case(c, "w2_synced_t4", SYS_IMMU);
  const case_res *b = b1;
  if (b4 && (!b || b4->kv_s > b->kv_s))
    b = b4;
  t[1] = (target){"W2 synced (best of 1/4 writers)", "KV/s", 1000000,
                  b ? b->kv_s : NAN, b ? b->name : "w2_synced_*"};
  const case_res *r1 = find_case(c, "r1_t1", SYS_IMMU);
  const case_res *r2 = find_case(c, "r1_t2", SYS_IMMU);
  const case_res *r = r1;
  if (r2 && (!r || r2->ops_s > r->ops_s))
    r = r2;
  t[2] = (target){"R1 Get (best of 1/2 readers)", "Get/s", 500000,
                  r ? r->ops_s : NAN, r ? r->name : "r1_*"};
  return 3;
}

static void print_tables(const ctx *c, const bench_machine *m,
                         const char *cmdline) {
  FILE *f = stdout;
  const kv_opts *o = c->o;
  char a[64], b[64], d1[64], d2[64], e[64], g[64], h[64], k[64], l[64];
  char lag[32], cpu[32];
  fprintf(f, "immubench kv  (%s)\n", cmdline);
  fprintf(f, "cpu: %s, %ld cores; date: %s\n",
          m->cpu_model[0] ? m->cpu_model : "unknown", m->cores, m->date);
  fprintf(f,
          "data: %s (%s); %.1f s per case; writers: %s; keys %llu; "
          "32 B keys, 128 B values; cache %llu MiB per system; 1 index "
          "worker\n",
          c->base, c->fs_type, o->duration,
          o->wait_index ? "wait for the index (noWait=false)"
                        : "commit only (noWait=true)",
          (unsigned long long)o->keys, (unsigned long long)o->cache_mib);
  for (int i = 0; i < NDISK; i++)
    if (c->disk[i].ran)
      fprintf(f,
              "disk: %llu x %s: %.0f fsyncs/s, p50 %s, p99 %s\n",
              (unsigned long long)c->disk_iters, c->disk[i].what,
              c->disk[i].rate, fmt_lat(c->disk[i].p50_us, a, sizeof a),
              fmt_lat(c->disk[i].p99_us, b, sizeof b));
  if (c->disk_ran)
    fprintf(f, "disk fsync rate used below: %.0f/s (median of the append "
               "runs)\n",
            c->disk_fsync_s);
  fprintf(f, "load average (1/5/15 min): %.2f %.2f %.2f at the start, "
             "%.2f %.2f %.2f at the end\n",
          c->load_start[0], c->load_start[1], c->load_start[2], c->load_end[0],
          c->load_end[1], c->load_end[2]);
  if (c->sha_ran)
    fprintf(f, "sha256: immu_sha256 64 B: %.0f hashes/s (one core)\n",
            c->sha_rate);
  fputc('\n', f);

  static const char *const wh[] = {
      "case",     "system",   "thr",     "tx/s",      "KV/s",
      "vs sqlite", "vs rocksdb", "p50",  "p99",       "cpu",
      "fsyncs/tx", "space/logical", "written/logical", "idx lag", "notes"};
  bench_table *t = bench_table_new(15, wh, "llrrrrrrrrrrrrl");
  for (size_t i = 0; i < c->rs.n; i++) {
    const case_res *r = &c->rs.v[i];
    if (r->is_read)
      continue;
    char notes[400] = "";
    if (!r->ran || r->err[0])
      snprintf(notes, sizeof notes, "%s", r->err);
    else if (r->transient)
      snprintf(notes, sizeof notes, "%llu busy retries",
               (unsigned long long)r->transient);
    if (r->sys == SYS_IMMU && r->ran && r->drain_s != 0) {
      size_t nl = strlen(notes);
      if (r->drain_s < 0)
        snprintf(notes + nl, sizeof notes - nl, "%sindex not caught up",
                 nl ? "; " : "");
      else if (r->drain_s >= 0.01)
        snprintf(notes + nl, sizeof notes - nl, "%sindex +%.2f s",
                 nl ? "; " : "", r->drain_s);
    }
    bench_table_addf(
        t, "%s\t%s\t%u\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s",
        r->label,
        sys_name[r->sys], r->threads,
        r->ran ? bench_fmt_num(r->ops_s, 0, a, sizeof a) : "-",
        r->ran ? bench_fmt_num(r->kv_s, 0, b, sizeof b) : "-",
        r->sys == SYS_IMMU ? fmt_ratio(r->ratio[SYS_SQLITE], d1, sizeof d1)
                           : "",
        r->sys == SYS_IMMU ? fmt_ratio(r->ratio[SYS_ROCKS], d2, sizeof d2)
                           : "",
        fmt_lat(r->p50_us, e, sizeof e), fmt_lat(r->p99_us, g, sizeof g),
        fmt_x(r->cpu_cores, 2, cpu, sizeof cpu),
        fmt_x(r->fsyncs_per_tx, 3, h, sizeof h),
        fmt_x(r->space_amp, 2, k, sizeof k), fmt_x(r->io_amp, 2, l, sizeof l),
        r->sys == SYS_IMMU && r->ran
            ? bench_fmt_num((double)r->index_lag_end, 0, lag, sizeof lag)
            : "",
        notes);
  }
  fputs("Writes (tx/s, KV/s: throughput over the window; p50/p99: latency "
        "of one commit call)\n",
        f);
  bench_table_print(t, f);
  bench_table_free(t);
  fputs("durability: synced = ours fdatasync per commit group, SQLite WAL "
        "synchronous=FULL, RocksDB WAL sync=1;\n"
        "            async  = ours fsync every 10 ms, SQLite WAL "
        "synchronous=NORMAL, RocksDB WAL sync=0.\n"
        "fsyncs/tx: ours = log fsyncs (engine stats); sqlite = xSync calls "
        "(VFS shim); rocksdb = WAL syncs (rocksdb.dbstats).\n"
        "space/logical: ours (log+txi+aht+index)/(keys+values); peers: "
        "files in their directory / (keys+values).\n"
        "written/logical: /proc/self/io write_bytes over the case / "
        "(keys+values). idx lag: our index lag (txs) at the end of the "
        "window.\n"
        "cpu: CPU time of the whole process (all threads, user+sys) / "
        "window length, in cores.\n\n",
        f);

  static const char *const rh[] = {"case", "system", "thr", "Get/s",
                                   "vs sqlite", "vs rocksdb", "p50", "p99",
                                   "cpu", "hashes/op", "notes"};
  t = bench_table_new(11, rh, "llrrrrrrrrl");
  int any = 0;
  for (size_t i = 0; i < c->rs.n; i++) {
    const case_res *r = &c->rs.v[i];
    if (!r->is_read || (!r->ran && r->sys != SYS_IMMU))
      continue; /* R2 peers: n/a (kept in the JSON) */
    any = 1;
    char lab[96];
    snprintf(lab, sizeof lab, "%s", r->label[0] ? r->label : r->name);
    bench_table_addf(
        t, "%s\t%s\t%u\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s", lab,
        sys_name[r->sys],
        r->threads, r->ran ? bench_fmt_num(r->ops_s, 0, a, sizeof a) : "n/a",
        r->sys == SYS_IMMU ? fmt_ratio(r->ratio[SYS_SQLITE], d1, sizeof d1)
                           : "",
        r->sys == SYS_IMMU ? fmt_ratio(r->ratio[SYS_ROCKS], d2, sizeof d2)
                           : "",
        fmt_lat(r->p50_us, e, sizeof e), fmt_lat(r->p99_us, g, sizeof g),
        fmt_x(r->cpu_cores, 2, cpu, sizeof cpu),
        r->sys == SYS_IMMU ? fmt_x(r->hashes_per_op, 1, h, sizeof h) : "",
        r->err);
  }
  if (any) {
    fprintf(f, "Reads (%llu keys, loaded in txs of %d KVs; R2 narrow: %llu "
               "single-KV txs; proveSinceTx = latest tx)\n",
            (unsigned long long)o->keys, LOAD_BATCH,
            (unsigned long long)o->r2_txs);
    bench_table_print(t, f);
    if (c->verified_wide >= 0 && c->verify_msg[0][0])
      fprintf(f, "client-side verification, R1 data: %s (%s)\n",
              c->verified_wide ? "OK" : "FAILED", c->verify_msg[0]);
    if (c->verified_narrow >= 0 && c->verify_msg[1][0])
      fprintf(f, "client-side verification, narrow data: %s (%s)\n",
              c->verified_narrow ? "OK" : "FAILED", c->verify_msg[1]);
    for (int s = 0; s < NSYS; s++)
      if (c->load_s[s] > 0)
        fprintf(f, "load %s: %llu keys in %.2f s (%.0f KV/s); flush + "
                   "compaction before the reads: %.2f s\n",
                sys_name[s], (unsigned long long)o->keys, c->load_s[s],
                (double)o->keys / c->load_s[s], c->settle_s[s]);
    if (c->load_s[SYS_IMMU] > 0)
      fprintf(f, "  (our index caught up %.2f s after the last commit)\n",
              c->load_index_s);
    if (c->narrow_load_s > 0)
      fprintf(f,
              "load narrow: %llu single-KV txs in %.2f s (%.0f tx/s, 16 "
              "async writers); index +%.2f s\n",
              (unsigned long long)o->r2_txs, c->narrow_load_s,
              (double)o->r2_txs / c->narrow_load_s, c->narrow_index_s);
    fputc('\n', f);
  }
  bench_table_free(t);

  /* Ours against the machine's limits. */
  static const char *const mh[] = {"case",     "ops/s",   "hashes/op",
                                   "hash share of 1 core", "fsyncs/s",
                                   "fsyncs/s / disk",   "ops/s / disk fsync/s",
                                   "txs/group"};
  t = bench_table_new(8, mh, "lrrrrrrr");
  for (size_t i = 0; i < c->rs.n; i++) {
    const case_res *r = &c->rs.v[i];
    if (r->sys != SYS_IMMU || !r->ran)
      continue;
    double hs = (c->sha_ran && !isnan(r->hashes_per_op))
                    ? r->ops_s * r->hashes_per_op / c->sha_rate
                    : NAN;
    double fs = r->is_read ? NAN : r->ops_s * r->fsyncs_per_tx;
    double fd = c->disk_ran ? fs / c->disk_fsync_s : NAN;
    double od = c->disk_ran && !r->is_read ? r->ops_s / c->disk_fsync_s : NAN;
    bench_table_addf(t, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s", r->label,
                     bench_fmt_num(r->ops_s, 0, a, sizeof a),
                     fmt_x(r->hashes_per_op, 1, b, sizeof b),
                     fmt_x(hs, 3, d1, sizeof d1), fmt_x(fs, 0, d2, sizeof d2),
                     fmt_x(fd, 2, e, sizeof e), fmt_x(od, 1, g, sizeof g),
                     fmt_x(r->txs_per_group, 1, h, sizeof h));
  }
  fputs("Ours against the machine (hashes/op: immu_hash_count() of the "
        "calling threads; hash share: ops/s x hashes/op / raw SHA-256 "
        "rate)\n",
        f);
  bench_table_print(t, f);
  bench_table_free(t);
  fputc('\n', f);

  target tg[3];
  size_t nt = compute_targets(c, tg);
  static const char *const th[] = {"target", "goal", "measured", "met"};
  t = bench_table_new(4, th, "lrrl");
  for (size_t i = 0; i < nt; i++) {
    char gbuf[64], mbuf[64];
    snprintf(gbuf, sizeof gbuf, ">= %s %s",
             bench_fmt_num(tg[i].goal, 0, a, sizeof a), tg[i].unit);
    if (isnan(tg[i].got))
      snprintf(mbuf, sizeof mbuf, "not measured");
    else
      snprintf(mbuf, sizeof mbuf, "%s %s (%s)",
               bench_fmt_num(tg[i].got, 0, b, sizeof b), tg[i].unit,
               tg[i].from);
    bench_table_addf(t, "%s\t%s\t%s\t%s", tg[i].what, gbuf, mbuf,
                     isnan(tg[i].got) ? "-"
                                      : (tg[i].got >= tg[i].goal ? "yes"
                                                                 : "NO"));
  }
  bench_table_print(t, f);
  bench_table_free(t);
  fputc('\n', f);
}

static void json_num_or_null(bench_json *j, const char *key, double v) {
  if (isnan(v))
    bench_json_null(j, key);
  else
    bench_json_num(j, key, v);
}

static void write_json(FILE *f, const ctx *c, const bench_machine *m,
                       const char *cmdline) {
  const kv_opts *o = c->o;
  bench_json j;
  bench_json_init(&j, f);
  bench_json_begin_object(&j, NULL);
  bench_json_str(&j, "benchmark", "kv");
  bench_json_int(&j, "schema", 1);
  bench_json_str(&j, "command", cmdline);
  bench_machine_json(&j, "machine", m);
  bench_json_begin_object(&j, "config");
  bench_json_num(&j, "duration_s", o->duration);
  bench_json_uint(&j, "keys", o->keys);
  bench_json_uint(&j, "r2_txs", o->r2_txs);
  bench_json_uint(&j, "key_bytes", KEY_LEN);
  bench_json_uint(&j, "value_bytes", VAL_LEN);
  bench_json_bool(&j, "quick", o->quick);
  bench_json_bool(&j, "peers", o->peers);
  bench_json_bool(&j, "writers_wait_for_index", o->wait_index);
  bench_json_uint(&j, "cache_mib_each_system", o->cache_mib);
  bench_json_uint(&j, "index_workers", 1);
  bench_json_str(&j, "dir", c->base);
  bench_json_str(&j, "fs_type", c->fs_type);
  bench_json_str(&j, "cases", o->cases);
  bench_json_uint(&j, "seed", o->seed);
#ifdef IMMUBENCH_HAVE_SQLITE3
  bench_json_str(&j, "sqlite_version", sqlite3_libversion());
#else
  bench_json_null(&j, "sqlite_version");
#endif
  bench_json_bool(&j, "rocksdb_linked",
#ifdef IMMUBENCH_HAVE_ROCKSDB
                  1
#else
                  0
#endif
  );
  bench_json_end_object(&j);

  bench_json_begin_object(&j, "disk");
  bench_json_uint(&j, "iters", c->disk_iters);
  json_num_or_null(&j, "reference_fsyncs_per_s", c->disk_fsync_s);
  bench_json_begin_array(&j, "runs");
  for (int i = 0; i < NDISK; i++) {
    if (!c->disk[i].ran)
      continue;
    bench_json_begin_object(&j, NULL);
    bench_json_str(&j, "what", c->disk[i].what);
    bench_json_str(&j, "when", i == 3   ? "end"
                               : i == 2 ? "after the write cases"
                                        : "start");
    bench_json_num(&j, "fsyncs_per_s", c->disk[i].rate);
    bench_json_num(&j, "p50_us", c->disk[i].p50_us);
    bench_json_num(&j, "p99_us", c->disk[i].p99_us);
    bench_json_end_object(&j);
  }
  bench_json_end_array(&j);
  bench_json_end_object(&j);
  bench_json_begin_object(&j, "loadavg");
  bench_json_begin_array(&j, "start");
  for (int i = 0; i < 3; i++)
    json_num_or_null(&j, NULL, c->load_start[i]);
  bench_json_end_array(&j);
  bench_json_begin_array(&j, "end");
  for (int i = 0; i < 3; i++)
    json_num_or_null(&j, NULL, c->load_end[i]);
  bench_json_end_array(&j);
  bench_json_end_object(&j);
  if (c->sha_ran) {
    bench_json_begin_object(&j, "sha256");
    bench_json_str(&j, "what", "immu_sha256 on 64 B, one thread");
    bench_json_num(&j, "hashes_per_s", c->sha_rate);
    bench_json_begin_array(&j, "runs");
    for (int i = 0; i < 3; i++)
      bench_json_num(&j, NULL, c->sha_runs[i]);
    bench_json_end_array(&j);
    bench_json_end_object(&j);
  } else {
    bench_json_null(&j, "sha256");
  }

  bench_json_begin_array(&j, "cases");
  for (size_t i = 0; i < c->rs.n; i++) {
    const case_res *r = &c->rs.v[i];
    bench_json_begin_object(&j, NULL);
    bench_json_str(&j, "name", r->name);
    bench_json_str(&j, "group", r->group);
    bench_json_str(&j, "system", sys_name[r->sys]);
    if (r->synced < 0)
      bench_json_null(&j, "durability");
    else
      bench_json_str(&j, "durability", r->synced ? "synced" : "async");
    bench_json_str(&j, "durability_detail",
                   r->synced < 0 ? NULL : durability_detail(r->sys, r->synced));
    bench_json_uint(&j, "threads", r->threads);
    bench_json_uint(&j, "kvs_per_op", r->kvs_per_op);
    bench_json_bool(&j, "ran", r->ran);
    json_num_or_null(&j, "loadavg_1min_before", r->load1);
    bench_json_str(&j, "error", r->err[0] ? r->err : NULL);
    if (r->ran) {
      bench_json_num(&j, "elapsed_s", r->elapsed);
      bench_json_uint(&j, "ops", r->ops);
      bench_json_uint(&j, "busy_retries", r->transient);
      bench_json_num(&j, "ops_per_s", r->ops_s);
      bench_json_num(&j, "kv_per_s", r->kv_s);
      json_num_or_null(&j, "lat_p50_us", r->p50_us);
      json_num_or_null(&j, "lat_p99_us", r->p99_us);
      json_num_or_null(&j, "lat_mean_us", r->mean_us);
      json_num_or_null(&j, "cpu_cores_used", r->cpu_cores);
      if (r->sys == SYS_IMMU)
        json_num_or_null(&j, "hashes_per_op_calling_threads",
                         r->hashes_per_op);
      if (!r->is_read) {
        json_num_or_null(&j, "fsyncs_per_tx", r->fsyncs_per_tx);
        if (r->sys == SYS_IMMU) {
          json_num_or_null(&j, "all_engine_syncs_per_tx", r->all_syncs_per_tx);
          json_num_or_null(&j, "txs_per_group", r->txs_per_group);
          bench_json_uint(&j, "index_lag_end", r->index_lag_end);
          if (r->drain_s < 0)
            bench_json_null(&j, "index_catch_up_s");
          else
            json_num_or_null(&j, "index_catch_up_s", r->drain_s);
        }
        bench_json_uint(&j, "file_bytes", r->file_bytes);
        bench_json_uint(&j, "dir_bytes", r->dir_bytes);
        bench_json_uint(&j, "logical_bytes", r->logical_bytes);
        json_num_or_null(&j, "space_per_logical_byte", r->space_amp);
        if (r->io_ok) {
          bench_json_uint(&j, "io_write_bytes", r->io_write_bytes);
          json_num_or_null(&j, "io_written_per_logical_byte", r->io_amp);
        }
      }
      if (r->sys == SYS_IMMU) {
        bench_json_begin_object(&j, "ratio_to_peer");
        json_num_or_null(&j, "sqlite", r->ratio[SYS_SQLITE]);
        json_num_or_null(&j, "rocksdb", r->ratio[SYS_ROCKS]);
        bench_json_end_object(&j);
      }
    }
    bench_json_end_object(&j);
  }
  bench_json_end_array(&j);

  bench_json_begin_object(&j, "loads");
  for (int s = 0; s < NSYS; s++) {
    if (c->load_s[s] > 0) {
      bench_json_begin_object(&j, sys_name[s]);
      bench_json_num(&j, "load_s", c->load_s[s]);
      bench_json_num(&j, "settle_s", c->settle_s[s]);
      bench_json_end_object(&j);
    }
  }
  if (c->load_s[SYS_IMMU] > 0)
    bench_json_num(&j, "immudb-c_index_catch_up_s", c->load_index_s);
  if (c->narrow_load_s > 0) {
    bench_json_num(&j, "narrow_s", c->narrow_load_s);
    bench_json_num(&j, "narrow_index_catch_up_s", c->narrow_index_s);
  }
  bench_json_end_object(&j);

  bench_json_begin_object(&j, "verification");
  if (c->verified_wide >= 0 && c->verify_msg[0][0]) {
    bench_json_bool(&j, "r1_data_ok", c->verified_wide);
    bench_json_str(&j, "r1_data", c->verify_msg[0]);
  }
  if (c->verified_narrow >= 0 && c->verify_msg[1][0]) {
    bench_json_bool(&j, "narrow_data_ok", c->verified_narrow);
    bench_json_str(&j, "narrow_data", c->verify_msg[1]);
  }
  bench_json_end_object(&j);

  target tg[3];
  size_t nt = compute_targets(c, tg);
  bench_json_begin_array(&j, "targets");
  for (size_t i = 0; i < nt; i++) {
    bench_json_begin_object(&j, NULL);
    bench_json_str(&j, "target", tg[i].what);
    bench_json_str(&j, "unit", tg[i].unit);
    bench_json_num(&j, "goal", tg[i].goal);
    json_num_or_null(&j, "measured", tg[i].got);
    bench_json_str(&j, "case", tg[i].from);
    if (isnan(tg[i].got))
      bench_json_null(&j, "met");
    else
      bench_json_bool(&j, "met", tg[i].got >= tg[i].goal);
    bench_json_end_object(&j);
  }
  bench_json_end_array(&j);
  bench_json_end_object(&j);
  bench_json_finish(&j);
}

/* ------------------------------------------------------------------ */
/* Entry point                                                         */
/* ------------------------------------------------------------------ */

int bench_store_main(int argc, char **argv) {
  kv_opts o;
  int prc = parse_opts(argc, argv, &o);
  if (prc > 0)
    return 0;
  if (prc < 0) {
    kv_usage(stderr);
    return 2;
  }
  g_real_io = immu__io_default();
  g_cache_bytes = (size_t)o.cache_mib << 20;
  char *cmdline = bench_command_line("immubench", argc, argv);
  int json_stdout = o.json && strcmp(o.json, "-") == 0;
  FILE *jf = NULL;
  if (o.json && !json_stdout) {
    jf = fopen(o.json, "w");
    if (!jf) {
      perror(o.json);
      free(cmdline);
      return 1;
    }
  }

  ctx c;
  memset(&c, 0, sizeof c);
  c.o = &o;
  c.verified_wide = c.verified_narrow = -1;
  c.nsys = o.peers ? NSYS : 1;
  c.disk_iters = o.disk_iters;
  int created_dir = 0;
  if (mkdir(o.dir, 0755) == 0)
    created_dir = 1;
  else if (errno != EEXIST) {
    fprintf(stderr, "immubench kv: mkdir %s: %s\n", o.dir, strerror(errno));
    free(cmdline);
    if (jf)
      fclose(jf);
    return 1;
  }
  char *absdir = realpath(o.dir, NULL);
  c.base = bench_xasprintf("%s/kv-%ld", absdir ? absdir : o.dir,
                           (long)getpid());
  free(absdir);
  if (mkdir(c.base, 0755) != 0) {
    fprintf(stderr, "immubench kv: mkdir %s: %s\n", c.base, strerror(errno));
    free(cmdline);
    free(c.base);
    if (jf)
      fclose(jf);
    return 1;
  }
  struct statfs sfs;
  if (statfs(c.base, &sfs) == 0) {
    snprintf(c.fs_type, sizeof c.fs_type, "%s", fs_name((long)sfs.f_type));
    if ((unsigned long)sfs.f_type == 0x01021994UL)
      fprintf(stderr,
              "immubench kv: WARNING: %s is on tmpfs; fsync costs nothing "
              "there. Use --dir on a real disk.\n",
              c.base);
  } else {
    snprintf(c.fs_type, sizeof c.fs_type, "unknown");
  }
  if (o.peers) {
    for (int s = 1; s < NSYS; s++)
      if (!sys_available(s))
        bench_progress("kv: %s not built in; its cases are skipped",
                       sys_name[s]);
  }

  bench_machine m;
  bench_machine_collect(&m);
  uint64_t start = bench_now_ns();

  read_loadavg(c.load_start);
  if (selected(&o, "disk")) {
    disk_run(&c, &c.disk[0], 0, "(256 B append + fdatasync)");
    disk_run(&c, &c.disk[1], 1, "(256 B overwrite of a preallocated file + "
                                "fdatasync)");
  }
  if (selected(&o, "sha"))
    sha_case(&c);

  static const unsigned w1_threads[3] = {1, 16, 128};
  for (int synced = 1; synced >= 0; synced--)
    for (int t = 0; t < 3; t++)
      run_writes(&c, "W1", "w1", synced, w1_threads[t], 1);
  run_writes(&c, "W2", "w2", 1, 1, W2_BATCH);
  run_writes(&c, "W2", "w2", 1, 4, W2_BATCH);
  if (selected(&o, "disk") && c.rs.n > 0)
    disk_run(&c, &c.disk[2], 0, "(256 B append + fdatasync), after the writes");
  run_reads(&c);
  run_r2_narrow(&c);
  if (selected(&o, "disk") && c.rs.n > 0)
    disk_run(&c, &c.disk[3], 0, "(256 B append + fdatasync), at the end");
  disk_reference(&c);
  read_loadavg(c.load_end);

  bench_progress("kv: done in %.1f s", bench_elapsed_s(start, bench_now_ns()));

  if (!json_stdout)
    print_tables(&c, &m, cmdline);
  else
    write_json(stdout, &c, &m, cmdline);
  int rc = 0;
  if (jf) {
    write_json(jf, &c, &m, cmdline);
    if (fclose(jf) != 0) {
      perror(o.json);
      rc = 1;
    }
  }
  for (size_t i = 0; i < c.rs.n; i++)
    if (c.rs.v[i].ran && c.rs.v[i].err[0])
      rc = 1;
  if (c.verified_wide == 0 || c.verified_narrow == 0)
    rc = 1;

  rm_rf(c.base);
  if (created_dir)
    rmdir(o.dir);
  free(c.base);
  free(c.rs.v);
  free(cmdline);
  (void)g_sink;
  return rc;
}
