/* SPDX-License-Identifier: Apache-2.0 */
/*
 * End-to-end tests of `immuadmin` against the real `immudb` server on
 * 127.0.0.1 (free ports, a fresh data directory under IMMU_TEST_TMPDIR,
 * stopped at the end). Binaries: IMMU_SERVER_BIN and IMMUADMIN_BIN (set by
 * CMakeLists.txt).
 *
 * Covered, in order (the tests share one server and build on each other):
 *   usage errors and help; status (also of an unreachable server); the
 *   forced password change at the first login (mismatch, weak password,
 *   success), wrong passwords, the token file; database create / list /
 *   use / load / unload / delete; user create / list / changepassword /
 *   permission grant|revoke / activate / deactivate, and what a non-admin
 *   may not do; stats (-t, -r, the live view on a pseudo-terminal);
 *   backup -> verify -> restore -> verify of a database of 100,000 txs
 *   written in-process with the KV layer before the server starts (timed);
 *   restored txs byte-identical to the source; restores of tampered
 *   backups (CRC-breaking flip, value change with fixed CRCs, dropped tx,
 *   a tx from another chain, damaged header, truncation) refused before
 *   anything is created; restore --force onto a prefix; dump -> restore
 *   into a fresh second server (through stdin); progress bars on a tty;
 *   logout; an expired token; verify of a database whose log was damaged
 *   on disk (first bad tx reported); restore limits; mTLS configured
 *   through IMMUADMIN_* variables.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <pty.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "immudb/client.h"
#include "immudb/db.h"
#include "immudb/err.h"
#include "store/crc32c.h"
#include "store/store.h"

#define BIG_TXS 100000u
#define ADMIN_PW "Adm1n!pass"
#define ALICE_PW "Al1ce!pass"
#define START_TIMEOUT_S 60
#define RUN_TIMEOUT_S 240

/* ------------------------------------------------------------------ */
/* helpers                                                             */
/* ------------------------------------------------------------------ */

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

static int rm_cb(const char *p, const struct stat *sb, int flag,
                 struct FTW *ftw) {
  (void)sb;
  (void)flag;
  (void)ftw;
  return remove(p);
}

static void rm_rf(const char *dir) {
  nftw(dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

static int free_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  assert_true(fd >= 0);
  struct sockaddr_in sa;
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
  socklen_t sl = sizeof sa;
  getsockname(fd, (struct sockaddr *)&sa, &sl);
  close(fd);
  return ntohs(sa.sin_port);
}

static char *slurp(const char *path, size_t *len) {
  FILE *fp = fopen(path, "rb");
  if (fp == NULL) {
    if (len)
      *len = 0;
    char *e = malloc(1);
    e[0] = '\0';
    return e;
  }
  fseek(fp, 0, SEEK_END);
  long n = ftell(fp);
  rewind(fp);
  char *b = malloc((size_t)n + 1);
  size_t got = fread(b, 1, (size_t)n, fp);
  b[got] = '\0';
  fclose(fp);
  if (len)
    *len = got;
  return b;
}

static void spit(const char *path, const void *p, size_t n) {
  FILE *fp = fopen(path, "wb");
  assert_non_null(fp);
  assert_int_equal(fwrite(p, 1, n, fp), n);
  fclose(fp);
}

static const char *tmproot(void) {
  const char *t = getenv("IMMU_TEST_TMPDIR");
  return t && t[0] ? t : "/tmp";
}

/* ------------------------------------------------------------------ */
/* servers                                                             */
/* ------------------------------------------------------------------ */

typedef struct srv {
  char root[600];
  char dir[700];
  char log[700];
  char tok[700];
  int port, mport;
  pid_t pid;
  const char *srv_extra[8]; /* more server flags (NULL-terminated) */
  const char *cli_env[8];   /* more immuadmin environment */
} srv;

static srv S1, S2, S3;
static srv *cur;                  /* the server immuadmin talks to by default */
static const char *g_keep_stdout; /* run_ia_argv keeps stdout there */
static char g_root[512];

static const char *server_bin(void) {
  const char *b = getenv("IMMU_SERVER_BIN");
  return b && b[0] ? b : "immudb";
}

static const char *ia_bin(void) {
  const char *b = getenv("IMMUADMIN_BIN");
  return b && b[0] ? b : "immuadmin";
}

static void dump_log(const srv *s) {
  size_t n;
  char *l = slurp(s->log, &n);
  fprintf(stderr, "----- server log %s (last 4000 bytes) -----\n%s\n-----\n",
          s->log, n > 4000 ? l + n - 4000 : l);
  free(l);
}

static void srv_init(srv *s, const char *name) {
  memset(s, 0, sizeof *s);
  snprintf(s->root, sizeof s->root, "%s/%s", g_root, name);
  rm_rf(s->root);
  mkdir(s->root, 0755);
  snprintf(s->dir, sizeof s->dir, "%s/data", s->root);
  snprintf(s->log, sizeof s->log, "%s/server.log", s->root);
  snprintf(s->tok, sizeof s->tok, "%s/token", s->root);
  s->port = free_port();
  do
    s->mport = free_port();
  while (s->mport == s->port);
}

static int run_ia_argv(const char *in, const char *in_file, int timeout_s,
                       char **out, char **err, const char *const *args);

static void srv_start(srv *s) {
  char port[16], mport[16];
  snprintf(port, sizeof port, "%d", s->port);
  snprintf(mport, sizeof mport, "%d", s->mport);
  cur = s;
  const char *argv[32] = {server_bin(),
                          "--dir",
                          s->dir,
                          "--address",
                          "127.0.0.1",
                          "--port",
                          port,
                          "--metrics-server-port",
                          mport,
                          "--synced=false",
                          "--consistency-check=false"};
  size_t na = 11;
  for (size_t i = 0; s->srv_extra[i] != NULL && na + 1 < 32; i++)
    argv[na++] = s->srv_extra[i];
  argv[na] = NULL;
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    int fd = open(s->log, O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) {
      dup2(fd, 1);
      dup2(fd, 2);
      close(fd);
    }
    if (chdir(s->root) != 0)
      _exit(126);
    execv(argv[0], (char *const *)(uintptr_t)argv);
    _exit(127);
  }
  s->pid = pid;
  /* Ready when `immuadmin status` answers. */
  double deadline = now_s() + START_TIMEOUT_S;
  for (;;) {
    int st;
    if (waitpid(pid, &st, WNOHANG) == pid) {
      s->pid = 0;
      dump_log(s);
      fail_msg("the server exited during start-up");
    }
    char *o = NULL, *e = NULL;
    const char *const args[] = {"status", "-p", port, NULL};
    int rc = run_ia_argv(NULL, NULL, 10, &o, &e, args);
    free(o);
    free(e);
    if (rc == 0)
      return;
    if (now_s() > deadline) {
      dump_log(s);
      fail_msg("the server did not become ready in %d s", START_TIMEOUT_S);
    }
    sleep_ms(100);
  }
}

static void srv_stop(srv *s) {
  if (s->pid <= 0)
    return;
  kill(s->pid, SIGTERM);
  double deadline = now_s() + 30;
  int st;
  while (waitpid(s->pid, &st, WNOHANG) == 0) {
    if (now_s() > deadline) {
      kill(s->pid, SIGKILL);
      waitpid(s->pid, &st, 0);
      break;
    }
    sleep_ms(20);
  }
  s->pid = 0;
}

static void stop_all(void) {
  srv_stop(&S1);
  srv_stop(&S2);
  srv_stop(&S3);
}

/* ------------------------------------------------------------------ */
/* running immuadmin                                                   */
/* ------------------------------------------------------------------ */

/* Runs immuadmin with |args| (NULL-terminated), stdin from |in| (text) or
 * |in_file| (path) or /dev/null, environment: ours minus IMMUADMIN_* and
 * IMMUDB_*, plus the current server's port, metrics port and token file.
 * Returns the exit status (-1 killed / timeout); *out and *err get the
 * captured streams (heap). */
static int run_ia_argv(const char *in, const char *in_file, int timeout_s,
                       char **out, char **err, const char *const *args) {
  char of[700], ef[700], inf[700];
  static unsigned seq;
  seq++;
  snprintf(of, sizeof of, "%s/ia-%u.out", g_root, seq);
  snprintf(ef, sizeof ef, "%s/ia-%u.err", g_root, seq);
  snprintf(inf, sizeof inf, "%s/ia-%u.in", g_root, seq);
  if (in != NULL)
    spit(inf, in, strlen(in));
  size_t na = 0;
  while (args[na] != NULL)
    na++;
  char **argv = calloc(na + 2, sizeof *argv);
  argv[0] = (char *)(uintptr_t)ia_bin();
  for (size_t i = 0; i < na; i++)
    argv[i + 1] = (char *)(uintptr_t)args[i];
  size_t ne = 0;
  while (environ[ne] != NULL)
    ne++;
  char **envp = calloc(ne + 16, sizeof *envp);
  size_t k = 0;
  for (size_t i = 0; i < ne; i++)
    if (strncmp(environ[i], "IMMUADMIN_", 10) != 0 &&
        strncmp(environ[i], "IMMUDB_", 7) != 0 &&
        strncmp(environ[i], "HOME=", 5) != 0)
      envp[k++] = environ[i];
  char e1[64], e2[64], e3[800], e4[800];
  snprintf(e1, sizeof e1, "IMMUADMIN_IMMUDB_PORT=%d", cur->port);
  snprintf(e2, sizeof e2, "IMMUADMIN_METRICS_PORT=%d", cur->mport);
  snprintf(e3, sizeof e3, "IMMUADMIN_TOKENFILE=%s", cur->tok);
  snprintf(e4, sizeof e4, "HOME=%s", g_root);
  envp[k++] = e1;
  envp[k++] = e2;
  envp[k++] = e3;
  envp[k++] = e4;
  for (size_t i = 0; cur->cli_env[i] != NULL && i < 8; i++)
    envp[k++] = (char *)(uintptr_t)cur->cli_env[i];
  envp[k] = NULL;
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    const char *src = in != NULL ? inf : (in_file ? in_file : "/dev/null");
    int fi = open(src, O_RDONLY);
    int fo = open(of, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    int fe = open(ef, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fi < 0 || fo < 0 || fe < 0)
      _exit(125);
    dup2(fi, 0);
    dup2(fo, 1);
    dup2(fe, 2);
    close(fi);
    close(fo);
    close(fe);
    setsid(); /* no controlling terminal: prompts read stdin */
    execve(argv[0], argv, envp);
    _exit(127);
  }
  free(argv);
  free(envp);
  int st = 0, code = -1;
  double deadline = now_s() + timeout_s;
  for (;;) {
    pid_t w = waitpid(pid, &st, WNOHANG);
    if (w == pid) {
      code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
      break;
    }
    if (now_s() > deadline) {
      kill(pid, SIGKILL);
      waitpid(pid, &st, 0);
      fprintf(stderr, "immuadmin timed out after %d s\n", timeout_s);
      break;
    }
    sleep_ms(2);
  }
  *out = slurp(of, NULL);
  *err = slurp(ef, NULL);
  if (g_keep_stdout != NULL)
    rename(of, g_keep_stdout);
  else
    unlink(of);
  unlink(ef);
  if (in != NULL)
    unlink(inf);
  return code;
}

typedef struct res {
  int code;
  char *out, *err;
} res;

static void res_free(res *r) {
  free(r->out);
  free(r->err);
  r->out = r->err = NULL;
}

#define MAXARGS 32

/* ia(&r, stdin text or NULL, "arg", ..., NULL) */
static void ia_in(res *r, const char *in, const char *in_file, int timeout_s,
                  const char *a0, va_list ap) {
  const char *args[MAXARGS + 1];
  size_t n = 0;
  for (const char *a = a0; a != NULL && n < MAXARGS;
       a = va_arg(ap, const char *))
    args[n++] = a;
  args[n] = NULL;
  r->code = run_ia_argv(in, in_file, timeout_s, &r->out, &r->err, args);
}

static void ia(res *r, const char *in, const char *a0, ...) {
  va_list ap;
  va_start(ap, a0);
  ia_in(r, in, NULL, RUN_TIMEOUT_S, a0, ap);
  va_end(ap);
}

static void ia_file(res *r, const char *in_file, const char *a0, ...) {
  va_list ap;
  va_start(ap, a0);
  ia_in(r, NULL, in_file, RUN_TIMEOUT_S, a0, ap);
  va_end(ap);
}

static void show(const res *r) {
  fprintf(stderr, "exit %d\n--- stdout ---\n%s--- stderr ---\n%s---\n", r->code,
          r->out, r->err);
}

#define EXPECT(r, want_code, in_out, in_err)                                   \
  do {                                                                         \
    const char *io_ = (in_out), *ie_ = (in_err);                               \
    if ((r).code != (want_code) || (io_ && !strstr((r).out, io_)) ||           \
        (ie_ && !strstr((r).err, ie_))) {                                      \
      show(&(r));                                                              \
      fail_msg("line %d: want exit %d, stdout ~ \"%s\", stderr ~ \"%s\"",      \
               __LINE__, (want_code), io_ ? io_ : "", ie_ ? ie_ : "");         \
    }                                                                          \
  } while (0)

/* Runs and checks in one go; frees the result. */
#define RUN(want_code, in_out, in_err, in, ...)                                \
  do {                                                                         \
    res r_;                                                                    \
    ia(&r_, (in), __VA_ARGS__, (const char *)NULL);                            \
    EXPECT(r_, (want_code), (in_out), (in_err));                               \
    res_free(&r_);                                                             \
  } while (0)

/* Value of "Alh(N) = <hex>" in |s| into |hex| (65 bytes). */
static void alh_of(const char *s, char *hex) {
  const char *p = strstr(s, ") = ");
  assert_non_null(p);
  memcpy(hex, p + 4, 64);
  hex[64] = '\0';
}

/* ------------------------------------------------------------------ */
/* data                                                                */
/* ------------------------------------------------------------------ */

typedef struct gen_arg {
  immu_db *db;
  unsigned from, to;
  int rc;
} gen_arg;

static void *gen_thread(void *p) {
  gen_arg *g = p;
  char key[32], val[96];
  for (unsigned i = g->from; i < g->to && g->rc == 0; i++) {
    int kl = snprintf(key, sizeof key, "key-%07u", i);
    int vl = snprintf(val, sizeof val, "value %u of the big database, %s", i,
                      i % 7 == 0 ? "with some longer padding text here" : "");
    immu_db_kv kv = {(const uint8_t *)key, (size_t)kl, (const uint8_t *)val,
                     (size_t)vl};
    g->rc = immu_db_set(g->db, &kv, 1, 1, NULL);
  }
  return NULL;
}

/* Writes BIG_TXS one-entry txs into <dir>/<name> with the KV layer (the
 * server must be stopped). */
static double gen_big_db(const char *dir, const char *name) {
  char path[900];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  immu_store_options so;
  immu_store_options_init(&so);
  so.durability = IMMU_DURABILITY_ASYNC;
  immu_db_options dbo;
  immu_db_options_init(&dbo);
  dbo.store = &so;
  immu_db *db = NULL;
  double t0 = now_s();
  int rc = immu_db_open(path, &dbo, &db);
  if (rc != 0)
    fail_msg("immu_db_open %s: %s", path, immu_db_last_error());
  enum { NT = 4 };
  pthread_t th[NT];
  gen_arg ga[NT];
  for (unsigned t = 0; t < NT; t++) {
    ga[t].db = db;
    ga[t].from = 1 + t * (BIG_TXS / NT);
    ga[t].to = 1 + (t + 1) * (BIG_TXS / NT);
    ga[t].rc = 0;
    pthread_create(&th[t], NULL, gen_thread, &ga[t]);
  }
  for (unsigned t = 0; t < NT; t++) {
    pthread_join(th[t], NULL);
    if (ga[t].rc != 0)
      fail_msg("immu_db_set: %s", immu_db_last_error());
  }
  immu_db_state st;
  immu_db_current_state(db, &st);
  assert_int_equal(st.tx_id, BIG_TXS);
  assert_int_equal(immu_db_close(db), 0);
  return now_s() - t0;
}

/* Writes a few txs of varied sizes into |db| of the current server with
 * the SDK (one value of 300 KB: several 64 KiB chunks per exported tx). */
static void put_some(const char *db, unsigned n, const char *prefix) {
  immu_client_options co;
  immu_client_options_init(&co);
  co.address = "127.0.0.1";
  co.port = cur->port;
  co.call_timeout_ms = 30000;
  immu_client *c = NULL;
  if (immu_client_new(&co, &c) != 0)
    fail_msg("immu_client_new: %s", immu_client_last_error());
  if (immu_client_login(c, "immudb", ADMIN_PW) != 0 ||
      immu_client_use_database(c, db) != 0)
    fail_msg("SDK login/use %s: %s", db, immu_client_last_error());
  size_t big = 300 * 1024;
  uint8_t *v = malloc(big);
  for (size_t i = 0; i < big; i++)
    v[i] = (uint8_t)(i * 31 + 7);
  for (unsigned i = 0; i < n; i++) {
    char k[64];
    int kl = snprintf(k, sizeof k, "%s-%u", prefix, i);
    size_t vl = i == 3 ? big : (size_t)(10 + i);
    if (immu_client_set(c, (const uint8_t *)k, (size_t)kl, v, vl, NULL) != 0)
      fail_msg("SDK set: %s", immu_client_last_error());
  }
  free(v);
  immu_client_free(c);
}

/* ------------------------------------------------------------------ */
/* backup file surgery                                                 */
/* ------------------------------------------------------------------ */

typedef struct bkfile {
  uint8_t *b;
  size_t len;
  size_t hlen;  /* header bytes */
  size_t *off;  /* frame offsets */
  size_t *flen; /* frame lengths */
  size_t n;
} bkfile;

static uint32_t be32(const uint8_t *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 |
         p[3];
}

static void put_be32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)(v >> 24);
  p[1] = (uint8_t)(v >> 16);
  p[2] = (uint8_t)(v >> 8);
  p[3] = (uint8_t)v;
}

static void bk_load(const char *path, bkfile *f) {
  memset(f, 0, sizeof f[0]);
  f->b = (uint8_t *)slurp(path, &f->len);
  assert_true(f->len > 12);
  assert_memory_equal(f->b, "IMMUBKP1", 8);
  f->hlen = 12 + be32(f->b + 8);
  size_t pos = f->hlen, cap = 0;
  while (pos < f->len) {
    assert_true(f->len - pos >= 16);
    size_t fl = 16 + be32(f->b + pos + 4);
    if (f->n == cap) {
      cap = cap ? cap * 2 : 1024;
      f->off = realloc(f->off, cap * sizeof *f->off);
      f->flen = realloc(f->flen, cap * sizeof *f->flen);
    }
    f->off[f->n] = pos;
    f->flen[f->n] = fl;
    f->n++;
    pos += fl;
  }
  assert_int_equal(pos, f->len);
}

static void bk_free(bkfile *f) {
  free(f->b);
  free(f->off);
  free(f->flen);
}

/* ------------------------------------------------------------------ */
/* pseudo-terminal runs                                                */
/* ------------------------------------------------------------------ */

/* Runs immuadmin on a pty; when |until| appears in the output, writes
 * |send| (may be NULL). Returns the exit status; *out = all output. */
static int run_pty(const char *const *args, const char *until, const char *send,
                   int timeout_s, char **out) {
  size_t na = 0;
  while (args[na] != NULL)
    na++;
  char **argv = calloc(na + 2, sizeof *argv);
  argv[0] = (char *)(uintptr_t)ia_bin();
  for (size_t i = 0; i < na; i++)
    argv[i + 1] = (char *)(uintptr_t)args[i];
  char e1[64], e2[64], e3[800];
  snprintf(e1, sizeof e1, "IMMUADMIN_IMMUDB_PORT=%d", cur->port);
  snprintf(e2, sizeof e2, "IMMUADMIN_METRICS_PORT=%d", cur->mport);
  snprintf(e3, sizeof e3, "IMMUADMIN_TOKENFILE=%s", cur->tok);
  int mfd;
  pid_t pid = forkpty(&mfd, NULL, NULL, NULL);
  assert_true(pid >= 0);
  if (pid == 0) {
    putenv(e1);
    putenv(e2);
    putenv(e3);
    putenv((char *)(uintptr_t) "TERM=xterm");
    execv(argv[0], argv);
    _exit(127);
  }
  free(argv);
  size_t cap = 1 << 16, n = 0;
  char *buf = malloc(cap + 1);
  int sent = 0, st = 0, code = -1;
  double deadline = now_s() + timeout_s;
  for (;;) {
    struct pollfd p = {mfd, POLLIN, 0};
    if (poll(&p, 1, 50) > 0) {
      if (n == cap) {
        cap *= 2;
        buf = realloc(buf, cap + 1);
      }
      ssize_t r = read(mfd, buf + n, cap - n);
      if (r > 0)
        n += (size_t)r;
      else if (r < 0 && errno != EINTR && errno != EAGAIN) {
        /* EIO: the child closed the pty */
      }
    }
    buf[n] = '\0';
    if (!sent && until != NULL && strstr(buf, until) != NULL) {
      if (send != NULL && write(mfd, send, strlen(send)) < 0)
        break;
      sent = 1;
    }
    pid_t w = waitpid(pid, &st, WNOHANG);
    if (w == pid) {
      code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
      /* drain */
      ssize_t r;
      while (poll(&p, 1, 50) > 0 && n < cap &&
             (r = read(mfd, buf + n, cap - n)) > 0)
        n += (size_t)r;
      buf[n] = '\0';
      break;
    }
    if (now_s() > deadline) {
      kill(pid, SIGKILL);
      waitpid(pid, &st, 0);
      break;
    }
  }
  close(mfd);
  *out = buf;
  return code;
}

/* ------------------------------------------------------------------ */
/* tests                                                               */
/* ------------------------------------------------------------------ */

static char big_alh[65];
static char big_bak[700], sales_bak[700];

static void t_usage(void **state) {
  (void)state;
  cur = &S1;
  RUN(2, "Available Commands", NULL, NULL, "--no-progress");
  RUN(0, "Available Commands", NULL, NULL, "help");
  RUN(0, "IMMUADMIN_IMMUDB_PORT", NULL, NULL, "--help");
  RUN(0, "immuadmin ", NULL, NULL, "version");
  RUN(2, NULL, "unknown command \"bogus\"", NULL, "bogus");
  RUN(2, NULL, "unknown flag: --bogus", NULL, "status", "--bogus");
  RUN(2, NULL, "unknown shorthand flag", NULL, "status", "-z");
  RUN(2, NULL, "invalid port", NULL, "status", "-p", "notaport");
  RUN(2, NULL, "invalid port", NULL, "status", "--immudb-port=70000");
  RUN(2, NULL, "flag needs an argument", NULL, "status", "-a");
  RUN(2, NULL, "usage: immuadmin login", NULL, "login");
  RUN(2, NULL, "usage: immuadmin database", NULL, "database");
  RUN(2, NULL, "unknown database command", NULL, "database", "frob");
  RUN(2, NULL, "usage: immuadmin database", NULL, "database", "create");
  RUN(2, NULL, "unknown user command", NULL, "user", "frob");
  RUN(2, NULL, "usage: immuadmin user", NULL, "user", "create", "x");
  RUN(2, NULL, "usage: immuadmin restore", NULL, "restore");
  RUN(2, NULL, "invalid value", NULL, "status", "--mtls=maybe");
  RUN(2, NULL, "--mtls needs", NULL, "status", "--mtls");
  /* No server yet. */
  RUN(1, NULL, "cannot connect to 127.0.0.1", NULL, "status");
  RUN(1, NULL, "please login first", NULL, "database", "list");
}

static void t_start(void **state) {
  (void)state;
  cur = &S1;
  srv_start(&S1);
  RUN(0, "OK - server is reachable", NULL, NULL, "status");
  RUN(0, "Databases:\t1", NULL, NULL, "status");
}

static void t_first_login(void **state) {
  (void)state;
  struct stat st;
  cur = &S1;
  /* Wrong password. */
  RUN(1, NULL, "invalid user name or password", "wrong\n", "login", "immudb");
  RUN(1, NULL, "invalid user name or password", NULL, "login", "nobody",
      "--password", "x");
  /* Default password: the change is forced. Mismatched confirmation. */
  RUN(1, "SECURITY WARNING", "Passwords don't match",
      "immudb\n" ADMIN_PW "\nOther1!pass\n", "login", "immudb");
  assert_int_not_equal(stat(S1.tok, &st), 0);
  /* A weak new password is refused by the server. */
  RUN(1, "SECURITY WARNING", "password must have", "immudb\nweak\nweak\n",
      "login", "immudb");
  assert_int_not_equal(stat(S1.tok, &st), 0);
  /* Commands with the default password in --password are refused too. */
  RUN(1, NULL, "default password", NULL, "database", "list", "--password",
      "immudb");
  /* Success through the prompts (stdin: not a terminal). */
  RUN(0, "immudb's password has been changed", NULL,
      "immudb\n" ADMIN_PW "\n" ADMIN_PW "\n", "login", "immudb");
  assert_int_equal(stat(S1.tok, &st), 0);
  assert_int_equal(st.st_mode & 0777, 0600);
  /* The default password no longer works; the new one does, without the
   * warning. */
  RUN(1, NULL, "invalid user name or password", "immudb\n", "login", "immudb");
  res r;
  ia(&r, ADMIN_PW "\n", "login", "immudb", NULL);
  EXPECT(r, 0, "logged in", NULL);
  assert_null(strstr(r.out, "SECURITY WARNING"));
  res_free(&r);
  /* --password as "enc:" + base64 ("Adm1n!pass"). */
  RUN(0, "defaultdb", NULL, NULL, "database", "list", "--password",
      "enc:QWRtMW4hcGFzcw==");
  RUN(1, NULL, "invalid user name or password", NULL, "database", "list",
      "--password", "Wrong1!pass");
}

static void t_database(void **state) {
  (void)state;
  cur = &S1;
  RUN(0, "1 database(s)", NULL, NULL, "database", "list");
  RUN(0, "database 'salesdb' successfully created", NULL, NULL, "database",
      "create", "salesdb");
  RUN(1, NULL, "already exists", NULL, "database", "create", "salesdb");
  RUN(1, NULL, "cannot create the database", NULL, "database", "create",
      "bad name!");
  RUN(0, "salesdb", NULL, NULL, "database", "list");
  RUN(0, "Now using salesdb", NULL, NULL, "database", "use", "salesdb");
  char *tok = slurp(S1.tok, NULL);
  assert_non_null(strstr(tok, "database salesdb"));
  free(tok);
  RUN(0, "*salesdb", NULL, NULL, "d", "l");
  RUN(1, NULL, "cannot use database 'nosuchdb'", NULL, "database", "use",
      "nosuchdb");
  RUN(0, "database 'salesdb' successfully unloaded", NULL, NULL, "database",
      "unload", "salesdb");
  res r;
  ia(&r, NULL, "database", "list", NULL);
  EXPECT(r, 0, "unloaded", NULL);
  res_free(&r);
  RUN(0, "database 'salesdb' successfully loaded", NULL, NULL, "database",
      "load", "salesdb");
  RUN(1, NULL, "cannot load database 'nosuchdb'", NULL, "database", "load",
      "nosuchdb");
  RUN(0, NULL, NULL, NULL, "database", "create", "tmpdb");
  RUN(1, NULL, "refusing to delete", NULL, "database", "delete", "tmpdb");
  RUN(0, NULL, NULL, NULL, "database", "unload", "tmpdb");
  RUN(0, "database 'tmpdb' successfully deleted", NULL, NULL, "database",
      "delete", "tmpdb", "--yes");
  ia(&r, NULL, "database", "list", NULL);
  EXPECT(r, 0, "2 database(s)", NULL);
  assert_null(strstr(r.out, "tmpdb"));
  res_free(&r);
  RUN(1, NULL, "cannot delete database 'nosuchdb'", NULL, "database", "delete",
      "nosuchdb", "-y");
  put_some("salesdb", 12, "sale");
}

static void t_users(void **state) {
  (void)state;
  cur = &S1;
  RUN(0, "Created user alice", NULL, NULL, "user", "create", "alice",
      "readwrite", "salesdb", "--new-password", ALICE_PW);
  RUN(1, NULL, "User alice already exists", NULL, "user", "create", "alice",
      "read", "salesdb", "--new-password", ALICE_PW);
  RUN(2, NULL, "Permission superuser not recognized", NULL, "user", "create",
      "bob", "superuser", "salesdb");
  RUN(1, NULL, "Database nosuchdb does not exist", NULL, "user", "create",
      "carol", "read", "nosuchdb", "--new-password", ALICE_PW);
  RUN(1, NULL, "Passwords don't match", "Bob1!passw\nBob2!passw\n", "user",
      "create", "bob", "read", "salesdb");
  RUN(1, NULL, "password must have", NULL, "user", "create", "bob", "read",
      "salesdb", "--new-password", "weak");
  RUN(0, "Created user bob", NULL, "Bob1!passw\nBob1!passw\n", "user", "create",
      "bob", "read", "salesdb");
  res r;
  ia(&r, NULL, "user", "list", NULL);
  EXPECT(r, 0, "3 user(s)", NULL);
  assert_non_null(strstr(r.out, "alice"));
  assert_non_null(strstr(r.out, "Read/Write"));
  assert_non_null(strstr(r.out, "System Admin"));
  res_free(&r);
  RUN(0, "Permission changed successfully", NULL, NULL, "user", "permission",
      "grant", "alice", "admin", "defaultdb");
  ia(&r, NULL, "user", "list", NULL);
  EXPECT(r, 0, "Admin", NULL);
  res_free(&r);
  RUN(0, "Permission changed successfully", NULL, NULL, "user", "permission",
      "revoke", "alice", "admin", "defaultdb");
  RUN(2, NULL, "wrong permission action", NULL, "user", "permission", "frob",
      "alice", "read", "salesdb");
  RUN(2, NULL, "not recognized", NULL, "user", "permission", "grant", "alice",
      "owner", "salesdb");
  RUN(1, NULL, "cannot change the permission", NULL, "user", "permission",
      "grant", "immudb", "read", "salesdb");
  /* What a non-admin may not do. */
  RUN(1, NULL, "permission denied", NULL, "database", "create", "alicedb",
      "--username", "alice", "--password", ALICE_PW);
  char nobak[700];
  snprintf(nobak, sizeof nobak, "%s/alice.immubak", g_root);
  RUN(1, NULL, "ermission", NULL, "backup", "-d", "salesdb", "-o", nobak,
      "--username", "alice", "--password", ALICE_PW);
  struct stat st;
  assert_int_not_equal(stat(nobak, &st), 0);
  RUN(1, NULL, "ermission", NULL, "verify", "-d", "salesdb", "--username",
      "alice", "--password", ALICE_PW);
  /* Deactivated users cannot log in. */
  RUN(0, "User status changed successfully", NULL, NULL, "user", "deactivate",
      "alice");
  RUN(1, NULL, "not active", NULL, "database", "list", "--username", "alice",
      "--password", ALICE_PW);
  RUN(0, "User status changed successfully", NULL, NULL, "user", "activate",
      "alice");
  RUN(1, NULL, "cannot change the user status", NULL, "user", "activate",
      "nosuchuser");
  /* Passwords: an admin sets alice's; your own needs the old one. */
  RUN(0, "alice's password has been changed", NULL, NULL, "user",
      "changepassword", "alice", "--new-password", "Al1ce!new");
  RUN(0, "database(s)", NULL, NULL, "database", "list", "--username", "alice",
      "--password", "Al1ce!new");
  RUN(1, NULL, "old password is incorrect", NULL, "user", "changepassword",
      "immudb", "--old-password", "Wrong1!pass", "--new-password",
      "Adm1n!pass2");
  RUN(1, NULL, "identical", NULL, "user", "changepassword", "immudb",
      "--old-password", ADMIN_PW, "--new-password", ADMIN_PW);
  RUN(0, "immudb's password has been changed", NULL,
      ADMIN_PW "\nAdm1n!pass2\nAdm1n!pass2\n", "user", "changepassword",
      "immudb");
  RUN(0, "immudb's password has been changed", NULL, NULL, "user",
      "changepassword", "immudb", "--old-password", "Adm1n!pass2",
      "--new-password", ADMIN_PW);
  RUN(1, NULL, "cannot change the password", NULL, "user", "changepassword",
      "nosuchuser", "--new-password", ALICE_PW);
}

static void t_stats(void **state) {
  (void)state;
  cur = &S1;
  res r;
  ia(&r, NULL, "stats", "-t", NULL);
  EXPECT(r, 0, "Uptime", NULL);
  assert_non_null(strstr(r.out, "salesdb"));
  assert_non_null(strstr(r.out, "Committed"));
  assert_non_null(strstr(r.out, "Number of clients"));
  assert_non_null(strstr(r.out, "CreateDatabaseV2"));
  res_free(&r);
  /* Not a terminal: the live view falls back to text. */
  RUN(0, "Indexed", NULL, NULL, "stats");
  RUN(0, "immudb_uptime_hours", NULL, NULL, "stats", "--raw");
  char bad[16];
  snprintf(bad, sizeof bad, "%d", free_port());
  RUN(1, NULL, "cannot reach the metrics endpoint", NULL, "stats", "-t",
      "--metrics-port", bad);
  /* The live view on a terminal: refreshes, q quits. */
  char *out = NULL;
  const char *const args2[] = {"stats", NULL};
  /* It refreshes every second until told to quit. */
  int code = run_pty(args2, "press q", NULL, 3, &out);
  assert_int_equal(code, -1); /* still running after 3 s: it refreshes */
  int refreshes = 0;
  for (const char *p = out; (p = strstr(p, "press q")) != NULL; p++)
    refreshes++;
  free(out);
  if (refreshes < 2)
    fail_msg("the live view drew %d screens in 3 s", refreshes);
  code = run_pty(args2, "salesdb", "q", 20, &out);
  if (code != 0) {
    fprintf(stderr, "%s\n", out);
    fail_msg("stats live view: exit %d after q", code);
  }
  assert_non_null(strstr(out, "Tx/s"));
  free(out);
  /* Ctrl-C quits cleanly too. */
  code = run_pty(args2, "salesdb", "\003", 20, &out);
  if (code != 0) {
    fprintf(stderr, "%s\n", out);
    fail_msg("stats live view: exit %d after Ctrl-C", code);
  }
  free(out);
}

static void t_big_roundtrip(void **state) {
  (void)state;
  cur = &S1;
  /* The server adopts databases found on disk at start-up. */
  srv_stop(&S1);
  double gen = gen_big_db(S1.dir, "bigdb");
  srv_start(&S1);
  fprintf(stderr, "[ info ] generated %u txs in %.1f s\n", BIG_TXS, gen);
  /* Tokens do not survive a restart. */
  RUN(1, NULL, "please login again", NULL, "database", "list");
  RUN(0, "logged in", NULL, ADMIN_PW "\n", "login", "immudb");
  res r;
  ia(&r, NULL, "database", "list", NULL);
  EXPECT(r, 0, "bigdb", NULL);
  res_free(&r);
  RUN(0, "successfully unloaded", NULL, NULL, "database", "unload", "bigdb");
  RUN(0, "successfully loaded", NULL, NULL, "database", "load", "bigdb");
  RUN(1, NULL, "already loaded", NULL, "database", "load", "bigdb");

  snprintf(big_bak, sizeof big_bak, "%s/big.immubak", g_root);
  double t0 = now_s();
  ia(&r, NULL, "backup", "-d", "bigdb", "-o", big_bak, NULL);
  double t_backup = now_s() - t0;
  EXPECT(r, 0, "100000 txs verified", NULL);
  alh_of(r.out, big_alh);
  res_free(&r);
  RUN(1, NULL, "already exists", NULL, "backup", "-d", "bigdb", "-o", big_bak);

  t0 = now_s();
  ia(&r, NULL, "verify", "--file", big_bak, NULL);
  double t_vfile = now_s() - t0;
  EXPECT(r, 0, big_alh, NULL);
  res_free(&r);

  t0 = now_s();
  ia(&r, NULL, "restore", big_bak, "-d", "bigcopy", NULL);
  double t_restore = now_s() - t0;
  EXPECT(r, 0, "(100000 restored)", NULL);
  EXPECT(r, 0, big_alh, NULL);
  res_free(&r);

  t0 = now_s();
  ia(&r, NULL, "verify", "-d", "bigcopy", NULL);
  double t_verify = now_s() - t0;
  EXPECT(r, 0, "txs 1..100000 re-hashed", NULL);
  EXPECT(r, 0, big_alh, NULL);
  res_free(&r);
  fprintf(stderr,
          "[ info ] 100k txs: backup %.1f s, verify --file %.1f s, restore "
          "%.1f s, verify db %.1f s\n",
          t_backup, t_vfile, t_restore, t_verify);

  /* The restored txs are byte-identical to the source's. */
  char copy_bak[700];
  snprintf(copy_bak, sizeof copy_bak, "%s/bigcopy.immubak", g_root);
  RUN(0, NULL, NULL, NULL, "backup", "-d", "bigcopy", "-o", copy_bak);
  bkfile a, b;
  bk_load(big_bak, &a);
  bk_load(copy_bak, &b);
  assert_int_equal(a.n, BIG_TXS);
  assert_int_equal(b.n, BIG_TXS);
  assert_int_equal(a.len - a.hlen, b.len - b.hlen);
  assert_memory_equal(a.b + a.hlen, b.b + b.hlen, a.len - a.hlen);
  bk_free(&a);
  bk_free(&b);
  unlink(copy_bak);

  /* Restore refuses an existing database; --force appends nothing new. */
  RUN(1, NULL, "already exists", NULL, "restore", big_bak, "-d", "bigcopy");
  RUN(0, "(0 restored)", NULL, NULL, "restore", big_bak, "-d", "bigcopy",
      "--force");
}

/* Flips the last byte (a value byte) of tx |id|'s record in the log of
 * database directory |dbdir|. */
static void corrupt_log_tx(const char *dbdir, uint64_t id) {
  char path[1000];
  snprintf(path, sizeof path, "%s/log/00000000000000000000.log", dbdir);
  size_t len;
  uint8_t *b = (uint8_t *)slurp(path, &len);
  size_t off = 0;
  uint64_t n = 0;
  while (off + 16 <= len) {
    size_t fl = 16 + be32(b + off + 4);
    if (++n == id) {
      b[off + fl - 1] ^= 0x01;
      break;
    }
    off += fl;
  }
  assert_int_equal(n, id);
  spit(path, b, len);
  free(b);
}

static void t_verify_corrupt_db(void **state) {
  (void)state;
  char dbdir[800];
  srv_stop(&S1);
  snprintf(dbdir, sizeof dbdir, "%s/bigcopy", S1.dir);
  corrupt_log_tx(dbdir, 54321);
  srv_start(&S1);
  RUN(0, "logged in", NULL, ADMIN_PW "\n", "login", "immudb");
  res r;
  ia(&r, NULL, "database", "list", NULL);
  if (strstr(r.out, "bigcopy  unloaded") != NULL)
    RUN(0, NULL, NULL, NULL, "database", "load", "bigcopy");
  res_free(&r);
  RUN(3, NULL, "FAILED at tx 54321", NULL, "verify", "-d", "bigcopy");
  RUN(0, big_alh, NULL, NULL, "verify", "-d", "bigdb");
}

static void t_tamper(void **state) {
  (void)state;
  cur = &S1;
  snprintf(sales_bak, sizeof sales_bak, "%s/sales.immubak", g_root);
  res r;
  RUN(1, NULL, "cannot use database 'nosuchdb'", NULL, "backup", "-d",
      "nosuchdb", "-o", sales_bak);
  RUN(1, NULL, "cannot use database 'nosuchdb'", NULL, "verify", "-d",
      "nosuchdb");
  /* Without -d: the database selected with `database use`. */
  RUN(0, "Now using salesdb", NULL, NULL, "database", "use", "salesdb");
  ia(&r, NULL, "backup", "-o", sales_bak, NULL);
  EXPECT(r, 0, "backup of database 'salesdb' complete: 12 txs verified", NULL);
  res_free(&r);
  bkfile f, big;
  bk_load(sales_bak, &f);
  assert_int_equal(f.n, 12);
  bk_load(big_bak, &big);
  char bad[700];
  snprintf(bad, sizeof bad, "%s/bad.immubak", g_root);

  struct {
    const char *what;
    const char *err;
  } cases[] = {
      {"flip a value byte", "does not decode"},
      {"change a value, fix the CRCs", "do not match the tx's hashes"},
      {"drop tx 5", "expected tx 5, found tx 6"},
      {"tx 2 of another chain", "PrevAlh does not match"},
      {"flip a header byte", "header is damaged"},
      {"truncate the last tx", "ends inside a record"},
      {"drop the last tx", "truncated: 11 of 12"},
      {"flip a byte of the big backup", "does not decode"},
  };
  for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
    uint8_t *m = NULL;
    size_t mlen = 0;
    const bkfile *src = c == 7 ? &big : &f;
    m = malloc(src->len + 1);
    memcpy(m, src->b, src->len);
    mlen = src->len;
    switch (c) {
    case 0: /* the 300 KB value of tx 4 */
      m[f.off[3] + f.flen[3] - 1000] ^= 0x01;
      break;
    case 1: {
      size_t o = f.off[6], fl = f.flen[6];
      m[o + fl - 1] ^= 0x40;
      size_t mdlen = (size_t)m[o + 16 + 123] << 8 | m[o + 16 + 124];
      size_t body = o + 16 + 161 + mdlen;
      put_be32(m + o + 12, immu__crc32c(0, m + body, o + fl - body));
      break;
    }
    case 2:
      memmove(m + f.off[4], m + f.off[5], f.len - f.off[5]);
      mlen -= f.flen[4];
      break;
    case 3: {
      /* tx 2 of the big database: valid on its own, wrong chain. */
      size_t na = big.flen[1];
      uint8_t *n = malloc(f.len + na);
      memcpy(n, f.b, f.off[1]);
      memcpy(n + f.off[1], big.b + big.off[1], na);
      memcpy(n + f.off[1] + na, f.b + f.off[2], f.len - f.off[2]);
      free(m);
      m = n;
      mlen = f.len - f.flen[1] + na;
      break;
    }
    case 4:
      m[20] ^= 0x01; /* inside ntx */
      break;
    case 5:
      mlen -= 10;
      break;
    case 6:
      mlen = f.off[11];
      break;
    case 7:
      m[big.off[54321] + 40] ^= 0x80;
      break;
    }
    spit(bad, m, mlen);
    free(m);
    char target[64];
    snprintf(target, sizeof target, "tampered%zu", c);
    ia(&r, NULL, "restore", bad, "-d", target, NULL);
    if (r.code != 3 || strstr(r.err, cases[c].err) == NULL ||
        strstr(r.err, "nothing was restored") == NULL) {
      show(&r);
      fail_msg("tamper case \"%s\": want exit 3 and \"%s\"", cases[c].what,
               cases[c].err);
    }
    res_free(&r);
    ia(&r, NULL, "verify", "--file", bad, NULL);
    if (r.code != 3 || strstr(r.err, "FAILED") == NULL) {
      show(&r);
      fail_msg("verify --file of tamper case \"%s\": want exit 3",
               cases[c].what);
    }
    res_free(&r);
    /* Nothing was created. */
    ia(&r, NULL, "database", "list", NULL);
    EXPECT(r, 0, NULL, NULL);
    assert_null(strstr(r.out, target));
    res_free(&r);
  }
  unlink(bad);
  bk_free(&f);
  bk_free(&big);
  /* Not a backup at all; a missing file. */
  spit(bad, "hello world, not a backup", 25);
  RUN(3, NULL, "not an immuadmin backup file", NULL, "restore", bad);
  unlink(bad);
  RUN(1, NULL, "cannot open", NULL, "restore", "/nonexistent/file");
}

static void t_force_prefix(void **state) {
  (void)state;
  cur = &S1;
  char part[700];
  snprintf(part, sizeof part, "%s/sales-5.immubak", g_root);
  RUN(0, "5 txs verified", NULL, NULL, "backup", "-d", "salesdb", "--at-tx",
      "5", "-o", part);
  RUN(1, NULL, "beyond the last tx", NULL, "backup", "-d", "salesdb", "--at-tx",
      "999", "-o", part, "--force");
  RUN(0, "(5 restored)", NULL, NULL, "restore", part, "-d", "salescopy");
  /* The full backup extends it. */
  RUN(0, "(7 restored)", NULL, NULL, "restore", sales_bak, "-d", "salescopy",
      "--force");
  RUN(0, "txs 1..12 re-hashed", NULL, NULL, "verify", "-d", "salescopy");
  /* A database with a different history is refused. */
  RUN(1, NULL, "different history", NULL, "restore", big_bak, "-d", "salescopy",
      "--force");
  RUN(1, NULL, "ahead of the backup", NULL, "restore", part, "-d", "salescopy",
      "--force");
  unlink(part);
  /* A target created with smaller limits than the backup needs. */
  RUN(1, NULL, "needs --max-value-len 307201 or more", NULL, "restore",
      sales_bak, "-d", "tinydb", "--max-value-len", "1000");
  res r;
  ia(&r, NULL, "database", "list", NULL);
  EXPECT(r, 0, NULL, NULL);
  assert_null(strstr(r.out, "tinydb"));
  res_free(&r);
  RUN(0, "(12 restored)", NULL, NULL, "restore", sales_bak, "-d", "tinydb",
      "--max-value-len", "307201");
  RUN(2, NULL, "invalid --max-value-len", NULL, "database", "create", "x",
      "--max-value-len", "-5");
}

static void add_ext(X509 *x, int nid, const char *value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, x, x, NULL, NULL, 0);
  X509_EXTENSION *ex = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
  assert_non_null(ex);
  X509_add_ext(x, ex, -1);
  X509_EXTENSION_free(ex);
}

/* A self-signed P-256 certificate for localhost / 127.0.0.1, usable as
 * its own CA, for both ends. */
static void make_cert(const char *cert_path, const char *key_path) {
  EVP_PKEY *key = EVP_EC_gen("P-256");
  assert_non_null(key);
  X509 *x = X509_new();
  X509_set_version(x, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
  X509_gmtime_adj(X509_getm_notBefore(x), -60);
  X509_gmtime_adj(X509_getm_notAfter(x), 3600);
  X509_set_pubkey(x, key);
  X509_NAME *name = X509_get_subject_name(x);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                             (const unsigned char *)"localhost", -1, -1, 0);
  X509_set_issuer_name(x, name);
  add_ext(x, NID_basic_constraints, "critical,CA:TRUE");
  add_ext(x, NID_key_usage, "critical,digitalSignature,keyCertSign");
  add_ext(x, NID_ext_key_usage, "serverAuth,clientAuth");
  add_ext(x, NID_subject_alt_name, "DNS:localhost,IP:127.0.0.1");
  assert_true(X509_sign(x, key, EVP_sha256()) > 0);
  FILE *f = fopen(cert_path, "w");
  assert_non_null(f);
  PEM_write_X509(f, x);
  fclose(f);
  f = fopen(key_path, "w");
  assert_non_null(f);
  PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL);
  fclose(f);
  X509_free(x);
  EVP_PKEY_free(key);
}

static void t_mtls(void **state) {
  (void)state;
  static char cert[800], key[800], e1[900], e2[900], e3[900];
  srv_init(&S3, "srv3");
  snprintf(cert, sizeof cert, "%s/cert.pem", S3.root);
  snprintf(key, sizeof key, "%s/key.pem", S3.root);
  make_cert(cert, key);
  const char *sx[] = {"--mtls", "--certificate", cert, "--pkey",
                      key,      "--clientcas",   cert, NULL};
  memcpy(S3.srv_extra, sx, sizeof sx);
  snprintf(e1, sizeof e1, "IMMUADMIN_CERTIFICATE=%s", cert);
  snprintf(e2, sizeof e2, "IMMUADMIN_PKEY=%s", key);
  snprintf(e3, sizeof e3, "IMMUADMIN_CLIENTCAS=%s", cert);
  const char *ce[] = {"IMMUADMIN_MTLS=true",
                      e1,
                      e2,
                      e3,
                      "IMMUADMIN_SERVERNAME=localhost",
                      NULL};
  memcpy(S3.cli_env, ce, sizeof ce);
  srv_start(&S3); /* readiness = `immuadmin status` over mTLS */
  RUN(0, "OK - server is reachable", NULL, NULL, "status");
  /* Cleartext, or TLS without a client certificate, is refused. */
  RUN(1, NULL, NULL, NULL, "status", "--mtls=false");
  RUN(1, NULL, NULL, NULL, "status", "--mtls=false", "--tls");
  RUN(0, "password has been changed", NULL, NULL, "login", "immudb",
      "--password", "immudb", "--new-password", ADMIN_PW);
  RUN(0, "database 'tlsdb' successfully created", NULL, NULL, "database",
      "create", "tlsdb");
  RUN(0, "0 txs verified", NULL, NULL, "backup", "-d", "tlsdb", "-o",
      "/dev/null", "--force");
  srv_stop(&S3);
  cur = &S1;
}

static void t_dump_fresh_server(void **state) {
  (void)state;
  cur = &S1;
  char dump[700];
  snprintf(dump, sizeof dump, "%s/sales.dump", g_root);
  /* dump to stdout (the stream kept as |dump|), and to a file with -o:
   * the same frames. */
  res r;
  g_keep_stdout = dump;
  ia(&r, NULL, "dump", "-d", "salesdb", NULL);
  g_keep_stdout = NULL;
  EXPECT(r, 0, NULL, "dump of database 'salesdb' complete");
  char alh[65];
  alh_of(r.err, alh);
  res_free(&r);
  char dump2[700];
  snprintf(dump2, sizeof dump2, "%s/sales2.dump", g_root);
  RUN(0, "complete", NULL, NULL, "dump", "-d", "salesdb", "-o", dump2);
  bkfile a, b;
  bk_load(dump, &a);
  bk_load(dump2, &b);
  assert_int_equal(a.n, 12);
  assert_true(a.len > 300 * 1024);
  assert_int_equal(a.len - a.hlen, b.len - b.hlen);
  assert_memory_equal(a.b + a.hlen, b.b + b.hlen, a.len - a.hlen);
  bk_free(&a);
  bk_free(&b);
  unlink(dump2);

  /* A fresh second server, restored from the dump through stdin. */
  srv_init(&S2, "srv2");
  cur = &S2;
  srv_start(&S2);
  RUN(0, "password has been changed", NULL, NULL, "login", "immudb",
      "--password", "immudb", "--new-password", ADMIN_PW);
  ia_file(&r, dump, "restore", "-", NULL);
  EXPECT(r, 0, "database 'salesdb' holds txs 1..12 (12 restored)", NULL);
  EXPECT(r, 0, alh, NULL);
  res_free(&r);
  RUN(0, alh, NULL, NULL, "verify", "-d", "salesdb");
  ia(&r, NULL, "database", "list", NULL);
  EXPECT(r, 0, "salesdb", NULL);
  res_free(&r);
  /* The restored data reads back through the SDK. */
  immu_client_options co;
  immu_client_options_init(&co);
  co.address = "127.0.0.1";
  co.port = S2.port;
  immu_client *c = NULL;
  assert_int_equal(immu_client_new(&co, &c), 0);
  assert_int_equal(immu_client_login(c, "immudb", ADMIN_PW), 0);
  assert_int_equal(immu_client_use_database(c, "salesdb"), 0);
  immu_client_entry e;
  memset(&e, 0, sizeof e);
  immu_db_key_req kr;
  memset(&kr, 0, sizeof kr);
  kr.key = (const uint8_t *)"sale-3";
  kr.key_len = 6;
  if (immu_client_verified_get(c, &kr, &e) != 0)
    fail_msg("verified get on the restored db: %s", immu_client_last_error());
  assert_int_equal(e.value_len, 300 * 1024);
  assert_int_equal(e.value[1], (uint8_t)(1 * 31 + 7));
  immu_client_entry_clear(&e);
  immu_client_free(c);
  /* The progress bar, on a terminal. */
  char *out = NULL;
  char bkp[700];
  snprintf(bkp, sizeof bkp, "%s/s2.immubak", g_root);
  const char *const args[] = {"backup", "-d", "salesdb", "-o", bkp, NULL};
  int code = run_pty(args, NULL, NULL, 60, &out);
  if (code != 0 || strstr(out, "backing up") == NULL ||
      strstr(out, "100%") == NULL) {
    fprintf(stderr, "%s\n", out);
    fail_msg("no progress bar on a terminal (exit %d)", code);
  }
  free(out);
  /* ... and none when stdout is not a terminal. */
  ia(&r, NULL, "verify", "-d", "salesdb", NULL);
  EXPECT(r, 0, NULL, NULL);
  assert_null(strstr(r.out, "100%"));
  res_free(&r);
  unlink(bkp);
  srv_stop(&S2);
  cur = &S1;
  unlink(dump);
}

static void t_logout(void **state) {
  (void)state;
  cur = &S1;
  struct stat st;
  RUN(0, "logged out", NULL, NULL, "logout");
  assert_int_not_equal(stat(S1.tok, &st), 0);
  RUN(1, NULL, "not logged in", NULL, "logout");
  RUN(1, NULL, "please login first", NULL, "user", "list");
  /* A token file for another server is not used. */
  RUN(0, "logged in", NULL, ADMIN_PW "\n", "login", "immudb");
  char port[16];
  snprintf(port, sizeof port, "%d", free_port());
  RUN(1, NULL, "please login first", NULL, "user", "list", "-p", port);
  RUN(0, "logged out", NULL, NULL, "logout");
  srv_stop(&S1);
  unlink(big_bak);
  unlink(sales_bak);
}

static int group_setup(void **state) {
  (void)state;
  mkdir(tmproot(), 0755);
  snprintf(g_root, sizeof g_root, "%s/immuadmin-%ld", tmproot(),
           (long)getpid());
  rm_rf(g_root);
  mkdir(g_root, 0755);
  srv_init(&S1, "srv1");
  cur = &S1;
  atexit(stop_all);
  signal(SIGPIPE, SIG_IGN);
  return 0;
}

static int group_teardown(void **state) {
  (void)state;
  stop_all();
  rm_rf(g_root);
  return 0;
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(t_usage),
      cmocka_unit_test(t_start),
      cmocka_unit_test(t_first_login),
      cmocka_unit_test(t_database),
      cmocka_unit_test(t_users),
      cmocka_unit_test(t_stats),
      cmocka_unit_test(t_big_roundtrip),
      cmocka_unit_test(t_verify_corrupt_db),
      cmocka_unit_test(t_tamper),
      cmocka_unit_test(t_force_prefix),
      cmocka_unit_test(t_dump_fresh_server),
      cmocka_unit_test(t_logout),
      cmocka_unit_test(t_mtls),
  };
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
