"""A bounded, headless locust run against a running facegrid, and its report.

    python -m loadtests.run --host http://127.0.0.1:18411 --time-s 60 --max-users 16 --out loadtests/results

Writes locust's CSV files and ``report.json``: per request name and in total, requests/s, p50/p95/p99 in
ms, the count of real errors and the count of 429 OVER_CAPACITY answers. Exit status 0 unless locust
itself failed; the report says how the service did.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _rows(path: Path) -> list[dict]:
    return list(csv.DictReader(open(path, newline=""))) if path.is_file() else []


def build_report(prefix: Path) -> dict:
    stats = _rows(prefix.with_name(prefix.name + "_stats.csv"))
    failures = _rows(prefix.with_name(prefix.name + "_failures.csv"))
    over_capacity: dict[str, int] = {}
    errors: dict[str, int] = {}
    for row in failures:
        bucket = over_capacity if "OVER_CAPACITY" in row["Error"] else errors
        bucket[row["Name"]] = bucket.get(row["Name"], 0) + int(row["Occurrences"])
    report = {}
    for row in stats:
        name = row["Name"]
        report[name] = {
            "requests": int(row["Request Count"]),
            "requests_per_s": float(row["Requests/s"]),
            "p50_ms": float(row["50%"] or 0),
            "p95_ms": float(row["95%"] or 0),
            "p99_ms": float(row["99%"] or 0),
            "errors": errors.get(name, 0) if name != "Aggregated" else sum(errors.values()),
            "over_capacity_429": over_capacity.get(name, 0) if name != "Aggregated" else sum(over_capacity.values()),
        }
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="http://127.0.0.1:18411")
    parser.add_argument("--time-s", type=float, default=60)
    parser.add_argument("--max-users", type=int, default=16)
    parser.add_argument("--step-users", type=int, default=4)
    parser.add_argument("--step-s", type=float, default=10)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    prefix = args.out / "facegrid"
    env = {
        **os.environ,
        "FACEGRID_LOADTEST_TIME_S": str(args.time_s),
        "FACEGRID_LOADTEST_MAX_USERS": str(args.max_users),
        "FACEGRID_LOADTEST_STEP_USERS": str(args.step_users),
        "FACEGRID_LOADTEST_STEP_S": str(args.step_s),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE.parent), os.environ.get("PYTHONPATH")])),
    }
    command = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(HERE / "locustfile.py"),
        "--headless",
        "--host",
        args.host,
        "--csv",
        str(prefix),
        "--only-summary",
        "--exit-code-on-error",
        "0",
        # Bounded whatever the shape does: locust stops itself after this, plus a grace period.
        "--run-time",
        f"{int(args.time_s) + 5}s",
        "--stop-timeout",
        "5",
    ]
    finished = subprocess.run(command, env=env, timeout=args.time_s + 120)
    report = build_report(prefix)
    (args.out / "report.json").write_text(json.dumps(report, indent=1))
    total = report.get("Aggregated", {})
    print(
        f"requests/s {total.get('requests_per_s', 0):.1f}  p50 {total.get('p50_ms', 0):.0f} ms  "
        f"p95 {total.get('p95_ms', 0):.0f} ms  p99 {total.get('p99_ms', 0):.0f} ms  "
        f"errors {total.get('errors', 0)}  429 {total.get('over_capacity_429', 0)}"
    )
    return finished.returncode


if __name__ == "__main__":
    sys.exit(main())
