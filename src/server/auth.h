/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Internal header of the "auth half" of the ImmuService implementation:
 * auth.c (server state, identity, database manager, users, tokens,
 * sessions, the svc.h helpers and the method table) and svc_admin.c (the
 * auth/user/database/health RPC handlers). Nothing outside these two files
 * includes it; the data half sees only svc.h.
 *
 * Data directory layout (immu_server_new):
 *   <dir>/immudb.identifier   12 raw bytes: the server's xid (spec 8.2)
 *   <dir>/systemdb/           users and database records (KV layer)
 *   <dir>/defaultdb/          created at first start
 *   <dir>/<name>/             one directory per database (immu_db_open)
 *   <dir>/.deleted.<name>.*   a database being deleted (removed at start)
 *
 * systemdb records (values are "key=value\n" lines, first line "v=1"):
 *   0x01 <username>  user: hash, active, sysadmin, created_by, created_at,
 *                    and one "perm=<db>:<permission>" line per permission
 *   0x02 <dbname>    database: seq (creation order), created_by,
 *                    created_at, file_size, autoload, deleted
 *
 * Locking: |mu| guards every in-memory table (databases, users, tokens,
 * sessions) and is held only for short, non-blocking sections; password
 * hashing, systemdb writes and database open/close happen outside it.
 * |admin_mu| serialises the mutating admin RPCs (create/load/unload/delete
 * database, user changes) so that their check-then-write sequences do not
 * interleave. Lock order: admin_mu before mu.
 */
#ifndef IMMU_SERVER_AUTH_H
#define IMMU_SERVER_AUTH_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "server/svc.h"

#define IMMU_SYSTEMDB "systemdb"
#define IMMU_DEFAULTDB "defaultdb"
#define IMMU_SYSADMIN_USER "immudb"
#define IMMU_DEFAULT_ADMIN_PASSWORD "immudb"
/* LoginResponse.warning when the sysadmin logs in with the default
 * password (immudb-api.md section 3, verbatim). */
#define IMMU_WARN_DEFAULT_PASSWORD                                             \
  "immudb user has the default password: please change it to ensure proper "   \
  "security"
/* immudb's password rule, as its docs and error message word it. */
#define IMMU_PASSWORD_RULE                                                     \
  "password must have between 8 and 32 letters, digits and special "           \
  "characters of which at least 1 uppercase letter, 1 digit and 1 special "    \
  "character"

#define IMMU_DBNAME_MAX 128    /* immudb's limit on database names */
#define IMMU_USERNAME_MAX 127  /* fits immu_srv_ctx.user */
#define IMMU_TOKEN_HEX 64      /* 32 random bytes, hex */
#define IMMU_MAX_TOKENS 100000 /* oldest tokens are evicted beyond this */

/* Database states. */
enum immu__db_state {
  IMMU__DB_LOADED = 0,
  IMMU__DB_UNLOADED = 1, /* closed on purpose (UnloadDatabase, autoload) */
  IMMU__DB_FAILED = 2,   /* failed to open: |err| says why */
  IMMU__DB_UNLOADING = 3 /* waiting for in-flight handlers, then closing */
};

/* Per-database settings we implement. max_* are creation-time only (the
 * engine persists them); file_size is the log segment size, persisted in
 * the systemdb record because the engine does not keep it. */
typedef struct immu__dbsettings {
  uint32_t file_size;
  uint32_t max_key_len;
  uint32_t max_value_len;
  uint32_t max_tx_entries;
  int autoload;
} immu__dbsettings;

typedef struct immu__dbent {
  char name[IMMU_DBNAME_MAX + 1];
  immu_db *db;          /* NULL unless LOADED or UNLOADING */
  int state;            /* enum immu__db_state */
  char *err;            /* FAILED: the open error (immu__free) */
  uint64_t refs;        /* handlers holding |db| (immu_srv_begin .. end) */
  int64_t last_done_ms; /* when the last holder finished (unix ms) */
  immu__dbsettings set;
  uint64_t seq;       /* creation order; UINT64_MAX for adopted dirs */
  int64_t created_at; /* unix seconds */
  char created_by[IMMU_USERNAME_MAX + 1];
} immu__dbent;

typedef struct immu__perm {
  char db[IMMU_DBNAME_MAX + 1];
  uint32_t perm;
} immu__perm;

typedef struct immu__user {
  char name[IMMU_USERNAME_MAX + 1];
  char *hash; /* crypt(3) string (immu__free) */
  int active;
  int sysadmin;
  char created_by[IMMU_USERNAME_MAX + 1];
  char created_at[64];
  immu__perm *perms; /* immu__free */
  size_t nperms;
} immu__user;

/* A token (Login/UseDatabase) or a session (OpenSession). */
typedef struct immu__cred {
  char id[IMMU_TOKEN_HEX + 1];
  int is_session;
  char user[IMMU_USERNAME_MAX + 1];
  char db[IMMU_DBNAME_MAX + 1];
  int64_t expiry_ms;              /* tokens: absolute expiry */
  int64_t last_ms;                /* sessions: last activity */
  struct immu__cred *hnext;       /* hash chain */
  struct immu__cred *prev, *next; /* age list (tokens) / LRU (sessions) */
} immu__cred;

typedef struct immu__credlist {
  immu__cred *head, *tail; /* head = oldest */
  size_t n;
} immu__credlist;

struct immu_server {
  char *dir;
  char *listen_address;
  int auth;
  int devmode;
  int maintenance;
  int synced;
  int token_expiry_min;
  int session_timeout_s;
  int max_sessions;
  void (*log)(void *arg, int level, const char *msg);
  void *log_arg;

  char uuid[21];
  int64_t started_at; /* unix seconds */
  struct immu_store_env *env;
  immu_signer *signer;
  char *dummy_hash; /* verified against for unknown users (timing) */

  pthread_mutex_t mu;
  pthread_cond_t cv; /* refs dropped to 0 */
  pthread_mutex_t admin_mu;

  immu__dbent **dbs; /* dbs[0] is systemdb; then creation order */
  size_t ndbs, capdbs;
  uint64_t next_seq;

  immu__user **users;
  size_t nusers, capusers;

  immu__cred **buckets;
  size_t nbuckets;
  immu__credlist tokens, sessions;

  immu_grpc_method *methods;
  size_t nmethods;
};

/* How a call authenticated (filled by immu__srv_begin). */
enum immu__auth_kind {
  IMMU__AUTH_ANON = 0, /* --auth=false, no credentials */
  IMMU__AUTH_TOKEN = 1,
  IMMU__AUTH_SESSION = 2
};

typedef struct immu__authinfo {
  int kind;                    /* enum immu__auth_kind */
  char id[IMMU_TOKEN_HEX + 1]; /* token or session id */
} immu__authinfo;

/* --- auth.c, for svc_admin.c --- */

void immu__srv_logf(immu_server *s, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
int64_t immu__now_ms(void);

/* immu_srv_begin that also says how the caller authenticated (|ai| may be
 * NULL). */
int immu__srv_begin(immu_server *s, immu_grpc_call *call, int need, int need_db,
                    immu_srv_ctx *out, immu__authinfo *ai);

/* Rules. Return 0, or nonzero with a message in |err| (|errlen| bytes). */
int immu__check_dbname(const char *name, char *err, size_t errlen);
int immu__check_username(const uint8_t *name, size_t len, char *err,
                         size_t errlen);
int immu__check_password(const uint8_t *pw, size_t len, char *err,
                         size_t errlen);

/* Users (all take |mu| themselves). */
/* Verifies |user|/|pw|. Returns 0, IMMU_EAUTH (unknown user or wrong
 * password), IMMU_EPERM (user not active) or IMMU_ENOMEM. */
int immu__user_verify(immu_server *s, const char *user, const uint8_t *pw,
                      size_t pwlen);
/* 1 if the sysadmin's stored password is the default one. */
int immu__admin_has_default_password(immu_server *s);
/* Copies the user |name| (deep: hash, perms) into |out|; IMMU_ENOTFOUND.
 * Release with immu__user_clear. */
int immu__user_get(immu_server *s, const char *name, immu__user *out);
void immu__user_clear(immu__user *u);
/* Writes |u| to systemdb and replaces (or adds) the in-memory copy. The
 * caller holds admin_mu. |u| is copied. Returns 0 or an error code with
 * immu_db_last_error() style message in |err|. */
int immu__user_put(immu_server *s, const immu__user *u, char *err,
                   size_t errlen);
/* Hashes |pw| into a fresh crypt string (immu__free). NULL on failure. */
char *immu__password_hash(const uint8_t *pw, size_t len);
/* Permission of |u| on |db| (IMMU_PERM_SYSADMIN for the sysadmin). */
uint32_t immu__user_perm(const immu__user *u, const char *db);
/* Snapshot of all users (deep copies). Free with immu__users_free. */
int immu__users_snapshot(immu_server *s, immu__user **out, size_t *n);
void immu__users_free(immu__user *v, size_t n);
/* Drops every session of |user| (deactivation). */
void immu__drop_user_sessions(immu_server *s, const char *user);

/* Tokens and sessions. */
/* New token for |user| bound to |db| ("" = none) into |id|. */
int immu__token_new(immu_server *s, const char *user, const char *db,
                    char id[IMMU_TOKEN_HEX + 1]);
void immu__token_drop(immu_server *s, const char *id);
/* New session; IMMU_EBUSY when max_sessions are open. */
int immu__session_new(immu_server *s, const char *user, const char *db,
                      char id[IMMU_TOKEN_HEX + 1]);
/* Removes a session; IMMU_ENOTFOUND if there is none with that id. */
int immu__session_drop(immu_server *s, const char *id);

/* Databases. All take |mu| themselves; the mutating ones expect admin_mu
 * held by the caller. |err| receives a message on failure and the return
 * value is a gRPC status (IMMU_GRPC_OK on success). */
int immu__db_create(immu_server *s, const char *name,
                    const immu__dbsettings *set, const char *by, char *err,
                    size_t errlen);
int immu__db_load(immu_server *s, const char *name, char *err, size_t errlen);
int immu__db_unload(immu_server *s, const char *name, char *err, size_t errlen);
int immu__db_delete(immu_server *s, const char *name, char *err, size_t errlen);
/* Applies a settings change that was validated by the caller (autoload
 * only; the rest is fixed at creation). */
int immu__db_set_autoload(immu_server *s, const char *name, int autoload,
                          char *err, size_t errlen);
/* Default settings of a new database. */
void immu__dbsettings_default(immu__dbsettings *set);

/* A copy of one database's public state, for listings. */
typedef struct immu__dbinfo {
  char name[IMMU_DBNAME_MAX + 1];
  int state;
  immu__dbsettings set; /* effective (engine limits when loaded) */
  uint64_t disk_size;
  uint64_t ntx;
  int64_t created_at;
  char created_by[IMMU_USERNAME_MAX + 1];
  uint64_t pending; /* refs */
  int64_t last_done_ms;
} immu__dbinfo;

/* Snapshot of the databases (systemdb excluded unless |with_system|), in
 * creation order. Free with immu__free. Loaded databases are held while
 * their sizes are read. */
int immu__db_snapshot(immu_server *s, int with_system, immu__dbinfo **out,
                      size_t *n);
/* One database by name; IMMU_ENOTFOUND. */
int immu__db_info(immu_server *s, const char *name, immu__dbinfo *out);

/* --- svc_admin.c, for auth.c --- */
extern const immu_svc_entry immu__svc_admin_methods[];
extern const size_t immu__svc_admin_nmethods;

#endif
