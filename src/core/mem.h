/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Allocation wrappers for the library. Every allocation in src/ goes through
 * these so that tests can inject failures (immu__mem_fail_after) and so the
 * allocator can be replaced. They never abort: callers check for NULL and
 * return IMMU_ENOMEM.
 */
#ifndef IMMU_CORE_MEM_H
#define IMMU_CORE_MEM_H

#include <stddef.h>

void *immu__malloc(size_t n);
void *immu__calloc(size_t nmemb, size_t size);
void *immu__realloc(void *p, size_t n);
void immu__free(void *p);
char *immu__strndup(const char *s, size_t n);

/* Test hook: the |n|-th allocation from now (0 = the next) fails, and every
 * later one too if |sticky|. A negative |n| disables failures. Not
 * thread-safe; for single-threaded unit tests only. */
void immu__mem_fail_after(long n, int sticky);

#endif
