/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The auth half of ImmuService (contracts: server/server.h, server/svc.h;
 * internals: server/auth.h): the server object and its data directory, the
 * server identity (spec immudb-crypto.md 8.2), the database manager, users
 * (kept in systemdb through the KV layer), tokens and sessions, the per-RPC
 * authorisation of immu_srv_begin (immudb-api.md section 3), the reply and
 * error helpers, and the full method table.
 *
 * Passwords are bcrypt ("$2b$", cost 10, as immudb) through libxcrypt's
 * crypt_rn; verification re-hashes and compares in constant time, and an
 * unknown user costs the same hash as a known one.
 *
 * Tokens are 32 random bytes in hex, mapped server-side to {user, database,
 * expiry}; they are opaque to clients, as immudb's PASETO tokens are.
 * Sessions are the same kind of id with an idle timeout.
 */
#include "server/auth.h"

#include <arpa/inet.h>
#include <crypt.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "core/mem.h"
#include "schema.pb-c.h"
#include "store/store.h"

#define IDENTITY_FILE "immudb.identifier"
#define DELETED_PREFIX ".deleted."
#define BCRYPT_COST 10
#define BCRYPT_MAX_PW 72 /* bcrypt ignores bytes beyond this */
#define REC_USER 0x01
#define REC_DB 0x02
#define SCAN_PAGE 500
#define UNLOAD_WAIT_S 60
#define MSG_MAX 1024

/* ------------------------------------------------------------------ */
/* Small helpers                                                       */
/* ------------------------------------------------------------------ */

int64_t immu__now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Token and session clocks: immune to wall-clock steps. */
static int64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void immu__srv_logf(immu_server *s, int level, const char *fmt, ...) {
  char buf[MSG_MAX];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  if (s != NULL && s->log != NULL)
    s->log(s->log_arg, level, buf);
  else
    fprintf(stderr, "immudb: %s\n", buf);
}

/* A heap message (immu__free), or NULL if memory runs out. */
static char *msgf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *msgf(const char *fmt, ...) {
  char buf[MSG_MAX];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  return immu__strndup(buf, strlen(buf));
}

static void errf(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void errf(char *err, size_t errlen, const char *fmt, ...) {
  va_list ap;
  if (err == NULL || errlen == 0)
    return;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
}

static char *xstrdup(const char *s) {
  return immu__strndup(s, strlen(s));
}

static void copy_str(char *dst, size_t cap, const char *src) {
  size_t n = strlen(src);
  if (n >= cap)
    n = cap - 1;
  memcpy(dst, src, n);
  dst[n] = '\0';
}

static int random_hex(char *out, size_t nbytes) {
  static const char hx[] = "0123456789abcdef";
  uint8_t b[64];
  if (nbytes > sizeof b || RAND_bytes(b, (int)nbytes) != 1)
    return IMMU_ECRYPTO;
  for (size_t i = 0; i < nbytes; i++) {
    out[2 * i] = hx[b[i] >> 4];
    out[2 * i + 1] = hx[b[i] & 15];
  }
  out[2 * nbytes] = '\0';
  OPENSSL_cleanse(b, sizeof b);
  return 0;
}

static int is_dir(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static int mkdir_p(const char *path) {
  char buf[4096];
  size_t n = strlen(path);
  if (n == 0 || n >= sizeof buf)
    return -ENAMETOOLONG;
  memcpy(buf, path, n + 1);
  for (size_t i = 1; i <= n; i++) {
    if (buf[i] == '/' || buf[i] == '\0') {
      char c = buf[i];
      buf[i] = '\0';
      if (mkdir(buf, 0755) != 0 && errno != EEXIST)
        return -errno;
      buf[i] = c;
    }
  }
  return is_dir(path) ? 0 : -ENOTDIR;
}

static int fsync_dir(const char *dir) {
  int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  int rc = 0;
  if (fd < 0)
    return -errno;
  if (fsync(fd) != 0)
    rc = -errno;
  close(fd);
  return rc;
}

static int rm_cb(const char *path, const struct stat *sb, int flag,
                 struct FTW *ftw) {
  (void)sb;
  (void)flag;
  (void)ftw;
  if (remove(path) != 0 && errno != ENOENT)
    return -1;
  return 0;
}

/* rm -rf |path|; 0 or -errno. */
static int rm_rf(const char *path) {
  if (nftw(path, rm_cb, 16, FTW_DEPTH | FTW_PHYS) != 0)
    return errno == ENOENT ? 0 : -(errno ? errno : EIO);
  return 0;
}

static int db_path(const immu_server *s, const char *name, char *out,
                   size_t cap) {
  int n = snprintf(out, cap, "%s/%s", s->dir, name);
  return (n < 0 || (size_t)n >= cap) ? -ENAMETOOLONG : 0;
}

/* 1 for 127.0.0.0/8, ::1, ::ffff:127.x.y.z and "localhost". */
static int addr_is_loopback(const char *a) {
  struct in_addr v4;
  struct in6_addr v6;
  char buf[64];
  size_t n;
  if (a == NULL)
    return 0;
  n = strlen(a);
  if (n >= 2 && a[0] == '[' && a[n - 1] == ']' && n - 2 < sizeof buf) {
    memcpy(buf, a + 1, n - 2);
    buf[n - 2] = '\0';
    a = buf;
  }
  if (strcmp(a, "localhost") == 0)
    return 1;
  if (inet_pton(AF_INET, a, &v4) == 1)
    return (ntohl(v4.s_addr) >> 24) == 127;
  if (inet_pton(AF_INET6, a, &v6) == 1) {
    static const uint8_t lo[16] = {0, 0, 0, 0, 0, 0, 0, 0,
                                   0, 0, 0, 0, 0, 0, 0, 1};
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0,    0,
                                       0, 0, 0, 0, 0xff, 0xff};
    if (memcmp(v6.s6_addr, lo, 16) == 0)
      return 1;
    return memcmp(v6.s6_addr, mapped, 12) == 0 && v6.s6_addr[12] == 127;
  }
  return 0;
}

/* ------------------------------------------------------------------ */
/* Server identity (spec 8.2)                                          */
/* ------------------------------------------------------------------ */

/* xid's string form: base32hex, lower case, no padding (20 characters). */
static void xid_encode(const uint8_t id[12], char out[21]) {
  static const char al[] = "0123456789abcdefghijklmnopqrstuv";
  uint32_t acc = 0;
  int nbits = 0;
  size_t o = 0;
  for (int i = 0; i < 12; i++) {
    acc = (acc << 8) | id[i];
    nbits += 8;
    while (nbits >= 5) {
      out[o++] = al[(acc >> (nbits - 5)) & 31];
      nbits -= 5;
    }
    acc &= (1u << nbits) - 1;
  }
  if (nbits > 0)
    out[o++] = al[(acc << (5 - nbits)) & 31];
  out[o] = '\0';
}

/* Loads <dir>/immudb.identifier or creates it: 4-byte big-endian unix time,
 * 5 random bytes, a 3-byte counter from a random start. */
static int identity_load(immu_server *s, char **errmsg) {
  char path[4096], tmp[4200];
  uint8_t id[12];
  struct stat st;
  ssize_t r;
  int fd, n;

  n = snprintf(path, sizeof path, "%s/%s", s->dir, IDENTITY_FILE);
  if (n < 0 || (size_t)n >= sizeof path) {
    *errmsg = msgf("data directory path too long");
    return -ENAMETOOLONG;
  }
  fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    if (fstat(fd, &st) != 0 || st.st_size != 12 ||
        (r = read(fd, id, 12)) != 12) {
      close(fd);
      *errmsg = msgf("%s is damaged: expected exactly 12 bytes (the server "
                     "identity); restore it from a backup or remove it to "
                     "get a new identity",
                     path);
      return IMMU_ECORRUPT;
    }
    close(fd);
    xid_encode(id, s->uuid);
    return 0;
  }
  if (errno != ENOENT) {
    int e = errno;
    *errmsg = msgf("cannot open %s: %s", path, strerror(e));
    return -e;
  }
  {
    uint32_t t = (uint32_t)time(NULL);
    uint8_t ctr[3];
    id[0] = (uint8_t)(t >> 24);
    id[1] = (uint8_t)(t >> 16);
    id[2] = (uint8_t)(t >> 8);
    id[3] = (uint8_t)t;
    if (RAND_bytes(id + 4, 5) != 1 || RAND_bytes(ctr, 3) != 1) {
      *errmsg = msgf("no randomness for the server identity");
      return IMMU_ECRYPTO;
    }
    /* The counter's first value is its random start plus one. */
    uint32_t c =
        (((uint32_t)ctr[0] << 16) | ((uint32_t)ctr[1] << 8) | ctr[2]) + 1u;
    id[9] = (uint8_t)(c >> 16);
    id[10] = (uint8_t)(c >> 8);
    id[11] = (uint8_t)c;
  }
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0 || write(fd, id, 12) != 12 || fsync(fd) != 0) {
    int e = errno ? errno : EIO;
    if (fd >= 0)
      close(fd);
    unlink(tmp);
    *errmsg = msgf("cannot write %s: %s", tmp, strerror(e));
    return -e;
  }
  close(fd);
  if (rename(tmp, path) != 0 || fsync_dir(s->dir) != 0) {
    int e = errno ? errno : EIO;
    unlink(tmp);
    *errmsg = msgf("cannot create %s: %s", path, strerror(e));
    return -e;
  }
  xid_encode(id, s->uuid);
  return 0;
}

/* ------------------------------------------------------------------ */
/* Record text ("k=v" lines)                                           */
/* ------------------------------------------------------------------ */

typedef struct linebuf {
  char *p;
  size_t n, cap;
  int oom;
} linebuf;

static void lb_addf(linebuf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void lb_addf(linebuf *b, const char *fmt, ...) {
  va_list ap;
  int n;
  if (b->oom)
    return;
  va_start(ap, fmt);
  n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  if (n < 0) {
    b->oom = 1;
    return;
  }
  if (b->n + (size_t)n + 1 > b->cap) {
    size_t nc = (b->cap ? b->cap * 2 : 256) + (size_t)n;
    char *q = immu__realloc(b->p, nc);
    if (q == NULL) {
      b->oom = 1;
      return;
    }
    b->p = q;
    b->cap = nc;
  }
  va_start(ap, fmt);
  vsnprintf(b->p + b->n, b->cap - b->n, fmt, ap);
  va_end(ap);
  b->n += (size_t)n;
}

/* Calls |cb| for each "key=value" line of |v| (not NUL-terminated). */
static void rec_parse(const uint8_t *v, size_t len,
                      void (*cb)(void *arg, const char *k, const char *val),
                      void *arg) {
  char line[1024];
  size_t i = 0;
  while (i < len) {
    size_t j = i, n;
    char *eq;
    while (j < len && v[j] != '\n')
      j++;
    n = j - i;
    if (n < sizeof line) {
      memcpy(line, v + i, n);
      line[n] = '\0';
      if ((eq = strchr(line, '=')) != NULL) {
        *eq = '\0';
        cb(arg, line, eq + 1);
      }
    }
    i = j + 1;
  }
}

static uint64_t parse_u64(const char *s) {
  return (uint64_t)strtoull(s, NULL, 10);
}

/* ------------------------------------------------------------------ */
/* systemdb access                                                     */
/* ------------------------------------------------------------------ */

static immu_db *sysdb(immu_server *s) {
  return s->dbs[0]->db;
}

static int sys_put(immu_server *s, uint8_t kind, const char *name,
                   const char *val, size_t vlen) {
  uint8_t key[1 + IMMU_DBNAME_MAX + 1];
  size_t n = strlen(name);
  immu_db_kv kv;
  if (n > IMMU_DBNAME_MAX)
    return IMMU_EINVAL;
  key[0] = kind;
  memcpy(key + 1, name, n);
  kv.key = key;
  kv.key_len = n + 1;
  kv.value = (const uint8_t *)val;
  kv.value_len = vlen;
  return immu_db_set(sysdb(s), &kv, 1, 0, NULL);
}

/* Calls |cb| for the latest value of every key with prefix |kind|. */
static int sys_scan(immu_server *s, uint8_t kind,
                    int (*cb)(void *arg, const char *name, const uint8_t *v,
                              size_t vlen),
                    void *arg) {
  immu_db_scan_req r;
  uint8_t last[1 + IMMU_DBNAME_MAX + 1];
  size_t lastn = 0;
  int rc;

  for (;;) {
    immu_db_entries es;
    memset(&r, 0, sizeof r);
    r.prefix = &kind;
    r.prefix_len = 1;
    r.limit = SCAN_PAGE;
    if (lastn > 0) {
      r.seek_key = last;
      r.seek_key_len = lastn;
      r.inclusive_seek = 0;
    }
    rc = immu_db_scan(sysdb(s), &r, &es);
    if (rc == IMMU_ENOTFOUND)
      return 0;
    if (rc != 0)
      return rc;
    for (size_t i = 0; i < es.n; i++) {
      const immu_db_entry *e = &es.v[i];
      char name[IMMU_DBNAME_MAX + 1];
      if (e->key_len < 2 || e->key_len - 1 > IMMU_DBNAME_MAX)
        continue;
      memcpy(name, e->key + 1, e->key_len - 1);
      name[e->key_len - 1] = '\0';
      if ((rc = cb(arg, name, e->value, e->value_len)) != 0) {
        immu_db_entries_clear(&es);
        return rc;
      }
    }
    if (es.n < SCAN_PAGE || es.n == 0) {
      immu_db_entries_clear(&es);
      return 0;
    }
    lastn = es.v[es.n - 1].key_len;
    if (lastn > sizeof last)
      lastn = sizeof last;
    memcpy(last, es.v[es.n - 1].key, lastn);
    immu_db_entries_clear(&es);
  }
}

/* ------------------------------------------------------------------ */
/* Rules                                                               */
/* ------------------------------------------------------------------ */

int immu__check_dbname(const char *name, char *err, size_t errlen) {
  size_t n = strlen(name);
  int special = 0;
  if (n < 1 || n > IMMU_DBNAME_MAX) {
    errf(err, errlen, "database name length outside of limits");
    return -1;
  }
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)name[i];
    if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'))
      continue;
    if (c < 0x80 && ispunct(c)) {
      special = 1;
      continue;
    }
    errf(err, errlen, "unrecognized character in database name");
    return -1;
  }
  if (special) {
    errf(err, errlen,
         "punctuation marks and symbols are not allowed in database name");
    return -1;
  }
  return 0;
}

int immu__check_username(const uint8_t *name, size_t len, char *err,
                         size_t errlen) {
  if (len < 1 || len > IMMU_USERNAME_MAX) {
    errf(err, errlen, "username length must be between 1 and %d",
         IMMU_USERNAME_MAX);
    return -1;
  }
  for (size_t i = 0; i < len; i++) {
    uint8_t c = name[i];
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
        (c >= '0' && c <= '9') || c == '_' || c == '-' || c == '.' || c == '@')
      continue;
    errf(err, errlen,
         "invalid username: use letters, digits and the characters _ - . @");
    return -1;
  }
  return 0;
}

int immu__check_password(const uint8_t *pw, size_t len, char *err,
                         size_t errlen) {
  int upper = 0, digit = 0, special = 0;
  if (len < 8 || len > 32)
    goto bad;
  for (size_t i = 0; i < len; i++) {
    uint8_t c = pw[i];
    if (c >= 'A' && c <= 'Z')
      upper = 1;
    else if (c >= '0' && c <= '9')
      digit = 1;
    else if (c >= 'a' && c <= 'z')
      continue;
    else if (c < 0x80 && ispunct(c))
      special = 1;
    else
      goto bad;
  }
  if (upper && digit && special)
    return 0;
bad:
  errf(err, errlen, "%s", IMMU_PASSWORD_RULE);
  return -1;
}

/* ------------------------------------------------------------------ */
/* Passwords                                                           */
/* ------------------------------------------------------------------ */

char *immu__password_hash(const uint8_t *pw, size_t len) {
  char salt[CRYPT_GENSALT_OUTPUT_SIZE];
  char rnd[16];
  struct crypt_data *cd;
  char *p, *out, *res = NULL;

  /* An empty bytes field arrives as NULL: never hand that to memchr. */
  if (len > BCRYPT_MAX_PW || (len > 0 && memchr(pw, 0, len) != NULL))
    return NULL;
  if (RAND_bytes((unsigned char *)rnd, sizeof rnd) != 1)
    return NULL;
  if (crypt_gensalt_rn("$2b$", BCRYPT_COST, rnd, (int)sizeof rnd, salt,
                       (int)sizeof salt) == NULL)
    return NULL;
  if ((p = immu__strndup(len > 0 ? (const char *)pw : "", len)) == NULL)
    return NULL;
  if ((cd = immu__calloc(1, sizeof *cd)) != NULL) {
    out = crypt_rn(p, salt, cd, (int)sizeof *cd);
    if (out != NULL && out[0] != '*')
      res = xstrdup(out);
    OPENSSL_cleanse(cd, sizeof *cd);
    immu__free(cd);
  }
  OPENSSL_cleanse(p, len);
  immu__free(p);
  return res;
}

/* 1 if |pw| hashes to |hash|. */
static int password_ok(const uint8_t *pw, size_t len, const char *hash) {
  struct crypt_data *cd;
  char *p, *out;
  int ok = 0;
  size_t hl = strlen(hash);

  if (len > 0 && memchr(pw, 0, len) != NULL)
    return 0;
  if ((p = immu__strndup(len > 0 ? (const char *)pw : "", len)) == NULL)
    return 0;
  if ((cd = immu__calloc(1, sizeof *cd)) != NULL) {
    out = crypt_rn(p, hash, cd, (int)sizeof *cd);
    ok = out != NULL && out[0] != '*' && strlen(out) == hl &&
         CRYPTO_memcmp(out, hash, hl) == 0;
    OPENSSL_cleanse(cd, sizeof *cd);
    immu__free(cd);
  }
  OPENSSL_cleanse(p, len);
  immu__free(p);
  return ok;
}

/* ------------------------------------------------------------------ */
/* Users                                                               */
/* ------------------------------------------------------------------ */

void immu__user_clear(immu__user *u) {
  if (u == NULL)
    return;
  if (u->hash != NULL) {
    OPENSSL_cleanse(u->hash, strlen(u->hash));
    immu__free(u->hash);
  }
  immu__free(u->perms);
  memset(u, 0, sizeof *u);
}

static int user_copy(immu__user *dst, const immu__user *src) {
  *dst = *src;
  dst->hash = NULL;
  dst->perms = NULL;
  if (src->hash != NULL && (dst->hash = xstrdup(src->hash)) == NULL)
    goto oom;
  if (src->nperms > 0) {
    dst->perms = immu__calloc(src->nperms, sizeof *dst->perms);
    if (dst->perms == NULL)
      goto oom;
    memcpy(dst->perms, src->perms, src->nperms * sizeof *dst->perms);
  }
  return 0;
oom:
  immu__user_clear(dst);
  return IMMU_ENOMEM;
}

static immu__user *user_find(immu_server *s, const char *name) {
  for (size_t i = 0; i < s->nusers; i++)
    if (strcmp(s->users[i]->name, name) == 0)
      return s->users[i];
  return NULL;
}

uint32_t immu__user_perm(const immu__user *u, const char *db) {
  if (u->sysadmin)
    return IMMU_PERM_SYSADMIN;
  for (size_t i = 0; i < u->nperms; i++)
    if (strcmp(u->perms[i].db, db) == 0)
      return u->perms[i].perm;
  return IMMU_PERM_NONE;
}

static char *user_serialize(const immu__user *u, size_t *len) {
  linebuf b = {0};
  lb_addf(&b,
          "v=1\nhash=%s\nactive=%d\nsysadmin=%d\ncreated_by=%s\n"
          "created_at=%s\n",
          u->hash ? u->hash : "", u->active, u->sysadmin, u->created_by,
          u->created_at);
  for (size_t i = 0; i < u->nperms; i++)
    lb_addf(&b, "perm=%s:%u\n", u->perms[i].db, u->perms[i].perm);
  if (b.oom) {
    immu__free(b.p);
    return NULL;
  }
  *len = b.n;
  return b.p;
}

typedef struct user_parse_ctx {
  immu__user *u;
  int oom;
} user_parse_ctx;

static void user_field(void *arg, const char *k, const char *v) {
  user_parse_ctx *c = arg;
  immu__user *u = c->u;
  if (strcmp(k, "hash") == 0) {
    immu__free(u->hash);
    if ((u->hash = xstrdup(v)) == NULL)
      c->oom = 1;
  } else if (strcmp(k, "active") == 0) {
    u->active = parse_u64(v) != 0;
  } else if (strcmp(k, "sysadmin") == 0) {
    u->sysadmin = parse_u64(v) != 0;
  } else if (strcmp(k, "created_by") == 0) {
    copy_str(u->created_by, sizeof u->created_by, v);
  } else if (strcmp(k, "created_at") == 0) {
    copy_str(u->created_at, sizeof u->created_at, v);
  } else if (strcmp(k, "perm") == 0) {
    const char *colon = strrchr(v, ':');
    immu__perm *np;
    size_t dn;
    if (colon == NULL || (dn = (size_t)(colon - v)) == 0 ||
        dn > IMMU_DBNAME_MAX)
      return;
    np = immu__realloc(u->perms, (u->nperms + 1) * sizeof *np);
    if (np == NULL) {
      c->oom = 1;
      return;
    }
    u->perms = np;
    memcpy(np[u->nperms].db, v, dn);
    np[u->nperms].db[dn] = '\0';
    np[u->nperms].perm = (uint32_t)parse_u64(colon + 1);
    u->nperms++;
  }
}

static int users_load_cb(void *arg, const char *name, const uint8_t *v,
                         size_t vlen) {
  immu_server *s = arg;
  immu__user *u;
  user_parse_ctx c;
  if (s->nusers == s->capusers) {
    size_t nc = s->capusers ? s->capusers * 2 : 8;
    immu__user **nu = immu__realloc(s->users, nc * sizeof *nu);
    if (nu == NULL)
      return IMMU_ENOMEM;
    s->users = nu;
    s->capusers = nc;
  }
  if ((u = immu__calloc(1, sizeof *u)) == NULL)
    return IMMU_ENOMEM;
  copy_str(u->name, sizeof u->name, name);
  c.u = u;
  c.oom = 0;
  rec_parse(v, vlen, user_field, &c);
  if (c.oom || u->hash == NULL) {
    int oom = c.oom;
    immu__user_clear(u);
    immu__free(u);
    if (oom)
      return IMMU_ENOMEM;
    immu__srv_logf(s, IMMU_LOG_WARN, "systemdb: user record %s is malformed",
                   name);
    return 0;
  }
  s->users[s->nusers++] = u;
  return 0;
}

int immu__user_get(immu_server *s, const char *name, immu__user *out) {
  immu__user *u;
  int rc;
  memset(out, 0, sizeof *out);
  pthread_mutex_lock(&s->mu);
  u = user_find(s, name);
  rc = u ? user_copy(out, u) : IMMU_ENOTFOUND;
  pthread_mutex_unlock(&s->mu);
  return rc;
}

int immu__user_put(immu_server *s, const immu__user *u, char *err,
                   size_t errlen) {
  immu__user *cp, *old;
  size_t vlen;
  char *val;
  int rc;

  if ((val = user_serialize(u, &vlen)) == NULL) {
    errf(err, errlen, "out of memory");
    return IMMU_ENOMEM;
  }
  rc = sys_put(s, REC_USER, u->name, val, vlen);
  OPENSSL_cleanse(val, vlen);
  immu__free(val);
  if (rc != 0) {
    errf(err, errlen, "cannot store user %s in systemdb: %s", u->name,
         immu_db_last_error());
    return rc;
  }
  if ((cp = immu__calloc(1, sizeof *cp)) == NULL || user_copy(cp, u) != 0) {
    immu__free(cp);
    errf(err, errlen, "out of memory");
    return IMMU_ENOMEM;
  }
  pthread_mutex_lock(&s->mu);
  if ((old = user_find(s, u->name)) != NULL) {
    immu__user_clear(old);
    *old = *cp;
    immu__free(cp);
  } else {
    if (s->nusers == s->capusers) {
      size_t nc = s->capusers ? s->capusers * 2 : 8;
      immu__user **nu = immu__realloc(s->users, nc * sizeof *nu);
      if (nu == NULL) {
        pthread_mutex_unlock(&s->mu);
        immu__user_clear(cp);
        immu__free(cp);
        errf(err, errlen, "out of memory");
        return IMMU_ENOMEM;
      }
      s->users = nu;
      s->capusers = nc;
    }
    s->users[s->nusers++] = cp;
  }
  pthread_mutex_unlock(&s->mu);
  return 0;
}

int immu__user_verify(immu_server *s, const char *user, const uint8_t *pw,
                      size_t pwlen) {
  immu__user *u;
  char *hash = NULL;
  int active = 0, found, ok;

  pthread_mutex_lock(&s->mu);
  u = user_find(s, user);
  found = u != NULL;
  if (found) {
    active = u->active;
    hash = xstrdup(u->hash);
  }
  pthread_mutex_unlock(&s->mu);
  if (found && hash == NULL)
    return IMMU_ENOMEM;
  /* An unknown user costs one bcrypt too. */
  ok = password_ok(pw, pwlen, found ? hash : s->dummy_hash) && found;
  immu__free(hash);
  if (!ok)
    return IMMU_EAUTH;
  return active ? 0 : IMMU_EPERM;
}

int immu__admin_has_default_password(immu_server *s) {
  return immu__user_verify(s, IMMU_SYSADMIN_USER,
                           (const uint8_t *)IMMU_DEFAULT_ADMIN_PASSWORD,
                           strlen(IMMU_DEFAULT_ADMIN_PASSWORD)) != IMMU_EAUTH;
}

int immu__users_snapshot(immu_server *s, immu__user **out, size_t *n) {
  immu__user *v;
  int rc = 0;
  *out = NULL;
  *n = 0;
  pthread_mutex_lock(&s->mu);
  v = immu__calloc(s->nusers ? s->nusers : 1, sizeof *v);
  if (v == NULL) {
    rc = IMMU_ENOMEM;
  } else {
    for (size_t i = 0; i < s->nusers; i++) {
      if ((rc = user_copy(&v[i], s->users[i])) != 0) {
        immu__users_free(v, i);
        v = NULL;
        break;
      }
    }
  }
  if (rc == 0) {
    *out = v;
    *n = s->nusers;
  }
  pthread_mutex_unlock(&s->mu);
  return rc;
}

void immu__users_free(immu__user *v, size_t n) {
  if (v == NULL)
    return;
  for (size_t i = 0; i < n; i++)
    immu__user_clear(&v[i]);
  immu__free(v);
}

static void now_string(char *out, size_t cap) {
  struct timespec ts;
  struct tm tm;
  char base[32];
  clock_gettime(CLOCK_REALTIME, &ts);
  gmtime_r(&ts.tv_sec, &tm);
  strftime(base, sizeof base, "%Y-%m-%d %H:%M:%S", &tm);
  snprintf(out, cap, "%s.%09ld +0000 UTC", base, (long)ts.tv_nsec);
}

/* ------------------------------------------------------------------ */
/* Tokens and sessions                                                 */
/* ------------------------------------------------------------------ */

static size_t hash_in(size_t nbuckets, const char *id) {
  uint64_t h = 1469598103934665603ull;
  for (const char *p = id; *p; p++) {
    h ^= (uint8_t)*p;
    h *= 1099511628211ull;
  }
  return (size_t)(h & (nbuckets - 1));
}

static size_t cred_hash(const immu_server *s, const char *id) {
  return hash_in(s->nbuckets, id);
}

static immu__cred *cred_find(immu_server *s, const char *id, int is_session) {
  immu__cred *c;
  if (s->nbuckets == 0)
    return NULL;
  for (c = s->buckets[cred_hash(s, id)]; c != NULL; c = c->hnext)
    if (c->is_session == is_session && strcmp(c->id, id) == 0)
      return c;
  return NULL;
}

static void list_append(immu__credlist *l, immu__cred *c) {
  c->next = NULL;
  c->prev = l->tail;
  if (l->tail)
    l->tail->next = c;
  else
    l->head = c;
  l->tail = c;
  l->n++;
}

static void list_unlink(immu__credlist *l, immu__cred *c) {
  if (c->prev)
    c->prev->next = c->next;
  else
    l->head = c->next;
  if (c->next)
    c->next->prev = c->prev;
  else
    l->tail = c->prev;
  c->prev = c->next = NULL;
  l->n--;
}

static void cred_remove(immu_server *s, immu__cred *c) {
  immu__cred **pp = &s->buckets[cred_hash(s, c->id)];
  while (*pp != NULL && *pp != c)
    pp = &(*pp)->hnext;
  if (*pp == c)
    *pp = c->hnext;
  list_unlink(c->is_session ? &s->sessions : &s->tokens, c);
  OPENSSL_cleanse(c->id, sizeof c->id);
  immu__free(c);
}

static int creds_grow(immu_server *s) {
  size_t total = s->tokens.n + s->sessions.n;
  size_t nb;
  immu__cred **nbk;
  if (s->nbuckets != 0 && total < 2 * s->nbuckets)
    return 0;
  nb = s->nbuckets ? s->nbuckets * 2 : 256;
  if ((nbk = immu__calloc(nb, sizeof *nbk)) == NULL)
    return s->nbuckets ? 0 : IMMU_ENOMEM; /* keep the old table */
  for (size_t i = 0; i < s->nbuckets; i++) {
    immu__cred *c = s->buckets[i];
    while (c != NULL) {
      immu__cred *nx = c->hnext;
      size_t h = hash_in(nb, c->id);
      c->hnext = nbk[h];
      nbk[h] = c;
      c = nx;
    }
  }
  immu__free(s->buckets);
  s->buckets = nbk;
  s->nbuckets = nb;
  return 0;
}

static int session_timeout_ms(const immu_server *s) {
  return (s->session_timeout_s > 0 ? s->session_timeout_s : 180) * 1000;
}

/* Drops expired tokens (oldest first) and idle sessions. Under mu. */
static void creds_sweep(immu_server *s, int64_t now) {
  int64_t idle = session_timeout_ms(s);
  while (s->tokens.head != NULL && s->tokens.head->expiry_ms <= now)
    cred_remove(s, s->tokens.head);
  while (s->sessions.head != NULL && now - s->sessions.head->last_ms >= idle)
    cred_remove(s, s->sessions.head);
}

static int cred_add(immu_server *s, int is_session, const char *user,
                    const char *db, char id[IMMU_TOKEN_HEX + 1]) {
  immu__cred *c;
  size_t h;
  int64_t now = mono_ms();
  int rc;

  if ((c = immu__calloc(1, sizeof *c)) == NULL)
    return IMMU_ENOMEM;
  if ((rc = random_hex(c->id, IMMU_TOKEN_HEX / 2)) != 0) {
    immu__free(c);
    return rc;
  }
  c->is_session = is_session;
  copy_str(c->user, sizeof c->user, user);
  copy_str(c->db, sizeof c->db, db);
  c->last_ms = now;
  c->expiry_ms =
      now +
      (int64_t)(s->token_expiry_min > 0 ? s->token_expiry_min : 1440) * 60000;
  pthread_mutex_lock(&s->mu);
  creds_sweep(s, now);
  if (is_session) {
    int max = s->max_sessions > 0 ? s->max_sessions : 100;
    if (s->sessions.n >= (size_t)max) {
      pthread_mutex_unlock(&s->mu);
      immu__free(c);
      return IMMU_EBUSY;
    }
  } else if (s->tokens.n >= IMMU_MAX_TOKENS) {
    immu__srv_logf(s, IMMU_LOG_WARN,
                   "more than %d live tokens: evicting the oldest one",
                   IMMU_MAX_TOKENS);
    cred_remove(s, s->tokens.head);
  }
  if ((rc = creds_grow(s)) != 0) {
    pthread_mutex_unlock(&s->mu);
    immu__free(c);
    return rc;
  }
  h = cred_hash(s, c->id);
  c->hnext = s->buckets[h];
  s->buckets[h] = c;
  list_append(is_session ? &s->sessions : &s->tokens, c);
  memcpy(id, c->id, sizeof c->id);
  pthread_mutex_unlock(&s->mu);
  return 0;
}

int immu__token_new(immu_server *s, const char *user, const char *db,
                    char id[IMMU_TOKEN_HEX + 1]) {
  return cred_add(s, 0, user, db, id);
}

void immu__token_drop(immu_server *s, const char *id) {
  immu__cred *c;
  pthread_mutex_lock(&s->mu);
  if ((c = cred_find(s, id, 0)) != NULL)
    cred_remove(s, c);
  pthread_mutex_unlock(&s->mu);
}

int immu__session_new(immu_server *s, const char *user, const char *db,
                      char id[IMMU_TOKEN_HEX + 1]) {
  return cred_add(s, 1, user, db, id);
}

int immu__session_drop(immu_server *s, const char *id) {
  immu__cred *c;
  int rc = IMMU_ENOTFOUND;
  pthread_mutex_lock(&s->mu);
  if ((c = cred_find(s, id, 1)) != NULL) {
    cred_remove(s, c);
    rc = 0;
  }
  pthread_mutex_unlock(&s->mu);
  return rc;
}

void immu__drop_user_sessions(immu_server *s, const char *user) {
  pthread_mutex_lock(&s->mu);
  for (immu__cred *c = s->sessions.head, *nx; c != NULL; c = nx) {
    nx = c->next;
    if (strcmp(c->user, user) == 0)
      cred_remove(s, c);
  }
  for (immu__cred *c = s->tokens.head, *nx; c != NULL; c = nx) {
    nx = c->next;
    if (strcmp(c->user, user) == 0)
      cred_remove(s, c);
  }
  pthread_mutex_unlock(&s->mu);
}

void immu_server_row_cache(immu_server *s, uint64_t *hits, uint64_t *misses,
                           uint64_t *rows, uint64_t *bytes) {
  immu_store_env_row_cache(s->env, hits, misses, rows, bytes);
}

uint64_t immu_server_active_sessions(immu_server *s) {
  uint64_t n;
  pthread_mutex_lock(&s->mu);
  creds_sweep(s, mono_ms());
  n = s->sessions.n;
  pthread_mutex_unlock(&s->mu);
  return n;
}

/* ------------------------------------------------------------------ */
/* Databases                                                           */
/* ------------------------------------------------------------------ */

void immu__dbsettings_default(immu__dbsettings *set) {
  immu_store_options so;
  immu_store_options_init(&so);
  set->file_size =
      so.log_seg_size > UINT32_MAX ? UINT32_MAX : (uint32_t)so.log_seg_size;
  set->max_key_len = so.max_key_len;
  set->max_value_len = so.max_value_len;
  set->max_tx_entries = so.max_entries;
  set->autoload = 1;
}

static immu__dbent *db_find(immu_server *s, const char *name) {
  for (size_t i = 0; i < s->ndbs; i++)
    if (strcmp(s->dbs[i]->name, name) == 0)
      return s->dbs[i];
  return NULL;
}

static int db_list_add(immu_server *s, immu__dbent *e) {
  if (s->ndbs == s->capdbs) {
    size_t nc = s->capdbs ? s->capdbs * 2 : 8;
    immu__dbent **nd = immu__realloc(s->dbs, nc * sizeof *nd);
    if (nd == NULL)
      return IMMU_ENOMEM;
    s->dbs = nd;
    s->capdbs = nc;
  }
  s->dbs[s->ndbs++] = e;
  return 0;
}

static void dbent_free(immu__dbent *e) {
  if (e == NULL)
    return;
  immu__free(e->err);
  immu__free(e);
}

/* Opens the directory of database |e| into *out. |create| allows a new
 * one. On failure *err (immu__free) says why. Does not touch |e|. */
static int db_open_dir(immu_server *s, const immu__dbent *e, int create,
                       immu_db **out, char **err) {
  char path[4096];
  immu_store_options so;
  immu_db_options o;
  int rc;

  *out = NULL;
  *err = NULL;
  if ((rc = db_path(s, e->name, path, sizeof path)) != 0) {
    *err = msgf("path too long");
    return rc;
  }
  if (!create && !is_dir(path)) {
    *err = msgf("database directory %s is missing", path);
    return IMMU_ENOTFOUND;
  }
  immu_store_options_init(&so);
  so.durability = (s->synced || strcmp(e->name, IMMU_SYSTEMDB) == 0)
                      ? IMMU_DURABILITY_SYNCED
                      : IMMU_DURABILITY_ASYNC;
  if (e->set.file_size >= 4096)
    so.log_seg_size = e->set.file_size;
  if (e->set.max_key_len)
    so.max_key_len = e->set.max_key_len;
  if (e->set.max_value_len)
    so.max_value_len = e->set.max_value_len;
  if (e->set.max_tx_entries)
    so.max_entries = e->set.max_tx_entries;
  so.env = s->env;
  so.log = s->log;
  so.log_arg = s->log_arg;
  immu_db_options_init(&o);
  o.store = &so;
  o.env = s->env;
  /* A request must never hang on the index: handlers wait in slices of
   * their own, and anything the KV layer waits for is bounded too. */
  o.index_wait_ms = 120000;
  rc = immu_db_open(path, &o, out);
  if (rc != 0) {
    const char *m = immu_db_last_error();
    *err = msgf("%s", m[0] ? m : immu_strerror(rc));
  }
  return rc;
}

/* Opens |e| and publishes the result (LOADED, or FAILED with e->err). */
static int db_open_ent(immu_server *s, immu__dbent *e, int create) {
  immu_db *db = NULL;
  char *err = NULL;
  uint32_t mk = 0, mv = 0, mt = 0;
  int rc = db_open_dir(s, e, create, &db, &err);
  if (rc == 0) /* the engine's persisted limits are the truth */
    immu_store_limits(immu_db_store(db), &mk, &mv, &mt);
  pthread_mutex_lock(&s->mu);
  immu__free(e->err);
  e->err = err;
  e->db = db;
  e->state = rc == 0 ? IMMU__DB_LOADED : IMMU__DB_FAILED;
  if (rc == 0) {
    e->set.max_key_len = mk;
    e->set.max_value_len = mv;
    e->set.max_tx_entries = mt;
  }
  pthread_mutex_unlock(&s->mu);
  return rc;
}

static int db_record_put(immu_server *s, const immu__dbent *e, int deleted) {
  linebuf b = {0};
  int rc;
  lb_addf(&b,
          "v=1\nseq=%" PRIu64 "\ncreated_by=%s\ncreated_at=%" PRId64
          "\nfile_size=%u\nmax_key_len=%u\nmax_value_len=%u\n"
          "max_tx_entries=%u\nautoload=%d\ndeleted=%d\n",
          e->seq, e->created_by, e->created_at, e->set.file_size,
          e->set.max_key_len, e->set.max_value_len, e->set.max_tx_entries,
          e->set.autoload, deleted);
  if (b.oom) {
    immu__free(b.p);
    return IMMU_ENOMEM;
  }
  rc = sys_put(s, REC_DB, e->name, b.p, b.n);
  immu__free(b.p);
  return rc;
}

typedef struct dbrec {
  immu__dbent *e;
  int deleted;
} dbrec;

static void db_field(void *arg, const char *k, const char *v) {
  dbrec *r = arg;
  immu__dbent *e = r->e;
  if (strcmp(k, "seq") == 0)
    e->seq = parse_u64(v);
  else if (strcmp(k, "created_by") == 0)
    copy_str(e->created_by, sizeof e->created_by, v);
  else if (strcmp(k, "created_at") == 0)
    e->created_at = (int64_t)strtoll(v, NULL, 10);
  else if (strcmp(k, "file_size") == 0)
    e->set.file_size = (uint32_t)parse_u64(v);
  else if (strcmp(k, "max_key_len") == 0)
    e->set.max_key_len = (uint32_t)parse_u64(v);
  else if (strcmp(k, "max_value_len") == 0)
    e->set.max_value_len = (uint32_t)parse_u64(v);
  else if (strcmp(k, "max_tx_entries") == 0)
    e->set.max_tx_entries = (uint32_t)parse_u64(v);
  else if (strcmp(k, "autoload") == 0)
    e->set.autoload = parse_u64(v) != 0;
  else if (strcmp(k, "deleted") == 0)
    r->deleted = parse_u64(v) != 0;
}

static int dbs_load_cb(void *arg, const char *name, const uint8_t *v,
                       size_t vlen) {
  immu_server *s = arg;
  immu__dbent *e;
  dbrec r;
  if (strcmp(name, IMMU_SYSTEMDB) == 0 || db_find(s, name) != NULL ||
      immu__check_dbname(name, NULL, 0) != 0)
    return 0;
  if ((e = immu__calloc(1, sizeof *e)) == NULL)
    return IMMU_ENOMEM;
  copy_str(e->name, sizeof e->name, name);
  immu__dbsettings_default(&e->set);
  e->state = IMMU__DB_UNLOADED;
  r.e = e;
  r.deleted = 0;
  rec_parse(v, vlen, db_field, &r);
  if (r.deleted) {
    immu__free(e);
    return 0;
  }
  if (e->seq >= s->next_seq)
    s->next_seq = e->seq + 1;
  if (db_list_add(s, e) != 0) {
    immu__free(e);
    return IMMU_ENOMEM;
  }
  return 0;
}

static int dbent_order(const void *a, const void *b) {
  const immu__dbent *x = *(immu__dbent *const *)a;
  const immu__dbent *y = *(immu__dbent *const *)b;
  int xd = strcmp(x->name, IMMU_DEFAULTDB) == 0;
  int yd = strcmp(y->name, IMMU_DEFAULTDB) == 0;
  if (xd != yd)
    return xd ? -1 : 1;
  if (x->seq != y->seq)
    return x->seq < y->seq ? -1 : 1;
  return strcmp(x->name, y->name);
}

int immu__db_create(immu_server *s, const char *name,
                    const immu__dbsettings *set, const char *by, char *err,
                    size_t errlen) {
  char path[4096];
  immu__dbent *e;
  int rc;

  pthread_mutex_lock(&s->mu);
  e = db_find(s, name);
  pthread_mutex_unlock(&s->mu);
  if (e != NULL) {
    errf(err, errlen, "database %s already exists", name);
    return IMMU_GRPC_INVALID_ARGUMENT;
  }
  if (db_path(s, name, path, sizeof path) != 0) {
    errf(err, errlen, "database path too long");
    return IMMU_GRPC_INVALID_ARGUMENT;
  }
  if (access(path, F_OK) == 0) {
    errf(err, errlen,
         "cannot create database %s: %s already exists on disk (not a "
         "database this server knows)",
         name, path);
    return IMMU_GRPC_FAILED_PRECONDITION;
  }
  if ((e = immu__calloc(1, sizeof *e)) == NULL) {
    errf(err, errlen, "out of memory");
    return IMMU_GRPC_RESOURCE_EXHAUSTED;
  }
  copy_str(e->name, sizeof e->name, name);
  e->set = *set;
  e->created_at = (int64_t)time(NULL);
  copy_str(e->created_by, sizeof e->created_by, by);
  pthread_mutex_lock(&s->mu);
  e->seq = s->next_seq++;
  pthread_mutex_unlock(&s->mu);
  if ((rc = db_open_ent(s, e, 1)) != 0) {
    errf(err, errlen, "cannot create database %s: %s", name, e->err);
    rm_rf(path);
    dbent_free(e);
    return IMMU_GRPC_INTERNAL;
  }
  if ((rc = db_record_put(s, e, 0)) != 0) {
    errf(err, errlen, "cannot record database %s in systemdb: %s", name,
         immu_db_last_error());
    immu_db_close(e->db);
    rm_rf(path);
    dbent_free(e);
    return IMMU_GRPC_INTERNAL;
  }
  pthread_mutex_lock(&s->mu);
  rc = db_list_add(s, e);
  pthread_mutex_unlock(&s->mu);
  if (rc != 0) {
    immu_db_close(e->db);
    dbent_free(e);
    errf(err, errlen, "out of memory");
    return IMMU_GRPC_RESOURCE_EXHAUSTED;
  }
  immu__srv_logf(s, IMMU_LOG_INFO, "database %s created", name);
  return IMMU_GRPC_OK;
}

int immu__db_load(immu_server *s, const char *name, char *err, size_t errlen) {
  immu__dbent *e;
  int state;

  pthread_mutex_lock(&s->mu);
  e = db_find(s, name);
  state = e ? e->state : -1;
  pthread_mutex_unlock(&s->mu);
  if (e == NULL) {
    errf(err, errlen, "database %s does not exist", name);
    return IMMU_GRPC_INVALID_ARGUMENT;
  }
  if (state == IMMU__DB_LOADED || state == IMMU__DB_UNLOADING) {
    errf(err, errlen, "database %s is already loaded", name);
    return IMMU_GRPC_FAILED_PRECONDITION;
  }
  /* Only admin_mu holders change an UNLOADED/FAILED entry: open without
   * mu, then publish. */
  if (db_open_ent(s, e, 0) != 0) {
    immu__srv_logf(s, IMMU_LOG_ERROR, "database %s: %s", name, e->err);
    errf(err, errlen, "cannot load database %s: %s", name, e->err);
    return IMMU_GRPC_UNAVAILABLE;
  }
  if (!e->set.autoload) {
    pthread_mutex_lock(&s->mu);
    e->set.autoload = 1;
    pthread_mutex_unlock(&s->mu);
    if (db_record_put(s, e, 0) != 0)
      immu__srv_logf(s, IMMU_LOG_WARN,
                     "database %s: cannot record autoload: %s", name,
                     immu_db_last_error());
  }
  immu__srv_logf(s, IMMU_LOG_INFO, "database %s loaded", name);
  return IMMU_GRPC_OK;
}

int immu__db_unload(immu_server *s, const char *name, char *err,
                    size_t errlen) {
  immu__dbent *e;
  immu_db *db;
  struct timespec dl;
  int rc;

  pthread_mutex_lock(&s->mu);
  e = db_find(s, name);
  if (e == NULL) {
    pthread_mutex_unlock(&s->mu);
    errf(err, errlen, "database %s does not exist", name);
    return IMMU_GRPC_INVALID_ARGUMENT;
  }
  if (e->state != IMMU__DB_LOADED) {
    pthread_mutex_unlock(&s->mu);
    errf(err, errlen, "database %s is not loaded", name);
    return IMMU_GRPC_FAILED_PRECONDITION;
  }
  e->state = IMMU__DB_UNLOADING;
  clock_gettime(CLOCK_REALTIME, &dl);
  dl.tv_sec += UNLOAD_WAIT_S;
  rc = 0;
  while (e->refs > 0 && rc != ETIMEDOUT)
    rc = pthread_cond_timedwait(&s->cv, &s->mu, &dl);
  if (e->refs > 0) {
    uint64_t n = e->refs;
    e->state = IMMU__DB_LOADED;
    pthread_mutex_unlock(&s->mu);
    errf(err, errlen,
         "database %s is busy: %" PRIu64 " requests still in flight after %d "
         "seconds",
         name, n, UNLOAD_WAIT_S);
    return IMMU_GRPC_UNAVAILABLE;
  }
  db = e->db;
  e->db = NULL;
  e->state = IMMU__DB_UNLOADED;
  pthread_mutex_unlock(&s->mu);
  if (immu_db_close(db) != 0)
    immu__srv_logf(s, IMMU_LOG_ERROR, "database %s: close: %s", name,
                   immu_db_last_error());
  pthread_mutex_lock(&s->mu);
  e->set.autoload = 0;
  pthread_mutex_unlock(&s->mu);
  if (db_record_put(s, e, 0) != 0)
    immu__srv_logf(s, IMMU_LOG_WARN, "database %s: cannot record autoload: %s",
                   name, immu_db_last_error());
  immu__srv_logf(s, IMMU_LOG_INFO, "database %s unloaded", name);
  return IMMU_GRPC_OK;
}

int immu__db_delete(immu_server *s, const char *name, char *err,
                    size_t errlen) {
  char path[4096], gone[4200], rnd[17];
  immu__dbent *e;
  immu__user *users = NULL;
  size_t nusers = 0, idx = 0;

  pthread_mutex_lock(&s->mu);
  e = db_find(s, name);
  if (e == NULL) {
    pthread_mutex_unlock(&s->mu);
    errf(err, errlen, "database %s does not exist", name);
    return IMMU_GRPC_INVALID_ARGUMENT;
  }
  if (e->state == IMMU__DB_LOADED || e->state == IMMU__DB_UNLOADING) {
    pthread_mutex_unlock(&s->mu);
    errf(err, errlen, "database %s is loaded: unload it before deleting it",
         name);
    return IMMU_GRPC_FAILED_PRECONDITION;
  }
  pthread_mutex_unlock(&s->mu);

  if (db_path(s, name, path, sizeof path) != 0 || random_hex(rnd, 8) != 0) {
    errf(err, errlen, "cannot delete database %s", name);
    return IMMU_GRPC_INTERNAL;
  }
  snprintf(gone, sizeof gone, "%s/%s%s.%s", s->dir, DELETED_PREFIX, name, rnd);
  if (rename(path, gone) != 0 && errno != ENOENT) {
    int en = errno;
    errf(err, errlen, "cannot delete database %s: rename %s: %s", name, path,
         strerror(en));
    return IMMU_GRPC_INTERNAL;
  }
  fsync_dir(s->dir);
  if (db_record_put(s, e, 1) != 0)
    immu__srv_logf(s, IMMU_LOG_ERROR,
                   "database %s: cannot record its deletion: %s", name,
                   immu_db_last_error());
  pthread_mutex_lock(&s->mu);
  for (size_t i = 0; i < s->ndbs; i++) {
    if (s->dbs[i] == e) {
      memmove(&s->dbs[i], &s->dbs[i + 1], (s->ndbs - i - 1) * sizeof *s->dbs);
      s->ndbs--;
      break;
    }
  }
  pthread_mutex_unlock(&s->mu);
  dbent_free(e);
  if (rm_rf(gone) != 0)
    immu__srv_logf(s, IMMU_LOG_WARN,
                   "cannot remove %s: it is removed at the "
                   "next start",
                   gone);

  /* Nobody keeps a permission on a database that is gone (a new database
   * of the same name must not inherit them). */
  if (immu__users_snapshot(s, &users, &nusers) == 0) {
    for (idx = 0; idx < nusers; idx++) {
      immu__user *u = &users[idx];
      size_t k = 0;
      int changed = 0;
      for (size_t j = 0; j < u->nperms; j++) {
        if (strcmp(u->perms[j].db, name) == 0) {
          changed = 1;
          continue;
        }
        u->perms[k++] = u->perms[j];
      }
      u->nperms = k;
      if (changed) {
        char e2[256];
        if (immu__user_put(s, u, e2, sizeof e2) != 0)
          immu__srv_logf(s, IMMU_LOG_WARN, "%s", e2);
      }
    }
    immu__users_free(users, nusers);
  }
  immu__srv_logf(s, IMMU_LOG_INFO, "database %s deleted", name);
  return IMMU_GRPC_OK;
}

int immu__db_set_autoload(immu_server *s, const char *name, int autoload,
                          char *err, size_t errlen) {
  immu__dbent *e;
  pthread_mutex_lock(&s->mu);
  e = db_find(s, name);
  pthread_mutex_unlock(&s->mu);
  if (e == NULL) {
    errf(err, errlen, "database %s does not exist", name);
    return IMMU_GRPC_INVALID_ARGUMENT;
  }
  if (e->set.autoload == autoload)
    return IMMU_GRPC_OK;
  pthread_mutex_lock(&s->mu);
  e->set.autoload = autoload;
  pthread_mutex_unlock(&s->mu);
  if (db_record_put(s, e, 0) != 0) {
    errf(err, errlen, "cannot store the settings of %s: %s", name,
         immu_db_last_error());
    return IMMU_GRPC_INTERNAL;
  }
  return IMMU_GRPC_OK;
}

/* Fills |out| from |e|; |e| is held (LOADED with a ref) or not loaded. */
static void dbinfo_fill(const immu__dbent *e, int state, immu__dbinfo *out) {
  memset(out, 0, sizeof *out);
  copy_str(out->name, sizeof out->name, e->name);
  out->state = state;
  out->set = e->set;
  out->created_at = e->created_at;
  copy_str(out->created_by, sizeof out->created_by, e->created_by);
  out->last_done_ms = e->last_done_ms;
}

static void dbinfo_stats(immu__dbent *e, immu__dbinfo *out) {
  immu_db_stats st;
  immu_db_state cs;
  immu_store_limits(immu_db_store(e->db), &out->set.max_key_len,
                    &out->set.max_value_len, &out->set.max_tx_entries);
  immu_db_get_stats(e->db, &st);
  immu_db_current_state(e->db, &cs);
  out->disk_size = st.log_bytes + st.txi_bytes + st.aht_bytes + st.index_bytes;
  out->ntx = cs.tx_id;
}

int immu__db_snapshot(immu_server *s, int with_system, immu__dbinfo **out,
                      size_t *n) {
  immu__dbinfo *v;
  immu__dbent **held;
  size_t k = 0;

  *out = NULL;
  *n = 0;
  pthread_mutex_lock(&s->mu);
  v = immu__calloc(s->ndbs ? s->ndbs : 1, sizeof *v);
  held = immu__calloc(s->ndbs ? s->ndbs : 1, sizeof *held);
  if (v == NULL || held == NULL) {
    pthread_mutex_unlock(&s->mu);
    immu__free(v);
    immu__free(held);
    return IMMU_ENOMEM;
  }
  for (size_t i = 0; i < s->ndbs; i++) {
    immu__dbent *e = s->dbs[i];
    if (!with_system && strcmp(e->name, IMMU_SYSTEMDB) == 0)
      continue;
    dbinfo_fill(e, e->state, &v[k]);
    v[k].pending = e->refs;
    if (e->state == IMMU__DB_LOADED) {
      e->refs++;
      held[k] = e;
    }
    k++;
  }
  pthread_mutex_unlock(&s->mu);
  for (size_t i = 0; i < k; i++)
    if (held[i] != NULL)
      dbinfo_stats(held[i], &v[i]);
  pthread_mutex_lock(&s->mu);
  for (size_t i = 0; i < k; i++)
    if (held[i] != NULL && --held[i]->refs == 0)
      pthread_cond_broadcast(&s->cv);
  pthread_mutex_unlock(&s->mu);
  immu__free(held);
  *out = v;
  *n = k;
  return 0;
}

int immu__db_info(immu_server *s, const char *name, immu__dbinfo *out) {
  immu__dbent *e;
  int held = 0;
  pthread_mutex_lock(&s->mu);
  e = db_find(s, name);
  if (e == NULL) {
    pthread_mutex_unlock(&s->mu);
    return IMMU_ENOTFOUND;
  }
  dbinfo_fill(e, e->state, out);
  out->pending = e->refs;
  if (e->state == IMMU__DB_LOADED) {
    e->refs++;
    held = 1;
  }
  pthread_mutex_unlock(&s->mu);
  if (held) {
    dbinfo_stats(e, out);
    pthread_mutex_lock(&s->mu);
    if (--e->refs == 0)
      pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
  }
  return 0;
}

void immu_server_foreach_db(immu_server *s,
                            void (*cb)(void *arg, const char *name,
                                       struct immu_db *db),
                            void *arg) {
  immu__dbent **held;
  size_t k = 0;
  pthread_mutex_lock(&s->mu);
  held = immu__calloc(s->ndbs ? s->ndbs : 1, sizeof *held);
  if (held == NULL) {
    pthread_mutex_unlock(&s->mu);
    return;
  }
  for (size_t i = 0; i < s->ndbs; i++) {
    if (s->dbs[i]->state == IMMU__DB_LOADED) {
      s->dbs[i]->refs++;
      held[k++] = s->dbs[i];
    }
  }
  pthread_mutex_unlock(&s->mu);
  for (size_t i = 0; i < k; i++)
    cb(arg, held[i]->name, held[i]->db);
  pthread_mutex_lock(&s->mu);
  for (size_t i = 0; i < k; i++)
    if (--held[i]->refs == 0)
      pthread_cond_broadcast(&s->cv);
  pthread_mutex_unlock(&s->mu);
  immu__free(held);
}

/* ------------------------------------------------------------------ */
/* Start and stop                                                      */
/* ------------------------------------------------------------------ */

/* The index caches for all databases (an eighth of it holds the rows the
 * applies wrote last, the rest blocks). Point reads answer from the I/O
 * thread only while their blocks are cached; once the latest rows of the
 * keys being read outgrow the cache, Gets go to the workers, each a file
 * read and a cache eviction (Get at 16 clients fell from ~85k to 29-58k
 * calls/s when a 270 MB index met the old fixed 256 MiB). A database
 * server may take a share of the RAM, as any buffer pool does. */
static size_t index_cache_bytes(const immu_server_config *cfg) {
  const size_t lo = (size_t)256 << 20;
  const size_t hi = sizeof(size_t) > 4 ? (size_t)4 << 30 : (size_t)1 << 30;
  long pages = sysconf(_SC_PHYS_PAGES), psz = sysconf(_SC_PAGESIZE);
  size_t b;
  if (cfg->index_cache_bytes > 0)
    return cfg->index_cache_bytes;
  if (pages <= 0 || psz <= 0)
    return lo;
  b = (size_t)pages / 8 * (size_t)psz;
  return b < lo ? lo : b > hi ? hi : b;
}

void immu_server_config_init(immu_server_config *c) {
  memset(c, 0, sizeof *c);
  c->dir = "./data";
  c->admin_password = IMMU_DEFAULT_ADMIN_PASSWORD;
  c->auth = 1;
  c->synced = 1;
  c->token_expiry_min = 1440;
  c->session_timeout_s = 180;
  c->max_sessions = 100;
  c->listen_address = "0.0.0.0"; /* immudb's default bind address */
}

const char *immu_server_uuid(const immu_server *s) {
  return s->uuid;
}

/* Adopts database directories that have no systemdb record and removes
 * leftovers of interrupted deletions. */
static int scan_data_dir(immu_server *s) {
  DIR *d = opendir(s->dir);
  struct dirent *de;
  int rc = 0;
  if (d == NULL)
    return -errno;
  while ((de = readdir(d)) != NULL) {
    char path[4096];
    immu__dbent *e;
    if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
      continue;
    if (db_path(s, de->d_name, path, sizeof path) != 0 || !is_dir(path))
      continue;
    if (strncmp(de->d_name, DELETED_PREFIX, strlen(DELETED_PREFIX)) == 0) {
      immu__srv_logf(s, IMMU_LOG_INFO, "removing %s (an interrupted delete)",
                     path);
      rm_rf(path);
      continue;
    }
    if (strcmp(de->d_name, IMMU_SYSTEMDB) == 0 ||
        db_find(s, de->d_name) != NULL)
      continue;
    if (immu__check_dbname(de->d_name, NULL, 0) != 0) {
      immu__srv_logf(s, IMMU_LOG_WARN, "ignoring %s: not a valid database name",
                     path);
      continue;
    }
    if ((e = immu__calloc(1, sizeof *e)) == NULL) {
      rc = IMMU_ENOMEM;
      break;
    }
    copy_str(e->name, sizeof e->name, de->d_name);
    immu__dbsettings_default(&e->set);
    e->state = IMMU__DB_UNLOADED;
    e->seq = s->next_seq++;
    e->created_at = (int64_t)time(NULL);
    if (db_list_add(s, e) != 0) {
      immu__free(e);
      rc = IMMU_ENOMEM;
      break;
    }
    immu__srv_logf(s, IMMU_LOG_INFO,
                   "found database %s on disk without a record: adopting it",
                   e->name);
    if (db_record_put(s, e, 0) != 0)
      immu__srv_logf(s, IMMU_LOG_WARN, "database %s: cannot record it: %s",
                     e->name, immu_db_last_error());
  }
  closedir(d);
  return rc;
}

static int create_sysadmin(immu_server *s, const char *password) {
  immu__user u;
  char err[256];
  int rc;
  memset(&u, 0, sizeof u);
  copy_str(u.name, sizeof u.name, IMMU_SYSADMIN_USER);
  u.hash = immu__password_hash((const uint8_t *)password, strlen(password));
  if (u.hash == NULL)
    return IMMU_ECRYPTO;
  u.active = 1;
  u.sysadmin = 1;
  now_string(u.created_at, sizeof u.created_at);
  rc = immu__user_put(s, &u, err, sizeof err);
  if (rc != 0)
    immu__srv_logf(s, IMMU_LOG_ERROR, "%s", err);
  immu__user_clear(&u);
  return rc;
}

int immu_server_new(const immu_server_config *cfg, immu_server **out,
                    char **errmsg) {
  immu_server *s;
  immu__dbent *e;
  const char *pw;
  char path[4096];
  int rc, first_start;

  *out = NULL;
  *errmsg = NULL;
  pw = cfg->admin_password ? cfg->admin_password : IMMU_DEFAULT_ADMIN_PASSWORD;
  if (pw[0] == '\0') {
    *errmsg = msgf("the admin password cannot be empty");
    return IMMU_EINVAL;
  }
  if (strlen(pw) > BCRYPT_MAX_PW) {
    *errmsg = msgf("the admin password is longer than %d bytes", BCRYPT_MAX_PW);
    return IMMU_EINVAL;
  }
  if ((s = immu__calloc(1, sizeof *s)) == NULL) {
    *errmsg = msgf("out of memory");
    return IMMU_ENOMEM;
  }
  pthread_mutex_init(&s->mu, NULL);
  pthread_cond_init(&s->cv, NULL);
  pthread_mutex_init(&s->admin_mu, NULL);
  s->dir = xstrdup(cfg->dir && cfg->dir[0] ? cfg->dir : "./data");
  s->listen_address =
      xstrdup(cfg->listen_address ? cfg->listen_address : "0.0.0.0");
  s->auth = cfg->auth;
  s->devmode = cfg->devmode;
  s->maintenance = cfg->maintenance;
  s->synced = cfg->synced;
  s->token_expiry_min = cfg->token_expiry_min;
  s->session_timeout_s = cfg->session_timeout_s;
  s->max_sessions = cfg->max_sessions;
  s->log = cfg->log;
  s->log_arg = cfg->log_arg;
  s->started_at = (int64_t)time(NULL);
  s->next_seq = 1;
  if (s->dir == NULL || s->listen_address == NULL) {
    rc = IMMU_ENOMEM;
    *errmsg = msgf("out of memory");
    goto fail;
  }

  /* A first start with the default password on a public address would
   * leave a well-known sysadmin password reachable from the network. */
  first_start =
      db_path(s, IMMU_SYSTEMDB, path, sizeof path) != 0 || !is_dir(path);
  if (first_start && strcmp(pw, IMMU_DEFAULT_ADMIN_PASSWORD) == 0 &&
      !addr_is_loopback(s->listen_address)) {
    rc = IMMU_EINVAL;
    *errmsg = msgf("refusing to start: the immudb user would get the default "
                   "password while the server listens on %s (not a loopback "
                   "address); set admin-password, or listen on 127.0.0.1",
                   s->listen_address);
    goto fail;
  }
  if ((rc = mkdir_p(s->dir)) != 0) {
    *errmsg =
        msgf("cannot create the data directory %s: %s", s->dir, strerror(-rc));
    goto fail;
  }
  if ((rc = identity_load(s, errmsg)) != 0)
    goto fail;
  if (cfg->signing_key != NULL && cfg->signing_key[0] != '\0') {
    if ((rc = immu_signer_from_file(cfg->signing_key, &s->signer)) != 0) {
      *errmsg = msgf("cannot load the signing key %s: %s", cfg->signing_key,
                     immu_strerror(rc));
      goto fail;
    }
  }
  if ((rc = immu_store_env_new(index_cache_bytes(cfg), 0, &s->env)) != 0) {
    *errmsg = msgf("cannot start the storage engine: %s", immu_strerror(rc));
    goto fail;
  }

  /* systemdb: without it there are no users, so its failure is fatal. */
  if ((e = immu__calloc(1, sizeof *e)) == NULL || db_list_add(s, e) != 0) {
    immu__free(e);
    rc = IMMU_ENOMEM;
    *errmsg = msgf("out of memory");
    goto fail;
  }
  copy_str(e->name, sizeof e->name, IMMU_SYSTEMDB);
  immu__dbsettings_default(&e->set);
  if ((rc = db_open_ent(s, e, 1)) != 0) {
    *errmsg = msgf("cannot open systemdb: %s", e->err);
    goto fail;
  }
  if ((rc = sys_scan(s, REC_USER, users_load_cb, s)) != 0) {
    *errmsg = msgf("cannot read the users from systemdb: %s",
                   rc == IMMU_ENOMEM ? "out of memory" : immu_db_last_error());
    goto fail;
  }
  if ((s->dummy_hash = immu__password_hash((const uint8_t *)"x", 1)) == NULL) {
    rc = IMMU_ECRYPTO;
    *errmsg = msgf("password hashing (libcrypt bcrypt) is not available");
    goto fail;
  }
  if (user_find(s, IMMU_SYSADMIN_USER) == NULL) {
    if ((rc = create_sysadmin(s, pw)) != 0) {
      *errmsg = msgf("cannot create the immudb user: %s", immu_strerror(rc));
      goto fail;
    }
  } else if (!addr_is_loopback(s->listen_address) &&
             immu__admin_has_default_password(s)) {
    rc = IMMU_EINVAL;
    *errmsg = msgf("refusing to start: the immudb user has the default "
                   "password while the server listens on %s (not a loopback "
                   "address); change it first (listening on 127.0.0.1)",
                   s->listen_address);
    goto fail;
  }

  /* Databases: records, then directories without one. */
  if ((rc = sys_scan(s, REC_DB, dbs_load_cb, s)) != 0) {
    *errmsg = msgf("cannot read the databases from systemdb: %s",
                   rc == IMMU_ENOMEM ? "out of memory" : immu_db_last_error());
    goto fail;
  }
  if ((rc = scan_data_dir(s)) != 0) {
    *errmsg = msgf("cannot scan %s: %s", s->dir, immu_strerror(rc));
    goto fail;
  }
  if (db_find(s, IMMU_DEFAULTDB) == NULL) {
    immu__dbsettings set;
    char err[512];
    immu__dbsettings_default(&set);
    rc = immu__db_create(s, IMMU_DEFAULTDB, &set, "", err, sizeof err);
    if (rc != IMMU_GRPC_OK) {
      *errmsg = msgf("%s", err);
      rc = IMMU_EINVAL;
      goto fail;
    }
  }
  if (s->ndbs > 2)
    qsort(s->dbs + 1, s->ndbs - 1, sizeof *s->dbs, dbent_order);
  for (size_t i = 1; i < s->ndbs; i++) {
    e = s->dbs[i];
    if (e->state != IMMU__DB_UNLOADED)
      continue;
    if (!e->set.autoload && strcmp(e->name, IMMU_DEFAULTDB) != 0)
      continue;
    if (db_open_ent(s, e, 0) != 0)
      immu__srv_logf(s, IMMU_LOG_ERROR,
                     "database %s is unavailable: %s (the other databases "
                     "are served)",
                     e->name, e->err);
  }
  immu__srv_logf(s, IMMU_LOG_INFO, "server %s: %zu databases, %zu users",
                 s->uuid, s->ndbs - 1, s->nusers);
  *out = s;
  return 0;

fail:
  if (rc == 0)
    rc = IMMU_EINVAL;
  if (*errmsg == NULL)
    *errmsg = msgf("%s", immu_strerror(rc));
  immu_server_free(s);
  return rc;
}

void immu_server_free(immu_server *s) {
  if (s == NULL)
    return;
  /* A detached call (an asynchronous Set) finishes its gRPC call on an
   * engine thread and only then releases its database (immu_srv_end), so
   * the transport may already be gone while that thread still holds a
   * reference: wait for every reference before freeing what it touches. */
  pthread_mutex_lock(&s->mu);
  for (;;) {
    size_t i;
    for (i = 0; i < s->ndbs && s->dbs[i]->refs == 0; i++) {
    }
    if (i == s->ndbs)
      break;
    pthread_cond_wait(&s->cv, &s->mu);
  }
  pthread_mutex_unlock(&s->mu);
  /* User databases first, systemdb last. */
  for (size_t i = s->ndbs; i-- > 0;) {
    immu__dbent *e = s->dbs[i];
    if (e->db != NULL && immu_db_close(e->db) != 0)
      immu__srv_logf(s, IMMU_LOG_ERROR, "database %s: close: %s", e->name,
                     immu_db_last_error());
    e->db = NULL;
    dbent_free(e);
  }
  immu__free(s->dbs);
  for (size_t i = 0; i < s->nusers; i++) {
    immu__user_clear(s->users[i]);
    immu__free(s->users[i]);
  }
  immu__free(s->users);
  while (s->tokens.head != NULL)
    cred_remove(s, s->tokens.head);
  while (s->sessions.head != NULL)
    cred_remove(s, s->sessions.head);
  immu__free(s->buckets);
  for (size_t i = 0; i < s->nmethods; i++)
    immu__free((void *)(uintptr_t)s->methods[i].path);
  immu__free(s->methods);
  if (s->env != NULL)
    immu_store_env_free(s->env);
  immu_signer_free(s->signer);
  immu__free(s->dummy_hash);
  immu__free(s->dir);
  immu__free(s->listen_address);
  pthread_mutex_destroy(&s->mu);
  pthread_cond_destroy(&s->cv);
  pthread_mutex_destroy(&s->admin_mu);
  immu__free(s);
}

/* ------------------------------------------------------------------ */
/* Per-call authorisation (immudb-api.md section 3)                   */
/* ------------------------------------------------------------------ */

/* Reads that immudb's table nevertheless puts at READWRITE (GetAll): the
 * permission stands, but they are not writes for systemdb and
 * --maintenance. */
static int is_read_call(const immu_grpc_call *call) {
  const char *p = immu_grpc_call_path(call);
  const char *name = p ? strrchr(p, '/') : NULL;
  return name != NULL && strcmp(name + 1, "GetAll") == 0;
}

/*
 * What immu_srv_begin checks, in order:
 *
 *   credentials   metadata "sessionid" (wins when both are present), else
 *                 "authorization" ("Bearer <token>" or a bare token), else
 *                 with --auth=false an anonymous sysadmin "immudb" on
 *                 defaultdb, loopback callers only unless --devmode
 *   user          must still exist and be active
 *   database      the token's/session's database; a token without one
 *                 selects defaultdb while the server is not "multi-db"
 *                 (one user, one database besides systemdb), as immudb
 *   need_db = 1   a database must be selected, exist and be loaded; the
 *                 caller's permission on it must be >= |need|; systemdb
 *                 refuses need >= READWRITE; --maintenance refuses
 *                 need == READWRITE (data writes); GetAll, a read that
 *                 needs READWRITE, is exempt from both
 *   need_db = 0   |need| is compared with the permission on the selected
 *                 database if any, else with 255 for the sysadmin and 0
 *                 for everybody else
 *
 * Permission values order as their numbers: READ 1 < READWRITE 2 <
 * ADMIN 254 < SYSADMIN 255, so "at least |need|" is a numeric compare.
 *
 *   failure                          status               message
 *   no credentials (auth on)         UNAUTHENTICATED      not logged in
 *   unknown token                    UNAUTHENTICATED      invalid token
 *   expired token                    UNAUTHENTICATED      token has expired
 *   unknown or idle session          UNAUTHENTICATED      session not found
 *   auth off, remote caller          PERMISSION_DENIED    authentication is
 *                                                         disabled: ...
 *   user deactivated                 PERMISSION_DENIED    user is not active
 *   no database selected             FAILED_PRECONDITION  please select a
 *                                                         database first
 *   database unknown                 INVALID_ARGUMENT     database X does not
 *                                                         exist
 *   database unloaded                FAILED_PRECONDITION  database X is not
 *                                                         loaded
 *   database failed / unloading      UNAVAILABLE          database X is
 *                                                         unavailable: ...
 *   permission too low               PERMISSION_DENIED    permission denied
 *   write to systemdb                PERMISSION_DENIED    database systemdb is
 *                                                         read-only
 *   write in maintenance mode        FAILED_PRECONDITION  server is in
 *                                                         maintenance mode
 */
int immu__srv_begin(immu_server *s, immu_grpc_call *call, int need, int need_db,
                    immu_srv_ctx *out, immu__authinfo *ai) {
  const char *sid = immu_grpc_call_metadata(call, "sessionid");
  const char *tok = immu_grpc_call_metadata(call, "authorization");
  char user[IMMU_USERNAME_MAX + 1], db[IMMU_DBNAME_MAX + 1];
  immu__authinfo info;
  immu__user *u;
  immu__dbent *e = NULL;
  int64_t now = mono_ms();
  int status = IMMU_GRPC_OK, multidb;
  char msg[512];
  uint32_t perm;

  memset(out, 0, sizeof *out);
  memset(&info, 0, sizeof info);
  out->srv = s;
  out->call = call;
  msg[0] = '\0';
  user[0] = db[0] = '\0';
  if (tok != NULL) {
    while (*tok == ' ')
      tok++;
    if (strncasecmp(tok, "bearer ", 7) == 0)
      tok += 7;
    while (*tok == ' ')
      tok++;
  }

  pthread_mutex_lock(&s->mu);
  if (sid != NULL && sid[0] != '\0') {
    immu__cred *c = cred_find(s, sid, 1);
    if (c != NULL && now - c->last_ms >= session_timeout_ms(s)) {
      cred_remove(s, c);
      c = NULL;
    }
    if (c == NULL) {
      status = IMMU_GRPC_UNAUTHENTICATED;
      snprintf(msg, sizeof msg, "session not found");
      goto out;
    }
    c->last_ms = now;
    list_unlink(&s->sessions, c);
    list_append(&s->sessions, c);
    copy_str(user, sizeof user, c->user);
    copy_str(db, sizeof db, c->db);
    info.kind = IMMU__AUTH_SESSION;
    copy_str(info.id, sizeof info.id, c->id);
  } else if (tok != NULL && tok[0] != '\0') {
    immu__cred *c = cred_find(s, tok, 0);
    if (c == NULL) {
      status = IMMU_GRPC_UNAUTHENTICATED;
      snprintf(msg, sizeof msg, "invalid token");
      goto out;
    }
    if (c->expiry_ms <= now) {
      cred_remove(s, c);
      status = IMMU_GRPC_UNAUTHENTICATED;
      snprintf(msg, sizeof msg, "token has expired");
      goto out;
    }
    copy_str(user, sizeof user, c->user);
    copy_str(db, sizeof db, c->db);
    info.kind = IMMU__AUTH_TOKEN;
    copy_str(info.id, sizeof info.id, c->id);
  } else if (!s->auth) {
    if (!s->devmode && !immu_grpc_call_peer_is_loopback(call)) {
      status = IMMU_GRPC_PERMISSION_DENIED;
      snprintf(msg, sizeof msg,
               "authentication is disabled: only connections from the local "
               "host are accepted (--devmode accepts remote ones)");
      goto out;
    }
    copy_str(user, sizeof user, IMMU_SYSADMIN_USER);
    copy_str(db, sizeof db, IMMU_DEFAULTDB);
    info.kind = IMMU__AUTH_ANON;
  } else {
    status = IMMU_GRPC_UNAUTHENTICATED;
    snprintf(msg, sizeof msg, "not logged in");
    goto out;
  }

  u = user_find(s, user);
  if (u == NULL) {
    status = IMMU_GRPC_UNAUTHENTICATED;
    snprintf(msg, sizeof msg, "not logged in");
    goto out;
  }
  if (!u->active) {
    status = IMMU_GRPC_PERMISSION_DENIED;
    snprintf(msg, sizeof msg, "user is not active");
    goto out;
  }
  multidb = s->nusers > 1 || s->ndbs > 2;
  if (db[0] == '\0' && !multidb)
    copy_str(db, sizeof db, IMMU_DEFAULTDB);
  perm = db[0] ? immu__user_perm(u, db)
               : (u->sysadmin ? IMMU_PERM_SYSADMIN : IMMU_PERM_NONE);
  out->sysadmin = u->sysadmin;
  out->perm = (int)perm;

  if (need_db) {
    if (db[0] == '\0') {
      status = IMMU_GRPC_FAILED_PRECONDITION;
      snprintf(msg, sizeof msg, "please select a database first");
      goto out;
    }
    e = db_find(s, db);
    if (e == NULL) {
      status = IMMU_GRPC_INVALID_ARGUMENT;
      snprintf(msg, sizeof msg, "database %s does not exist", db);
      goto out;
    }
    if (e->state == IMMU__DB_UNLOADED) {
      status = IMMU_GRPC_FAILED_PRECONDITION;
      snprintf(msg, sizeof msg, "database %s is not loaded", db);
      e = NULL;
      goto out;
    }
    if (e->state != IMMU__DB_LOADED) {
      status = IMMU_GRPC_UNAVAILABLE;
      snprintf(msg, sizeof msg, "database %s is unavailable: %s", db,
               e->state == IMMU__DB_UNLOADING ? "it is being unloaded"
               : e->err                       ? e->err
                                              : "not open");
      e = NULL;
      goto out;
    }
  }
  if (need > IMMU_PERM_NONE && perm < (uint32_t)need) {
    status = IMMU_GRPC_PERMISSION_DENIED;
    snprintf(msg, sizeof msg, "permission denied");
    e = NULL;
    goto out;
  }
  if (need_db && need >= IMMU_PERM_READWRITE && !is_read_call(call)) {
    if (strcmp(db, IMMU_SYSTEMDB) == 0) {
      status = IMMU_GRPC_PERMISSION_DENIED;
      snprintf(msg, sizeof msg, "database %s is read-only", IMMU_SYSTEMDB);
      e = NULL;
      goto out;
    }
    /* Data writes only: FlushIndex/CompactIndex (admin) stay allowed. */
    if (s->maintenance && need == IMMU_PERM_READWRITE) {
      status = IMMU_GRPC_FAILED_PRECONDITION;
      snprintf(msg, sizeof msg, "server is in maintenance mode");
      e = NULL;
      goto out;
    }
  }
  if (need_db) {
    e->refs++;
    out->db = e->db;
    out->ref_ = e;
  }
out:
  pthread_mutex_unlock(&s->mu);
  if (status != IMMU_GRPC_OK) {
    immu_grpc_call_finish(call, status, msg);
    memset(out, 0, sizeof *out);
    return -1;
  }
  copy_str(out->user, sizeof out->user, user);
  copy_str(out->db_name, sizeof out->db_name, db);
  if (ai != NULL)
    *ai = info;
  return 0;
}

int immu_srv_begin(immu_server *s, immu_grpc_call *call, int need, int need_db,
                   immu_srv_ctx *out) {
  return immu__srv_begin(s, call, need, need_db, out, NULL);
}

void immu_srv_end(immu_srv_ctx *ctx) {
  immu__dbent *e;
  if (ctx == NULL)
    return;
  e = ctx->ref_;
  if (e != NULL) {
    immu_server *s = ctx->srv;
    pthread_mutex_lock(&s->mu);
    e->last_done_ms = immu__now_ms();
    if (--e->refs == 0)
      pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
  }
  ctx->ref_ = NULL;
  ctx->db = NULL;
}

int immu_srv_sign_state(immu_server *s, const char *db, uint64_t tx_id,
                        const immu_digest *alh, uint8_t sig[IMMU_SIG_MAX],
                        size_t *sig_len, uint8_t pubkey[IMMU_PUBKEY_LEN]) {
  if (s->signer == NULL)
    return IMMU_ENOTFOUND;
  return immu_signer_sign_state(s->signer, db, strlen(db), tx_id, alh, sig,
                                sig_len, pubkey);
}

/* ------------------------------------------------------------------ */
/* Errors and replies                                                  */
/* ------------------------------------------------------------------ */

/*
 * immu_srv_fail: IMMU_E* -> gRPC status. The message is
 * immu_db_last_error() when it is set (immudb's wording: "key not found",
 * "tx not found", "illegal arguments", ...), else immu_strerror(rc). As in
 * immudb, KV-layer failures that clients recognise by their text travel as
 * UNKNOWN; argument errors as INVALID_ARGUMENT.
 *
 *   IMMU_ENOTFOUND      UNKNOWN              "key not found", "tx not found"
 *   IMMU_EEXIST         UNKNOWN              e.g. "final key cannot be
 *                                            converted into a reference"
 *   IMMU_ECONFLICT      UNKNOWN              e.g. "referenced key cannot be
 *                                            a reference"
 *   IMMU_EINVAL         INVALID_ARGUMENT     "illegal arguments", ...
 *   IMMU_ERANGE         INVALID_ARGUMENT     "invalid key revision number"
 *   IMMU_ETOOLARGE      INVALID_ARGUMENT     limits exceeded
 *   IMMU_EPROTO         INVALID_ARGUMENT
 *   IMMU_ETIMEOUT       DEADLINE_EXCEEDED    index did not catch up
 *   IMMU_EPERM          PERMISSION_DENIED
 *   IMMU_EAUTH          UNAUTHENTICATED
 *   IMMU_EUNSUPPORTED   UNIMPLEMENTED
 *   IMMU_ENOMEM         RESOURCE_EXHAUSTED
 *   -ENOSPC, -EDQUOT    RESOURCE_EXHAUSTED
 *   IMMU_EBUSY          UNAVAILABLE
 *   IMMU_EWOULDBLOCK    UNAVAILABLE          (never expected: handlers
 *                                            retry on a worker)
 *   IMMU_ECLOSED        UNAVAILABLE
 *   IMMU_EPOISONED      UNAVAILABLE          database refuses work after a
 *                                            fatal error
 *   IMMU_ECORRUPT       DATA_LOSS
 *   IMMU_EVERIFY        DATA_LOSS
 *   IMMU_ECRYPTO        INTERNAL
 *   other -errno        INTERNAL
 *   anything else       UNKNOWN
 */
static int status_of(int rc) {
  switch (rc) {
  case IMMU_ENOTFOUND:
  case IMMU_EEXIST:
  case IMMU_ECONFLICT:
    return IMMU_GRPC_UNKNOWN;
  case IMMU_EINVAL:
  case IMMU_ERANGE:
  case IMMU_ETOOLARGE:
  case IMMU_EPROTO:
    return IMMU_GRPC_INVALID_ARGUMENT;
  case IMMU_ETIMEOUT:
    return IMMU_GRPC_DEADLINE_EXCEEDED;
  case IMMU_EPERM:
    return IMMU_GRPC_PERMISSION_DENIED;
  case IMMU_EAUTH:
    return IMMU_GRPC_UNAUTHENTICATED;
  case IMMU_EUNSUPPORTED:
    return IMMU_GRPC_UNIMPLEMENTED;
  case IMMU_ENOMEM:
  case -ENOSPC:
  case -EDQUOT:
    return IMMU_GRPC_RESOURCE_EXHAUSTED;
  case IMMU_EBUSY:
  case IMMU_EWOULDBLOCK:
  case IMMU_ECLOSED:
  case IMMU_EPOISONED:
    return IMMU_GRPC_UNAVAILABLE;
  case IMMU_ECORRUPT:
  case IMMU_EVERIFY:
    return IMMU_GRPC_DATA_LOSS;
  case IMMU_ECRYPTO:
    return IMMU_GRPC_INTERNAL;
  default:
    if (rc < 0 && rc > -1000)
      return IMMU_GRPC_INTERNAL;
    return IMMU_GRPC_UNKNOWN;
  }
}

void immu_srv_fail(immu_grpc_call *call, int rc) {
  const char *m = immu_db_last_error();
  if (m == NULL || m[0] == '\0')
    m = immu_strerror(rc);
  immu_grpc_call_finish(call, status_of(rc), m);
}

void immu_srv_failf(immu_grpc_call *call, int status, const char *fmt, ...) {
  char buf[MSG_MAX];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  immu_grpc_call_finish(call, status, buf);
}

static int pack_send(immu_grpc_call *call, const ProtobufCMessage *m) {
  size_t n = protobuf_c_message_get_packed_size(m);
  uint8_t stackbuf[512];
  uint8_t *buf = n <= sizeof stackbuf ? stackbuf : immu__malloc(n);
  int rc;
  if (buf == NULL)
    return IMMU_ENOMEM;
  protobuf_c_message_pack(m, buf);
  rc = immu_grpc_call_send(call, buf, n);
  if (buf != stackbuf)
    immu__free(buf);
  return rc;
}

void immu_srv_reply(immu_grpc_call *call, const ProtobufCMessage *m) {
  int rc = pack_send(call, m);
  if (rc == 0)
    immu_grpc_call_finish(call, IMMU_GRPC_OK, NULL);
  else if (rc == IMMU_ENOMEM)
    immu_grpc_call_finish(call, IMMU_GRPC_RESOURCE_EXHAUSTED,
                          "out of memory packing the reply");
  else
    immu_grpc_call_finish(call, IMMU_GRPC_CANCELLED, "call cancelled");
}

int immu_srv_send(immu_grpc_call *call, const ProtobufCMessage *m) {
  return pack_send(call, m);
}

ProtobufCMessage *immu_srv_unpack(immu_grpc_call *call, size_t i,
                                  const ProtobufCMessageDescriptor *desc) {
  const uint8_t *data;
  size_t len = 0;
  ProtobufCMessage *m;
  if (i >= immu_grpc_call_nmsgs(call)) {
    immu_grpc_call_finish(call, IMMU_GRPC_INVALID_ARGUMENT,
                          "malformed request: missing request message");
    return NULL;
  }
  data = immu_grpc_call_msg(call, i, &len);
  m = protobuf_c_message_unpack(desc, NULL, len, data);
  if (m == NULL)
    immu_grpc_call_finish(call, IMMU_GRPC_INVALID_ARGUMENT,
                          "malformed request");
  return m;
}

/* ------------------------------------------------------------------ */
/* Method table                                                        */
/* ------------------------------------------------------------------ */

static int is_sql_method(const char *name) {
  static const char *const sql[] = {
      "SQLExec",       "SQLQuery",   "UnarySQLQuery",    "ListTables",
      "DescribeTable", "NewTx",      "Commit",           "Rollback",
      "TxSQLExec",     "TxSQLQuery", "VerifiableSQLGet", "ChangeSQLPrivileges"};
  for (size_t i = 0; i < sizeof sql / sizeof sql[0]; i++)
    if (strcmp(name, sql[i]) == 0)
      return 1;
  return 0;
}

static void unimplemented(immu_grpc_call *call, void *arg) {
  const char *path = immu_grpc_call_path(call);
  const char *name = path ? strrchr(path, '/') : NULL;
  (void)arg;
  name = name ? name + 1 : (path ? path : "?");
  if (is_sql_method(name))
    immu_srv_failf(call, IMMU_GRPC_UNIMPLEMENTED,
                   "method %s is not supported by this server: SQL and "
                   "document APIs are not implemented",
                   name);
  else
    immu_srv_failf(call, IMMU_GRPC_UNIMPLEMENTED,
                   "method %s is not supported by this server", name);
}

static immu_grpc_handler table_find(const immu_svc_entry *t, size_t n,
                                    const char *name) {
  for (size_t i = 0; i < n; i++)
    if (strcmp(t[i].name, name) == 0)
      return t[i].handler;
  return NULL;
}

static int method_add(immu_server *s, size_t cap, const char *svc,
                      const char *name, immu_grpc_handler h) {
  char *path;
  if (s->nmethods >= cap)
    return IMMU_ENOMEM;
  if ((path = msgf("/%s/%s", svc, name)) == NULL)
    return IMMU_ENOMEM;
  s->methods[s->nmethods].path = path;
  s->methods[s->nmethods].handler = h;
  s->methods[s->nmethods].arg = s;
  /* Health only packs a constant reply: run it on the I/O thread, without
   * the two thread hand-offs of a worker (it is what load balancers and
   * the benchmark's transport ceiling poll). Get tries the same, and moves
   * to a worker when the answer is not in memory (h_get); Set and
   * VerifiableSet only queue their tx there, unless it is large (h_set). */
  s->methods[s->nmethods].flags =
      strcmp(name, "Health") == 0 ? IMMU_GRPC_METHOD_INLINE
      : strcmp(name, "Get") == 0 || strcmp(name, "Set") == 0 ||
              strcmp(name, "VerifiableSet") == 0
          ? IMMU_GRPC_METHOD_TRY_INLINE
          : 0;
  s->nmethods++;
  return 0;
}

static int methods_build(immu_server *s) {
  const ProtobufCServiceDescriptor *sd =
      &immudb__schema__immu_service__descriptor;
  size_t cap = sd->n_methods + immu__svc_admin_nmethods + immu__svc_kv_nmethods;
  int rc = 0;

  if ((s->methods = immu__calloc(cap, sizeof *s->methods)) == NULL)
    return IMMU_ENOMEM;
  for (unsigned i = 0; i < sd->n_methods && rc == 0; i++) {
    const char *name = sd->methods[i].name;
    immu_grpc_handler a =
        table_find(immu__svc_admin_methods, immu__svc_admin_nmethods, name);
    immu_grpc_handler k =
        table_find(immu__svc_kv_methods, immu__svc_kv_nmethods, name);
    if (a != NULL && k != NULL)
      immu__srv_logf(s, IMMU_LOG_WARN,
                     "method %s is in both handler tables; using the admin "
                     "one",
                     name);
    rc = method_add(s, cap, sd->name, name, a ? a : (k ? k : unimplemented));
  }
  /* Handlers for names the schema lacks (an older or newer RPC). */
  for (size_t t = 0; t < 2 && rc == 0; t++) {
    const immu_svc_entry *tab =
        t == 0 ? immu__svc_admin_methods : immu__svc_kv_methods;
    size_t n = t == 0 ? immu__svc_admin_nmethods : immu__svc_kv_nmethods;
    for (size_t i = 0; i < n && rc == 0; i++) {
      int known = 0;
      for (unsigned j = 0; j < sd->n_methods; j++)
        if (strcmp(sd->methods[j].name, tab[i].name) == 0)
          known = 1;
      if (!known)
        rc = method_add(s, cap, sd->name, tab[i].name, tab[i].handler);
    }
  }
  if (rc != 0) {
    for (size_t i = 0; i < s->nmethods; i++)
      immu__free((void *)(uintptr_t)s->methods[i].path);
    immu__free(s->methods);
    s->methods = NULL;
    s->nmethods = 0;
  }
  return rc;
}

void immu_server_methods(immu_server *s, const immu_grpc_method **methods,
                         size_t *n) {
  pthread_mutex_lock(&s->mu);
  if (s->methods == NULL && methods_build(s) != 0)
    immu__srv_logf(s, IMMU_LOG_ERROR,
                   "out of memory building the method "
                   "table");
  *methods = s->methods;
  *n = s->nmethods;
  pthread_mutex_unlock(&s->mu);
}
