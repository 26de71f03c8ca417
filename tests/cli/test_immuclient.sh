#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# End-to-end test of immuclient against a real immudb server.
#
#   test_immuclient.sh <immudb server binary> <immuclient binary>
#
# Starts the server on 127.0.0.1 with free ports and a fresh data directory
# (under $IMMU_TEST_TMPDIR, else a mktemp directory), with HOME pointed at a
# scratch directory (token file, trusted states, history), and checks every
# command's output and exit code, the errors (unknown key, wrong password,
# missing permission, bad flags), --json output (parsed with python3),
# interactive mode through a pseudo-terminal, and audit-mode: one round
# passes on a healthy server, its metrics endpoint, and it fails loudly
# after the trusted state or the server's data was tampered with. Every
# client call is bounded by `timeout`; the server and the audit daemon are
# stopped on exit. Requires bash, python3 (standard library) and timeout.
set -u

SERVER=${1:?usage: test_immuclient.sh <immudb> <immuclient>}
IC=${2:?usage: test_immuclient.sh <immudb> <immuclient>}
for b in "$SERVER" "$IC"; do
  [[ -x $b ]] || { echo "not executable: $b" >&2; exit 2; }
done

ROOT=${IMMU_TEST_TMPDIR:-}
if [[ -z $ROOT ]]; then
  ROOT=$(mktemp -d)
fi
T=$(mktemp -d "$ROOT/run.XXXXXX")
DATA=$T/data
export HOME=$T/home
mkdir -p "$HOME"
# A clean environment: no settings of the caller leak in.
while IFS= read -r v; do unset "$v"; done < <(env | sed -n 's/^\(IMMUCLIENT_[A-Za-z0-9_]*\)=.*/\1/p')

SERVER_PID=
TLS_PID=
AUDIT_PID=
FAILS=0
CHECKS=0

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

PORT=$(free_port)
MPORT=$(free_port)
while [[ $MPORT == "$PORT" ]]; do MPORT=$(free_port); done

stop_server() {
  if [[ -n $SERVER_PID ]]; then
    kill -TERM "$SERVER_PID" 2>/dev/null
    for _ in $(seq 1 100); do
      kill -0 "$SERVER_PID" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$SERVER_PID" 2>/dev/null
    wait "$SERVER_PID" 2>/dev/null
    SERVER_PID=
  fi
}

cleanup() {
  if [[ -n $AUDIT_PID ]]; then
    kill -TERM "$AUDIT_PID" 2>/dev/null
    wait "$AUDIT_PID" 2>/dev/null
  fi
  stop_server
  if [[ -n $TLS_PID ]]; then
    kill -TERM "$TLS_PID" 2>/dev/null
    wait "$TLS_PID" 2>/dev/null
  fi
  if ((FAILS == 0)); then
    rm -rf "$T"
  else
    echo "test files kept in $T (server log: $T/server.log)"
  fi
}
trap cleanup EXIT

# start_server [log suffix]: starts the server and waits for `status`.
# Returns 1 when it does not come up.
start_server() {
  "$SERVER" --dir "$DATA" --address 127.0.0.1 --port "$PORT" \
    --metrics-server-port "$MPORT" --consistency-check=false \
    >>"$T/server.log" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 1 100); do
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
      wait "$SERVER_PID" 2>/dev/null
      SERVER_PID=
      return 1
    fi
    if timeout 5 "$IC" -p "$PORT" status >/dev/null 2>&1; then
      return 0
    fi
    sleep 0.1
  done
  return 1
}

# ---------------------------------------------------------------------
# assertions
# ---------------------------------------------------------------------

OUT=$T/out
ERR=$T/err
RC=0
DESC=

# ic [args...]: runs immuclient (connected to the test server) with stdin
# from /dev/null; OUT, ERR, RC hold the result.
ic() {
  DESC="immuclient $*"
  timeout 60 "$IC" -p "$PORT" "$@" >"$OUT" 2>"$ERR" </dev/null
  RC=$?
}

# ic_in <stdin text> [args...]
ic_in() {
  local input=$1
  shift
  DESC="immuclient $* (stdin)"
  printf '%s' "$input" | timeout 60 "$IC" -p "$PORT" "$@" >"$OUT" 2>"$ERR"
  RC=$?
}

fail() {
  FAILS=$((FAILS + 1))
  echo "FAIL: $DESC: $*"
  echo "  exit code: $RC"
  echo "  stdout: $(head -c 2000 "$OUT")"
  echo "  stderr: $(head -c 2000 "$ERR")"
}

rc_is() {
  CHECKS=$((CHECKS + 1))
  [[ $RC -eq $1 ]] || fail "exit code $RC, want $1"
}

out_has() {
  CHECKS=$((CHECKS + 1))
  grep -Eq -- "$1" "$OUT" || fail "stdout does not match /$1/"
}

out_is() {
  CHECKS=$((CHECKS + 1))
  [[ "$(cat "$OUT")" == "$1" ]] || fail "stdout is not '$1'"
}

err_has() {
  CHECKS=$((CHECKS + 1))
  grep -Eiq -- "$1" "$ERR" || fail "stderr does not match /$1/"
}

err_one_line() {
  CHECKS=$((CHECKS + 1))
  [[ $(grep -c . "$ERR") -eq 1 ]] || fail "stderr is not exactly one line"
}

# json_ok <python expression on d>: stdout parses as JSON and the
# expression is true.
json_ok() {
  CHECKS=$((CHECKS + 1))
  python3 - "$OUT" "$1" <<'EOF' || fail "JSON check failed: $1"
import json, sys
with open(sys.argv[1]) as f:
    d = json.load(f)
ok = eval(sys.argv[2], {"d": d})
if not ok:
    print("  JSON:", json.dumps(d)[:2000])
    sys.exit(1)
EOF
}

section() { echo "== $*"; }

# ---------------------------------------------------------------------
section "server"
# ---------------------------------------------------------------------
if ! start_server; then
  echo "FAIL: the server did not start"
  cat "$T/server.log"
  FAILS=1
  exit 1
fi

# ---------------------------------------------------------------------
section "status, health, info, version, help (no login needed)"
# ---------------------------------------------------------------------
ic status; rc_is 0; out_has '^Health check OK$'; out_has '^version: +[0-9]'
ic p; rc_is 0; out_has 'Health check OK'
ic health --json; rc_is 0; json_ok 'd["status"] is True and d["version"]'
ic info; rc_is 0; out_has '^version: '; out_has '^databases: +1$'
ic info --json; rc_is 0; json_ok 'd["numDatabases"] == 1'
ic version; rc_is 0; out_has '^immuclient '
ic --help; rc_is 0; out_has 'safeset'; out_has 'IMMUCLIENT_'
ic help get; rc_is 0; out_has 'get <key>'

# ---------------------------------------------------------------------
section "authentication"
# ---------------------------------------------------------------------
ic get k1; rc_is 1; err_has 'not logged in'; err_one_line
ic_in $'wrongpass\n' login immudb; rc_is 1
err_has 'invalid user name or password'; err_one_line
[[ -e $HOME/.immuclient/token ]] && fail "token file written after a failed login"
ic --username immudb --password nope get k1; rc_is 1
err_has 'invalid user name or password'
ic_in $'immudb\n' login immudb; rc_is 0; out_has '^Successfully logged in$'
CHECKS=$((CHECKS + 1))
if [[ ! -f $HOME/.immuclient/token ]]; then
  fail "no token file after login"
elif [[ $(stat -c %a "$HOME/.immuclient/token") != 600 ]]; then
  fail "token file mode $(stat -c %a "$HOME/.immuclient/token"), want 600"
fi

# ---------------------------------------------------------------------
section "set / get / safeset / safeget"
# ---------------------------------------------------------------------
ic set k1 v1; rc_is 0; out_has '^tx: +[0-9]+$'; out_has '^key: +k1$'
out_has '^value: +v1$'
ic s k1 v1b --json; rc_is 0
json_ok 'd["key"] == "k1" and d["value"] == "v1b" and d["tx"] >= 2'
ic get k1; rc_is 0; out_has '^key: +k1$'; out_has '^value: +v1b$'
out_has '^rev: +2$'
ic get k1 --value-only; rc_is 0; out_is 'v1b'
ic --value-only g k1@1; rc_is 0; out_is 'v1'
ic get k1@-1 --value-only; rc_is 0; out_is 'v1'
ic safeset k1 v2; rc_is 0; out_has '^value: +v2$'; out_has '^verified: +true$'
ic ss k1 v3 --json; rc_is 0; json_ok 'd["verified"] is True and d["value"] == "v3"'
ic safeget k1; rc_is 0; out_has '^value: +v3$'; out_has '^verified: +true$'
ic verifiedget k1 --json; rc_is 0
json_ok 'd["verified"] and d["value"] == "v3" and d["revision"] == 4'
ic_in 'from stdin' set k2; rc_is 0; out_has '^value: +from stdin$'
ic get k2 --value-only; rc_is 0; out_is 'from stdin'
ic get missing; rc_is 1; err_has '^immuclient: key not found$'; err_one_line
ic safeget missing; rc_is 1; err_has 'key not found'
ic get missing --json; rc_is 1; json_ok '"key not found" in d["error"]'
ic get k1@9; rc_is 1; err_has 'revision'

# ---------------------------------------------------------------------
section "history / scan / count / restore / delete"
# ---------------------------------------------------------------------
ic history k1; rc_is 0; out_has '^value: +v1$'; out_has '^value: +v3$'
ic history k1 --json; rc_is 0
json_ok '[e["value"] for e in d] == ["v1", "v1b", "v2", "v3"]'
ic h missing; rc_is 1; err_has 'key not found'
ic scan k --json; rc_is 0
json_ok 'sorted(e["key"] for e in d) == ["k1", "k2"]'
ic scan k --value-only; rc_is 0; out_has '^v3$'
ic scan zzz; rc_is 0; out_has 'No item found'
ic count k; rc_is 0; out_is '2'
ic cnt k --json; rc_is 0; json_ok 'd["count"] == 2'
ic restore k1@1; rc_is 0; out_has '^value: +v1$'
ic get k1 --value-only; rc_is 0; out_is 'v1'
ic restore k1; rc_is 2
ic delete k1; [[ $RC -ne 0 ]] && err_one_line  # refused by a v0 server
ic set k1 v3; rc_is 0

# ---------------------------------------------------------------------
section "references and sorted sets"
# ---------------------------------------------------------------------
ic reference r1 k1; rc_is 0; out_has '^key: +r1$'; out_has '^referenced key: k1$'
ic get r1 --value-only; rc_is 0; out_is 'v3'
ic safereference r2 k1; rc_is 0; out_has '^verified: +true$'
ic safeget r2 --json; rc_is 0
json_ok 'd["key"] == "k1" and d["value"] == "v3" and d["referencedBy"]["key"] == "r2"'
ic setReference r3 missing; rc_is 1; err_has 'not found'
ic zadd set1 1.5 k1; rc_is 0; out_has '^set: +set1$'; out_has '^score: +1.500000$'
ic safezadd set1 -2.5 k2 --json; rc_is 0
json_ok 'd["verified"] and d["score"] == -2.5 and d["set"] == "set1"'
ic zscan set1 --json; rc_is 0
json_ok '[(e["key"], e["score"]) for e in d] == [("k2", -2.5), ("k1", 1.5)]'
ic zscan set1 --value-only; rc_is 0; out_is $'from stdin\nv3'
ic zadd set1 notanumber k1; rc_is 2; err_has 'invalid score'

# ---------------------------------------------------------------------
section "transactions, state, consistency"
# ---------------------------------------------------------------------
ic tx 1; rc_is 0; out_has '^tx: +1$'; out_has '^entries: +1$'; out_has '^hash: +[0-9a-f]{64}$'
ic safetx 1; rc_is 0; out_has '^verified: +true$'
ic tx 1 --json; rc_is 0; json_ok 'd["tx"] == 1 and d["entries"][0]["key"] == "k1"'
ic tx 99999; rc_is 1; err_has 'tx not found'
ic tx abc; rc_is 2; err_has 'invalid tx id'
ic txscan 1 3 --json; rc_is 0; json_ok '[t["tx"] for t in d] == [1, 2, 3]'
ic txscan 2 2 desc --json; rc_is 0; json_ok '[t["tx"] for t in d] == [2, 1]'
ic current; rc_is 0; out_has '^database: defaultdb$'; out_has '^txID: +[0-9]+$'
ic current --json; rc_is 0
json_ok 'd["database"] == "defaultdb" and d["txID"] > 5 and len(d["hash"]) == 64'
CUR_TX=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["txID"])' "$OUT")
CUR_HASH=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["hash"])' "$OUT")
ic check-consistency "$CUR_TX" "$CUR_HASH"; rc_is 0; out_has '^verified: +true$'
ic c 2 --json; rc_is 0; json_ok 'd["verified"] is True and d["tx"] == 2'
ic check-consistency "$CUR_TX" 0000000000000000000000000000000000000000000000000000000000000000
rc_is 3; out_has '^verified: +false$'; err_has 'possible tampering'
ic check-consistency "$CUR_TX" nothex; rc_is 2

# ---------------------------------------------------------------------
section "databases and use"
# ---------------------------------------------------------------------
ic database create db2; rc_is 0
ic database list --json; rc_is 0; json_ok '"db2" in d and "defaultdb" in d'
ic use db2; rc_is 0; out_is 'Now using db2'
ic set onlyindb2 x; rc_is 0
ic current --json; rc_is 0; json_ok 'd["database"] == "db2"'
ic use defaultdb; rc_is 0
ic get onlyindb2; rc_is 1; err_has 'key not found'
ic --database db2 get onlyindb2 --value-only; rc_is 0; out_is 'x'
ic current --json; rc_is 0
json_ok 'd["database"] == "defaultdb"'  # --database is for one call only
ic use nosuchdb; rc_is 1; err_one_line

# ---------------------------------------------------------------------
section "users and permissions"
# ---------------------------------------------------------------------
ic_in $'Reader1!pass\n' user create reader read defaultdb; rc_is 0
out_has 'Created user reader'
ic user list --json; rc_is 0; json_ok 'any(u["user"] == "reader" for u in d)'
ic --username reader --password 'Reader1!pass' get k1 --value-only; rc_is 0
out_is 'v3'
ic --username reader --password 'Reader1!pass' set k1 hacked; rc_is 1
err_has 'permission denied'; err_one_line
ic --username reader --password 'Reader1!pass' safeset k1 hacked; rc_is 1
err_has 'permission denied'
ic --username reader --password 'Reader1!pass' --database db2 get onlyindb2; rc_is 1
err_one_line

# ---------------------------------------------------------------------
section "environment variables and encoded passwords"
# ---------------------------------------------------------------------
DESC="env IMMUCLIENT_IMMUDB_ADDRESS/PORT/USERNAME/PASSWORD get k1"
IMMUCLIENT_IMMUDB_ADDRESS=127.0.0.1 IMMUCLIENT_IMMUDB_PORT=$PORT \
  IMMUCLIENT_USERNAME=immudb IMMUCLIENT_PASSWORD=immudb \
  IMMUCLIENT_VALUE_ONLY=true IMMUCLIENT_TOKENFILE=$T/none \
  timeout 60 "$IC" get k1 >"$OUT" 2>"$ERR" </dev/null
RC=$?; rc_is 0; out_is 'v3'
DESC="env IMMUCLIENT_IMMUDB_PORT wrong, flag wins"
IMMUCLIENT_IMMUDB_PORT=1 timeout 60 "$IC" -p "$PORT" status >"$OUT" 2>"$ERR" </dev/null
RC=$?; rc_is 0
DESC="env IMMUCLIENT_IMMUDB_PORT=1"
IMMUCLIENT_IMMUDB_PORT=1 timeout 60 "$IC" status >"$OUT" 2>"$ERR" </dev/null
RC=$?; rc_is 1; err_has 'cannot reach immudb at 127.0.0.1:1'; err_one_line
ic --username immudb --password enc:aW1tdWRi --tokenfile "$T/none" get k1 --value-only
rc_is 0; out_is 'v3'
DESC="env IMMUCLIENT_JSON"
IMMUCLIENT_JSON=1 timeout 60 "$IC" -p "$PORT" get k1 >"$OUT" 2>"$ERR" </dev/null
RC=$?; rc_is 0; json_ok 'd["value"] == "v3"'

# ---------------------------------------------------------------------
section "bad usage"
# ---------------------------------------------------------------------
ic --bogus get k1; rc_is 2; err_has 'unknown flag: --bogus'; err_one_line
ic -p; rc_is 2
ic -p notaport status; rc_is 2; err_has 'invalid value'
ic nosuchcommand; rc_is 2; err_has 'unknown command'
ic get; rc_is 2; err_has 'wrong number of arguments'
ic set a b c; rc_is 2
ic --mtls=maybe status; rc_is 2; err_has 'invalid boolean'
ic --audit-interval 5x audit-mode; rc_is 2; err_has 'invalid duration'
ic --password enc:@@@ status; rc_is 2

# ---------------------------------------------------------------------
section "interactive mode (pseudo-terminal)"
# ---------------------------------------------------------------------
cat >"$T/pty_it.py" <<'EOF'
import os, pty, select, sys, time
argv = sys.argv[1:]
pid, fd = pty.fork()
if pid == 0:
    os.execv(argv[0], argv)
buf = b""
def pump(t):
    global buf
    end = time.time() + t
    while time.time() < end:
        r, _, _ = select.select([fd], [], [], 0.05)
        if r:
            try:
                d = os.read(fd, 65536)
            except OSError:
                return False
            if not d:
                return False
            buf += d
    return True
def wait_for(s, t=20):
    end = time.time() + t
    while time.time() < end and s not in buf:
        if not pump(0.1):
            break
    return s in buf
ok = wait_for(b"immuclient> ")
steps = [("logout", b"logged out"), ("login immudb", b"Password:"),
         ("immudb", b"Successfully logged in"),
         ("set itkey 'it value'", b"it value"),
         ("get itkey --value-only", b"\nit value"),
         ("get nokey", b"key not found"),
         ("safeget itkey", b"verified: true"),
         ("get itkey --json", b'"value":"it value"')]
for line, want in steps:
    n = buf.count(b"immuclient> ")
    os.write(fd, line.encode() + b"\n")
    ok = ok and wait_for(want)
    if not ok:
        print("missing %r after %r" % (want, line))
        break
os.write(fd, b"exit\n")
end = time.time() + 20
status = None
while time.time() < end:
    pump(0.1)
    p, st = os.waitpid(pid, os.WNOHANG)
    if p == pid:
        status = st
        break
if status is None:
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    print("interactive mode did not exit")
    ok = False
elif os.WEXITSTATUS(status) != 0:
    print("exit status", os.WEXITSTATUS(status))
    ok = False
if b"immudb\r\n" in buf.split(b"Password:", 1)[-1][:10]:
    print("the password was echoed")
    ok = False
sys.stdout.write(buf.decode(errors="replace"))
sys.exit(0 if ok else 1)
EOF
DESC="immuclient it (pty)"
timeout 90 python3 "$T/pty_it.py" "$IC" -p "$PORT" it >"$OUT" 2>"$ERR"
RC=$?; rc_is 0
out_has 'immuclient> '
CHECKS=$((CHECKS + 1))
grep -q 'set\\040itkey' "$HOME/.immuclient_history" 2>/dev/null ||
  grep -q 'set itkey' "$HOME/.immuclient_history" 2>/dev/null ||
  fail "history file ~/.immuclient_history misses the commands"
# Not a terminal: lines from stdin, one connection (login lasts).
ic_in $'get itkey --value-only\nget nokey\ncount it\nexit\nget never\n' it
rc_is 0; out_is $'it value\n1'; err_has 'key not found'
ic_in $'login immudb\nimmudb\nset piped yes\nget piped --value-only\n' --tokenfile "$T/piped.token" it
rc_is 0; out_has '^yes$'

# ---------------------------------------------------------------------
section "audit-mode"
# ---------------------------------------------------------------------
AUD=(--audit-username immudb --audit-password immudb)
ic audit-mode --audit-once "${AUD[@]}" --json; rc_is 0
json_ok 'd["result"] in ("unchecked", "ok") and len(d["databases"]) == 2'
ic set afteraudit 1; rc_is 0
ic audit-mode --audit-once "${AUD[@]}" --json; rc_is 0
json_ok 'd["result"] == "ok" and all(x["result"] == "ok" for x in d["databases"])'
ic audit-mode --audit-once "${AUD[@]}" --audit-databases db2; rc_is 0
out_has '^db2: ok'; CHECKS=$((CHECKS + 1)); grep -q defaultdb "$OUT" && fail "filtered db audited"
ic audit-mode --audit-once --audit-username immudb --audit-password wrong; rc_is 1
err_has 'ERROR'

# The daemon and its metrics.
APORT=$(free_port)
"$IC" -p "$PORT" audit-mode "${AUD[@]}" --audit-interval 1s \
  --audit-monitoring-host 127.0.0.1 --audit-monitoring-port "$APORT" \
  >"$T/audit.out" 2>"$T/audit.err" </dev/null &
AUDIT_PID=$!
DESC="audit-mode daemon metrics"
python3 - "$APORT" >"$OUT" 2>"$ERR" <<'EOF'
import sys, time, urllib.request
port = sys.argv[1]
end = time.time() + 30
last = ""
while time.time() < end:
    try:
        m = urllib.request.urlopen("http://127.0.0.1:%s/metrics" % port, timeout=5).read().decode()
        last = m
        runs = [l for l in m.splitlines() if l.startswith("immuclient_audit_runs_total ")]
        res = [l for l in m.splitlines() if l.startswith("immuclient_audit_result_per_server{")]
        if runs and int(runs[0].split()[1]) >= 2 and res and res[0].split()[-1] == "1":
            assert 'server_address="127.0.0.1:' in res[0], res[0]
            assert urllib.request.urlopen("http://127.0.0.1:%s/readyz" % port, timeout=5).status == 200
            print(m)
            sys.exit(0)
    except OSError:
        pass
    time.sleep(0.2)
print(last)
sys.exit(1)
EOF
RC=$?; rc_is 0; out_has 'immuclient_audit_result_per_db\{.*db="db2"\} 1'
kill -TERM "$AUDIT_PID"
DESC="audit-mode daemon stop"
RC=0; wait "$AUDIT_PID" || RC=$?
AUDIT_PID=
rc_is 0
CHECKS=$((CHECKS + 1))
grep -q 'auditor stopped' "$T/audit.err" || fail "no 'auditor stopped' in the daemon log"

# Tampered trusted state: the server's history no longer matches it.
cat >"$T/tamper_state.py" <<'EOF'
import glob, hashlib, sys
d, db = sys.argv[1], sys.argv[2]
f = [p for p in glob.glob(d + "/state-*") if not p.endswith(".lock")][0]
lines = [l for l in open(f).read().split("\n") if l and not l.startswith("sha256 ")]
out = []
for l in lines:
    p = l.split(" ")
    if p[0] == "db" and p[1] == db.encode().hex():
        h = bytearray(bytes.fromhex(p[3])); h[5] ^= 0x40; p[3] = h.hex()
        l = " ".join(p)
    out.append(l)
text = "\n".join(out) + "\n"
text += "sha256 " + hashlib.sha256(text.encode()).hexdigest() + "\n"
open(f, "w").write(text)
EOF
ASTATE=$HOME/.immuclient/audit
cp -a "$ASTATE" "$T/audit.bak"
python3 "$T/tamper_state.py" "$ASTATE" defaultdb
ic audit-mode --audit-once "${AUD[@]}" --json; rc_is 3
json_ok 'd["result"] == "tampered" and [x["result"] for x in d["databases"] if x["database"] == "defaultdb"] == ["tampered"]'
err_has 'ERROR.*TAMPERING DETECTED'
echo garbage >>"$(ls "$ASTATE"/state-* | grep -v '\.lock$' | head -1)"
ic audit-mode --audit-once "${AUD[@]}"; rc_is 3; err_has 'damaged'
rm -rf "$ASTATE"; cp -a "$T/audit.bak" "$ASTATE"
ic audit-mode --audit-once "${AUD[@]}"; rc_is 0

# Tampered server data: a value committed after the last audit is altered
# on disk while the server is down.
ic --json set tamperkey TAMPERME-original-value; rc_is 0
TAMPER_TX=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["tx"])' "$OUT")
stop_server
DESC="flip a value byte in the log"
python3 - "$DATA/defaultdb/log" <<'EOF'
import glob, sys
hit = 0
for p in sorted(glob.glob(sys.argv[1] + "/*.log")):
    b = bytearray(open(p, "rb").read())
    i = b.find(b"TAMPERME-original-value")
    if i >= 0:
        b[i + 9] ^= 0x20
        open(p, "wb").write(b)
        hit = 1
sys.exit(0 if hit else 1)
EOF
RC=$?; rc_is 0
if start_server; then
  ic audit-mode --audit-once "${AUD[@]}"; rc_is 3
  err_has 'ERROR.*TAMPERING DETECTED'
  # (a restarted server no longer knows the saved token: log in again)
  ic safeget tamperkey; rc_is 1; err_has 'not logged in'
  ic --username immudb --password immudb safeget tamperkey; rc_is 3
  err_has 'corrupt'; err_one_line
  ic audit-mode --audit-once "${AUD[@]}" --audit-verify-values; rc_is 3
  # check-consistency of the tampered tx against the trusted state: refused
  ic --username immudb --password immudb check-consistency "$TAMPER_TX"
  if [[ $RC -eq 0 ]]; then
    DESC="check-consistency of tampered tx $TAMPER_TX"; fail "it reported no tampering"
  else
    CHECKS=$((CHECKS + 1))
  fi
  err_has 'corrupt|tamper|verif'
else
  # Refusing to start on a damaged log is a loud failure too.
  echo "   (the server refused to start on the tampered log)"
  CHECKS=$((CHECKS + 1))
  grep -Eiq 'corrupt|damaged|crc|checksum' "$T/server.log" ||
    { DESC="server start after tampering"; fail "server exited without naming the damage"; }
fi

# ---------------------------------------------------------------------
section "mTLS and signed states"
# ---------------------------------------------------------------------
if ! command -v openssl >/dev/null; then
  echo "   (openssl not found: skipped)"
else
  K=$T/tls
  mkdir -p "$K"
  (
    cd "$K" || exit 1
    EC=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
    openssl req -x509 "${EC[@]}" -keyout ca.key -out ca.crt -days 2 \
      -subj "/CN=immuclient test CA" &&
      openssl req "${EC[@]}" -keyout srv.key -out srv.csr -subj "/CN=localhost" &&
      printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >srv.ext &&
      openssl x509 -req -in srv.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
        -out srv.crt -days 2 -extfile srv.ext &&
      openssl req "${EC[@]}" -keyout cli.key -out cli.csr -subj "/CN=client" &&
      openssl x509 -req -in cli.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
        -out cli.crt -days 2 &&
      openssl ecparam -name prime256v1 -genkey -noout -out sign.key &&
      openssl ec -in sign.key -pubout -out sign.pub &&
      openssl ecparam -name prime256v1 -genkey -noout -out other.key &&
      openssl ec -in other.key -pubout -out other.pub
  ) >"$T/openssl.log" 2>&1 || { DESC="openssl"; fail "cannot create test certificates"; }
  TPORT=$(free_port)
  TMPORT=$(free_port)
  TLSC=(-p "$TPORT" --mtls --servername localhost --certificate "$K/cli.crt"
        --pkey "$K/cli.key" --clientcas "$K/ca.crt")
  "$SERVER" --dir "$T/tlsdata" --address 127.0.0.1 --port "$TPORT" \
    --metrics-server-port "$TMPORT" --consistency-check=false --mtls \
    --certificate "$K/srv.crt" --pkey "$K/srv.key" --clientcas "$K/ca.crt" \
    --signingKey "$K/sign.key" >>"$T/tls-server.log" 2>&1 &
  TLS_PID=$!
  up=0
  for _ in $(seq 1 100); do
    kill -0 "$TLS_PID" 2>/dev/null || break
    if timeout 5 "$IC" "${TLSC[@]}" status >/dev/null 2>&1; then up=1; break; fi
    sleep 0.1
  done
  if ((up == 0)); then
    DESC="mTLS server"; fail "did not start: $(tail -3 "$T/tls-server.log")"
  else
    TLSU=("${TLSC[@]}" --username immudb --password immudb --tokenfile "$T/tls.token")
    ic "${TLSU[@]}" --server-signing-pub-key "$K/sign.pub" current; rc_is 0
    out_has "^database '?defaultdb'? is empty$"
    ic "${TLSU[@]}" --server-signing-pub-key "$K/sign.pub" safeset tk tv; rc_is 0
    out_has '^verified: +true$'
    ic "${TLSU[@]}" --server-signing-pub-key "$K/sign.pub" current --json; rc_is 0
    json_ok 'd["txID"] == 1 and len(d["signature"]) > 100'
    ic "${TLSU[@]}" --server-signing-pub-key "$K/sign.pub" safeget tk --value-only
    rc_is 0; out_is 'tv'
    # A key the server does not sign with: every state is refused.
    ic "${TLSU[@]}" --server-signing-pub-key "$K/other.pub" --dir "$T/otherkey" current
    rc_is 3; err_has 'signature'; err_one_line
    ic "${TLSU[@]}" --server-signing-pub-key "$K/other.pub" --dir "$T/otherkey2" safeget tk
    rc_is 3; err_has 'signature'
    ic "${TLSU[@]}" audit-mode --audit-once --server-signing-pub-key "$K/sign.pub"
    rc_is 0
    ic "${TLSU[@]}" audit-mode --audit-once --server-signing-pub-key "$K/other.pub" \
      --roots-filepath "$T/otheraudit"
    rc_is 3; err_has 'TAMPERING DETECTED'
    # No client certificate, or no TLS at all: refused.
    ic -p "$TPORT" --mtls --servername localhost --clientcas "$K/ca.crt" \
      --username immudb --password immudb get tk
    rc_is 1; err_one_line
    ic -p "$TPORT" --username immudb --password immudb get tk
    rc_is 1; err_one_line
    # A CA that did not sign the server's certificate.
    ic "${TLSC[@]/$K\/ca.crt/$K/cli.crt}" --username immudb --password immudb get tk
    rc_is 1; err_one_line
  fi
  kill -TERM "$TLS_PID" 2>/dev/null
  wait "$TLS_PID" 2>/dev/null
  TLS_PID=
fi

# ---------------------------------------------------------------------
section "logout"
# ---------------------------------------------------------------------
ic logout; rc_is 0; out_is 'Successfully logged out'
CHECKS=$((CHECKS + 1))
[[ -e $HOME/.immuclient/token ]] && fail "token file still there after logout"
ic get k1; rc_is 1; err_has 'not logged in'
ic logout; rc_is 0; out_is 'User not logged in.'

echo "$CHECKS checks, $FAILS failures"
((FAILS == 0))
