/* SPDX-License-Identifier: Apache-2.0 */
/*
 * exportTx and replicateTx: moving whole transactions between our servers
 * (immuadmin backup/restore/dump, and replication later).
 *
 * The payload is our own tx record frame (docs/format.md, store/txrec.h),
 * not immudb's internal format: the concatenated Chunk contents of one
 * call are exactly one frame. exportTx checks the tx's CRCs and hashes
 * before sending it; replicateTx re-hashes the frame and appends it only
 * if it extends the database's chain exactly, unchanged (same id, time
 * and hashes), so a restored database proves the same states as the
 * original.
 */
#include <inttypes.h>
#include <string.h>

#include "core/mem.h"
#include "schema.pb-c.h"
#include "server/svc.h"
#include "server/svc_conv.h"
#include "store/store.h"

#define CHUNK_MAX ((size_t)64 * 1024)
#define FRAME_MAX ((size_t)256 << 20)


void immu__svc_export_tx(immu_grpc_call *call, void *arg);
void immu__svc_replicate_tx(immu_grpc_call *call, void *arg);

void immu__svc_export_tx(immu_grpc_call *call, void *arg) {
  immu_srv_ctx c;
  Immudb__Schema__ExportTxRequest *req;
  uint8_t *frame = NULL;
  size_t len = 0;
  int rc;

  if (immu_srv_begin(arg, call, IMMU_PERM_ADMIN, 1, &c) != 0)
    return;
  req = (Immudb__Schema__ExportTxRequest *)immu_srv_unpack(
      call, 0, &immudb__schema__export_tx_request__descriptor);
  if (req == NULL)
    goto out;
  if (req->tx == 0) {
    immu_srv_failf(call, IMMU_GRPC_INVALID_ARGUMENT,
                   "illegal arguments: tx must be greater than 0");
    goto out;
  }
  rc = immu_store_read_frame(immu_db_store(c.db), req->tx, &frame, &len);
  if (rc == IMMU_ENOTFOUND) {
    immu_srv_failf(call, IMMU_GRPC_UNKNOWN, "tx not found");
    goto out;
  }
  if (rc == IMMU_ECORRUPT) {
    immu_srv_failf(call, IMMU_GRPC_DATA_LOSS,
                   "tx data is corrupted: tx %" PRIu64
                   " does not match its hashes",
                   req->tx);
    goto out;
  }
  if (rc != 0) {
    immu_srv_fail(call, rc);
    goto out;
  }
  for (size_t off = 0; off < len; off += CHUNK_MAX) {
    Immudb__Schema__Chunk ch = IMMUDB__SCHEMA__CHUNK__INIT;
    ch.content.data = frame + off;
    ch.content.len = len - off < CHUNK_MAX ? len - off : CHUNK_MAX;
    if (immu_srv_send(call, &ch.base) != 0) {
      immu_srv_failf(call, IMMU_GRPC_CANCELLED, "export cancelled");
      goto out;
    }
  }
  immu_grpc_call_finish(call, IMMU_GRPC_OK, NULL);
out:
  immu__free(frame);
  if (req != NULL)
    protobuf_c_message_free_unpacked(&req->base, NULL);
  immu_srv_end(&c);
}

void immu__svc_replicate_tx(immu_grpc_call *call, void *arg) {
  immu_srv_ctx c;
  immu_svc_arena a = IMMU_SVC_ARENA_INIT;
  immu_tx_header hdr;
  uint8_t *frame = NULL;
  size_t len = 0, n = immu_grpc_call_nmsgs(call);
  int rc;

  if (immu_srv_begin(arg, call, IMMU_PERM_ADMIN, 1, &c) != 0)
    return;
  /* Pass 1: size; pass 2: copy. Each message is one Chunk. */
  for (int pass = 0; pass < 2; pass++) {
    size_t off = 0;
    for (size_t i = 0; i < n; i++) {
      Immudb__Schema__Chunk *ch = (Immudb__Schema__Chunk *)immu_srv_unpack(
          call, i, &immudb__schema__chunk__descriptor);
      if (ch == NULL)
        goto out;
      if (ch->content.len > FRAME_MAX - off) {
        protobuf_c_message_free_unpacked(&ch->base, NULL);
        immu_srv_failf(call, IMMU_GRPC_RESOURCE_EXHAUSTED,
                       "replicated tx larger than %zu bytes", FRAME_MAX);
        goto out;
      }
      if (pass == 1 && ch->content.len > 0)
        memcpy(frame + off, ch->content.data, ch->content.len);
      off += ch->content.len;
      protobuf_c_message_free_unpacked(&ch->base, NULL);
    }
    if (pass == 0) {
      len = off;
      if (len == 0) {
        immu_srv_failf(call, IMMU_GRPC_INVALID_ARGUMENT,
                       "illegal arguments: empty tx");
        goto out;
      }
      if ((frame = immu__malloc(len)) == NULL) {
        immu_srv_failf(call, IMMU_GRPC_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
      }
    }
  }
  rc = immu_store_replicate(immu_db_store(c.db), frame, len, &hdr, NULL);
  if (rc == IMMU_ECONFLICT) {
    immu_srv_failf(call, IMMU_GRPC_FAILED_PRECONDITION,
                   "the tx does not extend database %s: it must be the next "
                   "tx and link to its current state",
                   c.db_name);
  } else if (rc == IMMU_ECORRUPT) {
    immu_srv_failf(call, IMMU_GRPC_INVALID_ARGUMENT,
                   "the tx is malformed or does not match its hashes");
  } else if (rc != 0) {
    immu_srv_fail(call, rc);
  } else if (immu__svc_wait_indexed(&c, hdr.id) == 0) {
    const Immudb__Schema__TxHeader *m = immu__svc_pb_tx_header(&a, &hdr);
    if (m == NULL)
      immu_srv_failf(call, IMMU_GRPC_RESOURCE_EXHAUSTED, "out of memory");
    else
      immu_srv_reply(call, &m->base);
  }
out:
  immu__free(frame);
  immu__svc_arena_free(&a);
  immu_srv_end(&c);
}
