/* SPDX-License-Identifier: Apache-2.0 */
/*
 * immubench: benchmark driver. `immubench <subcommand> [options]`.
 *
 * Each subcommand is one entry of |commands| below; to add one, write
 * bench/bench_<name>.c with an `int bench_<name>_main(int, char **)` entry
 * point, declare it in bench.h and list it here. Methodology and results
 * live in docs/benchmarks.md.
 */
#include <stdio.h>
#include <string.h>

#include "bench.h"

typedef struct bench_command {
  const char *name;
  bench_cmd_fn fn;
  const char *summary;
} bench_command;

static const bench_command commands[] = {
    {"crypto", bench_crypto_main,
     "crypto-core micro-benchmark: SHA-256, entry digests, htree, ahtree, "
     "dual proofs, against `openssl speed`"},
    {"kv", bench_store_main,
     "KV layer on disk (W1/W2 writes, R1 Get, R2 verifiable Get) against "
     "SQLite and RocksDB in the same run"},
    {"grpc", bench_grpc_main,
     "load against the immudb server over gRPC (Set, VerifiableSet, Get, "
     "VerifiableGet; 1/16/128 clients) against its own Health RPC rate"},
};

#define NCOMMANDS (sizeof commands / sizeof commands[0])

static void usage(FILE *f) {
  fputs("usage: immubench <subcommand> [options]\n"
        "       immubench help <subcommand>   (same as <subcommand> --help)\n"
        "\n"
        "subcommands:\n",
        f);
  for (size_t i = 0; i < NCOMMANDS; i++)
    fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].summary);
  fputs("\nMethod and recorded results: docs/benchmarks.md\n", f);
}

static const bench_command *find_command(const char *name) {
  for (size_t i = 0; i < NCOMMANDS; i++)
    if (strcmp(commands[i].name, name) == 0)
      return &commands[i];
  return NULL;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    usage(stderr);
    return 2;
  }
  const char *cmd = argv[1];
  if (strcmp(cmd, "-h") == 0 || strcmp(cmd, "--help") == 0) {
    usage(stdout);
    return 0;
  }
  if (strcmp(cmd, "help") == 0) {
    if (argc < 3) {
      usage(stdout);
      return 0;
    }
    const bench_command *c = find_command(argv[2]);
    if (!c) {
      fprintf(stderr, "immubench: unknown subcommand '%s'\n\n", argv[2]);
      usage(stderr);
      return 2;
    }
    char help[] = "--help";
    char *hargv[3] = {argv[2], help, NULL};
    return c->fn(2, hargv);
  }
  const bench_command *c = find_command(cmd);
  if (!c) {
    fprintf(stderr, "immubench: unknown subcommand '%s'\n\n", cmd);
    usage(stderr);
    return 2;
  }
  return c->fn(argc - 1, argv + 1);
}
