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
#   6. short smoke runs of the load generator, relay and tools/list (CI does not gate on timings)
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
step "load smoke" cargo run -q -p clawgate-load-tests -- \
  --clawgate target/debug/clawgate --fixture target/debug/fixture-upstream \
  --sessions 1,4 --slice 0.3 --rounds 1 --arg-size 1024
step "tools/list smoke" cargo run -q -p clawgate-load-tests -- --scenario tools-list \
  --clawgate target/debug/clawgate --fixture target/debug/fixture-upstream \
  --upstreams 10 --tools 50 --slice 0.3 --rounds 1

echo
if [ "$failed" -gt 0 ]; then
  echo "failed suites: ${failures[*]}"
fi
echo "suites: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
