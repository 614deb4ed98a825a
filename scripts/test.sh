#!/usr/bin/env bash
# README command 2: every test clawgate has, in one run.
#
#   1. install test dependencies into .cache/ (Node 22, MCP reference servers, Inspector,
#      the conformance suite, a Python venv with the official `mcp` SDK)   scripts/test-deps.sh
#   2. clippy with warnings denied (the workspace lints forbid unwrap/expect/panic outside tests)
#   3. cargo test: unit tests and the Rust end-to-end relay tests
#   4. interop: real clients (Python SDK, Inspector CLI, OpenAI Agents SDK) through clawgate
#      in front of real servers                                              scripts/interop.sh
#   5. the official MCP conformance suite through clawgate, both protocol eras, compared with
#      the fixture alone and the checked-in baseline                          scripts/conformance.sh
#   6. short smoke runs of the load harness: relay, full pipeline, both eras, tools/list, memory
#      (CI does not gate on timings; it gates on the harness working and every call succeeding)
#
# Every suite runs even if an earlier one failed; the exit code is non-zero if any failed.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

passed=0
failed=0
failures=()
step() {
  local name="$1"
  shift
  echo
  echo "=== $name ==="
  if "$@"; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
    failures+=("$name")
    echo "=== $name: FAILED ==="
  fi
}

bash scripts/test-deps.sh || { echo "test dependencies could not be installed"; exit 1; }
cargo build --workspace --bins || { echo "build failed"; exit 1; }

step "clippy" cargo clippy --workspace --all-targets -- -D warnings
step "cargo test" cargo test --workspace
step "interop" bash scripts/interop.sh
step "conformance" bash scripts/conformance.sh
# The load harness end to end, debug builds, short slices: direct, the TCP floor, relay-only and the full
# pipeline (token, 100 policies, schemas, labels, rate limit, audit) on both eras, with new
# text on every call (each result recorded as new), the work tool, tools/list over 10 x 50
# tools, and RSS with 200 sessions. The peer proxy and
# server-everything runs are in load-tests/bench.sh (installing mcp-proxy compiles it).
LOAD=(cargo run -q -p clawgate-load-tests -- --clawgate target/debug/clawgate --fixture target/debug/fixture-upstream)
step "load smoke" "${LOAD[@]}" --systems direct,tcp,relay,full --sessions 1,4 --slice 0.3 --rounds 1 --arg-size 1024,16384
step "load smoke (fresh text)" "${LOAD[@]}" --fresh-text --systems direct,full --sessions 2 --slice 0.3 --rounds 1 --arg-size 1024,16384
step "load smoke (2026-07-28)" "${LOAD[@]}" --era stateless --systems direct,relay,full --sessions 2 --slice 0.3 --rounds 1
step "load smoke (work)" "${LOAD[@]}" --tool work --work-ms 1 --systems direct,full --sessions 2 --slice 0.3 --rounds 1
step "load smoke (server-everything)" bash -c '. .cache/env.sh && "$@" --upstream everything --everything "$CLAWGATE_NPM_BIN/mcp-server-everything" --systems direct,full --sessions 2 --slice 0.3 --rounds 1' _ "${LOAD[@]}"
step "tools/list smoke" "${LOAD[@]}" --scenario tools-list --upstreams 10 --tools 50 --slice 0.3 --rounds 1
step "memory smoke" "${LOAD[@]}" --scenario memory --idle-sessions 200

echo
if [ "$failed" -gt 0 ]; then
  echo "failed suites: ${failures[*]}"
fi
echo "suites: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
