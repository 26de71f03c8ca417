#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# Installs what is missing, builds a Release build in build/release, then
# starts the server on its default data directory ./data. Until the server
# exists, runs the engine self-check instead. Extra arguments are passed to
# the program.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/deps.sh

# Warnings are gated by scripts/test.sh; a newer compiler warning must not
# stop the server from starting.
cmake -S . -B build/release -G Ninja -DCMAKE_BUILD_TYPE=Release -DIMMU_WERROR=OFF \
  -DIMMU_BUILD_TESTS=OFF >/dev/null
cmake --build build/release -j "${IMMU_JOBS:-2}"

if [[ -x build/release/immudb ]]; then
  # With no settings given, listen on loopback only: the server refuses the
  # default admin password on 0.0.0.0 (pass --address and --admin-password
  # to serve other hosts).
  if [[ $# -eq 0 && -z "${IMMUDB_ADDRESS:-}" && -z "${IMMUDB_CONFIG:-}" &&
        ! -f configs/immudb.toml ]]; then
    set -- --address 127.0.0.1
  fi
  exec build/release/immudb "$@"
fi
echo "run: the server is not built yet; running immudb-selfcheck" >&2
exec build/release/immudb-selfcheck "$@"
