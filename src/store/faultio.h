/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A fault-injecting immu_io for tests: it forwards every call to a base
 * immu_io (usually immu__io_default()) and, when armed, makes chosen calls
 * fail with a chosen errno, or makes a pwritev write only a prefix of its
 * bytes before failing (a short write). It also counts calls per operation.
 *
 * Thread-safe: the controls and the I/O functions may be called from any
 * thread (one mutex guards the state; the base calls run outside it).
 */
#ifndef IMMU_STORE_FAULTIO_H
#define IMMU_STORE_FAULTIO_H

#include <stddef.h>
#include <stdint.h>

#include "store/io.h"

/* The operations of immu_io, one per function pointer. */
typedef enum immu_fault_op {
  IMMU_FAULT_OPEN,
  IMMU_FAULT_CLOSE,
  IMMU_FAULT_PREAD,
  IMMU_FAULT_PWRITEV,
  IMMU_FAULT_FDATASYNC,
  IMMU_FAULT_FTRUNCATE,
  IMMU_FAULT_FSIZE,
  IMMU_FAULT_RENAME,
  IMMU_FAULT_UNLINK,
  IMMU_FAULT_MKDIR,
  IMMU_FAULT_SYNC_DIR,
  IMMU_FAULT_NOPS /* number of operations */
} immu_fault_op;

typedef struct immu_faultio immu_faultio;

/* Creates a wrapper around |base| (borrowed; must outlive the wrapper) with
 * no fault armed. Caller owns *out (immu__faultio_free). Returns 0,
 * IMMU_EINVAL (NULL argument) or IMMU_ENOMEM; *out is NULL on failure. */
int immu__faultio_new(const immu_io *base, immu_faultio **out);

/* Frees the wrapper (NULL allowed). Descriptors opened through it stay
 * open: they belong to the base. */
void immu__faultio_free(immu_faultio *f);

/* The immu_io to hand to the code under test; valid until
 * immu__faultio_free. */
const immu_io *immu__faultio_io(immu_faultio *f);

/* Arms a fault on |op|: the |nth| call from now (0 = the next one) fails
 * with |err| without reaching the base, and if |sticky| so does every later
 * call of |op|. |err| is a negative errno or IMMU_E* code (a positive
 * errno is negated; 0 means -EIO). Replaces any fault armed on |op|. */
void immu__faultio_fail(immu_faultio *f, immu_fault_op op, uint64_t nth,
                        int err, int sticky);

/* Arms a short write: the |nth| pwritev from now (0 = the next one) passes
 * only its first |keep| bytes to the base (if keep >= the call's length,
 * all of them) and then fails with |err| (as above). One-shot. A fault
 * armed with immu__faultio_fail on IMMU_FAULT_PWRITEV takes precedence
 * when both hit the same call. */
void immu__faultio_short_write(immu_faultio *f, uint64_t nth, size_t keep,
                               int err);

/* Disarms every fault (counters are kept). */
void immu__faultio_clear(immu_faultio *f);

/* Calls of |op| since creation or the last immu__faultio_reset_counts,
 * failed ones included. */
uint64_t immu__faultio_count(immu_faultio *f, immu_fault_op op);

/* Calls of |op| that were failed by an armed fault (short writes included). */
uint64_t immu__faultio_injected(immu_faultio *f, immu_fault_op op);

void immu__faultio_reset_counts(immu_faultio *f);

#endif
