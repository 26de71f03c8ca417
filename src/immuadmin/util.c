/* SPDX-License-Identifier: Apache-2.0 */
/*
 * immuadmin helpers: aborting allocation (CLI code only, style anchors
 * 7.7), password prompts, confirmation, human-readable sizes and
 * durations, text tables and progress bars.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "immuadmin/ia.h"
#include "immudb/err.h"

void ia_errorf(const char *fmt, ...) {
  va_list ap;
  fflush(stdout);
  fputs("immuadmin: ", stderr);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
}

void ia_conn_error(const ia_conn *c, const char *fmt, ...) {
  va_list ap;
  fflush(stdout);
  fputs("immuadmin: ", stderr);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fprintf(stderr, ": %s\n", c->err[0] ? c->err : "unknown error");
}

int ia_exit_for(int rc) {
  return rc == IMMU_ECORRUPT || rc == IMMU_EVERIFY ? IA_EXIT_INTEGRITY
                                                   : IA_EXIT_FAIL;
}

void *ia_xmalloc(size_t n) {
  void *p = malloc(n ? n : 1);
  if (p == NULL) {
    fputs("immuadmin: out of memory\n", stderr);
    exit(IA_EXIT_FAIL);
  }
  return p;
}

void *ia_xrealloc(void *p, size_t n) {
  void *q = realloc(p, n ? n : 1);
  if (q == NULL) {
    fputs("immuadmin: out of memory\n", stderr);
    exit(IA_EXIT_FAIL);
  }
  return q;
}

char *ia_xstrdup(const char *s) {
  size_t n = strlen(s);
  char *p = ia_xmalloc(n + 1);
  memcpy(p, s, n + 1);
  return p;
}

/* ------------------------------------------------------------------ */
/* Prompts                                                             */
/* ------------------------------------------------------------------ */

/* Reads one line (without its newline) from |fp|; NULL on EOF. */
static char *read_line(FILE *fp) {
  size_t cap = 128, n = 0;
  char *s = ia_xmalloc(cap);
  int ch;
  while ((ch = fgetc(fp)) != EOF && ch != '\n') {
    if (n + 1 >= cap) {
      cap *= 2;
      s = ia_xrealloc(s, cap);
    }
    s[n++] = (char)ch;
  }
  if (ch == EOF && n == 0) {
    free(s);
    return NULL;
  }
  if (n > 0 && s[n - 1] == '\r')
    n--;
  s[n] = '\0';
  return s;
}

/* "enc:" + base64 -> the decoded password (immudb's convention). */
static char *decode_enc(const char *s) {
  size_t n = strlen(s);
  unsigned char *out = ia_xmalloc(n + 4);
  int len = EVP_DecodeBlock(out, (const unsigned char *)s, (int)n);
  if (len < 0) {
    free(out);
    return NULL;
  }
  /* EVP_DecodeBlock counts the padding bytes as zeros. */
  while (n > 0 && s[n - 1] == '=' && len > 0) {
    len--;
    n--;
  }
  out[len] = '\0';
  if (memchr(out, '\0', (size_t)len) != NULL) {
    free(out);
    return NULL;
  }
  return (char *)out;
}

char *ia_read_password(const char *prompt, const char *given) {
  if (given != NULL) {
    if (strncmp(given, "enc:", 4) == 0) {
      char *p = decode_enc(given + 4);
      if (p == NULL)
        ia_errorf("the password after \"enc:\" is not valid base64");
      return p;
    }
    return ia_xstrdup(given);
  }
  int fd = open("/dev/tty", O_RDWR | O_NOCTTY | O_CLOEXEC);
  if (fd < 0 || !isatty(STDIN_FILENO)) {
    /* Not interactive: one line from stdin (scripts pipe passwords). */
    if (fd >= 0)
      close(fd);
    char *line = read_line(stdin);
    if (line == NULL)
      ia_errorf("%s no password given (stdin is closed; use the flag or "
                "the IMMUADMIN_* environment variable)",
                prompt);
    return line;
  }
  FILE *tty = fdopen(fd, "r+");
  if (tty == NULL) {
    close(fd);
    ia_errorf("cannot open the terminal: %s", strerror(errno));
    return NULL;
  }
  struct termios old, noecho;
  int restore = 0;
  fprintf(tty, "%s ", prompt);
  fflush(tty);
  if (tcgetattr(fd, &old) == 0) {
    noecho = old;
    noecho.c_lflag &= ~(tcflag_t)ECHO;
    noecho.c_lflag |= ECHONL;
    restore = tcsetattr(fd, TCSAFLUSH, &noecho) == 0;
  }
  char *line = read_line(tty);
  if (restore)
    tcsetattr(fd, TCSAFLUSH, &old);
  fclose(tty);
  if (line == NULL)
    ia_errorf("no password given");
  return line;
}

int ia_confirm(const char *prompt) {
  printf("%s [y/N]: ", prompt);
  fflush(stdout);
  char *line = read_line(stdin);
  int yes =
      line != NULL && (strcmp(line, "y") == 0 || strcmp(line, "Y") == 0 ||
                       strcmp(line, "yes") == 0 || strcmp(line, "YES") == 0);
  free(line);
  return yes;
}

/* ------------------------------------------------------------------ */
/* Formatting                                                          */
/* ------------------------------------------------------------------ */

void ia_bytes(uint64_t n, char *buf, size_t cap) {
  static const char *const units[] = {"B",   "KiB", "MiB", "GiB",
                                      "TiB", "PiB", "EiB"};
  double v = (double)n;
  size_t u = 0;
  if (n < 1024) {
    snprintf(buf, cap, "%" PRIu64 " B", n);
    return;
  }
  while (v >= 1024.0 && u + 1 < sizeof units / sizeof units[0]) {
    v /= 1024.0;
    u++;
  }
  snprintf(buf, cap, "%.1f %s", v, units[u]);
}

void ia_duration(uint64_t secs, char *buf, size_t cap) {
  uint64_t d = secs / 86400, h = secs % 86400 / 3600, m = secs % 3600 / 60,
           s = secs % 60;
  if (d > 0)
    snprintf(buf, cap, "%" PRIu64 "d%" PRIu64 "h%" PRIu64 "m%" PRIu64 "s", d, h,
             m, s);
  else if (h > 0)
    snprintf(buf, cap, "%" PRIu64 "h%" PRIu64 "m%" PRIu64 "s", h, m, s);
  else if (m > 0)
    snprintf(buf, cap, "%" PRIu64 "m%" PRIu64 "s", m, s);
  else
    snprintf(buf, cap, "%" PRIu64 "s", s);
}

/* ------------------------------------------------------------------ */
/* Tables                                                              */
/* ------------------------------------------------------------------ */

void ia_table_init(ia_table *t, size_t ncols, const char *const *header) {
  t->ncols = ncols;
  t->nrows = 0;
  t->cells = NULL;
  ia_table_row(t, header);
}

void ia_table_row(ia_table *t, const char *const *cells) {
  t->cells = ia_xrealloc(t->cells, (t->nrows + 1) * t->ncols * sizeof(char *));
  for (size_t i = 0; i < t->ncols; i++)
    t->cells[t->nrows * t->ncols + i] =
        ia_xstrdup(cells[i] != NULL ? cells[i] : "");
  t->nrows++;
}

void ia_table_print(const ia_table *t, FILE *fp) {
  size_t *w = ia_xmalloc(t->ncols * sizeof *w);
  for (size_t c = 0; c < t->ncols; c++) {
    w[c] = 0;
    for (size_t r = 0; r < t->nrows; r++) {
      size_t n = strlen(t->cells[r * t->ncols + c]);
      if (n > w[c])
        w[c] = n;
    }
  }
  for (size_t r = 0; r < t->nrows; r++) {
    for (size_t c = 0; c < t->ncols; c++) {
      const char *s = t->cells[r * t->ncols + c];
      if (c + 1 < t->ncols)
        fprintf(fp, "%-*s  ", (int)w[c], s);
      else
        fprintf(fp, "%s", s);
    }
    fputc('\n', fp);
    if (r == 0) {
      for (size_t c = 0; c < t->ncols; c++) {
        for (size_t k = 0; k < w[c]; k++)
          fputc('-', fp);
        if (c + 1 < t->ncols)
          fputs("  ", fp);
      }
      fputc('\n', fp);
    }
  }
  free(w);
}

void ia_table_free(ia_table *t) {
  for (size_t i = 0; i < t->nrows * t->ncols; i++)
    free(t->cells[i]);
  free(t->cells);
  t->cells = NULL;
  t->nrows = 0;
}

/* ------------------------------------------------------------------ */
/* Progress bar                                                        */
/* ------------------------------------------------------------------ */

double ia_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void progress_draw(ia_progress *p) {
  const int width = 30;
  double frac = p->total ? (double)p->done / (double)p->total : 1.0;
  if (frac > 1.0)
    frac = 1.0;
  int fill = (int)(frac * width);
  double el = ia_now() - p->start;
  double rate = el > 0 ? (double)p->done / el : 0;
  char bar[64];
  for (int i = 0; i < width; i++)
    bar[i] = i < fill ? '#' : '.';
  bar[width] = '\0';
  printf("\r%-10s [%s] %3d%% %" PRIu64 "/%" PRIu64 " txs %8.0f tx/s", p->label,
         bar, (int)(frac * 100.0), p->done, p->total, rate);
  fflush(stdout);
}

void ia_progress_start(ia_progress *p, int enabled, const char *label,
                       uint64_t total) {
  p->enabled = enabled;
  p->label = label;
  p->total = total;
  p->done = 0;
  p->start = ia_now();
  p->last_draw = 0;
  if (p->enabled)
    progress_draw(p);
}

void ia_progress_update(ia_progress *p, uint64_t done) {
  p->done = done;
  if (!p->enabled)
    return;
  double t = ia_now();
  if (t - p->last_draw >= 0.1 || done == p->total) {
    p->last_draw = t;
    progress_draw(p);
  }
}

void ia_progress_end(ia_progress *p) {
  if (!p->enabled)
    return;
  progress_draw(p);
  fputc('\n', stdout);
  fflush(stdout);
}
