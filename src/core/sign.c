/* SPDX-License-Identifier: Apache-2.0 */
/*
 * State signing (spec 8.1): ECDSA P-256 over SHA-256 of
 * u32(len(db)) || db || u64(txId) || txHash, DER-encoded (r, s).
 * Keys are EVP_PKEYs, which OpenSSL 3 allows to be used from several
 * threads at once for signing and verifying; each call has its own context.
 */
#include <errno.h>
#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <string.h>

#include "core/endian.h"
#include "core/mem.h"
#include "immudb/crypto.h"

struct immu_signer {
  EVP_PKEY *pkey;
  uint8_t pub[IMMU_PUBKEY_LEN];
};

struct immu_verifier {
  EVP_PKEY *pkey;
};

#define KEY_FILE_MAX (64 * 1024)

int immu_state_bytes(const char *db, size_t dblen, uint64_t tx_id,
                     const immu_digest *tx_hash, uint8_t *out, size_t cap,
                     size_t *out_len) {
  if (dblen > IMMU_DB_NAME_MAX)
    return IMMU_EINVAL;
  if (cap < 4 + dblen + 8 + IMMU_DIGEST_LEN)
    return IMMU_ETOOLARGE;
  immu__put_u32(out, (uint32_t)dblen);
  if (dblen)
    memcpy(out + 4, db, dblen);
  immu__put_u64(out + 4 + dblen, tx_id);
  memcpy(out + 12 + dblen, tx_hash->b, IMMU_DIGEST_LEN);
  *out_len = 4 + dblen + 8 + IMMU_DIGEST_LEN;
  return 0;
}

/* Accept only EC keys on P-256: clients assume that curve (spec 8.1). */
static int is_p256(EVP_PKEY *pkey) {
  char group[64];
  size_t glen = 0;
  if (!EVP_PKEY_is_a(pkey, "EC"))
    return 0;
  if (!EVP_PKEY_get_utf8_string_param(pkey, OSSL_PKEY_PARAM_GROUP_NAME, group,
                                      sizeof group, &glen))
    return 0;
  return strcmp(group, "prime256v1") == 0 || strcmp(group, "P-256") == 0;
}

static int read_file(const char *path, char **buf, size_t *len) {
  FILE *f = fopen(path, "rb");
  size_t n;
  char *b;

  if (f == NULL)
    return -errno;
  if ((b = immu__malloc(KEY_FILE_MAX)) == NULL) {
    fclose(f);
    return IMMU_ENOMEM;
  }
  n = fread(b, 1, KEY_FILE_MAX, f);
  if (ferror(f) || n == KEY_FILE_MAX) {
    int rc = ferror(f) ? -EIO : IMMU_ETOOLARGE;
    fclose(f);
    immu__free(b);
    return rc;
  }
  fclose(f);
  *buf = b;
  *len = n;
  return 0;
}

int immu_signer_from_pem(const char *pem, size_t len, immu_signer **out) {
  immu_signer *s;
  EVP_PKEY *pkey;
  BIO *bio;
  size_t plen = 0;

  *out = NULL;
  if (pem == NULL || len == 0 || len > INT32_MAX)
    return IMMU_EINVAL;
  if ((bio = BIO_new_mem_buf(pem, (int)len)) == NULL)
    return IMMU_ENOMEM;
  pkey = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL);
  BIO_free(bio);
  if (pkey == NULL || !is_p256(pkey))
    goto bad;
  if ((s = immu__calloc(1, sizeof *s)) == NULL) {
    EVP_PKEY_free(pkey);
    return IMMU_ENOMEM;
  }
  if (!EVP_PKEY_get_octet_string_param(pkey, OSSL_PKEY_PARAM_PUB_KEY, s->pub,
                                       sizeof s->pub, &plen) ||
      plen != IMMU_PUBKEY_LEN || s->pub[0] != 0x04) {
    immu__free(s);
    goto bad;
  }
  s->pkey = pkey;
  *out = s;
  return 0;
bad:
  EVP_PKEY_free(pkey);
  return IMMU_EINVAL;
}

int immu_signer_from_file(const char *path, immu_signer **out) {
  char *buf;
  size_t len;
  int rc;
  *out = NULL;
  if ((rc = read_file(path, &buf, &len)) != 0)
    return rc;
  rc = immu_signer_from_pem(buf, len, out);
  immu__free(buf);
  return rc;
}

void immu_signer_free(immu_signer *s) {
  if (s == NULL)
    return;
  EVP_PKEY_free(s->pkey);
  immu__free(s);
}

int immu_signer_sign_state(const immu_signer *s, const char *db, size_t dblen,
                           uint64_t tx_id, const immu_digest *tx_hash,
                           uint8_t sig[IMMU_SIG_MAX], size_t *sig_len,
                           uint8_t pubkey[IMMU_PUBKEY_LEN]) {
  uint8_t tbs[4 + IMMU_DB_NAME_MAX + 8 + IMMU_DIGEST_LEN];
  size_t tlen, slen = IMMU_SIG_MAX;
  EVP_MD_CTX *ctx;
  int rc;

  if ((rc = immu_state_bytes(db, dblen, tx_id, tx_hash, tbs, sizeof tbs,
                             &tlen)) != 0)
    return rc;
  if ((ctx = EVP_MD_CTX_new()) == NULL)
    return IMMU_ENOMEM;
  if (EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, s->pkey) != 1 ||
      EVP_DigestSign(ctx, sig, &slen, tbs, tlen) != 1) {
    EVP_MD_CTX_free(ctx);
    return IMMU_ECRYPTO;
  }
  EVP_MD_CTX_free(ctx);
  *sig_len = slen;
  if (pubkey != NULL)
    memcpy(pubkey, s->pub, IMMU_PUBKEY_LEN);
  return 0;
}

int immu_verifier_from_pem(const char *pem, size_t len, immu_verifier **out) {
  immu_verifier *v;
  EVP_PKEY *pkey;
  BIO *bio;

  *out = NULL;
  if (pem == NULL || len == 0 || len > INT32_MAX)
    return IMMU_EINVAL;
  if ((bio = BIO_new_mem_buf(pem, (int)len)) == NULL)
    return IMMU_ENOMEM;
  pkey = PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL);
  BIO_free(bio);
  if (pkey == NULL || !is_p256(pkey)) {
    EVP_PKEY_free(pkey);
    return IMMU_EINVAL;
  }
  if ((v = immu__calloc(1, sizeof *v)) == NULL) {
    EVP_PKEY_free(pkey);
    return IMMU_ENOMEM;
  }
  v->pkey = pkey;
  *out = v;
  return 0;
}

int immu_verifier_from_file(const char *path, immu_verifier **out) {
  char *buf;
  size_t len;
  int rc;
  *out = NULL;
  if ((rc = read_file(path, &buf, &len)) != 0)
    return rc;
  rc = immu_verifier_from_pem(buf, len, out);
  immu__free(buf);
  return rc;
}

void immu_verifier_free(immu_verifier *v) {
  if (v == NULL)
    return;
  EVP_PKEY_free(v->pkey);
  immu__free(v);
}

int immu_verifier_verify_state(const immu_verifier *v, const char *db,
                               size_t dblen, uint64_t tx_id,
                               const immu_digest *tx_hash, const uint8_t *sig,
                               size_t sig_len) {
  uint8_t tbs[4 + IMMU_DB_NAME_MAX + 8 + IMMU_DIGEST_LEN];
  size_t tlen;
  EVP_MD_CTX *ctx;
  int ok;

  if (v == NULL || sig == NULL || sig_len == 0 || sig_len > IMMU_SIG_MAX ||
      immu_state_bytes(db, dblen, tx_id, tx_hash, tbs, sizeof tbs, &tlen) != 0)
    return IMMU_EVERIFY;
  if ((ctx = EVP_MD_CTX_new()) == NULL)
    return IMMU_ENOMEM;
  ok = EVP_DigestVerifyInit(ctx, NULL, EVP_sha256(), NULL, v->pkey) == 1 &&
       EVP_DigestVerify(ctx, sig, sig_len, tbs, tlen) == 1;
  EVP_MD_CTX_free(ctx);
  /* Failed verifications leave errors on OpenSSL's thread queue. */
  ERR_clear_error();
  return ok ? 0 : IMMU_EVERIFY;
}
