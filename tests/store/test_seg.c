/* SPDX-License-Identifier: Apache-2.0 */
/* Tests of segmented append-only files (src/store/seg.c): positions across
 * segment boundaries, oversized appends, reopen, truncate, missing
 * segments, concurrent readers, and I/O faults through faultio. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <ftw.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/mem.h"
#include "immudb/err.h"
#include "store/faultio.h"
#include "store/io.h"
#include "store/seg.h"

typedef struct fixture {
  char root[4096];
  char dir[4200]; /* root/log: created by immu__seg_open */
  immu_faultio *f;
  const immu_io *io;
} fixture;

static int rm_entry(const char *path, const struct stat *st, int flag,
                    struct FTW *ftw) {
  (void)st;
  (void)flag;
  (void)ftw;
  return remove(path);
}

static int setup(void **state) {
  fixture *fx = calloc(1, sizeof *fx);
  const char *base = getenv("IMMU_TEST_TMPDIR");
  if (fx == NULL)
    return -1;
  if (base == NULL || base[0] == '\0')
    base = "/tmp";
  snprintf(fx->root, sizeof fx->root, "%s/seg-XXXXXX", base);
  if (mkdtemp(fx->root) == NULL ||
      immu__faultio_new(immu__io_default(), &fx->f)) {
    free(fx);
    return -1;
  }
  snprintf(fx->dir, sizeof fx->dir, "%s/log", fx->root);
  fx->io = immu__faultio_io(fx->f);
  *state = fx;
  return 0;
}

static int teardown(void **state) {
  fixture *fx = *state;
  immu__faultio_free(fx->f);
  nftw(fx->root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
  free(fx);
  return 0;
}

static void seg_name(const fixture *fx, uint64_t n, char *out, size_t cap) {
  snprintf(out, cap, "%s/%020" PRIu64 ".log", fx->dir, n);
}

/* Size of segment file |n|, or -1 if it does not exist. */
static long long seg_file_size(const fixture *fx, uint64_t n) {
  char p[4300];
  struct stat st;
  seg_name(fx, n, p, sizeof p);
  if (stat(p, &st) != 0)
    return -1;
  return (long long)st.st_size;
}

/* Record |i|: |len| bytes derived from i. */
static void rec_fill(uint8_t *b, size_t len, uint64_t i) {
  for (size_t k = 0; k < len; k++)
    b[k] = (uint8_t)(i * 131 + k * 7 + 1);
}

static uint64_t append_rec(immu_seg *s, size_t len, uint64_t i) {
  uint8_t *b = malloc(len ? len : 1);
  uint64_t pos;
  assert_non_null(b);
  rec_fill(b, len, i);
  struct iovec iov = {.iov_base = b, .iov_len = len};
  assert_int_equal(immu__seg_append(s, &iov, 1, &pos), 0);
  free(b);
  return pos;
}

static void check_rec(const immu_seg *s, uint64_t pos, size_t len, uint64_t i) {
  uint8_t *b = malloc(len ? len : 1), *e = malloc(len ? len : 1);
  assert_non_null(b);
  assert_non_null(e);
  rec_fill(e, len, i);
  assert_int_equal(immu__seg_read(s, pos, b, len), 0);
  assert_memory_equal(b, e, len);
  free(b);
  free(e);
}

static immu_seg *open_seg_io(const fixture *fx, const immu_io *io,
                             uint64_t seg_size) {
  immu_seg *s = NULL;
  assert_int_equal(immu__seg_open(io, fx->dir, "log", seg_size, 1, &s), 0);
  assert_non_null(s);
  return s;
}

static immu_seg *open_seg(const fixture *fx, uint64_t seg_size) {
  return open_seg_io(fx, fx->io, seg_size);
}

static void test_boundaries(void **state) {
  fixture *fx = *state;
  immu_seg *s = open_seg(fx, 100);
  uint8_t b[128];

  assert_int_equal(immu__seg_end(s), 0);
  assert_int_equal(immu__seg_count(s), 0);
  assert_int_equal(immu__seg_read(s, 0, b, 1), IMMU_ERANGE);
  static const uint64_t want[7][2] = {{0, 0},  {0, 30}, {0, 60}, {1, 0},
                                      {1, 30}, {1, 60}, {2, 0}};
  for (uint64_t i = 0; i < 7; i++)
    assert_int_equal(append_rec(s, 30, i), IMMU_SEGPOS(want[i][0], want[i][1]));
  for (uint64_t i = 0; i < 7; i++)
    check_rec(s, IMMU_SEGPOS(want[i][0], want[i][1]), 30, i);
  assert_int_equal(immu__seg_count(s), 3);
  assert_int_equal(immu__seg_bytes(s), 210);
  assert_int_equal(immu__seg_end(s), IMMU_SEGPOS(2, 30));
  assert_int_equal(seg_file_size(fx, 0), 90);
  assert_int_equal(seg_file_size(fx, 1), 90);
  assert_int_equal(seg_file_size(fx, 2), 30);
  uint64_t sz = 0;
  assert_int_equal(immu__seg_size(s, 0, &sz), 0);
  assert_int_equal(sz, 90);
  assert_int_equal(immu__seg_size(s, 2, &sz), 0);
  assert_int_equal(sz, 30);
  assert_int_equal(immu__seg_size(s, 3, &sz), IMMU_ERANGE);

  /* Reads must stay inside one segment's written bytes. */
  assert_int_equal(immu__seg_read(s, IMMU_SEGPOS(0, 60), b, 31), IMMU_ERANGE);
  assert_int_equal(immu__seg_read(s, IMMU_SEGPOS(0, 90), b, 1), IMMU_ERANGE);
  assert_int_equal(immu__seg_read(s, IMMU_SEGPOS(0, 91), b, 0), IMMU_ERANGE);
  assert_int_equal(immu__seg_read(s, IMMU_SEGPOS(0, 90), b, 0), 0);
  assert_int_equal(immu__seg_read(s, IMMU_SEGPOS(2, 30), b, 1), IMMU_ERANGE);
  assert_int_equal(immu__seg_read(s, IMMU_SEGPOS(3, 0), b, 1), IMMU_ERANGE);
  assert_int_equal(immu__seg_read(s, IMMU_SEGPOS(0, 50), b, 20), 0);

  /* Several buffers land contiguously; an exact fit stays. */
  uint8_t x[70];
  rec_fill(x, 70, 99);
  struct iovec iov[3] = {{x, 10}, {x + 10, 0}, {x + 10, 60}};
  uint64_t pos;
  assert_int_equal(immu__seg_append(s, iov, 3, &pos), 0);
  assert_int_equal(pos, IMMU_SEGPOS(2, 30));
  check_rec(s, pos, 70, 99);
  assert_int_equal(append_rec(s, 1, 100), IMMU_SEGPOS(3, 0));
  /* Empty append: the end, nothing written. */
  assert_int_equal(immu__seg_append(s, NULL, 0, &pos), 0);
  assert_int_equal(pos, IMMU_SEGPOS(3, 1));
  assert_int_equal(immu__seg_end(s), IMMU_SEGPOS(3, 1));

  char p[4300], q[4300];
  immu__seg_path(s, IMMU_SEGPOS(1, 5), p, sizeof p);
  seg_name(fx, 1, q, sizeof q);
  assert_string_equal(p, q);
  immu__seg_path(s, IMMU_SEGPOS(1, 5), p, 8);
  assert_int_equal(strlen(p), 7);
  assert_int_equal(immu__seg_sync(s), 0);
  immu__seg_close(s);
  immu__seg_close(NULL);
}

static void test_oversized(void **state) {
  fixture *fx = *state;
  immu_seg *s = open_seg(fx, 100);
  assert_int_equal(append_rec(s, 250, 0), IMMU_SEGPOS(0, 0));
  assert_int_equal(append_rec(s, 10, 1), IMMU_SEGPOS(1, 0));
  assert_int_equal(append_rec(s, 150, 2), IMMU_SEGPOS(2, 0));
  assert_int_equal(append_rec(s, 10, 3), IMMU_SEGPOS(3, 0));
  assert_int_equal(append_rec(s, 95, 4), IMMU_SEGPOS(4, 0));
  assert_int_equal(append_rec(s, 5, 5), IMMU_SEGPOS(4, 95));
  assert_int_equal(append_rec(s, 101, 6), IMMU_SEGPOS(5, 0));
  check_rec(s, IMMU_SEGPOS(0, 0), 250, 0);
  check_rec(s, IMMU_SEGPOS(2, 0), 150, 2);
  check_rec(s, IMMU_SEGPOS(4, 95), 5, 5);
  check_rec(s, IMMU_SEGPOS(5, 0), 101, 6);
  assert_int_equal(seg_file_size(fx, 0), 250);
  assert_int_equal(immu__seg_bytes(s), 250 + 10 + 150 + 10 + 95 + 5 + 101);
  immu__seg_close(s);

  /* After reopening, a full or oversized last segment is not extended. */
  s = open_seg(fx, 100);
  assert_int_equal(append_rec(s, 1, 7), IMMU_SEGPOS(6, 0));
  immu__seg_close(s);
}

static void test_reopen(void **state) {
  fixture *fx = *state;
  immu_seg *s = NULL;
  uint64_t pos[40];

  assert_int_equal(immu__seg_open(fx->io, fx->dir, "log", 100, 0, &s), -ENOENT);
  assert_null(s);
  s = open_seg(fx, 100);
  immu__seg_close(s);
  s = open_seg(fx, 100); /* an empty set reopens empty */
  assert_int_equal(immu__seg_end(s), 0);
  for (uint64_t i = 0; i < 20; i++)
    pos[i] = append_rec(s, 7 + i, i);
  uint64_t end = immu__seg_end(s), count = immu__seg_count(s);
  uint64_t bytes = immu__seg_bytes(s);
  assert_int_equal(immu__seg_sync(s), 0);
  immu__seg_close(s);

  assert_int_equal(immu__seg_open(fx->io, fx->dir, "log", 100, 0, &s), 0);
  assert_int_equal(immu__seg_end(s), end);
  assert_int_equal(immu__seg_count(s), count);
  assert_int_equal(immu__seg_bytes(s), bytes);
  for (uint64_t i = 0; i < 20; i++)
    check_rec(s, pos[i], 7 + i, i);
  for (uint64_t i = 20; i < 40; i++) {
    pos[i] = append_rec(s, 7 + i, i);
    assert_true(pos[i] >= pos[i - 1]);
  }
  immu__seg_close(s);
  s = open_seg(fx, 100);
  for (uint64_t i = 0; i < 40; i++)
    check_rec(s, pos[i], 7 + i, i);
  immu__seg_close(s);

  /* Another extension in the same directory is a separate set. */
  assert_int_equal(immu__seg_open(fx->io, fx->dir, "idx", 100, 0, &s), 0);
  assert_int_equal(immu__seg_count(s), 0);
  immu__seg_close(s);
}

static void test_truncate(void **state) {
  fixture *fx = *state;
  immu_seg *s = open_seg(fx, 100);
  uint64_t pos[12];
  for (uint64_t i = 0; i < 12; i++)
    pos[i] = append_rec(s, 30, i); /* 3 per segment: segments 0..3 */
  assert_int_equal(immu__seg_count(s), 4);

  assert_int_equal(immu__seg_truncate(s, immu__seg_end(s) + 1), IMMU_ERANGE);
  assert_int_equal(immu__seg_truncate(s, IMMU_SEGPOS(0, 91)), IMMU_ERANGE);
  assert_int_equal(immu__seg_truncate(s, immu__seg_end(s)), 0);
  assert_int_equal(immu__seg_count(s), 4);

  /* Drop records 4.. : keeps segment 0 and record 3 of segment 1. */
  assert_int_equal(immu__seg_truncate(s, pos[4]), 0);
  assert_int_equal(immu__seg_end(s), pos[4]);
  assert_int_equal(immu__seg_count(s), 2);
  assert_int_equal(immu__seg_bytes(s), 120);
  uint64_t sz;
  assert_int_equal(immu__seg_size(s, 1, &sz), 0);
  assert_int_equal(sz, 30);
  assert_int_equal(immu__seg_size(s, 2, &sz), IMMU_ERANGE);
  assert_int_equal(seg_file_size(fx, 1), 30);
  assert_int_equal(seg_file_size(fx, 2), -1);
  assert_int_equal(seg_file_size(fx, 3), -1);
  uint8_t b[30];
  assert_int_equal(immu__seg_read(s, pos[4], b, 30), IMMU_ERANGE);
  assert_int_equal(immu__seg_read(s, pos[6], b, 30), IMMU_ERANGE);
  check_rec(s, pos[3], 30, 3);
  assert_int_equal(append_rec(s, 30, 50), pos[4]);
  assert_int_equal(append_rec(s, 50, 51), IMMU_SEGPOS(2, 0));
  immu__seg_close(s);

  s = open_seg(fx, 100);
  assert_int_equal(immu__seg_end(s), IMMU_SEGPOS(2, 50));
  check_rec(s, pos[4], 30, 50);
  check_rec(s, IMMU_SEGPOS(2, 0), 50, 51);
  /* Truncating at a segment's start keeps it, empty. */
  assert_int_equal(immu__seg_truncate(s, IMMU_SEGPOS(1, 0)), 0);
  assert_int_equal(immu__seg_count(s), 2);
  assert_int_equal(seg_file_size(fx, 1), 0);
  assert_int_equal(append_rec(s, 30, 52), IMMU_SEGPOS(1, 0));
  assert_int_equal(immu__seg_truncate(s, 0), 0);
  assert_int_equal(immu__seg_end(s), 0);
  assert_int_equal(immu__seg_bytes(s), 0);
  assert_int_equal(immu__seg_count(s), 1);
  assert_int_equal(append_rec(s, 30, 53), 0);
  immu__seg_close(s);

  s = open_seg(fx, 100);
  assert_int_equal(immu__seg_end(s), IMMU_SEGPOS(0, 30));
  check_rec(s, 0, 30, 53);
  immu__seg_close(s);
}

static void test_missing_segment(void **state) {
  fixture *fx = *state;
  immu_seg *s = open_seg(fx, 10);
  for (uint64_t i = 0; i < 3; i++)
    append_rec(s, 10, i);
  immu__seg_close(s);

  /* Unrelated names are ignored. */
  static const char *const strays[] = {"foo", "00000000000000000000.idx",
                                       "0000.log", "0000000000000000000x.log",
                                       "00000000000000000000.log.tmp"};
  for (size_t i = 0; i < sizeof strays / sizeof strays[0]; i++) {
    char p[4300];
    snprintf(p, sizeof p, "%s/%s", fx->dir, strays[i]);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    fclose(f);
  }
  s = open_seg(fx, 10);
  assert_int_equal(immu__seg_count(s), 3);
  immu__seg_close(s);

  char p[4300];
  seg_name(fx, 1, p, sizeof p);
  assert_int_equal(unlink(p), 0);
  s = (immu_seg *)1;
  assert_int_equal(immu__seg_open(fx->io, fx->dir, "log", 10, 1, &s),
                   IMMU_ECORRUPT);
  assert_null(s);
  seg_name(fx, 2, p, sizeof p);
  assert_int_equal(unlink(p), 0);
  s = open_seg(fx, 10);
  assert_int_equal(immu__seg_count(s), 1);
  immu__seg_close(s);
  seg_name(fx, 0, p, sizeof p);
  assert_int_equal(unlink(p), 0);
  seg_name(fx, 1, p, sizeof p);
  FILE *f = fopen(p, "w");
  assert_non_null(f);
  fclose(f);
  assert_int_equal(immu__seg_open(fx->io, fx->dir, "log", 10, 1, &s),
                   IMMU_ECORRUPT);
  /* Out-of-range segment number. */
  assert_int_equal(unlink(p), 0);
  snprintf(p, sizeof p, "%s/99999999999999999999.log", fx->dir);
  f = fopen(p, "w");
  assert_non_null(f);
  fclose(f);
  assert_int_equal(immu__seg_open(fx->io, fx->dir, "log", 10, 1, &s),
                   IMMU_ECORRUPT);
}

static int nosync_fdatasync(void *ctx, int fd) {
  (void)ctx;
  (void)fd;
  return 0;
}

static int nosync_sync_dir(void *ctx, const char *path) {
  (void)ctx;
  (void)path;
  return 0;
}

/* The default io with the syncs stubbed out: tests that create hundreds of
 * segments would otherwise only measure the disk. */
static immu_io nosync_io(void) {
  immu_io io = *immu__io_default();
  io.fdatasync = nosync_fdatasync;
  io.sync_dir = nosync_sync_dir;
  return io;
}

/* ---- concurrent readers with one appender ---------------------------- */

#define CR_RECORDS 20000
#define CR_READERS 4

typedef struct cr_shared {
  immu_seg *s;
  uint64_t pos[CR_RECORDS];
  _Atomic uint64_t published;
  _Atomic int done;
  _Atomic long errors;
  _Atomic long reads;
} cr_shared;

static size_t cr_len(uint64_t i) {
  return 1 + (size_t)(i * 37 % 300);
}

static void *cr_reader(void *arg) {
  cr_shared *c = arg;
  uint8_t b[300], e[300];
  uint64_t seed = (uint64_t)(uintptr_t)&b;
  while (!atomic_load(&c->done)) {
    uint64_t n = atomic_load_explicit(&c->published, memory_order_acquire);
    if (n == 0)
      continue;
    for (int k = 0; k < 64; k++) {
      seed = seed * 6364136223846793005ull + 1442695040888963407ull;
      uint64_t i = k == 0 ? n - 1 : (seed >> 33) % n;
      size_t len = cr_len(i);
      rec_fill(e, len, i);
      if (immu__seg_read(c->s, c->pos[i], b, len) != 0 ||
          memcmp(b, e, len) != 0)
        atomic_fetch_add(&c->errors, 1);
      atomic_fetch_add(&c->reads, 1);
    }
    /* Segments that do not exist (the test makes about 750). */
    if (immu__seg_read(c->s, IMMU_SEGPOS(100000, 0), b, 1) != IMMU_ERANGE)
      atomic_fetch_add(&c->errors, 1);
  }
  return NULL;
}

static void test_concurrent_readers(void **state) {
  fixture *fx = *state;
  cr_shared *c = calloc(1, sizeof *c);
  pthread_t t[CR_READERS];
  immu_io nosync = nosync_io();
  assert_non_null(c);
  c->s = open_seg_io(fx, &nosync, 4096);
  for (int i = 0; i < CR_READERS; i++)
    assert_int_equal(pthread_create(&t[i], NULL, cr_reader, c), 0);
  uint8_t b[300];
  for (uint64_t i = 0; i < CR_RECORDS; i++) {
    size_t len = cr_len(i);
    rec_fill(b, len, i);
    struct iovec iov = {.iov_base = b, .iov_len = len};
    assert_int_equal(immu__seg_append(c->s, &iov, 1, &c->pos[i]), 0);
    atomic_store_explicit(&c->published, i + 1, memory_order_release);
    if (i % 1000 == 999)
      assert_int_equal(immu__seg_sync(c->s), 0);
  }
  atomic_store(&c->done, 1);
  for (int i = 0; i < CR_READERS; i++)
    assert_int_equal(pthread_join(t[i], NULL), 0);
  assert_int_equal(atomic_load(&c->errors), 0);
  assert_true(atomic_load(&c->reads) > 0);
  assert_true(immu__seg_count(c->s) > 500);
  immu__seg_close(c->s);
  free(c);
}

/* More than one chunk of descriptor slots (1024 segments per chunk). */
static void test_many_segments(void **state) {
  fixture *fx = *state;
  struct rlimit rl;
  const uint64_t n = 1100;
  immu_io nosync = nosync_io();
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < n + 100) {
    rl.rlim_cur = rl.rlim_max < n + 100 ? rl.rlim_max : n + 100;
    setrlimit(RLIMIT_NOFILE, &rl);
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur < n + 100)
      skip();
  }
  immu_seg *s = open_seg_io(fx, &nosync, 1);
  for (uint64_t i = 0; i < n; i++)
    assert_int_equal(append_rec(s, 2, i), IMMU_SEGPOS(i, 0));
  assert_int_equal(immu__seg_count(s), n);
  assert_int_equal(immu__seg_sync(s), 0);
  immu__seg_close(s);
  s = open_seg_io(fx, &nosync, 1);
  assert_int_equal(immu__seg_count(s), n);
  for (uint64_t i = 0; i < n; i++)
    check_rec(s, IMMU_SEGPOS(i, 0), 2, i);
  assert_int_equal(immu__seg_truncate(s, IMMU_SEGPOS(1000, 1)), 0);
  assert_int_equal(immu__seg_count(s), 1001);
  assert_int_equal(append_rec(s, 2, 7), IMMU_SEGPOS(1001, 0));
  immu__seg_close(s);
}

/* ---- faults ------------------------------------------------------------ */

/* A failed append into the current segment leaves end and file unchanged,
 * and the next append succeeds at the same position. */
static void test_fault_write_existing(void **state) {
  fixture *fx = *state;
  immu_seg *s = open_seg(fx, 1000);
  append_rec(s, 100, 0);
  uint8_t b[50];
  rec_fill(b, 50, 1);
  struct iovec iov = {.iov_base = b, .iov_len = 50};
  uint64_t pos;

  static const int errs[] = {-ENOSPC, -EIO};
  for (size_t k = 0; k < 2; k++) {
    immu__faultio_fail(fx->f, IMMU_FAULT_PWRITEV, 0, errs[k], 0);
    assert_int_equal(immu__seg_append(s, &iov, 1, &pos), errs[k]);
    assert_int_equal(immu__seg_end(s), 100);
    assert_int_equal(seg_file_size(fx, 0), 100);
  }
  /* Short writes: the written prefix is truncated away. */
  for (size_t keep = 1; keep < 50; keep += 24) {
    immu__faultio_short_write(fx->f, 0, keep, -ENOSPC);
    assert_int_equal(immu__seg_append(s, &iov, 1, &pos), -ENOSPC);
    assert_int_equal(immu__seg_end(s), 100);
    assert_int_equal(immu__seg_bytes(s), 100);
    assert_int_equal(seg_file_size(fx, 0), 100);
  }
  assert_int_equal(immu__seg_append(s, &iov, 1, &pos), 0);
  assert_int_equal(pos, 100);
  check_rec(s, 100, 50, 1);
  check_rec(s, 0, 100, 0);
  assert_int_equal(seg_file_size(fx, 0), 150);
  immu__seg_close(s);
}

/* A failed append that needed a new segment leaves no new file. */
static void test_fault_write_new_segment(void **state) {
  fixture *fx = *state;
  immu_seg *s = open_seg(fx, 100);
  append_rec(s, 90, 0);
  uint8_t b[50];
  rec_fill(b, 50, 1);
  struct iovec iov = {.iov_base = b, .iov_len = 50};
  uint64_t pos;

  immu__faultio_fail(fx->f, IMMU_FAULT_PWRITEV, 0, -EIO, 0);
  assert_int_equal(immu__seg_append(s, &iov, 1, &pos), -EIO);
  immu__faultio_short_write(fx->f, 0, 10, -ENOSPC);
  assert_int_equal(immu__seg_append(s, &iov, 1, &pos), -ENOSPC);
  immu__faultio_fail(fx->f, IMMU_FAULT_SYNC_DIR, 0, -EIO, 0);
  assert_int_equal(immu__seg_append(s, &iov, 1, &pos), -EIO);
  immu__faultio_fail(fx->f, IMMU_FAULT_OPEN, 0, -EMFILE, 0);
  assert_int_equal(immu__seg_append(s, &iov, 1, &pos), -EMFILE);
  assert_int_equal(immu__seg_count(s), 1);
  assert_int_equal(immu__seg_end(s), 90);
  assert_int_equal(seg_file_size(fx, 1), -1);

  assert_int_equal(immu__seg_append(s, &iov, 1, &pos), 0);
  assert_int_equal(pos, IMMU_SEGPOS(1, 0));
  check_rec(s, pos, 50, 1);
  assert_int_equal(immu__seg_count(s), 2);

  /* The new file cannot be removed: poisoned; it is left empty, which
   * reopens as a valid (empty) last segment. */
  assert_int_equal(append_rec(s, 40, 2), IMMU_SEGPOS(1, 50)); /* full */
  immu__faultio_fail(fx->f, IMMU_FAULT_PWRITEV, 0, -EIO, 0);
  immu__faultio_fail(fx->f, IMMU_FAULT_UNLINK, 0, -EIO, 0);
  assert_int_equal(immu__seg_append(s, &iov, 1, &pos), -EIO);
  assert_int_equal(immu__seg_append(s, &iov, 1, &pos), IMMU_EPOISONED);
  assert_int_equal(seg_file_size(fx, 2), 0);
  immu__seg_close(s);
  s = open_seg(fx, 100);
  assert_int_equal(immu__seg_count(s), 3);
  assert_int_equal(immu__seg_end(s), IMMU_SEGPOS(2, 0));
  assert_int_equal(append_rec(s, 5, 3), IMMU_SEGPOS(2, 0));
  immu__seg_close(s);

  /* The very first segment too. */
  char other[4300];
  snprintf(other, sizeof other, "%s/other", fx->root);
  assert_int_equal(immu__seg_open(fx->io, other, "log", 100, 1, &s), 0);
  immu__faultio_fail(fx->f, IMMU_FAULT_PWRITEV, 0, -EIO, 0);
  assert_int_equal(immu__seg_append(s, &iov, 1, &pos), -EIO);
  assert_int_equal(immu__seg_count(s), 0);
  immu__seg_close(s);
  assert_int_equal(immu__seg_open(fx->io, other, "log", 100, 0, &s), 0);
  assert_int_equal(immu__seg_count(s), 0);
  assert_int_equal(immu__seg_append(s, &iov, 1, &pos), 0);
  assert_int_equal(pos, 0);
  immu__seg_close(s);
}

/* When the rollback fails too, the handle is poisoned; reads still work. */
static void test_fault_poison(void **state) {
  fixture *fx = *state;
  immu_seg *s = open_seg(fx, 1000);
  append_rec(s, 100, 0);
  uint8_t b[50] = {0};
  struct iovec iov = {.iov_base = b, .iov_len = 50};
  uint64_t pos;

  immu__faultio_fail(fx->f, IMMU_FAULT_PWRITEV, 0, -ENOSPC, 0);
  immu__faultio_fail(fx->f, IMMU_FAULT_FTRUNCATE, 0, -EIO, 0);
  assert_int_equal(immu__seg_append(s, &iov, 1, &pos), -ENOSPC);
  assert_int_equal(immu__seg_append(s, &iov, 1, &pos), IMMU_EPOISONED);
  assert_int_equal(immu__seg_sync(s), IMMU_EPOISONED);
  assert_int_equal(immu__seg_truncate(s, 0), IMMU_EPOISONED);
  assert_int_equal(immu__seg_end(s), 100);
  check_rec(s, 0, 100, 0);
  immu__seg_close(s);
  /* On disk the partial bytes may remain past the old end: recovery
   * (immu__seg_truncate) drops them. */
}

static void test_fault_sync(void **state) {
  fixture *fx = *state;
  immu_seg *s = open_seg(fx, 100);
  for (uint64_t i = 0; i < 6; i++)
    append_rec(s, 40, i); /* segments 0..2 */
  immu__faultio_reset_counts(fx->f);
  assert_int_equal(immu__seg_sync(s), 0);
  assert_int_equal(immu__faultio_count(fx->f, IMMU_FAULT_FDATASYNC), 3);
  assert_int_equal(immu__seg_sync(s), 0);
  assert_int_equal(immu__faultio_count(fx->f, IMMU_FAULT_FDATASYNC), 3);
  append_rec(s, 10, 6);
  append_rec(s, 90, 7); /* starts segment 3 */
  assert_int_equal(immu__seg_sync(s), 0);
  assert_int_equal(immu__faultio_count(fx->f, IMMU_FAULT_FDATASYNC), 5);

  append_rec(s, 5, 8);
  immu__faultio_fail(fx->f, IMMU_FAULT_FDATASYNC, 0, -EIO, 0);
  assert_int_equal(immu__seg_sync(s), -EIO);
  /* After a failed fdatasync nothing can be trusted: poisoned. */
  assert_int_equal(immu__seg_sync(s), IMMU_EPOISONED);
  immu__seg_close(s);
}

static void test_fault_truncate(void **state) {
  fixture *fx = *state;
  immu_seg *s = open_seg(fx, 100);
  for (uint64_t i = 0; i < 6; i++)
    append_rec(s, 40, i);
  immu__faultio_fail(fx->f, IMMU_FAULT_UNLINK, 0, -EIO, 0);
  assert_int_equal(immu__seg_truncate(s, IMMU_SEGPOS(0, 40)), -EIO);
  assert_int_equal(immu__seg_truncate(s, IMMU_SEGPOS(0, 40)), IMMU_EPOISONED);
  immu__seg_close(s);

  /* Recovery after reopening. */
  s = open_seg(fx, 100);
  assert_int_equal(immu__seg_count(s), 3);
  immu__faultio_fail(fx->f, IMMU_FAULT_FTRUNCATE, 0, -EIO, 0);
  assert_int_equal(immu__seg_truncate(s, IMMU_SEGPOS(0, 40)), -EIO);
  immu__seg_close(s);
  s = open_seg(fx, 100);
  assert_int_equal(immu__seg_truncate(s, IMMU_SEGPOS(0, 40)), 0);
  assert_int_equal(immu__seg_end(s), 40);
  check_rec(s, 0, 40, 0);
  immu__seg_close(s);
}

/* Failures while opening: every step, and every allocation. */
static void test_fault_open(void **state) {
  fixture *fx = *state;
  immu_seg *s = open_seg(fx, 10);
  for (uint64_t i = 0; i < 5; i++)
    append_rec(s, 10, i);
  immu__seg_close(s);

  static const immu_fault_op ops[] = {IMMU_FAULT_MKDIR, IMMU_FAULT_SYNC_DIR,
                                      IMMU_FAULT_OPEN, IMMU_FAULT_FSIZE};
  for (size_t k = 0; k < sizeof ops / sizeof ops[0]; k++) {
    for (uint64_t nth = 0; nth < 5; nth++) {
      immu__faultio_clear(fx->f);
      immu__faultio_reset_counts(fx->f);
      immu__faultio_fail(fx->f, ops[k], nth, -EIO, 0);
      int rc = immu__seg_open(fx->io, fx->dir, "log", 10, 1, &s);
      if (immu__faultio_injected(fx->f, ops[k]) == 0) {
        assert_int_equal(rc, 0);
        immu__seg_close(s);
      } else {
        assert_int_equal(rc, -EIO);
        assert_null(s);
      }
    }
  }
  immu__faultio_clear(fx->f);
  for (long i = 0;; i++) {
    immu__mem_fail_after(i, 0);
    int rc = immu__seg_open(fx->io, fx->dir, "log", 10, 1, &s);
    immu__mem_fail_after(-1, 0);
    if (rc == 0) {
      assert_int_equal(immu__seg_count(s), 5);
      immu__seg_close(s);
      assert_true(i > 3);
      break;
    }
    assert_int_equal(rc, IMMU_ENOMEM);
    assert_null(s);
  }
}

static void test_invalid(void **state) {
  fixture *fx = *state;
  immu_seg *s;
  assert_int_equal(immu__seg_open(fx->io, fx->dir, "log", 0, 1, &s),
                   IMMU_EINVAL);
  assert_int_equal(immu__seg_open(fx->io, fx->dir, "a/b", 10, 1, &s),
                   IMMU_EINVAL);
  assert_int_equal(immu__seg_open(fx->io, fx->dir, "", 10, 1, &s), IMMU_EINVAL);
  assert_int_equal(immu__seg_open(fx->io, "", "log", 10, 1, &s), IMMU_EINVAL);
  assert_int_equal(
      immu__seg_open(fx->io, fx->dir, "log", (uint64_t)1 << 40, 1, &s),
      IMMU_EINVAL);
  assert_int_equal(immu__seg_open(fx->io, fx->dir, "log", 10, 1, NULL),
                   IMMU_EINVAL);

  s = open_seg(fx, 10);
  uint64_t pos;
  uint8_t b[1];
  assert_int_equal(immu__seg_append(s, NULL, -1, &pos), IMMU_EINVAL);
  struct iovec huge[2] = {{b, (size_t)1 << 39}, {b, (size_t)1 << 39}};
  assert_int_equal(immu__seg_append(s, huge, 2, &pos), IMMU_ETOOLARGE);
  assert_int_equal(immu__seg_count(s), 0);
  immu__seg_close(s);
}

/* Whether file |n|'s bytes in [from, to) are all zero. */
static int file_zero(const fixture *fx, uint64_t n, long long from,
                     long long to) {
  char p[4300];
  uint8_t b[4096];
  seg_name(fx, n, p, sizeof p);
  FILE *f = fopen(p, "rb");
  assert_non_null(f);
  assert_int_equal(fseeko(f, (off_t)from, SEEK_SET), 0);
  int zero = 1;
  for (long long o = from; o < to && zero;) {
    size_t want =
        to - o < (long long)sizeof b ? (size_t)(to - o) : sizeof b;
    assert_int_equal(fread(b, 1, want, f), want);
    for (size_t i = 0; i < want; i++)
      zero &= b[i] == 0;
    o += (long long)want;
  }
  fclose(f);
  return zero;
}

/* SPEC SEG-9: zeros ahead of the end, topped up within half a chunk of
 * the file's end, never readable, counted in the end by a reopen (the
 * caller truncates), and cut off by a clean close. */
static void test_prealloc(void **state) {
  fixture *fx = *state;
  immu_seg *s = open_seg(fx, (uint64_t)4 << 20);
  immu__seg_set_prealloc(s, 1);
  uint64_t pos[4];
  uint8_t b[8];

  pos[0] = append_rec(s, 100, 0);
  assert_int_equal(immu__seg_end(s), 100);
  assert_int_equal(immu__seg_bytes(s), 100);
  assert_int_equal(seg_file_size(fx, 0), 128 << 10);
  assert_true(file_zero(fx, 0, 100, 128 << 10));
  assert_int_equal(immu__seg_read(s, 100, b, 1), IMMU_ERANGE);
  /* 40 KiB records: the third comes within 32 KiB of the file's end. */
  for (int i = 1; i <= 3; i++) {
    pos[i] = append_rec(s, 40 << 10, (uint64_t)i);
    assert_int_equal(seg_file_size(fx, 0), i < 3 ? 128 << 10 : 192 << 10);
  }
  uint64_t end = 100 + 3 * (40 << 10);
  assert_int_equal(immu__seg_end(s), end);
  assert_true(file_zero(fx, 0, (long long)end, 192 << 10));
  check_rec(s, pos[0], 100, 0);
  for (int i = 1; i <= 3; i++)
    check_rec(s, pos[i], 40 << 10, (uint64_t)i);
  assert_int_equal(immu__seg_sync(s), 0);

  /* A clean close leaves the file at its end. */
  immu__seg_close(s);
  assert_int_equal(seg_file_size(fx, 0), (long long)end);

  /* A crash: a reopen counts the zeros in the segment, and the caller
   * truncates them away. */
  s = open_seg(fx, (uint64_t)4 << 20);
  immu__seg_set_prealloc(s, 1);
  assert_int_equal(immu__seg_end(s), end);
  append_rec(s, 10, 4);
  assert_int_equal(immu__seg_sync(s), 0);
  long long crashed = seg_file_size(fx, 0);
  assert_true(crashed > (long long)end + 10);
  immu_seg *t = open_seg(fx, (uint64_t)4 << 20);
  assert_int_equal(immu__seg_end(t), (uint64_t)crashed);
  assert_int_equal(immu__seg_truncate(t, end + 10), 0);
  assert_int_equal(seg_file_size(fx, 0), (long long)end + 10);
  check_rec(t, pos[3], 40 << 10, 3);
  check_rec(t, end, 10, 4);
  immu__seg_close(t);
  immu__seg_close(s);
  assert_int_equal(seg_file_size(fx, 0), (long long)end + 10);
}

/* SPEC SEG-9: the largest chunk (1 MiB, from an end past 8 MiB), from an
 * end that is not a multiple of the zero buffer. */
static void test_prealloc_large(void **state) {
  fixture *fx = *state;
  immu_seg *s = open_seg(fx, (uint64_t)64 << 20);
  immu__seg_set_prealloc(s, 1);
  uint64_t len = ((uint64_t)8 << 20) + 100;
  uint64_t p = append_rec(s, (size_t)len, 0);
  uint64_t want = (len + (1 << 20) + (64 << 10) - 1) / (64 << 10) * (64 << 10);
  assert_int_equal(seg_file_size(fx, 0), (long long)want);
  assert_true(file_zero(fx, 0, (long long)len, (long long)want));
  check_rec(s, p, (size_t)len, 0);
  immu__seg_close(s);
  assert_int_equal(seg_file_size(fx, 0), (long long)len);
}

/* SPEC SEG-9: a segment is cut to its size before the next one starts, so
 * only the last segment ever has zeros past its end. */
static void test_prealloc_rollover(void **state) {
  fixture *fx = *state;
  immu_seg *s = open_seg(fx, 300 << 10);
  immu__seg_set_prealloc(s, 1);
  append_rec(s, 120 << 10, 0);
  assert_int_equal(seg_file_size(fx, 0), 192 << 10);
  append_rec(s, 120 << 10, 1);
  assert_int_equal(seg_file_size(fx, 0), 300 << 10); /* capped */
  uint64_t p = append_rec(s, 120 << 10, 2);
  assert_int_equal(p, IMMU_SEGPOS(1, 0));
  assert_int_equal(seg_file_size(fx, 0), 240 << 10);
  assert_int_equal(seg_file_size(fx, 1), 192 << 10);
  check_rec(s, IMMU_SEGPOS(0, 120 << 10), 120 << 10, 1);
  check_rec(s, p, 120 << 10, 2);
  immu__seg_close(s);
  assert_int_equal(seg_file_size(fx, 1), 120 << 10);
}

/* SPEC SEG-9: a failed zero-fill does not fail the append; the zeros are
 * cut off and preallocation stays off for the rest of that segment. */
static void test_prealloc_fault(void **state) {
  fixture *fx = *state;
  immu_seg *s = open_seg(fx, 1 << 20);
  immu__seg_set_prealloc(s, 1);
  /* The data write (call 0) passes; the zero-fill (call 1) is short. */
  immu__faultio_short_write(fx->f, 1, 1000, -ENOSPC);
  uint64_t p0 = append_rec(s, 100, 0);
  assert_int_equal(seg_file_size(fx, 0), 100);
  uint64_t p1 = append_rec(s, 100, 1);
  assert_int_equal(seg_file_size(fx, 0), 200);
  check_rec(s, p0, 100, 0);
  check_rec(s, p1, 100, 1);
  immu__seg_close(s);
}

int main(void) {
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
  const struct CMUnitTest tests[] = {
      T(test_boundaries),
      T(test_oversized),
      T(test_reopen),
      T(test_truncate),
      T(test_missing_segment),
      T(test_concurrent_readers),
      T(test_many_segments),
      T(test_fault_write_existing),
      T(test_fault_write_new_segment),
      T(test_fault_poison),
      T(test_fault_sync),
      T(test_fault_truncate),
      T(test_fault_open),
      T(test_invalid),
      T(test_prealloc),
      T(test_prealloc_large),
      T(test_prealloc_rollover),
      T(test_prealloc_fault),
  };
#undef T
  return cmocka_run_group_tests(tests, NULL, NULL);
}
