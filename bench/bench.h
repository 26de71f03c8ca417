/* SPDX-License-Identifier: Apache-2.0 */
/*
 * immubench: shared declarations of the benchmark executable.
 *
 * One executable, several subcommands (`immubench crypto`, later the storage
 * engine and gRPC benchmarks). bench/main.c dispatches on argv[1]; each
 * subcommand lives in bench/bench_<name>.c and exports one entry point
 * declared below. bench/bench_util.c holds what they share: a monotonic
 * clock, order statistics (median, percentiles), a deterministic PRNG, a
 * streaming JSON writer, an aligned text-table printer, machine facts and
 * the peer runner for `openssl speed`.
 *
 * Everything here is for the benchmark executable only: helpers abort on
 * allocation failure (bench_xmalloc), which the library core never does.
 */
#ifndef IMMUBENCH_BENCH_H
#define IMMUBENCH_BENCH_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* ------------------------------------------------------------------ */
/* Subcommands                                                         */
/* ------------------------------------------------------------------ */

/* Entry point of a subcommand. |argv[0]| is the subcommand's name, the
 * options follow. Returns the process exit status (0 success, 1 failure,
 * 2 usage error). */
typedef int (*bench_cmd_fn)(int argc, char **argv);

/* `immubench crypto`: the crypto-core micro-benchmark (bench_crypto.c). */
int bench_crypto_main(int argc, char **argv);
/* `immubench kv`: the KV layer on disk against SQLite and RocksDB
 * (bench_store.c). */
int bench_store_main(int argc, char **argv);
/* `immubench grpc`: load against the immudb server over gRPC
 * (bench_grpc.c). */
int bench_grpc_main(int argc, char **argv);

/* ------------------------------------------------------------------ */
/* Allocation (aborts on failure: benchmark code only)                 */
/* ------------------------------------------------------------------ */

void *bench_xmalloc(size_t n);
void *bench_xcalloc(size_t n, size_t size);
void *bench_xrealloc(void *p, size_t n);
char *bench_xstrdup(const char *s);
/* snprintf into a fresh heap string; caller frees. */
char *bench_xasprintf(const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 1, 2)))
#endif
    ;

/* ------------------------------------------------------------------ */
/* Clock                                                               */
/* ------------------------------------------------------------------ */

/* CLOCK_MONOTONIC in nanoseconds. */
uint64_t bench_now_ns(void);
/* Seconds between two bench_now_ns() readings. */
double bench_elapsed_s(uint64_t start_ns, uint64_t end_ns);

/* ------------------------------------------------------------------ */
/* Order statistics                                                    */
/* ------------------------------------------------------------------ */

/* Median of |n| >= 1 values (mean of the two middle ones when n is even).
 * |v| is not modified. Returns 0 when n == 0. */
double bench_median(const double *v, size_t n);

/* Percentile |p| in [0, 100] of |n| >= 1 values, by linear interpolation
 * between closest ranks (the "R-7" / numpy default definition): rank
 * h = (n-1) * p / 100, result v[floor h] + (h - floor h) * (v[floor h + 1] -
 * v[floor h]) over the sorted values. p50 equals bench_median. |v| is not
 * modified. Returns 0 when n == 0. */
double bench_percentile(const double *v, size_t n, double p);

/* Same, but sorts |v| in place and works on the sorted array: use it when
 * many percentiles of one large sample are needed. */
void bench_sort_doubles(double *v, size_t n);
double bench_percentile_sorted(const double *sorted, size_t n, double p);

/* Median, minimum and maximum of repeated runs. */
typedef struct bench_stats {
  double median;
  double min;
  double max;
} bench_stats;
bench_stats bench_stats_of(const double *v, size_t n);

/* ------------------------------------------------------------------ */
/* Deterministic PRNG (splitmix64), for reproducible synthetic data    */
/* ------------------------------------------------------------------ */

typedef struct bench_rng {
  uint64_t s;
} bench_rng;
void bench_rng_seed(bench_rng *r, uint64_t seed);
uint64_t bench_rng_next(bench_rng *r);
/* Uniform in [0, bound), bound >= 1 (rejection sampling, no modulo bias). */
uint64_t bench_rng_below(bench_rng *r, uint64_t bound);
void bench_rng_bytes(bench_rng *r, void *out, size_t n);

/* ------------------------------------------------------------------ */
/* Streaming JSON writer                                               */
/* ------------------------------------------------------------------ */

#define BENCH_JSON_MAX_DEPTH 32

/* Writes pretty-printed JSON to |f|. Every value function takes a |key|:
 * pass the member name inside an object and NULL inside an array or for
 * the top-level value. Strings are escaped; non-finite numbers are written
 * as null. Nesting deeper than BENCH_JSON_MAX_DEPTH aborts. */
typedef struct bench_json {
  FILE *f;
  int depth;
  int count[BENCH_JSON_MAX_DEPTH]; /* values written at each level */
} bench_json;

void bench_json_init(bench_json *j, FILE *f);
void bench_json_begin_object(bench_json *j, const char *key);
void bench_json_end_object(bench_json *j);
void bench_json_begin_array(bench_json *j, const char *key);
void bench_json_end_array(bench_json *j);
/* |v| NULL writes null. */
void bench_json_str(bench_json *j, const char *key, const char *v);
void bench_json_num(bench_json *j, const char *key, double v);
void bench_json_int(bench_json *j, const char *key, int64_t v);
void bench_json_uint(bench_json *j, const char *key, uint64_t v);
void bench_json_bool(bench_json *j, const char *key, int v);
void bench_json_null(bench_json *j, const char *key);
/* {"median": m, "min": a, "max": b} */
void bench_json_stats(bench_json *j, const char *key, const bench_stats *s);
/* Closes the document with a newline. Depth must be back to 0. */
void bench_json_finish(bench_json *j);

/* ------------------------------------------------------------------ */
/* Aligned text table                                                  */
/* ------------------------------------------------------------------ */

/* Columns are left-aligned when |align| is 'l', right-aligned when 'r'.
 * Cells are copied. */
typedef struct bench_table bench_table;

bench_table *bench_table_new(size_t ncols, const char *const *headers,
                             const char *align);
/* Adds a row of exactly ncols cells (NULL cells print as empty). */
void bench_table_add(bench_table *t, const char *const *cells);
/* Adds a row whose cells are given as one string separated by '\t'. */
void bench_table_addf(bench_table *t, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
/* Prints headers, a rule and the rows, columns separated by two spaces. */
void bench_table_print(const bench_table *t, FILE *f);
void bench_table_free(bench_table *t);

/* ------------------------------------------------------------------ */
/* Number formatting for tables                                        */
/* ------------------------------------------------------------------ */

/* Rate with an SI suffix and 3 significant digits: "6.21M", "812k",
 * "95.3". Negative or non-finite: "n/a". Returns |buf|. */
const char *bench_fmt_rate(double v, char *buf, size_t cap);
/* Plain number with |prec| decimals, thousands separated by ','.
 * Non-finite: "n/a". Returns |buf|. */
const char *bench_fmt_num(double v, int prec, char *buf, size_t cap);

/* ------------------------------------------------------------------ */
/* Machine facts and peers                                             */
/* ------------------------------------------------------------------ */

typedef struct bench_machine {
  char uname[512];     /* `uname -a`, or the uname(2) fields */
  char cpu_model[256]; /* "model name" of /proc/cpuinfo ("" if unknown) */
  int sha_ni;          /* 1 if "sha_ni" is in the CPU flags, 0 if not, -1 unknown */
  long cores;          /* online processors */
  char date[64];       /* UTC, ISO 8601 */
  char openssl_lib[128]; /* OpenSSL library version linked in */
} bench_machine;

void bench_machine_collect(bench_machine *m);
/* Writes the machine object under |key|. */
void bench_machine_json(bench_json *j, const char *key, const bench_machine *m);

/* Runs `openssl speed -mr -evp sha256 -seconds <seconds> -bytes <bytes>`
 * through popen and returns the measured hashes per second
 * (bytes/s / bytes), or -1 if openssl is missing or its output cannot be
 * parsed. The command line run is copied to |cmd| (may be NULL). */
double bench_openssl_sha256_rate(unsigned bytes, unsigned seconds, char *cmd,
                                 size_t cmd_cap);
/* Version line of the openssl CLI ("" when absent). */
void bench_openssl_cli_version(char *out, size_t cap);

/* ------------------------------------------------------------------ */
/* Output selection and progress                                       */
/* ------------------------------------------------------------------ */

/* Parses a decimal count with an optional exponent or suffix: "65536",
 * "1e7", "10^7", "64k" (x1000), "2^16". Returns 0 or -1 on a bad value. */
int bench_parse_count(const char *s, uint64_t *out);
/* Parses a non-negative decimal number ("0.25"). Returns 0 or -1. */
int bench_parse_double(const char *s, double *out);

/* The options every subcommand takes: -q/--quiet, --json FILE and
 * --cases LIST. Returns 1 if argv[*i] is one of them (*i then points at
 * its last word), 0 if it is not, -1 (message on stderr, naming
 * "immubench |cmd|") if its value is missing. */
int bench_common_option(const char *cmd, int argc, char **argv, int *i,
                        const char **json, const char **cases);
/* Takes the value of option argv[*i] into *val: 0, or -1 with a message
 * when it is the last word. */
int bench_option_value(const char *cmd, int argc, char **argv, int *i,
                       const char **val);

/* Progress messages on stderr unless bench_quiet is set. */
extern int bench_quiet;
void bench_progress(const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 1, 2)))
#endif
    ;

/* Joins argv into one shell-like command line ("immubench crypto --quick");
 * caller frees. */
char *bench_command_line(const char *prog, int argc, char **argv);

#endif /* IMMUBENCH_BENCH_H */
