"""The policy engine with real clients: the official Python SDK client (tests/interop/py_client.py)
through clawgate to the Rust fixture upstream, with Biscuit tokens minted by `clawgate token`
and Cedar policies in a directory the gateway watches.

Covers: permit, forbid, forbid overriding permit, default deny; argument rules; attenuation
only narrows; invalid tokens (expired, wrong root key, tampered, revoked, fact explosion);
API keys; list filtering; the @ask approval flow (approve, decline, timeout, replay); and
hot reload (a broken policy change is rejected, the last good set stays).
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import urllib.error
import urllib.request
import pytest

from conftest import CLAWGATE_BIN, free_port, gateway_env, py_client, render_config, wait_until

FIXTURE = Path(CLAWGATE_BIN).parent / "fixture-upstream"
MODERN = "2026-07-28"

TOOLS = [
    {"name": "read_inbox", "description": "List mail.", "inputSchema": {"type": "object", "properties": {}},
     "annotations": {"readOnlyHint": True, "openWorldHint": False}},
    {"name": "send_email", "description": "Send one email.",
     "inputSchema": {"type": "object", "properties": {"to": {"type": "string"}, "body": {"type": "string"}}, "required": ["to", "body"]},
     "annotations": {"readOnlyHint": False, "destructiveHint": False, "openWorldHint": True}},
    {"name": "delete_mail", "description": "Delete one mail.",
     "inputSchema": {"type": "object", "properties": {"id": {"type": "integer"}}, "required": ["id"]},
     "annotations": {"readOnlyHint": False, "destructiveHint": True}},
    {"name": "export_data", "description": "Export the mailbox.",
     "inputSchema": {"type": "object", "properties": {"format": {"type": "string"}}, "required": ["format"]},
     "annotations": {"readOnlyHint": True}},
    {"name": "purge_all", "description": "Delete everything.", "inputSchema": {"type": "object", "properties": {}},
     "annotations": {"destructiveHint": True}},
]

POLICIES = """
@id("read")
permit (principal, action in Action::"read", resource) when { principal.kind != "anonymous" };

@id("send")
permit (principal, action == Action::"mail__send_email", resource) when { principal.kind != "anonymous" };

// Argument rule: mail goes only to @corp.example.
@id("send-corp-only")
forbid (principal, action == Action::"mail__send_email", resource)
unless { context.args.to like "*@corp.example" };

// Forbid overriding permit: exports are read-only (permitted above) but never raw.
@id("no-raw-export")
forbid (principal, action == Action::"mail__export_data", resource) when { context.args.format == "raw" };

// A permit and an unconditional forbid: never callable, so never listed.
@id("purge-permit")
permit (principal, action == Action::"mail__purge_all", resource);
@id("purge-forbid")
forbid (principal, action == Action::"mail__purge_all", resource);

// Deleting needs a human's approval, for the ops group.
@id("delete-ask")
@ask("Delete this mail?")
permit (principal, action == Action::"mail__delete_mail", resource) when { principal in Group::"ops" };
"""


def cli(*args: str) -> str:
    r = subprocess.run([str(CLAWGATE_BIN), *args], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, f"clawgate {' '.join(args)}: {r.stderr}"
    return r.stdout.strip()


class PolicyGateway:
    def __init__(self, procs, tmp: Path, extra: str = "", approval_timeout: str = "30s"):
        self.tmp = tmp
        cli("token", "keygen", "--out", str(tmp / "root"))
        cli("token", "keygen", "--out", str(tmp / "other"))
        (tmp / "defs.json").write_text(json.dumps(TOOLS))
        (tmp / "policies").mkdir()
        (tmp / "policies" / "main.cedar").write_text(POLICIES)
        (tmp / "revoked.txt").write_text("")
        self.api_key = "cg_test_api_key_0123456789abcdef"
        upstream = {"name": "mail", "transport": "stdio", "command": str(FIXTURE), "args": ["stdio", "--defs", str(tmp / "defs.json")], "trusted": True}
        auth = (
            f'[auth]\nbiscuit_public_key = "{tmp / "root.pub"}"\nrevocation_file = "{tmp / "revoked.txt"}"\n'
            '[[auth.api_keys]]\nkey_env = "CG_TEST_API_KEY"\nprincipal = "ci-bot"\nkind = "agent"\ngroups = ["ops"]\n'
        )
        policy = f'[policy]\ndir = "{tmp / "policies"}"\nmode = "enforce"\napproval_timeout = "{approval_timeout}"\n'
        cfg = render_config([upstream], policy=None, extra=auth + policy + extra)
        (tmp / "clawgate.toml").write_text(cfg)
        self.port = free_port()
        env = gateway_env()
        env["CG_TEST_API_KEY"] = self.api_key
        self.proc = procs.start("clawgate", [str(CLAWGATE_BIN), "serve", "--config", str(tmp / "clawgate.toml"), "--listen", f"127.0.0.1:{self.port}"], env=env)
        self.proc.wait_for_port(self.port)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    def mint(self, *args: str, key: str = "root") -> str:
        return cli("token", "mint", "--key", str(self.tmp / key), *args)

    def client(self, token: str | None, *args: str, era: str = "legacy", timeout: float = 60) -> dict[str, Any]:
        hdr = ["--header", f"Authorization: Bearer {token}"] if token else []
        _, out = py_client("http", self.url, "--era", era, *hdr, *args, timeout=timeout)
        return out


def tools_of(out: dict[str, Any]) -> set[str]:
    assert out.get("ok") is True or "tools" in out, out
    return set(out.get("tools", []))


def call_error(out: dict[str, Any], i: int = 0) -> dict[str, Any]:
    c = out["calls"][i]
    assert "error" in c, f"expected {c['tool']} to fail: {c}"
    return c["error"]


def call_ok(out: dict[str, Any], i: int = 0) -> dict[str, Any]:
    c = out["calls"][i]
    assert "result" in c, f"expected {c['tool']} to succeed: {c.get('error')}"
    return c["result"]


@pytest.fixture
def pgw(procs, tmp_path):
    return PolicyGateway(procs, tmp_path)


# ---------------------------------------------------------------------------


def test_rule_types_and_list_filtering(pgw):
    token = pgw.mint("--principal", "alice", "--task", "inbox")
    out = pgw.client(token, "--list-tools")
    # Lists show exactly what alice may call with some arguments: no delete (ops only), no
    # purge (forbidden outright), none of the fixture's unpermitted tools (default deny).
    assert tools_of(out) == {"mail__read_inbox", "mail__send_email", "mail__export_data"}, out
    # permit
    call_ok(pgw.client(token, "--call", "mail__read_inbox", "{}"))
    # argument rule: send_email only to @corp recipients
    call_ok(pgw.client(token, "--call", "mail__send_email", json.dumps({"to": "bob@corp.example", "body": "hi"})))
    err = call_error(pgw.client(token, "--call", "mail__send_email", json.dumps({"to": "eve@evil.example", "body": "hi"})))
    assert "forbidden by policy (send-corp-only)" in err["message"], err
    # forbid overriding permit
    call_ok(pgw.client(token, "--call", "mail__export_data", json.dumps({"format": "json"})))
    err = call_error(pgw.client(token, "--call", "mail__export_data", json.dumps({"format": "raw"})))
    assert "no-raw-export" in err["message"], err
    # default deny, and a tool that is never callable: the same error as an unknown tool
    for hidden in ("mail__echo", "mail__purge_all", "mail__no_such_tool"):
        err = call_error(pgw.client(token, "--call", hidden, "{}"))
        assert f"unknown tool: `{hidden}`" in err["message"], err
    # schema validation names the failing path
    err = call_error(pgw.client(token, "--call", "mail__send_email", json.dumps({"to": 7, "body": "x"})))
    assert "arguments/to" in err["message"], err


def test_anonymous_callers_are_denied_by_default(pgw):
    out = pgw.client(None, "--list-tools")
    assert tools_of(out) == set(), out
    err = call_error(pgw.client(None, "--call", "mail__read_inbox", "{}"))
    assert "unknown tool" in err["message"], err


def test_api_keys_map_to_principals(pgw):
    out = pgw.client(pgw.api_key, "--list-tools")
    # ci-bot is in group ops: delete_mail (with approval) is listed for it.
    assert "mail__delete_mail" in tools_of(out), out


def test_attenuation_only_narrows(pgw):
    parent = pgw.mint("--principal", "agent", "--agent", "--tool", "mail__read_inbox", "--tool", "mail__send_email")
    assert tools_of(pgw.client(parent, "--list-tools")) == {"mail__read_inbox", "mail__send_email"}
    child = cli("token", "attenuate", "--token", parent, "--check", 'check if call_tool("mail__read_inbox");')
    assert tools_of(pgw.client(child, "--list-tools")) == {"mail__read_inbox"}
    call_ok(pgw.client(child, "--call", "mail__read_inbox", "{}"))
    # The sub-agent cannot call what it was narrowed away from...
    err = call_error(pgw.client(child, "--call", "mail__send_email", json.dumps({"to": "bob@corp.example", "body": "x"})))
    assert "unknown tool" in err["message"], err
    # ...nor what its parent never had, even by adding a check that names it: checks only narrow.
    wider = cli("token", "attenuate", "--token", child, "--check", 'check if call_tool("mail__export_data");')
    assert tools_of(pgw.client(wider, "--list-tools")) == set()
    err = call_error(pgw.client(wider, "--call", "mail__export_data", json.dumps({"format": "json"})))
    assert "unknown tool" in err["message"], err
    # A block with facts (an attempt to grant tool("*")) is refused by the CLI outright.
    r = subprocess.run([str(CLAWGATE_BIN), "token", "attenuate", "--token", child, "--check", 'tool("*");'], capture_output=True, text=True)
    assert r.returncode != 0 and "checks only" in r.stderr, r.stderr
    # An argument constraint added by attenuation.
    corp = cli("token", "attenuate", "--token", parent, "--check",
               'check if call_tool("mail__read_inbox") or arg("to", $t), $t.ends_with("@corp.example");')
    call_ok(pgw.client(corp, "--call", "mail__send_email", json.dumps({"to": "bob@corp.example", "body": "x"})))
    err = call_error(pgw.client(corp, "--call", "mail__send_email", json.dumps({"to": "bob@other.example", "body": "x"})))
    assert "capability token does not allow" in err["message"], err


def unauthorized(out: dict[str, Any]) -> bool:
    """The SDK client could not even connect (clawgate answered 401)."""
    return out.get("ok") is not True and "tools" not in out and "protocol_version" not in out


def test_invalid_tokens_are_denied(pgw):
    good = pgw.mint("--principal", "alice")
    call_ok(pgw.client(good, "--call", "mail__read_inbox", "{}"))
    # wrong root key
    assert unauthorized(pgw.client(pgw.mint("--principal", "alice", key="other"), "--list-tools"))
    assert "refused credentials: invalid credentials: token signature does not verify" in pgw.proc.log()
    # tampered
    mid = len(good) // 2
    tampered = good[:mid] + ("A" if good[mid] != "A" else "B") + good[mid + 1:]
    n = pgw.proc.log().count("refused credentials")
    assert unauthorized(pgw.client(tampered, "--list-tools"))
    assert pgw.proc.log().count("refused credentials") > n
    # expired: past its TTL a token no longer authenticates at all (401), for calls and lists alike
    short = pgw.mint("--principal", "alice", "--ttl", "1s")
    time.sleep(2.1)
    assert unauthorized(pgw.client(short, "--list-tools"))
    assert unauthorized(pgw.client(short, "--call", "mail__read_inbox", "{}"))
    assert "refused credentials: invalid credentials: token has expired" in pgw.proc.log()
    # revoked, picked up from the revocation file without a restart
    ids = [line for line in cli("token", "inspect", "--token", good).splitlines() if line.startswith("revocation ids:")]
    rid = ids[0].split(":", 1)[1].split(",")[0].strip()
    (pgw.tmp / "revoked.txt").write_text(rid + "\n")
    wait_until(lambda: unauthorized(pgw.client(good, "--list-tools")), 15, "revocation picked up")
    assert "refused credentials: invalid credentials: token was revoked" in pgw.proc.log()
    # a hostile check: 64 arguments joined three ways, bounded by the run limits
    costly = cli("token", "attenuate", "--token", pgw.mint("--principal", "mallory"), "--check",
                 'check if arg($a, $x), arg($b, $y), arg($c, $z), $x + $y + $z == -1;')
    args = {f"k{i}": i for i in range(64)}
    t0 = time.monotonic()
    out = pgw.client(costly, "--call", "mail__read_inbox", json.dumps(args))
    assert time.monotonic() - t0 < 20
    err = call_error(out)
    assert "capability token" in err["message"] or "could not decide" in err["message"], err


@pytest.mark.parametrize("era", ["legacy", "modern"])
def test_approval_approve_and_decline(pgw, era):
    args = json.dumps({"id": 42})
    out = pgw.client(pgw.api_key, "--call", "mail__delete_mail", args, "--elicit-answer", '{"approve": true}', era=era)
    res = call_ok(out)
    assert res["structuredContent"]["arguments"] == {"id": 42}, res
    asked = [r for r in out["server_requests"] if r["method"] == "elicitation/create"]
    assert len(asked) == 1 and "Delete this mail?" in asked[0]["params"]["message"], out["server_requests"]
    assert '"id":42' in asked[0]["params"]["message"], "the approver sees the exact arguments"
    out = pgw.client(pgw.api_key, "--call", "mail__delete_mail", args, "--elicit-decline", era=era)
    assert "approval was not given" in call_error(out)["message"]
    # A client that cannot be asked is denied with a reason.
    out = pgw.client(pgw.api_key, "--call", "mail__delete_mail", args, "--no-elicitation", era=era)
    assert "needs human approval" in call_error(out)["message"]


def test_approval_timeout(procs, tmp_path):
    pgw = PolicyGateway(procs, tmp_path, approval_timeout="2s")
    t0 = time.monotonic()
    out = pgw.client(pgw.api_key, "--call", "mail__delete_mail", json.dumps({"id": 1}), "--elicit-hang", timeout=40)
    err = call_error(out)
    assert "approval was not given" in err["message"] and "no answer" in err["message"], err
    assert time.monotonic() - t0 < 20


def test_a_used_approval_cannot_be_replayed(pgw):
    """2026-07-28, raw: the approval round is `input_required` with a requestState bound to the
    exact call; the retry that carries the answer uses it up."""
    headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream",
               "MCP-Protocol-Version": MODERN, "Mcp-Method": "tools/call", "Mcp-Name": "mail__delete_mail",
               "Authorization": f"Bearer {pgw.api_key}"}
    meta = {"io.modelcontextprotocol/protocolVersion": MODERN, "io.modelcontextprotocol/clientCapabilities": {"elicitation": {"form": {}}}}

    def call(args: dict[str, Any], extra: dict[str, Any] | None = None) -> dict[str, Any]:
        params = {"name": "mail__delete_mail", "arguments": args, "_meta": meta, **(extra or {})}
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": params}).encode()
        req = urllib.request.Request(pgw.url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:
            return json.loads(e.read())

    first = call({"id": 7})["result"]
    assert first["resultType"] == "input_required", first
    (key, req), = first["inputRequests"].items()
    assert req["method"] == "elicitation/create"
    answer = {"inputResponses": {key: {"action": "accept", "content": {"approve": True}}}, "requestState": first["requestState"]}
    # The approval is bound to the exact call: other arguments cannot use it.
    other = call({"id": 8}, answer)
    assert other["error"]["code"] == -32050 and "different call" in other["error"]["message"], other
    # ...and that attempt used it up: so a fresh round is needed.
    first = call({"id": 7})["result"]
    answer = {"inputResponses": {key: {"action": "accept", "content": {"approve": True}}}, "requestState": first["requestState"]}
    ok = call({"id": 7}, answer)
    assert ok["result"]["structuredContent"]["arguments"] == {"id": 7}, ok
    replay = call({"id": 7}, answer)
    assert replay["error"]["code"] == -32050 and "already used" in replay["error"]["message"], replay


def test_hot_reload_rejects_a_broken_change_and_keeps_the_last_good_set(pgw):
    token = pgw.mint("--principal", "alice")
    call_ok(pgw.client(token, "--call", "mail__read_inbox", "{}"))
    # A policy naming an argument the tool does not have is rejected: reads still work.
    (pgw.tmp / "policies" / "typo.cedar").write_text('forbid (principal, action == Action::"mail__send_email", resource)\nwhen { context.args.recipent == "x" };\n')
    wait_until(lambda: "typo.cedar:" in pgw.proc.log() and "recipent" in pgw.proc.log(), 15, "the rejection is logged with file and line")
    call_ok(pgw.client(token, "--call", "mail__read_inbox", "{}"))
    # A valid change takes effect without a restart.
    (pgw.tmp / "policies" / "typo.cedar").write_text('@id("no-reads")\nforbid (principal, action == Action::"mail__read_inbox", resource);\n')
    wait_until(lambda: "mail__read_inbox" not in tools_of(pgw.client(token, "--list-tools")), 15, "the new forbid in force")
    # SIGHUP reloads too (here: after removing the forbid).
    (pgw.tmp / "policies" / "typo.cedar").unlink()
    pgw.proc.popen.send_signal(1)
    wait_until(lambda: "mail__read_inbox" in tools_of(pgw.client(token, "--list-tools")), 15, "reloaded")
