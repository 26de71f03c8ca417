/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fuzz target: the gRPC/HTTP2 transport (src/server/grpc.c) fed raw bytes
 * over real loopback connections.
 *
 * One immu_grpc_server runs for the whole run (started on the first input,
 * stopped and freed at exit) on 127.0.0.1, port 0, with small limits so
 * that short inputs reach them, and a few handlers:
 *   /t.T/Echo    sends back every request message (and x-md metadata)
 *   /t.T/Stream  sends the first request message three times
 *   /t.T/Fail    ends with INVALID_ARGUMENT and a message to percent-encode
 *   /t.T/Wait    polls immu_grpc_call_cancelled for up to 50 ms
 *
 * Each input is the byte stream of one client connection, sent twice:
 *   1. after the HTTP/2 client preface; the harness then reads whatever
 *      comes back until the server is quiet for QUIET_MS (at most
 *      REPLY_MS), so that responses are produced on an open connection;
 *   2. as is (no preface).
 * Each time it then shuts down its write side and reads until the server
 * closes or CLOSE_MS pass, and closes the socket.
 *
 * The server must survive every input: every CHECK_EVERY inputs (and at
 * exit) a well-formed unary Echo call over a fresh connection, made with
 * nghttp2's client, must succeed within a few seconds, or the target
 * aborts.
 *
 * Built with -DIMMU_FUZZ_GRPC_GEN (and without replay_main.c), the file
 * has a main(OUTDIR) that writes the seed corpus: HTTP/2 frame sequences
 * (without the preface) produced with nghttp2's client API into memory,
 * plus hand-made broken ones, named by their SHA-256.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <nghttp2/nghttp2.h>

#include "server/server.h"

#define QUIET_MS 3
#define REPLY_MS 50
#define CLOSE_MS 100
#define CHECK_EVERY 64
#define CHECK_TRIES 3
#define CHECK_MS 3000

#define TEST_UUID "fuzz0grpc0frames0001"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void die(const char *fmt, ...)
    __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "fuzz_grpc_frames: ");
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
  abort();
}

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

/* ------------------------------------------------------------------ */
/* The server                                                          */
/* ------------------------------------------------------------------ */

static void h_echo(immu_grpc_call *c, void *arg) {
  const char *md = immu_grpc_call_metadata(c, "x-md");
  size_t n = immu_grpc_call_nmsgs(c);
  (void)arg;
  immu_grpc_call_add_header(c, "x-echo", "yes");
  if (md != NULL)
    immu_grpc_call_add_header(c, "x-md-echo", md);
  for (size_t i = 0; i < n; i++) {
    size_t len;
    const uint8_t *p = immu_grpc_call_msg(c, i, &len);
    if (immu_grpc_call_send(c, p, len) != 0) {
      immu_grpc_call_finish(c, IMMU_GRPC_CANCELLED, "cancelled");
      return;
    }
  }
  immu_grpc_call_finish(c, IMMU_GRPC_OK, NULL);
}

static void h_stream(immu_grpc_call *c, void *arg) {
  size_t len = 0;
  const uint8_t *p = immu_grpc_call_msg(c, 0, &len);
  (void)arg;
  for (int i = 0; i < 3; i++) {
    if (immu_grpc_call_send(c, p, p ? len : 0) != 0) {
      immu_grpc_call_finish(c, IMMU_GRPC_CANCELLED, "cancelled");
      return;
    }
  }
  immu_grpc_call_finish(c, IMMU_GRPC_OK, NULL);
}

static void h_fail(immu_grpc_call *c, void *arg) {
  (void)arg;
  immu_grpc_call_finish(c, IMMU_GRPC_INVALID_ARGUMENT,
                        "bad 100% thing\n\xc3\xa9\x01");
}

static void h_wait(immu_grpc_call *c, void *arg) {
  (void)arg;
  for (int i = 0; i < 10; i++) {
    if (immu_grpc_call_cancelled(c)) {
      immu_grpc_call_finish(c, IMMU_GRPC_CANCELLED, "cancelled");
      return;
    }
    sleep_ms(5);
  }
  immu_grpc_call_finish(c, IMMU_GRPC_OK, NULL);
}

static const immu_grpc_method k_methods[] = {
    {"/t.T/Echo", h_echo, NULL, 0},
    {"/t.T/Stream", h_stream, NULL, 0},
    {"/t.T/Fail", h_fail, NULL, 0},
    {"/t.T/Wait", h_wait, NULL, 0},
};

static struct {
  int inited;
  int verbose;
  immu_grpc_server *s;
  pthread_t th;
  int port;
  uint64_t inputs;
} g;

static void quiet_log(void *arg, int level, const char *msg) {
  (void)arg;
  if (g.verbose || level <= 0)
    fprintf(stderr, "[server %d] %s\n", level, msg);
}

static void on_done(void *arg, const char *path, int status, double seconds,
                    const char *peer_ip) {
  (void)arg;
  if (g.verbose)
    fprintf(stderr, "[call] %s: status %d in %.1f ms from %s\n", path, status,
            seconds * 1000, peer_ip);
}

static void *run_thread(void *arg) {
  (void)arg;
  immu_grpc_server_run(g.s);
  return NULL;
}

static int echo_ok(void);

static void cleanup(void) {
  if (!g.inited)
    return;
  if (!echo_ok())
    die("the server does not answer at exit");
  immu_grpc_server_stop(g.s, 1);
  pthread_join(g.th, NULL);
  immu_grpc_server_free(g.s);
  g.s = NULL;
  g.inited = 0;
}

static void init_once(void) {
  immu_grpc_config cfg;
  char *err = NULL;
  int rc;
  if (g.inited)
    return;
  g.verbose = getenv("IMMU_FUZZ_VERBOSE") != NULL;
  immu_grpc_config_init(&cfg);
  cfg.address = "127.0.0.1";
  cfg.port = 0;
  cfg.workers = 2;
  cfg.max_recv_msg_size = 1024;
  cfg.max_call_bytes = 4096;
  cfg.max_concurrent_streams = 8;
  cfg.max_connections = 64;
  cfg.idle_timeout_s = 5;
  cfg.header_timeout_s = 3;
  cfg.uuid = TEST_UUID;
  cfg.log = quiet_log;
  cfg.on_call_done = on_done;
  rc = immu_grpc_server_new(&cfg, k_methods,
                            sizeof k_methods / sizeof k_methods[0], &g.s,
                            &err);
  if (rc != 0)
    die("immu_grpc_server_new: %d %s", rc, err ? err : "");
  g.port = immu_grpc_server_port(g.s);
  if (pthread_create(&g.th, NULL, run_thread, NULL) != 0)
    die("pthread_create");
  g.inited = 1;
  atexit(cleanup);
}

static int tcp_connect(void) {
  struct sockaddr_in sa;
  int one = 1;
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    die("socket: %s", strerror(errno));
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_port = htons((uint16_t)g.port);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
    close(fd);
    return -1;
  }
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return fd;
}

/* Waits up to |ms| for input on |fd| and reads it. Returns the number of
 * bytes read, 0 on timeout, -1 once the peer closed (or reset). */
static ssize_t read_some(int fd, int ms, uint8_t *buf, size_t cap) {
  struct pollfd p = {fd, POLLIN, 0};
  ssize_t n;
  if (ms < 0)
    ms = 0;
  if (poll(&p, 1, ms) <= 0)
    return 0;
  n = recv(fd, buf, cap, 0);
  if (n < 0 && (errno == EAGAIN || errno == EINTR))
    return 0;
  return n > 0 ? n : -1;
}

/* Writes all of |p| unless the server closes first. Returns 0 or -1. */
static int write_all(int fd, const uint8_t *p, size_t n, int64_t deadline) {
  while (n > 0) {
    struct pollfd pf = {fd, POLLOUT, 0};
    ssize_t w;
    int64_t left = deadline - mono_ms();
    if (left <= 0 || poll(&pf, 1, (int)left) <= 0)
      return -1;
    w = send(fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (w < 0) {
      if (errno == EAGAIN || errno == EINTR)
        continue;
      return -1;
    }
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

/* One connection: [preface] + input, optionally read replies, half-close,
 * read until the server closes (bounded), close. */
static void one_conn(const uint8_t *data, size_t size, int preface) {
  uint8_t buf[16384];
  int64_t start = mono_ms(), end;
  int fd = tcp_connect(), closed = 0;
  if (fd < 0)
    die("cannot connect to the server: %s", strerror(errno));
  if (preface && write_all(fd, (const uint8_t *)NGHTTP2_CLIENT_MAGIC,
                           NGHTTP2_CLIENT_MAGIC_LEN, start + CLOSE_MS) != 0)
    closed = 1;
  if (!closed && write_all(fd, data, size, start + CLOSE_MS) != 0)
    closed = 1;
  if (!closed && preface) {
    size_t got = 0;
    end = mono_ms() + REPLY_MS;
    for (;;) {
      ssize_t n = read_some(fd, QUIET_MS, buf, sizeof buf);
      if (n < 0) {
        closed = 1;
        break;
      }
      got += (size_t)n;
      if (n == 0 || mono_ms() >= end)
        break;
    }
    if (g.verbose)
      fprintf(stderr, "[conn] %zu bytes back%s in %lld ms\n", got,
              closed ? ", closed" : "", (long long)(mono_ms() - start));
  }
  shutdown(fd, SHUT_WR);
  end = mono_ms() + CLOSE_MS;
  while (!closed) {
    int64_t left = end - mono_ms();
    if (left <= 0)
      break;
    if (read_some(fd, (int)left, buf, sizeof buf) < 0)
      closed = 1;
  }
  close(fd);
}

/* ------------------------------------------------------------------ */
/* Liveness: one unary Echo call with nghttp2's client                 */
/* ------------------------------------------------------------------ */

typedef struct probe {
  int fd;
  int dead;
  int closed;
  int grpc_status;
  int uuid_ok;
  uint8_t body[256];
  size_t body_len;
  const uint8_t *req;
  size_t req_len, req_off;
} probe;

static ssize_t pr_send(nghttp2_session *h2, const uint8_t *data, size_t len,
                       int flags, void *ud) {
  probe *p = ud;
  ssize_t n;
  (void)h2;
  (void)flags;
  n = send(p->fd, data, len, MSG_NOSIGNAL);
  if (n < 0) {
    p->dead = 1;
    return NGHTTP2_ERR_CALLBACK_FAILURE;
  }
  return n;
}

static int pr_header(nghttp2_session *h2, const nghttp2_frame *frame,
                     const uint8_t *name, size_t namelen, const uint8_t *value,
                     size_t valuelen, uint8_t flags, void *ud) {
  probe *p = ud;
  (void)h2;
  (void)frame;
  (void)flags;
  if (namelen == 11 && memcmp(name, "grpc-status", 11) == 0) {
    char tmp[16];
    size_t n = valuelen < sizeof tmp - 1 ? valuelen : sizeof tmp - 1;
    memcpy(tmp, value, n);
    tmp[n] = '\0';
    p->grpc_status = atoi(tmp);
  } else if (namelen == 11 && memcmp(name, "immudb-uuid", 11) == 0) {
    p->uuid_ok = valuelen == strlen(TEST_UUID) &&
                 memcmp(value, TEST_UUID, valuelen) == 0;
  }
  return 0;
}

static int pr_data(nghttp2_session *h2, uint8_t flags, int32_t id,
                   const uint8_t *data, size_t len, void *ud) {
  probe *p = ud;
  (void)h2;
  (void)flags;
  (void)id;
  if (p->body_len + len > sizeof p->body)
    return NGHTTP2_ERR_CALLBACK_FAILURE;
  memcpy(p->body + p->body_len, data, len);
  p->body_len += len;
  return 0;
}

static int pr_close(nghttp2_session *h2, int32_t id, uint32_t code, void *ud) {
  probe *p = ud;
  (void)h2;
  (void)id;
  (void)code;
  p->closed = 1;
  return 0;
}

static ssize_t pr_read(nghttp2_session *h2, int32_t id, uint8_t *buf,
                       size_t len, uint32_t *flags, nghttp2_data_source *src,
                       void *ud) {
  probe *p = src->ptr;
  size_t n = p->req_len - p->req_off;
  (void)h2;
  (void)id;
  (void)ud;
  if (n > len)
    n = len;
  memcpy(buf, p->req + p->req_off, n);
  p->req_off += n;
  if (p->req_off == p->req_len)
    *flags |= NGHTTP2_DATA_FLAG_EOF;
  return (ssize_t)n;
}

#define MKNV(n, v)                                                             \
  {                                                                            \
    (uint8_t *)(uintptr_t)(n), (uint8_t *)(uintptr_t)(v), sizeof(n) - 1,       \
        sizeof(v) - 1, NGHTTP2_NV_FLAG_NONE                                    \
  }

static int echo_once(void) {
  static const uint8_t req[] = {0, 0, 0, 0, 5, 'h', 'e', 'l', 'l', 'o'};
  const nghttp2_nv nv[] = {
      MKNV(":method", "POST"),       MKNV(":scheme", "http"),
      MKNV(":path", "/t.T/Echo"),    MKNV(":authority", "localhost"),
      MKNV("content-type", "application/grpc"), MKNV("te", "trailers"),
  };
  nghttp2_session_callbacks *cbs;
  nghttp2_session *h2;
  nghttp2_data_provider prd;
  probe p;
  int64_t end = mono_ms() + CHECK_MS;
  int ok;

  memset(&p, 0, sizeof p);
  p.grpc_status = -1;
  p.fd = tcp_connect();
  if (p.fd < 0)
    return 0;
  if (nghttp2_session_callbacks_new(&cbs) != 0)
    die("out of memory");
  nghttp2_session_callbacks_set_send_callback(cbs, pr_send);
  nghttp2_session_callbacks_set_on_header_callback(cbs, pr_header);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, pr_data);
  nghttp2_session_callbacks_set_on_stream_close_callback(cbs, pr_close);
  if (nghttp2_session_client_new(&h2, cbs, &p) != 0)
    die("out of memory");
  nghttp2_session_callbacks_del(cbs);
  nghttp2_submit_settings(h2, NGHTTP2_FLAG_NONE, NULL, 0);
  p.req = req;
  p.req_len = sizeof req;
  prd.source.ptr = &p;
  prd.read_callback = pr_read;
  if (nghttp2_submit_request(h2, NULL, nv, sizeof nv / sizeof nv[0], &prd,
                             NULL) < 0)
    die("nghttp2_submit_request");
  while (!p.closed && !p.dead) {
    uint8_t buf[16384];
    ssize_t n;
    int64_t left = end - mono_ms();
    if (nghttp2_session_want_write(h2) && nghttp2_session_send(h2) != 0)
      break;
    if (left <= 0)
      break;
    n = read_some(p.fd, left < 20 ? (int)left : 20, buf, sizeof buf);
    if (n < 0 || (n > 0 && nghttp2_session_mem_recv(h2, buf, (size_t)n) < 0))
      break;
  }
  ok = p.closed && p.grpc_status == 0 && p.uuid_ok &&
       p.body_len == sizeof req && memcmp(p.body, req, sizeof req) == 0;
  nghttp2_session_del(h2);
  close(p.fd);
  return ok;
}

static int echo_ok(void) {
  for (int i = 0; i < CHECK_TRIES; i++) {
    if (echo_once())
      return 1;
    sleep_ms(100);
  }
  return 0;
}

/* ------------------------------------------------------------------ */
/* One input                                                           */
/* ------------------------------------------------------------------ */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  init_once();
  one_conn(data, size, 1);
  one_conn(data, size, 0);
  if (++g.inputs % CHECK_EVERY == 0 && !echo_ok())
    die("the server stopped answering after input %llu",
        (unsigned long long)g.inputs);
  return 0;
}

#ifdef IMMU_FUZZ_GRPC_GEN
/* ------------------------------------------------------------------ */
/* Seed corpus generator                                               */
/* ------------------------------------------------------------------ */
#include <openssl/evp.h>

static const char *g_out;
static unsigned g_nseeds;

typedef struct capbuf {
  uint8_t *b;
  size_t n, cap;
} capbuf;

static void cap_add(capbuf *c, const void *p, size_t n) {
  if (c->n + n > c->cap) {
    size_t nc = c->cap ? c->cap * 2 : 4096;
    while (nc < c->n + n)
      nc *= 2;
    c->b = realloc(c->b, nc);
    if (c->b == NULL)
      die("out of memory");
    c->cap = nc;
  }
  memcpy(c->b + c->n, p, n);
  c->n += n;
}

static void write_seed(const uint8_t *p, size_t n) {
  uint8_t md[32];
  unsigned mdlen = 0;
  char path[1024], hex[65];
  FILE *f;
  if (EVP_Digest(p, n, md, &mdlen, EVP_sha256(), NULL) != 1)
    die("sha256");
  for (unsigned i = 0; i < 32; i++)
    snprintf(hex + 2 * i, 3, "%02x", md[i]);
  snprintf(path, sizeof path, "%s/%s", g_out, hex);
  f = fopen(path, "wb");
  if (f == NULL || (n > 0 && fwrite(p, 1, n, f) != n) || fclose(f) != 0)
    die("cannot write %s", path);
  LLVMFuzzerTestOneInput(p, n);
  g_nseeds++;
}

/* Writes |c| without the client preface nghttp2 put first. */
static void emit(capbuf *c) {
  if (c->n >= NGHTTP2_CLIENT_MAGIC_LEN &&
      memcmp(c->b, NGHTTP2_CLIENT_MAGIC, NGHTTP2_CLIENT_MAGIC_LEN) == 0)
    write_seed(c->b + NGHTTP2_CLIENT_MAGIC_LEN,
               c->n - NGHTTP2_CLIENT_MAGIC_LEN);
  else
    write_seed(c->b, c->n);
  free(c->b);
  memset(c, 0, sizeof *c);
}

static ssize_t gen_send(nghttp2_session *h2, const uint8_t *data, size_t len,
                        int flags, void *ud) {
  (void)h2;
  (void)flags;
  cap_add(ud, data, len);
  return (ssize_t)len;
}

static ssize_t gen_pad(nghttp2_session *h2, const nghttp2_frame *frame,
                       size_t max_payloadlen, void *ud) {
  (void)h2;
  (void)ud;
  return (ssize_t)(frame->hd.length + 17 <= max_payloadlen
                       ? frame->hd.length + 17
                       : max_payloadlen);
}

/* A request body read in pieces of |piece| bytes (one DATA frame each);
 * |trailer|: end with a trailer HEADERS instead of END_STREAM on DATA. */
typedef struct body {
  const uint8_t *p;
  size_t n, off, piece;
  int trailer;
} body;

static ssize_t body_read(nghttp2_session *h2, int32_t id, uint8_t *buf,
                         size_t len, uint32_t *flags, nghttp2_data_source *src,
                         void *ud) {
  body *b = src->ptr;
  size_t n = b->n - b->off;
  (void)ud;
  if (b->piece && n > b->piece)
    n = b->piece;
  if (n > len)
    n = len;
  memcpy(buf, b->p + b->off, n);
  b->off += n;
  if (b->off == b->n) {
    *flags |= NGHTTP2_DATA_FLAG_EOF;
    if (b->trailer) {
      const nghttp2_nv tr[] = {MKNV("x-trailer", "t")};
      *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
      nghttp2_submit_trailer(h2, id, tr, 1);
    }
  }
  return (ssize_t)n;
}

static nghttp2_session *gen_session(capbuf *c, int padded) {
  nghttp2_session_callbacks *cbs;
  nghttp2_session *h2;
  nghttp2_option *opt;
  if (nghttp2_session_callbacks_new(&cbs) != 0 || nghttp2_option_new(&opt) != 0)
    die("out of memory");
  nghttp2_session_callbacks_set_send_callback(cbs, gen_send);
  if (padded)
    nghttp2_session_callbacks_set_select_padding_callback(cbs, gen_pad);
  nghttp2_option_set_max_send_header_block_length(opt, 256u << 10);
  nghttp2_option_set_peer_max_concurrent_streams(opt, 1000);
  if (nghttp2_session_client_new2(&h2, cbs, c, opt) != 0)
    die("nghttp2_session_client_new2");
  nghttp2_option_del(opt);
  nghttp2_session_callbacks_del(cbs);
  return h2;
}

static void gen_flush(nghttp2_session *h2) {
  if (nghttp2_session_send(h2) != 0)
    die("nghttp2_session_send");
}

/* gRPC framing of |n| messages. */
static size_t grpc_msg(uint8_t *out, uint8_t flag, const void *p, size_t n,
                       uint32_t declared) {
  out[0] = flag;
  out[1] = (uint8_t)(declared >> 24);
  out[2] = (uint8_t)(declared >> 16);
  out[3] = (uint8_t)(declared >> 8);
  out[4] = (uint8_t)declared;
  memcpy(out + 5, p, n);
  return 5 + n;
}

/* Submits a request with the usual gRPC headers plus |extra| (name, value
 * pairs, NULL-terminated); |over| replaces a pseudo-header or content-type
 * when its name matches. Returns the stream id. */
static int32_t gen_req(nghttp2_session *h2, const char *path,
                       const char *const *extra, body *b,
                       const nghttp2_priority_spec *pri) {
  nghttp2_nv nv[40];
  size_t n = 0;
  const char *method = "POST", *ctype = "application/grpc", *te = "trailers";
  nghttp2_data_provider prd;
  int32_t id;
  for (const char *const *e = extra; e != NULL && e[0] != NULL; e += 2) {
    if (strcmp(e[0], ":method") == 0)
      method = e[1];
    else if (strcmp(e[0], "content-type") == 0)
      ctype = e[1];
    else if (strcmp(e[0], "te") == 0)
      te = e[1];
  }
#define NV(nm, val)                                                            \
  do {                                                                         \
    nv[n].name = (uint8_t *)(uintptr_t)(nm);                                   \
    nv[n].namelen = strlen(nm);                                                \
    nv[n].value = (uint8_t *)(uintptr_t)(val);                                 \
    nv[n].valuelen = strlen(val);                                              \
    nv[n].flags = NGHTTP2_NV_FLAG_NONE;                                        \
    n++;                                                                       \
  } while (0)
  NV(":method", method);
  NV(":scheme", "http");
  NV(":path", path);
  NV(":authority", "localhost");
  if (ctype[0])
    NV("content-type", ctype);
  if (te[0])
    NV("te", te);
  for (const char *const *e = extra; e != NULL && e[0] != NULL && n < 38;
       e += 2)
    if (strcmp(e[0], ":method") != 0 && strcmp(e[0], "content-type") != 0 &&
        strcmp(e[0], "te") != 0)
      NV(e[0], e[1]);
#undef NV
  prd.source.ptr = b;
  prd.read_callback = body_read;
  id = nghttp2_submit_request(h2, pri, nv, n, b ? &prd : NULL, NULL);
  if (id < 0)
    die("nghttp2_submit_request: %s", nghttp2_strerror(id));
  return id;
}

/* Appends one raw frame. */
static void raw_frame(capbuf *c, uint8_t type, uint8_t flags, uint32_t sid,
                      const void *p, size_t n) {
  uint8_t h[9];
  h[0] = (uint8_t)(n >> 16);
  h[1] = (uint8_t)(n >> 8);
  h[2] = (uint8_t)n;
  h[3] = type;
  h[4] = flags;
  h[5] = (uint8_t)(sid >> 24);
  h[6] = (uint8_t)(sid >> 16);
  h[7] = (uint8_t)(sid >> 8);
  h[8] = (uint8_t)sid;
  cap_add(c, h, 9);
  if (n > 0)
    cap_add(c, p, n);
}

static const uint8_t k_hello[] = {0, 0, 0, 0, 5, 'h', 'e', 'l', 'l', 'o'};

/* A whole connection: SETTINGS, one request to |path| with |extra|
 * headers and |p|/|n| as the body. */
static void seed_call(const char *path, const char *const *extra,
                      const uint8_t *p, size_t n, size_t piece, int padded) {
  capbuf c = {0};
  nghttp2_session *h2 = gen_session(&c, padded);
  body b = {p, n, 0, piece, 0};
  nghttp2_submit_settings(h2, NGHTTP2_FLAG_NONE, NULL, 0);
  gen_req(h2, path, extra, p ? &b : NULL, NULL);
  gen_flush(h2);
  nghttp2_session_del(h2);
  emit(&c);
}

static void gen_all(void) {
  uint8_t big[8192];
  size_t n;

  /* Well-formed calls. */
  seed_call("/t.T/Echo", NULL, k_hello, sizeof k_hello, 0, 0);
  {
    const char *const md[] = {"x-md", "meta value", "grpc-timeout", "5S",
                              "user-agent", "fuzz/1", "authorization",
                              "Bearer abc", NULL};
    seed_call("/t.T/Echo", md, k_hello, sizeof k_hello, 0, 0);
  }
  seed_call("/t.T/Stream", NULL, k_hello, sizeof k_hello, 0, 0);
  seed_call("/t.T/Fail", NULL, k_hello, sizeof k_hello, 0, 0);
  seed_call("/t.T/Wait", NULL, NULL, 0, 0, 0);
  {
    const char *const to[] = {"grpc-timeout", "1m", NULL};
    seed_call("/t.T/Wait", to, NULL, 0, 0, 0);
  }
  /* Client streaming: three messages cut into 7-byte DATA frames. */
  n = 0;
  n += grpc_msg(big + n, 0, "one", 3, 3);
  n += grpc_msg(big + n, 0, "", 0, 0);
  n += grpc_msg(big + n, 0, "three333", 8, 8);
  seed_call("/t.T/Echo", NULL, big, n, 7, 0);
  seed_call("/t.T/Echo", NULL, big, n, 0, 1); /* padded */

  /* Several streams on one connection, with priorities and control
   * frames. */
  {
    capbuf c = {0};
    nghttp2_session *h2 = gen_session(&c, 0);
    body b1 = {k_hello, sizeof k_hello, 0, 0, 0},
         b2 = {k_hello, sizeof k_hello, 0, 0, 0},
         b3 = {k_hello, sizeof k_hello, 0, 0, 0};
    nghttp2_priority_spec pri;
    uint8_t ping[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_HEADER_TABLE_SIZE, 0},
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
        {NGHTTP2_SETTINGS_MAX_FRAME_SIZE, 16384},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 65535}};
    int32_t id;
    nghttp2_submit_settings(h2, NGHTTP2_FLAG_NONE, iv, 4);
    nghttp2_submit_ping(h2, NGHTTP2_FLAG_NONE, ping);
    nghttp2_submit_window_update(h2, NGHTTP2_FLAG_NONE, 0, 1 << 20);
    id = gen_req(h2, "/t.T/Echo", NULL, &b1, NULL);
    nghttp2_priority_spec_init(&pri, id, 32, 1);
    gen_req(h2, "/t.T/Stream", NULL, &b2, &pri);
    gen_req(h2, "/t.T/Fail", NULL, &b3, NULL);
    gen_flush(h2);
    nghttp2_submit_window_update(h2, NGHTTP2_FLAG_NONE, id, 4096);
    nghttp2_submit_priority(h2, NGHTTP2_FLAG_NONE, id, &pri);
    nghttp2_submit_goaway(h2, NGHTTP2_FLAG_NONE, 0, NGHTTP2_NO_ERROR,
                          (const uint8_t *)"bye", 3);
    gen_flush(h2);
    nghttp2_session_del(h2);
    emit(&c);
  }
  /* A request reset by the client; then a rapid-reset burst. */
  for (int burst = 1; burst <= 40; burst += 39) {
    capbuf c = {0};
    nghttp2_session *h2 = gen_session(&c, 0);
    nghttp2_submit_settings(h2, NGHTTP2_FLAG_NONE, NULL, 0);
    for (int i = 0; i < burst; i++) {
      int32_t id = gen_req(h2, "/t.T/Wait", NULL, NULL, NULL);
      gen_flush(h2);
      nghttp2_submit_rst_stream(h2, NGHTTP2_FLAG_NONE, id, NGHTTP2_CANCEL);
      gen_flush(h2);
    }
    nghttp2_session_del(h2);
    emit(&c);
  }
  /* More streams than SETTINGS_MAX_CONCURRENT_STREAMS (8). */
  {
    capbuf c = {0};
    nghttp2_session *h2 = gen_session(&c, 0);
    nghttp2_submit_settings(h2, NGHTTP2_FLAG_NONE, NULL, 0);
    for (int i = 0; i < 12; i++)
      gen_req(h2, "/t.T/Wait", NULL, NULL, NULL);
    gen_flush(h2);
    nghttp2_session_del(h2);
    emit(&c);
  }
  /* Client trailers; zero window for the server's replies. */
  {
    capbuf c = {0};
    nghttp2_session *h2 = gen_session(&c, 0);
    body b = {k_hello, sizeof k_hello, 0, 0, 1};
    nghttp2_settings_entry iv[] = {{NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 0}};
    nghttp2_submit_settings(h2, NGHTTP2_FLAG_NONE, iv, 1);
    gen_req(h2, "/t.T/Echo", NULL, &b, NULL);
    gen_flush(h2);
    nghttp2_session_del(h2);
    emit(&c);
  }

  /* Requests the transport must refuse. */
  seed_call("/no.Such/Method", NULL, k_hello, sizeof k_hello, 0, 0);
  {
    const char *const h1[] = {"content-type", "text/plain", NULL};
    const char *const h2[] = {":method", "GET", NULL};
    const char *const h3[] = {"grpc-timeout", "abc", NULL};
    const char *const h4[] = {"grpc-timeout", "99999999H", NULL};
    const char *const h5[] = {"grpc-encoding", "gzip", NULL};
    const char *const h6[] = {"te", "", "content-type",
                              "application/grpc+proto", NULL};
    const char *const h7[] = {"Upper-Case", "x", NULL};
    uint8_t comp[16];
    size_t cn = grpc_msg(comp, 1, "abc", 3, 3);
    seed_call("/t.T/Echo", h1, k_hello, sizeof k_hello, 0, 0);
    seed_call("/t.T/Echo", h2, NULL, 0, 0, 0);
    seed_call("/t.T/Echo", h3, k_hello, sizeof k_hello, 0, 0);
    seed_call("/t.T/Wait", h4, NULL, 0, 0, 0);
    seed_call("/t.T/Echo", h5, comp, cn, 0, 0);
    seed_call("/t.T/Echo", h6, k_hello, sizeof k_hello, 0, 0);
    seed_call("/t.T/Echo", h7, k_hello, sizeof k_hello, 0, 0);
  }
  /* Size limits: a declared length past max_recv_msg_size, a message over
   * it, a call over max_call_bytes, a truncated message. */
  {
    static uint8_t body_buf[6000];
    uint8_t fill[1100];
    memset(fill, 'm', sizeof fill);
    n = grpc_msg(body_buf, 0, "0123456789", 10, 100000);
    seed_call("/t.T/Echo", NULL, body_buf, n, 0, 0);
    n = grpc_msg(body_buf, 0, fill, 1100, 1100);
    seed_call("/t.T/Echo", NULL, body_buf, n, 0, 0);
    n = 0;
    for (int i = 0; i < 5; i++)
      n += grpc_msg(body_buf + n, 0, fill, 1000, 1000);
    seed_call("/t.T/Echo", NULL, body_buf, n, 0, 0);
    n = grpc_msg(body_buf, 0, "abc", 3, 10);
    seed_call("/t.T/Echo", NULL, body_buf, n, 0, 0);
    seed_call("/t.T/Echo", NULL, body_buf, 3, 0, 0);
  }
  /* A header block over one frame: HEADERS + CONTINUATION. */
  {
    static char v[20000];
    const char *const hb[] = {"x-big", v, NULL};
    memset(v, 'a', sizeof v - 1);
    seed_call("/t.T/Echo", hb, k_hello, sizeof k_hello, 0, 0);
  }

  /* Hand-made frames, valid and not. */
  {
    static const uint8_t settings_ack[] = {0};
    static const uint8_t wu0[4] = {0, 0, 0, 0};
    static const uint8_t wu_conn[4] = {0, 0, 0x10, 0};
    static const uint8_t rst[4] = {0, 0, 0, 8};
    static const uint8_t goaway[8] = {0, 0, 0, 0, 0, 0, 0, 2};
    static const uint8_t ping[8] = {0};
    static const uint8_t prio[5] = {0, 0, 0, 0, 16};
    static const uint8_t bad_hpack[] = {0xff, 0xff, 0xff, 0xff, 0x0f, 0x82};
    static const uint8_t set6[6] = {0, 4, 0x7f, 0xff, 0xff, 0xff};
    static const uint8_t set_bad[5] = {0, 1, 0, 0, 0};
    capbuf c = {0};
    uint8_t hdr_block[512];
    size_t hl;

    /* An HPACK block of a valid request, taken from nghttp2. */
    {
      capbuf t = {0};
      nghttp2_session *h2 = gen_session(&t, 0);
      gen_req(h2, "/t.T/Echo", NULL, NULL, NULL);
      gen_flush(h2);
      nghttp2_session_del(h2);
      /* After the preface: find the HEADERS frame. */
      {
        size_t off = NGHTTP2_CLIENT_MAGIC_LEN;
        hl = 0;
        while (off + 9 <= t.n) {
          size_t flen = (size_t)t.b[off] << 16 | (size_t)t.b[off + 1] << 8 |
                        t.b[off + 2];
          if (t.b[off + 3] == NGHTTP2_HEADERS) {
            hl = flen;
            break;
          }
          off += 9 + flen;
        }
        if (hl == 0 || hl > sizeof hdr_block || off + 9 + hl > t.n)
          die("no usable HEADERS frame");
        memcpy(hdr_block, t.b + off + 9, hl);
      }
      free(t.b);
    }

    /* SETTINGS, HEADERS (END_HEADERS), DATA (END_STREAM), by hand. */
    raw_frame(&c, NGHTTP2_SETTINGS, 0, 0, NULL, 0);
    raw_frame(&c, NGHTTP2_HEADERS, NGHTTP2_FLAG_END_HEADERS, 1, hdr_block, hl);
    raw_frame(&c, NGHTTP2_DATA, NGHTTP2_FLAG_END_STREAM, 1, k_hello,
              sizeof k_hello);
    emit(&c);
    /* The same with the header block split over CONTINUATION frames and
     * control frames after it. */
    raw_frame(&c, NGHTTP2_SETTINGS, 0, 0, set6, 6);
    raw_frame(&c, NGHTTP2_SETTINGS, NGHTTP2_FLAG_ACK, 0, NULL, 0);
    raw_frame(&c, NGHTTP2_HEADERS, 0, 1, hdr_block, hl / 3);
    raw_frame(&c, NGHTTP2_CONTINUATION, 0, 1, hdr_block + hl / 3, hl / 3);
    raw_frame(&c, NGHTTP2_CONTINUATION, NGHTTP2_FLAG_END_HEADERS, 1,
              hdr_block + 2 * (hl / 3), hl - 2 * (hl / 3));
    raw_frame(&c, NGHTTP2_DATA, 0, 1, k_hello, 3);
    raw_frame(&c, NGHTTP2_WINDOW_UPDATE, 0, 0, wu_conn, 4);
    raw_frame(&c, NGHTTP2_DATA, NGHTTP2_FLAG_END_STREAM, 1, k_hello + 3,
              sizeof k_hello - 3);
    raw_frame(&c, NGHTTP2_PING, 0, 0, ping, 8);
    raw_frame(&c, NGHTTP2_PRIORITY, 0, 3, prio, 5);
    raw_frame(&c, NGHTTP2_RST_STREAM, 0, 1, rst, 4);
    raw_frame(&c, NGHTTP2_GOAWAY, 0, 0, goaway, 8);
    emit(&c);
    /* Protocol errors, one per connection. */
    raw_frame(&c, NGHTTP2_DATA, 0, 0, k_hello, sizeof k_hello);
    emit(&c);
    raw_frame(&c, NGHTTP2_SETTINGS, 0, 0, NULL, 0);
    raw_frame(&c, NGHTTP2_HEADERS, NGHTTP2_FLAG_END_HEADERS, 2, hdr_block, hl);
    emit(&c);
    raw_frame(&c, NGHTTP2_SETTINGS, 0, 0, NULL, 0);
    raw_frame(&c, NGHTTP2_HEADERS,
              NGHTTP2_FLAG_END_HEADERS | NGHTTP2_FLAG_END_STREAM, 1,
              bad_hpack, sizeof bad_hpack);
    emit(&c);
    raw_frame(&c, NGHTTP2_SETTINGS, 0, 0, set_bad, sizeof set_bad);
    emit(&c);
    raw_frame(&c, NGHTTP2_SETTINGS, NGHTTP2_FLAG_ACK, 0, settings_ack, 1);
    emit(&c);
    raw_frame(&c, NGHTTP2_SETTINGS, 0, 0, NULL, 0);
    raw_frame(&c, NGHTTP2_HEADERS, NGHTTP2_FLAG_END_HEADERS, 1, hdr_block, hl);
    raw_frame(&c, NGHTTP2_WINDOW_UPDATE, 0, 1, wu0, 4);
    emit(&c);
    raw_frame(&c, NGHTTP2_SETTINGS, 0, 0, NULL, 0);
    raw_frame(&c, NGHTTP2_CONTINUATION, NGHTTP2_FLAG_END_HEADERS, 1,
              hdr_block, hl);
    emit(&c);
    raw_frame(&c, NGHTTP2_SETTINGS, 0, 0, NULL, 0);
    raw_frame(&c, NGHTTP2_PUSH_PROMISE, NGHTTP2_FLAG_END_HEADERS, 1, rst, 4);
    emit(&c);
    raw_frame(&c, NGHTTP2_SETTINGS, 0, 0, NULL, 0);
    raw_frame(&c, 0x20, 0xff, 7, "unknown", 7);
    raw_frame(&c, NGHTTP2_RST_STREAM, 0, 5, rst, 4);
    emit(&c);
    raw_frame(&c, NGHTTP2_SETTINGS, 0, 0, NULL, 0);
    raw_frame(&c, NGHTTP2_HEADERS, 0, 1, hdr_block, hl / 2);
    raw_frame(&c, NGHTTP2_DATA, 0, 1, k_hello, sizeof k_hello);
    emit(&c);
    raw_frame(&c, NGHTTP2_SETTINGS, 0, 0, NULL, 0);
    raw_frame(&c, NGHTTP2_HEADERS, NGHTTP2_FLAG_END_HEADERS, 1, hdr_block, hl);
    raw_frame(&c, NGHTTP2_DATA, NGHTTP2_FLAG_PADDED | NGHTTP2_FLAG_END_STREAM,
              1, "\xf0hello", 6); /* pad length past the payload */
    emit(&c);
    /* A frame header announcing 16 MiB; a truncated frame header. */
    cap_add(&c, "\xff\xff\xff\x00\x00\x00\x00\x00\x01", 9);
    emit(&c);
    cap_add(&c, "\x00\x00\x06\x04", 4);
    emit(&c);
    /* The preface itself (the variant without it gets a valid start). */
    cap_add(&c, NGHTTP2_CLIENT_MAGIC, NGHTTP2_CLIENT_MAGIC_LEN);
    raw_frame(&c, NGHTTP2_SETTINGS, 0, 0, NULL, 0);
    raw_frame(&c, NGHTTP2_HEADERS, NGHTTP2_FLAG_END_HEADERS, 1, hdr_block, hl);
    raw_frame(&c, NGHTTP2_DATA, NGHTTP2_FLAG_END_STREAM, 1, k_hello,
              sizeof k_hello);
    write_seed(c.b, c.n);
    free(c.b);
    memset(&c, 0, sizeof c);
    /* HTTP/1.1 instead of HTTP/2; nothing at all. */
    write_seed((const uint8_t *)"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 27);
    write_seed((const uint8_t *)"", 0);
  }
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s OUTDIR\n", argv[0]);
    return 2;
  }
  g_out = argv[1];
  gen_all();
  printf("%u seeds written to %s\n", g_nseeds, g_out);
  return 0;
}
#endif /* IMMU_FUZZ_GRPC_GEN */
