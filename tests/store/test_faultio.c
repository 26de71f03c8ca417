/* SPDX-License-Identifier: Apache-2.0 */
/* Tests of the POSIX immu_io (src/store/io.c), its whole-file helpers, and
 * the fault-injecting wrapper (src/store/faultio.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/mem.h"
#include "immudb/err.h"
#include "store/faultio.h"
#include "store/io.h"

typedef struct fixture {
  char dir[4096];
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
  snprintf(fx->dir, sizeof fx->dir, "%s/faultio-XXXXXX", base);
  if (mkdtemp(fx->dir) == NULL) {
    free(fx);
    return -1;
  }
  if (immu__faultio_new(immu__io_default(), &fx->f) != 0) {
    free(fx);
    return -1;
  }
  fx->io = immu__faultio_io(fx->f);
  *state = fx;
  return 0;
}

static int teardown(void **state) {
  fixture *fx = *state;
  immu__faultio_free(fx->f);
  nftw(fx->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
  free(fx);
  return 0;
}

static void path_in(const fixture *fx, const char *name, char *out,
                    size_t cap) {
  snprintf(out, cap, "%s/%s", fx->dir, name);
}

static size_t file_size(const char *path) {
  struct stat st;
  assert_int_equal(stat(path, &st), 0);
  return (size_t)st.st_size;
}

/* The default io: open, write many buffers, read back, size, truncate. */
static void test_default_io(void **state) {
  fixture *fx = *state;
  const immu_io *io = immu__io_default();
  char p[4200];
  int fd;
  path_in(fx, "a", p, sizeof p);

  assert_int_equal(io->open(io->ctx, p, O_RDWR, 0, &fd), -ENOENT);
  assert_int_equal(io->open(io->ctx, p, O_RDWR | O_CREAT, 0644, &fd), 0);
  /* 200 buffers: more than one pwritev batch. */
  struct iovec iov[200];
  uint8_t data[200 * 3];
  for (int i = 0; i < 200; i++) {
    for (int k = 0; k < 3; k++)
      data[i * 3 + k] = (uint8_t)(i + k);
    iov[i].iov_base = data + i * 3;
    iov[i].iov_len = (i % 7 == 0) ? 0 : 3;
  }
  size_t total = 0;
  uint8_t expect[sizeof data];
  for (int i = 0; i < 200; i++) {
    memcpy(expect + total, iov[i].iov_base, iov[i].iov_len);
    total += iov[i].iov_len;
  }
  assert_int_equal(io->pwritev(io->ctx, fd, iov, 200, 10), 0);
  uint64_t size;
  assert_int_equal(io->fsize(io->ctx, fd, &size), 0);
  assert_int_equal(size, 10 + total);
  uint8_t back[sizeof data + 64];
  size_t got;
  assert_int_equal(io->pread(io->ctx, fd, back, sizeof back, 10, &got), 0);
  assert_int_equal(got, total);
  assert_memory_equal(back, expect, total);
  assert_int_equal(io->pread(io->ctx, fd, back, 5, 0, &got), 0);
  assert_int_equal(got, 5);
  for (int i = 0; i < 5; i++)
    assert_int_equal(back[i], 0); /* the hole */
  assert_int_equal(io->pwritev(io->ctx, fd, iov, 0, 0), 0);
  assert_int_equal(io->fdatasync(io->ctx, fd), 0);
  assert_int_equal(io->ftruncate(io->ctx, fd, 4), 0);
  assert_int_equal(io->fsize(io->ctx, fd, &size), 0);
  assert_int_equal(size, 4);
  assert_int_equal(io->pread(io->ctx, fd, back, 5, 100, &got), 0);
  assert_int_equal(got, 0);
  assert_int_equal(io->close(io->ctx, fd), 0);

  char q[4200], d[4200];
  path_in(fx, "b", q, sizeof q);
  path_in(fx, "sub", d, sizeof d);
  assert_int_equal(io->rename(io->ctx, p, q), 0);
  assert_int_equal(io->unlink(io->ctx, p), -ENOENT);
  assert_int_equal(io->unlink(io->ctx, q), 0);
  assert_int_equal(io->mkdir(io->ctx, d, 0755), 0);
  assert_int_equal(io->mkdir(io->ctx, d, 0755), 0); /* EEXIST is 0 */
  assert_int_equal(io->sync_dir(io->ctx, d), 0);
  assert_int_equal(io->sync_dir(io->ctx, q), -ENOENT);
}

static void test_file_helpers(void **state) {
  fixture *fx = *state;
  const immu_io *io = fx->io;
  char p[4200];
  uint8_t *buf;
  size_t len;
  path_in(fx, "state", p, sizeof p);

  assert_int_equal(immu__io_read_file(io, p, 100, &buf, &len), -ENOENT);
  assert_null(buf);
  assert_int_equal(immu__io_write_file_atomic(io, p, "hello", 5), 0);
  assert_int_equal(immu__io_read_file(io, p, 100, &buf, &len), 0);
  assert_int_equal(len, 5);
  assert_memory_equal(buf, "hello", 5);
  immu__free(buf);
  assert_int_equal(immu__io_read_file(io, p, 4, &buf, &len), IMMU_ETOOLARGE);
  assert_null(buf);
  assert_int_equal(immu__io_read_file(io, p, 5, &buf, &len), 0);
  immu__free(buf);

  /* Empty file. */
  assert_int_equal(immu__io_write_file_atomic(io, p, NULL, 0), 0);
  assert_int_equal(immu__io_read_file(io, p, 100, &buf, &len), 0);
  assert_int_equal(len, 0);
  immu__free(buf);

  /* Each failing step leaves the old contents and no temp file. */
  assert_int_equal(immu__io_write_file_atomic(io, p, "old", 3), 0);
  static const immu_fault_op ops[] = {IMMU_FAULT_OPEN, IMMU_FAULT_PWRITEV,
                                      IMMU_FAULT_FDATASYNC, IMMU_FAULT_CLOSE,
                                      IMMU_FAULT_RENAME};
  char tmp[4300];
  snprintf(tmp, sizeof tmp, "%s.tmp", p);
  for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) {
    immu__faultio_fail(fx->f, ops[i], 0, -EIO, 0);
    assert_int_equal(immu__io_write_file_atomic(io, p, "new!", 4), -EIO);
    assert_int_equal(access(tmp, F_OK), -1);
    assert_int_equal(immu__io_read_file(io, p, 100, &buf, &len), 0);
    assert_int_equal(len, 3);
    assert_memory_equal(buf, "old", 3);
    immu__free(buf);
  }
  /* A failed directory sync comes after the rename: new contents. */
  immu__faultio_fail(fx->f, IMMU_FAULT_SYNC_DIR, 0, -EIO, 0);
  assert_int_equal(immu__io_write_file_atomic(io, p, "new!", 4), -EIO);
  assert_int_equal(file_size(p), 4);

  /* Read errors. */
  immu__faultio_fail(fx->f, IMMU_FAULT_PREAD, 0, -EIO, 0);
  assert_int_equal(immu__io_read_file(io, p, 100, &buf, &len), -EIO);
  assert_null(buf);
  immu__faultio_fail(fx->f, IMMU_FAULT_FSIZE, 0, -EIO, 0);
  assert_int_equal(immu__io_read_file(io, p, 100, &buf, &len), -EIO);

  /* Out of memory. */
  immu__mem_fail_after(0, 0);
  assert_int_equal(immu__io_read_file(io, p, 100, &buf, &len), IMMU_ENOMEM);
  immu__mem_fail_after(0, 0);
  assert_int_equal(immu__io_write_file_atomic(io, p, "x", 1), IMMU_ENOMEM);
  immu__mem_fail_after(-1, 0);
}

static void test_fail_nth(void **state) {
  fixture *fx = *state;
  const immu_io *io = fx->io;
  char p[4200];
  int fd;
  uint8_t b[4];
  size_t got;
  path_in(fx, "n", p, sizeof p);
  assert_int_equal(io->open(io->ctx, p, O_RDWR | O_CREAT, 0644, &fd), 0);
  assert_int_equal(immu__faultio_count(fx->f, IMMU_FAULT_OPEN), 1);

  immu__faultio_fail(fx->f, IMMU_FAULT_PREAD, 2, ENOSPC, 0);
  assert_int_equal(io->pread(io->ctx, fd, b, 4, 0, &got), 0);
  assert_int_equal(io->pread(io->ctx, fd, b, 4, 0, &got), 0);
  assert_int_equal(io->pread(io->ctx, fd, b, 4, 0, &got), -ENOSPC);
  assert_int_equal(io->pread(io->ctx, fd, b, 4, 0, &got), 0);
  assert_int_equal(immu__faultio_count(fx->f, IMMU_FAULT_PREAD), 4);
  assert_int_equal(immu__faultio_injected(fx->f, IMMU_FAULT_PREAD), 1);

  /* Sticky, and 0 means -EIO. */
  immu__faultio_fail(fx->f, IMMU_FAULT_FDATASYNC, 1, 0, 1);
  assert_int_equal(io->fdatasync(io->ctx, fd), 0);
  for (int i = 0; i < 5; i++)
    assert_int_equal(io->fdatasync(io->ctx, fd), -EIO);
  assert_int_equal(immu__faultio_injected(fx->f, IMMU_FAULT_FDATASYNC), 5);
  /* Other operations are unaffected. */
  assert_int_equal(io->ftruncate(io->ctx, fd, 0), 0);
  immu__faultio_clear(fx->f);
  assert_int_equal(io->fdatasync(io->ctx, fd), 0);

  /* Our own codes pass through unchanged. */
  immu__faultio_fail(fx->f, IMMU_FAULT_FTRUNCATE, 0, IMMU_EBUSY, 0);
  assert_int_equal(io->ftruncate(io->ctx, fd, 0), IMMU_EBUSY);

  /* Every operation can be failed. */
  immu__faultio_reset_counts(fx->f);
  for (int op = 0; op < IMMU_FAULT_NOPS; op++)
    immu__faultio_fail(fx->f, (immu_fault_op)op, 0, -EROFS, 0);
  uint64_t sz;
  int fd2;
  struct iovec iov = {.iov_base = b, .iov_len = 1};
  assert_int_equal(io->open(io->ctx, p, O_RDWR, 0, &fd2), -EROFS);
  assert_int_equal(io->pread(io->ctx, fd, b, 1, 0, &got), -EROFS);
  assert_int_equal(io->pwritev(io->ctx, fd, &iov, 1, 0), -EROFS);
  assert_int_equal(io->fdatasync(io->ctx, fd), -EROFS);
  assert_int_equal(io->ftruncate(io->ctx, fd, 0), -EROFS);
  assert_int_equal(io->fsize(io->ctx, fd, &sz), -EROFS);
  assert_int_equal(io->rename(io->ctx, p, p), -EROFS);
  assert_int_equal(io->unlink(io->ctx, p), -EROFS);
  assert_int_equal(io->mkdir(io->ctx, p, 0755), -EROFS);
  assert_int_equal(io->sync_dir(io->ctx, fx->dir), -EROFS);
  assert_int_equal(io->close(io->ctx, fd), -EROFS);
  for (int op = 0; op < IMMU_FAULT_NOPS; op++)
    assert_int_equal(immu__faultio_injected(fx->f, (immu_fault_op)op), 1);
  assert_int_equal(io->close(io->ctx, fd), 0); /* the fault was one-shot */

  immu__faultio_reset_counts(fx->f);
  assert_int_equal(immu__faultio_count(fx->f, IMMU_FAULT_CLOSE), 0);
  assert_int_equal(immu__faultio_injected(fx->f, IMMU_FAULT_CLOSE), 0);
  assert_int_equal(immu__faultio_count(fx->f, IMMU_FAULT_NOPS), 0);
}

static void test_short_write(void **state) {
  fixture *fx = *state;
  const immu_io *io = fx->io;
  char p[4200];
  int fd;
  uint64_t size;
  path_in(fx, "s", p, sizeof p);
  assert_int_equal(io->open(io->ctx, p, O_RDWR | O_CREAT, 0644, &fd), 0);

  struct iovec iov[3] = {{.iov_base = (void *)"abcd", .iov_len = 4},
                         {.iov_base = (void *)"efgh", .iov_len = 4},
                         {.iov_base = (void *)"ij", .iov_len = 2}};
  immu__faultio_short_write(fx->f, 1, 6, -ENOSPC);
  assert_int_equal(io->pwritev(io->ctx, fd, iov, 3, 0), 0);
  assert_int_equal(io->pwritev(io->ctx, fd, iov, 3, 10), -ENOSPC);
  assert_int_equal(io->fsize(io->ctx, fd, &size), 0);
  assert_int_equal(size, 16);
  uint8_t back[16];
  size_t got;
  assert_int_equal(io->pread(io->ctx, fd, back, 16, 0, &got), 0);
  assert_int_equal(got, 16);
  assert_memory_equal(back, "abcdefghijabcdef", 16);
  assert_int_equal(immu__faultio_injected(fx->f, IMMU_FAULT_PWRITEV), 1);
  /* One-shot. */
  assert_int_equal(io->pwritev(io->ctx, fd, iov, 3, 20), 0);

  /* keep = 0 writes nothing; keep >= length writes everything. */
  immu__faultio_short_write(fx->f, 0, 0, EIO);
  assert_int_equal(io->pwritev(io->ctx, fd, iov, 3, 30), -EIO);
  assert_int_equal(io->fsize(io->ctx, fd, &size), 0);
  assert_int_equal(size, 30);
  immu__faultio_short_write(fx->f, 0, 100, EIO);
  assert_int_equal(io->pwritev(io->ctx, fd, iov, 3, 30), -EIO);
  assert_int_equal(io->fsize(io->ctx, fd, &size), 0);
  assert_int_equal(size, 40);

  /* A plain fault on the same call wins. */
  immu__faultio_short_write(fx->f, 0, 3, -ENOSPC);
  immu__faultio_fail(fx->f, IMMU_FAULT_PWRITEV, 0, -EDQUOT, 0);
  assert_int_equal(io->pwritev(io->ctx, fd, iov, 3, 40), -EDQUOT);
  assert_int_equal(io->fsize(io->ctx, fd, &size), 0);
  assert_int_equal(size, 40);
  assert_int_equal(io->close(io->ctx, fd), 0);
}

typedef struct worker {
  const immu_io *io;
  int fd;
  int errors;
} worker;

static void *reader(void *arg) {
  worker *w = arg;
  uint8_t b[8];
  size_t got;
  for (int i = 0; i < 2000; i++)
    if (w->io->pread(w->io->ctx, w->fd, b, sizeof b, 0, &got) != 0)
      w->errors++;
  return NULL;
}

static void test_threads(void **state) {
  fixture *fx = *state;
  const immu_io *io = fx->io;
  char p[4200];
  int fd;
  path_in(fx, "t", p, sizeof p);
  assert_int_equal(io->open(io->ctx, p, O_RDWR | O_CREAT, 0644, &fd), 0);
  immu__faultio_reset_counts(fx->f);
  /* Exactly one of the 8000 reads fails, whichever thread makes it. */
  immu__faultio_fail(fx->f, IMMU_FAULT_PREAD, 3999, -EIO, 0);
  worker w[4];
  pthread_t t[4];
  for (int i = 0; i < 4; i++) {
    w[i] = (worker){.io = io, .fd = fd, .errors = 0};
    assert_int_equal(pthread_create(&t[i], NULL, reader, &w[i]), 0);
  }
  int errors = 0;
  for (int i = 0; i < 4; i++) {
    assert_int_equal(pthread_join(t[i], NULL), 0);
    errors += w[i].errors;
  }
  assert_int_equal(immu__faultio_count(fx->f, IMMU_FAULT_PREAD), 8000);
  assert_int_equal((uint64_t)errors,
                   immu__faultio_injected(fx->f, IMMU_FAULT_PREAD));
  assert_int_equal(errors, 1);
  assert_int_equal(io->close(io->ctx, fd), 0);
}

static void test_new_errors(void **state) {
  (void)state;
  immu_faultio *f = (immu_faultio *)1;
  assert_int_equal(immu__faultio_new(NULL, &f), IMMU_EINVAL);
  assert_null(f);
  assert_int_equal(immu__faultio_new(immu__io_default(), NULL), IMMU_EINVAL);
  immu__mem_fail_after(0, 0);
  assert_int_equal(immu__faultio_new(immu__io_default(), &f), IMMU_ENOMEM);
  assert_null(f);
  immu__mem_fail_after(-1, 0);
  immu__faultio_free(NULL);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_default_io, setup, teardown),
      cmocka_unit_test_setup_teardown(test_file_helpers, setup, teardown),
      cmocka_unit_test_setup_teardown(test_fail_nth, setup, teardown),
      cmocka_unit_test_setup_teardown(test_short_write, setup, teardown),
      cmocka_unit_test_setup_teardown(test_threads, setup, teardown),
      cmocka_unit_test(test_new_errors),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
