/* SPDX-License-Identifier: Apache-2.0 */
/*
 * backup, dump, restore and verify.
 *
 * Backup file (our own format; integers big-endian):
 *
 *   magic     8   "IMMUBKP1"
 *   hlen      u32 bytes of the header after this field, checksum included
 *   version   u32 1
 *   ntx       u64 N: the file holds txs 1..N, in order
 *   alh       32  Alh(N) (H("") when N = 0)
 *   created   i64 Unix seconds
 *   db        u16 length + bytes: the source database
 *   uuid      u16 length + bytes: the source server's immudb-uuid
 *   version   u16 length + bytes: the source server's version
 *   checksum  32  SHA-256 of every header byte before it
 *   frames    N tx record frames (store/txrec.h, docs/format.md LOG), the
 *             exact bytes exportTx returns; nothing after the last one
 *
 * Alh(N) authenticates every frame: each frame's hashes (hVal, entry
 * digests, Eh, Alh) are recomputed, each PrevAlh must be the Alh of the
 * frame before, each BlRoot the root of the ahtree over the Alhs of the
 * txs before (rebuilt here with immu_ahtree_*), and the last Alh must be
 * the header's. The header's other fields are only checksummed (they name
 * the source; they prove nothing).
 *
 * backup  takes the database's current state N (or --at-tx N), exports txs
 *         1..N with exportTx, verifies them as above while writing, and
 *         publishes the file atomically (temp file, fsync, rename).
 * dump    the same stream to a file or stdout ("-"), for pipes.
 * restore verifies the WHOLE file first; only then creates the target
 *         database and replicates every tx with replicateTx (which
 *         re-verifies and commits it unchanged: same ids, times, hashes).
 *         With --force the target may exist if its history is a prefix of
 *         the backup: the missing txs are appended.
 * verify  the same verification, on a database (through exportTx, since
 *         the server has no verify RPC) or on a backup file (--file).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "immuadmin/ia.h"
#include "immudb/err.h"
#include "schema.pb-c.h"
#include "store/txrec.h"

#define BK_MAGIC "IMMUBKP1"
#define BK_VERSION 1u
#define BK_FRAME_MAX ((uint32_t)256 << 20)
#define BK_HEADER_MAX 4096u

/* ------------------------------------------------------------------ */
/* Big-endian helpers                                                  */
/* ------------------------------------------------------------------ */

static void put16(uint8_t *p, uint16_t v) {
  p[0] = (uint8_t)(v >> 8);
  p[1] = (uint8_t)v;
}
static void put32(uint8_t *p, uint32_t v) {
  for (int i = 0; i < 4; i++)
    p[i] = (uint8_t)(v >> (24 - 8 * i));
}
static void put64(uint8_t *p, uint64_t v) {
  for (int i = 0; i < 8; i++)
    p[i] = (uint8_t)(v >> (56 - 8 * i));
}
static uint16_t get16(const uint8_t *p) {
  return (uint16_t)((unsigned)p[0] << 8 | p[1]);
}
static uint32_t get32(const uint8_t *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 |
         p[3];
}
static uint64_t get64(const uint8_t *p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; i++)
    v = v << 8 | p[i];
  return v;
}

/* ------------------------------------------------------------------ */
/* Header                                                              */
/* ------------------------------------------------------------------ */

typedef struct bk_header {
  uint64_t ntx;
  immu_digest alh;
  int64_t created;
  char db[256];
  char uuid[129];
  char version[129];
} bk_header;

/* Serialises |h| into |buf| (BK_HEADER_MAX bytes); returns its length. */
static size_t header_encode(const bk_header *h, uint8_t *buf) {
  size_t n = 0;
  memcpy(buf, BK_MAGIC, 8);
  n = 12; /* hlen filled below */
  put32(buf + n, BK_VERSION);
  n += 4;
  put64(buf + n, h->ntx);
  n += 8;
  memcpy(buf + n, h->alh.b, IMMU_DIGEST_LEN);
  n += IMMU_DIGEST_LEN;
  put64(buf + n, (uint64_t)h->created);
  n += 8;
  const char *strs[] = {h->db, h->uuid, h->version};
  for (size_t i = 0; i < 3; i++) {
    size_t l = strlen(strs[i]);
    put16(buf + n, (uint16_t)l);
    memcpy(buf + n + 2, strs[i], l);
    n += 2 + l;
  }
  put32(buf + 8, (uint32_t)(n - 12 + IMMU_DIGEST_LEN));
  immu_digest sum;
  immu_sha256(buf, n, &sum);
  memcpy(buf + n, sum.b, IMMU_DIGEST_LEN);
  return n + IMMU_DIGEST_LEN;
}

/* Reads and checks the header. Returns 0 or IMMU_ECORRUPT / -errno with a
 * message in |err|. */
static int header_read(FILE *fp, bk_header *h, char *err, size_t el) {
  uint8_t buf[BK_HEADER_MAX];
  memset(h, 0, sizeof *h);
  if (fread(buf, 1, 12, fp) != 12) {
    snprintf(err, el, "%s",
             ferror(fp) ? strerror(errno)
                        : "the file is too short to be a "
                          "backup");
    return ferror(fp) ? -EIO : IMMU_ECORRUPT;
  }
  if (memcmp(buf, BK_MAGIC, 8) != 0) {
    snprintf(err, el, "not an immuadmin backup file (bad magic)");
    return IMMU_ECORRUPT;
  }
  uint32_t hlen = get32(buf + 8);
  if (hlen < 4 + 8 + 32 + 8 + 6 + 32 || hlen > BK_HEADER_MAX - 12) {
    snprintf(err, el, "the backup header is damaged (length %u)", hlen);
    return IMMU_ECORRUPT;
  }
  if (fread(buf + 12, 1, hlen, fp) != hlen) {
    snprintf(err, el, "the backup header is truncated");
    return IMMU_ECORRUPT;
  }
  size_t end = 12 + (size_t)hlen - IMMU_DIGEST_LEN;
  immu_digest sum;
  immu_sha256(buf, end, &sum);
  if (memcmp(sum.b, buf + end, IMMU_DIGEST_LEN) != 0) {
    snprintf(err, el, "the backup header is damaged (checksum mismatch)");
    return IMMU_ECORRUPT;
  }
  size_t n = 12;
  uint32_t ver = get32(buf + n);
  n += 4;
  if (ver != BK_VERSION) {
    snprintf(err, el, "unsupported backup format version %u", ver);
    return IMMU_ECORRUPT;
  }
  h->ntx = get64(buf + n);
  n += 8;
  memcpy(h->alh.b, buf + n, IMMU_DIGEST_LEN);
  n += IMMU_DIGEST_LEN;
  h->created = (int64_t)get64(buf + n);
  n += 8;
  char *dst[] = {h->db, h->uuid, h->version};
  size_t cap[] = {sizeof h->db, sizeof h->uuid, sizeof h->version};
  for (size_t i = 0; i < 3; i++) {
    if (n + 2 > end) {
      snprintf(err, el, "the backup header is damaged");
      return IMMU_ECORRUPT;
    }
    size_t l = get16(buf + n);
    if (n + 2 + l > end || l >= cap[i]) {
      snprintf(err, el, "the backup header is damaged");
      return IMMU_ECORRUPT;
    }
    memcpy(dst[i], buf + n + 2, l);
    dst[i][l] = '\0';
    n += 2 + l;
  }
  if (n != end) {
    snprintf(err, el, "the backup header is damaged");
    return IMMU_ECORRUPT;
  }
  return 0;
}

/* ------------------------------------------------------------------ */
/* The chain verifier                                                  */
/* ------------------------------------------------------------------ */

/* The ahtree's nodes live in an unlinked temporary file, so memory stays
 * constant however long the chain. */
static int nodes_read(void *ctx, uint64_t pos, size_t n, immu_digest *out) {
  int fd = fileno((FILE *)ctx);
  size_t want = n * IMMU_DIGEST_LEN;
  ssize_t got = pread(fd, out, want, (off_t)(pos * IMMU_DIGEST_LEN));
  if (got < 0)
    return -errno;
  return (size_t)got == want ? 0 : -EIO;
}

static int nodes_append(void *ctx, uint64_t pos, const immu_digest *nodes,
                        size_t n) {
  int fd = fileno((FILE *)ctx);
  size_t want = n * IMMU_DIGEST_LEN;
  ssize_t got = pwrite(fd, nodes, want, (off_t)(pos * IMMU_DIGEST_LEN));
  if (got < 0)
    return -errno;
  return (size_t)got == want ? 0 : -EIO;
}

typedef struct chain {
  uint64_t next;    /* id the next frame must have */
  immu_digest prev; /* Alh(next - 1) */
  uint64_t last_bl; /* BlTxID of the previous tx */
  FILE *nodes;
  immu_ahtree *tree;
  int strict; /* BlTxID must be id - 1 (what replicateTx requires) */
  /* Largest key, value and entry count seen (restore's hints). */
  size_t max_klen, max_vlen, max_entries;
} chain;

static int chain_init(chain *ch, int strict, char *err, size_t el) {
  memset(ch, 0, sizeof *ch);
  ch->next = 1;
  ch->prev = immu_empty_digest;
  ch->strict = strict;
  ch->nodes = tmpfile();
  if (ch->nodes == NULL) {
    snprintf(err, el, "cannot create a temporary file: %s", strerror(errno));
    return -errno;
  }
  immu_ahtree_store st = {ch->nodes, nodes_read, nodes_append};
  int rc = immu_ahtree_open(&st, 0, &ch->tree);
  if (rc != 0) {
    fclose(ch->nodes);
    ch->nodes = NULL;
    snprintf(err, el, "cannot build the ahtree: %s", immu_strerror(rc));
  }
  return rc;
}

static void chain_free(chain *ch) {
  immu_ahtree_free(ch->tree);
  if (ch->nodes != NULL)
    fclose(ch->nodes);
  memset(ch, 0, sizeof *ch);
}

/* Verifies the frame of tx ch->next and advances. Returns 0,
 * IMMU_ECORRUPT (message names the tx and the defect) or a store error. */
static int chain_feed(chain *ch, const uint8_t *f, size_t len, char *err,
                      size_t el) {
  immu_txrec r;
  uint64_t id = ch->next;
  int rc;

  memset(&r, 0, sizeof r);
  rc = immu__txrec_decode(f, len, &r);
  if (rc == IMMU_ENOMEM) {
    snprintf(err, el, "out of memory");
    return rc;
  }
  if (rc != 0) {
    snprintf(err, el,
             "tx %" PRIu64 ": the record does not decode (bad checksum, "
             "length or field)",
             id);
    return IMMU_ECORRUPT;
  }
  if (r.hdr.id != id) {
    snprintf(err, el, "expected tx %" PRIu64 ", found tx %" PRIu64, id,
             r.hdr.id);
    rc = IMMU_ECORRUPT;
    goto out;
  }
  if (immu__txrec_check_hashes(&r) != 0) {
    snprintf(err, el,
             "tx %" PRIu64 ": the values, entries or header do not match "
             "the tx's hashes (hVal, Eh, Alh)",
             id);
    rc = IMMU_ECORRUPT;
    goto out;
  }
  if (!immu_digest_eq(&r.hdr.prev_alh, &ch->prev)) {
    snprintf(err, el,
             "tx %" PRIu64 ": PrevAlh does not match the Alh of tx %" PRIu64
             " (the chain is broken)",
             id, id - 1);
    rc = IMMU_ECORRUPT;
    goto out;
  }
  uint64_t bl = r.hdr.bl_tx_id;
  if (bl >= id || bl < ch->last_bl || (ch->strict && bl != id - 1)) {
    snprintf(err, el, "tx %" PRIu64 ": BlTxID %" PRIu64 " is not valid%s", id,
             bl, ch->strict ? " (must be the previous tx)" : "");
    rc = IMMU_ECORRUPT;
    goto out;
  }
  if (bl == 0) {
    if (!immu_digest_eq(&r.hdr.bl_root, &immu_zero_digest)) {
      snprintf(err, el, "tx %" PRIu64 ": BlRoot must be zero with BlTxID 0",
               id);
      rc = IMMU_ECORRUPT;
      goto out;
    }
  } else {
    immu_digest root;
    if ((rc = immu_ahtree_root_at(ch->tree, bl, &root)) != 0) {
      snprintf(err, el, "tx %" PRIu64 ": cannot compute the ahtree root: %s",
               id, immu_strerror(rc));
      goto out;
    }
    if (!immu_digest_eq(&root, &r.hdr.bl_root)) {
      snprintf(err, el,
               "tx %" PRIu64 ": BlRoot is not the root of the ahtree over "
               "txs 1..%" PRIu64,
               id, bl);
      rc = IMMU_ECORRUPT;
      goto out;
    }
  }
  if ((rc = immu_ahtree_append(ch->tree, r.alh.b, IMMU_DIGEST_LEN, NULL)) !=
      0) {
    snprintf(err, el, "tx %" PRIu64 ": cannot extend the ahtree: %s", id,
             immu_strerror(rc));
    goto out;
  }
  for (uint32_t i = 0; i < r.hdr.nentries; i++) {
    if (r.entries[i].klen > ch->max_klen)
      ch->max_klen = r.entries[i].klen;
    if (r.entries[i].vlen > ch->max_vlen)
      ch->max_vlen = r.entries[i].vlen;
  }
  if (r.hdr.nentries > ch->max_entries)
    ch->max_entries = r.hdr.nentries;
  ch->prev = r.alh;
  ch->last_bl = bl;
  ch->next++;
  rc = 0;
out:
  immu__txrec_free(&r);
  return rc;
}

/* ------------------------------------------------------------------ */
/* Reading frames from a file                                          */
/* ------------------------------------------------------------------ */

typedef struct frame_buf {
  uint8_t *p;
  size_t cap;
} frame_buf;

/* Reads the next frame. Returns 1 with *len set, 0 at a clean EOF, or
 * IMMU_ECORRUPT / -EIO with a message. */
static int frame_next(FILE *fp, frame_buf *b, size_t *len, uint64_t id,
                      char *err, size_t el) {
  uint8_t head[IMMU_TXREC_FRAME];
  size_t got = fread(head, 1, sizeof head, fp);
  if (got == 0 && feof(fp))
    return 0;
  if (got != sizeof head) {
    if (ferror(fp)) {
      snprintf(err, el, "read error: %s", strerror(errno));
      return -EIO;
    }
    snprintf(err, el, "tx %" PRIu64 ": the file ends inside a record", id);
    return IMMU_ECORRUPT;
  }
  size_t flen;
  if (immu__txrec_frame_len(head, sizeof head, BK_FRAME_MAX, &flen) != 0) {
    snprintf(err, el, "tx %" PRIu64 ": not a tx record (bad frame header)", id);
    return IMMU_ECORRUPT;
  }
  if (flen > b->cap) {
    b->p = ia_xrealloc(b->p, flen);
    b->cap = flen;
  }
  memcpy(b->p, head, sizeof head);
  if (fread(b->p + sizeof head, 1, flen - sizeof head, fp) !=
      flen - sizeof head) {
    if (ferror(fp)) {
      snprintf(err, el, "read error: %s", strerror(errno));
      return -EIO;
    }
    snprintf(err, el, "tx %" PRIu64 ": the file ends inside a record", id);
    return IMMU_ECORRUPT;
  }
  *len = flen;
  return 1;
}

/* Pass 1 of restore / verify --file: verifies every frame after the
 * header, that there are exactly h->ntx of them and that the last Alh is
 * the header's. Returns 0 or an error with a message. */
static int verify_file_frames(FILE *fp, const bk_header *h, int strict,
                              int progress, size_t maxima[3], char *err,
                              size_t el) {
  chain ch;
  frame_buf fb = {NULL, 0};
  ia_progress pg;
  size_t len;
  int rc;

  if ((rc = chain_init(&ch, strict, err, el)) != 0)
    return rc;
  ia_progress_start(&pg, progress, "verifying", h->ntx);
  for (;;) {
    rc = frame_next(fp, &fb, &len, ch.next, err, el);
    if (rc <= 0)
      break;
    if (ch.next > h->ntx) {
      snprintf(err, el,
               "the file holds more txs than its header says (%" PRIu64 ")",
               h->ntx);
      rc = IMMU_ECORRUPT;
      break;
    }
    if ((rc = chain_feed(&ch, fb.p, len, err, el)) != 0)
      break;
    ia_progress_update(&pg, ch.next - 1);
  }
  ia_progress_end(&pg);
  if (rc == 0 && ch.next - 1 != h->ntx) {
    snprintf(err, el,
             "the file is truncated: %" PRIu64 " of %" PRIu64 " txs present",
             ch.next - 1, h->ntx);
    rc = IMMU_ECORRUPT;
  }
  if (rc == 0 && !immu_digest_eq(&ch.prev, &h->alh)) {
    snprintf(err, el,
             "the Alh of the last tx does not match the header's Alh(%" PRIu64
             ")",
             h->ntx);
    rc = IMMU_ECORRUPT;
  }
  if (maxima != NULL) {
    maxima[0] = ch.max_klen;
    maxima[1] = ch.max_vlen;
    maxima[2] = ch.max_entries;
  }
  free(fb.p);
  chain_free(&ch);
  return rc;
}

/* ------------------------------------------------------------------ */
/* Export side (backup, dump, verify of a database)                    */
/* ------------------------------------------------------------------ */

/* Session with database |db| selected. Returns 0 or an exit status. */
static int open_db(ia_conn *c, const ia_opts *o, char *db, size_t cap) {
  int ex = ia_open_session(c, o);
  if (ex != 0)
    return ex;
  snprintf(db, cap, "%s",
           o->database ? o->database : (c->db[0] ? c->db : IA_DEFAULT_DB));
  int rc = ia_use_database(c, db);
  if (rc != 0) {
    ia_conn_error(c, "cannot use database '%s'", db);
    ia_close(c);
    return IA_EXIT_FAIL;
  }
  return 0;
}

static int write_all(FILE *fp, const void *p, size_t n) {
  return n == 0 || fwrite(p, 1, n, fp) == n ? 0 : -1;
}

/* Export pipeline: PF_WORKERS threads keep up to PF_WINDOW exportTx calls
 * in flight on the (multiplexed) connection, ahead of the consumer, which
 * takes the txs strictly in order. Each worker uses a copy of the
 * connection struct (shared transport and token, its own error fields). */
#define PF_WORKERS 4
#define PF_WINDOW 64

typedef struct pf_slot {
  uint64_t id; /* 0 = empty */
  uint8_t *f;
  size_t len;
  int rc;
  char err[IA_ERRLEN];
} pf_slot;

typedef struct prefetch {
  uint64_t n;        /* last id */
  uint64_t next;     /* next id to claim */
  uint64_t consumed; /* ids up to this one are taken */
  int stop;
  pf_slot slots[PF_WINDOW];
  pthread_mutex_t mu;
  pthread_cond_t cv;
} prefetch;

typedef struct pf_worker_arg {
  prefetch *p;
  ia_conn local; /* a copy: transport and token borrowed, read-only */
} pf_worker_arg;

static void *pf_worker(void *arg) {
  pf_worker_arg *wa = arg;
  prefetch *p = wa->p;
  ia_conn *local = &wa->local;
  pthread_mutex_lock(&p->mu);
  for (;;) {
    while (!p->stop && p->next <= p->n && p->next > p->consumed + PF_WINDOW)
      pthread_cond_wait(&p->cv, &p->mu);
    if (p->stop || p->next > p->n)
      break;
    uint64_t id = p->next++;
    pthread_mutex_unlock(&p->mu);
    uint8_t *f = NULL;
    size_t len = 0;
    int rc = ia_export_tx(local, id, &f, &len);
    pthread_mutex_lock(&p->mu);
    pf_slot *s = &p->slots[id % PF_WINDOW];
    s->id = id;
    s->f = f;
    s->len = len;
    s->rc = rc;
    if (rc != 0)
      snprintf(s->err, sizeof s->err, "%s", local->err);
    pthread_cond_broadcast(&p->cv);
    if (rc != 0)
      break; /* the consumer stops at this tx */
  }
  pthread_mutex_unlock(&p->mu);
  return NULL;
}

/* Exports txs 1..h->ntx of the selected database, verifying each, to |out|
 * (NULL: verify only). On failure prints the reason; returns an exit
 * status. *bytes (may be NULL) = bytes written. */
static int export_range(ia_conn *c, const bk_header *h, FILE *out,
                        const char *label, int progress, const char *what,
                        uint64_t *bytes) {
  chain ch;
  ia_progress pg;
  char err[IA_ERRLEN];
  uint64_t total = 0;
  int rc, ex = IA_EXIT_OK;
  prefetch *p;
  pthread_t th[PF_WORKERS];
  pf_worker_arg *wa;
  size_t nth = 0;

  if ((rc = chain_init(&ch, 0, err, sizeof err)) != 0) {
    ia_errorf("%s", err);
    return IA_EXIT_FAIL;
  }
  p = ia_xmalloc(sizeof *p);
  memset(p, 0, sizeof *p);
  p->n = h->ntx;
  p->next = 1;
  pthread_mutex_init(&p->mu, NULL);
  pthread_cond_init(&p->cv, NULL);
  wa = ia_xmalloc(PF_WORKERS * sizeof *wa);
  for (size_t i = 0; i < PF_WORKERS; i++) {
    wa[i].p = p;
    wa[i].local = *c; /* copied before any thread runs */
  }
  for (; nth < PF_WORKERS && nth < h->ntx; nth++)
    if (pthread_create(&th[nth], NULL, pf_worker, &wa[nth]) != 0)
      break;
  if (nth == 0 && h->ntx > 0) {
    ia_errorf("cannot start a thread");
    ex = IA_EXIT_FAIL;
    goto out;
  }
  ia_progress_start(&pg, progress, label, h->ntx);
  for (uint64_t id = 1; id <= h->ntx; id++) {
    pf_slot *s = &p->slots[id % PF_WINDOW];
    pthread_mutex_lock(&p->mu);
    while (s->id != id)
      pthread_cond_wait(&p->cv, &p->mu);
    uint8_t *f = s->f;
    size_t len = s->len;
    rc = s->rc;
    if (rc != 0)
      snprintf(c->err, sizeof c->err, "%s", s->err);
    s->id = 0;
    s->f = NULL;
    p->consumed = id;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    if (rc != 0) {
      ia_progress_end(&pg);
      if (rc == IMMU_ECORRUPT)
        ia_errorf("%s FAILED at tx %" PRIu64 ": the server reports: %s", what,
                  id, c->err);
      else
        ia_conn_error(c, "%s: exportTx of tx %" PRIu64 " failed", what, id);
      ex = ia_exit_for(rc);
      goto out;
    }
    rc = chain_feed(&ch, f, len, err, sizeof err);
    if (rc == 0 && out != NULL && write_all(out, f, len) != 0) {
      free(f);
      ia_progress_end(&pg);
      ia_errorf("%s: write error: %s", what, strerror(errno));
      ex = IA_EXIT_FAIL;
      goto out;
    }
    free(f);
    total += len;
    if (rc != 0) {
      ia_progress_end(&pg);
      ia_errorf("%s FAILED at %s", what, err);
      ex = ia_exit_for(rc);
      goto out;
    }
    ia_progress_update(&pg, id);
  }
  ia_progress_end(&pg);
  if (!immu_digest_eq(&ch.prev, &h->alh)) {
    ia_errorf("%s FAILED: the Alh of tx %" PRIu64
              " does not match the server's state",
              what, h->ntx);
    ex = IA_EXIT_INTEGRITY;
  }
out:
  pthread_mutex_lock(&p->mu);
  p->stop = 1;
  pthread_cond_broadcast(&p->cv);
  pthread_mutex_unlock(&p->mu);
  for (size_t i = 0; i < nth; i++)
    pthread_join(th[i], NULL);
  free(wa);
  for (size_t i = 0; i < PF_WINDOW; i++)
    free(p->slots[i].f);
  pthread_mutex_destroy(&p->mu);
  pthread_cond_destroy(&p->cv);
  free(p);
  if (bytes != NULL)
    *bytes = total;
  chain_free(&ch);
  return ex;
}

/* Fills |h| for database |db|: N = --at-tx or the current state. */
static int take_state(ia_conn *c, const ia_opts *o, const char *db,
                      bk_header *h) {
  uint64_t n;
  immu_digest alh;
  char version[129] = "";
  int rc;

  memset(h, 0, sizeof *h);
  if ((rc = ia_health(c, NULL, version, sizeof version)) != 0) {
    ia_conn_error(c, "health check failed");
    return ia_exit_for(rc);
  }
  if ((rc = ia_current_state(c, &n, &alh)) != 0) {
    ia_conn_error(c, "cannot read the state of database '%s'", db);
    return ia_exit_for(rc);
  }
  if (o->at_tx > 0) {
    if (o->at_tx > n) {
      ia_errorf("--at-tx %" PRIu64 " is beyond the last tx of database '%s' "
                "(%" PRIu64 ")",
                o->at_tx, db, n);
      return IA_EXIT_FAIL;
    }
    if (o->at_tx < n) {
      /* Alh(at_tx) from the tx itself; the chain check proves it. */
      uint8_t *f = NULL;
      size_t len = 0;
      immu_txrec r;
      if ((rc = ia_export_tx(c, o->at_tx, &f, &len)) != 0) {
        ia_conn_error(c, "exportTx of tx %" PRIu64 " failed", o->at_tx);
        return ia_exit_for(rc);
      }
      if (immu__txrec_decode(f, len, &r) != 0) {
        free(f);
        ia_errorf("tx %" PRIu64 " does not decode", o->at_tx);
        return IA_EXIT_INTEGRITY;
      }
      alh = r.alh;
      immu__txrec_free(&r);
      free(f);
    }
    n = o->at_tx;
  }
  h->ntx = n;
  h->alh = n ? alh : immu_empty_digest;
  h->created = (int64_t)time(NULL);
  snprintf(h->db, sizeof h->db, "%s", db);
  snprintf(h->uuid, sizeof h->uuid, "%s", c->uuid);
  snprintf(h->version, sizeof h->version, "%s", version);
  return 0;
}

static int fsync_dir_of(const char *path) {
  char *d = ia_xstrdup(path);
  char *slash = strrchr(d, '/');
  const char *dir = ".";
  if (slash == d)
    dir = "/";
  else if (slash != NULL) {
    *slash = '\0';
    dir = d;
  }
  int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  int rc = 0;
  if (fd >= 0) {
    rc = fsync(fd);
    close(fd);
  }
  free(d);
  return rc;
}

static int backup_or_dump(const ia_opts *o, int argc, int is_dump) {
  const char *cmd = is_dump ? "dump" : "backup";
  ia_conn c;
  bk_header h;
  char db[256], path[4096], tmp[4200], hex[65], size[32];
  uint8_t hbuf[BK_HEADER_MAX];
  FILE *out = NULL;
  int to_stdout = 0, direct = 1, ex;
  uint64_t bytes = 0;

  if (argc != 0) {
    ia_errorf("usage: immuadmin %s [-d DATABASE] [-o FILE] [--at-tx N]%s", cmd,
              is_dump ? "" : " [--force]");
    return IA_EXIT_USAGE;
  }
  if ((ex = open_db(&c, o, db, sizeof db)) != 0)
    return ex;
  if ((ex = take_state(&c, o, db, &h)) != 0)
    goto out_conn;

  if (is_dump && (o->output == NULL || strcmp(o->output, "-") == 0)) {
    to_stdout = 1;
    out = stdout;
    snprintf(path, sizeof path, "(stdout)");
  } else {
    if (o->output != NULL)
      snprintf(path, sizeof path, "%s", o->output);
    else
      snprintf(path, sizeof path, "%s-%" PRIu64 ".immubak", db, h.ntx);
    struct stat st;
    int exists = stat(path, &st) == 0;
    if (!is_dump && !o->force && exists && S_ISREG(st.st_mode)) {
      ia_errorf("%s already exists (use --force to overwrite it)", path);
      ex = IA_EXIT_FAIL;
      goto out_conn;
    }
    /* A backup is published atomically (temp file + rename), unless the
     * target is not a regular file (/dev/null, a FIFO): then it is written
     * in place, as a dump always is. */
    direct = is_dump || (exists && !S_ISREG(st.st_mode));
    if (direct)
      snprintf(tmp, sizeof tmp, "%s", path);
    else
      snprintf(tmp, sizeof tmp, "%s.tmp-%ld", path, (long)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0 || (out = fdopen(fd, "w")) == NULL) {
      ia_errorf("cannot create %s: %s", tmp, strerror(errno));
      if (fd >= 0)
        close(fd);
      ex = IA_EXIT_FAIL;
      goto out_conn;
    }
  }
  setvbuf(out, NULL, _IOFBF, 1 << 20);
  size_t hl = header_encode(&h, hbuf);
  if (write_all(out, hbuf, hl) != 0) {
    ia_errorf("write error on %s: %s", path, strerror(errno));
    ex = IA_EXIT_FAIL;
    goto out_file;
  }
  int progress = !o->no_progress && !to_stdout && isatty(STDOUT_FILENO);
  char what[300];
  snprintf(what, sizeof what, "%s of database '%s'", cmd, db);
  ex = export_range(&c, &h, out, is_dump ? "dumping" : "backing up", progress,
                    what, &bytes);
  if (ex != 0)
    goto out_file;
  if (fflush(out) != 0 ||
      (!to_stdout && fsync(fileno(out)) != 0 && errno != EINVAL)) {
    ia_errorf("write error on %s: %s", path, strerror(errno));
    ex = IA_EXIT_FAIL;
    goto out_file;
  }
  if (!to_stdout) {
    int bad = fclose(out) != 0;
    out = NULL;
    if (bad || (!direct && rename(tmp, path) != 0)) {
      ia_errorf("cannot write %s: %s", path, strerror(errno));
      ex = IA_EXIT_FAIL;
      goto out_file;
    }
    if (!direct)
      fsync_dir_of(path);
  }
  immu_digest_hex(&h.alh, hex);
  ia_bytes(bytes + hl, size, sizeof size);
  FILE *msg = to_stdout ? stderr : stdout;
  fprintf(msg,
          "%s of database '%s' complete: %" PRIu64 " txs verified, written to "
          "%s (%s)\nAlh(%" PRIu64 ") = %s\n",
          cmd, db, h.ntx, path, size, h.ntx, hex);
  ex = IA_EXIT_OK;
out_file:
  if (out != NULL && !to_stdout)
    fclose(out);
  if (ex != 0 && !to_stdout && (!direct || is_dump)) {
    struct stat st;
    if (stat(tmp, &st) == 0 && S_ISREG(st.st_mode))
      unlink(tmp);
  }
out_conn:
  ia_close(&c);
  return ex;
}

int ia_cmd_backup(const ia_opts *o, int argc, char **argv) {
  (void)argv;
  return backup_or_dump(o, argc, 0);
}

int ia_cmd_dump(const ia_opts *o, int argc, char **argv) {
  (void)argv;
  return backup_or_dump(o, argc, 1);
}

/* ------------------------------------------------------------------ */
/* restore                                                             */
/* ------------------------------------------------------------------ */

/* Opens a backup for reading; "-" copies stdin into a temporary file
 * (restore reads the file twice). NULL with a message on failure. */
static FILE *open_backup(const char *path) {
  if (strcmp(path, "-") != 0) {
    FILE *fp = fopen(path, "rb");
    if (fp == NULL)
      ia_errorf("cannot open %s: %s", path, strerror(errno));
    else
      setvbuf(fp, NULL, _IOFBF, 1 << 20);
    return fp;
  }
  FILE *tmp = tmpfile();
  if (tmp == NULL) {
    ia_errorf("cannot create a temporary file: %s", strerror(errno));
    return NULL;
  }
  char buf[1 << 16];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, stdin)) > 0)
    if (fwrite(buf, 1, n, tmp) != n) {
      ia_errorf("cannot spool stdin: %s", strerror(errno));
      fclose(tmp);
      return NULL;
    }
  if (ferror(stdin) || fflush(tmp) != 0) {
    ia_errorf("cannot read stdin: %s", strerror(errno));
    fclose(tmp);
    return NULL;
  }
  rewind(tmp);
  return tmp;
}

/* Pass 2: replicates txs first..h->ntx (skipping the |have| txs the target
 * already holds, after checking that tx |have| is the backup's). */
static int replicate_all(ia_conn *c, FILE *fp, const bk_header *h,
                         uint64_t have, const immu_digest *have_alh,
                         const char *target, int progress) {
  frame_buf fb = {NULL, 0};
  ia_progress pg;
  char err[IA_ERRLEN];
  immu_digest prev = immu_empty_digest;
  size_t len;
  int rc, ex = IA_EXIT_OK;

  ia_progress_start(&pg, progress, "restoring", h->ntx);
  for (uint64_t id = 1; id <= h->ntx; id++) {
    rc = frame_next(fp, &fb, &len, id, err, sizeof err);
    if (rc <= 0) {
      ia_progress_end(&pg);
      ia_errorf("the backup file changed while restoring: %s",
                rc == 0 ? "it ends early" : err);
      ex = IA_EXIT_INTEGRITY;
      goto out;
    }
    /* The file was verified in pass 1; re-check what links it (the
     * server re-hashes every tx before committing it). */
    immu_txrec r;
    if (immu__txrec_decode(fb.p, len, &r) != 0 || r.hdr.id != id ||
        !immu_digest_eq(&r.hdr.prev_alh, &prev)) {
      immu__txrec_free(&r); /* decode zeroes |r| first: always safe */
      ia_progress_end(&pg);
      ia_errorf("the backup file changed while restoring (tx %" PRIu64 ")", id);
      ex = IA_EXIT_INTEGRITY;
      goto out;
    }
    prev = r.alh;
    immu__txrec_free(&r);
    if (id < have)
      continue;
    if (id == have) {
      if (!immu_digest_eq(&prev, have_alh)) {
        ia_progress_end(&pg);
        ia_errorf("database '%s' has a different history: its tx %" PRIu64
                  " is not the backup's; nothing was restored",
                  target, have);
        ex = IA_EXIT_FAIL;
        goto out;
      }
      continue;
    }
    uint64_t got = 0;
    rc = ia_replicate_tx(c, fb.p, len, &got);
    if (rc != 0) {
      ia_progress_end(&pg);
      ia_conn_error(c,
                    "restore into '%s' stopped at tx %" PRIu64
                    " (txs 1..%" PRIu64 " are restored)",
                    target, id, id - 1);
      ex = ia_exit_for(rc);
      goto out;
    }
    if (got != id) {
      ia_progress_end(&pg);
      ia_errorf("the server committed tx %" PRIu64 " for tx %" PRIu64, got, id);
      ex = IA_EXIT_FAIL;
      goto out;
    }
    ia_progress_update(&pg, id);
  }
  ia_progress_end(&pg);
out:
  free(fb.p);
  return ex;
}

/* Refuses a target whose limits are below what the backup needs (keys,
 * values and entries as stored, which is what replicateTx checks); a
 * database this restore just created is deleted again. Returns 0 or an
 * exit status. */
static int check_limits(ia_conn *c, const char *target, const size_t maxima[3],
                        int created) {
  Immudb__Schema__DatabaseSettingsRequest req =
      IMMUDB__SCHEMA__DATABASE_SETTINGS_REQUEST__INIT;
  Immudb__Schema__DatabaseSettingsResponse *r = NULL;
  int rc = ia_call(c, "GetDatabaseSettingsV2", &req.base,
                   &immudb__schema__database_settings_response__descriptor,
                   (ProtobufCMessage **)&r);
  if (rc == IMMU_EUNSUPPORTED)
    return 0; /* replicateTx will tell */
  if (rc != 0) {
    ia_conn_error(c, "cannot read the settings of database '%s'", target);
    return ia_exit_for(rc);
  }
  const Immudb__Schema__DatabaseNullableSettings *st = r->settings;
  const char *what = NULL;
  size_t need = 0, have = 0;
  if (st != NULL && st->maxkeylen && maxima[0] > st->maxkeylen->value) {
    what = "--max-key-len";
    need = maxima[0];
    have = st->maxkeylen->value;
  } else if (st != NULL && st->maxvaluelen &&
             maxima[1] > st->maxvaluelen->value) {
    what = "--max-value-len";
    need = maxima[1];
    have = st->maxvaluelen->value;
  } else if (st != NULL && st->maxtxentries &&
             maxima[2] > st->maxtxentries->value) {
    what = "--max-tx-entries";
    need = maxima[2];
    have = st->maxtxentries->value;
  }
  protobuf_c_message_free_unpacked(&r->base, NULL);
  if (what == NULL)
    return 0;
  if (created) {
    Immudb__Schema__UnloadDatabaseRequest ur =
        IMMUDB__SCHEMA__UNLOAD_DATABASE_REQUEST__INIT;
    Immudb__Schema__DeleteDatabaseRequest dr =
        IMMUDB__SCHEMA__DELETE_DATABASE_REQUEST__INIT;
    ur.database = dr.database = (char *)(uintptr_t)target;
    if (ia_call(c, "UnloadDatabase", &ur.base, NULL, NULL) != 0 ||
        ia_call(c, "DeleteDatabase", &dr.base, NULL, NULL) != 0)
      fprintf(stderr,
              "immuadmin: warning: cannot remove the empty database '%s' "
              "again: %s\n",
              target, c->err);
  }
  ia_errorf("database '%s' cannot hold the backup: it needs %s %zu or more "
            "(the database has %zu); nothing was restored",
            target, what, need, have);
  return IA_EXIT_FAIL;
}

int ia_cmd_restore(const ia_opts *o, int argc, char **argv) {
  bk_header h;
  char err[IA_ERRLEN], hex[65], target[256];
  ia_conn c;
  FILE *fp;
  int rc, ex;

  if (argc != 1) {
    ia_errorf("usage: immuadmin restore FILE [-d DATABASE] [--force]");
    return IA_EXIT_USAGE;
  }
  const char *path = argv[0];
  if ((fp = open_backup(path)) == NULL)
    return IA_EXIT_FAIL;
  if ((rc = header_read(fp, &h, err, sizeof err)) != 0) {
    ia_errorf("%s: %s; nothing was restored", path, err);
    fclose(fp);
    return rc == IMMU_ECORRUPT ? IA_EXIT_INTEGRITY : IA_EXIT_FAIL;
  }
  long data_off = ftell(fp);
  int progress = !o->no_progress && isatty(STDOUT_FILENO);
  /* Pass 1: the whole chain, before anything is created. */
  size_t maxima[3] = {0, 0, 0};
  rc = verify_file_frames(fp, &h, 1, progress, maxima, err, sizeof err);
  if (rc != 0) {
    ia_errorf("%s does not verify: %s; nothing was restored", path, err);
    fclose(fp);
    return ia_exit_for(rc);
  }
  snprintf(target, sizeof target, "%s", o->database ? o->database : h.db);
  if ((ex = ia_open_session(&c, o)) != 0) {
    fclose(fp);
    return ex;
  }
  rc = ia_database_exists(&c, target);
  if (rc < 0) {
    ia_conn_error(&c, "cannot list the databases");
    ex = ia_exit_for(rc);
    goto out;
  }
  if (rc == 1 && !o->force) {
    ia_errorf("database '%s' already exists: restore into a new one with "
              "-d NAME (or --force to append the backup to it, if its "
              "history is a prefix of the backup)",
              target);
    ex = IA_EXIT_FAIL;
    goto out;
  }
  int created = rc == 0;
  if (created && (rc = ia_create_database(&c, o, target)) != 0) {
    ia_conn_error(&c, "cannot create database '%s'", target);
    ex = ia_exit_for(rc);
    goto out;
  }
  if ((rc = ia_use_database(&c, target)) != 0) {
    ia_conn_error(&c, "cannot use database '%s'", target);
    ex = ia_exit_for(rc);
    goto out;
  }
  if ((ex = check_limits(&c, target, maxima, created)) != 0)
    goto out;
  uint64_t have;
  immu_digest have_alh;
  if ((rc = ia_current_state(&c, &have, &have_alh)) != 0) {
    ia_conn_error(&c, "cannot read the state of database '%s'", target);
    ex = ia_exit_for(rc);
    goto out;
  }
  if (have > h.ntx) {
    ia_errorf("database '%s' is ahead of the backup (tx %" PRIu64 " > %" PRIu64
              "); nothing was restored",
              target, have, h.ntx);
    ex = IA_EXIT_FAIL;
    goto out;
  }
  if (fseek(fp, data_off, SEEK_SET) != 0) {
    ia_errorf("cannot rewind %s: %s", path, strerror(errno));
    ex = IA_EXIT_FAIL;
    goto out;
  }
  ex = replicate_all(&c, fp, &h, have, &have_alh, target, progress);
  if (ex != 0) {
    if (c.status == IMMU__GRPC_INVALID_ARGUMENT ||
        c.status == IMMU__GRPC_RESOURCE_EXHAUSTED)
      fprintf(stderr,
              "immuadmin: hint: the backup holds keys of up to %zu bytes, "
              "values of up to %zu bytes and up to %zu entries per tx; a "
              "target created with smaller limits cannot take them (see "
              "--max-key-len, --max-value-len, --max-tx-entries)\n",
              maxima[0], maxima[1], maxima[2]);
    goto out;
  }
  uint64_t n;
  immu_digest alh;
  if ((rc = ia_current_state(&c, &n, &alh)) != 0) {
    ia_conn_error(&c, "cannot read the state of database '%s'", target);
    ex = ia_exit_for(rc);
    goto out;
  }
  if (n != h.ntx || !immu_digest_eq(&alh, &h.alh)) {
    ia_errorf("database '%s' is at tx %" PRIu64
              " after the restore, with a state that differs from the "
              "backup's",
              target, n);
    ex = IA_EXIT_INTEGRITY;
    goto out;
  }
  immu_digest_hex(&h.alh, hex);
  printf("restore of %s complete: database '%s' holds txs 1..%" PRIu64
         " (%" PRIu64 " restored)\nAlh(%" PRIu64 ") = %s\n",
         path, target, h.ntx, h.ntx - have, h.ntx, hex);
  ex = IA_EXIT_OK;
out:
  ia_close(&c);
  fclose(fp);
  return ex;
}

/* ------------------------------------------------------------------ */
/* verify                                                              */
/* ------------------------------------------------------------------ */

int ia_cmd_verify(const ia_opts *o, int argc, char **argv) {
  char err[IA_ERRLEN], hex[65], db[256];
  bk_header h;
  int rc, ex;

  (void)argv;
  if (argc != 0) {
    ia_errorf("usage: immuadmin verify [-d DATABASE] | --file FILE");
    return IA_EXIT_USAGE;
  }
  int progress = !o->no_progress && isatty(STDOUT_FILENO);
  if (o->file != NULL) {
    FILE *fp = open_backup(o->file);
    if (fp == NULL)
      return IA_EXIT_FAIL;
    rc = header_read(fp, &h, err, sizeof err);
    if (rc == 0)
      rc = verify_file_frames(fp, &h, 0, progress, NULL, err, sizeof err);
    fclose(fp);
    if (rc != 0) {
      ia_errorf("verification of %s FAILED: %s", o->file, err);
      return ia_exit_for(rc);
    }
    immu_digest_hex(&h.alh, hex);
    printf("backup %s verified: database '%s', txs 1..%" PRIu64 "\nAlh(%" PRIu64
           ") = %s\n",
           o->file, h.db, h.ntx, h.ntx, hex);
    return IA_EXIT_OK;
  }
  ia_conn c;
  if ((ex = open_db(&c, o, db, sizeof db)) != 0)
    return ex;
  ia_opts o2 = *o;
  o2.at_tx = 0;
  if ((ex = take_state(&c, &o2, db, &h)) != 0)
    goto out;
  char what[300];
  snprintf(what, sizeof what, "verification of database '%s'", db);
  ex = export_range(&c, &h, NULL, "verifying", progress, what, NULL);
  if (ex != 0)
    goto out;
  immu_digest_hex(&h.alh, hex);
  printf("database '%s' verified: txs 1..%" PRIu64
         " re-hashed, Alh chain and ahtree consistent with the server's "
         "state\nAlh(%" PRIu64 ") = %s\n",
         db, h.ntx, h.ntx, hex);
out:
  ia_close(&c);
  return ex;
}
