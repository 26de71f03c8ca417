/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The gRPC client transport (src/client/grpc_client.c) against a small
 * nghttp2 gRPC server that lives in this file and listens on 127.0.0.1,
 * port 0: unary, server and client streaming, metadata and response
 * headers, deadlines, cancellation, flow control with a slow consumer,
 * concurrency on one handle, TLS (server name check, mTLS, ALPN) with
 * certificates generated at run time, and hostile servers: oversized,
 * compressed, truncated or missing replies, RST_STREAM, HTTP 500, header
 * floods, GOAWAY, a dropped connection, garbage bytes, a server that does
 * not speak HTTP/2 at all, one that never answers.
 *
 * The test server runs one thread per connection with blocking sockets;
 * handlers answer inline. Requests are routed on :path under "/t.S/".
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <nghttp2/nghttp2.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "client/grpc_client.h"
#include "core/mem.h"
#include "immudb/err.h"

/* ------------------------------------------------------------------ */
/* small helpers                                                       */
/* ------------------------------------------------------------------ */

static int64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

static void put32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)(v >> 24);
  p[1] = (uint8_t)(v >> 16);
  p[2] = (uint8_t)(v >> 8);
  p[3] = (uint8_t)v;
}

static uint32_t get32(const uint8_t *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 |
         (uint32_t)p[3];
}

static uint64_t get64(const uint8_t *p) {
  return (uint64_t)get32(p) << 32 | get32(p + 4);
}

static void put64(uint8_t *p, uint64_t v) {
  put32(p, (uint32_t)(v >> 32));
  put32(p + 4, (uint32_t)v);
}

typedef struct growbuf {
  uint8_t *p;
  size_t len, cap;
} growbuf;

static void gb_append(growbuf *b, const void *d, size_t n) {
  if (b->len + n > b->cap) {
    size_t nc = b->cap ? b->cap : 4096;
    while (nc < b->len + n)
      nc *= 2;
    uint8_t *np = realloc(b->p, nc);
    if (np == NULL)
      abort();
    b->p = np;
    b->cap = nc;
  }
  if (n > 0)
    memcpy(b->p + b->len, d, n);
  b->len += n;
}

static void gb_msg(growbuf *b, uint8_t flag, const void *d, uint32_t declared,
                   size_t actual) {
  uint8_t h[5];
  h[0] = flag;
  put32(h + 1, declared);
  gb_append(b, h, 5);
  gb_append(b, d, actual);
}

/* ------------------------------------------------------------------ */
/* the test server                                                     */
/* ------------------------------------------------------------------ */

enum { MODE_H2 = 0, MODE_GARBAGE, MODE_SILENT };
#define MAXCONN 64

typedef struct tsrv tsrv;

typedef struct tstream {
  struct tstream *next, *prev;
  int32_t id;
  char path[128];
  char xmd[256];
  char timeout[32];
  growbuf req;
  growbuf out;
  size_t out_off;
  int gstatus;
  char gmsg[256];
  int no_trailers;
  int ignore_data;
  int rst_after_send;
  int responded;
} tstream;

typedef struct tconn {
  tsrv *s;
  int fd;
  SSL *ssl;
  pthread_t thr;
  nghttp2_session *h2;
  tstream *streams;
  int kill;
  int garbage;
} tconn;

struct tsrv {
  int lfd;
  int port;
  int mode;
  SSL_CTX *ctx;
  atomic_int stop;
  pthread_t acc;
  pthread_mutex_t mu;
  tconn *conns[MAXCONN];
  int nconns;
  char last_timeout[32]; /* grpc-timeout of the last Hang call (mu) */
  atomic_int hangs;
  atomic_int rst_recv;
};

static int write_all(tconn *tc, const uint8_t *p, size_t n) {
  while (n > 0) {
    ssize_t w;
    if (tc->ssl != NULL) {
      int r = SSL_write(tc->ssl, p, n > INT32_MAX ? INT32_MAX : (int)n);
      if (r <= 0)
        return -1;
      w = r;
    } else {
      w = send(tc->fd, p, n, MSG_NOSIGNAL);
      if (w < 0 && errno == EINTR)
        continue;
      if (w <= 0)
        return -1;
    }
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

static nghttp2_nv nv(const char *k, const char *v) {
  nghttp2_nv x;
  x.name = (uint8_t *)(uintptr_t)k;
  x.namelen = strlen(k);
  x.value = (uint8_t *)(uintptr_t)v;
  x.valuelen = strlen(v);
  x.flags = NGHTTP2_NV_FLAG_NONE;
  return x;
}

static void submit_trailers(tconn *tc, tstream *st) {
  char gs[16];
  snprintf(gs, sizeof gs, "%d", st->gstatus);
  nghttp2_nv t[2];
  size_t n = 0;
  t[n++] = nv("grpc-status", gs);
  if (st->gmsg[0])
    t[n++] = nv("grpc-message", st->gmsg);
  nghttp2_submit_trailer(tc->h2, st->id, t, n);
}

static ssize_t srv_read(nghttp2_session *s, int32_t id, uint8_t *buf,
                        size_t len, uint32_t *flags, nghttp2_data_source *src,
                        void *ud) {
  (void)s;
  (void)id;
  tconn *tc = ud;
  tstream *st = src->ptr;
  size_t left = st->out.len - st->out_off;
  size_t n = left < len ? left : len;
  if (n > 0)
    memcpy(buf, st->out.p + st->out_off, n);
  st->out_off += n;
  if (st->out_off == st->out.len) {
    *flags |= NGHTTP2_DATA_FLAG_EOF;
    if (!st->no_trailers) {
      *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
      submit_trailers(tc, st);
    }
  }
  return (ssize_t)n;
}

/* Response HEADERS (+ body in st->out + trailers), or trailers-only. */
static void respond(tconn *tc, tstream *st, const char *http,
                    const nghttp2_nv *extra, size_t nextra, int trailers_only) {
  nghttp2_nv h[400];
  size_t n = 0;
  char gs[16];
  h[n++] = nv(":status", http);
  h[n++] = nv("content-type", "application/grpc");
  for (size_t i = 0; i < nextra && n < 390; i++)
    h[n++] = extra[i];
  st->responded = 1;
  if (trailers_only) {
    snprintf(gs, sizeof gs, "%d", st->gstatus);
    h[n++] = nv("grpc-status", gs);
    if (st->gmsg[0])
      h[n++] = nv("grpc-message", st->gmsg);
    nghttp2_submit_response(tc->h2, st->id, h, n, NULL);
    return;
  }
  nghttp2_data_provider prd;
  prd.source.ptr = st;
  prd.read_callback = srv_read;
  nghttp2_submit_response(tc->h2, st->id, h, n, &prd);
}

/* Request messages: returns the count, fills up to |max| slices. */
static size_t req_msgs(const tstream *st, const uint8_t **ptr, size_t *len,
                       size_t max) {
  size_t off = 0, n = 0;
  while (off + 5 <= st->req.len) {
    uint32_t l = get32(st->req.p + off + 1);
    if (off + 5 + l > st->req.len)
      break;
    if (n < max) {
      ptr[n] = st->req.p + off + 5;
      len[n] = l;
    }
    n++;
    off += 5 + l;
  }
  return n;
}

static void handle(tconn *tc, tstream *st) {
  const uint8_t *mp[1] = {NULL};
  size_t ml[1] = {0};
  const char *m = st->path + 5; /* after "/t.S/" */
  if (strncmp(st->path, "/t.S/", 5) != 0) {
    st->gstatus = 12;
    snprintf(st->gmsg, sizeof st->gmsg, "unknown method");
    respond(tc, st, "200", NULL, 0, 1);
  } else if (strcmp(m, "Echo") == 0 || strcmp(m, "GoAway") == 0) {
    size_t n = req_msgs(st, mp, ml, 1);
    if (n != 1) {
      st->gstatus = 3;
      snprintf(st->gmsg, sizeof st->gmsg, "want one message, got %zu", n);
      respond(tc, st, "200", NULL, 0, 1);
      return;
    }
    gb_msg(&st->out, 0, mp[0], (uint32_t)ml[0], ml[0]);
    nghttp2_nv x[2];
    size_t nx = 0;
    if (st->xmd[0])
      x[nx++] = nv("x-echo-md", st->xmd);
    x[nx++] = nv("x-server", "test");
    if (strcmp(m, "GoAway") == 0)
      nghttp2_submit_goaway(tc->h2, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_NO_ERROR,
                            NULL, 0);
    respond(tc, st, "200", x, nx, 0);
  } else if (strcmp(m, "Count") == 0) {
    /* request: u32 count, u32 size; replies count messages of size bytes,
     * message i filled with (uint8_t)i. */
    if (req_msgs(st, mp, ml, 1) != 1 || ml[0] != 8) {
      st->gstatus = 3;
      respond(tc, st, "200", NULL, 0, 1);
      return;
    }
    uint32_t cnt = get32(mp[0]), sz = get32(mp[0] + 4);
    uint8_t *tmp = malloc(sz ? sz : 1);
    for (uint32_t i = 0; i < cnt; i++) {
      memset(tmp, (int)(i & 0xff), sz);
      gb_msg(&st->out, 0, tmp, sz, sz);
    }
    free(tmp);
    respond(tc, st, "200", NULL, 0, 0);
  } else if (strcmp(m, "Sum") == 0) {
    /* reply: u64 count, u64 bytes, u64 sum of all bytes */
    static const uint8_t *p[4096];
    static size_t l[4096];
    size_t n = req_msgs(st, p, l, 4096);
    uint64_t bytes = 0, sum = 0;
    for (size_t i = 0; i < n && i < 4096; i++) {
      bytes += l[i];
      for (size_t j = 0; j < l[i]; j++)
        sum += p[i][j];
    }
    uint8_t r[24];
    put64(r, n);
    put64(r + 8, bytes);
    put64(r + 16, sum);
    gb_msg(&st->out, 0, r, 24, 24);
    respond(tc, st, "200", NULL, 0, 0);
  } else if (strcmp(m, "Fail") == 0) {
    st->gstatus = 5;
    snprintf(st->gmsg, sizeof st->gmsg, "key%%20not%%20found%%3A%%20a%%25b");
    respond(tc, st, "200", NULL, 0, 1);
  } else if (strcmp(m, "Hang") == 0) {
    pthread_mutex_lock(&tc->s->mu);
    snprintf(tc->s->last_timeout, sizeof tc->s->last_timeout, "%s",
             st->timeout);
    pthread_mutex_unlock(&tc->s->mu);
    atomic_fetch_add(&tc->s->hangs, 1);
    /* never answers */
  } else if (strcmp(m, "Big") == 0) {
    /* request: u32 size; one message of that size */
    req_msgs(st, mp, ml, 1);
    uint32_t sz = get32(mp[0]);
    uint8_t *tmp = calloc(1, sz ? sz : 1);
    gb_msg(&st->out, 0, tmp, sz, sz);
    free(tmp);
    respond(tc, st, "200", NULL, 0, 0);
  } else if (strcmp(m, "Compressed") == 0) {
    gb_msg(&st->out, 1, "abc", 3, 3);
    respond(tc, st, "200", NULL, 0, 0);
  } else if (strcmp(m, "NoStatus") == 0) {
    gb_msg(&st->out, 0, "abc", 3, 3);
    st->no_trailers = 1;
    respond(tc, st, "200", NULL, 0, 0);
  } else if (strcmp(m, "Truncated") == 0) {
    gb_msg(&st->out, 0, "abc", 10, 3);
    respond(tc, st, "200", NULL, 0, 0);
  } else if (strcmp(m, "Two") == 0) {
    gb_msg(&st->out, 0, "abc", 3, 3);
    gb_msg(&st->out, 0, "def", 3, 3);
    respond(tc, st, "200", NULL, 0, 0);
  } else if (strcmp(m, "Empty") == 0) {
    respond(tc, st, "200", NULL, 0, 0); /* OK status, no message */
  } else if (strcmp(m, "Http500") == 0) {
    st->gstatus = 0;
    gb_msg(&st->out, 0, "abc", 3, 3);
    respond(tc, st, "500", NULL, 0, 0);
  } else if (strcmp(m, "BadType") == 0) {
    nghttp2_nv h[2] = {nv(":status", "200"), nv("content-type", "text/html")};
    st->responded = 1;
    nghttp2_submit_response(tc->h2, st->id, h, 2, NULL);
  } else if (strcmp(m, "Rst") == 0) {
    nghttp2_submit_rst_stream(tc->h2, NGHTTP2_FLAG_NONE, st->id,
                              NGHTTP2_INTERNAL_ERROR);
  } else if (strcmp(m, "HugeHeaders") == 0) {
    static char names[300][16];
    nghttp2_nv x[300];
    for (int i = 0; i < 300; i++) {
      snprintf(names[i], sizeof names[i], "x-h%d", i);
      x[i] = nv(names[i], "v");
    }
    gb_msg(&st->out, 0, "abc", 3, 3);
    respond(tc, st, "200", x, 300, 0);
  } else if (strcmp(m, "Kill") == 0) {
    tc->kill = 1;
  } else if (strcmp(m, "Garbage") == 0) {
    tc->garbage = 1;
  } else {
    st->gstatus = 12;
    snprintf(st->gmsg, sizeof st->gmsg, "unknown method %s", st->path);
    respond(tc, st, "200", NULL, 0, 1);
  }
}

static tstream *get_stream(tconn *tc, int32_t id) {
  return nghttp2_session_get_stream_user_data(tc->h2, id);
}

static int s_begin_headers(nghttp2_session *s, const nghttp2_frame *f,
                           void *ud) {
  tconn *tc = ud;
  if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST)
    return 0;
  tstream *st = calloc(1, sizeof *st);
  st->id = f->hd.stream_id;
  st->next = tc->streams;
  if (tc->streams)
    tc->streams->prev = st;
  tc->streams = st;
  nghttp2_session_set_stream_user_data(s, f->hd.stream_id, st);
  return 0;
}

static int s_header(nghttp2_session *s, const nghttp2_frame *f,
                    const uint8_t *name, size_t nl, const uint8_t *value,
                    size_t vl, uint8_t flags, void *ud) {
  (void)flags;
  tconn *tc = ud;
  (void)s;
  tstream *st = get_stream(tc, f->hd.stream_id);
  if (st == NULL)
    return 0;
  char *dst = NULL;
  size_t cap = 0;
  if (nl == 5 && memcmp(name, ":path", 5) == 0) {
    dst = st->path;
    cap = sizeof st->path;
  } else if (nl == 4 && memcmp(name, "x-md", 4) == 0) {
    dst = st->xmd;
    cap = sizeof st->xmd;
  } else if (nl == 12 && memcmp(name, "grpc-timeout", 12) == 0) {
    dst = st->timeout;
    cap = sizeof st->timeout;
  }
  if (dst != NULL)
    snprintf(dst, cap, "%.*s", (int)vl, (const char *)value);
  return 0;
}

static int s_data(nghttp2_session *s, uint8_t flags, int32_t id,
                  const uint8_t *d, size_t len, void *ud) {
  (void)s;
  (void)flags;
  tstream *st = get_stream(ud, id);
  if (st != NULL && !st->ignore_data)
    gb_append(&st->req, d, len);
  return 0;
}

static int s_frame_recv(nghttp2_session *s, const nghttp2_frame *f, void *ud) {
  (void)s;
  tconn *tc = ud;
  if (f->hd.type == NGHTTP2_RST_STREAM)
    atomic_fetch_add(&tc->s->rst_recv, 1);
  if (f->hd.type != NGHTTP2_HEADERS && f->hd.type != NGHTTP2_DATA)
    return 0;
  tstream *st = get_stream(tc, f->hd.stream_id);
  if (st == NULL || st->responded)
    return 0;
  if (f->hd.type == NGHTTP2_HEADERS && strcmp(st->path, "/t.S/Early") == 0) {
    /* Reply before the request is complete, like a server rejecting an
     * oversized message, then reset with NO_ERROR once the reply is out. */
    st->ignore_data = 1;
    st->gstatus = 8;
    snprintf(st->gmsg, sizeof st->gmsg, "too big");
    st->rst_after_send = 1;
    respond(tc, st, "200", NULL, 0, 1);
    return 0;
  }
  if (f->hd.flags & NGHTTP2_FLAG_END_STREAM)
    handle(tc, st);
  return 0;
}

static int s_frame_send(nghttp2_session *s, const nghttp2_frame *f, void *ud) {
  tconn *tc = ud;
  if (f->hd.type != NGHTTP2_HEADERS)
    return 0;
  tstream *st = get_stream(tc, f->hd.stream_id);
  if (st != NULL && st->rst_after_send) {
    st->rst_after_send = 0;
    nghttp2_submit_rst_stream(s, NGHTTP2_FLAG_NONE, f->hd.stream_id,
                              NGHTTP2_NO_ERROR);
  }
  return 0;
}

static void stream_free(tconn *tc, tstream *st) {
  if (st->prev)
    st->prev->next = st->next;
  else
    tc->streams = st->next;
  if (st->next)
    st->next->prev = st->prev;
  free(st->req.p);
  free(st->out.p);
  free(st);
}

static int s_close(nghttp2_session *s, int32_t id, uint32_t ec, void *ud) {
  (void)ec;
  tconn *tc = ud;
  tstream *st = nghttp2_session_get_stream_user_data(s, id);
  if (st != NULL) {
    nghttp2_session_set_stream_user_data(s, id, NULL);
    stream_free(tc, st);
  }
  return 0;
}

static int alpn_select(SSL *ssl, const unsigned char **out,
                       unsigned char *outlen, const unsigned char *in,
                       unsigned int inlen, void *arg) {
  (void)ssl;
  if (arg != NULL) /* "no ALPN" server */
    return SSL_TLSEXT_ERR_NOACK;
  for (unsigned int i = 0; i + 1 < inlen + 0u; i += 1u + in[i]) {
    if (in[i] == 2 && i + 2 < inlen && memcmp(in + i + 1, "h2", 2) == 0) {
      *out = in + i + 1;
      *outlen = 2;
      return SSL_TLSEXT_ERR_OK;
    }
  }
  return SSL_TLSEXT_ERR_ALERT_FATAL;
}

static int send_pending(tconn *tc) {
  for (;;) {
    const uint8_t *d;
    ssize_t n = nghttp2_session_mem_send(tc->h2, &d);
    if (n < 0)
      return -1;
    if (n == 0)
      return 0;
    if (write_all(tc, d, (size_t)n) != 0)
      return -1;
  }
}

static void *conn_main(void *arg) {
  tconn *tc = arg;
  tsrv *s = tc->s;
  uint8_t buf[16384];

  if (s->mode == MODE_GARBAGE) {
    static const char g[] = "HTTP/1.1 400 Bad Request\r\nConnection: close\r\n"
                            "Content-Length: 0\r\n\r\n";
    (void)write_all(tc, (const uint8_t *)g, sizeof g - 1);
  }
  if (s->mode != MODE_H2) {
    while (!atomic_load(&s->stop)) {
      struct pollfd p = {tc->fd, POLLIN, 0};
      if (poll(&p, 1, 50) > 0 && recv(tc->fd, buf, sizeof buf, 0) <= 0)
        break;
    }
    return NULL;
  }
  if (s->ctx != NULL) {
    tc->ssl = SSL_new(s->ctx);
    SSL_set_fd(tc->ssl, tc->fd);
    if (SSL_accept(tc->ssl) != 1) {
      ERR_clear_error();
      shutdown(tc->fd, SHUT_RDWR);
      return NULL;
    }
  }
  nghttp2_session_callbacks *cb;
  nghttp2_session_callbacks_new(&cb);
  nghttp2_session_callbacks_set_on_begin_headers_callback(cb, s_begin_headers);
  nghttp2_session_callbacks_set_on_header_callback(cb, s_header);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, s_data);
  nghttp2_session_callbacks_set_on_frame_recv_callback(cb, s_frame_recv);
  nghttp2_session_callbacks_set_on_frame_send_callback(cb, s_frame_send);
  nghttp2_session_callbacks_set_on_stream_close_callback(cb, s_close);
  nghttp2_session_server_new(&tc->h2, cb, tc);
  nghttp2_session_callbacks_del(cb);
  nghttp2_settings_entry iv[] = {
      {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 100},
      {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20}};
  nghttp2_submit_settings(tc->h2, NGHTTP2_FLAG_NONE, iv, 2);
  nghttp2_session_set_local_window_size(tc->h2, NGHTTP2_FLAG_NONE, 0, 16 << 20);

  for (;;) {
    if (send_pending(tc) != 0)
      break;
    if (tc->kill)
      break;
    if (tc->garbage) {
      static const uint8_t junk[] = {0xff, 0xff, 0xff, 0x07, 0x00, 0x00,
                                     0x00, 0x00, 0x00, 'j',  'u',  'n',
                                     'k',  '!',  '!',  '!'};
      (void)write_all(tc, junk, sizeof junk);
      tc->garbage = 0;
    }
    if (!nghttp2_session_want_read(tc->h2) &&
        !nghttp2_session_want_write(tc->h2))
      break;
    if (atomic_load(&s->stop))
      break;
    if (tc->ssl == NULL || SSL_pending(tc->ssl) == 0) {
      struct pollfd p = {tc->fd, POLLIN, 0};
      int r = poll(&p, 1, 50);
      if (r == 0)
        continue;
      if (r < 0)
        break;
    }
    ssize_t n;
    if (tc->ssl != NULL) {
      int r = SSL_read(tc->ssl, buf, sizeof buf);
      if (r <= 0) {
        int e = SSL_get_error(tc->ssl, r);
        if (e == SSL_ERROR_WANT_READ)
          continue;
        break;
      }
      n = r;
    } else {
      n = recv(tc->fd, buf, sizeof buf, 0);
      if (n < 0 && errno == EINTR)
        continue;
      if (n <= 0)
        break;
    }
    if (nghttp2_session_mem_recv(tc->h2, buf, (size_t)n) < 0)
      break;
  }
  nghttp2_session_del(tc->h2);
  tc->h2 = NULL;
  while (tc->streams != NULL)
    stream_free(tc, tc->streams);
  shutdown(tc->fd, SHUT_RDWR);
  return NULL;
}

static void *accept_main(void *arg) {
  tsrv *s = arg;
  while (!atomic_load(&s->stop)) {
    struct pollfd p = {s->lfd, POLLIN, 0};
    if (poll(&p, 1, 50) <= 0)
      continue;
    int fd = accept(s->lfd, NULL, NULL);
    if (fd < 0)
      continue;
    pthread_mutex_lock(&s->mu);
    if (s->nconns == MAXCONN) {
      pthread_mutex_unlock(&s->mu);
      close(fd);
      continue;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    tconn *tc = calloc(1, sizeof *tc);
    tc->s = s;
    tc->fd = fd;
    s->conns[s->nconns++] = tc;
    pthread_create(&tc->thr, NULL, conn_main, tc);
    pthread_mutex_unlock(&s->mu);
  }
  return NULL;
}

static tsrv *srv_start(int mode, SSL_CTX *ctx) {
  tsrv *s = calloc(1, sizeof *s);
  s->mode = mode;
  s->ctx = ctx;
  pthread_mutex_init(&s->mu, NULL);
  s->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  assert_true(s->lfd >= 0);
  struct sockaddr_in a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  assert_int_equal(bind(s->lfd, (struct sockaddr *)&a, sizeof a), 0);
  assert_int_equal(listen(s->lfd, 64), 0);
  socklen_t sl = sizeof a;
  getsockname(s->lfd, (struct sockaddr *)&a, &sl);
  s->port = ntohs(a.sin_port);
  pthread_create(&s->acc, NULL, accept_main, s);
  return s;
}

static void srv_stop(tsrv *s) {
  if (s == NULL)
    return;
  atomic_store(&s->stop, 1);
  pthread_join(s->acc, NULL);
  for (int i = 0; i < s->nconns; i++) {
    tconn *tc = s->conns[i];
    shutdown(tc->fd, SHUT_RDWR);
    pthread_join(tc->thr, NULL);
    SSL_free(tc->ssl);
    close(tc->fd);
    free(tc);
  }
  close(s->lfd);
  pthread_mutex_destroy(&s->mu);
  free(s);
}

/* ------------------------------------------------------------------ */
/* fixtures                                                            */
/* ------------------------------------------------------------------ */

typedef struct fx {
  tsrv *srv;
  immu__grpc_client *cli;
} fx;

/* NULL: every connection has its own I/O thread; else the one shared loop
 * every connection of the second run of the tests uses. */
static immu__grpc_loop *g_loop;

static immu__grpc_client *connect_plain(int port, size_t max_recv) {
  immu__grpc_client_opts o;
  memset(&o, 0, sizeof o);
  o.loop = g_loop;
  o.host = "127.0.0.1";
  o.port = port;
  o.max_recv_msg_size = max_recv;
  o.connect_timeout_ms = 5000;
  o.default_timeout_ms = 20000; /* no test may hang */
  immu__grpc_client *c = NULL;
  char err[256];
  int rv = immu__grpc_client_connect(&o, &c, err, sizeof err);
  if (rv != 0)
    fail_msg("connect: %s (%s)", immu_err_name(rv), err);
  return c;
}

static int setup(void **state) {
  fx *f = calloc(1, sizeof *f);
  f->srv = srv_start(MODE_H2, NULL);
  f->cli = connect_plain(f->srv->port, (size_t)1 << 20);
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fx *f = *state;
  immu__grpc_client_free(f->cli);
  srv_stop(f->srv);
  free(f);
  return 0;
}

/* Unary Echo; asserts transport OK and status OK; returns the reply. */
static void echo_ok(immu__grpc_client *c, const uint8_t *d, size_t n) {
  uint8_t *resp = NULL;
  size_t rlen = 0;
  immu__grpc_result res;
  immu__grpc_result_init(&res);
  int rv =
      immu__grpc_client_unary(c, "/t.S/Echo", NULL, d, n, &resp, &rlen, &res);
  if (rv != 0 || res.status != 0)
    fail_msg("echo: rv %s status %d (%s)", immu_err_name(rv), res.status,
             res.message ? res.message : "");
  assert_non_null(resp);
  assert_int_equal(rlen, n);
  if (n > 0)
    assert_memory_equal(resp, d, n);
  immu__free(resp);
  immu__grpc_result_free(&res);
}

/* A unary call expected to fail with |want_rv| and |want_status|. */
static void expect_fail(immu__grpc_client *c, const char *path, int want_rv,
                        int want_status) {
  uint8_t *resp = (uint8_t *)1;
  size_t rlen = 99;
  immu__grpc_result res;
  immu__grpc_result_init(&res);
  int rv = immu__grpc_client_unary(c, path, NULL, (const uint8_t *)"x", 1,
                                   &resp, &rlen, &res);
  if (rv != want_rv || res.status != want_status)
    fail_msg("%s: rv %s (want %s), status %s (want %s): %s", path,
             immu_err_name(rv), immu_err_name(want_rv),
             immu__grpc_code_name(res.status),
             immu__grpc_code_name(want_status),
             res.message ? res.message : "(null)");
  assert_null(resp);
  assert_int_equal(rlen, 0);
  assert_non_null(res.message);
  immu__grpc_result_free(&res);
}

/* ------------------------------------------------------------------ */
/* tests: basic calls                                                  */
/* ------------------------------------------------------------------ */

static void test_unary(void **state) {
  fx *f = *state;
  echo_ok(f->cli, NULL, 0);
  echo_ok(f->cli, (const uint8_t *)"hello", 5);
  size_t big = 900000; /* several frames and window updates */
  uint8_t *d = malloc(big);
  for (size_t i = 0; i < big; i++)
    d[i] = (uint8_t)(i * 7);
  echo_ok(f->cli, d, big);
  free(d);

  /* metadata out, response headers back */
  immu__grpc_md md[] = {{"x-md", "value 1"}, {"authorization", "Bearer t"}};
  immu__grpc_call_opts co = {md, 2, 0};
  uint8_t *resp = NULL;
  size_t rlen = 0;
  immu__grpc_result res;
  immu__grpc_result_init(&res);
  assert_int_equal(immu__grpc_client_unary(f->cli, "/t.S/Echo", &co,
                                           (const uint8_t *)"q", 1, &resp,
                                           &rlen, &res),
                   0);
  assert_int_equal(res.status, 0);
  assert_string_equal(res.message, "");
  assert_string_equal(immu__grpc_result_header(&res, "x-echo-md"), "value 1");
  assert_string_equal(immu__grpc_result_header(&res, "x-server"), "test");
  assert_string_equal(immu__grpc_result_header(&res, "grpc-status"), "0");
  assert_null(immu__grpc_result_header(&res, "nope"));
  assert_true(res.ntrailers >= 1);
  immu__free(resp);

  /* the result is reusable: the next call frees what it held */
  assert_int_equal(immu__grpc_client_unary(f->cli, "/t.S/Fail", NULL,
                                           (const uint8_t *)"q", 1, &resp,
                                           &rlen, &res),
                   0);
  assert_int_equal(res.status, IMMU__GRPC_NOT_FOUND);
  assert_string_equal(res.message, "key not found: a%b");
  assert_null(resp);
  /* trailers-only: everything in the first block */
  assert_string_equal(immu__grpc_result_header(&res, "grpc-status"), "5");
  assert_int_equal(res.ntrailers, 0);
  immu__grpc_result_free(&res);

  /* unknown method: a status, not a transport error */
  expect_fail(f->cli, "/t.S/Nope", 0, IMMU__GRPC_UNIMPLEMENTED);
  assert_int_equal(immu__grpc_client_usable(f->cli), 1);
}

typedef struct count_ctx {
  uint32_t n;
  uint32_t size;
  int bad;
  int slow_ms;
  int cancel_at;
} count_ctx;

static int on_count(void *arg, const uint8_t *m, size_t len) {
  count_ctx *x = arg;
  if (len != x->size)
    x->bad++;
  for (size_t i = 0; i < len; i++)
    if (m[i] != (uint8_t)(x->n & 0xff)) {
      x->bad++;
      break;
    }
  x->n++;
  if (x->slow_ms > 0)
    sleep_ms(x->slow_ms);
  if (x->cancel_at > 0 && (int)x->n == x->cancel_at)
    return -42;
  return 0;
}

static void test_server_stream(void **state) {
  fx *f = *state;
  immu__grpc_result res;
  immu__grpc_result_init(&res);
  uint8_t req[8];

  /* many small messages */
  put32(req, 500);
  put32(req + 4, 100);
  count_ctx x = {0, 100, 0, 0, 0};
  assert_int_equal(immu__grpc_client_server_stream(f->cli, "/t.S/Count", NULL,
                                                   req, 8, on_count, &x, &res),
                   0);
  assert_int_equal(res.status, 0);
  assert_int_equal(x.n, 500);
  assert_int_equal(x.bad, 0);

  /* zero messages */
  put32(req, 0);
  x = (count_ctx){0, 100, 0, 0, 0};
  assert_int_equal(immu__grpc_client_server_stream(f->cli, "/t.S/Count", NULL,
                                                   req, 8, on_count, &x, &res),
                   0);
  assert_int_equal(x.n, 0);

  /* 24 MiB through a slow consumer: the undelivered queue passes the
   * high-water mark, the window is withheld, and nothing is lost. */
  put32(req, 24);
  put32(req + 4, 1000000);
  x = (count_ctx){0, 1000000, 0, 15, 0};
  assert_int_equal(immu__grpc_client_server_stream(f->cli, "/t.S/Count", NULL,
                                                   req, 8, on_count, &x, &res),
                   0);
  assert_int_equal(res.status, 0);
  assert_int_equal(x.n, 24);
  assert_int_equal(x.bad, 0);

  /* the callback cancels: its value comes back, the connection lives */
  put32(req, 1000);
  put32(req + 4, 1000);
  x = (count_ctx){0, 1000, 0, 0, 3};
  assert_int_equal(immu__grpc_client_server_stream(f->cli, "/t.S/Count", NULL,
                                                   req, 8, on_count, &x, &res),
                   -42);
  assert_int_equal(res.status, IMMU__GRPC_CANCELLED);
  assert_int_equal(x.n, 3);
  echo_ok(f->cli, (const uint8_t *)"still", 5);

  /* the general form with no callback drops the messages */
  put32(req, 5);
  put32(req + 4, 10);
  immu__grpc_msg m = {req, 8};
  assert_int_equal(immu__grpc_client_call(f->cli, "/t.S/Count", NULL, &m, 1,
                                          NULL, NULL, &res),
                   0);
  assert_int_equal(res.status, 0);
  immu__grpc_result_free(&res);
}

static void check_sum(immu__grpc_client *c, const immu__grpc_msg *m, size_t n) {
  uint64_t bytes = 0, sum = 0;
  for (size_t i = 0; i < n; i++) {
    bytes += m[i].len;
    for (size_t j = 0; j < m[i].len; j++)
      sum += m[i].ptr[j];
  }
  uint8_t *resp = NULL;
  size_t rlen = 0;
  immu__grpc_result res;
  immu__grpc_result_init(&res);
  int rv = immu__grpc_client_client_stream(c, "/t.S/Sum", NULL, m, n, &resp,
                                           &rlen, &res);
  if (rv != 0 || res.status != 0)
    fail_msg("sum: %s %d %s", immu_err_name(rv), res.status, res.message);
  assert_int_equal(rlen, 24);
  assert_int_equal(get64(resp), n);
  assert_int_equal(get64(resp + 8), bytes);
  assert_int_equal(get64(resp + 16), sum);
  immu__free(resp);
  immu__grpc_result_free(&res);
}

static void test_client_stream(void **state) {
  fx *f = *state;
  check_sum(f->cli, NULL, 0);

  static uint8_t small[1000][8];
  immu__grpc_msg m[1000];
  for (size_t i = 0; i < 1000; i++) {
    for (size_t j = 0; j < 8; j++)
      small[i][j] = (uint8_t)(i + j);
    m[i].ptr = small[i];
    m[i].len = (i % 9); /* includes empty messages */
  }
  check_sum(f->cli, m, 1000);

  size_t big = (size_t)3 << 20;
  uint8_t *d = malloc(big);
  for (size_t i = 0; i < big; i++)
    d[i] = (uint8_t)(i >> 3);
  immu__grpc_msg b[3] = {{d, big}, {d + 1, big - 1}, {d + 7, 1000}};
  check_sum(f->cli, b, 3);
  free(d);
}

/* The server replies and resets while an 8 MiB request is still going
 * out: the status wins, the rest of the request is dropped. */
static void test_early_reply(void **state) {
  fx *f = *state;
  size_t big = (size_t)8 << 20;
  uint8_t *d = calloc(1, big);
  immu__grpc_msg m = {d, big};
  uint8_t *resp = NULL;
  size_t rlen = 0;
  immu__grpc_result res;
  immu__grpc_result_init(&res);
  int rv = immu__grpc_client_client_stream(f->cli, "/t.S/Early", NULL, &m, 1,
                                           &resp, &rlen, &res);
  assert_int_equal(rv, 0);
  assert_int_equal(res.status, IMMU__GRPC_RESOURCE_EXHAUSTED);
  assert_string_equal(res.message, "too big");
  assert_null(resp);
  immu__grpc_result_free(&res);
  free(d);
  echo_ok(f->cli, (const uint8_t *)"after", 5);
}

/* ------------------------------------------------------------------ */
/* deadlines                                                           */
/* ------------------------------------------------------------------ */

static void test_deadline(void **state) {
  fx *f = *state;
  immu__grpc_call_opts co = {NULL, 0, 300};
  uint8_t *resp = NULL;
  size_t rlen = 0;
  immu__grpc_result res;
  immu__grpc_result_init(&res);
  int64_t t0 = mono_ms();
  int rv = immu__grpc_client_unary(f->cli, "/t.S/Hang", &co,
                                   (const uint8_t *)"x", 1, &resp, &rlen, &res);
  int64_t dt = mono_ms() - t0;
  assert_int_equal(rv, IMMU_ETIMEOUT);
  assert_int_equal(res.status, IMMU__GRPC_DEADLINE_EXCEEDED);
  assert_null(resp);
  assert_true(dt >= 280 && dt < 3000);
  pthread_mutex_lock(&f->srv->mu);
  assert_string_equal(f->srv->last_timeout, "300m");
  pthread_mutex_unlock(&f->srv->mu);
  /* the stream was reset and the connection still works */
  echo_ok(f->cli, (const uint8_t *)"ok", 2);
  for (int i = 0; i < 100 && atomic_load(&f->srv->rst_recv) == 0; i++)
    sleep_ms(10);
  assert_true(atomic_load(&f->srv->rst_recv) >= 1);

  /* the handle's default deadline */
  immu__grpc_client_opts o;
  memset(&o, 0, sizeof o);
  o.loop = g_loop;
  o.host = "localhost";
  o.port = f->srv->port;
  o.default_timeout_ms = 200;
  immu__grpc_client *c2 = NULL;
  assert_int_equal(immu__grpc_client_connect(&o, &c2, NULL, 0), 0);
  t0 = mono_ms();
  rv = immu__grpc_client_unary(c2, "/t.S/Hang", NULL, (const uint8_t *)"x", 1,
                               &resp, &rlen, &res);
  dt = mono_ms() - t0;
  assert_int_equal(rv, IMMU_ETIMEOUT);
  assert_true(dt >= 180 && dt < 3000);
  /* a server stream that outlives its deadline */
  uint8_t req[8];
  put32(req, 2000);
  put32(req + 4, 10000);
  count_ctx x = {0, 10000, 0, 1, 0};
  co.timeout_ms = 150;
  rv = immu__grpc_client_server_stream(c2, "/t.S/Count", &co, req, 8, on_count,
                                       &x, &res);
  assert_int_equal(rv, IMMU_ETIMEOUT);
  assert_true(x.n < 2000); /* cut short (0 on a slow machine) */
  /* negative = no deadline even with a handle default */
  co.timeout_ms = -1;
  rv = immu__grpc_client_unary(c2, "/t.S/Echo", &co, (const uint8_t *)"x", 1,
                               &resp, &rlen, &res);
  assert_int_equal(rv, 0);
  immu__free(resp);
  /* freed with two abandoned calls still registered: no leak */
  immu__grpc_client_free(c2);
  immu__grpc_result_free(&res);
}

/* ------------------------------------------------------------------ */
/* hostile replies                                                     */
/* ------------------------------------------------------------------ */

static void test_oversized_reply(void **state) {
  fx *f = *state; /* client limit: 1 MiB */
  uint8_t req[4];
  uint8_t *resp = NULL;
  size_t rlen = 0;
  immu__grpc_result res;
  immu__grpc_result_init(&res);
  put32(req, (1u << 20));
  assert_int_equal(immu__grpc_client_unary(f->cli, "/t.S/Big", NULL, req, 4,
                                           &resp, &rlen, &res),
                   0); /* exactly the limit is fine */
  assert_int_equal(rlen, (size_t)1 << 20);
  immu__free(resp);
  put32(req, (1u << 20) + 1);
  int rv = immu__grpc_client_unary(f->cli, "/t.S/Big", NULL, req, 4, &resp,
                                   &rlen, &res);
  assert_int_equal(rv, IMMU_ETOOLARGE);
  assert_int_equal(res.status, IMMU__GRPC_RESOURCE_EXHAUSTED);
  assert_non_null(strstr(res.message, "larger than max"));
  assert_null(resp);
  immu__grpc_result_free(&res);
  echo_ok(f->cli, (const uint8_t *)"alive", 5);
  assert_int_equal(immu__grpc_client_usable(f->cli), 1);
}

static void test_malformed_replies(void **state) {
  fx *f = *state;
  expect_fail(f->cli, "/t.S/Compressed", IMMU_EPROTO, IMMU__GRPC_INTERNAL);
  expect_fail(f->cli, "/t.S/NoStatus", IMMU_EPROTO, IMMU__GRPC_INTERNAL);
  expect_fail(f->cli, "/t.S/Truncated", IMMU_EPROTO, IMMU__GRPC_INTERNAL);
  expect_fail(f->cli, "/t.S/Two", IMMU_EPROTO, IMMU__GRPC_INTERNAL);
  expect_fail(f->cli, "/t.S/Empty", IMMU_EPROTO, IMMU__GRPC_INTERNAL);
  expect_fail(f->cli, "/t.S/Http500", IMMU_EPROTO, IMMU__GRPC_UNKNOWN);
  expect_fail(f->cli, "/t.S/BadType", IMMU_EPROTO, IMMU__GRPC_INTERNAL);
  expect_fail(f->cli, "/t.S/Rst", IMMU_ECLOSED, IMMU__GRPC_INTERNAL);
  expect_fail(f->cli, "/t.S/HugeHeaders", IMMU_ETOOLARGE,
              IMMU__GRPC_RESOURCE_EXHAUSTED);
  /* none of that hurt the connection */
  echo_ok(f->cli, (const uint8_t *)"fine", 4);
  assert_int_equal(immu__grpc_client_usable(f->cli), 1);
}

static void test_garbage_mid_call(void **state) {
  fx *f = *state;
  expect_fail(f->cli, "/t.S/Garbage", IMMU_EPROTO, IMMU__GRPC_INTERNAL);
  assert_int_equal(immu__grpc_client_usable(f->cli), 0);
  expect_fail(f->cli, "/t.S/Echo", IMMU_ECLOSED, IMMU__GRPC_UNAVAILABLE);
}

/* --- asynchronous unary calls --- */

typedef struct async_chain {
  immu__grpc_client *c;
  pthread_mutex_t *mu;
  pthread_cond_t *cv;
  int *active;
  int left; /* calls still to start */
  int ok, bad;
  int id;
} async_chain;

static void async_next(async_chain *a);

static void async_done(void *arg, int rc, const immu__grpc_result *res,
                       const uint8_t *resp, size_t len) {
  async_chain *a = arg;
  char want[32];
  snprintf(want, sizeof want, "chain-%d-%d", a->id, a->left);
  if (rc == 0 && res->status == 0 && resp != NULL && len == strlen(want) &&
      memcmp(resp, want, len) == 0)
    a->ok++;
  else
    a->bad++;
  async_next(a);
}

/* Starts the next call of the chain from the callback (I/O thread). */
static void async_next(async_chain *a) {
  if (a->left > 0) {
    char req[32];
    a->left--;
    snprintf(req, sizeof req, "chain-%d-%d", a->id, a->left);
    if (immu__grpc_client_unary_async(a->c, "/t.S/Echo", NULL,
                                      (const uint8_t *)req, strlen(req),
                                      async_done, a) == 0)
      return;
    a->bad++;
  }
  pthread_mutex_lock(a->mu);
  (*a->active)--;
  pthread_cond_broadcast(a->cv);
  pthread_mutex_unlock(a->mu);
}

typedef struct async_one {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int done, rc, status;
} async_one;

static void async_one_cb(void *arg, int rc, const immu__grpc_result *res,
                         const uint8_t *resp, size_t len) {
  async_one *o = arg;
  (void)resp;
  (void)len;
  pthread_mutex_lock(&o->mu);
  o->done++;
  o->rc = rc;
  o->status = res->status;
  pthread_cond_broadcast(&o->cv);
  pthread_mutex_unlock(&o->mu);
}

static void async_one_wait(async_one *o) {
  pthread_mutex_lock(&o->mu);
  while (o->done == 0)
    pthread_cond_wait(&o->cv, &o->mu);
  pthread_mutex_unlock(&o->mu);
}

static void test_unary_async(void **state) {
  enum { CH = 20, PER = 50 };
  fx *f = *state;
  pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
  pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
  async_chain ch[CH];
  int active = CH;
  for (int i = 0; i < CH; i++) {
    ch[i] = (async_chain){f->cli, &mu, &cv, &active, PER, 0, 0, i};
  }
  pthread_mutex_lock(&mu);
  for (int i = 0; i < CH; i++) {
    pthread_mutex_unlock(&mu);
    async_next(&ch[i]);
    pthread_mutex_lock(&mu);
  }
  while (active > 0)
    pthread_cond_wait(&cv, &mu);
  pthread_mutex_unlock(&mu);
  for (int i = 0; i < CH; i++) {
    assert_int_equal(ch[i].bad, 0);
    assert_int_equal(ch[i].ok, PER);
  }

  /* A non-OK status, then a connection that dies with a call in flight:
   * each callback runs exactly once. */
  async_one o;
  memset(&o, 0, sizeof o);
  pthread_mutex_init(&o.mu, NULL);
  pthread_cond_init(&o.cv, NULL);
  assert_int_equal(immu__grpc_client_unary_async(f->cli, "/t.S/Fail", NULL,
                                                 (const uint8_t *)"q", 1,
                                                 async_one_cb, &o),
                   0);
  async_one_wait(&o);
  assert_int_equal(o.rc, 0);
  assert_int_equal(o.status, IMMU__GRPC_NOT_FOUND);
  o.done = 0;
  assert_int_equal(immu__grpc_client_unary_async(f->cli, "/t.S/Kill", NULL,
                                                 (const uint8_t *)"q", 1,
                                                 async_one_cb, &o),
                   0);
  async_one_wait(&o);
  assert_int_equal(o.rc, -ECONNRESET);
  assert_int_equal(o.status, IMMU__GRPC_UNAVAILABLE);
  usleep(50000);
  assert_int_equal(o.done, 1);
  assert_int_equal(immu__grpc_client_unary_async(f->cli, "/t.S/Echo", NULL,
                                                 (const uint8_t *)"q", 1,
                                                 async_one_cb, &o),
                   IMMU_ECLOSED);
  assert_int_equal(immu__grpc_client_unary_async(f->cli, "nope", NULL, NULL,
                                                 0, async_one_cb, &o),
                   IMMU_EINVAL);
  pthread_cond_destroy(&o.cv);
  pthread_mutex_destroy(&o.mu);
}

static void test_connection_dropped(void **state) {
  fx *f = *state;
  expect_fail(f->cli, "/t.S/Kill", -ECONNRESET, IMMU__GRPC_UNAVAILABLE);
  assert_int_equal(immu__grpc_client_usable(f->cli), 0);
  expect_fail(f->cli, "/t.S/Echo", IMMU_ECLOSED, IMMU__GRPC_UNAVAILABLE);
}

static void test_goaway(void **state) {
  fx *f = *state;
  uint8_t *resp = NULL;
  size_t rlen = 0;
  immu__grpc_result res;
  immu__grpc_result_init(&res);
  assert_int_equal(immu__grpc_client_unary(f->cli, "/t.S/GoAway", NULL,
                                           (const uint8_t *)"g", 1, &resp,
                                           &rlen, &res),
                   0);
  assert_int_equal(res.status, 0);
  assert_int_equal(rlen, 1);
  immu__free(resp);
  immu__grpc_result_free(&res);
  assert_int_equal(immu__grpc_client_usable(f->cli), 0);
  expect_fail(f->cli, "/t.S/Echo", IMMU_ECLOSED, IMMU__GRPC_UNAVAILABLE);
}

static void test_invalid_args(void **state) {
  fx *f = *state;
  uint8_t *resp = NULL;
  size_t rlen = 0;
  immu__grpc_result res;
  immu__grpc_result_init(&res);
  immu__grpc_md bad_key[] = {{"X-Upper", "v"}};
  immu__grpc_md bad_val[] = {{"x-md", "line\nbreak"}};
  immu__grpc_md reserved[] = {{"grpc-timeout", "1S"}};
  immu__grpc_md pseudo[] = {{":path", "/x"}};
  immu__grpc_call_opts co = {bad_key, 1, 0};
  assert_int_equal(immu__grpc_client_unary(f->cli, "/t.S/Echo", &co, NULL, 0,
                                           &resp, &rlen, &res),
                   IMMU_EINVAL);
  co.md = bad_val;
  assert_int_equal(immu__grpc_client_unary(f->cli, "/t.S/Echo", &co, NULL, 0,
                                           &resp, &rlen, &res),
                   IMMU_EINVAL);
  co.md = reserved;
  assert_int_equal(immu__grpc_client_unary(f->cli, "/t.S/Echo", &co, NULL, 0,
                                           &resp, &rlen, &res),
                   IMMU_EINVAL);
  co.md = pseudo;
  assert_int_equal(immu__grpc_client_unary(f->cli, "/t.S/Echo", &co, NULL, 0,
                                           &resp, &rlen, &res),
                   IMMU_EINVAL);
  assert_int_equal(immu__grpc_client_unary(f->cli, "no-slash", NULL, NULL, 0,
                                           &resp, &rlen, &res),
                   IMMU_EINVAL);
  assert_int_equal(immu__grpc_client_unary(NULL, "/t.S/Echo", NULL, NULL, 0,
                                           &resp, &rlen, &res),
                   IMMU_EINVAL);
  assert_int_equal(immu__grpc_client_unary(f->cli, "/t.S/Echo", NULL, NULL, 0,
                                           NULL, &rlen, &res),
                   IMMU_EINVAL);
  /* a NULL result is allowed */
  assert_int_equal(immu__grpc_client_unary(f->cli, "/t.S/Echo", NULL,
                                           (const uint8_t *)"a", 1, &resp,
                                           &rlen, NULL),
                   0);
  immu__free(resp);
  immu__grpc_result_free(&res);
  immu__grpc_result_free(NULL);
  immu__grpc_client_free(NULL);
  assert_string_equal(immu__grpc_code_name(16), "UNAUTHENTICATED");
  assert_string_equal(immu__grpc_code_name(99), "?");
}

/* ------------------------------------------------------------------ */
/* concurrency                                                         */
/* ------------------------------------------------------------------ */

typedef struct worker {
  immu__grpc_client *c;
  int id;
  int failures;
} worker;

static void *worker_main(void *arg) {
  worker *w = arg;
  uint8_t buf[4096];
  immu__grpc_result res;
  immu__grpc_result_init(&res);
  for (int i = 0; i < 200; i++) {
    size_t n = (size_t)((w->id * 131 + i * 17) % (int)sizeof buf);
    for (size_t j = 0; j < n; j++)
      buf[j] = (uint8_t)(w->id + i + (int)j);
    uint8_t *resp = NULL;
    size_t rlen = 0;
    if (i % 10 == 9) {
      uint8_t req[8];
      put32(req, 20);
      put32(req + 4, 50);
      count_ctx x = {0, 50, 0, 0, 0};
      if (immu__grpc_client_server_stream(w->c, "/t.S/Count", NULL, req, 8,
                                          on_count, &x, &res) != 0 ||
          res.status != 0 || x.n != 20 || x.bad != 0)
        w->failures++;
      continue;
    }
    int rv = immu__grpc_client_unary(w->c, "/t.S/Echo", NULL, buf, n, &resp,
                                     &rlen, &res);
    if (rv != 0 || res.status != 0 || rlen != n ||
        (n > 0 && memcmp(resp, buf, n) != 0))
      w->failures++;
    immu__free(resp);
  }
  immu__grpc_result_free(&res);
  return NULL;
}

static void test_concurrent(void **state) {
  fx *f = *state;
  enum { NT = 8 };
  pthread_t t[NT];
  worker w[NT];
  int64_t t0 = mono_ms();
  for (int i = 0; i < NT; i++) {
    w[i] = (worker){f->cli, i, 0};
    pthread_create(&t[i], NULL, worker_main, &w[i]);
  }
  int failures = 0;
  for (int i = 0; i < NT; i++) {
    pthread_join(t[i], NULL);
    failures += w[i].failures;
  }
  assert_int_equal(failures, 0);
  assert_true(mono_ms() - t0 < 60000);
}

/* Calls given up in every state (deadline before the request is out,
 * mid-request, mid-reply; callback cancels; early replies), from many
 * threads on one handle: every outcome is one of the documented ones and
 * the connection stays healthy. Under ASan/TSan this checks the detach /
 * abandon paths. */
typedef struct chaos {
  immu__grpc_client *c;
  unsigned seed;
  int bad;
} chaos;

static void *chaos_main(void *arg) {
  chaos *h = arg;
  size_t big = 300000;
  uint8_t *d = calloc(1, big);
  immu__grpc_result res;
  immu__grpc_result_init(&res);
  for (int i = 0; i < 60; i++) {
    unsigned r = (unsigned)rand_r(&h->seed);
    immu__grpc_call_opts co = {NULL, 0, 1 + (int64_t)(r % 15)};
    uint8_t *resp = NULL;
    size_t rlen = 0;
    int rv;
    switch (r % 4) {
    case 0: /* big echo with a tiny deadline */
      rv = immu__grpc_client_unary(h->c, "/t.S/Echo", &co, d, big, &resp, &rlen,
                                   &res);
      if (!(rv == IMMU_ETIMEOUT || (rv == 0 && res.status == 0) ||
            (rv == 0 && res.status == IMMU__GRPC_DEADLINE_EXCEEDED)))
        h->bad++;
      immu__free(resp);
      break;
    case 1: { /* stream cancelled by its callback */
      uint8_t req[8];
      put32(req, 200);
      put32(req + 4, 5000);
      count_ctx x = {0, 5000, 0, 0, 1 + (int)(r % 5)};
      co.timeout_ms = 5000;
      rv = immu__grpc_client_server_stream(h->c, "/t.S/Count", &co, req, 8,
                                           on_count, &x, &res);
      if (rv != -42)
        h->bad++;
      break;
    }
    case 2: /* hang past a short deadline */
      rv = immu__grpc_client_unary(h->c, "/t.S/Hang", &co, d, 10, &resp, &rlen,
                                   &res);
      if (rv != IMMU_ETIMEOUT)
        h->bad++;
      break;
    default: { /* early reply to a large request */
      immu__grpc_msg m = {d, big};
      co.timeout_ms = 5000;
      rv = immu__grpc_client_client_stream(h->c, "/t.S/Early", &co, &m, 1,
                                           &resp, &rlen, &res);
      if (rv != 0 || res.status != IMMU__GRPC_RESOURCE_EXHAUSTED)
        h->bad++;
      break;
    }
    }
  }
  immu__grpc_result_free(&res);
  free(d);
  return NULL;
}

static void test_chaos(void **state) {
  fx *f = *state;
  enum { NT = 8 };
  pthread_t t[NT];
  chaos h[NT];
  for (int i = 0; i < NT; i++) {
    h[i] = (chaos){f->cli, (unsigned)(1234 + i), 0};
    pthread_create(&t[i], NULL, chaos_main, &h[i]);
  }
  int bad = 0;
  for (int i = 0; i < NT; i++) {
    pthread_join(t[i], NULL);
    bad += h[i].bad;
  }
  assert_int_equal(bad, 0);
  assert_int_equal(immu__grpc_client_usable(f->cli), 1);
  echo_ok(f->cli, (const uint8_t *)"calm", 4);
  /* freed right away, with whatever is still abandoned */
}

/* ------------------------------------------------------------------ */
/* connection failures                                                 */
/* ------------------------------------------------------------------ */

static void test_not_http2(void **state) {
  (void)state;
  tsrv *s = srv_start(MODE_GARBAGE, NULL);
  immu__grpc_client_opts o;
  memset(&o, 0, sizeof o);
  o.loop = g_loop;
  o.host = "127.0.0.1";
  o.port = s->port;
  o.connect_timeout_ms = 5000;
  immu__grpc_client *c = (immu__grpc_client *)1;
  char err[256];
  int64_t t0 = mono_ms();
  assert_int_equal(immu__grpc_client_connect(&o, &c, err, sizeof err),
                   IMMU_EPROTO);
  assert_true(mono_ms() - t0 < 4000);
  assert_null(c);
  assert_true(strlen(err) > 0);
  srv_stop(s);
}

static void test_silent_server(void **state) {
  (void)state;
  tsrv *s = srv_start(MODE_SILENT, NULL);
  immu__grpc_client_opts o;
  memset(&o, 0, sizeof o);
  o.loop = g_loop;
  o.host = "127.0.0.1";
  o.port = s->port;
  o.connect_timeout_ms = 300;
  immu__grpc_client *c = NULL;
  int64_t t0 = mono_ms();
  assert_int_equal(immu__grpc_client_connect(&o, &c, NULL, 0), IMMU_ETIMEOUT);
  int64_t dt = mono_ms() - t0;
  assert_true(dt >= 250 && dt < 3000);
  srv_stop(s);
}

static void test_refused(void **state) {
  (void)state;
  /* a port that was just free */
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, (struct sockaddr *)&a, sizeof a);
  socklen_t sl = sizeof a;
  getsockname(fd, (struct sockaddr *)&a, &sl);
  int port = ntohs(a.sin_port);
  close(fd);
  immu__grpc_client_opts o;
  memset(&o, 0, sizeof o);
  o.loop = g_loop;
  o.host = "127.0.0.1";
  o.port = port;
  immu__grpc_client *c = NULL;
  assert_int_equal(immu__grpc_client_connect(&o, &c, NULL, 0), -ECONNREFUSED);
  o.port = 0;
  assert_int_equal(immu__grpc_client_connect(&o, &c, NULL, 0), IMMU_EINVAL);
  o.port = port;
  o.host = "no-such-host.invalid";
  int rv = immu__grpc_client_connect(&o, &c, NULL, 0);
  assert_true(rv == IMMU_ENOTFOUND || rv < 0);
  assert_null(c);
}

/* ------------------------------------------------------------------ */
/* TLS                                                                 */
/* ------------------------------------------------------------------ */

typedef struct pki {
  EVP_PKEY *ca_key, *srv_key, *cli_key;
  X509 *ca, *srv, *cli;
  char ca_path[512], cli_cert_path[512], cli_key_path[512];
} pki;

static void add_ext(X509 *x, X509 *issuer, int nid, const char *val) {
  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, issuer, x, NULL, NULL, 0);
  X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, &ctx, nid, val);
  assert_non_null(e);
  X509_add_ext(x, e, -1);
  X509_EXTENSION_free(e);
}

static X509 *make_cert(EVP_PKEY *key, const char *cn, X509 *issuer,
                       EVP_PKEY *issuer_key, long serial, int ca,
                       const char *san) {
  X509 *x = X509_new();
  X509_set_version(x, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(x), serial);
  X509_gmtime_adj(X509_getm_notBefore(x), -3600);
  X509_gmtime_adj(X509_getm_notAfter(x), 86400);
  X509_set_pubkey(x, key);
  X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
                             (const unsigned char *)cn, -1, -1, 0);
  X509_set_issuer_name(x, X509_get_subject_name(issuer ? issuer : x));
  if (ca) {
    add_ext(x, x, NID_basic_constraints, "critical,CA:TRUE");
    add_ext(x, x, NID_key_usage, "critical,keyCertSign,cRLSign");
  } else {
    add_ext(x, issuer, NID_basic_constraints, "CA:FALSE");
    if (san != NULL)
      add_ext(x, issuer, NID_subject_alt_name, san);
  }
  assert_true(X509_sign(x, issuer_key, EVP_sha256()) > 0);
  return x;
}

static void write_pem(const char *path, X509 *x, EVP_PKEY *k) {
  FILE *fp = fopen(path, "w");
  assert_non_null(fp);
  if (x != NULL)
    PEM_write_X509(fp, x);
  if (k != NULL)
    PEM_write_PrivateKey(fp, k, NULL, NULL, 0, NULL, NULL);
  fclose(fp);
}

static void pki_make(pki *p) {
  const char *dir = getenv("IMMU_TEST_TMPDIR");
  if (dir == NULL)
    dir = "/tmp";
  p->ca_key = EVP_EC_gen("P-256");
  p->srv_key = EVP_EC_gen("P-256");
  p->cli_key = EVP_EC_gen("P-256");
  assert_non_null(p->ca_key);
  p->ca = make_cert(p->ca_key, "test ca", NULL, p->ca_key, 1, 1, NULL);
  p->srv = make_cert(p->srv_key, "server", p->ca, p->ca_key, 2, 0,
                     "IP:127.0.0.1,DNS:localhost");
  p->cli = make_cert(p->cli_key, "client", p->ca, p->ca_key, 3, 0, NULL);
  snprintf(p->ca_path, sizeof p->ca_path, "%s/grpc_ca_%d.pem", dir,
           (int)getpid());
  snprintf(p->cli_cert_path, sizeof p->cli_cert_path, "%s/grpc_cli_%d.pem", dir,
           (int)getpid());
  snprintf(p->cli_key_path, sizeof p->cli_key_path, "%s/grpc_cli_key_%d.pem",
           dir, (int)getpid());
  write_pem(p->ca_path, p->ca, NULL);
  write_pem(p->cli_cert_path, p->cli, NULL);
  write_pem(p->cli_key_path, NULL, p->cli_key);
}

static void pki_free(pki *p) {
  unlink(p->ca_path);
  unlink(p->cli_cert_path);
  unlink(p->cli_key_path);
  X509_free(p->ca);
  X509_free(p->srv);
  X509_free(p->cli);
  EVP_PKEY_free(p->ca_key);
  EVP_PKEY_free(p->srv_key);
  EVP_PKEY_free(p->cli_key);
}

static SSL_CTX *server_ctx(pki *p, int mtls, int no_alpn) {
  SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
  assert_int_equal(SSL_CTX_use_certificate(ctx, p->srv), 1);
  assert_int_equal(SSL_CTX_use_PrivateKey(ctx, p->srv_key), 1);
  SSL_CTX_set_alpn_select_cb(ctx, alpn_select, no_alpn ? (void *)1 : NULL);
  if (mtls) {
    X509_STORE_add_cert(SSL_CTX_get_cert_store(ctx), p->ca);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT,
                       NULL);
  }
  return ctx;
}

static int tls_connect(int port, const pki *p, const char *host,
                       const char *name, int ca, int cert, int insecure,
                       immu__grpc_client **out) {
  immu__grpc_client_opts o;
  memset(&o, 0, sizeof o);
  o.loop = g_loop;
  o.host = host;
  o.port = port;
  o.tls = 1;
  o.ca_file = ca ? p->ca_path : NULL;
  o.server_name = name;
  o.insecure_skip_verify = insecure;
  o.connect_timeout_ms = 5000;
  o.default_timeout_ms = 20000;
  if (cert) {
    o.cert_file = p->cli_cert_path;
    o.key_file = p->cli_key_path;
  }
  char err[256];
  int rv = immu__grpc_client_connect(&o, out, err, sizeof err);
  if (rv != 0)
    print_message("  tls connect: %s: %s\n", immu_err_name(rv), err);
  return rv;
}

static void test_tls(void **state) {
  (void)state;
  pki p;
  pki_make(&p);
  immu__grpc_client *c = NULL;

  SSL_CTX *ctx = server_ctx(&p, 0, 0);
  tsrv *s = srv_start(MODE_H2, ctx);
  /* verified by IP SAN, then by DNS SAN */
  assert_int_equal(tls_connect(s->port, &p, "127.0.0.1", NULL, 1, 0, 0, &c), 0);
  echo_ok(c, (const uint8_t *)"tls", 3);
  size_t big = (size_t)2 << 20;
  uint8_t *d = malloc(big);
  memset(d, 0x5a, big);
  immu__grpc_msg m = {d, big};
  check_sum(c, &m, 1);
  free(d);
  immu__grpc_client_free(c);
  assert_int_equal(
      tls_connect(s->port, &p, "127.0.0.1", "localhost", 1, 0, 0, &c), 0);
  echo_ok(c, (const uint8_t *)"tls", 3);
  immu__grpc_client_free(c);
  /* wrong name, unknown CA */
  assert_int_equal(
      tls_connect(s->port, &p, "127.0.0.1", "wrong.example", 1, 0, 0, &c),
      IMMU_EAUTH);
  assert_null(c);
  assert_int_equal(tls_connect(s->port, &p, "127.0.0.1", NULL, 0, 0, 0, &c),
                   IMMU_EAUTH);
  /* ... unless verification is off */
  assert_int_equal(tls_connect(s->port, &p, "127.0.0.1", NULL, 0, 0, 1, &c), 0);
  echo_ok(c, (const uint8_t *)"insecure", 8);
  immu__grpc_client_free(c);
  /* a cleartext client on a TLS port fails cleanly */
  immu__grpc_client_opts o;
  memset(&o, 0, sizeof o);
  o.loop = g_loop;
  o.host = "127.0.0.1";
  o.port = s->port;
  o.connect_timeout_ms = 2000;
  assert_true(immu__grpc_client_connect(&o, &c, NULL, 0) < 0);
  assert_null(c);
  srv_stop(s);
  SSL_CTX_free(ctx);

  /* mTLS */
  ctx = server_ctx(&p, 1, 0);
  s = srv_start(MODE_H2, ctx);
  int rv = tls_connect(s->port, &p, "127.0.0.1", NULL, 1, 0, 0, &c);
  assert_true(rv < 0); /* no client certificate */
  assert_null(c);
  assert_int_equal(tls_connect(s->port, &p, "127.0.0.1", NULL, 1, 1, 0, &c), 0);
  echo_ok(c, (const uint8_t *)"mtls", 4);
  immu__grpc_client_free(c);
  srv_stop(s);
  SSL_CTX_free(ctx);

  /* a TLS server that does not negotiate h2 */
  ctx = server_ctx(&p, 0, 1);
  s = srv_start(MODE_H2, ctx);
  assert_int_equal(tls_connect(s->port, &p, "127.0.0.1", NULL, 1, 0, 0, &c),
                   IMMU_EPROTO);
  srv_stop(s);
  SSL_CTX_free(ctx);

  /* unreadable client certificate */
  immu__grpc_client_opts o2;
  memset(&o2, 0, sizeof o2);
  o2.loop = g_loop;
  o2.host = "127.0.0.1";
  o2.port = 1;
  o2.tls = 1;
  o2.cert_file = "/nonexistent.pem";
  o2.key_file = "/nonexistent.pem";
  assert_int_equal(immu__grpc_client_connect(&o2, &c, NULL, 0), IMMU_ECRYPTO);
  o2.key_file = NULL;
  assert_int_equal(immu__grpc_client_connect(&o2, &c, NULL, 0), IMMU_EINVAL);
  pki_free(&p);
}

int main(void) {
  signal(SIGPIPE, SIG_IGN); /* the test server writes to closed sockets */
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_unary, setup, teardown),
      cmocka_unit_test_setup_teardown(test_server_stream, setup, teardown),
      cmocka_unit_test_setup_teardown(test_client_stream, setup, teardown),
      cmocka_unit_test_setup_teardown(test_early_reply, setup, teardown),
      cmocka_unit_test_setup_teardown(test_deadline, setup, teardown),
      cmocka_unit_test_setup_teardown(test_oversized_reply, setup, teardown),
      cmocka_unit_test_setup_teardown(test_malformed_replies, setup, teardown),
      cmocka_unit_test_setup_teardown(test_garbage_mid_call, setup, teardown),
      cmocka_unit_test_setup_teardown(test_connection_dropped, setup, teardown),
      cmocka_unit_test_setup_teardown(test_unary_async, setup, teardown),
      cmocka_unit_test_setup_teardown(test_goaway, setup, teardown),
      cmocka_unit_test_setup_teardown(test_invalid_args, setup, teardown),
      cmocka_unit_test_setup_teardown(test_concurrent, setup, teardown),
      cmocka_unit_test_setup_teardown(test_chaos, setup, teardown),
      cmocka_unit_test(test_not_http2),
      cmocka_unit_test(test_silent_server),
      cmocka_unit_test(test_refused),
      cmocka_unit_test(test_tls),
  };
  int failed = cmocka_run_group_tests_name("own I/O thread", tests, NULL, NULL);
  /* The same tests, every connection driven by one shared loop. */
  if (immu__grpc_loop_new(&g_loop) != 0) {
    fprintf(stderr, "immu__grpc_loop_new failed\n");
    return 1;
  }
  failed += cmocka_run_group_tests_name("shared loop", tests, NULL, NULL);
  immu__grpc_loop_free(g_loop);
  return failed;
}
