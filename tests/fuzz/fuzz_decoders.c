/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fuzz target: the KV-layer decoders (spec 7.2) on arbitrary bytes.
 *
 *  - immu_dec_ref_value and immu_dec_zadd_key never crash, return 0 or
 *    IMMU_ECORRUPT, and whatever they return points inside the input;
 *  - when decoding succeeds, re-encoding the decoded fields gives back
 *    exactly the input bytes (so the decoders accept only canonical
 *    encodings: right prefixes, exact lengths);
 *  - the other direction too: fields taken from the input are encoded,
 *    decoded, and compared.
 *
 * The first byte selects what the rest of the input is used for.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "immudb/crypto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fail(const char *what) {
  fprintf(stderr, "fuzz_decoders: %s\n", what);
  abort();
}

static int inside(const uint8_t *p, size_t n, const uint8_t *base,
                  size_t size) {
  return p != NULL && p >= base && n <= size && p + n <= base + size;
}

static void check_ref(const uint8_t *in, size_t size) {
  uint64_t at = 0;
  const uint8_t *rk = NULL;
  size_t rlen = 0, len = 0;
  int rc = immu_dec_ref_value(in, size, &at, &rk, &rlen);
  if (rc == IMMU_ECORRUPT) {
    return;
  }
  if (rc != 0) {
    fail("immu_dec_ref_value: unexpected return code");
  }
  if (rlen > 0 && !inside(rk, rlen, in, size)) {
    fail("immu_dec_ref_value: ref key outside the input");
  }
  uint8_t *out = malloc(size ? size : 1);
  if (out == NULL) {
    abort();
  }
  if (immu_enc_ref_value(rk, rlen, at, out, size, &len) != 0 || len != size ||
      memcmp(out, in, size) != 0) {
    fail("reference value: decode + encode is not the identity");
  }
  free(out);
}

static void check_zadd(const uint8_t *in, size_t size) {
  const uint8_t *set = NULL, *ek = NULL;
  size_t slen = 0, eklen = 0, len = 0;
  double score = 0;
  uint64_t at = 0;
  int rc = immu_dec_zadd_key(in, size, &set, &slen, &score, &ek, &eklen, &at);
  if (rc == IMMU_ECORRUPT) {
    return;
  }
  if (rc != 0) {
    fail("immu_dec_zadd_key: unexpected return code");
  }
  if ((slen > 0 && !inside(set, slen, in, size)) ||
      !inside(ek, eklen, in, size)) {
    fail("immu_dec_zadd_key: field outside the input");
  }
  if (eklen < 1 || ek[0] != IMMU_PREFIX_SET) {
    fail("immu_dec_zadd_key: encoded key without its 0x00 prefix");
  }
  /* Exactly-sized output buffer: any overrun is an ASan report. */
  uint8_t *out = malloc(size ? size : 1);
  if (out == NULL) {
    abort();
  }
  if (immu_enc_zadd_key(set, slen, score, ek + 1, eklen - 1, at, out, size,
                        &len) != 0 ||
      len != size || memcmp(out, in, size) != 0) {
    fail("zadd key: decode + encode is not the identity");
  }
  free(out);
}

static uint64_t get_u64(const uint8_t *p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; i++) {
    v = v << 8 | p[i];
  }
  return v;
}

/* Encode fields taken from the input, decode, compare. */
static void roundtrip(const uint8_t *in, size_t size) {
  if (size < 19) {
    return;
  }
  uint64_t at = get_u64(in), bits = get_u64(in + 8);
  size_t split = in[16] % (size - 17 + 1);
  const uint8_t *a = in + 17, *b = in + 17 + split;
  size_t alen = split, blen = size - 17 - split;
  double score;
  memcpy(&score, &bits, sizeof score);

  /* Reference value over |b|. */
  size_t need = blen + 10, len = 0;
  uint8_t *buf = malloc(need);
  if (buf == NULL) {
    abort();
  }
  if (immu_enc_ref_value(b, blen, at, buf, need - 1, &len) != IMMU_ETOOLARGE ||
      immu_enc_ref_value(b, blen, at, buf, need, &len) != 0 || len != need) {
    fail("immu_enc_ref_value: size contract");
  }
  uint64_t gat = 0;
  const uint8_t *grk = NULL;
  size_t grlen = 0;
  if (immu_dec_ref_value(buf, len, &gat, &grk, &grlen) != 0 || gat != at ||
      grlen != blen || (blen && memcmp(grk, b, blen) != 0)) {
    fail("reference value: encode + decode is not the identity");
  }
  free(buf);

  /* ZAdd key with set |a| and key |b|. */
  need = 1 + 8 + alen + 8 + 8 + 1 + blen + 8;
  buf = malloc(need);
  if (buf == NULL) {
    abort();
  }
  if (immu_enc_zadd_key(a, alen, score, b, blen, at, buf, need - 1, &len) !=
          IMMU_ETOOLARGE ||
      immu_enc_zadd_key(a, alen, score, b, blen, at, buf, need, &len) != 0 ||
      len != need) {
    free(buf);
    fail("immu_enc_zadd_key: size contract");
  }
  const uint8_t *gset = NULL, *gek = NULL;
  size_t gslen = 0, geklen = 0;
  double gscore = 0;
  uint64_t gbits;
  if (immu_dec_zadd_key(buf, len, &gset, &gslen, &gscore, &gek, &geklen,
                        &gat) != 0) {
    fail("zadd key: encoded key does not decode");
  }
  memcpy(&gbits, &gscore, sizeof gbits);
  if (gslen != alen || (alen && memcmp(gset, a, alen) != 0) ||
      gbits != bits || geklen != blen + 1 || gek[0] != 0 ||
      (blen && memcmp(gek + 1, b, blen) != 0) || gat != at) {
    fail("zadd key: encode + decode is not the identity");
  }
  free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size == 0) {
    return 0;
  }
  /* Copy the payload into an exactly-sized buffer so that ASan catches
   * any read past its end. */
  size_t n = size - 1;
  uint8_t *in = malloc(n ? n : 1);
  if (in == NULL) {
    abort();
  }
  memcpy(in, data + 1, n);
  switch (data[0] % 4) {
  case 0:
    check_ref(in, n);
    break;
  case 1:
    check_zadd(in, n);
    break;
  case 2:
    check_ref(in, n);
    check_zadd(in, n);
    break;
  default:
    roundtrip(in, n);
    break;
  }
  free(in);
  return 0;
}
