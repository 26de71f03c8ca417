/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Error codes of libimmudb.
 *
 * Every fallible function returns an int: 0 on success, or a negative code.
 * Operating-system failures come back as negative errno values (-EIO,
 * -ENOSPC, ...); our own codes live in [-1099, -1000], so the two ranges
 * never collide.
 */
#ifndef IMMUDB_ERR_H
#define IMMUDB_ERR_H

#ifdef __cplusplus
extern "C" {
#endif

/* X-macro: name, value, fatal (1 = the handle that returned it is poisoned),
 * message. */
#define IMMU_ERRNO_MAP(X)                                                      \
  X(IMMU_EINVAL, -1000, 0, "invalid argument")                                 \
  X(IMMU_ENOMEM, -1001, 1, "out of memory")                                    \
  X(IMMU_ECORRUPT, -1002, 1, "corrupt data")                                   \
  X(IMMU_EVERIFY, -1003, 0, "verification failed")                             \
  X(IMMU_ENOTFOUND, -1004, 0, "not found")                                     \
  X(IMMU_EEXIST, -1005, 0, "already exists")                                   \
  X(IMMU_ERANGE, -1006, 0, "value out of range")                               \
  X(IMMU_ECRYPTO, -1007, 0, "cryptographic library failure")                   \
  X(IMMU_ETOOLARGE, -1008, 0, "too large")                                     \
  X(IMMU_EUNSUPPORTED, -1009, 0, "unsupported")                                \
  X(IMMU_ECLOSED, -1010, 0, "handle is closed")                                \
  X(IMMU_ETIMEOUT, -1011, 0, "timed out")                                      \
  X(IMMU_EBUSY, -1012, 0, "resource busy")                                     \
  X(IMMU_EPOISONED, -1013, 1, "handle refuses work after a fatal error")       \
  X(IMMU_ECONFLICT, -1014, 0, "conflicting request")                           \
  X(IMMU_EPERM, -1015, 0, "permission denied")                                 \
  X(IMMU_EAUTH, -1016, 0, "authentication failed")                             \
  X(IMMU_EPROTO, -1017, 0, "protocol error")                                  \
  X(IMMU_EWOULDBLOCK, -1018, 0, "answer needs a blocking operation")

enum immu_errno {
#define IMMU__ERR_ENUM(name, val, fatal, msg) name = (val),
  IMMU_ERRNO_MAP(IMMU__ERR_ENUM)
#undef IMMU__ERR_ENUM
};

/* Returns a static, human-readable message for |err| (one of ours or a
 * negative errno). Never returns NULL. Thread-safe. */
const char *immu_strerror(int err);

/* Returns the symbolic name ("IMMU_ECORRUPT", "EIO", ...) of |err|, or
 * "UNKNOWN". Never returns NULL. Thread-safe. */
const char *immu_err_name(int err);

/* Returns 1 if |err| leaves the handle that returned it unusable except for
 * close (corruption, out of memory mid-commit, I/O failure), 0 otherwise. */
int immu_is_fatal(int err);

#ifdef __cplusplus
}
#endif

#endif /* IMMUDB_ERR_H */
