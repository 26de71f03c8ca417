/* SPDX-License-Identifier: Apache-2.0 */
/*
 * immuclient: the SDK handle, authentication, the token file and the
 * mapping of SDK failures to one-line messages and exit codes.
 *
 * Authentication (as immudb's immuclient): `immuclient login <user>` logs
 * in and keeps the token in the token file (--tokenfile, default
 * ~/.immuclient/token; mode 0600) together with the selected database, in
 * immudb's layout: u64 big-endian length of the database name, the name,
 * then the token. Later invocations send that token; `use <db>` replaces
 * it with the database's token; `logout` deletes the file. With
 * --username/--password (or IMMUCLIENT_USERNAME / IMMUCLIENT_PASSWORD)
 * every invocation logs in by itself instead and the token file is left
 * alone.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#include "immuclient/ic.h"

#define TOKEN_MAX 8192

/* ------------------------------------------------------------------ */
/* passwords                                                           */
/* ------------------------------------------------------------------ */

static int b64val(int ch) {
  if (ch >= 'A' && ch <= 'Z')
    return ch - 'A';
  if (ch >= 'a' && ch <= 'z')
    return ch - 'a' + 26;
  if (ch >= '0' && ch <= '9')
    return ch - '0' + 52;
  if (ch == '+' || ch == '-')
    return 62;
  if (ch == '/' || ch == '_')
    return 63;
  return -1;
}

char *ic_decode_password(const char *s) {
  if (s == NULL)
    return NULL;
  if (strncmp(s, "enc:", 4) != 0)
    return ic_xstrdup(s);
  s += 4;
  size_t n = strlen(s);
  char *out = ic_xmalloc(n + 1);
  size_t o = 0;
  unsigned acc = 0;
  int bits = 0;
  for (size_t i = 0; i < n; i++) {
    if (s[i] == '=')
      break;
    int v = b64val((unsigned char)s[i]);
    if (v < 0) {
      free(out);
      return NULL;
    }
    acc = (acc << 6) | (unsigned)v;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[o++] = (char)((acc >> bits) & 0xffu);
    }
  }
  out[o] = '\0';
  return out;
}

char *ic_read_password(const char *prompt) {
  char buf[1024];
  int tty = isatty(STDIN_FILENO);
  struct termios old, nw;
  int restore = 0;

  if (tty) {
    fprintf(stderr, "%s", prompt);
    fflush(stderr);
    if (tcgetattr(STDIN_FILENO, &old) == 0) {
      nw = old;
      nw.c_lflag &= ~(tcflag_t)ECHO;
      if (tcsetattr(STDIN_FILENO, TCSANOW, &nw) == 0)
        restore = 1;
    }
  }
  char *r = fgets(buf, sizeof buf, stdin);
  if (restore) {
    tcsetattr(STDIN_FILENO, TCSANOW, &old);
    fputc('\n', stderr);
  }
  if (r == NULL) {
    fputs("immuclient: no password given (use --password, "
          "IMMUCLIENT_PASSWORD or type it)\n",
          stderr);
    return NULL;
  }
  buf[strcspn(buf, "\r\n")] = '\0';
  char *p = ic_xstrdup(buf);
  memset(buf, 0, sizeof buf);
  return p;
}

/* ------------------------------------------------------------------ */
/* errors                                                              */
/* ------------------------------------------------------------------ */

/* The last part of a transport message ("cannot connect to h:p: cannot
 * connect to h:p: Connection refused" -> "Connection refused"). */
static const char *reason(const char *m) {
  const char *p = strrchr(m, ':');
  if (strncmp(m, "cannot connect to ", 18) == 0 && p != NULL && p[1] == ' ' &&
      p[2] != '\0')
    return p + 2;
  return m;
}

const char *ic_err_text(void) {
  const char *m = immu_client_last_error();
  const char *p = strstr(m, "server error ");
  if (p != NULL) {
    const char *q = strstr(p, ": ");
    if (q != NULL && q[2] != '\0')
      return q + 2;
  }
  return m;
}

int ic_fail(ic_ctx *x, int rc, const char *what) {
  const char *msg = ic_err_text();
  int status = immu_client_last_grpc_status();
  int code = IC_EXIT_ERR;

  switch (rc) {
  case IMMU_ENOTFOUND:
    if (status > 0)
      ic_errorf(x, "%s", msg[0] ? msg : "not found");
    else
      ic_errorf(x, "%s: %s", what, msg);
    break;
  case IMMU_EAUTH:
    if (status == 16 /* UNAUTHENTICATED */ || status == 2)
      ic_errorf(x,
                "%s: not logged in or session expired (%s): run 'immuclient "
                "login <username>' or pass --username and --password",
                what, msg);
    else
      ic_errorf(x, "%s: %s", what, msg);
    break;
  case IMMU_EPERM:
    if (strstr(msg, "permission denied") != NULL)
      ic_errorf(x, "%s: %s", what, msg);
    else
      ic_errorf(x, "%s: permission denied: %s", what, msg);
    break;
  case IMMU_EVERIFY:
    ic_errorf(x, "%s: verification failed (possible tampering): %s", what, msg);
    code = IC_EXIT_TAMPERED;
    break;
  case IMMU_ECORRUPT:
    ic_errorf(x, "%s: corrupted data: %s", what, msg);
    code = IC_EXIT_TAMPERED;
    break;
  default:
    if (status < 0 &&
        (rc == IMMU_ECLOSED || rc == IMMU_ETIMEOUT || (rc < 0 && rc > -1000)))
      ic_errorf(x, "%s: cannot reach immudb at %s:%d: %s", what, x->o.address,
                x->o.port, reason(msg));
    else
      ic_errorf(x, "%s: %s", what, msg);
    break;
  }
  return code;
}

/* ------------------------------------------------------------------ */
/* the handle                                                          */
/* ------------------------------------------------------------------ */

void ic_fill_options(ic_ctx *x, immu_client_options *o, const char *state_dir) {
  immu_client_options_init(o);
  o->address = x->o.address;
  o->port = x->o.port;
  if (x->o.mtls) {
    o->tls = 1;
    o->ca_file = x->o.clientcas;
    o->cert_file = x->o.certificate;
    o->key_file = x->o.pkey;
    o->server_name = x->o.servername;
  }
  o->server_signing_pubkey = x->o.server_signing_pub_key;
  o->state_dir = state_dir;
  o->connect_timeout_ms = 10000;
  o->call_timeout_ms = x->o.timeout_ms;
  o->max_recv_msg_size = (size_t)x->o.max_recv_msg_size;
  o->keepalive_ms = -1;
}

int ic_connect(ic_ctx *x) {
  immu_client_options o;
  if (x->c != NULL)
    return 0;
  ic_fill_options(x, &o, x->o.dir);
  o.database = x->o.database != NULL && x->o.database[0] != '\0' ? x->o.database
                                                                 : "defaultdb";
  int rc = immu_client_new(&o, &x->c);
  if (rc != 0) {
    x->c = NULL;
    if (rc == IMMU_ECRYPTO || rc == IMMU_EINVAL)
      ic_errorf(x, "cannot set up the client: %s", immu_client_last_error());
    else
      ic_errorf(x, "cannot reach immudb at %s:%d: %s", x->o.address, x->o.port,
                reason(immu_client_last_error()));
    return rc == IMMU_EINVAL ? IC_EXIT_USAGE : IC_EXIT_ERR;
  }
  return 0;
}

void ic_disconnect(ic_ctx *x) {
  immu_client_free(x->c);
  x->c = NULL;
  x->authed = 0;
}

/* ------------------------------------------------------------------ */
/* token file                                                          */
/* ------------------------------------------------------------------ */

static int mkdir_parents(const char *path) {
  char *d = ic_xstrdup(path);
  char *slash = strrchr(d, '/');
  int rc = 0;
  if (slash != NULL && slash != d) {
    *slash = '\0';
    for (char *p = d + 1; *p; p++) {
      if (*p != '/')
        continue;
      *p = '\0';
      if (mkdir(d, 0700) != 0 && errno != EEXIST)
        rc = -errno;
      *p = '/';
    }
    if (mkdir(d, 0700) != 0 && errno != EEXIST)
      rc = -errno;
  }
  free(d);
  return rc;
}

static int token_write(ic_ctx *x, const char *db, const char *token) {
  size_t dl = strlen(db), tl = strlen(token);
  size_t n = 8 + dl + tl;
  uint8_t *buf = ic_xmalloc(n);
  for (int i = 0; i < 8; i++)
    buf[i] = (uint8_t)((uint64_t)dl >> (56 - 8 * i));
  memcpy(buf + 8, db, dl);
  memcpy(buf + 8 + dl, token, tl);

  (void)mkdir_parents(x->token_path);
  size_t pl = strlen(x->token_path) + 32;
  char *tmp = ic_xmalloc(pl);
  snprintf(tmp, pl, "%s.tmp.%ld", x->token_path, (long)getpid());
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  int rc = 0;
  if (fd < 0) {
    rc = -errno;
  } else {
    size_t off = 0;
    while (off < n) {
      ssize_t w = write(fd, buf + off, n - off);
      if (w < 0) {
        if (errno == EINTR)
          continue;
        rc = -errno;
        break;
      }
      off += (size_t)w;
    }
    if (close(fd) != 0 && rc == 0)
      rc = -errno;
    if (rc == 0 && rename(tmp, x->token_path) != 0)
      rc = -errno;
    if (rc != 0)
      unlink(tmp);
  }
  if (rc != 0)
    ic_warnf("cannot write the token file %s: %s", x->token_path,
             strerror(-rc));
  memset(buf, 0, n);
  free(buf);
  free(tmp);
  return rc;
}

/* Reads the token file. Returns 1 (found; *db and *token heap strings), 0
 * (no file) or -1 (unreadable / malformed: warned). */
static int token_read(ic_ctx *x, char **db, char **token) {
  uint8_t buf[TOKEN_MAX + 512];
  int fd = open(x->token_path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT)
      return 0;
    ic_warnf("cannot read the token file %s: %s", x->token_path,
             strerror(errno));
    return -1;
  }
  size_t n = 0;
  for (;;) {
    ssize_t r = read(fd, buf + n, sizeof buf - n);
    if (r < 0 && errno == EINTR)
      continue;
    if (r <= 0)
      break;
    n += (size_t)r;
    if (n == sizeof buf)
      break;
  }
  close(fd);
  uint64_t dl = 0;
  if (n > 8)
    for (int i = 0; i < 8; i++)
      dl = (dl << 8) | buf[i];
  if (n <= 8 || n == sizeof buf || dl >= n - 8 || dl > 255) {
    ic_warnf("the token file %s is malformed; run 'immuclient login' again",
             x->token_path);
    return -1;
  }
  *db = ic_xmalloc((size_t)dl + 1);
  memcpy(*db, buf + 8, (size_t)dl);
  (*db)[dl] = '\0';
  size_t tl = n - 8 - (size_t)dl;
  *token = ic_xmalloc(tl + 1);
  memcpy(*token, buf + 8 + dl, tl);
  (*token)[tl] = '\0';
  memset(buf, 0, sizeof buf);
  return 1;
}

/* Saves the handle's token (if the SDK can tell it) with its database. */
static void token_save_current(ic_ctx *x) {
  char tok[TOKEN_MAX], db[IMMU_DB_NAME_MAX + 1];
  if (immu_client_token(x->c, tok, sizeof tok) != 0)
    return;
  immu_client_current_database(x->c, db, sizeof db);
  (void)token_write(x, db, tok);
  memset(tok, 0, sizeof tok);
}

/* ------------------------------------------------------------------ */
/* authentication                                                      */
/* ------------------------------------------------------------------ */

/* Login without touching the token file. */
static int login_only(ic_ctx *x, const char *user, const char *password) {
  int rc = immu_client_login(x->c, user, password);
  if (rc == 0) {
    x->authed = 1;
    return 0;
  }
  if (rc == IMMU_EAUTH) {
    const char *m = ic_err_text();
    if (strstr(m, "invalid user name or password") != NULL || m[0] == '\0')
      ic_errorf(x, "login failed: invalid user name or password");
    else
      ic_errorf(x, "login failed: invalid user name or password (%s)", m);
    return IC_EXIT_ERR;
  }
  return ic_fail(x, rc, "login");
}

int ic_login(ic_ctx *x, const char *user, const char *password) {
  int rc = ic_connect(x);
  if (rc != 0)
    return rc;
  rc = login_only(x, user, password);
  if (rc != 0)
    return rc;
  token_save_current(x);
  return 0;
}

int ic_auth(ic_ctx *x) {
  int rc = ic_connect(x);
  if (rc != 0 || x->authed)
    return rc;
  if (x->o.username != NULL && x->o.username[0] != '\0') {
    char *pw = NULL;
    const char *p = x->o.password;
    if (p == NULL) {
      if (!isatty(STDIN_FILENO)) {
        ic_errorf(x, "--username needs --password (or IMMUCLIENT_PASSWORD)");
        return IC_EXIT_USAGE;
      }
      pw = ic_read_password("Password:");
      if (pw == NULL)
        return IC_EXIT_USAGE;
      p = pw;
    }
    rc = login_only(x, x->o.username, p);
    if (pw != NULL) {
      memset(pw, 0, strlen(pw));
      free(pw);
    }
    return rc;
  }

  char *db = NULL, *tok = NULL;
  int found = token_read(x, &db, &tok);
  if (found <= 0)
    return 0; /* not logged in: the server decides what is allowed */
  const char *want = x->o.database;
  rc = immu_client_set_token(x->c, tok, db[0] ? db : NULL);
  if (rc != 0) {
    ic_warnf("ignoring the malformed token file %s (%s); run 'immuclient "
             "login' again",
             x->token_path, immu_client_last_error());
    rc = 0;
  } else {
    x->authed = 1;
    if (want != NULL && want[0] != '\0' && strcmp(want, db) != 0)
      rc = ic_use(x, want, 0);
  }
  memset(tok, 0, strlen(tok));
  free(tok);
  free(db);
  return rc;
}

int ic_use(ic_ctx *x, const char *db, int persist) {
  int rc = immu_client_use_database(x->c, db);
  if (rc != 0)
    return ic_fail(x, rc, "use");
  /* Keep the token file in step when it is the source of the login. */
  if (persist && (x->o.username == NULL || x->o.username[0] == '\0')) {
    char *odb = NULL, *otok = NULL;
    if (token_read(x, &odb, &otok) == 1 || x->interactive)
      token_save_current(x);
    free(odb);
    if (otok != NULL)
      memset(otok, 0, strlen(otok));
    free(otok);
  }
  return 0;
}

int ic_logout(ic_ctx *x, int *was_logged_in) {
  struct stat st;
  int had_file = stat(x->token_path, &st) == 0;
  int rc;
  *was_logged_in = had_file || x->authed;
  if (!*was_logged_in)
    return 0;
  if (x->c != NULL || ic_connect(x) == 0) {
    if (!x->authed && had_file)
      (void)ic_auth(x);
    if (x->authed)
      (void)immu_client_logout(x->c);
  }
  x->authed = 0;
  if (had_file && unlink(x->token_path) != 0 && errno != ENOENT) {
    rc = errno;
    ic_errorf(x, "cannot delete the token file %s: %s", x->token_path,
              strerror(rc));
    return IC_EXIT_ERR;
  }
  return 0;
}
