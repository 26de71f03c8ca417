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
  assert_int_equal(immu__faultio_new(immu__io_default(), &f), 0);
  immu_store_options o;
  opts(&o);
  o.io = immu__faultio_io(f);
  immu_store *s = open_ok(dir, &o);
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

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_commit_read),
      cmocka_unit_test(test_proofs),
      cmocka_unit_test(test_concurrent_synced),
      cmocka_unit_test(test_concurrent_async),
      cmocka_unit_test(test_torn_tail_recovers),
      cmocka_unit_test(test_corruption_refuses),
      cmocka_unit_test(test_derived_rebuilt),
      cmocka_unit_test(test_verify_detects_tamper),
      cmocka_unit_test(test_fault_enospc_write),
      cmocka_unit_test(test_fault_eio_write),
      cmocka_unit_test(test_fault_short_write),
      cmocka_unit_test(test_fault_eio_fsync),
      cmocka_unit_test(test_fault_enospc_fsync),
      cmocka_unit_test(test_bad_settings),
      cmocka_unit_test(test_export_replicate),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
