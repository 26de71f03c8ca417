/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A fake gRPC call: server.h's call API (immu_grpc_call_*) without the
 * transport, for tests that drive the service handlers (src/server/auth.c,
 * svc_*.c) directly: tests/server/test_svc_kv.c, tests/server/test_auth.c
 * and the fuzz target tests/fuzz/fuzz_svc_requests.c. Link fake_call.c
 * instead of grpc.c.
 *
 * A call carries request messages (each in its own allocation of exactly
 * its length, so ASan sees over-reads) and metadata in, and records the
 * final status and what was sent. fake_call_run() runs a handler the way
 * the transport does: a TRY_INLINE handler first "on the loop", again "on
 * a worker" if it defers; a detached call is waited for. Resumed functions
 * run on a thread of their own, never inside the caller.
 *
 * Every call checks the transport contract and fails (see
 * fake_call_set_fail) on: a send, a second finish or a metadata read after
 * finish; a status outside 0..16; a send of len > 0 bytes from NULL; an
 * add_header with a NULL key or value; a detach of a detached or finished
 * call; a resume of a call that is not detached; a defer outside a fresh
 * inline attempt; a handler that defers and answers; a run that ends with
 * the call unfinished; with check_msg_index, a request message read past
 * nmsgs.
 *
 * The options below are fields the test sets after fake_call_init (all
 * zero: off): what the users need differs (test_svc_kv keeps every
 * reply's bytes and bounds its waits; test_auth keeps the replies' bytes
 * too, calls from a remote peer and checks the message index; the fuzz
 * target only unpacks the replies, caps their size and cancels calls after
 * a few ms). With all of them off the peer is "127.0.0.1", on loopback.
 */
#ifndef IMMU_TESTS_FAKE_CALL_H
#define IMMU_TESTS_FAKE_CALL_H

#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "server/server.h"

/* Capacity of the metadata values (with the NUL). */
#define FAKE_CALL_META_MAX 256

struct immu_grpc_call {
  /* ---- request (set before the call runs) ---- */
  const char *path; /* not copied */
  uint8_t **msgs;   /* fake_call_add_msg / fake_call_add_pb */
  size_t *lens;
  size_t nmsgs;
  char auth[FAKE_CALL_META_MAX]; /* "authorization" metadata, "" = none */
  char sid[FAKE_CALL_META_MAX];  /* "sessionid" metadata, "" = none */
  volatile int cancelled;        /* any thread may set it: sends fail with
                                    IMMU_ECLOSED, cancelled() answers 1 */

  /* ---- options (0 = off) ---- */
  int record_sent; /* keep a copy of every sent message: sent[], sent_len[] */
  const ProtobufCMessageDescriptor *reply_desc; /* every sent message must
                                                   unpack as this */
  int keep_reply;  /* with reply_desc: keep the first reply, unpacked, in
                      reply (freed by fake_call_clear unless taken) */
  size_t send_cap; /* a send that would pass send_cap bytes in all fails
                      with IMMU_ECLOSED, as on a cancelled call */
  int64_t cancel_after_ms; /* immu_grpc_call_cancelled answers 1 once the
                              call is that old (from fake_call_run) */
  unsigned wait_timeout_s; /* fake_call_run waits at most that long for a
                              detached call to finish (0: no limit) */
  const char *peer_ip; /* immu_grpc_call_peer_ip answers it (not copied;
                          NULL: "127.0.0.1") */
  int peer_remote;     /* immu_grpc_call_peer_is_loopback answers 0 */
  int check_msg_index; /* an immu_grpc_call_msg with i >= nmsgs breaks the
                          contract (the transport answers NULL, len 0) */

  /* ---- results ---- */
  uint8_t **sent; /* with record_sent */
  size_t *sent_len;
  size_t nsent;      /* messages sent */
  size_t sent_bytes; /* their total size */
  ProtobufCMessage *reply; /* with keep_reply */
  int finished;
  int status; /* -1 until finished */
  char message[1024];
  int detached; /* detach()ed: finished later, maybe on another thread */
  int on_loop;  /* first run of a TRY_INLINE handler, as on the I/O loop */
  int deferred; /* the inline attempt asked for a run on a worker */
  int ndefers;  /* runs deferred to a worker by fake_call_run */

  /* ---- internal ---- */
  int64_t start_ms; /* CLOCK_MONOTONIC, set by fake_call_run */
  pthread_mutex_t mu; /* guards finished, status, message, detached */
  pthread_cond_t cv;  /* signalled on finish */
};

/* How a broken contract is reported: |fn| gets the printf-style message
 * (no trailing newline) and should not return (cmocka's fail(), abort()).
 * If it returns, or when none is set, the fake prints the message to
 * stderr and aborts. */
void fake_call_set_fail(void (*fn)(const char *fmt, va_list ap));

/* malloc/realloc that report "out of memory" through the failure hook
 * (size 0 allocates 1 byte). For the tests that use this fake too. */
void *fake_xmalloc(size_t n);
void *fake_xrealloc(void *p, size_t n);

/* A zeroed call for |path| (may be NULL and set later), status -1. */
void fake_call_init(immu_grpc_call *c, const char *path);
/* Frees the messages, recorded replies and kept reply; |c| must be
 * initialised again before another use. A detached call must be finished
 * first. */
void fake_call_clear(immu_grpc_call *c);
/* fake_call_init on the heap; fake_call_free clears and frees (NULL ok). */
immu_grpc_call *fake_call_new(const char *path);
void fake_call_free(immu_grpc_call *c);

/* Appends a request message: |n| bytes copied from |p|. */
void fake_call_add_msg(immu_grpc_call *c, const void *p, size_t n);
/* Appends |m| packed; NULL appends an empty message (google.protobuf.Empty). */
void fake_call_add_pb(immu_grpc_call *c, const ProtobufCMessage *m);
/* Sets the "authorization" / "sessionid" metadata (NULL or "": none). */
void fake_call_set_auth(immu_grpc_call *c, const char *value);
void fake_call_set_sid(immu_grpc_call *c, const char *value);

/* Runs handler |h| with |arg| on |c| as the transport does for a method
 * with |flags| (IMMU_GRPC_METHOD_*): a TRY_INLINE handler first runs with
 * on_loop 1 and, if it deferred, once more with on_loop 0 (ndefers counts
 * those); a detached call is then waited for (wait_timeout_s). Fails
 * unless the call ends finished. */
void fake_call_run(immu_grpc_call *c, immu_grpc_handler h, void *arg,
                   unsigned flags);

#endif /* IMMU_TESTS_FAKE_CALL_H */
