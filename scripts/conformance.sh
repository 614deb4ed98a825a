#!/usr/bin/env bash
# Runs the official MCP conformance suite (server mode) against
#   (a) tests/fixtures/conformance_server.py ALONE, and
#   (b) clawgate fronting that same fixture (prefix "", names unchanged),
# for each requirements set, then compares per-check statuses with
# tests/conformance/compare.py. Fails when
#   * clawgate fails a check the fixture alone does not fail (regression),
#   * clawgate fails a check outside tests/conformance/baseline.json,
#   * dns-rebinding-protection does not pass through clawgate.
#
# Usage: scripts/conformance.sh [options]
#   --requirements REV   run only this requirements set (repeatable;
#                        default: 2025-11-25 and 2026-07-28)
#   --update-baseline    rewrite baseline.json's expected failures for the
#                        sets run, from the fixture-alone results
#   --out DIR            write results into DIR (kept) instead of a temp dir
#   --keep               keep the temp results dir even when everything passes
#   --no-build           do not run `cargo build -p clawgate`
# Environment:
#   CLAWGATE_BIN         clawgate binary to test (implies --no-build)
#   CONFORMANCE_TIMEOUT  per-run wall-clock limit in seconds (default 600)
#   CLAWGATE_LOG         passed through to clawgate (its log goes to
#                        <results>/<rev>/clawgate.log)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
COMPARE="$ROOT/tests/conformance/compare.py"
BASELINE="$ROOT/tests/conformance/baseline.json"
FIXTURE="$ROOT/tests/fixtures/conformance_server.py"

REVS=()
UPDATE_BASELINE=0
OUT=""
KEEP=0
BUILD=1
while [ $# -gt 0 ]; do
  case "$1" in
    --requirements) REVS+=("${2:?--requirements needs a value}"); shift 2 ;;
    --requirements=*) REVS+=("${1#*=}"); shift ;;
    --update-baseline) UPDATE_BASELINE=1; shift ;;
    --out) OUT="${2:?--out needs a value}"; shift 2 ;;
    --out=*) OUT="${1#*=}"; shift ;;
    --keep) KEEP=1; shift ;;
    --no-build) BUILD=0; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "conformance.sh: unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done
[ ${#REVS[@]} -gt 0 ] || REVS=(2025-11-25 2026-07-28)

log() { printf '[conformance] %s\n' "$*" >&2; }
die() { printf '[conformance] ERROR: %s\n' "$*" >&2; exit 1; }

# ---- dependencies -----------------------------------------------------------
"$ROOT/scripts/test-deps.sh" >/dev/null
# shellcheck disable=SC1091
. "$ROOT/.cache/env.sh"
command -v conformance >/dev/null || die "conformance CLI not on PATH after sourcing .cache/env.sh"
command -v curl >/dev/null || die "curl is required"
PY="$CLAWGATE_VENV/bin/python"

if [ -n "${CLAWGATE_BIN:-}" ]; then
  BUILD=0
else
  CLAWGATE_BIN="$ROOT/target/debug/clawgate"
fi
if [ "$BUILD" = 1 ]; then
  log "cargo build -p clawgate"
  (cd "$ROOT" && cargo build -q -p clawgate) || die "cargo build -p clawgate failed"
fi
[ -x "$CLAWGATE_BIN" ] || die "clawgate binary not found: $CLAWGATE_BIN"

# ---- workspace + process cleanup --------------------------------------------
if [ -n "$OUT" ]; then
  mkdir -p "$OUT"; WORK="$(cd "$OUT" && pwd)"; KEEP=1
else
  WORK="$(mktemp -d "${TMPDIR:-/tmp}/clawgate-conformance.XXXXXX")"
fi
PIDS=()
STATUS=1
# stop_all: TERM every process started so far, KILL what is still alive after 5 s, reap all.
stop_all() {
  local pid i
  [ ${#PIDS[@]} -gt 0 ] || return 0
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for i in $(seq 1 50); do
    for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && break; pid=""; done
    [ -z "$pid" ] && break
    sleep 0.1
  done
  for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  PIDS=()
}
cleanup() {
  stop_all
  if [ "$KEEP" = 1 ] || [ "$STATUS" != 0 ]; then
    log "results kept in $WORK"
  else
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() {
  "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# wait_http PID URL LOGFILE: until URL answers any HTTP status (or PID dies).
wait_http() {
  local pid="$1" url="$2" logf="$3" i code
  for i in $(seq 1 150); do
    kill -0 "$pid" 2>/dev/null || { tail -n 30 "$logf" >&2; die "process $pid exited early (log: $logf)"; }
    code="$(curl -s -o /dev/null -m 2 -w '%{http_code}' "$url" 2>/dev/null || true)"
    [ -n "$code" ] && [ "$code" != "000" ] && return 0
    sleep 0.2
  done
  tail -n 30 "$logf" >&2
  die "$url did not come up within 30 s (log: $logf)"
}

start_fixture() { # start_fixture LOGFILE -> sets FIXTURE_URL
  local port; port="$(free_port)"
  "$PY" "$FIXTURE" --host 127.0.0.1 --port "$port" >"$1" 2>&1 &
  PIDS+=("$!")
  FIXTURE_URL="http://127.0.0.1:$port/mcp"
  wait_http "$!" "$FIXTURE_URL" "$1"
}

start_gateway() { # start_gateway UPSTREAM_URL CONFIG LOGFILE -> sets GATEWAY_URL
  local port; port="$(free_port)"
  cat >"$2" <<EOF
[listen]
http = "127.0.0.1:0"

# The conformance suite tests the relay: every call is allowed, explicitly.
[policy]
inline = "permit (principal, action, resource);"

[[upstream]]
name = "conformance"
transport = "http"
url = "$1"
prefix = ""
timeout = "30s"
EOF
  "$CLAWGATE_BIN" serve --config "$2" --listen "127.0.0.1:$port" >"$3" 2>&1 &
  PIDS+=("$!")
  GATEWAY_URL="http://127.0.0.1:$port/mcp"
  wait_http "$!" "$GATEWAY_URL" "$3"
}

TO=""
command -v timeout >/dev/null 2>&1 && TO="timeout ${CONFORMANCE_TIMEOUT:-600}"

run_suite() { # run_suite URL REV OUTDIR LOGFILE
  local rc=0 pid
  # Exit status only reflects scored scenarios; the comparison decides. Run in the background
  # and `wait`, so that INT/TERM reach the traps (and the cleanup) at once.
  (cd "$WORK" && exec $TO conformance server --url "$1" --requirements "$2" -o "$3") >"$4" 2>&1 &
  pid=$!
  PIDS+=("$pid")
  wait "$pid" || rc=$?
  if [ "$rc" -ge 124 ]; then
    log "WARNING: conformance run ($1, $2) ended with status $rc (timeout/crash?); see $4"
  fi
  grep -E '^Total:' "$4" | sed "s|^|    |" >&2 || true
  return 0
}

# ---- runs ---------------------------------------------------------------------
log "clawgate: $CLAWGATE_BIN"
log "suite:    $(conformance --version 2>/dev/null || echo '?') ; results: $WORK"
FAILED=0
SUMMARY=()
for rev in "${REVS[@]}"; do
  dir="$WORK/$rev"
  mkdir -p "$dir"

  # Scored server scenarios (labels in the comparison table).
  conformance list --requirements "$rev" |
    awk '/^Server scenarios/{s=1; next} s && /^ *- /{sub(/^ *- /, ""); print; next} s{exit}' >"$dir/scored.txt"

  log "[$rev] fixture alone"
  start_fixture "$dir/fixture-alone.log"
  run_suite "$FIXTURE_URL" "$rev" "$dir/fixture" "$dir/fixture.out"
  stop_all

  log "[$rev] clawgate -> fixture"
  start_fixture "$dir/fixture-upstream.log"
  start_gateway "$FIXTURE_URL" "$dir/clawgate.toml" "$dir/clawgate.log"
  run_suite "$GATEWAY_URL" "$rev" "$dir/gateway" "$dir/gateway.out"
  stop_all

  args=(--fixture "$dir/fixture" --gateway "$dir/gateway" --requirements "$rev"
        --baseline "$BASELINE" --scored "$dir/scored.txt"
        --require-pass dns-rebinding-protection)
  [ "$UPDATE_BASELINE" = 1 ] && args+=(--update-baseline)
  echo
  if "$PY" "$COMPARE" "${args[@]}"; then
    SUMMARY+=("$rev: OK")
  else
    FAILED=1
    SUMMARY+=("$rev: FAIL (results: $dir)")
  fi
done

echo
echo "=== conformance.sh summary ==="
printf '  %s\n' "${SUMMARY[@]}"
STATUS=$FAILED
exit "$FAILED"
