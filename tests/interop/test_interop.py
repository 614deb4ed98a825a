"""clawgate interop suite: the real clawgate binary between real MCP clients
and real MCP servers.

Clients: tests/interop/py_client.py (official Python SDK, mcp 2.3.0), the MCP
Inspector CLI, the OpenAI Agents SDK. Servers: @modelcontextprotocol
server-everything (stdio and Streamable HTTP), server-filesystem (stdio),
tests/fixtures/conformance_server.py (both protocol eras), and clawgate's own
bundled demo upstream.

Run with scripts/interop.sh (installs deps, sources .cache/env.sh, runs pytest).
Fixtures (process start/stop, free ports, configs, leak detection) live in
conftest.py. Failures that are the gateway's fault are written up in
/tmp/notes/gateway-bugs.md; the tests stay strict.
"""

from __future__ import annotations

import json
import os
import re
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from conftest import CONFORMANCE_SERVER, PYTHON, py_client, run_process

MODERN = "2026-07-28"
LEGACY_VERSION = "2025-11-25"
GZIP_ARGS = {"name": "interop.gz", "data": "data:text/plain;base64,aGVsbG8gY2xhd2dhdGU="}


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


def texts(result: dict[str, Any]) -> list[str]:
    return [c.get("text", "") for c in result.get("content", []) if c.get("type") == "text"]


def joined_text(result: dict[str, Any]) -> str:
    return "\n".join(texts(result))


def ok_summary(run, out: dict[str, Any]) -> dict[str, Any]:
    assert run.rc == 0 and out.get("ok") is True, f"py_client failed: {out.get('error')}\n{run.describe()}"
    return out


def call_result(out: dict[str, Any], i: int = 0) -> dict[str, Any]:
    calls = out.get("calls", [])
    assert len(calls) > i, f"expected at least {i + 1} calls, got {calls}"
    c = calls[i]
    assert "result" in c, f"call {c.get('tool')} failed: {c.get('error')}"
    return c["result"]


def everything_upstream(kind: str, everything_bin: str, everything_http, **extra: Any) -> dict[str, Any]:
    """An [[upstream]] table for server-everything over stdio or Streamable HTTP."""
    if kind == "stdio":
        up = {"name": "everything", "transport": "stdio", "command": everything_bin, "args": ["stdio"], "timeout": "30s"}
    else:
        up = {"name": "everything", "transport": "http", "url": everything_http(), "timeout": "30s"}
    up.update(extra)
    return up


def demo_upstream(clawgate_bin: str) -> dict[str, Any]:
    return {"name": "demo", "transport": "stdio", "command": clawgate_bin, "args": ["demo-upstream"], "timeout": "30s"}


def conf_upstream(kind: str, conformance_http) -> dict[str, Any]:
    """[[upstream]] for tests/fixtures/conformance_server.py (speaks both eras).
    Over stdio the first request fixes the era, so clawgate's server/discover
    probe makes it a pure 2026-07-28 upstream."""
    if kind == "http":
        return {"name": "conf", "transport": "http", "url": conformance_http(), "timeout": "30s"}
    return {"name": "conf", "transport": "stdio", "command": PYTHON, "args": [str(CONFORMANCE_SERVER), "--stdio"],
            "timeout": "30s"}


EVERYTHING_CORE_TOOLS = {
    "everything__echo",
    "everything__get-sum",
    "everything__trigger-long-running-operation",
    "everything__gzip-file-as-resource",
}
# Registered by server-everything only for a client advertising sampling /
# elicitation / roots, i.e. they show that clawgate advertised those upstream.
EVERYTHING_CAPABILITY_TOOLS = {
    "everything__trigger-sampling-request",
    "everything__trigger-elicitation-request",
    "everything__get-roots-list",
}


# ---------------------------------------------------------------------------
# 1. Python SDK client over HTTP -> clawgate -> server-everything / server-filesystem
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("upstream_kind", ["stdio", "http"])
def test_py_client_lists_and_calls_everything(upstream_kind, start_gateway, everything_bin, everything_http):
    gw = start_gateway([everything_upstream(upstream_kind, everything_bin, everything_http)])
    run, out = py_client(
        "http", gw.url, "--era", "legacy", "--list-tools",
        "--call", "everything__echo", json.dumps({"message": "hello through clawgate"}),
        "--call", "everything__get-sum", json.dumps({"a": 19, "b": 23}),
        "--list-resources", "--read-resource", "everything+demo://resource/static/document/features.md",
    )
    ok_summary(run, out)
    assert out["protocol_version"] == LEGACY_VERSION
    uris = [r["uri"] for r in out["resources"]]
    assert "everything+demo://resource/static/document/features.md" in uris, uris
    assert all(u.startswith("everything+") for u in uris), uris
    contents = out["reads"][0]["result"]["contents"]
    assert [c["uri"] for c in contents] == ["everything+demo://resource/static/document/features.md"]
    assert len(contents[0].get("text", "")) > 20, contents
    tools = set(out["tools"])
    missing = (EVERYTHING_CORE_TOOLS | EVERYTHING_CAPABILITY_TOOLS) - tools
    assert not missing, f"tools missing through clawgate: {sorted(missing)}; got {sorted(tools)}"
    assert all(t.startswith("everything__") for t in tools), sorted(tools)
    assert texts(call_result(out, 0)) == ["Echo: hello through clawgate"]
    assert "The sum of 19 and 23 is 42." in joined_text(call_result(out, 1))


def test_operator_overrides_end_to_end(start_gateway, everything_bin, everything_http):
    """Per-tool overrides seen by a real client: a renamed tool with the operator's
    description, a hidden tool, and an argument the operator fixed (gone from the
    schema the client sees, and winning over whatever the client sends)."""
    up = everything_upstream("stdio", everything_bin, everything_http, tools={
        "echo": {"rename": "say", "description": "Repeats what you say."},
        "get-env": {"hide": True},
        "get-sum": {"fixed_arguments": {"a": 40}},
    })
    gw = start_gateway([up])
    run, out = py_client(
        "http", gw.url, "--era", "legacy", "--list-tools", "--tools-full",
        "--call", "everything__say", json.dumps({"message": "renamed"}),
        "--call", "everything__get-sum", json.dumps({"a": 1, "b": 2}),
    )
    ok_summary(run, out)
    names = set(out["tools"])
    assert "everything__say" in names and "everything__echo" not in names, sorted(names)
    assert "everything__get-env" not in names, sorted(names)
    by_name = {t["name"]: t for t in out["tool_defs"]}
    assert by_name["everything__say"]["description"] == "Repeats what you say."
    sum_schema = by_name["everything__get-sum"]["inputSchema"]
    assert "a" not in sum_schema.get("properties", {}) and "a" not in sum_schema.get("required", []), sum_schema
    assert texts(call_result(out, 0)) == ["Echo: renamed"]
    assert "The sum of 40 and 2 is 42." in joined_text(call_result(out, 1)), call_result(out, 1)
    for hidden, args in (("everything__get-env", {}), ("everything__echo", {"message": "old name"})):
        _, out = py_client("http", gw.url, "--era", "legacy", "--call", hidden, json.dumps(args))
        err = out["calls"][0].get("error")
        assert err and f"unknown tool: `{hidden}`" in err["message"], out["calls"][0]


def test_legacy_http_upstream_connects_promptly(start_gateway, everything_http):
    """clawgate first probes an HTTP upstream with server/discover (2026-07-28).
    server-everything (legacy only) answers HTTP 400 with
    {"error":{"code":-32000,...},"id":null}; that must make clawgate fall back
    to `initialize` at once, not after the upstream's (30 s) request timeout."""
    gw = start_gateway([{"name": "everything", "transport": "http", "url": everything_http(), "timeout": "30s"}])
    t0 = time.monotonic()
    run, out = py_client("http", gw.url, "--era", "legacy", "--list-tools",
                         "--call", "everything__echo", json.dumps({"message": "fast"}), timeout=50)
    elapsed = time.monotonic() - t0
    ok_summary(run, out)
    assert texts(call_result(out)) == ["Echo: fast"]
    assert elapsed < 10.0, f"first tools/list + call through clawgate took {elapsed:.1f}s (upstream timeout is 30s)"


def tcp_connections_to(port: int) -> set[int]:
    """The other ends' ports of every TCP connection to `port` the kernel still knows,
    TIME_WAIT included (about a minute after close): one per connection ever opened."""
    peers: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                local, remote, state = int(fields[1].rsplit(":", 1)[1], 16), int(fields[2].rsplit(":", 1)[1], 16), fields[3]
                if state == "0A":  # LISTEN
                    continue
                if local == port:
                    peers.add(remote)
                elif remote == port:
                    peers.add(local)
    return peers


def test_sse_answers_reuse_upstream_connections(start_gateway, everything_http):
    """server-everything answers each POST with an SSE stream that it ends right after the
    answer. clawgate takes the answer at its event and must still read the stream's end, or
    the connection cannot be reused: before that was done, every call through clawgate
    opened a new TCP connection to the upstream (one per call under load)."""
    url = everything_http()
    port = int(url.rsplit(":", 1)[1].split("/", 1)[0])
    gw = start_gateway([{"name": "everything", "transport": "http", "url": url, "timeout": "30s"}])
    calls = 30
    args: list[str] = []
    for i in range(calls):
        args += ["--call", "everything__echo", json.dumps({"message": f"call {i}"})]
    run, out = py_client("http", gw.url, "--era", "legacy", *args)
    ok_summary(run, out)
    assert [texts(c["result"]) for c in out["calls"]] == [[f"Echo: call {i}"] for i in range(calls)]
    opened = tcp_connections_to(port)
    # The session's setup (discovery, initialize, the listen stream, the lists) takes a few;
    # the 30 calls, one after another, share one.
    assert len(opened) <= 8, f"{len(opened)} connections to the upstream for {calls} calls"


def test_restarted_http_upstream_is_reconnected(start_gateway, procs, everything_bin):
    """server-everything restarted on the same port forgets clawgate's session and
    answers it with HTTP 400 "No valid session ID" (the TypeScript SDK's answer,
    where the spec says 404). clawgate must take that as an expired session,
    re-initialize, and serve calls again."""
    from conftest import free_port

    port = free_port()
    env = {"PORT": str(port)}
    first = procs.start("everything-http", [everything_bin, "streamableHttp"], env=env)
    first.wait_for_port(port)
    gw = start_gateway([{"name": "everything", "transport": "http", "url": f"http://127.0.0.1:{port}/mcp", "timeout": "10s"}])
    run, out = py_client("http", gw.url, "--era", "legacy", "--call", "everything__echo", json.dumps({"message": "before"}))
    ok_summary(run, out)
    procs.stop(first)
    second = procs.start("everything-http", [everything_bin, "streamableHttp"], env=env)
    second.wait_for_port(port)
    deadline = time.monotonic() + 20
    last = None
    while time.monotonic() < deadline:
        run, out = py_client("http", gw.url, "--era", "legacy", "--call", "everything__echo", json.dumps({"message": "after"}))
        last = out
        calls = out.get("calls") or [{}]
        if "result" in calls[0] and texts(calls[0]["result"]) == ["Echo: after"]:
            return
        time.sleep(0.3)
    pytest.fail(f"clawgate never recovered after the upstream restarted: {last}")


def test_py_client_filesystem_stdio_upstream(start_gateway, filesystem_bin, tmp_path):
    data = (tmp_path / "share").resolve()
    (data / "sub").mkdir(parents=True)
    content = "clawgate interop file\nline two: 42\n"
    (data / "hello.txt").write_text(content)
    gw = start_gateway([
        {"name": "fs", "transport": "stdio", "command": filesystem_bin, "args": [str(data)], "timeout": "30s"}
    ])
    run, out = py_client(
        "http", gw.url, "--era", "legacy", "--no-roots", "--list-tools",
        "--call", "fs__list_directory", json.dumps({"path": str(data)}),
        "--call", "fs__read_text_file", json.dumps({"path": str(data / "hello.txt")}),
        "--call", "fs__read_file", json.dumps({"path": str(data / "hello.txt")}),
        "--call", "fs__read_text_file", json.dumps({"path": "/etc/hostname"}),
    )
    ok_summary(run, out)
    assert {"fs__list_directory", "fs__read_text_file", "fs__read_file", "fs__list_allowed_directories"} <= set(out["tools"])
    listing = call_result(out, 0)
    assert sorted(joined_text(listing).splitlines()) == ["[DIR] sub", "[FILE] hello.txt"]
    assert joined_text(call_result(out, 1)) == content
    assert joined_text(call_result(out, 2)) == content
    denied = call_result(out, 3)
    assert denied.get("isError") is True, denied
    assert "Access denied" in joined_text(denied)


# ---------------------------------------------------------------------------
# 2. progress, sampling, elicitation, list_changed through clawgate
# ---------------------------------------------------------------------------

UPSTREAM_KINDS = pytest.mark.parametrize("upstream_kind", ["stdio", "http"])


@UPSTREAM_KINDS
def test_progress_notifications_reach_client(upstream_kind, start_gateway, everything_bin, everything_http):
    gw = start_gateway([everything_upstream(upstream_kind, everything_bin, everything_http)])
    run, out = py_client(
        "http", gw.url, "--era", "legacy", "--progress",
        "--call", "everything__trigger-long-running-operation", json.dumps({"duration": 0.6, "steps": 3}),
    )
    ok_summary(run, out)
    assert joined_text(call_result(out)) == "Long running operation completed. Duration: 0.6 seconds, Steps: 3."
    progress = out["calls"][0]["progress"]
    assert [(p["progress"], p["total"]) for p in progress] == [(1, 3), (2, 3), (3, 3)], progress
    # and they arrived before the result, not batched after it
    assert all(p["t"] <= out["calls"][0]["finished_at"] for p in progress)


@UPSTREAM_KINDS
def test_sampling_round_trip(upstream_kind, start_gateway, everything_bin, everything_http):
    gw = start_gateway([everything_upstream(upstream_kind, everything_bin, everything_http)])
    answer = "sampled-via-clawgate-7f3a"
    run, out = py_client(
        "http", gw.url, "--era", "legacy", "--sampling-text", answer,
        "--call", "everything__trigger-sampling-request", json.dumps({"prompt": "clawgate-probe-prompt", "maxTokens": 17}),
    )
    ok_summary(run, out)
    reqs = [r for r in out["server_requests"] if r["method"] == "sampling/createMessage"]
    assert len(reqs) == 1, out["server_requests"]
    params = reqs[0]["params"]
    assert params["maxTokens"] == 17
    assert params["messages"][0]["content"]["text"] == "Resource trigger-sampling-request context: clawgate-probe-prompt"
    text = joined_text(call_result(out))
    assert text.startswith("LLM sampling result:"), text
    sampled = json.loads(text.split("\n", 1)[1])
    assert sampled["content"]["text"] == answer
    assert sampled["model"] == "py-client"


@UPSTREAM_KINDS
def test_elicitation_round_trip(upstream_kind, start_gateway, everything_bin, everything_http):
    gw = start_gateway([everything_upstream(upstream_kind, everything_bin, everything_http)])
    answer = {"name": "Ada Lovelace 1815", "check": True, "integer": 42}
    run, out = py_client(
        "http", gw.url, "--era", "legacy", "--elicit-answer", json.dumps(answer),
        "--call", "everything__trigger-elicitation-request", "{}",
    )
    ok_summary(run, out)
    reqs = [r for r in out["server_requests"] if r["method"] == "elicitation/create"]
    assert len(reqs) == 1, out["server_requests"]
    assert reqs[0]["params"]["requestedSchema"]["required"] == ["name"]
    text = joined_text(call_result(out))
    assert "✅ User provided the requested information!" in text, text
    assert "- Name: Ada Lovelace 1815" in text
    assert "- Favorite Integer: 42" in text
    raw = json.loads(text.split("Raw result:", 1)[1])
    assert raw == {"action": "accept", "content": answer}


@UPSTREAM_KINDS
def test_resources_list_changed_reaches_client(upstream_kind, start_gateway, everything_bin, everything_http):
    gw = start_gateway([everything_upstream(upstream_kind, everything_bin, everything_http)])
    run, out = py_client(
        "http", gw.url, "--era", "legacy",
        "--call", "everything__gzip-file-as-resource", json.dumps(GZIP_ARGS),
        "--wait-for", "notifications/resources/list_changed", "--wait-timeout", "10",
    )
    ok_summary(run, out)
    methods = [n["method"] for n in out["notifications"]]
    assert "notifications/resources/list_changed" in methods, methods
    link = call_result(out)["content"][0]
    assert link["type"] == "resource_link" and link["name"] == "interop.gz", link


def test_tools_list_changed_reaches_stdio_front_client(clawgate_bin, write_config, everything_bin):
    """server-everything (stdio upstream) sends notifications/tools/list_changed
    when a sampling/elicitation/roots-capable client initializes; clawgate's
    catalog changes and it must tell its client. Uses a per-session upstream so
    the upstream initializes after the client connected."""
    cfg = write_config([
        {"name": "everything", "transport": "stdio", "command": everything_bin, "args": ["stdio"],
         "timeout": "30s", "per_session": True}
    ], listen=None)
    run, out = py_client(
        "stdio", "--era", "legacy", "--list-tools",
        "--wait-for", "notifications/tools/list_changed", "--wait-timeout", "10",
        "--", clawgate_bin, "stdio", "--config", str(cfg),
        env={"CLAWGATE_LOG": "debug"},
    )
    ok_summary(run, out)
    assert "notifications/tools/list_changed" in [n["method"] for n in out["notifications"]]


LISTEN_SCRIPT = textwrap.dedent(
    """
    # 2026-07-28 client: open subscriptions/listen, call a tool, wait for one event.
    import asyncio, json, sys
    from mcp import Client

    async def main(url, flt, tool, args):
        out = {"events": []}
        async with Client(url, mode="2026-07-28") as c:
            out["protocol_version"] = c.protocol_version
            async with c.listen(**{flt: True}) as sub:
                out["honored"] = sub.honored.model_dump(mode="json", by_alias=True, exclude_none=True)
                res = await c.call_tool(tool, args)
                out["call"] = res.model_dump(mode="json", by_alias=True, exclude_none=True)
                try:
                    ev = await asyncio.wait_for(sub.__anext__(), 8)
                    out["events"].append(type(ev).__name__)
                except asyncio.TimeoutError:
                    out["events_timeout"] = True
        print(json.dumps(out))

    asyncio.run(asyncio.wait_for(main(sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])), 40))
    """
)


def listen_client(tmp_path: Path, url: str, flt: str, tool: str, args: dict[str, Any]) -> dict[str, Any]:
    script = tmp_path / "listen_client.py"
    script.write_text(LISTEN_SCRIPT)
    r = run_process([PYTHON, str(script), url, flt, tool, json.dumps(args)], timeout=60)
    assert r.rc == 0, r.describe()
    return r.json()


def test_modern_client_listen_resources_list_changed(start_gateway, everything_bin, everything_http, tmp_path):
    """2026-07-28 client: list_changed arrives on its subscriptions/listen stream
    (legacy upstream's notifications/resources/list_changed fanned out)."""
    gw = start_gateway([everything_upstream("stdio", everything_bin, everything_http)])
    out = listen_client(tmp_path, gw.url, "resources_list_changed", "everything__gzip-file-as-resource", GZIP_ARGS)
    assert out["protocol_version"] == MODERN
    assert out["honored"].get("resourcesListChanged") is True, out
    assert out["call"]["content"][0]["uri"] == "everything+demo://resource/session/interop.gz"
    assert out["events"] == ["ResourcesListChanged"], out


def test_legacy_client_tools_list_changed_from_modern_upstream(start_gateway, conformance_http):
    """conformance_server's test_trigger_tool_change emits tools/list_changed to
    its subscriptions/listen streams (2026 wire). clawgate talks 2026 to it, so
    it must listen upstream and forward the change to its legacy client."""
    gw = start_gateway([{"name": "conf", "transport": "http", "url": conformance_http(), "timeout": "30s"}])
    run, out = py_client(
        "http", gw.url, "--era", "legacy",
        "--call", "conf__test_trigger_tool_change", "{}",
        "--wait-for", "notifications/tools/list_changed", "--wait-timeout", "8",
    )
    assert texts(call_result(out)) == ["tool list changed"]
    ok_summary(run, out)
    assert "notifications/tools/list_changed" in [n["method"] for n in out["notifications"]]


def test_modern_client_tools_list_changed_from_modern_upstream(start_gateway, conformance_http, tmp_path):
    gw = start_gateway([{"name": "conf", "transport": "http", "url": conformance_http(), "timeout": "30s"}])
    out = listen_client(tmp_path, gw.url, "tools_list_changed", "conf__test_trigger_tool_change", {})
    assert out["honored"].get("toolsListChanged") is True, out
    assert [c.get("text") for c in out["call"]["content"]] == ["tool list changed"]
    assert out["events"] == ["ToolsListChanged"], out


# ---------------------------------------------------------------------------
# 3. MCP Inspector CLI
# ---------------------------------------------------------------------------


def inspector(inspector_bin: str, *args: str, timeout: float = 60.0):
    r = run_process([inspector_bin, "--cli", "--format", "json", "-q", *args], timeout=timeout)
    assert r.rc == 0, f"inspector failed: {r.describe()}"
    line = [l for l in r.stdout.splitlines() if l.startswith("{")]
    assert line, r.describe()
    return json.loads(line[-1])["result"]


@pytest.mark.parametrize("era", ["legacy", "auto", "modern"])
def test_inspector_cli_over_http(era, start_gateway, inspector_bin, everything_bin, everything_http):
    gw = start_gateway([everything_upstream("stdio", everything_bin, everything_http)])
    common = ["--transport", "http", "--server-url", gw.url, "--protocol-era", era]
    listed = inspector(inspector_bin, *common, "--method", "tools/list")
    names = {t["name"] for t in listed["tools"]}
    assert EVERYTHING_CORE_TOOLS <= names, sorted(names)
    called = inspector(inspector_bin, *common, "--method", "tools/call", "--tool-name", "everything__get-sum",
                       "--tool-arg", "a=40", "b=2")
    assert joined_text(called) == "The sum of 40 and 2 is 42."
    echoed = inspector(inspector_bin, *common, "--method", "tools/call", "--tool-name", "everything__echo",
                       "--tool-arg", "message=inspector-was-here")
    assert texts(echoed) == ["Echo: inspector-was-here"]


def test_inspector_cli_everything_http_upstream(start_gateway, inspector_bin, everything_bin, everything_http):
    """The Inspector CLI through clawgate to server-everything placed behind it over HTTP."""
    gw = start_gateway([everything_upstream("http", everything_bin, everything_http)])
    common = ["--transport", "http", "--server-url", gw.url]
    names = {t["name"] for t in inspector(inspector_bin, *common, "--method", "tools/list")["tools"]}
    assert EVERYTHING_CORE_TOOLS <= names, sorted(names)
    called = inspector(inspector_bin, *common, "--method", "tools/call", "--tool-name", "everything__get-sum",
                       "--tool-arg", "a=19", "b=23")
    assert joined_text(called) == "The sum of 19 and 23 is 42."


def test_inspector_cli_filesystem_stdio_upstream(start_gateway, inspector_bin, filesystem_bin, tmp_path):
    """The Inspector CLI through clawgate to server-filesystem (stdio upstream)."""
    data = (tmp_path / "share").resolve()
    data.mkdir()
    (data / "note.txt").write_text("from the inspector\n")
    gw = start_gateway([{"name": "fs", "transport": "stdio", "command": filesystem_bin, "args": [str(data)], "timeout": "30s"}])
    common = ["--transport", "http", "--server-url", gw.url]
    names = {t["name"] for t in inspector(inspector_bin, *common, "--method", "tools/list")["tools"]}
    assert {"fs__list_directory", "fs__read_text_file"} <= names, sorted(names)
    listing = inspector(inspector_bin, *common, "--method", "tools/call", "--tool-name", "fs__list_directory",
                        "--tool-arg", f"path={data}")
    assert joined_text(listing).strip() == "[FILE] note.txt"
    read = inspector(inspector_bin, *common, "--method", "tools/call", "--tool-name", "fs__read_text_file",
                     "--tool-arg", f"path={data / 'note.txt'}")
    assert joined_text(read) == "from the inspector\n"


def test_inspector_cli_over_clawgate_stdio(inspector_bin, clawgate_bin, write_config, everything_bin):
    cfg = write_config([
        {"name": "everything", "transport": "stdio", "command": everything_bin, "args": ["stdio"], "timeout": "30s"}
    ], listen=None)
    # `--` ends the Inspector's options (it has its own --config).
    target = ["--", clawgate_bin, "stdio", "--config", str(cfg)]
    listed = inspector(inspector_bin, "--method", "tools/list", *target)
    names = {t["name"] for t in listed["tools"]}
    assert EVERYTHING_CORE_TOOLS <= names, sorted(names)
    echoed = inspector(inspector_bin, "--method", "tools/call", "--tool-name", "everything__echo",
                       "--tool-arg", "message=via-stdio-front", *target)
    assert texts(echoed) == ["Echo: via-stdio-front"]


# ---------------------------------------------------------------------------
# 4. protocol 2026-07-28 through clawgate
# ---------------------------------------------------------------------------

CLIENT_MODES = pytest.mark.parametrize("client_era", [MODERN, "auto"])


@CLIENT_MODES
def test_modern_client_conformance_upstream(client_era, start_gateway, conformance_http):
    gw = start_gateway([{"name": "conf", "transport": "http", "url": conformance_http(), "timeout": "30s"}])
    run, out = py_client(
        "http", gw.url, "--era", client_era, "--list-tools",
        "--call", "conf__test_simple_text", "{}",
    )
    ok_summary(run, out)
    assert out["protocol_version"] == MODERN, out["protocol_version"]
    assert {"conf__test_simple_text", "conf__test_input_required_result_elicitation"} <= set(out["tools"])
    assert texts(call_result(out)) == ["This is a simple text response for testing."]
    # clawgate must have talked to this 2026-capable upstream on the stateless era
    m = re.search(r"upstream connected.* upstream=conf\b.* era=(\S+) version=(\S+)", gw.log())
    assert m, "no 'upstream connected' line for conf in the gateway log"
    assert m.group(2) == MODERN, m.group(0)


@CLIENT_MODES
def test_modern_client_legacy_upstream(client_era, start_gateway, everything_bin, everything_http):
    gw = start_gateway([everything_upstream("stdio", everything_bin, everything_http)])
    run, out = py_client(
        "http", gw.url, "--era", client_era, "--list-tools",
        "--call", "everything__echo", json.dumps({"message": "modern client, legacy server"}),
        "--call", "everything__get-sum", json.dumps({"a": 1.5, "b": 2}),
    )
    ok_summary(run, out)
    assert out["protocol_version"] == MODERN, out["protocol_version"]
    assert EVERYTHING_CORE_TOOLS <= set(out["tools"]), out["tools"]
    assert texts(call_result(out, 0)) == ["Echo: modern client, legacy server"]
    assert "The sum of 1.5 and 2 is 3.5." in joined_text(call_result(out, 1))
    m = re.search(r"upstream connected.* upstream=everything\b.* era=(\S+) version=(\S+)", gw.log())
    assert m and m.group(2) == LEGACY_VERSION, m and m.group(0)


@pytest.mark.parametrize("upstream_kind", ["http", "stdio"])
@pytest.mark.parametrize("client_era", [MODERN, "auto", "legacy"])
def test_mrtr_elicitation_through_clawgate(client_era, upstream_kind, start_gateway, conformance_http):
    """conformance_server's tool answers input_required (MRTR). A modern client
    gets the inputRequests relayed and retries. A legacy client in front of a
    2026-only upstream (stdio: the probe fixes the era) must get a real
    elicitation/create request from clawgate instead; either way the tool must
    see the client's answer. In front of an HTTP upstream that also speaks the
    legacy era, clawgate gives a legacy client a legacy session end to end, so
    it must see exactly what that client sees talking to the server directly."""
    if client_era == "legacy" and upstream_kind == "http":
        direct_url = conformance_http()
        gw = start_gateway([{"name": "conf", "transport": "http", "url": direct_url, "timeout": "30s"}])
        args = ["--era", "legacy", "--elicit-answer", json.dumps({"name": "Grace Hopper"})]
        _, direct = py_client("http", direct_url, *args, "--call", "test_input_required_result_elicitation", "{}")
        _, via = py_client("http", gw.url, *args, "--call", "conf__test_input_required_result_elicitation", "{}")
        d, v = direct["calls"][0], via["calls"][0]
        assert ("result" in d) == ("result" in v), (d, v)
        assert d.get("error") == v.get("error") and d.get("result") == v.get("result"), (d, v)
        return
    gw = start_gateway([conf_upstream(upstream_kind, conformance_http)])
    run, out = py_client(
        "http", gw.url, "--era", client_era, "--elicit-answer", json.dumps({"name": "Grace Hopper"}),
        "--call", "conf__test_input_required_result_elicitation", "{}",
    )
    ok_summary(run, out)
    expected_version = LEGACY_VERSION if client_era == "legacy" else MODERN
    assert out["protocol_version"] == expected_version
    assert texts(call_result(out)) == ["Hello, Grace Hopper!"]
    reqs = [r for r in out["server_requests"] if r["method"] == "elicitation/create"]
    assert len(reqs) == 1, out["server_requests"]
    assert reqs[0]["params"]["message"] == "What is your name?"
    assert reqs[0]["params"]["requestedSchema"]["required"] == ["name"]


@pytest.mark.parametrize(("client_era", "upstream_kind"), [(MODERN, "http"), (MODERN, "stdio"), ("legacy", "stdio")])
def test_mrtr_multi_round_and_multiple_inputs(client_era, upstream_kind, start_gateway, conformance_http):
    """Harder MRTR shapes: two rounds with an evolving requestState, and one
    round asking for elicitation + sampling + roots at once. (A legacy client
    in front of a dual-era HTTP upstream gets the upstream's legacy behaviour
    instead; see test_mrtr_elicitation_through_clawgate.)"""
    gw = start_gateway([conf_upstream(upstream_kind, conformance_http)])
    run, out = py_client(
        "http", gw.url, "--era", client_era, "--sampling-text", "bonjour",
        "--elicit-answer", json.dumps({"name": "Linus", "color": "teal"}),
        "--call", "conf__test_input_required_result_multi_round", "{}",
        "--call", "conf__test_input_required_result_multiple_inputs", "{}",
    )
    ok_summary(run, out)
    assert texts(call_result(out, 0)) == ["Linus likes teal."]
    assert texts(call_result(out, 1)) == ["All inputs received."]
    methods = [r["method"] for r in out["server_requests"]]
    assert methods[:2] == ["elicitation/create", "elicitation/create"], methods
    assert out["server_requests"][0]["params"]["message"] == "Step 1: What is your name?"
    assert out["server_requests"][1]["params"]["message"] == "Step 2: What is your favorite color?"
    assert sorted(methods[2:]) == ["elicitation/create", "roots/list", "sampling/createMessage"], methods


# ---------------------------------------------------------------------------
# 5. stdio front, spawned by a real client
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("client_era", ["legacy", MODERN, "auto"])
def test_stdio_front_python_client(client_era, clawgate_bin, write_config):
    cfg = write_config([demo_upstream(clawgate_bin)], listen=None)
    run, out = py_client(
        "stdio", "--era", client_era, "--list-tools",
        "--call", "demo__read_thread", json.dumps({"thread_id": "t-100"}),
        "--call", "demo__fetch", json.dumps({"url": "https://news.example/today"}),
        "--", clawgate_bin, "stdio", "--config", str(cfg),
        env={"CLAWGATE_LOG": "debug"},
    )
    ok_summary(run, out)
    expected_version = LEGACY_VERSION if client_era == "legacy" else MODERN
    assert out["protocol_version"] == expected_version
    assert {"demo__read_thread", "demo__fetch", "demo__list_threads", "demo__send_email"} <= set(out["tools"])
    thread = call_result(out, 0)
    assert thread["structuredContent"]["id"] == "t-100"
    assert thread["structuredContent"]["subject"] == "Q3 planning"
    assert json.loads(joined_text(thread))["subject"] == "Q3 planning"
    assert texts(call_result(out, 1)) == ["Markets were calm today. Analysts expect a quiet week."]


# ---------------------------------------------------------------------------
# 6. OpenAI Agents SDK
# ---------------------------------------------------------------------------

AGENTS_SCRIPT = textwrap.dedent(
    """
    import asyncio, json, sys
    from agents.mcp import MCPServerStreamableHttp

    async def main(url):
        async with MCPServerStreamableHttp(params={"url": url, "timeout": 20}, name="clawgate",
                                           client_session_timeout_seconds=20) as server:
            tools = await server.list_tools()
            res = await server.call_tool("everything__echo", {"message": "from openai-agents"})
            print(json.dumps({
                "tools": [t.name for t in tools],
                "content": [c.model_dump(mode="json", by_alias=True, exclude_none=True) for c in res.content],
                "isError": bool(res.is_error),
            }))

    asyncio.run(asyncio.wait_for(main(sys.argv[1]), 40))
    """
)


@pytest.mark.skipif(os.environ.get("CLAWGATE_HAVE_OPENAI_AGENTS") != "1", reason="CLAWGATE_HAVE_OPENAI_AGENTS != 1")
def test_openai_agents_streamable_http(start_gateway, everything_bin, everything_http, tmp_path):
    gw = start_gateway([everything_upstream("stdio", everything_bin, everything_http)])
    script = tmp_path / "agents_client.py"
    script.write_text(AGENTS_SCRIPT)
    r = run_process([PYTHON, str(script), gw.url], timeout=60)
    assert r.rc == 0, r.describe()
    out = r.json()
    assert EVERYTHING_CORE_TOOLS <= set(out["tools"]), out["tools"]
    assert out["isError"] is False
    assert [c.get("text") for c in out["content"]] == ["Echo: from openai-agents"]
