/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Internal contracts of the immudb server, between its three layers:
 *
 *   grpc.c   (transport) gRPC over HTTP/2 with nghttp2 on libevent: sockets,
 *            TLS/mTLS, framing, limits, deadlines, worker threads. Knows
 *            nothing about immudb: it routes a method path to a handler.
 *   svc_*.c  (service)   immudb.schema.ImmuService: decodes protobuf-c
 *            messages, authorises, calls the KV layer (include/immudb/db.h),
 *            encodes replies. auth.c holds users, tokens, sessions and the
 *            database manager.
 *   main.c   (process)   flags/env/config file, logging, metrics and health
 *            HTTP server, consistency checker, signals.
 *
 * Threading: the transport runs one libevent loop thread for all sockets and
 * a pool of worker threads; handlers run on workers and may block on disk
 * (except IMMU_GRPC_METHOD_INLINE ones, which run on the loop thread and
 * must never block). A handler may also detach its call and have it
 * finished later from any thread (immu_grpc_call_detach).
 * Every function here is thread-safe unless it says otherwise.
 */
#ifndef IMMU_SERVER_SERVER_H
#define IMMU_SERVER_SERVER_H

#include <stddef.h>
#include <stdint.h>

/* gRPC status codes (the subset we use has the standard numbers). */
enum immu_grpc_status {
  IMMU_GRPC_OK = 0,
  IMMU_GRPC_CANCELLED = 1,
  IMMU_GRPC_UNKNOWN = 2,
  IMMU_GRPC_INVALID_ARGUMENT = 3,
  IMMU_GRPC_DEADLINE_EXCEEDED = 4,
  IMMU_GRPC_NOT_FOUND = 5,
  IMMU_GRPC_ALREADY_EXISTS = 6,
  IMMU_GRPC_PERMISSION_DENIED = 7,
  IMMU_GRPC_RESOURCE_EXHAUSTED = 8,
  IMMU_GRPC_FAILED_PRECONDITION = 9,
  IMMU_GRPC_ABORTED = 10,
  IMMU_GRPC_OUT_OF_RANGE = 11,
  IMMU_GRPC_UNIMPLEMENTED = 12,
  IMMU_GRPC_INTERNAL = 13,
  IMMU_GRPC_UNAVAILABLE = 14,
  IMMU_GRPC_DATA_LOSS = 15,
  IMMU_GRPC_UNAUTHENTICATED = 16
};

/* ------------------------------------------------------------------ */
/* transport (grpc.c)                                                  */
/* ------------------------------------------------------------------ */

typedef struct immu_grpc_server immu_grpc_server;
typedef struct immu_grpc_call immu_grpc_call;

/* Runs on a worker thread once the whole request has arrived (every
 * message of a client-streaming call, or the single message of a unary or
 * server-streaming one). Before it returns it must either end the call with
 * immu_grpc_call_finish (exactly once, after any number of
 * immu_grpc_call_send) or detach it (immu_grpc_call_detach). */
typedef void (*immu_grpc_handler)(immu_grpc_call *call, void *arg);

/* The handler never blocks (no disk, no engine call, no lock held for
 * long, no send of more than ~4 MiB): it runs directly on the I/O loop
 * thread, saving two thread hand-offs per call. Health-type methods only:
 * the rule is that the I/O thread never waits on disk. */
#define IMMU_GRPC_METHOD_INLINE 1u
/* The handler first runs on the I/O loop thread, under the rules of
 * IMMU_GRPC_METHOD_INLINE (immu_grpc_call_on_loop says 1). When it finds
 * that answering would block (a disk read, a wait), it calls
 * immu_grpc_call_defer before touching the response and returns; the
 * transport then runs it again, from the start, on a worker. Reads that
 * are nearly always answered from memory (Get) skip the two thread
 * hand-offs that way. */
#define IMMU_GRPC_METHOD_TRY_INLINE 2u

typedef struct immu_grpc_method {
  const char *path; /* "/immudb.schema.ImmuService/Get" */
  immu_grpc_handler handler;
  void *arg;
  unsigned flags; /* IMMU_GRPC_METHOD_*; 0 = runs on a worker */
} immu_grpc_method;

typedef struct immu_grpc_config {
  const char *address;            /* "0.0.0.0", "127.0.0.1", "::1" */
  int port;                       /* 0 = pick a free one */
  void *ssl_ctx;                  /* SSL_CTX* or NULL for cleartext h2c */
  size_t max_recv_msg_size;       /* per message; default 4 MiB */
  size_t max_call_bytes;          /* all messages of one call; default 64 MiB */
  uint32_t max_concurrent_streams; /* per connection; default 128 */
  int max_connections;            /* default 1024 */
  int workers;                    /* default 32 * cores, at least 64 */
  int idle_timeout_s;             /* no stream and no bytes; default 300 */
  int header_timeout_s;           /* first HEADERS after accept; default 10 */
  const char *uuid;               /* value of the immudb-uuid header */
  /* Called for every finished call (metrics): method path, status,
   * seconds, peer ip. May be NULL. Runs on the loop thread. */
  void (*on_call_done)(void *arg, const char *path, int status,
                       double seconds, const char *peer_ip);
  void *on_call_done_arg;
  void (*log)(void *arg, int level, const char *msg); /* NULL = stderr */
  void *log_arg;
  /* 1: no listener of its own; it serves connections handed over by the
   * server it was added to with immu_grpc_server_add_peer. */
  int no_listen;
} immu_grpc_config;

void immu_grpc_config_init(immu_grpc_config *c);

/* Binds the listener. |methods| is copied. A path not in the table gets
 * UNIMPLEMENTED "unknown method <path>". Returns 0 or -errno / IMMU_E*;
 * *errmsg (immu__free) says what failed. */
int immu_grpc_server_new(const immu_grpc_config *cfg,
                         const immu_grpc_method *methods, size_t n,
                         immu_grpc_server **out, char **errmsg);
/* The port actually bound. */
int immu_grpc_server_port(const immu_grpc_server *s);
/* More I/O loops: |s| (which listens) hands accepted connections in turn
 * to itself and to every added peer (a server made with no_listen), each
 * with its own loop thread, so that the network work of many connections
 * spreads over cores. Before immu_grpc_server_run of any of them; every
 * peer must be stopped and run to its end before |s| is freed, and |s|
 * stopped before a peer is freed. IMMU_ENOMEM, or IMMU_EINVAL for a peer
 * that listens itself. */
int immu_grpc_server_add_peer(immu_grpc_server *s, immu_grpc_server *peer);
/* Runs the event loop until immu_grpc_server_stop; returns 0. */
int immu_grpc_server_run(immu_grpc_server *s);
/* Graceful stop, callable from any thread and from a signal handler's
 * self-pipe: stop accepting, GOAWAY, let in-flight calls finish (at most
 * |grace_s| seconds), then make run() return. */
void immu_grpc_server_stop(immu_grpc_server *s, int grace_s);
void immu_grpc_server_free(immu_grpc_server *s);

/* --- call API, from the handler's worker thread (or, for a detached
 * call, from whichever thread owns it at the time) --- */

/* Request messages (gRPC length prefix removed). Borrowed until finish. */
size_t immu_grpc_call_nmsgs(const immu_grpc_call *c);
const uint8_t *immu_grpc_call_msg(const immu_grpc_call *c, size_t i,
                                  size_t *len);
/* Request metadata by lower-case key ("authorization", "sessionid"); NULL
 * if absent. Borrowed until finish. */
const char *immu_grpc_call_metadata(const immu_grpc_call *c, const char *key);
const char *immu_grpc_call_path(const immu_grpc_call *c);
const char *immu_grpc_call_peer_ip(const immu_grpc_call *c);
int immu_grpc_call_peer_is_loopback(const immu_grpc_call *c);
/* 1 once the client reset the stream, the deadline passed or the
 * connection closed: handlers of long calls poll it. */
int immu_grpc_call_cancelled(const immu_grpc_call *c);
/* Adds a response header (before the first send). */
int immu_grpc_call_add_header(immu_grpc_call *c, const char *key,
                              const char *value);
/* Queues one response message (copied). Blocks while more than ~4 MiB are
 * queued for this call (flow control; on the loop thread it returns
 * IMMU_EBUSY instead). Returns 0, or IMMU_ECLOSED if the call is
 * cancelled. */
int immu_grpc_call_send(immu_grpc_call *c, const uint8_t *msg, size_t len);
/* As immu_grpc_call_send, but never blocks: IMMU_EBUSY (message not
 * queued) while more than ~4 MiB are queued. For detached calls completed
 * from threads that must not block (engine callbacks); a unary reply never
 * meets the limit. */
int immu_grpc_call_try_send(immu_grpc_call *c, const uint8_t *msg,
                            size_t len);
/* Ends the call with a status and message (grpc-status/grpc-message
 * trailers). Never blocks; callable from any thread. The call must not be
 * used afterwards. A second finish is an error that is logged and ignored
 * as long as the call is still alive (always the case inside the handler;
 * a finished detached call may be freed at once). */
void immu_grpc_call_finish(immu_grpc_call *c, int status, const char *msg);

/* 1 while a handler runs on the I/O loop thread (IMMU_GRPC_METHOD_INLINE
 * and _TRY_INLINE methods), when it must not block. */
int immu_grpc_call_on_loop(const immu_grpc_call *c);
/* From a _TRY_INLINE handler on the loop thread, before it adds a header,
 * sends or finishes: run the handler again on a worker once it returns.
 * The handler must then return without finishing the call. Anything else
 * (a worker, a call already answered, a second defer) logs an error and
 * does nothing. */
void immu_grpc_call_defer(immu_grpc_call *c);

/* Asynchronous completion.
 *
 * immu_grpc_call_detach, called by the handler before it returns, keeps the
 * call alive past the handler: the handler returns without finishing, and
 * whoever it handed the call to (e.g. an engine callback) ends it later
 * with immu_grpc_call_finish from any thread, after any number of
 * immu_grpc_call_try_send (or immu_grpc_call_send on a thread that may
 * block). Ownership: from detach until finish the call belongs to that
 * party, which must finish it exactly once, also when it was cancelled;
 * the transport frees it after the finish and after its stream is gone.
 * Once the handler handed the call on, it must not touch it again (the
 * owner may finish it at once, even before the handler returned).
 *
 * Cancellation while detached (client RST_STREAM, deadline, connection
 * closed, hard stop): immu_grpc_call_cancelled becomes 1 and sends return
 * IMMU_ECLOSED, but the call stays valid until it is finished; the status
 * given to that finish is then dropped (the client already has its
 * answer). A deadline answers DEADLINE_EXCEEDED by itself.
 *
 * Stopping: a graceful stop waits (up to its grace period) for detached
 * calls like for any running handler; immu_grpc_server_free waits, without
 * a limit, until every detached call has been finished, since finishing
 * touches the server. A detached call counts against its connection's
 * concurrent handlers until it is finished. Detaching twice, or a finished
 * call, logs an error and does nothing. */
void immu_grpc_call_detach(immu_grpc_call *c);
/* Queues |fn|(c, arg) to run on a worker thread, for a detached call only:
 * a callback that must be cheap and must not block (an engine commit
 * callback) hands the rest of the work (building a proof, encoding) back
 * to a worker. Never blocks. The call stays detached: |fn| finishes it, or
 * hands it on again. At most one resume may be pending per call; a second
 * one, or a resume of a call that is not detached, logs an error and is
 * ignored. */
void immu_grpc_call_resume(immu_grpc_call *c,
                           void (*fn)(immu_grpc_call *c, void *arg),
                           void *arg);

/* ------------------------------------------------------------------ */
/* service (auth.c, svc_*.c)                                           */
/* ------------------------------------------------------------------ */

typedef struct immu_server immu_server;

typedef struct immu_server_config {
  const char *dir;            /* data directory, default "./data" */
  const char *admin_password; /* default "immudb" */
  int auth;                   /* default 1 */
  int devmode;
  int maintenance;
  int synced;                 /* durability of every database, default 1 */
  const char *signing_key;    /* PEM path or NULL */
  int token_expiry_min;       /* default 1440 */
  int session_timeout_s;      /* idle expiry, default 180 */
  int max_sessions;           /* default 100 */
  size_t index_cache_bytes;   /* block cache shared by every database's
                                 index; 0 = an eighth of the RAM, clamped
                                 to [256 MiB, 4 GiB] */
  const char *listen_address; /* to refuse the default password off
                                 loopback */
  void (*log)(void *arg, int level, const char *msg);
  void *log_arg;
} immu_server_config;

void immu_server_config_init(immu_server_config *c);

/* Opens (creating on first start) the data directory: the server identity
 * file, systemdb with the users, defaultdb and every other database found.
 * Returns 0 or a negative code with *errmsg set. */
int immu_server_new(const immu_server_config *cfg, immu_server **out,
                    char **errmsg);
void immu_server_free(immu_server *s);
/* The ImmuService method table (static storage, arg = s). */
void immu_server_methods(immu_server *s, const immu_grpc_method **methods,
                         size_t *n);
/* The server identity (20-character xid string). */
const char *immu_server_uuid(const immu_server *s);

/* For metrics and the consistency checker: a snapshot of loaded databases.
 * |cb| runs for each with its name and KV handle (valid during the
 * callback only). */
struct immu_db;
void immu_server_foreach_db(immu_server *s,
                            void (*cb)(void *arg, const char *name,
                                       struct immu_db *db),
                            void *arg);
uint64_t immu_server_active_sessions(immu_server *s);
/* The index row cache's counters (immu_store_env_row_cache). */
void immu_server_row_cache(immu_server *s, uint64_t *hits, uint64_t *misses,
                           uint64_t *rows, uint64_t *bytes);

#endif
