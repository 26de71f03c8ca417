/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Integration tests of the real server: every test starts the `immudb`
 * binary (path in IMMU_SERVER_BIN, set by CMake) on 127.0.0.1 with a fresh
 * data directory under IMMU_TEST_TMPDIR and free ports, waits until Health
 * answers, drives it over sockets with the library's gRPC client
 * (src/client/grpc_client.h) and protobuf-c messages (schema.pb-c.h), then
 * stops it with SIGTERM (bounded wait, then SIGKILL). A failing test prints
 * the server's log (stdout + stderr, so sanitizer reports too).
 *
 * Checks: Health and the immudb-uuid header (stable across restarts); the
 * allocator named on the start-up line;
 * Login, Set/Get with a bearer token; a missing key; no token; an unknown
 * method; a malformed request; VerifiableSet / VerifiableGet replies
 * verified with the crypto core (header rebuilt from TxHeader, Alh, htree
 * inclusion, dual proof from the previously trusted state); CurrentState;
 * CreateDatabase + UseDatabase isolation; 10 connections x 200 calls;
 * persistence across a restart; graceful SIGTERM with a call in flight
 * (exit status 0); a message over --max-recv-msg-size.
 *
 * Without IMMU_SERVER_BIN every test is skipped.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <pthread.h>
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

#include "client/grpc_client.h"
#include "core/mem.h"
#include "immudb/crypto.h"
#include "immudb/err.h"
#include "schema.pb-c.h"

#define SVC "/immudb.schema.ImmuService/"
#define MAX_RECV (4u << 20) /* --max-recv-msg-size of every test server */
#define START_TIMEOUT_MS 60000
#define STOP_TIMEOUT_MS 30000
#define CALL_TIMEOUT_MS 30000

/* ------------------------------------------------------------------ */
/* helpers                                                             */
/* ------------------------------------------------------------------ */

static int64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
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

/* Two distinct free loopback ports (both sockets open while choosing). */
static void free_ports(int *a, int *b) {
  int fd[2];
  int port[2];
  for (int i = 0; i < 2; i++) {
    fd[i] = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd[i] >= 0);
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd[i], (struct sockaddr *)&sa, sizeof sa), 0);
    socklen_t sl = sizeof sa;
    getsockname(fd[i], (struct sockaddr *)&sa, &sl);
    port[i] = ntohs(sa.sin_port);
  }
  close(fd[0]);
  close(fd[1]);
  *a = port[0];
  *b = port[1];
}

/* ------------------------------------------------------------------ */
/* the server process                                                  */
/* ------------------------------------------------------------------ */

typedef struct itsrv {
  char root[512]; /* per-test scratch directory */
  char dir[600];  /* data directory */
  char log[600];  /* stdout + stderr of every run, appended */
  int port, mport;
  pid_t pid;
} itsrv;

static const char *server_bin(void) {
  const char *b = getenv("IMMU_SERVER_BIN");
  return b != NULL && b[0] != '\0' ? b : NULL;
}

static void dump_log(const itsrv *s) {
  FILE *fp = fopen(s->log, "r");
  if (fp == NULL)
    return;
  fprintf(stderr, "----- server log %s -----\n", s->log);
  char line[1024];
  size_t n = 0;
  while (fgets(line, sizeof line, fp) != NULL && n < 4000) {
    fputs(line, stderr);
    n++;
  }
  fprintf(stderr, "----- end of server log -----\n");
  fclose(fp);
}

static pid_t spawn(itsrv *s) {
  char port[16], mport[16], maxr[32];
  snprintf(port, sizeof port, "%d", s->port);
  snprintf(mport, sizeof mport, "%d", s->mport);
  snprintf(maxr, sizeof maxr, "%u", MAX_RECV);
  const char *bin = server_bin();
#define S_(x) ((char *)(uintptr_t)(x))
  char *argv[] = {S_(bin),
                  S_("--dir"),
                  s->dir,
                  S_("--address"),
                  S_("127.0.0.1"),
                  S_("--port"),
                  port,
                  S_("--metrics-server-port"),
                  mport,
                  S_("--max-recv-msg-size"),
                  maxr,
                  S_("--log-level"),
                  S_("debug"),
                  NULL};
#undef S_
  /* The environment minus IMMUDB_* settings that could change the server. */
  size_t ne = 0;
  while (environ[ne] != NULL)
    ne++;
  char **envp = calloc(ne + 1, sizeof *envp);
  size_t k = 0;
  for (size_t i = 0; i < ne; i++)
    if (strncmp(environ[i], "IMMUDB_", 7) != 0)
      envp[k++] = environ[i];
  envp[k] = NULL;

  pid_t pid = fork();
  if (pid == 0) {
    int fd = open(s->log, O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) {
      dup2(fd, 1);
      dup2(fd, 2);
      close(fd);
    }
    if (chdir(s->root) != 0)
      _exit(126);
    execve(bin, argv, envp);
    _exit(127);
  }
  free(envp);
  return pid;
}

static immu__grpc_client *connect_to(int port, int connect_ms) {
  immu__grpc_client_opts o;
  memset(&o, 0, sizeof o);
  o.host = "127.0.0.1";
  o.port = port;
  o.connect_timeout_ms = connect_ms;
  o.default_timeout_ms = CALL_TIMEOUT_MS;
  immu__grpc_client *c = NULL;
  if (immu__grpc_client_connect(&o, &c, NULL, 0) != 0)
    return NULL;
  return c;
}

/* Health answers OK? Copies the immudb-uuid header if |uuid| is set. */
static int health(immu__grpc_client *c, char *uuid, size_t cap) {
  uint8_t *resp = NULL;
  size_t rlen = 0;
  immu__grpc_result res;
  immu__grpc_result_init(&res);
  int ok = 0;
  if (immu__grpc_client_unary(c, SVC "Health", NULL, NULL, 0, &resp, &rlen,
                              &res) == 0 &&
      res.status == 0) {
    Immudb__Schema__HealthResponse *h =
        immudb__schema__health_response__unpack(NULL, rlen, resp);
    ok = h != NULL && h->status;
    if (uuid != NULL) {
      const char *u = immu__grpc_result_header(&res, "immudb-uuid");
      snprintf(uuid, cap, "%s", u != NULL ? u : "");
    }
    if (h != NULL)
      immudb__schema__health_response__free_unpacked(h, NULL);
  }
  immu__free(resp);
  immu__grpc_result_free(&res);
  return ok;
}

/* Starts the server and waits until Health answers. Returns 0 or -1 (the
 * process exited, or no answer in START_TIMEOUT_MS). */
static int start_server(itsrv *s) {
  for (int attempt = 0; attempt < 3; attempt++) {
    free_ports(&s->port, &s->mport);
    s->pid = spawn(s);
    if (s->pid < 0)
      return -1;
    int64_t deadline = mono_ms() + START_TIMEOUT_MS;
    int exited = 0;
    while (mono_ms() < deadline) {
      int st;
      if (waitpid(s->pid, &st, WNOHANG) == s->pid) {
        exited = 1;
        s->pid = -1;
        break;
      }
      immu__grpc_client *c = connect_to(s->port, 500);
      if (c != NULL) {
        int ok = health(c, NULL, 0);
        immu__grpc_client_free(c);
        if (ok)
          return 0;
      }
      sleep_ms(50);
    }
    if (!exited) {
      kill(s->pid, SIGKILL);
      waitpid(s->pid, NULL, 0);
      s->pid = -1;
      return -1;
    }
    /* exited during start-up: maybe a port was taken meanwhile; retry */
  }
  return -1;
}

/* SIGTERM, bounded wait, then SIGKILL. Returns the wait status, or -1 if
 * the process had to be killed. */
static int stop_server(itsrv *s) {
  if (s->pid <= 0)
    return -1;
  kill(s->pid, SIGTERM);
  int64_t deadline = mono_ms() + STOP_TIMEOUT_MS;
  int st = 0;
  while (mono_ms() < deadline) {
    pid_t r = waitpid(s->pid, &st, WNOHANG);
    if (r == s->pid) {
      s->pid = -1;
      return st;
    }
    sleep_ms(20);
  }
  kill(s->pid, SIGKILL);
  waitpid(s->pid, NULL, 0);
  s->pid = -1;
  return -1;
}

static int exited_zero(int st) {
  return st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

/* ------------------------------------------------------------------ */
/* fixture                                                             */
/* ------------------------------------------------------------------ */

typedef struct fx {
  itsrv s;
  immu__grpc_client *c;
  char token[1024];
  int ok; /* set by the test at its end: the log is dumped otherwise */
} fx;

static int setup(void **state) {
  if (server_bin() == NULL) {
    *state = NULL;
    return 0;
  }
  fx *f = calloc(1, sizeof *f);
  const char *tmp = getenv("IMMU_TEST_TMPDIR");
  snprintf(f->s.root, sizeof f->s.root, "%s/itXXXXXX",
           tmp != NULL ? tmp : "/tmp");
  if (mkdtemp(f->s.root) == NULL) {
    free(f);
    return -1;
  }
  snprintf(f->s.dir, sizeof f->s.dir, "%s/data", f->s.root);
  snprintf(f->s.log, sizeof f->s.log, "%s/server.log", f->s.root);
  f->s.pid = -1;
  *state = f;
  if (start_server(&f->s) != 0) {
    fprintf(stderr, "server did not start\n");
    dump_log(&f->s);
    rm_rf(f->s.root);
    free(f);
    *state = NULL;
    return -1;
  }
  f->c = connect_to(f->s.port, 5000);
  if (f->c == NULL) {
    dump_log(&f->s);
    stop_server(&f->s);
    rm_rf(f->s.root);
    free(f);
    *state = NULL;
    return -1;
  }
  return 0;
}

static int teardown(void **state) {
  fx *f = *state;
  if (f == NULL)
    return 0;
  immu__grpc_client_free(f->c);
  int st = stop_server(&f->s);
  if (!f->ok || !exited_zero(st)) {
    if (f->ok)
      fprintf(stderr, "server stop: wait status 0x%x\n", (unsigned)st);
    dump_log(&f->s);
  }
  rm_rf(f->s.root);
  int rc = f->ok && exited_zero(st) ? 0 : -1;
  free(f);
  return rc;
}

#define SKIP_IF_NO_SERVER(f)                                                   \
  do {                                                                         \
    if ((f) == NULL) {                                                         \
      print_message("IMMU_SERVER_BIN not set: skipped\n");                     \
      skip();                                                                  \
    }                                                                          \
  } while (0)

/* ------------------------------------------------------------------ */
/* RPC helpers                                                         */
/* ------------------------------------------------------------------ */

/* One unary call. |req| may be NULL (empty message); |out_desc| NULL means
 * the reply is not decoded. On status OK with |out_desc| the reply is
 * unpacked into *out (free with protobuf_c_message_free_unpacked).
 * Returns the transport code; the status is in *res. */
static int rpc(immu__grpc_client *c, const char *method, const char *token,
               const ProtobufCMessage *req,
               const ProtobufCMessageDescriptor *out_desc,
               ProtobufCMessage **out, immu__grpc_result *res) {
  char path[128];
  snprintf(path, sizeof path, SVC "%s", method);
  uint8_t *buf = NULL;
  size_t len = 0;
  if (req != NULL) {
    len = protobuf_c_message_get_packed_size(req);
    buf = malloc(len ? len : 1);
    protobuf_c_message_pack(req, buf);
  }
  char auth[1100];
  immu__grpc_md md[1];
  immu__grpc_call_opts co = {md, 0, CALL_TIMEOUT_MS};
  if (token != NULL) {
    snprintf(auth, sizeof auth, "Bearer %s", token);
    md[0].key = "authorization";
    md[0].value = auth;
    co.nmd = 1;
  }
  uint8_t *resp = NULL;
  size_t rlen = 0;
  if (out != NULL)
    *out = NULL;
  int rv = immu__grpc_client_unary(c, path, &co, buf, len, &resp, &rlen, res);
  free(buf);
  if (rv == 0 && res->status == 0 && out_desc != NULL && out != NULL) {
    *out = protobuf_c_message_unpack(out_desc, NULL, rlen, resp);
    if (*out == NULL)
      rv = IMMU_EPROTO;
  }
  immu__free(resp);
  return rv;
}

#define CHECK_OK(rv, res, what)                                                \
  do {                                                                         \
    if ((rv) != 0 || (res).status != 0)                                        \
      fail_msg("%s: transport %s, status %s: %s", (what), immu_err_name(rv),   \
               immu__grpc_code_name((res).status),                             \
               (res).message ? (res).message : "");                            \
  } while (0)

static void login(immu__grpc_client *c, char *token, size_t cap) {
  Immudb__Schema__LoginRequest lr = IMMUDB__SCHEMA__LOGIN_REQUEST__INIT;
  lr.user.data = (uint8_t *)"immudb";
  lr.user.len = 6;
  lr.password.data = (uint8_t *)"immudb";
  lr.password.len = 6;
  immu__grpc_result res;
  immu__grpc_result_init(&res);
  Immudb__Schema__LoginResponse *out = NULL;
  int rv = rpc(c, "Login", NULL, &lr.base,
               &immudb__schema__login_response__descriptor,
               (ProtobufCMessage **)&out, &res);
  CHECK_OK(rv, res, "Login");
  assert_non_null(out->token);
  assert_true(strlen(out->token) > 0 && strlen(out->token) < cap);
  snprintf(token, cap, "%s", out->token);
  immudb__schema__login_response__free_unpacked(out, NULL);
  immu__grpc_result_free(&res);
}

/* Set one key; returns the tx id. */
static uint64_t set_kv(immu__grpc_client *c, const char *token, const char *key,
                       const uint8_t *val, size_t vlen, immu__grpc_result *res,
                       int *rvp) {
  Immudb__Schema__KeyValue kv = IMMUDB__SCHEMA__KEY_VALUE__INIT;
  Immudb__Schema__KeyValue *kvs[1] = {&kv};
  Immudb__Schema__SetRequest sr = IMMUDB__SCHEMA__SET_REQUEST__INIT;
  kv.key.data = (uint8_t *)(uintptr_t)key;
  kv.key.len = strlen(key);
  kv.value.data = (uint8_t *)(uintptr_t)val;
  kv.value.len = vlen;
  sr.n_kvs = 1;
  sr.kvs = kvs;
  Immudb__Schema__TxHeader *h = NULL;
  int rv =
      rpc(c, "Set", token, &sr.base, &immudb__schema__tx_header__descriptor,
          (ProtobufCMessage **)&h, res);
  if (rvp != NULL)
    *rvp = rv;
  uint64_t id = h != NULL ? h->id : 0;
  if (h != NULL)
    immudb__schema__tx_header__free_unpacked(h, NULL);
  return id;
}

static void set_ok(immu__grpc_client *c, const char *token, const char *key,
                   const char *val) {
  immu__grpc_result res;
  immu__grpc_result_init(&res);
  int rv = 0;
  uint64_t id =
      set_kv(c, token, key, (const uint8_t *)val, strlen(val), &res, &rv);
  char what[128];
  snprintf(what, sizeof what, "Set %s (token ...%s)", key,
           token != NULL && strlen(token) > 8 ? token + strlen(token) - 8 : "");
  CHECK_OK(rv, res, what);
  assert_true(id > 0);
  immu__grpc_result_free(&res);
}

/* Get: returns the transport code; *entry on status OK. */
static int get_key(immu__grpc_client *c, const char *token, const char *key,
                   Immudb__Schema__Entry **entry, immu__grpc_result *res) {
  Immudb__Schema__KeyRequest kr = IMMUDB__SCHEMA__KEY_REQUEST__INIT;
  kr.key.data = (uint8_t *)(uintptr_t)key;
  kr.key.len = strlen(key);
  return rpc(c, "Get", token, &kr.base, &immudb__schema__entry__descriptor,
             (ProtobufCMessage **)entry, res);
}

static void get_expect(immu__grpc_client *c, const char *token, const char *key,
                       const char *val) {
  immu__grpc_result res;
  immu__grpc_result_init(&res);
  Immudb__Schema__Entry *e = NULL;
  int rv = get_key(c, token, key, &e, &res);
  char what[128];
  snprintf(what, sizeof what, "Get %s (token ...%s)", key,
           token != NULL && strlen(token) > 8 ? token + strlen(token) - 8 : "");
  CHECK_OK(rv, res, what);
  assert_int_equal(e->key.len, strlen(key));
  assert_memory_equal(e->key.data, key, e->key.len);
  if (e->value.len != strlen(val) ||
      memcmp(e->value.data, val, e->value.len) != 0)
    fail_msg("Get %s: value \"%.*s\", want \"%s\"", key, (int)e->value.len,
             (const char *)e->value.data, val);
  assert_true(e->tx > 0);
  immudb__schema__entry__free_unpacked(e, NULL);
  immu__grpc_result_free(&res);
}

/* ------------------------------------------------------------------ */
/* verification with the crypto core                                   */
/* ------------------------------------------------------------------ */

typedef struct trust {
  uint64_t tx_id;
  immu_digest alh;
} trust;

static void digest_of(const ProtobufCBinaryData *b, immu_digest *d,
                      const char *what) {
  if (b->len != IMMU_DIGEST_LEN)
    fail_msg("%s: %zu bytes, want 32", what, b->len);
  memcpy(d->b, b->data, IMMU_DIGEST_LEN);
}

/* TxHeader (proto) -> immu_tx_header (spec 3.1, 3.4). */
static void header_from_pb(const Immudb__Schema__TxHeader *m,
                           immu_tx_header *h) {
  assert_non_null(m);
  memset(h, 0, sizeof *h);
  h->id = m->id;
  h->ts = m->ts;
  h->bl_tx_id = m->bltxid;
  digest_of(&m->prevalh, &h->prev_alh, "TxHeader.prevAlh");
  digest_of(&m->eh, &h->eh, "TxHeader.eH");
  digest_of(&m->blroot, &h->bl_root, "TxHeader.blRoot");
  if (m->version != 0 && m->version != 1)
    fail_msg("TxHeader.version %d", m->version);
  h->version = (uint32_t)m->version;
  assert_true(m->nentries >= 1);
  h->nentries = (uint32_t)m->nentries;
  h->md_len = 0;
  if (m->metadata != NULL) {
    if (m->metadata->truncatedtxid != 0) {
      h->md[h->md_len++] = 0x00;
      for (int i = 7; i >= 0; i--)
        h->md[h->md_len++] = (uint8_t)(m->metadata->truncatedtxid >> (8 * i));
    }
    if (m->metadata->extra.len > 0) {
      assert_true(m->metadata->extra.len <= 256);
      h->md[h->md_len++] = 0x01;
      h->md[h->md_len++] = (uint8_t)(m->metadata->extra.len >> 8);
      h->md[h->md_len++] = (uint8_t)m->metadata->extra.len;
      memcpy(h->md + h->md_len, m->metadata->extra.data,
             m->metadata->extra.len);
      h->md_len += (uint32_t)m->metadata->extra.len;
    }
  }
  if (h->version == 0)
    assert_int_equal(h->md_len, 0);
}

static void alh_of(const immu_tx_header *h, immu_digest *out) {
  assert_int_equal(immu_tx_alh(h, out), 0);
}

static int kvmd_empty(const Immudb__Schema__KVMetadata *md) {
  return md == NULL ||
         (!md->deleted && md->expiration == NULL && !md->nonindexable);
}

static void list_of(const ProtobufCBinaryData *v, size_t n,
                    immu_digest_list *out, const char *what) {
  out->n = n;
  out->d = calloc(n ? n : 1, sizeof *out->d);
  for (size_t i = 0; i < n; i++)
    digest_of(&v[i], &out->d[i], what);
}

/* DualProof (proto) -> immu_dual_proof; free with dual_free. */
static void dual_from_pb(const Immudb__Schema__DualProof *m,
                         immu_dual_proof *p) {
  assert_non_null(m);
  memset(p, 0, sizeof *p);
  header_from_pb(m->sourcetxheader, &p->source);
  header_from_pb(m->targettxheader, &p->target);
  list_of(m->inclusionproof, m->n_inclusionproof, &p->inclusion,
          "inclusionProof");
  list_of(m->consistencyproof, m->n_consistencyproof, &p->consistency,
          "consistencyProof");
  list_of(m->lastinclusionproof, m->n_lastinclusionproof, &p->last_inclusion,
          "lastInclusionProof");
  digest_of(&m->targetbltxalh, &p->target_bl_tx_alh, "targetBlTxAlh");
  assert_non_null(m->linearproof);
  p->linear.source_tx_id = m->linearproof->sourcetxid;
  p->linear.target_tx_id = m->linearproof->targettxid;
  list_of(m->linearproof->terms, m->linearproof->n_terms, &p->linear.terms,
          "linearProof.terms");
  if (m->linearadvanceproof != NULL) {
    const Immudb__Schema__LinearAdvanceProof *l = m->linearadvanceproof;
    p->has_lap = 1;
    list_of(l->linearproofterms, l->n_linearproofterms, &p->lap.linear_terms,
            "linearAdvanceProof.linearProofTerms");
    p->lap.ninclusion = l->n_inclusionproofs;
    p->lap.inclusion = calloc(l->n_inclusionproofs ? l->n_inclusionproofs : 1,
                              sizeof *p->lap.inclusion);
    for (size_t i = 0; i < l->n_inclusionproofs; i++)
      list_of(l->inclusionproofs[i]->terms, l->inclusionproofs[i]->n_terms,
              &p->lap.inclusion[i], "linearAdvanceProof.inclusionProofs");
  }
}

static void dual_free(immu_dual_proof *p) {
  free(p->inclusion.d);
  free(p->consistency.d);
  free(p->last_inclusion.d);
  free(p->linear.terms.d);
  free(p->lap.linear_terms.d);
  for (size_t i = 0; i < p->lap.ninclusion; i++)
    free(p->lap.inclusion[i].d);
  free(p->lap.inclusion);
}

static void headers_equal(const immu_tx_header *a, const immu_tx_header *b,
                          const char *what) {
  immu_digest x, y;
  alh_of(a, &x);
  alh_of(b, &y);
  if (a->id != b->id || !immu_digest_eq(&x, &y))
    fail_msg("%s: headers differ (tx %llu vs %llu)", what,
             (unsigned long long)a->id, (unsigned long long)b->id);
}

/* VerifiedSet (spec 7.5, Go client HEAD): the tx holds exactly our entry,
 * its Eh is rebuilt from the entries, our KV is included, the dual proof
 * links the trusted state to the tx. Advances |st|. */
static void verify_set(const Immudb__Schema__VerifiableTx *vtx, const char *key,
                       const uint8_t *val, size_t vlen, trust *st) {
  assert_non_null(vtx);
  assert_non_null(vtx->tx);
  assert_non_null(vtx->dualproof);
  immu_tx_header h;
  header_from_pb(vtx->tx->header, &h);
  assert_int_equal(h.nentries, 1);
  assert_int_equal(vtx->tx->n_entries, 1);

  /* Eh from the entries */
  immu_digest dig[1];
  const Immudb__Schema__TxEntry *te = vtx->tx->entries[0];
  assert_true(kvmd_empty(te->metadata));
  immu_digest hv;
  digest_of(&te->hvalue, &hv, "TxEntry.hValue");
  assert_int_equal(immu_entry_digest(h.version, te->key.data, te->key.len, NULL,
                                     0, &hv, &dig[0]),
                   0);
  immu_digest eh;
  assert_int_equal(immu_htree_root(dig, 1, &eh), 0);
  if (!immu_digest_eq(&eh, &h.eh))
    fail_msg("VerifiableSet: Eh does not match the entries");

  /* our key/value is that entry, proven by a local inclusion proof */
  uint8_t ek[256], evb[4096];
  size_t ekl, evl;
  assert_int_equal(
      immu_enc_key((const uint8_t *)key, strlen(key), ek, sizeof ek, &ekl), 0);
  assert_int_equal(immu_enc_value(val, vlen, evb, sizeof evb, &evl), 0);
  immu_digest want_hv, want;
  immu_sha256(evb, evl, &want_hv);
  assert_int_equal(te->key.len, ekl);
  assert_memory_equal(te->key.data, ek, ekl);
  assert_true(immu_digest_eq(&want_hv, &hv));
  assert_int_equal(
      immu_entry_digest(h.version, ek, ekl, NULL, 0, &want_hv, &want), 0);
  immu_digest terms[IMMU_PROOF_MAX_TERMS];
  size_t nterms = 0;
  assert_int_equal(immu_htree_proof(dig, 1, 0, terms, &nterms), 0);
  assert_int_equal(immu_htree_verify(terms, nterms, 0, 1, &want, &h.eh), 0);

  /* dual proof from the trusted state to the tx */
  immu_dual_proof dp;
  dual_from_pb(vtx->dualproof, &dp);
  headers_equal(&dp.target, &h, "VerifiableSet: dualProof.target vs tx");
  immu_digest alh;
  alh_of(&h, &alh);
  if (st->tx_id > 0) {
    assert_true(h.id > st->tx_id);
    if (dp.source.id != st->tx_id)
      fail_msg("VerifiableSet: dual proof source %llu, want %llu",
               (unsigned long long)dp.source.id, (unsigned long long)st->tx_id);
    int rv = immu_dual_proof_verify(&dp, st->tx_id, h.id, &st->alh, &alh);
    if (rv != 0)
      fail_msg("VerifiableSet: dual proof %llu -> %llu does not verify",
               (unsigned long long)st->tx_id, (unsigned long long)h.id);
  }
  dual_free(&dp);
  st->tx_id = h.id;
  st->alh = alh;
}

/* VerifiedGet (spec 7.5): the entry's KV is in its tx (server inclusion
 * proof against the Eh of the proof's header on the tx's side), and the
 * dual proof links it with the trusted state. */
static void verify_get(const Immudb__Schema__VerifiableEntry *ve,
                       const char *key, const char *val, trust *st) {
  assert_non_null(ve);
  assert_non_null(ve->entry);
  assert_non_null(ve->verifiabletx);
  assert_non_null(ve->inclusionproof);
  const Immudb__Schema__Entry *e = ve->entry;
  assert_null(e->referencedby);
  assert_true(kvmd_empty(e->metadata));
  assert_int_equal(e->value.len, strlen(val));
  assert_memory_equal(e->value.data, val, e->value.len);
  uint64_t vtx = e->tx;
  assert_true(vtx > 0);

  immu_dual_proof dp;
  dual_from_pb(ve->verifiabletx->dualproof, &dp);
  const immu_tx_header *side;
  uint64_t src_id, dst_id;
  immu_digest src_alh, dst_alh;
  if (st->tx_id <= vtx) {
    side = &dp.target;
    src_id = st->tx_id;
    src_alh = st->alh;
    dst_id = vtx;
    alh_of(&dp.target, &dst_alh);
    assert_int_equal(dp.target.id, vtx);
  } else {
    side = &dp.source;
    src_id = vtx;
    alh_of(&dp.source, &src_alh);
    dst_id = st->tx_id;
    dst_alh = st->alh;
    assert_int_equal(dp.source.id, vtx);
  }
  /* the returned tx is the entry's tx */
  immu_tx_header txh;
  header_from_pb(ve->verifiabletx->tx->header, &txh);
  headers_equal(&txh, side, "VerifiableGet: tx vs dual proof");

  uint8_t ek[256], evb[4096];
  size_t ekl, evl;
  assert_int_equal(
      immu_enc_key((const uint8_t *)key, strlen(key), ek, sizeof ek, &ekl), 0);
  assert_int_equal(
      immu_enc_value(e->value.data, e->value.len, evb, sizeof evb, &evl), 0);
  immu_digest hv, dig;
  immu_sha256(evb, evl, &hv);
  assert_int_equal(
      immu_entry_digest(side->version, ek, ekl, NULL, 0, &hv, &dig), 0);
  const Immudb__Schema__InclusionProof *ip = ve->inclusionproof;
  assert_true(ip->leaf >= 0 && ip->width > ip->leaf);
  immu_digest_list terms;
  list_of(ip->terms, ip->n_terms, &terms, "InclusionProof.terms");
  int rv = immu_htree_verify(terms.d, terms.n, (uint64_t)ip->leaf,
                             (uint64_t)ip->width, &dig, &side->eh);
  free(terms.d);
  if (rv != 0)
    fail_msg("VerifiableGet: htree inclusion of %s does not verify", key);
  if (src_id > 0) {
    rv = immu_dual_proof_verify(&dp, src_id, dst_id, &src_alh, &dst_alh);
    if (rv != 0)
      fail_msg("VerifiableGet: dual proof %llu -> %llu does not verify",
               (unsigned long long)src_id, (unsigned long long)dst_id);
  }
  if (st->tx_id <= vtx) {
    st->tx_id = dst_id;
    st->alh = dst_alh;
  }
  dual_free(&dp);
}

static void current_state(immu__grpc_client *c, const char *token, trust *st,
                          const char *db) {
  immu__grpc_result res;
  immu__grpc_result_init(&res);
  Immudb__Schema__ImmutableState *s = NULL;
  int rv = rpc(c, "CurrentState", token, NULL,
               &immudb__schema__immutable_state__descriptor,
               (ProtobufCMessage **)&s, &res);
  CHECK_OK(rv, res, "CurrentState");
  assert_non_null(s->db);
  assert_string_equal(s->db, db);
  st->tx_id = s->txid;
  if (s->txid > 0)
    digest_of(&s->txhash, &st->alh, "ImmutableState.txHash");
  else
    memset(&st->alh, 0, sizeof st->alh);
  immudb__schema__immutable_state__free_unpacked(s, NULL);
  immu__grpc_result_free(&res);
}

static void verifiable_set(immu__grpc_client *c, const char *token,
                           const char *key, const char *val, trust *st) {
  Immudb__Schema__KeyValue kv = IMMUDB__SCHEMA__KEY_VALUE__INIT;
  Immudb__Schema__KeyValue *kvs[1] = {&kv};
  Immudb__Schema__SetRequest sr = IMMUDB__SCHEMA__SET_REQUEST__INIT;
  Immudb__Schema__VerifiableSetRequest vr =
      IMMUDB__SCHEMA__VERIFIABLE_SET_REQUEST__INIT;
  kv.key.data = (uint8_t *)(uintptr_t)key;
  kv.key.len = strlen(key);
  kv.value.data = (uint8_t *)(uintptr_t)val;
  kv.value.len = strlen(val);
  sr.n_kvs = 1;
  sr.kvs = kvs;
  vr.setrequest = &sr;
  vr.provesincetx = st->tx_id;
  immu__grpc_result res;
  immu__grpc_result_init(&res);
  Immudb__Schema__VerifiableTx *vtx = NULL;
  int rv = rpc(c, "VerifiableSet", token, &vr.base,
               &immudb__schema__verifiable_tx__descriptor,
               (ProtobufCMessage **)&vtx, &res);
  CHECK_OK(rv, res, "VerifiableSet");
  verify_set(vtx, key, (const uint8_t *)val, strlen(val), st);
  immudb__schema__verifiable_tx__free_unpacked(vtx, NULL);
  immu__grpc_result_free(&res);
}

static void verifiable_get(immu__grpc_client *c, const char *token,
                           const char *key, const char *val, trust *st) {
  Immudb__Schema__KeyRequest kr = IMMUDB__SCHEMA__KEY_REQUEST__INIT;
  Immudb__Schema__VerifiableGetRequest vr =
      IMMUDB__SCHEMA__VERIFIABLE_GET_REQUEST__INIT;
  kr.key.data = (uint8_t *)(uintptr_t)key;
  kr.key.len = strlen(key);
  vr.keyrequest = &kr;
  vr.provesincetx = st->tx_id;
  immu__grpc_result res;
  immu__grpc_result_init(&res);
  Immudb__Schema__VerifiableEntry *ve = NULL;
  int rv = rpc(c, "VerifiableGet", token, &vr.base,
               &immudb__schema__verifiable_entry__descriptor,
               (ProtobufCMessage **)&ve, &res);
  CHECK_OK(rv, res, "VerifiableGet");
  verify_get(ve, key, val, st);
  immudb__schema__verifiable_entry__free_unpacked(ve, NULL);
  immu__grpc_result_free(&res);
}

/* ------------------------------------------------------------------ */
/* tests                                                               */
/* ------------------------------------------------------------------ */

static void test_health_login_set_get(void **state) {
  fx *f = *state;
  SKIP_IF_NO_SERVER(f);
  char uuid[64];
  assert_true(health(f->c, uuid, sizeof uuid));
  if (strlen(uuid) != 20)
    fail_msg("immudb-uuid header: \"%s\" (want a 20-character xid)", uuid);

  /* The start-up line names the allocator the build linked (CMake passes
   * the one it chose: jemalloc, or the system's under the sanitizers). */
  {
    const char *want = getenv("IMMU_SERVER_ALLOCATOR");
    char needle[64], line[1024];
    int found = 0;
    FILE *fp = fopen(f->s.log, "r");
    assert_non_null(want);
    assert_non_null(fp);
    snprintf(needle, sizeof needle, "allocator %s", want);
    while (!found && fgets(line, sizeof line, fp) != NULL)
      found = strstr(line, "listening on") != NULL &&
              strstr(line, needle) != NULL;
    fclose(fp);
    if (!found)
      fail_msg("the server log has no start-up line with \"%s\"", needle);
  }

  login(f->c, f->token, sizeof f->token);
  set_ok(f->c, f->token, "it-key", "it-value");
  get_expect(f->c, f->token, "it-key", "it-value");
  set_ok(f->c, f->token, "it-key", "it-value-2");
  get_expect(f->c, f->token, "it-key", "it-value-2");

  /* a missing key */
  immu__grpc_result res;
  immu__grpc_result_init(&res);
  Immudb__Schema__Entry *e = NULL;
  int rv = get_key(f->c, f->token, "no-such-key", &e, &res);
  assert_int_equal(rv, 0);
  assert_int_not_equal(res.status, 0);
  if (strstr(res.message, "key not found") == NULL)
    fail_msg("Get of a missing key: status %s, message \"%s\"",
             immu__grpc_code_name(res.status), res.message);
  assert_null(e);
  immu__grpc_result_free(&res);
  f->ok = 1;
}

static void test_errors(void **state) {
  fx *f = *state;
  SKIP_IF_NO_SERVER(f);
  immu__grpc_result res;
  immu__grpc_result_init(&res);
  Immudb__Schema__Entry *e = NULL;

  /* no token */
  int rv = get_key(f->c, NULL, "k", &e, &res);
  assert_int_equal(rv, 0);
  if (res.status != IMMU__GRPC_UNAUTHENTICATED)
    fail_msg("Get without a token: %s \"%s\", want UNAUTHENTICATED",
             immu__grpc_code_name(res.status), res.message);
  /* a token that is not one */
  rv = get_key(f->c, "not-a-token", "k", &e, &res);
  assert_int_equal(rv, 0);
  if (res.status != IMMU__GRPC_UNAUTHENTICATED)
    fail_msg("Get with a bogus token: %s \"%s\", want UNAUTHENTICATED",
             immu__grpc_code_name(res.status), res.message);

  /* unknown methods */
  rv = rpc(f->c, "NoSuchMethod", NULL, NULL, NULL, NULL, &res);
  assert_int_equal(rv, 0);
  if (res.status != IMMU__GRPC_UNIMPLEMENTED)
    fail_msg("unknown method: %s \"%s\", want UNIMPLEMENTED",
             immu__grpc_code_name(res.status), res.message);
  uint8_t *resp = NULL;
  size_t rlen = 0;
  rv = immu__grpc_client_unary(f->c, "/other.Service/Get", NULL, NULL, 0, &resp,
                               &rlen, &res);
  assert_int_equal(rv, 0);
  assert_int_equal(res.status, IMMU__GRPC_UNIMPLEMENTED);

  /* a malformed request message (truncated varint / bad wire type) */
  login(f->c, f->token, sizeof f->token);
  char auth[1100];
  snprintf(auth, sizeof auth, "Bearer %s", f->token);
  immu__grpc_md md[1] = {{"authorization", auth}};
  immu__grpc_call_opts co = {md, 1, CALL_TIMEOUT_MS};
  static const uint8_t junk[] = {0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x01};
  rv = immu__grpc_client_unary(f->c, SVC "Set", &co, junk, sizeof junk, &resp,
                               &rlen, &res);
  assert_int_equal(rv, 0);
  if (res.status != IMMU__GRPC_INVALID_ARGUMENT)
    fail_msg("malformed SetRequest: %s \"%s\", want INVALID_ARGUMENT",
             immu__grpc_code_name(res.status), res.message);
  static const uint8_t junk2[] = {0x0f};
  rv = immu__grpc_client_unary(f->c, SVC "Get", &co, junk2, sizeof junk2, &resp,
                               &rlen, &res);
  assert_int_equal(rv, 0);
  if (res.status != IMMU__GRPC_INVALID_ARGUMENT)
    fail_msg("malformed KeyRequest: %s \"%s\", want INVALID_ARGUMENT",
             immu__grpc_code_name(res.status), res.message);
  /* a wrong password */
  Immudb__Schema__LoginRequest lr = IMMUDB__SCHEMA__LOGIN_REQUEST__INIT;
  lr.user.data = (uint8_t *)"immudb";
  lr.user.len = 6;
  lr.password.data = (uint8_t *)"wrong";
  lr.password.len = 5;
  rv = rpc(f->c, "Login", NULL, &lr.base, NULL, NULL, &res);
  assert_int_equal(rv, 0);
  if (res.status != IMMU__GRPC_UNAUTHENTICATED)
    fail_msg("Login with a wrong password: %s \"%s\", want UNAUTHENTICATED",
             immu__grpc_code_name(res.status), res.message);
  /* VerifiableGet of a missing key */
  Immudb__Schema__KeyRequest kr = IMMUDB__SCHEMA__KEY_REQUEST__INIT;
  Immudb__Schema__VerifiableGetRequest vr =
      IMMUDB__SCHEMA__VERIFIABLE_GET_REQUEST__INIT;
  kr.key.data = (uint8_t *)"nope";
  kr.key.len = 4;
  vr.keyrequest = &kr;
  rv = rpc(f->c, "VerifiableGet", f->token, &vr.base, NULL, NULL, &res);
  assert_int_equal(rv, 0);
  if (res.status == 0 || strstr(res.message, "key not found") == NULL)
    fail_msg("VerifiableGet of a missing key: %s \"%s\"",
             immu__grpc_code_name(res.status), res.message);
  /* the connection and the server are fine */
  assert_true(health(f->c, NULL, 0));
  immu__grpc_result_free(&res);
  f->ok = 1;
}

static void test_verifiable(void **state) {
  fx *f = *state;
  SKIP_IF_NO_SERVER(f);
  login(f->c, f->token, sizeof f->token);
  trust st;
  current_state(f->c, f->token, &st, "defaultdb");

  /* trust on first use, then every step proven from the previous state */
  verifiable_set(f->c, f->token, "vkey-1", "vvalue-1", &st);
  uint64_t first = st.tx_id;
  for (int i = 0; i < 5; i++) {
    char k[32];
    snprintf(k, sizeof k, "plain-%d", i);
    set_ok(f->c, f->token, k, "x"); /* txs the next proof must span */
  }
  verifiable_set(f->c, f->token, "vkey-2", "vvalue-2", &st);
  assert_true(st.tx_id >= first + 6);
  verifiable_get(f->c, f->token, "vkey-2", "vvalue-2", &st);
  /* an older entry: the proof goes from its tx to the trusted state */
  verifiable_get(f->c, f->token, "vkey-1", "vvalue-1", &st);

  /* a fresh client that only trusts an early state */
  trust early;
  memset(&early, 0, sizeof early);
  verifiable_get(f->c, f->token, "vkey-1", "vvalue-1", &early);
  assert_int_equal(early.tx_id, first);
  verifiable_get(f->c, f->token, "vkey-2", "vvalue-2", &early);
  assert_int_equal(early.tx_id, st.tx_id);

  /* CurrentState agrees with what the proofs established */
  trust cur;
  current_state(f->c, f->token, &cur, "defaultdb");
  assert_int_equal(cur.tx_id, st.tx_id);
  if (!immu_digest_eq(&cur.alh, &st.alh))
    fail_msg("CurrentState txHash differs from the verified Alh of tx %llu",
             (unsigned long long)st.tx_id);
  f->ok = 1;
}

/* UseDatabase: a token bound to |name|. */
static void use_database(immu__grpc_client *c, const char *token,
                         const char *name, char *out, size_t cap) {
  immu__grpc_result res;
  immu__grpc_result_init(&res);
  Immudb__Schema__Database db = IMMUDB__SCHEMA__DATABASE__INIT;
  db.databasename = (char *)(uintptr_t)name;
  Immudb__Schema__UseDatabaseReply *u = NULL;
  int rv = rpc(c, "UseDatabase", token, &db.base,
               &immudb__schema__use_database_reply__descriptor,
               (ProtobufCMessage **)&u, &res);
  CHECK_OK(rv, res, "UseDatabase");
  assert_non_null(u->token);
  assert_true(strlen(u->token) > 0 && strlen(u->token) < cap);
  snprintf(out, cap, "%s", u->token);
  immudb__schema__use_database_reply__free_unpacked(u, NULL);
  immu__grpc_result_free(&res);
}

static void test_databases(void **state) {
  fx *f = *state;
  SKIP_IF_NO_SERVER(f);
  login(f->c, f->token, sizeof f->token);
  set_ok(f->c, f->token, "shared-key", "in-defaultdb");

  immu__grpc_result res;
  immu__grpc_result_init(&res);
  Immudb__Schema__Database db = IMMUDB__SCHEMA__DATABASE__INIT;
  db.databasename = (char *)(uintptr_t) "itdb";
  int rv = rpc(f->c, "CreateDatabase", f->token, &db.base, NULL, NULL, &res);
  CHECK_OK(rv, res, "CreateDatabase");
  char tok2[1024], tok1[1024];
  use_database(f->c, f->token, "itdb", tok2, sizeof tok2);
  /* With two user databases a login token selects none (immudb's
   * multi-database mode): defaultdb needs a UseDatabase too. */
  Immudb__Schema__Entry *e0 = NULL;
  rv = get_key(f->c, f->token, "shared-key", &e0, &res);
  assert_int_equal(rv, 0);
  if (res.status != IMMU__GRPC_FAILED_PRECONDITION ||
      strstr(res.message, "select a database") == NULL)
    fail_msg("Get with a db-less token in multi-db mode: %s \"%s\"",
             immu__grpc_code_name(res.status), res.message);
  use_database(f->c, f->token, "defaultdb", tok1, sizeof tok1);

  /* the new database starts empty and keeps its own data */
  Immudb__Schema__Entry *e = NULL;
  rv = get_key(f->c, tok2, "shared-key", &e, &res);
  assert_int_equal(rv, 0);
  if (res.status == 0)
    fail_msg("itdb sees defaultdb's key");
  set_ok(f->c, tok2, "shared-key", "in-itdb");
  set_ok(f->c, tok2, "only-itdb", "1");
  get_expect(f->c, tok2, "shared-key", "in-itdb");
  get_expect(f->c, tok1, "shared-key", "in-defaultdb");
  rv = get_key(f->c, tok1, "only-itdb", &e, &res);
  assert_int_equal(rv, 0);
  if (res.status == 0)
    fail_msg("defaultdb sees itdb's key");
  trust st;
  current_state(f->c, tok2, &st, "itdb");
  assert_true(st.tx_id >= 2);
  /* creating it again fails */
  rv = rpc(f->c, "CreateDatabase", f->token, &db.base, NULL, NULL, &res);
  assert_int_equal(rv, 0);
  assert_int_not_equal(res.status, 0);
  immu__grpc_result_free(&res);
  f->ok = 1;
}

typedef struct load_worker {
  int port;
  int id;
  const char *token;
  int done;
  int failures;
  char first_error[256];
} load_worker;

static void *load_main(void *arg) {
  load_worker *w = arg;
  immu__grpc_client *c = connect_to(w->port, 10000);
  if (c == NULL) {
    w->failures = 200;
    snprintf(w->first_error, sizeof w->first_error, "connect failed");
    return NULL;
  }
  immu__grpc_result res;
  immu__grpc_result_init(&res);
  for (int i = 0; i < 200; i++) {
    char key[64], val[64];
    snprintf(key, sizeof key, "load-%d-%d", w->id, i / 2);
    snprintf(val, sizeof val, "value-%d-%d", w->id, i / 2);
    int rv = 0;
    int good;
    if (i % 2 == 0) {
      uint64_t id = set_kv(c, w->token, key, (const uint8_t *)val, strlen(val),
                           &res, &rv);
      good = rv == 0 && res.status == 0 && id > 0;
    } else {
      Immudb__Schema__Entry *e = NULL;
      rv = get_key(c, w->token, key, &e, &res);
      good = rv == 0 && res.status == 0 && e != NULL &&
             e->value.len == strlen(val) &&
             memcmp(e->value.data, val, e->value.len) == 0;
      if (e != NULL)
        immudb__schema__entry__free_unpacked(e, NULL);
    }
    if (good) {
      w->done++;
    } else {
      if (w->failures++ == 0)
        snprintf(w->first_error, sizeof w->first_error,
                 "call %d: transport %s status %s: %s", i, immu_err_name(rv),
                 immu__grpc_code_name(res.status),
                 res.message ? res.message : "");
    }
  }
  immu__grpc_result_free(&res);
  immu__grpc_client_free(c);
  return NULL;
}

typedef struct shared_worker {
  immu__grpc_client *c;
  const char *token;
  int id;
  int failures;
  char first_error[256];
} shared_worker;

/* Many threads on one connection: the server multiplexes their streams. */
static void *shared_main(void *arg) {
  shared_worker *w = arg;
  immu__grpc_result res;
  immu__grpc_result_init(&res);
  for (int i = 0; i < 50; i++) {
    char key[64], val[64];
    snprintf(key, sizeof key, "shared-%d-%d", w->id, i);
    snprintf(val, sizeof val, "v%d", i);
    int rv = 0;
    uint64_t id = set_kv(w->c, w->token, key, (const uint8_t *)val, strlen(val),
                         &res, &rv);
    Immudb__Schema__Entry *e = NULL;
    if (rv == 0 && res.status == 0 && id > 0)
      rv = get_key(w->c, w->token, key, &e, &res);
    int good = rv == 0 && res.status == 0 && e != NULL &&
               e->value.len == strlen(val) &&
               memcmp(e->value.data, val, e->value.len) == 0;
    if (e != NULL)
      immudb__schema__entry__free_unpacked(e, NULL);
    if (!good && w->failures++ == 0)
      snprintf(w->first_error, sizeof w->first_error,
               "call %d: transport %s status %s: %s", i, immu_err_name(rv),
               immu__grpc_code_name(res.status),
               res.message ? res.message : "");
  }
  immu__grpc_result_free(&res);
  return NULL;
}

static void test_concurrent_load(void **state) {
  fx *f = *state;
  SKIP_IF_NO_SERVER(f);
  login(f->c, f->token, sizeof f->token);
  enum { NCONN = 10 };
  pthread_t t[NCONN];
  load_worker w[NCONN];
  int64_t t0 = mono_ms();
  for (int i = 0; i < NCONN; i++) {
    memset(&w[i], 0, sizeof w[i]);
    w[i].port = f->s.port;
    w[i].id = i;
    w[i].token = f->token;
    pthread_create(&t[i], NULL, load_main, &w[i]);
  }
  int failures = 0, done = 0;
  for (int i = 0; i < NCONN; i++) {
    pthread_join(t[i], NULL);
    failures += w[i].failures;
    done += w[i].done;
    if (w[i].failures > 0)
      print_message("worker %d: %d failures, first: %s\n", i, w[i].failures,
                    w[i].first_error);
  }
  int64_t dt = mono_ms() - t0;
  print_message("load: %d calls in %lld ms\n", done, (long long)dt);
  assert_int_equal(failures, 0);
  assert_int_equal(done, NCONN * 200);
  assert_true(dt < 240000);

  /* 10 threads x 100 calls multiplexed on one connection */
  pthread_t ts[NCONN];
  shared_worker sw[NCONN];
  for (int i = 0; i < NCONN; i++) {
    memset(&sw[i], 0, sizeof sw[i]);
    sw[i].c = f->c;
    sw[i].token = f->token;
    sw[i].id = i;
    pthread_create(&ts[i], NULL, shared_main, &sw[i]);
  }
  for (int i = 0; i < NCONN; i++) {
    pthread_join(ts[i], NULL);
    failures += sw[i].failures;
    if (sw[i].failures > 0)
      print_message("shared worker %d: %d failures, first: %s\n", i,
                    sw[i].failures, sw[i].first_error);
  }
  assert_int_equal(failures, 0);
  assert_true(health(f->c, NULL, 0));
  f->ok = 1;
}

static void test_restart_persistence(void **state) {
  fx *f = *state;
  SKIP_IF_NO_SERVER(f);
  char uuid1[64], uuid2[64];
  assert_true(health(f->c, uuid1, sizeof uuid1));
  login(f->c, f->token, sizeof f->token);
  for (int i = 0; i < 20; i++) {
    char k[32], v[32];
    snprintf(k, sizeof k, "persist-%d", i);
    snprintf(v, sizeof v, "value-%d", i);
    set_ok(f->c, f->token, k, v);
  }
  trust before;
  current_state(f->c, f->token, &before, "defaultdb");
  immu__grpc_client_free(f->c);
  f->c = NULL;

  int st = stop_server(&f->s);
  if (!exited_zero(st))
    fail_msg("first run: wait status 0x%x, want exit 0", (unsigned)st);
  assert_int_equal(start_server(&f->s), 0);
  f->c = connect_to(f->s.port, 5000);
  assert_non_null(f->c);

  assert_true(health(f->c, uuid2, sizeof uuid2));
  if (strcmp(uuid1, uuid2) != 0)
    fail_msg("immudb-uuid changed across a restart: %s -> %s", uuid1, uuid2);
  login(f->c, f->token, sizeof f->token);
  for (int i = 0; i < 20; i++) {
    char k[32], v[32];
    snprintf(k, sizeof k, "persist-%d", i);
    snprintf(v, sizeof v, "value-%d", i);
    get_expect(f->c, f->token, k, v);
  }
  trust after;
  current_state(f->c, f->token, &after, "defaultdb");
  assert_int_equal(after.tx_id, before.tx_id);
  assert_true(immu_digest_eq(&after.alh, &before.alh));
  /* and it keeps going, provably from the old state */
  verifiable_set(f->c, f->token, "after-restart", "yes", &before);
  f->ok = 1;
}

/* streamSet / streamGet framing (svc_stream.c): a byte stream of
 * u64-length-prefixed messages carried in Chunk.content. */
static void chunk_msg(immu__grpc_msg *out, uint8_t **bufs, size_t *n,
                      const uint8_t *content, size_t len) {
  Immudb__Schema__Chunk ch = IMMUDB__SCHEMA__CHUNK__INIT;
  ch.content.data = (uint8_t *)(uintptr_t)content;
  ch.content.len = len;
  size_t sz = immudb__schema__chunk__get_packed_size(&ch);
  uint8_t *b = malloc(sz ? sz : 1);
  immudb__schema__chunk__pack(&ch, b);
  bufs[*n] = b;
  out[*n].ptr = b;
  out[*n].len = sz;
  (*n)++;
}

typedef struct sget {
  /* parser of the streamGet byte stream */
  uint8_t lenbuf[8];
  size_t lenhave;
  uint64_t need;
  int in_payload;
  int msgno;
  uint64_t key_len, val_len, val_got;
  int bad;
  /* SIGTERM while the call is in flight */
  itsrv *srv;
  int signalled;
  int alive_after;
  int chunks;
  int slow_ms;             /* per chunk */
  immu__grpc_client *idle; /* an idle connection of the same server */
  int idle_rv, idle_status, new_conn_ok;
  int64_t refusal_ms;
} sget;

static int on_sget(void *arg, const uint8_t *m, size_t len) {
  sget *g = arg;
  Immudb__Schema__Chunk *ch = immudb__schema__chunk__unpack(NULL, len, m);
  if (ch == NULL) {
    g->bad++;
    return -1;
  }
  const uint8_t *p = ch->content.data;
  size_t n = ch->content.len;
  while (n > 0) {
    if (!g->in_payload) {
      size_t take = 8 - g->lenhave < n ? 8 - g->lenhave : n;
      memcpy(g->lenbuf + g->lenhave, p, take);
      g->lenhave += take;
      p += take;
      n -= take;
      if (g->lenhave == 8) {
        g->need = 0;
        for (int i = 0; i < 8; i++)
          g->need = g->need << 8 | g->lenbuf[i];
        g->lenhave = 0;
        g->in_payload = 1;
        if (g->msgno == 0)
          g->key_len = g->need;
        else
          g->val_len = g->need;
      }
    }
    if (g->in_payload) {
      size_t take = g->need < n ? (size_t)g->need : n;
      if (g->msgno == 1) {
        for (size_t i = 0; i < take; i++)
          if (p[i] != (uint8_t)((g->val_got + i) * 31u))
            g->bad++;
        g->val_got += take;
      }
      g->need -= take;
      p += take;
      n -= take;
      if (g->need == 0) {
        g->in_payload = 0;
        g->msgno++;
      }
    }
  }
  immudb__schema__chunk__free_unpacked(ch, NULL);
  g->chunks++;
  if (g->slow_ms > 0)
    sleep_ms(g->slow_ms);
  if (g->chunks == 1 && g->srv != NULL) {
    /* The server is now blocked on flow control with most of the value
     * still to send: stop it, and check it waits for this call. */
    kill(g->srv->pid, SIGTERM);
    g->signalled = 1;
    sleep_ms(700);
    g->alive_after = waitpid(g->srv->pid, NULL, WNOHANG) == 0;
    /* While it drains: no new call is taken, on the idle connection
     * (GOAWAY) or on a new one, and the refusal is prompt. */
    int64_t t0 = mono_ms();
    immu__grpc_result res;
    immu__grpc_result_init(&res);
    uint8_t *resp = NULL;
    size_t rlen = 0;
    immu__grpc_call_opts co = {NULL, 0, 3000};
    g->idle_rv = immu__grpc_client_unary(g->idle, SVC "Health", &co, NULL, 0,
                                         &resp, &rlen, &res);
    g->idle_status = res.status;
    immu__free(resp);
    immu__grpc_result_free(&res);
    immu__grpc_client *c = connect_to(g->srv->port, 3000);
    g->new_conn_ok = c != NULL && health(c, NULL, 0);
    immu__grpc_client_free(c);
    g->refusal_ms = mono_ms() - t0;
  }
  return 0;
}

/* Uploads |key| with a |vlen|-byte value (byte i = i * 31) through
 * streamSet in 64 KiB chunks: the client-streaming path. */
static void stream_set_big(fx *f, const char *key, size_t vlen) {
  const size_t csz = 65536;
  uint8_t *val = malloc(vlen);
  for (size_t i = 0; i < vlen; i++)
    val[i] = (uint8_t)(i * 31u);
  size_t nmsg = 0, cap = 4 + vlen / csz;
  immu__grpc_msg *msgs = calloc(cap, sizeof *msgs);
  uint8_t **bufs = calloc(cap, sizeof *bufs);
  uint8_t hdr[8 + 64];
  size_t kl = strlen(key);
  for (int i = 0; i < 8; i++)
    hdr[i] = (uint8_t)((uint64_t)kl >> (56 - 8 * i));
  memcpy(hdr + 8, key, kl);
  chunk_msg(msgs, bufs, &nmsg, hdr, 8 + kl);
  for (int i = 0; i < 8; i++)
    hdr[i] = (uint8_t)((uint64_t)vlen >> (56 - 8 * i));
  chunk_msg(msgs, bufs, &nmsg, hdr, 8);
  for (size_t off = 0; off < vlen; off += csz)
    chunk_msg(msgs, bufs, &nmsg, val + off,
              vlen - off < csz ? vlen - off : csz);

  char auth[1100];
  snprintf(auth, sizeof auth, "Bearer %s", f->token);
  immu__grpc_md md[1] = {{"authorization", auth}};
  immu__grpc_call_opts co = {md, 1, 60000};
  uint8_t *resp = NULL;
  size_t rlen = 0;
  immu__grpc_result res;
  immu__grpc_result_init(&res);
  int rv = immu__grpc_client_client_stream(f->c, SVC "streamSet", &co, msgs,
                                           nmsg, &resp, &rlen, &res);
  CHECK_OK(rv, res, "streamSet");
  Immudb__Schema__TxHeader *h =
      immudb__schema__tx_header__unpack(NULL, rlen, resp);
  assert_non_null(h);
  assert_true(h->id > 0);
  immudb__schema__tx_header__free_unpacked(h, NULL);
  immu__free(resp);
  for (size_t i = 0; i < nmsg; i++)
    free(bufs[i]);
  free(bufs);
  free(msgs);
  free(val);
  immu__grpc_result_free(&res);
}

static void key_request(const char *key, uint8_t *buf, size_t cap,
                        size_t *len) {
  Immudb__Schema__KeyRequest kr = IMMUDB__SCHEMA__KEY_REQUEST__INIT;
  kr.key.data = (uint8_t *)(uintptr_t)key;
  kr.key.len = strlen(key);
  *len = immudb__schema__key_request__get_packed_size(&kr);
  assert_true(*len <= cap);
  immudb__schema__key_request__pack(&kr, buf);
}

static int cancel_after_first(void *arg, const uint8_t *m, size_t len) {
  (void)m;
  (void)len;
  ++*(int *)arg;
  return -7;
}

/* A client that walks away in the middle of a 12 MiB streamGet: the
 * server drops the call (no leak, exit 0 at the end) and carries on. */
static void test_cancel_midstream(void **state) {
  fx *f = *state;
  SKIP_IF_NO_SERVER(f);
  login(f->c, f->token, sizeof f->token);
  stream_set_big(f, "big-value", (size_t)12 << 20);
  char auth[1100];
  snprintf(auth, sizeof auth, "Bearer %s", f->token);
  immu__grpc_md md[1] = {{"authorization", auth}};
  immu__grpc_call_opts co = {md, 1, 60000};
  uint8_t krb[128];
  size_t krl;
  key_request("big-value", krb, sizeof krb, &krl);
  immu__grpc_result res;
  immu__grpc_result_init(&res);
  for (int i = 0; i < 5; i++) {
    int n = 0;
    int rv = immu__grpc_client_server_stream(f->c, SVC "streamGet", &co, krb,
                                             krl, cancel_after_first, &n, &res);
    assert_int_equal(rv, -7);
    assert_int_equal(n, 1);
  }
  /* and a deadline that expires mid-stream, on a slow reader */
  immu__grpc_client_opts o;
  memset(&o, 0, sizeof o);
  o.host = "127.0.0.1";
  o.port = f->s.port;
  o.stream_pending_max = 65536;
  immu__grpc_client *slow = NULL;
  assert_int_equal(immu__grpc_client_connect(&o, &slow, NULL, 0), 0);
  sget g;
  memset(&g, 0, sizeof g);
  g.slow_ms = 10; /* ~2 s for the whole value */
  co.timeout_ms = 300;
  int rv = immu__grpc_client_server_stream(slow, SVC "streamGet", &co, krb, krl,
                                           on_sget, &g, &res);
  immu__grpc_client_free(slow);
  /* the server may notice first (DEADLINE_EXCEEDED) or we do */
  if (!(rv == IMMU_ETIMEOUT ||
        (rv == 0 && res.status == IMMU__GRPC_DEADLINE_EXCEEDED)))
    fail_msg("streamGet past its deadline: transport %s, status %s \"%s\"",
             immu_err_name(rv), immu__grpc_code_name(res.status), res.message);
  immu__grpc_result_free(&res);
  assert_true(health(f->c, NULL, 0));
  set_ok(f->c, f->token, "after-cancel", "ok");
  get_expect(f->c, f->token, "after-cancel", "ok");
  f->ok = 1;
}

static void test_sigterm_inflight(void **state) {
  fx *f = *state;
  SKIP_IF_NO_SERVER(f);
  login(f->c, f->token, sizeof f->token);
  const char *key = "big-value";
  const size_t vlen = (size_t)12 << 20;
  size_t kl = strlen(key);
  stream_set_big(f, key, vlen);
  char auth[1100];
  snprintf(auth, sizeof auth, "Bearer %s", f->token);
  immu__grpc_md md[1] = {{"authorization", auth}};
  immu__grpc_call_opts co = {md, 1, 60000};
  immu__grpc_result res;
  immu__grpc_result_init(&res);
  int rv;

  /* streamGet on a connection that holds back after 64 KiB undelivered */
  immu__grpc_client_opts o;
  memset(&o, 0, sizeof o);
  o.host = "127.0.0.1";
  o.port = f->s.port;
  o.stream_pending_max = 65536;
  immu__grpc_client *slow = NULL;
  assert_int_equal(immu__grpc_client_connect(&o, &slow, NULL, 0), 0);
  uint8_t krb[128];
  size_t krl;
  key_request(key, krb, sizeof krb, &krl);
  sget g;
  memset(&g, 0, sizeof g);
  g.srv = &f->s;
  g.idle = f->c;
  int64_t t0 = mono_ms();
  rv = immu__grpc_client_server_stream(slow, SVC "streamGet", &co, krb, krl,
                                       on_sget, &g, &res);
  int64_t dt = mono_ms() - t0;
  immu__grpc_client_free(slow);
  assert_true(g.signalled);
  if (!g.alive_after)
    fail_msg("the server exited 700 ms after SIGTERM with a call in flight");
  CHECK_OK(rv, res, "streamGet across SIGTERM");
  if (g.idle_rv == 0 && g.idle_status == 0)
    fail_msg("a new call on an idle connection succeeded during shutdown");
  if (g.new_conn_ok)
    fail_msg("a new connection was served during shutdown");
  print_message("during shutdown: idle connection -> %s/%s, new connection "
                "refused, in %lld ms\n",
                immu_err_name(g.idle_rv), immu__grpc_code_name(g.idle_status),
                (long long)g.refusal_ms);
  if (g.refusal_ms > 5000)
    fail_msg("refusing new work during shutdown took %lld ms",
             (long long)g.refusal_ms);
  assert_int_equal(g.bad, 0);
  assert_int_equal(g.key_len, kl);
  assert_int_equal(g.val_len, vlen);
  assert_int_equal(g.val_got, vlen);
  print_message("streamGet of 12 MiB across SIGTERM: %lld ms, %d chunks\n",
                (long long)dt, g.chunks);

  /* the process then exits by itself, with status 0 */
  int64_t deadline = mono_ms() + STOP_TIMEOUT_MS;
  int st = -1;
  while (mono_ms() < deadline) {
    if (waitpid(f->s.pid, &st, WNOHANG) == f->s.pid) {
      f->s.pid = -1;
      break;
    }
    sleep_ms(20);
  }
  if (f->s.pid > 0)
    fail_msg("the server did not exit after SIGTERM and its last call");
  if (!exited_zero(st))
    fail_msg("SIGTERM: wait status 0x%x, want exit 0", (unsigned)st);
  /* teardown must not stop it again; restart so teardown has a server */
  assert_int_equal(start_server(&f->s), 0);
  immu__grpc_result_free(&res);
  f->ok = 1;
}

static void test_oversized_message(void **state) {
  fx *f = *state;
  SKIP_IF_NO_SERVER(f);
  login(f->c, f->token, sizeof f->token);
  size_t big = (size_t)MAX_RECV + 1024;
  uint8_t *v = malloc(big);
  memset(v, 'v', big);
  immu__grpc_result res;
  immu__grpc_result_init(&res);
  int rv = 0;
  set_kv(f->c, f->token, "too-big", v, big, &res, &rv);
  free(v);
  if (rv != 0 || res.status != IMMU__GRPC_RESOURCE_EXHAUSTED)
    fail_msg("oversized Set: transport %s, status %s \"%s\", want "
             "RESOURCE_EXHAUSTED",
             immu_err_name(rv), immu__grpc_code_name(res.status),
             res.message ? res.message : "");
  immu__grpc_result_free(&res);
  /* one streamSet chunk over the limit */
  Immudb__Schema__Chunk ch = IMMUDB__SCHEMA__CHUNK__INIT;
  uint8_t *cb = calloc(1, big);
  ch.content.data = cb;
  ch.content.len = big;
  size_t psz = immudb__schema__chunk__get_packed_size(&ch);
  uint8_t *packed = malloc(psz);
  immudb__schema__chunk__pack(&ch, packed);
  free(cb);
  immu__grpc_msg m = {packed, psz};
  char auth[1100];
  snprintf(auth, sizeof auth, "Bearer %s", f->token);
  immu__grpc_md md[1] = {{"authorization", auth}};
  immu__grpc_call_opts co = {md, 1, CALL_TIMEOUT_MS};
  uint8_t *resp = NULL;
  size_t rlen = 0;
  rv = immu__grpc_client_client_stream(f->c, SVC "streamSet", &co, &m, 1, &resp,
                                       &rlen, &res);
  free(packed);
  if (rv != 0 || res.status != IMMU__GRPC_RESOURCE_EXHAUSTED)
    fail_msg("oversized streamSet chunk: transport %s, status %s \"%s\"",
             immu_err_name(rv), immu__grpc_code_name(res.status),
             res.message ? res.message : "");
  immu__grpc_result_free(&res);
  /* the same connection still works, and a new one too */
  assert_true(health(f->c, NULL, 0));
  set_ok(f->c, f->token, "small", "ok");
  get_expect(f->c, f->token, "small", "ok");
  immu__grpc_client *c2 = connect_to(f->s.port, 5000);
  assert_non_null(c2);
  assert_true(health(c2, NULL, 0));
  immu__grpc_client_free(c2);
  f->ok = 1;
}

int main(void) {
  signal(SIGPIPE, SIG_IGN);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_health_login_set_get, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_errors, setup, teardown),
      cmocka_unit_test_setup_teardown(test_verifiable, setup, teardown),
      cmocka_unit_test_setup_teardown(test_databases, setup, teardown),
      cmocka_unit_test_setup_teardown(test_concurrent_load, setup, teardown),
      cmocka_unit_test_setup_teardown(test_restart_persistence, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_cancel_midstream, setup, teardown),
      cmocka_unit_test_setup_teardown(test_sigterm_inflight, setup, teardown),
      cmocka_unit_test_setup_teardown(test_oversized_message, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
