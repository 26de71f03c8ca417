/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Consistency checker thread (see checker.h).
 *
 * All waits are timed waits on one condition variable (CLOCK_MONOTONIC),
 * so stop and kick wake the thread at once; the only non-interruptible
 * step is the verification of one database.
 */
#include "server/checker.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>

#include "core/mem.h"
#include "immudb/err.h"
#include "server/config.h"

struct immu_checker {
  immu_checker_config cfg;
  pthread_t thread;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int stop;        /* under mu */
  int kicked;      /* under mu */
  int joined;      /* under mu */
  uint64_t passes; /* under mu */
};

__attribute__((format(printf, 3, 4))) static void
clog_(immu_checker *c, int level, const char *fmt, ...) {
  if (c->cfg.log == NULL)
    return;
  char buf[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof(buf), fmt, ap);
  va_end(ap);
  c->cfg.log(c->cfg.log_arg, level, buf);
}

/* Waits up to |ms| or until stop (or kick, when |wake_on_kick|). Returns 1
 * if the thread must stop. Called with mu held. */
static int wait_ms(immu_checker *c, long long ms, int wake_on_kick) {
  struct timespec until;
  clock_gettime(CLOCK_MONOTONIC, &until);
  until.tv_sec += (time_t)(ms / 1000);
  until.tv_nsec += (long)(ms % 1000) * 1000000L;
  if (until.tv_nsec >= 1000000000L) {
    until.tv_sec++;
    until.tv_nsec -= 1000000000L;
  }
  while (!c->stop && !(wake_on_kick && c->kicked)) {
    int rc = pthread_cond_timedwait(&c->cv, &c->mu, &until);
    if (rc == ETIMEDOUT)
      break;
  }
  return c->stop;
}

/* A growable list of database names. */
typedef struct names {
  char **v;
  size_t n, cap;
  int oom;
} names;

static void add_name(void *arg, const char *name) {
  names *l = arg;
  if (l->oom || name == NULL)
    return;
  if (l->n == l->cap) {
    size_t cap = l->cap ? l->cap * 2 : 8;
    char **v = immu__realloc(l->v, cap * sizeof(*v));
    if (v == NULL) {
      l->oom = 1;
      return;
    }
    l->v = v;
    l->cap = cap;
  }
  l->v[l->n] = immu__strndup(name, strlen(name));
  if (l->v[l->n] == NULL) {
    l->oom = 1;
    return;
  }
  l->n++;
}

static void free_names(names *l) {
  for (size_t i = 0; i < l->n; i++)
    immu__free(l->v[i]);
  immu__free(l->v);
  memset(l, 0, sizeof(*l));
}

static double since(const struct timespec *t0) {
  struct timespec t1;
  clock_gettime(CLOCK_MONOTONIC, &t1);
  return (double)(t1.tv_sec - t0->tv_sec) +
         (double)(t1.tv_nsec - t0->tv_nsec) / 1e9;
}

/* One pass over every database. Returns 1 if asked to stop. */
static int run_pass(immu_checker *c) {
  names l = {0};
  c->cfg.list(c->cfg.arg, add_name, &l);
  if (l.oom)
    clog_(c, IMMU_LOG_WARN,
          "consistency check: out of memory listing databases; partial pass");
  clog_(c, IMMU_LOG_DEBUG, "consistency check: pass over %zu database(s)", l.n);
  int stopped = 0;
  for (size_t i = 0; i < l.n; i++) {
    pthread_mutex_lock(&c->mu);
    if (i > 0)
      stopped = wait_ms(c, c->cfg.db_pause_ms, 0);
    else
      stopped = c->stop;
    pthread_mutex_unlock(&c->mu);
    if (stopped)
      break;

    char msg[512];
    msg[0] = '\0';
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int rc = c->cfg.verify(c->cfg.arg, l.v[i], msg, sizeof(msg));
    if (rc == IMMU_ENOTFOUND)
      continue; /* unloaded meanwhile */
    time_t when = time(NULL);
    if (rc == 0) {
      clog_(c, IMMU_LOG_DEBUG,
            "consistency check of database %s passed in %.3fs", l.v[i],
            since(&t0));
    } else {
      clog_(c, IMMU_LOG_ERROR,
            "consistency check of database %s FAILED: %s (%s)", l.v[i],
            msg[0] ? msg : immu_strerror(rc), immu_err_name(rc));
    }
    if (c->cfg.on_result != NULL)
      c->cfg.on_result(c->cfg.result_arg, l.v[i], rc == 0, when);
  }
  free_names(&l);
  return stopped;
}

static void *checker_main(void *arg) {
  immu_checker *c = arg;
  prctl(PR_SET_NAME, "immu-checker");
  pthread_mutex_lock(&c->mu);
  int stopped = wait_ms(c, c->cfg.initial_delay_ms, 1);
  pthread_mutex_unlock(&c->mu);
  while (!stopped) {
    pthread_mutex_lock(&c->mu);
    c->kicked = 0;
    pthread_mutex_unlock(&c->mu);

    stopped = run_pass(c);

    pthread_mutex_lock(&c->mu);
    if (!stopped)
      c->passes++;
    pthread_cond_broadcast(&c->cv);
    if (!stopped)
      stopped = wait_ms(c, (long long)c->cfg.interval_s * 1000, 1);
    pthread_mutex_unlock(&c->mu);
  }
  return NULL;
}

int immu_checker_start(const immu_checker_config *cfg, immu_checker **out) {
  *out = NULL;
  if (cfg->list == NULL || cfg->verify == NULL)
    return IMMU_EINVAL;
  immu_checker *c = immu__calloc(1, sizeof(*c));
  if (c == NULL)
    return IMMU_ENOMEM;
  c->cfg = *cfg;
  if (c->cfg.interval_s <= 0)
    c->cfg.interval_s = 60;
  if (c->cfg.initial_delay_ms < 0)
    c->cfg.initial_delay_ms = 5000;
  if (c->cfg.db_pause_ms < 0)
    c->cfg.db_pause_ms = 1000;
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&c->cv, &ca);
  pthread_condattr_destroy(&ca);
  pthread_mutex_init(&c->mu, NULL);
  int err = pthread_create(&c->thread, NULL, checker_main, c);
  if (err != 0) {
    pthread_cond_destroy(&c->cv);
    pthread_mutex_destroy(&c->mu);
    immu__free(c);
    return -err;
  }
  clog_(c, IMMU_LOG_INFO,
        "consistency checker started: every database re-verified, %ds "
        "between passes",
        c->cfg.interval_s);
  *out = c;
  return 0;
}

void immu_checker_kick(immu_checker *c) {
  if (c == NULL)
    return;
  pthread_mutex_lock(&c->mu);
  c->kicked = 1;
  pthread_cond_broadcast(&c->cv);
  pthread_mutex_unlock(&c->mu);
}

uint64_t immu_checker_passes(immu_checker *c) {
  pthread_mutex_lock(&c->mu);
  uint64_t n = c->passes;
  pthread_mutex_unlock(&c->mu);
  return n;
}

void immu_checker_stop(immu_checker *c) {
  if (c == NULL)
    return;
  pthread_mutex_lock(&c->mu);
  c->stop = 1;
  pthread_cond_broadcast(&c->cv);
  int join = !c->joined;
  c->joined = 1;
  pthread_mutex_unlock(&c->mu);
  if (join)
    pthread_join(c->thread, NULL);
}

void immu_checker_free(immu_checker *c) {
  if (c == NULL)
    return;
  immu_checker_stop(c);
  pthread_cond_destroy(&c->cv);
  pthread_mutex_destroy(&c->mu);
  immu__free(c);
}
