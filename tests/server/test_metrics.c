/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Tests of the metrics/health HTTP server (src/server/metrics.c) and the
 * consistency checker (src/server/checker.c), without the rest of the
 * server: a fake stats source stands in for the databases and a tiny
 * HTTP/1.0 client in this file fetches the endpoints.
 *
 * /metrics is checked line by line against the Prometheus text format
 * (every sample belongs to a family announced by # TYPE, label values are
 * quoted and escaped, values parse as floats), and for immudb's metric
 * names and values.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/mem.h"
#include "immudb/err.h"
#include "server/checker.h"
#include "server/config.h"
#include "server/metrics.h"
#include "server/server.h"

/* ------------------------------------------------------------------ */
/* fake source                                                         */
/* ------------------------------------------------------------------ */

#define WEIRD_DB "we\"ird\\db\nx"

static void fake_foreach(void *arg,
                         void (*emit)(void *earg, const char *db,
                                      const immu_db_stats *st),
                         void *earg) {
  (void)arg;
  immu_db_stats st;
  memset(&st, 0, sizeof(st));
  st.txs = 12;
  st.indexed_tx = 11;
  st.entries = 34;
  st.log_bytes = 100;
  st.txi_bytes = 200;
  st.aht_bytes = 300;
  st.index_bytes = 0;
  emit(earg, "defaultdb", &st);
  st.txs = 1;
  st.indexed_tx = 1;
  st.entries = 2;
  st.log_bytes = 5;
  st.txi_bytes = 0;
  st.aht_bytes = 0;
  emit(earg, WEIRD_DB, &st);
}

static uint64_t fake_sessions(void *arg) {
  (void)arg;
  return 7;
}

static void fake_row_cache(void *arg, uint64_t *hits, uint64_t *misses,
                           uint64_t *rows, uint64_t *bytes) {
  (void)arg;
  *hits = 41;
  *misses = 9;
  *rows = 3;
  *bytes = 4096;
}

static immu_metrics *new_metrics(int histograms) {
  immu_metrics_config mc;
  memset(&mc, 0, sizeof(mc));
  mc.address = "127.0.0.1";
  mc.port = 0;
  mc.histograms = histograms;
  mc.version = "1.2.3";
  mc.buildtime = "then";
  mc.source.foreach_db = fake_foreach;
  mc.source.active_sessions = fake_sessions;
  mc.source.row_cache = fake_row_cache;
  immu_metrics *m = NULL;
  assert_int_equal(immu_metrics_new(&mc, &m), 0);
  assert_non_null(m);
  return m;
}

/* ------------------------------------------------------------------ */
/* tiny HTTP client                                                    */
/* ------------------------------------------------------------------ */

typedef struct http_resp {
  int status;
  char headers[4096];
  char *body; /* heap */
  size_t body_len;
} http_resp;

static int http_do(int port, const char *method, const char *path,
                   http_resp *r) {
  memset(r, 0, sizeof(*r));
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0)
    return -1;
  struct sockaddr_in sa;
  memset(&sa, 0, sizeof(sa));
  sa.sin_family = AF_INET;
  sa.sin_port = htons((uint16_t)port);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
    close(fd);
    return -1;
  }
  char req[512];
  int n = snprintf(req, sizeof(req),
                   "%s %s HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: "
                   "close\r\n\r\n",
                   method, path);
  if (write(fd, req, (size_t)n) != n) {
    close(fd);
    return -1;
  }
  size_t cap = 1 << 16, len = 0;
  char *buf = malloc(cap);
  for (;;) {
    if (len + 4096 > cap) {
      cap *= 2;
      buf = realloc(buf, cap);
    }
    ssize_t k = read(fd, buf + len, cap - len - 1);
    if (k < 0 && errno == EINTR)
      continue;
    if (k <= 0)
      break;
    len += (size_t)k;
  }
  close(fd);
  buf[len] = '\0';
  char *sep = strstr(buf, "\r\n\r\n");
  if (sep == NULL || sscanf(buf, "HTTP/1.%*d %d", &r->status) != 1) {
    free(buf);
    return -1;
  }
  size_t hl = (size_t)(sep - buf);
  if (hl >= sizeof(r->headers))
    hl = sizeof(r->headers) - 1;
  memcpy(r->headers, buf, hl);
  r->headers[hl] = '\0';
  r->body_len = len - (size_t)(sep + 4 - buf);
  r->body = malloc(r->body_len + 1);
  memcpy(r->body, sep + 4, r->body_len);
  r->body[r->body_len] = '\0';
  free(buf);
  return 0;
}

static void http_free(http_resp *r) {
  free(r->body);
  r->body = NULL;
}

/* Value of header |name| (case-insensitive) or NULL; static buffer. */
static const char *header(const http_resp *r, const char *name) {
  static char val[512];
  size_t nl = strlen(name);
  const char *p = r->headers;
  while ((p = strstr(p, "\r\n")) != NULL) {
    p += 2;
    if (strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
      const char *v = p + nl + 1;
      while (*v == ' ')
        v++;
      const char *e = strstr(v, "\r\n");
      size_t n = e ? (size_t)(e - v) : strlen(v);
      if (n >= sizeof(val))
        n = sizeof(val) - 1;
      memcpy(val, v, n);
      val[n] = '\0';
      return val;
    }
  }
  return NULL;
}

static void assert_contains(const char *hay, const char *needle) {
  if (strstr(hay, needle) == NULL)
    fail_msg("missing \"%s\" in:\n%s", needle, hay);
}

/* ------------------------------------------------------------------ */
/* Prometheus text format checker                                      */
/* ------------------------------------------------------------------ */

static int is_name_start(char c) {
  return isalpha((unsigned char)c) || c == '_' || c == ':';
}
static int is_name_char(char c) {
  return isalnum((unsigned char)c) || c == '_' || c == ':';
}

/* Checks one sample line; returns its metric name in |name|. */
static void check_sample(const char *line, char *name, size_t namecap) {
  const char *p = line;
  size_t k = 0;
  if (!is_name_start(*p))
    fail_msg("bad metric name: %s", line);
  while (is_name_char(*p)) {
    if (k + 1 < namecap)
      name[k++] = *p;
    p++;
  }
  name[k] = '\0';
  if (*p == '{') {
    p++;
    while (*p != '}') {
      if (!is_name_start(*p))
        fail_msg("bad label name: %s", line);
      while (is_name_char(*p))
        p++;
      if (*p++ != '=' || *p++ != '"')
        fail_msg("bad label syntax: %s", line);
      while (*p != '"') {
        if (*p == '\0' || *p == '\n')
          fail_msg("unterminated label value: %s", line);
        if (*p == '\\') {
          p++;
          if (*p != '\\' && *p != '"' && *p != 'n')
            fail_msg("bad escape in label value: %s", line);
        }
        p++;
      }
      p++;
      if (*p == ',')
        p++;
      else if (*p != '}')
        fail_msg("bad label list: %s", line);
    }
    p++;
  }
  if (*p++ != ' ')
    fail_msg("no space before value: %s", line);
  if (strcmp(p, "+Inf") == 0 || strcmp(p, "-Inf") == 0 || strcmp(p, "NaN") == 0)
    return;
  char *end;
  errno = 0;
  double v = strtod(p, &end);
  (void)v;
  if (end == p || *end != '\0' || errno != 0)
    fail_msg("bad value: %s", line);
}

/* Every line is a comment (# HELP / # TYPE) or a sample of a family
 * announced before. */
static void check_exposition(const char *body) {
  char families[256][96];
  size_t nfam = 0;
  const char *p = body;
  if (body[0] == '\0')
    fail_msg("empty /metrics");
  while (*p) {
    const char *e = strchr(p, '\n');
    if (e == NULL)
      fail_msg("last line lacks a newline");
    char line[1024];
    size_t n = (size_t)(e - p);
    assert_true(n < sizeof(line));
    memcpy(line, p, n);
    line[n] = '\0';
    p = e + 1;
    if (strncmp(line, "# HELP ", 7) == 0)
      continue;
    if (strncmp(line, "# TYPE ", 7) == 0) {
      char fam[96], type[32];
      assert_int_equal(sscanf(line + 7, "%95s %31s", fam, type), 2);
      if (strcmp(type, "gauge") && strcmp(type, "counter") &&
          strcmp(type, "histogram") && strcmp(type, "summary") &&
          strcmp(type, "untyped"))
        fail_msg("bad type: %s", line);
      for (size_t i = 0; i < nfam; i++)
        if (strcmp(families[i], fam) == 0)
          fail_msg("family announced twice: %s", fam);
      assert_true(nfam < 256);
      snprintf(families[nfam++], sizeof(families[0]), "%s", fam);
      continue;
    }
    if (line[0] == '#')
      fail_msg("unexpected comment: %s", line);
    char name[128];
    check_sample(line, name, sizeof(name));
    int found = 0;
    for (size_t i = 0; i < nfam && !found; i++) {
      size_t fl = strlen(families[i]);
      if (strcmp(name, families[i]) == 0)
        found = 1;
      else if (strncmp(name, families[i], fl) == 0 &&
               (strcmp(name + fl, "_bucket") == 0 ||
                strcmp(name + fl, "_sum") == 0 ||
                strcmp(name + fl, "_count") == 0))
        found = 1;
    }
    if (!found)
      fail_msg("sample without # TYPE: %s", line);
  }
}

/* ------------------------------------------------------------------ */
/* tests                                                               */
/* ------------------------------------------------------------------ */

static void feed(immu_metrics *m) {
  immu_metrics_on_call_done(m, "/immudb.schema.ImmuService/Get", 0, 0.003,
                            "127.0.0.1");
  immu_metrics_on_call_done(m, "/immudb.schema.ImmuService/Get", 0, 0.3,
                            "127.0.0.1");
  immu_metrics_on_call_done(m, "/immudb.schema.ImmuService/Set", 16, 20.0,
                            "::1");
  immu_metrics_on_call_done(m, "/immudb.schema.ImmuService/streamGet", 2, 0.01,
                            "10.0.0.\"7");
  immu_metrics_on_call_done(m, "/immudb.schema.ImmuService/Get", 99, -1, NULL);
  immu_metrics_check_result(m, "defaultdb", 1, 1700000000);
  immu_metrics_check_result(m, WEIRD_DB, 0, 1700000100);
  immu_metrics_check_result(m, WEIRD_DB, 0, 1700000200);
}

static void test_metrics_endpoint(void **state) {
  (void)state;
  immu_metrics *m = new_metrics(1);
  char *err = NULL;
  int rc = immu_metrics_start(m, &err);
  if (rc != 0)
    fail_msg("start: %s", err);
  int port = immu_metrics_port(m);
  assert_true(port > 0);
  feed(m);

  http_resp r;
  assert_int_equal(http_do(port, "GET", "/metrics", &r), 0);
  assert_int_equal(r.status, 200);
  assert_non_null(header(&r, "Content-Type"));
  assert_contains(header(&r, "Content-Type"), "text/plain; version=0.0.4");
  assert_string_equal(header(&r, "Access-Control-Allow-Origin"), "*");
  check_exposition(r.body);

  const char *b = r.body;
  assert_contains(b, "# TYPE immudb_uptime_hours gauge\n");
  assert_contains(b, "\nimmudb_uptime_hours ");
  assert_contains(b, "# TYPE immudb_db_size_bytes gauge\n");
  assert_contains(b, "immudb_db_size_bytes{db=\"defaultdb\"} 600\n");
  /* label escaping: quote, backslash and newline */
  assert_contains(b, "immudb_db_size_bytes{db=\"we\\\"ird\\\\db\\nx\"} 5\n");
  assert_contains(b, "immudb_number_of_stored_entries{db=\"defaultdb\"} 34\n");
  assert_contains(b, "immudb_last_committed_trx_id{db=\"defaultdb\"} 12\n");
  assert_contains(b, "immudb_last_indexed_trx_id{db=\"defaultdb\"} 11\n");
  assert_contains(b, "immudb_loaded_databases 2\n");
  assert_contains(b, "immudb_active_sessions 7\n");
  assert_contains(b, "# TYPE immudb_index_row_cache_hits_total counter\n");
  assert_contains(b, "immudb_index_row_cache_hits_total 41\n");
  assert_contains(b, "immudb_index_row_cache_misses_total 9\n");
  assert_contains(b, "# TYPE immudb_index_row_cache_rows gauge\n");
  assert_contains(b, "immudb_index_row_cache_rows 3\n");
  assert_contains(b, "immudb_index_row_cache_bytes 4096\n");
  assert_contains(b, "# TYPE immudb_number_of_rpcs_per_client counter\n");
  assert_contains(b, "immudb_number_of_rpcs_per_client{ip=\"127.0.0.1\"} 2\n");
  assert_contains(b, "immudb_number_of_rpcs_per_client{ip=\"::1\"} 1\n");
  assert_contains(b,
                  "immudb_number_of_rpcs_per_client{ip=\"10.0.0.\\\"7\"} 1\n");
  assert_contains(b, "# TYPE grpc_server_handled_total counter\n");
  assert_contains(b, "grpc_server_handled_total{grpc_code=\"OK\",grpc_method="
                     "\"Get\",grpc_service=\"immudb.schema.ImmuService\","
                     "grpc_type=\"unary\"} 2\n");
  /* an out-of-range status counts as Unknown */
  assert_contains(b, "grpc_server_handled_total{grpc_code=\"Unknown\","
                     "grpc_method=\"Get\",grpc_service=\"immudb.schema."
                     "ImmuService\",grpc_type=\"unary\"} 1\n");
  assert_contains(b, "grpc_server_handled_total{grpc_code=\"Unauthenticated\","
                     "grpc_method=\"Set\"");
  assert_contains(b, "grpc_server_handled_total{grpc_code=\"Unknown\","
                     "grpc_method=\"streamGet\",grpc_service=\"immudb.schema."
                     "ImmuService\",grpc_type=\"server_stream\"} 1\n");
  assert_contains(b, "grpc_server_started_total{grpc_method=\"Get\","
                     "grpc_service=\"immudb.schema.ImmuService\",grpc_type="
                     "\"unary\"} 3\n");
  assert_contains(b, "# TYPE grpc_server_handling_seconds histogram\n");
  const char *getl = "grpc_server_handling_seconds_bucket{grpc_method=\"Get\","
                     "grpc_service=\"immudb.schema.ImmuService\",grpc_type="
                     "\"unary\",";
  char want[512];
  snprintf(want, sizeof(want), "%sle=\"0.005\"} 2\n", getl); /* 0.003, -1→0 */
  assert_contains(b, want);
  snprintf(want, sizeof(want), "%sle=\"0.25\"} 2\n", getl);
  assert_contains(b, want);
  snprintf(want, sizeof(want), "%sle=\"0.5\"} 3\n", getl);
  assert_contains(b, want);
  snprintf(want, sizeof(want), "%sle=\"+Inf\"} 3\n", getl);
  assert_contains(b, want);
  const char *setl = "grpc_server_handling_seconds_bucket{grpc_method=\"Set\","
                     "grpc_service=\"immudb.schema.ImmuService\",grpc_type="
                     "\"unary\",";
  snprintf(want, sizeof(want), "%sle=\"10\"} 0\n", setl); /* 20 s */
  assert_contains(b, want);
  snprintf(want, sizeof(want), "%sle=\"+Inf\"} 1\n", setl);
  assert_contains(b, want);
  assert_contains(b, "grpc_server_handling_seconds_count{grpc_method=\"Get\","
                     "grpc_service=\"immudb.schema.ImmuService\",grpc_type="
                     "\"unary\"} 3\n");
  assert_contains(b, "immudb_consistency_check_last_run_unix_seconds "
                     "1700000200\n");
  assert_contains(b, "immudb_consistency_check_failures_total{db="
                     "\"defaultdb\"} 0\n");
  assert_contains(b, "immudb_consistency_check_failures_total{db="
                     "\"we\\\"ird\\\\db\\nx\"} 2\n");
  assert_contains(b, "immudb_consistency_check_runs_total{db=\"defaultdb\"} "
                     "1\n");
  assert_contains(b, "immudb_consistency_check_ok{db=\"defaultdb\"} 1\n");
  assert_contains(b, "# TYPE process_start_time_seconds gauge\n");
  http_free(&r);

  /* health */
  const char *health[] = {"/readyz", "/livez", "/initz"};
  for (size_t i = 0; i < 3; i++) {
    assert_int_equal(http_do(port, "GET", health[i], &r), 0);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.body_len, 0);
    assert_string_equal(header(&r, "Access-Control-Allow-Origin"), "*");
    http_free(&r);
  }

  /* version */
  assert_int_equal(http_do(port, "GET", "/version", &r), 0);
  assert_int_equal(r.status, 200);
  assert_string_equal(r.body, "{\"component\":\"immudb\",\"version\":"
                              "\"1.2.3\",\"buildtime\":\"then\",\"static\":"
                              "false,\"fips\":false}");
  assert_contains(header(&r, "Content-Type"), "application/json");
  assert_string_equal(header(&r, "Access-Control-Allow-Origin"), "*");
  http_free(&r);

  /* query strings do not matter */
  assert_int_equal(http_do(port, "GET", "/readyz?verbose=1", &r), 0);
  assert_int_equal(r.status, 200);
  http_free(&r);

  /* unknown path, HEAD, OPTIONS, POST */
  assert_int_equal(http_do(port, "GET", "/nope", &r), 0);
  assert_int_equal(r.status, 404);
  assert_string_equal(header(&r, "Access-Control-Allow-Origin"), "*");
  http_free(&r);
  assert_int_equal(http_do(port, "GET", "/metricsx", &r), 0);
  assert_int_equal(r.status, 404);
  http_free(&r);
  assert_int_equal(http_do(port, "HEAD", "/metrics", &r), 0);
  assert_int_equal(r.status, 200);
  assert_int_equal(r.body_len, 0);
  http_free(&r);
  assert_int_equal(http_do(port, "HEAD", "/nope", &r), 0);
  assert_int_equal(r.status, 404);
  assert_int_equal(r.body_len, 0);
  http_free(&r);
  assert_int_equal(http_do(port, "OPTIONS", "/metrics", &r), 0);
  assert_int_equal(r.status, 204);
  assert_string_equal(header(&r, "Access-Control-Allow-Origin"), "*");
  http_free(&r);
  assert_int_equal(http_do(port, "POST", "/metrics", &r), 0);
  assert_int_equal(r.status, 405);
  http_free(&r);

  /* stop closes the socket; stop is idempotent; restart works */
  immu_metrics_stop(m);
  immu_metrics_stop(m);
  assert_int_equal(immu_metrics_port(m), 0);
  assert_int_not_equal(http_do(port, "GET", "/readyz", &r), 0);
  rc = immu_metrics_start(m, &err);
  if (rc != 0)
    fail_msg("restart: %s", err);
  assert_int_equal(http_do(immu_metrics_port(m), "GET", "/livez", &r), 0);
  assert_int_equal(r.status, 200);
  http_free(&r);
  immu_metrics_free(m);
}

static void test_bind_error(void **state) {
  (void)state;
  immu_metrics *a = new_metrics(1);
  char *err = NULL;
  assert_int_equal(immu_metrics_start(a, &err), 0);
  immu_metrics_config mc;
  memset(&mc, 0, sizeof(mc));
  mc.address = "127.0.0.1";
  mc.port = immu_metrics_port(a);
  immu_metrics *b = NULL;
  assert_int_equal(immu_metrics_new(&mc, &b), 0);
  int rc = immu_metrics_start(b, &err);
  assert_int_not_equal(rc, 0);
  assert_non_null(err);
  char want[64];
  snprintf(want, sizeof(want), "127.0.0.1:%d", mc.port);
  assert_contains(err, want);
  immu__free(err);
  immu_metrics_free(b);
  immu_metrics_free(a);
}

static void test_no_histograms(void **state) {
  (void)state;
  immu_metrics *m = new_metrics(0);
  feed(m);
  size_t len = 0;
  char *body = immu_metrics_render(m, &len);
  assert_non_null(body);
  assert_int_equal(strlen(body), len);
  check_exposition(body);
  assert_null(strstr(body, "grpc_server_handling_seconds"));
  assert_contains(body, "grpc_server_handled_total{");
  immu__free(body);
  immu_metrics_free(m); /* never started */
}

static void test_caps(void **state) {
  (void)state;
  immu_metrics *m = new_metrics(0);
  char path[64], ip[64];
  for (int i = 0; i < 5000; i++) {
    snprintf(path, sizeof(path), "/evil.Service/m%d", i);
    snprintf(ip, sizeof(ip), "10.%d.%d.%d", i >> 16, (i >> 8) & 255, i & 255);
    immu_metrics_on_call_done(m, path, 12, 0.001, ip);
  }
  size_t len = 0;
  char *body = immu_metrics_render(m, &len);
  assert_non_null(body);
  check_exposition(body);
  assert_contains(body, "grpc_method=\"unknown\",grpc_service=\"unknown\"");
  assert_contains(body, "immudb_number_of_rpcs_per_client{ip=\"other\"} 904\n");
  assert_null(strstr(body, "grpc_method=\"m4999\""));
  immu__free(body);
  immu_metrics_free(m);
}

static void test_registered_methods(void **state) {
  (void)state;
  immu_metrics *m = new_metrics(0);
  assert_int_equal(
      immu_metrics_register_method(m, "/immudb.schema.ImmuService/Get"), 0);
  assert_int_equal(
      immu_metrics_register_method(m, "/immudb.schema.ImmuService/Set"), 0);
  immu_metrics_on_call_done(m, "/immudb.schema.ImmuService/Get", 0, 0.001,
                            "127.0.0.1");
  immu_metrics_on_call_done(m, "/scanner.Probe/Anything", 12, 0.001,
                            "127.0.0.1");
  immu_metrics_on_call_done(m, "/immudb.schema.ImmuService/Nope", 12, 0.001,
                            "127.0.0.1");
  size_t len = 0;
  char *body = immu_metrics_render(m, &len);
  assert_non_null(body);
  check_exposition(body);
  assert_contains(body, "grpc_server_started_total{grpc_method=\"Get\"");
  /* declared but never called: not rendered */
  assert_null(strstr(body, "grpc_method=\"Set\""));
  /* undeclared paths are lumped together */
  assert_null(strstr(body, "Probe"));
  assert_null(strstr(body, "Nope"));
  assert_contains(body, "grpc_server_handled_total{grpc_code=\"Unimplemented\""
                        ",grpc_method=\"unknown\",grpc_service=\"unknown\","
                        "grpc_type=\"unary\"} 2\n");
  immu__free(body);
  immu_metrics_free(m);
}

static void test_escape_label(void **state) {
  (void)state;
  char out[64];
  assert_int_equal(immu_metrics_escape_label(out, sizeof(out), "plain"), 5);
  assert_string_equal(out, "plain");
  immu_metrics_escape_label(out, sizeof(out), "a\"b\\c\nd");
  assert_string_equal(out, "a\\\"b\\\\c\\nd");
  immu_metrics_escape_label(out, sizeof(out), "caf\xc3\xa9");
  assert_string_equal(out, "caf\xc3\xa9");
  immu_metrics_escape_label(out, sizeof(out), "bad\xff\xc3");
  assert_string_equal(out, "bad\xef\xbf\xbd\xef\xbf\xbd");
  immu_metrics_escape_label(out, sizeof(out), "\xed\xa0\x80"); /* surrogate */
  assert_string_equal(out, "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd");
  char tiny[4];
  assert_int_equal(immu_metrics_escape_label(tiny, sizeof(tiny), "abcdef"), 6);
  assert_string_equal(tiny, "abc");
}

/* ------------------------------------------------------------------ */
/* consistency checker                                                 */
/* ------------------------------------------------------------------ */

typedef struct fake_dbs {
  pthread_mutex_t mu;
  int verified[3];
  int results_ok, results_bad;
  int slow_ms; /* each verify sleeps this long */
  char last_bad[64];
} fake_dbs;

static void fk_list(void *arg, void (*add)(void *, const char *), void *aarg) {
  (void)arg;
  add(aarg, "defaultdb");
  add(aarg, "broken");
  add(aarg, "gone");
}

static int fk_verify(void *arg, const char *name, char *msg, size_t msglen) {
  fake_dbs *f = arg;
  if (f->slow_ms > 0) {
    struct timespec ts = {f->slow_ms / 1000, (f->slow_ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
  }
  pthread_mutex_lock(&f->mu);
  int rc = 0;
  if (strcmp(name, "defaultdb") == 0) {
    f->verified[0]++;
  } else if (strcmp(name, "broken") == 0) {
    f->verified[1]++;
    snprintf(msg, msglen, "tx 7: Alh mismatch");
    rc = IMMU_ECORRUPT;
  } else {
    f->verified[2]++;
    rc = IMMU_ENOTFOUND;
  }
  pthread_mutex_unlock(&f->mu);
  return rc;
}

static void fk_result(void *arg, const char *db, int ok, time_t when) {
  fake_dbs *f = arg;
  (void)when;
  pthread_mutex_lock(&f->mu);
  if (ok) {
    f->results_ok++;
  } else {
    f->results_bad++;
    snprintf(f->last_bad, sizeof(f->last_bad), "%s", db);
  }
  pthread_mutex_unlock(&f->mu);
}

static int g_errors;
static char g_errmsg[512];
static void fk_log(void *arg, int level, const char *msg) {
  (void)arg;
  if (level == IMMU_LOG_ERROR) {
    g_errors++;
    snprintf(g_errmsg, sizeof(g_errmsg), "%s", msg);
  }
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void test_checker(void **state) {
  (void)state;
  fake_dbs f;
  memset(&f, 0, sizeof(f));
  pthread_mutex_init(&f.mu, NULL);
  immu_checker_config kc;
  memset(&kc, 0, sizeof(kc));
  kc.interval_s = 3600;
  kc.initial_delay_ms = 0;
  kc.db_pause_ms = 0;
  kc.list = fk_list;
  kc.verify = fk_verify;
  kc.arg = &f;
  kc.on_result = fk_result;
  kc.result_arg = &f;
  kc.log = fk_log;
  g_errors = 0;
  immu_checker *c = NULL;
  assert_int_equal(immu_checker_start(&kc, &c), 0);
  double t0 = now_s();
  while (immu_checker_passes(c) < 1 && now_s() - t0 < 10)
    usleep(1000);
  assert_int_equal(immu_checker_passes(c), 1);
  /* a kick starts another pass at once */
  immu_checker_kick(c);
  t0 = now_s();
  while (immu_checker_passes(c) < 2 && now_s() - t0 < 10)
    usleep(1000);
  assert_int_equal(immu_checker_passes(c), 2);
  /* stop returns at once although the next pass is an hour away */
  t0 = now_s();
  immu_checker_stop(c);
  assert_true(now_s() - t0 < 1.0);
  immu_checker_free(c);

  assert_int_equal(f.verified[0], 2);
  assert_int_equal(f.verified[1], 2);
  assert_int_equal(f.verified[2], 2);
  assert_int_equal(f.results_ok, 2);
  assert_int_equal(f.results_bad, 2); /* "gone" is not reported */
  assert_string_equal(f.last_bad, "broken");
  assert_int_equal(g_errors, 2);
  assert_contains(g_errmsg, "broken");
  assert_contains(g_errmsg, "tx 7: Alh mismatch");

  /* stop during the pause between databases, and with a slow verify:
   * never starts another database once stop was asked */
  memset(f.verified, 0, sizeof(f.verified));
  f.slow_ms = 200;
  kc.db_pause_ms = 60000;
  assert_int_equal(immu_checker_start(&kc, &c), 0);
  t0 = now_s();
  while (now_s() - t0 < 10) {
    pthread_mutex_lock(&f.mu);
    int done = f.verified[0];
    pthread_mutex_unlock(&f.mu);
    if (done)
      break;
    usleep(1000);
  }
  t0 = now_s();
  immu_checker_free(c);
  assert_true(now_s() - t0 < 1.0);
  assert_int_equal(f.verified[0], 1);
  assert_int_equal(f.verified[1], 0);
  pthread_mutex_destroy(&f.mu);

  /* missing callbacks */
  kc.verify = NULL;
  assert_int_equal(immu_checker_start(&kc, &c), IMMU_EINVAL);
  assert_null(c);
}

/* The checker feeding the registry, as main.c wires them. */
static void to_metrics(void *arg, const char *db, int ok, time_t when) {
  immu_metrics_check_result(arg, db, ok, when);
}

static void test_checker_metrics(void **state) {
  (void)state;
  fake_dbs f;
  memset(&f, 0, sizeof(f));
  pthread_mutex_init(&f.mu, NULL);
  immu_metrics *m = new_metrics(1);
  immu_checker_config kc;
  memset(&kc, 0, sizeof(kc));
  kc.interval_s = 3600;
  kc.initial_delay_ms = 0;
  kc.db_pause_ms = 0;
  kc.list = fk_list;
  kc.verify = fk_verify;
  kc.arg = &f;
  kc.on_result = to_metrics;
  kc.result_arg = m;
  immu_checker *c = NULL;
  assert_int_equal(immu_checker_start(&kc, &c), 0);
  double t0 = now_s();
  while (immu_checker_passes(c) < 1 && now_s() - t0 < 10)
    usleep(1000);
  immu_checker_free(c);
  size_t len;
  char *body = immu_metrics_render(m, &len);
  assert_non_null(body);
  assert_contains(body,
                  "immudb_consistency_check_failures_total{db=\"broken\"} 1\n");
  assert_contains(body, "immudb_consistency_check_ok{db=\"broken\"} 0\n");
  assert_contains(body, "immudb_consistency_check_ok{db=\"defaultdb\"} 1\n");
  assert_null(strstr(body, "db=\"gone\""));
  immu__free(body);
  immu_metrics_free(m);
  pthread_mutex_destroy(&f.mu);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_metrics_endpoint),
      cmocka_unit_test(test_bind_error),
      cmocka_unit_test(test_no_histograms),
      cmocka_unit_test(test_caps),
      cmocka_unit_test(test_registered_methods),
      cmocka_unit_test(test_escape_label),
      cmocka_unit_test(test_checker),
      cmocka_unit_test(test_checker_metrics),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
