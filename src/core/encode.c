/* SPDX-License-Identifier: Apache-2.0 */
/*
 * KV-layer encodings (spec 7.2) and entry digests (spec 2). The encoders are
 * shared by the server (what it commits) and the client (what it expects to
 * find proven), so both sides agree byte for byte by construction.
 */
#include <string.h>

#include "core/endian.h"
#include "immudb/crypto.h"

int immu_enc_key(const uint8_t *key, size_t klen, uint8_t *out, size_t cap,
                 size_t *out_len) {
  if (cap < IMMU_ENC_KEY_LEN(klen))
    return IMMU_ETOOLARGE;
  out[0] = IMMU_PREFIX_SET;
  if (klen)
    memcpy(out + 1, key, klen);
  *out_len = klen + 1;
  return 0;
}

int immu_enc_value(const uint8_t *val, size_t vlen, uint8_t *out, size_t cap,
                   size_t *out_len) {
  if (cap < IMMU_ENC_VALUE_LEN(vlen))
    return IMMU_ETOOLARGE;
  out[0] = IMMU_VALUE_PLAIN;
  if (vlen)
    memcpy(out + 1, val, vlen);
  *out_len = vlen + 1;
  return 0;
}

int immu_enc_ref_value(const uint8_t *ref_key, size_t rlen, uint64_t at_tx,
                       uint8_t *out, size_t cap, size_t *out_len) {
  if (cap < IMMU_ENC_REF_VALUE_LEN(rlen))
    return IMMU_ETOOLARGE;
  out[0] = IMMU_VALUE_REF;
  immu__put_u64(out + 1, at_tx);
  out[9] = IMMU_PREFIX_SET;
  if (rlen)
    memcpy(out + 10, ref_key, rlen);
  *out_len = rlen + 10;
  return 0;
}

int immu_dec_ref_value(const uint8_t *val, size_t vlen, uint64_t *at_tx,
                       const uint8_t **ref_key, size_t *rlen) {
  /* SPEC 7.1: 0x01 || u64(atTx) || 0x00 || refKey */
  if (vlen < 10 || val[0] != IMMU_VALUE_REF || val[9] != IMMU_PREFIX_SET)
    return IMMU_ECORRUPT;
  *at_tx = immu__get_u64(val + 1);
  *ref_key = val + 10;
  *rlen = vlen - 10;
  return 0;
}

int immu_enc_zadd_key(const uint8_t *set, size_t slen, double score,
                      const uint8_t *key, size_t klen, uint64_t at_tx,
                      uint8_t *out, size_t cap, size_t *out_len) {
  size_t need = IMMU_ENC_ZADD_KEY_LEN(slen, klen);
  uint64_t bits;
  uint8_t *p = out;

  if (cap < need)
    return IMMU_ETOOLARGE;
  memcpy(&bits, &score, sizeof bits); /* IEEE-754 binary64 pattern */
  *p++ = IMMU_PREFIX_ZSET;
  immu__put_u64(p, slen);
  p += 8;
  if (slen)
    memcpy(p, set, slen);
  p += slen;
  immu__put_u64(p, bits);
  p += 8;
  immu__put_u64(p, (uint64_t)klen + 1);
  p += 8;
  *p++ = IMMU_PREFIX_SET;
  if (klen)
    memcpy(p, key, klen);
  p += klen;
  immu__put_u64(p, at_tx);
  *out_len = need;
  return 0;
}

int immu_dec_zadd_key(const uint8_t *key, size_t klen, const uint8_t **set,
                      size_t *slen, double *score, const uint8_t **enc_key,
                      size_t *eklen, uint64_t *at_tx) {
  uint64_t sl, el, bits;
  size_t rest;

  /* SPEC 7.2: 1 + 8 + slen + 8 + 8 + eklen + 8, with eklen >= 1 */
  if (klen < 33 || key[0] != IMMU_PREFIX_ZSET)
    return IMMU_ECORRUPT;
  sl = immu__get_u64(key + 1);
  rest = klen - 33;
  if (sl > rest)
    return IMMU_ECORRUPT;
  el = immu__get_u64(key + 1 + 8 + sl + 8);
  if (el == 0 || el != (uint64_t)(rest - sl) ||
      key[1 + 8 + sl + 16] != IMMU_PREFIX_SET)
    return IMMU_ECORRUPT;
  bits = immu__get_u64(key + 1 + 8 + sl);
  *set = key + 9;
  *slen = (size_t)sl;
  memcpy(score, &bits, sizeof bits);
  *enc_key = key + 1 + 8 + sl + 16;
  *eklen = (size_t)el;
  *at_tx = immu__get_u64(key + klen - 8);
  return 0;
}

int immu_entry_digest(unsigned version, const uint8_t *key, size_t klen,
                      const uint8_t *md, size_t mdlen, const immu_digest *hval,
                      immu_digest *out) {
  if (version == 0) {
    immu_buf parts[2] = {{key, klen}, {hval->b, IMMU_DIGEST_LEN}};
    if (mdlen != 0)
      return IMMU_EINVAL; /* ErrMetadataUnsupported */
    immu_sha256v(parts, 2, out);
    return 0;
  }
  if (version == 1) {
    uint8_t mdl[2], kl[2];
    if (mdlen > IMMU_KV_MD_MAX || klen > 0xffff)
      return IMMU_EINVAL;
    immu__put_u16(mdl, (uint16_t)mdlen);
    immu__put_u16(kl, (uint16_t)klen);
    immu_buf parts[5] = {{mdl, 2},
                         {md, mdlen},
                         {kl, 2},
                         {key, klen},
                         {hval->b, IMMU_DIGEST_LEN}};
    immu_sha256v(parts, 5, out);
    return 0;
  }
  return IMMU_EINVAL;
}
