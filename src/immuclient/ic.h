/* SPDX-License-Identifier: Apache-2.0 */
/*
 * immuclient: the command-line client of immudb (immudb-api.md section
 * 5.2), on the C client SDK (include/immudb/client.h).
 *
 * Files
 *   main.c         settings (flags, IMMUCLIENT_* variables), main()
 *   conn.c         the SDK handle, authentication, the token file, errors
 *   out.c          output: human-readable, --json, --value-only
 *   cmds.c         the command table and every command
 *   interactive.c  `immuclient it` (libedit line editing and history)
 *   audit.c        `immuclient audit-mode` and its Prometheus endpoint
 *
 * Conventions
 *   - Commands return an exit code (IC_EXIT_*) and print their result on
 *     stdout only once everything succeeded; failures print one line on
 *     stderr (ic_fail / ic_errorf), plus {"error": ...} on stdout with
 *     --json.
 *   - Start-up and CLI code: allocation failure aborts (ic_xmalloc), as the
 *     house style allows in executables (style anchors 7.7).
 *   - Single-threaded except audit.c, whose metrics server runs in a thread
 *     of its own.
 */
#ifndef IMMU_IMMUCLIENT_IC_H
#define IMMU_IMMUCLIENT_IC_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "immudb/client.h"

#define IC_VERSION "1.9.5"

/* Exit codes. */
enum {
  IC_EXIT_OK = 0,
  IC_EXIT_ERR = 1,      /* the command failed (server error, not found...) */
  IC_EXIT_USAGE = 2,    /* bad flags, arguments or settings */
  IC_EXIT_TAMPERED = 3, /* a proof did not verify / tampering detected */
};

/* Every setting; filled from defaults, then IMMUCLIENT_* variables, then
 * flags (main.c). Strings are heap copies (NULL = not set). */
typedef struct ic_opts {
  char *address;
  int port;
  char *username;
  char *password; /* decoded (the "enc:" base64 form is accepted) */
  char *database;
  char *tokenfile;
  int mtls;
  char *servername;
  char *certificate;
  char *pkey;
  char *clientcas;
  char *server_signing_pub_key;
  char *dir; /* trusted-state directory */
  int json;
  int value_only;
  char *revision_separator;
  long long max_recv_msg_size;
  long long timeout_ms; /* per call deadline, 0 = none */

  /* audit-mode */
  char *audit_username;
  char *audit_password;
  char *audit_databases; /* comma-separated name prefixes; NULL = all */
  long long audit_interval_ms;
  int audit_once;
  int audit_verify_values; /* re-prove every tx from 1 at each round */
  char *audit_monitoring_host;
  int audit_monitoring_port;
  char *audit_notification_url; /* accepted, not implemented */
  char *audit_state_dir;        /* NULL = <dir>/audit */
} ic_opts;

typedef struct ic_ctx {
  ic_opts o;
  immu_client *c; /* NULL until ic_connect */
  int interactive;
  int authed;       /* a login, token or session is in place */
  char *token_path; /* resolved --tokenfile */
} ic_ctx;

/* ---- main.c ------------------------------------------------------- */

/* Parses |argc|/|argv| flags into x->o (also used for the per-line flags
 * of interactive mode, with |line_mode| = 1: only output flags allowed).
 * Positional arguments are moved to the front of |argv|; *nargs gets their
 * count. Returns 0 or IC_EXIT_USAGE (message printed). */
int ic_parse_flags(ic_ctx *x, int argc, char **argv, int *nargs, int line_mode);

/* Prints the usage text (all commands and flags) to |f|. */
void ic_usage(FILE *f);

/* ---- conn.c ------------------------------------------------------- */

/* Creates the SDK handle (once). Returns 0 or IC_EXIT_ERR (printed). */
int ic_connect(ic_ctx *x);

/* Makes sure the handle is authenticated for a command that needs it:
 * --username/--password (login), else the token file, else nothing (the
 * server will say so). Selects --database. Returns 0 or an exit code. */
int ic_auth(ic_ctx *x);

/* Logs in as |user| with |password| (and selects x->o.database), then
 * stores the token file. Returns 0 or an exit code (printed). */
int ic_login(ic_ctx *x, const char *user, const char *password);

/* Deletes the token file; logs out of the server when logged in. Sets
 * *was_logged_in. Returns 0 or an exit code. */
int ic_logout(ic_ctx *x, int *was_logged_in);

/* UseDatabase; with |persist| (the `use` command) the token file, when it
 * is the source of the login, then holds the new token and database (a
 * --database flag selects for one invocation only). */
int ic_use(ic_ctx *x, const char *db, int persist);

/* Reads a password: from the terminal without echo when stdin is one (with
 * |prompt|), else the first line of stdin. Returns a heap string or NULL
 * (message printed). */
char *ic_read_password(const char *prompt);

/* "enc:<base64>" -> decoded, anything else copied. NULL on bad base64. */
char *ic_decode_password(const char *s);

/* Prints the failure of SDK call |rc| for command |what| on stderr (and
 * stdout with --json) in one line and returns the exit code to use. */
int ic_fail(ic_ctx *x, int rc, const char *what);

/* The server's own message of the last failure ("key not found"), or the
 * SDK's message when there was no server status. */
const char *ic_err_text(void);

/* SDK options from the settings (strings borrowed from x->o). */
void ic_fill_options(ic_ctx *x, immu_client_options *o, const char *state_dir);

/* Closes the handle. */
void ic_disconnect(ic_ctx *x);

/* ---- out.c -------------------------------------------------------- */

__attribute__((format(printf, 2, 3))) void ic_errorf(ic_ctx *x, const char *fmt,
                                                     ...);
__attribute__((format(printf, 1, 2))) void ic_warnf(const char *fmt, ...);

/* "label:" padded to the value column, then the formatted value. */
__attribute__((format(printf, 2, 3))) void ic_line(const char *label,
                                                   const char *fmt, ...);
/* The same with raw bytes as the value. */
void ic_line_bytes(const char *label, const uint8_t *b, size_t n);
void ic_line_hex(const char *label, const uint8_t *b, size_t n);
void ic_hex(char *out, const uint8_t *b, size_t n); /* out: 2n+1 bytes */

/* Minimal streaming JSON writer (one document, compact, "\n" at the end). */
typedef struct ic_json {
  FILE *f;
  int depth;
  unsigned char first[32];
} ic_json;

void ic_json_begin(ic_json *j, FILE *f);
void ic_json_end(ic_json *j);                  /* writes the final newline */
void ic_json_obj(ic_json *j, const char *key); /* key NULL in arrays/top */
void ic_json_obj_end(ic_json *j);
void ic_json_arr(ic_json *j, const char *key);
void ic_json_arr_end(ic_json *j);
void ic_json_str(ic_json *j, const char *key, const char *s);
void ic_json_bytes(ic_json *j, const char *key, const uint8_t *b, size_t n);
void ic_json_hex(ic_json *j, const char *key, const uint8_t *b, size_t n);
void ic_json_u64(ic_json *j, const char *key, uint64_t v);
void ic_json_i64(ic_json *j, const char *key, int64_t v);
void ic_json_dbl(ic_json *j, const char *key, double v);
void ic_json_bool(ic_json *j, const char *key, int v);

/* Output of the common result shapes (plain, --json or --value-only). */
void ic_print_entry(ic_ctx *x, const immu_client_entry *e, int verified);
void ic_print_entries(ic_ctx *x, const immu_client_entries *l);
void ic_print_zentries(ic_ctx *x, const immu_client_zentries *l);
void ic_print_tx(ic_ctx *x, const immu_client_tx *tx, int verified);
void ic_print_txs(ic_ctx *x, const immu_client_tx_list *l);
void ic_print_state(ic_ctx *x, const immu_client_state *st);
/* Formats Unix seconds |ts| as "2006-01-02 15:04:05 +0000 UTC" (local). */
void ic_fmt_time(char *buf, size_t cap, int64_t ts, int utc_rfc3339);

/* ---- cmds.c ------------------------------------------------------- */

/* Runs command argv[0] with its arguments. Returns an exit code; for an
 * unknown command prints an error and returns IC_EXIT_USAGE. */
int ic_run_command(ic_ctx *x, int argc, char **argv);

/* Name of command |i| (for completion); NULL past the end. */
const char *ic_command_name(size_t i);

/* Prints the command list to |f|. */
void ic_commands_help(FILE *f);

/* ---- interactive.c / audit.c -------------------------------------- */

int ic_interactive(ic_ctx *x);
int ic_audit_mode(ic_ctx *x);

/* ---- small helpers (main.c) -------------------------------------- */

void *ic_xmalloc(size_t n);
char *ic_xstrdup(const char *s);
/* Replaces *dst (freed) with a copy of |s| (NULL allowed). */
void ic_setstr(char **dst, const char *s);
/* $HOME (or the passwd entry); never NULL. */
const char *ic_home(void);
/* Parses an unsigned decimal; 0 on success, -1 on a bad number. */
int ic_parse_u64(const char *s, uint64_t *out);
/* "5m", "30s", "1h30m", "500ms", or plain seconds -> milliseconds. */
int ic_parse_duration_ms(const char *s, long long *out);

#endif /* IMMU_IMMUCLIENT_IC_H */
