/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Golden vectors: every vector of section 10 of the spec
 * (../shared/spec/immudb-crypto.md), checked against the public crypto API.
 *
 *   10.1 H("")                      10.5 legacy txs of data_v1.1.0/defaultdb
 *   10.2 KV encodings, entry digests 10.6 systemdb tx 2
 *   10.3 htree roots and proofs      10.7 header-v1 txs, lagging BlTxID, LAP
 *   10.4 ahtree roots and proofs     10.8 state bytes and ECDSA signatures
 *
 * Proof vectors are checked three ways: the generator reproduces them term
 * by term, the verifier accepts them, and (where the vector is a dual proof
 * over data we hold completely) immu_dual_proof_gen rebuilds them field by
 * field.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>

#include "immudb/crypto.h"

/* ------------------------------------------------------------------ */
/* Helpers                                                             */
/* ------------------------------------------------------------------ */

#define assert_rc(expr, want)                                                  \
  do {                                                                         \
    int rc_ = (expr);                                                          \
    int want_ = (want);                                                        \
    if (rc_ != want_) {                                                        \
      fail_msg("%s = %d (%s), want %d (%s)", #expr, rc_, immu_err_name(rc_),  \
               want_, immu_err_name(want_));                                   \
    }                                                                          \
  } while (0)

static int hexval(char c) {
  if (c >= '0' && c <= '9') {
    return c - '0';
  }
  if (c >= 'a' && c <= 'f') {
    return c - 'a' + 10;
  }
  if (c >= 'A' && c <= 'F') {
    return c - 'A' + 10;
  }
  return -1;
}

/* Decodes |hex| (even length, no separators) into |out|; returns the byte
 * count. Fails the test on malformed input or overflow. */
static size_t unhex(const char *hex, uint8_t *out, size_t cap) {
  size_t n = strlen(hex);
  assert_true(n % 2 == 0);
  assert_true(n / 2 <= cap);
  for (size_t i = 0; i < n / 2; i++) {
    int hi = hexval(hex[2 * i]);
    int lo = hexval(hex[2 * i + 1]);
    assert_true(hi >= 0 && lo >= 0);
    out[i] = (uint8_t)((hi << 4) | lo);
  }
  return n / 2;
}

static immu_digest D(const char *hex) {
  immu_digest d;
  assert_int_equal(strlen(hex), 64);
  assert_rc(immu_digest_from_hex(hex, &d), 0);
  return d;
}

/* Fails with both values in hex when the digests differ. */
static void check_digest(const immu_digest *got, const char *want_hex) {
  char got_hex[65];
  immu_digest_hex(got, got_hex);
  assert_string_equal(got_hex, want_hex);
}

static void check_digest_eq(const immu_digest *got, const immu_digest *want) {
  char want_hex[65];
  immu_digest_hex(want, want_hex);
  check_digest(got, want_hex);
}

static void check_bytes(const uint8_t *got, size_t got_len,
                        const char *want_hex) {
  uint8_t want[512];
  size_t want_len = unhex(want_hex, want, sizeof want);
  assert_int_equal(got_len, want_len);
  assert_memory_equal(got, want, want_len);
}

/* Checks a digest list term by term against |n| hex strings. */
static void check_list(const immu_digest *terms, size_t nterms,
                       const char *const *want, size_t n) {
  assert_int_equal(nterms, n);
  for (size_t i = 0; i < n; i++) {
    check_digest(&terms[i], want[i]);
  }
}

/* Fills |out| from |n| hex strings. */
static void fill_list(immu_digest *out, const char *const *hex, size_t n) {
  for (size_t i = 0; i < n; i++) {
    out[i] = D(hex[i]);
  }
}

static void u64be(uint64_t v, uint8_t out[8]) {
  for (int i = 7; i >= 0; i--) {
    out[i] = (uint8_t)(v & 0xffu);
    v >>= 8;
  }
}

/* H(u64(n)): the leaf payloads of 10.3 and 10.4. */
static immu_digest h_u64(uint64_t n) {
  uint8_t b[8];
  immu_digest d;
  u64be(n, b);
  immu_sha256(b, sizeof b, &d);
  return d;
}

static immu_tx_header mkhdr(uint64_t id, int64_t ts, uint64_t bl_tx_id,
                            const char *bl_root, const char *prev_alh,
                            uint32_t version, uint32_t nentries,
                            const char *eh) {
  immu_tx_header h;
  memset(&h, 0, sizeof h);
  h.id = id;
  h.ts = ts;
  h.bl_tx_id = bl_tx_id;
  h.bl_root = D(bl_root);
  h.prev_alh = D(prev_alh);
  h.version = version;
  h.nentries = nentries;
  h.eh = D(eh);
  h.md_len = 0;
  return h;
}

static void check_header_eq(const immu_tx_header *got,
                            const immu_tx_header *want) {
  assert_int_equal(got->id, want->id);
  assert_true(got->ts == want->ts);
  assert_int_equal(got->bl_tx_id, want->bl_tx_id);
  check_digest_eq(&got->bl_root, &want->bl_root);
  check_digest_eq(&got->prev_alh, &want->prev_alh);
  assert_int_equal(got->version, want->version);
  assert_int_equal(got->nentries, want->nentries);
  check_digest_eq(&got->eh, &want->eh);
  assert_int_equal(got->md_len, want->md_len);
  if (want->md_len > 0) {
    assert_memory_equal(got->md, want->md, want->md_len);
  }
}

static void check_inner_alh(const immu_tx_header *h, const char *inner_hex,
                            const char *alh_hex) {
  immu_digest inner, alh, adv;
  assert_rc(immu_tx_inner_hash(h, &inner), 0);
  check_digest(&inner, inner_hex);
  assert_rc(immu_tx_alh(h, &alh), 0);
  check_digest(&alh, alh_hex);
  /* advance() is the Alh formula (spec 6). */
  immu_alh_advance(&h->prev_alh, h->id, &inner, &adv);
  check_digest(&adv, alh_hex);
}

/* Entry digest of version |ver| for a raw store key with empty metadata. */
static immu_digest entry_digest(unsigned ver, const uint8_t *key, size_t klen,
                                const char *hval_hex) {
  immu_digest hv = D(hval_hex), out;
  assert_rc(immu_entry_digest(ver, key, klen, NULL, 0, &hv, &out), 0);
  return out;
}

/* The htree root of a single entry is its leaf hash H(0x00 || digest). */
static void check_single_entry_eh(const immu_digest *digest,
                                  const char *eh_hex) {
  immu_digest root, leaf;
  uint8_t buf[33];
  assert_rc(immu_htree_root(digest, 1, &root), 0);
  check_digest(&root, eh_hex);
  buf[0] = 0x00;
  memcpy(buf + 1, digest->b, 32);
  immu_sha256(buf, sizeof buf, &leaf);
  check_digest(&leaf, eh_hex);
}

/* ------------------------------------------------------------------ */
/* A tx source over an array of headers (ids 1..n).                    */
/* ------------------------------------------------------------------ */

typedef struct hdr_array {
  const immu_tx_header *h; /* h[id - 1] */
  uint64_t n;
} hdr_array;

static int arr_header(void *ctx, uint64_t id, immu_tx_header *out) {
  const hdr_array *a = ctx;
  if (id < 1 || id > a->n) {
    return IMMU_ENOTFOUND;
  }
  *out = a->h[id - 1];
  return 0;
}

static int arr_alh(void *ctx, uint64_t id, immu_digest *out) {
  const hdr_array *a = ctx;
  if (id < 1 || id > a->n) {
    return IMMU_ENOTFOUND;
  }
  return immu_tx_alh(&a->h[id - 1], out);
}

/* ------------------------------------------------------------------ */
/* 10.1 Primitives                                                     */
/* ------------------------------------------------------------------ */

static const char EMPTY_HEX[] =
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
static const char ZERO_HEX[] =
    "0000000000000000000000000000000000000000000000000000000000000000";

static void test_primitives(void **state) {
  (void)state;
  immu_digest d;
  char hex[65];

  immu_sha256(NULL, 0, &d);
  check_digest(&d, EMPTY_HEX);
  immu_sha256("", 0, &d);
  check_digest(&d, EMPTY_HEX);
  check_digest(&immu_empty_digest, EMPTY_HEX);
  check_digest(&immu_zero_digest, ZERO_HEX);

  /* sha256v of pieces equals sha256 of the concatenation. */
  immu_buf parts[3] = {{"ab", 2}, {NULL, 0}, {"c", 1}};
  immu_digest whole;
  immu_sha256v(parts, 3, &d);
  immu_sha256("abc", 3, &whole);
  check_digest(&d,
               "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  check_digest_eq(&whole, &d);
  immu_sha256v(NULL, 0, &d);
  check_digest(&d, EMPTY_HEX);

  /* Hex round trip and parser errors. */
  assert_rc(immu_digest_from_hex(EMPTY_HEX, &d), 0);
  immu_digest_hex(&d, hex);
  assert_string_equal(hex, EMPTY_HEX);
  assert_rc(immu_digest_from_hex(
                "E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
                &d),
            0);
  check_digest(&d, EMPTY_HEX);
  assert_rc(immu_digest_from_hex("e3b0", &d), IMMU_EINVAL);
  assert_rc(immu_digest_from_hex(
                "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b85",
                &d),
            IMMU_EINVAL);
  assert_rc(immu_digest_from_hex(
                "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
                "00",
                &d),
            IMMU_EINVAL);
  assert_rc(immu_digest_from_hex(
                "g3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
                &d),
            IMMU_EINVAL);

  /* Constant-time equality. */
  immu_digest a = D(EMPTY_HEX), b = a;
  assert_int_equal(immu_digest_eq(&a, &b), 1);
  b.b[31] ^= 1;
  assert_int_equal(immu_digest_eq(&a, &b), 0);
  b = a;
  b.b[0] ^= 0x80;
  assert_int_equal(immu_digest_eq(&a, &b), 0);
}

/* ------------------------------------------------------------------ */
/* 10.2 KV-layer encodings and entry digests                           */
/* ------------------------------------------------------------------ */

typedef struct kv_row {
  const char *key_hex;
  const char *val_hex; /* "" for empty */
  const char *hval;
  const char *v0;
  const char *v1;
} kv_row;

static const kv_row KV_ROWS[5] = {
    {"006b657931", "0076616c756531",
     "d7da3a95c85f6573d3e611bac5be34c478a4b7710e9eb0955ab99238f54ccb45",
     "91b6057a9072a58ab02d9a193a18ff2bf5bc92b9a6b897ecaf9f8223557b7e90",
     "00eb1b3b3a9fc14cb200eb0750febd87aa1b24c09a4e197ec456caad53c2188a"},
    {"0072656631", "010000000000000000006b657931",
     "e05c593ed5a77f70577bf8308388eefd284dbc6120a26f04990e844dd8d209e4",
     "cd4e4e205fedba49e6b789e8124909971dd555eb0177f19c8b3e9dc580ae9163",
     "030be547929fd14c1278019903d788f1966b2e5a4def4ed0cc529594f72d40c8"},
    {"0072656631", "010000000000000003006b657931",
     "126c2faf7fd0017b408f24c506c13b54e510daf878efa7e74e5e06c823fd9a40",
     "5f6541cd93dec23c905c47ab3bdbc2d76339befbe727df390d02b71bfbf00afc",
     "6b9a1b22b253d4a77bbbb80cc8086e78dc68dcbe8ed62eba521433cc4fa80e16"},
    {"010000000000000004736574313ff80000000000000000000000000005006b6579310000"
     "000000000000",
     "", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
     "a6dc29c319cba159a6185359349e4e881b28347e144bcf6c1b3d8a875cceed6b",
     "520c86e1f8bfd00af1103855b7eea924222829cc57ade7e9ff68d682cb7e205f"},
    {"01000000000000000473657431c0000000000000000000000000000005006b6579310000"
     "000000000007",
     "", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
     "d22851f37ce5fc9678295bed4b8552c62e57fb895be5048680a7273a14b5eb33",
     "f6a33fad9c7ac85fa6ad3511d5f24475731304fb368d19bce925b7bfb8f09c99"},
};

/* Checks hVal, the v0 digest and the v1 digest (md empty) of one row, from
 * the bytes our encoders produced. */
static void check_kv_row(const kv_row *row, const uint8_t *key, size_t klen,
                         const uint8_t *val, size_t vlen) {
  immu_digest hval, dg;
  check_bytes(key, klen, row->key_hex);
  check_bytes(val, vlen, row->val_hex);
  immu_sha256(val, vlen, &hval);
  check_digest(&hval, row->hval);
  assert_rc(immu_entry_digest(0, key, klen, NULL, 0, &hval, &dg), 0);
  check_digest(&dg, row->v0);
  assert_rc(immu_entry_digest(1, key, klen, NULL, 0, &hval, &dg), 0);
  check_digest(&dg, row->v1);
  /* A present-but-empty metadata pointer is the same as NULL. */
  static const uint8_t nomd[1] = {0};
  assert_rc(immu_entry_digest(1, key, klen, nomd, 0, &hval, &dg), 0);
  check_digest(&dg, row->v1);
  assert_rc(immu_entry_digest(0, key, klen, nomd, 0, &hval, &dg), 0);
  check_digest(&dg, row->v0);
}

static void test_kv_encodings(void **state) {
  (void)state;
  uint8_t key[128], val[128];
  size_t klen, vlen;

  /* Row 0: EncodeKV("key1", "value1"). */
  assert_rc(immu_enc_key((const uint8_t *)"key1", 4, key, sizeof key, &klen),
            0);
  assert_int_equal(klen, IMMU_ENC_KEY_LEN(4));
  assert_rc(
      immu_enc_value((const uint8_t *)"value1", 6, val, sizeof val, &vlen), 0);
  assert_int_equal(vlen, IMMU_ENC_VALUE_LEN(6));
  check_kv_row(&KV_ROWS[0], key, klen, val, vlen);

  /* Rows 1 and 2: EncodeReference("ref1" -> "key1", atTx = 0 / 3). */
  for (int r = 1; r <= 2; r++) {
    uint64_t at = r == 1 ? 0 : 3;
    uint64_t got_at = 99;
    const uint8_t *rk = NULL;
    size_t rlen = 0;
    assert_rc(
        immu_enc_key((const uint8_t *)"ref1", 4, key, sizeof key, &klen), 0);
    assert_rc(immu_enc_ref_value((const uint8_t *)"key1", 4, at, val,
                                 sizeof val, &vlen),
              0);
    assert_int_equal(vlen, IMMU_ENC_REF_VALUE_LEN(4));
    check_kv_row(&KV_ROWS[r], key, klen, val, vlen);
    assert_rc(immu_dec_ref_value(val, vlen, &got_at, &rk, &rlen), 0);
    assert_int_equal(got_at, at);
    assert_int_equal(rlen, 4);
    assert_memory_equal(rk, "key1", 4);
    assert_true(rk >= val && rk + rlen <= val + vlen);
  }

  /* Rows 3 and 4: EncodeZAdd("set1", 1.5 / -2.0, "key1", atTx = 0 / 7). */
  for (int r = 3; r <= 4; r++) {
    double score = r == 3 ? 1.5 : -2.0;
    uint64_t at = r == 3 ? 0 : 7;
    const uint8_t *set = NULL, *ek = NULL;
    size_t slen = 0, eklen = 0;
    double got_score = 0;
    uint64_t got_at = 99;
    assert_rc(immu_enc_zadd_key((const uint8_t *)"set1", 4, score,
                                (const uint8_t *)"key1", 4, at, key,
                                sizeof key, &klen),
              0);
    /* 1 + 8 + len(set) + 8 + 8 + 1 + len(key) + 8 (spec 7.2) */
    assert_int_equal(klen, 42);
    assert_int_equal(IMMU_ENC_ZADD_KEY_LEN(4, 4), 42);
    check_kv_row(&KV_ROWS[r], key, klen, val, 0);
    assert_rc(immu_dec_zadd_key(key, klen, &set, &slen, &got_score, &ek,
                                &eklen, &got_at),
              0);
    assert_int_equal(slen, 4);
    assert_memory_equal(set, "set1", 4);
    assert_true(got_score == score);
    assert_int_equal(eklen, 5);
    assert_memory_equal(ek, "\0key1", 5);
    assert_int_equal(got_at, at);
  }

  /* The v1 digest input for the empty-md case is 0000 0005 006b657931 hVal. */
  {
    uint8_t in[64];
    size_t n = unhex("00000005006b657931"
                     "d7da3a95c85f6573d3e611bac5be34c478a4b7710e9eb0955ab99238"
                     "f54ccb45",
                     in, sizeof in);
    immu_digest d;
    immu_sha256(in, n, &d);
    check_digest(&d, KV_ROWS[0].v1);
  }
}

static void test_kv_metadata_digests(void **state) {
  (void)state;
  uint8_t key[] = {0x00, 'k', 'e', 'y', '1'};
  immu_digest hval = D(KV_ROWS[0].hval), dg;
  uint8_t md[16];
  size_t mdlen;

  /* deleted + expiresAt(1700000000) */
  mdlen = unhex("0001000000006553f100", md, sizeof md);
  assert_rc(immu_entry_digest(1, key, sizeof key, md, mdlen, &hval, &dg), 0);
  check_digest(&dg,
               "81ab4e5e80057ea4ae34da9c30801cecfdf68261cbc163147ca6f450c21275f5");
  /* Metadata is an error with version 0. */
  assert_rc(immu_entry_digest(0, key, sizeof key, md, mdlen, &hval, &dg),
            IMMU_EINVAL);

  /* nonIndexable */
  mdlen = unhex("02", md, sizeof md);
  assert_rc(immu_entry_digest(1, key, sizeof key, md, mdlen, &hval, &dg), 0);
  check_digest(&dg,
               "f4688b095829360c95a213f78684f77c36e790a5f10ec3b52f536b6b643027df");
  assert_rc(immu_entry_digest(0, key, sizeof key, md, mdlen, &hval, &dg),
            IMMU_EINVAL);
}

/* ------------------------------------------------------------------ */
/* 10.3 htree                                                          */
/* ------------------------------------------------------------------ */

static const char *const HTREE_ROOTS[7] = {
    "aea833068048b82f42271c18e0076a5230cbc7d711c99de16a5917db14a3b044",
    "839757d78394f8ad59bc4621831d92396f5d3556fe0059846463a32a21dc9e04",
    "cc23a6e05f95099459e4b62703c223236972a78997b072a65500b30e26bb6ef3",
    "f429b955064dbbcf878a6b817cb02740f0a30f42a1d770195addb021b45b8fdd",
    "aa33f608b3c7398a5230804ae5bf2cbe372e3e517eab55ef21d7e8a1318b00d9",
    "e09719be5ed3cdf6ec907e5ba6ebe019a93dee5e305185c33522ab6325045eec",
    "3bae604504fcab1978311ba9984633ad88b8c104832990123345db6c816b77c8",
};

static void test_htree_vectors(void **state) {
  (void)state;
  immu_digest d[7], root, terms[IMMU_PROOF_MAX_TERMS];
  size_t nterms;

  for (uint64_t i = 0; i < 7; i++) {
    d[i] = h_u64(i);
  }
  for (size_t w = 1; w <= 7; w++) {
    assert_rc(immu_htree_root(d, w, &root), 0);
    check_digest(&root, HTREE_ROOTS[w - 1]);
    /* Every leaf of these small trees verifies against the vector root. */
    for (size_t leaf = 0; leaf < w; leaf++) {
      assert_rc(immu_htree_proof(d, w, leaf, terms, &nterms), 0);
      assert_rc(immu_htree_verify(terms, nterms, leaf, w, &d[leaf], &root), 0);
    }
  }

  /* w = 5, leaf = 2 */
  static const char *const p52[3] = {
      "7d243575fe426706e03d2fbaedc5d5758060864046d6396a908f556db8ef4bc1",
      "839757d78394f8ad59bc4621831d92396f5d3556fe0059846463a32a21dc9e04",
      "1dd18a67014a2f7f605953bcde923137e4b0d66bdee5b22202e765382ba49f5d",
  };
  immu_digest root5 = D(HTREE_ROOTS[4]), vec[3];
  assert_rc(immu_htree_proof(d, 5, 2, terms, &nterms), 0);
  check_list(terms, nterms, p52, 3);
  fill_list(vec, p52, 3);
  assert_rc(immu_htree_verify(vec, 3, 2, 5, &d[2], &root5), 0);
  assert_rc(immu_htree_verify(vec, 3, 3, 5, &d[2], &root5), IMMU_EVERIFY);
  assert_rc(immu_htree_verify(vec, 3, 2, 5, &d[3], &root5), IMMU_EVERIFY);

  /* w = 5, leaf = 4: the rightmost leaf is promoted twice, hashed once. */
  static const char *const p54[1] = {
      "f429b955064dbbcf878a6b817cb02740f0a30f42a1d770195addb021b45b8fdd",
  };
  assert_rc(immu_htree_proof(d, 5, 4, terms, &nterms), 0);
  check_list(terms, nterms, p54, 1);
  fill_list(vec, p54, 1);
  assert_rc(immu_htree_verify(vec, 1, 4, 5, &d[4], &root5), 0);
  assert_rc(immu_htree_verify(vec, 0, 4, 5, &d[4], &root5), IMMU_EVERIFY);

  /* w = 1: empty proof; the root is the leaf hash. */
  immu_digest root1 = D(HTREE_ROOTS[0]);
  assert_rc(immu_htree_proof(d, 1, 0, terms, &nterms), 0);
  assert_int_equal(nterms, 0);
  assert_rc(immu_htree_verify(terms, 0, 0, 1, &d[0], &root1), 0);
}

/* ------------------------------------------------------------------ */
/* 10.4 ahtree                                                         */
/* ------------------------------------------------------------------ */

static const char *const AHT_ROOTS[8] = {
    "277dddee83152dcc8ba5f7ab96e552f178c2fee48d0b81982597f0d743f675f7",
    "f19275f559e1887a3bfd39287e27619fe607f0c644ff616d1a922d7f5155fb68",
    "ddd321bb19e41a0509d3b04ec428f3cbf4a96747115834b0074bd4dbc542b230",
    "11a8db31edfde17c6cc887b2341a6f77553cab9907b7a08c33d5e64e569baa24",
    "7ea9378f2bbf570faa6ad08f26c58613e1755bc8e66127b47d32047b4437a4a2",
    "588e1ecefa627d0e1a7796798583bc446f3f2d49281b40184231d4be60cd412f",
    "76bad20ef3db6c3f44b3e36ef58905da600ae85fb5baba5ba86dc3f61cde4ac5",
    "4270d8a2bfc8b0d8c044bc6915a6312d5010587ae40f7f6cdcf52fde40ce8d4d",
};

static void test_ahtree_vectors(void **state) {
  (void)state;
  immu_ahtree *t = NULL;
  immu_digest data[9], root, terms[IMMU_PROOF_MAX_TERMS], vec[8];
  size_t nterms;

  assert_rc(immu_ahtree_new_mem(&t), 0);
  assert_int_equal(immu_ahtree_size(t), 0);
  for (uint64_t n = 1; n <= 8; n++) {
    data[n] = h_u64(n);
    assert_rc(immu_ahtree_append(t, data[n].b, 32, &root), 0);
    check_digest(&root, AHT_ROOTS[n - 1]);
    assert_int_equal(immu_ahtree_size(t), n);
  }
  for (uint64_t m = 1; m <= 8; m++) {
    assert_rc(immu_ahtree_root_at(t, m, &root), 0);
    check_digest(&root, AHT_ROOTS[m - 1]);
  }
  assert_rc(immu_ahtree_root_at(t, 0, &root), IMMU_ERANGE);
  assert_rc(immu_ahtree_root_at(t, 9, &root), IMMU_ERANGE);

  /* Root(1) is the leaf hash of data_1. */
  immu_digest leaf[9];
  for (int n = 1; n <= 8; n++) {
    immu_ahtree_leaf(&data[n], &leaf[n]);
  }
  check_digest(&leaf[1], AHT_ROOTS[0]);

  immu_digest r7 = D(AHT_ROOTS[6]), r3 = D(AHT_ROOTS[2]);
  immu_digest r4 = D(AHT_ROOTS[3]), r8 = D(AHT_ROOTS[7]);
  immu_digest r5 = D(AHT_ROOTS[4]);

  /* InclusionProof(3, 7) */
  static const char *const i37[3] = {
      "1dd18a67014a2f7f605953bcde923137e4b0d66bdee5b22202e765382ba49f5d",
      "f19275f559e1887a3bfd39287e27619fe607f0c644ff616d1a922d7f5155fb68",
      "dba44368c2c7ffb4b7d6f31156768534d7e006cab57809c1445f869a4f2f34bb",
  };
  assert_rc(immu_ahtree_inclusion_proof(t, 3, 7, terms, &nterms), 0);
  check_list(terms, nterms, i37, 3);
  fill_list(vec, i37, 3);
  assert_rc(immu_ahtree_verify_inclusion(vec, 3, 3, 7, &leaf[3], &r7), 0);
  assert_rc(immu_ahtree_verify_inclusion(vec, 3, 3, 7, &leaf[4], &r7),
            IMMU_EVERIFY);
  assert_rc(immu_ahtree_verify_inclusion(vec, 2, 3, 7, &leaf[3], &r7),
            IMMU_EVERIFY);

  /* InclusionProof(7, 7) = LastInclusion(7) */
  static const char *const i77[2] = {
      "6ac35944dbdf6f7d563e38f5c329fe262bd315d48821a46805d9aebbb1c40cc9",
      "11a8db31edfde17c6cc887b2341a6f77553cab9907b7a08c33d5e64e569baa24",
  };
  assert_rc(immu_ahtree_inclusion_proof(t, 7, 7, terms, &nterms), 0);
  check_list(terms, nterms, i77, 2);
  fill_list(vec, i77, 2);
  assert_rc(immu_ahtree_verify_inclusion(vec, 2, 7, 7, &leaf[7], &r7), 0);
  assert_rc(immu_ahtree_verify_last_inclusion(vec, 2, 7, &leaf[7], &r7), 0);
  assert_rc(immu_ahtree_verify_last_inclusion(vec, 2, 7, &leaf[6], &r7),
            IMMU_EVERIFY);
  assert_rc(immu_ahtree_verify_last_inclusion(vec, 2, 0, &leaf[7], &r7),
            IMMU_EVERIFY);

  /* ConsistencyProof(3, 7) */
  static const char *const c37[4] = {
      "7d243575fe426706e03d2fbaedc5d5758060864046d6396a908f556db8ef4bc1",
      "1dd18a67014a2f7f605953bcde923137e4b0d66bdee5b22202e765382ba49f5d",
      "f19275f559e1887a3bfd39287e27619fe607f0c644ff616d1a922d7f5155fb68",
      "dba44368c2c7ffb4b7d6f31156768534d7e006cab57809c1445f869a4f2f34bb",
  };
  assert_rc(immu_ahtree_consistency_proof(t, 3, 7, terms, &nterms), 0);
  check_list(terms, nterms, c37, 4);
  fill_list(vec, c37, 4);
  assert_rc(immu_ahtree_verify_consistency(vec, 4, 3, 7, &r3, &r7), 0);
  assert_rc(immu_ahtree_verify_consistency(vec, 4, 3, 7, &r4, &r7),
            IMMU_EVERIFY);
  assert_rc(immu_ahtree_verify_consistency(vec, 4, 3, 7, &r3, &r8),
            IMMU_EVERIFY);

  /* ConsistencyProof(4, 8): 4 is a power of two, so MTH(1..4) comes first. */
  static const char *const c48[2] = {
      "11a8db31edfde17c6cc887b2341a6f77553cab9907b7a08c33d5e64e569baa24",
      "e4f6a5b1643ecdf81036d5b4f6dbcdd0d8a66ac396b9feccd73e9f731aac7bae",
  };
  assert_rc(immu_ahtree_consistency_proof(t, 4, 8, terms, &nterms), 0);
  check_list(terms, nterms, c48, 2);
  fill_list(vec, c48, 2);
  assert_rc(immu_ahtree_verify_consistency(vec, 2, 4, 8, &r4, &r8), 0);
  /* The plain RFC 6962 proof (without the prefix) is rejected (spec 5.3). */
  assert_rc(immu_ahtree_verify_consistency(vec + 1, 1, 4, 8, &r4, &r8),
            IMMU_EVERIFY);

  /* ConsistencyProof(5, 5) */
  static const char *const c55[2] = {
      "56810d9785a3df6cd2940a5f46ac5ad9656c03427edbfc3e5660de76b8e56374",
      "11a8db31edfde17c6cc887b2341a6f77553cab9907b7a08c33d5e64e569baa24",
  };
  assert_rc(immu_ahtree_consistency_proof(t, 5, 5, terms, &nterms), 0);
  check_list(terms, nterms, c55, 2);
  fill_list(vec, c55, 2);
  assert_rc(immu_ahtree_verify_consistency(vec, 2, 5, 5, &r5, &r5), 0);
  /* i == j: an empty proof is accepted iff the roots are equal. */
  assert_rc(immu_ahtree_verify_consistency(vec, 0, 5, 5, &r5, &r5), 0);
  assert_rc(immu_ahtree_verify_consistency(vec, 0, 5, 5, &r5, &r4),
            IMMU_EVERIFY);
  assert_rc(immu_ahtree_verify_consistency(vec, 2, 5, 5, &r4, &r4),
            IMMU_EVERIFY);

  /* Out of range arguments. */
  assert_rc(immu_ahtree_inclusion_proof(t, 0, 7, terms, &nterms),
            IMMU_ERANGE);
  assert_rc(immu_ahtree_inclusion_proof(t, 8, 7, terms, &nterms),
            IMMU_ERANGE);
  assert_rc(immu_ahtree_inclusion_proof(t, 3, 9, terms, &nterms),
            IMMU_ERANGE);
  assert_rc(immu_ahtree_consistency_proof(t, 0, 7, terms, &nterms),
            IMMU_ERANGE);
  assert_rc(immu_ahtree_consistency_proof(t, 8, 7, terms, &nterms),
            IMMU_ERANGE);
  assert_rc(immu_ahtree_consistency_proof(t, 3, 9, terms, &nterms),
            IMMU_ERANGE);

  immu_ahtree_free(t);
}

/* ------------------------------------------------------------------ */
/* 10.5 Real legacy-format transactions (data_v1.1.0/defaultdb)        */
/* ------------------------------------------------------------------ */

static const char *const LEG_ALH[5] = {
    NULL,
    "8b926ffbc9abb205a89f0dc5d81a0a2d0844f8f4404861f0eae7911a3cb537d9",
    "f7ac8460c2f812832614e15dec4b42be24b9cf501e694cc629863bfbe90d1ce5",
    "9014f59746258af130c86654f5acfe47e4909ea1b7ae1c76733ab32d97d24f73",
    "e65e5586a514cdf0a0a815d2a9eab5bff09b9a2078be732017120b7ba5a645fd",
};
static const char *const LEG_INNER[5] = {
    NULL,
    "282a4ecc5e58278357acc83ab361339a35866aeb3ed27ffa6add897be3c700d7",
    "e6f80f73cd3537cefe2ee8881348100de99f164cc0985e36260e3ab164cfdd2a",
    "f6941cd0d5f48cdad4a9f6396f92cefc647309b7b713b30024dc50e71f793af3",
    "b1d97b295d56eb8ee8f83c87c0fd71151a3282e8e0fe309b0c7dac4c4910ed0c",
};
static const char *const LEG_ROOT[5] = {
    NULL,
    "1d8e2fc7f690ec37ae6859492834a510e02173a32b8f0df6242ec3821f771973",
    "82c10595f20fb1bb3f55c78b5ebd43496df40fee099fa446e5065230a63981c8",
    "d507b557e1a2cb82080990410431e94a66c549cf35f7c67463aa0f6c3e2ee178",
    "d4013ac37128ba6532fcb90db1e0e90be44e80cb04b6648d6d491584238b3705",
};

/* The four headers; version 0 hashes identically to the legacy format. */
static void legacy_headers(immu_tx_header h[4]) {
  h[0] = mkhdr(1, 1637858806, 0, ZERO_HEX, EMPTY_HEX, 0, 1,
               "15922c456cfb0dc4f597ff4c71d2772157572496117426df5961686bc0badf5d");
  h[1] = mkhdr(2, 1637858834, 1, LEG_ROOT[1], LEG_ALH[1], 0, 4,
               "134aa50accdbdaa5263c0bef349fa23ccc3b61c37a05f4ed084ce8bf9440a52b");
  h[2] = mkhdr(3, 1637858839, 2, LEG_ROOT[2], LEG_ALH[2], 0, 1,
               "67d4b99c60848e6350d1660d4acdb47901798700cbe14d3a74309162ec3a4c3f");
  h[3] = mkhdr(4, 1637858853, 3, LEG_ROOT[3], LEG_ALH[3], 0, 4,
               "d200c5bab16ec22b137dcc7a6bb036dca9d4d03cb0c97db6192cfd3aa240c749");
}

static void test_legacy_tx1(void **state) {
  (void)state;
  immu_tx_header h[4];
  uint8_t key[64], buf[128];
  size_t klen, n;
  immu_digest d;
  legacy_headers(h);

  /* Entry digest and Eh (1 entry, so Eh is the leaf hash of the digest). */
  klen = unhex("0243544c2e44415441424153452e00000001", key, sizeof key);
  d = entry_digest(0, key, klen,
                   "98ac3eacda9950d6993abd6404d3d2ef8242290d944bfeac03c1b74139833221");
  check_digest(&d,
               "f48281a682a7db82a7cdb66dc6eaca71a4c5c3a1f50e4a22a8bd761ebaae2c23");
  n = unhex("0243544c2e44415441424153452e0000000198ac3eacda9950d6993abd6404d3d2"
            "ef8242290d944bfeac03c1b74139833221",
            buf, sizeof buf);
  immu_digest d2;
  immu_sha256(buf, n, &d2);
  check_digest_eq(&d2, &d);
  check_single_entry_eh(&d,
                        "15922c456cfb0dc4f597ff4c71d2772157572496117426df5961686"
                        "bc0badf5d");

  /* innerHash and Alh, and their byte-level inputs. */
  check_inner_alh(&h[0], LEG_INNER[1], LEG_ALH[1]);
  n = unhex("00000000619fbdf60000000115922c456cfb0dc4f597ff4c71d277215757249611"
            "7426df5961686bc0badf5d000000000000000000000000000000000000000000"
            "00000000000000000000000000000000000000",
            buf, sizeof buf);
  assert_int_equal(n, 84);
  immu_sha256(buf, n, &d);
  check_digest(&d, LEG_INNER[1]);
  n = unhex("0000000000000001e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca4"
            "95991b7852b855282a4ecc5e58278357acc83ab361339a35866aeb3ed27ffa6a"
            "dd897be3c700d7",
            buf, sizeof buf);
  assert_int_equal(n, 72);
  immu_sha256(buf, n, &d);
  check_digest(&d, LEG_ALH[1]);

  /* The same fields as a version-1 header. */
  immu_tx_header v1 = h[0];
  v1.version = 1;
  assert_rc(immu_tx_inner_hash(&v1, &d), 0);
  check_digest(&d,
               "b411f8c7113d62c316ecdaa700b6561cfc5d035f75086efc8ccc860c1d444e6c");

  /* Argument errors of innerHash / Alh. */
  immu_tx_header bad = h[0];
  bad.version = 2;
  assert_rc(immu_tx_inner_hash(&bad, &d), IMMU_EINVAL);
  assert_rc(immu_tx_alh(&bad, &d), IMMU_EINVAL);
  bad = h[0];
  bad.nentries = 65536;
  assert_rc(immu_tx_inner_hash(&bad, &d), IMMU_EINVAL);
  assert_rc(immu_tx_alh(&bad, &d), IMMU_EINVAL);
  bad.nentries = 65535;
  assert_rc(immu_tx_inner_hash(&bad, &d), 0);
  bad = h[0];
  bad.md_len = 1;
  bad.md[0] = 0x00;
  assert_rc(immu_tx_inner_hash(&bad, &d), IMMU_EINVAL);
  assert_rc(immu_tx_alh(&bad, &d), IMMU_EINVAL);
  /* Version 1 takes up to IMMU_TX_MD_MAX metadata bytes, not more: md_len
   * must never make the hash read past the md array. */
  bad.version = 1;
  bad.md_len = IMMU_TX_MD_MAX;
  memset(bad.md, 0xab, sizeof bad.md);
  assert_rc(immu_tx_inner_hash(&bad, &d), 0);
  bad.md_len = IMMU_TX_MD_MAX + 1;
  assert_rc(immu_tx_inner_hash(&bad, &d), IMMU_EINVAL);
  bad.md_len = UINT32_MAX;
  assert_rc(immu_tx_alh(&bad, &d), IMMU_EINVAL);
  /* Version 1 has a u32 NEntries: no 65535 limit. */
  bad = h[0];
  bad.version = 1;
  bad.nentries = 70000;
  assert_rc(immu_tx_inner_hash(&bad, &d), 0);
}

static void test_legacy_tx2_tx3_tx4(void **state) {
  (void)state;
  immu_tx_header h[4];
  uint8_t key[64];
  size_t klen;
  legacy_headers(h);

  /* tx 2: four entries. */
  static const char *const keys[4] = {
      "0243544c2e494e4445582e000000010000000100000000",
      "0243544c2e434f4c554d4e2e000000010000000100000001494e5445474552",
      "0243544c2e434f4c554d4e2e00000001000000010000000256415243484152",
      "0243544c2e5441424c452e0000000100000001",
  };
  static const char *const hvals[4] = {
      "a90d4563c6a0ae0417ab3110f1ba68592833465954774201b0a69e8c457dc6ad",
      "719cbe1415a83bf61f5a69fc63d9c08baf98fb6f87df2fe7da92c83264d46408",
      "b0e2134164fcb51f5a235291f179579a7a1a2e391660a9078199ce2badf41c6d",
      "7c662f52db8399b2104f014a098589596f35dbc80b2d8150bcaa306dc09878d7",
  };
  static const char *const digests[4] = {
      "7b946ee87ff456b2c5c474cbd0546f0674ae92ca8fe6a105cc284eaca9eb413e",
      "86addaf40a99976dc51cbc993029f793056218eb5c0a60e1b77e47ed875e395c",
      "7f9d28fa29e4e868b965233b31dc24f2055329537abb7e79ef1ebc22ee986153",
      "ebb2ec4203ea8e692bfa2aa5904e2106ad1b58dcce7cd9655ca857c5e9842019",
  };
  immu_digest dg[4], eh, terms[IMMU_PROOF_MAX_TERMS];
  size_t nterms;
  for (int i = 0; i < 4; i++) {
    klen = unhex(keys[i], key, sizeof key);
    dg[i] = entry_digest(0, key, klen, hvals[i]);
    check_digest(&dg[i], digests[i]);
  }
  assert_rc(immu_htree_root(dg, 4, &eh), 0);
  check_digest_eq(&eh, &h[1].eh);

  static const char *const p1[2] = {
      "b403c67276fc03c227a2a2c6ca390d05d0af81cd9c0839974cc292c0a82b74a8",
      "8cb30f369dc79d30e02c6e39c10196d03a4419e805c6e18f2a9be579520a40e3",
  };
  static const char *const p3[2] = {
      "75ad49b479a9e5c9c19ae55500384d23496cfaa7249097127798ac96149613fd",
      "cebfb2a31b9f0d8bf189f1676a35fe74fa22e5caedd870bf6d46847486d83299",
  };
  immu_digest vec[2];
  assert_rc(immu_htree_proof(dg, 4, 1, terms, &nterms), 0);
  check_list(terms, nterms, p1, 2);
  fill_list(vec, p1, 2);
  assert_rc(immu_htree_verify(vec, 2, 1, 4, &dg[1], &eh), 0);
  assert_rc(immu_htree_verify(vec, 2, 1, 4, &dg[0], &eh), IMMU_EVERIFY);
  assert_rc(immu_htree_proof(dg, 4, 3, terms, &nterms), 0);
  check_list(terms, nterms, p3, 2);
  fill_list(vec, p3, 2);
  assert_rc(immu_htree_verify(vec, 2, 3, 4, &dg[3], &eh), 0);
  assert_rc(immu_htree_verify(vec, 2, 2, 4, &dg[3], &eh), IMMU_EVERIFY);

  /* tx 3: one entry. */
  klen = unhex("0243544c2e494e4445582e000000010000000100000001", key,
               sizeof key);
  immu_digest d3 = entry_digest(
      0, key, klen,
      "55af2e3db27cf364b9465ea89a489710da6c78ecc59ddf3ac6203261a6649d9e");
  check_single_entry_eh(&d3,
                        "67d4b99c60848e6350d1660d4acdb47901798700cbe14d3a74309162"
                        "ec3a4c3f");

  /* innerHash and Alh of tx 1..4, chained through PrevAlh. */
  for (int i = 0; i < 4; i++) {
    check_inner_alh(&h[i], LEG_INNER[i + 1], LEG_ALH[i + 1]);
  }
}

/* ahtree over Alh(1..4); Root(1..3) are the BlRoots of tx 2..4. */
static immu_ahtree *legacy_tree(const immu_tx_header h[4]) {
  immu_ahtree *t = NULL;
  immu_digest alh, root;
  assert_rc(immu_ahtree_new_mem(&t), 0);
  for (int i = 0; i < 4; i++) {
    assert_rc(immu_tx_alh(&h[i], &alh), 0);
    assert_rc(immu_ahtree_append(t, alh.b, sizeof alh.b, &root), 0);
    check_digest(&root, LEG_ROOT[i + 1]);
    if (i < 3) {
      check_digest_eq(&root, &h[i + 1].bl_root);
    }
  }
  return t;
}

typedef struct dual_vec {
  uint64_t s;
  const char *const *incl;
  size_t nincl;
  const char *const *cons;
  size_t ncons;
  const char *bl_alh;
  const char *const *last;
  size_t nlast;
  uint64_t lin_s, lin_t;
  const char *const *lin;
  size_t nlin;
} dual_vec;

static const char *const DV14_INCL[2] = {
    "b3a5d5f96405b033cc9efe17bcaaa4a632f8ecc9d59986ce0c7dbe6ae322b6bc",
    "1be653f48d1be4a579ccebbb01741c2204be57b7f8f780d4084a29c6d8df8de4",
};
static const char *const DV_LAST[1] = {
    "82c10595f20fb1bb3f55c78b5ebd43496df40fee099fa446e5065230a63981c8",
};
static const char *const DV_LIN34[2] = {
    "9014f59746258af130c86654f5acfe47e4909ea1b7ae1c76733ab32d97d24f73",
    "b1d97b295d56eb8ee8f83c87c0fd71151a3282e8e0fe309b0c7dac4c4910ed0c",
};
static const char *const DV24_INCL[2] = {
    "1d8e2fc7f690ec37ae6859492834a510e02173a32b8f0df6242ec3821f771973",
    "1be653f48d1be4a579ccebbb01741c2204be57b7f8f780d4084a29c6d8df8de4",
};
static const char *const DV24_CONS[3] = {
    "1d8e2fc7f690ec37ae6859492834a510e02173a32b8f0df6242ec3821f771973",
    "b3a5d5f96405b033cc9efe17bcaaa4a632f8ecc9d59986ce0c7dbe6ae322b6bc",
    "1be653f48d1be4a579ccebbb01741c2204be57b7f8f780d4084a29c6d8df8de4",
};
static const char *const DV44_CONS[2] = {
    "1be653f48d1be4a579ccebbb01741c2204be57b7f8f780d4084a29c6d8df8de4",
    "82c10595f20fb1bb3f55c78b5ebd43496df40fee099fa446e5065230a63981c8",
};
static const char *const DV44_LIN[1] = {
    "e65e5586a514cdf0a0a815d2a9eab5bff09b9a2078be732017120b7ba5a645fd",
};

/* targetBlTxAlh of all three: Alh(3). */
#define ALH3_HEX                                                               \
  "9014f59746258af130c86654f5acfe47e4909ea1b7ae1c76733ab32d97d24f73"

static const dual_vec LEGACY_DUALS[3] = {
    {1, DV14_INCL, 2, NULL, 0, ALH3_HEX, DV_LAST, 1, 3, 4, DV_LIN34, 2},
    {2, DV24_INCL, 2, DV24_CONS, 3, ALH3_HEX, DV_LAST, 1, 3, 4, DV_LIN34, 2},
    {4, NULL, 0, DV44_CONS, 2, ALH3_HEX, DV_LAST, 1, 4, 4, DV44_LIN, 1},
};

static void test_legacy_dual_proofs(void **state) {
  (void)state;
  immu_tx_header h[4];
  legacy_headers(h);
  immu_ahtree *t = legacy_tree(h);
  hdr_array arr = {h, 4};
  immu_tx_source src = {&arr, arr_header, arr_alh};
  immu_digest alh_s, alh_t = D(LEG_ALH[4]);

  for (size_t v = 0; v < 3; v++) {
    const dual_vec *dv = &LEGACY_DUALS[v];
    immu_digest incl[4], cons[4], last[4], lin[4];
    immu_dual_proof p;

    /* (a) The vector, as a client receives it, verifies. */
    memset(&p, 0, sizeof p);
    p.source = h[dv->s - 1];
    p.target = h[3];
    fill_list(incl, dv->incl, dv->nincl);
    fill_list(cons, dv->cons, dv->ncons);
    fill_list(last, dv->last, dv->nlast);
    fill_list(lin, dv->lin, dv->nlin);
    p.inclusion.d = incl;
    p.inclusion.n = dv->nincl;
    p.consistency.d = cons;
    p.consistency.n = dv->ncons;
    p.target_bl_tx_alh = D(dv->bl_alh);
    p.last_inclusion.d = last;
    p.last_inclusion.n = dv->nlast;
    p.linear.source_tx_id = dv->lin_s;
    p.linear.target_tx_id = dv->lin_t;
    p.linear.terms.d = lin;
    p.linear.terms.n = dv->nlin;
    p.has_lap = 0;
    alh_s = D(LEG_ALH[dv->s]);
    assert_rc(immu_dual_proof_verify(&p, dv->s, 4, &alh_s, &alh_t), 0);
    /* ... and not for the wrong state. */
    assert_rc(immu_dual_proof_verify(&p, dv->s, 4, &alh_t, &alh_t),
              dv->s == 4 ? 0 : IMMU_EVERIFY);
    assert_rc(immu_dual_proof_verify(&p, dv->s, 4, &alh_s, &alh_s),
              dv->s == 4 ? 0 : IMMU_EVERIFY);
    assert_rc(immu_dual_proof_verify(&p, dv->s, 3, &alh_s, &alh_t),
              IMMU_EVERIFY);
    if (dv->s > 1) {
      assert_rc(immu_dual_proof_verify(&p, dv->s - 1, 4, &alh_s, &alh_t),
                IMMU_EVERIFY);
    }
    lin[dv->nlin - 1].b[5] ^= 0x10;
    assert_rc(immu_dual_proof_verify(&p, dv->s, 4, &alh_s, &alh_t),
              IMMU_EVERIFY);
    lin[dv->nlin - 1].b[5] ^= 0x10;

    /* (b) The generator rebuilds it, field by field. */
    immu_dual_proof g;
    memset(&g, 0, sizeof g);
    assert_rc(immu_dual_proof_gen(t, &src, &h[dv->s - 1], &h[3], &g), 0);
    check_header_eq(&g.source, &h[dv->s - 1]);
    check_header_eq(&g.target, &h[3]);
    check_list(g.inclusion.d, g.inclusion.n, dv->incl, dv->nincl);
    check_list(g.consistency.d, g.consistency.n, dv->cons, dv->ncons);
    check_digest(&g.target_bl_tx_alh, dv->bl_alh);
    check_list(g.last_inclusion.d, g.last_inclusion.n, dv->last, dv->nlast);
    assert_int_equal(g.linear.source_tx_id, dv->lin_s);
    assert_int_equal(g.linear.target_tx_id, dv->lin_t);
    check_list(g.linear.terms.d, g.linear.terms.n, dv->lin, dv->nlin);
    assert_int_equal(g.has_lap, 0);
    assert_rc(immu_dual_proof_verify(&g, dv->s, 4, &alh_s, &alh_t), 0);
    immu_dual_proof_free(&g);
  }

  /* Source newer than target. */
  immu_dual_proof g;
  memset(&g, 0, sizeof g);
  assert_rc(immu_dual_proof_gen(t, &src, &h[3], &h[1], &g), IMMU_EINVAL);

  /* Linear proof 1 -> 4 on its own. */
  immu_linear_proof lp;
  memset(&lp, 0, sizeof lp);
  assert_rc(immu_linear_proof_gen(&src, 1, 4, &lp), 0);
  assert_int_equal(lp.source_tx_id, 1);
  assert_int_equal(lp.target_tx_id, 4);
  assert_int_equal(lp.terms.n, 4);
  check_digest(&lp.terms.d[0], LEG_ALH[1]);
  for (int k = 1; k <= 3; k++) {
    check_digest(&lp.terms.d[k], LEG_INNER[k + 1]);
  }
  immu_digest a1 = D(LEG_ALH[1]);
  assert_rc(immu_linear_proof_verify(&lp, 1, 4, &a1, &alh_t), 0);
  assert_rc(immu_linear_proof_verify(&lp, 1, 3, &a1, &alh_t), IMMU_EVERIFY);
  immu_linear_proof_free(&lp);

  immu_ahtree_free(t);
}

/* ------------------------------------------------------------------ */
/* 10.6 systemdb tx 2                                                   */
/* ------------------------------------------------------------------ */

static void test_systemdb_tx2(void **state) {
  (void)state;
  immu_ahtree *t = NULL;
  immu_digest alh1 = D(LEG_ALH[1]), blroot, d;
  uint8_t key[16];
  size_t klen;

  /* BlRoot = Root(1) over systemdb's tx-1 Alh. */
  assert_rc(immu_ahtree_new_mem(&t), 0);
  assert_rc(immu_ahtree_append(t, alh1.b, 32, &blroot), 0);
  immu_ahtree_free(t);
  immu_ahtree_leaf(&alh1, &d);
  check_digest_eq(&blroot, &d);

  klen = unhex("0001696d6d756462", key, sizeof key);
  d = entry_digest(
      0, key, klen,
      "a09d67c7303b984dedcfe9872985378bff50f74caa09bd0392d537d96c228bc2");
  check_single_entry_eh(&d,
                        "58d29aac7b5463dcb3cbcd052747c1fdfac657f02f176e5b7ada1580"
                        "eb85bec4");

  immu_tx_header h =
      mkhdr(2, 1637858806, 1, ZERO_HEX, LEG_ALH[1], 0, 1,
            "58d29aac7b5463dcb3cbcd052747c1fdfac657f02f176e5b7ada1580eb85bec4");
  h.bl_root = blroot;
  check_inner_alh(
      &h, "6f44aad2e44fa4977e6d9918d500353cc97b0c28da01c791384e21030fff4874",
      "b5b220a24191599c73bab6d379f060d0e2ff2856df2ad4c0f7c2341c526da402");
}

/* ------------------------------------------------------------------ */
/* 10.7 Header-version-1 transactions with lagging BlTxID              */
/* ------------------------------------------------------------------ */

typedef struct v1_tx {
  uint64_t id;
  uint64_t bl;
  const char *key;
  const char *hval;
  const char *prev;
  const char *blroot;
  const char *eh;
  const char *inner;
  const char *alh;
} v1_tx;

static const v1_tx V1_TXS[6] = {
    {1, 0, "step1:key:0",
     "d8ec21b9ec5e1bce9be7f349c5939e22129a8f1e81e7f5f04fab1cc7a5900f97",
     "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
     "0000000000000000000000000000000000000000000000000000000000000000",
     "de34d5e558a7d0bf41d405c8111db702d150da0b3ed8ec8babc2e5f2badd5104",
     "ac7fea4fe0a33927fccc1c3ec7adc6d7e7f5a8819cd5bb9c55091b8cd485dd52",
     "6751748dfa036549bb30769e5858cfcd9277ba920e5785792850d67c19c169b1"},
    {2, 1, "step1:key:1",
     "ac73d0a37880347f29c7e6768425b8a3c8ff9ee98aaf23bf5d7d5f4ac0be6633",
     "6751748dfa036549bb30769e5858cfcd9277ba920e5785792850d67c19c169b1",
     "a0b0834b2c3c893fa5cf9961f4e628e243b28fa09e9bd802f4bb0b225ed0d4f0",
     "6d9a67100a068ac5290658071f2826106c2781616628d0da8255cb6d3d9cf877",
     "d8ee09a088161a4e3717cc4218fa8c15f7245aa55e957e0292ae76e9917126b9",
     "dad3c18d869b263495451dc8c1eb96e34a397f4072c02c6daaa2be5f9c7e688b"},
    {11, 10, "step2:key:0",
     "d8ec21b9ec5e1bce9be7f349c5939e22129a8f1e81e7f5f04fab1cc7a5900f97",
     "5a8149a5aed722e5c111999a989c6ea5b5e96c66d756c9795000828eb20c4a27",
     "e367bad7d9848fe0af4214d78ffee5e64d64086007ace8c2f288e83de15a9575",
     "4396c14327218ae8e20e4ca7af581584d8af73519333dcd7f1c721c7dfbbfef8",
     "2f3fb6ff2d1627c8d5935fa1d32a6ca7dbdaeda878a084c7baf7d078d24290a5",
     "5b71fbc04f756b0101d52893ac146fc536ae6f10abf4d15f84d1eec70142c2cf"},
    {12, 10, "step2:key:1",
     "ac73d0a37880347f29c7e6768425b8a3c8ff9ee98aaf23bf5d7d5f4ac0be6633",
     "5b71fbc04f756b0101d52893ac146fc536ae6f10abf4d15f84d1eec70142c2cf",
     "e367bad7d9848fe0af4214d78ffee5e64d64086007ace8c2f288e83de15a9575",
     "7b91b63f2537cfbc3452b339be2bdeabbd1ee1d20e6c940bfa51876fdb5eecbd",
     "5ae3ff0187ec5408fb974b7df7a4e3f4f8fb37811d4458be7ab5f647a16be111",
     "29025061a6bb5ba2a5efa96f7168ad9a96469167787be92957fa167e3fe23596"},
    {20, 10, "step2:key:9",
     "4969fd854851f1afe823e54343457303f03d6bd9e6484d5b0714afe200b588e4",
     "37a87c34c2f50bd00b72524e9dce831db8d5ccc28ba15c8bbea13f0ee52a94ac",
     "e367bad7d9848fe0af4214d78ffee5e64d64086007ace8c2f288e83de15a9575",
     "ff7377def0cc52a43b5f78a4a597f6a1f3397ff4e0a77201f893dc220ec19ecb",
     "7f2d1cf750746d59f718f8a9c872dd956ea63db20ada66eab9011c49d9636aad",
     "89d997905b008646b775c2a0fb645f56a271b7cec036431288e9e6c49e915aca"},
    {21, 20, "step3:key:0",
     "d8ec21b9ec5e1bce9be7f349c5939e22129a8f1e81e7f5f04fab1cc7a5900f97",
     "89d997905b008646b775c2a0fb645f56a271b7cec036431288e9e6c49e915aca",
     "f345ca9da16f75267910345399f70cd60e40c15fcf08402758dc1fe483794bff",
     "60ec95ffeacce8dd8be58960e1ea016c9bdcdbc9ff5f3db64cacdf1de8aac0fe",
     "48da240b06d92163d75ce956054d8a5e7fd45bf6d9bb20cc7812f420d235554c",
     "7566033a9842713d49367a867e468082374ebb4a411c451e5bda06d575364bb6"},
};

static immu_tx_header v1_header(const v1_tx *v) {
  return mkhdr(v->id, 1666885208, v->bl, v->blroot, v->prev, 1, 1, v->eh);
}

static void test_v1_txs(void **state) {
  (void)state;
  uint8_t buf[128];
  size_t n;
  immu_digest d;

  /* Byte-level check of tx 1's v1 entry digest. */
  n = unhex("0000000b73746570313a6b65793a30d8ec21b9ec5e1bce9be7f349c5939e22129"
            "a8f1e81e7f5f04fab1cc7a5900f97",
            buf, sizeof buf);
  immu_sha256(buf, n, &d);
  check_digest(&d,
               "e315aa323becd58aa1282a491f11c51b869fbe978cfda23df39c8712eddb06b0");
  d = entry_digest(1, (const uint8_t *)"step1:key:0", 11, V1_TXS[0].hval);
  check_digest(&d,
               "e315aa323becd58aa1282a491f11c51b869fbe978cfda23df39c8712eddb06b0");

  /* Byte-level check of tx 1's v1 innerHash input (88 bytes). */
  n = unhex("00000000635aa6580001000000000001de34d5e558a7d0bf41d405c8111db702"
            "d150da0b3ed8ec8babc2e5f2badd510400000000000000000000000000000000"
            "000000000000000000000000000000000000000000000000",
            buf, sizeof buf);
  assert_int_equal(n, 88);
  immu_sha256(buf, n, &d);
  check_digest(&d, V1_TXS[0].inner);

  for (size_t i = 0; i < 6; i++) {
    const v1_tx *v = &V1_TXS[i];
    immu_tx_header h = v1_header(v);
    /* One entry each: Eh is the leaf hash of its v1 digest. */
    d = entry_digest(1, (const uint8_t *)v->key, strlen(v->key), v->hval);
    check_single_entry_eh(&d, v->eh);
    check_inner_alh(&h, v->inner, v->alh);
  }
  /* PrevAlh chain where consecutive txs are given. */
  assert_string_equal(V1_TXS[1].prev, V1_TXS[0].alh);
  assert_string_equal(V1_TXS[3].prev, V1_TXS[2].alh);
  assert_string_equal(V1_TXS[5].prev, V1_TXS[4].alh);
}

static const char *const D1221_INCL[5] = {
    "c318219812ea1f4daaf677c7aeb084eb21c4037484fe125467698bafa429a6fb",
    "ffd4bbad7fbc5a692d2cb05005b597571299afc6ab13bd910bd72c879e1f9787",
    "9de680048fe07b2ddf928ff674b916051b69dd46a2f7b479f9eec300fa9ad296",
    "47e0769e53636797d0156f9abc6b3ea6343fc6194715a56997d0e08bfc422a04",
    "706481ec06c9f1a1a53d2877f5ee520fdbfb19aa4444226adc6ad614de81d284",
};
static const char *const D1221_CONS[5] = {
    "ffd4bbad7fbc5a692d2cb05005b597571299afc6ab13bd910bd72c879e1f9787",
    "31c127d339ceea36765f83f5f139c2fa50bb63fbcdf5d5a0c8feff39e326770b",
    "9de680048fe07b2ddf928ff674b916051b69dd46a2f7b479f9eec300fa9ad296",
    "47e0769e53636797d0156f9abc6b3ea6343fc6194715a56997d0e08bfc422a04",
    "706481ec06c9f1a1a53d2877f5ee520fdbfb19aa4444226adc6ad614de81d284",
};
static const char *const D1221_LAST[3] = {
    "f8826de23a59b7d71ded09fdf172e4601057c835556172f5c9f745539e42bf13",
    "7487199ee1f5a64e63a8db1020674b08fe2e5f81bc7fdb47590ab689d01a6533",
    "a9cf8a1b2980f401967b1c2d8fff88b05ea4442f3f2af3d3d491cf75b1fca9de",
};
static const char *const D1221_LIN[2] = {
    "89d997905b008646b775c2a0fb645f56a271b7cec036431288e9e6c49e915aca",
    "48da240b06d92163d75ce956054d8a5e7fd45bf6d9bb20cc7812f420d235554c",
};
static const char *const D1221_LAPLIN[2] = {
    "5b71fbc04f756b0101d52893ac146fc536ae6f10abf4d15f84d1eec70142c2cf",
    "5ae3ff0187ec5408fb974b7df7a4e3f4f8fb37811d4458be7ab5f647a16be111",
};
static const char *const D1221_LAPINC[5] = {
    "f07e430224adeb4600e10eb0c5cb40c9dbafd8e735cee0fd25cc66a8ac44f16d",
    "ffd4bbad7fbc5a692d2cb05005b597571299afc6ab13bd910bd72c879e1f9787",
    "9de680048fe07b2ddf928ff674b916051b69dd46a2f7b479f9eec300fa9ad296",
    "47e0769e53636797d0156f9abc6b3ea6343fc6194715a56997d0e08bfc422a04",
    "706481ec06c9f1a1a53d2877f5ee520fdbfb19aa4444226adc6ad614de81d284",
};

static void test_v1_dual_proof_with_lap(void **state) {
  (void)state;
  immu_digest incl[5], cons[5], last[3], lin[2], laplin[2], lapinc[5];
  immu_digest_list lapinc_list;
  immu_dual_proof p;
  fill_list(incl, D1221_INCL, 5);
  fill_list(cons, D1221_CONS, 5);
  fill_list(last, D1221_LAST, 3);
  fill_list(lin, D1221_LIN, 2);
  fill_list(laplin, D1221_LAPLIN, 2);
  fill_list(lapinc, D1221_LAPINC, 5);
  lapinc_list.d = lapinc;
  lapinc_list.n = 5;

  memset(&p, 0, sizeof p);
  p.source = v1_header(&V1_TXS[3]); /* tx 12, BlTxID 10 */
  p.target = v1_header(&V1_TXS[5]); /* tx 21, BlTxID 20 */
  p.inclusion.d = incl;
  p.inclusion.n = 5;
  p.consistency.d = cons;
  p.consistency.n = 5;
  p.target_bl_tx_alh = D(V1_TXS[4].alh); /* Alh(20) */
  p.last_inclusion.d = last;
  p.last_inclusion.n = 3;
  p.linear.source_tx_id = 20;
  p.linear.target_tx_id = 21;
  p.linear.terms.d = lin;
  p.linear.terms.n = 2;
  p.has_lap = 1;
  p.lap.linear_terms.d = laplin;
  p.lap.linear_terms.n = 2;
  p.lap.ninclusion = 1;
  p.lap.inclusion = &lapinc_list;

  immu_digest s_alh = D(V1_TXS[3].alh), t_alh = D(V1_TXS[5].alh);
  assert_rc(immu_dual_proof_verify(&p, 12, 21, &s_alh, &t_alh), 0);

  /* The LAP on its own: LAP(S.BlTxID = 10, 12, Alh(12), T.BlRoot, 20). */
  immu_digest troot = D(V1_TXS[5].blroot);
  assert_rc(immu_linear_advance_proof_verify(&p.lap, 10, 12, &s_alh, &troot,
                                             20),
            0);
  assert_rc(immu_linear_advance_proof_verify(NULL, 10, 12, &s_alh, &troot, 20),
            IMMU_EVERIFY);
  assert_rc(immu_linear_advance_proof_verify(NULL, 10, 11, &s_alh, &troot, 20),
            0);
  assert_rc(immu_linear_advance_proof_verify(NULL, 10, 10, &s_alh, &troot, 20),
            0);
  assert_rc(immu_linear_advance_proof_verify(NULL, 10, 9, &s_alh, &troot, 20),
            IMMU_EVERIFY);

  /* Tampering the LAP makes the dual proof fail. */
  for (size_t k = 0; k < 2; k++) {
    laplin[k].b[7] ^= 0x01;
    assert_rc(immu_dual_proof_verify(&p, 12, 21, &s_alh, &t_alh),
              IMMU_EVERIFY);
    laplin[k].b[7] ^= 0x01;
  }
  for (size_t k = 0; k < 5; k++) {
    lapinc[k].b[31] ^= 0x80;
    assert_rc(immu_dual_proof_verify(&p, 12, 21, &s_alh, &t_alh),
              IMMU_EVERIFY);
    lapinc[k].b[31] ^= 0x80;
  }
  lapinc_list.n = 4; /* a term dropped from the inclusion proof */
  assert_rc(immu_dual_proof_verify(&p, 12, 21, &s_alh, &t_alh), IMMU_EVERIFY);
  lapinc_list.n = 5;
  p.lap.ninclusion = 0; /* the inclusion proof dropped */
  assert_rc(immu_dual_proof_verify(&p, 12, 21, &s_alh, &t_alh), IMMU_EVERIFY);
  p.lap.ninclusion = 1;
  p.lap.linear_terms.n = 1; /* a linear term dropped */
  assert_rc(immu_dual_proof_verify(&p, 12, 21, &s_alh, &t_alh), IMMU_EVERIFY);
  p.lap.linear_terms.n = 2;
  p.has_lap = 0; /* the LAP is needed here: absent is rejected */
  assert_rc(immu_dual_proof_verify(&p, 12, 21, &s_alh, &t_alh), IMMU_EVERIFY);
  p.has_lap = 1;
  assert_rc(immu_dual_proof_verify(&p, 12, 21, &s_alh, &t_alh), 0);

  /* The other proof parts. */
  incl[2].b[0] ^= 1;
  assert_rc(immu_dual_proof_verify(&p, 12, 21, &s_alh, &t_alh), IMMU_EVERIFY);
  incl[2].b[0] ^= 1;
  cons[1].b[0] ^= 1;
  assert_rc(immu_dual_proof_verify(&p, 12, 21, &s_alh, &t_alh), IMMU_EVERIFY);
  cons[1].b[0] ^= 1;
  last[0].b[0] ^= 1;
  assert_rc(immu_dual_proof_verify(&p, 12, 21, &s_alh, &t_alh), IMMU_EVERIFY);
  last[0].b[0] ^= 1;
  lin[1].b[0] ^= 1;
  assert_rc(immu_dual_proof_verify(&p, 12, 21, &s_alh, &t_alh), IMMU_EVERIFY);
  lin[1].b[0] ^= 1;
  p.target_bl_tx_alh.b[3] ^= 1;
  assert_rc(immu_dual_proof_verify(&p, 12, 21, &s_alh, &t_alh), IMMU_EVERIFY);
  p.target_bl_tx_alh.b[3] ^= 1;
  assert_rc(immu_dual_proof_verify(&p, 12, 21, &t_alh, &t_alh), IMMU_EVERIFY);
  assert_rc(immu_dual_proof_verify(&p, 11, 21, &s_alh, &t_alh), IMMU_EVERIFY);
  assert_rc(immu_dual_proof_verify(&p, 12, 21, &s_alh, &t_alh), 0);
}

/* ------------------------------------------------------------------ */
/* 10.8 State signature                                                */
/* ------------------------------------------------------------------ */

static const char PUBKEY_HEX[] =
    "046599c5945a116f0cdd2e2cb262459c3db17f099d814aaa3fd10ce9db026b302610cfa2"
    "872e7b5f6e481d11f8c57effda00b32bbce83ba5e118a9fb27a03aa999";
static const char PRIV_HEX[] =
    "fda9818a3d7315cf88dc7b253e3989871aa1ef27fe975e97ec8b4ace5d3c39d8";
static const char SIG_HEX[] =
    "304502203fb6648c9d2e76cb2d35023f9c6b4672be14dd631b11a89e28295dee01b2b2e40"
    "221009b97105c446de0870db2e735ed7ddad1402e45a904577718ead1e563a33ad1f4";

/* Builds a P-256 key from the uncompressed point (and the scalar, if given)
 * and returns it as PEM text: PKIX "PUBLIC KEY" when |priv| is NULL, else
 * SEC1 "EC PRIVATE KEY" (|pkcs8| = 0) or PKCS#8 "PRIVATE KEY". Caller frees
 * the string. */
static char *make_pem(const uint8_t *pub, size_t publen, const uint8_t *priv,
                      int pkcs8) {
  OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
  OSSL_PARAM *params = NULL;
  EVP_PKEY_CTX *ctx = NULL;
  EVP_PKEY *pkey = NULL;
  BIGNUM *bn = NULL;
  BIO *bio = NULL;
  char *out = NULL;
  char *mem = NULL;
  long memlen;

  assert_non_null(bld);
  assert_int_equal(OSSL_PARAM_BLD_push_utf8_string(
                       bld, OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1", 0),
                   1);
  assert_int_equal(OSSL_PARAM_BLD_push_octet_string(
                       bld, OSSL_PKEY_PARAM_PUB_KEY, pub, publen),
                   1);
  if (priv != NULL) {
    bn = BN_bin2bn(priv, 32, NULL);
    assert_non_null(bn);
    assert_int_equal(
        OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_PRIV_KEY, bn), 1);
  }
  params = OSSL_PARAM_BLD_to_param(bld);
  assert_non_null(params);
  ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
  assert_non_null(ctx);
  assert_int_equal(EVP_PKEY_fromdata_init(ctx), 1);
  assert_int_equal(EVP_PKEY_fromdata(ctx, &pkey,
                                     priv != NULL ? EVP_PKEY_KEYPAIR
                                                  : EVP_PKEY_PUBLIC_KEY,
                                     params),
                   1);
  bio = BIO_new(BIO_s_mem());
  assert_non_null(bio);
  if (priv == NULL) {
    assert_int_equal(PEM_write_bio_PUBKEY(bio, pkey), 1);
  } else if (pkcs8) {
    assert_int_equal(
        PEM_write_bio_PrivateKey(bio, pkey, NULL, NULL, 0, NULL, NULL), 1);
  } else {
    assert_int_equal(PEM_write_bio_PrivateKey_traditional(bio, pkey, NULL,
                                                          NULL, 0, NULL, NULL),
                     1);
  }
  memlen = BIO_get_mem_data(bio, &mem);
  assert_true(memlen > 0);
  out = calloc((size_t)memlen + 1, 1);
  assert_non_null(out);
  memcpy(out, mem, (size_t)memlen);

  BIO_free(bio);
  EVP_PKEY_free(pkey);
  EVP_PKEY_CTX_free(ctx);
  OSSL_PARAM_free(params);
  BN_free(bn);
  OSSL_PARAM_BLD_free(bld);
  return out;
}

static void test_state_bytes(void **state) {
  (void)state;
  uint8_t buf[512];
  size_t len = 0;
  immu_digest alh4 = D(LEG_ALH[4]), d;

  assert_rc(immu_state_bytes("defaultdb", 9, 4, &alh4, buf, sizeof buf, &len),
            0);
  check_bytes(buf, len,
              "0000000964656661756c7464620000000000000004e65e5586a514cdf0a0a815"
              "d2a9eab5bff09b9a2078be732017120b7ba5a645fd");
  immu_sha256(buf, len, &d);
  check_digest(&d,
               "bca4e86410cc189b25ead837048c7fb8a2a6720f0faa4bc6eb408ad73bfd6c39");

  /* Exactly 44 + dblen bytes fit; one less does not. */
  assert_rc(immu_state_bytes("defaultdb", 9, 4, &alh4, buf, 53, &len), 0);
  assert_int_equal(len, 53);
  assert_rc(immu_state_bytes("defaultdb", 9, 4, &alh4, buf, 52, &len),
            IMMU_ETOOLARGE);

  /* Empty database. */
  assert_rc(immu_state_bytes("defaultdb", 9, 0, &immu_empty_digest, buf,
                             sizeof buf, &len),
            0);
  check_bytes(buf, len,
              "0000000964656661756c7464620000000000000000e3b0c44298fc1c149afbf4c8"
              "996fb92427ae41e4649b934ca495991b7852b855");

  /* Database name limits. */
  char name[IMMU_DB_NAME_MAX + 2];
  memset(name, 'a', sizeof name);
  assert_rc(immu_state_bytes(name, IMMU_DB_NAME_MAX, 1, &alh4, buf,
                             sizeof buf, &len),
            0);
  assert_int_equal(len, 44 + IMMU_DB_NAME_MAX);
  assert_rc(immu_state_bytes(name, IMMU_DB_NAME_MAX + 1, 1, &alh4, buf,
                             sizeof buf, &len),
            IMMU_EINVAL);
  assert_rc(immu_state_bytes("", 0, 1, &alh4, buf, sizeof buf, &len), 0);
  assert_int_equal(len, 44);
}

static void test_state_signature(void **state) {
  (void)state;
  uint8_t pub[IMMU_PUBKEY_LEN], priv[32], sig[IMMU_SIG_MAX + 8];
  uint8_t got_sig[IMMU_SIG_MAX], got_pub[IMMU_PUBKEY_LEN];
  size_t siglen, got_siglen = 0;
  immu_digest alh4 = D(LEG_ALH[4]);
  immu_verifier *v = NULL;
  immu_signer *s = NULL;

  assert_int_equal(unhex(PUBKEY_HEX, pub, sizeof pub), IMMU_PUBKEY_LEN);
  assert_int_equal(unhex(PRIV_HEX, priv, sizeof priv), 32);
  siglen = unhex(SIG_HEX, sig, sizeof sig);

  /* Verify the vector signature with the PKIX public key. */
  char *pub_pem = make_pem(pub, sizeof pub, NULL, 0);
  assert_non_null(strstr(pub_pem, "-----BEGIN PUBLIC KEY-----"));
  assert_rc(immu_verifier_from_pem(pub_pem, strlen(pub_pem), &v), 0);
  assert_rc(immu_verifier_verify_state(v, "defaultdb", 9, 4, &alh4, sig,
                                       siglen),
            0);
  /* A flipped signature byte, another state, another db: rejected. */
  for (size_t k = 0; k < siglen; k += 7) {
    sig[k] ^= 0x01;
    assert_rc(immu_verifier_verify_state(v, "defaultdb", 9, 4, &alh4, sig,
                                         siglen),
              IMMU_EVERIFY);
    sig[k] ^= 0x01;
  }
  assert_rc(immu_verifier_verify_state(v, "defaultdb", 9, 5, &alh4, sig,
                                       siglen),
            IMMU_EVERIFY);
  assert_rc(immu_verifier_verify_state(v, "defaultdc", 9, 4, &alh4, sig,
                                       siglen),
            IMMU_EVERIFY);
  assert_rc(immu_verifier_verify_state(v, "defaultdb", 9, 4,
                                       &immu_empty_digest, sig, siglen),
            IMMU_EVERIFY);
  assert_rc(immu_verifier_verify_state(v, "defaultdb", 9, 4, &alh4, sig,
                                       siglen - 1),
            IMMU_EVERIFY);
  assert_rc(immu_verifier_verify_state(v, "defaultdb", 9, 4, &alh4, sig, 0),
            IMMU_EVERIFY);

  /* Sign + verify round trip with the SEC1 and the PKCS#8 private key. */
  for (int pkcs8 = 0; pkcs8 <= 1; pkcs8++) {
    char *priv_pem = make_pem(pub, sizeof pub, priv, pkcs8);
    assert_non_null(strstr(priv_pem, pkcs8 ? "-----BEGIN PRIVATE KEY-----"
                                           : "-----BEGIN EC PRIVATE KEY-----"));
    assert_rc(immu_signer_from_pem(priv_pem, strlen(priv_pem), &s), 0);
    memset(got_pub, 0, sizeof got_pub);
    assert_rc(immu_signer_sign_state(s, "defaultdb", 9, 4, &alh4, got_sig,
                                     &got_siglen, got_pub),
              0);
    assert_true(got_siglen >= 8 && got_siglen <= IMMU_SIG_MAX);
    assert_int_equal(got_sig[0], 0x30); /* DER SEQUENCE */
    assert_memory_equal(got_pub, pub, IMMU_PUBKEY_LEN);
    assert_rc(immu_verifier_verify_state(v, "defaultdb", 9, 4, &alh4, got_sig,
                                         got_siglen),
              0);
    assert_rc(immu_verifier_verify_state(v, "defaultdb", 9, 3, &alh4, got_sig,
                                         got_siglen),
              IMMU_EVERIFY);
    /* Empty-database state signs too. */
    assert_rc(immu_signer_sign_state(s, "defaultdb", 9, 0, &immu_empty_digest,
                                     got_sig, &got_siglen, got_pub),
              0);
    assert_rc(immu_verifier_verify_state(v, "defaultdb", 9, 0,
                                         &immu_empty_digest, got_sig,
                                         got_siglen),
              0);
    immu_signer_free(s);
    s = NULL;
    /* A private key is not a public key and vice versa. */
    immu_verifier *vp = NULL;
    assert_rc(immu_verifier_from_pem(priv_pem, strlen(priv_pem), &vp),
              IMMU_EINVAL);
    immu_verifier_free(vp);
    free(priv_pem);
  }
  immu_signer *s2 = NULL;
  assert_rc(immu_signer_from_pem(pub_pem, strlen(pub_pem), &s2), IMMU_EINVAL);
  assert_rc(immu_signer_from_pem("garbage", 7, &s2), IMMU_EINVAL);
  immu_verifier *v2 = NULL;
  assert_rc(immu_verifier_from_pem("garbage", 7, &v2), IMMU_EINVAL);

  immu_verifier_free(v);
  immu_signer_free(NULL);
  immu_verifier_free(NULL);
  free(pub_pem);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_primitives),
      cmocka_unit_test(test_kv_encodings),
      cmocka_unit_test(test_kv_metadata_digests),
      cmocka_unit_test(test_htree_vectors),
      cmocka_unit_test(test_ahtree_vectors),
      cmocka_unit_test(test_legacy_tx1),
      cmocka_unit_test(test_legacy_tx2_tx3_tx4),
      cmocka_unit_test(test_legacy_dual_proofs),
      cmocka_unit_test(test_systemdb_tx2),
      cmocka_unit_test(test_v1_txs),
      cmocka_unit_test(test_v1_dual_proof_with_lap),
      cmocka_unit_test(test_state_bytes),
      cmocka_unit_test(test_state_signature),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
