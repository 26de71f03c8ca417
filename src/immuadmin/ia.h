/* SPDX-License-Identifier: Apache-2.0 */
/*
 * immuadmin: the admin CLI of our immudb-compatible server, with immudb's
 * command names (immudb-api.md section 5.2; `immuadmin help`).
 *
 *   main.c     flags (flag > IMMUADMIN_* environment > default), dispatch,
 *              login/logout/status, database and user commands, prompts
 *   rpc.c      the connection: the gRPC transport (src/client/
 *              grpc_client.h) with our own token metadata, unary calls with
 *              protobuf-c messages, exportTx / replicateTx
 *   backup.c   backup, dump, restore and verify: the backup file format and
 *              the chain verifier (tx frames of store/txrec.h, the Alh
 *              chain, the ahtree of include/immudb/crypto.h)
 *   stats.c    `stats`: the server's Prometheus endpoint, as text or as a
 *              live terminal view
 *   util.c     aborting allocation, prompts without echo, progress bars,
 *              tables, byte sizes
 *
 * Why not the SDK (include/immudb/client.h) for the RPCs: immuadmin keeps
 * the login token in a token file between invocations (as immudb's
 * immuadmin does), and the SDK can neither take a stored token nor hand
 * out the one it holds, nor return LoginResponse.warning; exportTx and
 * replicateTx need that token too. rpc.c is therefore a small token-aware
 * layer on the SDK's transport.
 *
 * Exit status: 0 success; 1 the operation failed (server error, I/O,
 * refused); 2 bad usage (unknown command or flag, missing argument);
 * 3 integrity failure (a backup file or a database does not verify).
 */
#ifndef IMMU_IMMUADMIN_IA_H
#define IMMU_IMMUADMIN_IA_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <protobuf-c/protobuf-c.h>

#include "client/grpc_client.h"
#include "immudb/crypto.h"

#define IA_EXIT_OK 0
#define IA_EXIT_FAIL 1
#define IA_EXIT_USAGE 2
#define IA_EXIT_INTEGRITY 3

#define IA_DEFAULT_DB "defaultdb"
#define IA_ERRLEN 1024

/* ------------------------------------------------------------------ */
/* Settings (main.c)                                                   */
/* ------------------------------------------------------------------ */

typedef struct ia_opts {
  const char *address;
  int port;
  const char *username;
  const char *password;
  const char *new_password;
  const char *old_password;
  const char *database;
  const char *tokenfile; /* resolved path */
  int mtls;
  int tls;
  const char *servername;
  const char *certificate;
  const char *pkey;
  const char *clientcas;
  int metrics_port;
  long timeout_s; /* per call; 0 = none */
  const char *output;
  const char *file;
  int force;
  int yes;
  int text;
  int raw;
  int no_progress;
  uint64_t at_tx;
  long max_key_len, max_value_len, max_tx_entries; /* -1 = not given */
} ia_opts;

/* ------------------------------------------------------------------ */
/* Connection (rpc.c)                                                  */
/* ------------------------------------------------------------------ */

typedef struct ia_conn {
  immu__grpc_client *g;
  const ia_opts *o;
  char *token;         /* owned; NULL = none */
  char user[128];      /* user the token belongs to ("" unknown) */
  char db[256];        /* database the token selects ("" none) */
  char uuid[129];      /* immudb-uuid of the server ("" not seen) */
  int status;          /* gRPC status of the last call (-1 none) */
  char err[IA_ERRLEN]; /* message of the last failure */
} ia_conn;

/* Connects to o->address:o->port (TLS per the options). Returns 0, or a
 * negative code with c->err set. */
int ia_connect(ia_conn *c, const ia_opts *o);
void ia_close(ia_conn *c);

/* Replaces the token (copied; NULL clears it). */
void ia_set_token(ia_conn *c, const char *token);

/* Unary call of ImmuService/|method|: |req| packed, the reply unpacked
 * with |rd| into *out (free with protobuf_c_message_free_unpacked; |rd|
 * NULL: the reply is dropped). Returns 0; the gRPC status mapped to an
 * IMMU_E* code (IMMU_ENOTFOUND, IMMU_EEXIST, IMMU_EINVAL, IMMU_EPERM,
 * IMMU_EAUTH, IMMU_ECONFLICT, IMMU_ECORRUPT, IMMU_EPROTO, ...) with the
 * server's message in c->err; or a transport error. */
int ia_call(ia_conn *c, const char *method, const ProtobufCMessage *req,
            const ProtobufCMessageDescriptor *rd, ProtobufCMessage **out);

/* Login{user, password}: on success the token replaces c->token, c->user
 * is set and c->db cleared; *warning (may be NULL) gets a heap copy of
 * LoginResponse.warning, or NULL when empty (free with free()). */
int ia_login(ia_conn *c, const char *user, const char *password,
             char **warning);

/* UseDatabase{name}: the returned token replaces c->token; c->db = name. */
int ia_use_database(ia_conn *c, const char *name);

/* Health: also records the immudb-uuid header in c->uuid. */
int ia_health(ia_conn *c, int *status, char *version, size_t cap);

/* exportTx{tx}: the concatenated Chunk contents (one tx frame) in *frame
 * (heap, free with free()), *len bytes. */
int ia_export_tx(ia_conn *c, uint64_t tx, uint8_t **frame, size_t *len);

/* replicateTx: |frame| cut into Chunk messages; *id (may be NULL) = the
 * committed tx id of the returned header. */
int ia_replicate_tx(ia_conn *c, const uint8_t *frame, size_t len, uint64_t *id);

/* CurrentState of the selected database: *tx_id and *alh. */
int ia_current_state(ia_conn *c, uint64_t *tx_id, immu_digest *alh);

/* CreateDatabaseV2{name} with the --max-key-len / --max-value-len /
 * --max-tx-entries settings when given. Returns 0 or an IMMU_E* code. */
int ia_create_database(ia_conn *c, const ia_opts *o, const char *name);

/* 1 if database |name| exists (DatabaseListV2), 0 if not, < 0 error. */
int ia_database_exists(ia_conn *c, const char *name);

/* ------------------------------------------------------------------ */
/* Shared CLI helpers (main.c / util.c)                                */
/* ------------------------------------------------------------------ */

/* Prints "immuadmin: <message>" to stderr. */
void ia_errorf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* ia_errorf with the connection's last error appended after ": ". */
void ia_conn_error(const ia_conn *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Exit status for a failed call: IA_EXIT_INTEGRITY for IMMU_ECORRUPT and
 * IMMU_EVERIFY, else IA_EXIT_FAIL. */
int ia_exit_for(int rc);

/* Aborting allocation (CLI only). */
void *ia_xmalloc(size_t n);
void *ia_xrealloc(void *p, size_t n);
char *ia_xstrdup(const char *s);

/* Reads a password: |given| when not NULL (an "enc:" prefix means base64,
 * as in immudb), otherwise prompts on the terminal without echo (or reads
 * a line from stdin when it is not a terminal). Returns a heap string or
 * NULL (message printed) on EOF / error. */
char *ia_read_password(const char *prompt, const char *given);
/* Reads a yes/no answer; returns 1 for y/yes. */
int ia_confirm(const char *prompt);

/* Human byte size ("1.5 MiB") into |buf|. */
void ia_bytes(uint64_t n, char *buf, size_t cap);
/* Duration in seconds as "1h2m3s". */
void ia_duration(uint64_t secs, char *buf, size_t cap);

/* A simple aligned text table. */
typedef struct ia_table {
  size_t ncols;
  size_t nrows;
  char **cells; /* nrows * ncols, row-major; row 0 is the header */
} ia_table;
void ia_table_init(ia_table *t, size_t ncols, const char *const *header);
void ia_table_row(ia_table *t, const char *const *cells);
void ia_table_print(const ia_table *t, FILE *fp);
void ia_table_free(ia_table *t);

/* Progress bar on stdout (drawn only when |enabled|). */
typedef struct ia_progress {
  int enabled;
  const char *label;
  uint64_t total;
  uint64_t done;
  double start;
  double last_draw;
} ia_progress;
void ia_progress_start(ia_progress *p, int enabled, const char *label,
                       uint64_t total);
void ia_progress_update(ia_progress *p, uint64_t done);
void ia_progress_end(ia_progress *p);
double ia_now(void);

/* ------------------------------------------------------------------ */
/* Commands                                                            */
/* ------------------------------------------------------------------ */

/* Authenticated connection for a command: --username/--password when
 * given, else the token file. Returns 0 or an exit status (message
 * printed). */
int ia_open_session(ia_conn *c, const ia_opts *o);

int ia_cmd_backup(const ia_opts *o, int argc, char **argv);
int ia_cmd_dump(const ia_opts *o, int argc, char **argv);
int ia_cmd_restore(const ia_opts *o, int argc, char **argv);
int ia_cmd_verify(const ia_opts *o, int argc, char **argv);
int ia_cmd_stats(const ia_opts *o, int argc, char **argv);

#endif
