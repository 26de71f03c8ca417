/* SPDX-License-Identifier: Apache-2.0 */
/* Tests of the gRPC transport (src/server/grpc.c) through a minimal HTTP/2
 * client built on nghttp2 (blocking sockets, loopback only): unary,
 * concurrent, server- and client-streaming calls, back-pressure, limits,
 * deadlines, rapid reset, garbage input, the connection cap, TLS with ALPN
 * and graceful stop. Every wait is bounded. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <nghttp2/nghttp2.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "immudb/err.h"
#include "server/server.h"

#define TEST_UUID "cn0test0uuid0000001a"

/* ------------------------------------------------------------------ */
/* helpers                                                             */
/* ------------------------------------------------------------------ */

static int64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms) {
  struct timespec ts;
  ts.tv_sec = ms / 1000;
  ts.tv_nsec = (long)(ms % 1000) * 1000000L;
  nanosleep(&ts, NULL);
}

static void put_be32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)(v >> 24);
  p[1] = (uint8_t)(v >> 16);
  p[2] = (uint8_t)(v >> 8);
  p[3] = (uint8_t)v;
}

static uint32_t get_be32(const uint8_t *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 |
         (uint32_t)p[3];
}

/* Appends one gRPC length-prefixed message to |*buf|. */
static void frame_append(uint8_t **buf, size_t *len, const uint8_t *msg,
                         size_t mlen) {
  uint8_t *nb = realloc(*buf, *len + 5 + mlen);
  assert_non_null(nb);
  nb[*len] = 0;
  put_be32(nb + *len + 1, (uint32_t)mlen);
  if (mlen > 0)
    memcpy(nb + *len + 5, msg, mlen);
  *buf = nb;
  *len += 5 + mlen;
}

/* ------------------------------------------------------------------ */
/* test handlers                                                       */
/* ------------------------------------------------------------------ */

static atomic_long g_stream_sent;
static atomic_int g_stream_rc;
static atomic_int g_stream_done;
static atomic_int g_sleep_cancelled;
static atomic_int g_slow_started;
static atomic_int g_calls_done;
static atomic_int g_unimplemented_done;

static void h_echo(immu_grpc_call *c, void *arg) {
  const char *md = immu_grpc_call_metadata(c, "x-md");
  size_t i, n = immu_grpc_call_nmsgs(c);
  (void)arg;
  immu_grpc_call_add_header(c, "x-echo", "yes");
  if (md != NULL)
    immu_grpc_call_add_header(c, "x-md-echo", md);
  for (i = 0; i < n; i++) {
    size_t len;
    const uint8_t *p = immu_grpc_call_msg(c, i, &len);
    if (immu_grpc_call_send(c, p, len) != 0) {
      immu_grpc_call_finish(c, IMMU_GRPC_CANCELLED, "cancelled");
      return;
    }
  }
  immu_grpc_call_finish(c, IMMU_GRPC_OK, NULL);
}

static void h_fail(immu_grpc_call *c, void *arg) {
  (void)arg;
  immu_grpc_call_finish(c, IMMU_GRPC_INVALID_ARGUMENT,
                        "bad 100% thing\n\xc3\xa9");
}

/* Request: be32 count, be32 size. Sends |count| messages of |size| bytes,
 * each starting with its be32 index and filled with (index & 0xff). */
static void h_stream(immu_grpc_call *c, void *arg) {
  size_t len, sz;
  const uint8_t *req = immu_grpc_call_msg(c, 0, &len);
  uint32_t count, i;
  uint8_t *buf;
  int rc = 0;
  (void)arg;
  if (req == NULL || len != 8) {
    immu_grpc_call_finish(c, IMMU_GRPC_INVALID_ARGUMENT, "want 8 bytes");
    return;
  }
  count = get_be32(req);
  sz = get_be32(req + 4);
  buf = malloc(sz < 4 ? 4 : sz);
  if (buf == NULL) {
    immu_grpc_call_finish(c, IMMU_GRPC_RESOURCE_EXHAUSTED, "oom");
    return;
  }
  for (i = 0; i < count && rc == 0; i++) {
    memset(buf, (int)(i & 0xff), sz);
    if (sz >= 4)
      put_be32(buf, i);
    rc = immu_grpc_call_send(c, buf, sz);
    if (rc == 0)
      atomic_fetch_add(&g_stream_sent, (long)sz);
  }
  free(buf);
  atomic_store(&g_stream_rc, rc);
  atomic_store(&g_stream_done, 1);
  immu_grpc_call_finish(c, rc == 0 ? IMMU_GRPC_OK : IMMU_GRPC_CANCELLED, NULL);
}

/* Client streaming: checks message i is i*100 bytes of (i & 0xff) and
 * replies be32 nmsgs, be32 total bytes. */
static void h_collect(immu_grpc_call *c, void *arg) {
  size_t i, n = immu_grpc_call_nmsgs(c), total = 0;
  uint8_t out[8];
  (void)arg;
  for (i = 0; i < n; i++) {
    size_t len, j;
    const uint8_t *p = immu_grpc_call_msg(c, i, &len);
    if (len != i * 100) {
      immu_grpc_call_finish(c, IMMU_GRPC_INVALID_ARGUMENT, "bad length");
      return;
    }
    for (j = 0; j < len; j++) {
      if (p[j] != (uint8_t)(i & 0xff)) {
        immu_grpc_call_finish(c, IMMU_GRPC_INVALID_ARGUMENT, "bad byte");
        return;
      }
    }
    total += len;
  }
  put_be32(out, (uint32_t)n);
  put_be32(out + 4, (uint32_t)total);
  immu_grpc_call_send(c, out, sizeof out);
  immu_grpc_call_finish(c, IMMU_GRPC_OK, NULL);
}

/* Sleeps up to 3 s polling for cancellation. */
static void h_sleep(immu_grpc_call *c, void *arg) {
  int i;
  (void)arg;
  for (i = 0; i < 300; i++) {
    if (immu_grpc_call_cancelled(c)) {
      atomic_store(&g_sleep_cancelled, 1);
      immu_grpc_call_finish(c, IMMU_GRPC_CANCELLED, "cancelled");
      return;
    }
    sleep_ms(10);
  }
  immu_grpc_call_finish(c, IMMU_GRPC_OK, NULL);
}

/* Takes 400 ms, then answers "done". */
static void h_slow(immu_grpc_call *c, void *arg) {
  (void)arg;
  atomic_store(&g_slow_started, 1);
  sleep_ms(400);
  immu_grpc_call_send(c, (const uint8_t *)"done", 4);
  immu_grpc_call_finish(c, IMMU_GRPC_OK, NULL);
}

/* --- detached calls: a fake asynchronous engine ---
 *
 * /t.T/Detach request: be32 delay_ms, be32 mode, then a tag. The handler
 * detaches and queues the call to a "completer" thread that, once the delay
 * is over, echoes the tag and finishes the call itself (mode 0) or hands it
 * to a worker with immu_grpc_call_resume (mode 1), like an engine commit
 * callback would. */

typedef struct det_item {
  immu_grpc_call *call;
  int64_t due;
  uint32_t mode;
  struct det_item *next;
} det_item;

static pthread_mutex_t g_det_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_det_cv = PTHREAD_COND_INITIALIZER;
static det_item *g_det_items;
static int g_det_quit;
static pthread_t g_det_thread;
static atomic_int g_det_started;  /* handlers that detached */
static atomic_int g_det_finished; /* finishes by the fake engine */
static atomic_int g_det_cancel_seen;
static atomic_int g_errors_logged;

static void det_complete(immu_grpc_call *c, int on_worker) {
  size_t len = 0;
  const uint8_t *m = immu_grpc_call_msg(c, 0, &len);
  int rc = immu_grpc_call_try_send(c, m + 8, len - 8);
  if (rc == IMMU_ECLOSED || immu_grpc_call_cancelled(c))
    atomic_fetch_add(&g_det_cancel_seen, 1);
  atomic_fetch_add(&g_det_finished, 1);
  immu_grpc_call_finish(c, rc == 0 ? IMMU_GRPC_OK : IMMU_GRPC_CANCELLED,
                        on_worker ? "resumed" : NULL);
}

static void det_resume_fn(immu_grpc_call *c, void *arg) {
  (void)arg;
  det_complete(c, 1);
}

static void *det_thread(void *arg) {
  (void)arg;
  pthread_mutex_lock(&g_det_mu);
  for (;;) {
    det_item **pp, **best = NULL;
    int64_t now = mono_ms();
    for (pp = &g_det_items; *pp != NULL; pp = &(*pp)->next)
      if (best == NULL || (*pp)->due < (*best)->due)
        best = pp;
    if (best == NULL) {
      if (g_det_quit)
        break;
      pthread_cond_wait(&g_det_cv, &g_det_mu);
      continue;
    }
    if ((*best)->due > now) {
      struct timespec ts;
      int64_t wait = (*best)->due - now;
      clock_gettime(CLOCK_REALTIME, &ts);
      ts.tv_sec += (time_t)(wait / 1000);
      ts.tv_nsec += (long)(wait % 1000) * 1000000L;
      if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
      }
      pthread_cond_timedwait(&g_det_cv, &g_det_mu, &ts);
      continue;
    }
    {
      det_item *it = *best;
      *best = it->next;
      pthread_mutex_unlock(&g_det_mu);
      if (it->mode == 1)
        immu_grpc_call_resume(it->call, det_resume_fn, NULL);
      else
        det_complete(it->call, 0);
      free(it);
      pthread_mutex_lock(&g_det_mu);
    }
  }
  pthread_mutex_unlock(&g_det_mu);
  return NULL;
}

static void h_detach(immu_grpc_call *c, void *arg) {
  size_t len = 0;
  const uint8_t *m = immu_grpc_call_msg(c, 0, &len);
  det_item *it;
  (void)arg;
  if (m == NULL || len < 8) {
    immu_grpc_call_finish(c, IMMU_GRPC_INVALID_ARGUMENT, "short request");
    return;
  }
  it = calloc(1, sizeof *it);
  if (it == NULL) {
    immu_grpc_call_finish(c, IMMU_GRPC_RESOURCE_EXHAUSTED, "oom");
    return;
  }
  it->call = c;
  it->due = mono_ms() + get_be32(m);
  it->mode = get_be32(m + 4);
  immu_grpc_call_detach(c);
  atomic_fetch_add(&g_det_started, 1);
  /* From here on the completer owns the call: it may finish it before
   * this handler returns, so |c| is not touched again. */
  pthread_mutex_lock(&g_det_mu);
  it->next = g_det_items;
  g_det_items = it;
  pthread_cond_signal(&g_det_cv);
  pthread_mutex_unlock(&g_det_mu);
}

/* Inline (loop-thread) echo. */
static void h_inline(immu_grpc_call *c, void *arg) {
  size_t len = 0;
  const uint8_t *m = immu_grpc_call_msg(c, 0, &len);
  (void)arg;
  if (immu_grpc_call_send(c, m, len) != 0) {
    immu_grpc_call_finish(c, IMMU_GRPC_CANCELLED, "cancelled");
    return;
  }
  immu_grpc_call_finish(c, IMMU_GRPC_OK, NULL);
}

/* TRY_INLINE: a request starting with 'd' defers from the loop to a
 * worker; the reply is "loop:" or "worker:" and the request, so the test
 * sees where it was answered. A request starting with 'x' also tries a
 * defer after the answer is queued (refused and logged; the call stays
 * answered on the loop). */
static atomic_int g_try_runs;

static void h_try_inline(immu_grpc_call *c, void *arg) {
  size_t len = 0;
  const uint8_t *m = immu_grpc_call_msg(c, 0, &len);
  int loop = immu_grpc_call_on_loop(c);
  uint8_t out[64];
  size_t n;
  (void)arg;
  atomic_fetch_add(&g_try_runs, 1);
  if (loop && len > 0 && m[0] == 'd') {
    immu_grpc_call_defer(c);
    return;
  }
  n = (size_t)snprintf((char *)out, sizeof out, "%s:%.*s",
                       loop ? "loop" : "worker", (int)(len < 40 ? len : 40),
                       (const char *)m);
  if (immu_grpc_call_send(c, out, n) != 0) {
    immu_grpc_call_finish(c, IMMU_GRPC_CANCELLED, "cancelled");
    return;
  }
  if (loop && len > 0 && m[0] == 'x')
    immu_grpc_call_defer(c); /* too late: refused */
  immu_grpc_call_finish(c, IMMU_GRPC_OK, NULL);
}

static const immu_grpc_method k_methods[] = {
    {"/t.T/Echo", h_echo, NULL, 0},
    {"/t.T/Fail", h_fail, NULL, 0},
    {"/t.T/Stream", h_stream, NULL, 0},
    {"/t.T/Collect", h_collect, NULL, 0},
    {"/t.T/Sleep", h_sleep, NULL, 0},
    {"/t.T/Slow", h_slow, NULL, 0},
    {"/t.T/Detach", h_detach, NULL, 0},
    {"/t.T/Inline", h_inline, NULL, IMMU_GRPC_METHOD_INLINE},
    {"/t.T/TryInline", h_try_inline, NULL, IMMU_GRPC_METHOD_TRY_INLINE},
};

static void on_done(void *arg, const char *path, int status, double seconds,
                    const char *peer_ip) {
  (void)seconds;
  if (arg != NULL) /* test_peers: calls per loop */
    atomic_fetch_add((atomic_int *)arg, 1);
  assert_string_equal(peer_ip, "127.0.0.1");
  atomic_fetch_add(&g_calls_done, 1);
  if (status == IMMU_GRPC_UNIMPLEMENTED &&
      strcmp(path, "/nope.Svc/Missing") == 0)
    atomic_fetch_add(&g_unimplemented_done, 1);
}

/* An error line a test provokes on purpose: counted here, not printed. */
static _Atomic(const char *) g_expected_error;
static atomic_int g_expected_errors;

static void quiet_log(void *arg, int level, const char *msg) {
  const char *expected = atomic_load(&g_expected_error);
  (void)arg;
  if (level <= 0)
    atomic_fetch_add(&g_errors_logged, 1);
  if (level <= 0 && expected != NULL && strstr(msg, expected) != NULL) {
    atomic_fetch_add(&g_expected_errors, 1);
    return;
  }
  if (level <= 1 && getenv("IMMU_TEST_VERBOSE") != NULL)
    fprintf(stderr, "[server %d] %s\n", level, msg);
  else if (level <= 0)
    fprintf(stderr, "[server %d] %s\n", level, msg);
}

/* ------------------------------------------------------------------ */
/* test server                                                         */
/* ------------------------------------------------------------------ */

typedef struct tsrv {
  immu_grpc_server *s;
  pthread_t th;
  int port;
  int running;
} tsrv;

static void *run_thread(void *a) {
  tsrv *t = a;
  immu_grpc_server_run(t->s);
  return NULL;
}

static void base_config(immu_grpc_config *cfg) {
  immu_grpc_config_init(cfg);
  cfg->address = "127.0.0.1";
  cfg->port = 0;
  cfg->workers = 4;
  cfg->max_recv_msg_size = (size_t)1 << 20;
  cfg->uuid = TEST_UUID;
  cfg->on_call_done = on_done;
  cfg->log = quiet_log;
}

static tsrv *tsrv_start(const immu_grpc_config *cfg) {
  tsrv *t = calloc(1, sizeof *t);
  char *err = NULL;
  int rc;
  assert_non_null(t);
  rc = immu_grpc_server_new(
      cfg, k_methods, sizeof k_methods / sizeof k_methods[0], &t->s, &err);
  if (rc != 0)
    fprintf(stderr, "server_new: %d %s\n", rc, err ? err : "");
  assert_int_equal(rc, 0);
  assert_null(err);
  t->port = immu_grpc_server_port(t->s);
  assert_true(t->port > 0);
  assert_int_equal(pthread_create(&t->th, NULL, run_thread, t), 0);
  t->running = 1;
  return t;
}

static void tsrv_stop(tsrv *t, int grace) {
  if (t == NULL)
    return;
  if (t->running) {
    immu_grpc_server_stop(t->s, grace);
    pthread_join(t->th, NULL);
  }
  immu_grpc_server_free(t->s);
  free(t);
}

/* ------------------------------------------------------------------ */
/* minimal HTTP/2 client                                               */
/* ------------------------------------------------------------------ */

typedef struct tstream {
  int32_t id;
  int http_status;
  int grpc_status; /* -1 until seen */
  char grpc_message[256];
  char uuid[64];
  char x_echo[32];
  char x_md_echo[512];
  int nheaders;
  int trailers_only;
  uint8_t *data;
  size_t len, cap;
  int closed;
  uint32_t close_code;
  const uint8_t *req;
  size_t req_len, req_off;
} tstream;

typedef struct tclient {
  int fd;
  SSL *ssl;
  nghttp2_session *h2;
  int goaway;
  uint32_t goaway_code;
  int dead;
} tclient;

static ssize_t tc_send_cb(nghttp2_session *h2, const uint8_t *data, size_t len,
                          int flags, void *ud) {
  tclient *tc = ud;
  ssize_t n;
  (void)h2;
  (void)flags;
  if (tc->ssl != NULL) {
    int r = SSL_write(tc->ssl, data, (int)len);
    if (r <= 0) {
      tc->dead = 1;
      return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    return r;
  }
  n = send(tc->fd, data, len, MSG_NOSIGNAL);
  if (n < 0) {
    tc->dead = 1;
    return NGHTTP2_ERR_CALLBACK_FAILURE;
  }
  return n;
}

static void percent_decode(const uint8_t *v, size_t n, char *out, size_t cap) {
  size_t i, o = 0;
  for (i = 0; i < n && o + 1 < cap; i++) {
    if (v[i] == '%' && i + 2 < n) {
      char hx[3] = {(char)v[i + 1], (char)v[i + 2], 0};
      out[o++] = (char)strtol(hx, NULL, 16);
      i += 2;
    } else {
      out[o++] = (char)v[i];
    }
  }
  out[o] = '\0';
}

static void copy_str(char *dst, size_t cap, const uint8_t *v, size_t n) {
  if (n >= cap)
    n = cap - 1;
  memcpy(dst, v, n);
  dst[n] = '\0';
}

static int tc_on_header(nghttp2_session *h2, const nghttp2_frame *frame,
                        const uint8_t *name, size_t namelen,
                        const uint8_t *value, size_t valuelen, uint8_t flags,
                        void *ud) {
  tstream *st = nghttp2_session_get_stream_user_data(h2, frame->hd.stream_id);
  char tmp[32];
  (void)flags;
  (void)ud;
  if (st == NULL)
    return 0;
#define IS(s) (namelen == sizeof(s) - 1 && memcmp(name, s, namelen) == 0)
  if (IS(":status")) {
    copy_str(tmp, sizeof tmp, value, valuelen);
    st->http_status = atoi(tmp);
  } else if (IS("grpc-status")) {
    copy_str(tmp, sizeof tmp, value, valuelen);
    st->grpc_status = atoi(tmp);
  } else if (IS("grpc-message")) {
    percent_decode(value, valuelen, st->grpc_message, sizeof st->grpc_message);
  } else if (IS("immudb-uuid")) {
    copy_str(st->uuid, sizeof st->uuid, value, valuelen);
  } else if (IS("x-echo")) {
    copy_str(st->x_echo, sizeof st->x_echo, value, valuelen);
  } else if (IS("x-md-echo")) {
    copy_str(st->x_md_echo, sizeof st->x_md_echo, value, valuelen);
  }
#undef IS
  return 0;
}

static int tc_on_frame_recv(nghttp2_session *h2, const nghttp2_frame *frame,
                            void *ud) {
  tclient *tc = ud;
  if (frame->hd.type == NGHTTP2_GOAWAY) {
    tc->goaway = 1;
    tc->goaway_code = frame->goaway.error_code;
  } else if (frame->hd.type == NGHTTP2_HEADERS) {
    tstream *st = nghttp2_session_get_stream_user_data(h2, frame->hd.stream_id);
    if (st != NULL) {
      st->nheaders++;
      if (st->nheaders == 1 && (frame->hd.flags & NGHTTP2_FLAG_END_STREAM))
        st->trailers_only = 1;
    }
  }
  return 0;
}

static int tc_on_data(nghttp2_session *h2, uint8_t flags, int32_t id,
                      const uint8_t *data, size_t len, void *ud) {
  tstream *st = nghttp2_session_get_stream_user_data(h2, id);
  (void)flags;
  (void)ud;
  if (st == NULL)
    return 0;
  if (st->len + len > st->cap) {
    size_t nc = st->cap ? st->cap : 4096;
    while (nc < st->len + len)
      nc *= 2;
    st->data = realloc(st->data, nc);
    if (st->data == NULL)
      return NGHTTP2_ERR_CALLBACK_FAILURE;
    st->cap = nc;
  }
  memcpy(st->data + st->len, data, len);
  st->len += len;
  return 0;
}

static int tc_on_close(nghttp2_session *h2, int32_t id, uint32_t code,
                       void *ud) {
  tstream *st = nghttp2_session_get_stream_user_data(h2, id);
  (void)ud;
  if (st != NULL) {
    st->closed = 1;
    st->close_code = code;
  }
  return 0;
}

static ssize_t tc_req_read(nghttp2_session *h2, int32_t id, uint8_t *buf,
                           size_t len, uint32_t *flags,
                           nghttp2_data_source *src, void *ud) {
  tstream *st = src->ptr;
  size_t n = st->req_len - st->req_off;
  (void)h2;
  (void)id;
  (void)ud;
  if (n > len)
    n = len;
  memcpy(buf, st->req + st->req_off, n);
  st->req_off += n;
  if (st->req_off == st->req_len)
    *flags |= NGHTTP2_DATA_FLAG_EOF;
  return (ssize_t)n;
}

static int tcp_connect(int port) {
  struct sockaddr_in sa;
  struct timeval tv = {5, 0};
  int one = 1;
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  assert_true(fd >= 0);
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_port = htons((uint16_t)port);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
    close(fd);
    return -1;
  }
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return fd;
}

/* Connects (TLS when |ctx| is set). Returns NULL if the TCP or TLS
 * connection fails. */
static tclient *tc_connect2(int port, SSL_CTX *ctx, uint32_t peer_max);

static tclient *tc_connect(int port, SSL_CTX *ctx) {
  return tc_connect2(port, ctx, 0);
}

/* |peer_max| != 0: assume the server allows that many streams before its
 * SETTINGS arrives (to exceed the server's limit on purpose). */
static tclient *tc_connect2(int port, SSL_CTX *ctx, uint32_t peer_max) {
  tclient *tc = calloc(1, sizeof *tc);
  nghttp2_session_callbacks *cbs;
  nghttp2_option *opt;
  nghttp2_settings_entry iv[2] = {
      {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 1u << 20},
      {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 1000}};
  assert_non_null(tc);
  tc->fd = tcp_connect(port);
  if (tc->fd < 0) {
    free(tc);
    return NULL;
  }
  if (ctx != NULL) {
    tc->ssl = SSL_new(ctx);
    assert_non_null(tc->ssl);
    SSL_set_fd(tc->ssl, tc->fd);
    if (SSL_connect(tc->ssl) != 1) {
      ERR_clear_error();
      SSL_free(tc->ssl);
      close(tc->fd);
      free(tc);
      return NULL;
    }
  }
  assert_int_equal(nghttp2_session_callbacks_new(&cbs), 0);
  nghttp2_session_callbacks_set_send_callback(cbs, tc_send_cb);
  nghttp2_session_callbacks_set_on_header_callback(cbs, tc_on_header);
  nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, tc_on_frame_recv);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, tc_on_data);
  nghttp2_session_callbacks_set_on_stream_close_callback(cbs, tc_on_close);
  assert_int_equal(nghttp2_option_new(&opt), 0);
  if (peer_max != 0)
    nghttp2_option_set_peer_max_concurrent_streams(opt, peer_max);
  /* Let test_header_list_limit send more than the server accepts. */
  nghttp2_option_set_max_send_header_block_length(opt, 256u << 10);
  assert_int_equal(nghttp2_session_client_new2(&tc->h2, cbs, tc, opt), 0);
  nghttp2_option_del(opt);
  nghttp2_session_callbacks_del(cbs);
  assert_int_equal(nghttp2_submit_settings(tc->h2, NGHTTP2_FLAG_NONE, iv, 2),
                   0);
  assert_int_equal(nghttp2_session_set_local_window_size(
                       tc->h2, NGHTTP2_FLAG_NONE, 0, 8 << 20),
                   0);
  return tc;
}

static void tc_free(tclient *tc) {
  if (tc == NULL)
    return;
  nghttp2_session_del(tc->h2);
  if (tc->ssl != NULL) {
    SSL_shutdown(tc->ssl);
    SSL_free(tc->ssl);
  }
  close(tc->fd);
  free(tc);
}

static void ts_reset(tstream *st) {
  free(st->data);
  memset(st, 0, sizeof *st);
  st->grpc_status = -1;
}

/* Starts a call; |hdrs| are extra name/value pairs (NULL-terminated). The
 * request body (already framed) must stay valid while it is sent. */
static int32_t tc_start(tclient *tc, tstream *st, const char *path,
                        const char *const *hdrs, const char *timeout,
                        const uint8_t *body, size_t body_len) {
  nghttp2_nv nv[32];
  size_t n = 0;
  nghttp2_data_provider prd;
#define NV(nm, val)                                                            \
  do {                                                                         \
    nv[n].name = (uint8_t *)(uintptr_t)(nm);                                   \
    nv[n].namelen = strlen(nm);                                                \
    nv[n].value = (uint8_t *)(uintptr_t)(val);                                 \
    nv[n].valuelen = strlen(val);                                              \
    nv[n].flags = NGHTTP2_NV_FLAG_NONE;                                        \
    n++;                                                                       \
  } while (0)
  NV(":method", "POST");
  NV(":scheme", tc->ssl ? "https" : "http");
  NV(":path", path);
  NV(":authority", "localhost");
  NV("content-type", "application/grpc");
  NV("te", "trailers");
  if (timeout != NULL)
    NV("grpc-timeout", timeout);
  while (hdrs != NULL && hdrs[0] != NULL && n + 1 < 32) {
    NV(hdrs[0], hdrs[1]);
    hdrs += 2;
  }
#undef NV
  st->req = body;
  st->req_len = body_len;
  st->req_off = 0;
  prd.source.ptr = st;
  prd.read_callback = tc_req_read;
  st->id = nghttp2_submit_request(tc->h2, NULL, nv, n,
                                  body_len > 0 ? &prd : NULL, st);
  assert_true(st->id > 0);
  return st->id;
}

/* One poll + read (up to |ms|). Returns 1 on data, 0 on timeout, -1 if the
 * connection is gone. */
static int tc_read_some(tclient *tc, int ms) {
  uint8_t buf[65536];
  ssize_t n;
  if (tc->ssl == NULL || SSL_pending(tc->ssl) == 0) {
    struct pollfd p = {tc->fd, POLLIN, 0};
    int r = poll(&p, 1, ms);
    if (r <= 0)
      return 0;
  }
  if (tc->ssl != NULL) {
    int r = SSL_read(tc->ssl, buf, (int)sizeof buf);
    n = r;
    if (r <= 0)
      ERR_clear_error();
  } else {
    n = recv(tc->fd, buf, sizeof buf, 0);
  }
  if (n <= 0) {
    tc->dead = 1;
    return -1;
  }
  if (nghttp2_session_mem_recv(tc->h2, buf, (size_t)n) < 0) {
    tc->dead = 1;
    return -1;
  }
  return 1;
}

typedef int (*done_fn)(void *arg);

/* Sends what nghttp2 has queued and reads until |done| or |ms| elapse. */
static int tc_pump(tclient *tc, int ms, done_fn done, void *arg) {
  int64_t end = mono_ms() + ms;
  for (;;) {
    int64_t left;
    if (!tc->dead && nghttp2_session_want_write(tc->h2) &&
        nghttp2_session_send(tc->h2) != 0)
      tc->dead = 1;
    if (done != NULL && done(arg))
      return 1;
    if (tc->dead)
      return done != NULL ? done(arg) : 0;
    left = end - mono_ms();
    if (left <= 0)
      return 0;
    tc_read_some(tc, left < 20 ? (int)left : 20);
  }
}

static int st_closed(void *arg) {
  return ((tstream *)arg)->closed;
}

typedef struct many {
  tstream *st;
  size_t n;
} many;

static int all_closed(void *arg) {
  many *m = arg;
  size_t i;
  for (i = 0; i < m->n; i++)
    if (!m->st[i].closed)
      return 0;
  return 1;
}

/* i-th gRPC message of a response; NULL past the end. */
static const uint8_t *resp_msg(const tstream *st, size_t i, size_t *len) {
  size_t off = 0, k = 0;
  while (off + 5 <= st->len) {
    size_t mlen = get_be32(st->data + off + 1);
    if (off + 5 + mlen > st->len)
      return NULL;
    if (k == i) {
      *len = mlen;
      return st->data + off + 5;
    }
    off += 5 + mlen;
    k++;
  }
  return NULL;
}

static size_t resp_count(const tstream *st) {
  size_t off = 0, k = 0;
  while (off + 5 <= st->len) {
    size_t mlen = get_be32(st->data + off + 1);
    if (off + 5 + mlen > st->len)
      break;
    off += 5 + mlen;
    k++;
  }
  return k;
}

/* A unary Echo round trip on |tc|; returns 1 if it worked. */
static int echo_ok(tclient *tc, const char *text) {
  tstream st;
  uint8_t *body = NULL;
  size_t blen = 0, mlen = 0;
  const uint8_t *m;
  int ok;
  memset(&st, 0, sizeof st);
  st.grpc_status = -1;
  frame_append(&body, &blen, (const uint8_t *)text, strlen(text));
  tc_start(tc, &st, "/t.T/Echo", NULL, NULL, body, blen);
  tc_pump(tc, 5000, st_closed, &st);
  m = resp_msg(&st, 0, &mlen);
  ok = st.closed && st.grpc_status == 0 && m != NULL && mlen == strlen(text) &&
       memcmp(m, text, mlen) == 0 && strcmp(st.uuid, TEST_UUID) == 0;
  ts_reset(&st);
  free(body);
  return ok;
}

/* ------------------------------------------------------------------ */
/* fixture: one shared server for most tests                           */
/* ------------------------------------------------------------------ */

static tsrv *g_srv;

static int group_setup(void **state) {
  immu_grpc_config cfg;
  (void)state;
  base_config(&cfg);
  g_srv = tsrv_start(&cfg);
  return 0;
}

static int group_teardown(void **state) {
  (void)state;
  tsrv_stop(g_srv, 2);
  g_srv = NULL;
  return 0;
}

/* ------------------------------------------------------------------ */
/* tests                                                               */
/* ------------------------------------------------------------------ */

static void test_unary_echo(void **state) {
  tclient *tc = tc_connect(g_srv->port, NULL);
  tstream st;
  uint8_t *body = NULL;
  size_t blen = 0, mlen = 0;
  const uint8_t *m;
  const char *hdrs[] = {"x-md", "meta-value", NULL};
  (void)state;
  assert_non_null(tc);
  memset(&st, 0, sizeof st);
  st.grpc_status = -1;
  frame_append(&body, &blen, (const uint8_t *)"hello", 5);
  tc_start(tc, &st, "/t.T/Echo", hdrs, NULL, body, blen);
  assert_true(tc_pump(tc, 5000, st_closed, &st));
  assert_int_equal(st.http_status, 200);
  assert_int_equal(st.grpc_status, 0);
  assert_int_equal(st.close_code, NGHTTP2_NO_ERROR);
  assert_string_equal(st.uuid, TEST_UUID);
  assert_string_equal(st.x_echo, "yes");
  assert_string_equal(st.x_md_echo, "meta-value");
  assert_int_equal(st.nheaders, 2); /* headers + trailers */
  assert_int_equal(resp_count(&st), 1);
  m = resp_msg(&st, 0, &mlen);
  assert_int_equal(mlen, 5);
  assert_memory_equal(m, "hello", 5);

  /* Many headers, a long one last, and two messages larger than the
   * first request buffer: the call's header and message storage grows. */
  {
    const char *hv[2 * 21 + 1];
    char names[20][16], vals[20][16], longv[400];
    uint8_t big[3000];
    for (int i = 0; i < 20; i++) {
      snprintf(names[i], sizeof names[i], "x-a%d", i);
      snprintf(vals[i], sizeof vals[i], "v%d", i);
      hv[2 * i] = names[i];
      hv[2 * i + 1] = vals[i];
    }
    memset(longv, 'L', sizeof longv - 1);
    longv[sizeof longv - 1] = '\0';
    hv[40] = "x-md";
    hv[41] = longv;
    hv[42] = NULL;
    for (size_t i = 0; i < sizeof big; i++)
      big[i] = (uint8_t)(i * 7);
    ts_reset(&st);
    free(body);
    body = NULL;
    blen = 0;
    frame_append(&body, &blen, big, sizeof big);
    frame_append(&body, &blen, (const uint8_t *)"tail", 4);
    tc_start(tc, &st, "/t.T/Echo", hv, NULL, body, blen);
    assert_true(tc_pump(tc, 5000, st_closed, &st));
    assert_int_equal(st.grpc_status, 0);
    assert_string_equal(st.x_md_echo, longv);
    assert_int_equal(resp_count(&st), 2);
    m = resp_msg(&st, 0, &mlen);
    assert_int_equal(mlen, sizeof big);
    assert_memory_equal(m, big, sizeof big);
    m = resp_msg(&st, 1, &mlen);
    assert_int_equal(mlen, 4);
    assert_memory_equal(m, "tail", 4);
  }

  /* An empty message and an error status with a percent-encoded text. */
  ts_reset(&st);
  free(body);
  body = NULL;
  blen = 0;
  frame_append(&body, &blen, NULL, 0);
  tc_start(tc, &st, "/t.T/Echo", NULL, NULL, body, blen);
  assert_true(tc_pump(tc, 5000, st_closed, &st));
  assert_int_equal(st.grpc_status, 0);
  assert_int_equal(resp_count(&st), 1);
  resp_msg(&st, 0, &mlen);
  assert_int_equal(mlen, 0);

  ts_reset(&st);
  tc_start(tc, &st, "/t.T/Fail", NULL, NULL, body, blen);
  assert_true(tc_pump(tc, 5000, st_closed, &st));
  assert_int_equal(st.grpc_status, IMMU_GRPC_INVALID_ARGUMENT);
  assert_string_equal(st.grpc_message, "bad 100% thing\n\xc3\xa9");
  assert_true(st.trailers_only);
  assert_string_equal(st.uuid, TEST_UUID);
  ts_reset(&st);
  free(body);
  tc_free(tc);
}

static void test_concurrent_100(void **state) {
  enum { N = 100 };
  tclient *tc = tc_connect(g_srv->port, NULL);
  tstream *st = calloc(N, sizeof *st);
  uint8_t *bodies[N];
  size_t blens[N];
  many m = {st, N};
  size_t i;
  (void)state;
  assert_non_null(tc);
  assert_non_null(st);
  for (i = 0; i < N; i++) {
    char text[32];
    snprintf(text, sizeof text, "message-%zu", i);
    bodies[i] = NULL;
    blens[i] = 0;
    frame_append(&bodies[i], &blens[i], (const uint8_t *)text, strlen(text));
    st[i].grpc_status = -1;
    tc_start(tc, &st[i], "/t.T/Echo", NULL, NULL, bodies[i], blens[i]);
  }
  assert_true(tc_pump(tc, 10000, all_closed, &m));
  for (i = 0; i < N; i++) {
    char text[32];
    size_t mlen = 0;
    const uint8_t *msg = resp_msg(&st[i], 0, &mlen);
    snprintf(text, sizeof text, "message-%zu", i);
    assert_int_equal(st[i].grpc_status, 0);
    assert_non_null(msg);
    assert_int_equal(mlen, strlen(text));
    assert_memory_equal(msg, text, mlen);
    ts_reset(&st[i]);
    free(bodies[i]);
  }
  free(st);
  tc_free(tc);
}

static void stream_request(uint8_t **body, size_t *blen, uint32_t count,
                           uint32_t size) {
  uint8_t req[8];
  put_be32(req, count);
  put_be32(req + 4, size);
  *body = NULL;
  *blen = 0;
  frame_append(body, blen, req, sizeof req);
}

static void test_server_stream_1000(void **state) {
  tclient *tc = tc_connect(g_srv->port, NULL);
  tstream st;
  uint8_t *body;
  size_t blen, i;
  (void)state;
  assert_non_null(tc);
  memset(&st, 0, sizeof st);
  st.grpc_status = -1;
  stream_request(&body, &blen, 1000, 16);
  tc_start(tc, &st, "/t.T/Stream", NULL, NULL, body, blen);
  assert_true(tc_pump(tc, 10000, st_closed, &st));
  assert_int_equal(st.grpc_status, 0);
  assert_int_equal(resp_count(&st), 1000);
  for (i = 0; i < 1000; i++) {
    size_t mlen = 0;
    const uint8_t *m = resp_msg(&st, i, &mlen);
    assert_int_equal(mlen, 16);
    assert_int_equal(get_be32(m), i);
  }
  ts_reset(&st);
  free(body);
  tc_free(tc);
}

static void test_server_stream_20mib_backpressure(void **state) {
  enum { COUNT = 320, SIZE = 65536 };
  tclient *tc = tc_connect(g_srv->port, NULL);
  tstream st;
  uint8_t *body;
  size_t blen, i;
  long sent;
  (void)state;
  assert_non_null(tc);
  memset(&st, 0, sizeof st);
  st.grpc_status = -1;
  atomic_store(&g_stream_sent, 0);
  atomic_store(&g_stream_done, 0);
  stream_request(&body, &blen, COUNT, SIZE);
  tc_start(tc, &st, "/t.T/Stream", NULL, NULL, body, blen);
  /* Send the request, then do not read for a while: the handler must block
   * once ~4 MiB are queued (plus what the 1 MiB flow-control window let
   * out), not run ahead to 20 MiB. */
  assert_int_equal(nghttp2_session_send(tc->h2), 0);
  sleep_ms(500);
  sent = atomic_load(&g_stream_sent);
  assert_true(sent > 0);
  assert_true(sent <= 7L * 1024 * 1024);
  assert_int_equal(atomic_load(&g_stream_done), 0);

  assert_true(tc_pump(tc, 30000, st_closed, &st));
  assert_int_equal(st.grpc_status, 0);
  assert_int_equal(atomic_load(&g_stream_rc), 0);
  assert_int_equal(st.len, (size_t)COUNT * (SIZE + 5));
  assert_int_equal(resp_count(&st), COUNT);
  for (i = 0; i < COUNT; i++) {
    size_t mlen = 0;
    const uint8_t *m = resp_msg(&st, i, &mlen);
    assert_int_equal(mlen, SIZE);
    assert_int_equal(get_be32(m), i);
    assert_int_equal(m[SIZE - 1], (uint8_t)(i & 0xff));
  }
  ts_reset(&st);
  free(body);
  tc_free(tc);
}

static void test_cancel_unblocks_sender(void **state) {
  tclient *tc = tc_connect(g_srv->port, NULL);
  tstream st;
  uint8_t *body;
  size_t blen;
  int64_t end;
  (void)state;
  assert_non_null(tc);
  memset(&st, 0, sizeof st);
  st.grpc_status = -1;
  atomic_store(&g_stream_done, 0);
  atomic_store(&g_stream_rc, 0);
  stream_request(&body, &blen, 1000, 65536);
  tc_start(tc, &st, "/t.T/Stream", NULL, NULL, body, blen);
  assert_int_equal(nghttp2_session_send(tc->h2), 0);
  sleep_ms(300); /* the handler is now blocked in send */
  assert_int_equal(atomic_load(&g_stream_done), 0);
  nghttp2_submit_rst_stream(tc->h2, NGHTTP2_FLAG_NONE, st.id, NGHTTP2_CANCEL);
  assert_int_equal(nghttp2_session_send(tc->h2), 0);
  end = mono_ms() + 3000;
  while (!atomic_load(&g_stream_done) && mono_ms() < end) {
    tc_read_some(tc, 10);
  }
  assert_int_equal(atomic_load(&g_stream_done), 1);
  assert_int_equal(atomic_load(&g_stream_rc), IMMU_ECLOSED);
  /* The connection is still good. */
  assert_true(echo_ok(tc, "after-cancel"));
  ts_reset(&st);
  free(body);
  tc_free(tc);
}

static void test_client_stream_50(void **state) {
  tclient *tc = tc_connect(g_srv->port, NULL);
  tstream st;
  uint8_t *body = NULL, *msg = malloc(5000);
  size_t blen = 0, i, mlen = 0;
  const uint8_t *m;
  (void)state;
  assert_non_null(tc);
  assert_non_null(msg);
  for (i = 0; i < 50; i++) {
    memset(msg, (int)(i & 0xff), i * 100);
    frame_append(&body, &blen, msg, i * 100);
  }
  memset(&st, 0, sizeof st);
  st.grpc_status = -1;
  tc_start(tc, &st, "/t.T/Collect", NULL, NULL, body, blen);
  assert_true(tc_pump(tc, 5000, st_closed, &st));
  assert_int_equal(st.grpc_status, 0);
  m = resp_msg(&st, 0, &mlen);
  assert_non_null(m);
  assert_int_equal(mlen, 8);
  assert_int_equal(get_be32(m), 50);
  assert_int_equal(get_be32(m + 4), 100 * (49 * 50 / 2));
  ts_reset(&st);
  free(body);
  free(msg);
  tc_free(tc);
}

static void test_unknown_path(void **state) {
  tclient *tc = tc_connect(g_srv->port, NULL);
  tstream st;
  uint8_t *body = NULL;
  size_t blen = 0;
  int64_t end;
  (void)state;
  assert_non_null(tc);
  frame_append(&body, &blen, (const uint8_t *)"x", 1);
  memset(&st, 0, sizeof st);
  st.grpc_status = -1;
  atomic_store(&g_unimplemented_done, 0);
  tc_start(tc, &st, "/nope.Svc/Missing", NULL, NULL, body, blen);
  assert_true(tc_pump(tc, 5000, st_closed, &st));
  assert_int_equal(st.http_status, 200);
  assert_int_equal(st.grpc_status, IMMU_GRPC_UNIMPLEMENTED);
  assert_string_equal(st.grpc_message, "unknown method /nope.Svc/Missing");
  assert_true(st.trailers_only);
  assert_string_equal(st.uuid, TEST_UUID);
  /* The metrics hook saw it (runs on the loop thread at stream close). */
  end = mono_ms() + 2000;
  while (atomic_load(&g_unimplemented_done) == 0 && mono_ms() < end)
    sleep_ms(5);
  assert_int_equal(atomic_load(&g_unimplemented_done), 1);
  assert_true(echo_ok(tc, "still-fine"));
  ts_reset(&st);
  free(body);
  tc_free(tc);
}

static void test_oversized_message(void **state) {
  tclient *tc = tc_connect(g_srv->port, NULL);
  tstream st;
  uint8_t *body = NULL, *big = calloc(1, 2u << 20);
  size_t blen = 0;
  (void)state;
  assert_non_null(tc);
  assert_non_null(big);
  frame_append(&body, &blen, big, 2u << 20);
  memset(&st, 0, sizeof st);
  st.grpc_status = -1;
  tc_start(tc, &st, "/t.T/Echo", NULL, NULL, body, blen);
  assert_true(tc_pump(tc, 10000, st_closed, &st));
  assert_int_equal(st.grpc_status, IMMU_GRPC_RESOURCE_EXHAUSTED);
  assert_string_equal(
      st.grpc_message,
      "grpc: received message larger than max (2097152 vs. 1048576)");
  assert_string_equal(st.uuid, TEST_UUID);
  assert_false(tc->dead);
  assert_true(echo_ok(tc, "after-oversize"));
  ts_reset(&st);
  free(body);
  free(big);
  tc_free(tc);
}

static void test_compressed_rejected(void **state) {
  tclient *tc = tc_connect(g_srv->port, NULL);
  tstream st;
  uint8_t *body = NULL;
  size_t blen = 0;
  (void)state;
  assert_non_null(tc);
  frame_append(&body, &blen, (const uint8_t *)"zz", 2);
  body[0] = 1; /* compressed flag */
  memset(&st, 0, sizeof st);
  st.grpc_status = -1;
  tc_start(tc, &st, "/t.T/Echo", NULL, NULL, body, blen);
  assert_true(tc_pump(tc, 5000, st_closed, &st));
  assert_int_equal(st.grpc_status, IMMU_GRPC_UNIMPLEMENTED);
  assert_string_equal(st.grpc_message, "compression not supported");
  ts_reset(&st);
  free(body);
  tc_free(tc);
}

static void test_deadline(void **state) {
  tclient *tc = tc_connect(g_srv->port, NULL);
  tstream st;
  uint8_t *body = NULL;
  size_t blen = 0;
  int64_t t0, end;
  (void)state;
  assert_non_null(tc);
  frame_append(&body, &blen, NULL, 0);
  memset(&st, 0, sizeof st);
  st.grpc_status = -1;
  atomic_store(&g_sleep_cancelled, 0);
  t0 = mono_ms();
  tc_start(tc, &st, "/t.T/Sleep", NULL, "50m", body, blen);
  assert_true(tc_pump(tc, 5000, st_closed, &st));
  assert_true(mono_ms() - t0 < 1500);
  assert_int_equal(st.grpc_status, IMMU_GRPC_DEADLINE_EXCEEDED);
  assert_string_equal(st.uuid, TEST_UUID);
  end = mono_ms() + 2000;
  while (!atomic_load(&g_sleep_cancelled) && mono_ms() < end)
    sleep_ms(5);
  assert_int_equal(atomic_load(&g_sleep_cancelled), 1);

  /* A malformed grpc-timeout is refused before the handler runs. */
  ts_reset(&st);
  tc_start(tc, &st, "/t.T/Echo", NULL, "12x", body, blen);
  assert_true(tc_pump(tc, 5000, st_closed, &st));
  assert_int_equal(st.grpc_status, IMMU_GRPC_INTERNAL);
  ts_reset(&st);
  free(body);
  tc_free(tc);
}

static void test_rapid_reset(void **state) {
  tclient *other = tc_connect(g_srv->port, NULL);
  tclient *tc = tc_connect(g_srv->port, NULL);
  tstream st;
  int i, sent = 0;
  (void)state;
  assert_non_null(other);
  assert_non_null(tc);
  assert_true(echo_ok(other, "before"));
  memset(&st, 0, sizeof st);
  for (i = 0; i < 1000 && !tc->goaway && !tc->dead; i++) {
    int32_t id = tc_start(tc, &st, "/t.T/Echo", NULL, NULL, NULL, 0);
    if (nghttp2_session_send(tc->h2) != 0)
      break;
    nghttp2_submit_rst_stream(tc->h2, NGHTTP2_FLAG_NONE, id, NGHTTP2_CANCEL);
    if (nghttp2_session_send(tc->h2) != 0)
      break;
    sent++;
    if (i % 25 == 0)
      while (tc_read_some(tc, 0) > 0) {
      }
  }
  /* Collect what is left (the GOAWAY), bounded. */
  {
    int64_t end = mono_ms() + 3000;
    while (!tc->goaway && !tc->dead && mono_ms() < end)
      tc_read_some(tc, 20);
  }
  assert_true(tc->goaway);
  assert_int_equal(tc->goaway_code, NGHTTP2_ENHANCE_YOUR_CALM);
  assert_true(sent > 200); /* the client may well finish before it reads */
  /* The server is fine for other connections, old and new. */
  assert_true(echo_ok(other, "after"));
  tc_free(tc);
  tc = tc_connect(g_srv->port, NULL);
  assert_non_null(tc);
  assert_true(echo_ok(tc, "new"));
  tc_free(tc);
  tc_free(other);
}

static void test_garbage_preface(void **state) {
  tclient *other = tc_connect(g_srv->port, NULL);
  static const char junk[] =
      "GET / HTTP/1.1\r\nHost: x\r\n\r\n\x01\x02\x03garbage garbage garbage";
  char buf[4096];
  int fd, closed = 0;
  int64_t end;
  (void)state;
  assert_non_null(other);
  assert_true(echo_ok(other, "before"));
  fd = tcp_connect(g_srv->port);
  assert_true(fd >= 0);
  assert_int_equal(send(fd, junk, sizeof junk - 1, MSG_NOSIGNAL),
                   (ssize_t)(sizeof junk - 1));
  end = mono_ms() + 3000;
  while (mono_ms() < end) {
    struct pollfd p = {fd, POLLIN, 0};
    ssize_t n;
    if (poll(&p, 1, 50) <= 0)
      continue;
    n = recv(fd, buf, sizeof buf, 0);
    if (n <= 0) {
      closed = 1;
      break;
    }
  }
  close(fd);
  assert_true(closed);
  assert_true(echo_ok(other, "after"));
  tc_free(other);
}

static void test_header_list_limit(void **state) {
  tclient *tc = tc_connect(g_srv->port, NULL);
  tstream st;
  uint8_t *body = NULL;
  size_t blen = 0;
  char *val = malloc(8001);
  const char *hdrs[21];
  static const char *const names[10] = {"x-b0", "x-b1", "x-b2", "x-b3", "x-b4",
                                        "x-b5", "x-b6", "x-b7", "x-b8", "x-b9"};
  int i;
  (void)state;
  assert_non_null(tc);
  assert_non_null(val);
  memset(val, 'a', 8000);
  val[8000] = '\0';
  for (i = 0; i < 10; i++) { /* ~80 KiB of header list > 64 KiB */
    hdrs[2 * i] = names[i];
    hdrs[2 * i + 1] = val;
  }
  hdrs[20] = NULL;
  frame_append(&body, &blen, (const uint8_t *)"x", 1);
  memset(&st, 0, sizeof st);
  st.grpc_status = -1;
  tc_start(tc, &st, "/t.T/Echo", hdrs, NULL, body, blen);
  assert_true(tc_pump(tc, 5000, st_closed, &st));
  assert_int_equal(st.grpc_status, IMMU_GRPC_RESOURCE_EXHAUSTED);
  assert_true(echo_ok(tc, "after-big-headers"));
  ts_reset(&st);
  free(body);
  free(val);
  tc_free(tc);
}

static void test_refused_streams(void **state) {
  enum { N = 20, MAX = 10 };
  immu_grpc_config cfg;
  tsrv *t;
  tclient *tc;
  tstream *st = calloc(N, sizeof *st);
  many m = {st, N};
  uint8_t *body = NULL;
  size_t blen = 0, i;
  int ok = 0, refused = 0;
  (void)state;
  assert_non_null(st);
  base_config(&cfg);
  cfg.max_concurrent_streams = MAX;
  t = tsrv_start(&cfg);
  tc = tc_connect2(t->port, NULL, 1000);
  assert_non_null(tc);
  frame_append(&body, &blen, NULL, 0);
  for (i = 0; i < N; i++) {
    st[i].grpc_status = -1;
    tc_start(tc, &st[i], "/t.T/Slow", NULL, NULL, body, blen);
  }
  /* All HEADERS leave before the server's SETTINGS is read (and acked). */
  assert_int_equal(nghttp2_session_send(tc->h2), 0);
  assert_true(tc_pump(tc, 10000, all_closed, &m));
  for (i = 0; i < N; i++) {
    if (st[i].grpc_status == 0)
      ok++;
    else if (st[i].close_code == NGHTTP2_REFUSED_STREAM)
      refused++;
    ts_reset(&st[i]);
  }
  assert_int_equal(ok, MAX);
  assert_int_equal(refused, N - MAX);
  assert_false(tc->goaway);
  assert_true(echo_ok(tc, "after-refused"));
  tc_free(tc);
  free(st);
  free(body);
  tsrv_stop(t, 1);
}

static void test_header_timeout(void **state) {

  immu_grpc_config cfg;
  tsrv *t;
  char buf[256];
  int fd, closed = 0;
  int64_t t0, end;
  (void)state;
  base_config(&cfg);
  cfg.header_timeout_s = 1;
  t = tsrv_start(&cfg);
  fd = tcp_connect(t->port);
  assert_true(fd >= 0);
  t0 = mono_ms();
  end = t0 + 4000;
  while (mono_ms() < end) {
    struct pollfd p = {fd, POLLIN, 0};
    ssize_t n;
    if (poll(&p, 1, 50) <= 0)
      continue;
    n = recv(fd, buf, sizeof buf, 0); /* the server SETTINGS, then EOF */
    if (n <= 0) {
      closed = 1;
      break;
    }
  }
  close(fd);
  assert_true(closed);
  assert_true(mono_ms() - t0 >= 900);
  tsrv_stop(t, 1);
}

static void test_connection_cap(void **state) {
  enum { TOTAL = 200, CAP = 100 };
  immu_grpc_config cfg;
  tsrv *t;
  int fds[TOTAL], state_of[TOTAL]; /* 0 unknown, 1 served, 2 refused */
  int i, served = 0, refused = 0, ok = 0;
  int64_t end;
  tclient *tc;
  (void)state;
  base_config(&cfg);
  cfg.max_connections = CAP;
  t = tsrv_start(&cfg);
  for (i = 0; i < TOTAL; i++) {
    fds[i] = tcp_connect(t->port);
    assert_true(fds[i] >= 0);
    state_of[i] = 0;
  }
  /* A served connection gets the server's SETTINGS; a refused one EOF. */
  end = mono_ms() + 5000;
  while (served + refused < TOTAL && mono_ms() < end) {
    for (i = 0; i < TOTAL; i++) {
      struct pollfd p = {fds[i], POLLIN, 0};
      char buf[256];
      ssize_t n;
      if (state_of[i] != 0 || poll(&p, 1, 0) <= 0)
        continue;
      n = recv(fds[i], buf, sizeof buf, 0);
      if (n > 0) {
        state_of[i] = 1;
        served++;
      } else {
        state_of[i] = 2;
        refused++;
      }
    }
    sleep_ms(5);
  }
  assert_int_equal(served, CAP);
  assert_int_equal(refused, TOTAL - CAP);
  for (i = 0; i < TOTAL; i++)
    close(fds[i]);
  /* Slots come back once the server sees the closes. */
  end = mono_ms() + 5000;
  while (!ok && mono_ms() < end) {
    tc = tc_connect(t->port, NULL);
    assert_non_null(tc);
    ok = echo_ok(tc, "after-cap");
    tc_free(tc);
    if (!ok)
      sleep_ms(50);
  }
  assert_true(ok);
  tsrv_stop(t, 1);
}

/* --- TLS --- */

static void make_cert(EVP_PKEY **pkey, X509 **crt) {
  EVP_PKEY *k = EVP_EC_gen("P-256");
  X509 *x = X509_new();
  X509_NAME *nm;
  assert_non_null(k);
  assert_non_null(x);
  assert_int_equal(X509_set_version(x, 2), 1);
  ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
  X509_gmtime_adj(X509_getm_notBefore(x), -60);
  X509_gmtime_adj(X509_getm_notAfter(x), 3600);
  assert_int_equal(X509_set_pubkey(x, k), 1);
  nm = X509_get_subject_name(x);
  X509_NAME_add_entry_by_txt(nm, "CN", MBSTRING_ASC,
                             (const unsigned char *)"localhost", -1, -1, 0);
  assert_int_equal(X509_set_issuer_name(x, nm), 1);
  assert_true(X509_sign(x, k, EVP_sha256()) > 0);
  *pkey = k;
  *crt = x;
}

static void test_tls_alpn(void **state) {
  immu_grpc_config cfg;
  EVP_PKEY *pkey;
  X509 *crt;
  SSL_CTX *sctx, *cctx, *cctx_h1;
  tsrv *t;
  tclient *tc;
  const unsigned char *proto = NULL;
  unsigned plen = 0;
  (void)state;
  make_cert(&pkey, &crt);
  sctx = SSL_CTX_new(TLS_server_method());
  assert_non_null(sctx);
  SSL_CTX_set_min_proto_version(sctx, TLS1_2_VERSION);
  assert_int_equal(SSL_CTX_use_certificate(sctx, crt), 1);
  assert_int_equal(SSL_CTX_use_PrivateKey(sctx, pkey), 1);

  cctx = SSL_CTX_new(TLS_client_method());
  assert_non_null(cctx);
  assert_int_equal(X509_STORE_add_cert(SSL_CTX_get_cert_store(cctx), crt), 1);
  SSL_CTX_set_verify(cctx, SSL_VERIFY_PEER, NULL);
  assert_int_equal(
      SSL_CTX_set_alpn_protos(cctx, (const unsigned char *)"\x02h2", 3), 0);
  cctx_h1 = SSL_CTX_new(TLS_client_method());
  assert_non_null(cctx_h1);
  assert_int_equal(SSL_CTX_set_alpn_protos(
                       cctx_h1, (const unsigned char *)"\x08http/1.1", 9),
                   0);

  base_config(&cfg);
  cfg.ssl_ctx = sctx;
  t = tsrv_start(&cfg);

  tc = tc_connect(t->port, cctx);
  assert_non_null(tc);
  SSL_get0_alpn_selected(tc->ssl, &proto, &plen);
  assert_int_equal(plen, 2);
  assert_memory_equal(proto, "h2", 2);
  assert_true(echo_ok(tc, "over-tls"));
  assert_true(echo_ok(tc, "again"));
  tc_free(tc);

  /* A client that offers ALPN without h2 fails the handshake. */
  tc = tc_connect(t->port, cctx_h1);
  assert_null(tc);

  /* Cleartext HTTP/2 to a TLS port does not work either. */
  tc = tc_connect(t->port, NULL);
  assert_non_null(tc);
  assert_false(echo_ok(tc, "cleartext"));
  tc_free(tc);

  tsrv_stop(t, 1);
  SSL_CTX_free(cctx_h1);
  SSL_CTX_free(cctx);
  SSL_CTX_free(sctx);
  X509_free(crt);
  EVP_PKEY_free(pkey);
}

/* --- graceful stop --- */

static void test_graceful_stop(void **state) {
  immu_grpc_config cfg;
  tsrv *t;
  tclient *tc;
  tstream st;
  uint8_t *body = NULL;
  size_t blen = 0, mlen = 0;
  const uint8_t *m;
  int64_t end, t0;
  int fd;
  (void)state;
  base_config(&cfg);
  t = tsrv_start(&cfg);
  tc = tc_connect(t->port, NULL);
  assert_non_null(tc);
  frame_append(&body, &blen, NULL, 0);
  memset(&st, 0, sizeof st);
  st.grpc_status = -1;
  atomic_store(&g_slow_started, 0);
  tc_start(tc, &st, "/t.T/Slow", NULL, NULL, body, blen);
  end = mono_ms() + 3000;
  while (!atomic_load(&g_slow_started) && mono_ms() < end)
    tc_pump(tc, 10, NULL, NULL);
  assert_true(atomic_load(&g_slow_started));

  t0 = mono_ms();
  immu_grpc_server_stop(t->s, 5);
  assert_true(tc_pump(tc, 5000, st_closed, &st));
  assert_int_equal(st.grpc_status, 0);
  m = resp_msg(&st, 0, &mlen);
  assert_non_null(m);
  assert_int_equal(mlen, 4);
  assert_memory_equal(m, "done", 4);
  /* GOAWAY told the client, then the server closes the connection. */
  end = mono_ms() + 3000;
  while (!tc->dead && mono_ms() < end)
    tc_read_some(tc, 20);
  assert_true(tc->goaway);
  assert_int_equal(tc->goaway_code, NGHTTP2_NO_ERROR);
  assert_true(tc->dead);
  pthread_join(t->th, NULL);
  t->running = 0;
  assert_true(mono_ms() - t0 < 4000);
  /* No longer listening. */
  fd = tcp_connect(t->port);
  assert_true(fd < 0);
  tc_free(tc);
  ts_reset(&st);
  free(body);
  tsrv_stop(t, 0);
}

/* Stop with a short grace while a handler ignores cancellation for a while:
 * run() returns at the deadline and free() waits for the worker. */
static void test_hard_stop(void **state) {
  immu_grpc_config cfg;
  tsrv *t;
  tclient *tc;
  tstream st;
  uint8_t *body = NULL;
  size_t blen = 0;
  int64_t end;
  (void)state;
  base_config(&cfg);
  t = tsrv_start(&cfg);
  tc = tc_connect(t->port, NULL);
  assert_non_null(tc);
  frame_append(&body, &blen, NULL, 0);
  memset(&st, 0, sizeof st);
  st.grpc_status = -1;
  atomic_store(&g_slow_started, 0);
  tc_start(tc, &st, "/t.T/Slow", NULL, NULL, body, blen);
  end = mono_ms() + 3000;
  while (!atomic_load(&g_slow_started) && mono_ms() < end)
    tc_pump(tc, 10, NULL, NULL);
  assert_true(atomic_load(&g_slow_started));
  tsrv_stop(t, 0);
  tc_pump(tc, 2000, st_closed, &st);
  assert_true(st.closed || tc->dead);
  assert_int_not_equal(st.grpc_status, 0);
  tc_free(tc);
  ts_reset(&st);
  free(body);
}

/* --- detached calls, inline handlers --- */

static void det_body(uint8_t **body, size_t *blen, uint32_t delay_ms,
                     uint32_t mode, const char *tag) {
  uint8_t req[64];
  size_t tl = strlen(tag);
  assert_true(tl <= sizeof req - 8);
  put_be32(req, delay_ms);
  put_be32(req + 4, mode);
  memcpy(req + 8, tag, tl);
  *body = NULL;
  *blen = 0;
  frame_append(body, blen, req, 8 + tl);
}

static int wait_atomic(atomic_int *v, int want, int ms) {
  int64_t end = mono_ms() + ms;
  while (atomic_load(v) < want && mono_ms() < end)
    sleep_ms(2);
  return atomic_load(v) >= want;
}

/* Many concurrent detached calls on two connections, finished from the
 * completer thread or resumed on a worker after random delays; some hit
 * their deadline and some are reset by the client while detached. Every
 * call must be finished exactly once (no "finished twice" error, the
 * finish count equals the detach count) and freed once (ASan). */
static void test_detach_many(void **state) {
  enum { NC = 2, PER = 100, N = NC * PER };
  tclient *tc[NC];
  tstream *st = calloc(N, sizeof *st);
  uint8_t *bodies[N];
  size_t blens[N];
  int kind[N]; /* 0 ok, 1 deadline, 2 client reset */
  unsigned seed = 12345;
  int started0 = atomic_load(&g_det_started);
  int fin0 = atomic_load(&g_det_finished);
  int err0 = atomic_load(&g_errors_logged);
  int nreset = 0, c, i;
  (void)state;
  assert_non_null(st);
  for (c = 0; c < NC; c++) {
    tc[c] = tc_connect(g_srv->port, NULL);
    assert_non_null(tc[c]);
  }
  for (i = 0; i < N; i++) {
    char tag[32];
    uint32_t delay;
    seed = seed * 1103515245u + 12345u;
    delay = (seed >> 16) % 40;
    kind[i] = i % 10 == 3 ? 1 : (i % 10 == 7 ? 2 : 0);
    if (kind[i] != 0)
      delay = 300; /* still detached when the deadline / reset comes */
    snprintf(tag, sizeof tag, "det-%d", i);
    /* both completion paths for every kind (i % 10 fixes the kind) */
    det_body(&bodies[i], &blens[i], delay, (uint32_t)((i / 2) % 2), tag);
    st[i].grpc_status = -1;
    tc_start(tc[i % NC], &st[i], "/t.T/Detach", NULL,
             kind[i] == 1 ? "50m" : NULL, bodies[i], blens[i]);
  }
  for (c = 0; c < NC; c++)
    tc_pump(tc[c], 50, NULL, NULL);
  assert_true(wait_atomic(&g_det_started, started0 + N, 10000));
  for (i = 0; i < N; i++) {
    if (kind[i] == 2) {
      nghttp2_submit_rst_stream(tc[i % NC]->h2, NGHTTP2_FLAG_NONE, st[i].id,
                                NGHTTP2_CANCEL);
      nreset++;
    }
  }
  {
    int64_t end = mono_ms() + 15000;
    int done = 0;
    while (!done && mono_ms() < end) {
      done = 1;
      for (c = 0; c < NC; c++)
        tc_pump(tc[c], 10, NULL, NULL);
      for (i = 0; i < N; i++)
        if (!st[i].closed)
          done = 0;
    }
    assert_true(done);
  }
  for (i = 0; i < N; i++) {
    if (kind[i] == 0) {
      char tag[32];
      size_t mlen = 0;
      const uint8_t *m = resp_msg(&st[i], 0, &mlen);
      snprintf(tag, sizeof tag, "det-%d", i);
      assert_int_equal(st[i].grpc_status, 0);
      assert_non_null(m);
      assert_int_equal(mlen, strlen(tag));
      assert_memory_equal(m, tag, mlen);
    } else if (kind[i] == 1) {
      assert_int_equal(st[i].grpc_status, IMMU_GRPC_DEADLINE_EXCEEDED);
    } else {
      assert_int_equal(st[i].close_code, NGHTTP2_CANCEL);
    }
  }
  /* The owners still finish the cancelled calls, once each. */
  assert_true(wait_atomic(&g_det_finished, fin0 + N, 10000));
  sleep_ms(50);
  assert_int_equal(atomic_load(&g_det_finished), fin0 + N);
  assert_int_equal(atomic_load(&g_det_started), started0 + N);
  assert_true(atomic_load(&g_det_cancel_seen) >= nreset);
  assert_int_equal(atomic_load(&g_errors_logged), err0);
  /* The connections still work. */
  for (c = 0; c < NC; c++) {
    assert_true(echo_ok(tc[c], "after-detach"));
    tc_free(tc[c]);
  }
  for (i = 0; i < N; i++) {
    ts_reset(&st[i]);
    free(bodies[i]);
  }
  free(st);
}

static void test_inline_handler(void **state) {
  enum { N = 50 };
  tclient *tc = tc_connect(g_srv->port, NULL);
  tstream st[N];
  uint8_t *body = NULL;
  size_t blen = 0;
  many m = {st, N};
  int i;
  (void)state;
  assert_non_null(tc);
  frame_append(&body, &blen, (const uint8_t *)"inline", 6);
  memset(st, 0, sizeof st);
  for (i = 0; i < N; i++) {
    st[i].grpc_status = -1;
    tc_start(tc, &st[i], "/t.T/Inline", NULL, NULL, body, blen);
  }
  assert_true(tc_pump(tc, 5000, all_closed, &m));
  for (i = 0; i < N; i++) {
    size_t mlen = 0;
    const uint8_t *msg = resp_msg(&st[i], 0, &mlen);
    assert_int_equal(st[i].grpc_status, 0);
    assert_non_null(msg);
    assert_int_equal(mlen, 6);
    assert_memory_equal(msg, "inline", 6);
    ts_reset(&st[i]);
  }
  free(body);
  tc_free(tc);
}

/* TRY_INLINE: answered on the loop unless the handler defers, then run
 * again from the start on a worker; mixed on one connection, each call
 * answered exactly once where the handler said. */
static void test_try_inline_defer(void **state) {
  enum { N = 60 };
  static const char *const kinds[3] = {"answer", "defer", "xlate"};
  tclient *tc = tc_connect(g_srv->port, NULL);
  tstream st[N];
  uint8_t *body[3] = {NULL, NULL, NULL};
  size_t blen[3] = {0, 0, 0};
  many m = {st, N};
  int i, runs0;
  (void)state;
  assert_non_null(tc);
  for (i = 0; i < 3; i++)
    frame_append(&body[i], &blen[i], (const uint8_t *)kinds[i],
                 strlen(kinds[i]));
  memset(st, 0, sizeof st);
  runs0 = atomic_load(&g_try_runs);
  atomic_store(&g_expected_errors, 0);
  atomic_store(&g_expected_error, "defer outside a fresh inline attempt");
  for (i = 0; i < N; i++) {
    st[i].grpc_status = -1;
    tc_start(tc, &st[i], "/t.T/TryInline", NULL, NULL, body[i % 3],
             blen[i % 3]);
  }
  assert_true(tc_pump(tc, 5000, all_closed, &m));
  for (i = 0; i < N; i++) {
    char want[64];
    size_t mlen = 0;
    const uint8_t *msg = resp_msg(&st[i], 0, &mlen);
    snprintf(want, sizeof want, "%s:%s", i % 3 == 1 ? "worker" : "loop",
             kinds[i % 3]);
    assert_int_equal(st[i].grpc_status, 0);
    assert_non_null(msg);
    assert_int_equal(mlen, strlen(want));
    assert_memory_equal(msg, want, mlen);
    assert_null(resp_msg(&st[i], 1, &mlen)); /* one reply only */
    ts_reset(&st[i]);
  }
  /* one run per call, two per deferred call */
  assert_int_equal(atomic_load(&g_try_runs) - runs0, N + N / 3);
  /* each late defer ('x') refused and logged once */
  atomic_store(&g_expected_error, NULL);
  assert_int_equal(atomic_load(&g_expected_errors), N / 3);
  for (i = 0; i < 3; i++)
    free(body[i]);
  tc_free(tc);
}

/* Several loops on one listener (immu_grpc_server_add_peer): accepted
 * connections are dealt out in turn, every loop serves its own, and
 * stopping all of them ends every run. */
static void *run_server(void *s) {
  immu_grpc_server_run(s);
  return NULL;
}

static void test_peers(void **state) {
  enum { NLOOP = 3, NCONN = 9 };
  immu_grpc_config cfg;
  immu_grpc_server *sv[NLOOP];
  pthread_t th[NLOOP];
  atomic_int served[NLOOP];
  tclient *tc[NCONN];
  char *err = NULL;
  int i, port;
  (void)state;
  for (i = 0; i < NLOOP; i++) {
    atomic_init(&served[i], 0);
    base_config(&cfg);
    cfg.on_call_done_arg = &served[i];
    cfg.no_listen = i > 0;
    assert_int_equal(immu_grpc_server_new(&cfg, k_methods,
                                          sizeof k_methods / sizeof k_methods[0],
                                          &sv[i], &err),
                     0);
    if (i > 0) {
      assert_int_equal(immu_grpc_server_add_peer(sv[0], sv[i]), 0);
      /* a peer cannot take peers, nor listen */
      assert_int_equal(immu_grpc_server_add_peer(sv[i], sv[0]), IMMU_EINVAL);
    }
  }
  port = immu_grpc_server_port(sv[0]);
  assert_true(port > 0);
  for (i = 0; i < NLOOP; i++)
    assert_int_equal(pthread_create(&th[i], NULL, run_server, sv[i]), 0);
  /* One at a time, so that the order of accepts is the order here. */
  for (i = 0; i < NCONN; i++) {
    tc[i] = tc_connect(port, NULL);
    assert_non_null(tc[i]);
    assert_true(echo_ok(tc[i], "peer"));
  }
  for (i = 0; i < NCONN; i++)
    assert_true(echo_ok(tc[i], "again"));
  for (i = 0; i < NLOOP; i++)
    assert_int_equal(atomic_load(&served[i]), 2 * NCONN / NLOOP);
  for (i = 0; i < NCONN; i++)
    tc_free(tc[i]);
  for (i = 0; i < NLOOP; i++)
    immu_grpc_server_stop(sv[i], 1);
  for (i = 0; i < NLOOP; i++)
    pthread_join(th[i], NULL);
  for (i = NLOOP - 1; i >= 0; i--)
    immu_grpc_server_free(sv[i]);
}

/* A graceful stop waits for a detached call; a hard stop does not, but
 * immu_grpc_server_free waits until its owner finished it. */
static void test_detach_stop(void **state) {
  immu_grpc_config cfg;
  tsrv *t;
  tclient *tc;
  tstream st;
  uint8_t *body = NULL;
  size_t blen = 0, mlen = 0;
  const uint8_t *m;
  int started0, fin0;
  int64_t t0;
  (void)state;

  base_config(&cfg);
  t = tsrv_start(&cfg);
  tc = tc_connect(t->port, NULL);
  assert_non_null(tc);
  det_body(&body, &blen, 300, 0, "graceful");
  memset(&st, 0, sizeof st);
  st.grpc_status = -1;
  started0 = atomic_load(&g_det_started);
  tc_start(tc, &st, "/t.T/Detach", NULL, NULL, body, blen);
  tc_pump(tc, 50, NULL, NULL);
  assert_true(wait_atomic(&g_det_started, started0 + 1, 3000));
  immu_grpc_server_stop(t->s, 5);
  assert_true(tc_pump(tc, 5000, st_closed, &st));
  assert_int_equal(st.grpc_status, 0);
  m = resp_msg(&st, 0, &mlen);
  assert_non_null(m);
  assert_int_equal(mlen, 8);
  assert_memory_equal(m, "graceful", 8);
  tc_free(tc);
  ts_reset(&st);
  free(body);
  tsrv_stop(t, 0);

  t = tsrv_start(&cfg);
  tc = tc_connect(t->port, NULL);
  assert_non_null(tc);
  det_body(&body, &blen, 400, 1, "hard");
  memset(&st, 0, sizeof st);
  st.grpc_status = -1;
  started0 = atomic_load(&g_det_started);
  fin0 = atomic_load(&g_det_finished);
  tc_start(tc, &st, "/t.T/Detach", NULL, NULL, body, blen);
  tc_pump(tc, 50, NULL, NULL);
  assert_true(wait_atomic(&g_det_started, started0 + 1, 3000));
  t0 = mono_ms();
  tsrv_stop(t, 0); /* run() returns at once; free waits for the owner */
  assert_int_equal(atomic_load(&g_det_finished), fin0 + 1);
  assert_true(mono_ms() - t0 >= 200);
  tc_pump(tc, 1000, st_closed, &st);
  assert_true(st.closed || tc->dead);
  assert_int_not_equal(st.grpc_status, 0);
  tc_free(tc);
  ts_reset(&st);
  free(body);
}

int main(void) {
  const struct CMUnitTest shared[] = {
      cmocka_unit_test(test_unary_echo),
      cmocka_unit_test(test_concurrent_100),
      cmocka_unit_test(test_server_stream_1000),
      cmocka_unit_test(test_server_stream_20mib_backpressure),
      cmocka_unit_test(test_cancel_unblocks_sender),
      cmocka_unit_test(test_client_stream_50),
      cmocka_unit_test(test_unknown_path),
      cmocka_unit_test(test_oversized_message),
      cmocka_unit_test(test_compressed_rejected),
      cmocka_unit_test(test_deadline),
      cmocka_unit_test(test_rapid_reset),
      cmocka_unit_test(test_garbage_preface),
      cmocka_unit_test(test_header_list_limit),
      cmocka_unit_test(test_detach_many),
      cmocka_unit_test(test_inline_handler),
      cmocka_unit_test(test_try_inline_defer),
  };
  const struct CMUnitTest own[] = {
      cmocka_unit_test(test_refused_streams),
      cmocka_unit_test(test_header_timeout),
      cmocka_unit_test(test_connection_cap),
      cmocka_unit_test(test_tls_alpn),
      cmocka_unit_test(test_graceful_stop),
      cmocka_unit_test(test_hard_stop),
      cmocka_unit_test(test_detach_stop),
      cmocka_unit_test(test_peers),
  };
  int fails = 0;
  assert_int_equal(pthread_create(&g_det_thread, NULL, det_thread, NULL), 0);
  fails += cmocka_run_group_tests_name("grpc (shared server)", shared,
                                       group_setup, group_teardown);
  fails += cmocka_run_group_tests_name("grpc (own servers)", own, NULL, NULL);
  pthread_mutex_lock(&g_det_mu);
  g_det_quit = 1;
  pthread_cond_broadcast(&g_det_cv);
  pthread_mutex_unlock(&g_det_mu);
  pthread_join(g_det_thread, NULL);
  return fails != 0;
}
