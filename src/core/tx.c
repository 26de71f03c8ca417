/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Transaction header hashing: innerHash and Alh (spec 3).
 *
 * Version 0 is byte-identical to the legacy (<= v1.1.0) layout while
 * NEntries < 65536, because u16(0) || u16(n) == u32(n) (spec 3.3).
 */
#include <string.h>

#include "core/endian.h"
#include "immudb/crypto.h"

int immu_tx_inner_hash(const immu_tx_header *h, immu_digest *out) {
  uint8_t buf[8 + 2 + 2 + IMMU_TX_MD_MAX + 4 + 32 + 8 + 32];
  uint8_t *p = buf;

  immu__put_u64(p, (uint64_t)h->ts);
  p += 8;
  if (h->version == 0) {
    /* SPEC 3.2: u64 Ts || u16 0 || u16 NEntries || Eh || u64 BlTxID || BlRoot */
    if (h->nentries > IMMU_V0_MAX_ENTRIES || h->md_len != 0)
      return IMMU_EINVAL;
    immu__put_u16(p, 0);
    immu__put_u16(p + 2, (uint16_t)h->nentries);
    p += 4;
  } else if (h->version == 1) {
    /* SPEC 3.2: ... u16 1 || u16 m || txmd || u32 NEntries || ... */
    if (h->md_len > IMMU_TX_MD_MAX)
      return IMMU_EINVAL;
    immu__put_u16(p, 1);
    immu__put_u16(p + 2, (uint16_t)h->md_len);
    p += 4;
    memcpy(p, h->md, h->md_len);
    p += h->md_len;
    immu__put_u32(p, h->nentries);
    p += 4;
  } else {
    return IMMU_EINVAL;
  }
  memcpy(p, h->eh.b, 32);
  p += 32;
  immu__put_u64(p, h->bl_tx_id);
  p += 8;
  memcpy(p, h->bl_root.b, 32);
  p += 32;
  immu_sha256(buf, (size_t)(p - buf), out);
  return 0;
}

void immu_alh_advance(const immu_digest *alh, uint64_t tx_id,
                      const immu_digest *inner, immu_digest *out) {
  uint8_t buf[72];
  immu__put_u64(buf, tx_id);
  memcpy(buf + 8, alh->b, 32);
  memcpy(buf + 40, inner->b, 32);
  immu_sha256(buf, sizeof buf, out);
}

int immu_tx_alh(const immu_tx_header *h, immu_digest *out) {
  immu_digest inner;
  int rc = immu_tx_inner_hash(h, &inner);
  if (rc != 0)
    return rc;
  immu_alh_advance(&h->prev_alh, h->id, &inner, out);
  return 0;
}
