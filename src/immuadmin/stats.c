/* SPDX-License-Identifier: Apache-2.0 */
/*
 * `immuadmin stats`: the server's metrics endpoint
 * (http://<immudb-address>:<metrics-port>/metrics, Prometheus text format,
 * immudb-api.md section 7) shown as
 *   -r / --raw    the text as served;
 *   -t / --text   a summary: uptime, per-database size, entries, last
 *                 committed and indexed tx, clients, RPC counts and mean
 *                 durations;
 *   (default)     the same summary as a live view refreshed every second,
 *                 with rates, until q or Ctrl-C (falls back to the text
 *                 summary when stdout is not a terminal).
 * The endpoint needs no login.
 */
#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "immuadmin/ia.h"

#define HTTP_TIMEOUT_MS 3000
#define HTTP_MAX ((size_t)32 << 20)

/* ------------------------------------------------------------------ */
/* HTTP/1.0 GET                                                        */
/* ------------------------------------------------------------------ */

static int wait_fd(int fd, short ev, double deadline) {
  for (;;) {
    double left = deadline - ia_now();
    if (left <= 0)
      return -ETIMEDOUT;
    struct pollfd p = {fd, ev, 0};
    int r = poll(&p, 1, (int)(left * 1000) + 1);
    if (r > 0)
      return 0;
    if (r < 0 && errno != EINTR)
      return -errno;
  }
}

/* GETs http://host:port/path; *body (heap) gets the body. Returns 0 or
 * -1 with a message in |err|. */
static int http_get(const char *host, int port, const char *path, char **body,
                    size_t *blen, char *err, size_t el) {
  struct addrinfo hints, *res = NULL, *ai;
  char ps[16];
  int fd = -1, g;
  double deadline = ia_now() + HTTP_TIMEOUT_MS / 1000.0;

  *body = NULL;
  *blen = 0;
  memset(&hints, 0, sizeof hints);
  hints.ai_socktype = SOCK_STREAM;
  snprintf(ps, sizeof ps, "%d", port);
  if ((g = getaddrinfo(host, ps, &hints, &res)) != 0) {
    snprintf(err, el, "cannot resolve %s: %s", host, gai_strerror(g));
    return -1;
  }
  int last = ECONNREFUSED;
  for (ai = res; ai != NULL; ai = ai->ai_next) {
    fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                ai->ai_protocol);
    if (fd < 0) {
      last = errno;
      continue;
    }
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
      break;
    if (errno == EINPROGRESS && wait_fd(fd, POLLOUT, deadline) == 0) {
      int so = 0;
      socklen_t sl = sizeof so;
      getsockopt(fd, SOL_SOCKET, SO_ERROR, &so, &sl);
      if (so == 0)
        break;
      last = so;
    } else {
      last = errno == EINPROGRESS ? ETIMEDOUT : errno;
    }
    close(fd);
    fd = -1;
  }
  freeaddrinfo(res);
  if (fd < 0) {
    snprintf(err, el, "cannot reach the metrics endpoint http://%s:%d%s: %s",
             host, port, path, strerror(last));
    return -1;
  }
  char req[512];
  int rl = snprintf(req, sizeof req,
                    "GET %s HTTP/1.0\r\nHost: %s:%d\r\nUser-Agent: "
                    "immuadmin\r\nAccept: text/plain\r\n\r\n",
                    path, host, port);
  size_t off = 0;
  while (off < (size_t)rl) {
    ssize_t w = send(fd, req + off, (size_t)rl - off, MSG_NOSIGNAL);
    if (w > 0) {
      off += (size_t)w;
      continue;
    }
    if (w < 0 && (errno == EAGAIN || errno == EINTR) &&
        wait_fd(fd, POLLOUT, deadline) == 0)
      continue;
    snprintf(err, el, "metrics endpoint: send failed: %s", strerror(errno));
    close(fd);
    return -1;
  }
  size_t cap = 65536, n = 0;
  char *buf = ia_xmalloc(cap + 1);
  for (;;) {
    if (n == cap) {
      if (cap >= HTTP_MAX) {
        snprintf(err, el, "metrics endpoint: the answer is too large");
        goto fail;
      }
      cap *= 2;
      buf = ia_xrealloc(buf, cap + 1);
    }
    ssize_t r = recv(fd, buf + n, cap - n, 0);
    if (r > 0) {
      n += (size_t)r;
      continue;
    }
    if (r == 0)
      break;
    if ((errno == EAGAIN || errno == EINTR) &&
        wait_fd(fd, POLLIN, deadline) == 0)
      continue;
    snprintf(err, el, "metrics endpoint: %s",
             errno == EAGAIN ? "timed out" : strerror(errno));
    goto fail;
  }
  close(fd);
  fd = -1;
  buf[n] = '\0';
  int code = 0;
  if (sscanf(buf, "HTTP/%*d.%*d %d", &code) != 1) {
    snprintf(err, el, "metrics endpoint: not an HTTP answer");
    goto fail;
  }
  if (code != 200) {
    snprintf(err, el, "metrics endpoint: HTTP status %d", code);
    goto fail;
  }
  char *sep = strstr(buf, "\r\n\r\n");
  if (sep == NULL) {
    snprintf(err, el, "metrics endpoint: malformed HTTP answer");
    goto fail;
  }
  sep += 4;
  *blen = n - (size_t)(sep - buf);
  memmove(buf, sep, *blen + 1);
  *body = buf;
  return 0;
fail:
  if (fd >= 0)
    close(fd);
  free(buf);
  return -1;
}

/* ------------------------------------------------------------------ */
/* Prometheus text parsing                                             */
/* ------------------------------------------------------------------ */

typedef struct dbstat {
  char name[128];
  double size, entries, committed, indexed;
} dbstat;

typedef struct clientstat {
  char ip[64];
  double rpcs, last_at;
} clientstat;

typedef struct rpcstat {
  char method[64];
  double calls, errors, dur_sum, dur_count;
} rpcstat;

typedef struct metrics {
  double uptime_h;
  double loaded_dbs, sessions;
  dbstat *dbs;
  size_t ndbs;
  clientstat *clients;
  size_t nclients;
  rpcstat *rpcs;
  size_t nrpcs;
} metrics;

static void metrics_free(metrics *m) {
  free(m->dbs);
  free(m->clients);
  free(m->rpcs);
  memset(m, 0, sizeof *m);
}

/* Value of label |name| in "{a="x",b="y"}" into |out|; 0 if found. */
static int label(const char *labels, const char *name, char *out, size_t cap) {
  size_t nl = strlen(name);
  const char *p = labels;
  while (p != NULL && *p) {
    while (*p == '{' || *p == ',' || *p == ' ')
      p++;
    const char *eq = strchr(p, '=');
    if (eq == NULL || eq[1] != '"')
      return -1;
    const char *v = eq + 2;
    size_t k = 0;
    int match = (size_t)(eq - p) == nl && strncmp(p, name, nl) == 0;
    while (*v && *v != '"') {
      char ch = *v;
      if (ch == '\\' && v[1]) {
        v++;
        ch = *v == 'n' ? '\n' : *v;
      }
      if (match && k + 1 < cap)
        out[k++] = ch;
      v++;
    }
    if (match) {
      out[k] = '\0';
      return 0;
    }
    p = *v ? v + 1 : v;
  }
  return -1;
}

static dbstat *db_of(metrics *m, const char *name) {
  for (size_t i = 0; i < m->ndbs; i++)
    if (strcmp(m->dbs[i].name, name) == 0)
      return &m->dbs[i];
  m->dbs = ia_xrealloc(m->dbs, (m->ndbs + 1) * sizeof *m->dbs);
  dbstat *d = &m->dbs[m->ndbs++];
  memset(d, 0, sizeof *d);
  snprintf(d->name, sizeof d->name, "%s", name);
  return d;
}

static clientstat *client_of(metrics *m, const char *ip) {
  for (size_t i = 0; i < m->nclients; i++)
    if (strcmp(m->clients[i].ip, ip) == 0)
      return &m->clients[i];
  m->clients = ia_xrealloc(m->clients, (m->nclients + 1) * sizeof *m->clients);
  clientstat *c = &m->clients[m->nclients++];
  memset(c, 0, sizeof *c);
  snprintf(c->ip, sizeof c->ip, "%.*s", (int)(sizeof c->ip - 1), ip);
  return c;
}

static rpcstat *rpc_of(metrics *m, const char *method) {
  for (size_t i = 0; i < m->nrpcs; i++)
    if (strcmp(m->rpcs[i].method, method) == 0)
      return &m->rpcs[i];
  m->rpcs = ia_xrealloc(m->rpcs, (m->nrpcs + 1) * sizeof *m->rpcs);
  rpcstat *r = &m->rpcs[m->nrpcs++];
  memset(r, 0, sizeof *r);
  snprintf(r->method, sizeof r->method, "%.*s", (int)(sizeof r->method - 1),
           method);
  return r;
}

static void parse_metrics(char *text, metrics *m) {
  memset(m, 0, sizeof *m);
  char *save = NULL;
  for (char *line = strtok_r(text, "\n", &save); line != NULL;
       line = strtok_r(NULL, "\n", &save)) {
    if (line[0] == '#' || line[0] == '\0')
      continue;
    char *sp = strrchr(line, '}');
    char *name_end = strpbrk(line, "{ ");
    if (name_end == NULL)
      continue;
    char *valp = sp != NULL ? sp + 1 : name_end;
    while (*valp == ' ')
      valp++;
    char *end;
    double v = strtod(valp, &end);
    if (end == valp)
      continue;
    char name[128];
    size_t nl = (size_t)(name_end - line);
    if (nl >= sizeof name)
      continue;
    memcpy(name, line, nl);
    name[nl] = '\0';
    const char *labels = *name_end == '{' ? name_end : "";
    char l1[128], l2[128];
    if (strcmp(name, "immudb_uptime_hours") == 0)
      m->uptime_h = v;
    else if (strcmp(name, "immudb_loaded_databases") == 0)
      m->loaded_dbs = v;
    else if (strcmp(name, "immudb_active_sessions") == 0)
      m->sessions = v;
    else if (strcmp(name, "immudb_db_size_bytes") == 0 &&
             label(labels, "db", l1, sizeof l1) == 0)
      db_of(m, l1)->size = v;
    else if (strcmp(name, "immudb_number_of_stored_entries") == 0 &&
             label(labels, "db", l1, sizeof l1) == 0)
      db_of(m, l1)->entries = v;
    else if (strcmp(name, "immudb_last_committed_trx_id") == 0 &&
             label(labels, "db", l1, sizeof l1) == 0)
      db_of(m, l1)->committed = v;
    else if (strcmp(name, "immudb_last_indexed_trx_id") == 0 &&
             label(labels, "db", l1, sizeof l1) == 0)
      db_of(m, l1)->indexed = v;
    else if (strcmp(name, "immudb_number_of_rpcs_per_client") == 0 &&
             label(labels, "ip", l1, sizeof l1) == 0)
      client_of(m, l1)->rpcs = v;
    else if (strcmp(name, "immudb_clients_last_message_at_unix_seconds") == 0 &&
             label(labels, "ip", l1, sizeof l1) == 0)
      client_of(m, l1)->last_at = v;
    else if (strcmp(name, "grpc_server_handled_total") == 0 &&
             label(labels, "grpc_method", l1, sizeof l1) == 0) {
      rpcstat *r = rpc_of(m, l1);
      r->calls += v;
      if (label(labels, "grpc_code", l2, sizeof l2) == 0 &&
          strcmp(l2, "OK") != 0)
        r->errors += v;
    } else if (strcmp(name, "grpc_server_handling_seconds_sum") == 0 &&
               label(labels, "grpc_method", l1, sizeof l1) == 0)
      rpc_of(m, l1)->dur_sum += v;
    else if (strcmp(name, "grpc_server_handling_seconds_count") == 0 &&
             label(labels, "grpc_method", l1, sizeof l1) == 0)
      rpc_of(m, l1)->dur_count += v;
  }
}

static int cmp_db(const void *a, const void *b) {
  return strcmp(((const dbstat *)a)->name, ((const dbstat *)b)->name);
}
static int cmp_rpc(const void *a, const void *b) {
  const rpcstat *x = a, *y = b;
  if (x->calls != y->calls)
    return x->calls < y->calls ? 1 : -1;
  return strcmp(x->method, y->method);
}

static int fetch(const ia_opts *o, metrics *m, char **raw, char *err,
                 size_t el) {
  char *body;
  size_t blen;
  if (http_get(o->address, o->metrics_port, "/metrics", &body, &blen, err,
               el) != 0)
    return -1;
  if (raw != NULL) {
    *raw = body;
    return 0;
  }
  parse_metrics(body, m);
  free(body);
  qsort(m->dbs, m->ndbs, sizeof *m->dbs, cmp_db);
  qsort(m->rpcs, m->nrpcs, sizeof *m->rpcs, cmp_rpc);
  return 0;
}

/* ------------------------------------------------------------------ */
/* Rendering                                                           */
/* ------------------------------------------------------------------ */

static const dbstat *db_in(const metrics *m, const char *name) {
  for (size_t i = 0; m != NULL && i < m->ndbs; i++)
    if (strcmp(m->dbs[i].name, name) == 0)
      return &m->dbs[i];
  return NULL;
}

static const rpcstat *rpc_in(const metrics *m, const char *name) {
  for (size_t i = 0; m != NULL && i < m->nrpcs; i++)
    if (strcmp(m->rpcs[i].method, name) == 0)
      return &m->rpcs[i];
  return NULL;
}

/* Prints the summary; with |prev| (taken |dt| seconds earlier) also
 * rates. |max_rpcs| bounds the RPC rows (0 = all). */
static void render(FILE *fp, const metrics *m, const metrics *prev, double dt,
                   size_t max_rpcs) {
  char buf[64], buf2[128];
  ia_duration((uint64_t)(m->uptime_h * 3600.0 + 0.5), buf, sizeof buf);
  fprintf(fp, "%-27s: %s\n", "Uptime", buf);
  fprintf(fp, "%-27s: %.0f\n", "Loaded databases", m->loaded_dbs);
  fprintf(fp, "%-27s: %.0f\n", "Active sessions", m->sessions);
  fprintf(fp, "\n");
  static const char *const dh[] = {"Database",  "Size",    "Entries",
                                   "Committed", "Indexed", "Tx/s"};
  ia_table t;
  ia_table_init(&t, 6, dh);
  for (size_t i = 0; i < m->ndbs; i++) {
    const dbstat *d = &m->dbs[i];
    char size[32], ent[32], com[32], idx[32], rate[32] = "-";
    ia_bytes((uint64_t)d->size, size, sizeof size);
    snprintf(ent, sizeof ent, "%.0f", d->entries);
    snprintf(com, sizeof com, "%.0f", d->committed);
    snprintf(idx, sizeof idx, "%.0f", d->indexed);
    const dbstat *p = db_in(prev, d->name);
    if (p != NULL && dt > 0)
      snprintf(rate, sizeof rate, "%.1f", (d->committed - p->committed) / dt);
    const char *row[] = {d->name, size, ent, com, idx, rate};
    ia_table_row(&t, row);
  }
  ia_table_print(&t, fp);
  ia_table_free(&t);
  fprintf(fp, "\n%-27s: %zu\n", "Number of clients", m->nclients);
  time_t now = time(NULL);
  for (size_t i = 0; i < m->nclients; i++) {
    const clientstat *c = &m->clients[i];
    buf2[0] = '\0';
    if (c->last_at > 0) {
      double ago = (double)now - c->last_at;
      ia_duration(ago > 0 ? (uint64_t)ago : 0, buf, sizeof buf);
      snprintf(buf2, sizeof buf2, ", last query %s ago", buf);
    }
    fprintf(fp, "   %-24s: %.0f RPCs%s\n", c->ip, c->rpcs, buf2);
  }
  if (m->nrpcs > 0) {
    fprintf(fp, "\n");
    static const char *const rh[] = {"RPC", "Calls", "Errors", "Avg (us)",
                                     "Calls/s"};
    ia_table_init(&t, 5, rh);
    for (size_t i = 0; i < m->nrpcs && (max_rpcs == 0 || i < max_rpcs); i++) {
      const rpcstat *r = &m->rpcs[i];
      char calls[32], errs[32], avg[32] = "-", rate[32] = "-";
      snprintf(calls, sizeof calls, "%.0f", r->calls);
      snprintf(errs, sizeof errs, "%.0f", r->errors);
      if (r->dur_count > 0)
        snprintf(avg, sizeof avg, "%.0f", r->dur_sum / r->dur_count * 1e6);
      const rpcstat *p = rpc_in(prev, r->method);
      if (dt > 0 && prev != NULL)
        snprintf(rate, sizeof rate, "%.1f",
                 (r->calls - (p ? p->calls : 0)) / dt);
      const char *row[] = {r->method, calls, errs, avg, rate};
      ia_table_row(&t, row);
    }
    ia_table_print(&t, fp);
    ia_table_free(&t);
  }
}

/* ------------------------------------------------------------------ */
/* Live view                                                           */
/* ------------------------------------------------------------------ */

static volatile sig_atomic_t g_stop;

static void on_signal(int sig) {
  (void)sig;
  g_stop = 1;
}

static int live(const ia_opts *o) {
  struct termios old, raw;
  int have_tty = isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, &old) == 0;
  struct sigaction sa, oint, oterm;
  metrics cur, prev;
  double prev_t = 0;
  int have_prev = 0, ex = IA_EXIT_OK;
  char err[IA_ERRLEN];

  memset(&prev, 0, sizeof prev);
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, &oint);
  sigaction(SIGTERM, &sa, &oterm);
  if (have_tty) {
    raw = old;
    raw.c_lflag &= ~(tcflag_t)(ICANON | ECHO);
    raw.c_cc[VMIN] = 0;
    raw.c_cc[VTIME] = 0;
    tcsetattr(STDIN_FILENO, TCSANOW, &raw);
  }
  fputs("\033[?25l", stdout); /* hide the cursor */
  while (!g_stop) {
    double t = ia_now();
    if (fetch(o, &cur, NULL, err, sizeof err) != 0) {
      fputs("\033[H\033[2J", stdout);
      printf("immuadmin stats - %s:%d - %s\n\n%s\n\n(retrying every second; "
             "q to quit)\n",
             o->address, o->metrics_port, "metrics unavailable", err);
    } else {
      char when[32];
      time_t now = time(NULL);
      struct tm tm;
      strftime(when, sizeof when, "%H:%M:%S", localtime_r(&now, &tm));
      fputs("\033[H\033[2J", stdout);
      printf("immuadmin stats - %s:%d - %s - press q or Ctrl-C to quit\n\n",
             o->address, o->metrics_port, when);
      render(stdout, &cur, have_prev ? &prev : NULL, t - prev_t, 15);
      metrics_free(&prev);
      prev = cur;
      prev_t = t;
      have_prev = 1;
    }
    fflush(stdout);
    /* Wait a second for a key. */
    double until = t + 1.0;
    while (!g_stop) {
      double left = until - ia_now();
      if (left <= 0)
        break;
      struct pollfd p = {STDIN_FILENO, POLLIN, 0};
      int r = poll(&p, 1, (int)(left * 1000) + 1);
      if (r > 0) {
        char ch;
        ssize_t n = read(STDIN_FILENO, &ch, 1);
        if (n == 0) {
          /* stdin closed: keep refreshing until a signal. */
          sleep(1);
          break;
        }
        if (n == 1 && (ch == 'q' || ch == 'Q' || ch == 3 || ch == 27))
          g_stop = 1;
      }
    }
  }
  metrics_free(&prev);
  fputs("\033[?25h\n", stdout);
  fflush(stdout);
  if (have_tty)
    tcsetattr(STDIN_FILENO, TCSANOW, &old);
  sigaction(SIGINT, &oint, NULL);
  sigaction(SIGTERM, &oterm, NULL);
  return ex;
}

int ia_cmd_stats(const ia_opts *o, int argc, char **argv) {
  char err[IA_ERRLEN];
  (void)argv;
  if (argc != 0) {
    ia_errorf("usage: immuadmin stats [-t|--text] [-r|--raw] "
              "[--metrics-port N]");
    return IA_EXIT_USAGE;
  }
  if (o->raw) {
    char *raw = NULL;
    if (fetch(o, NULL, &raw, err, sizeof err) != 0) {
      ia_errorf("%s", err);
      return IA_EXIT_FAIL;
    }
    fputs(raw, stdout);
    free(raw);
    return IA_EXIT_OK;
  }
  if (!o->text && isatty(STDOUT_FILENO)) {
    /* Check the endpoint once so a wrong port fails clearly. */
    metrics m;
    if (fetch(o, &m, NULL, err, sizeof err) != 0) {
      ia_errorf("%s", err);
      return IA_EXIT_FAIL;
    }
    metrics_free(&m);
    return live(o);
  }
  metrics m;
  if (fetch(o, &m, NULL, err, sizeof err) != 0) {
    ia_errorf("%s", err);
    return IA_EXIT_FAIL;
  }
  render(stdout, &m, NULL, 0, 0);
  metrics_free(&m);
  return IA_EXIT_OK;
}
