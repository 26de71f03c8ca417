/* SPDX-License-Identifier: Apache-2.0 */
/*
 * immuclient: the commands (names and aliases of immudb's immuclient,
 * immudb-api.md section 5.2).
 *
 * Every command checks its arguments, authenticates when it needs to
 * (ic_auth), makes its SDK calls, and prints its result only once all of
 * them succeeded. The safe* / verified* commands and check-consistency go
 * through the SDK's verified calls, which prove the server's answer against
 * the locally trusted state (--dir) and move that state forward.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "immuclient/ic.h"

typedef int (*cmd_fn)(ic_ctx *x, int argc, char **argv);

typedef struct cmd {
  const char *name;
  const char *aliases; /* space-separated, NULL = none */
  int min_args, max_args;
  int auth; /* needs a login (ic_auth) */
  const char *usage;
  const char *help;
  cmd_fn fn;
} cmd;

/* ------------------------------------------------------------------ */
/* helpers                                                             */
/* ------------------------------------------------------------------ */

static void result(ic_ctx *x, const char *msg) {
  if (x->o.json) {
    ic_json j;
    ic_json_begin(&j, stdout);
    ic_json_obj(&j, NULL);
    ic_json_str(&j, "result", msg);
    ic_json_obj_end(&j);
    ic_json_end(&j);
  } else {
    puts(msg);
  }
}

static const uint8_t *B(const char *s) {
  return (const uint8_t *)s;
}

/* Reads all of stdin (the value of `set key` without a value argument). */
static uint8_t *read_stdin(size_t *len) {
  size_t cap = 4096, n = 0;
  uint8_t *buf = ic_xmalloc(cap);
  for (;;) {
    if (n == cap) {
      cap *= 2;
      uint8_t *nb = realloc(buf, cap);
      if (nb == NULL) {
        free(buf);
        fputs("immuclient: out of memory\n", stderr);
        abort();
      }
      buf = nb;
    }
    size_t r = fread(buf + n, 1, cap - n, stdin);
    n += r;
    if (r == 0)
      break;
  }
  *len = n;
  return buf;
}

/* Splits "key@rev" at the last separator when what follows is an integer.
 * *klen gets the key length, *rev the revision (0 = none). */
static void split_revision(ic_ctx *x, const char *arg, size_t *klen,
                           int64_t *rev) {
  const char *sep = x->o.revision_separator;
  size_t n = strlen(arg);
  *klen = n;
  *rev = 0;
  if (sep == NULL || sep[0] == '\0')
    return;
  size_t sl = strlen(sep);
  for (size_t i = n >= sl ? n - sl + 1 : 0; i-- > 0;) {
    if (memcmp(arg + i, sep, sl) != 0)
      continue;
    const char *num = arg + i + sl;
    char *end = NULL;
    if (*num == '\0' || i == 0)
      return;
    errno = 0;
    long long v = strtoll(num, &end, 10);
    if (errno == 0 && *end == '\0' && v != 0) {
      *klen = i;
      *rev = v;
    }
    return;
  }
}

static int parse_tx_id(ic_ctx *x, const char *s, uint64_t *id) {
  if (ic_parse_u64(s, id) != 0 || *id == 0) {
    ic_errorf(x, "invalid tx id '%s' (a positive integer)", s);
    return IC_EXIT_USAGE;
  }
  return 0;
}

static int parse_score(ic_ctx *x, const char *s, double *score) {
  char *end = NULL;
  errno = 0;
  *score = strtod(s, &end);
  if (errno != 0 || end == s || *end != '\0' || isnan(*score)) {
    ic_errorf(x, "invalid score '%s' (a number)", s);
    return IC_EXIT_USAGE;
  }
  return 0;
}

static int parse_perm(ic_ctx *x, const char *s, uint32_t *perm) {
  if (strcmp(s, "read") == 0 || strcmp(s, "r") == 0)
    *perm = IMMU_PERM_READ;
  else if (strcmp(s, "readwrite") == 0 || strcmp(s, "rw") == 0)
    *perm = IMMU_PERM_READWRITE;
  else if (strcmp(s, "admin") == 0)
    *perm = IMMU_PERM_ADMIN;
  else {
    ic_errorf(x, "permission '%s' not recognized (read, readwrite or admin)",
              s);
    return IC_EXIT_USAGE;
  }
  return 0;
}

static const char *perm_name(uint32_t p) {
  switch (p) {
  case IMMU_PERM_READ:
    return "read";
  case IMMU_PERM_READWRITE:
    return "readwrite";
  case IMMU_PERM_ADMIN:
    return "admin";
  case IMMU_PERM_SYSADMIN:
    return "sysadmin";
  default:
    return "unknown";
  }
}

/* Plain/JSON output of a write's tx header. */
static void print_write(ic_ctx *x, const immu_tx_header *h,
                        const char *const *labels, const char *const *vals,
                        const size_t *lens, size_t n, int verified) {
  if (x->o.json) {
    ic_json j;
    ic_json_begin(&j, stdout);
    ic_json_obj(&j, NULL);
    ic_json_u64(&j, "tx", h->id);
    for (size_t i = 0; i < n; i++)
      ic_json_bytes(&j, labels[i], B(vals[i]), lens[i]);
    ic_json_hex(&j, "hash", h->eh.b, sizeof h->eh.b);
    if (verified)
      ic_json_bool(&j, "verified", 1);
    ic_json_obj_end(&j);
    ic_json_end(&j);
    return;
  }
  ic_line("tx", "%llu", (unsigned long long)h->id);
  for (size_t i = 0; i < n; i++)
    ic_line_bytes(labels[i], B(vals[i]), lens[i]);
  ic_line_hex("hash", h->eh.b, sizeof h->eh.b);
  if (verified)
    ic_line("verified", "true");
}

/* ------------------------------------------------------------------ */
/* session                                                             */
/* ------------------------------------------------------------------ */

static int c_login(ic_ctx *x, int argc, char **argv) {
  (void)argc;
  char *pw = NULL;
  const char *p = x->o.password;
  if (p == NULL) {
    pw = ic_read_password("Password:");
    if (pw == NULL)
      return IC_EXIT_USAGE;
    p = pw;
  }
  int rc = ic_login(x, argv[1], p);
  if (pw != NULL) {
    memset(pw, 0, strlen(pw));
    free(pw);
  }
  if (rc != 0)
    return rc;
  char db[IMMU_DB_NAME_MAX + 1];
  immu_client_current_database(x->c, db, sizeof db);
  if (x->o.json) {
    ic_json j;
    ic_json_begin(&j, stdout);
    ic_json_obj(&j, NULL);
    ic_json_str(&j, "result", "Successfully logged in");
    ic_json_str(&j, "user", argv[1]);
    ic_json_str(&j, "database", db);
    ic_json_obj_end(&j);
    ic_json_end(&j);
  } else {
    puts("Successfully logged in");
  }
  return 0;
}

static int c_logout(ic_ctx *x, int argc, char **argv) {
  (void)argc;
  (void)argv;
  int was;
  int rc = ic_logout(x, &was);
  if (rc != 0)
    return rc;
  result(x, was ? "Successfully logged out" : "User not logged in.");
  return 0;
}

static int c_use(ic_ctx *x, int argc, char **argv) {
  (void)argc;
  int rc = ic_use(x, argv[1], 1);
  if (rc != 0)
    return rc;
  char msg[IMMU_DB_NAME_MAX + 32];
  snprintf(msg, sizeof msg, "Now using %s", argv[1]);
  result(x, msg);
  return 0;
}

/* ------------------------------------------------------------------ */
/* server                                                              */
/* ------------------------------------------------------------------ */

static int do_health(ic_ctx *x, int ping) {
  int status = 0;
  char version[128] = "";
  int rc = ic_connect(x);
  if (rc != 0)
    return rc;
  rc = immu_client_health(x->c, &status, version, sizeof version);
  if (rc != 0)
    return ic_fail(x, rc, "health");
  if (x->o.json) {
    ic_json j;
    ic_json_begin(&j, stdout);
    ic_json_obj(&j, NULL);
    ic_json_bool(&j, "status", status);
    ic_json_str(&j, "version", version);
    ic_json_obj_end(&j);
    ic_json_end(&j);
  } else {
    if (ping)
      puts(status ? "Health check OK" : "Health check FAILED");
    else
      ic_line("status", "%s", status ? "true" : "false");
    ic_line("version", "%s", version);
  }
  return status ? 0 : IC_EXIT_ERR;
}

static int c_status(ic_ctx *x, int argc, char **argv) {
  (void)argc;
  (void)argv;
  return do_health(x, 1);
}

static int c_health(ic_ctx *x, int argc, char **argv) {
  (void)argc;
  (void)argv;
  return do_health(x, 0);
}

static int c_info(ic_ctx *x, int argc, char **argv) {
  (void)argc;
  (void)argv;
  immu_client_info in;
  char tbuf[64];
  int rc = ic_connect(x);
  if (rc != 0)
    return rc;
  rc = immu_client_server_info(x->c, &in);
  if (rc != 0)
    return ic_fail(x, rc, "info");
  if (x->o.json) {
    ic_json j;
    ic_json_begin(&j, stdout);
    ic_json_obj(&j, NULL);
    ic_json_str(&j, "version", in.version);
    ic_fmt_time(tbuf, sizeof tbuf, in.started_at, 1);
    ic_json_str(&j, "startedAt", tbuf);
    ic_json_i64(&j, "numTransactions", in.num_transactions);
    ic_json_i64(&j, "numDatabases", in.num_databases);
    ic_json_i64(&j, "databasesDiskSize", in.databases_disk_size);
    ic_json_obj_end(&j);
    ic_json_end(&j);
  } else {
    ic_fmt_time(tbuf, sizeof tbuf, in.started_at, 0);
    ic_line("version", "%s", in.version);
    ic_line("started at", "%s", tbuf);
    ic_line("transactions", "%lld", (long long)in.num_transactions);
    ic_line("databases", "%d", (int)in.num_databases);
    ic_line("disk size", "%lld", (long long)in.databases_disk_size);
  }
  return 0;
}

static int c_version(ic_ctx *x, int argc, char **argv) {
  (void)argc;
  (void)argv;
  if (x->o.json) {
    ic_json j;
    ic_json_begin(&j, stdout);
    ic_json_obj(&j, NULL);
    ic_json_str(&j, "component", "immuclient");
    ic_json_str(&j, "version", IC_VERSION);
    ic_json_obj_end(&j);
    ic_json_end(&j);
  } else {
    printf("immuclient %s (C)\n", IC_VERSION);
  }
  return 0;
}

static int c_current(ic_ctx *x, int argc, char **argv) {
  (void)argc;
  (void)argv;
  immu_client_state st;
  int rc = immu_client_current_state(x->c, &st);
  if (rc != 0)
    return ic_fail(x, rc, "current state");
  if (st.db[0] == '\0') /* the SDK leaves it empty for an empty database */
    immu_client_current_database(x->c, st.db, sizeof st.db);
  ic_print_state(x, &st);
  return 0;
}

/* ------------------------------------------------------------------ */
/* KV                                                                  */
/* ------------------------------------------------------------------ */

static int do_set(ic_ctx *x, int argc, char **argv, int verified) {
  immu_tx_header h;
  uint8_t *in = NULL;
  const uint8_t *val;
  size_t vlen;
  const char *key = argv[1];
  int rc;

  if (key[0] == '\0') {
    ic_errorf(x, "the key must not be empty");
    return IC_EXIT_USAGE;
  }
  if (argc > 2) {
    val = B(argv[2]);
    vlen = strlen(argv[2]);
  } else {
    in = read_stdin(&vlen);
    val = in;
  }
  if (verified) {
    immu_db_kv kv = {B(key), strlen(key), val, vlen};
    rc = immu_client_verified_set(x->c, &kv, 1, &h);
  } else {
    rc = immu_client_set(x->c, B(key), strlen(key), val, vlen, &h);
  }
  if (rc != 0) {
    free(in);
    return ic_fail(x, rc, verified ? "safeset" : "set");
  }
  immu_client_entry e;
  memset(&e, 0, sizeof e);
  e.tx = h.id;
  e.key = (uint8_t *)(uintptr_t)B(key);
  e.key_len = strlen(key);
  e.value = (uint8_t *)(uintptr_t)val;
  e.value_len = vlen;
  ic_print_entry(x, &e, verified);
  free(in);
  return 0;
}

static int c_set(ic_ctx *x, int argc, char **argv) {
  return do_set(x, argc, argv, 0);
}

static int c_safeset(ic_ctx *x, int argc, char **argv) {
  return do_set(x, argc, argv, 1);
}

static int do_get(ic_ctx *x, int argc, char **argv, int verified) {
  (void)argc;
  immu_db_key_req req;
  immu_client_entry e;
  size_t klen;
  int64_t rev;
  int rc;

  memset(&req, 0, sizeof req);
  memset(&e, 0, sizeof e);
  split_revision(x, argv[1], &klen, &rev);
  if (klen == 0) {
    ic_errorf(x, "the key must not be empty");
    return IC_EXIT_USAGE;
  }
  req.key = B(argv[1]);
  req.key_len = klen;
  req.at_revision = rev;
  rc = verified ? immu_client_verified_get(x->c, &req, &e)
                : immu_client_get(x->c, &req, &e);
  if (rc != 0)
    return ic_fail(x, rc, verified ? "safeget" : "get");
  ic_print_entry(x, &e, verified);
  immu_client_entry_clear(&e);
  return 0;
}

static int c_get(ic_ctx *x, int argc, char **argv) {
  return do_get(x, argc, argv, 0);
}

static int c_safeget(ic_ctx *x, int argc, char **argv) {
  return do_get(x, argc, argv, 1);
}

static int c_delete(ic_ctx *x, int argc, char **argv) {
  (void)argc;
  immu_buf k = {argv[1], strlen(argv[1])};
  immu_tx_header h;
  int rc = immu_client_delete(x->c, &k, 1, 0, 0, &h);
  if (rc != 0)
    return ic_fail(x, rc, "delete");
  const char *labels[] = {"key"};
  const char *vals[] = {argv[1]};
  size_t lens[] = {strlen(argv[1])};
  print_write(x, &h, labels, vals, lens, 1, 0);
  return 0;
}

static int c_restore(ic_ctx *x, int argc, char **argv) {
  (void)argc;
  immu_db_key_req req;
  immu_client_entry e;
  immu_tx_header h;
  size_t klen;
  int64_t rev;

  memset(&req, 0, sizeof req);
  memset(&e, 0, sizeof e);
  split_revision(x, argv[1], &klen, &rev);
  if (rev == 0 || klen == 0) {
    ic_errorf(x, "restore needs key%srevision (e.g. mykey%s2)",
              x->o.revision_separator, x->o.revision_separator);
    return IC_EXIT_USAGE;
  }
  req.key = B(argv[1]);
  req.key_len = klen;
  req.at_revision = rev;
  int rc = immu_client_get(x->c, &req, &e);
  if (rc != 0)
    return ic_fail(x, rc, "restore");
  rc = immu_client_set(x->c, e.key, e.key_len, e.value, e.value_len, &h);
  if (rc != 0) {
    immu_client_entry_clear(&e);
    return ic_fail(x, rc, "restore");
  }
  e.tx = h.id;
  e.revision = 0;
  e.has_referenced_by = 0;
  ic_print_entry(x, &e, 0);
  immu_client_entry_clear(&e);
  return 0;
}

static int c_history(ic_ctx *x, int argc, char **argv) {
  (void)argc;
  immu_db_history_req req;
  immu_client_entries l = {NULL, 0};
  memset(&req, 0, sizeof req);
  req.key = B(argv[1]);
  req.key_len = strlen(argv[1]);
  int rc = immu_client_history(x->c, &req, &l);
  if (rc != 0)
    return ic_fail(x, rc, "history");
  ic_print_entries(x, &l);
  immu_client_entries_clear(&l);
  return 0;
}

static int c_scan(ic_ctx *x, int argc, char **argv) {
  immu_db_scan_req req;
  immu_client_entries l = {NULL, 0};
  memset(&req, 0, sizeof req);
  if (argc > 1) {
    req.prefix = B(argv[1]);
    req.prefix_len = strlen(argv[1]);
  }
  int rc = immu_client_scan(x->c, &req, &l);
  if (rc != 0)
    return ic_fail(x, rc, "scan");
  ic_print_entries(x, &l);
  immu_client_entries_clear(&l);
  return 0;
}

static int c_count(ic_ctx *x, int argc, char **argv) {
  uint64_t n = 0;
  int rc = argc > 1 ? immu_client_count(x->c, B(argv[1]), strlen(argv[1]), &n)
                    : immu_client_count_all(x->c, &n);
  if (rc != 0)
    return ic_fail(x, rc, "count");
  if (x->o.json) {
    ic_json j;
    ic_json_begin(&j, stdout);
    ic_json_obj(&j, NULL);
    ic_json_u64(&j, "count", n);
    ic_json_obj_end(&j);
    ic_json_end(&j);
  } else {
    printf("%llu\n", (unsigned long long)n);
  }
  return 0;
}

/* ------------------------------------------------------------------ */
/* references and sorted sets                                          */
/* ------------------------------------------------------------------ */

static int do_reference(ic_ctx *x, int argc, char **argv, int verified) {
  immu_db_ref_req req;
  immu_tx_header h;
  memset(&req, 0, sizeof req);
  req.key = B(argv[1]);
  req.key_len = strlen(argv[1]);
  req.referenced_key = B(argv[2]);
  req.referenced_key_len = strlen(argv[2]);
  if (argc > 3) {
    int rc = parse_tx_id(x, argv[3], &req.at_tx);
    if (rc != 0)
      return rc;
    req.bound_ref = 1;
  }
  int rc = verified ? immu_client_verified_set_reference(x->c, &req, &h)
                    : immu_client_set_reference(x->c, &req, &h);
  if (rc != 0)
    return ic_fail(x, rc, verified ? "safereference" : "reference");
  const char *labels[] = {"key", "referenced key"};
  const char *vals[] = {argv[1], argv[2]};
  size_t lens[] = {strlen(argv[1]), strlen(argv[2])};
  print_write(x, &h, labels, vals, lens, 2, verified);
  return 0;
}

static int c_reference(ic_ctx *x, int argc, char **argv) {
  return do_reference(x, argc, argv, 0);
}

static int c_safereference(ic_ctx *x, int argc, char **argv) {
  return do_reference(x, argc, argv, 1);
}

static int do_zadd(ic_ctx *x, int argc, char **argv, int verified) {
  immu_db_zadd_req req;
  immu_tx_header h;
  int rc;
  memset(&req, 0, sizeof req);
  if ((rc = parse_score(x, argv[2], &req.score)) != 0)
    return rc;
  req.set = B(argv[1]);
  req.set_len = strlen(argv[1]);
  req.key = B(argv[3]);
  req.key_len = strlen(argv[3]);
  if (argc > 4) {
    if ((rc = parse_tx_id(x, argv[4], &req.at_tx)) != 0)
      return rc;
    req.bound_ref = 1;
  }
  rc = verified ? immu_client_verified_zadd(x->c, &req, &h)
                : immu_client_zadd(x->c, &req, &h);
  if (rc != 0)
    return ic_fail(x, rc, verified ? "safezadd" : "zadd");
  if (x->o.json) {
    ic_json j;
    ic_json_begin(&j, stdout);
    ic_json_obj(&j, NULL);
    ic_json_u64(&j, "tx", h.id);
    ic_json_bytes(&j, "set", req.set, req.set_len);
    ic_json_bytes(&j, "key", req.key, req.key_len);
    ic_json_dbl(&j, "score", req.score);
    ic_json_hex(&j, "hash", h.eh.b, sizeof h.eh.b);
    if (verified)
      ic_json_bool(&j, "verified", 1);
    ic_json_obj_end(&j);
    ic_json_end(&j);
  } else {
    ic_line("tx", "%llu", (unsigned long long)h.id);
    ic_line("set", "%s", argv[1]);
    ic_line("referenced key", "%s", argv[3]);
    ic_line("score", "%f", req.score);
    ic_line_hex("hash", h.eh.b, sizeof h.eh.b);
    if (verified)
      ic_line("verified", "true");
  }
  return 0;
}

static int c_zadd(ic_ctx *x, int argc, char **argv) {
  return do_zadd(x, argc, argv, 0);
}

static int c_safezadd(ic_ctx *x, int argc, char **argv) {
  return do_zadd(x, argc, argv, 1);
}

static int c_zscan(ic_ctx *x, int argc, char **argv) {
  (void)argc;
  immu_db_zscan_req req;
  immu_client_zentries l = {NULL, 0};
  memset(&req, 0, sizeof req);
  req.set = B(argv[1]);
  req.set_len = strlen(argv[1]);
  int rc = immu_client_zscan(x->c, &req, &l);
  if (rc != 0)
    return ic_fail(x, rc, "zscan");
  ic_print_zentries(x, &l);
  immu_client_zentries_clear(&l);
  return 0;
}

/* ------------------------------------------------------------------ */
/* transactions and consistency                                        */
/* ------------------------------------------------------------------ */

static int do_tx(ic_ctx *x, int argc, char **argv, int verified) {
  (void)argc;
  uint64_t id;
  immu_client_tx tx;
  int rc = parse_tx_id(x, argv[1], &id);
  if (rc != 0)
    return rc;
  memset(&tx, 0, sizeof tx);
  rc = verified ? immu_client_verified_tx_by_id(x->c, id, &tx)
                : immu_client_tx_by_id(x->c, id, &tx);
  if (rc != 0)
    return ic_fail(x, rc, verified ? "safetx" : "tx");
  ic_print_tx(x, &tx, verified);
  immu_client_tx_clear(&tx);
  return 0;
}

static int c_tx(ic_ctx *x, int argc, char **argv) {
  return do_tx(x, argc, argv, 0);
}

static int c_safetx(ic_ctx *x, int argc, char **argv) {
  return do_tx(x, argc, argv, 1);
}

static int c_txscan(ic_ctx *x, int argc, char **argv) {
  immu_db_tx_scan_req req;
  immu_client_tx_list l = {NULL, 0};
  uint64_t v;
  memset(&req, 0, sizeof req);
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "desc") == 0) {
      req.desc = 1;
    } else if (strcmp(argv[i], "asc") == 0) {
      req.desc = 0;
    } else if (ic_parse_u64(argv[i], &v) == 0 && i == 1) {
      req.initial_tx = v;
    } else if (ic_parse_u64(argv[i], &v) == 0 && i == 2 && v <= UINT32_MAX) {
      req.limit = (uint32_t)v;
    } else {
      ic_errorf(x,
                "txscan: bad argument '%s' (usage: txscan [initialTx] "
                "[limit] [asc|desc])",
                argv[i]);
      return IC_EXIT_USAGE;
    }
  }
  int rc = immu_client_tx_scan(x->c, &req, &l);
  if (rc != 0)
    return ic_fail(x, rc, "txscan");
  ic_print_txs(x, &l);
  immu_client_tx_list_clear(&l);
  return 0;
}

static int c_check_consistency(ic_ctx *x, int argc, char **argv) {
  uint64_t id;
  immu_digest want;
  immu_client_tx tx;
  int rc = parse_tx_id(x, argv[1], &id);
  if (rc != 0)
    return rc;
  if (argc > 2 && immu_digest_from_hex(argv[2], &want) != 0) {
    ic_errorf(x, "invalid hash '%s' (64 hex digits)", argv[2]);
    return IC_EXIT_USAGE;
  }
  memset(&tx, 0, sizeof tx);
  /* Proves tx |id| against the trusted state (dual proof) and advances
   * that state: the server's history up to |id| is consistent with every
   * state this client trusted before. */
  rc = immu_client_verified_tx_by_id(x->c, id, &tx);
  if (rc != 0)
    return ic_fail(x, rc, "check-consistency");
  int ok = argc <= 2 || immu_digest_eq(&want, &tx.alh);
  if (x->o.json) {
    ic_json j;
    ic_json_begin(&j, stdout);
    ic_json_obj(&j, NULL);
    ic_json_bool(&j, "verified", ok);
    ic_json_u64(&j, "tx", id);
    ic_json_hex(&j, "hash", tx.alh.b, sizeof tx.alh.b);
    if (argc > 2)
      ic_json_hex(&j, "expectedHash", want.b, sizeof want.b);
    ic_json_obj_end(&j);
    ic_json_end(&j);
  } else {
    ic_line("verified", "%s", ok ? "true" : "false");
    ic_line("tx", "%llu", (unsigned long long)id);
    ic_line_hex("hash", tx.alh.b, sizeof tx.alh.b);
  }
  immu_client_tx_clear(&tx);
  if (!ok) {
    char h[65];
    ic_hex(h, want.b, sizeof want.b);
    fflush(stdout);
    fprintf(stderr,
            "immuclient: check-consistency: the proven hash of tx %llu is "
            "not %s (possible tampering)\n",
            (unsigned long long)id, h);
    return IC_EXIT_TAMPERED;
  }
  return 0;
}

/* ------------------------------------------------------------------ */
/* databases and users                                                 */
/* ------------------------------------------------------------------ */

static int c_database(ic_ctx *x, int argc, char **argv) {
  int rc;
  if (strcmp(argv[1], "list") == 0 && argc == 2) {
    immu_client_db_list l = {NULL, 0};
    char cur[IMMU_DB_NAME_MAX + 1];
    rc = immu_client_database_list(x->c, &l);
    if (rc != 0)
      return ic_fail(x, rc, "database list");
    immu_client_current_database(x->c, cur, sizeof cur);
    if (x->o.json) {
      ic_json j;
      ic_json_begin(&j, stdout);
      ic_json_arr(&j, NULL);
      for (size_t i = 0; i < l.n; i++)
        ic_json_str(&j, NULL, l.v[i].name);
      ic_json_arr_end(&j);
      ic_json_end(&j);
    } else {
      for (size_t i = 0; i < l.n; i++)
        printf("%s%s\n", strcmp(l.v[i].name, cur) == 0 ? "*" : "", l.v[i].name);
    }
    immu_client_db_list_clear(&l);
    return 0;
  }
  if (strcmp(argv[1], "create") == 0 && argc == 3) {
    rc = immu_client_create_database_v2(x->c, argv[2], NULL, 0, NULL);
    if (rc != 0)
      return ic_fail(x, rc, "database create");
    result(x, "database successfully created");
    return 0;
  }
  ic_errorf(x, "usage: database list | database create <name>");
  return IC_EXIT_USAGE;
}

static int user_list(ic_ctx *x) {
  immu_client_user_list l = {NULL, 0};
  int rc = immu_client_list_users(x->c, &l);
  if (rc != 0)
    return ic_fail(x, rc, "user list");
  if (x->o.json) {
    ic_json j;
    ic_json_begin(&j, stdout);
    ic_json_arr(&j, NULL);
    for (size_t i = 0; i < l.n; i++) {
      ic_json_obj(&j, NULL);
      ic_json_str(&j, "user", l.v[i].user);
      ic_json_bool(&j, "active", l.v[i].active);
      ic_json_str(&j, "createdBy", l.v[i].created_by ? l.v[i].created_by : "");
      ic_json_str(&j, "createdAt", l.v[i].created_at ? l.v[i].created_at : "");
      ic_json_arr(&j, "permissions");
      for (size_t k = 0; k < l.v[i].nperms; k++) {
        ic_json_obj(&j, NULL);
        ic_json_str(&j, "database", l.v[i].perms[k].database);
        ic_json_str(&j, "permission", perm_name(l.v[i].perms[k].permission));
        ic_json_obj_end(&j);
      }
      ic_json_arr_end(&j);
      ic_json_obj_end(&j);
    }
    ic_json_arr_end(&j);
    ic_json_end(&j);
  } else {
    for (size_t i = 0; i < l.n; i++) {
      if (i > 0)
        putchar('\n');
      ic_line("user", "%s", l.v[i].user);
      ic_line("active", "%s", l.v[i].active ? "true" : "false");
      if (l.v[i].created_by && l.v[i].created_by[0])
        ic_line("creator", "%s", l.v[i].created_by);
      if (l.v[i].created_at && l.v[i].created_at[0])
        ic_line("created", "%s", l.v[i].created_at);
      for (size_t k = 0; k < l.v[i].nperms; k++)
        ic_line("perm", "%s on %s", perm_name(l.v[i].perms[k].permission),
                l.v[i].perms[k].database);
    }
  }
  immu_client_user_list_clear(&l);
  return 0;
}

static int c_user(ic_ctx *x, int argc, char **argv) {
  const char *sub = argv[1];
  char msg[512];
  uint32_t perm;
  int rc;

  if (strcmp(sub, "list") == 0 && argc == 2)
    return user_list(x);
  if (strcmp(sub, "create") == 0 && argc == 5) {
    if ((rc = parse_perm(x, argv[3], &perm)) != 0)
      return rc;
    snprintf(msg, sizeof msg, "Choose a password for %s:", argv[2]);
    char *pw = ic_read_password(msg);
    if (pw == NULL)
      return IC_EXIT_USAGE;
    rc = immu_client_create_user(x->c, argv[2], pw, perm, argv[4]);
    memset(pw, 0, strlen(pw));
    free(pw);
    if (rc != 0)
      return ic_fail(x, rc, "user create");
    snprintf(msg, sizeof msg, "Created user %s", argv[2]);
    result(x, msg);
    return 0;
  }
  if (strcmp(sub, "changepassword") == 0 && argc == 3) {
    char *old = ic_read_password("Old password:");
    if (old == NULL)
      return IC_EXIT_USAGE;
    snprintf(msg, sizeof msg, "Choose a password for %s:", argv[2]);
    char *nw = ic_read_password(msg);
    if (nw == NULL) {
      free(old);
      return IC_EXIT_USAGE;
    }
    rc = immu_client_change_password(x->c, argv[2], old, nw);
    memset(old, 0, strlen(old));
    memset(nw, 0, strlen(nw));
    free(old);
    free(nw);
    if (rc != 0)
      return ic_fail(x, rc, "user changepassword");
    snprintf(msg, sizeof msg, "Password of %s was changed successfully",
             argv[2]);
    result(x, msg);
    return 0;
  }
  if (strcmp(sub, "permission") == 0 && argc == 6) {
    int action;
    if (strcmp(argv[2], "grant") == 0)
      action = IMMU_PERM_GRANT;
    else if (strcmp(argv[2], "revoke") == 0)
      action = IMMU_PERM_REVOKE;
    else {
      ic_errorf(x, "wrong permission action '%s' (grant or revoke)", argv[2]);
      return IC_EXIT_USAGE;
    }
    if ((rc = parse_perm(x, argv[4], &perm)) != 0)
      return rc;
    rc = immu_client_change_permission(x->c, action, argv[3], argv[5], perm);
    if (rc != 0)
      return ic_fail(x, rc, "user permission");
    result(x, "Permission changed successfully");
    return 0;
  }
  if ((strcmp(sub, "activate") == 0 || strcmp(sub, "deactivate") == 0) &&
      argc == 3) {
    rc = immu_client_set_active_user(x->c, argv[2], sub[0] == 'a');
    if (rc != 0)
      return ic_fail(x, rc, "user status");
    result(x, "User status changed successfully");
    return 0;
  }
  ic_errorf(x, "usage: user list | user create <user> "
               "<read|readwrite|admin> <database> | user changepassword "
               "<user> | user permission <grant|revoke> <user> "
               "<read|readwrite|admin> <database> | user "
               "<activate|deactivate> <user>");
  return IC_EXIT_USAGE;
}

static int c_help(ic_ctx *x, int argc, char **argv);

/* ------------------------------------------------------------------ */
/* the table                                                           */
/* ------------------------------------------------------------------ */

static const cmd CMDS[] = {
    {"login", "l", 1, 1, 0, "login <username>",
     "login (password from --password, IMMUCLIENT_PASSWORD, the terminal "
     "or stdin); keeps the token in --tokenfile",
     c_login},
    {"logout", "x", 0, 0, 0, "logout", "logout and delete the token file",
     c_logout},
    {"use", "usedb", 1, 1, 1, "use <database>", "select the database", c_use},
    {"status", "p ping", 0, 0, 0, "status",
     "ping the server (health check and version)", c_status},
    {"health", NULL, 0, 0, 0, "health", "server health and version", c_health},
    {"info", NULL, 0, 0, 0, "info", "server information", c_info},
    {"version", NULL, 0, 0, 0, "version", "immuclient version", c_version},
    {"current", "crt state", 0, 0, 1, "current",
     "the server's current state of the database (tx id and hash)", c_current},
    {"set", "s", 1, 2, 1, "set <key> [value]",
     "add or update a key (value from stdin when not given)", c_set},
    {"safeset", "ss verifiedset verifiedSet", 1, 2, 1, "safeset <key> [value]",
     "set, proven in a tx consistent with the trusted state", c_safeset},
    {"get", "g", 1, 1, 1, "get <key>[@revision]",
     "latest value of a key (or the given revision; negative = relative)",
     c_get},
    {"safeget", "sg verifiedget verifiedGet", 1, 1, 1,
     "safeget <key>[@revision]", "get, proven against the trusted state",
     c_safeget},
    {"delete", "del", 1, 1, 1, "delete <key>", "logical deletion of a key",
     c_delete},
    {"restore", NULL, 1, 1, 1, "restore <key>@<revision>",
     "set a key to the value of an older revision", c_restore},
    {"history", "h", 1, 1, 1, "history <key>", "every value of a key",
     c_history},
    {"scan", "scn", 0, 1, 1, "scan [prefix]", "keys with the given prefix",
     c_scan},
    {"count", "cnt", 0, 1, 1, "count [prefix]",
     "number of keys with the given prefix", c_count},
    {"reference", "r setReference setreference", 2, 3, 1,
     "reference <refkey> <key> [atTx]", "add a reference to a key",
     c_reference},
    {"safereference",
     "sr verifiedreference verifiedSetReference verifiedsetreference", 2, 3, 1,
     "safereference <refkey> <key> [atTx]",
     "reference, proven against the trusted state", c_safereference},
    {"zadd", "za", 3, 4, 1, "zadd <set> <score> <key> [atTx]",
     "add a key to a sorted set", c_zadd},
    {"safezadd", "sza verifiedzadd verifiedZAdd", 3, 4, 1,
     "safezadd <set> <score> <key> [atTx]",
     "zadd, proven against the trusted state", c_safezadd},
    {"zscan", "zscn", 1, 1, 1, "zscan <set>", "members of a sorted set",
     c_zscan},
    {"tx", "txbyid", 1, 1, 1, "tx <id>", "a transaction by id", c_tx},
    {"safetx", "stx verifiedtx verifiedTx", 1, 1, 1, "safetx <id>",
     "a transaction by id, proven against the trusted state", c_safetx},
    {"txscan", "txs", 0, 3, 1, "txscan [initialTx] [limit] [asc|desc]",
     "transactions from a given id", c_txscan},
    {"check-consistency", "c consistency", 1, 2, 1,
     "check-consistency <tx> [hash]",
     "prove tx (and its hash, if given) against the trusted state",
     c_check_consistency},
    {"database", "db", 1, 2, 1, "database list | database create <name>",
     "list or create databases", c_database},
    {"user", NULL, 1, 5, 1,
     "user list|create|changepassword|permission|activate|deactivate ...",
     "user management (new passwords from the terminal or stdin)", c_user},
    {"help", NULL, 0, 1, 0, "help [command]", "help about a command", c_help},
};

#define NCMDS (sizeof(CMDS) / sizeof(CMDS[0]))

static const cmd *find_cmd(const char *name) {
  for (size_t i = 0; i < NCMDS; i++) {
    if (strcmp(CMDS[i].name, name) == 0)
      return &CMDS[i];
    const char *a = CMDS[i].aliases;
    size_t n = strlen(name);
    while (a != NULL && *a) {
      size_t l = strcspn(a, " ");
      if (l == n && strncmp(a, name, n) == 0)
        return &CMDS[i];
      a += l;
      while (*a == ' ')
        a++;
    }
  }
  return NULL;
}

const char *ic_command_name(size_t i) {
  return i < NCMDS ? CMDS[i].name : NULL;
}

void ic_commands_help(FILE *f) {
  for (size_t i = 0; i < NCMDS; i++) {
    fprintf(f, "  %-44s %s", CMDS[i].usage, CMDS[i].help);
    if (CMDS[i].aliases != NULL)
      fprintf(f, " [aliases: %s]", CMDS[i].aliases);
    fputc('\n', f);
  }
  fprintf(f, "  %-44s %s\n", "it", "interactive mode (line editing, history)");
  fprintf(f, "  %-44s %s\n", "audit-mode",
          "auditor: proves the server's states at every --audit-interval");
}

static int c_help(ic_ctx *x, int argc, char **argv) {
  if (argc < 2) {
    ic_usage(stdout);
    return 0;
  }
  const cmd *c = find_cmd(argv[1]);
  if (c == NULL) {
    ic_errorf(x, "unknown command \"%s\"", argv[1]);
    return IC_EXIT_USAGE;
  }
  printf("%s\n  %s\n", c->usage, c->help);
  if (c->aliases != NULL)
    printf("  aliases: %s\n", c->aliases);
  return 0;
}

int ic_run_command(ic_ctx *x, int argc, char **argv) {
  const cmd *c = find_cmd(argv[0]);
  if (c == NULL) {
    ic_errorf(x, "unknown command \"%s\" (see immuclient help)", argv[0]);
    return IC_EXIT_USAGE;
  }
  int nargs = argc - 1;
  if (nargs < c->min_args || nargs > c->max_args) {
    ic_errorf(x, "%s: wrong number of arguments (usage: %s)", c->name,
              c->usage);
    return IC_EXIT_USAGE;
  }
  if (c->auth) {
    int rc = ic_auth(x);
    if (rc != 0)
      return rc;
  }
  int rc = c->fn(x, argc, argv);
  fflush(stdout);
  return rc;
}
