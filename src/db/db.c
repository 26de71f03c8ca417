/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The KV layer (include/immudb/db.h): immudb's pkg/database semantics on top
 * of the engine (src/store/store.h) and its key index (src/store/index.h).
 * Spec: immudb-crypto.md section 7 (encodings, server semantics, verifiable
 * endpoints) and immudb-api.md section 2 (messages, error texts).
 *
 * Reads come in three flavours, all producing a "raw" version of a store
 * key (tx, revision, stored value bytes):
 *   latest      the index's 'l' record (value inline or read from the log);
 *   revision n  the index's 'h' record n (value read from the log);
 *   at tx t     the tx record t read from the log and searched for the key.
 * Every value read through the index is checked against the index's hVal;
 * values read from a tx record against the record's hVal.
 * A raw value is turned into an Entry by make_entry(), which resolves
 * references (SPEC 7.3 "Reads") with a depth limit of one, like immudb's
 * MaxKeyResolutionLimit.
 */
#include "immudb/db.h"

#include <assert.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/endian.h"
#include "core/mem.h"
#include "store/index.h"
#include "store/store.h"
#include "store/txrec.h"

#define DEFAULT_MAX_RESULT 1000u
/* immudb's MaxKeyResolutionLimit: a reference may point at a plain value
 * only. */
#define MAX_RESOLUTION 1
/* Placeholder for "the id of the tx being committed" until the bind
 * callback writes the real one; no tx ever gets this id. */
#define UNBOUND_TX UINT64_MAX
#define ERRMSG_LEN 512
/* Length of EncodeZAdd's key, SPEC 7.2: 1+8+len(set)+8+8+1+len(key)+8. */
#define ZADD_KEY_LEN(slen, klen) IMMU_ENC_ZADD_KEY_LEN(slen, klen)

struct immu_db {
  immu_store *st;
  immu_index *ix;
  uint32_t max_key_len;
  uint32_t max_value_len;
  uint32_t max_entries;
  uint32_t max_result;
  long wait_ms;
};

/* ------------------------------------------------------------------ */
/* Error messages                                                      */
/* ------------------------------------------------------------------ */

static _Thread_local char tl_err[ERRMSG_LEN];

const char *immu_db_last_error(void) {
  return tl_err;
}

/* Records a message for the calling thread and returns |rc|. */
static int fail(int rc, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static int fail(int rc, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(tl_err, sizeof tl_err, fmt, ap);
  va_end(ap);
  return rc;
}

/* An engine failure while doing |what|. */
static int engine_fail(int rc, const char *what) {
  if (rc == IMMU_ENOMEM)
    return fail(rc, "out of memory");
  return fail(rc, "%s: %s", what, immu_strerror(rc));
}

/* engine_fail for a point read of the index: names what RocksDB or the
 * row decoder found, which the log then shows. */
static int index_read_fail(int rc) {
  const char *d = immu__index_last_error();
  if (rc == IMMU_ENOMEM || d[0] == '\0')
    return engine_fail(rc, "reading the index");
  return fail(rc, "reading the index: %s: %s", immu_strerror(rc), d);
}

static int illegal(const char *why) {
  return fail(IMMU_EINVAL, "illegal arguments: %s", why);
}

/* ------------------------------------------------------------------ */
/* Small helpers                                                       */
/* ------------------------------------------------------------------ */

/* Copies |n| bytes into a new buffer of at least one byte. */
static uint8_t *dup_bytes(const uint8_t *p, size_t n) {
  uint8_t *d = immu__malloc(n ? n : 1);
  if (d != NULL && n > 0)
    memcpy(d, p, n);
  return d;
}

/* EncodeZAdd(set, score, EncodeKey(key), atTx).key into |out|, which has
 * room for ZADD_KEY_LEN(slen, klen) bytes; returns that length. */
static size_t zadd_key(const uint8_t *set, size_t slen, double score,
                       const uint8_t *key, size_t klen, uint64_t at_tx,
                       uint8_t *out) {
  size_t n = 0;
  int rc = immu_enc_zadd_key(set, slen, score, key, klen, at_tx, out,
                             ZADD_KEY_LEN(slen, klen), &n);
  assert(rc == 0 && n == ZADD_KEY_LEN(slen, klen));
  (void)rc;
  return n;
}

/* A store key 0x00 || user key, on the stack when short. */
typedef struct skey {
  uint8_t st[128];
  uint8_t *p;
  size_t n;
} skey;

static int skey_make(skey *k, const uint8_t *ukey, size_t ulen) {
  k->n = IMMU_ENC_KEY_LEN(ulen);
  k->p = k->n <= sizeof k->st ? k->st : immu__malloc(k->n);
  if (k->p == NULL)
    return fail(IMMU_ENOMEM, "out of memory");
  (void)immu_enc_key(ukey, ulen, k->p, k->n, &k->n);
  return 0;
}

static void skey_free(skey *k) {
  if (k->p != k->st)
    immu__free(k->p);
  k->p = NULL;
}

static uint64_t last_committed(immu_db *db) {
  return immu_store_last_id(db->st);
}

static int index_wait_fail(immu_db *db, int rc, uint64_t tx);

/* Waits until the index covers tx |tx| (0: nothing to wait for). */
static int wait_index(immu_db *db, uint64_t tx) {
  if (tx == 0)
    return 0;
  return index_wait_fail(db, immu_store_wait_indexed(db->st, tx, db->wait_ms),
                         tx);
}

/* The message for the result |rc| of waiting for the index to cover |tx|. */
static int index_wait_fail(immu_db *db, int rc, uint64_t tx) {
  if (rc == IMMU_ETIMEOUT)
    return fail(rc, "timed out waiting for the index to reach tx %" PRIu64, tx);
  if (rc == IMMU_ECORRUPT)
    return fail(rc,
                "tx data is corrupted: tx %" PRIu64 " does not match its "
                "hashes; the index cannot pass it",
                immu_store_index_bad_tx(db->st));
  if (rc != 0)
    return engine_fail(rc, "waiting for the index");
  return 0;
}

/* The usual read prologue: since_tx must not be in the future; unless
 * |no_wait|, wait for since_tx (or everything committed when 0). */
/* since_tx must not be in the future. *wait_for: the tx the index must
 * cover for the read (since_tx, or the last committed tx when 0). */
static int check_since(immu_db *db, uint64_t since_tx, uint64_t *wait_for) {
  uint64_t last = last_committed(db);
  if (since_tx > last)
    return illegal("sinceTx must not be greater than the current "
                   "transaction ID");
  *wait_for = since_tx ? since_tx : last;
  return 0;
}

static int read_prologue(immu_db *db, uint64_t since_tx, int no_wait) {
  uint64_t want = 0;
  int rc = check_since(db, since_tx, &want);
  if (rc != 0 || no_wait)
    return rc;
  return wait_index(db, want);
}

static int check_limit(immu_db *db, uint64_t limit) {
  if (limit > db->max_result)
    return fail(IMMU_ETOOLARGE,
                "result size limit exceeded: the specified limit (%" PRIu64
                ") is larger than the maximum allowed one (%" PRIu32 ")",
                limit, db->max_result);
  return 0;
}

/* ------------------------------------------------------------------ */
/* Raw versions                                                        */
/* ------------------------------------------------------------------ */

typedef struct rawval {
  uint64_t tx;
  uint64_t rev; /* 0 when unknown */
  uint8_t *v;   /* owned, at least one byte allocated */
  size_t n;
} rawval;

static void raw_clear(rawval *r) {
  immu__free(r->v);
  memset(r, 0, sizeof *r);
}

/* Checks value |v| (owned; freed on failure) of |e| against its hash and
 * hands it to |out|. */
static int raw_finish(const immu_index_entry *e, uint8_t *v, rawval *out) {
  immu_digest h;
  immu_sha256(v, e->vlen, &h);
  if (!immu_digest_eq(&h, &e->hval)) {
    immu__free(v);
    return fail(IMMU_ECORRUPT,
                "corrupted data: value of tx %" PRIu64 " does not match its "
                "hash",
                e->tx);
  }
  out->tx = e->tx;
  out->rev = e->revision;
  out->v = v;
  out->n = e->vlen;
  return 0;
}

/* Loads the value of index entry |e| and checks it against its hVal. */
static int raw_from_index(immu_db *db, const immu_index_entry *e, rawval *out) {
  uint8_t *v = immu__malloc(e->vlen ? e->vlen : 1);
  int rc;

  if (v == NULL)
    return fail(IMMU_ENOMEM, "out of memory");
  if (e->has_inline) {
    if (e->vlen > 0)
      memcpy(v, e->inline_value, e->vlen);
  } else if (e->vlen > 0 &&
             (rc = immu_store_read_value(db->st, e->vpos, v, e->vlen)) != 0) {
    immu__free(v);
    return engine_fail(rc, "reading a value from the log");
  }
  return raw_finish(e, v, out);
}

/* As raw_from_index for an entry the caller owns: its inline value is
 * taken over instead of copied (one malloc and copy less per Get). */
static int raw_take_index(immu_db *db, immu_index_entry *e, rawval *out) {
  uint8_t *v = e->inline_value;
  if (!e->has_inline || v == NULL)
    return raw_from_index(db, e, out);
  e->inline_value = NULL;
  return raw_finish(e, v, out);
}

/* Latest version of store key |k|. IMMU_ENOTFOUND "key not found". */
static int raw_latest(immu_db *db, const uint8_t *k, size_t kn, rawval *out) {
  immu_index_entry e;
  int rc;
  memset(&e, 0, sizeof e);
  rc = immu__index_get_latest(db->ix, k, kn, &e);
  if (rc == IMMU_ENOTFOUND)
    rc = fail(rc, "key not found");
  else if (rc != 0)
    rc = index_read_fail(rc);
  else
    rc = raw_take_index(db, &e, out);
  immu__index_entry_clear(&e);
  return rc;
}

/* Version |rev| (1-based) of store key |k|. IMMU_ENOTFOUND if absent. */
static int raw_revision(immu_db *db, const uint8_t *k, size_t kn, uint64_t rev,
                        rawval *out) {
  immu_index_entry e;
  int rc;
  memset(&e, 0, sizeof e);
  rc = immu__index_get_revision(db->ix, k, kn, rev, &e);
  if (rc == IMMU_ENOTFOUND)
    rc = fail(IMMU_ERANGE, "invalid key revision number");
  else if (rc != 0)
    rc = index_read_fail(rc);
  else
    rc = raw_take_index(db, &e, out);
  immu__index_entry_clear(&e);
  return rc;
}

/* Reads tx |id| from the log; "tx not found" if it is not committed. */
static int read_tx(immu_db *db, uint64_t id, immu_txrec *rec, uint8_t **buf) {
  int rc;
  if (id == 0)
    return illegal("tx id must be greater than 0");
  rc = immu_store_read_tx(db->st, id, rec, buf);
  if (rc == IMMU_ENOTFOUND)
    return fail(rc, "tx not found");
  if (rc != 0)
    return engine_fail(rc, "reading a tx from the log");
  return 0;
}

/* Index of store key |k| in |rec|, or -1. */
static long find_entry(const immu_txrec *rec, const uint8_t *k, size_t kn) {
  for (uint32_t i = 0; i < rec->hdr.nentries; i++) {
    const immu_txrec_entry *e = &rec->entries[i];
    if (e->klen == kn && memcmp(e->key, k, kn) == 0)
      return (long)i;
  }
  return -1;
}

/* The version of store key |k| written in tx |at_tx|. */
static int raw_at_tx(immu_db *db, const uint8_t *k, size_t kn, uint64_t at_tx,
                     rawval *out) {
  immu_txrec rec;
  uint8_t *buf = NULL;
  immu_digest h;
  long i;
  int rc;

  if ((rc = read_tx(db, at_tx, &rec, &buf)) != 0)
    return rc;
  i = find_entry(&rec, k, kn);
  if (i < 0) {
    rc = fail(IMMU_ENOTFOUND, "key not found");
    goto out;
  }
  const immu_txrec_entry *e = &rec.entries[i];
  immu_sha256(e->value, e->vlen, &h);
  if (!immu_digest_eq(&h, &e->hval)) {
    rc = fail(IMMU_ECORRUPT,
              "corrupted data: value in tx %" PRIu64 " does not match its "
              "hash",
              at_tx);
    goto out;
  }
  if ((out->v = dup_bytes(e->value, e->vlen)) == NULL) {
    rc = fail(IMMU_ENOMEM, "out of memory");
    goto out;
  }
  out->n = e->vlen;
  out->tx = at_tx;
  out->rev = 0;
out:
  immu__txrec_free(&rec);
  immu__free(buf);
  return rc;
}

/* What the latest (or the tx |at_tx|) version of store key |k| is. */
enum { KIND_NONE = 0, KIND_PLAIN = 1, KIND_REF = 2 };

static int kind_of_byte(const uint8_t *v, size_t n, int *kind) {
  if (n == 0 || (v[0] != IMMU_VALUE_PLAIN && v[0] != IMMU_VALUE_REF))
    return fail(IMMU_ECORRUPT, "corrupted data: malformed stored value");
  *kind = v[0] == IMMU_VALUE_PLAIN ? KIND_PLAIN : KIND_REF;
  return 0;
}

/* Reads only the first value byte of the latest version. */
static int kind_latest(immu_db *db, const uint8_t *k, size_t kn, int *kind) {
  immu_index_entry e;
  uint8_t b = 0xff;
  int rc;
  memset(&e, 0, sizeof e);
  rc = immu__index_get_latest(db->ix, k, kn, &e);
  if (rc == IMMU_ENOTFOUND) {
    *kind = KIND_NONE;
    rc = 0;
  } else if (rc != 0) {
    rc = index_read_fail(rc);
  } else if (e.vlen == 0) {
    rc = kind_of_byte(&b, 0, kind);
  } else if (e.has_inline) {
    rc = kind_of_byte(e.inline_value, 1, kind);
  } else if ((rc = immu_store_read_value(db->st, e.vpos, &b, 1)) != 0) {
    rc = engine_fail(rc, "reading a value from the log");
  } else {
    rc = kind_of_byte(&b, 1, kind);
  }
  immu__index_entry_clear(&e);
  return rc;
}

/* Kind of store key |k| in tx |at_tx| (> 0), or latest when 0. "tx not
 * found" is an error, a missing key is KIND_NONE. */
static int kind_at(immu_db *db, const uint8_t *k, size_t kn, uint64_t at_tx,
                   int *kind) {
  immu_txrec rec;
  uint8_t *buf = NULL;
  long i;
  int rc;
  if (at_tx == 0)
    return kind_latest(db, k, kn, kind);
  if ((rc = read_tx(db, at_tx, &rec, &buf)) != 0)
    return rc;
  i = find_entry(&rec, k, kn);
  if (i < 0)
    *kind = KIND_NONE;
  else
    rc = kind_of_byte(rec.entries[i].value, rec.entries[i].vlen, kind);
  immu__txrec_free(&rec);
  immu__free(buf);
  return rc;
}

/* Revision of the latest version of store key |k|; "key not found". */
static int latest_revision(immu_db *db, const uint8_t *k, size_t kn,
                           uint64_t *rev) {
  immu_index_entry e;
  int rc;
  memset(&e, 0, sizeof e);
  rc = immu__index_get_latest(db->ix, k, kn, &e);
  *rev = e.revision;
  immu__index_entry_clear(&e);
  if (rc == IMMU_ENOTFOUND)
    return fail(rc, "key not found");
  if (rc != 0)
    return index_read_fail(rc);
  return 0;
}

/* ------------------------------------------------------------------ */
/* Entries                                                             */
/* ------------------------------------------------------------------ */

void immu_db_entry_clear(immu_db_entry *e) {
  if (e == NULL)
    return;
  immu__free(e->key);
  immu__free(e->value);
  immu__free(e->referenced_by.key);
  memset(e, 0, sizeof *e);
}

static int get_at(immu_db *db, const uint8_t *ukey, size_t ulen, uint64_t at_tx,
                  int depth, immu_db_entry *out);

/* Turns raw version |raw| of user key |ukey| into an Entry, resolving a
 * reference. Consumes raw->v. |out| is zeroed first and left zeroed on
 * failure. */
static int make_entry(immu_db *db, const uint8_t *ukey, size_t ulen,
                      rawval *raw, int depth, immu_db_entry *out) {
  const uint8_t *rk;
  size_t rlen;
  uint64_t at_tx;
  uint8_t *key;
  int rc;

  memset(out, 0, sizeof *out);
  if (raw->n == 0 ||
      (raw->v[0] != IMMU_VALUE_PLAIN && raw->v[0] != IMMU_VALUE_REF)) {
    rc = fail(IMMU_ECORRUPT, "corrupted data: malformed value in tx %" PRIu64,
              raw->tx);
    goto out;
  }
  if ((key = dup_bytes(ukey, ulen)) == NULL) {
    rc = fail(IMMU_ENOMEM, "out of memory");
    goto out;
  }
  if (raw->v[0] == IMMU_VALUE_PLAIN) {
    /* SPEC 7.1: 0x00 || value; hand the buffer over without the prefix */
    memmove(raw->v, raw->v + 1, raw->n - 1);
    out->tx = raw->tx;
    out->key = key;
    out->key_len = ulen;
    out->value = raw->v;
    out->value_len = raw->n - 1;
    out->revision = raw->rev;
    raw->v = NULL;
    rc = 0;
    goto out;
  }
  if (depth >= MAX_RESOLUTION) {
    immu__free(key);
    rc = fail(IMMU_ECONFLICT, "key resolution limit reached. It may be due "
                              "to cyclic references");
    goto out;
  }
  /* SPEC 7.1: 0x01 || u64(atTx) || 0x00 || refKey */
  if (immu_dec_ref_value(raw->v, raw->n, &at_tx, &rk, &rlen) != 0) {
    immu__free(key);
    rc = fail(IMMU_ECORRUPT,
              "corrupted data: malformed reference in tx %" PRIu64, raw->tx);
    goto out;
  }
  if ((rc = get_at(db, rk, rlen, at_tx, depth + 1, out)) != 0) {
    immu__free(key);
    goto out;
  }
  out->has_referenced_by = 1;
  out->referenced_by.tx = raw->tx;
  out->referenced_by.key = key;
  out->referenced_by.key_len = ulen;
  out->referenced_by.at_tx = at_tx;
  out->referenced_by.revision = raw->rev;
out:
  raw_clear(raw);
  return rc;
}

/* The version of user key |ukey| in tx |at_tx| (> 0) or the latest. */
static int get_at(immu_db *db, const uint8_t *ukey, size_t ulen, uint64_t at_tx,
                  int depth, immu_db_entry *out) {
  rawval r = {0};
  skey k;
  int rc;

  memset(out, 0, sizeof *out);
  if ((rc = skey_make(&k, ukey, ulen)) != 0)
    return rc;
  rc = at_tx > 0 ? raw_at_tx(db, k.p, k.n, at_tx, &r)
                 : raw_latest(db, k.p, k.n, &r);
  skey_free(&k);
  if (rc != 0)
    return rc;
  return make_entry(db, ukey, ulen, &r, depth, out);
}

/* Growable arrays. */
static int grow(void **v, size_t *cap, size_t n, size_t elem) {
  size_t nc;
  void *p;
  if (n < *cap)
    return 0;
  nc = *cap ? *cap * 2 : 8;
  if ((p = immu__realloc(*v, nc * elem)) == NULL)
    return fail(IMMU_ENOMEM, "out of memory");
  *v = p;
  *cap = nc;
  return 0;
}

/* Moves |e| into |l|. On failure |e| is cleared. */
static int entries_push(immu_db_entries *l, immu_db_entry *e) {
  void *v = l->v;
  int rc = grow(&v, &l->cap_, l->n, sizeof *l->v);
  l->v = v;
  if (rc != 0) {
    immu_db_entry_clear(e);
    return rc;
  }
  l->v[l->n++] = *e;
  memset(e, 0, sizeof *e);
  return 0;
}

void immu_db_entries_clear(immu_db_entries *l) {
  if (l == NULL)
    return;
  for (size_t i = 0; i < l->n; i++)
    immu_db_entry_clear(&l->v[i]);
  immu__free(l->v);
  memset(l, 0, sizeof *l);
}

void immu_db_zentries_clear(immu_db_zentries *l) {
  if (l == NULL)
    return;
  for (size_t i = 0; i < l->n; i++) {
    immu__free(l->v[i].set);
    immu__free(l->v[i].key);
    immu_db_entry_clear(&l->v[i].entry);
  }
  immu__free(l->v);
  memset(l, 0, sizeof *l);
}

/* ------------------------------------------------------------------ */
/* Open / close                                                        */
/* ------------------------------------------------------------------ */

void immu_db_options_init(immu_db_options *o) {
  memset(o, 0, sizeof *o);
  o->max_result_size = DEFAULT_MAX_RESULT;
  o->index_wait_ms = -1;
}

int immu_db_open(const char *dir, const immu_db_options *opt, immu_db **out) {
  immu_db_options defaults;
  immu_store_options so;
  immu_db *db;
  char *msg = NULL;
  int rc;

  if (out != NULL)
    *out = NULL;
  if (dir == NULL || out == NULL)
    return illegal("no directory or output handle");
  if (opt == NULL) {
    immu_db_options_init(&defaults);
    opt = &defaults;
  }
  if (opt->store != NULL)
    so = *opt->store;
  else
    immu_store_options_init(&so);
  if (opt->env != NULL)
    so.env = opt->env;
  if ((db = immu__calloc(1, sizeof *db)) == NULL)
    return fail(IMMU_ENOMEM, "out of memory");
  rc = immu_store_open(dir, &so, &db->st, &msg);
  if (rc != 0) {
    if (msg != NULL)
      fail(rc, "opening %s: %s", dir, msg);
    else
      engine_fail(rc, dir);
    immu__free(msg);
    immu__free(db);
    return rc;
  }
  db->ix = immu_store_index(db->st);
  immu_store_limits(db->st, &db->max_key_len, &db->max_value_len,
                    &db->max_entries);
  db->max_result =
      opt->max_result_size ? opt->max_result_size : DEFAULT_MAX_RESULT;
  db->wait_ms = opt->index_wait_ms;
  *out = db;
  return 0;
}

int immu_db_close(immu_db *db) {
  int rc;
  if (db == NULL)
    return 0;
  rc = immu_store_close(db->st);
  immu__free(db);
  if (rc != 0)
    return engine_fail(rc, "closing the store");
  return 0;
}

struct immu_store *immu_db_store(immu_db *db) {
  return db->st;
}

/* ------------------------------------------------------------------ */
/* Commit                                                              */
/* ------------------------------------------------------------------ */

/* Checks the engine's limits with clear messages (the engine would only
 * say IMMU_EINVAL). */
static int check_limits(immu_db *db, const immu_store_entry *e, size_t n) {
  if (n == 0)
    return illegal("no entries");
  if (n > db->max_entries)
    return fail(IMMU_ETOOLARGE,
                "max number of entries per tx exceeded (%zu > %" PRIu32 ")", n,
                db->max_entries);
  for (size_t i = 0; i < n; i++) {
    if (e[i].klen > db->max_key_len)
      return fail(IMMU_ETOOLARGE, "max key length exceeded (%zu > %" PRIu32 ")",
                  e[i].klen, db->max_key_len);
    if (e[i].vlen > db->max_value_len)
      return fail(IMMU_ETOOLARGE,
                  "max value length exceeded (%zu > %" PRIu32 ")", e[i].vlen,
                  db->max_value_len);
  }
  return 0;
}

/* The message for an engine commit error. The entries passed
 * check_limits and carry encoded (never empty) keys and no metadata, so
 * the engine's IMMU_EINVAL can only mean its duplicate-key check: the one
 * check of each tx (the engine's), no second pass here. */
static int commit_fail(int rc) {
  if (rc == IMMU_EINVAL)
    return illegal("duplicated key");
  return engine_fail(rc, "committing");
}

/* Checks the limits, commits, and waits for the index unless |no_wait|. */
static int commit(immu_db *db, const immu_store_entry *e, size_t n,
                  immu_store_bind_fn bind, void *bind_arg, int no_wait,
                  immu_tx_header *hdr) {
  immu_tx_header h;
  int rc;

  if ((rc = check_limits(db, e, n)) != 0)
    return rc;
  rc = immu_store_commit(db->st, e, n, bind, bind_arg, &h, NULL);
  if (rc != 0)
    return commit_fail(rc);
  if (hdr != NULL)
    *hdr = h;
  if (!no_wait)
    return wait_index(db, h.id);
  return 0;
}

/* ------------------------------------------------------------------ */
/* Set                                                                 */
/* ------------------------------------------------------------------ */

/* Checks |kvs| and encodes them as store entries (SPEC 7.2 EncodeKV) into
 * *e and *buf, which the caller frees. */
static int encode_kvs(const immu_db_kv *kvs, size_t n, immu_store_entry **pe,
                      uint8_t **pbuf) {
  immu_store_entry *e = NULL;
  uint8_t *buf = NULL, *p;
  size_t total = 0, len;

  *pe = NULL;
  *pbuf = NULL;
  if (n == 0 || kvs == NULL)
    return illegal("no key-value pairs");
  for (size_t i = 0; i < n; i++) {
    if (kvs[i].key_len == 0 || kvs[i].key == NULL)
      return illegal("empty key");
    if (kvs[i].value_len > 0 && kvs[i].value == NULL)
      return illegal("no value bytes");
    total +=
        IMMU_ENC_KEY_LEN(kvs[i].key_len) + IMMU_ENC_VALUE_LEN(kvs[i].value_len);
  }
  e = immu__calloc(n, sizeof *e);
  buf = immu__malloc(total);
  if (e == NULL || buf == NULL) {
    immu__free(e);
    immu__free(buf);
    return fail(IMMU_ENOMEM, "out of memory");
  }
  p = buf;
  for (size_t i = 0; i < n; i++) {
    /* SPEC 7.2 EncodeKV: key 0x00 || k, value 0x00 || v */
    (void)immu_enc_key(kvs[i].key, kvs[i].key_len, p, total, &len);
    e[i].key = p;
    e[i].klen = len;
    p += len;
    (void)immu_enc_value(kvs[i].value, kvs[i].value_len, p, total, &len);
    e[i].value = p;
    e[i].vlen = len;
    p += len;
  }
  *pe = e;
  *pbuf = buf;
  return 0;
}

int immu_db_set(immu_db *db, const immu_db_kv *kvs, size_t n, int no_wait,
                immu_tx_header *hdr) {
  immu_store_entry *e;
  uint8_t *buf;
  int rc;

  if ((rc = encode_kvs(kvs, n, &e, &buf)) != 0)
    return rc;
  rc = commit(db, e, n, NULL, NULL, no_wait, hdr);
  immu__free(e);
  immu__free(buf);
  return rc;
}

/* An immu_db_set_async in flight: commit, then (unless no_wait) the index
 * wait, then the caller's callback. */
typedef struct aset {
  immu_db *db;
  int no_wait;
  immu_db_done_fn done;
  void *arg;
  immu_tx_header hdr;
} aset;

static void aset_indexed(void *arg, int rc) {
  aset *a = arg;
  if (rc != 0)
    rc = index_wait_fail(a->db, rc, a->hdr.id);
  a->done(a->arg, rc, &a->hdr);
  immu__free(a);
}

static void aset_committed(void *arg, int rc, const immu_tx_header *hdr,
                           const immu_digest *alh) {
  aset *a = arg;
  (void)alh;
  if (rc != 0) {
    rc = commit_fail(rc);
    a->done(a->arg, rc, NULL);
    immu__free(a);
    return;
  }
  a->hdr = *hdr;
  if (a->no_wait) {
    aset_indexed(a, 0);
    return;
  }
  rc = immu_store_on_indexed(a->db->st, hdr->id, a->db->wait_ms, aset_indexed,
                             a);
  if (rc != 0) /* already covered, or failed: done is ours to call */
    aset_indexed(a, rc == IMMU_STORE_ALREADY ? 0 : rc);
}

int immu_db_set_async(immu_db *db, const immu_db_kv *kvs, size_t n,
                      int no_wait, immu_db_done_fn done, void *arg) {
  immu_store_entry *e;
  uint8_t *buf;
  aset *a;
  int rc;

  if (done == NULL)
    return illegal("no completion callback");
  if ((rc = encode_kvs(kvs, n, &e, &buf)) != 0)
    return rc;
  if ((rc = check_limits(db, e, n)) != 0)
    goto out;
  if ((a = immu__malloc(sizeof *a)) == NULL) {
    rc = fail(IMMU_ENOMEM, "out of memory");
    goto out;
  }
  *a = (aset){db, no_wait, done, arg, {0}};
  /* The engine copies the entries into the tx frame before returning. */
  if ((rc = immu_store_commit_async(db->st, e, n, aset_committed, a)) != 0) {
    immu__free(a);
    rc = commit_fail(rc);
  }
out:
  immu__free(e);
  immu__free(buf);
  return rc;
}

/* ------------------------------------------------------------------ */
/* References and sorted sets                                          */
/* ------------------------------------------------------------------ */

/* SPEC 7.3: atTx > 0 without boundRef, or boundRef with atTx = 0, is
 * illegal (ExecAll allows the latter: bound to the tx itself). */
static int check_bound(uint64_t at_tx, int bound_ref, int exec_all) {
  if (at_tx > 0 && !bound_ref)
    return illegal("atTx requires boundRef");
  if (at_tx == 0 && bound_ref && !exec_all)
    return illegal("boundRef requires atTx");
  return 0;
}

/* The target of a reference or ZAdd must exist (in tx at_tx if > 0) and be
 * a plain value. */
static int check_target(immu_db *db, const uint8_t *ukey, size_t ulen,
                        uint64_t at_tx) {
  skey k;
  int kind, rc;
  if ((rc = skey_make(&k, ukey, ulen)) != 0)
    return rc;
  rc = kind_at(db, k.p, k.n, at_tx, &kind);
  skey_free(&k);
  if (rc != 0)
    return rc;
  if (kind == KIND_NONE)
    return fail(IMMU_ENOTFOUND, "referenced key not found");
  if (kind == KIND_REF)
    return fail(IMMU_ECONFLICT, "referenced key cannot be a reference");
  return 0;
}

/* A reference's own key must not be a plain entry (it may be a reference
 * already). */
static int check_ref_key(immu_db *db, const uint8_t *ukey, size_t ulen) {
  skey k;
  int kind, rc;
  if ((rc = skey_make(&k, ukey, ulen)) != 0)
    return rc;
  rc = kind_latest(db, k.p, k.n, &kind);
  skey_free(&k);
  if (rc == 0 && kind == KIND_PLAIN)
    rc = fail(IMMU_EEXIST, "final key cannot be converted into a reference");
  return rc;
}

static int validate_ref(const immu_db_ref_req *r, int exec_all) {
  if (r->key == NULL || r->key_len == 0 || r->referenced_key == NULL ||
      r->referenced_key_len == 0)
    return illegal("empty key");
  return check_bound(r->at_tx, r->bound_ref, exec_all);
}

static int validate_zadd(const immu_db_zadd_req *z, int exec_all) {
  if (z->set == NULL || z->set_len == 0)
    return illegal("empty set");
  if (z->key == NULL || z->key_len == 0)
    return illegal("empty key");
  if (isnan(z->score))
    return illegal("score is NaN");
  return check_bound(z->at_tx, z->bound_ref, exec_all);
}

/* Encodings of one Ref / ZAdd into |p|; return the bytes used. */
static size_t enc_ref(const immu_db_ref_req *r, uint64_t at_tx, uint8_t *p,
                      size_t cap, immu_store_entry *e) {
  size_t kl, vl;
  memset(e, 0, sizeof *e);
  (void)immu_enc_key(r->key, r->key_len, p, cap, &kl);
  (void)immu_enc_ref_value(r->referenced_key, r->referenced_key_len, at_tx,
                           p + kl, cap - kl, &vl);
  e->key = p;
  e->klen = kl;
  e->value = p + kl;
  e->vlen = vl;
  return kl + vl;
}

static size_t enc_zadd(const immu_db_zadd_req *z, uint64_t at_tx, uint8_t *p,
                       size_t cap, immu_store_entry *e) {
  size_t kl;
  memset(e, 0, sizeof *e);
  (void)cap; /* the caller sized |p| with ZADD_KEY_LEN */
  kl = zadd_key(z->set, z->set_len, z->score, z->key, z->key_len, at_tx, p);
  e->key = p;
  e->klen = kl;
  e->value = NULL; /* SPEC 7.2: ZAdd value is empty */
  e->vlen = 0;
  return kl;
}

int immu_db_set_reference(immu_db *db, const immu_db_ref_req *req,
                          immu_tx_header *hdr) {
  immu_store_entry e;
  uint8_t *buf;
  size_t cap;
  int rc;

  if (req == NULL)
    return illegal("no request");
  if ((rc = validate_ref(req, 0)) != 0)
    return rc;
  if ((rc = wait_index(db, last_committed(db))) != 0 ||
      (rc = check_ref_key(db, req->key, req->key_len)) != 0 ||
      (rc = check_target(db, req->referenced_key, req->referenced_key_len,
                         req->at_tx)) != 0)
    return rc;
  cap = IMMU_ENC_KEY_LEN(req->key_len) +
        IMMU_ENC_REF_VALUE_LEN(req->referenced_key_len);
  if ((buf = immu__malloc(cap)) == NULL)
    return fail(IMMU_ENOMEM, "out of memory");
  (void)enc_ref(req, req->at_tx, buf, cap, &e);
  rc = commit(db, &e, 1, NULL, NULL, req->no_wait, hdr);
  immu__free(buf);
  return rc;
}

int immu_db_zadd(immu_db *db, const immu_db_zadd_req *req,
                 immu_tx_header *hdr) {
  immu_store_entry e;
  uint8_t *buf;
  size_t cap;
  int rc;

  if (req == NULL)
    return illegal("no request");
  if ((rc = validate_zadd(req, 0)) != 0)
    return rc;
  if ((rc = wait_index(db, last_committed(db))) != 0 ||
      (rc = check_target(db, req->key, req->key_len, req->at_tx)) != 0)
    return rc;
  cap = ZADD_KEY_LEN(req->set_len, req->key_len);
  if ((buf = immu__malloc(cap)) == NULL)
    return fail(IMMU_ENOMEM, "out of memory");
  (void)enc_zadd(req, req->at_tx, buf, cap, &e);
  rc = commit(db, &e, 1, NULL, NULL, req->no_wait, hdr);
  immu__free(buf);
  return rc;
}

/* ------------------------------------------------------------------ */
/* ExecAll                                                             */
/* ------------------------------------------------------------------ */

/* Patch list for ops bound to the tx being committed (SPEC 7.3 ExecAll:
 * boundRef with atTx = 0 gets the tx's own ID). Until then they carry
 * UNBOUND_TX, so two such ops on the same member are duplicates before the
 * bind exactly when they are after it; and an explicit atTx names a
 * committed tx, so it never equals the id being assigned. */
typedef struct bind_ctx {
  uint8_t **slots; /* where to write u64(tx id) */
  size_t nslots;
} bind_ctx;

/* Runs in the engine's serial section, possibly on another thread. */
static int exec_bind(void *arg, uint64_t tx_id) {
  bind_ctx *b = arg;
  for (size_t i = 0; i < b->nslots; i++)
    immu__put_u64(b->slots[i], tx_id);
  return 0;
}

/* Which op of |ops| writes user key |k|: IMMU_DB_OP_KV, IMMU_DB_OP_REF or 0
 * (ZAdds write sorted-set keys, never user keys). */
static int written_by(const immu_db_op *ops, size_t n, const uint8_t *k,
                      size_t kn) {
  for (size_t i = 0; i < n; i++) {
    const uint8_t *ok;
    size_t on;
    if (ops[i].kind == IMMU_DB_OP_KV) {
      ok = ops[i].u.kv.key;
      on = ops[i].u.kv.key_len;
    } else if (ops[i].kind == IMMU_DB_OP_REF) {
      ok = ops[i].u.ref.key;
      on = ops[i].u.ref.key_len;
    } else {
      continue;
    }
    if (on == kn && memcmp(ok, k, kn) == 0)
      return ops[i].kind;
  }
  return 0;
}

/* Target check of a Ref / ZAdd op inside ExecAll. */
static int exec_check_target(immu_db *db, const immu_db_op *ops, size_t n,
                             const uint8_t *k, size_t kn, uint64_t at_tx,
                             int bound_ref) {
  int w;
  if (at_tx > 0) /* bound to an earlier tx: this call cannot matter */
    return check_target(db, k, kn, at_tx);
  w = written_by(ops, n, k, kn);
  if (w == IMMU_DB_OP_REF)
    return fail(IMMU_ECONFLICT, "referenced key cannot be a reference");
  if (w == IMMU_DB_OP_KV)
    return 0;
  if (bound_ref) /* bound to this tx, which does not write it */
    return fail(IMMU_ENOTFOUND,
                "referenced key not found in the transaction it is bound "
                "to");
  return check_target(db, k, kn, 0);
}

int immu_db_exec_all(immu_db *db, const immu_db_op *ops, size_t n, int no_wait,
                     immu_tx_header *hdr) {
  immu_store_entry *e = NULL;
  uint8_t *buf = NULL, **slots = NULL, *p;
  size_t total = 0, nslots = 0;
  bind_ctx b;
  int rc;

  if (ops == NULL || n == 0)
    return illegal("no operations");
  for (size_t i = 0; i < n; i++) {
    const immu_db_op *op = &ops[i];
    switch (op->kind) {
    case IMMU_DB_OP_KV:
      if (op->u.kv.key == NULL || op->u.kv.key_len == 0)
        return illegal("empty key");
      if (op->u.kv.value_len > 0 && op->u.kv.value == NULL)
        return illegal("no value bytes");
      total += IMMU_ENC_KEY_LEN(op->u.kv.key_len) +
               IMMU_ENC_VALUE_LEN(op->u.kv.value_len);
      break;
    case IMMU_DB_OP_REF:
      if ((rc = validate_ref(&op->u.ref, 1)) != 0)
        return rc;
      total += IMMU_ENC_KEY_LEN(op->u.ref.key_len) +
               IMMU_ENC_REF_VALUE_LEN(op->u.ref.referenced_key_len);
      break;
    case IMMU_DB_OP_ZADD:
      if ((rc = validate_zadd(&op->u.zadd, 1)) != 0)
        return rc;
      total += ZADD_KEY_LEN(op->u.zadd.set_len, op->u.zadd.key_len);
      break;
    default:
      return illegal("unknown operation");
    }
  }
  if (!no_wait && (rc = wait_index(db, last_committed(db))) != 0)
    return rc;
  for (size_t i = 0; i < n; i++) {
    const immu_db_op *op = &ops[i];
    if (op->kind == IMMU_DB_OP_REF) {
      const immu_db_ref_req *r = &op->u.ref;
      if ((rc = check_ref_key(db, r->key, r->key_len)) != 0 ||
          (rc = exec_check_target(db, ops, n, r->referenced_key,
                                  r->referenced_key_len, r->at_tx,
                                  r->bound_ref)) != 0)
        return rc;
    } else if (op->kind == IMMU_DB_OP_ZADD) {
      const immu_db_zadd_req *z = &op->u.zadd;
      if ((rc = exec_check_target(db, ops, n, z->key, z->key_len, z->at_tx,
                                  z->bound_ref)) != 0)
        return rc;
    }
  }

  e = immu__calloc(n, sizeof *e);
  buf = immu__malloc(total);
  slots = immu__calloc(n, sizeof *slots);
  if (e == NULL || buf == NULL || slots == NULL) {
    rc = fail(IMMU_ENOMEM, "out of memory");
    goto out;
  }
  p = buf;
  for (size_t i = 0; i < n; i++) {
    const immu_db_op *op = &ops[i];
    size_t cap = total - (size_t)(p - buf), len;
    if (op->kind == IMMU_DB_OP_KV) {
      (void)immu_enc_key(op->u.kv.key, op->u.kv.key_len, p, cap, &len);
      e[i].key = p;
      e[i].klen = len;
      p += len;
      cap -= len;
      (void)immu_enc_value(op->u.kv.value, op->u.kv.value_len, p, cap, &len);
      e[i].value = p;
      e[i].vlen = len;
      p += len;
    } else if (op->kind == IMMU_DB_OP_REF) {
      int self = op->u.ref.bound_ref && op->u.ref.at_tx == 0;
      len = enc_ref(&op->u.ref, self ? UNBOUND_TX : op->u.ref.at_tx, p, cap,
                    &e[i]);
      if (self) /* value = 0x01 || u64(atTx) || ... */
        slots[nslots++] = p + e[i].klen + 1;
      p += len;
    } else {
      int self = op->u.zadd.bound_ref && op->u.zadd.at_tx == 0;
      len = enc_zadd(&op->u.zadd, self ? UNBOUND_TX : op->u.zadd.at_tx, p, cap,
                     &e[i]);
      if (self) /* key ends with u64(atTx) */
        slots[nslots++] = p + len - 8;
      p += len;
    }
  }
  b = (bind_ctx){slots, nslots};
  rc = commit(db, e, n, nslots > 0 ? exec_bind : NULL, &b, no_wait, hdr);
out:
  immu__free(e);
  immu__free(buf);
  immu__free(slots);
  return rc;
}

/* ------------------------------------------------------------------ */
/* Get, GetAll                                                         */
/* ------------------------------------------------------------------ */

int immu_db_get(immu_db *db, const immu_db_key_req *req, immu_db_entry *out) {
  rawval r = {0};
  skey k;
  int rc;

  memset(out, 0, sizeof *out);
  if (req == NULL || req->key == NULL || req->key_len == 0)
    return illegal("empty key");
  if (req->at_tx > 0 && req->since_tx > 0)
    return illegal("only one of atTx or sinceTx can be specified");
  if (req->at_tx > 0 && req->at_revision != 0)
    return illegal("only one of atTx or atRevision can be specified");
  if (req->at_tx == 0 &&
      (rc = read_prologue(db, req->since_tx, req->no_wait)) != 0)
    return rc;
  if ((rc = skey_make(&k, req->key, req->key_len)) != 0)
    return rc;
  if (req->at_tx > 0) {
    rc = raw_at_tx(db, k.p, k.n, req->at_tx, &r);
  } else if (req->at_revision == 0) {
    rc = raw_latest(db, k.p, k.n, &r);
  } else {
    /* immudb getAtRevision: > 0 the nth version, < 0 counted back from the
     * latest (whose revision is the history count). */
    uint64_t rev, hc;
    if ((rc = latest_revision(db, k.p, k.n, &hc)) != 0)
      goto out;
    if (req->at_revision > 0) {
      rev = (uint64_t)req->at_revision;
    } else {
      uint64_t back = (uint64_t)(-(req->at_revision + 1)) + 1;
      rev = hc > back ? hc - back : 0;
    }
    if (rev == 0 || rev > hc)
      rc = fail(IMMU_ERANGE, "invalid key revision number");
    else
      rc = raw_revision(db, k.p, k.n, rev, &r);
  }
  if (rc == 0)
    rc = make_entry(db, req->key, req->key_len, &r, 0, out);
out:
  skey_free(&k);
  raw_clear(&r);
  return rc;
}

int immu_db_get_cached(immu_db *db, const immu_db_key_req *req,
                       immu_db_entry *out) {
  immu_index_entry e;
  rawval r = {0};
  skey k;
  uint64_t want = 0;
  int rc;

  memset(out, 0, sizeof *out);
  if (req == NULL || req->key == NULL || req->key_len == 0)
    return illegal("empty key");
  if (req->at_tx > 0 || req->at_revision != 0)
    return IMMU_EWOULDBLOCK;
  if ((rc = check_since(db, req->since_tx, &want)) != 0)
    return rc;
  /* noWait still covers the txs answered before the index had them (the
   * server's Set, immu_store_ack_unindexed): immudb would have indexed
   * them before answering. */
  if (req->no_wait)
    want = immu_store_acked_id(db->st);
  if (immu_store_indexed_id(db->st) < want)
    return IMMU_EWOULDBLOCK;
  if ((rc = skey_make(&k, req->key, req->key_len)) != 0)
    return rc;
  memset(&e, 0, sizeof e);
  rc = immu__index_get_latest_cached(db->ix, k.p, k.n, &e);
  if (rc == IMMU_ENOTFOUND)
    rc = fail(rc, "key not found");
  else if (rc == 0 && !e.has_inline)
    rc = IMMU_EWOULDBLOCK;
  else if (rc == 0)
    rc = raw_take_index(db, &e, &r);
  else if (rc != IMMU_EWOULDBLOCK)
    rc = index_read_fail(rc);
  immu__index_entry_clear(&e);
  if (rc == 0 && r.n > 0 && r.v[0] == IMMU_VALUE_REF)
    rc = IMMU_EWOULDBLOCK; /* resolving it may read the log */
  if (rc == 0)
    rc = make_entry(db, req->key, req->key_len, &r, 0, out);
  skey_free(&k);
  raw_clear(&r);
  return rc;
}

int immu_db_get_all(immu_db *db, const immu_buf *keys, size_t n,
                    uint64_t since_tx, immu_db_entries *out) {
  immu_db_entry e;
  int rc;

  memset(out, 0, sizeof *out);
  if (n > 0 && keys == NULL)
    return illegal("no keys");
  if ((rc = check_limit(db, n)) != 0 ||
      (rc = read_prologue(db, since_tx, 0)) != 0)
    return rc;
  for (size_t i = 0; i < n; i++) {
    if (keys[i].len == 0)
      continue; /* like immudb: no such key */
    rc = get_at(db, keys[i].ptr, keys[i].len, 0, 0, &e);
    if (rc == IMMU_ENOTFOUND)
      continue;
    if (rc != 0 || (rc = entries_push(out, &e)) != 0)
      goto fail;
  }
  return 0;
fail:
  immu_db_entries_clear(out);
  return rc;
}

/* ------------------------------------------------------------------ */
/* History                                                             */
/* ------------------------------------------------------------------ */

typedef struct hist_ctx {
  immu_db *db;
  const immu_db_history_req *req;
  uint64_t left;
  immu_db_entries *out;
  int failed; /* the callback (not the index) produced the error */
} hist_ctx;

static int hist_one(hist_ctx *c, const immu_index_entry *ie) {
  immu_db_entry e;
  rawval r = {0};
  int rc;

  if ((rc = raw_from_index(c->db, ie, &r)) != 0)
    return rc;
  memset(&e, 0, sizeof e);
  e.tx = r.tx;
  e.revision = r.rev;
  e.key = dup_bytes(c->req->key, c->req->key_len);
  e.key_len = c->req->key_len;
  if (e.key == NULL) {
    raw_clear(&r);
    return fail(IMMU_ENOMEM, "out of memory");
  }
  /* immudb History: TrimPrefix of the stored value, references unresolved */
  if (r.n > 0) {
    memmove(r.v, r.v + 1, r.n - 1);
    r.n--;
  }
  e.value = r.v;
  e.value_len = r.n;
  r.v = NULL;
  if ((rc = entries_push(c->out, &e)) != 0)
    return rc;
  return --c->left == 0 ? 1 : 0;
}

static int hist_cb(void *arg, const immu_index_entry *ie) {
  hist_ctx *c = arg;
  int rc = hist_one(c, ie);
  if (rc < 0)
    c->failed = 1;
  return rc;
}

int immu_db_history(immu_db *db, const immu_db_history_req *req,
                    immu_db_entries *out) {
  hist_ctx c;
  skey k;
  uint64_t hc, from;
  int rc;

  memset(out, 0, sizeof *out);
  if (req == NULL || req->key == NULL || req->key_len == 0)
    return illegal("empty key");
  if (req->limit < 0)
    return illegal("negative limit");
  if ((rc = check_limit(db, (uint64_t)req->limit)) != 0 ||
      (rc = read_prologue(db, req->since_tx, 0)) != 0)
    return rc;
  if ((rc = skey_make(&k, req->key, req->key_len)) != 0)
    return rc;
  if ((rc = latest_revision(db, k.p, k.n, &hc)) != 0)
    goto out;
  if (req->offset >= hc)
    goto out; /* empty */
  from = req->desc ? hc - req->offset : req->offset + 1;
  c = (hist_ctx){db, req, req->limit ? (uint64_t)req->limit : db->max_result,
                 out, 0};
  rc = immu__index_history(db->ix, k.p, k.n, from, req->desc, hist_cb, &c);
  if (rc < 0 && !c.failed)
    rc = engine_fail(rc, "reading the index");
  if (rc > 0)
    rc = 0;
out:
  skey_free(&k);
  if (rc != 0)
    immu_db_entries_clear(out);
  return rc;
}

/* ------------------------------------------------------------------ */
/* Scan                                                                */
/* ------------------------------------------------------------------ */

typedef struct scan_ctx {
  immu_db *db;
  uint64_t skip;
  uint64_t left;
  immu_db_entries *out;
  int failed;
} scan_ctx;

static int scan_one(scan_ctx *c, const immu_index_entry *ie) {
  immu_db_entry e;
  rawval r = {0};
  int rc;

  if (ie->klen < 2 || ie->key[0] != IMMU_PREFIX_SET)
    return 0; /* not a user key (cannot happen with the 0x00 prefix) */
  if (c->skip > 0) {
    c->skip--;
    return 0;
  }
  if ((rc = raw_from_index(c->db, ie, &r)) != 0)
    return rc;
  rc = make_entry(c->db, ie->key + 1, ie->klen - 1, &r, 0, &e);
  if (rc == IMMU_ENOTFOUND)
    return 0; /* a reference whose target is gone */
  if (rc != 0 || (rc = entries_push(c->out, &e)) != 0)
    return rc;
  return --c->left == 0 ? 1 : 0;
}

static int scan_cb(void *arg, const immu_index_entry *ie) {
  scan_ctx *c = arg;
  int rc = scan_one(c, ie);
  if (rc < 0)
    c->failed = 1;
  return rc;
}

int immu_db_scan(immu_db *db, const immu_db_scan_req *req,
                 immu_db_entries *out) {
  skey pre, seek, end;
  const uint8_t *lo = NULL, *hi = NULL;
  size_t lon = 0, hin = 0;
  int lo_incl = 0, hi_incl = 0, rc;
  scan_ctx c;

  memset(out, 0, sizeof *out);
  if (req == NULL)
    return illegal("no request");
  if ((rc = check_limit(db, req->limit)) != 0 ||
      (rc = read_prologue(db, req->since_tx, req->no_wait)) != 0)
    return rc;
  pre.p = seek.p = end.p = NULL;
  if ((rc = skey_make(&pre, req->prefix, req->prefix_len)) != 0 ||
      (rc = skey_make(&seek, req->seek_key, req->seek_key_len)) != 0 ||
      (rc = skey_make(&end, req->end_key, req->end_key_len)) != 0)
    goto out;
  if (req->seek_key_len > 0) {
    if (req->desc) {
      hi = seek.p, hin = seek.n, hi_incl = req->inclusive_seek;
    } else {
      lo = seek.p, lon = seek.n, lo_incl = req->inclusive_seek;
    }
  }
  if (req->end_key_len > 0) {
    if (req->desc) {
      lo = end.p, lon = end.n, lo_incl = req->inclusive_end;
    } else {
      hi = end.p, hin = end.n, hi_incl = req->inclusive_end;
    }
  }
  c = (scan_ctx){db, req->offset, req->limit ? req->limit : db->max_result, out,
                 0};
  rc = immu__index_scan(db->ix, pre.p, pre.n, lo, lon, lo_incl, hi, hin,
                        hi_incl, req->desc, scan_cb, &c);
  if (rc < 0 && !c.failed)
    rc = engine_fail(rc, "scanning the index");
  if (rc > 0)
    rc = 0;
out:
  if (pre.p)
    skey_free(&pre);
  if (seek.p)
    skey_free(&seek);
  if (end.p)
    skey_free(&end);
  if (rc != 0)
    immu_db_entries_clear(out);
  return rc;
}

/* ------------------------------------------------------------------ */
/* ZScan                                                               */
/* ------------------------------------------------------------------ */

typedef struct zscan_ctx {
  immu_db *db;
  uint64_t skip;
  uint64_t left;
  immu_db_zentries *out;
  int failed;
} zscan_ctx;

static int zscan_one(zscan_ctx *c, const immu_index_zmember *m) {
  immu_db_zentries *l = c->out;
  immu_db_zentry z;
  void *v;
  int rc;

  if (c->skip > 0) {
    c->skip--;
    return 0;
  }
  memset(&z, 0, sizeof z);
  /* immudb reads members with one resolution step already used: a member
   * key that became a reference is an error, a missing one is skipped. */
  rc = get_at(c->db, m->key, m->klen, m->at_tx, MAX_RESOLUTION, &z.entry);
  if (rc == IMMU_ENOTFOUND)
    return 0;
  if (rc != 0)
    return rc;
  z.set = dup_bytes(m->set, m->slen);
  z.set_len = m->slen;
  z.key = dup_bytes(m->key, m->klen);
  z.key_len = m->klen;
  z.score = m->score;
  z.at_tx = m->at_tx;
  v = l->v;
  if (z.set == NULL || z.key == NULL ||
      (rc = grow(&v, &l->cap_, l->n, sizeof *l->v)) != 0) {
    l->v = v;
    immu__free(z.set);
    immu__free(z.key);
    immu_db_entry_clear(&z.entry);
    return fail(IMMU_ENOMEM, "out of memory");
  }
  l->v = v;
  l->v[l->n++] = z;
  return --c->left == 0 ? 1 : 0;
}

static int zscan_cb(void *arg, const immu_index_zmember *m) {
  zscan_ctx *c = arg;
  int rc = zscan_one(c, m);
  if (rc < 0)
    c->failed = 1;
  return rc;
}

/* With inclusive_seek the seek member itself comes first, if it exists and
 * lies within the score bounds (the index's seek is exclusive). */
static int zscan_seek_member(immu_db *db, const immu_db_zscan_req *req,
                             double min, double max, zscan_ctx *c) {
  immu_index_entry e;
  immu_index_zmember m;
  uint8_t *k;
  size_t kn;
  int rc;

  if (isnan(req->seek_score) || req->seek_score < min || req->seek_score > max)
    return 0;
  if ((k = immu__malloc(ZADD_KEY_LEN(req->set_len, req->seek_key_len))) == NULL)
    return fail(IMMU_ENOMEM, "out of memory");
  kn = zadd_key(req->set, req->set_len, req->seek_score, req->seek_key,
                req->seek_key_len, req->seek_at_tx, k);
  memset(&e, 0, sizeof e);
  rc = immu__index_get_latest(db->ix, k, kn, &e);
  immu__free(k);
  if (rc == IMMU_ENOTFOUND) {
    immu__index_entry_clear(&e);
    return 0;
  }
  if (rc != 0) {
    immu__index_entry_clear(&e);
    return index_read_fail(rc);
  }
  m = (immu_index_zmember){req->set,      req->set_len,      req->seek_score,
                           req->seek_key, req->seek_key_len, req->seek_at_tx,
                           e.tx};
  immu__index_entry_clear(&e);
  return zscan_cb(c, &m);
}

int immu_db_zscan(immu_db *db, const immu_db_zscan_req *req,
                  immu_db_zentries *out) {
  double min = -INFINITY, max = INFINITY;
  int has_seek, rc;
  zscan_ctx c;

  memset(out, 0, sizeof *out);
  if (req == NULL || req->set == NULL || req->set_len == 0)
    return illegal("empty set");
  has_seek = req->seek_key != NULL && req->seek_key_len > 0;
  if (req->seek_at_tx > 0 && !has_seek)
    return illegal("seekKey must be specified when seekAtTx is specified");
  if (req->has_min_score)
    min = req->min_score;
  if (req->has_max_score)
    max = req->max_score;
  if (isnan(min) || isnan(max) || (has_seek && isnan(req->seek_score)))
    return illegal("score is NaN");
  if ((rc = check_limit(db, req->limit)) != 0 ||
      (rc = read_prologue(db, req->since_tx, req->no_wait)) != 0)
    return rc;
  c = (zscan_ctx){db, req->offset, req->limit ? req->limit : db->max_result,
                  out, 0};
  rc = 0;
  if (has_seek && req->inclusive_seek)
    rc = zscan_seek_member(db, req, min, max, &c);
  if (rc == 0 && min <= max) {
    rc = immu__index_zscan(db->ix, req->set, req->set_len, min, 0, max, 0,
                           has_seek ? req->seek_key : NULL, req->seek_key_len,
                           req->seek_score, req->seek_at_tx, req->desc,
                           zscan_cb, &c);
    if (rc < 0 && !c.failed)
      rc = engine_fail(rc, "scanning the index");
  }
  if (rc > 0)
    rc = 0;
  if (rc != 0)
    immu_db_zentries_clear(out);
  return rc;
}

/* ------------------------------------------------------------------ */
/* Count                                                               */
/* ------------------------------------------------------------------ */

int immu_db_count(immu_db *db, const uint8_t *prefix, size_t plen,
                  uint64_t *out) {
  skey k;
  int rc;
  *out = 0;
  if (plen > 0 && prefix == NULL)
    return illegal("no prefix bytes");
  if ((rc = wait_index(db, last_committed(db))) != 0)
    return rc;
  if ((rc = skey_make(&k, prefix, plen)) != 0)
    return rc;
  rc = immu__index_count(db->ix, k.p, k.n, out);
  skey_free(&k);
  if (rc != 0)
    return engine_fail(rc, "counting");
  return 0;
}

int immu_db_count_all(immu_db *db, uint64_t *out) {
  return immu_db_count(db, NULL, 0, out);
}

/* ------------------------------------------------------------------ */
/* Transactions                                                        */
/* ------------------------------------------------------------------ */

void immu_db_tx_clear(immu_db_tx *tx) {
  if (tx == NULL)
    return;
  immu__free(tx->entries);
  immu__free(tx->mem_);
  memset(tx, 0, sizeof *tx);
}

void immu_db_tx_list_clear(immu_db_tx_list *l) {
  if (l == NULL)
    return;
  for (size_t i = 0; i < l->n; i++)
    immu_db_tx_clear(&l->v[i]);
  immu__free(l->v);
  memset(l, 0, sizeof *l);
}

/* Reads tx |id| into |out| (the entries point into the record buffer, which
 * |out| keeps). Also returns the decoded record when |rec| is not NULL
 * (caller frees with immu__txrec_free; it borrows out->mem_). */
static int load_tx(immu_db *db, uint64_t id, immu_db_tx *out,
                   immu_txrec *rec_out) {
  immu_txrec rec;
  uint8_t *buf = NULL;
  int rc;

  memset(out, 0, sizeof *out);
  if ((rc = read_tx(db, id, &rec, &buf)) != 0)
    return rc;
  out->entries = immu__calloc(rec.hdr.nentries, sizeof *out->entries);
  if (out->entries == NULL) {
    immu__txrec_free(&rec);
    immu__free(buf);
    return fail(IMMU_ENOMEM, "out of memory");
  }
  for (uint32_t i = 0; i < rec.hdr.nentries; i++) {
    const immu_txrec_entry *s = &rec.entries[i];
    out->entries[i] = (immu_db_tx_entry){s->key,  s->klen,  s->md,  s->mdlen,
                                         s->hval, s->value, s->vlen};
  }
  out->header = rec.hdr;
  out->alh = rec.alh;
  out->nentries = rec.hdr.nentries;
  out->mem_ = buf;
  if (rec_out != NULL)
    *rec_out = rec;
  else
    immu__txrec_free(&rec);
  return 0;
}

int immu_db_tx_by_id(immu_db *db, uint64_t id, immu_db_tx *out) {
  return load_tx(db, id, out, NULL);
}

int immu_db_tx_scan(immu_db *db, const immu_db_tx_scan_req *req,
                    immu_db_tx_list *out) {
  uint64_t last, id, limit;
  int rc = 0;

  memset(out, 0, sizeof *out);
  if (req == NULL)
    return illegal("no request");
  if ((rc = check_limit(db, req->limit)) != 0)
    return rc;
  limit = req->limit ? req->limit : db->max_result;
  last = last_committed(db);
  if (req->desc) {
    id =
        req->initial_tx == 0 || req->initial_tx > last ? last : req->initial_tx;
  } else {
    id = req->initial_tx == 0 ? 1 : req->initial_tx;
  }
  while (out->n < limit && id >= 1 && id <= last) {
    void *v = out->v;
    if ((rc = grow(&v, &out->cap_, out->n, sizeof *out->v)) != 0) {
      out->v = v;
      break;
    }
    out->v = v;
    if ((rc = load_tx(db, id, &out->v[out->n], NULL)) != 0)
      break;
    out->n++;
    id = req->desc ? id - 1 : id + 1;
  }
  if (rc != 0)
    immu_db_tx_list_clear(out);
  return rc;
}

void immu_db_current_state(immu_db *db, immu_db_state *out) {
  immu_store_state(db->st, &out->tx_id, &out->tx_hash);
}

/* ------------------------------------------------------------------ */
/* Verifiable calls                                                    */
/* ------------------------------------------------------------------ */

void immu_db_verifiable_tx_clear(immu_db_verifiable_tx *v) {
  if (v == NULL)
    return;
  immu_db_tx_clear(&v->tx);
  immu_dual_proof_free(&v->proof);
  memset(v, 0, sizeof *v);
}

void immu_db_verifiable_entry_clear(immu_db_verifiable_entry *v) {
  if (v == NULL)
    return;
  immu_db_entry_clear(&v->entry);
  immu_db_verifiable_tx_clear(&v->vtx);
  memset(v, 0, sizeof *v);
}

/* SPEC 7.4: the server rejects ProveSinceTx beyond the last committed tx. */
int immu_db_check_prove_since(immu_db *db, uint64_t prove_since_tx) {
  if (prove_since_tx > last_committed(db))
    return fail(IMMU_EINVAL,
                "illegal state: proveSinceTx (%" PRIu64
                ") is greater than the last committed tx",
                prove_since_tx);
  return 0;
}

static int dual_proof(immu_db *db, uint64_t source, uint64_t target,
                      immu_dual_proof *out) {
  int rc = immu_store_dual_proof(db->st, source, target, out);
  if (rc != 0) {
    memset(out, 0, sizeof *out);
    return engine_fail(rc, "building the dual proof");
  }
  return 0;
}

/* SPEC 7.4 source/target rule for a proof about tx |tx|. */
static void proof_ends(uint64_t tx, uint64_t prove_since_tx, uint64_t *source,
                       uint64_t *target) {
  if (prove_since_tx <= tx) {
    *source = prove_since_tx ? prove_since_tx : tx;
    *target = tx;
  } else {
    *source = tx;
    *target = prove_since_tx;
  }
}

/* Verifiable* write calls: tx |hdr->id| just committed, proven from
 * prove_since_tx (or itself). */
int immu_db_verifiable_tx_for(immu_db *db, const immu_tx_header *hdr,
                              uint64_t prove_since_tx,
                              immu_db_verifiable_tx *out) {
  uint64_t id = hdr->id;
  int rc;
  memset(out, 0, sizeof *out);
  if ((rc = load_tx(db, id, &out->tx, NULL)) != 0)
    return rc;
  rc = dual_proof(db, prove_since_tx ? prove_since_tx : id, id, &out->proof);
  if (rc != 0)
    immu_db_tx_clear(&out->tx);
  return rc;
}

int immu_db_verifiable_set(immu_db *db, const immu_db_kv *kvs, size_t n,
                           int no_wait, uint64_t prove_since_tx,
                           immu_db_verifiable_tx *out) {
  immu_tx_header h;
  int rc;
  memset(out, 0, sizeof *out);
  if ((rc = immu_db_check_prove_since(db, prove_since_tx)) != 0 ||
      (rc = immu_db_set(db, kvs, n, no_wait, &h)) != 0)
    return rc;
  return immu_db_verifiable_tx_for(db, &h, prove_since_tx, out);
}

int immu_db_verifiable_set_reference(immu_db *db, const immu_db_ref_req *req,
                                     uint64_t prove_since_tx,
                                     immu_db_verifiable_tx *out) {
  immu_tx_header h;
  int rc;
  memset(out, 0, sizeof *out);
  if ((rc = immu_db_check_prove_since(db, prove_since_tx)) != 0 ||
      (rc = immu_db_set_reference(db, req, &h)) != 0)
    return rc;
  return immu_db_verifiable_tx_for(db, &h, prove_since_tx, out);
}

int immu_db_verifiable_zadd(immu_db *db, const immu_db_zadd_req *req,
                            uint64_t prove_since_tx,
                            immu_db_verifiable_tx *out) {
  immu_tx_header h;
  int rc;
  memset(out, 0, sizeof *out);
  if ((rc = immu_db_check_prove_since(db, prove_since_tx)) != 0 ||
      (rc = immu_db_zadd(db, req, &h)) != 0)
    return rc;
  return immu_db_verifiable_tx_for(db, &h, prove_since_tx, out);
}

/* Inclusion proof of store key |k| in |rec| (spec 4.2), checking on the
 * way that the recomputed Eh matches the header. */
static int inclusion_proof(const immu_txrec *rec, const uint8_t *k, size_t kn,
                           immu_db_inclusion_proof *out) {
  immu_digest *d, root;
  uint32_t n = rec->hdr.nentries;
  long leaf = find_entry(rec, k, kn);
  int rc = 0;

  if (leaf < 0)
    return fail(IMMU_ECORRUPT, "corrupted data: key missing from tx %" PRIu64,
                rec->hdr.id);
  if ((d = immu__malloc((size_t)n * sizeof *d)) == NULL)
    return fail(IMMU_ENOMEM, "out of memory");
  for (uint32_t i = 0; i < n && rc == 0; i++) {
    const immu_txrec_entry *e = &rec->entries[i];
    /* SPEC 2: the digest formula follows the tx header's version */
    rc = immu_entry_digest(rec->hdr.version, e->key, e->klen, e->md, e->mdlen,
                           &e->hval, &d[i]);
  }
  if (rc == 0)
    rc = immu_htree_root(d, n, &root);
  if (rc == 0 && !immu_digest_eq(&root, &rec->hdr.eh))
    rc = IMMU_ECORRUPT;
  if (rc == 0)
    rc = immu_htree_proof(d, n, (size_t)leaf, out->terms, &out->nterms);
  immu__free(d);
  if (rc != 0)
    return fail(IMMU_ECORRUPT,
                "corrupted data: entries of tx %" PRIu64 " do not match its Eh",
                rec->hdr.id);
  out->leaf = (uint32_t)leaf;
  out->width = n;
  return 0;
}

int immu_db_verifiable_get(immu_db *db, const immu_db_key_req *req,
                           uint64_t prove_since_tx,
                           immu_db_verifiable_entry *out) {
  immu_txrec rec;
  const uint8_t *vkey;
  size_t vklen;
  uint64_t vtx, source, target;
  skey k;
  int rc;

  memset(out, 0, sizeof *out);
  if ((rc = immu_db_check_prove_since(db, prove_since_tx)) != 0 ||
      (rc = immu_db_get(db, req, &out->entry)) != 0)
    return rc;
  /* SPEC 7.4: prove the requested key's own entry (the reference's, when
   * it is one) in the tx that wrote it. */
  if (out->entry.has_referenced_by) {
    vtx = out->entry.referenced_by.tx;
    vkey = out->entry.referenced_by.key;
    vklen = out->entry.referenced_by.key_len;
  } else {
    vtx = out->entry.tx;
    vkey = out->entry.key;
    vklen = out->entry.key_len;
  }
  if ((rc = load_tx(db, vtx, &out->vtx.tx, &rec)) != 0)
    goto fail;
  if ((rc = skey_make(&k, vkey, vklen)) == 0) {
    rc = inclusion_proof(&rec, k.p, k.n, &out->inclusion);
    skey_free(&k);
  }
  immu__txrec_free(&rec);
  if (rc != 0)
    goto fail;
  proof_ends(vtx, prove_since_tx, &source, &target);
  if ((rc = dual_proof(db, source, target, &out->vtx.proof)) != 0)
    goto fail;
  return 0;
fail:
  immu_db_verifiable_entry_clear(out);
  return rc;
}

int immu_db_verifiable_tx_by_id(immu_db *db, uint64_t id,
                                uint64_t prove_since_tx,
                                immu_db_verifiable_tx *out) {
  uint64_t source, target;
  int rc;

  memset(out, 0, sizeof *out);
  if ((rc = immu_db_check_prove_since(db, prove_since_tx)) != 0 ||
      (rc = load_tx(db, id, &out->tx, NULL)) != 0)
    return rc;
  proof_ends(id, prove_since_tx, &source, &target);
  if ((rc = dual_proof(db, source, target, &out->proof)) != 0)
    immu_db_tx_clear(&out->tx);
  return rc;
}

/* ------------------------------------------------------------------ */
/* Maintenance                                                         */
/* ------------------------------------------------------------------ */

void immu_db_get_stats(immu_db *db, immu_db_stats *st) {
  immu_store_stats s;
  immu_store_get_stats(db->st, &s);
  st->txs = s.txs;
  st->entries = s.entries;
  st->indexed_tx = s.indexed_tx;
  st->index_lag = s.index_lag;
  st->log_bytes = s.log_bytes;
  st->txi_bytes = s.txi_bytes;
  st->aht_bytes = s.aht_bytes;
  st->index_bytes = s.index_bytes;
  st->groups = s.groups;
  st->fsyncs = s.fsyncs;
  st->value_bytes = s.value_bytes;
}

int immu_db_verify(immu_db *db,
                   void (*progress)(void *arg, uint64_t done, uint64_t total),
                   void *arg) {
  char *msg = NULL;
  int rc = immu_store_verify(db->st, progress, arg, &msg);
  if (rc != 0) {
    if (msg != NULL)
      fail(rc, "%s", msg);
    else
      engine_fail(rc, "verifying");
  }
  immu__free(msg);
  return rc;
}

int immu_db_flush_index(immu_db *db) {
  int rc = immu__index_flush(db->ix);
  return rc ? engine_fail(rc, "flushing the index") : 0;
}

int immu_db_compact_index(immu_db *db) {
  int rc = immu__index_compact(db->ix);
  return rc ? engine_fail(rc, "compacting the index") : 0;
}
