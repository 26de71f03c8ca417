/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The transaction record: how one committed tx is framed in the log
 * (docs/format.md). Our own format; only the hashes must match immudb.
 *
 *   frame   = u32 magic "IMTX" | u32 plen | u32 crc_head | u32 crc_body
 *             | payload[plen]
 *   payload = head | body
 *   head    = u8 recver(=1) | u64 id | i64 ts | u64 blTxID | 32 blRoot
 *             | 32 prevAlh | 32 alh | u16 hdrVersion | u16 mdLen | md
 *             | u32 nentries | 32 eh
 *   body    = nentries x ( u16 kvmdLen | kvmd | u16 klen | key | u32 vlen
 *             | 32 hVal | value[vlen] )
 *
 * crc_head = crc32c(plen as 4 BE bytes || head); crc_body = crc32c(body).
 * Two CRCs let the committer checksum the (large) body outside the serial
 * section and only the small head inside it. All integers big-endian.
 */
#ifndef IMMU_STORE_TXREC_H
#define IMMU_STORE_TXREC_H

#include <stddef.h>
#include <stdint.h>

#include "immudb/crypto.h"

#define IMMU_TXREC_MAGIC 0x494d5458u /* "IMTX" */
#define IMMU_TXREC_FRAME 16u         /* bytes before the payload */
#define IMMU_TXREC_VERSION 1u
/* Offset of the head inside the frame, and its fixed-size part (without
 * md): recver..alh = 1+8+8+8+32+32+32 = 121, + u16 + u16 + u32 + 32 = 161. */
#define IMMU_TXREC_HEAD_FIXED 161u

/* One entry as the committer supplies it (all borrowed). |hval| must be
 * H(value). */
typedef struct immu_txrec_in {
  const uint8_t *key;
  size_t klen;
  const uint8_t *md;
  size_t mdlen;
  const uint8_t *value;
  size_t vlen;
  immu_digest hval;
} immu_txrec_in;

/* One decoded entry; pointers borrow the decoded buffer. */
typedef struct immu_txrec_entry {
  const uint8_t *key;
  uint32_t klen;
  const uint8_t *md;
  uint32_t mdlen;
  const uint8_t *value;
  uint32_t vlen;
  uint32_t value_off; /* offset of the value bytes from the frame start */
  immu_digest hval;
} immu_txrec_entry;

typedef struct immu_txrec {
  immu_tx_header hdr;
  immu_digest alh;
  immu_txrec_entry *entries; /* hdr.nentries of them; owned (immu__free) */
} immu_txrec;

/* Total frame size for a tx with these entries and |md_len| bytes of tx
 * metadata; 0 if it would exceed UINT32_MAX. */
size_t immu__txrec_size(const immu_txrec_in *e, size_t n, size_t md_len);

/* Writes the frame into |buf| (exactly immu__txrec_size bytes): header
 * version, md, nentries, eh from |h|, the body from |e|, crc_body. The
 * id-dependent fields (id, ts, blTxID, blRoot, prevAlh, alh) and crc_head
 * are left for immu__txrec_seal. Returns 0 or IMMU_EINVAL (limits). */
int immu__txrec_encode(const immu_tx_header *h, const immu_txrec_in *e,
                       size_t n, uint8_t *buf, size_t len);

/* Fills the id-dependent fields from |h| and |alh| and computes crc_head.
 * Cheap: touches only the head. */
void immu__txrec_seal(uint8_t *buf, const immu_tx_header *h,
                      const immu_digest *alh);

/* Checks a frame header: magic and plausible length (<= |max_plen|).
 * *frame_len = IMMU_TXREC_FRAME + plen. Returns 0, or IMMU_ECORRUPT. Needs
 * only the first IMMU_TXREC_FRAME bytes. */
int immu__txrec_frame_len(const uint8_t *buf, size_t avail, uint32_t max_plen,
                          size_t *frame_len);

/* Decodes and validates a whole frame of |len| bytes: both CRCs, every
 * length against the buffer and the limits (key 1..65535, kvmd <=
 * IMMU_KV_MD_MAX, tx md <= IMMU_TX_MD_MAX, version 0/1, nentries >= 1 and
 * <= 65535 for version 0). Does NOT recompute hashes (see
 * immu__txrec_check_hashes). On success fills |out| (caller frees with
 * immu__txrec_free); pointers borrow |buf|. IMMU_ECORRUPT on any defect,
 * IMMU_ENOMEM. */
int immu__txrec_decode(const uint8_t *buf, size_t len, immu_txrec *out);

/* Recomputes hVal of every value, the entry digests, Eh and Alh, and
 * compares them with the record. Returns 0 or IMMU_ECORRUPT. */
int immu__txrec_check_hashes(const immu_txrec *r);

void immu__txrec_free(immu_txrec *r);

#endif
