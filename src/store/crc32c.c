/* SPDX-License-Identifier: Apache-2.0 */
/*
 * CRC-32C (Castagnoli, reflected polynomial 0x82f63b78), as used by the tx
 * record frame (docs/format.md, CRC-1).
 *
 * Two implementations compute the same function: the SSE4.2 crc32
 * instruction, eight bytes at a time, on x86-64 CPUs that have it, and a
 * portable slicing-by-8 table otherwise. The choice and the table are set up
 * once, on first use, under pthread_once.
 */
#include "store/crc32c.h"

#include <pthread.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define IMMU_CRC32C_X86 1
#include <nmmintrin.h>
#else
#define IMMU_CRC32C_X86 0
#endif

/* SPEC CRC-1: CRC-32C, reflected, init and final xor 0xffffffff. */
#define POLY 0x82f63b78u

static uint32_t table[8][256];
static int have_hw;
static pthread_once_t init_once = PTHREAD_ONCE_INIT;

static void crc_init(void) {
  for (uint32_t i = 0; i < 256; i++) {
    uint32_t c = i;
    for (int k = 0; k < 8; k++)
      c = (c & 1u) ? (c >> 1) ^ POLY : c >> 1;
    table[0][i] = c;
  }
  for (uint32_t i = 0; i < 256; i++) {
    uint32_t c = table[0][i];
    for (int t = 1; t < 8; t++) {
      c = (c >> 8) ^ table[0][c & 0xffu];
      table[t][i] = c;
    }
  }
#if IMMU_CRC32C_X86
  __builtin_cpu_init();
  have_hw = __builtin_cpu_supports("sse4.2") ? 1 : 0;
#endif
}

/* The raw (non-inverted) register update over |n| bytes with the table. */
static uint32_t sw_update(uint32_t c, const uint8_t *p, size_t n) {
  while (n >= 8) {
    c ^= (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
         (uint32_t)p[3] << 24;
    c = table[7][c & 0xffu] ^ table[6][(c >> 8) & 0xffu] ^
        table[5][(c >> 16) & 0xffu] ^ table[4][c >> 24] ^ table[3][p[4]] ^
        table[2][p[5]] ^ table[1][p[6]] ^ table[0][p[7]];
    p += 8;
    n -= 8;
  }
  while (n--)
    c = (c >> 8) ^ table[0][(c ^ *p++) & 0xffu];
  return c;
}

#if IMMU_CRC32C_X86
__attribute__((target("sse4.2"))) static uint32_t
hw_update(uint32_t c, const uint8_t *p, size_t n) {
  uint64_t c64 = c;
  /* Unaligned head byte by byte, so the 8-byte loads below are aligned. */
  while (n > 0 && ((uintptr_t)p & 7u) != 0) {
    c64 = _mm_crc32_u8((uint32_t)c64, *p++);
    n--;
  }
  while (n >= 8) {
    uint64_t w;
    memcpy(&w, p, 8);
    c64 = _mm_crc32_u64(c64, w);
    p += 8;
    n -= 8;
  }
  uint32_t c32 = (uint32_t)c64;
  while (n--)
    c32 = _mm_crc32_u8(c32, *p++);
  return c32;
}
#endif

uint32_t immu__crc32c_sw(uint32_t crc, const void *buf, size_t n) {
  pthread_once(&init_once, crc_init);
  return ~sw_update(~crc, buf, n);
}

uint32_t immu__crc32c_hw(uint32_t crc, const void *buf, size_t n) {
  pthread_once(&init_once, crc_init);
#if IMMU_CRC32C_X86
  if (have_hw)
    return ~hw_update(~crc, buf, n);
#endif
  return ~sw_update(~crc, buf, n);
}

int immu__crc32c_has_hw(void) {
  pthread_once(&init_once, crc_init);
  return have_hw;
}

uint32_t immu__crc32c(uint32_t crc, const void *buf, size_t n) {
  return immu__crc32c_hw(crc, buf, n);
}
