/* SPDX-License-Identifier: Apache-2.0 */
#include "core/mem.h"

#include <stdlib.h>
#include <string.h>

static long fail_countdown = -1;
static int fail_sticky;

static int should_fail(void) {
  if (fail_countdown < 0)
    return 0;
  if (fail_countdown == 0) {
    if (!fail_sticky)
      fail_countdown = -1;
    return 1;
  }
  fail_countdown--;
  return 0;
}

void immu__mem_fail_after(long n, int sticky) {
  fail_countdown = n;
  fail_sticky = sticky;
}

void *immu__malloc(size_t n) { return should_fail() ? NULL : malloc(n ? n : 1); }

void *immu__calloc(size_t nmemb, size_t size) {
  return should_fail() ? NULL : calloc(nmemb ? nmemb : 1, size ? size : 1);
}

void *immu__realloc(void *p, size_t n) {
  return should_fail() ? NULL : realloc(p, n ? n : 1);
}

void immu__free(void *p) { free(p); }

char *immu__strndup(const char *s, size_t n) {
  char *d = immu__malloc(n + 1);
  if (d == NULL)
    return NULL;
  if (n > 0)
    memcpy(d, s, n);
  d[n] = '\0';
  return d;
}
