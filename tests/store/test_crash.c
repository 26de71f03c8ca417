/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Crash test: a child process commits with 64 concurrent committers and
 * reports every acknowledged tx on a pipe; the parent SIGKILLs it at a
 * random moment, reopens the database and checks that every acknowledged
 * tx is there with its value, that the Alh chain and the ahtree verify, and
 * that the index agrees with the log. 50 rounds on one database, bounded in
 * time (each child runs at most ~120 ms).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/mem.h"
#include "store/store.h"

#define ROUNDS 50
#define WRITERS 64

typedef struct ack {
  uint64_t id;
  char key[48];
} ack;

static int g_pipe;
static immu_store *g_child_store;
static int g_round;

static void quiet_log(void *arg, int level, const char *msg) {
  (void)arg, (void)level, (void)msg;
}

static void value_for(const char *key, char *out, size_t cap) {
  snprintf(out, cap, "value-of-%s-%zu", key, strlen(key) * 7919u);
}

static void *child_writer(void *arg) {
  int t = (int)(intptr_t)arg;
  for (int i = 0;; i++) {
    ack a;
    char v[96];
    immu_tx_header h;
    memset(&a, 0, sizeof a);
    snprintf(a.key, sizeof a.key, "r%d-t%d-%d", g_round, t, i);
    value_for(a.key, v, sizeof v);
    immu_store_entry e = {(const uint8_t *)a.key, strlen(a.key), NULL, 0,
                          (const uint8_t *)v, strlen(v)};
    if (immu_store_commit(g_child_store, &e, 1, NULL, NULL, &h, NULL) != 0)
      _exit(3);
    a.id = h.id;
    /* < PIPE_BUF: atomic */
    if (write(g_pipe, &a, sizeof a) != (ssize_t)sizeof a)
      _exit(4);
  }
  return NULL;
}

static void child(const char *dir, int async) {
  immu_store_options o;
  immu_store_options_init(&o);
  o.log = quiet_log;
  o.durability = async ? IMMU_DURABILITY_ASYNC : IMMU_DURABILITY_SYNCED;
  char *err = NULL;
  if (immu_store_open(dir, &o, &g_child_store, &err) != 0) {
    fprintf(stderr, "child open: %s\n", err ? err : "?");
    _exit(2);
  }
  pthread_t th;
  for (int t = 0; t < WRITERS; t++)
    if (pthread_create(&th, NULL, child_writer, (void *)(intptr_t)t) != 0)
      _exit(5);
  for (;;)
    pause();
}

static void test_crash_rounds(void **state) {
  (void)state;
  const char *base = getenv("IMMU_TEST_TMPDIR");
  char tmpl[512];
  snprintf(tmpl, sizeof tmpl, "%s/crash-XXXXXX", base && *base ? base : "/tmp");
  char *dir = mkdtemp(tmpl);
  assert_non_null(dir);
  srand((unsigned)time(NULL));

  ack *acks = NULL;
  size_t nacks = 0, cap = 0;
  uint64_t total_acked = 0;

  for (g_round = 0; g_round < ROUNDS; g_round++) {
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
      close(fds[0]);
      g_pipe = fds[1];
      child(dir, g_round % 5 == 4);
    }
    close(fds[1]);
    /* Let it run 5..120 ms, reading acks as they come. */
    struct timespec t0, now;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    long run_ms = 5 + rand() % 116;
    size_t round_start = nacks;
    int started = 0;
    for (;;) {
      clock_gettime(CLOCK_MONOTONIC, &now);
      long el = (now.tv_sec - t0.tv_sec) * 1000 +
                (now.tv_nsec - t0.tv_nsec) / 1000000;
      /* Up to 10 s to start; then run_ms from the first ack. */
      if ((started && el >= run_ms) || el >= 10000)
        break;
      struct timeval tv = {0, 2000};
      fd_set rs;
      FD_ZERO(&rs);
      FD_SET(fds[0], &rs);
      if (select(fds[0] + 1, &rs, NULL, NULL, &tv) > 0) {
        if (nacks == cap) {
          cap = cap ? cap * 2 : 4096;
          acks = realloc(acks, cap * sizeof *acks);
        }
        ssize_t r = read(fds[0], &acks[nacks], sizeof *acks);
        if (r == (ssize_t)sizeof *acks) {
          nacks++;
          if (!started) {
            started = 1;
            t0 = now; /* start the kill clock at the first ack */
          }
        } else if (r == 0) {
          break; /* child died on its own: fail below */
        }
      }
    }
    kill(pid, SIGKILL);
    /* Drain acks that were written before the kill. */
    for (;;) {
      if (nacks == cap) {
        cap = cap ? cap * 2 : 4096;
        acks = realloc(acks, cap * sizeof *acks);
      }
      ssize_t r = read(fds[0], &acks[nacks], sizeof *acks);
      if (r != (ssize_t)sizeof *acks)
        break;
      nacks++;
    }
    close(fds[0]);
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);

    /* Reopen and check everything acknowledged so far. */
    immu_store_options o;
    immu_store_options_init(&o);
    o.log = quiet_log;
    immu_store *s = NULL;
    char *err = NULL;
    int rc = immu_store_open(dir, &o, &s, &err);
    if (rc != 0)
      fail_msg("round %d: reopen failed: %s", g_round, err ? err : "?");
    uint64_t last;
    immu_digest alh;
    immu_store_state(s, &last, &alh);
    for (size_t i = 0; i < nacks; i++) {
      immu_txrec r;
      uint8_t *buf;
      char v[96];
      if (acks[i].id > last)
        fail_msg("round %d: acknowledged tx %llu lost (last %llu)", g_round,
                 (unsigned long long)acks[i].id, (unsigned long long)last);
      /* Full check for this round's acks, a sample of older ones. */
      if (i < round_start && i % 16 != 0)
        continue;
      assert_int_equal(immu_store_read_tx(s, acks[i].id, &r, &buf), 0);
      value_for(acks[i].key, v, sizeof v);
      assert_int_equal(r.entries[0].klen, strlen(acks[i].key));
      assert_memory_equal(r.entries[0].key, acks[i].key, strlen(acks[i].key));
      assert_int_equal(r.entries[0].vlen, strlen(v));
      assert_memory_equal(r.entries[0].value, v, strlen(v));
      immu__txrec_free(&r);
      immu__free(buf);
    }
    if (g_round % 5 == 4 || g_round == ROUNDS - 1) {
      err = NULL;
      rc = immu_store_verify(s, NULL, NULL, &err);
      if (rc != 0)
        fail_msg("round %d: verify: %s", g_round, err ? err : "?");
    }
    /* The index must agree with the log for this round's keys. */
    assert_int_equal(immu_store_wait_indexed(s, last, 60000), 0);
    for (size_t i = round_start; i < nacks; i++) {
      immu_index_entry e;
      memset(&e, 0, sizeof e);
      assert_int_equal(immu__index_get_latest(immu_store_index(s),
                                              (const uint8_t *)acks[i].key,
                                              strlen(acks[i].key), &e),
                       0);
      assert_int_equal(e.tx, acks[i].id);
      immu__index_entry_clear(&e);
    }
    total_acked += nacks - round_start;
    assert_int_equal(immu_store_close(s), 0);
  }
  print_message("crash test: %d rounds, %llu acknowledged txs, all present\n",
                ROUNDS, (unsigned long long)total_acked);
  assert_true(total_acked > 0);
  free(acks);
  char cmd[700];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  assert_int_equal(system(cmd), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_crash_rounds),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
