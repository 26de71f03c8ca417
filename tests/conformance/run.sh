#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# Conformance test of the immudb server with the official Node SDK
# (immudb-node 1.1.1, see conformance.js). Builds nothing.
#
#   tests/conformance/run.sh path/to/immudb
#
# 1. starts the server on free loopback ports with a fresh data directory
#    (default admin credentials immudb/immudb, allowed on loopback);
# 2. node conformance.js --phase main: every SDK method, verified calls,
#    and the tampered-local-state check;
# 3. tamper round 1: stops the server (SIGTERM), edits two stored values
#    in the log (--phase tamper-disk: one naive byte flip, one careful
#    rewrite with matching hValue and CRC), restarts the server on the
#    tampered data and runs --phase verify-tamper: verified reads of both
#    must reject, an untouched key must still verify;
# 4. tamper round 2: stops it again, undoes the flip and deletes the key
#    index (--phase tamper-disk-2), restarts (the index is rebuilt from the
#    tampered log) and runs --phase verify-tamper-2. If the server refuses
#    to start on tampered data, that counts as detected;
# 5. stops the server and removes the scratch directory.
#
# Exit status: 0 only if every check passed. The last line is
# "total: N passed, M failed". Environment: IMMU_TEST_TMPDIR (scratch
# root, set by CTest), CONFORMANCE_VERBOSE=1 (SDK log and server log),
# CONFORMANCE_KEEP=1 (keep the scratch directory).
set -uo pipefail

if [[ $# -lt 1 || ! -x $1 ]]; then
  echo "usage: $0 path/to/immudb" >&2
  exit 2
fi
BIN=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
HERE=$(cd "$(dirname "$0")" && pwd)
VERBOSE=${CONFORMANCE_VERBOSE:-0}

command -v node >/dev/null 2>&1 || { echo "conformance: node not found" >&2; exit 2; }

# npm modules (scripts/deps.sh installs them from the lock file too)
if [[ ! -f $HERE/node_modules/immudb-node/package.json ]]; then
  echo "conformance: npm ci --prefix $HERE"
  npm ci --prefix "$HERE" --no-audit --no-fund --loglevel=error || {
    echo "conformance: npm ci failed" >&2
    exit 2
  }
fi

TMPROOT=${IMMU_TEST_TMPDIR:-${TMPDIR:-/tmp}}
mkdir -p "$TMPROOT"
TMP=$(mktemp -d "$TMPROOT/conformance.XXXXXX")
DATA=$TMP/data
WORK=$TMP/work
SLOG=$TMP/server.log
mkdir -p "$WORK"
SPID=

stop_server() {
  [[ -n $SPID ]] || return 0
  if kill -0 "$SPID" 2>/dev/null; then
    kill -TERM "$SPID" 2>/dev/null
    for ((i = 0; i < 200; i++)); do # 20 s
      kill -0 "$SPID" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$SPID" 2>/dev/null; then
      echo "conformance: server did not stop within 20s of SIGTERM; SIGKILL" >&2
      kill -KILL "$SPID" 2>/dev/null
    fi
  fi
  wait "$SPID" 2>/dev/null
  SRC=$?
  SPID=
  return 0
}

cleanup() {
  stop_server
  if [[ ${CONFORMANCE_KEEP:-0} == 1 ]]; then
    echo "# kept $TMP"
  else
    rm -rf "$TMP"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Two free TCP ports on 127.0.0.1 (the kernel picks them; a tiny race with
# other programs is possible and reported as a start failure).
read -r PORT MPORT < <(node -e '
  const net = require("net");
  const a = net.createServer(), b = net.createServer();
  a.listen(0, "127.0.0.1", () => b.listen(0, "127.0.0.1", () => {
    console.log(a.address().port, b.address().port);
    a.close(); b.close();
  }));')
if [[ -z ${PORT:-} || -z ${MPORT:-} ]]; then
  echo "conformance: could not find free ports" >&2
  exit 2
fi

# wait_ready <pid>: polls the server with a real gRPC Health call (the
# SDK's own service definition) until it answers status=true: a bare TCP
# connect can be fooled by a TCP self-connect on an ephemeral port, or by
# another program's listener. Exit 0 ready, 1 the process exited, 2 timeout.
wait_ready() {
  node -e '
    const grpc = require("@grpc/grpc-js");
    const svc = require("immudb-node/dist/src/proto/schema_grpc_pb");
    const { Empty } = require("google-protobuf/google/protobuf/empty_pb");
    const [addr, pid, secs] = process.argv.slice(1);
    const client = new svc.ImmuServiceClient(addr, grpc.credentials.createInsecure());
    const end = Date.now() + Number(secs) * 1000;
    const alive = () => { try { process.kill(Number(pid), 0); return true; } catch (e) { return false; } };
    (function poll() {
      if (!alive()) process.exit(1);
      if (Date.now() > end) process.exit(2);
      client.health(new Empty(), new grpc.Metadata(), { deadline: Date.now() + 1000 }, (err, res) => {
        if (!err && res.getStatus()) process.exit(0);
        setTimeout(poll, 100);
      });
    })();' "127.0.0.1:$PORT" "$1" 60
}

# start_server: returns 0 when the server answers Health, 1 if it exited,
# 2 on timeout (60 s: ASan builds start slowly).
start_server() {
  local rc
  : >>"$SLOG"
  "$BIN" --dir "$DATA" --address 127.0.0.1 --port "$PORT" \
    --metrics-server-port "$MPORT" --admin-password immudb \
    >>"$SLOG" 2>&1 &
  SPID=$!
  (cd "$HERE" && wait_ready "$SPID")
  rc=$?
  if [[ $rc -eq 1 ]] || ! kill -0 "$SPID" 2>/dev/null; then
    wait "$SPID" 2>/dev/null
    SRC=$?
    SPID=
    return 1
  fi
  return $rc
}

PASS=0
FAIL=0
# run_phase <phase>: runs conformance.js, echoes its output, adds its ok /
# not ok lines to the totals; a phase that exits non-zero without a failing
# check counts as one failure.
run_phase() {
  local phase=$1 out rc p f
  out=$TMP/$phase.out
  local extra=()
  [[ $VERBOSE == 1 ]] && extra+=(--verbose)
  node "$HERE/conformance.js" --phase "$phase" --host 127.0.0.1 --port "$PORT" \
    --user immudb --password immudb --work "$WORK" --data "$DATA" \
    "${extra[@]}" >"$out"
  rc=$?
  cat "$out"
  p=$(grep -c '^ok ' "$out")
  f=$(grep -c '^not ok ' "$out")
  PASS=$((PASS + p))
  FAIL=$((FAIL + f))
  if [[ $rc -ne 0 && $f -eq 0 ]]; then
    echo "not ok phase $phase: conformance.js exited $rc"
    FAIL=$((FAIL + 1))
  fi
  if ! grep -qE '^[0-9]+ passed, [0-9]+ failed$' "$out"; then
    echo "not ok phase $phase: no summary line"
    FAIL=$((FAIL + 1))
  fi
}

show_server_log() {
  echo "# --- server log (tail) ---"
  tail -n 40 "$SLOG" | sed 's/^/# /'
}

echo "# immudb: $BIN"
echo "# ports: grpc $PORT, metrics $MPORT; data $DATA"
start_server
rc=$?
if [[ $rc -ne 0 ]]; then
  echo "not ok server start: $([[ $rc -eq 1 ]] && echo "exited with status $SRC" || echo "no listener within 60s")"
  show_server_log
  echo "total: 0 passed, 1 failed"
  exit 1
fi
echo "ok server start"
PASS=$((PASS + 1))

run_phase main

# --- tamper the data on disk ----------------------------------------------
# tamper_round <tamper phase> <verify phase> <label>: stops the server,
# edits its files, restarts it and runs the verify phase. A server that
# refuses to start on the tampered data has detected it (counts as a pass).
tamper_round() {
  local tphase=$1 vphase=$2 label=$3 rc
  stop_server
  if [[ ${SRC:-0} -ne 0 ]]; then
    echo "not ok server stop before $label: exit status $SRC after SIGTERM"
    FAIL=$((FAIL + 1))
  else
    echo "ok server stop before $label (SIGTERM, exit status 0)"
    PASS=$((PASS + 1))
  fi
  run_phase "$tphase"
  start_server
  rc=$?
  if [[ $rc -eq 0 ]]; then
    echo "ok server restart on the tampered data ($label)"
    PASS=$((PASS + 1))
    run_phase "$vphase"
    return 0
  elif [[ $rc -eq 1 ]]; then
    echo "ok $label: the server refuses to open the tampered data (exit status $SRC)"
    PASS=$((PASS + 1))
    grep -i -m 3 -E 'corrupt|tamper|checksum|crc|hash' "$SLOG" | sed 's/^/# /'
    return 1
  fi
  echo "not ok server restart ($label): no listener within 60s"
  FAIL=$((FAIL + 1))
  return 1
}

if [[ -f $WORK/handoff.json ]]; then
  if tamper_round tamper-disk verify-tamper "tamper round 1"; then
    tamper_round tamper-disk-2 verify-tamper-2 "tamper round 2"
  fi
  if [[ -n $SPID ]]; then
    stop_server
    if [[ ${SRC:-0} -ne 0 ]]; then
      echo "not ok final server stop: exit status $SRC after SIGTERM"
      FAIL=$((FAIL + 1))
    else
      echo "ok final server stop (SIGTERM, exit status 0)"
      PASS=$((PASS + 1))
    fi
  fi
else
  echo "not ok tamper.disk: phase main left no handoff.json"
  FAIL=$((FAIL + 1))
fi

if [[ $FAIL -ne 0 || $VERBOSE == 1 ]]; then
  show_server_log
fi
echo "total: $PASS passed, $FAIL failed"
[[ $FAIL -eq 0 ]]
