#!/usr/bin/env python3
"""Compare two MCP conformance-suite runs: the fixture upstream ALONE vs.
clawgate fronting that same fixture.

Inputs are the ``-o`` output directories of
``conformance server --url ... --requirements REV -o DIR``; each holds one
``server-<scenario>-<timestamp>/checks.json`` per scenario (an array of
``{id, name, status, errorMessage?, details?, ...}``).

A check is keyed ``scenario:check-id``. Some scenarios emit the same check id
several times (e.g. ``http-header-validation`` runs one id per bad header);
those instances are aggregated: a key FAILS if any instance fails, and the
number of failing instances is compared as well.

Exit status is non-zero when any of these holds:

* regression: the gateway has more FAILURE instances of a key than the
  fixture-alone run (in particular: the gateway fails, the fixture passes);
* missing: a key the fixture passes does not appear at all in the gateway run
  (a scenario that crashed/timed out hides its checks);
* outside baseline: the gateway fails a key that is not listed in the
  baseline's expected failures for this requirements set;
* a ``--require-pass`` scenario has a non-SUCCESS check (or no checks) in the
  gateway run.

Differences between the fixture-alone run and the baseline (fixture drift)
are reported as warnings only; ``--update-baseline`` rewrites this
requirements set's entry from the fixture-alone run.

Stdlib only.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import textwrap
from collections import OrderedDict

DIR_RE = re.compile(r"^server-(?P<scenario>.+)-\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}-\d{3}Z$")
FAILING = {"FAILURE"}


class Check:
    __slots__ = ("statuses", "messages", "scenario", "cid", "name")

    def __init__(self, scenario: str, cid: str, name: str) -> None:
        self.scenario = scenario
        self.cid = cid
        self.name = name
        self.statuses: list[str] = []
        self.messages: list[str] = []

    @property
    def failures(self) -> int:
        return sum(1 for s in self.statuses if s in FAILING)

    @property
    def status(self) -> str:
        if self.failures:
            return "FAILURE"
        for s in ("WARNING", "SKIPPED", "SUCCESS", "INFO"):
            if s in self.statuses:
                return s
        return self.statuses[0] if self.statuses else "MISSING"

    def label(self) -> str:
        n = len(self.statuses)
        if n <= 1:
            return self.status
        return f"{self.status} ({self.failures}/{n} failed)" if self.failures else f"{self.status} (x{n})"


def load_run(path: str) -> "tuple[OrderedDict[str, Check], dict[str, str]]":
    """Return (checks keyed scenario:id, {scenario: result dir})."""
    if not os.path.isdir(path):
        sys.exit(f"compare.py: no such result directory: {path}")
    checks: "OrderedDict[str, Check]" = OrderedDict()
    scenarios: dict[str, str] = {}
    for entry in sorted(os.listdir(path)):
        m = DIR_RE.match(entry)
        if not m:
            continue
        scenario = m.group("scenario")
        sdir = os.path.join(path, entry)
        scenarios[scenario] = sdir
        cfile = os.path.join(sdir, "checks.json")
        if not os.path.isfile(cfile):
            continue
        try:
            with open(cfile, encoding="utf-8") as fh:
                arr = json.load(fh)
        except (OSError, ValueError) as exc:
            print(f"WARNING: cannot read {cfile}: {exc}", file=sys.stderr)
            continue
        for item in arr if isinstance(arr, list) else []:
            cid = str(item.get("id", "?"))
            key = f"{scenario}:{cid}"
            chk = checks.get(key)
            if chk is None:
                chk = checks[key] = Check(scenario, cid, str(item.get("name", "")))
            status = str(item.get("status", "?"))
            chk.statuses.append(status)
            if status in FAILING or status == "WARNING":
                msg = item.get("errorMessage") or ""
                if not msg and item.get("details") is not None:
                    msg = "details: " + json.dumps(item["details"], sort_keys=True)
                chk.messages.append(str(msg))
    return checks, scenarios


def load_scored(path: "str | None") -> "set[str] | None":
    if not path:
        return None
    with open(path, encoding="utf-8") as fh:
        return {ln.strip() for ln in fh if ln.strip() and not ln.startswith("#")}


def counts(checks: "OrderedDict[str, Check]") -> str:
    tally: dict[str, int] = {}
    for c in checks.values():
        for s in c.statuses:
            tally[s] = tally.get(s, 0) + 1
    order = ["SUCCESS", "FAILURE", "WARNING", "SKIPPED", "INFO"]
    keys = [k for k in order if k in tally] + sorted(k for k in tally if k not in order)
    return ", ".join(f"{k} {tally[k]}" for k in keys) or "no checks"


def scenario_counts(checks: "OrderedDict[str, Check]") -> "tuple[int, int]":
    per: dict[str, bool] = {}
    for c in checks.values():
        per[c.scenario] = per.get(c.scenario, True) and c.failures == 0
    return sum(per.values()), sum(1 for ok in per.values() if not ok)


def short(msg: str, width: int) -> str:
    msg = " ".join(msg.split())
    return msg if len(msg) <= width else msg[: width - 3] + "..."


def table(rows: "list[list[str]]", headers: "list[str]") -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()
    out = [line(headers), line(["-" * w for w in widths])]
    out += [line(r) for r in rows]
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fixture", required=True, help="-o dir of the fixture-alone run")
    ap.add_argument("--gateway", required=True, help="-o dir of the run through clawgate")
    ap.add_argument("--requirements", required=True, help="requirements set, e.g. 2026-07-28")
    ap.add_argument("--baseline", required=True, help="tests/conformance/baseline.json")
    ap.add_argument("--scored", help="file listing scored server scenarios, one per line (labels only)")
    ap.add_argument("--require-pass", action="append", default=[], metavar="SCENARIO",
                    help="scenario whose checks must all be SUCCESS through the gateway (repeatable)")
    ap.add_argument("--update-baseline", action="store_true",
                    help="rewrite this requirements set's expected failures from the fixture-alone run")
    ap.add_argument("--width", type=int, default=int(os.environ.get("COMPARE_WIDTH", "110")),
                    help="max width of the error-message column")
    args = ap.parse_args()

    rev = args.requirements
    fx, fx_dirs = load_run(args.fixture)
    gw, gw_dirs = load_run(args.gateway)
    scored = load_scored(args.scored)

    def sc_label(scenario: str) -> str:
        if scored is None:
            return scenario
        return scenario + ("" if scenario in scored else " (unscored)")

    fx_fail = sorted(k for k, c in fx.items() if c.failures)
    if args.update_baseline:
        data: dict = {}
        if os.path.isfile(args.baseline):
            with open(args.baseline, encoding="utf-8") as fh:
                data = json.load(fh)
        data.setdefault("_comment", "")
        data.setdefault("expected_failures", {})
        data["expected_failures"][rev] = fx_fail
        data["expected_failures"] = dict(sorted(data["expected_failures"].items()))
        with open(args.baseline + ".tmp", "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2)
            fh.write("\n")
        os.replace(args.baseline + ".tmp", args.baseline)
        print(f"[{rev}] baseline updated: {len(fx_fail)} expected failure(s) written to {args.baseline}")

    try:
        with open(args.baseline, encoding="utf-8") as fh:
            baseline_all = json.load(fh)
    except FileNotFoundError:
        sys.exit(f"compare.py: baseline {args.baseline} missing (run with --update-baseline)")
    if rev not in baseline_all.get("expected_failures", {}):
        sys.exit(f"compare.py: baseline has no entry for {rev} (run with --update-baseline)")
    baseline = set(baseline_all["expected_failures"][rev])

    fx_sp, fx_sf = scenario_counts(fx)
    gw_sp, gw_sf = scenario_counts(gw)
    print(f"=== conformance {rev}: fixture alone vs. clawgate -> fixture ===")
    print(f"  fixture alone : {fx_sp} scenario(s) clean, {fx_sf} with failures; checks: {counts(fx)}")
    print(f"  via clawgate  : {gw_sp} scenario(s) clean, {gw_sf} with failures; checks: {counts(gw)}")

    problems = 0

    # 1. regressions: gateway fails (more instances) where the fixture does not.
    regressions: list[list[str]] = []
    for key, g in gw.items():
        f = fx.get(key)
        f_fail = f.failures if f else 0
        if g.failures > f_fail:
            msg = next((m for m in g.messages if m), "")
            regressions.append([sc_label(g.scenario), g.cid, f.label() if f else "absent", g.label(),
                                short(msg, args.width)])
    # 2. checks the fixture passes that vanished through the gateway. A whole scenario missing
    # (crashed/timed out without writing checks) is a regression; single checks not emitted
    # (the scenario took another branch, e.g. JSON instead of SSE) are reported for information.
    not_emitted: list[list[str]] = []
    gw_scenarios = {c.scenario for c in gw.values()}
    for key, f in fx.items():
        if key not in gw and f.status in ("SUCCESS", "WARNING"):
            if f.scenario not in gw_scenarios:
                regressions.append([sc_label(f.scenario), f.cid, f.label(), "MISSING", "scenario produced no checks"])
            else:
                not_emitted.append([sc_label(f.scenario), f.cid, f.label(), "not emitted"])
    scored_first = lambda r: (r[0].endswith("(unscored)"), r[0], r[1])
    regressions.sort(key=scored_first)
    not_emitted.sort(key=scored_first)
    if regressions:
        problems += len(regressions)
        print(f"\nREGRESSIONS ({len(regressions)}): fail through clawgate but not against the fixture alone")
        print(table(regressions, ["scenario", "check", "fixture", "gateway", "gateway error"]))
    else:
        print("\nno regressions: no check fails through clawgate that passes against the fixture alone")
    if not_emitted:
        print(f"\nNOTE ({len(not_emitted)}): checks the fixture alone passes that the run through clawgate "
              f"did not emit (scenario took another path; not counted)")
        print(table(not_emitted, ["scenario", "check", "fixture", "gateway"]))

    # 2b. SUCCESS -> WARNING (SHOULD-level checks): informational.
    downgraded = [[sc_label(g.scenario), g.cid, fx[k].label(), g.label(),
                   short(next((m for m in g.messages if m), ""), args.width)]
                  for k, g in gw.items()
                  if g.status == "WARNING" and k in fx and fx[k].status == "SUCCESS"]
    if downgraded:
        print(f"\nNOTE ({len(downgraded)}): SUCCESS against the fixture alone, WARNING (SHOULD) through clawgate (not counted)")
        print(table(sorted(downgraded, key=scored_first), ["scenario", "check", "fixture", "gateway", "gateway message"]))

    # 3. gateway failures outside the baseline.
    outside = sorted(k for k, g in gw.items() if g.failures and k not in baseline)
    if outside:
        problems += len(outside)
        print(f"\nOUTSIDE BASELINE ({len(outside)}): clawgate fails checks not in baseline.json[{rev!r}]")
        rows = [[sc_label(gw[k].scenario), gw[k].cid, gw[k].label(),
                 short(next((m for m in gw[k].messages if m), ""), args.width)] for k in outside]
        print(table(rows, ["scenario", "check", "gateway", "gateway error"]))
    else:
        print(f"no gateway failures outside the baseline ({len(baseline)} expected failure(s))")

    # 4. scenarios that must pass outright through the gateway.
    for scen in args.require_pass:
        chks = [c for c in gw.values() if c.scenario == scen]
        bad = [c for c in chks if c.status != "SUCCESS"]
        if not chks:
            problems += 1
            print(f"\nREQUIRED SCENARIO {scen}: no checks recorded through clawgate")
        elif bad:
            problems += 1
            print(f"\nREQUIRED SCENARIO {scen}: not passing through clawgate")
            for c in bad:
                print(f"  {c.cid}: {c.label()}  {short(next((m for m in c.messages if m), ''), args.width)}")
        else:
            print(f"required scenario {scen}: {len(chks)} check(s) SUCCESS through clawgate")

    # 5. fixture drift against the baseline (warnings only).
    new_fx = sorted(set(fx_fail) - baseline)
    stale = sorted(baseline - set(fx_fail))
    if new_fx:
        print(f"\nWARNING: fixture alone fails {len(new_fx)} check(s) not in the baseline "
              f"(fixture or suite changed? re-run with --update-baseline if intended):")
        print(textwrap.indent("\n".join(new_fx), "  "))
    if stale:
        print(f"\nWARNING: {len(stale)} baseline entr(y/ies) now pass against the fixture alone "
              f"(stale; re-run with --update-baseline):")
        print(textwrap.indent("\n".join(stale), "  "))

    print(f"\n[{rev}] {'FAIL' if problems else 'OK'}: {problems} problem(s)")
    if regressions or outside:
        print(f"per-check errorMessage/details: server-<scenario>-<timestamp>/checks.json under\n"
              f"  gateway: {os.path.abspath(args.gateway)}\n  fixture: {os.path.abspath(args.fixture)}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
