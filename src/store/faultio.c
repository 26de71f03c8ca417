/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fault-injecting immu_io (faultio.h). Each call first takes the mutex to
 * count itself and consult the armed faults, then, unless failed, runs the
 * base function outside the mutex so that concurrent I/O stays concurrent.
 */
#include "store/faultio.h"

#include <errno.h>
#include <pthread.h>
#include <string.h>

#include "core/mem.h"
#include "immudb/err.h"

typedef struct fault {
  int armed;
  int sticky;
  int err;
  uint64_t countdown; /* calls to let through before failing */
} fault;

typedef struct short_write {
  int armed;
  int err;
  uint64_t countdown;
  size_t keep;
} short_write;

struct immu_faultio {
  immu_io io; /* io.ctx == this */
  const immu_io *base;
  pthread_mutex_t mu;
  fault faults[IMMU_FAULT_NOPS];
  short_write sw;
  uint64_t count[IMMU_FAULT_NOPS];
  uint64_t injected[IMMU_FAULT_NOPS];
};

static int norm_err(int err) {
  if (err == 0)
    return -EIO;
  return err > 0 ? -err : err;
}

/* Counts a call of |op| and returns 0 to let it through or the error to
 * fail it with. Caller holds f->mu. */
static int tick_locked(immu_faultio *f, immu_fault_op op) {
  fault *ft = &f->faults[op];
  f->count[op]++;
  if (!ft->armed)
    return 0;
  if (ft->countdown > 0) {
    ft->countdown--;
    return 0;
  }
  if (!ft->sticky)
    ft->armed = 0;
  f->injected[op]++;
  return ft->err;
}

static int tick(immu_faultio *f, immu_fault_op op) {
  pthread_mutex_lock(&f->mu);
  int rc = tick_locked(f, op);
  pthread_mutex_unlock(&f->mu);
  return rc;
}

static int f_open(void *ctx, const char *path, int flags, int mode, int *fd) {
  immu_faultio *f = ctx;
  int rc = tick(f, IMMU_FAULT_OPEN);
  if (rc != 0)
    return rc;
  return f->base->open(f->base->ctx, path, flags, mode, fd);
}

static int f_close(void *ctx, int fd) {
  immu_faultio *f = ctx;
  int rc = tick(f, IMMU_FAULT_CLOSE);
  if (rc != 0)
    return rc; /* the descriptor stays open, as after a failed close */
  return f->base->close(f->base->ctx, fd);
}

static int f_pread(void *ctx, int fd, void *buf, size_t n, uint64_t off,
                   size_t *nread) {
  immu_faultio *f = ctx;
  int rc = tick(f, IMMU_FAULT_PREAD);
  if (rc != 0)
    return rc;
  return f->base->pread(f->base->ctx, fd, buf, n, off, nread);
}

static int f_pwritev(void *ctx, int fd, const struct iovec *iov, int iovcnt,
                     uint64_t off) {
  immu_faultio *f = ctx;
  int short_err = 0;
  size_t keep = 0;

  pthread_mutex_lock(&f->mu);
  int rc = tick_locked(f, IMMU_FAULT_PWRITEV);
  if (f->sw.armed) {
    if (f->sw.countdown > 0) {
      f->sw.countdown--;
    } else {
      f->sw.armed = 0;
      if (rc == 0) {
        short_err = f->sw.err;
        keep = f->sw.keep;
        f->injected[IMMU_FAULT_PWRITEV]++;
      }
    }
  }
  pthread_mutex_unlock(&f->mu);
  if (rc != 0)
    return rc;
  if (short_err == 0)
    return f->base->pwritev(f->base->ctx, fd, iov, iovcnt, off);

  /* Short write: pass the first |keep| bytes, one buffer at a time. */
  for (int i = 0; i < iovcnt && keep > 0; i++) {
    struct iovec part = iov[i];
    if (part.iov_len > keep)
      part.iov_len = keep;
    if (part.iov_len == 0)
      continue;
    rc = f->base->pwritev(f->base->ctx, fd, &part, 1, off);
    if (rc != 0)
      return rc;
    off += part.iov_len;
    keep -= part.iov_len;
  }
  return short_err;
}

static int f_fdatasync(void *ctx, int fd) {
  immu_faultio *f = ctx;
  int rc = tick(f, IMMU_FAULT_FDATASYNC);
  if (rc != 0)
    return rc;
  return f->base->fdatasync(f->base->ctx, fd);
}

static int f_ftruncate(void *ctx, int fd, uint64_t len) {
  immu_faultio *f = ctx;
  int rc = tick(f, IMMU_FAULT_FTRUNCATE);
  if (rc != 0)
    return rc;
  return f->base->ftruncate(f->base->ctx, fd, len);
}

static int f_fsize(void *ctx, int fd, uint64_t *size) {
  immu_faultio *f = ctx;
  int rc = tick(f, IMMU_FAULT_FSIZE);
  if (rc != 0)
    return rc;
  return f->base->fsize(f->base->ctx, fd, size);
}

static int f_rename(void *ctx, const char *from, const char *to) {
  immu_faultio *f = ctx;
  int rc = tick(f, IMMU_FAULT_RENAME);
  if (rc != 0)
    return rc;
  return f->base->rename(f->base->ctx, from, to);
}

static int f_unlink(void *ctx, const char *path) {
  immu_faultio *f = ctx;
  int rc = tick(f, IMMU_FAULT_UNLINK);
  if (rc != 0)
    return rc;
  return f->base->unlink(f->base->ctx, path);
}

static int f_mkdir(void *ctx, const char *path, int mode) {
  immu_faultio *f = ctx;
  int rc = tick(f, IMMU_FAULT_MKDIR);
  if (rc != 0)
    return rc;
  return f->base->mkdir(f->base->ctx, path, mode);
}

static int f_sync_dir(void *ctx, const char *path) {
  immu_faultio *f = ctx;
  int rc = tick(f, IMMU_FAULT_SYNC_DIR);
  if (rc != 0)
    return rc;
  return f->base->sync_dir(f->base->ctx, path);
}

int immu__faultio_new(const immu_io *base, immu_faultio **out) {
  if (out == NULL)
    return IMMU_EINVAL;
  *out = NULL;
  if (base == NULL)
    return IMMU_EINVAL;
  immu_faultio *f = immu__calloc(1, sizeof *f);
  if (f == NULL)
    return IMMU_ENOMEM;
  if (pthread_mutex_init(&f->mu, NULL) != 0) {
    immu__free(f);
    return IMMU_ENOMEM;
  }
  f->base = base;
  f->io = (immu_io){
      .ctx = f,
      .open = f_open,
      .close = f_close,
      .pread = f_pread,
      .pwritev = f_pwritev,
      .fdatasync = f_fdatasync,
      .ftruncate = f_ftruncate,
      .fsize = f_fsize,
      .rename = f_rename,
      .unlink = f_unlink,
      .mkdir = f_mkdir,
      .sync_dir = f_sync_dir,
  };
  *out = f;
  return 0;
}

void immu__faultio_free(immu_faultio *f) {
  if (f == NULL)
    return;
  pthread_mutex_destroy(&f->mu);
  immu__free(f);
}

const immu_io *immu__faultio_io(immu_faultio *f) {
  return &f->io;
}

void immu__faultio_fail(immu_faultio *f, immu_fault_op op, uint64_t nth,
                        int err, int sticky) {
  if ((unsigned)op >= IMMU_FAULT_NOPS)
    return;
  pthread_mutex_lock(&f->mu);
  f->faults[op] = (fault){.armed = 1,
                          .sticky = sticky ? 1 : 0,
                          .err = norm_err(err),
                          .countdown = nth};
  pthread_mutex_unlock(&f->mu);
}

void immu__faultio_short_write(immu_faultio *f, uint64_t nth, size_t keep,
                               int err) {
  pthread_mutex_lock(&f->mu);
  f->sw = (short_write){
      .armed = 1, .err = norm_err(err), .countdown = nth, .keep = keep};
  pthread_mutex_unlock(&f->mu);
}

void immu__faultio_clear(immu_faultio *f) {
  pthread_mutex_lock(&f->mu);
  memset(f->faults, 0, sizeof f->faults);
  memset(&f->sw, 0, sizeof f->sw);
  pthread_mutex_unlock(&f->mu);
}

uint64_t immu__faultio_count(immu_faultio *f, immu_fault_op op) {
  if ((unsigned)op >= IMMU_FAULT_NOPS)
    return 0;
  pthread_mutex_lock(&f->mu);
  uint64_t n = f->count[op];
  pthread_mutex_unlock(&f->mu);
  return n;
}

uint64_t immu__faultio_injected(immu_faultio *f, immu_fault_op op) {
  if ((unsigned)op >= IMMU_FAULT_NOPS)
    return 0;
  pthread_mutex_lock(&f->mu);
  uint64_t n = f->injected[op];
  pthread_mutex_unlock(&f->mu);
  return n;
}

void immu__faultio_reset_counts(immu_faultio *f) {
  pthread_mutex_lock(&f->mu);
  memset(f->count, 0, sizeof f->count);
  memset(f->injected, 0, sizeof f->injected);
  pthread_mutex_unlock(&f->mu);
}
