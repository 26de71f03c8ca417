/* SPDX-License-Identifier: Apache-2.0 */
/*
 * gRPC transport: gRPC over HTTP/2 (nghttp2 server sessions) on a libevent
 * loop, implementing the "transport" part of server/server.h.
 *
 * Threads and ownership
 *   - One loop thread (the caller of immu_grpc_server_run) owns every socket,
 *     bufferevent, nghttp2 session and timer. Nothing else touches them.
 *   - Requests completed during one loop pass are collected (dispatch) and
 *     handed over by flush_ev, which runs after the pass's socket events:
 *     one srv->mu acquisition and at most one worker wake-up per pass.
 *     Worker threads (cfg->workers) take them from a FIFO under srv->mu and
 *     run the handlers; an idle worker is woken only when no other is
 *     already on its way, and a woken worker that leaves work queued wakes
 *     the next (wake_worker_locked), so busy workers drain the queue without
 *     any wake-up. Handlers of IMMU_GRPC_METHOD_INLINE and _TRY_INLINE
 *     methods run in flush_cb on the loop thread instead; a _TRY_INLINE
 *     handler that calls immu_grpc_call_defer is queued to the workers
 *     when it returns, keeping its handler reference.
 *   - A handler talks back only through its call: immu_grpc_call_send
 *     appends to the call's output queue and immu_grpc_call_finish records
 *     the status, both under call->mu; then the call is put on the server's
 *     "pending" list (srv->pend_mu) and the loop is woken through an eventfd,
 *     written only by the first push after the loop drained the list (from
 *     the loop thread itself, event_active without a syscall). The loop
 *     submits HEADERS, resumes the deferred data provider, or sends
 *     trailers, then writes each touched connection once.
 *   - Cleartext sockets are written directly after producing frames
 *     (conn_write_now); the bufferevent's write event is armed only when the
 *     socket is full. They are also read directly (conn_rawreadcb: one
 *     recv into the loop's buffer, no FIONREAD ioctl and no copy into an
 *     evbuffer); input left over when reading pauses waits in c->held,
 *     which is always drained first. TLS
 *     connections read and write through bufferevent_openssl.
 *   - Back-pressure: send waits on call->cv while more than OUT_HIGH_WATER
 *     bytes are queued; the data provider (loop) signals as it drains.
 *   - A call is reference counted: one reference for the loop (dropped when
 *     the stream is closed AND the worker has finished), one for the worker
 *     (from dispatch until the handler returns), one per pending-list entry,
 *     one per queued resume, and one held from immu_grpc_call_detach until
 *     the finish (srv->ndetached counts those; immu_grpc_server_free waits
 *     for it to reach 0). "Worker has finished" means the call is finished:
 *     a detached call keeps counting against its connection's busy
 *     handlers.
 *     Only the loop frees loop resources (the deadline timer), always before
 *     dropping its reference, so the last unref may run on any thread.
 *   - Cancellation (RST_STREAM, connection closed, deadline, hard stop) sets
 *     call->cancelled and broadcasts call->cv: blocked senders return
 *     IMMU_ECLOSED.
 *
 * Protections: SETTINGS_MAX_CONCURRENT_STREAMS (nghttp2 refuses extra
 * streams with REFUSED_STREAM while our SETTINGS is unacknowledged, and
 * treats a peer exceeding the acknowledged limit as a connection error,
 * GOAWAY PROTOCOL_ERROR; gRPC clients respect the limit), a header list
 * limit (64 KiB), per-message and per-call size limits, a connection cap
 * (excess sockets are closed right after accept), header and idle timeouts, a
 * stream-reset counter against HTTP/2 rapid reset (CVE-2023-44487: GOAWAY
 * ENHANCE_YOUR_CALM) and, like gRPC-Go, reading from a connection stops while
 * more handlers are running for it than it may have open streams. nghttp2's own
 * flood protections (SETTINGS/PING ack queues, CONTINUATION limits) stay at
 * their defaults.
 *
 * Stopping: immu_grpc_server_stop stores the grace period in an atomic and
 * writes one byte to a non-blocking self-pipe watched by the loop: it only
 * uses async-signal-safe operations, so it may be called from any thread and
 * directly from a signal handler.
 *
 * TLS: when cfg->ssl_ctx is set, immu_grpc_server_new installs an ALPN
 * select callback on it that accepts only "h2" (a client offering ALPN
 * without "h2" fails the handshake; a client sending no ALPN is accepted),
 * and sets SSL_OP_NO_RENEGOTIATION (RFC 9113 9.2.1). Certificates and mTLS
 * verification are the caller's (main.c) business.
 *
 * Process-wide effects of immu_grpc_server_new: evthread_use_pthreads() (so
 * call it, or this, before creating any other event_base) and SIGPIPE set to
 * SIG_IGN if it was SIG_DFL (libevent and OpenSSL write with write(2)).
 *
 * Log levels passed to cfg->log: 0 error, 1 warning, 2 info, 3 debug.
 *
 * Details of the contract in server.h:
 *   - A handler must call immu_grpc_call_finish or immu_grpc_call_detach
 *     before it returns; if it does neither, the transport finishes the call
 *     with INTERNAL and logs an error.
 *   - immu_grpc_call_add_header refuses (IMMU_EINVAL) names that are not
 *     lower-case tokens, pseudo-headers, "grpc-*", "content-type" and
 *     "immudb-uuid", and any call after the first send or the finish.
 *   - immu_grpc_call_send returns IMMU_ECLOSED once cancelled, IMMU_EINVAL
 *     after finish, IMMU_ENOMEM. Status messages are plain text: the
 *     transport percent-encodes grpc-message.
 *   - Config fields that are 0 or negative take the immu_grpc_config_init
 *     defaults. header_timeout_s closes (GOAWAY NO_ERROR) a connection that
 *     has not sent a request HEADERS that long after accept; idle_timeout_s
 *     one with no call in progress and no bytes received for that long.
 *   - immu_grpc_server_run is called once; immu_grpc_server_free after it
 *     returned (or without it ever running) and joins the workers.
 */
#include "server/server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <event2/thread.h>
#include <nghttp2/nghttp2.h>
#include <openssl/ssl.h>

#include "core/mem.h"
#include "immudb/err.h"

enum { LOG_ERROR = 0, LOG_WARN = 1, LOG_INFO = 2, LOG_DEBUG = 3 };

/* immu_grpc_call_send blocks while more than this is queued for a call. */
#define OUT_HIGH_WATER ((size_t)4 << 20)
/* Stop producing frames while a connection's socket buffer holds this. */
#define CONN_OUT_HIGH ((size_t)1 << 20)
#define CONN_OUT_LOW ((size_t)256 << 10)
/* Input is fed to nghttp2 in slices so that a pause takes effect soon. */
#define RECV_SLICE ((size_t)4096)
/* One recv of a cleartext connection (the loop's buffer). */
#define RAW_READ ((size_t)64 << 10)
/* SETTINGS_MAX_HEADER_LIST_SIZE (name + value + 32 per field). */
#define HDR_LIST_MAX ((size_t)64 << 10)
/* A peer sending this much header data past the limit is dropped. */
#define HDR_LIST_KILL (4 * HDR_LIST_MAX)
#define STREAM_WINDOW ((int32_t)1 << 20)
#define CONN_WINDOW ((int32_t)16 << 20)
/* Rapid reset: more than RST_MAX_IN_WINDOW RST_STREAMs in RST_WINDOW_MS, or
 * at least RST_RATIO_MIN resets and more than twice the completed streams. */
#define RST_WINDOW_MS 10000
#define RST_MAX_IN_WINDOW 200u
#define RST_RATIO_MIN 200u
/* Time allowed to flush a GOAWAY and linger before closing. */
#define DRAIN_TIMEOUT_MS 5000
#define LINGER_TIMEOUT_MS 1000
#define GRPC_MESSAGE_MAX 8192
#define DEADLINE_MAX_S (86400LL * 366)

/* ------------------------------------------------------------------ */
/* types                                                               */
/* ------------------------------------------------------------------ */

typedef struct out_chunk {
  struct out_chunk *next;
  size_t len;
  size_t off;
  uint8_t data[];
} out_chunk;

typedef struct msg_ref {
  size_t off;
  size_t len;
} msg_ref;

/* A list of headers (a call's request metadata, or the response headers
 * its handler adds): NUL-terminated names and values in one buffer, each
 * entry their offsets. A call used to cost one allocation per header.
 * All zero is an empty list. */
typedef struct hdr_ref {
  uint32_t name, value;
} hdr_ref;
#define HDR_INLINE 8
typedef struct hdr_list {
  hdr_ref *at; /* NULL or inl until more entries are needed */
  size_t n, cap;
  char *buf;
  size_t len, bcap;
  hdr_ref inl[HDR_INLINE];
} hdr_list;
/* First size of the request message buffer: most requests fit, and a
 * small block comes from the allocator's per-thread cache. */
#define RX_FIRST 512

typedef struct conn conn;

enum resp_state { RESP_NONE, RESP_STARTED, RESP_DONE };
enum conn_state { CONN_OPEN, CONN_DRAIN, CONN_LINGER };

struct immu_grpc_call {
  immu_grpc_server *srv;
  atomic_int refs;
  atomic_int cancelled;

  /* Request: written by the loop before dispatch, read-only afterwards. */
  const immu_grpc_method *method;
  char *path;
  char peer_ip[INET6_ADDRSTRLEN];
  int loopback;
  hdr_list md;
  uint8_t *rx;
  size_t rx_len, rx_cap;
  msg_ref *msgs; /* msg_inl until a second message */
  size_t nmsgs, cap_msgs;
  msg_ref msg_inl[1];

  /* Shared between the worker and the loop: under mu. */
  pthread_mutex_t mu;
  pthread_cond_t cv;
  out_chunk *out_head, *out_tail;
  size_t out_bytes;
  hdr_list rh;
  int sent_any;
  int finished;
  int status;
  char *message;
  int in_pending;
  int det_ref; /* detached: one reference held until finish */

  /* Under srv->mu (work queue) / srv->pend_mu (pending list). */
  immu_grpc_call *pend_next;
  immu_grpc_call *work_next;
  void (*resume_fn)(immu_grpc_call *, void *);
  void *resume_arg;

  /* Loop thread only. */
  conn *conn;
  int on_loop;  /* the handler is running on the loop thread */
  int deferred; /* ... and asked to run again on a worker */
  immu_grpc_call *cprev, *cnext;
  int32_t stream_id;
  int stream_open;
  int in_worker;
  int req_done;
  int routed;
  int got_headers;
  int hdr_overflow;
  int bad_method;
  int bad_ctype;
  int bad_timeout;
  int64_t timeout_us; /* -1: none */
  int resp;
  int rst_after_send;
  int forced_status; /* -1: none */
  const char *forced_msg;
  int final_status;
  size_t hdr_bytes;
  uint8_t pfx[5];
  size_t pfx_have;
  size_t msg_left;
  size_t call_bytes;
  struct event *deadline; /* NULL, or the timer at the end of this
                             allocation (assigned, never event_free'd) */
  struct timespec t0;
};

struct conn {
  immu_grpc_server *srv;
  conn *prev, *next;
  struct bufferevent *bev;
  nghttp2_session *h2;
  int fd;
  int tls;
  immu_grpc_call *calls;
  char peer_ip[INET6_ADDRSTRLEN];
  int loopback;
  struct event *timer;
  int64_t accepted_ms;
  int64_t last_active_ms;
  int64_t drain_deadline_ms;
  int got_headers;
  int state;
  unsigned busy;
  int reading;
  int calm;
  int64_t rst_win_start;
  unsigned rst_in_win;
  uint64_t rst_total;
  uint64_t completed;
  int dirty;
  conn *dirty_next;
  int wr_on; /* cleartext: EV_WRITE enabled because output is left over */
  struct event *rd_ev; /* cleartext: read readiness (conn_rawreadcb) */
  struct evbuffer *held; /* cleartext: input read but held by a pause (a
                            bufferevent's own input cannot be added to) */
};

struct immu_grpc_server {
  immu_grpc_config cfg;
  char *address;
  char *uuid;
  immu_grpc_method *methods;
  size_t nmethods;

  struct event_base *base;
  struct evconnlistener *lis;
  struct event *lis_retry;
  int port;
  struct event *wake_ev;
  struct event *stop_ev;
  struct event *grace_ev;
  int stop_pipe[2];
  atomic_int stop_grace;
  int stopping;
  int64_t grace_deadline_ms;

  conn *conns;
  int nconns;
  uint64_t refused;
  int64_t refused_log_ms;

  /* Work queue and worker bookkeeping, under mu. */
  pthread_mutex_t mu;
  pthread_cond_t work_cv;
  pthread_cond_t detach_cv; /* ndetached dropped to 0 */
  immu_grpc_call *work_head, *work_tail;
  int quit;
  int nidle;   /* workers blocked in work_cv */
  int nwaking; /* signalled, not yet back from the wait */
  long ndetached;
  pthread_t *threads;
  int nthreads;

  /* Completed work for the loop, under pend_mu (its own lock so that
   * finishing workers do not contend with the dispatching loop). */
  pthread_mutex_t pend_mu;
  immu_grpc_call *pend_head, *pend_tail;
  int wake_armed;
  int efd;                /* eventfd: other threads wake the loop */
  struct event *efd_ev;

  /* Loop thread only: requests routed during this loop pass, handed to
   * the workers in one go by flush_ev. */
  immu_grpc_call *batch_head, *batch_tail;
  struct event *flush_ev;
  uint8_t *rbuf; /* RAW_READ bytes: cleartext reads (loop thread) */
  /* More loops (immu_grpc_server_add_peer): the listener's owner deals
   * accepted sockets to itself and its peers in turn (loop thread). */
  immu_grpc_server **peers;
  size_t npeers;
  size_t next_peer;
  /* Sockets handed over by the owner, for this loop (adopt_mu). */
  pthread_mutex_t adopt_mu;
  struct adopted *adopt_head, *adopt_tail;
  struct event *adopt_ev;
  int adopt_mu_ok;
  size_t *mtab; /* hash of method paths: index + 1, 0 = empty */
  size_t mtab_mask;
};

/* The server whose loop runs on this thread (NULL elsewhere): lets the call
 * API avoid waking the loop through the eventfd, and never block, when it is
 * used by an inline handler. */
static _Thread_local immu_grpc_server *tl_loop;

/* ------------------------------------------------------------------ */
/* small helpers                                                       */
/* ------------------------------------------------------------------ */

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static char *xstrdup(const char *s) {
  return s ? immu__strndup(s, strlen(s)) : NULL;
}

static void slog(const immu_grpc_server *s, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void slog(const immu_grpc_server *s, int level, const char *fmt, ...) {
  static const char *const names[] = {"error", "warn", "info", "debug"};
  char buf[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  if (s->cfg.log != NULL) {
    s->cfg.log(s->cfg.log_arg, level, buf);
  } else {
    fprintf(stderr, "grpc %s: %s\n",
            names[level >= 0 && level <= LOG_DEBUG ? level : LOG_ERROR], buf);
  }
}

static void set_errmsg(char **errmsg, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void set_errmsg(char **errmsg, const char *fmt, ...) {
  char buf[512];
  va_list ap;
  if (errmsg == NULL)
    return;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  immu__free(*errmsg);
  *errmsg = xstrdup(buf);
}

static void timer_arm_ms(struct event *ev, int64_t ms) {
  struct timeval tv;
  if (ms < 0)
    ms = 0;
  tv.tv_sec = (time_t)(ms / 1000);
  tv.tv_usec = (suseconds_t)((ms % 1000) * 1000);
  event_add(ev, &tv);
}

/* Percent-encodes a grpc-message value (gRPC HTTP/2 protocol spec: bytes
 * outside 0x20..0x7E and '%' become %XX). Caller owns the result. */
static char *grpc_percent_encode(const char *msg) {
  static const char hex[] = "0123456789ABCDEF";
  size_t n = strlen(msg), i, o = 0;
  char *out;
  if (n > GRPC_MESSAGE_MAX)
    n = GRPC_MESSAGE_MAX;
  out = immu__malloc(3 * n + 1);
  if (out == NULL)
    return NULL;
  for (i = 0; i < n; i++) {
    unsigned char ch = (unsigned char)msg[i];
    if (ch >= 0x20 && ch <= 0x7e && ch != '%') {
      out[o++] = (char)ch;
    } else {
      out[o++] = '%';
      out[o++] = hex[ch >> 4];
      out[o++] = hex[ch & 15];
    }
  }
  out[o] = '\0';
  return out;
}

/* grpc-timeout: 1..8 ASCII digits and a unit (H M S m u n). Returns the
 * timeout in microseconds (capped at DEADLINE_MAX_S), or -1 if malformed. */
static int64_t parse_grpc_timeout(const uint8_t *v, size_t n) {
  int64_t x = 0, us;
  size_t i;
  if (n < 2 || n > 9)
    return -1;
  for (i = 0; i + 1 < n; i++) {
    if (v[i] < '0' || v[i] > '9')
      return -1;
    x = x * 10 + (v[i] - '0');
  }
  switch (v[n - 1]) {
  case 'H':
    us =
        x > DEADLINE_MAX_S / 3600 ? DEADLINE_MAX_S * 1000000 : x * 3600000000LL;
    break;
  case 'M':
    us = x > DEADLINE_MAX_S / 60 ? DEADLINE_MAX_S * 1000000 : x * 60000000LL;
    break;
  case 'S':
    us = x > DEADLINE_MAX_S ? DEADLINE_MAX_S * 1000000 : x * 1000000LL;
    break;
  case 'm':
    us = x * 1000;
    break;
  case 'u':
    us = x;
    break;
  case 'n':
    us = (x + 999) / 1000;
    break;
  default:
    return -1;
  }
  return us;
}

/* Appends a header to |l|. */
static int hdr_push(hdr_list *l, const char *name, size_t nlen,
                    const char *value, size_t vlen) {
  size_t need = l->len + nlen + vlen + 2;
  if (need > UINT32_MAX)
    return IMMU_ENOMEM;
  if (need > l->bcap) {
    size_t nc = l->bcap ? l->bcap * 2 : 512;
    while (nc < need)
      nc *= 2;
    char *nb = immu__realloc(l->buf, nc);
    if (nb == NULL)
      return IMMU_ENOMEM;
    l->buf = nb;
    l->bcap = nc;
  }
  if (l->at == NULL) {
    l->at = l->inl;
    l->cap = HDR_INLINE;
  }
  if (l->n == l->cap) {
    size_t nc = l->cap * 2;
    hdr_ref *na = immu__malloc(nc * sizeof *na);
    if (na == NULL)
      return IMMU_ENOMEM;
    memcpy(na, l->at, l->n * sizeof *na);
    if (l->at != l->inl)
      immu__free(l->at);
    l->at = na;
    l->cap = nc;
  }
  char *p = l->buf + l->len;
  memcpy(p, name, nlen);
  p[nlen] = '\0';
  memcpy(p + nlen + 1, value, vlen);
  p[nlen + 1 + vlen] = '\0';
  l->at[l->n].name = (uint32_t)l->len;
  l->at[l->n].value = (uint32_t)(l->len + nlen + 1);
  l->n++;
  l->len = need;
  return 0;
}

static const char *hdr_name(const hdr_list *l, size_t i) {
  return l->buf + l->at[i].name;
}

static const char *hdr_value(const hdr_list *l, size_t i) {
  return l->buf + l->at[i].value;
}

static void hdr_free(hdr_list *l) {
  if (l->at != l->inl)
    immu__free(l->at);
  immu__free(l->buf);
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

static void format_peer(const struct sockaddr *sa, char *out, size_t n,
                        int *loopback) {
  *loopback = 0;
  out[0] = '\0';
  if (sa->sa_family == AF_INET) {
    const struct sockaddr_in *in4 =
        (const struct sockaddr_in *)(const void *)sa;
    inet_ntop(AF_INET, &in4->sin_addr, out, (socklen_t)n);
    *loopback = (ntohl(in4->sin_addr.s_addr) >> 24) == 127;
  } else if (sa->sa_family == AF_INET6) {
    const struct sockaddr_in6 *in6 =
        (const struct sockaddr_in6 *)(const void *)sa;
    if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) {
      struct in_addr a4;
      memcpy(&a4, in6->sin6_addr.s6_addr + 12, 4);
      inet_ntop(AF_INET, &a4, out, (socklen_t)n);
      *loopback = in6->sin6_addr.s6_addr[12] == 127;
    } else {
      inet_ntop(AF_INET6, &in6->sin6_addr, out, (socklen_t)n);
      *loopback = IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr);
    }
  }
}

/* ------------------------------------------------------------------ */
/* calls: lifetime                                                     */
/* ------------------------------------------------------------------ */

/* The deadline timer lives at the end of the call's allocation: a call
 * with a grpc-timeout then costs no allocation of its own for it. */
static size_t call_alloc_size(void) {
  size_t a = _Alignof(max_align_t);
  return (sizeof(immu_grpc_call) + a - 1) / a * a + event_get_struct_event_size();
}

static struct event *call_timer(immu_grpc_call *k) {
  size_t a = _Alignof(max_align_t);
  return (struct event *)(void *)((char *)k +
                                  (sizeof(immu_grpc_call) + a - 1) / a * a);
}

static immu_grpc_call *call_new(conn *c, int32_t stream_id) {
  immu_grpc_call *k = immu__calloc(1, call_alloc_size());
  if (k == NULL)
    return NULL;
  if (pthread_mutex_init(&k->mu, NULL) != 0) {
    immu__free(k);
    return NULL;
  }
  if (pthread_cond_init(&k->cv, NULL) != 0) {
    pthread_mutex_destroy(&k->mu);
    immu__free(k);
    return NULL;
  }
  k->srv = c->srv;
  atomic_init(&k->refs, 1);
  atomic_init(&k->cancelled, 0);
  memcpy(k->peer_ip, c->peer_ip, sizeof k->peer_ip);
  k->loopback = c->loopback;
  k->conn = c;
  k->stream_id = stream_id;
  k->stream_open = 1;
  k->timeout_us = -1;
  k->msgs = k->msg_inl;
  k->cap_msgs = 1;
  k->forced_status = -1;
  k->final_status = IMMU_GRPC_CANCELLED;
  clock_gettime(CLOCK_MONOTONIC, &k->t0);
  k->cnext = c->calls;
  if (c->calls != NULL)
    c->calls->cprev = k;
  c->calls = k;
  return k;
}

static void call_free(immu_grpc_call *k) {
  out_chunk *ch = k->out_head;
  while (ch != NULL) {
    out_chunk *nx = ch->next;
    immu__free(ch);
    ch = nx;
  }
  hdr_free(&k->md);
  hdr_free(&k->rh);
  immu__free(k->path);
  immu__free(k->rx);
  if (k->msgs != k->msg_inl)
    immu__free(k->msgs);
  immu__free(k->message);
  pthread_cond_destroy(&k->cv);
  pthread_mutex_destroy(&k->mu);
  immu__free(k);
}

static void call_unref(immu_grpc_call *k) {
  if (atomic_fetch_sub(&k->refs, 1) == 1)
    call_free(k);
}

/* Marks the call cancelled and wakes a worker blocked in send. */
static void call_cancel(immu_grpc_call *k) {
  pthread_mutex_lock(&k->mu);
  atomic_store(&k->cancelled, 1);
  pthread_cond_broadcast(&k->cv);
  pthread_mutex_unlock(&k->mu);
}

/* Puts |k| on the loop's pending list (takes a reference) and wakes the loop.
 * Called by whoever set k->in_pending, without k->mu held. Only the first
 * push after the loop drained the list wakes it (wake_armed), so a burst of
 * completions costs one eventfd write; on the loop thread itself the wake is
 * a plain event_active (no syscall, and no libevent lock shared with
 * workers on the other path). */
static void pending_push(immu_grpc_server *s, immu_grpc_call *k) {
  int arm;
  atomic_fetch_add(&k->refs, 1);
  pthread_mutex_lock(&s->pend_mu);
  k->pend_next = NULL;
  if (s->pend_tail != NULL)
    s->pend_tail->pend_next = k;
  else
    s->pend_head = k;
  s->pend_tail = k;
  arm = !s->wake_armed;
  s->wake_armed = 1;
  pthread_mutex_unlock(&s->pend_mu);
  if (!arm)
    return;
  if (tl_loop == s) {
    event_active(s->wake_ev, EV_READ, 0);
  } else {
    uint64_t one = 1;
    ssize_t w = write(s->efd, &one, sizeof one);
    (void)w; /* only fails when the counter is saturated: still readable */
  }
}

/* Under s->mu: decides to wake one idle worker unless one is already on
 * its way; returns 1 if the caller must pthread_cond_signal(work_cv) once
 * it released s->mu (signalling under the lock made the woken worker
 * block on the mutex right away: a futex wait and wake more per call). A
 * woken worker that leaves work behind wakes the next (worker_main), so a
 * burst fans out one worker at a time and only as far as the queue stays
 * non-empty: workers busy in handlers pick queued calls up without any
 * wake-up at all. */
static int wake_worker_locked(immu_grpc_server *s) {
  if (s->work_head != NULL && s->nwaking == 0 && s->nidle > 0) {
    s->nwaking++;
    return 1;
  }
  return 0;
}

/* Loop: the stream is gone (closed by nghttp2 or the connection died). */
static void call_stream_closed(conn *c, immu_grpc_call *k,
                               uint32_t error_code) {
  immu_grpc_server *s = c->srv;
  if (!k->stream_open)
    return;
  k->stream_open = 0;
  if (k->deadline != NULL) {
    event_del(k->deadline);
    k->deadline = NULL;
  }
  if (k->resp == RESP_DONE && error_code == NGHTTP2_NO_ERROR)
    c->completed++;
  if (k->resp != RESP_DONE)
    k->final_status = IMMU_GRPC_CANCELLED;
  call_cancel(k);
  if (k->got_headers && k->path != NULL && s->cfg.on_call_done != NULL) {
    struct timespec t1;
    double secs;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    secs = (double)(t1.tv_sec - k->t0.tv_sec) +
           (double)(t1.tv_nsec - k->t0.tv_nsec) / 1e9;
    s->cfg.on_call_done(s->cfg.on_call_done_arg, k->path, k->final_status, secs,
                        k->peer_ip);
  }
}

/* Loop: drops the loop's reference once neither the stream nor a worker
 * needs the call. */
static void call_maybe_release(conn *c, immu_grpc_call *k) {
  if (k->stream_open || k->in_worker || k->conn == NULL)
    return;
  if (k->cprev != NULL)
    k->cprev->cnext = k->cnext;
  else
    c->calls = k->cnext;
  if (k->cnext != NULL)
    k->cnext->cprev = k->cprev;
  k->cprev = k->cnext = NULL;
  k->conn = NULL;
  call_unref(k);
}

/* ------------------------------------------------------------------ */
/* responses (loop thread)                                             */
/* ------------------------------------------------------------------ */

/* Every reply carries one or two of these: the gRPC codes and 200 come
 * from a table instead of a printf per call. */
static const char *status_str(int st, char buf[16]) {
  static const char *const codes[] = {"0",  "1",  "2",  "3",  "4",  "5",
                                      "6",  "7",  "8",  "9",  "10", "11",
                                      "12", "13", "14", "15", "16"};
  if (st >= 0 && st < (int)(sizeof codes / sizeof codes[0]))
    return codes[st];
  if (st == 200)
    return "200";
  snprintf(buf, 16, "%d", st);
  return buf;
}

/* Sends a trailers-only response: HEADERS with END_STREAM carrying the
 * status. |rh| are handler headers (may be NULL). If the request is still
 * arriving once the HEADERS is out, the stream is reset with NO_ERROR
 * (RFC 9113 8.1) by on_frame_send: submitting the RST_STREAM now would make
 * nghttp2 drop the queued HEADERS. */
static void send_trailers_only(conn *c, immu_grpc_call *k, int http_status,
                               int gstatus, const char *msg,
                               const hdr_list *rh) {
  immu_grpc_server *s = c->srv;
  char hs[16], gs[16];
  char *enc = NULL;
  nghttp2_nv stack_nv[16];
  nghttp2_nv *nv = stack_nv;
  size_t nrh = rh != NULL ? rh->n : 0, n = 0, i, need = 5 + nrh;

  if (k->resp == RESP_DONE)
    return;
  if (need > sizeof stack_nv / sizeof stack_nv[0]) {
    nv = immu__malloc(need * sizeof *nv);
    if (nv == NULL) {
      nghttp2_submit_rst_stream(c->h2, NGHTTP2_FLAG_NONE, k->stream_id,
                                NGHTTP2_INTERNAL_ERROR);
      k->resp = RESP_DONE;
      k->final_status = IMMU_GRPC_INTERNAL;
      return;
    }
  }
  nv[n++] = mknv(":status", status_str(http_status, hs));
  nv[n++] = mknv("content-type", "application/grpc");
  if (s->uuid != NULL)
    nv[n++] = mknv("immudb-uuid", s->uuid);
  for (i = 0; i < nrh; i++)
    nv[n++] = mknv(hdr_name(rh, i), hdr_value(rh, i));
  nv[n++] = mknv("grpc-status", status_str(gstatus, gs));
  if (msg != NULL && msg[0] != '\0') {
    enc = grpc_percent_encode(msg);
    if (enc != NULL)
      nv[n++] = mknv("grpc-message", enc);
  }
  if (nghttp2_submit_response(c->h2, k->stream_id, nv, n, NULL) != 0)
    nghttp2_submit_rst_stream(c->h2, NGHTTP2_FLAG_NONE, k->stream_id,
                              NGHTTP2_INTERNAL_ERROR);
  else
    k->rst_after_send = 1; /* see on_frame_send */
  immu__free(enc);
  if (nv != stack_nv)
    immu__free(nv);
  k->resp = RESP_DONE;
  k->final_status = gstatus;
}

/* Loop: fails a call from the transport side (limits, routing, deadline). */
static void call_reject(conn *c, immu_grpc_call *k, int http_status,
                        int gstatus, const char *msg) {
  if (k->resp == RESP_NONE) {
    send_trailers_only(c, k, http_status, gstatus, msg, NULL);
  } else if (k->resp == RESP_STARTED && k->forced_status < 0) {
    k->forced_status = gstatus;
    k->forced_msg = msg; /* static strings only on this path */
    nghttp2_session_resume_data(c->h2, k->stream_id);
  }
  call_cancel(k);
}

static void submit_trailers(nghttp2_session *h2, immu_grpc_call *k, int gstatus,
                            const char *msg) {
  char gs[16];
  char *enc = NULL;
  nghttp2_nv nv[2];
  size_t n = 0;
  nv[n++] = mknv("grpc-status", status_str(gstatus, gs));
  if (msg != NULL && msg[0] != '\0') {
    enc = grpc_percent_encode(msg);
    if (enc != NULL)
      nv[n++] = mknv("grpc-message", enc);
  }
  if (nghttp2_submit_trailer(h2, k->stream_id, nv, n) != 0)
    nghttp2_submit_rst_stream(h2, NGHTTP2_FLAG_NONE, k->stream_id,
                              NGHTTP2_INTERNAL_ERROR);
  immu__free(enc);
  k->resp = RESP_DONE;
  k->final_status = gstatus;
}

static void drop_out_queue(immu_grpc_call *k) {
  out_chunk *ch = k->out_head;
  while (ch != NULL) {
    out_chunk *nx = ch->next;
    immu__free(ch);
    ch = nx;
  }
  k->out_head = k->out_tail = NULL;
  k->out_bytes = 0;
  pthread_cond_broadcast(&k->cv);
}

/* nghttp2 data provider: drains the call's output queue; DEFERRED when it is
 * empty and the handler has not finished; EOF + trailers at the end. */
static ssize_t data_read_cb(nghttp2_session *h2, int32_t stream_id,
                            uint8_t *buf, size_t length, uint32_t *flags,
                            nghttp2_data_source *source, void *user_data) {
  immu_grpc_call *k = source->ptr;
  size_t got = 0;
  int eof = 0, st = IMMU_GRPC_OK;
  char *msg = NULL;
  const char *smsg = NULL;
  (void)stream_id;
  (void)user_data;

  pthread_mutex_lock(&k->mu);
  if (k->forced_status >= 0) {
    drop_out_queue(k);
    eof = 1;
    st = k->forced_status;
    smsg = k->forced_msg;
  } else {
    int was_high = k->out_bytes > OUT_HIGH_WATER;
    while (got < length && k->out_head != NULL) {
      out_chunk *ch = k->out_head;
      size_t take = ch->len - ch->off;
      if (take > length - got)
        take = length - got;
      memcpy(buf + got, ch->data + ch->off, take);
      ch->off += take;
      got += take;
      k->out_bytes -= take;
      if (ch->off == ch->len) {
        k->out_head = ch->next;
        if (k->out_head == NULL)
          k->out_tail = NULL;
        immu__free(ch);
      }
    }
    if (was_high && k->out_bytes <= OUT_HIGH_WATER)
      pthread_cond_broadcast(&k->cv);
    if (k->out_head == NULL && k->finished) {
      eof = 1;
      st = k->status;
      msg = k->message;
      k->message = NULL;
    }
  }
  pthread_mutex_unlock(&k->mu);

  if (!eof) {
    if (got == 0)
      return NGHTTP2_ERR_DEFERRED;
    return (ssize_t)got;
  }
  *flags |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_END_STREAM;
  submit_trailers(h2, k, st, msg != NULL ? msg : smsg);
  immu__free(msg);
  return (ssize_t)got;
}

/* Loop: first response activity of a dispatched call (data or finish). */
static void submit_response(conn *c, immu_grpc_call *k) {
  immu_grpc_server *s = c->srv;
  nghttp2_nv stack_nv[16];
  nghttp2_nv *nv = stack_nv;
  nghttp2_data_provider prd;
  size_t n = 0, i;
  char hs[16];
  int rv;

  pthread_mutex_lock(&k->mu);
  if (k->finished && k->out_head == NULL) {
    int st = k->status;
    char *msg = k->message;
    k->message = NULL;
    send_trailers_only(c, k, 200, st, msg, &k->rh);
    pthread_mutex_unlock(&k->mu);
    immu__free(msg);
    return;
  }
  if (3 + k->rh.n > sizeof stack_nv / sizeof stack_nv[0]) {
    nv = immu__malloc((3 + k->rh.n) * sizeof *nv);
    if (nv == NULL) {
      pthread_mutex_unlock(&k->mu);
      call_reject(c, k, 200, IMMU_GRPC_RESOURCE_EXHAUSTED, "out of memory");
      return;
    }
  }
  nv[n++] = mknv(":status", status_str(200, hs));
  nv[n++] = mknv("content-type", "application/grpc");
  if (s->uuid != NULL)
    nv[n++] = mknv("immudb-uuid", s->uuid);
  for (i = 0; i < k->rh.n; i++)
    nv[n++] = mknv(hdr_name(&k->rh, i), hdr_value(&k->rh, i));
  prd.source.ptr = k;
  prd.read_callback = data_read_cb;
  rv = nghttp2_submit_response(c->h2, k->stream_id, nv, n, &prd);
  pthread_mutex_unlock(&k->mu);
  if (nv != stack_nv)
    immu__free(nv);
  if (rv != 0) {
    nghttp2_submit_rst_stream(c->h2, NGHTTP2_FLAG_NONE, k->stream_id,
                              NGHTTP2_INTERNAL_ERROR);
    k->resp = RESP_DONE;
    k->final_status = IMMU_GRPC_INTERNAL;
    call_cancel(k);
    return;
  }
  k->resp = RESP_STARTED;
}

/* ------------------------------------------------------------------ */
/* connections                                                         */
/* ------------------------------------------------------------------ */

static void maybe_finish_stop(immu_grpc_server *s) {
  if (s->stopping && s->nconns == 0)
    event_base_loopbreak(s->base);
}

static void conn_free(conn *c) {
  immu_grpc_server *s = c->srv;
  immu_grpc_call *k = c->calls;
  while (k != NULL) {
    immu_grpc_call *nx = k->cnext;
    call_stream_closed(c, k, NGHTTP2_CANCEL);
    k->in_worker = 0;
    call_maybe_release(c, k);
    k = nx;
  }
  nghttp2_session_del(c->h2);
  if (c->rd_ev != NULL)
    event_free(c->rd_ev);
  if (c->held != NULL)
    evbuffer_free(c->held);
  if (c->bev != NULL)
    bufferevent_free(c->bev); /* closes the socket (and frees the SSL) */
  if (c->timer != NULL)
    event_free(c->timer);
  if (c->prev != NULL)
    c->prev->next = c->next;
  else
    s->conns = c->next;
  if (c->next != NULL)
    c->next->prev = c->prev;
  s->nconns--;
  immu__free(c);
  maybe_finish_stop(s);
}

/* Moves frames from nghttp2 to the socket buffer, up to CONN_OUT_HIGH. */
static int conn_flush(conn *c) {
  struct evbuffer *out = bufferevent_get_output(c->bev);
  while (evbuffer_get_length(out) < CONN_OUT_HIGH) {
    const uint8_t *data;
    ssize_t n = nghttp2_session_mem_send(c->h2, &data);
    if (n < 0) {
      slog(c->srv, LOG_DEBUG, "peer %s: nghttp2 send: %s", c->peer_ip,
           nghttp2_strerror((int)n));
      return -1;
    }
    if (n == 0)
      break;
    if (evbuffer_add(out, data, (size_t)n) != 0)
      return -1;
  }
  return 0;
}

/* Cleartext: writes the output buffer to the socket now instead of through
 * the bufferevent's write event, which would cost an epoll_ctl to arm it, a
 * loop pass to fire it and an epoll_ctl to disarm it for every response.
 * EV_WRITE stays disabled (so adding output does not arm it) unless the
 * socket could not take everything. Returns -1 on a socket error. */
static int conn_write_now(conn *c) {
  struct evbuffer *out = bufferevent_get_output(c->bev);
  int left;
  while (evbuffer_get_length(out) > 0) {
    int n;
    /* The bufferevent freezes the front of its output buffer so that only
     * it drains it; we drain it here, on the same thread, like it does. */
    evbuffer_unfreeze(out, 1);
    n = evbuffer_write(out, c->fd);
    evbuffer_freeze(out, 1);
    if (n < 0) {
      int err = EVUTIL_SOCKET_ERROR();
      if (err == EAGAIN || err == EWOULDBLOCK || err == EINTR)
        break;
      slog(c->srv, LOG_DEBUG, "peer %s: write: %s", c->peer_ip,
           evutil_socket_error_to_string(err));
      return -1;
    }
    if (n == 0)
      break;
  }
  left = evbuffer_get_length(out) > 0;
  if (left && !c->wr_on) {
    c->wr_on = 1;
    bufferevent_enable(c->bev, EV_WRITE);
  } else if (!left && c->wr_on) {
    c->wr_on = 0;
    bufferevent_disable(c->bev, EV_WRITE);
  }
  return 0;
}

static void conn_arm_timer(conn *c) {
  immu_grpc_server *s = c->srv;
  int64_t now = now_ms(), at;
  if (c->state != CONN_OPEN) {
    at = c->drain_deadline_ms;
  } else {
    at = c->last_active_ms + (int64_t)s->cfg.idle_timeout_s * 1000;
    if (!c->got_headers) {
      int64_t h = c->accepted_ms + (int64_t)s->cfg.header_timeout_s * 1000;
      if (h < at)
        at = h;
    }
  }
  timer_arm_ms(c->timer, at - now);
}

static void conn_start_drain(conn *c) {
  if (c->state != CONN_OPEN)
    return;
  c->state = CONN_DRAIN;
  c->drain_deadline_ms = now_ms() + DRAIN_TIMEOUT_MS;
  bufferevent_setwatermark(c->bev, EV_WRITE, 0, 0);
  /* read and discard */
  if (c->rd_ev == NULL)
    bufferevent_enable(c->bev, EV_READ);
  else if (!c->reading)
    event_add(c->rd_ev, NULL);
  c->reading = 1;
  conn_arm_timer(c);
}

/* After any event: flushes, and closes the connection when the session is
 * done. Returns 1 if |c| was freed. Never call it from an nghttp2 callback. */
static int conn_check(conn *c) {
  if (c->state == CONN_OPEN) {
    if (conn_flush(c) != 0) {
      conn_free(c);
      return 1;
    }
    if (!nghttp2_session_want_read(c->h2) && !nghttp2_session_want_write(c->h2))
      conn_start_drain(c);
  }
  if (!c->tls && c->state != CONN_LINGER && conn_write_now(c) != 0) {
    conn_free(c);
    return 1;
  }
  if (c->state == CONN_DRAIN &&
      evbuffer_get_length(bufferevent_get_output(c->bev)) == 0) {
    if (c->tls) {
      conn_free(c);
      return 1;
    }
    /* Lingering close: FIN, then read until EOF so unread input does not
     * turn into a TCP RST that could destroy the GOAWAY in flight. */
    shutdown(c->fd, SHUT_WR);
    c->state = CONN_LINGER;
    if (c->drain_deadline_ms > now_ms() + LINGER_TIMEOUT_MS)
      c->drain_deadline_ms = now_ms() + LINGER_TIMEOUT_MS;
    conn_arm_timer(c);
  }
  return 0;
}

/* Where input waits to be fed to nghttp2. */
static struct evbuffer *conn_input(conn *c) {
  return c->held != NULL ? c->held : bufferevent_get_input(c->bev);
}

/* Pauses reading while more handlers run for this connection than it may
 * have open streams (only possible when reset streams still have running
 * handlers): the rapid-reset mitigation of gRPC-Go. */
static void conn_update_read(conn *c) {
  immu_grpc_server *s = c->srv;
  int want;
  if (c->state != CONN_OPEN)
    return;
  want = c->busy <= s->cfg.max_concurrent_streams;
  if (want && !c->reading) {
    c->reading = 1;
    if (c->rd_ev != NULL) {
      event_add(c->rd_ev, NULL);
      /* Input read before the pause may be all there is: the socket
       * itself may never become readable again. */
      if (evbuffer_get_length(conn_input(c)) > 0)
        event_active(c->rd_ev, EV_READ, 0);
    } else {
      bufferevent_enable(c->bev, EV_READ);
    }
  } else if (!want && c->reading) {
    c->reading = 0;
    if (c->rd_ev != NULL)
      event_del(c->rd_ev);
    else
      bufferevent_disable(c->bev, EV_READ);
  }
}

/* Feeds buffered input to nghttp2. Returns 1 if |c| was freed. */
static int conn_process_input(conn *c) {
  struct evbuffer *in = conn_input(c);
  size_t len;
  while ((len = evbuffer_get_length(in)) > 0) {
    size_t n = len < RECV_SLICE ? len : RECV_SLICE;
    unsigned char *p;
    ssize_t r;
    if (c->state != CONN_OPEN || !nghttp2_session_want_read(c->h2)) {
      evbuffer_drain(in, len);
      break;
    }
    if (!c->reading)
      break;
    p = evbuffer_pullup(in, (ssize_t)n);
    if (p == NULL) {
      conn_free(c);
      return 1;
    }
    r = nghttp2_session_mem_recv(c->h2, p, n);
    if (r < 0) {
      slog(c->srv, r == NGHTTP2_ERR_BAD_CLIENT_MAGIC ? LOG_DEBUG : LOG_WARN,
           "peer %s: closing connection: %s", c->peer_ip,
           nghttp2_strerror((int)r));
      conn_free(c);
      return 1;
    }
    evbuffer_drain(in, (size_t)r);
  }
  return 0;
}

static void conn_readcb(struct bufferevent *bev, void *arg) {
  conn *c = arg;
  c->last_active_ms = now_ms();
  if (c->state != CONN_OPEN) {
    struct evbuffer *in = bufferevent_get_input(bev);
    evbuffer_drain(in, evbuffer_get_length(in));
    return;
  }
  if (conn_process_input(c))
    return;
  conn_check(c);
}

/* Cleartext: reads what the socket has straight into the loop's buffer and
 * feeds nghttp2 in RECV_SLICE slices, as conn_process_input does. If
 * reading pauses midway, the rest goes to c->held, which
 * conn_process_input drains first when reading resumes (and before newer
 * bytes, here, if any are there). */
static void conn_rawreadcb(evutil_socket_t fd, short what, void *arg) {
  conn *c = arg;
  immu_grpc_server *s = c->srv;
  struct evbuffer *in = c->held;
  const uint8_t *p = s->rbuf;
  ssize_t n;
  size_t left;
  (void)what;
  do {
    n = recv(fd, s->rbuf, RAW_READ, 0);
  } while (n < 0 && errno == EINTR);
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
    /* Activated by conn_update_read for input held over a pause. */
    if (c->state == CONN_OPEN && c->reading && evbuffer_get_length(in) > 0 &&
        conn_process_input(c) == 0)
      conn_check(c);
    return;
  }
  if (n <= 0) {
    if (n < 0)
      slog(s, LOG_DEBUG, "peer %s: recv: %s", c->peer_ip, strerror(errno));
    conn_free(c);
    return;
  }
  c->last_active_ms = now_ms();
  if (c->state != CONN_OPEN)
    return; /* draining or lingering: input is dropped, as conn_readcb */
  left = (size_t)n;
  if (evbuffer_get_length(in) > 0) {
    /* Older bytes wait there: keep the order. */
    if (evbuffer_add(in, p, left) != 0) {
      conn_free(c);
      return;
    }
    if (conn_process_input(c))
      return;
    conn_check(c);
    return;
  }
  while (left > 0) {
    size_t k = left < RECV_SLICE ? left : RECV_SLICE;
    ssize_t r;
    if (c->state != CONN_OPEN || !nghttp2_session_want_read(c->h2))
      break; /* dropped, as conn_process_input does */
    if (!c->reading) {
      if (evbuffer_add(in, p, left) != 0) {
        conn_free(c);
        return;
      }
      break;
    }
    r = nghttp2_session_mem_recv(c->h2, p, k);
    if (r < 0) {
      slog(s, r == NGHTTP2_ERR_BAD_CLIENT_MAGIC ? LOG_DEBUG : LOG_WARN,
           "peer %s: closing connection: %s", c->peer_ip,
           nghttp2_strerror((int)r));
      conn_free(c);
      return;
    }
    p += r;
    left -= (size_t)r;
  }
  conn_check(c);
}

static void conn_writecb(struct bufferevent *bev, void *arg) {
  (void)bev;
  conn_check(arg);
}

static void conn_eventcb(struct bufferevent *bev, short what, void *arg) {
  conn *c = arg;
  if (what & BEV_EVENT_CONNECTED) {
    SSL *ssl = bufferevent_openssl_get_ssl(bev);
    const unsigned char *proto = NULL;
    unsigned plen = 0;
    if (ssl != NULL)
      SSL_get0_alpn_selected(ssl, &proto, &plen);
    if (plen != 0 && !(plen == 2 && memcmp(proto, "h2", 2) == 0)) {
      slog(c->srv, LOG_DEBUG, "peer %s: ALPN is not h2", c->peer_ip);
      conn_free(c);
    }
    return;
  }
  if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR | BEV_EVENT_TIMEOUT)) {
    if ((what & BEV_EVENT_ERROR) && c->tls) {
      unsigned long e = bufferevent_get_openssl_error(bev);
      if (e != 0)
        slog(c->srv, LOG_DEBUG, "peer %s: TLS error %lu", c->peer_ip, e);
    }
    conn_free(c);
  }
}

static void conn_terminate(conn *c, uint32_t code) {
  if (c->state == CONN_OPEN)
    nghttp2_session_terminate_session(c->h2, code);
}

static void conn_timercb(evutil_socket_t fd, short what, void *arg) {
  conn *c = arg;
  immu_grpc_server *s = c->srv;
  int64_t now = now_ms();
  (void)fd;
  (void)what;
  if (c->state != CONN_OPEN) {
    if (now >= c->drain_deadline_ms) {
      conn_free(c);
      return;
    }
  } else if (!c->got_headers &&
             now >= c->accepted_ms + (int64_t)s->cfg.header_timeout_s * 1000) {
    slog(s, LOG_DEBUG, "peer %s: no request within %d s, closing", c->peer_ip,
         s->cfg.header_timeout_s);
    conn_terminate(c, NGHTTP2_NO_ERROR);
  } else if (c->calls == NULL &&
             now >= c->last_active_ms + (int64_t)s->cfg.idle_timeout_s * 1000) {
    slog(s, LOG_DEBUG, "peer %s: idle for %d s, closing", c->peer_ip,
         s->cfg.idle_timeout_s);
    conn_terminate(c, NGHTTP2_NO_ERROR);
  } else if (c->calls != NULL) {
    c->last_active_ms = now; /* streams in progress: not idle */
  }
  if (conn_check(c))
    return;
  conn_arm_timer(c);
}

/* ------------------------------------------------------------------ */
/* request side (nghttp2 callbacks, loop thread)                       */
/* ------------------------------------------------------------------ */

static void note_reset(conn *c) {
  immu_grpc_server *s = c->srv;
  int64_t now = now_ms();
  if (now - c->rst_win_start >= RST_WINDOW_MS) {
    c->rst_win_start = now;
    c->rst_in_win = 0;
  }
  c->rst_in_win++;
  c->rst_total++;
  if (c->calm)
    return;
  if (c->rst_in_win > RST_MAX_IN_WINDOW ||
      (c->rst_total >= RST_RATIO_MIN && c->rst_total > 2 * c->completed)) {
    c->calm = 1;
    slog(s, LOG_WARN,
         "peer %s: %llu stream resets (%u in the last %d s, %llu completed "
         "streams): GOAWAY ENHANCE_YOUR_CALM",
         c->peer_ip, (unsigned long long)c->rst_total, c->rst_in_win,
         RST_WINDOW_MS / 1000, (unsigned long long)c->completed);
    nghttp2_session_terminate_session(c->h2, NGHTTP2_ENHANCE_YOUR_CALM);
  }
}

static int on_begin_headers(nghttp2_session *h2, const nghttp2_frame *frame,
                            void *user_data) {
  conn *c = user_data;
  immu_grpc_call *k;
  if (frame->hd.type != NGHTTP2_HEADERS ||
      frame->headers.cat != NGHTTP2_HCAT_REQUEST)
    return 0;
  k = call_new(c, frame->hd.stream_id);
  if (k == NULL)
    return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
  nghttp2_session_set_stream_user_data(h2, frame->hd.stream_id, k);
  return 0;
}

static int content_type_ok(const uint8_t *v, size_t n) {
  static const char base[] = "application/grpc";
  size_t bl = sizeof base - 1;
  if (n < bl || memcmp(v, base, bl) != 0)
    return 0;
  return n == bl || v[bl] == '+' || v[bl] == ';';
}

static int on_header(nghttp2_session *h2, const nghttp2_frame *frame,
                     const uint8_t *name, size_t namelen, const uint8_t *value,
                     size_t valuelen, uint8_t flags, void *user_data) {
  immu_grpc_call *k;
  (void)flags;
  (void)user_data;
  if (frame->hd.type != NGHTTP2_HEADERS)
    return 0;
  k = nghttp2_session_get_stream_user_data(h2, frame->hd.stream_id);
  if (k == NULL)
    return 0;
  k->hdr_bytes += namelen + valuelen + 32;
  if (k->hdr_bytes > HDR_LIST_MAX) {
    k->hdr_overflow = 1;
    if (k->hdr_bytes > HDR_LIST_KILL)
      return NGHTTP2_ERR_CALLBACK_FAILURE; /* header flood: drop the peer */
    return 0;
  }
  if (frame->headers.cat != NGHTTP2_HCAT_REQUEST)
    return 0; /* request trailers: counted, ignored */
  if (namelen > 0 && name[0] == ':') {
    if (namelen == 5 && memcmp(name, ":path", 5) == 0) {
      immu__free(k->path);
      k->path = immu__strndup((const char *)value, valuelen);
      if (k->path == NULL)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    } else if (namelen == 7 && memcmp(name, ":method", 7) == 0) {
      k->bad_method = !(valuelen == 4 && memcmp(value, "POST", 4) == 0);
    }
    return 0;
  }
  if (namelen == 12 && memcmp(name, "content-type", 12) == 0) {
    k->bad_ctype = !content_type_ok(value, valuelen);
    return 0;
  }
  if (namelen == 12 && memcmp(name, "grpc-timeout", 12) == 0) {
    k->timeout_us = parse_grpc_timeout(value, valuelen);
    k->bad_timeout = k->timeout_us < 0;
    return 0;
  }
  if (hdr_push(&k->md, (const char *)name, namelen, (const char *)value,
               valuelen) != 0)
    return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
  return 0;
}

static void deadline_cb(evutil_socket_t fd, short what, void *arg) {
  immu_grpc_call *k = arg;
  conn *c = k->conn;
  (void)fd;
  (void)what;
  slog(c->srv, LOG_DEBUG, "peer %s: %s: deadline exceeded", c->peer_ip,
       k->path);
  call_reject(c, k, 200, IMMU_GRPC_DEADLINE_EXCEEDED,
              "context deadline exceeded");
  conn_check(c);
}

static size_t path_hash(const char *p) {
  uint64_t h = 1469598103934665603ULL; /* FNV-1a */
  for (; *p; p++)
    h = (h ^ (unsigned char)*p) * 1099511628211ULL;
  return (size_t)(h ^ (h >> 29));
}

/* Open-addressing table of method paths (a linear strcmp over the ~100
 * ImmuService methods showed up in profiles). First entry wins, as the
 * linear search did. */
static int mtab_build(immu_grpc_server *s) {
  size_t cap = 16, i;
  while (cap < 2 * s->nmethods + 2)
    cap *= 2;
  s->mtab = immu__calloc(cap, sizeof *s->mtab);
  if (s->mtab == NULL)
    return IMMU_ENOMEM;
  s->mtab_mask = cap - 1;
  for (i = 0; i < s->nmethods; i++) {
    size_t h = path_hash(s->methods[i].path) & s->mtab_mask;
    int dup = 0;
    while (s->mtab[h] != 0) {
      if (strcmp(s->methods[s->mtab[h] - 1].path, s->methods[i].path) == 0)
        dup = 1;
      h = (h + 1) & s->mtab_mask;
    }
    if (!dup)
      s->mtab[h] = i + 1;
  }
  return 0;
}

static const immu_grpc_method *find_method(const immu_grpc_server *s,
                                           const char *path) {
  size_t h = path_hash(path) & s->mtab_mask;
  while (s->mtab[h] != 0) {
    const immu_grpc_method *m = &s->methods[s->mtab[h] - 1];
    if (strcmp(m->path, path) == 0)
      return m;
    h = (h + 1) & s->mtab_mask;
  }
  return NULL;
}

/* End of the request HEADERS: validate and route. */
static void headers_complete(conn *c, immu_grpc_call *k) {
  immu_grpc_server *s = c->srv;
  k->got_headers = 1;
  if (k->path == NULL) {
    /* nghttp2's HTTP checks guarantee :path; keep metrics sane anyway. */
    k->path = xstrdup("");
    call_reject(c, k, 400, IMMU_GRPC_INTERNAL, "missing :path");
    return;
  }
  if (k->hdr_overflow) {
    call_reject(c, k, 200, IMMU_GRPC_RESOURCE_EXHAUSTED,
                "header list size exceeds the limit");
    return;
  }
  if (k->bad_method) {
    call_reject(c, k, 405, IMMU_GRPC_UNIMPLEMENTED, "method must be POST");
    return;
  }
  if (k->bad_ctype) {
    call_reject(c, k, 415, IMMU_GRPC_INTERNAL,
                "invalid gRPC request content-type");
    return;
  }
  if (k->bad_timeout) {
    call_reject(c, k, 200, IMMU_GRPC_INTERNAL, "malformed grpc-timeout");
    return;
  }
  k->method = find_method(s, k->path);
  if (k->method == NULL) {
    char msg[320];
    snprintf(msg, sizeof msg, "unknown method %.256s", k->path);
    call_reject(c, k, 200, IMMU_GRPC_UNIMPLEMENTED, msg);
    return;
  }
  if (k->timeout_us >= 0) {
    if (event_assign(call_timer(k), s->base, -1, 0, deadline_cb, k) != 0) {
      call_reject(c, k, 200, IMMU_GRPC_INTERNAL, "cannot arm the deadline");
      return;
    }
    k->deadline = call_timer(k);
    if (k->timeout_us == 0) {
      event_active(k->deadline, EV_TIMEOUT, 0);
    } else {
      struct timeval tv;
      tv.tv_sec = (time_t)(k->timeout_us / 1000000);
      tv.tv_usec = (suseconds_t)(k->timeout_us % 1000000);
      event_add(k->deadline, &tv);
    }
  }
  k->routed = 1;
}

/* Appends request DATA; parses the gRPC length-prefixed framing. */
static void rx_feed(conn *c, immu_grpc_call *k, const uint8_t *p, size_t n) {
  immu_grpc_server *s = c->srv;
  while (n > 0 && k->resp == RESP_NONE) {
    if (k->pfx_have < 5) {
      size_t take = 5 - k->pfx_have;
      uint32_t mlen;
      if (take > n)
        take = n;
      memcpy(k->pfx + k->pfx_have, p, take);
      k->pfx_have += take;
      p += take;
      n -= take;
      if (k->pfx_have < 5)
        return;
      mlen = (uint32_t)k->pfx[1] << 24 | (uint32_t)k->pfx[2] << 16 |
             (uint32_t)k->pfx[3] << 8 | (uint32_t)k->pfx[4];
      if (k->pfx[0] == 1) {
        call_reject(c, k, 200, IMMU_GRPC_UNIMPLEMENTED,
                    "compression not supported");
        return;
      }
      if (k->pfx[0] != 0) {
        call_reject(c, k, 200, IMMU_GRPC_INTERNAL,
                    "grpc: invalid compressed flag");
        return;
      }
      if (mlen > s->cfg.max_recv_msg_size) {
        char msg[128];
        snprintf(msg, sizeof msg,
                 "grpc: received message larger than max (%lu vs. %lu)",
                 (unsigned long)mlen, (unsigned long)s->cfg.max_recv_msg_size);
        call_reject(c, k, 200, IMMU_GRPC_RESOURCE_EXHAUSTED, msg);
        return;
      }
      if (k->call_bytes + 5 + (size_t)mlen > s->cfg.max_call_bytes) {
        char msg[128];
        snprintf(msg, sizeof msg,
                 "grpc: received call larger than max (%lu vs. %lu)",
                 (unsigned long)(k->call_bytes + 5 + (size_t)mlen),
                 (unsigned long)s->cfg.max_call_bytes);
        call_reject(c, k, 200, IMMU_GRPC_RESOURCE_EXHAUSTED, msg);
        return;
      }
      k->call_bytes += 5 + (size_t)mlen;
      if (k->nmsgs == k->cap_msgs) {
        size_t nc = k->cap_msgs < 4 ? 4 : k->cap_msgs * 2;
        msg_ref *nm = immu__malloc(nc * sizeof *nm);
        if (nm == NULL) {
          call_reject(c, k, 200, IMMU_GRPC_RESOURCE_EXHAUSTED, "out of memory");
          return;
        }
        memcpy(nm, k->msgs, k->nmsgs * sizeof *nm);
        if (k->msgs != k->msg_inl)
          immu__free(k->msgs);
        k->msgs = nm;
        k->cap_msgs = nc;
      }
      k->msgs[k->nmsgs].off = k->rx_len;
      k->msgs[k->nmsgs].len = mlen;
      k->nmsgs++;
      k->msg_left = mlen;
      if (mlen == 0)
        k->pfx_have = 0;
      continue;
    }
    {
      size_t take = k->msg_left < n ? k->msg_left : n;
      if (k->rx_len + take > k->rx_cap) {
        size_t nc = k->rx_cap ? k->rx_cap : RX_FIRST;
        uint8_t *nb;
        while (nc < k->rx_len + take)
          nc *= 2;
        nb = immu__realloc(k->rx, nc);
        if (nb == NULL) {
          call_reject(c, k, 200, IMMU_GRPC_RESOURCE_EXHAUSTED, "out of memory");
          return;
        }
        k->rx = nb;
        k->rx_cap = nc;
      }
      memcpy(k->rx + k->rx_len, p, take);
      k->rx_len += take;
      k->msg_left -= take;
      p += take;
      n -= take;
      if (k->msg_left == 0)
        k->pfx_have = 0;
    }
  }
}

static int on_data_chunk_recv(nghttp2_session *h2, uint8_t flags,
                              int32_t stream_id, const uint8_t *data,
                              size_t len, void *user_data) {
  immu_grpc_call *k = nghttp2_session_get_stream_user_data(h2, stream_id);
  (void)flags;
  if (k == NULL || k->resp != RESP_NONE || !k->routed || k->req_done)
    return 0;
  rx_feed(user_data, k, data, len);
  return 0;
}

/* Routes a complete request to its handler. Calls are batched for the
 * whole loop pass: flush_ev is queued behind the socket events of this
 * pass, so the requests read from every ready connection reach the workers
 * under one lock and at most one wake-up. */
static void dispatch(conn *c, immu_grpc_call *k) {
  immu_grpc_server *s = c->srv;
  k->in_worker = 1;
  c->busy++;
  atomic_fetch_add(&k->refs, 1); /* the handler's */
  k->work_next = NULL;
  if (s->batch_tail != NULL) {
    s->batch_tail->work_next = k;
  } else {
    s->batch_head = k;
    event_active(s->flush_ev, EV_TIMEOUT, 0);
  }
  s->batch_tail = k;
  conn_update_read(c);
}

static void request_complete(conn *c, immu_grpc_call *k) {
  if (k->req_done)
    return;
  k->req_done = 1;
  if (k->resp != RESP_NONE || !k->routed)
    return;
  if (k->pfx_have != 0) {
    call_reject(c, k, 200, IMMU_GRPC_INTERNAL,
                "grpc: stream ended inside a message");
    return;
  }
  dispatch(c, k);
}

static int on_frame_recv(nghttp2_session *h2, const nghttp2_frame *frame,
                         void *user_data) {
  conn *c = user_data;
  immu_grpc_call *k;
  switch (frame->hd.type) {
  case NGHTTP2_HEADERS:
    k = nghttp2_session_get_stream_user_data(h2, frame->hd.stream_id);
    if (k == NULL)
      break;
    if (frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
      c->got_headers = 1;
      headers_complete(c, k);
    }
    if (frame->hd.flags & NGHTTP2_FLAG_END_STREAM)
      request_complete(c, k);
    break;
  case NGHTTP2_DATA:
    if (!(frame->hd.flags & NGHTTP2_FLAG_END_STREAM))
      break;
    k = nghttp2_session_get_stream_user_data(h2, frame->hd.stream_id);
    if (k != NULL)
      request_complete(c, k);
    break;
  case NGHTTP2_RST_STREAM:
    /* Only a reset that cancels work still under way counts towards the
     * rapid-reset limit: clients such as grpc-js reset every stream once
     * they have the response, and that costs us nothing. */
    if (frame->rst_stream.error_code != NGHTTP2_NO_ERROR) {
      k = nghttp2_session_get_stream_user_data(h2, frame->hd.stream_id);
      int unfinished = 0;
      if (k != NULL) {
        pthread_mutex_lock(&k->mu);
        unfinished = !k->finished;
        pthread_mutex_unlock(&k->mu);
      }
      if (unfinished)
        note_reset(c);
    }
    break;
  default:
    break;
  }
  return 0;
}

static int on_frame_send(nghttp2_session *h2, const nghttp2_frame *frame,
                         void *user_data) {
  immu_grpc_call *k;
  (void)user_data;
  if (frame->hd.type != NGHTTP2_HEADERS ||
      !(frame->hd.flags & NGHTTP2_FLAG_END_STREAM))
    return 0;
  k = nghttp2_session_get_stream_user_data(h2, frame->hd.stream_id);
  if (k != NULL && k->rst_after_send && !k->req_done)
    nghttp2_submit_rst_stream(h2, NGHTTP2_FLAG_NONE, k->stream_id,
                              NGHTTP2_NO_ERROR);
  return 0;
}

static int on_stream_close(nghttp2_session *h2, int32_t stream_id,
                           uint32_t error_code, void *user_data) {
  conn *c = user_data;
  immu_grpc_call *k = nghttp2_session_get_stream_user_data(h2, stream_id);
  if (k == NULL)
    return 0;
  call_stream_closed(c, k, error_code);
  call_maybe_release(c, k);
  return 0;
}

static int conn_h2_init(conn *c) {
  immu_grpc_server *s = c->srv;
  nghttp2_session_callbacks *cbs;
  nghttp2_settings_entry iv[4];
  int rv;

  if (nghttp2_session_callbacks_new(&cbs) != 0)
    return IMMU_ENOMEM;
  nghttp2_session_callbacks_set_on_begin_headers_callback(cbs,
                                                          on_begin_headers);
  nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
  nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs,
                                                            on_data_chunk_recv);
  nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
  nghttp2_session_callbacks_set_on_frame_send_callback(cbs, on_frame_send);
  rv = nghttp2_session_server_new(&c->h2, cbs, c);
  nghttp2_session_callbacks_del(cbs);
  if (rv != 0)
    return IMMU_ENOMEM;
  iv[0].settings_id = NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS;
  iv[0].value = s->cfg.max_concurrent_streams;
  iv[1].settings_id = NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE;
  iv[1].value = (uint32_t)STREAM_WINDOW;
  iv[2].settings_id = NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE;
  iv[2].value = (uint32_t)HDR_LIST_MAX;
  iv[3].settings_id = NGHTTP2_SETTINGS_NO_RFC7540_PRIORITIES;
  iv[3].value = 1;
  if (nghttp2_submit_settings(c->h2, NGHTTP2_FLAG_NONE, iv, 4) != 0 ||
      nghttp2_session_set_local_window_size(c->h2, NGHTTP2_FLAG_NONE, 0,
                                            CONN_WINDOW) != 0)
    return IMMU_ENOMEM;
  return 0;
}

/* ------------------------------------------------------------------ */
/* accept                                                              */
/* ------------------------------------------------------------------ */

static void lis_retry_cb(evutil_socket_t fd, short what, void *arg) {
  immu_grpc_server *s = arg;
  (void)fd;
  (void)what;
  if (s->lis != NULL && !s->stopping)
    evconnlistener_enable(s->lis);
}

static void on_accept_error(struct evconnlistener *lis, void *arg) {
  immu_grpc_server *s = arg;
  int err = EVUTIL_SOCKET_ERROR();
  slog(s, LOG_WARN, "accept: %s; pausing the listener for 100 ms",
       evutil_socket_error_to_string(err));
  evconnlistener_disable(lis);
  timer_arm_ms(s->lis_retry, 100);
}

/* A connection accepted by another loop's listener. */
typedef struct adopted {
  struct adopted *next;
  evutil_socket_t fd;
  struct sockaddr_storage sa;
} adopted;

static void accept_conn(immu_grpc_server *s, evutil_socket_t fd,
                        struct sockaddr *sa);

/* Owner's loop: queues |fd| for |p|'s loop (event_active is thread-safe:
 * evthread_use_pthreads). */
static void hand_over(immu_grpc_server *p, evutil_socket_t fd,
                      const struct sockaddr *sa, int salen) {
  adopted *a = immu__calloc(1, sizeof *a);
  if (a == NULL) {
    evutil_closesocket(fd);
    return;
  }
  a->fd = fd;
  if (salen > 0)
    memcpy(&a->sa, sa,
           (size_t)salen < sizeof a->sa ? (size_t)salen : sizeof a->sa);
  pthread_mutex_lock(&p->adopt_mu);
  if (p->adopt_tail != NULL)
    p->adopt_tail->next = a;
  else
    p->adopt_head = a;
  p->adopt_tail = a;
  pthread_mutex_unlock(&p->adopt_mu);
  event_active(p->adopt_ev, EV_READ, 0);
}

/* Peer's loop: serves the sockets handed over. */
static void adopt_cb(evutil_socket_t fd, short what, void *arg) {
  immu_grpc_server *s = arg;
  adopted *a;
  (void)fd;
  (void)what;
  pthread_mutex_lock(&s->adopt_mu);
  a = s->adopt_head;
  s->adopt_head = s->adopt_tail = NULL;
  pthread_mutex_unlock(&s->adopt_mu);
  while (a != NULL) {
    adopted *nx = a->next;
    accept_conn(s, a->fd, (struct sockaddr *)&a->sa);
    immu__free(a);
    a = nx;
  }
}

static void on_accept(struct evconnlistener *lis, evutil_socket_t fd,
                      struct sockaddr *sa, int salen, void *arg) {
  immu_grpc_server *s = arg;
  size_t turn;
  (void)lis;
  if (s->npeers > 0 && !s->stopping) {
    turn = s->next_peer++ % (s->npeers + 1);
    if (turn > 0) {
      hand_over(s->peers[turn - 1], fd, sa, salen);
      return;
    }
  }
  accept_conn(s, fd, sa);
}

static void accept_conn(immu_grpc_server *s, evutil_socket_t fd,
                        struct sockaddr *sa) {
  conn *c;
  int one = 1;

  if (s->stopping) {
    evutil_closesocket(fd);
    return;
  }
  if (s->nconns >= s->cfg.max_connections) {
    int64_t now = now_ms();
    s->refused++;
    evutil_closesocket(fd);
    if (now - s->refused_log_ms >= 1000) {
      slog(s, LOG_WARN,
           "connection limit (%d) reached: refused %llu connection(s)",
           s->cfg.max_connections, (unsigned long long)s->refused);
      s->refused_log_ms = now;
      s->refused = 0;
    }
    return;
  }
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);

  c = immu__calloc(1, sizeof *c);
  if (c == NULL) {
    evutil_closesocket(fd);
    return;
  }
  c->srv = s;
  c->fd = fd;
  c->state = CONN_OPEN;
  c->reading = 1;
  format_peer(sa, c->peer_ip, sizeof c->peer_ip, &c->loopback);
  c->accepted_ms = c->last_active_ms = now_ms();
  c->rst_win_start = c->accepted_ms;

  if (s->cfg.ssl_ctx != NULL) {
    SSL *ssl = SSL_new(s->cfg.ssl_ctx);
    if (ssl == NULL) {
      evutil_closesocket(fd);
      immu__free(c);
      return;
    }
    c->tls = 1;
    c->bev = bufferevent_openssl_socket_new(
        s->base, fd, ssl, BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE);
    if (c->bev == NULL) {
      SSL_free(ssl);
      evutil_closesocket(fd);
      immu__free(c);
      return;
    }
    bufferevent_openssl_set_allow_dirty_shutdown(c->bev, 1);
  } else {
    c->bev = bufferevent_socket_new(s->base, fd, BEV_OPT_CLOSE_ON_FREE);
    if (c->bev == NULL) {
      evutil_closesocket(fd);
      immu__free(c);
      return;
    }
  }
  /* Linked first so that conn_free can undo everything below. */
  c->next = s->conns;
  if (s->conns != NULL)
    s->conns->prev = c;
  s->conns = c;
  s->nconns++;

  c->timer = event_new(s->base, -1, 0, conn_timercb, c);
  if (c->timer == NULL || conn_h2_init(c) != 0) {
    conn_free(c);
    return;
  }
  bufferevent_setcb(c->bev, conn_readcb, conn_writecb, conn_eventcb, c);
  bufferevent_setwatermark(c->bev, EV_WRITE, CONN_OUT_LOW, 0);
  /* Cleartext output goes out through conn_write_now; a new bufferevent
   * has EV_WRITE enabled, which would arm the write event on every add.
   * Cleartext input comes through rd_ev (conn_rawreadcb). */
  if (!c->tls) {
    bufferevent_disable(c->bev, EV_READ | EV_WRITE);
    c->rd_ev = event_new(s->base, fd, EV_READ | EV_PERSIST, conn_rawreadcb, c);
    c->held = evbuffer_new();
    if (c->rd_ev == NULL || c->held == NULL || event_add(c->rd_ev, NULL) != 0) {
      conn_free(c);
      return;
    }
  } else if (bufferevent_enable(c->bev, EV_READ | EV_WRITE) != 0) {
    conn_free(c);
    return;
  }
  conn_arm_timer(c);
  conn_check(c); /* server SETTINGS */
}

/* ------------------------------------------------------------------ */
/* loop wake-up, stop                                                  */
/* ------------------------------------------------------------------ */

static void run_item(immu_grpc_server *s, immu_grpc_call *k,
                     void (*fn)(immu_grpc_call *, void *), void *arg);

/* Appends the list head..tail to the workers' FIFO and wakes one if
 * needed. */
static void work_push(immu_grpc_server *s, immu_grpc_call *head,
                      immu_grpc_call *tail) {
  int sig;
  pthread_mutex_lock(&s->mu);
  if (s->work_tail != NULL)
    s->work_tail->work_next = head;
  else
    s->work_head = head;
  s->work_tail = tail;
  sig = wake_worker_locked(s);
  pthread_mutex_unlock(&s->mu);
  if (sig)
    pthread_cond_signal(&s->work_cv);
}

/* Loop: hands the requests routed during this pass to the workers (one
 * lock, at most one wake-up), then runs the inline handlers here. */
static void flush_cb(evutil_socket_t fd, short what, void *arg) {
  immu_grpc_server *s = arg;
  immu_grpc_call *k, *inl = NULL, **inl_tail = &inl;
  immu_grpc_call *head = NULL, *tail = NULL;
  (void)fd;
  (void)what;
  k = s->batch_head;
  s->batch_head = s->batch_tail = NULL;
  while (k != NULL) {
    immu_grpc_call *nx = k->work_next;
    k->work_next = NULL;
    if (k->method->flags &
        (IMMU_GRPC_METHOD_INLINE | IMMU_GRPC_METHOD_TRY_INLINE)) {
      *inl_tail = k;
      inl_tail = &k->work_next;
    } else {
      if (tail != NULL)
        tail->work_next = k;
      else
        head = k;
      tail = k;
    }
    k = nx;
  }
  if (head != NULL)
    work_push(s, head, tail);
  while ((k = inl) != NULL) {
    inl = k->work_next;
    k->work_next = NULL;
    k->on_loop = 1;
    run_item(s, k, NULL, NULL);
  }
}

/* Loop: applies what handlers did (responses, finishes) to the sessions.
 * Runs for the eventfd (other threads) and for wake_ev (the loop itself). */
static void wake_cb(evutil_socket_t fd, short what, void *arg) {
  immu_grpc_server *s = arg;
  immu_grpc_call *list, *k;
  conn *dirty = NULL;
  (void)what;

  if (fd >= 0) {
    uint64_t cnt;
    ssize_t r = read(fd, &cnt, sizeof cnt);
    (void)r; /* EAGAIN: a wake-up already consumed by an earlier pass */
  }
  pthread_mutex_lock(&s->pend_mu);
  list = s->pend_head;
  s->pend_head = s->pend_tail = NULL;
  s->wake_armed = 0;
  pthread_mutex_unlock(&s->pend_mu);

  while ((k = list) != NULL) {
    conn *c = k->conn;
    int finished, has_out;
    list = k->pend_next;
    pthread_mutex_lock(&k->mu);
    k->in_pending = 0;
    finished = k->finished;
    has_out = k->out_head != NULL;
    pthread_mutex_unlock(&k->mu);
    if (c != NULL) {
      if (k->in_worker && finished) {
        k->in_worker = 0;
        c->busy--;
        conn_update_read(c);
      }
      if (k->stream_open) {
        if (k->resp == RESP_NONE && (has_out || finished))
          submit_response(c, k);
        else if (k->resp == RESP_STARTED)
          nghttp2_session_resume_data(c->h2, k->stream_id);
      }
      call_maybe_release(c, k);
      if (!c->dirty) {
        c->dirty = 1;
        c->dirty_next = dirty;
        dirty = c;
      }
    }
    call_unref(k);
  }
  while (dirty != NULL) {
    conn *c = dirty;
    dirty = c->dirty_next;
    c->dirty = 0;
    if (c->state == CONN_OPEN && c->reading &&
        evbuffer_get_length(conn_input(c)) > 0 &&
        conn_process_input(c))
      continue;
    conn_check(c);
  }
}

static void grace_cb(evutil_socket_t fd, short what, void *arg) {
  immu_grpc_server *s = arg;
  (void)fd;
  (void)what;
  if (s->nconns > 0)
    slog(s, LOG_WARN, "grace period over: closing %d connection(s)", s->nconns);
  while (s->conns != NULL)
    conn_free(s->conns);
  event_base_loopbreak(s->base);
}

static void stop_cb(evutil_socket_t fd, short what, void *arg) {
  immu_grpc_server *s = arg;
  char buf[64];
  int grace;
  int64_t deadline;
  (void)what;
  while (read(fd, buf, sizeof buf) > 0) {
  }
  grace = atomic_load(&s->stop_grace);
  deadline = now_ms() + (grace > 0 ? (int64_t)grace * 1000 : 0);
  if (!s->stopping) {
    conn *c = s->conns;
    s->stopping = 1;
    slog(s, LOG_INFO, "stopping: %d connection(s), grace %d s", s->nconns,
         grace);
    if (s->lis != NULL) {
      evconnlistener_free(s->lis);
      s->lis = NULL;
    }
    while (c != NULL) {
      conn *nx = c->next;
      if (c->state == CONN_OPEN) {
        nghttp2_submit_goaway(c->h2, NGHTTP2_FLAG_NONE,
                              nghttp2_session_get_last_proc_stream_id(c->h2),
                              NGHTTP2_NO_ERROR, NULL, 0);
        conn_check(c);
      }
      c = nx;
    }
    s->grace_deadline_ms = deadline;
    timer_arm_ms(s->grace_ev, deadline - now_ms());
  } else if (deadline < s->grace_deadline_ms) {
    s->grace_deadline_ms = deadline;
    timer_arm_ms(s->grace_ev, deadline - now_ms());
  }
  maybe_finish_stop(s);
}

/* ------------------------------------------------------------------ */
/* workers                                                             */
/* ------------------------------------------------------------------ */

static void call_finish_internal(immu_grpc_call *k, int status,
                                 const char *msg) {
  immu_grpc_server *s = k->srv;
  char *m = msg != NULL && msg[0] != '\0' ? xstrdup(msg) : NULL;
  int wake = 0, det;
  if (status < 0 || status > IMMU_GRPC_UNAUTHENTICATED)
    status = IMMU_GRPC_UNKNOWN;
  pthread_mutex_lock(&k->mu);
  if (k->finished) {
    pthread_mutex_unlock(&k->mu);
    immu__free(m);
    slog(s, LOG_ERROR, "%s: call finished twice", k->path);
    return;
  }
  k->finished = 1;
  k->status = status;
  k->message = m;
  if (!k->in_pending) {
    k->in_pending = 1;
    wake = 1;
  }
  det = k->det_ref;
  k->det_ref = 0;
  pthread_mutex_unlock(&k->mu);
  if (wake) /* the handler's or the detached reference keeps |k| alive */
    pending_push(s, k);
  if (det) {
    /* Last use of |s| by this thread: immu_grpc_server_free waits for
     * ndetached to reach 0 before it tears the server down. */
    pthread_mutex_lock(&s->mu);
    if (--s->ndetached == 0)
      pthread_cond_broadcast(&s->detach_cv);
    pthread_mutex_unlock(&s->mu);
    call_unref(k);
  }
}

/* Runs one queued item: a request's handler, or a resume function of a
 * detached call. Drops the reference the queue held. */
static void run_item(immu_grpc_server *s, immu_grpc_call *k,
                     void (*fn)(immu_grpc_call *, void *), void *arg) {
  if (fn != NULL) {
    fn(k, arg);
  } else if (atomic_load(&k->cancelled)) {
    call_finish_internal(k, IMMU_GRPC_CANCELLED, "call cancelled");
  } else {
    int ok;
    k->method->handler(k, k->method->arg);
    if (k->on_loop) {
      k->on_loop = 0;
      if (k->deferred) {
        /* The handler reference goes with it to the worker. */
        k->deferred = 0;
        k->work_next = NULL;
        work_push(s, k, k);
        return;
      }
    }
    pthread_mutex_lock(&k->mu);
    ok = k->finished || k->det_ref;
    pthread_mutex_unlock(&k->mu);
    if (!ok) {
      slog(s, LOG_ERROR, "%s: handler returned without finishing the call",
           k->path);
      call_finish_internal(k, IMMU_GRPC_INTERNAL,
                           "handler did not finish the call");
    }
  }
  call_unref(k);
}

static void *worker_main(void *arg) {
  immu_grpc_server *s = arg;
  prctl(PR_SET_NAME, "immu-worker");
  pthread_mutex_lock(&s->mu);
  for (;;) {
    immu_grpc_call *k = s->work_head;
    if (k != NULL) {
      s->work_head = k->work_next;
      if (s->work_head == NULL)
        s->work_tail = NULL;
      void (*fn)(immu_grpc_call *, void *) = k->resume_fn;
      void *fn_arg = k->resume_arg;
      k->work_next = NULL;
      k->resume_fn = NULL;
      k->resume_arg = NULL;
      /* More queued: recruit the next idle worker before running a
       * handler that may block. */
      int sig = wake_worker_locked(s);
      pthread_mutex_unlock(&s->mu);
      if (sig)
        pthread_cond_signal(&s->work_cv);
      run_item(s, k, fn, fn_arg);
      pthread_mutex_lock(&s->mu);
      continue;
    }
    if (s->quit)
      break;
    s->nidle++;
    {
      /* A wake decision is made under the lock while a waiter exists, and
       * every return from this wait pays one back (clamped at 0), so a
       * decision whose signal found nobody waiting was already paid by
       * the return that emptied the wait set: nwaking cannot stay above 0
       * with nobody coming. The 1 s timeout is a safety net for that
       * argument (a stall would last 1 s, not forever), at one wake-up
       * per idle worker per second. */
      struct timespec ts;
      clock_gettime(CLOCK_REALTIME, &ts);
      ts.tv_sec += 1;
      pthread_cond_timedwait(&s->work_cv, &s->mu, &ts);
    }
    s->nidle--;
    if (s->nwaking > 0)
      s->nwaking--;
  }
  pthread_mutex_unlock(&s->mu);
  return NULL;
}

/* ------------------------------------------------------------------ */
/* public: server                                                      */
/* ------------------------------------------------------------------ */

void immu_grpc_config_init(immu_grpc_config *c) {
  long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
  memset(c, 0, sizeof *c);
  c->address = "0.0.0.0";
  c->port = 3322;
  c->max_recv_msg_size = (size_t)4 << 20;
  c->max_call_bytes = (size_t)64 << 20;
  c->max_concurrent_streams = 128;
  c->max_connections = 1024;
  /* Handlers block on fsync and on the index (a Set waits for both), so
   * workers are mostly asleep: with 2 per core, 128 clients queued behind 4
   * busy workers and group commit had nothing to group (0.95 fsyncs per
   * Set); 128 workers gave 4-5 Sets per fsync and +15-34% Set/s. */
  c->workers = (int)(ncpu > 0 ? 32 * ncpu : 64);
  if (c->workers < 64)
    c->workers = 64;
  c->idle_timeout_s = 300;
  c->header_timeout_s = 10;
}

static pthread_once_t global_once = PTHREAD_ONCE_INIT;
static int global_rc;

static void global_init(void) {
  struct sigaction sa;
  global_rc = evthread_use_pthreads();
  if (sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_DFL) {
    sa.sa_handler = SIG_IGN;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0;
    sigaction(SIGPIPE, &sa, NULL);
  }
}

static int alpn_select_cb(SSL *ssl, const unsigned char **out,
                          unsigned char *outlen, const unsigned char *in,
                          unsigned int inlen, void *arg) {
  static const unsigned char h2[] = {2, 'h', '2'};
  unsigned char *sel = NULL;
  (void)ssl;
  (void)arg;
  if (SSL_select_next_proto(&sel, outlen, h2, sizeof h2, in, inlen) !=
      OPENSSL_NPN_NEGOTIATED)
    return SSL_TLSEXT_ERR_ALERT_FATAL;
  *out = sel;
  return SSL_TLSEXT_ERR_OK;
}

static int bind_listener(immu_grpc_server *s, char **errmsg) {
  struct addrinfo hints, *res = NULL, *ai;
  char portstr[16];
  int rc, err = 0;
  struct sockaddr_storage ss;
  socklen_t sl = sizeof ss;

  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  snprintf(portstr, sizeof portstr, "%d", s->cfg.port);
  rc = getaddrinfo(s->address, portstr, &hints, &res);
  if (rc != 0) {
    set_errmsg(errmsg, "resolve %s: %s", s->address, gai_strerror(rc));
    return IMMU_EINVAL;
  }
  for (ai = res; ai != NULL; ai = ai->ai_next) {
    s->lis = evconnlistener_new_bind(s->base, on_accept, s,
                                     LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE |
                                         LEV_OPT_CLOSE_ON_EXEC,
                                     1024, ai->ai_addr, (int)ai->ai_addrlen);
    if (s->lis != NULL)
      break;
    err = errno;
  }
  freeaddrinfo(res);
  if (s->lis == NULL) {
    if (err == 0)
      err = EADDRNOTAVAIL;
    set_errmsg(errmsg, "listen on %s:%d: %s", s->address, s->cfg.port,
               strerror(err));
    return -err;
  }
  evconnlistener_set_error_cb(s->lis, on_accept_error);
  if (getsockname(evconnlistener_get_fd(s->lis), (struct sockaddr *)&ss, &sl) ==
      0) {
    if (ss.ss_family == AF_INET)
      s->port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
    else if (ss.ss_family == AF_INET6)
      s->port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
  }
  return 0;
}

int immu_grpc_server_new(const immu_grpc_config *cfg,
                         const immu_grpc_method *methods, size_t n,
                         immu_grpc_server **out, char **errmsg) {
  immu_grpc_server *s;
  immu_grpc_config def;
  size_t i;
  int rc, t;

  if (errmsg != NULL)
    *errmsg = NULL;
  if (out == NULL)
    return IMMU_EINVAL;
  *out = NULL;
  if (cfg == NULL || (n > 0 && methods == NULL)) {
    set_errmsg(errmsg, "invalid arguments");
    return IMMU_EINVAL;
  }
  pthread_once(&global_once, global_init);
  if (global_rc != 0) {
    set_errmsg(errmsg, "libevent: evthread_use_pthreads failed");
    return IMMU_ENOMEM;
  }

  s = immu__calloc(1, sizeof *s);
  if (s == NULL) {
    set_errmsg(errmsg, "out of memory");
    return IMMU_ENOMEM;
  }
  s->stop_pipe[0] = s->stop_pipe[1] = -1;
  if (pthread_mutex_init(&s->mu, NULL) != 0) {
    immu__free(s);
    set_errmsg(errmsg, "pthread_mutex_init failed");
    return IMMU_ENOMEM;
  }
  s->efd = -1;
  if (pthread_cond_init(&s->work_cv, NULL) != 0) {
    pthread_mutex_destroy(&s->mu);
    immu__free(s);
    set_errmsg(errmsg, "pthread_cond_init failed");
    return IMMU_ENOMEM;
  }
  if (pthread_cond_init(&s->detach_cv, NULL) != 0) {
    pthread_cond_destroy(&s->work_cv);
    pthread_mutex_destroy(&s->mu);
    immu__free(s);
    set_errmsg(errmsg, "pthread_cond_init failed");
    return IMMU_ENOMEM;
  }
  if (pthread_mutex_init(&s->pend_mu, NULL) != 0) {
    pthread_cond_destroy(&s->detach_cv);
    pthread_cond_destroy(&s->work_cv);
    pthread_mutex_destroy(&s->mu);
    immu__free(s);
    set_errmsg(errmsg, "pthread_mutex_init failed");
    return IMMU_ENOMEM;
  }
  atomic_init(&s->stop_grace, 0);

  /* Defaults for zero / negative fields. */
  immu_grpc_config_init(&def);
  s->cfg = *cfg;
  if (s->cfg.max_recv_msg_size == 0)
    s->cfg.max_recv_msg_size = def.max_recv_msg_size;
  if (s->cfg.max_recv_msg_size > UINT32_MAX)
    s->cfg.max_recv_msg_size = UINT32_MAX;
  if (s->cfg.max_call_bytes == 0)
    s->cfg.max_call_bytes = def.max_call_bytes;
  if (s->cfg.max_concurrent_streams == 0)
    s->cfg.max_concurrent_streams = def.max_concurrent_streams;
  if (s->cfg.max_connections <= 0)
    s->cfg.max_connections = def.max_connections;
  if (s->cfg.workers <= 0)
    s->cfg.workers = def.workers;
  if (s->cfg.idle_timeout_s <= 0)
    s->cfg.idle_timeout_s = def.idle_timeout_s;
  if (s->cfg.header_timeout_s <= 0)
    s->cfg.header_timeout_s = def.header_timeout_s;

  s->address = xstrdup(cfg->address != NULL ? cfg->address : def.address);
  s->uuid =
      cfg->uuid != NULL && cfg->uuid[0] != '\0' ? xstrdup(cfg->uuid) : NULL;
  s->methods = immu__calloc(n ? n : 1, sizeof *s->methods);
  if (s->address == NULL ||
      (cfg->uuid != NULL && cfg->uuid[0] != '\0' && s->uuid == NULL) ||
      s->methods == NULL) {
    rc = IMMU_ENOMEM;
    set_errmsg(errmsg, "out of memory");
    goto fail;
  }
  for (i = 0; i < n; i++) {
    s->methods[i] = methods[i];
    s->methods[i].path = xstrdup(methods[i].path ? methods[i].path : "");
    s->nmethods = i + 1;
    if (s->methods[i].path == NULL) {
      rc = IMMU_ENOMEM;
      set_errmsg(errmsg, "out of memory");
      goto fail;
    }
  }
  s->cfg.address = s->address;
  s->cfg.uuid = s->uuid;
  if (mtab_build(s) != 0) {
    rc = IMMU_ENOMEM;
    set_errmsg(errmsg, "out of memory");
    goto fail;
  }

  if (cfg->ssl_ctx != NULL) {
    SSL_CTX_set_alpn_select_cb(cfg->ssl_ctx, alpn_select_cb, NULL);
    SSL_CTX_set_options(cfg->ssl_ctx, SSL_OP_NO_RENEGOTIATION);
  }

  s->base = event_base_new();
  s->rbuf = immu__malloc(RAW_READ);
  if (s->base == NULL || s->rbuf == NULL) {
    rc = IMMU_ENOMEM;
    set_errmsg(errmsg, "event_base_new failed");
    goto fail;
  }
  if (pipe2(s->stop_pipe, O_NONBLOCK | O_CLOEXEC) != 0) {
    rc = -errno;
    set_errmsg(errmsg, "pipe: %s", strerror(errno));
    goto fail;
  }
  s->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (s->efd < 0) {
    rc = -errno;
    set_errmsg(errmsg, "eventfd: %s", strerror(errno));
    goto fail;
  }
  s->wake_ev = event_new(s->base, -1, 0, wake_cb, s);
  s->efd_ev = event_new(s->base, s->efd, EV_READ | EV_PERSIST, wake_cb, s);
  s->flush_ev = event_new(s->base, -1, 0, flush_cb, s);
  s->stop_ev =
      event_new(s->base, s->stop_pipe[0], EV_READ | EV_PERSIST, stop_cb, s);
  s->grace_ev = event_new(s->base, -1, 0, grace_cb, s);
  s->lis_retry = event_new(s->base, -1, 0, lis_retry_cb, s);
  if (s->wake_ev == NULL || s->efd_ev == NULL || s->flush_ev == NULL ||
      s->stop_ev == NULL || s->grace_ev == NULL || s->lis_retry == NULL ||
      event_add(s->stop_ev, NULL) != 0 || event_add(s->efd_ev, NULL) != 0) {
    rc = IMMU_ENOMEM;
    set_errmsg(errmsg, "event_new failed");
    goto fail;
  }
  s->adopt_ev = event_new(s->base, -1, 0, adopt_cb, s);
  if (s->adopt_ev == NULL ||
      pthread_mutex_init(&s->adopt_mu, NULL) != 0) {
    rc = IMMU_ENOMEM;
    set_errmsg(errmsg, "event_new failed");
    goto fail;
  }
  s->adopt_mu_ok = 1;
  if (!s->cfg.no_listen) {
    rc = bind_listener(s, errmsg);
    if (rc != 0)
      goto fail;
  }

  s->threads = immu__calloc((size_t)s->cfg.workers, sizeof *s->threads);
  if (s->threads == NULL) {
    rc = IMMU_ENOMEM;
    set_errmsg(errmsg, "out of memory");
    goto fail;
  }
  for (t = 0; t < s->cfg.workers; t++) {
    int err = pthread_create(&s->threads[t], NULL, worker_main, s);
    if (err != 0) {
      rc = -err;
      set_errmsg(errmsg, "pthread_create: %s", strerror(err));
      goto fail;
    }
    s->nthreads = t + 1;
  }
  *out = s;
  return 0;

fail:
  immu_grpc_server_free(s);
  return rc;
}

int immu_grpc_server_port(const immu_grpc_server *s) {
  return s->port;
}

int immu_grpc_server_add_peer(immu_grpc_server *s, immu_grpc_server *peer) {
  immu_grpc_server **np;
  if (s == NULL || peer == NULL || s == peer || s->lis == NULL ||
      !peer->cfg.no_listen)
    return IMMU_EINVAL;
  np = immu__realloc(s->peers, (s->npeers + 1) * sizeof *np);
  if (np == NULL)
    return IMMU_ENOMEM;
  np[s->npeers++] = peer;
  s->peers = np;
  return 0;
}

int immu_grpc_server_run(immu_grpc_server *s) {
  slog(s, LOG_INFO, "listening on %s:%d (%s), %d workers", s->address, s->port,
       s->cfg.ssl_ctx != NULL ? "TLS" : "h2c", s->nthreads);
  tl_loop = s;
  event_base_loop(s->base, EVLOOP_NO_EXIT_ON_EMPTY);
  tl_loop = NULL;
  return 0;
}

void immu_grpc_server_stop(immu_grpc_server *s, int grace_s) {
  int saved = errno;
  ssize_t w;
  atomic_store(&s->stop_grace, grace_s);
  w = write(s->stop_pipe[1], "s", 1);
  (void)w; /* EAGAIN: a wake-up is already pending */
  errno = saved;
}

void immu_grpc_server_free(immu_grpc_server *s) {
  immu_grpc_call *k;
  int t;
  size_t i;
  if (s == NULL)
    return;
  s->stopping = 1;
  while (s->conns != NULL)
    conn_free(s->conns);
  /* Requests routed in the last loop pass that never got flushed: give
   * them to the workers, which finish them as cancelled. */
  if (s->batch_head != NULL)
    flush_cb(-1, 0, s);

  pthread_mutex_lock(&s->mu);
  /* Detached calls are finished by their owners (another thread, maybe
   * through immu_grpc_call_resume on our workers): wait for all of them,
   * since finishing touches the server. */
  while (s->ndetached > 0) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += 5;
    if (pthread_cond_timedwait(&s->detach_cv, &s->mu, &ts) == ETIMEDOUT &&
        s->ndetached > 0)
      slog(s, LOG_WARN, "stopping: waiting for %ld detached call(s)",
           s->ndetached);
  }
  s->quit = 1;
  pthread_cond_broadcast(&s->work_cv);
  pthread_mutex_unlock(&s->mu);
  for (t = 0; t < s->nthreads; t++)
    pthread_join(s->threads[t], NULL);
  immu__free(s->threads);

  /* Workers are gone: what is left on the pending list only holds refs. */
  while ((k = s->pend_head) != NULL) {
    s->pend_head = k->pend_next;
    k->in_pending = 0;
    call_unref(k);
  }
  s->pend_tail = NULL;

  if (s->lis != NULL)
    evconnlistener_free(s->lis);
  while (s->adopt_head != NULL) { /* handed over after this loop ended */
    adopted *a = s->adopt_head;
    s->adopt_head = a->next;
    evutil_closesocket(a->fd);
    immu__free(a);
  }
  if (s->adopt_ev != NULL)
    event_free(s->adopt_ev);
  if (s->adopt_mu_ok)
    pthread_mutex_destroy(&s->adopt_mu);
  immu__free(s->peers);
  if (s->wake_ev != NULL)
    event_free(s->wake_ev);
  if (s->efd_ev != NULL)
    event_free(s->efd_ev);
  if (s->flush_ev != NULL)
    event_free(s->flush_ev);
  if (s->efd >= 0)
    close(s->efd);
  immu__free(s->mtab);
  if (s->stop_ev != NULL)
    event_free(s->stop_ev);
  if (s->grace_ev != NULL)
    event_free(s->grace_ev);
  if (s->lis_retry != NULL)
    event_free(s->lis_retry);
  if (s->base != NULL)
    event_base_free(s->base);
  immu__free(s->rbuf);
  if (s->stop_pipe[0] >= 0)
    close(s->stop_pipe[0]);
  if (s->stop_pipe[1] >= 0)
    close(s->stop_pipe[1]);
  for (i = 0; i < s->nmethods; i++)
    immu__free((char *)(uintptr_t)s->methods[i].path);
  immu__free(s->methods);
  immu__free(s->address);
  immu__free(s->uuid);
  pthread_cond_destroy(&s->work_cv);
  pthread_cond_destroy(&s->detach_cv);
  pthread_mutex_destroy(&s->mu);
  pthread_mutex_destroy(&s->pend_mu);
  immu__free(s);
}

/* ------------------------------------------------------------------ */
/* public: call API (worker threads)                                   */
/* ------------------------------------------------------------------ */

size_t immu_grpc_call_nmsgs(const immu_grpc_call *c) {
  return c->nmsgs;
}

const uint8_t *immu_grpc_call_msg(const immu_grpc_call *c, size_t i,
                                  size_t *len) {
  static const uint8_t empty[1];
  if (i >= c->nmsgs) {
    if (len != NULL)
      *len = 0;
    return NULL;
  }
  if (len != NULL)
    *len = c->msgs[i].len;
  if (c->msgs[i].len == 0 || c->rx == NULL)
    return empty;
  return c->rx + c->msgs[i].off;
}

const char *immu_grpc_call_metadata(const immu_grpc_call *c, const char *key) {
  size_t i;
  for (i = 0; i < c->md.n; i++)
    if (strcmp(hdr_name(&c->md, i), key) == 0)
      return hdr_value(&c->md, i);
  return NULL;
}

const char *immu_grpc_call_path(const immu_grpc_call *c) {
  return c->path;
}

const char *immu_grpc_call_peer_ip(const immu_grpc_call *c) {
  return c->peer_ip;
}

int immu_grpc_call_peer_is_loopback(const immu_grpc_call *c) {
  return c->loopback;
}

int immu_grpc_call_cancelled(const immu_grpc_call *c) {
  return atomic_load(&((immu_grpc_call *)(uintptr_t)c)->cancelled);
}

static int header_name_ok(const char *key) {
  const char *p;
  if (key == NULL || key[0] == '\0' || key[0] == ':')
    return 0;
  if (strncmp(key, "grpc-", 5) == 0 || strcmp(key, "content-type") == 0 ||
      strcmp(key, "immudb-uuid") == 0)
    return 0;
  for (p = key; *p; p++) {
    unsigned char ch = (unsigned char)*p;
    if (!((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '-' ||
          ch == '_' || ch == '.'))
      return 0;
  }
  return 1;
}

int immu_grpc_call_add_header(immu_grpc_call *c, const char *key,
                              const char *value) {
  int rc;
  const char *p;
  if (!header_name_ok(key) || value == NULL)
    return IMMU_EINVAL;
  for (p = value; *p; p++)
    if ((unsigned char)*p < 0x20 || (unsigned char)*p == 0x7f)
      return IMMU_EINVAL;
  pthread_mutex_lock(&c->mu);
  if (c->sent_any || c->finished) {
    pthread_mutex_unlock(&c->mu);
    return IMMU_EINVAL;
  }
  rc = hdr_push(&c->rh, key, strlen(key), value, strlen(value));
  pthread_mutex_unlock(&c->mu);
  return rc;
}

static int call_send(immu_grpc_call *c, const uint8_t *msg, size_t len,
                     int may_block) {
  out_chunk *ch;
  int wake;
  if (len > UINT32_MAX || (len > 0 && msg == NULL))
    return IMMU_EINVAL;
  if (atomic_load(&c->cancelled))
    return IMMU_ECLOSED;
  ch = immu__malloc(sizeof *ch + 5 + len);
  if (ch == NULL)
    return IMMU_ENOMEM;
  ch->next = NULL;
  ch->len = 5 + len;
  ch->off = 0;
  ch->data[0] = 0;
  ch->data[1] = (uint8_t)(len >> 24);
  ch->data[2] = (uint8_t)(len >> 16);
  ch->data[3] = (uint8_t)(len >> 8);
  ch->data[4] = (uint8_t)len;
  if (len > 0)
    memcpy(ch->data + 5, msg, len);

  pthread_mutex_lock(&c->mu);
  while (!atomic_load(&c->cancelled) && c->out_bytes > OUT_HIGH_WATER) {
    if (!may_block) {
      pthread_mutex_unlock(&c->mu);
      immu__free(ch);
      return IMMU_EBUSY;
    }
    pthread_cond_wait(&c->cv, &c->mu);
  }
  if (atomic_load(&c->cancelled) || c->finished) {
    int closed = atomic_load(&c->cancelled);
    pthread_mutex_unlock(&c->mu);
    immu__free(ch);
    return closed ? IMMU_ECLOSED : IMMU_EINVAL;
  }
  if (c->out_tail != NULL)
    c->out_tail->next = ch;
  else
    c->out_head = ch;
  c->out_tail = ch;
  c->out_bytes += ch->len;
  c->sent_any = 1;
  wake = !c->in_pending;
  c->in_pending = 1;
  pthread_mutex_unlock(&c->mu);
  if (wake)
    pending_push(c->srv, c);
  return 0;
}

int immu_grpc_call_send(immu_grpc_call *c, const uint8_t *msg, size_t len) {
  /* The loop thread (inline handlers) must never wait for itself. */
  return call_send(c, msg, len, tl_loop == NULL);
}

int immu_grpc_call_try_send(immu_grpc_call *c, const uint8_t *msg,
                            size_t len) {
  return call_send(c, msg, len, 0);
}

void immu_grpc_call_finish(immu_grpc_call *c, int status, const char *msg) {
  call_finish_internal(c, status, msg);
}

void immu_grpc_call_detach(immu_grpc_call *c) {
  immu_grpc_server *s = c->srv;
  pthread_mutex_lock(&c->mu);
  if (c->finished || c->det_ref) {
    pthread_mutex_unlock(&c->mu);
    slog(s, LOG_ERROR, "%s: detach of a %s call", c->path,
         c->finished ? "finished" : "detached");
    return;
  }
  c->det_ref = 1;
  atomic_fetch_add(&c->refs, 1);
  pthread_mutex_unlock(&c->mu);
  pthread_mutex_lock(&s->mu);
  s->ndetached++;
  pthread_mutex_unlock(&s->mu);
}

int immu_grpc_call_on_loop(const immu_grpc_call *c) {
  return c->on_loop;
}

void immu_grpc_call_defer(immu_grpc_call *c) {
  int ok;
  pthread_mutex_lock(&c->mu);
  ok = !c->finished && !c->det_ref && c->sent_any == 0 &&
       c->out_head == NULL && c->rh.n == 0;
  pthread_mutex_unlock(&c->mu);
  if (!c->on_loop || !(c->method->flags & IMMU_GRPC_METHOD_TRY_INLINE) ||
      c->deferred || !ok) {
    slog(c->srv, LOG_ERROR, "%s: defer outside a fresh inline attempt",
         c->path);
    return;
  }
  c->deferred = 1;
}

void immu_grpc_call_resume(immu_grpc_call *c,
                           void (*fn)(immu_grpc_call *c, void *arg),
                           void *arg) {
  immu_grpc_server *s = c->srv;
  int ok, sig;
  pthread_mutex_lock(&c->mu);
  ok = c->det_ref && fn != NULL;
  pthread_mutex_unlock(&c->mu);
  if (!ok) {
    slog(s, LOG_ERROR, "%s: resume of a call that is not detached", c->path);
    return;
  }
  atomic_fetch_add(&c->refs, 1); /* the queue's, dropped by run_item */
  pthread_mutex_lock(&s->mu);
  if (c->resume_fn != NULL) {
    pthread_mutex_unlock(&s->mu);
    atomic_fetch_sub(&c->refs, 1); /* the detached ref is still held */
    slog(s, LOG_ERROR, "%s: resume while a resume is pending", c->path);
    return;
  }
  c->resume_fn = fn;
  c->resume_arg = arg;
  c->work_next = NULL;
  if (s->work_tail != NULL)
    s->work_tail->work_next = c;
  else
    s->work_head = c;
  s->work_tail = c;
  sig = wake_worker_locked(s);
  pthread_mutex_unlock(&s->mu);
  if (sig)
    pthread_cond_signal(&s->work_cv);
}
