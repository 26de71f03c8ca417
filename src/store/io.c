/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The POSIX implementation of the I/O seam (io.h), and the two whole-file
 * helpers built on top of any immu_io.
 *
 * Every call retries EINTR; reads and writes loop over partial transfers;
 * failures come back as -errno. Descriptors are opened with O_CLOEXEC.
 */
#include "store/io.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/mem.h"
#include "immudb/err.h"

/* Largest iovec count handed to one pwritev(2) call. */
#define IO_IOV_BATCH 64

/* Converts a file offset, rejecting what off_t cannot hold. */
static int to_off(uint64_t v, off_t *out) {
  uint64_t max = sizeof(off_t) >= 8 ? (uint64_t)INT64_MAX : (uint64_t)INT32_MAX;
  if (v > max)
    return -EFBIG;
  *out = (off_t)v;
  return 0;
}

static int px_open(void *ctx, const char *path, int flags, int mode, int *fd) {
  (void)ctx;
  int r;
  do
    r = open(path, flags | O_CLOEXEC, (mode_t)mode);
  while (r < 0 && errno == EINTR);
  if (r < 0)
    return -errno;
  *fd = r;
  return 0;
}

static int px_close(void *ctx, int fd) {
  (void)ctx;
  /* Linux releases the descriptor even when close(2) reports EINTR, so it
   * must not be retried. */
  if (close(fd) != 0 && errno != EINTR)
    return -errno;
  return 0;
}

static int px_pread(void *ctx, int fd, void *buf, size_t n, uint64_t off,
                    size_t *nread) {
  (void)ctx;
  uint8_t *p = buf;
  size_t done = 0;
  off_t o;
  int rc = to_off(off, &o);
  if (rc != 0)
    return rc;
  while (done < n) {
    size_t want = n - done;
    if (want > (size_t)SSIZE_MAX)
      want = (size_t)SSIZE_MAX;
    ssize_t r = pread(fd, p + done, want, o + (off_t)done);
    if (r < 0) {
      if (errno == EINTR)
        continue;
      return -errno;
    }
    if (r == 0)
      break; /* end of file */
    done += (size_t)r;
  }
  *nread = done;
  return 0;
}

static int px_pwritev(void *ctx, int fd, const struct iovec *iov, int iovcnt,
                      uint64_t off) {
  (void)ctx;
  struct iovec batch[IO_IOV_BATCH];
  int idx = 0;     /* first iovec not fully written */
  size_t skip = 0; /* bytes of iov[idx] already written */
  uint64_t pos = off;

  if (iovcnt < 0)
    return -EINVAL;
  for (;;) {
    /* Skip empty and finished buffers. */
    while (idx < iovcnt && iov[idx].iov_len == skip) {
      idx++;
      skip = 0;
    }
    if (idx == iovcnt)
      return 0;
    int cnt = 0;
    for (int i = idx; i < iovcnt && cnt < IO_IOV_BATCH; i++) {
      batch[cnt].iov_base = (uint8_t *)iov[i].iov_base + (i == idx ? skip : 0);
      batch[cnt].iov_len = iov[i].iov_len - (i == idx ? skip : 0);
      cnt++;
    }
    off_t o;
    int rc = to_off(pos, &o);
    if (rc != 0)
      return rc;
    ssize_t r = pwritev(fd, batch, cnt, o);
    if (r < 0) {
      if (errno == EINTR)
        continue;
      return -errno;
    }
    if (r == 0)
      return -EIO; /* no progress: give up rather than spin */
    pos += (uint64_t)r;
    size_t left = (size_t)r;
    while (left > 0) {
      size_t avail = iov[idx].iov_len - skip;
      if (left < avail) {
        skip += left;
        left = 0;
      } else {
        left -= avail;
        idx++;
        skip = 0;
      }
    }
  }
}

static int px_fdatasync(void *ctx, int fd) {
  (void)ctx;
  int r;
  do
    r = fdatasync(fd);
  while (r != 0 && errno == EINTR);
  return r != 0 ? -errno : 0;
}

static int px_ftruncate(void *ctx, int fd, uint64_t len) {
  (void)ctx;
  off_t o;
  int r = to_off(len, &o);
  if (r != 0)
    return r;
  do
    r = ftruncate(fd, o);
  while (r != 0 && errno == EINTR);
  return r != 0 ? -errno : 0;
}

static int px_fsize(void *ctx, int fd, uint64_t *size) {
  (void)ctx;
  struct stat st;
  if (fstat(fd, &st) != 0)
    return -errno;
  if (st.st_size < 0)
    return -EIO;
  *size = (uint64_t)st.st_size;
  return 0;
}

static int px_rename(void *ctx, const char *from, const char *to) {
  (void)ctx;
  return rename(from, to) != 0 ? -errno : 0;
}

static int px_unlink(void *ctx, const char *path) {
  (void)ctx;
  return unlink(path) != 0 ? -errno : 0;
}

static int px_mkdir(void *ctx, const char *path, int mode) {
  (void)ctx;
  if (mkdir(path, (mode_t)mode) != 0 && errno != EEXIST)
    return -errno;
  return 0;
}

static int px_sync_dir(void *ctx, const char *path) {
  int fd = -1, rc;
  rc = px_open(ctx, path, O_RDONLY | O_DIRECTORY, 0, &fd);
  if (rc != 0)
    return rc;
  rc = px_fdatasync(ctx, fd);
  /* Some file systems refuse fsync on a directory; that is not an error. */
  if (rc == -EINVAL)
    rc = 0;
  int crc = px_close(ctx, fd);
  return rc != 0 ? rc : crc;
}

static const immu_io posix_io = {
    .ctx = NULL,
    .open = px_open,
    .close = px_close,
    .pread = px_pread,
    .pwritev = px_pwritev,
    .fdatasync = px_fdatasync,
    .ftruncate = px_ftruncate,
    .fsize = px_fsize,
    .rename = px_rename,
    .unlink = px_unlink,
    .mkdir = px_mkdir,
    .sync_dir = px_sync_dir,
};

const immu_io *immu__io_default(void) {
  return &posix_io;
}

int immu__io_read_file(const immu_io *io, const char *path, size_t max,
                       uint8_t **buf, size_t *len) {
  int fd = -1, rc;
  uint64_t size;
  uint8_t *data = NULL;
  size_t got = 0;

  *buf = NULL;
  *len = 0;
  rc = io->open(io->ctx, path, O_RDONLY, 0, &fd);
  if (rc != 0)
    return rc;
  rc = io->fsize(io->ctx, fd, &size);
  if (rc != 0)
    goto out;
  if (size > max) {
    rc = IMMU_ETOOLARGE;
    goto out;
  }
  data = immu__malloc((size_t)size);
  if (data == NULL) {
    rc = IMMU_ENOMEM;
    goto out;
  }
  /* A file that shrank meanwhile yields what is left; one that grew is
   * read up to the size it had. */
  rc = io->pread(io->ctx, fd, data, (size_t)size, 0, &got);
  if (rc != 0)
    goto out;
  *buf = data;
  *len = got;
  data = NULL;
out:
  immu__free(data);
  if (fd >= 0)
    (void)io->close(io->ctx, fd); /* nothing was written: nothing to lose */
  return rc;
}

/* Duplicates the directory part of |path| ("." when it has none). */
static char *dir_of(const char *path) {
  const char *slash = strrchr(path, '/');
  if (slash == NULL)
    return immu__strndup(".", 1);
  if (slash == path)
    return immu__strndup("/", 1);
  return immu__strndup(path, (size_t)(slash - path));
}

int immu__io_write_file_atomic(const immu_io *io, const char *path,
                               const void *buf, size_t len) {
  static const char suffix[] = ".tmp";
  size_t plen = strlen(path);
  char *tmp = NULL, *dir = NULL;
  int fd = -1, rc, created = 0;

  tmp = immu__malloc(plen + sizeof suffix);
  dir = dir_of(path);
  if (tmp == NULL || dir == NULL) {
    rc = IMMU_ENOMEM;
    goto out;
  }
  memcpy(tmp, path, plen);
  memcpy(tmp + plen, suffix, sizeof suffix);

  /* SPEC FILE-1: temp file, fdatasync, close, rename, sync the directory;
   * the temp file is removed when a step before the rename fails. */
  rc = io->open(io->ctx, tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644, &fd);
  if (rc != 0)
    goto out;
  created = 1;
  if (len > 0) {
    struct iovec iov = {.iov_base = (void *)(uintptr_t)buf, .iov_len = len};
    rc = io->pwritev(io->ctx, fd, &iov, 1, 0);
    if (rc != 0)
      goto out;
  }
  rc = io->fdatasync(io->ctx, fd);
  if (rc != 0)
    goto out;
  rc = io->close(io->ctx, fd);
  fd = -1;
  if (rc != 0)
    goto out;
  rc = io->rename(io->ctx, tmp, path);
  if (rc != 0)
    goto out;
  created = 0; /* the temp name is gone */
  rc = io->sync_dir(io->ctx, dir);
out:
  if (fd >= 0)
    (void)io->close(io->ctx, fd);
  if (created)
    (void)io->unlink(io->ctx, tmp);
  immu__free(tmp);
  immu__free(dir);
  return rc;
}
