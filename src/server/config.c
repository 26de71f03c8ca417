/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Process settings of the immudb server: flags, IMMUDB_* variables and
 * immudb.toml (see config.h for the rules), the logger, the loopback test
 * and the TLS context.
 *
 * One table (OPTS) drives everything: each row names a setting, its type,
 * the field it fills and its default. Values from every layer go through
 * set_value() as text, so a flag, a variable and a TOML value are parsed
 * and checked the same way; the layers are applied from the weakest
 * (defaults) to the strongest (flags), each overwriting the previous one.
 */
#include "server/config.h"

#include <arpa/inet.h>
#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "core/mem.h"
#include "immudb/err.h"

/* ------------------------------------------------------------------ */
/* small helpers (start-up code: allocation failure aborts)            */
/* ------------------------------------------------------------------ */

static void *xmalloc(size_t n) {
  void *p = immu__malloc(n);
  if (p == NULL) {
    fputs("immudb: out of memory\n", stderr);
    abort();
  }
  return p;
}

static char *xstrdup(const char *s) {
  size_t n = strlen(s) + 1;
  char *p = xmalloc(n);
  memcpy(p, s, n);
  return p;
}

static char *xstrndup(const char *s, size_t n) {
  char *p = xmalloc(n + 1);
  memcpy(p, s, n);
  p[n] = '\0';
  return p;
}

__attribute__((format(printf, 1, 2))) static char *xfmt(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  if (n < 0)
    return xstrdup(fmt);
  char *p = xmalloc((size_t)n + 1);
  va_start(ap, fmt);
  vsnprintf(p, (size_t)n + 1, fmt, ap);
  va_end(ap);
  return p;
}

/* Sets *errmsg (when errmsg is not NULL) and returns IMMU_EINVAL. */
__attribute__((format(printf, 2, 3))) static int fail(char **errmsg,
                                                      const char *fmt, ...) {
  if (errmsg != NULL) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    char *p = xmalloc(n > 0 ? (size_t)n + 1 : 1);
    p[0] = '\0';
    if (n > 0) {
      va_start(ap, fmt);
      vsnprintf(p, (size_t)n + 1, fmt, ap);
      va_end(ap);
    }
    *errmsg = p;
  }
  return IMMU_EINVAL;
}

/* ------------------------------------------------------------------ */
/* the option table                                                    */
/* ------------------------------------------------------------------ */

enum opt_type {
  T_STR,      /* char * */
  T_INT,      /* int, in [min, max] */
  T_BOOL,     /* int 0/1 */
  T_DUR,      /* int seconds, in [min, max] */
  T_SIZE,     /* size_t, in [min, max] */
  T_LEVEL,    /* int enum immu_log_level */
  T_IGN_BOOL, /* immudb setting we do not implement (boolean) */
  T_IGN_STR   /* immudb setting we do not implement (with a value) */
};

typedef struct opt {
  const char *name;
  char shortc;
  unsigned char type;
  unsigned char flag_only; /* not settable from the config file */
  size_t off;
  long long min, max;
  const char *def;
  const char *meta; /* value name in --help ("" for booleans) */
  const char *help;
} opt;

#define F(field) offsetof(immu_cfg, field)
#define NOFIELD 0

static const opt OPTS[] = {
    {"dir", 0, T_STR, 0, F(dir), 0, 0, "./data", "path", "data folder"},
    {"address", 'a', T_STR, 0, F(address), 0, 0, "0.0.0.0", "ip",
     "bind address"},
    {"port", 'p', T_INT, 0, F(port), 0, 65535, "3322", "int",
     "port number (0 = any free port)"},
    {"config", 0, T_STR, 1, F(config), 0, 0, "", "file",
     "config file (default ./configs/immudb.toml when it exists)"},
    {"pidfile", 0, T_STR, 0, F(pidfile), 0, 0, "", "file",
     "pid path with filename, e.g. /var/run/immudb.pid"},
    {"logfile", 0, T_STR, 0, F(logfile), 0, 0, "", "file",
     "log path with filename (appended to), e.g. /var/log/immudb.log"},
    {"logformat", 0, T_STR, 0, F(logformat), 0, 0, "text", "text|json",
     "log format"},
    {"log-level", 0, T_LEVEL, 0, F(log_level), 0, 0, "info", "level",
     "error, warn, info or debug"},
    {"detached", 'd', T_BOOL, 0, F(detached), 0, 0, "false", "",
     "run immudb in background"},
    {"mtls", 'm', T_BOOL, 0, F(mtls), 0, 0, "false", "",
     "enable mutual TLS (requires --certificate, --pkey, --clientcas)"},
    {"certificate", 0, T_STR, 0, F(certificate), 0, 0, "", "file",
     "server certificate file path (enables TLS with --pkey)"},
    {"pkey", 0, T_STR, 0, F(pkey), 0, 0, "", "file", "server private key path"},
    {"clientcas", 0, T_STR, 0, F(clientcas), 0, 0, "", "file",
     "clients certificates list, aka certificate authority"},
    {"auth", 's', T_BOOL, 0, F(auth), 0, 0, "true", "", "enable auth"},
    {"devmode", 0, T_BOOL, 0, F(devmode), 0, 0, "false", "",
     "enable dev mode: accept remote connections without auth"},
    {"maintenance", 0, T_BOOL, 0, F(maintenance), 0, 0, "false", "",
     "override the authentication flag"},
    {"admin-password", 0, T_STR, 0, F(admin_password), 0, 0, "immudb", "string",
     "admin password as plain-text or base64 encoded (prefixed with 'enc:')"},
    {"signingKey", 0, T_STR, 0, F(signing_key), 0, 0, "", "file",
     "signature private key path; enables signed states"},
    {"synced", 0, T_BOOL, 0, F(synced), 0, 0, "true", "",
     "synced mode prevents data loss under unexpected crashes"},
    {"token-expiry-time", 0, T_INT, 0, F(token_expiry_min), 1, INT_MAX / 60,
     "1440", "int", "client authentication token expiration time, minutes"},
    {"max-sessions", 0, T_INT, 0, F(max_sessions), 1, 1000000, "100", "int",
     "maximum number of simultaneously opened sessions"},
    {"max-session-inactivity-time", 0, T_DUR, 0, F(session_timeout_s), 1,
     INT_MAX, "3m0s", "duration", "idle time after which a session is closed"},
    {"max-recv-msg-size", 0, T_SIZE, 0, F(max_recv_msg_size), 1024, 1LL << 30,
     "4194304", "int", "max message size in bytes the server can receive"},
    {"metrics-server", 0, T_BOOL, 0, F(metrics_server), 0, 0, "true", "",
     "enable or disable the Prometheus and health endpoint"},
    {"metrics-server-port", 0, T_INT, 0, F(metrics_port), 0, 65535, "9497",
     "int", "Prometheus endpoint port (0 = any free port)"},
    {"no-histograms", 0, T_BOOL, 0, F(no_histograms), 0, 0, "false", "",
     "disable collection of histogram metrics like query durations"},
    {"consistency-check", 0, T_BOOL, 0, F(consistency_check), 0, 0, "true", "",
     "enable the consistency checker (re-verifies every database)"},
    {"consistency-check-interval", 0, T_DUR, 0, F(consistency_interval_s), 1,
     INT_MAX, "60s", "duration", "pause between two consistency check passes"},
    {"shutdown-grace", 0, T_DUR, 0, F(shutdown_grace_s), 0, 3600, "10s",
     "duration", "how long in-flight calls may run on shutdown"},
    {"io-threads", 0, T_INT, 0, F(io_threads), 0, 64, "0", "int",
     "gRPC network threads (0 = one per two cores, 1 to 4)"},
    {"index-cache-size", 0, T_INT, 0, F(index_cache_mib), 0, 1 << 20, "0",
     "int",
     "MiB of key index cache for all databases, an eighth of it for the "
     "latest values of recently written keys (0 = an eighth of the RAM, "
     "from 256 MiB to 4 GiB)"},

    /* immudb settings accepted for compatibility, without effect. */
    {"network", 0, T_IGN_STR, 0, NOFIELD, 0, 0, "tcp", "", NULL},
    {"dbname", 0, T_IGN_STR, 0, NOFIELD, 0, 0, "", "", NULL},
    {"web-server", 0, T_IGN_BOOL, 0, NOFIELD, 0, 0, "", "", NULL},
    {"web-server-port", 0, T_IGN_STR, 0, NOFIELD, 0, 0, "", "", NULL},
    {"pgsql-server", 0, T_IGN_BOOL, 0, NOFIELD, 0, 0, "", "", NULL},
    {"pgsql-server-port", 0, T_IGN_STR, 0, NOFIELD, 0, 0, "", "", NULL},
    {"pprof", 0, T_IGN_BOOL, 0, NOFIELD, 0, 0, "", "", NULL},
    {"grpc-reflection", 0, T_IGN_BOOL, 0, NOFIELD, 0, 0, "", "", NULL},
    {"swaggerui", 0, T_IGN_BOOL, 0, NOFIELD, 0, 0, "", "", NULL},
    {"log-request-metadata", 0, T_IGN_BOOL, 0, NOFIELD, 0, 0, "", "", NULL},
    {"force-admin-password", 0, T_IGN_BOOL, 0, NOFIELD, 0, 0, "", "", NULL},
    {"session-timeout", 0, T_IGN_STR, 0, NOFIELD, 0, 0, "", "", NULL},
    {"max-session-age-time", 0, T_IGN_STR, 0, NOFIELD, 0, 0, "", "", NULL},
    {"sessions-guard-check-interval", 0, T_IGN_STR, 0, NOFIELD, 0, 0, "", "",
     NULL},
    {"replication-enabled", 0, T_IGN_BOOL, 0, NOFIELD, 0, 0, "", "", NULL},
    {"replication-is-replica", 0, T_IGN_BOOL, 0, NOFIELD, 0, 0, "", "", NULL},
    {"replication-master-address", 0, T_IGN_STR, 0, NOFIELD, 0, 0, "", "",
     NULL},
    {"replication-master-port", 0, T_IGN_STR, 0, NOFIELD, 0, 0, "", "", NULL},
    {"replication-follower-username", 0, T_IGN_STR, 0, NOFIELD, 0, 0, "", "",
     NULL},
    {"replication-follower-password", 0, T_IGN_STR, 0, NOFIELD, 0, 0, "", "",
     NULL},
    {"s3-storage", 0, T_IGN_BOOL, 0, NOFIELD, 0, 0, "", "", NULL},
    {"s3-endpoint", 0, T_IGN_STR, 0, NOFIELD, 0, 0, "", "", NULL},
    {"s3-access-key-id", 0, T_IGN_STR, 0, NOFIELD, 0, 0, "", "", NULL},
    {"s3-secret-key", 0, T_IGN_STR, 0, NOFIELD, 0, 0, "", "", NULL},
    {"s3-bucket-name", 0, T_IGN_STR, 0, NOFIELD, 0, 0, "", "", NULL},
    {"s3-location", 0, T_IGN_STR, 0, NOFIELD, 0, 0, "", "", NULL},
    {"s3-path-prefix", 0, T_IGN_STR, 0, NOFIELD, 0, 0, "", "", NULL},
};

#define NOPTS (sizeof(OPTS) / sizeof(OPTS[0]))

_Static_assert(NOPTS <= sizeof(((immu_cfg *)0)->src_),
               "immu_cfg.src_ too small for the option table");

static int is_ignored(const opt *o) {
  return o->type == T_IGN_BOOL || o->type == T_IGN_STR;
}

static const opt *find_opt(const char *name, size_t len) {
  for (size_t i = 0; i < NOPTS; i++) {
    if (strlen(OPTS[i].name) == len &&
        strncasecmp(OPTS[i].name, name, len) == 0)
      return &OPTS[i];
  }
  return NULL;
}

static const opt *find_short(char c) {
  for (size_t i = 0; i < NOPTS; i++)
    if (OPTS[i].shortc == c)
      return &OPTS[i];
  return NULL;
}

/* IMMUDB_<NAME>: upper case, '-' -> '_'. */
static void env_name(const opt *o, char *buf, size_t n) {
  size_t j = 0;
  const char *pre = "IMMUDB_";
  for (; *pre && j + 1 < n; pre++)
    buf[j++] = *pre;
  for (const char *p = o->name; *p && j + 1 < n; p++)
    buf[j++] = *p == '-' ? '_' : (char)toupper((unsigned char)*p);
  buf[j] = '\0';
}

/* ------------------------------------------------------------------ */
/* value parsers                                                       */
/* ------------------------------------------------------------------ */

int immu_cfg_parse_bool(const char *s, int *out) {
  static const char *const yes[] = {"1", "t", "true", "yes", "y", "on"};
  static const char *const no[] = {"0", "f", "false", "no", "n", "off"};
  for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
    if (strcasecmp(s, yes[i]) == 0) {
      *out = 1;
      return 0;
    }
    if (strcasecmp(s, no[i]) == 0) {
      *out = 0;
      return 0;
    }
  }
  return IMMU_EINVAL;
}

int immu_cfg_parse_int(const char *s, long long min, long long max,
                       long long *out) {
  const char *p = s;
  int neg = 0;
  if (*p == '+' || *p == '-')
    neg = *p++ == '-';
  if (!isdigit((unsigned char)*p))
    return IMMU_EINVAL;
  unsigned long long v = 0;
  int prev_digit = 0;
  for (; *p; p++) {
    if (*p == '_' && prev_digit && isdigit((unsigned char)p[1])) {
      prev_digit = 0;
      continue;
    }
    if (!isdigit((unsigned char)*p))
      return IMMU_EINVAL;
    unsigned d = (unsigned)(*p - '0');
    if (v > (ULLONG_MAX - d) / 10 || v * 10 + d > (unsigned long long)LLONG_MAX)
      return IMMU_ERANGE;
    v = v * 10 + d;
    prev_digit = 1;
  }
  long long r = neg ? -(long long)v : (long long)v;
  if (r < min || r > max)
    return IMMU_ERANGE;
  *out = r;
  return 0;
}

int immu_cfg_parse_duration(const char *s, long long *out_s) {
  long long n;
  if (immu_cfg_parse_int(s, 0, LLONG_MAX / 1000, &n) == 0) {
    *out_s = n; /* bare number: seconds */
    return 0;
  }
  /* Go syntax: a sequence of <decimal><unit>, unit in h m s ms us ns. */
  const char *p = s;
  if (*p == '+')
    p++;
  if (*p == '\0')
    return IMMU_EINVAL;
  double total_ms = 0;
  while (*p) {
    if (!isdigit((unsigned char)*p) && *p != '.')
      return IMMU_EINVAL;
    char *end;
    errno = 0;
    double v = strtod(p, &end);
    if (end == p || errno != 0 || v < 0)
      return IMMU_EINVAL;
    p = end;
    double mult;
    if (strncmp(p, "ms", 2) == 0) {
      mult = 1;
      p += 2;
    } else if (strncmp(p, "us", 2) == 0 || strncmp(p, "\xc2\xb5s", 3) == 0) {
      mult = 1e-3;
      p += p[0] == 'u' ? 2 : 3;
    } else if (strncmp(p, "ns", 2) == 0) {
      mult = 1e-6;
      p += 2;
    } else if (*p == 'h') {
      mult = 3600e3;
      p++;
    } else if (*p == 'm') {
      mult = 60e3;
      p++;
    } else if (*p == 's') {
      mult = 1e3;
      p++;
    } else {
      return IMMU_EINVAL;
    }
    total_ms += v * mult;
    if (total_ms > 9.0e15)
      return IMMU_ERANGE;
  }
  long long secs = (long long)(total_ms / 1000.0);
  if ((double)secs * 1000.0 < total_ms)
    secs++;
  *out_s = secs;
  return 0;
}

/* ------------------------------------------------------------------ */
/* init / free / set                                                   */
/* ------------------------------------------------------------------ */

static char **str_field(immu_cfg *c, const opt *o) {
  return (char **)(void *)((char *)c + o->off);
}

static int *int_field(immu_cfg *c, const opt *o) {
  return (int *)(void *)((char *)c + o->off);
}

const char *immu_cfg_source_name(int src) {
  switch (src) {
  case IMMU_CFG_FILE:
    return "config file";
  case IMMU_CFG_ENV:
    return "environment";
  case IMMU_CFG_FLAG:
    return "flag";
  default:
    return "default";
  }
}

/* Parses |val| for option |o| and stores it. |where| names the place in
 * error messages ("--port", "IMMUDB_PORT", "immudb.toml:3"). */
static int set_value(immu_cfg *c, const opt *o, const char *val, int src,
                     const char *where, char **errmsg) {
  long long n;
  int b, rc;
  switch (o->type) {
  case T_STR: {
    char **f = str_field(c, o);
    immu__free(*f);
    *f = xstrdup(val);
    break;
  }
  case T_INT:
    rc = immu_cfg_parse_int(val, o->min, o->max, &n);
    if (rc == IMMU_ERANGE)
      return fail(errmsg, "%s: %s = \"%s\" is out of range [%lld, %lld]", where,
                  o->name, val, o->min, o->max);
    if (rc != 0)
      return fail(errmsg, "%s: %s = \"%s\" is not an integer", where, o->name,
                  val);
    *int_field(c, o) = (int)n;
    break;
  case T_SIZE:
    rc = immu_cfg_parse_int(val, o->min, o->max, &n);
    if (rc == IMMU_ERANGE)
      return fail(errmsg, "%s: %s = \"%s\" is out of range [%lld, %lld]", where,
                  o->name, val, o->min, o->max);
    if (rc != 0)
      return fail(errmsg, "%s: %s = \"%s\" is not an integer", where, o->name,
                  val);
    *(size_t *)(void *)((char *)c + o->off) = (size_t)n;
    break;
  case T_DUR:
    rc = immu_cfg_parse_duration(val, &n);
    if (rc != 0)
      return fail(errmsg,
                  "%s: %s = \"%s\" is not a duration (e.g. 90s, 3m0s, 1h)",
                  where, o->name, val);
    if (n < o->min || n > o->max)
      return fail(errmsg, "%s: %s = \"%s\" is out of range [%llds, %llds]",
                  where, o->name, val, o->min, o->max);
    *int_field(c, o) = (int)n;
    break;
  case T_BOOL:
    if (immu_cfg_parse_bool(val, &b) != 0)
      return fail(errmsg, "%s: %s = \"%s\" is not a boolean (true or false)",
                  where, o->name, val);
    *int_field(c, o) = b;
    break;
  case T_LEVEL:
    b = immu_log_level_parse(val);
    if (b < 0)
      return fail(errmsg,
                  "%s: %s = \"%s\" is not a log level (error, warn, info, "
                  "debug)",
                  where, o->name, val);
    *int_field(c, o) = b;
    break;
  case T_IGN_BOOL:
    if (immu_cfg_parse_bool(val, &b) != 0)
      return fail(errmsg, "%s: %s = \"%s\" is not a boolean (true or false)",
                  where, o->name, val);
    return 0;
  default:
    return 0;
  }
  c->src_[o - OPTS] = (unsigned char)src;
  return 0;
}

void immu_cfg_init(immu_cfg *c) {
  memset(c, 0, sizeof(*c));
  for (size_t i = 0; i < NOPTS; i++) {
    const opt *o = &OPTS[i];
    if (o->type == T_STR) {
      *str_field(c, o) = xstrdup(o->def);
    } else if (!is_ignored(o)) {
      int rc = set_value(c, o, o->def, IMMU_CFG_DEFAULT, "default", NULL);
      assert(rc == 0);
      (void)rc;
    }
  }
}

void immu_cfg_free(immu_cfg *c) {
  if (c == NULL)
    return;
  for (size_t i = 0; i < NOPTS; i++) {
    if (OPTS[i].type == T_STR) {
      char **f = str_field(c, &OPTS[i]);
      immu__free(*f);
      *f = NULL;
    }
  }
}

int immu_cfg_source_of(const immu_cfg *c, const char *option) {
  const opt *o = find_opt(option, strlen(option));
  if (o == NULL || is_ignored(o))
    return -1;
  return c->src_[o - OPTS];
}

/* ------------------------------------------------------------------ */
/* TOML subset                                                         */
/* ------------------------------------------------------------------ */

typedef struct toml_val {
  char *text; /* heap; the value as text ("true", "42", the string) */
  int is_str;
} toml_val;

static void put_utf8(char *out, size_t *j, unsigned long cp) {
  if (cp < 0x80) {
    out[(*j)++] = (char)cp;
  } else if (cp < 0x800) {
    out[(*j)++] = (char)(0xC0 | (cp >> 6));
    out[(*j)++] = (char)(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out[(*j)++] = (char)(0xE0 | (cp >> 12));
    out[(*j)++] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[(*j)++] = (char)(0x80 | (cp & 0x3F));
  } else {
    out[(*j)++] = (char)(0xF0 | (cp >> 18));
    out[(*j)++] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[(*j)++] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[(*j)++] = (char)(0x80 | (cp & 0x3F));
  }
}

/* Parses a basic string starting after its opening quote at *pp (up to
 * |end|). Returns the heap text or NULL with *why. */
static char *toml_basic_string(const char **pp, const char *end,
                               const char **why) {
  const char *p = *pp;
  char *out = xmalloc((size_t)(end - p) * 2 + 1);
  size_t j = 0;
  while (p < end && *p != '"') {
    unsigned char ch = (unsigned char)*p;
    if (ch < 0x20 && ch != '\t') {
      *why = "control character in string";
      goto bad;
    }
    if (ch != '\\') {
      out[j++] = *p++;
      continue;
    }
    p++;
    if (p >= end) {
      *why = "unterminated string";
      goto bad;
    }
    char e = *p++;
    switch (e) {
    case 'b':
      out[j++] = '\b';
      break;
    case 't':
      out[j++] = '\t';
      break;
    case 'n':
      out[j++] = '\n';
      break;
    case 'f':
      out[j++] = '\f';
      break;
    case 'r':
      out[j++] = '\r';
      break;
    case '"':
      out[j++] = '"';
      break;
    case '\\':
      out[j++] = '\\';
      break;
    case 'u':
    case 'U': {
      int nd = e == 'u' ? 4 : 8;
      unsigned long cp = 0;
      for (int k = 0; k < nd; k++, p++) {
        if (p >= end || !isxdigit((unsigned char)*p)) {
          *why = "bad \\u escape in string";
          goto bad;
        }
        int d = isdigit((unsigned char)*p)
                    ? *p - '0'
                    : tolower((unsigned char)*p) - 'a' + 10;
        cp = cp * 16 + (unsigned long)d;
      }
      if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF) || cp == 0) {
        *why = "bad \\u escape in string";
        goto bad;
      }
      put_utf8(out, &j, cp);
      break;
    }
    default:
      *why = "unknown escape sequence in string";
      goto bad;
    }
  }
  if (p >= end) {
    *why = "unterminated string";
    goto bad;
  }
  out[j] = '\0';
  *pp = p + 1;
  return out;
bad:
  immu__free(out);
  return NULL;
}

static const char *skip_ws(const char *p, const char *end) {
  while (p < end && (*p == ' ' || *p == '\t'))
    p++;
  return p;
}

static int is_bare_key_char(char ch) {
  return isalnum((unsigned char)ch) || ch == '_' || ch == '-';
}

/* Parses one `key = value` line. Returns 0 with *key and *val set (heap),
 * 1 for a blank or comment line, or -1 with *why. */
static int toml_line(const char *p, const char *end, char **key, toml_val *val,
                     const char **why) {
  *key = NULL;
  val->text = NULL;
  val->is_str = 0;
  p = skip_ws(p, end);
  if (p >= end || *p == '#')
    return 1;
  if (*p == '[') {
    *why = "tables ([section]) are not supported; use top-level keys";
    return -1;
  }
  /* key */
  if (*p == '"') {
    p++;
    *key = toml_basic_string(&p, end, why);
    if (*key == NULL)
      return -1;
  } else if (*p == '\'') {
    const char *q = memchr(p + 1, '\'', (size_t)(end - p - 1));
    if (q == NULL) {
      *why = "unterminated quoted key";
      return -1;
    }
    *key = xstrndup(p + 1, (size_t)(q - p - 1));
    p = q + 1;
  } else {
    const char *k = p;
    while (p < end && is_bare_key_char(*p))
      p++;
    if (p == k) {
      *why = "expected a key";
      return -1;
    }
    *key = xstrndup(k, (size_t)(p - k));
  }
  p = skip_ws(p, end);
  if (p < end && *p == '.') {
    *why = "dotted keys are not supported";
    goto bad;
  }
  if (p >= end || *p != '=') {
    *why = "expected '=' after the key";
    goto bad;
  }
  p = skip_ws(p + 1, end);
  if (p >= end || *p == '#') {
    *why = "missing value";
    goto bad;
  }
  /* value */
  if (*p == '"') {
    if (end - p >= 3 && p[1] == '"' && p[2] == '"') {
      *why = "multi-line strings are not supported";
      goto bad;
    }
    p++;
    val->text = toml_basic_string(&p, end, why);
    if (val->text == NULL)
      goto bad;
    val->is_str = 1;
  } else if (*p == '\'') {
    if (end - p >= 3 && p[1] == '\'' && p[2] == '\'') {
      *why = "multi-line strings are not supported";
      goto bad;
    }
    const char *q = memchr(p + 1, '\'', (size_t)(end - p - 1));
    if (q == NULL) {
      *why = "unterminated string";
      goto bad;
    }
    val->text = xstrndup(p + 1, (size_t)(q - p - 1));
    val->is_str = 1;
    p = q + 1;
  } else if (*p == '[') {
    *why = "arrays are not supported";
    goto bad;
  } else if (*p == '{') {
    *why = "inline tables are not supported";
    goto bad;
  } else {
    const char *v = p;
    while (p < end && *p != ' ' && *p != '\t' && *p != '#')
      p++;
    val->text = xstrndup(v, (size_t)(p - v));
    if (strcmp(val->text, "true") != 0 && strcmp(val->text, "false") != 0) {
      long long n;
      int rc = immu_cfg_parse_int(val->text, LLONG_MIN, LLONG_MAX, &n);
      if (rc == IMMU_ERANGE) {
        *why = "integer out of range";
        goto bad;
      }
      if (rc != 0) {
        if (strpbrk(val->text, ".eE") != NULL &&
            (isdigit((unsigned char)val->text[0]) || val->text[0] == '-' ||
             val->text[0] == '+'))
          *why = "floats are not supported";
        else
          *why = "expected a value: \"string\", integer, true or false";
        goto bad;
      }
      /* normalise (drop '+' and '_') */
      immu__free(val->text);
      val->text = xfmt("%lld", n);
    }
  }
  p = skip_ws(p, end);
  if (p < end && *p != '#') {
    *why = "unexpected text after the value";
    goto bad;
  }
  return 0;
bad:
  immu__free(*key);
  *key = NULL;
  immu__free(val->text);
  val->text = NULL;
  return -1;
}

int immu_cfg_apply_toml(immu_cfg *c, const char *name, const char *text,
                        void (*warn)(void *arg, const char *msg),
                        void *warn_arg, char **errmsg) {
  int seen_line[NOPTS];
  memset(seen_line, 0, sizeof(seen_line));
  const char *p = text;
  int lineno = 0;
  int rc = 0;
  while (*p != '\0' && rc == 0) {
    lineno++;
    const char *nl = strchr(p, '\n');
    const char *end = nl ? nl : p + strlen(p);
    const char *next = nl ? nl + 1 : end;
    if (end > p && end[-1] == '\r')
      end--;
    char *key;
    toml_val val;
    const char *why = "syntax error";
    int lr = toml_line(p, end, &key, &val, &why);
    if (lr < 0) {
      rc = fail(errmsg, "%s:%d: %s", name, lineno, why);
      break;
    }
    if (lr == 0) {
      const opt *o = find_opt(key, strlen(key));
      if (o == NULL) {
        rc = fail(errmsg, "%s:%d: unknown key '%s'", name, lineno, key);
      } else if (o->flag_only) {
        rc = fail(errmsg, "%s:%d: '%s' cannot be set in the config file", name,
                  lineno, key);
      } else if (seen_line[o - OPTS] != 0) {
        rc = fail(errmsg, "%s:%d: key '%s' is set twice (first on line %d)",
                  name, lineno, key, seen_line[o - OPTS]);
      } else {
        seen_line[o - OPTS] = lineno;
        char where[256];
        snprintf(where, sizeof(where), "%s:%d", name, lineno);
        rc = set_value(c, o, val.text, IMMU_CFG_FILE, where, errmsg);
        if (rc == 0 && is_ignored(o) && warn != NULL) {
          char *m = xfmt("%s: '%s' is not supported by this server; ignored",
                         where, o->name);
          warn(warn_arg, m);
          immu__free(m);
        }
      }
      immu__free(key);
      immu__free(val.text);
    }
    p = next;
  }
  return rc;
}

/* ------------------------------------------------------------------ */
/* command line and environment                                        */
/* ------------------------------------------------------------------ */

typedef struct flag_val {
  const opt *o;
  const char *val; /* borrowed from argv or a static "true" */
  char where[80];
} flag_val;

static int read_file(const char *path, char **out, char **errmsg) {
  *out = NULL;
  FILE *f = fopen(path, "rb");
  if (f == NULL) {
    int e = errno;
    fail(errmsg, "cannot open config file %s: %s", path, strerror(e));
    return -e;
  }
  size_t cap = 4096, len = 0;
  char *buf = xmalloc(cap);
  for (;;) {
    if (len + 1 >= cap) {
      if (cap >= (1u << 24)) {
        fclose(f);
        immu__free(buf);
        return fail(errmsg, "config file %s is too large", path);
      }
      cap *= 2;
      char *nb = immu__realloc(buf, cap);
      if (nb == NULL) {
        fclose(f);
        immu__free(buf);
        fputs("immudb: out of memory\n", stderr);
        abort();
      }
      buf = nb;
    }
    size_t n = fread(buf + len, 1, cap - len - 1, f);
    len += n;
    if (n == 0)
      break;
  }
  int err = ferror(f);
  fclose(f);
  if (err) {
    immu__free(buf);
    return fail(errmsg, "cannot read config file %s", path);
  }
  buf[len] = '\0';
  if (strlen(buf) != len) {
    immu__free(buf);
    return fail(errmsg, "config file %s contains a NUL byte", path);
  }
  *out = buf;
  return 0;
}

static void warn_ignored(void (*warn)(void *, const char *), void *arg,
                         const char *where, const opt *o) {
  if (warn == NULL)
    return;
  char *m =
      xfmt("%s: '%s' is not supported by this server; ignored", where, o->name);
  warn(arg, m);
  immu__free(m);
}

/* Splits argv into option assignments (checked for names and presence of
 * values, not yet for the values themselves). */
static int parse_argv(immu_cfg *c, int argc, char *const *argv, flag_val *fv,
                      size_t *nfv, char **errmsg) {
  size_t n = 0;
  int only_pos = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (only_pos || a[0] != '-' || a[1] == '\0') {
      if (strcmp(a, "version") == 0)
        c->want_version = 1;
      else if (strcmp(a, "help") == 0)
        c->want_help = 1;
      else if (immu_cfg_parse_bool(a, &(int){0}) == 0)
        return fail(errmsg,
                    "unexpected argument \"%s\": boolean flags take their "
                    "value after '=', e.g. --auth=false",
                    a);
      else
        return fail(errmsg, "unknown command \"%s\" (commands: version, help)",
                    a);
      continue;
    }
    if (strcmp(a, "--") == 0) {
      only_pos = 1;
      continue;
    }
    if (a[1] == '-') {
      const char *name = a + 2;
      const char *eq = strchr(name, '=');
      size_t len = eq ? (size_t)(eq - name) : strlen(name);
      if (len == 4 && strncmp(name, "help", 4) == 0 && eq == NULL) {
        c->want_help = 1;
        continue;
      }
      if (len == 7 && strncmp(name, "version", 7) == 0 && eq == NULL) {
        c->want_version = 1;
        continue;
      }
      const opt *o = find_opt(name, len);
      if (o == NULL)
        return fail(errmsg, "unknown flag: --%.*s", (int)len, name);
      flag_val *f = &fv[n++];
      f->o = o;
      snprintf(f->where, sizeof(f->where), "--%s", o->name);
      if (eq != NULL) {
        f->val = eq + 1;
      } else if (o->type == T_BOOL || o->type == T_IGN_BOOL) {
        f->val = "true";
      } else if (i + 1 < argc) {
        f->val = argv[++i];
      } else {
        return fail(errmsg, "flag needs an argument: --%s", o->name);
      }
      continue;
    }
    /* short flags: -d, -p 3322, -p3322, -dm */
    for (const char *s = a + 1; *s; s++) {
      if (*s == 'h') {
        c->want_help = 1;
        continue;
      }
      const opt *o = find_short(*s);
      if (o == NULL)
        return fail(errmsg, "unknown shorthand flag: '%c' in %s", *s, a);
      flag_val *f = &fv[n++];
      f->o = o;
      snprintf(f->where, sizeof(f->where), "-%c", *s);
      if (o->type == T_BOOL) {
        if (s[1] == '=') {
          f->val = s + 2;
          break;
        }
        f->val = "true";
        continue;
      }
      if (s[1] == '=') {
        f->val = s + 2;
      } else if (s[1] != '\0') {
        f->val = s + 1;
      } else if (i + 1 < argc) {
        f->val = argv[++i];
      } else {
        return fail(errmsg, "flag needs an argument: '%c' in %s", *s, a);
      }
      break;
    }
  }
  *nfv = n;
  return 0;
}

static const char *env_get(char *const *envp, const char *name) {
  if (envp == NULL)
    return NULL;
  size_t n = strlen(name);
  for (char *const *e = envp; *e != NULL; e++) {
    if (strncmp(*e, name, n) == 0 && (*e)[n] == '=')
      return *e + n + 1;
  }
  return NULL;
}

/* Checks the merged settings as a whole. */
static int validate(immu_cfg *c, void (*warn)(void *, const char *),
                    void *warn_arg, char **errmsg) {
  if (strcmp(c->logformat, "text") != 0 && strcmp(c->logformat, "json") != 0)
    return fail(errmsg, "logformat = \"%s\": must be text or json",
                c->logformat);
  if (c->dir[0] == '\0')
    return fail(errmsg, "dir must not be empty");
  if (c->address[0] == '\0')
    return fail(errmsg, "address must not be empty");
  if ((c->certificate[0] != '\0') != (c->pkey[0] != '\0'))
    return fail(errmsg,
                "TLS needs both --certificate and --pkey (only %s "
                "was given)",
                c->certificate[0] ? "--certificate" : "--pkey");
  if (c->mtls) {
    if (c->certificate[0] == '\0')
      return fail(errmsg, "--mtls needs --certificate, --pkey and --clientcas");
    if (c->clientcas[0] == '\0')
      return fail(errmsg, "--mtls needs --clientcas (the CA bundle that "
                          "signs client certificates)");
  } else if (c->clientcas[0] != '\0' && warn != NULL) {
    warn(warn_arg, "--clientcas has no effect without --mtls");
  }
  return 0;
}

int immu_cfg_load(immu_cfg *c, int argc, char *const *argv, char *const *envp,
                  void (*warn)(void *arg, const char *msg), void *warn_arg,
                  char **errmsg) {
  if (errmsg != NULL)
    *errmsg = NULL;
  /* One assignment per argument, or per letter of "-dms"-style groups. */
  size_t maxfv = 1;
  for (int i = 1; i < argc; i++)
    maxfv += strlen(argv[i]);
  flag_val *fv = xmalloc(sizeof(*fv) * maxfv);
  size_t nfv = 0;
  int rc = parse_argv(c, argc, argv, fv, &nfv, errmsg);
  if (rc != 0)
    goto out;

  /* Which config file: flag > IMMUDB_CONFIG > ./configs/immudb.toml. */
  const char *cfgpath = NULL;
  int cfgsrc = IMMU_CFG_DEFAULT;
  for (size_t i = 0; i < nfv; i++) {
    if (strcmp(fv[i].o->name, "config") == 0) {
      cfgpath = fv[i].val;
      cfgsrc = IMMU_CFG_FLAG;
    }
  }
  if (cfgpath == NULL) {
    const char *e = env_get(envp, "IMMUDB_CONFIG");
    if (e != NULL && e[0] != '\0') {
      cfgpath = e;
      cfgsrc = IMMU_CFG_ENV;
    }
  }
  int explicit_cfg = cfgpath != NULL && cfgpath[0] != '\0';
  if (!explicit_cfg && access("configs/immudb.toml", F_OK) == 0) {
    cfgpath = "configs/immudb.toml";
    cfgsrc = IMMU_CFG_DEFAULT;
  }
  if (cfgpath != NULL && cfgpath[0] != '\0') {
    char *text;
    rc = read_file(cfgpath, &text, errmsg);
    if (rc != 0)
      goto out;
    rc = immu_cfg_apply_toml(c, cfgpath, text, warn, warn_arg, errmsg);
    immu__free(text);
    if (rc != 0)
      goto out;
    const opt *co = find_opt("config", 6);
    set_value(c, co, cfgpath, cfgsrc, "config", NULL);
  }

  /* Environment. Empty values count as unset (viper's default). */
  for (size_t i = 0; i < NOPTS; i++) {
    const opt *o = &OPTS[i];
    if (o->flag_only)
      continue;
    char name[96];
    env_name(o, name, sizeof(name));
    const char *v = env_get(envp, name);
    if (v == NULL || v[0] == '\0')
      continue;
    rc = set_value(c, o, v, IMMU_CFG_ENV, name, errmsg);
    if (rc != 0)
      goto out;
    if (is_ignored(o))
      warn_ignored(warn, warn_arg, name, o);
  }

  /* Flags, in order (the last one wins). */
  for (size_t i = 0; i < nfv; i++) {
    rc = set_value(c, fv[i].o, fv[i].val, IMMU_CFG_FLAG, fv[i].where, errmsg);
    if (rc != 0)
      goto out;
    if (is_ignored(fv[i].o))
      warn_ignored(warn, warn_arg, fv[i].where, fv[i].o);
  }

  if (!c->want_help && !c->want_version)
    rc = validate(c, warn, warn_arg, errmsg);
out:
  immu__free(fv);
  return rc;
}

/* ------------------------------------------------------------------ */
/* derived settings                                                    */
/* ------------------------------------------------------------------ */

static int b64val(int ch) {
  if (ch >= 'A' && ch <= 'Z')
    return ch - 'A';
  if (ch >= 'a' && ch <= 'z')
    return ch - 'a' + 26;
  if (ch >= '0' && ch <= '9')
    return ch - '0' + 52;
  if (ch == '+' || ch == '-')
    return 62;
  if (ch == '/' || ch == '_')
    return 63;
  return -1;
}

char *immu_cfg_admin_password(const immu_cfg *c, char **errmsg) {
  const char *pw = c->admin_password;
  if (strncmp(pw, "enc:", 4) != 0)
    return xstrdup(pw);
  const char *s = pw + 4;
  size_t n = strlen(s);
  while (n > 0 && s[n - 1] == '=')
    n--;
  char *out = xmalloc(n * 3 / 4 + 1);
  size_t j = 0;
  unsigned acc = 0;
  int bits = 0;
  for (size_t i = 0; i < n; i++) {
    int v = b64val((unsigned char)s[i]);
    if (v < 0) {
      immu__free(out);
      fail(errmsg, "admin-password: bad base64 after 'enc:'");
      return NULL;
    }
    acc = (acc << 6) | (unsigned)v;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[j++] = (char)((acc >> bits) & 0xFF);
    }
  }
  if (bits >= 6 || memchr(out, '\0', j) != NULL) {
    immu__free(out);
    fail(errmsg, "admin-password: bad base64 after 'enc:'");
    return NULL;
  }
  out[j] = '\0';
  return out;
}

void immu_cfg_to_server(const immu_cfg *c, const char *password,
                        immu_server_config *sc) {
  sc->dir = c->dir;
  sc->admin_password = password;
  sc->auth = c->auth;
  sc->devmode = c->devmode;
  sc->maintenance = c->maintenance;
  sc->synced = c->synced;
  sc->signing_key = c->signing_key[0] ? c->signing_key : NULL;
  sc->token_expiry_min = c->token_expiry_min;
  sc->session_timeout_s = c->session_timeout_s;
  sc->max_sessions = c->max_sessions;
  sc->index_cache_bytes = (size_t)c->index_cache_mib << 20;
  sc->listen_address = c->address;
  sc->log = immu_log_cb;
  sc->log_arg = (void *)"server";
}

void immu_cfg_to_grpc(const immu_cfg *c, immu_grpc_config *gc) {
  gc->address = c->address;
  gc->port = c->port;
  gc->max_recv_msg_size = c->max_recv_msg_size;
  if (gc->max_call_bytes < c->max_recv_msg_size)
    gc->max_call_bytes = c->max_recv_msg_size;
  gc->log = immu_log_cb;
  gc->log_arg = (void *)"grpc";
}

void immu_cfg_usage(void *fp) {
  FILE *f = fp;
  fputs("immudb - an immutable database, immudb-compatible server\n"
        "\n"
        "Usage:\n"
        "  immudb [flags]\n"
        "  immudb version     show the version\n"
        "  immudb help        show this help\n"
        "\n"
        "Flags (each also settable as IMMUDB_<NAME> in the environment and "
        "as\n<name> = value in the config file; precedence: flags > "
        "environment >\nconfig file > defaults):\n",
        f);
  for (size_t i = 0; i < NOPTS; i++) {
    const opt *o = &OPTS[i];
    if (is_ignored(o))
      continue;
    char left[64];
    if (o->shortc)
      snprintf(left, sizeof(left), "-%c, --%s %s", o->shortc, o->name, o->meta);
    else
      snprintf(left, sizeof(left), "    --%s %s", o->name, o->meta);
    fprintf(f, "  %-40s %s", left, o->help);
    if (o->def[0] != '\0' && strcmp(o->name, "admin-password") != 0)
      fprintf(f, " (default %s)", o->def);
    else if (strcmp(o->name, "admin-password") == 0)
      fputs(" (default \"immudb\")", f);
    fputc('\n', f);
  }
  fputs("  -h, --help                                 show this help\n"
        "\n"
        "Accepted for compatibility and ignored: network, dbname, web-server*, "
        "pgsql-server*,\npprof, grpc-reflection, swaggerui, "
        "log-request-metadata, force-admin-password,\nsession-timeout, "
        "max-session-age-time, replication-*, s3-*.\n",
        f);
}

/* ------------------------------------------------------------------ */
/* addresses                                                           */
/* ------------------------------------------------------------------ */

int immu_cfg_is_loopback(const char *addr) {
  if (addr == NULL)
    return 0;
  if (strcasecmp(addr, "localhost") == 0)
    return 1;
  char buf[64];
  size_t n = strlen(addr);
  /* "[::1]" */
  if (n >= 2 && addr[0] == '[' && addr[n - 1] == ']') {
    if (n - 2 >= sizeof(buf))
      return 0;
    memcpy(buf, addr + 1, n - 2);
    buf[n - 2] = '\0';
    addr = buf;
  }
  struct in_addr a4;
  if (inet_pton(AF_INET, addr, &a4) == 1)
    return (ntohl(a4.s_addr) >> 24) == 127;
  struct in6_addr a6;
  if (inet_pton(AF_INET6, addr, &a6) == 1) {
    static const unsigned char lo[16] = {0, 0, 0, 0, 0, 0, 0, 0,
                                         0, 0, 0, 0, 0, 0, 0, 1};
    static const unsigned char v4m[12] = {0, 0, 0, 0, 0,    0,
                                          0, 0, 0, 0, 0xff, 0xff};
    if (memcmp(a6.s6_addr, lo, 16) == 0)
      return 1;
    if (memcmp(a6.s6_addr, v4m, 12) == 0 && a6.s6_addr[12] == 127)
      return 1;
  }
  return 0;
}

/* ------------------------------------------------------------------ */
/* TLS                                                                 */
/* ------------------------------------------------------------------ */

/* OpenSSL's reason for the last failure, or a fallback. */
static void ssl_reason(char *buf, size_t n) {
  unsigned long e = ERR_peek_last_error();
  if (e == 0)
    snprintf(buf, n, "unknown error");
  else
    ERR_error_string_n(e, buf, n);
  ERR_clear_error();
}

static int check_readable(const char *what, const char *path, char **errmsg) {
  FILE *f = fopen(path, "rb");
  if (f == NULL)
    return fail(errmsg, "cannot open %s %s: %s", what, path, strerror(errno));
  fclose(f);
  return 0;
}

int immu_cfg_tls_ctx(const immu_cfg *c, void **out, char **errmsg) {
  *out = NULL;
  if (c->certificate[0] == '\0' && c->pkey[0] == '\0' && !c->mtls)
    return 0;
  if (c->certificate[0] == '\0' || c->pkey[0] == '\0')
    return fail(errmsg, "TLS needs both --certificate and --pkey");
  int rc = check_readable("certificate", c->certificate, errmsg);
  if (rc == 0)
    rc = check_readable("private key", c->pkey, errmsg);
  if (rc == 0 && c->mtls)
    rc = check_readable("client CA file", c->clientcas, errmsg);
  if (rc != 0)
    return rc;

  char why[256];
  ERR_clear_error();
  SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
  if (ctx == NULL) {
    ssl_reason(why, sizeof(why));
    return fail(errmsg, "cannot create the TLS context: %s", why);
  }
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
                               SSL_OP_CIPHER_SERVER_PREFERENCE);
  /* HTTP/2 (RFC 9113 9.2.2) forbids the old TLS 1.2 suites: AEAD + ECDHE
   * only. TLS 1.3 suites are all fine. */
  if (SSL_CTX_set_cipher_list(ctx, "ECDHE-ECDSA-AES128-GCM-SHA256:"
                                   "ECDHE-RSA-AES128-GCM-SHA256:"
                                   "ECDHE-ECDSA-AES256-GCM-SHA384:"
                                   "ECDHE-RSA-AES256-GCM-SHA384:"
                                   "ECDHE-ECDSA-CHACHA20-POLY1305:"
                                   "ECDHE-RSA-CHACHA20-POLY1305") != 1) {
    ssl_reason(why, sizeof(why));
    rc = fail(errmsg, "cannot set the TLS cipher list: %s", why);
    goto bad;
  }
  if (SSL_CTX_use_certificate_chain_file(ctx, c->certificate) != 1) {
    ssl_reason(why, sizeof(why));
    rc = fail(errmsg, "cannot load certificate %s: %s", c->certificate, why);
    goto bad;
  }
  if (SSL_CTX_use_PrivateKey_file(ctx, c->pkey, SSL_FILETYPE_PEM) != 1) {
    unsigned long e = ERR_peek_last_error();
    int mismatch = ERR_GET_LIB(e) == ERR_LIB_X509 &&
                   (ERR_GET_REASON(e) == X509_R_KEY_VALUES_MISMATCH ||
                    ERR_GET_REASON(e) == X509_R_KEY_TYPE_MISMATCH);
    ssl_reason(why, sizeof(why));
    if (mismatch)
      rc = fail(errmsg, "private key %s does not match certificate %s: %s",
                c->pkey, c->certificate, why);
    else
      rc = fail(errmsg, "cannot load private key %s: %s", c->pkey, why);
    goto bad;
  }
  if (SSL_CTX_check_private_key(ctx) != 1) {
    ssl_reason(why, sizeof(why));
    rc = fail(errmsg, "private key %s does not match certificate %s: %s",
              c->pkey, c->certificate, why);
    goto bad;
  }
  if (c->mtls) {
    if (SSL_CTX_load_verify_locations(ctx, c->clientcas, NULL) != 1) {
      ssl_reason(why, sizeof(why));
      rc = fail(errmsg, "cannot load client CA file %s: %s", c->clientcas, why);
      goto bad;
    }
    STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(c->clientcas);
    if (names == NULL) {
      ssl_reason(why, sizeof(why));
      rc = fail(errmsg, "no CA certificate in client CA file %s: %s",
                c->clientcas, why);
      goto bad;
    }
    SSL_CTX_set_client_CA_list(ctx, names);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT,
                       NULL);
    SSL_CTX_set_verify_depth(ctx, 8);
    static const unsigned char sid[] = "immudb";
    SSL_CTX_set_session_id_context(ctx, sid, sizeof(sid) - 1);
  }
  *out = ctx;
  return 0;
bad:
  SSL_CTX_free(ctx);
  return rc;
}

/* ------------------------------------------------------------------ */
/* logger                                                              */
/* ------------------------------------------------------------------ */

static struct {
  pthread_mutex_t mu;
  int fd; /* -1: stderr */
  int level;
  int json;
  char *path;
} g_log = {PTHREAD_MUTEX_INITIALIZER, -1, IMMU_LOG_INFO, 0, NULL};

static const char *const LEVEL_NAMES[] = {"ERROR", "WARN", "INFO", "DEBUG"};
static const char *const LEVEL_LOWER[] = {"error", "warn", "info", "debug"};

static int clamp_level(int level) {
  return level < IMMU_LOG_ERROR   ? IMMU_LOG_ERROR
         : level > IMMU_LOG_DEBUG ? IMMU_LOG_DEBUG
                                  : level;
}

int immu_log_level_parse(const char *s) {
  for (int i = 0; i < 4; i++)
    if (strcasecmp(s, LEVEL_LOWER[i]) == 0)
      return i;
  if (strcasecmp(s, "warning") == 0)
    return IMMU_LOG_WARN;
  return -1;
}

static int open_append(const char *path) {
  int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
  return fd < 0 ? -errno : fd;
}

int immu_log_open(const char *path, int level, int json) {
  int fd = -1;
  if (path != NULL && path[0] != '\0') {
    fd = open_append(path);
    if (fd < 0)
      return fd;
  }
  pthread_mutex_lock(&g_log.mu);
  if (g_log.fd >= 0)
    close(g_log.fd);
  immu__free(g_log.path);
  g_log.path = fd >= 0 ? xstrdup(path) : NULL;
  g_log.fd = fd;
  g_log.level = clamp_level(level);
  g_log.json = json;
  pthread_mutex_unlock(&g_log.mu);
  return 0;
}

int immu_log_reopen(void) {
  int rc = 0;
  pthread_mutex_lock(&g_log.mu);
  if (g_log.path != NULL) {
    int fd = open_append(g_log.path);
    if (fd < 0) {
      rc = fd;
    } else {
      close(g_log.fd);
      g_log.fd = fd;
    }
  }
  pthread_mutex_unlock(&g_log.mu);
  return rc;
}

int immu_log_fd(void) {
  pthread_mutex_lock(&g_log.mu);
  int fd = g_log.fd >= 0 ? g_log.fd : 2;
  pthread_mutex_unlock(&g_log.mu);
  return fd;
}

void immu_log_close(void) {
  pthread_mutex_lock(&g_log.mu);
  if (g_log.fd >= 0)
    close(g_log.fd);
  g_log.fd = -1;
  immu__free(g_log.path);
  g_log.path = NULL;
  pthread_mutex_unlock(&g_log.mu);
}

int immu_log_enabled(int level) {
  pthread_mutex_lock(&g_log.mu);
  int on = level <= g_log.level;
  pthread_mutex_unlock(&g_log.mu);
  return on;
}

/* Appends |s| to buf[*j..n), escaped for JSON (json) or with control
 * characters turned into spaces (text). Always leaves room for a NUL. */
static void put_msg(char *buf, size_t n, size_t *j, const char *s, int json) {
  for (; *s; s++) {
    unsigned char ch = (unsigned char)*s;
    char tmp[8];
    const char *rep = NULL;
    if (json) {
      if (ch == '"')
        rep = "\\\"";
      else if (ch == '\\')
        rep = "\\\\";
      else if (ch == '\n')
        rep = "\\n";
      else if (ch == '\t')
        rep = "\\t";
      else if (ch < 0x20) {
        snprintf(tmp, sizeof(tmp), "\\u%04x", ch);
        rep = tmp;
      }
    } else if (ch < 0x20 || ch == 0x7f) {
      rep = " ";
    }
    if (rep == NULL) {
      if (*j + 1 < n)
        buf[(*j)++] = (char)ch;
      else
        (*j)++;
    } else {
      for (; *rep; rep++) {
        if (*j + 1 < n)
          buf[(*j)++] = *rep;
        else
          (*j)++;
      }
    }
  }
}

size_t immu_log_format(char *buf, size_t n, time_t t, int level,
                       const char *component, const char *msg, int json) {
  struct tm tm;
  char ts[32];
  gmtime_r(&t, &tm);
  strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%SZ", &tm);
  level = clamp_level(level);
  size_t j = 0;
  int k;
  if (json)
    k = snprintf(buf, n, "{\"time\":\"%s\",\"level\":\"%s\",\"component\":\"",
                 ts, LEVEL_LOWER[level]);
  else
    k = snprintf(buf, n, "%s %-5s [", ts, LEVEL_NAMES[level]);
  j = k > 0 ? (size_t)k : 0;
  put_msg(buf, n, &j, component, json);
  const char *mid = json ? "\",\"msg\":\"" : "] ";
  put_msg(buf, n, &j, mid, 0);
  put_msg(buf, n, &j, msg, json);
  const char *tail = json ? "\"}" : "";
  put_msg(buf, n, &j, tail, 0);
  if (j + 1 < n)
    buf[j] = '\n';
  j++;
  if (n > 0)
    buf[j < n ? j : n - 1] = '\0';
  return j;
}

static void write_all(int fd, const char *p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR)
        continue;
      return;
    }
    p += w;
    n -= (size_t)w;
  }
}

static void log_line(int level, const char *component, const char *msg) {
  time_t now = time(NULL);
  char stackbuf[2048];
  char *buf = stackbuf;
  pthread_mutex_lock(&g_log.mu);
  if (level > g_log.level) {
    pthread_mutex_unlock(&g_log.mu);
    return;
  }
  int json = g_log.json;
  size_t need = immu_log_format(stackbuf, sizeof(stackbuf), now, level,
                                component, msg, json);
  if (need >= sizeof(stackbuf)) {
    char *big = immu__malloc(need + 1);
    if (big != NULL) {
      immu_log_format(big, need + 1, now, level, component, msg, json);
      buf = big;
    } else {
      need = sizeof(stackbuf) - 1;
      stackbuf[need - 1] = '\n';
    }
  }
  write_all(g_log.fd >= 0 ? g_log.fd : 2, buf, need);
  pthread_mutex_unlock(&g_log.mu);
  if (buf != stackbuf)
    immu__free(buf);
}

void immu_vlog(int level, const char *component, const char *fmt, va_list ap) {
  if (!immu_log_enabled(level))
    return;
  char small[1024];
  va_list ap2;
  va_copy(ap2, ap);
  int n = vsnprintf(small, sizeof(small), fmt, ap);
  if (n < 0) {
    va_end(ap2);
    return;
  }
  if ((size_t)n < sizeof(small)) {
    log_line(level, component, small);
  } else {
    char *big = immu__malloc((size_t)n + 1);
    if (big != NULL) {
      vsnprintf(big, (size_t)n + 1, fmt, ap2);
      log_line(level, component, big);
      immu__free(big);
    } else {
      log_line(level, component, small);
    }
  }
  va_end(ap2);
}

void immu_log(int level, const char *component, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  immu_vlog(level, component, fmt, ap);
  va_end(ap);
}

void immu_log_cb(void *arg, int level, const char *msg) {
  log_line(level, arg != NULL ? (const char *)arg : "server",
           msg != NULL ? msg : "");
}
