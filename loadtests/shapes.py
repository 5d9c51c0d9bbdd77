"""Traffic shape: a step load that adds users at a steady pace, holds, and stops by itself."""

from __future__ import annotations

import os

from locust import LoadTestShape


class StepLoad(LoadTestShape):
    """``FACEGRID_LOADTEST_STEP_USERS`` more users every ``..._STEP_S`` seconds up to ``..._MAX_USERS``;
    the run ends after ``..._TIME_S`` seconds whatever happens."""

    def __init__(self):
        super().__init__()
        self.step_users = int(os.environ.get("FACEGRID_LOADTEST_STEP_USERS", "4"))
        self.step_s = float(os.environ.get("FACEGRID_LOADTEST_STEP_S", "10"))
        self.max_users = int(os.environ.get("FACEGRID_LOADTEST_MAX_USERS", "16"))
        self.time_s = float(os.environ.get("FACEGRID_LOADTEST_TIME_S", "60"))

    def tick(self):
        elapsed = self.get_run_time()
        if elapsed >= self.time_s:
            return None
        users = min(self.max_users, self.step_users * (1 + int(elapsed // self.step_s)))
        return users, max(1, self.step_users)
