/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Engine tests: commit and read back, group commit under concurrency,
 * proofs against the crypto core's verifiers, recovery (torn tail, damaged
 * derived files, damaged checkpoint), corruption refusal, and fault
 * injection through the I/O seam.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sched.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/mem.h"
#include "store/crc32c.h"
#include "store/faultio.h"
#include "store/seg.h"
#include "store/store.h"

static immu_store_env *g_env;

static void quiet_log(void *arg, int level, const char *msg) {
  (void)arg, (void)level, (void)msg;
}

static char *mktmp(void) {
  const char *base = getenv("IMMU_TEST_TMPDIR");
  char tmpl[512];
  snprintf(tmpl, sizeof tmpl, "%s/store-XXXXXX", base && *base ? base : "/tmp");
  char *d = mkdtemp(tmpl);
  assert_non_null(d);
  return strdup(d);
}

static void rmrf(const char *dir) {
  char cmd[1024];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  assert_int_equal(system(cmd), 0);
}

static void opts(immu_store_options *o) {
  immu_store_options_init(o);
  o->env = g_env;
  o->log = quiet_log;
}

static immu_store *open_ok(const char *dir, const immu_store_options *o) {
  immu_store *s = NULL;
  char *err = NULL;
  int rc = immu_store_open(dir, o, &s, &err);
  if (rc != 0)
    fail_msg("open %s: %s (%s)", dir, immu_strerror(rc), err ? err : "");
  immu__free(err);
  return s;
}

/* Opens |dir| with the default options through a new fault-injecting io
 * (*f: the caller frees it after the close; *o keeps the options for a
 * reopen). */
static immu_store *open_faulty(const char *dir, immu_store_options *o,
                               immu_faultio **f) {
  assert_int_equal(immu__faultio_new(immu__io_default(), f), 0);
  opts(o);
  o->io = immu__faultio_io(*f);
  return open_ok(dir, o);
}

static int commit_kv(immu_store *s, const char *k, const char *v,
                     immu_tx_header *h, immu_digest *alh) {
  immu_store_entry e = {(const uint8_t *)k, strlen(k), NULL, 0,
                        (const uint8_t *)v, strlen(v)};
  return immu_store_commit(s, &e, 1, NULL, NULL, h, alh);
}

static int setup(void **state) {
  (void)state;
  return immu_store_env_new(8 << 20, 2, &g_env);
}

static int teardown(void **state) {
  (void)state;
  immu_store_env_free(g_env);
  return 0;
}

static void test_commit_read(void **state) {
  (void)state;
  char *dir = mktmp();
  immu_store_options o;
  opts(&o);
  immu_store *s = open_ok(dir, &o);
  immu_tx_header h;
  immu_digest alh, prev = immu_empty_digest;

  for (int i = 1; i <= 100; i++) {
    char k[32], v[32];
    snprintf(k, sizeof k, "key%d", i);
    snprintf(v, sizeof v, "value%d", i);
    assert_int_equal(commit_kv(s, k, v, &h, &alh), 0);
    assert_int_equal(h.id, (uint64_t)i);
    assert_int_equal(h.bl_tx_id, (uint64_t)i - 1);
    assert_true(immu_digest_eq(&h.prev_alh, &prev));
    immu_digest a2;
    assert_int_equal(immu_tx_alh(&h, &a2), 0);
    assert_true(immu_digest_eq(&a2, &alh));
    prev = alh;
  }
  uint64_t id;
  immu_digest sa;
  immu_store_state(s, &id, &sa);
  assert_int_equal(id, 100);
  assert_true(immu_digest_eq(&sa, &prev));

  immu_txrec r;
  uint8_t *buf;
  assert_int_equal(immu_store_read_tx(s, 42, &r, &buf), 0);
  assert_int_equal(r.hdr.id, 42);
  assert_int_equal(r.hdr.nentries, 1);
  assert_memory_equal(r.entries[0].key, "key42", 5);
  assert_memory_equal(r.entries[0].value, "value42", 7);
  assert_int_equal(immu__txrec_check_hashes(&r), 0);
  immu__txrec_free(&r);
  immu__free(buf);
  assert_int_equal(immu_store_read_tx(s, 101, &r, &buf), IMMU_ENOTFOUND);
  assert_int_equal(immu_store_read_tx(s, 0, &r, &buf), IMMU_ENOTFOUND);

  /* Invalid input is refused and commits nothing. */
  immu_store_entry bad[2] = {{(const uint8_t *)"a", 1, NULL, 0, NULL, 0},
                             {(const uint8_t *)"a", 1, NULL, 0, NULL, 0}};
  assert_int_equal(immu_store_commit(s, bad, 2, NULL, NULL, NULL, NULL),
                   IMMU_EINVAL); /* duplicate key */
  assert_int_equal(immu_store_commit(s, bad, 0, NULL, NULL, NULL, NULL),
                   IMMU_EINVAL);
  bad[0].klen = 0;
  assert_int_equal(immu_store_commit(s, bad, 1, NULL, NULL, NULL, NULL),
                   IMMU_EINVAL);
  immu_store_state(s, &id, &sa);
  assert_int_equal(id, 100);

  assert_int_equal(immu_store_wait_indexed(s, 100, 10000), 0);
  immu_store_stats st;
  immu_store_get_stats(s, &st);
  assert_int_equal(st.txs, 100);
  assert_int_equal(st.entries, 100);
  assert_int_equal(st.index_lag, 0);
  assert_true(st.log_bytes > 0 && st.aht_bytes == 32 * (2 * 100 - 3));

  char *err = NULL;
  assert_int_equal(immu_store_verify(s, NULL, NULL, &err), 0);
  assert_int_equal(immu_store_close(s), 0);

  /* Reopen: everything is there, the chain continues. */
  s = open_ok(dir, &o);
  immu_store_state(s, &id, &sa);
  assert_int_equal(id, 100);
  assert_true(immu_digest_eq(&sa, &prev));
  assert_int_equal(commit_kv(s, "after", "reopen", &h, &alh), 0);
  assert_int_equal(h.id, 101);
  assert_true(immu_digest_eq(&h.prev_alh, &prev));
  assert_int_equal(immu_store_verify(s, NULL, NULL, &err), 0);
  assert_int_equal(immu_store_close(s), 0);
  rmrf(dir);
  free(dir);
}

static void check_proof(immu_store *s, uint64_t a, uint64_t b) {
  immu_dual_proof p;
  immu_tx_header ha, hb;
  immu_digest aa, ab;
  assert_int_equal(immu_store_read_header(s, a, &ha, &aa), 0);
  assert_int_equal(immu_store_read_header(s, b, &hb, &ab), 0);
  assert_int_equal(immu_store_dual_proof(s, a, b, &p), 0);
  assert_int_equal(immu_dual_proof_verify(&p, a, b, &aa, &ab), 0);
  /* Wrong target Alh must fail. */
  immu_digest bad = ab;
  bad.b[0] ^= 1;
  assert_int_equal(immu_dual_proof_verify(&p, a, b, &aa, &bad), IMMU_EVERIFY);
  immu_dual_proof_free(&p);
}

static void test_proofs(void **state) {
  (void)state;
  char *dir = mktmp();
  immu_store_options o;
  opts(&o);
  immu_store *s = open_ok(dir, &o);
  for (int i = 0; i < 300; i++) {
    char k[32];
    snprintf(k, sizeof k, "k%d", i % 37);
    assert_int_equal(commit_kv(s, k, "v", NULL, NULL), 0);
  }
  for (uint64_t a = 1; a <= 300; a += 7)
    for (uint64_t b = a; b <= 300; b += 13)
      check_proof(s, a, b);
  check_proof(s, 1, 1);
  check_proof(s, 300, 300);
  check_proof(s, 299, 300);
  immu_dual_proof p;
  assert_int_equal(immu_store_dual_proof(s, 5, 4, &p), IMMU_EINVAL);
  assert_int_equal(immu_store_dual_proof(s, 5, 301, &p), IMMU_ENOTFOUND);
  assert_int_equal(immu_store_close(s), 0);
  rmrf(dir);
  free(dir);
}

/* Proofs read the ahtree's subtree roots, whose positions in the aht file
 * fall at power-of-two strides: the block cache must still keep a working
 * set of proofs' blocks. When a block's slot was its number modulo the
 * slots they evicted one another: the second pass below read 598 blocks
 * again (6 a proof), against 30 with hashed slots. */
static void test_proof_block_cache(void **state) {
  (void)state;
  enum { N = 40000, PROOFS = 100 };
  char *dir = mktmp();
  immu_store_options o;
  opts(&o);
  o.durability = IMMU_DURABILITY_ASYNC;
  immu_store *s = open_ok(dir, &o);
  for (int i = 0; i < N; i++) {
    char k[32];
    snprintf(k, sizeof k, "k%d", i);
    assert_int_equal(commit_kv(s, k, "v", NULL, NULL), 0);
  }
  assert_int_equal(immu_store_close(s), 0); /* the whole aht in the file */
  s = open_ok(dir, &o);
  immu_store_stats st;
  uint64_t reads[2];
  for (int pass = 0; pass < 2; pass++) {
    for (uint64_t k = 0; k < PROOFS; k++) {
      immu_dual_proof p;
      assert_int_equal(immu_store_dual_proof(s, N - 1 - 17 * k, N, &p), 0);
      immu_dual_proof_free(&p);
    }
    immu_store_get_stats(s, &st);
    reads[pass] = st.aht_block_reads;
  }
  assert_true(reads[0] > 0);
  if (reads[1] - reads[0] > PROOFS) /* under one block a proof */
    fail_msg("block reads: %llu to fill, %llu more for the same proofs",
             (unsigned long long)reads[0],
             (unsigned long long)(reads[1] - reads[0]));
  check_proof(s, N - 1000, N);
  assert_int_equal(immu_store_close(s), 0);
  rmrf(dir);
  free(dir);
}

static int hdr_eq(const immu_tx_header *a, const immu_tx_header *b) {
  return a->id == b->id && a->ts == b->ts && a->bl_tx_id == b->bl_tx_id &&
         immu_digest_eq(&a->bl_root, &b->bl_root) &&
         immu_digest_eq(&a->prev_alh, &b->prev_alh) &&
         a->version == b->version && a->nentries == b->nentries &&
         immu_digest_eq(&a->eh, &b->eh) && a->md_len == b->md_len &&
         memcmp(a->md, b->md, a->md_len) == 0;
}

/* A proof among recent txs takes their headers from memory (filled as
 * they are published, once a first proof asked for them): no read of the
 * log. The headers are the ones the log holds. */
static void test_proof_header_cache(void **state) {
  (void)state;
  char *dir = mktmp();
  immu_faultio *f;
  immu_store_options o;
  immu_store *s = open_faulty(dir, &o, &f);
  for (int i = 0; i < 10; i++)
    assert_int_equal(commit_kv(s, "k", "v", NULL, NULL), 0);
  check_proof(s, 5, 10); /* from the log; the cache starts here */
  for (int i = 0; i < 100; i++)
    assert_int_equal(commit_kv(s, "k", "w", NULL, NULL), 0);
  immu__faultio_reset_counts(f);
  for (uint64_t a = 11; a <= 110; a += 9)
    check_proof(s, a, 110);
  assert_int_equal(immu__faultio_count(f, IMMU_FAULT_PREAD), 0);
  immu_tx_header mem[110], disk;
  immu_digest mem_alh[110], disk_alh;
  for (uint64_t id = 11; id <= 110; id++)
    assert_int_equal(
        immu_store_read_header(s, id, &mem[id - 1], &mem_alh[id - 1]), 0);
  assert_int_equal(immu_store_close(s), 0);
  s = open_ok(dir, &o); /* an empty cache: every header from the log */
  immu__faultio_reset_counts(f);
  for (uint64_t id = 11; id <= 110; id++) {
    assert_int_equal(immu_store_read_header(s, id, &disk, &disk_alh), 0);
    assert_true(hdr_eq(&disk, &mem[id - 1]));
    assert_true(immu_digest_eq(&disk_alh, &mem_alh[id - 1]));
  }
  assert_true(immu__faultio_count(f, IMMU_FAULT_PREAD) >= 100);
  assert_int_equal(immu_store_close(s), 0);
  immu__faultio_free(f);
  rmrf(dir);
  free(dir);
}

typedef struct wctx {
  immu_store *s;
  int id;
  int n;
  uint64_t *ids;
} wctx;

static void *writer(void *arg) {
  wctx *w = arg;
  for (int i = 0; i < w->n; i++) {
    char k[64], v[64];
    immu_tx_header h;
    snprintf(k, sizeof k, "w%d-%d", w->id, i);
    snprintf(v, sizeof v, "val-%d-%d", w->id, i);
    if (commit_kv(w->s, k, v, &h, NULL) != 0)
      return (void *)1;
    w->ids[i] = h.id;
  }
  return NULL;
}

static void run_concurrent(int durability) {
  char *dir = mktmp();
  immu_store_options o;
  opts(&o);
  o.durability = durability;
  immu_store *s = open_ok(dir, &o);
  enum { W = 16, N = 200 };
  pthread_t th[W];
  wctx w[W];
  for (int i = 0; i < W; i++) {
    w[i] = (wctx){s, i, N, calloc(N, sizeof(uint64_t))};
    assert_int_equal(pthread_create(&th[i], NULL, writer, &w[i]), 0);
  }
  for (int i = 0; i < W; i++) {
    void *r;
    pthread_join(th[i], &r);
    assert_null(r);
  }
  /* Every tx id 1..W*N handed out exactly once. */
  uint8_t *seen = calloc(W * N + 1, 1);
  for (int i = 0; i < W; i++)
    for (int j = 0; j < N; j++) {
      assert_true(w[i].ids[j] >= 1 && w[i].ids[j] <= W * N);
      assert_int_equal(seen[w[i].ids[j]], 0);
      seen[w[i].ids[j]] = 1;
    }
  free(seen);
  immu_store_stats st;
  immu_store_get_stats(s, &st);
  assert_int_equal(st.txs, W * N);
  assert_true(st.groups <= st.txs);
  char *err = NULL;
  assert_int_equal(immu_store_verify(s, NULL, NULL, &err), 0);
  assert_int_equal(immu_store_wait_indexed(s, W * N, 20000), 0);
  /* Read back a few through the index. */
  immu_index_entry e;
  memset(&e, 0, sizeof e);
  assert_int_equal(immu__index_get_latest(immu_store_index(s),
                                          (const uint8_t *)"w3-17", 5, &e),
                   0);
  assert_int_equal(e.tx, w[3].ids[17]);
  immu__index_entry_clear(&e);
  assert_int_equal(immu_store_close(s), 0);
  for (int i = 0; i < W; i++)
    free(w[i].ids);
  rmrf(dir);
  free(dir);
}

static void test_concurrent_synced(void **state) {
  (void)state;
  run_concurrent(IMMU_DURABILITY_SYNCED);
}

static void test_concurrent_async(void **state) {
  (void)state;
  run_concurrent(IMMU_DURABILITY_ASYNC);
}

static char *log_file(const char *dir) {
  char *p = malloc(strlen(dir) + 64);
  sprintf(p, "%s/log/%020llu.log", dir, 0ull);
  return p;
}

static void append_bytes(const char *path, const void *b, size_t n) {
  int fd = open(path, O_WRONLY | O_APPEND);
  assert_true(fd >= 0);
  assert_int_equal(write(fd, b, n), (ssize_t)n);
  close(fd);
}

static void flip_byte(const char *path, off_t off) {
  int fd = open(path, O_RDWR);
  uint8_t c;
  assert_true(fd >= 0);
  assert_int_equal(pread(fd, &c, 1, off), 1);
  c ^= 0x40;
  assert_int_equal(pwrite(fd, &c, 1, off), 1);
  close(fd);
}

static off_t file_size(const char *path) {
  struct stat st;
  assert_int_equal(stat(path, &st), 0);
  return st.st_size;
}

static void test_torn_tail_recovers(void **state) {
  (void)state;
  char *dir = mktmp();
  immu_store_options o;
  opts(&o);
  immu_store *s = open_ok(dir, &o);
  immu_digest alh10;
  for (int i = 1; i <= 10; i++)
    assert_int_equal(commit_kv(s, "k", "v", NULL, &alh10), 0);
  assert_int_equal(immu_store_close(s), 0);

  char *lf = log_file(dir);
  off_t good = file_size(lf);
  /* A torn record: a plausible header and half a payload. */
  uint8_t junk[40] = {0x49, 0x4d, 0x54, 0x58, 0, 0, 0, 200};
  append_bytes(lf, junk, sizeof junk);
  s = open_ok(dir, &o);
  uint64_t id;
  immu_digest a;
  immu_store_state(s, &id, &a);
  assert_int_equal(id, 10);
  assert_true(immu_digest_eq(&a, &alh10));
  assert_int_equal(file_size(lf), good);
  assert_int_equal(commit_kv(s, "k", "v11", NULL, NULL), 0);
  assert_int_equal(immu_store_close(s), 0);

  /* Garbage that is not even a frame header. */
  append_bytes(lf, "xyz", 3);
  s = open_ok(dir, &o);
  immu_store_state(s, &id, &a);
  assert_int_equal(id, 11);
  assert_int_equal(immu_store_close(s), 0);
  free(lf);
  rmrf(dir);
  free(dir);
}

/* Log messages of one open, for the preallocation test. */
typedef struct logcap {
  int info, warn;
  char last[512];
} logcap;

static void cap_log(void *arg, int level, const char *msg) {
  logcap *c = arg;
  if (level == IMMU_LOG_INFO)
    c->info++;
  else
    c->warn++;
  snprintf(c->last, sizeof c->last, "%s", msg);
}

/* SPEC SEG-9: the log's last segment carries zeros past its end while the
 * store is open; a clean close cuts them off, and after a crash recovery
 * finds the end before them, says so without calling it a torn tail, and
 * cuts them off. */
static void test_prealloc_recovers(void **state) {
  (void)state;
  char *dir = mktmp();
  char *lf = log_file(dir);
  immu_store_options o;
  opts(&o);
  immu_store *s = open_ok(dir, &o);
  immu_digest alh10;
  for (int i = 1; i <= 10; i++)
    assert_int_equal(commit_kv(s, "k", "v", NULL, &alh10), 0);
  immu_store_stats st;
  immu_store_get_stats(s, &st);
  /* Preallocated while open: the file is longer than the log. */
  assert_true(file_size(lf) >= (off_t)st.log_bytes + (32 << 10));
  assert_int_equal(immu_store_close(s), 0);
  off_t good = file_size(lf);
  assert_int_equal(good, (off_t)st.log_bytes);

  /* What a crash leaves: zeros past the last frame. */
  static const uint8_t zeros[100 << 10];
  append_bytes(lf, zeros, sizeof zeros);
  logcap cap = {0, 0, ""};
  o.log = cap_log;
  o.log_arg = &cap;
  s = open_ok(dir, &o);
  uint64_t id;
  immu_digest a;
  immu_store_state(s, &id, &a);
  assert_int_equal(id, 10);
  assert_true(immu_digest_eq(&a, &alh10));
  assert_int_equal(cap.warn, 0);
  assert_int_equal(cap.info, 1);
  assert_non_null(strstr(cap.last, "preallocated"));
  assert_int_equal(commit_kv(s, "k", "v11", NULL, NULL), 0);
  assert_int_equal(immu_store_close(s), 0);

  /* Zeros after a torn frame are still a torn tail (a warning). */
  uint8_t junk[40] = {0x49, 0x4d, 0x54, 0x58, 0, 0, 0, 200};
  append_bytes(lf, junk, sizeof junk);
  append_bytes(lf, zeros, 4096);
  cap.info = cap.warn = 0;
  s = open_ok(dir, &o);
  immu_store_state(s, &id, &a);
  assert_int_equal(id, 11);
  assert_int_equal(cap.warn, 1);
  assert_non_null(strstr(cap.last, "torn tail"));
  assert_int_equal(immu_store_close(s), 0);
  free(lf);
  rmrf(dir);
  free(dir);
}

static void test_corruption_refuses(void **state) {
  (void)state;
  char *dir = mktmp();
  immu_store_options o;
  opts(&o);
  immu_store *s = open_ok(dir, &o);
  for (int i = 1; i <= 20; i++)
    assert_int_equal(commit_kv(s, "key", "some value bytes", NULL, NULL), 0);
  assert_int_equal(immu_store_close(s), 0);
  /* Remove the checkpoint so recovery replays the whole log, then flip a
   * byte in the middle: the log must refuse to open, naming the place. */
  char ck[600];
  snprintf(ck, sizeof ck, "%s/checkpoint", dir);
  assert_int_equal(unlink(ck), 0);
  char *lf = log_file(dir);
  flip_byte(lf, file_size(lf) / 2);
  immu_store *s2 = NULL;
  char *err = NULL;
  int rc = immu_store_open(dir, &o, &s2, &err);
  assert_int_equal(rc, IMMU_ECORRUPT);
  assert_null(s2);
  assert_non_null(err);
  assert_non_null(strstr(err, "offset"));
  assert_non_null(strstr(err, "tx "));
  assert_non_null(strstr(err, ".log"));
  immu__free(err);
  free(lf);
  rmrf(dir);
  free(dir);
}

static void test_derived_rebuilt(void **state) {
  (void)state;
  char *dir = mktmp();
  immu_store_options o;
  opts(&o);
  immu_store *s = open_ok(dir, &o);
  immu_digest last;
  for (int i = 1; i <= 50; i++)
    assert_int_equal(commit_kv(s, "k", "v", NULL, &last), 0);
  assert_int_equal(immu_store_close(s), 0);
  char p[700];
  /* Damage the tree file and the checkpoint; wipe the index. */
  snprintf(p, sizeof p, "%s/aht/%020llu.aht", dir, 0ull);
  flip_byte(p, 32 * 90);
  snprintf(p, sizeof p, "%s/checkpoint", dir);
  flip_byte(p, 10);
  snprintf(p, sizeof p, "rm -rf '%s/index'", dir);
  assert_int_equal(system(p), 0);
  s = open_ok(dir, &o);
  uint64_t id;
  immu_digest a;
  immu_store_state(s, &id, &a);
  assert_int_equal(id, 50);
  assert_true(immu_digest_eq(&a, &last));
  char *err = NULL;
  assert_int_equal(immu_store_verify(s, NULL, NULL, &err), 0);
  assert_int_equal(immu_store_wait_indexed(s, 50, 10000), 0);
  check_proof(s, 3, 50);
  assert_int_equal(immu_store_close(s), 0);
  rmrf(dir);
  free(dir);
}

/* Proofs read the tree through a block cache of the aht file: they stay
 * right over many blocks and repeated reads, and the consistency check
 * reads around it, so a node changed in the file after it was cached is
 * still found. */
static void test_aht_cache(void **state) {
  enum { N = 6000 }; /* ~12,000 nodes: most of them written to the file */
  (void)state;
  char *dir = mktmp();
  immu_store_options o;
  opts(&o);
  o.durability = IMMU_DURABILITY_ASYNC;
  immu_store *s = open_ok(dir, &o);
  char *err = NULL;
  for (int i = 1; i <= N; i++)
    assert_int_equal(commit_kv(s, "k", "v", NULL, NULL), 0);
  for (int round = 0; round < 2; round++) {
    check_proof(s, 3, N);
    check_proof(s, 1, 4097);
    check_proof(s, 100, 5000);
    check_proof(s, 4096, 4097);
    check_proof(s, N - 1, N);
  }
  assert_int_equal(immu_store_verify(s, NULL, NULL, &err), 0);
  /* Tx 10's leaf: its block was read (and cached) by the proofs above. */
  uint64_t lp = 2 * 9 - (uint64_t)__builtin_popcountll(9);
  char p[700];
  snprintf(p, sizeof p, "%s/aht/%020llu.aht", dir, 0ull);
  flip_byte(p, (off_t)(32 * lp + 5));
  assert_int_equal(immu_store_verify(s, NULL, NULL, &err), IMMU_ECORRUPT);
  assert_non_null(err);
  assert_non_null(strstr(err, "tx 10"));
  immu__free(err);
  assert_int_equal(immu_store_close(s), 0);
  rmrf(dir);
  free(dir);
}

static void test_verify_detects_tamper(void **state) {
  (void)state;
  char *dir = mktmp();
  immu_store_options o;
  opts(&o);
  immu_store *s = open_ok(dir, &o);
  for (int i = 1; i <= 30; i++)
    assert_int_equal(commit_kv(s, "k", "value", NULL, NULL), 0);
  assert_int_equal(immu_store_close(s), 0);
  /* Tamper with a value AND fix its CRC, as an attacker would: open still
   * works (the checkpoint covers it) but verify finds the hash mismatch. */
  s = open_ok(dir, &o);
  immu_txrec r;
  uint8_t *buf;
  assert_int_equal(immu_store_read_tx(s, 7, &r, &buf), 0);
  size_t voff = r.entries[0].value_off;
  immu__txrec_free(&r);
  immu__free(buf);
  assert_int_equal(immu_store_close(s), 0);
  /* The tx 7 frame starts at txi entry 6. */
  char p[700];
  snprintf(p, sizeof p, "%s/txi/%020llu.txi", dir, 0ull);
  int fd = open(p, O_RDONLY);
  uint8_t t[16];
  assert_int_equal(pread(fd, t, 16, 6 * 16), 16);
  close(fd);
  uint64_t pos = 0;
  for (int i = 0; i < 8; i++)
    pos = pos << 8 | t[i];
  uint32_t flen = (uint32_t)t[8] << 24 | (uint32_t)t[9] << 16 |
                  (uint32_t)t[10] << 8 | t[11];
  char *lf = log_file(dir);
  flip_byte(lf, (off_t)(IMMU_SEGPOS_OFF(pos) + voff));
  /* recompute crc_body so only the hashes can tell */
  fd = open(lf, O_RDWR);
  uint8_t *fr = malloc(flen);
  assert_int_equal(pread(fd, fr, flen, (off_t)IMMU_SEGPOS_OFF(pos)), flen);
  size_t head = IMMU_TXREC_HEAD_FIXED + ((size_t)fr[16 + 123] << 8 | fr[16 + 124]);
  uint32_t c = immu__crc32c(0, fr + 16 + head, flen - 16 - head);
  uint8_t cb[4] = {(uint8_t)(c >> 24), (uint8_t)(c >> 16), (uint8_t)(c >> 8),
                   (uint8_t)c};
  assert_int_equal(pwrite(fd, cb, 4, (off_t)IMMU_SEGPOS_OFF(pos) + 12), 4);
  close(fd);
  free(fr);
  s = open_ok(dir, &o);
  char *err = NULL;
  assert_int_equal(immu_store_verify(s, NULL, NULL, &err), IMMU_ECORRUPT);
  assert_non_null(err);
  assert_non_null(strstr(err, "tx 7"));
  immu__free(err);
  assert_int_equal(immu_store_close(s), 0);
  free(lf);
  rmrf(dir);
  free(dir);
}

static void fault_case(immu_fault_op op, int err, int short_write) {
  char *dir = mktmp();
  immu_faultio *f;
  immu_store_options o;
  immu_store *s = open_faulty(dir, &o, &f);
  immu_digest last;
  for (int i = 1; i <= 20; i++)
    assert_int_equal(commit_kv(s, "k", "v", NULL, &last), 0);
  if (short_write)
    immu__faultio_short_write(f, 0, 7, err);
  else
    immu__faultio_fail(f, op, 0, err, 0);
  int rc = commit_kv(s, "k", "lost", NULL, NULL);
  assert_true(rc < 0);
  /* After a failed log write the store goes on (nothing was committed);
   * after a failed fsync it refuses writes until reopened. */
  rc = commit_kv(s, "k", "after", NULL, NULL);
  if (op == IMMU_FAULT_FDATASYNC && !short_write)
    assert_int_equal(rc, IMMU_EPOISONED);
  else
    assert_int_equal(rc, 0);
  immu_store_close(s);
  immu__faultio_free(f);
  /* Reopen on the real file system: consistent, nothing acked lost. */
  immu_store_options o2;
  opts(&o2);
  s = open_ok(dir, &o2);
  uint64_t id;
  immu_digest a;
  immu_store_state(s, &id, &a);
  assert_true(id >= 20);
  char *emsg = NULL;
  assert_int_equal(immu_store_verify(s, NULL, NULL, &emsg), 0);
  immu_txrec r;
  uint8_t *buf;
  assert_int_equal(immu_store_read_tx(s, 20, &r, &buf), 0);
  assert_int_equal(r.hdr.id, 20);
  immu__txrec_free(&r);
  immu__free(buf);
  assert_int_equal(commit_kv(s, "k", "more", NULL, NULL), 0);
  assert_int_equal(immu_store_close(s), 0);
  rmrf(dir);
  free(dir);
}

static void test_fault_enospc_write(void **state) {
  (void)state;
  fault_case(IMMU_FAULT_PWRITEV, -ENOSPC, 0);
}
static void test_fault_eio_write(void **state) {
  (void)state;
  fault_case(IMMU_FAULT_PWRITEV, -EIO, 0);
}
static void test_fault_short_write(void **state) {
  (void)state;
  fault_case(IMMU_FAULT_PWRITEV, -ENOSPC, 1);
}
static void test_fault_eio_fsync(void **state) {
  (void)state;
  fault_case(IMMU_FAULT_FDATASYNC, -EIO, 0);
}
static void test_fault_enospc_fsync(void **state) {
  (void)state;
  fault_case(IMMU_FAULT_FDATASYNC, -ENOSPC, 0);
}

static void test_bad_settings(void **state) {
  (void)state;
  char *dir = mktmp();
  immu_store_options o;
  opts(&o);
  immu_store *s = open_ok(dir, &o);
  assert_int_equal(immu_store_close(s), 0);
  char p[700];
  snprintf(p, sizeof p, "%s/settings", dir);
  flip_byte(p, 3);
  char *err = NULL;
  assert_int_equal(immu_store_open(dir, &o, &s, &err), IMMU_ECORRUPT);
  assert_non_null(err);
  assert_non_null(strstr(err, "settings"));
  immu__free(err);
  rmrf(dir);
  free(dir);
}


static void test_export_replicate(void **state) {
  (void)state;
  char *da = mktmp(), *db = mktmp(), *dc = mktmp();
  immu_store_options o;
  opts(&o);
  immu_store *a = open_ok(da, &o), *b = open_ok(db, &o), *c = open_ok(dc, &o);
  for (int i = 1; i <= 40; i++) {
    char k[32];
    snprintf(k, sizeof k, "key-%d", i % 7);
    assert_int_equal(commit_kv(a, k, "value", NULL, NULL), 0);
    assert_int_equal(commit_kv(c, k, "other", NULL, NULL), 0);
  }
  uint8_t *f;
  size_t flen;
  immu_tx_header h;
  /* Out of order: tx 2 cannot follow an empty store. */
  assert_int_equal(immu_store_read_frame(a, 2, &f, &flen), 0);
  assert_int_equal(immu_store_replicate(b, f, flen, &h, NULL), IMMU_ECONFLICT);
  immu__free(f);
  /* A frame from another chain cannot be spliced in. */
  assert_int_equal(immu_store_read_frame(c, 1, &f, &flen), 0);
  assert_int_equal(immu_store_replicate(b, f, flen, &h, NULL), 0);
  immu__free(f);
  assert_int_equal(immu_store_read_frame(a, 2, &f, &flen), 0);
  assert_int_equal(immu_store_replicate(b, f, flen, &h, NULL), IMMU_ECONFLICT);
  immu__free(f);
  assert_int_equal(immu_store_close(b), 0);
  rmrf(db);
  b = open_ok(db, &o);
  /* A full copy gives the identical chain. */
  for (uint64_t id = 1; id <= 40; id++) {
    assert_int_equal(immu_store_read_frame(a, id, &f, &flen), 0);
    if (id == 7) {
      /* A tampered frame is refused (its hashes no longer recompute). */
      f[flen - 1] ^= 1;
      assert_true(immu_store_replicate(b, f, flen, &h, NULL) ==
                  IMMU_ECORRUPT);
      f[flen - 1] ^= 1;
    }
    assert_int_equal(immu_store_replicate(b, f, flen, &h, NULL), 0);
    assert_int_equal(h.id, id);
    immu__free(f);
  }
  uint64_t ia, ib;
  immu_digest aa, ab;
  immu_store_state(a, &ia, &aa);
  immu_store_state(b, &ib, &ab);
  assert_int_equal(ia, ib);
  assert_true(immu_digest_eq(&aa, &ab));
  char *err = NULL;
  assert_int_equal(immu_store_verify(b, NULL, NULL, &err), 0);
  assert_int_equal(immu_store_wait_indexed(b, 40, 10000), 0);
  check_proof(b, 3, 40);
  assert_int_equal(immu_store_read_frame(a, 41, &f, &flen), IMMU_ENOTFOUND);
  immu_store_close(a);
  immu_store_close(b);
  immu_store_close(c);
  rmrf(da);
  rmrf(db);
  rmrf(dc);
  free(da);
  free(db);
  free(dc);
}

/* ------------------------------------------------------------------ */
/* asynchronous commits and index waits                                */
/* ------------------------------------------------------------------ */

/* Set around each submitting call: done must never run inside it. */
static _Thread_local int tl_submitting;

typedef struct acall {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int ncalls; /* done calls so far */
  int bad;    /* a call from inside the submitting call, or a repeat */
} acall;

typedef struct aslot {
  acall *c;
  int calls;
  int rc;
  uint64_t id;
  immu_digest alh;
} aslot;

static void acall_init(acall *c) {
  memset(c, 0, sizeof *c);
  pthread_mutex_init(&c->mu, NULL);
  pthread_cond_init(&c->cv, NULL);
}

static void acall_wait(acall *c, int n) {
  pthread_mutex_lock(&c->mu);
  while (c->ncalls < n)
    pthread_cond_wait(&c->cv, &c->mu);
  pthread_mutex_unlock(&c->mu);
}

static void acall_destroy(acall *c) {
  pthread_mutex_destroy(&c->mu);
  pthread_cond_destroy(&c->cv);
}

static void slot_done(void *arg, int rc, const immu_tx_header *h,
                      const immu_digest *alh) {
  aslot *sl = arg;
  acall *c = sl->c;
  pthread_mutex_lock(&c->mu);
  if (tl_submitting || sl->calls++ != 0 || (rc == 0) != (h != NULL) ||
      (rc == 0) != (alh != NULL))
    c->bad++;
  sl->rc = rc;
  if (rc == 0) {
    sl->id = h->id;
    sl->alh = *alh;
  }
  c->ncalls++;
  pthread_cond_broadcast(&c->cv);
  pthread_mutex_unlock(&c->mu);
}

static int commit_async_kv(immu_store *s, const char *k, const char *v,
                           aslot *sl) {
  /* The entry bytes live on this frame only: commit_async must copy. */
  char kb[64], vb[64];
  snprintf(kb, sizeof kb, "%s", k);
  snprintf(vb, sizeof vb, "%s", v);
  immu_store_entry e = {(const uint8_t *)kb, strlen(kb), NULL, 0,
                        (const uint8_t *)vb, strlen(vb)};
  tl_submitting = 1;
  int rc = immu_store_commit_async(s, &e, 1, slot_done, sl);
  tl_submitting = 0;
  memset(kb, 'x', sizeof kb);
  memset(vb, 'x', sizeof vb);
  return rc;
}

typedef struct actx {
  immu_store *s;
  int id, n;
  aslot *slots;
} actx;

static void *async_writer(void *arg) {
  actx *a = arg;
  for (int i = 0; i < a->n; i++) {
    char k[64], v[64];
    snprintf(k, sizeof k, "a%d-%d", a->id, i);
    snprintf(v, sizeof v, "aval-%d-%d", a->id, i);
    if (commit_async_kv(a->s, k, v, &a->slots[i]) != 0)
      return (void *)1;
  }
  return NULL;
}

/* Sync and async committers mixed: every tx id handed out once, each done
 * called exactly once from outside its submitting call, an async writer's
 * txs in its submission order, and the Alh chain intact. */
static void run_async_mixed(int durability) {
  char *dir = mktmp();
  immu_store_options o;
  opts(&o);
  o.durability = durability;
  immu_store *s = open_ok(dir, &o);
  enum { W = 6, A = 6, N = 150 };
  pthread_t th[W + A];
  wctx w[W];
  actx a[A];
  acall c;
  acall_init(&c);
  for (int i = 0; i < W; i++) {
    w[i] = (wctx){s, i, N, calloc(N, sizeof(uint64_t))};
    assert_int_equal(pthread_create(&th[i], NULL, writer, &w[i]), 0);
  }
  for (int i = 0; i < A; i++) {
    a[i] = (actx){s, i, N, calloc(N, sizeof(aslot))};
    for (int j = 0; j < N; j++)
      a[i].slots[j].c = &c;
    assert_int_equal(pthread_create(&th[W + i], NULL, async_writer, &a[i]),
                     0);
  }
  for (int i = 0; i < W + A; i++) {
    void *r;
    pthread_join(th[i], &r);
    assert_null(r);
  }
  acall_wait(&c, A * N);
  assert_int_equal(c.bad, 0);
  uint8_t *seen = calloc((W + A) * N + 1, 1);
  for (int i = 0; i < W; i++)
    for (int j = 0; j < N; j++) {
      assert_true(w[i].ids[j] >= 1 && w[i].ids[j] <= (W + A) * N);
      assert_int_equal(seen[w[i].ids[j]]++, 0);
    }
  for (int i = 0; i < A; i++)
    for (int j = 0; j < N; j++) {
      aslot *sl = &a[i].slots[j];
      assert_int_equal(sl->calls, 1);
      assert_int_equal(sl->rc, 0);
      assert_true(sl->id >= 1 && sl->id <= (W + A) * N);
      assert_int_equal(seen[sl->id]++, 0);
      if (j > 0)
        assert_true(sl->id > a[i].slots[j - 1].id);
      immu_tx_header h;
      immu_digest alh;
      assert_int_equal(immu_store_read_header(s, sl->id, &h, &alh), 0);
      assert_memory_equal(alh.b, sl->alh.b, 32);
    }
  free(seen);
  char *err = NULL;
  assert_int_equal(immu_store_verify(s, NULL, NULL, &err), 0);
  assert_int_equal(immu_store_wait_indexed(s, (W + A) * N, 20000), 0);
  immu_index_entry e;
  memset(&e, 0, sizeof e);
  assert_int_equal(immu__index_get_latest(immu_store_index(s),
                                          (const uint8_t *)"a2-33", 5, &e),
                   0);
  assert_int_equal(e.tx, a[2].slots[33].id);
  immu__index_entry_clear(&e);
  assert_int_equal(immu_store_close(s), 0);
  for (int i = 0; i < W; i++)
    free(w[i].ids);
  for (int i = 0; i < A; i++)
    free(a[i].slots);
  acall_destroy(&c);
  rmrf(dir);
  free(dir);
}

static void test_async_mixed_synced(void **state) {
  (void)state;
  run_async_mixed(IMMU_DURABILITY_SYNCED);
}

static void test_async_mixed_async(void **state) {
  (void)state;
  run_async_mixed(IMMU_DURABILITY_ASYNC);
}

/* Invalid input fails synchronously and done is never called. */
static void test_async_invalid(void **state) {
  (void)state;
  char *dir = mktmp();
  immu_store_options o;
  opts(&o);
  immu_store *s = open_ok(dir, &o);
  acall c;
  acall_init(&c);
  aslot sl = {&c, 0, 0, 0, {{0}}};
  immu_store_entry e[40];
  char keys[40][8];
  for (int i = 0; i < 40; i++) {
    snprintf(keys[i], sizeof keys[i], "k%02d", i);
    e[i] = (immu_store_entry){(const uint8_t *)keys[i], 3, NULL, 0, NULL, 0};
  }
  assert_int_equal(immu_store_commit_async(s, e, 0, slot_done, &sl),
                   IMMU_EINVAL);
  assert_int_equal(immu_store_commit_async(s, e, 1, NULL, NULL), IMMU_EINVAL);
  /* Duplicates, small (pairwise) and large (hashed), sync and async. */
  immu_store_entry d2[2] = {e[5], e[5]};
  assert_int_equal(immu_store_commit_async(s, d2, 2, slot_done, &sl),
                   IMMU_EINVAL);
  assert_int_equal(immu_store_commit(s, d2, 2, NULL, NULL, NULL, NULL),
                   IMMU_EINVAL);
  e[39] = e[7];
  assert_int_equal(immu_store_commit_async(s, e, 40, slot_done, &sl),
                   IMMU_EINVAL);
  assert_int_equal(immu_store_commit(s, e, 40, NULL, NULL, NULL, NULL),
                   IMMU_EINVAL);
  /* Same prefix, different lengths: not duplicates. */
  e[39] = (immu_store_entry){(const uint8_t *)"k07x", 4, NULL, 0, NULL, 0};
  immu_tx_header h;
  assert_int_equal(immu_store_commit(s, e, 40, NULL, NULL, &h, NULL), 0);
  assert_int_equal(h.nentries, 40);
  assert_int_equal(c.ncalls, 0);
  assert_int_equal(immu_store_close(s), 0);
  acall_destroy(&c);
  rmrf(dir);
  free(dir);
}

/* A failed fsync reaches done; later async commits are refused
 * synchronously with IMMU_EPOISONED. */
static void test_async_fault(void **state) {
  (void)state;
  char *dir = mktmp();
  immu_faultio *f;
  immu_store_options o;
  immu_store *s = open_faulty(dir, &o, &f);
  acall c;
  acall_init(&c);
  aslot sl[3] = {{&c, 0, 0, 0, {{0}}}, {&c, 0, 0, 0, {{0}}},
                 {&c, 0, 0, 0, {{0}}}};
  assert_int_equal(commit_async_kv(s, "k", "v1", &sl[0]), 0);
  acall_wait(&c, 1);
  assert_int_equal(sl[0].rc, 0);
  immu__faultio_fail(f, IMMU_FAULT_FDATASYNC, 0, -EIO, 0);
  assert_int_equal(commit_async_kv(s, "k", "lost", &sl[1]), 0);
  acall_wait(&c, 2);
  assert_int_equal(sl[1].rc, -EIO);
  assert_int_equal(commit_async_kv(s, "k", "after", &sl[2]), IMMU_EPOISONED);
  assert_int_equal(commit_kv(s, "k", "after", NULL, NULL), IMMU_EPOISONED);
  assert_int_equal(c.ncalls, 2);
  assert_int_equal(c.bad, 0);
  immu_store_close(s);
  immu__faultio_free(f);
  acall_destroy(&c);
  rmrf(dir);
  free(dir);
}

/* close() with async commits queued: all are committed before it returns
 * and every done gets 0; nothing leaks (ASan). */
static void test_async_close(void **state) {
  (void)state;
  char *dir = mktmp();
  immu_store_options o;
  opts(&o);
  immu_store *s = open_ok(dir, &o);
  enum { N = 300 };
  acall c;
  acall_init(&c);
  aslot *sl = calloc(N, sizeof *sl);
  for (int i = 0; i < N; i++) {
    char k[32];
    snprintf(k, sizeof k, "c%d", i);
    sl[i].c = &c;
    assert_int_equal(commit_async_kv(s, k, "v", &sl[i]), 0);
  }
  assert_int_equal(immu_store_close(s), 0);
  assert_int_equal(c.ncalls, N);
  assert_int_equal(c.bad, 0);
  for (int i = 0; i < N; i++) {
    assert_int_equal(sl[i].rc, 0);
    assert_int_equal(sl[i].id, (uint64_t)i + 1);
  }
  s = open_ok(dir, &o);
  uint64_t id;
  immu_digest alh;
  immu_store_state(s, &id, &alh);
  assert_int_equal(id, N);
  assert_memory_equal(alh.b, sl[N - 1].alh.b, 32);
  assert_int_equal(immu_store_close(s), 0);
  free(sl);
  acall_destroy(&c);
  rmrf(dir);
  free(dir);
}

typedef struct iwres {
  acall *c;
  int calls;
  int rc;
} iwres;

static void iw_done(void *arg, int rc) {
  iwres *r = arg;
  pthread_mutex_lock(&r->c->mu);
  if (tl_submitting || r->calls++ != 0)
    r->c->bad++;
  r->rc = rc;
  r->c->ncalls++;
  pthread_cond_broadcast(&r->c->cv);
  pthread_mutex_unlock(&r->c->mu);
}

static int on_indexed(immu_store *s, uint64_t tx, long ms, iwres *r) {
  tl_submitting = 1;
  int rc = immu_store_on_indexed(s, tx, ms, iw_done, r);
  tl_submitting = 0;
  return rc;
}

static void test_on_indexed(void **state) {
  (void)state;
  char *dir = mktmp();
  immu_store_options o;
  opts(&o);
  immu_store *s = open_ok(dir, &o);
  acall c;
  acall_init(&c);
  iwres r[5] = {{&c, 0, 0}, {&c, 0, 0}, {&c, 0, 0}, {&c, 0, 0}, {&c, 0, 0}};
  assert_int_equal(on_indexed(s, 0, 10, &r[0]), IMMU_STORE_ALREADY);
  assert_int_equal(on_indexed(s, 1, 0, &r[0]), IMMU_ETIMEOUT);
  assert_int_equal(on_indexed(s, 1, 50, &r[0]), 0);
  acall_wait(&c, 1); /* nothing committed: times out */
  assert_int_equal(r[0].rc, IMMU_ETIMEOUT);
  /* Waiters for tx 3 (registered before tx 2's, out of order), 2 and 1000
   * (forever); committing 3 txs fires the first two with 0. */
  assert_int_equal(on_indexed(s, 3, -1, &r[1]), 0);
  assert_int_equal(on_indexed(s, 2, 20000, &r[2]), 0);
  assert_int_equal(on_indexed(s, 1000, -1, &r[3]), 0);
  for (int i = 0; i < 3; i++)
    assert_int_equal(commit_kv(s, "k", "v", NULL, NULL), 0);
  acall_wait(&c, 3);
  assert_int_equal(r[1].rc, 0);
  assert_int_equal(r[2].rc, 0);
  assert_int_equal(immu_store_wait_indexed(s, 3, 20000), 0);
  assert_int_equal(on_indexed(s, 3, -1, &r[4]), IMMU_STORE_ALREADY);
  /* close() ends the forever waiter with IMMU_ECLOSED. */
  assert_int_equal(r[3].calls, 0);
  assert_int_equal(immu_store_close(s), 0);
  assert_int_equal(c.ncalls, 4);
  assert_int_equal(r[3].rc, IMMU_ECLOSED);
  assert_int_equal(c.bad, 0);
  acall_destroy(&c);
  rmrf(dir);
  free(dir);
}

static double mono_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

/* The env's timer polls only while a store has something for it; idle, it
 * sleeps until a commit, a timed index waiter or shutdown kicks it, and
 * what it does (async syncs, checkpoints, timed waits) still happens on
 * time. */
static void test_timer_idle(void **state) {
  (void)state;
  char *dir = mktmp();
  immu_store_options o;
  immu_store_stats st;
  uint64_t p0, p1, fs;
  double t0;
  opts(&o);
  o.durability = IMMU_DURABILITY_ASYNC;
  o.async_sync_ms = 5;
  o.checkpoint_ms = 50;
  immu_store *s = open_ok(dir, &o);
  assert_int_equal(commit_kv(s, "k1", "v1", NULL, NULL), 0);

  /* Synced and checkpointed by the timer, then idle: a window of 300 ms
   * holds a handful of passes at most (150 at the 2 ms poll). */
  t0 = mono_s();
  for (;;) {
    p0 = immu__store_env_timer_passes(g_env);
    sleep_ms(300);
    p1 = immu__store_env_timer_passes(g_env);
    if (p1 - p0 <= 3)
      break;
    if (mono_s() - t0 > 10)
      fail_msg("the timer made %llu passes in 300 ms with nothing to do",
               (unsigned long long)(p1 - p0));
  }
  immu_store_get_stats(s, &st);
  assert_true(st.fsyncs >= 1);
  fs = st.fsyncs;

  /* A commit on the idle env is synced within the async interval (well
   * within a second, the sleeping timer's own bound). */
  t0 = mono_s();
  assert_int_equal(commit_kv(s, "k2", "v2", NULL, NULL), 0);
  do {
    sleep_ms(2);
    immu_store_get_stats(s, &st);
  } while (st.fsyncs == fs && mono_s() - t0 < 5);
  if (st.fsyncs == fs || mono_s() - t0 > 0.5)
    fail_msg("async commit on an idle env synced after %.3f s (fsyncs %llu)",
             mono_s() - t0, (unsigned long long)st.fsyncs);
  assert_int_equal(immu_store_wait_indexed(s, 2, 20000), 0);

  /* A timed index waiter registered while the timer sleeps expires on
   * time. */
  sleep_ms(200);
  {
    acall c;
    acall_init(&c);
    iwres r = {&c, 0, 0};
    t0 = mono_s();
    assert_int_equal(on_indexed(s, 1000, 40, &r), 0);
    acall_wait(&c, 1);
    assert_int_equal(r.rc, IMMU_ETIMEOUT);
    if (mono_s() - t0 > 0.5)
      fail_msg("a 40 ms index wait ended after %.3f s", mono_s() - t0);
    acall_destroy(&c);
  }
  assert_int_equal(immu_store_close(s), 0);
  rmrf(dir);
  free(dir);
}

/* The engine's committer and index threads run as SCHED_BATCH (a woken
 * one does not preempt the running thread). */
static void test_engine_thread_policy(void **state) {
  (void)state;
  char *dir = mktmp();
  immu_store_options o;
  opts(&o);
  immu_store *s = open_ok(dir, &o);
  acall c;
  acall_init(&c);
  aslot sl = {&c, 0, 0, 0, {{0}}};
  immu_store_entry e = {(const uint8_t *)"k", 1, NULL, 0,
                        (const uint8_t *)"v", 1};
  assert_int_equal(immu_store_commit_async(s, &e, 1, slot_done, &sl), 0);
  acall_wait(&c, 1);
  assert_int_equal(sl.rc, 0);
  assert_int_equal(immu_store_wait_indexed(s, sl.id, 5000), 0);

  int commit = 0, index = 0;
  DIR *d = opendir("/proc/self/task");
  assert_non_null(d);
  for (struct dirent *de; (de = readdir(d)) != NULL;) {
    char path[300], comm[32] = "";
    if (de->d_name[0] == '.')
      continue;
    snprintf(path, sizeof path, "/proc/self/task/%s/comm", de->d_name);
    FILE *f = fopen(path, "r");
    if (f == NULL)
      continue; /* the thread ended */
    if (fgets(comm, sizeof comm, f) == NULL)
      comm[0] = '\0';
    fclose(f);
    comm[strcspn(comm, "\n")] = '\0';
    int isc = strcmp(comm, "immu-commit") == 0;
    int isi = strcmp(comm, "immu-index") == 0;
    if (!isc && !isi)
      continue;
    int pol = sched_getscheduler((pid_t)atoi(de->d_name));
    if (pol != SCHED_BATCH)
      fail_msg("thread %s (%s) has policy %d", de->d_name, comm, pol);
    commit += isc;
    index += isi;
  }
  closedir(d);
  assert_true(commit > 0);
  assert_true(index > 0);
  assert_int_equal(immu_store_close(s), 0);
  acall_destroy(&c);
  rmrf(dir);
  free(dir);
}

/* The committer that publishes a group indexes it itself, with no hand-off
 * to an index worker: with the index idle, an index waiter registered from
 * a tx's commit callback fires on that same committer thread. */
typedef struct hereres {
  acall *c;
  immu_store *s;
  pthread_t committer;
  int rc, same;
  char name[16];
} hereres;

static void here_indexed(void *arg, int rc) {
  hereres *r = arg;
  char name[16] = "";
  prctl(PR_GET_NAME, name);
  pthread_mutex_lock(&r->c->mu);
  r->rc = rc;
  r->same = pthread_equal(pthread_self(), r->committer);
  memcpy(r->name, name, sizeof name);
  r->c->ncalls++;
  pthread_cond_broadcast(&r->c->cv);
  pthread_mutex_unlock(&r->c->mu);
}

static void here_committed(void *arg, int rc, const immu_tx_header *h,
                           const immu_digest *alh) {
  hereres *r = arg;
  (void)alh;
  r->committer = pthread_self();
  if (rc == 0)
    rc = immu_store_on_indexed(r->s, h->id, -1, here_indexed, r);
  if (rc != 0) { /* IMMU_STORE_ALREADY too: nothing else indexes it */
    pthread_mutex_lock(&r->c->mu);
    r->rc = rc == IMMU_STORE_ALREADY ? -10000 : rc;
    r->c->ncalls++;
    pthread_cond_broadcast(&r->c->cv);
    pthread_mutex_unlock(&r->c->mu);
  }
}

static void test_index_on_committer(void **state) {
  (void)state;
  const int modes[] = {IMMU_DURABILITY_SYNCED, IMMU_DURABILITY_ASYNC};
  for (size_t m = 0; m < sizeof modes / sizeof modes[0]; m++) {
    char *dir = mktmp();
    immu_store_options o;
    opts(&o);
    o.durability = modes[m];
    immu_store *s = open_ok(dir, &o);
    acall c;
    acall_init(&c);
    for (int i = 0; i < 10; i++) {
      hereres r = {&c, s, pthread_self(), 1, 0, ""};
      /* Idle first: the catch-up step queued at open, or the previous
       * committer still looking for more to index, would take the tx. */
      for (int w = 0; immu__store_index_queued(s); w++) {
        assert_true(w < 5000);
        sleep_ms(1);
      }
      immu_store_entry e = {(const uint8_t *)"k", 1, NULL, 0,
                            (const uint8_t *)"v", 1};
      assert_int_equal(immu_store_commit_async(s, &e, 1, here_committed, &r),
                       0);
      acall_wait(&c, i + 1);
      assert_int_equal(r.rc, 0);
      assert_string_equal(r.name, "immu-commit");
      assert_true(r.same);
    }
    assert_int_equal(immu_store_close(s), 0);
    acall_destroy(&c);
    rmrf(dir);
    free(dir);
  }
}

/* immu_store_ack_unindexed: with the index held back, a committed tx up
 * to IMMU_STORE_ACK_LAG txs ahead of the index is acknowledged and the
 * highest such tx recorded; a tx further ahead, or not committed, is
 * refused; once the index catches up it is acknowledged too. */
static void test_ack_unindexed(void **state) {
  (void)state;
  char *dir = mktmp();
  immu_store_options o;
  opts(&o);
  o.durability = IMMU_DURABILITY_ASYNC;
  immu_store *s = open_ok(dir, &o);
  const uint64_t lag = IMMU_STORE_ACK_LAG;
  immu__store_index_hold(s, 1);
  assert_int_equal(immu_store_acked_id(s), 0);
  assert_int_equal(commit_kv(s, "k", "v0", NULL, NULL), 0);
  assert_int_equal(immu_store_indexed_id(s), 0);
  assert_int_equal(immu_store_ack_unindexed(s, 2), 0); /* not committed */
  assert_int_equal(immu_store_ack_unindexed(s, 1), 1);
  assert_int_equal(immu_store_acked_id(s), 1);
  for (uint64_t i = 1; i <= lag; i++)
    assert_int_equal(commit_kv(s, "k", "v", NULL, NULL), 0);
  assert_int_equal(immu_store_last_id(s), lag + 1);
  assert_int_equal(immu_store_indexed_id(s), 0);
  assert_int_equal(immu_store_ack_unindexed(s, lag), 1);
  assert_int_equal(immu_store_ack_unindexed(s, 5), 1); /* keeps the max */
  assert_int_equal(immu_store_acked_id(s), lag);
  assert_int_equal(immu_store_ack_unindexed(s, lag + 1), 0); /* too far */
  assert_int_equal(immu_store_acked_id(s), lag);
  immu__store_index_hold(s, 0);
  assert_int_equal(immu_store_wait_indexed(s, lag + 1, 20000), 0);
  assert_int_equal(immu_store_ack_unindexed(s, lag + 1), 1);
  assert_int_equal(immu_store_acked_id(s), lag + 1);
  assert_int_equal(immu_store_close(s), 0);
  rmrf(dir);
  free(dir);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_commit_read),
      cmocka_unit_test(test_proofs),
      cmocka_unit_test(test_proof_block_cache),
      cmocka_unit_test(test_proof_header_cache),
      cmocka_unit_test(test_concurrent_synced),
      cmocka_unit_test(test_concurrent_async),
      cmocka_unit_test(test_torn_tail_recovers),
      cmocka_unit_test(test_prealloc_recovers),
      cmocka_unit_test(test_engine_thread_policy),
      cmocka_unit_test(test_index_on_committer),
      cmocka_unit_test(test_ack_unindexed),
      cmocka_unit_test(test_corruption_refuses),
      cmocka_unit_test(test_derived_rebuilt),
      cmocka_unit_test(test_verify_detects_tamper),
      cmocka_unit_test(test_aht_cache),
      cmocka_unit_test(test_fault_enospc_write),
      cmocka_unit_test(test_fault_eio_write),
      cmocka_unit_test(test_fault_short_write),
      cmocka_unit_test(test_fault_eio_fsync),
      cmocka_unit_test(test_fault_enospc_fsync),
      cmocka_unit_test(test_bad_settings),
      cmocka_unit_test(test_export_replicate),
      cmocka_unit_test(test_async_mixed_synced),
      cmocka_unit_test(test_async_mixed_async),
      cmocka_unit_test(test_async_invalid),
      cmocka_unit_test(test_async_fault),
      cmocka_unit_test(test_async_close),
      cmocka_unit_test(test_on_indexed),
      cmocka_unit_test(test_timer_idle),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
