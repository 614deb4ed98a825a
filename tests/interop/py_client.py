#!/usr/bin/env python3
"""Interop MCP client built on the official Python SDK (``mcp`` 2.3.0).

Connects to one MCP server (Streamable HTTP or stdio), runs the requested
operations, and prints ONE JSON object on stdout summarising everything it
observed. Server stderr (stdio) and Python warnings go to stderr.

Usage
-----
  py_client.py http URL [OPTIONS]
  py_client.py stdio [OPTIONS] -- CMD [ARGS...] [OPTIONS]

For ``stdio`` everything after the first ``--`` is the server command line,
up to (a) a second standalone ``--`` or (b) the first token that is one of
this tool's own options (``--list-tools``, ``--call``, ``--era`` ...,
also in ``--opt=value`` form); the rest is parsed as options. So both of
these work::

  py_client.py stdio -- mcp-server-everything stdio --list-tools --call echo '{"message":"hi"}'
  py_client.py stdio --list-tools -- some-server --list-tools -- --call x '{}'

(the second form is how to pass a server argument that collides with one of
our option names.)

Options
-------
  --list-tools            tools/list (names in "tools"; full defs with --tools-full)
  --call TOOL [JSON]      tools/call; repeatable, run in order; JSON defaults to {}
  --keep-going            a --call that fails with a JSON-RPC error is recorded and the
                          next one runs (default: stop at the first failure)
  --progress              ask for progress on every --call (sends _meta.progressToken;
                          updates land in calls[i].progress and in notifications)
  --list-resources / --list-prompts / --read-resource URI (repeatable)
  --era legacy|modern|auto|<version>   protocol era, see below (default auto)
  --header 'Name: value'  extra HTTP header on every request (http only; repeatable)
  --elicit-answer JSON    answer elicitation/create with action=accept, content=JSON
  --elicit-decline        answer elicitation/create with action=decline
  --elicit-cancel         answer elicitation/create with action=cancel
  --elicit-hang           never answer elicitation/create
                          (default with none of the three: accept with {})
  --sampling-text TEXT    assistant text returned for sampling/createMessage
                          (default "sampled-by-py-client")
  --no-sampling / --no-elicitation / --no-roots
                          do not install that callback, so the capability is not
                          advertised (the SDK advertises a capability iff a
                          callback is installed)
  --log-level LEVEL       legacy: send logging/setLevel after connect;
                          modern: Client(log_level=...) stamps the per-request opt-in
  --wait-for METHOD       after the operations, wait until a notification with this
                          method was seen (repeatable; bounded by --wait-timeout)
  --wait-timeout S        default 10
  --linger S              sleep this long before disconnecting to collect trailing
                          notifications (default 0.3)
  --timeout S             overall deadline (default 120); also per-request read timeout
  --env K=V / --cwd DIR   stdio only: extra env for the server / its working dir
                          (the server inherits this process's full environment)

Server -> client requests (legacy era: real JSON-RPC requests; modern era: the
SDK resolves InputRequiredResult rounds through the same callbacks):
  sampling/createMessage -> role=assistant, text=--sampling-text, model="py-client"
  elicitation/create     -> per --elicit-* flags
  roots/list             -> one root: file:///tmp (name "tmp")
Each is recorded in "server_requests" with its params and our response.

Era selection (mcp 2.3.0: ``mcp.Client(server, mode=...)``)
-----------------------------------------------------------
  --era legacy  -> mode="legacy": classic initialize / notifications/initialized
                   handshake, offering 2025-11-25 (LATEST_HANDSHAKE_VERSION); the
                   server may counter-offer an older handshake version.
  --era modern  -> mode="2026-07-28": adopt the stateless 2026-07-28 revision
                   directly, NO probe and no handshake: the SDK synthesizes a
                   DiscoverResult and stamps protocol version / clientInfo /
                   capabilities into every request's _meta (plus the
                   MCP-Protocol-Version header on HTTP). Fails at the first request
                   if the server only speaks the handshake era.
  --era auto    -> mode="auto" (SDK default): send server/discover at 2026-07-28;
                   adopt it if the server answers with a modern version, otherwise
                   (any JSON-RPC error / HTTP 4xx / legacy-only supportedVersions)
                   fall back to the initialize handshake.
  --era 2026-07-28 (any MODERN_PROTOCOL_VERSIONS string) is the same as modern
                   pinned to that version; handshake-era strings are rejected by
                   the SDK (use legacy).
The result's "era" field says what was negotiated ("modern" iff the
negotiated version is in mcp_types.version.MODERN_PROTOCOL_VERSIONS).

Output (stdout, one JSON object)
--------------------------------
  ok, transport, target, era_requested, sdk_mode, era, protocol_version,
  server_info, server_capabilities, instructions, tools, tool_defs (with
  --tools-full), resources, prompts, reads, calls[{tool, arguments, result |
  error, progress[]}], notifications[{t, method, params}], server_requests[{t,
  method, params, response}], transport_errors[], and on failure
  error{type, message, code?, data?}.
Exit status: 0 on success; 1 when any operation failed (the JSON still carries
everything gathered so far plus "error"); 2 for usage errors.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
import warnings
from typing import Any

KNOWN_FLAGS_WITH_VALUE = {
    "--call",  # nargs 1..2, handled specially below
    "--era",
    "--header",
    "--elicit-answer",
    "--sampling-text",
    "--log-level",
    "--wait-for",
    "--wait-timeout",
    "--linger",
    "--timeout",
    "--env",
    "--cwd",
    "--read-resource",
}
KNOWN_FLAGS_NO_VALUE = {
    "--list-tools",
    "--tools-full",
    "--progress",
    "--elicit-decline",
    "--elicit-cancel",
    "--no-sampling",
    "--no-elicitation",
    "--no-roots",
    "--list-resources",
    "--list-prompts",
}
KNOWN_FLAGS = KNOWN_FLAGS_WITH_VALUE | KNOWN_FLAGS_NO_VALUE


def _is_our_flag(tok: str) -> bool:
    return tok in KNOWN_FLAGS or tok.split("=", 1)[0] in KNOWN_FLAGS_WITH_VALUE


def _emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj, default=str) + "\n")
    sys.stdout.flush()


def _usage_error(msg: str) -> None:
    _emit({"ok": False, "error": {"type": "UsageError", "message": msg}})
    sys.exit(2)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        _usage_error(message)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="py_client.py", add_help=True, description=__doc__.split("\n\n")[0])
    p.add_argument("--list-tools", action="store_true")
    p.add_argument("--tools-full", action="store_true")
    p.add_argument("--call", nargs="+", action="append", default=[], metavar=("TOOL", "JSON"))
    p.add_argument("--progress", action="store_true")
    p.add_argument("--keep-going", action="store_true", help="after a call fails with a JSON-RPC error, run the next one")
    p.add_argument("--list-resources", action="store_true")
    p.add_argument("--list-prompts", action="store_true")
    p.add_argument("--read-resource", action="append", default=[])
    p.add_argument("--era", default="auto")
    p.add_argument("--header", action="append", default=[])
    g = p.add_mutually_exclusive_group()
    g.add_argument("--elicit-answer")
    g.add_argument("--elicit-decline", action="store_true")
    g.add_argument("--elicit-cancel", action="store_true")
    g.add_argument("--elicit-hang", action="store_true", help="never answer elicitation/create")
    p.add_argument("--sampling-text", default="sampled-by-py-client")
    p.add_argument("--no-sampling", action="store_true")
    p.add_argument("--no-elicitation", action="store_true")
    p.add_argument("--no-roots", action="store_true")
    p.add_argument("--log-level")
    p.add_argument("--wait-for", action="append", default=[])
    p.add_argument("--wait-timeout", type=float, default=10.0)
    p.add_argument("--linger", type=float, default=0.3)
    p.add_argument("--timeout", type=float, default=120.0)
    p.add_argument("--env", action="append", default=[])
    p.add_argument("--cwd")
    return p


def parse_argv(argv: list[str]) -> tuple[str, str | None, list[str], argparse.Namespace]:
    """Returns (transport, url, stdio_command, options)."""
    if not argv or argv[0] in ("-h", "--help"):
        sys.stderr.write(__doc__ or "")
        sys.exit(0 if argv else 2)
    transport, rest = argv[0], argv[1:]
    parser = build_parser()
    if transport == "http":
        if not rest or rest[0].startswith("-"):
            _usage_error("http: URL must follow 'http'")
        url, opts = rest[0], rest[1:]
        return transport, url, [], parser.parse_args(opts)
    if transport == "stdio":
        if "--" not in rest:
            _usage_error("stdio: use 'stdio [OPTIONS] -- CMD [ARGS...] [OPTIONS]'")
        i = rest.index("--")
        before, after = rest[:i], rest[i + 1 :]
        cmd: list[str] = []
        j = 0
        while j < len(after):
            tok = after[j]
            if tok == "--":
                j += 1
                break
            if j > 0 and _is_our_flag(tok):
                break
            cmd.append(tok)
            j += 1
        if not cmd:
            _usage_error("stdio: empty server command after '--'")
        return transport, None, cmd, parser.parse_args(before + after[j:])
    _usage_error(f"first argument must be 'http' or 'stdio', got {transport!r}")
    raise AssertionError


def _dump(model: Any) -> Any:
    if hasattr(model, "model_dump"):
        return model.model_dump(by_alias=True, mode="json", exclude_none=True)
    return model


def _error_json(exc: BaseException) -> dict[str, Any]:
    # unwrap single-exception groups (anyio task groups)
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    err: dict[str, Any] = {"type": type(exc).__name__, "message": str(exc)}
    error_data = getattr(exc, "error", None)
    if error_data is not None and hasattr(error_data, "code"):
        err["code"] = error_data.code
        if getattr(error_data, "data", None) is not None:
            err["data"] = _dump(error_data.data)
    if isinstance(exc, BaseExceptionGroup):
        err["sub_errors"] = [_error_json(e) for e in exc.exceptions]
    if os.environ.get("PY_CLIENT_TRACEBACK"):
        err["traceback"] = "".join(traceback.format_exception(exc))
    return err


async def run(transport: str, url: str | None, cmd: list[str], a: argparse.Namespace) -> dict[str, Any]:
    import anyio
    import mcp_types as types
    from mcp import Client
    from mcp.client.stdio import StdioServerParameters
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared._httpx_utils import create_mcp_http_client
    from mcp_types.version import MODERN_PROTOCOL_VERSIONS, LATEST_MODERN_VERSION

    t0 = time.monotonic()

    def now() -> float:
        return round(time.monotonic() - t0, 3)

    era_map = {"legacy": "legacy", "auto": "auto", "modern": LATEST_MODERN_VERSION}
    mode = era_map.get(a.era, a.era)

    out: dict[str, Any] = {
        "ok": False,
        "transport": transport,
        "target": url if transport == "http" else cmd,
        "era_requested": a.era,
        "sdk_mode": mode,
        "notifications": [],
        "server_requests": [],
        "transport_errors": [],
        "calls": [],
    }
    global _CURRENT_OUT
    _CURRENT_OUT = out
    seen_methods: set[str] = set()
    seen_event = anyio.Event()
    wanted = set(a.wait_for)

    async def message_handler(message: Any) -> None:
        if isinstance(message, Exception):
            out["transport_errors"].append(_error_json(message))
            return
        d = _dump(message)
        method = d.get("method") if isinstance(d, dict) else None
        out["notifications"].append({"t": now(), "method": method, "params": d.get("params") if isinstance(d, dict) else d})
        if method:
            seen_methods.add(method)
            if wanted and wanted <= seen_methods:
                seen_event.set()

    async def sampling_cb(ctx: Any, params: Any) -> Any:
        resp = types.CreateMessageResult(
            role="assistant",
            content=types.TextContent(type="text", text=a.sampling_text),
            model="py-client",
            stop_reason="endTurn",
        )
        out["server_requests"].append(
            {"t": now(), "method": "sampling/createMessage", "params": _dump(params), "response": _dump(resp)}
        )
        return resp

    async def elicitation_cb(ctx: Any, params: Any) -> Any:
        if a.elicit_hang:
            out["server_requests"].append({"t": now(), "method": "elicitation/create", "params": _dump(params), "response": None})
            await anyio.sleep(3600)
        if a.elicit_decline:
            resp = types.ElicitResult(action="decline")
        elif a.elicit_cancel:
            resp = types.ElicitResult(action="cancel")
        else:
            content = json.loads(a.elicit_answer) if a.elicit_answer else {}
            resp = types.ElicitResult(action="accept", content=content)
        out["server_requests"].append(
            {"t": now(), "method": "elicitation/create", "params": _dump(params), "response": _dump(resp)}
        )
        return resp

    async def roots_cb(ctx: Any) -> Any:
        resp = types.ListRootsResult(roots=[types.Root(uri="file:///tmp", name="tmp")])
        out["server_requests"].append({"t": now(), "method": "roots/list", "params": None, "response": _dump(resp)})
        return resp

    headers: dict[str, str] = {}
    for h in a.header:
        if ":" not in h:
            raise ValueError(f"--header must be 'Name: value', got {h!r}")
        k, v = h.split(":", 1)
        headers[k.strip()] = v.strip()

    client_kwargs: dict[str, Any] = dict(
        mode=mode,
        read_timeout_seconds=a.timeout,
        message_handler=message_handler,
        sampling_callback=None if a.no_sampling else sampling_cb,
        elicitation_callback=None if a.no_elicitation else elicitation_cb,
        list_roots_callback=None if a.no_roots else roots_cb,
        client_info=types.Implementation(name="clawgate-py-client", version="0.1.0"),
    )
    if a.log_level and mode not in ("legacy",):
        client_kwargs["log_level"] = a.log_level

    calls: list[tuple[str, dict[str, Any]]] = []
    for c in a.call:
        if len(c) > 2:
            raise ValueError(f"--call takes TOOL [JSON], got {c!r}")
        args = json.loads(c[1]) if len(c) == 2 else {}
        if not isinstance(args, dict):
            raise ValueError(f"--call {c[0]}: arguments must be a JSON object")
        calls.append((c[0], args))

    with anyio.fail_after(a.timeout):
        if transport == "http":
            http_client = create_mcp_http_client(headers=headers or None)
            async with http_client:
                server: Any = streamable_http_client(url, http_client=http_client)  # type: ignore[arg-type]
                await _session(Client(server, **client_kwargs), a, calls, out, now, seen_event, wanted, MODERN_PROTOCOL_VERSIONS)
        else:
            env = dict(os.environ)
            for kv in a.env:
                k, _, v = kv.partition("=")
                env[k] = v
            params = StdioServerParameters(command=cmd[0], args=cmd[1:], env=env, cwd=a.cwd)
            await _session(Client(params, **client_kwargs), a, calls, out, now, seen_event, wanted, MODERN_PROTOCOL_VERSIONS)
    return out


async def _session(client: Any, a, calls, out, now, seen_event, wanted, modern_versions) -> None:
    import anyio

    try:
        async with client:
            out["protocol_version"] = client.protocol_version
            out["era"] = "modern" if client.protocol_version in modern_versions else "legacy"
            out["server_info"] = _dump(client.server_info)
            out["server_capabilities"] = _dump(client.server_capabilities)
            out["instructions"] = client.instructions
            out["connected_at"] = now()

            if a.log_level and out["era"] == "legacy":
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    await client.set_logging_level(a.log_level)

            if a.list_tools:
                res = await client.list_tools()
                out["tools"] = [t.name for t in res.tools]
                if a.tools_full:
                    out["tool_defs"] = [_dump(t) for t in res.tools]
            if a.list_resources:
                res = await client.list_resources()
                out["resources"] = [_dump(r) for r in res.resources]
            if a.list_prompts:
                res = await client.list_prompts()
                out["prompts"] = [_dump(p) for p in res.prompts]
            if a.read_resource:
                out["reads"] = []
                for uri in a.read_resource:
                    out["reads"].append({"uri": uri, "result": _dump(await client.read_resource(uri))})

            for name, args in calls:
                entry: dict[str, Any] = {"tool": name, "arguments": args, "started_at": now()}
                out["calls"].append(entry)
                progress_cb = None
                if a.progress:
                    entry["progress"] = []

                    async def progress_cb(progress: float, total: float | None, message: str | None, _e=entry) -> None:
                        _e["progress"].append({"t": now(), "progress": progress, "total": total, "message": message})

                try:
                    result = await client.call_tool(name, args, progress_callback=progress_cb)
                except Exception as exc:  # noqa: BLE001 - report and stop (or go on)
                    entry["error"] = _error_json(exc)
                    entry["finished_at"] = now()
                    from mcp.shared.exceptions import MCPError

                    if a.keep_going and isinstance(exc, MCPError):
                        continue
                    raise
                entry["result"] = _dump(result)
                entry["finished_at"] = now()

            if wanted:
                with anyio.move_on_after(a.wait_timeout):
                    await seen_event.wait()
                missing = sorted(wanted - {n["method"] for n in out["notifications"]})
                if missing:
                    out["wait_missing"] = missing
            if a.linger > 0:
                await anyio.sleep(a.linger)
    finally:
        out["closed_at"] = now()
    if out.get("wait_missing"):
        raise TimeoutError(f"notifications not seen within {a.wait_timeout}s: {out['wait_missing']}")
    out["ok"] = True


_CURRENT_OUT: dict[str, Any] | None = None
"""The summary run() is filling in, so a failure can still report what was gathered."""


async def _run_and_capture(
    transport: str, url: str | None, cmd: list[str], a: argparse.Namespace, holder: dict[str, Any]
) -> None:
    try:
        holder["out"] = await run(transport, url, cmd, a)
    except BaseException as exc:  # noqa: BLE001 - reported as JSON
        holder["exc"] = exc
        holder["out"] = _CURRENT_OUT


def main() -> None:
    transport, url, cmd, a = parse_argv(sys.argv[1:])
    if a.header and transport != "http":
        _usage_error("--header is only valid with http")
    if (a.env or a.cwd) and transport != "stdio":
        _usage_error("--env/--cwd are only valid with stdio")
    warnings.simplefilter("ignore", DeprecationWarning)
    import anyio

    holder: dict[str, Any] = {}
    try:
        anyio.run(_run_and_capture, transport, url, cmd, a, holder)
    except KeyboardInterrupt as exc:
        holder["exc"] = exc
    out = holder.get("out") or {"ok": False}
    exc = holder.get("exc")
    if exc is not None or not out.get("ok"):
        out["ok"] = False
        if exc is not None:
            out["error"] = _error_json(exc)
        _emit(out)
        sys.exit(1)
    _emit(out)
    sys.exit(0)


if __name__ == "__main__":
    main()
