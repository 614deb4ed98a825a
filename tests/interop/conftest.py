"""Fixtures for the clawgate interop suite (tests/interop/test_interop.py).

Everything here starts REAL processes (the clawgate binary, MCP reference
servers, real MCP clients) and guarantees they are gone after each test:

* ``procs``: starts long-running processes (own process group, output to a
  log file under the test's tmp dir) and stops them at teardown, even when
  the test failed. Their logs are attached to the failure report.
* Every test additionally runs under an autouse reaper: pytest makes itself a
  *child subreaper* (Linux ``PR_SET_CHILD_SUBREAPER``), so a grandchild that a
  stopped process left behind (e.g. an upstream MCP server whose gateway died)
  is re-parented to pytest instead of init. The reaper kills and reaps those
  leftovers and fails the test with their command lines, so leaked processes
  can't go unnoticed.
* No blind sleeps: readiness is polled with deadlines (``wait_for_port``,
  ``wait_until``); every client run has a subprocess timeout.

Environment:
  CLAWGATE_BIN        clawgate binary (default <repo>/target/debug/clawgate)
  CLAWGATE_NPM_BIN    dir holding mcp-server-everything etc. (from .cache/env.sh;
                      falls back to PATH)
  CLAWGATE_TEST_LOG   CLAWGATE_LOG value for the gateways (default "debug")
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import pytest

REPO = Path(__file__).resolve().parents[2]
INTEROP_DIR = Path(__file__).resolve().parent
PY_CLIENT = INTEROP_DIR / "py_client.py"
CONFORMANCE_SERVER = REPO / "tests" / "fixtures" / "conformance_server.py"
CLAWGATE_BIN = Path(os.environ.get("CLAWGATE_BIN") or REPO / "target" / "debug" / "clawgate")
PYTHON = sys.executable  # the venv python running pytest (has mcp 2.3.0)

# Generous upper bounds; typical runs are far below them.
PORT_TIMEOUT = 20.0
CLIENT_TIMEOUT = float(os.environ.get("CLAWGATE_INTEROP_CLIENT_TIMEOUT", "60"))
STOP_GRACE = 5.0

# ---------------------------------------------------------------------------
# subreaper + process-tree helpers
# ---------------------------------------------------------------------------

_PR_SET_CHILD_SUBREAPER = 36


def _become_subreaper() -> bool:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except Exception:  # noqa: BLE001 - non-Linux: leak detection just gets weaker
        return False


SUBREAPER = _become_subreaper()


def _children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read().decode(errors="replace")
        except OSError:
            continue
        # pid (comm) state ppid ...; comm may contain spaces/parens
        rest = stat[stat.rfind(")") + 2 :].split()
        if len(rest) < 2:
            continue
        kids.setdefault(int(rest[1]), []).append(int(entry))
    return kids


def descendants(pid: int) -> list[int]:
    """All live descendants of pid (zombies included), depth-first."""
    kids = _children_map()
    out: list[int] = []
    stack = list(kids.get(pid, []))
    while stack:
        p = stack.pop()
        out.append(p)
        stack.extend(kids.get(p, []))
    return out


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode(errors="replace")
        return stat[stat.rfind(")") + 2 :].split()[0] == "Z"
    except OSError:
        return True


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "?"


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _reap_orphans() -> None:
    """waitpid() any exited child we adopted as subreaper (not Popen-owned ones:
    Popen objects reap their own, and reaping them here would confuse them)."""
    for pid in descendants(os.getpid()):
        if _is_zombie(pid) and pid not in _POPEN_PIDS:
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass


_POPEN_PIDS: set[int] = set()


def kill_tree(popen: subprocess.Popen, grace: float = STOP_GRACE) -> None:
    """SIGTERM the process, its process group and every descendant; SIGKILL
    whatever is still alive after `grace` seconds; reap the Popen."""
    if popen.poll() is None:
        tree = descendants(popen.pid)
        try:
            os.killpg(popen.pid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            _signal(popen.pid, signal.SIGTERM)
        for p in tree:
            _signal(p, signal.SIGTERM)
        try:
            popen.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
        tree = set(tree) | set(descendants(popen.pid))
        if popen.poll() is None:
            try:
                os.killpg(popen.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            _signal(popen.pid, signal.SIGKILL)
        for p in tree:
            if not _is_zombie(p):
                _signal(p, signal.SIGKILL)
        popen.wait(timeout=grace)
    _POPEN_PIDS.discard(popen.pid)


# ---------------------------------------------------------------------------
# small utilities
# ---------------------------------------------------------------------------


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1 (bind to port 0, read, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(pred: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    """Poll pred() until it returns a truthy value; fail after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.1f}s waiting for {what}")
        time.sleep(interval)


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # JSON string escapes are valid TOML basic-string escapes
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{json.dumps(str(k))} = {toml_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(f"cannot render {v!r} as TOML")


ALLOW_ALL = 'permit (principal, action, resource);'


def render_config(upstreams: Iterable[dict[str, Any]], listen: str | None = "127.0.0.1:0", policy: str | None = ALLOW_ALL, extra: str = "") -> str:
    """A clawgate config. Relay tests get an explicit allow-all policy (a gateway without
    `[policy]` denies every call); policy tests pass their own `policy` and `extra` sections."""
    lines: list[str] = []
    if listen is not None:
        lines += ["[listen]", f"http = {toml_value(listen)}", ""]
    if policy is not None:
        lines += ["[policy]", f"inline = {toml_value(policy)}", ""]
    if extra:
        lines += [extra, ""]
    for u in upstreams:
        lines.append("[[upstream]]")
        for k, v in u.items():
            lines.append(f"{k} = {toml_value(v)}")
        lines.append("")
    return "\n".join(lines)


def npm_bin(name: str) -> str:
    d = os.environ.get("CLAWGATE_NPM_BIN")
    cand = Path(d) / name if d else None
    if cand is not None and cand.exists():
        return str(cand)
    found = shutil.which(name)
    if not found:
        pytest.fail(f"{name} not found (run scripts/test-deps.sh and source .cache/env.sh)", pytrace=False)
    return found


# ---------------------------------------------------------------------------
# long-running processes
# ---------------------------------------------------------------------------


@dataclass
class Proc:
    name: str
    argv: list[str]
    popen: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.popen.poll() is None

    def wait_for_port(self, port: int, timeout: float = PORT_TIMEOUT) -> None:
        def ready() -> bool:
            if not self.alive():
                raise AssertionError(
                    f"{self.name} exited with {self.popen.returncode} before listening on {port}:\n{self.log()[-4000:]}"
                )
            return port_open(port)

        wait_until(ready, timeout, f"{self.name} to listen on 127.0.0.1:{port}")

    def wait_for_log(self, needle: str, timeout: float = PORT_TIMEOUT) -> str:
        wait_until(lambda: needle in self.log(), timeout, f"{needle!r} in {self.name}'s log")
        return self.log()


@dataclass
class ProcessManager:
    workdir: Path
    procs: list[Proc] = field(default_factory=list)

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None, cwd: str | None = None) -> Proc:
        log_path = self.workdir / f"{name}-{len(self.procs)}.log"
        full_env = dict(os.environ)
        full_env.update(env or {})
        logf = open(log_path, "wb")
        try:
            popen = subprocess.Popen(
                [str(a) for a in argv],
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
                env=full_env,
                cwd=cwd,
                start_new_session=True,
            )
        finally:
            logf.close()
        _POPEN_PIDS.add(popen.pid)
        p = Proc(name, [str(a) for a in argv], popen, log_path)
        self.procs.append(p)
        return p

    def stop(self, p: Proc) -> None:
        kill_tree(p.popen)

    def stop_all(self) -> None:
        for p in reversed(self.procs):
            try:
                kill_tree(p.popen)
            except Exception:  # noqa: BLE001 - keep stopping the others
                pass


@dataclass
class Gateway:
    proc: Proc
    port: int
    config: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    def log(self) -> str:
        return self.proc.log()


# ---------------------------------------------------------------------------
# fixtures
# ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def clawgate_bin() -> str:
    if not CLAWGATE_BIN.exists():
        pytest.fail(f"clawgate binary not found at {CLAWGATE_BIN} (cargo build -p clawgate, or set CLAWGATE_BIN)", pytrace=False)
    return str(CLAWGATE_BIN)


@pytest.fixture(scope="session")
def everything_bin() -> str:
    return npm_bin("mcp-server-everything")


@pytest.fixture(scope="session")
def filesystem_bin() -> str:
    return npm_bin("mcp-server-filesystem")


@pytest.fixture(scope="session")
def inspector_bin() -> str:
    return npm_bin("inspector")


@pytest.fixture(autouse=True)
def _no_leaked_processes(request):
    """Runs around every test (set up first, torn down last): after the test's
    own fixtures stopped their processes, nothing spawned during the test may
    still be alive. Leftovers are killed, reaped and reported as a failure."""
    before = set(descendants(os.getpid()))
    yield
    def leftovers() -> list[int]:
        _reap_orphans()
        return [p for p in descendants(os.getpid()) if p not in before and not _is_zombie(p)]

    deadline = time.monotonic() + 3.0
    left = leftovers()
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = leftovers()
    if left:
        desc = [f"pid {p}: {cmdline(p)}" for p in left]
        for p in left:
            _signal(p, signal.SIGKILL)
        wait_until(lambda: not leftovers(), 5.0, "leaked processes to die")
        pytest.fail(
            "processes leaked past the end of the test (killed now):\n  " + "\n  ".join(desc),
            pytrace=False,
        )


@pytest.fixture
def procs(request, tmp_path: Path):
    pm = ProcessManager(tmp_path)
    request.node._interop_procs = pm
    try:
        yield pm
    finally:
        pm.stop_all()


@pytest.fixture
def write_config(tmp_path: Path):
    """write_config(upstreams, name="clawgate.toml", listen=...) -> Path"""

    def write(upstreams: list[dict[str, Any]], name: str = "clawgate.toml", listen: str | None = "127.0.0.1:0") -> Path:
        path = tmp_path / name
        path.write_text(render_config(upstreams, listen))
        return path

    return write


def gateway_env() -> dict[str, str]:
    return {"CLAWGATE_LOG": os.environ.get("CLAWGATE_TEST_LOG", "debug"), "NO_COLOR": "1"}


@pytest.fixture
def start_gateway(procs: ProcessManager, write_config, clawgate_bin: str):
    """start_gateway(upstreams) -> Gateway: `clawgate serve` on a free port, waits until it listens."""

    def start(upstreams: list[dict[str, Any]], name: str = "clawgate") -> Gateway:
        cfg = write_config(upstreams, name=f"{name}.toml")
        port = free_port()
        p = procs.start(name, [clawgate_bin, "serve", "--config", str(cfg), "--listen", f"127.0.0.1:{port}"], env=gateway_env())
        p.wait_for_port(port)
        return Gateway(p, port, cfg)

    return start


@pytest.fixture
def everything_http(procs: ProcessManager, everything_bin: str):
    """start() -> URL of a fresh `mcp-server-everything streamableHttp` on a free port."""

    def start() -> str:
        port = free_port()
        p = procs.start("everything-http", [everything_bin, "streamableHttp"], env={"PORT": str(port)})
        p.wait_for_port(port)
        return f"http://127.0.0.1:{port}/mcp"

    return start


@pytest.fixture
def conformance_http(procs: ProcessManager):
    """start() -> URL of a fresh tests/fixtures/conformance_server.py (both eras) on a free port.
    Its DNS-rebinding allowlist accepts Host 127.0.0.1:<any port>, which is what clawgate sends."""

    def start() -> str:
        port = free_port()
        p = procs.start("conformance", [PYTHON, str(CONFORMANCE_SERVER), "--host", "127.0.0.1", "--port", str(port)])
        p.wait_for_port(port)
        return f"http://127.0.0.1:{port}/mcp"

    return start


# ---------------------------------------------------------------------------
# one-shot client processes
# ---------------------------------------------------------------------------


@dataclass
class Run:
    argv: list[str]
    rc: int
    stdout: str
    stderr: str

    def json(self) -> dict[str, Any]:
        for line in reversed(self.stdout.strip().splitlines()):
            line = line.strip()
            if line.startswith("{"):
                try:
                    return json.loads(line)
                except json.JSONDecodeError:
                    continue
        raise AssertionError(f"no JSON object on stdout of {self.describe()}")

    def describe(self) -> str:
        return (
            f"`{' '.join(self.argv)}` (exit {self.rc})\n--- stdout ---\n{self.stdout[-6000:]}\n"
            f"--- stderr ---\n{self.stderr[-6000:]}"
        )


def run_process(argv: list[str], timeout: float = CLIENT_TIMEOUT, env: dict[str, str] | None = None, cwd: str | None = None) -> Run:
    """Run a client to completion in its own process group; on timeout kill
    the whole tree (the client plus anything it spawned) and fail.
    Output goes to temp files, not pipes, so a leaked grandchild holding the
    client's stdout can't block us (the leak check reports it instead)."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    argv = [str(a) for a in argv]
    with tempfile.TemporaryFile() as fout, tempfile.TemporaryFile() as ferr:
        popen = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=fout,
            stderr=ferr,
            env=full_env,
            cwd=cwd,
            start_new_session=True,
        )
        _POPEN_PIDS.add(popen.pid)
        timed_out = False
        try:
            popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:
            if popen.poll() is None:
                kill_tree(popen, grace=1.0)
            _POPEN_PIDS.discard(popen.pid)

        def read(f) -> str:
            f.seek(0)
            return f.read().decode(errors="replace")

        r = Run(argv, popen.returncode if not timed_out else -1, read(fout), read(ferr))
    if timed_out:
        raise AssertionError(f"timed out after {timeout}s (process tree killed): {r.describe()}")
    return r


def py_client(*args: str, timeout: float = CLIENT_TIMEOUT, env: dict[str, str] | None = None) -> tuple[Run, dict[str, Any]]:
    """Run tests/interop/py_client.py; returns (Run, parsed JSON summary).
    py_client's own --timeout is set a bit below the subprocess timeout."""
    argv = [PYTHON, str(PY_CLIENT), *args]
    if "--timeout" not in args:
        argv += ["--timeout", str(max(5.0, timeout - 10.0))]
    r = run_process(argv, timeout=timeout, env=env)
    return r, r.json()


# ---------------------------------------------------------------------------
# attach process logs to failure reports
# ---------------------------------------------------------------------------


def _sigterm_to_keyboard_interrupt(signum, frame):  # noqa: ARG001
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_configure(config):  # noqa: ARG001
    # `timeout` (scripts/interop.sh) or CI cancelling the run sends SIGTERM:
    # turn it into KeyboardInterrupt so fixture teardown still stops processes.
    signal.signal(signal.SIGTERM, _sigterm_to_keyboard_interrupt)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        pm: ProcessManager | None = getattr(item, "_interop_procs", None)
        if pm is not None:
            for p in pm.procs:
                text = p.log()
                lines = text.splitlines()
                tail = "\n".join(lines[-200:])
                rep.sections.append((f"log of {p.name} ({p.log_path}): last {min(200, len(lines))} lines", tail))
