/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fuzz target for the tx record decoder (src/store/txrec.c).
 *
 * Each input is decoded twice: as given, and with plen and both CRCs
 * rewritten to match the bytes (otherwise almost every mutation would stop
 * at the CRC check and the structure behind it would go unexplored).
 * Properties, checked with abort():
 *   - nothing crashes, leaks or reads out of bounds (the sanitizers);
 *   - a failed decode leaves no entries behind;
 *   - whatever decodes, frame_len agrees with, and re-encoding the decoded
 *     tx (encode + seal) reproduces byte for byte.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/endian.h"
#include "store/crc32c.h"
#include "store/txrec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_one(const uint8_t *data, size_t size) {
  immu_txrec r;
  size_t fl = 0;

  if (immu__txrec_frame_len(data, size, UINT32_MAX, &fl) == 0 &&
      fl < IMMU_TXREC_FRAME + IMMU_TXREC_HEAD_FIXED)
    abort();
  int rc = immu__txrec_decode(data, size, &r);
  if (rc != 0) {
    if (r.entries != NULL)
      abort();
    return;
  }
  if (immu__txrec_frame_len(data, size, UINT32_MAX, &fl) != 0 || fl != size)
    abort();
  rc = immu__txrec_check_hashes(&r);
  if (rc != 0 && rc != IMMU_ECORRUPT)
    abort();

  size_t n = r.hdr.nentries;
  immu_txrec_in *in = calloc(n, sizeof *in);
  if (in == NULL)
    abort();
  for (size_t i = 0; i < n; i++) {
    const immu_txrec_entry *x = &r.entries[i];
    if (x->value != data + x->value_off)
      abort();
    in[i] = (immu_txrec_in){.key = x->key,
                            .klen = x->klen,
                            .md = x->md,
                            .mdlen = x->mdlen,
                            .value = x->value,
                            .vlen = x->vlen,
                            .hval = x->hval};
  }
  size_t len = immu__txrec_size(in, n, r.hdr.md_len);
  if (len != size)
    abort();
  uint8_t *buf = malloc(len);
  if (buf == NULL)
    abort();
  if (immu__txrec_encode(&r.hdr, in, n, buf, len) != 0)
    abort();
  immu__txrec_seal(buf, &r.hdr, &r.alh);
  if (memcmp(buf, data, size) != 0)
    abort();
  free(buf);
  free(in);
  immu__txrec_free(&r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  check_one(data, size);

  /* The same bytes with plen and the CRCs made consistent. */
  if (size < IMMU_TXREC_FRAME + IMMU_TXREC_HEAD_FIXED ||
      (uint64_t)size > UINT32_MAX)
    return 0;
  uint8_t *f = malloc(size);
  if (f == NULL)
    abort();
  memcpy(f, data, size);
  immu__put_u32(f + 4, (uint32_t)(size - IMMU_TXREC_FRAME));
  size_t head = IMMU_TXREC_HEAD_FIXED + immu__get_u16(f + 16 + 123);
  if (IMMU_TXREC_FRAME + head <= size) {
    uint32_t c = immu__crc32c(0, f + 4, 4);
    immu__put_u32(f + 8, immu__crc32c(c, f + 16, head));
    immu__put_u32(f + 12, immu__crc32c(0, f + 16 + head, size - 16 - head));
    check_one(f, size);
  }
  free(f);
  return 0;
}
