/* SPDX-License-Identifier: Apache-2.0 */
/*
 * gRPC client transport (see grpc_client.h for the contract).
 *
 * Structure
 *   - connect: resolve, non-blocking TCP connect, optional TLS handshake
 *     (memory BIOs: all socket I/O is ours, with MSG_NOSIGNAL, so a closed
 *     peer never raises SIGPIPE), nghttp2 client session, I/O thread, then
 *     wait for the server's first SETTINGS.
 *   - I/O thread: drains the wake-up pipe, serialises frames with
 *     nghttp2_session_mem_send (lock held) into an output buffer (bounded:
 *     no more frames are produced while OUT_MAX bytes wait for the socket),
 *     encrypts them (TLS), sends what the socket takes, polls, reads, and
 *     feeds the bytes to nghttp2_session_mem_recv (lock held). On any
 *     connection failure it marks the handle dead, fails every unfinished
 *     call with the cause and exits.
 *   - a call: heap object linked in the handle's list, passed to nghttp2 as
 *     stream user data and data source. The calling thread submits the
 *     request, waits on the call's condition variable, takes replies, and
 *     finally detaches: if the stream is still open it is reset and the call
 *     is left "abandoned" for on_stream_close (or immu__grpc_client_free) to
 *     free; the borrowed request buffers are forgotten first, so nghttp2
 *     never reads them after the caller returned.
 *   - shared loop (opts.loop): the same turn (produce, write, read, run the
 *     asynchronous callbacks) driven by one epoll thread for many
 *     connections. Wake-ups become "dirty" marks on the loop (an eventfd
 *     write only from other threads, and only for the first mark since the
 *     loop last drained it). A connection leaves the loop when it dies or
 *     is freed; free waits until the loop thread no longer holds it (not
 *     busy with it, not queued in the dirty list) under the loop's mutex.
 *     Lock order: a connection's mu, then the loop's mu.
 *   - flow control: automatic WINDOW_UPDATE is off. DATA is consumed at
 *     once, except for a server-streaming call with more than
 *     stream_pending_max bytes of messages its caller has not taken yet:
 *     those bytes are withheld (the server's window closes) until the
 *     caller drains below a quarter of that.
 */
#include "client/grpc_client.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <nghttp2/nghttp2.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "core/mem.h"
#include "immudb/err.h"

#ifndef IMMU_CLIENT_VERSION
#define IMMU_CLIENT_VERSION "0.1.0"
#endif

/* Stop producing frames while this many bytes wait for the socket. */
#define OUT_MAX ((size_t)256 << 10)
/* Socket read size. */
#define RBUF_SIZE ((size_t)64 << 10)
/* Reads per I/O loop turn, so output (WINDOW_UPDATE, ACKs) keeps flowing. */
#define READS_PER_TURN 8
/* Undelivered streaming messages per call: the window is withheld above
 * c->q_high (opts.stream_pending_max) and released below a quarter of it. */
#define Q_HIGH_DEFAULT ((size_t)4 << 20)
/* Response header limits per call (all blocks together). */
#define HDR_BYTES_MAX ((size_t)64 << 10)
#define HDR_COUNT_MAX 256u
#define STREAM_WINDOW ((int32_t)1 << 20)
#define CONN_WINDOW ((int32_t)16 << 20)
#define CONNECT_TIMEOUT_MS 10000
#define GOODBYE_MAX ((size_t)64 << 10)

/* ------------------------------------------------------------------ */
/* small helpers                                                       */
/* ------------------------------------------------------------------ */

typedef struct bytes {
  uint8_t *p;
  size_t len; /* bytes stored */
  size_t off; /* bytes already consumed from the front */
  size_t cap;
} bytes;

static int bytes_append(bytes *b, const uint8_t *data, size_t n) {
  if (n == 0)
    return 0;
  if (b->off > 0 && b->off == b->len) {
    b->off = 0;
    b->len = 0;
  }
  if (b->len + n > b->cap) {
    if (b->off > 0) {
      memmove(b->p, b->p + b->off, b->len - b->off);
      b->len -= b->off;
      b->off = 0;
    }
    if (b->len + n > b->cap) {
      size_t ncap = b->cap ? b->cap : 16384;
      while (ncap < b->len + n)
        ncap *= 2;
      uint8_t *np = immu__realloc(b->p, ncap);
      if (np == NULL)
        return IMMU_ENOMEM;
      b->p = np;
      b->cap = ncap;
    }
  }
  memcpy(b->p + b->len, data, n);
  b->len += n;
  return 0;
}

static size_t bytes_pending(const bytes *b) {
  return b->len - b->off;
}

static void bytes_free(bytes *b) {
  immu__free(b->p);
  memset(b, 0, sizeof *b);
}

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static struct timespec abs_ms(int64_t ms) {
  struct timespec ts;
  ts.tv_sec = (time_t)(ms / 1000);
  ts.tv_nsec = (long)(ms % 1000) * 1000000L;
  return ts;
}

static int cond_init_mono(pthread_cond_t *cv) {
  pthread_condattr_t a;
  int rc = pthread_condattr_init(&a);
  if (rc != 0)
    return -rc;
  rc = pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
  if (rc == 0)
    rc = pthread_cond_init(cv, &a);
  pthread_condattr_destroy(&a);
  return -rc;
}

static void errf(char *buf, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void errf(char *buf, size_t len, const char *fmt, ...) {
  if (buf == NULL || len == 0)
    return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, len, fmt, ap);
  va_end(ap);
}

static char *dupstr(const char *s) {
  return immu__strndup(s, strlen(s));
}

static char *dupf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *dupf(const char *fmt, ...) {
  char tmp[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(tmp, sizeof tmp, fmt, ap);
  va_end(ap);
  return dupstr(tmp);
}

const char *immu__grpc_code_name(int code) {
  static const char *const names[] = {"OK",
                                      "CANCELLED",
                                      "UNKNOWN",
                                      "INVALID_ARGUMENT",
                                      "DEADLINE_EXCEEDED",
                                      "NOT_FOUND",
                                      "ALREADY_EXISTS",
                                      "PERMISSION_DENIED",
                                      "RESOURCE_EXHAUSTED",
                                      "FAILED_PRECONDITION",
                                      "ABORTED",
                                      "OUT_OF_RANGE",
                                      "UNIMPLEMENTED",
                                      "INTERNAL",
                                      "UNAVAILABLE",
                                      "DATA_LOSS",
                                      "UNAUTHENTICATED"};
  if (code < 0 || code > 16)
    return "?";
  return names[code];
}

/* ------------------------------------------------------------------ */
/* results                                                             */
/* ------------------------------------------------------------------ */

static void hdrs_free(immu__grpc_hdr *h, size_t n) {
  for (size_t i = 0; i < n; i++) {
    immu__free(h[i].key);
    immu__free(h[i].value);
  }
  immu__free(h);
}

void immu__grpc_result_init(immu__grpc_result *r) {
  if (r != NULL)
    memset(r, 0, sizeof *r);
}

void immu__grpc_result_free(immu__grpc_result *r) {
  if (r == NULL)
    return;
  immu__free(r->message);
  hdrs_free(r->headers, r->nheaders);
  hdrs_free(r->trailers, r->ntrailers);
  memset(r, 0, sizeof *r);
}

const char *immu__grpc_result_header(const immu__grpc_result *r,
                                     const char *key) {
  if (r == NULL || key == NULL)
    return NULL;
  for (size_t i = 0; i < r->nheaders; i++)
    if (strcmp(r->headers[i].key, key) == 0)
      return r->headers[i].value;
  for (size_t i = 0; i < r->ntrailers; i++)
    if (strcmp(r->trailers[i].key, key) == 0)
      return r->trailers[i].value;
  return NULL;
}

/* ------------------------------------------------------------------ */
/* types                                                               */
/* ------------------------------------------------------------------ */

typedef struct rmsg {
  struct rmsg *next;
  size_t len;
  uint8_t *data;
} rmsg;

typedef struct hdr_list {
  immu__grpc_hdr *v;
  size_t n, cap;
} hdr_list;

typedef struct call {
  struct call *prev, *next; /* in the handle's list */
  pthread_cond_t cv;
  int32_t stream_id;
  int stream_mode; /* 1: messages go to the caller one by one (flow
                      controlled); 0: unary reply, at most one message */
  /* request (borrowed from the caller; NULL once detached) */
  const immu__grpc_msg *reqs;
  size_t nreqs;
  size_t send_idx;   /* message being sent */
  size_t send_off;   /* bytes of prefix + message sent */
  uint8_t prefix[5]; /* length prefix of reqs[send_idx] */
  int eof_produced;  /* the data provider has returned EOF */
  /* response assembly */
  uint8_t mhdr[5];
  size_t mhdr_got;
  int in_body;
  uint8_t *body;
  size_t body_len, body_got;
  rmsg *qhead, *qtail;
  size_t queued_bytes;
  size_t nmsgs;    /* messages received in total */
  size_t withheld; /* DATA bytes not consumed yet (flow control) */
  /* response headers */
  int http_status;
  int ct_ok;
  int have_gstatus;
  int gstatus;
  char *gmessage;
  size_t hdr_bytes, hdr_count;
  hdr_list headers, trailers;
  /* state */
  int remote_end;    /* END_STREAM received */
  int stream_closed; /* on_stream_close ran */
  int rst_sent;
  int proto_err; /* nghttp2 found this stream's frames invalid */
  int done;
  int err;
  int fin_status;
  char *fin_msg;
  int abandoned;
  /* asynchronous unary call (immu__grpc_client_unary_async) */
  immu__grpc_done_cb async_cb;
  void *async_arg;
  struct immu__grpc_client *cl;
  struct call *aq_next; /* in cl->async_q once done */
  immu__grpc_msg own_req;
  uint8_t *own_buf;
} call;

struct immu__grpc_client {
  pthread_mutex_t mu;
  pthread_cond_t cv; /* readiness (first SETTINGS) and death */
  nghttp2_session *h2;
  int fd;
  int wake_rd, wake_wr;
  int wake_pending;
  int tls;
  SSL_CTX *ssl_ctx;
  SSL *ssl;
  BIO *rbio, *wbio; /* owned by ssl */
  pthread_t io;
  int io_started;
  int stopping;
  int dead;
  int dead_err;
  int goaway_recv;
  int sent_error_goaway;
  int got_settings;
  call *calls;
  call *async_q, **async_tail; /* finished async calls, callback due */
  size_t max_recv;
  size_t q_high;
  int64_t default_timeout_ms;
  char *authority;
  char *user_agent;
  /* Shared loop (NULL: own I/O thread). dirty_next and in_dirty are under
   * loop->mu; io_done is written by the loop thread under loop->mu. */
  immu__grpc_loop *loop;
  immu__grpc_client *dirty_next;
  int in_dirty;
  int io_done;    /* the loop dropped the connection (dead or stopped) */
  int ep_out;     /* EPOLLOUT requested (loop thread only) */
  int io_started_turns; /* first turn done (loop thread only) */
  /* I/O thread only (and free() after the join) */
  bytes out;   /* bytes for the socket */
  bytes plain; /* TLS: frames to encrypt */
  uint8_t *rbuf;
  uint8_t *pbuf;
};

/* ------------------------------------------------------------------ */
/* call state changes (lock held)                                      */
/* ------------------------------------------------------------------ */

struct immu__grpc_loop {
  int ep;  /* epoll */
  int efd; /* eventfd: marks from other threads, and quit */
  pthread_t th;
  int th_started;
  pthread_mutex_t mu;
  pthread_cond_t cv; /* busy / in_dirty / io_done changes, for free */
  immu__grpc_client *dirty, **dirty_tail;
  immu__grpc_client *busy; /* the connection the thread is working on */
  int woken;               /* efd written and not drained yet */
  int waiters;             /* frees waiting on cv */
  int quit;
};

/* The loop whose thread is the calling thread, if any. */
static __thread immu__grpc_loop *tl_loop;

/* Wakes the loop's thread out of epoll_wait. */
static void loop_poke(immu__grpc_loop *l) {
  uint64_t one = 1;
  ssize_t n;
  do {
    n = write(l->efd, &one, sizeof one);
  } while (n < 0 && errno == EINTR);
}

/* Queues |c| for a turn on its loop. Lock order: c->mu (if the caller
 * holds it), then l->mu. */
static void loop_mark(immu__grpc_loop *l, immu__grpc_client *c) {
  int poke = 0;
  pthread_mutex_lock(&l->mu);
  if (!c->in_dirty && !c->io_done) {
    c->in_dirty = 1;
    c->dirty_next = NULL;
    *l->dirty_tail = c;
    l->dirty_tail = &c->dirty_next;
    /* The loop thread runs the dirty list before it waits again. */
    if (tl_loop != l && !l->woken) {
      l->woken = 1;
      poke = 1;
    }
  }
  pthread_mutex_unlock(&l->mu);
  if (poke)
    loop_poke(l);
}

static void wake_io(immu__grpc_client *c) {
  if (c->wake_pending || c->dead)
    return;
  c->wake_pending = 1;
  if (c->loop != NULL) {
    loop_mark(c->loop, c);
    return;
  }
  ssize_t n;
  do {
    n = write(c->wake_wr, "w", 1);
  } while (n < 0 && errno == EINTR);
}

/* After a caller submitted frames (lock held): on a cleartext connection
 * the caller serialises and sends them itself, so a call costs no wake-up
 * of the I/O thread (a pipe write and a context switch each way); the I/O
 * thread only reads. Whatever the socket does not take, and all TLS
 * output (the SSL object is the I/O thread's), goes through wake_io. */
static int produce(immu__grpc_client *c);
static int flush_out(immu__grpc_client *c);

static void send_inline(immu__grpc_client *c) {
  if (c->tls || c->dead || c->stopping || bytes_pending(&c->out) > 0) {
    wake_io(c);
    return;
  }
  int rv = produce(c);
  if (rv == 0)
    rv = flush_out(c);
  /* Leftovers (socket full, OUT_MAX reached) or an error: the I/O thread
   * polls for POLLOUT and reports failures. */
  if (rv != 0 || bytes_pending(&c->out) > 0)
    wake_io(c);
}

static void call_finish(call *k, int err, int status, char *msg) {
  if (k->done) {
    immu__free(msg);
    return;
  }
  k->done = 1;
  k->err = err;
  k->fin_status = status;
  immu__free(k->fin_msg);
  k->fin_msg = msg;
  if (k->async_cb != NULL) {
    /* The I/O thread runs the callback once it released the lock. */
    immu__grpc_client *c = k->cl;
    k->aq_next = NULL;
    if (c->async_q == NULL)
      c->async_tail = &c->async_q;
    *c->async_tail = k;
    c->async_tail = &k->aq_next;
    return;
  }
  pthread_cond_broadcast(&k->cv);
}

static void call_rst(immu__grpc_client *c, call *k, uint32_t code) {
  if (k->stream_closed || k->rst_sent || c->dead || k->stream_id <= 0)
    return;
  if (nghttp2_submit_rst_stream(c->h2, NGHTTP2_FLAG_NONE, k->stream_id, code) ==
      0)
    k->rst_sent = 1;
  wake_io(c);
}

/* Fails the call from the I/O side and resets its stream. */
static void call_fail(immu__grpc_client *c, call *k, int err, int status,
                      char *msg) {
  if (k->done) {
    immu__free(msg);
    return;
  }
  call_finish(k, err, status, msg);
  call_rst(c, k, NGHTTP2_CANCEL);
}

static void consume(immu__grpc_client *c, call *k, size_t n) {
  if (n == 0 || c->dead)
    return;
  /* Connection-level credit is returned even if the stream is gone. */
  nghttp2_session_consume(c->h2, k->stream_id, n);
  wake_io(c);
}

static void call_release_withheld(immu__grpc_client *c, call *k) {
  size_t n = k->withheld;
  k->withheld = 0;
  consume(c, k, n);
}

static void call_drop_queue(call *k) {
  rmsg *m = k->qhead;
  while (m != NULL) {
    rmsg *nx = m->next;
    immu__free(m->data);
    immu__free(m);
    m = nx;
  }
  k->qhead = k->qtail = NULL;
  k->queued_bytes = 0;
}

static void call_free(call *k) {
  if (k == NULL)
    return;
  call_drop_queue(k);
  immu__free(k->body);
  immu__free(k->gmessage);
  immu__free(k->fin_msg);
  hdrs_free(k->headers.v, k->headers.n);
  hdrs_free(k->trailers.v, k->trailers.n);
  immu__free(k->own_buf);
  pthread_cond_destroy(&k->cv);
  immu__free(k);
}

static void call_unlink(immu__grpc_client *c, call *k) {
  if (k->prev != NULL)
    k->prev->next = k->next;
  else if (c->calls == k)
    c->calls = k->next;
  if (k->next != NULL)
    k->next->prev = k->prev;
  k->prev = k->next = NULL;
}

/* Marks the connection dead and fails every unfinished call. */
static void conn_fail(immu__grpc_client *c, int err, const char *why) {
  if (c->dead)
    return;
  c->dead = 1;
  c->dead_err = err;
  int status =
      err == IMMU_EPROTO ? IMMU__GRPC_INTERNAL : IMMU__GRPC_UNAVAILABLE;
  for (call *k = c->calls; k != NULL; k = k->next)
    if (!k->done)
      call_finish(k, err, status, dupf("connection error: %s", why));
  pthread_cond_broadcast(&c->cv);
}

/* ------------------------------------------------------------------ */
/* gRPC response parsing                                               */
/* ------------------------------------------------------------------ */

static int http_to_grpc(int http) {
  switch (http) {
  case 400:
    return IMMU__GRPC_INTERNAL;
  case 401:
    return IMMU__GRPC_UNAUTHENTICATED;
  case 403:
    return IMMU__GRPC_PERMISSION_DENIED;
  case 404:
    return IMMU__GRPC_UNIMPLEMENTED;
  case 429:
  case 502:
  case 503:
  case 504:
    return IMMU__GRPC_UNAVAILABLE;
  default:
    return IMMU__GRPC_UNKNOWN;
  }
}

static int hexval(int ch) {
  if (ch >= '0' && ch <= '9')
    return ch - '0';
  if (ch >= 'a' && ch <= 'f')
    return ch - 'a' + 10;
  if (ch >= 'A' && ch <= 'F')
    return ch - 'A' + 10;
  return -1;
}

/* grpc-message is percent-encoded; invalid escapes pass through as is. */
static char *percent_decode(const uint8_t *v, size_t n) {
  char *out = immu__malloc(n + 1);
  if (out == NULL)
    return NULL;
  size_t o = 0;
  for (size_t i = 0; i < n; i++) {
    int hi, lo;
    if (v[i] == '%' && i + 2 < n && (hi = hexval(v[i + 1])) >= 0 &&
        (lo = hexval(v[i + 2])) >= 0) {
      out[o++] = (char)(hi * 16 + lo);
      i += 2;
    } else {
      out[o++] = (char)v[i];
    }
  }
  out[o] = '\0';
  return out;
}

/* grpc-status: 1..3 ASCII digits. Returns the code (unknown codes ->
 * UNKNOWN) or -1 if malformed. */
static int parse_gstatus(const uint8_t *v, size_t n) {
  if (n == 0 || n > 3)
    return -1;
  int x = 0;
  for (size_t i = 0; i < n; i++) {
    if (v[i] < '0' || v[i] > '9')
      return -1;
    x = x * 10 + (v[i] - '0');
  }
  return x > 16 ? IMMU__GRPC_UNKNOWN : x;
}

static int hdr_push(hdr_list *l, const uint8_t *name, size_t nlen,
                    const uint8_t *value, size_t vlen) {
  if (l->n == l->cap) {
    size_t ncap = l->cap ? l->cap * 2 : 8;
    immu__grpc_hdr *nv = immu__realloc(l->v, ncap * sizeof *nv);
    if (nv == NULL)
      return IMMU_ENOMEM;
    l->v = nv;
    l->cap = ncap;
  }
  char *k = immu__strndup((const char *)name, nlen);
  char *v = immu__strndup((const char *)value, vlen);
  if (k == NULL || v == NULL) {
    immu__free(k);
    immu__free(v);
    return IMMU_ENOMEM;
  }
  l->v[l->n].key = k;
  l->v[l->n].value = v;
  l->n++;
  return 0;
}

/* A complete response message: queue it for the caller. */
static void msg_complete(immu__grpc_client *c, call *k) {
  if (!k->stream_mode && k->nmsgs >= 1) {
    call_fail(c, k, IMMU_EPROTO, IMMU__GRPC_INTERNAL,
              dupstr("more than one response message for a unary call"));
    return;
  }
  rmsg *m = immu__malloc(sizeof *m);
  if (m == NULL) {
    call_fail(c, k, IMMU_ENOMEM, IMMU__GRPC_RESOURCE_EXHAUSTED, NULL);
    return;
  }
  m->next = NULL;
  m->len = k->body_len;
  m->data = k->body;
  k->body = NULL;
  k->in_body = 0;
  k->body_len = k->body_got = 0;
  if (k->qtail != NULL)
    k->qtail->next = m;
  else
    k->qhead = m;
  k->qtail = m;
  k->queued_bytes += m->len;
  k->nmsgs++;
  if (k->stream_mode)
    pthread_cond_broadcast(&k->cv);
}

/* Splits DATA into length-prefixed messages (gRPC over HTTP/2, "Length-
 * Prefixed-Message": 1 byte compressed flag, 4 bytes big-endian length). */
static void msg_feed(immu__grpc_client *c, call *k, const uint8_t *p,
                     size_t n) {
  while (n > 0 && !k->done) {
    if (!k->in_body) {
      size_t take = 5 - k->mhdr_got;
      if (take > n)
        take = n;
      memcpy(k->mhdr + k->mhdr_got, p, take);
      k->mhdr_got += take;
      p += take;
      n -= take;
      if (k->mhdr_got < 5)
        return;
      k->mhdr_got = 0;
      uint32_t mlen = (uint32_t)k->mhdr[1] << 24 | (uint32_t)k->mhdr[2] << 16 |
                      (uint32_t)k->mhdr[3] << 8 | (uint32_t)k->mhdr[4];
      if (k->mhdr[0] != 0) {
        call_fail(c, k, IMMU_EPROTO, IMMU__GRPC_INTERNAL,
                  k->mhdr[0] == 1
                      ? dupstr("compressed response message, but no "
                               "compression was negotiated")
                      : dupf("invalid message flag 0x%02x", k->mhdr[0]));
        return;
      }
      if ((size_t)mlen > c->max_recv) {
        call_fail(c, k, IMMU_ETOOLARGE, IMMU__GRPC_RESOURCE_EXHAUSTED,
                  dupf("received message larger than max (%lu vs. %lu)",
                       (unsigned long)mlen, (unsigned long)c->max_recv));
        return;
      }
      k->body = immu__malloc(mlen);
      if (k->body == NULL) {
        call_fail(c, k, IMMU_ENOMEM, IMMU__GRPC_RESOURCE_EXHAUSTED, NULL);
        return;
      }
      k->in_body = 1;
      k->body_len = mlen;
      k->body_got = 0;
    }
    size_t take = k->body_len - k->body_got;
    if (take > n)
      take = n;
    if (take > 0) {
      memcpy(k->body + k->body_got, p, take);
      k->body_got += take;
      p += take;
      n -= take;
    }
    if (k->body_got == k->body_len)
      msg_complete(c, k);
  }
}

/* END_STREAM from the server: validate and finish the call. */
static void call_remote_end(immu__grpc_client *c, call *k) {
  k->remote_end = 1;
  if (k->done)
    return;
  if (k->http_status != 200) {
    call_fail(c, k, IMMU_EPROTO, http_to_grpc(k->http_status),
              dupf("unexpected HTTP status code %d", k->http_status));
  } else if (!k->ct_ok) {
    call_fail(c, k, IMMU_EPROTO, IMMU__GRPC_INTERNAL,
              dupstr("missing or unexpected content-type"));
  } else if (!k->have_gstatus) {
    call_fail(c, k, IMMU_EPROTO, IMMU__GRPC_INTERNAL,
              dupstr("server closed the stream without a grpc-status"));
  } else if (k->mhdr_got > 0 || k->in_body) {
    call_fail(c, k, IMMU_EPROTO, IMMU__GRPC_INTERNAL,
              dupstr("stream ended inside a message"));
  } else if (!k->stream_mode && k->gstatus == IMMU__GRPC_OK && k->nmsgs != 1) {
    call_fail(
        c, k, IMMU_EPROTO, IMMU__GRPC_INTERNAL,
        dupf("unary call got %lu response messages", (unsigned long)k->nmsgs));
  } else {
    char *msg = k->gmessage;
    k->gmessage = NULL;
    call_finish(k, 0, k->gstatus, msg);
    /* Our side still sending (early reply): stop it. */
    if (!k->eof_produced)
      call_rst(c, k, NGHTTP2_CANCEL);
  }
}

/* ------------------------------------------------------------------ */
/* nghttp2 callbacks (I/O thread or a caller, lock held)               */
/* ------------------------------------------------------------------ */

static call *stream_call(nghttp2_session *s, int32_t stream_id) {
  if (stream_id <= 0)
    return NULL;
  return nghttp2_session_get_stream_user_data(s, stream_id);
}

static int on_header(nghttp2_session *s, const nghttp2_frame *f,
                     const uint8_t *name, size_t nlen, const uint8_t *value,
                     size_t vlen, uint8_t flags, void *ud) {
  immu__grpc_client *c = ud;
  (void)flags;
  if (f->hd.type != NGHTTP2_HEADERS)
    return 0;
  call *k = stream_call(s, f->hd.stream_id);
  if (k == NULL || k->done || k->abandoned)
    return 0;
  k->hdr_bytes += nlen + vlen + 32;
  k->hdr_count++;
  if (k->hdr_bytes > HDR_BYTES_MAX || k->hdr_count > HDR_COUNT_MAX) {
    call_fail(c, k, IMMU_ETOOLARGE, IMMU__GRPC_RESOURCE_EXHAUSTED,
              dupstr("response header list too large"));
    return 0;
  }
  if (nlen > 0 && name[0] == ':') {
    if (nlen == 7 && memcmp(name, ":status", 7) == 0) {
      int st = 0;
      for (size_t i = 0; i < vlen && i < 3; i++)
        st =
            st * 10 + (value[i] >= '0' && value[i] <= '9' ? value[i] - '0' : 0);
      if (vlen == 3)
        k->http_status = st;
    }
    return 0;
  }
  if (nlen == 12 && memcmp(name, "content-type", 12) == 0) {
    static const char ct[] = "application/grpc";
    size_t cl = sizeof ct - 1;
    k->ct_ok = vlen >= cl && memcmp(value, ct, cl) == 0 &&
               (vlen == cl || value[cl] == '+' || value[cl] == ';');
  } else if (nlen == 11 && memcmp(name, "grpc-status", 11) == 0) {
    int gs = parse_gstatus(value, vlen);
    if (gs < 0) {
      call_fail(c, k, IMMU_EPROTO, IMMU__GRPC_INTERNAL,
                dupstr("malformed grpc-status"));
      return 0;
    }
    k->have_gstatus = 1;
    k->gstatus = gs;
  } else if (nlen == 12 && memcmp(name, "grpc-message", 12) == 0) {
    immu__free(k->gmessage);
    k->gmessage = percent_decode(value, vlen);
  }
  /* The response HEADERS (also a trailers-only one) vs. the trailers. */
  hdr_list *l =
      f->headers.cat == NGHTTP2_HCAT_HEADERS ? &k->trailers : &k->headers;
  if (hdr_push(l, name, nlen, value, vlen) != 0)
    call_fail(c, k, IMMU_ENOMEM, IMMU__GRPC_RESOURCE_EXHAUSTED, NULL);
  return 0;
}

static int on_data_chunk(nghttp2_session *s, uint8_t flags, int32_t stream_id,
                         const uint8_t *data, size_t len, void *ud) {
  immu__grpc_client *c = ud;
  (void)flags;
  call *k = stream_call(s, stream_id);
  if (k == NULL) {
    nghttp2_session_consume(s, stream_id, len);
    return 0;
  }
  if (k->done || k->abandoned) {
    consume(c, k, len);
    return 0;
  }
  msg_feed(c, k, data, len);
  if (k->stream_mode && !k->done && k->queued_bytes > c->q_high)
    k->withheld += len;
  else
    consume(c, k, len);
  return 0;
}

static int on_frame_recv(nghttp2_session *s, const nghttp2_frame *f, void *ud) {
  immu__grpc_client *c = ud;
  switch (f->hd.type) {
  case NGHTTP2_SETTINGS:
    if (!(f->hd.flags & NGHTTP2_FLAG_ACK) && !c->got_settings) {
      c->got_settings = 1;
      pthread_cond_broadcast(&c->cv);
    }
    return 0;
  case NGHTTP2_GOAWAY:
    c->goaway_recv = 1;
    return 0;
  case NGHTTP2_HEADERS:
  case NGHTTP2_DATA:
    if (f->hd.flags & NGHTTP2_FLAG_END_STREAM) {
      call *k = stream_call(s, f->hd.stream_id);
      if (k != NULL && !k->abandoned)
        call_remote_end(c, k);
    }
    return 0;
  default:
    return 0;
  }
}

static int on_invalid_frame(nghttp2_session *s, const nghttp2_frame *f,
                            int lib_error, void *ud) {
  (void)lib_error;
  (void)ud;
  call *k = stream_call(s, f->hd.stream_id);
  if (k != NULL)
    k->proto_err = 1;
  return 0;
}

static int on_frame_send(nghttp2_session *s, const nghttp2_frame *f, void *ud) {
  immu__grpc_client *c = ud;
  (void)s;
  if (f->hd.type == NGHTTP2_GOAWAY && f->goaway.error_code != NGHTTP2_NO_ERROR)
    c->sent_error_goaway = 1;
  if (f->hd.type == NGHTTP2_RST_STREAM &&
      f->rst_stream.error_code == NGHTTP2_PROTOCOL_ERROR) {
    call *k = stream_call(s, f->hd.stream_id);
    if (k != NULL)
      k->proto_err = 1;
  }
  return 0;
}

static int on_stream_close(nghttp2_session *s, int32_t stream_id,
                           uint32_t error_code, void *ud) {
  immu__grpc_client *c = ud;
  call *k = stream_call(s, stream_id);
  if (k == NULL)
    return 0;
  /* Nothing may find the call through nghttp2 any more: it is freed below
   * (abandoned) or by its caller's detach. */
  nghttp2_session_set_stream_user_data(s, stream_id, NULL);
  k->stream_closed = 1;
  if (k->abandoned) {
    call_release_withheld(c, k);
    call_unlink(c, k);
    call_free(k);
    return 0;
  }
  if (k->async_cb != NULL && k->done)
    return 0; /* queued for its callback, which detaches it */
  if (!k->done) {
    if (k->proto_err) {
      call_finish(k, IMMU_EPROTO, IMMU__GRPC_INTERNAL,
                  dupf("stream error: invalid frames from the server "
                       "(HTTP/2 error %u)",
                       error_code));
    } else if (error_code == NGHTTP2_REFUSED_STREAM) {
      call_finish(k, IMMU_ECLOSED, IMMU__GRPC_UNAVAILABLE,
                  dupstr("stream refused by the server"));
    } else if (error_code == NGHTTP2_CANCEL) {
      call_finish(k, IMMU_ECLOSED, IMMU__GRPC_CANCELLED,
                  dupstr("stream cancelled by the server"));
    } else {
      call_finish(k, IMMU_ECLOSED,
                  error_code == NGHTTP2_ENHANCE_YOUR_CALM
                      ? IMMU__GRPC_RESOURCE_EXHAUSTED
                      : IMMU__GRPC_INTERNAL,
                  dupf("stream terminated by RST_STREAM with error code %u",
                       error_code));
    }
  }
  pthread_cond_broadcast(&k->cv);
  return 0;
}

/* Request body: the messages, each after its 5-byte prefix. */
static ssize_t req_read(nghttp2_session *s, int32_t stream_id, uint8_t *buf,
                        size_t length, uint32_t *data_flags,
                        nghttp2_data_source *src, void *ud) {
  (void)s;
  (void)stream_id;
  (void)ud;
  call *k = src->ptr;
  if (k->reqs == NULL)
    return NGHTTP2_ERR_DEFERRED; /* detached: the RST_STREAM ends it */
  size_t w = 0;
  while (w < length && k->send_idx < k->nreqs) {
    const immu__grpc_msg *m = &k->reqs[k->send_idx];
    if (k->send_off < 5) {
      if (k->send_off == 0) {
        uint32_t l = (uint32_t)m->len;
        k->prefix[0] = 0;
        k->prefix[1] = (uint8_t)(l >> 24);
        k->prefix[2] = (uint8_t)(l >> 16);
        k->prefix[3] = (uint8_t)(l >> 8);
        k->prefix[4] = (uint8_t)l;
      }
      size_t take = 5 - k->send_off;
      if (take > length - w)
        take = length - w;
      memcpy(buf + w, k->prefix + k->send_off, take);
      w += take;
      k->send_off += take;
      if (k->send_off < 5)
        break;
    }
    size_t done_body = k->send_off - 5;
    size_t take = m->len - done_body;
    if (take > length - w)
      take = length - w;
    if (take > 0) {
      memcpy(buf + w, m->ptr + done_body, take);
      w += take;
      k->send_off += take;
    }
    if (k->send_off - 5 == m->len) {
      k->send_idx++;
      k->send_off = 0;
    }
  }
  if (k->send_idx == k->nreqs) {
    *data_flags |= NGHTTP2_DATA_FLAG_EOF;
    k->eof_produced = 1;
  }
  return (ssize_t)w;
}

static void *h2_malloc(size_t size, void *ud) {
  (void)ud;
  return immu__malloc(size);
}
static void h2_free(void *p, void *ud) {
  (void)ud;
  immu__free(p);
}
static void *h2_calloc(size_t nmemb, size_t size, void *ud) {
  (void)ud;
  return immu__calloc(nmemb, size);
}
static void *h2_realloc(void *p, size_t size, void *ud) {
  (void)ud;
  return immu__realloc(p, size);
}

/* ------------------------------------------------------------------ */
/* I/O                                                                 */
/* ------------------------------------------------------------------ */

/* Serialises pending frames (lock held). Returns 0 when nghttp2 has
 * nothing more to send, 1 when it stopped at the OUT_MAX cap (call again
 * once the socket took the bytes), or a negative code. */
static int produce(immu__grpc_client *c) {
  bytes *dst = c->tls ? &c->plain : &c->out;
  for (;;) {
    if (bytes_pending(&c->out) + bytes_pending(&c->plain) >= OUT_MAX)
      return 1;
    const uint8_t *p;
    ssize_t n = nghttp2_session_mem_send(c->h2, &p);
    if (n < 0)
      return n == NGHTTP2_ERR_NOMEM ? IMMU_ENOMEM : IMMU_EPROTO;
    if (n == 0)
      return 0;
    int rv = bytes_append(dst, p, (size_t)n);
    if (rv != 0)
      return rv;
  }
}

/* Moves TLS records from the write BIO to the socket buffer. */
static int tls_pump_out(immu__grpc_client *c) {
  size_t pend;
  while ((pend = BIO_ctrl_pending(c->wbio)) > 0) {
    uint8_t tmp[16384];
    int n =
        BIO_read(c->wbio, tmp, (int)(pend < sizeof tmp ? pend : sizeof tmp));
    if (n <= 0)
      break;
    int rv = bytes_append(&c->out, tmp, (size_t)n);
    if (rv != 0)
      return rv;
  }
  return 0;
}

static int tls_encrypt(immu__grpc_client *c) {
  while (bytes_pending(&c->plain) > 0) {
    size_t n = bytes_pending(&c->plain);
    if (n > 65536)
      n = 65536;
    ERR_clear_error();
    int w = SSL_write(c->ssl, c->plain.p + c->plain.off, (int)n);
    if (w <= 0)
      return IMMU_EPROTO;
    c->plain.off += (size_t)w;
    int rv = tls_pump_out(c);
    if (rv != 0)
      return rv;
  }
  c->plain.off = c->plain.len = 0;
  return 0;
}

/* Sends what the socket takes. Returns 0 or -errno. */
static int flush_out(immu__grpc_client *c) {
  while (bytes_pending(&c->out) > 0) {
    ssize_t n = send(c->fd, c->out.p + c->out.off, bytes_pending(&c->out),
                     MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK)
        return 0;
      return -errno;
    }
    c->out.off += (size_t)n;
  }
  c->out.off = c->out.len = 0;
  return 0;
}

/* Feeds plaintext to nghttp2 (takes the lock). */
static int feed(immu__grpc_client *c, const uint8_t *p, size_t n) {
  pthread_mutex_lock(&c->mu);
  ssize_t r = nghttp2_session_mem_recv(c->h2, p, n);
  int rv = 0;
  if (r < 0)
    rv = r == NGHTTP2_ERR_NOMEM ? IMMU_ENOMEM : IMMU_EPROTO;
  pthread_mutex_unlock(&c->mu);
  return rv;
}

/* Decrypts everything the read BIO holds. Returns 0, 1 on close_notify,
 * or a negative code. */
static int tls_drain(immu__grpc_client *c) {
  for (;;) {
    /* SSL_get_error reads the thread's error queue: a shared loop thread
     * may hold errors of another connection's failure. */
    ERR_clear_error();
    int n = SSL_read(c->ssl, c->pbuf, (int)RBUF_SIZE);
    if (n > 0) {
      int rv = feed(c, c->pbuf, (size_t)n);
      if (rv != 0)
        return rv;
      continue;
    }
    int e = SSL_get_error(c->ssl, n);
    int rv = tls_pump_out(c);
    if (rv != 0)
      return rv;
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
      return 0;
    if (e == SSL_ERROR_ZERO_RETURN)
      return 1;
    return IMMU_EPROTO;
  }
}

/* Reads from the socket. Returns 0, 1 at EOF, or a negative code. */
static int do_read(immu__grpc_client *c) {
  for (int i = 0; i < READS_PER_TURN; i++) {
    ssize_t n = recv(c->fd, c->rbuf, RBUF_SIZE, 0);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK)
        return 0;
      return -errno;
    }
    if (n == 0)
      return 1;
    int rv;
    if (c->tls) {
      if (BIO_write(c->rbio, c->rbuf, (int)n) != (int)n)
        return IMMU_ENOMEM;
      rv = tls_drain(c);
    } else {
      rv = feed(c, c->rbuf, (size_t)n);
    }
    if (rv != 0)
      return rv;
    if ((size_t)n < RBUF_SIZE)
      return 0;
  }
  return 0;
}

static const char *err_text(int err) {
  switch (err) {
  case IMMU_EPROTO:
    return "protocol error (malformed frames from the server)";
  case 1:
    return "connection closed by the server";
  default:
    return immu_strerror(err);
  }
}

static void call_detach(immu__grpc_client *c, call *k);

/* I/O thread, lock not held: runs the callbacks of the asynchronous calls
 * that finished, oldest first. A callback may start new calls. */
static void run_async(immu__grpc_client *c) {
  for (;;) {
    pthread_mutex_lock(&c->mu);
    call *k = c->async_q;
    if (k == NULL) {
      pthread_mutex_unlock(&c->mu);
      return;
    }
    c->async_q = k->aq_next;
    immu__grpc_result res;
    immu__grpc_result_init(&res);
    uint8_t *resp = NULL;
    size_t resp_len = 0;
    int rv = k->err;
    immu__grpc_done_cb cb = k->async_cb;
    void *arg = k->async_arg;
    res.status = k->fin_status;
    res.message = k->fin_msg != NULL ? k->fin_msg : dupstr("");
    k->fin_msg = NULL;
    if (rv == 0 && res.status == IMMU__GRPC_OK && k->qhead != NULL) {
      resp = k->qhead->data; /* exactly one, checked at END_STREAM */
      resp_len = k->qhead->len;
      k->qhead->data = NULL;
    }
    call_detach(c, k);
    pthread_mutex_unlock(&c->mu);
    cb(arg, rv, &res, resp, resp_len);
    immu__free(resp);
    immu__grpc_result_free(&res);
  }
}

/* Returned by io_produce when the handle is stopping or dead: the I/O
 * side leaves it. */
#define IO_STOP 2

/* One output turn, lock not held: produces frames and writes what the
 * socket takes. Returns 0 (*more: frames were left unproduced at the cap;
 * *out_left: bytes wait for the socket), IO_STOP, or a failure for
 * io_fail (< 0, or 1 = closed by the server). */
static int io_produce(immu__grpc_client *c, int *more, int *out_left) {
  int rv;
  pthread_mutex_lock(&c->mu);
  if (c->stopping || c->dead) {
    pthread_mutex_unlock(&c->mu);
    return IO_STOP;
  }
  c->wake_pending = 0;
  rv = produce(c);
  *more = rv == 1;
  if (*more)
    rv = 0;
  if (rv == 0 && !*more && !nghttp2_session_want_read(c->h2) &&
      !nghttp2_session_want_write(c->h2) && bytes_pending(&c->plain) == 0)
    rv = c->sent_error_goaway ? IMMU_EPROTO
         : c->goaway_recv     ? 1
                              : IMMU_EPROTO;
  /* Cleartext: the socket is written under the lock, by us or by a
   * caller sending its own request (send_inline). */
  if (rv == 0 && !c->tls)
    rv = flush_out(c);
  *out_left = bytes_pending(&c->out) > 0;
  pthread_mutex_unlock(&c->mu);
  if (rv == 0 && c->tls) {
    rv = tls_encrypt(c);
    if (rv == 0)
      rv = flush_out(c);
    *out_left = bytes_pending(&c->out) > 0;
  }
  return rv;
}

/* The connection failed with |rv| (1: closed by the server): fail every
 * call, say goodbye if possible, run the callbacks. */
static void io_fail(immu__grpc_client *c, int rv) {
  pthread_mutex_lock(&c->mu);
  if (rv == 1) {
    conn_fail(c, -ECONNRESET, "connection closed by the server");
  } else {
    conn_fail(c, rv, err_text(rv));
  }
  /* Best effort: a GOAWAY nghttp2 queued for the server. */
  if (c->h2 != NULL && rv != 1)
    (void)produce(c);
  if (!c->tls)
    (void)flush_out(c);
  pthread_mutex_unlock(&c->mu);
  if (c->tls) {
    (void)tls_encrypt(c);
    (void)flush_out(c);
  }
  run_async(c);
}

static void *io_main(void *arg) {
  immu__grpc_client *c = arg;
  int rv = 0;

  if (c->tls) {
    rv = tls_drain(c); /* records that arrived with the handshake */
    if (rv != 0)
      goto fail;
  }
  for (;;) {
    char junk[64];
    int more, out_left;
    while (read(c->wake_rd, junk, sizeof junk) > 0) {
    }
    rv = io_produce(c, &more, &out_left);
    if (rv == IO_STOP)
      break;
    if (rv != 0)
      goto fail;

    struct pollfd p[2];
    p[0].fd = c->fd;
    p[0].events = POLLIN;
    if (out_left)
      p[0].events |= POLLOUT;
    p[0].revents = 0;
    p[1].fd = c->wake_rd;
    p[1].events = POLLIN;
    p[1].revents = 0;
    /* Frames left unproduced at the cap: only peek at the socket. */
    int wait = more && !out_left ? 0 : -1;
    if (poll(p, 2, wait) < 0) {
      if (errno == EINTR)
        continue;
      rv = -errno;
      goto fail;
    }
    if (p[0].revents & (POLLIN | POLLHUP | POLLERR)) {
      rv = do_read(c);
      run_async(c);
      if (rv != 0)
        goto fail;
    }
  }
  return NULL;

fail:
  io_fail(c, rv);
  return NULL;
}

/* ------------------------------------------------------------------ */
/* shared loop                                                         */
/* ------------------------------------------------------------------ */

/* Loop thread: |c| leaves the loop for good. */
static void loop_drop(immu__grpc_loop *l, immu__grpc_client *c) {
  (void)epoll_ctl(l->ep, EPOLL_CTL_DEL, c->fd, NULL);
  pthread_mutex_lock(&l->mu);
  c->io_done = 1;
  if (l->waiters > 0)
    pthread_cond_broadcast(&l->cv);
  pthread_mutex_unlock(&l->mu);
}

/* Loop thread: one turn of |c| (reads first when |readable|). Sets *again
 * when frames were left unproduced at the output cap. */
static void loop_turn(immu__grpc_loop *l, immu__grpc_client *c, int readable,
                      int *again) {
  int rv = 0, more = 0, out_left = 0;
  if (c->io_done)
    return;
  if (!c->io_started_turns) {
    c->io_started_turns = 1;
    if (c->tls && (rv = tls_drain(c)) != 0)
      goto fail;
  }
  if (readable) {
    rv = do_read(c);
    run_async(c);
    if (rv != 0)
      goto fail;
  }
  rv = io_produce(c, &more, &out_left);
  if (rv == IO_STOP) {
    loop_drop(l, c);
    return;
  }
  if (rv != 0)
    goto fail;
  if (out_left != c->ep_out) {
    struct epoll_event ev;
    memset(&ev, 0, sizeof ev);
    ev.events = EPOLLIN | (out_left ? EPOLLOUT : 0);
    ev.data.ptr = c;
    if (epoll_ctl(l->ep, EPOLL_CTL_MOD, c->fd, &ev) != 0) {
      rv = -errno;
      goto fail;
    }
    c->ep_out = out_left;
  }
  if (more && !out_left) {
    loop_mark(l, c);
    *again = 1;
  }
  return;
fail:
  io_fail(c, rv);
  loop_drop(l, c);
}

/* Loop thread: marks the connection the thread works on (free waits for
 * it to be released). */
static void loop_set_busy(immu__grpc_loop *l, immu__grpc_client *c) {
  pthread_mutex_lock(&l->mu);
  l->busy = c;
  if (c == NULL && l->waiters > 0)
    pthread_cond_broadcast(&l->cv);
  pthread_mutex_unlock(&l->mu);
}

static void *loop_main(void *arg) {
  immu__grpc_loop *l = arg;
  struct epoll_event ev[64];
  int again = 0;
  tl_loop = l;
  for (;;) {
    int n = epoll_wait(l->ep, ev, 64, again ? 0 : -1);
    int quit;
    again = 0;
    if (n < 0)
      n = 0; /* EINTR; nothing else can happen with a valid epoll fd */
    for (int i = 0; i < n; i++) {
      immu__grpc_client *c = ev[i].data.ptr;
      if (c == NULL) {
        uint64_t cnt;
        ssize_t r = read(l->efd, &cnt, sizeof cnt);
        (void)r;
        pthread_mutex_lock(&l->mu);
        l->woken = 0;
        pthread_mutex_unlock(&l->mu);
        continue;
      }
      loop_set_busy(l, c);
      loop_turn(l, c, (ev[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) != 0,
                &again);
      loop_set_busy(l, NULL);
    }
    /* The dirty list as it is now; marks made while it runs wait for the
     * next pass (a mark by this thread sets |again|). */
    pthread_mutex_lock(&l->mu);
    immu__grpc_client *list = l->dirty;
    l->dirty = NULL;
    l->dirty_tail = &l->dirty;
    while (list != NULL) {
      immu__grpc_client *c = list;
      list = c->dirty_next;
      c->dirty_next = NULL;
      c->in_dirty = 0;
      l->busy = c;
      pthread_mutex_unlock(&l->mu);
      loop_turn(l, c, 0, &again);
      pthread_mutex_lock(&l->mu);
      l->busy = NULL;
      if (l->waiters > 0)
        pthread_cond_broadcast(&l->cv);
    }
    if (l->dirty != NULL)
      again = 1;
    quit = l->quit;
    pthread_mutex_unlock(&l->mu);
    if (quit)
      break;
  }
  return NULL;
}

int immu__grpc_loop_new(immu__grpc_loop **out) {
  immu__grpc_loop *l;
  struct epoll_event ev;
  int rv;
  *out = NULL;
  l = immu__calloc(1, sizeof *l);
  if (l == NULL)
    return IMMU_ENOMEM;
  l->ep = l->efd = -1;
  l->dirty_tail = &l->dirty;
  if (pthread_mutex_init(&l->mu, NULL) != 0) {
    immu__free(l);
    return IMMU_ENOMEM;
  }
  if (pthread_cond_init(&l->cv, NULL) != 0) {
    pthread_mutex_destroy(&l->mu);
    immu__free(l);
    return IMMU_ENOMEM;
  }
  l->ep = epoll_create1(EPOLL_CLOEXEC);
  l->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (l->ep < 0 || l->efd < 0) {
    rv = -errno;
    goto fail;
  }
  memset(&ev, 0, sizeof ev);
  ev.events = EPOLLIN;
  ev.data.ptr = NULL;
  if (epoll_ctl(l->ep, EPOLL_CTL_ADD, l->efd, &ev) != 0) {
    rv = -errno;
    goto fail;
  }
  if (pthread_create(&l->th, NULL, loop_main, l) != 0) {
    rv = IMMU_ENOMEM;
    goto fail;
  }
  l->th_started = 1;
  *out = l;
  return 0;
fail:
  immu__grpc_loop_free(l);
  return rv;
}

void immu__grpc_loop_free(immu__grpc_loop *l) {
  if (l == NULL)
    return;
  if (l->th_started) {
    pthread_mutex_lock(&l->mu);
    l->quit = 1;
    pthread_mutex_unlock(&l->mu);
    loop_poke(l);
    pthread_join(l->th, NULL);
  }
  if (l->ep >= 0)
    close(l->ep);
  if (l->efd >= 0)
    close(l->efd);
  pthread_cond_destroy(&l->cv);
  pthread_mutex_destroy(&l->mu);
  immu__free(l);
}

/* ------------------------------------------------------------------ */
/* connect                                                             */
/* ------------------------------------------------------------------ */

static int is_ip_literal(const char *h) {
  struct in6_addr a6;
  struct in_addr a4;
  return inet_pton(AF_INET, h, &a4) == 1 || inet_pton(AF_INET6, h, &a6) == 1;
}

static int wait_fd(int fd, short events, int64_t deadline) {
  for (;;) {
    int64_t left = deadline - now_ms();
    if (left <= 0)
      return IMMU_ETIMEOUT;
    struct pollfd p = {.fd = fd, .events = events, .revents = 0};
    int r = poll(&p, 1, left > INT32_MAX ? INT32_MAX : (int)left);
    if (r < 0) {
      if (errno == EINTR)
        continue;
      return -errno;
    }
    if (r > 0)
      return 0;
  }
}

static int tcp_connect(const char *host, int port, int64_t deadline, int *out,
                       char *errbuf, size_t errlen) {
  struct addrinfo hints, *res = NULL;
  char ps[16];
  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  snprintf(ps, sizeof ps, "%d", port);
  int g = getaddrinfo(host, ps, &hints, &res);
  if (g != 0) {
    errf(errbuf, errlen, "cannot resolve %s: %s", host, gai_strerror(g));
    if (g == EAI_MEMORY)
      return IMMU_ENOMEM;
    if (g == EAI_SYSTEM)
      return errno ? -errno : IMMU_ENOTFOUND;
    return IMMU_ENOTFOUND;
  }
  int last = -ECONNREFUSED;
  for (struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next) {
    int fd =
        socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
               ai->ai_protocol);
    if (fd < 0) {
      last = -errno;
      continue;
    }
    int r = connect(fd, ai->ai_addr, ai->ai_addrlen);
    if (r < 0 && errno == EINPROGRESS) {
      r = wait_fd(fd, POLLOUT, deadline);
      if (r == 0) {
        int soerr = 0;
        socklen_t sl = sizeof soerr;
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0)
          soerr = errno;
        r = soerr ? -soerr : 0;
      }
    } else if (r < 0) {
      r = -errno;
    }
    if (r == 0) {
      int one = 1;
      (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      freeaddrinfo(res);
      *out = fd;
      return 0;
    }
    close(fd);
    last = r;
    if (r == IMMU_ETIMEOUT)
      break;
  }
  freeaddrinfo(res);
  errf(errbuf, errlen, "cannot connect to %s:%d: %s", host, port,
       last == IMMU_ETIMEOUT ? "timed out" : immu_strerror(last));
  return last;
}

static void ssl_errf(char *errbuf, size_t errlen, const char *what) {
  unsigned long e = ERR_get_error();
  char tmp[256];
  if (e != 0)
    ERR_error_string_n(e, tmp, sizeof tmp);
  else
    snprintf(tmp, sizeof tmp, "no details");
  ERR_clear_error();
  errf(errbuf, errlen, "%s: %s", what, tmp);
}

static int tls_setup(immu__grpc_client *c, const immu__grpc_client_opts *o,
                     char *errbuf, size_t errlen) {
  static const unsigned char alpn[] = {2, 'h', '2'};
  c->ssl_ctx = SSL_CTX_new(TLS_client_method());
  if (c->ssl_ctx == NULL) {
    ssl_errf(errbuf, errlen, "SSL_CTX_new");
    return IMMU_ECRYPTO;
  }
  SSL_CTX_set_min_proto_version(c->ssl_ctx, TLS1_2_VERSION);
  SSL_CTX_set_mode(c->ssl_ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
                                   SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  SSL_CTX_set_options(c->ssl_ctx, SSL_OP_NO_RENEGOTIATION);
  if (!o->insecure_skip_verify) {
    int ok = o->ca_file != NULL
                 ? SSL_CTX_load_verify_locations(c->ssl_ctx, o->ca_file, NULL)
                 : SSL_CTX_set_default_verify_paths(c->ssl_ctx);
    if (ok != 1) {
      ssl_errf(errbuf, errlen, "cannot load the CA certificates");
      return IMMU_ECRYPTO;
    }
    SSL_CTX_set_verify(c->ssl_ctx, SSL_VERIFY_PEER, NULL);
  } else {
    SSL_CTX_set_verify(c->ssl_ctx, SSL_VERIFY_NONE, NULL);
  }
  if (o->cert_file != NULL) {
    if (SSL_CTX_use_certificate_chain_file(c->ssl_ctx, o->cert_file) != 1 ||
        SSL_CTX_use_PrivateKey_file(c->ssl_ctx, o->key_file,
                                    SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(c->ssl_ctx) != 1) {
      ssl_errf(errbuf, errlen, "cannot load the client certificate");
      return IMMU_ECRYPTO;
    }
  }
  if (SSL_CTX_set_alpn_protos(c->ssl_ctx, alpn, sizeof alpn) != 0) {
    ssl_errf(errbuf, errlen, "ALPN");
    return IMMU_ECRYPTO;
  }
  c->ssl = SSL_new(c->ssl_ctx);
  if (c->ssl == NULL) {
    ssl_errf(errbuf, errlen, "SSL_new");
    return IMMU_ENOMEM;
  }
  c->rbio = BIO_new(BIO_s_mem());
  c->wbio = BIO_new(BIO_s_mem());
  if (c->rbio == NULL || c->wbio == NULL) {
    BIO_free(c->rbio);
    BIO_free(c->wbio);
    c->rbio = c->wbio = NULL;
    return IMMU_ENOMEM;
  }
  BIO_set_mem_eof_return(c->rbio, -1); /* empty = "retry", not EOF */
  SSL_set_bio(c->ssl, c->rbio, c->wbio);
  SSL_set_connect_state(c->ssl);

  const char *name = o->server_name != NULL ? o->server_name : o->host;
  int ip = is_ip_literal(name);
  if (!ip && SSL_set_tlsext_host_name(c->ssl, name) != 1) {
    ssl_errf(errbuf, errlen, "SNI");
    return IMMU_EINVAL;
  }
  if (!o->insecure_skip_verify) {
    X509_VERIFY_PARAM *vp = SSL_get0_param(c->ssl);
    int ok = ip ? X509_VERIFY_PARAM_set1_ip_asc(vp, name)
                : X509_VERIFY_PARAM_set1_host(vp, name, 0);
    if (ok != 1) {
      ssl_errf(errbuf, errlen, "server name");
      return IMMU_EINVAL;
    }
  }
  return 0;
}

static int tls_handshake(immu__grpc_client *c, int64_t deadline, char *errbuf,
                         size_t errlen) {
  for (;;) {
    ERR_clear_error();
    int r = SSL_do_handshake(c->ssl);
    int e = r == 1 ? SSL_ERROR_NONE : SSL_get_error(c->ssl, r);
    int rv = tls_pump_out(c);
    if (rv != 0)
      return rv;
    while (bytes_pending(&c->out) > 0) {
      rv = flush_out(c);
      if (rv != 0) {
        errf(errbuf, errlen, "TLS handshake: %s", immu_strerror(rv));
        return rv;
      }
      if (bytes_pending(&c->out) > 0 &&
          (rv = wait_fd(c->fd, POLLOUT, deadline)) != 0) {
        errf(errbuf, errlen, "TLS handshake timed out");
        return rv;
      }
    }
    if (r == 1)
      break;
    if (e == SSL_ERROR_WANT_READ) {
      rv = wait_fd(c->fd, POLLIN, deadline);
      if (rv != 0) {
        errf(errbuf, errlen, "TLS handshake: %s",
             rv == IMMU_ETIMEOUT ? "timed out" : immu_strerror(rv));
        return rv;
      }
      ssize_t n = recv(c->fd, c->rbuf, RBUF_SIZE, 0);
      if (n < 0 && (errno == EINTR || errno == EAGAIN))
        continue;
      if (n < 0) {
        rv = -errno;
        errf(errbuf, errlen, "TLS handshake: %s", immu_strerror(rv));
        return rv;
      }
      if (n == 0) {
        errf(errbuf, errlen, "TLS handshake: connection closed by the server");
        return IMMU_EPROTO;
      }
      if (BIO_write(c->rbio, c->rbuf, (int)n) != (int)n)
        return IMMU_ENOMEM;
      continue;
    }
    if (e == SSL_ERROR_WANT_WRITE)
      continue;
    long vr = SSL_get_verify_result(c->ssl);
    if (vr != X509_V_OK) {
      errf(errbuf, errlen, "server certificate rejected: %s",
           X509_verify_cert_error_string(vr));
      ERR_clear_error();
      return IMMU_EAUTH;
    }
    ssl_errf(errbuf, errlen, "TLS handshake failed");
    return IMMU_EPROTO;
  }
  const unsigned char *sel = NULL;
  unsigned int sel_len = 0;
  SSL_get0_alpn_selected(c->ssl, &sel, &sel_len);
  if (sel_len != 2 || memcmp(sel, "h2", 2) != 0) {
    errf(errbuf, errlen, "the server did not select ALPN \"h2\"");
    return IMMU_EPROTO;
  }
  return 0;
}

static int h2_setup(immu__grpc_client *c) {
  nghttp2_session_callbacks *cbs = NULL;
  nghttp2_option *opt = NULL;
  nghttp2_mem mem = {NULL, h2_malloc, h2_free, h2_calloc, h2_realloc};
  int rv = IMMU_ENOMEM;

  if (nghttp2_session_callbacks_new(&cbs) != 0)
    goto out;
  nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk);
  nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
  nghttp2_session_callbacks_set_on_invalid_frame_recv_callback(
      cbs, on_invalid_frame);
  nghttp2_session_callbacks_set_on_frame_send_callback(cbs, on_frame_send);
  nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
  if (nghttp2_option_new(&opt) != 0)
    goto out;
  nghttp2_option_set_no_auto_window_update(opt, 1);
  if (nghttp2_session_client_new3(&c->h2, cbs, c, opt, &mem) != 0) {
    c->h2 = NULL;
    goto out;
  }
  nghttp2_settings_entry iv[] = {
      {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
      {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, (uint32_t)STREAM_WINDOW},
      {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, (uint32_t)HDR_BYTES_MAX},
  };
  if (nghttp2_submit_settings(c->h2, NGHTTP2_FLAG_NONE, iv,
                              sizeof iv / sizeof iv[0]) != 0)
    goto out;
  if (nghttp2_session_set_local_window_size(c->h2, NGHTTP2_FLAG_NONE, 0,
                                            CONN_WINDOW) != 0)
    goto out;
  rv = 0;
out:
  nghttp2_option_del(opt);
  nghttp2_session_callbacks_del(cbs);
  return rv;
}

int immu__grpc_client_connect(const immu__grpc_client_opts *o,
                              immu__grpc_client **out, char *errbuf,
                              size_t errlen) {
  immu__grpc_client *c = NULL;
  int rv;

  if (out == NULL)
    return IMMU_EINVAL;
  *out = NULL;
  errf(errbuf, errlen, "%s", "");
  if (o == NULL || o->host == NULL || o->host[0] == '\0' || o->port <= 0 ||
      o->port > 65535 ||
      (o->tls && o->cert_file != NULL && o->key_file == NULL)) {
    errf(errbuf, errlen, "invalid connection options");
    return IMMU_EINVAL;
  }
  int64_t deadline =
      now_ms() +
      (o->connect_timeout_ms > 0 ? o->connect_timeout_ms : CONNECT_TIMEOUT_MS);

  c = immu__calloc(1, sizeof *c);
  if (c == NULL)
    return IMMU_ENOMEM;
  if (pthread_mutex_init(&c->mu, NULL) != 0) {
    immu__free(c);
    return IMMU_ENOMEM;
  }
  if (cond_init_mono(&c->cv) != 0) {
    pthread_mutex_destroy(&c->mu);
    immu__free(c);
    return IMMU_ENOMEM;
  }
  /* From here on immu__grpc_client_free undoes everything. */
  c->fd = c->wake_rd = c->wake_wr = -1;
  c->tls = o->tls != 0;
  c->max_recv = o->max_recv_msg_size ? o->max_recv_msg_size
                                     : IMMU__GRPC_DEFAULT_MAX_RECV_MSG;
  if (c->max_recv > UINT32_MAX)
    c->max_recv = UINT32_MAX;
  c->default_timeout_ms = o->default_timeout_ms;
  c->q_high = o->stream_pending_max ? o->stream_pending_max : Q_HIGH_DEFAULT;

  int v6 = strchr(o->host, ':') != NULL;
  c->authority = dupf(v6 ? "[%s]:%d" : "%s:%d", o->host, o->port);
  c->user_agent = dupstr(
      o->user_agent != NULL ? o->user_agent : "immudb-c/" IMMU_CLIENT_VERSION);
  c->rbuf = immu__malloc(RBUF_SIZE);
  c->pbuf = c->tls ? immu__malloc(RBUF_SIZE) : NULL;
  if (c->authority == NULL || c->user_agent == NULL || c->rbuf == NULL ||
      (c->tls && c->pbuf == NULL)) {
    rv = IMMU_ENOMEM;
    goto fail;
  }
  if (o->loop == NULL) {
    int pfd[2];
    if (pipe2(pfd, O_NONBLOCK | O_CLOEXEC) != 0) {
      rv = -errno;
      errf(errbuf, errlen, "pipe: %s", immu_strerror(rv));
      goto fail;
    }
    c->wake_rd = pfd[0];
    c->wake_wr = pfd[1];
  }

  if (c->tls && (rv = tls_setup(c, o, errbuf, errlen)) != 0)
    goto fail;
  if ((rv = tcp_connect(o->host, o->port, deadline, &c->fd, errbuf, errlen)) !=
      0)
    goto fail;
  if (c->tls && (rv = tls_handshake(c, deadline, errbuf, errlen)) != 0)
    goto fail;
  if ((rv = h2_setup(c)) != 0)
    goto fail;

  if (o->loop != NULL) {
    struct epoll_event ev;
    memset(&ev, 0, sizeof ev);
    ev.events = EPOLLIN;
    ev.data.ptr = c;
    c->loop = o->loop;
    if (epoll_ctl(c->loop->ep, EPOLL_CTL_ADD, c->fd, &ev) != 0) {
      rv = -errno;
      c->loop = NULL;
      errf(errbuf, errlen, "epoll: %s", immu_strerror(rv));
      goto fail;
    }
    c->io_started = 1;
    loop_mark(c->loop, c); /* the preface and SETTINGS */
  } else {
    if (pthread_create(&c->io, NULL, io_main, c) != 0) {
      rv = IMMU_ENOMEM;
      goto fail;
    }
    c->io_started = 1;
  }

  pthread_mutex_lock(&c->mu);
  while (!c->got_settings && !c->dead) {
    struct timespec ts = abs_ms(deadline);
    if (pthread_cond_timedwait(&c->cv, &c->mu, &ts) == ETIMEDOUT &&
        !c->got_settings && !c->dead)
      break;
  }
  if (c->got_settings && !c->dead) {
    rv = 0;
  } else if (c->dead) {
    rv = c->dead_err;
    errf(errbuf, errlen, "no HTTP/2 from %s: %s", c->authority,
         err_text(c->dead_err));
  } else {
    rv = IMMU_ETIMEOUT;
    errf(errbuf, errlen, "no HTTP/2 SETTINGS from %s in time", c->authority);
  }
  pthread_mutex_unlock(&c->mu);
  if (rv != 0)
    goto fail;
  *out = c;
  return 0;

fail:
  immu__grpc_client_free(c);
  return rv;
}

void immu__grpc_client_free(immu__grpc_client *c) {
  if (c == NULL)
    return;
  if (c->io_started && c->loop != NULL) {
    /* The loop drops a stopping connection at its next turn; wait until
     * its thread holds no reference to it any more. */
    immu__grpc_loop *l = c->loop;
    pthread_mutex_lock(&c->mu);
    c->stopping = 1;
    pthread_mutex_unlock(&c->mu);
    loop_mark(l, c); /* nothing if it was dropped already */
    pthread_mutex_lock(&l->mu);
    l->waiters++;
    while (!c->io_done || c->in_dirty || l->busy == c)
      pthread_cond_wait(&l->cv, &l->mu);
    l->waiters--;
    pthread_mutex_unlock(&l->mu);
  } else if (c->io_started) {
    pthread_mutex_lock(&c->mu);
    c->stopping = 1;
    c->wake_pending = 0;
    wake_io(c); /* a dead handle's thread has exited already */
    pthread_mutex_unlock(&c->mu);
    pthread_join(c->io, NULL);
  }
  /* Best-effort goodbye on a healthy connection: GOAWAY, close_notify. */
  if (!c->dead && c->h2 != NULL && c->fd >= 0) {
    if (nghttp2_session_terminate_session(c->h2, NGHTTP2_NO_ERROR) == 0) {
      size_t total = 0;
      while (total < GOODBYE_MAX) {
        const uint8_t *p;
        ssize_t n = nghttp2_session_mem_send(c->h2, &p);
        if (n <= 0)
          break;
        if (bytes_append(c->tls ? &c->plain : &c->out, p, (size_t)n) != 0)
          break;
        total += (size_t)n;
      }
    }
    if (c->tls) {
      (void)tls_encrypt(c);
      (void)SSL_shutdown(c->ssl);
      (void)tls_pump_out(c);
    }
    (void)flush_out(c);
  }
  if (c->h2 != NULL)
    nghttp2_session_del(c->h2);
  call *k = c->calls;
  while (k != NULL) {
    call *nx = k->next;
    call_free(k);
    k = nx;
  }
  SSL_free(c->ssl);
  SSL_CTX_free(c->ssl_ctx);
  if (c->fd >= 0)
    close(c->fd);
  if (c->wake_rd >= 0)
    close(c->wake_rd);
  if (c->wake_wr >= 0)
    close(c->wake_wr);
  bytes_free(&c->out);
  bytes_free(&c->plain);
  immu__free(c->rbuf);
  immu__free(c->pbuf);
  immu__free(c->authority);
  immu__free(c->user_agent);
  pthread_cond_destroy(&c->cv);
  pthread_mutex_destroy(&c->mu);
  immu__free(c);
}

int immu__grpc_client_usable(immu__grpc_client *c) {
  if (c == NULL)
    return 0;
  pthread_mutex_lock(&c->mu);
  int ok = !c->dead && !c->goaway_recv &&
           nghttp2_session_check_request_allowed(c->h2);
  pthread_mutex_unlock(&c->mu);
  return ok;
}

/* ------------------------------------------------------------------ */
/* calls                                                               */
/* ------------------------------------------------------------------ */

static int md_key_ok(const char *k) {
  size_t n = strlen(k);
  if (n == 0 || k[0] == ':' || strncmp(k, "grpc-", 5) == 0 ||
      strcmp(k, "content-type") == 0 || strcmp(k, "te") == 0 ||
      strcmp(k, "user-agent") == 0)
    return 0;
  for (size_t i = 0; i < n; i++) {
    char ch = k[i];
    if (!((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '-' ||
          ch == '_' || ch == '.'))
      return 0;
  }
  return 1;
}

static int md_value_ok(const char *v) {
  for (; *v; v++)
    if ((unsigned char)*v < 0x20 || (unsigned char)*v > 0x7e)
      return 0;
  return 1;
}

static nghttp2_nv mknv(const char *name, const char *value) {
  nghttp2_nv nv;
  nv.name = (uint8_t *)(uintptr_t)name;
  nv.namelen = strlen(name);
  nv.value = (uint8_t *)(uintptr_t)value;
  nv.valuelen = strlen(value);
  nv.flags = NGHTTP2_NV_FLAG_NONE;
  return nv;
}

/* grpc-timeout: at most 8 digits and a unit. |ms| > 0. */
static void timeout_str(int64_t ms, char out[32]) {
  long long v;
  char unit;
  if (ms <= 99999999) {
    v = (long long)ms;
    unit = 'm';
  } else if ((ms + 999) / 1000 <= 99999999) {
    v = (long long)((ms + 999) / 1000);
    unit = 'S';
  } else if ((ms + 59999) / 60000 <= 99999999) {
    v = (long long)((ms + 59999) / 60000);
    unit = 'M';
  } else {
    v = 99999999;
    unit = 'H';
  }
  snprintf(out, 32, "%lld%c", v, unit);
}

/* Fills |nv| (room for 8 + nmd) with a call's request headers; |tstr|
 * holds the grpc-timeout value (none when |timeout_ms| <= 0). Returns the
 * count. */
static size_t request_headers(const immu__grpc_client *c, const char *path,
                              const immu__grpc_call_opts *co, size_t nmd,
                              int64_t timeout_ms, char tstr[32],
                              nghttp2_nv *nv) {
  size_t n = 0;
  nv[n++] = mknv(":method", "POST");
  nv[n++] = mknv(":scheme", c->tls ? "https" : "http");
  nv[n++] = mknv(":path", path);
  nv[n++] = mknv(":authority", c->authority);
  nv[n++] = mknv("te", "trailers");
  nv[n++] = mknv("content-type", "application/grpc");
  nv[n++] = mknv("user-agent", c->user_agent);
  if (timeout_ms > 0) {
    timeout_str(timeout_ms, tstr);
    nv[n++] = mknv("grpc-timeout", tstr);
  }
  for (size_t i = 0; i < nmd; i++)
    nv[n++] = mknv(co->md[i].key, co->md[i].value);
  return n;
}

static void set_result(immu__grpc_result *res, int status, const char *msg) {
  immu__free(res->message);
  res->status = status;
  res->message = dupstr(msg != NULL ? msg : "");
}

/* Gives the call up (lock held): forgets the caller's buffers, resets the
 * stream if it is still open, and frees the call or leaves it to
 * on_stream_close. */
static void call_detach(immu__grpc_client *c, call *k) {
  k->reqs = NULL;
  if (!k->stream_closed && !(k->remote_end && k->eof_produced))
    call_rst(c, k, NGHTTP2_CANCEL);
  call_drop_queue(k);
  call_release_withheld(c, k);
  if (k->stream_closed || c->dead) {
    call_unlink(c, k);
    call_free(k);
  } else {
    k->abandoned = 1;
  }
}

static int run_call(immu__grpc_client *c, const char *path,
                    const immu__grpc_call_opts *co, const immu__grpc_msg *reqs,
                    size_t nreqs, int stream_mode, immu__grpc_on_msg on_msg,
                    void *arg, uint8_t **resp, size_t *resp_len,
                    immu__grpc_result *res) {
  immu__grpc_result scratch;
  nghttp2_nv stack_nv[16];
  nghttp2_nv *nv = stack_nv;
  char tstr[32];
  call *k = NULL;
  int rv = 0;

  if (resp != NULL)
    *resp = NULL;
  if (resp_len != NULL)
    *resp_len = 0;
  if (res == NULL) {
    immu__grpc_result_init(&scratch);
    res = &scratch;
  } else {
    immu__grpc_result_free(res);
  }
  if (c == NULL || path == NULL || path[0] != '/' ||
      (nreqs > 0 && reqs == NULL) ||
      (co != NULL && co->nmd > 0 && co->md == NULL)) {
    set_result(res, IMMU__GRPC_INTERNAL, "invalid call arguments");
    rv = IMMU_EINVAL;
    goto out;
  }
  for (size_t i = 0; i < nreqs; i++) {
    if (reqs[i].len > 0 && reqs[i].ptr == NULL) {
      set_result(res, IMMU__GRPC_INTERNAL, "invalid request message");
      rv = IMMU_EINVAL;
      goto out;
    }
    if (reqs[i].len > UINT32_MAX) {
      set_result(res, IMMU__GRPC_RESOURCE_EXHAUSTED,
                 "request message larger than 4 GiB");
      rv = IMMU_ETOOLARGE;
      goto out;
    }
  }
  size_t nmd = co != NULL ? co->nmd : 0;
  for (size_t i = 0; i < nmd; i++) {
    if (co->md[i].key == NULL || co->md[i].value == NULL ||
        !md_key_ok(co->md[i].key) || !md_value_ok(co->md[i].value)) {
      set_result(res, IMMU__GRPC_INTERNAL, "invalid metadata");
      rv = IMMU_EINVAL;
      goto out;
    }
  }
  int64_t timeout = co != NULL ? co->timeout_ms : 0;
  if (timeout == 0)
    timeout = c->default_timeout_ms;
  int64_t deadline = timeout > 0 ? now_ms() + timeout : 0;

  size_t need = 8 + nmd;
  if (need > sizeof stack_nv / sizeof stack_nv[0]) {
    nv = immu__malloc(need * sizeof *nv);
    if (nv == NULL) {
      set_result(res, IMMU__GRPC_RESOURCE_EXHAUSTED, "out of memory");
      rv = IMMU_ENOMEM;
      goto out;
    }
  }
  size_t n = request_headers(c, path, co, nmd, deadline > 0 ? timeout : 0,
                             tstr, nv);

  k = immu__calloc(1, sizeof *k);
  if (k == NULL || cond_init_mono(&k->cv) != 0) {
    immu__free(k);
    k = NULL;
    set_result(res, IMMU__GRPC_RESOURCE_EXHAUSTED, "out of memory");
    rv = IMMU_ENOMEM;
    goto out;
  }
  k->stream_mode = stream_mode;
  k->reqs = reqs;
  k->nreqs = nreqs;
  k->eof_produced = nreqs == 0;

  nghttp2_data_provider prd;
  prd.source.ptr = k;
  prd.read_callback = req_read;

  pthread_mutex_lock(&c->mu);
  if (c->dead || c->goaway_recv ||
      !nghttp2_session_check_request_allowed(c->h2)) {
    pthread_mutex_unlock(&c->mu);
    call_free(k);
    k = NULL;
    set_result(res, IMMU__GRPC_UNAVAILABLE, "connection is closed");
    rv = IMMU_ECLOSED;
    goto out;
  }
  int32_t sid =
      nghttp2_submit_request(c->h2, NULL, nv, n, nreqs > 0 ? &prd : NULL, k);
  if (sid < 0) {
    pthread_mutex_unlock(&c->mu);
    call_free(k);
    k = NULL;
    if (sid == NGHTTP2_ERR_NOMEM) {
      set_result(res, IMMU__GRPC_RESOURCE_EXHAUSTED, "out of memory");
      rv = IMMU_ENOMEM;
    } else if (sid == NGHTTP2_ERR_STREAM_ID_NOT_AVAILABLE) {
      set_result(res, IMMU__GRPC_UNAVAILABLE, "stream ids exhausted");
      rv = IMMU_ECLOSED;
    } else {
      set_result(res, IMMU__GRPC_INTERNAL, nghttp2_strerror(sid));
      rv = IMMU_EINVAL;
    }
    goto out;
  }
  k->stream_id = sid;
  k->next = c->calls;
  if (c->calls != NULL)
    c->calls->prev = k;
  c->calls = k;
  send_inline(c);

  int timed_out = 0;
  for (;;) {
    if (stream_mode && k->qhead != NULL && k->err == 0) {
      rmsg *m = k->qhead;
      k->qhead = m->next;
      if (k->qhead == NULL)
        k->qtail = NULL;
      k->queued_bytes -= m->len;
      if (k->withheld > 0 && k->queued_bytes <= c->q_high / 4)
        call_release_withheld(c, k);
      int cb = 0;
      if (on_msg != NULL) {
        pthread_mutex_unlock(&c->mu);
        cb = on_msg(arg, m->data, m->len);
        pthread_mutex_lock(&c->mu);
      }
      immu__free(m->data);
      immu__free(m);
      if (cb < 0) {
        if (!k->done) {
          call_finish(k, cb, IMMU__GRPC_CANCELLED,
                      dupstr("call cancelled by the message callback"));
        } else {
          k->err = cb;
          k->fin_status = IMMU__GRPC_CANCELLED;
          immu__free(k->fin_msg);
          k->fin_msg = dupstr("call cancelled by the message callback");
        }
        break;
      }
      if (deadline > 0 && now_ms() >= deadline && !k->done) {
        timed_out = 1;
        break;
      }
      continue;
    }
    if (k->done)
      break;
    if (deadline > 0) {
      struct timespec ts = abs_ms(deadline);
      if (pthread_cond_timedwait(&k->cv, &c->mu, &ts) == ETIMEDOUT &&
          !k->done && !(stream_mode && k->qhead != NULL)) {
        timed_out = 1;
        break;
      }
    } else {
      pthread_cond_wait(&k->cv, &c->mu);
    }
  }
  if (timed_out)
    call_finish(k, IMMU_ETIMEOUT, IMMU__GRPC_DEADLINE_EXCEEDED,
                dupstr("deadline exceeded"));

  /* Hand the outcome over. */
  rv = k->err;
  res->status = k->fin_status;
  res->message = k->fin_msg != NULL ? k->fin_msg : dupstr("");
  k->fin_msg = NULL;
  res->headers = k->headers.v;
  res->nheaders = k->headers.n;
  res->trailers = k->trailers.v;
  res->ntrailers = k->trailers.n;
  memset(&k->headers, 0, sizeof k->headers);
  memset(&k->trailers, 0, sizeof k->trailers);
  if (rv == 0 && !stream_mode && res->status == IMMU__GRPC_OK) {
    rmsg *m = k->qhead;
    if (m != NULL && resp != NULL) { /* exactly one, checked at END_STREAM */
      *resp = m->data;
      if (resp_len != NULL)
        *resp_len = m->len;
      m->data = NULL;
    }
  }
  call_detach(c, k);
  pthread_mutex_unlock(&c->mu);
  k = NULL;

out:
  if (nv != stack_nv)
    immu__free(nv);
  if (res == &scratch)
    immu__grpc_result_free(&scratch);
  return rv;
}

int immu__grpc_client_unary_async(immu__grpc_client *c, const char *path,
                                  const immu__grpc_call_opts *co,
                                  const uint8_t *req, size_t req_len,
                                  immu__grpc_done_cb cb, void *arg) {
  nghttp2_nv stack_nv[16];
  nghttp2_nv *nv = stack_nv;
  char tstr[32];
  int rv = 0;
  if (c == NULL || path == NULL || path[0] != '/' || cb == NULL ||
      (req_len > 0 && req == NULL) ||
      (co != NULL && co->nmd > 0 && co->md == NULL))
    return IMMU_EINVAL;
  if (req_len > UINT32_MAX)
    return IMMU_ETOOLARGE;
  size_t nmd = co != NULL ? co->nmd : 0;
  for (size_t i = 0; i < nmd; i++)
    if (co->md[i].key == NULL || co->md[i].value == NULL ||
        !md_key_ok(co->md[i].key) || !md_value_ok(co->md[i].value))
      return IMMU_EINVAL;
  int64_t timeout = co != NULL ? co->timeout_ms : 0;
  if (timeout == 0)
    timeout = c->default_timeout_ms;
  if (8 + nmd > sizeof stack_nv / sizeof stack_nv[0]) {
    nv = immu__malloc((8 + nmd) * sizeof *nv);
    if (nv == NULL)
      return IMMU_ENOMEM;
  }
  size_t n = request_headers(c, path, co, nmd, timeout, tstr, nv);

  call *k = immu__calloc(1, sizeof *k);
  if (k == NULL || cond_init_mono(&k->cv) != 0) {
    immu__free(k);
    rv = IMMU_ENOMEM;
    goto out;
  }
  /* The request is copied: the caller's buffer may go away at once. */
  k->own_buf = immu__malloc(req_len > 0 ? req_len : 1);
  if (k->own_buf == NULL) {
    call_free(k);
    rv = IMMU_ENOMEM;
    goto out;
  }
  if (req_len > 0)
    memcpy(k->own_buf, req, req_len);
  k->own_req.ptr = k->own_buf;
  k->own_req.len = req_len;
  k->reqs = &k->own_req;
  k->nreqs = 1;
  k->async_cb = cb;
  k->async_arg = arg;
  k->cl = c;

  nghttp2_data_provider prd;
  prd.source.ptr = k;
  prd.read_callback = req_read;
  pthread_mutex_lock(&c->mu);
  if (c->dead || c->goaway_recv ||
      !nghttp2_session_check_request_allowed(c->h2)) {
    pthread_mutex_unlock(&c->mu);
    call_free(k);
    rv = IMMU_ECLOSED;
    goto out;
  }
  int32_t sid = nghttp2_submit_request(c->h2, NULL, nv, n, &prd, k);
  if (sid < 0) {
    pthread_mutex_unlock(&c->mu);
    call_free(k);
    rv = sid == NGHTTP2_ERR_NOMEM ? IMMU_ENOMEM : IMMU_ECLOSED;
    goto out;
  }
  k->stream_id = sid;
  k->next = c->calls;
  if (c->calls != NULL)
    c->calls->prev = k;
  c->calls = k;
  send_inline(c);
  pthread_mutex_unlock(&c->mu);
out:
  if (nv != stack_nv)
    immu__free(nv);
  return rv;
}

int immu__grpc_client_call(immu__grpc_client *c, const char *path,
                           const immu__grpc_call_opts *opts,
                           const immu__grpc_msg *reqs, size_t nreqs,
                           immu__grpc_on_msg on_msg, void *arg,
                           immu__grpc_result *res) {
  return run_call(c, path, opts, reqs, nreqs, 1, on_msg, arg, NULL, NULL, res);
}

int immu__grpc_client_unary(immu__grpc_client *c, const char *path,
                            const immu__grpc_call_opts *opts,
                            const uint8_t *req, size_t req_len, uint8_t **resp,
                            size_t *resp_len, immu__grpc_result *res) {
  immu__grpc_msg m = {req, req_len};
  if (resp == NULL || resp_len == NULL)
    return IMMU_EINVAL;
  if (req == NULL && req_len == 0)
    m.ptr = (const uint8_t *)"";
  return run_call(c, path, opts, &m, 1, 0, NULL, NULL, resp, resp_len, res);
}

int immu__grpc_client_server_stream(immu__grpc_client *c, const char *path,
                                    const immu__grpc_call_opts *opts,
                                    const uint8_t *req, size_t req_len,
                                    immu__grpc_on_msg on_msg, void *arg,
                                    immu__grpc_result *res) {
  immu__grpc_msg m = {req, req_len};
  if (req == NULL && req_len == 0)
    m.ptr = (const uint8_t *)"";
  return run_call(c, path, opts, &m, 1, 1, on_msg, arg, NULL, NULL, res);
}

int immu__grpc_client_client_stream(immu__grpc_client *c, const char *path,
                                    const immu__grpc_call_opts *opts,
                                    const immu__grpc_msg *reqs, size_t nreqs,
                                    uint8_t **resp, size_t *resp_len,
                                    immu__grpc_result *res) {
  if (resp == NULL || resp_len == NULL)
    return IMMU_EINVAL;
  return run_call(c, path, opts, reqs, nreqs, 0, NULL, NULL, resp, resp_len,
                  res);
}
