/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Segmented append-only files (seg.h; docs/format.md, SEG-*).
 *
 * Every file operation goes through the immu_io passed to immu__seg_open,
 * so tests can inject faults; only the directory listing at open time uses
 * opendir/readdir directly.
 *
 * Descriptor table: segment i lives in slot i % SEG_CHUNK of chunk
 * i / SEG_CHUNK. The chunk directory (one pointer per possible chunk) is
 * allocated at open; chunks are allocated by the appender when first
 * needed and never move or shrink until close. The appender fills a slot
 * completely, then publishes it by storing the segment count with release
 * order; readers load the count with acquire order before touching a slot,
 * so they never see a half-initialised one. Each slot's size is likewise
 * stored (release) after the bytes are written and loaded (acquire) by
 * readers, so a reader that sees a size can read every byte below it.
 *
 * The appender-side state (poisoned flag, dirty range, scratch path) is
 * touched only by append/truncate/sync, which the caller serialises.
 */
#include "store/seg.h"

#include <dirent.h>
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/mem.h"
#include "immudb/err.h"

#define SEG_CHUNK 1024u
/* SPEC SEG-2: at most 2^24 segments, offsets below 2^40. */
#define SEG_MAX_COUNT ((uint64_t)1 << (64 - IMMU_SEG_OFF_BITS))
#define SEG_MAX_OFF ((uint64_t)1 << IMMU_SEG_OFF_BITS)
#define SEG_NCHUNKS ((size_t)(SEG_MAX_COUNT / SEG_CHUNK))
#define SEG_NAME_DIGITS 20
#define SEG_CLEAN UINT64_MAX

/* Preallocation (SPEC SEG-9): zeros written ahead of the end of the last
 * segment, a chunk of an eighth of the end's offset within these bounds,
 * topped up once the end comes within half a chunk of the file's end. */
#define PRE_MIN ((uint64_t)64 << 10)
#define PRE_MAX ((uint64_t)1 << 20)
#define PRE_ZBUF ((size_t)64 << 10)
static const uint8_t pre_zeros[PRE_ZBUF];

typedef struct seg_slot {
  _Atomic int fd;
  _Atomic uint64_t size; /* bytes written (and readable) */
} seg_slot;

struct immu_seg {
  const immu_io *io;
  char *dir;
  char *ext;
  char *path; /* scratch for the appender side */
  size_t path_cap;
  uint64_t seg_size;
  seg_slot **chunks; /* SEG_NCHUNKS pointers */
  _Atomic uint64_t nseg;
  _Atomic uint64_t end;
  _Atomic uint64_t bytes;
  uint64_t dirty_lo; /* first segment written since the last sync */
  _Atomic int poisoned;
  /* Appender side, SPEC SEG-9: the last segment's file length, which is
   * more than its size while zeros are preallocated past the end; whether
   * zero-fill is on, and whether it failed in this segment (then it is
   * not tried again until the next one). */
  uint64_t file_len;
  int prealloc, pre_failed;
};

static seg_slot *slot_at(const immu_seg *s, uint64_t i) {
  return &s->chunks[i / SEG_CHUNK][i % SEG_CHUNK];
}

/* Makes sure the slot of segment |i| exists. Appender side. */
static int ensure_slot(immu_seg *s, uint64_t i) {
  size_t c = (size_t)(i / SEG_CHUNK);
  if (s->chunks[c] != NULL)
    return 0;
  seg_slot *chunk = immu__malloc(SEG_CHUNK * sizeof *chunk);
  if (chunk == NULL)
    return IMMU_ENOMEM;
  for (size_t k = 0; k < SEG_CHUNK; k++) {
    atomic_init(&chunk[k].fd, -1);
    atomic_init(&chunk[k].size, 0);
  }
  s->chunks[c] = chunk;
  return 0;
}

/* SPEC SEG-1: segment |i| is the file <dir>/<20-digit i>.<ext>. */
static const char *seg_file(immu_seg *s, uint64_t i) {
  snprintf(s->path, s->path_cap, "%s/%0*" PRIu64 ".%s", s->dir, SEG_NAME_DIGITS,
           i, s->ext);
  return s->path;
}

void immu__seg_path(const immu_seg *s, uint64_t pos, char *buf, size_t cap) {
  if (buf == NULL || cap == 0)
    return;
  snprintf(buf, cap, "%s/%0*" PRIu64 ".%s", s->dir, SEG_NAME_DIGITS,
           IMMU_SEGPOS_SEG(pos), s->ext);
}

/* Parses a directory entry name; 1 and *num if it names a segment. */
static int parse_name(const char *name, const char *ext, uint64_t *num) {
  uint64_t v = 0;
  for (int i = 0; i < SEG_NAME_DIGITS; i++) {
    if (name[i] < '0' || name[i] > '9')
      return 0;
    unsigned d = (unsigned)(name[i] - '0');
    if (v > (UINT64_MAX - d) / 10)
      v = UINT64_MAX; /* saturate: rejected as out of range below */
    else
      v = v * 10 + d;
  }
  if (name[SEG_NAME_DIGITS] != '.' || strcmp(name + SEG_NAME_DIGITS + 1, ext))
    return 0;
  *num = v;
  return 1;
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

/* Lists the segment numbers in s->dir, sorted, and checks there is no gap.
 * Caller frees *nums with immu__free. */
static int list_segments(immu_seg *s, uint64_t **nums, size_t *count) {
  DIR *d;
  struct dirent *de;
  uint64_t *a = NULL;
  size_t n = 0, cap = 0;
  int rc = 0;

  *nums = NULL;
  *count = 0;
  d = opendir(s->dir);
  if (d == NULL)
    return -errno;
  for (;;) {
    errno = 0;
    de = readdir(d);
    if (de == NULL) {
      if (errno != 0)
        rc = -errno;
      break;
    }
    uint64_t num;
    if (!parse_name(de->d_name, s->ext, &num))
      continue;
    if (num >= SEG_MAX_COUNT) {
      /* SPEC SEG-2 */
      fprintf(stderr, "immudb: %s/%s: segment number out of range\n", s->dir,
              de->d_name);
      rc = IMMU_ECORRUPT;
      break;
    }
    if (n == cap) {
      size_t ncap = cap ? cap * 2 : 16;
      uint64_t *na = immu__realloc(a, ncap * sizeof *na);
      if (na == NULL) {
        rc = IMMU_ENOMEM;
        break;
      }
      a = na;
      cap = ncap;
    }
    a[n++] = num;
  }
  closedir(d);
  if (rc != 0) {
    immu__free(a);
    return rc;
  }
  if (n > 1)
    qsort(a, n, sizeof *a, cmp_u64);
  for (size_t i = 0; i < n; i++) {
    if (a[i] != i) {
      /* SPEC SEG-3: segments are numbered 0..N-1 without a gap. */
      fprintf(stderr, "immudb: missing segment file %s/%0*zu.%s\n", s->dir,
              SEG_NAME_DIGITS, i, s->ext);
      immu__free(a);
      return IMMU_ECORRUPT;
    }
  }
  *nums = a;
  *count = n;
  return 0;
}

/* Duplicates the parent directory of |path| ("." when it has none). */
static char *parent_of(const char *path) {
  size_t len = strlen(path);
  while (len > 1 && path[len - 1] == '/')
    len--;
  while (len > 0 && path[len - 1] != '/')
    len--;
  if (len == 0)
    return immu__strndup(".", 1);
  while (len > 1 && path[len - 1] == '/')
    len--;
  return immu__strndup(path, len);
}

int immu__seg_open(const immu_io *io, const char *dir, const char *ext,
                   uint64_t seg_size, int create, immu_seg **out) {
  immu_seg *s = NULL;
  uint64_t *nums = NULL;
  size_t count = 0;
  int rc;

  if (out == NULL)
    return IMMU_EINVAL;
  *out = NULL;
  if (io == NULL || dir == NULL || ext == NULL || dir[0] == '\0' ||
      ext[0] == '\0' || strchr(ext, '/') != NULL || seg_size == 0 ||
      seg_size >= SEG_MAX_OFF)
    return IMMU_EINVAL;

  s = immu__calloc(1, sizeof *s);
  if (s == NULL)
    return IMMU_ENOMEM;
  s->io = io;
  s->seg_size = seg_size;
  s->dirty_lo = SEG_CLEAN;
  atomic_init(&s->nseg, 0);
  atomic_init(&s->end, 0);
  atomic_init(&s->bytes, 0);
  s->dir = immu__strndup(dir, strlen(dir));
  s->ext = immu__strndup(ext, strlen(ext));
  s->path_cap = strlen(dir) + 1 + SEG_NAME_DIGITS + 1 + strlen(ext) + 1;
  s->path = immu__malloc(s->path_cap);
  s->chunks = immu__calloc(SEG_NCHUNKS, sizeof *s->chunks);
  if (s->dir == NULL || s->ext == NULL || s->path == NULL ||
      s->chunks == NULL) {
    rc = IMMU_ENOMEM;
    goto fail;
  }

  if (create) {
    rc = io->mkdir(io->ctx, dir, 0755);
    if (rc != 0)
      goto fail;
    char *parent = parent_of(dir);
    if (parent == NULL) {
      rc = IMMU_ENOMEM;
      goto fail;
    }
    rc = io->sync_dir(io->ctx, parent);
    immu__free(parent);
    if (rc != 0)
      goto fail;
  }

  rc = list_segments(s, &nums, &count);
  if (rc != 0)
    goto fail;

  uint64_t total = 0, last = 0;
  for (size_t i = 0; i < count; i++) {
    int fd;
    uint64_t size;
    rc = ensure_slot(s, i);
    if (rc != 0)
      goto fail;
    rc = io->open(io->ctx, seg_file(s, i), O_RDWR, 0, &fd);
    if (rc != 0)
      goto fail;
    seg_slot *sl = slot_at(s, i);
    atomic_store_explicit(&sl->fd, fd, memory_order_relaxed);
    atomic_store_explicit(&s->nseg, i + 1, memory_order_release);
    rc = io->fsize(io->ctx, fd, &size);
    if (rc != 0)
      goto fail;
    if (size >= SEG_MAX_OFF) {
      /* SPEC SEG-2: every offset must fit in 40 bits. */
      fprintf(stderr, "immudb: %s: segment larger than 2^40 bytes\n", s->path);
      rc = IMMU_ECORRUPT;
      goto fail;
    }
    atomic_store_explicit(&sl->size, size, memory_order_release);
    total += size;
    last = size;
  }
  immu__free(nums);
  nums = NULL;
  atomic_store_explicit(&s->bytes, total, memory_order_release);
  s->file_len = last;
  /* SPEC SEG-5: the end is the end of the last segment. */
  atomic_store_explicit(&s->end, count ? IMMU_SEGPOS(count - 1, last) : 0,
                        memory_order_release);
  *out = s;
  return 0;

fail:
  immu__free(nums);
  immu__seg_close(s);
  return rc;
}

void immu__seg_close(immu_seg *s) {
  if (s == NULL)
    return;
  if (s->chunks != NULL) {
    uint64_t n = atomic_load_explicit(&s->nseg, memory_order_acquire);
    if (n > 0 && s->prealloc && !s->poisoned) {
      /* SPEC SEG-9: a clean close leaves no zeros behind (best effort: a
       * reopen copes with them). */
      seg_slot *sl = slot_at(s, n - 1);
      uint64_t size = atomic_load_explicit(&sl->size, memory_order_relaxed);
      int fd = atomic_load_explicit(&sl->fd, memory_order_relaxed);
      if (s->file_len > size && fd >= 0)
        (void)s->io->ftruncate(s->io->ctx, fd, size);
    }
    for (uint64_t i = 0; i < n; i++) {
      int fd = atomic_load_explicit(&slot_at(s, i)->fd, memory_order_relaxed);
      if (fd >= 0)
        (void)s->io->close(s->io->ctx, fd);
    }
    for (size_t c = 0; c < SEG_NCHUNKS; c++)
      immu__free(s->chunks[c]);
    immu__free(s->chunks);
  }
  immu__free(s->dir);
  immu__free(s->ext);
  immu__free(s->path);
  immu__free(s);
}

uint64_t immu__seg_end(const immu_seg *s) {
  return atomic_load_explicit(&s->end, memory_order_acquire);
}

uint64_t immu__seg_bytes(const immu_seg *s) {
  return atomic_load_explicit(&s->bytes, memory_order_acquire);
}

uint64_t immu__seg_count(const immu_seg *s) {
  return atomic_load_explicit(&s->nseg, memory_order_acquire);
}

int immu__seg_size(const immu_seg *s, uint64_t seg, uint64_t *size) {
  uint64_t count = atomic_load_explicit(&s->nseg, memory_order_acquire);
  if (seg >= count)
    return IMMU_ERANGE;
  *size = atomic_load_explicit(&slot_at(s, seg)->size, memory_order_acquire);
  return 0;
}

/* Removes a segment file that was created by a failed append (SPEC SEG-7).
 * If it cannot be unlinked the handle is poisoned: the next append would
 * fail to create it again. */
static void drop_new_segment(immu_seg *s, uint64_t idx, int fd) {
  const immu_io *io = s->io;
  /* Empty it first: should the unlink fail, an empty last segment is still
   * a consistent state on disk (SPEC SEG-5). */
  (void)io->ftruncate(io->ctx, fd, 0);
  (void)io->close(io->ctx, fd);
  int rc = io->unlink(io->ctx, seg_file(s, idx));
  if (rc == 0)
    (void)io->sync_dir(io->ctx, s->dir);
  else if (rc != -ENOENT)
    s->poisoned = 1;
}

void immu__seg_set_prealloc(immu_seg *s, int on) {
  s->prealloc = on != 0;
}

/* SPEC SEG-9: after an append that ended at |end| in the last segment
 * (descriptor |fd|), writes zeros past the file's current length when the
 * end came within half a chunk of it. The next fdatasync allocates and
 * writes those blocks once; later appends then overwrite allocated blocks
 * inside the file's length, and their fdatasyncs have no metadata (block
 * bitmaps, extent tree, inode size) to write and wait for. A failure only
 * turns preallocation off for this segment: the zeros are cut off again. */
static void prealloc_ahead(immu_seg *s, int fd, uint64_t end) {
  const immu_io *io = s->io;
  /* from..to spans at most PRE_MAX + PRE_ZBUF bytes, cut at multiples of
   * PRE_ZBUF: one piece more than whole buffers, and one for rounding. */
  struct iovec iov[PRE_MAX / PRE_ZBUF + 2];
  uint64_t chunk = end / 8, from, to;
  int cnt = 0;

  if (!s->prealloc || s->pre_failed)
    return;
  if (chunk < PRE_MIN)
    chunk = PRE_MIN;
  if (chunk > PRE_MAX)
    chunk = PRE_MAX;
  if (end + chunk / 2 <= s->file_len)
    return;
  from = s->file_len > end ? s->file_len : end;
  to = (end + chunk + PRE_ZBUF - 1) / PRE_ZBUF * PRE_ZBUF;
  if (to > s->seg_size)
    to = s->seg_size; /* the next append starts a new segment anyway */
  if (to <= from)
    return;
  for (uint64_t o = from, next; o < to; o = next) {
    next = (o / PRE_ZBUF + 1) * PRE_ZBUF;
    if (next > to)
      next = to;
    assert(cnt < (int)(sizeof iov / sizeof iov[0]));
    iov[cnt].iov_base = (void *)(uintptr_t)pre_zeros;
    iov[cnt].iov_len = (size_t)(next - o);
    cnt++;
  }
  if (io->pwritev(io->ctx, fd, iov, cnt, from) == 0) {
    s->file_len = to;
    return;
  }
  s->pre_failed = 1;
  if (io->ftruncate(io->ctx, fd, from) == 0)
    s->file_len = from;
}

/* SPEC SEG-9: before the next segment is started, the last one is cut to
 * its size and synced, so that only the last segment ever has zeros past
 * its end. */
static int prealloc_trim(immu_seg *s, uint64_t idx) {
  const immu_io *io = s->io;
  seg_slot *sl = slot_at(s, idx);
  uint64_t size = atomic_load_explicit(&sl->size, memory_order_relaxed);
  int fd = atomic_load_explicit(&sl->fd, memory_order_relaxed);
  int rc;
  if (s->file_len <= size)
    return 0;
  if ((rc = io->ftruncate(io->ctx, fd, size)) != 0 ||
      (rc = io->fdatasync(io->ctx, fd)) != 0) {
    s->poisoned = 1; /* the sync failed, or the zeros stay: SPEC SEG-6 */
    return rc;
  }
  s->file_len = size;
  return 0;
}

int immu__seg_append(immu_seg *s, const struct iovec *iov, int iovcnt,
                     uint64_t *pos) {
  const immu_io *io = s->io;
  uint64_t len = 0;
  int rc;

  if (s->poisoned)
    return IMMU_EPOISONED;
  if (iovcnt < 0 || (iovcnt > 0 && iov == NULL))
    return IMMU_EINVAL;
  for (int i = 0; i < iovcnt; i++) {
    if (iov[i].iov_len >= SEG_MAX_OFF - len)
      return IMMU_ETOOLARGE; /* SPEC SEG-2 */
    len += iov[i].iov_len;
  }

  uint64_t n = atomic_load_explicit(&s->nseg, memory_order_relaxed);
  if (len == 0) {
    *pos = atomic_load_explicit(&s->end, memory_order_relaxed);
    return 0;
  }
  uint64_t cur =
      n ? atomic_load_explicit(&slot_at(s, n - 1)->size, memory_order_relaxed)
        : 0;
  /* SPEC SEG-4: an append goes into the last segment if it is empty or the
   * append fits in what is left of seg_size; otherwise it starts the next
   * segment (an append larger than seg_size thus gets a segment of its
   * own). */
  int fresh = n == 0 || (cur != 0 &&
                         (cur + len > s->seg_size || cur + len >= SEG_MAX_OFF));
  uint64_t idx, off;
  int fd;
  if (fresh) {
    if (n >= SEG_MAX_COUNT)
      return IMMU_ETOOLARGE;
    if (n > 0 && (rc = prealloc_trim(s, n - 1)) != 0)
      return rc;
    idx = n;
    off = 0;
    rc = ensure_slot(s, idx);
    if (rc != 0)
      return rc;
    rc = io->open(io->ctx, seg_file(s, idx), O_RDWR | O_CREAT | O_EXCL, 0644,
                  &fd);
    if (rc != 0)
      return rc;
    /* SPEC SEG-6: a new segment's directory entry is made durable. */
    rc = io->sync_dir(io->ctx, s->dir);
    if (rc != 0) {
      drop_new_segment(s, idx, fd);
      return rc;
    }
  } else {
    idx = n - 1;
    off = cur;
    fd = atomic_load_explicit(&slot_at(s, idx)->fd, memory_order_relaxed);
  }

  rc = io->pwritev(io->ctx, fd, iov, iovcnt, off);
  if (rc != 0) {
    /* SPEC SEG-7: a failed append leaves no bytes behind. */
    if (fresh) {
      drop_new_segment(s, idx, fd);
    } else if (io->ftruncate(io->ctx, fd, off) != 0) {
      s->poisoned = 1;
    } else {
      s->file_len = off;
    }
    return rc;
  }

  seg_slot *sl = slot_at(s, idx);
  if (fresh) {
    s->file_len = len;
    s->pre_failed = 0;
    atomic_store_explicit(&sl->fd, fd, memory_order_relaxed);
    atomic_store_explicit(&sl->size, len, memory_order_relaxed);
    atomic_store_explicit(&s->nseg, n + 1, memory_order_release);
  } else {
    atomic_store_explicit(&sl->size, off + len, memory_order_release);
  }
  atomic_fetch_add_explicit(&s->bytes, len, memory_order_release);
  atomic_store_explicit(&s->end, IMMU_SEGPOS(idx, off + len),
                        memory_order_release);
  if (idx < s->dirty_lo)
    s->dirty_lo = idx;
  if (off + len > s->file_len)
    s->file_len = off + len;
  prealloc_ahead(s, fd, off + len);
  *pos = IMMU_SEGPOS(idx, off);
  return 0;
}

int immu__seg_read(const immu_seg *s, uint64_t pos, void *buf, size_t n) {
  uint64_t seg = IMMU_SEGPOS_SEG(pos), off = IMMU_SEGPOS_OFF(pos);
  uint64_t count = atomic_load_explicit(&s->nseg, memory_order_acquire);
  size_t got;

  if (seg >= count)
    return IMMU_ERANGE;
  seg_slot *sl = slot_at(s, seg);
  uint64_t size = atomic_load_explicit(&sl->size, memory_order_acquire);
  if (off > size || n > size - off)
    return IMMU_ERANGE;
  if (n == 0)
    return 0;
  int fd = atomic_load_explicit(&sl->fd, memory_order_relaxed);
  int rc = s->io->pread(s->io->ctx, fd, buf, n, off, &got);
  if (rc != 0)
    return rc;
  /* The file is shorter than the bytes we wrote: changed behind our back. */
  return got == n ? 0 : IMMU_ECORRUPT;
}

/* fdatasync of segments [from, to). Poisons on failure: after a failed
 * fdatasync the kernel may have dropped the dirty pages, so a retry that
 * succeeds proves nothing. */
static int sync_range(immu_seg *s, uint64_t from, uint64_t to) {
  for (uint64_t i = from; i < to; i++) {
    int fd = atomic_load_explicit(&slot_at(s, i)->fd, memory_order_relaxed);
    int rc = s->io->fdatasync(s->io->ctx, fd);
    if (rc != 0) {
      s->poisoned = 1;
      return rc;
    }
  }
  return 0;
}

int immu__seg_sync_upto(immu_seg *s, uint64_t from, uint64_t to) {
  if (atomic_load(&s->poisoned))
    return IMMU_EPOISONED;
  if (to <= from)
    return 0;
  uint64_t first = IMMU_SEGPOS_SEG(from), last = IMMU_SEGPOS_SEG(to - 1);
  uint64_t n = atomic_load(&s->nseg);
  if (last >= n)
    return IMMU_ERANGE;
  for (uint64_t i = first; i <= last; i++) {
    int fd = atomic_load(&slot_at(s, i)->fd);
    int rc = s->io->fdatasync(s->io->ctx, fd);
    if (rc != 0) {
      atomic_store(&s->poisoned, 1);
      return rc;
    }
  }
  return 0;
}

int immu__seg_sync(immu_seg *s) {
  if (s->poisoned)
    return IMMU_EPOISONED;
  if (s->dirty_lo == SEG_CLEAN)
    return 0;
  uint64_t n = atomic_load_explicit(&s->nseg, memory_order_relaxed);
  int rc = sync_range(s, s->dirty_lo, n);
  if (rc != 0)
    return rc;
  s->dirty_lo = SEG_CLEAN;
  return 0;
}

int immu__seg_truncate(immu_seg *s, uint64_t pos) {
  const immu_io *io = s->io;
  uint64_t seg = IMMU_SEGPOS_SEG(pos), off = IMMU_SEGPOS_OFF(pos);
  uint64_t n = atomic_load_explicit(&s->nseg, memory_order_relaxed);
  int rc, unlinked = 0;

  if (s->poisoned)
    return IMMU_EPOISONED;
  if (pos > atomic_load_explicit(&s->end, memory_order_relaxed))
    return IMMU_ERANGE;
  if (n == 0)
    return 0; /* pos == 0 == end: nothing to drop */
  seg_slot *keep = slot_at(s, seg);
  uint64_t keep_size = atomic_load_explicit(&keep->size, memory_order_relaxed);
  if (off > keep_size)
    return IMMU_ERANGE;

  atomic_store_explicit(&s->end, pos, memory_order_release);
  /* SPEC SEG-8: later segments are removed from the last one down, so a
   * crash in between never leaves a gap. */
  for (uint64_t i = n - 1; i > seg; i--) {
    seg_slot *sl = slot_at(s, i);
    uint64_t size = atomic_load_explicit(&sl->size, memory_order_relaxed);
    atomic_store_explicit(&s->nseg, i, memory_order_release);
    int fd = atomic_exchange_explicit(&sl->fd, -1, memory_order_relaxed);
    atomic_store_explicit(&sl->size, 0, memory_order_relaxed);
    atomic_fetch_sub_explicit(&s->bytes, size, memory_order_release);
    /* The kept segment is now the last one; it was cut to its size when
     * the next one was started (SPEC SEG-9). */
    s->file_len = keep_size;
    (void)io->close(io->ctx, fd);
    rc = io->unlink(io->ctx, seg_file(s, i));
    if (rc != 0 && rc != -ENOENT)
      goto poison;
    unlinked = 1;
  }
  if (off < keep_size) {
    int fd = atomic_load_explicit(&keep->fd, memory_order_relaxed);
    rc = io->ftruncate(io->ctx, fd, off);
    if (rc != 0)
      goto poison;
    atomic_store_explicit(&keep->size, off, memory_order_release);
    atomic_fetch_sub_explicit(&s->bytes, keep_size - off, memory_order_release);
    s->file_len = off;
    if (seg < s->dirty_lo)
      s->dirty_lo = seg;
  }
  if (s->dirty_lo != SEG_CLEAN) {
    rc = sync_range(s, s->dirty_lo, seg + 1);
    if (rc != 0)
      return rc; /* sync_range poisoned */
    s->dirty_lo = SEG_CLEAN;
  }
  if (unlinked) {
    rc = io->sync_dir(io->ctx, s->dir);
    if (rc != 0)
      goto poison;
  }
  return 0;

poison:
  s->poisoned = 1;
  return rc;
}
