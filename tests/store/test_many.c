/* SPDX-License-Identifier: Apache-2.0 */
/*
 * 1,000 small databases in one process share one store env (RocksDB block
 * cache, background threads, index workers, the timer): the process keeps a
 * bounded number of threads, about ten descriptors per database and a small
 * amount of memory per database.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "core/mem.h"
#include "store/store.h"

#define NDB 1000

static void quiet_log(void *arg, int level, const char *msg) {
  (void)arg, (void)level, (void)msg;
}

static long count_dir(const char *d) {
  DIR *x = opendir(d);
  struct dirent *e;
  long n = 0;
  assert_non_null(x);
  while ((e = readdir(x)) != NULL)
    if (e->d_name[0] != '.')
      n++;
  closedir(x);
  return n;
}

static long rss_kb(void) {
  FILE *f = fopen("/proc/self/status", "r");
  char line[256];
  long kb = -1;
  assert_non_null(f);
  while (fgets(line, sizeof line, f))
    if (strncmp(line, "VmRSS:", 6) == 0)
      kb = strtol(line + 6, NULL, 10);
  fclose(f);
  return kb;
}

static void test_thousand_databases(void **state) {
  (void)state;
  struct rlimit r;
  assert_int_equal(getrlimit(RLIMIT_NOFILE, &r), 0);
  if (r.rlim_max < NDB * 12 + 256) {
    print_message("skipped: RLIMIT_NOFILE hard limit %llu is too low\n",
                  (unsigned long long)r.rlim_max);
    skip();
  }
  r.rlim_cur = r.rlim_max;
  assert_int_equal(setrlimit(RLIMIT_NOFILE, &r), 0);

  const char *base = getenv("IMMU_TEST_TMPDIR");
  char root[512];
  snprintf(root, sizeof root, "%s/many-XXXXXX", base && *base ? base : "/tmp");
  assert_non_null(mkdtemp(root));

  long fds0 = count_dir("/proc/self/fd");
  long rss0 = rss_kb();
  immu_store_env *env;
  assert_int_equal(immu_store_env_new(32 << 20, 2, &env), 0);
  immu_store **s = calloc(NDB, sizeof *s);
  assert_non_null(s);
  for (int i = 0; i < NDB; i++) {
    char d[600];
    char *err = NULL;
    immu_store_options o;
    immu_store_options_init(&o);
    o.env = env;
    o.log = quiet_log;
    snprintf(d, sizeof d, "%s/db%04d", root, i);
    int rc = immu_store_open(d, &o, &s[i], &err);
    if (rc != 0)
      fail_msg("open %d: %s", i, err ? err : immu_strerror(rc));
    char k[32];
    snprintf(k, sizeof k, "key-%d", i);
    immu_store_entry e = {(const uint8_t *)k, strlen(k), NULL, 0,
                          (const uint8_t *)"v", 1};
    assert_int_equal(immu_store_commit(s[i], &e, 1, NULL, NULL, NULL, NULL),
                     0);
  }
  for (int i = 0; i < NDB; i++)
    assert_int_equal(immu_store_wait_indexed(s[i], 1, 60000), 0);

  long threads = count_dir("/proc/self/task");
  long fds = count_dir("/proc/self/fd") - fds0;
  long rss = rss_kb() - rss0;
  print_message("%d databases: %ld threads, %ld descriptors (%.1f per db), "
                "%ld MiB RSS (%.2f MiB per db)\n",
                NDB, threads, fds, (double)fds / NDB, rss / 1024,
                (double)rss / 1024 / NDB);
  /* One env: a fixed pool of threads, whatever the number of databases. */
  assert_true(threads <= 16);
  assert_true(fds <= 12L * NDB);
#if !defined(__SANITIZE_ADDRESS__)
  assert_true(rss <= 3L * 1024 * NDB);
#endif
  /* Every database still answers on its own. */
  for (int i = 0; i < NDB; i += 97) {
    immu_index_entry e;
    char k[32];
    memset(&e, 0, sizeof e);
    snprintf(k, sizeof k, "key-%d", i);
    assert_int_equal(immu__index_get_latest(immu_store_index(s[i]),
                                            (const uint8_t *)k, strlen(k), &e),
                     0);
    assert_int_equal(e.tx, 1);
    immu__index_entry_clear(&e);
  }
  for (int i = 0; i < NDB; i++)
    assert_int_equal(immu_store_close(s[i]), 0);
  immu_store_env_free(env);
  free(s);
  char cmd[700];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
  assert_int_equal(system(cmd), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_thousand_databases),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
