/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The data half of immudb.schema.ImmuService, unary calls: plain KV,
 * references, sorted sets, transactions, state and the verifiable calls
 * (immudb-api.md 1d-1h and 1l; immudb-crypto.md 7.3-7.4, 8). Each handler
 * authenticates (immu_srv_begin, with the permission of immudb-api.md 3),
 * decodes its request, calls the one KV-layer function that implements it
 * (include/immudb/db.h) and encodes the reply (svc_conv.c). The stream
 * calls live in svc_stream.c; the method table for both is at the end.
 *
 * Permissions: reads need READ; writes (and GetAll, like immudb) need
 * READWRITE; systemdb is never written from outside.
 *
 * Waiting for the index: immudb makes reads wait until the index covers
 * sinceTx (or the last committed tx) and writes wait until it covers
 * their own tx unless noWait. Set and VerifiableSet are answered once
 * committed while the index is at most IMMU_STORE_ACK_LAG txs behind (see
 * aset_committed); reads with noWait then wait for what was answered so
 * (immu_store_acked_id), so every read sees what immudb's would. The KV
 * layer would wait with the database's fixed timeout; here the wait is
 * done first, in short slices, so that it ends when the call is cancelled
 * or its deadline passes (and at most IMMU_SVC_INDEX_WAIT_MAX_MS), and
 * the KV call then runs with no_wait.
 * A worker thus never outlives its call by more than one slice.
 *
 * Verifiable replies are signed (immu_srv_sign_state) over the TARGET
 * header of their dual proof, {db, T.ID, Alh(T)}, and CurrentState over
 * {db, txId, txHash}; without a server key the signature is absent.
 *
 * Delete answers UNIMPLEMENTED: a logical delete is KV metadata
 * ("deleted"), which only header version 1 can carry, and this server
 * writes version 0 so that immudb-node 1.1.x can verify every tx (spec
 * 0). KV metadata and preconditions in requests are refused the same way
 * rather than silently ignored.
 */
#include <inttypes.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "immudb/crypto.h"
#include "immudb/db.h"
#include "schema.pb-c.h"
#include "server/server.h"
#include "server/svc.h"
#include "server/svc_conv.h"
#include "core/mem.h"
#include "store/store.h"

/* Slice of one index wait between two cancellation checks. */
#define INDEX_WAIT_SLICE_MS 50
/* Upper bound of a wait for the index inside one call. */
#define IMMU_SVC_INDEX_WAIT_MAX_MS (120L * 1000L)

#define UNPACK(call, type, name)                                               \
  ((type *)immu_srv_unpack((call), 0, &immudb__schema__##name##__descriptor))

#define FREE_REQ(req)                                                          \
  do {                                                                         \
    if ((req) != NULL)                                                         \
      protobuf_c_message_free_unpacked(&(req)->base, NULL);                    \
  } while (0)

#define PRECONDITIONS_UNSUPPORTED "preconditions are not supported"

/* ------------------------------------------------------------------ */
/* Shared helpers                                                      */
/* ------------------------------------------------------------------ */

void immu__svc_fail_oom(immu_grpc_call *call) {
  immu_srv_failf(call, IMMU_GRPC_RESOURCE_EXHAUSTED, "out of memory");
}

/* The outcome |rc| (not 0) of one index-wait slice for |tx|, on |call|:
 * returns 0 when the wait goes on (the slice timed out, the call is alive
 * and the total stays under IMMU_SVC_INDEX_WAIT_MAX_MS; *waited_ms grows
 * by a slice), else finishes the call with the status that names the
 * reason and returns the error. Shared by the blocking wait and the
 * asynchronous Set so both answer alike. */
static int index_slice_end(immu_grpc_call *call, immu_store *st, uint64_t tx,
                           int rc, long *waited_ms) {
  if (rc == IMMU_ECORRUPT) {
    immu_srv_failf(call, IMMU_GRPC_DATA_LOSS,
                   "tx data is corrupted: tx %" PRIu64
                   " does not match its hashes; the index cannot pass it",
                   immu_store_index_bad_tx(st));
    return rc;
  }
  if (rc != IMMU_ETIMEOUT) {
    immu_srv_failf(call,
                   rc == IMMU_ECLOSED ? IMMU_GRPC_UNAVAILABLE
                                      : IMMU_GRPC_INTERNAL,
                   "waiting for the index to reach tx %" PRIu64 ": %s", tx,
                   immu_strerror(rc));
    return rc;
  }
  if (immu_grpc_call_cancelled(call)) {
    immu_srv_failf(call, IMMU_GRPC_DEADLINE_EXCEEDED,
                   "cancelled while waiting for the index to reach tx "
                   "%" PRIu64,
                   tx);
    return IMMU_ETIMEOUT;
  }
  *waited_ms += INDEX_WAIT_SLICE_MS;
  if (*waited_ms >= IMMU_SVC_INDEX_WAIT_MAX_MS) {
    immu_srv_failf(call, IMMU_GRPC_DEADLINE_EXCEEDED,
                   "timed out waiting for the index to reach tx %" PRIu64,
                   tx);
    return IMMU_ETIMEOUT;
  }
  return 0;
}

int immu__svc_wait_indexed(immu_srv_ctx *c, uint64_t tx) {
  immu_store *st = immu_db_store(c->db);
  long waited = 0;

  for (;;) {
    int rc = immu_store_wait_indexed(st, tx, INDEX_WAIT_SLICE_MS);
    if (rc == 0)
      return 0;
    if ((rc = index_slice_end(c->call, st, tx, rc, &waited)) != 0)
      return rc;
  }
}

static uint64_t last_tx(immu_db *db) {
  immu_db_state st;
  immu_db_current_state(db, &st);
  return st.tx_id;
}

int immu__svc_read_wait(immu_srv_ctx *c, uint64_t since_tx, int no_wait) {
  uint64_t last;
  if (no_wait) /* what Sets were told is indexed (aset_committed) */
    return immu__svc_wait_indexed(c, immu_store_acked_id(immu_db_store(c->db)));
  last = last_tx(c->db);
  if (since_tx > last)
    return 0; /* the KV layer refuses it with immudb's words */
  return immu__svc_wait_indexed(c, since_tx ? since_tx : last);
}

int immu__svc_check_writable(immu_srv_ctx *c) {
  if (strcmp(c->db_name, "systemdb") == 0) {
    immu_srv_failf(c->call, IMMU_GRPC_PERMISSION_DENIED,
                   "permission denied: database %s is read-only", c->db_name);
    return IMMU_EPERM;
  }
  return 0;
}

int immu__svc_sign(immu_srv_ctx *c, immu_svc_arena *a, const immu_tx_header *h,
                   Immudb__Schema__Signature **out) {
  immu_digest alh;
  uint8_t *sig = immu__svc_arena_alloc(a, IMMU_SIG_MAX);
  uint8_t *pub = immu__svc_arena_alloc(a, IMMU_PUBKEY_LEN);
  size_t sig_len = 0;
  int rc;

  *out = NULL;
  if (sig == NULL || pub == NULL) {
    immu__svc_fail_oom(c->call);
    return IMMU_ENOMEM;
  }
  if ((rc = immu_tx_alh(h, &alh)) != 0) {
    immu_srv_failf(c->call, IMMU_GRPC_INTERNAL,
                   "cannot hash the header of tx %" PRIu64, h->id);
    return rc;
  }
  rc = immu_srv_sign_state(c->srv, c->db_name, h->id, &alh, sig, &sig_len, pub);
  if (rc == IMMU_ENOTFOUND)
    return 0; /* no signing key: the signature is absent */
  if (rc != 0) {
    immu_srv_failf(c->call, IMMU_GRPC_INTERNAL, "cannot sign the state: %s",
                   immu_strerror(rc));
    return rc;
  }
  *out = immu__svc_pb_signature(a, sig, sig_len, pub);
  if (*out == NULL) {
    immu__svc_fail_oom(c->call);
    return IMMU_ENOMEM;
  }
  return 0;
}

/* Packs |m| (NULL: the reply could not be built) and finishes OK. */
static void reply(immu_grpc_call *call, const void *m) {
  if (m == NULL)
    immu__svc_fail_oom(call);
  else
    immu_srv_reply(call, (const ProtobufCMessage *)m);
}

static void reply_header(immu_grpc_call *call, immu_svc_arena *a,
                         const immu_tx_header *h) {
  reply(call, immu__svc_pb_tx_header(a, h));
}

/* Signs the target of |v|'s dual proof and replies VerifiableTx. */
static void reply_vtx(immu_srv_ctx *c, immu_svc_arena *a,
                      const immu_db_verifiable_tx *v) {
  Immudb__Schema__Signature *sig;
  if (immu__svc_sign(c, a, &v->proof.target, &sig) == 0)
    reply(c->call, immu__svc_pb_vtx(a, v, sig));
}

/* Refusals of what our KV layer cannot honour (see the file comment). */
static void fail_unsupported(immu_grpc_call *call, const char *what) {
  immu_srv_failf(call, IMMU_GRPC_UNIMPLEMENTED, "%s", what);
}

/* After immu__svc_kvs / immu__svc_ops. */
static void fail_conv(immu_grpc_call *call, int rc, const char *msg) {
  if (rc == IMMU_ENOMEM)
    immu__svc_fail_oom(call);
  else if (rc == IMMU_EUNSUPPORTED)
    fail_unsupported(call, msg);
  else
    immu_srv_failf(call, IMMU_GRPC_INVALID_ARGUMENT, "%s", msg);
}

/* Begins a call needing |need| on the selected database; writes also
 * check that the database may be written. Returns 0 when the handler
 * proceeds (then immu_srv_end is due), nonzero when the call is done. */
static int begin(immu_server *s, immu_grpc_call *call, int need,
                 immu_srv_ctx *c) {
  if (immu_srv_begin(s, call, need, 1, c) != 0)
    return -1;
  if (need >= IMMU_PERM_READWRITE && immu__svc_check_writable(c) != 0) {
    immu_srv_end(c);
    return -1;
  }
  return 0;
}

/* The wait for the last committed tx that immudb does before reading the
 * index (the checks of SetReference, ZAdd, ExecAll; Count), bounded by the
 * call. */
int immu__svc_wait_last(immu_srv_ctx *c) {
  return immu__svc_wait_indexed(c, last_tx(c->db));
}

/* ------------------------------------------------------------------ */
/* Plain KV                                                            */
/* ------------------------------------------------------------------ */

/* ------------------------------------------------------------------ */
/* Set and VerifiableSet without holding a worker                      */
/* ------------------------------------------------------------------ */

/* A Set in flight. The call is detached: the handler (on the I/O loop or a
 * worker) returns at once and the engine's callbacks (commit published,
 * then, when the index lags too far, index reached) carry the call on, so
 * no thread is parked through the fsync or an index wait and one commit
 * group can hold every client's Set. A plain Set is answered right on the
 * engine thread (a tx header: a few hundred bytes, never blocks); a
 * VerifiableSet goes back to a worker to read its proof. An index wait
 * keeps the synchronous path's rules (immu__svc_wait_indexed): slices,
 * ended by cancellation or IMMU_SVC_INDEX_WAIT_MAX_MS. */
typedef struct aset {
  immu_srv_ctx c; /* holds the database until the call ends */
  immu_grpc_call *call;
  int verifiable;
  uint64_t since;
  long waited_ms;
  immu_tx_header hdr;
} aset;

static void aset_end(aset *j) {
  immu_srv_end(&j->c);
  immu__free(j);
}

static void aset_vreply(immu_grpc_call *call, void *arg) {
  aset *j = arg;
  immu_svc_arena a = IMMU_SVC_ARENA_INIT;
  immu_db_verifiable_tx v = {0};
  int rc = immu_db_verifiable_tx_for(j->c.db, &j->hdr, j->since, &v);
  if (rc != 0)
    immu_srv_fail(call, rc);
  else
    reply_vtx(&j->c, &a, &v);
  immu_db_verifiable_tx_clear(&v);
  immu__svc_arena_free(&a);
  aset_end(j);
}

static void aset_reply(aset *j) {
  if (j->verifiable) {
    immu_grpc_call_resume(j->call, aset_vreply, j);
    return;
  }
  immu_svc_arena a = IMMU_SVC_ARENA_INIT;
  reply_header(j->call, &a, &j->hdr);
  immu__svc_arena_free(&a);
  aset_end(j);
}

static void aset_wait(aset *j);

static void aset_indexed(void *arg, int rc) {
  aset *j = arg;
  if (rc == 0) {
    aset_reply(j);
  } else if (index_slice_end(j->call, immu_db_store(j->c.db), j->hdr.id, rc,
                             &j->waited_ms) == 0) {
    aset_wait(j);
  } else {
    aset_end(j);
  }
}

static void aset_wait(aset *j) {
  int rc = immu_store_on_indexed(immu_db_store(j->c.db), j->hdr.id,
                                 INDEX_WAIT_SLICE_MS, aset_indexed, j);
  if (rc == IMMU_STORE_ALREADY)
    aset_reply(j);
  else if (rc < 0) /* never IMMU_ETIMEOUT: the slice is not 0 */
    aset_indexed(j, rc == IMMU_ETIMEOUT ? IMMU_EBUSY : rc);
}

/* Runs on the engine thread that published the tx's commit group. The
 * reply goes out now, without the index wait, while the index is close
 * behind: a read waits for the last committed tx anyway (noWait reads for
 * immu_store_acked_id), so no client can tell, and the index step then
 * runs while the client already sends its next Set instead of before the
 * reply. Past IMMU_STORE_ACK_LAG the Set waits as in immudb, which holds
 * writers back to the index's pace. */
static void aset_committed(void *arg, int rc, const immu_tx_header *hdr) {
  aset *j = arg;
  if (rc != 0) {
    immu_srv_fail(j->call, rc);
    aset_end(j);
    return;
  }
  j->hdr = *hdr;
  if (j->waited_ms < 0 ||
      immu_store_ack_unindexed(immu_db_store(j->c.db), hdr->id))
    aset_reply(j); /* noWait, or the index is close behind */
  else
    aset_wait(j);
}

/* Commits |kvs| for |call| (detached from here on) and finishes it later;
 * takes over |c|. */
static void aset_start(immu_srv_ctx *c, const immu_db_kv *kvs, size_t n,
                       int nowait, int verifiable, uint64_t since) {
  immu_grpc_call *call = c->call;
  aset *j;
  int rc;
  if (verifiable && (rc = immu_db_check_prove_since(c->db, since)) != 0) {
    immu_srv_fail(call, rc);
    immu_srv_end(c);
    return;
  }
  if ((j = immu__malloc(sizeof *j)) == NULL) {
    immu__svc_fail_oom(call);
    immu_srv_end(c);
    return;
  }
  j->c = *c;
  j->call = call;
  j->verifiable = verifiable;
  j->since = since;
  j->waited_ms = nowait ? -1 : 0;
  immu_grpc_call_detach(call);
  /* The call is ours until the engine has it: a synchronous refusal is
   * answered here; after a 0 nothing below may touch |call| or |j|. */
  rc = immu_db_set_async(j->c.db, kvs, n, 1, aset_committed, j);
  if (rc != 0) {
    immu_srv_fail(call, rc);
    aset_end(j);
  }
}

/* Set and VerifiableSet are TRY_INLINE: queueing a tx for the committers
 * never waits on disk (immu_db_set_async), so on the I/O thread the whole
 * handler runs there and a Set skips the hand-off to a worker. A request
 * this large goes to a worker instead: hashing and copying its values
 * would hold up every other connection of the loop. */
#define SET_INLINE_MAX ((size_t)64 * 1024)

static int set_defer(immu_grpc_call *call) {
  size_t len = SIZE_MAX;
  if (!immu_grpc_call_on_loop(call))
    return 0;
  if (immu_grpc_call_nmsgs(call) == 1)
    (void)immu_grpc_call_msg(call, 0, &len);
  if (len > SET_INLINE_MAX) {
    immu_grpc_call_defer(call);
    return 1;
  }
  return 0;
}

static void h_set(immu_grpc_call *call, void *arg) {
  immu_srv_ctx c;
  immu_svc_arena a = IMMU_SVC_ARENA_INIT;
  Immudb__Schema__SetRequest *req;
  immu_db_kv *kvs = NULL;
  size_t n = 0;
  int rc;

  if (set_defer(call) || begin(arg, call, IMMU_PERM_READWRITE, &c) != 0)
    return;
  if ((req = UNPACK(call, Immudb__Schema__SetRequest, set_request)) == NULL) {
    immu_srv_end(&c);
  } else if (req->n_preconditions > 0) {
    fail_unsupported(call, PRECONDITIONS_UNSUPPORTED);
    immu_srv_end(&c);
  } else if ((rc = immu__svc_kvs(&a, req, &kvs, &n)) != 0) {
    fail_conv(call, rc, IMMU_SVC_MD_UNSUPPORTED);
    immu_srv_end(&c);
  } else {
    aset_start(&c, kvs, n, req->nowait, 0, 0);
  }
  FREE_REQ(req);
  immu__svc_arena_free(&a);
}

static void h_get(immu_grpc_call *call, void *arg) {
  immu_srv_ctx c;
  immu_svc_arena a = IMMU_SVC_ARENA_INIT;
  Immudb__Schema__KeyRequest *req;
  immu_db_key_req kr;
  immu_db_entry e = {0};
  int rc;

  if (begin(arg, call, IMMU_PERM_READ, &c) != 0)
    return;
  if ((req = UNPACK(call, Immudb__Schema__KeyRequest, key_request)) == NULL)
    goto out;
  immu__svc_key_req(req, &kr);
  if (immu_grpc_call_on_loop(call)) {
    /* On the I/O thread: only what memory can answer (TRY_INLINE). */
    rc = immu_db_get_cached(c.db, &kr, &e);
    if (rc == IMMU_EWOULDBLOCK) {
      immu_grpc_call_defer(call);
      goto done;
    }
  } else {
    if (kr.key_len > 0 && kr.at_tx == 0 &&
        immu__svc_read_wait(&c, kr.since_tx, kr.no_wait) != 0)
      goto done;
    kr.no_wait = 1; /* waited above */
    rc = immu_db_get(c.db, &kr, &e);
  }
  if (rc != 0)
    immu_srv_fail(call, rc);
  else
    reply(call, immu__svc_pb_entry(&a, &e, 1));
  immu_db_entry_clear(&e);
done:
  FREE_REQ(req);
out:
  immu__svc_arena_free(&a);
  immu_srv_end(&c);
}

static void h_get_all(immu_grpc_call *call, void *arg) {
  immu_srv_ctx c;
  immu_svc_arena a = IMMU_SVC_ARENA_INIT;
  Immudb__Schema__KeyListRequest *req;
  immu_db_entries l = {0};
  immu_buf *keys = NULL;
  int rc;

  /* immudb requires readwrite for GetAll (immudb-api.md 3) although it
   * only reads; the write-only checks of begin() do not apply. */
  if (immu_srv_begin(arg, call, IMMU_PERM_READWRITE, 1, &c) != 0)
    return;
  req = UNPACK(call, Immudb__Schema__KeyListRequest, key_list_request);
  if (req == NULL)
    goto out;
  if (req->n_keys > 0 &&
      (keys = immu__svc_arena_alloc(&a, req->n_keys * sizeof *keys)) == NULL) {
    immu__svc_fail_oom(call);
    goto done;
  }
  for (size_t i = 0; i < req->n_keys; i++) {
    keys[i].ptr = req->keys[i].data;
    keys[i].len = req->keys[i].len;
  }
  if (immu__svc_read_wait(&c, req->sincetx, 0) != 0)
    goto done;
  if ((rc = immu_db_get_all(c.db, keys, req->n_keys, req->sincetx, &l)) != 0)
    immu_srv_fail(call, rc);
  else
    reply(call, immu__svc_pb_entries(&a, &l));
  immu_db_entries_clear(&l);
done:
  FREE_REQ(req);
out:
  immu__svc_arena_free(&a);
  immu_srv_end(&c);
}

static void h_exec_all(immu_grpc_call *call, void *arg) {
  immu_srv_ctx c;
  immu_svc_arena a = IMMU_SVC_ARENA_INIT;
  Immudb__Schema__ExecAllRequest *req;
  immu_db_op *ops = NULL;
  immu_tx_header hdr;
  char msg[160];
  size_t n = 0;
  int rc;

  if (begin(arg, call, IMMU_PERM_READWRITE, &c) != 0)
    return;
  req = UNPACK(call, Immudb__Schema__ExecAllRequest, exec_all_request);
  if (req == NULL)
    goto out;
  if (req->n_preconditions > 0) {
    fail_unsupported(call, PRECONDITIONS_UNSUPPORTED);
  } else if ((rc = immu__svc_ops(&a, req, &ops, &n, msg, sizeof msg)) != 0) {
    fail_conv(call, rc, msg);
  } else if (immu__svc_read_wait(&c, 0, req->nowait) != 0) {
    /* the wait finished the call */
  } else if ((rc = immu_db_exec_all(c.db, ops, n, 1, &hdr)) != 0) {
    immu_srv_fail(call, rc);
  } else if (req->nowait || immu__svc_wait_indexed(&c, hdr.id) == 0) {
    reply_header(call, &a, &hdr);
  }
  FREE_REQ(req);
out:
  immu__svc_arena_free(&a);
  immu_srv_end(&c);
}

static void h_delete(immu_grpc_call *call, void *arg) {
  immu_srv_ctx c;
  if (begin(arg, call, IMMU_PERM_READWRITE, &c) != 0)
    return;
  fail_unsupported(call, "delete is not supported: " IMMU_SVC_MD_UNSUPPORTED);
  immu_srv_end(&c);
}

static void h_scan(immu_grpc_call *call, void *arg) {
  immu_srv_ctx c;
  immu_svc_arena a = IMMU_SVC_ARENA_INIT;
  Immudb__Schema__ScanRequest *req;
  immu_db_scan_req sr;
  immu_db_entries l = {0};
  int rc;

  if (begin(arg, call, IMMU_PERM_READ, &c) != 0)
    return;
  if ((req = UNPACK(call, Immudb__Schema__ScanRequest, scan_request)) == NULL)
    goto out;
  immu__svc_scan_req(req, &sr);
  if (immu__svc_read_wait(&c, sr.since_tx, sr.no_wait) != 0)
    goto done;
  sr.no_wait = 1;
  if ((rc = immu_db_scan(c.db, &sr, &l)) != 0)
    immu_srv_fail(call, rc);
  else
    reply(call, immu__svc_pb_entries(&a, &l));
  immu_db_entries_clear(&l);
done:
  FREE_REQ(req);
out:
  immu__svc_arena_free(&a);
  immu_srv_end(&c);
}

static void reply_count(immu_grpc_call *call, uint64_t n) {
  Immudb__Schema__EntryCount m = IMMUDB__SCHEMA__ENTRY_COUNT__INIT;
  m.count = n;
  immu_srv_reply(call, &m.base);
}

static void h_count(immu_grpc_call *call, void *arg) {
  immu_srv_ctx c;
  Immudb__Schema__KeyPrefix *req;
  uint64_t n = 0;
  int rc;

  if (begin(arg, call, IMMU_PERM_READ, &c) != 0)
    return;
  if ((req = UNPACK(call, Immudb__Schema__KeyPrefix, key_prefix)) == NULL)
    goto out;
  if (immu__svc_wait_last(&c) == 0) {
    if ((rc = immu_db_count(c.db, req->prefix.data, req->prefix.len, &n)) != 0)
      immu_srv_fail(call, rc);
    else
      reply_count(call, n);
  }
  FREE_REQ(req);
out:
  immu_srv_end(&c);
}

static void h_count_all(immu_grpc_call *call, void *arg) {
  immu_srv_ctx c;
  uint64_t n = 0;
  int rc;

  /* The request is google.protobuf.Empty: nothing to decode. */
  if (begin(arg, call, IMMU_PERM_READ, &c) != 0)
    return;
  if (immu__svc_wait_last(&c) == 0) {
    if ((rc = immu_db_count_all(c.db, &n)) != 0)
      immu_srv_fail(call, rc);
    else
      reply_count(call, n);
  }
  immu_srv_end(&c);
}

static void h_history(immu_grpc_call *call, void *arg) {
  immu_srv_ctx c;
  immu_svc_arena a = IMMU_SVC_ARENA_INIT;
  Immudb__Schema__HistoryRequest *req;
  immu_db_history_req hr;
  immu_db_entries l = {0};
  int rc;

  if (begin(arg, call, IMMU_PERM_READ, &c) != 0)
    return;
  req = UNPACK(call, Immudb__Schema__HistoryRequest, history_request);
  if (req == NULL)
    goto out;
  immu__svc_history_req(req, &hr);
  if (hr.key_len > 0 && immu__svc_read_wait(&c, hr.since_tx, 0) != 0)
    goto done;
  if ((rc = immu_db_history(c.db, &hr, &l)) != 0)
    immu_srv_fail(call, rc);
  else
    reply(call, immu__svc_pb_entries(&a, &l));
  immu_db_entries_clear(&l);
done:
  FREE_REQ(req);
out:
  immu__svc_arena_free(&a);
  immu_srv_end(&c);
}

/* ------------------------------------------------------------------ */
/* Transactions and state                                              */
/* ------------------------------------------------------------------ */

static void h_tx_by_id(immu_grpc_call *call, void *arg) {
  immu_srv_ctx c;
  immu_svc_arena a = IMMU_SVC_ARENA_INIT;
  Immudb__Schema__TxRequest *req;
  immu_db_tx tx = {0};
  int rc;

  if (begin(arg, call, IMMU_PERM_READ, &c) != 0)
    return;
  if ((req = UNPACK(call, Immudb__Schema__TxRequest, tx_request)) == NULL)
    goto out;
  /* The tx comes from the log: no index wait (sinceTx / noWait moot);
   * entries are always sent as digests (EntriesSpec is not honoured). */
  if ((rc = immu_db_tx_by_id(c.db, req->tx, &tx)) != 0)
    immu_srv_fail(call, rc);
  else
    reply(call, immu__svc_pb_tx(&a, &tx));
  immu_db_tx_clear(&tx);
  FREE_REQ(req);
out:
  immu__svc_arena_free(&a);
  immu_srv_end(&c);
}

static void h_tx_scan(immu_grpc_call *call, void *arg) {
  immu_srv_ctx c;
  immu_svc_arena a = IMMU_SVC_ARENA_INIT;
  Immudb__Schema__TxScanRequest *req;
  immu_db_tx_scan_req tr;
  immu_db_tx_list l = {0};
  int rc;

  if (begin(arg, call, IMMU_PERM_READ, &c) != 0)
    return;
  req = UNPACK(call, Immudb__Schema__TxScanRequest, tx_scan_request);
  if (req == NULL)
    goto out;
  memset(&tr, 0, sizeof tr);
  tr.initial_tx = req->initialtx;
  tr.limit = req->limit;
  tr.desc = req->desc != 0;
  if ((rc = immu_db_tx_scan(c.db, &tr, &l)) != 0)
    immu_srv_fail(call, rc);
  else
    reply(call, immu__svc_pb_tx_list(&a, &l));
  immu_db_tx_list_clear(&l);
  FREE_REQ(req);
out:
  immu__svc_arena_free(&a);
  immu_srv_end(&c);
}

static void h_current_state(immu_grpc_call *call, void *arg) {
  immu_srv_ctx c;
  immu_svc_arena a = IMMU_SVC_ARENA_INIT;
  Immudb__Schema__Signature *sig = NULL;
  immu_db_state st;
  uint8_t *sigb = NULL, *pub = NULL;
  size_t sig_len = 0;
  int rc;

  if (begin(arg, call, IMMU_PERM_READ, &c) != 0)
    return;
  immu_db_current_state(c.db, &st);
  sigb = immu__svc_arena_alloc(&a, IMMU_SIG_MAX);
  pub = immu__svc_arena_alloc(&a, IMMU_PUBKEY_LEN);
  if (sigb == NULL || pub == NULL) {
    immu__svc_fail_oom(call);
    goto out;
  }
  rc = immu_srv_sign_state(c.srv, c.db_name, st.tx_id, &st.tx_hash, sigb,
                           &sig_len, pub);
  if (rc == 0) {
    if ((sig = immu__svc_pb_signature(&a, sigb, sig_len, pub)) == NULL) {
      immu__svc_fail_oom(call);
      goto out;
    }
  } else if (rc != IMMU_ENOTFOUND) {
    immu_srv_failf(call, IMMU_GRPC_INTERNAL, "cannot sign the state: %s",
                   immu_strerror(rc));
    goto out;
  }
  reply(call, immu__svc_pb_state(&a, c.db_name, &st, sig));
out:
  immu__svc_arena_free(&a);
  immu_srv_end(&c);
}

/* ------------------------------------------------------------------ */
/* References and sorted sets                                          */
/* ------------------------------------------------------------------ */

static void h_set_reference(immu_grpc_call *call, void *arg) {
  immu_srv_ctx c;
  immu_svc_arena a = IMMU_SVC_ARENA_INIT;
  Immudb__Schema__ReferenceRequest *req;
  immu_db_ref_req rr;
  immu_tx_header hdr;
  int rc;

  if (begin(arg, call, IMMU_PERM_READWRITE, &c) != 0)
    return;
  req = UNPACK(call, Immudb__Schema__ReferenceRequest, reference_request);
  if (req == NULL)
    goto out;
  immu__svc_ref_req(req, &rr);
  rr.no_wait = 1; /* the handler waits, bounded by the call */
  if (req->n_preconditions > 0) {
    fail_unsupported(call, PRECONDITIONS_UNSUPPORTED);
    goto done;
  }
  if (immu__svc_wait_last(&c) != 0)
    goto done;
  if ((rc = immu_db_set_reference(c.db, &rr, &hdr)) != 0)
    immu_srv_fail(call, rc);
  else if (req->nowait || immu__svc_wait_indexed(&c, hdr.id) == 0)
    reply_header(call, &a, &hdr);
done:
  FREE_REQ(req);
out:
  immu__svc_arena_free(&a);
  immu_srv_end(&c);
}

static void h_zadd(immu_grpc_call *call, void *arg) {
  immu_srv_ctx c;
  immu_svc_arena a = IMMU_SVC_ARENA_INIT;
  Immudb__Schema__ZAddRequest *req;
  immu_db_zadd_req zr;
  immu_tx_header hdr;
  int rc;

  if (begin(arg, call, IMMU_PERM_READWRITE, &c) != 0)
    return;
  if ((req = UNPACK(call, Immudb__Schema__ZAddRequest, zadd_request)) == NULL)
    goto out;
  immu__svc_zadd_req(req, &zr);
  zr.no_wait = 1;
  if (immu__svc_wait_last(&c) != 0)
    goto done;
  if ((rc = immu_db_zadd(c.db, &zr, &hdr)) != 0)
    immu_srv_fail(call, rc);
  else if (req->nowait || immu__svc_wait_indexed(&c, hdr.id) == 0)
    reply_header(call, &a, &hdr);
done:
  FREE_REQ(req);
out:
  immu__svc_arena_free(&a);
  immu_srv_end(&c);
}

static void h_zscan(immu_grpc_call *call, void *arg) {
  immu_srv_ctx c;
  immu_svc_arena a = IMMU_SVC_ARENA_INIT;
  Immudb__Schema__ZScanRequest *req;
  immu_db_zscan_req zr;
  immu_db_zentries l = {0};
  int rc;

  if (begin(arg, call, IMMU_PERM_READ, &c) != 0)
    return;
  if ((req = UNPACK(call, Immudb__Schema__ZScanRequest, zscan_request)) == NULL)
    goto out;
  immu__svc_zscan_req(req, &zr);
  if (immu__svc_read_wait(&c, zr.since_tx, zr.no_wait) != 0)
    goto done;
  zr.no_wait = 1;
  if ((rc = immu_db_zscan(c.db, &zr, &l)) != 0)
    immu_srv_fail(call, rc);
  else
    reply(call, immu__svc_pb_zentries(&a, &l));
  immu_db_zentries_clear(&l);
done:
  FREE_REQ(req);
out:
  immu__svc_arena_free(&a);
  immu_srv_end(&c);
}

/* ------------------------------------------------------------------ */
/* Verifiable calls                                                    */
/* ------------------------------------------------------------------ */


static void h_verifiable_set(immu_grpc_call *call, void *arg) {
  immu_srv_ctx c;
  immu_svc_arena a = IMMU_SVC_ARENA_INIT;
  Immudb__Schema__VerifiableSetRequest *req;
  immu_db_kv *kvs = NULL;
  size_t n = 0;
  int rc;

  if (set_defer(call) || begin(arg, call, IMMU_PERM_READWRITE, &c) != 0)
    return;
  req = UNPACK(call, Immudb__Schema__VerifiableSetRequest,
               verifiable_set_request);
  if (req == NULL) {
    immu_srv_end(&c);
  } else if (req->setrequest == NULL) {
    immu_srv_failf(call, IMMU_GRPC_INVALID_ARGUMENT,
                   "illegal arguments: no set request");
    immu_srv_end(&c);
  } else if (req->setrequest->n_preconditions > 0) {
    fail_unsupported(call, PRECONDITIONS_UNSUPPORTED);
    immu_srv_end(&c);
  } else if ((rc = immu__svc_kvs(&a, req->setrequest, &kvs, &n)) != 0) {
    fail_conv(call, rc, IMMU_SVC_MD_UNSUPPORTED);
    immu_srv_end(&c);
  } else {
    aset_start(&c, kvs, n, req->setrequest->nowait, 1, req->provesincetx);
  }
  FREE_REQ(req);
  immu__svc_arena_free(&a);
}

static void h_verifiable_get(immu_grpc_call *call, void *arg) {
  immu_srv_ctx c;
  immu_svc_arena a = IMMU_SVC_ARENA_INIT;
  Immudb__Schema__VerifiableGetRequest *req;
  Immudb__Schema__Signature *sig;
  immu_db_verifiable_entry v;
  immu_db_key_req kr;
  int rc;

  memset(&v, 0, sizeof v);
  if (begin(arg, call, IMMU_PERM_READ, &c) != 0)
    return;
  req = UNPACK(call, Immudb__Schema__VerifiableGetRequest,
               verifiable_get_request);
  if (req == NULL)
    goto out;
  if (req->keyrequest == NULL) {
    immu_srv_failf(call, IMMU_GRPC_INVALID_ARGUMENT,
                   "illegal arguments: empty key");
    goto done;
  }
  immu__svc_key_req(req->keyrequest, &kr);
  if (kr.key_len > 0 && kr.at_tx == 0 &&
      immu__svc_read_wait(&c, kr.since_tx, kr.no_wait) != 0)
    goto done;
  kr.no_wait = 1;
  if ((rc = immu_db_verifiable_get(c.db, &kr, req->provesincetx, &v)) != 0)
    immu_srv_fail(call, rc);
  else if (immu__svc_sign(&c, &a, &v.vtx.proof.target, &sig) == 0)
    reply(call, immu__svc_pb_ventry(&a, &v, sig));
  immu_db_verifiable_entry_clear(&v);
done:
  FREE_REQ(req);
out:
  immu__svc_arena_free(&a);
  immu_srv_end(&c);
}

static void h_verifiable_tx_by_id(immu_grpc_call *call, void *arg) {
  immu_srv_ctx c;
  immu_svc_arena a = IMMU_SVC_ARENA_INIT;
  Immudb__Schema__VerifiableTxRequest *req;
  immu_db_verifiable_tx v = {0};
  int rc;

  if (begin(arg, call, IMMU_PERM_READ, &c) != 0)
    return;
  req =
      UNPACK(call, Immudb__Schema__VerifiableTxRequest, verifiable_tx_request);
  if (req == NULL)
    goto out;
  if ((rc = immu_db_verifiable_tx_by_id(c.db, req->tx, req->provesincetx,
                                        &v)) != 0)
    immu_srv_fail(call, rc);
  else
    reply_vtx(&c, &a, &v);
  immu_db_verifiable_tx_clear(&v);
  FREE_REQ(req);
out:
  immu__svc_arena_free(&a);
  immu_srv_end(&c);
}

/* The shared end of VerifiableSetReference and VerifiableZAdd: immudb's
 * wait for the last committed tx before the existence checks, the write,
 * then the wait for the index unless noWait. */
typedef int (*vwrite_fn)(immu_db *db, const void *req, uint64_t since,
                         immu_db_verifiable_tx *out);

static void verifiable_checked_write(immu_srv_ctx *c, immu_svc_arena *a,
                                     vwrite_fn write, const void *wreq,
                                     uint64_t since, int nowait) {
  immu_db_verifiable_tx v = {0};
  int rc;
  if (immu__svc_wait_last(c) != 0)
    return;
  if ((rc = write(c->db, wreq, since, &v)) != 0)
    immu_srv_fail(c->call, rc);
  else if (nowait || immu__svc_wait_indexed(c, v.tx.header.id) == 0)
    reply_vtx(c, a, &v);
  immu_db_verifiable_tx_clear(&v);
}

static int vwrite_ref(immu_db *db, const void *req, uint64_t since,
                      immu_db_verifiable_tx *out) {
  return immu_db_verifiable_set_reference(db, req, since, out);
}

static int vwrite_zadd(immu_db *db, const void *req, uint64_t since,
                       immu_db_verifiable_tx *out) {
  return immu_db_verifiable_zadd(db, req, since, out);
}

static void h_verifiable_set_reference(immu_grpc_call *call, void *arg) {
  immu_srv_ctx c;
  immu_svc_arena a = IMMU_SVC_ARENA_INIT;
  Immudb__Schema__VerifiableReferenceRequest *req;
  immu_db_ref_req rr;

  if (begin(arg, call, IMMU_PERM_READWRITE, &c) != 0)
    return;
  req = UNPACK(call, Immudb__Schema__VerifiableReferenceRequest,
               verifiable_reference_request);
  if (req == NULL)
    goto out;
  if (req->referencerequest == NULL) {
    immu_srv_failf(call, IMMU_GRPC_INVALID_ARGUMENT,
                   "illegal arguments: no reference request");
  } else if (req->referencerequest->n_preconditions > 0) {
    fail_unsupported(call, PRECONDITIONS_UNSUPPORTED);
  } else {
    immu__svc_ref_req(req->referencerequest, &rr);
    rr.no_wait = 1;
    verifiable_checked_write(&c, &a, vwrite_ref, &rr, req->provesincetx,
                             req->referencerequest->nowait);
  }
  FREE_REQ(req);
out:
  immu__svc_arena_free(&a);
  immu_srv_end(&c);
}

static void h_verifiable_zadd(immu_grpc_call *call, void *arg) {
  immu_srv_ctx c;
  immu_svc_arena a = IMMU_SVC_ARENA_INIT;
  Immudb__Schema__VerifiableZAddRequest *req;
  immu_db_zadd_req zr;

  if (begin(arg, call, IMMU_PERM_READWRITE, &c) != 0)
    return;
  req = UNPACK(call, Immudb__Schema__VerifiableZAddRequest,
               verifiable_zadd_request);
  if (req == NULL)
    goto out;
  if (req->zaddrequest == NULL) {
    immu_srv_failf(call, IMMU_GRPC_INVALID_ARGUMENT,
                   "illegal arguments: no zadd request");
  } else {
    immu__svc_zadd_req(req->zaddrequest, &zr);
    zr.no_wait = 1;
    verifiable_checked_write(&c, &a, vwrite_zadd, &zr, req->provesincetx,
                             req->zaddrequest->nowait);
  }
  FREE_REQ(req);
out:
  immu__svc_arena_free(&a);
  immu_srv_end(&c);
}

/* ------------------------------------------------------------------ */
/* Method table                                                        */
/* ------------------------------------------------------------------ */

/* svc_export.c */
void immu__svc_export_tx(immu_grpc_call *call, void *arg);
void immu__svc_replicate_tx(immu_grpc_call *call, void *arg);

const immu_svc_entry immu__svc_kv_methods[] = {
    {"Set", h_set},
    {"Get", h_get},
    {"Delete", h_delete},
    {"GetAll", h_get_all},
    {"ExecAll", h_exec_all},
    {"Scan", h_scan},
    {"Count", h_count},
    {"CountAll", h_count_all},
    {"VerifiableSet", h_verifiable_set},
    {"VerifiableGet", h_verifiable_get},
    {"VerifiableTxById", h_verifiable_tx_by_id},
    {"VerifiableSetReference", h_verifiable_set_reference},
    {"VerifiableZAdd", h_verifiable_zadd},
    {"TxById", h_tx_by_id},
    {"TxScan", h_tx_scan},
    {"History", h_history},
    {"ZAdd", h_zadd},
    {"ZScan", h_zscan},
    {"SetReference", h_set_reference},
    {"CurrentState", h_current_state},
    {"streamGet", immu__svc_stream_get},
    {"streamSet", immu__svc_stream_set},
    {"streamVerifiableGet", immu__svc_stream_verifiable_get},
    {"streamVerifiableSet", immu__svc_stream_verifiable_set},
    {"streamScan", immu__svc_stream_scan},
    {"streamZScan", immu__svc_stream_zscan},
    {"streamHistory", immu__svc_stream_history},
    {"streamExecAll", immu__svc_stream_exec_all},
    {"exportTx", immu__svc_export_tx},
    {"replicateTx", immu__svc_replicate_tx},
};

const size_t immu__svc_kv_nmethods =
    sizeof immu__svc_kv_methods / sizeof immu__svc_kv_methods[0];
