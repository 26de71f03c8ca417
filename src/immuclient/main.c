/* SPDX-License-Identifier: Apache-2.0 */
/*
 * immuclient: settings and main().
 *
 * Settings come, from the weakest to the strongest, from the defaults, the
 * IMMUCLIENT_<FLAG> environment variables (flag name upper-cased, '-' ->
 * '_': IMMUCLIENT_IMMUDB_ADDRESS, IMMUCLIENT_PASSWORD, ...) and the flags,
 * as in immudb's immuclient (immudb-api.md section 5.2). Flags may appear
 * before or after the command, as with cobra; "--" ends them.
 */
#include <errno.h>
#include <limits.h>
#include <pwd.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "immuclient/ic.h"

/* ------------------------------------------------------------------ */
/* helpers                                                             */
/* ------------------------------------------------------------------ */

void *ic_xmalloc(size_t n) {
  void *p = malloc(n ? n : 1);
  if (p == NULL) {
    fputs("immuclient: out of memory\n", stderr);
    abort();
  }
  return p;
}

char *ic_xstrdup(const char *s) {
  size_t n = strlen(s) + 1;
  char *p = ic_xmalloc(n);
  memcpy(p, s, n);
  return p;
}

void ic_setstr(char **dst, const char *s) {
  free(*dst);
  *dst = s != NULL ? ic_xstrdup(s) : NULL;
}

const char *ic_home(void) {
  const char *h = getenv("HOME");
  if (h != NULL && h[0] != '\0')
    return h;
  struct passwd *pw = getpwuid(getuid());
  if (pw != NULL && pw->pw_dir != NULL)
    return pw->pw_dir;
  return "/tmp";
}

int ic_parse_u64(const char *s, uint64_t *out) {
  char *end = NULL;
  if (s == NULL || *s < '0' || *s > '9')
    return -1;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno != 0 || end == s || *end != '\0')
    return -1;
  *out = (uint64_t)v;
  return 0;
}

int ic_parse_duration_ms(const char *s, long long *out) {
  long long total = 0;
  const char *p = s;
  char *end;
  if (s == NULL || *s == '\0')
    return -1;
  /* A plain number is seconds. */
  errno = 0;
  double plain = strtod(s, &end);
  if (errno == 0 && end != s && *end == '\0') {
    if (!(plain >= 0) || plain > 1e12)
      return -1;
    *out = (long long)(plain * 1000.0);
    return 0;
  }
  while (*p != '\0') {
    errno = 0;
    double v = strtod(p, &end);
    if (errno != 0 || end == p || !(v >= 0) || v > 1e12)
      return -1;
    p = end;
    double mul;
    if (strncmp(p, "ms", 2) == 0) {
      mul = 1;
      p += 2;
    } else if (*p == 's') {
      mul = 1000;
      p++;
    } else if (*p == 'm') {
      mul = 60000;
      p++;
    } else if (*p == 'h') {
      mul = 3600000;
      p++;
    } else {
      return -1;
    }
    total += (long long)(v * mul);
  }
  *out = total;
  return 0;
}

/* ------------------------------------------------------------------ */
/* the option table                                                    */
/* ------------------------------------------------------------------ */

enum opt_type { T_STR, T_BOOL, T_INT, T_DUR, T_PASS, T_HELP, T_VERSION };

typedef struct opt {
  const char *name;
  char shortc;
  unsigned char type;
  unsigned char line_ok; /* allowed on a line of interactive mode */
  ptrdiff_t off;         /* offset in ic_opts, -1 = none */
  long long min, max;    /* T_INT */
  const char *def;
  const char *meta;
  const char *help;
} opt;

#define F(f) offsetof(ic_opts, f)
#define NOF ((ptrdiff_t)-1)

static const opt OPTS[] = {
    {"immudb-address", 'a', T_STR, 0, F(address), 0, 0, "127.0.0.1", "host",
     "immudb host address"},
    {"immudb-port", 'p', T_INT, 0, F(port), 1, 65535, "3322", "int",
     "immudb port number"},
    {"username", 0, T_STR, 0, F(username), 0, 0, NULL, "string",
     "immudb username used to login (every command logs in with it)"},
    {"password", 0, T_PASS, 0, F(password), 0, 0, NULL, "string",
     "immudb password, plain-text or base64 encoded (prefixed with 'enc:')"},
    {"database", 0, T_STR, 0, F(database), 0, 0, NULL, "string",
     "immudb database to be used"},
    {"tokenfile", 0, T_STR, 0, F(tokenfile), 0, 0, ".immuclient/token", "file",
     "authentication token file (relative names are under $HOME; "
     "default ~/.immuclient/token)"},
    {"mtls", 'm', T_BOOL, 0, F(mtls), 0, 0, "false", "",
     "enable mutual TLS (with --certificate, --pkey, --clientcas)"},
    {"servername", 0, T_STR, 0, F(servername), 0, 0, NULL, "string",
     "used to verify the hostname on the returned certificates"},
    {"certificate", 0, T_STR, 0, F(certificate), 0, 0, NULL, "file",
     "client certificate file path"},
    {"pkey", 0, T_STR, 0, F(pkey), 0, 0, NULL, "file",
     "client private key path"},
    {"clientcas", 0, T_STR, 0, F(clientcas), 0, 0, NULL, "file",
     "CA certificates that sign the server certificate"},
    {"server-signing-pub-key", 0, T_STR, 0, F(server_signing_pub_key), 0, 0,
     NULL, "file",
     "path to the public key to verify signatures of the server's states"},
    {"dir", 0, T_STR, 0, F(dir), 0, 0, NULL, "path",
     "directory of the locally trusted states (default ~/.immuclient)"},
    {"json", 0, T_BOOL, 1, F(json), 0, 0, "false", "",
     "machine-readable JSON output"},
    {"value-only", 0, T_BOOL, 1, F(value_only), 0, 0, "false", "",
     "returning only values for get operations"},
    {"revision-separator", 0, T_STR, 1, F(revision_separator), 0, 0, "@",
     "string", "separator between the key and the revision in get"},
    {"max-recv-msg-size", 0, T_INT, 0, F(max_recv_msg_size), 0, 1LL << 30, "0",
     "int", "max message size in bytes the client can receive (0 = 64 MiB)"},
    {"timeout", 0, T_DUR, 0, F(timeout_ms), 0, 0, "0", "duration",
     "deadline of every server call (0 = none)"},
    {"config", 0, T_STR, 0, NOF, 0, 0, NULL, "file",
     "config file (not supported: use flags or IMMUCLIENT_* variables)"},
    {"roots-filepath", 0, T_STR, 0, F(audit_state_dir), 0, 0, NULL, "path",
     "directory of the audit's trusted states (default <dir>/audit)"},
    {"audit-username", 0, T_STR, 0, F(audit_username), 0, 0, NULL, "string",
     "immudb username used to login during audit (default --username)"},
    {"audit-password", 0, T_PASS, 0, F(audit_password), 0, 0, NULL, "string",
     "immudb password used to login during audit; plain-text or base64 "
     "encoded (prefixed with 'enc:')"},
    {"audit-databases", 0, T_STR, 0, F(audit_databases), 0, 0, NULL, "list",
     "comma-separated list of databases (or name prefixes) to audit "
     "(default all)"},
    {"audit-interval", 0, T_DUR, 0, F(audit_interval_ms), 0, 0, "5m",
     "duration", "interval between two audit rounds (e.g. 30s, 5m, 1h)"},
    {"audit-once", 0, T_BOOL, 0, F(audit_once), 0, 0, "false", "",
     "run a single audit round and exit (non-zero when it fails)"},
    {"audit-monitoring-host", 0, T_STR, 0, F(audit_monitoring_host), 0, 0,
     "0.0.0.0", "host", "host of the audit's Prometheus/health endpoint"},
    {"audit-monitoring-port", 0, T_INT, 0, F(audit_monitoring_port), 0, 65535,
     "9477", "int", "port of the audit's Prometheus/health endpoint (0 = off)"},
    {"audit-verify-values", 0, T_BOOL, 0, F(audit_verify_values), 0, 0, "false",
     "",
     "re-prove every tx (entries and values) from tx 1 at each round, not "
     "only the txs committed since the previous round"},
    {"audit-notification-url", 0, T_STR, 0, F(audit_notification_url), 0, 0,
     NULL, "url", "not supported (accepted for compatibility)"},
    {"audit-notification-username", 0, T_STR, 0, NOF, 0, 0, NULL, "string",
     "not supported (accepted for compatibility)"},
    {"audit-notification-password", 0, T_STR, 0, NOF, 0, 0, NULL, "string",
     "not supported (accepted for compatibility)"},
    {"help", 'h', T_HELP, 1, NOF, 0, 0, NULL, "", "help for immuclient"},
    {"version", 0, T_VERSION, 0, NOF, 0, 0, NULL, "", "print the version"},
};

#define NOPTS (sizeof(OPTS) / sizeof(OPTS[0]))

static int want_help, want_version;

static int parse_bool(const char *v, int *out) {
  static const char *const t[] = {"1", "t", "true", "yes", "y", "on"};
  static const char *const f[] = {"0", "f", "false", "no", "n", "off", ""};
  for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
    if (strcasecmp(v, t[i]) == 0) {
      *out = 1;
      return 0;
    }
  for (size_t i = 0; i < sizeof f / sizeof f[0]; i++)
    if (strcasecmp(v, f[i]) == 0) {
      *out = 0;
      return 0;
    }
  return -1;
}

/* Applies |val| to option |o|; |where| names the source for messages. */
static int set_opt(ic_ctx *x, const opt *o, const char *val,
                   const char *where) {
  char *base = (char *)&x->o;
  switch (o->type) {
  case T_HELP:
    want_help = 1;
    return 0;
  case T_VERSION:
    want_version = 1;
    return 0;
  default:
    break;
  }
  if (o->off == NOF) {
    if (strcmp(o->name, "config") == 0 && val != NULL && val[0] != '\0')
      ic_warnf("%s: config files are not supported; ignored", where);
    return 0;
  }
  void *field = base + o->off;
  switch (o->type) {
  case T_STR:
    ic_setstr((char **)field, val);
    return 0;
  case T_PASS: {
    char *p = ic_decode_password(val);
    if (p == NULL) {
      fprintf(stderr, "immuclient: %s: bad 'enc:' base64 password\n", where);
      return IC_EXIT_USAGE;
    }
    free(*(char **)field);
    *(char **)field = p;
    return 0;
  }
  case T_BOOL: {
    int b;
    if (parse_bool(val, &b) != 0) {
      fprintf(stderr, "immuclient: %s: invalid boolean '%s'\n", where, val);
      return IC_EXIT_USAGE;
    }
    *(int *)field = b;
    return 0;
  }
  case T_INT: {
    char *end = NULL;
    errno = 0;
    long long v = strtoll(val, &end, 10);
    if (errno != 0 || end == val || *end != '\0' || v < o->min || v > o->max) {
      fprintf(stderr,
              "immuclient: %s: invalid value '%s' (an integer in [%lld, "
              "%lld])\n",
              where, val, o->min, o->max);
      return IC_EXIT_USAGE;
    }
    if (o->off == F(max_recv_msg_size))
      *(long long *)field = v;
    else
      *(int *)field = (int)v;
    return 0;
  }
  case T_DUR: {
    long long ms;
    if (ic_parse_duration_ms(val, &ms) != 0) {
      fprintf(stderr,
              "immuclient: %s: invalid duration '%s' (e.g. 30s, 5m, 1h)\n",
              where, val);
      return IC_EXIT_USAGE;
    }
    *(long long *)field = ms;
    return 0;
  }
  default:
    return IC_EXIT_USAGE;
  }
}

static void apply_defaults(ic_ctx *x) {
  for (size_t i = 0; i < NOPTS; i++)
    if (OPTS[i].def != NULL && OPTS[i].off != NOF)
      (void)set_opt(x, &OPTS[i], OPTS[i].def, "default");
}

static int apply_env(ic_ctx *x) {
  for (size_t i = 0; i < NOPTS; i++) {
    char name[96] = "IMMUCLIENT_";
    size_t n = strlen(name);
    if (OPTS[i].type == T_HELP || OPTS[i].type == T_VERSION)
      continue;
    for (const char *s = OPTS[i].name; *s && n + 1 < sizeof name; s++)
      name[n++] = *s == '-'
                      ? '_'
                      : (char)(*s >= 'a' && *s <= 'z' ? *s - 'a' + 'A' : *s);
    name[n] = '\0';
    const char *v = getenv(name);
    if (v == NULL)
      continue;
    int rc = set_opt(x, &OPTS[i], v, name);
    if (rc != 0)
      return rc;
  }
  return 0;
}

static const opt *find_long(const char *name, size_t len) {
  for (size_t i = 0; i < NOPTS; i++)
    if (strlen(OPTS[i].name) == len && strncmp(OPTS[i].name, name, len) == 0)
      return &OPTS[i];
  return NULL;
}

static const opt *find_short(char c) {
  for (size_t i = 0; i < NOPTS; i++)
    if (OPTS[i].shortc == c)
      return &OPTS[i];
  return NULL;
}

static int is_number_like(const char *a) {
  return a[0] == '-' &&
         ((a[1] >= '0' && a[1] <= '9') || (a[1] == '.' && a[2] >= '0'));
}

int ic_parse_flags(ic_ctx *x, int argc, char **argv, int *nargs,
                   int line_mode) {
  int npos = 0, only_pos = 0;
  char where[128];
  for (int i = 0; i < argc; i++) {
    char *a = argv[i];
    if (only_pos || a[0] != '-' || a[1] == '\0' || is_number_like(a)) {
      argv[npos++] = a;
      continue;
    }
    if (strcmp(a, "--") == 0) {
      only_pos = 1;
      continue;
    }
    const opt *o;
    const char *val = NULL;
    if (a[1] == '-') {
      const char *name = a + 2;
      const char *eq = strchr(name, '=');
      size_t len = eq ? (size_t)(eq - name) : strlen(name);
      o = find_long(name, len);
      if (eq != NULL)
        val = eq + 1;
      snprintf(where, sizeof where, "--%.*s", (int)len, name);
    } else {
      o = find_short(a[1]);
      if (a[2] != '\0')
        val = a + 2;
      snprintf(where, sizeof where, "-%c", a[1]);
    }
    if (o == NULL) {
      fprintf(stderr, "immuclient: unknown flag: %s (see immuclient --help)\n",
              a);
      return IC_EXIT_USAGE;
    }
    if (line_mode && !o->line_ok) {
      fprintf(stderr,
              "immuclient: %s cannot be changed in interactive mode (give it "
              "when starting immuclient)\n",
              where);
      return IC_EXIT_USAGE;
    }
    if (o->type == T_BOOL || o->type == T_HELP || o->type == T_VERSION) {
      if (val == NULL)
        val = "true";
    } else if (val == NULL) {
      if (i + 1 >= argc) {
        fprintf(stderr, "immuclient: flag needs an argument: %s\n", where);
        return IC_EXIT_USAGE;
      }
      val = argv[++i];
    }
    int rc = set_opt(x, o, val, where);
    if (rc != 0)
      return rc;
  }
  *nargs = npos;
  return 0;
}

void ic_usage(FILE *f) {
  fputs("immuclient: CLI client for immudb (the immutable database).\n\n"
        "Usage:\n"
        "  immuclient [flags] <command> [arguments]\n"
        "  immuclient [flags] it            interactive mode\n"
        "  immuclient [flags] audit-mode    auditor daemon\n\n"
        "Commands:\n",
        f);
  ic_commands_help(f);
  fputs("\nFlags (each also as an IMMUCLIENT_<NAME> environment variable, "
        "e.g.\nIMMUCLIENT_IMMUDB_ADDRESS, IMMUCLIENT_PASSWORD):\n",
        f);
  for (size_t i = 0; i < NOPTS; i++) {
    const opt *o = &OPTS[i];
    char left[64];
    if (o->shortc)
      snprintf(left, sizeof left, "-%c, --%s %s", o->shortc, o->name, o->meta);
    else
      snprintf(left, sizeof left, "    --%s %s", o->name, o->meta);
    fprintf(f, "  %-40s %s", left, o->help);
    if (o->def != NULL && o->def[0] != '\0' && o->type != T_BOOL &&
        o->off != F(tokenfile))
      fprintf(f, " (default \"%s\")", o->def);
    fputc('\n', f);
  }
  fputs("\nExit status: 0 success, 1 failure, 2 bad usage, 3 verification "
        "failed\n(tampering detected).\n",
        f);
}

static void free_opts(ic_opts *o) {
  char **strs[] = {&o->address,
                   &o->username,
                   &o->password,
                   &o->database,
                   &o->tokenfile,
                   &o->servername,
                   &o->certificate,
                   &o->pkey,
                   &o->clientcas,
                   &o->server_signing_pub_key,
                   &o->dir,
                   &o->revision_separator,
                   &o->audit_username,
                   &o->audit_password,
                   &o->audit_databases,
                   &o->audit_monitoring_host,
                   &o->audit_notification_url,
                   &o->audit_state_dir};
  for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++) {
    if (*strs[i] != NULL &&
        (strs[i] == &o->password || strs[i] == &o->audit_password))
      memset(*strs[i], 0, strlen(*strs[i]));
    free(*strs[i]);
    *strs[i] = NULL;
  }
}

/* Resolves the token file and the state directory against $HOME. */
static void resolve_paths(ic_ctx *x) {
  const char *home = ic_home();
  const char *tf = x->o.tokenfile;
  if (tf == NULL || tf[0] == '\0')
    tf = ".immuclient/token";
  if (tf[0] == '/') {
    x->token_path = ic_xstrdup(tf);
  } else {
    size_t n = strlen(home) + strlen(tf) + 2;
    x->token_path = ic_xmalloc(n);
    snprintf(x->token_path, n, "%s/%s", home, tf);
  }
  if (x->o.dir == NULL || x->o.dir[0] == '\0') {
    size_t n = strlen(home) + 16;
    char *d = ic_xmalloc(n);
    snprintf(d, n, "%s/.immuclient", home);
    free(x->o.dir);
    x->o.dir = d;
  }
}

int main(int argc, char **argv) {
  ic_ctx x;
  int nargs = 0, rc;

  memset(&x, 0, sizeof x);
  signal(SIGPIPE, SIG_IGN);
  apply_defaults(&x);
  rc = apply_env(&x);
  if (rc == 0)
    rc = ic_parse_flags(&x, argc - 1, argv + 1, &nargs, 0);
  if (rc != 0)
    goto out;
  if (want_help) {
    ic_usage(stdout);
    goto out;
  }
  if (want_version) {
    printf("immuclient %s (C)\n", IC_VERSION);
    goto out;
  }
  resolve_paths(&x);
  if (nargs == 0) {
    if (isatty(STDIN_FILENO)) {
      rc = ic_interactive(&x);
    } else {
      fputs("immuclient: no command given (see immuclient --help)\n", stderr);
      rc = IC_EXIT_USAGE;
    }
    goto out;
  }
  if (strcmp(argv[1], "it") == 0 || strcmp(argv[1], "interactive") == 0) {
    if (nargs > 1) {
      fputs("immuclient: it takes no arguments\n", stderr);
      rc = IC_EXIT_USAGE;
      goto out;
    }
    rc = ic_interactive(&x);
  } else if (strcmp(argv[1], "audit-mode") == 0) {
    if (nargs > 1) {
      fprintf(stderr,
              "immuclient: audit-mode takes no arguments (got '%s'); "
              "service management (install, start, ...) is not supported\n",
              argv[2]);
      rc = IC_EXIT_USAGE;
      goto out;
    }
    rc = ic_audit_mode(&x);
  } else {
    rc = ic_run_command(&x, nargs, argv + 1);
  }
out:
  ic_disconnect(&x);
  free(x.token_path);
  free_opts(&x.o);
  fflush(stdout);
  return rc;
}
