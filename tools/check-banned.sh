#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# Fails if engine code calls a banned function (house style §7.7):
#   sprintf strcpy strcat strtok atoi gets vsprintf
#   malloc calloc realloc free   -> use immu__malloc/calloc/realloc/free
# Scans src/{core,store,db,client}/*.{c,h}; src/core/mem.c (the allocator
# wrappers) is exempt. Only standalone calls match: the name must follow the
# start of the line or one of  space tab ( ! = , ; * & { } ? :  so that
# snprintf(, immu__free(, immu_ahtree_free(, EVP_MD_CTX_free(, OPENSSL_free(
# and p->free( are fine. Comment lines (starting with /*, * or //) are
# skipped. Prints each offending line and exits 1 if there is any.
set -euo pipefail
cd "$(dirname "$0")/.."

DIRS=()
for d in src/core src/store src/db src/client; do
  [[ -d $d ]] && DIRS+=("$d")
done
((${#DIRS[@]})) || exit 0

NAMES='sprintf|vsprintf|strcpy|strcat|strtok|atoi|gets|malloc|calloc|realloc|free'
PATTERN="(^|[[:space:](!=,;*&{}?:])($NAMES)[[:space:]]*\\("

hits=$(grep -rnE --include='*.c' --include='*.h' "$PATTERN" "${DIRS[@]}" \
  | grep -v '^src/core/mem\.c:' \
  | grep -vE '^[^:]+:[0-9]+:[[:space:]]*(/\*|\*|//)' || true)

if [[ -n $hits ]]; then
  echo "check-banned: banned calls found (use snprintf / memcpy / strtoll /"
  echo "immu__malloc, immu__calloc, immu__realloc, immu__free instead):"
  echo "$hits"
  exit 1
fi
echo "check-banned: ok"
