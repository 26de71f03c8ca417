#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# Installs what the build and the tests need on Debian 12, and nothing that
# is already there. Idempotent and silent when nothing is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

PKGS=(
  build-essential cmake ninja-build pkg-config
  clang libclang-rt-14-dev
  libssl-dev libnghttp2-dev libevent-dev
  libprotobuf-c-dev protobuf-c-compiler
  librocksdb-dev libcmocka-dev libcrypt-dev libedit-dev libsqlite3-dev
  libjemalloc-dev
  nodejs npm
)

installed() {
  local status
  status=$(dpkg -s "$1" 2>/dev/null) || return 1
  grep -q '^Status: install ok installed' <<<"$status"
}

# Some machines carry a nodejs build that bundles npm and conflicts with
# Debian's npm package: an npm on PATH counts as installed.
satisfied() {
  case $1 in
    npm) command -v npm >/dev/null 2>&1 && return 0 ;;
  esac
  installed "$1"
}

missing=()
for p in "${PKGS[@]}"; do
  satisfied "$p" || missing+=("$p")
done

if ((${#missing[@]})); then
  echo "deps: installing ${missing[*]}"
  SUDO=()
  if [[ $(id -u) -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1; then
      SUDO=(sudo)
    else
      echo "deps: not root and no sudo; install these by hand: ${missing[*]}" >&2
      exit 1
    fi
  fi
  export DEBIAN_FRONTEND=noninteractive
  "${SUDO[@]}" apt-get update -qq
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# --- npm modules for the conformance tests ---------------------------------
# Installed from the lock file only; rerun only when the lock file changed
# since the last install (npm ci writes node_modules/.package-lock.json).
CONF=tests/conformance
if [[ -f $CONF/package-lock.json ]]; then
  stamp=$CONF/node_modules/.package-lock.json
  if [[ ! -f $stamp || $CONF/package-lock.json -nt $stamp ]]; then
    echo "deps: npm ci --prefix $CONF"
    npm ci --prefix "$CONF" --no-audit --no-fund --loglevel=error
  fi
fi
