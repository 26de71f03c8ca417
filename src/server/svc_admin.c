/* SPDX-License-Identifier: Apache-2.0 */
/*
 * ImmuService handlers of the auth half: login, sessions, users, databases,
 * health and server info (immudb-api.md sections 1a-1c, 1l, 2 and 3). The
 * state they work on lives in auth.c (server/auth.h).
 *
 * Who may call what (immudb-api.md section 3; "db" is the database the
 * call selected through its token or session):
 *
 *   RPC                                   needs
 *   Login, OpenSession, Health,           nothing
 *   ServerInfo
 *   Logout, KeepAlive, CloseSession,      a login
 *   DatabaseList(V2), UseDatabase,
 *   ChangePassword (own, with the old
 *   password)
 *   GetDatabaseSettings(V2),              read on db
 *   DatabaseHealth
 *   FlushIndex, CompactIndex              admin on db
 *   ListUsers                             sysadmin, or admin on db (sees
 *                                         the users of db)
 *   CreateUser, ChangePermission          sysadmin, or admin on the
 *                                         request's database
 *   ChangePassword (another user),        sysadmin, or admin on a database
 *   SetActiveUser                         the target user has a permission
 *                                         on; never on the sysadmin
 *   CreateDatabase(With, V2),             sysadmin
 *   UpdateDatabase(V2), LoadDatabase,
 *   UnloadDatabase, DeleteDatabase
 *
 * DatabaseList shows the sysadmin every database but systemdb, in creation
 * order; other users see the databases they hold a permission on.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/mem.h"
#include "google/protobuf/empty.pb-c.h"
#include "schema.pb-c.h"
#include "server/auth.h"
#include "server/config.h" /* IMMU_SERVER_VERSION */

/* immudb 1.1.0 let ChangePermission GRANT on a database that does not
 * exist (immudb-node 1.1.1's suite relies on it); immudb HEAD answers
 * "database does not exist". We follow HEAD. */
static const int grant_requires_db = 1;

#define ERRLEN 512

typedef Immudb__Schema__DatabaseNullableSettings nsettings;

/* ------------------------------------------------------------------ */
/* Helpers                                                             */
/* ------------------------------------------------------------------ */

/* Copies protobuf bytes into a NUL-terminated string; 0 if it does not
 * fit or holds a NUL byte. */
static int bytes_str(const ProtobufCBinaryData *b, char *out, size_t cap) {
  if (b->len >= cap || (b->len > 0 && memchr(b->data, 0, b->len) != NULL))
    return 0;
  if (b->len > 0)
    memcpy(out, b->data, b->len);
  out[b->len] = '\0';
  return 1;
}

static void reply_empty(immu_grpc_call *call) {
  Google__Protobuf__Empty e = GOOGLE__PROTOBUF__EMPTY__INIT;
  immu_srv_reply(call, &e.base);
}

static int is_reserved_db(const char *name) {
  return strcmp(name, IMMU_SYSTEMDB) == 0 || strcmp(name, IMMU_DEFAULTDB) == 0;
}

static int valid_grant_perm(uint32_t p) {
  return p == IMMU_PERM_READ || p == IMMU_PERM_READWRITE ||
         p == IMMU_PERM_ADMIN;
}

/* The caller's permission on |db| (from its user record). */
static uint32_t caller_perm(immu_server *s, const immu_srv_ctx *ctx,
                            const char *db) {
  immu__user u;
  uint32_t p;
  if (ctx->sysadmin)
    return IMMU_PERM_SYSADMIN;
  if (immu__user_get(s, ctx->user, &u) != 0)
    return IMMU_PERM_NONE;
  p = immu__user_perm(&u, db);
  immu__user_clear(&u);
  return p;
}

/* 1 if the caller administers |target|: the sysadmin does; an admin of a
 * database |target| holds a permission on does. */
static int caller_admins(immu_server *s, const immu_srv_ctx *ctx,
                         const immu__user *target) {
  if (ctx->sysadmin)
    return 1;
  if (target->sysadmin)
    return 0;
  for (size_t i = 0; i < target->nperms; i++)
    if (caller_perm(s, ctx, target->perms[i].db) >= IMMU_PERM_ADMIN)
      return 1;
  return 0;
}

static int db_exists(immu_server *s, const char *name, int *state) {
  immu__dbinfo info;
  if (immu__db_info(s, name, &info) != 0)
    return 0;
  if (state != NULL)
    *state = info.state;
  return 1;
}

/* ------------------------------------------------------------------ */
/* Database settings <-> messages                                      */
/* ------------------------------------------------------------------ */

typedef struct nsettings_buf {
  nsettings ns;
  Immudb__Schema__ReplicationNullableSettings rep;
  Immudb__Schema__NullableBool replica, exclude, autoload;
  Immudb__Schema__NullableUint32 fs, mk, mv, mt, hv;
} nsettings_buf;

static void nsettings_fill(nsettings_buf *b, const immu__dbsettings *set) {
  static const nsettings ns0 = IMMUDB__SCHEMA__DATABASE_NULLABLE_SETTINGS__INIT;
  static const Immudb__Schema__ReplicationNullableSettings rep0 =
      IMMUDB__SCHEMA__REPLICATION_NULLABLE_SETTINGS__INIT;
  static const Immudb__Schema__NullableBool b0 =
      IMMUDB__SCHEMA__NULLABLE_BOOL__INIT;
  static const Immudb__Schema__NullableUint32 u0 =
      IMMUDB__SCHEMA__NULLABLE_UINT32__INIT;
  b->ns = ns0;
  b->rep = rep0;
  b->replica = b->exclude = b->autoload = b0;
  b->fs = b->mk = b->mv = b->mt = b->hv = u0;
  b->replica.value = 0;
  b->rep.replica = &b->replica;
  b->ns.replicationsettings = &b->rep;
  b->fs.value = set->file_size < 4096 ? 4096 : set->file_size;
  b->ns.filesize = &b->fs;
  b->mk.value = set->max_key_len;
  b->ns.maxkeylen = &b->mk;
  b->mv.value = set->max_value_len;
  b->ns.maxvaluelen = &b->mv;
  b->mt.value = set->max_tx_entries;
  b->ns.maxtxentries = &b->mt;
  b->exclude.value = 0;
  b->ns.excludecommittime = &b->exclude;
  b->hv.value = 0; /* every tx is written with header version 0 */
  b->ns.writetxheaderversion = &b->hv;
  b->autoload.value = set->autoload ? 1 : 0;
  b->ns.autoload = &b->autoload;
}

/* One fixed-at-creation setting: on create it is taken, on update it must
 * equal the current value (when |known|). */
static int fixed_setting(const char *what, uint32_t v, uint32_t lo, uint32_t hi,
                         uint32_t *cur, int creating, int known, char *err,
                         size_t errlen) {
  if (v < lo || v > hi) {
    snprintf(err, errlen,
             "illegal arguments: %s must be between %u and %u (got %u)", what,
             lo, hi, v);
    return IMMU_GRPC_INVALID_ARGUMENT;
  }
  if (creating) {
    *cur = v;
    return IMMU_GRPC_OK;
  }
  if (known && v != *cur) {
    snprintf(err, errlen,
             "%s can not be changed after the database is created (it is %u)",
             what, *cur);
    return IMMU_GRPC_FAILED_PRECONDITION;
  }
  return IMMU_GRPC_OK;
}

/* Applies DatabaseNullableSettings to |set|. Settings we implement are
 * fileSize, maxKeyLen, maxValueLen, maxTxEntries (creation only), autoload,
 * writeTxHeaderVersion (0 or 1 accepted; we always write 0). Replication
 * and excludeCommitTime are refused; the engine-tuning knobs immudb has
 * (caches, index/AHT settings, sync frequency, truncation, ...) are
 * accepted and ignored. Returns a gRPC status. */
static int nsettings_apply(const nsettings *ns, immu__dbsettings *set,
                           int creating, int known, char *err, size_t errlen) {
  int st;
  if (ns == NULL)
    return IMMU_GRPC_OK;
  if (ns->replicationsettings != NULL &&
      ns->replicationsettings->replica != NULL &&
      ns->replicationsettings->replica->value) {
    snprintf(err, errlen, "replication is not supported by this server");
    return IMMU_GRPC_UNIMPLEMENTED;
  }
  if (ns->excludecommittime != NULL && ns->excludecommittime->value) {
    snprintf(err, errlen, "excludeCommitTime is not supported by this server");
    return IMMU_GRPC_UNIMPLEMENTED;
  }
  if (ns->writetxheaderversion != NULL && ns->writetxheaderversion->value > 1) {
    snprintf(err, errlen,
             "illegal arguments: writeTxHeaderVersion must be 0 or 1");
    return IMMU_GRPC_INVALID_ARGUMENT;
  }
  if (ns->filesize != NULL &&
      (st = fixed_setting("fileSize", ns->filesize->value, 1, UINT32_MAX,
                          &set->file_size, creating, 1, err, errlen)) != 0)
    return st;
  if (ns->maxkeylen != NULL &&
      (st = fixed_setting("maxKeyLen", ns->maxkeylen->value, 1, 65535,
                          &set->max_key_len, creating, known, err, errlen)) !=
          0)
    return st;
  if (ns->maxvaluelen != NULL &&
      (st = fixed_setting("maxValueLen", ns->maxvaluelen->value, 1, 1u << 31,
                          &set->max_value_len, creating, known, err, errlen)) !=
          0)
    return st;
  if (ns->maxtxentries != NULL &&
      (st = fixed_setting("maxTxEntries", ns->maxtxentries->value, 1,
                          IMMU_V0_MAX_ENTRIES, &set->max_tx_entries, creating,
                          known, err, errlen)) != 0)
    return st;
  if (ns->autoload != NULL)
    set->autoload = ns->autoload->value ? 1 : 0;
  return IMMU_GRPC_OK;
}

/* The legacy DatabaseSettings (CreateDatabaseWith, UpdateDatabase): zero
 * means "default" / "unchanged". */
static int settings_apply(const Immudb__Schema__DatabaseSettings *ds,
                          immu__dbsettings *set, int creating, int known,
                          char *err, size_t errlen) {
  int st;
  if (ds->replica) {
    snprintf(err, errlen, "replication is not supported by this server");
    return IMMU_GRPC_UNIMPLEMENTED;
  }
  if (ds->excludecommittime) {
    snprintf(err, errlen, "excludeCommitTime is not supported by this server");
    return IMMU_GRPC_UNIMPLEMENTED;
  }
  if (ds->filesize &&
      (st = fixed_setting("fileSize", ds->filesize, 1, UINT32_MAX,
                          &set->file_size, creating, 1, err, errlen)) != 0)
    return st;
  if (ds->maxkeylen && (st = fixed_setting("maxKeyLen", ds->maxkeylen, 1, 65535,
                                           &set->max_key_len, creating, known,
                                           err, errlen)) != 0)
    return st;
  if (ds->maxvaluelen &&
      (st = fixed_setting("maxValueLen", ds->maxvaluelen, 1, 1u << 31,
                          &set->max_value_len, creating, known, err, errlen)) !=
          0)
    return st;
  if (ds->maxtxentries &&
      (st = fixed_setting("maxTxEntries", ds->maxtxentries, 1,
                          IMMU_V0_MAX_ENTRIES, &set->max_tx_entries, creating,
                          known, err, errlen)) != 0)
    return st;
  return IMMU_GRPC_OK;
}

/* ------------------------------------------------------------------ */
/* Login, sessions                                                     */
/* ------------------------------------------------------------------ */

static void h_login(immu_grpc_call *call, void *arg) {
  immu_server *s = arg;
  Immudb__Schema__LoginRequest *req;
  Immudb__Schema__LoginResponse resp = IMMUDB__SCHEMA__LOGIN_RESPONSE__INIT;
  char user[IMMU_USERNAME_MAX + 1], tok[IMMU_TOKEN_HEX + 1];
  int rc;

  req = (Immudb__Schema__LoginRequest *)immu_srv_unpack(
      call, 0, &immudb__schema__login_request__descriptor);
  if (req == NULL)
    return;
  if (!bytes_str(&req->user, user, sizeof user))
    user[0] = '\0';
  rc = user[0]
           ? immu__user_verify(s, user, req->password.data, req->password.len)
           : IMMU_EAUTH;
  if (rc == IMMU_EAUTH) {
    immu_srv_failf(call, IMMU_GRPC_UNAUTHENTICATED,
                   "invalid user name or password");
  } else if (rc == IMMU_EPERM) {
    immu_srv_failf(call, IMMU_GRPC_PERMISSION_DENIED, "user is not active");
  } else if (rc != 0) {
    immu_srv_fail(call, rc);
  } else if ((rc = immu__token_new(s, user, "", tok)) != 0) {
    immu_srv_fail(call, rc);
  } else {
    resp.token = tok;
    if (strcmp(user, IMMU_SYSADMIN_USER) == 0 &&
        req->password.len == strlen(IMMU_DEFAULT_ADMIN_PASSWORD) &&
        memcmp(req->password.data, IMMU_DEFAULT_ADMIN_PASSWORD,
               req->password.len) == 0) {
      resp.warning.data = (uint8_t *)(uintptr_t)IMMU_WARN_DEFAULT_PASSWORD;
      resp.warning.len = strlen(IMMU_WARN_DEFAULT_PASSWORD);
    }
    immu_srv_reply(call, &resp.base);
  }
  protobuf_c_message_free_unpacked(&req->base, NULL);
}

static void h_logout(immu_grpc_call *call, void *arg) {
  immu_server *s = arg;
  immu__authinfo ai;
  immu_srv_ctx ctx;
  if (immu__srv_begin(s, call, IMMU_PERM_NONE, 0, &ctx, &ai) != 0)
    return;
  if (ai.kind == IMMU__AUTH_TOKEN)
    immu__token_drop(s, ai.id);
  immu_srv_end(&ctx);
  reply_empty(call);
}

static void h_open_session(immu_grpc_call *call, void *arg) {
  immu_server *s = arg;
  Immudb__Schema__OpenSessionRequest *req;
  Immudb__Schema__OpenSessionResponse resp =
      IMMUDB__SCHEMA__OPEN_SESSION_RESPONSE__INIT;
  char user[IMMU_USERNAME_MAX + 1], sid[IMMU_TOKEN_HEX + 1];
  const char *db;
  immu__user u;
  int rc, state = 0;
  uint32_t perm;

  req = (Immudb__Schema__OpenSessionRequest *)immu_srv_unpack(
      call, 0, &immudb__schema__open_session_request__descriptor);
  if (req == NULL)
    return;
  if (!bytes_str(&req->username, user, sizeof user))
    user[0] = '\0';
  db = req->databasename[0] ? req->databasename : IMMU_DEFAULTDB;
  rc = user[0]
           ? immu__user_verify(s, user, req->password.data, req->password.len)
           : IMMU_EAUTH;
  if (rc == IMMU_EAUTH) {
    immu_srv_failf(call, IMMU_GRPC_UNAUTHENTICATED,
                   "invalid user name or password");
    goto out;
  }
  if (rc == IMMU_EPERM) {
    immu_srv_failf(call, IMMU_GRPC_PERMISSION_DENIED, "user is not active");
    goto out;
  }
  if (rc != 0) {
    immu_srv_fail(call, rc);
    goto out;
  }
  if (!db_exists(s, db, &state)) {
    immu_srv_failf(call, IMMU_GRPC_INVALID_ARGUMENT,
                   "database %s does not exist", db);
    goto out;
  }
  if (immu__user_get(s, user, &u) != 0) {
    immu_srv_failf(call, IMMU_GRPC_UNAUTHENTICATED,
                   "invalid user name or password");
    goto out;
  }
  perm = immu__user_perm(&u, db);
  immu__user_clear(&u);
  if (perm < IMMU_PERM_READ) {
    immu_srv_failf(call, IMMU_GRPC_PERMISSION_DENIED,
                   "user %s has no permission on database %s", user, db);
    goto out;
  }
  if (state != IMMU__DB_LOADED) {
    immu_srv_failf(call, IMMU_GRPC_FAILED_PRECONDITION,
                   "database %s is not loaded", db);
    goto out;
  }
  rc = immu__session_new(s, user, db, sid);
  if (rc == IMMU_EBUSY) {
    immu_srv_failf(call, IMMU_GRPC_RESOURCE_EXHAUSTED,
                   "max sessions reached: %d sessions are open",
                   s->max_sessions > 0 ? s->max_sessions : 100);
    goto out;
  }
  if (rc != 0) {
    immu_srv_fail(call, rc);
    goto out;
  }
  resp.sessionid = sid;
  resp.serveruuid = s->uuid;
  immu_srv_reply(call, &resp.base);
out:
  protobuf_c_message_free_unpacked(&req->base, NULL);
}

static void h_close_session(immu_grpc_call *call, void *arg) {
  immu_server *s = arg;
  const char *sid = immu_grpc_call_metadata(call, "sessionid");
  if (sid == NULL || sid[0] == '\0') {
    immu_srv_failf(call, IMMU_GRPC_UNAUTHENTICATED, "no sessionID provided");
    return;
  }
  if (immu__session_drop(s, sid) != 0) {
    immu_srv_failf(call, IMMU_GRPC_UNAUTHENTICATED, "session not found");
    return;
  }
  reply_empty(call);
}

static void h_keep_alive(immu_grpc_call *call, void *arg) {
  immu_srv_ctx ctx;
  if (immu_srv_begin(arg, call, IMMU_PERM_NONE, 0, &ctx) != 0)
    return;
  immu_srv_end(&ctx);
  reply_empty(call);
}

/* ------------------------------------------------------------------ */
/* Users                                                               */
/* ------------------------------------------------------------------ */

static void h_list_users(immu_grpc_call *call, void *arg) {
  immu_server *s = arg;
  Immudb__Schema__UserList resp = IMMUDB__SCHEMA__USER_LIST__INIT;
  Immudb__Schema__User *um = NULL, **up = NULL;
  Immudb__Schema__Permission *pm = NULL, **pp = NULL;
  immu__user *users = NULL;
  size_t nusers = 0, nperm = 0, k = 0, kp = 0;
  immu_srv_ctx ctx;
  static const char star[] = "*";

  if (immu_srv_begin(s, call, IMMU_PERM_NONE, 0, &ctx) != 0)
    return;
  if (!ctx.sysadmin &&
      (ctx.db_name[0] == '\0' || (uint32_t)ctx.perm < IMMU_PERM_ADMIN)) {
    immu_srv_end(&ctx);
    immu_srv_failf(call, IMMU_GRPC_PERMISSION_DENIED, "permission denied");
    return;
  }
  if (immu__users_snapshot(s, &users, &nusers) != 0)
    goto oom;
  for (size_t i = 0; i < nusers; i++)
    nperm += users[i].nperms + 1;
  um = immu__calloc(nusers + 1, sizeof *um);
  up = immu__calloc(nusers + 1, sizeof *up);
  pm = immu__calloc(nperm + 1, sizeof *pm);
  pp = immu__calloc(nperm + 1, sizeof *pp);
  if (um == NULL || up == NULL || pm == NULL || pp == NULL)
    goto oom;
  for (size_t i = 0; i < nusers; i++) {
    immu__user *u = &users[i];
    Immudb__Schema__User *m = &um[k];
    static const Immudb__Schema__User u0 = IMMUDB__SCHEMA__USER__INIT;
    if (!ctx.sysadmin && strcmp(u->name, ctx.user) != 0 &&
        immu__user_perm(u, ctx.db_name) == IMMU_PERM_NONE)
      continue;
    *m = u0;
    m->user.data = (uint8_t *)u->name;
    m->user.len = strlen(u->name);
    m->createdby = u->created_by;
    m->createdat = u->created_at;
    m->active = u->active;
    m->permissions = &pp[kp];
    if (u->sysadmin) {
      static const Immudb__Schema__Permission p0 =
          IMMUDB__SCHEMA__PERMISSION__INIT;
      pm[kp] = p0;
      pm[kp].database = (char *)(uintptr_t)star;
      pm[kp].permission = IMMU_PERM_SYSADMIN;
      pp[kp] = &pm[kp];
      kp++;
      m->n_permissions = 1;
    } else {
      for (size_t j = 0; j < u->nperms; j++) {
        static const Immudb__Schema__Permission p0 =
            IMMUDB__SCHEMA__PERMISSION__INIT;
        pm[kp] = p0;
        pm[kp].database = u->perms[j].db;
        pm[kp].permission = u->perms[j].perm;
        pp[kp] = &pm[kp];
        kp++;
      }
      m->n_permissions = u->nperms;
    }
    up[k++] = m;
  }
  resp.n_users = k;
  resp.users = up;
  immu_srv_end(&ctx);
  immu_srv_reply(call, &resp.base);
  goto out;
oom:
  immu_srv_end(&ctx);
  immu_srv_failf(call, IMMU_GRPC_RESOURCE_EXHAUSTED, "out of memory");
out:
  immu__free(um);
  immu__free(up);
  immu__free(pm);
  immu__free(pp);
  immu__users_free(users, nusers);
}

static void h_create_user(immu_grpc_call *call, void *arg) {
  immu_server *s = arg;
  Immudb__Schema__CreateUserRequest *req;
  char name[IMMU_USERNAME_MAX + 1], err[ERRLEN];
  immu__user u, existing;
  immu_srv_ctx ctx;
  int rc, state;

  req = (Immudb__Schema__CreateUserRequest *)immu_srv_unpack(
      call, 0, &immudb__schema__create_user_request__descriptor);
  if (req == NULL)
    return;
  if (immu_srv_begin(s, call, IMMU_PERM_NONE, 0, &ctx) != 0)
    goto out_free;
  memset(&u, 0, sizeof u);
  if (caller_perm(s, &ctx, req->database) < IMMU_PERM_ADMIN) {
    immu_srv_failf(call, IMMU_GRPC_PERMISSION_DENIED, "permission denied");
    goto out;
  }
  if (immu__check_username(req->user.data, req->user.len, err, sizeof err) !=
          0 ||
      !bytes_str(&req->user, name, sizeof name)) {
    immu_srv_failf(call, IMMU_GRPC_INVALID_ARGUMENT, "%s", err);
    goto out;
  }
  if (!valid_grant_perm(req->permission)) {
    immu_srv_failf(call, IMMU_GRPC_INVALID_ARGUMENT, "invalid permission");
    goto out;
  }
  if (strcmp(req->database, IMMU_SYSTEMDB) == 0) {
    immu_srv_failf(call, IMMU_GRPC_PERMISSION_DENIED, "database %s is reserved",
                   IMMU_SYSTEMDB);
    goto out;
  }
  if (!db_exists(s, req->database, &state)) {
    immu_srv_failf(call, IMMU_GRPC_INVALID_ARGUMENT,
                   "database %s does not exist", req->database);
    goto out;
  }
  if (immu__check_password(req->password.data, req->password.len, err,
                           sizeof err) != 0) {
    immu_srv_failf(call, IMMU_GRPC_INVALID_ARGUMENT, "%s", err);
    goto out;
  }
  pthread_mutex_lock(&s->admin_mu);
  if (immu__user_get(s, name, &existing) == 0) {
    immu__user_clear(&existing);
    pthread_mutex_unlock(&s->admin_mu);
    immu_srv_failf(call, IMMU_GRPC_INVALID_ARGUMENT, "user already exists");
    goto out;
  }
  snprintf(u.name, sizeof u.name, "%s", name);
  u.active = 1;
  snprintf(u.created_by, sizeof u.created_by, "%s", ctx.user);
  {
    struct timespec ts;
    struct tm tm;
    char base[32];
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    strftime(base, sizeof base, "%Y-%m-%d %H:%M:%S", &tm);
    snprintf(u.created_at, sizeof u.created_at, "%s.%09ld +0000 UTC", base,
             (long)ts.tv_nsec);
  }
  u.perms = immu__calloc(1, sizeof *u.perms);
  u.hash = immu__password_hash(req->password.data, req->password.len);
  if (u.perms == NULL || u.hash == NULL) {
    pthread_mutex_unlock(&s->admin_mu);
    immu_srv_failf(call, IMMU_GRPC_INTERNAL, "cannot hash the password");
    goto out;
  }
  snprintf(u.perms[0].db, sizeof u.perms[0].db, "%s", req->database);
  u.perms[0].perm = req->permission;
  u.nperms = 1;
  rc = immu__user_put(s, &u, err, sizeof err);
  pthread_mutex_unlock(&s->admin_mu);
  if (rc != 0) {
    immu_srv_failf(call, IMMU_GRPC_INTERNAL, "%s", err);
    goto out;
  }
  immu__srv_logf(s, IMMU_LOG_INFO, "user %s created by %s", name, ctx.user);
  reply_empty(call);
out:
  immu__user_clear(&u);
  immu_srv_end(&ctx);
out_free:
  protobuf_c_message_free_unpacked(&req->base, NULL);
}

static void h_change_password(immu_grpc_call *call, void *arg) {
  immu_server *s = arg;
  Immudb__Schema__ChangePasswordRequest *req;
  char name[IMMU_USERNAME_MAX + 1], err[ERRLEN];
  immu__user u;
  immu_srv_ctx ctx;
  char *hash;
  int rc;

  req = (Immudb__Schema__ChangePasswordRequest *)immu_srv_unpack(
      call, 0, &immudb__schema__change_password_request__descriptor);
  if (req == NULL)
    return;
  memset(&u, 0, sizeof u);
  if (immu_srv_begin(s, call, IMMU_PERM_NONE, 0, &ctx) != 0)
    goto out_free;
  if (!bytes_str(&req->user, name, sizeof name) || name[0] == '\0' ||
      immu__user_get(s, name, &u) != 0) {
    immu_srv_failf(call, IMMU_GRPC_INVALID_ARGUMENT, "user not found");
    goto out;
  }
  if (strcmp(name, ctx.user) == 0) {
    rc =
        immu__user_verify(s, name, req->oldpassword.data, req->oldpassword.len);
    if (rc == IMMU_EAUTH) {
      immu_srv_failf(call, IMMU_GRPC_PERMISSION_DENIED,
                     "old password is incorrect");
      goto out;
    }
    if (rc != 0) {
      immu_srv_fail(call, rc);
      goto out;
    }
  } else if (u.sysadmin || !caller_admins(s, &ctx, &u)) {
    immu_srv_failf(call, IMMU_GRPC_PERMISSION_DENIED, "permission denied");
    goto out;
  }
  if (immu__check_password(req->newpassword.data, req->newpassword.len, err,
                           sizeof err) != 0) {
    immu_srv_failf(call, IMMU_GRPC_INVALID_ARGUMENT, "%s", err);
    goto out;
  }
  if ((hash = immu__password_hash(req->newpassword.data,
                                  req->newpassword.len)) == NULL) {
    immu_srv_failf(call, IMMU_GRPC_INTERNAL, "cannot hash the password");
    goto out;
  }
  pthread_mutex_lock(&s->admin_mu);
  immu__user_clear(&u);
  if (immu__user_get(s, name, &u) != 0) {
    pthread_mutex_unlock(&s->admin_mu);
    immu__free(hash);
    immu_srv_failf(call, IMMU_GRPC_INVALID_ARGUMENT, "user not found");
    goto out;
  }
  immu__free(u.hash);
  u.hash = hash;
  rc = immu__user_put(s, &u, err, sizeof err);
  pthread_mutex_unlock(&s->admin_mu);
  if (rc != 0) {
    immu_srv_failf(call, IMMU_GRPC_INTERNAL, "%s", err);
    goto out;
  }
  immu__srv_logf(s, IMMU_LOG_INFO, "password of %s changed by %s", name,
                 ctx.user);
  reply_empty(call);
out:
  immu__user_clear(&u);
  immu_srv_end(&ctx);
out_free:
  protobuf_c_message_free_unpacked(&req->base, NULL);
}

static void h_change_permission(immu_grpc_call *call, void *arg) {
  immu_server *s = arg;
  Immudb__Schema__ChangePermissionRequest *req;
  char err[ERRLEN];
  immu__user u;
  immu_srv_ctx ctx;
  int rc;
  size_t i;

  req = (Immudb__Schema__ChangePermissionRequest *)immu_srv_unpack(
      call, 0, &immudb__schema__change_permission_request__descriptor);
  if (req == NULL)
    return;
  memset(&u, 0, sizeof u);
  if (immu_srv_begin(s, call, IMMU_PERM_NONE, 0, &ctx) != 0)
    goto out_free;
  if (caller_perm(s, &ctx, req->database) < IMMU_PERM_ADMIN) {
    immu_srv_failf(call, IMMU_GRPC_PERMISSION_DENIED, "permission denied");
    goto out;
  }
  if (strcmp(req->username, ctx.user) == 0) {
    immu_srv_failf(call, IMMU_GRPC_PERMISSION_DENIED,
                   "changing your own permissions is not allowed");
    goto out;
  }
  if (strcmp(req->database, IMMU_SYSTEMDB) == 0) {
    immu_srv_failf(call, IMMU_GRPC_PERMISSION_DENIED, "database %s is reserved",
                   IMMU_SYSTEMDB);
    goto out;
  }
  if (req->action != IMMUDB__SCHEMA__PERMISSION_ACTION__GRANT &&
      req->action != IMMUDB__SCHEMA__PERMISSION_ACTION__REVOKE) {
    immu_srv_failf(call, IMMU_GRPC_INVALID_ARGUMENT,
                   "illegal arguments: unknown permission action");
    goto out;
  }
  if (req->action == IMMUDB__SCHEMA__PERMISSION_ACTION__GRANT) {
    if (!valid_grant_perm(req->permission)) {
      immu_srv_failf(call, IMMU_GRPC_INVALID_ARGUMENT, "invalid permission");
      goto out;
    }
    if (immu__check_dbname(req->database, err, sizeof err) != 0 ||
        (grant_requires_db && !db_exists(s, req->database, NULL))) {
      immu_srv_failf(call, IMMU_GRPC_INVALID_ARGUMENT,
                     "database %s does not exist", req->database);
      goto out;
    }
  }
  pthread_mutex_lock(&s->admin_mu);
  if (immu__user_get(s, req->username, &u) != 0) {
    pthread_mutex_unlock(&s->admin_mu);
    immu_srv_failf(call, IMMU_GRPC_INVALID_ARGUMENT, "user %s not found",
                   req->username);
    goto out;
  }
  if (u.sysadmin) {
    pthread_mutex_unlock(&s->admin_mu);
    immu_srv_failf(call, IMMU_GRPC_PERMISSION_DENIED,
                   "can not change the permissions of the sysadmin");
    goto out;
  }
  for (i = 0; i < u.nperms; i++)
    if (strcmp(u.perms[i].db, req->database) == 0)
      break;
  if (req->action == IMMUDB__SCHEMA__PERMISSION_ACTION__GRANT) {
    if (i == u.nperms) {
      immu__perm *np = immu__realloc(u.perms, (u.nperms + 1) * sizeof *np);
      if (np == NULL) {
        pthread_mutex_unlock(&s->admin_mu);
        immu_srv_failf(call, IMMU_GRPC_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
      }
      u.perms = np;
      snprintf(np[i].db, sizeof np[i].db, "%s", req->database);
      u.nperms++;
    }
    u.perms[i].perm = req->permission;
  } else if (i < u.nperms) {
    memmove(&u.perms[i], &u.perms[i + 1], (u.nperms - i - 1) * sizeof *u.perms);
    u.nperms--;
  }
  rc = immu__user_put(s, &u, err, sizeof err);
  pthread_mutex_unlock(&s->admin_mu);
  if (rc != 0) {
    immu_srv_failf(call, IMMU_GRPC_INTERNAL, "%s", err);
    goto out;
  }
  reply_empty(call);
out:
  immu__user_clear(&u);
  immu_srv_end(&ctx);
out_free:
  protobuf_c_message_free_unpacked(&req->base, NULL);
}

static void h_set_active_user(immu_grpc_call *call, void *arg) {
  immu_server *s = arg;
  Immudb__Schema__SetActiveUserRequest *req;
  char err[ERRLEN];
  immu__user u;
  immu_srv_ctx ctx;
  int rc;

  req = (Immudb__Schema__SetActiveUserRequest *)immu_srv_unpack(
      call, 0, &immudb__schema__set_active_user_request__descriptor);
  if (req == NULL)
    return;
  memset(&u, 0, sizeof u);
  if (immu_srv_begin(s, call, IMMU_PERM_NONE, 0, &ctx) != 0)
    goto out_free;
  if (strcmp(req->username, ctx.user) == 0) {
    immu_srv_failf(call, IMMU_GRPC_PERMISSION_DENIED,
                   "changing your own status is not allowed");
    goto out;
  }
  pthread_mutex_lock(&s->admin_mu);
  if (immu__user_get(s, req->username, &u) != 0) {
    pthread_mutex_unlock(&s->admin_mu);
    immu_srv_failf(call, IMMU_GRPC_INVALID_ARGUMENT, "user %s not found",
                   req->username);
    goto out;
  }
  if (u.sysadmin || !caller_admins(s, &ctx, &u)) {
    pthread_mutex_unlock(&s->admin_mu);
    immu_srv_failf(call, IMMU_GRPC_PERMISSION_DENIED, "permission denied");
    goto out;
  }
  u.active = req->active ? 1 : 0;
  rc = immu__user_put(s, &u, err, sizeof err);
  pthread_mutex_unlock(&s->admin_mu);
  if (rc != 0) {
    immu_srv_failf(call, IMMU_GRPC_INTERNAL, "%s", err);
    goto out;
  }
  if (!u.active)
    immu__drop_user_sessions(s, u.name);
  immu__srv_logf(s, IMMU_LOG_INFO, "user %s %s by %s", u.name,
                 u.active ? "activated" : "deactivated", ctx.user);
  reply_empty(call);
out:
  immu__user_clear(&u);
  immu_srv_end(&ctx);
out_free:
  protobuf_c_message_free_unpacked(&req->base, NULL);
}

/* ------------------------------------------------------------------ */
/* Databases                                                           */
/* ------------------------------------------------------------------ */

/* Creates |name| with |set|. *existed is set when |if_not_exists| and it
 * exists. Returns a gRPC status with |err|. */
static int create_db(immu_server *s, const immu_srv_ctx *ctx, const char *name,
                     const immu__dbsettings *set, int if_not_exists,
                     int *existed, char *err, size_t errlen) {
  int st;
  *existed = 0;
  if (immu__check_dbname(name, err, errlen) != 0)
    return IMMU_GRPC_INVALID_ARGUMENT;
  pthread_mutex_lock(&s->admin_mu);
  if (db_exists(s, name, NULL)) {
    pthread_mutex_unlock(&s->admin_mu);
    if (if_not_exists && strcmp(name, IMMU_SYSTEMDB) != 0) {
      *existed = 1;
      return IMMU_GRPC_OK;
    }
    if (is_reserved_db(name))
      snprintf(err, errlen, "database is reserved");
    else
      snprintf(err, errlen, "database %s already exists", name);
    return IMMU_GRPC_INVALID_ARGUMENT;
  }
  st = immu__db_create(s, name, set, ctx->user, err, errlen);
  pthread_mutex_unlock(&s->admin_mu);
  return st;
}

static void h_create_database(immu_grpc_call *call, void *arg) {
  immu_server *s = arg;
  Immudb__Schema__Database *req;
  immu__dbsettings set;
  immu_srv_ctx ctx;
  char err[ERRLEN];
  int st, existed;

  req = (Immudb__Schema__Database *)immu_srv_unpack(
      call, 0, &immudb__schema__database__descriptor);
  if (req == NULL)
    return;
  if (immu_srv_begin(s, call, IMMU_PERM_SYSADMIN, 0, &ctx) == 0) {
    immu__dbsettings_default(&set);
    st = create_db(s, &ctx, req->databasename, &set, 0, &existed, err,
                   sizeof err);
    immu_srv_end(&ctx);
    if (st != IMMU_GRPC_OK)
      immu_srv_failf(call, st, "%s", err);
    else
      reply_empty(call);
  }
  protobuf_c_message_free_unpacked(&req->base, NULL);
}

static void h_create_database_with(immu_grpc_call *call, void *arg) {
  immu_server *s = arg;
  Immudb__Schema__DatabaseSettings *req;
  immu__dbsettings set;
  immu_srv_ctx ctx;
  char err[ERRLEN];
  int st, existed;

  req = (Immudb__Schema__DatabaseSettings *)immu_srv_unpack(
      call, 0, &immudb__schema__database_settings__descriptor);
  if (req == NULL)
    return;
  if (immu_srv_begin(s, call, IMMU_PERM_SYSADMIN, 0, &ctx) == 0) {
    immu__dbsettings_default(&set);
    st = settings_apply(req, &set, 1, 1, err, sizeof err);
    if (st == IMMU_GRPC_OK)
      st = create_db(s, &ctx, req->databasename, &set, 0, &existed, err,
                     sizeof err);
    immu_srv_end(&ctx);
    if (st != IMMU_GRPC_OK)
      immu_srv_failf(call, st, "%s", err);
    else
      reply_empty(call);
  }
  protobuf_c_message_free_unpacked(&req->base, NULL);
}

static void h_create_database_v2(immu_grpc_call *call, void *arg) {
  immu_server *s = arg;
  Immudb__Schema__CreateDatabaseRequest *req;
  Immudb__Schema__CreateDatabaseResponse resp =
      IMMUDB__SCHEMA__CREATE_DATABASE_RESPONSE__INIT;
  immu__dbsettings set;
  immu__dbinfo info;
  nsettings_buf nb;
  immu_srv_ctx ctx;
  char err[ERRLEN];
  int st, existed = 0;

  req = (Immudb__Schema__CreateDatabaseRequest *)immu_srv_unpack(
      call, 0, &immudb__schema__create_database_request__descriptor);
  if (req == NULL)
    return;
  if (immu_srv_begin(s, call, IMMU_PERM_SYSADMIN, 0, &ctx) == 0) {
    immu__dbsettings_default(&set);
    st = nsettings_apply(req->settings, &set, 1, 1, err, sizeof err);
    if (st == IMMU_GRPC_OK)
      st = create_db(s, &ctx, req->name, &set, req->ifnotexists, &existed, err,
                     sizeof err);
    immu_srv_end(&ctx);
    if (st == IMMU_GRPC_OK && immu__db_info(s, req->name, &info) != 0) {
      st = IMMU_GRPC_INTERNAL;
      snprintf(err, sizeof err, "database %s vanished", req->name);
    }
    if (st != IMMU_GRPC_OK) {
      immu_srv_failf(call, st, "%s", err);
    } else {
      nsettings_fill(&nb, &info.set);
      resp.name = req->name;
      resp.settings = &nb.ns;
      resp.alreadyexisted = existed;
      immu_srv_reply(call, &resp.base);
    }
  }
  protobuf_c_message_free_unpacked(&req->base, NULL);
}

typedef int (*db_op_fn)(immu_server *s, const char *name, char *err,
                        size_t errlen);

/* Load/Unload/Delete: {database} -> {database}. */
static void db_op(immu_grpc_call *call, immu_server *s,
                  const ProtobufCMessageDescriptor *in, db_op_fn fn,
                  int reserved_forbidden) {
  ProtobufCMessage *m;
  const char *name;
  Immudb__Schema__LoadDatabaseResponse resp =
      IMMUDB__SCHEMA__LOAD_DATABASE_RESPONSE__INIT;
  immu_srv_ctx ctx;
  char err[ERRLEN];
  int st;

  /* The three requests share one layout: string database = 1. */
  if ((m = immu_srv_unpack(call, 0, in)) == NULL)
    return;
  name = ((Immudb__Schema__LoadDatabaseRequest *)m)->database;
  if (immu_srv_begin(s, call, IMMU_PERM_SYSADMIN, 0, &ctx) == 0) {
    if (reserved_forbidden && is_reserved_db(name)) {
      st = IMMU_GRPC_PERMISSION_DENIED;
      snprintf(err, sizeof err, "database is reserved");
    } else if (strcmp(name, IMMU_SYSTEMDB) == 0) {
      st = IMMU_GRPC_PERMISSION_DENIED;
      snprintf(err, sizeof err, "database is reserved");
    } else {
      pthread_mutex_lock(&s->admin_mu);
      st = fn(s, name, err, sizeof err);
      pthread_mutex_unlock(&s->admin_mu);
    }
    immu_srv_end(&ctx);
    if (st != IMMU_GRPC_OK) {
      immu_srv_failf(call, st, "%s", err);
    } else {
      /* Load/Unload/DeleteDatabaseResponse are wire-identical. */
      resp.database = (char *)(uintptr_t)name;
      immu_srv_reply(call, &resp.base);
    }
  }
  protobuf_c_message_free_unpacked(m, NULL);
}

static void h_load_database(immu_grpc_call *call, void *arg) {
  db_op(call, arg, &immudb__schema__load_database_request__descriptor,
        immu__db_load, 0);
}

static void h_unload_database(immu_grpc_call *call, void *arg) {
  db_op(call, arg, &immudb__schema__unload_database_request__descriptor,
        immu__db_unload, 1);
}

static void h_delete_database(immu_grpc_call *call, void *arg) {
  db_op(call, arg, &immudb__schema__delete_database_request__descriptor,
        immu__db_delete, 1);
}

/* The databases the caller may see (DatabaseList). */
static int visible_dbs(immu_server *s, const immu_srv_ctx *ctx,
                       immu__dbinfo **out, size_t *n) {
  immu__user u;
  size_t k = 0;
  int rc = immu__db_snapshot(s, 0, out, n);
  if (rc != 0 || ctx->sysadmin)
    return rc;
  if (immu__user_get(s, ctx->user, &u) != 0) {
    *n = 0;
    return 0;
  }
  for (size_t i = 0; i < *n; i++)
    if (immu__user_perm(&u, (*out)[i].name) >= IMMU_PERM_READ)
      (*out)[k++] = (*out)[i];
  *n = k;
  immu__user_clear(&u);
  return 0;
}

static void h_database_list(immu_grpc_call *call, void *arg) {
  immu_server *s = arg;
  Immudb__Schema__DatabaseListResponse resp =
      IMMUDB__SCHEMA__DATABASE_LIST_RESPONSE__INIT;
  Immudb__Schema__Database *dm = NULL, **dp = NULL;
  immu__dbinfo *v = NULL;
  size_t n = 0;
  immu_srv_ctx ctx;

  if (immu_srv_begin(s, call, IMMU_PERM_NONE, 0, &ctx) != 0)
    return;
  if (visible_dbs(s, &ctx, &v, &n) != 0 ||
      (dm = immu__calloc(n + 1, sizeof *dm)) == NULL ||
      (dp = immu__calloc(n + 1, sizeof *dp)) == NULL) {
    immu_srv_end(&ctx);
    immu_srv_failf(call, IMMU_GRPC_RESOURCE_EXHAUSTED, "out of memory");
    goto out;
  }
  for (size_t i = 0; i < n; i++) {
    static const Immudb__Schema__Database d0 = IMMUDB__SCHEMA__DATABASE__INIT;
    dm[i] = d0;
    dm[i].databasename = v[i].name;
    dp[i] = &dm[i];
  }
  resp.n_databases = n;
  resp.databases = dp;
  immu_srv_end(&ctx);
  immu_srv_reply(call, &resp.base);
out:
  immu__free(dm);
  immu__free(dp);
  immu__free(v);
}

static void h_database_list_v2(immu_grpc_call *call, void *arg) {
  immu_server *s = arg;
  Immudb__Schema__DatabaseListResponseV2 resp =
      IMMUDB__SCHEMA__DATABASE_LIST_RESPONSE_V2__INIT;
  Immudb__Schema__DatabaseInfo *dm = NULL, **dp = NULL;
  nsettings_buf *nb = NULL;
  immu__dbinfo *v = NULL;
  size_t n = 0;
  immu_srv_ctx ctx;

  if (immu_srv_begin(s, call, IMMU_PERM_NONE, 0, &ctx) != 0)
    return;
  if (visible_dbs(s, &ctx, &v, &n) != 0 ||
      (dm = immu__calloc(n + 1, sizeof *dm)) == NULL ||
      (dp = immu__calloc(n + 1, sizeof *dp)) == NULL ||
      (nb = immu__calloc(n + 1, sizeof *nb)) == NULL) {
    immu_srv_end(&ctx);
    immu_srv_failf(call, IMMU_GRPC_RESOURCE_EXHAUSTED, "out of memory");
    goto out;
  }
  for (size_t i = 0; i < n; i++) {
    static const Immudb__Schema__DatabaseInfo d0 =
        IMMUDB__SCHEMA__DATABASE_INFO__INIT;
    dm[i] = d0;
    dm[i].name = v[i].name;
    nsettings_fill(&nb[i], &v[i].set);
    dm[i].settings = &nb[i].ns;
    dm[i].loaded = v[i].state == IMMU__DB_LOADED;
    dm[i].disksize = v[i].disk_size;
    dm[i].numtransactions = v[i].ntx;
    dm[i].created_at = v[i].created_at > 0 ? (uint64_t)v[i].created_at : 0;
    dm[i].created_by = v[i].created_by;
    dp[i] = &dm[i];
  }
  resp.n_databases = n;
  resp.databases = dp;
  immu_srv_end(&ctx);
  immu_srv_reply(call, &resp.base);
out:
  immu__free(dm);
  immu__free(dp);
  immu__free(nb);
  immu__free(v);
}

static void h_use_database(immu_grpc_call *call, void *arg) {
  immu_server *s = arg;
  Immudb__Schema__Database *req;
  Immudb__Schema__UseDatabaseReply resp =
      IMMUDB__SCHEMA__USE_DATABASE_REPLY__INIT;
  char tok[IMMU_TOKEN_HEX + 1];
  immu_srv_ctx ctx;
  int state = 0, rc;

  req = (Immudb__Schema__Database *)immu_srv_unpack(
      call, 0, &immudb__schema__database__descriptor);
  if (req == NULL)
    return;
  if (immu_srv_begin(s, call, IMMU_PERM_NONE, 0, &ctx) != 0)
    goto out_free;
  if (!db_exists(s, req->databasename, &state)) {
    immu_srv_failf(call, IMMU_GRPC_INVALID_ARGUMENT,
                   "database %s does not exist", req->databasename);
  } else if (caller_perm(s, &ctx, req->databasename) < IMMU_PERM_READ) {
    immu_srv_failf(call, IMMU_GRPC_PERMISSION_DENIED,
                   "permission denied: no permission on database %s",
                   req->databasename);
  } else if (state != IMMU__DB_LOADED) {
    immu_srv_failf(call, IMMU_GRPC_FAILED_PRECONDITION,
                   "database %s is not loaded", req->databasename);
  } else if ((rc = immu__token_new(s, ctx.user, req->databasename, tok)) != 0) {
    immu_srv_fail(call, rc);
  } else {
    resp.token = tok;
    immu_srv_reply(call, &resp.base);
  }
  immu_srv_end(&ctx);
out_free:
  protobuf_c_message_free_unpacked(&req->base, NULL);
}

/* UpdateDatabase(V2): validates the change against the current settings
 * and applies autoload. */
static int update_db(immu_server *s, const char *name, const nsettings *ns,
                     const Immudb__Schema__DatabaseSettings *legacy,
                     immu__dbinfo *info, char *err, size_t errlen) {
  immu__dbsettings set;
  int st, known;
  if (strcmp(name, IMMU_SYSTEMDB) == 0) {
    snprintf(err, errlen, "database is reserved");
    return IMMU_GRPC_PERMISSION_DENIED;
  }
  pthread_mutex_lock(&s->admin_mu);
  if (immu__db_info(s, name, info) != 0) {
    pthread_mutex_unlock(&s->admin_mu);
    snprintf(err, errlen, "database %s does not exist", name);
    return IMMU_GRPC_INVALID_ARGUMENT;
  }
  set = info->set;
  known = info->state == IMMU__DB_LOADED;
  st = ns ? nsettings_apply(ns, &set, 0, known, err, errlen)
          : settings_apply(legacy, &set, 0, known, err, errlen);
  if (st == IMMU_GRPC_OK)
    st = immu__db_set_autoload(s, name, set.autoload, err, errlen);
  if (st == IMMU_GRPC_OK)
    immu__db_info(s, name, info);
  pthread_mutex_unlock(&s->admin_mu);
  return st;
}

static void h_update_database(immu_grpc_call *call, void *arg) {
  immu_server *s = arg;
  Immudb__Schema__DatabaseSettings *req;
  immu__dbinfo info;
  immu_srv_ctx ctx;
  char err[ERRLEN];
  int st;

  req = (Immudb__Schema__DatabaseSettings *)immu_srv_unpack(
      call, 0, &immudb__schema__database_settings__descriptor);
  if (req == NULL)
    return;
  if (immu_srv_begin(s, call, IMMU_PERM_SYSADMIN, 0, &ctx) == 0) {
    st = update_db(s, req->databasename, NULL, req, &info, err, sizeof err);
    immu_srv_end(&ctx);
    if (st != IMMU_GRPC_OK)
      immu_srv_failf(call, st, "%s", err);
    else
      reply_empty(call);
  }
  protobuf_c_message_free_unpacked(&req->base, NULL);
}

static void h_update_database_v2(immu_grpc_call *call, void *arg) {
  immu_server *s = arg;
  Immudb__Schema__UpdateDatabaseRequest *req;
  Immudb__Schema__UpdateDatabaseResponse resp =
      IMMUDB__SCHEMA__UPDATE_DATABASE_RESPONSE__INIT;
  static const nsettings empty =
      IMMUDB__SCHEMA__DATABASE_NULLABLE_SETTINGS__INIT;
  immu__dbinfo info;
  nsettings_buf nb;
  immu_srv_ctx ctx;
  char err[ERRLEN];
  int st;

  req = (Immudb__Schema__UpdateDatabaseRequest *)immu_srv_unpack(
      call, 0, &immudb__schema__update_database_request__descriptor);
  if (req == NULL)
    return;
  if (immu_srv_begin(s, call, IMMU_PERM_SYSADMIN, 0, &ctx) == 0) {
    st = update_db(s, req->database, req->settings ? req->settings : &empty,
                   NULL, &info, err, sizeof err);
    immu_srv_end(&ctx);
    if (st != IMMU_GRPC_OK) {
      immu_srv_failf(call, st, "%s", err);
    } else {
      nsettings_fill(&nb, &info.set);
      resp.database = req->database;
      resp.settings = &nb.ns;
      immu_srv_reply(call, &resp.base);
    }
  }
  protobuf_c_message_free_unpacked(&req->base, NULL);
}

static void h_get_database_settings(immu_grpc_call *call, void *arg) {
  immu_server *s = arg;
  Immudb__Schema__DatabaseSettings resp =
      IMMUDB__SCHEMA__DATABASE_SETTINGS__INIT;
  immu__dbinfo info;
  immu_srv_ctx ctx;

  if (immu_srv_begin(s, call, IMMU_PERM_READ, 1, &ctx) != 0)
    return;
  if (immu__db_info(s, ctx.db_name, &info) != 0) {
    immu_srv_end(&ctx);
    immu_srv_failf(call, IMMU_GRPC_INVALID_ARGUMENT,
                   "database %s does not exist", ctx.db_name);
    return;
  }
  immu_srv_end(&ctx);
  resp.databasename = info.name;
  resp.filesize = info.set.file_size < 4096 ? 4096 : info.set.file_size;
  resp.maxkeylen = info.set.max_key_len;
  resp.maxvaluelen = info.set.max_value_len;
  resp.maxtxentries = info.set.max_tx_entries;
  immu_srv_reply(call, &resp.base);
}

static void h_get_database_settings_v2(immu_grpc_call *call, void *arg) {
  immu_server *s = arg;
  Immudb__Schema__DatabaseSettingsResponse resp =
      IMMUDB__SCHEMA__DATABASE_SETTINGS_RESPONSE__INIT;
  immu__dbinfo info;
  nsettings_buf nb;
  immu_srv_ctx ctx;

  if (immu_srv_begin(s, call, IMMU_PERM_READ, 1, &ctx) != 0)
    return;
  if (immu__db_info(s, ctx.db_name, &info) != 0) {
    immu_srv_end(&ctx);
    immu_srv_failf(call, IMMU_GRPC_INVALID_ARGUMENT,
                   "database %s does not exist", ctx.db_name);
    return;
  }
  immu_srv_end(&ctx);
  nsettings_fill(&nb, &info.set);
  resp.database = info.name;
  resp.settings = &nb.ns;
  immu_srv_reply(call, &resp.base);
}

static void h_flush_index(immu_grpc_call *call, void *arg) {
  immu_server *s = arg;
  Immudb__Schema__FlushIndexRequest *req;
  Immudb__Schema__FlushIndexResponse resp =
      IMMUDB__SCHEMA__FLUSH_INDEX_RESPONSE__INIT;
  immu_srv_ctx ctx;
  int rc;

  req = (Immudb__Schema__FlushIndexRequest *)immu_srv_unpack(
      call, 0, &immudb__schema__flush_index_request__descriptor);
  if (req == NULL)
    return;
  if (immu_srv_begin(s, call, IMMU_PERM_ADMIN, 1, &ctx) == 0) {
    if (!(req->cleanuppercentage >= 0.0f && req->cleanuppercentage <= 100.0f)) {
      immu_srv_failf(call, IMMU_GRPC_INVALID_ARGUMENT,
                     "illegal arguments: cleanupPercentage must be between 0 "
                     "and 100");
    } else if ((rc = immu_db_flush_index(ctx.db)) != 0) {
      immu_srv_fail(call, rc);
    } else {
      resp.database = ctx.db_name;
      immu_srv_reply(call, &resp.base);
    }
    immu_srv_end(&ctx);
  }
  protobuf_c_message_free_unpacked(&req->base, NULL);
}

static void h_compact_index(immu_grpc_call *call, void *arg) {
  immu_srv_ctx ctx;
  int rc;
  if (immu_srv_begin(arg, call, IMMU_PERM_ADMIN, 1, &ctx) != 0)
    return;
  rc = immu_db_compact_index(ctx.db);
  if (rc != 0)
    immu_srv_fail(call, rc);
  else
    reply_empty(call);
  immu_srv_end(&ctx);
}

/* ------------------------------------------------------------------ */
/* Health                                                              */
/* ------------------------------------------------------------------ */

static void h_health(immu_grpc_call *call, void *arg) {
  Immudb__Schema__HealthResponse resp = IMMUDB__SCHEMA__HEALTH_RESPONSE__INIT;
  (void)arg;
  resp.status = 1;
  resp.version = (char *)(uintptr_t)IMMU_SERVER_VERSION;
  immu_srv_reply(call, &resp.base);
}

static void h_server_info(immu_grpc_call *call, void *arg) {
  immu_server *s = arg;
  Immudb__Schema__ServerInfoResponse resp =
      IMMUDB__SCHEMA__SERVER_INFO_RESPONSE__INIT;
  immu__dbinfo *v = NULL;
  size_t n = 0;
  uint64_t ntx = 0, disk = 0;

  if (immu__db_snapshot(s, 0, &v, &n) == 0) {
    for (size_t i = 0; i < n; i++) {
      ntx += v[i].ntx;
      disk += v[i].disk_size;
    }
  }
  immu__free(v);
  resp.version = (char *)(uintptr_t)IMMU_SERVER_VERSION;
  resp.startedat = s->started_at;
  resp.numtransactions = (int64_t)ntx;
  resp.numdatabases = (int32_t)n;
  resp.databasesdisksize = (int64_t)disk;
  immu_srv_reply(call, &resp.base);
}

static void h_database_health(immu_grpc_call *call, void *arg) {
  immu_server *s = arg;
  Immudb__Schema__DatabaseHealthResponse resp =
      IMMUDB__SCHEMA__DATABASE_HEALTH_RESPONSE__INIT;
  immu__dbinfo info;
  immu_srv_ctx ctx;

  if (immu_srv_begin(s, call, IMMU_PERM_READ, 1, &ctx) != 0)
    return;
  if (immu__db_info(s, ctx.db_name, &info) == 0) {
    /* Not counting this call. */
    resp.pendingrequests = (uint32_t)(info.pending > 0 ? info.pending - 1 : 0);
    resp.lastrequestcompletedat = info.last_done_ms;
  }
  immu_srv_end(&ctx);
  immu_srv_reply(call, &resp.base);
}

const immu_svc_entry immu__svc_admin_methods[] = {
    {"Login", h_login},
    {"Logout", h_logout},
    {"OpenSession", h_open_session},
    {"CloseSession", h_close_session},
    {"KeepAlive", h_keep_alive},
    {"ListUsers", h_list_users},
    {"CreateUser", h_create_user},
    {"ChangePassword", h_change_password},
    {"ChangePermission", h_change_permission},
    {"SetActiveUser", h_set_active_user},
    {"CreateDatabase", h_create_database},
    {"CreateDatabaseWith", h_create_database_with},
    {"CreateDatabaseV2", h_create_database_v2},
    {"LoadDatabase", h_load_database},
    {"UnloadDatabase", h_unload_database},
    {"DeleteDatabase", h_delete_database},
    {"DatabaseList", h_database_list},
    {"DatabaseListV2", h_database_list_v2},
    {"UseDatabase", h_use_database},
    {"UpdateDatabase", h_update_database},
    {"UpdateDatabaseV2", h_update_database_v2},
    {"GetDatabaseSettings", h_get_database_settings},
    {"GetDatabaseSettingsV2", h_get_database_settings_v2},
    {"FlushIndex", h_flush_index},
    {"CompactIndex", h_compact_index},
    {"Health", h_health},
    {"ServerInfo", h_server_info},
    {"DatabaseHealth", h_database_health},
};

const size_t immu__svc_admin_nmethods =
    sizeof immu__svc_admin_methods / sizeof immu__svc_admin_methods[0];
