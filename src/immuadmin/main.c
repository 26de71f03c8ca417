/* SPDX-License-Identifier: Apache-2.0 */
/*
 * immuadmin: flags, the token file, dispatch, and the login, status,
 * database and user commands (immudb's names and wording where it has
 * them). backup/dump/restore/verify live in backup.c, stats in stats.c.
 *
 * Flags may appear anywhere on the command line; every global flag can
 * also be set as IMMUADMIN_<FLAG> (upper case, '-' -> '_'), e.g.
 * IMMUADMIN_IMMUDB_PORT=3323. A flag wins over its variable.
 *
 * Authentication: `immuadmin login USER` stores the token the server
 * returns in the token file (--tokenfile, default ~/.immuadmin_token,
 * mode 0600) together with the server address and the database the token
 * selects; later commands send it. With --password (or
 * IMMUADMIN_PASSWORD) a command logs in by itself instead (user
 * --username, default immudb) and stores nothing. Logging in with the
 * default sysadmin password forces a password change first, as immudb's
 * immuadmin does.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "immuadmin/ia.h"
#include "immudb/err.h"
#include "schema.pb-c.h"

#define IA_VERSION "1.0.0"
#define SYSADMIN "immudb"

/* ------------------------------------------------------------------ */
/* Flags                                                               */
/* ------------------------------------------------------------------ */

enum ftype { F_STR, F_INT, F_BOOL };

typedef struct flagdef {
  const char *name;
  char shrt;
  int type;
  int env; /* settable through IMMUADMIN_<NAME> */
  const char *def;
  const char *help;
} flagdef;

static const flagdef FLAGS[] = {
    {"immudb-address", 'a', F_STR, 1, "127.0.0.1", "immudb host address"},
    {"immudb-port", 'p', F_INT, 1, "3322", "immudb port number"},
    {"username", 0, F_STR, 1, SYSADMIN,
     "user for commands run with --password (no token file)"},
    {"password", 0, F_STR, 1, NULL,
     "password (plain, or \"enc:\" + base64); prompted when needed"},
    {"new-password", 0, F_STR, 1, NULL,
     "new password (login's forced change, user create/changepassword)"},
    {"old-password", 0, F_STR, 1, NULL,
     "current password (user changepassword of your own user)"},
    {"database", 'd', F_STR, 1, NULL,
     "database (backup, dump, verify: source; restore: target)"},
    {"tokenfile", 0, F_STR, 1, NULL,
     "authentication token file (default ~/.immuadmin_token)"},
    {"mtls", 'm', F_BOOL, 1, "false", "enable mutual TLS"},
    {"tls", 0, F_BOOL, 1, "false", "TLS without a client certificate"},
    {"servername", 0, F_STR, 1, NULL,
     "server name to verify the server certificate against"},
    {"certificate", 0, F_STR, 1, NULL, "client certificate file (mTLS)"},
    {"pkey", 0, F_STR, 1, NULL, "client private key file (mTLS)"},
    {"clientcas", 0, F_STR, 1, NULL,
     "CA bundle that signed the server's "
     "certificate"},
    {"metrics-port", 0, F_INT, 1, "9497", "the server's metrics port (stats)"},
    {"timeout", 0, F_INT, 1, "60", "per-call timeout in seconds (0 = none)"},
    {"output", 'o', F_STR, 0, NULL,
     "output file (backup, dump; \"-\" = "
     "stdout for dump)"},
    {"file", 0, F_STR, 0, NULL, "backup file to check offline (verify)"},
    {"force", 0, F_BOOL, 0, "false",
     "overwrite the backup file; restore into an existing database"},
    {"at-tx", 0, F_INT, 0, "0",
     "backup/dump up to this tx (0 = the current "
     "state)"},
    {"yes", 'y', F_BOOL, 0, "false", "do not ask for confirmation"},
    {"text", 't', F_BOOL, 0, "false", "stats: text instead of the live view"},
    {"raw", 'r', F_BOOL, 0, "false", "stats: the raw Prometheus text"},
    {"no-progress", 0, F_BOOL, 1, "false", "never draw progress bars"},
    {"max-key-len", 0, F_INT, 0, NULL,
     "database create, restore: max key length of the new database"},
    {"max-value-len", 0, F_INT, 0, NULL,
     "database create, restore: max value length of the new database"},
    {"max-tx-entries", 0, F_INT, 0, NULL,
     "database create, restore: max entries per tx of the new database"},
    {"help", 'h', F_BOOL, 0, "false", "help"},
};
#define NFLAGS (sizeof FLAGS / sizeof FLAGS[0])

typedef struct parsed {
  const char *val[NFLAGS];
  int from_flag[NFLAGS];
  int argc;
  char **argv;
} parsed;

static const flagdef *find_long(const char *name, size_t n, size_t *idx) {
  for (size_t i = 0; i < NFLAGS; i++)
    if (strlen(FLAGS[i].name) == n && strncmp(FLAGS[i].name, name, n) == 0) {
      *idx = i;
      return &FLAGS[i];
    }
  return NULL;
}

static const flagdef *find_short(char c, size_t *idx) {
  for (size_t i = 0; i < NFLAGS; i++)
    if (FLAGS[i].shrt == c) {
      *idx = i;
      return &FLAGS[i];
    }
  return NULL;
}

static int parse_bool(const char *s, int *out) {
  if (strcmp(s, "true") == 0 || strcmp(s, "1") == 0 || strcmp(s, "yes") == 0)
    *out = 1;
  else if (strcmp(s, "false") == 0 || strcmp(s, "0") == 0 ||
           strcmp(s, "no") == 0)
    *out = 0;
  else
    return -1;
  return 0;
}

static int parse_long(const char *s, long lo, long hi, long *out) {
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno != 0 || end == s || *end != '\0' || v < lo || v > hi)
    return -1;
  *out = v;
  return 0;
}

/* Parses argv into flags and positional arguments. Returns 0 or
 * IA_EXIT_USAGE (message printed). */
static int parse_args(int argc, char **argv, parsed *p) {
  int only_pos = 0;
  memset(p, 0, sizeof *p);
  p->argv = ia_xmalloc(((size_t)argc + 1) * sizeof(char *));
  for (int i = 1; i < argc; i++) {
    char *a = argv[i];
    size_t idx = 0;
    const flagdef *f = NULL;
    const char *val = NULL;
    if (only_pos || a[0] != '-' || a[1] == '\0') {
      p->argv[p->argc++] = a;
      continue;
    }
    if (strcmp(a, "--") == 0) {
      only_pos = 1;
      continue;
    }
    if (a[1] == '-') {
      const char *eq = strchr(a + 2, '=');
      size_t n = eq ? (size_t)(eq - (a + 2)) : strlen(a + 2);
      f = find_long(a + 2, n, &idx);
      if (f == NULL) {
        ia_errorf("unknown flag: --%.*s (see immuadmin --help)", (int)n, a + 2);
        return IA_EXIT_USAGE;
      }
      if (eq != NULL)
        val = eq + 1;
    } else {
      if (a[2] != '\0') {
        ia_errorf("unknown shorthand flag: %s (see immuadmin --help)", a);
        return IA_EXIT_USAGE;
      }
      f = find_short(a[1], &idx);
      if (f == NULL) {
        ia_errorf("unknown shorthand flag: '%c' in %s", a[1], a);
        return IA_EXIT_USAGE;
      }
    }
    if (val == NULL) {
      if (f->type == F_BOOL) {
        val = "true";
      } else {
        if (i + 1 >= argc) {
          ia_errorf("flag needs an argument: --%s", f->name);
          return IA_EXIT_USAGE;
        }
        val = argv[++i];
      }
    }
    p->val[idx] = val;
    p->from_flag[idx] = 1;
  }
  p->argv[p->argc] = NULL;
  /* Environment, then defaults. */
  for (size_t i = 0; i < NFLAGS; i++) {
    if (p->val[i] != NULL)
      continue;
    if (FLAGS[i].env) {
      char name[64] = "IMMUADMIN_";
      size_t k = strlen(name);
      for (const char *s = FLAGS[i].name; *s && k + 1 < sizeof name; s++)
        name[k++] = *s == '-'
                        ? '_'
                        : (char)(*s >= 'a' && *s <= 'z' ? *s - 'a' + 'A' : *s);
      name[k] = '\0';
      const char *e = getenv(name);
      if (e != NULL) {
        p->val[i] = e;
        continue;
      }
    }
    p->val[i] = FLAGS[i].def;
  }
  return 0;
}

static const char *flagval(const parsed *p, const char *name) {
  size_t idx;
  if (find_long(name, strlen(name), &idx) == NULL)
    return NULL;
  return p->val[idx];
}

/* Builds the settings; IA_EXIT_USAGE on a bad value. */
static int build_opts(const parsed *p, ia_opts *o, char **tokpath) {
  long v;
  int b;
  memset(o, 0, sizeof *o);
  o->address = flagval(p, "immudb-address");
  if (parse_long(flagval(p, "immudb-port"), 1, 65535, &v) != 0) {
    ia_errorf("invalid port \"%s\": must be a number in 1..65535",
              flagval(p, "immudb-port"));
    return IA_EXIT_USAGE;
  }
  o->port = (int)v;
  if (parse_long(flagval(p, "metrics-port"), 1, 65535, &v) != 0) {
    ia_errorf("invalid metrics port \"%s\"", flagval(p, "metrics-port"));
    return IA_EXIT_USAGE;
  }
  o->metrics_port = (int)v;
  if (parse_long(flagval(p, "timeout"), 0, 86400 * 365, &v) != 0) {
    ia_errorf("invalid timeout \"%s\": seconds expected",
              flagval(p, "timeout"));
    return IA_EXIT_USAGE;
  }
  o->timeout_s = v;
  o->username = flagval(p, "username");
  o->password = flagval(p, "password");
  o->new_password = flagval(p, "new-password");
  o->old_password = flagval(p, "old-password");
  o->database = flagval(p, "database");
  o->servername = flagval(p, "servername");
  o->certificate = flagval(p, "certificate");
  o->pkey = flagval(p, "pkey");
  o->clientcas = flagval(p, "clientcas");
  o->output = flagval(p, "output");
  o->file = flagval(p, "file");
  static const char *const bools[] = {"mtls", "tls", "force",      "yes",
                                      "text", "raw", "no-progress"};
  int *dst[] = {&o->mtls, &o->tls, &o->force,      &o->yes,
                &o->text, &o->raw, &o->no_progress};
  for (size_t i = 0; i < sizeof bools / sizeof bools[0]; i++) {
    if (parse_bool(flagval(p, bools[i]), &b) != 0) {
      ia_errorf("invalid value \"%s\" for --%s: true or false expected",
                flagval(p, bools[i]), bools[i]);
      return IA_EXIT_USAGE;
    }
    *dst[i] = b;
  }
  const char *at = flagval(p, "at-tx");
  char *end;
  errno = 0;
  unsigned long long atv = strtoull(at, &end, 10);
  if (errno != 0 || end == at || *end != '\0' || at[0] == '-') {
    ia_errorf("invalid --at-tx \"%s\"", at);
    return IA_EXIT_USAGE;
  }
  o->at_tx = (uint64_t)atv;
  static const char *const lims[] = {"max-key-len", "max-value-len",
                                     "max-tx-entries"};
  long *ldst[] = {&o->max_key_len, &o->max_value_len, &o->max_tx_entries};
  for (size_t i = 0; i < 3; i++) {
    const char *s = flagval(p, lims[i]);
    *ldst[i] = -1;
    if (s != NULL && parse_long(s, 1, 0x7fffffffL, ldst[i]) != 0) {
      ia_errorf("invalid --%s \"%s\"", lims[i], s);
      return IA_EXIT_USAGE;
    }
  }
  if (o->mtls && (o->certificate == NULL || o->pkey == NULL)) {
    ia_errorf("--mtls needs --certificate and --pkey");
    return IA_EXIT_USAGE;
  }
  const char *tf = flagval(p, "tokenfile");
  if (tf != NULL && tf[0] != '\0') {
    *tokpath = ia_xstrdup(tf);
  } else {
    const char *home = getenv("HOME");
    size_t n = (home ? strlen(home) : 1) + 32;
    *tokpath = ia_xmalloc(n);
    snprintf(*tokpath, n, "%s/.immuadmin_token", home ? home : ".");
  }
  o->tokenfile = *tokpath;
  return 0;
}

/* ------------------------------------------------------------------ */
/* Token file                                                          */
/* ------------------------------------------------------------------ */

typedef struct tokinfo {
  char server[300];
  char user[128];
  char db[256];
  char token[512];
} tokinfo;

static int token_write(const ia_opts *o, const ia_conn *c) {
  size_t n = strlen(o->tokenfile) + 16;
  char *tmp = ia_xmalloc(n);
  snprintf(tmp, n, "%s.tmp", o->tokenfile);
  unlink(tmp);
  int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) {
    ia_errorf("cannot write the token file %s: %s", tmp, strerror(errno));
    free(tmp);
    return -1;
  }
  FILE *fp = fdopen(fd, "w");
  if (fp == NULL) {
    close(fd);
    free(tmp);
    return -1;
  }
  fprintf(fp,
          "# immuadmin login token: keep it private\n"
          "server %s:%d\nuser %s\ndatabase %s\ntoken %s\n",
          o->address, o->port, c->user, c->db, c->token ? c->token : "");
  int bad = fflush(fp) != 0 || fsync(fileno(fp)) != 0;
  bad |= fclose(fp) != 0;
  if (bad || rename(tmp, o->tokenfile) != 0) {
    ia_errorf("cannot write the token file %s: %s", o->tokenfile,
              strerror(errno));
    unlink(tmp);
    free(tmp);
    return -1;
  }
  free(tmp);
  return 0;
}

/* 0 read, 1 missing, -1 unreadable / malformed (message printed). */
static int token_read(const ia_opts *o, tokinfo *t) {
  memset(t, 0, sizeof *t);
  FILE *fp = fopen(o->tokenfile, "r");
  if (fp == NULL) {
    if (errno == ENOENT)
      return 1;
    ia_errorf("cannot read the token file %s: %s", o->tokenfile,
              strerror(errno));
    return -1;
  }
  char line[1024];
  while (fgets(line, sizeof line, fp) != NULL) {
    line[strcspn(line, "\r\n")] = '\0';
    char *sp = strchr(line, ' ');
    if (line[0] == '#' || sp == NULL)
      continue;
    *sp = '\0';
    const char *v = sp + 1;
    if (strcmp(line, "server") == 0)
      snprintf(t->server, sizeof t->server, "%s", v);
    else if (strcmp(line, "user") == 0)
      snprintf(t->user, sizeof t->user, "%s", v);
    else if (strcmp(line, "database") == 0)
      snprintf(t->db, sizeof t->db, "%s", v);
    else if (strcmp(line, "token") == 0)
      snprintf(t->token, sizeof t->token, "%s", v);
  }
  fclose(fp);
  if (t->token[0] == '\0') {
    ia_errorf("the token file %s is malformed: please login again",
              o->tokenfile);
    return -1;
  }
  return 0;
}

static int token_from_file;

int ia_open_session(ia_conn *c, const ia_opts *o) {
  int rc;
  token_from_file = 0;
  if (o->password != NULL) {
    const char *user = o->username ? o->username : SYSADMIN;
    char *pw = ia_read_password("Password:", o->password);
    char *warning = NULL;
    if (pw == NULL)
      return IA_EXIT_USAGE;
    if ((rc = ia_connect(c, o)) != 0) {
      free(pw);
      ia_errorf("%s", c->err);
      return IA_EXIT_FAIL;
    }
    rc = ia_login(c, user, pw, &warning);
    free(pw);
    if (rc != 0) {
      ia_conn_error(c, "login as %s failed", user);
      ia_close(c);
      return IA_EXIT_FAIL;
    }
    if (warning != NULL) {
      ia_errorf("SECURITY WARNING: %s; run 'immuadmin login %s' to change "
                "it first",
                warning, user);
      free(warning);
      ia_close(c);
      return IA_EXIT_FAIL;
    }
    return 0;
  }
  tokinfo t;
  rc = token_read(o, &t);
  if (rc < 0)
    return IA_EXIT_FAIL;
  if (rc == 1) {
    ia_errorf("please login first (immuadmin login %s), or pass --password",
              SYSADMIN);
    return IA_EXIT_FAIL;
  }
  char here[300];
  snprintf(here, sizeof here, "%s:%d", o->address, o->port);
  if (strcmp(here, t.server) != 0) {
    ia_errorf("you are logged in to %s, not %s: please login first", t.server,
              here);
    return IA_EXIT_FAIL;
  }
  if ((rc = ia_connect(c, o)) != 0) {
    ia_errorf("%s", c->err);
    return IA_EXIT_FAIL;
  }
  ia_set_token(c, t.token);
  snprintf(c->user, sizeof c->user, "%s", t.user);
  snprintf(c->db, sizeof c->db, "%s", t.db);
  token_from_file = 1;
  return 0;
}

/* Prints the failure of a call and returns the exit status. */
static int call_failed(const ia_conn *c, int rc, const char *what) {
  if (rc == IMMU_EAUTH && token_from_file)
    ia_errorf("%s: %s: the login has expired or is no longer valid; please "
              "login again (immuadmin login %s)",
              what, c->err, c->user[0] ? c->user : SYSADMIN);
  else
    ia_conn_error(c, "%s", what);
  return ia_exit_for(rc);
}

/* ------------------------------------------------------------------ */
/* login, logout, status                                               */
/* ------------------------------------------------------------------ */

/* Prompts for a new password twice (or takes --new-password). */
static char *read_new_password(const ia_opts *o, const char *user) {
  char prompt[200];
  snprintf(prompt, sizeof prompt, "Choose a password for %s:", user);
  char *p1 = ia_read_password(prompt, o->new_password);
  if (p1 == NULL || o->new_password != NULL)
    return p1;
  char *p2 = ia_read_password("Confirm password:", NULL);
  if (p2 == NULL) {
    free(p1);
    return NULL;
  }
  if (strcmp(p1, p2) != 0) {
    ia_errorf("Passwords don't match");
    free(p1);
    free(p2);
    return NULL;
  }
  free(p2);
  return p1;
}

static int change_password(ia_conn *c, const char *user, const char *old,
                           const char *neu) {
  Immudb__Schema__ChangePasswordRequest req =
      IMMUDB__SCHEMA__CHANGE_PASSWORD_REQUEST__INIT;
  req.user.data = (uint8_t *)(uintptr_t)user;
  req.user.len = strlen(user);
  req.oldpassword.data = (uint8_t *)(uintptr_t)old;
  req.oldpassword.len = strlen(old);
  req.newpassword.data = (uint8_t *)(uintptr_t)neu;
  req.newpassword.len = strlen(neu);
  return ia_call(c, "ChangePassword", &req.base, NULL, NULL);
}

static int cmd_login(const ia_opts *o, int argc, char **argv) {
  ia_conn c;
  char *pw = NULL, *warning = NULL, *np = NULL;
  int rc, ex = IA_EXIT_FAIL;

  if (argc != 1) {
    ia_errorf("usage: immuadmin login USERNAME");
    return IA_EXIT_USAGE;
  }
  const char *user = argv[0];
  if ((pw = ia_read_password("Password:", o->password)) == NULL)
    return IA_EXIT_USAGE;
  if ((rc = ia_connect(&c, o)) != 0) {
    ia_errorf("%s", c.err);
    free(pw);
    return IA_EXIT_FAIL;
  }
  if ((rc = ia_login(&c, user, pw, &warning)) != 0) {
    ia_conn_error(&c, "login failed");
    goto out;
  }
  printf("logged in\n");
  if (warning != NULL) {
    printf("SECURITY WARNING: %s\n", warning);
    fflush(stdout);
    if ((np = read_new_password(o, user)) == NULL)
      goto not_changed;
    if (strcmp(np, pw) == 0) {
      ia_errorf("the new password must differ from the default one");
      goto not_changed;
    }
    if ((rc = change_password(&c, user, pw, np)) != 0) {
      ia_conn_error(&c, "cannot change the password");
      goto not_changed;
    }
    if ((rc = ia_login(&c, user, np, NULL)) != 0) {
      ia_conn_error(&c, "login with the new password failed");
      goto out;
    }
    printf("%s's password has been changed\n", user);
  }
  if (token_write(o, &c) != 0)
    goto out;
  ex = IA_EXIT_OK;
  goto out;
not_changed:
  ia_errorf("the default password of %s must be changed before use; you "
            "are not logged in",
            user);
  unlink(o->tokenfile);
out:
  free(pw);
  free(np);
  free(warning);
  ia_close(&c);
  return ex;
}

static int cmd_logout(const ia_opts *o, int argc, char **argv) {
  (void)argv;
  if (argc != 0) {
    ia_errorf("usage: immuadmin logout");
    return IA_EXIT_USAGE;
  }
  tokinfo t;
  int rc = token_read(o, &t);
  if (rc < 0)
    return IA_EXIT_FAIL;
  if (rc == 1) {
    ia_errorf("not logged in");
    return IA_EXIT_FAIL;
  }
  ia_conn c;
  if (ia_connect(&c, o) == 0) {
    Google__Protobuf__Empty req = GOOGLE__PROTOBUF__EMPTY__INIT;
    ia_set_token(&c, t.token);
    /* An expired token is logged out already. */
    rc = ia_call(&c, "Logout", &req.base, NULL, NULL);
    if (rc != 0 && rc != IMMU_EAUTH)
      fprintf(stderr,
              "immuadmin: warning: the server refused the logout: "
              "%s\n",
              c.err);
  } else {
    fprintf(stderr, "immuadmin: warning: %s; removing the token anyway\n",
            c.err);
  }
  ia_close(&c);
  if (unlink(o->tokenfile) != 0 && errno != ENOENT) {
    ia_errorf("cannot remove %s: %s", o->tokenfile, strerror(errno));
    return IA_EXIT_FAIL;
  }
  printf("logged out\n");
  return IA_EXIT_OK;
}

static int cmd_status(const ia_opts *o, int argc, char **argv) {
  (void)argv;
  if (argc != 0) {
    ia_errorf("usage: immuadmin status");
    return IA_EXIT_USAGE;
  }
  ia_conn c;
  if (ia_connect(&c, o) != 0) {
    ia_errorf("%s", c.err);
    return IA_EXIT_FAIL;
  }
  int healthy = 0, rc;
  char version[128];
  if ((rc = ia_health(&c, &healthy, version, sizeof version)) != 0) {
    int ex = call_failed(&c, rc, "health check failed");
    ia_close(&c);
    return ex;
  }
  Immudb__Schema__ServerInfoRequest req =
      IMMUDB__SCHEMA__SERVER_INFO_REQUEST__INIT;
  Immudb__Schema__ServerInfoResponse *r = NULL;
  rc = ia_call(&c, "ServerInfo", &req.base,
               &immudb__schema__server_info_response__descriptor,
               (ProtobufCMessage **)&r);
  if (rc != 0) {
    int ex = call_failed(&c, rc, "ServerInfo failed");
    ia_close(&c);
    return ex;
  }
  time_t started = (time_t)r->startedat;
  struct tm tm;
  char when[64] = "?", up[64] = "?", size[32];
  if (localtime_r(&started, &tm) != NULL)
    strftime(when, sizeof when, "%d %b %Y %H:%M %Z", &tm);
  time_t now = time(NULL);
  ia_duration(now > started ? (uint64_t)(now - started) : 0, up, sizeof up);
  ia_bytes(r->databasesdisksize > 0 ? (uint64_t)r->databasesdisksize : 0, size,
           sizeof size);
  printf("Status:\t\t%s\n", healthy ? "OK - server is reachable and "
                                      "responding to queries"
                                    : "NOT OK - the server reports it is "
                                      "not healthy");
  printf("Version:\t%s\n", r->version ? r->version : version);
  printf("Up time:\t%s (up %s)\n", when, up);
  printf("Databases:\t%d (%s)\n", r->numdatabases, size);
  printf("Transactions:\t%" PRId64 "\n", r->numtransactions);
  if (c.uuid[0])
    printf("Server UUID:\t%s\n", c.uuid);
  protobuf_c_message_free_unpacked(&r->base, NULL);
  ia_close(&c);
  return healthy ? IA_EXIT_OK : IA_EXIT_FAIL;
}

/* ------------------------------------------------------------------ */
/* database                                                            */
/* ------------------------------------------------------------------ */

static Google__Protobuf__Empty empty_msg = GOOGLE__PROTOBUF__EMPTY__INIT;

static int db_list(ia_conn *c) {
  Immudb__Schema__DatabaseListRequestV2 req =
      IMMUDB__SCHEMA__DATABASE_LIST_REQUEST_V2__INIT;
  Immudb__Schema__DatabaseListResponseV2 *r = NULL;
  int rc = ia_call(c, "DatabaseListV2", &req.base,
                   &immudb__schema__database_list_response_v2__descriptor,
                   (ProtobufCMessage **)&r);
  if (rc != 0)
    return call_failed(c, rc, "cannot list the databases");
  static const char *const hdr[] = {"Database", "Status", "Disk Size",
                                    "Transactions", "Created By"};
  ia_table t;
  ia_table_init(&t, 5, hdr);
  for (size_t i = 0; i < r->n_databases; i++) {
    const Immudb__Schema__DatabaseInfo *d = r->databases[i];
    char name[300], size[32], txs[32];
    const char *nm = d->name ? d->name : "";
    snprintf(name, sizeof name, "%s%s",
             c->db[0] && strcmp(c->db, nm) == 0 ? "*" : "", nm);
    ia_bytes(d->disksize, size, sizeof size);
    snprintf(txs, sizeof txs, "%" PRIu64, d->numtransactions);
    const char *row[] = {name, d->loaded ? "loaded" : "unloaded", size, txs,
                         d->created_by ? d->created_by : ""};
    ia_table_row(&t, row);
  }
  ia_table_print(&t, stdout);
  printf("%zu database(s)\n", r->n_databases);
  ia_table_free(&t);
  protobuf_c_message_free_unpacked(&r->base, NULL);
  return IA_EXIT_OK;
}

int ia_create_database(ia_conn *c, const ia_opts *o, const char *name) {
  Immudb__Schema__CreateDatabaseRequest req =
      IMMUDB__SCHEMA__CREATE_DATABASE_REQUEST__INIT;
  Immudb__Schema__DatabaseNullableSettings st =
      IMMUDB__SCHEMA__DATABASE_NULLABLE_SETTINGS__INIT;
  Immudb__Schema__NullableUint32 kl = IMMUDB__SCHEMA__NULLABLE_UINT32__INIT,
                                 vl = IMMUDB__SCHEMA__NULLABLE_UINT32__INIT,
                                 te = IMMUDB__SCHEMA__NULLABLE_UINT32__INIT;
  Immudb__Schema__CreateDatabaseResponse *r = NULL;
  int with = 0;
  req.name = (char *)(uintptr_t)name;
  if (o->max_key_len > 0) {
    kl.value = (uint32_t)o->max_key_len;
    st.maxkeylen = &kl;
    with = 1;
  }
  if (o->max_value_len > 0) {
    vl.value = (uint32_t)o->max_value_len;
    st.maxvaluelen = &vl;
    with = 1;
  }
  if (o->max_tx_entries > 0) {
    te.value = (uint32_t)o->max_tx_entries;
    st.maxtxentries = &te;
    with = 1;
  }
  if (with)
    req.settings = &st;
  int rc = ia_call(c, "CreateDatabaseV2", &req.base,
                   &immudb__schema__create_database_response__descriptor,
                   (ProtobufCMessage **)&r);
  if (rc == 0)
    protobuf_c_message_free_unpacked(&r->base, NULL);
  return rc;
}

static int db_create(ia_conn *c, const ia_opts *o, const char *name) {
  int rc = ia_create_database(c, o, name);
  if (rc != 0)
    return call_failed(c, rc, "cannot create the database");
  printf("database '%s' successfully created\n", name);
  return IA_EXIT_OK;
}

static int db_simple(ia_conn *c, const char *verb, const char *name) {
  int rc;
  const char *done;
  if (strcmp(verb, "load") == 0) {
    Immudb__Schema__LoadDatabaseRequest req =
        IMMUDB__SCHEMA__LOAD_DATABASE_REQUEST__INIT;
    req.database = (char *)(uintptr_t)name;
    rc = ia_call(c, "LoadDatabase", &req.base, NULL, NULL);
    done = "loaded";
  } else if (strcmp(verb, "unload") == 0) {
    Immudb__Schema__UnloadDatabaseRequest req =
        IMMUDB__SCHEMA__UNLOAD_DATABASE_REQUEST__INIT;
    req.database = (char *)(uintptr_t)name;
    rc = ia_call(c, "UnloadDatabase", &req.base, NULL, NULL);
    done = "unloaded";
  } else {
    Immudb__Schema__DeleteDatabaseRequest req =
        IMMUDB__SCHEMA__DELETE_DATABASE_REQUEST__INIT;
    req.database = (char *)(uintptr_t)name;
    rc = ia_call(c, "DeleteDatabase", &req.base, NULL, NULL);
    done = "deleted";
  }
  if (rc != 0) {
    char what[320];
    snprintf(what, sizeof what, "cannot %s database '%s'", verb, name);
    return call_failed(c, rc, what);
  }
  printf("database '%s' successfully %s\n", name, done);
  return IA_EXIT_OK;
}

static int cmd_database(const ia_opts *o, int argc, char **argv) {
  static const char usage[] =
      "usage: immuadmin database list | create NAME | use NAME | load NAME "
      "| unload NAME | delete NAME";
  if (argc < 1) {
    ia_errorf("%s", usage);
    return IA_EXIT_USAGE;
  }
  const char *sub = argv[0];
  int is_list = strcmp(sub, "list") == 0 || strcmp(sub, "l") == 0;
  int known = is_list || strcmp(sub, "create") == 0 ||
              strcmp(sub, "use") == 0 || strcmp(sub, "load") == 0 ||
              strcmp(sub, "unload") == 0 || strcmp(sub, "delete") == 0;
  if (!known) {
    ia_errorf("unknown database command \"%s\"; %s", sub, usage);
    return IA_EXIT_USAGE;
  }
  if ((is_list && argc != 1) || (!is_list && argc != 2)) {
    ia_errorf("%s", usage);
    return IA_EXIT_USAGE;
  }
  const char *name = argc > 1 ? argv[1] : NULL;
  if (strcmp(sub, "delete") == 0 && !o->yes) {
    if (!isatty(STDIN_FILENO)) {
      ia_errorf("refusing to delete database '%s' without confirmation: "
                "pass --yes",
                name);
      return IA_EXIT_FAIL;
    }
    char q[400];
    snprintf(q, sizeof q,
             "Database '%s' and all its data will be deleted. Continue?", name);
    if (!ia_confirm(q)) {
      ia_errorf("canceled");
      return IA_EXIT_FAIL;
    }
  }
  ia_conn c;
  int ex = ia_open_session(&c, o);
  if (ex != 0)
    return ex;
  if (is_list) {
    ex = db_list(&c);
  } else if (strcmp(sub, "create") == 0) {
    ex = db_create(&c, o, name);
  } else if (strcmp(sub, "use") == 0) {
    int rc = ia_use_database(&c, name);
    if (rc != 0) {
      char what[320];
      snprintf(what, sizeof what, "cannot use database '%s'", name);
      ex = call_failed(&c, rc, what);
    } else if (token_from_file && token_write(o, &c) != 0) {
      ex = IA_EXIT_FAIL;
    } else {
      printf("Now using %s\n", name);
      ex = IA_EXIT_OK;
    }
  } else {
    ex = db_simple(&c, sub, name);
  }
  ia_close(&c);
  return ex;
}

/* ------------------------------------------------------------------ */
/* user                                                                */
/* ------------------------------------------------------------------ */

static const char *perm_name(uint32_t p) {
  switch (p) {
  case 1:
    return "Read";
  case 2:
    return "Read/Write";
  case 254:
    return "Admin";
  case 255:
    return "System Admin";
  default:
    return "None";
  }
}

static int perm_parse(const char *s, uint32_t *out) {
  if (strcmp(s, "read") == 0)
    *out = 1;
  else if (strcmp(s, "readwrite") == 0)
    *out = 2;
  else if (strcmp(s, "admin") == 0)
    *out = 254;
  else {
    ia_errorf("Permission %s not recognized: allowed permissions are read, "
              "readwrite, admin",
              s);
    return -1;
  }
  return 0;
}

static int list_users(ia_conn *c, Immudb__Schema__UserList **out) {
  return ia_call(c, "ListUsers", &empty_msg.base,
                 &immudb__schema__user_list__descriptor,
                 (ProtobufCMessage **)out);
}

static int user_list(ia_conn *c) {
  Immudb__Schema__UserList *l = NULL;
  int rc = list_users(c, &l);
  if (rc != 0)
    return call_failed(c, rc, "cannot list the users");
  static const char *const hdr[] = {"User",       "Active",     "Database",
                                    "Permission", "Created By", "Created At"};
  ia_table t;
  ia_table_init(&t, 6, hdr);
  for (size_t i = 0; i < l->n_users; i++) {
    const Immudb__Schema__User *u = l->users[i];
    char name[300];
    snprintf(name, sizeof name, "%.*s", (int)u->user.len,
             (const char *)u->user.data);
    for (size_t k = 0; k < (u->n_permissions ? u->n_permissions : 1); k++) {
      const char *db = "", *perm = "";
      if (u->n_permissions) {
        db = u->permissions[k]->database ? u->permissions[k]->database : "";
        perm = perm_name(u->permissions[k]->permission);
      }
      const char *row[] = {k == 0 ? name : "",
                           k == 0 ? (u->active ? "true" : "false") : "",
                           db,
                           perm,
                           k == 0 && u->createdby ? u->createdby : "",
                           k == 0 && u->createdat ? u->createdat : ""};
      ia_table_row(&t, row);
    }
  }
  ia_table_print(&t, stdout);
  printf("%zu user(s)\n", l->n_users);
  ia_table_free(&t);
  protobuf_c_message_free_unpacked(&l->base, NULL);
  return IA_EXIT_OK;
}

static int user_create(ia_conn *c, const ia_opts *o, int argc, char **argv) {
  const char *name = argv[1];
  uint32_t perm;
  if (perm_parse(argv[2], &perm) != 0)
    return IA_EXIT_USAGE;
  const char *db = argc > 3 ? argv[3] : (c->db[0] ? c->db : IA_DEFAULT_DB);
  Immudb__Schema__UserList *l = NULL;
  int rc = list_users(c, &l);
  if (rc != 0)
    return call_failed(c, rc, "cannot create the user");
  for (size_t i = 0; i < l->n_users; i++)
    if (l->users[i]->user.len == strlen(name) &&
        memcmp(l->users[i]->user.data, name, strlen(name)) == 0) {
      protobuf_c_message_free_unpacked(&l->base, NULL);
      ia_errorf("User %s already exists", name);
      return IA_EXIT_FAIL;
    }
  protobuf_c_message_free_unpacked(&l->base, NULL);
  rc = ia_database_exists(c, db);
  if (rc < 0)
    return call_failed(c, rc, "cannot create the user");
  if (rc == 0) {
    ia_errorf("Database %s does not exist", db);
    return IA_EXIT_FAIL;
  }
  char *pw = read_new_password(o, name);
  if (pw == NULL)
    return IA_EXIT_FAIL;
  Immudb__Schema__CreateUserRequest req =
      IMMUDB__SCHEMA__CREATE_USER_REQUEST__INIT;
  req.user.data = (uint8_t *)(uintptr_t)name;
  req.user.len = strlen(name);
  req.password.data = (uint8_t *)pw;
  req.password.len = strlen(pw);
  req.permission = perm;
  req.database = (char *)(uintptr_t)db;
  rc = ia_call(c, "CreateUser", &req.base, NULL, NULL);
  free(pw);
  if (rc != 0)
    return call_failed(c, rc, "cannot create the user");
  printf("Created user %s\n", name);
  return IA_EXIT_OK;
}

static int user_changepassword(ia_conn *c, const ia_opts *o, const char *name) {
  char *old = NULL;
  if (strcmp(name, c->user) == 0) {
    /* Your own password: the server wants the current one. */
    if ((old = ia_read_password("Old password:", o->old_password)) == NULL)
      return IA_EXIT_FAIL;
  } else {
    old = ia_xstrdup("");
  }
  char *np = read_new_password(o, name);
  if (np == NULL) {
    free(old);
    return IA_EXIT_FAIL;
  }
  if (old[0] && strcmp(old, np) == 0) {
    free(old);
    free(np);
    ia_errorf("New password is identical to the old one");
    return IA_EXIT_FAIL;
  }
  int rc = change_password(c, name, old, np);
  free(old);
  free(np);
  if (rc != 0)
    return call_failed(c, rc, "cannot change the password");
  printf("%s's password has been changed\n", name);
  return IA_EXIT_OK;
}

static int user_permission(ia_conn *c, int argc, char **argv) {
  (void)argc;
  Immudb__Schema__ChangePermissionRequest req =
      IMMUDB__SCHEMA__CHANGE_PERMISSION_REQUEST__INIT;
  uint32_t perm;
  if (strcmp(argv[1], "grant") == 0)
    req.action = IMMUDB__SCHEMA__PERMISSION_ACTION__GRANT;
  else if (strcmp(argv[1], "revoke") == 0)
    req.action = IMMUDB__SCHEMA__PERMISSION_ACTION__REVOKE;
  else {
    ia_errorf("wrong permission action. Only grant or revoke are allowed. "
              "Provided: %s",
              argv[1]);
    return IA_EXIT_USAGE;
  }
  if (perm_parse(argv[3], &perm) != 0)
    return IA_EXIT_USAGE;
  req.username = argv[2];
  req.permission = perm;
  req.database = argv[4];
  int rc = ia_call(c, "ChangePermission", &req.base, NULL, NULL);
  if (rc != 0)
    return call_failed(c, rc, "cannot change the permission");
  printf("Permission changed successfully\n");
  return IA_EXIT_OK;
}

static int user_set_active(ia_conn *c, const char *name, int active) {
  Immudb__Schema__SetActiveUserRequest req =
      IMMUDB__SCHEMA__SET_ACTIVE_USER_REQUEST__INIT;
  req.username = (char *)(uintptr_t)name;
  req.active = active;
  int rc = ia_call(c, "SetActiveUser", &req.base, NULL, NULL);
  if (rc != 0)
    return call_failed(c, rc, "cannot change the user status");
  printf("User status changed successfully\n");
  return IA_EXIT_OK;
}

static int cmd_user(const ia_opts *o, int argc, char **argv) {
  static const char usage[] =
      "usage: immuadmin user list | create NAME read|readwrite|admin "
      "[DATABASE] | changepassword NAME | permission grant|revoke NAME "
      "read|readwrite|admin DATABASE | activate NAME | deactivate NAME";
  if (argc < 1) {
    ia_errorf("%s", usage);
    return IA_EXIT_USAGE;
  }
  const char *sub = argv[0];
  int want_lo, want_hi;
  if (strcmp(sub, "list") == 0) {
    want_lo = want_hi = 1;
  } else if (strcmp(sub, "create") == 0) {
    want_lo = 3;
    want_hi = 4;
  } else if (strcmp(sub, "changepassword") == 0 ||
             strcmp(sub, "activate") == 0 || strcmp(sub, "deactivate") == 0) {
    want_lo = want_hi = 2;
  } else if (strcmp(sub, "permission") == 0) {
    want_lo = want_hi = 5;
  } else {
    ia_errorf("unknown user command \"%s\"; %s", sub, usage);
    return IA_EXIT_USAGE;
  }
  if (argc < want_lo || argc > want_hi) {
    ia_errorf("%s", usage);
    return IA_EXIT_USAGE;
  }
  ia_conn c;
  int ex = ia_open_session(&c, o);
  if (ex != 0)
    return ex;
  if (strcmp(sub, "list") == 0)
    ex = user_list(&c);
  else if (strcmp(sub, "create") == 0)
    ex = user_create(&c, o, argc, argv);
  else if (strcmp(sub, "changepassword") == 0)
    ex = user_changepassword(&c, o, argv[1]);
  else if (strcmp(sub, "permission") == 0)
    ex = user_permission(&c, argc, argv);
  else
    ex = user_set_active(&c, argv[1], strcmp(sub, "activate") == 0);
  ia_close(&c);
  return ex;
}

/* ------------------------------------------------------------------ */
/* help, dispatch                                                      */
/* ------------------------------------------------------------------ */

static void print_help(FILE *fp) {
  fprintf(
      fp,
      "CLI admin client for immudb - the lightweight, high-speed immutable "
      "database.\n\n"
      "Usage:\n  immuadmin [command] [flags]\n\n"
      "Available Commands:\n"
      "  login USERNAME        Login (the default admin password must be "
      "changed at the first login)\n"
      "  logout                Logout\n"
      "  status                Show heartbeat status\n"
      "  stats                 Show statistics: live view, -t text, -r raw\n"
      "  database              list | create NAME | use NAME | load NAME | "
      "unload NAME | delete NAME\n"
      "  user                  list | create NAME PERMISSION [DATABASE] | "
      "changepassword NAME |\n"
      "                        permission grant|revoke NAME PERMISSION "
      "DATABASE | activate NAME | deactivate NAME\n"
      "  backup                Verified, consistent backup of a database "
      "(-d DB, -o FILE, --at-tx N)\n"
      "  dump                  Stream a database's txs in the backup format "
      "(-d DB, -o FILE|-)\n"
      "  restore FILE          Verify a backup, then restore it into a new "
      "database (-d NAME, --force)\n"
      "  verify                Re-hash a database (-d DB) or a backup file "
      "(--file FILE)\n"
      "  version               Show the version\n"
      "  help                  This help\n\n"
      "Flags:\n");
  for (size_t i = 0; i < NFLAGS; i++) {
    char left[64];
    if (FLAGS[i].shrt)
      snprintf(left, sizeof left, "-%c, --%s", FLAGS[i].shrt, FLAGS[i].name);
    else
      snprintf(left, sizeof left, "    --%s", FLAGS[i].name);
    fprintf(fp, "  %-24s %s", left, FLAGS[i].help);
    if (FLAGS[i].def != NULL && FLAGS[i].type != F_BOOL &&
        strcmp(FLAGS[i].name, "at-tx") != 0)
      fprintf(fp, " (default \"%s\")", FLAGS[i].def);
    fputc('\n', fp);
  }
  fprintf(fp, "\nEnvironment variables (a flag wins over its variable):\n");
  for (size_t i = 0; i < NFLAGS; i++) {
    if (!FLAGS[i].env)
      continue;
    char name[64] = "IMMUADMIN_";
    size_t k = strlen(name);
    for (const char *s = FLAGS[i].name; *s && k + 1 < sizeof name; s++)
      name[k++] = *s == '-'
                      ? '_'
                      : (char)(*s >= 'a' && *s <= 'z' ? *s - 'a' + 'A' : *s);
    name[k] = '\0';
    fprintf(fp, "  %s\n", name);
  }
  fprintf(fp, "\nExit status: 0 ok, 1 failure, 2 bad usage, 3 integrity "
              "failure (data does not verify).\n");
}

int main(int argc, char **argv) {
  parsed p;
  ia_opts o;
  char *tokpath = NULL;
  int ex = parse_args(argc, argv, &p);
  if (ex != 0)
    goto out;
  if (strcmp(flagval(&p, "help"), "true") == 0 || p.argc == 0 ||
      strcmp(p.argv[0], "help") == 0) {
    print_help(stdout);
    ex = p.argc == 0 && strcmp(flagval(&p, "help"), "true") != 0 ? IA_EXIT_USAGE
                                                                 : IA_EXIT_OK;
    goto out;
  }
  if ((ex = build_opts(&p, &o, &tokpath)) != 0)
    goto out;
  const char *cmd = p.argv[0];
  int cargc = p.argc - 1;
  char **cargv = p.argv + 1;
  if (strcmp(cmd, "login") == 0 || strcmp(cmd, "l") == 0)
    ex = cmd_login(&o, cargc, cargv);
  else if (strcmp(cmd, "logout") == 0 || strcmp(cmd, "x") == 0)
    ex = cmd_logout(&o, cargc, cargv);
  else if (strcmp(cmd, "status") == 0 || strcmp(cmd, "p") == 0)
    ex = cmd_status(&o, cargc, cargv);
  else if (strcmp(cmd, "stats") == 0 || strcmp(cmd, "s") == 0)
    ex = ia_cmd_stats(&o, cargc, cargv);
  else if (strcmp(cmd, "database") == 0 || strcmp(cmd, "d") == 0)
    ex = cmd_database(&o, cargc, cargv);
  else if (strcmp(cmd, "user") == 0 || strcmp(cmd, "u") == 0)
    ex = cmd_user(&o, cargc, cargv);
  else if (strcmp(cmd, "backup") == 0)
    ex = ia_cmd_backup(&o, cargc, cargv);
  else if (strcmp(cmd, "dump") == 0)
    ex = ia_cmd_dump(&o, cargc, cargv);
  else if (strcmp(cmd, "restore") == 0)
    ex = ia_cmd_restore(&o, cargc, cargv);
  else if (strcmp(cmd, "verify") == 0)
    ex = ia_cmd_verify(&o, cargc, cargv);
  else if (strcmp(cmd, "version") == 0) {
    printf("immuadmin %s\n", IA_VERSION);
    ex = IA_EXIT_OK;
  } else {
    ia_errorf("unknown command \"%s\" (see immuadmin help)", cmd);
    ex = IA_EXIT_USAGE;
  }
out:
  free(p.argv);
  free(tokpath);
  fflush(stdout);
  return ex;
}
