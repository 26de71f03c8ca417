/* SPDX-License-Identifier: Apache-2.0 */
/* CRC-32C (Castagnoli), hardware-accelerated with SSE4.2 when the CPU has
 * it (checked once at run time), a table otherwise. */
#ifndef IMMU_STORE_CRC32C_H
#define IMMU_STORE_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/* Extends |crc| (0 to start) over |n| bytes. crc32c("123456789") =
 * 0xe3069283. Thread-safe. */
uint32_t immu__crc32c(uint32_t crc, const void *buf, size_t n);

/* Test hooks: the same function computed by one implementation only.
 * immu__crc32c_hw returns the table result when the CPU (or the build)
 * has no SSE4.2; immu__crc32c_has_hw says which one immu__crc32c uses
 * (1 = SSE4.2). Thread-safe. */
uint32_t immu__crc32c_sw(uint32_t crc, const void *buf, size_t n);
uint32_t immu__crc32c_hw(uint32_t crc, const void *buf, size_t n);
int immu__crc32c_has_hw(void);

#endif
