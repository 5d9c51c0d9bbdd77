"""The locust tooling: a short, bounded headless run against the running service writes a usable report."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.helpers import REPO, SERVICE_PORT


@pytest.mark.slow
@pytest.mark.embedded_only("the load-test tooling is checked once, on the embedded backends")
def test_a_bounded_headless_run_reports_throughput_latency_errors_and_429s(service, faces_dir, tmp_path):
    env = {**os.environ, "FACEGRID_LOADTEST_PHOTOS": str(faces_dir)}
    finished = subprocess.run(
        [
            sys.executable,
            "-m",
            "loadtests.run",
            "--host",
            f"http://127.0.0.1:{SERVICE_PORT}",
            "--time-s",
            "20",
            "--max-users",
            "6",
            "--step-users",
            "2",
            "--step-s",
            "5",
            "--out",
            str(tmp_path),
        ],
        cwd=REPO,
        env=env,
        timeout=240,
        capture_output=True,
        text=True,
    )
    assert finished.returncode == 0, finished.stderr[-2000:]
    report = json.loads((tmp_path / "report.json").read_text())
    total = report["Aggregated"]
    assert total["requests"] >= 20 and total["requests_per_s"] > 0
    assert 0 < total["p50_ms"] <= total["p95_ms"] <= total["p99_ms"]
    assert total["errors"] == 0, report
    assert {"/v2/detect", "/v2/detect?facen", "/v2/galleries/[gallery]/faces/[id]"} <= set(report)
    assert all(row["requests"] >= row["errors"] + row["over_capacity_429"] for row in report.values())
