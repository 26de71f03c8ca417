/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The immudb executable: the "process" layer of server/server.h.
 *
 *   1. settings (config.c): flags > IMMUDB_* environment > immudb.toml >
 *      defaults; `immudb version`, `immudb --help`;
 *   2. safety checks: immu_server_new refuses the default admin password
 *      off loopback (main adds how to fix it); --auth=false off loopback is
 *      only useful with --devmode (warned);
 *   3. TLS context, logger, optional daemonising (-d), pidfile;
 *   4. the service (immu_server_new), the gRPC transport, the metrics and
 *      health HTTP server (metrics.c) and the consistency checker
 *      (checker.c);
 *   5. signals: SIGTERM/SIGINT stop gracefully (a second one stops at
 *      once), SIGHUP reopens the log file, SIGUSR2 starts a consistency
 *      pass, SIGPIPE is ignored. Signals are blocked in every thread and
 *      taken synchronously by one thread with sigwait(), so nothing runs
 *      in signal-handler context;
 *   6. shutdown in reverse order: transport stops, checker and metrics
 *      stop, the service is freed (databases flushed and closed), the
 *      pidfile is removed; exit status 0.
 *
 * Exit status: 0 after a clean stop (and for help and version), 1 for bad
 * settings (as immudb) or when the server cannot start or fails. Fatal
 * start-up errors go to the log and, when the log is a file and the
 * process is in the foreground, to stderr too.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#ifdef IMMU_WITH_JEMALLOC
#include <jemalloc/jemalloc.h>
#endif
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/thread.h>
#include <openssl/ssl.h>

#include "core/mem.h"
#include "immudb/db.h"
#include "immudb/err.h"
#include "server/checker.h"
#include "server/config.h"
#include "server/metrics.h"
#include "server/server.h"

#define COMP "server"

/* ------------------------------------------------------------------ */
/* warnings gathered while parsing, logged once the logger is set up   */
/* ------------------------------------------------------------------ */

typedef struct warn_list {
  char *v[64];
  size_t n;
} warn_list;

static void collect_warn(void *arg, const char *msg) {
  warn_list *w = arg;
  if (w->n < sizeof(w->v) / sizeof(w->v[0]))
    w->v[w->n++] = immu__strndup(msg, strlen(msg));
}

static void flush_warnings(warn_list *w) {
  for (size_t i = 0; i < w->n; i++) {
    if (w->v[i] != NULL)
      immu_log(IMMU_LOG_WARN, COMP, "%s", w->v[i]);
    immu__free(w->v[i]);
  }
  w->n = 0;
}

/* ------------------------------------------------------------------ */
/* daemonising                                                         */
/* ------------------------------------------------------------------ */

/* Write end of the pipe the background child reports readiness on; -1 in
 * the foreground. */
static int g_ready_fd = -1;

/* Forks into the background (double fork + setsid). The original process
 * waits until the server reports ready (exit 0) or the child dies or
 * reports failure (exit 1), so `immudb -d` still fails visibly. stdio of
 * the daemon goes to the log file or /dev/null. Returns only in the
 * daemon. */
static void daemonise(const char *logfile) {
  int pfd[2];
  if (pipe(pfd) != 0) {
    fprintf(stderr, "immudb: cannot create a pipe: %s\n", strerror(errno));
    exit(1);
  }
  fflush(NULL);
  pid_t pid = fork();
  if (pid < 0) {
    fprintf(stderr, "immudb: cannot fork: %s\n", strerror(errno));
    exit(1);
  }
  if (pid > 0) {
    close(pfd[1]);
    int st;
    waitpid(pid, &st, 0); /* the intermediate child exits at once */
    char buf[32];
    ssize_t n;
    size_t got = 0;
    while (got < sizeof(buf) - 1 &&
           (n = read(pfd[0], buf + got, sizeof(buf) - 1 - got)) != 0) {
      if (n < 0) {
        if (errno == EINTR)
          continue;
        break;
      }
      got += (size_t)n;
    }
    buf[got] = '\0';
    if (got > 0 && buf[0] == 'R') {
      printf("immudb started in the background, pid %s\n", buf + 1);
      exit(0);
    }
    fprintf(stderr, "immudb: the background server failed to start%s%s\n",
            logfile[0] ? "; see " : "", logfile);
    exit(1);
  }
  close(pfd[0]);
  if (setsid() < 0)
    _exit(1);
  pid = fork();
  if (pid < 0)
    _exit(1);
  if (pid > 0)
    _exit(0);
  int nullfd = open("/dev/null", O_RDWR);
  if (nullfd >= 0) {
    dup2(nullfd, 0);
    int outfd = nullfd;
    if (logfile[0] != '\0') {
      int lf = open(logfile, O_WRONLY | O_CREAT | O_APPEND, 0640);
      if (lf >= 0)
        outfd = lf;
    }
    dup2(outfd, 1);
    dup2(outfd, 2);
    if (outfd != nullfd)
      close(outfd);
    if (nullfd > 2)
      close(nullfd);
  }
  fcntl(pfd[1], F_SETFD, FD_CLOEXEC);
  g_ready_fd = pfd[1];
}

static void report_ready(void) {
  if (g_ready_fd < 0)
    return;
  char buf[32];
  int n = snprintf(buf, sizeof(buf), "R%ld", (long)getpid());
  if (write(g_ready_fd, buf, (size_t)n) < 0) {
    /* the parent is gone; nothing to tell */
  }
  close(g_ready_fd);
  g_ready_fd = -1;
}

/* ------------------------------------------------------------------ */
/* start-up errors                                                     */
/* ------------------------------------------------------------------ */

/* 1 while start-up errors should also reach the terminal: the log goes to
 * a file and we are in the foreground. */
static int g_mirror_stderr;

/* Logs a fatal start-up error, and repeats it on stderr when the log goes
 * to a file, so that a foreground `immudb --logfile x` does not fail
 * silently. */
__attribute__((format(printf, 1, 2))) static void startup_error(const char *fmt,
                                                                ...) {
  char buf[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof(buf), fmt, ap);
  va_end(ap);
  immu_log(IMMU_LOG_ERROR, COMP, "%s", buf);
  if (g_mirror_stderr)
    fprintf(stderr, "immudb: %s\n", buf);
}

/* ------------------------------------------------------------------ */
/* pidfile                                                             */
/* ------------------------------------------------------------------ */

/* Creates |path| with our pid and keeps it locked (flock) while we run, so
 * a second server on the same pidfile refuses to start. Returns the fd or
 * -1 after logging why. */
static int pidfile_create(const char *path) {
  int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) {
    startup_error("cannot create pidfile %s: %s", path, strerror(errno));
    return -1;
  }
  if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
    startup_error("pidfile %s is locked: another immudb is running with it",
                  path);
    close(fd);
    return -1;
  }
  char buf[32];
  int n = snprintf(buf, sizeof(buf), "%ld\n", (long)getpid());
  if (ftruncate(fd, 0) != 0 || pwrite(fd, buf, (size_t)n, 0) != n) {
    startup_error("cannot write pidfile %s: %s", path, strerror(errno));
    close(fd);
    unlink(path);
    return -1;
  }
  return fd;
}

static void pidfile_remove(const char *path, int fd) {
  if (fd < 0)
    return;
  if (unlink(path) != 0)
    immu_log(IMMU_LOG_WARN, COMP, "cannot remove pidfile %s: %s", path,
             strerror(errno));
  close(fd);
}

/* ------------------------------------------------------------------ */
/* glue: metrics source and checker callbacks on the service           */
/* ------------------------------------------------------------------ */

typedef struct emit_ctx {
  void (*emit)(void *earg, const char *db, const immu_db_stats *st);
  void *earg;
} emit_ctx;

static void stats_one(void *arg, const char *name, struct immu_db *db) {
  emit_ctx *e = arg;
  immu_db_stats st;
  immu_db_get_stats(db, &st);
  e->emit(e->earg, name, &st);
}

static void src_foreach_db(void *arg,
                           void (*emit)(void *earg, const char *db,
                                        const immu_db_stats *st),
                           void *earg) {
  emit_ctx e = {emit, earg};
  immu_server_foreach_db(arg, stats_one, &e);
}

static uint64_t src_sessions(void *arg) {
  return immu_server_active_sessions(arg);
}

static void src_row_cache(void *arg, uint64_t *hits, uint64_t *misses,
                          uint64_t *rows, uint64_t *bytes) {
  immu_server_row_cache(arg, hits, misses, rows, bytes);
}

typedef struct list_ctx {
  void (*add)(void *aarg, const char *name);
  void *aarg;
} list_ctx;

static void list_one(void *arg, const char *name, struct immu_db *db) {
  (void)db;
  list_ctx *l = arg;
  l->add(l->aarg, name);
}

static void chk_list(void *arg, void (*add)(void *aarg, const char *name),
                     void *aarg) {
  list_ctx l = {add, aarg};
  immu_server_foreach_db(arg, list_one, &l);
}

typedef struct verify_ctx {
  const char *name;
  int found;
  int rc;
  char *msg;
  size_t msglen;
} verify_ctx;

static void verify_one(void *arg, const char *name, struct immu_db *db) {
  verify_ctx *v = arg;
  if (v->found || strcmp(name, v->name) != 0)
    return;
  v->found = 1;
  v->rc = immu_db_verify(db, NULL, NULL);
  if (v->rc != 0)
    snprintf(v->msg, v->msglen, "%s", immu_db_last_error());
}

static int chk_verify(void *arg, const char *name, char *msg, size_t msglen) {
  verify_ctx v = {name, 0, 0, msg, msglen};
  immu_server_foreach_db(arg, verify_one, &v);
  return v.found ? v.rc : IMMU_ENOTFOUND;
}

static void chk_result(void *arg, const char *db, int ok, time_t when) {
  immu_metrics_check_result(arg, db, ok, when);
}

/* ------------------------------------------------------------------ */
/* signals                                                             */
/* ------------------------------------------------------------------ */

typedef struct sig_ctx {
  sigset_t set;
  immu_grpc_server **grpc; /* every I/O loop */
  int ngrpc;
  immu_checker *checker;
  int grace_s;
  atomic_int exiting;
} sig_ctx;

/* Network threads: --io-threads, or one per two cores (at least 1, at most
 * 4). The engine's own threads (commit, index, RocksDB) need the other
 * half: on 2 cores one loop served Get at 7-8 server us a call against
 * 8-11 with two, and Set as fast (docs/benchmarks.md, 2026-11-22). */
#define IO_THREADS_MAX 64
static int io_threads(const immu_cfg *c) {
  long n = c->io_threads;
  if (n <= 0) {
    n = sysconf(_SC_NPROCESSORS_ONLN) / 2;
    if (n > 4)
      n = 4;
  }
  if (n < 1)
    n = 1;
  return n > IO_THREADS_MAX ? IO_THREADS_MAX : (int)n;
}

/* For the start-up line: which malloc this process runs on. */
static const char *allocator_name(void) {
#ifdef IMMU_WITH_JEMALLOC
  static char buf[64];
  const char *v = NULL;
  size_t len = sizeof v;
  if (mallctl("version", &v, &len, NULL, 0) == 0 && v != NULL) {
    snprintf(buf, sizeof buf, "jemalloc %.40s", v);
    return buf;
  }
  return "jemalloc";
#else
  return "system malloc";
#endif
}

static void *io_main(void *arg) {
  prctl(PR_SET_NAME, "immu-io");
  immu_grpc_server_run(arg);
  return NULL;
}

static void *signal_main(void *arg) {
  sig_ctx *s = arg;
  int stops = 0;
  for (;;) {
    int sig;
    if (sigwait(&s->set, &sig) != 0)
      continue;
    switch (sig) {
    case SIGTERM:
    case SIGINT:
      stops++;
      if (stops == 1) {
        immu_log(IMMU_LOG_INFO, COMP,
                 "received %s: shutting down (in-flight calls get %ds)",
                 sig == SIGTERM ? "SIGTERM" : "SIGINT", s->grace_s);
        for (int i = 0; i < s->ngrpc; i++)
          immu_grpc_server_stop(s->grpc[i], s->grace_s);
      } else {
        immu_log(IMMU_LOG_WARN, COMP,
                 "received %s again: stopping without waiting",
                 sig == SIGTERM ? "SIGTERM" : "SIGINT");
        for (int i = 0; i < s->ngrpc; i++)
          immu_grpc_server_stop(s->grpc[i], 0);
      }
      break;
    case SIGHUP:
      if (immu_log_reopen() == 0)
        immu_log(IMMU_LOG_INFO, COMP, "received SIGHUP: log file reopened");
      else
        immu_log(IMMU_LOG_ERROR, COMP,
                 "received SIGHUP: cannot reopen the log file");
      break;
    case SIGUSR2:
      if (s->checker != NULL) {
        immu_log(IMMU_LOG_INFO, COMP,
                 "received SIGUSR2: starting a consistency check");
        immu_checker_kick(s->checker);
      }
      break;
    case SIGUSR1:
      if (atomic_load(&s->exiting))
        return NULL;
      break;
    default:
      break;
    }
  }
}

/* ------------------------------------------------------------------ */
/* main                                                                */
/* ------------------------------------------------------------------ */

static void print_version(void) {
  printf("immudb %s\n", IMMU_SERVER_VERSION);
  if (IMMU_SERVER_BUILDTIME[0] != '\0')
    printf("Built at: %s\n", IMMU_SERVER_BUILDTIME);
}

int main(int argc, char **argv) {
  int status = 1;
  immu_cfg cfg;
  warn_list warns = {{0}, 0};
  char *err = NULL;
  char *password = NULL;
  SSL_CTX *ssl_ctx = NULL;
  int pidfd = -1;
  immu_server *srv = NULL;
  immu_metrics *metrics = NULL;
  immu_grpc_server *grpc = NULL;
  /* grpcs[0] = grpc (the listener); the others are its peers. */
  immu_grpc_server *grpcs[IO_THREADS_MAX] = {NULL};
  pthread_t io_thr[IO_THREADS_MAX];
  int nio = 1, io_started = 0;
  immu_checker *checker = NULL;
  sig_ctx sigs;
  pthread_t sig_thread;

  signal(SIGPIPE, SIG_IGN);
  {
    /* Each database keeps about ten descriptors open (log, tx index and
     * tree segments, RocksDB's files): a server with hundreds of databases
     * needs more than the usual soft limit of 1024. */
    struct rlimit nof;
    if (getrlimit(RLIMIT_NOFILE, &nof) == 0 && nof.rlim_cur < nof.rlim_max) {
      nof.rlim_cur = nof.rlim_max;
      (void)setrlimit(RLIMIT_NOFILE, &nof);
    }
  }
  immu_cfg_init(&cfg);

  int rc = immu_cfg_load(&cfg, argc, argv, environ, collect_warn, &warns, &err);
  if (rc != 0) {
    fprintf(stderr, "immudb: %s\nRun 'immudb --help' for usage.\n",
            err != NULL ? err : immu_strerror(rc));
    immu__free(err);
    goto out_cfg;
  }
  if (cfg.want_help) {
    immu_cfg_usage(stdout);
    status = 0;
    goto out_cfg;
  }
  if (cfg.want_version) {
    print_version();
    status = 0;
    goto out_cfg;
  }

  /* --- safety checks, before anything is opened --- */
  password = immu_cfg_admin_password(&cfg, &err);
  if (password == NULL) {
    fprintf(stderr, "immudb: %s\n", err);
    immu__free(err);
    goto out_cfg;
  }
  /* The default admin password off loopback is refused by
   * immu_server_new, which knows whether the immudb user still has it (the
   * flag only sets it at the first start). */
  int loopback = immu_cfg_is_loopback(cfg.address);

  rc = immu_cfg_tls_ctx(&cfg, (void **)&ssl_ctx, &err);
  if (rc != 0) {
    fprintf(stderr, "immudb: %s\n", err);
    immu__free(err);
    goto out_cfg;
  }

  rc = immu_log_open(cfg.logfile, cfg.log_level,
                     strcmp(cfg.logformat, "json") == 0);
  if (rc != 0) {
    fprintf(stderr, "immudb: cannot open log file %s: %s\n", cfg.logfile,
            strerror(-rc));
    goto out_ssl;
  }

  if (cfg.detached)
    daemonise(cfg.logfile);
  g_mirror_stderr = cfg.logfile[0] != '\0' && !cfg.detached;

  /* libevent locking before any event_base exists (transport, metrics). */
  evthread_use_pthreads();

  /* Every thread created from here on inherits the blocked set; the
   * signal thread takes them with sigwait(). */
  sigemptyset(&sigs.set);
  sigaddset(&sigs.set, SIGTERM);
  sigaddset(&sigs.set, SIGINT);
  sigaddset(&sigs.set, SIGHUP);
  sigaddset(&sigs.set, SIGUSR1);
  sigaddset(&sigs.set, SIGUSR2);
  pthread_sigmask(SIG_BLOCK, &sigs.set, NULL);

  flush_warnings(&warns);
  immu_log(IMMU_LOG_INFO, COMP, "immudb %s starting (pid %ld)",
           IMMU_SERVER_VERSION, (long)getpid());
  if (cfg.config[0] != '\0')
    immu_log(IMMU_LOG_INFO, COMP, "config file: %s", cfg.config);
  if (!cfg.auth) {
    if (!loopback && !cfg.devmode)
      immu_log(IMMU_LOG_WARN, COMP,
               "auth is disabled: only loopback clients will be served "
               "(add --devmode to accept remote clients without auth)");
    else if (!loopback)
      immu_log(IMMU_LOG_WARN, COMP,
               "auth is disabled and --devmode is on: anyone who can reach "
               "%s:%d has full access",
               cfg.address, cfg.port);
    else
      immu_log(IMMU_LOG_WARN, COMP, "auth is disabled");
  }
  if (cfg.maintenance)
    immu_log(IMMU_LOG_WARN, COMP, "maintenance mode is on");
  if (!cfg.synced)
    immu_log(IMMU_LOG_WARN, COMP,
             "synced mode is off: a crash may lose committed transactions");

  if (cfg.pidfile[0] != '\0') {
    pidfd = pidfile_create(cfg.pidfile);
    if (pidfd < 0)
      goto out_log;
  }

  /* --- the service: opens (or creates) the data directory --- */
  immu_server_config sc;
  immu_server_config_init(&sc);
  immu_cfg_to_server(&cfg, password, &sc);
  rc = immu_server_new(&sc, &srv, &err);
  if (rc != 0) {
    const char *why = err != NULL ? err : immu_strerror(rc);
    if (!loopback && strstr(why, "default") != NULL)
      startup_error("cannot start the server on %s: %s\n"
                    "  (set a password with --admin-password, "
                    "IMMUDB_ADMIN_PASSWORD or admin-password in immudb.toml, "
                    "or listen on loopback only with --address 127.0.0.1)",
                    cfg.dir, why);
    else
      startup_error("cannot start the server on %s: %s", cfg.dir, why);
    immu__free(err);
    err = NULL;
    goto out_pid;
  }
  immu_log(IMMU_LOG_INFO, COMP, "data directory %s, server uuid %s", cfg.dir,
           immu_server_uuid(srv));

  /* --- metrics registry (fed by the transport) --- */
  if (cfg.metrics_server) {
    immu_metrics_config mc = {0};
    mc.address = cfg.address;
    mc.port = cfg.metrics_port;
    mc.histograms = !cfg.no_histograms;
    mc.version = IMMU_SERVER_VERSION;
    mc.buildtime = IMMU_SERVER_BUILDTIME;
    mc.source.foreach_db = src_foreach_db;
    mc.source.active_sessions = src_sessions;
    mc.source.row_cache = src_row_cache;
    mc.source.arg = srv;
    mc.log = immu_log_cb;
    mc.log_arg = (void *)"metrics";
    rc = immu_metrics_new(&mc, &metrics);
    if (rc != 0) {
      startup_error("cannot create the metrics registry: %s",
                    immu_strerror(rc));
      goto out_srv;
    }
  }

  /* --- gRPC transport --- */
  immu_grpc_config gc;
  immu_grpc_config_init(&gc);
  immu_cfg_to_grpc(&cfg, &gc);
  gc.ssl_ctx = ssl_ctx;
  gc.uuid = immu_server_uuid(srv);
  if (metrics != NULL) {
    gc.on_call_done = immu_metrics_on_call_done;
    gc.on_call_done_arg = metrics;
  }
  const immu_grpc_method *methods;
  size_t nmethods;
  immu_server_methods(srv, &methods, &nmethods);
  for (size_t i = 0; metrics != NULL && i < nmethods; i++)
    immu_metrics_register_method(metrics, methods[i].path);
  nio = io_threads(&cfg);
  if (nio > 1) {
    /* Each loop gets its share of the workers and of the connection cap
     * (the listener deals connections out in turn). */
    int w = gc.workers / nio, mc = (gc.max_connections + nio - 1) / nio;
    gc.workers = w < 16 ? 16 : w;
    gc.max_connections = mc;
  }
  rc = immu_grpc_server_new(&gc, methods, nmethods, &grpc, &err);
  if (rc != 0) {
    startup_error("cannot start the gRPC server: %s",
                  err != NULL ? err : immu_strerror(rc));
    immu__free(err);
    err = NULL;
    goto out_metrics;
  }
  grpcs[0] = grpc;
  for (int i = 1; i < nio; i++) {
    immu_grpc_config pc = gc;
    pc.no_listen = 1;
    rc = immu_grpc_server_new(&pc, methods, nmethods, &grpcs[i], &err);
    if (rc == 0)
      rc = immu_grpc_server_add_peer(grpc, grpcs[i]);
    if (rc != 0) {
      startup_error("cannot start gRPC I/O loop %d: %s", i + 1,
                    err != NULL ? err : immu_strerror(rc));
      immu__free(err);
      err = NULL;
      goto out_grpc;
    }
  }

  /* --- metrics/health HTTP server --- */
  if (metrics != NULL) {
    rc = immu_metrics_start(metrics, &err);
    if (rc != 0) {
      startup_error("metrics server: %s (choose another --metrics-server-port, "
                    "or --metrics-server=false)",
                    err != NULL ? err : immu_strerror(rc));
      immu__free(err);
      err = NULL;
      goto out_grpc;
    }
  }

  /* --- consistency checker --- */
  if (cfg.consistency_check) {
    immu_checker_config kc = {0};
    kc.interval_s = cfg.consistency_interval_s;
    kc.initial_delay_ms = -1;
    kc.db_pause_ms = -1;
    kc.list = chk_list;
    kc.verify = chk_verify;
    kc.arg = srv;
    if (metrics != NULL) {
      kc.on_result = chk_result;
      kc.result_arg = metrics;
    }
    kc.log = immu_log_cb;
    kc.log_arg = (void *)"checker";
    rc = immu_checker_start(&kc, &checker);
    if (rc != 0) {
      startup_error("cannot start the consistency checker: %s",
                    immu_strerror(rc));
      goto out_metrics_stop;
    }
  }

  /* --- signals --- */
  sigs.grpc = grpcs;
  sigs.ngrpc = nio;
  sigs.checker = checker;
  sigs.grace_s = cfg.shutdown_grace_s;
  atomic_init(&sigs.exiting, 0);
  int perr = pthread_create(&sig_thread, NULL, signal_main, &sigs);
  if (perr != 0) {
    startup_error("cannot start the signal thread: %s", strerror(perr));
    goto out_checker;
  }

  immu_log(IMMU_LOG_INFO, COMP, "listening on %s:%d (gRPC, %s; %d I/O %s, "
           "allocator %s)", cfg.address, immu_grpc_server_port(grpc),
           ssl_ctx == NULL ? "cleartext h2c"
           : cfg.mtls      ? "TLS, client certificates required"
                           : "TLS",
           nio, nio == 1 ? "loop" : "loops", allocator_name());
  report_ready();

  for (io_started = 1; io_started < nio; io_started++) {
    perr = pthread_create(&io_thr[io_started], NULL, io_main, grpcs[io_started]);
    if (perr != 0)
      break;
  }
  if (io_started < nio) {
    /* The listener would deal connections to a loop nobody runs. */
    startup_error("cannot start gRPC I/O thread %d: %s", io_started + 1,
                  strerror(perr));
  } else {
    rc = immu_grpc_server_run(grpc);
    if (rc != 0)
      startup_error("the gRPC server failed: %s", immu_strerror(rc));
    else
      status = 0;
  }
  /* The listener stopped (a signal, or a failure): the other loops too. */
  for (int i = 1; i < io_started; i++) {
    immu_grpc_server_stop(grpcs[i], sigs.grace_s);
    pthread_join(io_thr[i], NULL);
  }
  immu_log(IMMU_LOG_INFO, COMP, "gRPC server stopped; shutting down");

  atomic_store(&sigs.exiting, 1);
  pthread_kill(sig_thread, SIGUSR1);
  pthread_join(sig_thread, NULL);

out_checker:
  immu_checker_free(checker);
  checker = NULL;
out_metrics_stop:
  immu_metrics_stop(metrics);
out_grpc:
  for (int i = nio - 1; i >= 1; i--)
    immu_grpc_server_free(grpcs[i]);
  immu_grpc_server_free(grpc);
out_metrics:
  immu_metrics_free(metrics);
out_srv:
  if (srv != NULL) {
    immu_server_free(srv);
    immu_log(IMMU_LOG_INFO, COMP, "databases closed");
  }
out_pid:
  if (cfg.pidfile[0] != '\0')
    pidfile_remove(cfg.pidfile, pidfd);
out_log:
  immu_log(status == 0 ? IMMU_LOG_INFO : IMMU_LOG_ERROR, COMP,
           "immudb stopped%s", status == 0 ? "" : " with errors");
  immu_log_close();
out_ssl:
  SSL_CTX_free(ssl_ctx);
out_cfg:
  flush_warnings(&warns);
  if (password != NULL) {
    memset(password, 0, strlen(password));
    immu__free(password);
  }
  immu_cfg_free(&cfg);
  return status;
}
