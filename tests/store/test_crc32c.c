/* SPDX-License-Identifier: Apache-2.0 */
/* Tests of CRC-32C (src/store/crc32c.c): known vectors, incremental use,
 * and agreement of the SSE4.2 and table implementations. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <pthread.h>
#include <string.h>

#include "store/crc32c.h"

static void test_check_value(void **state) {
  (void)state;
  assert_int_equal(immu__crc32c(0, "123456789", 9), 0xe3069283u);
  assert_int_equal(immu__crc32c_sw(0, "123456789", 9), 0xe3069283u);
  assert_int_equal(immu__crc32c_hw(0, "123456789", 9), 0xe3069283u);
  assert_int_equal(immu__crc32c(0, NULL, 0), 0u);
  assert_int_equal(immu__crc32c(0x12345678u, NULL, 0), 0x12345678u);
}

/* RFC 3720 (iSCSI), appendix B.4. */
static void test_rfc3720_vectors(void **state) {
  (void)state;
  uint8_t b[48];

  memset(b, 0, 32);
  assert_int_equal(immu__crc32c(0, b, 32), 0x8a9136aau);
  memset(b, 0xff, 32);
  assert_int_equal(immu__crc32c(0, b, 32), 0x62a8ab43u);
  for (int i = 0; i < 32; i++)
    b[i] = (uint8_t)i;
  assert_int_equal(immu__crc32c(0, b, 32), 0x46dd794eu);
  for (int i = 0; i < 32; i++)
    b[i] = (uint8_t)(31 - i);
  assert_int_equal(immu__crc32c(0, b, 32), 0x113fdb5cu);

  static const uint8_t scsi_read[48] = {
      0x01, 0xc0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
      0x00, 0x00, 0x00, 0x00, 0x14, 0x00, 0x00, 0x00, 0x00, 0x00, 0x04, 0x00,
      0x00, 0x00, 0x00, 0x14, 0x00, 0x00, 0x00, 0x18, 0x28, 0x00, 0x00, 0x00,
      0x00, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00};
  assert_int_equal(immu__crc32c(0, scsi_read, 48), 0xd9963a56u);
  assert_int_equal(immu__crc32c_sw(0, scsi_read, 48), 0xd9963a56u);
}

static void fill(uint8_t *b, size_t n, uint32_t seed) {
  for (size_t i = 0; i < n; i++) {
    seed = seed * 1103515245u + 12345u;
    b[i] = (uint8_t)(seed >> 16);
  }
}

static void test_incremental(void **state) {
  (void)state;
  uint8_t b[300];
  fill(b, sizeof b, 7);
  uint32_t whole = immu__crc32c(0, b, sizeof b);
  for (size_t k = 0; k <= sizeof b; k++) {
    uint32_t c = immu__crc32c(0, b, k);
    assert_int_equal(immu__crc32c(c, b + k, sizeof b - k), whole);
    c = immu__crc32c_sw(0, b, k);
    assert_int_equal(immu__crc32c_sw(c, b + k, sizeof b - k), whole);
  }
}

/* Every length and alignment: both implementations agree. */
static void test_hw_matches_sw(void **state) {
  (void)state;
  uint8_t b[1100];
  fill(b, sizeof b, 99);
  for (size_t align = 0; align < 16; align++) {
    for (size_t len = 0; len + align <= 300; len++) {
      uint32_t s = immu__crc32c_sw(0, b + align, len);
      assert_int_equal(immu__crc32c_hw(0, b + align, len), s);
      assert_int_equal(immu__crc32c(0, b + align, len), s);
    }
  }
  assert_int_equal(immu__crc32c_hw(0, b + 3, 1097),
                   immu__crc32c_sw(0, b + 3, 1097));
  /* Single-bit errors change the CRC. */
  uint32_t base = immu__crc32c(0, b, 256);
  for (size_t i = 0; i < 256 * 8; i++) {
    b[i / 8] ^= (uint8_t)(1u << (i % 8));
    assert_int_not_equal(immu__crc32c(0, b, 256), base);
    b[i / 8] ^= (uint8_t)(1u << (i % 8));
  }
}

static void *thread_main(void *arg) {
  uint8_t b[512];
  fill(b, sizeof b, 5);
  uint32_t *out = arg;
  for (int i = 0; i < 200; i++)
    *out ^= immu__crc32c(0, b, (size_t)i + 100);
  return NULL;
}

static void test_threads(void **state) {
  (void)state;
  pthread_t t[4];
  uint32_t r[4] = {0, 0, 0, 0};
  for (int i = 0; i < 4; i++)
    assert_int_equal(pthread_create(&t[i], NULL, thread_main, &r[i]), 0);
  for (int i = 0; i < 4; i++)
    assert_int_equal(pthread_join(t[i], NULL), 0);
  for (int i = 1; i < 4; i++)
    assert_int_equal(r[i], r[0]);
  print_message("crc32c: hardware %s\n", immu__crc32c_has_hw() ? "on" : "off");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_check_value),
      cmocka_unit_test(test_rfc3720_vectors),
      cmocka_unit_test(test_incremental),
      cmocka_unit_test(test_hw_matches_sw),
      cmocka_unit_test(test_threads),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
