#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# Runs immudb-node 1.1.1's OWN test suite (the tap tests shipped in its npm
# tarball, tests/tap-parallel-not-ok/*.ts) against our server. Not part of
# CTest: results and their analysis are in TAP-RESULTS.md.
#
#   tests/conformance/tap.sh path/to/immudb [extra tap args...]
#
# How: the package is copied from node_modules/immudb-node (npm ci first)
# to tests/conformance/.tap/immudb-node and its own devDependencies are
# installed there with --ignore-scripts (tap 15.0.9, typescript 3.9, ...;
# the native `grpc` devDependency is used for types only, so its build is
# skipped). Only the npm registry is needed, once; later runs reuse it.
# The server gets a fresh data directory and free loopback ports; the suite
# reads IMMUDB_HOST / IMMUDB_TEST_PORT / IMMUDB_USER / IMMUDB_PWD.
# tap runs with -R tap: its default reporter crashes on Node 20.
#
# Exit status: tap's.
set -uo pipefail

if [[ $# -lt 1 || ! -x $1 ]]; then
  echo "usage: $0 path/to/immudb [tap args...]" >&2
  exit 2
fi
BIN=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
shift
HERE=$(cd "$(dirname "$0")" && pwd)
PKG=$HERE/.tap/immudb-node

if [[ ! -f $HERE/node_modules/immudb-node/package.json ]]; then
  npm ci --prefix "$HERE" --no-audit --no-fund --loglevel=error || exit 2
fi
if [[ ! -x $PKG/node_modules/.bin/tap ]]; then
  echo "tap.sh: installing the package's devDependencies in $PKG"
  rm -rf "$HERE/.tap"
  mkdir -p "$HERE/.tap"
  cp -r "$HERE/node_modules/immudb-node" "$PKG"
  (cd "$PKG" && npm install --ignore-scripts --no-audit --no-fund \
    --loglevel=error) || exit 2
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/immu-tap.XXXXXX")
SPID=
cleanup() {
  if [[ -n $SPID ]] && kill -0 "$SPID" 2>/dev/null; then
    kill -TERM "$SPID"
    for ((i = 0; i < 200; i++)); do
      kill -0 "$SPID" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$SPID" 2>/dev/null
  fi
  rm -rf "$TMP"
  # state files the suite leaves behind
  rm -f "$PKG/root" "$PKG/tests/root" "$PKG/tests/test/root.json"
}
trap cleanup EXIT

read -r PORT MPORT < <(node -e '
  const net = require("net");
  const a = net.createServer(), b = net.createServer();
  a.listen(0, "127.0.0.1", () => b.listen(0, "127.0.0.1", () => {
    console.log(a.address().port, b.address().port);
    a.close(); b.close();
  }));')

"$BIN" --dir "$TMP/data" --address 127.0.0.1 --port "$PORT" \
  --metrics-server-port "$MPORT" --admin-password immudb \
  >"$TMP/server.log" 2>&1 &
SPID=$!
# ready when a real gRPC Health call answers (a bare TCP connect can be
# fooled by a self-connect on an ephemeral port)
(cd "$HERE" && node -e '
  const grpc = require("@grpc/grpc-js");
  const svc = require("immudb-node/dist/src/proto/schema_grpc_pb");
  const { Empty } = require("google-protobuf/google/protobuf/empty_pb");
  const [addr, pid] = process.argv.slice(1);
  const client = new svc.ImmuServiceClient(addr, grpc.credentials.createInsecure());
  const end = Date.now() + 60000;
  (function poll() {
    try { process.kill(Number(pid), 0); } catch (e) { process.exit(1); }
    if (Date.now() > end) process.exit(2);
    client.health(new Empty(), new grpc.Metadata(), { deadline: Date.now() + 1000 }, (err, res) => {
      if (!err && res.getStatus()) process.exit(0);
      setTimeout(poll, 100);
    });
  })();' "127.0.0.1:$PORT" "$SPID") || {
  cat "$TMP/server.log"
  echo "tap.sh: the server did not become ready" >&2
  exit 2
}

cd "$PKG" || exit 2
rm -f root tests/root tests/test/root.json
export IMMUDB_HOST=127.0.0.1 IMMUDB_TEST_PORT=$PORT IMMUDB_USER=immudb IMMUDB_PWD=immudb
# tap's own per-file timeout (default 30 s) bounds each file
./node_modules/.bin/tap --ts --no-coverage -R tap "$@" tests/tap-parallel-not-ok/*.ts
rc=$?
echo "# --- RPCs the server handled (metrics grpc_server_handled_total) ---"
node -e '
  require("http").get(process.argv[1], (r) => {
    let b = ""; r.on("data", (d) => (b += d)); r.on("end", () => {
      for (const l of b.split("\n")) if (l.startsWith("grpc_server_handled_total")) console.log("# " + l);
    });
  }).on("error", (e) => console.log("# metrics: " + e.message));' "http://127.0.0.1:$MPORT/metrics"
echo "# --- server log (warnings and errors) ---"
grep -v ' INFO ' "$TMP/server.log" | sed 's/^/# /'
exit $rc
