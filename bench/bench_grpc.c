/* SPDX-License-Identifier: Apache-2.0 */
/*
 * `immubench grpc`: load against the real `immudb` server over gRPC.
 *
 * The benchmark starts the server itself (--server PATH) on 127.0.0.1 with
 * a free port and a fresh data directory under --dir, or targets a running
 * one (--address host:port). For each client count of --clients it opens
 * that many client connections (each its own HTTP/2 connection and I/O
 * thread) and runs --streams-per-conn workers per connection, each with one
 * call outstanding at a time, for --duration seconds per case:
 *
 *   health       Health RPC: transport + dispatch only (the peer: the
 *                transport's own ceiling, run at the start and at the end)
 *   set          Set of one KV (32 B random key, 128 B random value);
 *                noWait=false as immudb clients send it (--no-wait: true)
 *   vset         VerifiableSet of one KV, proveSinceTx = the worker's last
 *                state; the reply is decoded, not verified (server side only)
 *   vset_verify  the same through the SDK (immu_client_verified_set): every
 *                proof checked client-side, trusted state kept per handle
 *   get          Get of a random key among --keys preloaded ones (the value
 *                is compared with the expected one)
 *   vget         VerifiableGet, proveSinceTx = the worker's last state
 *                (server side only)
 *   vget_verify  the same through the SDK (immu_client_verified_get)
 *
 * Raw cases use the library's client transport (src/client/grpc_client.h)
 * with protobuf-c messages (schema.pb-c.h) and one bearer token from one
 * Login; *_verify cases use one SDK handle per connection, each logged in.
 * Per case: ops/s over the window, p50/p90/p99/max of the call latency
 * (merged over workers), errors, the server's CPU (from /proc/<pid>/stat
 * before and after the window) and RSS, and this process's CPU.
 *
 * Method, machine and recorded results: docs/benchmarks.md.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <arpa/inet.h>
#include <time.h>
#include <unistd.h>

#include "client/grpc_client.h"
#include "core/mem.h"
#include "immudb/client.h"
#include "immudb/err.h"
#include "schema.pb-c.h"

#include "bench.h"

#define KEY_LEN 32
#define VAL_LEN 128
#define LOAD_BATCH_MAX 1000
#define LOAD_CONNS_MAX 64
#define CALL_TIMEOUT_MS 30000
#define LOAD_TIMEOUT_MS 600000
#define MAX_CLIENT_COUNTS 16
#define SVC "/immudb.schema.ImmuService/"

/* ------------------------------------------------------------------ */
/* Cases                                                               */
/* ------------------------------------------------------------------ */

enum {
  K_HEALTH = 0,
  K_SET,
  K_VSET,
  K_VSET_VERIFY,
  K_GET,
  K_VGET,
  K_VGET_VERIFY,
  NKINDS
};

static const char *const kind_name[NKINDS] = {
    "health", "set", "vset", "vset_verify", "get", "vget", "vget_verify"};
static const char *const kind_label[NKINDS] = {
    "Health",
    "Set",
    "VerifiableSet (server side)",
    "VerifiableSet + client verify",
    "Get",
    "VerifiableGet (server side)",
    "VerifiableGet + client verify"};

static int kind_sdk(int k) { return k == K_VSET_VERIFY || k == K_VGET_VERIFY; }
static int kind_read(int k) {
  return k == K_GET || k == K_VGET || k == K_VGET_VERIFY;
}

/* ------------------------------------------------------------------ */
/* Options                                                             */
/* ------------------------------------------------------------------ */

typedef struct grpc_opts {
  double duration;
  uint64_t keys;
  uint64_t load_batch;
  unsigned clients[MAX_CLIENT_COUNTS];
  size_t nclients;
  unsigned streams;
  const char *server;
  const char *address; /* external server host:port, or NULL */
  long server_pid;     /* with --address: for CPU/RSS; 0 = unknown */
  const char *dir;
  const char *password;
  const char *json;
  const char *cases;
  const char *extra_args[32];
  size_t nextra;
  uint64_t seed;
  int async;
  int nowait;
  int metrics;
  int checker;
  int keep;
  int quick;
  int thread_clients; /* raw cases: a blocking thread per worker */
  unsigned client_loops; /* shared client I/O threads; 0 = one per conn */
} grpc_opts;

static void grpc_usage(FILE *f) {
  fputs(
      "usage: immubench grpc [options]\n"
      "\n"
      "Load against the immudb server over gRPC (h2c on 127.0.0.1). Cases,\n"
      "each at every client count, --duration seconds:\n"
      "  health       Health RPC (the transport's ceiling; start and end)\n"
      "  set          Set, 1 KV (32 B key, 128 B value)\n"
      "  vset         VerifiableSet, reply decoded only (server side)\n"
      "  vset_verify  VerifiableSet through the SDK with client "
      "verification\n"
      "  get          Get of a random preloaded key\n"
      "  vget         VerifiableGet (server side)\n"
      "  vget_verify  VerifiableGet through the SDK with client "
      "verification\n"
      "\n"
      "server:\n"
      "  --server PATH        immudb executable to start (default: immudb\n"
      "                       next to immubench, else build/release/immudb)\n"
      "  --address HOST:PORT  use a running server instead (nothing is\n"
      "                       started or stopped; it gets written to)\n"
      "  --server-pid PID     with --address: its pid, for CPU and RSS\n"
      "  --dir DIR            parent of the fresh data directory (default\n"
      "                       ./bench-data; removed afterwards)\n"
      "  --admin-password PW  (default immudb)\n"
      "  --async              start the server with --synced=false\n"
      "                       (default: synced, fdatasync per commit group)\n"
      "  --metrics            keep the metrics server on (a free port);\n"
      "                       default --metrics-server=false\n"
      "  --checker            keep the consistency checker on; default\n"
      "                       --consistency-check=false\n"
      "  --server-arg ARG     one more argument for the server (repeatable)\n"
      "  --keep               keep the data directory and the server log\n"
      "\n"
      "load:\n"
      "  --clients LIST       connections, comma-separated (default "
      "1,16,128)\n"
      "  --streams-per-conn N workers per connection (default 1)\n"
      "  --duration S         seconds per case (default 5)\n"
      "  --keys N             keys preloaded for the reads (default 100000)\n"
      "  --load-batch N       KVs per tx of the preload (default 1: one Set\n"
      "                       per key, as clients write; max 1000)\n"
      "  --no-wait            Set/VerifiableSet with noWait=true (commit "
      "only)\n"
      "  --thread-clients     raw cases: one blocking thread per worker\n"
      "                       (default: event-driven, calls chained on\n"
      "                       the connections' I/O threads)\n"
      "  --client-loops N     raw connections share N client I/O threads\n"
      "                       (epoll; default 1); 0 = an I/O thread per\n"
      "                       connection\n"
      "  --cases LIST         only these cases (comma-separated names)\n"
      "  --seed N             PRNG seed (default 1)\n"
      "  --quick              smoke run (~30 s): 1 s cases, 10000 keys\n"
      "  --json FILE          also write JSON to FILE; `--json -` writes it\n"
      "                       to stdout instead of the tables\n"
      "  -q, --quiet          no progress messages on stderr\n"
      "  -h, --help           this text\n"
      "\n"
      "See docs/benchmarks.md.\n",
      f);
}

static int parse_clients(const char *s, grpc_opts *o) {
  o->nclients = 0;
  const char *p = s;
  while (*p) {
    size_t len = strcspn(p, ",");
    char tmp[32];
    uint64_t v;
    if (len == 0 || len >= sizeof tmp || o->nclients == MAX_CLIENT_COUNTS)
      return -1;
    memcpy(tmp, p, len);
    tmp[len] = '\0';
    if (bench_parse_count(tmp, &v) || v < 1 || v > 1024)
      return -1;
    o->clients[o->nclients++] = (unsigned)v;
    p += len;
    if (*p == ',')
      p++;
  }
  return o->nclients > 0 ? 0 : -1;
}

static int parse_opts(int argc, char **argv, grpc_opts *o) {
  memset(o, 0, sizeof *o);
  o->duration = 5;
  o->keys = 100000;
  o->load_batch = 1;
  o->streams = 1;
  o->client_loops = 1;
  o->dir = "./bench-data";
  o->password = "immudb";
  o->seed = 1;
  o->clients[0] = 1;
  o->clients[1] = 16;
  o->clients[2] = 128;
  o->nclients = 3;
  int set_dur = 0, set_keys = 0;
  uint64_t v;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    const char *val = NULL;
#define NEED_VALUE()                                                           \
  do {                                                                         \
    if (bench_option_value("grpc", argc, argv, &i, &val) != 0)                 \
      return -1;                                                               \
  } while (0)
    int common = bench_common_option("grpc", argc, argv, &i, &o->json,
                                     &o->cases);
    if (common < 0)
      return -1;
    if (common > 0)
      continue;
    if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
      grpc_usage(stdout);
      return 1;
    } else if (strcmp(a, "--quick") == 0) {
      o->quick = 1;
    } else if (strcmp(a, "--async") == 0) {
      o->async = 1;
    } else if (strcmp(a, "--no-wait") == 0) {
      o->nowait = 1;
    } else if (strcmp(a, "--thread-clients") == 0) {
      o->thread_clients = 1;
    } else if (strcmp(a, "--metrics") == 0) {
      o->metrics = 1;
    } else if (strcmp(a, "--checker") == 0) {
      o->checker = 1;
    } else if (strcmp(a, "--keep") == 0) {
      o->keep = 1;
    } else if (strcmp(a, "--server") == 0) {
      NEED_VALUE();
      o->server = val;
    } else if (strcmp(a, "--address") == 0) {
      NEED_VALUE();
      o->address = val;
    } else if (strcmp(a, "--server-pid") == 0) {
      NEED_VALUE();
      if (bench_parse_count(val, &v) || v < 1 || v > 0x7fffffff)
        goto bad;
      o->server_pid = (long)v;
    } else if (strcmp(a, "--server-arg") == 0) {
      NEED_VALUE();
      if (o->nextra == sizeof o->extra_args / sizeof o->extra_args[0])
        goto bad;
      o->extra_args[o->nextra++] = val;
    } else if (strcmp(a, "--dir") == 0) {
      NEED_VALUE();
      o->dir = val;
    } else if (strcmp(a, "--admin-password") == 0) {
      NEED_VALUE();
      o->password = val;
    } else if (strcmp(a, "--clients") == 0) {
      NEED_VALUE();
      if (parse_clients(val, o))
        goto bad;
    } else if (strcmp(a, "--client-loops") == 0) {
      NEED_VALUE();
      if (bench_parse_count(val, &v) || v > 64)
        goto bad;
      o->client_loops = (unsigned)v;
    } else if (strcmp(a, "--streams-per-conn") == 0) {
      NEED_VALUE();
      if (bench_parse_count(val, &v) || v < 1 || v > 128)
        goto bad;
      o->streams = (unsigned)v;
    } else if (strcmp(a, "--duration") == 0) {
      NEED_VALUE();
      if (bench_parse_double(val, &o->duration) || o->duration <= 0 ||
          o->duration > 3600)
        goto bad;
      set_dur = 1;
    } else if (strcmp(a, "--keys") == 0) {
      NEED_VALUE();
      if (bench_parse_count(val, &v) || v < 1 || v > 100000000u)
        goto bad;
      o->keys = v;
      set_keys = 1;
    } else if (strcmp(a, "--load-batch") == 0) {
      NEED_VALUE();
      if (bench_parse_count(val, &v) || v < 1 || v > LOAD_BATCH_MAX)
        goto bad;
      o->load_batch = v;
    } else if (strcmp(a, "--seed") == 0) {
      NEED_VALUE();
      if (bench_parse_count(val, &v))
        goto bad;
      o->seed = v;
    } else {
      fprintf(stderr, "immubench grpc: unknown option '%s'\n", a);
      return -1;
    }
    continue;
  bad:
    fprintf(stderr, "immubench grpc: bad value '%s' for %s\n", val, a);
    return -1;
#undef NEED_VALUE
  }
  if (o->quick) {
    if (!set_dur)
      o->duration = 1;
    if (!set_keys)
      o->keys = 10000;
  }
  if (o->cases) {
    const char *p = o->cases;
    while (*p) {
      size_t len = strcspn(p, ",");
      int ok = 0;
      for (int k = 0; k < NKINDS; k++)
        if (len == strlen(kind_name[k]) && strncmp(p, kind_name[k], len) == 0)
          ok = 1;
      if (!ok && len > 0) {
        fprintf(stderr, "immubench grpc: unknown case '%.*s'\n", (int)len, p);
        return -1;
      }
      p += len;
      if (*p == ',')
        p++;
    }
  }
  return 0;
}

static int selected(const grpc_opts *o, int k) {
  if (!o->cases)
    return 1;
  const char *p = o->cases;
  size_t n = strlen(kind_name[k]);
  while (*p) {
    size_t len = strcspn(p, ",");
    if (len == n && strncmp(p, kind_name[k], len) == 0)
      return 1;
    p += len;
    if (*p == ',')
      p++;
  }
  return 0;
}

/* ------------------------------------------------------------------ */
/* Small helpers                                                       */
/* ------------------------------------------------------------------ */

static uint64_t mix64(uint64_t z) {
  z += UINT64_C(0x9E3779B97F4A7C15);
  z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
  z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
  return z ^ (z >> 31);
}

static void put_u64le(uint8_t *p, uint64_t v) {
  for (int i = 0; i < 8; i++)
    p[i] = (uint8_t)(v >> (8 * i));
}

/* Key i of the preloaded data set: 32 pseudo-random bytes. */
static void data_key(uint64_t seed, uint64_t i, uint8_t *k) {
  for (int j = 0; j < 4; j++)
    put_u64le(k + 8 * j, mix64((seed << 40) ^ (i * 4 + (uint64_t)j)));
}

/* Value i: u64 LE i, then 120 bytes derived from i. */
static void data_value(uint64_t i, uint8_t *v) {
  put_u64le(v, i);
  uint64_t x = mix64(i ^ UINT64_C(0xA5A5A5A5));
  for (int j = 8; j < VAL_LEN; j += 8)
    put_u64le(v + j, x + (uint64_t)j);
}

static void sleep_s(double s) {
  struct timespec ts;
  ts.tv_sec = (time_t)s;
  ts.tv_nsec = (long)((s - (double)ts.tv_sec) * 1e9);
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

static int rm_cb(const char *path, const struct stat *sb, int type,
                 struct FTW *ftw) {
  (void)sb;
  (void)type;
  (void)ftw;
  if (remove(path) != 0 && errno != ENOENT)
    fprintf(stderr, "immubench grpc: cannot remove %s: %s\n", path,
            strerror(errno));
  return 0;
}

static void rm_rf(const char *dir) {
  struct stat st;
  if (lstat(dir, &st) != 0)
    return;
  nftw(dir, rm_cb, 32, FTW_DEPTH | FTW_PHYS);
}

static const char *fs_name(unsigned long type) {
  switch (type) {
  case 0xEF53UL:
    return "ext2/3/4";
  case 0x58465342UL:
    return "xfs";
  case 0x9123683EUL:
    return "btrfs";
  case 0x01021994UL:
    return "tmpfs";
  case 0x794C7630UL:
    return "overlayfs";
  default:
    return "other";
  }
}

/* CPU time (user + system) of process |pid| in seconds, from
 * /proc/<pid>/stat; NAN if unreadable. */
static double proc_cpu_s(long pid) {
  char path[64], buf[2048];
  snprintf(path, sizeof path, "/proc/%ld/stat", pid);
  FILE *f = fopen(path, "r");
  if (!f)
    return NAN;
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = '\0';
  char *p = strrchr(buf, ')');
  if (!p)
    return NAN;
  p++;
  /* fields after ')': 3 state ... 14 utime 15 stime */
  unsigned long long ut = 0, st = 0;
  int field = 2;
  char *save = NULL;
  for (char *tok = strtok_r(p, " ", &save); tok;
       tok = strtok_r(NULL, " ", &save)) {
    field++;
    if (field == 14)
      ut = strtoull(tok, NULL, 10);
    else if (field == 15) {
      st = strtoull(tok, NULL, 10);
      break;
    }
  }
  if (field < 15)
    return NAN;
  long tck = sysconf(_SC_CLK_TCK);
  return (double)(ut + st) / (double)(tck > 0 ? tck : 100);
}

/* A "VmRSS:" style field of /proc/<pid>/status in bytes; NAN if absent. */
static double proc_status_kb(long pid, const char *field) {
  char path[64], line[256];
  snprintf(path, sizeof path, "/proc/%ld/status", pid);
  FILE *f = fopen(path, "r");
  if (!f)
    return NAN;
  double v = NAN;
  size_t fl = strlen(field);
  while (fgets(line, sizeof line, f)) {
    if (strncmp(line, field, fl) == 0 && line[fl] == ':') {
      v = strtod(line + fl + 1, NULL) * 1024.0;
      break;
    }
  }
  fclose(f);
  return v;
}

/* Threads of process |pid| (from /proc/<pid>/status). */
static double proc_threads(long pid) {
  char path[64], line[256];
  snprintf(path, sizeof path, "/proc/%ld/status", pid);
  FILE *f = fopen(path, "r");
  if (!f)
    return NAN;
  double v = NAN;
  while (fgets(line, sizeof line, f))
    if (strncmp(line, "Threads:", 8) == 0) {
      v = strtod(line + 8, NULL);
      break;
    }
  fclose(f);
  return v;
}

static double self_cpu_s(void) {
  struct rusage ru;
  if (getrusage(RUSAGE_SELF, &ru) != 0)
    return NAN;
  return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
         (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

/* Machine-wide CPU seconds from the "cpu" line of /proc/stat: busy (user,
 * nice, system, irq, softirq) and steal; -1 if unreadable. */
typedef struct mach_cpu {
  double busy, steal;
} mach_cpu;

static mach_cpu machine_cpu(void) {
  mach_cpu m = {-1, -1};
  FILE *f = fopen("/proc/stat", "r");
  if (!f)
    return m;
  unsigned long long v[8] = {0};
  if (fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1],
             &v[2], &v[3], &v[4], &v[5], &v[6], &v[7]) == 8) {
    long tck = sysconf(_SC_CLK_TCK);
    double t = (double)(tck > 0 ? tck : 100);
    m.busy = (double)(v[0] + v[1] + v[2] + v[5] + v[6]) / t;
    m.steal = (double)v[7] / t;
  }
  fclose(f);
  return m;
}

static void read_loadavg(double out[3]) {
  out[0] = out[1] = out[2] = NAN;
  FILE *f = fopen("/proc/loadavg", "r");
  if (!f)
    return;
  if (fscanf(f, "%lf %lf %lf", &out[0], &out[1], &out[2]) != 3)
    out[0] = out[1] = out[2] = NAN;
  fclose(f);
}

/* ------------------------------------------------------------------ */
/* Global context                                                      */
/* ------------------------------------------------------------------ */

typedef struct case_res {
  int kind;
  unsigned clients;
  unsigned workers;
  int pass; /* health: 0 start, 1 end; others 0 */
  int ran;
  char err[256]; /* first error (setup or call) */
  double elapsed;
  uint64_t ops;
  uint64_t errors;
  double ops_s;
  double p50_us, p90_us, p99_us, max_us, mean_us;
  double srv_cpu_pct; /* server CPU time / window, in % of one core */
  double srv_rss;     /* bytes at the end of the window */
  double srv_threads;
  double cli_cpu_pct; /* this process */
  double other_cpu_pct; /* every other process on the machine */
  double steal_pct;     /* hypervisor steal time */
  double vs_health;   /* ops/s / health ops/s at the same client count */
  double vs_ceiling;  /* ops/s / max health ops/s */
} case_res;

typedef struct conn_pool {
  immu__grpc_client **raw;
  size_t nraw;
  immu_client **sdk;
  size_t nsdk;
} conn_pool;

typedef struct ctx {
  const grpc_opts *o;
  char host[256];
  int port;
  long srv_pid; /* 0 = unknown */
  pid_t child;  /* started by us, or 0 */
  char *base;   /* our directory under --dir */
  char *logpath;
  char server_path[4096];
  char server_version[128];
  char fs_type[32];
  char bearer[1024]; /* "Bearer <token>" */
  conn_pool pool;
  immu__grpc_loop *loops[64]; /* --client-loops */
  unsigned nloops;
  case_res *rs;
  size_t nrs, caprs;
  double load_s, load_index_s;
  uint64_t load_last_tx;
  int loaded;
  double start_s; /* server start-up time */
  double stop_s;  /* SIGTERM to exit */
  int stop_status;
  double srv_hwm;
  double load_start[3], load_end[3];
  double login_s;
  unsigned nlogins;
  unsigned load_conns;
} ctx;

static case_res *new_case(ctx *c) {
  if (c->nrs == c->caprs) {
    c->caprs = c->caprs ? 2 * c->caprs : 32;
    c->rs = bench_xrealloc(c->rs, c->caprs * sizeof *c->rs);
  }
  case_res *r = &c->rs[c->nrs++];
  memset(r, 0, sizeof *r);
  r->p50_us = r->p90_us = r->p99_us = r->max_us = r->mean_us = NAN;
  r->srv_cpu_pct = r->srv_rss = r->srv_threads = r->cli_cpu_pct = NAN;
  r->other_cpu_pct = r->steal_pct = NAN;
  r->vs_health = r->vs_ceiling = NAN;
  r->ops_s = NAN;
  return r;
}

/* ------------------------------------------------------------------ */
/* Raw calls                                                           */
/* ------------------------------------------------------------------ */

/* Packs |req|, calls |method| on |conn|, returns the reply bytes in *resp
 * (immu__free) when the status is OK. Returns 0, or -1 with |err| set. */
static int raw_call_bytes(const ctx *c, immu__grpc_client *conn,
                          const char *method, const uint8_t *p, size_t n,
                          int64_t timeout_ms, uint8_t **resp, size_t *resp_len,
                          char *err, size_t errcap) {
  char path[96];
  snprintf(path, sizeof path, SVC "%s", method);
  immu__grpc_md md = {"authorization", c->bearer};
  immu__grpc_call_opts co;
  memset(&co, 0, sizeof co);
  if (c->bearer[0]) {
    co.md = &md;
    co.nmd = 1;
  }
  co.timeout_ms = timeout_ms;
  immu__grpc_result res;
  immu__grpc_result_init(&res);
  *resp = NULL;
  *resp_len = 0;
  int rc = immu__grpc_client_unary(conn, path, &co, p, n, resp, resp_len, &res);
  int out = 0;
  if (rc != 0 || res.status != IMMU__GRPC_OK) {
    if (err && errcap)
      snprintf(err, errcap, "%s: %s (gRPC %s: %s)", method,
               rc != 0 ? immu_strerror(rc) : "server error",
               immu__grpc_code_name(res.status),
               res.message ? res.message : "");
    immu__free(*resp);
    *resp = NULL;
    *resp_len = 0;
    out = -1;
  }
  immu__grpc_result_free(&res);
  return out;
}

static int raw_call(const ctx *c, immu__grpc_client *conn, const char *method,
                    const ProtobufCMessage *req, uint8_t *buf, size_t bufcap,
                    int64_t timeout_ms, uint8_t **resp, size_t *resp_len,
                    char *err, size_t errcap) {
  size_t n = req ? protobuf_c_message_get_packed_size(req) : 0;
  uint8_t *heap = NULL;
  uint8_t *p = buf;
  if (n > bufcap) {
    heap = bench_xmalloc(n);
    p = heap;
  }
  if (req)
    protobuf_c_message_pack(req, p);
  int rc = raw_call_bytes(c, conn, method, p, n, timeout_ms, resp, resp_len,
                          err, errcap);
  free(heap);
  return rc;
}

static int parse_hostport(const char *s, char *host, size_t hcap, int *port) {
  const char *colon = strrchr(s, ':');
  if (!colon || colon == s)
    return -1;
  size_t hl = (size_t)(colon - s);
  if (s[0] == '[' && hl >= 2 && s[hl - 1] == ']') {
    s++;
    hl -= 2;
  }
  if (hl >= hcap)
    return -1;
  memcpy(host, s, hl);
  host[hl] = '\0';
  char *end;
  long p = strtol(colon + 1, &end, 10);
  if (*end || p < 1 || p > 65535)
    return -1;
  *port = (int)p;
  return 0;
}

static int raw_connect(const ctx *c, immu__grpc_client **out, char *err,
                       size_t errcap) {
  immu__grpc_client_opts o;
  memset(&o, 0, sizeof o);
  o.host = c->host;
  o.port = c->port;
  o.connect_timeout_ms = 10000;
  o.default_timeout_ms = CALL_TIMEOUT_MS;
  o.user_agent = "immubench";
  if (c->nloops > 0) {
    static atomic_uint next;
    o.loop = c->loops[atomic_fetch_add(&next, 1) % c->nloops];
  }
  int rc = immu__grpc_client_connect(&o, out, err, errcap);
  if (rc != 0 && err && errcap && !err[0])
    snprintf(err, errcap, "%s", immu_strerror(rc));
  return rc;
}

/* Health on a fresh connection; fills the version. */
static int raw_health(ctx *c, char *err, size_t errcap) {
  immu__grpc_client *conn = NULL;
  if (raw_connect(c, &conn, err, errcap) != 0)
    return -1;
  uint8_t *resp;
  size_t rl;
  uint8_t buf[16];
  int rc = raw_call(c, conn, "Health", NULL, buf, sizeof buf, 5000, &resp, &rl,
                    err, errcap);
  if (rc == 0) {
    Immudb__Schema__HealthResponse *h =
        immudb__schema__health_response__unpack(NULL, rl, resp);
    if (!h || !h->status) {
      snprintf(err, errcap, "Health: bad reply");
      rc = -1;
    } else {
      snprintf(c->server_version, sizeof c->server_version, "%s",
               h->version ? h->version : "");
    }
    if (h)
      immudb__schema__health_response__free_unpacked(h, NULL);
    immu__free(resp);
  }
  immu__grpc_client_free(conn);
  return rc;
}

static int raw_login(ctx *c, char *err, size_t errcap) {
  immu__grpc_client *conn = NULL;
  if (raw_connect(c, &conn, err, errcap) != 0)
    return -1;
  Immudb__Schema__LoginRequest lr = IMMUDB__SCHEMA__LOGIN_REQUEST__INIT;
  lr.user.data = (uint8_t *)(uintptr_t)"immudb";
  lr.user.len = 6;
  lr.password.data = (uint8_t *)(uintptr_t)c->o->password;
  lr.password.len = strlen(c->o->password);
  uint8_t buf[512];
  uint8_t *resp;
  size_t rl;
  c->bearer[0] = '\0';
  int rc = raw_call(c, conn, "Login", &lr.base, buf, sizeof buf, 30000, &resp,
                    &rl, err, errcap);
  if (rc == 0) {
    Immudb__Schema__LoginResponse *r =
        immudb__schema__login_response__unpack(NULL, rl, resp);
    if (!r || !r->token || !r->token[0] ||
        strlen(r->token) + 8 > sizeof c->bearer) {
      snprintf(err, errcap, "Login: bad reply");
      rc = -1;
    } else {
      snprintf(c->bearer, sizeof c->bearer, "Bearer %s", r->token);
    }
    if (r)
      immudb__schema__login_response__free_unpacked(r, NULL);
    immu__free(resp);
  }
  immu__grpc_client_free(conn);
  return rc;
}

/* CurrentState txId of defaultdb over |conn|; 0 on failure. */
static uint64_t raw_current_tx(const ctx *c, immu__grpc_client *conn) {
  uint8_t *resp;
  size_t rl;
  uint8_t buf[16];
  char err[256];
  if (raw_call(c, conn, "CurrentState", NULL, buf, sizeof buf, CALL_TIMEOUT_MS,
               &resp, &rl, err, sizeof err) != 0)
    return 0;
  uint64_t id = 0;
  Immudb__Schema__ImmutableState *s =
      immudb__schema__immutable_state__unpack(NULL, rl, resp);
  if (s) {
    id = s->txid;
    immudb__schema__immutable_state__free_unpacked(s, NULL);
  }
  immu__free(resp);
  return id;
}

/* ------------------------------------------------------------------ */
/* Connection pools                                                    */
/* ------------------------------------------------------------------ */

static int pool_raw(ctx *c, size_t n, char *err, size_t errcap) {
  conn_pool *p = &c->pool;
  /* replace connections that failed or were closed by the server */
  for (size_t i = 0; i < p->nraw && i < n; i++) {
    if (!immu__grpc_client_usable(p->raw[i])) {
      immu__grpc_client_free(p->raw[i]);
      p->raw[i] = NULL;
      if (raw_connect(c, &p->raw[i], err, errcap) != 0)
        return -1;
    }
  }
  if (p->nraw >= n)
    return 0;
  p->raw = bench_xrealloc(p->raw, n * sizeof *p->raw);
  while (p->nraw < n) {
    p->raw[p->nraw] = NULL;
    if (raw_connect(c, &p->raw[p->nraw], err, errcap) != 0)
      return -1;
    p->nraw++;
  }
  return 0;
}

typedef struct sdk_new_arg {
  const ctx *c;
  immu_client *h;
  int rc;
  char err[256];
} sdk_new_arg;

static void *sdk_new_thread(void *arg) {
  sdk_new_arg *a = arg;
  immu_client_options o;
  immu_client_options_init(&o);
  o.address = a->c->host;
  o.port = a->c->port;
  o.call_timeout_ms = CALL_TIMEOUT_MS;
  o.keepalive_ms = -1;
  a->rc = immu_client_new(&o, &a->h);
  if (a->rc != 0) {
    snprintf(a->err, sizeof a->err, "immu_client_new: %s",
             immu_client_last_error());
    return NULL;
  }
  a->rc = immu_client_login(a->h, "immudb", a->c->o->password);
  if (a->rc != 0) {
    snprintf(a->err, sizeof a->err, "immu_client_login: %s",
             immu_client_last_error());
    immu_client_free(a->h);
    a->h = NULL;
  }
  return NULL;
}

/* SDK handles, each logged in (one bcrypt on the server per handle), made
 * in parallel. */
static int pool_sdk(ctx *c, size_t n, char *err, size_t errcap) {
  conn_pool *p = &c->pool;
  if (p->nsdk >= n)
    return 0;
  size_t need = n - p->nsdk;
  uint64_t t0 = bench_now_ns();
  sdk_new_arg *args = bench_xcalloc(need, sizeof *args);
  pthread_t *th = bench_xcalloc(need, sizeof *th);
  int rc = 0;
  /* at most 32 logins at a time */
  for (size_t lo = 0; lo < need; lo += 32) {
    size_t hi = lo + 32 < need ? lo + 32 : need;
    for (size_t i = lo; i < hi; i++) {
      args[i].c = c;
      if (pthread_create(&th[i], NULL, sdk_new_thread, &args[i]) != 0) {
        args[i].rc = -1;
        snprintf(args[i].err, sizeof args[i].err, "pthread_create failed");
        th[i] = 0;
      }
    }
    for (size_t i = lo; i < hi; i++)
      if (th[i])
        pthread_join(th[i], NULL);
  }
  p->sdk = bench_xrealloc(p->sdk, n * sizeof *p->sdk);
  for (size_t i = 0; i < need; i++) {
    if (args[i].rc != 0) {
      if (rc == 0)
        snprintf(err, errcap, "%s", args[i].err);
      rc = -1;
      continue;
    }
    p->sdk[p->nsdk++] = args[i].h;
    c->nlogins++;
  }
  c->login_s += bench_elapsed_s(t0, bench_now_ns());
  free(args);
  free(th);
  return rc;
}

static void pool_free(conn_pool *p) {
  for (size_t i = 0; i < p->nraw; i++)
    immu__grpc_client_free(p->raw[i]);
  for (size_t i = 0; i < p->nsdk; i++)
    immu_client_free(p->sdk[i]);
  free(p->raw);
  free(p->sdk);
  memset(p, 0, sizeof *p);
}

/* ------------------------------------------------------------------ */
/* Workers                                                             */
/* ------------------------------------------------------------------ */

typedef struct run_state {
  const ctx *c;
  int kind;
  pthread_barrier_t barrier;
  atomic_int stop;
  uint64_t start_tx; /* CurrentState at the case start */
  /* event-driven raw cases */
  atomic_int measuring;
  _Atomic uint64_t t0; /* window start (ns), set before measuring */
  atomic_int warmed;   /* workers whose first call completed */
  pthread_mutex_t mu;
  pthread_cond_t cv;
  unsigned active; /* call chains still running (mu) */
} run_state;

typedef struct worker {
  run_state *run;
  unsigned id;
  immu__grpc_client *raw;
  immu_client *sdk;
  bench_rng rng;
  uint64_t state_tx; /* the worker's last state (proveSinceTx) */
  uint64_t t_start;  /* event-driven: start of the call in flight */
  int warm;
  double *lat;       /* microseconds */
  size_t nlat, caplat;
  uint64_t ops, errors;
  char err[256];
  uint8_t buf[1024];
  uint8_t key[KEY_LEN];
  uint8_t val[VAL_LEN];
  uint8_t expect[VAL_LEN];
} worker;

static void w_fail(worker *w, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

static void w_fail(worker *w, const char *fmt, ...) {
  w->errors++;
  if (w->err[0])
    return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(w->err, sizeof w->err, fmt, ap);
  va_end(ap);
}

/* The next key of a read: a random preloaded one; its value in w->expect. */
static void pick_read_key(worker *w) {
  const grpc_opts *o = w->run->c->o;
  uint64_t i = bench_rng_below(&w->rng, o->keys);
  data_key(o->seed, i, w->key);
  data_value(i, w->expect);
}

/* Raw cases: each builds its request into w->buf and checks the reply,
 * so that the blocking driver (op_raw) and the event-driven one
 * (async_done) share them. */

static size_t pack_req(worker *w, const ProtobufCMessage *m) {
  size_t n = protobuf_c_message_get_packed_size(m);
  if (n > sizeof w->buf) {
    fprintf(stderr, "immubench grpc: request of %zu bytes\n", n);
    abort(); /* fixed-size keys and values: cannot happen */
  }
  return protobuf_c_message_pack(m, w->buf);
}

static size_t b_health(worker *w) {
  (void)w;
  return 0;
}

static int c_health(worker *w, const uint8_t *resp, size_t rl) {
  Immudb__Schema__HealthResponse *h =
      immudb__schema__health_response__unpack(NULL, rl, resp);
  int rc = 0;
  if (!h || !h->status) {
    w_fail(w, "Health: bad reply");
    rc = -1;
  }
  if (h)
    immudb__schema__health_response__free_unpacked(h, NULL);
  return rc;
}

static void fill_set(worker *w, Immudb__Schema__KeyValue *kv,
                     Immudb__Schema__KeyValue **kvp,
                     Immudb__Schema__SetRequest *sr) {
  bench_rng_bytes(&w->rng, w->key, KEY_LEN);
  bench_rng_bytes(&w->rng, w->val, VAL_LEN);
  kv->key.data = w->key;
  kv->key.len = KEY_LEN;
  kv->value.data = w->val;
  kv->value.len = VAL_LEN;
  kvp[0] = kv;
  sr->n_kvs = 1;
  sr->kvs = kvp;
  sr->nowait = w->run->c->o->nowait ? 1 : 0;
}

static size_t b_set(worker *w) {
  Immudb__Schema__KeyValue kv = IMMUDB__SCHEMA__KEY_VALUE__INIT;
  Immudb__Schema__KeyValue *kvp[1];
  Immudb__Schema__SetRequest sr = IMMUDB__SCHEMA__SET_REQUEST__INIT;
  fill_set(w, &kv, kvp, &sr);
  return pack_req(w, &sr.base);
}

static int c_set(worker *w, const uint8_t *resp, size_t rl) {
  Immudb__Schema__TxHeader *h =
      immudb__schema__tx_header__unpack(NULL, rl, resp);
  int rc = 0;
  if (!h || h->id == 0 || h->nentries != 1) {
    w_fail(w, "Set: bad reply");
    rc = -1;
  } else {
    w->state_tx = h->id;
  }
  if (h)
    immudb__schema__tx_header__free_unpacked(h, NULL);
  return rc;
}

static size_t b_vset(worker *w) {
  Immudb__Schema__KeyValue kv = IMMUDB__SCHEMA__KEY_VALUE__INIT;
  Immudb__Schema__KeyValue *kvp[1];
  Immudb__Schema__SetRequest sr = IMMUDB__SCHEMA__SET_REQUEST__INIT;
  Immudb__Schema__VerifiableSetRequest vr =
      IMMUDB__SCHEMA__VERIFIABLE_SET_REQUEST__INIT;
  fill_set(w, &kv, kvp, &sr);
  vr.setrequest = &sr;
  vr.provesincetx = w->state_tx;
  return pack_req(w, &vr.base);
}

static int c_vset(worker *w, const uint8_t *resp, size_t rl) {
  Immudb__Schema__VerifiableTx *v =
      immudb__schema__verifiable_tx__unpack(NULL, rl, resp);
  int rc = 0;
  if (!v || !v->tx || !v->tx->header || !v->dualproof ||
      !v->dualproof->targettxheader ||
      v->dualproof->targettxheader->id != v->tx->header->id ||
      v->tx->header->id <= w->state_tx) {
    w_fail(w, "VerifiableSet: bad reply");
    rc = -1;
  } else {
    w->state_tx = v->tx->header->id;
  }
  if (v)
    immudb__schema__verifiable_tx__free_unpacked(v, NULL);
  return rc;
}

static size_t b_get(worker *w) {
  pick_read_key(w);
  Immudb__Schema__KeyRequest kr = IMMUDB__SCHEMA__KEY_REQUEST__INIT;
  kr.key.data = w->key;
  kr.key.len = KEY_LEN;
  return pack_req(w, &kr.base);
}

static int c_get(worker *w, const uint8_t *resp, size_t rl) {
  Immudb__Schema__Entry *e = immudb__schema__entry__unpack(NULL, rl, resp);
  int rc = 0;
  if (!e || e->value.len != VAL_LEN ||
      memcmp(e->value.data, w->expect, VAL_LEN) != 0) {
    w_fail(w, "Get: wrong value");
    rc = -1;
  }
  if (e)
    immudb__schema__entry__free_unpacked(e, NULL);
  return rc;
}

static size_t b_vget(worker *w) {
  pick_read_key(w);
  Immudb__Schema__KeyRequest kr = IMMUDB__SCHEMA__KEY_REQUEST__INIT;
  Immudb__Schema__VerifiableGetRequest vr =
      IMMUDB__SCHEMA__VERIFIABLE_GET_REQUEST__INIT;
  kr.key.data = w->key;
  kr.key.len = KEY_LEN;
  vr.keyrequest = &kr;
  vr.provesincetx = w->state_tx;
  return pack_req(w, &vr.base);
}

static int c_vget(worker *w, const uint8_t *resp, size_t rl) {
  Immudb__Schema__VerifiableEntry *v =
      immudb__schema__verifiable_entry__unpack(NULL, rl, resp);
  int rc = 0;
  if (!v || !v->entry || v->entry->value.len != VAL_LEN ||
      memcmp(v->entry->value.data, w->expect, VAL_LEN) != 0 ||
      !v->verifiabletx || !v->verifiabletx->dualproof ||
      !v->verifiabletx->dualproof->targettxheader || !v->inclusionproof) {
    w_fail(w, "VerifiableGet: bad reply");
    rc = -1;
  } else {
    uint64_t t = v->verifiabletx->dualproof->targettxheader->id;
    if (t > w->state_tx)
      w->state_tx = t;
  }
  if (v)
    immudb__schema__verifiable_entry__free_unpacked(v, NULL);
  return rc;
}

typedef struct raw_op {
  const char *method;
  const char *path;
  size_t (*build)(worker *w);
  int (*check)(worker *w, const uint8_t *resp, size_t rl);
} raw_op;

static const raw_op raw_ops[NKINDS] = {
    [K_HEALTH] = {"Health", SVC "Health", b_health, c_health},
    [K_SET] = {"Set", SVC "Set", b_set, c_set},
    [K_VSET] = {"VerifiableSet", SVC "VerifiableSet", b_vset, c_vset},
    [K_GET] = {"Get", SVC "Get", b_get, c_get},
    [K_VGET] = {"VerifiableGet", SVC "VerifiableGet", b_vget, c_vget},
};

/* One blocking raw call on the calling thread. */
static int op_raw(worker *w, int kind) {
  const raw_op *r = &raw_ops[kind];
  size_t n = r->build(w);
  uint8_t *resp;
  size_t rl;
  char err[256];
  if (raw_call_bytes(w->run->c, w->raw, r->method, w->buf, n,
                     CALL_TIMEOUT_MS, &resp, &rl, err, sizeof err) != 0) {
    w_fail(w, "%s", err);
    return -1;
  }
  int rc = r->check(w, resp, rl);
  immu__free(resp);
  return rc;
}

static int op_health(worker *w) { return op_raw(w, K_HEALTH); }
static int op_set(worker *w) { return op_raw(w, K_SET); }
static int op_vset(worker *w) { return op_raw(w, K_VSET); }
static int op_get(worker *w) { return op_raw(w, K_GET); }
static int op_vget(worker *w) { return op_raw(w, K_VGET); }

static int op_vset_verify(worker *w) {
  bench_rng_bytes(&w->rng, w->key, KEY_LEN);
  bench_rng_bytes(&w->rng, w->val, VAL_LEN);
  immu_db_kv kv = {w->key, KEY_LEN, w->val, VAL_LEN};
  immu_tx_header hdr;
  int rc = immu_client_verified_set(w->sdk, &kv, 1, &hdr);
  if (rc != 0) {
    w_fail(w, "verified_set: %s", immu_client_last_error());
    return -1;
  }
  w->state_tx = hdr.id;
  return 0;
}

static int op_vget_verify(worker *w) {
  pick_read_key(w);
  immu_db_key_req kr;
  memset(&kr, 0, sizeof kr);
  kr.key = w->key;
  kr.key_len = KEY_LEN;
  immu_client_entry e;
  memset(&e, 0, sizeof e);
  int rc = immu_client_verified_get(w->sdk, &kr, &e);
  if (rc != 0) {
    w_fail(w, "verified_get: %s", immu_client_last_error());
    return -1;
  }
  if (e.value_len != VAL_LEN || memcmp(e.value, w->expect, VAL_LEN) != 0) {
    w_fail(w, "verified_get: wrong value");
    rc = -1;
  }
  immu_client_entry_clear(&e);
  return rc;
}

typedef int (*op_fn)(worker *w);
static const op_fn kind_op[NKINDS] = {op_health,   op_set,        op_vset,
                                      op_vset_verify, op_get,     op_vget,
                                      op_vget_verify};

static void *worker_main(void *arg) {
  worker *w = arg;
  run_state *run = w->run;
  op_fn op = kind_op[run->kind];
  /* warm-up: one untimed call (first use of a connection or of an SDK
   * handle's trusted state); its failure counts as an error */
  (void)op(w);
  pthread_barrier_wait(&run->barrier);
  while (!atomic_load_explicit(&run->stop, memory_order_relaxed)) {
    uint64_t t0 = bench_now_ns();
    int rc = op(w);
    uint64_t t1 = bench_now_ns();
    if (atomic_load_explicit(&run->stop, memory_order_relaxed))
      break; /* finished after the window closed */
    if (rc != 0)
      continue;
    if (w->nlat == w->caplat) {
      w->caplat = w->caplat ? 2 * w->caplat : 4096;
      w->lat = bench_xrealloc(w->lat, w->caplat * sizeof *w->lat);
    }
    w->lat[w->nlat++] = (double)(t1 - t0) / 1e3;
    w->ops++;
  }
  return NULL;
}

/* ------------------------------------------------------------------ */
/* Event-driven raw cases                                              */
/* ------------------------------------------------------------------ */

/* Each worker is a chain of calls on its connection: the reply's callback
 * (on the connection's I/O thread) checks it and starts the next call.
 * Same closed loop as a blocking thread per worker (one call in flight per
 * worker), without a thread per worker: the load generator then costs one
 * thread wake-up per call instead of two, leaving the cores to the server
 * (--thread-clients restores the blocking threads). */

static void chain_end(worker *w) {
  run_state *run = w->run;
  pthread_mutex_lock(&run->mu);
  run->active--;
  pthread_cond_broadcast(&run->cv);
  pthread_mutex_unlock(&run->mu);
}

static void async_start(worker *w);

static void async_done(void *arg, int rc, const immu__grpc_result *res,
                       const uint8_t *resp, size_t rl) {
  worker *w = arg;
  run_state *run = w->run;
  const raw_op *r = &raw_ops[run->kind];
  uint64_t t1 = bench_now_ns();
  int ok = 0;
  if (rc != 0 || res->status != IMMU__GRPC_OK)
    w_fail(w, "%s: %s (gRPC %s: %s)", r->method,
           rc != 0 ? immu_strerror(rc) : "server error",
           immu__grpc_code_name(res->status),
           res->message ? res->message : "");
  else
    ok = r->check(w, resp, rl) == 0;
  if (!w->warm) {
    w->warm = 1;
    atomic_fetch_add(&run->warmed, 1);
  } else if (ok && atomic_load(&run->measuring) &&
             !atomic_load_explicit(&run->stop, memory_order_relaxed) &&
             w->t_start >= atomic_load(&run->t0)) {
    if (w->nlat == w->caplat) {
      w->caplat = w->caplat ? 2 * w->caplat : 4096;
      w->lat = bench_xrealloc(w->lat, w->caplat * sizeof *w->lat);
    }
    w->lat[w->nlat++] = (double)(t1 - w->t_start) / 1e3;
    w->ops++;
  }
  if (atomic_load(&run->stop)) {
    chain_end(w);
    return;
  }
  async_start(w);
}

static void async_start(worker *w) {
  const ctx *c = w->run->c;
  const raw_op *r = &raw_ops[w->run->kind];
  size_t n = r->build(w);
  immu__grpc_md md = {"authorization", c->bearer};
  immu__grpc_call_opts co;
  memset(&co, 0, sizeof co);
  if (c->bearer[0]) {
    co.md = &md;
    co.nmd = 1;
  }
  co.timeout_ms = CALL_TIMEOUT_MS;
  w->t_start = bench_now_ns();
  int rc = immu__grpc_client_unary_async(w->raw, r->path, &co, w->buf, n,
                                         async_done, w);
  if (rc != 0) {
    w_fail(w, "%s: %s", r->method, immu_strerror(rc));
    if (!w->warm) {
      w->warm = 1;
      atomic_fetch_add(&w->run->warmed, 1);
    }
    chain_end(w);
  }
}

/* ------------------------------------------------------------------ */
/* One case                                                            */
/* ------------------------------------------------------------------ */

static void run_case(ctx *c, int kind, unsigned nclients, int pass) {
  const grpc_opts *o = c->o;
  case_res *r = new_case(c);
  r->kind = kind;
  r->clients = nclients;
  r->workers = nclients * o->streams;
  r->pass = pass;
  bench_progress("grpc: %s, %u clients x %u streams%s ...", kind_name[kind],
                 nclients, o->streams,
                 kind == K_HEALTH ? (pass ? " (end)" : " (start)") : "");
  char err[256] = "";
  if (kind_sdk(kind) ? pool_sdk(c, nclients, err, sizeof err)
                     : pool_raw(c, nclients, err, sizeof err)) {
    snprintf(r->err, sizeof r->err, "connect: %s", err);
    r->errors = 1;
    bench_progress("grpc: %s", r->err);
    return;
  }
  run_state run;
  memset(&run, 0, sizeof run);
  run.c = c;
  run.kind = kind;
  atomic_init(&run.stop, 0);
  uint64_t start_tx = 0;
  if (!kind_sdk(kind) && kind != K_HEALTH && pool_raw(c, 1, err, sizeof err) == 0)
    start_tx = raw_current_tx(c, c->pool.raw[0]);
  run.start_tx = start_tx;

  unsigned nw = r->workers;
  int evented = !kind_sdk(kind) && !o->thread_clients;
  worker *ws = bench_xcalloc(nw, sizeof *ws);
  pthread_t *th = bench_xcalloc(nw, sizeof *th);
  pthread_barrier_init(&run.barrier, NULL, nw + 1);
  pthread_mutex_init(&run.mu, NULL);
  pthread_cond_init(&run.cv, NULL);
  atomic_init(&run.measuring, 0);
  atomic_init(&run.t0, 0);
  atomic_init(&run.warmed, 0);
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, (size_t)1 << 20);
  for (unsigned i = 0; i < nw; i++) {
    worker *w = &ws[i];
    w->run = &run;
    w->id = i;
    unsigned ci = i / o->streams;
    if (kind_sdk(kind))
      w->sdk = c->pool.sdk[ci];
    else
      w->raw = c->pool.raw[ci];
    bench_rng_seed(&w->rng, mix64(o->seed * 1000003u + (uint64_t)kind * 7919u +
                                  (uint64_t)nclients * 131u + i + 1 +
                                  (uint64_t)pass * 17u));
    w->state_tx = start_tx;
    if (evented)
      continue;
    if (pthread_create(&th[i], &attr, worker_main, w) != 0) {
      fprintf(stderr, "immubench grpc: pthread_create failed\n");
      abort();
    }
  }
  pthread_attr_destroy(&attr);

  if (evented) {
    /* warm-up: every chain's first call, untimed */
    run.active = nw;
    for (unsigned i = 0; i < nw; i++)
      async_start(&ws[i]);
    uint64_t wend = bench_now_ns() + (uint64_t)10e9;
    while (atomic_load(&run.warmed) < (int)nw && bench_now_ns() < wend)
      sleep_s(0.002);
  } else {
    pthread_barrier_wait(&run.barrier);
  }
  double cpu0 = c->srv_pid ? proc_cpu_s(c->srv_pid) : NAN;
  double me0 = self_cpu_s();
  mach_cpu mc0 = machine_cpu();
  uint64_t t0 = bench_now_ns();
  atomic_store(&run.t0, t0);
  atomic_store(&run.measuring, 1);
  sleep_s(o->duration);
  uint64_t t1 = bench_now_ns();
  atomic_store(&run.stop, 1);
  double cpu1 = c->srv_pid ? proc_cpu_s(c->srv_pid) : NAN;
  double me1 = self_cpu_s();
  mach_cpu mc1 = machine_cpu();
  if (c->srv_pid) {
    r->srv_rss = proc_status_kb(c->srv_pid, "VmRSS");
    r->srv_threads = proc_threads(c->srv_pid);
  }
  if (evented) {
    pthread_mutex_lock(&run.mu);
    while (run.active > 0)
      pthread_cond_wait(&run.cv, &run.mu);
    pthread_mutex_unlock(&run.mu);
  } else {
    for (unsigned i = 0; i < nw; i++)
      pthread_join(th[i], NULL);
  }
  pthread_barrier_destroy(&run.barrier);
  pthread_cond_destroy(&run.cv);
  pthread_mutex_destroy(&run.mu);

  r->ran = 1;
  r->elapsed = bench_elapsed_s(t0, t1);
  size_t total = 0;
  for (unsigned i = 0; i < nw; i++) {
    r->ops += ws[i].ops;
    r->errors += ws[i].errors;
    total += ws[i].nlat;
    if (!r->err[0] && ws[i].err[0])
      snprintf(r->err, sizeof r->err, "%s", ws[i].err);
  }
  r->ops_s = (double)r->ops / r->elapsed;
  r->srv_cpu_pct = (cpu1 - cpu0) / r->elapsed * 100.0;
  r->cli_cpu_pct = (me1 - me0) / r->elapsed * 100.0;
  if (mc0.busy >= 0 && mc1.busy >= 0) {
    double busy = (mc1.busy - mc0.busy) / r->elapsed * 100.0;
    r->other_cpu_pct = busy - r->cli_cpu_pct -
                       (isnan(r->srv_cpu_pct) ? 0 : r->srv_cpu_pct);
    if (r->other_cpu_pct < 0)
      r->other_cpu_pct = 0; /* tick granularity */
    r->steal_pct = (mc1.steal - mc0.steal) / r->elapsed * 100.0;
  }
  if (total > 0) {
    double *all = bench_xmalloc(total * sizeof *all);
    size_t k = 0;
    double sum = 0;
    for (unsigned i = 0; i < nw; i++) {
      memcpy(all + k, ws[i].lat, ws[i].nlat * sizeof *all);
      k += ws[i].nlat;
    }
    for (size_t i = 0; i < total; i++)
      sum += all[i];
    bench_sort_doubles(all, total);
    r->p50_us = bench_percentile_sorted(all, total, 50);
    r->p90_us = bench_percentile_sorted(all, total, 90);
    r->p99_us = bench_percentile_sorted(all, total, 99);
    r->max_us = all[total - 1];
    r->mean_us = sum / (double)total;
    free(all);
  }
  for (unsigned i = 0; i < nw; i++)
    free(ws[i].lat);
  free(ws);
  free(th);
  char a[32];
  bench_progress("grpc:   %s ops/s, p50 %.0f us, p99 %.0f us, %llu errors, "
                 "server cpu %.0f%%",
                 bench_fmt_num(r->ops_s, 0, a, sizeof a), r->p50_us, r->p99_us,
                 (unsigned long long)r->errors, r->srv_cpu_pct);
  if (r->err[0])
    bench_progress("grpc:   first error: %s", r->err);
}

/* ------------------------------------------------------------------ */
/* Preload                                                             */
/* ------------------------------------------------------------------ */

typedef struct load_arg {
  const ctx *c;
  immu__grpc_client *conn;
  uint64_t lo, hi; /* key indexes */
  uint64_t last_tx;
  int rc;
  char err[256];
} load_arg;

static void *load_thread(void *arg) {
  load_arg *a = arg;
  const grpc_opts *o = a->c->o;
  const uint64_t B = o->load_batch;
  Immudb__Schema__KeyValue *kv = bench_xcalloc(B, sizeof *kv);
  Immudb__Schema__KeyValue **kvp = bench_xcalloc(B, sizeof *kvp);
  uint8_t *keys = bench_xmalloc((size_t)B * KEY_LEN);
  uint8_t *vals = bench_xmalloc((size_t)B * VAL_LEN);
  size_t bufcap = (size_t)B * (KEY_LEN + VAL_LEN + 16) + 64;
  uint8_t *buf = bench_xmalloc(bufcap);
  for (uint64_t i = a->lo; i < a->hi && a->rc == 0; i += B) {
    size_t n = (size_t)((a->hi - i) < B ? a->hi - i : B);
    for (size_t j = 0; j < n; j++) {
      Immudb__Schema__KeyValue init = IMMUDB__SCHEMA__KEY_VALUE__INIT;
      kv[j] = init;
      data_key(o->seed, i + j, keys + j * KEY_LEN);
      data_value(i + j, vals + j * VAL_LEN);
      kv[j].key.data = keys + j * KEY_LEN;
      kv[j].key.len = KEY_LEN;
      kv[j].value.data = vals + j * VAL_LEN;
      kv[j].value.len = VAL_LEN;
      kvp[j] = &kv[j];
    }
    Immudb__Schema__SetRequest sr = IMMUDB__SCHEMA__SET_REQUEST__INIT;
    sr.n_kvs = n;
    sr.kvs = kvp;
    sr.nowait = 1;
    uint8_t *resp;
    size_t rl;
    if (raw_call(a->c, a->conn, "Set", &sr.base, buf, bufcap, LOAD_TIMEOUT_MS,
                 &resp, &rl, a->err, sizeof a->err) != 0) {
      a->rc = -1;
      break;
    }
    Immudb__Schema__TxHeader *h =
        immudb__schema__tx_header__unpack(NULL, rl, resp);
    if (!h || h->nentries != (int32_t)n) {
      snprintf(a->err, sizeof a->err, "Set (load): bad reply");
      a->rc = -1;
    } else if (h->id > a->last_tx) {
      a->last_tx = h->id;
    }
    if (h)
      immudb__schema__tx_header__free_unpacked(h, NULL);
    immu__free(resp);
  }
  free(kv);
  free(kvp);
  free(keys);
  free(vals);
  free(buf);
  return NULL;
}

static int preload(ctx *c) {
  const grpc_opts *o = c->o;
  char err[256] = "";
  const uint64_t B = o->load_batch;
  uint64_t nb = (o->keys + B - 1) / B;
  unsigned nconn = B >= 100 ? 8 : LOAD_CONNS_MAX;
  if (nb < nconn)
    nconn = (unsigned)nb;
  c->load_conns = nconn;
  if (pool_raw(c, nconn, err, sizeof err) != 0) {
    fprintf(stderr, "immubench grpc: load: connect: %s\n", err);
    return -1;
  }
  bench_progress("grpc: loading %llu keys (%d KVs per Set, %d connections)",
                 (unsigned long long)o->keys, (unsigned)B, nconn);
  load_arg args[LOAD_CONNS_MAX];
  pthread_t th[LOAD_CONNS_MAX];
  memset(args, 0, sizeof args);
  uint64_t t0 = bench_now_ns();
  for (unsigned i = 0; i < nconn; i++) {
    args[i].c = c;
    args[i].conn = c->pool.raw[i];
    uint64_t blo = nb * (uint64_t)i / nconn;
    uint64_t bhi = nb * (uint64_t)(i + 1) / nconn;
    args[i].lo = blo * B;
    args[i].hi = bhi * B < o->keys ? bhi * B : o->keys;
    if (pthread_create(&th[i], NULL, load_thread, &args[i]) != 0)
      abort();
  }
  int rc = 0;
  uint64_t last = 0;
  for (unsigned i = 0; i < nconn; i++) {
    pthread_join(th[i], NULL);
    if (args[i].rc != 0) {
      if (rc == 0)
        fprintf(stderr, "immubench grpc: load: %s\n", args[i].err);
      rc = -1;
    }
    if (args[i].last_tx > last)
      last = args[i].last_tx;
  }
  uint64_t t1 = bench_now_ns();
  c->load_s = bench_elapsed_s(t0, t1);
  c->load_last_tx = last;
  if (rc != 0)
    return -1;
  /* wait for the index: a Get with sinceTx = the last load tx */
  uint8_t key[KEY_LEN], want[VAL_LEN];
  data_key(o->seed, 0, key);
  data_value(0, want);
  Immudb__Schema__KeyRequest kr = IMMUDB__SCHEMA__KEY_REQUEST__INIT;
  kr.key.data = key;
  kr.key.len = KEY_LEN;
  kr.sincetx = last;
  uint8_t buf[256];
  uint8_t *resp;
  size_t rl;
  if (raw_call(c, c->pool.raw[0], "Get", &kr.base, buf, sizeof buf,
               LOAD_TIMEOUT_MS, &resp, &rl, err, sizeof err) != 0) {
    fprintf(stderr, "immubench grpc: load: index wait: %s\n", err);
    return -1;
  }
  Immudb__Schema__Entry *e = immudb__schema__entry__unpack(NULL, rl, resp);
  int ok = e && e->value.len == VAL_LEN &&
           memcmp(e->value.data, want, VAL_LEN) == 0;
  if (e)
    immudb__schema__entry__free_unpacked(e, NULL);
  immu__free(resp);
  if (!ok) {
    fprintf(stderr, "immubench grpc: load: key 0 reads back wrong\n");
    return -1;
  }
  c->load_index_s = bench_elapsed_s(t1, bench_now_ns());
  c->loaded = 1;
  bench_progress("grpc: loaded in %.2f s (%.0f KV/s), index +%.2f s",
                 c->load_s, (double)o->keys / c->load_s, c->load_index_s);
  return 0;
}

/* ------------------------------------------------------------------ */
/* Server process                                                      */
/* ------------------------------------------------------------------ */

static int free_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0)
    return -1;
  struct sockaddr_in a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t al = sizeof a;
  int port = -1;
  if (bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
      getsockname(fd, (struct sockaddr *)&a, &al) == 0)
    port = ntohs(a.sin_port);
  close(fd);
  return port;
}

static int is_exec(const char *p) { return access(p, X_OK) == 0; }

static int find_server(const grpc_opts *o, char *out, size_t cap) {
  char cand[4200];
  if (o->server) {
    if (!realpath(o->server, out) || !is_exec(out)) {
      fprintf(stderr, "immubench grpc: --server %s: not an executable\n",
              o->server);
      return -1;
    }
    (void)cap;
    return 0;
  }
  char self[4096];
  ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
  if (n > 0) {
    self[n < 4000 ? n : 4000] = '\0';
    char *slash = strrchr(self, '/');
    if (slash) {
      *slash = '\0';
      snprintf(cand, sizeof cand, "%s/immudb", self);
      if (is_exec(cand) && realpath(cand, out))
        return 0;
    }
  }
  if (is_exec("build/release/immudb") && realpath("build/release/immudb", out))
    return 0;
  fprintf(stderr, "immubench grpc: no immudb executable next to immubench "
                  "nor at build/release/immudb; use --server PATH\n");
  return -1;
}

static void print_log_tail(const char *path) {
  FILE *f = fopen(path, "r");
  if (!f)
    return;
  char *lines[20] = {0};
  char line[1024];
  size_t n = 0;
  while (fgets(line, sizeof line, f)) {
    free(lines[n % 20]);
    lines[n % 20] = bench_xstrdup(line);
    n++;
  }
  fclose(f);
  size_t start = n > 20 ? n - 20 : 0;
  fprintf(stderr, "immubench grpc: last lines of %s:\n", path);
  for (size_t i = start; i < n; i++)
    fprintf(stderr, "  %s", lines[i % 20]);
  for (int i = 0; i < 20; i++)
    free(lines[i]);
}

static int start_server(ctx *c) {
  const grpc_opts *o = c->o;
  if (find_server(o, c->server_path, sizeof c->server_path) != 0)
    return -1;
  int port = free_port();
  if (port <= 0) {
    fprintf(stderr, "immubench grpc: no free port\n");
    return -1;
  }
  int mport = o->metrics ? free_port() : 0;
  snprintf(c->host, sizeof c->host, "127.0.0.1");
  c->port = port;
  char *datadir = bench_xasprintf("%s/data", c->base);
  c->logpath = bench_xasprintf("%s/immudb.log", c->base);
  char portbuf[16], mportbuf[48];
  snprintf(portbuf, sizeof portbuf, "%d", port);
  snprintf(mportbuf, sizeof mportbuf, "--metrics-server-port=%d", mport);
  const char *argv[64];
  size_t na = 0;
  argv[na++] = c->server_path;
  argv[na++] = "--dir";
  argv[na++] = datadir;
  argv[na++] = "--address";
  argv[na++] = "127.0.0.1";
  argv[na++] = "--port";
  argv[na++] = portbuf;
  argv[na++] = "--admin-password";
  argv[na++] = o->password;
  argv[na++] = o->async ? "--synced=false" : "--synced=true";
  argv[na++] = o->metrics ? "--metrics-server=true" : "--metrics-server=false";
  if (o->metrics)
    argv[na++] = mportbuf;
  argv[na++] =
      o->checker ? "--consistency-check=true" : "--consistency-check=false";
  argv[na++] = "--logfile";
  argv[na++] = c->logpath;
  for (size_t i = 0; i < o->nextra && na < 62; i++)
    argv[na++] = o->extra_args[i];
  argv[na] = NULL;
  {
    char *cl = bench_command_line(argv[0], (int)na - 1, (char **)(argv + 1));
    bench_progress("grpc: starting %s", cl);
    free(cl);
  }
  /* environment without IMMUDB_* (they would override defaults) */
  size_t ne = 0;
  for (char **e = environ; *e; e++)
    ne++;
  char **envp = bench_xcalloc(ne + 1, sizeof *envp);
  size_t k = 0;
  for (char **e = environ; *e; e++)
    if (strncmp(*e, "IMMUDB_", 7) != 0)
      envp[k++] = *e;
  envp[k] = NULL;

  uint64_t t0 = bench_now_ns();
  pid_t pid = fork();
  if (pid < 0) {
    perror("immubench grpc: fork");
    free(envp);
    free(datadir);
    return -1;
  }
  if (pid == 0) {
    /* child: its own process group (a ^C at the terminal reaches only
     * immubench, which then stops the server with SIGTERM), SIGTERM when
     * immubench dies, cwd = our directory (no ./configs/immudb.toml) */
    setpgid(0, 0);
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() == 1)
      _exit(125);
    if (chdir(c->base) != 0)
      _exit(126);
    int nul = open("/dev/null", O_RDWR);
    if (nul >= 0) {
      dup2(nul, 0);
      dup2(nul, 1);
      if (nul > 2)
        close(nul);
    }
    execve(argv[0], (char *const *)argv, envp);
    _exit(127);
  }
  free(envp);
  free(datadir);
  c->child = pid;
  c->srv_pid = pid;
  /* wait until Health answers */
  char err[256] = "";
  for (;;) {
    int st;
    if (waitpid(pid, &st, WNOHANG) == pid) {
      fprintf(stderr, "immubench grpc: the server exited during start-up "
                      "(status %d)\n",
              WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
      print_log_tail(c->logpath);
      c->child = 0;
      c->srv_pid = 0;
      return -1;
    }
    err[0] = '\0';
    if (raw_health(c, err, sizeof err) == 0)
      break;
    if (bench_elapsed_s(t0, bench_now_ns()) > 60) {
      fprintf(stderr, "immubench grpc: the server did not answer within "
                      "60 s: %s\n",
              err);
      print_log_tail(c->logpath);
      return -1;
    }
    sleep_s(0.05);
  }
  c->start_s = bench_elapsed_s(t0, bench_now_ns());
  bench_progress("grpc: server pid %ld up on 127.0.0.1:%d in %.2f s (%s)",
                 (long)pid, port, c->start_s, c->server_version);
  return 0;
}

static void stop_server(ctx *c) {
  if (c->child <= 0)
    return;
  c->srv_hwm = proc_status_kb(c->child, "VmHWM");
  uint64_t t0 = bench_now_ns();
  kill(c->child, SIGTERM);
  int st = 0;
  for (;;) {
    pid_t w = waitpid(c->child, &st, WNOHANG);
    if (w == c->child)
      break;
    if (w < 0 && errno != EINTR) {
      st = -1;
      break;
    }
    if (bench_elapsed_s(t0, bench_now_ns()) > 60) {
      fprintf(stderr, "immubench grpc: the server ignores SIGTERM; "
                      "SIGKILL\n");
      kill(c->child, SIGKILL);
      waitpid(c->child, &st, 0);
      break;
    }
    sleep_s(0.02);
  }
  c->stop_s = bench_elapsed_s(t0, bench_now_ns());
  c->stop_status = st < 0 ? -1
                   : WIFEXITED(st) ? WEXITSTATUS(st)
                                   : 128 + WTERMSIG(st);
  bench_progress("grpc: server stopped in %.2f s, exit status %d", c->stop_s,
                 c->stop_status);
  if (c->stop_status != 0 && c->logpath)
    print_log_tail(c->logpath);
  c->child = 0;
}

/* ------------------------------------------------------------------ */
/* Output                                                              */
/* ------------------------------------------------------------------ */

static const char *fmt_lat(double us, char *buf, size_t cap) {
  if (isnan(us))
    snprintf(buf, cap, "n/a");
  else if (us >= 1000)
    snprintf(buf, cap, "%.2f ms", us / 1000);
  else
    snprintf(buf, cap, "%.0f us", us);
  return buf;
}

static const char *fmt_x(double v, int prec, char *buf, size_t cap) {
  if (isnan(v) || isinf(v))
    snprintf(buf, cap, "n/a");
  else
    snprintf(buf, cap, "%.*f", prec, v);
  return buf;
}

static const char *fmt_mb(double bytes, char *buf, size_t cap) {
  if (isnan(bytes))
    snprintf(buf, cap, "n/a");
  else
    snprintf(buf, cap, "%.0f MB", bytes / 1048576.0);
  return buf;
}

/* Health ops/s at |clients| (mean of the start and end passes), NAN if
 * not measured. */
static double health_at(const ctx *c, unsigned clients) {
  double s = 0;
  int n = 0;
  for (size_t i = 0; i < c->nrs; i++) {
    const case_res *r = &c->rs[i];
    if (r->kind == K_HEALTH && r->clients == clients && r->ran &&
        r->errors == 0) {
      s += r->ops_s;
      n++;
    }
  }
  return n ? s / n : NAN;
}

static double health_ceiling(const ctx *c, unsigned *at) {
  double best = NAN;
  for (size_t i = 0; i < c->o->nclients; i++) {
    double h = health_at(c, c->o->clients[i]);
    if (!isnan(h) && (isnan(best) || h > best)) {
      best = h;
      if (at)
        *at = c->o->clients[i];
    }
  }
  return best;
}

static void compute_ratios(ctx *c) {
  double ceil = health_ceiling(c, NULL);
  for (size_t i = 0; i < c->nrs; i++) {
    case_res *r = &c->rs[i];
    if (!r->ran)
      continue;
    double h = health_at(c, r->clients);
    r->vs_health = h > 0 ? r->ops_s / h : NAN;
    r->vs_ceiling = ceil > 0 ? r->ops_s / ceil : NAN;
  }
}

static const case_res *find_case(const ctx *c, int kind, unsigned clients) {
  for (size_t i = 0; i < c->nrs; i++)
    if (c->rs[i].kind == kind && c->rs[i].clients == clients && c->rs[i].ran)
      return &c->rs[i];
  return NULL;
}

static const case_res *best_case(const ctx *c, int kind) {
  const case_res *b = NULL;
  for (size_t i = 0; i < c->nrs; i++)
    if (c->rs[i].kind == kind && c->rs[i].ran &&
        (!b || c->rs[i].ops_s > b->ops_s))
      b = &c->rs[i];
  return b;
}

typedef struct target {
  char what[96];
  char unit[16];
  double goal;
  double got; /* NAN when not measured */
  char from[64];
} target;

/* Fills |t| with one target row; |res| NULL means not measured. */
static void set_target(target *t, const char *what, const char *unit,
                       double goal, const case_res *res, const char *from) {
  snprintf(t->what, sizeof t->what, "%s", what);
  snprintf(t->unit, sizeof t->unit, "%s", unit);
  t->goal = goal;
  t->got = res ? res->ops_s : NAN;
  snprintf(t->from, sizeof t->from, "%s", from);
}

static size_t compute_targets(const ctx *c, target *t) {
  const case_res *s = find_case(c, K_SET, 128);
  const case_res *g = best_case(c, K_GET);
  double half_set = s ? s->ops_s / 2 : NAN;
  char what[96], from[64];

  snprintf(what, sizeof what, "Set, 128 clients, %s",
           c->o->async ? "async" : "synced");
  set_target(&t[0], what, "tx/s", 50000, s, "set, 128 clients");
  set_target(&t[1], "VerifiableSet (server side) >= 1/2 Set, 128 clients",
             "tx/s", half_set, find_case(c, K_VSET, 128),
             "vset, 128 clients");
  set_target(&t[2], "VerifiableSet + client verify >= 1/2 Set, 128 clients",
             "tx/s", half_set, find_case(c, K_VSET_VERIFY, 128),
             "vset_verify, 128 clients");
  snprintf(from, sizeof from, "get, %u clients", g ? g->clients : 0);
  set_target(&t[3], "Get (best client count)", "Get/s", 100000, g, from);
  return 4;
}

static void print_tables(const ctx *c, const bench_machine *m,
                         const char *cmdline) {
  FILE *f = stdout;
  const grpc_opts *o = c->o;
  char a[64], b[64], d[64], e[64], g[64], h[64], k[64], l[64], p[64], q[64];
  char o2[64], su[64], cu[64], st[64];
  fprintf(f, "immubench grpc  (%s)\n", cmdline);
  fprintf(f, "cpu: %s, %ld cores; date: %s\n",
          m->cpu_model[0] ? m->cpu_model : "unknown", m->cores, m->date);
  if (c->child || c->server_path[0])
    fprintf(f,
            "server: %s (version %s), pid %ld, 127.0.0.1:%d, h2c; data %s "
            "(%s); %s; metrics %s; consistency checker %s\n",
            c->server_path, c->server_version, c->srv_pid, c->port, c->base,
            c->fs_type,
            o->async ? "async (--synced=false)"
                     : "synced (--synced=true: fdatasync per commit group)",
            o->metrics ? "on" : "off", o->checker ? "on" : "off");
  else
    fprintf(f, "server: %s:%d (external, version %s, pid %s)\n", c->host,
            c->port, c->server_version,
            c->srv_pid ? (snprintf(a, sizeof a, "%ld", c->srv_pid), a)
                       : "unknown");
  char lbuf[64];
  if (o->client_loops > 0)
    snprintf(lbuf, sizeof lbuf, "raw connections on %u shared client I/O "
             "thread(s)", o->client_loops);
  else
    snprintf(lbuf, sizeof lbuf, "an I/O thread per connection");
  fprintf(f,
          "load: %.1f s per case; %u stream(s) per connection; one call in "
          "flight per worker (%s; %s); 32 B keys, 128 B values; Set "
          "noWait=%s\n",
          o->duration, o->streams,
          o->thread_clients ? "a thread per worker"
                            : "raw cases event-driven, no thread per worker",
          lbuf,
          o->nowait ? "true" : "false");
  if (c->loaded)
    fprintf(f,
            "reads: %llu keys preloaded (%d KVs per tx) in %.2f s, index "
            "+%.2f s\n",
            (unsigned long long)o->keys, (int)o->load_batch, c->load_s,
            c->load_index_s);
  fprintf(f, "load average (1/5/15 min): %.2f %.2f %.2f at the start, "
             "%.2f %.2f %.2f at the end\n\n",
          c->load_start[0], c->load_start[1], c->load_start[2], c->load_end[0],
          c->load_end[1], c->load_end[2]);

  static const char *const hd[] = {
      "case",    "clients", "workers", "ops/s",   "x health", "x ceiling",
      "p50",     "p90",     "p99",     "max",     "errors",   "srv cpu",
      "srv us/op", "srv rss", "cli cpu", "cli us/op", "other cpu", "steal"};
  bench_table *t = bench_table_new(18, hd, "lrrrrrrrrrrrrrrrrr");
  for (int kind = 0; kind < NKINDS; kind++) {
    for (size_t i = 0; i < c->nrs; i++) {
      const case_res *r = &c->rs[i];
      if (r->kind != kind)
        continue;
      char lab[96];
      if (kind == K_HEALTH)
        snprintf(lab, sizeof lab, "%s (%s)", kind_label[kind],
                 r->pass ? "end" : "start");
      else
        snprintf(lab, sizeof lab, "%s", kind_label[kind]);
      char errs[32];
      snprintf(errs, sizeof errs, "%llu", (unsigned long long)r->errors);
      bench_table_addf(
          t,
          "%s\t%u\t%u\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t"
          "%s",
          lab,
          r->clients, r->workers,
          r->ran ? bench_fmt_num(r->ops_s, 0, a, sizeof a) : "-",
          fmt_x(r->vs_health, 3, b, sizeof b),
          fmt_x(r->vs_ceiling, 3, d, sizeof d),
          fmt_lat(r->p50_us, e, sizeof e), fmt_lat(r->p90_us, g, sizeof g),
          fmt_lat(r->p99_us, h, sizeof h), fmt_lat(r->max_us, k, sizeof k),
          errs,
          isnan(r->srv_cpu_pct) ? "n/a"
                                : (snprintf(l, sizeof l, "%.0f%%",
                                            r->srv_cpu_pct),
                                   l),
          fmt_x(r->srv_cpu_pct * 1e4 / r->ops_s, 1, su, sizeof su),
          fmt_mb(r->srv_rss, p, sizeof p),
          isnan(r->cli_cpu_pct) ? "n/a"
                                : (snprintf(q, sizeof q, "%.0f%%",
                                            r->cli_cpu_pct),
                                   q),
          fmt_x(r->cli_cpu_pct * 1e4 / r->ops_s, 1, cu, sizeof cu),
          isnan(r->other_cpu_pct) ? "n/a"
                                  : (snprintf(o2, sizeof o2, "%.0f%%",
                                              r->other_cpu_pct),
                                     o2),
          isnan(r->steal_pct) ? "n/a"
                              : (snprintf(st, sizeof st, "%.0f%%",
                                          r->steal_pct),
                                 st));
    }
  }
  bench_table_print(t, f);
  bench_table_free(t);
  unsigned at = 0;
  double ceil = health_ceiling(c, &at);
  fprintf(f,
          "x health: ops/s / Health ops/s at the same client count (mean of "
          "the start and end passes);\n"
          "x ceiling: ops/s / the best Health rate (%s/s at %u clients), the "
          "transport's own ceiling.\n"
          "srv cpu: server CPU time (user+sys, all threads) / window, %% of "
          "one core (%ld cores); cli cpu: the same for immubench;\n"
          "srv/cli us/op: CPU microseconds per completed call (CPU time / "
          "ops): less\n"
          "sensitive to other load on the machine than ops/s;\n"
          "other cpu: the rest of the machine's busy time (/proc/stat) in "
          "the window: other processes competing for the cores;\n"
          "steal: time the hypervisor ran other guests on our vCPUs "
          "(/proc/stat), %% of one core.\n"
          "latency: one call, send to reply, merged over all workers.\n",
          bench_fmt_num(ceil, 0, a, sizeof a), at, m->cores);
  for (size_t i = 0; i < c->nrs; i++)
    if (c->rs[i].err[0])
      fprintf(f, "error in %s, %u clients: %s\n", kind_name[c->rs[i].kind],
              c->rs[i].clients, c->rs[i].err);
  fputc('\n', f);

  target tg[4];
  size_t nt = compute_targets(c, tg);
  static const char *const th[] = {"target", "goal", "measured", "met"};
  t = bench_table_new(4, th, "lrrl");
  for (size_t i = 0; i < nt; i++) {
    char gbuf[64], mbuf[96];
    if (isnan(tg[i].goal))
      snprintf(gbuf, sizeof gbuf, "n/a");
    else
      snprintf(gbuf, sizeof gbuf, ">= %s %s",
               bench_fmt_num(tg[i].goal, 0, a, sizeof a), tg[i].unit);
    if (isnan(tg[i].got))
      snprintf(mbuf, sizeof mbuf, "not measured");
    else
      snprintf(mbuf, sizeof mbuf, "%s %s (%s)",
               bench_fmt_num(tg[i].got, 0, b, sizeof b), tg[i].unit,
               tg[i].from);
    bench_table_addf(t, "%s\t%s\t%s\t%s", tg[i].what, gbuf, mbuf,
                     isnan(tg[i].got) || isnan(tg[i].goal)
                         ? "-"
                         : (tg[i].got >= tg[i].goal ? "yes" : "NO"));
  }
  bench_table_print(t, f);
  bench_table_free(t);
  if (c->child || c->stop_s > 0)
    fprintf(f,
            "\nserver: start-up %.2f s; peak RSS %s; stopped by SIGTERM in "
            "%.2f s, exit status %d; %u SDK logins took %.2f s\n",
            c->start_s, fmt_mb(c->srv_hwm, a, sizeof a), c->stop_s,
            c->stop_status, c->nlogins, c->login_s);
  fputc('\n', f);
}

static void json_num_or_null(bench_json *j, const char *key, double v) {
  if (isnan(v) || isinf(v))
    bench_json_null(j, key);
  else
    bench_json_num(j, key, v);
}

static void write_json(FILE *f, const ctx *c, const bench_machine *m,
                       const char *cmdline) {
  const grpc_opts *o = c->o;
  bench_json j;
  bench_json_init(&j, f);
  bench_json_begin_object(&j, NULL);
  bench_json_str(&j, "benchmark", "grpc");
  bench_json_int(&j, "schema", 1);
  bench_json_str(&j, "command", cmdline);
  bench_machine_json(&j, "machine", m);
  bench_json_begin_object(&j, "server");
  bench_json_bool(&j, "started_by_benchmark", o->address == NULL);
  bench_json_str(&j, "path", c->server_path[0] ? c->server_path : NULL);
  bench_json_str(&j, "version", c->server_version);
  bench_json_str(&j, "host", c->host);
  bench_json_int(&j, "port", c->port);
  if (c->srv_pid)
    bench_json_int(&j, "pid", c->srv_pid);
  else
    bench_json_null(&j, "pid");
  bench_json_str(&j, "transport", "h2c (cleartext HTTP/2)");
  bench_json_str(&j, "durability",
                 o->address ? NULL : (o->async ? "async" : "synced"));
  bench_json_str(&j, "durability_detail",
                 o->address ? NULL
                 : o->async ? "--synced=false"
                            : "--synced=true (fdatasync per commit group)");
  bench_json_bool(&j, "metrics_server", o->metrics);
  bench_json_bool(&j, "consistency_checker", o->checker);
  bench_json_begin_array(&j, "extra_args");
  for (size_t i = 0; i < o->nextra; i++)
    bench_json_str(&j, NULL, o->extra_args[i]);
  bench_json_end_array(&j);
  bench_json_str(&j, "data_dir", c->base);
  bench_json_str(&j, "fs_type", c->fs_type);
  json_num_or_null(&j, "startup_s", c->start_s > 0 ? c->start_s : NAN);
  json_num_or_null(&j, "stop_s", c->stop_s > 0 ? c->stop_s : NAN);
  if (c->stop_s > 0)
    bench_json_int(&j, "exit_status", c->stop_status);
  json_num_or_null(&j, "peak_rss_bytes", c->srv_hwm);
  bench_json_end_object(&j);

  bench_json_begin_object(&j, "config");
  bench_json_num(&j, "duration_s", o->duration);
  bench_json_begin_array(&j, "clients");
  for (size_t i = 0; i < o->nclients; i++)
    bench_json_uint(&j, NULL, o->clients[i]);
  bench_json_end_array(&j);
  bench_json_uint(&j, "streams_per_conn", o->streams);
  bench_json_uint(&j, "client_loops", o->client_loops);
  bench_json_uint(&j, "keys", o->keys);
  bench_json_uint(&j, "key_bytes", KEY_LEN);
  bench_json_uint(&j, "value_bytes", VAL_LEN);
  bench_json_bool(&j, "set_nowait", o->nowait);
  bench_json_bool(&j, "quick", o->quick);
  bench_json_str(&j, "cases", o->cases);
  bench_json_uint(&j, "seed", o->seed);
  bench_json_end_object(&j);

  bench_json_begin_object(&j, "loadavg");
  bench_json_begin_array(&j, "start");
  for (int i = 0; i < 3; i++)
    json_num_or_null(&j, NULL, c->load_start[i]);
  bench_json_end_array(&j);
  bench_json_begin_array(&j, "end");
  for (int i = 0; i < 3; i++)
    json_num_or_null(&j, NULL, c->load_end[i]);
  bench_json_end_array(&j);
  bench_json_end_object(&j);

  if (c->loaded) {
    bench_json_begin_object(&j, "preload");
    bench_json_uint(&j, "keys", o->keys);
    bench_json_uint(&j, "kvs_per_tx", o->load_batch);
    bench_json_uint(&j, "connections", c->load_conns);
    bench_json_num(&j, "load_s", c->load_s);
    bench_json_num(&j, "index_catch_up_s", c->load_index_s);
    bench_json_uint(&j, "last_tx", c->load_last_tx);
    bench_json_end_object(&j);
  } else {
    bench_json_null(&j, "preload");
  }
  unsigned at = 0;
  double ceil = health_ceiling(c, &at);
  bench_json_begin_object(&j, "transport_ceiling");
  bench_json_str(&j, "what", "Health RPC ops/s, best client count");
  json_num_or_null(&j, "ops_per_s", ceil);
  bench_json_uint(&j, "clients", at);
  bench_json_end_object(&j);

  bench_json_begin_array(&j, "cases");
  for (size_t i = 0; i < c->nrs; i++) {
    const case_res *r = &c->rs[i];
    bench_json_begin_object(&j, NULL);
    bench_json_str(&j, "name", kind_name[r->kind]);
    bench_json_str(&j, "label", kind_label[r->kind]);
    if (r->kind == K_HEALTH)
      bench_json_str(&j, "pass", r->pass ? "end" : "start");
    bench_json_bool(&j, "client_verification", kind_sdk(r->kind));
    bench_json_uint(&j, "clients", r->clients);
    bench_json_uint(&j, "workers", r->workers);
    bench_json_bool(&j, "ran", r->ran);
    bench_json_uint(&j, "errors", r->errors);
    bench_json_str(&j, "first_error", r->err[0] ? r->err : NULL);
    if (r->ran) {
      bench_json_num(&j, "elapsed_s", r->elapsed);
      bench_json_uint(&j, "ops", r->ops);
      bench_json_num(&j, "ops_per_s", r->ops_s);
      json_num_or_null(&j, "lat_p50_us", r->p50_us);
      json_num_or_null(&j, "lat_p90_us", r->p90_us);
      json_num_or_null(&j, "lat_p99_us", r->p99_us);
      json_num_or_null(&j, "lat_max_us", r->max_us);
      json_num_or_null(&j, "lat_mean_us", r->mean_us);
      json_num_or_null(&j, "ratio_to_health_same_clients", r->vs_health);
      json_num_or_null(&j, "ratio_to_transport_ceiling", r->vs_ceiling);
      json_num_or_null(&j, "server_cpu_pct_of_one_core", r->srv_cpu_pct);
      json_num_or_null(&j, "server_cpu_us_per_op",
                       r->srv_cpu_pct * 1e4 / r->ops_s);
      json_num_or_null(&j, "server_rss_bytes", r->srv_rss);
      json_num_or_null(&j, "server_threads", r->srv_threads);
      json_num_or_null(&j, "client_cpu_pct_of_one_core", r->cli_cpu_pct);
      json_num_or_null(&j, "client_cpu_us_per_op",
                       r->cli_cpu_pct * 1e4 / r->ops_s);
      json_num_or_null(&j, "other_processes_cpu_pct_of_one_core",
                       r->other_cpu_pct);
      json_num_or_null(&j, "steal_pct_of_one_core", r->steal_pct);
    }
    bench_json_end_object(&j);
  }
  bench_json_end_array(&j);

  target tg[4];
  size_t nt = compute_targets(c, tg);
  bench_json_begin_array(&j, "targets");
  for (size_t i = 0; i < nt; i++) {
    bench_json_begin_object(&j, NULL);
    bench_json_str(&j, "target", tg[i].what);
    bench_json_str(&j, "unit", tg[i].unit);
    json_num_or_null(&j, "goal", tg[i].goal);
    json_num_or_null(&j, "measured", tg[i].got);
    bench_json_str(&j, "case", tg[i].from);
    if (isnan(tg[i].got) || isnan(tg[i].goal))
      bench_json_null(&j, "met");
    else
      bench_json_bool(&j, "met", tg[i].got >= tg[i].goal);
    bench_json_end_object(&j);
  }
  bench_json_end_array(&j);
  bench_json_end_object(&j);
  bench_json_finish(&j);
}

/* ------------------------------------------------------------------ */
/* Entry point                                                         */
/* ------------------------------------------------------------------ */

static volatile sig_atomic_t g_interrupted;
static void on_sigint(int sig) {
  (void)sig;
  g_interrupted = 1;
}

int bench_grpc_main(int argc, char **argv) {
  grpc_opts o;
  int prc = parse_opts(argc, argv, &o);
  if (prc > 0)
    return 0;
  if (prc < 0) {
    grpc_usage(stderr);
    return 2;
  }
  /* the transport writes with write(2): a closed socket must not kill us */
  signal(SIGPIPE, SIG_IGN);
  char *cmdline = bench_command_line("immubench", argc, argv);
  int json_stdout = o.json && strcmp(o.json, "-") == 0;
  FILE *jf = NULL;
  if (o.json && !json_stdout) {
    jf = fopen(o.json, "w");
    if (!jf) {
      perror(o.json);
      free(cmdline);
      return 1;
    }
  }

  ctx c;
  memset(&c, 0, sizeof c);
  c.o = &o;
  c.stop_status = -1;
  c.srv_hwm = NAN;
  int rc = 1, created_dir = 0;
  for (unsigned i = 0; i < o.client_loops; i++) {
    if (immu__grpc_loop_new(&c.loops[i]) != 0) {
      fprintf(stderr, "immubench grpc: cannot start a client I/O loop\n");
      goto out;
    }
    c.nloops++;
  }

  if (o.address) {
    if (parse_hostport(o.address, c.host, sizeof c.host, &c.port) != 0) {
      fprintf(stderr, "immubench grpc: bad --address '%s'\n", o.address);
      goto out;
    }
    c.srv_pid = o.server_pid;
    snprintf(c.fs_type, sizeof c.fs_type, "unknown");
    char err[256] = "";
    if (raw_health(&c, err, sizeof err) != 0) {
      fprintf(stderr, "immubench grpc: %s: %s\n", o.address, err);
      goto out;
    }
  } else {
    if (mkdir(o.dir, 0755) == 0)
      created_dir = 1;
    else if (errno != EEXIST) {
      fprintf(stderr, "immubench grpc: mkdir %s: %s\n", o.dir,
              strerror(errno));
      goto out;
    }
    char *absdir = realpath(o.dir, NULL);
    c.base = bench_xasprintf("%s/grpc-%ld", absdir ? absdir : o.dir,
                             (long)getpid());
    free(absdir);
    if (mkdir(c.base, 0755) != 0) {
      fprintf(stderr, "immubench grpc: mkdir %s: %s\n", c.base,
              strerror(errno));
      goto out;
    }
    struct statfs sfs;
    if (statfs(c.base, &sfs) == 0) {
      snprintf(c.fs_type, sizeof c.fs_type, "%s",
               fs_name((unsigned long)sfs.f_type));
      if ((unsigned long)sfs.f_type == 0x01021994UL)
        fprintf(stderr, "immubench grpc: WARNING: %s is on tmpfs; fsync "
                        "costs nothing there. Use --dir on a real disk.\n",
                c.base);
    } else {
      snprintf(c.fs_type, sizeof c.fs_type, "unknown");
    }
    signal(SIGINT, on_sigint);
    if (start_server(&c) != 0)
      goto out;
  }
  {
    char err[256] = "";
    if (raw_login(&c, err, sizeof err) != 0) {
      fprintf(stderr, "immubench grpc: %s\n", err);
      goto out;
    }
  }

  bench_machine m;
  bench_machine_collect(&m);
  uint64_t start = bench_now_ns();
  read_loadavg(c.load_start);

  /* the peer first: Health at every client count */
  if (selected(&o, K_HEALTH))
    for (size_t i = 0; i < o.nclients && !g_interrupted; i++)
      run_case(&c, K_HEALTH, o.clients[i], 0);
  static const int writes[] = {K_SET, K_VSET, K_VSET_VERIFY};
  for (size_t w = 0; w < 3; w++)
    if (selected(&o, writes[w]))
      for (size_t i = 0; i < o.nclients && !g_interrupted; i++)
        run_case(&c, writes[w], o.clients[i], 0);
  int any_read = 0;
  for (int k = 0; k < NKINDS; k++)
    if (kind_read(k) && selected(&o, k))
      any_read = 1;
  if (any_read && !g_interrupted) {
    if (preload(&c) != 0)
      goto done;
    static const int reads[] = {K_GET, K_VGET, K_VGET_VERIFY};
    for (size_t w = 0; w < 3; w++)
      if (selected(&o, reads[w]))
        for (size_t i = 0; i < o.nclients && !g_interrupted; i++)
          run_case(&c, reads[w], o.clients[i], 0);
  }
  /* the peer again, after our cases */
  if (selected(&o, K_HEALTH))
    for (size_t i = 0; i < o.nclients && !g_interrupted; i++)
      run_case(&c, K_HEALTH, o.clients[i], 1);
  rc = 0;
done:
  read_loadavg(c.load_end);
  bench_progress("grpc: done in %.1f s", bench_elapsed_s(start, bench_now_ns()));
  pool_free(&c.pool);
  stop_server(&c);
  if (g_interrupted) {
    fprintf(stderr, "immubench grpc: interrupted\n");
    rc = 1;
  }
  compute_ratios(&c);
  if (!json_stdout)
    print_tables(&c, &m, cmdline);
  else
    write_json(stdout, &c, &m, cmdline);
  if (jf) {
    write_json(jf, &c, &m, cmdline);
    if (fclose(jf) != 0) {
      perror(o.json);
      rc = 1;
    }
    jf = NULL;
  }
  for (size_t i = 0; i < c.nrs; i++)
    if (c.rs[i].errors > 0 || !c.rs[i].ran)
      rc = 1;
  if (!o.address && c.stop_status != 0)
    rc = 1;

out:
  pool_free(&c.pool);
  for (unsigned i = 0; i < c.nloops; i++)
    immu__grpc_loop_free(c.loops[i]);
  if (c.child > 0)
    stop_server(&c);
  if (jf)
    fclose(jf);
  if (c.base && !o.keep) {
    rm_rf(c.base);
    if (created_dir)
      rmdir(o.dir);
  } else if (c.base) {
    fprintf(stderr, "immubench grpc: kept %s\n", c.base);
  }
  free(c.base);
  free(c.logpath);
  free(c.rs);
  free(cmdline);
  return rc;
}
