/* SPDX-License-Identifier: Apache-2.0 */
/*
 * immuclient: audit-mode, the auditor of immudb's immuclient
 * (cmd/immuclient/audit).
 *
 * Every --audit-interval (default 5m) one round: log in (--audit-username /
 * --audit-password, default --username / --password), list the databases
 * (those matching --audit-databases prefixes, default all), and for each:
 *   1. CurrentState (its signature is checked with --server-signing-pub-key);
 *   2. VerifiableTxById through the SDK of every tx committed since the
 *      previous round (only state.txId at the first round; every tx from 1
 *      with --audit-verify-values), in order: each is proven against the
 *      trusted state (dual proof, both directions) and its entries and
 *      values are checked against its Eh, so data altered after its commit
 *      is caught the first time the auditor reads it;
 *   3. the proven Alh must equal the state's hash, and the state must not
 *      have gone back to an older tx than the trusted one.
 * The SDK then persists the new trusted state (--roots-filepath, default
 * <dir>/audit), so the chain of trust survives restarts of the auditor.
 *
 * Results per database and per server (immudb's gauge values):
 *    1 consistent with the previous trusted state
 *   -1 not checked yet (first state: trust on first use; empty database)
 *    0 TAMPERED: a proof failed, the server's history forked or went back,
 *      the server reports corrupted data, or the trusted state file is
 *      damaged (logged at ERROR)
 *   -2 the audit could not run (connection, login, permissions)
 *
 * Prometheus metrics (and /readyz, /livez, /initz, /version) are served on
 * --audit-monitoring-host:--audit-monitoring-port (default 0.0.0.0:9477)
 * by a thread of its own; --audit-once runs one round without it and exits
 * with 0 (all results 1 or -1), 3 (something tampered) or 1 (errors).
 * SIGINT / SIGTERM stop the daemon after the current round.
 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include "immuclient/ic.h"

enum { AR_OK = 1, AR_UNCHECKED = -1, AR_TAMPERED = 0, AR_ERROR = -2 };

typedef struct db_res {
  char name[IMMU_DB_NAME_MAX + 1];
  int result;
  uint64_t prev_tx, curr_tx;
  uint64_t checked_txs; /* txs proven this round */
  immu_digest curr_hash;
} db_res;

typedef struct auditor {
  ic_ctx *x;
  immu_client *c;
  char *state_dir;
  char server_id[128];
  char server_address[300];
  uint64_t index; /* rounds run */

  /* Metrics (guarded by mu; read by the HTTP thread). */
  pthread_mutex_t mu;
  int server_result;
  double prev_root, curr_root;
  int64_t run_at;
  double last_duration_s;
  db_res *dbs;
  size_t ndbs;
  uint64_t runs_total, ok_total, tampered_total, error_total, unchecked_total;

  /* The monitoring server. */
  int listen_fd;
  pthread_t thr;
  int thr_running;
} auditor;

static int stop_pipe[2] = {-1, -1};
static volatile sig_atomic_t stop_flag;

static void on_signal(int sig) {
  (void)sig;
  int saved = errno;
  stop_flag = 1;
  if (stop_pipe[1] >= 0) {
    ssize_t w = write(stop_pipe[1], "x", 1);
    (void)w;
  }
  errno = saved;
}

/* ------------------------------------------------------------------ */
/* logging                                                             */
/* ------------------------------------------------------------------ */

__attribute__((format(printf, 2, 3))) static void alog(const char *level,
                                                       const char *fmt, ...) {
  char ts[64];
  struct timespec now;
  struct tm tm;
  va_list ap;
  clock_gettime(CLOCK_REALTIME, &now);
  gmtime_r(&now.tv_sec, &tm);
  strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
  fflush(stdout);
  fprintf(stderr, "%s.%03ldZ immuclient %s ", ts, now.tv_nsec / 1000000L,
          level);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
  fflush(stderr);
}

static const char *result_name(int r) {
  switch (r) {
  case AR_OK:
    return "ok";
  case AR_UNCHECKED:
    return "unchecked";
  case AR_TAMPERED:
    return "tampered";
  default:
    return "error";
  }
}

/* ------------------------------------------------------------------ */
/* one database                                                        */
/* ------------------------------------------------------------------ */

static int audit_db(auditor *a, const char *db, db_res *r) {
  immu_client_state st, prev;
  immu_client_tx tx;
  char h1[65], h2[65];
  int rc, has_prev;

  memset(r, 0, sizeof *r);
  snprintf(r->name, sizeof r->name, "%s", db);
  rc = immu_client_use_database(a->c, db);
  if (rc != 0) {
    alog("ERROR", "audit #%llu: cannot select database %s: %s",
         (unsigned long long)a->index, db, immu_client_last_error());
    return AR_ERROR;
  }
  rc = immu_client_current_state(a->c, &st);
  if (rc != 0) {
    int tampered = rc == IMMU_EVERIFY || rc == IMMU_ECORRUPT;
    alog("ERROR", "audit #%llu: %s: current state of database %s: %s",
         (unsigned long long)a->index,
         tampered ? "TAMPERING DETECTED" : "cannot get", db,
         immu_client_last_error());
    return tampered ? AR_TAMPERED : AR_ERROR;
  }
  r->curr_tx = st.tx_id;
  r->curr_hash = st.tx_hash;
  rc = immu_client_trusted_state(a->c, &prev);
  if (rc == IMMU_ECORRUPT) {
    alog("ERROR",
         "audit #%llu: TAMPERING DETECTED: the trusted state of database %s "
         "is damaged: %s",
         (unsigned long long)a->index, db, immu_client_last_error());
    return AR_TAMPERED;
  }
  has_prev = rc == 0 && prev.tx_id > 0;
  if (rc != 0 && rc != IMMU_ENOTFOUND) {
    alog("ERROR", "audit #%llu: cannot read the trusted state of %s: %s",
         (unsigned long long)a->index, db, immu_client_last_error());
    return AR_ERROR;
  }
  if (has_prev)
    r->prev_tx = prev.tx_id;

  if (st.tx_id == 0) {
    if (has_prev) {
      alog("ERROR",
           "audit #%llu: TAMPERING DETECTED: database %s is empty on server "
           "%s, but a previous state was trusted at tx %llu",
           (unsigned long long)a->index, db, a->server_address,
           (unsigned long long)prev.tx_id);
      return AR_TAMPERED;
    }
    alog("WARN", "audit #%llu: database %s is empty: nothing to audit yet",
         (unsigned long long)a->index, db);
    return AR_UNCHECKED;
  }
  if (has_prev && st.tx_id < prev.tx_id) {
    alog("ERROR",
         "audit #%llu: TAMPERING DETECTED: database %s went back from the "
         "trusted tx %llu to tx %llu",
         (unsigned long long)a->index, db, (unsigned long long)prev.tx_id,
         (unsigned long long)st.tx_id);
    return AR_TAMPERED;
  }

  /* Prove every tx not proven at an earlier round (all of them with
   * --audit-verify-values), in order, ending with the state's tx: each is
   * linked to the trusted state by a dual proof and its entries (and the
   * values the server sends) are checked against its Eh, so a tx whose
   * data was altered after it was committed fails here. */
  uint64_t from = a->x->o.audit_verify_values ? 1
                  : has_prev                  ? prev.tx_id + 1
                                              : st.tx_id;
  if (from > st.tx_id)
    from = st.tx_id;
  memset(&tx, 0, sizeof tx);
  for (uint64_t id = from; id <= st.tx_id; id++) {
    immu_client_tx_clear(&tx);
    if (stop_flag && !a->x->o.audit_once) {
      alog("WARN", "audit #%llu: database %s: interrupted at tx %llu",
           (unsigned long long)a->index, db, (unsigned long long)id);
      return AR_ERROR;
    }
    rc = immu_client_verified_tx_by_id(a->c, id, &tx);
    if (rc != 0) {
      int tampered = rc == IMMU_EVERIFY || rc == IMMU_ECORRUPT;
      alog("ERROR", "audit #%llu: %s: database %s, tx %llu%s: %s",
           (unsigned long long)a->index,
           tampered ? "TAMPERING DETECTED" : "cannot prove the state", db,
           (unsigned long long)id, has_prev ? " against the trusted state" : "",
           immu_client_last_error());
      return tampered ? AR_TAMPERED : AR_ERROR;
    }
  }
  r->checked_txs = st.tx_id - from + 1;
  int same = immu_digest_eq(&tx.alh, &st.tx_hash);
  immu_digest_hex(&st.tx_hash, h2);
  if (!same) {
    immu_digest_hex(&tx.alh, h1);
    immu_client_tx_clear(&tx);
    alog("ERROR",
         "audit #%llu: TAMPERING DETECTED: database %s: the server's state "
         "hash %s at tx %llu is not the proven hash %s",
         (unsigned long long)a->index, db, h2, (unsigned long long)st.tx_id,
         h1);
    return AR_TAMPERED;
  }
  immu_client_tx_clear(&tx);
  if (!has_prev) {
    alog("INFO",
         "audit #%llu: database %s: first state trusted (tx %llu, hash %s); "
         "later rounds prove consistency with it",
         (unsigned long long)a->index, db, (unsigned long long)st.tx_id, h2);
    return AR_UNCHECKED;
  }
  immu_digest_hex(&prev.tx_hash, h1);
  alog("INFO",
       "audit #%llu: database %s consistent: true; previous state %s at tx "
       "%llu, current state %s at tx %llu (%llu tx(s) proven)",
       (unsigned long long)a->index, db, h1, (unsigned long long)prev.tx_id, h2,
       (unsigned long long)st.tx_id, (unsigned long long)r->checked_txs);
  return AR_OK;
}

/* ------------------------------------------------------------------ */
/* one round                                                           */
/* ------------------------------------------------------------------ */

static int want_db(const char *filter, const char *name) {
  if (filter == NULL || filter[0] == '\0')
    return 1;
  const char *p = filter;
  while (*p) {
    size_t l = strcspn(p, ",");
    const char *s = p;
    size_t sl = l;
    while (sl > 0 && (*s == ' ' || *s == '\t')) {
      s++;
      sl--;
    }
    while (sl > 0 && (s[sl - 1] == ' ' || s[sl - 1] == '\t'))
      sl--;
    if (sl > 0 && strncmp(name, s, sl) == 0)
      return 1;
    p += l;
    if (*p == ',')
      p++;
  }
  return 0;
}

static int ensure_client(auditor *a) {
  immu_client_options o;
  if (a->c != NULL)
    return 0;
  ic_fill_options(a->x, &o, a->state_dir);
  o.database = NULL; /* each database is selected explicitly */
  if (o.call_timeout_ms == 0)
    o.call_timeout_ms = 60000;
  int rc = immu_client_new(&o, &a->c);
  if (rc != 0) {
    a->c = NULL;
    alog("ERROR", "audit #%llu: cannot connect to immudb at %s: %s",
         (unsigned long long)a->index, a->server_address,
         immu_client_last_error());
  }
  return rc;
}

/* Runs one round; returns the server-level result. */
static int round_run(auditor *a, db_res **out, size_t *nout) {
  ic_opts *o = &a->x->o;
  immu_client_db_list l = {NULL, 0};
  db_res *res = NULL;
  size_t n = 0;
  int rc, logged_in = 0, agg = AR_UNCHECKED;
  struct timespec t0, t1;

  clock_gettime(CLOCK_MONOTONIC, &t0);
  a->index++;
  alog("INFO", "audit #%llu started @ %s", (unsigned long long)a->index,
       a->server_address);
  *out = NULL;
  *nout = 0;
  if ((rc = ensure_client(a)) != 0)
    return AR_ERROR;

  const char *user = o->audit_username ? o->audit_username : o->username;
  const char *pass = o->audit_password ? o->audit_password : o->password;
  if (user != NULL && user[0] != '\0') {
    rc = immu_client_login(a->c, user, pass ? pass : "");
    if (rc != 0) {
      alog("ERROR", "audit #%llu: error logging in with user %s: %s",
           (unsigned long long)a->index, user, immu_client_last_error());
      return AR_ERROR;
    }
    logged_in = 1;
  }

  rc = immu_client_database_list(a->c, &l);
  if (rc != 0) {
    alog("ERROR", "audit #%llu: error getting the list of databases: %s",
         (unsigned long long)a->index, immu_client_last_error());
    agg = AR_ERROR;
    goto out;
  }
  res = ic_xmalloc((l.n ? l.n : 1) * sizeof *res);
  for (size_t i = 0; i < l.n; i++) {
    if (!want_db(o->audit_databases, l.v[i].name))
      continue;
    res[n].result = audit_db(a, l.v[i].name, &res[n]);
    n++;
  }
  if (n == 0) {
    alog("ERROR", "audit #%llu aborted: no databases to audit found",
         (unsigned long long)a->index);
    agg = AR_ERROR;
    goto out;
  }
  /* Server result: tampered beats error beats ok beats unchecked. */
  int any_t = 0, any_e = 0, any_ok = 0;
  for (size_t i = 0; i < n; i++) {
    any_t |= res[i].result == AR_TAMPERED;
    any_e |= res[i].result == AR_ERROR;
    any_ok |= res[i].result == AR_OK;
  }
  agg = any_t ? AR_TAMPERED : any_e ? AR_ERROR : any_ok ? AR_OK : AR_UNCHECKED;

out:
  immu_client_db_list_clear(&l);
  if (logged_in)
    (void)immu_client_logout(a->c);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  double secs =
      (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
  a->last_duration_s = secs;
  if (agg == AR_TAMPERED)
    alog("ERROR", "audit #%llu finished in %.3fs: TAMPERING DETECTED",
         (unsigned long long)a->index, secs);
  else
    alog("INFO", "audit #%llu finished in %.3fs: %s",
         (unsigned long long)a->index, secs, result_name(agg));
  *out = res;
  *nout = n;
  return agg;
}

static void publish(auditor *a, int agg, db_res *res, size_t n) {
  pthread_mutex_lock(&a->mu);
  a->server_result = agg;
  a->run_at = (int64_t)time(NULL);
  a->runs_total++;
  a->prev_root = a->curr_root = agg == AR_ERROR ? -2 : -1;
  for (size_t i = 0; i < n; i++) {
    switch (res[i].result) {
    case AR_OK:
      a->ok_total++;
      break;
    case AR_TAMPERED:
      a->tampered_total++;
      break;
    case AR_UNCHECKED:
      a->unchecked_total++;
      break;
    default:
      a->error_total++;
    }
    /* As immudb: the roots of the (last) audited database. */
    a->prev_root = res[i].prev_tx ? (double)res[i].prev_tx : -1;
    a->curr_root = res[i].curr_tx ? (double)res[i].curr_tx : -1;
  }
  if (n == 0 && agg == AR_ERROR)
    a->error_total++;
  free(a->dbs);
  a->dbs = res;
  a->ndbs = n;
  pthread_mutex_unlock(&a->mu);
}

/* ------------------------------------------------------------------ */
/* monitoring server                                                   */
/* ------------------------------------------------------------------ */

typedef struct sbuf {
  char *p;
  size_t n, cap;
} sbuf;

__attribute__((format(printf, 2, 3))) static void
sb_printf(sbuf *b, const char *fmt, ...) {
  va_list ap;
  for (;;) {
    va_start(ap, fmt);
    int k = vsnprintf(b->p + b->n, b->cap - b->n, fmt, ap);
    va_end(ap);
    if (k < 0)
      return;
    if ((size_t)k < b->cap - b->n) {
      b->n += (size_t)k;
      return;
    }
    size_t nc = b->cap * 2 + (size_t)k + 1;
    char *np = realloc(b->p, nc);
    if (np == NULL) {
      fputs("immuclient: out of memory\n", stderr);
      abort();
    }
    b->p = np;
    b->cap = nc;
  }
}

/* A Prometheus label value: \ " and newlines escaped. */
static void sb_label(sbuf *b, const char *s) {
  for (; *s; s++) {
    if (*s == '\\' || *s == '"')
      sb_printf(b, "\\%c", *s);
    else if (*s == '\n')
      sb_printf(b, "\\n");
    else
      sb_printf(b, "%c", *s);
  }
}

static void metrics_text(auditor *a, sbuf *b) {
  pthread_mutex_lock(&a->mu);
  const char *sl = "server_id=\"";
  struct {
    const char *name, *help;
    double v;
  } g[] = {
      {"immuclient_audit_result_per_server",
       "Latest audit result (1 = ok, 0 = tampered, -1 = not checked, -2 = "
       "error).",
       (double)a->server_result},
      {"immuclient_audit_prev_root_per_server",
       "Previous root index used for the latest audit.", a->prev_root},
      {"immuclient_audit_curr_root_per_server",
       "Current root index used for the latest audit.", a->curr_root},
      {"immuclient_audit_run_at_per_server",
       "Timestamp in unix seconds at which latest audit run.",
       (double)a->run_at},
  };
  for (size_t i = 0; i < sizeof g / sizeof g[0]; i++) {
    sb_printf(b, "# HELP %s %s\n# TYPE %s gauge\n%s{%s", g[i].name, g[i].help,
              g[i].name, g[i].name, sl);
    sb_label(b, a->server_id);
    sb_printf(b, "\",server_address=\"");
    sb_label(b, a->server_address);
    sb_printf(b, "\"} %.17g\n", g[i].v);
  }
  sb_printf(b, "# HELP immuclient_audit_result_per_db Latest audit result "
               "per database (1 = ok, 0 = tampered, -1 = not checked, -2 = "
               "error).\n# TYPE immuclient_audit_result_per_db gauge\n");
  for (size_t i = 0; i < a->ndbs; i++) {
    sb_printf(b, "immuclient_audit_result_per_db{%s", sl);
    sb_label(b, a->server_id);
    sb_printf(b, "\",server_address=\"");
    sb_label(b, a->server_address);
    sb_printf(b, "\",db=\"");
    sb_label(b, a->dbs[i].name);
    sb_printf(b, "\"} %d\n", a->dbs[i].result);
  }
  sb_printf(b, "# HELP immuclient_audit_curr_root_per_db Tx id of the "
               "latest audited state per database.\n# TYPE "
               "immuclient_audit_curr_root_per_db gauge\n");
  for (size_t i = 0; i < a->ndbs; i++) {
    sb_printf(b, "immuclient_audit_curr_root_per_db{%s", sl);
    sb_label(b, a->server_id);
    sb_printf(b, "\",server_address=\"");
    sb_label(b, a->server_address);
    sb_printf(b, "\",db=\"");
    sb_label(b, a->dbs[i].name);
    sb_printf(b, "\"} %llu\n", (unsigned long long)a->dbs[i].curr_tx);
  }
  sb_printf(b,
            "# HELP immuclient_audit_runs_total Audit rounds run.\n"
            "# TYPE immuclient_audit_runs_total counter\n"
            "immuclient_audit_runs_total %llu\n"
            "# HELP immuclient_audit_checks_total Database audits by "
            "result.\n"
            "# TYPE immuclient_audit_checks_total counter\n"
            "immuclient_audit_checks_total{result=\"ok\"} %llu\n"
            "immuclient_audit_checks_total{result=\"tampered\"} %llu\n"
            "immuclient_audit_checks_total{result=\"unchecked\"} %llu\n"
            "immuclient_audit_checks_total{result=\"error\"} %llu\n"
            "# HELP immuclient_audit_last_duration_seconds Duration of the "
            "latest audit round.\n"
            "# TYPE immuclient_audit_last_duration_seconds gauge\n"
            "immuclient_audit_last_duration_seconds %.6f\n",
            (unsigned long long)a->runs_total, (unsigned long long)a->ok_total,
            (unsigned long long)a->tampered_total,
            (unsigned long long)a->unchecked_total,
            (unsigned long long)a->error_total, a->last_duration_s);
  pthread_mutex_unlock(&a->mu);
}

static void send_all(int fd, const char *p, size_t n) {
  while (n > 0) {
    ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR)
      continue;
    if (w <= 0)
      return;
    p += w;
    n -= (size_t)w;
  }
}

static void respond(int fd, int code, const char *ctype, const char *body,
                    size_t blen, int head) {
  char hdr[256];
  const char *reason = code == 200   ? "OK"
                       : code == 404 ? "Not Found"
                                     : "Bad Request";
  int k = snprintf(hdr, sizeof hdr,
                   "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: "
                   "%zu\r\nAccess-Control-Allow-Origin: *\r\nConnection: "
                   "close\r\n\r\n",
                   code, reason, ctype, blen);
  send_all(fd, hdr, (size_t)k);
  if (!head && blen > 0)
    send_all(fd, body, blen);
}

static void serve_one(auditor *a, int fd) {
  char req[4096];
  size_t n = 0;
  /* Read the request head (bounded in time and size). */
  while (n < sizeof req - 1) {
    struct pollfd p = {fd, POLLIN, 0};
    if (poll(&p, 1, 2000) <= 0)
      break;
    ssize_t r = recv(fd, req + n, sizeof req - 1 - n, 0);
    if (r < 0 && errno == EINTR)
      continue;
    if (r <= 0)
      break;
    n += (size_t)r;
    req[n] = '\0';
    if (strstr(req, "\r\n\r\n") != NULL || strstr(req, "\n\n") != NULL)
      break;
  }
  req[n] = '\0';
  char method[8] = "", path[256] = "";
  if (sscanf(req, "%7s %255s", method, path) != 2) {
    respond(fd, 400, "text/plain", "bad request\n", 12, 0);
    return;
  }
  int head = strcmp(method, "HEAD") == 0;
  char *q = strchr(path, '?');
  if (q != NULL)
    *q = '\0';
  if (strcmp(path, "/metrics") == 0) {
    sbuf b = {ic_xmalloc(4096), 0, 4096};
    metrics_text(a, &b);
    respond(fd, 200, "text/plain; version=0.0.4; charset=utf-8", b.p, b.n,
            head);
    free(b.p);
  } else if (strcmp(path, "/readyz") == 0 || strcmp(path, "/livez") == 0 ||
             strcmp(path, "/initz") == 0) {
    respond(fd, 200, "text/plain", "", 0, head);
  } else if (strcmp(path, "/version") == 0) {
    static const char v[] =
        "{\"component\":\"immuclient-auditor\",\"version\":\"" IC_VERSION
        "\"}\n";
    respond(fd, 200, "application/json", v, sizeof v - 1, head);
  } else {
    respond(fd, 404, "text/plain", "404 page not found\n", 19, head);
  }
}

static void *http_thread(void *arg) {
  auditor *a = arg;
  for (;;) {
    struct pollfd p[2] = {{a->listen_fd, POLLIN, 0}, {stop_pipe[0], POLLIN, 0}};
    int r = poll(p, 2, -1);
    if (r < 0 && errno == EINTR)
      continue;
    if (r < 0 || (p[1].revents & (POLLIN | POLLHUP)))
      break;
    if (p[0].revents & POLLIN) {
      int fd = accept(a->listen_fd, NULL, NULL);
      if (fd < 0)
        continue;
      serve_one(a, fd);
      close(fd);
    }
  }
  return NULL;
}

static int start_http(auditor *a) {
  ic_opts *o = &a->x->o;
  struct addrinfo hints, *ai = NULL;
  char port[16];
  const char *host = o->audit_monitoring_host;
  if (host != NULL && (host[0] == '\0' || strcmp(host, "0.0.0.0") == 0))
    host = NULL;
  memset(&hints, 0, sizeof hints);
  hints.ai_family = host == NULL ? AF_INET : AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  snprintf(port, sizeof port, "%d", o->audit_monitoring_port);
  int grc = getaddrinfo(host, port, &hints, &ai);
  if (grc != 0) {
    alog("ERROR", "monitoring server: cannot resolve %s: %s",
         o->audit_monitoring_host, gai_strerror(grc));
    return -1;
  }
  int fd =
      socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
  int one = 1;
  if (fd >= 0)
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (fd < 0 || bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 ||
      listen(fd, 16) != 0) {
    alog("ERROR", "monitoring server: cannot listen on %s:%d: %s",
         o->audit_monitoring_host ? o->audit_monitoring_host : "0.0.0.0",
         o->audit_monitoring_port, strerror(errno));
    if (fd >= 0)
      close(fd);
    freeaddrinfo(ai);
    return -1;
  }
  freeaddrinfo(ai);
  a->listen_fd = fd;
  if (pthread_create(&a->thr, NULL, http_thread, a) != 0) {
    close(fd);
    a->listen_fd = -1;
    alog("ERROR", "monitoring server: cannot start its thread");
    return -1;
  }
  a->thr_running = 1;
  alog("INFO",
       "auditor monitoring HTTP server listening on %s:%d (/metrics, "
       "/readyz, /livez, /initz, /version)",
       o->audit_monitoring_host ? o->audit_monitoring_host : "0.0.0.0",
       o->audit_monitoring_port);
  return 0;
}

/* ------------------------------------------------------------------ */
/* the command                                                         */
/* ------------------------------------------------------------------ */

static void print_once_summary(ic_ctx *x, int agg, const db_res *r, size_t n) {
  char h[65];
  if (x->o.json) {
    ic_json j;
    ic_json_begin(&j, stdout);
    ic_json_obj(&j, NULL);
    ic_json_str(&j, "result", result_name(agg));
    ic_json_i64(&j, "code", agg);
    ic_json_arr(&j, "databases");
    for (size_t i = 0; i < n; i++) {
      ic_json_obj(&j, NULL);
      ic_json_str(&j, "database", r[i].name);
      ic_json_str(&j, "result", result_name(r[i].result));
      ic_json_i64(&j, "code", r[i].result);
      ic_json_u64(&j, "prevTx", r[i].prev_tx);
      ic_json_u64(&j, "currTx", r[i].curr_tx);
      ic_json_u64(&j, "provenTxs", r[i].checked_txs);
      if (r[i].curr_tx) {
        immu_digest_hex(&r[i].curr_hash, h);
        ic_json_str(&j, "hash", h);
      }
      ic_json_obj_end(&j);
    }
    ic_json_arr_end(&j);
    ic_json_obj_end(&j);
    ic_json_end(&j);
    return;
  }
  for (size_t i = 0; i < n; i++)
    printf("%s: %s (tx %llu)\n", r[i].name, result_name(r[i].result),
           (unsigned long long)r[i].curr_tx);
  printf("audit: %s\n", result_name(agg));
}

int ic_audit_mode(ic_ctx *x) {
  auditor a;
  struct sigaction sa, old_int, old_term;
  int exit_code = 0;

  memset(&a, 0, sizeof a);
  a.x = x;
  a.listen_fd = -1;
  a.server_result = AR_UNCHECKED;
  a.prev_root = a.curr_root = -1;
  a.run_at = (int64_t)time(NULL);
  pthread_mutex_init(&a.mu, NULL);
  snprintf(a.server_address, sizeof a.server_address, "%s:%d", x->o.address,
           x->o.port);
  /* The SDK does not expose the server's UUID: identify the server by its
   * address, slugified as immudb does when the UUID is unknown. */
  size_t k = 0;
  for (const char *p = a.server_address; *p && k + 1 < sizeof a.server_id;
       p++) {
    char ch = *p == '.' ? '-' : *p == ':' ? '_' : *p;
    if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
        (ch >= '0' && ch <= '9') || ch == '-' || ch == '_')
      a.server_id[k++] = ch;
  }
  a.server_id[k] = '\0';

  if (x->o.audit_state_dir != NULL && x->o.audit_state_dir[0] != '\0') {
    a.state_dir = ic_xstrdup(x->o.audit_state_dir);
  } else {
    size_t n = strlen(x->o.dir) + 8;
    a.state_dir = ic_xmalloc(n);
    snprintf(a.state_dir, n, "%s/audit", x->o.dir);
  }
  if (x->o.audit_notification_url != NULL &&
      x->o.audit_notification_url[0] != '\0')
    alog("WARN", "--audit-notification-url is not supported; ignored");
  if (x->o.audit_interval_ms < 1000 && !x->o.audit_once) {
    fputs("immuclient: --audit-interval must be at least 1s\n", stderr);
    free(a.state_dir);
    pthread_mutex_destroy(&a.mu);
    return IC_EXIT_USAGE;
  }

  if (pipe2(stop_pipe, O_CLOEXEC) != 0) {
    fprintf(stderr, "immuclient: pipe: %s\n", strerror(errno));
    free(a.state_dir);
    pthread_mutex_destroy(&a.mu);
    return IC_EXIT_ERR;
  }
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, &old_int);
  sigaction(SIGTERM, &sa, &old_term);

  alog("INFO",
       "starting auditor of %s with a %lldms interval (trusted states in %s)",
       a.server_address, x->o.audit_interval_ms, a.state_dir);
  if (!x->o.audit_once && x->o.audit_monitoring_port > 0 && start_http(&a) != 0)
    exit_code = IC_EXIT_ERR;

  while (exit_code == 0 && !stop_flag) {
    db_res *res;
    size_t n;
    int agg = round_run(&a, &res, &n);
    if (x->o.audit_once) {
      print_once_summary(x, agg, res, n);
      exit_code = agg == AR_TAMPERED ? IC_EXIT_TAMPERED
                  : agg == AR_ERROR  ? IC_EXIT_ERR
                                     : 0;
    }
    publish(&a, agg, res, n);
    if (x->o.audit_once)
      break;
    struct pollfd p = {stop_pipe[0], POLLIN, 0};
    long long left = x->o.audit_interval_ms;
    while (left > 0 && !stop_flag) {
      int ms = left > 60000 ? 60000 : (int)left;
      struct timespec t0, t1;
      clock_gettime(CLOCK_MONOTONIC, &t0);
      int r = poll(&p, 1, ms);
      if (r > 0)
        break;
      clock_gettime(CLOCK_MONOTONIC, &t1);
      left -= (long long)(t1.tv_sec - t0.tv_sec) * 1000 +
              (t1.tv_nsec - t0.tv_nsec) / 1000000;
    }
  }

  if (a.thr_running) {
    ssize_t w = write(stop_pipe[1], "x", 1);
    (void)w;
    pthread_join(a.thr, NULL);
    close(a.listen_fd);
  }
  if (stop_flag)
    alog("INFO", "auditor stopped");
  sigaction(SIGINT, &old_int, NULL);
  sigaction(SIGTERM, &old_term, NULL);
  close(stop_pipe[0]);
  close(stop_pipe[1]);
  stop_pipe[0] = stop_pipe[1] = -1;
  immu_client_free(a.c);
  free(a.dbs);
  free(a.state_dir);
  pthread_mutex_destroy(&a.mu);
  return exit_code;
}
