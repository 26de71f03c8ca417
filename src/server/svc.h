/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Contract between the two halves of the ImmuService implementation:
 *   auth.c + svc_admin.c  users, tokens, sessions, permissions, the database
 *                         manager, signing, and the admin/database/user/
 *                         health RPCs; also builds the full method table.
 *   svc_kv.c + svc_stream.c  the data RPCs (KV, refs, sorted sets, txs,
 *                         verifiable calls, stream* calls).
 */
#ifndef IMMU_SERVER_SVC_H
#define IMMU_SERVER_SVC_H

#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "immudb/crypto.h"
#include "immudb/db.h"
#include "server/server.h"

/* Permission values as on the wire (Permission.permission). */
enum immu_perm {
  IMMU_PERM_NONE = 0,
  IMMU_PERM_READ = 1,
  IMMU_PERM_READWRITE = 2,
  IMMU_PERM_ADMIN = 254,
  IMMU_PERM_SYSADMIN = 255
};

/* What a handler needs to know about its caller. */
typedef struct immu_srv_ctx {
  immu_server *srv;
  immu_grpc_call *call;
  char user[128];
  int sysadmin;
  char db_name[256]; /* selected database, "" if none */
  immu_db *db;       /* selected database's handle, NULL if none; held
                        (unload/delete wait) until immu_srv_end */
  int perm;          /* caller's permission on db_name */
  void *ref_;        /* private */
} immu_srv_ctx;

/* Authenticates the call (session id, then token; or the --auth=false
 * rules) and checks that the caller holds at least |need| on the selected
 * database (IMMU_PERM_NONE: only authentication; with |need_db| 0 no
 * database must be selected). On failure it finishes the call with the
 * right status (UNAUTHENTICATED, PERMISSION_DENIED, or "please select a
 * database first") and returns nonzero; the handler must then just return.
 * On success the caller must call immu_srv_end. */
int immu_srv_begin(immu_server *s, immu_grpc_call *call, int need,
                   int need_db, immu_srv_ctx *out);
void immu_srv_end(immu_srv_ctx *ctx);

/* Signs {db, tx_id, alh} (spec 8.1) when the server has a signing key.
 * Returns 0 and fills |sig| (DER, *sig_len) and |pubkey|; IMMU_ENOTFOUND
 * when there is no key (the caller then omits the signature). */
int immu_srv_sign_state(immu_server *s, const char *db, uint64_t tx_id,
                        const immu_digest *alh, uint8_t sig[IMMU_SIG_MAX],
                        size_t *sig_len, uint8_t pubkey[IMMU_PUBKEY_LEN]);

/* Finishes |call| for a failed KV-layer call: maps the IMMU_E* code (and
 * immu_db_last_error()) to a gRPC status and a message that names the
 * problem, using immudb's texts where clients match on them. */
void immu_srv_fail(immu_grpc_call *call, int rc);
/* Finishes with |status| and a printf-style message. */
void immu_srv_failf(immu_grpc_call *call, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Packs |m| and sends it, then finishes OK (unary replies). */
void immu_srv_reply(immu_grpc_call *call, const ProtobufCMessage *m);
/* Packs and sends one message of a stream; returns 0 or IMMU_ECLOSED. */
int immu_srv_send(immu_grpc_call *call, const ProtobufCMessage *m);

/* Unpacks request message |i| of |call| with |desc|; on failure finishes
 * the call with INVALID_ARGUMENT "malformed request" and returns NULL.
 * Free with protobuf_c_message_free_unpacked(m, NULL). */
ProtobufCMessage *immu_srv_unpack(immu_grpc_call *call, size_t i,
                                  const ProtobufCMessageDescriptor *desc);

/* A handler of one ImmuService method, by its bare name ("Get"). */
typedef struct immu_svc_entry {
  const char *name;
  immu_grpc_handler handler; /* arg is the immu_server* */
} immu_svc_entry;

/* The data half's table (svc_kv.c / svc_stream.c). */
extern const immu_svc_entry immu__svc_kv_methods[];
extern const size_t immu__svc_kv_nmethods;

#endif
