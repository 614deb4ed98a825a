#!/usr/bin/env bash
# The performance report of docs/performance.md, from a clean checkout:
#
#   bash load-tests/bench.sh            # everything (6.5 minutes of load on 2 cores after the builds, then the checks bench)
#   QUICK=1 bash load-tests/bench.sh    # one round of short slices (a few minutes)
#
# 1. builds clawgate, the fixture upstream and the load generator in release mode (into
#    $CARGO_TARGET_DIR when it is set, else target/);
# 2. installs the peer proxy `mcp-proxy` (crates.io, joshrotenberg/mcp-proxy) into
#    .cache/mcp-proxy, pinned, relay features only;
# 3. installs Node 22 and server-everything (scripts/test-deps.sh);
# 4. runs every scenario, interleaved per point, writing JSON into $OUT
#    (default load-tests/results/<UTC time>/), and the in-process checks bench.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

MCP_PROXY_VERSION="0.6.0"
OUT="${OUT:-load-tests/results/$(date -u +%Y%m%dT%H%M%SZ)}"
mkdir -p "$OUT"

if [ -n "${QUICK:-}" ]; then
  RUN=(--slice 0.5 --rounds 1)
else
  RUN=(--slice 2 --rounds 3)
fi

echo "== build (release)"
cargo build --release -q -p clawgate -p clawgate-tests -p clawgate-load-tests --bins

echo "== peer proxy: mcp-proxy $MCP_PROXY_VERSION"
PROXY=.cache/mcp-proxy/bin/mcp-proxy
if ! grep -qs "mcp-proxy $MCP_PROXY_VERSION" .cache/mcp-proxy/.crates.toml || [ ! -x "$PROXY" ]; then
  # No default features: no OpenTelemetry, OAuth, WebSocket or discovery; the relay is the same.
  cargo install -q mcp-proxy --version "$MCP_PROXY_VERSION" --locked --no-default-features --root .cache/mcp-proxy
fi

echo "== Node 22 and server-everything"
bash scripts/test-deps.sh >/dev/null
# shellcheck disable=SC1091
. .cache/env.sh
EVERYTHING="$CLAWGATE_NPM_BIN/mcp-server-everything"

# 1,000 sessions and 256 concurrent connections per system need descriptors.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

BIN="${CARGO_TARGET_DIR:-target}/release"
LOAD=("$BIN/clawgate-load" --clawgate "$BIN/clawgate" --fixture "$BIN/fixture-upstream" --mcp-proxy "$PROXY")

{
  echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
  echo "kernel:  $(uname -r)"
  echo "commit:  $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (dirty)')"
  echo "started: $(date -u +%FT%TZ)"
} | tee "$OUT/machine.txt"

echo "== null echo upstream: direct, a byte-copying TCP forwarder (the floor of a hop), relay-only, full pipeline, mcp-proxy; 1/32/256 sessions; 1 KB and 16 KB"
"${LOAD[@]}" "${RUN[@]}" --systems direct,tcp,relay,full,mcp-proxy --sessions 1,32,256 --arg-size 1024,16384 --out "$OUT/echo.json"

echo "== new text on every call (every result recorded as new): direct and the full pipeline; 1/32 sessions; 1 KB and 16 KB"
"${LOAD[@]}" "${RUN[@]}" --fresh-text --systems direct,full --sessions 1,32 --arg-size 1024,16384 --out "$OUT/fresh.json"

echo "== the same over the 2026-07-28 stateless era (clawgate's clients only)"
"${LOAD[@]}" "${RUN[@]}" --era stateless --systems direct,relay,full --sessions 1,32 --arg-size 1024 --out "$OUT/echo-stateless.json"

echo "== upstream doing 1 ms of work per call"
"${LOAD[@]}" "${RUN[@]}" --tool work --work-ms 1 --systems direct,full,mcp-proxy --sessions 1,32 --out "$OUT/work.json"

echo "== server-everything (Node) as the upstream"
"${LOAD[@]}" "${RUN[@]}" --upstream everything --everything "$EVERYTHING" --systems direct,full,mcp-proxy --sessions 1,32 --arg-size 1024 --out "$OUT/everything.json"

echo "== tools/list over 10 upstreams x 50 tools"
"${LOAD[@]}" "${RUN[@]}" --scenario tools-list --upstreams 10 --tools 50 --out "$OUT/tools-list.json"

echo "== memory: idle, and 1,000 sessions"
"${LOAD[@]}" --scenario memory --idle-sessions 1000 --out "$OUT/memory.json"

echo "== in-process checks (cached token, policy, schema, labels, local rate limit)"
CHECKS_BENCH_QUICK="${QUICK:-}" cargo bench -q -p clawgate-policies --bench checks -- --noplot 2>&1 | tee "$OUT/checks.txt"

echo "results in $OUT"
