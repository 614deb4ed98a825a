#!/usr/bin/env bash
# Interop suite: the real clawgate binary between real MCP clients (Python SDK,
# MCP Inspector CLI, OpenAI Agents SDK) and real MCP servers (server-everything,
# server-filesystem, the both-era conformance fixture, the bundled demo).
#
#   scripts/interop.sh                 # whole suite (~2 min on 2 cores)
#   scripts/interop.sh -k mrtr -x      # extra args go to pytest
#
# Steps: scripts/test-deps.sh (idempotent, <1 s once installed) -> source
# .cache/env.sh -> build clawgate if the binary is missing or older than the
# sources (skip with CLAWGATE_INTEROP_NO_BUILD=1, or point CLAWGATE_BIN at a
# binary) -> pytest -q tests/interop.
#
# Timeouts: pytest-timeout is not installed. Every client the tests run has a
# subprocess timeout (CLAWGATE_INTEROP_CLIENT_TIMEOUT, default 60 s; the
# process tree is killed on expiry), readiness waits poll with deadlines, and
# the in-process scripts use asyncio.wait_for. CLAWGATE_INTEROP_TIMEOUT
# (default 900 s) bounds the whole pytest run as a last resort.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

bash "$ROOT/scripts/test-deps.sh" >/dev/null
# shellcheck disable=SC1091
. "$ROOT/.cache/env.sh"

if [ -z "${CLAWGATE_BIN:-}" ]; then
  export CLAWGATE_BIN="$ROOT/target/debug/clawgate"
  if [ "${CLAWGATE_INTEROP_NO_BUILD:-0}" != "1" ]; then
    stale=""
    if [ ! -x "$CLAWGATE_BIN" ]; then
      stale="missing"
    elif [ -n "$(find "$ROOT" -path "$ROOT/target" -prune -o -path "$ROOT/.cache" -prune -o \
                 \( -name '*.rs' -o -name Cargo.toml -o -name Cargo.lock \) -newer "$CLAWGATE_BIN" -print -quit)" ]; then
      stale="older than the sources"
    fi
    if [ -n "$stale" ]; then
      echo "[interop] clawgate binary $stale; cargo build -p clawgate" >&2
      cargo build -p clawgate
    fi
  fi
fi
[ -x "$CLAWGATE_BIN" ] || { echo "[interop] no clawgate binary at $CLAWGATE_BIN" >&2; exit 1; }

export PYTHONDONTWRITEBYTECODE=1
TO=()
command -v timeout >/dev/null 2>&1 && TO=(timeout --kill-after=30 "${CLAWGATE_INTEROP_TIMEOUT:-900}")
exec "${TO[@]}" python -m pytest -q -p no:cacheprovider tests/interop "$@"
