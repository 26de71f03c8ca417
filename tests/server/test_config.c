/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Tests of the server's process settings (src/server/config.c): precedence
 * flags > environment > config file > defaults, the TOML subset and its
 * error messages, flag syntax, value parsers, loopback detection, the
 * admin password encoding, the TLS context builder and the log line
 * format.
 *
 * Scratch files go to $IMMU_TEST_TMPDIR (fallback /tmp); the test chdirs
 * there so that no ./configs/immudb.toml of the caller is picked up.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "core/mem.h"
#include "immudb/err.h"
#include "server/config.h"

static char g_tmp[512];

static void tmp_path(char *buf, size_t n, const char *name) {
  snprintf(buf, n, "%s/%s", g_tmp, name);
}

static void write_text(const char *path, const char *text) {
  FILE *f = fopen(path, "w");
  assert_non_null(f);
  fputs(text, f);
  fclose(f);
}

/* Loads with the given argv/env; returns rc and keeps *err. */
static int load(immu_cfg *c, int argc, const char **argv, const char **envp,
                char **err) {
  immu_cfg_init(c);
  *err = NULL;
  return immu_cfg_load(c, argc, (char *const *)(void *)argv,
                       (char *const *)(void *)envp, NULL, NULL, err);
}

/* Expects a failure whose message contains every |want| string. */
static void expect_error(int argc, const char **argv, const char **envp,
                         const char *want1, const char *want2) {
  immu_cfg c;
  char *err;
  int rc = load(&c, argc, argv, envp, &err);
  if (rc == 0)
    fail_msg("expected an error containing \"%s\"", want1);
  assert_non_null(err);
  if (strstr(err, want1) == NULL || (want2 && strstr(err, want2) == NULL))
    fail_msg("error \"%s\" lacks \"%s\"%s%s", err, want1, want2 ? " / " : "",
             want2 ? want2 : "");
  immu__free(err);
  immu_cfg_free(&c);
}

static int toml_error(const char *text, const char *want1, const char *want2) {
  immu_cfg c;
  immu_cfg_init(&c);
  char *err = NULL;
  int rc = immu_cfg_apply_toml(&c, "immudb.toml", text, NULL, NULL, &err);
  if (rc == 0)
    fail_msg("TOML accepted, expected error \"%s\":\n%s", want1, text);
  assert_non_null(err);
  if (strstr(err, want1) == NULL || (want2 && strstr(err, want2) == NULL))
    fail_msg("error \"%s\" lacks \"%s\" / \"%s\"", err, want1,
             want2 ? want2 : "");
  immu__free(err);
  immu_cfg_free(&c);
  return rc;
}

/* ------------------------------------------------------------------ */

static void test_defaults(void **state) {
  (void)state;
  immu_cfg c;
  char *err;
  const char *argv[] = {"immudb", NULL};
  assert_int_equal(load(&c, 1, argv, NULL, &err), 0);
  assert_string_equal(c.dir, "./data");
  assert_string_equal(c.address, "0.0.0.0");
  assert_int_equal(c.port, 3322);
  assert_int_equal(c.auth, 1);
  assert_int_equal(c.devmode, 0);
  assert_int_equal(c.maintenance, 0);
  assert_int_equal(c.synced, 1);
  assert_int_equal(c.mtls, 0);
  assert_int_equal(c.detached, 0);
  assert_string_equal(c.admin_password, "immudb");
  assert_string_equal(c.signing_key, "");
  assert_string_equal(c.pidfile, "");
  assert_string_equal(c.logfile, "");
  assert_string_equal(c.logformat, "text");
  assert_int_equal(c.log_level, IMMU_LOG_INFO);
  assert_int_equal(c.token_expiry_min, 1440);
  assert_int_equal(c.max_sessions, 100);
  assert_int_equal(c.session_timeout_s, 180);
  assert_int_equal(c.max_recv_msg_size, 4u << 20);
  assert_int_equal(c.metrics_server, 1);
  assert_int_equal(c.metrics_port, 9497);
  assert_int_equal(c.no_histograms, 0);
  assert_int_equal(c.consistency_check, 1);
  assert_int_equal(c.consistency_interval_s, 60);
  assert_int_equal(c.index_cache_mib, 0); /* automatic */
  assert_int_equal(c.want_help, 0);
  assert_int_equal(c.want_version, 0);
  assert_int_equal(immu_cfg_source_of(&c, "port"), IMMU_CFG_DEFAULT);
  assert_int_equal(immu_cfg_source_of(&c, "nope"), -1);
  immu_cfg_free(&c);
}

static void test_precedence(void **state) {
  (void)state;
  char cfgpath[600];
  tmp_path(cfgpath, sizeof(cfgpath), "prec.toml");
  write_text(cfgpath, "# immudb.toml\n"
                      "dir = \"/from/file\"\n"
                      "port = 1111\n"
                      "address = \"127.0.0.2\"\n"
                      "auth = false\n"
                      "max-sessions = 7\n");
  char cfgflag[700];
  snprintf(cfgflag, sizeof(cfgflag), "--config=%s", cfgpath);
  const char *env[] = {"PATH=/usr/bin",
                       "IMMUDB_PORT=2222",
                       "IMMUDB_DIR=/from/env",
                       "IMMUDB_MAX_SESSIONS=",
                       "IMMUDB_SIGNINGKEY=/env/key.pem",
                       "IMMUDB_INDEX_CACHE_SIZE=512",
                       NULL};
  const char *argv[] = {"immudb", cfgflag, "--port", "3333", NULL};
  immu_cfg c;
  char *err;
  int rc = load(&c, 4, argv, env, &err);
  if (rc != 0)
    fail_msg("%s", err);
  assert_int_equal(c.port, 3333); /* flag beats env and file */
  assert_int_equal(immu_cfg_source_of(&c, "port"), IMMU_CFG_FLAG);
  assert_string_equal(c.dir, "/from/env"); /* env beats file */
  assert_int_equal(immu_cfg_source_of(&c, "dir"), IMMU_CFG_ENV);
  assert_string_equal(c.address, "127.0.0.2"); /* file beats default */
  assert_int_equal(immu_cfg_source_of(&c, "address"), IMMU_CFG_FILE);
  assert_int_equal(c.auth, 0);
  assert_int_equal(c.max_sessions, 7); /* empty env value = unset */
  assert_string_equal(c.signing_key, "/env/key.pem");
  assert_int_equal(c.index_cache_mib, 512);
  {
    immu_server_config sc;
    memset(&sc, 0, sizeof sc);
    immu_cfg_to_server(&c, "immudb", &sc);
    assert_true(sc.index_cache_bytes == (size_t)512 << 20);
  }
  assert_int_equal(c.synced, 1); /* default */
  assert_int_equal(immu_cfg_source_of(&c, "synced"), IMMU_CFG_DEFAULT);
  assert_string_equal(c.config, cfgpath);
  immu_cfg_free(&c);

  /* The config file named by IMMUDB_CONFIG; no flags. */
  char envcfg[700];
  snprintf(envcfg, sizeof(envcfg), "IMMUDB_CONFIG=%s", cfgpath);
  const char *env2[] = {envcfg, NULL};
  const char *argv2[] = {"immudb", NULL};
  rc = load(&c, 1, argv2, env2, &err);
  if (rc != 0)
    fail_msg("%s", err);
  assert_int_equal(c.port, 1111);
  assert_string_equal(c.dir, "/from/file");
  immu_cfg_free(&c);

  /* The last of repeated flags wins. */
  const char *argv3[] = {"immudb", "-p", "1", "--port=2", "-p3", NULL};
  assert_int_equal(load(&c, 5, argv3, NULL, &err), 0);
  assert_int_equal(c.port, 3);
  immu_cfg_free(&c);

  /* ./configs/immudb.toml is the default config file. */
  assert_int_equal(mkdir("configs", 0755) == 0 || access("configs", F_OK) == 0,
                   1);
  write_text("configs/immudb.toml", "port = 4444\n");
  assert_int_equal(load(&c, 1, argv2, NULL, &err), 0);
  assert_int_equal(c.port, 4444);
  assert_string_equal(c.config, "configs/immudb.toml");
  immu_cfg_free(&c);
  unlink("configs/immudb.toml");
  rmdir("configs");

  /* A missing explicit config file is an error naming it. */
  const char *argv4[] = {"immudb", "--config", "/nonexistent/immudb.toml",
                         NULL};
  immu_cfg_init(&c);
  rc = immu_cfg_load(&c, 3, (char *const *)(void *)argv4, NULL, NULL, NULL,
                     &err);
  assert_int_not_equal(rc, 0);
  assert_non_null(strstr(err, "/nonexistent/immudb.toml"));
  immu__free(err);
  immu_cfg_free(&c);
}

static void test_env_names(void **state) {
  (void)state;
  const char *env[] = {"IMMUDB_ADMIN_PASSWORD=Secret!123",
                       "IMMUDB_METRICS_SERVER_PORT=0",
                       "IMMUDB_MAX_RECV_MSG_SIZE=1048576",
                       "IMMUDB_NO_HISTOGRAMS=true",
                       "IMMUDB_TOKEN_EXPIRY_TIME=5",
                       "IMMUDB_MAX_SESSION_INACTIVITY_TIME=2m30s",
                       "IMMUDB_CONSISTENCY_CHECK=false",
                       "IMMUDB_LOG_LEVEL=debug",
                       "IMMUDB_UNRELATED_THING=1",
                       NULL};
  const char *argv[] = {"immudb", NULL};
  immu_cfg c;
  char *err;
  int rc = load(&c, 1, argv, env, &err);
  if (rc != 0)
    fail_msg("%s", err);
  assert_string_equal(c.admin_password, "Secret!123");
  assert_int_equal(c.metrics_port, 0);
  assert_int_equal(c.max_recv_msg_size, 1048576);
  assert_int_equal(c.no_histograms, 1);
  assert_int_equal(c.token_expiry_min, 5);
  assert_int_equal(c.session_timeout_s, 150);
  assert_int_equal(c.consistency_check, 0);
  assert_int_equal(c.log_level, IMMU_LOG_DEBUG);
  immu_cfg_free(&c);

  const char *bad[] = {"IMMUDB_AUTH=maybe", NULL};
  expect_error(1, argv, bad, "IMMUDB_AUTH", "not a boolean");
  const char *bad2[] = {"IMMUDB_PORT=99999", NULL};
  expect_error(1, argv, bad2, "IMMUDB_PORT", "out of range");
}

static void test_flags(void **state) {
  (void)state;
  immu_cfg c;
  char *err;

  const char *a1[] = {"immudb",     "--auth=false", "--devmode", "-d",
                      "-a",         "::1",          "--dir",     "/tmp/x",
                      "--synced=0", "--signingKey", "k.pem",     NULL};
  assert_int_equal(load(&c, 11, a1, NULL, &err), 0);
  assert_int_equal(c.auth, 0);
  assert_int_equal(c.devmode, 1);
  assert_int_equal(c.detached, 1);
  assert_string_equal(c.address, "::1");
  assert_string_equal(c.dir, "/tmp/x");
  assert_int_equal(c.synced, 0);
  assert_string_equal(c.signing_key, "k.pem");
  immu_cfg_free(&c);

  /* combined short booleans, -x=value */
  const char *a2[] = {"immudb", "-ds=false", NULL};
  assert_int_equal(load(&c, 2, a2, NULL, &err), 0);
  assert_int_equal(c.detached, 1);
  assert_int_equal(c.auth, 0);
  immu_cfg_free(&c);

  /* subcommands and help */
  const char *a3[] = {"immudb", "version", NULL};
  assert_int_equal(load(&c, 2, a3, NULL, &err), 0);
  assert_int_equal(c.want_version, 1);
  immu_cfg_free(&c);
  const char *a4[] = {"immudb", "--help", NULL};
  assert_int_equal(load(&c, 2, a4, NULL, &err), 0);
  assert_int_equal(c.want_help, 1);
  immu_cfg_free(&c);
  const char *a5[] = {"immudb", "-h", NULL};
  assert_int_equal(load(&c, 2, a5, NULL, &err), 0);
  assert_int_equal(c.want_help, 1);
  immu_cfg_free(&c);

  /* immudb settings we do not implement are accepted, with a warning */
  const char *a6[] = {"immudb", "--pgsql-server=false", "--web-server-port",
                      "8081", NULL};
  assert_int_equal(load(&c, 4, a6, NULL, &err), 0);
  immu_cfg_free(&c);

  /* many short booleans in one group */
  const char *a7[] = {"immudb", "-dddddddddddddddddddddddd", "-mm=false", NULL};
  assert_int_equal(load(&c, 3, a7, NULL, &err), 0);
  assert_int_equal(c.detached, 1);
  assert_int_equal(c.mtls, 0);
  immu_cfg_free(&c);

  const char *e0[] = {"immudb", "--auth", "false", NULL};
  expect_error(3, e0, NULL, "unexpected argument \"false\"", "--auth=false");
  const char *e1[] = {"immudb", "--bogus", NULL};
  expect_error(2, e1, NULL, "unknown flag: --bogus", NULL);
  const char *e2[] = {"immudb", "--port", "abc", NULL};
  expect_error(3, e2, NULL, "--port", "not an integer");
  const char *e3[] = {"immudb", "--port", "70000", NULL};
  expect_error(3, e3, NULL, "--port", "out of range");
  const char *e4[] = {"immudb", "--port", NULL};
  expect_error(2, e4, NULL, "needs an argument", "--port");
  const char *e5[] = {"immudb", "serve", NULL};
  expect_error(2, e5, NULL, "unknown command", "serve");
  const char *e6[] = {"immudb", "-x", NULL};
  expect_error(2, e6, NULL, "unknown shorthand flag", "x");
  const char *e7[] = {"immudb", "--auth=maybe", NULL};
  expect_error(2, e7, NULL, "--auth", "not a boolean");
  const char *e8[] = {"immudb", "--log-level", "loud", NULL};
  expect_error(3, e8, NULL, "--log-level", "loud");
  const char *e9[] = {"immudb", "--logformat", "xml", NULL};
  expect_error(3, e9, NULL, "logformat", "text or json");
  const char *e10[] = {"immudb", "--certificate", "c.pem", NULL};
  expect_error(3, e10, NULL, "--pkey", NULL);
  const char *e11[] = {"immudb", "--mtls", "--certificate", "c.pem", "--pkey",
                       "k.pem",  NULL};
  expect_error(6, e11, NULL, "--clientcas", NULL);
  const char *e12[] = {"immudb", "--max-session-inactivity-time", "soon", NULL};
  expect_error(3, e12, NULL, "max-session-inactivity-time", "duration");
}

static void test_toml(void **state) {
  (void)state;
  immu_cfg c;
  immu_cfg_init(&c);
  char *err = NULL;
  const char *text = "# comment line\n"
                     "\n"
                     "   dir = \"./my data\"   # trailing comment\n"
                     "address = '127.0.0.1'\r\n"
                     "\"port\" = +3_322\n"
                     "admin-password = \"p\\\"w\\\\d\\u00e9\"\n"
                     "auth = true\n"
                     "devmode = false\n"
                     "max-session-inactivity-time = \"90s\"\n"
                     "token-expiry-time = 60\n"
                     "signingKey = \"\"\n"
                     "SIGNINGKEY_IS_NOT = 1\n";
  /* The last line is an unknown key: first check everything before it. */
  const char *cut = strstr(text, "SIGNINGKEY_IS_NOT");
  char *good = immu__strndup(text, (size_t)(cut - text));
  assert_int_equal(
      immu_cfg_apply_toml(&c, "immudb.toml", good, NULL, NULL, &err), 0);
  immu__free(good);
  assert_string_equal(c.dir, "./my data");
  assert_string_equal(c.address, "127.0.0.1");
  assert_int_equal(c.port, 3322);
  assert_string_equal(c.admin_password, "p\"w\\d\xc3\xa9");
  assert_int_equal(c.auth, 1);
  assert_int_equal(c.session_timeout_s, 90);
  assert_int_equal(c.token_expiry_min, 60);
  assert_int_equal(immu_cfg_source_of(&c, "port"), IMMU_CFG_FILE);
  immu_cfg_free(&c);

  /* immudb's own immudb.toml (the keys it ships) loads, ignoring what we
   * do not implement. */
  immu_cfg_init(&c);
  const char *immudb_toml =
      "dir = \"./data\"\nnetwork = \"tcp\"\naddress = \"0.0.0.0\"\n"
      "port = 3322\ndbname = \"immudb\"\npidfile = \"\"\nlogfile = \"\"\n"
      "mtls = false\ndetached = false\nauth = true\nno-histograms = false\n"
      "consistency-check = true\npkey = \"\"\ncertificate = \"\"\n"
      "clientcas = \"\"\ndevmode = true\nadmin-password = \"immudb\" # only "
      "used once\nmaintenance = false\nsigningKey = \"\"\n"
      "token-expiry-time = 1440\npgsql-server = true\n"
      "pgsql-server-port = 5432\n";
  assert_int_equal(
      immu_cfg_apply_toml(&c, "immudb.toml", immudb_toml, NULL, NULL, &err), 0);
  assert_int_equal(c.devmode, 1);
  immu_cfg_free(&c);

  /* errors name the line */
  toml_error("port = 1\nfoo bar\n", "immudb.toml:2:", "'='");
  toml_error("dir = \"x\"\n\nbogus = 1\n",
             "immudb.toml:3:", "unknown key 'bogus'");
  toml_error("[server]\nport = 1\n", "immudb.toml:1:", "tables");
  toml_error("port = 1.5\n", "immudb.toml:1:", "floats");
  toml_error("port = \"abc\"\n", "immudb.toml:1:", "not an integer");
  toml_error("auth = \"perhaps\"\n", "immudb.toml:1:", "not a boolean");
  toml_error("dir = \"unterminated\n", "immudb.toml:1:", "unterminated");
  toml_error("dir = \"x\" y\n", "immudb.toml:1:", "unexpected text");
  toml_error("port = 1\nport = 2\n", "immudb.toml:2:", "first on line 1");
  toml_error("dir = [\"a\"]\n", "immudb.toml:1:", "arrays");
  toml_error("a.b = 1\n", "immudb.toml:1:", "dotted");
  toml_error("dir =\n", "immudb.toml:1:", "missing value");
  toml_error("dir = \"\\q\"\n", "immudb.toml:1:", "escape");
  toml_error("config = \"x.toml\"\n", "immudb.toml:1:", "config");
  toml_error("port = 99999999999999999999\n", "immudb.toml:1:", "range");
}

static int g_warns;
static void count_warns(void *arg, const char *msg) {
  (void)arg;
  if (strstr(msg, "ignored") != NULL)
    g_warns++;
}

static void test_ignored_warn(void **state) {
  (void)state;
  immu_cfg c;
  immu_cfg_init(&c);
  char *err = NULL;
  g_warns = 0;
  assert_int_equal(immu_cfg_apply_toml(&c, "f.toml",
                                       "pgsql-server = false\nweb-server = "
                                       "false\ns3-storage = false\n",
                                       count_warns, NULL, &err),
                   0);
  assert_int_equal(g_warns, 3);
  immu_cfg_free(&c);
}

static void test_parsers(void **state) {
  (void)state;
  int b = -1;
  const char *yes[] = {"true", "TRUE", "True", "1", "t", "yes", "on"};
  const char *no[] = {"false", "FALSE", "0", "f", "no", "off"};
  for (size_t i = 0; i < sizeof(yes) / sizeof(*yes); i++) {
    assert_int_equal(immu_cfg_parse_bool(yes[i], &b), 0);
    assert_int_equal(b, 1);
  }
  for (size_t i = 0; i < sizeof(no) / sizeof(*no); i++) {
    assert_int_equal(immu_cfg_parse_bool(no[i], &b), 0);
    assert_int_equal(b, 0);
  }
  assert_int_equal(immu_cfg_parse_bool("", &b), IMMU_EINVAL);
  assert_int_equal(immu_cfg_parse_bool("truee", &b), IMMU_EINVAL);

  long long n = 0;
  assert_int_equal(immu_cfg_parse_int("42", 0, 100, &n), 0);
  assert_int_equal(n, 42);
  assert_int_equal(immu_cfg_parse_int("-5", -10, 10, &n), 0);
  assert_int_equal(n, -5);
  assert_int_equal(immu_cfg_parse_int("1_000", 0, 5000, &n), 0);
  assert_int_equal(n, 1000);
  assert_int_equal(immu_cfg_parse_int("101", 0, 100, &n), IMMU_ERANGE);
  assert_int_equal(immu_cfg_parse_int("9223372036854775808", 0, 1, &n),
                   IMMU_ERANGE);
  assert_int_equal(immu_cfg_parse_int("", 0, 1, &n), IMMU_EINVAL);
  assert_int_equal(immu_cfg_parse_int("12a", 0, 100, &n), IMMU_EINVAL);
  assert_int_equal(immu_cfg_parse_int("1__0", 0, 100, &n), IMMU_EINVAL);
  assert_int_equal(immu_cfg_parse_int(" 1", 0, 100, &n), IMMU_EINVAL);
  assert_int_equal(immu_cfg_parse_int("0x10", 0, 100, &n), IMMU_EINVAL);

  struct {
    const char *in;
    long long s;
  } durs[] = {{"90", 90},   {"90s", 90},     {"3m0s", 180}, {"1h30m", 5400},
              {"2m", 120},  {"250ms", 1},    {"1.5m", 90},  {"0s", 0},
              {"1h", 3600}, {"100000us", 1}, {"10ns", 1}};
  for (size_t i = 0; i < sizeof(durs) / sizeof(*durs); i++) {
    n = -1;
    if (immu_cfg_parse_duration(durs[i].in, &n) != 0)
      fail_msg("duration %s rejected", durs[i].in);
    if (n != durs[i].s)
      fail_msg("duration %s = %lld, want %lld", durs[i].in, n, durs[i].s);
  }
  const char *bad[] = {"", "m", "5x", "1h-2m", "-1s", "s5", "3m0"};
  for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++)
    if (immu_cfg_parse_duration(bad[i], &n) == 0)
      fail_msg("duration \"%s\" accepted", bad[i]);

  assert_int_equal(immu_log_level_parse("ERROR"), IMMU_LOG_ERROR);
  assert_int_equal(immu_log_level_parse("warning"), IMMU_LOG_WARN);
  assert_int_equal(immu_log_level_parse("info"), IMMU_LOG_INFO);
  assert_int_equal(immu_log_level_parse("debug"), IMMU_LOG_DEBUG);
  assert_int_equal(immu_log_level_parse("trace"), -1);
}

static void test_loopback(void **state) {
  (void)state;
  const char *yes[] = {
      "127.0.0.1", "127.1.2.3",       "127.255.255.255",  "::1",
      "[::1]",     "0:0:0:0:0:0:0:1", "::ffff:127.0.0.1", "localhost",
      "LOCALHOST"};
  const char *no[] = {
      "0.0.0.0", "::",   "10.0.0.1",  "128.0.0.1",       "",        "garbage",
      "::2",     "[::]", "126.0.0.1", "::ffff:10.0.0.1", "127.0.0", "fe80::1"};
  for (size_t i = 0; i < sizeof(yes) / sizeof(*yes); i++)
    if (!immu_cfg_is_loopback(yes[i]))
      fail_msg("%s should be loopback", yes[i]);
  for (size_t i = 0; i < sizeof(no) / sizeof(*no); i++)
    if (immu_cfg_is_loopback(no[i]))
      fail_msg("%s should not be loopback", no[i]);
  assert_int_equal(immu_cfg_is_loopback(NULL), 0);
}

static void test_admin_password(void **state) {
  (void)state;
  immu_cfg c;
  immu_cfg_init(&c);
  char *err = NULL;
  char *pw = immu_cfg_admin_password(&c, &err);
  assert_string_equal(pw, "immudb");
  immu__free(pw);

  immu__free(c.admin_password);
  c.admin_password = immu__strndup("enc:U2VjcmV0ITEyMw==", 20);
  pw = immu_cfg_admin_password(&c, &err);
  assert_non_null(pw);
  assert_string_equal(pw, "Secret!123");
  immu__free(pw);

  immu__free(c.admin_password);
  c.admin_password = immu__strndup("enc:***", 7);
  pw = immu_cfg_admin_password(&c, &err);
  assert_null(pw);
  assert_non_null(strstr(err, "base64"));
  immu__free(err);
  immu_cfg_free(&c);
}

static void test_log_format(void **state) {
  (void)state;
  char buf[256];
  size_t n =
      immu_log_format(buf, sizeof(buf), 0, IMMU_LOG_INFO, "server", "hello", 0);
  assert_string_equal(buf, "1970-01-01T00:00:00Z INFO  [server] hello\n");
  assert_int_equal(n, strlen(buf));
  immu_log_format(buf, sizeof(buf), 86400 * 365, IMMU_LOG_ERROR, "grpc",
                  "two\nlines", 0);
  assert_string_equal(buf, "1971-01-01T00:00:00Z ERROR [grpc] two lines\n");
  immu_log_format(buf, sizeof(buf), 0, IMMU_LOG_WARN, "x", "w", 0);
  assert_string_equal(buf, "1970-01-01T00:00:00Z WARN  [x] w\n");
  immu_log_format(buf, sizeof(buf), 0, IMMU_LOG_DEBUG, "x", "d", 0);
  assert_string_equal(buf, "1970-01-01T00:00:00Z DEBUG [x] d\n");
  immu_log_format(buf, sizeof(buf), 0, IMMU_LOG_INFO, "server", "say \"hi\"\n",
                  1);
  assert_string_equal(buf, "{\"time\":\"1970-01-01T00:00:00Z\",\"level\":"
                           "\"info\",\"component\":\"server\",\"msg\":"
                           "\"say \\\"hi\\\"\\n\"}\n");
  /* truncation reports the needed size */
  char small[16];
  n = immu_log_format(small, sizeof(small), 0, IMMU_LOG_INFO, "server",
                      "a long message", 0);
  assert_true(n > sizeof(small));
  assert_int_equal(strlen(small), sizeof(small) - 1);

  /* the logger appends to its file */
  char path[600];
  tmp_path(path, sizeof(path), "log.txt");
  unlink(path);
  assert_int_equal(immu_log_open(path, IMMU_LOG_INFO, 0), 0);
  immu_log(IMMU_LOG_INFO, "t", "first %d", 1);
  immu_log(IMMU_LOG_DEBUG, "t", "dropped");
  immu_log_cb((void *)"cb", IMMU_LOG_WARN, "second");
  immu_log_close();
  assert_int_equal(immu_log_open(path, IMMU_LOG_DEBUG, 0), 0);
  immu_log(IMMU_LOG_DEBUG, "t", "third");
  immu_log_close();
  FILE *f = fopen(path, "r");
  assert_non_null(f);
  char line[256];
  int lines = 0;
  while (fgets(line, sizeof(line), f) != NULL) {
    lines++;
    if (lines == 1)
      assert_non_null(strstr(line, "INFO  [t] first 1\n"));
    if (lines == 2)
      assert_non_null(strstr(line, "WARN  [cb] second\n"));
    if (lines == 3)
      assert_non_null(strstr(line, "DEBUG [t] third\n"));
  }
  fclose(f);
  assert_int_equal(lines, 3);
}

/* ------------------------------------------------------------------ */
/* TLS                                                                 */
/* ------------------------------------------------------------------ */

/* Writes a self-signed P-256 certificate and its key. */
static void make_cert(const char *cert_path, const char *key_path) {
  EVP_PKEY *key = EVP_EC_gen("P-256");
  assert_non_null(key);
  X509 *x = X509_new();
  assert_non_null(x);
  X509_set_version(x, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
  X509_gmtime_adj(X509_getm_notBefore(x), 0);
  X509_gmtime_adj(X509_getm_notAfter(x), 3600);
  X509_set_pubkey(x, key);
  X509_NAME *name = X509_get_subject_name(x);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                             (const unsigned char *)"localhost", -1, -1, 0);
  X509_set_issuer_name(x, name);
  assert_true(X509_sign(x, key, EVP_sha256()) > 0);
  FILE *f = fopen(cert_path, "w");
  assert_non_null(f);
  PEM_write_X509(f, x);
  fclose(f);
  f = fopen(key_path, "w");
  assert_non_null(f);
  PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL);
  fclose(f);
  X509_free(x);
  EVP_PKEY_free(key);
}

static void set_str(char **field, const char *v) {
  immu__free(*field);
  *field = immu__strndup(v, strlen(v));
}

static void expect_tls_error(immu_cfg *c, const char *want1,
                             const char *want2) {
  void *ctx = NULL;
  char *err = NULL;
  int rc = immu_cfg_tls_ctx(c, &ctx, &err);
  if (rc == 0)
    fail_msg("TLS context built, expected error \"%s\"", want1);
  assert_null(ctx);
  if (strstr(err, want1) == NULL || (want2 && strstr(err, want2) == NULL))
    fail_msg("error \"%s\" lacks \"%s\" / \"%s\"", err, want1,
             want2 ? want2 : "");
  immu__free(err);
}

static void test_tls(void **state) {
  (void)state;
  char cert[600], key[600], cert2[600], key2[600], junk[600];
  tmp_path(cert, sizeof(cert), "cert.pem");
  tmp_path(key, sizeof(key), "key.pem");
  tmp_path(cert2, sizeof(cert2), "cert2.pem");
  tmp_path(key2, sizeof(key2), "key2.pem");
  tmp_path(junk, sizeof(junk), "junk.pem");
  make_cert(cert, key);
  make_cert(cert2, key2);
  write_text(junk, "this is not PEM\n");

  immu_cfg c;
  immu_cfg_init(&c);
  void *ctx = (void *)1;
  char *err = NULL;
  /* no TLS configured */
  assert_int_equal(immu_cfg_tls_ctx(&c, &ctx, &err), 0);
  assert_null(ctx);

  set_str(&c.certificate, cert);
  set_str(&c.pkey, key);
  assert_int_equal(immu_cfg_tls_ctx(&c, &ctx, &err), 0);
  assert_non_null(ctx);
  assert_int_equal(SSL_CTX_get_min_proto_version(ctx), TLS1_2_VERSION);
  assert_int_equal(SSL_CTX_get_verify_mode(ctx), SSL_VERIFY_NONE);
  SSL_CTX_free(ctx);

  /* mTLS */
  c.mtls = 1;
  set_str(&c.clientcas, cert2);
  assert_int_equal(immu_cfg_tls_ctx(&c, &ctx, &err), 0);
  assert_int_equal(SSL_CTX_get_verify_mode(ctx),
                   SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT);
  SSL_CTX_free(ctx);

  set_str(&c.clientcas, junk);
  expect_tls_error(&c, "client CA file", junk);
  set_str(&c.clientcas, "/nonexistent/ca.pem");
  expect_tls_error(&c, "/nonexistent/ca.pem", "No such file");
  c.mtls = 0;

  set_str(&c.pkey, key2); /* does not match cert */
  expect_tls_error(&c, "does not match", key2);
  set_str(&c.pkey, junk);
  expect_tls_error(&c, "private key", junk);
  set_str(&c.pkey, key);
  set_str(&c.certificate, junk);
  expect_tls_error(&c, "certificate", junk);
  set_str(&c.certificate, "/nonexistent/cert.pem");
  expect_tls_error(&c, "/nonexistent/cert.pem", "No such file");
  immu_cfg_free(&c);
}

static void test_usage(void **state) {
  (void)state;
  char path[600];
  tmp_path(path, sizeof(path), "usage.txt");
  FILE *f = fopen(path, "w+");
  assert_non_null(f);
  immu_cfg_usage(f);
  rewind(f);
  char buf[16384];
  size_t n = fread(buf, 1, sizeof(buf) - 1, f);
  buf[n] = '\0';
  fclose(f);
  assert_non_null(strstr(buf, "--admin-password"));
  assert_non_null(strstr(buf, "-p, --port"));
  assert_non_null(strstr(buf, "--metrics-server-port"));
  assert_non_null(strstr(buf, "IMMUDB_"));
}

static int setup(void **state) {
  (void)state;
  const char *t = getenv("IMMU_TEST_TMPDIR");
  snprintf(g_tmp, sizeof(g_tmp), "%s", t != NULL && t[0] ? t : "/tmp");
  if (strcmp(g_tmp, "/tmp") == 0) {
    snprintf(g_tmp, sizeof(g_tmp), "/tmp/immu_test_config_%ld", (long)getpid());
    mkdir(g_tmp, 0755);
  }
  if (chdir(g_tmp) != 0)
    return -1;
  return 0;
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_defaults),
      cmocka_unit_test(test_precedence),
      cmocka_unit_test(test_env_names),
      cmocka_unit_test(test_flags),
      cmocka_unit_test(test_toml),
      cmocka_unit_test(test_ignored_warn),
      cmocka_unit_test(test_parsers),
      cmocka_unit_test(test_loopback),
      cmocka_unit_test(test_admin_password),
      cmocka_unit_test(test_log_format),
      cmocka_unit_test(test_tls),
      cmocka_unit_test(test_usage),
  };
  return cmocka_run_group_tests(tests, setup, NULL);
}
