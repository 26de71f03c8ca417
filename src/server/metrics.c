/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Metrics registry and the metrics/health HTTP server (see metrics.h).
 *
 * The registry is three small chained hash tables under one mutex: RPC
 * methods (per-code counters and a duration histogram, as
 * go-grpc-prometheus keeps them), client ips (immudb's per-client
 * counters) and consistency-check results per database. Each table has a
 * fixed cap so that clients sending made-up method paths or connecting from
 * many addresses cannot grow it without bound.
 *
 * Rendering takes the mutex only while it copies the registry into text;
 * database figures are fetched through the source before, without it.
 */
#include "server/metrics.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/thread.h>
#include <event2/util.h>

#include "core/mem.h"
#include "immudb/err.h"
#include "server/config.h"
#include "server/server.h"

#define NCODES 17 /* gRPC status codes 0..16 */
#define MAX_METHODS 512
#define MAX_CLIENTS 4096
#define MAX_CHECKED_DBS 4096
#define METHOD_BUCKETS 64
#define CLIENT_BUCKETS 256
#define CHECK_BUCKETS 64

/* go-grpc-prometheus's default histogram buckets (prometheus.DefBuckets). */
static const double HIST_BOUNDS[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                     0.5,   1,    2.5,   5,    10};
static const char *const HIST_LABELS[] = {"0.005", "0.01", "0.025", "0.05",
                                          "0.1",   "0.25", "0.5",   "1",
                                          "2.5",   "5",    "10"};
#define NBOUNDS (sizeof(HIST_BOUNDS) / sizeof(HIST_BOUNDS[0]))

static const char *const CODE_NAMES[NCODES] = {"OK",
                                               "Canceled",
                                               "Unknown",
                                               "InvalidArgument",
                                               "DeadlineExceeded",
                                               "NotFound",
                                               "AlreadyExists",
                                               "PermissionDenied",
                                               "ResourceExhausted",
                                               "FailedPrecondition",
                                               "Aborted",
                                               "OutOfRange",
                                               "Unimplemented",
                                               "Internal",
                                               "Unavailable",
                                               "DataLoss",
                                               "Unauthenticated"};

typedef struct rpc_entry {
  struct rpc_entry *next;
  char *path;       /* hash key */
  char *service;    /* "immudb.schema.ImmuService" */
  char *method;     /* "Get" */
  const char *type; /* unary, server_stream, client_stream, bidi_stream */
  uint64_t handled[NCODES];
  uint64_t bucket[NBOUNDS]; /* not cumulative */
  uint64_t count;
  double sum;
} rpc_entry;

typedef struct client_entry {
  struct client_entry *next;
  char *ip;
  uint64_t rpcs;
  time_t last;
} client_entry;

typedef struct check_entry {
  struct check_entry *next;
  char *db;
  uint64_t runs;
  uint64_t failures;
  int last_ok;
  time_t last;
} check_entry;

struct immu_metrics {
  /* settings (immutable after new) */
  char *address;
  int port_cfg;
  int histograms;
  char *version;
  char *buildtime;
  immu_metrics_source source;
  void (*log)(void *arg, int level, const char *msg);
  void *log_arg;
  struct timespec start_mono;
  time_t start_wall;

  /* registry */
  pthread_mutex_t mu;
  rpc_entry *methods[METHOD_BUCKETS];
  size_t nmethods;
  int registered_only; /* only declared methods get their own entry */
  rpc_entry overflow_method;
  client_entry *clients[CLIENT_BUCKETS];
  size_t nclients;
  client_entry overflow_client;
  check_entry *checks[CHECK_BUCKETS];
  size_t nchecks;
  time_t last_check;

  /* HTTP server */
  pthread_mutex_t life_mu; /* start/stop */
  struct event_base *base;
  struct evhttp *http;
  struct event *stop_ev; /* activated by stop, breaks the loop */
  pthread_t thread;
  int running;
  int bound_port;
};

static void logf_(immu_metrics *m, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void logf_(immu_metrics *m, int level, const char *fmt, ...) {
  if (m->log == NULL)
    return;
  char buf[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof(buf), fmt, ap);
  va_end(ap);
  m->log(m->log_arg, level, buf);
}

static uint64_t fnv1a(const char *s) {
  uint64_t h = 1469598103934665603ULL;
  for (; *s; s++) {
    h ^= (unsigned char)*s;
    h *= 1099511628211ULL;
  }
  return h;
}

static char *dupstr(const char *s) {
  size_t n = strlen(s);
  return immu__strndup(s, n);
}

/* ------------------------------------------------------------------ */
/* grpc_type of immudb's methods                                       */
/* ------------------------------------------------------------------ */

static const char *method_type(const char *method) {
  static const char *const server_stream[] = {
      "streamGet",   "streamVerifiableGet", "streamScan",
      "streamZScan", "streamHistory",       "exportTx",
      "SQLQuery",    "TxSQLQuery"};
  static const char *const client_stream[] = {
      "streamSet", "streamVerifiableSet", "streamExecAll", "replicateTx"};
  for (size_t i = 0; i < sizeof(server_stream) / sizeof(*server_stream); i++)
    if (strcmp(method, server_stream[i]) == 0)
      return "server_stream";
  for (size_t i = 0; i < sizeof(client_stream) / sizeof(*client_stream); i++)
    if (strcmp(method, client_stream[i]) == 0)
      return "client_stream";
  if (strcmp(method, "streamExportTx") == 0)
    return "bidi_stream";
  return "unary";
}

/* ------------------------------------------------------------------ */
/* new / free                                                          */
/* ------------------------------------------------------------------ */

int immu_metrics_new(const immu_metrics_config *cfg, immu_metrics **out) {
  *out = NULL;
  immu_metrics *m = immu__calloc(1, sizeof(*m));
  if (m == NULL)
    return IMMU_ENOMEM;
  m->address = dupstr(cfg->address != NULL ? cfg->address : "0.0.0.0");
  m->version = dupstr(cfg->version != NULL ? cfg->version : "");
  m->buildtime = dupstr(cfg->buildtime != NULL ? cfg->buildtime : "");
  if (m->address == NULL || m->version == NULL || m->buildtime == NULL) {
    immu__free(m->address);
    immu__free(m->version);
    immu__free(m->buildtime);
    immu__free(m);
    return IMMU_ENOMEM;
  }
  m->port_cfg = cfg->port;
  m->histograms = cfg->histograms;
  m->source = cfg->source;
  m->log = cfg->log;
  m->log_arg = cfg->log_arg;
  clock_gettime(CLOCK_MONOTONIC, &m->start_mono);
  m->start_wall = time(NULL);
  pthread_mutex_init(&m->mu, NULL);
  pthread_mutex_init(&m->life_mu, NULL);
  m->overflow_method.path = (char *)"";
  m->overflow_method.service = (char *)"unknown";
  m->overflow_method.method = (char *)"unknown";
  m->overflow_method.type = "unary";
  m->overflow_client.ip = (char *)"other";
  *out = m;
  return 0;
}

void immu_metrics_free(immu_metrics *m) {
  if (m == NULL)
    return;
  immu_metrics_stop(m);
  for (size_t b = 0; b < METHOD_BUCKETS; b++) {
    for (rpc_entry *e = m->methods[b], *n; e != NULL; e = n) {
      n = e->next;
      immu__free(e->path);
      immu__free(e->service);
      immu__free(e->method);
      immu__free(e);
    }
  }
  for (size_t b = 0; b < CLIENT_BUCKETS; b++) {
    for (client_entry *e = m->clients[b], *n; e != NULL; e = n) {
      n = e->next;
      immu__free(e->ip);
      immu__free(e);
    }
  }
  for (size_t b = 0; b < CHECK_BUCKETS; b++) {
    for (check_entry *e = m->checks[b], *n; e != NULL; e = n) {
      n = e->next;
      immu__free(e->db);
      immu__free(e);
    }
  }
  pthread_mutex_destroy(&m->mu);
  pthread_mutex_destroy(&m->life_mu);
  immu__free(m->address);
  immu__free(m->version);
  immu__free(m->buildtime);
  immu__free(m);
}

/* ------------------------------------------------------------------ */
/* feeding                                                             */
/* ------------------------------------------------------------------ */

/* Finds or adds (unless |lookup_only|) the entry of |path|; under m->mu. */
static rpc_entry *method_entry(immu_metrics *m, const char *path,
                               int lookup_only) {
  size_t b = (size_t)(fnv1a(path) % METHOD_BUCKETS);
  for (rpc_entry *e = m->methods[b]; e != NULL; e = e->next)
    if (strcmp(e->path, path) == 0)
      return e;
  if (lookup_only || m->nmethods >= MAX_METHODS)
    return &m->overflow_method;
  rpc_entry *e = immu__calloc(1, sizeof(*e));
  if (e == NULL)
    return &m->overflow_method;
  /* "/pkg.Service/Method" */
  const char *svc = path[0] == '/' ? path + 1 : path;
  const char *slash = strrchr(svc, '/');
  e->path = dupstr(path);
  if (slash != NULL && slash != svc && slash[1] != '\0') {
    e->service = immu__strndup(svc, (size_t)(slash - svc));
    e->method = dupstr(slash + 1);
  } else {
    e->service = dupstr("unknown");
    e->method = dupstr(svc);
  }
  if (e->path == NULL || e->service == NULL || e->method == NULL) {
    immu__free(e->path);
    immu__free(e->service);
    immu__free(e->method);
    immu__free(e);
    return &m->overflow_method;
  }
  e->type = method_type(e->method);
  e->next = m->methods[b];
  m->methods[b] = e;
  m->nmethods++;
  return e;
}

int immu_metrics_register_method(immu_metrics *m, const char *path) {
  pthread_mutex_lock(&m->mu);
  rpc_entry *e = method_entry(m, path, 0);
  int rc = e == &m->overflow_method ? IMMU_ENOMEM : 0;
  m->registered_only = 1;
  pthread_mutex_unlock(&m->mu);
  return rc;
}

static client_entry *client_entry_of(immu_metrics *m, const char *ip) {
  size_t b = (size_t)(fnv1a(ip) % CLIENT_BUCKETS);
  for (client_entry *e = m->clients[b]; e != NULL; e = e->next)
    if (strcmp(e->ip, ip) == 0)
      return e;
  if (m->nclients >= MAX_CLIENTS)
    return &m->overflow_client;
  client_entry *e = immu__calloc(1, sizeof(*e));
  if (e == NULL)
    return &m->overflow_client;
  e->ip = dupstr(ip);
  if (e->ip == NULL) {
    immu__free(e);
    return &m->overflow_client;
  }
  e->next = m->clients[b];
  m->clients[b] = e;
  m->nclients++;
  return e;
}

void immu_metrics_on_call_done(void *arg, const char *path, int status,
                               double seconds, const char *peer_ip) {
  immu_metrics *m = arg;
  if (m == NULL)
    return;
  if (path == NULL)
    path = "";
  if (status < 0 || status >= NCODES)
    status = IMMU_GRPC_UNKNOWN;
  if (!(seconds >= 0)) /* also NaN */
    seconds = 0;
  time_t now = time(NULL);
  pthread_mutex_lock(&m->mu);
  rpc_entry *e = method_entry(m, path, m->registered_only);
  e->handled[status]++;
  e->count++;
  e->sum += seconds;
  for (size_t i = 0; i < NBOUNDS; i++) {
    if (seconds <= HIST_BOUNDS[i]) {
      e->bucket[i]++;
      break;
    }
  }
  if (peer_ip != NULL && peer_ip[0] != '\0') {
    client_entry *c = client_entry_of(m, peer_ip);
    c->rpcs++;
    c->last = now;
  }
  pthread_mutex_unlock(&m->mu);
}

void immu_metrics_check_result(immu_metrics *m, const char *db, int ok,
                               time_t when) {
  if (m == NULL || db == NULL)
    return;
  pthread_mutex_lock(&m->mu);
  size_t b = (size_t)(fnv1a(db) % CHECK_BUCKETS);
  check_entry *e = m->checks[b];
  while (e != NULL && strcmp(e->db, db) != 0)
    e = e->next;
  if (e == NULL && m->nchecks < MAX_CHECKED_DBS) {
    e = immu__calloc(1, sizeof(*e));
    if (e != NULL) {
      e->db = dupstr(db);
      if (e->db == NULL) {
        immu__free(e);
        e = NULL;
      } else {
        e->next = m->checks[b];
        m->checks[b] = e;
        m->nchecks++;
      }
    }
  }
  if (e != NULL) {
    e->runs++;
    if (!ok)
      e->failures++;
    e->last_ok = ok ? 1 : 0;
    e->last = when;
  }
  if (when > m->last_check)
    m->last_check = when;
  pthread_mutex_unlock(&m->mu);
}

/* ------------------------------------------------------------------ */
/* text rendering                                                      */
/* ------------------------------------------------------------------ */

typedef struct sbuf {
  char *p;
  size_t len, cap;
  int oom;
} sbuf;

static void sb_reserve(sbuf *sb, size_t extra) {
  if (sb->oom || sb->len + extra + 1 <= sb->cap)
    return;
  size_t cap = sb->cap ? sb->cap : 4096;
  while (cap < sb->len + extra + 1)
    cap *= 2;
  char *p = immu__realloc(sb->p, cap);
  if (p == NULL) {
    sb->oom = 1;
    return;
  }
  sb->p = p;
  sb->cap = cap;
}

static void sb_add(sbuf *sb, const char *s, size_t n) {
  sb_reserve(sb, n);
  if (sb->oom)
    return;
  memcpy(sb->p + sb->len, s, n);
  sb->len += n;
  sb->p[sb->len] = '\0';
}

static void sb_puts(sbuf *sb, const char *s) {
  sb_add(sb, s, strlen(s));
}

__attribute__((format(printf, 2, 3))) static void
sb_printf(sbuf *sb, const char *fmt, ...) {
  char tmp[256];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
  va_end(ap);
  if (n < 0)
    return;
  if ((size_t)n < sizeof(tmp)) {
    sb_add(sb, tmp, (size_t)n);
    return;
  }
  sb_reserve(sb, (size_t)n);
  if (sb->oom)
    return;
  va_start(ap, fmt);
  vsnprintf(sb->p + sb->len, (size_t)n + 1, fmt, ap);
  va_end(ap);
  sb->len += (size_t)n;
}

/* Length of the valid UTF-8 sequence at |s| (1..4), or 0 if invalid. */
static size_t utf8_len(const unsigned char *s) {
  unsigned char c = s[0];
  if (c < 0x80)
    return 1;
  size_t n;
  uint32_t cp;
  if (c >= 0xC2 && c <= 0xDF) {
    n = 2;
    cp = c & 0x1Fu;
  } else if (c >= 0xE0 && c <= 0xEF) {
    n = 3;
    cp = c & 0x0Fu;
  } else if (c >= 0xF0 && c <= 0xF4) {
    n = 4;
    cp = c & 0x07u;
  } else {
    return 0;
  }
  for (size_t i = 1; i < n; i++) {
    if ((s[i] & 0xC0) != 0x80)
      return 0;
    cp = (cp << 6) | (s[i] & 0x3Fu);
  }
  if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
      (cp >= 0xD800 && cp <= 0xDFFF))
    return 0;
  return n;
}

size_t immu_metrics_escape_label(char *out, size_t n, const char *s) {
  size_t j = 0;
#define PUT(ch)                                                                \
  do {                                                                         \
    if (j + 1 < n)                                                             \
      out[j] = (char)(ch);                                                     \
    j++;                                                                       \
  } while (0)
  const unsigned char *p = (const unsigned char *)s;
  while (*p) {
    if (*p == '\\' || *p == '"') {
      PUT('\\');
      PUT(*p);
      p++;
    } else if (*p == '\n') {
      PUT('\\');
      PUT('n');
      p++;
    } else {
      size_t k = utf8_len(p);
      if (k == 0) {
        PUT(0xEF); /* U+FFFD */
        PUT(0xBF);
        PUT(0xBD);
        p++;
      } else {
        for (size_t i = 0; i < k; i++)
          PUT(p[i]);
        p += k;
      }
    }
  }
#undef PUT
  if (n > 0)
    out[j < n ? j : n - 1] = '\0';
  return j;
}

static void sb_label(sbuf *sb, const char *s) {
  char small[256];
  size_t need = immu_metrics_escape_label(small, sizeof(small), s);
  if (need < sizeof(small)) {
    sb_add(sb, small, need);
    return;
  }
  sb_reserve(sb, need);
  if (sb->oom)
    return;
  immu_metrics_escape_label(sb->p + sb->len, need + 1, s);
  sb->len += need;
}

static void sb_family(sbuf *sb, const char *name, const char *type,
                      const char *help) {
  sb_printf(sb, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* "name{key=\"value\"} " */
static void sb_sample1(sbuf *sb, const char *name, const char *key,
                       const char *value) {
  sb_puts(sb, name);
  sb_puts(sb, "{");
  sb_puts(sb, key);
  sb_puts(sb, "=\"");
  sb_label(sb, value);
  sb_puts(sb, "\"} ");
}

static void sb_double(sbuf *sb, double v) {
  char tmp[64];
  snprintf(tmp, sizeof(tmp), "%.9g", v);
  sb_puts(sb, tmp);
}

/* grpc_method="...",grpc_service="...",grpc_type="..." */
static void sb_rpc_labels(sbuf *sb, const rpc_entry *e) {
  sb_puts(sb, "grpc_method=\"");
  sb_label(sb, e->method);
  sb_puts(sb, "\",grpc_service=\"");
  sb_label(sb, e->service);
  sb_puts(sb, "\",grpc_type=\"");
  sb_puts(sb, e->type);
  sb_puts(sb, "\"");
}

typedef struct db_row {
  char *name;
  immu_db_stats st;
} db_row;

typedef struct db_rows {
  db_row *v;
  size_t n, cap;
  int oom;
} db_rows;

static void collect_db(void *arg, const char *db, const immu_db_stats *st) {
  db_rows *r = arg;
  if (r->oom || db == NULL || st == NULL)
    return;
  if (r->n == r->cap) {
    size_t cap = r->cap ? r->cap * 2 : 16;
    db_row *v = immu__realloc(r->v, cap * sizeof(*v));
    if (v == NULL) {
      r->oom = 1;
      return;
    }
    r->v = v;
    r->cap = cap;
  }
  r->v[r->n].name = dupstr(db);
  if (r->v[r->n].name == NULL) {
    r->oom = 1;
    return;
  }
  r->v[r->n].st = *st;
  r->n++;
}

static void render_process(sbuf *sb, const immu_metrics *m) {
  sb_family(sb, "process_start_time_seconds", "gauge",
            "Start time of the process since unix epoch in seconds.");
  sb_printf(sb, "process_start_time_seconds %lld\n", (long long)m->start_wall);
  struct rusage ru;
  if (getrusage(RUSAGE_SELF, &ru) == 0) {
    double cpu =
        (double)ru.ru_utime.tv_sec + (double)ru.ru_stime.tv_sec +
        ((double)ru.ru_utime.tv_usec + (double)ru.ru_stime.tv_usec) / 1e6;
    sb_family(sb, "process_cpu_seconds_total", "counter",
              "Total user and system CPU time spent in seconds.");
    sb_puts(sb, "process_cpu_seconds_total ");
    sb_double(sb, cpu);
    sb_puts(sb, "\n");
  }
  FILE *f = fopen("/proc/self/statm", "r");
  if (f != NULL) {
    unsigned long long size, rss;
    if (fscanf(f, "%llu %llu", &size, &rss) == 2) {
      long page = sysconf(_SC_PAGESIZE);
      sb_family(sb, "process_resident_memory_bytes", "gauge",
                "Resident memory size in bytes.");
      sb_printf(sb, "process_resident_memory_bytes %llu\n",
                rss * (unsigned long long)page);
      sb_family(sb, "process_virtual_memory_bytes", "gauge",
                "Virtual memory size in bytes.");
      sb_printf(sb, "process_virtual_memory_bytes %llu\n",
                size * (unsigned long long)page);
    }
    fclose(f);
  }
  DIR *d = opendir("/proc/self/fd");
  if (d != NULL) {
    long n = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL)
      if (de->d_name[0] != '.')
        n++;
    closedir(d);
    sb_family(sb, "process_open_fds", "gauge",
              "Number of open file descriptors.");
    sb_printf(sb, "process_open_fds %ld\n", n > 0 ? n - 1 : 0);
  }
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) {
    sb_family(sb, "process_max_fds", "gauge",
              "Maximum number of open file descriptors.");
    sb_printf(sb, "process_max_fds %llu\n", (unsigned long long)rl.rlim_cur);
  }
}

char *immu_metrics_render(immu_metrics *m, size_t *len) {
  sbuf sb = {0};
  db_rows rows = {0};
  uint64_t sessions = 0;

  /* Pull database figures first, without our lock. */
  if (m->source.foreach_db != NULL)
    m->source.foreach_db(m->source.arg, collect_db, &rows);
  if (m->source.active_sessions != NULL)
    sessions = m->source.active_sessions(m->source.arg);

  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  double up_s = (double)(now.tv_sec - m->start_mono.tv_sec) +
                (double)(now.tv_nsec - m->start_mono.tv_nsec) / 1e9;

  sb_family(&sb, "immudb_uptime_hours", "gauge", "Server uptime in hours.");
  sb_puts(&sb, "immudb_uptime_hours ");
  sb_double(&sb, up_s / 3600.0);
  sb_puts(&sb, "\n");

  sb_family(&sb, "immudb_loaded_databases", "gauge",
            "Number of loaded databases.");
  sb_printf(&sb, "immudb_loaded_databases %zu\n", rows.n);

  sb_family(&sb, "immudb_active_sessions", "gauge",
            "Number of active sessions.");
  sb_printf(&sb, "immudb_active_sessions %" PRIu64 "\n", sessions);

  if (m->source.row_cache != NULL) {
    uint64_t hits = 0, misses = 0, rcrows = 0, bytes = 0;
    m->source.row_cache(m->source.arg, &hits, &misses, &rcrows, &bytes);
    sb_family(&sb, "immudb_index_row_cache_hits_total", "counter",
              "Latest-value reads answered by the index row cache.");
    sb_printf(&sb, "immudb_index_row_cache_hits_total %" PRIu64 "\n", hits);
    sb_family(&sb, "immudb_index_row_cache_misses_total", "counter",
              "Latest-value reads the index row cache did not hold.");
    sb_printf(&sb, "immudb_index_row_cache_misses_total %" PRIu64 "\n",
              misses);
    sb_family(&sb, "immudb_index_row_cache_rows", "gauge",
              "Recently written keys held by the index row cache.");
    sb_printf(&sb, "immudb_index_row_cache_rows %" PRIu64 "\n", rcrows);
    sb_family(&sb, "immudb_index_row_cache_bytes", "gauge",
              "Memory held by the index row cache.");
    sb_printf(&sb, "immudb_index_row_cache_bytes %" PRIu64 "\n", bytes);
  }

  if (rows.n > 0) {
    sb_family(&sb, "immudb_db_size_bytes", "gauge", "Database size in bytes.");
    for (size_t i = 0; i < rows.n; i++) {
      const immu_db_stats *st = &rows.v[i].st;
      sb_sample1(&sb, "immudb_db_size_bytes", "db", rows.v[i].name);
      sb_printf(&sb, "%" PRIu64 "\n",
                st->log_bytes + st->txi_bytes + st->aht_bytes +
                    st->index_bytes);
    }
    sb_family(&sb, "immudb_number_of_stored_entries", "gauge",
              "Number of KV entries per database.");
    for (size_t i = 0; i < rows.n; i++) {
      sb_sample1(&sb, "immudb_number_of_stored_entries", "db", rows.v[i].name);
      sb_printf(&sb, "%" PRIu64 "\n", rows.v[i].st.entries);
    }
    sb_family(&sb, "immudb_last_committed_trx_id", "gauge",
              "The highest id of committed transaction.");
    for (size_t i = 0; i < rows.n; i++) {
      sb_sample1(&sb, "immudb_last_committed_trx_id", "db", rows.v[i].name);
      sb_printf(&sb, "%" PRIu64 "\n", rows.v[i].st.txs);
    }
    sb_family(&sb, "immudb_last_indexed_trx_id", "gauge",
              "The highest id of indexed transaction.");
    for (size_t i = 0; i < rows.n; i++) {
      sb_sample1(&sb, "immudb_last_indexed_trx_id", "db", rows.v[i].name);
      sb_printf(&sb, "%" PRIu64 "\n", rows.v[i].st.indexed_tx);
    }
  }
  for (size_t i = 0; i < rows.n; i++)
    immu__free(rows.v[i].name);
  immu__free(rows.v);

  pthread_mutex_lock(&m->mu);

  /* per client */
  if (m->nclients > 0 || m->overflow_client.rpcs > 0) {
    sb_family(&sb, "immudb_number_of_rpcs_per_client", "counter",
              "Number of handled RPCs per client.");
    for (size_t b = 0; b < CLIENT_BUCKETS; b++)
      for (const client_entry *e = m->clients[b]; e != NULL; e = e->next) {
        sb_sample1(&sb, "immudb_number_of_rpcs_per_client", "ip", e->ip);
        sb_printf(&sb, "%" PRIu64 "\n", e->rpcs);
      }
    if (m->overflow_client.rpcs > 0) {
      sb_sample1(&sb, "immudb_number_of_rpcs_per_client", "ip", "other");
      sb_printf(&sb, "%" PRIu64 "\n", m->overflow_client.rpcs);
    }
    sb_family(&sb, "immudb_clients_last_message_at_unix_seconds", "gauge",
              "Timestamp at which clients have sent their most recent "
              "message.");
    for (size_t b = 0; b < CLIENT_BUCKETS; b++)
      for (const client_entry *e = m->clients[b]; e != NULL; e = e->next) {
        sb_sample1(&sb, "immudb_clients_last_message_at_unix_seconds", "ip",
                   e->ip);
        sb_printf(&sb, "%lld\n", (long long)e->last);
      }
    if (m->overflow_client.rpcs > 0) {
      sb_sample1(&sb, "immudb_clients_last_message_at_unix_seconds", "ip",
                 "other");
      sb_printf(&sb, "%lld\n", (long long)m->overflow_client.last);
    }
  }

  /* gRPC, as go-grpc-prometheus names it */
  const rpc_entry *all[MAX_METHODS + 1];
  size_t nall = 0;
  for (size_t b = 0; b < METHOD_BUCKETS; b++)
    for (const rpc_entry *e = m->methods[b]; e != NULL; e = e->next)
      if (e->count > 0)
        all[nall++] = e;
  if (m->overflow_method.count > 0)
    all[nall++] = &m->overflow_method;

  sb_family(&sb, "grpc_server_started_total", "counter",
            "Total number of RPCs started on the server.");
  for (size_t i = 0; i < nall; i++) {
    sb_puts(&sb, "grpc_server_started_total{");
    sb_rpc_labels(&sb, all[i]);
    sb_printf(&sb, "} %" PRIu64 "\n", all[i]->count);
  }
  sb_family(&sb, "grpc_server_handled_total", "counter",
            "Total number of RPCs completed on the server, regardless of "
            "success or failure.");
  for (size_t i = 0; i < nall; i++) {
    for (int c = 0; c < NCODES; c++) {
      if (all[i]->handled[c] == 0)
        continue;
      sb_printf(&sb, "grpc_server_handled_total{grpc_code=\"%s\",",
                CODE_NAMES[c]);
      sb_rpc_labels(&sb, all[i]);
      sb_printf(&sb, "} %" PRIu64 "\n", all[i]->handled[c]);
    }
  }
  if (m->histograms) {
    sb_family(&sb, "grpc_server_handling_seconds", "histogram",
              "Histogram of response latency (seconds) of gRPC that had been "
              "application-level handled by the server.");
    for (size_t i = 0; i < nall; i++) {
      uint64_t cum = 0;
      for (size_t k = 0; k < NBOUNDS; k++) {
        cum += all[i]->bucket[k];
        sb_puts(&sb, "grpc_server_handling_seconds_bucket{");
        sb_rpc_labels(&sb, all[i]);
        sb_printf(&sb, ",le=\"%s\"} %" PRIu64 "\n", HIST_LABELS[k], cum);
      }
      sb_puts(&sb, "grpc_server_handling_seconds_bucket{");
      sb_rpc_labels(&sb, all[i]);
      sb_printf(&sb, ",le=\"+Inf\"} %" PRIu64 "\n", all[i]->count);
      sb_puts(&sb, "grpc_server_handling_seconds_sum{");
      sb_rpc_labels(&sb, all[i]);
      sb_puts(&sb, "} ");
      sb_double(&sb, all[i]->sum);
      sb_puts(&sb, "\n");
      sb_puts(&sb, "grpc_server_handling_seconds_count{");
      sb_rpc_labels(&sb, all[i]);
      sb_printf(&sb, "} %" PRIu64 "\n", all[i]->count);
    }
  }

  /* consistency checker */
  sb_family(&sb, "immudb_consistency_check_last_run_unix_seconds", "gauge",
            "End of the most recent consistency check (0 = none yet).");
  sb_printf(&sb, "immudb_consistency_check_last_run_unix_seconds %lld\n",
            (long long)m->last_check);
  if (m->nchecks > 0) {
    sb_family(&sb, "immudb_consistency_check_runs_total", "counter",
              "Consistency checks run per database.");
    for (size_t b = 0; b < CHECK_BUCKETS; b++)
      for (const check_entry *e = m->checks[b]; e != NULL; e = e->next) {
        sb_sample1(&sb, "immudb_consistency_check_runs_total", "db", e->db);
        sb_printf(&sb, "%" PRIu64 "\n", e->runs);
      }
    sb_family(&sb, "immudb_consistency_check_failures_total", "counter",
              "Consistency checks that found a mismatch, per database.");
    for (size_t b = 0; b < CHECK_BUCKETS; b++)
      for (const check_entry *e = m->checks[b]; e != NULL; e = e->next) {
        sb_sample1(&sb, "immudb_consistency_check_failures_total", "db", e->db);
        sb_printf(&sb, "%" PRIu64 "\n", e->failures);
      }
    sb_family(&sb, "immudb_consistency_check_ok", "gauge",
              "1 if the last consistency check of the database passed.");
    for (size_t b = 0; b < CHECK_BUCKETS; b++)
      for (const check_entry *e = m->checks[b]; e != NULL; e = e->next) {
        sb_sample1(&sb, "immudb_consistency_check_ok", "db", e->db);
        sb_printf(&sb, "%d\n", e->last_ok);
      }
  }
  pthread_mutex_unlock(&m->mu);

  render_process(&sb, m);

  if (sb.oom || rows.oom) {
    immu__free(sb.p);
    return NULL;
  }
  if (sb.p == NULL)
    sb_add(&sb, "", 0);
  *len = sb.len;
  return sb.p;
}

/* ------------------------------------------------------------------ */
/* HTTP server                                                         */
/* ------------------------------------------------------------------ */

static void reply(struct evhttp_request *req, int code, const char *reason,
                  const char *ctype, const char *body, size_t len) {
  struct evkeyvalq *oh = evhttp_request_get_output_headers(req);
  if (ctype != NULL)
    evhttp_add_header(oh, "Content-Type", ctype);
  struct evbuffer *buf = NULL;
  if (evhttp_request_get_command(req) == EVHTTP_REQ_HEAD)
    len = 0; /* evhttp would send the body even for HEAD */
  if (len > 0) {
    buf = evbuffer_new();
    if (buf == NULL || evbuffer_add(buf, body, len) != 0) {
      if (buf != NULL)
        evbuffer_free(buf);
      evhttp_send_error(req, 500, "Internal Server Error");
      return;
    }
  }
  evhttp_send_reply(req, code, reason, buf);
  if (buf != NULL)
    evbuffer_free(buf);
}

static void handle(struct evhttp_request *req, void *arg) {
  immu_metrics *m = arg;
  struct evkeyvalq *oh = evhttp_request_get_output_headers(req);
  evhttp_add_header(oh, "Access-Control-Allow-Origin", "*");
  enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
  if (cmd == EVHTTP_REQ_OPTIONS) {
    evhttp_add_header(oh, "Access-Control-Allow-Methods", "GET, HEAD, OPTIONS");
    evhttp_add_header(oh, "Access-Control-Allow-Headers", "*");
    reply(req, 204, "No Content", NULL, NULL, 0);
    return;
  }
  if (cmd != EVHTTP_REQ_GET && cmd != EVHTTP_REQ_HEAD) {
    evhttp_add_header(oh, "Allow", "GET, HEAD, OPTIONS");
    reply(req, 405, "Method Not Allowed", "text/plain; charset=utf-8",
          "method not allowed\n", 19);
    return;
  }
  const struct evhttp_uri *u = evhttp_request_get_evhttp_uri(req);
  const char *path = u != NULL ? evhttp_uri_get_path(u) : NULL;
  if (path == NULL || path[0] == '\0')
    path = "/";

  if (cmd == EVHTTP_REQ_HEAD &&
      (strcmp(path, "/metrics") == 0 || strcmp(path, "/version") == 0)) {
    /* evhttp would send a body even for HEAD: headers only. */
    reply(req, 200, "OK",
          path[1] == 'm' ? "text/plain; version=0.0.4; charset=utf-8"
                         : "application/json",
          NULL, 0);
  } else if (strcmp(path, "/metrics") == 0) {
    size_t len = 0;
    char *body = immu_metrics_render(m, &len);
    if (body == NULL) {
      reply(req, 500, "Internal Server Error", "text/plain; charset=utf-8",
            "out of memory\n", 14);
      return;
    }
    reply(req, 200, "OK", "text/plain; version=0.0.4; charset=utf-8", body,
          len);
    immu__free(body);
  } else if (strcmp(path, "/readyz") == 0 || strcmp(path, "/livez") == 0 ||
             strcmp(path, "/initz") == 0) {
    reply(req, 200, "OK", "text/plain; charset=utf-8", NULL, 0);
  } else if (strcmp(path, "/version") == 0) {
    sbuf sb = {0};
    sb_puts(&sb, "{\"component\":\"immudb\",\"version\":\"");
    sb_label(&sb, m->version); /* same escapes as JSON for these strings */
    sb_puts(&sb, "\",\"buildtime\":\"");
    sb_label(&sb, m->buildtime);
    sb_puts(&sb, "\",\"static\":false,\"fips\":false}");
    if (sb.oom) {
      immu__free(sb.p);
      reply(req, 500, "Internal Server Error", NULL, NULL, 0);
      return;
    }
    reply(req, 200, "OK", "application/json", sb.p, sb.len);
    immu__free(sb.p);
  } else {
    reply(req, 404, "Not Found", "text/plain; charset=utf-8",
          "404 page not found\n", 19);
  }
}

static void *http_main(void *arg) {
  immu_metrics *m = arg;
  prctl(PR_SET_NAME, "immu-metrics");
  event_base_loop(m->base, EVLOOP_NO_EXIT_ON_EMPTY);
  return NULL;
}

/* Runs on the HTTP thread. An activated event stays pending until the
 * loop runs it, so a stop that comes before the loop starts is not lost
 * (event_base_loopbreak alone would be: the loop clears the flag when it
 * starts). */
static void on_stop(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  immu_metrics *m = arg;
  event_base_loopbreak(m->base);
}

static pthread_once_t evthread_once = PTHREAD_ONCE_INIT;
static void init_evthread(void) {
  evthread_use_pthreads();
}

int immu_metrics_start(immu_metrics *m, char **errmsg) {
  *errmsg = NULL;
  pthread_once(&evthread_once, init_evthread);
  pthread_mutex_lock(&m->life_mu);
  if (m->running) {
    pthread_mutex_unlock(&m->life_mu);
    return 0;
  }
  int rc = 0;
  char why[256];
  m->base = event_base_new();
  if (m->base == NULL) {
    rc = IMMU_ENOMEM;
    snprintf(why, sizeof(why), "cannot create an event base");
    goto bad;
  }
  m->http = evhttp_new(m->base);
  if (m->http == NULL) {
    rc = IMMU_ENOMEM;
    snprintf(why, sizeof(why), "cannot create the HTTP server");
    goto bad;
  }
  evhttp_set_allowed_methods(m->http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD |
                                          EVHTTP_REQ_OPTIONS | EVHTTP_REQ_POST |
                                          EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE);
  evhttp_set_timeout(m->http, 30);
  evhttp_set_max_headers_size(m->http, 16384);
  evhttp_set_max_body_size(m->http, 4096);
  evhttp_set_gencb(m->http, handle, m);
  m->stop_ev = event_new(m->base, -1, 0, on_stop, m);
  if (m->stop_ev == NULL) {
    rc = IMMU_ENOMEM;
    snprintf(why, sizeof(why), "cannot create the stop event");
    goto bad;
  }

  errno = 0;
  struct evhttp_bound_socket *bs = evhttp_bind_socket_with_handle(
      m->http, m->address, (ev_uint16_t)m->port_cfg);
  if (bs == NULL) {
    int e = errno;
    rc = e > 0 ? -e : IMMU_EINVAL;
    snprintf(why, sizeof(why), "cannot listen on %s:%d: %s", m->address,
             m->port_cfg, e > 0 ? strerror(e) : "bind failed");
    goto bad;
  }
  struct sockaddr_storage ss;
  socklen_t sl = sizeof(ss);
  evutil_socket_t fd = evhttp_bound_socket_get_fd(bs);
  m->bound_port = m->port_cfg;
  if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0) {
    if (ss.ss_family == AF_INET)
      m->bound_port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
    else if (ss.ss_family == AF_INET6)
      m->bound_port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
  }
  int perr = pthread_create(&m->thread, NULL, http_main, m);
  if (perr != 0) {
    rc = -perr;
    snprintf(why, sizeof(why), "cannot start the metrics thread: %s",
             strerror(perr));
    goto bad;
  }
  m->running = 1;
  pthread_mutex_unlock(&m->life_mu);
  logf_(m, IMMU_LOG_INFO, "metrics server enabled on %s:%d/metrics", m->address,
        m->bound_port);
  return 0;
bad:
  if (m->stop_ev != NULL)
    event_free(m->stop_ev);
  m->stop_ev = NULL;
  if (m->http != NULL)
    evhttp_free(m->http);
  if (m->base != NULL)
    event_base_free(m->base);
  m->http = NULL;
  m->base = NULL;
  m->bound_port = 0;
  pthread_mutex_unlock(&m->life_mu);
  *errmsg = dupstr(why);
  return rc;
}

int immu_metrics_port(const immu_metrics *m) {
  return m != NULL ? m->bound_port : 0;
}

void immu_metrics_stop(immu_metrics *m) {
  if (m == NULL)
    return;
  pthread_mutex_lock(&m->life_mu);
  if (m->running) {
    event_active(m->stop_ev, EV_READ, 0);
    pthread_join(m->thread, NULL);
    event_free(m->stop_ev);
    m->stop_ev = NULL;
    evhttp_free(m->http);
    event_base_free(m->base);
    m->http = NULL;
    m->base = NULL;
    m->running = 0;
    m->bound_port = 0;
  }
  pthread_mutex_unlock(&m->life_mu);
}
