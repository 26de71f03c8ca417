/* SPDX-License-Identifier: Apache-2.0 */
/*
 * gRPC client transport: gRPC over HTTP/2 (nghttp2 client sessions) on one
 * TCP connection, cleartext h2c with prior knowledge or TLS (ALPN "h2",
 * optional client certificate for mTLS). It moves opaque message bytes:
 * protobuf encoding is the caller's business. It is the base of the C
 * client SDK; the server side lives in src/server/grpc.c.
 *
 * Threads and locking
 *   - A handle owns one connection and one I/O thread, started by
 *     immu__grpc_client_connect. The I/O thread alone touches the socket
 *     and the TLS object; it polls the socket and a wake-up pipe.
 *   - One mutex per handle protects the nghttp2 session and every call's
 *     state. The I/O thread holds it only while nghttp2 parses input or
 *     serialises output (never across poll or a socket call); calling
 *     threads hold it to submit a request, to take replies and to give up a
 *     call. Every call function may therefore run from many threads at once
 *     on one handle: each call is an HTTP/2 stream, multiplexed.
 *   - A call blocks its calling thread until the call ends (reply complete,
 *     error, or deadline). Server-streaming callbacks run on the calling
 *     thread with no lock held, so they may block or start other calls.
 *   - A caller never waits on the socket: a deadline is honoured even when
 *     the server stops reading or answering. A call that gives up before
 *     its stream is closed is reset (RST_STREAM CANCEL) and detached; its
 *     memory is reclaimed when the stream closes or the handle is freed.
 *
 * Results: every call function returns 0 when the transport delivered a
 * complete gRPC response, whatever its gRPC status: a non-OK status (e.g.
 * NOT_FOUND from the server) is a successful transport outcome, read from
 * res->status and res->message. A negative return is a transport or local
 * failure:
 *   IMMU_EINVAL     bad argument (empty path, invalid metadata key/value)
 *   IMMU_ENOMEM     out of memory
 *   IMMU_ETIMEOUT   the call's deadline passed (res->status
 *                   DEADLINE_EXCEEDED); the stream is reset
 *   IMMU_ETOOLARGE  a response message is larger than max_recv_msg_size
 *                   (res->status RESOURCE_EXHAUSTED), or a request message
 *                   is larger than 4 GiB - 1 (the gRPC length prefix)
 *   IMMU_EPROTO     the server broke HTTP/2 or gRPC framing: malformed
 *                   frames, non-200 :status, wrong content-type, missing or
 *                   invalid grpc-status, compressed or truncated message,
 *                   wrong number of messages for a unary reply
 *   IMMU_ECLOSED    the connection cannot take new calls (closed, failed, or
 *                   draining after a GOAWAY), or the stream was refused or
 *                   reset by the server before a status arrived
 *   -errno          socket failure (-ECONNRESET when the server closed the
 *                   connection with the call in flight, -EPIPE, ...)
 *   < 0             a negative value returned by a streaming callback
 * Even on a negative return res->status and res->message describe the
 * outcome as a gRPC client would report it (UNAVAILABLE for a lost
 * connection, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, INTERNAL for protocol
 * errors, CANCELLED, ...), so callers who only care about gRPC semantics can
 * always read res->status.
 *
 * A handle whose connection failed or got a GOAWAY stays allocated but all
 * later calls return IMMU_ECLOSED (immu__grpc_client_usable says 0); the
 * caller frees it and connects again. There is no automatic reconnect.
 *
 * Limits against hostile servers: response messages are bounded by
 * max_recv_msg_size (default 64 MiB); response header blocks by 64 KiB and
 * 256 fields per call; undelivered server-streaming messages by
 * stream_pending_max (default 4 MiB) per call, flow control holding the rest
 * back; malformed frames end the connection with IMMU_EPROTO. Nothing the
 * server sends makes the library abort.
 */
#ifndef IMMU_CLIENT_GRPC_CLIENT_H
#define IMMU_CLIENT_GRPC_CLIENT_H

#include <stddef.h>
#include <stdint.h>

/* gRPC status codes used in immu__grpc_result.status. */
enum immu__grpc_code {
  IMMU__GRPC_OK = 0,
  IMMU__GRPC_CANCELLED = 1,
  IMMU__GRPC_UNKNOWN = 2,
  IMMU__GRPC_INVALID_ARGUMENT = 3,
  IMMU__GRPC_DEADLINE_EXCEEDED = 4,
  IMMU__GRPC_NOT_FOUND = 5,
  IMMU__GRPC_ALREADY_EXISTS = 6,
  IMMU__GRPC_PERMISSION_DENIED = 7,
  IMMU__GRPC_RESOURCE_EXHAUSTED = 8,
  IMMU__GRPC_FAILED_PRECONDITION = 9,
  IMMU__GRPC_ABORTED = 10,
  IMMU__GRPC_OUT_OF_RANGE = 11,
  IMMU__GRPC_UNIMPLEMENTED = 12,
  IMMU__GRPC_INTERNAL = 13,
  IMMU__GRPC_UNAVAILABLE = 14,
  IMMU__GRPC_DATA_LOSS = 15,
  IMMU__GRPC_UNAUTHENTICATED = 16
};

#define IMMU__GRPC_DEFAULT_MAX_RECV_MSG ((size_t)64 << 20)

typedef struct immu__grpc_client immu__grpc_client;

/* A shared I/O thread for many connections (epoll): a connection made
 * with opts.loop set is driven by the loop's thread instead of one of its
 * own, so one thread serves them all and wakes once for every batch of
 * replies instead of once per reply per connection. Callbacks of
 * asynchronous calls then run on the loop's thread. */
typedef struct immu__grpc_loop immu__grpc_loop;

/* Starts a loop thread. Returns 0, IMMU_ENOMEM or -errno. */
int immu__grpc_loop_new(immu__grpc_loop **out);
/* Stops and joins the thread. Every connection on the loop must have been
 * freed first. NULL allowed. */
void immu__grpc_loop_free(immu__grpc_loop *l);

/* Connection settings. Strings are borrowed for the duration of
 * immu__grpc_client_connect only. Zero-initialise, then set what you need:
 * every zero field means its default. */
typedef struct immu__grpc_client_opts {
  const char *host; /* name or IP literal; required */
  int port;         /* 1..65535; required */
  /* TLS. With tls == 0 the connection is cleartext HTTP/2 with prior
   * knowledge (h2c) and the other TLS fields are ignored. */
  int tls;
  const char *ca_file;      /* PEM bundle; NULL = the system trust store */
  const char *cert_file;    /* client certificate chain (mTLS), PEM; or NULL */
  const char *key_file;     /* its private key, PEM; required with cert_file */
  const char *server_name;  /* SNI and certificate name check; NULL = host.
                               An IP literal is checked against IP SANs. */
  int insecure_skip_verify; /* 1 = accept any server certificate (tests) */
  size_t max_recv_msg_size; /* per response message; 0 = 64 MiB */
  /* Server-streaming messages a call may hold undelivered (its callback is
   * slower than the server) before flow control holds the server back;
   * 0 = 4 MiB. Memory per streaming call stays below about this plus the
   * 1 MiB stream window plus one message. */
  size_t stream_pending_max;
  int connect_timeout_ms;     /* TCP + TLS + first SETTINGS; 0 = 10 s */
  int64_t default_timeout_ms; /* calls with timeout_ms == 0; 0 = none */
  const char *user_agent;     /* NULL = "immudb-c/<version>" */
  /* NULL = the connection gets its own I/O thread; else the loop's thread
   * drives it. The loop must outlive the connection. */
  immu__grpc_loop *loop;
} immu__grpc_client_opts;

/* One metadata entry of a request. Keys must be lower case
 * ([0-9a-z-_.]), must not start with ':' or "grpc-" and must not be one of
 * content-type, te, user-agent; values are printable ASCII (0x20..0x7e).
 * Binary metadata ("-bin" keys) must be base64-encoded by the caller. */
typedef struct immu__grpc_md {
  const char *key;
  const char *value;
} immu__grpc_md;

/* Per-call settings; NULL means all defaults. Borrowed during the call. */
typedef struct immu__grpc_call_opts {
  const immu__grpc_md *md; /* request metadata */
  size_t nmd;
  /* Deadline in milliseconds from the start of the call: sent as
   * grpc-timeout and enforced locally (IMMU_ETIMEOUT). 0 = the handle's
   * default_timeout_ms; negative = no deadline. */
  int64_t timeout_ms;
} immu__grpc_call_opts;

/* A response header or trailer (lower-case key). Owned by the result. */
typedef struct immu__grpc_hdr {
  char *key;
  char *value;
} immu__grpc_hdr;

/* The outcome of a call. Initialise with immu__grpc_result_init (or zero);
 * release with immu__grpc_result_free. A call function frees whatever the
 * result held before filling it, so one result may be reused. */
typedef struct immu__grpc_result {
  int status;    /* enum immu__grpc_code */
  char *message; /* grpc-message, percent-decoded; "" if none (NULL only
                    when memory ran out) */
  /* The first header block of the response (for a trailers-only response,
   * its only block), pseudo-headers excluded: immudb-uuid lives here. */
  immu__grpc_hdr *headers;
  size_t nheaders;
  /* The trailer block (grpc-status, grpc-message, ...); empty for a
   * trailers-only response. */
  immu__grpc_hdr *trailers;
  size_t ntrailers;
} immu__grpc_result;

void immu__grpc_result_init(immu__grpc_result *r);
/* Frees what |r| owns and re-initialises it. NULL allowed. */
void immu__grpc_result_free(immu__grpc_result *r);
/* Value of the first header, then trailer, named |key| (lower case), or
 * NULL. Borrowed from |r|. */
const char *immu__grpc_result_header(const immu__grpc_result *r,
                                     const char *key);
/* Static name of a gRPC status code ("NOT_FOUND"), "?" if unknown. */
const char *immu__grpc_code_name(int code);

/* Opens a connection to opts->host:opts->port and starts its I/O thread.
 * Returns once the server's first SETTINGS frame has arrived, so a server
 * that does not speak HTTP/2 fails here. On failure a description is
 * written to |errbuf| (capacity |errlen|; may be NULL / 0).
 * Caller owns *out: free with immu__grpc_client_free(). On failure *out is
 * NULL. Returns 0, or:
 *   IMMU_EINVAL    missing host, bad port, cert_file without key_file
 *   IMMU_ENOMEM    out of memory
 *   IMMU_ENOTFOUND the name does not resolve
 *   IMMU_ETIMEOUT  not ready within connect_timeout_ms
 *   IMMU_ECRYPTO   the TLS context could not be built (unreadable CA file,
 *                  certificate or key)
 *   IMMU_EAUTH     the server certificate did not verify (chain or name)
 *   IMMU_EPROTO    TLS handshake failure, ALPN did not select "h2", or the
 *                  server answered with something that is not HTTP/2
 *   -errno         socket failure (-ECONNREFUSED; -ECONNRESET when the
 *                  server closed the connection before its SETTINGS)
 */
int immu__grpc_client_connect(const immu__grpc_client_opts *opts,
                              immu__grpc_client **out, char *errbuf,
                              size_t errlen);

/* Stops the I/O thread, closes the connection (best-effort GOAWAY and TLS
 * close_notify) and frees the handle. NULL allowed. No call may be running
 * on |c| (calls that gave up on their own are fine). On a shared loop it
 * waits for the loop's thread to let go of |c|: never call it from that
 * thread (an asynchronous callback). */
void immu__grpc_client_free(immu__grpc_client *c);

/* 1 while the connection accepts new calls, 0 once it failed, was closed
 * or received a GOAWAY. Thread-safe. */
int immu__grpc_client_usable(immu__grpc_client *c);

/* A request message: |len| bytes at |ptr| (borrowed during the call). */
typedef struct immu__grpc_msg {
  const uint8_t *ptr;
  size_t len;
} immu__grpc_msg;

/* Receives one response message of a streaming call, on the calling
 * thread, no lock held. |msg| is valid during the callback only. Return 0
 * to continue, or a negative value to cancel the call (RST_STREAM CANCEL);
 * the call function then returns that value with res->status CANCELLED. */
typedef int (*immu__grpc_on_msg)(void *arg, const uint8_t *msg, size_t len);

/* Unary call: one request message |req| (|req_len| bytes; NULL allowed
 * when 0) to method |path| ("/immudb.schema.ImmuService/Get"). On return
 * 0 with res->status OK, *resp (caller owns, free with immu__free; never
 * NULL then, even for an empty message) holds the reply of *resp_len bytes;
 * otherwise *resp is NULL and *resp_len 0. |opts| may be NULL. Errors as
 * described at the top of this file. Thread-safe. */
int immu__grpc_client_unary(immu__grpc_client *c, const char *path,
                            const immu__grpc_call_opts *opts,
                            const uint8_t *req, size_t req_len, uint8_t **resp,
                            size_t *resp_len, immu__grpc_result *res);

/* Server-streaming call: one request, then |on_msg| for every response
 * message in order, then the status in |res|. Thread-safe. */
int immu__grpc_client_server_stream(immu__grpc_client *c, const char *path,
                                    const immu__grpc_call_opts *opts,
                                    const uint8_t *req, size_t req_len,
                                    immu__grpc_on_msg on_msg, void *arg,
                                    immu__grpc_result *res);

/* Client-streaming call: the |nreqs| messages of |reqs| (0 allowed), then
 * exactly one reply, returned as by immu__grpc_client_unary. Thread-safe. */
int immu__grpc_client_client_stream(immu__grpc_client *c, const char *path,
                                    const immu__grpc_call_opts *opts,
                                    const immu__grpc_msg *reqs, size_t nreqs,
                                    uint8_t **resp, size_t *resp_len,
                                    immu__grpc_result *res);

/* Completion of an asynchronous unary call: |rc| and |res| as the return
 * value and result of immu__grpc_client_unary; |resp| (|resp_len| bytes)
 * is the reply when rc == 0 and res->status is OK, else NULL. All three
 * are valid during the callback only. */
typedef void (*immu__grpc_done_cb)(void *arg, int rc,
                                   const immu__grpc_result *res,
                                   const uint8_t *resp, size_t resp_len);

/* Asynchronous unary call, for load generators and event-driven callers:
 * submits the request (copied) and returns at once; |cb| runs exactly
 * once, on the handle's I/O thread with no lock held, when the call ended
 * (reply, error, or the connection failing). The callback may start new
 * calls on the same handle but must not block for long (it holds up every
 * call of the connection) nor free the handle. The deadline
 * (opts->timeout_ms or the default) is sent to the server as grpc-timeout
 * but not enforced locally. Returns 0 (cb will run), or IMMU_EINVAL,
 * IMMU_ENOMEM, IMMU_ETOOLARGE, IMMU_ECLOSED (cb will not run).
 * immu__grpc_client_free drops calls still in flight without their
 * callbacks: wait for them first. Thread-safe. */
int immu__grpc_client_unary_async(immu__grpc_client *c, const char *path,
                                  const immu__grpc_call_opts *opts,
                                  const uint8_t *req, size_t req_len,
                                  immu__grpc_done_cb cb, void *arg);

/* The general form: |nreqs| request messages, every response message to
 * |on_msg| (which may be NULL to drop them). The three calls above are
 * thin wrappers around it. Thread-safe. */
int immu__grpc_client_call(immu__grpc_client *c, const char *path,
                           const immu__grpc_call_opts *opts,
                           const immu__grpc_msg *reqs, size_t nreqs,
                           immu__grpc_on_msg on_msg, void *arg,
                           immu__grpc_result *res);

#endif /* IMMU_CLIENT_GRPC_CLIENT_H */
