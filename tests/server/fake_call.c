/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The fake gRPC call of fake_call.h: server.h's call API (immu_grpc_call_*)
 * for tests that drive the service handlers without the transport.
 */
#include "fake_call.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "immudb/err.h"

static void (*g_fail_fn)(const char *fmt, va_list ap);

void fake_call_set_fail(void (*fn)(const char *fmt, va_list ap)) {
  g_fail_fn = fn;
}

static void fake_fail(const char *fmt, ...)
    __attribute__((format(printf, 1, 2), noreturn));
static void fake_fail(const char *fmt, ...) {
  va_list ap;
  if (g_fail_fn != NULL) {
    va_start(ap, fmt);
    g_fail_fn(fmt, ap);
    va_end(ap);
  }
  va_start(ap, fmt);
  fprintf(stderr, "fake_call: ");
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
  abort();
}

void *fake_xmalloc(size_t n) {
  void *p = malloc(n ? n : 1);
  if (p == NULL)
    fake_fail("out of memory");
  return p;
}

void *fake_xrealloc(void *p, size_t n) {
  p = realloc(p, n ? n : 1);
  if (p == NULL)
    fake_fail("out of memory");
  return p;
}

static int64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Appends a copy of |p| (|n| bytes, its own allocation) to a message
 * array of |*count| entries, grown 16 at a time. */
static void msgs_append(uint8_t ***msgs, size_t **lens, size_t *count,
                        const void *p, size_t n) {
  if (*count % 16 == 0) {
    *msgs = fake_xrealloc(*msgs, (*count + 16) * sizeof **msgs);
    *lens = fake_xrealloc(*lens, (*count + 16) * sizeof **lens);
  }
  (*msgs)[*count] = fake_xmalloc(n);
  if (n > 0)
    memcpy((*msgs)[*count], p, n);
  (*lens)[*count] = n;
  (*count)++;
}

/* ------------------------------------------------------------------ */
/* Test side                                                           */
/* ------------------------------------------------------------------ */

void fake_call_init(immu_grpc_call *c, const char *path) {
  memset(c, 0, sizeof *c);
  c->path = path;
  c->status = -1;
  if (pthread_mutex_init(&c->mu, NULL) != 0 ||
      pthread_cond_init(&c->cv, NULL) != 0)
    fake_fail("pthread_mutex_init / pthread_cond_init");
}

void fake_call_clear(immu_grpc_call *c) {
  for (size_t i = 0; i < c->nmsgs; i++)
    free(c->msgs[i]);
  for (size_t i = 0; i < c->nsent && c->sent != NULL; i++)
    free(c->sent[i]);
  free(c->msgs);
  free(c->lens);
  free(c->sent);
  free(c->sent_len);
  if (c->reply != NULL)
    protobuf_c_message_free_unpacked(c->reply, NULL);
  pthread_mutex_destroy(&c->mu);
  pthread_cond_destroy(&c->cv);
  memset(c, 0, sizeof *c);
}

immu_grpc_call *fake_call_new(const char *path) {
  immu_grpc_call *c = fake_xmalloc(sizeof *c);
  fake_call_init(c, path);
  return c;
}

void fake_call_free(immu_grpc_call *c) {
  if (c == NULL)
    return;
  fake_call_clear(c);
  free(c);
}

void fake_call_add_msg(immu_grpc_call *c, const void *p, size_t n) {
  msgs_append(&c->msgs, &c->lens, &c->nmsgs, p, n);
}

void fake_call_add_pb(immu_grpc_call *c, const ProtobufCMessage *m) {
  size_t n = m != NULL ? protobuf_c_message_get_packed_size(m) : 0;
  uint8_t *b = fake_xmalloc(n);
  if (m != NULL)
    protobuf_c_message_pack(m, b);
  fake_call_add_msg(c, b, n);
  free(b);
}

static void set_meta(immu_grpc_call *c, char *dst, const char *key,
                     const char *value) {
  size_t n = value != NULL ? strlen(value) : 0;
  if (n >= FAKE_CALL_META_MAX)
    fake_fail("%s: %s metadata of %zu bytes (at most %d)", c->path, key, n,
              FAKE_CALL_META_MAX - 1);
  if (n > 0)
    memcpy(dst, value, n);
  dst[n] = '\0';
}

void fake_call_set_auth(immu_grpc_call *c, const char *value) {
  set_meta(c, c->auth, "authorization", value);
}

void fake_call_set_sid(immu_grpc_call *c, const char *value) {
  set_meta(c, c->sid, "sessionid", value);
}

/* Waits until a detached call is finished (at most wait_timeout_s). */
static void call_wait(immu_grpc_call *c) {
  struct timespec dl;
  clock_gettime(CLOCK_REALTIME, &dl);
  dl.tv_sec += (time_t)c->wait_timeout_s;
  pthread_mutex_lock(&c->mu);
  while (!c->finished) {
    if (c->wait_timeout_s == 0)
      pthread_cond_wait(&c->cv, &c->mu);
    else if (pthread_cond_timedwait(&c->cv, &c->mu, &dl) != 0)
      break;
  }
  pthread_mutex_unlock(&c->mu);
}

void fake_call_run(immu_grpc_call *c, immu_grpc_handler h, void *arg,
                   unsigned flags) {
  int finished;
  c->start_ms = mono_ms();
  /* As the transport: a TRY_INLINE handler first runs "on the loop" and
   * may ask for a second run on a worker. */
  c->on_loop = (flags & IMMU_GRPC_METHOD_TRY_INLINE) != 0;
  h(c, arg);
  if (c->on_loop) {
    c->on_loop = 0;
    if (c->deferred) {
      if (c->finished || c->detached)
        fake_fail("%s: deferred and answered", c->path);
      c->deferred = 0;
      c->ndefers++;
      h(c, arg);
    }
  }
  if (c->detached)
    call_wait(c);
  pthread_mutex_lock(&c->mu);
  finished = c->finished;
  pthread_mutex_unlock(&c->mu);
  if (!finished)
    fake_fail("%s: the handler returned without finishing the call",
              c->path);
}

/* ------------------------------------------------------------------ */
/* server.h's call API                                                 */
/* ------------------------------------------------------------------ */

size_t immu_grpc_call_nmsgs(const immu_grpc_call *c) {
  return c->nmsgs;
}

const uint8_t *immu_grpc_call_msg(const immu_grpc_call *c, size_t i,
                                  size_t *len) {
  if (i >= c->nmsgs) {
    if (c->check_msg_index)
      fake_fail("%s: request message %zu of %zu read", c->path, i,
                c->nmsgs);
    *len = 0;
    return NULL;
  }
  *len = c->lens[i];
  return c->msgs[i];
}

const char *immu_grpc_call_metadata(const immu_grpc_call *c, const char *key) {
  if (c->finished)
    fake_fail("%s: metadata read after finish", c->path);
  if (strcmp(key, "authorization") == 0)
    return c->auth[0] != '\0' ? c->auth : NULL;
  if (strcmp(key, "sessionid") == 0)
    return c->sid[0] != '\0' ? c->sid : NULL;
  return NULL;
}

const char *immu_grpc_call_path(const immu_grpc_call *c) {
  return c->path;
}

const char *immu_grpc_call_peer_ip(const immu_grpc_call *c) {
  return c->peer_ip != NULL ? c->peer_ip : "127.0.0.1";
}

int immu_grpc_call_peer_is_loopback(const immu_grpc_call *c) {
  return !c->peer_remote;
}

int immu_grpc_call_cancelled(const immu_grpc_call *c) {
  return c->cancelled ||
         (c->cancel_after_ms > 0 &&
          mono_ms() - c->start_ms >= c->cancel_after_ms);
}

int immu_grpc_call_add_header(immu_grpc_call *c, const char *key,
                              const char *value) {
  if (key == NULL || value == NULL)
    fake_fail("%s: add_header with NULL", c->path);
  if (c->finished || c->nsent > 0)
    return IMMU_EINVAL;
  return 0;
}

int immu_grpc_call_send(immu_grpc_call *c, const uint8_t *msg, size_t len) {
  if (c->finished)
    fake_fail("%s: send after finish", c->path);
  if (len > 0 && msg == NULL)
    fake_fail("%s: send of %zu bytes from NULL", c->path, len);
  if (c->cancelled || (c->send_cap > 0 && c->sent_bytes + len > c->send_cap))
    return IMMU_ECLOSED;
  if (c->reply_desc != NULL) {
    ProtobufCMessage *m =
        protobuf_c_message_unpack(c->reply_desc, NULL, len, msg);
    if (m == NULL)
      fake_fail("%s: reply message %zu (%zu bytes) does not unpack as %s",
                c->path, c->nsent, len, c->reply_desc->name);
    if (c->keep_reply && c->reply == NULL)
      c->reply = m;
    else
      protobuf_c_message_free_unpacked(m, NULL);
  }
  if (c->record_sent) {
    size_t n = c->nsent;
    msgs_append(&c->sent, &c->sent_len, &n, msg, len);
  }
  c->nsent++;
  c->sent_bytes += len;
  return 0;
}

void immu_grpc_call_finish(immu_grpc_call *c, int status, const char *msg) {
  int prev_status;
  char prev[sizeof c->message];
  pthread_mutex_lock(&c->mu);
  if (c->finished) {
    prev_status = c->status;
    memcpy(prev, c->message, sizeof prev);
    pthread_mutex_unlock(&c->mu);
    fake_fail("%s: call finished twice (%d \"%s\", then %d \"%s\")", c->path,
              prev_status, prev, status, msg ? msg : "");
  }
  if (status < 0 || status > 16) {
    pthread_mutex_unlock(&c->mu);
    fake_fail("%s: finished with status %d", c->path, status);
  }
  c->status = status;
  snprintf(c->message, sizeof c->message, "%s", msg ? msg : "");
  c->finished = 1;
  pthread_cond_broadcast(&c->cv);
  pthread_mutex_unlock(&c->mu);
}

void immu_grpc_call_detach(immu_grpc_call *c) {
  pthread_mutex_lock(&c->mu);
  if (c->detached || c->finished) {
    pthread_mutex_unlock(&c->mu);
    fake_fail("%s: detach of a detached or finished call", c->path);
  }
  c->detached = 1;
  pthread_mutex_unlock(&c->mu);
}

int immu_grpc_call_on_loop(const immu_grpc_call *c) {
  return c->on_loop;
}

void immu_grpc_call_defer(immu_grpc_call *c) {
  if (!c->on_loop || c->deferred || c->finished || c->detached ||
      c->nsent > 0)
    fake_fail("%s: defer outside a fresh inline attempt", c->path);
  c->deferred = 1;
}

typedef struct resume_job {
  immu_grpc_call *c;
  void (*fn)(immu_grpc_call *, void *);
  void *arg;
} resume_job;

static void *resume_main(void *p) {
  resume_job *r = p;
  r->fn(r->c, r->arg);
  free(r);
  return NULL;
}

/* As the transport: |fn| runs on another thread (a worker), never inside
 * the caller (an engine callback). */
void immu_grpc_call_resume(immu_grpc_call *c,
                           void (*fn)(immu_grpc_call *c, void *arg),
                           void *arg) {
  resume_job *r;
  pthread_t th;
  if (!c->detached)
    fake_fail("%s: resume of a call that is not detached", c->path);
  r = fake_xmalloc(sizeof *r);
  *r = (resume_job){c, fn, arg};
  if (pthread_create(&th, NULL, resume_main, r) != 0)
    fake_fail("%s: resume: pthread_create failed", c->path);
  pthread_detach(th);
}
