/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Prometheus metrics and health endpoints of the immudb server
 * (immudb-api.md section 7), served by libevent's evhttp on a thread and
 * event_base of their own, apart from the gRPC loop.
 *
 *   /metrics                 Prometheus text format 0.0.4 with immudb's
 *                            metric names (immudb_*, grpc_server_*,
 *                            process_*)
 *   /readyz /livez /initz    200, empty body
 *   /version                 {"component":"immudb","version":...,
 *                            "buildtime":...,"static":false,"fips":false}
 *   anything else            404
 * Every response carries Access-Control-Allow-Origin: *. Only GET, HEAD and
 * OPTIONS (CORS preflight, 204) are accepted.
 *
 * The registry (RPC counters and histograms, per-client counters,
 * consistency-check results) is independent of the HTTP server: it exists
 * from immu_metrics_new and is fed by immu_metrics_on_call_done (the
 * transport's on_call_done hook) and immu_metrics_check_result (the
 * consistency checker). Database figures are pulled from a
 * immu_metrics_source at every scrape.
 *
 * Thread-safety: every function may be called from any thread, except
 * immu_metrics_free (after every other call has returned).
 */
#ifndef IMMU_SERVER_METRICS_H
#define IMMU_SERVER_METRICS_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "immudb/db.h"

typedef struct immu_metrics immu_metrics;

/* Where database figures come from; called on the metrics thread at every
 * scrape of /metrics. */
typedef struct immu_metrics_source {
  /* Calls |emit| once per loaded database, with figures valid during the
   * call. May be NULL (no databases). */
  void (*foreach_db)(void *arg,
                     void (*emit)(void *earg, const char *db,
                                  const immu_db_stats *st),
                     void *earg);
  /* Open sessions. May be NULL (reported as 0). */
  uint64_t (*active_sessions)(void *arg);
  /* The index row cache's counters. May be NULL (not reported). */
  void (*row_cache)(void *arg, uint64_t *hits, uint64_t *misses,
                    uint64_t *rows, uint64_t *bytes);
  void *arg;
} immu_metrics_source;

typedef struct immu_metrics_config {
  const char *address;   /* bind address, "127.0.0.1", "::", ... */
  int port;              /* 9497; 0 = any free port */
  int histograms;        /* 1 = grpc_server_handling_seconds */
  const char *version;   /* for /version */
  const char *buildtime; /* for /version; NULL = "" */
  immu_metrics_source source;
  /* Log sink (levels of server/config.h); NULL = none. */
  void (*log)(void *arg, int level, const char *msg);
  void *log_arg;
} immu_metrics_config;

/* Creates the registry (no socket yet). |cfg| is copied (strings too).
 * Returns 0 or IMMU_ENOMEM; *out is NULL on failure. */
int immu_metrics_new(const immu_metrics_config *cfg, immu_metrics **out);

/* Binds cfg->address:cfg->port and starts the HTTP thread. Returns 0, or a
 * negative code with *errmsg (free with immu__free) naming the address and
 * the reason. */
int immu_metrics_start(immu_metrics *m, char **errmsg);

/* The port actually bound (after a successful start), else 0. */
int immu_metrics_port(const immu_metrics *m);

/* Stops the HTTP thread and closes the socket; the registry stays usable.
 * Idempotent; returns promptly (open connections are dropped). */
void immu_metrics_stop(immu_metrics *m);

/* Stops (if needed) and frees. NULL allowed. */
void immu_metrics_free(immu_metrics *m);

/* Declares |path| ("/immudb.schema.ImmuService/Get") a served method.
 * Once any method is declared, calls to undeclared paths (scanners, typos:
 * they end UNIMPLEMENTED) are counted under grpc_method="unknown" instead
 * of one series each. Methods without calls are not rendered. Returns 0 or
 * IMMU_ENOMEM. */
int immu_metrics_register_method(immu_metrics *m, const char *path);

/* The transport's on_call_done hook (|arg| is the immu_metrics *): counts
 * the call under its method path and status, its duration in the
 * histogram, and the client's ip. Cheap: one mutex, hash lookups, no I/O.
 * Distinct method paths and client ips are capped; the excess is counted
 * under grpc_method="unknown" / ip="other". */
void immu_metrics_on_call_done(void *arg, const char *path, int status,
                               double seconds, const char *peer_ip);

/* Records one consistency check of database |db|: |ok| 1 passed, 0 found
 * a mismatch; |when| is its wall-clock end. */
void immu_metrics_check_result(immu_metrics *m, const char *db, int ok,
                               time_t when);

/* Renders the /metrics body. Returns a heap buffer (immu__free) with
 * *len bytes (NUL terminated), or NULL when out of memory. */
char *immu_metrics_render(immu_metrics *m, size_t *len);

/* Appends |s| to |out| (capacity |n|, NUL terminated) escaped as a
 * Prometheus label value: backslash, double quote and newline escaped,
 * invalid UTF-8 replaced by U+FFFD. Returns the length it needed. */
size_t immu_metrics_escape_label(char *out, size_t n, const char *s);

#endif
