/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Settings of the immudb server process (the "process" layer of
 * server/server.h): command-line flags, IMMUDB_* environment variables and
 * the immudb.toml configuration file, merged with the precedence
 *
 *     flags  >  environment  >  config file  >  defaults
 *
 * as immudb does with viper. Names follow immudb (cmd/immudb/command):
 * every setting <name> is the flag --<name>, the TOML key <name> and the
 * environment variable IMMUDB_<NAME> with '-' turned into '_' and letters
 * upper-cased (admin-password -> IMMUDB_ADMIN_PASSWORD, signingKey ->
 * IMMUDB_SIGNINGKEY).
 *
 * The configuration file is a flat TOML subset: `key = value` lines with
 * basic ("...") and literal ('...') strings, integers, booleans, comments
 * and blank lines. Tables, arrays, floats and dates are refused with a
 * message naming the line. Unknown keys are refused too; immudb settings
 * this server does not implement (pgsql-server, web-server, s3-*, ...) are
 * accepted and reported as ignored.
 *
 * The module also holds the process logger (one line per message,
 * "2026-11-21T23:59:59Z INFO  [server] message", or JSON lines), the
 * loopback test for listen addresses and the TLS context builder.
 *
 * Thread-safety: the immu_cfg_* functions are not thread-safe (start-up
 * code); the immu_log_* functions are.
 */
#ifndef IMMU_SERVER_CONFIG_H
#define IMMU_SERVER_CONFIG_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "server/server.h"

/* Version reported by `immudb version`, /version and the startup log. The
 * build may override it with -DIMMU_SERVER_VERSION="...". */
#ifndef IMMU_SERVER_VERSION
#define IMMU_SERVER_VERSION "1.9.5"
#endif
#ifndef IMMU_SERVER_BUILDTIME
#define IMMU_SERVER_BUILDTIME ""
#endif

/* Log levels of the |log| callbacks in server/server.h and of immu_log. */
enum immu_log_level {
  IMMU_LOG_ERROR = 0,
  IMMU_LOG_WARN = 1,
  IMMU_LOG_INFO = 2,
  IMMU_LOG_DEBUG = 3
};

/* Where the value of a setting came from. */
enum immu_cfg_source {
  IMMU_CFG_DEFAULT = 0,
  IMMU_CFG_FILE = 1,
  IMMU_CFG_ENV = 2,
  IMMU_CFG_FLAG = 3
};

/* Every setting of the process. Strings are owned by the struct (heap) and
 * never NULL after immu_cfg_init ("" = unset); release with immu_cfg_free.
 */
typedef struct immu_cfg {
  /* listening */
  char *address;            /* "0.0.0.0" */
  int port;                 /* 3322; 0 = any free port */
  size_t max_recv_msg_size; /* 32 MiB, as immudb */
  /* TLS */
  int mtls;          /* require and verify client certificates */
  char *certificate; /* server certificate (PEM) */
  char *pkey;        /* server private key (PEM) */
  char *clientcas;   /* CA bundle for client certificates (PEM) */
  /* service */
  char *dir;             /* "./data" */
  char *admin_password;  /* "immudb"; an "enc:" prefix means base64 */
  int auth;              /* 1 */
  int devmode;           /* 0 */
  int maintenance;       /* 0 */
  int synced;            /* 1 */
  char *signing_key;     /* signingKey: PEM path, "" = none */
  int token_expiry_min;  /* token-expiry-time: 1440 */
  int session_timeout_s; /* max-session-inactivity-time: 180 */
  int max_sessions;      /* 100 */
  /* process */
  char *config;         /* config file used ("" = none) */
  char *pidfile;        /* "" = none */
  char *logfile;        /* "" = stderr */
  char *logformat;      /* "text" or "json" */
  int log_level;        /* enum immu_log_level; log-level: "info" */
  int detached;         /* -d: run in the background */
  int shutdown_grace_s; /* in-flight calls get this long at stop: 10 */
  int io_threads;       /* gRPC I/O loop threads; 0 = cores / 2, 1 to 4 */
  int index_cache_mib;  /* key index block cache of all databases; 0 = auto */
  /* metrics and health HTTP server */
  int metrics_server; /* 1 */
  int metrics_port;   /* metrics-server-port: 9497; 0 = any */
  int no_histograms;  /* 0 */
  /* consistency checker */
  int consistency_check;      /* 1 */
  int consistency_interval_s; /* consistency-check-interval: 60 */
  /* what the command line asked for besides running */
  int want_help;    /* --help, -h or `immudb help` */
  int want_version; /* `immudb version` or --version */
  /* private */
  unsigned char src_[64]; /* enum immu_cfg_source per option */
} immu_cfg;

/* Sets every field to its default. Aborts if memory runs out (start-up
 * code of an executable). */
void immu_cfg_init(immu_cfg *c);
/* Releases the strings; |c| must be initialised again before reuse. NULL
 * allowed. */
void immu_cfg_free(immu_cfg *c);

/* Builds the settings from defaults, the config file, |envp| (NULL
 * terminated "NAME=value" array, e.g. environ; NULL = none) and the
 * command line (argv[0] is the program name). |c| must be initialised.
 *
 * The config file is --config (flag, or IMMUDB_CONFIG), else
 * ./configs/immudb.toml when that file exists.
 *
 * Returns 0 if it succeeds, or IMMU_EINVAL with *errmsg (caller frees with
 * immu__free()) naming the flag, variable or "file:line" and the problem;
 * -errno when the config file cannot be read. |warn| (may be NULL) receives
 * notes about ignored immudb settings. */
int immu_cfg_load(immu_cfg *c, int argc, char *const *argv, char *const *envp,
                  void (*warn)(void *arg, const char *msg), void *warn_arg,
                  char **errmsg);

/* Applies the TOML text |text| (|name| names it in messages) to |c| as the
 * config-file layer. Returns 0 or IMMU_EINVAL with *errmsg. For tests and
 * for immu_cfg_load. */
int immu_cfg_apply_toml(immu_cfg *c, const char *name, const char *text,
                        void (*warn)(void *arg, const char *msg),
                        void *warn_arg, char **errmsg);

/* Where |option| ("port", "admin-password") got its value; -1 if there is
 * no such option. */
int immu_cfg_source_of(const immu_cfg *c, const char *option);
/* "default", "config file", "environment", "flag". */
const char *immu_cfg_source_name(int src);

/* The admin password with an "enc:" prefix decoded from base64. Returns a
 * heap string (immu__free()) or NULL with *errmsg if the encoding is bad. */
char *immu_cfg_admin_password(const immu_cfg *c, char **errmsg);

/* Overwrites the fields of the service and transport configs that come
 * from settings; the caller initialises them first (immu_server_config_init,
 * immu_grpc_config_init) and sets the rest (ssl_ctx, uuid, on_call_done).
 * Pointers in them borrow |c| (and |password|, the decoded admin password)
 * and stay valid while those live. */
void immu_cfg_to_server(const immu_cfg *c, const char *password,
                        immu_server_config *sc);
void immu_cfg_to_grpc(const immu_cfg *c, immu_grpc_config *gc);

/* Writes the --help text to |f| (a FILE *). */
void immu_cfg_usage(void *f);

/* Parsers shared with tests. Each returns 0 or IMMU_EINVAL. */
int immu_cfg_parse_bool(const char *s, int *out);
int immu_cfg_parse_int(const char *s, long long min, long long max,
                       long long *out);
/* Go-style duration ("3m0s", "90s", "1h30m", "250ms") or bare seconds;
 * result in whole seconds (rounded up). */
int immu_cfg_parse_duration(const char *s, long long *out_s);

/* 1 if |addr| is a loopback address: 127.0.0.0/8, ::1, ::ffff:127.x.y.z,
 * "localhost". 0 otherwise (including wildcard and unparsable ones). */
int immu_cfg_is_loopback(const char *addr);

/* Builds the server's TLS context (TLS >= 1.2) from certificate/pkey and,
 * with mtls, clientcas (client certificates are then required and
 * verified). *out is NULL when TLS is not configured. Returns 0, or
 * IMMU_EINVAL with *errmsg naming the file and OpenSSL's reason. The
 * result is an SSL_CTX * (free with SSL_CTX_free). */
int immu_cfg_tls_ctx(const immu_cfg *c, void **out, char **errmsg);

/* ------------------------------------------------------------------ */
/* logger                                                              */
/* ------------------------------------------------------------------ */

/* Configures the process logger: messages above |level| are dropped; they
 * go to |path| (opened O_APPEND, created 0640) or stderr when |path| is
 * NULL or "". |json| selects JSON lines. Returns 0 or -errno. May be called
 * again (SIGHUP reopen). */
int immu_log_open(const char *path, int level, int json);
/* Reopens the current log file (after rotation). Returns 0 or -errno. */
int immu_log_reopen(void);
/* The file descriptor the logger writes to (2 for stderr). */
int immu_log_fd(void);
void immu_log_close(void);
int immu_log_enabled(int level);

/* Logs one message from |component| ("server", "grpc", "metrics"). */
void immu_log(int level, const char *component, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void immu_vlog(int level, const char *component, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));
/* Adapter for the |log| callbacks of server/server.h; |arg| is the
 * component name (a static string). */
void immu_log_cb(void *arg, int level, const char *msg);

/* Formats one log line (with the trailing newline) into |buf|; returns the
 * length it needed, like snprintf. */
size_t immu_log_format(char *buf, size_t n, time_t t, int level,
                       const char *component, const char *msg, int json);

/* "error", "warn", "info", "debug" -> level; -1 if unknown. */
int immu_log_level_parse(const char *s);

#endif
