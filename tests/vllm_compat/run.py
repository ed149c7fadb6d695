"""Check the dialect table against one real vLLM release (hack/vllm-compat.sh runs this per version).

    python -m tests.vllm_compat.run --python ENV/bin/python [--record] [--shallow] VERSION

Builds the plan for VERSION, runs the probe with the vLLM environment's python, prints the table's
claims against vLLM's answers and, with --record, stores the facts in docs/vllm-compat-results.json
and rewrites the results table of docs/vllm-compat.md.  Exits 1 when a claim is contradicted.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from specops.vllm.dialect import format_version, parse_version
from tests.vllm_compat.plan import RESULTS, ROOT, Row, build_plan, compare, load_results, observations

PROBE = Path(__file__).with_name("probe.py")
DOC = ROOT / "docs" / "vllm-compat.md"
TABLE_START = "<!-- results:start (written by hack/vllm-compat.sh) -->"
TABLE_END = "<!-- results:end -->"


def run_probe(python: str, plan: dict[str, Any], log: Path) -> dict[str, Any]:
    env = {
        **os.environ,
        "VLLM_TARGET_DEVICE": "cpu",
        "VLLM_LOGGING_LEVEL": "WARNING",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }
    if plan.get("hf_home"):
        env["HF_HOME"] = plan["hf_home"]
    out = log.with_suffix(".json")
    out.unlink(missing_ok=True)
    with log.open("w") as err:
        done = subprocess.run(
            [python, str(PROBE), "check", "--out", str(out)],
            input=json.dumps(plan),
            stdout=err,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            check=False,
        )
    if done.returncode != 0 or not out.exists():
        tail = log.read_text().strip().splitlines()[-15:]
        raise SystemExit(f"the probe failed (exit {done.returncode}); end of {log}:\n" + "\n".join(tail))
    result: dict[str, Any] = json.loads(out.read_text())
    return result


def render_table(results: dict[str, Any]) -> str:
    """The results table of docs/vllm-compat.md: one line per version and check."""
    lines = ["| vLLM | check | result |", "| --- | --- | --- |"]
    for vtext in sorted(results["versions"], key=parse_version, reverse=True):
        facts = results["versions"][vtext]
        for r in compare(parse_version(vtext), facts):
            total = r.passed + len(r.failed)
            verdict = f"pass ({total})" if r.ok else f"**fail** ({len(r.failed)} of {total})"
            if r.unshown:
                unshown = f"{len(r.unshown)} not shown here (see below)"
                verdict = unshown if total == 0 else f"{verdict}; {unshown}"
            if r.check.endswith("(informational)"):
                verdict = f"{r.passed} of {total} built"
            lines.append(f"| {vtext} | {r.check} | {verdict} |")
    return "\n".join(lines)


def write_doc_table(results: dict[str, Any], doc: Path = DOC) -> None:
    text = doc.read_text()
    head, _, rest = text.partition(TABLE_START)
    _, _, tail = rest.partition(TABLE_END)
    doc.write_text(f"{head}{TABLE_START}\n{render_table(results)}\n{TABLE_END}{tail}")


def print_rows(vtext: str, rows: list[Row]) -> None:
    for r in rows:
        mark = "ok  " if r.ok else "FAIL"
        print(f"  {mark} {r.check}: {r.passed} passed, {len(r.failed)} failed")
        for what in r.failed[:12]:
            print(f"         - {what}")
        for what in r.unshown[:12]:
            print(f"         ? {what}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("version")
    parser.add_argument("--python", required=True, help="python of the vLLM environment")
    parser.add_argument("--record", action="store_true", help="store the facts in docs/")
    parser.add_argument("--shallow", action="store_true", help="skip create_engine_config")
    parser.add_argument("--log-dir", default=None)
    args = parser.parse_args(argv)
    version = parse_version(args.version)
    vtext = format_version(version)
    with tempfile.TemporaryDirectory(prefix="specops-vllm-") as tmp:
        plan = build_plan(version, hf_home=str(Path(tmp) / "hf"), deep=not args.shallow)
        log = Path(args.log_dir or tmp) / f"probe-{vtext}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        result = run_probe(args.python, plan, log)
    facts = observations(plan, result)
    facts["checked"] = dt.date.today().isoformat()
    rows = compare(version, facts)
    print(f"vLLM {result['vllm']} (torch {result.get('torch')}): {len(plan['cases'])} rendered commands")
    print_rows(vtext, rows)
    if args.record:
        results = load_results()
        results["versions"][vtext] = facts
        results["versions"] = dict(sorted(results["versions"].items(), key=lambda kv: parse_version(kv[0])))
        RESULTS.write_text(json.dumps(results, indent=1, sort_keys=False) + "\n")
        write_doc_table(results)
        print(f"recorded in {RESULTS.relative_to(ROOT)} and {DOC.relative_to(ROOT)}")
    failed = [r for r in rows if not r.ok and not r.check.endswith("(informational)")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
