/* SPDX-License-Identifier: Apache-2.0 */
/*
 * immubench shared helpers: clock, order statistics, PRNG, JSON writer,
 * text tables, machine facts and the `openssl speed` peer runner.
 * See bench.h for the contracts.
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "bench.h"

int bench_quiet = 0;

/* ------------------------------------------------------------------ */
/* Allocation                                                          */
/* ------------------------------------------------------------------ */

static void oom(void) {
  fputs("immubench: out of memory\n", stderr);
  abort();
}

void *bench_xmalloc(size_t n) {
  void *p = malloc(n ? n : 1);
  if (!p)
    oom();
  return p;
}

void *bench_xcalloc(size_t n, size_t size) {
  void *p = calloc(n ? n : 1, size ? size : 1);
  if (!p)
    oom();
  return p;
}

void *bench_xrealloc(void *p, size_t n) {
  void *q = realloc(p, n ? n : 1);
  if (!q)
    oom();
  return q;
}

char *bench_xstrdup(const char *s) {
  size_t n = strlen(s) + 1;
  char *p = bench_xmalloc(n);
  memcpy(p, s, n);
  return p;
}

static char *xvasprintf(const char *fmt, va_list ap)
#if defined(__GNUC__)
    __attribute__((format(printf, 1, 0)))
#endif
    ;

static char *xvasprintf(const char *fmt, va_list ap) {
  va_list ap2;
  va_copy(ap2, ap);
  int n = vsnprintf(NULL, 0, fmt, ap2);
  va_end(ap2);
  if (n < 0)
    n = 0;
  char *p = bench_xmalloc((size_t)n + 1);
  vsnprintf(p, (size_t)n + 1, fmt, ap);
  return p;
}

char *bench_xasprintf(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  char *p = xvasprintf(fmt, ap);
  va_end(ap);
  return p;
}

/* ------------------------------------------------------------------ */
/* Clock                                                               */
/* ------------------------------------------------------------------ */

uint64_t bench_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

double bench_elapsed_s(uint64_t start_ns, uint64_t end_ns) {
  return (double)(end_ns - start_ns) / 1e9;
}

/* ------------------------------------------------------------------ */
/* Order statistics                                                    */
/* ------------------------------------------------------------------ */

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

void bench_sort_doubles(double *v, size_t n) {
  if (n > 1)
    qsort(v, n, sizeof *v, cmp_double);
}

double bench_percentile_sorted(const double *sorted, size_t n, double p) {
  if (n == 0)
    return 0;
  if (p <= 0)
    return sorted[0];
  if (p >= 100)
    return sorted[n - 1];
  double h = (double)(n - 1) * p / 100.0;
  size_t lo = (size_t)floor(h);
  if (lo + 1 >= n)
    return sorted[n - 1];
  double frac = h - (double)lo;
  return sorted[lo] + frac * (sorted[lo + 1] - sorted[lo]);
}

double bench_percentile(const double *v, size_t n, double p) {
  if (n == 0)
    return 0;
  double *c = bench_xmalloc(n * sizeof *c);
  memcpy(c, v, n * sizeof *c);
  bench_sort_doubles(c, n);
  double r = bench_percentile_sorted(c, n, p);
  free(c);
  return r;
}

double bench_median(const double *v, size_t n) {
  return bench_percentile(v, n, 50.0);
}

bench_stats bench_stats_of(const double *v, size_t n) {
  bench_stats s = {0, 0, 0};
  if (n == 0)
    return s;
  s.median = bench_median(v, n);
  s.min = s.max = v[0];
  for (size_t i = 1; i < n; i++) {
    if (v[i] < s.min)
      s.min = v[i];
    if (v[i] > s.max)
      s.max = v[i];
  }
  return s;
}

/* ------------------------------------------------------------------ */
/* PRNG                                                                */
/* ------------------------------------------------------------------ */

void bench_rng_seed(bench_rng *r, uint64_t seed) { r->s = seed; }

uint64_t bench_rng_next(bench_rng *r) {
  uint64_t z = (r->s += 0x9e3779b97f4a7c15u);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
  return z ^ (z >> 31);
}

uint64_t bench_rng_below(bench_rng *r, uint64_t bound) {
  if (bound <= 1)
    return 0;
  uint64_t limit = UINT64_MAX - UINT64_MAX % bound;
  uint64_t x;
  do {
    x = bench_rng_next(r);
  } while (x >= limit);
  return x % bound;
}

void bench_rng_bytes(bench_rng *r, void *out, size_t n) {
  uint8_t *p = out;
  while (n > 0) {
    uint64_t x = bench_rng_next(r);
    size_t k = n < 8 ? n : 8;
    memcpy(p, &x, k);
    p += k;
    n -= k;
  }
}

/* ------------------------------------------------------------------ */
/* JSON writer                                                         */
/* ------------------------------------------------------------------ */

static void json_indent(bench_json *j) {
  for (int i = 0; i < j->depth; i++)
    fputs("  ", j->f);
}

static void json_write_string(FILE *f, const char *s) {
  fputc('"', f);
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    switch (*p) {
    case '"':
      fputs("\\\"", f);
      break;
    case '\\':
      fputs("\\\\", f);
      break;
    case '\n':
      fputs("\\n", f);
      break;
    case '\r':
      fputs("\\r", f);
      break;
    case '\t':
      fputs("\\t", f);
      break;
    default:
      if (*p < 0x20)
        fprintf(f, "\\u%04x", (unsigned)*p);
      else
        fputc(*p, f);
    }
  }
  fputc('"', f);
}

/* Separator, newline, indentation and key before a value. */
static void json_prefix(bench_json *j, const char *key) {
  if (j->depth > 0) {
    if (j->count[j->depth] > 0)
      fputc(',', j->f);
    fputc('\n', j->f);
    json_indent(j);
    j->count[j->depth]++;
  }
  if (key) {
    json_write_string(j->f, key);
    fputs(": ", j->f);
  }
}

void bench_json_init(bench_json *j, FILE *f) {
  memset(j, 0, sizeof *j);
  j->f = f;
}

static void json_open(bench_json *j, const char *key, char c) {
  json_prefix(j, key);
  fputc(c, j->f);
  if (j->depth + 1 >= BENCH_JSON_MAX_DEPTH) {
    fputs("immubench: JSON nesting too deep\n", stderr);
    abort();
  }
  j->depth++;
  j->count[j->depth] = 0;
}

static void json_close(bench_json *j, char c) {
  int had = j->count[j->depth] > 0;
  j->depth--;
  if (had) {
    fputc('\n', j->f);
    json_indent(j);
  }
  fputc(c, j->f);
}

void bench_json_begin_object(bench_json *j, const char *key) {
  json_open(j, key, '{');
}
void bench_json_end_object(bench_json *j) { json_close(j, '}'); }
void bench_json_begin_array(bench_json *j, const char *key) {
  json_open(j, key, '[');
}
void bench_json_end_array(bench_json *j) { json_close(j, ']'); }

void bench_json_str(bench_json *j, const char *key, const char *v) {
  json_prefix(j, key);
  if (v)
    json_write_string(j->f, v);
  else
    fputs("null", j->f);
}

void bench_json_num(bench_json *j, const char *key, double v) {
  json_prefix(j, key);
  if (!isfinite(v))
    fputs("null", j->f);
  else if (v == floor(v) && fabs(v) < 9e15)
    fprintf(j->f, "%.0f", v);
  else
    fprintf(j->f, "%.12g", v);
}

void bench_json_int(bench_json *j, const char *key, int64_t v) {
  json_prefix(j, key);
  fprintf(j->f, "%lld", (long long)v);
}

void bench_json_uint(bench_json *j, const char *key, uint64_t v) {
  json_prefix(j, key);
  fprintf(j->f, "%llu", (unsigned long long)v);
}

void bench_json_bool(bench_json *j, const char *key, int v) {
  json_prefix(j, key);
  fputs(v ? "true" : "false", j->f);
}

void bench_json_null(bench_json *j, const char *key) {
  json_prefix(j, key);
  fputs("null", j->f);
}

void bench_json_stats(bench_json *j, const char *key, const bench_stats *s) {
  bench_json_begin_object(j, key);
  bench_json_num(j, "median", s->median);
  bench_json_num(j, "min", s->min);
  bench_json_num(j, "max", s->max);
  bench_json_end_object(j);
}

void bench_json_finish(bench_json *j) {
  if (j->depth != 0) {
    fputs("immubench: unbalanced JSON document\n", stderr);
    abort();
  }
  fputc('\n', j->f);
  fflush(j->f);
}

/* ------------------------------------------------------------------ */
/* Text table                                                          */
/* ------------------------------------------------------------------ */

struct bench_table {
  size_t ncols;
  char **headers;
  char *align;
  char **cells; /* nrows * ncols */
  size_t nrows, cap;
};

bench_table *bench_table_new(size_t ncols, const char *const *headers,
                             const char *align) {
  bench_table *t = bench_xcalloc(1, sizeof *t);
  t->ncols = ncols;
  t->headers = bench_xcalloc(ncols, sizeof *t->headers);
  t->align = bench_xcalloc(ncols + 1, 1);
  for (size_t c = 0; c < ncols; c++) {
    t->headers[c] = bench_xstrdup(headers[c] ? headers[c] : "");
    t->align[c] = (align && strlen(align) > c) ? align[c] : 'l';
  }
  return t;
}

void bench_table_add(bench_table *t, const char *const *cells) {
  if (t->nrows == t->cap) {
    t->cap = t->cap ? 2 * t->cap : 16;
    t->cells = bench_xrealloc(t->cells, t->cap * t->ncols * sizeof *t->cells);
  }
  for (size_t c = 0; c < t->ncols; c++)
    t->cells[t->nrows * t->ncols + c] =
        bench_xstrdup(cells[c] ? cells[c] : "");
  t->nrows++;
}

void bench_table_addf(bench_table *t, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  char *line = xvasprintf(fmt, ap);
  va_end(ap);
  const char **cells = bench_xcalloc(t->ncols, sizeof *cells);
  char *p = line;
  for (size_t c = 0; c < t->ncols && p; c++) {
    cells[c] = p;
    char *tab = strchr(p, '\t');
    if (tab) {
      *tab = '\0';
      p = tab + 1;
    } else {
      p = NULL;
    }
  }
  bench_table_add(t, cells);
  free(cells);
  free(line);
}

/* Display width of a UTF-8 string (counts code points, not bytes). */
static size_t utf8_width(const char *s) {
  size_t w = 0;
  for (const unsigned char *p = (const unsigned char *)s; *p; p++)
    if ((*p & 0xC0) != 0x80)
      w++;
  return w;
}

static void print_cell(FILE *f, const char *s, size_t width, char align,
                       int last) {
  size_t w = utf8_width(s);
  size_t pad = width > w ? width - w : 0;
  if (align == 'r')
    for (size_t i = 0; i < pad; i++)
      fputc(' ', f);
  fputs(s, f);
  if (align != 'r' && !last)
    for (size_t i = 0; i < pad; i++)
      fputc(' ', f);
}

void bench_table_print(const bench_table *t, FILE *f) {
  size_t *width = bench_xcalloc(t->ncols, sizeof *width);
  for (size_t c = 0; c < t->ncols; c++) {
    width[c] = utf8_width(t->headers[c]);
    for (size_t r = 0; r < t->nrows; r++) {
      size_t w = utf8_width(t->cells[r * t->ncols + c]);
      if (w > width[c])
        width[c] = w;
    }
  }
  size_t total = 0;
  for (size_t c = 0; c < t->ncols; c++) {
    print_cell(f, t->headers[c], width[c], t->align[c], c + 1 == t->ncols);
    if (c + 1 < t->ncols)
      fputs("  ", f);
    total += width[c] + (c + 1 < t->ncols ? 2 : 0);
  }
  fputc('\n', f);
  for (size_t i = 0; i < total; i++)
    fputc('-', f);
  fputc('\n', f);
  for (size_t r = 0; r < t->nrows; r++) {
    for (size_t c = 0; c < t->ncols; c++) {
      print_cell(f, t->cells[r * t->ncols + c], width[c], t->align[c],
                 c + 1 == t->ncols);
      if (c + 1 < t->ncols)
        fputs("  ", f);
    }
    fputc('\n', f);
  }
  free(width);
}

void bench_table_free(bench_table *t) {
  if (!t)
    return;
  for (size_t c = 0; c < t->ncols; c++)
    free(t->headers[c]);
  for (size_t i = 0; i < t->nrows * t->ncols; i++)
    free(t->cells[i]);
  free(t->headers);
  free(t->align);
  free(t->cells);
  free(t);
}

/* ------------------------------------------------------------------ */
/* Number formatting                                                   */
/* ------------------------------------------------------------------ */

const char *bench_fmt_rate(double v, char *buf, size_t cap) {
  if (!isfinite(v) || v < 0) {
    snprintf(buf, cap, "n/a");
    return buf;
  }
  static const char suffix[] = {'\0', 'k', 'M', 'G', 'T'};
  int i = 0;
  while (v >= 999.5 && i < 4) {
    v /= 1000.0;
    i++;
  }
  int prec = v >= 99.95 ? 0 : (v >= 9.995 ? 1 : 2);
  if (suffix[i])
    snprintf(buf, cap, "%.*f%c", prec, v, suffix[i]);
  else
    snprintf(buf, cap, "%.*f", prec, v);
  return buf;
}

const char *bench_fmt_num(double v, int prec, char *buf, size_t cap) {
  if (!isfinite(v)) {
    snprintf(buf, cap, "n/a");
    return buf;
  }
  char tmp[64];
  snprintf(tmp, sizeof tmp, "%.*f", prec, fabs(v));
  const char *dot = strchr(tmp, '.');
  size_t intlen = dot ? (size_t)(dot - tmp) : strlen(tmp);
  size_t o = 0;
  if (v < 0 && o + 1 < cap)
    buf[o++] = '-';
  for (size_t i = 0; i < intlen && o + 1 < cap; i++) {
    if (i > 0 && (intlen - i) % 3 == 0 && o + 1 < cap)
      buf[o++] = ',';
    if (o + 1 < cap)
      buf[o++] = tmp[i];
  }
  for (const char *p = tmp + intlen; *p && o + 1 < cap; p++)
    buf[o++] = *p;
  buf[o] = '\0';
  return buf;
}

/* ------------------------------------------------------------------ */
/* Machine facts                                                       */
/* ------------------------------------------------------------------ */

static void rstrip(char *s) {
  size_t n = strlen(s);
  while (n > 0 && isspace((unsigned char)s[n - 1]))
    s[--n] = '\0';
}

/* First line of a shell command's stdout into |out|; 0 or -1. */
static int popen_line(const char *cmd, char *out, size_t cap) {
  out[0] = '\0';
  FILE *p = popen(cmd, "r");
  if (!p)
    return -1;
  int ok = fgets(out, (int)cap, p) != NULL;
  /* drain the rest so the child does not get SIGPIPE */
  char sink[256];
  while (fgets(sink, sizeof sink, p))
    ;
  int st = pclose(p);
  rstrip(out);
  return (ok && st == 0 && out[0]) ? 0 : -1;
}

void bench_machine_collect(bench_machine *m) {
  memset(m, 0, sizeof *m);
  if (popen_line("uname -a 2>/dev/null", m->uname, sizeof m->uname) != 0) {
    struct utsname u;
    if (uname(&u) == 0)
      snprintf(m->uname, sizeof m->uname, "%s %s %s %s %s", u.sysname,
               u.nodename, u.release, u.version, u.machine);
  }
  m->sha_ni = -1;
  FILE *f = fopen("/proc/cpuinfo", "r");
  if (f) {
    char line[8192];
    int got_model = 0, got_flags = 0;
    while (fgets(line, sizeof line, f) && !(got_model && got_flags)) {
      char *colon = strchr(line, ':');
      if (!colon)
        continue;
      if (!got_model && strncmp(line, "model name", 10) == 0) {
        const char *v = colon + 1;
        while (*v == ' ' || *v == '\t')
          v++;
        snprintf(m->cpu_model, sizeof m->cpu_model, "%s", v);
        rstrip(m->cpu_model);
        got_model = 1;
      } else if (!got_flags && strncmp(line, "flags", 5) == 0) {
        /* whole-word search for sha_ni */
        m->sha_ni = 0;
        for (char *tok = colon + 1; *tok;) {
          while (*tok == ' ' || *tok == '\t')
            tok++;
          size_t len = strcspn(tok, " \t\n");
          if (len == 6 && strncmp(tok, "sha_ni", 6) == 0)
            m->sha_ni = 1;
          tok += len;
          if (len == 0)
            break;
        }
        got_flags = 1;
      }
    }
    fclose(f);
  }
  m->cores = sysconf(_SC_NPROCESSORS_ONLN);
  time_t now = time(NULL);
  struct tm tm;
  if (gmtime_r(&now, &tm))
    strftime(m->date, sizeof m->date, "%Y-%m-%dT%H:%M:%SZ", &tm);
  snprintf(m->openssl_lib, sizeof m->openssl_lib, "%s",
           OpenSSL_version(OPENSSL_VERSION));
}

void bench_machine_json(bench_json *j, const char *key, const bench_machine *m) {
  bench_json_begin_object(j, key);
  bench_json_str(j, "uname", m->uname);
  bench_json_str(j, "cpu_model", m->cpu_model[0] ? m->cpu_model : NULL);
  if (m->sha_ni < 0)
    bench_json_null(j, "sha_ni");
  else
    bench_json_bool(j, "sha_ni", m->sha_ni);
  bench_json_int(j, "cores", m->cores);
  bench_json_str(j, "date", m->date);
  bench_json_str(j, "openssl_library", m->openssl_lib);
  bench_json_end_object(j);
}

/* ------------------------------------------------------------------ */
/* openssl speed peer                                                  */
/* ------------------------------------------------------------------ */

double bench_openssl_sha256_rate(unsigned bytes, unsigned seconds, char *cmd,
                                 size_t cmd_cap) {
  char c[160];
  snprintf(c, sizeof c,
           "openssl speed -mr -evp sha256 -seconds %u -bytes %u 2>/dev/null",
           seconds, bytes);
  if (cmd)
    snprintf(cmd, cmd_cap, "openssl speed -mr -evp sha256 -seconds %u -bytes %u",
             seconds, bytes);
  FILE *p = popen(c, "r");
  if (!p)
    return -1;
  char line[1024];
  double bps = -1;
  while (fgets(line, sizeof line, p)) {
    if (strncmp(line, "+F:", 3) == 0) {
      /* machine-readable: +F:<idx>:<alg>:<bytes/s for each size> */
      char *last = strrchr(line, ':');
      if (last) {
        errno = 0;
        char *end;
        double v = strtod(last + 1, &end);
        if (errno == 0 && end != last + 1 && v > 0)
          bps = v;
      }
    } else if (bps < 0 && strncmp(line, "sha256", 6) == 0 &&
               isspace((unsigned char)line[6])) {
      /* human form: "sha256   401608.92k" (1000s of bytes/s) */
      char *end;
      double v = strtod(line + 6, &end);
      if (end != line + 6 && *end == 'k' && v > 0)
        bps = v * 1000.0;
    }
  }
  int st = pclose(p);
  if (st != 0 || bps <= 0)
    return -1;
  return bps / (double)bytes;
}

void bench_openssl_cli_version(char *out, size_t cap) {
  if (popen_line("openssl version 2>/dev/null", out, cap) != 0)
    out[0] = '\0';
}

/* ------------------------------------------------------------------ */
/* Option parsing helpers, progress, command line                      */
/* ------------------------------------------------------------------ */

int bench_parse_count(const char *s, uint64_t *out) {
  if (!s || !*s)
    return -1;
  char *end;
  errno = 0;
  if (!isdigit((unsigned char)s[0]))
    return -1;
  unsigned long long base = strtoull(s, &end, 10);
  if (errno)
    return -1;
  long double v = (long double)base;
  if (*end == '^') { /* 10^7, 2^16 */
    char *e2;
    unsigned long long ex = strtoull(end + 1, &e2, 10);
    if (e2 == end + 1 || *e2 || ex > 64)
      return -1;
    v = 1;
    for (unsigned long long i = 0; i < ex; i++)
      v *= (long double)base;
  } else if (*end == 'e' || *end == 'E') { /* 1e7 */
    char *e2;
    unsigned long long ex = strtoull(end + 1, &e2, 10);
    if (e2 == end + 1 || *e2 || ex > 19)
      return -1;
    for (unsigned long long i = 0; i < ex; i++)
      v *= 10;
  } else if (*end == 'k' || *end == 'K') {
    v *= 1e3L;
    if (end[1])
      return -1;
  } else if (*end == 'M') {
    v *= 1e6L;
    if (end[1])
      return -1;
  } else if (*end) {
    return -1;
  }
  if (v > 18446744073709551615.0L)
    return -1;
  *out = (uint64_t)v;
  return 0;
}

int bench_parse_double(const char *s, double *out) {
  if (!s || !*s)
    return -1;
  char *end;
  errno = 0;
  double v = strtod(s, &end);
  if (errno || *end || !isfinite(v) || v < 0)
    return -1;
  *out = v;
  return 0;
}

void bench_progress(const char *fmt, ...) {
  if (bench_quiet)
    return;
  va_list ap;
  va_start(ap, fmt);
  fputs("immubench: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  fflush(stderr);
}

char *bench_command_line(const char *prog, int argc, char **argv) {
  size_t cap = strlen(prog) + 1;
  for (int i = 0; i < argc; i++)
    cap += strlen(argv[i]) * 4 + 3;
  char *s = bench_xmalloc(cap);
  size_t o = (size_t)snprintf(s, cap, "%s", prog);
  for (int i = 0; i < argc; i++) {
    const char *a = argv[i];
    int plain = *a != '\0';
    for (const char *p = a; *p; p++)
      if (!(isalnum((unsigned char)*p) || strchr("-_=./,:^+@%", *p)))
        plain = 0;
    s[o++] = ' ';
    if (plain) {
      size_t n = strlen(a);
      memcpy(s + o, a, n);
      o += n;
    } else {
      s[o++] = '\'';
      for (const char *p = a; *p; p++) {
        if (*p == '\'') {
          memcpy(s + o, "'\\''", 4);
          o += 4;
        } else {
          s[o++] = *p;
        }
      }
      s[o++] = '\'';
    }
  }
  s[o] = '\0';
  return s;
}

int bench_option_value(const char *cmd, int argc, char **argv, int *i,
                       const char **val) {
  if (*i + 1 >= argc) {
    fprintf(stderr, "immubench %s: %s needs a value\n", cmd, argv[*i]);
    return -1;
  }
  *val = argv[++*i];
  return 0;
}

int bench_common_option(const char *cmd, int argc, char **argv, int *i,
                        const char **json, const char **cases) {
  const char *a = argv[*i];
  if (strcmp(a, "-q") == 0 || strcmp(a, "--quiet") == 0) {
    bench_quiet = 1;
    return 1;
  }
  if (strcmp(a, "--json") == 0)
    return bench_option_value(cmd, argc, argv, i, json) == 0 ? 1 : -1;
  if (strcmp(a, "--cases") == 0)
    return bench_option_value(cmd, argc, argv, i, cases) == 0 ? 1 : -1;
  return 0;
}
