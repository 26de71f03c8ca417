/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Tests of the auth half of ImmuService (src/server/auth.c, svc_admin.c):
 * identity, login/tokens, sessions, users, permissions, the database
 * manager and the method table.
 *
 * No sockets: the transport's call API (immu_grpc_call_* of
 * server/server.h) is the shared fake call of tests/server/fake_call.c,
 * which holds one request message, the metadata and the peer, and records
 * what the handler sends and how it finishes. Handlers are looked up in
 * the real method table (immu_server_methods) and run by fake_call_run.
 *
 * The data half (svc_kv.c) is not linked: two stub data RPCs stand in for
 * it, "Get" (needs READ on the selected database), "Set" (READWRITE) and
 * "GetAll" (READWRITE, but a read); they finish OK with the selected
 * database's name as the message.
 *
 * Every test uses its own data directory under $IMMU_TEST_TMPDIR.
 */
#include <ftw.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "google/protobuf/empty.pb-c.h"
#include "schema.pb-c.h"
#include "server/server.h"
#include "server/svc.h"

#include "fake_call.h"

/* A string literal for a protobuf-c char * / uint8_t * field. */
#define S(x) ((char *)(uintptr_t)(x))
#define B(x) ((uint8_t *)(uintptr_t)(x))

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
 * and hold the handlers to reading only the request messages there are. */
static void call_init(immu_grpc_call *c, const char *path) {
  fake_call_init(c, path);
  c->record_sent = 1;
  c->check_msg_index = 1;
}

/* ------------------------------------------------------------------ */
/* Stub data half                                                      */
/* ------------------------------------------------------------------ */

static void stub_data(immu_grpc_call *call, void *arg, int need) {
  immu_srv_ctx ctx;
  if (immu_srv_begin(arg, call, need, 1, &ctx) != 0)
    return;
  assert_non_null(ctx.db);
  immu_grpc_call_finish(call, IMMU_GRPC_OK, ctx.db_name);
  immu_srv_end(&ctx);
}

static void stub_get(immu_grpc_call *call, void *arg) {
  stub_data(call, arg, IMMU_PERM_READ);
}

static void stub_set(immu_grpc_call *call, void *arg) {
  stub_data(call, arg, IMMU_PERM_READWRITE);
}

/* immudb puts GetAll, a read, at READWRITE. */
static void stub_get_all(immu_grpc_call *call, void *arg) {
  stub_data(call, arg, IMMU_PERM_READWRITE);
}

const immu_svc_entry immu__svc_kv_methods[] = {
    {"Get", stub_get}, {"Set", stub_set}, {"GetAll", stub_get_all}};
const size_t immu__svc_kv_nmethods = 3;

/* ------------------------------------------------------------------ */
/* Fixture and helpers                                                 */
/* ------------------------------------------------------------------ */

typedef struct fx {
  char dir[512];
  immu_server_config cfg;
  immu_server *s;
  char admin_tok[65];
} fx;

static void quiet_log(void *arg, int level, const char *msg) {
  (void)arg;
  if (getenv("IMMU_TEST_VERBOSE"))
    fprintf(stderr, "[%d] %s\n", level, msg);
}

static int rm_cb(const char *p, const struct stat *sb, int f, struct FTW *ftw) {
  (void)sb;
  (void)f;
  (void)ftw;
  return remove(p);
}

static void fx_dir(fx *f) {
  const char *root = getenv("IMMU_TEST_TMPDIR");
  snprintf(f->dir, sizeof f->dir, "%s/authXXXXXX", root ? root : "/tmp");
  assert_non_null(mkdtemp(f->dir));
}

static void fx_cfg(fx *f) {
  immu_server_config_init(&f->cfg);
  f->cfg.dir = f->dir;
  f->cfg.listen_address = S("127.0.0.1");
  f->cfg.synced = 0;
  f->cfg.log = quiet_log;
}

static void fx_start(fx *f) {
  char *err = NULL;
  int rc = immu_server_new(&f->cfg, &f->s, &err);
  if (rc != 0)
    fail_msg("immu_server_new: %d %s", rc, err ? err : "");
  assert_null(err);
}

static void fx_stop(fx *f) {
  immu_server_free(f->s);
  f->s = NULL;
}

static int setup(void **state) {
  fx *f = calloc(1, sizeof *f);
  assert_non_null(f);
  fx_dir(f);
  fx_cfg(f);
  fx_start(f);
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fx *f = *state;
  fx_stop(f);
  nftw(f->dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
  free(f);
  return 0;
}

static const immu_grpc_method *method_of(immu_server *s, const char *name) {
  const immu_grpc_method *m;
  size_t n;
  char path[128];
  snprintf(path, sizeof path, "/immudb.schema.ImmuService/%s", name);
  immu_server_methods(s, &m, &n);
  for (size_t i = 0; i < n; i++)
    if (strcmp(m[i].path, path) == 0)
      return &m[i];
  fail_msg("no method %s", name);
  return NULL;
}

typedef struct callopt {
  const char *token;   /* "authorization" */
  const char *session; /* "sessionid" */
  int remote;          /* peer is not loopback */
} callopt;

/* Runs method |name| with request |req| (NULL = empty message) as the
 * transport does (fake_call_run fails the test unless the call ends
 * finished). The call must be released with fake_call_clear. Returns the
 * status. */
static int run(immu_server *s, const char *name, const ProtobufCMessage *req,
               const callopt *o, immu_grpc_call *c) {
  static _Thread_local char paths[8][128];
  static _Thread_local int pi;
  char *path = paths[pi++ % 8];
  const immu_grpc_method *m = method_of(s, name);
  snprintf(path, 128, "/immudb.schema.ImmuService/%s", name);
  call_init(c, path);
  fake_call_add_pb(c, req);
  if (o && o->remote) {
    c->peer_ip = "10.1.2.3";
    c->peer_remote = 1;
  }
  if (o && o->token)
    fake_call_set_auth(c, o->token);
  if (o && o->session)
    fake_call_set_sid(c, o->session);
  fake_call_run(c, m->handler, s, m->flags);
  return c->status;
}

static callopt tokopt(const char *tok) {
  callopt o = {tok, NULL, 0};
  return o;
}

/* Runs and expects |want|; the call is released. */
static void expect(immu_server *s, const char *name,
                   const ProtobufCMessage *req, const char *tok, int want,
                   const char *msg_part) {
  immu_grpc_call c;
  callopt o = tokopt(tok);
  int st = run(s, name, req, &o, &c);
  if (st != want)
    fail_msg("%s: status %d \"%s\", want %d", name, st, c.message, want);
  if (msg_part != NULL && strstr(c.message, msg_part) == NULL)
    fail_msg("%s: message \"%s\" lacks \"%s\"", name, c.message, msg_part);
  fake_call_clear(&c);
}

/* Login; returns the status and fills |tok| on success. */
static int login(immu_server *s, const char *user, const char *pw, char tok[65],
                 char *warning, size_t wcap) {
  Immudb__Schema__LoginRequest req = IMMUDB__SCHEMA__LOGIN_REQUEST__INIT;
  Immudb__Schema__LoginResponse *resp;
  immu_grpc_call c;
  int st;
  req.user.data = (uint8_t *)(uintptr_t)user;
  req.user.len = strlen(user);
  req.password.data = (uint8_t *)(uintptr_t)pw;
  req.password.len = strlen(pw);
  st = run(s, "Login", &req.base, NULL, &c);
  if (st == IMMU_GRPC_OK) {
    assert_int_equal(c.nsent, 1);
    resp =
        immudb__schema__login_response__unpack(NULL, c.sent_len[0], c.sent[0]);
    assert_non_null(resp);
    assert_int_equal(strlen(resp->token), 64);
    snprintf(tok, 65, "%s", resp->token);
    if (warning != NULL)
      snprintf(warning, wcap, "%.*s", (int)resp->warning.len,
               (const char *)resp->warning.data);
    immudb__schema__login_response__free_unpacked(resp, NULL);
  }
  fake_call_clear(&c);
  return st;
}

static void admin_login(fx *f) {
  assert_int_equal(login(f->s, "immudb", "immudb", f->admin_tok, NULL, 0),
                   IMMU_GRPC_OK);
}

static int use_db(immu_server *s, const char *tok, const char *db,
                  char out[65]) {
  Immudb__Schema__Database req = IMMUDB__SCHEMA__DATABASE__INIT;
  Immudb__Schema__UseDatabaseReply *resp;
  immu_grpc_call c;
  callopt o = tokopt(tok);
  int st;
  req.databasename = (char *)(uintptr_t)db;
  st = run(s, "UseDatabase", &req.base, &o, &c);
  if (st == IMMU_GRPC_OK) {
    resp = immudb__schema__use_database_reply__unpack(NULL, c.sent_len[0],
                                                      c.sent[0]);
    assert_non_null(resp);
    snprintf(out, 65, "%s", resp->token);
    immudb__schema__use_database_reply__free_unpacked(resp, NULL);
  }
  fake_call_clear(&c);
  return st;
}

static void create_db(immu_server *s, const char *tok, const char *name,
                      int want, const char *msg) {
  Immudb__Schema__Database req = IMMUDB__SCHEMA__DATABASE__INIT;
  req.databasename = (char *)(uintptr_t)name;
  expect(s, "CreateDatabase", &req.base, tok, want, msg);
}

static void db_op(immu_server *s, const char *tok, const char *op,
                  const char *name, int want, const char *msg) {
  Immudb__Schema__LoadDatabaseRequest req =
      IMMUDB__SCHEMA__LOAD_DATABASE_REQUEST__INIT;
  req.database = (char *)(uintptr_t)name;
  expect(s, op, &req.base, tok, want, msg);
}

static void create_user(immu_server *s, const char *tok, const char *user,
                        const char *pw, uint32_t perm, const char *db, int want,
                        const char *msg) {
  Immudb__Schema__CreateUserRequest req =
      IMMUDB__SCHEMA__CREATE_USER_REQUEST__INIT;
  req.user.data = (uint8_t *)(uintptr_t)user;
  req.user.len = strlen(user);
  req.password.data = (uint8_t *)(uintptr_t)pw;
  req.password.len = strlen(pw);
  req.permission = perm;
  req.database = (char *)(uintptr_t)db;
  expect(s, "CreateUser", &req.base, tok, want, msg);
}

static void change_perm(immu_server *s, const char *tok, int action,
                        const char *user, const char *db, uint32_t perm,
                        int want, const char *msg) {
  Immudb__Schema__ChangePermissionRequest req =
      IMMUDB__SCHEMA__CHANGE_PERMISSION_REQUEST__INIT;
  req.action = action;
  req.username = (char *)(uintptr_t)user;
  req.database = (char *)(uintptr_t)db;
  req.permission = perm;
  expect(s, "ChangePermission", &req.base, tok, want, msg);
}

/* DatabaseList names joined with ','. */
static void list_dbs(immu_server *s, const char *tok, char *out, size_t cap) {
  immu_grpc_call c;
  callopt o = tokopt(tok);
  Immudb__Schema__DatabaseListResponse *r;
  assert_int_equal(run(s, "DatabaseList", NULL, &o, &c), IMMU_GRPC_OK);
  r = immudb__schema__database_list_response__unpack(NULL, c.sent_len[0],
                                                     c.sent[0]);
  assert_non_null(r);
  out[0] = '\0';
  for (size_t i = 0; i < r->n_databases; i++) {
    size_t n = strlen(out);
    snprintf(out + n, cap - n, "%s%s", i ? "," : "",
             r->databases[i]->databasename);
  }
  immudb__schema__database_list_response__free_unpacked(r, NULL);
  fake_call_clear(&c);
}

/* ------------------------------------------------------------------ */
/* Tests                                                               */
/* ------------------------------------------------------------------ */

static void test_identity_persists(void **state) {
  fx *f = *state;
  char uuid[21], path[600];
  struct stat st;
  snprintf(uuid, sizeof uuid, "%s", immu_server_uuid(f->s));
  assert_int_equal(strlen(uuid), 20);
  for (int i = 0; i < 20; i++)
    assert_non_null(strchr("0123456789abcdefghijklmnopqrstuv", uuid[i]));
  snprintf(path, sizeof path, "%s/immudb.identifier", f->dir);
  assert_int_equal(stat(path, &st), 0);
  assert_int_equal(st.st_size, 12);
  fx_stop(f);
  fx_start(f);
  assert_string_equal(immu_server_uuid(f->s), uuid);
  /* The first 4 bytes are the creation time (big-endian unix seconds):
   * decode the first 7 characters (35 bits) back. */
  {
    uint64_t bits = 0;
    int64_t t;
    for (int i = 0; i < 7; i++)
      bits = (bits << 5) |
             (uint64_t)(strchr("0123456789abcdefghijklmnopqrstuv", uuid[i]) -
                        "0123456789abcdefghijklmnopqrstuv");
    t = (int64_t)(bits >> 3);
    assert_true(llabs(t - (int64_t)time(NULL)) < 600);
  }
  {
    fx g;
    memset(&g, 0, sizeof g);
    fx_dir(&g);
    fx_cfg(&g);
    fx_start(&g);
    assert_string_not_equal(immu_server_uuid(g.s), uuid);
    fx_stop(&g);
    nftw(g.dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
  }
}

static void test_login(void **state) {
  fx *f = *state;
  char tok[65], warn[256];
  assert_int_equal(login(f->s, "immudb", "immudb", tok, warn, sizeof warn),
                   IMMU_GRPC_OK);
  assert_string_equal(warn, "immudb user has the default password: please "
                            "change it to ensure proper security");
  assert_int_equal(login(f->s, "immudb", "wrong", tok, NULL, 0),
                   IMMU_GRPC_UNAUTHENTICATED);
  assert_int_equal(login(f->s, "nobody", "immudb", tok, NULL, 0),
                   IMMU_GRPC_UNAUTHENTICATED);
  assert_int_equal(login(f->s, "", "", tok, NULL, 0),
                   IMMU_GRPC_UNAUTHENTICATED);
}

static void test_token_checks(void **state) {
  fx *f = *state;
  char bearer[80], other[65];
  immu_grpc_call c;

  /* No credentials, a bogus token. */
  expect(f->s, "Get", NULL, NULL, IMMU_GRPC_UNAUTHENTICATED, "not logged in");
  expect(f->s, "Get", NULL, "deadbeef", IMMU_GRPC_UNAUTHENTICATED,
         "invalid token");
  /* One user, one database: the login token selects defaultdb. */
  admin_login(f);
  expect(f->s, "Get", NULL, f->admin_tok, IMMU_GRPC_OK, "defaultdb");
  snprintf(bearer, sizeof bearer, "Bearer %s", f->admin_tok);
  expect(f->s, "Set", NULL, bearer, IMMU_GRPC_OK, "defaultdb");
  /* The session id wins over the token; an unknown one fails. */
  {
    callopt o = {f->admin_tok, "nosuchsession", 0};
    assert_int_equal(run(f->s, "Get", NULL, &o, &c), IMMU_GRPC_UNAUTHENTICATED);
    fake_call_clear(&c);
  }
  /* Logout kills only that token. */
  assert_int_equal(login(f->s, "immudb", "immudb", other, NULL, 0),
                   IMMU_GRPC_OK);
  expect(f->s, "Logout", NULL, bearer, IMMU_GRPC_OK, NULL);
  expect(f->s, "Get", NULL, f->admin_tok, IMMU_GRPC_UNAUTHENTICATED, NULL);
  expect(f->s, "Get", NULL, other, IMMU_GRPC_OK, NULL);
  expect(f->s, "Logout", NULL, NULL, IMMU_GRPC_UNAUTHENTICATED, NULL);
}

static void test_databases(void **state) {
  fx *f = *state;
  char list[256], t1[65], path[600];
  char longname[140];
  struct stat st;

  admin_login(f);
  create_db(f->s, f->admin_tok, "db1", IMMU_GRPC_OK, NULL);
  create_db(f->s, f->admin_tok, "db1", IMMU_GRPC_INVALID_ARGUMENT,
            "database db1 already exists");
  create_db(f->s, f->admin_tok, "", IMMU_GRPC_INVALID_ARGUMENT,
            "database name length outside of limits");
  memset(longname, 'a', 129);
  longname[129] = '\0';
  create_db(f->s, f->admin_tok, longname, IMMU_GRPC_INVALID_ARGUMENT,
            "length outside of limits");
  longname[128] = '\0';
  create_db(f->s, f->admin_tok, longname, IMMU_GRPC_OK, NULL);
  create_db(f->s, f->admin_tok, "Db2", IMMU_GRPC_INVALID_ARGUMENT,
            "unrecognized character in database name");
  create_db(f->s, f->admin_tok, "db-2", IMMU_GRPC_INVALID_ARGUMENT,
            "punctuation marks and symbols are not allowed");
  create_db(f->s, f->admin_tok, "db 2", IMMU_GRPC_INVALID_ARGUMENT,
            "unrecognized character");
  create_db(f->s, f->admin_tok, "systemdb", IMMU_GRPC_INVALID_ARGUMENT,
            "reserved");
  create_db(f->s, f->admin_tok, "defaultdb", IMMU_GRPC_INVALID_ARGUMENT,
            "reserved");
  db_op(f->s, f->admin_tok, "DeleteDatabase", longname,
        IMMU_GRPC_FAILED_PRECONDITION, "unload it");
  db_op(f->s, f->admin_tok, "UnloadDatabase", longname, IMMU_GRPC_OK, NULL);
  db_op(f->s, f->admin_tok, "DeleteDatabase", longname, IMMU_GRPC_OK, NULL);

  list_dbs(f->s, f->admin_tok, list, sizeof list);
  assert_string_equal(list, "defaultdb,db1");

  /* Multi-database now: the login token has no database. */
  expect(f->s, "Get", NULL, f->admin_tok, IMMU_GRPC_FAILED_PRECONDITION,
         "please select a database first");
  assert_int_equal(use_db(f->s, f->admin_tok, "db1", t1), IMMU_GRPC_OK);
  assert_string_not_equal(t1, f->admin_tok);
  expect(f->s, "Get", NULL, t1, IMMU_GRPC_OK, "db1");
  assert_int_equal(use_db(f->s, f->admin_tok, "nope", t1),
                   IMMU_GRPC_INVALID_ARGUMENT);
  assert_int_equal(use_db(f->s, f->admin_tok, "db1", t1), IMMU_GRPC_OK);

  /* Unload: the database's calls fail, then delete removes it. */
  db_op(f->s, f->admin_tok, "DeleteDatabase", "db1",
        IMMU_GRPC_FAILED_PRECONDITION, "unload it before deleting");
  db_op(f->s, f->admin_tok, "UnloadDatabase", "db1", IMMU_GRPC_OK, NULL);
  db_op(f->s, f->admin_tok, "UnloadDatabase", "db1",
        IMMU_GRPC_FAILED_PRECONDITION, "not loaded");
  expect(f->s, "Get", NULL, t1, IMMU_GRPC_FAILED_PRECONDITION,
         "database db1 is not loaded");
  db_op(f->s, f->admin_tok, "UnloadDatabase", "defaultdb",
        IMMU_GRPC_PERMISSION_DENIED, "reserved");
  db_op(f->s, f->admin_tok, "DeleteDatabase", "defaultdb",
        IMMU_GRPC_PERMISSION_DENIED, "reserved");

  /* Unloaded stays unloaded across a restart. */
  fx_stop(f);
  fx_start(f);
  admin_login(f);
  {
    immu_grpc_call c;
    callopt o = tokopt(f->admin_tok);
    Immudb__Schema__DatabaseListRequestV2 rq =
        IMMUDB__SCHEMA__DATABASE_LIST_REQUEST_V2__INIT;
    Immudb__Schema__DatabaseListResponseV2 *r;
    assert_int_equal(run(f->s, "DatabaseListV2", &rq.base, &o, &c),
                     IMMU_GRPC_OK);
    r = immudb__schema__database_list_response_v2__unpack(NULL, c.sent_len[0],
                                                          c.sent[0]);
    assert_non_null(r);
    assert_int_equal(r->n_databases, 2);
    assert_string_equal(r->databases[0]->name, "defaultdb");
    assert_true(r->databases[0]->loaded);
    assert_string_equal(r->databases[1]->name, "db1");
    assert_false(r->databases[1]->loaded);
    assert_string_equal(r->databases[1]->created_by, "immudb");
    assert_non_null(r->databases[1]->settings);
    assert_int_equal(r->databases[1]->settings->maxkeylen->value, 1024);
    immudb__schema__database_list_response_v2__free_unpacked(r, NULL);
    fake_call_clear(&c);
  }
  db_op(f->s, f->admin_tok, "LoadDatabase", "db1", IMMU_GRPC_OK, NULL);
  db_op(f->s, f->admin_tok, "LoadDatabase", "db1",
        IMMU_GRPC_FAILED_PRECONDITION, "already loaded");
  assert_int_equal(use_db(f->s, f->admin_tok, "db1", t1), IMMU_GRPC_OK);
  expect(f->s, "Set", NULL, t1, IMMU_GRPC_OK, "db1");
  db_op(f->s, f->admin_tok, "UnloadDatabase", "db1", IMMU_GRPC_OK, NULL);
  db_op(f->s, f->admin_tok, "DeleteDatabase", "db1", IMMU_GRPC_OK, NULL);
  snprintf(path, sizeof path, "%s/db1", f->dir);
  assert_int_not_equal(stat(path, &st), 0);
  list_dbs(f->s, f->admin_tok, list, sizeof list);
  assert_string_equal(list, "defaultdb");
  db_op(f->s, f->admin_tok, "LoadDatabase", "db1", IMMU_GRPC_INVALID_ARGUMENT,
        "does not exist");
  /* And it is gone after a restart too; the name can be reused. */
  fx_stop(f);
  fx_start(f);
  admin_login(f);
  list_dbs(f->s, f->admin_tok, list, sizeof list);
  assert_string_equal(list, "defaultdb");
  create_db(f->s, f->admin_tok, "db1", IMMU_GRPC_OK, NULL);
}

static void test_create_v2_settings(void **state) {
  fx *f = *state;
  Immudb__Schema__CreateDatabaseRequest req =
      IMMUDB__SCHEMA__CREATE_DATABASE_REQUEST__INIT;
  Immudb__Schema__DatabaseNullableSettings ns =
      IMMUDB__SCHEMA__DATABASE_NULLABLE_SETTINGS__INIT;
  Immudb__Schema__NullableUint32 mk = IMMUDB__SCHEMA__NULLABLE_UINT32__INIT;
  Immudb__Schema__NullableUint32 cache = IMMUDB__SCHEMA__NULLABLE_UINT32__INIT;
  Immudb__Schema__NullableBool yes = IMMUDB__SCHEMA__NULLABLE_BOOL__INIT;
  Immudb__Schema__ReplicationNullableSettings rep =
      IMMUDB__SCHEMA__REPLICATION_NULLABLE_SETTINGS__INIT;
  Immudb__Schema__CreateDatabaseResponse *r;
  immu_grpc_call c;
  callopt o;

  admin_login(f);
  o = tokopt(f->admin_tok);
  mk.value = 512;
  cache.value = 12345; /* a tuning knob we accept and ignore */
  ns.maxkeylen = &mk;
  ns.txlogcachesize = &cache;
  req.name = S("db2");
  req.settings = &ns;
  assert_int_equal(run(f->s, "CreateDatabaseV2", &req.base, &o, &c),
                   IMMU_GRPC_OK);
  r = immudb__schema__create_database_response__unpack(NULL, c.sent_len[0],
                                                       c.sent[0]);
  assert_non_null(r);
  assert_string_equal(r->name, "db2");
  assert_false(r->alreadyexisted);
  assert_int_equal(r->settings->maxkeylen->value, 512);
  assert_null(r->settings->txlogcachesize);
  immudb__schema__create_database_response__free_unpacked(r, NULL);
  fake_call_clear(&c);

  req.ifnotexists = 1;
  assert_int_equal(run(f->s, "CreateDatabaseV2", &req.base, &o, &c),
                   IMMU_GRPC_OK);
  r = immudb__schema__create_database_response__unpack(NULL, c.sent_len[0],
                                                       c.sent[0]);
  assert_true(r->alreadyexisted);
  immudb__schema__create_database_response__free_unpacked(r, NULL);
  fake_call_clear(&c);

  /* Invalid and unsupported settings. */
  req.name = S("db3");
  req.ifnotexists = 0;
  mk.value = 0;
  expect(f->s, "CreateDatabaseV2", &req.base, f->admin_tok,
         IMMU_GRPC_INVALID_ARGUMENT, "maxKeyLen");
  mk.value = 100;
  yes.value = 1;
  rep.replica = &yes;
  ns.replicationsettings = &rep;
  expect(f->s, "CreateDatabaseV2", &req.base, f->admin_tok,
         IMMU_GRPC_UNIMPLEMENTED, "replication");
  ns.replicationsettings = NULL;

  /* Update: same value is fine, a change of a fixed one is not. */
  {
    Immudb__Schema__UpdateDatabaseRequest up =
        IMMUDB__SCHEMA__UPDATE_DATABASE_REQUEST__INIT;
    Immudb__Schema__NullableBool no = IMMUDB__SCHEMA__NULLABLE_BOOL__INIT;
    up.database = S("db2");
    up.settings = &ns;
    mk.value = 512;
    expect(f->s, "UpdateDatabaseV2", &up.base, f->admin_tok, IMMU_GRPC_OK,
           NULL);
    mk.value = 256;
    expect(f->s, "UpdateDatabaseV2", &up.base, f->admin_tok,
           IMMU_GRPC_FAILED_PRECONDITION, "can not be changed");
    ns.maxkeylen = NULL;
    no.value = 0;
    ns.autoload = &no;
    expect(f->s, "UpdateDatabaseV2", &up.base, f->admin_tok, IMMU_GRPC_OK,
           NULL);
    up.database = S("systemdb");
    expect(f->s, "UpdateDatabaseV2", &up.base, f->admin_tok,
           IMMU_GRPC_PERMISSION_DENIED, "reserved");
  }
  /* Legacy CreateDatabaseWith / settings of the selected database. */
  {
    Immudb__Schema__DatabaseSettings ds =
        IMMUDB__SCHEMA__DATABASE_SETTINGS__INIT;
    Immudb__Schema__DatabaseSettings *got;
    char t[65];
    ds.databasename = S("db4");
    ds.maxtxentries = 77;
    expect(f->s, "CreateDatabaseWith", &ds.base, f->admin_tok, IMMU_GRPC_OK,
           NULL);
    assert_int_equal(use_db(f->s, f->admin_tok, "db4", t), IMMU_GRPC_OK);
    o = tokopt(t);
    assert_int_equal(run(f->s, "GetDatabaseSettings", NULL, &o, &c),
                     IMMU_GRPC_OK);
    got = immudb__schema__database_settings__unpack(NULL, c.sent_len[0],
                                                    c.sent[0]);
    assert_non_null(got);
    assert_string_equal(got->databasename, "db4");
    assert_int_equal(got->maxtxentries, 77);
    immudb__schema__database_settings__free_unpacked(got, NULL);
    fake_call_clear(&c);
    expect(f->s, "GetDatabaseSettingsV2", NULL, t, IMMU_GRPC_OK, NULL);
    expect(f->s, "DatabaseHealth", NULL, t, IMMU_GRPC_OK, NULL);
    {
      Immudb__Schema__FlushIndexRequest fr =
          IMMUDB__SCHEMA__FLUSH_INDEX_REQUEST__INIT;
      fr.cleanuppercentage = 10;
      expect(f->s, "FlushIndex", &fr.base, t, IMMU_GRPC_OK, NULL);
      fr.cleanuppercentage = 101;
      expect(f->s, "FlushIndex", &fr.base, t, IMMU_GRPC_INVALID_ARGUMENT, NULL);
    }
    expect(f->s, "CompactIndex", NULL, t, IMMU_GRPC_OK, NULL);
    ds.replica = 1;
    ds.databasename = S("db5");
    expect(f->s, "CreateDatabaseWith", &ds.base, f->admin_tok,
           IMMU_GRPC_UNIMPLEMENTED, "replication");
  }
  /* db2 was set to autoload=false: after a restart it is not loaded, and
   * its settings still read as created. */
  fx_stop(f);
  fx_start(f);
  admin_login(f);
  {
    Immudb__Schema__DatabaseListRequestV2 rq =
        IMMUDB__SCHEMA__DATABASE_LIST_REQUEST_V2__INIT;
    Immudb__Schema__DatabaseListResponseV2 *l;
    int seen = 0;
    o = tokopt(f->admin_tok);
    assert_int_equal(run(f->s, "DatabaseListV2", &rq.base, &o, &c),
                     IMMU_GRPC_OK);
    l = immudb__schema__database_list_response_v2__unpack(NULL, c.sent_len[0],
                                                          c.sent[0]);
    assert_non_null(l);
    for (size_t i = 0; i < l->n_databases; i++) {
      if (strcmp(l->databases[i]->name, "db2") == 0) {
        seen = 1;
        assert_false(l->databases[i]->loaded);
        assert_int_equal(l->databases[i]->settings->maxkeylen->value, 512);
        assert_false(l->databases[i]->settings->autoload->value);
      }
      if (strcmp(l->databases[i]->name, "db4") == 0) {
        assert_true(l->databases[i]->loaded);
        assert_int_equal(l->databases[i]->settings->maxtxentries->value, 77);
      }
    }
    assert_true(seen);
    immudb__schema__database_list_response_v2__free_unpacked(l, NULL);
    fake_call_clear(&c);
  }
}

static void test_users(void **state) {
  fx *f = *state;
  char tok[65], list[128];
  Immudb__Schema__ChangePasswordRequest cp =
      IMMUDB__SCHEMA__CHANGE_PASSWORD_REQUEST__INIT;
  Immudb__Schema__SetActiveUserRequest sa =
      IMMUDB__SCHEMA__SET_ACTIVE_USER_REQUEST__INIT;

  admin_login(f);
  create_user(f->s, f->admin_tok, "alice", "weak", IMMU_PERM_READWRITE,
              "defaultdb", IMMU_GRPC_INVALID_ARGUMENT,
              "password must have between 8 and 32 letters, digits and "
              "special characters of which at least 1 uppercase letter, 1 "
              "digit and 1 special character");
  create_user(f->s, f->admin_tok, "alice", "nouppercase1!", IMMU_PERM_READWRITE,
              "defaultdb", IMMU_GRPC_INVALID_ARGUMENT, "uppercase");
  create_user(f->s, f->admin_tok, "alice", "Alice123!", 255, "defaultdb",
              IMMU_GRPC_INVALID_ARGUMENT, "invalid permission");
  create_user(f->s, f->admin_tok, "alice", "Alice123!", IMMU_PERM_READWRITE,
              "nodb", IMMU_GRPC_INVALID_ARGUMENT, "does not exist");
  create_user(f->s, f->admin_tok, "al ice", "Alice123!", IMMU_PERM_READWRITE,
              "defaultdb", IMMU_GRPC_INVALID_ARGUMENT, "username");
  create_user(f->s, f->admin_tok, "alice", "Alice123!", IMMU_PERM_READWRITE,
              "defaultdb", IMMU_GRPC_OK, NULL);
  create_user(f->s, f->admin_tok, "alice", "Alice123!", IMMU_PERM_READWRITE,
              "defaultdb", IMMU_GRPC_INVALID_ARGUMENT, "user already exists");
  assert_int_equal(login(f->s, "alice", "Alice123!", tok, NULL, 0),
                   IMMU_GRPC_OK);

  /* Own password: the old one is required. */
  cp.user.data = B("alice");
  cp.user.len = 5;
  cp.oldpassword.data = B("Wrong123!");
  cp.oldpassword.len = 9;
  cp.newpassword.data = B("Alice456?");
  cp.newpassword.len = 9;
  expect(f->s, "ChangePassword", &cp.base, tok, IMMU_GRPC_PERMISSION_DENIED,
         "old password is incorrect");
  cp.oldpassword.data = B("Alice123!");
  expect(f->s, "ChangePassword", &cp.base, tok, IMMU_GRPC_OK, NULL);
  assert_int_equal(login(f->s, "alice", "Alice123!", tok, NULL, 0),
                   IMMU_GRPC_UNAUTHENTICATED);
  assert_int_equal(login(f->s, "alice", "Alice456?", tok, NULL, 0),
                   IMMU_GRPC_OK);
  /* alice may not change the sysadmin's password. */
  cp.user.data = B("immudb");
  cp.user.len = 6;
  expect(f->s, "ChangePassword", &cp.base, tok, IMMU_GRPC_PERMISSION_DENIED,
         NULL);
  /* The sysadmin changes alice's without her old one; weak is refused. */
  cp.user.data = B("alice");
  cp.user.len = 5;
  cp.oldpassword.len = 0;
  cp.newpassword.data = B("short");
  cp.newpassword.len = 5;
  expect(f->s, "ChangePassword", &cp.base, f->admin_tok,
         IMMU_GRPC_INVALID_ARGUMENT, "password must have");
  cp.newpassword.data = B("Alice789#");
  cp.newpassword.len = 9;
  expect(f->s, "ChangePassword", &cp.base, f->admin_tok, IMMU_GRPC_OK, NULL);
  assert_int_equal(login(f->s, "alice", "Alice789#", tok, NULL, 0),
                   IMMU_GRPC_OK);

  /* ListUsers: the sysadmin sees both, alice (not admin) may not list. */
  {
    immu_grpc_call c;
    callopt o = tokopt(f->admin_tok);
    Immudb__Schema__UserList *ul;
    assert_int_equal(run(f->s, "ListUsers", NULL, &o, &c), IMMU_GRPC_OK);
    ul = immudb__schema__user_list__unpack(NULL, c.sent_len[0], c.sent[0]);
    assert_non_null(ul);
    list[0] = '\0';
    for (size_t i = 0; i < ul->n_users; i++) {
      size_t n = strlen(list);
      snprintf(list + n, sizeof list - n, "%s%.*s", i ? "," : "",
               (int)ul->users[i]->user.len,
               (const char *)ul->users[i]->user.data);
      if (ul->users[i]->user.len == 5) {
        assert_true(ul->users[i]->active);
        assert_string_equal(ul->users[i]->createdby, "immudb");
        assert_int_equal(ul->users[i]->n_permissions, 1);
        assert_string_equal(ul->users[i]->permissions[0]->database,
                            "defaultdb");
        assert_int_equal(ul->users[i]->permissions[0]->permission,
                         IMMU_PERM_READWRITE);
      }
    }
    assert_string_equal(list, "immudb,alice");
    immudb__schema__user_list__free_unpacked(ul, NULL);
    fake_call_clear(&c);
  }
  expect(f->s, "ListUsers", NULL, tok, IMMU_GRPC_PERMISSION_DENIED, NULL);

  /* Deactivation: login fails and live tokens stop working. */
  sa.username = S("alice");
  sa.active = 0;
  expect(f->s, "SetActiveUser", &sa.base, tok, IMMU_GRPC_PERMISSION_DENIED,
         NULL);
  expect(f->s, "SetActiveUser", &sa.base, f->admin_tok, IMMU_GRPC_OK, NULL);
  expect(f->s, "Get", NULL, tok, IMMU_GRPC_UNAUTHENTICATED, NULL);
  assert_int_equal(login(f->s, "alice", "Alice789#", tok, NULL, 0),
                   IMMU_GRPC_PERMISSION_DENIED);
  sa.username = S("immudb");
  expect(f->s, "SetActiveUser", &sa.base, f->admin_tok,
         IMMU_GRPC_PERMISSION_DENIED, "your own");
  sa.username = S("alice");
  sa.active = 1;
  expect(f->s, "SetActiveUser", &sa.base, f->admin_tok, IMMU_GRPC_OK, NULL);
  assert_int_equal(login(f->s, "alice", "Alice789#", tok, NULL, 0),
                   IMMU_GRPC_OK);

  /* Users persist across a restart. */
  fx_stop(f);
  fx_start(f);
  assert_int_equal(login(f->s, "alice", "Alice789#", tok, NULL, 0),
                   IMMU_GRPC_OK);
}

static void test_permissions(void **state) {
  fx *f = *state;
  char tok[65], t[65], list[128];

  admin_login(f);
  create_db(f->s, f->admin_tok, "db1", IMMU_GRPC_OK, NULL);
  create_user(f->s, f->admin_tok, "reader", "Reader12!", IMMU_PERM_READ,
              "defaultdb", IMMU_GRPC_OK, NULL);
  assert_int_equal(login(f->s, "reader", "Reader12!", tok, NULL, 0),
                   IMMU_GRPC_OK);
  list_dbs(f->s, tok, list, sizeof list);
  assert_string_equal(list, "defaultdb");
  assert_int_equal(use_db(f->s, tok, "db1", t), IMMU_GRPC_PERMISSION_DENIED);
  assert_int_equal(use_db(f->s, tok, "systemdb", t),
                   IMMU_GRPC_PERMISSION_DENIED);
  assert_int_equal(use_db(f->s, tok, "defaultdb", t), IMMU_GRPC_OK);
  expect(f->s, "Get", NULL, t, IMMU_GRPC_OK, "defaultdb");
  expect(f->s, "Set", NULL, t, IMMU_GRPC_PERMISSION_DENIED,
         "permission denied");
  expect(f->s, "CompactIndex", NULL, t, IMMU_GRPC_PERMISSION_DENIED, NULL);
  expect(f->s, "ListUsers", NULL, t, IMMU_GRPC_PERMISSION_DENIED, NULL);
  create_db(f->s, t, "db9", IMMU_GRPC_PERMISSION_DENIED, NULL);
  db_op(f->s, t, "UnloadDatabase", "db1", IMMU_GRPC_PERMISSION_DENIED, NULL);
  create_user(f->s, t, "bob", "Bobby123!", IMMU_PERM_READ, "defaultdb",
              IMMU_GRPC_PERMISSION_DENIED, NULL);
  change_perm(f->s, t, IMMUDB__SCHEMA__PERMISSION_ACTION__GRANT, "reader",
              "db1", IMMU_PERM_READ, IMMU_GRPC_PERMISSION_DENIED, NULL);

  /* Grant readwrite on defaultdb and read on db1; the token in hand sees
   * the change at once (permissions are checked per call). */
  change_perm(f->s, f->admin_tok, IMMUDB__SCHEMA__PERMISSION_ACTION__GRANT,
              "reader", "defaultdb", IMMU_PERM_READWRITE, IMMU_GRPC_OK, NULL);
  expect(f->s, "Set", NULL, t, IMMU_GRPC_OK, "defaultdb");
  change_perm(f->s, f->admin_tok, IMMUDB__SCHEMA__PERMISSION_ACTION__GRANT,
              "reader", "db1", IMMU_PERM_READ, IMMU_GRPC_OK, NULL);
  change_perm(f->s, f->admin_tok, IMMUDB__SCHEMA__PERMISSION_ACTION__GRANT,
              "reader", "nodb", IMMU_PERM_READ, IMMU_GRPC_INVALID_ARGUMENT,
              "does not exist");
  change_perm(f->s, f->admin_tok, IMMUDB__SCHEMA__PERMISSION_ACTION__GRANT,
              "reader", "db1", 7, IMMU_GRPC_INVALID_ARGUMENT,
              "invalid permission");
  change_perm(f->s, f->admin_tok, IMMUDB__SCHEMA__PERMISSION_ACTION__GRANT,
              "immudb", "db1", IMMU_PERM_READ, IMMU_GRPC_PERMISSION_DENIED,
              NULL);
  list_dbs(f->s, tok, list, sizeof list);
  assert_string_equal(list, "defaultdb,db1");
  assert_int_equal(use_db(f->s, tok, "db1", t), IMMU_GRPC_OK);
  expect(f->s, "Get", NULL, t, IMMU_GRPC_OK, "db1");
  expect(f->s, "Set", NULL, t, IMMU_GRPC_PERMISSION_DENIED, NULL);

  /* An admin of db1 may manage db1's users but not defaultdb's. */
  change_perm(f->s, f->admin_tok, IMMUDB__SCHEMA__PERMISSION_ACTION__GRANT,
              "reader", "db1", IMMU_PERM_ADMIN, IMMU_GRPC_OK, NULL);
  create_user(f->s, t, "bob", "Bobby123!", IMMU_PERM_READ, "db1", IMMU_GRPC_OK,
              NULL);
  create_user(f->s, t, "carl", "Carl1234!", IMMU_PERM_READ, "defaultdb",
              IMMU_GRPC_PERMISSION_DENIED, NULL);
  expect(f->s, "ListUsers", NULL, t, IMMU_GRPC_OK, NULL);
  expect(f->s, "CompactIndex", NULL, t, IMMU_GRPC_OK, NULL);

  /* Revoke. */
  change_perm(f->s, f->admin_tok, IMMUDB__SCHEMA__PERMISSION_ACTION__REVOKE,
              "reader", "db1", 0, IMMU_GRPC_OK, NULL);
  expect(f->s, "Get", NULL, t, IMMU_GRPC_PERMISSION_DENIED, NULL);

  /* systemdb is read-only, even for the sysadmin. */
  assert_int_equal(use_db(f->s, f->admin_tok, "systemdb", t), IMMU_GRPC_OK);
  expect(f->s, "Get", NULL, t, IMMU_GRPC_OK, "systemdb");
  expect(f->s, "Set", NULL, t, IMMU_GRPC_PERMISSION_DENIED, "read-only");
  expect(f->s, "GetAll", NULL, t, IMMU_GRPC_OK, "systemdb");

  /* Deleting a database drops the permissions on it. */
  db_op(f->s, f->admin_tok, "UnloadDatabase", "db1", IMMU_GRPC_OK, NULL);
  db_op(f->s, f->admin_tok, "DeleteDatabase", "db1", IMMU_GRPC_OK, NULL);
  create_db(f->s, f->admin_tok, "db1", IMMU_GRPC_OK, NULL);
  assert_int_equal(login(f->s, "bob", "Bobby123!", tok, NULL, 0), IMMU_GRPC_OK);
  assert_int_equal(use_db(f->s, tok, "db1", t), IMMU_GRPC_PERMISSION_DENIED);
}

static void test_sessions(void **state) {
  fx *f = *state;
  Immudb__Schema__OpenSessionRequest req =
      IMMUDB__SCHEMA__OPEN_SESSION_REQUEST__INIT;
  Immudb__Schema__OpenSessionResponse *r;
  immu_grpc_call c;
  char sid[3][65];
  callopt o = {NULL, NULL, 0};

  fx_stop(f);
  f->cfg.session_timeout_s = 2;
  f->cfg.max_sessions = 2;
  fx_start(f);

  req.username.data = B("immudb");
  req.username.len = 6;
  req.password.data = B("immudb");
  req.password.len = 6;
  req.databasename = S("defaultdb");
  for (int i = 0; i < 2; i++) {
    assert_int_equal(run(f->s, "OpenSession", &req.base, NULL, &c),
                     IMMU_GRPC_OK);
    r = immudb__schema__open_session_response__unpack(NULL, c.sent_len[0],
                                                      c.sent[0]);
    assert_non_null(r);
    assert_string_equal(r->serveruuid, immu_server_uuid(f->s));
    snprintf(sid[i], 65, "%s", r->sessionid);
    immudb__schema__open_session_response__free_unpacked(r, NULL);
    fake_call_clear(&c);
  }
  assert_int_equal(immu_server_active_sessions(f->s), 2);
  assert_int_equal(run(f->s, "OpenSession", &req.base, NULL, &c),
                   IMMU_GRPC_RESOURCE_EXHAUSTED);
  assert_non_null(strstr(c.message, "max sessions"));
  fake_call_clear(&c);

  o.session = sid[0];
  assert_int_equal(run(f->s, "KeepAlive", NULL, &o, &c), IMMU_GRPC_OK);
  fake_call_clear(&c);
  assert_int_equal(run(f->s, "Get", NULL, &o, &c), IMMU_GRPC_OK);
  assert_string_equal(c.message, "defaultdb");
  fake_call_clear(&c);
  assert_int_equal(run(f->s, "CloseSession", NULL, &o, &c), IMMU_GRPC_OK);
  fake_call_clear(&c);
  assert_int_equal(run(f->s, "KeepAlive", NULL, &o, &c),
                   IMMU_GRPC_UNAUTHENTICATED);
  fake_call_clear(&c);
  assert_int_equal(run(f->s, "CloseSession", NULL, &o, &c),
                   IMMU_GRPC_UNAUTHENTICATED);
  fake_call_clear(&c);
  assert_int_equal(immu_server_active_sessions(f->s), 1);

  /* Room again; then both idle out. */
  assert_int_equal(run(f->s, "OpenSession", &req.base, NULL, &c), IMMU_GRPC_OK);
  r = immudb__schema__open_session_response__unpack(NULL, c.sent_len[0],
                                                    c.sent[0]);
  snprintf(sid[2], 65, "%s", r->sessionid);
  immudb__schema__open_session_response__free_unpacked(r, NULL);
  fake_call_clear(&c);
  {
    struct timespec ts = {2, 300 * 1000 * 1000};
    nanosleep(&ts, NULL);
  }
  o.session = sid[2];
  assert_int_equal(run(f->s, "KeepAlive", NULL, &o, &c),
                   IMMU_GRPC_UNAUTHENTICATED);
  fake_call_clear(&c);
  assert_int_equal(immu_server_active_sessions(f->s), 0);

  /* Bad credentials, unknown database, no permission. */
  req.password.data = B("nope");
  req.password.len = 4;
  assert_int_equal(run(f->s, "OpenSession", &req.base, NULL, &c),
                   IMMU_GRPC_UNAUTHENTICATED);
  fake_call_clear(&c);
  req.password.data = B("immudb");
  req.password.len = 6;
  req.databasename = S("nodb");
  assert_int_equal(run(f->s, "OpenSession", &req.base, NULL, &c),
                   IMMU_GRPC_INVALID_ARGUMENT);
  fake_call_clear(&c);
}

static void test_default_password_refused(void **state) {
  fx *f = *state;
  fx g;
  char *err = NULL;
  immu_server *s = NULL;

  /* Restarting the fixture's server (default password) on 0.0.0.0. */
  fx_stop(f);
  f->cfg.listen_address = S("0.0.0.0");
  assert_int_not_equal(immu_server_new(&f->cfg, &s, &err), 0);
  assert_null(s);
  assert_non_null(err);
  assert_non_null(strstr(err, "default password"));
  assert_non_null(strstr(err, "0.0.0.0"));
  free(err);
  f->cfg.listen_address = S("::1");
  fx_start(f);

  /* A fresh directory: refused with the default password, accepted with
   * another one, and that one is kept on later starts. */
  memset(&g, 0, sizeof g);
  fx_dir(&g);
  fx_cfg(&g);
  g.cfg.listen_address = S("0.0.0.0");
  err = NULL;
  assert_int_not_equal(immu_server_new(&g.cfg, &s, &err), 0);
  assert_non_null(err);
  free(err);
  g.cfg.admin_password = S("S3cret!pass");
  fx_start(&g);
  {
    char tok[65], warn[128];
    assert_int_equal(
        login(g.s, "immudb", "S3cret!pass", tok, warn, sizeof warn),
        IMMU_GRPC_OK);
    assert_string_equal(warn, "");
    assert_int_equal(login(g.s, "immudb", "immudb", tok, NULL, 0),
                     IMMU_GRPC_UNAUTHENTICATED);
  }
  fx_stop(&g);
  g.cfg.admin_password = S("Other!pass1");
  fx_start(&g); /* ignored after the first start, as immudb */
  {
    char tok[65];
    assert_int_equal(login(g.s, "immudb", "S3cret!pass", tok, NULL, 0),
                     IMMU_GRPC_OK);
  }
  fx_stop(&g);
  nftw(g.dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);

  /* Empty admin password. */
  f->cfg.admin_password = S("");
  err = NULL;
  assert_int_not_equal(immu_server_new(&f->cfg, &s, &err), 0);
  free(err);
}

static void test_auth_disabled(void **state) {
  fx *f = *state;
  immu_grpc_call c;
  callopt remote = {NULL, NULL, 1};

  fx_stop(f);
  f->cfg.auth = 0;
  fx_start(f);
  expect(f->s, "Get", NULL, NULL, IMMU_GRPC_OK, "defaultdb");
  expect(f->s, "Set", NULL, NULL, IMMU_GRPC_OK, "defaultdb");
  expect(f->s, "CreateDatabase", NULL, NULL, IMMU_GRPC_INVALID_ARGUMENT,
         "length");
  assert_int_equal(run(f->s, "Get", NULL, &remote, &c),
                   IMMU_GRPC_PERMISSION_DENIED);
  assert_non_null(strstr(c.message, "authentication is disabled"));
  fake_call_clear(&c);
  /* Health needs nothing, from anywhere. */
  assert_int_equal(run(f->s, "Health", NULL, &remote, &c), IMMU_GRPC_OK);
  fake_call_clear(&c);

  fx_stop(f);
  f->cfg.devmode = 1;
  fx_start(f);
  assert_int_equal(run(f->s, "Get", NULL, &remote, &c), IMMU_GRPC_OK);
  fake_call_clear(&c);
}

static void test_maintenance(void **state) {
  fx *f = *state;
  fx_stop(f);
  f->cfg.maintenance = 1;
  fx_start(f);
  admin_login(f);
  expect(f->s, "Get", NULL, f->admin_tok, IMMU_GRPC_OK, NULL);
  expect(f->s, "Set", NULL, f->admin_tok, IMMU_GRPC_FAILED_PRECONDITION,
         "server is in maintenance mode");
  expect(f->s, "CompactIndex", NULL, f->admin_tok, IMMU_GRPC_OK, NULL);
  expect(f->s, "GetAll", NULL, f->admin_tok, IMMU_GRPC_OK, NULL);
}

static void test_method_table(void **state) {
  fx *f = *state;
  const immu_grpc_method *m, *login_m;
  size_t n;
  immu_grpc_call c;
  Immudb__Schema__HealthResponse *h;
  Immudb__Schema__ServerInfoResponse *si;

  immu_server_methods(f->s, &m, &n);
  assert_int_equal(n, immudb__schema__immu_service__descriptor.n_methods);
  for (size_t i = 0; i < n; i++) {
    assert_non_null(m[i].handler);
    assert_ptr_equal(m[i].arg, f->s);
    assert_int_equal(strncmp(m[i].path, "/immudb.schema.ImmuService/", 27), 0);
  }
  expect(f->s, "SQLExec", NULL, NULL, IMMU_GRPC_UNIMPLEMENTED,
         "method SQLExec is not supported by this server: SQL and document "
         "APIs are not implemented");
  expect(f->s, "UpdateAuthConfig", NULL, NULL, IMMU_GRPC_UNIMPLEMENTED,
         "UpdateAuthConfig is not supported");

  assert_int_equal(run(f->s, "Health", NULL, NULL, &c), IMMU_GRPC_OK);
  h = immudb__schema__health_response__unpack(NULL, c.sent_len[0], c.sent[0]);
  assert_non_null(h);
  assert_true(h->status);
  assert_true(strlen(h->version) > 0);
  immudb__schema__health_response__free_unpacked(h, NULL);
  fake_call_clear(&c);

  assert_int_equal(run(f->s, "ServerInfo", NULL, NULL, &c), IMMU_GRPC_OK);
  si = immudb__schema__server_info_response__unpack(NULL, c.sent_len[0],
                                                    c.sent[0]);
  assert_non_null(si);
  assert_int_equal(si->numdatabases, 1);
  assert_true(si->startedat > 0);
  immudb__schema__server_info_response__free_unpacked(si, NULL);
  fake_call_clear(&c);

  /* A malformed request is refused by immu_srv_unpack. */
  login_m = method_of(f->s, "Login");
  call_init(&c, login_m->path);
  fake_call_add_msg(&c, "\x0a\xff\x01", 3);
  fake_call_run(&c, login_m->handler, f->s, login_m->flags);
  assert_int_equal(c.status, IMMU_GRPC_INVALID_ARGUMENT);
  assert_string_equal(c.message, "malformed request");
  fake_call_clear(&c);
}

/* UnloadDatabase waits for a handler that holds the database. */
typedef struct unload_arg {
  fx *f;
  immu_grpc_call c;
  int done;
  pthread_mutex_t mu;
} unload_arg;

static void *unload_thread(void *p) {
  unload_arg *a = p;
  Immudb__Schema__UnloadDatabaseRequest req =
      IMMUDB__SCHEMA__UNLOAD_DATABASE_REQUEST__INIT;
  callopt o = tokopt(a->f->admin_tok);
  req.database = S("db1");
  run(a->f->s, "UnloadDatabase", &req.base, &o, &a->c);
  pthread_mutex_lock(&a->mu);
  a->done = 1;
  pthread_mutex_unlock(&a->mu);
  return NULL;
}

static void test_unload_waits(void **state) {
  fx *f = *state;
  unload_arg a;
  immu_grpc_call c;
  immu_srv_ctx ctx;
  pthread_t th;
  char t[65];
  int done;

  admin_login(f);
  create_db(f->s, f->admin_tok, "db1", IMMU_GRPC_OK, NULL);
  assert_int_equal(use_db(f->s, f->admin_tok, "db1", t), IMMU_GRPC_OK);
  call_init(&c, NULL);
  fake_call_set_auth(&c, t);
  assert_int_equal(immu_srv_begin(f->s, &c, IMMU_PERM_READ, 1, &ctx), 0);
  assert_string_equal(ctx.db_name, "db1");
  expect(f->s, "DatabaseHealth", NULL, t, IMMU_GRPC_OK, NULL);

  memset(&a, 0, sizeof a);
  a.f = f;
  pthread_mutex_init(&a.mu, NULL);
  assert_int_equal(pthread_create(&th, NULL, unload_thread, &a), 0);
  {
    struct timespec ts = {0, 200 * 1000 * 1000};
    nanosleep(&ts, NULL);
  }
  pthread_mutex_lock(&a.mu);
  done = a.done;
  pthread_mutex_unlock(&a.mu);
  assert_false(done);
  /* New calls are turned away while it waits. */
  expect(f->s, "Get", NULL, t, IMMU_GRPC_UNAVAILABLE, "unloaded");
  immu_srv_end(&ctx);
  fake_call_clear(&c);
  pthread_join(th, NULL);
  assert_int_equal(a.c.status, IMMU_GRPC_OK);
  fake_call_clear(&a.c);
  pthread_mutex_destroy(&a.mu);
  expect(f->s, "Get", NULL, t, IMMU_GRPC_FAILED_PRECONDITION, "not loaded");
}

/* A database that cannot be opened is reported, the others are served. */
static void test_broken_database(void **state) {
  fx *f = *state;
  char path[700], list[128], t[65];
  FILE *fp;
  immu_grpc_call c;
  callopt o;
  Immudb__Schema__DatabaseListResponseV2 *r;
  Immudb__Schema__DatabaseListRequestV2 rq =
      IMMUDB__SCHEMA__DATABASE_LIST_REQUEST_V2__INIT;

  admin_login(f);
  create_db(f->s, f->admin_tok, "db1", IMMU_GRPC_OK, NULL);
  fx_stop(f);
  snprintf(path, sizeof path, "%s/db1/settings", f->dir);
  fp = fopen(path, "w");
  assert_non_null(fp);
  fputs("garbage\n", fp);
  fclose(fp);
  fx_start(f);
  admin_login(f);
  list_dbs(f->s, f->admin_tok, list, sizeof list);
  assert_string_equal(list, "defaultdb,db1");
  o = tokopt(f->admin_tok);
  assert_int_equal(run(f->s, "DatabaseListV2", &rq.base, &o, &c), IMMU_GRPC_OK);
  r = immudb__schema__database_list_response_v2__unpack(NULL, c.sent_len[0],
                                                        c.sent[0]);
  assert_int_equal(r->n_databases, 2);
  assert_true(r->databases[0]->loaded);
  assert_false(r->databases[1]->loaded);
  immudb__schema__database_list_response_v2__free_unpacked(r, NULL);
  fake_call_clear(&c);
  assert_int_equal(use_db(f->s, f->admin_tok, "defaultdb", t), IMMU_GRPC_OK);
  expect(f->s, "Get", NULL, t, IMMU_GRPC_OK, "defaultdb");
  db_op(f->s, f->admin_tok, "LoadDatabase", "db1", IMMU_GRPC_UNAVAILABLE,
        "cannot load database db1");
  /* A failed database can be deleted without unloading it. */
  db_op(f->s, f->admin_tok, "DeleteDatabase", "db1", IMMU_GRPC_OK, NULL);
}

/* A directory that holds a database but has no systemdb record (e.g.
 * copied in) is adopted at start. */
static void test_adopt_directory(void **state) {
  fx *f = *state;
  char list[128], src[700], dst[700];
  admin_login(f);
  create_db(f->s, f->admin_tok, "db1", IMMU_GRPC_OK, NULL);
  db_op(f->s, f->admin_tok, "UnloadDatabase", "db1", IMMU_GRPC_OK, NULL);
  fx_stop(f);
  snprintf(src, sizeof src, "%s/db1", f->dir);
  snprintf(dst, sizeof dst, "%s/copied", f->dir);
  assert_int_equal(rename(src, dst), 0);
  snprintf(src, sizeof src, "%s/Not-A-Db", f->dir);
  assert_int_equal(mkdir(src, 0755), 0);
  fx_start(f);
  admin_login(f);
  list_dbs(f->s, f->admin_tok, list, sizeof list);
  /* db1's record remains (its directory is missing: unavailable). */
  assert_string_equal(list, "defaultdb,db1,copied");
  {
    char t[65];
    assert_int_equal(use_db(f->s, f->admin_tok, "copied", t), IMMU_GRPC_OK);
    assert_int_equal(use_db(f->s, f->admin_tok, "db1", t),
                     IMMU_GRPC_FAILED_PRECONDITION);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_identity_persists, setup, teardown),
      cmocka_unit_test_setup_teardown(test_login, setup, teardown),
      cmocka_unit_test_setup_teardown(test_token_checks, setup, teardown),
      cmocka_unit_test_setup_teardown(test_databases, setup, teardown),
      cmocka_unit_test_setup_teardown(test_create_v2_settings, setup, teardown),
      cmocka_unit_test_setup_teardown(test_users, setup, teardown),
      cmocka_unit_test_setup_teardown(test_permissions, setup, teardown),
      cmocka_unit_test_setup_teardown(test_sessions, setup, teardown),
      cmocka_unit_test_setup_teardown(test_default_password_refused, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_auth_disabled, setup, teardown),
      cmocka_unit_test_setup_teardown(test_maintenance, setup, teardown),
      cmocka_unit_test_setup_teardown(test_method_table, setup, teardown),
      cmocka_unit_test_setup_teardown(test_unload_waits, setup, teardown),
      cmocka_unit_test_setup_teardown(test_broken_database, setup, teardown),
      cmocka_unit_test_setup_teardown(test_adopt_directory, setup, teardown),
  };
  fake_call_set_fail(fake_fail_cmocka);
  return cmocka_run_group_tests(tests, NULL, NULL);
}
