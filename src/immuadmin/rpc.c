/* SPDX-License-Identifier: Apache-2.0 */
/*
 * immuadmin's connection to the server (see ia.h for why it does not go
 * through the SDK): the gRPC transport of src/client/grpc_client.h, the
 * "authorization: Bearer <token>" metadata, gRPC status -> IMMU_E* codes
 * (the SDK's mapping, include/immudb/client.h), and the tx export /
 * replication calls of backup, dump, restore and verify.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/mem.h"
#include "immuadmin/ia.h"
#include "immudb/err.h"
#include "schema.pb-c.h"

#define SVC "/immudb.schema.ImmuService/"
#define CHUNK_MAX ((size_t)64 * 1024)
#define FRAME_MAX ((size_t)256 << 20)

static void set_err(ia_conn *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void set_err(ia_conn *c, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(c->err, sizeof c->err, fmt, ap);
  va_end(ap);
}

int ia_connect(ia_conn *c, const ia_opts *o) {
  immu__grpc_client_opts go;
  char err[512] = "";
  int rc;

  memset(c, 0, sizeof *c);
  c->o = o;
  c->status = -1;
  memset(&go, 0, sizeof go);
  go.host = o->address;
  go.port = o->port;
  go.connect_timeout_ms = 10000;
  go.default_timeout_ms = o->timeout_s > 0 ? (int64_t)o->timeout_s * 1000 : 0;
  go.max_recv_msg_size = FRAME_MAX + 1024;
  if (o->mtls || o->tls) {
    go.tls = 1;
    go.ca_file = o->clientcas && o->clientcas[0] ? o->clientcas : NULL;
    go.server_name = o->servername && o->servername[0] ? o->servername : NULL;
    if (o->mtls) {
      go.cert_file = o->certificate;
      go.key_file = o->pkey;
    }
  }
  rc = immu__grpc_client_connect(&go, &c->g, err, sizeof err);
  if (rc != 0) {
    if (err[0] != '\0')
      set_err(c, "%s", err);
    else
      set_err(c, "cannot connect to %s:%d: %s", o->address, o->port,
              immu_strerror(rc));
    c->g = NULL;
  }
  return rc;
}

void ia_close(ia_conn *c) {
  if (c == NULL)
    return;
  immu__grpc_client_free(c->g);
  c->g = NULL;
  free(c->token);
  c->token = NULL;
}

void ia_set_token(ia_conn *c, const char *token) {
  free(c->token);
  c->token = token != NULL ? ia_xstrdup(token) : NULL;
}

/* The SDK's mapping of gRPC statuses (include/immudb/client.h). */
static int map_status(int st, const char *msg) {
  switch (st) {
  case IMMU__GRPC_OK:
    return 0;
  case IMMU__GRPC_NOT_FOUND:
    return IMMU_ENOTFOUND;
  case IMMU__GRPC_ALREADY_EXISTS:
    return IMMU_EEXIST;
  case IMMU__GRPC_INVALID_ARGUMENT:
    return IMMU_EINVAL;
  case IMMU__GRPC_OUT_OF_RANGE:
    return IMMU_ERANGE;
  case IMMU__GRPC_PERMISSION_DENIED:
    return IMMU_EPERM;
  case IMMU__GRPC_UNAUTHENTICATED:
    return IMMU_EAUTH;
  case IMMU__GRPC_DEADLINE_EXCEEDED:
    return IMMU_ETIMEOUT;
  case IMMU__GRPC_UNAVAILABLE:
    return IMMU_ECLOSED;
  case IMMU__GRPC_RESOURCE_EXHAUSTED:
    return IMMU_ETOOLARGE;
  case IMMU__GRPC_UNIMPLEMENTED:
    return IMMU_EUNSUPPORTED;
  case IMMU__GRPC_FAILED_PRECONDITION:
  case IMMU__GRPC_ABORTED:
    return IMMU_ECONFLICT;
  case IMMU__GRPC_DATA_LOSS:
    return IMMU_ECORRUPT;
  default:
    if (msg != NULL && strstr(msg, "not found") != NULL)
      return IMMU_ENOTFOUND;
    if (msg != NULL && strstr(msg, "already exists") != NULL)
      return IMMU_EEXIST;
    return IMMU_EPROTO;
  }
}

/* Outcome of one call: the transport code |rv| and the result |res|. */
static int finish(ia_conn *c, const char *method, int rv,
                  const immu__grpc_result *res) {
  const char *u = immu__grpc_result_header(res, "immudb-uuid");
  if (u != NULL && strlen(u) < sizeof c->uuid)
    memcpy(c->uuid, u, strlen(u) + 1);
  c->status = res->status;
  if (rv == 0 && res->status == IMMU__GRPC_OK)
    return 0;
  if (rv == 0) {
    const char *m = res->message != NULL ? res->message : "";
    set_err(c, "%s", m[0] ? m : immu__grpc_code_name(res->status));
    return map_status(res->status, m);
  }
  if (rv == IMMU_ETIMEOUT)
    set_err(c, "%s: the server did not answer in time", method);
  else if (rv == IMMU_ECLOSED || rv == -ECONNRESET || rv == -EPIPE)
    set_err(c, "%s: the connection to the server was lost (%s)", method,
            res->message && res->message[0] ? res->message : immu_strerror(rv));
  else
    set_err(c, "%s: %s%s%s", method, immu_strerror(rv),
            res->message && res->message[0] ? ": " : "",
            res->message ? res->message : "");
  return rv;
}

static void call_opts(ia_conn *c, immu__grpc_call_opts *co, immu__grpc_md *md,
                      char *auth, size_t cap) {
  memset(co, 0, sizeof *co);
  if (c->token != NULL) {
    snprintf(auth, cap, "Bearer %s", c->token);
    md->key = "authorization";
    md->value = auth;
    co->md = md;
    co->nmd = 1;
  }
}

static uint8_t *pack(const ProtobufCMessage *m, size_t *len) {
  *len = protobuf_c_message_get_packed_size(m);
  uint8_t *buf = ia_xmalloc(*len ? *len : 1);
  protobuf_c_message_pack(m, buf);
  return buf;
}

int ia_call(ia_conn *c, const char *method, const ProtobufCMessage *req,
            const ProtobufCMessageDescriptor *rd, ProtobufCMessage **out) {
  char path[128], auth[512];
  immu__grpc_md md;
  immu__grpc_call_opts co;
  immu__grpc_result res;
  uint8_t *buf, *resp = NULL;
  size_t len, rlen = 0;
  int rv;

  if (out != NULL)
    *out = NULL;
  snprintf(path, sizeof path, SVC "%s", method);
  call_opts(c, &co, &md, auth, sizeof auth);
  buf = pack(req, &len);
  immu__grpc_result_init(&res);
  rv = immu__grpc_client_unary(c->g, path, &co, buf, len, &resp, &rlen, &res);
  free(buf);
  rv = finish(c, method, rv, &res);
  immu__grpc_result_free(&res);
  if (rv == 0 && rd != NULL && out != NULL) {
    *out = protobuf_c_message_unpack(rd, NULL, rlen, resp);
    if (*out == NULL) {
      set_err(c, "%s: the server's reply does not decode", method);
      rv = IMMU_EPROTO;
    }
  }
  immu__free(resp);
  return rv;
}

int ia_login(ia_conn *c, const char *user, const char *password,
             char **warning) {
  Immudb__Schema__LoginRequest req = IMMUDB__SCHEMA__LOGIN_REQUEST__INIT;
  Immudb__Schema__LoginResponse *r = NULL;
  int rc;

  if (warning != NULL)
    *warning = NULL;
  req.user.data = (uint8_t *)(uintptr_t)user;
  req.user.len = strlen(user);
  req.password.data = (uint8_t *)(uintptr_t)password;
  req.password.len = strlen(password);
  rc = ia_call(c, "Login", &req.base,
               &immudb__schema__login_response__descriptor,
               (ProtobufCMessage **)&r);
  if (rc != 0)
    return rc;
  if (r->token == NULL || r->token[0] == '\0') {
    protobuf_c_message_free_unpacked(&r->base, NULL);
    set_err(c, "Login: the server returned no token");
    return IMMU_EPROTO;
  }
  ia_set_token(c, r->token);
  snprintf(c->user, sizeof c->user, "%s", user);
  c->db[0] = '\0';
  if (warning != NULL && r->warning.len > 0) {
    *warning = ia_xmalloc(r->warning.len + 1);
    memcpy(*warning, r->warning.data, r->warning.len);
    (*warning)[r->warning.len] = '\0';
  }
  protobuf_c_message_free_unpacked(&r->base, NULL);
  return 0;
}

int ia_use_database(ia_conn *c, const char *name) {
  Immudb__Schema__Database req = IMMUDB__SCHEMA__DATABASE__INIT;
  Immudb__Schema__UseDatabaseReply *r = NULL;
  int rc;

  req.databasename = (char *)(uintptr_t)name;
  rc = ia_call(c, "UseDatabase", &req.base,
               &immudb__schema__use_database_reply__descriptor,
               (ProtobufCMessage **)&r);
  if (rc != 0)
    return rc;
  if (r->token != NULL && r->token[0] != '\0')
    ia_set_token(c, r->token);
  snprintf(c->db, sizeof c->db, "%s", name);
  protobuf_c_message_free_unpacked(&r->base, NULL);
  return 0;
}

int ia_health(ia_conn *c, int *status, char *version, size_t cap) {
  Google__Protobuf__Empty req = GOOGLE__PROTOBUF__EMPTY__INIT;
  Immudb__Schema__HealthResponse *r = NULL;
  int rc = ia_call(c, "Health", &req.base,
                   &immudb__schema__health_response__descriptor,
                   (ProtobufCMessage **)&r);
  if (rc != 0)
    return rc;
  if (status != NULL)
    *status = r->status;
  if (version != NULL && cap > 0)
    snprintf(version, cap, "%s", r->version ? r->version : "");
  protobuf_c_message_free_unpacked(&r->base, NULL);
  return 0;
}

int ia_current_state(ia_conn *c, uint64_t *tx_id, immu_digest *alh) {
  Google__Protobuf__Empty req = GOOGLE__PROTOBUF__EMPTY__INIT;
  Immudb__Schema__ImmutableState *r = NULL;
  int rc = ia_call(c, "CurrentState", &req.base,
                   &immudb__schema__immutable_state__descriptor,
                   (ProtobufCMessage **)&r);
  if (rc != 0)
    return rc;
  *tx_id = r->txid;
  if (r->txhash.len == IMMU_DIGEST_LEN) {
    memcpy(alh->b, r->txhash.data, IMMU_DIGEST_LEN);
  } else if (r->txid == 0) {
    *alh = immu_empty_digest;
  } else {
    protobuf_c_message_free_unpacked(&r->base, NULL);
    set_err(c, "CurrentState: the state hash is not 32 bytes");
    return IMMU_EPROTO;
  }
  protobuf_c_message_free_unpacked(&r->base, NULL);
  return 0;
}

int ia_database_exists(ia_conn *c, const char *name) {
  Immudb__Schema__DatabaseListRequestV2 req =
      IMMUDB__SCHEMA__DATABASE_LIST_REQUEST_V2__INIT;
  Immudb__Schema__DatabaseListResponseV2 *r = NULL;
  int rc = ia_call(c, "DatabaseListV2", &req.base,
                   &immudb__schema__database_list_response_v2__descriptor,
                   (ProtobufCMessage **)&r);
  if (rc != 0)
    return rc;
  int found = 0;
  for (size_t i = 0; i < r->n_databases; i++)
    if (r->databases[i]->name != NULL &&
        strcmp(r->databases[i]->name, name) == 0)
      found = 1;
  protobuf_c_message_free_unpacked(&r->base, NULL);
  return found;
}

/* ------------------------------------------------------------------ */
/* exportTx / replicateTx                                              */
/* ------------------------------------------------------------------ */

typedef struct export_acc {
  uint8_t *buf;
  size_t len, cap;
  int too_big;
  int bad;
} export_acc;

static int export_on_msg(void *arg, const uint8_t *msg, size_t len) {
  export_acc *a = arg;
  Immudb__Schema__Chunk *ch = immudb__schema__chunk__unpack(NULL, len, msg);
  if (ch == NULL) {
    a->bad = 1;
    return -1;
  }
  size_t n = ch->content.len;
  if (n > FRAME_MAX - a->len) {
    immudb__schema__chunk__free_unpacked(ch, NULL);
    a->too_big = 1;
    return -1;
  }
  if (a->len + n > a->cap) {
    size_t nc = a->cap ? a->cap : 4096;
    while (nc < a->len + n)
      nc *= 2;
    a->buf = ia_xrealloc(a->buf, nc);
    a->cap = nc;
  }
  if (n > 0)
    memcpy(a->buf + a->len, ch->content.data, n);
  a->len += n;
  immudb__schema__chunk__free_unpacked(ch, NULL);
  return 0;
}

int ia_export_tx(ia_conn *c, uint64_t tx, uint8_t **frame, size_t *len) {
  Immudb__Schema__ExportTxRequest req = IMMUDB__SCHEMA__EXPORT_TX_REQUEST__INIT;
  char auth[512];
  immu__grpc_md md;
  immu__grpc_call_opts co;
  immu__grpc_result res;
  export_acc a;
  uint8_t *buf;
  size_t blen;
  int rv;

  *frame = NULL;
  *len = 0;
  memset(&a, 0, sizeof a);
  req.tx = tx;
  buf = pack(&req.base, &blen);
  call_opts(c, &co, &md, auth, sizeof auth);
  immu__grpc_result_init(&res);
  rv = immu__grpc_client_server_stream(c->g, SVC "exportTx", &co, buf, blen,
                                       export_on_msg, &a, &res);
  free(buf);
  if (a.bad || a.too_big) {
    immu__grpc_result_free(&res);
    free(a.buf);
    set_err(c, "exportTx of tx %" PRIu64 ": %s", tx,
            a.bad ? "a Chunk message does not decode"
                  : "the tx is larger than 256 MiB");
    return IMMU_EPROTO;
  }
  rv = finish(c, "exportTx", rv, &res);
  immu__grpc_result_free(&res);
  if (rv != 0) {
    free(a.buf);
    return rv;
  }
  if (a.len == 0) {
    free(a.buf);
    set_err(c, "exportTx of tx %" PRIu64 ": the server sent no data", tx);
    return IMMU_EPROTO;
  }
  *frame = a.buf;
  *len = a.len;
  return 0;
}

int ia_replicate_tx(ia_conn *c, const uint8_t *frame, size_t len,
                    uint64_t *id) {
  char auth[512];
  immu__grpc_md md;
  immu__grpc_call_opts co;
  immu__grpc_result res;
  size_t nmsg = (len + CHUNK_MAX - 1) / CHUNK_MAX, i;
  immu__grpc_msg *msgs;
  uint8_t *resp = NULL;
  size_t rlen = 0;
  int rv;

  if (nmsg == 0)
    nmsg = 1;
  msgs = ia_xmalloc(nmsg * sizeof *msgs);
  for (i = 0; i < nmsg; i++) {
    Immudb__Schema__Chunk ch = IMMUDB__SCHEMA__CHUNK__INIT;
    size_t off = i * CHUNK_MAX;
    ch.content.data = (uint8_t *)(uintptr_t)(frame + off);
    ch.content.len = len - off < CHUNK_MAX ? len - off : CHUNK_MAX;
    size_t plen;
    msgs[i].ptr = pack(&ch.base, &plen);
    msgs[i].len = plen;
  }
  call_opts(c, &co, &md, auth, sizeof auth);
  immu__grpc_result_init(&res);
  rv = immu__grpc_client_client_stream(c->g, SVC "replicateTx", &co, msgs, nmsg,
                                       &resp, &rlen, &res);
  for (i = 0; i < nmsg; i++)
    free((void *)(uintptr_t)msgs[i].ptr);
  free(msgs);
  rv = finish(c, "replicateTx", rv, &res);
  immu__grpc_result_free(&res);
  if (rv == 0 && id != NULL) {
    Immudb__Schema__TxHeader *h =
        immudb__schema__tx_header__unpack(NULL, rlen, resp);
    if (h == NULL) {
      set_err(c, "replicateTx: the server's reply does not decode");
      rv = IMMU_EPROTO;
    } else {
      *id = h->id;
      immudb__schema__tx_header__free_unpacked(h, NULL);
    }
  }
  immu__free(resp);
  return rv;
}
