/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Trusted-state persistence of the client SDK (client_int.h, the "State
 * directory" part of include/immudb/client.h).
 *
 * Files under the state directory (all text, all ending with a checksum
 * line "sha256 <hex of SHA-256 of every preceding byte>"):
 *
 *   state-<server id>        "immudb-c-state 1"
 *                            then per database:
 *                            "db <hex name> <txId> <hex Alh> <hex sig|->"
 *   state-<server id>.lock   empty; flock(2)ed for a whole verified call
 *   identity-<h>             "immudb-c-identity 1", "address <hex host:port>",
 *                            optional "uuid <hex>" and "key <hex sha256>";
 *                            h = first 16 bytes of SHA-256("host:port") in hex
 *   identity.lock            flock(2)ed while an identity file is updated
 *
 * Invariants
 *   - A file is only ever replaced whole: written to a unique temp file,
 *     fsync'ed, renamed over the old one, then the directory is fsync'ed.
 *     Readers therefore see the old or the new file, never a mix.
 *   - A file that exists but does not parse or fails its checksum is
 *     IMMU_ECORRUPT. It is never treated as absent: that would silently
 *     reset the trusted state (CVE-2022-39199).
 *   - Merge rule: a database's stored state never moves to a lower txId;
 *     the same txId with another Alh is a fork (IMMU_EVERIFY).
 *
 * Thread-safety: one store is used by one client handle; its mutex
 * serialises the handle's verified calls and the flock serialises
 * processes (each lock opens the lock file anew, so a forked child never
 * shares its parent's lock).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include "client/client_int.h"
#include "core/mem.h"
#include "immudb/crypto.h"
#include "immudb/err.h"

#define STATE_MAGIC "immudb-c-state 1"
#define IDENT_MAGIC "immudb-c-identity 1"
#define MAX_FILE (4u << 20) /* larger state files are refused as corrupt */
#define MAX_UUID 128

struct immu__cli_store {
  pthread_mutex_t mu;
  char *dir;  /* NULL: memory only */
  char *path; /* state file */
  char *lock_path;
  int lock_fd; /* >= 0 while locked (file mode) */
  immu__cli_state *mem; /* memory mode: the states */
  size_t nmem;
};

/* ------------------------------------------------------------------ */
/* Small helpers                                                       */
/* ------------------------------------------------------------------ */

static void seterr(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void seterr(char *err, size_t errlen, const char *fmt, ...) {
  va_list ap;
  if (err == NULL || errlen == 0)
    return;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
}

static char *path_join(const char *dir, const char *name) {
  size_t a = strlen(dir), b = strlen(name);
  char *p = immu__malloc(a + b + 2);
  if (p == NULL)
    return NULL;
  memcpy(p, dir, a);
  p[a] = '/';
  memcpy(p + a + 1, name, b + 1);
  return p;
}

static const char HEX[] = "0123456789abcdef";

static void hex_encode(const uint8_t *p, size_t n, char *out) {
  for (size_t i = 0; i < n; i++) {
    out[2 * i] = HEX[p[i] >> 4];
    out[2 * i + 1] = HEX[p[i] & 15];
  }
  out[2 * n] = '\0';
}

static int hexval(char c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  return -1;
}

/* Decodes |n| hex chars (even) at |s| into |out| (capacity |cap|).
 * Returns the byte count or -1. */
static long hex_decode(const char *s, size_t n, uint8_t *out, size_t cap) {
  if (n % 2 != 0 || n / 2 > cap)
    return -1;
  for (size_t i = 0; i < n / 2; i++) {
    int hi = hexval(s[2 * i]), lo = hexval(s[2 * i + 1]);
    if (hi < 0 || lo < 0)
      return -1;
    out[i] = (uint8_t)(hi << 4 | lo);
  }
  return (long)(n / 2);
}

/* Growable text buffer. */
typedef struct sbuf {
  char *p;
  size_t len, cap;
  int oom;
} sbuf;

static void sb_add(sbuf *b, const char *s, size_t n) {
  if (b->oom)
    return;
  if (b->len + n + 1 > b->cap) {
    size_t nc = b->cap ? b->cap : 256;
    while (nc < b->len + n + 1)
      nc *= 2;
    char *np = immu__realloc(b->p, nc);
    if (np == NULL) {
      b->oom = 1;
      return;
    }
    b->p = np;
    b->cap = nc;
  }
  memcpy(b->p + b->len, s, n);
  b->len += n;
  b->p[b->len] = '\0';
}

static void sb_str(sbuf *b, const char *s) { sb_add(b, s, strlen(s)); }

static void sb_hex(sbuf *b, const uint8_t *p, size_t n) {
  char tmp[129];
  while (n > 0) {
    size_t k = n > 64 ? 64 : n;
    hex_encode(p, k, tmp);
    sb_add(b, tmp, 2 * k);
    p += k;
    n -= k;
  }
}

/* Appends the checksum line over everything so far. */
static void sb_seal(sbuf *b) {
  immu_digest d;
  char hex[65];
  if (b->oom)
    return;
  immu_sha256(b->p, b->len, &d);
  immu_digest_hex(&d, hex);
  sb_str(b, "sha256 ");
  sb_str(b, hex);
  sb_str(b, "\n");
}

/* Reads |path| whole. Missing file: returns 0 with *out NULL. */
static int read_whole(const char *path, char **out, size_t *len, char *err,
                      size_t errlen) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  char *buf = NULL;
  size_t n = 0, cap = 0;

  *out = NULL;
  *len = 0;
  if (fd < 0) {
    if (errno == ENOENT)
      return 0;
    int e = errno;
    seterr(err, errlen, "cannot open %s: %s", path, strerror(e));
    return -e;
  }
  for (;;) {
    if (n + 1 >= cap) {
      size_t nc = cap ? cap * 2 : 4096;
      if (nc > MAX_FILE + 2) {
        immu__free(buf);
        close(fd);
        seterr(err, errlen, "%s: file too large for a state file", path);
        return IMMU_ECORRUPT;
      }
      char *nb = immu__realloc(buf, nc);
      if (nb == NULL) {
        immu__free(buf);
        close(fd);
        return IMMU_ENOMEM;
      }
      buf = nb;
      cap = nc;
    }
    ssize_t r = read(fd, buf + n, cap - n - 1);
    if (r < 0) {
      if (errno == EINTR)
        continue;
      int e = errno;
      immu__free(buf);
      close(fd);
      seterr(err, errlen, "cannot read %s: %s", path, strerror(e));
      return -e;
    }
    if (r == 0)
      break;
    n += (size_t)r;
  }
  close(fd);
  buf[n] = '\0';
  *out = buf;
  *len = n;
  return 0;
}

/* fsync of the directory holding |path|. */
static int fsync_parent(const char *path) {
  const char *slash = strrchr(path, '/');
  char *dir;
  int fd, rc = 0;

  if (slash == NULL)
    dir = immu__strndup(".", 1);
  else if (slash == path)
    dir = immu__strndup("/", 1);
  else
    dir = immu__strndup(path, (size_t)(slash - path));
  if (dir == NULL)
    return IMMU_ENOMEM;
  fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  immu__free(dir);
  if (fd < 0)
    return -errno;
  if (fsync(fd) != 0 && errno != EINVAL)
    rc = -errno;
  close(fd);
  return rc;
}

/* Atomically replaces |path| with |len| bytes at |data|. */
static int write_atomic(const char *path, const char *data, size_t len,
                        char *err, size_t errlen) {
  static atomic_ulong seq;
  size_t plen = strlen(path);
  char *tmp = immu__malloc(plen + 64);
  int fd, rc = 0;
  size_t off = 0;

  if (tmp == NULL)
    return IMMU_ENOMEM;
  snprintf(tmp, plen + 64, "%s.tmp.%ld.%lu", path, (long)getpid(),
           (unsigned long)atomic_fetch_add(&seq, 1));
  fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) {
    rc = -errno;
    seterr(err, errlen, "cannot create %s: %s", tmp, strerror(-rc));
    immu__free(tmp);
    return rc;
  }
  while (off < len) {
    ssize_t w = write(fd, data + off, len - off);
    if (w < 0) {
      if (errno == EINTR)
        continue;
      rc = -errno;
      break;
    }
    off += (size_t)w;
  }
  if (rc == 0 && fsync(fd) != 0)
    rc = -errno;
  if (close(fd) != 0 && rc == 0)
    rc = -errno;
  if (rc == 0 && rename(tmp, path) != 0)
    rc = -errno;
  if (rc != 0) {
    seterr(err, errlen, "cannot write %s: %s", path, strerror(-rc));
    unlink(tmp);
    immu__free(tmp);
    return rc;
  }
  immu__free(tmp);
  if ((rc = fsync_parent(path)) != 0)
    seterr(err, errlen, "cannot sync the directory of %s: %s", path,
           immu_strerror(rc));
  return rc;
}

/* mkdir -p |dir| with mode 0700 for the directories it creates. */
static int mkdirs(const char *dir) {
  size_t n = strlen(dir);
  char *p = immu__strndup(dir, n);
  int rc = 0;
  if (p == NULL)
    return IMMU_ENOMEM;
  for (size_t i = 1; i <= n; i++) {
    if (p[i] == '/' || p[i] == '\0') {
      char c = p[i];
      p[i] = '\0';
      if (mkdir(p, 0700) != 0 && errno != EEXIST) {
        rc = -errno;
        break;
      }
      p[i] = c;
    }
  }
  immu__free(p);
  if (rc == 0) {
    struct stat st;
    if (stat(dir, &st) != 0)
      rc = -errno;
    else if (!S_ISDIR(st.st_mode))
      rc = -ENOTDIR;
  }
  return rc;
}

/* Splits |buf| (NUL-terminated, |len| bytes) into lines, checks the magic
 * first line and the final checksum line. On success *body points at the
 * first line after the magic and *body_end at the checksum line. */
static int check_file(const char *path, char *buf, size_t len,
                      const char *magic, char **body, char **body_end,
                      char *err, size_t errlen) {
  size_t ml = strlen(magic);
  char *last;
  immu_digest want, got;

  if (memchr(buf, '\0', len) != NULL)
    goto bad;
  if (len < ml + 1 || memcmp(buf, magic, ml) != 0 || buf[ml] != '\n')
    goto bad;
  if (len < ml + 1 + 72 || buf[len - 1] != '\n')
    goto bad;
  last = buf + len - 72; /* "sha256 " + 64 hex + "\n" */
  if (last[-1] != '\n' || memcmp(last, "sha256 ", 7) != 0)
    goto bad;
  if (hex_decode(last + 7, 64, want.b, 32) != 32)
    goto bad;
  immu_sha256(buf, (size_t)(last - buf), &got);
  if (!immu_digest_eq(&want, &got)) {
    seterr(err, errlen,
           "%s: checksum mismatch (damaged or edited state file; refusing "
           "to treat it as missing)",
           path);
    return IMMU_ECORRUPT;
  }
  *body = buf + ml + 1;
  *body_end = last;
  return 0;
bad:
  seterr(err, errlen,
         "%s: malformed state file (refusing to treat it as missing)", path);
  return IMMU_ECORRUPT;
}

/* Next whitespace-separated token of line [*p, end); NUL-terminates it. */
static char *token(char **p, char *end) {
  char *s = *p, *t;
  while (s < end && *s == ' ')
    s++;
  if (s >= end)
    return NULL;
  t = s;
  while (t < end && *t != ' ')
    t++;
  *t = '\0';
  *p = t < end ? t + 1 : end;
  return s;
}

static int parse_u64(const char *s, uint64_t *out) {
  uint64_t v = 0;
  if (*s == '\0' || strlen(s) > 20)
    return -1;
  for (; *s; s++) {
    if (*s < '0' || *s > '9')
      return -1;
    uint64_t d = (uint64_t)(*s - '0');
    if (v > (UINT64_MAX - d) / 10)
      return -1;
    v = v * 10 + d;
  }
  *out = v;
  return 0;
}

/* ------------------------------------------------------------------ */
/* State file                                                          */
/* ------------------------------------------------------------------ */

/* Parses the state file into a fresh array. Missing file: 0 states. */
static int load_states(const char *path, immu__cli_state **out, size_t *n,
                       char *err, size_t errlen) {
  char *buf = NULL, *body, *end, *line;
  size_t len, cap = 0, cnt = 0;
  immu__cli_state *v = NULL;
  int rc;

  *out = NULL;
  *n = 0;
  if ((rc = read_whole(path, &buf, &len, err, errlen)) != 0)
    return rc;
  if (buf == NULL)
    return 0;
  if ((rc = check_file(path, buf, len, STATE_MAGIC, &body, &end, err,
                       errlen)) != 0)
    goto out;
  for (line = body; line < end;) {
    char *nl = memchr(line, '\n', (size_t)(end - line));
    char *p = line, *t_kw, *t_db, *t_id, *t_alh, *t_sig;
    immu__cli_state st;
    long k;

    if (nl == NULL)
      goto bad;
    *nl = '\0';
    memset(&st, 0, sizeof st);
    t_kw = token(&p, nl);
    t_db = token(&p, nl);
    t_id = token(&p, nl);
    t_alh = token(&p, nl);
    t_sig = token(&p, nl);
    if (t_kw == NULL || strcmp(t_kw, "db") != 0 || t_db == NULL ||
        t_id == NULL || t_alh == NULL || t_sig == NULL ||
        token(&p, nl) != NULL)
      goto bad;
    k = hex_decode(t_db, strlen(t_db), (uint8_t *)st.db, IMMU_DB_NAME_MAX);
    if (k <= 0 || memchr(st.db, '\0', (size_t)k) != NULL)
      goto bad;
    st.db[k] = '\0';
    if (parse_u64(t_id, &st.tx_id) != 0 || st.tx_id == 0)
      goto bad;
    if (hex_decode(t_alh, strlen(t_alh), st.alh.b, 32) != 32)
      goto bad;
    if (strcmp(t_sig, "-") != 0) {
      k = hex_decode(t_sig, strlen(t_sig), st.sig, sizeof st.sig);
      if (k <= 0)
        goto bad;
      st.sig_len = (size_t)k;
    }
    for (size_t i = 0; i < cnt; i++)
      if (strcmp(v[i].db, st.db) == 0)
        goto bad; /* a database listed twice */
    if (cnt == cap) {
      size_t nc = cap ? cap * 2 : 8;
      immu__cli_state *nv = immu__realloc(v, nc * sizeof *nv);
      if (nv == NULL) {
        rc = IMMU_ENOMEM;
        goto out;
      }
      v = nv;
      cap = nc;
    }
    v[cnt++] = st;
    line = nl + 1;
  }
  *out = v;
  *n = cnt;
  v = NULL;
  rc = 0;
  goto out;
bad:
  seterr(err, errlen,
         "%s: malformed state line (refusing to treat the file as missing)",
         path);
  rc = IMMU_ECORRUPT;
out:
  immu__free(v);
  immu__free(buf);
  return rc;
}

static int save_states(const char *path, const immu__cli_state *v, size_t n,
                       char *err, size_t errlen) {
  sbuf b = {0};
  int rc;

  sb_str(&b, STATE_MAGIC "\n");
  for (size_t i = 0; i < n; i++) {
    char num[32];
    sb_str(&b, "db ");
    sb_hex(&b, (const uint8_t *)v[i].db, strlen(v[i].db));
    snprintf(num, sizeof num, " %" PRIu64 " ", v[i].tx_id);
    sb_str(&b, num);
    sb_hex(&b, v[i].alh.b, 32);
    sb_str(&b, " ");
    if (v[i].sig_len > 0)
      sb_hex(&b, v[i].sig, v[i].sig_len);
    else
      sb_str(&b, "-");
    sb_str(&b, "\n");
  }
  sb_seal(&b);
  if (b.oom) {
    immu__free(b.p);
    return IMMU_ENOMEM;
  }
  rc = write_atomic(path, b.p, b.len, err, errlen);
  immu__free(b.p);
  return rc;
}

/* The merge rule (see immu__cli_store_put). *changed = 1 if |v| changed.
 * |v| must have room for one more element. */
static int merge(immu__cli_state *v, size_t *n, const immu__cli_state *st,
                 int *changed, char *err, size_t errlen) {
  *changed = 0;
  for (size_t i = 0; i < *n; i++) {
    if (strcmp(v[i].db, st->db) != 0)
      continue;
    if (st->tx_id < v[i].tx_id)
      return 0; /* never backwards */
    if (st->tx_id == v[i].tx_id) {
      if (!immu_digest_eq(&st->alh, &v[i].alh)) {
        char a[65], b[65];
        immu_digest_hex(&v[i].alh, a);
        immu_digest_hex(&st->alh, b);
        seterr(err, errlen,
               "trusted state of database '%s' at tx %" PRIu64
               " has Alh %s but the new state claims %s: the server "
               "forked its history",
               st->db, st->tx_id, a, b);
        return IMMU_EVERIFY;
      }
      if (st->sig_len == v[i].sig_len &&
          memcmp(st->sig, v[i].sig, st->sig_len) == 0)
        return 0;
    }
    v[i] = *st;
    *changed = 1;
    return 0;
  }
  v[(*n)++] = *st;
  *changed = 1;
  return 0;
}

/* ------------------------------------------------------------------ */
/* Store API                                                           */
/* ------------------------------------------------------------------ */

static int id_is_safe(const char *id) {
  if (*id == '\0' || strlen(id) > 200)
    return 0;
  for (const char *p = id; *p; p++)
    if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-'))
      return 0;
  return 1;
}

int immu__cli_store_open(const char *dir, const char *server_id,
                         immu__cli_store **out, char *err, size_t errlen) {
  immu__cli_store *s;
  char name[256];
  int rc;

  if (out == NULL)
    return IMMU_EINVAL;
  *out = NULL;
  if (server_id == NULL || !id_is_safe(server_id)) {
    seterr(err, errlen, "invalid server id for the state store");
    return IMMU_EINVAL;
  }
  s = immu__calloc(1, sizeof *s);
  if (s == NULL)
    return IMMU_ENOMEM;
  s->lock_fd = -1;
  if (pthread_mutex_init(&s->mu, NULL) != 0) {
    immu__free(s);
    return IMMU_ENOMEM;
  }
  if (dir != NULL) {
    if ((rc = mkdirs(dir)) != 0) {
      seterr(err, errlen, "cannot create state directory %s: %s", dir,
             immu_strerror(rc));
      immu__cli_store_free(s);
      return rc;
    }
    s->dir = immu__strndup(dir, strlen(dir));
    snprintf(name, sizeof name, "state-%s", server_id);
    s->path = s->dir ? path_join(dir, name) : NULL;
    snprintf(name, sizeof name, "state-%s.lock", server_id);
    s->lock_path = s->dir ? path_join(dir, name) : NULL;
    if (s->dir == NULL || s->path == NULL || s->lock_path == NULL) {
      immu__cli_store_free(s);
      return IMMU_ENOMEM;
    }
  } else {
    s->mem = immu__calloc(1, sizeof *s->mem);
    if (s->mem == NULL) {
      immu__cli_store_free(s);
      return IMMU_ENOMEM;
    }
  }
  *out = s;
  return 0;
}

void immu__cli_store_free(immu__cli_store *s) {
  if (s == NULL)
    return;
  if (s->lock_fd >= 0)
    close(s->lock_fd);
  pthread_mutex_destroy(&s->mu);
  immu__free(s->dir);
  immu__free(s->path);
  immu__free(s->lock_path);
  immu__free(s->mem);
  immu__free(s);
}

/* flock(LOCK_EX) on a freshly opened |path|. Returns the fd or -errno. */
static int lock_file(const char *path) {
  int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0)
    return -errno;
  while (flock(fd, LOCK_EX) != 0) {
    if (errno != EINTR) {
      int e = errno;
      close(fd);
      return -e;
    }
  }
  return fd;
}

int immu__cli_store_lock(immu__cli_store *s, char *err, size_t errlen) {
  pthread_mutex_lock(&s->mu);
  if (s->dir != NULL) {
    int fd = lock_file(s->lock_path);
    if (fd < 0) {
      seterr(err, errlen, "cannot lock %s: %s", s->lock_path,
             immu_strerror(fd));
      pthread_mutex_unlock(&s->mu);
      return fd;
    }
    s->lock_fd = fd;
  }
  return 0;
}

void immu__cli_store_unlock(immu__cli_store *s) {
  if (s->lock_fd >= 0) {
    flock(s->lock_fd, LOCK_UN);
    close(s->lock_fd);
    s->lock_fd = -1;
  }
  pthread_mutex_unlock(&s->mu);
}

int immu__cli_store_get(immu__cli_store *s, const char *db,
                        immu__cli_state *out, char *err, size_t errlen) {
  immu__cli_state *v;
  size_t n;
  int rc;

  if (s->dir == NULL) {
    for (size_t i = 0; i < s->nmem; i++)
      if (strcmp(s->mem[i].db, db) == 0) {
        *out = s->mem[i];
        return 0;
      }
    return IMMU_ENOTFOUND;
  }
  if ((rc = load_states(s->path, &v, &n, err, errlen)) != 0)
    return rc;
  rc = IMMU_ENOTFOUND;
  for (size_t i = 0; i < n; i++)
    if (strcmp(v[i].db, db) == 0) {
      *out = v[i];
      rc = 0;
      break;
    }
  immu__free(v);
  return rc;
}

int immu__cli_store_put(immu__cli_store *s, const immu__cli_state *st,
                        char *err, size_t errlen) {
  immu__cli_state *v = NULL, *nv;
  size_t n = 0;
  int changed, rc;

  if (st->tx_id == 0 || st->db[0] == '\0' ||
      memchr(st->db, '\0', sizeof st->db) == NULL ||
      st->sig_len > sizeof st->sig)
    return IMMU_EINVAL;
  if (s->dir == NULL) {
    nv = immu__realloc(s->mem, (s->nmem + 1) * sizeof *nv);
    if (nv == NULL)
      return IMMU_ENOMEM;
    s->mem = nv;
    return merge(s->mem, &s->nmem, st, &changed, err, errlen);
  }
  if ((rc = load_states(s->path, &v, &n, err, errlen)) != 0)
    return rc;
  nv = immu__realloc(v, (n + 1) * sizeof *nv);
  if (nv == NULL) {
    immu__free(v);
    return IMMU_ENOMEM;
  }
  v = nv;
  rc = merge(v, &n, st, &changed, err, errlen);
  if (rc == 0 && changed)
    rc = save_states(s->path, v, n, err, errlen);
  immu__free(v);
  return rc;
}

/* ------------------------------------------------------------------ */
/* Identity                                                            */
/* ------------------------------------------------------------------ */

int immu__cli_server_id(const char *uuid, const immu_digest *key_hash,
                        char *out, size_t cap) {
  if (key_hash != NULL) {
    if (cap < 4 + 64 + 1)
      return IMMU_EINVAL;
    memcpy(out, "key-", 4);
    immu_digest_hex(key_hash, out + 4);
    return 0;
  }
  if (uuid == NULL || uuid[0] == '\0' || strlen(uuid) > MAX_UUID ||
      cap < 5 + 2 * strlen(uuid) + 1)
    return IMMU_EINVAL;
  memcpy(out, "uuid-", 5);
  hex_encode((const uint8_t *)uuid, strlen(uuid), out + 5);
  return 0;
}

typedef struct ident {
  char addr[600];
  int has_uuid;
  char uuid[MAX_UUID + 1];
  int has_key;
  immu_digest key;
} ident;

static int load_ident(const char *path, ident *id, int *found, char *err,
                      size_t errlen) {
  char *buf = NULL, *body, *end, *line;
  size_t len;
  int rc;

  memset(id, 0, sizeof *id);
  *found = 0;
  if ((rc = read_whole(path, &buf, &len, err, errlen)) != 0)
    return rc;
  if (buf == NULL)
    return 0;
  if ((rc = check_file(path, buf, len, IDENT_MAGIC, &body, &end, err,
                       errlen)) != 0)
    goto out;
  for (line = body; line < end;) {
    char *nl = memchr(line, '\n', (size_t)(end - line));
    char *p = line, *kw, *val;
    long k;
    if (nl == NULL)
      goto bad;
    *nl = '\0';
    kw = token(&p, nl);
    val = token(&p, nl);
    if (kw == NULL || val == NULL || token(&p, nl) != NULL)
      goto bad;
    if (strcmp(kw, "address") == 0) {
      k = hex_decode(val, strlen(val), (uint8_t *)id->addr,
                     sizeof id->addr - 1);
      if (k <= 0)
        goto bad;
      id->addr[k] = '\0';
    } else if (strcmp(kw, "uuid") == 0 && !id->has_uuid) {
      k = hex_decode(val, strlen(val), (uint8_t *)id->uuid, MAX_UUID);
      if (k <= 0)
        goto bad;
      id->uuid[k] = '\0';
      id->has_uuid = 1;
    } else if (strcmp(kw, "key") == 0 && !id->has_key) {
      if (hex_decode(val, strlen(val), id->key.b, 32) != 32)
        goto bad;
      id->has_key = 1;
    } else {
      goto bad;
    }
    line = nl + 1;
  }
  *found = 1;
  rc = 0;
  goto out;
bad:
  seterr(err, errlen, "%s: malformed identity file", path);
  rc = IMMU_ECORRUPT;
out:
  immu__free(buf);
  return rc;
}

static int save_ident(const char *path, const ident *id, char *err,
                      size_t errlen) {
  sbuf b = {0};
  int rc;
  sb_str(&b, IDENT_MAGIC "\naddress ");
  sb_hex(&b, (const uint8_t *)id->addr, strlen(id->addr));
  sb_str(&b, "\n");
  if (id->has_uuid) {
    sb_str(&b, "uuid ");
    sb_hex(&b, (const uint8_t *)id->uuid, strlen(id->uuid));
    sb_str(&b, "\n");
  }
  if (id->has_key) {
    sb_str(&b, "key ");
    sb_hex(&b, id->key.b, 32);
    sb_str(&b, "\n");
  }
  sb_seal(&b);
  if (b.oom) {
    immu__free(b.p);
    return IMMU_ENOMEM;
  }
  rc = write_atomic(path, b.p, b.len, err, errlen);
  immu__free(b.p);
  return rc;
}

int immu__cli_identity_pin(const char *dir, const char *host, int port,
                           const char *uuid, const immu_digest *key_hash,
                           char *err, size_t errlen) {
  char addr[600], name[64];
  char *path = NULL, *lpath = NULL;
  immu_digest ah;
  ident id;
  int found, fd = -1, rc, dirty = 0;

  if (dir == NULL)
    return 0;
  if (host == NULL || strlen(host) > 512 ||
      (uuid != NULL && strlen(uuid) > MAX_UUID))
    return IMMU_EINVAL;
  snprintf(addr, sizeof addr, "%s:%d", host, port);
  immu_sha256(addr, strlen(addr), &ah);
  memcpy(name, "identity-", 9);
  hex_encode(ah.b, 16, name + 9);
  if ((rc = mkdirs(dir)) != 0) {
    seterr(err, errlen, "cannot create state directory %s: %s", dir,
           immu_strerror(rc));
    return rc;
  }
  path = path_join(dir, name);
  lpath = path_join(dir, "identity.lock");
  if (path == NULL || lpath == NULL) {
    rc = IMMU_ENOMEM;
    goto out;
  }
  if ((fd = lock_file(lpath)) < 0) {
    rc = fd;
    seterr(err, errlen, "cannot lock %s: %s", lpath, immu_strerror(rc));
    goto out;
  }
  if ((rc = load_ident(path, &id, &found, err, errlen)) != 0)
    goto out;
  if (found && strcmp(id.addr, addr) != 0) {
    seterr(err, errlen, "%s: identity file names address %s, not %s", path,
           id.addr, addr);
    rc = IMMU_ECORRUPT;
    goto out;
  }
  if (!found) {
    snprintf(id.addr, sizeof id.addr, "%s", addr);
    dirty = 1;
  }
  if (uuid != NULL && uuid[0] != '\0') {
    if (id.has_uuid && strcmp(id.uuid, uuid) != 0) {
      seterr(err, errlen,
             "server identity changed: %s was pinned to immudb-uuid '%s' but "
             "now reports '%s'; refusing to continue with a fresh state "
             "(CVE-2022-39199). If the server was legitimately replaced, "
             "delete %s and the matching state file",
             addr, id.uuid, uuid, path);
      rc = IMMU_EVERIFY;
      goto out;
    }
    if (!id.has_uuid) {
      snprintf(id.uuid, sizeof id.uuid, "%s", uuid);
      id.has_uuid = 1;
      dirty = 1;
    }
  }
  if (key_hash != NULL) {
    if (id.has_key && !immu_digest_eq(&id.key, key_hash)) {
      char a[65], b[65];
      immu_digest_hex(&id.key, a);
      immu_digest_hex(key_hash, b);
      seterr(err, errlen,
             "server signing key changed: %s was pinned to the key with "
             "SHA-256 %s but the configured key has SHA-256 %s. If the key "
             "was legitimately rotated, delete %s",
             addr, a, b, path);
      rc = IMMU_EVERIFY;
      goto out;
    }
    if (!id.has_key) {
      id.key = *key_hash;
      id.has_key = 1;
      dirty = 1;
    }
  }
  rc = dirty ? save_ident(path, &id, err, errlen) : 0;
out:
  if (fd >= 0) {
    flock(fd, LOCK_UN);
    close(fd);
  }
  immu__free(path);
  immu__free(lpath);
  return rc;
}
