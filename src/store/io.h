/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The I/O seam: the storage engine reaches files only through an immu_io
 * table, so tests can inject ENOSPC, EIO, short writes and failed fsyncs
 * (faultio.h) without special file systems. Every function returns 0 or a
 * negative errno / IMMU_E* code. All functions must be thread-safe.
 */
#ifndef IMMU_STORE_IO_H
#define IMMU_STORE_IO_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

typedef struct immu_io {
  void *ctx;
  /* open(2) flags and mode; the descriptor is returned in *fd. */
  int (*open)(void *ctx, const char *path, int flags, int mode, int *fd);
  int (*close)(void *ctx, int fd);
  /* Reads up to n bytes; *nread < n only at end of file. Retries EINTR and
   * short reads internally. */
  int (*pread)(void *ctx, int fd, void *buf, size_t n, uint64_t off,
               size_t *nread);
  /* Writes every byte of iov or fails: a short write that cannot be
   * completed returns -EIO (or the errno that stopped it), and the bytes
   * already written may be on the file (the caller truncates). */
  int (*pwritev)(void *ctx, int fd, const struct iovec *iov, int iovcnt,
                 uint64_t off);
  int (*fdatasync)(void *ctx, int fd);
  int (*ftruncate)(void *ctx, int fd, uint64_t len);
  int (*fsize)(void *ctx, int fd, uint64_t *size);
  int (*rename)(void *ctx, const char *from, const char *to);
  int (*unlink)(void *ctx, const char *path);
  int (*mkdir)(void *ctx, const char *path, int mode); /* EEXIST is 0 */
  /* fsync of a directory, after creating/renaming entries in it. */
  int (*sync_dir)(void *ctx, const char *path);
} immu_io;

/* The real file system (POSIX calls). Static; never freed. */
const immu_io *immu__io_default(void);

/* Reads the whole file at |path| (at most |max| bytes) into a fresh buffer
 * (caller frees with immu__free). -ENOENT if missing, IMMU_ETOOLARGE if
 * longer than max. */
int immu__io_read_file(const immu_io *io, const char *path, size_t max,
                       uint8_t **buf, size_t *len);

/* Atomically replaces |path| with |len| bytes: write a temp file, fdatasync,
 * rename, sync the directory. */
int immu__io_write_file_atomic(const immu_io *io, const char *path,
                               const void *buf, size_t len);

#endif
