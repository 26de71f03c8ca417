/* SPDX-License-Identifier: Apache-2.0 */
/*
 * immudb-selfcheck: recomputes test vectors of ../shared/spec/immudb-crypto.md
 * section 10 through the public API in include/immudb/crypto.h only, and
 * reports each one.
 *
 * Output: one line per check, "ok   <name>" or
 * "FAIL <name>: got <hex> want <hex>", then a summary line. Exit status 0
 * only if every check passes, 1 otherwise.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "immudb/crypto.h"
#include "immudb/err.h"

static int g_pass, g_fail;

static void check_digest(const char *name, int rc, const immu_digest *got,
                         const char *want_hex) {
  char got_hex[65];

  if (rc != 0) {
    printf("FAIL %s: got error %s want %s\n", name, immu_err_name(rc),
           want_hex);
    g_fail++;
    return;
  }
  immu_digest_hex(got, got_hex);
  if (strcmp(got_hex, want_hex) == 0) {
    printf("ok   %s\n", name);
    g_pass++;
  } else {
    printf("FAIL %s: got %s want %s\n", name, got_hex, want_hex);
    g_fail++;
  }
}

/* u64 big-endian, as every integer in the spec's hash inputs (spec 1). */
static void put_u64(uint8_t out[8], uint64_t v) {
  for (int i = 7; i >= 0; i--) {
    out[i] = (uint8_t)(v & 0xffu);
    v >>= 8;
  }
}

/* H(u64(i)): the leaf payloads of spec 10.3 and 10.4. */
static void hash_u64(uint64_t i, immu_digest *out) {
  uint8_t b[8];

  put_u64(b, i);
  immu_sha256(b, sizeof b, out);
}

static int hex_to_bytes(const char *hex, uint8_t *out, size_t cap,
                        size_t *out_len) {
  size_t n = strlen(hex);

  if (n % 2 != 0 || n / 2 > cap) {
    return IMMU_EINVAL;
  }
  for (size_t i = 0; i < n / 2; i++) {
    if (sscanf(hex + 2 * i, "%2hhx", &out[i]) != 1) {
      return IMMU_EINVAL;
    }
  }
  *out_len = n / 2;
  return 0;
}

/* Spec 10.1. */
static void check_primitives(void) {
  immu_digest d;

  immu_sha256(NULL, 0, &d);
  check_digest(
      "sha256.empty", 0, &d,
      "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  check_digest(
      "sha256.empty_digest", 0, &immu_empty_digest,
      "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

/* Spec 10.2, EncodeKV("key1", "value1"). */
static void check_entry_digests(void) {
  uint8_t key[16], val[16];
  size_t klen = 0, vlen = 0;
  immu_digest hval, d;
  int rc;

  rc = immu_enc_key((const uint8_t *)"key1", 4, key, sizeof key, &klen);
  if (rc == 0) {
    rc = immu_enc_value((const uint8_t *)"value1", 6, val, sizeof val, &vlen);
  }
  if (rc == 0) {
    immu_sha256(val, vlen, &hval);
  }
  check_digest(
      "kv.hval", rc, &hval,
      "d7da3a95c85f6573d3e611bac5be34c478a4b7710e9eb0955ab99238f54ccb45");
  if (rc == 0) {
    rc = immu_entry_digest(0, key, klen, NULL, 0, &hval, &d);
  }
  check_digest(
      "kv.digest_v0", rc, &d,
      "91b6057a9072a58ab02d9a193a18ff2bf5bc92b9a6b897ecaf9f8223557b7e90");
  if (rc == 0) {
    rc = immu_entry_digest(1, key, klen, NULL, 0, &hval, &d);
  }
  check_digest(
      "kv.digest_v1", rc, &d,
      "00eb1b3b3a9fc14cb200eb0750febd87aa1b24c09a4e197ec456caad53c2188a");
}

/* Spec 10.3: d_i = H(u64(i)), i = 0..w-1. */
static void check_htree(void) {
  static const char *const want[7] = {
      "aea833068048b82f42271c18e0076a5230cbc7d711c99de16a5917db14a3b044",
      "839757d78394f8ad59bc4621831d92396f5d3556fe0059846463a32a21dc9e04",
      "cc23a6e05f95099459e4b62703c223236972a78997b072a65500b30e26bb6ef3",
      "f429b955064dbbcf878a6b817cb02740f0a30f42a1d770195addb021b45b8fdd",
      "aa33f608b3c7398a5230804ae5bf2cbe372e3e517eab55ef21d7e8a1318b00d9",
      "e09719be5ed3cdf6ec907e5ba6ebe019a93dee5e305185c33522ab6325045eec",
      "3bae604504fcab1978311ba9984633ad88b8c104832990123345db6c816b77c8",
  };
  immu_digest leaves[7], root;
  char name[32];

  for (uint64_t i = 0; i < 7; i++) {
    hash_u64(i, &leaves[i]);
  }
  for (size_t w = 1; w <= 7; w++) {
    snprintf(name, sizeof name, "htree.root.w%zu", w);
    check_digest(name, immu_htree_root(leaves, w, &root), &root, want[w - 1]);
  }
}

/* Spec 10.4: data_n = H(u64(n)), n = 1..8. */
static void check_ahtree(void) {
  static const char *const want[8] = {
      "277dddee83152dcc8ba5f7ab96e552f178c2fee48d0b81982597f0d743f675f7",
      "f19275f559e1887a3bfd39287e27619fe607f0c644ff616d1a922d7f5155fb68",
      "ddd321bb19e41a0509d3b04ec428f3cbf4a96747115834b0074bd4dbc542b230",
      "11a8db31edfde17c6cc887b2341a6f77553cab9907b7a08c33d5e64e569baa24",
      "7ea9378f2bbf570faa6ad08f26c58613e1755bc8e66127b47d32047b4437a4a2",
      "588e1ecefa627d0e1a7796798583bc446f3f2d49281b40184231d4be60cd412f",
      "76bad20ef3db6c3f44b3e36ef58905da600ae85fb5baba5ba86dc3f61cde4ac5",
      "4270d8a2bfc8b0d8c044bc6915a6312d5010587ae40f7f6cdcf52fde40ce8d4d",
  };
  immu_ahtree *t = NULL;
  immu_digest data, root;
  char name[32];
  int rc = immu_ahtree_new_mem(&t);

  for (uint64_t n = 1; n <= 8; n++) {
    if (rc == 0) {
      hash_u64(n, &data);
      rc = immu_ahtree_append(t, data.b, sizeof data.b, &root);
    }
    snprintf(name, sizeof name, "ahtree.append_root.n%u", (unsigned)n);
    check_digest(name, rc, &root, want[n - 1]);
  }
  for (uint64_t m = 1; m <= 8; m++) {
    int rc2 = rc == 0 ? immu_ahtree_root_at(t, m, &root) : rc;
    snprintf(name, sizeof name, "ahtree.root_at.m%u", (unsigned)m);
    check_digest(name, rc2, &root, want[m - 1]);
  }
  immu_ahtree_free(t);
}

/* Spec 10.5, legacy tx 1 of test/data_v1.1.0/defaultdb (legacy == v0). */
static void check_legacy_tx1(void) {
  uint8_t key[32];
  size_t klen = 0;
  immu_digest hval, digest, inner, alh;
  immu_tx_header h;
  int rc;

  memset(&h, 0, sizeof h);
  rc = hex_to_bytes("0243544c2e44415441424153452e00000001", key, sizeof key,
                    &klen);
  if (rc == 0) {
    rc = immu_digest_from_hex(
        "98ac3eacda9950d6993abd6404d3d2ef8242290d944bfeac03c1b74139833221",
        &hval);
  }
  if (rc == 0) {
    rc = immu_entry_digest(0, key, klen, NULL, 0, &hval, &digest);
  }
  check_digest(
      "tx1.entry_digest", rc, &digest,
      "f48281a682a7db82a7cdb66dc6eaca71a4c5c3a1f50e4a22a8bd761ebaae2c23");
  if (rc == 0) {
    rc = immu_htree_root(&digest, 1, &h.eh);
  }
  check_digest(
      "tx1.eh", rc, &h.eh,
      "15922c456cfb0dc4f597ff4c71d2772157572496117426df5961686bc0badf5d");
  h.id = 1;
  h.ts = 1637858806;
  h.bl_tx_id = 0;
  h.bl_root = immu_zero_digest;
  h.prev_alh = immu_empty_digest;
  h.version = 0;
  h.nentries = 1;
  if (rc == 0) {
    rc = immu_tx_inner_hash(&h, &inner);
  }
  check_digest(
      "tx1.inner_hash", rc, &inner,
      "282a4ecc5e58278357acc83ab361339a35866aeb3ed27ffa6add897be3c700d7");
  if (rc == 0) {
    rc = immu_tx_alh(&h, &alh);
  }
  check_digest(
      "tx1.alh", rc, &alh,
      "8b926ffbc9abb205a89f0dc5d81a0a2d0844f8f4404861f0eae7911a3cb537d9");
}

int main(void) {
  check_primitives();
  check_entry_digests();
  check_htree();
  check_ahtree();
  check_legacy_tx1();
  printf("selfcheck: %d passed, %d failed\n", g_pass, g_fail);
  return g_fail == 0 ? 0 : 1;
}
