/* SPDX-License-Identifier: Apache-2.0 */
/*
 * immuclient: interactive mode (`immuclient it`, or no command on a
 * terminal).
 *
 * Each line is split like a shell would (blanks; '...' and "..." quotes;
 * backslash escapes) and run as a command on one connection, so a login
 * lasts for the whole session. The output flags (--json, --value-only,
 * --revision-separator) may be given on a line and apply to that line only.
 * On a terminal, lines are read with libedit (the readline-compatible
 * API: line editing, command-name completion) and kept in the history
 * file ~/.immuclient_history; otherwise they are read from stdin as is.
 * "exit" or "quit" (or end of input) leaves.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "immuclient/ic.h"

#if defined(__has_include)
#if __has_include(<editline/readline.h>)
#include <editline/readline.h>
#define IC_HAVE_EDITLINE 1
#endif
#endif

#define MAX_TOKENS 64

/* Splits |line| in place into at most MAX_TOKENS words. Returns the count,
 * or -1 for an unterminated quote. */
static int tokenize(char *line, char **tok) {
  int n = 0;
  char *r = line, *w = line;
  while (*r) {
    while (*r == ' ' || *r == '\t' || *r == '\r' || *r == '\n')
      r++;
    if (*r == '\0')
      break;
    if (n == MAX_TOKENS)
      return -2;
    tok[n++] = w;
    char q = 0;
    while (*r) {
      char ch = *r;
      if (q) {
        if (ch == q) {
          q = 0;
          r++;
        } else if (ch == '\\' && q == '"' && r[1] != '\0') {
          *w++ = r[1];
          r += 2;
        } else {
          *w++ = ch;
          r++;
        }
      } else if (ch == '\'' || ch == '"') {
        q = ch;
        r++;
      } else if (ch == '\\' && r[1] != '\0') {
        *w++ = r[1];
        r += 2;
      } else if (ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n') {
        r++;
        break;
      } else {
        *w++ = ch;
        r++;
      }
    }
    if (q)
      return -1;
    *w++ = '\0';
  }
  return n;
}

/* Runs one line. Returns 1 to leave, 0 otherwise. */
static int run_line(ic_ctx *x, char *line) {
  char *tok[MAX_TOKENS];
  int n = tokenize(line, tok);
  if (n == -1) {
    ic_errorf(x, "unterminated quote");
    return 0;
  }
  if (n == -2) {
    ic_errorf(x, "too many arguments");
    return 0;
  }
  if (n == 0)
    return 0;
  if (strcmp(tok[0], "exit") == 0 || strcmp(tok[0], "quit") == 0)
    return 1;

  /* Per-line output flags. */
  int json = x->o.json, value_only = x->o.value_only, nargs = 0;
  char *sep =
      x->o.revision_separator ? ic_xstrdup(x->o.revision_separator) : NULL;
  if (ic_parse_flags(x, n, tok, &nargs, 1) == 0 && nargs > 0) {
    if (strcmp(tok[0], "it") == 0 || strcmp(tok[0], "audit-mode") == 0)
      ic_errorf(x, "%s is not available in interactive mode", tok[0]);
    else
      (void)ic_run_command(x, nargs, tok);
  }
  x->o.json = json;
  x->o.value_only = value_only;
  free(x->o.revision_separator);
  x->o.revision_separator = sep;
  fflush(stdout);
  fflush(stderr);
  return 0;
}

#ifdef IC_HAVE_EDITLINE
static char *complete_cmd(const char *text, int state) {
  static size_t idx, len;
  const char *name;
  if (state == 0) {
    idx = 0;
    len = strlen(text);
  }
  while ((name = ic_command_name(idx)) != NULL) {
    idx++;
    if (strncmp(name, text, len) == 0)
      return ic_xstrdup(name);
  }
  return NULL;
}

static char **complete(const char *text, int start, int end) {
  (void)end;
  if (start != 0)
    return NULL;
  return rl_completion_matches(text, complete_cmd);
}
#endif

int ic_interactive(ic_ctx *x) {
  int tty = isatty(STDIN_FILENO);
  int rc;

  x->interactive = 1;
  rc = ic_connect(x);
  if (rc != 0)
    return rc;

#ifdef IC_HAVE_EDITLINE
  if (tty) {
    const char *home = ic_home();
    size_t hl = strlen(home) + 32;
    char *hist = ic_xmalloc(hl);
    snprintf(hist, hl, "%s/.immuclient_history", home);
    rl_readline_name = "immuclient";
    rl_attempted_completion_function = complete;
    using_history();
    stifle_history(1000);
    (void)read_history(hist);
    puts("immuclient " IC_VERSION " interactive mode: type 'help' for the "
         "commands, 'exit' to leave");
    for (;;) {
      char *line = readline("immuclient> ");
      if (line == NULL) {
        putchar('\n');
        break;
      }
      if (line[strspn(line, " \t")] != '\0') {
        add_history(line);
        (void)write_history(hist);
      }
      int quit = run_line(x, line);
      free(line);
      if (quit)
        break;
    }
    (void)write_history(hist);
    free(hist);
    return 0;
  }
#else
  (void)tty;
#endif

  char *line = NULL;
  size_t cap = 0;
  while (getline(&line, &cap, stdin) >= 0) {
    if (run_line(x, line))
      break;
  }
  free(line);
  return 0;
}
