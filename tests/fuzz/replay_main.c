/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Corpus replay driver for the libFuzzer targets in tests/fuzz.
 *
 * Linked with one fuzz_<name>.c, it calls LLVMFuzzerTestOneInput once per
 * input, so every ctest run exercises the checked-in corpus without
 * libFuzzer (and under ASan/UBSan in the sanitizer build).
 *
 * Usage: fuzz_<name>_replay PATH...
 *   A directory argument replays every regular file in it (names starting
 *   with '.' are skipped, order is sorted by name); a file argument replays
 *   that file. Exits 0 after printing how many inputs ran; exits 1 if an
 *   argument is missing or unreadable, or a directory holds no input.
 *   A crash or sanitizer report in the target aborts the process.
 */
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
/* Optional in a target, as with libFuzzer. */
int LLVMFuzzerInitialize(int *argc, char ***argv) __attribute__((weak));

/* Reads |path| whole into a fresh buffer. Returns 0 or -1 (message printed). */
static int read_file(const char *path, uint8_t **out, size_t *out_len) {
  FILE *f = fopen(path, "rb");
  uint8_t *buf = NULL;
  size_t len = 0, cap = 0;

  if (f == NULL) {
    fprintf(stderr, "replay: %s: %s\n", path, strerror(errno));
    return -1;
  }
  for (;;) {
    if (len == cap) {
      size_t ncap = cap ? cap * 2 : 4096;
      uint8_t *nbuf = realloc(buf, ncap);
      if (nbuf == NULL) {
        fprintf(stderr, "replay: %s: out of memory\n", path);
        free(buf);
        fclose(f);
        return -1;
      }
      buf = nbuf;
      cap = ncap;
    }
    size_t n = fread(buf + len, 1, cap - len, f);
    len += n;
    if (n == 0) {
      break;
    }
  }
  if (ferror(f)) {
    fprintf(stderr, "replay: %s: read error\n", path);
    free(buf);
    fclose(f);
    return -1;
  }
  fclose(f);
  *out = buf;
  *out_len = len;
  return 0;
}

static int run_one(const char *path) {
  uint8_t *data = NULL;
  size_t len = 0;

  if (read_file(path, &data, &len) != 0) {
    return -1;
  }
  /* Hand the target a buffer of exactly |len| bytes so ASan sees overreads:
   * copy into a right-sized allocation (malloc(0) may return NULL). */
  uint8_t *exact = malloc(len ? len : 1);
  if (exact == NULL) {
    free(data);
    return -1;
  }
  if (len) {
    memcpy(exact, data, len);
  }
  free(data);
  (void)LLVMFuzzerTestOneInput(exact, len);
  free(exact);
  return 0;
}

static int cmp_names(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Replays every regular file in |dir|. Returns the count, or -1. */
static long run_dir(const char *dir) {
  DIR *d = opendir(dir);
  char **names = NULL;
  size_t n = 0, cap = 0;
  long ran = 0;
  struct dirent *de;

  if (d == NULL) {
    fprintf(stderr, "replay: %s: %s\n", dir, strerror(errno));
    return -1;
  }
  while ((de = readdir(d)) != NULL) {
    if (de->d_name[0] == '.') {
      continue;
    }
    if (n == cap) {
      size_t ncap = cap ? cap * 2 : 64;
      char **nn = realloc(names, ncap * sizeof *nn);
      if (nn == NULL) {
        ran = -1;
        goto out;
      }
      names = nn;
      cap = ncap;
    }
    names[n] = strdup(de->d_name);
    if (names[n] == NULL) {
      ran = -1;
      goto out;
    }
    n++;
  }
  if (n > 0) {
    qsort(names, n, sizeof *names, cmp_names);
  }
  for (size_t i = 0; i < n; i++) {
    size_t plen = strlen(dir) + strlen(names[i]) + 2;
    char *path = malloc(plen);
    struct stat st;
    if (path == NULL) {
      ran = -1;
      goto out;
    }
    snprintf(path, plen, "%s/%s", dir, names[i]);
    if (stat(path, &st) != 0 || !S_ISREG(st.st_mode)) {
      free(path);
      continue;
    }
    int rc = run_one(path);
    free(path);
    if (rc != 0) {
      ran = -1;
      goto out;
    }
    ran++;
  }
  if (ran == 0) {
    fprintf(stderr, "replay: %s: no inputs\n", dir);
    ran = -1;
  }
out:
  for (size_t i = 0; i < n; i++) {
    free(names[i]);
  }
  free(names);
  closedir(d);
  return ran;
}

int main(int argc, char **argv) {
  long total = 0;
  struct stat st;

  if (argc < 2) {
    fprintf(stderr, "usage: %s DIR|FILE...\n", argv[0]);
    return 2;
  }
  if (LLVMFuzzerInitialize != NULL) {
    LLVMFuzzerInitialize(&argc, &argv);
  }
  for (int i = 1; i < argc; i++) {
    if (stat(argv[i], &st) != 0) {
      fprintf(stderr, "replay: %s: %s\n", argv[i], strerror(errno));
      return 1;
    }
    if (S_ISDIR(st.st_mode)) {
      long n = run_dir(argv[i]);
      if (n < 0) {
        return 1;
      }
      total += n;
    } else {
      if (run_one(argv[i]) != 0) {
        return 1;
      }
      total++;
    }
  }
  printf("replay: %ld inputs ran\n", total);
  return 0;
}
