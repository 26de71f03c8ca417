/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Consistency checker of the immudb server: a background thread that, pass
 * after pass, re-verifies every loaded database (immu_db_verify: re-hashes
 * every transaction and checks the Alh chain and the ahtree), logs any
 * mismatch at ERROR with the database name and the engine's message, and
 * reports each result (for metrics).
 *
 * Within a pass the databases are verified one at a time with a pause
 * between them; passes are |interval_s| apart (end to start). A
 * verification in progress cannot be interrupted (immu_db_verify has no
 * cancel), so immu_checker_stop returns once the current database is done;
 * it never starts another one after stop was asked.
 *
 * The checker does not know the server: it lists and verifies databases
 * through callbacks (main.c wires them to immu_server_foreach_db and
 * immu_db_verify; tests use fakes).
 */
#ifndef IMMU_SERVER_CHECKER_H
#define IMMU_SERVER_CHECKER_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

typedef struct immu_checker immu_checker;

typedef struct immu_checker_config {
  int interval_s;       /* between passes; default (0) 60 */
  int initial_delay_ms; /* before the first pass; < 0 = 5000 */
  int db_pause_ms;      /* between two databases; < 0 = 1000 */

  /* Calls |add| once per loaded database (names are copied). */
  void (*list)(void *arg, void (*add)(void *aarg, const char *name),
               void *aarg);
  /* Verifies database |name|. Returns 0 if it is consistent,
   * IMMU_ENOTFOUND if it is no longer loaded (skipped, not reported), or
   * another negative code with a message in msg[0..msglen). */
  int (*verify)(void *arg, const char *name, char *msg, size_t msglen);
  void *arg;

  /* Called after each database with ok = 1 (passed) or 0. May be NULL. */
  void (*on_result)(void *arg, const char *db, int ok, time_t when);
  void *result_arg;

  /* Log sink (levels of server/config.h); NULL = none. */
  void (*log)(void *arg, int level, const char *msg);
  void *log_arg;
} immu_checker_config;

/* Starts the thread. |cfg| is copied. Returns 0, IMMU_EINVAL (list or
 * verify missing), IMMU_ENOMEM or -errno; *out is NULL on failure. */
int immu_checker_start(const immu_checker_config *cfg, immu_checker **out);

/* Starts a pass now if the thread is waiting between passes. */
void immu_checker_kick(immu_checker *c);

/* Completed passes so far. */
uint64_t immu_checker_passes(immu_checker *c);

/* Asks the thread to stop and joins it (waits for a verification in
 * progress). Idempotent. */
void immu_checker_stop(immu_checker *c);

/* Stops (if needed) and frees. NULL allowed. */
void immu_checker_free(immu_checker *c);

#endif
