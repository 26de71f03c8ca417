/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The transaction record frame (txrec.h; docs/format.md, LOG-*).
 *
 * The decoder trusts no byte: every length is checked against the bytes
 * that remain before anything is read, both CRCs are verified before any
 * field is interpreted, and the frame must be consumed exactly. Anything
 * the decoder accepts, the encoder reproduces byte for byte (the fuzz
 * target checks this), because both apply the same limits.
 */
#include "store/txrec.h"

#include <string.h>

#include "core/endian.h"
#include "core/mem.h"
#include "store/crc32c.h"

/* Head field offsets, relative to the start of the head (frame + 16). */
#define H_RECVER 0u
#define H_ID 1u
#define H_TS 9u
#define H_BLTXID 17u
#define H_BLROOT 25u
#define H_PREVALH 57u
#define H_ALH 89u
#define H_VERSION 121u
#define H_MDLEN 123u
#define H_MD 125u
/* After the md: u32 nentries, 32 eh. */

/* Frame field offsets. */
#define F_MAGIC 0u
#define F_PLEN 4u
#define F_CRC_HEAD 8u
#define F_CRC_BODY 12u

#define TXREC_RECVER 1u
/* Smallest entry: u16 kvmdLen(0) | u16 klen | 1-byte key | u32 vlen | hVal. */
#define ENTRY_MIN (2u + 2u + 1u + 4u + 32u)
#define ENTRY_FIXED (2u + 2u + 4u + 32u)
#define KEY_MAX 65535u

/* SPEC LOG-5: limits of one entry, shared by encoder and decoder. */
static int entry_ok(unsigned version, size_t klen, size_t mdlen) {
  if (klen < 1 || klen > KEY_MAX)
    return 0;
  if (mdlen > IMMU_KV_MD_MAX || (version == 0 && mdlen != 0))
    return 0;
  return 1;
}

/* SPEC LOG-4: limits of the tx header, shared by encoder and decoder. */
static int header_ok(unsigned version, uint64_t nentries, size_t md_len) {
  if (version > IMMU_TXREC_VERSION)
    return 0;
  if (nentries < 1 || nentries > UINT32_MAX)
    return 0;
  if (md_len > IMMU_TX_MD_MAX)
    return 0;
  if (version == 0 && (nentries > IMMU_V0_MAX_ENTRIES || md_len != 0))
    return 0;
  return 1;
}

size_t immu__txrec_size(const immu_txrec_in *e, size_t n, size_t md_len) {
  /* SPEC LOG-1: the whole frame fits in a u32. */
  const uint64_t lim = UINT32_MAX;
  uint64_t total;

  if (md_len > lim)
    return 0;
  total = IMMU_TXREC_FRAME + IMMU_TXREC_HEAD_FIXED + (uint64_t)md_len;
  for (size_t i = 0; i < n; i++) {
    uint64_t k = e[i].klen, m = e[i].mdlen, v = e[i].vlen;
    if (k > lim || m > lim || v > lim)
      return 0;
    total += ENTRY_FIXED + k + m + v; /* < 2^35 added to < 2^33: no wrap */
    if (total > lim)
      return 0;
  }
  return total > lim ? 0 : (size_t)total;
}

int immu__txrec_encode(const immu_tx_header *h, const immu_txrec_in *e,
                       size_t n, uint8_t *buf, size_t len) {
  if (h == NULL || e == NULL || buf == NULL)
    return IMMU_EINVAL;
  if ((uint64_t)n != h->nentries || !header_ok(h->version, n, h->md_len))
    return IMMU_EINVAL;
  for (size_t i = 0; i < n; i++) {
    if (!entry_ok(h->version, e[i].klen, e[i].mdlen) || (e[i].key == NULL) ||
        (e[i].mdlen && e[i].md == NULL) || (e[i].vlen && e[i].value == NULL))
      return IMMU_EINVAL;
  }
  size_t size = immu__txrec_size(e, n, h->md_len);
  if (size == 0 || size != len)
    return IMMU_EINVAL;

  uint32_t plen = (uint32_t)(size - IMMU_TXREC_FRAME);
  uint8_t *hd = buf + IMMU_TXREC_FRAME;
  size_t head_len = IMMU_TXREC_HEAD_FIXED + h->md_len;

  immu__put_u32(buf + F_MAGIC, IMMU_TXREC_MAGIC);
  immu__put_u32(buf + F_PLEN, plen);
  immu__put_u32(buf + F_CRC_HEAD, 0); /* set by seal */
  /* The id-dependent fields stay zero until seal. */
  memset(hd, 0, H_VERSION);
  hd[H_RECVER] = TXREC_RECVER;
  immu__put_u16(hd + H_VERSION, (uint16_t)h->version);
  immu__put_u16(hd + H_MDLEN, (uint16_t)h->md_len);
  if (h->md_len)
    memcpy(hd + H_MD, h->md, h->md_len);
  immu__put_u32(hd + H_MD + h->md_len, (uint32_t)n);
  memcpy(hd + H_MD + h->md_len + 4, h->eh.b, IMMU_DIGEST_LEN);

  uint8_t *body = hd + head_len;
  uint8_t *p = body;
  for (size_t i = 0; i < n; i++) {
    const immu_txrec_in *x = &e[i];
    immu__put_u16(p, (uint16_t)x->mdlen);
    p += 2;
    if (x->mdlen)
      memcpy(p, x->md, x->mdlen);
    p += x->mdlen;
    immu__put_u16(p, (uint16_t)x->klen);
    p += 2;
    memcpy(p, x->key, x->klen);
    p += x->klen;
    immu__put_u32(p, (uint32_t)x->vlen);
    p += 4;
    memcpy(p, x->hval.b, IMMU_DIGEST_LEN);
    p += IMMU_DIGEST_LEN;
    if (x->vlen)
      memcpy(p, x->value, x->vlen);
    p += x->vlen;
  }
  /* SPEC LOG-3: crc_body = crc32c(body). */
  immu__put_u32(buf + F_CRC_BODY,
                immu__crc32c(0, body, (size_t)(buf + size - body)));
  return 0;
}

/* SPEC LOG-3: crc_head = crc32c(plen as 4 BE bytes || head). */
static uint32_t head_crc(const uint8_t *buf, size_t head_len) {
  uint32_t c = immu__crc32c(0, buf + F_PLEN, 4);
  return immu__crc32c(c, buf + IMMU_TXREC_FRAME, head_len);
}

void immu__txrec_seal(uint8_t *buf, const immu_tx_header *h,
                      const immu_digest *alh) {
  uint8_t *hd = buf + IMMU_TXREC_FRAME;
  immu__put_u64(hd + H_ID, h->id);
  immu__put_u64(hd + H_TS, (uint64_t)h->ts);
  immu__put_u64(hd + H_BLTXID, h->bl_tx_id);
  memcpy(hd + H_BLROOT, h->bl_root.b, IMMU_DIGEST_LEN);
  memcpy(hd + H_PREVALH, h->prev_alh.b, IMMU_DIGEST_LEN);
  memcpy(hd + H_ALH, alh->b, IMMU_DIGEST_LEN);
  size_t head_len = IMMU_TXREC_HEAD_FIXED + immu__get_u16(hd + H_MDLEN);
  immu__put_u32(buf + F_CRC_HEAD, head_crc(buf, head_len));
}

int immu__txrec_frame_len(const uint8_t *buf, size_t avail, uint32_t max_plen,
                          size_t *frame_len) {
  if (buf == NULL || avail < IMMU_TXREC_FRAME)
    return IMMU_ECORRUPT;
  /* SPEC LOG-1: magic "IMTX". */
  if (immu__get_u32(buf + F_MAGIC) != IMMU_TXREC_MAGIC)
    return IMMU_ECORRUPT;
  uint32_t plen = immu__get_u32(buf + F_PLEN);
  /* SPEC LOG-2: a payload holds at least the head and one entry, the frame
   * fits in a u32, and the caller's bound holds. */
  if (plen < IMMU_TXREC_HEAD_FIXED + ENTRY_MIN ||
      plen > UINT32_MAX - IMMU_TXREC_FRAME || plen > max_plen)
    return IMMU_ECORRUPT;
  *frame_len = (size_t)IMMU_TXREC_FRAME + plen;
  return 0;
}

static int is_zero(const uint8_t *p, size_t n) {
  uint8_t acc = 0;
  for (size_t i = 0; i < n; i++)
    acc |= p[i];
  return acc == 0;
}

int immu__txrec_decode(const uint8_t *buf, size_t len, immu_txrec *out) {
  if (out == NULL)
    return IMMU_EINVAL;
  memset(out, 0, sizeof *out);
  if (buf == NULL || len < IMMU_TXREC_FRAME)
    return IMMU_ECORRUPT;

  /* SPEC LOG-1: magic, and plen accounts for every byte (no trailing ones). */
  if (immu__get_u32(buf + F_MAGIC) != IMMU_TXREC_MAGIC)
    return IMMU_ECORRUPT;
  uint32_t plen = immu__get_u32(buf + F_PLEN);
  if ((uint64_t)plen + IMMU_TXREC_FRAME != (uint64_t)len)
    return IMMU_ECORRUPT;
  if (plen < IMMU_TXREC_HEAD_FIXED)
    return IMMU_ECORRUPT;

  const uint8_t *hd = buf + IMMU_TXREC_FRAME;
  size_t md_len = immu__get_u16(hd + H_MDLEN);
  /* SPEC LOG-4: tx metadata within its limit and the payload. */
  if (md_len > IMMU_TX_MD_MAX || IMMU_TXREC_HEAD_FIXED + md_len > plen)
    return IMMU_ECORRUPT;
  size_t head_len = IMMU_TXREC_HEAD_FIXED + md_len;

  /* SPEC LOG-3: both CRCs before anything else is believed. */
  if (head_crc(buf, head_len) != immu__get_u32(buf + F_CRC_HEAD))
    return IMMU_ECORRUPT;
  const uint8_t *body = hd + head_len;
  const uint8_t *end = buf + len;
  size_t body_len = (size_t)(end - body);
  if (immu__crc32c(0, body, body_len) != immu__get_u32(buf + F_CRC_BODY))
    return IMMU_ECORRUPT;

  /* SPEC LOG-4: record version, header version, entry count. */
  unsigned version = immu__get_u16(hd + H_VERSION);
  uint32_t nentries = immu__get_u32(hd + H_MD + md_len);
  if (hd[H_RECVER] != TXREC_RECVER || !header_ok(version, nentries, md_len))
    return IMMU_ECORRUPT;
  /* Bounds the allocation below by the input size. */
  if (nentries > body_len / ENTRY_MIN)
    return IMMU_ECORRUPT;

  /* SPEC LOG-6: tx ids start at 1, the linked tx precedes this one, and
   * BlRoot is zero when nothing is linked. */
  uint64_t id = immu__get_u64(hd + H_ID);
  uint64_t bl_tx_id = immu__get_u64(hd + H_BLTXID);
  if (id == 0 || bl_tx_id >= id ||
      (bl_tx_id == 0 && !is_zero(hd + H_BLROOT, IMMU_DIGEST_LEN)))
    return IMMU_ECORRUPT;

  immu_txrec_entry *ents = immu__calloc(nentries, sizeof *ents);
  if (ents == NULL)
    return IMMU_ENOMEM;

  const uint8_t *p = body;
  for (uint32_t i = 0; i < nentries; i++) {
    immu_txrec_entry *x = &ents[i];
    size_t left = (size_t)(end - p);
    /* SPEC LOG-5: each length is checked against what is left. */
    if (left < 2)
      goto corrupt;
    x->mdlen = immu__get_u16(p);
    p += 2;
    left -= 2;
    if (x->mdlen > left)
      goto corrupt;
    x->md = p;
    p += x->mdlen;
    left -= x->mdlen;
    if (left < 2)
      goto corrupt;
    x->klen = immu__get_u16(p);
    p += 2;
    left -= 2;
    if (!entry_ok(version, x->klen, x->mdlen) || x->klen > left)
      goto corrupt;
    x->key = p;
    p += x->klen;
    left -= x->klen;
    if (left < 4 + IMMU_DIGEST_LEN)
      goto corrupt;
    x->vlen = immu__get_u32(p);
    p += 4;
    memcpy(x->hval.b, p, IMMU_DIGEST_LEN);
    p += IMMU_DIGEST_LEN;
    left -= 4 + IMMU_DIGEST_LEN;
    if (x->vlen > left)
      goto corrupt;
    x->value = p;
    x->value_off = (uint32_t)(p - buf); /* < len <= UINT32_MAX */
    p += x->vlen;
    if (x->mdlen == 0)
      x->md = NULL;
  }
  /* SPEC LOG-5: the entries fill the body exactly. */
  if (p != end)
    goto corrupt;

  immu_tx_header *h = &out->hdr;
  h->id = id;
  h->ts = (int64_t)immu__get_u64(hd + H_TS);
  h->bl_tx_id = bl_tx_id;
  memcpy(h->bl_root.b, hd + H_BLROOT, IMMU_DIGEST_LEN);
  memcpy(h->prev_alh.b, hd + H_PREVALH, IMMU_DIGEST_LEN);
  h->version = version;
  h->nentries = nentries;
  memcpy(h->eh.b, hd + H_MD + md_len + 4, IMMU_DIGEST_LEN);
  h->md_len = (uint32_t)md_len;
  if (md_len)
    memcpy(h->md, hd + H_MD, md_len);
  memcpy(out->alh.b, hd + H_ALH, IMMU_DIGEST_LEN);
  out->entries = ents;
  return 0;

corrupt:
  immu__free(ents);
  return IMMU_ECORRUPT;
}

/* Digests on the stack for small txs; larger ones allocate one array. */
#define CHECK_STACK_DIGESTS 64

int immu__txrec_check_hashes(const immu_txrec *r) {
  immu_digest stack_d[CHECK_STACK_DIGESTS];
  immu_digest *d = stack_d;
  immu_digest got;
  int rc = IMMU_ECORRUPT;
  uint32_t n;

  if (r == NULL || r->entries == NULL || r->hdr.nentries == 0)
    return IMMU_ECORRUPT;
  n = r->hdr.nentries;
  if (n > CHECK_STACK_DIGESTS) {
    d = immu__malloc((size_t)n * sizeof *d);
    if (d == NULL)
      return IMMU_ENOMEM;
  }
  for (uint32_t i = 0; i < n; i++) {
    const immu_txrec_entry *x = &r->entries[i];
    /* SPEC LOG-7: hVal = H(value). */
    immu_sha256(x->value, x->vlen, &got);
    if (!immu_digest_eq(&got, &x->hval))
      goto out;
    if (immu_entry_digest(r->hdr.version, x->key, x->klen, x->md, x->mdlen,
                          &x->hval, &d[i]) != 0)
      goto out;
  }
  /* SPEC LOG-7: Eh = htree root of the entry digests; Alh from the header. */
  if (immu_htree_root(d, n, &got) != 0 || !immu_digest_eq(&got, &r->hdr.eh))
    goto out;
  if (immu_tx_alh(&r->hdr, &got) != 0 || !immu_digest_eq(&got, &r->alh))
    goto out;
  rc = 0;
out:
  if (d != stack_d)
    immu__free(d);
  return rc;
}

void immu__txrec_free(immu_txrec *r) {
  if (r == NULL)
    return;
  immu__free(r->entries);
  r->entries = NULL;
}
