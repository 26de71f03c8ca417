/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The generated gRPC schema (proto/schema.proto -> immupb) against wire
 * bytes derived by hand from the field numbers in immudb-api.md section 2:
 * every message below is packed and compared byte for byte, then unpacked,
 * re-packed and compared again. A wrong field number, wire type or scalar
 * type changes the bytes and fails the test.
 *
 * Tag byte = (field number << 3) | wire type (0 varint, 1 fixed64,
 * 2 length-delimited); fields >= 16 take a two-byte tag.
 *
 * Also: the ImmuService descriptor has the 74 HEAD methods, with their
 * exact (case-sensitive) names and request/response types, and unknown
 * fields from newer clients are skipped on decode.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "schema.pb-c.h"

/* ------------------------------------------------------------------ */
/* Helpers                                                             */
/* ------------------------------------------------------------------ */

static ProtobufCBinaryData bin(const char *s) {
  ProtobufCBinaryData b;
  b.len = strlen(s);
  b.data = (uint8_t *)(uintptr_t)s;
  return b;
}

static ProtobufCBinaryData bin1(uint8_t *byte) {
  ProtobufCBinaryData b;
  b.len = 1;
  b.data = byte;
  return b;
}

static void hex(char *out, size_t cap, const uint8_t *p, size_t n) {
  size_t o = 0;
  out[0] = '\0';
  for (size_t i = 0; i < n && o + 4 < cap; i++) {
    o += (size_t)snprintf(out + o, cap - o, "%02x ", p[i]);
  }
}

static void assert_bytes(const char *what, const uint8_t *got, size_t got_len,
                         const uint8_t *want, size_t want_len) {
  if (got_len != want_len || memcmp(got, want, want_len) != 0) {
    char g[1024], w[1024];
    hex(g, sizeof g, got, got_len);
    hex(w, sizeof w, want, want_len);
    fail_msg("%s:\n  got  (%zu) %s\n  want (%zu) %s", what, got_len, g,
             want_len, w);
  }
}

/* Pack m, compare with want; unpack the bytes, re-pack, compare again. */
static void check_wire(const ProtobufCMessage *m, const uint8_t *want,
                       size_t want_len) {
  uint8_t buf[1024];
  size_t n = protobuf_c_message_get_packed_size(m);
  assert_true(n <= sizeof buf);
  size_t w = protobuf_c_message_pack(m, buf);
  assert_int_equal(w, n);
  assert_bytes(m->descriptor->name, buf, w, want, want_len);

  ProtobufCMessage *back =
      protobuf_c_message_unpack(m->descriptor, NULL, want_len, want);
  assert_non_null(back);
  uint8_t buf2[1024];
  size_t n2 = protobuf_c_message_get_packed_size(back);
  assert_true(n2 <= sizeof buf2);
  size_t w2 = protobuf_c_message_pack(back, buf2);
  assert_bytes("re-packed", buf2, w2, want, want_len);
  protobuf_c_message_free_unpacked(back, NULL);
}

#define CHECK_WIRE(msg, ...)                                                   \
  do {                                                                         \
    static const uint8_t want_[] = {__VA_ARGS__};                              \
    check_wire(&(msg).base, want_, sizeof want_);                              \
  } while (0)

/* ------------------------------------------------------------------ */
/* KV                                                                  */
/* ------------------------------------------------------------------ */

static void test_key_value(void **state) {
  (void)state;
  Immudb__Schema__KeyValue kv = IMMUDB__SCHEMA__KEY_VALUE__INIT;
  kv.key = bin("a");
  kv.value = bin("b");
  CHECK_WIRE(kv, 0x0a, 0x01, 'a', 0x12, 0x01, 'b');

  Immudb__Schema__KVMetadata md = IMMUDB__SCHEMA__KVMETADATA__INIT;
  md.deleted = 1;
  kv.metadata = &md;
  CHECK_WIRE(kv, 0x0a, 0x01, 'a', 0x12, 0x01, 'b', 0x1a, 0x02, 0x08, 0x01);
}

static void test_entry(void **state) {
  (void)state;
  Immudb__Schema__Expiration exp = IMMUDB__SCHEMA__EXPIRATION__INIT;
  exp.expiresat = 1;
  Immudb__Schema__KVMetadata md = IMMUDB__SCHEMA__KVMETADATA__INIT;
  md.expiration = &exp;
  Immudb__Schema__Reference ref = IMMUDB__SCHEMA__REFERENCE__INIT;
  ref.tx = 1;
  ref.key = bin("r");
  ref.revision = 3;
  Immudb__Schema__Entry e = IMMUDB__SCHEMA__ENTRY__INIT;
  e.tx = 9;
  e.key = bin("k");
  e.value = bin("v");
  e.referencedby = &ref;
  e.metadata = &md;
  e.expired = 1;
  e.revision = 2;
  CHECK_WIRE(e,
             0x08, 0x09,                    /* tx = 1 */
             0x12, 0x01, 'k',               /* key = 2 */
             0x1a, 0x01, 'v',               /* value = 3 */
             0x22, 0x07,                    /* referencedBy = 4 */
             0x08, 0x01, 0x12, 0x01, 'r',   /*   tx = 1, key = 2 */
             0x28, 0x03,                    /*   revision = 5 */
             0x2a, 0x04,                    /* metadata = 5 */
             0x12, 0x02, 0x08, 0x01,        /*   expiration{expiresAt} */
             0x30, 0x01,                    /* expired = 6 */
             0x38, 0x02);                   /* revision = 7 */
}

static void test_verifiable_get_request(void **state) {
  (void)state;
  Immudb__Schema__KeyRequest kr = IMMUDB__SCHEMA__KEY_REQUEST__INIT;
  kr.key = bin("k");
  kr.attx = 3;
  kr.nowait = 1;
  kr.atrevision = -1; /* int64: ten-byte varint */
  Immudb__Schema__VerifiableGetRequest vg =
      IMMUDB__SCHEMA__VERIFIABLE_GET_REQUEST__INIT;
  vg.keyrequest = &kr;
  vg.provesincetx = 7;
  CHECK_WIRE(vg,
             0x0a, 0x12,                    /* keyRequest = 1, 18 bytes */
             0x0a, 0x01, 'k',               /*   key = 1 */
             0x10, 0x03,                    /*   atTx = 2 */
             0x20, 0x01,                    /*   noWait = 4 */
             0x28, 0xff, 0xff, 0xff, 0xff,  /*   atRevision = 5 */
             0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
             0x10, 0x07);                   /* proveSinceTx = 2 */
}

static void test_set_and_scan_requests(void **state) {
  (void)state;
  /* SetRequest{KVs=[{k,v}], noWait, preconditions=[keyMustNotExist{k}]} */
  Immudb__Schema__KeyValue kv = IMMUDB__SCHEMA__KEY_VALUE__INIT;
  kv.key = bin("k");
  kv.value = bin("v");
  Immudb__Schema__KeyValue *kvs[] = {&kv};
  Immudb__Schema__Precondition__KeyMustNotExistPrecondition mne =
      IMMUDB__SCHEMA__PRECONDITION__KEY_MUST_NOT_EXIST_PRECONDITION__INIT;
  mne.key = bin("k");
  Immudb__Schema__Precondition pc = IMMUDB__SCHEMA__PRECONDITION__INIT;
  pc.precondition_case =
      IMMUDB__SCHEMA__PRECONDITION__PRECONDITION_KEY_MUST_NOT_EXIST;
  pc.keymustnotexist = &mne;
  Immudb__Schema__Precondition *pcs[] = {&pc};
  Immudb__Schema__SetRequest sr = IMMUDB__SCHEMA__SET_REQUEST__INIT;
  sr.n_kvs = 1;
  sr.kvs = kvs;
  sr.nowait = 1;
  sr.n_preconditions = 1;
  sr.preconditions = pcs;
  CHECK_WIRE(sr,
             0x0a, 0x06, 0x0a, 0x01, 'k', 0x12, 0x01, 'v', /* KVs = 1 */
             0x10, 0x01,                                   /* noWait = 2 */
             0x1a, 0x05, 0x12, 0x03, 0x0a, 0x01, 'k');     /* preconds = 3 */

  /* ScanRequest{prefix="p", limit=10, endKey="z", inclusiveEnd, offset=2} */
  Immudb__Schema__ScanRequest sc = IMMUDB__SCHEMA__SCAN_REQUEST__INIT;
  sc.prefix = bin("p");
  sc.limit = 10;
  sc.endkey = bin("z");
  sc.inclusiveend = 1;
  sc.offset = 2;
  CHECK_WIRE(sc, 0x12, 0x01, 'p', 0x20, 0x0a, 0x3a, 0x01, 'z', 0x48, 0x01,
             0x50, 0x02);

  /* ZAddRequest{set="s", score=1.0, key="k", atTx=4, boundRef} */
  Immudb__Schema__ZAddRequest za = IMMUDB__SCHEMA__ZADD_REQUEST__INIT;
  za.set = bin("s");
  za.score = 1.0;
  za.key = bin("k");
  za.attx = 4;
  za.boundref = 1;
  CHECK_WIRE(za, 0x0a, 0x01, 's',
             0x11, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xf0, 0x3f,
             0x1a, 0x01, 'k', 0x20, 0x04, 0x28, 0x01);
}

/* ------------------------------------------------------------------ */
/* Transactions and proofs                                             */
/* ------------------------------------------------------------------ */

static void test_tx_header(void **state) {
  (void)state;
  uint8_t prev = 0x01, eh = 0x02, blroot = 0x03;
  Immudb__Schema__TxMetadata txmd = IMMUDB__SCHEMA__TX_METADATA__INIT;
  Immudb__Schema__TxHeader h = IMMUDB__SCHEMA__TX_HEADER__INIT;
  h.id = 5;
  h.prevalh = bin1(&prev);
  h.ts = 300;
  h.nentries = 2;
  h.eh = bin1(&eh);
  h.bltxid = 4;
  h.blroot = bin1(&blroot);
  h.version = 1;
  h.metadata = &txmd;
  CHECK_WIRE(h,
             0x08, 0x05,       /* id = 1 */
             0x12, 0x01, 0x01, /* prevAlh = 2 */
             0x18, 0xac, 0x02, /* ts = 3 (300) */
             0x20, 0x02,       /* nentries = 4 */
             0x2a, 0x01, 0x02, /* eH = 5 */
             0x30, 0x04,       /* blTxId = 6 */
             0x3a, 0x01, 0x03, /* blRoot = 7 */
             0x40, 0x01,       /* version = 8 */
             0x4a, 0x00);      /* metadata = 9 (empty, present) */

  txmd.truncatedtxid = 7;
  h.version = 0;
  h.metadata = &txmd;
  CHECK_WIRE(h, 0x08, 0x05, 0x12, 0x01, 0x01, 0x18, 0xac, 0x02, 0x20, 0x02,
             0x2a, 0x01, 0x02, 0x30, 0x04, 0x3a, 0x01, 0x03,
             0x4a, 0x02, 0x08, 0x07);
}

static void test_tx_entry(void **state) {
  (void)state;
  uint8_t hv = 0xee;
  Immudb__Schema__KVMetadata md = IMMUDB__SCHEMA__KVMETADATA__INIT;
  md.deleted = 1;
  Immudb__Schema__TxEntry te = IMMUDB__SCHEMA__TX_ENTRY__INIT;
  te.key = bin("k");
  te.hvalue = bin1(&hv);
  te.vlen = 300;
  te.metadata = &md;
  te.value = bin("v");
  CHECK_WIRE(te,
             0x0a, 0x01, 'k',        /* key = 1 */
             0x12, 0x01, 0xee,       /* hValue = 2 */
             0x18, 0xac, 0x02,       /* vLen = 3 (HEAD; 4 in v1.0/1.1) */
             0x22, 0x02, 0x08, 0x01, /* metadata = 4 */
             0x2a, 0x01, 'v');       /* value = 5 */

  /* Tx{header{id=1}, entries=[{key=k}]} */
  Immudb__Schema__TxHeader h = IMMUDB__SCHEMA__TX_HEADER__INIT;
  h.id = 1;
  Immudb__Schema__TxEntry e1 = IMMUDB__SCHEMA__TX_ENTRY__INIT;
  e1.key = bin("k");
  Immudb__Schema__TxEntry *es[] = {&e1};
  Immudb__Schema__Tx tx = IMMUDB__SCHEMA__TX__INIT;
  tx.header = &h;
  tx.n_entries = 1;
  tx.entries = es;
  CHECK_WIRE(tx, 0x0a, 0x02, 0x08, 0x01, 0x12, 0x03, 0x0a, 0x01, 'k');
}

static void test_dual_proof(void **state) {
  (void)state;
  uint8_t t_a = 0x0a, t_b = 0x0b, alh = 0x0c, d1 = 0xd1, d2 = 0xd2, d3 = 0xd3;
  Immudb__Schema__TxHeader src = IMMUDB__SCHEMA__TX_HEADER__INIT;
  src.id = 1;
  Immudb__Schema__TxHeader dst = IMMUDB__SCHEMA__TX_HEADER__INIT;
  dst.id = 2;
  ProtobufCBinaryData incl[] = {bin1(&d1)};
  ProtobufCBinaryData cons[] = {bin1(&d2)};
  ProtobufCBinaryData last[] = {bin1(&d3)};
  ProtobufCBinaryData lterms[] = {bin1(&t_a)};
  Immudb__Schema__LinearProof lp = IMMUDB__SCHEMA__LINEAR_PROOF__INIT;
  lp.sourcetxid = 1;
  lp.targettxid = 2;
  lp.n_terms = 1;
  lp.terms = lterms;
  ProtobufCBinaryData lapterms[] = {bin1(&t_b)};
  Immudb__Schema__InclusionProof ip = IMMUDB__SCHEMA__INCLUSION_PROOF__INIT;
  ip.leaf = 1;
  ip.width = 2;
  Immudb__Schema__InclusionProof *ips[] = {&ip};
  Immudb__Schema__LinearAdvanceProof lap =
      IMMUDB__SCHEMA__LINEAR_ADVANCE_PROOF__INIT;
  lap.n_linearproofterms = 1;
  lap.linearproofterms = lapterms;
  lap.n_inclusionproofs = 1;
  lap.inclusionproofs = ips;
  Immudb__Schema__DualProof dp = IMMUDB__SCHEMA__DUAL_PROOF__INIT;
  dp.sourcetxheader = &src;
  dp.targettxheader = &dst;
  dp.n_inclusionproof = 1;
  dp.inclusionproof = incl;
  dp.n_consistencyproof = 1;
  dp.consistencyproof = cons;
  dp.targetbltxalh = bin1(&alh);
  dp.n_lastinclusionproof = 1;
  dp.lastinclusionproof = last;
  dp.linearproof = &lp;
  dp.linearadvanceproof = &lap;
  CHECK_WIRE(dp,
             0x0a, 0x02, 0x08, 0x01,       /* sourceTxHeader = 1 */
             0x12, 0x02, 0x08, 0x02,       /* targetTxHeader = 2 */
             0x1a, 0x01, 0xd1,             /* inclusionProof = 3 */
             0x22, 0x01, 0xd2,             /* consistencyProof = 4 */
             0x2a, 0x01, 0x0c,             /* targetBlTxAlh = 5 */
             0x32, 0x01, 0xd3,             /* lastInclusionProof = 6 */
             0x3a, 0x07,                   /* linearProof = 7 */
             0x08, 0x01, 0x10, 0x02, 0x1a, 0x01, 0x0a,
             0x42, 0x09,                   /* LinearAdvanceProof = 8 */
             0x0a, 0x01, 0x0b,             /*   linearProofTerms = 1 */
             0x12, 0x04, 0x08, 0x01, 0x10, 0x02); /* inclusionProofs = 2 */
}

static void test_verifiable_entry(void **state) {
  (void)state;
  uint8_t term = 0xe1;
  Immudb__Schema__Entry e = IMMUDB__SCHEMA__ENTRY__INIT;
  e.tx = 1;
  Immudb__Schema__TxHeader h = IMMUDB__SCHEMA__TX_HEADER__INIT;
  h.id = 1;
  Immudb__Schema__Tx tx = IMMUDB__SCHEMA__TX__INIT;
  tx.header = &h;
  Immudb__Schema__VerifiableTx vtx = IMMUDB__SCHEMA__VERIFIABLE_TX__INIT;
  vtx.tx = &tx;
  ProtobufCBinaryData terms[] = {bin1(&term)};
  Immudb__Schema__InclusionProof ip = IMMUDB__SCHEMA__INCLUSION_PROOF__INIT;
  ip.leaf = 0;
  ip.width = 1;
  ip.n_terms = 1;
  ip.terms = terms;
  Immudb__Schema__VerifiableEntry ve = IMMUDB__SCHEMA__VERIFIABLE_ENTRY__INIT;
  ve.entry = &e;
  ve.verifiabletx = &vtx;
  ve.inclusionproof = &ip;
  CHECK_WIRE(ve,
             0x0a, 0x02, 0x08, 0x01,                   /* entry = 1 */
             0x12, 0x06, 0x0a, 0x04, 0x0a, 0x02, 0x08, /* verifiableTx = 2 */
             0x01,
             0x1a, 0x05, 0x10, 0x01, 0x1a, 0x01, 0xe1); /* inclusionProof */

  /* VerifiableTx{signature{publicKey, signature}} sits at field 3. */
  Immudb__Schema__Signature sig = IMMUDB__SCHEMA__SIGNATURE__INIT;
  sig.publickey = bin("P");
  sig.signature = bin("S");
  Immudb__Schema__VerifiableTx vs = IMMUDB__SCHEMA__VERIFIABLE_TX__INIT;
  vs.signature = &sig;
  CHECK_WIRE(vs, 0x1a, 0x06, 0x0a, 0x01, 'P', 0x12, 0x01, 'S');
}

static void test_immutable_state(void **state) {
  (void)state;
  Immudb__Schema__ImmutableState st = IMMUDB__SCHEMA__IMMUTABLE_STATE__INIT;
  st.db = (char *)"defaultdb";
  st.txid = 4;
  CHECK_WIRE(st, 0x0a, 0x09, 'd', 'e', 'f', 'a', 'u', 'l', 't', 'd', 'b',
             0x10, 0x04);

  uint8_t hash[] = {0xaa, 0xbb};
  uint8_t phash = 0xcc;
  Immudb__Schema__Signature sig = IMMUDB__SCHEMA__SIGNATURE__INIT;
  sig.publickey = bin("P");
  sig.signature = bin("S");
  st.txhash.len = sizeof hash;
  st.txhash.data = hash;
  st.signature = &sig;
  st.precommittedtxid = 5;
  st.precommittedtxhash = bin1(&phash);
  CHECK_WIRE(st, 0x0a, 0x09, 'd', 'e', 'f', 'a', 'u', 'l', 't', 'd', 'b',
             0x10, 0x04,                                /* txId = 2 */
             0x1a, 0x02, 0xaa, 0xbb,                    /* txHash = 3 */
             0x22, 0x06, 0x0a, 0x01, 'P', 0x12, 0x01, 'S', /* signature */
             0x28, 0x05,                                /* precommitted 5 */
             0x32, 0x01, 0xcc);                         /* precommitted 6 */
}

/* A newer client's unknown field (here 15, varint) is skipped. */
static void test_unknown_fields_skipped(void **state) {
  (void)state;
  static const uint8_t in[] = {0x0a, 0x02, 'd', 'b', 0x10, 0x04,
                               0x78, 0x01, 0x10, 0x05};
  Immudb__Schema__ImmutableState *st = immudb__schema__immutable_state__unpack(
      NULL, sizeof in, in);
  assert_non_null(st);
  assert_string_equal(st->db, "db");
  assert_int_equal(st->txid, 5); /* last occurrence wins */
  immudb__schema__immutable_state__free_unpacked(st, NULL);
}

/* ------------------------------------------------------------------ */
/* Auth, users, databases, health                                      */
/* ------------------------------------------------------------------ */

static void test_auth_and_users(void **state) {
  (void)state;
  Immudb__Schema__LoginRequest lr = IMMUDB__SCHEMA__LOGIN_REQUEST__INIT;
  lr.user = bin("immudb");
  lr.password = bin("pw");
  CHECK_WIRE(lr, 0x0a, 0x06, 'i', 'm', 'm', 'u', 'd', 'b', 0x12, 0x02, 'p',
             'w');

  Immudb__Schema__LoginResponse lresp = IMMUDB__SCHEMA__LOGIN_RESPONSE__INIT;
  lresp.token = (char *)"t";
  lresp.warning = bin("w");
  CHECK_WIRE(lresp, 0x0a, 0x01, 't', 0x12, 0x01, 'w');

  Immudb__Schema__OpenSessionResponse os =
      IMMUDB__SCHEMA__OPEN_SESSION_RESPONSE__INIT;
  os.sessionid = (char *)"s";
  os.serveruuid = (char *)"u";
  CHECK_WIRE(os, 0x0a, 0x01, 's', 0x12, 0x01, 'u');

  Immudb__Schema__Permission perm = IMMUDB__SCHEMA__PERMISSION__INIT;
  perm.database = (char *)"d";
  perm.permission = 2;
  Immudb__Schema__Permission *perms[] = {&perm};
  Immudb__Schema__SQLPrivilege priv = IMMUDB__SCHEMA__SQLPRIVILEGE__INIT;
  priv.database = (char *)"d";
  priv.privilege = (char *)"SELECT";
  Immudb__Schema__SQLPrivilege *privs[] = {&priv};
  Immudb__Schema__User u = IMMUDB__SCHEMA__USER__INIT;
  u.user = bin("u");
  u.n_permissions = 1;
  u.permissions = perms;
  u.createdby = (char *)"c";
  u.active = 1;
  u.n_sqlprivileges = 1;
  u.sqlprivileges = privs;
  CHECK_WIRE(u,
             0x0a, 0x01, 'u',                          /* user = 1 */
             0x1a, 0x05, 0x0a, 0x01, 'd', 0x10, 0x02,  /* permissions = 3 */
             0x22, 0x01, 'c',                          /* createdby = 4 */
             0x30, 0x01,                               /* active = 6 */
             0x3a, 0x0b, 0x0a, 0x01, 'd',              /* sqlPrivileges = 7 */
             0x12, 0x06, 'S', 'E', 'L', 'E', 'C', 'T');

  Immudb__Schema__ChangePermissionRequest cp =
      IMMUDB__SCHEMA__CHANGE_PERMISSION_REQUEST__INIT;
  cp.action = IMMUDB__SCHEMA__PERMISSION_ACTION__REVOKE;
  cp.username = (char *)"u";
  cp.database = (char *)"d";
  cp.permission = 254;
  CHECK_WIRE(cp, 0x08, 0x01, 0x12, 0x01, 'u', 0x1a, 0x01, 'd', 0x20, 0xfe,
             0x01);
}

static void test_databases_and_health(void **state) {
  (void)state;
  Immudb__Schema__Database db = IMMUDB__SCHEMA__DATABASE__INIT;
  db.databasename = (char *)"db1";
  Immudb__Schema__Database *dbs[] = {&db};
  Immudb__Schema__DatabaseListResponse dl =
      IMMUDB__SCHEMA__DATABASE_LIST_RESPONSE__INIT;
  dl.n_databases = 1;
  dl.databases = dbs;
  CHECK_WIRE(dl, 0x0a, 0x05, 0x0a, 0x03, 'd', 'b', '1');

  /* Two-byte tags: writeTxHeaderVersion = 20, truncationSettings = 29. */
  Immudb__Schema__NullableUint32 ver = IMMUDB__SCHEMA__NULLABLE_UINT32__INIT;
  Immudb__Schema__NullableMilliseconds ret =
      IMMUDB__SCHEMA__NULLABLE_MILLISECONDS__INIT;
  ret.value = 1000;
  Immudb__Schema__TruncationNullableSettings tr =
      IMMUDB__SCHEMA__TRUNCATION_NULLABLE_SETTINGS__INIT;
  tr.retentionperiod = &ret;
  Immudb__Schema__DatabaseNullableSettings s =
      IMMUDB__SCHEMA__DATABASE_NULLABLE_SETTINGS__INIT;
  s.writetxheaderversion = &ver;
  s.truncationsettings = &tr;
  CHECK_WIRE(s, 0xa2, 0x01, 0x00, 0xea, 0x01, 0x05, 0x0a, 0x03, 0x08, 0xe8,
             0x07);

  Immudb__Schema__HealthResponse hr = IMMUDB__SCHEMA__HEALTH_RESPONSE__INIT;
  hr.status = 1;
  hr.version = (char *)"1.1.0";
  CHECK_WIRE(hr, 0x08, 0x01, 0x12, 0x05, '1', '.', '1', '.', '0');

  Immudb__Schema__ServerInfoResponse si =
      IMMUDB__SCHEMA__SERVER_INFO_RESPONSE__INIT;
  si.version = (char *)"v";
  si.startedat = 2;
  si.numtransactions = 3;
  si.numdatabases = 4;
  si.databasesdisksize = 5;
  CHECK_WIRE(si, 0x0a, 0x01, 'v', 0x10, 0x02, 0x18, 0x03, 0x20, 0x04, 0x28,
             0x05);

  Immudb__Schema__DatabaseHealthResponse dh =
      IMMUDB__SCHEMA__DATABASE_HEALTH_RESPONSE__INIT;
  dh.pendingrequests = 1;
  dh.lastrequestcompletedat = 2;
  CHECK_WIRE(dh, 0x08, 0x01, 0x10, 0x02);
}

/* ------------------------------------------------------------------ */
/* Streams, replication, SQL                                           */
/* ------------------------------------------------------------------ */

static void test_chunk_and_export(void **state) {
  (void)state;
  Immudb__Schema__Chunk__MetadataEntry me =
      IMMUDB__SCHEMA__CHUNK__METADATA_ENTRY__INIT;
  me.key = (char *)"k";
  me.value = bin("v");
  Immudb__Schema__Chunk__MetadataEntry *mes[] = {&me};
  Immudb__Schema__Chunk c = IMMUDB__SCHEMA__CHUNK__INIT;
  c.content = bin("x");
  CHECK_WIRE(c, 0x0a, 0x01, 'x');
  c.n_metadata = 1;
  c.metadata = mes;
  CHECK_WIRE(c, 0x0a, 0x01, 'x', 0x12, 0x06, 0x0a, 0x01, 'k', 0x12, 0x01,
             'v');

  Immudb__Schema__ReplicaState rs = IMMUDB__SCHEMA__REPLICA_STATE__INIT;
  rs.uuid = (char *)"u";
  rs.committedtxid = 6;
  Immudb__Schema__ExportTxRequest ex = IMMUDB__SCHEMA__EXPORT_TX_REQUEST__INIT;
  ex.tx = 7;
  ex.allowprecommitted = 1;
  ex.replicastate = &rs;
  ex.skipintegritycheck = 1;
  CHECK_WIRE(ex, 0x08, 0x07, 0x10, 0x01, 0x1a, 0x05, 0x0a, 0x01, 'u', 0x10,
             0x06, 0x20, 0x01);
}

static void test_sql(void **state) {
  (void)state;
  Immudb__Schema__SQLValue v = IMMUDB__SCHEMA__SQLVALUE__INIT;
  v.value_case = IMMUDB__SCHEMA__SQLVALUE__VALUE_S;
  v.s = (char *)"hi";
  CHECK_WIRE(v, 0x1a, 0x02, 'h', 'i');
  v.value_case = IMMUDB__SCHEMA__SQLVALUE__VALUE_NULL;
  v.null = GOOGLE__PROTOBUF__NULL_VALUE__NULL_VALUE;
  CHECK_WIRE(v, 0x08, 0x00); /* a set oneof member is sent even when 0 */
  v.value_case = IMMUDB__SCHEMA__SQLVALUE__VALUE_N;
  v.n = -1;
  CHECK_WIRE(v, 0x10, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
             0x01);
  v.value_case = IMMUDB__SCHEMA__SQLVALUE__VALUE_F;
  v.f = 1.0;
  CHECK_WIRE(v, 0x39, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xf0, 0x3f);

  Immudb__Schema__TxHeader h = IMMUDB__SCHEMA__TX_HEADER__INIT;
  h.id = 3;
  Immudb__Schema__CommittedSQLTx ctx = IMMUDB__SCHEMA__COMMITTED_SQLTX__INIT;
  ctx.header = &h;
  ctx.updatedrows = 1;
  Immudb__Schema__CommittedSQLTx *ctxs[] = {&ctx};
  Immudb__Schema__SQLExecResult er = IMMUDB__SCHEMA__SQLEXEC_RESULT__INIT;
  er.n_txs = 1;
  er.txs = ctxs;
  er.ongoingtx = 1;
  CHECK_WIRE(er, 0x2a, 0x06, 0x0a, 0x02, 0x08, 0x03, 0x10, 0x01, 0x30, 0x01);

  Immudb__Schema__Column col = IMMUDB__SCHEMA__COLUMN__INIT;
  col.name = (char *)"c";
  col.type = (char *)"INTEGER";
  Immudb__Schema__Column *cols[] = {&col};
  Immudb__Schema__SQLValue one = IMMUDB__SCHEMA__SQLVALUE__INIT;
  one.value_case = IMMUDB__SCHEMA__SQLVALUE__VALUE_N;
  one.n = 1;
  Immudb__Schema__SQLValue *vals[] = {&one};
  char *rcols[] = {(char *)"c"};
  Immudb__Schema__Row row = IMMUDB__SCHEMA__ROW__INIT;
  row.n_columns = 1;
  row.columns = rcols;
  row.n_values = 1;
  row.values = vals;
  Immudb__Schema__Row *rows[] = {&row};
  Immudb__Schema__SQLQueryResult qr = IMMUDB__SCHEMA__SQLQUERY_RESULT__INIT;
  qr.n_rows = 1;
  qr.rows = rows;
  qr.n_columns = 1;
  qr.columns = cols;
  CHECK_WIRE(qr,
             0x0a, 0x07, 0x0a, 0x01, 'c', 0x12, 0x02, 0x10, 0x01, /* rows=1 */
             0x12, 0x0c, 0x0a, 0x01, 'c', 0x12, 0x07,             /* cols=2 */
             'I', 'N', 'T', 'E', 'G', 'E', 'R');
}

/* ------------------------------------------------------------------ */
/* Service descriptor                                                  */
/* ------------------------------------------------------------------ */

struct rpc {
  const char *name, *in, *out;
};

/* immudb-api.md section 1 (HEAD, 74 RPCs); stream markers are not part of
 * the descriptor. */
static const struct rpc k_rpcs[] = {
    {"Login", "LoginRequest", "LoginResponse"},
    {"Logout", ".Empty", ".Empty"},
    {"OpenSession", "OpenSessionRequest", "OpenSessionResponse"},
    {"CloseSession", ".Empty", ".Empty"},
    {"KeepAlive", ".Empty", ".Empty"},
    {"UpdateAuthConfig", "AuthConfig", ".Empty"},
    {"UpdateMTLSConfig", "MTLSConfig", ".Empty"},
    {"ListUsers", ".Empty", "UserList"},
    {"CreateUser", "CreateUserRequest", ".Empty"},
    {"ChangePassword", "ChangePasswordRequest", ".Empty"},
    {"ChangePermission", "ChangePermissionRequest", ".Empty"},
    {"SetActiveUser", "SetActiveUserRequest", ".Empty"},
    {"ChangeSQLPrivileges", "ChangeSQLPrivilegesRequest",
     "ChangeSQLPrivilegesResponse"},
    {"CreateDatabase", "Database", ".Empty"},
    {"CreateDatabaseWith", "DatabaseSettings", ".Empty"},
    {"CreateDatabaseV2", "CreateDatabaseRequest", "CreateDatabaseResponse"},
    {"LoadDatabase", "LoadDatabaseRequest", "LoadDatabaseResponse"},
    {"UnloadDatabase", "UnloadDatabaseRequest", "UnloadDatabaseResponse"},
    {"DeleteDatabase", "DeleteDatabaseRequest", "DeleteDatabaseResponse"},
    {"DatabaseList", ".Empty", "DatabaseListResponse"},
    {"DatabaseListV2", "DatabaseListRequestV2", "DatabaseListResponseV2"},
    {"UseDatabase", "Database", "UseDatabaseReply"},
    {"UpdateDatabase", "DatabaseSettings", ".Empty"},
    {"UpdateDatabaseV2", "UpdateDatabaseRequest", "UpdateDatabaseResponse"},
    {"GetDatabaseSettings", ".Empty", "DatabaseSettings"},
    {"GetDatabaseSettingsV2", "DatabaseSettingsRequest",
     "DatabaseSettingsResponse"},
    {"FlushIndex", "FlushIndexRequest", "FlushIndexResponse"},
    {"CompactIndex", ".Empty", ".Empty"},
    {"TruncateDatabase", "TruncateDatabaseRequest", "TruncateDatabaseResponse"},
    {"Set", "SetRequest", "TxHeader"},
    {"Get", "KeyRequest", "Entry"},
    {"Delete", "DeleteKeysRequest", "TxHeader"},
    {"GetAll", "KeyListRequest", "Entries"},
    {"ExecAll", "ExecAllRequest", "TxHeader"},
    {"Scan", "ScanRequest", "Entries"},
    {"Count", "KeyPrefix", "EntryCount"},
    {"CountAll", ".Empty", "EntryCount"},
    {"VerifiableSet", "VerifiableSetRequest", "VerifiableTx"},
    {"VerifiableGet", "VerifiableGetRequest", "VerifiableEntry"},
    {"VerifiableTxById", "VerifiableTxRequest", "VerifiableTx"},
    {"VerifiableSetReference", "VerifiableReferenceRequest", "VerifiableTx"},
    {"VerifiableZAdd", "VerifiableZAddRequest", "VerifiableTx"},
    {"VerifiableSQLGet", "VerifiableSQLGetRequest", "VerifiableSQLEntry"},
    {"TxById", "TxRequest", "Tx"},
    {"TxScan", "TxScanRequest", "TxList"},
    {"History", "HistoryRequest", "Entries"},
    {"ZAdd", "ZAddRequest", "TxHeader"},
    {"ZScan", "ZScanRequest", "ZEntries"},
    {"SetReference", "ReferenceRequest", "TxHeader"},
    {"SQLExec", "SQLExecRequest", "SQLExecResult"},
    {"SQLQuery", "SQLQueryRequest", "SQLQueryResult"},
    {"UnarySQLQuery", "SQLQueryRequest", "SQLQueryResult"},
    {"ListTables", ".Empty", "SQLQueryResult"},
    {"DescribeTable", "Table", "SQLQueryResult"},
    {"NewTx", "NewTxRequest", "NewTxResponse"},
    {"Commit", ".Empty", "CommittedSQLTx"},
    {"Rollback", ".Empty", ".Empty"},
    {"TxSQLExec", "SQLExecRequest", ".Empty"},
    {"TxSQLQuery", "SQLQueryRequest", "SQLQueryResult"},
    {"streamGet", "KeyRequest", "Chunk"},
    {"streamSet", "Chunk", "TxHeader"},
    {"streamVerifiableGet", "VerifiableGetRequest", "Chunk"},
    {"streamVerifiableSet", "Chunk", "VerifiableTx"},
    {"streamScan", "ScanRequest", "Chunk"},
    {"streamZScan", "ZScanRequest", "Chunk"},
    {"streamHistory", "HistoryRequest", "Chunk"},
    {"streamExecAll", "Chunk", "TxHeader"},
    {"exportTx", "ExportTxRequest", "Chunk"},
    {"replicateTx", "Chunk", "TxHeader"},
    {"streamExportTx", "ExportTxRequest", "Chunk"},
    {"Health", ".Empty", "HealthResponse"},
    {"ServerInfo", "ServerInfoRequest", "ServerInfoResponse"},
    {"DatabaseHealth", ".Empty", "DatabaseHealthResponse"},
    {"CurrentState", ".Empty", "ImmutableState"},
};

static void expect_type(const char *short_name, const char *full) {
  char want[128];
  if (short_name[0] == '.') {
    snprintf(want, sizeof want, "google.protobuf%s", short_name);
  } else {
    snprintf(want, sizeof want, "immudb.schema.%s", short_name);
  }
  assert_string_equal(full, want);
}

static void test_service_descriptor(void **state) {
  (void)state;
  const ProtobufCServiceDescriptor *sd =
      &immudb__schema__immu_service__descriptor;
  assert_string_equal(sd->name, "immudb.schema.ImmuService");
  assert_string_equal(sd->short_name, "ImmuService");
  assert_string_equal(sd->package, "immudb.schema");
  size_t n = sizeof k_rpcs / sizeof k_rpcs[0];
  assert_int_equal(n, 74);
  assert_int_equal(sd->n_methods, n);
  for (size_t i = 0; i < n; i++) {
    const ProtobufCMethodDescriptor *md =
        protobuf_c_service_descriptor_get_method_by_name(sd, k_rpcs[i].name);
    if (md == NULL) {
      fail_msg("method %s missing", k_rpcs[i].name);
    }
    assert_string_equal(md->name, k_rpcs[i].name);
    expect_type(k_rpcs[i].in, md->input->name);
    expect_type(k_rpcs[i].out, md->output->name);
  }
  /* Names are case-sensitive on the wire (gRPC :path). */
  static const char *const absent[] = {"StreamGet", "ExportTx",
                                       "UseSnapshot"};
  for (size_t i = 0; i < sizeof absent / sizeof absent[0]; i++) {
    assert_null(
        protobuf_c_service_descriptor_get_method_by_name(sd, absent[i]));
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_key_value),
      cmocka_unit_test(test_entry),
      cmocka_unit_test(test_verifiable_get_request),
      cmocka_unit_test(test_set_and_scan_requests),
      cmocka_unit_test(test_tx_header),
      cmocka_unit_test(test_tx_entry),
      cmocka_unit_test(test_dual_proof),
      cmocka_unit_test(test_verifiable_entry),
      cmocka_unit_test(test_immutable_state),
      cmocka_unit_test(test_unknown_fields_skipped),
      cmocka_unit_test(test_auth_and_users),
      cmocka_unit_test(test_databases_and_health),
      cmocka_unit_test(test_chunk_and_export),
      cmocka_unit_test(test_sql),
      cmocka_unit_test(test_service_descriptor),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
