"""The house rules a contributor's change is held to, checked in the suite like everything else."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_ruff_finds_nothing_under_the_projects_own_configuration():
    ruff = Path(sys.executable).parent / "ruff"
    run = subprocess.run([str(ruff), "check", "--no-cache", str(REPO)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout[-4000:]
