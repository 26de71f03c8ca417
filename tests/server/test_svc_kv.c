/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The data half of ImmuService (src/server/svc_kv.c, svc_stream.c,
 * svc_conv.c) driven without sockets: a fake immu_grpc_call (the shared
 * tests/server/fake_call.c, implementing server.h's call API) carries
 * packed request messages in and captures every sent message and the
 * final status.
 *
 * Every verifiable reply is checked the way immudb-node 1.1.1 checks it
 * (immudb-crypto.md 7.5) after unpacking the reply BYTES with the
 * generated code: the legacy/v0 Alh computed from the proto header fields
 * (raw 32-byte digests), entry digests H(key || H(value)), htree inclusion
 * and the dual proof from the client's trusted state, which then advances.
 * A walker also checks the reply bytes against immudb-node 1.1.1's schema
 * (immudb v1.0 field numbers and wire types; immudb-api.md 2 "[n111]").
 *
 * Streams: requests are cut into chunks at odd boundaries (8-byte length
 * prefixes split, several messages per chunk, metadata on the first
 * chunk), replies are checked for immudb's framing (each message starts a
 * chunk, chunks of at most 64 KiB) with a 10 MiB value.
 *
 * The auth half (src/server/auth.c, svc_admin.c) is written by another
 * engineer. Until it is linked into this test (CMake defines
 * IMMU_TEST_REAL_AUTH when those files exist), STUBS of immu_srv_* below
 * stand in for it: one database "defaultdb" in a temp dir, a permission
 * level the tests set, a signing key generated here.
 */
#include <errno.h>
#include <ftw.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "core/endian.h"
#include "core/mem.h"
#include "fake_call.h"
#include "immudb/crypto.h"
#include "immudb/db.h"
#include "schema.pb-c.h"
#include "server/server.h"
#include "server/svc.h"
#include "server/svc_conv.h"
#include "store/store.h"

#define U8(s) ((const uint8_t *)(s))
#define DBNAME "defaultdb"
#define FREE(m) protobuf_c_message_free_unpacked((ProtobufCMessage *)(m), NULL)

static ProtobufCBinaryData B(const void *p, size_t n) {
  ProtobufCBinaryData b;
  b.len = n;
  b.data = (uint8_t *)(uintptr_t)p;
  return b;
}

static ProtobufCBinaryData S(const char *s) {
  return B(s, strlen(s));
}


/* ------------------------------------------------------------------ */
/* Fake transport: tests/server/fake_call.c                            */
/* ------------------------------------------------------------------ */

/* A broken transport contract (the fake's checks) fails the test. */
static void fake_fail_cmocka(const char *fmt, va_list ap) {
  char msg[1400];
  vsnprintf(msg, sizeof msg, fmt, ap);
  fail_msg("%s", msg);
}

/* This test's calls keep every sent message's bytes (sent[], sent_len[])
 * and wait at most 30 s for a detached call to finish. */
static immu_grpc_call *call_new(const char *path) {
  immu_grpc_call *c = fake_call_new(path);
  c->record_sent = 1;
  c->wait_timeout_s = 30;
  return c;
}

/* ------------------------------------------------------------------ */
/* The auth half                                                       */
/* ------------------------------------------------------------------ */

/* A P-256 key pair generated for the run: PEM texts (malloc'd). */
static char *g_key_pem, *g_pub_pem;

static char *bio_text(BIO *b) {
  char *p = NULL;
  long n = BIO_get_mem_data(b, &p);
  char *s = fake_xmalloc((size_t)n + 1);
  memcpy(s, p, (size_t)n);
  s[n] = '\0';
  return s;
}

static void gen_keys(void) {
  EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
  BIO *a = BIO_new(BIO_s_mem()), *b = BIO_new(BIO_s_mem());
  assert_non_null(k);
  assert_int_equal(PEM_write_bio_PrivateKey(a, k, NULL, NULL, 0, NULL, NULL),
                   1);
  assert_int_equal(PEM_write_bio_PUBKEY(b, k), 1);
  g_key_pem = bio_text(a);
  g_pub_pem = bio_text(b);
  BIO_free(a);
  BIO_free(b);
  EVP_PKEY_free(k);
}

#ifndef IMMU_TEST_REAL_AUTH
/*
 * ===================================================================
 * STUBS of the auth half (svc.h): used until src/server/auth.c and
 * svc_admin.c are linked into this test (IMMU_TEST_REAL_AUTH). They
 * implement just what the data half relies on: authentication is a
 * permission level set by the test, the selected database is one handle.
 * ===================================================================
 */
struct immu_server {
  immu_db *db;
  char db_name[64];
  int perm;            /* the caller's permission */
  immu_signer *signer; /* NULL: no signing key */
};

int immu_srv_begin(immu_server *s, immu_grpc_call *call, int need, int need_db,
                   immu_srv_ctx *out) {
  memset(out, 0, sizeof *out);
  assert_int_equal(need_db, 1);
  if (s->perm == IMMU_PERM_NONE && need > IMMU_PERM_NONE) {
    immu_srv_failf(call, IMMU_GRPC_PERMISSION_DENIED, "permission denied");
    return -1;
  }
  if (s->perm < need) {
    immu_srv_failf(call, IMMU_GRPC_PERMISSION_DENIED, "permission denied");
    return -1;
  }
  out->srv = s;
  out->call = call;
  snprintf(out->user, sizeof out->user, "immudb");
  snprintf(out->db_name, sizeof out->db_name, "%s", s->db_name);
  out->db = s->db;
  out->perm = s->perm;
  return 0;
}

void immu_srv_end(immu_srv_ctx *ctx) {
  memset(ctx, 0, sizeof *ctx);
}

int immu_srv_sign_state(immu_server *s, const char *db, uint64_t tx_id,
                        const immu_digest *alh, uint8_t sig[IMMU_SIG_MAX],
                        size_t *sig_len, uint8_t pubkey[IMMU_PUBKEY_LEN]) {
  if (s->signer == NULL)
    return IMMU_ENOTFOUND;
  return immu_signer_sign_state(s->signer, db, strlen(db), tx_id, alh, sig,
                                sig_len, pubkey);
}

void immu_srv_failf(immu_grpc_call *call, int status, const char *fmt, ...) {
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  immu_grpc_call_finish(call, status, msg);
}

/* The mapping of auth.c (immudb's: failures that clients recognise by
 * their text travel as UNKNOWN). */
void immu_srv_fail(immu_grpc_call *call, int rc) {
  int st;
  switch (rc) {
  case IMMU_ENOTFOUND:
  case IMMU_EEXIST:
  case IMMU_ECONFLICT:
    st = IMMU_GRPC_UNKNOWN;
    break;
  case IMMU_EINVAL:
  case IMMU_ERANGE:
  case IMMU_ETOOLARGE:
  case IMMU_EPROTO:
    st = IMMU_GRPC_INVALID_ARGUMENT;
    break;
  case IMMU_ETIMEOUT:
    st = IMMU_GRPC_DEADLINE_EXCEEDED;
    break;
  case IMMU_EUNSUPPORTED:
    st = IMMU_GRPC_UNIMPLEMENTED;
    break;
  case IMMU_ENOMEM:
    st = IMMU_GRPC_RESOURCE_EXHAUSTED;
    break;
  case IMMU_ECLOSED:
  case IMMU_EPOISONED:
    st = IMMU_GRPC_UNAVAILABLE;
    break;
  default:
    st = IMMU_GRPC_INTERNAL;
    break;
  }
  immu_srv_failf(call, st, "%s", immu_db_last_error());
}

static int pack_send(immu_grpc_call *call, const ProtobufCMessage *m) {
  size_t n = protobuf_c_message_get_packed_size(m);
  uint8_t *b = fake_xmalloc(n);
  int rc;
  protobuf_c_message_pack(m, b);
  rc = immu_grpc_call_send(call, b, n);
  free(b);
  return rc;
}

void immu_srv_reply(immu_grpc_call *call, const ProtobufCMessage *m) {
  if (pack_send(call, m) != 0)
    immu_grpc_call_finish(call, IMMU_GRPC_CANCELLED, "cancelled");
  else
    immu_grpc_call_finish(call, IMMU_GRPC_OK, "");
}

int immu_srv_send(immu_grpc_call *call, const ProtobufCMessage *m) {
  return pack_send(call, m);
}

ProtobufCMessage *immu_srv_unpack(immu_grpc_call *call, size_t i,
                                  const ProtobufCMessageDescriptor *desc) {
  size_t len = 0;
  const uint8_t *p = immu_grpc_call_msg(call, i, &len);
  ProtobufCMessage *m =
      p == NULL ? NULL : protobuf_c_message_unpack(desc, NULL, len, p);
  if (m == NULL)
    immu_grpc_call_finish(call, IMMU_GRPC_INVALID_ARGUMENT,
                          "malformed request");
  return m;
}
#endif /* !IMMU_TEST_REAL_AUTH */

/* ------------------------------------------------------------------ */
/* Fixture                                                             */
/* ------------------------------------------------------------------ */

typedef struct cstate { /* a client's trusted state */
  uint64_t txid;
  immu_digest alh;
} cstate;

typedef struct fixture {
  char dir[512];
  immu_server *srv;
  immu_verifier *verifier;
  cstate st;
  char auth[160]; /* "authorization" metadata of the calls */
#ifndef IMMU_TEST_REAL_AUTH
  immu_server stub;
#endif
} fixture;

static fixture *g_fx; /* for helpers that need no parameter */

static int rm_cb(const char *path, const struct stat *sb, int flag,
                 struct FTW *ftw) {
  (void)sb;
  (void)flag;
  (void)ftw;
  return remove(path);
}

#ifdef IMMU_TEST_REAL_AUTH
/* ---- the real auth half (auth.c, svc_admin.c) ---- */

static void quiet_log(void *arg, int level, const char *msg) {
  (void)arg;
  (void)level;
  (void)msg;
}

/* The handler the server's full method table routes |name| to. */
static immu_grpc_handler table_handler_flags(immu_server *s,
                                             const char *name, void **arg,
                                             unsigned *flags) {
  const immu_grpc_method *m;
  size_t n;
  char path[128];
  snprintf(path, sizeof path, "/immudb.schema.ImmuService/%s", name);
  immu_server_methods(s, &m, &n);
  for (size_t i = 0; i < n; i++)
    if (strcmp(m[i].path, path) == 0) {
      *arg = m[i].arg;
      if (flags != NULL)
        *flags = m[i].flags;
      return m[i].handler;
    }
  fail_msg("the server has no method %s", path);
  return NULL;
}

static immu_grpc_handler table_handler(immu_server *s, const char *name,
                                       void **arg) {
  return table_handler_flags(s, name, arg, NULL);
}

/* An admin RPC with the fixture's credentials; returns the reply. */
static void *admin_rpc(fixture *fx, const char *name,
                       const ProtobufCMessage *req,
                       const ProtobufCMessageDescriptor *desc) {
  immu_grpc_call *c = call_new(name);
  void *harg = NULL;
  immu_grpc_handler h = table_handler(fx->srv, name, &harg);
  ProtobufCMessage *m;
  fake_call_set_auth(c, fx->auth);
  fake_call_add_pb(c, req);
  h(c, harg);
  if (c->status != IMMU_GRPC_OK || c->nsent != 1)
    fail_msg("%s: %d %s", name, c->status, c->message);
  m = protobuf_c_message_unpack(desc, NULL, c->sent_len[0], c->sent[0]);
  assert_non_null(m);
  fake_call_free(c);
  return m;
}

/* Login, then UseDatabase(defaultdb): the fixture's calls run as |user|. */
static void login_as(fixture *fx, const char *user, const char *pw) {
  Immudb__Schema__LoginRequest lr = IMMUDB__SCHEMA__LOGIN_REQUEST__INIT;
  Immudb__Schema__Database d = IMMUDB__SCHEMA__DATABASE__INIT;
  Immudb__Schema__LoginResponse *resp;
  Immudb__Schema__UseDatabaseReply *ur;
  lr.user = S(user);
  lr.password = S(pw);
  fx->auth[0] = '\0';
  resp = admin_rpc(fx, "Login", &lr.base,
                   &immudb__schema__login_response__descriptor);
  snprintf(fx->auth, sizeof fx->auth, "Bearer %s", resp->token);
  FREE(resp);
  d.databasename = (char *)DBNAME;
  ur = admin_rpc(fx, "UseDatabase", &d.base,
                 &immudb__schema__use_database_reply__descriptor);
  snprintf(fx->auth, sizeof fx->auth, "Bearer %s", ur->token);
  FREE(ur);
}

static int real_open(fixture *fx) {
  immu_server_config cfg;
  char data[600], key[600], *err = NULL;
  FILE *f;
  snprintf(data, sizeof data, "%s/data", fx->dir);
  snprintf(key, sizeof key, "%s/signing.pem", fx->dir);
  f = fopen(key, "w");
  if (f == NULL || fputs(g_key_pem, f) < 0 || fclose(f) != 0)
    return -1;
  immu_server_config_init(&cfg);
  cfg.dir = data;
  cfg.signing_key = key;
  cfg.synced = 0;
  cfg.listen_address = "127.0.0.1";
  cfg.log = quiet_log;
  if (immu_server_new(&cfg, &fx->srv, &err) != 0) {
    fprintf(stderr, "immu_server_new: %s\n", err ? err : "?");
    free(err);
    return -1;
  }
  login_as(fx, "immudb", "immudb");
  return 0;
}
#endif /* IMMU_TEST_REAL_AUTH */

static int setup(void **state) {
  fixture *fx = calloc(1, sizeof *fx);
  const char *base = getenv("IMMU_TEST_TMPDIR");
  immu_db_options o;
  immu_store_options so;

  if (fx == NULL)
    return -1;
  snprintf(fx->dir, sizeof fx->dir, "%s/svckvXXXXXX",
           base && *base ? base : "/tmp");
  if (mkdtemp(fx->dir) == NULL) {
    free(fx);
    return -1;
  }
  if (immu_verifier_from_pem(g_pub_pem, strlen(g_pub_pem), &fx->verifier) != 0)
    return -1;
#ifdef IMMU_TEST_REAL_AUTH
  (void)o;
  (void)so;
  if (real_open(fx) != 0)
    return -1;
#else
  immu_store_options_init(&so);
  so.durability = IMMU_DURABILITY_ASYNC;
  immu_db_options_init(&o);
  o.store = &so;
  o.index_wait_ms = 30000;
  if (immu_db_open(fx->dir, &o, &fx->stub.db) != 0)
    return -1;
  snprintf(fx->stub.db_name, sizeof fx->stub.db_name, DBNAME);
  fx->stub.perm = IMMU_PERM_SYSADMIN;
  if (immu_signer_from_pem(g_key_pem, strlen(g_key_pem), &fx->stub.signer) != 0)
    return -1;
  fx->srv = &fx->stub;
#endif
  fx->st.txid = 0;
  fx->st.alh = immu_empty_digest;
  g_fx = fx;
  *state = fx;
  return 0;
}

static int teardown(void **state) {
  fixture *fx = *state;
  int rc = 0;
#ifdef IMMU_TEST_REAL_AUTH
  immu_server_free(fx->srv);
#else
  rc = immu_db_close(fx->stub.db);
  immu_signer_free(fx->stub.signer);
#endif
  immu_verifier_free(fx->verifier);
  nftw(fx->dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
  free(fx);
  g_fx = NULL;
  return rc == 0 ? 0 : -1;
}

/* The caller's permission on the selected database. With the real auth
 * half: IMMU_PERM_NONE is a caller without credentials (UNAUTHENTICATED),
 * READ / READWRITE are users created for it, SYSADMIN is immudb. */
static void set_perm(fixture *fx, int perm) {
#ifndef IMMU_TEST_REAL_AUTH
  fx->stub.perm = perm;
#else
  static const char pw[] = "Passw0rd!x";
  if (perm == IMMU_PERM_NONE) {
    fx->auth[0] = '\0';
  } else if (perm >= IMMU_PERM_ADMIN) {
    login_as(fx, "immudb", "immudb");
  } else {
    Immudb__Schema__CreateUserRequest cu =
        IMMUDB__SCHEMA__CREATE_USER_REQUEST__INIT;
    const char *name = perm == IMMU_PERM_READ ? "reader" : "writer";
    immu_grpc_call *c = call_new("CreateUser");
    void *harg = NULL;
    immu_grpc_handler h;
    login_as(fx, "immudb", "immudb");
    h = table_handler(fx->srv, "CreateUser", &harg);
    cu.user = S(name);
    cu.password = S(pw);
    cu.permission = (uint32_t)perm;
    cu.database = (char *)DBNAME;
    fake_call_set_auth(c, fx->auth);
    fake_call_add_pb(c, &cu.base);
    h(c, harg);
    if (c->status != IMMU_GRPC_OK && strstr(c->message, "exists") == NULL)
      fail_msg("CreateUser: %d %s", c->status, c->message);
    fake_call_free(c);
    login_as(fx, name, pw);
  }
#endif
}

/* The status of a call made without the permission it needs. */
#ifdef IMMU_TEST_REAL_AUTH
#define DENIED_NONE IMMU_GRPC_UNAUTHENTICATED
#else
#define DENIED_NONE IMMU_GRPC_PERMISSION_DENIED
#endif

/* The handler of method |name|. */
static immu_grpc_handler handler_of(const char *name) {
  for (size_t i = 0; i < immu__svc_kv_nmethods; i++)
    if (strcmp(immu__svc_kv_methods[i].name, name) == 0)
      return immu__svc_kv_methods[i].handler;
  fail_msg("no handler %s", name);
  return NULL;
}

/* Runs |c| through method |name| (the call must end finished; the fake
 * runs a TRY_INLINE handler first as on the I/O loop, and again, as on a
 * worker, if it defers). With the real auth half the call goes through the
 * server's full method table, which must route it to our handler. */
static void run(fixture *fx, const char *name, immu_grpc_call *c) {
  if (c->auth[0] == '\0')
    fake_call_set_auth(c, fx->auth);
#ifdef IMMU_TEST_REAL_AUTH
  {
    void *harg = NULL;
    unsigned flags = 0;
    immu_grpc_handler h = table_handler_flags(fx->srv, name, &harg, &flags);
    assert_true(h == handler_of(name));
    fake_call_run(c, h, harg, flags);
  }
#else
  fake_call_run(c, handler_of(name), fx->srv, 0);
#endif
}

/* One request message (NULL: an empty message, e.g. google.protobuf.Empty)
 * through |name|; the caller frees the call. */
static immu_grpc_call *rpc(fixture *fx, const char *name,
                           const ProtobufCMessage *req) {
  immu_grpc_call *c = call_new(name);
  fake_call_add_pb(c, req);
  run(fx, name, c);
  return c;
}

static void expect_status(immu_grpc_call *c, int status, const char *substr) {
  if (c->status != status)
    fail_msg("%s: status %d (%s), want %d", c->path, c->status, c->message,
             status);
  if (substr != NULL && strstr(c->message, substr) == NULL)
    fail_msg("%s: message \"%s\" lacks \"%s\"", c->path, c->message, substr);
}

/* A unary call that must succeed with one reply; returns the reply
 * unpacked with |desc| (free with protobuf_c_message_free_unpacked) and,
 * if |raw| is not NULL, the call (whose sent[0] is the reply bytes). */
static void *rpc_ok(fixture *fx, const char *name, const ProtobufCMessage *req,
                    const ProtobufCMessageDescriptor *desc,
                    immu_grpc_call **raw) {
  immu_grpc_call *c = rpc(fx, name, req);
  ProtobufCMessage *m;
  expect_status(c, IMMU_GRPC_OK, NULL);
  assert_int_equal(c->nsent, 1);
  m = protobuf_c_message_unpack(desc, NULL, c->sent_len[0], c->sent[0]);
  if (m == NULL)
    fail_msg("%s: the reply does not decode as %s", name, desc->name);
  if (raw != NULL)
    *raw = c;
  else
    fake_call_free(c);
  return m;
}

/* A call that must fail with |status| and a message containing |substr|. */
static void rpc_fail(fixture *fx, const char *name, const ProtobufCMessage *req,
                     int status, const char *substr) {
  immu_grpc_call *c = rpc(fx, name, req);
  expect_status(c, status, substr);
  assert_int_equal(c->nsent, 0);
  fake_call_free(c);
}

/* ------------------------------------------------------------------ */
/* Request builders                                                    */
/* ------------------------------------------------------------------ */

/* Set of one or more "k=v" pairs (NULL-terminated), returns the header. */
static Immudb__Schema__TxHeader *set_kvs(fixture *fx, int no_wait, ...) {
  Immudb__Schema__SetRequest req = IMMUDB__SCHEMA__SET_REQUEST__INIT;
  Immudb__Schema__KeyValue kv[16], *pkv[16];
  va_list ap;
  const char *k;
  size_t n = 0;

  va_start(ap, no_wait);
  while ((k = va_arg(ap, const char *)) != NULL) {
    const char *v = va_arg(ap, const char *);
    immudb__schema__key_value__init(&kv[n]);
    kv[n].key = S(k);
    kv[n].value = S(v);
    pkv[n] = &kv[n];
    n++;
  }
  va_end(ap);
  req.n_kvs = n;
  req.kvs = pkv;
  req.nowait = no_wait;
  return rpc_ok(fx, "Set", &req.base, &immudb__schema__tx_header__descriptor,
                NULL);
}

static void set1(fixture *fx, const char *k, const char *v) {
  FREE(set_kvs(fx, 0, k, v, NULL));
}

static Immudb__Schema__Entry *get_req(fixture *fx, const char *k,
                                      uint64_t at_tx, int64_t at_rev) {
  Immudb__Schema__KeyRequest req = IMMUDB__SCHEMA__KEY_REQUEST__INIT;
  req.key = S(k);
  req.attx = at_tx;
  req.atrevision = at_rev;
  return rpc_ok(fx, "Get", &req.base, &immudb__schema__entry__descriptor, NULL);
}

static void assert_bin(ProtobufCBinaryData b, const char *want) {
  if (b.len != strlen(want) || memcmp(b.data, want, b.len) != 0)
    fail_msg("bytes \"%.*s\" != \"%s\"", (int)b.len, (const char *)b.data,
             want);
}

static void assert_bin_n(ProtobufCBinaryData b, const void *want, size_t n) {
  if (b.len != n || (n > 0 && memcmp(b.data, want, n) != 0))
    fail_msg("bytes differ (len %zu vs %zu)", b.len, n);
}

/* ------------------------------------------------------------------ */
/* immudb-node 1.1.1's schema: a wire walker                           */
/* ------------------------------------------------------------------ */

enum { WT_VARINT = 0, WT_I64 = 1, WT_LEN = 2, WT_I32 = 5 };

typedef struct mdef mdef;
typedef struct fdef {
  uint32_t num;
  int wt;
  const mdef *sub; /* WT_LEN message, or NULL */
  int d32;         /* bytes that must be exactly 32 (a digest) */
  int required;    /* must be present (digests that are never empty) */
} fdef;
struct mdef {
  const char *name;
  const fdef *f;
  size_t n;
  int allow_unknown; /* unknown fields OK (newer additions skipped) */
};

#define MDEF(name, arr, unk)                                                   \
  { name, arr, sizeof arr / sizeof arr[0], unk }

static const fdef f_txmd[] = {/* TxMetadata = the v1.0 header */
                              {1, WT_VARINT, NULL, 0, 0},
                              {2, WT_LEN, NULL, 1, 1},
                              {3, WT_VARINT, NULL, 0, 0},
                              {4, WT_VARINT, NULL, 0, 0},
                              {5, WT_LEN, NULL, 1, 1},
                              {6, WT_VARINT, NULL, 0, 0},
                              {7, WT_LEN, NULL, 1, 1}};
/* Version 0 headers: 8 and 9 must not be on the wire, so no unknowns. */
static const mdef m_txmd = MDEF("TxMetadata(header)", f_txmd, 0);
static const fdef f_txe[] = {{1, WT_LEN, NULL, 0, 1},
                             {2, WT_LEN, NULL, 1, 1},
                             {3, WT_VARINT, NULL, 0, 0},  /* vOff int64 */
                             {4, WT_VARINT, NULL, 0, 0}}; /* vLen int32 */
static const mdef m_txe = MDEF("TxEntry", f_txe, 0);
static const fdef f_tx[] = {{1, WT_LEN, &m_txmd, 0, 1},
                            {2, WT_LEN, &m_txe, 0, 0}};
static const mdef m_tx = MDEF("Tx", f_tx, 0);
static const fdef f_lp[] = {{1, WT_VARINT, NULL, 0, 0},
                            {2, WT_VARINT, NULL, 0, 0},
                            {3, WT_LEN, NULL, 1, 0}};
static const mdef m_lp = MDEF("LinearProof", f_lp, 0);
static const fdef f_dp[] = {
    {1, WT_LEN, &m_txmd, 0, 1}, {2, WT_LEN, &m_txmd, 0, 1},
    {3, WT_LEN, NULL, 1, 0},    {4, WT_LEN, NULL, 1, 0},
    {5, WT_LEN, NULL, 1, 1},    {6, WT_LEN, NULL, 1, 0},
    {7, WT_LEN, &m_lp, 0, 1}};
static const mdef m_dp = MDEF("DualProof", f_dp, 0); /* no LAP (8) */
static const fdef f_sig[] = {{1, WT_LEN, NULL, 0, 0}, {2, WT_LEN, NULL, 0, 0}};
static const mdef m_sig = MDEF("Signature", f_sig, 0);
static const fdef f_vtx[] = {{1, WT_LEN, &m_tx, 0, 1},
                             {2, WT_LEN, &m_dp, 0, 1},
                             {3, WT_LEN, &m_sig, 0, 0}};
static const mdef m_vtx = MDEF("VerifiableTx", f_vtx, 0);
static const fdef f_ref[] = {{1, WT_VARINT, NULL, 0, 0},
                             {2, WT_LEN, NULL, 0, 0},
                             {3, WT_VARINT, NULL, 0, 0}};
static const mdef m_ref = MDEF("Reference", f_ref, 1); /* +revision (5) */
static const fdef f_ent[] = {{1, WT_VARINT, NULL, 0, 0},
                             {2, WT_LEN, NULL, 0, 0},
                             {3, WT_LEN, NULL, 0, 0},
                             {4, WT_LEN, &m_ref, 0, 0}};
static const mdef m_ent = MDEF("Entry", f_ent, 1); /* +revision (7) */
static const fdef f_incl[] = {{1, WT_VARINT, NULL, 0, 0},
                              {2, WT_VARINT, NULL, 0, 0},
                              {3, WT_LEN, NULL, 1, 0}};
static const mdef m_incl = MDEF("InclusionProof", f_incl, 0);
static const fdef f_vent[] = {{1, WT_LEN, &m_ent, 0, 1},
                              {2, WT_LEN, &m_vtx, 0, 1},
                              {3, WT_LEN, &m_incl, 0, 1}};
static const mdef m_vent = MDEF("VerifiableEntry", f_vent, 0);
static const fdef f_state[] = {{1, WT_LEN, NULL, 0, 1},
                               {2, WT_VARINT, NULL, 0, 0},
                               {3, WT_LEN, NULL, 1, 1},
                               {4, WT_LEN, &m_sig, 0, 0}};
static const mdef m_state = MDEF("ImmutableState", f_state, 0);
static const fdef f_ents[] = {{1, WT_LEN, &m_ent, 0, 0}};
static const mdef m_ents = MDEF("Entries", f_ents, 0);
static const fdef f_zent[] = {{1, WT_LEN, NULL, 0, 0},
                              {2, WT_LEN, NULL, 0, 0},
                              {3, WT_LEN, &m_ent, 0, 0},
                              {4, WT_I64, NULL, 0, 0},
                              {5, WT_VARINT, NULL, 0, 0}};
static const mdef m_zent = MDEF("ZEntry", f_zent, 0);
static const fdef f_zents[] = {{1, WT_LEN, &m_zent, 0, 0}};
static const mdef m_zents = MDEF("ZEntries", f_zents, 0);
static const fdef f_txl[] = {{1, WT_LEN, &m_tx, 0, 0}};
static const mdef m_txl = MDEF("TxList", f_txl, 0);

static int rd_varint(const uint8_t **p, const uint8_t *end, uint64_t *v) {
  *v = 0;
  for (int shift = 0; shift < 64 && *p < end; shift += 7) {
    uint8_t b = *(*p)++;
    *v |= (uint64_t)(b & 0x7f) << shift;
    if (!(b & 0x80))
      return 0;
  }
  return -1;
}

/* Checks |p| against |m| as immudb-node 1.1.1 would decode it. */
static void wire_check(const mdef *m, const uint8_t *p, size_t n) {
  const uint8_t *end = p + n;
  int seen[32] = {0};

  while (p < end) {
    uint64_t key, num, len;
    int wt;
    const fdef *f = NULL;
    if (rd_varint(&p, end, &key) != 0)
      fail_msg("%s: bad tag", m->name);
    num = key >> 3;
    wt = (int)(key & 7);
    for (size_t i = 0; i < m->n; i++)
      if (m->f[i].num == num)
        f = &m->f[i];
    if (f == NULL && !m->allow_unknown)
      fail_msg("%s: field %" PRIu64 " is not in immudb-node 1.1.1's schema",
               m->name, num);
    if (f != NULL && f->wt != wt)
      fail_msg("%s: field %" PRIu64 " has wire type %d, 1.1.1 expects %d",
               m->name, num, wt, f->wt);
    if (num < 32)
      seen[num] = 1;
    switch (wt) {
    case WT_VARINT:
      if (rd_varint(&p, end, &len) != 0)
        fail_msg("%s: bad varint", m->name);
      break;
    case WT_I64:
      if (end - p < 8)
        fail_msg("%s: truncated", m->name);
      p += 8;
      break;
    case WT_I32:
      if (end - p < 4)
        fail_msg("%s: truncated", m->name);
      p += 4;
      break;
    case WT_LEN:
      if (rd_varint(&p, end, &len) != 0 || len > (uint64_t)(end - p))
        fail_msg("%s: bad length", m->name);
      if (f != NULL && f->d32 && len != 32)
        fail_msg("%s: digest field %" PRIu64 " has %" PRIu64 " bytes", m->name,
                 num, len);
      if (f != NULL && f->sub != NULL)
        wire_check(f->sub, p, (size_t)len);
      p += len;
      break;
    default:
      fail_msg("%s: wire type %d", m->name, wt);
    }
  }
  for (size_t i = 0; i < m->n; i++)
    if (m->f[i].required && !seen[m->f[i].num])
      fail_msg("%s: field %u missing", m->name, m->f[i].num);
}

/* ------------------------------------------------------------------ */
/* Client-side verification, as immudb-node 1.1.1                      */
/* ------------------------------------------------------------------ */

/* getAlh (legacy layout, spec 3.2/3.3) straight from the proto fields. */
static void node_alh(const Immudb__Schema__TxHeader *h, immu_digest *out) {
  uint8_t ib[84], ab[72];
  immu_digest inner;
  assert_non_null(h);
  assert_int_equal(h->prevalh.len, 32);
  assert_int_equal(h->eh.len, 32);
  assert_int_equal(h->blroot.len, 32);
  assert_int_equal(h->version, 0);
  assert_null(h->metadata);
  immu__put_u64(ib, (uint64_t)h->ts);
  immu__put_u32(ib + 8, (uint32_t)h->nentries);
  memcpy(ib + 12, h->eh.data, 32);
  immu__put_u64(ib + 44, h->bltxid);
  memcpy(ib + 52, h->blroot.data, 32);
  immu_sha256(ib, sizeof ib, &inner);
  immu__put_u64(ab, h->id);
  memcpy(ab + 8, h->prevalh.data, 32);
  memcpy(ab + 40, inner.b, 32);
  immu_sha256(ab, sizeof ab, out);
}

/* digestKeyValue: H(key || H(value)). */
static void node_digest(const uint8_t *k, size_t kn, const uint8_t *v,
                        size_t vn, immu_digest *out) {
  immu_digest hv;
  immu_buf parts[2];
  immu_sha256(v, vn, &hv);
  parts[0].ptr = k;
  parts[0].len = kn;
  parts[1].ptr = hv.b;
  parts[1].len = 32;
  immu_sha256v(parts, 2, out);
}

static void copy_digests(const ProtobufCBinaryData *v, size_t n,
                         immu_digest_list *out) {
  out->d = fake_xmalloc((n ? n : 1) * sizeof *out->d);
  out->n = n;
  for (size_t i = 0; i < n; i++) {
    assert_int_equal(v[i].len, 32);
    memcpy(out->d[i].b, v[i].data, 32);
  }
}

static void hdr_from(const Immudb__Schema__TxHeader *h, immu_tx_header *o) {
  memset(o, 0, sizeof *o);
  o->id = h->id;
  o->ts = h->ts;
  o->bl_tx_id = h->bltxid;
  o->nentries = (uint32_t)h->nentries;
  memcpy(o->prev_alh.b, h->prevalh.data, 32);
  memcpy(o->eh.b, h->eh.data, 32);
  memcpy(o->bl_root.b, h->blroot.data, 32);
}

/* verifyDualProof (spec 6.4 without the LAP checks, which never apply with
 * BlTxID = ID - 1; the core verifier runs them anyway). The Alh of each
 * header must be the one getAlh computes. */
static int node_verify_dual(const Immudb__Schema__DualProof *dp, uint64_t sid,
                            uint64_t tid, const immu_digest *salh,
                            const immu_digest *talh) {
  immu_dual_proof p;
  immu_digest a1, a2, c1, c2;
  int rc;

  memset(&p, 0, sizeof p);
  assert_non_null(dp->sourcetxheader);
  assert_non_null(dp->targettxheader);
  assert_non_null(dp->linearproof);
  assert_null(dp->linearadvanceproof); /* never needed: BlTxID = ID - 1 */
  hdr_from(dp->sourcetxheader, &p.source);
  hdr_from(dp->targettxheader, &p.target);
  /* getAlh (legacy layout) == the core's version-0 Alh */
  node_alh(dp->sourcetxheader, &a1);
  assert_int_equal(immu_tx_alh(&p.source, &c1), 0);
  assert_memory_equal(a1.b, c1.b, 32);
  node_alh(dp->targettxheader, &a2);
  assert_int_equal(immu_tx_alh(&p.target, &c2), 0);
  assert_memory_equal(a2.b, c2.b, 32);
  copy_digests(dp->inclusionproof, dp->n_inclusionproof, &p.inclusion);
  copy_digests(dp->consistencyproof, dp->n_consistencyproof, &p.consistency);
  copy_digests(dp->lastinclusionproof, dp->n_lastinclusionproof,
               &p.last_inclusion);
  assert_int_equal(dp->targetbltxalh.len, 32);
  memcpy(p.target_bl_tx_alh.b, dp->targetbltxalh.data, 32);
  p.linear.source_tx_id = dp->linearproof->sourcetxid;
  p.linear.target_tx_id = dp->linearproof->targettxid;
  copy_digests(dp->linearproof->terms, dp->linearproof->n_terms,
               &p.linear.terms);
  rc = immu_dual_proof_verify(&p, sid, tid, salh, talh);
  free(p.inclusion.d);
  free(p.consistency.d);
  free(p.last_inclusion.d);
  free(p.linear.terms.d);
  return rc;
}

/* The state signature of a verifiable reply / CurrentState, if any. */
static void check_sig(fixture *fx, const Immudb__Schema__Signature *sig,
                      uint64_t txid, const immu_digest *alh) {
  assert_non_null(sig);
  assert_int_equal(sig->publickey.len, IMMU_PUBKEY_LEN);
  assert_int_equal(
      immu_verifier_verify_state(fx->verifier, DBNAME, strlen(DBNAME), txid,
                                 alh, sig->signature.data, sig->signature.len),
      0);
}

/* verifiedSet / verifiedSetReference / verifiedZAdd: the tx must hold the
 * entry (store key |k|, stored value |v|); the htree is rebuilt from the
 * returned entries; the dual proof goes from the client's state (or the tx
 * itself when the state is empty) to the tx. Advances the state. */
static void node_verify_write(fixture *fx,
                              const Immudb__Schema__VerifiableTx *vt,
                              const uint8_t *k, size_t kn, const uint8_t *v,
                              size_t vn) {
  const Immudb__Schema__Tx *tx = vt->tx;
  immu_digest *d, root, want, alh, terms[IMMU_PROOF_MAX_TERMS];
  size_t leaf = SIZE_MAX, nterms = 0;
  uint64_t sid;
  immu_digest salh;

  assert_non_null(tx);
  assert_non_null(tx->header);
  assert_int_equal((size_t)tx->header->nentries, tx->n_entries);
  d = fake_xmalloc(tx->n_entries * sizeof *d);
  for (size_t i = 0; i < tx->n_entries; i++) {
    const Immudb__Schema__TxEntry *e = tx->entries[i];
    immu_buf parts[2] = {{e->key.data, e->key.len}, {e->hvalue.data, 32}};
    assert_int_equal(e->hvalue.len, 32);
    immu_sha256v(parts, 2, &d[i]);
    if (leaf == SIZE_MAX && e->key.len == kn && memcmp(e->key.data, k, kn) == 0)
      leaf = i;
  }
  if (leaf == SIZE_MAX)
    fail_msg("the tx does not hold the written key");
  assert_int_equal(immu_htree_root(d, tx->n_entries, &root), 0);
  assert_int_equal(immu_htree_proof(d, tx->n_entries, leaf, terms, &nterms), 0);
  node_digest(k, kn, v, vn, &want);
  assert_int_equal(
      immu_htree_verify(terms, nterms, leaf, tx->n_entries, &want, &root), 0);
  free(d);
  /* Node only logs an Eh mismatch; we require equality. */
  assert_memory_equal(root.b, tx->header->eh.data, 32);
  assert_memory_equal(root.b, vt->dualproof->targettxheader->eh.data, 32);
  assert_int_equal(vt->dualproof->targettxheader->id, tx->header->id);

  node_alh(tx->header, &alh);
  if (fx->st.txid == 0) { /* the tx is its own source */
    sid = tx->header->id;
    salh = alh;
  } else {
    sid = fx->st.txid;
    salh = fx->st.alh;
  }
  assert_int_equal(
      node_verify_dual(vt->dualproof, sid, tx->header->id, &salh, &alh), 0);
  check_sig(fx, vt->signature, tx->header->id, &alh);
  fx->st.txid = tx->header->id;
  fx->st.alh = alh;
}

/* verifiedGet: |key| is the requested user key. */
static void node_verify_get(fixture *fx,
                            const Immudb__Schema__VerifiableEntry *ve,
                            const char *key) {
  const Immudb__Schema__Entry *e = ve->entry;
  const Immudb__Schema__DualProof *dp = ve->verifiabletx->dualproof;
  const Immudb__Schema__InclusionProof *ip = ve->inclusionproof;
  size_t vcap = e->value.len + e->key.len + 16;
  uint8_t kb[1200], *vb = fake_xmalloc(vcap);
  size_t kn, vn;
  uint64_t vtx, sid, tid;
  immu_digest dig, eh, salh, talh, terms[IMMU_PROOF_MAX_TERMS];

  if (e->referencedby == NULL) {
    assert_bin(e->key, key);
    assert_int_equal(immu_enc_key(U8(key), strlen(key), kb, sizeof kb, &kn), 0);
    assert_int_equal(immu_enc_value(e->value.data, e->value.len, vb, vcap, &vn),
                     0);
    vtx = e->tx;
  } else {
    const Immudb__Schema__Reference *r = e->referencedby;
    assert_bin(r->key, key);
    assert_int_equal(immu_enc_key(r->key.data, r->key.len, kb, sizeof kb, &kn),
                     0);
    assert_int_equal(
        immu_enc_ref_value(e->key.data, e->key.len, r->attx, vb, vcap, &vn), 0);
    vtx = r->tx;
  }
  node_digest(kb, kn, vb, vn, &dig);
  free(vb);
  if (fx->st.txid <= vtx) {
    memcpy(eh.b, dp->targettxheader->eh.data, 32);
    sid = fx->st.txid;
    salh = fx->st.alh;
    tid = vtx;
    node_alh(dp->targettxheader, &talh);
  } else {
    memcpy(eh.b, dp->sourcetxheader->eh.data, 32);
    sid = vtx;
    node_alh(dp->sourcetxheader, &salh);
    tid = fx->st.txid;
    talh = fx->st.alh;
  }
  assert_true(ip->n_terms <= IMMU_PROOF_MAX_TERMS);
  for (size_t i = 0; i < ip->n_terms; i++) {
    assert_int_equal(ip->terms[i].len, 32);
    memcpy(terms[i].b, ip->terms[i].data, 32);
  }
  assert_int_equal(immu_htree_verify(terms, ip->n_terms, (uint64_t)ip->leaf,
                                     (uint64_t)ip->width, &dig, &eh),
                   0);
  if (fx->st.txid > 0)
    assert_int_equal(node_verify_dual(dp, sid, tid, &salh, &talh), 0);
  /* the server signs the target of its proof */
  {
    immu_digest a;
    node_alh(dp->targettxheader, &a);
    check_sig(fx, ve->verifiabletx->signature, dp->targettxheader->id, &a);
  }
  fx->st.txid = tid;
  fx->st.alh = talh;
}

/* verifiedTxById: only the dual proof. */
static void node_verify_tx(fixture *fx, const Immudb__Schema__VerifiableTx *vt,
                           uint64_t id) {
  const Immudb__Schema__DualProof *dp = vt->dualproof;
  uint64_t sid, tid;
  immu_digest salh, talh, a;

  assert_int_equal(vt->tx->header->id, id);
  if (fx->st.txid <= id) {
    sid = fx->st.txid;
    salh = fx->st.alh;
    tid = id;
    node_alh(dp->targettxheader, &talh);
  } else {
    sid = id;
    node_alh(dp->sourcetxheader, &salh);
    tid = fx->st.txid;
    talh = fx->st.alh;
  }
  if (fx->st.txid > 0)
    assert_int_equal(node_verify_dual(dp, sid, tid, &salh, &talh), 0);
  node_alh(dp->targettxheader, &a);
  check_sig(fx, vt->signature, dp->targettxheader->id, &a);
  fx->st.txid = tid;
  fx->st.alh = talh;
}

/* ------------------------------------------------------------------ */
/* Verifiable calls as a client makes them                             */
/* ------------------------------------------------------------------ */

static void verified_set(fixture *fx, const char *k, const char *v) {
  Immudb__Schema__VerifiableSetRequest req =
      IMMUDB__SCHEMA__VERIFIABLE_SET_REQUEST__INIT;
  Immudb__Schema__SetRequest sr = IMMUDB__SCHEMA__SET_REQUEST__INIT;
  Immudb__Schema__KeyValue kv = IMMUDB__SCHEMA__KEY_VALUE__INIT, *pkv = &kv;
  Immudb__Schema__VerifiableTx *vt;
  immu_grpc_call *c;
  uint8_t kb[1200], *vb = fake_xmalloc(strlen(v) + 1);
  size_t kn, vn;

  kv.key = S(k);
  kv.value = S(v);
  sr.n_kvs = 1;
  sr.kvs = &pkv;
  req.setrequest = &sr;
  req.provesincetx = fx->st.txid;
  vt = rpc_ok(fx, "VerifiableSet", &req.base,
              &immudb__schema__verifiable_tx__descriptor, &c);
  wire_check(&m_vtx, c->sent[0], c->sent_len[0]);
  fake_call_free(c);
  assert_int_equal(vt->tx->header->nentries, 1);
  assert_int_equal(immu_enc_key(U8(k), strlen(k), kb, sizeof kb, &kn), 0);
  assert_int_equal(immu_enc_value(U8(v), strlen(v), vb, strlen(v) + 1, &vn), 0);
  node_verify_write(fx, vt, kb, kn, vb, vn);
  free(vb);
  FREE(vt);
}

static Immudb__Schema__Entry *verified_get(fixture *fx, const char *k,
                                           uint64_t at_tx) {
  Immudb__Schema__VerifiableGetRequest req =
      IMMUDB__SCHEMA__VERIFIABLE_GET_REQUEST__INIT;
  Immudb__Schema__KeyRequest kr = IMMUDB__SCHEMA__KEY_REQUEST__INIT;
  Immudb__Schema__VerifiableEntry *ve;
  Immudb__Schema__Entry *e;
  immu_grpc_call *c;

  kr.key = S(k);
  kr.attx = at_tx;
  req.keyrequest = &kr;
  req.provesincetx = fx->st.txid;
  ve = rpc_ok(fx, "VerifiableGet", &req.base,
              &immudb__schema__verifiable_entry__descriptor, &c);
  wire_check(&m_vent, c->sent[0], c->sent_len[0]);
  fake_call_free(c);
  node_verify_get(fx, ve, k);
  e = ve->entry;
  ve->entry = NULL; /* keep it */
  FREE(ve);
  return e;
}

/* ------------------------------------------------------------------ */
/* Tests: plain KV                                                     */
/* ------------------------------------------------------------------ */

static void test_set_get(void **state) {
  fixture *fx = *state;
  Immudb__Schema__TxHeader *h;
  Immudb__Schema__Entry *e;
  immu_grpc_call *c;

  h = set_kvs(fx, 0, "k1", "v1", "k2", "", NULL);
  assert_int_equal(h->id, 1);
  assert_int_equal(h->nentries, 2);
  assert_int_equal(h->bltxid, 0);
  assert_int_equal(h->version, 0);
  assert_null(h->metadata);
  assert_int_equal(h->prevalh.len, 32);
  assert_memory_equal(h->prevalh.data, immu_empty_digest.b, 32);
  assert_int_equal(h->blroot.len, 32);
  assert_memory_equal(h->blroot.data, immu_zero_digest.b, 32);
  FREE(h);

  e = get_req(fx, "k1", 0, 0);
  assert_int_equal(e->tx, 1);
  assert_bin(e->key, "k1");
  assert_bin(e->value, "v1");
  assert_int_equal(e->revision, 1);
  assert_null(e->referencedby);
  assert_null(e->metadata);
  FREE(e);
  e = get_req(fx, "k2", 0, 0); /* empty value */
  assert_int_equal(e->value.len, 0);
  FREE(e);

  h = set_kvs(fx, 1, "k1", "v1b", NULL); /* noWait */
  assert_int_equal(h->id, 2);
  assert_int_equal(h->bltxid, 1);
  FREE(h);
  e = get_req(fx, "k1", 0, 0);
  assert_bin(e->value, "v1b");
  assert_int_equal(e->revision, 2);
  FREE(e);
  e = get_req(fx, "k1", 1, 0); /* atTx */
  assert_bin(e->value, "v1");
  FREE(e);
  e = get_req(fx, "k1", 0, 1); /* atRevision */
  assert_bin(e->value, "v1");
  FREE(e);
  e = get_req(fx, "k1", 0, -1); /* the previous one */
  assert_bin(e->value, "v1");
  FREE(e);

  /* the reply bytes of Set / Get as immudb-node 1.1.1 reads them */
  {
    Immudb__Schema__KeyRequest kr = IMMUDB__SCHEMA__KEY_REQUEST__INIT;
    kr.key = S("k1");
    e = rpc_ok(fx, "Get", &kr.base, &immudb__schema__entry__descriptor, &c);
    wire_check(&m_ent, c->sent[0], c->sent_len[0]);
    fake_call_free(c);
    FREE(e);
  }

  /* errors */
  {
    Immudb__Schema__KeyRequest kr = IMMUDB__SCHEMA__KEY_REQUEST__INIT;
    kr.key = S("nope");
    rpc_fail(fx, "Get", &kr.base, IMMU_GRPC_UNKNOWN, "key not found");
    kr.key = S("");
    rpc_fail(fx, "Get", &kr.base, IMMU_GRPC_INVALID_ARGUMENT, "empty key");
    kr.key = S("k1");
    kr.sincetx = 2; /* the last tx: waits for the index, then reads */
    FREE(rpc_ok(fx, "Get", &kr.base, &immudb__schema__entry__descriptor, NULL));
    kr.nowait = 1;
    FREE(rpc_ok(fx, "Get", &kr.base, &immudb__schema__entry__descriptor, NULL));
    kr.nowait = 0;
    kr.sincetx = 99;
    rpc_fail(fx, "Get", &kr.base, IMMU_GRPC_INVALID_ARGUMENT,
             "illegal arguments");
    kr.sincetx = 0;
    kr.attx = 99;
    rpc_fail(fx, "Get", &kr.base, IMMU_GRPC_UNKNOWN, "tx not found");
    kr.attx = 0;
    kr.atrevision = 7;
    rpc_fail(fx, "Get", &kr.base, IMMU_GRPC_INVALID_ARGUMENT,
             "invalid key revision number");
  }
  {
    Immudb__Schema__SetRequest sr = IMMUDB__SCHEMA__SET_REQUEST__INIT;
    Immudb__Schema__KeyValue kv[2], *pkv[2] = {&kv[0], &kv[1]};
    Immudb__Schema__KVMetadata md = IMMUDB__SCHEMA__KVMETADATA__INIT;
    Immudb__Schema__Precondition pc = IMMUDB__SCHEMA__PRECONDITION__INIT,
                                 *ppc = &pc;
    immudb__schema__key_value__init(&kv[0]);
    immudb__schema__key_value__init(&kv[1]);
    rpc_fail(fx, "Set", &sr.base, IMMU_GRPC_INVALID_ARGUMENT,
             "illegal arguments"); /* no KVs */
    kv[0].key = S("");
    kv[0].value = S("x");
    sr.kvs = pkv;
    sr.n_kvs = 1;
    rpc_fail(fx, "Set", &sr.base, IMMU_GRPC_INVALID_ARGUMENT, "empty key");
    kv[0].key = S("dup");
    kv[1].key = S("dup");
    sr.n_kvs = 2;
    rpc_fail(fx, "Set", &sr.base, IMMU_GRPC_INVALID_ARGUMENT, "duplicated key");
    sr.n_kvs = 1;
    kv[0].metadata = &md; /* empty metadata: accepted */
    FREE(rpc_ok(fx, "Set", &sr.base, &immudb__schema__tx_header__descriptor,
                NULL));
    md.deleted = 1;
    rpc_fail(fx, "Set", &sr.base, IMMU_GRPC_UNIMPLEMENTED,
             "metadata is unsupported");
    md.deleted = 0;
    md.nonindexable = 1;
    rpc_fail(fx, "Set", &sr.base, IMMU_GRPC_UNIMPLEMENTED,
             "metadata is unsupported");
    kv[0].metadata = NULL;
    sr.preconditions = &ppc;
    sr.n_preconditions = 1;
    rpc_fail(fx, "Set", &sr.base, IMMU_GRPC_UNIMPLEMENTED, "preconditions");
  }
  /* a request that does not decode */
  c = call_new("Get");
  fake_call_add_msg(c, "\x0a\xff", 2);
  run(fx, "Get", c);
  expect_status(c, IMMU_GRPC_INVALID_ARGUMENT, "malformed");
  fake_call_free(c);
}

/* Get tries to answer on the I/O loop (IMMU_GRPC_METHOD_TRY_INLINE) and
 * moves to a worker exactly when memory cannot answer: both paths give the
 * same replies and errors. */
static void sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

static immu_store *fx_store(fixture *fx) {
  immu_grpc_call *c = call_new("Get");
  immu_srv_ctx ctx;
  immu_store *st;
  fake_call_set_auth(c, fx->auth);
  assert_int_equal(immu_srv_begin(fx->srv, c, IMMU_PERM_READ, 1, &ctx), 0);
  st = immu_db_store(ctx.db);
  immu_srv_end(&ctx); /* the fixture keeps the database open */
  fake_call_free(c);
  return st;
}

static immu_grpc_call *get_call(fixture *fx, const char *k, uint64_t at_tx,
                                int64_t at_rev, uint64_t since_tx) {
  Immudb__Schema__KeyRequest req = IMMUDB__SCHEMA__KEY_REQUEST__INIT;
  req.key = S(k);
  req.attx = at_tx;
  req.atrevision = at_rev;
  req.sincetx = since_tx;
  return rpc(fx, "Get", &req.base);
}

static void expect_get(fixture *fx, const char *k, uint64_t at_tx,
                       int64_t at_rev, const void *want, size_t wlen,
                       int ndefers) {
  immu_grpc_call *c = get_call(fx, k, at_tx, at_rev, 0);
  Immudb__Schema__Entry *e;
  expect_status(c, IMMU_GRPC_OK, NULL);
  assert_int_equal(c->nsent, 1);
  e = (Immudb__Schema__Entry *)protobuf_c_message_unpack(
      &immudb__schema__entry__descriptor, NULL, c->sent_len[0], c->sent[0]);
  assert_non_null(e);
  assert_bin_n(e->value, want, wlen);
  if (c->ndefers != ndefers)
    fail_msg("Get %s (atTx %" PRIu64 ", atRevision %" PRId64 "): %d defers, "
             "expected %d", k, at_tx, at_rev, c->ndefers, ndefers);
  FREE(e);
  fake_call_free(c);
}

static void test_get_inline(void **state) {
  fixture *fx = *state;
  static uint8_t big[4096];
  immu_grpc_call *c;

#ifndef IMMU_TEST_REAL_AUTH
  skip(); /* the flags come from the server's method table */
#endif
  memset(big, 'b', sizeof big);
  set1(fx, "small", "v1");  /* tx 1 */
  set1(fx, "small", "v2");  /* tx 2 */
  {
    Immudb__Schema__SetRequest sr = IMMUDB__SCHEMA__SET_REQUEST__INIT;
    Immudb__Schema__KeyValue kv = IMMUDB__SCHEMA__KEY_VALUE__INIT, *pkv = &kv;
    kv.key = S("big");
    kv.value = B(big, sizeof big); /* past the index's inline limit */
    sr.kvs = &pkv;
    sr.n_kvs = 1;
    FREE(rpc_ok(fx, "Set", &sr.base, &immudb__schema__tx_header__descriptor,
                NULL)); /* tx 3 */
  }
  {
    Immudb__Schema__ReferenceRequest rr =
        IMMUDB__SCHEMA__REFERENCE_REQUEST__INIT;
    rr.key = S("ref");
    rr.referencedkey = S("small");
    FREE(rpc_ok(fx, "SetReference", &rr.base,
                &immudb__schema__tx_header__descriptor, NULL)); /* tx 4 */
  }

  /* answered on the loop: latest inline values, and errors found there */
  expect_get(fx, "small", 0, 0, "v2", 2, 0);
  c = get_call(fx, "absent", 0, 0, 0);
  expect_status(c, IMMU_GRPC_UNKNOWN, "key not found");
  assert_int_equal(c->ndefers, 0);
  fake_call_free(c);
  c = get_call(fx, "small", 0, 0, 99);
  expect_status(c, IMMU_GRPC_INVALID_ARGUMENT, "illegal arguments");
  assert_int_equal(c->ndefers, 0);
  fake_call_free(c);
  c = get_call(fx, "", 0, 0, 0);
  expect_status(c, IMMU_GRPC_INVALID_ARGUMENT, "empty key");
  assert_int_equal(c->ndefers, 0);
  fake_call_free(c);

  /* moved to a worker: what needs the log or another lookup */
  expect_get(fx, "small", 1, 0, "v1", 2, 1);  /* atTx */
  expect_get(fx, "small", 0, 1, "v1", 2, 1);  /* atRevision */
  expect_get(fx, "small", 0, -1, "v1", 2, 1); /* the previous one */
  expect_get(fx, "big", 0, 0, big, sizeof big, 1);
  expect_get(fx, "ref", 0, 0, "v2", 2, 1);
  c = get_call(fx, "small", 99, 0, 0);
  expect_status(c, IMMU_GRPC_UNKNOWN, "tx not found");
  assert_int_equal(c->ndefers, 1);
  fake_call_free(c);
}

/* Set and VerifiableSet queue their tx on the I/O loop (TRY_INLINE) and go
 * to a worker only for a large request; errors found on the loop are
 * answered there. */
static immu_grpc_call *set_call(fixture *fx, const char *name, const char *k,
                                const uint8_t *v, size_t vlen) {
  Immudb__Schema__SetRequest sr = IMMUDB__SCHEMA__SET_REQUEST__INIT;
  Immudb__Schema__VerifiableSetRequest vr =
      IMMUDB__SCHEMA__VERIFIABLE_SET_REQUEST__INIT;
  Immudb__Schema__KeyValue kv = IMMUDB__SCHEMA__KEY_VALUE__INIT, *pkv = &kv;
  kv.key = S(k);
  kv.value = B(v, vlen);
  sr.kvs = &pkv;
  sr.n_kvs = 1;
  vr.setrequest = &sr;
  return rpc(fx, name,
             strcmp(name, "Set") == 0 ? &sr.base : &vr.base);
}

static void expect_set(fixture *fx, const char *name, const char *k,
                       const uint8_t *v, size_t vlen, uint64_t tx,
                       int ndefers) {
  immu_grpc_call *c = set_call(fx, name, k, v, vlen);
  ProtobufCMessage *m;
  Immudb__Schema__TxHeader *h;
  expect_status(c, IMMU_GRPC_OK, NULL);
  assert_int_equal(c->nsent, 1);
  if (strcmp(name, "Set") == 0) {
    m = protobuf_c_message_unpack(&immudb__schema__tx_header__descriptor,
                                  NULL, c->sent_len[0], c->sent[0]);
    h = (Immudb__Schema__TxHeader *)m;
  } else {
    m = protobuf_c_message_unpack(&immudb__schema__verifiable_tx__descriptor,
                                  NULL, c->sent_len[0], c->sent[0]);
    assert_non_null(m);
    h = ((Immudb__Schema__VerifiableTx *)m)->tx->header;
  }
  assert_non_null(m);
  assert_int_equal(h->id, tx);
  if (c->ndefers != ndefers)
    fail_msg("%s %s (%zu bytes): %d defers, expected %d", name, k, vlen,
             c->ndefers, ndefers);
  protobuf_c_message_free_unpacked(m, NULL);
  fake_call_free(c);
}

static void test_set_inline(void **state) {
  fixture *fx = *state;
  static uint8_t big[100 * 1024];
  immu_grpc_call *c;

#ifndef IMMU_TEST_REAL_AUTH
  skip(); /* the flags come from the server's method table */
#endif
  memset(big, 'q', sizeof big);
  expect_set(fx, "Set", "s1", U8("v1"), 2, 1, 0);
  expect_set(fx, "VerifiableSet", "s2", U8("v2"), 2, 2, 0);
  /* past the inline limit: moved to a worker before anything is done */
  expect_set(fx, "Set", "big", big, sizeof big, 3, 1);
  expect_set(fx, "VerifiableSet", "big2", big, sizeof big, 4, 1);
  /* refused on the loop, and nothing committed */
  c = set_call(fx, "Set", "", U8("x"), 1);
  expect_status(c, IMMU_GRPC_INVALID_ARGUMENT, "empty");
  assert_int_equal(c->ndefers, 0);
  fake_call_free(c);
  expect_set(fx, "Set", "s3", U8("v3"), 2, 5, 0);

  /* A Set may be answered before the index covers it (aset_committed);
   * a Get then waits on a worker. Here the index is up to date first. */
  {
    immu_store *st = fx_store(fx);
    assert_int_equal(immu_store_wait_indexed(st, 5, 20000), 0);
  }
  expect_get(fx, "s1", 0, 0, "v1", 2, 0);
  expect_get(fx, "s2", 0, 0, "v2", 2, 0);
  expect_get(fx, "big", 0, 0, big, sizeof big, 1);
  expect_get(fx, "big2", 0, 0, big, sizeof big, 1);
}

static void test_getall_scan_count_history(void **state) {
  fixture *fx = *state;
  Immudb__Schema__Entries *es;
  Immudb__Schema__EntryCount *cnt;
  immu_grpc_call *c;

  set1(fx, "a1", "x1");
  set1(fx, "a2", "x2");
  set1(fx, "b1", "y1");
  set1(fx, "a1", "x1b");

  {
    Immudb__Schema__KeyListRequest req = IMMUDB__SCHEMA__KEY_LIST_REQUEST__INIT;
    ProtobufCBinaryData keys[3] = {S("a1"), S("missing"), S("b1")};
    req.keys = keys;
    req.n_keys = 3;
    es = rpc_ok(fx, "GetAll", &req.base, &immudb__schema__entries__descriptor,
                &c);
    wire_check(&m_ents, c->sent[0], c->sent_len[0]);
    fake_call_free(c);
    assert_int_equal(es->n_entries, 2);
    assert_bin(es->entries[0]->key, "a1");
    assert_bin(es->entries[0]->value, "x1b");
    assert_bin(es->entries[1]->key, "b1");
    FREE(es);
    req.sincetx = 100;
    rpc_fail(fx, "GetAll", &req.base, IMMU_GRPC_INVALID_ARGUMENT,
             "illegal arguments");
  }
  {
    Immudb__Schema__ScanRequest req = IMMUDB__SCHEMA__SCAN_REQUEST__INIT;
    req.prefix = S("a");
    es = rpc_ok(fx, "Scan", &req.base, &immudb__schema__entries__descriptor,
                NULL);
    assert_int_equal(es->n_entries, 2);
    assert_bin(es->entries[0]->key, "a1");
    assert_bin(es->entries[0]->value, "x1b");
    assert_bin(es->entries[1]->key, "a2");
    FREE(es);
    req.desc = 1;
    req.limit = 1;
    es = rpc_ok(fx, "Scan", &req.base, &immudb__schema__entries__descriptor,
                NULL);
    assert_int_equal(es->n_entries, 1);
    assert_bin(es->entries[0]->key, "a2");
    FREE(es);
    req.limit = 100000;
    rpc_fail(fx, "Scan", &req.base, IMMU_GRPC_INVALID_ARGUMENT,
             "result size limit exceeded");
    req.limit = 0;
    req.prefix = S("zz");
    es = rpc_ok(fx, "Scan", &req.base, &immudb__schema__entries__descriptor,
                NULL);
    assert_int_equal(es->n_entries, 0);
    FREE(es);
  }
  {
    Immudb__Schema__KeyPrefix req = IMMUDB__SCHEMA__KEY_PREFIX__INIT;
    req.prefix = S("a");
    cnt = rpc_ok(fx, "Count", &req.base,
                 &immudb__schema__entry_count__descriptor, NULL);
    assert_int_equal(cnt->count, 2);
    FREE(cnt);
    cnt = rpc_ok(fx, "CountAll", NULL, &immudb__schema__entry_count__descriptor,
                 NULL);
    assert_int_equal(cnt->count, 3);
    FREE(cnt);
  }
  {
    Immudb__Schema__HistoryRequest req = IMMUDB__SCHEMA__HISTORY_REQUEST__INIT;
    req.key = S("a1");
    es = rpc_ok(fx, "History", &req.base, &immudb__schema__entries__descriptor,
                NULL);
    assert_int_equal(es->n_entries, 2);
    assert_bin(es->entries[0]->value, "x1");
    assert_int_equal(es->entries[0]->tx, 1);
    assert_int_equal(es->entries[0]->revision, 1);
    assert_bin(es->entries[1]->value, "x1b");
    assert_int_equal(es->entries[1]->revision, 2);
    FREE(es);
    req.desc = 1;
    req.limit = 1;
    es = rpc_ok(fx, "History", &req.base, &immudb__schema__entries__descriptor,
                NULL);
    assert_int_equal(es->n_entries, 1);
    assert_bin(es->entries[0]->value, "x1b");
    FREE(es);
    req.offset = 5;
    es = rpc_ok(fx, "History", &req.base, &immudb__schema__entries__descriptor,
                NULL);
    assert_int_equal(es->n_entries, 0);
    FREE(es);
    req.offset = 0;
    req.limit = -1;
    rpc_fail(fx, "History", &req.base, IMMU_GRPC_INVALID_ARGUMENT,
             "illegal arguments");
    req.limit = 0;
    req.key = S("nope");
    rpc_fail(fx, "History", &req.base, IMMU_GRPC_UNKNOWN, "key not found");
    req.key = S("");
    rpc_fail(fx, "History", &req.base, IMMU_GRPC_INVALID_ARGUMENT, "empty key");
  }
}

static void test_refs_zsets_execall(void **state) {
  fixture *fx = *state;
  Immudb__Schema__TxHeader *h;
  Immudb__Schema__Entry *e;
  Immudb__Schema__ZEntries *zs;
  immu_grpc_call *c;

  set1(fx, "key1", "val1"); /* tx 1 */
  {
    Immudb__Schema__ReferenceRequest rr =
        IMMUDB__SCHEMA__REFERENCE_REQUEST__INIT;
    rr.key = S("ref1");
    rr.referencedkey = S("key1");
    h = rpc_ok(fx, "SetReference", &rr.base,
               &immudb__schema__tx_header__descriptor, NULL);
    assert_int_equal(h->id, 2);
    FREE(h);
    e = get_req(fx, "ref1", 0, 0);
    assert_bin(e->key, "key1");
    assert_bin(e->value, "val1");
    assert_int_equal(e->tx, 1);
    assert_non_null(e->referencedby);
    assert_int_equal(e->referencedby->tx, 2);
    assert_bin(e->referencedby->key, "ref1");
    assert_int_equal(e->referencedby->attx, 0);
    FREE(e);
    /* errors */
    rr.referencedkey = S("missing");
    rpc_fail(fx, "SetReference", &rr.base, IMMU_GRPC_UNKNOWN,
             "referenced key not found");
    rr.referencedkey = S("ref1");
    rr.key = S("ref2");
    rpc_fail(fx, "SetReference", &rr.base, IMMU_GRPC_UNKNOWN,
             "referenced key cannot be a reference");
    rr.key = S("key1");
    rr.referencedkey = S("key1");
    rpc_fail(fx, "SetReference", &rr.base, IMMU_GRPC_UNKNOWN,
             "final key cannot be converted into a reference");
    rr.key = S("ref3");
    rr.attx = 1; /* without boundRef */
    rpc_fail(fx, "SetReference", &rr.base, IMMU_GRPC_INVALID_ARGUMENT,
             "illegal arguments");
  }
  {
    Immudb__Schema__ZAddRequest zr = IMMUDB__SCHEMA__ZADD_REQUEST__INIT;
    Immudb__Schema__ZScanRequest q = IMMUDB__SCHEMA__ZSCAN_REQUEST__INIT;
    Immudb__Schema__Score mn = IMMUDB__SCHEMA__SCORE__INIT;
    zr.set = S("set1");
    zr.key = S("key1");
    zr.score = 2.5;
    FREE(rpc_ok(fx, "ZAdd", &zr.base, &immudb__schema__tx_header__descriptor,
                NULL));
    set1(fx, "key2", "val2");
    zr.key = S("key2");
    zr.score = -1;
    zr.attx = 4;
    zr.boundref = 1;
    FREE(rpc_ok(fx, "ZAdd", &zr.base, &immudb__schema__tx_header__descriptor,
                NULL));
    q.set = S("set1");
    zs =
        rpc_ok(fx, "ZScan", &q.base, &immudb__schema__zentries__descriptor, &c);
    wire_check(&m_zents, c->sent[0], c->sent_len[0]);
    fake_call_free(c);
    assert_int_equal(zs->n_entries, 2);
    assert_bin(zs->entries[0]->key, "key2");
    assert_true(zs->entries[0]->score == -1.0);
    assert_int_equal(zs->entries[0]->attx, 4);
    assert_bin(zs->entries[0]->entry->value, "val2");
    assert_bin(zs->entries[1]->key, "key1");
    assert_bin(zs->entries[1]->set, "set1");
    assert_true(zs->entries[1]->score == 2.5);
    FREE(zs);
    mn.score = 0;
    q.minscore = &mn;
    zs = rpc_ok(fx, "ZScan", &q.base, &immudb__schema__zentries__descriptor,
                NULL);
    assert_int_equal(zs->n_entries, 1);
    assert_bin(zs->entries[0]->key, "key1");
    FREE(zs);
    q.set = S("");
    rpc_fail(fx, "ZScan", &q.base, IMMU_GRPC_INVALID_ARGUMENT,
             "illegal arguments");
    zr.key = S("missing");
    zr.attx = 0;
    zr.boundref = 0;
    rpc_fail(fx, "ZAdd", &zr.base, IMMU_GRPC_UNKNOWN,
             "referenced key not found");
    zr.key = S("key1");
    zr.score = NAN;
    rpc_fail(fx, "ZAdd", &zr.base, IMMU_GRPC_INVALID_ARGUMENT,
             "illegal arguments");
  }
  {
    /* ExecAll: a KV, a ZAdd and a Ref bound to the tx itself */
    Immudb__Schema__ExecAllRequest req = IMMUDB__SCHEMA__EXEC_ALL_REQUEST__INIT;
    Immudb__Schema__Op op[3], *pop[3] = {&op[0], &op[1], &op[2]};
    Immudb__Schema__KeyValue kv = IMMUDB__SCHEMA__KEY_VALUE__INIT;
    Immudb__Schema__ZAddRequest zr = IMMUDB__SCHEMA__ZADD_REQUEST__INIT;
    Immudb__Schema__ReferenceRequest rr =
        IMMUDB__SCHEMA__REFERENCE_REQUEST__INIT;
    uint64_t id;
    for (int i = 0; i < 3; i++)
      immudb__schema__op__init(&op[i]);
    kv.key = S("ek");
    kv.value = S("ev");
    op[0].operation_case = IMMUDB__SCHEMA__OP__OPERATION_KV;
    op[0].kv = &kv;
    zr.set = S("eset");
    zr.key = S("ek");
    zr.score = 1;
    op[1].operation_case = IMMUDB__SCHEMA__OP__OPERATION_Z_ADD;
    op[1].zadd = &zr;
    rr.key = S("eref");
    rr.referencedkey = S("ek");
    rr.boundref = 1;
    op[2].operation_case = IMMUDB__SCHEMA__OP__OPERATION_REF;
    op[2].ref = &rr;
    req.operations = pop;
    req.n_operations = 3;
    h = rpc_ok(fx, "ExecAll", &req.base, &immudb__schema__tx_header__descriptor,
               NULL);
    assert_int_equal(h->nentries, 3);
    id = h->id;
    FREE(h);
    e = get_req(fx, "eref", 0, 0);
    assert_bin(e->value, "ev");
    assert_int_equal(e->referencedby->attx, id);
    FREE(e);
    /* errors */
    op[1].operation_case = IMMUDB__SCHEMA__OP__OPERATION__NOT_SET;
    rpc_fail(fx, "ExecAll", &req.base, IMMU_GRPC_INVALID_ARGUMENT,
             "no kind set");
    op[1].operation_case = IMMUDB__SCHEMA__OP__OPERATION_Z_ADD;
    rr.referencedkey = S("missing");
    rr.boundref = 0;
    rpc_fail(fx, "ExecAll", &req.base, IMMU_GRPC_UNKNOWN,
             "referenced key not found");
    {
      Immudb__Schema__KVMetadata md = IMMUDB__SCHEMA__KVMETADATA__INIT;
      Immudb__Schema__Precondition pc = IMMUDB__SCHEMA__PRECONDITION__INIT,
                                   *ppc = &pc;
      md.deleted = 1;
      kv.metadata = &md;
      rpc_fail(fx, "ExecAll", &req.base, IMMU_GRPC_UNIMPLEMENTED,
               "metadata is unsupported");
      kv.metadata = NULL;
      req.preconditions = &ppc;
      req.n_preconditions = 1;
      rpc_fail(fx, "ExecAll", &req.base, IMMU_GRPC_UNIMPLEMENTED,
               "preconditions");
      req.preconditions = NULL;
      req.n_preconditions = 0;
      rr.preconditions = &ppc;
      rr.n_preconditions = 1;
      rpc_fail(fx, "ExecAll", &req.base, IMMU_GRPC_UNIMPLEMENTED,
               "preconditions");
      rpc_fail(fx, "SetReference", &rr.base, IMMU_GRPC_UNIMPLEMENTED,
               "preconditions");
      rr.preconditions = NULL;
      rr.n_preconditions = 0;
    }
    req.n_operations = 0;
    rpc_fail(fx, "ExecAll", &req.base, IMMU_GRPC_INVALID_ARGUMENT,
             "illegal arguments");
  }
}

static void test_tx_by_id_scan(void **state) {
  fixture *fx = *state;
  Immudb__Schema__Tx *tx;
  Immudb__Schema__TxList *tl;
  Immudb__Schema__TxRequest req = IMMUDB__SCHEMA__TX_REQUEST__INIT;
  immu_grpc_call *c;
  immu_digest hv, alh;

  FREE(set_kvs(fx, 0, "t1", "v1", "t2", "value2", NULL));
  set1(fx, "t3", "v3");
  req.tx = 1;
  tx = rpc_ok(fx, "TxById", &req.base, &immudb__schema__tx__descriptor, &c);
  wire_check(&m_tx, c->sent[0], c->sent_len[0]);
  fake_call_free(c);
  assert_int_equal(tx->header->id, 1);
  assert_int_equal(tx->n_entries, 2);
  assert_bin_n(tx->entries[1]->key, "\x00t2", 3);
  immu_sha256("\x00value2", 7, &hv);
  assert_bin_n(tx->entries[1]->hvalue, hv.b, 32);
  assert_int_equal(tx->entries[1]->vlen, 7);
  assert_null(tx->entries[1]->metadata);
  assert_int_equal(tx->entries[1]->value.len, 0);
  node_alh(tx->header, &alh); /* the legacy Alh of a v0 header */
  FREE(tx);

  req.tx = 0;
  rpc_fail(fx, "TxById", &req.base, IMMU_GRPC_INVALID_ARGUMENT, NULL);
  req.tx = 99;
  rpc_fail(fx, "TxById", &req.base, IMMU_GRPC_UNKNOWN, "tx not found");

  {
    Immudb__Schema__TxScanRequest sr = IMMUDB__SCHEMA__TX_SCAN_REQUEST__INIT;
    sr.initialtx = 1;
    tl = rpc_ok(fx, "TxScan", &sr.base, &immudb__schema__tx_list__descriptor,
                &c);
    wire_check(&m_txl, c->sent[0], c->sent_len[0]);
    fake_call_free(c);
    assert_int_equal(tl->n_txs, 2);
    assert_int_equal(tl->txs[0]->header->id, 1);
    assert_int_equal(tl->txs[1]->header->id, 2);
    /* the chain: tx 2's prevAlh is tx 1's Alh */
    assert_memory_equal(tl->txs[1]->header->prevalh.data, alh.b, 32);
    FREE(tl);
    sr.desc = 1;
    sr.initialtx = 0;
    sr.limit = 1;
    tl = rpc_ok(fx, "TxScan", &sr.base, &immudb__schema__tx_list__descriptor,
                NULL);
    assert_int_equal(tl->n_txs, 1);
    assert_int_equal(tl->txs[0]->header->id, 2);
    FREE(tl);
    sr.limit = 100000;
    rpc_fail(fx, "TxScan", &sr.base, IMMU_GRPC_INVALID_ARGUMENT,
             "result size limit");
  }
}

static void test_current_state(void **state) {
  fixture *fx = *state;
  Immudb__Schema__ImmutableState *st;
  immu_grpc_call *c;
  immu_digest alh;

  st = rpc_ok(fx, "CurrentState", NULL,
              &immudb__schema__immutable_state__descriptor, &c);
  wire_check(&m_state, c->sent[0], c->sent_len[0]);
  fake_call_free(c);
  assert_string_equal(st->db, DBNAME);
  assert_int_equal(st->txid, 0);
  assert_bin_n(st->txhash, immu_empty_digest.b, 32);
  check_sig(fx, st->signature, 0, &immu_empty_digest);
  FREE(st);

  set1(fx, "s", "1");
  set1(fx, "s", "2");
  {
    Immudb__Schema__TxRequest req = IMMUDB__SCHEMA__TX_REQUEST__INIT;
    Immudb__Schema__Tx *tx;
    req.tx = 2;
    tx = rpc_ok(fx, "TxById", &req.base, &immudb__schema__tx__descriptor, NULL);
    node_alh(tx->header, &alh);
    FREE(tx);
  }
  st = rpc_ok(fx, "CurrentState", NULL,
              &immudb__schema__immutable_state__descriptor, NULL);
  assert_int_equal(st->txid, 2);
  assert_bin_n(st->txhash, alh.b, 32);
  check_sig(fx, st->signature, 2, &alh);
  FREE(st);

#ifndef IMMU_TEST_REAL_AUTH
  { /* without a signing key the signature is absent */
    immu_signer *sg = fx->stub.signer;
    fx->stub.signer = NULL;
    st = rpc_ok(fx, "CurrentState", NULL,
                &immudb__schema__immutable_state__descriptor, NULL);
    assert_null(st->signature);
    FREE(st);
    {
      Immudb__Schema__VerifiableTxRequest r =
          IMMUDB__SCHEMA__VERIFIABLE_TX_REQUEST__INIT;
      Immudb__Schema__VerifiableTx *vt;
      immu_grpc_call *c2;
      r.tx = 2;
      vt = rpc_ok(fx, "VerifiableTxById", &r.base,
                  &immudb__schema__verifiable_tx__descriptor, &c2);
      assert_null(vt->signature);
      wire_check(&m_vtx, c2->sent[0], c2->sent_len[0]);
      fake_call_free(c2);
      FREE(vt);
    }
    fx->stub.signer = sg;
  }
#endif
}

/* ------------------------------------------------------------------ */
/* Tests: verifiable calls                                             */
/* ------------------------------------------------------------------ */

static void test_verified_set_get(void **state) {
  fixture *fx = *state;
  Immudb__Schema__Entry *e;
  char k[32], v[32];

  /* empty local state: the first tx is its own source (DualProof(X, X)) */
  verified_set(fx, "vk0", "vv0");
  assert_int_equal(fx->st.txid, 1);
  for (int i = 1; i < 12; i++) { /* every proof shape of spec 6.4 */
    snprintf(k, sizeof k, "vk%d", i);
    snprintf(v, sizeof v, "vv%d", i);
    if (i % 3 == 0)
      set1(fx, k, v); /* unverified writes in between */
    else
      verified_set(fx, k, v);
  }
  e = verified_get(fx, "vk1", 0);
  assert_bin(e->value, "vv1");
  FREE(e);

  /* a client whose state is older than the entry (state <= vTx): a new
   * client first learns tx 2 */
  {
    cstate saved = fx->st;
    Immudb__Schema__VerifiableTxRequest r =
        IMMUDB__SCHEMA__VERIFIABLE_TX_REQUEST__INIT;
    Immudb__Schema__VerifiableTx *vt;
    fx->st.txid = 0;
    fx->st.alh = immu_empty_digest;
    r.tx = 2;
    vt = rpc_ok(fx, "VerifiableTxById", &r.base,
                &immudb__schema__verifiable_tx__descriptor, NULL);
    node_verify_tx(fx, vt, 2);
    FREE(vt);
    assert_int_equal(fx->st.txid, 2);
    set1(fx, "late", "lv");
    e = verified_get(fx, "late", 0); /* source 2 -> target the new tx */
    assert_bin(e->value, "lv");
    FREE(e);
    assert_true(fx->st.txid > saved.txid);
  }
  /* a client whose state is newer than the entry (roles swapped) */
  e = verified_get(fx, "vk1", 0);
  assert_int_equal(e->tx, 2);
  FREE(e);
  /* atTx */
  set1(fx, "vk1", "newer");
  e = verified_get(fx, "vk1", 2);
  assert_bin(e->value, "vv1");
  FREE(e);
  e = verified_get(fx, "vk1", 0);
  assert_bin(e->value, "newer");
  FREE(e);

  /* errors */
  {
    Immudb__Schema__VerifiableGetRequest req =
        IMMUDB__SCHEMA__VERIFIABLE_GET_REQUEST__INIT;
    Immudb__Schema__KeyRequest kr = IMMUDB__SCHEMA__KEY_REQUEST__INIT;
    Immudb__Schema__VerifiableSetRequest sreq =
        IMMUDB__SCHEMA__VERIFIABLE_SET_REQUEST__INIT;
    rpc_fail(fx, "VerifiableGet", &req.base, IMMU_GRPC_INVALID_ARGUMENT,
             "empty key");
    req.keyrequest = &kr;
    kr.key = S("nope");
    rpc_fail(fx, "VerifiableGet", &req.base, IMMU_GRPC_UNKNOWN,
             "key not found");
    kr.key = S("vk1");
    req.provesincetx = 1000;
    rpc_fail(fx, "VerifiableGet", &req.base, IMMU_GRPC_INVALID_ARGUMENT,
             "illegal state");
    rpc_fail(fx, "VerifiableSet", &sreq.base, IMMU_GRPC_INVALID_ARGUMENT,
             "illegal arguments");
  }
  {
    Immudb__Schema__VerifiableSetRequest req =
        IMMUDB__SCHEMA__VERIFIABLE_SET_REQUEST__INIT;
    Immudb__Schema__SetRequest sr = IMMUDB__SCHEMA__SET_REQUEST__INIT;
    Immudb__Schema__KeyValue kv = IMMUDB__SCHEMA__KEY_VALUE__INIT, *pkv = &kv;
    uint64_t before = fx->st.txid;
    kv.key = S("x");
    kv.value = S("y");
    sr.kvs = &pkv;
    sr.n_kvs = 1;
    req.setrequest = &sr;
    req.provesincetx = 1000;
    rpc_fail(fx, "VerifiableSet", &req.base, IMMU_GRPC_INVALID_ARGUMENT,
             "illegal state");
    /* nothing was written */
    {
      Immudb__Schema__ImmutableState *st =
          rpc_ok(fx, "CurrentState", NULL,
                 &immudb__schema__immutable_state__descriptor, NULL);
      assert_int_equal(st->txid, before);
      FREE(st);
    }
  }
}

static void test_verified_tx_ref_zadd(void **state) {
  fixture *fx = *state;
  Immudb__Schema__VerifiableTx *vt;
  Immudb__Schema__Entry *e;
  immu_grpc_call *c;
  uint8_t kb[1200], vb[1200];
  size_t kn, vn;

  for (int i = 0; i < 6; i++) {
    char k[16];
    snprintf(k, sizeof k, "tk%d", i);
    set1(fx, k, "v");
  }
  /* VerifiableTxById from an empty state, then forwards and backwards */
  for (uint64_t id = 1; id <= 6; id++) {
    Immudb__Schema__VerifiableTxRequest r =
        IMMUDB__SCHEMA__VERIFIABLE_TX_REQUEST__INIT;
    r.tx = id;
    r.provesincetx = fx->st.txid;
    vt = rpc_ok(fx, "VerifiableTxById", &r.base,
                &immudb__schema__verifiable_tx__descriptor, &c);
    wire_check(&m_vtx, c->sent[0], c->sent_len[0]);
    fake_call_free(c);
    node_verify_tx(fx, vt, id);
    FREE(vt);
  }
  {
    Immudb__Schema__VerifiableTxRequest r =
        IMMUDB__SCHEMA__VERIFIABLE_TX_REQUEST__INIT;
    r.tx = 3; /* older than the state: source = tx 3, target = state */
    r.provesincetx = fx->st.txid;
    vt = rpc_ok(fx, "VerifiableTxById", &r.base,
                &immudb__schema__verifiable_tx__descriptor, NULL);
    assert_int_equal(vt->dualproof->sourcetxheader->id, 3);
    assert_int_equal(vt->dualproof->targettxheader->id, 6);
    node_verify_tx(fx, vt, 3);
    FREE(vt);
    r.tx = 77;
    rpc_fail(fx, "VerifiableTxById", &r.base, IMMU_GRPC_UNKNOWN,
             "tx not found");
  }

  /* verifiedSetReference, unbound and bound */
  for (int bound = 0; bound <= 1; bound++) {
    Immudb__Schema__VerifiableReferenceRequest req =
        IMMUDB__SCHEMA__VERIFIABLE_REFERENCE_REQUEST__INIT;
    Immudb__Schema__ReferenceRequest rr =
        IMMUDB__SCHEMA__REFERENCE_REQUEST__INIT;
    const char *ref = bound ? "bref" : "uref";
    rr.key = S(ref);
    rr.referencedkey = S("tk2");
    rr.attx = bound ? 3 : 0;
    rr.boundref = bound;
    req.referencerequest = &rr;
    req.provesincetx = fx->st.txid;
    vt = rpc_ok(fx, "VerifiableSetReference", &req.base,
                &immudb__schema__verifiable_tx__descriptor, &c);
    wire_check(&m_vtx, c->sent[0], c->sent_len[0]);
    fake_call_free(c);
    assert_int_equal(immu_enc_key(U8(ref), strlen(ref), kb, sizeof kb, &kn), 0);
    assert_int_equal(
        immu_enc_ref_value(U8("tk2"), 3, rr.attx, vb, sizeof vb, &vn), 0);
    node_verify_write(fx, vt, kb, kn, vb, vn);
    FREE(vt);
    /* and verifiedGet through the reference (the reference entry is
     * proven) */
    e = verified_get(fx, ref, 0);
    assert_bin(e->key, "tk2");
    assert_int_equal(e->tx, 3); /* the referenced value's tx */
    assert_int_equal(e->referencedby->tx, fx->st.txid);
    assert_int_equal(e->referencedby->attx, rr.attx);
    FREE(e);
  }
  {
    Immudb__Schema__VerifiableReferenceRequest req =
        IMMUDB__SCHEMA__VERIFIABLE_REFERENCE_REQUEST__INIT;
    rpc_fail(fx, "VerifiableSetReference", &req.base,
             IMMU_GRPC_INVALID_ARGUMENT, "illegal arguments");
  }

  /* verifiedZAdd, unbound and bound */
  for (int bound = 0; bound <= 1; bound++) {
    Immudb__Schema__VerifiableZAddRequest req =
        IMMUDB__SCHEMA__VERIFIABLE_ZADD_REQUEST__INIT;
    Immudb__Schema__ZAddRequest zr = IMMUDB__SCHEMA__ZADD_REQUEST__INIT;
    zr.set = S("zs");
    zr.key = S("tk1");
    zr.score = bound ? -2.0 : 1.5;
    zr.attx = bound ? 2 : 0;
    zr.boundref = bound;
    req.zaddrequest = &zr;
    req.provesincetx = fx->st.txid;
    vt = rpc_ok(fx, "VerifiableZAdd", &req.base,
                &immudb__schema__verifiable_tx__descriptor, &c);
    wire_check(&m_vtx, c->sent[0], c->sent_len[0]);
    fake_call_free(c);
    assert_int_equal(immu_enc_zadd_key(U8("zs"), 2, zr.score, U8("tk1"), 3,
                                       zr.attx, kb, sizeof kb, &kn),
                     0);
    node_verify_write(fx, vt, kb, kn, U8(""), 0);
    FREE(vt);
  }
  {
    Immudb__Schema__VerifiableZAddRequest req =
        IMMUDB__SCHEMA__VERIFIABLE_ZADD_REQUEST__INIT;
    Immudb__Schema__ZAddRequest zr = IMMUDB__SCHEMA__ZADD_REQUEST__INIT;
    rpc_fail(fx, "VerifiableZAdd", &req.base, IMMU_GRPC_INVALID_ARGUMENT,
             "illegal arguments");
    zr.set = S("zs");
    zr.key = S("missing");
    req.zaddrequest = &zr;
    rpc_fail(fx, "VerifiableZAdd", &req.base, IMMU_GRPC_UNKNOWN,
             "referenced key not found");
  }
}

/* A tampered reply must not verify: the verifier above is not vacuous. */
static void test_tamper_rejected(void **state) {
  fixture *fx = *state;
  Immudb__Schema__VerifiableTxRequest r =
      IMMUDB__SCHEMA__VERIFIABLE_TX_REQUEST__INIT;
  Immudb__Schema__VerifiableTx *vt;
  immu_digest salh, talh;

  for (int i = 0; i < 5; i++)
    set1(fx, "tt", "v");
  r.tx = 5;
  r.provesincetx = 2;
  vt = rpc_ok(fx, "VerifiableTxById", &r.base,
              &immudb__schema__verifiable_tx__descriptor, NULL);
  node_alh(vt->dualproof->sourcetxheader, &salh);
  node_alh(vt->dualproof->targettxheader, &talh);
  assert_int_equal(node_verify_dual(vt->dualproof, 2, 5, &salh, &talh), 0);
  vt->dualproof->linearproof->terms[0].data[3] ^= 1;
  assert_int_not_equal(node_verify_dual(vt->dualproof, 2, 5, &salh, &talh), 0);
  vt->dualproof->linearproof->terms[0].data[3] ^= 1;
  assert_int_equal(node_verify_dual(vt->dualproof, 2, 5, &salh, &talh), 0);
  /* a modified target header: its own Alh no longer chains */
  vt->dualproof->targettxheader->eh.data[0] ^= 1;
  node_alh(vt->dualproof->targettxheader, &talh);
  assert_int_not_equal(node_verify_dual(vt->dualproof, 2, 5, &salh, &talh), 0);
  vt->dualproof->targettxheader->eh.data[0] ^= 1;
  /* a consistency term */
  assert_true(vt->dualproof->n_consistencyproof > 0);
  node_alh(vt->dualproof->targettxheader, &talh);
  vt->dualproof->consistencyproof[0].data[31] ^= 0x80;
  assert_int_not_equal(node_verify_dual(vt->dualproof, 2, 5, &salh, &talh), 0);
  FREE(vt);
}

static void test_delete(void **state) {
  fixture *fx = *state;
  Immudb__Schema__DeleteKeysRequest req =
      IMMUDB__SCHEMA__DELETE_KEYS_REQUEST__INIT;
  ProtobufCBinaryData k = S("a");
  set1(fx, "a", "b");
  req.keys = &k;
  req.n_keys = 1;
  rpc_fail(fx, "Delete", &req.base, IMMU_GRPC_UNIMPLEMENTED,
           "delete is not supported");
  FREE(get_req(fx, "a", 0, 0)); /* still there */
}

/* Every data RPC checks its permission (immudb-api.md 3). */
static void test_permissions(void **state) {
  fixture *fx = *state;
  static const char *reads[] = {"Get",
                                "Scan",
                                "Count",
                                "CountAll",
                                "History",
                                "TxById",
                                "TxScan",
                                "ZScan",
                                "CurrentState",
                                "VerifiableGet",
                                "VerifiableTxById",
                                "streamGet",
                                "streamScan",
                                "streamZScan",
                                "streamHistory",
                                "streamVerifiableGet"};
  static const char *writes[] = {"Set",
                                 "GetAll",
                                 "ExecAll",
                                 "SetReference",
                                 "ZAdd",
                                 "VerifiableSet",
                                 "VerifiableSetReference",
                                 "VerifiableZAdd",
                                 "Delete",
                                 "streamSet",
                                 "streamVerifiableSet",
                                 "streamExecAll"};
  /* moving whole txs (backup, restore) needs admin on the database */
  static const char *admins[] = {"exportTx", "replicateTx"};
  immu_grpc_call *c;

  set1(fx, "p", "q");
  /* every method of the table is covered here */
  assert_int_equal(immu__svc_kv_nmethods, sizeof reads / sizeof *reads +
                                              sizeof writes / sizeof *writes +
                                              sizeof admins / sizeof *admins);
  set_perm(fx, IMMU_PERM_READWRITE);
  for (size_t i = 0; i < sizeof admins / sizeof *admins; i++) {
    c = rpc(fx, admins[i], NULL);
    expect_status(c, IMMU_GRPC_PERMISSION_DENIED, NULL);
    assert_int_equal(c->nsent, 0);
    fake_call_free(c);
  }
  set_perm(fx, IMMU_PERM_NONE);
  for (size_t i = 0; i < sizeof reads / sizeof *reads; i++) {
    c = rpc(fx, reads[i], NULL);
    expect_status(c, DENIED_NONE, NULL);
    fake_call_free(c);
  }
  set_perm(fx, IMMU_PERM_READ);
  for (size_t i = 0; i < sizeof writes / sizeof *writes; i++) {
    c = rpc(fx, writes[i], NULL);
    expect_status(c, IMMU_GRPC_PERMISSION_DENIED, NULL);
    assert_int_equal(c->nsent, 0);
    fake_call_free(c);
  }
  /* reads pass the check (an empty request then fails or succeeds on its
   * own terms, never with PERMISSION_DENIED) */
  for (size_t i = 0; i < sizeof reads / sizeof *reads; i++) {
    c = rpc(fx, reads[i], NULL);
    assert_int_not_equal(c->status, IMMU_GRPC_PERMISSION_DENIED);
    fake_call_free(c);
  }
  set_perm(fx, IMMU_PERM_READWRITE);
  set1(fx, "p", "r");
#ifndef IMMU_TEST_REAL_AUTH
  /* systemdb is read-only from outside, even for the sysadmin */
  set_perm(fx, IMMU_PERM_SYSADMIN);
  snprintf(fx->stub.db_name, sizeof fx->stub.db_name, "systemdb");
  for (size_t i = 0; i < sizeof writes / sizeof *writes; i++) {
    if (strcmp(writes[i], "GetAll") == 0)
      continue; /* a read that needs readwrite */
    c = rpc(fx, writes[i], NULL);
    expect_status(c, IMMU_GRPC_PERMISSION_DENIED, "read-only");
    fake_call_free(c);
  }
  FREE(get_req(fx, "p", 0, 0));
  snprintf(fx->stub.db_name, sizeof fx->stub.db_name, DBNAME);
#else
  /* systemdb is read-only from outside, even for the sysadmin */
  {
    Immudb__Schema__Database d = IMMUDB__SCHEMA__DATABASE__INIT;
    Immudb__Schema__UseDatabaseReply *ur;
    set_perm(fx, IMMU_PERM_SYSADMIN);
    d.databasename = (char *)"systemdb";
    ur = admin_rpc(fx, "UseDatabase", &d.base,
                   &immudb__schema__use_database_reply__descriptor);
    snprintf(fx->auth, sizeof fx->auth, "Bearer %s", ur->token);
    FREE(ur);
    for (size_t i = 0; i < sizeof writes / sizeof *writes; i++) {
      c = rpc(fx, writes[i], NULL);
      expect_status(c, IMMU_GRPC_PERMISSION_DENIED, "read-only");
      fake_call_free(c);
    }
    set_perm(fx, IMMU_PERM_SYSADMIN);
  }
#endif
}

/* Index waits end with the call (deadline / cancel). */
static void *cancel_later(void *arg) {
  immu_grpc_call *c = arg;
  struct timespec ts = {0, 150 * 1000000L};
  nanosleep(&ts, NULL);
  c->cancelled = 1;
  return NULL;
}

static void test_wait_cancelled(void **state) {
  fixture *fx = *state;
  immu_grpc_call *c = call_new("Get");
  immu_srv_ctx ctx;
  pthread_t th;
  struct timespec t0, t1;
  double secs;

  set1(fx, "w", "1");
  fake_call_add_msg(c, "", 0);
  fake_call_set_auth(c, fx->auth);
  assert_int_equal(immu_srv_begin(fx->srv, c, IMMU_PERM_READ, 1, &ctx), 0);
  /* the index has tx 1; tx 1 is there at once */
  assert_int_equal(immu__svc_wait_indexed(&ctx, 1), 0);
  assert_false(c->finished);
  /* a tx that will never come: the wait ends when the call is cancelled */
  clock_gettime(CLOCK_MONOTONIC, &t0);
  assert_int_equal(pthread_create(&th, NULL, cancel_later, c), 0);
  assert_int_not_equal(immu__svc_wait_indexed(&ctx, 1000), 0);
  pthread_join(th, NULL);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  secs = (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
  assert_true(secs < 5.0);
  expect_status(c, IMMU_GRPC_DEADLINE_EXCEEDED, "index");
  immu_srv_end(&ctx);
  fake_call_free(c);
}

/* Set and VerifiableSet complete on engine threads (detached calls):
 * many at once from several threads must each finish exactly once (the
 * fake transport dies on a second finish), get distinct txs, and - without
 * noWait - be answered only once the index covers their tx, so a Get with
 * noWait sees the value at once. Failures are recorded, not asserted, in
 * the threads (cmocka is not thread-safe). */
#define ASYNC_THREADS 8
#define ASYNC_CALLS 40

typedef struct async_arg {
  fixture *fx;
  int t;
  uint64_t ids[ASYNC_CALLS];
  char err[1200];
} async_arg;

static void *async_main(void *p) {
  async_arg *a = p;
  for (int i = 0; i < ASYNC_CALLS && a->err[0] == '\0'; i++) {
    char k[32], v[32];
    Immudb__Schema__SetRequest sr = IMMUDB__SCHEMA__SET_REQUEST__INIT;
    Immudb__Schema__VerifiableSetRequest vr =
        IMMUDB__SCHEMA__VERIFIABLE_SET_REQUEST__INIT;
    Immudb__Schema__KeyValue kv = IMMUDB__SCHEMA__KEY_VALUE__INIT, *pkv = &kv;
    Immudb__Schema__KeyRequest kr = IMMUDB__SCHEMA__KEY_REQUEST__INIT;
    int verifiable = i % 2;
    immu_grpc_call *c;
    snprintf(k, sizeof k, "async-%d-%d", a->t, i);
    snprintf(v, sizeof v, "value-%d-%d", a->t, i);
    kv.key = S(k);
    kv.value = S(v);
    sr.n_kvs = 1;
    sr.kvs = &pkv;
    vr.setrequest = &sr;
    c = rpc(a->fx, verifiable ? "VerifiableSet" : "Set",
            verifiable ? &vr.base : &sr.base);
    if (c->status != IMMU_GRPC_OK || c->nsent != 1) {
      snprintf(a->err, sizeof a->err, "%s %s: status %d (%s)",
               verifiable ? "VerifiableSet" : "Set", k, c->status,
               c->message);
    } else if (verifiable) {
      Immudb__Schema__VerifiableTx *vt =
          (Immudb__Schema__VerifiableTx *)protobuf_c_message_unpack(
              &immudb__schema__verifiable_tx__descriptor, NULL,
              c->sent_len[0], c->sent[0]);
      if (vt == NULL || vt->tx == NULL || vt->tx->header == NULL ||
          vt->dualproof == NULL)
        snprintf(a->err, sizeof a->err, "%s: bad VerifiableTx", k);
      else
        a->ids[i] = vt->tx->header->id;
      if (vt != NULL)
        protobuf_c_message_free_unpacked(&vt->base, NULL);
    } else {
      Immudb__Schema__TxHeader *h =
          (Immudb__Schema__TxHeader *)protobuf_c_message_unpack(
              &immudb__schema__tx_header__descriptor, NULL, c->sent_len[0],
              c->sent[0]);
      if (h == NULL)
        snprintf(a->err, sizeof a->err, "%s: bad TxHeader", k);
      else
        a->ids[i] = h->id;
      if (h != NULL)
        protobuf_c_message_free_unpacked(&h->base, NULL);
    }
    fake_call_free(c);
    if (a->err[0] != '\0')
      break;
    /* the reply came after the index covered the tx */
    kr.key = S(k);
    kr.nowait = 1;
    c = rpc(a->fx, "Get", &kr.base);
    if (c->status != IMMU_GRPC_OK || c->nsent != 1) {
      snprintf(a->err, sizeof a->err, "Get %s with noWait after its Set: "
               "status %d (%s)", k, c->status, c->message);
    } else {
      Immudb__Schema__Entry *e = (Immudb__Schema__Entry *)
          protobuf_c_message_unpack(&immudb__schema__entry__descriptor, NULL,
                                    c->sent_len[0], c->sent[0]);
      if (e == NULL || e->tx != a->ids[i] || e->value.len != strlen(v) ||
          memcmp(e->value.data, v, e->value.len) != 0)
        snprintf(a->err, sizeof a->err, "Get %s: wrong entry", k);
      if (e != NULL)
        protobuf_c_message_free_unpacked(&e->base, NULL);
    }
    fake_call_free(c);
  }
  return NULL;
}

static int cmp_u64(const void *x, const void *y) {
  uint64_t a = *(const uint64_t *)x, b = *(const uint64_t *)y;
  return a < b ? -1 : a > b;
}

static void test_async_sets(void **state) {
  fixture *fx = *state;
  static async_arg args[ASYNC_THREADS];
  pthread_t th[ASYNC_THREADS];
  uint64_t all[ASYNC_THREADS * ASYNC_CALLS];
  size_t n = 0;

  g_fx = fx;
  set1(fx, "first", "1"); /* tx 1 */
  for (int t = 0; t < ASYNC_THREADS; t++) {
    memset(&args[t], 0, sizeof args[t]);
    args[t].fx = fx;
    args[t].t = t;
    assert_int_equal(pthread_create(&th[t], NULL, async_main, &args[t]), 0);
  }
  for (int t = 0; t < ASYNC_THREADS; t++)
    pthread_join(th[t], NULL);
  for (int t = 0; t < ASYNC_THREADS; t++) {
    if (args[t].err[0] != '\0')
      fail_msg("thread %d: %s", t, args[t].err);
    for (int i = 0; i < ASYNC_CALLS; i++)
      all[n++] = args[t].ids[i];
  }
  /* every call got its own tx: exactly txs 2 .. 1 + n */
  qsort(all, n, sizeof all[0], cmp_u64);
  for (size_t i = 0; i < n; i++)
    assert_int_equal(all[i], i + 2);
}

/* One call run on its own thread, so the test can see that it has not
 * been answered yet. */
typedef struct bg_call {
  fixture *fx;
  const char *name;
  const ProtobufCMessage *req;
  immu_grpc_call *c;
  _Atomic int done;
} bg_call;

static void *bg_call_main(void *p) {
  bg_call *b = p;
  b->c = rpc(b->fx, b->name, b->req);
  atomic_store(&b->done, 1);
  return NULL;
}

/* Runs |name| while the index of |st| is held back: the call must still
 * be waiting after 200 ms, and succeed once the index is released.
 * Returns the call (the caller frees it). */
static immu_grpc_call *held_call(fixture *fx, immu_store *st, const char *name,
                                 const ProtobufCMessage *req) {
  bg_call b = {fx, name, req, NULL, 0};
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, bg_call_main, &b), 0);
  sleep_ms(200);
  assert_false(atomic_load(&b.done));
  immu__store_index_hold(st, 0);
  pthread_join(th, NULL);
  expect_status(b.c, IMMU_GRPC_OK, NULL);
  return b.c;
}

typedef struct acount {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int n, failed;
} acount;

static void acount_done(void *arg, int rc, const immu_tx_header *h,
                        const immu_digest *alh) {
  acount *a = arg;
  (void)h;
  (void)alh;
  pthread_mutex_lock(&a->mu);
  a->n++;
  a->failed += rc != 0;
  pthread_cond_broadcast(&a->cv);
  pthread_mutex_unlock(&a->mu);
}

/* A Set is answered once committed while the index is close behind: with
 * the index held back its reply names a tx the index does not cover yet;
 * a Get with noWait then waits for that tx (immudb would have indexed it
 * before answering the Set) instead of missing the key; and with the
 * index IMMU_STORE_ACK_LAG txs behind, a Set waits for it again. */
static void test_set_acked_before_index(void **state) {
  fixture *fx = *state;
  immu_store *st = fx_store(fx);
  Immudb__Schema__TxHeader *h;
  Immudb__Schema__KeyRequest kr = IMMUDB__SCHEMA__KEY_REQUEST__INIT;
  Immudb__Schema__SetRequest sr = IMMUDB__SCHEMA__SET_REQUEST__INIT;
  Immudb__Schema__KeyValue kv = IMMUDB__SCHEMA__KEY_VALUE__INIT, *pkv = &kv;
  immu_grpc_call *c;
  uint64_t tx;

  set1(fx, "first", "1");
  assert_int_equal(immu_store_wait_indexed(st, immu_store_last_id(st), 20000),
                   0);
  immu__store_index_hold(st, 1);
  h = set_kvs(fx, 0, "acked", "v1", NULL);
  tx = h->id;
  FREE(h);
  assert_true(immu_store_indexed_id(st) < tx);
  assert_int_equal(immu_store_acked_id(st), tx);

  kr.key = S("acked");
  kr.nowait = 1;
  c = held_call(fx, st, "Get", &kr.base);
  {
    Immudb__Schema__Entry *e =
        (Immudb__Schema__Entry *)protobuf_c_message_unpack(
            &immudb__schema__entry__descriptor, NULL, c->sent_len[0],
            c->sent[0]);
    assert_non_null(e);
    assert_int_equal(e->tx, tx);
    assert_bin(e->value, "v1");
    FREE(e);
  }
  fake_call_free(c);

  /* The index IMMU_STORE_ACK_LAG txs behind: the next Set waits for it. */
  assert_int_equal(immu_store_wait_indexed(st, tx, 20000), 0);
  immu__store_index_hold(st, 1);
  acount ac = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0};
  immu_store_entry e = {U8("filler"), 6, NULL, 0, U8("x"), 1};
  for (int i = 0; i < IMMU_STORE_ACK_LAG; i++)
    assert_int_equal(immu_store_commit_async(st, &e, 1, acount_done, &ac), 0);
  pthread_mutex_lock(&ac.mu);
  while (ac.n < IMMU_STORE_ACK_LAG)
    pthread_cond_wait(&ac.cv, &ac.mu);
  pthread_mutex_unlock(&ac.mu);
  assert_int_equal(ac.failed, 0);
  kv.key = S("late");
  kv.value = S("v2");
  sr.n_kvs = 1;
  sr.kvs = &pkv;
  fake_call_free(held_call(fx, st, "Set", &sr.base));
  assert_int_equal(immu_store_acked_id(st), tx); /* it waited: no ack */
}

/* ------------------------------------------------------------------ */
/* Streams                                                             */
/* ------------------------------------------------------------------ */

typedef struct bytes {
  uint8_t *p;
  size_t n, cap;
} bytes;

static void bytes_put(bytes *b, const void *p, size_t n) {
  if (b->n + n > b->cap) {
    b->cap = (b->n + n) * 2;
    b->p = fake_xrealloc(b->p, b->cap);
  }
  if (n > 0)
    memcpy(b->p + b->n, p, n);
  b->n += n;
}

/* Appends one framed message: u64 BE length || payload. */
static void frame(bytes *b, const void *p, size_t n) {
  uint8_t h[8];
  immu__put_u64(h, (uint64_t)n);
  bytes_put(b, h, 8);
  bytes_put(b, p, n);
}

static void frame_u64(bytes *b, uint64_t v) {
  uint8_t h[8];
  immu__put_u64(h, v);
  frame(b, h, 8);
}

/* Cuts |b| into Chunk messages of the sizes in |cuts| (cycled), the first
 * one with metadata, and pushes them as the call's request messages. */
static void push_chunks(immu_grpc_call *c, const bytes *b, const size_t *cuts,
                        size_t ncuts) {
  size_t off = 0, i = 0;
  while (off < b->n) {
    Immudb__Schema__Chunk ch = IMMUDB__SCHEMA__CHUNK__INIT;
    Immudb__Schema__Chunk__MetadataEntry
        me = IMMUDB__SCHEMA__CHUNK__METADATA_ENTRY__INIT,
        *pme = &me;
    size_t n = cuts[i++ % ncuts];
    if (n > b->n - off)
      n = b->n - off;
    ch.content = B(b->p + off, n);
    if (off == 0) {
      me.key = (char *)"client";
      me.value = S("test");
      ch.metadata = &pme;
      ch.n_metadata = 1;
    }
    fake_call_add_pb(c, &ch.base);
    off += n;
  }
}

typedef struct smsgs {
  uint8_t **p;
  size_t *n;
  size_t count;
} smsgs;

static void smsgs_free(smsgs *m) {
  for (size_t i = 0; i < m->count; i++)
    free(m->p[i]);
  free(m->p);
  free(m->n);
  memset(m, 0, sizeof *m);
}

/* Decodes the Chunks a server-streaming call sent, checking immudb's
 * framing: each message starts a chunk whose content begins with the
 * 8-byte length; no chunk holds bytes of two messages; chunks carry at
 * most 64 KiB; no metadata. */
static void decode_stream(immu_grpc_call *c, smsgs *out) {
  size_t i = 0;
  memset(out, 0, sizeof *out);
  while (i < c->nsent) {
    Immudb__Schema__Chunk *ch =
        (Immudb__Schema__Chunk *)protobuf_c_message_unpack(
            &immudb__schema__chunk__descriptor, NULL, c->sent_len[i],
            c->sent[i]);
    uint64_t len;
    size_t got;
    uint8_t *m;
    assert_non_null(ch);
    assert_int_equal(ch->n_metadata, 0);
    assert_true(ch->content.len >= 8);
    assert_true(ch->content.len <= IMMU_SVC_CHUNK_SIZE);
    len = immu__get_u64(ch->content.data);
    assert_true(len <= 64u * 1024u * 1024u);
    m = fake_xmalloc((size_t)len);
    got = ch->content.len - 8;
    assert_true(got <= len);
    memcpy(m, ch->content.data + 8, got);
    FREE(ch);
    i++;
    while (got < len) {
      assert_true(i < c->nsent);
      ch = (Immudb__Schema__Chunk *)protobuf_c_message_unpack(
          &immudb__schema__chunk__descriptor, NULL, c->sent_len[i], c->sent[i]);
      assert_non_null(ch);
      assert_true(ch->content.len > 0);
      assert_true(ch->content.len <= IMMU_SVC_CHUNK_SIZE);
      assert_true(ch->content.len <= len - got); /* no message sharing */
      memcpy(m + got, ch->content.data, ch->content.len);
      got += ch->content.len;
      FREE(ch);
      i++;
    }
    out->p = fake_xrealloc(out->p, (out->count + 1) * sizeof *out->p);
    out->n = fake_xrealloc(out->n, (out->count + 1) * sizeof *out->n);
    out->p[out->count] = m;
    out->n[out->count] = (size_t)len;
    out->count++;
  }
}

static void assert_msg(const smsgs *m, size_t i, const void *want, size_t n) {
  assert_true(i < m->count);
  if (m->n[i] != n || (n > 0 && memcmp(m->p[i], want, n) != 0))
    fail_msg("stream message %zu differs (%zu bytes, want %zu)", i, m->n[i], n);
}

static uint8_t *big_value(size_t n, unsigned seed) {
  uint8_t *v = fake_xmalloc(n);
  uint32_t x = seed * 2654435761u + 1;
  for (size_t i = 0; i < n; i++) {
    x = x * 1103515245u + 12345u;
    v[i] = (uint8_t)(x >> 16);
  }
  return v;
}

#define BIG (10u * 1024u * 1024u + 12345u)

static immu_grpc_call *stream_call(fixture *fx, const char *name,
                                   const bytes *b, const size_t *cuts,
                                   size_t ncuts) {
  immu_grpc_call *c = call_new(name);
  push_chunks(c, b, cuts, ncuts);
  run(fx, name, c);
  return c;
}

static void test_stream_set_get_big(void **state) {
  fixture *fx = *state;
  uint8_t *v = big_value(BIG, 1);
  bytes b = {0};
  /* odd cuts: the length prefixes are split, messages share chunks */
  static const size_t cuts[] = {3, 1000003, 5, 65536, 2 * 1024 * 1024 + 7};
  immu_grpc_call *c;
  Immudb__Schema__TxHeader *h;
  smsgs m;

  frame(&b, "small", 5);
  frame(&b, "v", 1);
  frame(&b, "big", 3);
  frame(&b, v, BIG);
  frame(&b, "empty", 5);
  frame(&b, "", 0);
  c = stream_call(fx, "streamSet", &b, cuts, sizeof cuts / sizeof *cuts);
  expect_status(c, IMMU_GRPC_OK, NULL);
  assert_true(c->nmsgs > 5);
  assert_int_equal(c->nsent, 1);
  h = (Immudb__Schema__TxHeader *)protobuf_c_message_unpack(
      &immudb__schema__tx_header__descriptor, NULL, c->sent_len[0], c->sent[0]);
  assert_non_null(h);
  assert_int_equal(h->nentries, 3);
  FREE(h);
  fake_call_free(c);
  free(b.p);

  /* streamGet: key, value in 64 KiB chunks */
  {
    Immudb__Schema__KeyRequest kr = IMMUDB__SCHEMA__KEY_REQUEST__INIT;
    kr.key = S("big");
    c = rpc(fx, "streamGet", &kr.base);
    expect_status(c, IMMU_GRPC_OK, NULL);
    assert_true(c->nsent >= BIG / IMMU_SVC_CHUNK_SIZE);
    decode_stream(c, &m);
    assert_int_equal(m.count, 2);
    assert_msg(&m, 0, "big", 3);
    assert_msg(&m, 1, v, BIG);
    smsgs_free(&m);
    fake_call_free(c);
    kr.key = S("empty");
    c = rpc(fx, "streamGet", &kr.base);
    expect_status(c, IMMU_GRPC_OK, NULL);
    assert_int_equal(c->nsent, 2); /* key chunk, 8-byte empty value chunk */
    decode_stream(c, &m);
    assert_msg(&m, 1, "", 0);
    smsgs_free(&m);
    fake_call_free(c);
    kr.key = S("nope");
    rpc_fail(fx, "streamGet", &kr.base, IMMU_GRPC_UNKNOWN, "key not found");
  }
  /* the unary Get sees the same value */
  {
    Immudb__Schema__Entry *e = get_req(fx, "big", 0, 0);
    assert_bin_n(e->value, v, BIG);
    FREE(e);
  }
  free(v);
}

static void test_stream_verifiable(void **state) {
  fixture *fx = *state;
  static const size_t cuts[] = {7, 100000, 1, 30000};
  uint8_t *v = big_value(3 * 1024 * 1024 + 1, 2), *enc;
  size_t vn = 3 * 1024 * 1024 + 1, encn;
  uint8_t kb[64];
  size_t kn;

  set1(fx, "pre", "x");
  for (int legacy = 0; legacy <= 1; legacy++) {
    bytes b = {0};
    immu_grpc_call *c;
    Immudb__Schema__VerifiableTx *vt;
    const char *key = legacy ? "svl" : "svn";
    if (legacy) { /* v0.9-1.1 clients: fake key "ProveSinceTx" */
      frame(&b, "ProveSinceTx", 12);
      frame_u64(&b, fx->st.txid);
    } else {
      frame_u64(&b, fx->st.txid);
    }
    frame(&b, key, 3);
    frame(&b, v, vn);
    c = stream_call(fx, "streamVerifiableSet", &b, cuts,
                    sizeof cuts / sizeof *cuts);
    expect_status(c, IMMU_GRPC_OK, NULL);
    assert_int_equal(c->nsent, 1);
    wire_check(&m_vtx, c->sent[0], c->sent_len[0]);
    vt = (Immudb__Schema__VerifiableTx *)protobuf_c_message_unpack(
        &immudb__schema__verifiable_tx__descriptor, NULL, c->sent_len[0],
        c->sent[0]);
    assert_non_null(vt);
    assert_int_equal(immu_enc_key(U8(key), 3, kb, sizeof kb, &kn), 0);
    enc = fake_xmalloc(vn + 1);
    assert_int_equal(immu_enc_value(v, vn, enc, vn + 1, &encn), 0);
    node_verify_write(fx, vt, kb, kn, enc, encn);
    free(enc);
    FREE(vt);
    fake_call_free(c);
    free(b.p);
  }

  /* streamVerifiableGet: Entry (no value), VerifiableTx, InclusionProof,
   * value; verified like verifiedGet */
  for (int i = 0; i < 2; i++) {
    Immudb__Schema__VerifiableGetRequest req =
        IMMUDB__SCHEMA__VERIFIABLE_GET_REQUEST__INIT;
    Immudb__Schema__KeyRequest kr = IMMUDB__SCHEMA__KEY_REQUEST__INIT;
    Immudb__Schema__VerifiableEntry ve = IMMUDB__SCHEMA__VERIFIABLE_ENTRY__INIT;
    immu_grpc_call *c;
    smsgs m;
    kr.key = S(i == 0 ? "svn" : "pre");
    req.keyrequest = &kr;
    req.provesincetx = fx->st.txid;
    c = rpc(fx, "streamVerifiableGet", &req.base);
    expect_status(c, IMMU_GRPC_OK, NULL);
    decode_stream(c, &m);
    assert_int_equal(m.count, 4);
    wire_check(&m_ent, m.p[0], m.n[0]);
    wire_check(&m_vtx, m.p[1], m.n[1]);
    wire_check(&m_incl, m.p[2], m.n[2]);
    ve.entry = (Immudb__Schema__Entry *)protobuf_c_message_unpack(
        &immudb__schema__entry__descriptor, NULL, m.n[0], m.p[0]);
    ve.verifiabletx = (Immudb__Schema__VerifiableTx *)protobuf_c_message_unpack(
        &immudb__schema__verifiable_tx__descriptor, NULL, m.n[1], m.p[1]);
    ve.inclusionproof =
        (Immudb__Schema__InclusionProof *)protobuf_c_message_unpack(
            &immudb__schema__inclusion_proof__descriptor, NULL, m.n[2], m.p[2]);
    assert_non_null(ve.entry);
    assert_non_null(ve.verifiabletx);
    assert_non_null(ve.inclusionproof);
    assert_int_equal(ve.entry->value.len, 0); /* sent separately */
    if (i == 0) {
      assert_msg(&m, 3, v, vn);
      ve.entry->value = B(m.p[3], m.n[3]);
      node_verify_get(fx, &ve, "svn");
      ve.entry->value = B(NULL, 0);
    } else {
      assert_msg(&m, 3, "x", 1);
      ve.entry->value = B(m.p[3], m.n[3]);
      node_verify_get(fx, &ve, "pre"); /* state newer than the entry */
      ve.entry->value = B(NULL, 0);
    }
    FREE(ve.entry);
    FREE(ve.verifiabletx);
    FREE(ve.inclusionproof);
    smsgs_free(&m);
    fake_call_free(c);
  }
  free(v);
}

static void test_stream_scan_zscan_history(void **state) {
  fixture *fx = *state;
  uint8_t *v = big_value(200000, 3);
  Immudb__Schema__SetRequest sr = IMMUDB__SCHEMA__SET_REQUEST__INIT;
  Immudb__Schema__KeyValue kv = IMMUDB__SCHEMA__KEY_VALUE__INIT, *pkv = &kv;
  immu_grpc_call *c;
  smsgs m;

  kv.key = S("s1");
  kv.value = B(v, 200000);
  sr.kvs = &pkv;
  sr.n_kvs = 1;
  FREE(rpc_ok(fx, "Set", &sr.base, &immudb__schema__tx_header__descriptor,
              NULL));
  set1(fx, "s2", "two");
  set1(fx, "s1", "one");
  set1(fx, "t", "other");

  {
    Immudb__Schema__ScanRequest req = IMMUDB__SCHEMA__SCAN_REQUEST__INIT;
    req.prefix = S("s");
    c = rpc(fx, "streamScan", &req.base);
    expect_status(c, IMMU_GRPC_OK, NULL);
    decode_stream(c, &m);
    assert_int_equal(m.count, 4);
    assert_msg(&m, 0, "s1", 2);
    assert_msg(&m, 1, "one", 3);
    assert_msg(&m, 2, "s2", 2);
    assert_msg(&m, 3, "two", 3);
    smsgs_free(&m);
    fake_call_free(c);
    req.prefix = S("none");
    c = rpc(fx, "streamScan", &req.base);
    expect_status(c, IMMU_GRPC_OK, NULL);
    assert_int_equal(c->nsent, 0);
    fake_call_free(c);
    req.limit = 100000;
    rpc_fail(fx, "streamScan", &req.base, IMMU_GRPC_INVALID_ARGUMENT,
             "result size limit");
  }
  {
    Immudb__Schema__HistoryRequest req = IMMUDB__SCHEMA__HISTORY_REQUEST__INIT;
    req.key = S("s1");
    c = rpc(fx, "streamHistory", &req.base);
    expect_status(c, IMMU_GRPC_OK, NULL);
    decode_stream(c, &m);
    assert_int_equal(m.count, 4);
    assert_msg(&m, 0, "s1", 2);
    assert_msg(&m, 1, v, 200000); /* > 64 KiB: several chunks */
    assert_msg(&m, 3, "one", 3);
    smsgs_free(&m);
    fake_call_free(c);
    req.key = S("zz");
    rpc_fail(fx, "streamHistory", &req.base, IMMU_GRPC_UNKNOWN,
             "key not found");
  }
  {
    Immudb__Schema__ZAddRequest zr = IMMUDB__SCHEMA__ZADD_REQUEST__INIT;
    Immudb__Schema__ZScanRequest q = IMMUDB__SCHEMA__ZSCAN_REQUEST__INIT;
    double score = -3.25;
    uint64_t bits;
    uint8_t sb[8];
    zr.set = S("zset");
    zr.key = S("s2");
    zr.score = score;
    zr.attx = 2;
    zr.boundref = 1;
    FREE(rpc_ok(fx, "ZAdd", &zr.base, &immudb__schema__tx_header__descriptor,
                NULL));
    q.set = S("zset");
    c = rpc(fx, "streamZScan", &q.base);
    expect_status(c, IMMU_GRPC_OK, NULL);
    decode_stream(c, &m);
    assert_int_equal(m.count, 5); /* set, key, score, atTx, value */
    assert_msg(&m, 0, "zset", 4);
    assert_msg(&m, 1, "s2", 2);
    memcpy(&bits, &score, 8);
    immu__put_u64(sb, bits);
    assert_msg(&m, 2, sb, 8);
    immu__put_u64(sb, 2);
    assert_msg(&m, 3, sb, 8);
    assert_msg(&m, 4, "two", 3);
    smsgs_free(&m);
    fake_call_free(c);
    q.set = S("");
    rpc_fail(fx, "streamZScan", &q.base, IMMU_GRPC_INVALID_ARGUMENT,
             "illegal arguments");
  }
  free(v);
}

static void test_stream_exec_all(void **state) {
  fixture *fx = *state;
  static const size_t whole[] = {1u << 30};
  static const size_t tiny[] = {1, 2, 3};
  Immudb__Schema__ZAddRequest zr = IMMUDB__SCHEMA__ZADD_REQUEST__INIT;
  uint8_t zb[128], op;
  size_t zn;
  bytes b = {0};
  immu_grpc_call *c;
  Immudb__Schema__Entry *e;

  zr.set = S("xs");
  zr.key = S("xk");
  zr.score = 9;
  zn = protobuf_c_message_get_packed_size(&zr.base);
  assert_true(zn <= sizeof zb);
  protobuf_c_message_pack(&zr.base, zb);
  op = 1;
  frame(&b, &op, 1);
  frame(&b, "xk", 2);
  frame(&b, "xv", 2);
  op = 2;
  frame(&b, &op, 1);
  frame(&b, zb, zn);
  for (int pass = 0; pass < 2; pass++) {
    Immudb__Schema__TxHeader *h;
    c = stream_call(fx, "streamExecAll", &b, pass ? tiny : whole, pass ? 3 : 1);
    expect_status(c, IMMU_GRPC_OK, NULL);
    h = (Immudb__Schema__TxHeader *)protobuf_c_message_unpack(
        &immudb__schema__tx_header__descriptor, NULL, c->sent_len[0],
        c->sent[0]);
    assert_non_null(h);
    assert_int_equal(h->nentries, 2);
    FREE(h);
    fake_call_free(c);
  }
  e = get_req(fx, "xk", 0, 0);
  assert_bin(e->value, "xv");
  FREE(e);
  {
    Immudb__Schema__ZScanRequest q = IMMUDB__SCHEMA__ZSCAN_REQUEST__INIT;
    Immudb__Schema__ZEntries *zs;
    q.set = S("xs");
    zs = rpc_ok(fx, "ZScan", &q.base, &immudb__schema__zentries__descriptor,
                NULL);
    assert_int_equal(zs->n_entries, 1);
    FREE(zs);
  }
  /* a Ref operation: not implemented, like immudb */
  op = 4;
  frame(&b, &op, 1);
  c = stream_call(fx, "streamExecAll", &b, whole, 1);
  expect_status(c, IMMU_GRPC_UNIMPLEMENTED, "not yet implemented");
  fake_call_free(c);
  b.n = 0;
  op = 9;
  frame(&b, &op, 1);
  c = stream_call(fx, "streamExecAll", &b, whole, 1);
  expect_status(c, IMMU_GRPC_INVALID_ARGUMENT, "unknown ExecAll operation");
  fake_call_free(c);
  b.n = 0;
  op = 2;
  frame(&b, &op, 1);
  frame(&b, "\xff\xff", 2); /* not a ZAddRequest */
  c = stream_call(fx, "streamExecAll", &b, whole, 1);
  expect_status(c, IMMU_GRPC_INVALID_ARGUMENT, "reassemble");
  fake_call_free(c);
  /* no operations */
  b.n = 0;
  c = stream_call(fx, "streamExecAll", &b, whole, 1);
  expect_status(c, IMMU_GRPC_INVALID_ARGUMENT, "illegal arguments");
  fake_call_free(c);
  free(b.p);
}

static void test_stream_errors(void **state) {
  fixture *fx = *state;
  static const size_t whole[] = {1u << 30};
  bytes b = {0};
  immu_grpc_call *c;
  uint8_t h[8];

  /* a value shorter than declared */
  frame(&b, "k", 1);
  immu__put_u64(h, 100);
  bytes_put(&b, h, 8);
  bytes_put(&b, "short", 5);
  c = stream_call(fx, "streamSet", &b, whole, 1);
  expect_status(c, IMMU_GRPC_INVALID_ARGUMENT, "not enough data");
  fake_call_free(c);
  /* a key without its value */
  b.n = 0;
  frame(&b, "k", 1);
  c = stream_call(fx, "streamSet", &b, whole, 1);
  expect_status(c, IMMU_GRPC_INVALID_ARGUMENT, "not enough data");
  fake_call_free(c);
  /* a truncated length prefix */
  b.n = 0;
  frame(&b, "k", 1);
  bytes_put(&b, "\x00\x00\x00", 3);
  c = stream_call(fx, "streamSet", &b, whole, 1);
  expect_status(c, IMMU_GRPC_INVALID_ARGUMENT, "not enough data");
  fake_call_free(c);
  /* a declared length over the limits, refused before allocating */
  b.n = 0;
  frame(&b, "k", 1);
  immu__put_u64(h, UINT64_MAX);
  bytes_put(&b, h, 8);
  c = stream_call(fx, "streamSet", &b, whole, 1);
  expect_status(c, IMMU_GRPC_FAILED_PRECONDITION, "max value length");
  fake_call_free(c);
  b.n = 0;
  immu__put_u64(h, 1u << 20); /* a 1 MiB key */
  bytes_put(&b, h, 8);
  c = stream_call(fx, "streamSet", &b, whole, 1);
  expect_status(c, IMMU_GRPC_INVALID_ARGUMENT, "too large");
  fake_call_free(c);
  /* an empty key */
  b.n = 0;
  frame(&b, "", 0);
  frame(&b, "v", 1);
  c = stream_call(fx, "streamSet", &b, whole, 1);
  expect_status(c, IMMU_GRPC_INVALID_ARGUMENT, "empty key");
  fake_call_free(c);
  /* a chunk that is not a Chunk */
  c = call_new("streamSet");
  fake_call_add_msg(c, "\x0a\x05\x01", 3);
  run(fx, "streamSet", c);
  expect_status(c, IMMU_GRPC_INVALID_ARGUMENT, "malformed");
  fake_call_free(c);
  /* streamVerifiableSet must start with proveSinceTx */
  b.n = 0;
  frame(&b, "key", 3);
  frame(&b, "value", 5);
  c = stream_call(fx, "streamVerifiableSet", &b, whole, 1);
  expect_status(c, IMMU_GRPC_INVALID_ARGUMENT, "proveSinceTx");
  fake_call_free(c);
  b.n = 0;
  frame_u64(&b, 5000); /* beyond the last tx */
  frame(&b, "key", 3);
  frame(&b, "value", 5);
  c = stream_call(fx, "streamVerifiableSet", &b, whole, 1);
  expect_status(c, IMMU_GRPC_INVALID_ARGUMENT, "illegal state");
  fake_call_free(c);
  /* more than 32 MiB of values in one call */
  {
    size_t half = 16u * 1024u * 1024u + 1024u;
    uint8_t *v = big_value(half, 4);
    b.n = 0;
    frame(&b, "h1", 2);
    frame(&b, v, half);
    frame(&b, "h2", 2);
    frame(&b, v, half);
    free(v);
    c = stream_call(fx, "streamSet", &b, (const size_t[]){4u << 20}, 1);
    expect_status(c, IMMU_GRPC_FAILED_PRECONDITION,
                  "max transaction values length exceeded");
    fake_call_free(c);
  }
  /* a cancelled server stream stops sending */
  {
    Immudb__Schema__KeyRequest kr = IMMUDB__SCHEMA__KEY_REQUEST__INIT;
    b.n = 0;
    frame(&b, "k", 1);
    frame(&b, "v", 1);
    c = stream_call(fx, "streamSet", &b, whole, 1);
    expect_status(c, IMMU_GRPC_OK, NULL);
    fake_call_free(c);
    kr.key = S("k");
    c = call_new("streamGet");
    fake_call_add_pb(c, &kr.base);
    c->cancelled = 1;
    run(fx, "streamGet", c);
    expect_status(c, IMMU_GRPC_CANCELLED, NULL);
    assert_int_equal(c->nsent, 0);
    fake_call_free(c);
  }
  free(b.p);
}

/* ------------------------------------------------------------------ */
/* Conversions                                                         */
/* ------------------------------------------------------------------ */

typedef struct conv_get {
  const immu_db_key_req *kr;
  immu_db_verifiable_entry *v;
  int rc;
} conv_get;

#ifdef IMMU_TEST_REAL_AUTH
static void conv_cb(void *arg, const char *name, struct immu_db *db) {
  conv_get *g = arg;
  if (strcmp(name, DBNAME) == 0)
    g->rc = immu_db_verifiable_get(db, g->kr, 9, g->v);
}
#endif

/* Every allocation failure of the reply builders gives NULL, not a crash
 * or a leak; the proto -> dual proof direction round-trips and refuses a
 * digest of the wrong size. */
static void test_conv(void **state) {
  fixture *fx = *state;
  immu_db_verifiable_entry v;
  immu_db *db;
  immu_db_key_req kr;

  for (int i = 0; i < 9; i++)
    set1(fx, "cv", "x");
  memset(&v, 0, sizeof v);
  memset(&kr, 0, sizeof kr);
  kr.key = U8("cv");
  kr.key_len = 2;
  kr.at_tx = 4;
#ifdef IMMU_TEST_REAL_AUTH
  {
    conv_get g = {&kr, &v, -1};
    immu_server_foreach_db(fx->srv, conv_cb, &g);
    assert_int_equal(g.rc, 0);
  }
  /* no engine threads may allocate while allocations are made to fail */
  immu_server_free(fx->srv);
  fx->srv = NULL;
  (void)db;
#else
  db = fx->stub.db;
  assert_int_equal(immu_db_verifiable_get(db, &kr, 9, &v), 0);
  /* no engine threads may allocate while allocations are made to fail */
  assert_int_equal(immu_db_close(fx->stub.db), 0);
  fx->stub.db = NULL;
#endif
  for (long fail = 0;; fail++) {
    immu_svc_arena a = IMMU_SVC_ARENA_INIT;
    Immudb__Schema__VerifiableEntry *m;
    immu__mem_fail_after(fail, 0);
    m = immu__svc_pb_ventry(&a, &v, NULL);
    immu__mem_fail_after(-1, 0);
    immu__svc_arena_free(&a);
    if (m != NULL) {
      assert_true(fail > 0);
      break;
    }
  }
  {
    immu_svc_arena a = IMMU_SVC_ARENA_INIT, b = IMMU_SVC_ARENA_INIT;
    Immudb__Schema__DualProof *pm = immu__svc_pb_dual_proof(&a, &v.vtx.proof);
    Immudb__Schema__DualProof *um;
    immu_dual_proof back;
    immu_digest salh, talh;
    size_t n;
    uint8_t *buf;
    assert_non_null(pm);
    n = protobuf_c_message_get_packed_size(&pm->base);
    buf = fake_xmalloc(n);
    protobuf_c_message_pack(&pm->base, buf);
    um = (Immudb__Schema__DualProof *)protobuf_c_message_unpack(
        &immudb__schema__dual_proof__descriptor, NULL, n, buf);
    assert_non_null(um);
    assert_int_equal(immu__svc_dual_proof_from_pb(&b, um, &back), 0);
    assert_int_equal(back.source.id, 4);
    assert_int_equal(back.target.id, 9);
    assert_int_equal(immu_tx_alh(&back.source, &salh), 0);
    assert_int_equal(immu_tx_alh(&back.target, &talh), 0);
    assert_int_equal(immu_dual_proof_verify(&back, 4, 9, &salh, &talh), 0);
    um->targettxheader->blroot.len = 31;
    assert_int_equal(immu__svc_dual_proof_from_pb(&b, um, &back), IMMU_EINVAL);
    um->targettxheader->blroot.len = 32;
    um->inclusionproof[0].len = 0;
    assert_int_equal(immu__svc_dual_proof_from_pb(&b, um, &back), IMMU_EINVAL);
    FREE(um);
    free(buf);
    immu__svc_arena_free(&a);
    immu__svc_arena_free(&b);
  }
  immu_db_verifiable_entry_clear(&v);
}

/* ------------------------------------------------------------------ */

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_set_get, setup, teardown),
      cmocka_unit_test_setup_teardown(test_get_inline, setup, teardown),
      cmocka_unit_test_setup_teardown(test_set_inline, setup, teardown),
      cmocka_unit_test_setup_teardown(test_getall_scan_count_history, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_refs_zsets_execall, setup, teardown),
      cmocka_unit_test_setup_teardown(test_tx_by_id_scan, setup, teardown),
      cmocka_unit_test_setup_teardown(test_current_state, setup, teardown),
      cmocka_unit_test_setup_teardown(test_verified_set_get, setup, teardown),
      cmocka_unit_test_setup_teardown(test_verified_tx_ref_zadd, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_tamper_rejected, setup, teardown),
      cmocka_unit_test_setup_teardown(test_delete, setup, teardown),
      cmocka_unit_test_setup_teardown(test_permissions, setup, teardown),
      cmocka_unit_test_setup_teardown(test_wait_cancelled, setup, teardown),
      cmocka_unit_test_setup_teardown(test_async_sets, setup, teardown),
      cmocka_unit_test_setup_teardown(test_set_acked_before_index, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_stream_set_get_big, setup, teardown),
      cmocka_unit_test_setup_teardown(test_stream_verifiable, setup, teardown),
      cmocka_unit_test_setup_teardown(test_stream_scan_zscan_history, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_stream_exec_all, setup, teardown),
      cmocka_unit_test_setup_teardown(test_stream_errors, setup, teardown),
      cmocka_unit_test_setup_teardown(test_conv, setup, teardown),
  };
  int rc;
  fake_call_set_fail(fake_fail_cmocka);
  gen_keys();
  rc = cmocka_run_group_tests(tests, NULL, NULL);
  free(g_key_pem);
  free(g_pub_pem);
  return rc;
}
