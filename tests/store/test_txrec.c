/* SPDX-License-Identifier: Apache-2.0 */
/* Tests of the tx record frame (src/store/txrec.c): round trips, hash
 * checks, single-byte corruption, truncation and limits. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/endian.h"
#include "core/mem.h"
#include "store/crc32c.h"
#include "store/txrec.h"

/* A tx under construction: inputs, header, and the sealed frame. */
typedef struct txb {
  immu_tx_header h;
  immu_digest alh;
  immu_txrec_in *in;
  size_t n;
  uint8_t *arena; /* keys, values and kv metadata */
  uint8_t *frame;
  size_t len;
} txb;

typedef struct shape {
  unsigned version;
  size_t n;
  size_t vmax;    /* values are 0..vmax-1 bytes long */
  int kvmd;       /* version 1: kv metadata on some entries */
  size_t tx_md;   /* version 1: bytes of tx metadata */
  uint64_t bl_tx; /* 0 = nothing linked */
} shape;

static void txb_free(txb *t) {
  free(t->in);
  free(t->arena);
  free(t->frame);
  memset(t, 0, sizeof *t);
}

/* Builds, encodes and seals a tx of the given shape. */
static void txb_build(txb *t, const shape *sh) {
  memset(t, 0, sizeof *t);
  t->n = sh->n;
  t->in = calloc(sh->n ? sh->n : 1, sizeof *t->in);
  size_t per = 16 + sh->vmax + IMMU_KV_MD_MAX;
  t->arena = malloc(sh->n * per + 1);
  immu_digest *d = calloc(sh->n ? sh->n : 1, sizeof *d);
  assert_non_null(t->in);
  assert_non_null(t->arena);
  assert_non_null(d);

  uint8_t *p = t->arena;
  for (size_t i = 0; i < sh->n; i++) {
    immu_txrec_in *e = &t->in[i];
    e->key = p;
    p[0] = 0x00;
    e->klen = 1 + (size_t)snprintf((char *)p + 1, 15, "k%zu", i);
    p += e->klen;
    e->vlen = sh->vmax ? (i * 7 + 3) % sh->vmax : 0;
    if (sh->n == 1 && sh->vmax)
      e->vlen = sh->vmax - 1;
    e->value = e->vlen ? p : NULL;
    for (size_t k = 0; k < e->vlen; k++)
      p[k] = (uint8_t)(i + k * 31);
    p += e->vlen;
    if (sh->version == 1 && sh->kvmd && i % 2 == 0) {
      e->mdlen = 1 + i % IMMU_KV_MD_MAX;
      e->md = p;
      memset(p, 0x5a ^ (int)i, e->mdlen);
      p += e->mdlen;
    }
    immu_sha256(e->value, e->vlen, &e->hval);
    assert_int_equal(immu_entry_digest(sh->version, e->key, e->klen, e->md,
                                       e->mdlen, &e->hval, &d[i]),
                     0);
  }

  immu_tx_header *h = &t->h;
  h->id = sh->bl_tx + 1 + 41;
  h->ts = 1700000000 + (int64_t)sh->n;
  h->bl_tx_id = sh->bl_tx;
  if (sh->bl_tx)
    memset(h->bl_root.b, 0xb1, 32);
  memset(h->prev_alh.b, 0xa7, 32);
  h->version = sh->version;
  h->nentries = (uint32_t)sh->n;
  h->md_len = (uint32_t)sh->tx_md;
  for (size_t i = 0; i < sh->tx_md; i++)
    h->md[i] = (uint8_t)(0xc0 + i);
  assert_int_equal(immu_htree_root(d, sh->n, &h->eh), 0);
  assert_int_equal(immu_tx_alh(h, &t->alh), 0);
  free(d);

  t->len = immu__txrec_size(t->in, t->n, h->md_len);
  assert_true(t->len > 0);
  t->frame = malloc(t->len);
  assert_non_null(t->frame);
  assert_int_equal(immu__txrec_encode(h, t->in, t->n, t->frame, t->len), 0);
  immu__txrec_seal(t->frame, h, &t->alh);
}

/* Recomputes both CRCs of |f| after an edit, if its lengths allow. */
static void fix_crcs(uint8_t *f, size_t len) {
  if (len < IMMU_TXREC_FRAME + IMMU_TXREC_HEAD_FIXED)
    return;
  size_t head = IMMU_TXREC_HEAD_FIXED + immu__get_u16(f + 16 + 123);
  if (IMMU_TXREC_FRAME + head > len)
    return;
  uint32_t c = immu__crc32c(0, f + 4, 4);
  immu__put_u32(f + 8, immu__crc32c(c, f + 16, head));
  immu__put_u32(f + 12, immu__crc32c(0, f + 16 + head, len - 16 - head));
}

static void check_decoded(const txb *t, const immu_txrec *r) {
  assert_int_equal(r->hdr.id, t->h.id);
  assert_int_equal(r->hdr.ts, t->h.ts);
  assert_int_equal(r->hdr.bl_tx_id, t->h.bl_tx_id);
  assert_memory_equal(r->hdr.bl_root.b, t->h.bl_root.b, 32);
  assert_memory_equal(r->hdr.prev_alh.b, t->h.prev_alh.b, 32);
  assert_int_equal(r->hdr.version, t->h.version);
  assert_int_equal(r->hdr.nentries, t->h.nentries);
  assert_memory_equal(r->hdr.eh.b, t->h.eh.b, 32);
  assert_int_equal(r->hdr.md_len, t->h.md_len);
  if (t->h.md_len)
    assert_memory_equal(r->hdr.md, t->h.md, t->h.md_len);
  assert_memory_equal(r->alh.b, t->alh.b, 32);
  for (size_t i = 0; i < t->n; i++) {
    const immu_txrec_entry *x = &r->entries[i];
    const immu_txrec_in *e = &t->in[i];
    assert_int_equal(x->klen, e->klen);
    assert_memory_equal(x->key, e->key, e->klen);
    assert_int_equal(x->mdlen, e->mdlen);
    if (e->mdlen)
      assert_memory_equal(x->md, e->md, e->mdlen);
    assert_int_equal(x->vlen, e->vlen);
    if (e->vlen)
      assert_memory_equal(x->value, e->value, e->vlen);
    assert_ptr_equal(x->value, t->frame + x->value_off);
    assert_memory_equal(x->hval.b, e->hval.b, 32);
  }
}

static void round_trip(const shape *sh) {
  txb t;
  immu_txrec r;
  txb_build(&t, sh);
  uint64_t hashes = immu_hash_count();
  assert_int_equal(immu__txrec_decode(t.frame, t.len, &r), 0);
  /* Decoding hashes nothing: that is check_hashes' job. */
  assert_int_equal(immu_hash_count(), hashes);
  check_decoded(&t, &r);
  assert_int_equal(immu__txrec_check_hashes(&r), 0);

  size_t fl = 0;
  assert_int_equal(immu__txrec_frame_len(t.frame, 16, UINT32_MAX, &fl), 0);
  assert_int_equal(fl, t.len);

  /* A flipped value byte passes decode once the CRC is fixed, and fails
   * check_hashes. */
  size_t i = 0;
  while (i < t.n && t.in[i].vlen == 0)
    i++;
  if (i < t.n) {
    uint32_t off = r.entries[i].value_off;
    immu__txrec_free(&r);
    t.frame[off] ^= 0x01;
    assert_int_equal(immu__txrec_decode(t.frame, t.len, &r), IMMU_ECORRUPT);
    fix_crcs(t.frame, t.len);
    assert_int_equal(immu__txrec_decode(t.frame, t.len, &r), 0);
    assert_int_equal(immu__txrec_check_hashes(&r), IMMU_ECORRUPT);
  }
  immu__txrec_free(&r);
  immu__txrec_free(&r); /* idempotent */
  txb_free(&t);
}

static void test_round_trip_v1(void **state) {
  (void)state;
  round_trip(&(shape){.version = 1, .n = 1, .vmax = 40});
  round_trip(&(shape){.version = 1, .n = 2, .vmax = 40, .kvmd = 1});
  round_trip(&(shape){.version = 1, .n = 2, .vmax = 0, .tx_md = 3});
  round_trip(&(shape){.version = 1,
                      .n = 1000,
                      .vmax = 100,
                      .kvmd = 1,
                      .tx_md = 270,
                      .bl_tx = 77});
  round_trip(&(shape){.version = 1, .n = 3, .vmax = 5, .tx_md = 1, .bl_tx = 1});
}

static void test_round_trip_v0(void **state) {
  (void)state;
  round_trip(&(shape){.version = 0, .n = 1, .vmax = 40});
  round_trip(&(shape){.version = 0, .n = 2, .vmax = 40, .bl_tx = 5});
  round_trip(&(shape){.version = 0, .n = 1000, .vmax = 300, .bl_tx = 999});
}

/* More entries than version 0 allows. */
static void test_many_entries_v1(void **state) {
  (void)state;
  round_trip(&(shape){.version = 1, .n = 70000, .vmax = 3});
}

/* Every single-byte change of a ~300-byte frame is rejected by decode or
 * by check_hashes, with the CRCs left alone and with them recomputed. */
static void test_every_byte_flip(void **state) {
  (void)state;
  txb t;
  txb_build(
      &t,
      &(shape){
          .version = 1, .n = 1, .vmax = 70, .kvmd = 1, .tx_md = 5, .bl_tx = 3});
  assert_in_range(t.len, 250, 350);
  static const uint8_t masks[] = {0x01, 0x10, 0x80, 0xff};
  uint8_t *f = malloc(t.len);
  assert_non_null(f);
  for (int fix = 0; fix < 2; fix++) {
    for (size_t i = fix ? IMMU_TXREC_FRAME : 0; i < t.len; i++) {
      for (size_t m = 0; m < sizeof masks; m++) {
        immu_txrec r;
        memcpy(f, t.frame, t.len);
        f[i] ^= masks[m];
        if (fix)
          fix_crcs(f, t.len);
        int rc = immu__txrec_decode(f, t.len, &r);
        if (rc == 0) {
          assert_int_equal(fix, 1); /* the CRCs catch every flip */
          rc = immu__txrec_check_hashes(&r);
          immu__txrec_free(&r);
        }
        if (rc != IMMU_ECORRUPT)
          fail_msg("flip 0x%02x at byte %zu (crc fixed: %d) not rejected: %d",
                   masks[m], i, fix, rc);
      }
    }
  }
  free(f);
  txb_free(&t);
}

/* Every proper prefix, and any trailing byte, is rejected. */
static void test_truncation(void **state) {
  (void)state;
  txb t;
  txb_build(&t, &(shape){.version = 1, .n = 4, .vmax = 30, .kvmd = 1});
  for (size_t l = 0; l < t.len; l++) {
    immu_txrec r;
    uint8_t *f = malloc(l ? l : 1); /* exact size: ASan sees over-reads */
    assert_non_null(f);
    memcpy(f, t.frame, l);
    assert_int_equal(immu__txrec_decode(f, l, &r), IMMU_ECORRUPT);
    assert_null(r.entries);
    if (l >= IMMU_TXREC_FRAME) {
      size_t fl;
      assert_int_equal(immu__txrec_frame_len(f, l, UINT32_MAX, &fl), 0);
      assert_true(fl > l);
    } else {
      size_t fl;
      assert_int_equal(immu__txrec_frame_len(f, l, UINT32_MAX, &fl),
                       IMMU_ECORRUPT);
    }
    free(f);
  }
  uint8_t *g = malloc(t.len + 1);
  immu_txrec r;
  assert_non_null(g);
  memcpy(g, t.frame, t.len);
  g[t.len] = 0;
  assert_int_equal(immu__txrec_decode(g, t.len + 1, &r), IMMU_ECORRUPT);
  free(g);
  txb_free(&t);
}

static void test_frame_len(void **state) {
  (void)state;
  txb t;
  size_t fl;
  txb_build(&t, &(shape){.version = 1, .n = 1, .vmax = 10});
  uint32_t plen = (uint32_t)(t.len - IMMU_TXREC_FRAME);
  assert_int_equal(immu__txrec_frame_len(t.frame, t.len, plen, &fl), 0);
  assert_int_equal(fl, t.len);
  assert_int_equal(immu__txrec_frame_len(t.frame, t.len, plen - 1, &fl),
                   IMMU_ECORRUPT);
  assert_int_equal(immu__txrec_frame_len(NULL, 0, plen, &fl), IMMU_ECORRUPT);
  t.frame[0] ^= 1;
  assert_int_equal(immu__txrec_frame_len(t.frame, t.len, plen, &fl),
                   IMMU_ECORRUPT);
  t.frame[0] ^= 1;
  uint8_t tiny[16];
  memcpy(tiny, t.frame, 16);
  immu__put_u32(tiny + 4, IMMU_TXREC_HEAD_FIXED + 40);
  assert_int_equal(immu__txrec_frame_len(tiny, 16, UINT32_MAX, &fl),
                   IMMU_ECORRUPT);
  immu__put_u32(tiny + 4, IMMU_TXREC_HEAD_FIXED + 41);
  assert_int_equal(immu__txrec_frame_len(tiny, 16, UINT32_MAX, &fl), 0);
  immu__put_u32(tiny + 4, UINT32_MAX);
  assert_int_equal(immu__txrec_frame_len(tiny, 16, UINT32_MAX, &fl),
                   IMMU_ECORRUPT);
  txb_free(&t);
}

/* Encodes into a buffer of exactly the right size. */
static int encode_sized(const immu_tx_header *h, const immu_txrec_in *in,
                        size_t n) {
  size_t len = immu__txrec_size(in, n, h->md_len);
  assert_true(len > 0);
  uint8_t *buf = malloc(len);
  assert_non_null(buf);
  int rc = immu__txrec_encode(h, in, n, buf, len);
  free(buf);
  return rc;
}

static void test_encode_limits(void **state) {
  (void)state;
  txb t;
  txb_build(&t, &(shape){.version = 1, .n = 2, .vmax = 10});
  immu_tx_header h = t.h;
  uint8_t *buf = t.frame;
  size_t len = t.len;
  immu_txrec_in in[2];
  memcpy(in, t.in, sizeof in);

  assert_int_equal(immu__txrec_encode(&h, in, 2, buf, len), 0);
  assert_int_equal(immu__txrec_encode(&h, in, 2, buf, len - 1), IMMU_EINVAL);
  assert_int_equal(immu__txrec_encode(&h, in, 2, buf, len + 1), IMMU_EINVAL);
  assert_int_equal(immu__txrec_encode(NULL, in, 2, buf, len), IMMU_EINVAL);
  assert_int_equal(encode_sized(&h, in, 2), 0);
  h.nentries = 3; /* disagrees with n */
  assert_int_equal(encode_sized(&h, in, 2), IMMU_EINVAL);
  h.nentries = 1;
  assert_int_equal(encode_sized(&h, in, 2), IMMU_EINVAL);
  h.nentries = 0;
  assert_int_equal(immu__txrec_encode(&h, in, 0, buf, len), IMMU_EINVAL);
  h = t.h;
  h.version = 2;
  assert_int_equal(encode_sized(&h, in, 2), IMMU_EINVAL);
  h = t.h;
  h.md_len = IMMU_TX_MD_MAX;
  assert_int_equal(encode_sized(&h, in, 2), 0);
  h.md_len = IMMU_TX_MD_MAX + 1;
  assert_int_equal(encode_sized(&h, in, 2), IMMU_EINVAL);
  h = t.h;
  h.version = 0;
  assert_int_equal(encode_sized(&h, in, 2), 0);
  h.md_len = 1; /* no tx metadata in version 0 */
  assert_int_equal(encode_sized(&h, in, 2), IMMU_EINVAL);
  h = t.h;

  in[1].klen = 0;
  assert_int_equal(encode_sized(&h, in, 2), IMMU_EINVAL);
  in[1] = t.in[1];
  in[1].md = in[1].key;
  in[1].mdlen = IMMU_KV_MD_MAX;
  assert_int_equal(encode_sized(&h, in, 2), 0);
  in[1].mdlen = IMMU_KV_MD_MAX + 1;
  assert_int_equal(encode_sized(&h, in, 2), IMMU_EINVAL);
  in[1].mdlen = 1;
  h.version = 0; /* no kv metadata in version 0 */
  assert_int_equal(encode_sized(&h, in, 2), IMMU_EINVAL);
  h = t.h;
  in[1] = t.in[1];
  in[1].key = NULL;
  assert_int_equal(encode_sized(&h, in, 2), IMMU_EINVAL);
  in[1] = t.in[1];

  /* Keys up to 65535 bytes. */
  uint8_t *big = calloc(65536, 1);
  assert_non_null(big);
  in[1].key = big;
  in[1].klen = 65536;
  size_t bl = immu__txrec_size(in, 2, 0);
  uint8_t *bb = malloc(bl);
  assert_non_null(bb);
  assert_int_equal(immu__txrec_encode(&h, in, 2, bb, bl), IMMU_EINVAL);
  in[1].klen = 65535;
  bl = immu__txrec_size(in, 2, 0);
  assert_int_equal(immu__txrec_encode(&h, in, 2, bb, bl), 0);
  immu__txrec_seal(bb, &h, &t.alh);
  immu_txrec r;
  assert_int_equal(immu__txrec_decode(bb, bl, &r), 0);
  assert_int_equal(r.entries[1].klen, 65535);
  assert_int_equal(immu__txrec_check_hashes(&r), IMMU_ECORRUPT); /* eh */
  immu__txrec_free(&r);
  free(bb);
  free(big);
  in[1] = t.in[1];

  /* Over UINT32_MAX bytes in total: size 0. */
  in[1].vlen = UINT32_MAX - 100;
  assert_int_equal(immu__txrec_size(in, 2, 0), 0);
  in[1].vlen = (size_t)UINT32_MAX - 16 - 161 - 50 - 200;
  assert_true(immu__txrec_size(in, 2, 0) > 0);
  in[1] = t.in[1];

  /* Version 0 holds at most 65535 entries. */
  immu_txrec_in *many = calloc(65536, sizeof *many);
  assert_non_null(many);
  for (size_t i = 0; i < 65536; i++)
    many[i] = t.in[0];
  h.version = 0;
  h.md_len = 0;
  h.nentries = 65536;
  size_t ml = immu__txrec_size(many, 65536, 0);
  uint8_t *mb = malloc(ml);
  assert_non_null(mb);
  assert_int_equal(immu__txrec_encode(&h, many, 65536, mb, ml), IMMU_EINVAL);
  h.nentries = 65535;
  ml = immu__txrec_size(many, 65535, 0);
  assert_int_equal(immu__txrec_encode(&h, many, 65535, mb, ml), 0);
  free(mb);
  free(many);
  txb_free(&t);
}

/* Patches a field of a valid frame, fixes the CRCs, expects rejection. */
static void expect_patch_rejected(const txb *t, size_t off, const uint8_t *v,
                                  size_t n) {
  immu_txrec r;
  uint8_t *f = malloc(t->len);
  assert_non_null(f);
  memcpy(f, t->frame, t->len);
  memcpy(f + off, v, n);
  fix_crcs(f, t->len);
  assert_int_equal(immu__txrec_decode(f, t->len, &r), IMMU_ECORRUPT);
  free(f);
}

static void test_decode_limits(void **state) {
  (void)state;
  txb t;
  uint8_t b[8];
  const size_t hd = IMMU_TXREC_FRAME;
  txb_build(&t, &(shape){.version = 1, .n = 1, .vmax = 10, .bl_tx = 2});
  size_t ne = hd + 125 + t.h.md_len; /* nentries */

  b[0] = 2; /* record version */
  expect_patch_rejected(&t, hd + 0, b, 1);
  immu__put_u16(b, 2); /* header version */
  expect_patch_rejected(&t, hd + 121, b, 2);
  immu__put_u32(b, 0); /* nentries 0 */
  expect_patch_rejected(&t, ne, b, 4);
  immu__put_u32(b, 2); /* more entries than the body holds */
  expect_patch_rejected(&t, ne, b, 4);
  immu__put_u32(b, UINT32_MAX);
  expect_patch_rejected(&t, ne, b, 4);
  immu__put_u64(b, 0); /* id 0 */
  expect_patch_rejected(&t, hd + 1, b, 8);
  immu__put_u64(b, t.h.id); /* blTxID == id */
  expect_patch_rejected(&t, hd + 17, b, 8);
  size_t e0 = hd + IMMU_TXREC_HEAD_FIXED + t.h.md_len;
  immu__put_u16(b, 0); /* empty key */
  expect_patch_rejected(&t, e0 + 2, b, 2);
  immu__put_u16(b, 12); /* kv metadata over the limit */
  expect_patch_rejected(&t, e0, b, 2);
  immu__put_u16(b, 271); /* tx metadata over the limit */
  expect_patch_rejected(&t, hd + 123, b, 2);
  txb_free(&t);

  /* blTxID 0 requires a zero BlRoot. */
  txb_build(&t, &(shape){.version = 1, .n = 1, .vmax = 10});
  b[0] = 1;
  expect_patch_rejected(&t, hd + 25 + 31, b, 1);
  txb_free(&t);

  /* Version 0: no metadata anywhere. */
  txb_build(&t, &(shape){.version = 1, .n = 1, .vmax = 10, .kvmd = 1});
  immu__put_u16(b, 0);
  expect_patch_rejected(&t, hd + 121, b, 2);
  txb_free(&t);

  immu_txrec r;
  assert_int_equal(immu__txrec_decode(NULL, 0, &r), IMMU_ECORRUPT);
  assert_int_equal(immu__txrec_decode(NULL, 0, NULL), IMMU_EINVAL);
  memset(&r, 0, sizeof r);
  assert_int_equal(immu__txrec_check_hashes(&r), IMMU_ECORRUPT);
  immu__txrec_free(NULL);
}

/* Seal writes only the head: the body and crc_body are unchanged. */
static void test_seal_touches_head_only(void **state) {
  (void)state;
  txb t;
  txb_build(&t, &(shape){.version = 1, .n = 5, .vmax = 50, .tx_md = 9});
  uint8_t *f = malloc(t.len);
  assert_non_null(f);
  assert_int_equal(immu__txrec_encode(&t.h, t.in, t.n, f, t.len), 0);
  size_t head_end = IMMU_TXREC_FRAME + IMMU_TXREC_HEAD_FIXED + t.h.md_len;
  uint8_t crc_body[4];
  memcpy(crc_body, f + 12, 4);
  /* Poison the body region: seal must not read or rewrite it. */
  memset(f + head_end, 0xee, t.len - head_end);
  immu__txrec_seal(f, &t.h, &t.alh);
  for (size_t i = head_end; i < t.len; i++)
    assert_int_equal(f[i], 0xee);
  assert_memory_equal(f + 12, crc_body, 4);
  assert_memory_equal(f, t.frame, head_end);
  free(f);
  txb_free(&t);
}

static void test_oom(void **state) {
  (void)state;
  txb t;
  immu_txrec r;
  txb_build(&t, &(shape){.version = 1, .n = 200, .vmax = 20});
  immu__mem_fail_after(0, 0);
  assert_int_equal(immu__txrec_decode(t.frame, t.len, &r), IMMU_ENOMEM);
  assert_null(r.entries);
  assert_int_equal(immu__txrec_decode(t.frame, t.len, &r), 0);
  immu__mem_fail_after(0, 0);
  assert_int_equal(immu__txrec_check_hashes(&r), IMMU_ENOMEM);
  immu__mem_fail_after(-1, 0);
  assert_int_equal(immu__txrec_check_hashes(&r), 0);
  immu__txrec_free(&r);
  txb_free(&t);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_round_trip_v1),
      cmocka_unit_test(test_round_trip_v0),
      cmocka_unit_test(test_many_entries_v1),
      cmocka_unit_test(test_every_byte_flip),
      cmocka_unit_test(test_truncation),
      cmocka_unit_test(test_frame_len),
      cmocka_unit_test(test_encode_limits),
      cmocka_unit_test(test_decode_limits),
      cmocka_unit_test(test_seal_touches_head_only),
      cmocka_unit_test(test_oom),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
