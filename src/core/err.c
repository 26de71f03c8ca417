/* SPDX-License-Identifier: Apache-2.0 */
#include "immudb/err.h"

#include <errno.h>
#include <string.h>

const char *immu_strerror(int err) {
  switch (err) {
  case 0:
    return "success";
#define IMMU__ERR_MSG(name, val, fatal, msg)                                   \
  case val:                                                                    \
    return msg;
    IMMU_ERRNO_MAP(IMMU__ERR_MSG)
#undef IMMU__ERR_MSG
  default:
    break;
  }
  if (err < 0 && err > -4096)
    return strerror(-err); /* glibc's table is static and immutable */
  return "unknown error";
}

const char *immu_err_name(int err) {
  switch (err) {
  case 0:
    return "OK";
#define IMMU__ERR_NAME(name, val, fatal, msg)                                  \
  case val:                                                                    \
    return #name;
    IMMU_ERRNO_MAP(IMMU__ERR_NAME)
#undef IMMU__ERR_NAME
  case -EIO:
    return "EIO";
  case -ENOSPC:
    return "ENOSPC";
  case -ENOENT:
    return "ENOENT";
  case -EEXIST:
    return "EEXIST";
  case -EACCES:
    return "EACCES";
  case -EINTR:
    return "EINTR";
  case -EAGAIN:
    return "EAGAIN";
  case -EROFS:
    return "EROFS";
  case -EDQUOT:
    return "EDQUOT";
  default:
    return "UNKNOWN";
  }
}

int immu_is_fatal(int err) {
  switch (err) {
#define IMMU__ERR_FATAL(name, val, fatal, msg)                                 \
  case val:                                                                    \
    return fatal;
    IMMU_ERRNO_MAP(IMMU__ERR_FATAL)
#undef IMMU__ERR_FATAL
  case -EIO:
  case -ENOSPC:
  case -EDQUOT:
  case -EROFS:
    return 1;
  default:
    return 0;
  }
}
