/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fuzz target: ImmuService request decoding and handling (src/server/
 * auth.c, svc_admin.c, svc_kv.c, svc_stream.c, svc_export.c, svc_conv.c).
 *
 * One real immu_server lives in a temporary directory for the whole run
 * (created on the first input, removed at exit). At start-up the harness
 * logs in as the sysadmin (token and session on defaultdb) and creates a
 * read-only user. Each input is one call of one method of the server's
 * full method table (immu_server_methods), run on the fuzzer's thread
 * through the shared fake transport call (tests/server/fake_call.c,
 * server.h's call API).
 *
 * Input layout:
 *   byte 0  method: index into the method table (modulo its size)
 *   byte 1  flags (0 when absent):
 *           bits 0-1  credentials: 0 sysadmin token, 1 sysadmin session
 *                     id, 2 the read-only user's token, 3 none
 *           bits 2-3  how the rest becomes request messages:
 *                     0 one message, the whole rest
 *                     1 a sequence of [u8 length][bytes]
 *                     2 a sequence of [u16 big-endian length][bytes]
 *                     3 the rest is a stream payload (svc_stream.c
 *                       framing), wrapped into Chunk{content} messages
 *                       of 4 << (bits 4-6) bytes
 *           bits 4-6  chunk size (mode 3)
 *           bit 7     the call is cancelled from the start: sends fail
 *                     with IMMU_ECLOSED as on a reset stream
 *   rest    as bits 2-3 say (a truncated length takes what is left)
 *
 * Oracles, besides the sanitizers: the handler finishes the call exactly
 * once, with a status in 0..16, never sends after finishing; every message
 * it sends unpacks as the method's reply type; a unary call that ends OK
 * sent exactly one message.
 *
 * Built with -DIMMU_FUZZ_SVC_GEN (and without replay_main.c, but with
 * tests/server/fake_call.c), the file has a main(OUTDIR) that writes the
 * seed corpus: valid requests of every method, some with other
 * credentials, split modes or cancelled, named by their SHA-256.
 *
 * Bounds: immu_grpc_call_cancelled answers 1 once a fuzzed call is
 * CANCEL_AFTER_MS old, so every wait of a handler (index waits, sinceTx)
 * ends soon; a call may send at most SEND_CAP bytes (then sends fail as on
 * a cancelled call). Tokens dropped by Logout and a closed session are
 * replaced (creds_repair); the server is recreated from scratch every
 * RECREATE_EVERY inputs, when its directory outgrows DISK_CAP, when more
 * than MAX_DBS databases are loaded, and when the harness's credentials
 * cannot be restored (ChangePassword, SetActiveUser, ChangePermission...).
 */
#include <errno.h>
#include <ftw.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>

#include "immudb/err.h"
#include "schema.pb-c.h"
#include "server/fake_call.h"
#include "server/server.h"

#define CANCEL_AFTER_MS 5
#define SEND_CAP ((size_t)64 << 20)
#define MAX_MSGS 256
#define RECREATE_EVERY 8192
#define CHECK_EVERY 256
#define DISK_CHECK_EVERY 64
#define DISK_CAP ((uint64_t)256 << 20)
#define MAX_DBS 6

#define ADMIN_USER "immudb"
#define ADMIN_PW "immudb"
#define READER_USER "fuzzreader"
#define READER_PW "Fuzz3r!pw"
#define SVC_PREFIX "/immudb.schema.ImmuService/"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void die(const char *fmt, ...)
    __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "fuzz_svc_requests: ");
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
  abort();
}


/* ------------------------------------------------------------------ */
/* The server                                                          */
/* ------------------------------------------------------------------ */

/* Methods whose reply is a stream (any number of messages). */
static const char *const k_server_streaming[] = {
    "SQLQuery",  "TxSQLQuery",    "streamGet",      "streamVerifiableGet",
    "streamScan", "streamZScan",  "streamHistory",  "exportTx",
    "streamExportTx"};

/* Methods after which the harness checks that its credentials still work. */
static const char *const k_risky[] = {
    "Logout",           "CloseSession",     "ChangePassword",
    "ChangePermission", "SetActiveUser",    "UpdateDatabase",
    "UpdateDatabaseV2", "UnloadDatabase",   "DeleteDatabase",
    "CreateUser",       "UpdateAuthConfig", "ChangeSQLPrivileges",
    "TruncateDatabase"};

/* Methods that may add a loaded database. */
static const char *const k_adds_db[] = {"CreateDatabase", "CreateDatabaseWith",
                                        "CreateDatabaseV2", "LoadDatabase"};

typedef struct method_info {
  const immu_grpc_method *m;
  const char *name; /* bare name */
  const ProtobufCMessageDescriptor *reply_desc;
  int server_streaming;
  int risky;
  int adds_db;
} method_info;

static struct {
  int inited;
  char base[512]; /* our temp dir */
  char key[600];  /* signing key PEM file */
  char dir[600];  /* current data dir */
  unsigned gen;
  immu_server *srv;
  method_info *methods;
  size_t nmethods;
  char admin_master[160], admin_tok[160];
  char admin_sid[160];
  char reader_master[160], reader_tok[160];
  uint64_t inputs; /* since the server was created */
  int verbose;     /* IMMU_FUZZ_VERBOSE: log every call */
} g;

static int in_list(const char *name, const char *const *list, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (strcmp(name, list[i]) == 0)
      return 1;
  return 0;
}

#define IN_LIST(name, arr) in_list((name), (arr), sizeof(arr) / sizeof(arr)[0])

static void quiet_log(void *arg, int level, const char *msg) {
  (void)arg;
  if (level <= 0 && g.verbose)
    fprintf(stderr, "[server %d] %s\n", level, msg);
}

static int rm_cb(const char *path, const struct stat *sb, int flag,
                 struct FTW *ftw) {
  (void)sb;
  (void)flag;
  (void)ftw;
  return remove(path);
}

static uint64_t g_du;
static int du_cb(const char *path, const struct stat *sb, int flag,
                 struct FTW *ftw) {
  (void)path;
  (void)flag;
  (void)ftw;
  g_du += (uint64_t)sb->st_blocks * 512;
  return 0;
}

static uint64_t disk_usage(const char *dir) {
  g_du = 0;
  nftw(dir, du_cb, 16, FTW_PHYS);
  return g_du;
}

static const method_info *method_by_name(const char *name) {
  for (size_t i = 0; i < g.nmethods; i++)
    if (strcmp(g.methods[i].name, name) == 0)
      return &g.methods[i];
  return NULL;
}

/* Runs |c| through |mi| and checks the transport contract: every reply
 * must unpack as the method's reply type, at most SEND_CAP bytes are
 * sent. The fake runs a TRY_INLINE handler first "on the loop" and again
 * "on a worker" if it defers, waits (without a limit) for a detached
 * call, and dies unless the call ends finished. */
static void run_call(const method_info *mi, immu_grpc_call *c) {
  c->path = mi->m->path;
  c->reply_desc = mi->reply_desc;
  c->send_cap = SEND_CAP;
  fake_call_run(c, mi->m->handler, mi->m->arg, mi->m->flags);
  if (c->status == IMMU_GRPC_OK && !mi->server_streaming && !c->cancelled &&
      c->nsent != 1)
    die("%s: unary call ended OK after %zu reply messages", c->path,
        c->nsent);
}

/* An internal call with one packed message; returns the reply (owned by
 * the caller) or NULL if the call failed. */
static ProtobufCMessage *internal_call(const char *name,
                                       const ProtobufCMessage *req,
                                       const char *auth, const char *sid) {
  const method_info *mi = method_by_name(name);
  immu_grpc_call c;
  ProtobufCMessage *r = NULL;
  if (mi == NULL)
    die("the server has no method %s", name);
  fake_call_init(&c, NULL);
  fake_call_add_pb(&c, req);
  fake_call_set_auth(&c, auth);
  fake_call_set_sid(&c, sid);
  c.keep_reply = 1;
  run_call(mi, &c);
  if (c.status == IMMU_GRPC_OK) {
    r = c.reply;
    c.reply = NULL;
  } else if (g.verbose) {
    fprintf(stderr, "fuzz_svc_requests: %s: %d %s\n", name, c.status,
            c.message);
  }
  fake_call_clear(&c);
  return r;
}

static ProtobufCBinaryData bstr(const char *s) {
  ProtobufCBinaryData b;
  b.len = strlen(s);
  b.data = (uint8_t *)(uintptr_t)s;
  return b;
}

/* Login + UseDatabase(defaultdb): a token on defaultdb, or -1. */
static int login(const char *user, const char *pw, char *tok, size_t cap) {
  Immudb__Schema__LoginRequest lr = IMMUDB__SCHEMA__LOGIN_REQUEST__INIT;
  Immudb__Schema__Database d = IMMUDB__SCHEMA__DATABASE__INIT;
  Immudb__Schema__LoginResponse *resp;
  Immudb__Schema__UseDatabaseReply *ur;
  char bearer[160];
  lr.user = bstr(user);
  lr.password = bstr(pw);
  resp = (Immudb__Schema__LoginResponse *)internal_call("Login", &lr.base,
                                                         NULL, NULL);
  if (resp == NULL)
    return -1;
  snprintf(bearer, sizeof bearer, "Bearer %s", resp->token);
  protobuf_c_message_free_unpacked(&resp->base, NULL);
  d.databasename = (char *)(uintptr_t) "defaultdb";
  ur = (Immudb__Schema__UseDatabaseReply *)internal_call(
      "UseDatabase", &d.base, bearer, NULL);
  if (ur == NULL)
    return -1;
  snprintf(tok, cap, "Bearer %s", ur->token);
  protobuf_c_message_free_unpacked(&ur->base, NULL);
  return 0;
}

/* 1 if |auth| / |sid| reach defaultdb. */
static int cred_works(const char *auth, const char *sid) {
  ProtobufCMessage *st = internal_call("CurrentState", NULL, auth, sid);
  if (st == NULL)
    return 0;
  protobuf_c_message_free_unpacked(st, NULL);
  return 1;
}

/* A new token on defaultdb minted from |master| (UseDatabase: no password
 * hashing), or -1. */
static int mint(const char *master, char *tok, size_t cap) {
  Immudb__Schema__Database d = IMMUDB__SCHEMA__DATABASE__INIT;
  Immudb__Schema__UseDatabaseReply *ur;
  d.databasename = (char *)(uintptr_t) "defaultdb";
  ur = (Immudb__Schema__UseDatabaseReply *)internal_call("UseDatabase", &d.base,
                                                         master, NULL);
  if (ur == NULL)
    return -1;
  snprintf(tok, cap, "Bearer %s", ur->token);
  protobuf_c_message_free_unpacked(&ur->base, NULL);
  return 0;
}

static int open_session(void) {
  Immudb__Schema__OpenSessionRequest os =
      IMMUDB__SCHEMA__OPEN_SESSION_REQUEST__INIT;
  Immudb__Schema__OpenSessionResponse *osr;
  os.username = bstr(ADMIN_USER);
  os.password = bstr(ADMIN_PW);
  os.databasename = (char *)(uintptr_t) "defaultdb";
  osr = (Immudb__Schema__OpenSessionResponse *)internal_call(
      "OpenSession", &os.base, NULL, NULL);
  if (osr == NULL)
    return -1;
  snprintf(g.admin_sid, sizeof g.admin_sid, "%s", osr->sessionid);
  protobuf_c_message_free_unpacked(&osr->base, NULL);
  return 0;
}

/* Restores the credentials the fuzzed calls use: tokens dropped by Logout
 * are minted again from the master tokens (never handed to a fuzzed call),
 * a closed session is opened again. Returns 0, or -1 when that is not
 * enough (password, permission or user changed): recreate the server. */
static int creds_repair(void) {
  if (!cred_works(g.admin_tok, NULL) &&
      (mint(g.admin_master, g.admin_tok, sizeof g.admin_tok) != 0 ||
       !cred_works(g.admin_tok, NULL)))
    return -1;
  if (!cred_works(g.reader_tok, NULL) &&
      (mint(g.reader_master, g.reader_tok, sizeof g.reader_tok) != 0 ||
       !cred_works(g.reader_tok, NULL)))
    return -1;
  if (!cred_works(NULL, g.admin_sid) &&
      (open_session() != 0 || !cred_works(NULL, g.admin_sid)))
    return -1;
  return 0;
}

static void write_signing_key(void) {
  EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
  FILE *f;
  if (k == NULL)
    die("cannot generate a signing key");
  snprintf(g.key, sizeof g.key, "%s/signing.pem", g.base);
  f = fopen(g.key, "w");
  if (f == NULL || PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL) != 1)
    die("cannot write %s", g.key);
  fclose(f);
  EVP_PKEY_free(k);
}

static void srv_close(void) {
  if (g.srv != NULL) {
    immu_server_free(g.srv);
    g.srv = NULL;
    nftw(g.dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
  }
  free(g.methods);
  g.methods = NULL;
  g.nmethods = 0;
}

static void srv_open(void) {
  immu_server_config cfg;
  const immu_grpc_method *tab;
  const ProtobufCServiceDescriptor *sd =
      &immudb__schema__immu_service__descriptor;
  char *err = NULL;
  size_t n;
  int rc;

  snprintf(g.dir, sizeof g.dir, "%s/data%u", g.base, g.gen++);
  immu_server_config_init(&cfg);
  cfg.dir = g.dir;
  cfg.signing_key = g.key;
  cfg.synced = 0;
  cfg.session_timeout_s = 86400;
  cfg.listen_address = "127.0.0.1";
  cfg.log = quiet_log;
  rc = immu_server_new(&cfg, &g.srv, &err);
  if (rc != 0)
    die("immu_server_new(%s): %d %s", g.dir, rc, err ? err : "");
  if (g.verbose)
    fprintf(stderr, "fuzz_svc_requests: server %u in %s\n", g.gen - 1, g.dir);

  immu_server_methods(g.srv, &tab, &n);
  if (n == 0)
    die("empty method table");
  g.methods = calloc(n, sizeof *g.methods);
  if (g.methods == NULL)
    die("out of memory");
  for (size_t i = 0; i < n; i++) {
    method_info *mi = &g.methods[i];
    const char *slash = strrchr(tab[i].path, '/');
    mi->m = &tab[i];
    mi->name = slash ? slash + 1 : tab[i].path;
    if (strncmp(tab[i].path, SVC_PREFIX, strlen(SVC_PREFIX)) == 0) {
      for (unsigned j = 0; j < sd->n_methods; j++)
        if (strcmp(sd->methods[j].name, mi->name) == 0)
          mi->reply_desc = sd->methods[j].output;
    }
    mi->server_streaming = IN_LIST(mi->name, k_server_streaming);
    mi->risky = IN_LIST(mi->name, k_risky);
    mi->adds_db = IN_LIST(mi->name, k_adds_db);
  }
  g.nmethods = n;

  /* Credentials: the sysadmin's token and session, a reader's token; the
   * tokens are minted from master tokens that no fuzzed call sees. */
  {
    Immudb__Schema__CreateUserRequest cu =
        IMMUDB__SCHEMA__CREATE_USER_REQUEST__INIT;
    ProtobufCMessage *e;

    if (login(ADMIN_USER, ADMIN_PW, g.admin_master, sizeof g.admin_master) !=
            0 ||
        mint(g.admin_master, g.admin_tok, sizeof g.admin_tok) != 0)
      die("admin login failed");
    if (open_session() != 0)
      die("OpenSession failed");
    cu.user = bstr(READER_USER);
    cu.password = bstr(READER_PW);
    cu.permission = 1; /* READ */
    cu.database = (char *)(uintptr_t) "defaultdb";
    e = internal_call("CreateUser", &cu.base, g.admin_master, NULL);
    if (e == NULL)
      die("CreateUser failed");
    protobuf_c_message_free_unpacked(e, NULL);
    if (login(READER_USER, READER_PW, g.reader_master,
              sizeof g.reader_master) != 0 ||
        mint(g.reader_master, g.reader_tok, sizeof g.reader_tok) != 0)
      die("reader login failed");
  }
  g.inputs = 0;
}

static void count_db(void *arg, const char *name, struct immu_db *db) {
  (void)name;
  (void)db;
  (*(size_t *)arg)++;
}

static void cleanup(void) {
  if (!g.inited)
    return;
  srv_close();
  nftw(g.base, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
  g.inited = 0;
}

static void init_once(void) {
  const char *tmp = getenv("IMMU_TEST_TMPDIR");
  if (g.inited)
    return;
  snprintf(g.base, sizeof g.base, "%s/fuzzsvcXXXXXX",
           tmp != NULL && *tmp != '\0' ? tmp : "/tmp");
  if (mkdtemp(g.base) == NULL)
    die("mkdtemp(%s): %s", g.base, strerror(errno));
  write_signing_key();
  g.verbose = getenv("IMMU_FUZZ_VERBOSE") != NULL;
  g.inited = 1;
  srv_open();
  /* After the first database opened: RocksDB registers exit-time
   * destructors of its statics then, and ours must run before them. */
  atexit(cleanup);
}

/* ------------------------------------------------------------------ */
/* One input                                                           */
/* ------------------------------------------------------------------ */

static void split_messages(immu_grpc_call *c, uint8_t flags, const uint8_t *p,
                           size_t n) {
  switch ((flags >> 2) & 3) {
  case 0:
    fake_call_add_msg(c, p, n);
    break;
  case 1:
  case 2: {
    size_t hl = ((flags >> 2) & 3) == 1 ? 1 : 2;
    while (n > 0 && c->nmsgs < MAX_MSGS) {
      size_t len;
      if (n < hl) {
        fake_call_add_msg(c, p, n);
        break;
      }
      len = hl == 1 ? p[0] : ((size_t)p[0] << 8 | p[1]);
      p += hl;
      n -= hl;
      if (len > n)
        len = n;
      fake_call_add_msg(c, p, len);
      p += len;
      n -= len;
    }
    break;
  }
  default: {
    size_t csz = (size_t)4 << ((flags >> 4) & 7);
    do {
      Immudb__Schema__Chunk ch = IMMUDB__SCHEMA__CHUNK__INIT;
      size_t take = n < csz ? n : csz;
      size_t plen;
      uint8_t *buf;
      ch.content.data = (uint8_t *)(uintptr_t)p;
      ch.content.len = take;
      plen = protobuf_c_message_get_packed_size(&ch.base);
      buf = fake_xmalloc(plen);
      protobuf_c_message_pack(&ch.base, buf);
      fake_call_add_msg(c, buf, plen);
      free(buf);
      p += take;
      n -= take;
    } while (n > 0 && c->nmsgs < MAX_MSGS);
    break;
  }
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  immu_grpc_call c;
  const method_info *mi;
  uint8_t flags;
  int check = 0;

  if (size < 1)
    return 0;
  init_once();
  if (g.inputs >= RECREATE_EVERY ||
      (g.inputs % DISK_CHECK_EVERY == 0 && g.inputs > 0 &&
       disk_usage(g.dir) > DISK_CAP)) {
    srv_close();
    srv_open();
  }
  g.inputs++;

  mi = &g.methods[data[0] % g.nmethods];
  flags = size > 1 ? data[1] : 0;
  fake_call_init(&c, NULL);
  switch (flags & 3) {
  case 0:
    fake_call_set_auth(&c, g.admin_tok);
    break;
  case 1:
    fake_call_set_sid(&c, g.admin_sid);
    break;
  case 2:
    fake_call_set_auth(&c, g.reader_tok);
    break;
  default:
    break;
  }
  c.cancelled = (flags & 0x80) != 0;
  c.cancel_after_ms = CANCEL_AFTER_MS;
  split_messages(&c, flags, data + (size > 1 ? 2 : 1),
                 size > 1 ? size - 2 : 0);
  run_call(mi, &c);
  if (g.verbose)
    fprintf(stderr, "fuzz_svc_requests: %s flags 0x%02x, %zu msgs: %d %s (%zu sent)\n",
            mi->name, flags, c.nmsgs, c.status, c.message, c.nsent);
  if (c.status == IMMU_GRPC_OK && mi->risky)
    check = 1;
  if (c.status == IMMU_GRPC_OK && mi->adds_db) {
    size_t ndb = 0;
    immu_server_foreach_db(g.srv, count_db, &ndb);
    if (ndb > MAX_DBS)
      g.inputs = RECREATE_EVERY; /* recreate before the next input */
  }
  fake_call_clear(&c);
  if ((check || g.inputs % CHECK_EVERY == 0) && g.inputs < RECREATE_EVERY &&
      creds_repair() != 0)
    g.inputs = RECREATE_EVERY;
  return 0;
}

#ifdef IMMU_FUZZ_SVC_GEN
/* ------------------------------------------------------------------ */
/* Seed corpus generator                                               */
/* ------------------------------------------------------------------ */

static const char *g_out;
static unsigned g_nseeds;

static void seed_raw(const char *name, uint8_t flags, const void *p,
                     size_t n) {
  const method_info *mi = method_by_name(name);
  uint8_t *buf = fake_xmalloc(n + 2), md[32];
  unsigned mdlen = 0;
  char path[1024], hex[65];
  FILE *f;
  if (mi == NULL)
    die("gen: no method %s", name);
  buf[0] = (uint8_t)(mi - g.methods);
  buf[1] = flags;
  if (n > 0)
    memcpy(buf + 2, p, n);
  if (EVP_Digest(buf, n + 2, md, &mdlen, EVP_sha256(), NULL) != 1)
    die("gen: sha256");
  for (unsigned i = 0; i < 32; i++)
    snprintf(hex + 2 * i, 3, "%02x", md[i]);
  snprintf(path, sizeof path, "%s/%s", g_out, hex);
  f = fopen(path, "wb");
  if (f == NULL || fwrite(buf, 1, n + 2, f) != n + 2 || fclose(f) != 0)
    die("gen: cannot write %s", path);
  /* Run it too: later seeds see the state earlier ones made. */
  LLVMFuzzerTestOneInput(buf, n + 2);
  free(buf);
  g_nseeds++;
}

static void seed(const char *name, uint8_t flags, const ProtobufCMessage *m) {
  size_t n = m ? protobuf_c_message_get_packed_size(m) : 0;
  uint8_t *b = fake_xmalloc(n);
  if (m != NULL)
    protobuf_c_message_pack(m, b);
  seed_raw(name, flags, b, n);
  free(b);
}

/* Stream payloads (svc_stream.c): [u64 BE length][bytes]... */
typedef struct sbuf {
  uint8_t b[8192];
  size_t n;
} sbuf;

static void sb_msg(sbuf *s, const void *p, size_t n) {
  if (s->n + 8 + n > sizeof s->b)
    die("gen: stream payload too long");
  for (int i = 7; i >= 0; i--)
    s->b[s->n++] = (uint8_t)((uint64_t)n >> (8 * i));
  memcpy(s->b + s->n, p, n);
  s->n += n;
}

static void sb_str(sbuf *s, const char *str) {
  sb_msg(s, str, strlen(str));
}

static void sb_pb(sbuf *s, const ProtobufCMessage *m) {
  uint8_t tmp[1024];
  size_t n = protobuf_c_message_get_packed_size(m);
  if (n > sizeof tmp)
    die("gen: message too long");
  protobuf_c_message_pack(m, tmp);
  sb_msg(s, tmp, n);
}

/* [u16 BE length][bytes] framing of split mode 2. */
static void lp16(sbuf *s, const ProtobufCMessage *m) {
  size_t n = protobuf_c_message_get_packed_size(m);
  if (s->n + 2 + n > sizeof s->b)
    die("gen: too long");
  s->b[s->n++] = (uint8_t)(n >> 8);
  s->b[s->n++] = (uint8_t)n;
  protobuf_c_message_pack(m, s->b + s->n);
  s->n += n;
}

/* Credentials (flag bits 0-1) and split modes (bits 2-6). */
#define F_ADMIN 0x00
#define F_SESSION 0x01
#define F_READER 0x02
#define F_NONE 0x03
#define F_LP8 0x04
#define F_LP16 0x08
#define F_CHUNKS(sz) (0x0c | ((sz) << 4)) /* 4 << sz bytes per chunk */
#define F_CANCELLED 0x80

#define BIN(s) bstr(s)

static void gen_all(void) {
  static const char *const empty_methods[] = {
      "Logout",        "KeepAlive",     "ListUsers",    "DatabaseList",
      "GetDatabaseSettings", "CompactIndex", "CountAll", "Health",
      "DatabaseHealth", "CurrentState", "ListTables",   "Commit",
      "Rollback",      "SQLExec",       "SQLQuery",     "UnarySQLQuery",
      "DescribeTable", "NewTx",         "TxSQLExec",    "TxSQLQuery",
      "VerifiableSQLGet", "ChangeSQLPrivileges", "UpdateAuthConfig",
      "UpdateMTLSConfig", "TruncateDatabase", "DatabaseListV2",
      "GetDatabaseSettingsV2", "ServerInfo"};
  Immudb__Schema__KeyValue kv1 = IMMUDB__SCHEMA__KEY_VALUE__INIT,
                           kv2 = IMMUDB__SCHEMA__KEY_VALUE__INIT;
  Immudb__Schema__KeyValue *kvs[2] = {&kv1, &kv2};
  Immudb__Schema__SetRequest set = IMMUDB__SCHEMA__SET_REQUEST__INIT;
  Immudb__Schema__KeyRequest kr = IMMUDB__SCHEMA__KEY_REQUEST__INIT;
  ProtobufCBinaryData keys[3];
  size_t i;

  /* Methods whose request is Empty (or that only answer UNIMPLEMENTED). */
  for (i = 0; i < sizeof empty_methods / sizeof empty_methods[0]; i++)
    if (method_by_name(empty_methods[i]) != NULL &&
        strcmp(empty_methods[i], "Logout") != 0)
      seed(empty_methods[i], F_ADMIN, NULL);
  seed("KeepAlive", F_SESSION, NULL);
  seed("CurrentState", F_READER, NULL);
  seed("CurrentState", F_NONE, NULL);
  seed("ListUsers", F_READER, NULL);
  seed("DatabaseHealth", F_SESSION, NULL);

  /* Data: KV. */
  kv1.key = BIN("k1");
  kv1.value = BIN("v1");
  kv2.key = BIN("k2");
  kv2.value = BIN("value two");
  set.n_kvs = 2;
  set.kvs = kvs;
  seed("Set", F_ADMIN, &set.base);
  set.nowait = 1;
  seed("Set", F_SESSION, &set.base);
  seed("Set", F_READER, &set.base);
  seed("Set", F_ADMIN | F_CANCELLED, &set.base);
  {
    Immudb__Schema__KVMetadata md = IMMUDB__SCHEMA__KVMETADATA__INIT;
    Immudb__Schema__Precondition pc = IMMUDB__SCHEMA__PRECONDITION__INIT;
    Immudb__Schema__Precondition__KeyMustNotExistPrecondition mne =
        IMMUDB__SCHEMA__PRECONDITION__KEY_MUST_NOT_EXIST_PRECONDITION__INIT;
    Immudb__Schema__Precondition *pcs[1] = {&pc};
    Immudb__Schema__SetRequest s2 = IMMUDB__SCHEMA__SET_REQUEST__INIT;
    Immudb__Schema__KeyValue kv = IMMUDB__SCHEMA__KEY_VALUE__INIT;
    Immudb__Schema__KeyValue *one[1] = {&kv};
    md.nonindexable = 1;
    kv.key = BIN("k3");
    kv.value = BIN("v3");
    kv.metadata = &md;
    s2.n_kvs = 1;
    s2.kvs = one;
    seed("Set", F_ADMIN, &s2.base);
    mne.key = BIN("k1");
    pc.precondition_case =
        IMMUDB__SCHEMA__PRECONDITION__PRECONDITION_KEY_MUST_NOT_EXIST;
    pc.keymustnotexist = &mne;
    kv.metadata = NULL;
    s2.n_preconditions = 1;
    s2.preconditions = pcs;
    seed("Set", F_ADMIN, &s2.base);
  }
  kr.key = BIN("k1");
  seed("Get", F_ADMIN, &kr.base);
  seed("Get", F_READER, &kr.base);
  seed("Get", F_SESSION, &kr.base);
  kr.attx = 1;
  seed("Get", F_ADMIN, &kr.base);
  kr.attx = 0;
  kr.sincetx = 1000000;
  seed("Get", F_ADMIN, &kr.base);
  kr.sincetx = 0;
  kr.atrevision = -1;
  seed("Get", F_ADMIN, &kr.base);
  kr.atrevision = 0;
  keys[0] = BIN("k1");
  keys[1] = BIN("k2");
  keys[2] = BIN("missing");
  {
    Immudb__Schema__KeyListRequest kl = IMMUDB__SCHEMA__KEY_LIST_REQUEST__INIT;
    Immudb__Schema__DeleteKeysRequest dk =
        IMMUDB__SCHEMA__DELETE_KEYS_REQUEST__INIT;
    kl.n_keys = 3;
    kl.keys = keys;
    seed("GetAll", F_ADMIN, &kl.base);
    dk.n_keys = 1;
    dk.keys = &keys[1];
    seed("Delete", F_ADMIN, &dk.base);
  }
  {
    Immudb__Schema__ScanRequest sr = IMMUDB__SCHEMA__SCAN_REQUEST__INIT;
    Immudb__Schema__KeyPrefix kp = IMMUDB__SCHEMA__KEY_PREFIX__INIT;
    Immudb__Schema__HistoryRequest hr = IMMUDB__SCHEMA__HISTORY_REQUEST__INIT;
    sr.prefix = BIN("k");
    sr.limit = 10;
    seed("Scan", F_ADMIN, &sr.base);
    seed("streamScan", F_ADMIN, &sr.base);
    sr.desc = 1;
    sr.seekkey = BIN("k2");
    sr.endkey = BIN("k0");
    sr.inclusiveseek = 1;
    sr.inclusiveend = 1;
    sr.offset = 1;
    seed("Scan", F_READER, &sr.base);
    kp.prefix = BIN("k");
    seed("Count", F_ADMIN, &kp.base);
    hr.key = BIN("k1");
    hr.limit = 10;
    seed("History", F_ADMIN, &hr.base);
    seed("streamHistory", F_ADMIN, &hr.base);
    hr.desc = 1;
    hr.offset = 1;
    seed("History", F_SESSION, &hr.base);
  }
  {
    Immudb__Schema__ZAddRequest za = IMMUDB__SCHEMA__ZADD_REQUEST__INIT;
    Immudb__Schema__VerifiableZAddRequest vza =
        IMMUDB__SCHEMA__VERIFIABLE_ZADD_REQUEST__INIT;
    Immudb__Schema__ZScanRequest zs = IMMUDB__SCHEMA__ZSCAN_REQUEST__INIT;
    Immudb__Schema__Score lo = IMMUDB__SCHEMA__SCORE__INIT,
                          hi = IMMUDB__SCHEMA__SCORE__INIT;
    Immudb__Schema__ReferenceRequest rr =
        IMMUDB__SCHEMA__REFERENCE_REQUEST__INIT;
    Immudb__Schema__VerifiableReferenceRequest vrr =
        IMMUDB__SCHEMA__VERIFIABLE_REFERENCE_REQUEST__INIT;
    za.set = BIN("s1");
    za.score = 1.5;
    za.key = BIN("k1");
    seed("ZAdd", F_ADMIN, &za.base);
    za.attx = 1;
    za.boundref = 1;
    seed("ZAdd", F_ADMIN, &za.base);
    vza.zaddrequest = &za;
    vza.provesincetx = 1;
    seed("VerifiableZAdd", F_ADMIN, &vza.base);
    zs.set = BIN("s1");
    zs.limit = 10;
    seed("ZScan", F_ADMIN, &zs.base);
    seed("streamZScan", F_ADMIN, &zs.base);
    lo.score = 0;
    hi.score = 100;
    zs.minscore = &lo;
    zs.maxscore = &hi;
    zs.desc = 1;
    zs.seekkey = BIN("k1");
    zs.seekscore = 1.5;
    zs.seekattx = 1;
    seed("ZScan", F_READER, &zs.base);
    rr.key = BIN("r1");
    rr.referencedkey = BIN("k1");
    seed("SetReference", F_ADMIN, &rr.base);
    rr.attx = 1;
    rr.boundref = 1;
    seed("SetReference", F_ADMIN, &rr.base);
    vrr.referencerequest = &rr;
    vrr.provesincetx = 1;
    seed("VerifiableSetReference", F_ADMIN, &vrr.base);
    {
      Immudb__Schema__Op o1 = IMMUDB__SCHEMA__OP__INIT,
                         o2 = IMMUDB__SCHEMA__OP__INIT,
                         o3 = IMMUDB__SCHEMA__OP__INIT;
      Immudb__Schema__Op *ops[3] = {&o1, &o2, &o3};
      Immudb__Schema__ExecAllRequest ea =
          IMMUDB__SCHEMA__EXEC_ALL_REQUEST__INIT;
      o1.operation_case = IMMUDB__SCHEMA__OP__OPERATION_KV;
      o1.kv = &kv1;
      o2.operation_case = IMMUDB__SCHEMA__OP__OPERATION_Z_ADD;
      za.attx = 0;
      za.boundref = 0;
      o2.zadd = &za;
      o3.operation_case = IMMUDB__SCHEMA__OP__OPERATION_REF;
      rr.attx = 0;
      rr.boundref = 0;
      o3.ref = &rr;
      ea.n_operations = 3;
      ea.operations = ops;
      seed("ExecAll", F_ADMIN, &ea.base);
    }
  }
  {
    Immudb__Schema__VerifiableSetRequest vs =
        IMMUDB__SCHEMA__VERIFIABLE_SET_REQUEST__INIT;
    Immudb__Schema__VerifiableGetRequest vg =
        IMMUDB__SCHEMA__VERIFIABLE_GET_REQUEST__INIT;
    Immudb__Schema__VerifiableTxRequest vt =
        IMMUDB__SCHEMA__VERIFIABLE_TX_REQUEST__INIT;
    Immudb__Schema__TxRequest tr = IMMUDB__SCHEMA__TX_REQUEST__INIT;
    Immudb__Schema__TxScanRequest ts = IMMUDB__SCHEMA__TX_SCAN_REQUEST__INIT;
    set.nowait = 0;
    vs.setrequest = &set;
    vs.provesincetx = 1;
    seed("VerifiableSet", F_ADMIN, &vs.base);
    kr.key = BIN("k1");
    vg.keyrequest = &kr;
    vg.provesincetx = 2;
    seed("VerifiableGet", F_ADMIN, &vg.base);
    seed("streamVerifiableGet", F_ADMIN, &vg.base);
    seed("streamGet", F_ADMIN, &kr.base);
    vt.tx = 3;
    vt.provesincetx = 1;
    seed("VerifiableTxById", F_ADMIN, &vt.base);
    vt.provesincetx = 5;
    seed("VerifiableTxById", F_READER, &vt.base);
    tr.tx = 2;
    seed("TxById", F_ADMIN, &tr.base);
    tr.keepreferencesunresolved = 1;
    tr.sincetx = 2;
    seed("TxById", F_SESSION, &tr.base);
    ts.initialtx = 1;
    ts.limit = 5;
    seed("TxScan", F_ADMIN, &ts.base);
    ts.desc = 1;
    ts.initialtx = 100;
    seed("TxScan", F_READER, &ts.base);
  }

  /* Streams: payloads wrapped in chunks of various sizes. */
  {
    sbuf s;
    Immudb__Schema__ZAddRequest za = IMMUDB__SCHEMA__ZADD_REQUEST__INIT;
    memset(&s, 0, sizeof s);
    sb_str(&s, "sk1");
    sb_str(&s, "stream value 1");
    sb_str(&s, "sk2");
    sb_str(&s, "stream value 2");
    seed_raw("streamSet", F_ADMIN | F_CHUNKS(7), s.b, s.n);
    seed_raw("streamSet", F_SESSION | F_CHUNKS(0), s.b, s.n);
    seed_raw("streamSet", F_READER | F_CHUNKS(2), s.b, s.n);
    seed_raw("streamSet", F_ADMIN | F_CHUNKS(1), s.b, s.n - 3);
    memset(&s, 0, sizeof s);
    {
      uint8_t since[8] = {0, 0, 0, 0, 0, 0, 0, 1};
      sb_msg(&s, since, 8);
    }
    sb_str(&s, "svk");
    sb_str(&s, "verified stream value");
    seed_raw("streamVerifiableSet", F_ADMIN | F_CHUNKS(3), s.b, s.n);
    memset(&s, 0, sizeof s);
    sb_str(&s, "ProveSinceTx");
    {
      uint8_t since[8] = {0, 0, 0, 0, 0, 0, 0, 2};
      sb_msg(&s, since, 8);
    }
    sb_str(&s, "svk2");
    sb_str(&s, "v");
    seed_raw("streamVerifiableSet", F_ADMIN | F_CHUNKS(7), s.b, s.n);
    memset(&s, 0, sizeof s);
    sb_msg(&s, "\x01", 1);
    sb_str(&s, "ek1");
    sb_str(&s, "exec value");
    sb_msg(&s, "\x02", 1);
    za.set = BIN("s2");
    za.score = 7;
    za.key = BIN("ek1");
    sb_pb(&s, &za.base);
    seed_raw("streamExecAll", F_ADMIN | F_CHUNKS(4), s.b, s.n);
    sb_msg(&s, "\x04", 1);
    sb_str(&s, "ref");
    seed_raw("streamExecAll", F_ADMIN | F_CHUNKS(7), s.b, s.n);
  }

  /* exportTx / replicateTx / streamExportTx. */
  {
    Immudb__Schema__ExportTxRequest et = IMMUDB__SCHEMA__EXPORT_TX_REQUEST__INIT;
    Immudb__Schema__Chunk *ch;
    sbuf s;
    et.tx = 1;
    seed("exportTx", F_ADMIN, &et.base);
    et.tx = 2;
    seed("exportTx", F_READER, &et.base);
    memset(&s, 0, sizeof s);
    et.tx = 1;
    lp16(&s, &et.base);
    et.tx = 2;
    lp16(&s, &et.base);
    if (method_by_name("streamExportTx") != NULL)
      seed_raw("streamExportTx", F_ADMIN | F_LP16, s.b, s.n);
    /* A genuine frame: replicating it again must be refused. */
    et.tx = 1;
    ch = (Immudb__Schema__Chunk *)internal_call("exportTx", &et.base,
                                                g.admin_tok, NULL);
    if (ch != NULL) {
      seed_raw("replicateTx", F_ADMIN | F_CHUNKS(7), ch->content.data,
               ch->content.len);
      seed_raw("replicateTx", F_ADMIN | F_CHUNKS(5), ch->content.data,
               ch->content.len / 2);
      protobuf_c_message_free_unpacked(&ch->base, NULL);
    }
  }

  /* Several messages to unary methods; an empty call. */
  {
    sbuf s;
    memset(&s, 0, sizeof s);
    kr.key = BIN("k1");
    lp16(&s, &kr.base);
    kr.key = BIN("k2");
    lp16(&s, &kr.base);
    seed_raw("Get", F_ADMIN | F_LP16, s.b, s.n);
    seed_raw("Get", F_ADMIN | F_LP8, "", 0);
    seed_raw("Set", F_ADMIN, "\x0a\x05\x0a\x01", 4); /* truncated */
  }

  /* Auth, users, sessions. */
  {
    Immudb__Schema__LoginRequest lr = IMMUDB__SCHEMA__LOGIN_REQUEST__INIT;
    Immudb__Schema__OpenSessionRequest os =
        IMMUDB__SCHEMA__OPEN_SESSION_REQUEST__INIT;
    Immudb__Schema__CreateUserRequest cu =
        IMMUDB__SCHEMA__CREATE_USER_REQUEST__INIT;
    Immudb__Schema__ChangePasswordRequest cp =
        IMMUDB__SCHEMA__CHANGE_PASSWORD_REQUEST__INIT;
    Immudb__Schema__ChangePermissionRequest cpr =
        IMMUDB__SCHEMA__CHANGE_PERMISSION_REQUEST__INIT;
    Immudb__Schema__SetActiveUserRequest sa =
        IMMUDB__SCHEMA__SET_ACTIVE_USER_REQUEST__INIT;
    Immudb__Schema__Database d = IMMUDB__SCHEMA__DATABASE__INIT;
    lr.user = BIN(ADMIN_USER);
    lr.password = BIN(ADMIN_PW);
    seed("Login", F_NONE, &lr.base);
    lr.password = BIN("wrong");
    seed("Login", F_NONE, &lr.base);
    os.username = BIN(READER_USER);
    os.password = BIN(READER_PW);
    seed("OpenSession", F_NONE, &os.base);
    cu.user = BIN("user1");
    cu.password = BIN("Passw0rd!");
    cu.permission = 2;
    cu.database = (char *)(uintptr_t) "defaultdb";
    seed("CreateUser", F_ADMIN, &cu.base);
    cu.password = BIN("weak");
    seed("CreateUser", F_ADMIN, &cu.base);
    cp.user = BIN("user1");
    cp.oldpassword = BIN("Passw0rd!");
    cp.newpassword = BIN("N3wPassw0rd!");
    seed("ChangePassword", F_ADMIN, &cp.base);
    cpr.action = IMMUDB__SCHEMA__PERMISSION_ACTION__GRANT;
    cpr.username = (char *)(uintptr_t) "user1";
    cpr.database = (char *)(uintptr_t) "defaultdb";
    cpr.permission = 1;
    seed("ChangePermission", F_ADMIN, &cpr.base);
    cpr.action = IMMUDB__SCHEMA__PERMISSION_ACTION__REVOKE;
    seed("ChangePermission", F_ADMIN, &cpr.base);
    sa.active = 0;
    sa.username = (char *)(uintptr_t) "user1";
    seed("SetActiveUser", F_ADMIN, &sa.base);
    d.databasename = (char *)(uintptr_t) "defaultdb";
    seed("UseDatabase", F_READER, &d.base);
  }

  /* Databases. */
  {
    Immudb__Schema__Database d = IMMUDB__SCHEMA__DATABASE__INIT;
    Immudb__Schema__DatabaseSettings ds = IMMUDB__SCHEMA__DATABASE_SETTINGS__INIT;
    Immudb__Schema__CreateDatabaseRequest cd =
        IMMUDB__SCHEMA__CREATE_DATABASE_REQUEST__INIT;
    Immudb__Schema__DatabaseNullableSettings ns =
        IMMUDB__SCHEMA__DATABASE_NULLABLE_SETTINGS__INIT;
    Immudb__Schema__NullableUint32 mkl = IMMUDB__SCHEMA__NULLABLE_UINT32__INIT;
    Immudb__Schema__NullableBool al = IMMUDB__SCHEMA__NULLABLE_BOOL__INIT;
    Immudb__Schema__UpdateDatabaseRequest ud =
        IMMUDB__SCHEMA__UPDATE_DATABASE_REQUEST__INIT;
    Immudb__Schema__LoadDatabaseRequest ld =
        IMMUDB__SCHEMA__LOAD_DATABASE_REQUEST__INIT;
    Immudb__Schema__UnloadDatabaseRequest ul =
        IMMUDB__SCHEMA__UNLOAD_DATABASE_REQUEST__INIT;
    Immudb__Schema__DeleteDatabaseRequest dd =
        IMMUDB__SCHEMA__DELETE_DATABASE_REQUEST__INIT;
    Immudb__Schema__FlushIndexRequest fi =
        IMMUDB__SCHEMA__FLUSH_INDEX_REQUEST__INIT;
    d.databasename = (char *)(uintptr_t) "db1";
    seed("CreateDatabase", F_ADMIN, &d.base);
    seed("CreateDatabase", F_READER, &d.base);
    ds.databasename = (char *)(uintptr_t) "db2";
    ds.maxkeylen = 64;
    seed("CreateDatabaseWith", F_ADMIN, &ds.base);
    mkl.value = 256;
    al.value = 1;
    ns.maxkeylen = &mkl;
    ns.autoload = &al;
    cd.name = (char *)(uintptr_t) "db3";
    cd.settings = &ns;
    cd.ifnotexists = 1;
    seed("CreateDatabaseV2", F_ADMIN, &cd.base);
    ud.database = (char *)(uintptr_t) "db3";
    al.value = 0;
    ud.settings = &ns;
    seed("UpdateDatabaseV2", F_ADMIN, &ud.base);
    ds.databasename = (char *)(uintptr_t) "db2";
    seed("UpdateDatabase", F_ADMIN, &ds.base);
    d.databasename = (char *)(uintptr_t) "db1";
    seed("UseDatabase", F_ADMIN, &d.base);
    ul.database = (char *)(uintptr_t) "db1";
    seed("UnloadDatabase", F_ADMIN, &ul.base);
    ld.database = (char *)(uintptr_t) "db1";
    seed("LoadDatabase", F_ADMIN, &ld.base);
    seed("UnloadDatabase", F_ADMIN, &ul.base);
    dd.database = (char *)(uintptr_t) "db1";
    seed("DeleteDatabase", F_ADMIN, &dd.base);
    dd.database = (char *)(uintptr_t) "defaultdb";
    seed("DeleteDatabase", F_ADMIN, &dd.base);
    fi.cleanuppercentage = 0.5f;
    fi.synced = 1;
    seed("FlushIndex", F_ADMIN, &fi.base);
  }

  /* Last: calls that drop the harness's credentials (repaired). */
  seed("Logout", F_ADMIN, NULL);
  seed("CloseSession", F_SESSION, NULL);
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s OUTDIR\n", argv[0]);
    return 2;
  }
  g_out = argv[1];
  init_once();
  gen_all();
  printf("%u seeds written to %s\n", g_nseeds, g_out);
  return 0;
}
#endif /* IMMU_FUZZ_SVC_GEN */
