/* SPDX-License-Identifier: Apache-2.0 */
/*
 * immuclient: output.
 *
 * Three forms, as in immudb's immuclient (cmd/immuclient/immuc/print.go):
 *   plain         "label:" + padding + value, one field per line
 *                 ("tx:       1", "key:      k", "verified: true");
 *                 several results are separated by a blank line
 *   --value-only  only the values, one per line
 *   --json        one JSON document per command on stdout (keys and
 *                 values as strings, invalid UTF-8 replaced by U+FFFD,
 *                 hashes in hex, 64-bit numbers as JSON numbers)
 * Errors are one line on stderr ("immuclient: ..."), plus
 * {"error": "..."} on stdout with --json.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "immuclient/ic.h"

#define LABEL_WIDTH 10

/* ------------------------------------------------------------------ */
/* messages                                                            */
/* ------------------------------------------------------------------ */

void ic_errorf(ic_ctx *x, const char *fmt, ...) {
  char msg[2048];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  /* One line: newlines of server messages become spaces. */
  for (char *p = msg; *p; p++)
    if (*p == '\n' || *p == '\r')
      *p = ' ';
  fflush(stdout);
  fprintf(stderr, "immuclient: %s\n", msg);
  if (x != NULL && x->o.json) {
    ic_json j;
    ic_json_begin(&j, stdout);
    ic_json_obj(&j, NULL);
    ic_json_str(&j, "error", msg);
    ic_json_obj_end(&j);
    ic_json_end(&j);
  }
}

void ic_warnf(const char *fmt, ...) {
  va_list ap;
  fflush(stdout);
  fputs("immuclient: warning: ", stderr);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
}

/* ------------------------------------------------------------------ */
/* plain lines                                                         */
/* ------------------------------------------------------------------ */

static void label(const char *l) {
  int n = printf("%s:", l);
  do
    putchar(' ');
  while (++n < LABEL_WIDTH);
}

void ic_line(const char *l, const char *fmt, ...) {
  va_list ap;
  label(l);
  va_start(ap, fmt);
  vprintf(fmt, ap);
  va_end(ap);
  putchar('\n');
}

void ic_line_bytes(const char *l, const uint8_t *b, size_t n) {
  label(l);
  if (n > 0)
    fwrite(b, 1, n, stdout);
  putchar('\n');
}

void ic_hex(char *out, const uint8_t *b, size_t n) {
  static const char hx[] = "0123456789abcdef";
  for (size_t i = 0; i < n; i++) {
    out[2 * i] = hx[b[i] >> 4];
    out[2 * i + 1] = hx[b[i] & 15];
  }
  out[2 * n] = '\0';
}

void ic_line_hex(const char *l, const uint8_t *b, size_t n) {
  char *h = ic_xmalloc(2 * n + 1);
  ic_hex(h, b, n);
  ic_line(l, "%s", h);
  free(h);
}

void ic_fmt_time(char *buf, size_t cap, int64_t ts, int utc_rfc3339) {
  time_t t = (time_t)ts;
  struct tm tm;
  if (utc_rfc3339) {
    gmtime_r(&t, &tm);
    strftime(buf, cap, "%Y-%m-%dT%H:%M:%SZ", &tm);
  } else {
    localtime_r(&t, &tm);
    strftime(buf, cap, "%Y-%m-%d %H:%M:%S %z %Z", &tm);
  }
}

/* ------------------------------------------------------------------ */
/* JSON                                                                */
/* ------------------------------------------------------------------ */

void ic_json_begin(ic_json *j, FILE *f) {
  memset(j, 0, sizeof *j);
  j->f = f;
  j->first[0] = 1;
}

void ic_json_end(ic_json *j) {
  fputc('\n', j->f);
  fflush(j->f);
}

static void json_raw_str(FILE *f, const uint8_t *s, size_t n) {
  fputc('"', f);
  for (size_t i = 0; i < n;) {
    uint8_t c = s[i];
    if (c == '"' || c == '\\') {
      fputc('\\', f);
      fputc(c, f);
      i++;
    } else if (c < 0x20 || c == 0x7f) {
      switch (c) {
      case '\n':
        fputs("\\n", f);
        break;
      case '\t':
        fputs("\\t", f);
        break;
      case '\r':
        fputs("\\r", f);
        break;
      default:
        fprintf(f, "\\u%04x", c);
      }
      i++;
    } else if (c < 0x80) {
      fputc(c, f);
      i++;
    } else {
      /* Copy one valid UTF-8 sequence, or write U+FFFD for a bad byte. */
      size_t len = c >= 0xf0 && c <= 0xf4   ? 4
                   : c >= 0xe0              ? 3
                   : c >= 0xc2 && c <= 0xdf ? 2
                                            : 0;
      int ok = len > 0 && i + len <= n && !(c >= 0xf8);
      for (size_t k = 1; ok && k < len; k++)
        if ((s[i + k] & 0xc0) != 0x80)
          ok = 0;
      if (ok && len == 3) {
        /* no overlongs, no surrogates */
        if ((c == 0xe0 && s[i + 1] < 0xa0) || (c == 0xed && s[i + 1] >= 0xa0))
          ok = 0;
      } else if (ok && len == 4) {
        if ((c == 0xf0 && s[i + 1] < 0x90) || (c == 0xf4 && s[i + 1] >= 0x90))
          ok = 0;
      }
      if (ok) {
        fwrite(s + i, 1, len, f);
        i += len;
      } else {
        fputs("\\ufffd", f);
        i++;
      }
    }
  }
  fputc('"', f);
}

static void json_key(ic_json *j, const char *key) {
  if (!j->first[j->depth])
    fputc(',', j->f);
  j->first[j->depth] = 0;
  if (key != NULL) {
    json_raw_str(j->f, (const uint8_t *)key, strlen(key));
    fputc(':', j->f);
  }
}

void ic_json_obj(ic_json *j, const char *key) {
  json_key(j, key);
  fputc('{', j->f);
  if (j->depth + 1 < (int)sizeof j->first)
    j->depth++;
  j->first[j->depth] = 1;
}

void ic_json_obj_end(ic_json *j) {
  fputc('}', j->f);
  if (j->depth > 0)
    j->depth--;
}

void ic_json_arr(ic_json *j, const char *key) {
  json_key(j, key);
  fputc('[', j->f);
  if (j->depth + 1 < (int)sizeof j->first)
    j->depth++;
  j->first[j->depth] = 1;
}

void ic_json_arr_end(ic_json *j) {
  fputc(']', j->f);
  if (j->depth > 0)
    j->depth--;
}

void ic_json_str(ic_json *j, const char *key, const char *s) {
  json_key(j, key);
  json_raw_str(j->f, (const uint8_t *)s, strlen(s));
}

void ic_json_bytes(ic_json *j, const char *key, const uint8_t *b, size_t n) {
  json_key(j, key);
  json_raw_str(j->f, b, n);
}

void ic_json_hex(ic_json *j, const char *key, const uint8_t *b, size_t n) {
  char *h = ic_xmalloc(2 * n + 1);
  ic_hex(h, b, n);
  ic_json_str(j, key, h);
  free(h);
}

void ic_json_u64(ic_json *j, const char *key, uint64_t v) {
  json_key(j, key);
  fprintf(j->f, "%llu", (unsigned long long)v);
}

void ic_json_i64(ic_json *j, const char *key, int64_t v) {
  json_key(j, key);
  fprintf(j->f, "%lld", (long long)v);
}

void ic_json_dbl(ic_json *j, const char *key, double v) {
  json_key(j, key);
  if (isfinite(v))
    fprintf(j->f, "%.17g", v);
  else
    fputs("null", j->f);
}

void ic_json_bool(ic_json *j, const char *key, int v) {
  json_key(j, key);
  fputs(v ? "true" : "false", j->f);
}

/* ------------------------------------------------------------------ */
/* result shapes                                                       */
/* ------------------------------------------------------------------ */

static void json_entry_fields(ic_json *j, const immu_client_entry *e,
                              int verified) {
  ic_json_bytes(j, "key", e->key, e->key_len);
  ic_json_bytes(j, "value", e->value, e->value_len);
  ic_json_u64(j, "tx", e->tx);
  if (e->revision != 0)
    ic_json_u64(j, "revision", e->revision);
  if (verified)
    ic_json_bool(j, "verified", 1);
  if (e->has_referenced_by) {
    ic_json_obj(j, "referencedBy");
    ic_json_bytes(j, "key", e->referenced_by.key, e->referenced_by.key_len);
    ic_json_u64(j, "tx", e->referenced_by.tx);
    if (e->referenced_by.at_tx != 0)
      ic_json_u64(j, "atTx", e->referenced_by.at_tx);
    if (e->referenced_by.revision != 0)
      ic_json_u64(j, "revision", e->referenced_by.revision);
    ic_json_obj_end(j);
  }
  if (e->expired)
    ic_json_bool(j, "expired", 1);
}

static void plain_entry(const immu_client_entry *e, int verified) {
  ic_line("tx", "%llu", (unsigned long long)e->tx);
  if (e->revision != 0)
    ic_line("rev", "%llu", (unsigned long long)e->revision);
  ic_line_bytes("key", e->key, e->key_len);
  if (e->has_referenced_by)
    ic_line_bytes("reference", e->referenced_by.key, e->referenced_by.key_len);
  ic_line_bytes("value", e->value, e->value_len);
  if (verified)
    ic_line("verified", "true");
}

static void value_line(const uint8_t *v, size_t n) {
  if (n > 0)
    fwrite(v, 1, n, stdout);
  putchar('\n');
}

void ic_print_entry(ic_ctx *x, const immu_client_entry *e, int verified) {
  if (x->o.json) {
    ic_json j;
    ic_json_begin(&j, stdout);
    ic_json_obj(&j, NULL);
    json_entry_fields(&j, e, verified);
    ic_json_obj_end(&j);
    ic_json_end(&j);
  } else if (x->o.value_only) {
    value_line(e->value, e->value_len);
  } else {
    plain_entry(e, verified);
  }
}

void ic_print_entries(ic_ctx *x, const immu_client_entries *l) {
  if (x->o.json) {
    ic_json j;
    ic_json_begin(&j, stdout);
    ic_json_arr(&j, NULL);
    for (size_t i = 0; i < l->n; i++) {
      ic_json_obj(&j, NULL);
      json_entry_fields(&j, &l->v[i], 0);
      ic_json_obj_end(&j);
    }
    ic_json_arr_end(&j);
    ic_json_end(&j);
    return;
  }
  for (size_t i = 0; i < l->n; i++) {
    if (x->o.value_only) {
      value_line(l->v[i].value, l->v[i].value_len);
      continue;
    }
    if (i > 0)
      putchar('\n');
    plain_entry(&l->v[i], 0);
  }
  if (l->n == 0 && !x->o.value_only)
    puts("No item found");
}

void ic_print_zentries(ic_ctx *x, const immu_client_zentries *l) {
  if (x->o.json) {
    ic_json j;
    ic_json_begin(&j, stdout);
    ic_json_arr(&j, NULL);
    for (size_t i = 0; i < l->n; i++) {
      const immu_client_zentry *z = &l->v[i];
      ic_json_obj(&j, NULL);
      ic_json_bytes(&j, "set", z->set, z->set_len);
      ic_json_dbl(&j, "score", z->score);
      if (z->at_tx != 0)
        ic_json_u64(&j, "atTx", z->at_tx);
      json_entry_fields(&j, &z->entry, 0);
      ic_json_obj_end(&j);
    }
    ic_json_arr_end(&j);
    ic_json_end(&j);
    return;
  }
  for (size_t i = 0; i < l->n; i++) {
    const immu_client_zentry *z = &l->v[i];
    if (x->o.value_only) {
      value_line(z->entry.value, z->entry.value_len);
      continue;
    }
    if (i > 0)
      putchar('\n');
    ic_line_bytes("set", z->set, z->set_len);
    ic_line("score", "%f", z->score);
    if (z->at_tx != 0)
      ic_line("atTx", "%llu", (unsigned long long)z->at_tx);
    plain_entry(&z->entry, 0);
  }
  if (l->n == 0 && !x->o.value_only)
    puts("No item found");
}

static const char *entry_kind(const immu_client_tx_entry *e) {
  if (e->key_len == 0)
    return "unknown";
  switch (e->key[0]) {
  case 0:
    return "kv";
  case 1:
    return "zset";
  case 2:
    return "sql";
  default:
    return "unknown";
  }
}

static void json_tx_fields(ic_json *j, const immu_client_tx *tx, int verified) {
  char tbuf[64];
  ic_fmt_time(tbuf, sizeof tbuf, tx->header.ts, 1);
  ic_json_u64(j, "tx", tx->header.id);
  ic_json_str(j, "time", tbuf);
  ic_json_u64(j, "entriesCount", tx->header.nentries);
  ic_json_hex(j, "hash", tx->alh.b, sizeof tx->alh.b);
  if (verified)
    ic_json_bool(j, "verified", 1);
  ic_json_arr(j, "entries");
  for (size_t i = 0; i < tx->nentries; i++) {
    const immu_client_tx_entry *e = &tx->entries[i];
    ic_json_obj(j, NULL);
    ic_json_str(j, "kind", entry_kind(e));
    if (e->key_len > 0)
      ic_json_bytes(j, "key", e->key + 1, e->key_len - 1);
    ic_json_hex(j, "hValue", e->hval.b, sizeof e->hval.b);
    ic_json_u64(j, "vLen", e->vlen);
    ic_json_obj_end(j);
  }
  ic_json_arr_end(j);
}

static void plain_tx(const immu_client_tx *tx, int verified) {
  char tbuf[64];
  ic_fmt_time(tbuf, sizeof tbuf, tx->header.ts, 0);
  ic_line("tx", "%llu", (unsigned long long)tx->header.id);
  ic_line("time", "%s", tbuf);
  ic_line("entries", "%u", (unsigned)tx->header.nentries);
  ic_line_hex("hash", tx->alh.b, sizeof tx->alh.b);
  if (verified)
    ic_line("verified", "true");
}

void ic_print_tx(ic_ctx *x, const immu_client_tx *tx, int verified) {
  if (x->o.json) {
    ic_json j;
    ic_json_begin(&j, stdout);
    ic_json_obj(&j, NULL);
    json_tx_fields(&j, tx, verified);
    ic_json_obj_end(&j);
    ic_json_end(&j);
  } else {
    plain_tx(tx, verified);
  }
}

void ic_print_txs(ic_ctx *x, const immu_client_tx_list *l) {
  if (x->o.json) {
    ic_json j;
    ic_json_begin(&j, stdout);
    ic_json_arr(&j, NULL);
    for (size_t i = 0; i < l->n; i++) {
      ic_json_obj(&j, NULL);
      json_tx_fields(&j, &l->v[i], 0);
      ic_json_obj_end(&j);
    }
    ic_json_arr_end(&j);
    ic_json_end(&j);
    return;
  }
  for (size_t i = 0; i < l->n; i++) {
    if (i > 0)
      putchar('\n');
    plain_tx(&l->v[i], 0);
  }
  if (l->n == 0)
    puts("No item found");
}

void ic_print_state(ic_ctx *x, const immu_client_state *st) {
  if (x->o.json) {
    ic_json j;
    ic_json_begin(&j, stdout);
    ic_json_obj(&j, NULL);
    ic_json_str(&j, "database", st->db);
    ic_json_u64(&j, "txID", st->tx_id);
    if (st->tx_id != 0)
      ic_json_hex(&j, "hash", st->tx_hash.b, sizeof st->tx_hash.b);
    if (st->signature_len > 0)
      ic_json_hex(&j, "signature", st->signature, st->signature_len);
    ic_json_obj_end(&j);
    ic_json_end(&j);
    return;
  }
  if (st->tx_id == 0) {
    printf("database '%s' is empty\n", st->db);
    return;
  }
  ic_line("database", "%s", st->db);
  ic_line("txID", "%llu", (unsigned long long)st->tx_id);
  ic_line_hex("hash", st->tx_hash.b, sizeof st->tx_hash.b);
  if (st->signature_len > 0)
    ic_line("signed", "true");
}
